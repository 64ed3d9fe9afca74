//! WeChat Pay APIv3 as the simulator plays it (PROTOCOL.md "APIv3"):
//! `POST /_sim/v3/pay/transactions/jsapi`, `GET /_sim/v3/pay/transactions/out-trade-no/{no}?mchid=`,
//! `POST /_sim/v3/pay/transactions/out-trade-no/{no}/close`, and refunds (PROTOCOL.md
//! "Refunds"; WeChat's refund rules: [`super::refunds`]): `POST /_sim/v3/refund/domestic/refunds`,
//! `GET /_sim/v3/refund/domestic/refunds/{out_refund_no}`.
//!
//! Checks our `Authorization` as WeChat does — the scheme, the simulator's `mchid`, the merchant
//! certificate serial ([`SIM_MCH_CERT_SERIAL`]), a timestamp within 5 minutes, and the RSA
//! signature over `METHOD\nURL\nTIMESTAMP\nNONCE\nBODY\n` with the development merchant key's
//! public half — and answers 401 `SIGN_ERROR` naming what failed. Then the body's rules (JSON,
//! the simulator's appid, lengths, no emoji) with 400 `PARAM_ERROR`. Every answer is signed
//! with the simulator's WeChat Pay key under [`SIM_WECHATPAY_PUBLIC_KEY_ID`]; errors are
//! `{"code","message"}`.
//!
//! Orders are the same [`SimOrder`] records as APIv2's (so `/_sim/pay` pays them), marked by
//! the `sign_type` `RSA`: their notification is delivered as APIv3 JSON. The faults of
//! [`super::faults`] apply as to APIv2: `systemerror` answers 500 `SYSTEM_ERROR`,
//! `bad_signature` signs the reply with another key, `timeout` holds the reply back; and
//! `signtest` answers with a `WECHATPAY/SIGNTEST/` probe signature, which the app must refuse.

use serde::Deserialize;

use super::faults::{self, ApiFault, TIMEOUT_DELAY};
use super::refunds::{self, RefundApi, RefundAsk, TradeRef};
use super::{
    SimConfig, SimOrder, SimRequest, Sleep, TradeState, load_order, nonce, save_new_order,
    save_order,
};
use crate::config::{
    SIM_APPID, SIM_MCH_CERT_SERIAL, SIM_MCH_ID, SIM_MCH_PUBLIC_KEY, SIM_WECHATPAY_PRIVATE_KEY,
    SIM_WECHATPAY_PUBLIC_KEY_ID,
};
use crate::flows::{Clock, Env, JSON, Nonce, Response, Store};
use crate::money::Fen;
use crate::order::valid_out_trade_no;
use crate::pay_params::RSA_SIGN_TYPE;
use crate::refund::{MAX_REASON_CHARS, valid_refund_no};
use crate::time::{beijing_compact, parse_beijing_compact, parse_rfc3339_offset, rfc3339_beijing};
use crate::v2::Params;
use crate::v2::api::PREPAY_TTL_SECS;
use crate::v3::api::{JSAPI_PATH, MAX_ATTACH_CHARS, MAX_DESCRIPTION_CHARS};
use crate::v3::sign::{AUTH_SCHEME, MerchantKey, request_message, wechatpay_headers};
use crate::v3::verify::{MAX_CLOCK_SKEW_SECS, PublicKey, SIGNTEST_PREFIX, SignatureHeaders};

/// Paths of the transactions below `/_sim`.
pub const TRANSACTIONS_PREFIX: &str = "/v3/pay/transactions/out-trade-no/";

/// `POST` a refund here; `GET` `{REFUNDS}/{out_refund_no}` queries one.
pub const REFUNDS: &str = crate::v3::refund::REFUNDS_PATH;

/// Whether `path` (below `/_sim`) is one of these routes.
pub fn serves(path: &str) -> bool {
    path == JSAPI_PATH
        || path.starts_with(TRANSACTIONS_PREFIX)
        || path == REFUNDS
        || refund_no_of_path(path).is_some()
}

/// Whether `path` is a refund route (refund, refund query).
pub fn is_refund(path: &str) -> bool {
    path == REFUNDS || refund_no_of_path(path).is_some()
}

/// The `{out_refund_no}` of `{REFUNDS}/{out_refund_no}`.
fn refund_no_of_path(path: &str) -> Option<&str> {
    path.strip_prefix(REFUNDS)?.strip_prefix('/')
}

fn wechatpay_key() -> MerchantKey {
    MerchantKey::from_pem(SIM_WECHATPAY_PRIVATE_KEY).expect("the simulator's WeChat Pay key parses")
}

/// Signs a message as the simulator's WeChat Pay (replies and notifications).
pub fn sign_message(now: u64, nonce_str: &str, body: &[u8]) -> SignatureHeaders {
    wechatpay_headers(
        &wechatpay_key(),
        SIM_WECHATPAY_PUBLIC_KEY_ID,
        now,
        nonce_str,
        body,
    )
}

/// An answer: signed (or, for a fault, signed wrongly / as a probe).
struct Reply {
    status: u16,
    body: String,
}

impl Reply {
    fn json(status: u16, value: serde_json::Value) -> Self {
        Self {
            status,
            body: value.to_string(),
        }
    }

    fn error(status: u16, code: &str, message: impl Into<String>) -> Self {
        Self::json(
            status,
            serde_json::json!({ "code": code, "message": message.into() }),
        )
    }

    fn no_content() -> Self {
        Self {
            status: 204,
            body: String::new(),
        }
    }

    fn signed<N: Nonce>(self, now: u64, nonce_source: &N, fault: ApiFault) -> Response {
        let nonce_str = nonce(nonce_source);
        let mut headers = sign_message(now, &nonce_str, self.body.as_bytes());
        match fault {
            ApiFault::BadSignature => {
                // Signed by another key: well-formed, and wrong.
                let other = MerchantKey::from_pem(crate::config::SIM_MCH_PRIVATE_KEY)
                    .expect("the simulator's development keys parse");
                let message = crate::v3::verify::response_message(
                    &headers.timestamp,
                    &headers.nonce,
                    self.body.as_bytes(),
                );
                headers.signature = other.sign(&message);
            }
            ApiFault::SignTest => {
                headers.signature = format!("{SIGNTEST_PREFIX}{}", headers.signature);
            }
            _ => {}
        }
        let mut response_headers: Vec<(&'static str, String)> = headers.to_headers().to_vec();
        response_headers.push(("Request-ID", format!("sim-{nonce_str}")));
        Response {
            status: self.status,
            content_type: JSON,
            headers: response_headers,
            body: self.body.into_bytes(),
        }
    }
}

/// The `Authorization` header's parameters.
fn auth_params(header: &str) -> Option<Vec<(&str, &str)>> {
    let rest = header.strip_prefix(AUTH_SCHEME)?.strip_prefix(' ')?;
    rest.split(',')
        .map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            Some((k, v.strip_prefix('"')?.strip_suffix('"')?))
        })
        .collect()
}

/// Checks the request's `Authorization` as WeChat does; the refusal names what failed.
fn check_authorization(request: &SimRequest<'_>, signed_url: &str, now: u64) -> Result<(), Reply> {
    let refuse = |detail: &str| Reply::error(401, "SIGN_ERROR", format!("签名错误 ({detail})"));
    let header = request
        .authorization
        .ok_or_else(|| refuse("no Authorization header"))?;
    let params = auth_params(header)
        .ok_or_else(|| refuse("Authorization is not WECHATPAY2-SHA256-RSA2048 k=\"v\",…"))?;
    let get = |name: &str| params.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
    let (Some(mchid), Some(nonce_str), Some(signature), Some(timestamp), Some(serial)) = (
        get("mchid"),
        get("nonce_str"),
        get("signature"),
        get("timestamp"),
        get("serial_no"),
    ) else {
        return Err(refuse(
            "Authorization needs mchid, nonce_str, signature, timestamp and serial_no",
        ));
    };
    if mchid != SIM_MCH_ID {
        return Err(refuse(&format!("the simulator's mchid is {SIM_MCH_ID}")));
    }
    if !serial.eq_ignore_ascii_case(SIM_MCH_CERT_SERIAL) {
        return Err(refuse(&format!(
            "serial_no is not the simulator merchant's certificate serial {SIM_MCH_CERT_SERIAL}"
        )));
    }
    let Ok(timestamp) = timestamp.parse::<u64>() else {
        return Err(refuse("timestamp is not Unix seconds"));
    };
    if now.abs_diff(timestamp) >= MAX_CLOCK_SKEW_SECS {
        return Err(refuse("timestamp is more than 5 minutes away from now"));
    }
    let body = std::str::from_utf8(request.body).map_err(|_| refuse("body is not UTF-8"))?;
    let message = request_message(request.method, signed_url, timestamp, nonce_str, body);
    let key = PublicKey::from_pem(SIM_MCH_PUBLIC_KEY).expect("the simulator's keys parse");
    if !key.verifies(message.as_bytes(), signature) {
        return Err(refuse(
            "the signature does not verify with the merchant certificate's public key",
        ));
    }
    Ok(())
}

/// One APIv3 call. `request.path` is below `/_sim` (see [`serves`]).
pub async fn handle<S, T, C, N, P, const WITH_REFUNDS: bool>(
    env: &Env<S, T, C, N, SimConfig>,
    sleep: &P,
    request: SimRequest<'_>,
    path: &str,
) -> Response
where
    S: Store,
    C: Clock,
    N: Nonce,
    P: Sleep,
{
    let now = env.clock.now_unix();
    // What the merchant signed: the path and query exactly as sent.
    let signed_url = if request.query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", request.query)
    };
    if let Err(refusal) = check_authorization(&request, &signed_url, now) {
        return refusal.signed(now, &env.nonce, ApiFault::None);
    }
    let fault = faults::take_api_fault(&env.store).await;
    if fault == ApiFault::SystemError {
        return Reply::error(500, "SYSTEM_ERROR", "系统错误").signed(now, &env.nonce, fault);
    }
    let reply = route::<_, _, _, _, WITH_REFUNDS>(env, &request, path, now).await;
    let response = reply.signed(now, &env.nonce, fault);
    if fault == ApiFault::Timeout {
        // Processed, but answered too late: the caller has given up and will retry.
        sleep.sleep(TIMEOUT_DELAY).await;
    }
    response
}

async fn route<S: Store, T, C, N: Nonce, const WITH_REFUNDS: bool>(
    env: &Env<S, T, C, N, SimConfig>,
    request: &SimRequest<'_>,
    path: &str,
    now: u64,
) -> Reply {
    if path == JSAPI_PATH {
        return match request.method {
            "POST" => jsapi(env, request.body, now).await,
            _ => Reply::error(405, "METHOD_NOT_ALLOWED", "请使用POST方法"),
        };
    }
    if WITH_REFUNDS && path == REFUNDS {
        return match request.method {
            "POST" => super::refund_route(refund(env, request.body, now)).await,
            _ => Reply::error(405, "METHOD_NOT_ALLOWED", "请使用POST方法"),
        };
    }
    if let Some(out_refund_no) = refund_no_of_path(path).filter(|_| WITH_REFUNDS) {
        return match request.method {
            "GET" => super::refund_route(refund_query(env, out_refund_no)).await,
            _ => Reply::error(405, "METHOD_NOT_ALLOWED", "请使用GET方法"),
        };
    }
    let rest = path.strip_prefix(TRANSACTIONS_PREFIX).unwrap_or("");
    match (request.method, rest.split_once('/')) {
        ("GET", None) => query(env, rest, request.query).await,
        ("POST", Some((no, "close"))) => close(env, no, request.body).await,
        _ => Reply::error(404, "NOT_FOUND", "no such APIv3 route in the simulator"),
    }
}

#[derive(Deserialize)]
struct JsapiBody {
    appid: String,
    mchid: String,
    description: String,
    out_trade_no: String,
    #[serde(default)]
    time_expire: Option<String>,
    #[serde(default)]
    attach: Option<String>,
    notify_url: String,
    amount: Amount,
    payer: Payer,
}

#[derive(Deserialize)]
struct Amount {
    total: u64,
    #[serde(default)]
    currency: Option<String>,
}

#[derive(Deserialize)]
struct Payer {
    openid: String,
}

fn param_error(detail: impl AsRef<str>) -> Reply {
    Reply::error(
        400,
        "PARAM_ERROR",
        format!("参数错误 ({})", detail.as_ref()),
    )
}

/// The body's rules, after which it is the order as WeChat keeps it.
fn check_jsapi(body: &[u8], now: u64) -> Result<(JsapiBody, Option<u64>), Reply> {
    let text = std::str::from_utf8(body).map_err(|_| param_error("body is not UTF-8"))?;
    if text.chars().any(|c| c.len_utf8() == 4) {
        return Err(param_error(
            "4-byte UTF-8 characters (emoji) are not allowed",
        ));
    }
    let o: JsapiBody = serde_json::from_str(text).map_err(|e| param_error(format!("body: {e}")))?;
    if o.mchid != SIM_MCH_ID {
        return Err(Reply::error(
            400,
            "MCH_NOT_EXISTS",
            format!("商户号不存在 (the simulator's mchid is {SIM_MCH_ID})"),
        ));
    }
    if o.appid != SIM_APPID {
        return Err(Reply::error(
            400,
            "APPID_MCHID_NOT_MATCH",
            format!("appid和mch_id不匹配 (the simulator's appid is {SIM_APPID})"),
        ));
    }
    if !valid_out_trade_no(&o.out_trade_no) {
        return Err(param_error(
            "out_trade_no: 6-32 characters of [0-9A-Za-z_-|*]",
        ));
    }
    let chars = o.description.chars().count();
    if chars == 0 || chars > MAX_DESCRIPTION_CHARS {
        return Err(param_error("description: 1-127 characters"));
    }
    if o.attach
        .as_deref()
        .is_some_and(|a| a.chars().count() > MAX_ATTACH_CHARS)
    {
        return Err(param_error("attach: at most 128 characters"));
    }
    if !o.notify_url.starts_with("https://") || o.notify_url.contains('?') {
        return Err(param_error("notify_url: an https URL without a query"));
    }
    if o.amount.total == 0 || o.amount.currency.as_deref().is_some_and(|c| c != "CNY") {
        return Err(param_error("amount: total at least 1 fen, currency CNY"));
    }
    if o.payer.openid.is_empty() {
        return Err(param_error("payer.openid is required"));
    }
    let time_expire = match &o.time_expire {
        None => None,
        Some(t) => {
            let at = parse_rfc3339_offset(t)
                .map_err(|_| param_error("time_expire: RFC 3339 (yyyy-MM-DDTHH:mm:ss+08:00)"))?;
            if at < now + super::merchant_api::MIN_TIME_EXPIRE_SECS {
                return Err(param_error("time_expire: at least 5 minutes ahead"));
            }
            Some(at)
        }
    };
    Ok((o, time_expire))
}

/// The order's fields as the simulator's records keep them (APIv2's names, so `/_sim/pay`
/// and the notification read them alike); `time_expire` as received.
fn as_params(o: &JsapiBody) -> Params {
    let mut p = Params::new();
    for (name, value) in [
        ("appid", o.appid.clone()),
        ("mch_id", o.mchid.clone()),
        ("body", o.description.clone()),
        ("out_trade_no", o.out_trade_no.clone()),
        ("total_fee", o.amount.total.to_string()),
        ("openid", o.payer.openid.clone()),
        ("notify_url", o.notify_url.clone()),
        ("attach", o.attach.clone().unwrap_or_default()),
        ("time_expire", o.time_expire.clone().unwrap_or_default()),
        ("trade_type", "JSAPI".into()),
    ] {
        if !value.is_empty() {
            p.insert(name.into(), value);
        }
    }
    p
}

async fn jsapi<S: Store, T, C, N: Nonce>(
    env: &Env<S, T, C, N, SimConfig>,
    body: &[u8],
    now: u64,
) -> Reply {
    let (o, time_expire) = match check_jsapi(body, now) {
        Ok(checked) => checked,
        Err(refusal) => return refusal,
    };
    let request = as_params(&o);
    let prepay_ok = |id: &str| Reply::json(200, serde_json::json!({ "prepay_id": id }));
    let existing = match load_order(&env.store, &o.out_trade_no).await {
        Ok(existing) => existing,
        Err(_) => return Reply::error(500, "SYSTEM_ERROR", "系统错误"),
    };
    if let Some(order) = existing {
        return match order.trade_state {
            TradeState::Success => Reply::error(400, "ORDERPAID", "该订单已支付"),
            TradeState::Closed => Reply::error(400, "ORDER_CLOSED", "订单已关闭"),
            TradeState::Notpay if order.request != request => {
                Reply::error(403, "OUT_TRADE_NO_USED", "商户订单号重复")
            }
            // The same order again (a retry): the same prepay id.
            TradeState::Notpay => prepay_ok(&order.prepay_id),
        };
    }
    let prepay_id = format!(
        "wx{}{}",
        beijing_compact(now),
        hex::encode(&env.nonce.random16()[..10])
    );
    let expires_at = now
        .saturating_add(PREPAY_TTL_SECS)
        .min(time_expire.unwrap_or(u64::MAX));
    let order = SimOrder::unpaid(
        o.out_trade_no,
        prepay_id.clone(),
        request,
        RSA_SIGN_TYPE,
        now,
        expires_at,
    );
    if save_new_order(&env.store, &order).await.is_err() {
        return Reply::error(500, "SYSTEM_ERROR", "系统错误");
    }
    prepay_ok(&prepay_id)
}

/// A trade as APIv3 answers it (the query's body and the notification's plaintext).
pub fn transaction_json(order: &SimOrder) -> String {
    let total: u64 = order.field("total_fee").parse().unwrap_or(0);
    let (state, desc) = match order.trade_state {
        TradeState::Success => ("SUCCESS", "支付成功"),
        TradeState::Notpay => ("NOTPAY", "订单未支付"),
        TradeState::Closed => ("CLOSED", "订单已关闭"),
    };
    let mut t = serde_json::json!({
        "appid": order.field("appid"),
        "mchid": order.field("mch_id"),
        "out_trade_no": order.out_trade_no,
        "trade_type": "JSAPI",
        "trade_state": state,
        "trade_state_desc": desc,
        "payer": { "openid": order.field("openid") },
        "amount": { "total": total, "currency": "CNY" },
    });
    if !order.field("attach").is_empty() {
        t["attach"] = order.field("attach").into();
    }
    if let (TradeState::Success, Some(id), Some(end)) =
        (order.trade_state, &order.transaction_id, &order.time_end)
    {
        t["transaction_id"] = id.clone().into();
        t["bank_type"] = "OTHERS".into();
        t["amount"]["payer_total"] = total.into();
        t["amount"]["payer_currency"] = "CNY".into();
        if let Ok(at) = parse_beijing_compact(end) {
            t["success_time"] = rfc3339_beijing(at).into();
        }
    }
    t.to_string()
}

async fn query<S: Store, T, C, N>(
    env: &Env<S, T, C, N, SimConfig>,
    out_trade_no: &str,
    query: &str,
) -> Reply {
    if super::query_param(query, "mchid").as_deref() != Some(SIM_MCH_ID) {
        return param_error(format!("mchid: the simulator's is {SIM_MCH_ID}"));
    }
    match load_order(&env.store, out_trade_no).await {
        Ok(Some(order)) => Reply {
            status: 200,
            body: transaction_json(&order),
        },
        Ok(None) => Reply::error(404, "ORDER_NOT_EXIST", "订单不存在"),
        Err(_) => Reply::error(500, "SYSTEM_ERROR", "系统错误"),
    }
}

async fn close<S: Store, T, C, N>(
    env: &Env<S, T, C, N, SimConfig>,
    out_trade_no: &str,
    body: &[u8],
) -> Reply {
    #[derive(Deserialize)]
    struct CloseBody {
        mchid: String,
    }
    match serde_json::from_slice::<CloseBody>(body) {
        Ok(b) if b.mchid == SIM_MCH_ID => {}
        _ => return param_error(format!("body must be {{\"mchid\":\"{SIM_MCH_ID}\"}}")),
    }
    let mut order = match load_order(&env.store, out_trade_no).await {
        Ok(Some(order)) => order,
        Ok(None) => return Reply::error(404, "ORDER_NOT_EXIST", "订单不存在"),
        Err(_) => return Reply::error(500, "SYSTEM_ERROR", "系统错误"),
    };
    match order.trade_state {
        TradeState::Success => Reply::error(400, "ORDERPAID", "该订单已支付"),
        // Closing a closed order again succeeds (WeChat answers 204 too).
        TradeState::Closed => Reply::no_content(),
        TradeState::Notpay => {
            order.trade_state = TradeState::Closed;
            match save_order(&env.store, &order).await {
                Ok(()) => Reply::no_content(),
                Err(_) => Reply::error(500, "SYSTEM_ERROR", "系统错误"),
            }
        }
    }
}

// ---- Refunds ------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct RefundBody {
    #[serde(default)]
    out_trade_no: Option<String>,
    #[serde(default)]
    transaction_id: Option<String>,
    out_refund_no: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    notify_url: Option<String>,
    amount: RefundAmount,
}

#[derive(Deserialize)]
struct RefundAmount {
    refund: u64,
    total: u64,
    currency: String,
}

/// The refund body's rules (formats; WeChat's business rules: [`refunds::ask`]).
fn check_refund(body: &[u8]) -> Result<RefundBody, Reply> {
    let text = std::str::from_utf8(body).map_err(|_| param_error("body is not UTF-8"))?;
    if text.chars().any(|c| c.len_utf8() == 4) {
        return Err(param_error(
            "4-byte UTF-8 characters (emoji) are not allowed",
        ));
    }
    let r: RefundBody =
        serde_json::from_str(text).map_err(|e| param_error(format!("body: {e}")))?;
    let given = |v: &Option<String>| v.as_deref().is_some_and(|v| !v.is_empty());
    if !given(&r.out_trade_no) && !given(&r.transaction_id) {
        return Err(param_error("out_trade_no or transaction_id is required"));
    }
    if r.out_trade_no
        .as_deref()
        .is_some_and(|no| !no.is_empty() && !valid_out_trade_no(no))
    {
        return Err(param_error(
            "out_trade_no: 6-32 characters of [0-9A-Za-z_-|*]",
        ));
    }
    if !valid_refund_no(&r.out_refund_no) {
        return Err(param_error(
            "out_refund_no: 1-64 characters of [0-9A-Za-z_-|*@]",
        ));
    }
    if r.reason
        .as_deref()
        .is_some_and(|reason| reason.chars().count() > MAX_REASON_CHARS)
    {
        return Err(param_error("reason: at most 80 characters"));
    }
    if r.notify_url
        .as_deref()
        .is_some_and(|url| !url.starts_with("https://") || url.contains('?'))
    {
        return Err(param_error("notify_url: an https URL without a query"));
    }
    if r.amount.currency != "CNY" {
        return Err(param_error("amount.currency: CNY"));
    }
    if r.amount.refund == 0 || r.amount.total == 0 {
        return Err(param_error("amount: refund and total at least 1 fen"));
    }
    if r.amount.refund > r.amount.total {
        return Err(param_error("amount.refund: at most amount.total"));
    }
    Ok(r)
}

async fn refund<S: Store, T, C, N: Nonce>(
    env: &Env<S, T, C, N, SimConfig>,
    body: &[u8],
    now: u64,
) -> Reply {
    let r = match check_refund(body) {
        Ok(r) => r,
        Err(refusal) => return refusal,
    };
    let trade = match r.transaction_id.as_deref().filter(|id| !id.is_empty()) {
        Some(id) => TradeRef::TransactionId(id),
        None => TradeRef::OutTradeNo(r.out_trade_no.as_deref().unwrap_or("")),
    };
    let ask = RefundAsk {
        trade,
        out_refund_no: &r.out_refund_no,
        total_fee: Fen(r.amount.total),
        refund_fee: Fen(r.amount.refund),
        reason: r.reason.as_deref().filter(|v| !v.is_empty()),
        notify_url: r.notify_url.as_deref(),
        api: RefundApi::V3,
    };
    match refunds::ask(&env.store, &env.nonce, now, &ask).await {
        Ok(refund) => Reply {
            status: 200,
            body: refunds::refund_json(&refund, false),
        },
        Err(refusal) => {
            let (status, code, message) = refusal.v3();
            Reply::error(status, code, message)
        }
    }
}

async fn refund_query<S: Store, T, C, N>(
    env: &Env<S, T, C, N, SimConfig>,
    out_refund_no: &str,
) -> Reply {
    if !valid_refund_no(out_refund_no) {
        return param_error("out_refund_no: 1-64 characters of [0-9A-Za-z_-|*@]");
    }
    match refunds::load_refund(&env.store, out_refund_no).await {
        Ok(Some(refund)) => Reply {
            status: 200,
            body: refunds::refund_json(&refund, false),
        },
        Ok(None) => Reply::error(404, "RESOURCE_NOT_EXISTS", "退款单不存在"),
        Err(_) => Reply::error(500, "SYSTEM_ERROR", "系统错误"),
    }
}
