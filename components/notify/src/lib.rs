//! `notify` component: `POST /api/wxpay/notify` (XML from WeChat Pay) →
//! [`wxpay::flows::notify::notify`].
//!
//! Verifies the notification with the merchant key and moves the order to PAID in KV; reaches
//! nothing (no `allowed_outbound_hosts`; its transport is `()`). Logs the outcome (order
//! number, transaction id, reason) of every notification.

use wxpay::config::MerchantConfig;
use wxpay::flows::{Env, Refusal, notify};
use wxpay::spin::{self, Answer, ErrorCode, HttpRequest, HttpResponse, SpinStore, SystemClock};

wxpay::export_http_handler!(handle);

/// Refusals (body too large, configuration) are answered with WeChat's FAIL XML by the core
/// ([`notify::refuse`]), so WeChat delivers the notification again.
async fn handle(req: HttpRequest) -> Result<HttpResponse, ErrorCode> {
    spin::serve_notify(req, async |incoming, vars| -> Answer {
        if incoming.method != "POST" {
            return notify::refuse(&incoming.wrong_method()).into();
        }
        let config = match MerchantConfig::load(vars) {
            Ok(config) => config,
            Err(problems) => return notify::refuse(&Refusal::Config(problems)).into(),
        };
        let env = Env::new(SpinStore::new(), (), SystemClock, (), config);
        notify::notify(&env, &incoming.request.body).await.into()
    })
    .await
}
