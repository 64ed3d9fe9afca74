//! A payment notification as the notify route judges it, whatever the API version: what
//! WeChat reports ([`PaymentReport`], from an APIv2 XML or a decrypted APIv3 transaction) and
//! the [`Verdict`] against the stored order (PROTOCOL.md "Payment notification": the same rules
//! for both versions).

use crate::config::MerchantConfig;
use crate::order::{Order, Status};
use crate::v2::api::{PaidTrade, cut_to_bytes};

/// A verified notification's claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentReport {
    /// Why the message itself is not a report of a result (APIv2 `return_code` FAIL), if so.
    pub call_failed: Option<String>,
    pub appid: String,
    pub mchid: String,
    /// The payment, or why the report carries none (not SUCCESS, a field missing).
    pub payment: Result<PaidTrade, String>,
}

/// What to do with a verified notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Record the payment (the order becomes PAID), then answer success — only after the write
    /// returned; a failed write answers a failure.
    Apply(PaidTrade),
    /// Already applied (PAID with this transaction_id): answer success, write nothing.
    Duplicate,
    /// Validly signed but not a payment of this order: do not mark it paid, record an alert
    /// event, and answer success (a failure would only repeat the same mismatch for 24 h).
    Alert(String),
    /// Answer a failure and change nothing (e.g. an order we do not know).
    Reject(String),
}

/// Judges a verified report against our merchant identity and the stored order: ours (appid,
/// merchant id), paid, the order's total, and at most one transaction per order.
pub fn judge(report: &PaymentReport, merchant: &MerchantConfig, order: Option<&Order>) -> Verdict {
    let Some(order) = order else {
        return Verdict::Reject("unknown order".into());
    };
    if let Some(why) = &report.call_failed {
        return Verdict::Alert(why.clone());
    }
    if report.appid != merchant.appid {
        return Verdict::Alert("notification appid is not ours".into());
    }
    if report.mchid != merchant.mch_id {
        return Verdict::Alert("notification mch_id is not ours".into());
    }
    let trade = match &report.payment {
        Ok(trade) => trade,
        Err(why) => return Verdict::Alert(why.clone()),
    };
    if trade.total_fee != order.total_fee {
        return Verdict::Alert(format!(
            "notification total_fee {} does not match the order total {}",
            trade.total_fee, order.total_fee
        ));
    }
    if order.status == Status::Paid {
        return if order.transaction_id.as_deref() == Some(trade.transaction_id.as_str()) {
            Verdict::Duplicate
        } else {
            Verdict::Alert(format!(
                "paid order notified again with another transaction_id {}",
                short(&trade.transaction_id)
            ))
        };
    }
    Verdict::Apply(trade.clone())
}

/// Whether a verified report repeats the payment already recorded for its order (`paid`, the
/// order's payment fact): ours (appid, merchant id), a successful payment, the same
/// transaction. Such a report is a duplicate whatever else the order holds — the payment was
/// judged in full (amount included) when it was recorded — so the notify route answers it from
/// that one fact, without reading the order (one store round trip).
pub fn repeats_recorded_payment(
    report: &PaymentReport,
    merchant: &MerchantConfig,
    paid: &crate::ledger::PaidFact,
) -> bool {
    report.call_failed.is_none()
        && report.appid == merchant.appid
        && report.mchid == merchant.mch_id
        && report
            .payment
            .as_ref()
            .is_ok_and(|trade| trade.transaction_id == paid.transaction_id)
}

/// A received value quoted in an alert: bounded, so a hostile field cannot bloat the record.
pub(crate) fn short(value: &str) -> &str {
    cut_to_bytes(value, 64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ApiVersion, Signing};
    use crate::ledger::PaidFact;
    use crate::money::Fen;
    use crate::v2::sign::SignType;

    #[test]
    fn only_our_successful_report_of_the_recorded_transaction_repeats_it() {
        let merchant = MerchantConfig::simulator_for(SignType::Md5, ApiVersion::V2, Signing::Signs);
        let paid = PaidFact {
            transaction_id: "4200000001".into(),
            paid_at: "2024-05-01T08:03:12Z".into(),
        };
        let report = PaymentReport {
            call_failed: None,
            appid: merchant.appid.clone(),
            mchid: merchant.mch_id.clone(),
            payment: Ok(PaidTrade {
                transaction_id: "4200000001".into(),
                total_fee: Fen(3980),
                time_end: "20240501160312".into(),
            }),
        };
        assert!(repeats_recorded_payment(&report, &merchant, &paid));
        let changed = |edit: fn(&mut PaymentReport)| {
            let mut r = report.clone();
            edit(&mut r);
            repeats_recorded_payment(&r, &merchant, &paid)
        };
        assert!(!changed(|r| r.call_failed = Some("FAIL".into())));
        assert!(!changed(|r| r.appid = "wx0000000000000000".into()));
        assert!(!changed(|r| r.mchid = "1999999999".into()));
        assert!(!changed(|r| r.payment = Err("trade_state NOTPAY".into())));
        assert!(!changed(|r| {
            if let Ok(trade) = &mut r.payment {
                trade.transaction_id = "4200000002".into();
            }
        }));
    }
}
