//! The Spin adapters (cargo feature `spin`, DESIGN.md §3): the ports of [`crate::flows`] on
//! spin-sdk 6.0, plus the request/response plumbing every component shares, so that each
//! component stays a thin adapter (read the request, build the [`Env`], call one flow, answer).
//!
//! | port | here |
//! |---|---|
//! | [`Store`] | [`SpinStore`]: Spin KV, store `default`, opened lazily at most once per request |
//! | [`Transport`] | [`SpinTransport`]: `spin_sdk::http::send` with connect / first-byte timeouts |
//! | [`VariableSource`] | [`SpinVariables`]: every variable read once per instance, cached |
//! | [`Clock`] | [`SystemClock`]: the wall clock |
//! | [`Nonce`] | [`OsRandom`]: `getrandom` (`wasi:random`) |
//!
//! [`serve`] wraps a component's handler: it reads the request (body limited to
//! [`MAX_REQUEST_BODY_BYTES`] while reading), hands over the variables, logs one line and
//! converts the answer. Nothing here prints or returns a URL, a request body, a secret, a token
//! or an openid.

use std::cell::OnceCell;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use spin_sdk::http::{HeaderMap, Method, StatusCode};
use spin_sdk::key_value;
use spin_sdk::wasip3::http::types::{ErrorCode, RequestOptions};
use spin_sdk::wasip3::http_compat::RequestOptionsExtension;

use crate::config::{ALL_VARIABLES, ConfigProblem, ConfigProblems, Mode, VariableSource};
use crate::flows::notify::{self, NotifyOutcome};
use crate::flows::{
    Clock, HttpReply, MAX_REQUEST_BODY_BYTES, Nonce, Refusal, Request, Response, Store, StoreError,
    Transport, TransportError,
};

// ---- Store --------------------------------------------------------------------------------------

/// The KV store every component that keeps state uses (declare it in `key_value_stores`).
pub const STORE_LABEL: &str = "default";

/// Spin KV as [`Store`]. Opened on first use, so a failed open reaches the flow as a
/// [`StoreError`] and is answered the way the flow answers any store failure (503
/// `store_unavailable`, or FAIL to a notification) instead of a component-made error.
#[derive(Default)]
pub struct SpinStore {
    store: OnceCell<key_value::Store>,
}

impl SpinStore {
    /// A handle on [`STORE_LABEL`]; nothing is opened yet.
    pub fn new() -> Self {
        Self::default()
    }

    async fn open(&self) -> Result<&key_value::Store, StoreError> {
        if let Some(store) = self.store.get() {
            return Ok(store);
        }
        let opened = key_value::Store::open(STORE_LABEL)
            .await
            .map_err(|e| kv_error("open", &e))?;
        Ok(self.store.get_or_init(|| opened))
    }
}

/// The backend's error, which names the operation, never a key's value.
fn kv_error(op: &str, e: &key_value::Error) -> StoreError {
    StoreError(format!("{op}: {e:?}"))
}

impl Store for SpinStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let store = self.open().await?;
        store.get(key).await.map_err(|e| kv_error("get", &e))
    }

    async fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let store = self.open().await?;
        store.set(key, value).await.map_err(|e| kv_error("set", &e))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let store = self.open().await?;
        store.delete(key).await.map_err(|e| kv_error("delete", &e))
    }

    /// Spin KV lists every key (`get-keys` stream); the prefix is filtered here.
    async fn keys_with_prefix(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let store = self.open().await?;
        let mut keys = store
            .get_keys()
            .await
            .collect()
            .await
            .map_err(|e| kv_error("get_keys", &e))?;
        keys.retain(|k| k.starts_with(prefix));
        Ok(keys)
    }
}

// ---- Transport ----------------------------------------------------------------------------------

/// Connect timeout of every outbound request: WeChat's API hosts answer a TCP/TLS connect in
/// well under a second from mainland China; 2 s leaves room for a slow path, not a dead one.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time from the request sent to the first response byte. WeChat Pay documents 1–2 s typical;
/// 4 s keeps one attempt (2 + 4 s at worst) inside the mini program's patience, and the notify
/// route, which never calls out, is unaffected.
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(4);
/// Longest gap between two body chunks of a reply (the replies are a few hundred bytes).
pub const BETWEEN_BYTES_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest reply body read (WeChat's XML/JSON replies are tiny; the XML codec's own limit).
pub const MAX_REPLY_BODY_BYTES: usize = crate::v2::xml::MAX_XML_BYTES;

/// `spin_sdk::http::send` as [`Transport`], with [`CONNECT_TIMEOUT`], [`FIRST_BYTE_TIMEOUT`]
/// and [`BETWEEN_BYTES_TIMEOUT`]. The host enforces `allowed_outbound_hosts`.
///
/// Errors are fixed texts chosen from the WASI error code: never the URL (the login URL
/// carries the app secret), the body, or a host-supplied message (which may quote the URL).
#[derive(Debug, Clone, Copy, Default)]
pub struct SpinTransport;

impl SpinTransport {
    async fn send(
        &self,
        method: Method,
        url: &str,
        content_type: Option<&'static str>,
        body: Bytes,
    ) -> Result<HttpReply, TransportError> {
        let mut builder = spin_sdk::http::Request::<()>::builder()
            .method(method)
            .uri(url)
            .extension(RequestOptionsExtension(timeouts()));
        if let Some(content_type) = content_type {
            builder = builder.header("content-type", content_type);
        }
        let request = builder
            .body(Full::new(body))
            .map_err(|_| TransportError::Other("invalid request URL or header".into()))?;
        let response = spin_sdk::http::send(request)
            .await
            .map_err(|e| transport_error(&e))?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| transport_error(&e))?;
            if let Ok(data) = frame.into_data() {
                if bytes.len() + data.len() > MAX_REPLY_BODY_BYTES {
                    return Err(TransportError::Other(format!(
                        "reply body over {MAX_REPLY_BODY_BYTES} bytes"
                    )));
                }
                bytes.extend_from_slice(&data);
            }
        }
        Ok(HttpReply {
            status,
            body: bytes,
        })
    }
}

/// A fresh `request-options` with our timeouts. A host that refuses one (`not-supported`)
/// keeps its own default for it: the request is still worth sending.
fn timeouts() -> RequestOptions {
    let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let options = RequestOptions::new();
    let _ = options.set_connect_timeout(Some(nanos(CONNECT_TIMEOUT)));
    let _ = options.set_first_byte_timeout(Some(nanos(FIRST_BYTE_TIMEOUT)));
    let _ = options.set_between_bytes_timeout(Some(nanos(BETWEEN_BYTES_TIMEOUT)));
    options
}

/// Maps a WASI HTTP error code to a [`TransportError`] without any payload text.
fn transport_error(e: &ErrorCode) -> TransportError {
    use ErrorCode as E;
    let unreachable = |what: &str| TransportError::Unreachable(what.to_owned());
    match e {
        E::DnsTimeout
        | E::ConnectionTimeout
        | E::ConnectionReadTimeout
        | E::ConnectionWriteTimeout
        | E::HttpResponseTimeout => TransportError::Timeout,
        E::HttpRequestDenied | E::DestinationIpProhibited => TransportError::Denied,
        E::DnsError(_) => unreachable("DNS lookup failed"),
        E::DestinationNotFound => unreachable("destination not found"),
        E::DestinationUnavailable => unreachable("destination unavailable"),
        E::DestinationIpUnroutable => unreachable("destination IP unroutable"),
        E::ConnectionRefused => unreachable("connection refused"),
        E::ConnectionTerminated => unreachable("connection terminated"),
        E::ConnectionLimitReached => unreachable("connection limit reached"),
        E::TlsProtocolError => unreachable("TLS protocol error"),
        E::TlsCertificateError => unreachable("TLS certificate error"),
        E::TlsAlertReceived(_) => unreachable("TLS alert received"),
        E::HttpResponseIncomplete => TransportError::Other("reply incomplete".into()),
        E::HttpProtocolError => TransportError::Other("HTTP protocol error".into()),
        E::InternalError(_) => TransportError::Other("host internal error".into()),
        // The remaining codes are request/reply shape errors; their Debug form carries at most
        // numbers and coding names, but keep the text fixed anyway.
        _ => TransportError::Other("HTTP request or reply refused by the host".into()),
    }
}

impl Transport for SpinTransport {
    async fn post_xml(&self, url: &str, body: String) -> Result<HttpReply, TransportError> {
        let xml = Some("text/xml; charset=utf-8");
        self.send(Method::POST, url, xml, Bytes::from(body)).await
    }

    async fn get(&self, url: &str) -> Result<HttpReply, TransportError> {
        self.send(Method::GET, url, None, Bytes::new()).await
    }
}

// ---- Sleep (the simulator) ------------------------------------------------------------------------

/// `wasi:clocks/monotonic-clock.wait-for` as the simulator's [`crate::sim::Sleep`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SpinSleep;

impl crate::sim::Sleep for SpinSleep {
    async fn sleep(&self, duration: Duration) {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        spin_sdk::wasip3::clocks::monotonic_clock::wait_for(nanos).await;
    }
}

// The simulator's `timeout` fault must outlast the client's first-byte timeout.
const _: () = assert!(crate::sim::faults::TIMEOUT_DELAY.as_secs() > FIRST_BYTE_TIMEOUT.as_secs());

// ---- Variables ----------------------------------------------------------------------------------

/// Spin variables as a [`VariableSource`].
///
/// `spin_sdk::variables::get` is async and `VariableSource` is not, so every variable the core
/// knows ([`ALL_VARIABLES`]) is read up front; one the component does not declare reads as
/// unset (Spin answers `undefined`), which is how each config section sees only its own.
#[derive(Debug, Clone, Default)]
pub struct SpinVariables(HashMap<&'static str, String>);

impl VariableSource for SpinVariables {
    fn get(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}

impl SpinVariables {
    /// Reads every variable now. A variable the provider failed to produce is a problem naming
    /// it (not "unset", which could silently mean simulator mode for `wxpay_mode`).
    pub async fn read() -> Result<Self, ConfigProblems> {
        let mut values = HashMap::new();
        let mut problems = Vec::new();
        for &name in ALL_VARIABLES {
            match spin_sdk::variables::get(name).await {
                Ok(value) => {
                    values.insert(name, value);
                }
                Err(spin_sdk::variables::Error::Undefined(_)) => {}
                Err(e) => problems.push(ConfigProblem {
                    variable: name,
                    problem: format!("could not be read: {}", variable_error(&e)),
                }),
            }
        }
        if problems.is_empty() {
            Ok(Self(values))
        } else {
            Err(ConfigProblems(problems))
        }
    }
}

fn variable_error(e: &spin_sdk::variables::Error) -> &'static str {
    use spin_sdk::variables::Error as E;
    match e {
        E::InvalidName(_) => "invalid name",
        E::Undefined(_) => "undefined",
        E::Provider(_) => "the variables provider failed",
        E::Other(_) => "host error",
    }
}

/// This instance's variables. Read on the first request and cached for the instance's life
/// (Spin 4 reuses instances; variables do not change under a running instance). A failed read
/// is not cached: the next request tries again.
pub async fn variables() -> Result<&'static SpinVariables, ConfigProblems> {
    static CACHE: OnceLock<SpinVariables> = OnceLock::new();
    if let Some(vars) = CACHE.get() {
        return Ok(vars);
    }
    let vars = SpinVariables::read().await?;
    Ok(CACHE.get_or_init(|| vars))
}

// ---- Clock and nonce ----------------------------------------------------------------------------

/// The wall clock (`wasi:clocks/wall-clock`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// Randomness from the host (`wasi:random`) through `getrandom`.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsRandom;

impl Nonce for OsRandom {
    /// Panics (the instance traps, Spin answers 500) if the host has no randomness: a
    /// predictable nonce or order number must never be used instead.
    fn random16(&self) -> [u8; 16] {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).expect("the host provides no randomness (wasi:random)");
        bytes
    }
}

// ---- Requests -----------------------------------------------------------------------------------

/// The inbound request type of a `#[http_service]` handler.
pub type HttpRequest = spin_sdk::http::Request;
/// What [`serve`] answers.
pub type HttpResponse = spin_sdk::http::Response<Full<Bytes>>;

/// An inbound request, read: what the flows need ([`Request`]) plus the routing facts Spin
/// reports in its `spin-*` headers.
#[derive(Debug)]
pub struct Incoming {
    pub method: Method,
    pub request: Request,
    headers: HeaderMap,
}

impl Incoming {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The manifest route that matched (`spin-matched-route`, e.g. `/api/orders/:order_no`):
    /// for dispatch and logs (it carries no request data).
    pub fn route(&self) -> &str {
        self.header("spin-matched-route").unwrap_or("?")
    }

    /// The path below a wildcard route (`spin-path-info`; `/products/a1` for
    /// `/api/admin/products/a1` on route `/api/admin/...`).
    pub fn path_info(&self) -> &str {
        self.header("spin-path-info").unwrap_or("")
    }

    /// The query string of the request URL, without `?` (empty if none), from Spin's
    /// `spin-full-url` header. For the simulator's jscode2session only: never log it.
    pub fn query(&self) -> &str {
        let url = self.header("spin-full-url").unwrap_or("");
        let url = url.split('#').next().unwrap_or("");
        url.split_once('?').map_or("", |(_, q)| q)
    }

    /// A `:name` segment of the route (`spin-path-match-<name>`).
    pub fn path_param(&self, name: &str) -> Option<&str> {
        self.header(&format!("spin-path-match-{name}"))
    }

    /// [`Refusal::MethodNotAllowed`] for this request's method on its route.
    pub fn wrong_method(&self) -> Refusal {
        Refusal::MethodNotAllowed {
            method: self.method.to_string(),
            route: self.route().to_owned(),
        }
    }

    /// The JSON 405 `method_not_allowed` for this request's method on its route.
    pub fn method_not_allowed(&self) -> Response {
        self.wrong_method().response()
    }
}

/// What went wrong reading a request body, as a fixed text (no `Debug` of the host's error:
/// its formatting code for every WASI error code was ~5 KB of each component).
fn body_error(e: &ErrorCode) -> &'static str {
    use ErrorCode as E;
    match e {
        E::ConnectionTerminated => "connection terminated",
        E::ConnectionReadTimeout | E::HttpResponseTimeout => "timed out",
        E::HttpRequestBodySize(_) => "body size differs from its Content-Length",
        E::HttpProtocolError => "HTTP protocol error",
        E::InternalError(_) => "host internal error",
        _ => "the host reported an error",
    }
}

/// Reads a request: the body up to [`MAX_REQUEST_BODY_BYTES`] (a larger `Content-Length` is
/// refused before reading, a longer body as soon as it passes the limit:
/// [`Refusal::BodyTooLarge`] both), the `Authorization` header and the client address
/// (`spin-client-addr`, `ip:port`). The refusal's answer is the caller's (JSON, or the notify
/// route's FAIL XML).
///
/// The body of a GET or HEAD request, or one declared `Content-Length: 0`, is not read: no
/// route takes a GET body, and reading an empty body stream costs about as much as a
/// hello-world request (docs/PERFORMANCE.md, "probes").
pub async fn read_request(req: HttpRequest) -> Result<Incoming, Refusal> {
    let (parts, mut body) = req.into_parts();
    let declared = parts
        .headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_REQUEST_BODY_BYTES as u64) {
        return Err(Refusal::BodyTooLarge);
    }
    let bodiless =
        parts.method == Method::GET || parts.method == Method::HEAD || declared == Some(0);
    let mut bytes = Vec::new();
    if !bodiless {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| Refusal::UnreadableBody(body_error(&e).into()))?;
            if let Ok(data) = frame.into_data() {
                if bytes.len() + data.len() > MAX_REQUEST_BODY_BYTES {
                    return Err(Refusal::BodyTooLarge);
                }
                bytes.extend_from_slice(&data);
            }
        }
    }
    let text = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let request = Request {
        body: bytes,
        authorization: text("authorization"),
        client_addr: text("spin-client-addr"),
        content_type: text("content-type"),
    };
    Ok(Incoming {
        method: parts.method,
        request,
        headers: parts.headers,
    })
}

// ---- Responses ----------------------------------------------------------------------------------

/// A flow's [`Response`] as a spin-sdk response. `Cache-Control: no-store` on everything: the
/// answers carry session tokens, pay signatures and order state.
pub fn into_http(response: Response) -> HttpResponse {
    let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut builder = spin_sdk::http::Response::<()>::builder()
        .status(status)
        .header("cache-control", "no-store");
    if !response.body.is_empty() {
        builder = builder.header("content-type", response.content_type);
    }
    builder
        .body(Full::new(Bytes::from(response.body)))
        .unwrap_or_else(|_| {
            let mut fallback = spin_sdk::http::Response::new(Full::new(Bytes::new()));
            *fallback.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            fallback
        })
}

/// A handler's answer and, for the log, what happened (default: the error code, or `ok`) and
/// any extra fields of the request's log line (order number, transaction id, reason).
#[derive(Debug)]
pub struct Answer {
    pub response: Response,
    pub outcome: Option<String>,
    pub fields: serde_json::Map<String, serde_json::Value>,
}

impl From<Response> for Answer {
    fn from(response: Response) -> Self {
        Self {
            response,
            outcome: None,
            fields: serde_json::Map::new(),
        }
    }
}

impl From<(Response, NotifyOutcome)> for Answer {
    fn from((response, outcome): (Response, NotifyOutcome)) -> Self {
        let (outcome, fields) = describe_notify(&outcome);
        Self {
            response,
            outcome: Some(outcome),
            fields,
        }
    }
}

/// A notify outcome for the log: its kind, and as fields the order number, WeChat's
/// transaction id and the reason only (the flow's texts never carry a key, an openid or the
/// notification body).
pub fn describe_notify(
    outcome: &NotifyOutcome,
) -> (String, serde_json::Map<String, serde_json::Value>) {
    use serde_json::json;
    let (kind, fields) = match outcome {
        NotifyOutcome::Applied {
            order_no,
            transaction_id,
        } => (
            "applied",
            json!({"order_no": order_no, "transaction_id": transaction_id}),
        ),
        NotifyOutcome::Duplicate {
            order_no,
            transaction_id,
        } => (
            "duplicate",
            json!({"order_no": order_no, "transaction_id": transaction_id}),
        ),
        NotifyOutcome::Alerted {
            order_no,
            reason,
            recorded,
        } => (
            "alerted",
            json!({"order_no": order_no, "recorded": recorded, "reason": reason}),
        ),
        NotifyOutcome::Rejected { reason } => ("rejected", json!({"reason": reason})),
        NotifyOutcome::Failed { reason } => ("failed", json!({"reason": reason})),
    };
    let serde_json::Value::Object(fields) = fields else {
        unreachable!("json! of an object literal is an object")
    };
    (kind.to_owned(), fields)
}

/// The request's log line: one JSON object (DESIGN.md §6: never a secret, token, body or full
/// openid). `order_no` comes from the handler's fields, the route's `:order_no`, or a created
/// order in the answer.
fn log(
    component: &str,
    method: &Method,
    route: &str,
    path_order_no: Option<&str>,
    answer: &Answer,
    latency: Duration,
) {
    // Only an error answer carries an error code: a success body is not parsed for one.
    let outcome = answer
        .outcome
        .clone()
        .or_else(|| (answer.response.status >= 400).then(|| answer.response.error_code())?)
        .unwrap_or_else(|| "ok".to_owned());
    let mut line = serde_json::Map::new();
    line.insert("log".into(), "request".into());
    line.insert("component".into(), component.into());
    line.insert("method".into(), method.as_str().into());
    line.insert("route".into(), route.into());
    line.insert("status".into(), answer.response.status.into());
    line.insert("outcome".into(), outcome.into());
    let latency_ms = (latency.as_secs_f64() * 1000.0 * 10.0).round() / 10.0;
    line.insert("latency_ms".into(), latency_ms.into());
    let created = || {
        let body = answer.response.json_body()?;
        body.get("order")?
            .get("order_no")?
            .as_str()
            .map(str::to_owned)
    };
    if let Some(order_no) = path_order_no
        .map(str::to_owned)
        .or_else(|| (answer.response.status == 201).then(created).flatten())
    {
        line.insert("order_no".into(), order_no.into());
    }
    for (k, v) in &answer.fields {
        line.insert(k.clone(), v.clone());
    }
    println!("{}", serde_json::Value::Object(line));
}

/// Prints a core log line (the sink of [`crate::flows::log`]).
fn print_line(line: &str) {
    println!("{line}");
}

/// Once per instance, in simulator mode: a line nobody can miss in `spin up`'s output.
fn warn_if_simulated(component: &str, vars: &SpinVariables) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if Mode::load(vars) == Ok(Mode::Simulator) && !WARNED.swap(true, Ordering::Relaxed) {
        let line = serde_json::json!({
            "log": "warning",
            "component": component,
            "message": "wxpay_mode is \"simulator\": WeChat is simulated and NO REAL PAYMENT \
                        happens. Set wxpay_mode=live and the live credentials for production.",
        });
        eprintln!("{line}");
    }
}

/// Runs one request through a JSON route's handler: [`serve_with`] answering a refusal with
/// the core's JSON ([`Refusal::response`]).
pub async fn serve<A, H>(component: &str, req: HttpRequest, handler: H) -> HttpResponse
where
    A: Into<Answer>,
    H: AsyncFnOnce(&Incoming, &'static SpinVariables) -> A,
{
    serve_with(component, req, |r: Refusal| r.response(), handler).await
}

/// Runs one request through the notify route's handler: [`serve_with`] answering a refusal
/// (body too large, variables unreadable) with WeChat's FAIL XML ([`notify::refuse`]).
pub async fn serve_notify<A, H>(req: HttpRequest, handler: H) -> HttpResponse
where
    A: Into<Answer>,
    H: AsyncFnOnce(&Incoming, &'static SpinVariables) -> A,
{
    serve_with("notify", req, |r: Refusal| notify::refuse(&r), handler).await
}

/// Runs one request through a component's handler: reads it ([`read_request`]), loads the
/// [`variables`] (a failure is [`Refusal::Config`]), calls `handler`, logs one line
/// (JSON: `log`, `component`, `method`, `route`, `status`, `outcome`, `latency_ms`,
/// `order_no`...) and converts the answer. A
/// refusal is answered by `refuse`.
pub async fn serve_with<A, R, F, H>(
    component: &str,
    req: HttpRequest,
    refuse: F,
    handler: H,
) -> HttpResponse
where
    A: Into<Answer>,
    R: Into<Answer>,
    F: FnOnce(Refusal) -> R,
    H: AsyncFnOnce(&Incoming, &'static SpinVariables) -> A,
{
    let started = std::time::Instant::now();
    crate::flows::log::set_sink(print_line);
    let method = req.method().clone();
    let path_order_no = req
        .headers()
        .get("spin-path-match-order_no")
        .and_then(|v| v.to_str().ok())
        .map(|v| crate::v2::api::cut_to_bytes(v, 64).to_owned());
    let route = req
        .headers()
        .get("spin-matched-route")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?")
        .to_owned();
    let answer: Answer = match read_request(req).await {
        Err(refused) => refuse(refused).into(),
        Ok(incoming) => match variables().await {
            Err(problems) => refuse(Refusal::Config(problems)).into(),
            Ok(vars) => {
                warn_if_simulated(component, vars);
                handler(&incoming, vars).await.into()
            }
        },
    };
    log(
        component,
        &method,
        &route,
        path_order_no.as_deref(),
        &answer,
        started.elapsed(),
    );
    into_http(answer.response)
}
