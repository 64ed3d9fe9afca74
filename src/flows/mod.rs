//! The request flows (docs/ARCHITECTURE.md §1, §4, §6): everything that decides anything about a route,
//! written against small ports ([`Store`], [`Transport`], [`Clock`], [`Nonce`]) so the same code
//! runs in a Spin component and in native tests with fakes.
//!
//! A component reads the request into a [`Request`], builds an [`Env`] (ports + its loaded
//! configuration section), calls ONE entry point and writes the [`Response`] back:
//!
//! | route | entry point | config |
//! |---|---|---|
//! | `POST /api/login` | [`login::login`] | [`LoginFlowConfig`] |
//! | `POST /api/orders` | [`orders::create`] | [`ShopConfig`] |
//! | `GET /api/orders/{order_no}` | [`orders::get`] | [`ShopConfig`] |
//! | `POST /api/orders/{order_no}/pay-params` | [`pay_sign::pay_params`] | [`ShopConfig`] |
//! | `POST /api/wxpay/notify` | [`notify::notify`] | [`MerchantConfig`] |
//! | `/api/admin/...` | [`admin::handle`] (or one function per route) | [`AdminFlowConfig`] |
//!
//! Refunds ([`refunds::create`], [`refunds::notify`]) are flows without a route yet: the
//! simulator's refunds and the client certificate for APIv2 come first (issue 14).
//! | `GET /api/health` | [`health::health`] | the variable source itself |
//!
//! Nothing a flow returns (response body, error message, outcome) contains a secret, a session
//! token, a URL it called or a body it sent.

use std::fmt;

use serde::Serialize;

use crate::config::{
    AdminConfig, ConfigProblems, LoginConfig, MerchantConfig, Mode, SessionConfig, Signing,
    VariableSource,
};
use crate::ledger::{self, Facts, PaidFact};
use crate::order::{Order, Product, Status, order_key, product_key};
use crate::session::{self, Session, SessionError};

pub mod admin;
pub mod demo;
pub mod health;
pub mod log;
pub mod login;
pub mod notify;
pub mod orders;
pub mod pay_sign;
pub mod refunds;
mod wechat;

#[cfg(test)]
pub(crate) mod fakes;
#[cfg(test)]
mod tests;

// ---- Ports --------------------------------------------------------------------------------------

/// A key-value store failure. The text describes the backend's problem (never a value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key-value store: {0}")]
pub struct StoreError(pub String);

/// The key-value store (Spin KV: get / set / delete / get_keys; no transactions, no
/// compare-and-swap — docs/ARCHITECTURE.md §4).
#[allow(async_fn_in_trait)]
pub trait Store {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    async fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    async fn keys_with_prefix(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
}

/// An HTTP reply as the transport received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpReply {
    pub status: u16,
    /// Header names lowercased; APIv3 replies are verified by their `wechatpay-*` headers.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpReply {
    /// A reply without headers (APIv2 and the login API read only the body).
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// A header's value (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `Wechatpay-*` signature headers, when the reply carries a signature.
    pub fn wechatpay_signature(&self) -> Option<crate::v3::verify::SignatureHeaders> {
        crate::v3::verify::SignatureHeaders::from_lookup(|name| self.header(name))
    }
}

/// An outbound request with its own headers: APIv3 calls (JSON with the merchant's
/// `Authorization`) and the simulator's APIv3 notifications (JSON with `Wechatpay-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundRequest {
    pub method: &'static str,
    pub url: String,
    /// Header names as sent; `Content-Type` among them when there is a body.
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl OutboundRequest {
    /// A header's value (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why an outbound request got no reply. Implementations must never put a URL or a request
/// body in the text (the login URL carries the app secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error("timed out")]
    Timeout,
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The host refused the request (not in `allowed_outbound_hosts`).
    #[error("outbound request denied by the host")]
    Denied,
    #[error("transport error: {0}")]
    Other(String),
}

/// Outbound HTTP.
#[allow(async_fn_in_trait)]
pub trait Transport {
    /// `POST url` with `Content-Type: text/xml` and `body`.
    async fn post_xml(&self, url: &str, body: String) -> Result<HttpReply, TransportError>;
    /// `GET url`.
    async fn get(&self, url: &str) -> Result<HttpReply, TransportError>;
    /// Any request with its headers (APIv3).
    async fn send(&self, request: &OutboundRequest) -> Result<HttpReply, TransportError>;
}

/// The time (the core itself never reads a clock).
pub trait Clock {
    /// Unix seconds.
    fn now_unix(&self) -> u64;
}

/// Randomness (nonces, order numbers).
pub trait Nonce {
    /// 16 fresh random bytes.
    fn random16(&self) -> [u8; 16];
}

impl<S: Store + ?Sized> Store for &S {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).get(key).await
    }
    async fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        (**self).set(key, value).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        (**self).delete(key).await
    }
    async fn keys_with_prefix(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        (**self).keys_with_prefix(prefix).await
    }
}

impl<T: Transport + ?Sized> Transport for &T {
    async fn post_xml(&self, url: &str, body: String) -> Result<HttpReply, TransportError> {
        (**self).post_xml(url, body).await
    }
    async fn get(&self, url: &str) -> Result<HttpReply, TransportError> {
        (**self).get(url).await
    }
    async fn send(&self, request: &OutboundRequest) -> Result<HttpReply, TransportError> {
        (**self).send(request).await
    }
}

impl<C: Clock + ?Sized> Clock for &C {
    fn now_unix(&self) -> u64 {
        (**self).now_unix()
    }
}

impl<N: Nonce + ?Sized> Nonce for &N {
    fn random16(&self) -> [u8; 16] {
        (**self).random16()
    }
}

/// Everything a flow needs, constructed once per request by a component. Ports a flow does not
/// use are unconstrained: the pay-sign component, which may reach nothing, can pass `()` as its
/// transport, and the login component `()` as its store.
#[derive(Debug, Clone)]
pub struct Env<S, T, C, N, K> {
    pub store: S,
    pub transport: T,
    pub clock: C,
    pub nonce: N,
    pub config: K,
}

impl<S, T, C, N, K> Env<S, T, C, N, K> {
    pub fn new(store: S, transport: T, clock: C, nonce: N, config: K) -> Self {
        Self {
            store,
            transport,
            clock,
            nonce,
            config,
        }
    }
}

// ---- Configuration sections per component ---------------------------------------------------------

fn merge<A, B>(
    a: Result<A, ConfigProblems>,
    b: Result<B, ConfigProblems>,
) -> Result<(A, B), ConfigProblems> {
    match (a, b) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        (a, b) => {
            let mut all = Vec::new();
            for p in [a.err(), b.err()].into_iter().flatten().flat_map(|p| p.0) {
                if !all.contains(&p) {
                    all.push(p);
                }
            }
            Err(ConfigProblems(all))
        }
    }
}

/// The `order` and `pay-sign` components: the merchant and the session secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShopConfig {
    pub merchant: MerchantConfig,
    pub session: SessionConfig,
}

impl ShopConfig {
    /// For the `order` component, which signs APIv3 requests.
    pub fn load<V: VariableSource + ?Sized>(source: &V) -> Result<Self, ConfigProblems> {
        Self::load_for(source, Signing::Signs)
    }

    /// For a component that `signing` says signs or not (`pay-sign` does not).
    pub fn load_for<V: VariableSource + ?Sized>(
        source: &V,
        signing: Signing,
    ) -> Result<Self, ConfigProblems> {
        merge(
            MerchantConfig::load_for(source, signing),
            SessionConfig::load(source),
        )
        .map(|(merchant, session)| Self { merchant, session })
    }
}

/// The `login` component: the mini program credentials and the session secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginFlowConfig {
    pub login: LoginConfig,
    pub session: SessionConfig,
}

impl LoginFlowConfig {
    pub fn load<V: VariableSource + ?Sized>(source: &V) -> Result<Self, ConfigProblems> {
        merge(LoginConfig::load(source), SessionConfig::load(source))
            .map(|(login, session)| Self { login, session })
    }
}

/// The `admin` component: the merchant (reconcile talks to WeChat Pay) and the admin token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminFlowConfig {
    pub merchant: MerchantConfig,
    pub admin: AdminConfig,
}

impl AdminFlowConfig {
    pub fn load<V: VariableSource + ?Sized>(source: &V) -> Result<Self, ConfigProblems> {
        merge(MerchantConfig::load(source), AdminConfig::load(source))
            .map(|(merchant, admin)| Self { merchant, admin })
    }
}

// ---- Request / response model ---------------------------------------------------------------------

/// Largest request body any route accepts (checked before parsing).
pub const MAX_REQUEST_BODY_BYTES: usize = 64 * 1024;

/// `Content-Type` of JSON responses.
pub const JSON: &str = "application/json";

/// What a route needs from an HTTP request (the method and path were matched by routing; path
/// parameters are passed to the entry points separately).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    pub body: Vec<u8>,
    /// The `Authorization` header value, as received.
    pub authorization: Option<String>,
    /// The client address Spin reports (`spin-client-addr`, `ip:port`), for `spbill_create_ip`.
    pub client_addr: Option<String>,
    /// The `Content-Type` header value, as received (JSON routes refuse a non-JSON one: 415).
    pub content_type: Option<String>,
    /// The `Wechatpay-*` headers of an APIv3 notification (present when `Wechatpay-Signature`
    /// is).
    pub wechatpay: Option<crate::v3::verify::SignatureHeaders>,
    /// Where a browser says the request comes from (`Origin`, `Sec-Fetch-Site`) and the `Host`
    /// it was sent to: the admin routes refuse a browser's cross-origin request.
    pub origin: Option<String>,
    pub sec_fetch_site: Option<String>,
    pub host: Option<String>,
}

impl Request {
    pub fn new(body: impl Into<Vec<u8>>) -> Self {
        Self {
            body: body.into(),
            ..Self::default()
        }
    }

    pub fn with_authorization(mut self, value: impl Into<String>) -> Self {
        self.authorization = Some(value.into());
        self
    }

    /// Shorthand for `Authorization: Bearer <token>`.
    pub fn with_bearer(self, token: &str) -> Self {
        self.with_authorization(format!("Bearer {token}"))
    }

    pub fn with_client_addr(mut self, addr: impl Into<String>) -> Self {
        self.client_addr = Some(addr.into());
        self
    }

    pub fn with_content_type(mut self, value: impl Into<String>) -> Self {
        self.content_type = Some(value.into());
        self
    }
}

/// What a component writes back.
#[derive(Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    /// Headers besides `Content-Type` (the simulator's APIv3 replies carry `Wechatpay-*`).
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("content_type", &self.content_type)
            .field("headers", &self.headers)
            .field("body", &String::from_utf8_lossy(&self.body))
            .finish()
    }
}

impl Response {
    /// A JSON body.
    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Response {
        match serde_json::to_vec(value) {
            Ok(body) => Response {
                status,
                content_type: JSON,
                headers: Vec::new(),
                body,
            },
            Err(e) => Response::error(500, "internal", format!("cannot encode the answer: {e}")),
        }
    }

    /// `{"error": {"code", "message"}}` (docs/ARCHITECTURE.md §6). Written from typed structs, not a
    /// `serde_json::Value`: that keeps Value's serializer out of the components.
    pub fn error(status: u16, code: &str, message: impl Into<String>) -> Response {
        #[derive(Serialize)]
        struct Body<'a> {
            error: Detail<'a>,
        }
        #[derive(Serialize)]
        struct Detail<'a> {
            code: &'a str,
            message: String,
        }
        let body = Body {
            error: Detail {
                code,
                message: message.into(),
            },
        };
        Response {
            status,
            content_type: JSON,
            headers: Vec::new(),
            body: serde_json::to_vec(&body).unwrap_or_default(),
        }
    }

    /// 204, no body.
    pub fn no_content() -> Response {
        Response {
            status: 204,
            content_type: JSON,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// An XML body (the notify route's replies), always HTTP 200: WeChat reads the verdict
    /// from the body.
    pub fn xml(body: impl Into<String>) -> Response {
        Response {
            status: 200,
            content_type: crate::v2::notify::REPLY_CONTENT_TYPE,
            headers: Vec::new(),
            body: body.into().into_bytes(),
        }
    }

    /// 503 `config_error` listing every problem (problem texts never contain secret values).
    /// For a component whose configuration section failed to load.
    pub fn config_error(problems: &ConfigProblems) -> Response {
        Refusal::Config(problems.clone()).response()
    }

    /// The `error.code` of an error response (tests, logs).
    pub fn error_code(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        v.get("error")?.get("code")?.as_str().map(str::to_owned)
    }

    /// The body as JSON (tests, logs).
    pub fn json_body(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// An error answer being built; becomes a [`Response`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl From<ApiError> for Response {
    fn from(e: ApiError) -> Response {
        Response::error(e.status, e.code, e.message)
    }
}

/// Runs a flow body that answers `Ok(response)` or an error answer.
fn answer(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(Response::from)
}

// ---- Shared steps -------------------------------------------------------------------------------

/// Refuses a body over [`MAX_REQUEST_BODY_BYTES`] (413 `body_too_large`).
pub fn check_body_size(body: &[u8]) -> Result<(), ApiError> {
    if body.len() > MAX_REQUEST_BODY_BYTES {
        return Err(Refusal::BodyTooLarge.into());
    }
    Ok(())
}

/// Why a request was refused before any flow ran: what an adapter finds while reading the
/// request and loading its configuration. The answers live here (one home for each):
/// [`Refusal::response`] for the JSON routes, [`notify::refuse`] for the notify route, which
/// must answer WeChat's FAIL XML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The body is (or declares itself) over [`MAX_REQUEST_BODY_BYTES`]: 413 `body_too_large`.
    BodyTooLarge,
    /// The body could not be read (the text names the transport's problem, never data): 400
    /// `unreadable_body`.
    UnreadableBody(String),
    /// The route does not take this method: 405 `method_not_allowed`.
    MethodNotAllowed { method: String, route: String },
    /// The component's configuration section did not load: 503 `config_error` listing every
    /// problem (the deployment must be fixed; nothing was done, so the client may retry then).
    Config(ConfigProblems),
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> ApiError {
        match r {
            Refusal::BodyTooLarge => ApiError::new(
                413,
                "body_too_large",
                format!("request body is over the {MAX_REQUEST_BODY_BYTES}-byte limit"),
            ),
            Refusal::UnreadableBody(why) => ApiError::new(
                400,
                "unreadable_body",
                format!("request body could not be read: {why}"),
            ),
            Refusal::MethodNotAllowed { method, route } => ApiError::new(
                405,
                "method_not_allowed",
                // At most 64 bytes of the client's method (as of any input echoed).
                format!(
                    "{} is not allowed on {route}",
                    crate::v2::api::cut_to_bytes(&method, 64)
                ),
            ),
            Refusal::Config(problems) => ApiError::new(503, "config_error", problems.to_string()),
        }
    }
}

impl Refusal {
    /// The JSON answer of a refused request.
    pub fn response(&self) -> Response {
        ApiError::from(self.clone()).into()
    }
}

/// The body as a JSON object: size-limited, then parsed. A syntax error names its position and
/// kind, never the input (which may carry a login code).
pub fn json_object(body: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
    check_body_size(body)?;
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        let kind = match e.classify() {
            serde_json::error::Category::Eof => "unexpected end of input",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "unexpected data",
            serde_json::error::Category::Io => "read error",
        };
        ApiError::new(
            400,
            "invalid_json",
            format!(
                "request body is not valid JSON: {kind} at line {} column {}",
                e.line(),
                e.column()
            ),
        )
    })?;
    match value {
        serde_json::Value::Object(map) => Ok(map),
        _ => Err(ApiError::new(
            400,
            "invalid_json",
            "request body must be a JSON object",
        )),
    }
}

/// Whether a `Content-Type` value names JSON: `application/json` or any `+json` type,
/// parameters (`; charset=utf-8`) ignored, case-insensitive.
pub fn is_json_content_type(value: &str) -> bool {
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|sub| sub.ends_with("+json"))
}

/// A JSON route's body as a JSON object: refused with 415 `unsupported_media_type` when a
/// `Content-Type` is sent and is not JSON (a missing one is accepted: `wx.request` and most
/// clients send JSON by default), then [`json_object`] (size limit, parse).
pub fn json_request(
    request: &Request,
) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
    check_body_size(&request.body)?;
    if let Some(ct) = request.content_type.as_deref()
        && !is_json_content_type(ct)
    {
        return Err(ApiError::new(
            415,
            "unsupported_media_type",
            format!(
                "Content-Type must be application/json, got {:?}",
                crate::v2::api::cut_to_bytes(ct, 64)
            ),
        ));
    }
    json_object(&request.body)
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive).
fn bearer_token(authorization: Option<&str>) -> Option<&str> {
    let value = authorization?.trim();
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim_start();
    (!token.is_empty()).then_some(token)
}

/// The caller's session: 401 `missing_token`, `invalid_token` or `token_expired`.
pub fn authenticate(
    request: &Request,
    session: &SessionConfig,
    now: u64,
) -> Result<Session, ApiError> {
    let Some(header) = request
        .authorization
        .as_deref()
        .filter(|h| !h.trim().is_empty())
    else {
        return Err(ApiError::new(
            401,
            "missing_token",
            "Authorization: Bearer <session token> is required (POST /api/login gives one)",
        ));
    };
    let Some(token) = bearer_token(Some(header)) else {
        return Err(ApiError::new(
            401,
            "invalid_token",
            "Authorization must be \"Bearer <session token>\"",
        ));
    };
    session::verify(&session.secret, token, now).map_err(|e| match e {
        SessionError::Expired => ApiError::new(
            401,
            "token_expired",
            "session token has expired; log in again",
        ),
        SessionError::MissingSecret => ApiError::new(500, "config_error", e.to_string()),
        other => ApiError::new(401, "invalid_token", other.to_string()),
    })
}

/// 503 `store_unavailable`: the key-value store failed (shared with the simulator). The
/// backend's own text goes to the log, never to the client.
pub(crate) fn store_unavailable(e: &StoreError) -> ApiError {
    log::store_error(e);
    ApiError::new(
        503,
        "store_unavailable",
        "the key-value store is unavailable; try again",
    )
}

/// Reads a stored JSON value (503 if the store fails, 500 if it cannot be read).
async fn read_json<S: Store, T: serde::de::DeserializeOwned>(
    store: &S,
    key: &str,
) -> Result<Option<T>, ApiError> {
    let Some(bytes) = store.get(key).await.map_err(|e| store_unavailable(&e))? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| ApiError::new(500, "record_unreadable", format!("{key}: {e}")))
}

/// Writes a JSON value (503 if the store fails).
async fn write_json<S: Store, T: Serialize>(
    store: &S,
    key: &str,
    value: &T,
) -> Result<(), ApiError> {
    let bytes =
        serde_json::to_vec(value).map_err(|e| ApiError::new(500, "internal", e.to_string()))?;
    store
        .set(key, &bytes)
        .await
        .map_err(|e| store_unavailable(&e))
}

/// Reads an order (docs/RELIABILITY.md "Storage model"): its base record and the facts that
/// decide its status — the payment, and unless paid (or settled in the base), its closing. Alerts are not
/// read ([`load_order_with_alerts`]). 503 if the store fails, 500 if a record cannot be read.
async fn load_order<S: Store>(store: &S, order_no: &str) -> Result<Option<Order>, ApiError> {
    let Some(base) = read_base(store, order_no).await? else {
        return Ok(None);
    };
    let facts = read_facts(store, order_no, &base).await?;
    Ok(Some(facts.apply_to(base)))
}

/// [`load_order`] when its payment fact was read already (`paid`).
async fn load_order_with_paid<S: Store>(
    store: &S,
    order_no: &str,
    paid: Option<PaidFact>,
) -> Result<Option<Order>, ApiError> {
    let Some(base) = read_base(store, order_no).await? else {
        return Ok(None);
    };
    let facts = read_facts_after(store, order_no, &base, paid).await?;
    Ok(Some(facts.apply_to(base)))
}

/// [`load_order`] with every fact, alerts included (the admin view: lists keys).
async fn load_order_with_alerts<S: Store>(
    store: &S,
    order_no: &str,
) -> Result<Option<Order>, ApiError> {
    let Some(base) = read_base(store, order_no).await? else {
        return Ok(None);
    };
    let mut facts = read_facts(store, order_no, &base).await?;
    if facts.paid.is_some() {
        facts.closed = read_json(store, &ledger::closed_key(order_no)).await?;
    }
    let mut keys = store
        .keys_with_prefix(&ledger::alert_prefix(order_no))
        .await
        .map_err(|e| store_unavailable(&e))?;
    keys.sort();
    for key in keys {
        if let Some(alert) = read_json(store, &key).await? {
            facts.alerts.push(alert);
        }
    }
    Ok(Some(facts.apply_to(base)))
}

async fn read_base<S: Store>(store: &S, order_no: &str) -> Result<Option<Order>, ApiError> {
    let Some(bytes) = store
        .get(&order_key(order_no))
        .await
        .map_err(|e| store_unavailable(&e))?
    else {
        return Ok(None);
    };
    Order::from_json(&bytes)
        .map(Some)
        .map_err(|e| ApiError::new(500, "record_unreadable", format!("order {order_no}: {e}")))
}

/// The payment and, unless paid, the closing.
async fn read_facts<S: Store>(store: &S, order_no: &str, base: &Order) -> Result<Facts, ApiError> {
    let paid: Option<PaidFact> = read_json(store, &ledger::paid_key(order_no)).await?;
    read_facts_after(store, order_no, base, paid).await
}

/// [`read_facts`] given the payment fact.
async fn read_facts_after<S: Store>(
    store: &S,
    order_no: &str,
    base: &Order,
    paid: Option<PaidFact>,
) -> Result<Facts, ApiError> {
    let closed = if paid.is_some() || base.status.is_terminal() {
        None
    } else {
        read_json(store, &ledger::closed_key(order_no)).await?
    };
    Ok(Facts {
        paid,
        closed,
        alerts: Vec::new(),
    })
}

/// Writes an order's base record: only the creating request does (new, then with its prepay or
/// WeChat's refusal).
/// A status change is logged ([`log::state_change`]) once the write returned.
async fn save_base<S: Store>(
    store: &S,
    order: &Order,
    before: Option<Status>,
) -> Result<(), ApiError> {
    let bytes = order
        .to_json()
        .map_err(|e| ApiError::new(500, "internal", e.to_string()))?;
    store
        .set(&order_key(&order.order_no), &bytes)
        .await
        .map_err(|e| store_unavailable(&e))?;
    if before != Some(order.status) {
        log::state_change(&order.order_no, before, order.status);
    }
    Ok(())
}

/// Stores what a handler learned about an order (`after`, from `before` as it was loaded) as
/// facts, each in its own key ([`Facts::learned`]): the payment first, then a closing or
/// refusal, then alerts. Never rewrites what it read. A status change is logged once the
/// writes returned.
async fn record_learned<S: Store>(
    store: &S,
    before: &Order,
    after: &Order,
) -> Result<(), ApiError> {
    let facts = Facts::learned(before, after);
    let order_no = &after.order_no;
    if let Some(paid) = &facts.paid {
        write_json(store, &ledger::paid_key(order_no), paid).await?;
    }
    if let Some(closed) = &facts.closed {
        write_json(store, &ledger::closed_key(order_no), closed).await?;
    }
    for alert in &facts.alerts {
        write_json(store, &alert.key(order_no), alert).await?;
    }
    if before.status != after.status {
        log::state_change(order_no, Some(before.status), after.status);
    }
    Ok(())
}

async fn load_product<S: Store>(store: &S, sku: &str) -> Result<Option<Product>, ApiError> {
    let Some(bytes) = store
        .get(&product_key(sku))
        .await
        .map_err(|e| store_unavailable(&e))?
    else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| ApiError::new(500, "record_unreadable", format!("product {sku}: {e}")))
}

/// 404 `order_not_found`: the same answer for an unknown order and someone else's.
fn order_not_found() -> ApiError {
    ApiError::new(404, "order_not_found", "no such order")
}

/// The caller's own order, or 404 for a malformed number, an unknown order and someone else's;
/// 409 `mode_mismatch` for the caller's order of the other mode ([`same_mode`]).
async fn owned_order<S: Store>(
    store: &S,
    order_no: &str,
    session: &Session,
    mode: Mode,
) -> Result<Order, ApiError> {
    if !crate::order::valid_out_trade_no(order_no) {
        return Err(order_not_found());
    }
    match load_order(store, order_no).await? {
        Some(order) if order.openid == session.openid => {
            same_mode(&order, mode)?;
            Ok(order)
        }
        _ => Err(order_not_found()),
    }
}

/// 409 `mode_mismatch` unless `order` was created in `mode`: a simulator deployment sharing a
/// store with a live one must never settle, re-sign or close a live order (nor the reverse).
fn same_mode(order: &Order, mode: Mode) -> Result<(), ApiError> {
    if order.mode == mode {
        return Ok(());
    }
    Err(ApiError::new(
        409,
        "mode_mismatch",
        format!(
            "order {} was created in {} mode; this deployment runs in {mode} mode",
            order.order_no, order.mode
        ),
    ))
}

/// A nonce string for an APIv2 request or the pay params.
fn fresh_nonce<N: Nonce>(nonce: &N) -> String {
    crate::v2::nonce_str(&nonce.random16())
}
