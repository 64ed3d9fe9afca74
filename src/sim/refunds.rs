//! Refunds as the simulator plays them (PROTOCOL.md "Refunds"), shared by both API versions:
//! the refund record WeChat keeps, WeChat's rules for a new refund, and
//! `POST /_sim/refund` `{"refund_no", "result": "SUCCESS" | "CLOSED" | "ABNORMAL"}`, which
//! settles a refund and delivers WeChat's refund notification.
//!
//! A refund is asked for through APIv2 (`/secapi/pay/refund`, [`super::merchant_api`]) or APIv3
//! (`POST /v3/refund/domestic/refunds`, [`super::merchant_api_v3`]); both check it with
//! [`ask`]:
//! - the same `out_refund_no` again, for the same order and amount, answers the refund it made
//!   (WeChat refunds once per number); with another order or amount it is refused;
//! - a new number needs a paid trade ([`TradeState::Success`]) of that `total_fee`, at least
//!   1 fen, the refunds not CLOSED plus this one within the paid total, fewer than
//!   [`MAX_REFUNDS_PER_ORDER`] refunds of the trade, the trade's last refund at least
//!   [`MIN_REFUND_SPACING_SECS`] old and the payment within [`REFUND_WINDOW_SECS`];
//! - then the `notenough` fault ([`super::faults`]) refuses it for an empty merchant balance
//!   (nothing is recorded: the same number may be sent again later).
//!
//! An accepted refund is PROCESSING until `POST /_sim/refund` settles it: SUCCESS (its
//! `success_time` now), CLOSED or ABNORMAL (APIv2's `CHANGE`). The notification goes to the
//! refund's `notify_url` (without one, to [`SIM_REFUND_NOTIFY_URL`], standing for the URL set
//! on the merchant platform), in the dialect of the API the refund was asked through: APIv2's
//! `<xml>` whose `req_info` is the refund encrypted with the API key (no `sign`), or APIv3's
//! signed, encrypted envelope with `event_type` `REFUND.SUCCESS` / `REFUND.CLOSED` /
//! `REFUND.ABNORMAL`. It is delivered like a payment notification (duplicate bursts, re-delivery
//! on [`super::user::RETRY_DELAYS`]: [`super::user::deliver`]); the answer lists every delivery
//! with what the app replied. A SUCCESS or CLOSED refund is final (409 `refund_settled`); an
//! ABNORMAL one may still be settled SUCCESS or CLOSED (the merchant acted on it).
//!
//! Simplifications: no client certificate is checked for APIv2 (the link is in-process); the
//! trade keeps `trade_state` SUCCESS after a refund (WeChat's orderquery says `REFUND`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::merchant_api::sim_key;
use super::user::{Delivery, MAX_BURST, deliver};
use super::{
    REFUND_ID_KEY_PREFIX, REFUND_KEY_PREFIX, SimConfig, SimOrder, Sleep, TRADE_REFUND_KEY_PREFIX,
    TradeState, faults, load_index, load_order, nonce, transaction_key,
};
use crate::config::{SIM_APIV3_KEY, SIM_APPID, SIM_MCH_ID, SIM_REFUND_NOTIFY_URL};
use crate::flows::{
    ApiError, Clock, Env, Nonce, OutboundRequest, Response, Store, StoreError, Transport,
    json_object,
};
use crate::money::Fen;
use crate::refund::{
    MAX_REFUNDS_PER_ORDER, MIN_REFUND_SPACING_SECS, REFUND_WINDOW_SECS, RefundStatus,
};
use crate::secret::Secret;
use crate::time::{beijing_compact, parse_beijing_compact, rfc3339, rfc3339_beijing};
use crate::v2::Params;

/// The route below `/_sim`.
pub const SETTLE: &str = "/refund";

/// Version of the stored [`SimRefund`] record.
pub const SIM_REFUND_VERSION: u32 = 1;

/// Which API a refund was asked through: the dialect of its notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RefundApi {
    V2,
    V3,
}

impl RefundApi {
    pub fn as_str(self) -> &'static str {
        match self {
            RefundApi::V2 => "v2",
            RefundApi::V3 => "v3",
        }
    }
}

/// What WeChat Pay knows about one refund, under `sim:refund:{out_refund_no}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimRefund {
    pub version: u32,
    pub out_refund_no: String,
    /// WeChat's refund id (29 digits).
    pub refund_id: String,
    pub out_trade_no: String,
    pub transaction_id: String,
    pub refund_fee: Fen,
    /// The trade's paid total.
    pub total_fee: Fen,
    pub status: RefundStatus,
    pub api: RefundApi,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds the money went back (SUCCESS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_time: Option<u64>,
}

impl SimRefund {
    /// APIv2's word for the status: `PROCESSING`, `SUCCESS`, `REFUNDCLOSE`, `CHANGE`.
    pub fn v2_status(&self) -> &'static str {
        match self.status {
            RefundStatus::Processing => "PROCESSING",
            RefundStatus::Success => "SUCCESS",
            RefundStatus::Closed => "REFUNDCLOSE",
            RefundStatus::Abnormal => "CHANGE",
        }
    }

    /// Whether `/_sim/refund` can no longer change it.
    pub fn is_final(&self) -> bool {
        matches!(self.status, RefundStatus::Success | RefundStatus::Closed)
    }
}

pub fn refund_key(out_refund_no: &str) -> String {
    format!("{REFUND_KEY_PREFIX}{out_refund_no}")
}

/// The prefix of a trade's refund index keys (an out_trade_no never contains `:`).
pub fn trade_refund_prefix(out_trade_no: &str) -> String {
    format!("{TRADE_REFUND_KEY_PREFIX}{out_trade_no}:")
}

pub fn refund_id_key(refund_id: &str) -> String {
    format!("{REFUND_ID_KEY_PREFIX}{refund_id}")
}

pub(super) async fn load_refund<S: Store>(
    store: &S,
    out_refund_no: &str,
) -> Result<Option<SimRefund>, StoreError> {
    match store.get(&refund_key(out_refund_no)).await? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError(format!("simulator refund record unreadable: {e}"))),
    }
}

async fn save_refund<S: Store>(store: &S, refund: &SimRefund) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(refund).map_err(|e| StoreError(e.to_string()))?;
    store.set(&refund_key(&refund.out_refund_no), &bytes).await
}

/// A trade's refunds, oldest first (an index key whose record is missing is skipped).
pub(super) async fn trade_refunds<S: Store>(
    store: &S,
    out_trade_no: &str,
) -> Result<Vec<SimRefund>, StoreError> {
    let prefix = trade_refund_prefix(out_trade_no);
    let mut refunds = Vec::new();
    for key in store.keys_with_prefix(&prefix).await? {
        let Some(no) = key.strip_prefix(&prefix) else {
            continue;
        };
        if let Some(refund) = load_refund(store, no).await?
            && refund.out_trade_no == out_trade_no
        {
            refunds.push(refund);
        }
    }
    refunds.sort_by(|a, b| (a.created_at, &a.out_refund_no).cmp(&(b.created_at, &b.out_refund_no)));
    Ok(refunds)
}

/// The out_refund_no of WeChat's `refund_id`.
pub(super) async fn refund_no_of_id<S: Store>(
    store: &S,
    refund_id: &str,
) -> Result<Option<String>, StoreError> {
    load_index(store, &refund_id_key(refund_id)).await
}

/// A 29-digit refund id like WeChat's: `50000`, the Beijing date, 16 random digits.
pub fn new_refund_id(now: u64, random: [u8; 16]) -> String {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&random[8..]);
    let digits = u64::from_be_bytes(bytes) % 10_000_000_000_000_000;
    format!("50000{}{digits:016}", &beijing_compact(now)[..8])
}

// ---- WeChat's rules for a refund ----------------------------------------------------------------

/// The trade a refund names: WeChat prefers `transaction_id` when both are given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TradeRef<'a> {
    TransactionId(&'a str),
    OutTradeNo(&'a str),
}

/// A refund as asked for (its fields' formats already checked).
#[derive(Debug, Clone, Copy)]
pub struct RefundAsk<'a> {
    pub trade: TradeRef<'a>,
    pub out_refund_no: &'a str,
    pub total_fee: Fen,
    pub refund_fee: Fen,
    pub reason: Option<&'a str>,
    pub notify_url: Option<&'a str>,
    pub api: RefundApi,
}

/// Why WeChat refuses a refund; each API answers it in its own words
/// ([`RefundRefused::v2`], [`RefundRefused::v3`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundRefused {
    /// No such trade (by out_trade_no or transaction_id).
    TradeNotFound {
        by_transaction_id: bool,
    },
    /// The trade is not paid.
    NotPaid(TradeState),
    /// `total_fee` is not the trade's paid total.
    TotalMismatch,
    /// The number was used for another order or amount.
    NumberReused,
    /// The refunds not CLOSED plus this one would exceed the paid total.
    OverRefund {
        paid: Fen,
        held: Fen,
        asked: Fen,
    },
    TooMany,
    /// The trade's last refund is less than a minute old.
    TooSoon,
    /// Paid more than a year ago.
    TooOld,
    /// The `notenough` fault: the merchant's balance cannot pay it.
    NotEnough,
    /// The simulator's store failed.
    Unavailable,
}

impl RefundRefused {
    /// APIv2's `err_code` and `err_code_des`.
    pub fn v2(&self) -> (&'static str, String) {
        match self {
            RefundRefused::TradeNotFound {
                by_transaction_id: true,
            } => ("INVALID_TRANSACTIONID", "无效transaction_id".into()),
            RefundRefused::TradeNotFound { .. } => ("ORDERNOTEXIST", "订单不存在".into()),
            RefundRefused::NotPaid(state) => (
                "TRADE_STATE_ERROR",
                format!("订单状态错误 (the trade is {})", state.as_str()),
            ),
            RefundRefused::TotalMismatch => (
                "INVALID_REQUEST",
                "订单金额与支付金额不一致 (total_fee is not the paid total)".into(),
            ),
            RefundRefused::NumberReused => (
                "INVALID_REQUEST",
                "订单金额或退款金额与之前请求不一致，请核实后再试 (out_refund_no was used for \
                 another order or amount)"
                    .into(),
            ),
            RefundRefused::OverRefund { paid, held, asked } => (
                "INVALID_REQUEST",
                format!(
                    "累计退款金额大于支付金额 ({paid} fen paid, {held} fen refunded or being \
                     refunded, {asked} fen asked)"
                ),
            ),
            RefundRefused::TooMany => (
                "INVALID_REQUEST",
                format!("退款次数超过限制 (at most {MAX_REFUNDS_PER_ORDER} refunds per order)"),
            ),
            RefundRefused::TooSoon => (
                "FREQUENCY_LIMITED",
                "频率限制 (refunds of one order must be 1 minute apart)".into(),
            ),
            RefundRefused::TooOld => ("TRADE_OVERDUE", "订单已经超过退款期限".into()),
            RefundRefused::NotEnough => ("NOTENOUGH", "基本账户余额不足，请充值后重新发起".into()),
            RefundRefused::Unavailable => ("SYSTEMERROR", "系统错误".into()),
        }
    }

    /// APIv3's HTTP status, `code` and `message`.
    pub fn v3(&self) -> (u16, &'static str, String) {
        let (_, detail) = self.v2();
        match self {
            RefundRefused::TradeNotFound { .. } => {
                (404, "RESOURCE_NOT_EXISTS", "订单不存在".into())
            }
            RefundRefused::TooSoon => (429, "FREQUENCY_LIMITED", detail),
            RefundRefused::NotEnough => (403, "NOT_ENOUGH", "余额不足".into()),
            RefundRefused::Unavailable => (500, "SYSTEM_ERROR", "系统错误".into()),
            _ => (400, "INVALID_REQUEST", detail),
        }
    }
}

/// Checks a refund as WeChat does and, for a new number, records it PROCESSING: the refund
/// WeChat answers with (a number already used for this order and amount answers its refund as
/// it stands).
pub async fn ask<S: Store, N: Nonce>(
    store: &S,
    nonce_source: &N,
    now: u64,
    ask: &RefundAsk<'_>,
) -> Result<SimRefund, RefundRefused> {
    let unavailable = |_: StoreError| RefundRefused::Unavailable;
    let (out_trade_no, by_transaction_id) = match ask.trade {
        TradeRef::OutTradeNo(no) => (Some(no.to_owned()), false),
        TradeRef::TransactionId(id) => (
            load_index(store, &transaction_key(id))
                .await
                .map_err(unavailable)?,
            true,
        ),
    };
    let not_found = RefundRefused::TradeNotFound { by_transaction_id };
    let order = match out_trade_no {
        None => return Err(not_found),
        Some(no) => load_order(store, &no)
            .await
            .map_err(unavailable)?
            .ok_or(not_found)?,
    };
    if let Some(existing) = load_refund(store, ask.out_refund_no)
        .await
        .map_err(unavailable)?
    {
        return if existing.out_trade_no == order.out_trade_no
            && existing.refund_fee == ask.refund_fee
        {
            Ok(existing)
        } else {
            Err(RefundRefused::NumberReused)
        };
    }
    check_new(store, &order, ask, now).await?;
    if faults::take_notenough(store).await {
        return Err(RefundRefused::NotEnough);
    }
    let refund = SimRefund {
        version: SIM_REFUND_VERSION,
        out_refund_no: ask.out_refund_no.to_owned(),
        refund_id: new_refund_id(now, nonce_source.random16()),
        out_trade_no: order.out_trade_no.clone(),
        transaction_id: order.transaction_id.clone().unwrap_or_default(),
        refund_fee: ask.refund_fee,
        total_fee: ask.total_fee,
        status: RefundStatus::Processing,
        api: ask.api,
        notify_url: ask.notify_url.map(str::to_owned),
        reason: ask.reason.map(str::to_owned),
        created_at: now,
        success_time: None,
    };
    // The indexes first, so that a stored refund is always found from its trade and its id.
    let index = format!(
        "{}{}",
        trade_refund_prefix(&order.out_trade_no),
        refund.out_refund_no
    );
    store
        .set(&index, refund.out_refund_no.as_bytes())
        .await
        .map_err(unavailable)?;
    store
        .set(
            &refund_id_key(&refund.refund_id),
            refund.out_refund_no.as_bytes(),
        )
        .await
        .map_err(unavailable)?;
    save_refund(store, &refund).await.map_err(unavailable)?;
    Ok(refund)
}

/// WeChat's rules for a new refund number of `order`.
async fn check_new<S: Store>(
    store: &S,
    order: &SimOrder,
    ask: &RefundAsk<'_>,
    now: u64,
) -> Result<(), RefundRefused> {
    if order.trade_state != TradeState::Success {
        return Err(RefundRefused::NotPaid(order.trade_state));
    }
    let paid = order.field("total_fee").parse::<Fen>().unwrap_or(Fen::ZERO);
    if ask.total_fee != paid {
        return Err(RefundRefused::TotalMismatch);
    }
    let paid_at = order
        .time_end
        .as_deref()
        .and_then(|t| parse_beijing_compact(t).ok());
    if paid_at.is_some_and(|at| now.saturating_sub(at) > REFUND_WINDOW_SECS) {
        return Err(RefundRefused::TooOld);
    }
    let refunds = trade_refunds(store, &order.out_trade_no)
        .await
        .map_err(|_| RefundRefused::Unavailable)?;
    if refunds.len() >= MAX_REFUNDS_PER_ORDER {
        return Err(RefundRefused::TooMany);
    }
    let held = Fen(refunds
        .iter()
        .filter(|r| r.status.holds_money())
        .map(|r| r.refund_fee.0)
        .sum());
    if held.0.saturating_add(ask.refund_fee.0) > paid.0 {
        return Err(RefundRefused::OverRefund {
            paid,
            held,
            asked: ask.refund_fee,
        });
    }
    if refunds
        .iter()
        .any(|r| now.saturating_sub(r.created_at) < MIN_REFUND_SPACING_SECS)
    {
        return Err(RefundRefused::TooSoon);
    }
    Ok(())
}

// ---- What WeChat says about a refund ------------------------------------------------------------

/// `yyyy-MM-dd HH:mm:ss`, Beijing time (APIv2's refund times).
pub fn beijing_spaced(unix_secs: u64) -> String {
    let c = beijing_compact(unix_secs);
    format!(
        "{}-{}-{} {}:{}:{}",
        &c[..4],
        &c[4..6],
        &c[6..8],
        &c[8..10],
        &c[10..12],
        &c[12..14]
    )
}

/// The refund as APIv3 describes it: a refund reply or query answer (the status named
/// `status`), or a notification's plaintext (`notification`: named `refund_status`, with the
/// merchant's `mchid`).
pub fn refund_json(refund: &SimRefund, notification: bool) -> String {
    let mut r = serde_json::json!({
        "refund_id": refund.refund_id,
        "out_refund_no": refund.out_refund_no,
        "transaction_id": refund.transaction_id,
        "out_trade_no": refund.out_trade_no,
        "user_received_account": "支付用户零钱",
        "amount": {
            "total": refund.total_fee.0,
            "refund": refund.refund_fee.0,
            "payer_total": refund.total_fee.0,
            "payer_refund": refund.refund_fee.0,
        },
    });
    if notification {
        r["mchid"] = SIM_MCH_ID.into();
        r["refund_status"] = refund.status.as_str().into();
    } else {
        r["channel"] = "ORIGINAL".into();
        r["funds_account"] = "AVAILABLE".into();
        r["create_time"] = rfc3339_beijing(refund.created_at).into();
        r["status"] = refund.status.as_str().into();
        r["amount"]["settlement_refund"] = refund.refund_fee.0.into();
        r["amount"]["settlement_total"] = refund.total_fee.0.into();
        r["amount"]["discount_refund"] = 0.into();
        r["amount"]["refund_fee"] = 0.into();
        r["amount"]["currency"] = "CNY".into();
    }
    if let Some(at) = refund.success_time {
        r["success_time"] = rfc3339_beijing(at).into();
    }
    r.to_string()
}

/// The refund's fields of APIv2's refund notification (`req_info`'s `<root>`).
pub fn v2_notification_fields(refund: &SimRefund) -> Params {
    let mut p = Params::new();
    for (name, value) in [
        ("out_refund_no", refund.out_refund_no.clone()),
        ("out_trade_no", refund.out_trade_no.clone()),
        ("transaction_id", refund.transaction_id.clone()),
        ("refund_id", refund.refund_id.clone()),
        ("refund_fee", refund.refund_fee.to_string()),
        ("settlement_refund_fee", refund.refund_fee.to_string()),
        ("total_fee", refund.total_fee.to_string()),
        ("settlement_total_fee", refund.total_fee.to_string()),
        ("refund_status", refund.v2_status().to_owned()),
        (
            "success_time",
            refund.success_time.map(beijing_spaced).unwrap_or_default(),
        ),
        ("refund_recv_accout", "支付用户零钱".to_owned()),
        ("refund_account", "REFUND_SOURCE_UNSETTLED_FUNDS".to_owned()),
        ("refund_request_source", "API".to_owned()),
    ] {
        if !value.is_empty() {
            p.insert(name.into(), value);
        }
    }
    p
}

/// WeChat's notification of a settled refund, as POSTed to its notify URL, in the dialect of the
/// API it was asked through (see the module documentation).
pub fn notification_request(refund: &SimRefund, nonce_str: &str, now: u64) -> OutboundRequest {
    let url = refund
        .notify_url
        .clone()
        .unwrap_or_else(|| SIM_REFUND_NOTIFY_URL.to_owned());
    match refund.api {
        RefundApi::V2 => OutboundRequest {
            method: "POST",
            url,
            headers: vec![("Content-Type", "text/xml".to_owned())],
            body: crate::v2::refund::refund_notification(
                SIM_APPID,
                SIM_MCH_ID,
                nonce_str,
                &v2_notification_fields(refund),
                &sim_key(),
            )
            .into_bytes(),
        },
        RefundApi::V3 => {
            let event_type = match refund.status {
                RefundStatus::Success => "REFUND.SUCCESS",
                RefundStatus::Closed => "REFUND.CLOSED",
                _ => "REFUND.ABNORMAL",
            };
            // The 12-byte AEAD nonce: fresh per notification, as WeChat's.
            let aead_nonce = &nonce_str[..crate::v3::aead::NONCE_LEN];
            let envelope = crate::v3::refund::refund_envelope(
                &Secret::new(SIM_APIV3_KEY),
                aead_nonce,
                &format!("EV-{}-{}", refund.refund_id, refund.status),
                &rfc3339_beijing(now),
                event_type,
                &refund_json(refund, true),
            )
            .unwrap_or_default();
            let signature =
                super::merchant_api_v3::sign_message(now, nonce_str, envelope.as_bytes());
            let mut headers = vec![("Content-Type", "application/json".to_owned())];
            headers.extend(signature.to_headers());
            OutboundRequest {
                method: "POST",
                url,
                headers,
                body: envelope.into_bytes(),
            }
        }
    }
}

// ---- POST /_sim/refund --------------------------------------------------------------------------

/// The answer of `POST /_sim/refund`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Settled {
    pub refund_no: String,
    pub refund_id: String,
    pub out_trade_no: String,
    /// `v2` or `v3`: the API the refund was asked through, the notification's dialect.
    pub api: &'static str,
    /// The refund's status now (APIv3's words).
    pub status: RefundStatus,
    pub refund_fee: Fen,
    pub total_fee: Fen,
    /// RFC 3339, for SUCCESS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
    /// Where the notification went.
    pub notify_url: String,
    /// Whether the app acknowledged the notification.
    pub notified: bool,
    pub deliveries: Vec<Delivery>,
}

/// Reads `{"refund_no", "result"?}`.
fn parse_input(body: &[u8]) -> Result<(String, RefundStatus), ApiError> {
    let object = json_object(body)?;
    let refund_no = match object.get("refund_no") {
        Some(Value::String(no)) if crate::refund::valid_refund_no(no) => no.clone(),
        _ => {
            return Err(ApiError::new(
                400,
                "invalid_refund_no",
                "refund_no is required: the out_refund_no of a refund asked of the simulator",
            ));
        }
    };
    let result = match object.get("result") {
        None | Some(Value::Null) => RefundStatus::Success,
        Some(Value::String(r)) if r == "SUCCESS" => RefundStatus::Success,
        Some(Value::String(r)) if r == "CLOSED" => RefundStatus::Closed,
        Some(Value::String(r)) if r == "ABNORMAL" => RefundStatus::Abnormal,
        Some(_) => {
            return Err(ApiError::new(
                400,
                "invalid_result",
                "result must be \"SUCCESS\", \"CLOSED\" or \"ABNORMAL\"",
            ));
        }
    };
    Ok((refund_no, result))
}

/// `POST /_sim/refund`.
pub async fn settle<S, T, C, N, P>(
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
    match settle_inner(env, sleep, body).await {
        Ok(settled) => Response::json(200, &settled),
        Err(e) => e.into(),
    }
}

async fn settle_inner<S, T, C, N, P>(
    env: &Env<S, T, C, N, SimConfig>,
    sleep: &P,
    body: &[u8],
) -> Result<Settled, ApiError>
where
    S: Store,
    T: Transport,
    C: Clock,
    N: Nonce,
    P: Sleep,
{
    let (refund_no, result) = parse_input(body)?;
    let unavailable = |e: StoreError| crate::flows::store_unavailable(&e);
    let mut refund = load_refund(&env.store, &refund_no)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| {
            ApiError::new(
                404,
                "unknown_refund_no",
                "no refund with this refund_no was asked of the simulator",
            )
        })?;
    if refund.is_final() || refund.status == result {
        return Err(ApiError::new(
            409,
            "refund_settled",
            format!(
                "this refund is {} already{}",
                refund.status,
                if refund.is_final() {
                    ", which is final"
                } else {
                    ""
                }
            ),
        ));
    }
    let now = env.clock.now_unix();
    refund.status = result;
    refund.success_time = (result == RefundStatus::Success).then_some(now);
    save_refund(&env.store, &refund)
        .await
        .map_err(unavailable)?;

    let notification = notification_request(&refund, &nonce(&env.nonce), now);
    let burst = faults::take_duplicates(&env.store)
        .await
        .clamp(1, MAX_BURST);
    let deliveries = deliver(&env.transport, sleep, &notification, burst).await;
    Ok(Settled {
        refund_no,
        refund_id: refund.refund_id,
        out_trade_no: refund.out_trade_no,
        api: refund.api.as_str(),
        status: refund.status,
        refund_fee: refund.refund_fee,
        total_fee: refund.total_fee,
        success_time: refund.success_time.map(rfc3339),
        notify_url: notification.url,
        notified: deliveries.iter().any(|d| d.acknowledged),
        deliveries,
    })
}
