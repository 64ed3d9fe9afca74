//! `GET /_sim/sns/jscode2session` (PROTOCOL.md "Mini program login"), as WeChat answers it:
//! always HTTP 200 with JSON, `{openid, session_key}` or `{errcode, errmsg}`.
//!
//! Any code is accepted once and maps to a stable openid derived from it (the same code text
//! always gives the same user), so tests and the README can pick their users. Refusals, to
//! exercise the error paths: an empty code or the code `invalid` → 40029; a code exchanged
//! already → 40163 "code been used"; a wrong appid → 40013, a wrong secret → 40125, a
//! `grant_type` other than `authorization_code` → 40002.
//!
//! Simplification: a used code is remembered for [`CODE_TTL_SECS`] (a real code's lifetime);
//! afterwards the same text counts as a new code, so a copy-pasted README walk works again
//! later (WeChat would answer 40029 for a stale code).

use hmac::{KeyInit, Mac};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{CODE_KEY_PREFIX, SimConfig, query_param};
use crate::config::{SIM_APP_SECRET, SIM_APPID};
use crate::flows::{Clock, Env, Response, Store};

/// The route below `/_sim`.
pub const JSCODE2SESSION: &str = "/sns/jscode2session";

/// How long a used code is remembered (WeChat's codes live 5 minutes).
pub const CODE_TTL_SECS: u64 = 300;

/// The code that always answers 40029 (as does an empty one).
pub const INVALID_CODE: &str = "invalid";

/// The openid the simulator gives the user behind `code`: `oSim` and 24 hex digits of
/// HMAC-SHA256(app secret, code), 28 characters like WeChat's.
pub fn openid_for_code(code: &str) -> String {
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(SIM_APP_SECRET.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(code.as_bytes());
    let digest = hex::encode(mac.finalize().into_bytes());
    format!("oSim{}", &digest[..24])
}

fn code_key(code: &str) -> String {
    format!(
        "{CODE_KEY_PREFIX}{}",
        &hex::encode(Sha256::digest(code.as_bytes()))[..32]
    )
}

fn error(errcode: i64, errmsg: &str) -> Response {
    Response::json(200, &json!({"errcode": errcode, "errmsg": errmsg}))
}

/// Answers one code exchange.
pub async fn jscode2session<S: Store, T, C: Clock, N>(
    env: &Env<S, T, C, N, SimConfig>,
    query: &str,
) -> Response {
    let param = |name: &str| query_param(query, name).unwrap_or_default();
    if param("appid") != SIM_APPID {
        return error(40013, "invalid appid");
    }
    if param("secret") != SIM_APP_SECRET {
        return error(40125, "invalid appsecret");
    }
    if param("grant_type") != "authorization_code" {
        return error(40002, "invalid grant_type");
    }
    let code = param("js_code");
    if code.is_empty() || code == INVALID_CODE {
        return error(40029, "invalid code");
    }
    let now = env.clock.now_unix();
    let key = code_key(&code);
    match env.store.get(&key).await {
        Ok(Some(bytes)) => {
            let used_at = std::str::from_utf8(&bytes)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0);
            if now < used_at.saturating_add(CODE_TTL_SECS) {
                return error(40163, "code been used");
            }
        }
        Ok(None) => {}
        Err(_) => return error(-1, "system error"),
    }
    if env
        .store
        .set(&key, now.to_string().as_bytes())
        .await
        .is_err()
    {
        return error(-1, "system error");
    }
    // session_key: random-looking but derived, never meaningful (the app must not keep it).
    let session_key = hex::encode(&Sha256::digest(format!("session_key:{code}"))[..16]);
    Response::json(
        200,
        &json!({"openid": openid_for_code(&code), "session_key": session_key}),
    )
}
