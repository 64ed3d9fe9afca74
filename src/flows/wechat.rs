//! Calling WeChat Pay through the [`Transport`] port, and applying an orderquery answer to an
//! order (shared by `GET /api/orders/{no}` and reconcile).

use std::fmt;

use super::{Nonce, Transport, TransportError, fresh_nonce};
use crate::config::MerchantConfig;
use crate::order::{Event, Order, Trigger};
use crate::time::{parse_beijing_compact, rfc3339};
use crate::v2::api::{self, ApiRequest, ErrCode, OrderQuery, ReplyError, TradeState};

/// Why a call to WeChat Pay gave no usable reply body. Carries no URL and no request data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CallError {
    Timeout,
    Unreachable,
    Denied,
    /// A reply with a non-2xx HTTP status.
    HttpStatus(u16),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Timeout => f.write_str("WeChat Pay did not answer in time"),
            CallError::Unreachable => f.write_str("WeChat Pay could not be reached"),
            CallError::Denied => f.write_str(
                "the host denied the outbound request to WeChat Pay (check allowed_outbound_hosts)",
            ),
            CallError::HttpStatus(s) => write!(f, "WeChat Pay answered HTTP {s}"),
        }
    }
}

impl From<&TransportError> for CallError {
    fn from(e: &TransportError) -> Self {
        match e {
            TransportError::Timeout => CallError::Timeout,
            TransportError::Denied => CallError::Denied,
            TransportError::Unreachable(_) | TransportError::Other(_) => CallError::Unreachable,
        }
    }
}

/// Sends a signed request once and returns the reply body of a 2xx answer.
pub(crate) async fn post<T: Transport>(
    transport: &T,
    merchant: &MerchantConfig,
    request: &ApiRequest,
) -> Result<Vec<u8>, CallError> {
    match transport
        .post_xml(&merchant.url(request.path), request.body.clone())
        .await
    {
        Ok(reply) if (200..300).contains(&reply.status) => Ok(reply.body),
        Ok(reply) => Err(CallError::HttpStatus(reply.status)),
        Err(e) => Err(CallError::from(&e)),
    }
}

/// A failed orderquery / closeorder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WechatError {
    Call(CallError),
    Reply(ReplyError),
    /// The request could not be built (a stored order number WeChat would refuse).
    Request(api::RequestError),
    /// A verified reply about another order.
    WrongOrder,
}

impl fmt::Display for WechatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WechatError::Call(e) => e.fmt(f),
            WechatError::Reply(e) => e.fmt(f),
            WechatError::Request(e) => e.fmt(f),
            WechatError::WrongOrder => f.write_str("WeChat Pay answered about another order"),
        }
    }
}

impl WechatError {
    /// The err_code of a refusal, if that is what it was.
    pub(crate) fn err_code(&self) -> Option<&ErrCode> {
        match self {
            WechatError::Reply(ReplyError::Refused { err_code, .. }) => Some(err_code),
            _ => None,
        }
    }
}

/// `POST /pay/orderquery` for `order_no` (one attempt).
pub(crate) async fn query<T: Transport, N: Nonce>(
    transport: &T,
    nonce: &N,
    merchant: &MerchantConfig,
    order_no: &str,
) -> Result<OrderQuery, WechatError> {
    let request = api::order_query_request(merchant, order_no, &fresh_nonce(nonce))
        .map_err(WechatError::Request)?;
    let body = post(transport, merchant, &request)
        .await
        .map_err(WechatError::Call)?;
    let answer = api::parse_order_query_reply(merchant, &body).map_err(WechatError::Reply)?;
    if answer.out_trade_no != order_no {
        return Err(WechatError::WrongOrder);
    }
    Ok(answer)
}

/// `POST /pay/closeorder` for `order_no` (one attempt).
pub(crate) async fn close<T: Transport, N: Nonce>(
    transport: &T,
    nonce: &N,
    merchant: &MerchantConfig,
    order_no: &str,
) -> Result<(), WechatError> {
    let request = api::close_order_request(merchant, order_no, &fresh_nonce(nonce))
        .map_err(WechatError::Request)?;
    let body = post(transport, merchant, &request)
        .await
        .map_err(WechatError::Call)?;
    api::parse_close_order_reply(merchant, &body).map_err(WechatError::Reply)
}

/// Records an alert unless the same reason is already on the order. Whether it was added.
pub(crate) fn alert_once(order: &mut Order, at: &str, reason: &str) -> bool {
    let known = order
        .events
        .iter()
        .any(|e| matches!(e, Event::Alert { reason: r, .. } if r == reason));
    if !known {
        order.record_alert(at, reason);
    }
    !known
}

/// What an orderquery answer did to an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum QueryEffect {
    /// Now PAID.
    Paid,
    /// Now CLOSED.
    Closed,
    /// Not moved; an alert was recorded (e.g. amount mismatch).
    Alerted,
    /// Nothing to change (NOTPAY, USERPAYING, or already in the reported state).
    Unchanged,
}

/// Applies a verified orderquery answer (whose out_trade_no is this order's). Payment events
/// are dated from WeChat's `time_end`, like the notification's, so both paths record the same
/// `paid_at`; other events are dated `now`.
pub(crate) fn apply_query(order: &mut Order, answer: &OrderQuery, now: u64) -> QueryEffect {
    let now_at = rfc3339(now);
    match (&answer.trade_state, &answer.paid) {
        (TradeState::Success | TradeState::Refund, Some(paid)) => {
            if paid.total_fee != order.total_fee {
                let reason = format!(
                    "orderquery reports total_fee {} paid, but the order total is {}; not \
                     marked paid",
                    paid.total_fee, order.total_fee
                );
                alert_once(order, &now_at, &reason);
                return QueryEffect::Alerted;
            }
            let at = parse_beijing_compact(&paid.time_end)
                .map(rfc3339)
                .unwrap_or(now_at);
            let trigger = Trigger::PaymentConfirmed {
                transaction_id: paid.transaction_id.clone(),
            };
            let effect = match order.apply(trigger, &at) {
                Ok(_) => QueryEffect::Paid,
                Err(e)
                    if e.is_already_paid()
                        && order.transaction_id.as_ref() == Some(&paid.transaction_id) =>
                {
                    QueryEffect::Unchanged
                }
                Err(e) => {
                    alert_once(order, &at, &format!("orderquery: {e}"));
                    return QueryEffect::Alerted;
                }
            };
            if answer.trade_state == TradeState::Refund {
                alert_once(order, &at, "orderquery reports the trade as REFUND");
            }
            effect
        }
        (TradeState::Closed | TradeState::Revoked, _) => {
            let state = if answer.trade_state == TradeState::Closed {
                "CLOSED"
            } else {
                "REVOKED"
            };
            let trigger = Trigger::ClosedAtWechat {
                reason: format!("orderquery trade_state {state}"),
            };
            match order.apply(trigger, &now_at) {
                Ok(_) => QueryEffect::Closed,
                Err(_) => QueryEffect::Unchanged,
            }
        }
        _ => QueryEffect::Unchanged,
    }
}
