//! `/_sim/faults`: faults injected into the simulator's next answers, for tests and demos.
//!
//! - `POST /_sim/faults` `{"systemerror": n, "bad_signature": n, "timeout": n, "signtest": n,
//!   "duplicate_notifications": n, "notenough": n}`: sets the fields given (others keep their
//!   value); answers the pending faults.
//! - `GET /_sim/faults`: the pending faults. `DELETE /_sim/faults`: clears them.
//!
//! The first four apply to the next merchant API answers (APIv2's unifiedorder, orderquery,
//! closeorder, refund, refundquery; APIv3's JSAPI order, query, close, refund, refund query) to
//! a request that is readable and correctly signed, one fault per answer, in the order
//! `timeout`, `systemerror`, `bad_signature`, `signtest`:
//! - `systemerror`: `result_code` FAIL, `err_code` SYSTEMERROR, nothing processed (the caller is
//!   expected to retry with identical parameters);
//! - `bad_signature`: the request is processed, but the reply's `sign` (APIv3: its
//!   `Wechatpay-Signature`) is wrong;
//! - `signtest` (APIv3): the request is processed, and the reply carries a
//!   `WECHATPAY/SIGNTEST/` probe signature, which a merchant must refuse;
//! - `timeout`: the request is processed, and the reply is held back for
//!   [`TIMEOUT_DELAY`], longer than the components' first-byte timeout (4 s, see
//!   `wxpay::spin::FIRST_BYTE_TIMEOUT`), so the caller gives up first.
//!
//! `duplicate_notifications: n` makes the next `/_sim/pay` or `/_sim/refund` deliver its
//! notification as a burst of `n` concurrent identical copies (WeChat does send the same
//! notification from several servers within seconds).
//!
//! `notenough: n` refuses the next `n` new refunds that pass WeChat's checks (APIv2
//! `/secapi/pay/refund`: `err_code` NOTENOUGH; APIv3 `POST /v3/refund/domestic/refunds`: 403
//! `NOT_ENOUGH`): the merchant's balance cannot pay them. Nothing is recorded, so the same
//! refund number may be sent again. A repeated refund number (answered with its refund) and a
//! refund refused for another reason leave it pending.
//!
//! Counters are read-modify-write in KV without compare-and-swap: two concurrent requests may
//! consume the same fault. Tests set a fault, then send one request at a time.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::FAULTS_KEY;
use crate::flows::{Response, Store, StoreError, json_object};

/// The route below `/_sim`.
pub const FAULTS: &str = "/faults";

/// How long a `timeout` fault holds a reply back: more than the components' 4 s first-byte
/// timeout.
pub const TIMEOUT_DELAY: Duration = Duration::from_secs(5);

/// Largest count accepted for one fault.
pub const MAX_COUNT: u64 = 100;

/// The pending faults, stored under [`FAULTS_KEY`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Faults {
    #[serde(default)]
    pub systemerror: u32,
    #[serde(default)]
    pub bad_signature: u32,
    #[serde(default)]
    pub timeout: u32,
    #[serde(default)]
    pub duplicate_notifications: u32,
    #[serde(default)]
    pub signtest: u32,
    #[serde(default)]
    pub notenough: u32,
}

/// The fault one merchant API answer carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiFault {
    None,
    Timeout,
    SystemError,
    BadSignature,
    /// APIv3: the reply is signed with a `WECHATPAY/SIGNTEST/` probe signature (an APIv2
    /// answer, which has no such probe, consumes it unchanged).
    SignTest,
}

pub async fn load<S: Store>(store: &S) -> Result<Faults, StoreError> {
    Ok(store
        .get(FAULTS_KEY)
        .await?
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default())
}

async fn save<S: Store>(store: &S, faults: &Faults) -> Result<(), StoreError> {
    if *faults == Faults::default() {
        return store.delete(FAULTS_KEY).await;
    }
    let bytes = serde_json::to_vec(faults).map_err(|e| StoreError(e.to_string()))?;
    store.set(FAULTS_KEY, &bytes).await
}

/// Takes the fault for the next merchant API answer (none if the store cannot be read).
pub async fn take_api_fault<S: Store>(store: &S) -> ApiFault {
    let Ok(mut faults) = load(store).await else {
        return ApiFault::None;
    };
    let fault = if faults.timeout > 0 {
        faults.timeout -= 1;
        ApiFault::Timeout
    } else if faults.systemerror > 0 {
        faults.systemerror -= 1;
        ApiFault::SystemError
    } else if faults.bad_signature > 0 {
        faults.bad_signature -= 1;
        ApiFault::BadSignature
    } else if faults.signtest > 0 {
        faults.signtest -= 1;
        ApiFault::SignTest
    } else {
        return ApiFault::None;
    };
    // A fault that cannot be consumed is not applied (it would repeat forever).
    match save(store, &faults).await {
        Ok(()) => fault,
        Err(_) => ApiFault::None,
    }
}

/// Takes a `notenough` fault for a new refund: whether it is refused NOTENOUGH.
pub async fn take_notenough<S: Store>(store: &S) -> bool {
    let Ok(mut faults) = load(store).await else {
        return false;
    };
    if faults.notenough == 0 {
        return false;
    }
    faults.notenough -= 1;
    save(store, &faults).await.is_ok()
}

/// Takes the duplicate-notification burst size for the next `/_sim/pay` or `/_sim/refund` (1: no
/// burst).
pub async fn take_duplicates<S: Store>(store: &S) -> usize {
    let Ok(mut faults) = load(store).await else {
        return 1;
    };
    let n = faults.duplicate_notifications;
    if n == 0 {
        return 1;
    }
    faults.duplicate_notifications = 0;
    match save(store, &faults).await {
        Ok(()) => n as usize,
        Err(_) => 1,
    }
}

fn store_unavailable(e: &StoreError) -> Response {
    crate::flows::store_unavailable(e).into()
}

/// `GET` / `POST` / `DELETE /_sim/faults`.
pub async fn handle<S: Store>(store: &S, method: &str, body: &[u8]) -> Response {
    match method {
        "GET" => match load(store).await {
            Ok(f) => Response::json(200, &f),
            Err(e) => store_unavailable(&e),
        },
        "DELETE" => match save(store, &Faults::default()).await {
            Ok(()) => Response::json(200, &Faults::default()),
            Err(e) => store_unavailable(&e),
        },
        "POST" => {
            let object = match json_object(body) {
                Ok(o) => o,
                Err(e) => return e.into(),
            };
            let mut faults = match load(store).await {
                Ok(f) => f,
                Err(e) => return store_unavailable(&e),
            };
            for (name, value) in &object {
                let slot = match name.as_str() {
                    "systemerror" => &mut faults.systemerror,
                    "bad_signature" => &mut faults.bad_signature,
                    "timeout" => &mut faults.timeout,
                    "duplicate_notifications" => &mut faults.duplicate_notifications,
                    "signtest" => &mut faults.signtest,
                    "notenough" => &mut faults.notenough,
                    other => {
                        return Response::error(
                            400,
                            "unknown_fault",
                            format!(
                                "unknown fault {other:?}; expected systemerror, bad_signature, \
                                 timeout, signtest, duplicate_notifications or notenough"
                            ),
                        );
                    }
                };
                match value {
                    Value::Number(n) if n.as_u64().is_some_and(|n| n <= MAX_COUNT) => {
                        *slot = n.as_u64().unwrap_or(0) as u32;
                    }
                    _ => {
                        return Response::error(
                            400,
                            "invalid_count",
                            format!("{name} must be an integer in 0..={MAX_COUNT}"),
                        );
                    }
                }
            }
            match save(store, &faults).await {
                Ok(()) => Response::json(200, &faults),
                Err(e) => store_unavailable(&e),
            }
        }
        other => Response::error(
            405,
            "method_not_allowed",
            format!("{other} is not allowed on /_sim/faults"),
        ),
    }
}
