//! `login` component: `POST /api/login` → [`wxpay::flows::login::login`].
//!
//! Reaches only WeChat's login API (`wx_api`, or the simulator at `http://self`); no KV store,
//! no merchant key. The request URL it sends carries the app secret, which is why the transport
//! never reports URLs.

use wxpay::flows::{Env, LoginFlowConfig, Response, login};
use wxpay::spin::{self, ErrorCode, HttpRequest, HttpResponse, SpinTransport, SystemClock};

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
        // No store and no nonce: the login flow uses neither.
        let env = Env::new((), SpinTransport, SystemClock, (), config);
        login::login(&env, &incoming.request).await
    })
    .await
}
