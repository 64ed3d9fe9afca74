//! The Spin adapters (cargo feature `spin`, docs/ARCHITECTURE.md §3): the ports of [`crate::flows`] on
//! spin-sdk 6.0, plus the request/response plumbing every component shares, so that each
//! component stays a thin adapter (read the request, build the [`Env`], call one flow, answer).
//!
//! | port | here |
//! |---|---|
//! | [`Store`] | [`SpinStore`]: Spin KV, store `default`, opened once per instance (Spin 4 reuses instances) and again after a failed operation |
//! | [`Transport`] | [`wechat_transport`]: [`SpinTransport`] (`wasi:http` `client.send`, connect / first-byte timeouts) in live mode, the simulator in-process in simulator mode |
//! | [`VariableSource`] | [`SpinVariables`]: every variable read once per instance, cached |
//! | [`Clock`] | [`SystemClock`]: the wall clock |
//! | [`Nonce`] | [`OsRandom`]: `getrandom` (`wasi:random`) |
//!
//! [`serve`] wraps a component's handler: it reads the request (body limited to
//! [`MAX_REQUEST_BODY_BYTES`] while reading), hands over the variables, logs one line and
//! converts the answer. Nothing here prints or returns a URL, a request body, a secret, a token
//! or an openid.

use std::cell::{OnceCell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use spin_sdk::key_value;
use spin_sdk::wasip3::http::types::{
    Fields, Method, Request as WasiRequest, RequestOptions, Response as WasiResponse, Scheme,
    Trailers,
};
use spin_sdk::wasip3::wit_bindgen::{FutureReader, StreamReader, StreamResult};
use spin_sdk::wasip3::{wit_future, wit_stream};

use crate::config::{ALL_VARIABLES, ConfigProblem, ConfigProblems, Mode, VariableSource};
use crate::flows::log::{Field, Line};
use crate::flows::notify::{self, NotifyOutcome};
use crate::flows::{
    Clock, HttpReply, MAX_REQUEST_BODY_BYTES, Nonce, OutboundRequest, Refusal, Request, Response,
    Store, StoreError, Transport, TransportError,
};
pub use crate::sim::link::{AllApis, LoginApi, PaymentApis, SimApis};
use crate::sim::link::{Outbound, SimulatorLink};
use crate::v3::verify::SignatureHeaders;

// ---- Store --------------------------------------------------------------------------------------

/// The KV store every component that keeps state uses (declare it in `key_value_stores`).
pub const STORE_LABEL: &str = "default";

thread_local! {
    /// The store an earlier request of this instance opened. Opening costs a round trip to the
    /// backend (Spin 4.0.2 sends Redis a PING on every open), and Spin 4 reuses an instance for
    /// many requests, so a store is opened once per instance — and again after an operation on
    /// it failed, so an outage of the backend is not remembered past its end.
    static OPENED: RefCell<Option<Rc<key_value::Store>>> = const { RefCell::new(None) };
}

/// Spin KV as [`Store`]. Opened on first use (or taken from the instance's earlier requests),
/// so a failed open reaches the flow as a [`StoreError`] and is answered the way the flow
/// answers any store failure (503 `store_unavailable`, or FAIL to a notification) instead of a
/// component-made error.
#[derive(Default)]
pub struct SpinStore {
    store: OnceCell<Rc<key_value::Store>>,
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
        let store = match OPENED.with_borrow(Clone::clone) {
            Some(store) => store,
            None => {
                let opened = key_value::Store::open(STORE_LABEL)
                    .await
                    .map_err(|e| kv_error("open", &e))?;
                let opened = Rc::new(opened);
                OPENED.with_borrow_mut(|cached| *cached = Some(opened.clone()));
                opened
            }
        };
        Ok(self.store.get_or_init(|| store))
    }

    /// An operation's result; after a failure the next request opens the store again.
    fn checked<T>(op: &str, result: Result<T, key_value::Error>) -> Result<T, StoreError> {
        result.map_err(|e| {
            OPENED.with_borrow_mut(|cached| *cached = None);
            kv_error(op, &e)
        })
    }
}

/// The backend's error, which names the operation, never a key's value.
fn kv_error(op: &str, e: &key_value::Error) -> StoreError {
    StoreError(format!("{op}: {e:?}"))
}

impl Store for SpinStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let store = self.open().await?;
        Self::checked("get", store.get(key).await)
    }

    async fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let store = self.open().await?;
        Self::checked("set", store.set(key, value).await)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let store = self.open().await?;
        Self::checked("delete", store.delete(key).await)
    }

    /// Spin KV lists every key (`get-keys` stream); the prefix is filtered here.
    async fn keys_with_prefix(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let store = self.open().await?;
        let mut keys = Self::checked("get_keys", store.get_keys().await.collect().await)?;
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

/// `wasi:http` `client.send` as [`Transport`], with [`CONNECT_TIMEOUT`], [`FIRST_BYTE_TIMEOUT`]
/// and [`BETWEEN_BYTES_TIMEOUT`]. The host enforces `allowed_outbound_hosts`.
///
/// Errors are fixed texts chosen from the WASI error code: never the URL (the login URL
/// carries the app secret), the body, or a host-supplied message (which may quote the URL).
#[derive(Debug, Clone, Copy, Default)]
pub struct SpinTransport;

impl SpinTransport {
    async fn send_request(
        &self,
        method: Method,
        url: &str,
        content_type: Option<&str>,
        extra_headers: &[(&'static str, String)],
        body: Vec<u8>,
    ) -> Result<HttpReply, TransportError> {
        let invalid = || TransportError::Other("invalid request URL or header".into());
        let target = crate::config::request_target(url).ok_or_else(invalid)?;
        let scheme = if target.https {
            Scheme::Https
        } else {
            Scheme::Http
        };
        let mut fields = body_fields(content_type, &body);
        fields.extend(
            extra_headers
                .iter()
                .filter(|(name, _)| !name.eq_ignore_ascii_case("content-type"))
                .map(|(name, value)| (name.to_ascii_lowercase(), value.as_bytes().to_vec())),
        );
        let headers = Fields::from_list(&fields).map_err(|_| invalid())?;
        let (contents, trailers) = outgoing_body(body);
        let (request, _sent) = WasiRequest::new(headers, contents, trailers, Some(timeouts()));
        request.set_method(&method).map_err(|()| invalid())?;
        request.set_scheme(Some(&scheme)).map_err(|()| invalid())?;
        request
            .set_authority(Some(target.authority))
            .map_err(|()| invalid())?;
        request
            .set_path_with_query(Some(&target.path_and_query))
            .map_err(|()| invalid())?;
        let response = spin_sdk::wasip3::http::client::send(request)
            .await
            .map_err(|e| transport_error(&e))?;
        let status = response.get_status_code();
        let reply_headers = response
            .get_headers()
            .copy_all()
            .into_iter()
            .filter(|(name, _)| name.to_ascii_lowercase().starts_with("wechatpay-"))
            .filter_map(|(name, value)| {
                Some((name.to_ascii_lowercase(), String::from_utf8(value).ok()?))
            })
            .collect();
        let (result, result_reader) = wit_future::new(|| Ok(()));
        let (stream, trailers) = WasiResponse::consume_body(response, result_reader);
        let body = read_body(stream, trailers, MAX_REPLY_BODY_BYTES)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge => {
                    TransportError::Other(format!("reply body over {MAX_REPLY_BODY_BYTES} bytes"))
                }
                BodyError::Failed(e) => transport_error(&e),
            })?;
        drop(result);
        Ok(HttpReply {
            status,
            headers: reply_headers,
            body,
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
        self.send_request(Method::Post, url, xml, &[], body.into_bytes())
            .await
    }

    async fn get(&self, url: &str) -> Result<HttpReply, TransportError> {
        self.send_request(Method::Get, url, None, &[], Vec::new())
            .await
    }

    async fn send(&self, request: &OutboundRequest) -> Result<HttpReply, TransportError> {
        let method = match request.method {
            "GET" => Method::Get,
            "POST" => Method::Post,
            _ => return Err(TransportError::Other("unsupported method".into())),
        };
        let content_type = request.header("content-type");
        self.send_request(
            method,
            &request.url,
            content_type,
            &request.headers,
            request.body.clone(),
        )
        .await
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

/// A component's WeChat transport: [`SpinTransport`] in live mode; in simulator mode the
/// simulator's WeChat APIs (those of `A`) in-process over the same `store` (Spin 4.0.x has no
/// self requests for WASIp3 components), with the network's [`FIRST_BYTE_TIMEOUT`].
pub type WeChatTransport<'a, A = AllApis> =
    Outbound<SpinTransport, SimulatorLink<&'a SpinStore, SystemClock, OsRandom, SpinSleep, A>>;

/// The [`WeChatTransport`] for `mode`, reaching every simulated WeChat API.
pub fn wechat_transport(mode: Mode, store: &SpinStore) -> WeChatTransport<'_> {
    wechat_transport_to(mode, store)
}

/// The [`WeChatTransport`] for `mode` reaching only the simulated APIs of `A` (the login
/// component: [`LoginApi`]).
pub fn wechat_transport_to<A: SimApis>(mode: Mode, store: &SpinStore) -> WeChatTransport<'_, A> {
    Outbound::for_mode(
        mode,
        || SpinTransport,
        || SimulatorLink::new(store, SystemClock, OsRandom, SpinSleep, FIRST_BYTE_TIMEOUT),
    )
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
pub struct SpinVariables(BTreeMap<&'static str, String>);

impl VariableSource for SpinVariables {
    fn get(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}

impl SpinVariables {
    /// Reads every variable now. A variable the provider failed to produce is a problem naming
    /// it (not "unset", which could silently mean simulator mode for `wxpay_mode`).
    pub async fn read() -> Result<Self, ConfigProblems> {
        let mut values = BTreeMap::new();
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

/// The inbound request of a component's handler: the raw `wasi:http` request. The adapter reads
/// it directly (no `http`-crate conversion of every header and the URI: it needs a few headers
/// and the body; docs/PERFORMANCE.md).
pub type HttpRequest = WasiRequest;
/// What [`serve`] answers.
pub type HttpResponse = WasiResponse;
pub use spin_sdk::wasip3::http::types::ErrorCode;

/// Exports `async fn $handler(HttpRequest) -> Result<HttpResponse, ErrorCode>` as the
/// component's `wasi:http` handler (what spin-sdk's `#[http_service]` does, minus its
/// `http`-crate conversions).
#[macro_export]
macro_rules! export_http_handler {
    ($handler:ident) => {
        mod __wxpay_http_export {
            struct Handler;
            ::spin_sdk::wasip3::http::service::export!(Handler);
            impl ::spin_sdk::wasip3::exports::http::handler::Guest for Handler {
                async fn handle(
                    request: $crate::spin::HttpRequest,
                ) -> ::core::result::Result<$crate::spin::HttpResponse, $crate::spin::ErrorCode>
                {
                    super::$handler(request).await
                }
            }
        }
    };
}

/// An inbound request, read: what the flows need ([`Request`]) plus the routing facts Spin
/// reports in its `spin-*` headers.
#[derive(Debug)]
pub struct Incoming {
    /// The method's name (`GET`, `POST`, ...).
    pub method: String,
    pub request: Request,
    headers: Vec<(String, Vec<u8>)>,
}

/// The value of the first field named `name` (case-insensitive), if it is UTF-8.
fn field<'a>(fields: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
}

impl Incoming {
    fn header(&self, name: &str) -> Option<&str> {
        field(&self.headers, name)
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
    /// `spin-full-url` header (the simulator's jscode2session, the admin order listing); never
    /// log it.
    pub fn query(&self) -> &str {
        let url = self.header("spin-full-url").unwrap_or("");
        let url = url.split('#').next().unwrap_or("");
        url.split_once('?').map_or("", |(_, q)| q)
    }

    /// A `:name` segment of the route ([`path_match_header`]).
    pub fn path_param(&self, name: &str) -> Option<&str> {
        self.header(&path_match_header(name))
    }

    /// [`Refusal::MethodNotAllowed`] for this request's method on its route.
    pub fn wrong_method(&self) -> Refusal {
        Refusal::MethodNotAllowed {
            method: self.method.clone(),
            route: self.route().to_owned(),
        }
    }

    /// The JSON 405 `method_not_allowed` for this request's method on its route.
    pub fn method_not_allowed(&self) -> Response {
        self.wrong_method().response()
    }
}

/// The header in which Spin 4.0.2 passes a route's `:name` segment: `spin-path-match-` and the
/// name lowercased with `_` turned into `-` (`:order_no` → `spin-path-match-order-no`; Spin's
/// `crates/trigger-http/src/headers.rs`, `prepare_header_key`).
pub fn path_match_header(name: &str) -> String {
    format!(
        "spin-path-match-{}",
        name.to_ascii_lowercase().replace('_', "-")
    )
}

/// The name of a `wasi:http` method, as HTTP spells it.
fn method_name(method: Method) -> String {
    match method {
        Method::Get => "GET".into(),
        Method::Head => "HEAD".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Delete => "DELETE".into(),
        Method::Connect => "CONNECT".into(),
        Method::Options => "OPTIONS".into(),
        Method::Trace => "TRACE".into(),
        Method::Patch => "PATCH".into(),
        Method::Other(other) => other,
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

/// Why a body (inbound request or outbound reply) could not be read.
enum BodyError {
    /// Longer than the reader's limit (reading stopped there).
    TooLarge,
    /// The host reported an error (the trailers future resolved to it).
    Failed(ErrorCode),
}

/// The future of a body's trailers (or the error that ended the transfer).
type TrailersReader = FutureReader<Result<Option<Trailers>, ErrorCode>>;

/// Bytes asked of the host per read: WeChat's messages and our requests are a few KB.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// Reads a body stream to its end, at most `limit` bytes, then its trailers future (where the
/// host reports a failed transfer).
async fn read_body(
    mut stream: StreamReader<u8>,
    trailers: TrailersReader,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    let mut bytes = Vec::new();
    loop {
        // Room for at most one byte past the limit: enough to tell that it was passed.
        let room = (limit + 1 - bytes.len()).min(READ_CHUNK_BYTES);
        bytes.reserve_exact(room);
        let (result, filled) = stream.read(bytes).await;
        bytes = filled;
        if bytes.len() > limit {
            return Err(BodyError::TooLarge);
        }
        match result {
            StreamResult::Complete(_) => {}
            StreamResult::Dropped | StreamResult::Cancelled => break,
        }
    }
    drop(stream);
    match trailers.await {
        Ok(_) => Ok(bytes),
        Err(e) => Err(BodyError::Failed(e)),
    }
}

/// The headers describing a body to send: `content-type` (if given) and `content-length`, so
/// the host sends it with a fixed length rather than chunked; none for an empty body.
fn body_fields(content_type: Option<&str>, body: &[u8]) -> Vec<(String, Vec<u8>)> {
    if body.is_empty() {
        return Vec::new();
    }
    let mut fields = Vec::with_capacity(2);
    if let Some(content_type) = content_type {
        fields.push(("content-type".to_owned(), content_type.as_bytes().to_vec()));
    }
    fields.push((
        "content-length".to_owned(),
        body.len().to_string().into_bytes(),
    ));
    fields
}

/// A body to send: its stream (none when empty: a zero-length body) and trailers future,
/// written by a spawned task as the host reads them.
fn outgoing_body(body: Vec<u8>) -> (Option<StreamReader<u8>>, TrailersReader) {
    let (trailers_writer, trailers) = wit_future::new(|| Ok(None));
    let (writer, reader) = if body.is_empty() {
        (None, None)
    } else {
        let (writer, reader) = wit_stream::new();
        (Some(writer), Some(reader))
    };
    spin_sdk::wit_bindgen::spawn(async move {
        if let Some(mut writer) = writer {
            // What the reader did not take (it went away) is dropped with it; dropping the
            // writer ends the stream before the trailers are sent.
            let _ = writer.write_all(body).await;
        }
        let _ = trailers_writer.write(Ok(None)).await;
    });
    (reader, trailers)
}

/// Reads a request whose method and headers [`serve_with`] has read: the body up to
/// [`MAX_REQUEST_BODY_BYTES`] (a larger `Content-Length` is refused before reading, a longer
/// body as soon as it passes the limit: [`Refusal::BodyTooLarge`] both), the `Authorization`
/// header and the client address (`spin-client-addr`, `ip:port`). The refusal's answer is the
/// caller's (JSON, or the notify route's FAIL XML).
///
/// The body of a GET or HEAD request, or one declared `Content-Length: 0`, is not read: no
/// route takes a GET body, and reading an empty body stream costs about as much as a
/// hello-world request (docs/PERFORMANCE.md, "probes").
async fn read_request(
    req: HttpRequest,
    method: String,
    headers: Vec<(String, Vec<u8>)>,
) -> Result<Incoming, Refusal> {
    let declared = field(&headers, "content-length").and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_REQUEST_BODY_BYTES as u64) {
        return Err(Refusal::BodyTooLarge);
    }
    let bodiless = method == "GET" || method == "HEAD" || declared == Some(0);
    let body = if bodiless {
        Vec::new()
    } else {
        // Dropping `result` after the read tells the host the body was taken fine.
        let (result, result_reader) = wit_future::new(|| Ok(()));
        let (stream, trailers) = WasiRequest::consume_body(req, result_reader);
        let body = read_body(stream, trailers, MAX_REQUEST_BODY_BYTES)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge => Refusal::BodyTooLarge,
                BodyError::Failed(e) => Refusal::UnreadableBody(body_error(&e).into()),
            })?;
        drop(result);
        body
    };
    let text = |name: &str| field(&headers, name).map(str::to_owned);
    let request = Request {
        body,
        authorization: text("authorization"),
        client_addr: text("spin-client-addr"),
        content_type: text("content-type"),
        wechatpay: crate::v3::verify::SignatureHeaders::from_lookup(|name| field(&headers, name)),
        origin: text("origin"),
        sec_fetch_site: text("sec-fetch-site"),
        host: text("host"),
    };
    Ok(Incoming {
        method,
        request,
        headers,
    })
}

// ---- Responses ----------------------------------------------------------------------------------

/// The header every response carries in simulator mode, so that no client, proxy or log
/// mistakes a simulated payment for a real one.
pub const MODE_HEADER: &str = "x-wxpay-mode";

/// A flow's [`Response`] as a `wasi:http` response. `Cache-Control: no-store` on everything:
/// the answers carry session tokens, pay signatures and order state. In simulator mode
/// ([`MODE_HEADER`]: `simulator`).
pub fn into_http(response: Response, simulator: bool) -> Result<HttpResponse, ErrorCode> {
    let refused = |what: &str| ErrorCode::InternalError(Some(format!("response {what} refused")));
    let mut fields = vec![("cache-control".to_owned(), b"no-store".to_vec())];
    if simulator {
        fields.push((MODE_HEADER.to_owned(), b"simulator".to_vec()));
    }
    fields.extend(body_fields(Some(response.content_type), &response.body));
    fields.extend(
        response
            .headers
            .iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), value.as_bytes().to_vec())),
    );
    let headers = Fields::from_list(&fields).map_err(|_| refused("headers"))?;
    let (contents, trailers) = outgoing_body(response.body);
    let (http_response, _sent) = WasiResponse::new(headers, contents, trailers);
    http_response
        .set_status_code(response.status)
        .map_err(|()| refused("status"))?;
    Ok(http_response)
}

/// A handler's answer and, for the log, what happened (default: the error code, or `ok`) and
/// any extra fields of the request's log line (order number, transaction id, reason).
#[derive(Debug)]
pub struct Answer {
    pub response: Response,
    pub outcome: Option<String>,
    pub fields: Vec<(&'static str, Field)>,
}

impl From<Response> for Answer {
    fn from(response: Response) -> Self {
        Self {
            response,
            outcome: None,
            fields: Vec::new(),
        }
    }
}

impl From<(Response, NotifyOutcome)> for Answer {
    fn from((response, outcome): (Response, NotifyOutcome)) -> Self {
        let (outcome, fields) = describe_notify(&outcome);
        Self {
            response,
            outcome: Some(outcome.to_owned()),
            fields,
        }
    }
}

/// A notify outcome for the log: its kind, and as fields the order number, WeChat's
/// transaction id and the reason only (the flow's texts never carry a key, an openid or the
/// notification body).
pub fn describe_notify(outcome: &NotifyOutcome) -> (&'static str, Vec<(&'static str, Field)>) {
    let text = |value: &str| Field::Text(value.to_owned());
    match outcome {
        NotifyOutcome::Applied {
            order_no,
            transaction_id,
        } => (
            "applied",
            vec![
                ("order_no", text(order_no)),
                ("transaction_id", text(transaction_id)),
            ],
        ),
        NotifyOutcome::Duplicate {
            order_no,
            transaction_id,
        } => (
            "duplicate",
            vec![
                ("order_no", text(order_no)),
                ("transaction_id", text(transaction_id)),
            ],
        ),
        NotifyOutcome::Alerted {
            order_no,
            reason,
            recorded,
        } => (
            "alerted",
            vec![
                ("order_no", text(order_no)),
                ("recorded", Field::Flag(*recorded)),
                ("reason", text(reason)),
            ],
        ),
        NotifyOutcome::Rejected { reason } => ("rejected", vec![("reason", text(reason))]),
        NotifyOutcome::Failed { reason } => ("failed", vec![("reason", text(reason))]),
    }
}

/// The request's log line: one JSON object (docs/ARCHITECTURE.md §6: never a secret, token, body or full
/// openid). `order_no` comes from the handler's fields, the route's `:order_no`, or a created
/// order in the answer.
fn log(
    component: &str,
    method: &str,
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
    let mut line = Line::new("request")
        .text("component", component)
        .text("method", method)
        .text("route", route)
        .number("status", answer.response.status.into())
        .text("outcome", &outcome)
        .millis("latency_ms", latency);
    let created = || {
        let body = answer.response.json_body()?;
        body.get("order")?
            .get("order_no")?
            .as_str()
            .map(str::to_owned)
    };
    let order_no_field = answer.fields.iter().any(|(key, _)| *key == "order_no");
    if !order_no_field
        && let Some(order_no) = path_order_no
            .map(str::to_owned)
            .or_else(|| (answer.response.status == 201).then(created).flatten())
    {
        line = line.text("order_no", &order_no);
    }
    for (key, value) in &answer.fields {
        line = line.field(key, value);
    }
    println!("{}", line.finish());
}

/// Prints a core log line (the sink of [`crate::flows::log`]).
fn print_line(line: &str) {
    println!("{line}");
}

/// Once per instance, in simulator mode: a line nobody can miss in `spin up`'s output.
fn warn_if_simulated(component: &str, vars: &SpinVariables) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if Mode::load(vars) == Ok(Mode::Simulator) && !WARNED.swap(true, Ordering::Relaxed) {
        let line = Line::new("warning").text("component", component).text(
            "message",
            "wxpay_mode is \"simulator\": WeChat is simulated and NO REAL PAYMENT happens. \
                 Set wxpay_mode=live and the live credentials for production.",
        );
        eprintln!("{}", line.finish());
    }
}

/// Runs one request through a JSON route's handler: [`serve_with`] answering a refusal with
/// the core's JSON ([`Refusal::response`]).
pub async fn serve<A, H>(
    component: &str,
    req: HttpRequest,
    handler: H,
) -> Result<HttpResponse, ErrorCode>
where
    A: Into<Answer>,
    H: AsyncFnOnce(&Incoming, &'static SpinVariables) -> A,
{
    serve_with(component, req, |r: Refusal, _| r.response(), handler).await
}

/// Runs one request through the notify route's handler: [`serve_with`] answering a refusal
/// (body too large, variables unreadable) with WeChat's failure answer in the notification's
/// dialect ([`notify::refuse`]: APIv2's FAIL XML, APIv3's 4xx/5xx).
pub async fn serve_notify<A, H>(req: HttpRequest, handler: H) -> Result<HttpResponse, ErrorCode>
where
    A: Into<Answer>,
    H: AsyncFnOnce(&Incoming, &'static SpinVariables) -> A,
{
    let refuse = |r: Refusal, wechatpay: Option<&SignatureHeaders>| {
        notify::refuse(&r, notify::Dialect::of(wechatpay))
    };
    serve_with("notify", req, refuse, handler).await
}

/// Runs one request through a component's handler: reads it ([`read_request`]), loads the
/// [`variables`] (a failure is [`Refusal::Config`]), calls `handler`, logs one line
/// (JSON: `log`, `component`, `method`, `route`, `status`, `outcome`, `latency_ms`,
/// `order_no`...) and converts the answer. A
/// refusal is answered by `refuse` (given the request's `Wechatpay-*` headers, if any).
pub async fn serve_with<A, R, F, H>(
    component: &str,
    req: HttpRequest,
    refuse: F,
    handler: H,
) -> Result<HttpResponse, ErrorCode>
where
    A: Into<Answer>,
    R: Into<Answer>,
    F: FnOnce(Refusal, Option<&SignatureHeaders>) -> R,
    H: AsyncFnOnce(&Incoming, &'static SpinVariables) -> A,
{
    let started = std::time::Instant::now();
    crate::flows::log::set_sink(print_line);
    let method = method_name(req.get_method());
    let headers = req.get_headers().copy_all();
    let path_order_no = field(&headers, &path_match_header("order_no"))
        .map(|v| crate::v2::api::cut_to_bytes(v, 64).to_owned());
    let route = field(&headers, "spin-matched-route")
        .unwrap_or("?")
        .to_owned();
    // A refusal before the request is read still answers in the caller's dialect.
    let wechatpay = SignatureHeaders::from_lookup(|name| field(&headers, name));
    let mut simulator = false;
    let answer: Answer = match read_request(req, method.clone(), headers).await {
        Err(refused) => refuse(refused, wechatpay.as_ref()).into(),
        Ok(incoming) => match variables().await {
            Err(problems) => refuse(Refusal::Config(problems), wechatpay.as_ref()).into(),
            Ok(vars) => {
                simulator = Mode::load(vars) == Ok(Mode::Simulator);
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
    into_http(answer.response, simulator)
}
