//! `pay-sign` component: `POST /api/orders/:order_no/pay-params` →
//! [`wxpay::flows::pay_sign::pay_params`].
//!
//! Re-signs `wx.requestPayment` parameters for a stored `prepay_id`: reads orders in KV and may
//! reach nothing (no `allowed_outbound_hosts`; its transport is `()`).

use spin_sdk::http::{IntoResponse, Method, Request};
use spin_sdk::http_service;
use wxpay::flows::{Env, Response, ShopConfig, pay_sign};
use wxpay::spin::{self, OsRandom, SpinStore, SystemClock};

#[http_service]
async fn handle(req: Request) -> impl IntoResponse {
    spin::serve("pay-sign", req, async |incoming, vars| {
        if incoming.method != Method::POST {
            return incoming.method_not_allowed();
        }
        let Some(order_no) = incoming.path_param("order_no") else {
            return Response::error(404, "not_found", "no order number in the route");
        };
        let config = match ShopConfig::load(vars) {
            Ok(config) => config,
            Err(problems) => return Response::config_error(&problems),
        };
        let env = Env::new(SpinStore::new(), (), SystemClock, OsRandom, config);
        pay_sign::pay_params(&env, &incoming.request, order_no).await
    })
    .await
}
