//! The storage model (docs/RELIABILITY.md "Storage model"): every fact WeChat confirms about an
//! order lives in its own key, written at most once in content and never rewritten by a
//! handler that merely looked at it. The order's status and events are derived on read.
//!
//! Spin's key-value store has get / set / delete / get_keys only: no transaction, no
//! compare-and-swap, and several instances share it. A handler that read a record, decided,
//! and wrote the whole record back could put back what it read over a fact another handler
//! stored in between (a status poll reverting a notification's PAID). Here nothing is ever
//! written back:
//!
//! | key | fact | written by | content |
//! |---|---|---|---|
//! | `order:{no}` | the order as created, then with its prepay, or refused by WeChat (the base record, [`Order`]) | the creating request only | — |
//! | `order:{no}:paid` | WeChat says it is paid ([`PaidFact`]) | notification, status poll, reconcile, whichever sees it first | transaction id and WeChat's `time_end`: the same bytes from every source |
//! | `order:{no}:closed` | WeChat closed it / it can no longer be paid ([`EndFact`]) | status poll, reconcile | reason and time of whichever wrote last (two observers may word it differently; the fact is the same) |
//! | `order:{no}:alert:{id}` | something a person must look at ([`AlertFact`]) | notification, poll, reconcile | `{id}` is a digest of the reason (and transaction): writing it twice writes one alert |
//! | `order:{no}:checked` | when WeChat was last asked (a throttle hint, not a fact) | status poll | Unix seconds |
//!
//! A base record of the first format (version 1: status, payment and events in one record)
//! still reads correctly: it is the base, and the facts are applied over it
//! ([`Facts::apply_to`]).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::order::{Event, NotifyResult, Order, Status, Trigger, order_key};

/// `order:{no}:paid`.
pub fn paid_key(order_no: &str) -> String {
    format!("{}:paid", order_key(order_no))
}

/// `order:{no}:closed`.
pub fn closed_key(order_no: &str) -> String {
    format!("{}:closed", order_key(order_no))
}

/// `order:{no}:checked`.
pub fn checked_key(order_no: &str) -> String {
    format!("{}:checked", order_key(order_no))
}

/// `order:{no}:alert:` — the prefix of the order's alerts.
pub fn alert_prefix(order_no: &str) -> String {
    format!("{}:alert:", order_key(order_no))
}

/// The order number of a base record's key (`order:{no}`), `None` for a fact's key
/// (`order:{no}:…`; order numbers have no `:`).
pub fn base_order_no(key: &str) -> Option<&str> {
    key.strip_prefix(crate::order::ORDER_KEY_PREFIX)
        .filter(|no| !no.contains(':'))
}

/// WeChat confirmed the payment: derived from the confirmation alone (no source, no time of
/// writing), so the notification, a status poll and reconcile write identical bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaidFact {
    pub transaction_id: String,
    /// RFC 3339, from WeChat's `time_end`.
    pub paid_at: String,
}

/// The order can no longer be paid: closed at WeChat, or never created there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndFact {
    /// RFC 3339.
    pub at: String,
    pub reason: String,
}

/// Something a person must look at (an amount mismatch, a conflicting payment, a payment after
/// close, a rejected notification).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertFact {
    /// RFC 3339.
    pub at: String,
    pub reason: String,
    /// The notification's or orderquery's transaction, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
}

impl AlertFact {
    /// `order:{no}:alert:{id}`, `{id}` a digest of what the alert says (not of when): the same
    /// alert from two handlers is one key.
    pub fn key(&self, order_no: &str) -> String {
        let mut digest = Sha256::new();
        digest.update(self.reason.as_bytes());
        digest.update([0]);
        digest.update(self.transaction_id.as_deref().unwrap_or("").as_bytes());
        let id = hex::encode(&digest.finalize()[..8]);
        format!("{}{id}", alert_prefix(order_no))
    }
}

/// The facts stored beside a base record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    pub paid: Option<PaidFact>,
    pub closed: Option<EndFact>,
    /// Loaded only where they are shown (the admin view).
    pub alerts: Vec<AlertFact>,
}

impl Facts {
    /// The order as the base and these facts make it: closing, then payment (a payment
    /// overrides a closed or failed order: WeChat's word; an alert says so), then the alerts
    /// (a notification's with its transaction), each event dated by its fact, so every reader
    /// derives the same status and events, and a paid order has exactly one `PAID` event.
    pub fn apply_to(&self, mut order: Order) -> Order {
        if let Some(closed) = &self.closed {
            let trigger = Trigger::ClosedAtWechat {
                reason: closed.reason.clone(),
            };
            let _ = order.apply(trigger, &closed.at);
        }
        if let Some(paid) = &self.paid {
            let trigger = Trigger::PaymentConfirmed {
                transaction_id: paid.transaction_id.clone(),
            };
            match order.apply(trigger, &paid.paid_at) {
                Ok(_) => {}
                // A first-format record that is already paid by this transaction.
                Err(e)
                    if !matches!(e, crate::order::TransitionError::ConflictingPayment { .. }) => {}
                Err(e) => order.record_alert(&paid.paid_at, e.to_string()),
            }
        }
        for alert in &self.alerts {
            if let Some(tid) = &alert.transaction_id {
                order.record_notify(
                    &alert.at,
                    tid,
                    NotifyResult::Rejected,
                    Some(alert.reason.clone()),
                );
            }
            order.record_alert(&alert.at, alert.reason.clone());
        }
        // In the order of the facts (not sorted by time: WeChat's `time_end` and our clock
        // need not agree).
        order
    }

    /// What `after` knows beyond `before` (both derived views of one order), as facts to store:
    /// a move to PAID or CLOSED, and the alerts added (a refusal is the creating request's, in
    /// the base record). Status events are not stored: they are derived from the facts.
    pub fn learned(before: &Order, after: &Order) -> Facts {
        let moved_to = |status: Status| after.status == status && before.status != status;
        let last_status_event = || {
            after.events.iter().rev().find_map(|e| match e {
                Event::Status { at, to, reason, .. } if *to == after.status => Some(EndFact {
                    at: at.clone(),
                    reason: reason.clone().unwrap_or_default(),
                }),
                _ => None,
            })
        };
        let paid = match (&after.transaction_id, &after.paid_at) {
            (Some(transaction_id), Some(paid_at)) if moved_to(Status::Paid) => Some(PaidFact {
                transaction_id: transaction_id.clone(),
                paid_at: paid_at.clone(),
            }),
            _ => None,
        };
        let closed = moved_to(Status::Closed).then(last_status_event).flatten();
        let mut alerts = Vec::new();
        let new_events = after.events.get(before.events.len()..).unwrap_or(&[]);
        for event in new_events {
            let Event::Alert { at, reason } = event else {
                continue;
            };
            // An alert derived from the facts (a payment after close) is not a new fact.
            if paid.is_some() && reason.starts_with("WeChat confirmed payment") {
                continue;
            }
            alerts.push(AlertFact {
                at: at.clone(),
                reason: reason.clone(),
                transaction_id: None,
            });
        }
        Facts {
            paid,
            closed,
            alerts,
        }
    }

    /// Whether there is nothing to store.
    pub fn is_empty(&self) -> bool {
        self == &Facts::default()
    }
}

/// An order as every key stored for it makes it, from a synchronous view of the store (tests
/// and tools that read a store directly): `get` a key's bytes, `keys` the store's keys (for the
/// alerts). `None` if there is no base record; panics on unreadable records (a tool's bug).
pub fn read_order_from(
    order_no: &str,
    get: impl Fn(&str) -> Option<Vec<u8>>,
    keys: &[String],
) -> Option<Order> {
    fn json<T: serde::de::DeserializeOwned>(bytes: Option<Vec<u8>>) -> Option<T> {
        bytes.map(|b| serde_json::from_slice(&b).expect("a readable fact"))
    }
    let base = Order::from_json(&get(&order_key(order_no))?).expect("a readable order record");
    let prefix = alert_prefix(order_no);
    let alerts = keys
        .iter()
        .filter(|k| k.starts_with(&prefix))
        .filter_map(|k| json(get(k)))
        .collect();
    let facts = Facts {
        paid: json(get(&paid_key(order_no))),
        closed: json(get(&closed_key(order_no))),
        alerts,
    };
    Some(facts.apply_to(base))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::order::tests::sample_order;

    const TID: &str = "4200001234202405011234567890";

    fn awaiting() -> Order {
        let mut o = sample_order();
        let _ = o
            .apply(
                Trigger::PrepayObtained {
                    prepay_id: "wx201410272009395522657a690389285100".into(),
                    expires_at: 1_714_557_600,
                },
                "2024-05-01T08:00:00Z",
            )
            .unwrap();
        o
    }

    fn paid() -> PaidFact {
        PaidFact {
            transaction_id: TID.into(),
            paid_at: "2024-05-01T08:03:12Z".into(),
        }
    }

    #[test]
    fn keys() {
        let no = "20240501160000a1b2c3d4e5f60708";
        assert_eq!(paid_key(no), format!("order:{no}:paid"));
        assert_eq!(base_order_no(&order_key(no)), Some(no));
        assert_eq!(base_order_no(&paid_key(no)), None);
        assert_eq!(base_order_no(&checked_key(no)), None);
        assert_eq!(base_order_no("product:tea"), None);
        // An alert's key names what it says, not when.
        let a = AlertFact {
            at: "2024-05-01T08:00:00Z".into(),
            reason: "amount".into(),
            transaction_id: Some(TID.into()),
        };
        let later = AlertFact {
            at: "2024-05-02T08:00:00Z".into(),
            ..a.clone()
        };
        let other = AlertFact {
            reason: "appid".into(),
            ..a.clone()
        };
        assert_eq!(a.key(no), later.key(no));
        assert_ne!(a.key(no), other.key(no));
        assert!(a.key(no).starts_with(&alert_prefix(no)));
    }

    #[test]
    fn derived_status_is_monotone_in_the_facts() {
        let closed = EndFact {
            at: "2024-05-01T10:00:00Z".into(),
            reason: "closed at WeChat".into(),
        };
        let only_closed = Facts {
            closed: Some(closed.clone()),
            ..Facts::default()
        };
        assert_eq!(only_closed.apply_to(awaiting()).status, Status::Closed);
        // A payment wins over a closing, with an alert, and exactly one PAID event.
        let both = Facts {
            paid: Some(paid()),
            closed: Some(closed),
            ..Facts::default()
        };
        let order = both.apply_to(awaiting());
        assert_eq!(order.status, Status::Paid);
        assert_eq!(order.transaction_id.as_deref(), Some(TID));
        let paid_events = order
            .events
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    Event::Status {
                        to: Status::Paid,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(paid_events, 1);
        assert!(
            order
                .events
                .iter()
                .any(|e| matches!(e, Event::Alert { .. }))
        );
        // The same facts always derive the same order.
        assert_eq!(both.apply_to(awaiting()), order);
    }

    #[test]
    fn learned_is_what_changed_as_facts() {
        let before = awaiting();
        let mut after = before.clone();
        let _ = after
            .apply(
                Trigger::PaymentConfirmed {
                    transaction_id: TID.into(),
                },
                "2024-05-01T08:03:12Z",
            )
            .unwrap();
        after.record_alert(
            "2024-05-01T08:03:12Z",
            "orderquery reports the trade as REFUND",
        );
        let facts = Facts::learned(&before, &after);
        assert_eq!(facts.paid, Some(paid()));
        assert_eq!(facts.closed, None);
        assert_eq!(facts.alerts.len(), 1);
        // Nothing learned, nothing to store; and reading the facts back gives `after`'s status.
        assert!(Facts::learned(&after, &after).is_empty());
        assert_eq!(facts.apply_to(before).status, Status::Paid);
    }
}
