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

#[path = "load_common/mod.rs"]
mod load_common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use load_common::{
    ADMIN_TOKEN, Measurement, ORDER, PROBES, PRODUCT, concurrency, env_or, fake_wechat,
    live_variables, micros, notification, only_routes, probe_takes_notification, session_token,
};
use spin_test_host::TestApp;

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

/// Runs `route` from `clients` concurrent clients for `secs` or `max` requests.
async fn measure(app: &TestApp, route: &Route, clients: usize, secs: f64, max: u64) -> Measurement {
    // Warm-up: instances created, caches filled.
    let warm = run(app, route, clients, 0.3, max).await;
    drop(warm);
    let started = Instant::now();
    let results = run(app, route, clients, secs, max).await;
    Measurement::of(results, started.elapsed().as_secs_f64())
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secs: f64 = env_or("LOAD_SECS", 3.0);
    let max: u64 = env_or("LOAD_MAX", 100_000);

    let wechat = fake_wechat().await;
    let mut builder = TestApp::builder("spin.toml");
    for (name, value) in live_variables(&wechat.origin()) {
        builder = builder.variable(name, value);
    }
    let app = builder.quiet().start().await?;
    let hello = TestApp::builder("tests/hello/spin.toml")
        .quiet()
        .start()
        .await?;

    // The world: a product, a user, a paid order (notified once) and an order awaiting payment.
    let token = session_token()?;
    let put = app
        .request(
            http::Request::put("/api/admin/products/tea")
                .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
                .body(PRODUCT)?,
        )
        .await?;
    anyhow::ensure!(put.status == 200, "product: {}", put.text());
    let create = Route {
        name: "create order",
        method: "POST",
        path: "/api/orders".into(),
        bearer: Some(token.clone()),
        body: Bytes::from_static(ORDER.as_bytes()),
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
    let notify = Route {
        name: "notify (duplicate)",
        method: "POST",
        path: "/api/wxpay/notify".into(),
        bearer: None,
        body: Bytes::from(notification(&paid)),
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
    let probes: Vec<Route> = PROBES
        .into_iter()
        .map(|(name, method, probe)| Route {
            name,
            method,
            path: format!("/probe/{probe}"),
            bearer: None,
            body: if probe_takes_notification(method, probe) {
                notify.body.clone()
            } else {
                Bytes::new()
            },
            status: 200,
        })
        .collect();

    // `LOAD_ROUTES=notify,health` measures only the routes whose names contain one of these
    // (for profiling one route); `LOAD_CLIENTS=4` one concurrency.
    let only = only_routes();
    let routes: Vec<(&TestApp, &Route)> = routes
        .iter()
        .map(|r| (&app, r))
        .chain(probes.iter().map(|r| (&hello, r)))
        .filter(|(_, r)| only.is_empty() || only.iter().any(|o| r.name.contains(o.as_str())))
        .collect();
    // `LOAD_FLOOR=0` leaves out the hello-world rows (profiling one route alone; no ratios).
    let floor_on = env_or("LOAD_FLOOR", 1) != 0;
    for clients in concurrency() {
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
            let errors = m.errors_note();
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
