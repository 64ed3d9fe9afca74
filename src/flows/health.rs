//! `GET /api/health`: mode, WeChat Pay API version, app version and every configuration problem
//! (docs/ARCHITECTURE.md §5, §6).

use serde::Serialize;

use super::Response;
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
}

/// The health report of a variable source that can read every variable
/// ([`crate::config::ALL_VARIABLES`]).
pub fn report<V: VariableSource + ?Sized>(source: &V) -> Health {
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
    }
}

/// Always 200 (the route answers; `config_ok` says whether the configuration is usable).
/// Problem texts never contain secret values.
pub fn health<V: VariableSource + ?Sized>(source: &V) -> Response {
    Response::json(200, &report(source))
}
