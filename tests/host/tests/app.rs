//! The real app (`spin.toml` at the repository root) in the embedded host, with WeChat played
//! by a fake server on 127.0.0.1 that checks our signatures like WeChat does.

use std::sync::Arc;

use serde_json::{Value, json};
use spin_test_host::{FakeServer, TestApp, text_response};
use wxpay::pay_params::{PayParams, verify_pay_params};
use wxpay::secret::Secret;
use wxpay::v2::sign::{SignType, sign_in_place, verify};
use wxpay::v2::{Params, xml};

const MANIFEST: &str = "spin.toml";
const APPID: &str = "wx0123456789abcdef";
const MCH_ID: &str = "1900000109";
const API_KEY: &str = "Kq3Xv9Lm2Pz8Rt5Wn1Yb7Hc4Jd6Fg0Ae";
const APP_SECRET: &str = "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5";
const SESSION_SECRET: &str = "test-session-secret-0123456789abcdef";
const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
const OPENID: &str = "oTestUser0123456789abcdefghi";

fn params(fields: &[(&str, &str)]) -> Params {
    fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn signed_xml(mut p: Params) -> String {
    sign_in_place(&mut p, &Secret::new(API_KEY), SignType::Md5);
    xml::write(&p)
}

/// Plays jscode2session and unified order; refuses requests whose signature does not verify.
async fn fake_wechat() -> FakeServer {
    FakeServer::start(|req| async move {
        let path = req.path_and_query.clone();
        if path.starts_with("/sns/jscode2session?") {
            assert!(path.contains(&format!("appid={APPID}")) && path.contains("js_code=code-1"));
            return text_response(
                200,
                json!({"openid": OPENID, "session_key": "sk"}).to_string(),
            );
        }
        let sent = xml::read(&req.body).expect("our request is flat XML");
        if verify(&sent, &Secret::new(API_KEY)).is_err() {
            return text_response(
                200,
                "<xml><return_code>FAIL</return_code><return_msg>SIGNERROR</return_msg></xml>",
            );
        }
        assert_eq!(path, "/pay/unifiedorder");
        text_response(
            200,
            signed_xml(params(&[
                ("return_code", "SUCCESS"),
                ("appid", APPID),
                ("mch_id", MCH_ID),
                ("nonce_str", "5K8264ILTKCH16CQ2502SI8ZNMTM67VS"),
                ("result_code", "SUCCESS"),
                ("trade_type", "JSAPI"),
                ("prepay_id", "wx201410272009395522657a690389285100"),
            ])),
        )
    })
    .await
    .expect("fake WeChat starts")
}

async fn live_app(wechat: &FakeServer) -> TestApp {
    TestApp::builder(MANIFEST)
        .variable("wxpay_mode", "live")
        .variable("wx_appid", APPID)
        .variable("wx_app_secret", APP_SECRET)
        .variable("wxpay_mch_id", MCH_ID)
        .variable("wxpay_api_key", API_KEY)
        .variable(
            "wxpay_notify_url",
            "https://shop.example.com/api/wxpay/notify",
        )
        .variable("wxpay_mch_api", wechat.origin())
        .variable("wx_api", wechat.origin())
        .variable("session_secret", SESSION_SECRET)
        .variable("admin_token", ADMIN_TOKEN)
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

#[tokio::test]
async fn live_happy_path_login_order_notify_paid() {
    let wechat = Arc::new(fake_wechat().await);
    let app = live_app(&wechat).await;

    let put = http::Request::put("/api/admin/products/tea")
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .body(json!({"name": "乌龙茶 Oolong", "price": 199}).to_string())
        .unwrap();
    let res = app.request(put).await.unwrap();
    assert_eq!(res.status, 200, "{}", res.text());

    let res = app
        .request(post_json("/api/login", None, json!({"code": "code-1"})))
        .await
        .unwrap();
    assert_eq!(res.status, 200, "{}", res.text());
    let token = res.json::<Value>().unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();

    // The client's amount is ignored: the catalog prices the order.
    let body = json!({"sku": "tea", "quantity": 2, "total_fee": 1});
    let res = app
        .request(post_json("/api/orders", Some(&token), body))
        .await
        .unwrap();
    assert_eq!(res.status, 201, "{}", res.text());
    let created = res.json::<Value>().unwrap();
    assert_eq!(created["order"]["total_fee"], 398);
    assert_eq!(created["order"]["status"], "AWAITING_PAYMENT");
    let order_no = created["order"]["order_no"].as_str().unwrap().to_owned();
    let pay: PayParams = serde_json::from_value(created["pay_params"].clone()).unwrap();
    assert!(verify_pay_params(APPID, &pay, &Secret::new(API_KEY)));
    assert_eq!(
        pay.package,
        "prepay_id=wx201410272009395522657a690389285100"
    );
    let sent = xml::read(&wechat.requests().last().unwrap().body).unwrap();
    assert_eq!(sent["total_fee"], "398");
    assert_eq!(sent["openid"], OPENID);

    let notification = signed_xml(params(&[
        ("return_code", "SUCCESS"),
        ("appid", APPID),
        ("mch_id", MCH_ID),
        ("nonce_str", "5d2b6c2a8db53831f7eda20af46e531c"),
        ("result_code", "SUCCESS"),
        ("openid", OPENID),
        ("trade_type", "JSAPI"),
        ("bank_type", "CFT"),
        ("total_fee", "398"),
        ("cash_fee", "398"),
        ("transaction_id", "4200000000202611270000000001"),
        ("out_trade_no", &order_no),
        ("time_end", "20261127150000"),
    ]));
    let notify = http::Request::post("/api/wxpay/notify")
        .body(notification)
        .unwrap();
    let res = app.request(notify).await.unwrap();
    assert_eq!(res.status, 200);
    assert_eq!(res.text(), wxpay::v2::notify::SUCCESS_REPLY);

    let get = http::Request::get(format!("/api/orders/{order_no}"))
        .header("authorization", format!("Bearer {token}"))
        .body(String::new())
        .unwrap();
    let res = app.request(get).await.unwrap();
    assert_eq!(res.status, 200, "{}", res.text());
    let order = res.json::<Value>().unwrap();
    assert_eq!(order["status"], "PAID");
    assert_eq!(order["transaction_id"], "4200000000202611270000000001");

    let logs = app.logs();
    for secret in [
        API_KEY,
        APP_SECRET,
        SESSION_SECRET,
        ADMIN_TOKEN,
        token.as_str(),
        OPENID,
    ] {
        assert!(
            !logs.contains(secret),
            "a secret or the full openid was printed"
        );
    }
}

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

    let res = app
        .request(post_json(
            "/api/orders",
            None,
            json!({"sku": "x", "quantity": 1}),
        ))
        .await
        .unwrap();
    assert_eq!(res.status, 401);
    assert_eq!(
        res.json::<Value>().unwrap()["error"]["code"],
        "missing_token"
    );

    let res = app
        .request(post_json("/api/admin/products/tea", None, json!({})))
        .await
        .unwrap();
    assert!(res.status == 401 || res.status == 405, "{}", res.status);

    let xxe = r#"<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><xml><out_trade_no>&e;</out_trade_no></xml>"#;
    let res = app
        .request(
            http::Request::post("/api/wxpay/notify")
                .body(xxe.to_owned())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status, 200);
    assert!(
        res.text()
            .contains("<return_code><![CDATA[FAIL]]></return_code>"),
        "{}",
        res.text()
    );
    assert!(
        app.kv("default")
            .keys()
            .iter()
            .all(|k| !k.starts_with("order:"))
    );

    let big = "x".repeat(65 * 1024);
    let res = app
        .request(post_json("/api/login", None, json!({"code": big})))
        .await
        .unwrap();
    assert_eq!(res.status, 413);
}
