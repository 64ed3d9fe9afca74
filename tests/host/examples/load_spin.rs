//! Load benchmark under the real Spin (docs/PERFORMANCE.md, "Under the real Spin 4.0.2"):
//! requests per second and p50 / p99 latency per route at 1, 4 and 16 concurrent clients, with
//! the app and the hello-world / probe app each run by `spin up` and driven over loopback HTTP.
//! It is `load.rs`'s benchmark with the embedded host replaced by the released runtime: the app
//! in live mode against a fake WeChat on 127.0.0.1 that answers every unified order at once,
//! the hello-world spin-sdk 6.0 component (`tests/hello`) measured before and after the routes
//! at each concurrency, and the probes (`tests/probe`: hello-world plus one runtime feature per
//! route, and the runtime features of the notify and re-sign routes) in the same run. Every
//! figure is a ratio to hello-world, and the notify and re-sign routes also a ratio to the
//! probe that uses the same runtime features: what the route costs beyond the runtime.
//!
//! ```sh
//! cargo run -p spin-test-host --example load_spin            # 3 s per measurement
//! LOAD_SECS=1 LOAD_MAX=20000 cargo run -p spin-test-host --example load_spin
//! LOAD_ROUTES=notify,health LOAD_CLIENTS=1 cargo run -p spin-test-host --example load_spin
//! LOAD_ROUTES=probe LOAD_CLIENTS=16 cargo run -p spin-test-host --example load_spin
//! LOAD_QUICKACK=0 cargo run -p spin-test-host --example load_spin   # delayed ACKs (see below)
//! # On Redis: the apps' store from a runtime config, and an outside server doing the same one
//! # store read per request for comparison (tests/host/examples/baseline_redis_get.mjs):
//! LOAD_RUNTIME_CONFIG=/tmp/redis.toml LOAD_BASELINE=127.0.0.1:8090 LOAD_ROUTES=notify \
//!   cargo run -p spin-test-host --example load_spin
//! ```
//!
//! The Spin binary is found by `spin_test_host::real_spin::find_spin` (`SPIN_BIN`, `spin` on
//! `PATH`, the shared Spin 4.0.2); without one the benchmark says why and exits successfully.
//! Both apps are built with `spin build` and started with `spin up` on free loopback ports,
//! each with a fresh state directory (Spin's default SQLite key-value store).
//!
//! The load client is a hyper 1 HTTP/1.1 client in this process: each of the C clients keeps
//! one connection open and sends its requests back to back on it (as `wrk -c C` does). Each
//! measurement runs for `LOAD_SECS` (default 3) or `LOAD_MAX` requests (default 100000),
//! whichever comes first, after a warm-up of 0.3 s. Every answer's status is checked; a
//! measurement with a wrong answer (or a failed connection) is reported as such. The client,
//! the fake WeChat and Spin share the machine's cores, as `wrk` and Spin would.
//!
//! Spin 4.0.2 does not set `TCP_NODELAY` on the connections it accepts: when a component's
//! response head and body reach the socket in separate writes (seen on every route that reads
//! the KV store and on the probe that reads a variable), Nagle's algorithm holds the body until
//! the client acknowledges the head, which a Linux client delays by ~40 ms. The client therefore
//! acknowledges at once (`TCP_QUICKACK` before each request and on each response head), so the
//! figures are the runtime's and the app's work, not that timer; `LOAD_QUICKACK=0` turns this
//! off and shows what a client with delayed ACKs (curl, for one) sees. The app's own outbound
//! hop (create order's unified order to the fake) is not covered by this and still waits.

#[path = "load_common/mod.rs"]
mod load_common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use load_common::{
    ADMIN_TOKEN, Measurement, ORDER, PROBES, PRODUCT, concurrency, env_or, fake_wechat,
    live_v3_variables, live_variables, micros, notification, only_routes, probe_takes_notification,
    session_token, v3_notification,
};
use spin_test_host::real_spin::{SpinUp, find_spin, spin_build, workspace_root};
use wasmtime_wasi_http::io::TokioIo;

/// A request not answered within this is counted as a wrong answer (and its connection dropped).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Which app a route is served by.
#[derive(Clone, Copy, PartialEq)]
enum Target {
    App,
    /// The same app configured for WeChat Pay APIv3.
    AppV3,
    Hello,
    /// An outside server (`LOAD_BASELINE`), e.g. Node.js doing the duplicate notification's one
    /// store read per request.
    Baseline,
}

/// The v3 notify route's name: its signature is made again for each concurrency (WeChat's
/// signatures are refused 5 minutes after they were made).
const V3_NOTIFY: &str = "v3 notify (duplicate)";

/// One route under load: how to build its request and which status it must answer.
#[derive(Clone)]
struct Route {
    name: &'static str,
    target: Target,
    method: &'static str,
    path: String,
    bearer: Option<String>,
    body: Bytes,
    /// Headers besides the bearer token and the content type (APIv3's `Wechatpay-*`).
    headers: Vec<(&'static str, String)>,
    status: u16,
    /// The probe that uses the same runtime features as this route, if there is one.
    probe: Option<&'static str>,
}

impl Route {
    fn request(&self, addr: SocketAddr) -> anyhow::Result<http::Request<Full<Bytes>>> {
        let mut builder = http::Request::builder()
            .method(self.method)
            .uri(&self.path)
            .header(http::header::HOST, addr.to_string());
        if let Some(token) = &self.bearer {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        if !self.body.is_empty() {
            builder = builder.header("content-type", "application/json");
        }
        for (name, value) in &self.headers {
            builder = builder.header(*name, value);
        }
        // As an HTTP client does for a request with a body of known length (hyper, `curl -d`).
        if self.method != "GET" {
            builder = builder.header("content-length", self.body.len());
        }
        Ok(builder.body(Full::new(self.body.clone()))?)
    }
}

/// One keep-alive HTTP/1.1 connection: hyper's sender, and (a duplicate of) its socket for
/// `quick_ack`.
struct Conn {
    sender: SendRequest<Full<Bytes>>,
    socket: socket2::Socket,
    quick_ack: bool,
}

/// One keep-alive HTTP/1.1 connection to `addr`.
async fn connect(addr: SocketAddr, quick_ack: bool) -> anyhow::Result<Conn> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let socket = socket2::Socket::from(std::os::fd::AsFd::as_fd(&stream).try_clone_to_owned()?);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(Conn {
        sender,
        socket,
        quick_ack,
    })
}

impl Conn {
    /// Unless `LOAD_QUICKACK=0`: acknowledges what the socket received at once (`TCP_QUICKACK`)
    /// instead of after Linux's delayed-ACK timeout. Spin 4.0.2 does not set `TCP_NODELAY` on
    /// the connections it accepts, so when a response's head and body are written separately
    /// the body waits (Nagle) for the client's ACK of the head: ~40 ms with a client that delays
    /// its ACKs, as curl and this client do by default.
    fn quick_ack(&self) {
        if self.quick_ack {
            // Quick-ACK mode is a hint the kernel may leave again; a failure only costs time.
            let _ = self.socket.set_tcp_quickack(true);
        }
    }
}

/// One request on `conn`: the status and body once the body is read.
async fn send(conn: &mut Conn, addr: SocketAddr, route: &Route) -> anyhow::Result<(u16, Bytes)> {
    let request = route.request(addr)?;
    let exchange = async {
        conn.sender.ready().await?;
        conn.quick_ack();
        let response = conn.sender.send_request(request).await?;
        // The head is in: acknowledge it now, so that a body written after it is not held back.
        conn.quick_ack();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, body))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .context("no answer in time")?
}

/// One request on a new connection (setting up the state).
async fn once(addr: SocketAddr, route: &Route) -> anyhow::Result<(u16, String)> {
    let mut sender = connect(addr, true).await?;
    let (status, body) = send(&mut sender, addr, route).await?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Runs `route` from `clients` concurrent connections for `secs` or `max` requests.
async fn measure(
    addr: SocketAddr,
    route: &Route,
    clients: usize,
    secs: f64,
    max: u64,
) -> Measurement {
    // Warm-up: instances created, caches filled.
    drop(run(addr, route, clients, 0.3, max).await);
    let started = Instant::now();
    let results = run(addr, route, clients, secs, max).await;
    Measurement::of(results, started.elapsed().as_secs_f64())
}

async fn run(
    addr: SocketAddr,
    route: &Route,
    clients: usize,
    secs: f64,
    max: u64,
) -> Vec<(Duration, bool)> {
    let quick_ack = env_or("LOAD_QUICKACK", 1) != 0;
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let issued = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let route = route.clone();
        let issued = issued.clone();
        tasks.push(tokio::spawn(async move {
            let mut out: Vec<(Duration, bool)> = Vec::new();
            let mut sender = None;
            while Instant::now() < deadline && issued.fetch_add(1, Ordering::Relaxed) < max {
                // A connection is (re)opened outside the request's latency.
                if sender.is_none() {
                    match connect(addr, quick_ack).await {
                        Ok(s) => sender = Some(s),
                        Err(e) => {
                            eprintln!("{}: cannot connect: {e:#}", route.name);
                            out.push((Duration::ZERO, false));
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    }
                }
                let Some(s) = sender.as_mut() else { continue };
                let t = Instant::now();
                let res = send(s, addr, &route).await;
                let latency = t.elapsed();
                let ok = matches!(&res, Ok((status, _)) if *status == route.status);
                if !ok && out.iter().all(|(_, ok)| *ok) {
                    match &res {
                        Ok((status, body)) => eprintln!(
                            "{}: unexpected answer {status}: {}",
                            route.name,
                            String::from_utf8_lossy(body)
                        ),
                        Err(e) => eprintln!("{}: request failed: {e:#}", route.name),
                    }
                }
                if res.is_err() {
                    sender = None;
                }
                out.push((latency, ok));
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

/// The 1, 5 and 15 minute load averages, as `uptime` prints them.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(", "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Spin's or a component's failure in `spin up`'s output, if any.
fn failure_in(up: &SpinUp) -> Option<&'static str> {
    let output = up.output();
    ["Component error", "panicked", "error while executing"]
        .into_iter()
        .find(|bad| output.contains(bad))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let spin = match find_spin() {
        Ok(spin) => spin,
        Err(why) => {
            println!("load_spin skipped: {why} (set SPIN_BIN to run it)");
            return Ok(());
        }
    };
    let secs: f64 = env_or("LOAD_SECS", 3.0);
    let max: u64 = env_or("LOAD_MAX", 100_000);
    let version = std::process::Command::new(&spin)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();

    let root = workspace_root();
    let app_manifest = root.join("spin.toml");
    let hello_manifest = root.join("tests/hello/spin.toml");
    for manifest in [&app_manifest, &hello_manifest] {
        eprintln!("spin build -f {}", manifest.display());
        spin_build(&spin, manifest)?;
    }

    let wechat = fake_wechat().await;
    let origin = wechat.origin();
    let variables = live_variables(&origin);
    let variables: Vec<(&str, &str)> = variables.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // `LOAD_RUNTIME_CONFIG`: every app's store (and the probes') on the backend it names.
    let runtime_config = std::env::var("LOAD_RUNTIME_CONFIG").ok();
    let args: Vec<&str> = match &runtime_config {
        Some(path) => vec!["--runtime-config-file", path.as_str()],
        None => Vec::new(),
    };
    let app = SpinUp::start_with(&spin, &app_manifest, &variables, &args).await?;
    let v3_variables = live_v3_variables(&origin);
    let v3_variables: Vec<(&str, &str)> =
        v3_variables.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app_v3 = SpinUp::start_with(&spin, &app_manifest, &v3_variables, &args).await?;
    let hello = SpinUp::start_with(&spin, &hello_manifest, &[], &args).await?;
    let baseline: Option<SocketAddr> = std::env::var("LOAD_BASELINE")
        .ok()
        .map(|a| a.parse())
        .transpose()
        .context("LOAD_BASELINE is host:port")?;
    let addr_of = |target: Target| match target {
        Target::App => app.addr(),
        Target::AppV3 => app_v3.addr(),
        Target::Hello => hello.addr(),
        Target::Baseline => baseline.expect("a baseline route only with LOAD_BASELINE"),
    };

    // The world: a product, a user, a paid order (notified once) and an order awaiting payment.
    let token = session_token()?;
    let put = Route {
        name: "put product",
        target: Target::App,
        method: "PUT",
        path: "/api/admin/products/tea".into(),
        bearer: Some(ADMIN_TOKEN.into()),
        body: Bytes::from_static(PRODUCT.as_bytes()),
        headers: Vec::new(),
        status: 200,
        probe: None,
    };
    for up in [&app, &app_v3] {
        let (status, text) = once(up.addr(), &put).await?;
        anyhow::ensure!(status == 200, "product: {status} {text}");
    }
    let create = Route {
        name: "create order",
        target: Target::App,
        method: "POST",
        path: "/api/orders".into(),
        bearer: Some(token.clone()),
        body: Bytes::from_static(ORDER.as_bytes()),
        headers: Vec::new(),
        status: 201,
        probe: None,
    };
    let create_v3 = Route {
        name: "v3 create order",
        target: Target::AppV3,
        ..create.clone()
    };
    let mut orders = Vec::new();
    for (up, route) in [
        (&app, &create),
        (&app, &create),
        (&app_v3, &create_v3),
        (&app_v3, &create_v3),
    ] {
        let (status, text) = once(up.addr(), route).await?;
        anyhow::ensure!(status == 201, "create: {status} {text}\n{}", up.output());
        let body: serde_json::Value = serde_json::from_str(&text)?;
        orders.push(body["order"]["order_no"].as_str().unwrap_or("").to_owned());
    }
    let (paid, awaiting) = (orders[0].clone(), orders[1].clone());
    let (paid_v3, awaiting_v3) = (orders[2].clone(), orders[3].clone());
    let notify = Route {
        name: "notify (duplicate)",
        target: Target::App,
        method: "POST",
        path: "/api/wxpay/notify".into(),
        bearer: None,
        body: Bytes::from(notification(&paid)),
        headers: Vec::new(),
        status: 200,
        probe: Some("probe: notify's runtime features"),
    };
    let (status, text) = once(app.addr(), &notify).await?;
    anyhow::ensure!(
        status == 200 && text.contains("SUCCESS"),
        "notify: {status} {text}"
    );
    let v3_notify = || {
        let (body, headers) = v3_notification(&paid_v3);
        Route {
            name: V3_NOTIFY,
            target: Target::AppV3,
            body: Bytes::from(body),
            headers,
            status: 204,
            ..notify.clone()
        }
    };
    let (status, text) = once(app_v3.addr(), &v3_notify()).await?;
    anyhow::ensure!(
        status == 204,
        "v3 notify: {status} {text}\n{}",
        app_v3.output()
    );
    let get = |name, path: String, bearer: Option<String>| Route {
        name,
        target: Target::App,
        method: "GET",
        path,
        bearer,
        body: Bytes::new(),
        headers: Vec::new(),
        status: 200,
        probe: None,
    };

    let resign = Route {
        name: "pay-params (re-sign)",
        method: "POST",
        path: format!("/api/orders/{awaiting}/pay-params"),
        bearer: Some(token.clone()),
        probe: Some("probe: re-sign's runtime features"),
        ..get("", String::new(), None)
    };
    let baseline_route = Route {
        name: "baseline: notify's one store read, outside Spin (LOAD_BASELINE)",
        target: Target::Baseline,
        path: format!("/notify/{paid}"),
        probe: None,
        ..notify.clone()
    };
    let mut routes = vec![
        notify.clone(),
        v3_notify(),
        resign.clone(),
        Route {
            name: "v3 pay-params (re-sign)",
            target: Target::AppV3,
            path: format!("/api/orders/{awaiting_v3}/pay-params"),
            ..resign.clone()
        },
        get(
            "GET order (paid)",
            format!("/api/orders/{paid}"),
            Some(token.clone()),
        ),
        get("health", "/api/health".into(), None),
        create,
        create_v3,
    ];
    if baseline.is_some() {
        routes.insert(1, baseline_route);
    }
    let hello_route = Route {
        target: Target::Hello,
        ..get("hello-world", "/".into(), None)
    };
    // The same component printing one log line per request, as every app route does.
    let hello_log = Route {
        name: "hello-world + 1 log line",
        path: "/log".into(),
        ..hello_route.clone()
    };
    let probes: Vec<Route> = PROBES
        .into_iter()
        .map(|(name, method, probe)| Route {
            name,
            method,
            path: format!("/probe/{probe}"),
            body: if probe_takes_notification(method, probe) {
                notify.body.clone()
            } else {
                Bytes::new()
            },
            ..hello_route.clone()
        })
        .collect();

    // `LOAD_ROUTES=notify,health` measures only the routes whose names contain one of these,
    // and the probes with the same runtime features as a chosen route; `LOAD_CLIENTS=4` one
    // concurrency.
    let only = only_routes();
    let chosen = |r: &Route| only.is_empty() || only.iter().any(|o| r.name.contains(o.as_str()));
    let wanted_probes: Vec<&str> = routes
        .iter()
        .filter(|r| chosen(r))
        .filter_map(|r| r.probe)
        .collect();
    let selected: Vec<&Route> = routes
        .iter()
        .chain(probes.iter())
        .filter(|r| chosen(r) || wanted_probes.contains(&r.name))
        .collect();

    println!(
        "load_spin: {version}; {secs} s or {max} requests per measurement; {} cores; \
         client ACKs {}; load average {} at the start",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if env_or("LOAD_QUICKACK", 1) != 0 {
            "at once (TCP_QUICKACK)"
        } else {
            "delayed (LOAD_QUICKACK=0)"
        },
        load_average()
    );
    println!();
    println!(
        "| route | clients | requests | rps | p50 µs | p99 µs | vs hello-world | vs its probe |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for clients in concurrency() {
        let mut rows = vec![(
            "hello-world (before)",
            None,
            measure(hello.addr(), &hello_route, clients, secs, max).await,
        )];
        rows.push((
            hello_log.name,
            None,
            measure(hello.addr(), &hello_log, clients, secs, max).await,
        ));
        for route in &selected {
            let fresh;
            let route = if route.name == V3_NOTIFY {
                fresh = v3_notify();
                &fresh
            } else {
                route
            };
            let m = measure(addr_of(route.target), route, clients, secs, max).await;
            rows.push((route.name, route.probe, m));
        }
        rows.push((
            "hello-world (after)",
            None,
            measure(hello.addr(), &hello_route, clients, secs, max).await,
        ));
        let floor = match (rows.first(), rows.last()) {
            (Some(before), Some(after)) => (before.2.rps + after.2.rps) / 2.0,
            _ => f64::NAN,
        };
        for (name, probe, m) in &rows {
            let errors = m.errors_note();
            let vs_probe = probe
                .and_then(|p| rows.iter().find(|(n, _, _)| *n == p))
                .map_or_else(String::new, |(_, _, pm)| format!("{:.2}", m.rps / pm.rps));
            println!(
                "| {name}{errors} | {clients} | {} | {:.0} | {} | {} | {:.2} | {vs_probe} |",
                m.requests,
                m.rps,
                micros(m.p50),
                micros(m.p99),
                m.rps / floor
            );
        }
        eprintln!("load average {} after {clients} clients", load_average());
    }
    println!();
    println!("load average {} at the end", load_average());
    for (what, up) in [("app", &app), ("app (v3)", &app_v3), ("hello", &hello)] {
        if let Some(bad) = failure_in(up) {
            println!("spin up ({what}) printed {bad:?}: see its output");
        }
    }
    Ok(())
}
