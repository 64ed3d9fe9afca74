//! `POST /api/login` (docs/ARCHITECTURE.md §1.1; PROTOCOL.md "Mini program login"): exchanges a
//! `wx.login()` code for the user's openid and answers a session token.
//!
//! The request URL carries the app secret: it is never logged or put in an answer, and neither
//! is the `session_key` WeChat returns (it is dropped on parse).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    ApiError, Clock, Env, LoginFlowConfig, Request, Response, Transport, TransportError, answer,
    json_request,
};
use crate::session::{self, SessionError};

/// Longest code accepted (WeChat's are 32 characters today).
pub const MAX_CODE_LEN: usize = 128;

pub const JSCODE2SESSION_PATH: &str = "/sns/jscode2session";

/// The 200 answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginAnswer {
    pub token: String,
    /// Seconds.
    pub expires_in: u64,
}

/// A `wx.login()` code: 1..=128 characters of `[A-Za-z0-9_-]` (which also makes it safe to put
/// in a query string unencoded).
pub fn valid_code(code: &str) -> bool {
    (1..=MAX_CODE_LEN).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

/// jscode2session's JSON. `session_key` is deliberately not a field: it is never kept.
#[derive(Deserialize)]
struct Code2Session {
    #[serde(default)]
    openid: Option<String>,
    #[serde(default)]
    errcode: Option<i64>,
}

fn invalid_code(message: &str) -> ApiError {
    ApiError::new(401, "invalid_code", message)
}

/// Exchanges the code and answers `{"token", "expires_in"}`. The store is never used (the
/// login component may pass `()`), nor the nonce.
pub async fn login<S, T, C, N>(
    env: &Env<S, T, C, N, LoginFlowConfig>,
    request: &Request,
) -> Response
where
    T: Transport,
    C: Clock,
{
    answer(inner(env, request).await)
}

async fn inner<S, T, C, N>(
    env: &Env<S, T, C, N, LoginFlowConfig>,
    request: &Request,
) -> Result<Response, ApiError>
where
    T: Transport,
    C: Clock,
{
    let object = json_request(request)?;
    let code = match object.get("code") {
        Some(Value::String(c)) if valid_code(c) => c.as_str(),
        Some(Value::String(_)) => {
            return Err(ApiError::new(
                400,
                "invalid_code",
                format!("code must be 1..={MAX_CODE_LEN} characters of A-Z, a-z, 0-9, '_' or '-'"),
            ));
        }
        Some(_) => return Err(ApiError::new(400, "invalid_code", "code must be a string")),
        None => {
            return Err(ApiError::new(
                400,
                "invalid_code",
                "code (from wx.login()) is required",
            ));
        }
    };
    let config = &env.config.login;
    // appid and app_secret are validated as letters and digits by config; code above.
    let url = format!(
        "{}?appid={}&secret={}&js_code={code}&grant_type=authorization_code",
        config.url(JSCODE2SESSION_PATH),
        config.appid,
        config.app_secret.expose(),
    );
    let reply = env.transport.get(&url).await.map_err(|e| match e {
        TransportError::Timeout => ApiError::new(
            504,
            "wechat_unreachable",
            "WeChat did not answer the login exchange in time",
        ),
        TransportError::Denied => ApiError::new(
            500,
            "outbound_denied",
            "the host denied the outbound request to WeChat (check allowed_outbound_hosts)",
        ),
        TransportError::Unreachable(_) | TransportError::Other(_) => ApiError::new(
            504,
            "wechat_unreachable",
            "WeChat could not be reached for the login exchange",
        ),
    })?;
    if !(200..300).contains(&reply.status) {
        return Err(ApiError::new(
            502,
            "wechat_error",
            format!(
                "WeChat answered the login exchange with HTTP {}",
                reply.status
            ),
        ));
    }
    let parsed: Code2Session = serde_json::from_slice(&reply.body).map_err(|_| {
        ApiError::new(
            502,
            "wechat_error",
            "WeChat's login answer is not the expected JSON",
        )
    })?;
    match parsed.errcode {
        None | Some(0) => {}
        Some(40029 | 40163) => {
            return Err(invalid_code(
                "the code is invalid or already used; call wx.login() again",
            ));
        }
        Some(45011) => {
            return Err(ApiError::new(
                429,
                "rate_limited",
                "WeChat rate-limits this user's logins; try again later",
            ));
        }
        Some(40226) => {
            return Err(ApiError::new(
                403,
                "user_blocked",
                "WeChat blocked this user as risky (errcode 40226)",
            ));
        }
        Some(-1) => {
            return Err(ApiError::new(
                503,
                "wechat_busy",
                "WeChat is busy (errcode -1); try again",
            ));
        }
        Some(other) => {
            return Err(ApiError::new(
                502,
                "wechat_error",
                format!("WeChat refused the login exchange with errcode {other}"),
            ));
        }
    }
    let Some(openid) = parsed.openid.filter(|o| !o.is_empty()) else {
        return Err(ApiError::new(
            502,
            "wechat_error",
            "WeChat's login answer has no openid",
        ));
    };
    let now = env.clock.now_unix();
    let ttl = env.config.session.ttl_secs;
    let token =
        session::issue(&env.config.session.secret, &openid, now, ttl).map_err(|e| match e {
            SessionError::InvalidOpenid => ApiError::new(502, "wechat_error", e.to_string()),
            _ => ApiError::new(500, "config_error", e.to_string()),
        })?;
    Ok(Response::json(
        200,
        &LoginAnswer {
            token,
            expires_in: ttl,
        },
    ))
}
