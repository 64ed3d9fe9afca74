//! The simulator natively: its checks and answers, and the real flows (login, create order,
//! notify, get order) running against it with an in-memory store.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use super::faults::TIMEOUT_DELAY;
use super::link::{NotifyLink, Outbound, SimulatorLink};
use super::login::openid_for_code;
use super::user::RETRY_DELAYS;
use super::*;
use crate::config::{
    LoginConfig, MerchantConfig, SIM_API_KEY, SIM_APPID, SIM_MCH_ID, SIM_NOTIFY_URL, SessionConfig,
};
use crate::flows::OutboundRequest;
use crate::flows::fakes::{CountingNonce, FakeClock, MemStore, block_on};
use crate::flows::{
    HttpReply, LoginFlowConfig, Request, ShopConfig, TransportError, login, orders,
};
use crate::money::Fen;
use crate::order::{Order, Product, Status, product_key};
use crate::secret::Secret;
use crate::v2::api::{self, ErrCode, ReplyError, TradeState as ApiTradeState, UnifiedOrder};
use crate::v2::sign::{SignType, sign_in_place};
use crate::v2::xml;

mod refunds;
mod v3;

const NOW: u64 = 1_714_550_400; // 2024-05-01T08:00:00Z

/// Records the pauses the simulator asked for.
#[derive(Default)]
struct RecordingSleep(RefCell<Vec<Duration>>);

impl Sleep for RecordingSleep {
    async fn sleep(&self, duration: Duration) {
        self.0.borrow_mut().push(duration);
    }
}

/// The notify route as the simulator's transport: the components' [`NotifyLink`] (the real
/// notify flow on the shared store), or a scripted FAIL the first `fail_first` times, or no
/// answer at all.
struct NotifyRoute<'a> {
    link: NotifyLink<&'a MemStore, &'a FakeClock>,
    fail_first: Cell<usize>,
    no_answer: Cell<bool>,
    received: RefCell<Vec<(String, String)>>,
}

impl Transport for NotifyRoute<'_> {
    async fn post_xml(&self, _url: &str, _body: String) -> Result<HttpReply, TransportError> {
        unreachable!("notifications are delivered with send")
    }

    async fn get(&self, _url: &str) -> Result<HttpReply, TransportError> {
        Err(TransportError::Denied)
    }

    async fn send(&self, request: &OutboundRequest) -> Result<HttpReply, TransportError> {
        self.received.borrow_mut().push((
            request.url.clone(),
            String::from_utf8(request.body.clone()).unwrap(),
        ));
        if self.no_answer.get() {
            return Err(TransportError::Timeout);
        }
        if self.fail_first.get() > 0 {
            self.fail_first.set(self.fail_first.get() - 1);
            let fail = crate::v2::notify::fail_reply("busy").into_bytes();
            return Ok(HttpReply::new(200, fail));
        }
        self.link.send(request).await
    }
}

type SimEnv<'a> = Env<&'a MemStore, NotifyRoute<'a>, &'a FakeClock, &'a CountingNonce, SimConfig>;

/// The app's flows reach the simulator in-process, as the components do in simulator mode.
type ToSim<'a> = SimulatorLink<&'a MemStore, &'a FakeClock, &'a CountingNonce, &'a RecordingSleep>;

/// The components' first-byte timeout (`wxpay::spin::FIRST_BYTE_TIMEOUT`).
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(4);

struct World {
    store: MemStore,
    clock: FakeClock,
    nonce: CountingNonce,
    sleep: RecordingSleep,
    sign_type: SignType,
}

impl World {
    fn new(sign_type: SignType) -> Self {
        Self {
            store: MemStore::default(),
            clock: FakeClock::new(NOW),
            nonce: CountingNonce::default(),
            sleep: RecordingSleep::default(),
            sign_type,
        }
    }

    fn merchant(&self) -> MerchantConfig {
        MerchantConfig::simulator(self.sign_type)
    }

    fn sim_env(&self, mode: Mode) -> SimEnv<'_> {
        Env::new(
            &self.store,
            NotifyRoute {
                link: NotifyLink::new(&self.store, &self.clock, Some(self.merchant())),
                fail_first: Cell::new(0),
                no_answer: Cell::new(false),
                received: RefCell::new(Vec::new()),
            },
            &self.clock,
            &self.nonce,
            SimConfig {
                mode: Some(mode),
                merchant: Some(self.merchant()),
            },
        )
    }

    fn to_sim(&self) -> ToSim<'_> {
        SimulatorLink::new(
            &self.store,
            &self.clock,
            &self.nonce,
            &self.sleep,
            FIRST_BYTE_TIMEOUT,
        )
    }

    fn call(
        &self,
        env: &SimEnv<'_>,
        method: &str,
        path: &str,
        query: &str,
        body: &[u8],
    ) -> Response {
        block_on(handle(
            env,
            &self.sleep,
            SimRequest {
                method,
                path,
                query,
                authorization: None,
                body,
            },
        ))
    }

    fn post(&self, env: &SimEnv<'_>, path: &str, body: impl AsRef<[u8]>) -> Response {
        self.call(env, "POST", path, "", body.as_ref())
    }

    /// A unified order as the app's core signs it.
    fn unified_order_xml(&self, out_trade_no: &str, total: u64, attach: Option<&str>) -> String {
        let expire = crate::time::beijing_compact(NOW + 7200);
        api::unified_order_request(
            &self.merchant(),
            &UnifiedOrder {
                out_trade_no,
                body: "Demo item",
                total_fee: Fen(total),
                spbill_create_ip: "127.0.0.1",
                openid: "oSimUser",
                time_expire: Some(&expire),
                attach,
            },
            &crate::v2::nonce_str(&self.nonce_bytes()),
        )
        .unwrap()
        .body
    }

    fn nonce_bytes(&self) -> [u8; 16] {
        crate::flows::Nonce::random16(&self.nonce)
    }

    /// `xml` with `edit` applied, re-signed with the simulator key (or `key`).
    fn resigned(&self, xml_text: &str, key: &str, edit: impl FnOnce(&mut Params)) -> String {
        let mut p = xml::read(xml_text.as_bytes()).unwrap();
        edit(&mut p);
        p.remove("sign_type");
        sign_in_place(&mut p, &Secret::new(key), self.sign_type);
        xml::write(&p)
    }
}

/// A change to a request's fields.
type Edit = Box<dyn FnOnce(&mut Params)>;

fn fields(r: &Response) -> Params {
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type, "text/xml");
    xml::read(&r.body).unwrap()
}

/// `return_code` FAIL: the return_msg.
fn call_failed(r: &Response) -> String {
    let p = fields(r);
    assert_eq!(p["return_code"], "FAIL", "{p:?}");
    assert!(!p.contains_key("sign"));
    p["return_msg"].clone()
}

fn sim_merchant(sign_type: SignType) -> MerchantConfig {
    MerchantConfig::simulator(sign_type)
}

fn prepay_of(w: &World, r: &Response) -> String {
    api::parse_unified_order_reply(&w.merchant(), &r.body)
        .expect("a valid unified order reply")
        .prepay_id
}

fn refused_code(w: &World, r: &Response) -> ErrCode {
    match api::parse_close_order_reply(&w.merchant(), &r.body) {
        Err(ReplyError::Refused { err_code, .. }) => err_code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

// ---- jscode2session -----------------------------------------------------------------------------

fn login_query(code: &str) -> String {
    format!(
        "appid={SIM_APPID}&secret={}&js_code={code}&grant_type=authorization_code",
        crate::config::SIM_APP_SECRET
    )
}

#[test]
fn jscode2session_maps_codes_to_stable_openids_once() {
    let w = World::new(SignType::Md5);
    let env = w.sim_env(Mode::Simulator);
    let get = |q: &str| -> Value {
        let r = w.call(&env, "GET", "/_sim/sns/jscode2session", q, b"");
        assert_eq!(r.status, 200);
        r.json_body().unwrap()
    };
    let first = get(&login_query("any-code"));
    let openid = first["openid"].as_str().unwrap();
    assert_eq!(openid, openid_for_code("any-code"));
    assert_eq!(openid.len(), 28);
    assert!(openid.starts_with("oSim"));
    assert!(first["session_key"].is_string());
    assert_ne!(openid_for_code("any-code"), openid_for_code("other-code"));
    // Used twice: 40163.
    assert_eq!(get(&login_query("any-code"))["errcode"], 40163);
    // Invalid or empty: 40029.
    assert_eq!(get(&login_query("invalid"))["errcode"], 40029);
    assert_eq!(get(&login_query(""))["errcode"], 40029);
    // Wrong credentials.
    assert_eq!(
        get(&login_query("c").replace(SIM_APPID, "wx0000000000000000"))["errcode"],
        40013
    );
    assert_eq!(
        get(&login_query("c").replace("simulatorappsecret", "x"))["errcode"],
        40125
    );
    assert_eq!(
        get(&login_query("c").replace("authorization_code", "x"))["errcode"],
        40002
    );
    // A code's 5 minutes later the same text is a new code (same user).
    w.clock.advance(super::login::CODE_TTL_SECS);
    assert_eq!(get(&login_query("any-code"))["openid"], openid);
}

#[test]
fn login_flow_through_the_simulator() {
    let w = World::new(SignType::Md5);
    let to_sim = w.to_sim();
    let config = LoginFlowConfig::load(&BTreeMap::<String, String>::new()).unwrap();
    let env = Env::new((), &to_sim, &w.clock, (), config);
    let ok = block_on(login::login(
        &env,
        &Request::new(json!({"code": "any-code"}).to_string()),
    ));
    assert_eq!(ok.status, 200, "{ok:?}");
    let again = block_on(login::login(
        &env,
        &Request::new(json!({"code": "any-code"}).to_string()),
    ));
    assert_eq!(
        (again.status, again.error_code().unwrap().as_str()),
        (401, "invalid_code")
    );
    let bad = block_on(login::login(
        &env,
        &Request::new(json!({"code": "invalid"}).to_string()),
    ));
    assert_eq!(
        (bad.status, bad.error_code().unwrap().as_str()),
        (401, "invalid_code")
    );
}

// ---- unifiedorder checks ------------------------------------------------------------------------

#[test]
fn unified_order_success_is_signed_and_idempotent() {
    for sign_type in [SignType::Md5, SignType::HmacSha256] {
        let w = World::new(sign_type);
        let env = w.sim_env(Mode::Simulator);
        let first = w.post(
            &env,
            "/_sim/pay/unifiedorder",
            w.unified_order_xml("order000001", 1, None),
        );
        let prepay = prepay_of(&w, &first);
        assert!(
            prepay.starts_with("wx20240501160000") && prepay.len() == 36,
            "{prepay}"
        );
        // A retry (same fields, new nonce) gets the same prepay id.
        let again = w.post(
            &env,
            "/_sim/pay/unifiedorder",
            w.unified_order_xml("order000001", 1, None),
        );
        assert_eq!(prepay_of(&w, &again), prepay);
        // The same number with other parameters: OUT_TRADE_NO_USED.
        let other = w.post(
            &env,
            "/_sim/pay/unifiedorder",
            w.unified_order_xml("order000001", 2, None),
        );
        assert_eq!(refused_code(&w, &other), ErrCode::OutTradeNoUsed);
        let stored: SimOrder =
            serde_json::from_slice(&w.store.raw("sim:order:order000001").unwrap()).unwrap();
        assert_eq!(stored.sign_type, sign_type.as_str());
        assert_eq!(w.store.raw(&prepay_key(&prepay)).unwrap(), b"order000001");
    }
}

#[test]
fn unified_order_signature_checks() {
    let w = World::new(SignType::Md5);
    let env = w.sim_env(Mode::Simulator);
    let good = w.unified_order_xml("order000002", 1, None);
    // Signed with another key.
    let wrong_key = w.resigned(&good, "0123456789abcdef0123456789abcdef", |_| {});
    assert!(call_failed(&w.post(&env, "/_sim/pay/unifiedorder", wrong_key)).contains("SIGNERROR"));
    // A field changed after signing.
    let tampered = good.replace("<total_fee><![CDATA[1]]>", "<total_fee><![CDATA[2]]>");
    assert_ne!(tampered, good);
    assert!(call_failed(&w.post(&env, "/_sim/pay/unifiedorder", tampered)).contains("签名错误"));
    // Declares HMAC-SHA256 but signed with MD5.
    let mut p = xml::read(good.as_bytes()).unwrap();
    p.insert("sign_type".into(), "HMAC-SHA256".into());
    let mismatch = xml::write(&p);
    assert!(call_failed(&w.post(&env, "/_sim/pay/unifiedorder", mismatch)).contains("SIGNERROR"));
    // An unknown sign_type.
    let mut p = xml::read(good.as_bytes()).unwrap();
    p.insert("sign_type".into(), "SHA1".into());
    assert!(
        call_failed(&w.post(&env, "/_sim/pay/unifiedorder", xml::write(&p))).contains("sign_type")
    );
    // Nothing was stored.
    assert!(w.store.raw("sim:order:order000002").is_none());
}

#[test]
fn unified_order_format_refusals() {
    let w = World::new(SignType::Md5);
    let env = w.sim_env(Mode::Simulator);
    let good = w.unified_order_xml("order000003", 1, None);
    let set = |k: &'static str, v: String| {
        move |p: &mut Params| {
            p.insert(k.into(), v);
        }
    };
    let remove = |k: &'static str| {
        move |p: &mut Params| {
            p.remove(k);
        }
    };
    let cases: Vec<(Edit, &str)> = vec![
        (Box::new(remove("body")), "缺少参数body (LACK_PARAMS"),
        (Box::new(remove("notify_url")), "缺少参数notify_url"),
        (
            Box::new(remove("spbill_create_ip")),
            "缺少参数spbill_create_ip",
        ),
        (Box::new(remove("openid")), "JSAPI支付必须传openid"),
        (
            Box::new(set("out_trade_no", "abc".into())),
            "out_trade_no参数格式错误",
        ),
        (
            Box::new(set("out_trade_no", "order#000003".into())),
            "out_trade_no参数格式错误",
        ),
        (
            Box::new(set("out_trade_no", "o".repeat(33))),
            "out_trade_no参数格式错误",
        ),
        (Box::new(set("body", "茶".repeat(43))), "body参数长度有误"),
        (
            Box::new(set("attach", "a".repeat(128))),
            "attach参数长度有误",
        ),
        (
            Box::new(set("total_fee", "0".into())),
            "total_fee参数格式错误",
        ),
        (
            Box::new(set("total_fee", "-1".into())),
            "total_fee参数格式错误",
        ),
        (
            Box::new(set("total_fee", "1.5".into())),
            "total_fee参数格式错误",
        ),
        (
            Box::new(set("notify_url", "/api/wxpay/notify".into())),
            "notify_url参数格式错误",
        ),
        (
            Box::new(set("notify_url", format!("{SIM_NOTIFY_URL}?a=b"))),
            "notify_url参数格式错误",
        ),
        (
            Box::new(set("trade_type", "NATIVE".into())),
            "trade_type参数格式错误",
        ),
        (
            Box::new(set("time_expire", "2024-05-01".into())),
            "time_expire参数格式错误",
        ),
        (
            Box::new(set("time_expire", crate::time::beijing_compact(NOW + 60))),
            "INVALID_REQUEST",
        ),
        (
            Box::new(set("nonce_str", "n".repeat(33))),
            "nonce_str参数格式错误",
        ),
        (
            Box::new(set("mch_id", "1900000109".into())),
            "MCHID_NOT_EXIST",
        ),
    ];
    for (edit, expected) in cases {
        let body = w.resigned(&good, SIM_API_KEY, edit);
        let msg = call_failed(&w.post(&env, "/_sim/pay/unifiedorder", body));
        assert!(msg.contains(expected), "{msg:?} lacks {expected:?}");
    }
    // The sign itself missing.
    let mut p = xml::read(good.as_bytes()).unwrap();
    p.remove("sign");
    assert!(
        call_failed(&w.post(&env, "/_sim/pay/unifiedorder", xml::write(&p)))
            .contains("缺少参数sign")
    );
    // Envelope refusals.
    assert!(call_failed(&w.post(&env, "/_sim/pay/unifiedorder", "")).contains("POST_DATA_EMPTY"));
    assert!(
        call_failed(&w.post(&env, "/_sim/pay/unifiedorder", "not xml"))
            .contains("XML_FORMAT_ERROR")
    );
    let doctype = format!("<!DOCTYPE xml [<!ENTITY x \"y\">]>{good}");
    assert!(
        call_failed(&w.post(&env, "/_sim/pay/unifiedorder", doctype)).contains("XML_FORMAT_ERROR")
    );
    assert!(
        call_failed(&w.post(&env, "/_sim/pay/unifiedorder", [0xff, 0xfe])).contains("NOT_UTF8")
    );
    let get = w.call(&env, "GET", "/_sim/pay/unifiedorder", "", b"");
    assert!(call_failed(&get).contains("REQUIRE_POST_METHOD"));
    // Another app of the same merchant: signed, result_code FAIL.
    let other_app = w.resigned(
        &good,
        SIM_API_KEY,
        set("appid", "wx0000000000000000".into()),
    );
    let r = w.post(&env, "/_sim/pay/unifiedorder", other_app);
    let p = fields(&r);
    assert_eq!(
        (p["return_code"].as_str(), p["result_code"].as_str()),
        ("SUCCESS", "FAIL")
    );
    assert_eq!(p["err_code"], "APPID_MCHID_NOT_MATCH");
    assert!(crate::v2::sign::verify(&p, &Secret::new(SIM_API_KEY)).is_ok());
    assert!(w.store.raw("sim:order:order000003").is_none());
}

// ---- orderquery / closeorder --------------------------------------------------------------------

fn query_xml(w: &World, no: &str) -> String {
    api::order_query_request(&w.merchant(), no, "q1")
        .unwrap()
        .body
}

fn close_xml(w: &World, no: &str) -> String {
    api::close_order_request(&w.merchant(), no, "c1")
        .unwrap()
        .body
}

fn pay(w: &World, env: &SimEnv<'_>, prepay: &str, result: &str) -> Response {
    w.post(
        env,
        "/_sim/pay",
        json!({"prepay_id": prepay, "result": result}).to_string(),
    )
}

#[test]
fn orderquery_and_closeorder_states() {
    let w = World::new(SignType::Md5);
    let env = w.sim_env(Mode::Simulator);
    let m = w.merchant();
    let r = w.post(&env, "/_sim/pay/orderquery", query_xml(&w, "order000404"));
    assert_eq!(refused_code(&w, &r), ErrCode::OrderNotExist);
    let r = w.post(&env, "/_sim/pay/closeorder", close_xml(&w, "order000404"));
    assert_eq!(refused_code(&w, &r), ErrCode::OrderNotExist);

    let prepay = prepay_of(
        &w,
        &w.post(
            &env,
            "/_sim/pay/unifiedorder",
            w.unified_order_xml("order000004", 5, Some("gift")),
        ),
    );
    let q = api::parse_order_query_reply(
        &m,
        &w.post(&env, "/_sim/pay/orderquery", query_xml(&w, "order000004"))
            .body,
    )
    .unwrap();
    assert_eq!((q.trade_state, q.paid), (ApiTradeState::NotPay, None));

    let paid: Value = pay(&w, &env, &prepay, "SUCCESS").json_body().unwrap();
    let q = api::parse_order_query_reply(
        &m,
        &w.post(&env, "/_sim/pay/orderquery", query_xml(&w, "order000004"))
            .body,
    )
    .unwrap();
    assert_eq!(q.trade_state, ApiTradeState::Success);
    let trade = q.paid.unwrap();
    assert_eq!(trade.total_fee, Fen(5));
    assert_eq!(
        trade.transaction_id,
        paid["transaction_id"].as_str().unwrap()
    );
    // By transaction_id too.
    let mut p = Params::new();
    p.insert("transaction_id".into(), trade.transaction_id.clone());
    p.insert("appid".into(), SIM_APPID.into());
    p.insert("mch_id".into(), SIM_MCH_ID.into());
    p.insert("nonce_str".into(), "n".into());
    sign_in_place(&mut p, &Secret::new(SIM_API_KEY), SignType::Md5);
    let q = api::parse_order_query_reply(
        &m,
        &w.post(&env, "/_sim/pay/orderquery", xml::write(&p)).body,
    )
    .unwrap();
    assert_eq!(q.out_trade_no, "order000004");
    // Paid: closing and re-ordering say ORDERPAID.
    let r = w.post(&env, "/_sim/pay/closeorder", close_xml(&w, "order000004"));
    assert_eq!(refused_code(&w, &r), ErrCode::OrderPaid);
    let r = w.post(
        &env,
        "/_sim/pay/unifiedorder",
        w.unified_order_xml("order000004", 5, Some("gift")),
    );
    assert_eq!(refused_code(&w, &r), ErrCode::OrderPaid);

    // Close an unpaid order: closed, then ORDERCLOSED everywhere.
    let prepay5 = prepay_of(
        &w,
        &w.post(
            &env,
            "/_sim/pay/unifiedorder",
            w.unified_order_xml("order000005", 1, None),
        ),
    );
    let r = w.post(&env, "/_sim/pay/closeorder", close_xml(&w, "order000005"));
    api::parse_close_order_reply(&m, &r.body).unwrap();
    let q = api::parse_order_query_reply(
        &m,
        &w.post(&env, "/_sim/pay/orderquery", query_xml(&w, "order000005"))
            .body,
    )
    .unwrap();
    assert_eq!(q.trade_state, ApiTradeState::Closed);
    let r = w.post(&env, "/_sim/pay/closeorder", close_xml(&w, "order000005"));
    assert_eq!(refused_code(&w, &r), ErrCode::OrderClosed);
    let r = w.post(
        &env,
        "/_sim/pay/unifiedorder",
        w.unified_order_xml("order000005", 1, None),
    );
    assert_eq!(refused_code(&w, &r), ErrCode::OrderClosed);
    let r = pay(&w, &env, &prepay5, "SUCCESS");
    assert_eq!(
        (r.status, r.error_code().unwrap().as_str()),
        (409, "order_closed")
    );
}

// ---- /_sim/pay and the notification -------------------------------------------------------------

#[test]
fn notification_carries_every_field_and_verifies() {
    for sign_type in [SignType::Md5, SignType::HmacSha256] {
        let w = World::new(sign_type);
        let env = w.sim_env(Mode::Simulator);
        let prepay = prepay_of(
            &w,
            &w.post(
                &env,
                "/_sim/pay/unifiedorder",
                w.unified_order_xml("order000006", 199, Some("gift")),
            ),
        );
        // The package form of the prepay id is accepted too.
        let r = w.post(
            &env,
            "/_sim/pay",
            json!({"package": format!("prepay_id={prepay}")}).to_string(),
        );
        assert_eq!(r.status, 200, "{r:?}");
        let paid = r.json_body().unwrap();
        let received = env.transport.received.borrow().clone();
        // The app never stored this order, so its notify route answers FAIL: every re-delivery
        // carries the very same notification.
        assert_eq!(received.len(), 1 + RETRY_DELAYS.len());
        assert!(received.iter().all(|r| r == &received[0]));
        assert_eq!(received[0].0, SIM_NOTIFY_URL);
        let n = crate::v2::notify::parse(received[0].1.as_bytes(), &sim_merchant(sign_type))
            .expect("the notification verifies with the merchant key");
        let p = &n.params;
        for (k, v) in [
            ("return_code", "SUCCESS"),
            ("result_code", "SUCCESS"),
            ("appid", SIM_APPID),
            ("mch_id", SIM_MCH_ID),
            ("openid", "oSimUser"),
            ("trade_type", "JSAPI"),
            ("total_fee", "199"),
            ("cash_fee", "199"),
            ("fee_type", "CNY"),
            ("bank_type", "OTHERS"),
            ("out_trade_no", "order000006"),
            ("attach", "gift"),
            ("time_end", "20240501160000"),
        ] {
            assert_eq!(p.get(k).map(String::as_str), Some(v), "{k}");
        }
        assert_eq!(
            p["transaction_id"],
            paid["transaction_id"].as_str().unwrap()
        );
        assert_eq!(p["transaction_id"].len(), 28);
        assert!(p["transaction_id"].starts_with("4200020240501"));
        assert!(!p["nonce_str"].is_empty() && p["nonce_str"].len() <= 32);
        assert_eq!(
            p.get("sign_type").map(String::as_str),
            (sign_type == SignType::HmacSha256).then_some("HMAC-SHA256")
        );
        assert_eq!(paid["notified"], false);
        assert_eq!(paid["deliveries"].as_array().unwrap().len(), 4);
        assert_eq!(*w.sleep.0.borrow(), RETRY_DELAYS.to_vec());
        // Paying again: 409.
        let r = pay(&w, &env, &prepay, "SUCCESS");
        assert_eq!(
            (r.status, r.error_code().unwrap().as_str()),
            (409, "order_paid")
        );
    }
}

#[test]
fn failed_payment_sends_nothing_and_can_be_retried() {
    let w = World::new(SignType::Md5);
    let env = w.sim_env(Mode::Simulator);
    let prepay = prepay_of(
        &w,
        &w.post(
            &env,
            "/_sim/pay/unifiedorder",
            w.unified_order_xml("order000007", 1, None),
        ),
    );
    let r: Value = pay(&w, &env, &prepay, "FAIL").json_body().unwrap();
    assert_eq!(
        (
            r["result"].as_str(),
            r["trade_state"].as_str(),
            r["notified"].as_bool()
        ),
        (Some("FAIL"), Some("NOTPAY"), Some(false))
    );
    assert!(env.transport.received.borrow().is_empty());
    let r: Value = pay(&w, &env, &prepay, "SUCCESS").json_body().unwrap();
    assert_eq!(r["trade_state"], "SUCCESS");
    // Bad inputs.
    let r = pay(&w, &env, "wx000", "SUCCESS");
    assert_eq!(
        (r.status, r.error_code().unwrap().as_str()),
        (404, "unknown_prepay_id")
    );
    let r = pay(&w, &env, &prepay, "MAYBE");
    assert_eq!(r.status, 400);
    let r = w.post(&env, "/_sim/pay", "{}");
    assert_eq!(r.status, 400);
}

#[test]
fn expired_prepay_cannot_be_paid() {
    let w = World::new(SignType::Md5);
    let env = w.sim_env(Mode::Simulator);
    let prepay = prepay_of(
        &w,
        &w.post(
            &env,
            "/_sim/pay/unifiedorder",
            w.unified_order_xml("order000008", 1, None),
        ),
    );
    w.clock.advance(7201);
    let r = pay(&w, &env, &prepay, "SUCCESS");
    assert_eq!(
        (r.status, r.error_code().unwrap().as_str()),
        (410, "prepay_expired")
    );
}

#[test]
fn redelivers_on_fail_and_on_no_answer() {
    let w = World::new(SignType::Md5);
    let env = w.sim_env(Mode::Simulator);
    // The notify route knows no such order (the app never stored it): FAIL every time... so
    // script FAIL twice, then let the real route answer for a stored order.
    let prepay = prepay_of(
        &w,
        &w.post(
            &env,
            "/_sim/pay/unifiedorder",
            w.unified_order_xml("order000009", 1, None),
        ),
    );
    env.transport.fail_first.set(2);
    let r: Value = pay(&w, &env, &prepay, "SUCCESS").json_body().unwrap();
    let deliveries = r["deliveries"].as_array().unwrap();
    // Two FAILs from the script, then the real route: FAIL again (unknown order) → 4 attempts.
    assert_eq!(deliveries.len(), 4, "{r}");
    assert_eq!(r["notified"], false);
    assert!(
        deliveries
            .iter()
            .all(|d| d["status"] == 200 && d["acknowledged"] == false)
    );
    assert_eq!(
        deliveries
            .iter()
            .map(|d| d["round"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert_eq!(*w.sleep.0.borrow(), RETRY_DELAYS.to_vec());
    assert!(RETRY_DELAYS.iter().sum::<Duration>() <= Duration::from_secs(1));

    let w = World::new(SignType::Md5);
    let env = w.sim_env(Mode::Simulator);
    let prepay = prepay_of(
        &w,
        &w.post(
            &env,
            "/_sim/pay/unifiedorder",
            w.unified_order_xml("order000010", 1, None),
        ),
    );
    env.transport.no_answer.set(true);
    let r: Value = pay(&w, &env, &prepay, "SUCCESS").json_body().unwrap();
    assert_eq!(r["deliveries"].as_array().unwrap().len(), 4);
    assert_eq!(r["deliveries"][0]["error"], "timed out");
}

// ---- Faults -------------------------------------------------------------------------------------

#[test]
fn faults_apply_to_the_next_answers() {
    let w = World::new(SignType::Md5);
    let env = w.sim_env(Mode::Simulator);
    let r = w.post(
        &env,
        "/_sim/faults",
        r#"{"systemerror": 1, "bad_signature": 1, "timeout": 1}"#,
    );
    assert_eq!(
        r.json_body().unwrap(),
        json!({"systemerror": 1, "bad_signature": 1, "timeout": 1, "duplicate_notifications": 0, "signtest": 0, "notenough": 0})
    );
    // timeout first: processed, answered after the delay.
    let r = w.post(
        &env,
        "/_sim/pay/unifiedorder",
        w.unified_order_xml("order000011", 1, None),
    );
    let prepay = prepay_of(&w, &r);
    assert_eq!(*w.sleep.0.borrow(), vec![TIMEOUT_DELAY]);
    // systemerror: nothing processed.
    let r = w.post(
        &env,
        "/_sim/pay/unifiedorder",
        w.unified_order_xml("order000012", 1, None),
    );
    assert_eq!(refused_code(&w, &r), ErrCode::SystemError);
    assert!(w.store.raw("sim:order:order000012").is_none());
    // bad_signature: processed, reply untrusted.
    let r = w.post(
        &env,
        "/_sim/pay/unifiedorder",
        w.unified_order_xml("order000011", 1, None),
    );
    assert!(matches!(
        api::parse_unified_order_reply(&w.merchant(), &r.body),
        Err(ReplyError::BadSignature(_))
    ));
    // Then normal again: the same prepay id.
    let r = w.post(
        &env,
        "/_sim/pay/unifiedorder",
        w.unified_order_xml("order000011", 1, None),
    );
    assert_eq!(prepay_of(&w, &r), prepay);
    assert_eq!(
        w.call(&env, "GET", "/_sim/faults", "", b"")
            .json_body()
            .unwrap()["systemerror"],
        0
    );
    // Refusals of the switchboard.
    assert_eq!(w.post(&env, "/_sim/faults", r#"{"meteor": 1}"#).status, 400);
    assert_eq!(
        w.post(&env, "/_sim/faults", r#"{"timeout": -1}"#).status,
        400
    );
    assert_eq!(
        w.post(&env, "/_sim/faults", r#"{"timeout": 1000}"#).status,
        400
    );
    w.post(&env, "/_sim/faults", r#"{"timeout": 3}"#);
    assert_eq!(w.call(&env, "DELETE", "/_sim/faults", "", b"").status, 200);
    assert!(w.store.raw(FAULTS_KEY).is_none());
}

// ---- The app's flows against the simulator ------------------------------------------------------

fn shop(sign_type: SignType) -> ShopConfig {
    let mut vars = BTreeMap::new();
    vars.insert("wxpay_sign_type".to_owned(), sign_type.as_str().to_owned());
    ShopConfig::load(&vars).unwrap()
}

fn token(w: &World, to_sim: &ToSim<'_>, code: &str) -> String {
    let config = LoginFlowConfig {
        login: LoginConfig::simulator(),
        session: SessionConfig::load(&BTreeMap::<String, String>::new()).unwrap(),
    };
    let env = Env::new((), to_sim, &w.clock, (), config);
    let r = block_on(login::login(
        &env,
        &Request::new(json!({"code": code}).to_string()),
    ));
    r.json_body().unwrap()["token"].as_str().unwrap().to_owned()
}

#[test]
fn quickstart_flow_in_the_core_with_the_demo_catalog() {
    for sign_type in [SignType::Md5, SignType::HmacSha256] {
        let w = World::new(sign_type);
        let sim = w.sim_env(Mode::Simulator);
        let to_sim = w.to_sim();
        let token = token(&w, &to_sim, "any-code");
        let env = Env::new(&w.store, &to_sim, &w.clock, &w.nonce, shop(sign_type));
        // The catalog is empty: ordering the demo sku seeds the demo catalog.
        let created = block_on(orders::create(
            &env,
            &Request::new(json!({"sku": "demo", "quantity": 1}).to_string()).with_bearer(&token),
        ));
        assert_eq!(created.status, 201, "{created:?}");
        assert!(w.store.raw(&product_key("demo")).is_some());
        let body = created.json_body().unwrap();
        assert_eq!(body["order"]["total_fee"], 1);
        let order_no = body["order"]["order_no"].as_str().unwrap().to_owned();
        let package = body["pay_params"]["package"].as_str().unwrap();
        let prepay = package.strip_prefix("prepay_id=").unwrap();
        let stored: Order = w.store.order(&order_no).unwrap();
        assert_eq!(stored.mode, Mode::Simulator);
        assert_eq!(stored.openid, openid_for_code("any-code"));

        let paid = pay(&w, &sim, prepay, "SUCCESS").json_body().unwrap();
        assert_eq!(paid["notified"], true, "{paid}");
        assert_eq!(w.store.order(&order_no).unwrap().status, Status::Paid);
        let got = block_on(orders::get(
            &env,
            &Request::default().with_bearer(&token),
            &order_no,
        ));
        assert_eq!(got.json_body().unwrap()["status"], "PAID");
    }
}

#[test]
fn demo_catalog_is_seeded_only_when_empty_and_only_in_simulator_mode() {
    let w = World::new(SignType::Md5);
    let to_sim = w.to_sim();
    let token = token(&w, &to_sim, "c1");
    w.store.put_product(&Product {
        sku: "tea".into(),
        name: "Tea".into(),
        price: Fen(100),
        active: true,
    });
    let env = Env::new(&w.store, &to_sim, &w.clock, &w.nonce, shop(SignType::Md5));
    let r = block_on(orders::create(
        &env,
        &Request::new(json!({"sku": "demo", "quantity": 1}).to_string()).with_bearer(&token),
    ));
    assert_eq!(
        (r.status, r.error_code().unwrap().as_str()),
        (404, "unknown_sku")
    );
    assert!(w.store.raw(&product_key("demo")).is_none());
    // Live mode never seeds.
    let w = World::new(SignType::Md5);
    let seeded = block_on(crate::flows::demo::seed_if_empty(&&w.store, Mode::Live)).unwrap();
    assert!(seeded.is_empty());
    let seeded = block_on(crate::flows::demo::seed_if_empty(
        &&w.store,
        Mode::Simulator,
    ))
    .unwrap();
    assert!(seeded.iter().any(|p| p.sku == "demo" && p.price == Fen(1)));
}

#[test]
fn live_mode_serves_nothing() {
    let w = World::new(SignType::Md5);
    for env in [w.sim_env(Mode::Live), {
        let mut e = w.sim_env(Mode::Simulator);
        e.config.mode = None;
        e
    }] {
        for (method, path) in [
            ("GET", "/_sim/sns/jscode2session"),
            ("POST", "/_sim/pay/unifiedorder"),
            ("POST", "/_sim/pay/orderquery"),
            ("POST", "/_sim/pay/closeorder"),
            ("POST", "/_sim/pay"),
            ("POST", "/_sim/secapi/pay/refund"),
            ("POST", "/_sim/pay/refundquery"),
            ("POST", "/_sim/v3/refund/domestic/refunds"),
            ("POST", "/_sim/refund"),
            ("GET", "/_sim/faults"),
            ("POST", "/_sim/faults"),
            ("GET", "/_sim"),
        ] {
            let r = w.call(&env, method, path, &login_query("x"), b"{}");
            assert_eq!(r.status, 404, "{method} {path}");
        }
    }
    assert!(w.store.data.borrow().is_empty());
    let vars: BTreeMap<String, String> = [("wxpay_mode".to_owned(), "live".to_owned())].into();
    assert!(!SimConfig::load(&vars).unwrap().enabled());
    assert!(
        SimConfig::load(&BTreeMap::<String, String>::new())
            .unwrap()
            .enabled()
    );
}

#[test]
fn query_strings_are_decoded() {
    assert_eq!(
        query_param("a=1&js_code=x%2By+z&b", "js_code").as_deref(),
        Some("x+y z")
    );
    assert_eq!(query_param("a=%zz%4", "a").as_deref(), Some("%zz%4"));
    assert_eq!(query_param("a=1", "b"), None);
}

// ---- The in-process links (simulator mode without self requests) ---------------------------------

/// Sleeps shorter than `.0` end at once; longer ones never end (a virtual clock in which the
/// shorter deadline always comes first).
struct ShortSleepsOnly(Duration);

impl Sleep for ShortSleepsOnly {
    async fn sleep(&self, duration: Duration) {
        if duration >= self.0 {
            std::future::pending::<()>().await;
        }
    }
}

#[test]
fn simulator_link_carries_exact_bytes_and_only_to_the_simulator() {
    let w = World::new(SignType::HmacSha256);
    let link = w.to_sim();
    let xml_text = w.unified_order_xml("order000021", 1, None);
    // The link's reply is the simulator's signed answer to the same bytes (the simulator
    // checked our signature; we check its): the same trade as a direct call.
    let reply =
        block_on(link.post_xml(&w.merchant().url("/pay/unifiedorder"), xml_text.clone())).unwrap();
    assert_eq!(reply.status, 200);
    let via_link = api::parse_unified_order_reply(&w.merchant(), &reply.body).unwrap();
    let direct = w.post(
        &w.sim_env(Mode::Simulator),
        "/_sim/pay/unifiedorder",
        &xml_text,
    );
    assert_eq!(via_link.prepay_id, prepay_of(&w, &direct));
    // A GET carries its query (jscode2session).
    let reply = block_on(link.get(&format!(
        "{}/sns/jscode2session?{}",
        crate::config::SIM_BASE,
        login_query("link-code")
    )))
    .unwrap();
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(body["openid"], openid_for_code("link-code"));
    // Nothing but the simulator's WeChat APIs: no live origin, not the user's /_sim/pay, not the
    // switchboard.
    assert_eq!(
        block_on(link.post_xml("https://api.mch.weixin.qq.com/pay/unifiedorder", xml_text)),
        Err(TransportError::Denied)
    );
    let user = block_on(link.post_xml(
        &format!("{}/pay", crate::config::SIM_BASE),
        r#"{"prepay_id":"x"}"#.into(),
    ))
    .unwrap();
    assert_eq!(user.status, 404);
    let faults = block_on(link.get(&format!("{}/faults", crate::config::SIM_BASE))).unwrap();
    assert_eq!(faults.status, 404);
    // The login component's link reaches the login API and nothing of WeChat Pay's.
    let login_only: SimulatorLink<_, _, _, _, super::link::LoginApi> =
        SimulatorLink::new(&w.store, &w.clock, &w.nonce, &w.sleep, FIRST_BYTE_TIMEOUT);
    let reply = block_on(login_only.get(&format!(
        "{}/sns/jscode2session?{}",
        crate::config::SIM_BASE,
        login_query("login-only-code")
    )))
    .unwrap();
    assert_eq!(reply.status, 200);
    let unified = w.unified_order_xml("order000022", 1, None);
    let url = w.merchant().url("/pay/unifiedorder");
    assert_eq!(
        block_on(login_only.post_xml(&url, unified)).unwrap().status,
        404
    );
}

#[test]
fn held_back_reply_times_the_link_out_like_the_network() {
    let w = World::new(SignType::Md5);
    w.post(
        &w.sim_env(Mode::Simulator),
        "/_sim/faults",
        r#"{"timeout": 1}"#,
    );
    // The simulator holds the reply back for TIMEOUT_DELAY (5 s); the 4 s deadline ends first.
    let sleep = ShortSleepsOnly(TIMEOUT_DELAY);
    let link: SimulatorLink<_, _, _, _> =
        SimulatorLink::new(&w.store, &w.clock, &w.nonce, &sleep, FIRST_BYTE_TIMEOUT);
    let url = w.merchant().url("/pay/unifiedorder");
    let xml_text = w.unified_order_xml("order000022", 1, None);
    assert_eq!(
        block_on(link.post_xml(&url, xml_text.clone())),
        Err(TransportError::Timeout)
    );
    // Processed all the same (as WeChat would have): the retry gets the same prepay id.
    let reply = block_on(link.post_xml(&url, xml_text)).unwrap();
    assert_eq!(reply.status, 200);
    assert!(w.store.raw(&order_key("order000022")).is_some());
    // The fault was used up.
    assert_eq!(
        block_on(super::faults::take_api_fault(&&w.store)),
        super::faults::ApiFault::None
    );
}

#[test]
fn within_prefers_ready_work_and_honours_the_deadline() {
    let instant = ShortSleepsOnly(Duration::MAX);
    assert_eq!(
        block_on(super::link::within(
            &instant,
            Duration::from_secs(1),
            async { 7 }
        )),
        Some(7)
    );
    let never = std::future::pending::<u8>();
    assert_eq!(
        block_on(super::link::within(&instant, Duration::from_secs(1), never)),
        None
    );
}

#[test]
fn notify_link_settles_the_order_through_the_notify_flow() {
    for sign_type in [SignType::Md5, SignType::HmacSha256] {
        let w = World::new(sign_type);
        let to_sim = w.to_sim();
        let token = token(&w, &to_sim, "notify-link");
        let env = Env::new(&w.store, &to_sim, &w.clock, &w.nonce, shop(sign_type));
        let created = block_on(orders::create(
            &env,
            &Request::new(json!({"sku": "demo", "quantity": 1}).to_string()).with_bearer(&token),
        ));
        assert_eq!(created.status, 201, "{created:?}");
        let body = created.json_body().unwrap();
        let order_no = body["order"]["order_no"].as_str().unwrap().to_owned();
        let package = body["pay_params"]["package"].as_str().unwrap();
        // `/_sim/pay` as the simulator component runs it: its transport is the notify link.
        let sim = Env::new(
            &w.store,
            NotifyLink::new(&w.store, &w.clock, Some(w.merchant())),
            &w.clock,
            &w.nonce,
            SimConfig::serving(Some(w.merchant())),
        );
        let paid = block_on(handle(
            &sim,
            &w.sleep,
            SimRequest {
                method: "POST",
                path: "/_sim/pay",
                query: "",
                authorization: None,
                body: json!({"package": package}).to_string().as_bytes(),
            },
        ));
        let paid = paid.json_body().unwrap();
        assert_eq!(paid["notified"], true, "{paid}");
        assert_eq!(paid["deliveries"][0]["status"], 200);
        assert_eq!(
            xml::read(paid["deliveries"][0]["body"].as_str().unwrap().as_bytes()).unwrap()["return_code"],
            "SUCCESS"
        );
        assert_eq!(w.store.order(&order_no).unwrap().status, Status::Paid);
    }
}

#[test]
fn notify_link_delivers_only_to_the_notify_route_and_only_when_configured() {
    let w = World::new(SignType::Md5);
    let body = "<xml><return_code>SUCCESS</return_code></xml>".to_owned();
    let link = NotifyLink::new(&w.store, &w.clock, Some(w.merchant()));
    assert_eq!(
        block_on(link.post_xml("https://shop.example.com/api/wxpay/notify", body.clone())),
        Err(TransportError::Denied)
    );
    assert_eq!(
        block_on(link.get(SIM_NOTIFY_URL)),
        Err(TransportError::Denied)
    );
    // An unsigned notification reaches the flow, which refuses it (FAIL: WeChat retries).
    let reply = block_on(link.post_xml(SIM_NOTIFY_URL, body.clone())).unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(xml::read(&reply.body).unwrap()["return_code"], "FAIL");
    let unconfigured: NotifyLink<&MemStore, &FakeClock> = NotifyLink::new(&w.store, &w.clock, None);
    assert_eq!(
        block_on(unconfigured.post_xml(SIM_NOTIFY_URL, body)),
        Err(TransportError::Denied)
    );
}

#[test]
fn outbound_follows_the_mode() {
    let live: Outbound<u8, u16> = Outbound::for_mode(Mode::Live, || 1, || unreachable!());
    assert!(matches!(live, Outbound::Network(1)));
    let sim: Outbound<u8, u16> = Outbound::for_mode(Mode::Simulator, || unreachable!(), || 2);
    assert!(matches!(sim, Outbound::Simulator(2)));
}

#[test]
fn simulator_config_carries_the_merchant_only_in_simulator_mode() {
    let hmac: BTreeMap<String, String> =
        [("wxpay_sign_type".to_owned(), "HMAC-SHA256".to_owned())].into();
    let config = SimConfig::load(&hmac).unwrap();
    assert_eq!(
        config.merchant,
        Some(MerchantConfig::simulator(SignType::HmacSha256))
    );
    let bad: BTreeMap<String, String> = [("wxpay_sign_type".to_owned(), "SHA1".to_owned())].into();
    let problems = SimConfig::load(&bad).unwrap_err();
    assert!(
        problems.to_string().contains("wxpay_sign_type"),
        "{problems}"
    );
    let live: BTreeMap<String, String> = [("wxpay_mode".to_owned(), "live".to_owned())].into();
    assert_eq!(
        SimConfig::load(&live).unwrap(),
        SimConfig {
            mode: Some(Mode::Live),
            merchant: None
        }
    );
}
