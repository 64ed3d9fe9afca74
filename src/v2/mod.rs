//! WeChat Pay APIv2: MD5 / HMAC-SHA256 signed flat XML.

pub mod api;
pub mod notify;
pub mod sign;
pub mod xml;

/// The fields of one APIv2 message, sorted by name in byte order (the order signatures use).
pub type Params = std::collections::BTreeMap<String, String>;
