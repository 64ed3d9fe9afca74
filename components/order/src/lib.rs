//! `order` component: `POST /api/orders` → [`wxpay::flows::orders::create`] and
//! `GET /api/orders/:order_no` → [`wxpay::flows::orders::get`].
//!
//! Reaches WeChat Pay (`wxpay_mch_api`; in simulator mode the simulator in-process) for unified
//! order and order query; reads the catalog and reads/writes orders in KV.

use wxpay::flows::{Env, Response, ShopConfig, orders};
use wxpay::spin::{self, ErrorCode, HttpRequest, HttpResponse, OsRandom, SpinStore, SystemClock};

wxpay::export_http_handler!(handle);

async fn handle(req: HttpRequest) -> Result<HttpResponse, ErrorCode> {
    spin::serve("order", req, async |incoming, vars| {
        // `/api/orders/:order_no` carries the parameter, `/api/orders` does not.
        let order_no = incoming.path_param("order_no");
        match (incoming.method.as_str(), order_no) {
            ("POST", None) | ("GET", Some(_)) => {}
            _ => return incoming.method_not_allowed(),
        }
        let config = match ShopConfig::load(vars) {
            Ok(config) => config,
            Err(problems) => return Response::config_error(&problems),
        };
        let store = SpinStore::new();
        let transport =
            spin::wechat_transport_to::<spin::PaymentApis>(config.merchant.mode, &store);
        let env = Env::new(&store, transport, SystemClock, OsRandom, config);
        match order_no {
            None => orders::create(&env, &incoming.request).await,
            Some(order_no) => orders::get(&env, &incoming.request, order_no).await,
        }
    })
    .await
}
