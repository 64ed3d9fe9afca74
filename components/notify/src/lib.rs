//! `notify` component: WeChat Pay's notifications, APIv2 XML or APIv3 JSON with `Wechatpay-*`
//! headers: `POST /api/wxpay/notify` (payments) → [`wxpay::flows::notify::notify`], and
//! `POST /api/wxpay/refund-notify` (refunds) → [`wxpay::flows::refunds::notify`].
//!
//! Verifies the notification (APIv2 payments: the API key's signature; APIv2 refunds: `req_info`
//! decrypting with the API key; APIv3: the WeChat Pay public key or a stored platform
//! certificate, then AES-256-GCM with the APIv3 key) and records what it says in KV; holds no
//! merchant private key and reaches nothing (no `allowed_outbound_hosts`; its
//! transport is `()`). Logs the outcome (order number, transaction id, reason) of every
//! notification.

use wxpay::config::{MerchantConfig, Signing};
use wxpay::flows::{Env, Refusal, notify, refunds};
use wxpay::spin::{self, Answer, ErrorCode, HttpRequest, HttpResponse, SpinStore, SystemClock};

wxpay::export_http_handler!(handle);

/// The refund-notify route as spin.toml declares it (`spin-matched-route`).
const REFUND_NOTIFY_ROUTE: &str = "/api/wxpay/refund-notify";

/// Refusals (body too large, configuration) are answered with WeChat's failure answer by the
/// core ([`notify::refuse`]), so WeChat delivers the notification again.
async fn handle(req: HttpRequest) -> Result<HttpResponse, ErrorCode> {
    spin::serve_notify(req, async |incoming, vars| -> Answer {
        let dialect = notify::Dialect::of(incoming.request.wechatpay.as_ref());
        if incoming.method != "POST" {
            return notify::refuse(&incoming.wrong_method(), dialect).into();
        }
        let config = match MerchantConfig::load_for(vars, Signing::VerifiesOnly) {
            Ok(config) => config,
            Err(problems) => return notify::refuse(&Refusal::Config(problems), dialect).into(),
        };
        let env = Env::new(SpinStore::new(), (), SystemClock, (), config);
        if incoming.route() == REFUND_NOTIFY_ROUTE {
            return refunds::notify(&env, &incoming.request).await.into();
        }
        notify::notify(&env, &incoming.request).await.into()
    })
    .await
}
