//! `admin` component: `/api/admin/...` → [`wxpay::flows::admin::handle`] (catalog, order
//! records, refunds, reconcile; `Authorization: Bearer <admin_token>`), and `GET /api/health` →
//! [`wxpay::flows::health::health`].
//!
//! Health lives here because it must read every variable to report every problem, and admin
//! already holds the merchant credentials; spin.toml therefore declares all variables for this
//! component. Reaches WeChat Pay (refunds — APIv2's over the merchant's client certificate,
//! which Spin presents from the runtime config's `[[client_tls]]`; reconcile queries and closes
//! orders and queries refunds; in simulator mode the simulator in-process).

use wxpay::flows::{AdminFlowConfig, Env, Response, admin, health};
use wxpay::sim::Sleep as _;
use wxpay::spin::{
    self, ErrorCode, HttpRequest, HttpResponse, OsRandom, SpinSleep, SpinStore, SystemClock,
};

/// The health route as spin.toml declares it (`spin-matched-route`).
const HEALTH_ROUTE: &str = "/api/health";

wxpay::export_http_handler!(handle);

async fn handle(req: HttpRequest) -> Result<HttpResponse, ErrorCode> {
    spin::serve("admin", req, async |incoming, vars| {
        if incoming.route() == HEALTH_ROUTE {
            if incoming.method != "GET" {
                return incoming.method_not_allowed();
            }
            let deadline = SpinSleep.sleep(health::STORE_PROBE_DEADLINE);
            return health::health(vars, &SpinStore::new(), deadline).await;
        }
        let config = match AdminFlowConfig::load(vars) {
            Ok(config) => config,
            Err(problems) => return Response::config_error(&problems),
        };
        let store = SpinStore::new();
        let transport = spin::wechat_transport(config.merchant.mode, &store);
        let env = Env::new(&store, transport, SystemClock, OsRandom, config);
        // The flow routes on the path below /api/admin (`spin-path-info`), with the query.
        let sub_path = match incoming.query() {
            "" => incoming.path_info().to_owned(),
            query => format!("{}?{query}", incoming.path_info()),
        };
        admin::handle(&env, incoming.method.as_str(), &sub_path, &incoming.request).await
    })
    .await
}
