//! APIv3 refunds (PROTOCOL.md "Refunds"): `POST /v3/refund/domestic/refunds` (no client
//! certificate: the request's RSA signature authenticates it), the query
//! `GET /v3/refund/domestic/refunds/{out_refund_no}`, and the refund notification: the payment
//! notification's signed, encrypted envelope with `event_type` `REFUND.SUCCESS`,
//! `REFUND.ABNORMAL` or `REFUND.CLOSED` and a refund as plaintext.

use serde::{Deserialize, Serialize};

use super::api::{ReplyError, RequestError};
use super::notify::{self, NotifyError};
use super::verify::{Signed, WechatPayKey};
use crate::money::Fen;
use crate::order::valid_out_trade_no;
use crate::refund::{MAX_REASON_CHARS, RefundReport, RefundStatus, valid_refund_no};
use crate::secret::Secret;
use crate::time::parse_rfc3339_offset;

/// `POST` a refund here.
pub const REFUNDS_PATH: &str = "/v3/refund/domestic/refunds";

/// The query of a refund by our number: `GET` this.
pub fn refund_query_url(out_refund_no: &str) -> String {
    format!("{REFUNDS_PATH}/{out_refund_no}")
}

/// A refund as asked of WeChat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefundOrder<'a> {
    pub out_trade_no: &'a str,
    pub out_refund_no: &'a str,
    pub reason: Option<&'a str>,
    pub notify_url: Option<&'a str>,
    pub refund: Fen,
    /// The order's paid total.
    pub total: Fen,
}

#[derive(Serialize)]
struct RefundBody<'a> {
    out_trade_no: &'a str,
    out_refund_no: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    notify_url: Option<&'a str>,
    amount: RefundAmount,
}

#[derive(Serialize)]
struct RefundAmount {
    refund: u64,
    total: u64,
    currency: &'static str,
}

/// The JSON body of a refund, checked against WeChat's rules first. Retrying sends these same
/// bytes: WeChat refunds once per `out_refund_no`.
pub fn refund_body(r: &RefundOrder<'_>) -> Result<String, RequestError> {
    let bad = |field, problem| Err(RequestError { field, problem });
    if !valid_out_trade_no(r.out_trade_no) {
        return bad("out_trade_no", "must be 6-32 characters of [0-9A-Za-z_-|*]");
    }
    if !valid_refund_no(r.out_refund_no) {
        return bad(
            "out_refund_no",
            "must be 1-64 characters of [0-9A-Za-z_-|*@]",
        );
    }
    if r.refund == Fen(0) || r.refund > r.total {
        return bad(
            "amount.refund",
            "must be at least 1 fen and at most the total",
        );
    }
    if r.reason.is_some_and(|s| {
        s.chars().count() > MAX_REASON_CHARS || s.chars().any(|c| c.len_utf8() == 4)
    }) {
        return bad("reason", "must be at most 80 characters without emoji");
    }
    let body = RefundBody {
        out_trade_no: r.out_trade_no,
        out_refund_no: r.out_refund_no,
        reason: r.reason.filter(|s| !s.is_empty()),
        notify_url: r.notify_url,
        amount: RefundAmount {
            refund: r.refund.0,
            total: r.total.0,
            currency: "CNY",
        },
    };
    serde_json::to_string(&body).map_err(|_| RequestError {
        field: "body",
        problem: "cannot be encoded",
    })
}

/// A refund as APIv3 describes it: a refund reply, a query answer, a notification's
/// plaintext (which names the status `refund_status`, the others `status`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct V3Refund {
    pub out_trade_no: String,
    pub out_refund_no: String,
    #[serde(default)]
    pub refund_id: String,
    #[serde(default, alias = "refund_status")]
    pub status: String,
    #[serde(default)]
    pub success_time: Option<String>,
    pub amount: V3RefundAmount,
    #[serde(default)]
    pub mchid: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct V3RefundAmount {
    pub refund: u64,
    pub total: u64,
}

impl V3Refund {
    /// Reads a refund JSON (a verified reply's body, or a notification's plaintext).
    pub fn parse(body: &[u8]) -> Result<V3Refund, ReplyError> {
        serde_json::from_slice(body).map_err(|e| ReplyError::Malformed(e.to_string()))
    }

    /// What it says, version-neutrally.
    pub fn report(&self) -> Result<RefundReport, ReplyError> {
        let status = RefundStatus::parse(&self.status).ok_or_else(|| {
            ReplyError::Malformed(format!(
                "unknown refund status {}",
                crate::payment::short(&self.status)
            ))
        })?;
        Ok(RefundReport {
            out_trade_no: self.out_trade_no.clone(),
            refund_no: self.out_refund_no.clone(),
            refund_id: self.refund_id.clone(),
            status,
            refund_fee: Fen(self.amount.refund),
            total_fee: Fen(self.amount.total),
            success_time: self
                .success_time
                .as_deref()
                .and_then(|t| parse_rfc3339_offset(t).ok()),
        })
    }
}

/// The refund events this app acts on.
pub const REFUND_EVENTS: [&str; 3] = ["REFUND.SUCCESS", "REFUND.ABNORMAL", "REFUND.CLOSED"];

/// Verifies, decrypts and reads a refund notification: a refund event of our merchant.
pub fn parse_refund_notification(
    signed: &Signed<'_>,
    keys: &[WechatPayKey],
    apiv3_key: &Secret,
    mchid: &str,
    now: u64,
) -> Result<RefundReport, NotifyError> {
    let (event_type, plaintext) = notify::open(signed, keys, apiv3_key, now)?;
    if !REFUND_EVENTS.contains(&event_type.as_str()) {
        return Err(NotifyError::Envelope(format!(
            "event_type {} is not a refund's",
            crate::payment::short(&event_type)
        )));
    }
    let refund = V3Refund::parse(&plaintext)?;
    if refund.mchid.as_deref().is_some_and(|m| m != mchid) {
        return Err(NotifyError::Transaction(ReplyError::Foreign("mchid")));
    }
    Ok(refund.report()?)
}

/// A refund notification's body as WeChat Pay sends it (the simulator, and tests playing
/// WeChat): `refund` (the refund's JSON, which names its status `refund_status`) encrypted with
/// the APIv3 key under `nonce` (12 bytes) and AAD `refund`, in WeChat's envelope with
/// `event_type` (one of [`REFUND_EVENTS`]) and `original_type` `refund`. The caller signs it
/// (`sign::wechatpay_headers`).
pub fn refund_envelope(
    apiv3_key: &Secret,
    nonce: &str,
    id: &str,
    create_time: &str,
    event_type: &str,
    refund: &str,
) -> Result<String, crate::v3::aead::AeadError> {
    let ciphertext = crate::v3::aead::encrypt(apiv3_key, nonce, "refund", refund.as_bytes())?;
    let summary = match event_type {
        "REFUND.SUCCESS" => "退款成功",
        "REFUND.CLOSED" => "退款关闭",
        _ => "退款异常",
    };
    Ok(serde_json::json!({
        "id": id,
        "create_time": create_time,
        "resource_type": "encrypt-resource",
        "event_type": event_type,
        "summary": summary,
        "resource": {
            "original_type": "refund",
            "algorithm": "AEAD_AES_256_GCM",
            "ciphertext": ciphertext,
            "associated_data": "refund",
            "nonce": nonce,
        },
    })
    .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v3::sign::{MerchantKey, wechatpay_headers};
    use crate::v3::vectors::WECHATPAY_PUB;
    use crate::v3::verify::PublicKey;

    const KEY_ID: &str = "PUB_KEY_ID_0112345678902025112700000000000001";
    const APIV3_KEY: &str = "a7cde1ef4e9a0ba9d5e3b2c1f0e9d8c7";
    const NOW: u64 = 1_714_550_600;

    fn order() -> RefundOrder<'static> {
        RefundOrder {
            out_trade_no: "1217752501201407033233368018",
            out_refund_no: "R1",
            reason: Some("商品已售完"),
            notify_url: Some("https://shop.example.com/api/wxpay/refund-notify"),
            refund: Fen(1),
            total: Fen(1),
        }
    }

    #[test]
    fn refund_bodies_follow_wechats_rules() {
        assert_eq!(
            refund_body(&order()).unwrap(),
            r#"{"out_trade_no":"1217752501201407033233368018","out_refund_no":"R1","reason":"商品已售完","notify_url":"https://shop.example.com/api/wxpay/refund-notify","amount":{"refund":1,"total":1,"currency":"CNY"}}"#
        );
        assert_eq!(refund_query_url("R1"), "/v3/refund/domestic/refunds/R1");
        for (bad, field) in [
            (
                RefundOrder {
                    refund: Fen(2),
                    ..order()
                },
                "amount.refund",
            ),
            (
                RefundOrder {
                    refund: Fen(0),
                    ..order()
                },
                "amount.refund",
            ),
            (
                RefundOrder {
                    out_refund_no: "a b",
                    ..order()
                },
                "out_refund_no",
            ),
            (
                RefundOrder {
                    reason: Some("退款😀"),
                    ..order()
                },
                "reason",
            ),
        ] {
            assert_eq!(refund_body(&bad).unwrap_err().field, field);
        }
    }

    fn refund_notification(
        event: &str,
        plaintext: &str,
    ) -> (String, crate::v3::verify::SignatureHeaders) {
        let key = Secret::new(APIV3_KEY);
        let ciphertext =
            crate::v3::aead::encrypt(&key, "0123456789ab", "refund", plaintext.as_bytes()).unwrap();
        let body = serde_json::json!({
            "id": "EV-1", "create_time": "2024-05-01T16:03:20+08:00",
            "resource_type": "encrypt-resource", "event_type": event, "summary": "退款成功",
            "resource": {"original_type": "refund", "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": ciphertext, "associated_data": "refund", "nonce": "0123456789ab"}
        })
        .to_string();
        let wechat = MerchantKey::from_pem(include_str!("testdata/wechatpay_key.pem")).unwrap();
        let headers = wechatpay_headers(&wechat, KEY_ID, NOW, "n", body.as_bytes());
        (body, headers)
    }

    #[test]
    fn a_built_refund_envelope_opens_and_reads() {
        let keys = [WechatPayKey {
            id: KEY_ID.into(),
            key: PublicKey::from_pem(WECHATPAY_PUB).unwrap(),
        }];
        let key = Secret::new(APIV3_KEY);
        let plaintext = r#"{"mchid":"1900000100","out_trade_no":"1217752501201407033233368018","out_refund_no":"R1","refund_id":"5000","refund_status":"CLOSED","amount":{"total":3980,"refund":1990}}"#;
        let body = refund_envelope(
            &key,
            "0123456789ab",
            "EV-R1",
            "2024-05-01T16:03:20+08:00",
            "REFUND.CLOSED",
            plaintext,
        )
        .unwrap();
        let wechat = MerchantKey::from_pem(include_str!("testdata/wechatpay_key.pem")).unwrap();
        let headers = wechatpay_headers(&wechat, KEY_ID, NOW, "n", body.as_bytes());
        let report = parse_refund_notification(
            &headers.signed(body.as_bytes()),
            &keys,
            &key,
            "1900000100",
            NOW,
        )
        .unwrap();
        assert_eq!(report.status, RefundStatus::Closed);
        assert_eq!(report.refund_fee, Fen(1990));
        let envelope: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(envelope["resource"]["original_type"], "refund");
        assert_eq!(envelope["summary"], "退款关闭");
    }

    #[test]
    fn refund_notifications_verify_decrypt_and_read() {
        let keys = [WechatPayKey {
            id: KEY_ID.into(),
            key: PublicKey::from_pem(WECHATPAY_PUB).unwrap(),
        }];
        let plaintext = r#"{"mchid":"1900000100","out_trade_no":"1217752501201407033233368018","transaction_id":"4200","out_refund_no":"R1","refund_id":"50000000382019052709732678859","refund_status":"SUCCESS","success_time":"2024-05-01T16:03:12+08:00","amount":{"total":3980,"refund":1990,"payer_total":3980,"payer_refund":1990}}"#;
        let (body, headers) = refund_notification("REFUND.SUCCESS", plaintext);
        let key = Secret::new(APIV3_KEY);
        let report = parse_refund_notification(
            &headers.signed(body.as_bytes()),
            &keys,
            &key,
            "1900000100",
            NOW,
        )
        .unwrap();
        assert_eq!(report.status, RefundStatus::Success);
        assert_eq!(report.refund_fee, Fen(1990));
        assert_eq!(report.total_fee, Fen(3980));
        assert_eq!(report.success_time, Some(1_714_550_592));
        // Another merchant's refund, a payment event, a tampered body: refused.
        assert!(
            parse_refund_notification(
                &headers.signed(body.as_bytes()),
                &keys,
                &key,
                "1900000101",
                NOW
            )
            .is_err()
        );
        let (body, headers) = refund_notification("TRANSACTION.SUCCESS", plaintext);
        assert!(matches!(
            parse_refund_notification(
                &headers.signed(body.as_bytes()),
                &keys,
                &key,
                "1900000100",
                NOW
            ),
            Err(NotifyError::Envelope(_))
        ));
        let tampered = body.replace("EV-1", "EV-2");
        assert!(matches!(
            parse_refund_notification(
                &headers.signed(tampered.as_bytes()),
                &keys,
                &key,
                "1900000100",
                NOW
            ),
            Err(NotifyError::Signature(_))
        ));
        // A query answer names the status `status`.
        let answer = plaintext
            .replace("refund_status", "status")
            .replace("SUCCESS", "PROCESSING");
        let r = V3Refund::parse(answer.as_bytes())
            .unwrap()
            .report()
            .unwrap();
        assert_eq!(r.status, RefundStatus::Processing);
    }
}
