//! PROTOCOL.md's APIv3 vectors (`../shared/vectors/v3/`, copied to `src/v3/testdata/` with their
//! throw-away keys so that the tests run from any clone).

use serde_json::Value;

/// One vector by name (`V1_request_signature`, ...).
pub(crate) fn vector(name: &str) -> Value {
    let all: Value = serde_json::from_str(include_str!("testdata/vectors.json")).unwrap();
    all.get(name)
        .unwrap_or_else(|| panic!("no vector {name}"))
        .clone()
}

/// A string field of a vector.
pub(crate) fn text(v: &Value, field: &str) -> String {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("no string {field}"))
        .to_owned()
}

pub(crate) const MERCHANT_KEY: &str = include_str!("testdata/merchant_key.pem");
pub(crate) const MERCHANT_PUB: &str = include_str!("testdata/merchant_pub.pem");
pub(crate) const WECHATPAY_PUB: &str = include_str!("testdata/wechatpay_pub.pem");
