//! `POST /api/orders/{order_no}/pay-params` (docs/ARCHITECTURE.md §1.3): fresh `wx.requestPayment`
//! parameters for the same `prepay_id`. No outbound call, no write.

use super::{
    ApiError, Clock, Env, Nonce, Request, Response, ShopConfig, Store, answer, authenticate,
    fresh_nonce, owned_order,
};
use crate::order::Status;
use crate::pay_params;

/// Answers 200 with fresh pay params (new timeStamp and nonceStr, same package); 404 for an
/// unknown order or someone else's, 409 `not_awaiting_payment`, 410 `prepay_expired`.
/// The transport is never used (the pay-sign component may pass `()`).
pub async fn pay_params<S, T, C, N>(
    env: &Env<S, T, C, N, ShopConfig>,
    request: &Request,
    order_no: &str,
) -> Response
where
    S: Store,
    C: Clock,
    N: Nonce,
{
    answer(inner(env, request, order_no).await)
}

async fn inner<S, T, C, N>(
    env: &Env<S, T, C, N, ShopConfig>,
    request: &Request,
    order_no: &str,
) -> Result<Response, ApiError>
where
    S: Store,
    C: Clock,
    N: Nonce,
{
    let now = env.clock.now_unix();
    let session = authenticate(request, &env.config.session, now)?;
    let order = owned_order(&env.store, order_no, &session, env.config.merchant.mode).await?;
    if order.status != Status::AwaitingPayment {
        return Err(ApiError::new(
            409,
            "not_awaiting_payment",
            format!("order is {}, not AWAITING_PAYMENT", order.status),
        ));
    }
    let Some(prepay_id) = order.payable_prepay_id(now) else {
        return Err(ApiError::new(
            410,
            "prepay_expired",
            "the payment window of this order has expired; create a new order",
        ));
    };
    // An APIv3 order's params were signed once with its prepay id: handed back as they are
    // (no RSA private-key operation per request).
    if let Some(stored) = &order.pay_params {
        return Ok(Response::json(200, stored));
    }
    let merchant = &env.config.merchant;
    let key = merchant.v2_key().map_err(|e| {
        ApiError::new(
            503,
            "config_error",
            format!("this APIv2 order cannot be re-signed: {e}"),
        )
    })?;
    let params = pay_params::pay_params(
        &merchant.appid,
        prepay_id,
        key,
        order.sign_type.unwrap_or(merchant.sign_type),
        now,
        &fresh_nonce(&env.nonce),
    );
    Ok(Response::json(200, &params))
}
