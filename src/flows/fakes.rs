//! Test doubles of the ports: an in-memory store with failure injection, a fake WeChat that
//! verifies our signatures and answers signed replies, a settable clock, a counting nonce.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::task::{Context, Poll, Waker};

use super::{
    Clock, HttpReply, Nonce, OutboundRequest, Store, StoreError, Transport, TransportError,
};
use crate::config::{LoginConfig, MerchantConfig};
use crate::order::{Order, Product, order_key, product_key};
use crate::v2::Params;
use crate::v2::sign::{sign_in_place, verify};
use crate::v2::xml;

/// Runs a future that never pends (every fake answers at once).
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("a fake port returned Pending"),
    }
}

// ---- Store ----------------------------------------------------------------------------------------

#[derive(Default)]
pub struct MemStore {
    pub data: RefCell<BTreeMap<String, Vec<u8>>>,
    /// Successful `set` and `delete` calls.
    pub writes: Cell<usize>,
    /// `set` fails for keys with this prefix: `Some(n)` the next n times, `None` always.
    fail_set: RefCell<Option<(String, usize, Option<usize>)>>,
    pub fail_get: Cell<bool>,
}

impl MemStore {
    pub fn fail_sets(&self, prefix: &str, times: Option<usize>) {
        self.fail_sets_after(prefix, 0, times);
    }

    /// Lets `skip` matching sets through, then fails as [`MemStore::fail_sets`].
    pub fn fail_sets_after(&self, prefix: &str, skip: usize, times: Option<usize>) {
        *self.fail_set.borrow_mut() = Some((prefix.to_owned(), skip, times));
    }

    pub fn heal(&self) {
        *self.fail_set.borrow_mut() = None;
        self.fail_get.set(false);
    }

    pub fn raw(&self, key: &str) -> Option<Vec<u8>> {
        self.data.borrow().get(key).cloned()
    }

    /// The order as every fact stored for it makes it (base record, payment, closing,
    /// refusal, alerts), read without going through the failure switches.
    pub fn order(&self, order_no: &str) -> Option<Order> {
        let keys: Vec<String> = self.data.borrow().keys().cloned().collect();
        crate::ledger::read_order_from(order_no, |k| self.raw(k), &keys)
    }

    pub fn put_order(&self, order: &Order) {
        self.data
            .borrow_mut()
            .insert(order_key(&order.order_no), order.to_json().unwrap());
    }

    pub fn put_product(&self, product: &Product) {
        self.data.borrow_mut().insert(
            product_key(&product.sku),
            serde_json::to_vec(product).unwrap(),
        );
    }

    pub fn orders(&self) -> Vec<Order> {
        let numbers: Vec<String> = self
            .data
            .borrow()
            .keys()
            .filter_map(|k| crate::ledger::base_order_no(k).map(str::to_owned))
            .collect();
        numbers.iter().filter_map(|no| self.order(no)).collect()
    }
}

impl Store for MemStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        if self.fail_get.get() {
            return Err(StoreError("injected get failure".into()));
        }
        Ok(self.raw(key))
    }

    async fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let mut fail = self.fail_set.borrow_mut();
        if let Some((prefix, skip, times)) = fail.as_mut()
            && key.starts_with(prefix.as_str())
        {
            if *skip > 0 {
                *skip -= 1;
            } else {
                match times {
                    None => return Err(StoreError("injected set failure".into())),
                    Some(0) => {}
                    Some(n) => {
                        *n -= 1;
                        return Err(StoreError("injected set failure".into()));
                    }
                }
            }
        }
        self.data
            .borrow_mut()
            .insert(key.to_owned(), value.to_vec());
        self.writes.set(self.writes.get() + 1);
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.data.borrow_mut().remove(key);
        self.writes.set(self.writes.get() + 1);
        Ok(())
    }

    async fn keys_with_prefix(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .data
            .borrow()
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect())
    }
}

// ---- Clock and nonce --------------------------------------------------------------------------------

pub struct FakeClock(pub Cell<u64>);

impl FakeClock {
    pub fn new(now: u64) -> Self {
        Self(Cell::new(now))
    }
    pub fn advance(&self, secs: u64) {
        self.0.set(self.0.get() + secs);
    }
}

impl Clock for FakeClock {
    fn now_unix(&self) -> u64 {
        self.0.get()
    }
}

#[derive(Default)]
pub struct CountingNonce(pub Cell<u128>);

impl Nonce for CountingNonce {
    fn random16(&self) -> [u8; 16] {
        let n = self.0.get() + 1;
        self.0.set(n);
        // Spread the count so the first 8 bytes (order numbers) differ too.
        (n.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)).to_be_bytes()
    }
}

// ---- Fake WeChat ----------------------------------------------------------------------------------

/// A scripted fault, consumed by the first matching request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    Timeout,
    Unreachable,
    Denied,
    Http(u16),
    /// result_code FAIL with this err_code.
    Refuse(&'static str),
    /// return_code FAIL with this return_msg.
    ReturnFail(&'static str),
    /// A reply whose signature does not verify.
    BadSignature,
    /// A validly signed reply about another merchant.
    ForeignMchId,
    /// orderquery answers this trade_state this once (no payment fields unless SUCCESS).
    State(&'static str),
    /// APIv3: the reply is signed `secs` away from the request's time.
    Skewed(i64),
    /// APIv3: the reply carries a `WECHATPAY/SIGNTEST/` probe signature.
    SignTest,
    /// APIv3: the reply is signed under a serial nobody configured.
    UnknownSerial,
    /// APIv3: the reply has no `Wechatpay-*` headers.
    Unsigned,
}

/// A trade as WeChat knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trade {
    pub state: String,
    pub total_fee: u64,
    pub transaction_id: String,
    pub time_end: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub url: String,
    pub body: String,
}

pub struct FakeWechat {
    pub merchant: MerchantConfig,
    pub login: LoginConfig,
    pub sent: RefCell<Vec<Sent>>,
    /// (path suffix, out_trade_no or None for any, fault).
    faults: RefCell<Vec<(&'static str, Option<String>, Fault)>>,
    pub trades: RefCell<HashMap<String, Trade>>,
    /// js_code → JSON reply.
    pub codes: RefCell<HashMap<String, String>>,
    /// How APIv3 replies are signed.
    pub v3_signer: RefCell<V3Signer>,
    /// The platform certificates `GET /v3/certificates` lists (PEM).
    pub v3_listed: RefCell<Vec<&'static str>>,
    /// Refunds WeChat made, by `out_refund_no`: (out_trade_no, refund_fee). One per number,
    /// however often it is asked (WeChat's rule).
    pub refunds: RefCell<BTreeMap<String, (String, u64)>>,
    /// Refund requests received, by `out_refund_no` (retries included).
    pub refund_requests: RefCell<BTreeMap<String, usize>>,
    /// How a refund stands at WeChat when queried (both versions' word, e.g. `SUCCESS`);
    /// `PROCESSING` when not set.
    pub refund_states: RefCell<BTreeMap<String, &'static str>>,
}

pub const PAID_TIME_END: &str = "20240501160312";

impl FakeWechat {
    pub fn new(merchant: MerchantConfig, login: LoginConfig) -> Self {
        Self {
            merchant,
            login,
            sent: RefCell::default(),
            faults: RefCell::default(),
            trades: RefCell::default(),
            codes: RefCell::default(),
            v3_signer: RefCell::new(V3Signer::public_key()),
            v3_listed: RefCell::new(vec![V3Signer::PLATFORM_CERT]),
            refunds: RefCell::default(),
            refund_requests: RefCell::default(),
            refund_states: RefCell::default(),
        }
    }

    /// WeChat's side of a refund request: counted, and made once per number (a refund of an
    /// unknown or unpaid trade, or over its total, is refused with `err_code`).
    fn take_refund(
        &self,
        order_no: &str,
        refund_no: &str,
        refund_fee: u64,
    ) -> Result<(), &'static str> {
        *self
            .refund_requests
            .borrow_mut()
            .entry(refund_no.to_owned())
            .or_default() += 1;
        let trades = self.trades.borrow();
        let Some(trade) = trades.get(order_no) else {
            return Err("ORDERNOTEXIST");
        };
        if trade.state != "SUCCESS" && trade.state != "REFUND" {
            return Err("TRADE_STATE_ERROR");
        }
        let mut refunds = self.refunds.borrow_mut();
        if let Some((_, fee)) = refunds.get(refund_no) {
            return if *fee == refund_fee {
                Ok(())
            } else {
                Err("INVALID_REQUEST")
            };
        }
        // A closed refund gave nothing back.
        let states = self.refund_states.borrow();
        let refunded: u64 = refunds
            .iter()
            .filter(|(refund_no, (no, _))| {
                no == order_no && states.get(*refund_no) != Some(&"CLOSED")
            })
            .map(|(_, (_, fee))| fee)
            .sum();
        if refunded + refund_fee > trade.total_fee {
            return Err("INVALID_REQUEST");
        }
        refunds.insert(refund_no.to_owned(), (order_no.to_owned(), refund_fee));
        Ok(())
    }

    /// A refund WeChat made, as a query finds it: (out_trade_no, fee, total, status).
    fn queried_refund(&self, refund_no: &str) -> Option<(String, u64, u64, &'static str)> {
        let (order_no, fee) = self.refunds.borrow().get(refund_no).cloned()?;
        let total = self.trades.borrow().get(&order_no)?.total_fee;
        let status = self
            .refund_states
            .borrow()
            .get(refund_no)
            .copied()
            .unwrap_or("PROCESSING");
        Some((order_no, fee, total, status))
    }

    pub fn fault(&self, path: &'static str, fault: Fault) {
        self.faults.borrow_mut().push((path, None, fault));
    }

    pub fn fault_for(&self, path: &'static str, order_no: &str, fault: Fault) {
        self.faults
            .borrow_mut()
            .push((path, Some(order_no.to_owned()), fault));
    }

    pub fn sent_to(&self, path: &str) -> Vec<Sent> {
        self.sent
            .borrow()
            .iter()
            .filter(|s| s.url.split('?').next().unwrap().ends_with(path))
            .cloned()
            .collect()
    }

    /// WeChat's side of a payment: the trade is now SUCCESS.
    pub fn pay(&self, order_no: &str, total_fee: u64) -> Trade {
        let trade = Trade {
            state: "SUCCESS".into(),
            total_fee,
            transaction_id: format!("4200{order_no}"),
            time_end: PAID_TIME_END.into(),
        };
        self.trades
            .borrow_mut()
            .insert(order_no.to_owned(), trade.clone());
        trade
    }

    pub fn set_state(&self, order_no: &str, state: &str, total_fee: u64) {
        let mut trades = self.trades.borrow_mut();
        let t = trades.entry(order_no.to_owned()).or_insert(Trade {
            state: String::new(),
            total_fee,
            transaction_id: format!("4200{order_no}"),
            time_end: PAID_TIME_END.into(),
        });
        t.state = state.into();
    }

    /// A trade WeChat was asked to create (kept as it is if it exists: a retry).
    fn open_trade(&self, order_no: &str, total_fee: u64) {
        self.trades
            .borrow_mut()
            .entry(order_no.to_owned())
            .or_insert(Trade {
                state: "NOTPAY".into(),
                total_fee,
                transaction_id: format!("4200{order_no}"),
                time_end: PAID_TIME_END.into(),
            });
    }

    fn take_fault(&self, path: &str, order_no: &str) -> Option<Fault> {
        let mut faults = self.faults.borrow_mut();
        let i = faults.iter().position(|(p, o, _)| {
            path.ends_with(p) && o.as_deref().is_none_or(|o| o == order_no)
        })?;
        Some(faults.remove(i).2)
    }

    fn signed(&self, fields: Vec<(String, String)>) -> Vec<u8> {
        let mut p: Params = fields.into_iter().collect();
        sign_in_place(
            &mut p,
            self.merchant.v2_key().unwrap(),
            self.merchant.sign_type,
        );
        xml::write(&p).into_bytes()
    }

    fn reply(&self, extra: &[(&str, String)], fault: Option<&Fault>) -> Vec<u8> {
        let mch_id = if fault == Some(&Fault::ForeignMchId) {
            "19999999".to_owned()
        } else {
            self.merchant.mch_id.clone()
        };
        let mut fields: Vec<(String, String)> = vec![
            ("return_code".into(), "SUCCESS".into()),
            ("return_msg".into(), "OK".into()),
            ("appid".into(), self.merchant.appid.clone()),
            ("mch_id".into(), mch_id),
            ("nonce_str".into(), "FAKEWECHATNONCE0".into()),
        ];
        match fault {
            Some(Fault::Refuse(code)) => {
                fields.push(("result_code".into(), "FAIL".into()));
                fields.push(("err_code".into(), (*code).into()));
                fields.push(("err_code_des".into(), format!("fake {code}")));
            }
            _ => {
                fields.push(("result_code".into(), "SUCCESS".into()));
                fields.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
            }
        }
        let mut body = self.signed(fields);
        if fault == Some(&Fault::BadSignature) {
            let text = String::from_utf8(body).unwrap();
            let start = text.find("<sign><![CDATA[").unwrap() + "<sign><![CDATA[".len();
            let mut text = text;
            text.replace_range(start..start + 4, "0000");
            body = text.into_bytes();
        }
        body
    }

    fn return_fail(msg: &str) -> Vec<u8> {
        let mut p = Params::new();
        p.insert("return_code".into(), "FAIL".into());
        p.insert("return_msg".into(), msg.into());
        xml::write(&p).into_bytes()
    }

    fn pay_api(&self, url: &str, body: &str) -> Result<HttpReply, TransportError> {
        let ok = |body: Vec<u8>| {
            Ok(HttpReply {
                headers: Vec::new(),
                status: 200,
                body,
            })
        };
        let Ok(params) = xml::read(body.as_bytes()) else {
            return ok(Self::return_fail("XML_FORMAT_ERROR"));
        };
        // Like WeChat: verify our signature with the merchant key.
        if verify(&params, self.merchant.v2_key().unwrap()).is_err() {
            return ok(Self::return_fail("签名错误"));
        }
        assert_eq!(params["appid"], self.merchant.appid);
        assert_eq!(params["mch_id"], self.merchant.mch_id);
        let order_no = params.get("out_trade_no").cloned().unwrap_or_default();
        let fault = self.take_fault(url, &order_no);
        match &fault {
            Some(Fault::Timeout) => return Err(TransportError::Timeout),
            Some(Fault::Unreachable) => {
                return Err(TransportError::Unreachable("connection refused".into()));
            }
            Some(Fault::Denied) => return Err(TransportError::Denied),
            Some(Fault::Http(status)) => {
                return Ok(HttpReply {
                    headers: Vec::new(),
                    status: *status,
                    body: b"busy".to_vec(),
                });
            }
            Some(Fault::ReturnFail(msg)) => return ok(Self::return_fail(msg)),
            _ => {}
        }
        if url.ends_with("/pay/unifiedorder") {
            for field in [
                "body",
                "out_trade_no",
                "total_fee",
                "spbill_create_ip",
                "notify_url",
                "trade_type",
                "openid",
            ] {
                assert!(params.contains_key(field), "unifiedorder lacks {field}");
            }
            if !matches!(fault, Some(Fault::Refuse(_))) {
                self.open_trade(&order_no, params["total_fee"].parse().unwrap());
            }
            let prepay = format!("wx{order_no}");
            return ok(self.reply(
                &[("trade_type", "JSAPI".into()), ("prepay_id", prepay)],
                fault.as_ref(),
            ));
        }
        if url.ends_with("/pay/orderquery") {
            let trade = self.trades.borrow().get(&order_no).cloned();
            let Some(mut trade) = trade else {
                return ok(self.reply(&[], Some(&Fault::Refuse("ORDERNOTEXIST"))));
            };
            if let Some(Fault::State(state)) = &fault {
                trade.state = (*state).into();
            }
            let mut extra = vec![
                ("out_trade_no", order_no.clone()),
                ("trade_state", trade.state.clone()),
            ];
            if trade.state == "SUCCESS" || trade.state == "REFUND" {
                extra.push(("transaction_id", trade.transaction_id.clone()));
                extra.push(("total_fee", trade.total_fee.to_string()));
                extra.push(("cash_fee", trade.total_fee.to_string()));
                extra.push(("time_end", trade.time_end.clone()));
            }
            return ok(self.reply(&extra, fault.as_ref()));
        }
        if url.ends_with(crate::v2::refund::REFUND_PATH) {
            if let Some(Fault::Refuse(_)) = fault {
                return ok(self.reply(&[], fault.as_ref()));
            }
            let refund_no = params["out_refund_no"].clone();
            let fee: u64 = params["refund_fee"].parse().unwrap();
            return ok(match self.take_refund(&order_no, &refund_no, fee) {
                Ok(()) => self.reply(
                    &[
                        ("out_trade_no", order_no.clone()),
                        ("out_refund_no", refund_no.clone()),
                        ("refund_id", format!("5000{refund_no}")),
                        ("refund_fee", fee.to_string()),
                    ],
                    fault.as_ref(),
                ),
                Err(code) => self.reply(&[], Some(&Fault::Refuse(code))),
            });
        }
        if url.ends_with(crate::v2::refund::REFUND_QUERY_PATH) {
            let refund_no = params["out_refund_no"].clone();
            let Some((order_no, fee, total, status)) = self.queried_refund(&refund_no) else {
                return ok(self.reply(&[], Some(&Fault::Refuse("REFUNDNOTEXIST"))));
            };
            let mut extra = vec![
                ("out_trade_no", order_no),
                ("total_fee", total.to_string()),
                ("refund_count", "1".into()),
                ("out_refund_no_0", refund_no.clone()),
                ("refund_id_0", format!("5000{refund_no}")),
                ("refund_fee_0", fee.to_string()),
                ("refund_status_0", status.into()),
            ];
            if status == "SUCCESS" {
                extra.push(("refund_success_time_0", "2024-05-01 17:00:00".into()));
            }
            return ok(self.reply(&extra, fault.as_ref()));
        }
        if url.ends_with("/pay/closeorder") {
            if fault.is_some() {
                return ok(self.reply(&[], fault.as_ref()));
            }
            let mut trades = self.trades.borrow_mut();
            let refuse = match trades.get_mut(&order_no) {
                None => Some("ORDERNOTEXIST"),
                Some(t) if t.state == "SUCCESS" => Some("ORDERPAID"),
                Some(t) if t.state == "CLOSED" => Some("ORDERCLOSED"),
                Some(t) => {
                    t.state = "CLOSED".into();
                    None
                }
            };
            drop(trades);
            return ok(self.reply(&[], refuse.map(Fault::Refuse).as_ref()));
        }
        Ok(HttpReply {
            headers: Vec::new(),
            status: 404,
            body: Vec::new(),
        })
    }

    fn jscode2session(&self, url: &str) -> Result<HttpReply, TransportError> {
        let query: HashMap<&str, &str> = url
            .split_once('?')
            .map(|(_, q)| q)
            .unwrap_or("")
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        if let Some(fault) = self.take_fault("/sns/jscode2session", "") {
            return Err(match fault {
                Fault::Timeout => TransportError::Timeout,
                Fault::Denied => TransportError::Denied,
                _ => TransportError::Unreachable("connection refused".into()),
            });
        }
        assert_eq!(query.get("appid"), Some(&self.login.appid.as_str()));
        assert_eq!(query.get("grant_type"), Some(&"authorization_code"));
        let body = if query.get("secret") != Some(&self.login.app_secret.expose()) {
            r#"{"errcode":40125,"errmsg":"invalid appsecret"}"#.to_owned()
        } else {
            let code = query.get("js_code").copied().unwrap_or("");
            self.codes
                .borrow()
                .get(code)
                .cloned()
                .unwrap_or_else(|| r#"{"errcode":40029,"errmsg":"invalid code"}"#.to_owned())
        };
        Ok(HttpReply {
            headers: Vec::new(),
            status: 200,
            body: body.into_bytes(),
        })
    }
}

// ---- Fake WeChat Pay APIv3 --------------------------------------------------------------------------

/// Fault keys of the APIv3 routes (see [`FakeWechat::fault`]).
pub const V3_JSAPI: &str = crate::v3::api::JSAPI_PATH;
pub const V3_QUERY: &str = "/v3/query";
pub const V3_CLOSE: &str = "/v3/close";
pub const V3_CERTIFICATES: &str = crate::v3::certificates::CERTIFICATES_PATH;
pub const V3_REFUNDS: &str = crate::v3::refund::REFUNDS_PATH;
/// The fault key of `GET /v3/refund/domestic/refunds/{out_refund_no}` (faults by refund number).
pub const V3_REFUND_QUERY: &str = "/v3/refund/domestic/refunds/{out_refund_no}";

/// The key and serial the fake WeChat signs its APIv3 replies with (the vectors' throw-away
/// keys, `src/v3/testdata/`).
pub struct V3Signer {
    pub serial: String,
    pub key: crate::v3::sign::MerchantKey,
}

impl V3Signer {
    pub const PUBLIC_KEY_ID: &str = "PUB_KEY_ID_0112345678902025112700000000000001";
    /// The serial of the merchant certificate WeChat knows for the test merchant key.
    pub const MERCHANT_SERIAL: &str = "1DDE55AD98ED71D6EDD4A4A16996DE7B47773A8C";
    pub const WECHATPAY_KEY: &str = include_str!("../v3/testdata/wechatpay_key.pem");
    pub const WECHATPAY_PUB: &str = include_str!("../v3/testdata/wechatpay_pub.pem");
    pub const PLATFORM_CERT: &str = include_str!("../v3/testdata/wechatpay_platform_cert.pem");
    pub const PLATFORM_SERIAL: &str = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1";
    pub const ROTATED_CERT: &str = include_str!("../v3/testdata/wechatpay_rotated_cert.pem");
    pub const ROTATED_KEY: &str = include_str!("../v3/testdata/wechatpay_rotated_key.pem");
    pub const ROTATED_SERIAL: &str = "6E2A91C4D07B35F8A1C0E9D2B4F6A8C0E2D4F6A8";

    fn new(serial: &str, pem: &str) -> Self {
        Self {
            serial: serial.to_owned(),
            key: crate::v3::sign::MerchantKey::from_pem(pem).unwrap(),
        }
    }

    /// The WeChat Pay public key (`PUB_KEY_ID_…`).
    pub fn public_key() -> Self {
        Self::new(Self::PUBLIC_KEY_ID, Self::WECHATPAY_KEY)
    }

    /// The platform certificate of vector V5 (the same key pair).
    pub fn platform() -> Self {
        Self::new(Self::PLATFORM_SERIAL, Self::WECHATPAY_KEY)
    }

    /// A newer platform certificate with its own key (a rotation).
    pub fn rotated() -> Self {
        Self::new(Self::ROTATED_SERIAL, Self::ROTATED_KEY)
    }

    /// Signs `body` as WeChat signs a reply or notification at `timestamp`.
    pub fn sign(&self, timestamp: u64, body: &[u8]) -> crate::v3::verify::SignatureHeaders {
        crate::v3::sign::wechatpay_headers(
            &self.key,
            &self.serial,
            timestamp,
            "fakewechatnonce0fakewechatnonce0",
            body,
        )
    }
}

impl FakeWechat {
    /// A signed APIv3 reply at `timestamp`, as `fault` may spoil it.
    fn v3_reply(
        &self,
        status: u16,
        body: String,
        timestamp: u64,
        fault: Option<&Fault>,
    ) -> HttpReply {
        let signer = self.v3_signer.borrow();
        let timestamp = match fault {
            Some(Fault::Skewed(secs)) => timestamp.saturating_add_signed(*secs),
            _ => timestamp,
        };
        let mut headers = signer.sign(timestamp, body.as_bytes());
        match fault {
            Some(Fault::BadSignature) => {
                headers.signature = V3Signer::rotated()
                    .sign(timestamp, body.as_bytes())
                    .signature;
            }
            Some(Fault::SignTest) => {
                headers.signature = format!("WECHATPAY/SIGNTEST/{}", headers.signature);
            }
            Some(Fault::UnknownSerial) => {
                headers.serial = "PUB_KEY_ID_0000000000000000000000000000000000000".into()
            }
            _ => {}
        }
        let headers = if fault == Some(&Fault::Unsigned) {
            Vec::new()
        } else {
            headers
                .to_headers()
                .into_iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v))
                .collect()
        };
        HttpReply {
            status,
            headers,
            body: body.into_bytes(),
        }
    }

    fn v3_error(
        &self,
        status: u16,
        code: &str,
        timestamp: u64,
        fault: Option<&Fault>,
    ) -> HttpReply {
        let body = serde_json::json!({"code": code, "message": format!("fake {code}")}).to_string();
        self.v3_reply(status, body, timestamp, fault)
    }

    /// The transaction JSON of a trade, as a query answers it.
    pub fn v3_transaction(&self, order_no: &str, trade: &Trade, mchid: &str) -> String {
        let mut t = serde_json::json!({
            "appid": self.merchant.appid,
            "mchid": mchid,
            "out_trade_no": order_no,
            "trade_state": trade.state,
            "trade_type": "JSAPI",
            "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
            "amount": {"total": trade.total_fee, "currency": "CNY"},
        });
        if trade.state == "SUCCESS" || trade.state == "REFUND" {
            t["transaction_id"] = trade.transaction_id.clone().into();
            let at = crate::time::parse_beijing_compact(&trade.time_end).unwrap();
            t["success_time"] = crate::time::rfc3339_beijing(at).into();
        }
        t.to_string()
    }

    /// WeChat Pay APIv3: checks our `Authorization` with the merchant's public key (401
    /// `SIGN_ERROR` otherwise) and the headers WeChat requires, then answers signed.
    fn v3_api(&self, request: &OutboundRequest) -> Result<HttpReply, TransportError> {
        let path_and_query = request
            .url
            .strip_prefix(&self.merchant.mch_api)
            .expect("an APIv3 request to the merchant API")
            .to_owned();
        let v3 = self.merchant.v3.as_ref().expect("an APIv3 merchant");
        assert_eq!(request.header("accept"), Some("application/json"));
        assert!(request.header("user-agent").is_some_and(|u| !u.is_empty()));
        let auth = request.header("authorization").unwrap_or("");
        let params: HashMap<&str, &str> = auth
            .strip_prefix("WECHATPAY2-SHA256-RSA2048 ")
            .unwrap_or("")
            .split(',')
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                Some((k, v.trim_matches('"')))
            })
            .collect();
        let timestamp: u64 = params
            .get("timestamp")
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        let body = String::from_utf8(request.body.clone()).unwrap();
        let message = crate::v3::sign::request_message(
            request.method,
            &path_and_query,
            timestamp,
            params.get("nonce_str").copied().unwrap_or(""),
            &body,
        );
        let merchant_public =
            crate::v3::verify::PublicKey::from_pem(include_str!("../v3/testdata/merchant_pub.pem"))
                .unwrap();
        let signed_ok = params.get("mchid") == Some(&self.merchant.mch_id.as_str())
            && params.get("serial_no") == Some(&V3Signer::MERCHANT_SERIAL)
            && merchant_public.verifies(message.as_bytes(), params.get("signature").unwrap_or(&""));
        if !signed_ok {
            return Ok(self.v3_error(401, "SIGN_ERROR", timestamp, None));
        }
        let path = path_and_query.split('?').next().unwrap_or("").to_owned();
        let tx_prefix = "/v3/pay/transactions/out-trade-no/";
        let (fault_key, order_no) = if path == V3_REFUNDS {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            (
                V3_REFUNDS,
                v["out_trade_no"].as_str().unwrap_or("").to_owned(),
            )
        } else if path == V3_JSAPI {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            (
                V3_JSAPI,
                v["out_trade_no"].as_str().unwrap_or("").to_owned(),
            )
        } else if path == V3_CERTIFICATES {
            (V3_CERTIFICATES, String::new())
        } else if let Some(refund_no) = path.strip_prefix(&format!("{V3_REFUNDS}/")) {
            (V3_REFUND_QUERY, refund_no.to_owned())
        } else if let Some(rest) = path.strip_prefix(tx_prefix) {
            match rest.strip_suffix("/close") {
                Some(no) => (V3_CLOSE, no.to_owned()),
                None => (V3_QUERY, rest.to_owned()),
            }
        } else {
            return Ok(self.v3_error(404, "NOT_FOUND", timestamp, None));
        };
        let fault = self.take_fault(fault_key, &order_no);
        match &fault {
            Some(Fault::Timeout) => return Err(TransportError::Timeout),
            Some(Fault::Unreachable) => {
                return Err(TransportError::Unreachable("connection refused".into()));
            }
            Some(Fault::Denied) => return Err(TransportError::Denied),
            Some(Fault::Http(status)) => return Ok(HttpReply::new(*status, b"busy".to_vec())),
            Some(Fault::Refuse(code)) => {
                let status = match *code {
                    "OUT_TRADE_NO_USED" | "NO_AUTH" => 403,
                    "ORDER_NOT_EXIST" => 404,
                    "FREQUENCY_LIMITED" => 429,
                    "SYSTEM_ERROR" => 500,
                    _ => 400,
                };
                return Ok(self.v3_error(status, code, timestamp, fault.as_ref()));
            }
            _ => {}
        }
        let f = fault.as_ref();
        match fault_key {
            V3_REFUNDS => {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                let refund_no = v["out_refund_no"].as_str().unwrap().to_owned();
                let fee = v["amount"]["refund"].as_u64().unwrap();
                let total = v["amount"]["total"].as_u64().unwrap();
                Ok(match self.take_refund(&order_no, &refund_no, fee) {
                    Ok(()) => {
                        let reply = serde_json::json!({
                            "refund_id": format!("5000{refund_no}"),
                            "out_refund_no": refund_no, "out_trade_no": order_no,
                            "status": "PROCESSING",
                            "amount": {"refund": fee, "total": total},
                        });
                        self.v3_reply(200, reply.to_string(), timestamp, f)
                    }
                    Err(code) => self.v3_error(400, code, timestamp, f),
                })
            }
            V3_REFUND_QUERY => {
                let refund_no = order_no;
                let Some((order_no, fee, total, status)) = self.queried_refund(&refund_no) else {
                    return Ok(self.v3_error(404, "RESOURCE_NOT_EXISTS", timestamp, f));
                };
                let mut reply = serde_json::json!({
                    "refund_id": format!("5000{refund_no}"),
                    "out_refund_no": refund_no, "out_trade_no": order_no,
                    "status": status,
                    "amount": {"refund": fee, "total": total},
                });
                if status == "SUCCESS" {
                    reply["success_time"] = "2024-05-01T17:00:00+08:00".into();
                }
                Ok(self.v3_reply(200, reply.to_string(), timestamp, f))
            }
            V3_JSAPI => {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert_eq!(v["appid"], self.merchant.appid.as_str());
                assert_eq!(v["mchid"], self.merchant.mch_id.as_str());
                assert_eq!(v["notify_url"], self.merchant.notify_url.as_str());
                assert_eq!(v["amount"]["currency"], "CNY");
                self.open_trade(&order_no, v["amount"]["total"].as_u64().unwrap());
                let reply = serde_json::json!({"prepay_id": format!("wx{order_no}")}).to_string();
                Ok(self.v3_reply(200, reply, timestamp, f))
            }
            V3_QUERY => {
                let trade = self.trades.borrow().get(&order_no).cloned();
                let Some(mut trade) = trade else {
                    return Ok(self.v3_error(404, "ORDER_NOT_EXIST", timestamp, f));
                };
                if let Some(Fault::State(state)) = f {
                    trade.state = (*state).into();
                }
                let mchid = if f == Some(&Fault::ForeignMchId) {
                    "19999999"
                } else {
                    self.merchant.mch_id.as_str()
                };
                let reply = self.v3_transaction(&order_no, &trade, mchid);
                Ok(self.v3_reply(200, reply, timestamp, f))
            }
            V3_CLOSE => {
                let mut trades = self.trades.borrow_mut();
                let refusal = match trades.get_mut(&order_no) {
                    None => Some((404, "ORDER_NOT_EXIST")),
                    Some(t) if t.state == "SUCCESS" => Some((400, "ORDERPAID")),
                    Some(t) => {
                        t.state = "CLOSED".into();
                        None
                    }
                };
                drop(trades);
                Ok(match refusal {
                    Some((status, code)) => self.v3_error(status, code, timestamp, f),
                    None => self.v3_reply(204, String::new(), timestamp, f),
                })
            }
            _ => {
                let key = &v3.apiv3_key;
                let data: Vec<serde_json::Value> = self
                    .v3_listed
                    .borrow()
                    .iter()
                    .map(|pem| {
                        let cert = crate::v3::certificates::PlatformCertificate::from_pem(pem).unwrap();
                        let nonce = "fakecertnonc";
                        serde_json::json!({
                            "serial_no": cert.serial,
                            "effective_time": "2026-12-01T00:00:00+08:00",
                            "expire_time": "2036-11-28T00:00:00+08:00",
                            "encrypt_certificate": {
                                "algorithm": "AEAD_AES_256_GCM",
                                "nonce": nonce,
                                "associated_data": "certificate",
                                "ciphertext": crate::v3::aead::encrypt(key, nonce, "certificate", pem.as_bytes()).unwrap(),
                            }
                        })
                    })
                    .collect();
                let reply = serde_json::json!({ "data": data }).to_string();
                Ok(self.v3_reply(200, reply, timestamp, f))
            }
        }
    }
}

impl Transport for FakeWechat {
    async fn post_xml(&self, url: &str, body: String) -> Result<HttpReply, TransportError> {
        self.sent.borrow_mut().push(Sent {
            url: url.to_owned(),
            body: body.clone(),
        });
        self.pay_api(url, &body)
    }

    async fn get(&self, url: &str) -> Result<HttpReply, TransportError> {
        self.sent.borrow_mut().push(Sent {
            url: url.to_owned(),
            body: String::new(),
        });
        if url
            .split('?')
            .next()
            .unwrap()
            .ends_with("/sns/jscode2session")
        {
            self.jscode2session(url)
        } else {
            Ok(HttpReply::new(404, Vec::new()))
        }
    }

    async fn send(&self, request: &OutboundRequest) -> Result<HttpReply, TransportError> {
        self.sent.borrow_mut().push(Sent {
            url: request.url.clone(),
            body: String::from_utf8(request.body.clone()).unwrap(),
        });
        self.v3_api(request)
    }
}
