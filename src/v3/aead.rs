//! AEAD_AES_256_GCM (PROTOCOL.md "APIv3"): notification resources and downloaded platform
//! certificates are encrypted with the 32-byte APIv3 key; the nonce is 12 bytes of text, the
//! associated data text (may be empty), the ciphertext base64 with the 16-byte tag at its end.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::secret::Secret;

/// The APIv3 key's length in bytes (it is 32 ASCII characters).
pub const APIV3_KEY_LEN: usize = 32;
/// The nonce's length in bytes.
pub const NONCE_LEN: usize = 12;

/// Why a resource could not be decrypted. Never carries key, nonce or data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AeadError {
    #[error("the APIv3 key must be exactly {APIV3_KEY_LEN} bytes")]
    KeyLength,
    #[error("the nonce must be exactly {NONCE_LEN} bytes")]
    NonceLength,
    #[error("the ciphertext is not base64")]
    Base64,
    #[error("the ciphertext does not authenticate (wrong key, nonce, associated data or data)")]
    Authentication,
}

/// Decrypts and authenticates one resource.
pub fn decrypt(
    apiv3_key: &Secret,
    nonce: &str,
    associated_data: &str,
    ciphertext_base64: &str,
) -> Result<Vec<u8>, AeadError> {
    let key = apiv3_key.expose().as_bytes();
    if key.len() != APIV3_KEY_LEN {
        return Err(AeadError::KeyLength);
    }
    let nonce = nonce.as_bytes();
    if nonce.len() != NONCE_LEN {
        return Err(AeadError::NonceLength);
    }
    let ciphertext = STANDARD
        .decode(ciphertext_base64)
        .map_err(|_| AeadError::Base64)?;
    let cipher = Aes256Gcm::new_from_slice(key).map_err(|_| AeadError::KeyLength)?;
    let nonce = Nonce::try_from(nonce).map_err(|_| AeadError::NonceLength)?;
    cipher
        .decrypt(
            &nonce,
            Payload {
                msg: &ciphertext,
                aad: associated_data.as_bytes(),
            },
        )
        .map_err(|_| AeadError::Authentication)
}

/// Encrypts one resource as WeChat Pay does (the simulator and test fakes play WeChat): base64 of
/// the ciphertext with its 16-byte tag. `nonce` must be 12 bytes.
pub fn encrypt(
    apiv3_key: &Secret,
    nonce: &str,
    associated_data: &str,
    plaintext: &[u8],
) -> Result<String, AeadError> {
    let cipher = Aes256Gcm::new_from_slice(apiv3_key.expose().as_bytes())
        .map_err(|_| AeadError::KeyLength)?;
    let nonce = Nonce::try_from(nonce.as_bytes()).map_err(|_| AeadError::NonceLength)?;
    let sealed = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: plaintext,
                aad: associated_data.as_bytes(),
            },
        )
        .map_err(|_| AeadError::Authentication)?;
    Ok(STANDARD.encode(sealed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v3::vectors::{text, vector};

    fn key(v: &serde_json::Value) -> Secret {
        Secret::new(text(v, "apiv3_key"))
    }

    #[test]
    fn v3_notification_resource_decrypts() {
        let v = vector("V3_notification");
        let plain = decrypt(
            &key(&v),
            &text(&v, "nonce"),
            &text(&v, "associated_data"),
            &text(&v, "ciphertext"),
        )
        .unwrap();
        assert_eq!(String::from_utf8(plain).unwrap(), text(&v, "plaintext"));
    }

    #[test]
    fn v3b_empty_associated_data() {
        let v = vector("V3b_empty_aad");
        let plain = decrypt(&key(&v), &text(&v, "nonce"), "", &text(&v, "ciphertext")).unwrap();
        assert_eq!(plain, b"{\"x\":1}");
    }

    #[test]
    fn v5_platform_certificate_decrypts_to_the_pem() {
        let v = vector("V5_platform_certificate");
        let e = &v["encrypt_certificate"];
        let plain = decrypt(
            &key(&v),
            &text(e, "nonce"),
            &text(e, "associated_data"),
            &text(e, "ciphertext"),
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(plain).unwrap(),
            include_str!("testdata/wechatpay_platform_cert.pem")
        );
    }

    #[test]
    fn anything_changed_fails_to_authenticate() {
        let v = vector("V3_notification");
        let (nonce, aad, ct) = (
            text(&v, "nonce"),
            text(&v, "associated_data"),
            text(&v, "ciphertext"),
        );
        let other_key = Secret::new("b7cde1ef4e9a0ba9d5e3b2c1f0e9d8c7");
        assert_eq!(
            decrypt(&other_key, &nonce, &aad, &ct),
            Err(AeadError::Authentication)
        );
        assert_eq!(
            decrypt(&key(&v), "fdasflkja485", &aad, &ct),
            Err(AeadError::Authentication)
        );
        assert_eq!(
            decrypt(&key(&v), &nonce, "certificate", &ct),
            Err(AeadError::Authentication)
        );
        let mut bytes = STANDARD.decode(&ct).unwrap();
        bytes[0] ^= 1;
        assert_eq!(
            decrypt(&key(&v), &nonce, &aad, &STANDARD.encode(bytes)),
            Err(AeadError::Authentication)
        );
        assert_eq!(
            decrypt(&Secret::new("short"), &nonce, &aad, &ct),
            Err(AeadError::KeyLength)
        );
        assert_eq!(
            decrypt(&key(&v), "short", &aad, &ct),
            Err(AeadError::NonceLength)
        );
        assert_eq!(
            decrypt(&key(&v), &nonce, &aad, "not base64!"),
            Err(AeadError::Base64)
        );
    }
}
