//! Load benchmark (docs/PERFORMANCE.md): requests per second and p50 / p99 latency per route at
//! 1, 4 and 16 concurrent clients, in-process (no sockets between client and app), with WeChat
//! played by a fake on 127.0.0.1 that answers at once. A hello-world spin-sdk 6.0 component
//! (`tests/hello`) is measured in the same run, before and after the routes at each
//! concurrency, so every figure is also a ratio to the runtime's own per-request cost; the
//! same component printing one log line per request (`GET /log`) shows what a log line costs.
//!
//! ```sh
//! cargo run -p spin-test-host --example load            # 3 s per measurement
//! LOAD_SECS=1 LOAD_MAX=20000 cargo run -p spin-test-host --example load
//! LOAD_ROUTES=notify,health LOAD_CLIENTS=1 cargo run -p spin-test-host --example load
//! ```
//!
//! Each measurement runs for `LOAD_SECS` (default 3) or `LOAD_MAX` requests (default 100000),
//! whichever comes first, after a warm-up of 0.3 s. Every answer's status is checked; a
//! measurement with a wrong answer is reported as such.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use spin_test_host::{FakeServer, TestApp, text_response};
use wxpay::secret::Secret;
use wxpay::v2::sign::{SignType, sign};
use wxpay::v2::{Params, xml};

const APPID: &str = "wx0123456789abcdef";
const MCH_ID: &str = "1900000109";
const API_KEY: &str = "Kq3Xv9Lm2Pz8Rt5Wn1Yb7Hc4Jd6Fg0Ae";
const SESSION_SECRET: &str = "load-session-secret-0123456789abcdef";
const ADMIN_TOKEN: &str = "load-admin-token-0123456789";
const OPENID: &str = "oLoad_client_7Hq2Zp9Lx4Wc1Vb8";
const TRANSACTION_ID: &str = "4200000000202611270000000001";
const CONCURRENCY: [usize; 3] = [1, 4, 16];

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

/// The fake WeChat Pay: every unified order succeeds at once (a fresh prepay_id, signed reply).
async fn fake_wechat() -> FakeServer {
    let next = Arc::new(AtomicU64::new(0));
    FakeServer::start(move |req| {
        let n = next.fetch_add(1, Ordering::Relaxed);
        async move {
            assert!(
                req.path_and_query.starts_with("/pay/unifiedorder"),
                "the load benchmark calls only unifiedorder, not {}",
                req.path_and_query
            );
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

/// One route under load: how to build its request and which status it must answer.
#[derive(Clone)]
struct Route {
    name: &'static str,
    method: &'static str,
    path: String,
    bearer: Option<String>,
    body: Bytes,
    status: u16,
}

impl Route {
    fn request(&self) -> http::Request<Bytes> {
        let mut builder = http::Request::builder().method(self.method).uri(&self.path);
        if let Some(token) = &self.bearer {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        if !self.body.is_empty() {
            builder = builder.header("content-type", "application/json");
        }
        // As an HTTP client does for a request with a body of known length (hyper, `curl -d`).
        if self.method != "GET" {
            builder = builder.header("content-length", self.body.len());
        }
        builder.body(self.body.clone()).expect("valid request")
    }
}

struct Measurement {
    requests: u64,
    errors: u64,
    rps: f64,
    p50: Duration,
    p99: Duration,
}

/// Runs `route` from `clients` concurrent clients for `secs` or `max` requests.
async fn measure(app: &TestApp, route: &Route, clients: usize, secs: f64, max: u64) -> Measurement {
    // Warm-up: instances created, caches filled.
    let warm = run(app, route, clients, 0.3, max).await;
    drop(warm);
    let started = Instant::now();
    let mut results = run(app, route, clients, secs, max).await;
    let elapsed = started.elapsed().as_secs_f64();
    let errors = results.iter().filter(|(_, ok)| !ok).count() as u64;
    let mut latencies: Vec<Duration> = results.drain(..).map(|(d, _)| d).collect();
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

async fn run(
    app: &TestApp,
    route: &Route,
    clients: usize,
    secs: f64,
    max: u64,
) -> Vec<(Duration, bool)> {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let issued = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let app = app.clone();
        let route = route.clone();
        let issued = issued.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            while Instant::now() < deadline && issued.fetch_add(1, Ordering::Relaxed) < max {
                let req = route.request();
                let t = Instant::now();
                let res = app.request(req).await;
                let ok = matches!(&res, Ok(r) if r.status.as_u16() == route.status);
                if !ok && out.iter().all(|(_, ok)| *ok) {
                    eprintln!(
                        "{}: unexpected answer {:?}",
                        route.name,
                        res.map(|r| (r.status, r.text()))
                    );
                }
                out.push((t.elapsed(), ok));
            }
            out
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("client task"));
    }
    all
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn micros(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e6)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secs: f64 = env_or("LOAD_SECS", 3.0);
    let max: u64 = env_or("LOAD_MAX", 100_000);

    let wechat = fake_wechat().await;
    let app = TestApp::builder("spin.toml")
        .variable("wxpay_mode", "live")
        .variable("wx_appid", APPID)
        .variable("wx_app_secret", "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5")
        .variable("wxpay_mch_id", MCH_ID)
        .variable("wxpay_api_key", API_KEY)
        .variable("wxpay_sign_type", "MD5")
        .variable(
            "wxpay_notify_url",
            "https://shop.example.com/api/wxpay/notify",
        )
        .variable("wxpay_mch_api", wechat.origin())
        .variable("wx_api", wechat.origin())
        .variable("session_secret", SESSION_SECRET)
        .variable("admin_token", ADMIN_TOKEN)
        .quiet()
        .start()
        .await?;
    let hello = TestApp::builder("tests/hello/spin.toml")
        .quiet()
        .start()
        .await?;

    // The world: a product, a user, a paid order (notified once) and an order awaiting payment.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let token = wxpay::session::issue(&Secret::new(SESSION_SECRET), OPENID, now, 7200)?;
    let put = app
        .request(
            http::Request::put("/api/admin/products/tea")
                .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
                .body(r#"{"name":"Oolong","price":199}"#)?,
        )
        .await?;
    anyhow::ensure!(put.status == 200, "product: {}", put.text());
    let create = Route {
        name: "create order",
        method: "POST",
        path: "/api/orders".into(),
        bearer: Some(token.clone()),
        body: Bytes::from_static(br#"{"sku":"tea","quantity":1}"#),
        status: 201,
    };
    let mut orders = Vec::new();
    for _ in 0..2 {
        let res = app.request(create.request()).await?;
        anyhow::ensure!(res.status == 201, "create: {}", res.text());
        let body: serde_json::Value = res.json()?;
        orders.push(body["order"]["order_no"].as_str().unwrap_or("").to_owned());
    }
    let (paid, awaiting) = (orders[0].clone(), orders[1].clone());
    let notification = signed_xml(params(&[
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
        ("out_trade_no", &paid),
        ("time_end", "20261127150000"),
    ]));
    let notify = Route {
        name: "notify (duplicate)",
        method: "POST",
        path: "/api/wxpay/notify".into(),
        bearer: None,
        body: Bytes::from(notification),
        status: 200,
    };
    let first = app.request(notify.request()).await?;
    anyhow::ensure!(first.text().contains("SUCCESS"), "notify: {}", first.text());

    let routes = [
        notify.clone(),
        Route {
            name: "pay-params (re-sign)",
            method: "POST",
            path: format!("/api/orders/{awaiting}/pay-params"),
            bearer: Some(token.clone()),
            body: Bytes::new(),
            status: 200,
        },
        Route {
            name: "GET order (paid)",
            method: "GET",
            path: format!("/api/orders/{paid}"),
            bearer: Some(token.clone()),
            body: Bytes::new(),
            status: 200,
        },
        Route {
            name: "health",
            method: "GET",
            path: "/api/health".into(),
            bearer: None,
            body: Bytes::new(),
            status: 200,
        },
        create,
    ];
    let hello_route = Route {
        name: "hello-world",
        method: "GET",
        path: "/".into(),
        bearer: None,
        body: Bytes::new(),
        status: 200,
    };

    // The same component printing one log line per request, as every app route does.
    let hello_log = Route {
        name: "hello-world + 1 log line",
        path: "/log".into(),
        ..hello_route.clone()
    };

    println!(
        "load: {secs} s or {max} requests per measurement; {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!("| route | clients | requests | rps | p50 µs | p99 µs | vs hello-world |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    // The probes (tests/probe): hello-world plus one runtime feature each, in the hello app;
    // `notify` uses what the notify route uses of the runtime, with the notification as body;
    // `pay-params` what the re-sign route uses (an empty POST, `Content-Length: 0`).
    let probes: Vec<Route> = [
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
    ]
    .into_iter()
    .map(|(name, method, probe)| Route {
        name,
        method,
        path: format!("/probe/{probe}"),
        bearer: None,
        body: if method == "POST" && probe != "pay-params" {
            notify.body.clone()
        } else {
            Bytes::new()
        },
        status: 200,
    })
    .collect();

    // `LOAD_ROUTES=notify,health` measures only the routes whose names contain one of these
    // (for profiling one route); `LOAD_CLIENTS=4` one concurrency.
    let only: Vec<String> = std::env::var("LOAD_ROUTES")
        .map(|v| v.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    let routes: Vec<(&TestApp, &Route)> = routes
        .iter()
        .map(|r| (&app, r))
        .chain(probes.iter().map(|r| (&hello, r)))
        .filter(|(_, r)| only.is_empty() || only.iter().any(|o| r.name.contains(o.as_str())))
        .collect();
    let concurrency: Vec<usize> = match std::env::var("LOAD_CLIENTS") {
        Ok(v) => v.split(',').filter_map(|n| n.parse().ok()).collect(),
        Err(_) => CONCURRENCY.to_vec(),
    };
    // `LOAD_FLOOR=0` leaves out the hello-world rows (profiling one route alone; no ratios).
    let floor_on = env_or("LOAD_FLOOR", 1) != 0;
    for clients in concurrency {
        let mut rows = Vec::new();
        if floor_on {
            rows.push((
                "hello-world (before)",
                measure(&hello, &hello_route, clients, secs, max).await,
            ));
            rows.push((
                hello_log.name,
                measure(&hello, &hello_log, clients, secs, max).await,
            ));
        }
        for (target, route) in &routes {
            rows.push((route.name, measure(target, route, clients, secs, max).await));
        }
        if floor_on {
            rows.push((
                "hello-world (after)",
                measure(&hello, &hello_route, clients, secs, max).await,
            ));
        }
        let floor = match (rows.first(), rows.last()) {
            (Some(before), Some(after)) if floor_on => (before.1.rps + after.1.rps) / 2.0,
            _ => f64::NAN,
        };
        for (name, m) in rows {
            let errors = if m.errors > 0 {
                format!(" ({} wrong answers)", m.errors)
            } else {
                String::new()
            };
            println!(
                "| {name}{errors} | {clients} | {} | {:.0} | {} | {} | {:.2} |",
                m.requests,
                m.rps,
                micros(m.p50),
                micros(m.p99),
                m.rps / floor
            );
        }
    }
    Ok(())
}
