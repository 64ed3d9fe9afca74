//! The running app: engine, linker, compiled components, instance pools and dispatch.
//!
//! Imitates how Spin 4's HTTP trigger runs WASIp3 (`wasi:http/handler@0.3.0-rc-2026-03-15`)
//! components: one shared Wasmtime engine with the component-model-async ABI and the pooling
//! allocator; WASI 0.2 and 0.3 plus `wasi:http` 0.3 and the Spin interfaces linked; each
//! request handed to Wasmtime's `wasmtime_wasi_http::handler::ProxyHandler` (the instance-reuse
//! dispatcher behind `wasmtime serve` and Spin 4), so an instance serves up to 128 requests,
//! up to 16 at once, and is dropped after 1 s idle (Spin's defaults; configurable, and reuse
//! can be turned off). A request that matches no route gets an empty 404; a guest that traps or
//! returns a `wasi:http` error gets an empty 500, as from Spin.
//!
//! Simplified: response bodies are buffered (a test gets whole bodies); no request timeout is
//! enforced (Spin's default is none as well); guests see an empty stdin, no arguments, the
//! component's `environment` and no files.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use http_body_util::BodyExt as _;
use wasmtime::component::{Accessor, Component, HasData, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::WasiHttpCtx;
use wasmtime_wasi_http::handler::{HandlerState, Proxy, ProxyHandler, ProxyPre, StoreBundle};
use wasmtime_wasi_http::p3::bindings::ServicePre;
use wasmtime_wasi_http::p3::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::p3::{self, WasiHttpCtxView, WasiHttpView};

use crate::InstanceReuse;
use crate::bindings::spin::key_value::key_value as kv_wit;
use crate::bindings::spin::variables::variables as vars_wit;
use crate::kv::{KvCtx, KvData, KvStores, KvView};
use crate::logs::{Logs, Stream};
use crate::outbound::{AllowedHosts, OutboundHooks};
use crate::router::Router;
use crate::variables::ComponentVariables;

/// The data of one component instance's store.
pub(crate) struct HostState {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: OutboundHooks,
    kv: KvCtx,
    vars: Arc<ComponentVariables>,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

struct VarsData;

impl HasData for VarsData {
    type Data<'a> = &'a ComponentVariables;
}

impl vars_wit::Host for &ComponentVariables {}

impl vars_wit::HostWithStore for VarsData {
    async fn get<T>(
        accessor: &Accessor<T, Self>,
        name: String,
    ) -> wasmtime::Result<Result<String, vars_wit::Error>> {
        Ok(accessor.with(|mut access| access.get().get(&name)))
    }
}

/// The process-wide engine: compiled components are cached against it.
fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = Config::new();
        config.wasm_component_model_async(true);
        // `perf record` can name the guests' functions (docs/PERFORMANCE.md, "Profile").
        if std::env::var_os("SPIN_TEST_HOST_PERFMAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let mut pool = PoolingAllocationConfig::default();
        // Enough for many apps' instances at once within one test binary.
        pool.total_component_instances(1000);
        pool.total_memories(1000);
        pool.total_tables(1000);
        pool.total_core_instances(2000);
        pool.total_stacks(1000);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        Engine::new(&config)
            .or_else(|_| {
                // Some environments cap virtual memory; fall back to on-demand allocation.
                let mut config = Config::new();
                config.wasm_component_model_async(true);
                Engine::new(&config)
            })
            .expect("creating the Wasmtime engine")
    })
}

fn linker() -> anyhow::Result<&'static Linker<HostState>> {
    static LINKER: OnceLock<Linker<HostState>> = OnceLock::new();
    if let Some(linker) = LINKER.get() {
        return Ok(linker);
    }
    let mut linker = Linker::new(engine());
    // Rust's std on wasm32-wasip2 still imports WASI 0.2; spin-sdk 6 uses WASI 0.3.
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi::p3::add_to_linker(&mut linker)?;
    p3::add_to_linker(&mut linker)?;
    kv_wit::add_to_linker::<_, KvData>(&mut linker, |state: &mut HostState| KvView {
        ctx: &state.kv,
        table: &mut state.table,
    })?;
    vars_wit::add_to_linker::<_, VarsData>(&mut linker, |state: &mut HostState| &*state.vars)?;
    Ok(LINKER.get_or_init(|| linker))
}

/// Compiles `path` once per process (recompiling if the file changed).
pub(crate) fn load_component(path: &Path) -> anyhow::Result<Component> {
    type Slot = Arc<Mutex<Option<(SystemTime, u64, Component)>>>;
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Slot>>> = OnceLock::new();
    let meta = std::fs::metadata(path)
        .with_context(|| format!("component source {} not found", path.display()))?;
    let stamp = (meta.modified()?, meta.len());
    let slot = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(path.to_path_buf())
        .or_default()
        .clone();
    // Held while compiling, so parallel tests wait for one compilation instead of repeating it.
    let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((modified, len, component)) = slot.as_ref()
        && (*modified, *len) == stamp
    {
        return Ok(component.clone());
    }
    let component = Component::from_file(engine(), path)
        .map_err(|e| anyhow!("{e:?}"))
        .with_context(|| format!("compiling {}", path.display()))?;
    *slot = Some((stamp.0, stamp.1, component.clone()));
    Ok(component)
}

/// Everything needed to create stores for one component.
pub(crate) struct ComponentPlan {
    pub(crate) id: String,
    pub(crate) component: Component,
    pub(crate) vars: ComponentVariables,
    pub(crate) allowed_hosts: AllowedHosts,
    pub(crate) kv_allowed: Vec<String>,
    pub(crate) environment: Vec<(String, String)>,
}

/// [`HandlerState`] of one component: how to make a store, and the reuse limits.
struct ComponentState {
    id: Arc<str>,
    vars: Arc<ComponentVariables>,
    allowed_hosts: Arc<AllowedHosts>,
    kv_allowed: Arc<[String]>,
    environment: Vec<(String, String)>,
    kv: KvStores,
    logs: Logs,
    reuse: InstanceReuse,
    app: Weak<AppInner>,
    instances: Arc<Mutex<u64>>,
}

impl HandlerState for ComponentState {
    type StoreData = HostState;

    fn new_store(&self, _req_id: Option<u64>) -> wasmtime::Result<StoreBundle<HostState>> {
        *self.instances.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        let wasi = WasiCtxBuilder::new()
            .stdout(self.logs.sink(&self.id, Stream::Stdout))
            .stderr(self.logs.sink(&self.id, Stream::Stderr))
            .envs(&self.environment)
            .build();
        let state = HostState {
            table: ResourceTable::new(),
            wasi,
            http: WasiHttpCtx::new(),
            hooks: OutboundHooks {
                component_id: self.id.clone(),
                allowed: self.allowed_hosts.clone(),
                app: self.app.clone(),
            },
            kv: KvCtx {
                component_id: self.id.to_string(),
                allowed: self.kv_allowed.clone(),
                stores: self.kv.clone(),
            },
            vars: self.vars.clone(),
        };
        Ok(StoreBundle {
            store: Store::new(engine(), state),
            write_profile: Box::new(|_| ()),
        })
    }

    fn request_timeout(&self) -> Duration {
        Duration::MAX
    }

    fn idle_instance_timeout(&self) -> Duration {
        self.reuse.idle_instance_timeout
    }

    fn max_instance_reuse_count(&self) -> usize {
        self.reuse.max_instance_reuse_count.max(1)
    }

    fn max_instance_concurrent_reuse_count(&self) -> usize {
        self.reuse.max_instance_concurrent_reuse_count.max(1)
    }

    fn handle_worker_error(&self, error: wasmtime::Error) {
        if let Some(app) = self.app.upgrade() {
            app.host_error(format!("component {}: instance failed: {error:?}", self.id));
        }
    }
}

struct ComponentRuntime {
    handler: ProxyHandler<ComponentState>,
    instances: Arc<Mutex<u64>>,
}

/// The shared state of a running [`crate::TestApp`].
pub(crate) struct AppInner {
    pub(crate) name: String,
    router: Router,
    components: HashMap<String, ComponentRuntime>,
    pub(crate) kv: KvStores,
    pub(crate) logs: Logs,
    pub(crate) listen: SocketAddr,
    host_errors: Mutex<Vec<String>>,
}

/// What a request produced inside the instance.
type Outcome = wasmtime::Result<Result<http::Response<Bytes>, ErrorCode>>;

impl AppInner {
    pub(crate) fn new(
        name: String,
        router: Router,
        plans: Vec<ComponentPlan>,
        kv: KvStores,
        logs: Logs,
        reuse: InstanceReuse,
        listen: SocketAddr,
    ) -> anyhow::Result<Arc<Self>> {
        let linker = linker()?;
        let mut pres = Vec::new();
        for plan in plans {
            let pre = linker
                .instantiate_pre(&plan.component)
                .map_err(|e| anyhow!("{e:?}"))
                .with_context(|| format!("linking component {:?}", plan.id))?;
            let pre = ServicePre::new(pre)
                .map_err(|e| anyhow!("{e:?}"))
                .with_context(|| {
                    format!(
                        "component {:?} does not export wasi:http/handler@0.3.0-rc-2026-03-15 (is it built with spin-sdk 6?)",
                        plan.id
                    )
                })?;
            pres.push((plan, pre));
        }
        Ok(Arc::new_cyclic(|app: &Weak<AppInner>| {
            let components = pres
                .into_iter()
                .map(|(plan, pre)| {
                    let instances = Arc::new(Mutex::new(0));
                    let state = ComponentState {
                        id: plan.id.as_str().into(),
                        vars: Arc::new(plan.vars),
                        allowed_hosts: Arc::new(plan.allowed_hosts),
                        kv_allowed: plan.kv_allowed.into(),
                        environment: plan.environment,
                        kv: kv.clone(),
                        logs: logs.clone(),
                        reuse,
                        app: app.clone(),
                        instances: instances.clone(),
                    };
                    let runtime = ComponentRuntime {
                        handler: ProxyHandler::new(state, ProxyPre::P3(pre)),
                        instances,
                    };
                    (plan.id, runtime)
                })
                .collect();
            AppInner {
                name,
                router,
                components,
                kv,
                logs,
                listen,
                host_errors: Mutex::new(Vec::new()),
            }
        }))
    }

    pub(crate) fn host_error(&self, message: String) {
        eprintln!("[spin-test-host] {message}");
        self.host_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(message);
    }

    pub(crate) fn host_errors(&self) -> Vec<String> {
        self.host_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many instances of `component` were created so far.
    pub(crate) fn instances_created(&self, component: &str) -> Option<u64> {
        self.components
            .get(component)
            .map(|c| *c.instances.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Routes `req` like Spin's HTTP trigger and runs it in the matched component.
    pub(crate) async fn dispatch<B>(
        &self,
        mut req: http::Request<B>,
        client_addr: SocketAddr,
    ) -> anyhow::Result<http::Response<Bytes>>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<ErrorCode>,
    {
        let scheme = "http";
        let path = req.uri().path().to_owned();
        let Some(route) = self.router.route(&path) else {
            return Ok(empty_response(http::StatusCode::NOT_FOUND));
        };
        let runtime = self
            .components
            .get(&route.component_id)
            .with_context(|| format!("unknown component {:?}", route.component_id))?;

        // Spin takes the authority from `Host` (or an absolute request URI).
        let host = match req.headers().get(http::header::HOST) {
            Some(value) => value
                .to_str()
                .context("'Host' header is not valid UTF-8")?
                .to_owned(),
            None => {
                let host = req
                    .uri()
                    .authority()
                    .map_or_else(|| self.listen.to_string(), |a| a.to_string());
                req.headers_mut()
                    .insert(http::header::HOST, http::HeaderValue::from_str(&host)?);
                host
            }
        };
        let path_and_query = req
            .uri()
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        for (name, value) in route.spin_headers(scheme, &host, &path_and_query, client_addr) {
            req.headers_mut().insert(
                http::HeaderName::from_bytes(name.as_bytes())?,
                http::HeaderValue::from_str(&value)?,
            );
        }
        *req.uri_mut() = http::Uri::builder()
            .scheme(scheme)
            .authority(host.as_str())
            .path_and_query(path_and_query.as_str())
            .build()?;

        let (tx, rx) = tokio::sync::oneshot::channel::<Outcome>();
        runtime.handler.spawn(
            None,
            Box::new(move |accessor, proxy| {
                Box::pin(async move {
                    let _ = tx.send(run_request(accessor, proxy, req).await);
                })
            }),
        );
        let component = &route.component_id;
        match rx.await {
            Ok(Ok(Ok(response))) => Ok(response),
            Ok(Ok(Err(code))) => {
                self.host_error(format!(
                    "component {component}: request {path} failed with {code:?}"
                ));
                Ok(empty_response(http::StatusCode::INTERNAL_SERVER_ERROR))
            }
            Ok(Err(trap)) => {
                self.host_error(format!(
                    "component {component}: request {path} trapped: {trap:?}"
                ));
                Ok(empty_response(http::StatusCode::INTERNAL_SERVER_ERROR))
            }
            Err(_) => {
                self.host_error(format!(
                    "component {component}: request {path} was dropped (instance failed to start or died)"
                ));
                Ok(empty_response(http::StatusCode::INTERNAL_SERVER_ERROR))
            }
        }
    }
}

fn empty_response(status: http::StatusCode) -> http::Response<Bytes> {
    let mut response = http::Response::new(Bytes::new());
    *response.status_mut() = status;
    response
}

/// Runs one request in an instance and buffers the response body.
async fn run_request<B>(
    accessor: &Accessor<HostState>,
    proxy: &Proxy,
    req: http::Request<B>,
) -> Outcome
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<ErrorCode>,
{
    #[allow(
        unreachable_patterns,
        reason = "Proxy::P2 exists only if wasmtime-wasi-http's p2 feature is on"
    )]
    let service = match proxy {
        Proxy::P3(service) => service,
        _ => wasmtime::bail!("spin-test-host runs only WASIp3 (wasi:http@0.3) components"),
    };
    let (request, request_io) = p3::Request::from_http(req);
    let response = match service.handle(accessor, request).await? {
        Ok(response) => response,
        Err(code) => return Ok(Err(code)),
    };
    let response = accessor.with(|mut store| response.into_http(&mut store, request_io))?;
    let (parts, body) = response.into_parts();
    Ok(match body.collect().await {
        Ok(collected) => Ok(http::Response::from_parts(parts, collected.to_bytes())),
        Err(code) => Err(code),
    })
}

/// Fails unless every `key_value_stores` label of every component is configured.
pub(crate) fn check_kv_labels(
    component: &str,
    labels: &[String],
    stores: &KvStores,
) -> anyhow::Result<()> {
    for label in labels {
        if stores.get(label).is_none() {
            bail!(
                "unknown key_value_stores label {label:?} for component {component:?} (configure it with TestAppBuilder::key_value_store({label:?}), as a runtime-config file would)"
            );
        }
    }
    Ok(())
}
