//! `POST /api/wxpay/notify` (DESIGN.md §1.4, §4; PROTOCOL.md "Payment notification").
//!
//! Everything written is derived from the verified notification alone (the events are dated
//! from its `time_end`), so concurrent deliveries of the same notification write identical
//! bytes; SUCCESS is answered only after the write returned; a duplicate writes nothing.

use super::{Clock, Env, Refusal, Response, Store, load_order, record_learned, write_json};
use crate::config::MerchantConfig;
use crate::ledger::AlertFact;
use crate::order::{Trigger, valid_out_trade_no};
use crate::time::{parse_beijing_compact, rfc3339};
use crate::v2::notify::{
    Notification, NotifyError, SUCCESS_REPLY, Verdict, fail_reply, judge, parse,
};

/// What the notify route did, for the component's log and for tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyOutcome {
    /// The order became PAID (answered SUCCESS after the write).
    Applied {
        order_no: String,
        transaction_id: String,
    },
    /// Already applied: answered SUCCESS, nothing written.
    Duplicate {
        order_no: String,
        transaction_id: String,
    },
    /// Validly signed but not a payment of this order: not paid, an alert recorded
    /// (`recorded: false` when the same alert was already on the order and nothing was
    /// written), answered SUCCESS.
    Alerted {
        order_no: String,
        reason: String,
        recorded: bool,
    },
    /// Not trusted or not ours (bad XML, bad signature, unknown order): answered FAIL, nothing
    /// changed.
    Rejected { reason: String },
    /// Our side failed (store): answered FAIL so that WeChat delivers it again.
    Failed { reason: String },
}

impl NotifyOutcome {
    /// Whether WeChat was answered SUCCESS.
    pub fn is_success(&self) -> bool {
        matches!(
            self,
            NotifyOutcome::Applied { .. }
                | NotifyOutcome::Duplicate { .. }
                | NotifyOutcome::Alerted { .. }
        )
    }
}

fn success() -> Response {
    Response::xml(SUCCESS_REPLY)
}

fn fail(message: &str) -> Response {
    Response::xml(fail_reply(message))
}

/// The answer to a notification refused before it was read (see [`Refusal`]): WeChat's FAIL
/// XML, never JSON, so that WeChat delivers it again once we can take it. A body too large or
/// unreadable was not trusted (`Rejected`); a configuration problem is our side (`Failed`). A
/// request with another method is not WeChat's: it gets the JSON 405.
pub fn refuse(refusal: &Refusal) -> (Response, NotifyOutcome) {
    match refusal {
        Refusal::BodyTooLarge => (
            fail("body too large"),
            NotifyOutcome::Rejected {
                reason: "body over the size limit".into(),
            },
        ),
        Refusal::UnreadableBody(why) => (
            fail("body unreadable"),
            NotifyOutcome::Rejected {
                reason: format!("body could not be read: {why}"),
            },
        ),
        Refusal::Config(problems) => (
            fail("temporarily unavailable"),
            NotifyOutcome::Failed {
                reason: problems.to_string(),
            },
        ),
        Refusal::MethodNotAllowed { method, .. } => (
            refusal.response(),
            NotifyOutcome::Rejected {
                reason: format!("method {method} is not POST"),
            },
        ),
    }
}

/// The time stamp of every event a notification adds: its `time_end` (falling back to `now`
/// only when a validly signed notification has none, e.g. a result FAIL).
fn event_time(n: &Notification, now: u64) -> String {
    n.params
        .get("time_end")
        .and_then(|t| parse_beijing_compact(t).ok())
        .map_or_else(|| rfc3339(now), rfc3339)
}

/// Handles one notification body. The transport is never used.
pub async fn notify<S, T, C, N>(
    env: &Env<S, T, C, N, MerchantConfig>,
    body: &[u8],
) -> (Response, NotifyOutcome)
where
    S: Store,
    C: Clock,
{
    let merchant = &env.config;
    let n = match parse(body, merchant) {
        Ok(n) => n,
        Err(e) => {
            let short = match &e {
                NotifyError::Xml(_) => "invalid XML",
                NotifyError::Signature(_) => "signature error",
                NotifyError::MissingOrderNo => "missing out_trade_no",
                NotifyError::SignTypeDowngrade { .. } => "signature type",
            };
            return (
                fail(short),
                NotifyOutcome::Rejected {
                    reason: e.to_string(),
                },
            );
        }
    };
    let order_no = n.out_trade_no().to_owned();
    let order = if valid_out_trade_no(&order_no) {
        match load_order(&env.store, &order_no).await {
            Ok(order) => order,
            Err(e) => {
                return (
                    fail("temporarily unavailable"),
                    NotifyOutcome::Failed { reason: e.message },
                );
            }
        }
    } else {
        None
    };
    if let Some(order) = &order
        && order.mode != merchant.mode
    {
        // A simulator deployment must never settle a live order (nor the reverse): FAIL, so
        // that WeChat delivers it again (to the right deployment, once routed there), and an
        // alert on the order, which is best effort (the FAIL is the answer either way).
        let reason = format!(
            "a notification for this {} order reached a {} deployment; not applied",
            order.mode, merchant.mode
        );
        let alert = AlertFact {
            at: event_time(&n, env.clock.now_unix()),
            reason: reason.clone(),
            transaction_id: Some(n.transaction_id().to_owned()),
        };
        let _ = write_json(&env.store, &alert.key(&order_no), &alert).await;
        return (
            fail("order of another mode"),
            NotifyOutcome::Rejected {
                reason: format!("{reason}: out_trade_no {:?}", short(&order_no)),
            },
        );
    }
    if let Some(order) = &order
        && let Err(e) = n.check_sign_type(order.sign_type.unwrap_or(merchant.sign_type))
    {
        return (
            fail("signature type"),
            NotifyOutcome::Rejected {
                reason: format!("{e}: out_trade_no {:?}", short(&order_no)),
            },
        );
    }
    match judge(&n, merchant, order.as_ref()) {
        Verdict::Reject(reason) => (
            fail("order unknown"),
            NotifyOutcome::Rejected {
                reason: format!("{reason}: out_trade_no {:?}", short(&order_no)),
            },
        ),
        Verdict::Duplicate => (
            success(),
            NotifyOutcome::Duplicate {
                order_no,
                transaction_id: n.transaction_id().to_owned(),
            },
        ),
        Verdict::Apply(trade) => {
            let Some(mut order) = order else {
                return unknown_order(&order_no);
            };
            let at = event_time(&n, env.clock.now_unix());
            let before = order.clone();
            let trigger = Trigger::PaymentConfirmed {
                transaction_id: trade.transaction_id.clone(),
            };
            if let Err(e) = order.apply(trigger, &at) {
                return (
                    fail("cannot apply"),
                    NotifyOutcome::Failed {
                        reason: e.to_string(),
                    },
                );
            }
            match record_learned(&env.store, &before, &order).await {
                Ok(()) => (
                    success(),
                    NotifyOutcome::Applied {
                        order_no,
                        transaction_id: trade.transaction_id,
                    },
                ),
                Err(e) => (
                    fail("temporarily unavailable"),
                    NotifyOutcome::Failed { reason: e.message },
                ),
            }
        }
        Verdict::Alert(reason) => {
            if order.is_none() {
                return unknown_order(&order_no);
            }
            // Its own key, named by what it says: a repeated notification finds it there.
            let alert = AlertFact {
                at: event_time(&n, env.clock.now_unix()),
                reason: reason.clone(),
                transaction_id: Some(n.transaction_id().to_owned()),
            };
            let key = alert.key(&order_no);
            let known = match env.store.get(&key).await {
                Ok(known) => known.is_some(),
                Err(e) => {
                    return (
                        fail("temporarily unavailable"),
                        NotifyOutcome::Failed {
                            reason: e.to_string(),
                        },
                    );
                }
            };
            if !known && let Err(e) = write_json(&env.store, &key, &alert).await {
                return (
                    fail("temporarily unavailable"),
                    NotifyOutcome::Failed { reason: e.message },
                );
            }
            (
                success(),
                NotifyOutcome::Alerted {
                    order_no,
                    reason,
                    recorded: !known,
                },
            )
        }
    }
}

/// `judge` only applies or alerts for a known order; kept total rather than panicking.
fn unknown_order(order_no: &str) -> (Response, NotifyOutcome) {
    (
        fail("order unknown"),
        NotifyOutcome::Rejected {
            reason: format!("unknown order: out_trade_no {:?}", short(order_no)),
        },
    )
}

fn short(s: &str) -> &str {
    crate::v2::api::cut_to_bytes(s, 64)
}
