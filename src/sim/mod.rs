//! The embedded WeChat Pay simulator (docs/ARCHITECTURE.md §2, §5), sans-IO like the rest of the core: the
//! `simulator` component only reads the request and hands it to [`handle`].
//!
//! In simulator mode every WeChat call of the other components is handed to this simulator
//! in-process ([`link`]; addressed as [`crate::config::SIM_BASE`]), so `spin up --build` runs the
//! whole payment flow on one machine, without any outbound request.
//! The simulator plays three parties:
//!
//! | route | plays | module |
//! |---|---|---|
//! | `GET /_sim/sns/jscode2session` | WeChat's login API | [`login`] |
//! | `POST /_sim/pay/unifiedorder`, `/_sim/pay/orderquery`, `/_sim/pay/closeorder` | WeChat Pay APIv2 | [`merchant_api`] |
//! | `POST /_sim/secapi/pay/refund`, `/_sim/pay/refundquery` | WeChat Pay APIv2 refunds (rules: [`refunds`]) | [`merchant_api`] |
//! | `POST /_sim/v3/pay/transactions/jsapi`, `GET /_sim/v3/pay/transactions/out-trade-no/{no}`, `POST …/{no}/close` | WeChat Pay APIv3 (development key pair) | [`merchant_api_v3`] |
//! | `POST /_sim/v3/refund/domestic/refunds`, `GET /_sim/v3/refund/domestic/refunds/{out_refund_no}` | WeChat Pay APIv3 refunds (rules: [`refunds`]) | [`merchant_api_v3`] |
//! | `POST /_sim/pay` `{"prepay_id", "result"}` | the user paying in `wx.requestPayment`, then WeChat Pay delivering the notification | [`user`] |
//! | `POST /_sim/refund` `{"refund_no", "result"}` | WeChat Pay settling a refund (SUCCESS, CLOSED, ABNORMAL), then delivering the refund notification in the refund's API version | [`refunds`] |
//! | `GET`/`POST`/`DELETE /_sim/faults` | a test switchboard: faults injected into the next answers | [`faults`] |
//!
//! It checks our requests the way WeChat does (signature with the declared `sign_type`, required
//! fields, formats and limits, appid/mch_id of the simulator merchant) and answers in WeChat's own
//! shapes: `return_code` FAIL with a `return_msg` for a call it cannot read or trust,
//! `result_code` FAIL with an `err_code` for a refusal, replies signed with
//! [`SIM_API_KEY`](crate::config::SIM_API_KEY) otherwise.
//!
//! State lives in the app's KV store under [`KEY_PREFIX`] (`sim:`), apart from the app's own
//! keys. In live mode every route answers 404.
//!
//! Simplifications (documented where they are made): one merchant and one app (the `SIM_*`
//! constants); no closeorder 5-minute rule; refunds are settled only by `/_sim/refund`, APIv2
//! refunds need no client certificate, and a refunded trade keeps `trade_state` SUCCESS (WeChat
//! says REFUND); a used login code is remembered for 5 minutes (a code's lifetime), after which
//! the same text is accepted again; the notification retry schedule is WeChat's first steps
//! scaled down 100× and run inside the `/_sim/pay` (`/_sim/refund`) request; fault counters are
//! read-modify-write without compare-and-swap (concurrent requests may consume one fault twice).

pub mod faults;
pub mod link;
pub mod login;
pub mod merchant_api;
pub mod merchant_api_v3;
pub mod refunds;
pub mod user;

#[cfg(test)]
mod tests;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{ConfigProblems, MerchantConfig, Mode, Signing};
use crate::flows::{Clock, Env, Nonce, Response, Store, StoreError, Transport};
use crate::v2::Params;

/// Every key the simulator writes starts with this.
pub const KEY_PREFIX: &str = "sim:";
/// `sim:order:{out_trade_no}`: [`SimOrder`].
pub const ORDER_KEY_PREFIX: &str = "sim:order:";
/// `sim:prepay:{prepay_id}`: the out_trade_no.
pub const PREPAY_KEY_PREFIX: &str = "sim:prepay:";
/// `sim:transaction:{transaction_id}`: the out_trade_no.
pub const TRANSACTION_KEY_PREFIX: &str = "sim:transaction:";
/// `sim:code:{sha256(code)}`: a login code already exchanged.
pub const CODE_KEY_PREFIX: &str = "sim:code:";
/// `sim:refund:{out_refund_no}`: [`refunds::SimRefund`].
pub const REFUND_KEY_PREFIX: &str = "sim:refund:";
/// `sim:trade-refund:{out_trade_no}:{out_refund_no}`: a trade's refunds (the out_refund_no).
pub const TRADE_REFUND_KEY_PREFIX: &str = "sim:trade-refund:";
/// `sim:refund-id:{refund_id}`: the out_refund_no (APIv2's refundquery by `refund_id`).
pub const REFUND_ID_KEY_PREFIX: &str = "sim:refund-id:";
/// The pending faults ([`faults::Faults`]).
pub const FAULTS_KEY: &str = "sim:faults";

/// Where the simulator is mounted (the component's route is `/_sim/...`).
pub const MOUNT: &str = "/_sim";

/// Version of the stored [`SimOrder`] record.
pub const SIM_ORDER_VERSION: u32 = 1;

/// Pauses (the notification retry schedule, the `timeout` fault). The core never sleeps itself.
#[allow(async_fn_in_trait)]
pub trait Sleep {
    async fn sleep(&self, duration: Duration);
}

impl<P: Sleep + ?Sized> Sleep for &P {
    async fn sleep(&self, duration: Duration) {
        (**self).sleep(duration).await
    }
}

/// No pause at all (native tests).
impl Sleep for () {
    async fn sleep(&self, _duration: Duration) {}
}

/// A request to the simulator, as the component read it.
#[derive(Debug, Clone, Copy)]
pub struct SimRequest<'a> {
    pub method: &'a str,
    /// The path below [`MOUNT`], e.g. `/pay/unifiedorder` (a leading `/_sim` is also accepted).
    pub path: &'a str,
    /// The query string without `?` (may be empty).
    pub query: &'a str,
    /// The `Authorization` header (APIv3 requests are signed in it).
    pub authorization: Option<&'a str>,
    pub body: &'a [u8],
}

/// The simulator's configuration: the mode, and in simulator mode the app's merchant settings
/// (the notify route, reached in-process by [`link::NotifyLink`], verifies with them). Everything
/// else is the published `SIM_*` constants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConfig {
    /// `None` when `wxpay_mode` is invalid: the simulator then serves nothing, like in live mode.
    pub mode: Option<Mode>,
    /// `Some` in simulator mode.
    pub merchant: Option<MerchantConfig>,
}

impl SimConfig {
    /// Reads `wxpay_mode` and, in simulator mode, the merchant section
    /// ([`MerchantConfig::load`]: `wxpay_sign_type`), whose problems are the simulator's.
    pub fn load<V: crate::config::VariableSource + ?Sized>(
        source: &V,
    ) -> Result<Self, ConfigProblems> {
        match Mode::load(source).ok() {
            Some(Mode::Simulator) => MerchantConfig::load_for(source, Signing::VerifiesOnly)
                .map(|m| Self::serving(Some(m))),
            mode => Ok(Self {
                mode,
                merchant: None,
            }),
        }
    }

    /// Simulator mode, notifications verified with `merchant` (`None`: none delivered).
    pub fn serving(merchant: Option<MerchantConfig>) -> Self {
        Self {
            mode: Some(Mode::Simulator),
            merchant,
        }
    }

    /// Whether the `/_sim` routes answer at all.
    pub fn enabled(&self) -> bool {
        self.mode == Some(Mode::Simulator)
    }
}

/// 404 `not_found` (every route in live mode, unknown routes in simulator mode).
pub fn not_found() -> Response {
    Response::error(404, "not_found", "no such route")
}

/// Routes one simulator request. In live mode (or with an invalid `wxpay_mode`) every route
/// answers 404.
pub async fn handle<S, T, C, N, P>(
    env: &Env<S, T, C, N, SimConfig>,
    sleep: &P,
    request: SimRequest<'_>,
) -> Response
where
    S: Store,
    T: Transport,
    C: Clock,
    N: Nonce,
    P: Sleep,
{
    if !env.config.enabled() {
        return not_found();
    }
    if let Some(answer) = api::<_, _, _, _, _, true>(env, sleep, request).await {
        return answer;
    }
    let path = route_path(request.path);
    match path {
        user::PAY => match request.method {
            "POST" => user::pay(env, sleep, request.body).await,
            _ => method_not_allowed(request.method, path),
        },
        refunds::SETTLE => match request.method {
            "POST" => refunds::settle(env, sleep, request.body).await,
            _ => method_not_allowed(request.method, path),
        },
        faults::FAULTS => faults::handle(&env.store, request.method, request.body).await,
        _ => not_found(),
    }
}

/// The route that plays WeChat's login API (jscode2session) alone: what the login component's
/// calls reach ([`link::LoginApi`]). `None` for any other path. Does not check the mode.
pub async fn login_api<S, T, C, N>(
    env: &Env<S, T, C, N, SimConfig>,
    request: SimRequest<'_>,
) -> Option<Response>
where
    S: Store,
    C: Clock,
{
    let path = route_path(request.path);
    (path == login::JSCODE2SESSION).then_some(())?;
    Some(match request.method {
        "GET" => login::jscode2session(env, request.query).await,
        _ => method_not_allowed(request.method, path),
    })
}

/// The routes that play WeChat's servers (jscode2session, unifiedorder, orderquery,
/// closeorder, refund, refundquery, APIv3's JSAPI order, query, close, refund and refund query): what the app's own WeChat calls reach
/// ([`link::SimulatorLink`]). `None` for any other path. Does not check the mode.
///
/// `REFUNDS` false leaves the refund routes out (`None`), so that a component that never
/// refunds (the order component's link) does not carry their code.
pub async fn api<S, T, C, N, P, const REFUNDS: bool>(
    env: &Env<S, T, C, N, SimConfig>,
    sleep: &P,
    request: SimRequest<'_>,
) -> Option<Response>
where
    S: Store,
    C: Clock,
    N: Nonce,
    P: Sleep,
{
    let path = route_path(request.path);
    if !REFUNDS && (merchant_api::is_refund(path) || merchant_api_v3::is_refund(path)) {
        return None;
    }
    Some(match path {
        login::JSCODE2SESSION => match request.method {
            "GET" => login::jscode2session(env, request.query).await,
            _ => method_not_allowed(request.method, path),
        },
        path if merchant_api::serves(path) => {
            // WeChat answers a GET with REQUIRE_POST_METHOD in its own shape.
            merchant_api::handle::<_, _, _, _, _, REFUNDS>(
                env,
                sleep,
                path,
                request.method,
                request.body,
            )
            .await
        }
        path if merchant_api_v3::serves(path) => {
            merchant_api_v3::handle::<_, _, _, _, _, REFUNDS>(env, sleep, request, path).await
        }
        _ => return None,
    })
}

/// A refund route's future behind a pointer. An `async fn`'s state machine keeps the code of
/// every future it awaits, even in a branch a `const` turns off; awaited as `dyn Future`, a
/// refund handler is only built (and linked) where refunds are served (`api`'s `REFUNDS`).
pub(crate) fn refund_route<'a, T>(
    future: impl std::future::Future<Output = T> + 'a,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + 'a>> {
    Box::pin(future)
}

/// The path below [`MOUNT`], without a query, fragment or trailing `/`.
fn route_path(path: &str) -> &str {
    let path = path.strip_prefix(MOUNT).unwrap_or(path);
    let path = path.split(['?', '#']).next().unwrap_or("");
    path.trim_end_matches('/')
}

fn method_not_allowed(method: &str, path: &str) -> Response {
    Response::error(
        405,
        "method_not_allowed",
        format!("{method} is not allowed on {MOUNT}{path}"),
    )
}

// ---- The simulator's order record ---------------------------------------------------------------

/// Where a simulated trade stands (orderquery's `trade_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TradeState {
    /// Awaiting payment (also after a failed payment attempt: the user may try again).
    Notpay,
    Success,
    Closed,
}

impl TradeState {
    pub fn as_str(self) -> &'static str {
        match self {
            TradeState::Notpay => "NOTPAY",
            TradeState::Success => "SUCCESS",
            TradeState::Closed => "CLOSED",
        }
    }
}

/// What WeChat Pay knows about one of our orders, under `sim:order:{out_trade_no}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimOrder {
    pub version: u32,
    pub out_trade_no: String,
    pub prepay_id: String,
    /// The unified order's fields as received, without `sign` and `nonce_str`: what a repeated
    /// unified order is compared with, and where the notification's fields come from.
    pub request: Params,
    /// `MD5` or `HMAC-SHA256`: the unified order's `sign_type`, also the notification's.
    pub sign_type: String,
    pub trade_state: TradeState,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds after which the prepay id can no longer be paid (2 h, or `time_expire`).
    pub expires_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    /// `yyyyMMddHHmmss`, Beijing time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_end: Option<String>,
    /// Payment attempts the user saw fail (`/_sim/pay` with `result: FAIL`).
    #[serde(default)]
    pub failed_payments: u32,
}

impl SimOrder {
    /// A new trade awaiting payment (`sign_type`: APIv2's, or `RSA` for an APIv3 order).
    pub fn unpaid(
        out_trade_no: String,
        prepay_id: String,
        request: Params,
        sign_type: &str,
        created_at: u64,
        expires_at: u64,
    ) -> Self {
        Self {
            version: SIM_ORDER_VERSION,
            out_trade_no,
            prepay_id,
            request,
            sign_type: sign_type.to_owned(),
            trade_state: TradeState::Notpay,
            created_at,
            expires_at,
            transaction_id: None,
            time_end: None,
            failed_payments: 0,
        }
    }

    pub fn field(&self, name: &str) -> &str {
        self.request.get(name).map_or("", String::as_str)
    }
}

pub fn order_key(out_trade_no: &str) -> String {
    format!("{ORDER_KEY_PREFIX}{out_trade_no}")
}

pub fn prepay_key(prepay_id: &str) -> String {
    format!("{PREPAY_KEY_PREFIX}{prepay_id}")
}

pub fn transaction_key(transaction_id: &str) -> String {
    format!("{TRANSACTION_KEY_PREFIX}{transaction_id}")
}

async fn load_order<S: Store>(
    store: &S,
    out_trade_no: &str,
) -> Result<Option<SimOrder>, StoreError> {
    match store.get(&order_key(out_trade_no)).await? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError(format!("simulator order record unreadable: {e}"))),
    }
}

/// Stores a new trade: its prepay index first, so that an order is never stored without a way
/// to pay it.
async fn save_new_order<S: Store>(store: &S, order: &SimOrder) -> Result<(), StoreError> {
    store
        .set(&prepay_key(&order.prepay_id), order.out_trade_no.as_bytes())
        .await?;
    save_order(store, order).await
}

async fn save_order<S: Store>(store: &S, order: &SimOrder) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(order).map_err(|e| StoreError(e.to_string()))?;
    store.set(&order_key(&order.out_trade_no), &bytes).await
}

/// The out_trade_no an index key (`sim:prepay:…`, `sim:transaction:…`) points to.
async fn load_index<S: Store>(store: &S, key: &str) -> Result<Option<String>, StoreError> {
    Ok(store
        .get(key)
        .await?
        .and_then(|bytes| String::from_utf8(bytes).ok()))
}

/// A nonce_str for a reply or a notification.
fn nonce<N: Nonce>(nonce: &N) -> String {
    crate::v2::nonce_str(&nonce.random16())
}

/// Decodes `%XX` escapes and `+` of a query value (invalid escapes are kept as they are).
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex_val(bytes[i + 1]), hex_val(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// The value of `name` in a query string (first occurrence), decoded.
fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == name).then(|| percent_decode(v))
    })
}
