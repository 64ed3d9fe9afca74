//! `POST /api/orders` and `GET /api/orders/{order_no}` (docs/ARCHITECTURE.md §1.2, §1.5, §6).

use serde::Serialize;
use serde_json::Value;

use super::wechat::{self, CallError, PreparedCall, Wechat, WechatError};
use super::{
    ApiError, Clock, Env, Nonce, Request, Response, ShopConfig, Store, Transport, answer,
    authenticate, json_request, load_product, owned_order, record_learned, save_base,
};
use crate::config::{ApiVersion, quote};
use crate::ledger;
use crate::order::{
    MAX_QUANTITY, NewOrder, NewOrderError, Order, OrderView, Status, Trigger, new_order_no,
    valid_sku,
};
use crate::pay_params::PayParams;
use crate::time::rfc3339;
use crate::v2::api::{PREPAY_TTL_SECS, ReplyError, Retry};

/// Unified order attempts in all: SYSTEMERROR, a 5xx and an unreachable host are retried with
/// identical bytes (same nonce, same out_trade_no, so WeChat answers the same prepay_id).
pub const UNIFIED_ORDER_ATTEMPTS: usize = 3;

/// Of those, how many may end in a timeout. Each costs the transport's connect + first-byte
/// timeouts, so one retry is the bound that keeps the mini program's wait reasonable; after it
/// the order stays CREATED with the same out_trade_no and reconcile asks WeChat what became of
/// it.
pub const UNIFIED_ORDER_TIMEOUT_ATTEMPTS: usize = 2;

/// Time budget of the unified order call of one `POST /api/orders` (seconds, by the [`Clock`]):
/// no new attempt starts once it is spent. With the transport's timeouts (connect 2 s + first
/// byte 4 s per attempt) the request answers within about budget + one attempt ≈ 16 s at worst,
/// under Spin's and the mini program's (`wx.request` default 60 s) limits. Retries are
/// immediate: WeChat asks for a retry with identical parameters, the user is waiting, and the
/// slow path (an order left CREATED) is reconcile's.
pub const UNIFIED_ORDER_BUDGET_SECS: u64 = 10;

/// `spbill_create_ip` when Spin reports no usable client address.
pub const FALLBACK_CLIENT_IP: &str = "127.0.0.1";

/// The 201 answer of `POST /api/orders`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Created {
    pub order: OrderView,
    pub pay_params: PayParams,
}

/// The IP of a client address as Spin reports it (`ip:port`, `[v6]:port`, or a bare IP).
/// Checked by std's parsers and passed on as Spin wrote it (not re-formatted: that would link
/// std's address formatting into the component for one field).
pub fn client_ip(addr: Option<&str>) -> String {
    use std::net::{IpAddr, SocketAddr};
    let Some(addr) = addr.map(str::trim) else {
        return FALLBACK_CLIENT_IP.to_owned();
    };
    let ip = match addr.parse::<SocketAddr>() {
        Ok(SocketAddr::V4(_)) => addr.rsplit_once(':').map_or(addr, |(ip, _)| ip),
        Ok(SocketAddr::V6(_)) => addr
            .strip_prefix('[')
            .and_then(|rest| rest.split_once(']'))
            .map_or(addr, |(ip, _)| ip),
        Err(_) => addr,
    };
    match ip.parse::<IpAddr>() {
        Ok(_) => ip.to_owned(),
        Err(_) => FALLBACK_CLIENT_IP.to_owned(),
    }
}

struct OrderInput {
    sku: String,
    quantity: u32,
    attach: Option<String>,
}

fn invalid_quantity(what: &str) -> ApiError {
    ApiError::new(
        400,
        "invalid_quantity",
        format!("quantity must be a JSON integer in 1..={MAX_QUANTITY}; {what}"),
    )
}

/// Reads `{"sku", "quantity", "attach"?}`; any other field (an amount, say) is ignored.
fn parse_input(request: &Request) -> Result<OrderInput, ApiError> {
    let object = json_request(request)?;
    let sku = match object.get("sku") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(ApiError::new(400, "invalid_sku", "sku must be a string")),
        None => return Err(ApiError::new(400, "invalid_sku", "sku is required")),
    };
    let quantity = match object.get("quantity") {
        None | Some(Value::Null) => return Err(invalid_quantity("quantity is missing")),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(q) if (1..=u64::from(MAX_QUANTITY)).contains(&q) => q as u32,
            Some(q) => return Err(invalid_quantity(&format!("got {q}"))),
            None if n.is_i64() => return Err(invalid_quantity(&format!("got {n}"))),
            None => return Err(invalid_quantity("got a fractional number")),
        },
        Some(Value::String(_)) => return Err(invalid_quantity("got a string")),
        Some(_) => return Err(invalid_quantity("got a non-number")),
    };
    let attach = match object.get("attach") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(ApiError::new(
                400,
                "invalid_attach",
                "attach must be a string",
            ));
        }
    };
    Ok(OrderInput {
        sku,
        quantity,
        attach,
    })
}

fn unknown_sku(sku: &str) -> ApiError {
    ApiError::new(
        404,
        "unknown_sku",
        format!("no product {} is for sale", quote(sku)),
    )
}

/// How the unified order ended.
enum UnifiedOutcome {
    Prepay(String),
    /// A refusal: the order becomes FAILED with `reason`.
    Refused {
        reason: String,
        message: String,
    },
    /// A refusal that must not fail the order (ORDERPAID, OUT_TRADE_NO_USED): the order stays
    /// CREATED and reconcile asks WeChat for the truth.
    RefusedQueryFirst {
        message: String,
    },
    Untrusted(String),
    Busy,
    Unreachable(CallError),
    Denied,
    /// Our side failed (the store, or no key to sign with).
    Failed(ApiError),
}

async fn unified_order<S: Store, T: Transport, C: Clock, N: Nonce>(
    wechat: &Wechat<'_, S, T, C, N>,
    clock: &C,
    prepared: &PreparedCall,
) -> UnifiedOutcome {
    let mut last = UnifiedOutcome::Busy;
    let mut timeouts = 0;
    let started = clock.now_unix();
    for attempt in 0..UNIFIED_ORDER_ATTEMPTS {
        if attempt > 0 && clock.now_unix().saturating_sub(started) >= UNIFIED_ORDER_BUDGET_SECS {
            return last;
        }
        let error = match wechat.send_order(prepared).await {
            Ok(prepay_id) => return UnifiedOutcome::Prepay(prepay_id),
            Err(e) => e,
        };
        match error {
            WechatError::Call(CallError::Denied) => return UnifiedOutcome::Denied,
            WechatError::Call(CallError::HttpStatus(s)) if s >= 500 => {
                last = UnifiedOutcome::Busy;
            }
            WechatError::Call(e @ CallError::HttpStatus(_)) => {
                return UnifiedOutcome::Untrusted(e.to_string());
            }
            WechatError::Call(e @ CallError::Timeout) => {
                timeouts += 1;
                if timeouts >= UNIFIED_ORDER_TIMEOUT_ATTEMPTS {
                    return UnifiedOutcome::Unreachable(e);
                }
                last = UnifiedOutcome::Unreachable(e);
            }
            WechatError::Call(e) => last = UnifiedOutcome::Unreachable(e),
            WechatError::Reply(e) if e.is_retryable() => last = UnifiedOutcome::Busy,
            WechatError::Reply(ReplyError::Refused {
                err_code,
                err_code_des,
            }) => {
                let message = if err_code_des.is_empty() {
                    format!("WeChat Pay refused the order: {err_code}")
                } else {
                    format!("WeChat Pay refused the order: {err_code} ({err_code_des})")
                };
                return if err_code.retry() == Retry::QueryFirst {
                    UnifiedOutcome::RefusedQueryFirst { message }
                } else {
                    UnifiedOutcome::Refused {
                        reason: err_code.as_str().to_owned(),
                        message,
                    }
                };
            }
            WechatError::Reply(ReplyError::CallFailed { return_msg }) => {
                return UnifiedOutcome::Refused {
                    reason: format!("return_code FAIL: {return_msg}"),
                    message: format!("WeChat Pay refused the call: {return_msg}"),
                };
            }
            WechatError::Store(e) => return UnifiedOutcome::Failed(e),
            WechatError::Unsigned(why) => {
                return UnifiedOutcome::Failed(ApiError::new(500, "internal", why));
            }
            e @ (WechatError::Reply(_)
            | WechatError::Request(_)
            | WechatError::WrongOrder
            | WechatError::Untrusted(_)) => {
                return UnifiedOutcome::Untrusted(match e {
                    WechatError::Untrusted(why) => why,
                    other => other.to_string(),
                });
            }
        }
    }
    last
}

/// `POST /api/orders`: prices the order from the catalog, stores it CREATED, asks WeChat for a
/// prepay id, stores it AWAITING_PAYMENT and answers 201 with the order and signed pay params.
pub async fn create<S, T, C, N>(env: &Env<S, T, C, N, ShopConfig>, request: &Request) -> Response
where
    S: Store,
    T: Transport,
    C: Clock,
    N: Nonce,
{
    answer(create_inner(env, request).await)
}

async fn create_inner<S, T, C, N>(
    env: &Env<S, T, C, N, ShopConfig>,
    request: &Request,
) -> Result<Response, ApiError>
where
    S: Store,
    T: Transport,
    C: Clock,
    N: Nonce,
{
    let now = env.clock.now_unix();
    let session = authenticate(request, &env.config.session, now)?;
    let input = parse_input(request)?;
    if !valid_sku(&input.sku) {
        return Err(unknown_sku(&input.sku));
    }
    let merchant = &env.config.merchant;
    let product = match load_product(&env.store, &input.sku).await? {
        Some(p) => Some(p),
        None => super::demo::missing_product(&env.store, merchant.mode, &input.sku).await?,
    };
    let product = match product {
        Some(p) if p.active => p,
        _ => return Err(unknown_sku(&input.sku)),
    };
    let random = env.nonce.random16();
    let mut order_random = [0u8; crate::order::ORDER_NO_RANDOM_BYTES];
    order_random.copy_from_slice(&random[..crate::order::ORDER_NO_RANDOM_BYTES]);
    let mut order = Order::new(NewOrder {
        order_no: new_order_no(now, order_random),
        openid: session.openid.clone(),
        product: &product,
        quantity: input.quantity,
        attach: input.attach,
        mode: merchant.mode,
        created_at: rfc3339(now),
    })
    .map_err(|e| match e {
        NewOrderError::InvalidAttach => ApiError::new(400, "invalid_attach", e.to_string()),
        NewOrderError::InvalidQuantity => invalid_quantity("it is out of range"),
        NewOrderError::AmountOverflow => ApiError::new(400, "invalid_quantity", e.to_string()),
        NewOrderError::InactiveProduct => unknown_sku(&input.sku),
        other => ApiError::new(500, "internal", other.to_string()),
    })?;
    let wechat = Wechat::new(env, merchant);
    if merchant.api_version == ApiVersion::V2 {
        // WeChat signs this order's notification with the type its unified order used.
        order.sign_type = Some(merchant.sign_type);
    }

    // Build (and sign) the request first, so that nothing is stored for a request that
    // cannot be sent.
    let expires_at = now.saturating_add(PREPAY_TTL_SECS);
    let ip = client_ip(request.client_addr.as_deref());
    let prepared = wechat
        .prepare_order(&order, &ip, expires_at)
        .map_err(|e| ApiError::new(500, "internal", format!("cannot build the order: {e}")))?;

    // Stored CREATED before WeChat hears of it: a crash after the call leaves a record that
    // reconcile can settle.
    save_base(&env.store, &order, None).await?;

    match unified_order(&wechat, &env.clock, &prepared).await {
        UnifiedOutcome::Prepay(prepay_id) => {
            let trigger = Trigger::PrepayObtained {
                prepay_id: prepay_id.clone(),
                expires_at,
            };
            let _ = order
                .apply(trigger, &rfc3339(now))
                .map_err(|e| ApiError::new(502, "wechat_reply_untrusted", e.to_string()))?;
            let params = wechat.pay_params(&prepay_id, now)?;
            if merchant.api_version == ApiVersion::V3 {
                // Signed once (an RSA private-key operation); the re-sign route hands it back.
                order.pay_params = Some(params.clone());
            }
            save_base(&env.store, &order, Some(Status::Created)).await?;
            Ok(Response::json(
                201,
                &Created {
                    order: order.view(),
                    pay_params: params,
                },
            ))
        }
        UnifiedOutcome::Refused { reason, message } => {
            let trigger = Trigger::RefusedByWechat { err_code: reason };
            if order.apply(trigger, &rfc3339(now)).is_ok() {
                // The base record is this request's alone. Best effort: if this write fails
                // the order stays CREATED and reconcile closes it (WeChat never created it).
                let _ = save_base(&env.store, &order, Some(Status::Created)).await;
            }
            Err(ApiError::new(502, "wechat_refused", message))
        }
        UnifiedOutcome::RefusedQueryFirst { message } => {
            Err(ApiError::new(502, "wechat_refused", message))
        }
        UnifiedOutcome::Untrusted(why) => Err(ApiError::new(
            502,
            "wechat_reply_untrusted",
            format!("WeChat Pay's reply could not be trusted: {why}"),
        )),
        UnifiedOutcome::Busy => Err(ApiError::new(
            503,
            "wechat_busy",
            format!(
                "WeChat Pay is busy (SYSTEMERROR after {UNIFIED_ORDER_ATTEMPTS} attempts); \
                 try again"
            ),
        )),
        UnifiedOutcome::Unreachable(e @ CallError::Timeout) => Err(ApiError::new(
            504,
            "wechat_unreachable",
            format!("{e} ({UNIFIED_ORDER_TIMEOUT_ATTEMPTS} attempts)"),
        )),
        UnifiedOutcome::Unreachable(e) => Err(ApiError::new(
            504,
            "wechat_unreachable",
            format!("{e} after {UNIFIED_ORDER_ATTEMPTS} attempts"),
        )),
        UnifiedOutcome::Denied => Err(ApiError::new(
            500,
            "outbound_denied",
            CallError::Denied.to_string(),
        )),
        UnifiedOutcome::Failed(e) => Err(e),
    }
}

/// `GET /api/orders/{order_no}`: the caller's order. While it awaits payment, WeChat is asked
/// (at most every 5 s per order) and the answer applied, so a lost notification does not leave
/// the mini program waiting. If WeChat cannot be asked, the stored order is the answer.
pub async fn get<S, T, C, N>(
    env: &Env<S, T, C, N, ShopConfig>,
    request: &Request,
    order_no: &str,
) -> Response
where
    S: Store,
    T: Transport,
    C: Clock,
    N: Nonce,
{
    answer(get_inner(env, request, order_no).await)
}

async fn get_inner<S, T, C, N>(
    env: &Env<S, T, C, N, ShopConfig>,
    request: &Request,
    order_no: &str,
) -> Result<Response, ApiError>
where
    S: Store,
    T: Transport,
    C: Clock,
    N: Nonce,
{
    let now = env.clock.now_unix();
    let session = authenticate(request, &env.config.session, now)?;
    let mut order = owned_order(&env.store, order_no, &session, env.config.merchant.mode).await?;
    if order.status == Status::AwaitingPayment {
        // The throttle is a hint in its own key: recording a check never touches a fact.
        let checked = ledger::checked_key(order_no);
        order.last_checked_at = env
            .store
            .get(&checked)
            .await
            .ok()
            .flatten()
            .and_then(|b| String::from_utf8(b).ok()?.parse().ok());
    }
    if order.query_due(now) {
        let merchant = &env.config.merchant;
        if let Ok(reply) = Wechat::new(env, merchant).query(order_no).await {
            let loaded = order.clone();
            wechat::apply_query(&mut order, &reply, now);
            // A failed write still answers what WeChat said; the next GET asks again.
            let _ = record_learned(&env.store, &loaded, &order).await;
            let _ = env
                .store
                .set(&ledger::checked_key(order_no), now.to_string().as_bytes())
                .await;
        }
    }
    let refunds = super::refunds::refunds_for_view(&env.store, &order).await?;
    Ok(Response::json(
        200,
        &order.view().with_refunds(&order, &refunds),
    ))
}
