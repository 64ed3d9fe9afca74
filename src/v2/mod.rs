//! WeChat Pay APIv2: MD5 / HMAC-SHA256 signed flat XML.

pub mod api;
pub mod notify;
pub mod refund;
pub mod sign;
pub mod xml;

/// The fields of one APIv2 message, sorted by name in byte order (the order signatures use).
pub type Params = std::collections::BTreeMap<String, String>;

/// A `nonce_str` / `nonceStr` (WeChat allows up to 32 characters) from 16 random bytes the
/// caller drew: 32 uppercase hex characters.
pub fn nonce_str(random: &[u8; 16]) -> String {
    hex::encode_upper(random)
}
