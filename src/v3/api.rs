//! APIv3's JSAPI order, query and close (PROTOCOL.md "APIv3"): request bodies and paths as
//! WeChat Pay wants them, and what its (already verified) replies say.

use serde::{Deserialize, Serialize};

use crate::money::Fen;
use crate::order::valid_out_trade_no;
use crate::time::{beijing_compact, parse_rfc3339_offset};
use crate::v2::api::{PaidTrade, TradeState};

/// `POST` a JSAPI order here.
pub const JSAPI_PATH: &str = "/v3/pay/transactions/jsapi";
/// WeChat's limits (characters).
pub const MAX_DESCRIPTION_CHARS: usize = 127;
pub const MAX_ATTACH_CHARS: usize = 128;
pub const MAX_NOTIFY_URL_BYTES: usize = 255;

/// The query of an order by our number: `GET` this (path and query, as signed and sent).
pub fn query_url(out_trade_no: &str, mchid: &str) -> String {
    format!("/v3/pay/transactions/out-trade-no/{out_trade_no}?mchid={mchid}")
}

/// Closing an order: `POST` [`close_body`] here; 204 when closed.
pub fn close_url(out_trade_no: &str) -> String {
    format!("/v3/pay/transactions/out-trade-no/{out_trade_no}/close")
}

/// The body of a close: `{"mchid"}`.
pub fn close_body(mchid: &str) -> String {
    serde_json::json!({ "mchid": mchid }).to_string()
}

/// A JSAPI order as we ask for it.
#[derive(Debug, Clone, Copy)]
pub struct JsapiOrder<'a> {
    pub appid: &'a str,
    pub mchid: &'a str,
    pub description: &'a str,
    pub out_trade_no: &'a str,
    /// Unix seconds; sent as RFC 3339 in Beijing time.
    pub time_expire: Option<u64>,
    pub attach: Option<&'a str>,
    pub notify_url: &'a str,
    pub total: Fen,
    pub openid: &'a str,
}

/// A request WeChat would refuse, named by its field (the value is never quoted: it may be a
/// user's text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct RequestError {
    pub field: &'static str,
    pub problem: &'static str,
}

#[derive(Serialize)]
struct JsapiBody<'a> {
    appid: &'a str,
    mchid: &'a str,
    description: &'a str,
    out_trade_no: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    time_expire: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attach: Option<&'a str>,
    notify_url: &'a str,
    amount: Amount,
    payer: Payer<'a>,
}

#[derive(Serialize)]
struct Amount {
    total: u64,
    currency: &'static str,
}

#[derive(Serialize)]
struct Payer<'a> {
    openid: &'a str,
}

/// Whether `s` has a character outside the Basic Multilingual Plane (an emoji): APIv3 refuses
/// 4-byte UTF-8 anywhere.
fn has_four_byte_chars(s: &str) -> bool {
    s.chars().any(|c| c.len_utf8() == 4)
}

/// The JSON body of a JSAPI order, checked against WeChat's rules first.
pub fn jsapi_order_body(o: &JsapiOrder<'_>) -> Result<String, RequestError> {
    let bad = |field, problem| Err(RequestError { field, problem });
    if !valid_out_trade_no(o.out_trade_no) {
        return bad("out_trade_no", "must be 6-32 characters of [0-9A-Za-z_-|*]");
    }
    let chars = o.description.chars().count();
    if chars == 0 || chars > MAX_DESCRIPTION_CHARS {
        return bad("description", "must be 1-127 characters");
    }
    if o.attach
        .is_some_and(|a| a.chars().count() > MAX_ATTACH_CHARS)
    {
        return bad("attach", "must be at most 128 characters");
    }
    if !o.notify_url.starts_with("https://")
        || o.notify_url.len() > MAX_NOTIFY_URL_BYTES
        || o.notify_url.contains(['?', '#'])
    {
        return bad(
            "notify_url",
            "must be an https URL of at most 255 bytes without a query",
        );
    }
    if o.total == Fen(0) {
        return bad("amount.total", "must be at least 1 fen");
    }
    for (field, value) in [
        ("description", o.description),
        ("attach", o.attach.unwrap_or("")),
    ] {
        if has_four_byte_chars(value) {
            return bad(field, "must not contain emoji (4-byte UTF-8)");
        }
    }
    let body = JsapiBody {
        appid: o.appid,
        mchid: o.mchid,
        description: o.description,
        out_trade_no: o.out_trade_no,
        time_expire: o.time_expire.map(crate::time::rfc3339_beijing),
        attach: o.attach.filter(|a| !a.is_empty()),
        notify_url: o.notify_url,
        amount: Amount {
            total: o.total.0,
            currency: "CNY",
        },
        payer: Payer { openid: o.openid },
    };
    serde_json::to_string(&body).map_err(|_| RequestError {
        field: "body",
        problem: "cannot be encoded",
    })
}

/// Why a (verified) reply could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// 4xx/5xx `{"code","message"}`.
    #[error("WeChat Pay answered {status} {code}: {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    #[error("WeChat Pay's reply is not the JSON expected: {0}")]
    Malformed(String),
    #[error("WeChat Pay's reply is about another {0}")]
    Foreign(&'static str),
}

impl ReplyError {
    /// Whether the identical request may succeed later: 5xx (`SYSTEM_ERROR`,
    /// `SERVICE_UNAVAILABLE`) and 429 `FREQUENCY_LIMITED`.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ReplyError::Refused { status, .. } if *status >= 500 || *status == 429)
    }

    /// Whether WeChat says the order is paid already (query, then apply).
    pub fn says_paid(&self) -> bool {
        matches!(self, ReplyError::Refused { code, .. } if code == "ORDERPAID" || code == "ORDER_PAID")
    }
}

/// An APIv3 error code as the flows know it (APIv2's names; APIv3 spells some differently):
/// the flows decide retries, queries and closings on one set of codes for both versions.
pub fn err_code(code: &str) -> crate::v2::api::ErrCode {
    use crate::v2::api::ErrCode;
    match code {
        "SYSTEM_ERROR" | "SYSTEMERROR" | "SERVICE_UNAVAILABLE" | "FREQUENCY_LIMITED" => {
            ErrCode::SystemError
        }
        "ORDERPAID" | "ORDER_PAID" | "TRADE_PAID" => ErrCode::OrderPaid,
        "ORDER_CLOSED" | "ORDERCLOSED" => ErrCode::OrderClosed,
        "ORDER_NOT_EXIST" | "ORDERNOTEXIST" => ErrCode::OrderNotExist,
        "OUT_TRADE_NO_USED" => ErrCode::OutTradeNoUsed,
        "NOT_ENOUGH" | "NOTENOUGH" => ErrCode::NotEnough,
        "NO_AUTH" | "NOAUTH" => ErrCode::NoAuth,
        "APPID_MCHID_NOT_MATCH" => ErrCode::AppidMchidNotMatch,
        "MCH_NOT_EXISTS" => ErrCode::MchidNotExist,
        "PARAM_ERROR" | "INVALID_REQUEST" => ErrCode::LackParams,
        "SIGN_ERROR" => ErrCode::SignError,
        other => ErrCode::Other(other.to_owned()),
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// A non-2xx reply as [`ReplyError::Refused`] (bounded texts; the body may be anything).
pub fn refusal(status: u16, body: &[u8]) -> ReplyError {
    let cut = |s: &str| crate::v2::api::cut_to_bytes(s, 128).to_owned();
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => ReplyError::Refused {
            status,
            code: cut(&e.code),
            message: cut(&e.message),
        },
        Err(_) => ReplyError::Refused {
            status,
            code: String::new(),
            message: String::new(),
        },
    }
}

/// The prepay id of a JSAPI order's 200 reply.
pub fn parse_prepay(body: &[u8]) -> Result<String, ReplyError> {
    #[derive(Deserialize)]
    struct Prepay {
        prepay_id: String,
    }
    let p: Prepay =
        serde_json::from_slice(body).map_err(|e| ReplyError::Malformed(e.to_string()))?;
    if p.prepay_id.is_empty() || p.prepay_id.len() > crate::order::MAX_PREPAY_ID_LEN {
        return Err(ReplyError::Malformed(
            "prepay_id must be 1-64 characters".into(),
        ));
    }
    Ok(p.prepay_id)
}

/// A transaction, as a query answers it and a payment notification carries it (decrypted).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Transaction {
    pub appid: String,
    pub mchid: String,
    pub out_trade_no: String,
    #[serde(default)]
    pub transaction_id: Option<String>,
    pub trade_state: String,
    #[serde(default)]
    pub success_time: Option<String>,
    #[serde(default)]
    pub amount: Option<TransactionAmount>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TransactionAmount {
    #[serde(default)]
    pub total: Option<u64>,
    #[serde(default)]
    pub currency: Option<String>,
}

impl Transaction {
    /// Reads a transaction JSON (a query's 200 body, or a notification's plaintext).
    pub fn parse(body: &[u8]) -> Result<Transaction, ReplyError> {
        serde_json::from_slice(body).map_err(|e| ReplyError::Malformed(e.to_string()))
    }

    /// Refuses a transaction of another merchant or app.
    pub fn check_merchant(&self, appid: &str, mchid: &str) -> Result<(), ReplyError> {
        if self.mchid != mchid {
            return Err(ReplyError::Foreign("mchid"));
        }
        if self.appid != appid {
            return Err(ReplyError::Foreign("appid"));
        }
        Ok(())
    }

    /// `trade_state` as the APIv2 code knows it (the same names).
    pub fn trade_state(&self) -> TradeState {
        TradeState::parse(&self.trade_state)
    }

    /// The payment, when the state carries one (SUCCESS, REFUND): transaction id, total and
    /// time, in the form APIv2's code settles (`time_end` in Beijing `yyyyMMddHHmmss`, so both
    /// versions record the same `paid_at`).
    pub fn paid(&self) -> Result<Option<PaidTrade>, ReplyError> {
        if !matches!(self.trade_state(), TradeState::Success | TradeState::Refund) {
            return Ok(None);
        }
        let missing =
            |what: &str| ReplyError::Malformed(format!("a paid transaction without {what}"));
        let transaction_id = self
            .transaction_id
            .clone()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| missing("transaction_id"))?;
        let total = self
            .amount
            .as_ref()
            .and_then(|a| a.total)
            .ok_or_else(|| missing("amount.total"))?;
        let success_time = self
            .success_time
            .as_deref()
            .ok_or_else(|| missing("success_time"))?;
        let at = parse_rfc3339_offset(success_time).map_err(|_| missing("a valid success_time"))?;
        Ok(Some(PaidTrade {
            transaction_id,
            total_fee: Fen(total),
            time_end: beijing_compact(at),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v3::vectors::{text, vector};

    fn order() -> JsapiOrder<'static> {
        JsapiOrder {
            appid: "wxd678efh567hg6787",
            mchid: "1230000109",
            description: "Image形象店-深圳腾大-QQ公仔",
            out_trade_no: "1217752501201407033233368018",
            time_expire: None,
            attach: None,
            notify_url: "https://www.weixin.qq.com/wxpay/pay.php",
            total: Fen(100),
            openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
        }
    }

    #[test]
    fn v1_jsapi_body_is_byte_for_byte_the_signed_one() {
        let v = vector("V1_request_signature");
        assert_eq!(jsapi_order_body(&order()).unwrap(), text(&v, "body"));
        assert_eq!(v["url"], JSAPI_PATH);
    }

    #[test]
    fn v1b_query_url() {
        let v = vector("V1b_get_signature");
        let url = query_url("1217752501201407033233368018", "1230000109");
        assert!(text(&v, "message").contains(&format!("\n{url}\n")));
        assert_eq!(
            close_url("123456"),
            "/v3/pay/transactions/out-trade-no/123456/close"
        );
        assert_eq!(close_body("1230000109"), r#"{"mchid":"1230000109"}"#);
    }

    #[test]
    fn jsapi_rules() {
        let with_expiry = JsapiOrder {
            time_expire: Some(1_528_425_296),
            attach: Some("table 7"),
            ..order()
        };
        let body = jsapi_order_body(&with_expiry).unwrap();
        assert!(
            body.contains(r#""time_expire":"2018-06-08T10:34:56+08:00""#),
            "{body}"
        );
        assert!(body.contains(r#""attach":"table 7""#), "{body}");
        let long = "长".repeat(128);
        let emoji = "coffee ☕️🎉";
        for (bad, field) in [
            (
                JsapiOrder {
                    out_trade_no: "12345",
                    ..order()
                },
                "out_trade_no",
            ),
            (
                JsapiOrder {
                    description: &long,
                    ..order()
                },
                "description",
            ),
            (
                JsapiOrder {
                    description: emoji,
                    ..order()
                },
                "description",
            ),
            (
                JsapiOrder {
                    notify_url: "http://shop.example.com/n",
                    ..order()
                },
                "notify_url",
            ),
            (
                JsapiOrder {
                    notify_url: "https://shop.example.com/n?x=1",
                    ..order()
                },
                "notify_url",
            ),
            (
                JsapiOrder {
                    total: Fen(0),
                    ..order()
                },
                "amount.total",
            ),
        ] {
            assert_eq!(jsapi_order_body(&bad).unwrap_err().field, field);
        }
        // 127 Chinese characters are fine (characters, not bytes).
        assert!(
            jsapi_order_body(&JsapiOrder {
                description: &long[..127 * 3],
                ..order()
            })
            .is_ok()
        );
    }

    #[test]
    fn replies() {
        assert_eq!(
            parse_prepay(br#"{"prepay_id":"wx26112221580621e9b071c00d9e093b0000"}"#).unwrap(),
            "wx26112221580621e9b071c00d9e093b0000"
        );
        assert!(parse_prepay(b"{}").is_err());
        let busy = refusal(500, br#"{"code":"SYSTEM_ERROR","message":"busy"}"#);
        assert!(busy.is_retryable());
        let sign = refusal(401, br#"{"code":"SIGN_ERROR","message":"bad"}"#);
        assert!(!sign.is_retryable());
        assert!(refusal(400, br#"{"code":"ORDERPAID","message":"paid"}"#).says_paid());
        assert_eq!(
            refusal(502, b"<html>"),
            ReplyError::Refused {
                status: 502,
                code: String::new(),
                message: String::new()
            }
        );
    }

    #[test]
    fn v3_transaction_reads_as_a_payment() {
        let v = vector("V3_notification");
        let t = Transaction::parse(text(&v, "plaintext").as_bytes()).unwrap();
        assert_eq!(t.check_merchant("wxd678efh567hg6787", "1230000109"), Ok(()));
        assert_eq!(
            t.check_merchant("wxd678efh567hg6787", "1900000109"),
            Err(ReplyError::Foreign("mchid"))
        );
        assert_eq!(
            t.check_merchant("wx0000000000000000", "1230000109"),
            Err(ReplyError::Foreign("appid"))
        );
        assert_eq!(t.trade_state(), TradeState::Success);
        let paid = t.paid().unwrap().unwrap();
        assert_eq!(paid.transaction_id, "1217752501201407033233368018");
        assert_eq!(paid.total_fee, Fen(100));
        // 2018-06-08T10:34:56+08:00 is WeChat's v2 time_end 20180608103456.
        assert_eq!(paid.time_end, "20180608103456");
        let notpay = Transaction {
            trade_state: "NOTPAY".into(),
            ..t.clone()
        };
        assert_eq!(notpay.paid(), Ok(None));
        let no_amount = Transaction { amount: None, ..t };
        assert!(no_amount.paid().is_err());
    }
}
