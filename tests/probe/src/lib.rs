//! Runtime-cost probes for the load benchmark (`tests/host/examples/load.rs`,
//! docs/PERFORMANCE.md): each route is the hello-world answer plus exactly one of the runtime
//! features the app's routes use, so the benchmark can price each feature against the
//! hello-world floor in the same run. `/probe/notify` uses what the notify route uses of the
//! runtime per request (body, KV open + get, clocks, one JSON log line, two response headers;
//! its variables are read once per instance), and nothing else; `/probe/pay-params` the same
//! for the re-sign route (no body; a random nonce). Not shipped.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::{http_service, key_value, variables};

#[http_service]
async fn handle(req: Request) -> impl IntoResponse {
    let probe = req
        .headers()
        .get("spin-path-info")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    // The re-sign route (`POST .../pay-params`, `Content-Length: 0`) uses the same minus the
    // body read, plus a random nonce.
    let resign = probe == "/pay-params";
    let all = probe == "/notify" || resign;
    if resign {
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).expect("wasi:random");
        std::hint::black_box(nonce);
    } else if all || probe == "/body" {
        read_body(req).await;
    }
    if probe == "/variable" {
        let _ = variables::get("probe_value").await;
    }
    if all || probe == "/kv" {
        let store = key_value::Store::open("default").await.expect("open");
        let _ = store.get("probe-key").await.expect("get");
    }
    if all || probe == "/clock" {
        let started = std::time::Instant::now();
        let _ = std::time::SystemTime::now();
        std::hint::black_box(started.elapsed());
    }
    if probe == "/log" {
        println!("[probe] GET /log 200 ok");
    }
    if all || probe == "/json-log" {
        let line = serde_json::json!({
            "log": "request", "component": "probe", "method": "POST",
            "route": "/probe/...", "status": 200, "outcome": "ok", "latency_ms": 0.1,
        });
        println!("{line}");
    }
    if all || probe == "/headers" {
        return Response::builder()
            .status(200)
            .header("cache-control", "no-store")
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from_static(b"Hello, World!")))
            .expect("response");
    }
    Response::new(Full::new(Bytes::from_static(b"Hello, World!")))
}

/// Reads the request body to its end, frame by frame (as the app's `read_request` does).
async fn read_body(req: Request) {
    let mut body = req.into_body();
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("body frame").into_data() {
            bytes.extend_from_slice(&data);
        }
    }
    std::hint::black_box(bytes);
}
