//! The embedded WeChat Pay simulator end to end: the default `spin.toml` with no overrides runs
//! the README's quickstart exactly; the simulator's fault injection exercises the app's retry
//! and refusal paths; in live mode every `/_sim` route answers 404.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use spin_test_host::{TestApp, TestResponse};
use wxpay::config::SIM_ADMIN_TOKEN;

const MANIFEST: &str = "spin.toml";

async fn simulator_app() -> TestApp {
    // No overrides: `spin up --build` as the README says.
    TestApp::builder(MANIFEST)
        .start()
        .await
        .expect("app starts")
}

fn post_json(path: &str, bearer: Option<&str>, body: Value) -> http::Request<String> {
    let mut req = http::Request::post(path).header("content-type", "application/json");
    if let Some(token) = bearer {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    req.body(body.to_string()).unwrap()
}

fn get_with(path: &str, bearer: &str) -> http::Request<()> {
    http::Request::get(path)
        .header("authorization", format!("Bearer {bearer}"))
        .body(())
        .unwrap()
}

fn json_of(res: &TestResponse) -> Value {
    res.json().unwrap()
}

async fn login(app: &TestApp, code: &str) -> String {
    let res = app
        .request(post_json("/api/login", None, json!({"code": code})))
        .await
        .unwrap();
    assert_eq!(res.status, 200, "{}", res.text());
    json_of(&res)["token"].as_str().unwrap().to_owned()
}

async fn create_order(app: &TestApp, token: &str) -> TestResponse {
    app.request(post_json(
        "/api/orders",
        Some(token),
        json!({"sku": "demo", "quantity": 1}),
    ))
    .await
    .unwrap()
}

/// The prepay id inside the pay params' `package` (`prepay_id=wx…`).
fn prepay_id(created: &Value) -> String {
    created["pay_params"]["package"]
        .as_str()
        .unwrap()
        .strip_prefix("prepay_id=")
        .unwrap()
        .to_owned()
}

async fn set_faults(app: &TestApp, faults: Value) {
    let res = app
        .request(post_json("/_sim/faults", None, faults))
        .await
        .unwrap();
    assert_eq!(res.status, 200, "{}", res.text());
}

/// README "Quickstart", request for request.
#[tokio::test]
async fn readme_quickstart_runs_with_the_default_manifest() {
    let app = simulator_app().await;

    // 1. Log in with any code.
    let res = app
        .request(post_json("/api/login", None, json!({"code": "any-code"})))
        .await
        .unwrap();
    assert_eq!(res.status, 200, "{}", res.text());
    let token = json_of(&res)["token"].as_str().unwrap().to_owned();

    // 2. Create an order for the demo sku (the demo catalog is seeded on first use).
    let res = app
        .request(post_json(
            "/api/orders",
            Some(&token),
            json!({"sku": "demo", "quantity": 1}),
        ))
        .await
        .unwrap();
    assert_eq!(res.status, 201, "{}", res.text());
    let created = json_of(&res);
    assert_eq!(created["order"]["status"], "AWAITING_PAYMENT");
    assert_eq!(created["order"]["total_fee"], 1);
    let order_no = created["order"]["order_no"].as_str().unwrap().to_owned();
    let prepay = prepay_id(&created);

    // 3. The user pays: the simulator delivers the notification to our notify route.
    let res = app
        .request(post_json(
            "/_sim/pay",
            None,
            json!({"prepay_id": prepay, "result": "SUCCESS"}),
        ))
        .await
        .unwrap();
    assert_eq!(res.status, 200, "{}", res.text());
    let paid = json_of(&res);
    assert_eq!(paid["notified"], true, "{paid}");
    assert_eq!(paid["deliveries"].as_array().unwrap().len(), 1, "{paid}");
    assert!(
        paid["deliveries"][0]["body"]
            .as_str()
            .unwrap()
            .contains("SUCCESS")
    );

    // 4. The order is PAID.
    let res = app
        .request(get_with(&format!("/api/orders/{order_no}"), &token))
        .await
        .unwrap();
    assert_eq!(res.status, 200, "{}", res.text());
    let order = json_of(&res);
    assert_eq!(order["status"], "PAID", "{order}");
    assert_eq!(order["transaction_id"], paid["transaction_id"]);

    // Simulator mode: the record says so, the admin token has its documented default, and the
    // catalog holds the demo products.
    let res = app
        .request(get_with(
            &format!("/api/admin/orders/{order_no}"),
            SIM_ADMIN_TOKEN,
        ))
        .await
        .unwrap();
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(json_of(&res)["mode"], "simulator");
    let res = app
        .request(get_with("/api/admin/products", SIM_ADMIN_TOKEN))
        .await
        .unwrap();
    assert!(
        json_of(&res)["products"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["sku"] == "demo" && p["price"] == 1)
    );

    // The same code again: WeChat's "code been used".
    let res = app
        .request(post_json("/api/login", None, json!({"code": "any-code"})))
        .await
        .unwrap();
    assert_eq!(res.status, 401, "{}", res.text());

    // One clear warning that payments are simulated; no secret in the logs.
    let logs = app.logs();
    assert!(logs.contains("NO REAL PAYMENT"), "{logs}");
    assert!(!logs.contains(wxpay::config::SIM_API_KEY));
    assert!(!logs.contains(wxpay::config::SIM_APP_SECRET));
    assert!(app.host_errors().is_empty(), "{:?}", app.host_errors());
}

/// The same walk-through with `--variable wxpay_api_version=v3`: RSA pay params, and the
/// simulator's notification is APIv3's encrypted JSON, acknowledged with 204.
#[tokio::test]
async fn readme_quickstart_runs_on_apiv3() {
    let app = TestApp::builder(MANIFEST)
        .variable("wxpay_api_version", "v3")
        .start()
        .await
        .expect("app starts");
    let token = login(&app, "v3-code").await;
    let res = create_order(&app, &token).await;
    assert_eq!(res.status, 201, "{}", res.text());
    let created = json_of(&res);
    assert_eq!(created["pay_params"]["signType"], "RSA", "{created}");
    let order_no = created["order"]["order_no"].as_str().unwrap().to_owned();
    // Re-signing hands back the stored params.
    let res = app
        .request(post_json(
            &format!("/api/orders/{order_no}/pay-params"),
            Some(&token),
            json!({}),
        ))
        .await
        .unwrap();
    assert_eq!(json_of(&res), created["pay_params"]);
    set_faults(&app, json!({"duplicate_notifications": 3})).await;
    let res = app
        .request(post_json(
            "/_sim/pay",
            None,
            json!({"prepay_id": prepay_id(&created)}),
        ))
        .await
        .unwrap();
    let paid = json_of(&res);
    assert_eq!(paid["notified"], true, "{paid}");
    let deliveries = paid["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 3, "{paid}");
    assert!(deliveries.iter().all(|d| d["status"] == 204), "{paid}");
    let res = app
        .request(get_with(&format!("/api/orders/{order_no}"), &token))
        .await
        .unwrap();
    assert_eq!(json_of(&res)["status"], "PAID");
    let order = json_of(
        &app.request(get_with(
            &format!("/api/admin/orders/{order_no}"),
            SIM_ADMIN_TOKEN,
        ))
        .await
        .unwrap(),
    );
    let paid_events = order["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["to"] == "PAID")
        .count();
    assert_eq!(paid_events, 1, "{order}");
    assert!(!app.logs().contains(wxpay::config::SIM_APIV3_KEY));
    assert!(app.host_errors().is_empty(), "{:?}", app.host_errors());
}

#[tokio::test]
async fn systemerror_once_is_retried_and_the_order_is_created() {
    let app = simulator_app().await;
    let token = login(&app, "fault-systemerror").await;
    set_faults(&app, json!({"systemerror": 1})).await;
    let res = create_order(&app, &token).await;
    assert_eq!(res.status, 201, "{}", res.text());
    let res = app.get("/_sim/faults").await.unwrap();
    assert_eq!(json_of(&res)["systemerror"], 0);
}

#[tokio::test]
async fn a_badly_signed_reply_is_not_trusted() {
    let app = simulator_app().await;
    let token = login(&app, "fault-bad-signature").await;
    set_faults(&app, json!({"bad_signature": 1})).await;
    let res = create_order(&app, &token).await;
    assert_eq!(res.status, 502, "{}", res.text());
    assert_eq!(json_of(&res)["error"]["code"], "wechat_reply_untrusted");
}

#[tokio::test]
async fn a_late_reply_times_out_and_the_retry_gets_the_same_prepay() {
    let app = simulator_app().await;
    let token = login(&app, "fault-timeout").await;
    set_faults(&app, json!({"timeout": 1})).await;
    let started = Instant::now();
    let res = create_order(&app, &token).await;
    assert_eq!(res.status, 201, "{}", res.text());
    // The first attempt waited for the 4 s first-byte timeout.
    assert!(started.elapsed() >= Duration::from_secs(4));
    // Both attempts reached the simulator, which kept one trade (identical parameters).
    let trades = app
        .kv("default")
        .keys()
        .into_iter()
        .filter(|k| k.starts_with("sim:order:"))
        .count();
    assert_eq!(trades, 1);
}

#[tokio::test]
async fn a_burst_of_duplicate_notifications_pays_once() {
    let app = simulator_app().await;
    let token = login(&app, "fault-duplicates").await;
    let res = create_order(&app, &token).await;
    assert_eq!(res.status, 201, "{}", res.text());
    let created = json_of(&res);
    let order_no = created["order"]["order_no"].as_str().unwrap().to_owned();
    set_faults(&app, json!({"duplicate_notifications": 5})).await;
    let res = app
        .request(post_json(
            "/_sim/pay",
            None,
            json!({"prepay_id": prepay_id(&created), "result": "SUCCESS"}),
        ))
        .await
        .unwrap();
    assert_eq!(res.status, 200, "{}", res.text());
    let paid = json_of(&res);
    let deliveries = paid["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 5, "{paid}");
    assert!(
        deliveries.iter().all(|d| d["acknowledged"] == true),
        "{paid}"
    );
    let res = app
        .request(get_with(
            &format!("/api/admin/orders/{order_no}"),
            SIM_ADMIN_TOKEN,
        ))
        .await
        .unwrap();
    let order = json_of(&res);
    assert_eq!(order["status"], "PAID");
    let paid_events = order["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "status" && e["to"] == "PAID")
        .count();
    assert_eq!(paid_events, 1, "{order}");
}

#[tokio::test]
async fn live_mode_hides_every_simulator_route() {
    let app = TestApp::builder(MANIFEST)
        .variable("wxpay_mode", "live")
        .variable("wx_appid", "wx0123456789abcdef")
        .variable("wx_app_secret", "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5")
        .variable("wxpay_mch_id", "1900000109")
        .variable("wxpay_api_key", "Kq3Xv9Lm2Pz8Rt5Wn1Yb7Hc4Jd6Fg0Ae")
        .variable(
            "wxpay_notify_url",
            "https://shop.example.com/api/wxpay/notify",
        )
        .variable("session_secret", "test-session-secret-0123456789abcdef")
        .variable("admin_token", "test-admin-token-0123456789")
        .start()
        .await
        .expect("app starts");
    let health = app.get("/api/health").await.unwrap();
    assert_eq!(json_of(&health)["config_ok"], true, "{}", health.text());
    assert_eq!(
        health.header("x-wxpay-mode"),
        None,
        "live answers are not marked"
    );
    for (method, path) in [
        (
            "GET",
            "/_sim/sns/jscode2session?appid=x&secret=y&js_code=z&grant_type=authorization_code",
        ),
        ("POST", "/_sim/pay/unifiedorder"),
        ("POST", "/_sim/pay/orderquery"),
        ("POST", "/_sim/pay/closeorder"),
        ("POST", "/_sim/pay"),
        ("GET", "/_sim/faults"),
        ("POST", "/_sim/faults"),
        ("DELETE", "/_sim/faults"),
        ("GET", "/_sim/"),
    ] {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .body("<xml></xml>".to_owned())
            .unwrap();
        let res = app.request(req).await.unwrap();
        assert_eq!(res.status, 404, "{method} {path}: {}", res.text());
    }
    assert!(app.kv("default").get("sim:faults").is_none());
}

/// Simulator mode is marked on every answer and in the order itself, so a simulated payment is
/// never taken for a real one.
#[tokio::test]
async fn simulator_answers_say_so() {
    let app = simulator_app().await;
    let token = login(&app, "marked").await;
    let created = create_order(&app, &token).await;
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.header("x-wxpay-mode"), Some("simulator"));
    assert_eq!(json_of(&created)["order"]["mode"], "simulator");
    let health = app.get("/api/health").await.unwrap();
    assert_eq!(health.header("x-wxpay-mode"), Some("simulator"));
}

/// A deployment meant to be live that still says `simulator`: nothing is taken for WeChat.
#[tokio::test]
async fn simulator_mode_with_a_live_credential_refuses_to_serve() {
    let app = TestApp::builder(MANIFEST)
        .variable("wxpay_api_key", "Kq3Xv9Lm2Pz8Rt5Wn1Yb7Hc4Jd6Fg0Ae")
        .start()
        .await
        .expect("app starts");
    let health = json_of(&app.get("/api/health").await.unwrap());
    assert_eq!(health["config_ok"], false, "{health}");
    let problems = health["problems"].to_string();
    assert!(
        problems.contains("wxpay_mode") && problems.contains("wxpay_api_key"),
        "{problems}"
    );
    assert!(
        !problems.contains("Kq3Xv9Lm2Pz8Rt5Wn1Yb7Hc4Jd6Fg0Ae"),
        "{problems}"
    );
    let res = create_order(&app, "any-token").await;
    assert_eq!(res.status, 503, "{}", res.text());
    assert_eq!(json_of(&res)["error"]["code"], "config_error");
    let notify = app
        .request(
            http::Request::post("/api/wxpay/notify")
                .body("<xml><return_code>SUCCESS</return_code></xml>")
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(notify.text().contains("FAIL"), "{}", notify.text());
}

/// README "Quickstart" refund steps, request for request, on both versions: a paid order
/// refunded through the admin route, WeChat's refund notification delivered by `/_sim/refund`
/// as a burst of concurrent copies (the simulator's most, each acknowledged, one SUCCESS), and
/// the order REFUNDED.
#[tokio::test]
async fn readme_refund_walkthrough_runs_on_both_versions() {
    for (version, acknowledged) in [("v2", 200), ("v3", 204)] {
        let app = TestApp::builder(MANIFEST)
            .variable("wxpay_api_version", version)
            .start()
            .await
            .expect("app starts");
        let token = login(&app, &format!("refund-{version}")).await;
        let created = json_of(&create_order(&app, &token).await);
        let order_no = created["order"]["order_no"].as_str().unwrap().to_owned();
        let res = app
            .request(post_json(
                "/_sim/pay",
                None,
                json!({"prepay_id": prepay_id(&created), "result": "SUCCESS"}),
            ))
            .await
            .unwrap();
        assert_eq!(json_of(&res)["notified"], true, "{}", res.text());

        let refunds_path = format!("/api/admin/orders/{order_no}/refunds");
        let res = app
            .request(post_json(
                &refunds_path,
                Some(SIM_ADMIN_TOKEN),
                json!({"amount": 1, "reason": "demo refund"}),
            ))
            .await
            .unwrap();
        assert_eq!(res.status, 201, "{version}: {}", res.text());
        let refund = json_of(&res);
        assert_eq!(refund["status"], "PROCESSING", "{refund}");
        let refund_no = refund["refund_no"].as_str().unwrap().to_owned();
        // Over the paid total: refused before the simulator is asked.
        let res = app
            .request(post_json(
                &refunds_path,
                Some(SIM_ADMIN_TOKEN),
                json!({"amount": 1}),
            ))
            .await
            .unwrap();
        assert!(res.status == 409 || res.status == 429, "{}", res.text());

        let burst = wxpay::sim::user::MAX_BURST;
        set_faults(&app, json!({"duplicate_notifications": burst})).await;
        let res = app
            .request(post_json(
                "/_sim/refund",
                None,
                json!({"refund_no": refund_no, "result": "SUCCESS"}),
            ))
            .await
            .unwrap();
        let settled = json_of(&res);
        let deliveries = settled["deliveries"].as_array().unwrap();
        assert_eq!(deliveries.len(), burst, "{settled}");
        assert!(
            deliveries.iter().all(|d| d["status"] == acknowledged),
            "{version}: {settled}"
        );
        let user = json_of(
            &app.request(get_with(&format!("/api/orders/{order_no}"), &token))
                .await
                .unwrap(),
        );
        assert_eq!(user["status"], "REFUNDED", "{user}");
        assert_eq!(user["refunded_total"], 1);
        assert_eq!(user["refunds"][0]["status"], "SUCCESS");
        let order = json_of(
            &app.request(get_with(
                &format!("/api/admin/orders/{order_no}"),
                SIM_ADMIN_TOKEN,
            ))
            .await
            .unwrap(),
        );
        let successes = order["refunds"][0]["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["status"] == "SUCCESS")
            .count();
        assert_eq!(successes, 1, "{order}");
        // Settled: WeChat will not settle it again.
        let res = app
            .request(post_json(
                "/_sim/refund",
                None,
                json!({"refund_no": refund_no, "result": "SUCCESS"}),
            ))
            .await
            .unwrap();
        assert_eq!(res.status, 409, "{}", res.text());
        assert!(app.host_errors().is_empty(), "{:?}", app.host_errors());
    }
}
