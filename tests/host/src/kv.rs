//! `spin:key-value@3.0.0`: in-memory stores shared by every component and request of an app.
//!
//! Imitates Spin's key-value factor with its default in-memory/SQLite store: one store per
//! label, shared across components and requests; the `default` label always exists and other
//! labels exist only when the test configures them (as a runtime-config file would); a
//! component that lists a label in `key_value_stores` that is not configured makes the app
//! fail to start, as `spin up` does ("unknown key_value_stores label"). At runtime `open` of a
//! label the component did not declare is `access-denied`; (with start-up validation a declared
//! but unknown label cannot occur, and `no-such-store` is what an undeclared *and* unknown label
//! would get were the check order reversed — Spin checks the permission first, and so do we).
//! `get-keys` answers through the WIT `stream<string>` + `future<result>` pair.
//!
//! Additions for tests: direct reads and writes ([`KvStore::get`], [`KvStore::set`], ...), a
//! log of what the guests did ([`KvStore::ops`]) and failure injection
//! ([`KvStore::fail_sets_matching`] and friends) that makes matching calls fail with
//! `other("injected failure: ...")`.
//!
//! Simplified: no `store-table-full` limit; values are not size-limited.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use wasmtime::component::{
    Access, Accessor, FutureReader, HasData, Resource, ResourceTable, StreamReader,
};

use crate::bindings::spin::key_value::key_value::{self as wit, Error};

/// One key-value store (one label) of a running app.
///
/// Cheap to clone; clones share the same data.
#[derive(Clone, Default)]
pub struct KvStore {
    inner: Arc<KvInner>,
}

#[derive(Default)]
struct KvInner {
    data: Mutex<BTreeMap<String, Vec<u8>>>,
    failures: Mutex<Vec<FailureRule>>,
    ops: Mutex<Vec<KvOp>>,
}

/// A kind of store operation, for failure injection and the operation log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KvOpKind {
    /// `get`
    Get,
    /// `set`
    Set,
    /// `delete`
    Delete,
    /// `exists`
    Exists,
    /// `get-keys`
    GetKeys,
    /// `open` (the key is the store's label): what a Redis backend pays a round trip for.
    Open,
}

/// One operation a guest performed on a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvOp {
    /// The component that performed it.
    pub component: String,
    /// What it did.
    pub kind: KvOpKind,
    /// The key (empty for `get-keys`).
    pub key: String,
    /// Whether the host answered with an (injected) error.
    pub failed: bool,
}

/// How long an injected failure lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvFailure {
    /// Every matching call fails until [`KvStore::clear_failures`].
    Always,
    /// The next `n` matching calls fail, then the rule is spent.
    Times(usize),
}

type Predicate = Arc<dyn Fn(&str) -> bool + Send + Sync>;

struct FailureRule {
    kind: KvOpKind,
    matches: Predicate,
    remaining: Option<usize>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not make every later assertion fail with PoisonError.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl KvStore {
    /// The value of `key`, if any.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        lock(&self.inner.data).get(key).cloned()
    }

    /// The value of `key` as UTF-8 text (lossy), if any.
    pub fn get_str(&self, key: &str) -> Option<String> {
        self.get(key)
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    }

    /// The value of `key` parsed as JSON, if present. Panics with the key and the text if it is
    /// not valid JSON for `T`: a test helper, not an API for production code.
    pub fn get_json<T: serde::de::DeserializeOwned>(&self, key: &str) -> Option<T> {
        let value = self.get(key)?;
        Some(serde_json::from_slice(&value).unwrap_or_else(|e| {
            panic!(
                "KV value of {key:?} is not the expected JSON ({e}): {}",
                String::from_utf8_lossy(&value)
            )
        }))
    }

    /// Sets `key` directly (not logged as a guest operation, never fails).
    pub fn set(&self, key: &str, value: impl AsRef<[u8]>) {
        lock(&self.inner.data).insert(key.to_owned(), value.as_ref().to_vec());
    }

    /// Deletes `key` directly; whether it existed.
    pub fn delete(&self, key: &str) -> bool {
        lock(&self.inner.data).remove(key).is_some()
    }

    /// All keys, sorted.
    pub fn keys(&self) -> Vec<String> {
        lock(&self.inner.data).keys().cloned().collect()
    }

    /// A copy of the whole store.
    pub fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        lock(&self.inner.data).clone()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        lock(&self.inner.data).len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes guest `set` calls on keys starting with `prefix` fail (`""` matches every key).
    pub fn fail_sets_matching(&self, prefix: &str, when: KvFailure) {
        self.fail_matching(KvOpKind::Set, prefix, when);
    }

    /// Makes guest `get` calls on keys starting with `prefix` fail.
    pub fn fail_gets_matching(&self, prefix: &str, when: KvFailure) {
        self.fail_matching(KvOpKind::Get, prefix, when);
    }

    /// Makes guest `delete` calls on keys starting with `prefix` fail.
    pub fn fail_deletes_matching(&self, prefix: &str, when: KvFailure) {
        self.fail_matching(KvOpKind::Delete, prefix, when);
    }

    /// Makes guest `get-keys` calls fail (the stream ends empty, the future is an error).
    pub fn fail_get_keys(&self, when: KvFailure) {
        self.fail_when(KvOpKind::GetKeys, |_| true, when);
    }

    /// Makes guest calls of `kind` on keys starting with `prefix` fail.
    pub fn fail_matching(&self, kind: KvOpKind, prefix: &str, when: KvFailure) {
        let prefix = prefix.to_owned();
        self.fail_when(kind, move |key| key.starts_with(&prefix), when);
    }

    /// Makes guest calls of `kind` on keys for which `predicate` holds fail with
    /// `other("injected failure: <op> <key>")` (`get-keys` has no key). Rules add up; the first matching live rule
    /// is consumed.
    pub fn fail_when(
        &self,
        kind: KvOpKind,
        predicate: impl Fn(&str) -> bool + Send + Sync + 'static,
        when: KvFailure,
    ) {
        let remaining = match when {
            KvFailure::Always => None,
            KvFailure::Times(n) => Some(n),
        };
        lock(&self.inner.failures).push(FailureRule {
            kind,
            matches: Arc::new(predicate),
            remaining,
        });
    }

    /// Removes every failure rule.
    pub fn clear_failures(&self) {
        lock(&self.inner.failures).clear();
    }

    /// Every operation guests performed on this store, in order.
    pub fn ops(&self) -> Vec<KvOp> {
        lock(&self.inner.ops).clone()
    }

    /// Number of successful guest writes (`set` and `delete`).
    pub fn writes(&self) -> usize {
        lock(&self.inner.ops)
            .iter()
            .filter(|op| !op.failed && matches!(op.kind, KvOpKind::Set | KvOpKind::Delete))
            .count()
    }

    /// Forgets the operation log.
    pub fn clear_ops(&self) {
        lock(&self.inner.ops).clear();
    }

    /// Runs one guest operation: consults the failure rules, logs, then applies `apply`.
    fn guest_op<R>(
        &self,
        component: &str,
        kind: KvOpKind,
        key: &str,
        apply: impl FnOnce(&mut BTreeMap<String, Vec<u8>>) -> R,
    ) -> Result<R, Error> {
        let injected = {
            let mut rules = lock(&self.inner.failures);
            let hit = rules
                .iter_mut()
                .find(|rule| rule.kind == kind && rule.remaining != Some(0) && (rule.matches)(key));
            match hit {
                Some(rule) => {
                    if let Some(n) = rule.remaining.as_mut() {
                        *n -= 1;
                    }
                    true
                }
                None => false,
            }
        };
        lock(&self.inner.ops).push(KvOp {
            component: component.to_owned(),
            kind,
            key: key.to_owned(),
            failed: injected,
        });
        if injected {
            let op = match kind {
                KvOpKind::Get => "get",
                KvOpKind::Set => "set",
                KvOpKind::Delete => "delete",
                KvOpKind::Exists => "exists",
                KvOpKind::GetKeys => return Err(Error::Other("injected failure: get-keys".into())),
                KvOpKind::Open => "open",
            };
            return Err(Error::Other(format!("injected failure: {op} {key}")));
        }
        Ok(apply(&mut lock(&self.inner.data)))
    }
}

/// The stores of one app, by label.
#[derive(Clone, Default)]
pub(crate) struct KvStores(Arc<HashMap<String, KvStore>>);

impl KvStores {
    pub(crate) fn new(labels: impl IntoIterator<Item = String>) -> Self {
        let mut map: HashMap<String, KvStore> = labels
            .into_iter()
            .map(|label| (label, KvStore::default()))
            .collect();
        map.entry("default".to_owned()).or_default();
        Self(Arc::new(map))
    }

    pub(crate) fn get(&self, label: &str) -> Option<&KvStore> {
        self.0.get(label)
    }
}

/// Per-store-instance (per component instance) key-value state.
pub(crate) struct KvCtx {
    pub(crate) component_id: String,
    pub(crate) allowed: Arc<[String]>,
    pub(crate) stores: KvStores,
}

/// An open store handle in a guest's resource table (internal; public only for the bindings).
#[doc(hidden)]
pub struct OpenStore {
    store: KvStore,
    component: Arc<str>,
}

/// What the generated bindings get out of the store data.
pub(crate) struct KvView<'a> {
    pub(crate) ctx: &'a KvCtx,
    pub(crate) table: &'a mut ResourceTable,
}

pub(crate) struct KvData;

impl HasData for KvData {
    type Data<'a> = KvView<'a>;
}

fn with_store<T, R>(
    accessor: &Accessor<T, KvData>,
    handle: &Resource<OpenStore>,
    f: impl FnOnce(&KvStore, &str) -> R,
) -> wasmtime::Result<R> {
    accessor.with(|mut access| {
        let view = access.get();
        let open = view.table.get(handle)?;
        Ok(f(&open.store, &open.component))
    })
}

impl wit::Host for KvView<'_> {}

impl wit::HostStore for KvView<'_> {}

impl wit::HostStoreWithStore for KvData {
    fn drop<T>(mut access: Access<'_, T, Self>, rep: Resource<OpenStore>) -> wasmtime::Result<()> {
        access.get().table.delete(rep)?;
        Ok(())
    }

    async fn open<T>(
        accessor: &Accessor<T, Self>,
        label: String,
    ) -> wasmtime::Result<Result<Resource<OpenStore>, Error>> {
        accessor.with(|mut access| {
            let view = access.get();
            if !view.ctx.allowed.contains(&label) {
                return Ok(Err(Error::AccessDenied));
            }
            let Some(store) = view.ctx.stores.get(&label) else {
                return Ok(Err(Error::NoSuchStore));
            };
            let component = view.ctx.component_id.as_str();
            if let Err(e) = store.guest_op(component, KvOpKind::Open, &label, |_| ()) {
                return Ok(Err(e));
            }
            let open = OpenStore {
                store: store.clone(),
                component: component.into(),
            };
            Ok(Ok(view.table.push(open)?))
        })
    }

    async fn get<T>(
        accessor: &Accessor<T, Self>,
        self_: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        with_store(accessor, &self_, |store, component| {
            store.guest_op(component, KvOpKind::Get, &key, |data| {
                data.get(&key).cloned()
            })
        })
    }

    async fn set<T>(
        accessor: &Accessor<T, Self>,
        self_: Resource<OpenStore>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        with_store(accessor, &self_, |store, component| {
            store.guest_op(component, KvOpKind::Set, &key, |data| {
                data.insert(key.clone(), value);
            })
        })
    }

    async fn delete<T>(
        accessor: &Accessor<T, Self>,
        self_: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<(), Error>> {
        with_store(accessor, &self_, |store, component| {
            store.guest_op(component, KvOpKind::Delete, &key, |data| {
                data.remove(&key);
            })
        })
    }

    async fn exists<T>(
        accessor: &Accessor<T, Self>,
        self_: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<bool, Error>> {
        with_store(accessor, &self_, |store, component| {
            store.guest_op(component, KvOpKind::Exists, &key, |data| {
                data.contains_key(&key)
            })
        })
    }

    async fn get_keys<T>(
        accessor: &Accessor<T, Self>,
        self_: Resource<OpenStore>,
    ) -> wasmtime::Result<(StreamReader<String>, FutureReader<Result<(), Error>>)> {
        let keys = with_store(accessor, &self_, |store, component| {
            store.guest_op(component, KvOpKind::GetKeys, "", |data| {
                data.keys().cloned().collect::<Vec<_>>()
            })
        })?;
        accessor.with(|mut access| {
            let (keys, result) = match keys {
                Ok(keys) => (keys, Ok(())),
                Err(e) => (Vec::new(), Err(e)),
            };
            let stream = StreamReader::new(&mut access, keys)?;
            let future =
                FutureReader::new(
                    &mut access,
                    async move { wasmtime::Result::<_>::Ok(result) },
                )?;
            Ok((stream, future))
        })
    }
}
