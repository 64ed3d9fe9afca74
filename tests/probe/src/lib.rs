//! Runtime-cost probes for the load benchmark (`tests/host/examples/load.rs`,
//! docs/PERFORMANCE.md): each route is the hello-world answer plus exactly one of the runtime
//! features the app's routes use, so the benchmark can price each feature against the
//! hello-world floor in the same run. `/probe/notify` uses what the notify route uses of the
//! runtime per request (body, KV open + get, clocks, one JSON log line, two response headers;
//! its variables are read once per instance), and nothing else; `/probe/pay-params` the same
//! for the re-sign route (no body; a random nonce). The APIv3 probes price its cryptography in
//! Wasm with the core's own functions and the vectors' throw-away keys: `/rsa-verify` (a
//! notification's RSA-2048 signature, the WeChat Pay public key parsed from PEM as the notify
//! route does per request), `/aes-gcm` (its AES-256-GCM resource) and `/rsa-sign` (one RSA-2048
//! private-key operation, the key parsed from PEM, as a v3 paySign or `Authorization`). Not
//! shipped.

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
    match probe.as_str() {
        "/rsa-verify" => rsa_verify(),
        "/aes-gcm" => aes_gcm(),
        "/rsa-sign" => rsa_sign(),
        _ => {}
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

const WECHATPAY_PUB: &str = include_str!("../../../src/v3/testdata/wechatpay_pub.pem");
const MERCHANT_KEY: &str = include_str!("../../../src/v3/testdata/merchant_key.pem");
/// PROTOCOL.md V2: a reply body and its signature by the WeChat Pay test key.
const V2_BODY: &str = r#"{"prepay_id":"wx26112221580621e9b071c00d9e093b0000"}"#;
const V2_TIMESTAMP: &str = "1554209980";
const V2_NONCE: &str = "c5ac7061fccab6bf3e254dcf98995b8c";

fn rsa_verify() {
    let key = wxpay::v3::verify::PublicKey::from_pem(WECHATPAY_PUB).expect("public key");
    let message = wxpay::v3::verify::response_message(V2_TIMESTAMP, V2_NONCE, V2_BODY.as_bytes());
    // The signature itself is what V2 signs; a wrong one costs the same to check.
    let signature = std::hint::black_box(V2_SIGNATURE);
    std::hint::black_box(key.verifies(&message, signature));
}

const V2_SIGNATURE: &str = include_str!("v2_signature.txt");

fn aes_gcm() {
    let key = wxpay::secret::Secret::new("a7cde1ef4e9a0ba9d5e3b2c1f0e9d8c7");
    let plain = std::hint::black_box(
        wxpay::v3::aead::decrypt(&key, "fdasflkja484", "transaction", V3_CIPHERTEXT)
            .expect("decrypts"),
    );
    std::hint::black_box(plain);
}

const V3_CIPHERTEXT: &str = include_str!("v3_ciphertext.txt");

fn rsa_sign() {
    let key = wxpay::v3::sign::MerchantKey::from_pem(MERCHANT_KEY).expect("private key");
    std::hint::black_box(key.sign(b"wxd678efh567hg6787\n1414561699\n5K8264ILTKCH16CQ2502SI8ZNMTM67VS\nprepay_id=wx201410272009395522657a690389285100\n"));
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
