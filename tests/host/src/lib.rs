//! Embedded Spin-like test host (issue 3).
//!
//! Runs an app's real `wasm32-wasip2` components in-process, the way Spin 4 runs spin-sdk 6.0
//! (WASIp3) components, reading the app's own `spin.toml`. Spin itself cannot be installed where
//! the tests run; this host reproduces the parts of Spin the app relies on, on the same
//! Wasmtime (44.0.3) that Spin 4.0.x embeds:
//!
//! | Spin behaviour | module |
//! |---|---|
//! | `spin up --build`: build commands, `source` (incl. nested-cargo locking) | `build_app` |
//! | manifest v2 | `manifest` |
//! | HTTP trigger routing, `spin-*` request headers | `router` |
//! | instance reuse (128 requests / 16 concurrent), 404 / 500 answers | `app` |
//! | `spin:variables@3.0.0`, `[variables]`, `SPIN_VARIABLE_*` overrides | `variables` |
//! | `spin:key-value@3.0.0`, `key_value_stores` | [`kv`] |
//! | `wasi:http` client, `allowed_outbound_hosts`, `self` requests | `outbound` |
//! | `--runtime-config-file`: `[key_value_store.<label>]`, `[[client_tls]]` (mTLS) | [`tls`], [`TestAppBuilder::runtime_config_file`] |
//! | guest stdout / stderr | `logs` |
//! | (for tests) a local fake HTTP server | [`fake`] |
//! | (for tests) an HTTPS fake requiring a client certificate, a throw-away PKI | [`tls`] |
//! | (for tests) the released Spin CLI itself, to check the app and this host against it | [`real_spin`] |
//!
//! Each module's documentation says what it imitates and where it is simplified. The WASIp3
//! `wasi:http` notes that matter to app code: a self request (`http://self.alt/<path>`, or a
//! relative URL) fails in Spin 4.0.2 for a WASIp3 component (`HTTP-request-URI-invalid`; so it
//! does here), a host named `self` is an ordinary, denied host, and responses are buffered
//! whole.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use spin_test_host::{KvFailure, TestApp};
//!
//! let app = TestApp::builder("tests/fixture/spin.toml")
//!     .variable("greeting", "hi")
//!     .start()
//!     .await?;
//! let res = app.request(http::Request::put("/kv/a").body("1")?).await?;
//! assert_eq!(res.status, 200);
//! assert_eq!(app.kv("default").get("a"), Some(b"1".to_vec()));
//! app.kv("default").fail_sets_matching("order:", KvFailure::Always);
//! assert!(!app.logs().contains("secret"));
//! # Ok(())
//! # }
//! ```

mod app;
mod build_app;
pub mod fake;
pub mod kv;
mod logs;
mod manifest;
mod outbound;
pub mod real_spin;
pub mod redis;
mod router;
pub mod tls;
mod variables;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;

pub use fake::{FakeServer, RecordedRequest, text_response};
pub use kv::{KvFailure, KvOp, KvOpKind, KvStore};
pub use logs::{LogEntry, Stream};

use app::{AppInner, ComponentPlan};
use build_app::SourceResolver;
use manifest::Manifest;

/// Generated host bindings for the Spin interfaces (WIT copied from spin-sdk 6.0.0).
mod bindings {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "spin-imports",
        imports: { default: store | trappable },
        with: {
            "spin:key-value/key-value.store": crate::kv::OpenStore,
        },
    });
}

/// Instance reuse, as Spin 4's HTTP trigger configures it for WASIp3 components
/// (`--max-instance-reuse-count`, `--max-instance-concurrent-reuse-count`,
/// `--idle-instance-timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceReuse {
    /// Requests one instance serves before it is dropped (Spin: 128).
    pub max_instance_reuse_count: usize,
    /// Requests one instance serves at the same time (Spin: 16).
    pub max_instance_concurrent_reuse_count: usize,
    /// How long an idle instance is kept (Spin: 1 s).
    pub idle_instance_timeout: Duration,
}

impl Default for InstanceReuse {
    fn default() -> Self {
        Self {
            max_instance_reuse_count: 128,
            max_instance_concurrent_reuse_count: 16,
            idle_instance_timeout: Duration::from_secs(1),
        }
    }
}

impl InstanceReuse {
    /// A fresh instance for every request (Spin's behaviour for WASIp2 components).
    pub fn off() -> Self {
        Self {
            max_instance_reuse_count: 1,
            max_instance_concurrent_reuse_count: 1,
            ..Self::default()
        }
    }
}

/// A response from the app, body fully read.
#[derive(Debug, Clone)]
pub struct TestResponse {
    /// Status code.
    pub status: http::StatusCode,
    /// Response headers.
    pub headers: http::HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl TestResponse {
    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> anyhow::Result<T> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("response body is not the expected JSON: {}", self.text()))
    }

    /// A header as text, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Request bodies a test can pass: `()`, `&'static str`, `String`, `Vec<u8>`, `Bytes`, ...
pub trait IntoBody {
    /// The body bytes.
    fn into_body(self) -> Bytes;
}

impl IntoBody for () {
    fn into_body(self) -> Bytes {
        Bytes::new()
    }
}

impl IntoBody for &'static str {
    fn into_body(self) -> Bytes {
        Bytes::from_static(self.as_bytes())
    }
}

impl IntoBody for &'static [u8] {
    fn into_body(self) -> Bytes {
        Bytes::from_static(self)
    }
}

impl IntoBody for String {
    fn into_body(self) -> Bytes {
        Bytes::from(self)
    }
}

impl IntoBody for Vec<u8> {
    fn into_body(self) -> Bytes {
        Bytes::from(self)
    }
}

impl IntoBody for Bytes {
    fn into_body(self) -> Bytes {
        self
    }
}

impl IntoBody for serde_json::Value {
    fn into_body(self) -> Bytes {
        Bytes::from(self.to_string())
    }
}

enum ManifestSource {
    File(PathBuf),
    Text { toml: String, dir: PathBuf },
}

/// Configures and starts a [`TestApp`].
pub struct TestAppBuilder {
    manifest: ManifestSource,
    overrides: BTreeMap<String, String>,
    kv_labels: BTreeSet<String>,
    reuse: InstanceReuse,
    build: bool,
    echo: bool,
    listen: SocketAddr,
    runtime_config: Option<PathBuf>,
}

impl TestAppBuilder {
    /// Overrides application variable `name` (as `SPIN_VARIABLE_<NAME>` would for `spin up`).
    /// `name` is the variable's name (`wxpay_mch_api`) or the environment form
    /// (`SPIN_VARIABLE_WXPAY_MCH_API`). Overriding an undeclared variable fails `start()`.
    pub fn variable(mut self, name: &str, value: impl Into<String>) -> Self {
        self.overrides
            .insert(variables::override_name(name), value.into());
        self
    }

    /// Several [`Self::variable`]s.
    pub fn variables<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: Into<String>,
    {
        for (k, v) in vars {
            self = self.variable(k.as_ref(), v);
        }
        self
    }

    /// Configures a key-value store label besides `default` (as a runtime-config file's
    /// `[key_value_store.<label>]` would).
    pub fn key_value_store(mut self, label: &str) -> Self {
        self.kv_labels.insert(label.to_owned());
        self
    }

    /// Reads a runtime config file, as `spin up --runtime-config-file <path>` does:
    /// `[key_value_store.<label>]` tables configure store labels (every store is in memory
    /// here, whatever its `type`), `[[client_tls]]` entries the client TLS of outbound
    /// `https://` (see [`tls`]), with relative paths resolved against the file's directory.
    /// Any other key fails `start()` (this host supports no other runtime config).
    pub fn runtime_config_file(mut self, path: impl AsRef<Path>) -> Self {
        self.runtime_config = Some(path.as_ref().to_path_buf());
        self
    }

    /// Sets instance reuse (default: Spin's 128 / 16 / 1 s).
    pub fn instance_reuse(mut self, reuse: InstanceReuse) -> Self {
        self.reuse = reuse;
        self
    }

    /// A fresh instance for every request.
    pub fn no_instance_reuse(self) -> Self {
        self.instance_reuse(InstanceReuse::off())
    }

    /// Does not run the manifest's build commands (the `source` files must exist).
    pub fn skip_build(mut self) -> Self {
        self.build = false;
        self
    }

    /// Does not echo guest output to the test's output (it is still captured).
    pub fn quiet(mut self) -> Self {
        self.echo = false;
        self
    }

    /// The address the app pretends to listen on (default `127.0.0.1:3000`, `spin up`'s):
    /// the `Host` of requests that have none.
    pub fn listen_addr(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Builds (once per process) and loads the app. Fails like `spin up` would: naming a
    /// missing required variable, an unknown store label, a malformed allowed host, ...
    pub async fn start(self) -> anyhow::Result<TestApp> {
        let manifest = match &self.manifest {
            ManifestSource::File(path) => Manifest::from_file(&find_manifest(path)?)?,
            ManifestSource::Text { toml, dir } => {
                Manifest::from_str(toml, &build_app::normalize(dir))?
            }
        };
        let uses_cargo = manifest.components.values().any(|c| {
            c.build.as_ref().is_some_and(|b| {
                b.command
                    .as_slice()
                    .iter()
                    .any(|cmd| cmd.trim_start().starts_with("cargo"))
            })
        });
        if self.build {
            let manifest = manifest.clone();
            tokio::task::spawn_blocking(move || build_app::build_once(&manifest)).await??;
        }
        let app_values = variables::resolve_app_variables(&manifest.variables, &self.overrides)?;
        let mut kv_labels = self.kv_labels.clone();
        let client_tls = match &self.runtime_config {
            None => tls::ClientTlsConfigs::default(),
            Some(path) => read_runtime_config(path, &mut kv_labels)?,
        };
        let kv = kv::KvStores::new(kv_labels);
        let resolver = SourceResolver::new(&manifest.dir, uses_cargo)?;

        // Like Spin: every component's store labels must be configured...
        for (id, decl) in &manifest.components {
            app::check_kv_labels(id, &decl.key_value_stores, &kv)?;
        }
        // ...and the components that triggers use are loaded.
        let used: BTreeSet<&str> = manifest
            .http_triggers
            .iter()
            .map(|t| t.component.as_str())
            .collect();
        let mut plans = Vec::new();
        for id in used {
            let decl = &manifest.components[id];
            let vars = variables::ComponentVariables::resolve(id, &decl.variables, &app_values)?;
            let hosts = decl
                .allowed_outbound_hosts
                .iter()
                .map(|entry| {
                    variables::Template::new(entry)?
                        .render(&app_values)
                        .with_context(|| {
                            format!("component {id:?}: allowed_outbound_hosts {entry:?}")
                        })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let allowed_hosts = outbound::AllowedHosts::parse(&hosts)
                .with_context(|| format!("component {id:?}"))?
                .with_client_tls(client_tls.for_component(id));
            let source = resolver.resolve(&manifest.dir, decl.source_path(id)?);
            let component = {
                let source = source.clone();
                tokio::task::spawn_blocking(move || app::load_component(&source)).await??
            };
            plans.push(ComponentPlan {
                id: id.to_owned(),
                component,
                vars,
                allowed_hosts,
                kv_allowed: decl.key_value_stores.clone(),
                environment: decl.environment.clone().into_iter().collect(),
            });
        }
        let router = router::Router::build(
            manifest
                .http_triggers
                .iter()
                .map(|t| (t.component.as_str(), t.route.as_deref())),
        )?;
        let inner = AppInner::new(
            manifest.application.name.clone(),
            router,
            plans,
            kv,
            logs::Logs::new(self.echo),
            self.reuse,
            self.listen,
        )?;
        Ok(TestApp { inner })
    }
}

/// Reads a runtime config file: its `[key_value_store.<label>]` labels into `kv_labels`, and
/// its `[[client_tls]]` entries (paths relative to the file's directory, as in Spin).
fn read_runtime_config(
    path: &Path,
    kv_labels: &mut BTreeSet<String>,
) -> anyhow::Result<tls::ClientTlsConfigs> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read runtime config file {}", path.display()))?;
    let table: toml::Table = toml::from_str(&text)
        .with_context(|| format!("failed to parse runtime config file {}", path.display()))?;
    let dir = path.parent().unwrap_or(Path::new(""));
    let mut client_tls = tls::ClientTlsConfigs::default();
    for (key, value) in &table {
        match key.as_str() {
            "key_value_store" => {
                let stores = value
                    .as_table()
                    .context("runtime config: key_value_store must be a table")?;
                kv_labels.extend(stores.keys().cloned());
            }
            "client_tls" => client_tls = tls::ClientTlsConfigs::from_toml(value, dir)?,
            other => bail!(
                "runtime config {}: {other:?} is not supported by spin-test-host",
                path.display()
            ),
        }
    }
    Ok(client_tls)
}

/// Finds a relative manifest path from the current directory or any of its ancestors, so
/// `tests/fixture/spin.toml` works from a workspace member as well as from the root.
fn find_manifest(path: &Path) -> anyhow::Result<PathBuf> {
    if path.is_absolute() || path.exists() {
        return Ok(build_app::normalize(path));
    }
    let cwd = std::env::current_dir()?;
    for dir in cwd.ancestors() {
        let candidate = dir.join(path);
        if candidate.exists() {
            return Ok(build_app::normalize(&candidate));
        }
    }
    bail!(
        "manifest {} not found from {} or its ancestors",
        path.display(),
        cwd.display()
    )
}

/// A running app.
#[derive(Clone)]
pub struct TestApp {
    inner: Arc<AppInner>,
}

impl TestApp {
    /// Starts configuring an app from a `spin.toml` (relative paths are looked up from the
    /// current directory and its ancestors).
    pub fn builder(manifest: impl AsRef<Path>) -> TestAppBuilder {
        Self::builder_for(ManifestSource::File(manifest.as_ref().to_path_buf()))
    }

    /// Starts configuring an app from manifest text; relative paths in it are relative to
    /// `dir` (e.g. a variation of a real manifest, for start-up failure tests).
    pub fn builder_from_toml(toml: impl Into<String>, dir: impl AsRef<Path>) -> TestAppBuilder {
        Self::builder_for(ManifestSource::Text {
            toml: toml.into(),
            dir: dir.as_ref().to_path_buf(),
        })
    }

    fn builder_for(manifest: ManifestSource) -> TestAppBuilder {
        TestAppBuilder {
            manifest,
            overrides: BTreeMap::new(),
            kv_labels: BTreeSet::new(),
            reuse: InstanceReuse::default(),
            build: true,
            echo: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
            runtime_config: None,
        }
    }

    /// Sends a request from `127.0.0.1:<ephemeral port>`. The URI is usually just a path
    /// (`/api/orders`); `Host` defaults to the listen address.
    pub async fn request<B: IntoBody>(
        &self,
        req: http::Request<B>,
    ) -> anyhow::Result<TestResponse> {
        self.request_from(req, next_client_addr()).await
    }

    /// Sends a request as if from `client_addr` (what `spin-client-addr` reports).
    pub async fn request_from<B: IntoBody>(
        &self,
        req: http::Request<B>,
        client_addr: SocketAddr,
    ) -> anyhow::Result<TestResponse> {
        let req = req.map(|body| http_body_util::Full::new(body.into_body()));
        let response = self.inner.dispatch(req, client_addr).await?;
        let (parts, body) = response.into_parts();
        Ok(TestResponse {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> anyhow::Result<TestResponse> {
        self.request(http::Request::get(path).body(())?).await
    }

    /// The key-value store `label` (shared with the guests). Panics if the label is not
    /// configured (`default` always is).
    pub fn kv(&self, label: &str) -> KvStore {
        self.inner
            .kv
            .get(label)
            .unwrap_or_else(|| panic!("no key-value store {label:?} in this app"))
            .clone()
    }

    /// Everything the guests wrote to stdout and stderr, in order.
    pub fn logs(&self) -> String {
        self.inner
            .logs
            .entries()
            .into_iter()
            .map(|e| e.text)
            .collect()
    }

    /// The guests' output, write by write, with component and stream.
    pub fn log_entries(&self) -> Vec<LogEntry> {
        self.inner.logs.entries()
    }

    /// What the host reported: traps, `wasi:http` errors returned by guests, instances that
    /// failed. A test that expects clean runs can assert this is empty.
    pub fn host_errors(&self) -> Vec<String> {
        self.inner.host_errors()
    }

    /// How many instances of `component` have been created so far (`None`: no such component).
    pub fn instances_created(&self, component: &str) -> Option<u64> {
        self.inner.instances_created(component)
    }

    /// The `[application] name`.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The address the app pretends to listen on.
    pub fn listen_addr(&self) -> SocketAddr {
        self.inner.listen
    }
}

/// Client addresses of test requests: loopback with a fresh ephemeral-looking port each.
fn next_client_addr() -> SocketAddr {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT_PORT: AtomicU16 = AtomicU16::new(49152);
    let port = NEXT_PORT.fetch_add(1, Ordering::Relaxed).max(49152);
    SocketAddr::from(([127, 0, 0, 1], port))
}
