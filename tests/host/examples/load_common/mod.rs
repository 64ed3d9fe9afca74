//! What the two load benchmarks share (`load.rs` in-process, `load_spin.rs` under the real
//! Spin): the live app's configuration, the fake WeChat, the duplicate notification, the
//! probes, the measurement's statistics and the environment knobs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use spin_test_host::{FakeServer, text_response};
use wxpay::secret::Secret;
use wxpay::v2::sign::{SignType, sign};
use wxpay::v2::{Params, xml};

pub const APPID: &str = "wx0123456789abcdef";
pub const MCH_ID: &str = "1900000109";
pub const API_KEY: &str = "Kq3Xv9Lm2Pz8Rt5Wn1Yb7Hc4Jd6Fg0Ae";
pub const SESSION_SECRET: &str = "load-session-secret-0123456789abcdef";
pub const ADMIN_TOKEN: &str = "load-admin-token-0123456789";
pub const OPENID: &str = "oLoad_client_7Hq2Zp9Lx4Wc1Vb8";
pub const TRANSACTION_ID: &str = "4200000000202611270000000001";
pub const CONCURRENCY: [usize; 3] = [1, 4, 16];

/// The body of the catalog's one product (`PUT /api/admin/products/tea`).
pub const PRODUCT: &str = r#"{"name":"Oolong","price":199}"#;
/// The body of `POST /api/orders`.
pub const ORDER: &str = r#"{"sku":"tea","quantity":1}"#;

/// The probes (tests/probe): hello-world plus one runtime feature each, in the hello app, as
/// (name, method, path below `/probe/`). `notify` uses what the notify route uses of the
/// runtime, with the notification as body; `pay-params` what the re-sign route uses (an empty
/// POST, `Content-Length: 0`).
pub const PROBES: [(&str, &str, &str); 11] = [
    ("probe: none", "GET", "none"),
    ("probe: read body", "POST", "body"),
    ("probe: read empty body", "GET", "body"),
    ("probe: 2 headers", "GET", "headers"),
    ("probe: variable", "GET", "variable"),
    ("probe: KV open + get", "GET", "kv"),
    ("probe: clocks", "GET", "clock"),
    ("probe: log line", "GET", "log"),
    ("probe: JSON log line", "GET", "json-log"),
    ("probe: notify's runtime features", "POST", "notify"),
    ("probe: re-sign's runtime features", "POST", "pay-params"),
];

/// Whether probe `path` is sent the notification as its body.
pub fn probe_takes_notification(method: &str, path: &str) -> bool {
    method == "POST" && path != "pay-params"
}

/// The live app's variables, WeChat played by the fake at `origin`.
pub fn live_variables(origin: &str) -> Vec<(&'static str, String)> {
    [
        ("wxpay_mode", "live"),
        ("wx_appid", APPID),
        ("wx_app_secret", "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5"),
        ("wxpay_mch_id", MCH_ID),
        ("wxpay_api_key", API_KEY),
        ("wxpay_sign_type", "MD5"),
        (
            "wxpay_notify_url",
            "https://shop.example.com/api/wxpay/notify",
        ),
        ("wxpay_mch_api", origin),
        ("wx_api", origin),
        ("session_secret", SESSION_SECRET),
        ("admin_token", ADMIN_TOKEN),
    ]
    .into_iter()
    .map(|(name, value)| (name, value.to_owned()))
    .collect()
}

/// A session token of the load's user.
pub fn session_token() -> anyhow::Result<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    Ok(wxpay::session::issue(
        &Secret::new(SESSION_SECRET),
        OPENID,
        now,
        7200,
    )?)
}

fn params(fields: &[(&str, &str)]) -> Params {
    fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn signed_xml(mut p: Params) -> String {
    let signature = sign(&p, &Secret::new(API_KEY), SignType::Md5);
    p.insert("sign".into(), signature);
    xml::write(&p)
}

/// The fake WeChat Pay: every unified order succeeds at once (a fresh prepay_id, signed reply);
/// anything else is a 404 (the load calls nothing else).
pub async fn fake_wechat() -> FakeServer {
    let next = Arc::new(AtomicU64::new(0));
    FakeServer::start(move |req| {
        let n = next.fetch_add(1, Ordering::Relaxed);
        async move {
            if !req.path_and_query.starts_with("/pay/unifiedorder") {
                return text_response(404, format!("not faked: {}", req.path_and_query));
            }
            let prepay_id = format!("wx27150000{n:016}0000");
            text_response(
                200,
                signed_xml(params(&[
                    ("return_code", "SUCCESS"),
                    ("return_msg", "OK"),
                    ("appid", APPID),
                    ("mch_id", MCH_ID),
                    ("nonce_str", "IITRi8Iabbblz1Jc"),
                    ("result_code", "SUCCESS"),
                    ("trade_type", "JSAPI"),
                    ("prepay_id", &prepay_id),
                ])),
            )
        }
    })
    .await
    .expect("fake WeChat starts")
}

/// WeChat's payment notification for the order `paid` (199 fen, MD5).
pub fn notification(paid: &str) -> String {
    signed_xml(params(&[
        ("return_code", "SUCCESS"),
        ("appid", APPID),
        ("mch_id", MCH_ID),
        ("nonce_str", "5d2b6c2a8db53831f7eda20af46e531c"),
        ("result_code", "SUCCESS"),
        ("openid", OPENID),
        ("is_subscribe", "N"),
        ("trade_type", "JSAPI"),
        ("bank_type", "CFT"),
        ("total_fee", "199"),
        ("fee_type", "CNY"),
        ("cash_fee", "199"),
        ("transaction_id", TRANSACTION_ID),
        ("out_trade_no", paid),
        ("time_end", "20261127150000"),
    ]))
}

/// One measurement's figures.
pub struct Measurement {
    pub requests: u64,
    pub errors: u64,
    pub rps: f64,
    pub p50: Duration,
    pub p99: Duration,
}

impl Measurement {
    /// From each request's (latency, right answer) over `elapsed` seconds.
    pub fn of(results: Vec<(Duration, bool)>, elapsed: f64) -> Measurement {
        let errors = results.iter().filter(|(_, ok)| !ok).count() as u64;
        let mut latencies: Vec<Duration> = results.into_iter().map(|(d, _)| d).collect();
        latencies.sort_unstable();
        let pct = |p: f64| {
            latencies
                .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
                .copied()
                .unwrap_or_default()
        };
        Measurement {
            requests: latencies.len() as u64,
            errors,
            rps: latencies.len() as f64 / elapsed,
            p50: pct(0.50),
            p99: pct(0.99),
        }
    }

    /// ` (n wrong answers)`, or nothing.
    pub fn errors_note(&self) -> String {
        if self.errors > 0 {
            format!(" ({} wrong answers)", self.errors)
        } else {
            String::new()
        }
    }
}

/// `LOAD_ROUTES=notify,health`: only the routes whose names contain one of these (none: all).
pub fn only_routes() -> Vec<String> {
    std::env::var("LOAD_ROUTES")
        .map(|v| v.split(',').map(str::to_owned).collect())
        .unwrap_or_default()
}

/// `LOAD_CLIENTS=1,4`: the concurrencies (default [`CONCURRENCY`]).
pub fn concurrency() -> Vec<usize> {
    match std::env::var("LOAD_CLIENTS") {
        Ok(v) => v.split(',').filter_map(|n| n.parse().ok()).collect(),
        Err(_) => CONCURRENCY.to_vec(),
    }
}

pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn micros(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e6)
}
