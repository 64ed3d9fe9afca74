//! The app in live mode speaking WeChat Pay APIv3 (`wxpay_api_version = v3`) against a fake
//! WeChat Pay APIv3 on 127.0.0.1 that checks our `Authorization` with the merchant's public
//! key, signs its replies with the vectors' throw-away WeChat keys (`src/v3/testdata/`) and
//! lists platform certificates; notifications are encrypted and signed as WeChat sends them and
//! POSTed over HTTP through the host, so the `Wechatpay-*` headers travel the real path.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use spin_test_host::{FakeServer, RecordedRequest, TestApp, TestResponse, text_response};
use wxpay::secret::Secret;
use wxpay::v3::sign::{MerchantKey, request_message, wechatpay_headers};
use wxpay::v3::verify::{PublicKey, SignatureHeaders};

use crate::support::{
    ADMIN_TOKEN, API_KEY, APP_SECRET, APPID, MCH_ID, NOTIFY_PATH, SESSION_SECRET, alerts,
    assert_no_secrets_logged, login_reply, openid, req, status_events,
};

const APIV3_KEY: &str = "Zq4Wv8Ln3Rx7Tb1Yc5Hm9Jd2Fg6Ka0Pe";
const MERCHANT_KEY: &str = include_str!("../../../../src/v3/testdata/merchant_key.pem");
const MERCHANT_PUB: &str = include_str!("../../../../src/v3/testdata/merchant_pub.pem");
const MCH_SERIAL: &str = "1DDE55AD98ED71D6EDD4A4A16996DE7B47773A8C";
const WECHATPAY_KEY: &str = include_str!("../../../../src/v3/testdata/wechatpay_key.pem");
const WECHATPAY_PUB: &str = include_str!("../../../../src/v3/testdata/wechatpay_pub.pem");
const PUB_KEY_ID: &str = "PUB_KEY_ID_0112345678902025112700000000000001";
const PLATFORM_CERT: &str = include_str!("../../../../src/v3/testdata/wechatpay_platform_cert.pem");
const PLATFORM_SERIAL: &str = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1";
const ROTATED_CERT: &str = include_str!("../../../../src/v3/testdata/wechatpay_rotated_cert.pem");
const ROTATED_KEY: &str = include_str!("../../../../src/v3/testdata/wechatpay_rotated_key.pem");
const ROTATED_SERIAL: &str = "6E2A91C4D07B35F8A1C0E9D2B4F6A8C0E2D4F6A8";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// How WeChat verifies itself to the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyMode {
    PublicKey,
    PlatformCertificates,
}

/// A trade as the fake WeChat knows it.
#[derive(Debug, Clone)]
struct Trade {
    total: u64,
    openid: String,
    state: &'static str,
    transaction_id: String,
}

#[derive(Default)]
struct State {
    trades: BTreeMap<String, Trade>,
    /// (serial, private key PEM) WeChat signs with.
    signer: Option<(String, String)>,
    /// What `GET /v3/certificates` lists.
    listed: Vec<&'static str>,
    /// Faults per route key: `jsapi`, `query`.
    faults: HashMap<&'static str, VecDeque<&'static str>>,
    /// Requests whose `Authorization` did not verify (we must never send one).
    bad_requests: Vec<String>,
}

struct FakeWechatV3 {
    server: FakeServer,
    state: Arc<Mutex<State>>,
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl FakeWechatV3 {
    async fn start(mode: KeyMode) -> Arc<FakeWechatV3> {
        let state = Arc::new(Mutex::new(State {
            signer: Some(match mode {
                KeyMode::PublicKey => (PUB_KEY_ID.into(), WECHATPAY_KEY.into()),
                KeyMode::PlatformCertificates => (PLATFORM_SERIAL.into(), WECHATPAY_KEY.into()),
            }),
            listed: vec![PLATFORM_CERT],
            ..State::default()
        }));
        let shared = state.clone();
        let server = FakeServer::start(move |req| {
            let state = shared.clone();
            async move { answer(&state, req) }
        })
        .await
        .expect("fake WeChat starts");
        Arc::new(FakeWechatV3 { server, state })
    }

    fn sign(&self, timestamp: u64, body: &[u8]) -> SignatureHeaders {
        sign_with(&lock(&self.state), timestamp, body)
    }

    fn pay(&self, order_no: &str) -> Trade {
        let mut s = lock(&self.state);
        let trade = s.trades.get_mut(order_no).expect("a trade WeChat knows");
        trade.state = "SUCCESS";
        trade.clone()
    }

    fn requests_to(&self, path: &str) -> usize {
        self.server
            .requests()
            .iter()
            .filter(|r| r.path_and_query.split('?').next() == Some(path))
            .count()
    }

    fn assert_all_requests_verified(&self) {
        let bad = lock(&self.state).bad_requests.clone();
        assert!(bad.is_empty(), "requests with bad signatures: {bad:?}");
    }
}

fn sign_with(s: &State, timestamp: u64, body: &[u8]) -> SignatureHeaders {
    let (serial, pem) = s.signer.clone().expect("a signer");
    let key = MerchantKey::from_pem(&pem).unwrap();
    wechatpay_headers(&key, &serial, timestamp, "fakewechatnonce0", body)
}

fn signed_response(s: &State, status: u16, body: String) -> http::Response<bytes::Bytes> {
    let headers = sign_with(s, now(), body.as_bytes());
    let mut response = text_response(status, body);
    for (name, value) in headers.to_headers() {
        response
            .headers_mut()
            .insert(name, http::HeaderValue::from_str(&value).unwrap());
    }
    response
}

fn transaction_json(order_no: &str, t: &Trade) -> Value {
    let mut v = json!({
        "appid": APPID, "mchid": MCH_ID, "out_trade_no": order_no, "trade_type": "JSAPI",
        "trade_state": t.state, "payer": {"openid": t.openid},
        "amount": {"total": t.total, "currency": "CNY"},
    });
    if t.state == "SUCCESS" {
        v["transaction_id"] = t.transaction_id.clone().into();
        v["success_time"] = "2026-12-01T20:00:00+08:00".into();
    }
    v
}

/// WeChat Pay APIv3 (and jscode2session, which is not versioned).
fn answer(state: &Mutex<State>, req: RecordedRequest) -> http::Response<bytes::Bytes> {
    let path = req
        .path_and_query
        .split('?')
        .next()
        .unwrap_or("")
        .to_owned();
    if path == "/sns/jscode2session" {
        return login_reply(&req.path_and_query);
    }
    let mut s = lock(state);
    // Like WeChat: Accept, User-Agent, and our signature with the merchant certificate's key.
    let header = |name: &str| req.headers.get(name).and_then(|v| v.to_str().ok());
    if header("accept") != Some("application/json") || header("user-agent").is_none() {
        return signed_response(&s, 400, json!({"code": "PARAM_ERROR"}).to_string());
    }
    let auth = header("authorization").unwrap_or("");
    let params: HashMap<&str, &str> = auth
        .strip_prefix("WECHATPAY2-SHA256-RSA2048 ")
        .unwrap_or("")
        .split(',')
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k, v.trim_matches('"'))))
        .collect();
    let timestamp: u64 = params
        .get("timestamp")
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let message = request_message(
        req.method.as_str(),
        &req.path_and_query,
        timestamp,
        params.get("nonce_str").copied().unwrap_or(""),
        &req.text(),
    );
    let verified = params.get("mchid") == Some(&MCH_ID)
        && params.get("serial_no") == Some(&MCH_SERIAL)
        && now().abs_diff(timestamp) < 300
        && PublicKey::from_pem(MERCHANT_PUB)
            .unwrap()
            .verifies(message.as_bytes(), params.get("signature").unwrap_or(&""));
    if !verified {
        s.bad_requests.push(req.path_and_query.clone());
        return signed_response(&s, 401, json!({"code": "SIGN_ERROR"}).to_string());
    }
    let tx_prefix = "/v3/pay/transactions/out-trade-no/";
    if path == "/v3/pay/transactions/jsapi" {
        let body: Value = serde_json::from_slice(&req.body).unwrap();
        let no = body["out_trade_no"].as_str().unwrap().to_owned();
        if let Some(fault) = s.faults.get_mut("jsapi").and_then(VecDeque::pop_front) {
            return signed_response(&s, 500, json!({"code": fault}).to_string());
        }
        let trade = Trade {
            total: body["amount"]["total"].as_u64().unwrap(),
            openid: body["payer"]["openid"].as_str().unwrap().to_owned(),
            state: "NOTPAY",
            transaction_id: format!("4200{no}"),
        };
        s.trades.entry(no.clone()).or_insert(trade);
        return signed_response(&s, 200, json!({"prepay_id": format!("wx{no}")}).to_string());
    }
    if path == "/v3/certificates" {
        let key = Secret::new(APIV3_KEY);
        let data: Vec<Value> = s
            .listed
            .iter()
            .map(|pem| {
                let cert = wxpay::v3::certificates::PlatformCertificate::from_pem(pem).unwrap();
                json!({
                    "serial_no": cert.serial, "effective_time": "2026-12-01T00:00:00+08:00",
                    "expire_time": "2036-11-28T00:00:00+08:00",
                    "encrypt_certificate": {
                        "algorithm": "AEAD_AES_256_GCM", "nonce": "fakecertnonc",
                        "associated_data": "certificate",
                        "ciphertext": wxpay::v3::aead::encrypt(
                            &key, "fakecertnonc", "certificate", pem.as_bytes()).unwrap(),
                    }
                })
            })
            .collect();
        return signed_response(&s, 200, json!({ "data": data }).to_string());
    }
    let Some(rest) = path.strip_prefix(tx_prefix) else {
        panic!("the fake WeChat v3 has no {path}");
    };
    if let Some(no) = rest.strip_suffix("/close") {
        return match s.trades.get_mut(no) {
            Some(t) if t.state == "SUCCESS" => {
                signed_response(&s, 400, json!({"code": "ORDERPAID"}).to_string())
            }
            Some(t) => {
                t.state = "CLOSED";
                signed_response(&s, 204, String::new())
            }
            None => signed_response(&s, 404, json!({"code": "ORDER_NOT_EXIST"}).to_string()),
        };
    }
    assert_eq!(req.path_and_query, format!("{path}?mchid={MCH_ID}"));
    match s.trades.get(rest).cloned() {
        Some(t) => signed_response(&s, 200, transaction_json(rest, &t).to_string()),
        None => signed_response(&s, 404, json!({"code": "ORDER_NOT_EXIST"}).to_string()),
    }
}

/// The live app speaking APIv3 against `wechat`. The private key is passed `\n`-escaped, as an
/// environment variable carries it; the APIv2 key stays set (APIv2 notifications still settle).
async fn live_app_v3(wechat: &FakeWechatV3, mode: KeyMode) -> TestApp {
    let mut app = TestApp::builder(crate::support::MANIFEST)
        .variable("wxpay_mode", "live")
        .variable("wxpay_api_version", "v3")
        .variable("wx_appid", APPID)
        .variable("wx_app_secret", APP_SECRET)
        .variable("wxpay_mch_id", MCH_ID)
        .variable("wxpay_api_key", API_KEY)
        .variable("wxpay_apiv3_key", APIV3_KEY)
        .variable(
            "wxpay_mch_private_key",
            MERCHANT_KEY.trim().replace('\n', "\\n"),
        )
        .variable("wxpay_mch_cert_serial", MCH_SERIAL)
        .variable(
            "wxpay_notify_url",
            "https://shop.example.com/api/wxpay/notify",
        )
        .variable("wxpay_mch_api", wechat.server.origin())
        .variable("wx_api", wechat.server.origin())
        .variable("session_secret", SESSION_SECRET)
        .variable("admin_token", ADMIN_TOKEN);
    if mode == KeyMode::PublicKey {
        app = app
            .variable("wxpay_public_key", WECHATPAY_PUB)
            .variable("wxpay_public_key_id", PUB_KEY_ID);
    }
    app.start().await.expect("app starts")
}

/// `POST /api/wxpay/notify` as WeChat sends an APIv3 notification.
fn notify_request(body: &str, headers: &SignatureHeaders) -> http::Request<String> {
    let mut builder = http::Request::builder()
        .method("POST")
        .uri(NOTIFY_PATH)
        .header("content-type", "application/json");
    for (name, value) in headers.to_headers() {
        builder = builder.header(name, value);
    }
    builder.body(body.to_owned()).unwrap()
}

struct V3World {
    wechat: Arc<FakeWechatV3>,
    app: TestApp,
    token: String,
}

impl V3World {
    async fn new(mode: KeyMode) -> V3World {
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

    async fn send(&self, req: http::Request<String>) -> TestResponse {
        self.app.request(req).await.expect("the app answers")
    }

    /// A created order: its number and pay params.
    async fn create(&self) -> (String, Value) {
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

    async fn status(&self, no: &str) -> String {
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

    async fn admin_order(&self, no: &str) -> Value {
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

    /// The payment notification of `no` as WeChat sends it (after `edit` of the transaction),
    /// stating `aad` as its AAD (`transaction` is the right one), signed `skew` seconds from
    /// now.
    fn notification(
        &self,
        no: &str,
        aad: &str,
        skew: i64,
        edit: impl FnOnce(&mut Value),
    ) -> (String, SignatureHeaders) {
        let trade = lock(&self.wechat.state).trades[no].clone();
        let mut transaction = transaction_json(
            no,
            &Trade {
                state: "SUCCESS",
                ..trade
            },
        );
        edit(&mut transaction);
        let body = wxpay::v3::notify::payment_envelope(
            &Secret::new(APIV3_KEY),
            "0123456789ab",
            "EV-1",
            "2026-12-01T20:00:01+08:00",
            &transaction.to_string(),
        )
        .unwrap()
        // Another AAD stated than the one the resource was sealed with.
        .replace(
            r#""associated_data":"transaction""#,
            &format!(r#""associated_data":"{aad}""#),
        );
        let headers = self
            .wechat
            .sign(now().saturating_add_signed(skew), body.as_bytes());
        (body, headers)
    }

    async fn notify(&self, body: &str, headers: &SignatureHeaders) -> TestResponse {
        self.send(notify_request(body, headers)).await
    }

    fn assert_clean(&self) {
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
    let (body, headers) = w.notification(&no, "transaction", 0, |_| {});
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
    let (body, headers) = w.notification(&no, "transaction", 0, |_| {});
    let mut cases: Vec<(&str, String, SignatureHeaders)> =
        vec![("tampered", body.replace("EV-1", "EV-2"), headers.clone())];
    let mut serial = headers.clone();
    serial.serial = "PUB_KEY_ID_0112345678902025112700000000000009".into();
    cases.push(("unknown serial", body.clone(), serial));
    let mut probe = headers.clone();
    probe.signature = format!("WECHATPAY/SIGNTEST/{}", headers.signature);
    cases.push(("SIGNTEST", body.clone(), probe));
    for (name, skew) in [("stale", -301), ("future", 301)] {
        let (b, h) = w.notification(&no, "transaction", skew, |_| {});
        cases.push((name, b, h));
    }
    let (b, h) = w.notification(&no, "certificate", 0, |_| {});
    cases.push(("wrong AAD", b, h));
    for (name, body, headers) in cases {
        let res = w.notify(&body, &headers).await;
        assert_eq!(res.status, 401, "{name}: {}", res.text());
        assert_eq!(res.json::<Value>().unwrap()["code"], "FAIL", "{name}");
    }
    assert_eq!(w.status(&no).await, "AWAITING_PAYMENT");
    // Validly signed, but not this order's amount: received, an alert, not paid.
    let (b, h) = w.notification(&no, "transaction", 0, |t| t["amount"]["total"] = json!(1));
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
    let (b, h) = w.notification("20261201000000ffffffffffff", "transaction", 0, |_| {});
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
        let (b, h) = w.notification(no, "transaction", 0, |_| {});
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
