//! `login` component: `POST /api/login` → [`wxpay::flows::login::login`].
//!
//! Reaches only WeChat's login API (`wx_api`); no merchant key. In simulator mode the simulator's
//! login API runs in-process and remembers used codes in KV, the only use of the store here. The request URL it sends carries the app secret, which is why the transport
//! never reports URLs.

use wxpay::flows::{Env, LoginFlowConfig, Response, login};
use wxpay::spin::{self, ErrorCode, HttpRequest, HttpResponse, SpinStore, SystemClock};

wxpay::export_http_handler!(handle);

async fn handle(req: HttpRequest) -> Result<HttpResponse, ErrorCode> {
    spin::serve("login", req, async |incoming, vars| {
        if incoming.method != "POST" {
            return incoming.method_not_allowed();
        }
        let config = match LoginFlowConfig::load(vars) {
            Ok(config) => config,
            Err(problems) => return Response::config_error(&problems),
        };
        // No store and no nonce: the login flow uses neither (the simulator's link has its own).
        let store = SpinStore::new();
        // Only the simulator's login API: WeChat Pay's (and its RSA) stay out of this component.
        let transport = spin::wechat_transport_to::<spin::LoginApi>(config.login.mode, &store);
        let env = Env::new((), transport, SystemClock, (), config);
        login::login(&env, &incoming.request).await
    })
    .await
}
