//! `POST /_sim/pay` `{"prepay_id", "result": "SUCCESS" | "FAIL"}`: the user pays in
//! `wx.requestPayment`, and WeChat Pay notifies the merchant.
//!
//! `prepay_id` may also be given as the `package` of the pay params (`prepay_id=wx…`).
//! `result` defaults to `SUCCESS`.
//!
//! - `SUCCESS`: the trade becomes paid (a new 28-digit `transaction_id`, `time_end` now in
//!   Beijing time), then the signed notification — for an APIv2 order every field WeChat sends
//!   for a JSAPI payment, signed with the unified order's `sign_type`; for an APIv3 order the
//!   encrypted transaction in WeChat's JSON envelope, signed in `Wechatpay-*` headers — is
//!   POSTed to the order's `notify_url` (`SIM_NOTIFY_URL`, the notify flow in-process:
//!   `link::NotifyLink`). An answer other than APIv2's HTTP 200 with `return_code` SUCCESS
//!   (APIv3: other than a 2xx), or no answer, is re-delivered on [`RETRY_DELAYS`]: WeChat's first
//!   steps (15 s, 15 s, 30 s) scaled down 100×, so the whole schedule fits in the request
//!   (0.6 s); WeChat's full 24-hour schedule cannot run inside one request — a notification
//!   that was never acknowledged is still visible to the app through orderquery, which
//!   `GET /api/orders/{no}` and reconcile use. The answer lists every delivery attempt.
//! - `FAIL`: the payment failed in front of the user (`wx.requestPayment`'s fail callback, e.g.
//!   insufficient balance). WeChat sends no notification for it and the trade stays `NOTPAY`,
//!   so the same prepay id can be paid again (as in WeChat, where the user may retry).
//!
//! A paid trade answers 409 `order_paid`, a closed one 409 `order_closed`, an expired prepay id
//! 410 `prepay_expired`, an unknown one 404 `unknown_prepay_id`.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::merchant_api::{paid_fields, sim_key};
use super::merchant_api_v3;
use super::{
    PREPAY_KEY_PREFIX, SimConfig, SimOrder, Sleep, TradeState, faults, load_index, load_order,
    nonce, save_order, transaction_key,
};
use crate::config::{SIM_APIV3_KEY, SIM_APPID, SIM_MCH_ID};
use crate::flows::{
    ApiError, Clock, Env, Nonce, OutboundRequest, Response, Store, Transport, json_object,
};
use crate::time::beijing_compact;
use crate::v2::Params;
use crate::v2::api::cut_to_bytes;
use crate::v2::sign::{SignType, sign_in_place};
use crate::v2::xml;
use crate::v3::verify::SignatureHeaders;

/// The route below `/_sim`.
pub const PAY: &str = "/pay";

/// Pauses before each re-delivery: WeChat's 15 s / 15 s / 30 s, divided by 100.
pub const RETRY_DELAYS: [Duration; 3] = [
    Duration::from_millis(150),
    Duration::from_millis(150),
    Duration::from_millis(300),
];

/// Largest duplicate burst delivered at once.
pub const MAX_BURST: usize = 16;

/// Longest notify answer body quoted back.
const MAX_QUOTED_BODY: usize = 512;

/// One delivery attempt, as `/_sim/pay` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    /// 1 for the first delivery (all copies of a burst), 2.. for re-deliveries.
    pub round: usize,
    /// 1-based copy within a burst.
    pub copy: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// No answer: the transport's error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// APIv2: HTTP 200 with `return_code` SUCCESS; APIv3: a 2xx.
    pub acknowledged: bool,
}

/// The answer of `/_sim/pay`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Paid {
    pub out_trade_no: String,
    pub prepay_id: String,
    pub result: &'static str,
    pub trade_state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_end: Option<String>,
    pub total_fee: u64,
    /// Whether the notify route acknowledged the notification (always false for FAIL).
    pub notified: bool,
    pub deliveries: Vec<Delivery>,
}

fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(400, code, message)
}

/// Reads `{"prepay_id" | "package", "result"?}`.
fn parse_input(body: &[u8]) -> Result<(String, bool), ApiError> {
    let object = json_object(body)?;
    let raw = match (object.get("prepay_id"), object.get("package")) {
        (Some(Value::String(id)), _) | (None, Some(Value::String(id))) => id.clone(),
        _ => {
            return Err(bad_request(
                "invalid_prepay_id",
                "prepay_id (or the pay params' package) is required as a string",
            ));
        }
    };
    let prepay_id = raw.strip_prefix("prepay_id=").unwrap_or(&raw).to_owned();
    let success = match object.get("result") {
        None | Some(Value::Null) => true,
        Some(Value::String(r)) if r == "SUCCESS" => true,
        Some(Value::String(r)) if r == "FAIL" => false,
        Some(_) => {
            return Err(bad_request(
                "invalid_result",
                "result must be \"SUCCESS\" or \"FAIL\"",
            ));
        }
    };
    Ok((prepay_id, success))
}

/// `POST /_sim/pay`.
pub async fn pay<S, T, C, N, P>(
    env: &Env<S, T, C, N, SimConfig>,
    sleep: &P,
    body: &[u8],
) -> Response
where
    S: Store,
    T: Transport,
    C: Clock,
    N: Nonce,
    P: Sleep,
{
    match pay_inner(env, sleep, body).await {
        Ok(paid) => Response::json(200, &paid),
        Err(e) => e.into(),
    }
}

async fn pay_inner<S, T, C, N, P>(
    env: &Env<S, T, C, N, SimConfig>,
    sleep: &P,
    body: &[u8],
) -> Result<Paid, ApiError>
where
    S: Store,
    T: Transport,
    C: Clock,
    N: Nonce,
    P: Sleep,
{
    let (prepay_id, success) = parse_input(body)?;
    let unknown = || {
        ApiError::new(
            404,
            "unknown_prepay_id",
            "no unified order has this prepay_id",
        )
    };
    if prepay_id.is_empty()
        || prepay_id.len() > 64
        || !prepay_id.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(unknown());
    }
    let out_trade_no = load_index(&env.store, &format!("{PREPAY_KEY_PREFIX}{prepay_id}"))
        .await
        .map_err(|e| crate::flows::store_unavailable(&e))?
        .ok_or_else(unknown)?;
    let mut order = load_order(&env.store, &out_trade_no)
        .await
        .map_err(|e| crate::flows::store_unavailable(&e))?
        .ok_or_else(unknown)?;
    let now = env.clock.now_unix();
    match order.trade_state {
        TradeState::Success => {
            return Err(ApiError::new(
                409,
                "order_paid",
                "this order is paid already",
            ));
        }
        TradeState::Closed => {
            return Err(ApiError::new(409, "order_closed", "this order was closed"));
        }
        TradeState::Notpay if now > order.expires_at => {
            return Err(ApiError::new(
                410,
                "prepay_expired",
                "this prepay_id has expired (2 hours, or the order's time_expire)",
            ));
        }
        TradeState::Notpay => {}
    }
    let total_fee = order.field("total_fee").parse::<u64>().unwrap_or(0);
    if !success {
        order.failed_payments = order.failed_payments.saturating_add(1);
        save_order(&env.store, &order)
            .await
            .map_err(|e| crate::flows::store_unavailable(&e))?;
        return Ok(Paid {
            out_trade_no,
            prepay_id,
            result: "FAIL",
            trade_state: TradeState::Notpay.as_str(),
            transaction_id: None,
            time_end: None,
            total_fee,
            notified: false,
            deliveries: Vec::new(),
        });
    }

    let transaction_id = new_transaction_id(now, env.nonce.random16());
    order.trade_state = TradeState::Success;
    order.transaction_id = Some(transaction_id.clone());
    order.time_end = Some(beijing_compact(now));
    // The index first, so an orderquery by transaction_id finds a paid order once it is paid.
    env.store
        .set(&transaction_key(&transaction_id), out_trade_no.as_bytes())
        .await
        .map_err(|e| crate::flows::store_unavailable(&e))?;
    save_order(&env.store, &order)
        .await
        .map_err(|e| crate::flows::store_unavailable(&e))?;

    let notification = notification_request(&order, &nonce(&env.nonce), now);
    let burst = faults::take_duplicates(&env.store)
        .await
        .clamp(1, MAX_BURST);
    let deliveries = deliver(&env.transport, sleep, &notification, burst).await;
    Ok(Paid {
        out_trade_no,
        prepay_id,
        result: "SUCCESS",
        trade_state: TradeState::Success.as_str(),
        transaction_id: Some(transaction_id),
        time_end: order.time_end.clone(),
        total_fee,
        notified: deliveries.iter().any(|d| d.acknowledged),
        deliveries,
    })
}

/// A 28-digit transaction id like WeChat's: `42000`, the Beijing date, 15 random digits.
pub fn new_transaction_id(now: u64, random: [u8; 16]) -> String {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&random[..8]);
    let digits = u64::from_be_bytes(bytes) % 1_000_000_000_000_000;
    format!("42000{}{digits:015}", &beijing_compact(now)[..8])
}

/// The signed payment notification of a paid trade (PROTOCOL.md "Payment notification"):
/// appid, mch_id, nonce_str, openid, is_subscribe, result_code, return_code, total_fee,
/// cash_fee, fee_type, bank_type, trade_type, transaction_id, out_trade_no, attach (if any),
/// time_end; signed with the unified order's `sign_type` (HMAC-SHA256 also says so in
/// `sign_type`).
pub fn notification(order: &SimOrder, nonce_str: &str) -> String {
    let mut p = Params::new();
    p.insert("return_code".into(), "SUCCESS".into());
    p.insert("result_code".into(), "SUCCESS".into());
    p.insert("appid".into(), SIM_APPID.into());
    p.insert("mch_id".into(), SIM_MCH_ID.into());
    p.insert("nonce_str".into(), nonce_str.into());
    for (name, value) in paid_fields(order) {
        if !value.is_empty() {
            p.insert(name.into(), value);
        }
    }
    let sign_type = order.sign_type.parse().unwrap_or(SignType::Md5);
    sign_in_place(&mut p, &sim_key(), sign_type);
    xml::write(&p)
}

/// The APIv3 payment notification of a paid trade (PROTOCOL.md "APIv3"): the transaction
/// encrypted with the APIv3 key (AAD `transaction`), in WeChat's envelope, signed with the
/// simulator's WeChat Pay key in the `Wechatpay-*` headers.
pub fn notification_v3(order: &SimOrder, nonce_str: &str, now: u64) -> (String, SignatureHeaders) {
    let transaction = merchant_api_v3::transaction_json(order);
    // The 12-byte AEAD nonce: fresh per notification, as WeChat's.
    let aead_nonce = &nonce_str[..crate::v3::aead::NONCE_LEN];
    let id = format!("EV-{}", order.transaction_id.clone().unwrap_or_default());
    let envelope = crate::v3::notify::payment_envelope(
        &crate::secret::Secret::new(SIM_APIV3_KEY),
        aead_nonce,
        &id,
        &crate::time::rfc3339_beijing(now),
        &transaction,
    )
    .unwrap_or_default();
    let headers = merchant_api_v3::sign_message(now, nonce_str, envelope.as_bytes());
    (envelope, headers)
}

/// The notification of a paid trade as it is POSTed to its `notify_url`: APIv3 JSON for an
/// order made through APIv3, else the APIv2 XML ([`notification`]).
pub fn notification_request(order: &SimOrder, nonce_str: &str, now: u64) -> OutboundRequest {
    let url = order.field("notify_url").to_owned();
    if order.sign_type == crate::pay_params::RSA_SIGN_TYPE {
        let (body, signature) = notification_v3(order, nonce_str, now);
        let mut headers = vec![("Content-Type", "application/json".to_owned())];
        headers.extend(signature.to_headers());
        return OutboundRequest {
            method: "POST",
            url,
            headers,
            body: body.into_bytes(),
        };
    }
    OutboundRequest {
        method: "POST",
        url,
        headers: vec![("Content-Type", "text/xml".to_owned())],
        body: notification(order, nonce_str).into_bytes(),
    }
}

/// Whether a notify answer tells WeChat to stop: for APIv2 HTTP 200 and `return_code`
/// SUCCESS, for APIv3 (`v3`) any 2xx.
pub fn acknowledged(v3: bool, status: u16, body: &[u8]) -> bool {
    if v3 {
        return (200..300).contains(&status);
    }
    status == 200
        && xml::read(body)
            .ok()
            .and_then(|p| p.get("return_code").cloned())
            .is_some_and(|c| c == "SUCCESS")
}

/// Delivers `request`: first `burst` concurrent copies, then one copy after each of
/// [`RETRY_DELAYS`] until one is acknowledged.
pub async fn deliver<T: Transport, P: Sleep>(
    transport: &T,
    sleep: &P,
    request: &OutboundRequest,
    burst: usize,
) -> Vec<Delivery> {
    let v3 = request.header("wechatpay-signature").is_some();
    let mut deliveries = Vec::new();
    let copies = (0..burst.max(1)).map(|_| transport.send(request));
    let results = join_all(copies.collect()).await;
    for (i, result) in results.into_iter().enumerate() {
        deliveries.push(delivery(v3, 1, i + 1, result));
    }
    for (round, delay) in RETRY_DELAYS.iter().enumerate() {
        if deliveries.iter().any(|d| d.acknowledged) {
            break;
        }
        sleep.sleep(*delay).await;
        let result = transport.send(request).await;
        deliveries.push(delivery(v3, round + 2, 1, result));
    }
    deliveries
}

fn delivery(
    v3: bool,
    round: usize,
    copy: usize,
    result: Result<crate::flows::HttpReply, crate::flows::TransportError>,
) -> Delivery {
    match result {
        Ok(reply) => Delivery {
            round,
            copy,
            status: Some(reply.status),
            body: Some(
                cut_to_bytes(&String::from_utf8_lossy(&reply.body), MAX_QUOTED_BODY).to_owned(),
            ),
            error: None,
            acknowledged: acknowledged(v3, reply.status, &reply.body),
        },
        Err(e) => Delivery {
            round,
            copy,
            status: None,
            body: None,
            error: Some(e.to_string()),
            acknowledged: false,
        },
    }
}

/// Polls every future until all are ready (a minimal `join_all`: the core takes no async
/// runtime dependency). The outputs are in the input order.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(v) => *output = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}
