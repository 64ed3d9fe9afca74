//! `notify` component: `POST /api/wxpay/notify` (XML from WeChat Pay) →
//! [`wxpay::flows::notify::notify`].
//!
//! Verifies the notification with the merchant key and moves the order to PAID in KV; reaches
//! nothing (no `allowed_outbound_hosts`; its transport is `()`). Logs the outcome (order
//! number, transaction id, reason) of every notification.

use spin_sdk::http::{IntoResponse, Method, Request};
use spin_sdk::http_service;
use wxpay::config::MerchantConfig;
use wxpay::flows::{Env, Response, notify};
use wxpay::spin::{self, Answer, SpinStore, SystemClock};

#[http_service]
async fn handle(req: Request) -> impl IntoResponse {
    spin::serve("notify", req, async |incoming, vars| -> Answer {
        if incoming.method != Method::POST {
            return incoming.method_not_allowed().into();
        }
        let config = match MerchantConfig::load(vars) {
            Ok(config) => config,
            Err(problems) => return Response::config_error(&problems).into(),
        };
        let env = Env::new(SpinStore::new(), (), SystemClock, (), config);
        notify::notify(&env, &incoming.request.body).await.into()
    })
    .await
}
