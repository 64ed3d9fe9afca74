//! Test doubles of the ports: an in-memory store with failure injection, a fake WeChat that
//! verifies our signatures and answers signed replies, a settable clock, a counting nonce.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::task::{Context, Poll, Waker};

use super::{Clock, HttpReply, Nonce, Store, StoreError, Transport, TransportError};
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
        }
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

    fn take_fault(&self, path: &str, order_no: &str) -> Option<Fault> {
        let mut faults = self.faults.borrow_mut();
        let i = faults.iter().position(|(p, o, _)| {
            path.ends_with(p) && o.as_deref().is_none_or(|o| o == order_no)
        })?;
        Some(faults.remove(i).2)
    }

    fn signed(&self, fields: Vec<(String, String)>) -> Vec<u8> {
        let mut p: Params = fields.into_iter().collect();
        sign_in_place(&mut p, &self.merchant.api_key, self.merchant.sign_type);
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
        let ok = |body: Vec<u8>| Ok(HttpReply { status: 200, body });
        let Ok(params) = xml::read(body.as_bytes()) else {
            return ok(Self::return_fail("XML_FORMAT_ERROR"));
        };
        // Like WeChat: verify our signature with the merchant key.
        if verify(&params, &self.merchant.api_key).is_err() {
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
                let total: u64 = params["total_fee"].parse().unwrap();
                self.trades
                    .borrow_mut()
                    .entry(order_no.clone())
                    .or_insert(Trade {
                        state: "NOTPAY".into(),
                        total_fee: total,
                        transaction_id: format!("4200{order_no}"),
                        time_end: PAID_TIME_END.into(),
                    });
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
            status: 200,
            body: body.into_bytes(),
        })
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
            Ok(HttpReply {
                status: 404,
                body: Vec::new(),
            })
        }
    }
}
