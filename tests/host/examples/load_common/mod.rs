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
pub const PROBES: [(&str, &str, &str); 14] = [
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
    ("probe: RSA-2048 verify (v3 notify)", "GET", "rsa-verify"),
    ("probe: AES-256-GCM decrypt (v3 notify)", "GET", "aes-gcm"),
    ("probe: RSA-2048 sign (v3 order)", "GET", "rsa-sign"),
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

// ---- APIv3 (the vectors' throw-away keys, src/v3/testdata/; load_spin.rs measures it) ------------

#[allow(dead_code)] // load_spin.rs only
pub const APIV3_KEY: &str = "Zq4Wv8Ln3Rx7Tb1Yc5Hm9Jd2Fg6Ka0Pe";
#[allow(dead_code)] // load_spin.rs only
const MERCHANT_KEY: &str = include_str!("../../../../src/v3/testdata/merchant_key.pem");
const WECHATPAY_KEY: &str = include_str!("../../../../src/v3/testdata/wechatpay_key.pem");
#[allow(dead_code)] // load_spin.rs only
const WECHATPAY_PUB: &str = include_str!("../../../../src/v3/testdata/wechatpay_pub.pem");
const PUB_KEY_ID: &str = "PUB_KEY_ID_0112345678902025112700000000000001";

/// The live app's variables for APIv3 (WeChat Pay public-key mode), WeChat played by the fake
/// at `origin`.
#[allow(dead_code)] // load_spin.rs only
pub fn live_v3_variables(origin: &str) -> Vec<(&'static str, String)> {
    let mut variables = live_variables(origin);
    variables.extend(
        [
            ("wxpay_api_version", "v3"),
            ("wxpay_apiv3_key", APIV3_KEY),
            ("wxpay_mch_private_key", MERCHANT_KEY),
            (
                "wxpay_mch_cert_serial",
                "1DDE55AD98ED71D6EDD4A4A16996DE7B47773A8C",
            ),
            ("wxpay_public_key", WECHATPAY_PUB),
            ("wxpay_public_key_id", PUB_KEY_ID),
        ]
        .into_iter()
        .map(|(name, value)| (name, value.to_owned())),
    );
    variables
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `body` signed by the WeChat Pay test key now: the `Wechatpay-*` headers.
pub fn wechatpay_signed(body: &[u8]) -> Vec<(&'static str, String)> {
    let key = wxpay::v3::sign::MerchantKey::from_pem(WECHATPAY_KEY).expect("test key");
    wxpay::v3::sign::wechatpay_headers(&key, PUB_KEY_ID, now(), "loadnonce0loadnonce0", body)
        .to_headers()
        .to_vec()
}

/// The APIv3 payment notification for the order `paid` (199 fen), signed now (its signature
/// is refused 5 minutes from now: build it again for a later measurement).
#[allow(dead_code)] // load_spin.rs only
pub fn v3_notification(paid: &str) -> (String, Vec<(&'static str, String)>) {
    let transaction = serde_json::json!({
        "appid": APPID, "mchid": MCH_ID, "out_trade_no": paid, "transaction_id": TRANSACTION_ID,
        "trade_type": "JSAPI", "trade_state": "SUCCESS",
        "success_time": "2026-11-27T15:00:00+08:00",
        "payer": {"openid": OPENID}, "amount": {"total": 199, "currency": "CNY"}
    })
    .to_string();
    let body = wxpay::v3::notify::payment_envelope(
        &Secret::new(APIV3_KEY),
        "0123456789ab",
        "EV-load",
        "2026-11-27T15:00:01+08:00",
        &transaction,
    )
    .expect("encrypts");
    let headers = wechatpay_signed(body.as_bytes());
    (body, headers)
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

/// `Wechatpay-*` headers and when they were made.
type SignedAt = (u64, Vec<(&'static str, String)>);

/// The fake WeChat Pay: every unified order succeeds at once (a fresh prepay_id, signed reply);
/// every APIv3 JSAPI order too, with one prepay id whose signed reply is made again every 60 s
/// (so that the fake's own RSA signing stays out of the measured order route); anything else
/// is a 404 (the load calls nothing else).
pub async fn fake_wechat() -> FakeServer {
    let next = Arc::new(AtomicU64::new(0));
    let v3_reply: Arc<std::sync::Mutex<Option<SignedAt>>> = Arc::default();
    FakeServer::start(move |req| {
        let n = next.fetch_add(1, Ordering::Relaxed);
        let v3_reply = v3_reply.clone();
        async move {
            if req.path_and_query == "/v3/pay/transactions/jsapi" {
                let body = r#"{"prepay_id":"wx27150000000000000000000000v3load"}"#;
                let headers = {
                    let mut cached = v3_reply.lock().unwrap_or_else(|e| e.into_inner());
                    match &*cached {
                        Some((at, headers)) if now().saturating_sub(*at) < 60 => headers.clone(),
                        _ => {
                            let headers = wechatpay_signed(body.as_bytes());
                            *cached = Some((now(), headers.clone()));
                            headers
                        }
                    }
                };
                let mut response = text_response(200, body);
                for (name, value) in headers {
                    response.headers_mut().insert(
                        name,
                        http::HeaderValue::from_str(&value).expect("header value"),
                    );
                }
                return response;
            }
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
