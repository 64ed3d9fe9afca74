//! `simulator` component: `/_sim/...` → [`wxpay::sim::handle`], the embedded WeChat Pay
//! simulator (jscode2session, APIv2's unifiedorder / orderquery / closeorder / refund /
//! refundquery, APIv3's JSAPI order / query / close / refund / refund query, the user paying
//! through `POST /_sim/pay`, WeChat finishing a refund through `POST /_sim/refund`, fault
//! injection through `/_sim/faults`).
//!
//! Reads `wxpay_mode` and `wxpay_sign_type`: in live mode (or with an invalid mode) every route
//! answers 404. Keeps its state in KV under `sim:`; reaches nothing: `POST /_sim/pay` and
//! `POST /_sim/refund` deliver their notifications to the notify and refund-notify flows
//! in-process ([`wxpay::sim::link::NotifyLink`]), on the same store.

use wxpay::flows::{Env, Response};
use wxpay::sim::link::NotifyLink;
use wxpay::sim::{self, SimConfig, SimRequest};
use wxpay::spin::{
    self, ErrorCode, HttpRequest, HttpResponse, OsRandom, SpinSleep, SpinStore, SystemClock,
};

/// Where the wildcard route is mounted; the core routes on the path below it.
const MOUNT: &str = "/_sim";

wxpay::export_http_handler!(handle);

async fn handle(req: HttpRequest) -> Result<HttpResponse, ErrorCode> {
    spin::serve("simulator", req, async |incoming, vars| {
        let config = match SimConfig::load(vars) {
            Ok(config) => config,
            Err(problems) => return Response::config_error(&problems),
        };
        let store = SpinStore::new();
        let notify = NotifyLink::new(&store, SystemClock, config.merchant.clone());
        let env = Env::new(&store, notify, SystemClock, OsRandom, config);
        let path = format!("{MOUNT}{}", incoming.path_info());
        let request = SimRequest {
            method: incoming.method.as_str(),
            path: &path,
            query: incoming.query(),
            authorization: incoming.request.authorization.as_deref(),
            body: &incoming.request.body,
        };
        sim::handle(&env, &SpinSleep, request).await
    })
    .await
}
