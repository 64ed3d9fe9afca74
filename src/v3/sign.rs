//! Our side of APIv3's signatures (PROTOCOL.md "APIv3"): the `Authorization` header of every
//! request, and the `wx.requestPayment` paySign, both RSA-SHA256 PKCS#1 v1.5 with the merchant
//! API private key (`apiclient_key.pem`, PKCS#8).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer};
use sha2::Sha256;

/// The scheme of the `Authorization` header.
pub const AUTH_SCHEME: &str = "WECHATPAY2-SHA256-RSA2048";

/// Why a merchant private key could not be read. Never quotes the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error(
        "is not a PKCS#8 PEM private key (\"-----BEGIN PRIVATE KEY-----\", as apiclient_key.pem)"
    )]
    NotPkcs8Pem,
    #[error("is not an RSA key of at least 2048 bits")]
    NotRsa2048,
}

/// The merchant API private key. Prints nothing of itself.
#[derive(Clone, PartialEq)]
pub struct MerchantKey(SigningKey<Sha256>);

impl Eq for MerchantKey {}

impl fmt::Debug for MerchantKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MerchantKey(***)")
    }
}

/// A PEM as a variable may carry it: with real newlines, or with `\n` escapes (environment
/// variables often hold the latter), and surrounding whitespace.
pub fn unescape_pem(pem: &str) -> String {
    pem.trim().replace("\\r\\n", "\n").replace("\\n", "\n")
}

impl MerchantKey {
    /// Reads `apiclient_key.pem` (PKCS#8 PEM, RSA, ≥ 2048 bits).
    pub fn from_pem(pem: &str) -> Result<MerchantKey, KeyError> {
        let key = rsa::PrivateKey::from_pkcs8_pem(&unescape_pem(pem))
            .map_err(|_| KeyError::NotPkcs8Pem)?;
        if rsa::traits::PublicKeyParts::size(&key) < 256 {
            return Err(KeyError::NotRsa2048);
        }
        Ok(MerchantKey(SigningKey::new(key)))
    }

    /// Base64 of the RSA-SHA256 signature of `message`: one private-key operation.
    pub fn sign(&self, message: &[u8]) -> String {
        STANDARD.encode(self.0.sign(message).to_bytes())
    }
}

/// What a request's signature covers: `METHOD\nURL\nTIMESTAMP\nNONCE\nBODY\n`, URL the path
/// and query exactly as sent, BODY the exact bytes sent (empty for a GET).
pub fn request_message(method: &str, url: &str, timestamp: u64, nonce: &str, body: &str) -> String {
    format!("{method}\n{url}\n{timestamp}\n{nonce}\n{body}\n")
}

/// One request's signing inputs.
#[derive(Debug, Clone, Copy)]
pub struct RequestToSign<'a> {
    pub mchid: &'a str,
    /// The merchant API certificate's serial number (40 hex).
    pub serial_no: &'a str,
    pub method: &'a str,
    /// Path and query, as sent.
    pub url: &'a str,
    /// Unix seconds.
    pub timestamp: u64,
    pub nonce: &'a str,
    pub body: &'a str,
}

/// The `Authorization` header of a request.
pub fn authorization(key: &MerchantKey, r: &RequestToSign<'_>) -> String {
    let signature =
        key.sign(request_message(r.method, r.url, r.timestamp, r.nonce, r.body).as_bytes());
    format!(
        "{AUTH_SCHEME} mchid=\"{}\",nonce_str=\"{}\",signature=\"{signature}\",timestamp=\"{}\",serial_no=\"{}\"",
        r.mchid, r.nonce, r.timestamp, r.serial_no
    )
}

/// The v3 paySign of `wx.requestPayment` (`signType: "RSA"`): over
/// `appId\ntimeStamp\nnonceStr\npackage\n`. A private-key operation: sign once per prepay id.
pub fn pay_sign(
    key: &MerchantKey,
    app_id: &str,
    time_stamp: &str,
    nonce_str: &str,
    package: &str,
) -> String {
    key.sign(format!("{app_id}\n{time_stamp}\n{nonce_str}\n{package}\n").as_bytes())
}

/// Signs a reply or notification as WeChat Pay does (the simulator and test fakes play WeChat
/// with a development key): the `Wechatpay-*` headers over `timestamp\nnonce\nbody\n`.
pub fn wechatpay_headers(
    key: &MerchantKey,
    serial: &str,
    timestamp: u64,
    nonce: &str,
    body: &[u8],
) -> crate::v3::verify::SignatureHeaders {
    let timestamp = timestamp.to_string();
    let message = crate::v3::verify::response_message(&timestamp, nonce, body);
    crate::v3::verify::SignatureHeaders {
        signature: key.sign(&message),
        timestamp,
        nonce: nonce.to_owned(),
        serial: serial.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v3::vectors::{MERCHANT_KEY, MERCHANT_PUB, text, vector};
    use crate::v3::verify::PublicKey;

    fn merchant_key() -> MerchantKey {
        MerchantKey::from_pem(MERCHANT_KEY).unwrap()
    }

    #[test]
    fn v1_request_signature_and_authorization() {
        let v = vector("V1_request_signature");
        let timestamp: u64 = text(&v, "timestamp").parse().unwrap();
        let message = request_message(
            &text(&v, "method"),
            &text(&v, "url"),
            timestamp,
            &text(&v, "nonce"),
            &text(&v, "body"),
        );
        assert_eq!(message, text(&v, "message"));
        assert_eq!(
            merchant_key().sign(message.as_bytes()),
            text(&v, "signature")
        );
        let auth = authorization(
            &merchant_key(),
            &RequestToSign {
                mchid: "1230000109",
                serial_no: "1DDE55AD98ED71D6EDD4A4A16996DE7B47773A8C",
                method: &text(&v, "method"),
                url: &text(&v, "url"),
                timestamp,
                nonce: &text(&v, "nonce"),
                body: &text(&v, "body"),
            },
        );
        assert_eq!(auth, text(&v, "authorization"));
    }

    #[test]
    fn v1b_get_with_an_empty_body() {
        let v = vector("V1b_get_signature");
        let message = request_message(
            "GET",
            "/v3/pay/transactions/out-trade-no/1217752501201407033233368018?mchid=1230000109",
            1_554_208_460,
            "593BEC0C930BF1AFEB40B4A08C8FB242",
            "",
        );
        assert_eq!(message, text(&v, "message"));
        assert_eq!(
            merchant_key().sign(message.as_bytes()),
            text(&v, "signature")
        );
    }

    #[test]
    fn v4_pay_sign() {
        let v = vector("V4_pay_sign_rsa");
        let sign = pay_sign(
            &merchant_key(),
            &text(&v, "appId"),
            &text(&v, "timeStamp"),
            &text(&v, "nonceStr"),
            &text(&v, "package"),
        );
        assert_eq!(sign, text(&v, "paySign"));
        // And the merchant's public key verifies it (what WeChat's client does).
        let public = PublicKey::from_pem(MERCHANT_PUB).unwrap();
        assert!(public.verifies(text(&v, "message").as_bytes(), &sign));
    }

    #[test]
    fn keys_are_read_as_variables_carry_them_and_never_printed() {
        let escaped = MERCHANT_KEY.replace('\n', "\\n");
        let key = MerchantKey::from_pem(&escaped).unwrap();
        assert_eq!(key.sign(b"x"), merchant_key().sign(b"x"));
        assert_eq!(format!("{key:?}"), "MerchantKey(***)");
        assert_eq!(
            MerchantKey::from_pem(
                "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----"
            )
            .unwrap_err(),
            KeyError::NotPkcs8Pem
        );
        assert_eq!(
            MerchantKey::from_pem(MERCHANT_PUB).unwrap_err(),
            KeyError::NotPkcs8Pem
        );
        assert!(!KeyError::NotPkcs8Pem.to_string().contains("MII"));
    }
}
