//! Shared by the fuzz targets: a test merchant, in-memory ports and a `block_on` for flows whose
//! ports never pend.
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::task::{Context, Poll, Waker};

use wxpay::config::{AdminConfig, LoginConfig, MerchantConfig, Mode, SessionConfig};
use wxpay::flows::{Clock, HttpReply, Nonce, Store, StoreError, Transport, TransportError};
use wxpay::money::Fen;
use wxpay::order::{NewOrder, Order, Product};
use wxpay::secret::Secret;
use wxpay::v2::sign::SignType;

pub const API_KEY: &str = "Aa1Bb2Cc3Dd4Ee5Ff6Gg7Hh8Ii9Jj0Kk";
pub const SESSION_SECRET: &str = "fuzz session secret, thirty-two bytes or more";
pub const NOW: u64 = 1_780_000_000;

pub fn merchant(sign_type: SignType) -> MerchantConfig {
    MerchantConfig {
        mode: Mode::Live,
        appid: "wx1234567890abcdef".into(),
        mch_id: "1900000109".into(),
        api_key: Secret::new(API_KEY),
        sign_type,
        notify_url: "https://shop.example.com/api/wxpay/notify".into(),
        mch_api: "https://api.mch.weixin.qq.com".into(),
    }
}

pub fn session() -> SessionConfig {
    SessionConfig {
        secret: Secret::new(SESSION_SECRET),
        ttl_secs: 7200,
    }
}

pub fn login() -> LoginConfig {
    LoginConfig {
        mode: Mode::Live,
        appid: "wx1234567890abcdef".into(),
        app_secret: Secret::new("0f1e2d3c4b5a69788796a5b4c3d2e1f0"),
        wx_api: "https://api.weixin.qq.com".into(),
    }
}

pub fn admin() -> AdminConfig {
    AdminConfig {
        token: Secret::new("fuzz-admin-token-0123"),
    }
}

pub fn product(price: u64) -> Product {
    Product {
        sku: "tea".into(),
        name: "Tea".into(),
        price: Fen(price.max(1)),
        active: true,
    }
}

/// An AWAITING_PAYMENT-shaped order (status CREATED) of `total` fen.
pub fn order(order_no: &str, total: u64) -> Order {
    let p = product(total);
    Order::new(NewOrder {
        order_no: order_no.into(),
        openid: "oFuzz_user_0123456789".into(),
        product: &p,
        quantity: 1,
        attach: None,
        mode: Mode::Live,
        created_at: "2026-05-28T00:00:00Z".into(),
    })
    .expect("a valid order")
}

/// Runs a future whose ports never pend.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("a fuzz port returned Pending"),
    }
}

#[derive(Default)]
pub struct MemStore(pub RefCell<BTreeMap<String, Vec<u8>>>);

impl Store for MemStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.0.borrow().get(key).cloned())
    }
    async fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.0.borrow_mut().insert(key.into(), value.to_vec());
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

/// Answers every call with the same canned reply body.
pub struct Canned(pub Vec<u8>);

impl Transport for Canned {
    async fn post_xml(&self, _url: &str, _body: String) -> Result<HttpReply, TransportError> {
        Ok(HttpReply {
            status: 200,
            body: self.0.clone(),
        })
    }
    async fn get(&self, _url: &str) -> Result<HttpReply, TransportError> {
        Ok(HttpReply {
            status: 200,
            body: self.0.clone(),
        })
    }
}

pub struct FixedClock;
impl Clock for FixedClock {
    fn now_unix(&self) -> u64 {
        NOW
    }
}

pub struct FixedNonce;
impl Nonce for FixedNonce {
    fn random16(&self) -> [u8; 16] {
        [7; 16]
    }
}

/// Splits fuzz bytes into `key=value` pairs (one per line), for structured messages.
pub fn fields(data: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(data)
        .lines()
        .filter_map(|l| l.split_once('='))
        // Only names an XML element can have (we never write others; `xml::write` asserts it).
        .filter(|(k, _)| {
            k.bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}
