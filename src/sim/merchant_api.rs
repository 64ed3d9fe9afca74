//! WeChat Pay APIv2 as the simulator plays it: `POST /_sim/pay/unifiedorder`, `/pay/orderquery`,
//! `/pay/closeorder` (PROTOCOL.md "Unified order"), `/secapi/pay/refund` and `/pay/refundquery`
//! (PROTOCOL.md "Refunds"; WeChat's refund rules: [`super::refunds`]).
//!
//! Checks, in WeChat's order: a POST with a readable UTF-8 `<xml>` body; every required field
//! present; the simulator's `mch_id` (whose key it knows); a known `sign_type` and a signature that
//! verifies with it; field formats and limits; the simulator's `appid`. A failed check answers
//! `return_code` FAIL with a `return_msg` naming the problem (Chinese as WeChat writes it, with the
//! English error code and detail in parentheses). Business refusals answer `return_code` SUCCESS,
//! `result_code` FAIL and WeChat's `err_code` / `err_code_des`, signed. Replies are signed with
//! the request's `sign_type` (an HMAC-SHA256 reply says so in its own `sign_type`).

use super::faults::{self, ApiFault, TIMEOUT_DELAY};
use super::refunds::{self, RefundApi, RefundAsk, SimRefund, TradeRef};
use super::{
    SimConfig, SimOrder, Sleep, TradeState, load_index, load_order, nonce, save_new_order,
    save_order, transaction_key,
};
use crate::config::{MAX_NOTIFY_URL_LEN, SIM_API_KEY, SIM_APPID, SIM_MCH_ID};
use crate::flows::{Clock, Env, Nonce, Response, Store};
use crate::money::Fen;
use crate::order::valid_out_trade_no;
use crate::refund::{MAX_REASON_CHARS, valid_refund_no};
use crate::secret::Secret;
use crate::time::{beijing_compact, parse_beijing_compact};
use crate::v2::api::{MAX_ATTACH_BYTES, MAX_BODY_BYTES, PREPAY_TTL_SECS};
use crate::v2::sign::{SIGN_FIELD, SignType, declared_sign_type, sign_in_place, verify};
use crate::v2::{Params, xml};

/// Routes below `/_sim`.
pub const UNIFIED_ORDER: &str = "/pay/unifiedorder";
pub const ORDER_QUERY: &str = "/pay/orderquery";
pub const CLOSE_ORDER: &str = "/pay/closeorder";
pub const REFUND: &str = crate::v2::refund::REFUND_PATH;
pub const REFUND_QUERY: &str = crate::v2::refund::REFUND_QUERY_PATH;

/// Whether `path` (below `/_sim`) is one of these routes.
pub fn serves(path: &str) -> bool {
    [
        UNIFIED_ORDER,
        ORDER_QUERY,
        CLOSE_ORDER,
        REFUND,
        REFUND_QUERY,
    ]
    .contains(&path)
}

/// Whether `path` is a refund route (refund, refundquery).
pub fn is_refund(path: &str) -> bool {
    path == REFUND || path == REFUND_QUERY
}

/// refundquery answers at most this many refunds of a trade per page (`offset` pages on).
pub const REFUNDS_PER_QUERY_PAGE: usize = 10;

/// WeChat's limit on `nonce_str`.
pub const MAX_NONCE_LEN: usize = 32;
/// PROTOCOL.md: `time_expire` must be at least this far ahead.
pub const MIN_TIME_EXPIRE_SECS: u64 = 5 * 60;

/// The simulator merchant's API key.
pub fn sim_key() -> Secret {
    Secret::new(SIM_API_KEY)
}

/// A call WeChat refuses as a whole: `return_code` FAIL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRefused {
    /// WeChat's error code for it (`SIGNERROR`, `LACK_PARAMS`, `PARAM_ERROR`, ...): in the
    /// message only, the wire shape has no code.
    pub code: &'static str,
    pub return_msg: String,
}

impl CallRefused {
    fn new(code: &'static str, chinese: &str, detail: impl AsRef<str>) -> Self {
        Self {
            code,
            return_msg: format!("{chinese} ({code}: {})", detail.as_ref()),
        }
    }

    fn format(field: &str, detail: impl AsRef<str>) -> Self {
        Self::new("PARAM_ERROR", &format!("{field}参数格式错误"), detail)
    }

    pub fn reply(&self) -> Response {
        let mut p = Params::new();
        p.insert("return_code".into(), "FAIL".into());
        p.insert("return_msg".into(), self.return_msg.clone());
        Response::xml(xml::write(&p))
    }
}

/// A request that passed the envelope checks.
struct Checked {
    params: Params,
    sign_type: SignType,
}

/// Reads and checks a request: POST, XML, required fields, mch_id, signature.
fn check_envelope(method: &str, body: &[u8], required: &[&str]) -> Result<Checked, CallRefused> {
    if method != "POST" {
        return Err(CallRefused::new(
            "REQUIRE_POST_METHOD",
            "请使用post方法",
            format!("got {method}"),
        ));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(CallRefused::new(
            "POST_DATA_EMPTY",
            "post数据为空",
            "empty body",
        ));
    }
    let params = xml::read(body).map_err(|e| match e {
        xml::XmlError::NotUtf8 => CallRefused::new("NOT_UTF8", "编码格式错误", "body is not UTF-8"),
        other => CallRefused::new("XML_FORMAT_ERROR", "XML格式错误", other.to_string()),
    })?;
    for field in required.iter().copied().chain([SIGN_FIELD]) {
        if params.get(field).is_none_or(|v| v.is_empty()) {
            return Err(CallRefused::new(
                "LACK_PARAMS",
                &format!("缺少参数{field}"),
                format!("{field} is required"),
            ));
        }
    }
    if params.get("mch_id").map(String::as_str) != Some(SIM_MCH_ID) {
        return Err(CallRefused::new(
            "MCHID_NOT_EXIST",
            "商户号mch_id不存在",
            format!("the simulator's merchant is {SIM_MCH_ID}"),
        ));
    }
    let sign_type = declared_sign_type(&params).map_err(|_| {
        CallRefused::new(
            "PARAM_ERROR",
            "sign_type参数格式错误",
            "sign_type must be MD5 or HMAC-SHA256",
        )
    })?;
    if verify(&params, &sim_key()).is_err() {
        return Err(CallRefused::new(
            "SIGNERROR",
            "签名错误",
            format!("sign does not verify as {sign_type} with the simulator's API key"),
        ));
    }
    if params
        .get("nonce_str")
        .is_some_and(|n| n.len() > MAX_NONCE_LEN)
    {
        return Err(CallRefused::format(
            "nonce_str",
            format!("at most {MAX_NONCE_LEN} characters"),
        ));
    }
    Ok(Checked { params, sign_type })
}

/// A signed reply with `return_code` SUCCESS: `appid` and `mch_id` echo the request.
fn signed_reply<N: Nonce>(
    checked: &Checked,
    nonce_source: &N,
    fields: Vec<(&str, String)>,
    bad_signature: bool,
) -> Response {
    let mut p = Params::new();
    p.insert("return_code".into(), "SUCCESS".into());
    p.insert("return_msg".into(), "OK".into());
    for name in ["appid", "mch_id"] {
        p.insert(
            name.into(),
            checked.params.get(name).cloned().unwrap_or_default(),
        );
    }
    p.insert("nonce_str".into(), nonce(nonce_source));
    for (name, value) in fields {
        if !value.is_empty() {
            p.insert(name.into(), value);
        }
    }
    sign_in_place(&mut p, &sim_key(), checked.sign_type);
    if bad_signature {
        // Signed with another key: well-formed, and wrong.
        sign_in_place(&mut p, &Secret::new("0".repeat(32)), checked.sign_type);
    }
    Response::xml(xml::write(&p))
}

/// A business refusal: `result_code` FAIL with `err_code`.
fn refused<N: Nonce>(
    checked: &Checked,
    nonce_source: &N,
    err_code: &str,
    err_code_des: &str,
    bad_signature: bool,
) -> Response {
    signed_reply(
        checked,
        nonce_source,
        vec![
            ("result_code", "FAIL".into()),
            ("err_code", err_code.into()),
            ("err_code_des", err_code_des.into()),
        ],
        bad_signature,
    )
}

/// WeChat's refusal for a trade that is already paid (ORDERPAID) or closed (ORDERCLOSED), the
/// same for unifiedorder and closeorder.
fn refused_terminal<N: Nonce>(
    checked: &Checked,
    nonce_source: &N,
    state: TradeState,
    bad_signature: bool,
) -> Response {
    let (err_code, err_code_des) = match state {
        TradeState::Success => ("ORDERPAID", "该订单已支付"),
        _ => ("ORDERCLOSED", "订单已关闭"),
    };
    refused(checked, nonce_source, err_code, err_code_des, bad_signature)
}

fn system_error<N: Nonce>(checked: &Checked, nonce_source: &N) -> Response {
    refused(checked, nonce_source, "SYSTEMERROR", "系统错误", false)
}

/// One merchant API call (`path` is one of these routes: [`serves`]).
pub async fn handle<S, T, C, N, P, const REFUNDS: bool>(
    env: &Env<S, T, C, N, SimConfig>,
    sleep: &P,
    path: &str,
    method: &str,
    body: &[u8],
) -> Response
where
    S: Store,
    C: Clock,
    N: Nonce,
    P: Sleep,
{
    let required: &[&str] = match path {
        UNIFIED_ORDER => &[
            "appid",
            "mch_id",
            "nonce_str",
            "body",
            "out_trade_no",
            "total_fee",
            "spbill_create_ip",
            "notify_url",
            "trade_type",
        ],
        REFUND => &[
            "appid",
            "mch_id",
            "nonce_str",
            "out_refund_no",
            "total_fee",
            "refund_fee",
        ],
        _ => &["appid", "mch_id", "nonce_str"],
    };
    let checked = match check_envelope(method, body, required) {
        Ok(c) => c,
        Err(refusal) => return refusal.reply(),
    };
    let checked_fields = match path {
        UNIFIED_ORDER => check_unified_order(&checked.params, env.clock.now_unix()),
        ORDER_QUERY => check_query(&checked.params),
        REFUND if REFUNDS => check_refund(&checked.params),
        REFUND_QUERY if REFUNDS => check_refund_query(&checked.params),
        _ => check_close(&checked.params),
    };
    if let Err(refusal) = checked_fields {
        return refusal.reply();
    }
    if checked.params.get("appid").map(String::as_str) != Some(SIM_APPID) {
        return refused(
            &checked,
            &env.nonce,
            "APPID_MCHID_NOT_MATCH",
            "appid和mch_id不匹配",
            false,
        );
    }
    let fault = faults::take_api_fault(&env.store).await;
    if fault == ApiFault::SystemError {
        return system_error(&checked, &env.nonce);
    }
    let bad_signature = fault == ApiFault::BadSignature;
    let reply = match path {
        UNIFIED_ORDER => unified_order(env, &checked, bad_signature).await,
        ORDER_QUERY => order_query(env, &checked, bad_signature).await,
        REFUND if REFUNDS => super::refund_route(refund(env, &checked, bad_signature)).await,
        REFUND_QUERY if REFUNDS => {
            super::refund_route(refund_query(env, &checked, bad_signature)).await
        }
        _ => close_order(env, &checked, bad_signature).await,
    };
    if fault == ApiFault::Timeout {
        // Processed, but answered too late: the caller has given up and will retry.
        sleep.sleep(TIMEOUT_DELAY).await;
    }
    reply
}

/// Format checks of a unified order (the required fields are present).
fn check_unified_order(p: &Params, now: u64) -> Result<(), CallRefused> {
    let f = |name: &str| p.get(name).map_or("", String::as_str);
    if !valid_out_trade_no(f("out_trade_no")) {
        return Err(CallRefused::format(
            "out_trade_no",
            "6-32 characters of [0-9A-Za-z_-|*]",
        ));
    }
    if f("body").len() > MAX_BODY_BYTES {
        return Err(CallRefused::new(
            "PARAM_ERROR",
            "body参数长度有误",
            format!(
                "body is {} bytes, at most {MAX_BODY_BYTES}",
                f("body").len()
            ),
        ));
    }
    if f("attach").len() > MAX_ATTACH_BYTES {
        return Err(CallRefused::new(
            "PARAM_ERROR",
            "attach参数长度有误",
            format!("attach is at most {MAX_ATTACH_BYTES} bytes"),
        ));
    }
    match f("total_fee").parse::<Fen>() {
        Ok(fee) if fee.0 > 0 => {}
        _ => {
            return Err(CallRefused::format(
                "total_fee",
                "a positive whole number of fen",
            ));
        }
    }
    check_notify_url(f("notify_url"))?;
    if f("trade_type") != "JSAPI" {
        return Err(CallRefused::format(
            "trade_type",
            "the simulator serves mini programs: JSAPI",
        ));
    }
    if f("openid").is_empty() {
        return Err(CallRefused::new(
            "LACK_PARAMS",
            "JSAPI支付必须传openid",
            "openid is required for trade_type JSAPI",
        ));
    }
    let time_expire = f("time_expire");
    if !time_expire.is_empty() {
        let Ok(at) = parse_beijing_compact(time_expire) else {
            return Err(CallRefused::format(
                "time_expire",
                "yyyyMMddHHmmss, Beijing time",
            ));
        };
        if at < now.saturating_add(MIN_TIME_EXPIRE_SECS) {
            return Err(CallRefused::new(
                "INVALID_REQUEST",
                "time_expire时间过短，刷卡至少1分钟，其他5分钟",
                "time_expire must be at least 5 minutes ahead",
            ));
        }
    }
    Ok(())
}

/// Absolute http(s), at most 256 bytes, no query string.
fn check_notify_url(url: &str) -> Result<(), CallRefused> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let ok = url.len() <= MAX_NOTIFY_URL_LEN
        && rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
        && !url.contains(['?', '#', ' ']);
    if ok {
        Ok(())
    } else {
        Err(CallRefused::format(
            "notify_url",
            format!(
                "an absolute http(s) URL without query string, at most {MAX_NOTIFY_URL_LEN} bytes"
            ),
        ))
    }
}

fn check_query(p: &Params) -> Result<(), CallRefused> {
    let no = p.get("out_trade_no").map_or("", String::as_str);
    let txn = p.get("transaction_id").map_or("", String::as_str);
    if no.is_empty() && txn.is_empty() {
        return Err(CallRefused::new(
            "LACK_PARAMS",
            "缺少参数out_trade_no",
            "out_trade_no or transaction_id is required",
        ));
    }
    if !no.is_empty() && !valid_out_trade_no(no) {
        return Err(CallRefused::format(
            "out_trade_no",
            "6-32 characters of [0-9A-Za-z_-|*]",
        ));
    }
    Ok(())
}

fn check_close(p: &Params) -> Result<(), CallRefused> {
    let no = p.get("out_trade_no").map_or("", String::as_str);
    if no.is_empty() {
        return Err(CallRefused::new(
            "LACK_PARAMS",
            "缺少参数out_trade_no",
            "out_trade_no is required",
        ));
    }
    if !valid_out_trade_no(no) {
        return Err(CallRefused::format(
            "out_trade_no",
            "6-32 characters of [0-9A-Za-z_-|*]",
        ));
    }
    Ok(())
}

/// The fields a repeated unified order is compared on: all but `sign` and `nonce_str`.
fn comparable(p: &Params) -> Params {
    p.iter()
        .filter(|(k, v)| k.as_str() != SIGN_FIELD && k.as_str() != "nonce_str" && !v.is_empty())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A new prepay id: `wx`, the Beijing time and 20 hex digits (36 characters, like WeChat's).
fn new_prepay_id(now: u64, random: [u8; 16]) -> String {
    format!("wx{}{}", beijing_compact(now), hex::encode(&random[..10]))
}

async fn unified_order<S: Store, T, C: Clock, N: Nonce>(
    env: &Env<S, T, C, N, SimConfig>,
    checked: &Checked,
    bad_signature: bool,
) -> Response {
    let p = &checked.params;
    let out_trade_no = p.get("out_trade_no").cloned().unwrap_or_default();
    let request = comparable(p);
    let now = env.clock.now_unix();
    let prepay_ok = |prepay_id: &str| {
        signed_reply(
            checked,
            &env.nonce,
            vec![
                ("result_code", "SUCCESS".into()),
                ("trade_type", "JSAPI".into()),
                ("prepay_id", prepay_id.into()),
            ],
            bad_signature,
        )
    };
    let existing = match load_order(&env.store, &out_trade_no).await {
        Ok(o) => o,
        Err(_) => return system_error(checked, &env.nonce),
    };
    if let Some(order) = existing {
        return match order.trade_state {
            state @ (TradeState::Success | TradeState::Closed) => {
                refused_terminal(checked, &env.nonce, state, bad_signature)
            }
            TradeState::Notpay if order.request != request => refused(
                checked,
                &env.nonce,
                "OUT_TRADE_NO_USED",
                "商户订单号重复",
                bad_signature,
            ),
            // The same order again (a retry): the same prepay id.
            TradeState::Notpay => prepay_ok(&order.prepay_id),
        };
    }
    let prepay_id = new_prepay_id(now, env.nonce.random16());
    let mut expires_at = now.saturating_add(PREPAY_TTL_SECS);
    if let Some(Ok(at)) = p.get("time_expire").map(|t| parse_beijing_compact(t)) {
        expires_at = expires_at.min(at);
    }
    let order = SimOrder::unpaid(
        out_trade_no,
        prepay_id.clone(),
        request,
        checked.sign_type.as_str(),
        now,
        expires_at,
    );
    if save_new_order(&env.store, &order).await.is_err() {
        return system_error(checked, &env.nonce);
    }
    prepay_ok(&prepay_id)
}

async fn order_query<S: Store, T, C, N: Nonce>(
    env: &Env<S, T, C, N, SimConfig>,
    checked: &Checked,
    bad_signature: bool,
) -> Response {
    let p = &checked.params;
    let out_trade_no = match p.get("out_trade_no").filter(|v| !v.is_empty()) {
        Some(no) => Some(no.clone()),
        None => {
            let txn = p.get("transaction_id").cloned().unwrap_or_default();
            match load_index(&env.store, &transaction_key(&txn)).await {
                Ok(no) => no,
                Err(_) => return system_error(checked, &env.nonce),
            }
        }
    };
    let order = match out_trade_no {
        None => None,
        Some(no) => match load_order(&env.store, &no).await {
            Ok(o) => o,
            Err(_) => return system_error(checked, &env.nonce),
        },
    };
    let Some(order) = order else {
        return refused(
            checked,
            &env.nonce,
            "ORDERNOTEXIST",
            "此交易订单号不存在",
            bad_signature,
        );
    };
    let mut fields = vec![
        ("result_code", "SUCCESS".to_owned()),
        ("out_trade_no", order.out_trade_no.clone()),
        ("trade_state", order.trade_state.as_str().to_owned()),
    ];
    match order.trade_state {
        TradeState::Success => {
            fields.extend(paid_fields(&order));
            fields.push(("trade_state_desc", "支付成功".into()));
        }
        TradeState::Notpay => fields.push(("trade_state_desc", "订单未支付".into())),
        TradeState::Closed => fields.push(("trade_state_desc", "订单已关闭".into())),
    }
    signed_reply(checked, &env.nonce, fields, bad_signature)
}

/// The payment fields shared by orderquery (SUCCESS) and the notification.
pub(super) fn paid_fields(order: &SimOrder) -> Vec<(&'static str, String)> {
    vec![
        ("openid", order.field("openid").to_owned()),
        ("is_subscribe", "N".into()),
        ("trade_type", "JSAPI".into()),
        ("bank_type", "OTHERS".into()),
        ("total_fee", order.field("total_fee").to_owned()),
        ("cash_fee", order.field("total_fee").to_owned()),
        ("fee_type", "CNY".into()),
        (
            "transaction_id",
            order.transaction_id.clone().unwrap_or_default(),
        ),
        ("out_trade_no", order.out_trade_no.clone()),
        ("attach", order.field("attach").to_owned()),
        ("time_end", order.time_end.clone().unwrap_or_default()),
    ]
}

async fn close_order<S: Store, T, C, N: Nonce>(
    env: &Env<S, T, C, N, SimConfig>,
    checked: &Checked,
    bad_signature: bool,
) -> Response {
    let no = checked
        .params
        .get("out_trade_no")
        .cloned()
        .unwrap_or_default();
    let mut order = match load_order(&env.store, &no).await {
        Ok(Some(o)) => o,
        Ok(None) => {
            return refused(
                checked,
                &env.nonce,
                "ORDERNOTEXIST",
                "此交易订单号不存在",
                bad_signature,
            );
        }
        Err(_) => return system_error(checked, &env.nonce),
    };
    match order.trade_state {
        state @ (TradeState::Success | TradeState::Closed) => {
            refused_terminal(checked, &env.nonce, state, bad_signature)
        }
        TradeState::Notpay => {
            order.trade_state = TradeState::Closed;
            if save_order(&env.store, &order).await.is_err() {
                return system_error(checked, &env.nonce);
            }
            signed_reply(
                checked,
                &env.nonce,
                vec![
                    ("result_code", "SUCCESS".into()),
                    ("result_msg", "OK".into()),
                ],
                bad_signature,
            )
        }
    }
}

// ---- Refunds ------------------------------------------------------------------------------------

/// Format checks of a refund (the required fields are present): the trade by `out_trade_no` or
/// `transaction_id`, the refund number, whole positive fen, a refund within the total, the
/// reason's length, the notify URL.
fn check_refund(p: &Params) -> Result<(), CallRefused> {
    let f = |name: &str| p.get(name).map_or("", String::as_str);
    if f("out_trade_no").is_empty() && f("transaction_id").is_empty() {
        return Err(CallRefused::new(
            "LACK_PARAMS",
            "缺少参数out_trade_no",
            "out_trade_no or transaction_id is required",
        ));
    }
    if !f("out_trade_no").is_empty() && !valid_out_trade_no(f("out_trade_no")) {
        return Err(CallRefused::format(
            "out_trade_no",
            "6-32 characters of [0-9A-Za-z_-|*]",
        ));
    }
    if !valid_refund_no(f("out_refund_no")) {
        return Err(CallRefused::format(
            "out_refund_no",
            "1-64 characters of [0-9A-Za-z_-|*@]",
        ));
    }
    for name in ["total_fee", "refund_fee"] {
        match f(name).parse::<Fen>() {
            Ok(fee) if fee.0 > 0 => {}
            _ => return Err(CallRefused::format(name, "a positive whole number of fen")),
        }
    }
    if f("refund_fee").parse::<Fen>().ok() > f("total_fee").parse::<Fen>().ok() {
        return Err(CallRefused::new(
            "PARAM_ERROR",
            "退款金额大于支付金额",
            "refund_fee is more than total_fee",
        ));
    }
    if f("refund_desc").chars().count() > MAX_REASON_CHARS {
        return Err(CallRefused::new(
            "PARAM_ERROR",
            "refund_desc参数长度有误",
            format!("refund_desc is at most {MAX_REASON_CHARS} characters"),
        ));
    }
    if !f("notify_url").is_empty() {
        check_notify_url(f("notify_url"))?;
    }
    Ok(())
}

/// A refundquery names one of `refund_id`, `out_refund_no`, `transaction_id`, `out_trade_no`.
fn check_refund_query(p: &Params) -> Result<(), CallRefused> {
    let f = |name: &str| p.get(name).map_or("", String::as_str);
    let named = [
        "refund_id",
        "out_refund_no",
        "transaction_id",
        "out_trade_no",
    ];
    if named.iter().all(|name| f(name).is_empty()) {
        return Err(CallRefused::new(
            "LACK_PARAMS",
            "缺少参数out_refund_no",
            "refund_id, out_refund_no, transaction_id or out_trade_no is required",
        ));
    }
    if !f("offset").is_empty() && f("offset").parse::<usize>().is_err() {
        return Err(CallRefused::format("offset", "a whole number"));
    }
    Ok(())
}

/// The field a refund names its trade by (WeChat prefers `transaction_id`).
fn trade_ref(p: &Params) -> TradeRef<'_> {
    match p.get("transaction_id").filter(|id| !id.is_empty()) {
        Some(id) => TradeRef::TransactionId(id),
        None => TradeRef::OutTradeNo(p.get("out_trade_no").map_or("", String::as_str)),
    }
}

async fn refund<S: Store, T, C: Clock, N: Nonce>(
    env: &Env<S, T, C, N, SimConfig>,
    checked: &Checked,
    bad_signature: bool,
) -> Response {
    let p = &checked.params;
    let f = |name: &str| p.get(name).map(String::as_str).filter(|v| !v.is_empty());
    let fee = |name: &str| {
        f(name)
            .and_then(|v| v.parse::<Fen>().ok())
            .unwrap_or(Fen::ZERO)
    };
    let ask = RefundAsk {
        trade: trade_ref(p),
        out_refund_no: f("out_refund_no").unwrap_or(""),
        total_fee: fee("total_fee"),
        refund_fee: fee("refund_fee"),
        reason: f("refund_desc"),
        notify_url: f("notify_url"),
        api: RefundApi::V2,
    };
    match refunds::ask(&env.store, &env.nonce, env.clock.now_unix(), &ask).await {
        Ok(refund) => {
            let mut fields = vec![("result_code", "SUCCESS".to_owned())];
            fields.extend(refund_fields(&refund));
            fields.extend([
                ("fee_type", "CNY".to_owned()),
                ("cash_fee", refund.total_fee.to_string()),
                ("cash_refund_fee", refund.refund_fee.to_string()),
            ]);
            signed_reply(checked, &env.nonce, fields, bad_signature)
        }
        Err(refusal) => {
            let (err_code, err_code_des) = refusal.v2();
            refused(checked, &env.nonce, err_code, &err_code_des, bad_signature)
        }
    }
}

/// The fields of a refund reply.
fn refund_fields(refund: &SimRefund) -> Vec<(&'static str, String)> {
    vec![
        ("transaction_id", refund.transaction_id.clone()),
        ("out_trade_no", refund.out_trade_no.clone()),
        ("out_refund_no", refund.out_refund_no.clone()),
        ("refund_id", refund.refund_id.clone()),
        ("refund_fee", refund.refund_fee.to_string()),
        ("settlement_refund_fee", refund.refund_fee.to_string()),
        ("total_fee", refund.total_fee.to_string()),
        ("settlement_total_fee", refund.total_fee.to_string()),
    ]
}

/// refundquery: by a refund (`refund_id`, `out_refund_no`: that refund alone, `_0`) or by its
/// trade (`transaction_id`, `out_trade_no`: its refunds, [`REFUNDS_PER_QUERY_PAGE`] from
/// `offset`).
async fn refund_query<S: Store, T, C, N: Nonce>(
    env: &Env<S, T, C, N, SimConfig>,
    checked: &Checked,
    bad_signature: bool,
) -> Response {
    let p = &checked.params;
    let f = |name: &str| p.get(name).map(String::as_str).filter(|v| !v.is_empty());
    let not_found = || {
        refused(
            checked,
            &env.nonce,
            "REFUNDNOTEXIST",
            "退款订单查询失败",
            bad_signature,
        )
    };
    let by_refund = match (f("refund_id"), f("out_refund_no")) {
        (Some(id), _) => match refunds::refund_no_of_id(&env.store, id).await {
            Ok(no) => Some(no),
            Err(_) => return system_error(checked, &env.nonce),
        },
        (None, Some(no)) => Some(Some(no.to_owned())),
        (None, None) => None,
    };
    let (found, total_count) = match by_refund {
        Some(no) => {
            let refund = match no {
                None => None,
                Some(no) => match refunds::load_refund(&env.store, &no).await {
                    Ok(refund) => refund,
                    Err(_) => return system_error(checked, &env.nonce),
                },
            };
            let Some(refund) = refund else {
                return not_found();
            };
            (vec![refund], 1)
        }
        None => {
            let out_trade_no = match (f("transaction_id"), f("out_trade_no")) {
                (Some(id), _) => match load_index(&env.store, &transaction_key(id)).await {
                    Ok(no) => no,
                    Err(_) => return system_error(checked, &env.nonce),
                },
                (None, no) => no.map(str::to_owned),
            };
            let all = match out_trade_no {
                None => Vec::new(),
                Some(no) => match refunds::trade_refunds(&env.store, &no).await {
                    Ok(all) => all,
                    Err(_) => return system_error(checked, &env.nonce),
                },
            };
            let total = all.len();
            let offset = f("offset").and_then(|o| o.parse().ok()).unwrap_or(0);
            let page: Vec<SimRefund> = all
                .into_iter()
                .skip(offset)
                .take(REFUNDS_PER_QUERY_PAGE)
                .collect();
            if page.is_empty() {
                return not_found();
            }
            (page, total)
        }
    };
    let mut indexed = Params::new();
    for (i, refund) in found.iter().enumerate() {
        for (name, value) in [
            ("out_refund_no", refund.out_refund_no.clone()),
            ("refund_id", refund.refund_id.clone()),
            ("refund_channel", "ORIGINAL".to_owned()),
            ("refund_fee", refund.refund_fee.to_string()),
            ("settlement_refund_fee", refund.refund_fee.to_string()),
            ("refund_status", refund.v2_status().to_owned()),
            ("refund_account", "REFUND_SOURCE_UNSETTLED_FUNDS".to_owned()),
            ("refund_recv_accout", "支付用户零钱".to_owned()),
            (
                "refund_success_time",
                refund
                    .success_time
                    .map(refunds::beijing_spaced)
                    .unwrap_or_default(),
            ),
        ] {
            indexed.insert(format!("{name}_{i}"), value);
        }
    }
    let first = &found[0];
    let mut fields: Vec<(&str, String)> = vec![
        ("result_code", "SUCCESS".to_owned()),
        ("transaction_id", first.transaction_id.clone()),
        ("out_trade_no", first.out_trade_no.clone()),
        ("total_fee", first.total_fee.to_string()),
        ("settlement_total_fee", first.total_fee.to_string()),
        ("fee_type", "CNY".to_owned()),
        ("cash_fee", first.total_fee.to_string()),
        ("refund_count", found.len().to_string()),
        ("total_refund_count", total_count.to_string()),
    ];
    fields.extend(
        indexed
            .iter()
            .map(|(name, value)| (name.as_str(), value.clone())),
    );
    signed_reply(checked, &env.nonce, fields, bad_signature)
}
