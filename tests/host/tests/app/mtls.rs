//! Mutual TLS through the runtime config's `[[client_tls]]` (the client certificate WeChat Pay
//! APIv2 requires for refunds): the live app's order component calls `/pay/unifiedorder` at
//! `wxpay_mch_api` = an HTTPS front that requires a client certificate from its CA
//! (`spin_test_host::tls::MtlsFake`) before the fake WeChat. The components never see the
//! certificate: only the runtime config names it, per component and host.

use std::path::Path;

use serde_json::json;
use spin_test_host::TestApp;
use spin_test_host::tls::{ClientCert, MtlsFake};
use wxpay::v2::sign::SignType;

use crate::support::{
    ADMIN_TOKEN, API_KEY, APP_SECRET, APPID, FakeWechat, MCH_ID, SESSION_SECRET, assert_error,
    assert_logs_are_json, assert_no_secrets_logged, req,
};

/// The fake WeChat (plain http, also login) and the mTLS front before it.
async fn wechat_behind_mtls() -> (std::sync::Arc<FakeWechat>, MtlsFake) {
    let wechat = FakeWechat::start().await;
    let front = MtlsFake::proxy(&wechat.origin())
        .await
        .expect("mTLS front starts");
    (wechat, front)
}

/// The live app with WeChat Pay at the mTLS front and, if given, the runtime config file.
async fn start_app(
    wechat: &FakeWechat,
    front: &MtlsFake,
    runtime_config: Option<&Path>,
) -> anyhow::Result<TestApp> {
    let mut builder = TestApp::builder(crate::support::MANIFEST)
        .variable("wxpay_mode", "live")
        .variable("wx_appid", APPID)
        .variable("wx_app_secret", APP_SECRET)
        .variable("wxpay_mch_id", MCH_ID)
        .variable("wxpay_api_key", API_KEY)
        .variable("wxpay_sign_type", SignType::Md5.as_str())
        .variable(
            "wxpay_notify_url",
            "https://shop.example.com/api/wxpay/notify",
        )
        .variable("wxpay_mch_api", front.origin())
        .variable("wx_api", wechat.origin())
        .variable("session_secret", SESSION_SECRET)
        .variable("admin_token", ADMIN_TOKEN);
    if let Some(path) = runtime_config {
        builder = builder.runtime_config_file(path);
    }
    builder.start().await
}

/// Logs a user in (over plain http) and asks for an order of `tea`; the token and the answer.
async fn order_tea(app: &TestApp) -> (String, spin_test_host::TestResponse) {
    let res = app
        .request(req(
            "PUT",
            "/api/admin/products/tea",
            Some(ADMIN_TOKEN),
            json!({"name": "Oolong", "price": 199}).to_string(),
        ))
        .await
        .unwrap();
    assert_eq!(res.status, 200, "{}", res.text());
    let res = app
        .request(req(
            "POST",
            "/api/login",
            None,
            json!({"code": "u-alice-1"}).to_string(),
        ))
        .await
        .unwrap();
    assert_eq!(res.status, 200, "{}", res.text());
    let token = res.json::<serde_json::Value>().unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = app
        .request(req(
            "POST",
            "/api/orders",
            Some(&token),
            json!({"sku": "tea", "quantity": 1}).to_string(),
        ))
        .await
        .unwrap();
    (token, res)
}

fn assert_clean(app: &TestApp, token: &str) {
    assert_no_secrets_logged(app, &[token.to_owned()]);
    assert_logs_are_json(app);
    let host_errors = app.host_errors();
    assert!(host_errors.is_empty(), "the host reported: {host_errors:?}");
}

/// The order failed at the TLS layer: 504, nothing reached WeChat, and the front refused every
/// handshake for a reason containing `why`.
fn assert_refused(
    wechat: &FakeWechat,
    front: &MtlsFake,
    res: &spin_test_host::TestResponse,
    why: &str,
) {
    assert_error(res, 504, "wechat_unreachable", "");
    assert!(wechat.requests_to("/pay/unifiedorder").is_empty());
    assert!(front.requests().is_empty(), "{:?}", front.requests());
    let failures = front.tls_failures();
    assert!(!failures.is_empty(), "the front saw no handshake");
    assert!(
        failures.iter().all(|f| f.contains(why)),
        "expected every handshake to fail with {why:?}: {failures:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_reaches_wechat_with_the_client_certificate() {
    let (wechat, front) = wechat_behind_mtls().await;
    let config = front
        .write_runtime_config(&["order"], ClientCert::Right)
        .unwrap();
    let app = start_app(&wechat, &front, Some(&config)).await.unwrap();
    let (token, res) = order_tea(&app).await;
    assert_eq!(res.status, 201, "{}", res.text());
    let order_no = res.json::<serde_json::Value>().unwrap()["order"]["order_no"]
        .as_str()
        .unwrap()
        .to_owned();
    // WeChat created the trade, and every request came through the front with the merchant's
    // certificate.
    assert_eq!(wechat.trade(&order_no).unwrap().total_fee, 199);
    let served = front.requests();
    assert_eq!(served.len(), 1, "{served:?}");
    assert_eq!(served[0].path_and_query, "/pay/unifiedorder");
    assert!(front.is_right_client_cert(&served[0].client_cert));
    assert!(
        front.tls_failures().is_empty(),
        "{:?}",
        front.tls_failures()
    );
    wechat.assert_all_requests_verified();
    assert_clean(&app, &token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_client_tls_entry_the_call_fails() {
    let (wechat, front) = wechat_behind_mtls().await;
    // No runtime config at all: Spin's defaults (the system's roots) do not trust the fake's
    // CA, so the component refuses the server before any certificate is asked for.
    let app = start_app(&wechat, &front, None).await.unwrap();
    let (token, res) = order_tea(&app).await;
    assert_refused(&wechat, &front, &res, "UnknownCA");
    assert_clean(&app, &token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_without_a_client_certificate_fails() {
    let (wechat, front) = wechat_behind_mtls().await;
    // The server is trusted, but no certificate is presented: the front refuses.
    let config = front
        .write_runtime_config(&["order"], ClientCert::None)
        .unwrap();
    let app = start_app(&wechat, &front, Some(&config)).await.unwrap();
    let (token, res) = order_tea(&app).await;
    assert_refused(&wechat, &front, &res, "peer sent no certificates");
    assert_clean(&app, &token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_from_another_ca_fails() {
    let (wechat, front) = wechat_behind_mtls().await;
    let config = front
        .write_runtime_config(&["order"], ClientCert::WrongCa)
        .unwrap();
    let app = start_app(&wechat, &front, Some(&config)).await.unwrap();
    let (token, res) = order_tea(&app).await;
    assert_refused(&wechat, &front, &res, "UnknownIssuer");
    assert_clean(&app, &token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_entry_applies_to_the_components_it_names_only() {
    let (wechat, front) = wechat_behind_mtls().await;
    // The certificate is the admin component's (the refund route's): the order component's
    // call gets Spin's defaults.
    let config = front
        .write_runtime_config(&["admin"], ClientCert::Right)
        .unwrap();
    let app = start_app(&wechat, &front, Some(&config)).await.unwrap();
    let (token, res) = order_tea(&app).await;
    assert_refused(&wechat, &front, &res, "UnknownCA");
    assert_clean(&app, &token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_config_host_with_a_port_is_refused_at_start() {
    let (wechat, front) = wechat_behind_mtls().await;
    let entry = front
        .client_tls_entry(&["order"], ClientCert::Right)
        .replace("hosts = [\"localhost\"]", "hosts = [\"localhost:443\"]");
    let config = front.write_file(&entry).unwrap();
    let err = match start_app(&wechat, &front, Some(&config)).await {
        Ok(_) => panic!("started with a port in [[client_tls]] hosts"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("ports not currently supported"), "{err}");
}

// ---- APIv2 refunds over the client certificate -----------------------------------------------------

/// The order of `order_tea`, paid: WeChat's notification acknowledged.
async fn paid_tea(app: &TestApp, wechat: &FakeWechat) -> (String, String) {
    let (token, res) = order_tea(app).await;
    assert_eq!(res.status, 201, "{}", res.text());
    let order_no = res.json::<serde_json::Value>().unwrap()["order"]["order_no"]
        .as_str()
        .unwrap()
        .to_owned();
    let notification = wechat.pay(&order_no, SignType::Md5);
    let res = app
        .request(
            http::Request::post(crate::support::NOTIFY_PATH)
                .body(notification)
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(crate::support::is_success(&res), "{}", res.text());
    (token, order_no)
}

fn refund_request(order_no: &str, body: serde_json::Value) -> http::Request<String> {
    req(
        "POST",
        &format!("/api/admin/orders/{order_no}/refunds"),
        Some(ADMIN_TOKEN),
        body.to_string(),
    )
}

fn refund_notify_request(body: String) -> http::Request<String> {
    http::Request::post("/api/wxpay/refund-notify")
        .header("content-type", "text/xml")
        .body(body)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apiv2_refund_goes_out_with_the_client_certificate_and_settles_once() {
    use crate::support::{is_success, refund_notification};
    let (wechat, front) = wechat_behind_mtls().await;
    // Both components that call WeChat Pay, as the README advises (Spin pools connections per
    // host, not per component).
    let config = front
        .write_runtime_config(&["order", "admin"], ClientCert::Right)
        .unwrap();
    let app = start_app(&wechat, &front, Some(&config)).await.unwrap();
    let (token, order_no) = paid_tea(&app, &wechat).await;

    let res = app
        .request(refund_request(
            &order_no,
            json!({"amount": 50, "refund_no": "RV2-1", "reason": "partial"}),
        ))
        .await
        .unwrap();
    assert_eq!(res.status, 201, "{}", res.text());
    assert_eq!(
        res.json::<serde_json::Value>().unwrap()["refund_id"],
        "5000RV2-1"
    );
    let refund = front
        .requests()
        .into_iter()
        .find(|r| r.path_and_query == wxpay::v2::refund::REFUND_PATH)
        .expect("the refund went through the mTLS front");
    assert!(front.is_right_client_cert(&refund.client_cert));
    assert_eq!(
        wechat.refunds(),
        [("RV2-1".to_owned(), (order_no.clone(), 50))].into()
    );

    // Refund notifications that do not decrypt with our key, or are another merchant's: FAIL,
    // nothing written.
    let kv = app.kv("default");
    let before = kv.snapshot();
    let good = refund_notification(&order_no, "RV2-1", 50, 199, MCH_ID, API_KEY);
    let other_key = refund_notification(&order_no, "RV2-1", 50, 199, MCH_ID, &"0".repeat(32));
    let foreign = refund_notification(&order_no, "RV2-1", 50, 199, "1999999999", API_KEY);
    let tampered = good.replacen("<req_info><![CDATA[", "<req_info><![CDATA[AAAA", 1);
    for (name, body) in [
        ("another key", other_key),
        ("another merchant", foreign),
        ("tampered", tampered),
    ] {
        let res = app.request(refund_notify_request(body)).await.unwrap();
        assert!(!is_success(&res), "{name}: {}", res.text());
    }
    assert_eq!(
        kv.snapshot(),
        before,
        "a refused notification writes nothing"
    );

    // WeChat's notification 20 times at once: every copy SUCCESS, one SUCCESS event.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let app = app.clone();
        let request = refund_notify_request(good.clone());
        tasks.spawn(async move { app.request(request).await.unwrap() });
    }
    while let Some(res) = tasks.join_next().await {
        let res = res.unwrap();
        assert!(is_success(&res), "{}", res.text());
    }
    let res = app
        .request(req(
            "GET",
            &format!("/api/admin/orders/{order_no}"),
            Some(ADMIN_TOKEN),
            String::new(),
        ))
        .await
        .unwrap();
    let order: serde_json::Value = res.json().unwrap();
    assert_eq!(order["status"], "PAID", "a partial refund: {order}");
    assert_eq!(order["refunded_total"], 50);
    let events = order["refunds"][0]["events"].as_array().unwrap();
    let successes = events.iter().filter(|e| e["status"] == "SUCCESS").count();
    assert_eq!(successes, 1, "{order}");
    assert_eq!(order["refunds"][0]["settled_at"], "2026-11-27T07:10:00Z");
    wechat.assert_all_requests_verified();
    assert_clean(&app, &token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apiv2_refund_without_the_client_certificate_never_reaches_wechat() {
    let (wechat, front) = wechat_behind_mtls().await;
    // The certificate is the order component's only: the admin component's refund call is
    // refused at the TLS layer.
    let config = front
        .write_runtime_config(&["order"], ClientCert::Right)
        .unwrap();
    let app = start_app(&wechat, &front, Some(&config)).await.unwrap();
    let (token, order_no) = paid_tea(&app, &wechat).await;
    let res = app
        .request(refund_request(
            &order_no,
            json!({"amount": 199, "refund_no": "RV2-2"}),
        ))
        .await
        .unwrap();
    assert_error(&res, 504, "wechat_unreachable", "");
    assert!(wechat.refunds().is_empty());
    assert!(
        wechat
            .requests_to(wxpay::v2::refund::REFUND_PATH)
            .is_empty()
    );
    // Recorded and holding its money until it is sent again or settled: never a second number.
    let res = app
        .request(refund_request(&order_no, json!({"amount": 1})))
        .await
        .unwrap();
    assert!(res.status == 409 || res.status == 429, "{}", res.text());
    assert_clean(&app, &token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_config_file_takes_store_labels_and_refuses_what_the_host_lacks() {
    let (wechat, front) = wechat_behind_mtls().await;
    // `[key_value_store.<label>]` beside `[[client_tls]]`: the app starts and orders.
    let text = format!(
        "[key_value_store.default]\ntype = \"spin\"\n\n{}",
        front.client_tls_entry(&["order"], ClientCert::Right)
    );
    let config = front.write_file(&text).unwrap();
    let app = start_app(&wechat, &front, Some(&config)).await.unwrap();
    let (token, res) = order_tea(&app).await;
    assert_eq!(res.status, 201, "{}", res.text());
    assert_clean(&app, &token);
    // A table this host does not implement is named, not ignored.
    let config = front
        .write_file("[outbound_http]\nconnection_pooling = false\n")
        .unwrap();
    let err = match start_app(&wechat, &front, Some(&config)).await {
        Ok(_) => panic!("started with an unsupported runtime config table"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("\"outbound_http\" is not supported"), "{err}");
}
