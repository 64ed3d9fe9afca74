//! docs/PROTOCOL.md's APIv3 and refund vectors, in `src/v3/testdata/` with their throw-away
//! keys (every value checked with two independent implementations).

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

/// The `Wechatpay-*` headers of a vector (`headers`) with `body`.
pub(crate) fn signed<'a>(v: &'a Value, body: &'a [u8]) -> crate::v3::verify::Signed<'a> {
    let h = &v["headers"];
    crate::v3::verify::Signed {
        timestamp: h["Wechatpay-Timestamp"].as_str().unwrap(),
        nonce: h["Wechatpay-Nonce"].as_str().unwrap(),
        signature: h["Wechatpay-Signature"].as_str().unwrap(),
        serial: h["Wechatpay-Serial"].as_str().unwrap(),
        body,
    }
}
