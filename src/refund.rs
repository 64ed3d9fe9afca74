//! Refunds (docs/ARCHITECTURE.md §10, PROTOCOL.md "Refunds"), the same for both API versions: a refund as
//! the app keeps it beside its order, the rules checked before WeChat is asked, and what WeChat
//! reports about a refund (a notification or a query), read by `v2::refund` / `v3::refund`.
//!
//! The refund number (`out_refund_no`) is the idempotency key: WeChat refunds once per number
//! however often it is sent, so a refund is recorded with its number before WeChat hears of
//! it, and a retry sends the same number and amount.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::money::Fen;
use crate::order::{Order, Status};
use crate::time::rfc3339;

/// WeChat refunds an order at most this many times.
pub const MAX_REFUNDS_PER_ORDER: usize = 50;
/// An order paid longer ago than this cannot be refunded (one year).
pub const REFUND_WINDOW_SECS: u64 = 365 * 24 * 3600;
/// Two refunds of one order must be at least this far apart.
pub const MIN_REFUND_SPACING_SECS: u64 = 60;
/// `out_refund_no`: at most this many characters of `[0-9A-Za-z_-|*@]`.
pub const MAX_REFUND_NO_LEN: usize = 64;
/// The refund reason WeChat shows the user: at most this many characters.
pub const MAX_REASON_CHARS: usize = 80;

/// Where a refund stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RefundStatus {
    /// Asked for; WeChat has not said how it ended.
    Processing,
    /// The money went back.
    Success,
    /// WeChat closed it without refunding.
    Closed,
    /// It needs the merchant's action (APIv2 `CHANGE`, APIv3 `ABNORMAL`: e.g. the user's card
    /// was closed).
    Abnormal,
}

impl RefundStatus {
    /// WeChat's word for it, APIv2's (`SUCCESS`, `REFUNDCLOSE`, `PROCESSING`, `CHANGE`) or
    /// APIv3's (`SUCCESS`, `CLOSED`, `PROCESSING`, `ABNORMAL`).
    pub fn parse(status: &str) -> Option<RefundStatus> {
        match status {
            "PROCESSING" => Some(RefundStatus::Processing),
            "SUCCESS" => Some(RefundStatus::Success),
            "CLOSED" | "REFUNDCLOSE" => Some(RefundStatus::Closed),
            "ABNORMAL" | "CHANGE" => Some(RefundStatus::Abnormal),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RefundStatus::Processing => "PROCESSING",
            RefundStatus::Success => "SUCCESS",
            RefundStatus::Closed => "CLOSED",
            RefundStatus::Abnormal => "ABNORMAL",
        }
    }

    /// Whether the refund's money is (or may still be) gone from the order: everything but a
    /// closed refund counts against the paid total.
    pub fn holds_money(self) -> bool {
        self != RefundStatus::Closed
    }
}

impl fmt::Display for RefundStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refund of an order, as asked for and as WeChat has reported it so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    /// Ours, WeChat's `out_refund_no`.
    pub refund_no: String,
    pub amount: Fen,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub status: RefundStatus,
    /// WeChat's refund id, once it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_id: Option<String>,
    /// Unix seconds.
    pub requested_at: u64,
    /// Unix seconds WeChat says the refund ended (SUCCESS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled_at: Option<u64>,
    /// Whether its request cleared it against the order's other refunds (so it may be sent to
    /// WeChat), or WeChat reported on it. An uncleared refund is still being checked, or its
    /// request stopped between recording and checking it; it holds its money all the same.
    pub cleared: bool,
    /// Every change: asked for (PROCESSING), then each status WeChat reported, by when this
    /// app learned it.
    pub events: Vec<RefundEvent>,
}

/// A change of a refund's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundEvent {
    pub status: RefundStatus,
    /// Unix seconds.
    pub at: u64,
}

/// A refund as the admin routes answer it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefundView {
    pub refund_no: String,
    pub amount: Fen,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub status: RefundStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refund_id: Option<String>,
    /// RFC 3339.
    pub requested_at: String,
    /// RFC 3339, once WeChat says the money went back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settled_at: Option<String>,
    /// `{"status", "at"}` (RFC 3339) for every change.
    pub events: Vec<serde_json::Value>,
}

impl From<&Refund> for RefundView {
    fn from(r: &Refund) -> Self {
        RefundView {
            refund_no: r.refund_no.clone(),
            amount: r.amount,
            reason: r.reason.clone(),
            status: r.status,
            refund_id: r.refund_id.clone(),
            requested_at: rfc3339(r.requested_at),
            settled_at: r.settled_at.map(rfc3339),
            events: r
                .events
                .iter()
                .map(|e| serde_json::json!({"status": e.status, "at": rfc3339(e.at)}))
                .collect(),
        }
    }
}

/// A refund as the user's order view shows it: amount, status, times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundBrief {
    pub amount: Fen,
    pub status: RefundStatus,
    /// RFC 3339.
    pub requested_at: String,
    /// RFC 3339, once the money went back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled_at: Option<String>,
}

impl From<&Refund> for RefundBrief {
    fn from(r: &Refund) -> Self {
        RefundBrief {
            amount: r.amount,
            status: r.status,
            requested_at: rfc3339(r.requested_at),
            settled_at: r.settled_at.map(rfc3339),
        }
    }
}

/// Whether `no` is a refund number WeChat accepts.
pub fn valid_refund_no(no: &str) -> bool {
    !no.is_empty()
        && no.len() <= MAX_REFUND_NO_LEN
        && no
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'|' | b'*' | b'@'))
}

/// The money refunds hold against an order: every refund not closed.
pub fn held_total(refunds: &[Refund]) -> Fen {
    Fen(refunds
        .iter()
        .filter(|r| r.status.holds_money())
        .map(|r| r.amount.0)
        .sum())
}

/// What has gone back to the user: the successful refunds.
pub fn refunded_total(refunds: &[Refund]) -> Fen {
    Fen(refunds
        .iter()
        .filter(|r| r.status == RefundStatus::Success)
        .map(|r| r.amount.0)
        .sum())
}

/// Whether the refunds have given the whole paid total back (the order shows `REFUNDED`).
pub fn fully_refunded(order: &Order, refunds: &[Refund]) -> bool {
    order.status == Status::Paid && refunded_total(refunds) >= order.total_fee
}

/// Why a refund is refused before WeChat is asked. Each names the problem; none quotes more
/// than the numbers involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefundRefusal {
    #[error("only a PAID order can be refunded; this one is {0}")]
    NotPaid(Status),
    #[error("a refund must be at least 1 fen")]
    ZeroAmount,
    #[error(
        "refunding {asked} fen would exceed the paid total: {paid} fen paid, {held} fen \
         already refunded or being refunded"
    )]
    OverPaid { paid: Fen, held: Fen, asked: Fen },
    #[error("an order can be refunded at most {MAX_REFUNDS_PER_ORDER} times")]
    TooMany,
    #[error("the order was paid more than a year ago; WeChat no longer refunds it")]
    TooOld,
    #[error("the order's last refund was asked for {ago} s ago; retry in a minute")]
    TooSoon { ago: u64 },
    #[error("refund_no must be 1-{MAX_REFUND_NO_LEN} characters of [0-9A-Za-z_-|*@]")]
    BadRefundNo,
    #[error("reason must be at most {MAX_REASON_CHARS} characters without emoji")]
    BadReason,
}

impl RefundRefusal {
    /// The HTTP status and error code the admin route answers it with.
    pub fn status_and_code(&self) -> (u16, &'static str) {
        match self {
            RefundRefusal::NotPaid(_) => (409, "not_paid"),
            RefundRefusal::ZeroAmount => (400, "invalid_amount"),
            RefundRefusal::OverPaid { .. } => (409, "refund_exceeds_paid"),
            RefundRefusal::TooMany => (409, "too_many_refunds"),
            RefundRefusal::TooOld => (409, "refund_window_closed"),
            RefundRefusal::TooSoon { .. } => (429, "refund_too_soon"),
            RefundRefusal::BadRefundNo => (400, "invalid_refund_no"),
            RefundRefusal::BadReason => (400, "invalid_reason"),
        }
    }
}

/// A new refund asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefundAsk<'a> {
    pub refund_no: &'a str,
    pub amount: Fen,
    pub reason: Option<&'a str>,
}

/// Checks a new refund against WeChat's rules before WeChat is asked: a PAID order, a paid
/// time within a year, at least 1 fen, the refunds not closed plus this one within the paid
/// total, at most [`MAX_REFUNDS_PER_ORDER`], the last one at least a minute old, and a number
/// and reason WeChat accepts. `refunds` are the order's refunds so far, `now` Unix seconds.
pub fn check_new_refund(
    order: &Order,
    refunds: &[Refund],
    ask: &RefundAsk<'_>,
    now: u64,
) -> Result<(), RefundRefusal> {
    if !valid_refund_no(ask.refund_no) {
        return Err(RefundRefusal::BadRefundNo);
    }
    if let Some(reason) = ask.reason
        && (reason.chars().count() > MAX_REASON_CHARS || reason.chars().any(|c| c.len_utf8() == 4))
    {
        return Err(RefundRefusal::BadReason);
    }
    if order.status != Status::Paid {
        return Err(RefundRefusal::NotPaid(order.status));
    }
    if ask.amount == Fen(0) {
        return Err(RefundRefusal::ZeroAmount);
    }
    let paid_at = order
        .paid_at
        .as_deref()
        .and_then(|t| crate::time::parse_rfc3339(t).ok());
    if paid_at.is_some_and(|at| now.saturating_sub(at) > REFUND_WINDOW_SECS) {
        return Err(RefundRefusal::TooOld);
    }
    if refunds.len() >= MAX_REFUNDS_PER_ORDER {
        return Err(RefundRefusal::TooMany);
    }
    let held = held_total(refunds);
    if held.0.saturating_add(ask.amount.0) > order.total_fee.0 {
        return Err(RefundRefusal::OverPaid {
            paid: order.total_fee,
            held,
            asked: ask.amount,
        });
    }
    if let Some(last) = refunds.iter().map(|r| r.requested_at).max() {
        let ago = now.saturating_sub(last);
        if ago < MIN_REFUND_SPACING_SECS {
            return Err(RefundRefusal::TooSoon { ago });
        }
    }
    Ok(())
}

/// What WeChat answered to a refund request: it took it (APIv2: always PROCESSING; APIv3 may
/// already say SUCCESS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundOutcomeReport {
    pub status: RefundStatus,
    pub refund_id: String,
    pub refund_fee: Fen,
    pub success_time: Option<u64>,
}

/// What WeChat says about a refund (a verified notification or query answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundReport {
    pub out_trade_no: String,
    pub refund_no: String,
    pub refund_id: String,
    pub status: RefundStatus,
    /// The refund's amount.
    pub refund_fee: Fen,
    /// The order's paid total, as WeChat knows it.
    pub total_fee: Fen,
    /// Unix seconds, for a successful refund.
    pub success_time: Option<u64>,
}

// ---- Storage (docs/RELIABILITY.md "Storage model") ------------------------------------------------
//
// As an order's payment, a refund's facts each have their own key, and nothing is written back:
//
// | key | fact | written by |
// |---|---|---|
// | `order:{no}:refund:{refund_no}` | the refund as asked for ([`RefundAsked`]) | the admin refund route, once, before WeChat is called |
// | `order:{no}:refund:{refund_no}:{STATUS}` | WeChat said the refund is `STATUS` ([`RefundOutcome`]) | the refund reply (PROCESSING), the refund notification, a refund query |
// | `order:{no}:refund:{refund_no}:CLEARED` | the refund fits beside every other refund its request saw after recording it; only now may it be sent | the admin refund route, once |
// | `order:{no}:refund:{refund_no}:REFUSED` | it did not fit ([`RefundRefused`]); it is never sent and holds nothing | the admin refund route, once |
// | `order:{no}:refunds` | the order has refunds (so that the user's view lists refund keys only then) | the admin refund route |
//
// Without compare-and-swap two requests can pass a check on what they read and both write. So
// a request records its refund first, then reads every refund of the order again and checks
// the rules against all of them: of two concurrent refunds, the one recorded later sees the
// other (its read follows both writes), so no set of sent refunds exceeds the paid total, and
// two refunds within a minute never both go out (both may be refused; the admin retries).
// Exactly one of CLEARED and REFUSED is written for a refund, by the request that recorded it;
// a retried request only re-sends a CLEARED one.

/// `order:{no}:refund:` — the prefix of an order's refund keys.
pub fn refund_prefix(order_no: &str) -> String {
    format!("{}:refund:", crate::order::order_key(order_no))
}

/// `order:{no}:refund:{refund_no}`: the refund as asked for.
pub fn asked_key(order_no: &str, refund_no: &str) -> String {
    format!("{}{refund_no}", refund_prefix(order_no))
}

/// `order:{no}:refund:{refund_no}:{STATUS}`: one key per status WeChat reported, each written
/// from WeChat's report alone (the same bytes from every source) and never rewritten.
pub fn outcome_key(order_no: &str, refund_no: &str, status: RefundStatus) -> String {
    format!("{}:{}", asked_key(order_no, refund_no), status.as_str())
}

/// `order:{no}:refund:{refund_no}:CLEARED`: the refund passed the rules after it was recorded.
pub fn cleared_key(order_no: &str, refund_no: &str) -> String {
    format!("{}:CLEARED", asked_key(order_no, refund_no))
}

/// `order:{no}:refund:{refund_no}:REFUSED`: the refund failed the rules after it was recorded
/// ([`RefundRefused`]).
pub fn refused_key(order_no: &str, refund_no: &str) -> String {
    format!("{}:REFUSED", asked_key(order_no, refund_no))
}

/// Why a recorded refund was refused before WeChat was asked (the refusal's message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRefused {
    pub message: String,
    /// Unix seconds.
    pub at: u64,
}

/// `order:{no}:refunds`: set once an order has a refund.
pub fn marker_key(order_no: &str) -> String {
    format!("{}:refunds", crate::order::order_key(order_no))
}

/// A refund as asked for, stored before WeChat hears of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundAsked {
    pub refund_no: String,
    pub amount: Fen,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Unix seconds.
    pub requested_at: u64,
}

/// What WeChat reported about a refund in one status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundOutcome {
    /// WeChat's refund id.
    pub refund_id: String,
    /// Unix seconds WeChat says it succeeded (SUCCESS only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_time: Option<u64>,
    /// Unix seconds this app learned it.
    #[serde(default)]
    pub recorded_at: u64,
}

impl RefundOutcome {
    /// The outcome a report records, learned at `now`.
    pub fn of(report: &RefundReport, now: u64) -> RefundOutcome {
        RefundOutcome {
            recorded_at: now,
            refund_id: report.refund_id.clone(),
            success_time: report
                .success_time
                .filter(|_| report.status == RefundStatus::Success),
        }
    }
}

/// How strongly a status settles a refund: a refund shows the strongest it has a fact for
/// (an ABNORMAL refund may still succeed once the merchant acts; SUCCESS and CLOSED are final).
fn rank(status: RefundStatus) -> u8 {
    match status {
        RefundStatus::Processing => 0,
        RefundStatus::Abnormal => 1,
        RefundStatus::Closed => 2,
        RefundStatus::Success => 3,
    }
}

/// An order's refunds from its refund keys (`(key, bytes)` pairs under [`refund_prefix`]):
/// each asked refund with the strongest status it has a fact for, sorted by when it was asked.
/// A refund refused before WeChat was asked is not one. An unreadable record is skipped (and
/// reported by the caller's other reads).
pub fn refunds_from(order_no: &str, entries: &[(String, Vec<u8>)]) -> Vec<Refund> {
    let has = |key: String| entries.iter().any(|(k, _)| *k == key);
    let prefix = refund_prefix(order_no);
    let mut refunds: Vec<Refund> = entries
        .iter()
        .filter(|(key, _)| {
            key.strip_prefix(&prefix)
                .is_some_and(|rest| !rest.contains(':'))
        })
        .filter_map(|(_, bytes)| serde_json::from_slice::<RefundAsked>(bytes).ok())
        .map(|asked| Refund {
            refund_no: asked.refund_no,
            amount: asked.amount,
            reason: asked.reason,
            status: RefundStatus::Processing,
            refund_id: None,
            requested_at: asked.requested_at,
            settled_at: None,
            cleared: false,
            events: vec![RefundEvent {
                status: RefundStatus::Processing,
                at: asked.requested_at,
            }],
        })
        .collect();
    for refund in &mut refunds {
        refund.cleared = has(cleared_key(order_no, &refund.refund_no));
        for status in [
            RefundStatus::Processing,
            RefundStatus::Abnormal,
            RefundStatus::Closed,
            RefundStatus::Success,
        ] {
            let key = outcome_key(order_no, &refund.refund_no, status);
            let Some(outcome) = entries
                .iter()
                .find(|(k, _)| *k == key)
                .and_then(|(_, b)| serde_json::from_slice::<RefundOutcome>(b).ok())
            else {
                continue;
            };
            refund.cleared = true;
            if status != RefundStatus::Processing {
                refund.events.push(RefundEvent {
                    status,
                    at: outcome.recorded_at,
                });
            }
            if rank(status) >= rank(refund.status) {
                refund.status = status;
            }
            if !outcome.refund_id.is_empty() {
                refund.refund_id = Some(outcome.refund_id);
            }
            if status == RefundStatus::Success {
                refund.settled_at = outcome.success_time;
            }
        }
    }
    for refund in &mut refunds {
        refund.events.sort_by_key(|e| (e.at, rank(e.status)));
    }
    refunds.retain(|r| r.cleared || !has(refused_key(order_no, &r.refund_no)));
    refunds.sort_by(|a, b| (a.requested_at, &a.refund_no).cmp(&(b.requested_at, &b.refund_no)));
    refunds
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mode;
    use crate::order::{NewOrder, Product, Trigger};

    const PAID_AT: u64 = 1_714_550_400; // 2024-05-01T08:00:00Z

    fn paid_order(total: u64) -> Order {
        let product = Product {
            sku: "tea".into(),
            name: "Tea".into(),
            price: Fen(total),
            active: true,
        };
        let mut order = Order::new(NewOrder {
            order_no: "20240501080000aaaaaaaaaaaa".into(),
            openid: "o1".into(),
            product: &product,
            quantity: 1,
            attach: None,
            mode: Mode::Live,
            created_at: "2024-05-01T07:59:00Z".into(),
        })
        .unwrap();
        let at = "2024-05-01T07:59:01Z";
        let trigger = Trigger::PrepayObtained {
            prepay_id: "wx1".into(),
            expires_at: PAID_AT + 7200,
        };
        let _ = order.apply(trigger, at).unwrap();
        let paid = Trigger::PaymentConfirmed {
            transaction_id: "4200".into(),
        };
        let _ = order.apply(paid, &crate::time::rfc3339(PAID_AT)).unwrap();
        order
    }

    fn refund(no: &str, amount: u64, status: RefundStatus, at: u64) -> Refund {
        Refund {
            refund_no: no.into(),
            amount: Fen(amount),
            reason: None,
            status,
            refund_id: None,
            requested_at: at,
            settled_at: None,
            cleared: true,
            events: Vec::new(),
        }
    }

    fn ask(no: &str, amount: u64) -> RefundAsk<'_> {
        RefundAsk {
            refund_no: no,
            amount: Fen(amount),
            reason: None,
        }
    }

    #[test]
    fn the_paid_total_is_never_exceeded() {
        let order = paid_order(1000);
        let now = PAID_AT + 3600;
        assert_eq!(check_new_refund(&order, &[], &ask("r1", 1000), now), Ok(()));
        assert_eq!(
            check_new_refund(&order, &[], &ask("r1", 1001), now),
            Err(RefundRefusal::OverPaid {
                paid: Fen(1000),
                held: Fen(0),
                asked: Fen(1001)
            })
        );
        // PROCESSING and ABNORMAL refunds hold their money; a CLOSED one gives it back.
        let refunds = [
            refund("r1", 400, RefundStatus::Processing, now - 600),
            refund("r2", 300, RefundStatus::Abnormal, now - 500),
            refund("r3", 300, RefundStatus::Closed, now - 400),
        ];
        assert_eq!(held_total(&refunds), Fen(700));
        assert_eq!(
            check_new_refund(&order, &refunds, &ask("r4", 300), now),
            Ok(())
        );
        assert!(matches!(
            check_new_refund(&order, &refunds, &ask("r4", 301), now),
            Err(RefundRefusal::OverPaid { .. })
        ));
        assert_eq!(
            check_new_refund(&order, &[], &ask("r1", 0), now),
            Err(RefundRefusal::ZeroAmount)
        );
    }

    #[test]
    fn wechat_rules_are_checked_before_asking() {
        let order = paid_order(10_000);
        let now = PAID_AT + 3600;
        let mut unpaid = order.clone();
        unpaid.status = Status::AwaitingPayment;
        assert_eq!(
            check_new_refund(&unpaid, &[], &ask("r1", 1), now),
            Err(RefundRefusal::NotPaid(Status::AwaitingPayment))
        );
        let fifty: Vec<Refund> = (0..50)
            .map(|i| refund(&format!("r{i}"), 1, RefundStatus::Success, now - 3000))
            .collect();
        assert_eq!(
            check_new_refund(&order, &fifty, &ask("r50", 1), now),
            Err(RefundRefusal::TooMany)
        );
        assert_eq!(
            check_new_refund(&order, &[], &ask("r1", 1), PAID_AT + REFUND_WINDOW_SECS + 1),
            Err(RefundRefusal::TooOld)
        );
        let recent = [refund("r1", 1, RefundStatus::Processing, now - 30)];
        let e = check_new_refund(&order, &recent, &ask("r2", 1), now).unwrap_err();
        assert_eq!(e, RefundRefusal::TooSoon { ago: 30 });
        assert!(e.to_string().contains("retry in a minute"));
        assert_eq!(e.status_and_code(), (429, "refund_too_soon"));
        for bad in ["", "a b", "ü", &"x".repeat(65)] {
            assert_eq!(
                check_new_refund(&order, &[], &ask(bad, 1), now),
                Err(RefundRefusal::BadRefundNo),
                "{bad:?}"
            );
        }
        assert!(valid_refund_no("R_1-2|3*4@5"));
        let long = "退".repeat(81);
        let with_reason = RefundAsk {
            reason: Some(&long),
            ..ask("r1", 1)
        };
        assert_eq!(
            check_new_refund(&order, &[], &with_reason, now),
            Err(RefundRefusal::BadReason)
        );
    }

    #[test]
    fn refunds_are_derived_from_their_facts_in_any_order() {
        let no = "20240501080000aaaaaaaaaaaa";
        let asked = |r: &str, amount: u64, at: u64| {
            let a = RefundAsked {
                refund_no: r.into(),
                amount: Fen(amount),
                reason: None,
                requested_at: at,
            };
            (asked_key(no, r), serde_json::to_vec(&a).unwrap())
        };
        let outcome = |r: &str, status: RefundStatus, time: Option<u64>| {
            let o = RefundOutcome {
                refund_id: format!("5000{r}"),
                success_time: time,
                recorded_at: time.unwrap_or(60),
            };
            (outcome_key(no, r, status), serde_json::to_vec(&o).unwrap())
        };
        let mut entries = vec![
            outcome("r1", RefundStatus::Success, Some(99)),
            asked("r2", 300, 20),
            outcome("r1", RefundStatus::Abnormal, None),
            asked("r1", 200, 10),
            outcome("r1", RefundStatus::Processing, None),
            outcome("r2", RefundStatus::Closed, None),
            asked("r3", 100, 30),
            (cleared_key(no, "r3"), b"{}".to_vec()),
            // Refused after it was recorded: not a refund.
            asked("r4", 100, 40),
            (refused_key(no, "r4"), b"{}".to_vec()),
            // Recorded, not yet checked: it holds its money.
            asked("r5", 100, 50),
            // Another order's refund and unrelated facts are not this order's.
            (
                asked_key("20240501080000bbbbbbbbbbbb", "r9"),
                b"{}".to_vec(),
            ),
            (marker_key(no), Vec::new()),
        ];
        let expected = vec![
            Refund {
                refund_no: "r1".into(),
                amount: Fen(200),
                reason: None,
                status: RefundStatus::Success,
                refund_id: Some("5000r1".into()),
                requested_at: 10,
                settled_at: Some(99),
                cleared: true,
                events: vec![
                    RefundEvent {
                        status: RefundStatus::Processing,
                        at: 10,
                    },
                    RefundEvent {
                        status: RefundStatus::Abnormal,
                        at: 60,
                    },
                    RefundEvent {
                        status: RefundStatus::Success,
                        at: 99,
                    },
                ],
            },
            Refund {
                refund_no: "r2".into(),
                amount: Fen(300),
                reason: None,
                status: RefundStatus::Closed,
                refund_id: Some("5000r2".into()),
                requested_at: 20,
                settled_at: None,
                cleared: true,
                events: vec![
                    RefundEvent {
                        status: RefundStatus::Processing,
                        at: 20,
                    },
                    RefundEvent {
                        status: RefundStatus::Closed,
                        at: 60,
                    },
                ],
            },
            Refund {
                refund_no: "r3".into(),
                amount: Fen(100),
                reason: None,
                status: RefundStatus::Processing,
                refund_id: None,
                requested_at: 30,
                settled_at: None,
                cleared: true,
                events: vec![RefundEvent {
                    status: RefundStatus::Processing,
                    at: 30,
                }],
            },
            Refund {
                refund_no: "r5".into(),
                amount: Fen(100),
                reason: None,
                status: RefundStatus::Processing,
                refund_id: None,
                requested_at: 50,
                settled_at: None,
                cleared: false,
                events: vec![RefundEvent {
                    status: RefundStatus::Processing,
                    at: 50,
                }],
            },
        ];
        assert_eq!(refunds_from(no, &entries), expected);
        entries.reverse();
        assert_eq!(
            refunds_from(no, &entries),
            expected,
            "the order of the keys does not matter"
        );
    }

    #[test]
    fn statuses_read_both_versions_words() {
        for (word, status) in [
            ("SUCCESS", RefundStatus::Success),
            ("PROCESSING", RefundStatus::Processing),
            ("REFUNDCLOSE", RefundStatus::Closed),
            ("CLOSED", RefundStatus::Closed),
            ("CHANGE", RefundStatus::Abnormal),
            ("ABNORMAL", RefundStatus::Abnormal),
        ] {
            assert_eq!(RefundStatus::parse(word), Some(status));
        }
        assert_eq!(RefundStatus::parse("NOPE"), None);
        let order = paid_order(500);
        let refunds = [
            refund("r1", 200, RefundStatus::Success, 0),
            refund("r2", 300, RefundStatus::Processing, 0),
        ];
        assert_eq!(refunded_total(&refunds), Fen(200));
        assert!(!fully_refunded(&order, &refunds));
        let refunds = [
            refund("r1", 200, RefundStatus::Success, 0),
            refund("r2", 300, RefundStatus::Success, 0),
        ];
        assert!(fully_refunded(&order, &refunds));
    }
}
