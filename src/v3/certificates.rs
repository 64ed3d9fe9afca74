//! APIv3 platform certificates (PROTOCOL.md "APIv3"): merchants registered before 2024 may
//! verify WeChat with platform certificates instead of the WeChat Pay public key. They are
//! downloaded from `GET /v3/certificates`, each encrypted with the APIv3 key, and kept by serial
//! number; a new one starts signing up to 5 days before the old one expires, so every unexpired
//! one is kept. The reply itself is verified with the certificates it carries or known ones (the
//! caller's part: [`PlatformCertificate::to_key`] then `verify::verify`). What is stored is a
//! [`StoredCertificate`]: the serial, the validity and the public key, so that verifying a
//! message (the notify route, per request) never parses X.509.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rsa::pkcs8::DecodePublicKey;
use serde::{Deserialize, Serialize};
use x509_cert::Certificate;
use x509_cert::der::{DecodePem, Encode};

use super::aead::{self, AeadError};
use super::verify::{PublicKey, WechatPayKey};
use crate::secret::Secret;

/// Where the certificates are listed (`GET`).
pub const CERTIFICATES_PATH: &str = "/v3/certificates";

/// Why a certificate could not be used. Never quotes certificate bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("the certificate list is not the JSON expected: {0}")]
    Reply(String),
    #[error("certificate {serial}: {problem}")]
    Certificate { serial: String, problem: String },
    #[error("certificate {serial}: {source}")]
    Decrypt { serial: String, source: AeadError },
}

/// A platform certificate: what verifying needs of it.
#[derive(Debug, Clone)]
pub struct PlatformCertificate {
    /// Uppercase hex, as `Wechatpay-Serial` names it.
    pub serial: String,
    /// Unix seconds.
    pub not_before: u64,
    pub not_after: u64,
    pub key: PublicKey,
    /// The key as SPKI DER (what is stored).
    pub spki_der: Vec<u8>,
}

/// A platform certificate as kept in KV by its serial: what verifying needs, no X.509.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCertificate {
    pub serial: String,
    pub not_before: u64,
    pub not_after: u64,
    /// Base64 of the SPKI DER public key.
    pub public_key: String,
}

impl StoredCertificate {
    /// The key under its serial, if valid at `now` and readable.
    pub fn to_key(&self, now: u64) -> Option<WechatPayKey> {
        if !(self.not_before <= now && now < self.not_after) {
            return None;
        }
        let der = STANDARD.decode(&self.public_key).ok()?;
        Some(WechatPayKey {
            id: self.serial.clone(),
            key: PublicKey::from_der(&der).ok()?,
        })
    }
}

impl PlatformCertificate {
    /// Reads a PEM certificate.
    pub fn from_pem(pem: &str) -> Result<PlatformCertificate, String> {
        let cert = Certificate::from_pem(pem.trim().as_bytes())
            .map_err(|_| "is not a PEM X.509 certificate".to_owned())?;
        let tbs = cert.tbs_certificate();
        let bytes = tbs.serial_number().as_bytes();
        // DER integers carry a leading zero byte when the high bit is set; WeChat's serials do not.
        let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
        let serial = hex::encode_upper(&bytes[first..]);
        let validity = tbs.validity();
        let spki = tbs
            .subject_public_key_info()
            .to_der()
            .map_err(|_| "has an unreadable public key".to_owned())?;
        let key = rsa::PublicKey::from_public_key_der(&spki)
            .map_err(|_| "does not carry an RSA public key".to_owned())?;
        Ok(PlatformCertificate {
            serial,
            not_before: validity.not_before.to_unix_duration().as_secs(),
            not_after: validity.not_after.to_unix_duration().as_secs(),
            key: PublicKey::from_rsa(key),
            spki_der: spki,
        })
    }

    /// What is stored of it.
    pub fn stored(&self) -> StoredCertificate {
        StoredCertificate {
            serial: self.serial.clone(),
            not_before: self.not_before,
            not_after: self.not_after,
            public_key: STANDARD.encode(&self.spki_der),
        }
    }

    /// Whether it may sign at `now`.
    pub fn valid_at(&self, now: u64) -> bool {
        self.not_before <= now && now < self.not_after
    }

    /// The key under its serial.
    pub fn to_key(&self) -> WechatPayKey {
        WechatPayKey {
            id: self.serial.clone(),
            key: self.key.clone(),
        }
    }
}

#[derive(Deserialize)]
struct Listing {
    data: Vec<Listed>,
}

#[derive(Deserialize)]
struct Listed {
    serial_no: String,
    encrypt_certificate: Encrypted,
}

#[derive(Deserialize)]
struct Encrypted {
    algorithm: String,
    nonce: String,
    #[serde(default)]
    associated_data: String,
    ciphertext: String,
}

/// Decrypts and reads every certificate of a `GET /v3/certificates` reply body and keeps the
/// ones valid at `now`. A certificate whose content does not match its listed serial, or that
/// does not decrypt, fails the whole list (a list we cannot read completely is not trusted).
pub fn read_listing(
    body: &[u8],
    apiv3_key: &Secret,
    now: u64,
) -> Result<Vec<PlatformCertificate>, CertError> {
    let listing: Listing =
        serde_json::from_slice(body).map_err(|e| CertError::Reply(e.to_string()))?;
    let mut kept = Vec::new();
    for listed in listing.data {
        let serial = crate::v2::api::cut_to_bytes(&listed.serial_no, 64).to_owned();
        let e = &listed.encrypt_certificate;
        if e.algorithm != "AEAD_AES_256_GCM" {
            return Err(CertError::Certificate {
                serial,
                problem: "is not encrypted with AEAD_AES_256_GCM".into(),
            });
        }
        let pem = aead::decrypt(apiv3_key, &e.nonce, &e.associated_data, &e.ciphertext).map_err(
            |source| CertError::Decrypt {
                serial: serial.clone(),
                source,
            },
        )?;
        let pem = String::from_utf8(pem).map_err(|_| CertError::Certificate {
            serial: serial.clone(),
            problem: "is not text".into(),
        })?;
        let cert =
            PlatformCertificate::from_pem(&pem).map_err(|problem| CertError::Certificate {
                serial: serial.clone(),
                problem,
            })?;
        if !cert.serial.eq_ignore_ascii_case(&listed.serial_no) {
            return Err(CertError::Certificate {
                serial,
                problem: "carries another serial number than listed".into(),
            });
        }
        if cert.valid_at(now) {
            kept.push(cert);
        }
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v3::vectors::{text, vector};
    use crate::v3::verify::{Signed, verify};

    const PEM: &str = include_str!("testdata/wechatpay_platform_cert.pem");
    const SERIAL: &str = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1";
    /// 2026-12-02: inside the test certificate's validity (2026-12-01 .. 2036-11-28).
    const NOW: u64 = 1_796_169_600;

    fn listing() -> String {
        let v = vector("V5_platform_certificate");
        serde_json::json!({"data": [{
            "serial_no": SERIAL,
            "effective_time": "2026-12-01T21:50:00+08:00",
            "expire_time": "2036-11-28T21:50:00+08:00",
            "encrypt_certificate": v["encrypt_certificate"],
        }]})
        .to_string()
    }

    #[test]
    fn v5_certificate_reads_with_its_serial_validity_and_key() {
        let cert = PlatformCertificate::from_pem(PEM).unwrap();
        assert_eq!(cert.serial, SERIAL);
        assert!(cert.valid_at(NOW));
        assert!(!cert.valid_at(cert.not_after));
        assert!(!cert.valid_at(cert.not_before - 1));
        // It is the key that signed V2 (a reply verified by certificate serial).
        let v = vector("V2_response_signature");
        let body = text(&v, "body");
        let h = &v["headers"];
        let signed = Signed {
            timestamp: h["Wechatpay-Timestamp"].as_str().unwrap(),
            nonce: h["Wechatpay-Nonce"].as_str().unwrap(),
            signature: h["Wechatpay-Signature"].as_str().unwrap(),
            serial: SERIAL,
            body: body.as_bytes(),
        };
        assert_eq!(verify(&signed, &[cert.to_key()], 1_554_209_980), Ok(()));
    }

    #[test]
    fn the_listing_decrypts_and_keeps_the_unexpired() {
        let key = Secret::new(text(&vector("V5_platform_certificate"), "apiv3_key"));
        let kept = read_listing(listing().as_bytes(), &key, NOW).unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].serial, SERIAL);
        // What is stored verifies as the certificate does, while it is valid.
        let stored = kept[0].stored();
        let json = serde_json::to_string(&stored).unwrap();
        let back: StoredCertificate = serde_json::from_str(&json).unwrap();
        assert_eq!(back.to_key(NOW).unwrap().key, kept[0].key);
        assert!(back.to_key(2_200_000_000).is_none());
        // Past its expiry it is dropped.
        assert!(
            read_listing(listing().as_bytes(), &key, 2_200_000_000)
                .unwrap()
                .is_empty()
        );
        // A listing that claims another serial is refused whole.
        let lying = listing().replace(SERIAL, "0000000000000000000000000000000000000001");
        assert!(matches!(
            read_listing(lying.as_bytes(), &key, NOW),
            Err(CertError::Certificate { .. })
        ));
        // Another APIv3 key cannot read it.
        let other = Secret::new("b7cde1ef4e9a0ba9d5e3b2c1f0e9d8c7");
        assert!(matches!(
            read_listing(listing().as_bytes(), &other, NOW),
            Err(CertError::Decrypt { .. })
        ));
        assert!(matches!(
            read_listing(b"{}", &key, NOW),
            Err(CertError::Reply(_))
        ));
        assert!(PlatformCertificate::from_pem("garbage").is_err());
    }
}
