//! Unified order, order query and close order (PROTOCOL.md): request builders (typed inputs →
//! signed XML) and reply parsers that tell apart a failed call (`return_code` FAIL), a refused
//! request (`result_code` FAIL with its `err_code`), a reply that is not to be trusted (bad
//! signature, someone else's appid/mch_id) and success.

use std::fmt;

use super::Params;
use super::sign::{VerifyError, sign_in_place, verify_from_wechat};
use super::xml::{self, XmlError};
use crate::config::MerchantConfig;
use crate::money::Fen;
use crate::order::valid_out_trade_no;

pub const UNIFIED_ORDER_PATH: &str = "/pay/unifiedorder";
pub const ORDER_QUERY_PATH: &str = "/pay/orderquery";
pub const CLOSE_ORDER_PATH: &str = "/pay/closeorder";

/// WeChat's limit on `body` and `attach`, in bytes (it documents 127 "characters"; counting
/// bytes is the safe reading for Chinese text).
pub const MAX_BODY_BYTES: usize = 127;
pub const MAX_ATTACH_BYTES: usize = 127;

/// A signed request ready to send: `POST` to [`MerchantConfig::url`]`(path)` with `body` as
/// `text/xml`.
/// Retrying means sending these same bytes again (identical parameters, same out_trade_no).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiRequest {
    pub path: &'static str,
    pub body: String,
}

/// The order-specific fields of a unified order (`trade_type` is always JSAPI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnifiedOrder<'a> {
    pub out_trade_no: &'a str,
    /// Product description; cut to [`MAX_BODY_BYTES`] on a character boundary.
    pub body: &'a str,
    pub total_fee: Fen,
    pub spbill_create_ip: &'a str,
    pub openid: &'a str,
    /// `yyyyMMddHHmmss`, Beijing time (see [`crate::time::beijing_compact`]).
    pub time_expire: Option<&'a str>,
    pub attach: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("out_trade_no must be 6-32 characters of [0-9A-Za-z_-|*]")]
    OutTradeNo,
    #[error(transparent)]
    NoKey(#[from] crate::config::NoV2Key),
    #[error("out_refund_no must be 1-64 characters of [0-9A-Za-z_-|*@]")]
    OutRefundNo,
    #[error("refund_fee must be at least 1 fen and at most the order's total_fee")]
    RefundFee,
    #[error("total_fee must be more than 0 fen")]
    ZeroAmount,
    #[error("body (the product description) is empty")]
    EmptyBody,
    #[error("attach is {0} bytes, over WeChat's {MAX_ATTACH_BYTES}-byte limit")]
    AttachTooLong(usize),
    #[error("openid is empty")]
    MissingOpenid,
    #[error("spbill_create_ip is empty")]
    MissingClientIp,
    #[error("time_expire must be yyyyMMddHHmmss")]
    TimeExpire,
}

/// `s` cut to at most `max` bytes without splitting a character.
pub fn cut_to_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

pub(crate) fn signed_request(
    merchant: &MerchantConfig,
    path: &'static str,
    fields: &[(&str, &str)],
    nonce: &str,
) -> Result<ApiRequest, RequestError> {
    // `extend`, not `collect`: collecting into a `BTreeMap` sorts first, which links a sort
    // into every component that calls WeChat (~3 KB each); inserting needs none.
    let mut params = Params::new();
    params.extend(
        fields
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    params.insert("appid".into(), merchant.appid.clone());
    params.insert("mch_id".into(), merchant.mch_id.clone());
    params.insert("nonce_str".into(), nonce.to_owned());
    sign_in_place(&mut params, merchant.v2_key()?, merchant.sign_type);
    Ok(ApiRequest {
        path,
        body: xml::write(&params),
    })
}

/// Builds `POST /pay/unifiedorder` for a JSAPI (mini program) payment.
pub fn unified_order_request(
    merchant: &MerchantConfig,
    order: &UnifiedOrder<'_>,
    nonce: &str,
) -> Result<ApiRequest, RequestError> {
    if !valid_out_trade_no(order.out_trade_no) {
        return Err(RequestError::OutTradeNo);
    }
    if order.total_fee == Fen::ZERO {
        return Err(RequestError::ZeroAmount);
    }
    let body = cut_to_bytes(order.body.trim(), MAX_BODY_BYTES);
    if body.is_empty() {
        return Err(RequestError::EmptyBody);
    }
    let attach = order.attach.unwrap_or("");
    if attach.len() > MAX_ATTACH_BYTES {
        return Err(RequestError::AttachTooLong(attach.len()));
    }
    if order.openid.is_empty() {
        return Err(RequestError::MissingOpenid);
    }
    if order.spbill_create_ip.is_empty() {
        return Err(RequestError::MissingClientIp);
    }
    let time_expire = order.time_expire.unwrap_or("");
    if !time_expire.is_empty() && crate::time::parse_beijing_compact(time_expire).is_err() {
        return Err(RequestError::TimeExpire);
    }
    let total_fee = order.total_fee.to_string();
    signed_request(
        merchant,
        UNIFIED_ORDER_PATH,
        &[
            ("body", body),
            ("out_trade_no", order.out_trade_no),
            ("total_fee", &total_fee),
            ("spbill_create_ip", order.spbill_create_ip),
            ("notify_url", &merchant.notify_url),
            ("trade_type", "JSAPI"),
            ("openid", order.openid),
            ("time_expire", time_expire),
            ("attach", attach),
        ],
        nonce,
    )
}

/// Builds `POST /pay/orderquery` by our order number.
pub fn order_query_request(
    merchant: &MerchantConfig,
    out_trade_no: &str,
    nonce: &str,
) -> Result<ApiRequest, RequestError> {
    if !valid_out_trade_no(out_trade_no) {
        return Err(RequestError::OutTradeNo);
    }
    signed_request(
        merchant,
        ORDER_QUERY_PATH,
        &[("out_trade_no", out_trade_no)],
        nonce,
    )
}

/// Builds `POST /pay/closeorder`.
pub fn close_order_request(
    merchant: &MerchantConfig,
    out_trade_no: &str,
    nonce: &str,
) -> Result<ApiRequest, RequestError> {
    if !valid_out_trade_no(out_trade_no) {
        return Err(RequestError::OutTradeNo);
    }
    signed_request(
        merchant,
        CLOSE_ORDER_PATH,
        &[("out_trade_no", out_trade_no)],
        nonce,
    )
}

/// WeChat's `err_code`s that the flows act on; any other is kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrCode {
    SystemError,
    OrderPaid,
    OrderClosed,
    OrderNotExist,
    OutTradeNoUsed,
    NotEnough,
    NoAuth,
    AppidNotExist,
    MchidNotExist,
    AppidMchidNotMatch,
    LackParams,
    XmlFormatError,
    RequirePostMethod,
    PostDataEmpty,
    NotUtf8,
    SignError,
    Other(String),
}

/// What a caller should do after a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Transient: send the identical request again (same out_trade_no, same bytes).
    SameRequest,
    /// Don't retry; ask orderquery for the truth (ORDERPAID, OUT_TRADE_NO_USED).
    QueryFirst,
    /// This out_trade_no is spent (ORDERCLOSED).
    NeedsNewOrderNo,
    /// A configuration or program error, or a final answer: retrying cannot help.
    Never,
}

impl ErrCode {
    pub fn parse(code: &str) -> ErrCode {
        match code {
            "SYSTEMERROR" => ErrCode::SystemError,
            "ORDERPAID" => ErrCode::OrderPaid,
            "ORDERCLOSED" => ErrCode::OrderClosed,
            "ORDERNOTEXIST" => ErrCode::OrderNotExist,
            "OUT_TRADE_NO_USED" => ErrCode::OutTradeNoUsed,
            "NOTENOUGH" => ErrCode::NotEnough,
            "NOAUTH" => ErrCode::NoAuth,
            "APPID_NOT_EXIST" => ErrCode::AppidNotExist,
            "MCHID_NOT_EXIST" => ErrCode::MchidNotExist,
            "APPID_MCHID_NOT_MATCH" => ErrCode::AppidMchidNotMatch,
            "LACK_PARAMS" => ErrCode::LackParams,
            "XML_FORMAT_ERROR" => ErrCode::XmlFormatError,
            "REQUIRE_POST_METHOD" => ErrCode::RequirePostMethod,
            "POST_DATA_EMPTY" => ErrCode::PostDataEmpty,
            "NOT_UTF8" => ErrCode::NotUtf8,
            "SIGNERROR" => ErrCode::SignError,
            other => ErrCode::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            ErrCode::SystemError => "SYSTEMERROR",
            ErrCode::OrderPaid => "ORDERPAID",
            ErrCode::OrderClosed => "ORDERCLOSED",
            ErrCode::OrderNotExist => "ORDERNOTEXIST",
            ErrCode::OutTradeNoUsed => "OUT_TRADE_NO_USED",
            ErrCode::NotEnough => "NOTENOUGH",
            ErrCode::NoAuth => "NOAUTH",
            ErrCode::AppidNotExist => "APPID_NOT_EXIST",
            ErrCode::MchidNotExist => "MCHID_NOT_EXIST",
            ErrCode::AppidMchidNotMatch => "APPID_MCHID_NOT_MATCH",
            ErrCode::LackParams => "LACK_PARAMS",
            ErrCode::XmlFormatError => "XML_FORMAT_ERROR",
            ErrCode::RequirePostMethod => "REQUIRE_POST_METHOD",
            ErrCode::PostDataEmpty => "POST_DATA_EMPTY",
            ErrCode::NotUtf8 => "NOT_UTF8",
            ErrCode::SignError => "SIGNERROR",
            ErrCode::Other(code) => code,
        }
    }

    pub fn retry(&self) -> Retry {
        match self {
            ErrCode::SystemError => Retry::SameRequest,
            ErrCode::OrderPaid | ErrCode::OutTradeNoUsed => Retry::QueryFirst,
            ErrCode::OrderClosed => Retry::NeedsNewOrderNo,
            _ => Retry::Never,
        }
    }

    pub fn is_retryable(&self) -> bool {
        self.retry() == Retry::SameRequest
    }
}

impl fmt::Display for ErrCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("WeChat Pay reply is not readable XML: {0}")]
    Malformed(#[from] XmlError),
    /// `return_code` FAIL: the call itself failed (e.g. WeChat rejected our signature).
    #[error("WeChat Pay call failed: {return_msg}")]
    CallFailed { return_msg: String },
    /// The reply's signature does not verify: nothing in it may be trusted.
    #[error("WeChat Pay reply signature does not verify: {0}")]
    BadSignature(#[from] VerifyError),
    /// A validly signed reply about another merchant or app: not ours to trust.
    #[error("WeChat Pay reply is for another {field}")]
    ForeignMerchant { field: &'static str },
    /// `result_code` FAIL: WeChat refused the request.
    #[error("WeChat Pay refused: {err_code} ({err_code_des})")]
    Refused {
        err_code: ErrCode,
        err_code_des: String,
    },
    #[error("WeChat Pay reply lacks or garbles {0}")]
    MissingField(&'static str),
}

impl ReplyError {
    /// Whether sending the identical request again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ReplyError::Refused { err_code, .. } if err_code.is_retryable())
    }
}

/// Checks the envelope shared by every reply and returns its verified fields.
pub(crate) fn verified_reply(merchant: &MerchantConfig, body: &[u8]) -> Result<Params, ReplyError> {
    let params = xml::read(body)?;
    let return_code = params.get("return_code").map(String::as_str);
    if return_code != Some("SUCCESS") {
        let return_msg = params
            .get("return_msg")
            .map(|m| cut_to_bytes(m, 256).to_owned())
            .unwrap_or_else(|| format!("return_code {:?}", return_code.unwrap_or("")));
        return Err(ReplyError::CallFailed { return_msg });
    }
    let key = merchant.v2_key().map_err(|_| VerifyError::NoKey)?;
    verify_from_wechat(&params, key, merchant.sign_type)?;
    if params.get("appid") != Some(&merchant.appid) {
        return Err(ReplyError::ForeignMerchant { field: "appid" });
    }
    if params.get("mch_id") != Some(&merchant.mch_id) {
        return Err(ReplyError::ForeignMerchant { field: "mch_id" });
    }
    match params.get("result_code").map(String::as_str) {
        Some("SUCCESS") => Ok(params),
        Some("FAIL") => Err(ReplyError::Refused {
            err_code: ErrCode::parse(params.get("err_code").map_or("", String::as_str)),
            err_code_des: params
                .get("err_code_des")
                .map(|d| cut_to_bytes(d, 256).to_owned())
                .unwrap_or_default(),
        }),
        _ => Err(ReplyError::MissingField("result_code")),
    }
}

pub(crate) fn required<'p>(params: &'p Params, field: &'static str) -> Result<&'p str, ReplyError> {
    params
        .get(field)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or(ReplyError::MissingField(field))
}

/// A successful unified order: the prepay id, valid for 2 hours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepay {
    pub prepay_id: String,
}

/// How long a prepay id stays valid.
pub const PREPAY_TTL_SECS: u64 = 2 * 60 * 60;

pub fn parse_unified_order_reply(
    merchant: &MerchantConfig,
    body: &[u8],
) -> Result<Prepay, ReplyError> {
    let params = verified_reply(merchant, body)?;
    let prepay_id = required(&params, "prepay_id")?;
    if prepay_id.len() > 64 {
        return Err(ReplyError::MissingField("prepay_id"));
    }
    Ok(Prepay {
        prepay_id: prepay_id.to_owned(),
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TradeState {
    Success,
    Refund,
    NotPay,
    Closed,
    Revoked,
    UserPaying,
    PayError,
    Other(String),
}

impl TradeState {
    pub fn parse(s: &str) -> TradeState {
        match s {
            "SUCCESS" => TradeState::Success,
            "REFUND" => TradeState::Refund,
            "NOTPAY" => TradeState::NotPay,
            "CLOSED" => TradeState::Closed,
            "REVOKED" => TradeState::Revoked,
            "USERPAYING" => TradeState::UserPaying,
            "PAYERROR" => TradeState::PayError,
            other => TradeState::Other(other.to_owned()),
        }
    }
}

/// A paid trade as WeChat reports it (orderquery SUCCESS or a payment notification).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaidTrade {
    pub transaction_id: String,
    pub total_fee: Fen,
    /// `yyyyMMddHHmmss`, Beijing time.
    pub time_end: String,
}

impl PaidTrade {
    /// Reads the payment fields shared by orderquery replies and notifications.
    pub fn from_params(params: &Params) -> Result<PaidTrade, ReplyError> {
        let total_fee = required(params, "total_fee")?
            .parse::<Fen>()
            .map_err(|_| ReplyError::MissingField("total_fee"))?;
        let time_end = required(params, "time_end")?;
        crate::time::parse_beijing_compact(time_end)
            .map_err(|_| ReplyError::MissingField("time_end"))?;
        Ok(PaidTrade {
            transaction_id: required(params, "transaction_id")?.to_owned(),
            total_fee,
            time_end: time_end.to_owned(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderQuery {
    pub out_trade_no: String,
    pub trade_state: TradeState,
    /// Present when `trade_state` is SUCCESS (and for REFUND).
    pub paid: Option<PaidTrade>,
}

pub fn parse_order_query_reply(
    merchant: &MerchantConfig,
    body: &[u8],
) -> Result<OrderQuery, ReplyError> {
    let params = verified_reply(merchant, body)?;
    let trade_state = TradeState::parse(required(&params, "trade_state")?);
    let paid = match trade_state {
        TradeState::Success | TradeState::Refund => Some(PaidTrade::from_params(&params)?),
        _ => None,
    };
    Ok(OrderQuery {
        out_trade_no: required(&params, "out_trade_no")?.to_owned(),
        trade_state,
        paid,
    })
}

/// `Ok(())` when WeChat closed the order; ORDERPAID / ORDERCLOSED / ORDERNOTEXIST come back as
/// [`ReplyError::Refused`] for the caller to act on.
pub fn parse_close_order_reply(merchant: &MerchantConfig, body: &[u8]) -> Result<(), ReplyError> {
    verified_reply(merchant, body).map(|_| ())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::secret::Secret;
    use crate::v2::sign::{SignType, sign_in_place, verify};

    pub(crate) fn merchant(sign_type: SignType) -> MerchantConfig {
        MerchantConfig {
            mode: crate::config::Mode::Live,
            api_version: crate::config::ApiVersion::V2,
            appid: "wxd930ea5d5a258f4f".into(),
            mch_id: "10000100".into(),
            api_key: Some(Secret::new("192006250b4c09247ec02edce69f6a2d")),
            sign_type,
            v3: None,
            notify_url: "https://shop.example.com/api/wxpay/notify".into(),
            mch_api: "https://api.mch.weixin.qq.com".into(),
        }
    }

    fn order() -> UnifiedOrder<'static> {
        UnifiedOrder {
            out_trade_no: "20261127120000ABCDEF",
            body: "腾讯充值中心-QQ会员充值",
            total_fee: Fen(888),
            spbill_create_ip: "123.12.12.123",
            openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
            time_expire: Some("20261127140000"),
            attach: None,
        }
    }

    /// A reply as WeChat would sign it with `merchant`'s key.
    pub(crate) fn signed_reply(m: &MerchantConfig, fields: &[(&str, &str)]) -> Vec<u8> {
        let mut p: Params = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        sign_in_place(&mut p, m.v2_key().unwrap(), m.sign_type);
        xml::write(&p).into_bytes()
    }

    const OK_ENVELOPE: [(&str, &str); 5] = [
        ("return_code", "SUCCESS"),
        ("return_msg", "OK"),
        ("appid", "wxd930ea5d5a258f4f"),
        ("mch_id", "10000100"),
        ("nonce_str", "IITRi8Iabbblz1Jc"),
    ];

    fn reply(m: &MerchantConfig, extra: &[(&str, &str)]) -> Vec<u8> {
        let fields: Vec<_> = OK_ENVELOPE.iter().chain(extra).copied().collect();
        signed_reply(m, &fields)
    }

    #[test]
    fn unified_order_request_is_signed_and_complete() {
        for sign_type in [SignType::Md5, SignType::HmacSha256] {
            let m = merchant(sign_type);
            let req = unified_order_request(&m, &order(), "ibuaiVcKdpRxkhJA").unwrap();
            assert_eq!(req.path, "/pay/unifiedorder");
            assert_eq!(
                m.url(req.path),
                "https://api.mch.weixin.qq.com/pay/unifiedorder"
            );
            let sent = xml::read(req.body.as_bytes()).unwrap();
            assert_eq!(verify(&sent, m.v2_key().unwrap()), Ok(sign_type));
            for (k, v) in [
                ("appid", "wxd930ea5d5a258f4f"),
                ("mch_id", "10000100"),
                ("body", "腾讯充值中心-QQ会员充值"),
                ("total_fee", "888"),
                ("trade_type", "JSAPI"),
                ("notify_url", "https://shop.example.com/api/wxpay/notify"),
                ("time_expire", "20261127140000"),
                ("nonce_str", "ibuaiVcKdpRxkhJA"),
            ] {
                assert_eq!(sent.get(k).map(String::as_str), Some(v), "field {k}");
            }
            assert!(
                !sent.contains_key("attach"),
                "empty optional fields are not sent"
            );
            assert_eq!(
                sent.contains_key("sign_type"),
                sign_type == SignType::HmacSha256
            );
        }
    }

    #[test]
    fn the_same_inputs_give_the_same_bytes() {
        let m = merchant(SignType::Md5);
        assert_eq!(
            unified_order_request(&m, &order(), "n1").unwrap(),
            unified_order_request(&m, &order(), "n1").unwrap()
        );
    }

    #[test]
    fn body_is_cut_on_a_character_boundary() {
        let long = "好".repeat(60); // 180 bytes
        let m = merchant(SignType::Md5);
        let req = unified_order_request(
            &m,
            &UnifiedOrder {
                body: &long,
                ..order()
            },
            "n",
        )
        .unwrap();
        let body = xml::read(req.body.as_bytes()).unwrap()["body"].clone();
        assert_eq!(body.len(), 126);
        assert_eq!(body, "好".repeat(42));
        assert_eq!(cut_to_bytes("abc", 2), "ab");
        assert_eq!(cut_to_bytes("a好", 3), "a");
        assert_eq!(cut_to_bytes("a好", 4), "a好");
    }

    #[test]
    fn unified_order_request_refusals() {
        let m = merchant(SignType::Md5);
        let cases: [(UnifiedOrder, RequestError); 7] = [
            (
                UnifiedOrder {
                    out_trade_no: "12345",
                    ..order()
                },
                RequestError::OutTradeNo,
            ),
            (
                UnifiedOrder {
                    out_trade_no: "abc def 123",
                    ..order()
                },
                RequestError::OutTradeNo,
            ),
            (
                UnifiedOrder {
                    total_fee: Fen(0),
                    ..order()
                },
                RequestError::ZeroAmount,
            ),
            (
                UnifiedOrder {
                    body: "  ",
                    ..order()
                },
                RequestError::EmptyBody,
            ),
            (
                UnifiedOrder {
                    openid: "",
                    ..order()
                },
                RequestError::MissingOpenid,
            ),
            (
                UnifiedOrder {
                    spbill_create_ip: "",
                    ..order()
                },
                RequestError::MissingClientIp,
            ),
            (
                UnifiedOrder {
                    time_expire: Some("2026-11-27"),
                    ..order()
                },
                RequestError::TimeExpire,
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(unified_order_request(&m, &input, "n"), Err(expected));
        }
        let attach = "x".repeat(128);
        assert_eq!(
            unified_order_request(
                &m,
                &UnifiedOrder {
                    attach: Some(&attach),
                    ..order()
                },
                "n"
            ),
            Err(RequestError::AttachTooLong(128))
        );
    }

    #[test]
    fn query_and_close_requests() {
        let m = merchant(SignType::HmacSha256);
        let q = order_query_request(&m, "20150806125346", "n").unwrap();
        assert_eq!(q.path, ORDER_QUERY_PATH);
        let sent = xml::read(q.body.as_bytes()).unwrap();
        assert_eq!(sent["out_trade_no"], "20150806125346");
        assert_eq!(verify(&sent, m.v2_key().unwrap()), Ok(SignType::HmacSha256));
        let c = close_order_request(&m, "20150806125346", "n").unwrap();
        assert_eq!(c.path, CLOSE_ORDER_PATH);
        assert_eq!(
            order_query_request(&m, "bad", "n"),
            Err(RequestError::OutTradeNo)
        );
    }

    #[test]
    fn unified_order_success() {
        for sign_type in [SignType::Md5, SignType::HmacSha256] {
            let m = merchant(sign_type);
            let body = reply(
                &m,
                &[
                    ("result_code", "SUCCESS"),
                    ("prepay_id", "wx201411101639507cbf6ffd8b0779950874"),
                    ("trade_type", "JSAPI"),
                ],
            );
            assert_eq!(
                parse_unified_order_reply(&m, &body),
                Ok(Prepay {
                    prepay_id: "wx201411101639507cbf6ffd8b0779950874".into()
                })
            );
        }
    }

    #[test]
    fn return_code_fail_is_a_failed_call() {
        let m = merchant(SignType::Md5);
        let body = b"<xml><return_code><![CDATA[FAIL]]></return_code><return_msg><![CDATA[\xe7\xad\xbe\xe5\x90\x8d\xe9\x94\x99\xe8\xaf\xaf]]></return_msg></xml>";
        assert_eq!(
            parse_unified_order_reply(&m, body),
            Err(ReplyError::CallFailed {
                return_msg: "签名错误".into()
            })
        );
        assert!(
            !parse_unified_order_reply(&m, body)
                .unwrap_err()
                .is_retryable()
        );
    }

    #[test]
    fn result_code_fail_carries_err_code_and_retry_advice() {
        let m = merchant(SignType::Md5);
        for (code, retry) in [
            ("SYSTEMERROR", Retry::SameRequest),
            ("ORDERPAID", Retry::QueryFirst),
            ("OUT_TRADE_NO_USED", Retry::QueryFirst),
            ("ORDERCLOSED", Retry::NeedsNewOrderNo),
            ("NOTENOUGH", Retry::Never),
            ("SIGNERROR", Retry::Never),
            ("SOMETHING_NEW", Retry::Never),
        ] {
            let body = reply(
                &m,
                &[
                    ("result_code", "FAIL"),
                    ("err_code", code),
                    ("err_code_des", "描述"),
                ],
            );
            let err = parse_unified_order_reply(&m, &body).unwrap_err();
            let ReplyError::Refused {
                err_code,
                err_code_des,
            } = &err
            else {
                panic!("{code}: expected Refused, got {err:?}");
            };
            assert_eq!(err_code.as_str(), code);
            assert_eq!(err_code.retry(), retry);
            assert_eq!(err_code_des, "描述");
            assert_eq!(err.is_retryable(), retry == Retry::SameRequest);
        }
    }

    #[test]
    fn a_reply_that_does_not_verify_is_not_trusted() {
        let m = merchant(SignType::Md5);
        let mut body = String::from_utf8(reply(
            &m,
            &[
                ("result_code", "SUCCESS"),
                ("prepay_id", "wx2014"),
                ("trade_type", "JSAPI"),
            ],
        ))
        .unwrap();
        body = body.replace("wx2014", "wx666");
        assert_eq!(
            parse_unified_order_reply(&m, body.as_bytes()),
            Err(ReplyError::BadSignature(VerifyError::Mismatch))
        );
        // Signed with another key.
        let other = MerchantConfig {
            api_key: Some(Secret::new("another-key")),
            ..merchant(SignType::Md5)
        };
        let body = reply(&other, &[("result_code", "SUCCESS"), ("prepay_id", "wx1")]);
        assert_eq!(
            parse_unified_order_reply(&m, &body),
            Err(ReplyError::BadSignature(VerifyError::Mismatch))
        );
        // Unsigned.
        let body = xml::write(
            &OK_ENVELOPE
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        assert_eq!(
            parse_unified_order_reply(&m, body.as_bytes()),
            Err(ReplyError::BadSignature(VerifyError::MissingSign))
        );
    }

    #[test]
    fn a_reply_for_another_merchant_is_not_trusted() {
        let m = merchant(SignType::Md5);
        let fields = [
            ("return_code", "SUCCESS"),
            ("appid", "wxd930ea5d5a258f4f"),
            ("mch_id", "10000199"),
            ("result_code", "SUCCESS"),
            ("prepay_id", "wx1"),
        ];
        assert_eq!(
            parse_unified_order_reply(&m, &signed_reply(&m, &fields)),
            Err(ReplyError::ForeignMerchant { field: "mch_id" })
        );
    }

    #[test]
    fn success_without_prepay_id_is_refused() {
        let m = merchant(SignType::Md5);
        assert_eq!(
            parse_unified_order_reply(&m, &reply(&m, &[("result_code", "SUCCESS")])),
            Err(ReplyError::MissingField("prepay_id"))
        );
        assert_eq!(
            parse_unified_order_reply(&m, &reply(&m, &[])),
            Err(ReplyError::MissingField("result_code"))
        );
        assert!(matches!(
            parse_unified_order_reply(&m, b"not xml"),
            Err(ReplyError::Malformed(_))
        ));
    }

    #[test]
    fn order_query_replies() {
        let m = merchant(SignType::HmacSha256);
        let paid = reply(
            &m,
            &[
                ("result_code", "SUCCESS"),
                ("trade_state", "SUCCESS"),
                ("out_trade_no", "20150806125346"),
                ("transaction_id", "1004400740201409030005092168"),
                ("total_fee", "888"),
                ("cash_fee", "888"),
                ("time_end", "20141030133525"),
            ],
        );
        assert_eq!(
            parse_order_query_reply(&m, &paid),
            Ok(OrderQuery {
                out_trade_no: "20150806125346".into(),
                trade_state: TradeState::Success,
                paid: Some(PaidTrade {
                    transaction_id: "1004400740201409030005092168".into(),
                    total_fee: Fen(888),
                    time_end: "20141030133525".into(),
                }),
            })
        );
        let unpaid = reply(
            &m,
            &[
                ("result_code", "SUCCESS"),
                ("trade_state", "NOTPAY"),
                ("out_trade_no", "20150806125346"),
            ],
        );
        assert_eq!(
            parse_order_query_reply(&m, &unpaid).unwrap().trade_state,
            TradeState::NotPay
        );
        let missing = reply(
            &m,
            &[("result_code", "FAIL"), ("err_code", "ORDERNOTEXIST")],
        );
        assert!(matches!(
            parse_order_query_reply(&m, &missing),
            Err(ReplyError::Refused {
                err_code: ErrCode::OrderNotExist,
                ..
            })
        ));
        let garbled = reply(
            &m,
            &[
                ("result_code", "SUCCESS"),
                ("trade_state", "SUCCESS"),
                ("out_trade_no", "20150806125346"),
                ("transaction_id", "1"),
                ("total_fee", "8.88"),
                ("time_end", "20141030133525"),
            ],
        );
        assert_eq!(
            parse_order_query_reply(&m, &garbled),
            Err(ReplyError::MissingField("total_fee"))
        );
    }

    #[test]
    fn close_order_replies() {
        let m = merchant(SignType::Md5);
        assert_eq!(
            parse_close_order_reply(&m, &reply(&m, &[("result_code", "SUCCESS")])),
            Ok(())
        );
        assert!(matches!(
            parse_close_order_reply(
                &m,
                &reply(&m, &[("result_code", "FAIL"), ("err_code", "ORDERPAID")])
            ),
            Err(ReplyError::Refused {
                err_code: ErrCode::OrderPaid,
                ..
            })
        ));
    }
}
