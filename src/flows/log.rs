//! Structured logs (issue 6): one JSON line per request (written by the Spin adapter's
//! `serve`) and one per order state change (written here, by the flows, after the change was
//! stored). The core does no I/O: lines go to a sink the component installs once per instance
//! ([`set_sink`]; the Spin adapter's prints to stdout). Without a sink nothing is emitted.
//!
//! What a line may carry: the order number, route, method, HTTP status, outcome, latency,
//! statuses, WeChat's transaction id, and a short hash prefix of an openid
//! ([`openid_tag`]). Never a key, a secret, a token, a session_key, a request body or a full
//! openid.

use std::fmt::Write as _;
use std::sync::OnceLock;

use crate::order::Status;

/// Where log lines go: a plain function, installed once per instance (no per-request state).
pub type Sink = fn(&str);

static SINK: OnceLock<Sink> = OnceLock::new();

/// Installs the instance's sink (the first call wins; later calls are ignored).
pub fn set_sink(sink: Sink) {
    let _ = SINK.set(sink);
}

/// Writes one line to the sink, if any.
pub fn emit(line: Line) {
    if let Some(sink) = SINK.get() {
        sink(&line.finish());
    }
}

/// One JSON object for one log line, written field by field in order (no `serde_json::Value`
/// tree: a request's line is on every request's path). Keys are the caller's literals.
#[derive(Debug, Clone)]
pub struct Line(String);

/// A value of a log line's field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    Text(String),
    Flag(bool),
}

impl Line {
    /// `{"log": kind`, the line's kind (`request`, `state_change`, `warning`).
    pub fn new(kind: &str) -> Self {
        Self(String::from("{")).text("log", kind)
    }

    fn key(mut self, key: &str) -> Self {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        self.quote(key);
        self.0.push(':');
        self
    }

    /// A JSON string, escaped by serde_json.
    fn quote(&mut self, text: &str) {
        let quoted = serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_owned());
        self.0.push_str(&quoted);
    }

    pub fn text(self, key: &str, value: &str) -> Self {
        let mut line = self.key(key);
        line.quote(value);
        line
    }

    /// `null` for `None`.
    pub fn opt_text(self, key: &str, value: Option<&str>) -> Self {
        match value {
            Some(value) => self.text(key, value),
            None => {
                let mut line = self.key(key);
                line.0.push_str("null");
                line
            }
        }
    }

    pub fn number(self, key: &str, value: u64) -> Self {
        let mut line = self.key(key);
        let _ = write!(line.0, "{value}");
        line
    }

    /// Milliseconds with one decimal (`12.3`), from integer arithmetic: no float formatting
    /// code in the components for one number.
    pub fn millis(self, key: &str, duration: std::time::Duration) -> Self {
        // u64, not the u128 of `as_micros`: formatting a u128 is its own 1.5 KB of code.
        let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        let tenths = micros.saturating_add(50) / 100;
        let mut line = self.key(key);
        let _ = write!(line.0, "{}.{}", tenths / 10, tenths % 10);
        line
    }

    pub fn field(self, key: &str, value: &Field) -> Self {
        match value {
            Field::Text(text) => self.text(key, text),
            Field::Flag(flag) => {
                let mut line = self.key(key);
                line.0.push_str(if *flag { "true" } else { "false" });
                line
            }
        }
    }

    /// The line's text.
    pub fn finish(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

/// One order state change, emitted after the write that made it durable. `from` is `None`
/// for a new order.
pub fn state_change(order_no: &str, from: Option<Status>, to: Status) {
    emit(
        Line::new("state_change")
            .text("order_no", order_no)
            .opt_text("from", from.map(Status::as_str))
            .text("to", to.as_str()),
    );
}

/// A failed key-value operation: the backend's text (operation and error, never a value), which
/// the client's 503 does not carry.
pub fn store_error(e: &super::StoreError) {
    emit(Line::new("store_error").text("error", &e.0));
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
    fn lines_are_json_objects_with_escaped_text() {
        let line = Line::new("request")
            .text("route", "/api/\"x\"\n")
            .number("status", 200)
            .millis("latency_ms", std::time::Duration::from_micros(12_340))
            .opt_text("from", None)
            .field("recorded", &Field::Flag(true))
            .field("reason", &Field::Text("a\u{1}b".into()))
            .finish();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"log": "request", "route": "/api/\"x\"\n", "status": 200,
                "latency_ms": 12.3, "from": null, "recorded": true, "reason": "a\u{1}b"})
        );
        assert!(!line.contains('\n'), "{line}");
        let zero = Line::new("x")
            .millis("ms", std::time::Duration::ZERO)
            .finish();
        assert_eq!(zero, r#"{"log":"x","ms":0.0}"#);
    }

    #[test]
    fn openid_tag_is_short_and_stable() {
        let tag = openid_tag("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o");
        assert_eq!(tag.len(), 8);
        assert_eq!(tag, openid_tag("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"));
        assert!(!tag.contains("oUpF8"));
    }
}
