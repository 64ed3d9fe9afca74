//! The flows against fakes of every port.

use serde_json::{Value, json};

use super::fakes::*;
use super::*;
use crate::config::{self, LoginConfig, MerchantConfig, Mode, SessionConfig};
use crate::flows::orders::UNIFIED_ORDER_TIMEOUT_ATTEMPTS;
use crate::money::Fen;
use crate::order::{Event, NotifyResult, Order, Product, Status};
use crate::pay_params::{PayParams, verify_pay_params};
use crate::secret::Secret;
use crate::v2::notify::SUCCESS_REPLY;
use crate::v2::sign::{SignType, sign_in_place};
use crate::v2::{Params, xml};

mod interleave;
mod refunds;
mod v3;

const NOW: u64 = 1_714_550_400; // 2024-05-01T08:00:00Z
const OPENID: &str = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o";
const OTHER: &str = "oOtherUserxxxxxxxxxxxxxxxxxx";
const SESSION_SECRET: &str = "test session secret, thirty-two bytes or more";
const APP_SECRET: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";
const ADMIN_TOKEN: &str = "test-admin-token-0123";
const CLIENT: &str = "203.0.113.9:50123";

fn merchant(sign_type: SignType) -> MerchantConfig {
    MerchantConfig {
        mode: Mode::Live,
        api_version: config::ApiVersion::V2,
        appid: "wx1234567890abcdef".into(),
        mch_id: "1900000109".into(),
        api_key: Some(Secret::new("Aa1Bb2Cc3Dd4Ee5Ff6Gg7Hh8Ii9Jj0Kk")),
        sign_type,
        v3: None,
        notify_url: "https://shop.example.com/api/wxpay/notify".into(),
        mch_api: "https://api.mch.weixin.qq.com".into(),
    }
}

fn login_config() -> LoginConfig {
    LoginConfig {
        mode: Mode::Live,
        appid: "wx1234567890abcdef".into(),
        app_secret: Secret::new(APP_SECRET),
        wx_api: "https://api.weixin.qq.com".into(),
    }
}

fn session_config() -> SessionConfig {
    SessionConfig {
        secret: Secret::new(SESSION_SECRET),
        ttl_secs: config::SESSION_TTL_SECS,
    }
}

type E<'a, K> = Env<&'a MemStore, &'a FakeWechat, &'a FakeClock, &'a CountingNonce, K>;

struct World {
    store: MemStore,
    wx: FakeWechat,
    clock: FakeClock,
    nonce: CountingNonce,
    sign_type: SignType,
    /// What every flow of this world is configured with (the fake WeChat's merchant too).
    merchant: MerchantConfig,
}

impl World {
    fn new() -> World {
        World::with(SignType::Md5)
    }

    fn with(sign_type: SignType) -> World {
        World::with_merchant(merchant(sign_type), NOW)
    }

    /// A world whose flows and fake WeChat use `merchant`, starting at `now`.
    fn with_merchant(merchant: MerchantConfig, now: u64) -> World {
        let w = World {
            store: MemStore::default(),
            wx: FakeWechat::new(merchant.clone(), login_config()),
            clock: FakeClock::new(now),
            nonce: CountingNonce::default(),
            sign_type: merchant.sign_type,
            merchant,
        };
        w.store.put_product(&Product {
            sku: "coffee-L".into(),
            name: "Large coffee".into(),
            price: Fen(1990),
            active: true,
        });
        w.store.put_product(&Product {
            sku: "old-tea".into(),
            name: "Retired tea".into(),
            price: Fen(500),
            active: false,
        });
        w
    }

    fn env<K>(&self, config: K) -> E<'_, K> {
        self.env_on(&self.store, config)
    }

    /// The ports of this world with another view of its store.
    fn env_on<S, K>(
        &self,
        store: S,
        config: K,
    ) -> Env<S, &FakeWechat, &FakeClock, &CountingNonce, K> {
        Env::new(store, &self.wx, &self.clock, &self.nonce, config)
    }

    fn shop(&self) -> E<'_, ShopConfig> {
        self.env(ShopConfig {
            merchant: self.merchant.clone(),
            session: session_config(),
        })
    }

    fn notify_env(&self) -> E<'_, MerchantConfig> {
        self.env(self.merchant.clone())
    }

    fn admin_env(&self) -> E<'_, AdminFlowConfig> {
        self.env(AdminFlowConfig {
            merchant: self.merchant.clone(),
            admin: config::AdminConfig {
                token: Secret::new(ADMIN_TOKEN),
            },
        })
    }

    fn login_env(&self) -> E<'_, LoginFlowConfig> {
        self.env(LoginFlowConfig {
            login: login_config(),
            session: session_config(),
        })
    }

    fn token(&self, openid: &str) -> String {
        crate::session::issue(
            &Secret::new(SESSION_SECRET),
            openid,
            self.clock.now_unix(),
            7200,
        )
        .unwrap()
    }

    fn create(&self, body: Value) -> Response {
        let req = Request::new(body.to_string())
            .with_bearer(&self.token(OPENID))
            .with_client_addr(CLIENT);
        block_on(orders::create(&self.shop(), &req))
    }

    /// Creates an order awaiting payment; returns its number.
    fn awaiting(&self) -> String {
        let r = self.create(json!({"sku": "coffee-L", "quantity": 2}));
        assert_eq!(r.status, 201, "{r:?}");
        r.json_body().unwrap()["order"]["order_no"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn get(&self, order_no: &str, openid: &str) -> Response {
        let req = Request::new("").with_bearer(&self.token(openid));
        block_on(orders::get(&self.shop(), &req, order_no))
    }

    fn pay_params(&self, order_no: &str, openid: &str) -> Response {
        let req = Request::new("").with_bearer(&self.token(openid));
        block_on(pay_sign::pay_params(&self.shop(), &req, order_no))
    }

    fn notify(&self, body: &[u8]) -> (Response, notify::NotifyOutcome) {
        self.notify_request(&Request::new(body))
    }

    fn notify_request(&self, request: &Request) -> (Response, notify::NotifyOutcome) {
        block_on(notify::notify(&self.notify_env(), request))
    }

    fn admin(&self, method: &str, path: &str, body: Value) -> Response {
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        let req = Request::new(body).with_bearer(ADMIN_TOKEN);
        // The component passes the path below /api/admin.
        let sub_path = path
            .strip_prefix(admin::ADMIN_PREFIX)
            .expect("an admin path");
        block_on(admin::handle(&self.admin_env(), method, sub_path, &req))
    }

    fn order(&self, order_no: &str) -> Order {
        self.store.order(order_no).unwrap()
    }

    /// A notification as WeChat signs it, for `order_no`.
    fn notification(&self, order_no: &str, edit: impl FnOnce(&mut Params)) -> Vec<u8> {
        let m = merchant(self.sign_type);
        let mut p: Params = [
            ("appid", m.appid.as_str()),
            ("bank_type", "CFT"),
            ("cash_fee", "3980"),
            ("fee_type", "CNY"),
            ("is_subscribe", "N"),
            ("mch_id", m.mch_id.as_str()),
            ("nonce_str", "5d2b6c2a8db53831f7eda20af46e531c"),
            ("openid", OPENID),
            ("out_trade_no", order_no),
            ("result_code", "SUCCESS"),
            ("return_code", "SUCCESS"),
            ("time_end", PAID_TIME_END),
            ("total_fee", "3980"),
            ("trade_type", "JSAPI"),
            ("transaction_id", "4200001234202405011234567890"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        edit(&mut p);
        sign_in_place(&mut p, m.v2_key().unwrap(), m.sign_type);
        xml::write(&p).into_bytes()
    }
}

fn status_events_to(order: &Order, to: Status) -> usize {
    order
        .events
        .iter()
        .filter(|e| matches!(e, Event::Status { to: t, .. } if *t == to))
        .count()
}

fn alerts(order: &Order) -> Vec<String> {
    order
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Alert { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect()
}

fn code(r: &Response) -> String {
    r.error_code()
        .unwrap_or_else(|| panic!("not an error: {r:?}"))
}

fn message(r: &Response) -> String {
    r.json_body().unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned()
}

// ---- login ----------------------------------------------------------------------------------------

fn login(w: &World, body: Value) -> Response {
    block_on(login::login(
        &w.login_env(),
        &Request::new(body.to_string()),
    ))
}

fn assert_no_secret(w: &World, r: &Response) {
    let text = String::from_utf8_lossy(&r.body);
    assert!(!text.contains(APP_SECRET), "{text}");
    assert!(!text.contains("SESSIONKEY"), "{text}");
    assert!(!text.contains("secret="), "{text}");
    let _ = w;
}

#[test]
fn login_success_issues_a_token_and_drops_the_session_key() {
    let w = World::new();
    w.wx.codes.borrow_mut().insert(
        "code-OK_1".into(),
        json!({"openid": OPENID, "session_key": "SESSIONKEY==", "unionid": "u1"}).to_string(),
    );
    let r = login(&w, json!({"code": "code-OK_1"}));
    assert_eq!(r.status, 200, "{r:?}");
    let body = r.json_body().unwrap();
    assert_eq!(body["expires_in"], 7200);
    assert_eq!(body.as_object().unwrap().len(), 2);
    let token = body["token"].as_str().unwrap();
    let s = crate::session::verify(&Secret::new(SESSION_SECRET), token, NOW).unwrap();
    assert_eq!(s.openid, OPENID);
    assert_no_secret(&w, &r);
    let sent = w.wx.sent_to("/sns/jscode2session");
    assert_eq!(sent.len(), 1);
    assert!(sent[0].url.starts_with(
        "https://api.weixin.qq.com/sns/jscode2session?appid=wx1234567890abcdef&secret="
    ));
    assert!(
        sent[0]
            .url
            .ends_with("&js_code=code-OK_1&grant_type=authorization_code")
    );
}

#[test]
fn login_maps_each_errcode() {
    let cases = [
        (40029, 401, "invalid_code"),
        (40163, 401, "invalid_code"),
        (45011, 429, "rate_limited"),
        (40226, 403, "user_blocked"),
        (-1, 503, "wechat_busy"),
        (40013, 502, "wechat_error"),
    ];
    for (errcode, status, expected) in cases {
        let w = World::new();
        w.wx.codes.borrow_mut().insert(
            "c1".into(),
            json!({"errcode": errcode, "errmsg": "x"}).to_string(),
        );
        let r = login(&w, json!({"code": "c1"}));
        assert_eq!(
            (r.status, code(&r).as_str()),
            (status, expected),
            "{errcode}"
        );
        assert_no_secret(&w, &r);
        if expected == "wechat_error" {
            assert!(message(&r).contains("40013"));
        }
    }
}

#[test]
fn login_transport_failures_never_leak_the_secret() {
    for (fault, status, expected) in [
        (Fault::Timeout, 504, "wechat_unreachable"),
        (Fault::Unreachable, 504, "wechat_unreachable"),
        (Fault::Denied, 500, "outbound_denied"),
    ] {
        let w = World::new();
        w.wx.fault("/sns/jscode2session", fault.clone());
        let r = login(&w, json!({"code": "c1"}));
        assert_eq!(
            (r.status, code(&r).as_str()),
            (status, expected),
            "{fault:?}"
        );
        assert_no_secret(&w, &r);
    }
    // The transport error types themselves never carry a URL.
    let e = TransportError::Timeout;
    assert!(!e.to_string().contains("http"));
}

#[test]
fn login_refuses_bad_codes_without_calling_wechat() {
    let w = World::new();
    for body in [
        json!({"code": ""}),
        json!({"code": "a b"}),
        json!({"code": "x".repeat(129)}),
        json!({"code": "abc&secret=x"}),
        json!({"code": 5}),
        json!({}),
    ] {
        let r = login(&w, body.clone());
        assert_eq!(
            (r.status, code(&r).as_str()),
            (400, "invalid_code"),
            "{body}"
        );
    }
    let r = block_on(login::login(&w.login_env(), &Request::new("{\"code\": ")));
    assert_eq!(code(&r), "invalid_json");
    for broken in [
        "{\"code\": \"SECRETISH",
        "{\"code\": SECRETISH}",
        "{\"SECRETISH\" 1}",
    ] {
        let r = block_on(login::login(&w.login_env(), &Request::new(broken)));
        assert_eq!(code(&r), "invalid_json", "{broken}");
        assert!(message(&r).contains("line 1 column"), "{r:?}");
        assert!(
            !String::from_utf8_lossy(&r.body).contains("SECRETISH"),
            "{r:?}"
        );
    }
    assert!(w.wx.sent.borrow().is_empty());
    // 128 characters is fine (and unknown to WeChat).
    let r = login(&w, json!({"code": "x".repeat(128)}));
    assert_eq!(r.status, 401);
}

// ---- create ---------------------------------------------------------------------------------------

#[test]
fn create_happy_path() {
    for sign_type in [SignType::Md5, SignType::HmacSha256] {
        let w = World::with(sign_type);
        let r = w.create(json!({"sku": "coffee-L", "quantity": 2, "amount": 1, "total_fee": 1, "attach": "table 7"}));
        assert_eq!(r.status, 201, "{r:?}");
        let body = r.json_body().unwrap();
        let order_no = body["order"]["order_no"].as_str().unwrap();
        assert_eq!(body["order"]["status"], "AWAITING_PAYMENT");
        assert_eq!(body["order"]["total_fee"], 3980);
        assert!(body["order"].get("openid").is_none());
        let params: PayParams = serde_json::from_value(body["pay_params"].clone()).unwrap();
        let m = merchant(sign_type);
        assert!(verify_pay_params(&m.appid, &params, m.v2_key().unwrap()));
        assert_eq!(params.package, format!("prepay_id=wx{order_no}"));
        assert_eq!(params.sign_type, sign_type.as_str());
        assert_eq!(params.time_stamp, NOW.to_string());

        let stored = w.order(order_no);
        assert_eq!(stored.status, Status::AwaitingPayment);
        assert_eq!(stored.total_fee, Fen(3980));
        assert_eq!(stored.openid, OPENID);
        assert_eq!(
            stored.prepay_id.as_deref(),
            Some(format!("wx{order_no}").as_str())
        );
        assert_eq!(stored.prepay_expires_at, Some(NOW + 7200));
        assert_eq!(stored.mode, Mode::Live);
        assert_eq!(status_events_to(&stored, Status::AwaitingPayment), 1);

        let sent = w.wx.sent_to("/pay/unifiedorder");
        assert_eq!(sent.len(), 1);
        assert_eq!(
            sent[0].url,
            "https://api.mch.weixin.qq.com/pay/unifiedorder"
        );
        let p = xml::read(sent[0].body.as_bytes()).unwrap();
        assert_eq!(p["total_fee"], "3980");
        assert_eq!(p["out_trade_no"], order_no);
        assert_eq!(p["spbill_create_ip"], "203.0.113.9");
        assert_eq!(p["body"], "Large coffee");
        assert_eq!(p["openid"], OPENID);
        assert_eq!(p["attach"], "table 7");
        assert_eq!(p["notify_url"], "https://shop.example.com/api/wxpay/notify");
        assert_eq!(p["time_expire"], crate::time::beijing_compact(NOW + 7200));
        assert_eq!(p["trade_type"], "JSAPI");
        // CREATED then AWAITING_PAYMENT.
        assert_eq!(w.store.writes.get(), 2);
    }
}

#[test]
fn create_stores_before_calling_wechat() {
    let w = World::new();
    w.store.fail_sets("order:", None);
    let r = w.create(json!({"sku": "coffee-L", "quantity": 1}));
    assert_eq!((r.status, code(&r).as_str()), (503, "store_unavailable"));
    assert!(w.wx.sent.borrow().is_empty());
    assert!(w.store.orders().is_empty());
}

#[test]
fn create_refuses_bad_input() {
    let w = World::new();
    let token = w.token(OPENID);
    let send = |body: &[u8], auth: Option<String>| {
        let mut req = Request::new(body.to_vec()).with_client_addr(CLIENT);
        req.authorization = auth;
        block_on(orders::create(&w.shop(), &req))
    };
    let bearer = Some(format!("Bearer {token}"));

    let r = send(b"{\"sku\": \"coffee-L\", ", bearer.clone());
    assert_eq!((r.status, code(&r).as_str()), (400, "invalid_json"));
    assert!(message(&r).contains("line 1 column"), "{r:?}");
    let r = send(b"[1]", bearer.clone());
    assert_eq!(code(&r), "invalid_json");

    let big = format!(
        r#"{{"sku":"coffee-L","quantity":1,"x":"{}"}}"#,
        "a".repeat(70_000)
    );
    let r = send(big.as_bytes(), bearer.clone());
    assert_eq!((r.status, code(&r).as_str()), (413, "body_too_large"));

    for q in ["0", "-1", "1000", "1.5", "\"2\"", "null", "true", "1e2"] {
        let body = format!(r#"{{"sku":"coffee-L","quantity":{q}}}"#);
        let r = send(body.as_bytes(), bearer.clone());
        assert_eq!(
            (r.status, code(&r).as_str()),
            (400, "invalid_quantity"),
            "{q}"
        );
        assert!(message(&r).contains("quantity"), "{q}");
    }
    let r = send(br#"{"sku":"coffee-L"}"#, bearer.clone());
    assert_eq!(code(&r), "invalid_quantity");

    for sku in ["nope", "old-tea", "bad sku!", ""] {
        let body = json!({"sku": sku, "quantity": 1}).to_string();
        let r = send(body.as_bytes(), bearer.clone());
        assert_eq!((r.status, code(&r).as_str()), (404, "unknown_sku"), "{sku}");
    }
    let r = send(br#"{"quantity":1}"#, bearer.clone());
    assert_eq!(code(&r), "invalid_sku");
    let body = json!({"sku": "coffee-L", "quantity": 1, "attach": "x".repeat(128)}).to_string();
    assert_eq!(
        code(&send(body.as_bytes(), bearer.clone())),
        "invalid_attach"
    );

    let ok = br#"{"sku":"coffee-L","quantity":1}"#;
    let r = send(ok, None);
    assert_eq!((r.status, code(&r).as_str()), (401, "missing_token"));
    let r = send(ok, Some("Basic abc".into()));
    assert_eq!(code(&r), "invalid_token");
    let mut tampered = token.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == '0' { '1' } else { '0' });
    let r = send(ok, Some(format!("Bearer {tampered}")));
    assert_eq!((r.status, code(&r).as_str()), (401, "invalid_token"));
    let r = send(ok, Some("Bearer garbage".into()));
    assert_eq!(code(&r), "invalid_token");
    let old =
        crate::session::issue(&Secret::new(SESSION_SECRET), OPENID, NOW - 8000, 7200).unwrap();
    let r = send(ok, Some(format!("Bearer {old}")));
    assert_eq!((r.status, code(&r).as_str()), (401, "token_expired"));

    assert!(w.wx.sent.borrow().is_empty());
    assert!(w.store.orders().is_empty());
}

#[test]
fn systemerror_is_retried_with_identical_bytes() {
    let w = World::new();
    w.wx.fault("/pay/unifiedorder", Fault::Refuse("SYSTEMERROR"));
    w.wx.fault("/pay/unifiedorder", Fault::Unreachable);
    let r = w.create(json!({"sku": "coffee-L", "quantity": 2}));
    assert_eq!(r.status, 201, "{r:?}");
    let sent = w.wx.sent_to("/pay/unifiedorder");
    assert_eq!(sent.len(), 3);
    assert!(sent.iter().all(|s| s == &sent[0]));
}

#[test]
fn retries_are_bounded() {
    let w = World::new();
    for _ in 0..3 {
        w.wx.fault("/pay/unifiedorder", Fault::Refuse("SYSTEMERROR"));
    }
    let r = w.create(json!({"sku": "coffee-L", "quantity": 2}));
    assert_eq!((r.status, code(&r).as_str()), (503, "wechat_busy"));
    assert_eq!(w.wx.sent_to("/pay/unifiedorder").len(), 3);
    assert_eq!(w.store.orders()[0].status, Status::Created);

    let w = World::new();
    for _ in 0..3 {
        w.wx.fault("/pay/unifiedorder", Fault::Unreachable);
    }
    let r = w.create(json!({"sku": "coffee-L", "quantity": 2}));
    assert_eq!((r.status, code(&r).as_str()), (504, "wechat_unreachable"));
    let sent = w.wx.sent_to("/pay/unifiedorder");
    assert_eq!(sent.len(), 3);
    assert!(sent.iter().all(|s| s == &sent[0]));

    // One timeout is retried with the identical request, and WeChat's answer to it is used.
    let w = World::new();
    w.wx.fault("/pay/unifiedorder", Fault::Timeout);
    let r = w.create(json!({"sku": "coffee-L", "quantity": 2}));
    assert_eq!(r.status, 201);
    let sent = w.wx.sent_to("/pay/unifiedorder");
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0], sent[1]);

    // Timeouts cost the caller's patience: they end the request after two attempts.
    let w = World::new();
    for _ in 0..UNIFIED_ORDER_TIMEOUT_ATTEMPTS {
        w.wx.fault("/pay/unifiedorder", Fault::Timeout);
    }
    let r = w.create(json!({"sku": "coffee-L", "quantity": 2}));
    assert_eq!((r.status, code(&r).as_str()), (504, "wechat_unreachable"));
    assert!(r.json_body().unwrap().to_string().contains("in time"));
    let sent = w.wx.sent_to("/pay/unifiedorder");
    assert_eq!(sent.len(), UNIFIED_ORDER_TIMEOUT_ATTEMPTS);
    assert!(sent.iter().all(|s| s == &sent[0]));
    let orders = w.store.orders();
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0].status, Status::Created);
    assert!(orders[0].events.is_empty());
}

#[test]
fn untrusted_replies_give_no_pay_params() {
    for fault in [Fault::BadSignature, Fault::ForeignMchId, Fault::Http(404)] {
        let w = World::new();
        w.wx.fault("/pay/unifiedorder", fault.clone());
        let r = w.create(json!({"sku": "coffee-L", "quantity": 2}));
        assert_eq!(
            (r.status, code(&r).as_str()),
            (502, "wechat_reply_untrusted"),
            "{fault:?}"
        );
        assert!(!String::from_utf8_lossy(&r.body).contains("paySign"));
        assert_eq!(w.store.orders()[0].status, Status::Created, "{fault:?}");
        assert_eq!(w.wx.sent_to("/pay/unifiedorder").len(), 1);
    }
}

#[test]
fn refusals_fail_the_order_with_an_event() {
    let w = World::new();
    w.wx.fault("/pay/unifiedorder", Fault::ReturnFail("invalid notify_url"));
    let r = w.create(json!({"sku": "coffee-L", "quantity": 2}));
    assert_eq!((r.status, code(&r).as_str()), (502, "wechat_refused"));
    assert!(message(&r).contains("invalid notify_url"));
    let o = &w.store.orders()[0];
    assert_eq!(o.status, Status::Failed);
    assert!(
        matches!(&o.events[..], [Event::Status { to: Status::Failed, reason: Some(r), .. }] if r.contains("invalid notify_url"))
    );

    let w = World::new();
    w.wx.fault("/pay/unifiedorder", Fault::Refuse("NOTENOUGH"));
    let r = w.create(json!({"sku": "coffee-L", "quantity": 2}));
    assert_eq!((r.status, code(&r).as_str()), (502, "wechat_refused"));
    assert!(message(&r).contains("NOTENOUGH"));
    assert_eq!(w.wx.sent_to("/pay/unifiedorder").len(), 1);
    let o = &w.store.orders()[0];
    assert_eq!(o.status, Status::Failed);
    assert!(matches!(&o.events[..], [Event::Status { reason: Some(r), .. }] if r == "NOTENOUGH"));

    // ORDERPAID is not a failure of the order: it stays for reconcile.
    let w = World::new();
    w.wx.fault("/pay/unifiedorder", Fault::Refuse("ORDERPAID"));
    let r = w.create(json!({"sku": "coffee-L", "quantity": 2}));
    assert_eq!(code(&r), "wechat_refused");
    assert_eq!(w.store.orders()[0].status, Status::Created);
}

#[test]
fn a_failed_prepay_write_is_not_answered_with_pay_params() {
    let w = World::new();
    // The CREATED write passes, the AWAITING_PAYMENT one fails.
    w.store.fail_sets_after("order:", 1, None);
    let r = w.create(json!({"sku": "coffee-L", "quantity": 2}));
    assert_eq!((r.status, code(&r).as_str()), (503, "store_unavailable"));
    assert!(!String::from_utf8_lossy(&r.body).contains("paySign"));
    assert_eq!(w.store.orders()[0].status, Status::Created);
}

// ---- get ------------------------------------------------------------------------------------------

#[test]
fn get_is_owner_only_with_one_answer_for_unknown_and_foreign() {
    let w = World::new();
    let no = w.awaiting();
    let r = w.get(&no, OPENID);
    assert_eq!(r.status, 200);
    assert_eq!(r.json_body().unwrap()["order_no"], no.as_str());
    let foreign = w.get(&no, OTHER);
    let unknown = w.get("20240501160000ffffffffffffffff", OPENID);
    let malformed = w.get("../etc", OPENID);
    assert_eq!(
        (foreign.status, code(&foreign).as_str()),
        (404, "order_not_found")
    );
    assert_eq!(foreign.body, unknown.body);
    assert_eq!(foreign.body, malformed.body);
    let r = block_on(orders::get(&w.shop(), &Request::new(""), &no));
    assert_eq!(code(&r), "missing_token");
}

#[test]
fn get_queries_at_most_every_five_seconds() {
    let w = World::new();
    let no = w.awaiting();
    assert_eq!(w.get(&no, OPENID).status, 200);
    w.clock.advance(4);
    assert_eq!(w.get(&no, OPENID).status, 200);
    assert_eq!(w.wx.sent_to("/pay/orderquery").len(), 1);
    // The throttle is a hint in its own key, never in the order's facts.
    assert_eq!(
        w.store.raw(&crate::ledger::checked_key(&no)),
        Some(NOW.to_string().into_bytes())
    );
    w.clock.advance(1);
    assert_eq!(w.get(&no, OPENID).status, 200);
    assert_eq!(w.wx.sent_to("/pay/orderquery").len(), 2);
    assert_eq!(w.order(&no).status, Status::AwaitingPayment);
}

#[test]
fn get_finds_a_payment_whose_notification_was_lost() {
    let w = World::new();
    let no = w.awaiting();
    let trade = w.wx.pay(&no, 3980);
    let r = w.get(&no, OPENID);
    let body = r.json_body().unwrap();
    assert_eq!(body["status"], "PAID");
    assert_eq!(body["transaction_id"], trade.transaction_id.as_str());
    assert_eq!(body["paid_at"], "2024-05-01T08:03:12Z");
    let o = w.order(&no);
    assert_eq!(o.status, Status::Paid);
    assert_eq!(status_events_to(&o, Status::Paid), 1);
    // A late notification is then a duplicate: no write.
    let writes = w.store.writes.get();
    let (resp, outcome) = w.notify(&w.notification(&no, |p| {
        p.insert("transaction_id".into(), trade.transaction_id.clone());
    }));
    assert_eq!(resp.body, SUCCESS_REPLY.as_bytes());
    assert!(matches!(outcome, notify::NotifyOutcome::Duplicate { .. }));
    assert_eq!(w.store.writes.get(), writes);
}

#[test]
fn get_applies_closed_and_alerts_on_amount_mismatch() {
    let w = World::new();
    let no = w.awaiting();
    w.wx.pay(&no, 1);
    let r = w.get(&no, OPENID);
    assert_eq!(r.json_body().unwrap()["status"], "AWAITING_PAYMENT");
    let o = w.order(&no);
    assert_eq!(alerts(&o).len(), 1);
    assert!(alerts(&o)[0].contains("total_fee 1"));

    let w = World::new();
    let no = w.awaiting();
    w.wx.set_state(&no, "CLOSED", 3980);
    let r = w.get(&no, OPENID);
    assert_eq!(r.json_body().unwrap()["status"], "CLOSED");
    assert_eq!(w.order(&no).status, Status::Closed);
}

#[test]
fn get_answers_the_stored_order_when_wechat_fails() {
    let w = World::new();
    let no = w.awaiting();
    let writes = w.store.writes.get();
    w.wx.fault("/pay/orderquery", Fault::Timeout);
    let r = w.get(&no, OPENID);
    assert_eq!(r.status, 200);
    assert_eq!(r.json_body().unwrap()["status"], "AWAITING_PAYMENT");
    assert_eq!(w.store.writes.get(), writes);
    // A store that cannot be written still answers what WeChat said.
    w.wx.pay(&no, 3980);
    w.store.fail_sets("order:", None);
    let r = w.get(&no, OPENID);
    assert_eq!(r.json_body().unwrap()["status"], "PAID");
}

// ---- pay-sign -------------------------------------------------------------------------------------

#[test]
fn pay_params_are_fresh_and_owner_only() {
    let w = World::new();
    let no = w.awaiting();
    let writes = w.store.writes.get();
    let sent = w.wx.sent.borrow().len();
    w.clock.advance(60);
    let r = w.pay_params(&no, OPENID);
    assert_eq!(r.status, 200, "{r:?}");
    let p: PayParams = serde_json::from_slice(&r.body).unwrap();
    let m = merchant(SignType::Md5);
    assert!(verify_pay_params(&m.appid, &p, m.v2_key().unwrap()));
    assert_eq!(p.package, format!("prepay_id=wx{no}"));
    assert_eq!(p.time_stamp, (NOW + 60).to_string());
    let again: PayParams = serde_json::from_slice(&w.pay_params(&no, OPENID).body).unwrap();
    assert_ne!(again.nonce_str, p.nonce_str);
    assert_eq!(w.store.writes.get(), writes);
    assert_eq!(w.wx.sent.borrow().len(), sent);

    let r = w.pay_params(&no, OTHER);
    assert_eq!((r.status, code(&r).as_str()), (404, "order_not_found"));

    w.clock.advance(7200);
    let r = w.pay_params(&no, OPENID);
    assert_eq!((r.status, code(&r).as_str()), (410, "prepay_expired"));

    let (_, outcome) = w.notify(&w.notification(&no, |_| {}));
    assert!(matches!(outcome, notify::NotifyOutcome::Applied { .. }));
    let r = w.pay_params(&no, OPENID);
    assert_eq!((r.status, code(&r).as_str()), (409, "not_awaiting_payment"));
}

#[test]
fn pay_sign_needs_no_transport() {
    let w = World::new();
    let no = w.awaiting();
    let env = Env::new(
        &w.store,
        (),
        &w.clock,
        &w.nonce,
        ShopConfig {
            merchant: merchant(SignType::Md5),
            session: session_config(),
        },
    );
    let req = Request::new("").with_bearer(&w.token(OPENID));
    assert_eq!(block_on(pay_sign::pay_params(&env, &req, &no)).status, 200);
}

// ---- notify ---------------------------------------------------------------------------------------

#[test]
fn a_valid_notification_pays_the_order_once() {
    let w = World::new();
    let no = w.awaiting();
    w.clock.advance(300);
    let (r, outcome) = w.notify(&w.notification(&no, |_| {}));
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type, "text/xml");
    assert_eq!(r.body, SUCCESS_REPLY.as_bytes());
    assert_eq!(
        outcome,
        notify::NotifyOutcome::Applied {
            order_no: no.clone(),
            transaction_id: "4200001234202405011234567890".into()
        }
    );
    let o = w.order(&no);
    assert_eq!(o.status, Status::Paid);
    assert_eq!(o.paid_at.as_deref(), Some("2024-05-01T08:03:12Z"));
    assert_eq!(status_events_to(&o, Status::Paid), 1);
    assert!(
        matches!(o.events.last(), Some(Event::Status { to: Status::Paid, at, .. }) if at == "2024-05-01T08:03:12Z")
    );
    // The payment is its own fact, derived from the notification alone.
    assert_eq!(
        w.store.raw(&crate::ledger::paid_key(&no)).unwrap(),
        br#"{"transaction_id":"4200001234202405011234567890","paid_at":"2024-05-01T08:03:12Z"}"#
    );

    // Duplicates: SUCCESS, no write.
    let writes = w.store.writes.get();
    for _ in 0..3 {
        let (r, outcome) = w.notify(&w.notification(&no, |_| {}));
        assert_eq!(r.body, SUCCESS_REPLY.as_bytes());
        assert!(matches!(outcome, notify::NotifyOutcome::Duplicate { .. }));
    }
    assert_eq!(w.store.writes.get(), writes);
    assert_eq!(status_events_to(&w.order(&no), Status::Paid), 1);
}

#[test]
fn hmac_notifications_work_too() {
    let w = World::with(SignType::HmacSha256);
    let no = w.awaiting();
    let (r, _) = w.notify(&w.notification(&no, |p| {
        p.insert("sign_type".into(), "HMAC-SHA256".into());
    }));
    assert_eq!(r.body, SUCCESS_REPLY.as_bytes());
    assert_eq!(w.order(&no).status, Status::Paid);
}

#[test]
fn forged_and_hostile_notifications_change_nothing() {
    let w = World::new();
    let no = w.awaiting();
    let before = w.store.raw(&crate::order::order_key(&no));
    let writes = w.store.writes.get();
    let forged = String::from_utf8(w.notification(&no, |_| {}))
        .unwrap()
        .replace("<total_fee><![CDATA[3980]]>", "<total_fee><![CDATA[1]]>");
    let xxe = format!(
        r#"<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><xml><out_trade_no>{no}</out_trade_no><x>&e;</x></xml>"#
    );
    let other_key = {
        let mut p: Params = xml::read(&w.notification(&no, |_| {})).unwrap();
        sign_in_place(&mut p, &Secret::new("x".repeat(32)), SignType::Md5);
        xml::write(&p)
    };
    for body in [
        forged.as_bytes(),
        xxe.as_bytes(),
        other_key.as_bytes(),
        b"",
        b"not xml",
    ] {
        let (r, outcome) = w.notify(body);
        let reply = xml::read(&r.body).unwrap();
        assert_eq!(reply["return_code"], "FAIL");
        assert_eq!(r.content_type, "text/xml");
        assert!(
            matches!(outcome, notify::NotifyOutcome::Rejected { .. }),
            "{outcome:?}"
        );
    }
    assert_eq!(w.store.raw(&crate::order::order_key(&no)), before);
    assert_eq!(w.store.writes.get(), writes);
}

#[test]
fn mismatching_notifications_alert_once_and_answer_success() {
    type Edit = fn(&mut Params);
    let edits: [(&str, Edit); 3] = [
        ("total_fee", |p| {
            p.insert("total_fee".into(), "1".into());
        }),
        ("mch_id", |p| {
            p.insert("mch_id".into(), "1999999999".into());
        }),
        ("result_code", |p| {
            p.insert("result_code".into(), "FAIL".into());
            p.insert("err_code".into(), "NOTENOUGH".into());
            p.remove("time_end");
        }),
    ];
    for (what, edit) in edits {
        let w = World::new();
        let no = w.awaiting();
        let body = w.notification(&no, edit);
        let (r, outcome) = w.notify(&body);
        assert_eq!(r.body, SUCCESS_REPLY.as_bytes(), "{what}");
        assert!(
            matches!(
                &outcome,
                notify::NotifyOutcome::Alerted { recorded: true, .. }
            ),
            "{what}: {outcome:?}"
        );
        let o = w.order(&no);
        assert_eq!(o.status, Status::AwaitingPayment, "{what}");
        assert_eq!(alerts(&o).len(), 1, "{what}");
        assert!(o.events.iter().any(|e| matches!(
            e,
            Event::Notify {
                result: NotifyResult::Rejected,
                ..
            }
        )));
        // The same notification again: SUCCESS, nothing written.
        let writes = w.store.writes.get();
        let (r, outcome) = w.notify(&body);
        assert_eq!(r.body, SUCCESS_REPLY.as_bytes());
        assert!(matches!(
            outcome,
            notify::NotifyOutcome::Alerted {
                recorded: false,
                ..
            }
        ));
        assert_eq!(w.store.writes.get(), writes, "{what}");
    }
}

#[test]
fn an_alert_write_failure_answers_fail() {
    let w = World::new();
    let no = w.awaiting();
    w.store.fail_sets("order:", None);
    let (r, outcome) = w.notify(&w.notification(&no, |p| {
        p.insert("total_fee".into(), "1".into());
    }));
    assert_eq!(xml::read(&r.body).unwrap()["return_code"], "FAIL");
    assert!(matches!(outcome, notify::NotifyOutcome::Failed { .. }));
}

#[test]
fn unknown_orders_are_answered_fail() {
    let w = World::new();
    for no in ["20240501160000ffffffffffffffff", "x"] {
        let (r, outcome) = w.notify(&w.notification(no, |_| {}));
        assert_eq!(xml::read(&r.body).unwrap()["return_code"], "FAIL");
        assert!(matches!(outcome, notify::NotifyOutcome::Rejected { .. }));
    }
    assert_eq!(w.store.writes.get(), 0);
}

#[test]
fn a_failed_write_answers_fail_and_the_retry_applies_once() {
    let w = World::new();
    let no = w.awaiting();
    let body = w.notification(&no, |_| {});
    w.store.fail_sets("order:", Some(1));
    let (r, outcome) = w.notify(&body);
    assert_eq!(xml::read(&r.body).unwrap()["return_code"], "FAIL");
    assert!(matches!(outcome, notify::NotifyOutcome::Failed { .. }));
    assert_eq!(w.order(&no).status, Status::AwaitingPayment);
    w.store.fail_get.set(true);
    let (r, outcome) = w.notify(&body);
    assert_eq!(xml::read(&r.body).unwrap()["return_code"], "FAIL");
    assert!(matches!(outcome, notify::NotifyOutcome::Failed { .. }));
    w.store.heal();
    let (r, _) = w.notify(&body);
    assert_eq!(r.body, SUCCESS_REPLY.as_bytes());
    let o = w.order(&no);
    assert_eq!(o.status, Status::Paid);
    assert_eq!(status_events_to(&o, Status::Paid), 1);
}

#[test]
fn concurrent_duplicates_write_identical_bytes() {
    let w = World::new();
    let no = w.awaiting();
    let start = w.store.raw(&crate::order::order_key(&no)).unwrap();
    let body = w.notification(&no, |_| {});
    let mut results = Vec::new();
    // Two handlers that both read the same start state, at different wall-clock times.
    for delay in [1, 17] {
        let store = MemStore::default();
        store
            .data
            .borrow_mut()
            .insert(crate::order::order_key(&no), start.clone());
        let clock = FakeClock::new(NOW + delay);
        let env = Env::new(&store, (), &clock, &w.nonce, merchant(SignType::Md5));
        let (r, _) = block_on(notify::notify(&env, &Request::new(body.clone())));
        assert_eq!(r.body, SUCCESS_REPLY.as_bytes());
        results.push(store.raw(&crate::order::order_key(&no)).unwrap());
    }
    assert_eq!(results[0], results[1]);
}

#[test]
fn a_payment_for_a_locally_closed_order_is_recorded_with_an_alert() {
    let w = World::new();
    let no = w.awaiting();
    let mut o = w.order(&no);
    let _ = o
        .apply(
            crate::order::Trigger::ClosedAtWechat {
                reason: "test".into(),
            },
            "2024-05-01T08:01:00Z",
        )
        .unwrap();
    w.store.put_order(&o);
    let (r, _) = w.notify(&w.notification(&no, |_| {}));
    assert_eq!(r.body, SUCCESS_REPLY.as_bytes());
    let o = w.order(&no);
    assert_eq!(o.status, Status::Paid);
    assert_eq!(alerts(&o).len(), 1);
}

// ---- admin ----------------------------------------------------------------------------------------

#[test]
fn admin_needs_the_admin_token() {
    let w = World::new();
    for auth in [
        None,
        Some("Bearer wrong-token-xxxxxxxx".to_owned()),
        Some(format!("Bearer {}", w.token(OPENID))),
        Some(ADMIN_TOKEN.to_owned()),
    ] {
        let mut req = Request::new("");
        req.authorization = auth.clone();
        for (method, path) in [
            ("GET", "/api/admin/products"),
            ("POST", "/api/admin/reconcile"),
            ("GET", "/api/admin/nothing"),
        ] {
            let sub_path = path.strip_prefix(admin::ADMIN_PREFIX).unwrap();
            let r = block_on(admin::handle(&w.admin_env(), method, sub_path, &req));
            assert_eq!(
                (r.status, code(&r).as_str()),
                (401, "unauthorized"),
                "{auth:?} {path}"
            );
        }
        let r = block_on(admin::reconcile(&w.admin_env(), &req));
        assert_eq!(r.status, 401);
    }
    assert!(w.wx.sent.borrow().is_empty());
}

#[test]
fn admin_product_crud() {
    let w = World::new();
    let r = w.admin(
        "PUT",
        "/api/admin/products/tea-M",
        json!({"name": "Medium tea", "price": 1200}),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json_body().unwrap(),
        json!({"sku": "tea-M", "name": "Medium tea", "price": 1200, "active": true})
    );
    let r = w.admin("GET", "/api/admin/products/tea-M", Value::Null);
    assert_eq!(r.json_body().unwrap()["price"], 1200);
    let r = w.admin("GET", "/api/admin/products", Value::Null);
    let skus: Vec<String> = r.json_body().unwrap()["products"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["sku"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(skus, ["coffee-L", "old-tea", "tea-M"]);
    let r = w.admin(
        "PUT",
        "/api/admin/products/tea-M",
        json!({"name": "Medium tea", "price": 1300, "active": false}),
    );
    assert_eq!(r.json_body().unwrap()["active"], false);
    let r = w.admin("DELETE", "/api/admin/products/tea-M", Value::Null);
    assert_eq!(r.status, 204);
    let r = w.admin("DELETE", "/api/admin/products/tea-M", Value::Null);
    assert_eq!((r.status, code(&r).as_str()), (404, "unknown_sku"));
    let r = w.admin("GET", "/api/admin/products/tea-M", Value::Null);
    assert_eq!(code(&r), "unknown_sku");

    for (body, expected) in [
        (json!({"name": "", "price": 100}), "invalid_name"),
        (
            json!({"name": "x".repeat(128), "price": 100}),
            "invalid_name",
        ),
        (json!({"price": 100}), "invalid_name"),
        (json!({"name": "Tea", "price": 0}), "invalid_price"),
        (json!({"name": "Tea", "price": 1.5}), "invalid_price"),
        (json!({"name": "Tea", "price": "100"}), "invalid_price"),
        (json!({"name": "Tea", "price": -1}), "invalid_price"),
        (
            json!({"name": "Tea", "price": 1, "active": "yes"}),
            "invalid_active",
        ),
    ] {
        let r = w.admin("PUT", "/api/admin/products/tea-S", body.clone());
        assert_eq!((r.status, code(&r).as_str()), (400, expected), "{body}");
    }
    let r = w.admin(
        "PUT",
        "/api/admin/products/bad%20sku",
        json!({"name": "Tea", "price": 1}),
    );
    assert_eq!(code(&r), "invalid_sku");
    assert!(message(&r).contains("sku"));
    let r = w.admin("PATCH", "/api/admin/products/tea-S", Value::Null);
    assert_eq!(r.status, 405);
    let r = w.admin("GET", "/api/admin/elsewhere", Value::Null);
    assert_eq!((r.status, code(&r).as_str()), (404, "not_found"));
}

#[test]
fn admin_sees_the_full_order_record() {
    let w = World::new();
    let no = w.awaiting();
    let r = w.admin("GET", &format!("/api/admin/orders/{no}"), Value::Null);
    let body = r.json_body().unwrap();
    assert_eq!(body["openid"], OPENID);
    assert_eq!(body["prepay_id"], format!("wx{no}").as_str());
    assert_eq!(body["events"].as_array().unwrap().len(), 1);
    let r = w.admin(
        "GET",
        "/api/admin/orders/20240501160000ffffffffffffffff",
        Value::Null,
    );
    assert_eq!((r.status, code(&r).as_str()), (404, "order_not_found"));
}

#[test]
fn admin_lists_the_most_recent_orders_page_by_page() {
    let w = World::new();
    let mut created = Vec::new();
    for _ in 0..5 {
        created.push(w.awaiting());
        w.clock.advance(1);
    }
    created.reverse(); // newest first
    let page = |query: &str| {
        let r = w.admin("GET", &format!("/api/admin/orders{query}"), Value::Null);
        assert_eq!(r.status, 200, "{r:?}");
        r.json_body().unwrap()
    };
    let numbers = |body: &Value| -> Vec<String> {
        body["orders"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["order_no"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = page("");
    assert_eq!(numbers(&all), created);
    assert_eq!(all["next"], Value::Null);
    assert_eq!(all["orders"][0]["status"], "AWAITING_PAYMENT");
    assert_eq!(all["orders"][0]["total_fee"], 3980);
    let first = page("?limit=2");
    assert_eq!(numbers(&first), created[..2]);
    assert_eq!(first["next"], created[1].as_str());
    let second = page(&format!("?limit=2&before={}", created[1]));
    assert_eq!(numbers(&second), created[2..4]);
    let last = page(&format!("?limit=2&before={}", created[3]));
    assert_eq!(numbers(&last), created[4..]);
    assert_eq!(last["next"], Value::Null);
    for (query, code_wanted) in [
        ("?limit=0", "invalid_limit"),
        ("?limit=101", "invalid_limit"),
        ("?limit=x", "invalid_limit"),
        ("?before=a.b", "invalid_before"),
    ] {
        let r = w.admin("GET", &format!("/api/admin/orders{query}"), Value::Null);
        assert_eq!(
            (r.status, code(&r)),
            (400, code_wanted.to_owned()),
            "{query}"
        );
    }
}

#[test]
fn admin_routes_refuse_a_browsers_cross_origin_request() {
    let w = World::new();
    let call = |origin: Option<&str>, site: Option<&str>, host: Option<&str>| {
        let mut req = Request::new("").with_bearer(ADMIN_TOKEN);
        req.origin = origin.map(str::to_owned);
        req.sec_fetch_site = site.map(str::to_owned);
        req.host = host.map(str::to_owned);
        let r = block_on(admin::handle(&w.admin_env(), "GET", "/products", &req));
        let code = r.json_body().unwrap()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        (r.status, code)
    };
    let host = Some("shop.example.com");
    // curl and servers send neither header; the console is the app's own origin.
    assert_eq!(call(None, None, host).0, 200);
    assert_eq!(
        call(Some("https://shop.example.com"), Some("same-origin"), host).0,
        200
    );
    assert_eq!(call(None, Some("none"), host).0, 200);
    let refused = (403, "cross_origin_refused".to_owned());
    assert_eq!(call(Some("https://evil.example"), None, host), refused);
    assert_eq!(call(None, Some("cross-site"), host), refused);
    assert_eq!(
        call(Some("https://shop.example.com"), Some("same-site"), host),
        refused
    );
    assert_eq!(call(Some("https://shop.example.com"), None, None), refused);
    assert_eq!(call(Some("null"), None, host), refused);
}

#[test]
fn reconcile_settles_each_kind_of_order() {
    let w = World::new();
    // a: paid at WeChat, notification lost.
    let a = w.awaiting();
    w.wx.pay(&a, 3980);
    // b: expired unpaid: closed at WeChat, then here.
    let b = w.awaiting();
    // c: expired; WeChat says NOTPAY, then closeorder says ORDERPAID, then the query says paid.
    let c = w.awaiting();
    w.wx.pay(&c, 3980);
    w.wx.fault_for("/pay/orderquery", &c, Fault::State("NOTPAY"));
    // d: expired; NOTPAY then closeorder ORDERCLOSED.
    let d = w.awaiting();
    w.wx.set_state(&d, "CLOSED", 3980);
    w.wx.fault_for("/pay/orderquery", &d, Fault::State("NOTPAY"));
    // e: closed at WeChat.
    let e = w.awaiting();
    w.wx.set_state(&e, "REVOKED", 3980);
    // f: WeChat does not answer.
    let f = w.awaiting();
    w.wx.fault_for("/pay/orderquery", &f, Fault::Timeout);
    // g: already paid: not checked.
    let g = w.awaiting();
    let (_, outcome) = w.notify(&w.notification(&g, |_| {}));
    assert!(matches!(outcome, notify::NotifyOutcome::Applied { .. }));
    // h: a CREATED order WeChat never saw (its unified order timed out).
    for _ in 0..UNIFIED_ORDER_TIMEOUT_ATTEMPTS {
        w.wx.fault("/pay/unifiedorder", Fault::Timeout);
    }
    assert_eq!(
        w.create(json!({"sku": "coffee-L", "quantity": 1})).status,
        504
    );
    let h = w
        .store
        .orders()
        .into_iter()
        .find(|o| o.status == Status::Created)
        .unwrap()
        .order_no;
    w.wx.trades.borrow_mut().remove(&h);

    w.clock.advance(7200);
    // i: AWAITING_PAYMENT, not expired, unpaid: unchanged.
    let i = w.awaiting();
    // j: CREATED a moment ago: left alone.
    let mut j = w.order(&i);
    j.order_no = "20240501180000jjjjjjjjjjjjjjjj".into();
    j.status = Status::Created;
    j.created_at = crate::time::rfc3339(w.clock.now_unix() - 30);
    j.events.clear();
    w.store.put_order(&j);

    let queries_before = w.wx.sent_to("/pay/orderquery").len();
    let r = w.admin("POST", "/api/admin/reconcile", Value::Null);
    assert_eq!(r.status, 200, "{r:?}");
    let body = r.json_body().unwrap();
    assert_eq!(body["checked"], 8, "{body}");
    assert_eq!(body["paid"], 2, "{body}");
    assert_eq!(body["closed"], 4, "{body}");
    assert_eq!(body["failed"], 1, "{body}");
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1);
    assert!(errors[0].as_str().unwrap().starts_with(&f));

    assert_eq!(w.order(&a).status, Status::Paid);
    assert_eq!(w.order(&a).paid_at.as_deref(), Some("2024-05-01T08:03:12Z"));
    assert_eq!(w.order(&b).status, Status::Closed);
    assert_eq!(w.wx.trades.borrow()[&b].state, "CLOSED");
    assert_eq!(w.order(&c).status, Status::Paid);
    assert_eq!(w.order(&d).status, Status::Closed);
    assert_eq!(w.order(&e).status, Status::Closed);
    assert_eq!(w.order(&f).status, Status::AwaitingPayment);
    assert_eq!(w.order(&g).status, Status::Paid);
    assert_eq!(w.order(&h).status, Status::Closed);
    assert_eq!(w.order(&i).status, Status::AwaitingPayment);
    assert_eq!(w.order(&j.order_no).status, Status::Created);
    // Closing asked WeChat to close b, c and d (in that order), and nothing else.
    let closes: Vec<String> =
        w.wx.sent_to("/pay/closeorder")
            .iter()
            .map(|s| xml::read(s.body.as_bytes()).unwrap()["out_trade_no"].clone())
            .collect();
    let mut expected = vec![b.clone(), c.clone(), d.clone()];
    expected.sort();
    let mut closes_sorted = closes.clone();
    closes_sorted.sort();
    assert_eq!(closes_sorted, expected);
    // 8 checked + 1 re-query for c.
    assert_eq!(w.wx.sent_to("/pay/orderquery").len() - queries_before, 9);

    // A second run checks what is still open: f (now answered: expired, so closed) and i.
    let r = w.admin("POST", "/api/admin/reconcile", Value::Null);
    let body = r.json_body().unwrap();
    assert_eq!(
        (
            body["checked"].as_u64(),
            body["paid"].as_u64(),
            body["closed"].as_u64(),
            body["failed"].as_u64()
        ),
        (Some(2), Some(0), Some(1), Some(0)),
        "{body}"
    );
    assert_eq!(w.order(&f).status, Status::Closed);
}

#[test]
fn reconcile_survives_a_store_failure_per_order() {
    let w = World::new();
    let a = w.awaiting();
    let b = w.awaiting();
    w.wx.pay(&a, 3980);
    w.wx.pay(&b, 3980);
    w.store.fail_sets(&crate::order::order_key(&a), None);
    let r = w.admin("POST", "/api/admin/reconcile", Value::Null);
    let body = r.json_body().unwrap();
    assert_eq!(body["paid"], 1, "{body}");
    assert_eq!(body["failed"], 1, "{body}");
    assert_eq!(w.order(&b).status, Status::Paid);
    assert_eq!(w.order(&a).status, Status::AwaitingPayment);
}

// ---- health ---------------------------------------------------------------------------------------

#[test]
fn health_reports_problems() {
    let live: std::collections::BTreeMap<String, String> =
        [("wxpay_mode".to_owned(), "live".to_owned())]
            .into_iter()
            .collect();
    let store = MemStore::default();
    let never = std::future::pending::<()>;
    let r = block_on(health::health(&live, &store, never()));
    assert_eq!(r.status, 200);
    let body = r.json_body().unwrap();
    assert_eq!(body["mode"], "live");
    assert_eq!(body["config_ok"], false);
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    let vars: Vec<&str> = body["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["variable"].as_str().unwrap())
        .collect();
    for v in ["wx_appid", "wxpay_api_key", "session_secret", "admin_token"] {
        assert!(vars.contains(&v), "{vars:?}");
    }
    let sim: std::collections::BTreeMap<String, String> = Default::default();
    let body = block_on(health::health(&sim, &store, never()))
        .json_body()
        .unwrap();
    assert_eq!(
        body,
        json!({"mode": "simulator", "api_version": "v2", "version": env!("CARGO_PKG_VERSION"), "config_ok": true, "problems": [], "store": "ok"})
    );
    // The store failing: reported, still 200.
    store.fail_get.set(true);
    let r = block_on(health::health(&sim, &store, never()));
    assert_eq!(r.status, 200);
    assert_eq!(r.json_body().unwrap()["store"], "unavailable");
    // A store that does not answer (Spin's Redis client waiting to reconnect): reported once
    // the deadline passes, instead of a probe left hanging.
    struct Hanging;
    impl Store for Hanging {
        async fn get(&self, _: &str) -> Result<Option<Vec<u8>>, StoreError> {
            std::future::pending().await
        }
        async fn set(&self, _: &str, _: &[u8]) -> Result<(), StoreError> {
            std::future::pending().await
        }
        async fn delete(&self, _: &str) -> Result<(), StoreError> {
            std::future::pending().await
        }
        async fn keys_with_prefix(&self, _: &str) -> Result<Vec<String>, StoreError> {
            std::future::pending().await
        }
    }
    let r = block_on(health::health(&sim, &Hanging, std::future::ready(())));
    assert_eq!(r.json_body().unwrap()["store"], "unavailable");
    store.fail_get.set(false);
    let r = block_on(health::health(&sim, &store, std::future::ready(())));
    assert_eq!(
        r.json_body().unwrap()["store"],
        "ok",
        "a store that answers at once wins over a deadline already passed"
    );
}

#[test]
fn config_sections_load_together() {
    let sim: std::collections::BTreeMap<String, String> = Default::default();
    assert!(ShopConfig::load(&sim).is_ok());
    assert!(LoginFlowConfig::load(&sim).is_ok());
    assert!(AdminFlowConfig::load(&sim).is_ok());
    let live: std::collections::BTreeMap<String, String> =
        [("wxpay_mode".to_owned(), "live".to_owned())]
            .into_iter()
            .collect();
    let p = ShopConfig::load(&live).unwrap_err();
    assert!(p.mentions("wx_appid") && p.mentions("session_secret"));
    assert_eq!(p.iter().filter(|p| p.variable == "wxpay_mode").count(), 0);
    let r = Response::config_error(&p);
    assert_eq!((r.status, code(&r).as_str()), (503, "config_error"));
}

#[test]
fn client_ip_parsing() {
    assert_eq!(orders::client_ip(Some("203.0.113.9:5555")), "203.0.113.9");
    assert_eq!(orders::client_ip(Some("[2001:db8::1]:443")), "2001:db8::1");
    assert_eq!(orders::client_ip(Some("198.51.100.1")), "198.51.100.1");
    assert_eq!(orders::client_ip(Some(" 198.51.100.1:80 ")), "198.51.100.1");
    assert_eq!(orders::client_ip(Some("2001:db8::2")), "2001:db8::2");
    assert_eq!(orders::client_ip(Some("[fe80::1%2]:80")), "127.0.0.1");
    assert_eq!(orders::client_ip(Some("203.0.113.9:99999")), "127.0.0.1");
    assert_eq!(orders::client_ip(Some("garbage")), "127.0.0.1");
    assert_eq!(orders::client_ip(None), "127.0.0.1");
}

#[test]
fn refusals_have_one_answer_each() {
    use super::Refusal;
    let r = Refusal::BodyTooLarge.response();
    assert_eq!((r.status, code(&r).as_str()), (413, "body_too_large"));
    assert_eq!(
        super::check_body_size(&vec![b'x'; super::MAX_REQUEST_BODY_BYTES + 1])
            .map_err(Response::from)
            .unwrap_err(),
        r
    );
    let r = Refusal::MethodNotAllowed {
        method: "GET".into(),
        route: "/api/login".into(),
    }
    .response();
    assert_eq!((r.status, code(&r).as_str()), (405, "method_not_allowed"));
    assert!(
        r.json_body()
            .unwrap()
            .to_string()
            .contains("GET is not allowed on /api/login")
    );

    // The notify route answers WeChat's FAIL XML to a body too large or a config problem.
    for refusal in [
        Refusal::BodyTooLarge,
        Refusal::UnreadableBody("reset".into()),
        Refusal::Config(crate::config::ConfigProblems(vec![
            crate::config::ConfigProblem {
                variable: "wxpay_api_key",
                problem: "is required in live mode but is not set".into(),
            },
        ])),
    ] {
        let (r, outcome) = notify::refuse(&refusal, notify::Dialect::V2);
        assert_eq!((r.status, r.content_type), (200, "text/xml"), "{refusal:?}");
        let body = String::from_utf8(r.body).unwrap();
        assert!(
            body.contains("<return_code><![CDATA[FAIL]]></return_code>"),
            "{body}"
        );
        assert!(!outcome.is_success());
        if matches!(refusal, Refusal::Config(_)) {
            assert!(matches!(outcome, notify::NotifyOutcome::Failed { .. }));
        }
    }
}

// ---- Issue 6: outbound budget, content types, state-change logs ------------------------------

/// Answers every call HTTP 500 after `cost` seconds of the fake clock.
struct SlowBusy<'a> {
    clock: &'a FakeClock,
    cost: u64,
    calls: std::cell::Cell<usize>,
}

impl Transport for SlowBusy<'_> {
    async fn post_xml(&self, _url: &str, _body: String) -> Result<HttpReply, TransportError> {
        self.calls.set(self.calls.get() + 1);
        self.clock.advance(self.cost);
        Ok(HttpReply {
            headers: Vec::new(),
            status: 500,
            body: Vec::new(),
        })
    }
    async fn get(&self, _url: &str) -> Result<HttpReply, TransportError> {
        unreachable!("orders never GET")
    }
    async fn send(&self, _request: &OutboundRequest) -> Result<HttpReply, TransportError> {
        unreachable!("an APIv2 world sends no APIv3 request")
    }
}

#[test]
fn unified_order_starts_no_attempt_once_its_time_budget_is_spent() {
    let w = World::new();
    let slow = SlowBusy {
        clock: &w.clock,
        cost: 6,
        calls: std::cell::Cell::new(0),
    };
    let env = Env::new(
        &w.store,
        &slow,
        &w.clock,
        &w.nonce,
        ShopConfig {
            merchant: merchant(SignType::Md5),
            session: session_config(),
        },
    );
    let req = Request::new(json!({"sku": "coffee-L", "quantity": 1}).to_string())
        .with_bearer(&w.token(OPENID));
    let r = block_on(orders::create(&env, &req));
    assert_eq!(r.status, 503, "{r:?}");
    // 0 s: attempt 1; 6 s: attempt 2; 12 s ≥ the 10 s budget: no attempt 3.
    assert_eq!(slow.calls.get(), 2);
    const { assert!(orders::UNIFIED_ORDER_BUDGET_SECS < 2 * 6) };

    // Fast failures use every attempt.
    let fast = SlowBusy {
        clock: &w.clock,
        cost: 0,
        calls: std::cell::Cell::new(0),
    };
    let env = Env::new(&w.store, &fast, &w.clock, &w.nonce, env.config.clone());
    let r = block_on(orders::create(&env, &req));
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(fast.calls.get(), orders::UNIFIED_ORDER_ATTEMPTS);
}

#[test]
fn json_routes_refuse_a_non_json_content_type_with_415() {
    let w = World::new();
    let body = json!({"sku": "coffee-L", "quantity": 1}).to_string();
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "text/xml",
        "multipart/form-data; boundary=x",
    ] {
        let req = Request::new(body.clone())
            .with_bearer(&w.token(OPENID))
            .with_content_type(ct);
        let r = block_on(orders::create(&w.shop(), &req));
        assert_eq!(r.status, 415, "{ct}: {r:?}");
        assert_eq!(r.error_code().as_deref(), Some("unsupported_media_type"));
        let r = block_on(login::login(
            &w.login_env(),
            &Request::new(r#"{"code":"c1"}"#).with_content_type(ct),
        ));
        assert_eq!(
            r.error_code().as_deref(),
            Some("unsupported_media_type"),
            "{ct}"
        );
        let admin = Request::new(r#"{"name":"x","price":1}"#)
            .with_bearer(ADMIN_TOKEN)
            .with_content_type(ct);
        let r = block_on(admin::put_product(&w.admin_env(), &admin, "x1"));
        assert_eq!(
            r.error_code().as_deref(),
            Some("unsupported_media_type"),
            "{ct}"
        );
    }
    // JSON, with parameters or a +json type, and no Content-Type at all are accepted.
    for ct in [
        Some("application/json"),
        Some("Application/JSON; charset=utf-8"),
        Some("application/vnd.api+json"),
        None,
    ] {
        let mut req = Request::new(body.clone()).with_bearer(&w.token(OPENID));
        req.content_type = ct.map(str::to_owned);
        let r = block_on(orders::create(&w.shop(), &req));
        assert_eq!(r.status, 201, "{ct:?}: {r:?}");
    }
    // The size limit still comes first.
    let big = Request::new(vec![b' '; MAX_REQUEST_BODY_BYTES + 1]).with_content_type("text/plain");
    assert_eq!(json_request(&big).unwrap_err().status, 413);
}

mod input_props {
    use super::*;
    use proptest::prelude::*;

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| json!(f)),
            "\\PC{0,20}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map("[a-z_]{1,10}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Arbitrary bytes as the body of the JSON routes: never a panic, always a JSON error
        /// (or a success), never a 5xx.
        #[test]
        fn prop_json_routes_never_panic_on_bytes(body in prop::collection::vec(any::<u8>(), 0..300)) {
            let w = World::new();
            let r = block_on(orders::create(&w.shop(), &Request::new(body.clone()).with_bearer(&w.token(OPENID))));
            prop_assert!(r.status < 500 && (r.status == 201 || r.error_code().is_some()), "{r:?}");
            let r = block_on(login::login(&w.login_env(), &Request::new(body.clone())));
            prop_assert!(r.error_code().is_some() || r.status == 200, "{r:?}");
            let r = block_on(admin::put_product(&w.admin_env(), &Request::new(body).with_bearer(ADMIN_TOKEN), "p1"));
            prop_assert!(r.status < 500, "{r:?}");
        }

        /// Arbitrary order inputs: decoding never panics, the amount always comes from the
        /// catalog (1990 fen × quantity), never from the request.
        #[test]
        fn prop_order_input_is_decoded_safely(
            sku in prop_oneof![Just(json!("coffee-L")), json_value()],
            quantity in prop_oneof![(0u64..1200).prop_map(Value::from), json_value()],
            extra in prop::collection::btree_map("[a-z_]{1,10}", json_value(), 0..4),
        ) {
            let w = World::new();
            let mut body: serde_json::Map<String, Value> = extra.into_iter().collect();
            body.insert("sku".into(), sku);
            body.insert("quantity".into(), quantity);
            let r = w.create(Value::Object(body));
            prop_assert!(r.status < 500, "{r:?}");
            if r.status == 201 {
                let v = r.json_body().unwrap();
                let q = v["order"]["quantity"].as_u64().unwrap();
                prop_assert!((1..=999).contains(&q));
                prop_assert_eq!(v["order"]["total_fee"].as_u64().unwrap(), 1990 * q);
            }
        }
    }
}

#[test]
fn reconcile_closes_created_orders_whose_pay_params_were_never_handed_out() {
    let w = World::new();
    // The unified order succeeds at WeChat, but storing AWAITING_PAYMENT fails: 503, no pay
    // params, the order stays CREATED while WeChat holds an unpaid trade.
    w.store.fail_sets_after("order:", 1, Some(1));
    let r = w.create(json!({"sku": "coffee-L", "quantity": 1}));
    assert_eq!(r.status, 503, "{r:?}");
    let order_no = w.store.orders()[0].order_no.clone();
    assert_eq!(w.store.orders()[0].status, Status::Created);
    assert_eq!(w.wx.trades.borrow()[&order_no].state, "NOTPAY");

    w.clock.advance(admin::CREATED_GRACE_SECS);
    let r = w.admin("POST", "/api/admin/reconcile", Value::Null);
    let body = r.json_body().unwrap();
    assert_eq!(
        (body["checked"].clone(), body["closed"].clone()),
        (json!(1), json!(1)),
        "{body}"
    );
    assert_eq!(w.order(&order_no).status, Status::Closed);
    assert_eq!(
        w.wx.trades.borrow()[&order_no].state,
        "CLOSED",
        "closed at WeChat first"
    );
}

#[test]
fn orders_of_the_other_mode_are_refused_everywhere() {
    // A simulator order in the store of a live deployment (a shared store): nothing here may
    // settle, re-sign, close or show it.
    let w = World::new();
    let no = w.awaiting();
    let mut order = w.order(&no);
    order.mode = Mode::Simulator;
    w.store.put_order(&order);
    w.clock.advance(crate::v2::api::PREPAY_TTL_SECS + 1);
    let mismatch = |r: &Response| {
        assert_eq!(
            (r.status, code(r).as_str()),
            (409, "mode_mismatch"),
            "{r:?}"
        );
        assert!(message(r).contains("simulator mode"), "{}", message(r));
    };
    mismatch(&w.get(&no, OPENID));
    mismatch(&w.pay_params(&no, OPENID));
    mismatch(&w.admin("GET", &format!("/api/admin/orders/{no}"), Value::Null));
    // Someone else's order of the other mode is still just not found.
    assert_eq!(w.get(&no, OTHER).status, 404);
    let reconciled = w.admin("POST", "/api/admin/reconcile", Value::Null);
    let report = reconciled.json_body().unwrap();
    assert_eq!(report["failed"], 1, "{report}");
    assert!(
        report["errors"][0]
            .as_str()
            .unwrap()
            .contains("mode_mismatch")
            || report["errors"][0]
                .as_str()
                .unwrap()
                .contains("simulator mode"),
        "{report}"
    );
    assert!(w.wx.sent_to("/pay/closeorder").is_empty());
    // A notification for it: FAIL (WeChat delivers again), not paid, an alert recorded.
    let (r, outcome) = w.notify(&w.notification(&no, |_| {}));
    assert!(String::from_utf8_lossy(&r.body).contains("FAIL"), "{r:?}");
    assert!(
        matches!(outcome, notify::NotifyOutcome::Rejected { .. }),
        "{outcome:?}"
    );
    let order = w.order(&no);
    assert_eq!(order.status, Status::AwaitingPayment);
    assert!(
        alerts(&order)
            .iter()
            .any(|a| a.contains("reached a live deployment")),
        "{:?}",
        order.events
    );
}

#[test]
fn hmac_orders_take_only_hmac_signed_notifications() {
    let w = World::with(SignType::HmacSha256);
    let no = w.awaiting();
    assert_eq!(w.order(&no).sign_type, Some(SignType::HmacSha256));
    let key = merchant(SignType::HmacSha256).api_key;
    // The same notification, signed (validly, with our key) with MD5: declared, and not.
    let md5 = |no: &str, declare: bool| {
        let mut p = xml::read(&w.notification(no, |_| {})).unwrap();
        p.remove("sign_type");
        if declare {
            p.insert("sign_type".into(), "MD5".into());
        }
        sign_in_place(&mut p, key.as_ref().unwrap(), SignType::Md5);
        xml::write(&p).into_bytes()
    };
    for declared in [true, false] {
        let (r, outcome) = w.notify(&md5(&no, declared));
        assert!(String::from_utf8_lossy(&r.body).contains("FAIL"), "{r:?}");
        assert!(
            matches!(&outcome, notify::NotifyOutcome::Rejected { reason } if reason.contains("signed with MD5")),
            "{outcome:?}"
        );
        assert_eq!(w.order(&no).status, Status::AwaitingPayment);
    }
    let (r, _) = w.notify(&w.notification(&no, |_| {}));
    assert_eq!(r.body, SUCCESS_REPLY.as_bytes());
    assert_eq!(w.order(&no).status, Status::Paid);

    // An order made with MD5 before the switch to HMAC-SHA256 is settled with MD5.
    let no = w.awaiting();
    let mut order = w.order(&no);
    order.sign_type = Some(SignType::Md5);
    w.store.put_order(&order);
    let (r, _) = w.notify(&md5(&no, false));
    assert_eq!(r.body, SUCCESS_REPLY.as_bytes(), "{r:?}");
}

#[test]
fn errors_echo_at_most_64_characters_of_input_and_no_store_text() {
    let w = World::new();
    let long = "x".repeat(500);
    let r = w.create(json!({"sku": long, "quantity": 1}));
    assert_eq!(code(&r), "unknown_sku");
    assert!(message(&r).len() < 100, "{}", message(&r));
    let r = w.admin("GET", &format!("/api/admin/{long}"), Value::Null);
    assert_eq!(r.status, 404);
    assert!(message(&r).len() < 100, "{}", message(&r));
    let r = Refusal::MethodNotAllowed {
        method: long.clone(),
        route: "/api/login".into(),
    }
    .response();
    assert!(message(&r).len() < 100, "{}", message(&r));
    // The store's own error text stays in the log.
    w.store.fail_sets("order:", None);
    let r = w.create(json!({"sku": "coffee-L", "quantity": 1}));
    assert_eq!(code(&r), "store_unavailable");
    assert_eq!(message(&r), "the key-value store is unavailable; try again");
}

/// A record of the first storage format, as the single-record model wrote it.
fn first_format_record(no: &str, status: &str, paid: bool) -> Vec<u8> {
    let mut events = vec![
        json!({"type": "status", "at": "2024-05-01T08:00:00Z", "from": "CREATED", "to": "AWAITING_PAYMENT"}),
    ];
    let mut record = json!({
        "version": 1, "order_no": no, "openid": OPENID, "sku": "coffee-L", "quantity": 2,
        "total_fee": 3980, "description": "Large coffee", "status": status,
        "prepay_id": "wx201410272009395522657a690389285100", "prepay_expires_at": NOW + 7200,
        "created_at": "2024-05-01T08:00:00Z", "mode": "live", "last_checked_at": NOW,
    });
    if paid {
        record["transaction_id"] = json!("4200001234202405011234567890");
        record["paid_at"] = json!("2024-05-01T08:03:12Z");
        events.push(json!({"type": "status", "at": "2024-05-01T08:03:12Z", "from": "AWAITING_PAYMENT", "to": "PAID"}));
        events.push(json!({"type": "notify", "at": "2024-05-01T08:03:12Z", "transaction_id": "4200001234202405011234567890", "result": "applied"}));
    }
    record["events"] = json!(events);
    record.to_string().into_bytes()
}

#[test]
fn first_format_records_still_read_and_settle() {
    let w = World::new();
    // A paid one: shown PAID with its history; its notification again is a duplicate.
    let paid = "20240501160000aaaaaaaaaaaaaaaa";
    block_on(
        w.store
            .set(&order_key(paid), &first_format_record(paid, "PAID", true)),
    )
    .unwrap();
    let view = w.get(paid, OPENID).json_body().unwrap();
    assert_eq!(view["status"], "PAID");
    assert_eq!(view["transaction_id"], "4200001234202405011234567890");
    let (r, outcome) = w.notify(&w.notification(paid, |_| {}));
    assert_eq!(r.body, SUCCESS_REPLY.as_bytes());
    assert!(
        matches!(outcome, notify::NotifyOutcome::Duplicate { .. }),
        "{outcome:?}"
    );
    let admin = w.admin("GET", &format!("/api/admin/orders/{paid}"), Value::Null);
    let order = admin.json_body().unwrap();
    let kinds: Vec<&str> = order["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["status", "status", "notify"]);
    assert_eq!(status_events_to(&w.order(paid), Status::Paid), 1);
    // One awaiting payment: a notification pays it through a fact beside the old record, which
    // is left as it was.
    let open = "20240501160000bbbbbbbbbbbbbbbb";
    let before = first_format_record(open, "AWAITING_PAYMENT", false);
    block_on(w.store.set(&order_key(open), &before)).unwrap();
    assert_eq!(w.pay_params(open, OPENID).status, 200);
    let (r, _) = w.notify(&w.notification(open, |_| {}));
    assert_eq!(r.body, SUCCESS_REPLY.as_bytes());
    assert_eq!(w.store.raw(&order_key(open)), Some(before));
    let order = w.order(open);
    assert_eq!(order.status, Status::Paid);
    assert_eq!(order.version, 1);
    assert_eq!(status_events_to(&order, Status::Paid), 1);
    assert_eq!(w.get(open, OPENID).json_body().unwrap()["status"], "PAID");
}

/// WeChat that takes `secs` per call (the world's clock moves on with each).
struct SlowWechat<'a> {
    wx: &'a FakeWechat,
    clock: &'a FakeClock,
    secs: u64,
}

impl Transport for SlowWechat<'_> {
    async fn post_xml(&self, url: &str, body: String) -> Result<HttpReply, TransportError> {
        self.clock.advance(self.secs);
        self.wx.post_xml(url, body).await
    }
    async fn get(&self, url: &str) -> Result<HttpReply, TransportError> {
        self.clock.advance(self.secs);
        self.wx.get(url).await
    }
    async fn send(&self, request: &OutboundRequest) -> Result<HttpReply, TransportError> {
        self.clock.advance(self.secs);
        self.wx.send(request).await
    }
}

#[test]
fn reconcile_works_within_a_time_budget_and_resumes_where_it_stopped() {
    let w = World::new();
    let mut numbers: Vec<String> = (0..5).map(|_| w.awaiting()).collect();
    numbers.sort();
    for no in &numbers {
        w.wx.pay(no, 3980);
    }
    let slow = SlowWechat {
        wx: &w.wx,
        clock: &w.clock,
        secs: 8,
    };
    let env = Env::new(&w.store, &slow, &w.clock, &w.nonce, w.admin_env().config);
    let run = || block_on(admin::run_reconcile(&env)).unwrap();
    // 8 s per orderquery, 20 s per run: three orders, then the budget is spent.
    let first = run();
    assert_eq!((first.paid, first.complete), (3, false), "{first:?}");
    assert_eq!(
        w.store.raw(admin::RECONCILE_CURSOR_KEY),
        Some(numbers[2].clone().into_bytes())
    );
    // The next run begins after the cursor: the two left, then round to the settled ones.
    let second = run();
    assert_eq!((second.paid, second.complete), (2, true), "{second:?}");
    assert!(w.store.raw(admin::RECONCILE_CURSOR_KEY).is_none());
    for no in &numbers {
        assert_eq!(w.order(no).status, Status::Paid, "{no}");
    }
}

#[test]
fn a_refunded_trade_is_recorded_as_paid_then_refunded() {
    // WeChat took the payment and it was refunded before we heard of it (orderquery REFUND):
    // the money did move, so the order is PAID — and the refund is on record, not silent.
    let w = World::new();
    let no = w.awaiting();
    w.wx.set_state(&no, "REFUND", 3980);
    let r = w.admin("POST", "/api/admin/reconcile", Value::Null);
    assert_eq!(r.json_body().unwrap()["paid"], 1, "{r:?}");
    let order = w.order(&no);
    assert_eq!(order.status, Status::Paid);
    assert!(
        alerts(&order).iter().any(|a| a.contains("REFUND")),
        "{:?}",
        order.events
    );
    // The refund alert is a fact of its own.
    assert!(
        w.store
            .data
            .borrow()
            .keys()
            .any(|k| k.starts_with(&crate::ledger::alert_prefix(&no)))
    );
}
