//! APIv3 payment notifications (PROTOCOL.md "APIv3"): the headers' signature over the raw body
//! first, then the envelope, then the AES-256-GCM resource, which is the [`Transaction`].
//! Answers: success is HTTP 204 with no body; failure 4xx/5xx with `{"code":"FAIL","message"}`
//! (a 200 with a FAIL body would count as received).

use serde::{Deserialize, Serialize};

use super::aead::{self, AeadError};
use super::api::{ReplyError, Transaction};
use super::verify::{self, Signed, VerifyError, WechatPayKey};
use crate::secret::Secret;

/// The one event this app acts on.
pub const TRANSACTION_SUCCESS: &str = "TRANSACTION.SUCCESS";

/// Why a notification is not trusted or not readable (answer 401 / 400: WeChat delivers again;
/// never quotes the body).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    #[error("notification signature: {0}")]
    Signature(#[from] VerifyError),
    #[error("notification envelope is not the JSON expected: {0}")]
    Envelope(String),
    #[error("notification resource uses {0}, not AEAD_AES_256_GCM")]
    Algorithm(String),
    #[error("notification resource: {0}")]
    Decrypt(#[from] AeadError),
    #[error("notification transaction: {0}")]
    Transaction(#[from] ReplyError),
}

/// A verified, decrypted notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// WeChat's notification id (`EV-…`).
    pub id: String,
    pub event_type: String,
    pub transaction: Transaction,
}

#[derive(Deserialize)]
struct Envelope {
    id: String,
    event_type: String,
    resource: Resource,
}

#[derive(Deserialize)]
struct Resource {
    algorithm: String,
    ciphertext: String,
    #[serde(default)]
    associated_data: String,
    nonce: String,
}

/// Verifies (with `keys` at `now`), reads and decrypts (with the APIv3 key) a payment
/// notification.
pub fn parse(
    signed: &Signed<'_>,
    keys: &[WechatPayKey],
    apiv3_key: &Secret,
    now: u64,
) -> Result<Notification, NotifyError> {
    let (envelope, plaintext) = open_envelope(signed, keys, apiv3_key, now)?;
    Ok(Notification {
        id: envelope.id,
        event_type: envelope.event_type,
        transaction: Transaction::parse(&plaintext)?,
    })
}

/// Verifies and decrypts any notification (payment or refund): its `event_type` and its
/// resource's plaintext.
pub fn open(
    signed: &Signed<'_>,
    keys: &[WechatPayKey],
    apiv3_key: &Secret,
    now: u64,
) -> Result<(String, Vec<u8>), NotifyError> {
    open_envelope(signed, keys, apiv3_key, now).map(|(e, plaintext)| (e.event_type, plaintext))
}

/// The signature over the raw body first, then the envelope, then the resource.
fn open_envelope(
    signed: &Signed<'_>,
    keys: &[WechatPayKey],
    apiv3_key: &Secret,
    now: u64,
) -> Result<(Envelope, Vec<u8>), NotifyError> {
    verify::verify(signed, keys, now)?;
    let envelope: Envelope =
        serde_json::from_slice(signed.body).map_err(|e| NotifyError::Envelope(e.to_string()))?;
    let r = &envelope.resource;
    if r.algorithm != "AEAD_AES_256_GCM" {
        return Err(NotifyError::Algorithm(
            crate::v2::api::cut_to_bytes(&r.algorithm, 32).to_owned(),
        ));
    }
    let plaintext = aead::decrypt(apiv3_key, &r.nonce, &r.associated_data, &r.ciphertext)?;
    Ok((envelope, plaintext))
}

impl Notification {
    /// What the notification reports, for the version-neutral [`crate::payment::judge`]:
    /// only a `TRANSACTION.SUCCESS` whose transaction is SUCCESS carries a payment.
    pub fn report(&self) -> crate::payment::PaymentReport {
        use crate::payment::short;
        let t = &self.transaction;
        let payment = if self.event_type != TRANSACTION_SUCCESS {
            Err(format!(
                "notification event_type {}",
                short(&self.event_type)
            ))
        } else if t.trade_state() != crate::v2::api::TradeState::Success {
            Err(format!(
                "notification trade_state {}",
                short(&t.trade_state)
            ))
        } else {
            match t.paid() {
                Ok(Some(trade)) => Ok(trade),
                Ok(None) => Err("notification carries no payment".into()),
                Err(e) => Err(e.to_string()),
            }
        };
        crate::payment::PaymentReport {
            call_failed: None,
            appid: t.appid.clone(),
            mchid: t.mchid.clone(),
            payment,
        }
    }
}

#[derive(Serialize)]
struct OutgoingEnvelope<'a> {
    id: &'a str,
    create_time: &'a str,
    resource_type: &'static str,
    event_type: &'static str,
    summary: &'static str,
    resource: OutgoingResource<'a>,
}

#[derive(Serialize)]
struct OutgoingResource<'a> {
    original_type: &'static str,
    algorithm: &'static str,
    ciphertext: String,
    associated_data: &'static str,
    nonce: &'a str,
}

/// A payment notification's body as WeChat Pay sends it (the simulator, and tests playing
/// WeChat): `transaction` (a Transaction's JSON) encrypted with the APIv3 key under `nonce`
/// (12 bytes) and AAD `transaction`, in WeChat's `TRANSACTION.SUCCESS` envelope. The caller
/// signs it (`sign::wechatpay_headers`).
pub fn payment_envelope(
    apiv3_key: &Secret,
    nonce: &str,
    id: &str,
    create_time: &str,
    transaction: &str,
) -> Result<String, AeadError> {
    let ciphertext = aead::encrypt(apiv3_key, nonce, "transaction", transaction.as_bytes())?;
    let envelope = OutgoingEnvelope {
        id,
        create_time,
        resource_type: "encrypt-resource",
        event_type: TRANSACTION_SUCCESS,
        summary: "支付成功",
        resource: OutgoingResource {
            original_type: "transaction",
            algorithm: "AEAD_AES_256_GCM",
            ciphertext,
            associated_data: "transaction",
            nonce,
        },
    };
    serde_json::to_string(&envelope).map_err(|_| AeadError::Authentication)
}

#[derive(Serialize)]
struct FailBody<'a> {
    code: &'static str,
    message: &'a str,
}

/// The body of a failure answer (with a 4xx/5xx status): `{"code":"FAIL","message"}`.
pub fn fail_body(message: &str) -> String {
    serde_json::to_string(&FailBody {
        code: "FAIL",
        message: crate::v2::api::cut_to_bytes(message, 128),
    })
    .unwrap_or_else(|_| r#"{"code":"FAIL","message":""}"#.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v3::vectors::{WECHATPAY_PUB, signed, text, vector};
    use crate::v3::verify::PublicKey;

    const NOW: u64 = 1_554_209_980;

    fn keys() -> Vec<WechatPayKey> {
        vec![WechatPayKey {
            id: "PUB_KEY_ID_0112345678902025112700000000000001".into(),
            key: PublicKey::from_pem(WECHATPAY_PUB).unwrap(),
        }]
    }

    #[test]
    fn v3_notification_verifies_decrypts_and_reads() {
        let v = vector("V3_notification");
        let body = text(&v, "body");
        let key = Secret::new(text(&v, "apiv3_key"));
        let n = parse(&signed(&v, body.as_bytes()), &keys(), &key, NOW).unwrap();
        assert_eq!(n.id, "EV-2018022511223320873");
        assert_eq!(n.event_type, TRANSACTION_SUCCESS);
        assert_eq!(
            n.transaction,
            Transaction::parse(text(&v, "plaintext").as_bytes()).unwrap()
        );
    }

    #[test]
    fn refused_before_decrypting_when_untrusted() {
        let v = vector("V3_notification");
        let body = text(&v, "body");
        let key = Secret::new(text(&v, "apiv3_key"));
        // Tampered body: the signature fails first.
        let tampered = body.replace("EV-2018", "EV-2019");
        assert_eq!(
            parse(&signed(&v, tampered.as_bytes()), &keys(), &key, NOW),
            Err(NotifyError::Signature(VerifyError::Mismatch))
        );
        // Stale.
        assert!(matches!(
            parse(&signed(&v, body.as_bytes()), &keys(), &key, NOW + 3600),
            Err(NotifyError::Signature(VerifyError::Stale { .. }))
        ));
        // Trusted, but our APIv3 key is another: it cannot be read.
        let other = Secret::new("b7cde1ef4e9a0ba9d5e3b2c1f0e9d8c7");
        assert_eq!(
            parse(&signed(&v, body.as_bytes()), &keys(), &other, NOW),
            Err(NotifyError::Decrypt(AeadError::Authentication))
        );
    }

    #[test]
    fn failure_body() {
        assert_eq!(fail_body("busy"), r#"{"code":"FAIL","message":"busy"}"#);
        // JSON-escaped, and bounded.
        assert_eq!(fail_body("引号\""), r#"{"code":"FAIL","message":"引号\""}"#);
        let long = fail_body(&"x".repeat(500));
        assert_eq!(long.len(), r#"{"code":"FAIL","message":""}"#.len() + 128);
    }
}
