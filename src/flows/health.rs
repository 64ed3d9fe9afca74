//! `GET /api/health`: mode, WeChat Pay API version, app version, every configuration problem
//! and whether the key-value store answers (docs/ARCHITECTURE.md §5, §6).

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use serde::Serialize;

use super::{Response, Store};
use crate::config::{ApiVersion, ConfigProblem, Mode, VariableSource, check_all};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    /// `simulator`, `live`, or `invalid` when `wxpay_mode` itself is wrong.
    pub mode: &'static str,
    /// `v2`, `v3`, or `invalid` when `wxpay_api_version` is wrong.
    pub api_version: &'static str,
    pub version: &'static str,
    pub config_ok: bool,
    pub problems: Vec<ConfigProblem>,
    /// `ok` when the key-value store answered a read, `unavailable` when it failed (every route
    /// that keeps state then answers 503 `store_unavailable`, or a failure to WeChat).
    pub store: &'static str,
}

/// The key health reads: any answer, present or absent, shows the store is reachable.
pub const HEALTH_PROBE_KEY: &str = "health:probe";

/// Health waits at most this long for the store's answer, then reports it `unavailable`: after
/// an outage Spin 4.0.2's Redis client holds every operation until it reconnects (up to minutes,
/// docs/RELIABILITY.md "Several instances on Redis"), and a probe that times out says less.
pub const STORE_PROBE_DEADLINE: Duration = Duration::from_secs(1);

/// `op`'s output, or `None` once `deadline` completed first.
async fn before<T>(op: impl Future<Output = T>, deadline: impl Future<Output = ()>) -> Option<T> {
    let mut op = pin!(op);
    let mut deadline = pin!(deadline);
    poll_fn(|cx| {
        if let Poll::Ready(out) = op.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        deadline.as_mut().poll(cx).map(|()| None)
    })
    .await
}

/// The health report of a variable source that can read every variable
/// ([`crate::config::ALL_VARIABLES`]), and of the store (one read, given up when `deadline`
/// completes first: the caller's timer of [`STORE_PROBE_DEADLINE`]).
pub async fn report<V: VariableSource + ?Sized, S: Store>(
    source: &V,
    store: &S,
    deadline: impl Future<Output = ()>,
) -> Health {
    let problems = check_all(source);
    Health {
        mode: Mode::load(source).map_or("invalid", Mode::as_str),
        api_version: match ApiVersion::load(source) {
            Ok(ApiVersion::V2) => "v2",
            Ok(ApiVersion::V3) => "v3",
            Err(_) => "invalid",
        },
        version: env!("CARGO_PKG_VERSION"),
        config_ok: problems.is_empty(),
        problems,
        store: match before(store.get(HEALTH_PROBE_KEY), deadline).await {
            Some(Ok(_)) => "ok",
            Some(Err(e)) => {
                super::log::store_error(&e);
                "unavailable"
            }
            None => "unavailable",
        },
    }
}

/// Always 200 (the route answers; `config_ok` and `store` say whether the deployment can
/// serve: a load balancer that took instances out on a store outage would take them all, as
/// they share the store). Problem texts never contain secret values.
pub async fn health<V: VariableSource + ?Sized, S: Store>(
    source: &V,
    store: &S,
    deadline: impl Future<Output = ()>,
) -> Response {
    Response::json(200, &report(source, store, deadline).await)
}
