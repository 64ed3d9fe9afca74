//! `login` component: `POST /api/login` → [`wxpay::flows::login::login`].
//!
//! Reaches only WeChat's login API (`wx_api`, or the simulator at `http://self`); no KV store,
//! no merchant key. The request URL it sends carries the app secret, which is why the transport
//! never reports URLs.

use spin_sdk::http::{IntoResponse, Method, Request};
use spin_sdk::http_service;
use wxpay::flows::{Env, LoginFlowConfig, Response, login};
use wxpay::spin::{self, SpinTransport, SystemClock};

#[http_service]
async fn handle(req: Request) -> impl IntoResponse {
    spin::serve("login", req, async |incoming, vars| {
        if incoming.method != Method::POST {
            return incoming.method_not_allowed();
        }
        let config = match LoginFlowConfig::load(vars) {
            Ok(config) => config,
            Err(problems) => return Response::config_error(&problems),
        };
        // No store and no nonce: the login flow uses neither.
        let env = Env::new((), SpinTransport, SystemClock, (), config);
        login::login(&env, &incoming.request).await
    })
    .await
}
