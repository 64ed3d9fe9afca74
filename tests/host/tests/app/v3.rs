//! The app in live mode speaking WeChat Pay APIv3 (`wxpay_api_version = v3`) against a fake
//! WeChat Pay APIv3 on 127.0.0.1 (`fake_v3.rs`) that checks our `Authorization` with the
//! merchant's public key, signs its replies with the vectors' throw-away WeChat keys
//! (`src/v3/testdata/`) and lists platform certificates; notifications are encrypted and signed
//! as WeChat sends them and POSTed over HTTP through the host, so the `Wechatpay-*` headers
//! travel the real path.

use std::sync::Arc;

use serde_json::{Value, json};
use spin_test_host::{TestApp, TestResponse};
use wxpay::v3::verify::{PublicKey, SignatureHeaders};

use crate::fake_v3::{
    APIV3_KEY, FakeWechatV3, KeyMode, MERCHANT_KEY, MERCHANT_PUB, ROTATED_CERT, ROTATED_KEY,
    ROTATED_SERIAL, Trade, WECHATPAY_PUB, live_v3_variables, lock, notify_request, now,
};
use crate::support::{
    ADMIN_TOKEN, APPID, MCH_ID, NOTIFY_PATH, SESSION_SECRET, alerts, assert_no_secrets_logged,
    openid, req, status_events,
};

/// The live app speaking APIv3 against `wechat` in the test host.
async fn live_app_v3(wechat: &FakeWechatV3, mode: KeyMode) -> TestApp {
    let mut app = TestApp::builder(crate::support::MANIFEST);
    for (name, value) in live_v3_variables(wechat, mode) {
        app = app.variable(name, value);
    }
    app.start().await.expect("app starts")
}

pub(crate) struct V3World {
    pub(crate) wechat: Arc<FakeWechatV3>,
    pub(crate) app: TestApp,
    pub(crate) token: String,
}

impl V3World {
    pub(crate) async fn new(mode: KeyMode) -> V3World {
        let wechat = FakeWechatV3::start(mode).await;
        let app = live_app_v3(&wechat, mode).await;
        let put = req(
            "PUT",
            "/api/admin/products/tea",
            Some(ADMIN_TOKEN),
            json!({"name": "乌龙茶 Oolong", "price": 199}).to_string(),
        );
        assert_eq!(app.request(put).await.unwrap().status, 200);
        let login = req(
            "POST",
            "/api/login",
            None,
            json!({"code": "u-vera-1"}).to_string(),
        );
        let res = app.request(login).await.unwrap();
        assert_eq!(res.status, 200, "{}", res.text());
        let token = res.json::<Value>().unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned();
        V3World { wechat, app, token }
    }

    pub(crate) async fn send(&self, req: http::Request<String>) -> TestResponse {
        self.app.request(req).await.expect("the app answers")
    }

    /// A created order: its number and pay params.
    pub(crate) async fn create(&self) -> (String, Value) {
        let res = self
            .send(req(
                "POST",
                "/api/orders",
                Some(&self.token),
                json!({"sku": "tea", "quantity": 2}).to_string(),
            ))
            .await;
        assert_eq!(res.status, 201, "{}", res.text());
        let body: Value = res.json().unwrap();
        let no = body["order"]["order_no"].as_str().unwrap().to_owned();
        (no, body["pay_params"].clone())
    }

    pub(crate) async fn status(&self, no: &str) -> String {
        let res = self
            .send(req(
                "GET",
                &format!("/api/orders/{no}"),
                Some(&self.token),
                String::new(),
            ))
            .await;
        res.json::<Value>().unwrap()["status"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub(crate) async fn admin_order(&self, no: &str) -> Value {
        let res = self
            .send(req(
                "GET",
                &format!("/api/admin/orders/{no}"),
                Some(ADMIN_TOKEN),
                String::new(),
            ))
            .await;
        res.json().unwrap()
    }

    pub(crate) async fn notify(&self, body: &str, headers: &SignatureHeaders) -> TestResponse {
        self.send(notify_request(body, headers)).await
    }

    pub(crate) fn assert_clean(&self) {
        self.wechat.assert_all_requests_verified();
        assert_no_secrets_logged(
            &self.app,
            &[
                APIV3_KEY.to_owned(),
                self.token.clone(),
                openid("vera"),
                MERCHANT_KEY.lines().nth(1).unwrap().to_owned(),
            ],
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn v3_order_pay_and_notify_in_public_key_mode() {
    let w = V3World::new(KeyMode::PublicKey).await;
    let (no, params) = w.create().await;
    assert_eq!(params["signType"], "RSA");
    let message = format!(
        "{APPID}\n{}\n{}\n{}\n",
        params["timeStamp"].as_str().unwrap(),
        params["nonceStr"].as_str().unwrap(),
        params["package"].as_str().unwrap()
    );
    let merchant_public = PublicKey::from_pem(MERCHANT_PUB).unwrap();
    assert!(merchant_public.verifies(message.as_bytes(), params["paySign"].as_str().unwrap()));
    // Re-signing hands back the same params.
    let again = w
        .send(req(
            "POST",
            &format!("/api/orders/{no}/pay-params"),
            Some(&w.token),
            String::new(),
        ))
        .await;
    assert_eq!(again.json::<Value>().unwrap(), params);

    w.wechat.pay(&no);
    let (body, headers) = w.wechat.notification(&no, "transaction", 0, |_| {});
    // 20 concurrent copies of the notification: every one answered 204, one payment.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let app = w.app.clone();
        let request = notify_request(&body, &headers);
        tasks.spawn(async move { app.request(request).await.unwrap() });
    }
    while let Some(res) = tasks.join_next().await {
        let res = res.unwrap();
        assert_eq!(res.status, 204, "{}", res.text());
    }
    assert_eq!(w.status(&no).await, "PAID");
    let order = w.admin_order(&no).await;
    let paid: Vec<Value> = status_events(&order)
        .into_iter()
        .filter(|e| e["to"] == "PAID")
        .collect();
    assert_eq!(paid.len(), 1, "{order}");
    assert_eq!(order["transaction_id"], format!("4200{no}"));
    w.assert_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn v3_notifications_that_cannot_be_trusted_are_refused_over_http() {
    let w = V3World::new(KeyMode::PublicKey).await;
    // WeChat has not seen the payment (a status poll must not settle it meanwhile).
    let (no, _) = w.create().await;
    let (body, headers) = w.wechat.notification(&no, "transaction", 0, |_| {});
    let mut cases: Vec<(&str, String, SignatureHeaders)> =
        vec![("tampered", body.replace("EV-1", "EV-2"), headers.clone())];
    let mut serial = headers.clone();
    serial.serial = "PUB_KEY_ID_0112345678902025112700000000000009".into();
    cases.push(("unknown serial", body.clone(), serial));
    let mut probe = headers.clone();
    probe.signature = format!("WECHATPAY/SIGNTEST/{}", headers.signature);
    cases.push(("SIGNTEST", body.clone(), probe));
    for (name, skew) in [("stale", -301), ("future", 301)] {
        let (b, h) = w.wechat.notification(&no, "transaction", skew, |_| {});
        cases.push((name, b, h));
    }
    let (b, h) = w.wechat.notification(&no, "certificate", 0, |_| {});
    cases.push(("wrong AAD", b, h));
    for (name, body, headers) in cases {
        let res = w.notify(&body, &headers).await;
        assert_eq!(res.status, 401, "{name}: {}", res.text());
        assert_eq!(res.json::<Value>().unwrap()["code"], "FAIL", "{name}");
    }
    assert_eq!(w.status(&no).await, "AWAITING_PAYMENT");
    // Validly signed, but not this order's amount: received, an alert, not paid.
    let (b, h) = w
        .wechat
        .notification(&no, "transaction", 0, |t| t["amount"]["total"] = json!(1));
    assert_eq!(w.notify(&b, &h).await.status, 204);
    assert!(alerts(&w.admin_order(&no).await)[0].contains("does not match"));
    // An order the app does not know: a failure, so WeChat tries again.
    lock(&w.wechat.state).trades.insert(
        "20261201000000ffffffffffff".into(),
        Trade {
            total: 1,
            openid: openid("vera"),
            state: "SUCCESS",
            transaction_id: "4200x".into(),
        },
    );
    let (b, h) = w
        .wechat
        .notification("20261201000000ffffffffffff", "transaction", 0, |_| {});
    assert_eq!(w.notify(&b, &h).await.status, 404);
    // An APIv2 notification (the APIv2 key is kept) of an order made before the switch.
    let v2 = crate::support::notification(
        &no,
        &openid("vera"),
        398,
        &format!("4200{no}"),
        "20261201200000",
        wxpay::v2::sign::SignType::Md5,
        |_| {},
    );
    let res = w.send(req("POST", NOTIFY_PATH, None, v2)).await;
    assert_eq!(res.text(), wxpay::v2::notify::SUCCESS_REPLY);
    assert_eq!(w.status(&no).await, "PAID");
    w.assert_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn v3_platform_certificates_are_fetched_and_a_rotation_is_followed() {
    let w = V3World::new(KeyMode::PlatformCertificates).await;
    let (first, _) = w.create().await;
    assert_eq!(w.wechat.requests_to("/v3/certificates"), 1);
    w.create().await;
    assert_eq!(
        w.wechat.requests_to("/v3/certificates"),
        1,
        "known serials are not fetched"
    );
    // WeChat rotates: a new certificate, listed beside the old one, signs from now on.
    {
        let mut s = lock(&w.wechat.state);
        s.listed.push(ROTATED_CERT);
        s.signer = Some((ROTATED_SERIAL.into(), ROTATED_KEY.into()));
    }
    let (second, _) = w.create().await;
    assert_eq!(w.wechat.requests_to("/v3/certificates"), 2);
    // The notify component (no merchant key) verifies with the certificates stored by serial.
    for no in [&first, &second] {
        w.wechat.pay(no);
        let (b, h) = w.wechat.notification(no, "transaction", 0, |_| {});
        assert_eq!(w.notify(&b, &h).await.status, 204);
        assert_eq!(w.status(no).await, "PAID");
    }
    w.assert_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn v3_lost_notification_is_paid_by_polling_and_problems_are_named() {
    let w = V3World::new(KeyMode::PublicKey).await;
    let (no, _) = w.create().await;
    w.wechat.pay(&no);
    assert_eq!(w.status(&no).await, "PAID");
    w.assert_clean();

    // A broken APIv3 configuration is named, never quoted.
    let wechat = FakeWechatV3::start(KeyMode::PublicKey).await;
    let app = TestApp::builder(crate::support::MANIFEST)
        .variable("wxpay_mode", "live")
        .variable("wxpay_api_version", "v3")
        .variable("wx_appid", APPID)
        .variable("wxpay_mch_id", MCH_ID)
        .variable("wxpay_apiv3_key", "short-secret-value")
        .variable("wxpay_mch_private_key", "not a key at all")
        .variable("wxpay_public_key", WECHATPAY_PUB)
        .variable(
            "wxpay_notify_url",
            "https://shop.example.com/api/wxpay/notify",
        )
        .variable("wxpay_mch_api", wechat.server.origin())
        .variable("session_secret", SESSION_SECRET)
        .variable("admin_token", ADMIN_TOKEN)
        .start()
        .await
        .expect("app starts");
    let health = app
        .request(req("GET", "/api/health", None, String::new()))
        .await
        .unwrap();
    let text = health.text();
    for named in [
        "wxpay_apiv3_key",
        "wxpay_mch_private_key",
        "wxpay_mch_cert_serial",
        "wxpay_public_key_id",
    ] {
        assert!(text.contains(named), "{named}: {text}");
    }
    assert!(
        !text.contains("short-secret-value") && !text.contains("not a key at all"),
        "{text}"
    );
    // The notify component answers an APIv3 notification 500 (our side: WeChat retries).
    let body = "{}";
    let headers = wechat.sign(now(), body.as_bytes());
    let res = app.request(notify_request(body, &headers)).await.unwrap();
    assert_eq!(res.status, 500, "{}", res.text());
    assert_eq!(res.json::<Value>().unwrap()["code"], "FAIL");
}
