//! `cargo bench`: the core's hot paths, natively (docs/PERFORMANCE.md).
//!
//! The message is PROTOCOL.md's S6 payment notification with the key of S1 (the simulator's
//! public test key); the full-flow benchmark runs `flows::notify::notify` for a duplicate of an
//! applied notification against an in-memory store, the notify route's steady state under
//! WeChat's retries. The APIv3 rows use the simulator's development keys: the RSA-2048
//! private-key operation (a paySign, an `Authorization`), the public-key verification and the
//! AES-256-GCM decryption of a notification, each alone and in the notify flow.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use criterion::{Criterion, criterion_group, criterion_main};
use wxpay::config::{MerchantConfig, Mode};
use wxpay::flows::{Clock, Env, Request, Store, StoreError};
use wxpay::money::Fen;
use wxpay::order::{NewOrder, Order, Product, Status, Trigger, TriggerKind, order_key};
use wxpay::secret::Secret;
use wxpay::v2::sign::{self, SignType};
use wxpay::v2::{Params, notify, xml};

/// PROTOCOL.md S1's key (also the simulator's).
const KEY: &str = "192006250b4c09247ec02edce69f6a2d";
const OPENID: &str = "oUpF8uMEb4qRXf22hE3X68TekukE";
const ORDER_NO: &str = "1409811653";
const TRANSACTION_ID: &str = "1004400740201409030005092168";
/// S6 + a day: 2014-09-04T05:15:40Z.
const NOW: u64 = 1_409_807_740;

/// PROTOCOL.md S6: the fields of a typical payment notification, unsigned.
fn s6_fields() -> Params {
    [
        ("appid", "wxd930ea5d5a258f4f"),
        ("bank_type", "CFT"),
        ("cash_fee", "1"),
        ("fee_type", "CNY"),
        ("is_subscribe", "N"),
        ("mch_id", "10000100"),
        ("nonce_str", "5d2b6c2a8db53831f7eda20af46e531c"),
        ("openid", OPENID),
        ("out_trade_no", ORDER_NO),
        ("result_code", "SUCCESS"),
        ("return_code", "SUCCESS"),
        ("time_end", "20140903131540"),
        ("total_fee", "1"),
        ("trade_type", "JSAPI"),
        ("transaction_id", TRANSACTION_ID),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn signed(sign_type: SignType) -> Params {
    let mut params = s6_fields();
    sign::sign_in_place(&mut params, &Secret::new(KEY), sign_type);
    params
}

/// The S6 order awaiting payment (the S6 notification pays it).
fn awaiting_order() -> Order {
    let product = Product {
        sku: "demo".into(),
        name: "QQ会员充值".into(),
        price: Fen(1),
        active: true,
    };
    let mut order = Order::new(NewOrder {
        order_no: ORDER_NO.into(),
        openid: OPENID.into(),
        product: &product,
        quantity: 1,
        attach: None,
        mode: Mode::Simulator,
        created_at: "2014-09-03T05:14:00Z".into(),
    })
    .expect("valid order");
    let _applied = order
        .apply(
            Trigger::PrepayObtained {
                prepay_id: "wx201410272009395522657a690389285100".into(),
                expires_at: NOW + 7200,
            },
            "2014-09-03T05:14:01Z",
        )
        .expect("prepay");
    order
}

/// An in-memory `Store`: what the notify flow reads in the benchmark.
#[derive(Default)]
struct MemStore(RefCell<HashMap<String, Vec<u8>>>);

impl Store for MemStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.0.borrow().get(key).cloned())
    }
    async fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.0.borrow_mut().insert(key.to_owned(), value.to_vec());
        Ok(())
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.0.borrow_mut().remove(key);
        Ok(())
    }
    async fn keys_with_prefix(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .0
            .borrow()
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect())
    }
}

struct FixedClock;

impl Clock for FixedClock {
    fn now_unix(&self) -> u64 {
        NOW
    }
}

/// Runs a future that never waits (the in-memory store answers at once).
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the benchmark's ports never wait"),
    }
}

fn signatures(c: &mut Criterion) {
    let key = Secret::new(KEY);
    for (name, sign_type) in [
        ("md5", SignType::Md5),
        ("hmac_sha256", SignType::HmacSha256),
    ] {
        let fields = s6_fields();
        c.bench_function(&format!("sign/{name}/s6"), |b| {
            b.iter(|| sign::sign(black_box(&fields), &key, sign_type))
        });
        let message = signed(sign_type);
        c.bench_function(&format!("verify/{name}/s6"), |b| {
            b.iter(|| sign::verify(black_box(&message), &key).expect("verifies"))
        });
    }
}

fn xml_codec(c: &mut Criterion) {
    let message = signed(SignType::Md5);
    let body = xml::write(&message);
    c.bench_function("xml/write/s6", |b| {
        b.iter(|| xml::write(black_box(&message)))
    });
    c.bench_function("xml/read/s6", |b| {
        b.iter(|| xml::read(black_box(body.as_bytes())).expect("reads"))
    });
}

fn notification(c: &mut Criterion) {
    for (name, sign_type) in [
        ("md5", SignType::Md5),
        ("hmac_sha256", SignType::HmacSha256),
    ] {
        let merchant = MerchantConfig::simulator(sign_type);
        let body = xml::write(&signed(sign_type));
        // What "the core's notification verify" means: XML read + signature check.
        c.bench_function(&format!("notify/parse_verify/{name}/s6"), |b| {
            b.iter(|| notify::parse(black_box(body.as_bytes()), &merchant).expect("verifies"))
        });
    }
}

fn pay_params_and_session(c: &mut Criterion) {
    let key = Secret::new(KEY);
    for (name, sign_type) in [
        ("md5", SignType::Md5),
        ("hmac_sha256", SignType::HmacSha256),
    ] {
        c.bench_function(&format!("pay_params/{name}"), |b| {
            b.iter(|| {
                wxpay::pay_params::pay_params(
                    "wxd930ea5d5a258f4f",
                    black_box("wx201410272009395522657a690389285100"),
                    &key,
                    sign_type,
                    NOW,
                    "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
                )
            })
        });
    }
    let secret = Secret::new("0123456789abcdef0123456789abcdef-session");
    let token = wxpay::session::issue(&secret, OPENID, NOW, 7200).expect("issues");
    c.bench_function("session/verify", |b| {
        b.iter(|| wxpay::session::verify(&secret, black_box(&token), NOW).expect("valid"))
    });
}

fn order_transition(c: &mut Criterion) {
    c.bench_function("order/transition_table", |b| {
        b.iter(|| {
            wxpay::order::transition(
                black_box(Status::AwaitingPayment),
                TriggerKind::PaymentConfirmed,
            )
        })
    });
    let awaiting = awaiting_order();
    c.bench_function("order/apply_payment", |b| {
        b.iter(|| {
            let mut order = awaiting.clone();
            let applied = order
                .apply(
                    Trigger::PaymentConfirmed {
                        transaction_id: TRANSACTION_ID.into(),
                    },
                    "2014-09-03T05:15:40Z",
                )
                .expect("applies");
            (order, applied)
        })
    });
    let json = awaiting.to_json().expect("encodes");
    c.bench_function("order/from_json", |b| {
        b.iter(|| Order::from_json(black_box(&json)).expect("decodes"))
    });
}

fn notify_flow(c: &mut Criterion) {
    for (name, sign_type) in [
        ("md5", SignType::Md5),
        ("hmac_sha256", SignType::HmacSha256),
    ] {
        let store = MemStore::default();
        let env = Env::new(
            &store,
            (),
            FixedClock,
            (),
            MerchantConfig::simulator(sign_type),
        );
        let body = xml::write(&signed(sign_type));
        // Stores the order, then applies the notification once: every later one is a duplicate.
        let order = awaiting_order();
        ready(store.set(&order_key(ORDER_NO), &order.to_json().expect("encodes"))).expect("stored");
        let request = Request::new(body);
        let (_, first) = ready(wxpay::flows::notify::notify(&env, &request));
        assert!(first.is_success(), "{first:?}");
        c.bench_function(&format!("flow/notify_duplicate/{name}"), |b| {
            b.iter(|| {
                let (response, outcome) =
                    ready(wxpay::flows::notify::notify(&env, black_box(&request)));
                debug_assert!(matches!(
                    outcome,
                    wxpay::flows::notify::NotifyOutcome::Duplicate { .. }
                ));
                response
            })
        });
    }
}

/// The S6 payment as an APIv3 notification signed and encrypted with the simulator's keys.
fn v3_notification() -> Request {
    let transaction = serde_json::json!({
        "appid": wxpay::config::SIM_APPID, "mchid": wxpay::config::SIM_MCH_ID,
        "out_trade_no": ORDER_NO, "transaction_id": TRANSACTION_ID, "trade_type": "JSAPI",
        "trade_state": "SUCCESS", "success_time": "2014-09-03T13:15:40+08:00",
        "payer": {"openid": OPENID}, "amount": {"total": 1, "currency": "CNY"}
    })
    .to_string();
    let body = wxpay::v3::notify::payment_envelope(
        &Secret::new(wxpay::config::SIM_APIV3_KEY),
        "0123456789ab",
        "EV-1",
        "2014-09-03T13:15:41+08:00",
        &transaction,
    )
    .expect("encrypts");
    let wechat = wxpay::v3::sign::MerchantKey::from_pem(wxpay::config::SIM_WECHATPAY_PRIVATE_KEY)
        .expect("parses");
    let headers = wxpay::v3::sign::wechatpay_headers(
        &wechat,
        wxpay::config::SIM_WECHATPAY_PUBLIC_KEY_ID,
        NOW,
        "c5ac7061fccab6bf3e254dcf98995b8c",
        body.as_bytes(),
    );
    let mut request = Request::new(body);
    request.wechatpay = Some(headers);
    request
}

fn v3(c: &mut Criterion) {
    let merchant =
        wxpay::v3::sign::MerchantKey::from_pem(wxpay::config::SIM_MCH_PRIVATE_KEY).expect("parses");
    c.bench_function("v3/pay_sign_rsa2048", |b| {
        b.iter(|| {
            wxpay::v3::sign::pay_sign(
                &merchant,
                black_box(wxpay::config::SIM_APPID),
                "1414561699",
                "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
                "prepay_id=wx201410272009395522657a690389285100",
            )
        })
    });
    c.bench_function("v3/merchant_key_from_pem", |b| {
        b.iter(|| {
            wxpay::v3::sign::MerchantKey::from_pem(black_box(wxpay::config::SIM_MCH_PRIVATE_KEY))
        })
    });
    let request = v3_notification();
    let headers = request.wechatpay.clone().expect("signed");
    let keys = [wxpay::v3::verify::WechatPayKey {
        id: wxpay::config::SIM_WECHATPAY_PUBLIC_KEY_ID.into(),
        key: wxpay::v3::verify::PublicKey::from_pem(wxpay::config::SIM_WECHATPAY_PUBLIC_KEY)
            .expect("parses"),
    }];
    c.bench_function("v3/verify_notification_rsa2048", |b| {
        b.iter(|| wxpay::v3::verify::verify(&headers.signed(black_box(&request.body)), &keys, NOW))
    });
    let envelope: serde_json::Value = serde_json::from_slice(&request.body).expect("json");
    let key = Secret::new(wxpay::config::SIM_APIV3_KEY);
    let ciphertext = envelope["resource"]["ciphertext"].as_str().expect("text");
    c.bench_function("v3/decrypt_resource_aes256gcm", |b| {
        b.iter(|| {
            wxpay::v3::aead::decrypt(&key, "0123456789ab", "transaction", black_box(ciphertext))
        })
    });
    // The whole notify flow for a duplicate (verify, decrypt, read, judge; no write).
    let store = MemStore::default();
    let env = Env::new(
        &store,
        (),
        FixedClock,
        (),
        MerchantConfig::simulator(SignType::Md5),
    );
    let order = awaiting_order();
    ready(store.set(&order_key(ORDER_NO), &order.to_json().expect("encodes"))).expect("stored");
    let (_, first) = ready(wxpay::flows::notify::notify(&env, &request));
    assert!(first.is_success(), "{first:?}");
    c.bench_function("flow/notify_duplicate/v3", |b| {
        b.iter(|| ready(wxpay::flows::notify::notify(&env, black_box(&request))))
    });
}

criterion_group!(
    benches,
    signatures,
    xml_codec,
    notification,
    pay_params_and_session,
    order_transition,
    notify_flow,
    v3
);
criterion_main!(benches);
