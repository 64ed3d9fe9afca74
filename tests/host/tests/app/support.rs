//! Shared pieces of the app tests: a fake WeChat (login + WeChat Pay APIv2) on 127.0.0.1 that
//! verifies our signatures with the merchant key like WeChat does, keeps a ledger of the orders
//! it was asked to create and of what it considers paid, and takes scripted faults; the live
//! app configured against it; and request helpers.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use spin_test_host::{FakeServer, RecordedRequest, TestApp, TestResponse, text_response};
use wxpay::secret::Secret;
use wxpay::v2::sign::{SignType, declared_sign_type, sign, verify};
use wxpay::v2::{Params, xml};

pub const MANIFEST: &str = "spin.toml";
pub const APPID: &str = "wx0123456789abcdef";
pub const MCH_ID: &str = "1900000109";
pub const API_KEY: &str = "Kq3Xv9Lm2Pz8Rt5Wn1Yb7Hc4Jd6Fg0Ae";
pub const APP_SECRET: &str = "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5";
pub const SESSION_SECRET: &str = "test-session-secret-0123456789abcdef";
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
/// What WeChat's login answers besides the openid: must never leave the server.
pub const SESSION_KEY: &str = "tiihtNczf5v6AKRyjwEUhQ==";
pub const NOTIFY_PATH: &str = "/api/wxpay/notify";

/// The openid WeChat knows for a test user (`alice` → `oTest_alice_...`): long and distinct, so
/// a log that printed it in full is caught.
pub fn openid(user: &str) -> String {
    format!("oTest_{user}_7Hq2Zp9Lx4Wc1Vb8")
}

// ---- The fake WeChat ----------------------------------------------------------------------------

/// A scripted fault, served instead of the normal answer (in order, per API path).
#[derive(Debug, Clone)]
pub enum Fault {
    /// `return_code SUCCESS`, `result_code FAIL`, `err_code SYSTEMERROR` (validly signed).
    SystemError,
    /// A well-formed success reply whose signature is wrong.
    BadSignature,
    /// `return_code FAIL` with this `return_msg`.
    ReturnFail(&'static str),
    /// `result_code FAIL` with this err_code (validly signed).
    ErrCode(&'static str),
    /// Answers normally, but only after this long.
    Delay(Duration),
    /// A reply body over the 64 KiB the app reads of a reply.
    Oversized,
}

/// One order as the fake WeChat sees it.
#[derive(Debug, Clone, Default)]
pub struct Trade {
    pub total_fee: u64,
    pub openid: String,
    pub prepay_id: String,
    pub paid: Option<(String, String)>,
    pub closed: bool,
    /// Overrides orderquery's trade_state (e.g. `USERPAYING`).
    pub trade_state: Option<String>,
}

#[derive(Default)]
struct State {
    ledger: BTreeMap<String, Trade>,
    faults: HashMap<String, VecDeque<Fault>>,
    /// Requests whose signature did not verify (we must never send one).
    bad_requests: Vec<String>,
    next: u64,
    /// Refunds made, by `out_refund_no`: (out_trade_no, refund_fee). One per number.
    refunds: BTreeMap<String, (String, u64)>,
}

/// The fake WeChat: `/sns/jscode2session`, `/pay/unifiedorder`, `/pay/orderquery`,
/// `/pay/closeorder`, `/secapi/pay/refund` (one refund per `out_refund_no`, within the paid
/// total; the client certificate is the business of an mTLS front, `tls::MtlsFake`).
pub struct FakeWechat {
    pub server: FakeServer,
    state: Arc<Mutex<State>>,
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn params(fields: &[(&str, &str)]) -> Params {
    fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Signs `p` with the merchant key. WeChat signs a reply with the request's sign type and does
/// not name it in the reply; a notification names it when it is not MD5.
fn sign_reply(mut p: Params, sign_type: SignType) -> String {
    p.remove("sign");
    let signature = sign(&p, &Secret::new(API_KEY), sign_type);
    p.insert("sign".into(), signature);
    xml::write(&p)
}

impl FakeWechat {
    pub async fn start() -> Arc<FakeWechat> {
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let server = FakeServer::start(move |req| {
            let state = shared.clone();
            async move { answer(&state, req).await }
        })
        .await
        .expect("fake WeChat starts");
        Arc::new(FakeWechat { server, state })
    }

    pub fn origin(&self) -> String {
        self.server.origin()
    }

    /// Serves `fault` for the next `times` requests to `path` (e.g. `/pay/unifiedorder`).
    pub fn fault(&self, path: &str, fault: Fault, times: usize) {
        let mut s = lock(&self.state);
        let queue = s.faults.entry(path.to_owned()).or_default();
        for _ in 0..times {
            queue.push_back(fault.clone());
        }
    }

    pub fn trade(&self, order_no: &str) -> Option<Trade> {
        lock(&self.state).ledger.get(order_no).cloned()
    }

    /// Every trade WeChat knows, by out_trade_no (the soak test's source of truth).
    #[allow(dead_code)] // soak.rs
    pub fn ledger(&self) -> BTreeMap<String, Trade> {
        lock(&self.state).ledger.clone()
    }

    /// Requests whose signature did not verify, so far.
    #[allow(dead_code)] // soak.rs
    pub fn bad_requests(&self) -> usize {
        lock(&self.state).bad_requests.len()
    }

    /// Drops every scripted fault not yet served.
    #[allow(dead_code)] // soak.rs
    pub fn clear_faults(&self) {
        lock(&self.state).faults.clear();
    }

    pub fn set_trade_state(&self, order_no: &str, state: &str) {
        let mut s = lock(&self.state);
        s.ledger.get_mut(order_no).expect("known trade").trade_state = Some(state.to_owned());
    }

    /// The user pays `order_no` at WeChat: recorded in the ledger (orderquery says SUCCESS from
    /// now on). Returns the notification WeChat would send, signed with `sign_type`.
    pub fn pay(&self, order_no: &str, sign_type: SignType) -> String {
        let mut s = lock(&self.state);
        s.next += 1;
        let n = s.next;
        let trade = s.ledger.get_mut(order_no).expect("known trade");
        let paid = trade.paid.get_or_insert_with(|| {
            (
                format!("42000000002026112700{n:08}"),
                "20261127150000".to_owned(),
            )
        });
        let (tid, time_end) = paid.clone();
        let trade = trade.clone();
        drop(s);
        notification(
            order_no,
            &trade.openid,
            trade.total_fee,
            &tid,
            &time_end,
            sign_type,
            |_| {},
        )
    }

    /// The refunds made, by `out_refund_no`: (out_trade_no, refund_fee).
    pub fn refunds(&self) -> BTreeMap<String, (String, u64)> {
        lock(&self.state).refunds.clone()
    }

    /// Requests to `path` received so far, in order.
    pub fn requests_to(&self, path: &str) -> Vec<RecordedRequest> {
        self.server
            .requests()
            .into_iter()
            .filter(|r| r.path_and_query.split('?').next() == Some(path))
            .collect()
    }

    /// Panics if we ever sent WeChat a request whose signature did not verify.
    pub fn assert_all_requests_verified(&self) {
        let bad = lock(&self.state).bad_requests.clone();
        assert!(bad.is_empty(), "requests with bad signatures: {bad:?}");
    }
}

/// A payment notification with the fields WeChat sends, signed with `sign_type` (named in
/// `sign_type` when not MD5); `edit` changes fields before signing.
pub fn notification(
    order_no: &str,
    openid: &str,
    total_fee: u64,
    transaction_id: &str,
    time_end: &str,
    sign_type: SignType,
    edit: impl FnOnce(&mut Params),
) -> String {
    let fee = total_fee.to_string();
    let mut p = params(&[
        ("return_code", "SUCCESS"),
        ("appid", APPID),
        ("mch_id", MCH_ID),
        ("nonce_str", "5d2b6c2a8db53831f7eda20af46e531c"),
        ("result_code", "SUCCESS"),
        ("openid", openid),
        ("is_subscribe", "N"),
        ("trade_type", "JSAPI"),
        ("bank_type", "CFT"),
        ("total_fee", &fee),
        ("fee_type", "CNY"),
        ("cash_fee", &fee),
        ("transaction_id", transaction_id),
        ("out_trade_no", order_no),
        ("time_end", time_end),
    ]);
    if sign_type != SignType::Md5 {
        p.insert("sign_type".into(), sign_type.as_str().into());
    }
    edit(&mut p);
    sign_reply(p, sign_type)
}

/// WeChat's APIv2 refund notification of `refund_no` (`refund_status` SUCCESS): the refund's
/// fields encrypted into `req_info` with `api_key`, no `sign`.
pub fn refund_notification(
    order_no: &str,
    refund_no: &str,
    refund_fee: u64,
    total_fee: u64,
    mch_id: &str,
    api_key: &str,
) -> String {
    let info = params(&[
        ("out_trade_no", order_no),
        ("transaction_id", "4200000000202611270000000001"),
        ("out_refund_no", refund_no),
        ("refund_id", &format!("5000{refund_no}")),
        ("total_fee", &total_fee.to_string()),
        ("refund_fee", &refund_fee.to_string()),
        ("settlement_refund_fee", &refund_fee.to_string()),
        ("refund_status", "SUCCESS"),
        ("success_time", "2026-11-27 15:10:00"),
        ("refund_recv_accout", "支付用户零钱"),
        ("refund_request_source", "API"),
    ]);
    wxpay::v2::refund::refund_notification(
        APPID,
        mch_id,
        "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
        &info,
        &Secret::new(api_key),
    )
}

fn xml_response(body: String) -> http::Response<bytes::Bytes> {
    text_response(200, body)
}

async fn answer(state: &Mutex<State>, req: RecordedRequest) -> http::Response<bytes::Bytes> {
    let path = req
        .path_and_query
        .split('?')
        .next()
        .unwrap_or("")
        .to_owned();
    if path == "/sns/jscode2session" {
        return login_reply(&req.path_and_query);
    }
    let Ok(sent) = xml::read(&req.body) else {
        return xml_response(
            "<xml><return_code>FAIL</return_code><return_msg>XML_FORMAT_ERROR</return_msg></xml>"
                .into(),
        );
    };
    let sign_type = declared_sign_type(&sent).unwrap_or(SignType::Md5);
    if verify(&sent, &Secret::new(API_KEY)).is_err()
        || sent.get("appid").map(String::as_str) != Some(APPID)
        || sent.get("mch_id").map(String::as_str) != Some(MCH_ID)
    {
        lock(state).bad_requests.push(path.clone());
        return xml_response(
            "<xml><return_code><![CDATA[FAIL]]></return_code><return_msg><![CDATA[签名错误]]></return_msg></xml>"
                .into(),
        );
    }
    let fault = lock(state)
        .faults
        .get_mut(&path)
        .and_then(VecDeque::pop_front);
    let envelope = |extra: &[(&str, &str)]| {
        let mut p = params(&[
            ("return_code", "SUCCESS"),
            ("return_msg", "OK"),
            ("appid", APPID),
            ("mch_id", MCH_ID),
            ("nonce_str", "IITRi8Iabbblz1Jc"),
        ]);
        for (k, v) in extra {
            p.insert(k.to_string(), v.to_string());
        }
        p
    };
    let refuse = |code: &str| {
        sign_reply(
            envelope(&[
                ("result_code", "FAIL"),
                ("err_code", code),
                ("err_code_des", "test fault"),
            ]),
            sign_type,
        )
    };
    match fault {
        Some(Fault::SystemError) => return xml_response(refuse("SYSTEMERROR")),
        Some(Fault::ErrCode(code)) => return xml_response(refuse(code)),
        Some(Fault::ReturnFail(msg)) => {
            return xml_response(format!(
                "<xml><return_code><![CDATA[FAIL]]></return_code><return_msg><![CDATA[{msg}]]></return_msg></xml>"
            ));
        }
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        Some(Fault::Oversized) => {
            let padding = "x".repeat(wxpay::v2::xml::MAX_XML_BYTES);
            return xml_response(format!(
                "<xml><return_code><![CDATA[SUCCESS]]></return_code><pad>{padding}</pad></xml>"
            ));
        }
        Some(Fault::BadSignature) | None => {}
    }
    let out_trade_no = sent.get("out_trade_no").cloned().unwrap_or_default();
    let reply = {
        let mut s = lock(state);
        match path.as_str() {
            "/pay/unifiedorder" => {
                s.next += 1;
                let prepay_id = format!("wx27150000{:016}{}", s.next, "0000");
                let trade = s
                    .ledger
                    .entry(out_trade_no.clone())
                    .or_insert_with(|| Trade {
                        total_fee: sent["total_fee"].parse().expect("integer total_fee"),
                        openid: sent["openid"].clone(),
                        prepay_id: prepay_id.clone(),
                        ..Trade::default()
                    });
                envelope(&[
                    ("result_code", "SUCCESS"),
                    ("trade_type", "JSAPI"),
                    ("prepay_id", &trade.prepay_id.clone()),
                ])
            }
            "/pay/orderquery" => match s.ledger.get(&out_trade_no) {
                None => {
                    drop(s);
                    return xml_response(refuse("ORDERNOTEXIST"));
                }
                Some(t) => {
                    let state = t.trade_state.clone().unwrap_or_else(|| {
                        if t.paid.is_some() {
                            "SUCCESS".into()
                        } else if t.closed {
                            "CLOSED".into()
                        } else {
                            "NOTPAY".into()
                        }
                    });
                    let fee = t.total_fee.to_string();
                    let mut p = envelope(&[
                        ("result_code", "SUCCESS"),
                        ("out_trade_no", &out_trade_no),
                        ("trade_state", &state),
                        ("openid", &t.openid),
                    ]);
                    if let Some((tid, time_end)) = &t.paid {
                        for (k, v) in [
                            ("total_fee", fee.as_str()),
                            ("cash_fee", fee.as_str()),
                            ("transaction_id", tid),
                            ("time_end", time_end),
                            ("trade_type", "JSAPI"),
                            ("bank_type", "CFT"),
                        ] {
                            p.insert(k.into(), v.into());
                        }
                    }
                    p
                }
            },
            "/pay/closeorder" => match s.ledger.get_mut(&out_trade_no) {
                None => {
                    drop(s);
                    return xml_response(refuse("ORDERNOTEXIST"));
                }
                Some(t) if t.paid.is_some() => {
                    drop(s);
                    return xml_response(refuse("ORDERPAID"));
                }
                Some(t) => {
                    t.closed = true;
                    envelope(&[("result_code", "SUCCESS")])
                }
            },
            "/secapi/pay/refund" => {
                let refund_no = sent["out_refund_no"].clone();
                let fee: u64 = sent["refund_fee"].parse().expect("integer refund_fee");
                let refused = match s.ledger.get(&out_trade_no) {
                    None => Some("ORDERNOTEXIST"),
                    Some(t) if t.paid.is_none() => Some("TRADE_STATE_ERROR"),
                    Some(t) if sent["total_fee"] != t.total_fee.to_string() => {
                        Some("INVALID_REQUEST")
                    }
                    Some(t) => match s.refunds.get(&refund_no) {
                        Some((_, made)) if *made != fee => Some("INVALID_REQUEST"),
                        Some(_) => None,
                        None => {
                            let held: u64 = s
                                .refunds
                                .values()
                                .filter(|(no, _)| *no == out_trade_no)
                                .map(|(_, f)| f)
                                .sum();
                            (held + fee > t.total_fee).then_some("INVALID_REQUEST")
                        }
                    },
                };
                if let Some(code) = refused {
                    drop(s);
                    return xml_response(refuse(code));
                }
                s.refunds
                    .entry(refund_no.clone())
                    .or_insert((out_trade_no.clone(), fee));
                envelope(&[
                    ("result_code", "SUCCESS"),
                    ("out_trade_no", &out_trade_no),
                    ("out_refund_no", &refund_no),
                    ("refund_id", &format!("5000{refund_no}")),
                    ("refund_fee", &fee.to_string()),
                    ("total_fee", &sent["total_fee"]),
                ])
            }
            other => panic!("the fake WeChat has no {other}"),
        }
    };
    let mut body = sign_reply(reply, sign_type);
    if matches!(fault, Some(Fault::BadSignature)) {
        let mut p = xml::read(body.as_bytes()).unwrap();
        p.insert("sign".into(), "0".repeat(32));
        body = xml::write(&p);
    }
    xml_response(body)
}

/// jscode2session: `u-<user>-<n>` logs `<user>` in; `used` is a used code (40029); `busy` -1.
pub fn login_reply(path_and_query: &str) -> http::Response<bytes::Bytes> {
    let query: HashMap<&str, &str> = path_and_query
        .split_once('?')
        .map_or("", |(_, q)| q)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    if query.get("appid") != Some(&APPID) || query.get("secret") != Some(&APP_SECRET) {
        return text_response(
            200,
            json!({"errcode": 40125, "errmsg": "invalid appsecret"}).to_string(),
        );
    }
    let code = query.get("js_code").copied().unwrap_or("");
    let body = match code.split('-').collect::<Vec<_>>().as_slice() {
        ["u", user, _] => json!({"openid": openid(user), "session_key": SESSION_KEY}),
        ["busy"] => json!({"errcode": -1, "errmsg": "system error"}),
        _ => json!({"errcode": 40029, "errmsg": "invalid code"}),
    };
    text_response(200, body.to_string())
}

// ---- The app ------------------------------------------------------------------------------------

/// The live app against `wechat`, signing with `sign_type`.
pub async fn live_app(wechat: &FakeWechat, sign_type: SignType) -> TestApp {
    TestApp::builder(MANIFEST)
        .variable("wxpay_mode", "live")
        .variable("wx_appid", APPID)
        .variable("wx_app_secret", APP_SECRET)
        .variable("wxpay_mch_id", MCH_ID)
        .variable("wxpay_api_key", API_KEY)
        .variable("wxpay_sign_type", sign_type.as_str())
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

/// A test's world: the fake WeChat, the app, and every token it handed out (for the log check).
pub struct World {
    pub wechat: Arc<FakeWechat>,
    pub app: TestApp,
    tokens: Mutex<Vec<String>>,
    users: Mutex<Vec<String>>,
}

impl World {
    /// The live app (MD5) with the catalog `tea` (199 fen) and `cake` (2500 fen).
    pub async fn new() -> World {
        World::with_sign_type(SignType::Md5).await
    }

    pub async fn with_sign_type(sign_type: SignType) -> World {
        let wechat = FakeWechat::start().await;
        let app = live_app(&wechat, sign_type).await;
        let world = World {
            wechat,
            app,
            tokens: Mutex::new(Vec::new()),
            users: Mutex::new(Vec::new()),
        };
        world
            .put_product("tea", json!({"name": "乌龙茶 Oolong", "price": 199}))
            .await;
        world
            .put_product("cake", json!({"name": "Cake", "price": 2500}))
            .await;
        world
    }

    pub async fn put_product(&self, sku: &str, body: Value) {
        let res = self
            .send(req(
                "PUT",
                &format!("/api/admin/products/{sku}"),
                Some(ADMIN_TOKEN),
                body.to_string(),
            ))
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
    }

    pub async fn send(&self, req: http::Request<String>) -> TestResponse {
        self.app.request(req).await.expect("the app answers")
    }

    /// Logs `user` in; the session token.
    pub async fn login(&self, user: &str) -> String {
        let res = self
            .send(req(
                "POST",
                "/api/login",
                None,
                json!({"code": format!("u-{user}-1")}).to_string(),
            ))
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
        let body: Value = res.json().unwrap();
        assert!(body["expires_in"].as_u64().unwrap() > 0);
        assert!(!res.text().contains(SESSION_KEY) && !res.text().contains(&openid(user)));
        let token = body["token"].as_str().unwrap().to_owned();
        lock_vec(&self.tokens).push(token.clone());
        lock_vec(&self.users).push(user.to_owned());
        token
    }

    /// `POST /api/orders`; the answer.
    pub async fn try_create(&self, token: &str, body: Value) -> TestResponse {
        self.send(req("POST", "/api/orders", Some(token), body.to_string()))
            .await
    }

    /// Creates an order that must succeed; the 201 body.
    pub async fn create(&self, token: &str, sku: &str, quantity: u64) -> Value {
        let res = self
            .try_create(token, json!({"sku": sku, "quantity": quantity}))
            .await;
        assert_eq!(res.status, 201, "{}", res.text());
        res.json().unwrap()
    }

    /// Creates an order that must succeed; its order number.
    pub async fn create_order_no(&self, token: &str, sku: &str, quantity: u64) -> String {
        let created = self.create(token, sku, quantity).await;
        created["order"]["order_no"].as_str().unwrap().to_owned()
    }

    /// `GET /api/orders/{no}` with `token`.
    pub async fn get_order(&self, token: &str, order_no: &str) -> TestResponse {
        self.send(req(
            "GET",
            &format!("/api/orders/{order_no}"),
            Some(token),
            String::new(),
        ))
        .await
    }

    pub async fn pay_params(&self, token: &str, order_no: &str) -> TestResponse {
        self.send(req(
            "POST",
            &format!("/api/orders/{order_no}/pay-params"),
            Some(token),
            String::new(),
        ))
        .await
    }

    /// Posts a notification body; the answer.
    pub async fn notify(&self, body: impl Into<String>) -> TestResponse {
        self.send(req("POST", NOTIFY_PATH, None, body.into())).await
    }

    /// The admin view of an order (with events).
    pub async fn admin_order(&self, order_no: &str) -> Value {
        let res = self
            .send(req(
                "GET",
                &format!("/api/admin/orders/{order_no}"),
                Some(ADMIN_TOKEN),
                String::new(),
            ))
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
        res.json().unwrap()
    }

    /// Every key stored for the order (its base record and its facts) with its bytes, but the
    /// poll's throttle hint.
    pub fn stored(&self, order_no: &str) -> BTreeMap<String, Vec<u8>> {
        let base = format!("order:{order_no}");
        let snapshot = self.app.kv("default").snapshot();
        assert!(snapshot.contains_key(&base), "order {order_no} not stored");
        snapshot
            .into_iter()
            .filter(|(k, _)| {
                (k == &base || k.starts_with(&format!("{base}:"))) && !k.ends_with(":checked")
            })
            .collect()
    }

    /// The order's base record (as created, with its prepay).
    pub fn stored_json(&self, order_no: &str) -> Value {
        self.app
            .kv("default")
            .get_json(&format!("order:{order_no}"))
            .expect("order stored")
    }

    /// Nothing secret in anything the components printed: keys, secrets, tokens, session_key,
    /// full openids. Every test ends with this.
    pub fn assert_logs_clean(&self) {
        let mut extra: Vec<String> = lock_vec(&self.tokens).clone();
        extra.extend(lock_vec(&self.users).iter().map(|u| openid(u)));
        assert_no_secrets_logged(&self.app, &extra);
        assert_logs_are_json(&self.app);
        self.wechat.assert_all_requests_verified();
        let host_errors = self.app.host_errors();
        assert!(host_errors.is_empty(), "the host reported: {host_errors:?}");
    }
}

/// Nothing `app` printed contains the test's keys and secrets, the session_key, the test users'
/// full openids, or any of `extra` (tokens handed out).
pub fn assert_no_secrets_logged(app: &TestApp, extra: &[String]) {
    let logs = app.logs();
    let fixed = [
        API_KEY,
        APP_SECRET,
        SESSION_SECRET,
        ADMIN_TOKEN,
        SESSION_KEY,
    ];
    let openids = ["alice", "bob"].map(openid);
    let all = fixed
        .iter()
        .map(|s| s.to_string())
        .chain(openids)
        .chain(extra.iter().cloned());
    for secret in all {
        assert!(
            !logs.contains(&secret),
            "the logs contain a secret value or a full openid"
        );
    }
}

/// Every line the components printed is one JSON object (issue 6): a `request` line has the
/// route, method, status, outcome and latency; a `state_change` line the order number and the
/// new status; nothing else is printed (in live mode).
pub fn assert_logs_are_json(app: &TestApp) {
    for entry in app.log_entries() {
        let line = entry.text.trim_end();
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        match v["log"].as_str() {
            Some("request") => {
                for field in ["component", "method", "route", "outcome"] {
                    assert!(v[field].is_string(), "{field} missing: {line}");
                }
                assert!(v["status"].is_u64(), "status missing: {line}");
                assert!(v["latency_ms"].is_number(), "latency_ms missing: {line}");
            }
            Some("state_change") => {
                assert!(v["order_no"].is_string(), "{line}");
                assert!(v["to"].is_string(), "{line}");
            }
            // The store backend's text, kept out of the client's 503.
            Some("store_error") => assert!(v["error"].is_string(), "{line}"),
            _ => panic!("unexpected log line: {line}"),
        }
    }
}

fn lock_vec<T>(m: &Mutex<Vec<T>>) -> std::sync::MutexGuard<'_, Vec<T>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A request with an optional bearer token and a body.
pub fn req(method: &str, path: &str, bearer: Option<&str>, body: String) -> http::Request<String> {
    let mut b = http::Request::builder().method(method).uri(path);
    if !body.is_empty() {
        b = b.header("content-type", "application/json");
    }
    if let Some(token) = bearer {
        b = b.header("authorization", format!("Bearer {token}"));
    }
    b.body(body).unwrap()
}

/// Asserts an error answer: status, code, and a message mentioning `mentions`.
pub fn assert_error(res: &TestResponse, status: u16, code: &str, mentions: &str) {
    assert_eq!(res.status, status, "{}", res.text());
    let body: Value = res.json().unwrap();
    assert_eq!(body["error"]["code"], code, "{}", res.text());
    let message = body["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.to_lowercase().contains(&mentions.to_lowercase()),
        "message {message:?} should mention {mentions:?}"
    );
}

/// Whether a notify answer is WeChat's SUCCESS / FAIL XML.
pub fn is_success(res: &TestResponse) -> bool {
    assert_eq!(res.status, 200, "{}", res.text());
    res.text() == wxpay::v2::notify::SUCCESS_REPLY
}

pub fn is_fail(res: &TestResponse) -> bool {
    res.status == 200
        && res
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/xml"))
        && res
            .text()
            .contains("<return_code><![CDATA[FAIL]]></return_code>")
}

/// `status` events of an admin order view.
pub fn status_events(order: &Value) -> Vec<Value> {
    order["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "status")
        .cloned()
        .collect()
}

pub fn alerts(order: &Value) -> Vec<String> {
    order["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "alert")
        .map(|e| e["reason"].as_str().unwrap().to_owned())
        .collect()
}

/// The soak invariants of one order after a round (`context` names the round): at most one
/// PAID status event, and an order seen PAID (remembered in `seen_paid`) never shown otherwise.
/// Used by `soak.rs` and `redis.rs`, which include this file; the app tests do not.
#[allow(dead_code)]
pub fn assert_paid_once_and_never_reverted(
    order_no: &str,
    order: &wxpay::order::Order,
    seen_paid: &mut std::collections::BTreeSet<String>,
    context: &str,
) {
    let to_paid = order
        .events
        .iter()
        .filter(|e| {
            matches!(
                e,
                wxpay::order::Event::Status {
                    to: wxpay::order::Status::Paid,
                    ..
                }
            )
        })
        .count();
    assert!(
        to_paid <= 1,
        "{context}: {order_no} has {to_paid} PAID events"
    );
    if order.status == wxpay::order::Status::Paid {
        seen_paid.insert(order_no.to_owned());
    } else {
        assert!(
            !seen_paid.contains(order_no),
            "{context}: {order_no} was PAID and is now {}",
            order.status
        );
    }
}
