//! Structured logs (issue 6): one JSON line per request (written by the Spin adapter's
//! `serve`) and one per order state change (written here, by the flows, after the change was
//! stored). The core does no I/O: lines go to a sink the component installs once per instance
//! ([`set_sink`]; the Spin adapter's prints to stdout). Without a sink nothing is emitted.
//!
//! What a line may carry: the order number, route, method, HTTP status, outcome, latency,
//! statuses, WeChat's transaction id, and a short hash prefix of an openid
//! ([`openid_tag`]). Never a key, a secret, a token, a session_key, a request body or a full
//! openid.

use std::sync::OnceLock;

use serde_json::{Value, json};

use crate::order::Status;

/// Where log lines go: a plain function, installed once per instance (no per-request state).
pub type Sink = fn(&str);

static SINK: OnceLock<Sink> = OnceLock::new();

/// Installs the instance's sink (the first call wins; later calls are ignored).
pub fn set_sink(sink: Sink) {
    let _ = SINK.set(sink);
}

/// Writes one JSON object as one line to the sink, if any.
pub fn emit(line: &Value) {
    if let Some(sink) = SINK.get() {
        sink(&line.to_string());
    }
}

/// One order state change, emitted after the write that made it durable. `from` is `None`
/// for a new order.
pub fn state_change(order_no: &str, from: Option<Status>, to: Status) {
    emit(&json!({
        "log": "state_change",
        "order_no": order_no,
        "from": from.map(Status::as_str),
        "to": to.as_str(),
    }));
}

/// A short, stable tag for an openid in logs (the first 8 hex digits of its SHA-256): enough
/// to correlate one user's requests, not enough to recover the openid.
pub fn openid_tag(openid: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(openid.as_bytes())[..4])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openid_tag_is_short_and_stable() {
        let tag = openid_tag("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o");
        assert_eq!(tag.len(), 8);
        assert_eq!(tag, openid_tag("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"));
        assert!(!tag.contains("oUpF8"));
    }
}
