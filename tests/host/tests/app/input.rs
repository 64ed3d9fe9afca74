//! Bad input on every route: the contract's status (docs/ARCHITECTURE.md §6) and a message naming the
//! problem.

use serde_json::{Value, json};
use spin_test_host::TestApp;
use wxpay::secret::Secret;

use crate::support::*;

const BIG: usize = 65 * 1024;

#[tokio::test]
async fn malformed_and_oversized_bodies_on_every_route() {
    let w = World::new().await;
    let token = w.login("alice").await;
    let order_no = w.create_order_no(&token, "tea", 1).await;
    let pay_path = format!("/api/orders/{order_no}/pay-params");
    let routes: [(&str, &str, Option<&str>); 4] = [
        ("POST", "/api/login", None),
        ("POST", "/api/orders", Some(&token)),
        ("PUT", "/api/admin/products/tea", Some(ADMIN_TOKEN)),
        ("POST", pay_path.as_str(), Some(&token)),
    ];
    for (method, path, bearer) in routes {
        let res = w.send(req(method, path, bearer, "x".repeat(BIG))).await;
        assert_error(&res, 413, "body_too_large", "limit");
        if path.ends_with("pay-params") {
            continue; // takes no body
        }
        for bad in ["{", "{\"sku\": }", "[1, 2]", "null", "\"text\""] {
            let res = w.send(req(method, path, bearer, bad.to_owned())).await;
            assert_error(&res, 400, "invalid_json", "JSON");
        }
    }
    // An oversized body whose Content-Length is not declared up front is cut off too.
    let big = http::Request::post("/api/login")
        .header("transfer-encoding", "chunked")
        .body("x".repeat(BIG))
        .unwrap();
    let res = w.send(big).await;
    assert_error(&res, 413, "body_too_large", "limit");
    w.assert_logs_clean();
}

/// Requests that carry no body by HTTP's rules (GET, `Content-Length: 0`) are answered without
/// reading one: an undeclared oversized body on a GET is ignored rather than refused.
#[tokio::test]
async fn bodies_of_get_and_zero_length_requests_are_not_read() {
    let w = World::new().await;
    let token = w.login("alice").await;
    let order_no = w.create_order_no(&token, "tea", 1).await;
    let get = http::Request::get(format!("/api/orders/{order_no}"))
        .header("authorization", format!("Bearer {token}"))
        .header("transfer-encoding", "chunked")
        .body("x".repeat(BIG))
        .unwrap();
    let res = w.send(get).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let pay = http::Request::post(format!("/api/orders/{order_no}/pay-params"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-length", "0")
        .body(String::new())
        .unwrap();
    let res = w.send(pay).await;
    assert_eq!(res.status, 200, "{}", res.text());
    w.assert_logs_clean();
}

#[tokio::test]
async fn quantity_sku_and_login_code_are_validated() {
    let w = World::new().await;
    let token = w.login("alice").await;
    for q in [
        json!(0),
        json!(-1),
        json!(1000),
        json!(1.5),
        json!("2"),
        json!(null),
        json!(true),
    ] {
        let res = w
            .try_create(&token, json!({"sku": "tea", "quantity": q}))
            .await;
        assert_error(&res, 400, "invalid_quantity", "quantity");
    }
    let res = w.try_create(&token, json!({"sku": "tea"})).await;
    assert_error(&res, 400, "invalid_quantity", "quantity");
    for q in [1, 999] {
        let res = w
            .try_create(&token, json!({"sku": "tea", "quantity": q}))
            .await;
        assert_eq!(res.status, 201, "quantity {q}: {}", res.text());
    }
    let res = w
        .try_create(&token, json!({"sku": "coffee", "quantity": 1}))
        .await;
    assert_error(&res, 404, "unknown_sku", "coffee");
    let res = w
        .try_create(&token, json!({"sku": "../product:tea", "quantity": 1}))
        .await;
    assert_eq!(res.status, 404, "{}", res.text());
    let res = w.try_create(&token, json!({"sku": 7, "quantity": 1})).await;
    assert_error(&res, 400, "invalid_sku", "sku");
    // Inactive products are not for sale.
    w.put_product(
        "cake",
        json!({"name": "Cake", "price": 2500, "active": false}),
    )
    .await;
    let res = w
        .try_create(&token, json!({"sku": "cake", "quantity": 1}))
        .await;
    assert_error(&res, 404, "unknown_sku", "cake");

    // Login codes.
    let login = |body: Value| req("POST", "/api/login", None, body.to_string());
    let res = w.send(login(json!({"code": "used"}))).await;
    assert_error(&res, 401, "invalid_code", "code");
    let res = w.send(login(json!({}))).await;
    assert_error(&res, 400, "invalid_code", "code");
    let res = w.send(login(json!({"code": "a&secret=x"}))).await;
    assert_error(&res, 400, "invalid_code", "code");
    let res = w.send(login(json!({"code": "busy"}))).await;
    assert_error(&res, 503, "wechat_busy", "busy");
    w.assert_logs_clean();
}

#[tokio::test]
async fn missing_tampered_and_expired_tokens_are_401() {
    let w = World::new().await;
    let token = w.login("alice").await;
    let order_no = w.create_order_no(&token, "tea", 1).await;
    let expired = wxpay::session::issue(
        &Secret::new(SESSION_SECRET),
        &openid("alice"),
        1_600_000_000,
        3600,
    )
    .unwrap();
    // Same openid, signed with another secret.
    let foreign = wxpay::session::issue(
        &Secret::new("another-session-secret-0123456789abcdef"),
        &openid("alice"),
        4_000_000_000,
        3600,
    )
    .unwrap();
    let mut tampered = token.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == '0' { '1' } else { '0' });

    let get = format!("/api/orders/{order_no}");
    let pay = format!("/api/orders/{order_no}/pay-params");
    let body = json!({"sku": "tea", "quantity": 1}).to_string();
    let routes = [
        ("POST", "/api/orders", body.clone()),
        ("GET", get.as_str(), String::new()),
        ("POST", pay.as_str(), String::new()),
    ];
    for (method, path, body) in routes {
        let res = w.send(req(method, path, None, body.clone())).await;
        assert_error(&res, 401, "missing_token", "Authorization");
        let res = w
            .send(req(method, path, Some(&tampered), body.clone()))
            .await;
        assert_error(&res, 401, "invalid_token", "token");
        let res = w
            .send(req(method, path, Some(&foreign), body.clone()))
            .await;
        assert_error(&res, 401, "invalid_token", "token");
        let res = w
            .send(req(method, path, Some(&expired), body.clone()))
            .await;
        assert_error(&res, 401, "token_expired", "expired");
        let basic = http::Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Basic {token}"))
            .body(body.clone())
            .unwrap();
        let res = w.send(basic).await;
        assert_error(&res, 401, "invalid_token", "Bearer");
    }
    w.assert_logs_clean();
}

#[tokio::test]
async fn wrong_methods_are_405() {
    let w = World::new().await;
    let token = w.login("alice").await;
    for (method, path) in [
        ("GET", "/api/login"),
        ("GET", "/api/orders"),
        ("DELETE", "/api/orders/20261127000000ffffffffffffffff"),
        (
            "GET",
            "/api/orders/20261127000000ffffffffffffffff/pay-params",
        ),
        ("PUT", "/api/wxpay/notify"),
        ("POST", "/api/health"),
        ("POST", "/api/admin/products"),
        ("PATCH", "/api/admin/products/tea"),
    ] {
        let bearer = if path.starts_with("/api/admin") {
            ADMIN_TOKEN
        } else {
            token.as_str()
        };
        let res = w.send(req(method, path, Some(bearer), String::new())).await;
        assert_error(&res, 405, "method_not_allowed", method);
    }
    w.assert_logs_clean();
}

/// The manifest as shipped (simulator mode, no variables).
#[tokio::test]
async fn default_manifest_refuses_bad_requests() {
    let app = TestApp::builder(MANIFEST)
        .start()
        .await
        .expect("app starts");

    let res = app.get("/api/health").await.unwrap();
    assert_eq!(res.status, 200);
    let health = res.json::<Value>().unwrap();
    assert_eq!(health["mode"], "simulator");
    assert_eq!(health["config_ok"], true);
    assert_eq!(health["store"], "ok");
    // The store failing: health says so (and still answers).
    let kv = app.kv("default");
    kv.fail_gets_matching("health:", spin_test_host::KvFailure::Times(1));
    let res = app.get("/api/health").await.unwrap();
    assert_eq!(res.status, 200);
    assert_eq!(res.json::<Value>().unwrap()["store"], "unavailable");

    let res = app
        .request(req(
            "POST",
            "/api/orders",
            None,
            json!({"sku": "x", "quantity": 1}).to_string(),
        ))
        .await
        .unwrap();
    assert_error(&res, 401, "missing_token", "Authorization");

    let res = app
        .request(req("PUT", "/api/admin/products/tea", None, "{}".into()))
        .await
        .unwrap();
    assert_error(&res, 401, "unauthorized", "admin_token");

    let xxe = r#"<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><xml><out_trade_no>&e;</out_trade_no></xml>"#;
    let res = app
        .request(req("POST", NOTIFY_PATH, None, xxe.into()))
        .await
        .unwrap();
    assert!(is_fail(&res), "{}", res.text());
    assert!(
        app.kv("default")
            .keys()
            .iter()
            .all(|k| !k.starts_with("order:"))
    );

    let big = "x".repeat(BIG);
    let res = app
        .request(req(
            "POST",
            "/api/login",
            None,
            json!({"code": big}).to_string(),
        ))
        .await
        .unwrap();
    assert_error(&res, 413, "body_too_large", "limit");
    assert_no_secrets_logged(&app, &[]);
}

/// A live app missing its settings: every route names the variables; notify answers FAIL XML.
#[tokio::test]
async fn live_mode_without_settings_names_the_variables() {
    let app = TestApp::builder(MANIFEST)
        .variable("wxpay_mode", "live")
        .start()
        .await
        .expect("app starts");
    let res = app.get("/api/health").await.unwrap();
    let health: Value = res.json().unwrap();
    assert_eq!(health["config_ok"], false);
    let problems = health["problems"].to_string();
    for var in [
        "wx_appid",
        "wxpay_api_key",
        "wxpay_mch_id",
        "session_secret",
        "admin_token",
    ] {
        assert!(problems.contains(var), "{var} not named: {problems}");
    }
    let res = app
        .request(req(
            "POST",
            "/api/login",
            None,
            json!({"code": "u-a-1"}).to_string(),
        ))
        .await
        .unwrap();
    assert_error(&res, 503, "config_error", "wx_app_secret");
    let res = app
        .request(req("POST", NOTIFY_PATH, None, "<xml/>".into()))
        .await
        .unwrap();
    assert!(
        is_fail(&res),
        "{:?} {}",
        res.header("content-type"),
        res.text()
    );
    assert_no_secrets_logged(&app, &[]);
}

#[tokio::test]
async fn json_routes_refuse_non_json_content_types_notify_is_lenient() {
    let w = World::new().await;
    let token = w.login("alice").await;
    let with_type = |method: &str, path: &str, bearer: Option<&str>, body: String, ct: &str| {
        let mut b = http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", ct);
        if let Some(t) = bearer {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        b.body(body).unwrap()
    };
    let order = json!({"sku": "tea", "quantity": 1}).to_string();
    for ct in ["text/plain", "application/x-www-form-urlencoded"] {
        let res = w
            .send(with_type(
                "POST",
                "/api/orders",
                Some(&token),
                order.clone(),
                ct,
            ))
            .await;
        assert_error(&res, 415, "unsupported_media_type", "application/json");
        let res = w
            .send(with_type(
                "POST",
                "/api/login",
                None,
                json!({"code": "u-bob-1"}).to_string(),
                ct,
            ))
            .await;
        assert_error(&res, 415, "unsupported_media_type", "application/json");
        let res = w
            .send(with_type(
                "PUT",
                "/api/admin/products/tea",
                Some(ADMIN_TOKEN),
                json!({"name": "x", "price": 1}).to_string(),
                ct,
            ))
            .await;
        assert_error(&res, 415, "unsupported_media_type", "application/json");
    }
    let res = w
        .send(with_type(
            "POST",
            "/api/orders",
            Some(&token),
            order,
            "application/json; charset=utf-8",
        ))
        .await;
    assert_eq!(res.status, 201, "{}", res.text());
    // WeChat sends text/xml, but the notify route does not depend on it: any type is read as
    // XML and judged by its signature alone.
    let order_no = res.json::<Value>().unwrap()["order"]["order_no"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = w.wechat.pay(&order_no, wxpay::v2::sign::SignType::Md5);
    let res = w
        .send(with_type(
            "POST",
            NOTIFY_PATH,
            None,
            body,
            "application/octet-stream",
        ))
        .await;
    assert!(is_success(&res), "{}", res.text());
    w.assert_logs_clean();
}
