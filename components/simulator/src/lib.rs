//! `simulator` component: `/_sim/...` → [`wxpay::sim::handle`], the embedded WeChat Pay
//! simulator (jscode2session, unifiedorder / orderquery / closeorder, the user paying through
//! `POST /_sim/pay`, fault injection through `/_sim/faults`).
//!
//! Reads only `wxpay_mode`: in live mode (or with an invalid mode) every route answers 404.
//! Keeps its state in KV under `sim:`; reaches only this app (`http://self`), to deliver
//! payment notifications to `/api/wxpay/notify`.

use wxpay::flows::Env;
use wxpay::sim::{self, SimConfig, SimRequest};
use wxpay::spin::{
    self, ErrorCode, HttpRequest, HttpResponse, OsRandom, SpinSleep, SpinStore, SpinTransport,
    SystemClock,
};

/// Where the wildcard route is mounted; the core routes on the path below it.
const MOUNT: &str = "/_sim";

wxpay::export_http_handler!(handle);

async fn handle(req: HttpRequest) -> Result<HttpResponse, ErrorCode> {
    spin::serve("simulator", req, async |incoming, vars| {
        let config = SimConfig::load(vars);
        let env = Env::new(
            SpinStore::new(),
            SpinTransport,
            SystemClock,
            OsRandom,
            config,
        );
        let path = format!("{MOUNT}{}", incoming.path_info());
        let request = SimRequest {
            method: incoming.method.as_str(),
            path: &path,
            query: incoming.query(),
            body: &incoming.request.body,
        };
        sim::handle(&env, &SpinSleep, request).await
    })
    .await
}
