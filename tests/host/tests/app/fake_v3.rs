//! A fake WeChat Pay APIv3 on 127.0.0.1 for the app tests (`v3.rs`) and the real-Spin suite:
//! it checks our `Authorization` with the merchant's public key (and `Accept`, `User-Agent`),
//! signs its replies with the vectors' throw-away WeChat keys (`src/v3/testdata/`), lists
//! platform certificates encrypted with the APIv3 key, and serves jscode2session as the APIv2
//! fake does. It also builds WeChat's APIv3 notifications.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use spin_test_host::{FakeServer, RecordedRequest, text_response};
use wxpay::secret::Secret;
use wxpay::v3::sign::{MerchantKey, request_message, wechatpay_headers};
use wxpay::v3::verify::{PublicKey, SignatureHeaders};

use crate::support::{
    ADMIN_TOKEN, API_KEY, APP_SECRET, APPID, MCH_ID, NOTIFY_PATH, SESSION_SECRET, login_reply,
};

pub const APIV3_KEY: &str = "Zq4Wv8Ln3Rx7Tb1Yc5Hm9Jd2Fg6Ka0Pe";
pub const MERCHANT_KEY: &str = include_str!("../../../../src/v3/testdata/merchant_key.pem");
pub const MERCHANT_PUB: &str = include_str!("../../../../src/v3/testdata/merchant_pub.pem");
pub const MCH_SERIAL: &str = "1DDE55AD98ED71D6EDD4A4A16996DE7B47773A8C";
pub const WECHATPAY_KEY: &str = include_str!("../../../../src/v3/testdata/wechatpay_key.pem");
pub const WECHATPAY_PUB: &str = include_str!("../../../../src/v3/testdata/wechatpay_pub.pem");
pub const PUB_KEY_ID: &str = "PUB_KEY_ID_0112345678902025112700000000000001";
pub const PLATFORM_CERT: &str =
    include_str!("../../../../src/v3/testdata/wechatpay_platform_cert.pem");
pub const PLATFORM_SERIAL: &str = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1";
pub const ROTATED_CERT: &str =
    include_str!("../../../../src/v3/testdata/wechatpay_rotated_cert.pem");
pub const ROTATED_KEY: &str = include_str!("../../../../src/v3/testdata/wechatpay_rotated_key.pem");
pub const ROTATED_SERIAL: &str = "6E2A91C4D07B35F8A1C0E9D2B4F6A8C0E2D4F6A8";

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// How WeChat verifies itself to the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyMode {
    PublicKey,
    PlatformCertificates,
}

/// A trade as the fake WeChat knows it.
#[derive(Debug, Clone)]
pub struct Trade {
    pub total: u64,
    pub openid: String,
    pub state: &'static str,
    pub transaction_id: String,
}

#[derive(Default)]
pub struct State {
    pub trades: BTreeMap<String, Trade>,
    /// (serial, private key PEM) WeChat signs with.
    pub signer: Option<(String, String)>,
    /// What `GET /v3/certificates` lists.
    pub listed: Vec<&'static str>,
    /// Faults per route key: `jsapi`, `query`.
    pub faults: HashMap<&'static str, VecDeque<&'static str>>,
    /// Requests whose `Authorization` did not verify (we must never send one).
    pub bad_requests: Vec<String>,
    /// Refunds WeChat made, by `out_refund_no`: one per number, however often it is asked.
    pub refunds: BTreeMap<String, FakeRefund>,
    /// Refund requests received, by `out_refund_no` (retries included).
    pub refund_requests: BTreeMap<String, usize>,
}

/// A refund as the fake WeChat made it.
#[derive(Debug, Clone)]
pub struct FakeRefund {
    pub order_no: String,
    pub amount: u64,
    /// `PROCESSING`, `SUCCESS`, `CLOSED` or `ABNORMAL`.
    pub status: &'static str,
}

/// How long the `timeout` fault holds a reply: past the app's 4 s first-byte timeout.
pub const HELD_REPLY: std::time::Duration = std::time::Duration::from_secs(5);

pub struct FakeWechatV3 {
    pub server: FakeServer,
    pub state: Arc<Mutex<State>>,
}

pub fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl FakeWechatV3 {
    pub async fn start(mode: KeyMode) -> Arc<FakeWechatV3> {
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
            async move {
                let (response, hold) = answer_held(&state, req);
                if hold {
                    tokio::time::sleep(HELD_REPLY).await;
                }
                response
            }
        })
        .await
        .expect("fake WeChat starts");
        Arc::new(FakeWechatV3 { server, state })
    }

    pub fn sign(&self, timestamp: u64, body: &[u8]) -> SignatureHeaders {
        sign_with(&lock(&self.state), timestamp, body)
    }

    pub fn pay(&self, order_no: &str) -> Trade {
        let mut s = lock(&self.state);
        let trade = s.trades.get_mut(order_no).expect("a trade WeChat knows");
        trade.state = "SUCCESS";
        trade.clone()
    }

    pub fn requests_to(&self, path: &str) -> usize {
        self.server
            .requests()
            .iter()
            .filter(|r| r.path_and_query.split('?').next() == Some(path))
            .count()
    }

    pub fn assert_all_requests_verified(&self) {
        let bad = lock(&self.state).bad_requests.clone();
        assert!(bad.is_empty(), "requests with bad signatures: {bad:?}");
    }

    /// The payment notification of `no` as WeChat sends it (after `edit` of the transaction),
    /// stating `aad` as its AAD (`transaction` is the right one), signed `skew` seconds from
    /// now.
    pub fn notification(
        &self,
        no: &str,
        aad: &str,
        skew: i64,
        edit: impl FnOnce(&mut Value),
    ) -> (String, SignatureHeaders) {
        let trade = lock(&self.state).trades[no].clone();
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
        let headers = self.sign(now().saturating_add_signed(skew), body.as_bytes());
        (body, headers)
    }
}

impl FakeWechatV3 {
    /// WeChat's refund notification (`REFUND.{status}`) of the refund `refund_no` as it was
    /// made, after `edit` of the refund JSON, signed now.
    pub fn refund_notification(
        &self,
        refund_no: &str,
        status: &str,
        edit: impl FnOnce(&mut Value),
    ) -> (String, SignatureHeaders) {
        let (refund, total) = {
            let s = lock(&self.state);
            let refund = s.refunds[refund_no].clone();
            let total = s.trades[&refund.order_no].total;
            (refund, total)
        };
        let mut json = refund_json(
            refund_no,
            &FakeRefund {
                status: "SUCCESS",
                ..refund
            },
        );
        // A notification names the status `refund_status` (a reply `status`).
        json.as_object_mut().unwrap().remove("status");
        json["refund_status"] = status.into();
        json["amount"]["total"] = total.into();
        json["mchid"] = MCH_ID.into();
        edit(&mut json);
        let body = wxpay::v3::refund::refund_envelope(
            &Secret::new(APIV3_KEY),
            "abcdef012345",
            &format!("EV-{refund_no}"),
            "2026-12-01T20:10:01+08:00",
            &format!("REFUND.{status}"),
            &json.to_string(),
        )
        .unwrap();
        let headers = self.sign(now(), body.as_bytes());
        (body, headers)
    }

    /// How often `refund_no` was asked for.
    pub fn refund_requests(&self, refund_no: &str) -> usize {
        lock(&self.state)
            .refund_requests
            .get(refund_no)
            .copied()
            .unwrap_or(0)
    }
}

/// A refund as APIv3 describes it (a reply, a query answer, a notification's plaintext).
pub fn refund_json(refund_no: &str, r: &FakeRefund) -> Value {
    let mut v = json!({
        "refund_id": format!("5000{refund_no}"), "out_refund_no": refund_no,
        "out_trade_no": r.order_no, "transaction_id": format!("4200{}", r.order_no),
        "status": r.status,
        "amount": {"refund": r.amount, "total": 0, "payer_total": 0, "payer_refund": r.amount},
    });
    if r.status == "SUCCESS" {
        v["success_time"] = "2026-12-01T20:10:00+08:00".into();
    }
    v
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

pub fn transaction_json(order_no: &str, t: &Trade) -> Value {
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

/// [`answer`], and whether to hold the reply back ([`HELD_REPLY`]: the `timeout` fault of a
/// refund, which WeChat makes all the same).
fn answer_held(state: &Mutex<State>, req: RecordedRequest) -> (http::Response<bytes::Bytes>, bool) {
    if req.path_and_query == wxpay::v3::refund::REFUNDS_PATH {
        let mut s = lock(state);
        if s.faults.get("refund").and_then(|f| f.front()) == Some(&"timeout") {
            s.faults.get_mut("refund").unwrap().pop_front();
            drop(s);
            return (answer(state, req), true);
        }
    }
    (answer(state, req), false)
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
    if path == wxpay::v3::refund::REFUNDS_PATH {
        return make_refund(&mut s, &req);
    }
    if let Some(refund_no) = path.strip_prefix(&format!("{}/", wxpay::v3::refund::REFUNDS_PATH)) {
        return match s.refunds.get(refund_no).cloned() {
            Some(r) => {
                let mut json = refund_json(refund_no, &r);
                json["amount"]["total"] = s.trades[&r.order_no].total.into();
                signed_response(&s, 200, json.to_string())
            }
            None => signed_response(&s, 404, json!({"code": "RESOURCE_NOT_EXISTS"}).to_string()),
        };
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

/// `POST /v3/refund/domestic/refunds`: counted, made once per number within the paid total
/// (a `lost_reply` fault makes it, then answers 500 as if the reply were lost).
fn make_refund(s: &mut State, req: &RecordedRequest) -> http::Response<bytes::Bytes> {
    let body: Value = serde_json::from_slice(&req.body).unwrap();
    let refund_no = body["out_refund_no"].as_str().unwrap().to_owned();
    let no = body["out_trade_no"].as_str().unwrap().to_owned();
    let amount = body["amount"]["refund"].as_u64().unwrap();
    *s.refund_requests.entry(refund_no.clone()).or_default() += 1;
    let Some(trade) = s.trades.get(&no).cloned() else {
        return signed_response(s, 404, json!({"code": "RESOURCE_NOT_EXISTS"}).to_string());
    };
    assert_eq!(body["amount"]["total"], trade.total);
    assert_eq!(body["amount"]["currency"], "CNY");
    assert_eq!(
        body["notify_url"],
        "https://shop.example.com/api/wxpay/refund-notify"
    );
    if trade.state != "SUCCESS" {
        return signed_response(s, 400, json!({"code": "INVALID_REQUEST"}).to_string());
    }
    if let Some(made) = s.refunds.get(&refund_no).cloned() {
        if made.amount != amount {
            return signed_response(s, 400, json!({"code": "INVALID_REQUEST"}).to_string());
        }
    } else {
        let held: u64 = s
            .refunds
            .values()
            .filter(|r| r.order_no == no && r.status != "CLOSED")
            .map(|r| r.amount)
            .sum();
        if held + amount > trade.total {
            return signed_response(s, 400, json!({"code": "INVALID_REQUEST"}).to_string());
        }
        let refund = FakeRefund {
            order_no: no.clone(),
            amount,
            status: "PROCESSING",
        };
        s.refunds.insert(refund_no.clone(), refund);
    }
    if s.faults.get("refund").and_then(|f| f.front()) == Some(&"lost_reply") {
        s.faults.get_mut("refund").unwrap().pop_front();
        return signed_response(s, 500, json!({"code": "SYSTEM_ERROR"}).to_string());
    }
    let mut json = refund_json(&refund_no, &s.refunds[&refund_no]);
    json["amount"]["total"] = trade.total.into();
    signed_response(s, 200, json.to_string())
}

/// The live app's variables for APIv3 against `wechat`. The private key is passed
/// `\n`-escaped, as an environment variable carries it; the APIv2 key stays set (APIv2
/// notifications still settle).
pub fn live_v3_variables(wechat: &FakeWechatV3, mode: KeyMode) -> Vec<(&'static str, String)> {
    let mut variables: Vec<(&'static str, String)> = vec![
        ("wxpay_mode", "live".into()),
        ("wxpay_api_version", "v3".into()),
        ("wx_appid", APPID.into()),
        ("wx_app_secret", APP_SECRET.into()),
        ("wxpay_mch_id", MCH_ID.into()),
        ("wxpay_api_key", API_KEY.into()),
        ("wxpay_apiv3_key", APIV3_KEY.into()),
        (
            "wxpay_mch_private_key",
            MERCHANT_KEY.trim().replace('\n', "\\n"),
        ),
        ("wxpay_mch_cert_serial", MCH_SERIAL.into()),
        (
            "wxpay_notify_url",
            "https://shop.example.com/api/wxpay/notify".into(),
        ),
        ("wxpay_mch_api", wechat.server.origin()),
        ("wx_api", wechat.server.origin()),
        ("session_secret", SESSION_SECRET.into()),
        ("admin_token", ADMIN_TOKEN.into()),
    ];
    if mode == KeyMode::PublicKey {
        variables.push((
            "wxpay_public_key",
            WECHATPAY_PUB.trim().replace('\n', "\\n"),
        ));
        variables.push(("wxpay_public_key_id", PUB_KEY_ID.into()));
    }
    variables
}

/// `POST /api/wxpay/notify` as WeChat sends an APIv3 notification.
pub fn notify_request(body: &str, headers: &SignatureHeaders) -> http::Request<String> {
    let mut builder = http::Request::builder()
        .method("POST")
        .uri(NOTIFY_PATH)
        .header("content-type", "application/json");
    for (name, value) in headers.to_headers() {
        builder = builder.header(name, value);
    }
    builder.body(body.to_owned()).unwrap()
}
