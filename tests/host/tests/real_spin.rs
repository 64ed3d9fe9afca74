//! The app under the released Spin (4.0.2): `spin build`, then `spin up` on the real
//! `spin.toml` on free loopback ports, driven over HTTP like a user would.
//!
//! - The README Quickstart, word for word (its shell blocks — payment, then refund — run by
//!   `bash`, only `BASE` pointed at the port), in simulator mode, on APIv2 and APIv3.
//! - Every route once in live mode against the tests' fake WeChat (`wxpay_mch_api` / `wx_api`
//!   pointed at it), each with a request body, plus a HEAD request; every response's
//!   `content-length` matches its body.
//! - The APIv3 routes in live mode against the fake WeChat Pay APIv3 (`app/fake_v3.rs`): the
//!   signed `Authorization` out, the `Wechatpay-*` reply headers in, a notification's
//!   `Wechatpay-*` headers through Spin to the notify component.
//! - Refunds: APIv3 in live mode (signed out, the refund notification's headers in); APIv2 with
//!   the merchant's client certificate from `[[client_tls]]` (`--runtime-config-file`), and
//!   what Spin 4.0.2 does with such entries and its connection pool.
//! - The mini-program example's request sequence (`examples/miniprogram`), in simulator mode.
//! - The `spin-*` headers Spin gives the fixture component, compared with the embedded test
//!   host's for the same requests.
//!
//! Without a Spin binary (see `spin_test_host::real_spin::find_spin`) every test here prints
//! that it was skipped and why, and passes: a user's machine need not have Spin to run the
//! tests. CI sets `SPIN_WXPAY_REQUIRE_SPIN=1`, which turns a missing binary into a failure.

#[path = "app/support.rs"]
#[allow(dead_code)]
mod support;

#[path = "app/fake_v3.rs"]
#[allow(dead_code)]
mod fake_v3;

use std::path::PathBuf;

use serde_json::{Value, json};
use spin_test_host::TestApp;
use spin_test_host::real_spin::{SpinUp, WireResponse, spin_build, spin_or_skip, workspace_root};
use spin_test_host::tls::{ClientCert, MtlsFake};
use support::{ADMIN_TOKEN, API_KEY, APP_SECRET, APPID, FakeWechat, MCH_ID, SESSION_SECRET};
use wxpay::v2::sign::SignType;
use wxpay::v2::xml;

fn app_manifest() -> PathBuf {
    workspace_root().join("spin.toml")
}

/// `spin build` and `spin up` of the app with `variables`.
async fn up(spin: &std::path::Path, variables: &[(&str, &str)]) -> SpinUp {
    spin_build(spin, &app_manifest()).expect("spin build");
    SpinUp::start(spin, &app_manifest(), variables)
        .await
        .expect("spin up")
}

/// Spin's and the components' output must not show a self request or a component failure.
fn assert_clean_output(up: &SpinUp) {
    let output = up.output();
    for bad in [
        "no origin set",
        "Component error",
        "panicked",
        "error while executing",
    ] {
        assert!(!output.contains(bad), "spin output has {bad:?}:\n{output}");
    }
}

/// A response's body travels with a `content-length` that matches it, not chunked.
fn assert_fixed_length(res: &WireResponse, what: &str) {
    assert!(
        res.header("transfer-encoding").is_none(),
        "{what}: chunked response"
    );
    if !res.body.is_empty() {
        assert_eq!(
            res.header("content-length"),
            Some(res.body.len().to_string().as_str()),
            "{what}: content-length"
        );
    }
}

// ---- The README Quickstart -------------------------------------------------------------------------

/// The Quickstart's client commands: the first ```sh block after "Then, in another terminal".
fn quickstart_script(readme: &str) -> String {
    sh_block_after(readme, "Then, in another terminal")
}

/// The Quickstart's refund steps: the first ```sh block after "Then refund the paid order".
fn refund_script(readme: &str) -> String {
    sh_block_after(readme, "Then refund the paid order")
}

fn sh_block_after(readme: &str, marker: &str) -> String {
    let after = readme
        .split_once(marker)
        .unwrap_or_else(|| panic!("README: {marker:?}"))
        .1;
    let block = after.split_once("```sh\n").expect("a ```sh block").1;
    block
        .split_once("```")
        .expect("the block's end")
        .0
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_quickstart_word_for_word() {
    let Some(spin) = spin_or_skip("readme_quickstart_word_for_word") else {
        return;
    };
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    assert!(
        readme.contains("\nspin up --build\n"),
        "the Quickstart starts the app with `spin up --build`"
    );
    assert!(
        readme.contains("spin up --build --variable wxpay_api_version=v3"),
        "the README runs the same walk-through on APIv3"
    );
    // APIv2 (the default), then the same script against APIv3: the simulator's notification is
    // then encrypted JSON, acknowledged with 204.
    for (variables, acknowledged) in [(&[][..], 200), (&[("wxpay_api_version", "v3")][..], 204)] {
        let up = up(&spin, variables).await;
        // The payment steps, then the refund steps in the same shell (they use its variables).
        let script = quickstart_script(&readme) + &refund_script(&readme);
        let base_line = "BASE=http://127.0.0.1:3000";
        assert!(script.contains(base_line), "{script}");
        let script = script.replace(base_line, &format!("BASE={}", up.base()));
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new("bash")
                .arg("-c")
                .arg(&script)
                .output()
        })
        .await
        .unwrap()
        .expect("bash runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stdout}\n{stderr}\n{}", up.output());
        // Step 3 shows the simulator's answer (pretty-printed JSON), then one line per step.
        let lines: Vec<&str> = stdout.trim_end().lines().collect();
        let [.., paid_status, refund, refund_notified, refunded] = lines[..] else {
            panic!("{stdout}");
        };
        let paid = &stdout[..stdout.find(paid_status).unwrap()];
        let paid: Value = serde_json::from_str(paid).unwrap_or_else(|e| panic!("{e}: {stdout}"));
        assert_eq!(paid["notified"], true, "{paid}");
        assert_eq!(paid["result"], "SUCCESS");
        assert_eq!(paid["deliveries"][0]["status"], acknowledged, "{paid}");
        // Steps 4-7 print what the README says they print.
        assert_eq!(paid_status, "\"PAID\"", "{stdout}");
        let refund: Value =
            serde_json::from_str(refund).unwrap_or_else(|e| panic!("{e}: {stdout}"));
        assert_eq!(
            (&refund["amount"], &refund["status"]),
            (&json!(1), &json!("PROCESSING"))
        );
        assert_eq!(refund_notified, acknowledged.to_string(), "{stdout}");
        let readme_says = readme
            .lines()
            .find(|l| l.starts_with("# {\"status\":\"REFUNDED\""))
            .expect("the README shows step 7's output");
        assert_eq!(format!("# {refunded}"), readme_says, "{stdout}");

        // The admin token the README gives for simulator mode.
        let products = up
            .request(
                "GET",
                "/api/admin/products",
                &[("authorization", "Bearer simulator-admin-token")],
                "",
            )
            .await
            .unwrap();
        assert_eq!(products.status, 200, "{}", products.text());
        assert_eq!(products.json()["products"][0]["sku"], "demo");
        // Simulator mode is marked in the log.
        assert!(up.output().contains("NO REAL PAYMENT"), "{}", up.output());
        assert_clean_output(&up);
    }
}

/// One request to `up` that must be answered, with a `content-length` that matches its body.
async fn checked_request(
    up: &SpinUp,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: String,
) -> WireResponse {
    let res = up
        .request(method, path, headers, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e:#}\n{}", up.output()));
    assert_fixed_length(&res, &format!("{method} {path}"));
    res
}

// ---- APIv3 in live mode ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_v3_route_in_live_mode() {
    use fake_v3::{FakeWechatV3, KeyMode, live_v3_variables};
    let Some(spin) = spin_or_skip("every_v3_route_in_live_mode") else {
        return;
    };
    let wechat = FakeWechatV3::start(KeyMode::PublicKey).await;
    let variables = live_v3_variables(&wechat, KeyMode::PublicKey);
    let variables: Vec<(&str, &str)> = variables.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let up = up(&spin, &variables).await;
    let call = async |method: &str, path: &str, headers: &[(&str, &str)], body: String| {
        checked_request(&up, method, path, headers, body).await
    };
    let health = call("GET", "/api/health", &[], String::new()).await;
    assert_eq!(health.json()["config_ok"], true, "{}", health.text());
    assert_eq!(health.json()["api_version"], "v3");
    let admin = format!("Bearer {ADMIN_TOKEN}");
    let tea = json!({"name": "Tea", "price": 199}).to_string();
    let put = call(
        "PUT",
        "/api/admin/products/tea",
        &[("authorization", &admin), JSON_TYPE],
        tea,
    )
    .await;
    assert_eq!(put.status, 200, "{}", put.text());
    let login = call(
        "POST",
        "/api/login",
        &[JSON_TYPE],
        json!({"code": "u-vera-1"}).to_string(),
    )
    .await;
    let token = format!("Bearer {}", login.json()["token"].as_str().unwrap());
    let user = ("authorization", token.as_str());
    let order = json!({"sku": "tea", "quantity": 1}).to_string();
    let mut orders = Vec::new();
    for _ in 0..2 {
        let created = call("POST", "/api/orders", &[user, JSON_TYPE], order.clone()).await;
        assert_eq!(created.status, 201, "{}\n{}", created.text(), up.output());
        let body = created.json();
        assert_eq!(body["pay_params"]["signType"], "RSA");
        let no = body["order"]["order_no"].as_str().unwrap().to_owned();
        let again = call(
            "POST",
            &format!("/api/orders/{no}/pay-params"),
            &[user],
            String::new(),
        )
        .await;
        assert_eq!(
            again.json(),
            body["pay_params"],
            "re-sign hands back the stored params"
        );
        orders.push(no);
    }
    // A status poll asks WeChat (a signed GET, once per 5 s); its signed answer (the
    // `Wechatpay-*` reply headers) is read through Spin.
    wechat.pay(&orders[0]);
    let polled = call(
        "GET",
        &format!("/api/orders/{}", orders[0]),
        &[user],
        String::new(),
    )
    .await;
    assert_eq!(
        polled.json()["status"],
        "PAID",
        "{}\n{}",
        polled.text(),
        up.output()
    );
    // A notification's Wechatpay-* headers reach the notify component through Spin.
    let (body, signature) = wechat.notification(&orders[1], "transaction", 0, |_| {});
    let headers = signature.to_headers();
    let mut wire: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    wire.push(JSON_TYPE);
    let tampered = call(
        "POST",
        "/api/wxpay/notify",
        &wire,
        body.replace("EV-1", "EV-2"),
    )
    .await;
    assert_eq!(tampered.status, 401, "{}", tampered.text());
    let notified = call("POST", "/api/wxpay/notify", &wire, body).await;
    assert_eq!(notified.status, 204, "{}\n{}", notified.text(), up.output());
    assert!(notified.body.is_empty());
    let paid = call(
        "GET",
        &format!("/api/orders/{}", orders[1]),
        &[user],
        String::new(),
    )
    .await;
    assert_eq!(paid.json()["status"], "PAID");
    // A refund: signed out, the fake's signed reply read back through Spin; then WeChat's
    // REFUND.SUCCESS with its Wechatpay-* headers to the refund-notify route.
    let admin = format!("Bearer {ADMIN_TOKEN}");
    wechat.pay(&orders[1]);
    let refunded = call(
        "POST",
        &format!("/api/admin/orders/{}/refunds", orders[1]),
        &[("authorization", &admin), JSON_TYPE],
        json!({"amount": 100, "refund_no": "RS1"}).to_string(),
    )
    .await;
    assert_eq!(refunded.status, 201, "{}\n{}", refunded.text(), up.output());
    assert_eq!(refunded.json()["refund_id"], "5000RS1");
    let (body, signature) = wechat.refund_notification("RS1", "SUCCESS", |_| {});
    let headers = signature.to_headers();
    let mut wire: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    wire.push(JSON_TYPE);
    let notified = call("POST", "/api/wxpay/refund-notify", &wire, body).await;
    assert_eq!(notified.status, 204, "{}\n{}", notified.text(), up.output());
    let order = call(
        "GET",
        &format!("/api/admin/orders/{}", orders[1]),
        &[("authorization", &admin)],
        String::new(),
    )
    .await;
    assert_eq!(order.json()["refunded_total"], 100, "{}", order.text());
    assert_eq!(order.json()["refunds"][0]["status"], "SUCCESS");
    wechat.assert_all_requests_verified();
    assert_clean_output(&up);
}

// ---- Every route in live mode ---------------------------------------------------------------------

fn live_variables(wechat: &FakeWechat, sign_type: SignType) -> Vec<(&'static str, String)> {
    vec![
        ("wxpay_mode", "live".into()),
        ("wx_appid", APPID.into()),
        ("wx_app_secret", APP_SECRET.into()),
        ("wxpay_mch_id", MCH_ID.into()),
        ("wxpay_api_key", API_KEY.into()),
        ("wxpay_sign_type", sign_type.as_str().into()),
        (
            "wxpay_notify_url",
            "https://shop.example.com/api/wxpay/notify".into(),
        ),
        ("wxpay_mch_api", wechat.origin()),
        ("wx_api", wechat.origin()),
        ("session_secret", SESSION_SECRET.into()),
        ("admin_token", ADMIN_TOKEN.into()),
    ]
}

const JSON_TYPE: (&str, &str) = ("content-type", "application/json");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_in_live_mode() {
    let Some(spin) = spin_or_skip("every_route_in_live_mode") else {
        return;
    };
    for sign_type in [SignType::Md5, SignType::HmacSha256] {
        every_route(&spin, sign_type).await;
    }
}

async fn every_route(spin: &std::path::Path, sign_type: SignType) {
    let wechat = FakeWechat::start().await;
    let variables = live_variables(&wechat, sign_type);
    let variables: Vec<(&str, &str)> = variables.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let up = up(spin, &variables).await;
    let admin = format!("Bearer {ADMIN_TOKEN}");
    let admin = ("authorization", admin.as_str());
    // Every request carries a body (routes that take none ignore it).
    let call = async |method: &str, path: &str, headers: &[(&str, &str)], body: String| {
        checked_request(&up, method, path, headers, body).await
    };
    let ignored = json!({"ignored": true}).to_string();

    let health = call("GET", "/api/health", &[JSON_TYPE], ignored.clone()).await;
    assert_eq!(health.status, 200, "{}", health.text());
    assert_eq!(health.json()["mode"], "live");
    assert_eq!(health.json()["config_ok"], true, "{}", health.text());
    assert_eq!(
        health.header("x-wxpay-mode"),
        None,
        "live answers are not marked"
    );
    // HEAD: no route serves it (405, as for any other method), and no body comes back.
    let head = call("HEAD", "/api/health", &[], String::new()).await;
    assert_eq!(head.status, 405);
    assert!(head.body.is_empty());

    let tea = json!({"name": "乌龙茶 Oolong", "price": 199}).to_string();
    let put = call("PUT", "/api/admin/products/tea", &[admin, JSON_TYPE], tea).await;
    assert_eq!(put.status, 200, "{}", put.text());
    assert_eq!(put.json()["price"], 199);
    let listed = call("GET", "/api/admin/products", &[admin], ignored.clone()).await;
    assert_eq!(
        listed.json()["products"][0]["sku"],
        "tea",
        "{}",
        listed.text()
    );
    let one = call("GET", "/api/admin/products/tea", &[admin], ignored.clone()).await;
    assert_eq!(
        (one.status, one.json()["name"].clone()),
        (200, json!("乌龙茶 Oolong"))
    );
    let unauthorized = call("GET", "/api/admin/products", &[], ignored.clone()).await;
    assert_eq!(unauthorized.json()["error"]["code"], "unauthorized");

    let login = call(
        "POST",
        "/api/login",
        &[JSON_TYPE],
        json!({"code": "u-alice-1"}).to_string(),
    )
    .await;
    assert_eq!(login.status, 200, "{}", login.text());
    let token = format!("Bearer {}", login.json()["token"].as_str().unwrap());
    let user = ("authorization", token.as_str());

    let created = call(
        "POST",
        "/api/orders",
        &[user, JSON_TYPE],
        json!({"sku": "tea", "quantity": 2}).to_string(),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let created = created.json();
    let order_no = created["order"]["order_no"].as_str().unwrap().to_owned();
    assert_eq!(created["order"]["total_fee"], 398);
    assert_eq!(created["pay_params"]["signType"], sign_type.as_str());
    let order_path = format!("/api/orders/{order_no}");

    // The route parameter reaches the component (Spin 4.0.2: `spin-path-match-order-no`).
    let polled = call("GET", &order_path, &[user, JSON_TYPE], ignored.clone()).await;
    assert_eq!(polled.status, 200, "{}", polled.text());
    assert_eq!(polled.json()["order_no"], order_no.as_str());
    assert_eq!(polled.json()["status"], "AWAITING_PAYMENT");
    let head = call("HEAD", &order_path, &[user], String::new()).await;
    assert_eq!((head.status, head.body.len()), (405, 0));

    let resigned = call(
        "POST",
        &format!("{order_path}/pay-params"),
        &[user, JSON_TYPE],
        "{}".into(),
    )
    .await;
    assert_eq!(resigned.status, 200, "{}", resigned.text());
    assert_eq!(resigned.json()["package"], created["pay_params"]["package"]);

    // WeChat's notification (XML), then the paid order.
    let notification = wechat.pay(&order_no, sign_type);
    let notified = call(
        "POST",
        "/api/wxpay/notify",
        &[("content-type", "text/xml")],
        notification,
    )
    .await;
    assert_eq!(notified.status, 200);
    assert_eq!(notified.header("content-type"), Some("text/xml"));
    assert_eq!(xml::read(&notified.body).unwrap()["return_code"], "SUCCESS");
    let paid = call("GET", &order_path, &[user], ignored.clone()).await;
    assert_eq!(paid.json()["status"], "PAID", "{}", paid.text());
    let record = call(
        "GET",
        &format!("/api/admin/orders/{order_no}"),
        &[admin],
        ignored.clone(),
    )
    .await;
    assert_eq!(record.status, 200, "{}", record.text());
    assert_eq!(record.json()["status"], "PAID");
    // The listing: the query reaches the admin component (Spin's `spin-full-url`).
    let listed = call(
        "GET",
        "/api/admin/orders?limit=1",
        &[admin],
        ignored.clone(),
    )
    .await;
    assert_eq!(listed.status, 200, "{}", listed.text());
    assert_eq!(listed.json()["orders"][0]["order_no"], order_no.as_str());
    assert_eq!(listed.json()["orders"].as_array().map(Vec::len), Some(1));
    let too_many = call(
        "GET",
        "/api/admin/orders?limit=101",
        &[admin],
        ignored.clone(),
    )
    .await;
    assert_eq!(too_many.json()["error"]["code"], "invalid_limit");
    // A browser's request from another origin, even with the token: refused.
    let foreign = call(
        "GET",
        "/api/admin/products",
        &[admin, ("origin", "http://evil.example")],
        ignored.clone(),
    )
    .await;
    assert_eq!(foreign.status, 403, "{}", foreign.text());
    assert_eq!(foreign.json()["error"]["code"], "cross_origin_refused");
    let reconcile = call(
        "POST",
        "/api/admin/reconcile",
        &[admin, JSON_TYPE],
        "{}".into(),
    )
    .await;
    assert_eq!(reconcile.status, 200, "{}", reconcile.text());
    assert_eq!(reconcile.json()["failed"], 0, "{}", reconcile.text());

    let deleted = call(
        "DELETE",
        "/api/admin/products/tea",
        &[admin],
        ignored.clone(),
    )
    .await;
    assert_eq!(deleted.status, 204, "{}", deleted.text());
    let wrong = call("DELETE", "/api/login", &[JSON_TYPE], ignored.clone()).await;
    assert_eq!(wrong.json()["error"]["code"], "method_not_allowed");
    // The simulator's routes do not exist in live mode.
    let sim = call("POST", "/_sim/pay", &[JSON_TYPE], "{}".into()).await;
    assert_eq!(sim.status, 404);

    wechat.assert_all_requests_verified();
    assert_eq!(wechat.requests_to("/pay/unifiedorder").len(), 1);
    assert!(!up.output().contains(API_KEY) && !up.output().contains(APP_SECRET));
    assert_clean_output(&up);
}

// ---- The mini-program example ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn miniprogram_example_sequence() {
    let Some(spin) = spin_or_skip("miniprogram_example_sequence") else {
        return;
    };
    let pay_js =
        std::fs::read_to_string(workspace_root().join("examples/miniprogram/pages/pay/pay.js"))
            .unwrap();
    // The requests below are the ones pay.js makes; fail if it changes.
    for call in [
        "request('POST', '/api/login', { code })",
        "request('POST', '/api/orders', { sku: 'demo', quantity: 1 }, token)",
        "request('POST', '/_sim/pay', { package: payParams.package, result: 'SUCCESS' })",
        "request('GET', '/api/orders/' + orderNo, undefined, token)",
        "{ 'content-type': 'application/json' }",
    ] {
        assert!(pay_js.contains(call), "pay.js no longer makes {call}");
    }
    let up = up(&spin, &[]).await;
    // wx.request sends the JSON content type on every request, GET included (without a body).
    let login = up
        .request(
            "POST",
            "/api/login",
            &[JSON_TYPE],
            json!({"code": "0a3Xyz-miniprogram"}).to_string(),
        )
        .await
        .unwrap();
    assert_eq!(login.status, 200, "{}", login.text());
    let token = format!("Bearer {}", login.json()["token"].as_str().unwrap());
    let created = up
        .request(
            "POST",
            "/api/orders",
            &[JSON_TYPE, ("authorization", &token)],
            json!({"sku": "demo", "quantity": 1}).to_string(),
        )
        .await
        .unwrap();
    assert_eq!(created.status, 201, "{}", created.text());
    // Simulator answers say so, and so does the order.
    assert_eq!(created.header("x-wxpay-mode"), Some("simulator"));
    let created = created.json();
    assert_eq!(created["order"]["mode"], "simulator");
    for field in ["timeStamp", "nonceStr", "package", "signType", "paySign"] {
        assert!(created["pay_params"][field].is_string(), "{field}");
    }
    let paid = up
        .request(
            "POST",
            "/_sim/pay",
            &[JSON_TYPE],
            json!({"package": created["pay_params"]["package"], "result": "SUCCESS"}).to_string(),
        )
        .await
        .unwrap();
    assert_eq!(paid.status, 200, "{}", paid.text());
    let order_no = created["order"]["order_no"].as_str().unwrap();
    let order = up
        .request(
            "GET",
            &format!("/api/orders/{order_no}"),
            &[JSON_TYPE, ("authorization", &token)],
            "",
        )
        .await
        .unwrap();
    assert_eq!(order.status, 200, "{}", order.text());
    assert_eq!(order.json()["status"], "PAID");
    assert_clean_output(&up);
}

// ---- The test host's `spin-*` headers against Spin's ----------------------------------------------

/// The `spin-*` lines of the fixture's header echo, with the client's port (which differs per
/// connection) masked.
fn spin_headers(echo: &str) -> Vec<String> {
    echo.lines()
        .filter(|l| l.starts_with("spin-"))
        .map(|l| match l.strip_prefix("spin-client-addr: ") {
            Some(addr) => format!(
                "spin-client-addr: {}:<port>",
                addr.rsplit_once(':').map_or(addr, |(ip, _)| ip)
            ),
            None => l.to_owned(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_host_sends_the_spin_headers_spin_sends() {
    let Some(spin) = spin_or_skip("test_host_sends_the_spin_headers_spin_sends") else {
        return;
    };
    let manifest = workspace_root().join("tests/fixture/spin.toml");
    spin_build(&spin, &manifest).expect("spin build of the fixture");
    let real = SpinUp::start(&spin, &manifest, &[]).await.expect("spin up");
    let host = TestApp::builder("tests/fixture/spin.toml")
        .listen_addr(real.addr())
        .start()
        .await
        .expect("test host");
    let paths = [
        "/exact",
        "/headers/",
        "/headers",
        "/headers/a/b?x=1&y=%2F",
        "/users/bob",
        "/users/bob_smith?q",
        "/files/pdf/a/b/c.pdf",
        "/files/pdf",
        "/params/ORD_123/v-1/rest/of/it?z=1",
        "/params/o/v",
        "/b/headers/x",
        "/b/users/x",
    ];
    for path in paths {
        let from_spin = real.request("GET", path, &[], "").await.unwrap();
        let from_host = host.get(path).await.unwrap();
        assert_eq!(from_spin.status, 200, "{path}: {}", from_spin.text());
        assert_eq!(from_host.status, 200, "{path}: {}", from_host.text());
        let spin_lines = spin_headers(&from_spin.text());
        assert!(!spin_lines.is_empty(), "{path}: {}", from_spin.text());
        assert_eq!(spin_headers(&from_host.text()), spin_lines, "{path}");
    }
    // The parameter names as Spin spells them.
    let echo = real
        .request("GET", "/params/ORD_123/v-1/rest", &[], "")
        .await
        .unwrap()
        .text();
    assert!(echo.contains("spin-path-match-order-no: ORD_123"), "{echo}");
    assert!(echo.contains("spin-path-match-mixed-case: v-1"), "{echo}");
}

// ---- Client certificates from the runtime config (`[[client_tls]]`) ------------------------------

/// The live app with WeChat Pay (`wxpay_mch_api`) at `front` and `spin up` `args`.
async fn up_behind_mtls(
    spin: &std::path::Path,
    wechat: &FakeWechat,
    front: &MtlsFake,
    args: &[&str],
) -> anyhow::Result<SpinUp> {
    let mut variables = live_variables(wechat, SignType::Md5);
    for (name, value) in &mut variables {
        if *name == "wxpay_mch_api" {
            *value = front.origin();
        }
    }
    let variables: Vec<(&str, &str)> = variables.iter().map(|(k, v)| (*k, v.as_str())).collect();
    spin_build(spin, &app_manifest()).expect("spin build");
    SpinUp::start_with(spin, &app_manifest(), &variables, args).await
}

/// Puts `tea`, logs a user in (plain http), asks for an order; the answer.
async fn order_tea(up: &SpinUp) -> WireResponse {
    let admin = format!("Bearer {ADMIN_TOKEN}");
    let tea = json!({"name": "Oolong", "price": 199}).to_string();
    let put = checked_request(
        up,
        "PUT",
        "/api/admin/products/tea",
        &[("authorization", &admin), JSON_TYPE],
        tea,
    )
    .await;
    assert_eq!(put.status, 200, "{}", put.text());
    let login = checked_request(
        up,
        "POST",
        "/api/login",
        &[JSON_TYPE],
        json!({"code": "u-alice-1"}).to_string(),
    )
    .await;
    assert_eq!(login.status, 200, "{}", login.text());
    let token = format!("Bearer {}", login.json()["token"].as_str().unwrap());
    checked_request(
        up,
        "POST",
        "/api/orders",
        &[("authorization", &token), JSON_TYPE],
        json!({"sku": "tea", "quantity": 1}).to_string(),
    )
    .await
}

/// Spin presents the runtime config's client certificate for the component and host it names
/// (paths relative to the file's directory, `ca_roots_file` as the only roots); without an
/// entry, or without a certificate, the call fails and nothing reaches WeChat; a port in
/// `hosts` stops `spin up`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tls_from_the_runtime_config() {
    let Some(spin) = spin_or_skip("client_tls_from_the_runtime_config") else {
        return;
    };
    let wechat = FakeWechat::start().await;
    let front = MtlsFake::proxy(&wechat.origin()).await.unwrap();

    // (a) The right certificate for the order component: the order is made.
    let config = front
        .write_runtime_config(&["order"], ClientCert::Right)
        .unwrap();
    let config = config.to_str().unwrap();
    let up = up_behind_mtls(&spin, &wechat, &front, &["--runtime-config-file", config])
        .await
        .expect("spin up");
    let created = order_tea(&up).await;
    assert_eq!(created.status, 201, "{}\n{}", created.text(), up.output());
    let order_no = created.json()["order"]["order_no"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(wechat.trade(&order_no).is_some());
    let served = front.requests();
    assert_eq!(served.len(), 1, "{served:?}");
    assert_eq!(served[0].path_and_query, "/pay/unifiedorder");
    assert!(front.is_right_client_cert(&served[0].client_cert));
    assert!(
        front.tls_failures().is_empty(),
        "{:?}",
        front.tls_failures()
    );
    assert_clean_output(&up);
    drop(up);

    // (b) No runtime config: Spin's default roots do not trust the fake's CA, so Spin ends the
    // handshake before any certificate is asked for (it closes the connection without an
    // alert the server reads: "tls handshake eof"; the test host's client sends UnknownCA).
    let up = up_behind_mtls(&spin, &wechat, &front, &[])
        .await
        .expect("spin up");
    let refused = order_tea(&up).await;
    assert_eq!(refused.status, 504, "{}", refused.text());
    assert_eq!(refused.json()["error"]["code"], "wechat_unreachable");
    assert_eq!(front.requests().len(), 1, "nothing more was served");
    assert_eq!(wechat.requests_to("/pay/unifiedorder").len(), 1);
    let failures = front.tls_failures();
    assert!(
        !failures.is_empty()
            && failures
                .iter()
                .all(|f| f.contains("tls handshake eof") || f.contains("UnknownCA")),
        "{failures:?}"
    );
    assert_clean_output(&up);
    drop(up);

    // An entry that trusts the server but presents no certificate: refused by the server.
    let config = front
        .write_runtime_config(&["order"], ClientCert::None)
        .unwrap();
    let config = config.to_str().unwrap();
    let before = front.tls_failures().len();
    let up = up_behind_mtls(&spin, &wechat, &front, &["--runtime-config-file", config])
        .await
        .expect("spin up");
    let refused = order_tea(&up).await;
    assert_eq!(refused.status, 504, "{}", refused.text());
    assert_eq!(front.requests().len(), 1, "nothing more was served");
    let failures = front.tls_failures();
    assert!(
        failures.len() > before
            && failures[before..]
                .iter()
                .all(|f| f.contains("peer sent no certificates")),
        "{failures:?}"
    );
    drop(up);

    // `hosts` with a port: Spin 4.0.2 does not start.
    let entry = front
        .client_tls_entry(&["order"], ClientCert::Right)
        .replace("hosts = [\"localhost\"]", "hosts = [\"localhost:443\"]");
    let config = front.write_file(&entry).unwrap();
    let config = config.to_str().unwrap();
    let err = match up_behind_mtls(&spin, &wechat, &front, &["--runtime-config-file", config]).await
    {
        Ok(up) => panic!("spin up started:\n{}", up.output()),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("ports not currently supported"), "{err}");
}

/// An APIv2 refund under Spin with the README's runtime config: both components that call
/// WeChat Pay in the `[[client_tls]]` entry, so the refund goes out with the merchant's
/// certificate whichever pooled connection carries it; the refund notification settles it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apiv2_refund_through_spins_client_tls() {
    let Some(spin) = spin_or_skip("an_apiv2_refund_through_spins_client_tls") else {
        return;
    };
    let wechat = FakeWechat::start().await;
    let front = MtlsFake::proxy(&wechat.origin()).await.unwrap();
    let config = front
        .write_runtime_config(&["order", "admin"], ClientCert::Right)
        .unwrap();
    let config = config.to_str().unwrap();
    let up = up_behind_mtls(&spin, &wechat, &front, &["--runtime-config-file", config])
        .await
        .expect("spin up");
    let created = order_tea(&up).await;
    assert_eq!(created.status, 201, "{}\n{}", created.text(), up.output());
    let order_no = created.json()["order"]["order_no"]
        .as_str()
        .unwrap()
        .to_owned();
    let notification = wechat.pay(&order_no, SignType::Md5);
    let paid = checked_request(&up, "POST", "/api/wxpay/notify", &[], notification).await;
    assert!(paid.text().contains("SUCCESS"), "{}", paid.text());
    let admin = format!("Bearer {ADMIN_TOKEN}");
    let refunded = checked_request(
        &up,
        "POST",
        &format!("/api/admin/orders/{order_no}/refunds"),
        &[("authorization", &admin), JSON_TYPE],
        json!({"amount": 199, "refund_no": "RS2", "reason": "sold out"}).to_string(),
    )
    .await;
    assert_eq!(refunded.status, 201, "{}\n{}", refunded.text(), up.output());
    let served = front.requests();
    let refund = served
        .iter()
        .find(|r| r.path_and_query == wxpay::v2::refund::REFUND_PATH)
        .unwrap_or_else(|| panic!("no refund through the front: {served:?}"));
    assert!(front.is_right_client_cert(&refund.client_cert));
    assert!(
        served
            .iter()
            .all(|r| front.is_right_client_cert(&r.client_cert))
    );
    let notified = checked_request(
        &up,
        "POST",
        "/api/wxpay/refund-notify",
        &[],
        support::refund_notification(&order_no, "RS2", 199, 199, MCH_ID, API_KEY),
    )
    .await;
    assert!(notified.text().contains("SUCCESS"), "{}", notified.text());
    let order = checked_request(
        &up,
        "GET",
        &format!("/api/admin/orders/{order_no}"),
        &[("authorization", &admin)],
        String::new(),
    )
    .await;
    assert_eq!(order.json()["status"], "REFUNDED", "{}", order.text());
    wechat.assert_all_requests_verified();
    assert_clean_output(&up);
}

/// Spin 4.0.2 pools outbound connections per app by scheme and host, not per component: a
/// connection the order component opened without a certificate carries the admin component's
/// next request to the same host, so the admin's `[[client_tls]]` certificate is not presented
/// (README: list every component that calls WeChat Pay, or turn pooling off). With
/// `[outbound_http] connection_pooling = false` it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_connections_are_pooled_across_components() {
    let Some(spin) = spin_or_skip("outbound_connections_are_pooled_across_components") else {
        return;
    };
    for (pooling, admin_presents_cert) in [
        ("", false),
        ("[outbound_http]\nconnection_pooling = false\n", true),
    ] {
        let wechat = FakeWechat::start().await;
        let front = MtlsFake::proxy_optional(&wechat.origin()).await.unwrap();
        let text = format!(
            "{pooling}{}{}",
            front.client_tls_entry(&["order"], ClientCert::None),
            front.client_tls_entry(&["admin"], ClientCert::Right)
        );
        let config = front.write_file(&text).unwrap();
        let config = config.to_str().unwrap();
        let up = up_behind_mtls(&spin, &wechat, &front, &["--runtime-config-file", config])
            .await
            .expect("spin up");
        let created = order_tea(&up).await;
        assert_eq!(created.status, 201, "{}\n{}", created.text(), up.output());
        // Reconcile: the admin component asks WeChat about the open order.
        let admin = format!("Bearer {ADMIN_TOKEN}");
        let reconciled = checked_request(
            &up,
            "POST",
            "/api/admin/reconcile",
            &[("authorization", &admin)],
            String::new(),
        )
        .await;
        assert_eq!(reconciled.status, 200, "{}", reconciled.text());
        assert_eq!(reconciled.json()["checked"], 1, "{}", reconciled.text());
        let served = front.requests();
        let paths: Vec<&str> = served.iter().map(|r| r.path_and_query.as_str()).collect();
        assert_eq!(paths, ["/pay/unifiedorder", "/pay/orderquery"]);
        assert_eq!(
            served[0].client_cert, None,
            "the order component has no certificate"
        );
        assert_eq!(
            front.is_right_client_cert(&served[1].client_cert),
            admin_presents_cert,
            "pooling {pooling:?}: the admin's orderquery came with {:?}",
            served[1].client_cert.as_ref().map(|c| c.len())
        );
        assert_clean_output(&up);
    }
}
