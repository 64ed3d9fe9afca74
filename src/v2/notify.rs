//! Payment notifications (PROTOCOL.md "Payment notification"): parse, verify, judge against the
//! stored order, and the exact SUCCESS / FAIL reply bodies.
//!
//! The verdict decides what the notify route writes and answers; the route only performs it.

use super::Params;
use super::api::{PaidTrade, ReplyError, cut_to_bytes};
use super::sign::{SignType, VerifyError, verify_from_wechat};
use super::xml::{self, XmlError};
use crate::config::MerchantConfig;
use crate::order::Order;

/// The body that tells WeChat to stop re-delivering, exactly as WeChat expects it.
pub const SUCCESS_REPLY: &str = "<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>";

/// `Content-Type` of both replies.
pub const REPLY_CONTENT_TYPE: &str = "text/xml";

/// The body that makes WeChat re-deliver later (15 s … 24 h). `message` is short and never
/// carries request data.
pub fn fail_reply(message: &str) -> String {
    let mut params = Params::new();
    params.insert("return_code".into(), "FAIL".into());
    params.insert("return_msg".into(), cut_to_bytes(message, 128).into());
    xml::write(&params)
}

/// Why a notification could not be read or trusted (answer FAIL, change nothing).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    #[error("notification is not acceptable XML: {0}")]
    Xml(#[from] XmlError),
    #[error("notification signature: {0}")]
    Signature(#[from] VerifyError),
    #[error("notification has no out_trade_no")]
    MissingOrderNo,
    /// Signed (or declared) with MD5 for an order made with HMAC-SHA256: a downgrade WeChat
    /// never sends (it signs a notification with the unified order's type).
    #[error("notification is signed with {used}, but the order was made with {expected}")]
    SignTypeDowngrade {
        used: &'static str,
        expected: &'static str,
    },
}

/// A notification whose signature verified with our API key. Holds every received field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub params: Params,
    /// The algorithm its signature verified with.
    pub sign_type: SignType,
}

impl Notification {
    pub fn out_trade_no(&self) -> &str {
        self.field("out_trade_no")
    }

    pub fn transaction_id(&self) -> &str {
        self.field("transaction_id")
    }

    fn field(&self, name: &str) -> &str {
        self.params.get(name).map_or("", String::as_str)
    }
}

/// Reads and verifies a notification body: XML refusals first (DOCTYPE, entities, …), then the
/// signature over all received fields with the algorithm the message declares.
pub fn parse(body: &[u8], merchant: &MerchantConfig) -> Result<Notification, NotifyError> {
    let params = xml::read(body)?;
    let key = merchant.v2_key().map_err(|_| VerifyError::NoKey)?;
    let sign_type = verify_from_wechat(&params, key, merchant.sign_type)?;
    let notification = Notification { params, sign_type };
    if notification.out_trade_no().is_empty() {
        return Err(NotifyError::MissingOrderNo);
    }
    Ok(notification)
}

impl Notification {
    /// Refuses a notification signed more weakly than its order's type (`expected`: the type
    /// the order was made with, or the configured one for an order that did not record it).
    /// An HMAC-SHA256 order takes only HMAC-SHA256; an MD5 order takes either (WeChat signs
    /// with the order's type; a stronger one with our key is no forgery).
    pub fn check_sign_type(&self, expected: SignType) -> Result<(), NotifyError> {
        check_sign_type(self.sign_type, expected)
    }
}

/// [`Notification::check_sign_type`] for a notification signed with `used`.
pub fn check_sign_type(used: SignType, expected: SignType) -> Result<(), NotifyError> {
    if expected == SignType::HmacSha256 && used != SignType::HmacSha256 {
        return Err(NotifyError::SignTypeDowngrade {
            used: used.as_str(),
            expected: expected.as_str(),
        });
    }
    Ok(())
}

pub use crate::payment::Verdict;
use crate::payment::{PaymentReport, short};

impl Notification {
    /// What the notification reports, for the version-neutral [`crate::payment::judge`].
    pub fn report(&self) -> PaymentReport {
        let p = &self.params;
        let field = |name: &str| p.get(name).map_or("", String::as_str);
        let call_failed = (field("return_code") != "SUCCESS")
            .then(|| format!("notification return_code {}", short(field("return_code"))));
        let payment = if field("result_code") != "SUCCESS" {
            Err(format!(
                "notification result_code {} err_code {}",
                short(field("result_code")),
                short(field("err_code"))
            ))
        } else {
            PaidTrade::from_params(p).map_err(|e| match e {
                ReplyError::MissingField(name) => {
                    format!("notification lacks or garbles {name}")
                }
                other => other.to_string(),
            })
        };
        PaymentReport {
            call_failed,
            appid: field("appid").to_owned(),
            mchid: field("mch_id").to_owned(),
            payment,
        }
    }
}

/// Judges a verified APIv2 notification ([`crate::payment::judge`]).
pub fn judge(
    notification: &Notification,
    merchant: &MerchantConfig,
    order: Option<&Order>,
) -> Verdict {
    crate::payment::judge(&notification.report(), merchant, order)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Fen;
    use crate::order::Status;
    use crate::secret::Secret;
    use crate::v2::api::tests::merchant;
    use crate::v2::sign::{SignType, sign, sign_in_place};

    /// PROTOCOL.md S6, with its official MD5 signature.
    fn s6_body() -> String {
        let mut p = crate::v2::sign::tests::s6();
        p.insert("sign".into(), "6D734A04D8568BAE04858D958A82595A".into());
        xml::write(&p)
    }

    fn s6_merchant() -> MerchantConfig {
        merchant(SignType::Md5)
    }

    fn order(status: Status, total: u64) -> Order {
        let mut o = crate::order::tests::sample_order();
        o.order_no = "1409811653".into();
        o.total_fee = Fen(total);
        o.status = status;
        o
    }

    fn resigned(edit: impl FnOnce(&mut Params), sign_type: SignType) -> Vec<u8> {
        let mut p = crate::v2::sign::tests::s6();
        edit(&mut p);
        sign_in_place(&mut p, s6_merchant().v2_key().unwrap(), sign_type);
        xml::write(&p).into_bytes()
    }

    #[test]
    fn the_official_notification_verifies_and_applies() {
        let n = parse(s6_body().as_bytes(), &s6_merchant()).unwrap();
        assert_eq!(n.out_trade_no(), "1409811653");
        assert_eq!(
            judge(&n, &s6_merchant(), Some(&order(Status::AwaitingPayment, 1))),
            Verdict::Apply(PaidTrade {
                transaction_id: "1004400740201409030005092168".into(),
                total_fee: Fen(1),
                time_end: "20140903131540".into(),
            })
        );
    }

    #[test]
    fn hmac_notification_with_sign_type_verifies() {
        let body = resigned(
            |p| drop(p.insert("sign_type".into(), "HMAC-SHA256".into())),
            SignType::HmacSha256,
        );
        let n = parse(&body, &s6_merchant()).unwrap();
        assert!(matches!(
            judge(&n, &s6_merchant(), Some(&order(Status::Created, 1))),
            Verdict::Apply(_)
        ));
        // Declaring HMAC but signing with MD5 does not verify.
        let mut p = crate::v2::sign::tests::s6();
        p.insert("sign_type".into(), "HMAC-SHA256".into());
        let md5 = sign(&p, s6_merchant().v2_key().unwrap(), SignType::Md5);
        p.insert("sign".into(), md5);
        assert_eq!(
            parse(xml::write(&p).as_bytes(), &s6_merchant()),
            Err(NotifyError::Signature(VerifyError::Mismatch))
        );
    }

    #[test]
    fn unknown_extra_fields_are_signed_and_accepted() {
        let body = resigned(
            |p| drop(p.insert("coupon_fee_0".into(), "0".into())),
            SignType::Md5,
        );
        let n = parse(&body, &s6_merchant()).unwrap();
        assert_eq!(n.params["coupon_fee_0"], "0");
        // The official signature does not cover a field slipped in afterwards.
        let tampered = s6_body().replace("</xml>", "<promotion_detail>x</promotion_detail></xml>");
        assert_eq!(
            parse(tampered.as_bytes(), &s6_merchant()),
            Err(NotifyError::Signature(VerifyError::Mismatch))
        );
    }

    #[test]
    fn bad_signatures_are_refused() {
        let tampered = s6_body().replace("<total_fee><![CDATA[1]]>", "<total_fee><![CDATA[100]]>");
        assert_eq!(
            parse(tampered.as_bytes(), &s6_merchant()),
            Err(NotifyError::Signature(VerifyError::Mismatch))
        );
        let other_key = MerchantConfig {
            api_key: Some(Secret::new("x".repeat(32))),
            ..s6_merchant()
        };
        assert_eq!(
            parse(s6_body().as_bytes(), &other_key),
            Err(NotifyError::Signature(VerifyError::Mismatch))
        );
        let unsigned = xml::write(&crate::v2::sign::tests::s6());
        assert_eq!(
            parse(unsigned.as_bytes(), &s6_merchant()),
            Err(NotifyError::Signature(VerifyError::MissingSign))
        );
    }

    #[test]
    fn xxe_is_refused_before_anything_else() {
        let xxe = r#"<?xml version="1.0"?><!DOCTYPE foo [<!ENTITY x SYSTEM "file:///etc/passwd">]><xml><out_trade_no>&x;</out_trade_no></xml>"#;
        assert_eq!(
            parse(xxe.as_bytes(), &s6_merchant()),
            Err(NotifyError::Xml(XmlError::Doctype))
        );
    }

    #[test]
    fn mismatches_alert_without_paying() {
        let m = s6_merchant();
        let wrong_amount = parse(s6_body().as_bytes(), &m).unwrap();
        assert!(matches!(
            judge(&wrong_amount, &m, Some(&order(Status::AwaitingPayment, 100))),
            Verdict::Alert(reason) if reason.contains("total_fee 1") && reason.contains("100")
        ));
        for (field, value) in [("mch_id", "10000199"), ("appid", "wx0000000000000000")] {
            let body = resigned(
                |p| drop(p.insert(field.into(), value.into())),
                SignType::Md5,
            );
            let n = parse(&body, &m).unwrap();
            assert!(
                matches!(judge(&n, &m, Some(&order(Status::AwaitingPayment, 1))), Verdict::Alert(r) if r.contains(field)),
                "{field}"
            );
        }
        let body = resigned(
            |p| {
                p.insert("result_code".into(), "FAIL".into());
                p.insert("err_code".into(), "NOTENOUGH".into());
            },
            SignType::Md5,
        );
        let n = parse(&body, &m).unwrap();
        assert!(matches!(
            judge(&n, &m, Some(&order(Status::AwaitingPayment, 1))),
            Verdict::Alert(r) if r.contains("NOTENOUGH")
        ));
        let body = resigned(|p| drop(p.remove("transaction_id")), SignType::Md5);
        let n = parse(&body, &m).unwrap();
        assert!(matches!(
            judge(&n, &m, Some(&order(Status::AwaitingPayment, 1))),
            Verdict::Alert(r) if r.contains("transaction_id")
        ));
    }

    #[test]
    fn duplicates_and_conflicts_on_a_paid_order() {
        let m = s6_merchant();
        let n = parse(s6_body().as_bytes(), &m).unwrap();
        let mut paid = order(Status::Paid, 1);
        paid.transaction_id = Some("1004400740201409030005092168".into());
        assert_eq!(judge(&n, &m, Some(&paid)), Verdict::Duplicate);
        paid.transaction_id = Some("4200000000000000000000000001".into());
        assert!(
            matches!(judge(&n, &m, Some(&paid)), Verdict::Alert(r) if r.contains("another transaction_id"))
        );
    }

    #[test]
    fn locally_closed_or_failed_orders_take_the_authoritative_payment() {
        let m = s6_merchant();
        let n = parse(s6_body().as_bytes(), &m).unwrap();
        for status in [Status::Closed, Status::Failed, Status::Created] {
            assert!(
                matches!(judge(&n, &m, Some(&order(status, 1))), Verdict::Apply(_)),
                "{status:?}"
            );
        }
    }

    #[test]
    fn unknown_order_is_rejected() {
        let m = s6_merchant();
        let n = parse(s6_body().as_bytes(), &m).unwrap();
        assert_eq!(judge(&n, &m, None), Verdict::Reject("unknown order".into()));
    }

    #[test]
    fn reply_bodies() {
        assert_eq!(
            SUCCESS_REPLY,
            "<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>"
        );
        assert_eq!(
            fail_reply("signature"),
            "<xml><return_code><![CDATA[FAIL]]></return_code><return_msg><![CDATA[signature]]></return_msg></xml>"
        );
        assert_eq!(
            xml::read(fail_reply("x]]>y").as_bytes()).unwrap()["return_msg"],
            "x]]>y"
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn any_status() -> impl Strategy<Value = Status> {
            prop_oneof![
                Just(Status::Created),
                Just(Status::AwaitingPayment),
                Just(Status::Paid),
                Just(Status::Closed),
                Just(Status::Failed),
            ]
        }

        proptest! {
            /// Arbitrary fields, validly signed (so parse passes the signature): judge never
            /// panics, and Applies only a SUCCESS payment of exactly the order total, for our
            /// appid and mch_id.
            #[test]
            fn prop_judge_never_applies_a_mismatch(
                fields in prop::collection::btree_map("[a-z_]{1,12}", "\\PC{0,24}", 0..12),
                total_fee in prop::option::of("[0-9]{1,12}|-?[0-9.]{1,6}|\\PC{0,6}"),
                order_total in 1u64..100_000,
                status in any_status(),
                keep_ids in any::<bool>(),
                hmac in any::<bool>(),
            ) {
                let sign_type = if hmac { SignType::HmacSha256 } else { SignType::Md5 };
                let m = merchant(sign_type);
                let mut p = crate::v2::sign::tests::s6();
                if hmac {
                    p.insert("sign_type".into(), "HMAC-SHA256".into());
                }
                for (k, v) in fields {
                    if k != "sign" && k != "sign_type" && (!keep_ids || !matches!(k.as_str(), "appid" | "mch_id" | "out_trade_no")) {
                        p.insert(k, v);
                    }
                }
                match &total_fee {
                    Some(f) => drop(p.insert("total_fee".into(), f.clone())),
                    None => drop(p.remove("total_fee")),
                }
                sign_in_place(&mut p, m.v2_key().unwrap(), sign_type);
                let body = xml::write(&p);
                let Ok(n) = parse(body.as_bytes(), &m) else {
                    return Ok(());
                };
                let o = order(status, order_total);
                if let Verdict::Apply(trade) = judge(&n, &m, Some(&o)) {
                    prop_assert_eq!(trade.total_fee, Fen(order_total));
                    prop_assert_eq!(p.get("appid"), Some(&m.appid));
                    prop_assert_eq!(p.get("mch_id"), Some(&m.mch_id));
                    prop_assert_eq!(p.get("result_code").map(String::as_str), Some("SUCCESS"));
                    prop_assert_eq!(p.get("return_code").map(String::as_str), Some("SUCCESS"));
                }
                prop_assert!(matches!(judge(&n, &m, None), Verdict::Reject(_)));
            }

            /// Arbitrary bytes never panic the notification parser and never verify.
            #[test]
            fn prop_garbage_notifications_never_verify(body in prop::collection::vec(any::<u8>(), 0..600)) {
                prop_assert!(parse(&body, &s6_merchant()).is_err());
            }
        }
    }
}
