//! WeChat Pay APIv3 (PROTOCOL.md "APIv3"): RSA-SHA256 request signatures and `wx.requestPayment`
//! paySign with the merchant's private key, verification of WeChat's replies and notifications
//! with the WeChat Pay public key or a platform certificate, and AEAD_AES_256_GCM decryption
//! with the APIv3 key. Sans-IO like the rest of the core: bytes in, bytes out, the time passed
//! in.
//!
//! No cryptography is written here: `rsa` 0.10 (constant-time), `sha2`, `aes-gcm`, `base64`,
//! PEM through `rsa`'s `pkcs8`/`spki` support. An RSA-2048 private-key operation costs
//! milliseconds in Wasm (PROTOCOL.md): callers sign a paySign once per prepay id and keep it.

pub mod aead;
pub mod api;
pub mod certificates;
pub mod notify;
pub mod refund;
pub mod sign;
pub mod verify;

#[cfg(test)]
pub(crate) mod vectors;
