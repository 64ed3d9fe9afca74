//! WeChat's side of APIv3's signatures (PROTOCOL.md "APIv3"): every reply and notification is
//! verified before it is read, over `TIMESTAMP\nNONCE\nRAW_BODY\n` from its `Wechatpay-*`
//! headers, with the key whose id (the WeChat Pay public key's `PUB_KEY_ID_…`) or serial (a
//! platform certificate's) equals `Wechatpay-Serial`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier;
use sha2::Sha256;

use super::sign::unescape_pem;

/// A signature older or newer than this (seconds, either way) is refused: a replay window.
pub const MAX_CLOCK_SKEW_SECS: u64 = 300;

/// What WeChat sends to probe that a merchant verifies: such a signature must fail.
pub const SIGNTEST_PREFIX: &str = "WECHATPAY/SIGNTEST/";

/// A public key of WeChat Pay (the WeChat Pay public key, or a platform certificate's).
#[derive(Debug, Clone, PartialEq)]
pub struct PublicKey(VerifyingKey<Sha256>);

impl Eq for PublicKey {}

impl PublicKey {
    /// Reads an SPKI PEM (`-----BEGIN PUBLIC KEY-----`, as `pub_key.pem`), with real or `\n`-
    /// escaped newlines.
    pub fn from_pem(pem: &str) -> Result<PublicKey, VerifyError> {
        rsa::PublicKey::from_public_key_pem(&unescape_pem(pem))
            .map(|k| PublicKey(VerifyingKey::new(k)))
            .map_err(|_| VerifyError::BadPublicKey)
    }

    /// A key read elsewhere (a platform certificate's).
    pub fn from_rsa(key: rsa::PublicKey) -> PublicKey {
        PublicKey(VerifyingKey::new(key))
    }

    /// Reads an SPKI DER (a stored platform certificate's key).
    pub fn from_der(der: &[u8]) -> Result<PublicKey, VerifyError> {
        rsa::PublicKey::from_public_key_der(der)
            .map(PublicKey::from_rsa)
            .map_err(|_| VerifyError::BadPublicKey)
    }

    /// Whether `signature_base64` is this key's RSA-SHA256 signature of `message`.
    pub fn verifies(&self, message: &[u8], signature_base64: &str) -> bool {
        let Ok(bytes) = STANDARD.decode(signature_base64) else {
            return false;
        };
        let Ok(signature) = Signature::try_from(bytes.as_slice()) else {
            return false;
        };
        self.0.verify(message, &signature).is_ok()
    }
}

/// A key WeChat may sign with, under the id `Wechatpay-Serial` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WechatPayKey {
    /// `PUB_KEY_ID_…`, or a platform certificate's serial number (hex).
    pub id: String,
    pub key: PublicKey,
}

/// The `Wechatpay-*` headers of a reply or notification, as received.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignatureHeaders {
    pub timestamp: String,
    pub nonce: String,
    pub signature: String,
    pub serial: String,
}

impl SignatureHeaders {
    /// The headers through `header` (a case-insensitive lookup), when `Wechatpay-Signature` is
    /// present: that header is what marks a message as APIv3. Missing others stay empty (and
    /// fail [`verify`], naming the header).
    pub fn from_lookup<'a>(header: impl Fn(&str) -> Option<&'a str>) -> Option<Self> {
        let signature = header("wechatpay-signature")?.to_owned();
        let get = |name| header(name).unwrap_or("").to_owned();
        Some(Self {
            timestamp: get("wechatpay-timestamp"),
            nonce: get("wechatpay-nonce"),
            signature,
            serial: get("wechatpay-serial"),
        })
    }

    /// These headers with the raw `body` they sign.
    pub fn signed<'a>(&'a self, body: &'a [u8]) -> Signed<'a> {
        Signed {
            timestamp: &self.timestamp,
            nonce: &self.nonce,
            signature: &self.signature,
            serial: &self.serial,
            body,
        }
    }

    /// The headers as sent (the simulator and tests sign their messages with these).
    pub fn to_headers(&self) -> [(&'static str, String); 4] {
        [
            ("Wechatpay-Timestamp", self.timestamp.clone()),
            ("Wechatpay-Nonce", self.nonce.clone()),
            ("Wechatpay-Signature", self.signature.clone()),
            ("Wechatpay-Serial", self.serial.clone()),
        ]
    }
}

/// The `Wechatpay-*` headers and the raw body of a reply or notification.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    pub timestamp: &'a str,
    pub nonce: &'a str,
    pub signature: &'a str,
    pub serial: &'a str,
    /// The body exactly as received (never re-serialized).
    pub body: &'a [u8],
}

/// Why a reply or notification is not trusted. Carries no signature or body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the Wechatpay-{0} header is missing")]
    MissingHeader(&'static str),
    #[error("no key with serial {0} is configured")]
    UnknownSerial(String),
    #[error("Wechatpay-Timestamp is not a Unix time")]
    BadTimestamp,
    #[error("signed {skew} s away from now (at most {MAX_CLOCK_SKEW_SECS} s either way)")]
    Stale { skew: u64 },
    #[error("a WECHATPAY/SIGNTEST/ probe signature (it must not verify)")]
    SignTest,
    #[error("the signature does not verify")]
    Mismatch,
    #[error("not an SPKI PEM public key (\"-----BEGIN PUBLIC KEY-----\")")]
    BadPublicKey,
}

/// What a reply's or notification's signature covers.
pub fn response_message(timestamp: &str, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(timestamp.len() + nonce.len() + body.len() + 3);
    for part in [timestamp.as_bytes(), nonce.as_bytes(), body] {
        message.extend_from_slice(part);
        message.push(b'\n');
    }
    message
}

/// Verifies a reply or notification against `keys` at `now` (Unix seconds): headers present,
/// the serial known, the time within [`MAX_CLOCK_SKEW_SECS`], not a SIGNTEST probe, and the
/// signature over the raw body.
pub fn verify(signed: &Signed<'_>, keys: &[WechatPayKey], now: u64) -> Result<(), VerifyError> {
    for (value, name) in [
        (signed.timestamp, "Timestamp"),
        (signed.nonce, "Nonce"),
        (signed.signature, "Signature"),
        (signed.serial, "Serial"),
    ] {
        if value.is_empty() {
            return Err(VerifyError::MissingHeader(name));
        }
    }
    if signed.signature.starts_with(SIGNTEST_PREFIX) {
        return Err(VerifyError::SignTest);
    }
    let key = keys.iter().find(|k| k.id == signed.serial).ok_or_else(|| {
        VerifyError::UnknownSerial(crate::v2::api::cut_to_bytes(signed.serial, 64).to_owned())
    })?;
    let timestamp: u64 = signed
        .timestamp
        .parse()
        .map_err(|_| VerifyError::BadTimestamp)?;
    let skew = now.abs_diff(timestamp);
    if skew >= MAX_CLOCK_SKEW_SECS {
        return Err(VerifyError::Stale { skew });
    }
    let message = response_message(signed.timestamp, signed.nonce, signed.body);
    if key.key.verifies(&message, signed.signature) {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v3::vectors::{WECHATPAY_PUB, signed, text, vector};

    const PUB_KEY_ID: &str = "PUB_KEY_ID_0112345678902025112700000000000001";

    fn keys() -> Vec<WechatPayKey> {
        vec![WechatPayKey {
            id: PUB_KEY_ID.into(),
            key: PublicKey::from_pem(WECHATPAY_PUB).unwrap(),
        }]
    }

    const NOW: u64 = 1_554_209_980;

    #[test]
    fn v2_reply_verifies_over_its_raw_body() {
        let v = vector("V2_response_signature");
        let body = text(&v, "body");
        let s = signed(&v, body.as_bytes());
        assert_eq!(
            response_message(s.timestamp, s.nonce, s.body),
            text(&v, "message").into_bytes()
        );
        assert_eq!(verify(&s, &keys(), NOW), Ok(()));
        // The same JSON re-serialized (a space) no longer verifies: the raw body is signed.
        let spaced = body.replace(':', ": ");
        assert_eq!(
            verify(&signed(&v, spaced.as_bytes()), &keys(), NOW),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn v2b_an_empty_204_body_verifies() {
        let v = vector("V2b_empty_body_signature");
        let v2 = vector("V2_response_signature");
        let mut s = signed(&v2, b"");
        let signature = text(&v, "signature");
        s.signature = &signature;
        assert_eq!(
            response_message(s.timestamp, s.nonce, b""),
            text(&v, "message").into_bytes()
        );
        assert_eq!(verify(&s, &keys(), NOW), Ok(()));
    }

    #[test]
    fn v3_notification_headers_verify() {
        let v = vector("V3_notification");
        let body = text(&v, "body");
        assert_eq!(verify(&signed(&v, body.as_bytes()), &keys(), NOW), Ok(()));
    }

    #[test]
    fn refusals() {
        let v = vector("V2_response_signature");
        let body = text(&v, "body");
        let ok = signed(&v, body.as_bytes());
        // The replay window, both ways, and its edge.
        assert_eq!(verify(&ok, &keys(), NOW + 299), Ok(()));
        assert_eq!(
            verify(&ok, &keys(), NOW + 300),
            Err(VerifyError::Stale { skew: 300 })
        );
        assert_eq!(
            verify(&ok, &keys(), NOW - 301),
            Err(VerifyError::Stale { skew: 301 })
        );
        // An unknown serial.
        let mut s = ok;
        s.serial = "PUB_KEY_ID_0000";
        assert_eq!(
            verify(&s, &keys(), NOW),
            Err(VerifyError::UnknownSerial("PUB_KEY_ID_0000".into()))
        );
        // SIGNTEST must fail.
        let mut s = ok;
        s.signature = "WECHATPAY/SIGNTEST/abcdef";
        assert_eq!(verify(&s, &keys(), NOW), Err(VerifyError::SignTest));
        // Missing headers, garbage.
        let mut s = ok;
        s.nonce = "";
        assert_eq!(
            verify(&s, &keys(), NOW),
            Err(VerifyError::MissingHeader("Nonce"))
        );
        let mut s = ok;
        s.timestamp = "soon";
        assert_eq!(verify(&s, &keys(), NOW), Err(VerifyError::BadTimestamp));
        let mut s = ok;
        s.signature = "!!!";
        assert_eq!(verify(&s, &keys(), NOW), Err(VerifyError::Mismatch));
        // Another nonce.
        let mut s = ok;
        s.nonce = "c5ac7061fccab6bf3e254dcf98995b8d";
        assert_eq!(verify(&s, &keys(), NOW), Err(VerifyError::Mismatch));
        // The merchant's own key is not WeChat's.
        let wrong = vec![WechatPayKey {
            id: PUB_KEY_ID.into(),
            key: PublicKey::from_pem(crate::v3::vectors::MERCHANT_PUB).unwrap(),
        }];
        assert_eq!(verify(&ok, &wrong, NOW), Err(VerifyError::Mismatch));
        assert!(PublicKey::from_pem("nope").is_err());
        assert!(PublicKey::from_pem(&WECHATPAY_PUB.replace('\n', "\\n")).is_ok());
    }
}
