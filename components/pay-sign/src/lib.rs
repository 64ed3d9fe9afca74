//! `pay-sign` component: `POST /api/orders/:order_no/pay-params` →
//! [`wxpay::flows::pay_sign::pay_params`].
//!
//! Re-signs `wx.requestPayment` parameters for a stored APIv2 `prepay_id`, or hands back an
//! APIv3 order's stored ones (no RSA private-key operation per request, and no merchant private
//! key declared): reads orders in KV and may reach nothing (no `allowed_outbound_hosts`; its
//! transport is `()`).

use wxpay::config::Signing;
use wxpay::flows::{Env, Response, ShopConfig, pay_sign};
use wxpay::spin::{self, ErrorCode, HttpRequest, HttpResponse, OsRandom, SpinStore, SystemClock};

wxpay::export_http_handler!(handle);

async fn handle(req: HttpRequest) -> Result<HttpResponse, ErrorCode> {
    spin::serve("pay-sign", req, async |incoming, vars| {
        if incoming.method != "POST" {
            return incoming.method_not_allowed();
        }
        let Some(order_no) = incoming.path_param("order_no") else {
            return Response::error(404, "not_found", "no order number in the route");
        };
        // The stored APIv3 params need no APIv3 key.
        let config = match ShopConfig::load_for(vars, Signing::NoV3Keys) {
            Ok(config) => config,
            Err(problems) => return Response::config_error(&problems),
        };
        let env = Env::new(SpinStore::new(), (), SystemClock, OsRandom, config);
        pay_sign::pay_params(&env, &incoming.request, order_no).await
    })
    .await
}
