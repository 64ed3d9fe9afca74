//! Typed, validated configuration from a `name -> value` source (docs/ARCHITECTURE.md §5).
//!
//! Each Spin component can read only the variables it declares, so configuration loads in
//! independent sections ([`MerchantConfig`], [`LoginConfig`], [`SessionConfig`],
//! [`AdminConfig`]), each reading only its own variables plus `wxpay_mode`. A section either loads
//! completely or reports *every* problem it found, each naming its variable: an operator fixes a
//! deployment in one pass, and a missing or malformed live setting never panics and never falls
//! back to the simulator.
//!
//! In simulator mode the WeChat calls go to the embedded simulator in-process (addressed as
//! [`SIM_BASE`], `crate::sim::link`) with the well-known test credentials below; the live credential variables are neither required nor
//! read.
//!
//! No problem message ever contains a secret's value; a non-secret bad value may be quoted.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::secret::Secret;
use crate::v2::sign::SignType;

// ---- Spin variable names (lowercase `[a-z0-9_]`; declare them in spin.toml) -------------------

pub const WXPAY_MODE: &str = "wxpay_mode";
pub const WX_APPID: &str = "wx_appid";
pub const WX_APP_SECRET: &str = "wx_app_secret";
pub const WXPAY_MCH_ID: &str = "wxpay_mch_id";
pub const WXPAY_API_KEY: &str = "wxpay_api_key";
pub const WXPAY_SIGN_TYPE: &str = "wxpay_sign_type";
pub const WXPAY_NOTIFY_URL: &str = "wxpay_notify_url";
pub const WXPAY_MCH_API: &str = "wxpay_mch_api";
pub const WX_API: &str = "wx_api";
pub const SESSION_SECRET: &str = "session_secret";
pub const ADMIN_TOKEN: &str = "admin_token";
pub const WXPAY_API_VERSION: &str = "wxpay_api_version";
pub const WXPAY_APIV3_KEY: &str = "wxpay_apiv3_key";
pub const WXPAY_MCH_PRIVATE_KEY: &str = "wxpay_mch_private_key";
pub const WXPAY_MCH_CERT_SERIAL: &str = "wxpay_mch_cert_serial";
pub const WXPAY_PUBLIC_KEY: &str = "wxpay_public_key";
pub const WXPAY_PUBLIC_KEY_ID: &str = "wxpay_public_key_id";

/// Every variable this module reads.
pub const ALL_VARIABLES: &[&str] = &[
    WXPAY_MODE,
    WX_APPID,
    WX_APP_SECRET,
    WXPAY_MCH_ID,
    WXPAY_API_KEY,
    WXPAY_SIGN_TYPE,
    WXPAY_NOTIFY_URL,
    WXPAY_MCH_API,
    WX_API,
    SESSION_SECRET,
    ADMIN_TOKEN,
    WXPAY_API_VERSION,
    WXPAY_APIV3_KEY,
    WXPAY_MCH_PRIVATE_KEY,
    WXPAY_MCH_CERT_SERIAL,
    WXPAY_PUBLIC_KEY,
    WXPAY_PUBLIC_KEY_ID,
];

// ---- Defaults -----------------------------------------------------------------------------------

/// WeChat Pay API origin in live mode unless `wxpay_mch_api` says otherwise.
pub const DEFAULT_MCH_API: &str = "https://api.mch.weixin.qq.com";
/// WeChat (login) API origin in live mode unless `wx_api` says otherwise.
pub const DEFAULT_WX_API: &str = "https://api.weixin.qq.com";

/// Where the simulator serves both WeChat APIs. Never sent over the network: in simulator mode
/// the components hand these requests to the simulator in-process (`crate::sim::link`; Spin
/// 4.0.x has no self requests for WASIp3 components). A URL, so requests and the signed
/// `notify_url` are byte for byte what a live deployment sends.
pub const SIM_BASE: &str = "http://self.alt/_sim";
/// The notify route as the simulator addresses it (delivered in-process, `crate::sim::link`).
pub const SIM_NOTIFY_URL: &str = "https://self.alt/api/wxpay/notify";
/// The refund-notify route as the simulator addresses it ([`MerchantConfig::refund_notify_url`]
/// of the simulator merchant).
pub const SIM_REFUND_NOTIFY_URL: &str = "https://self.alt/api/wxpay/refund-notify";
/// The appid of WeChat's public APIv2 examples (PROTOCOL.md S1).
pub const SIM_APPID: &str = "wxd930ea5d5a258f4f";
/// The merchant id of WeChat's public APIv2 examples (PROTOCOL.md S1).
pub const SIM_MCH_ID: &str = "10000100";
/// The API key of WeChat's public APIv2 examples (PROTOCOL.md S1). Public: refused in live mode.
pub const SIM_API_KEY: &str = "192006250b4c09247ec02edce69f6a2d";
/// The simulator's mini program app secret. Public: refused in live mode.
pub const SIM_APP_SECRET: &str = "simulatorappsecret00000000000000";
/// Development session secret used in simulator mode when `session_secret` is unset. Public:
/// anyone can mint tokens with it, so it is refused in live mode.
pub const SIM_SESSION_SECRET: &str = "spin-wxpay simulator session secret: not for production";
/// Development admin token used in simulator mode when `admin_token` is unset
/// (`Authorization: Bearer simulator-admin-token`). Public: refused in live mode.
pub const SIM_ADMIN_TOKEN: &str = "simulator-admin-token";

/// Lifetime of a session token, in seconds (the login reply's `expires_in`).
pub const SESSION_TTL_SECS: u64 = 7200;

/// Shortest accepted `session_secret`, in bytes (256 bits for HMAC-SHA256).
pub const MIN_SESSION_SECRET_LEN: usize = 32;
/// Shortest accepted `admin_token`, in characters.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;
/// WeChat Pay APIv2 keys are exactly 32 characters.
pub const API_KEY_LEN: usize = 32;
/// PROTOCOL.md: `notify_url` is at most 256 bytes.
pub const MAX_NOTIFY_URL_LEN: usize = 256;

/// Longest bad value quoted back in a problem message.
const MAX_QUOTED: usize = 64;

// ---- Source -------------------------------------------------------------------------------------

/// Where variable values come from: Spin variables in a component, a map in tests.
pub trait VariableSource {
    /// The value of `name`, or `None` if it is unset (or not declared by this component).
    fn get(&self, name: &str) -> Option<String>;
}

impl VariableSource for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

impl VariableSource for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        BTreeMap::get(self, name).cloned()
    }
}

impl<F: Fn(&str) -> Option<String>> VariableSource for F {
    fn get(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// Reads a variable, treating the empty string as unset (Spin variables with `default = ""`).
fn read<S: VariableSource + ?Sized>(source: &S, name: &str) -> Option<String> {
    source.get(name).filter(|v| !v.is_empty())
}

// ---- Problems -----------------------------------------------------------------------------------

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigProblem {
    /// The Spin variable at fault.
    pub variable: &'static str,
    /// What is wrong with it; never contains a secret's value.
    pub problem: String,
}

impl ConfigProblem {
    fn new(variable: &'static str, problem: impl Into<String>) -> Self {
        Self {
            variable,
            problem: problem.into(),
        }
    }

    fn missing(variable: &'static str) -> Self {
        Self::new(variable, "is required in live mode but is not set")
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.variable, self.problem)
    }
}

/// Every problem a section found (never empty when returned as an error).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub struct ConfigProblems(pub Vec<ConfigProblem>);

impl ConfigProblems {
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigProblem> {
        self.0.iter()
    }

    /// Whether some problem names `variable`.
    pub fn mentions(&self, variable: &str) -> bool {
        self.0.iter().any(|p| p.variable == variable)
    }
}

impl fmt::Display for ConfigProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid configuration: ")?;
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Collects problems while a section loads.
#[derive(Default)]
struct Problems(Vec<ConfigProblem>);

impl Problems {
    fn push(&mut self, p: ConfigProblem) {
        self.0.push(p);
    }

    fn finish<T>(self, value: T) -> Result<T, ConfigProblems> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(ConfigProblems(self.0))
        }
    }
}

/// A non-secret value for a message: debug-quoted, at most [`MAX_QUOTED`] (64) characters —
/// also how every error message echoes client input.
pub(crate) fn quote(value: &str) -> String {
    match value.char_indices().nth(MAX_QUOTED) {
        Some((cut, _)) => format!("{:?}…", &value[..cut]),
        None => format!("{value:?}"),
    }
}

// ---- Mode ---------------------------------------------------------------------------------------

/// Whether WeChat is the real one or the bundled simulator. Stored on every order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Simulator,
    Live,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Simulator => "simulator",
            Mode::Live => "live",
        }
    }

    /// `wxpay_mode`, defaulting to simulator when unset.
    pub fn load<S: VariableSource + ?Sized>(source: &S) -> Result<Mode, ConfigProblems> {
        let mut problems = Problems::default();
        let mode = load_mode(source, &mut problems);
        problems.finish(mode)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `wxpay_mode` value other than `simulator` or `live`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("must be \"simulator\" or \"live\", got {}", quote(.0))]
pub struct UnknownMode(pub String);

impl FromStr for Mode {
    type Err = UnknownMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "simulator" => Ok(Mode::Simulator),
            "live" => Ok(Mode::Live),
            other => Err(UnknownMode(other.to_owned())),
        }
    }
}

/// The variables that only a live deployment sets: in simulator mode any of them set means a
/// deployment meant to be live is running the simulator (no request reaches WeChat, no real
/// payment happens), which is a problem, not a silent choice.
pub const LIVE_CREDENTIALS: &[&str] = &[
    WX_APPID,
    WX_APP_SECRET,
    WXPAY_MCH_ID,
    WXPAY_API_KEY,
    WXPAY_NOTIFY_URL,
    WXPAY_APIV3_KEY,
    WXPAY_MCH_PRIVATE_KEY,
    WXPAY_MCH_CERT_SERIAL,
    WXPAY_PUBLIC_KEY,
    WXPAY_PUBLIC_KEY_ID,
];

/// Reads the mode. A bad value is a problem; the rest of the section is then checked with the
/// simulator rules (the result is an error anyway, and guessing "live" would bury the one real
/// problem under a list of missing credentials). An empty value is a problem too (it never
/// means the simulator: spin.toml states `simulator` as its default); an undeclared one (a
/// native caller's empty source) is the simulator. Simulator mode with a live credential set
/// is a problem naming the credentials (never their values).
fn load_mode<S: VariableSource + ?Sized>(source: &S, problems: &mut Problems) -> Mode {
    let mode = match source.get(WXPAY_MODE) {
        None => Mode::Simulator,
        Some(v) if v.trim().is_empty() => {
            problems.push(ConfigProblem::new(
                WXPAY_MODE,
                "is empty: set it to \"simulator\" or \"live\"",
            ));
            Mode::Simulator
        }
        Some(v) => v.parse().unwrap_or_else(|e: UnknownMode| {
            problems.push(ConfigProblem::new(WXPAY_MODE, e.to_string()));
            Mode::Simulator
        }),
    };
    if mode == Mode::Simulator {
        let set: Vec<&str> = LIVE_CREDENTIALS
            .iter()
            .copied()
            .filter(|name| read(source, name).is_some())
            .collect();
        if !set.is_empty() {
            problems.push(ConfigProblem::new(
                WXPAY_MODE,
                format!(
                    "is \"simulator\" while live credentials are set ({}): the simulator would \
                     answer for WeChat and no real payment would happen; set wxpay_mode=live, or \
                     unset them",
                    set.join(", ")
                ),
            ));
        }
    }
    mode
}

// ---- URL checks (no URL crate in the core; only what these settings need) ---------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
}

#[derive(Debug)]
struct HttpUrl<'a> {
    scheme: Scheme,
    /// `host[:port]`.
    authority: &'a str,
    /// Everything after the authority: empty or starting with `/`, `?` or `#`.
    rest: &'a str,
}

/// An outbound request URL as `wasi:http` takes it (the Spin transport sets scheme, authority
/// and path separately).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestTarget<'a> {
    pub https: bool,
    /// `host[:port]`.
    pub authority: &'a str,
    /// The path and query, starting with `/`.
    pub path_and_query: String,
}

/// Splits a request URL (a configured origin plus a path and query) for `wasi:http`; `None`
/// for a URL [`parse_http_url`] refuses or one with a fragment.
pub fn request_target(url: &str) -> Option<RequestTarget<'_>> {
    let parsed = parse_http_url(url).ok()?;
    if parsed.rest.contains('#') {
        return None;
    }
    let path_and_query = match parsed.rest {
        rest if rest.starts_with('/') => rest.to_owned(),
        rest => format!("/{rest}"),
    };
    Some(RequestTarget {
        https: parsed.scheme == Scheme::Https,
        authority: parsed.authority,
        path_and_query,
    })
}

/// Checks an absolute `http(s)://host[:port]...` URL: lowercase scheme, a host, an optional
/// numeric port, no user info, no whitespace or control characters.
fn parse_http_url(value: &str) -> Result<HttpUrl<'_>, String> {
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace or control characters".into());
    }
    let (scheme, after) = if let Some(a) = value.strip_prefix("https://") {
        (Scheme::Https, a)
    } else if let Some(a) = value.strip_prefix("http://") {
        (Scheme::Http, a)
    } else {
        return Err(format!(
            "must be an absolute http(s) URL, got {}",
            quote(value)
        ));
    };
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (authority, rest) = after.split_at(end);
    if authority.contains('@') {
        return Err("must not contain user info".into());
    }
    let host_end = if authority.starts_with('[') {
        // IPv6 literal: `[...]` then an optional `:port`.
        match authority.find(']') {
            Some(i) if i > 1 => i + 1,
            _ => return Err(format!("has a malformed host in {}", quote(value))),
        }
    } else {
        authority.find(':').unwrap_or(authority.len())
    };
    let (host, port) = authority.split_at(host_end);
    if host.is_empty() {
        return Err(format!("has no host: {}", quote(value)));
    }
    if !host.starts_with('[')
        && !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(format!("has an invalid host in {}", quote(value)));
    }
    if !port.is_empty() {
        let digits = &port[1..];
        let ok = port.starts_with(':')
            && !digits.is_empty()
            && digits.len() <= 5
            && digits.bytes().all(|b| b.is_ascii_digit())
            && digits
                .parse::<u32>()
                .is_ok_and(|p| (1..=65_535).contains(&p));
        if !ok {
            return Err(format!("has an invalid port in {}", quote(value)));
        }
    }
    Ok(HttpUrl {
        scheme,
        authority,
        rest,
    })
}

/// An API origin: `http(s)://host[:port]`, an optional trailing `/` is dropped. Paths are refused
/// because the same value is templated into `allowed_outbound_hosts`.
fn check_origin(value: &str) -> Result<String, String> {
    let url = parse_http_url(value)?;
    // Plain http would carry signed payment traffic in the clear: only to a test double on
    // this machine.
    if url.scheme == Scheme::Http && !is_loopback(url.authority) {
        return Err(format!(
            "must be https in live mode (plain http only to a loopback address), got {}",
            quote(value)
        ));
    }
    match url.rest {
        "" | "/" => Ok(value.trim_end_matches('/').to_owned()),
        _ => Err(format!(
            "must be an origin like https://host[:port] with no path, query or fragment, got {}",
            quote(value)
        )),
    }
}

/// Whether `host[:port]` names this machine: `localhost`, 127.0.0.0/8 or `[::1]`.
fn is_loopback(authority: &str) -> bool {
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The live notify URL: https, absolute, no query string or fragment, at most 256 bytes.
fn check_notify_url(value: &str) -> Result<String, String> {
    if value.len() > MAX_NOTIFY_URL_LEN {
        return Err(format!(
            "must be at most {MAX_NOTIFY_URL_LEN} bytes, got {}",
            value.len()
        ));
    }
    let url = parse_http_url(value)?;
    if url.scheme != Scheme::Https {
        return Err(format!(
            "must be an https URL in live mode, got {}",
            quote(value)
        ));
    }
    if url.rest.contains('?') {
        return Err(format!(
            "must not have a query string (WeChat drops it), got {}",
            quote(value)
        ));
    }
    if url.rest.contains('#') {
        return Err(format!("must not have a fragment, got {}", quote(value)));
    }
    Ok(value.to_owned())
}

// ---- Field readers --------------------------------------------------------------------------------

/// A required live value checked by `check`; a missing or bad value is recorded as a problem.
fn required<S: VariableSource + ?Sized>(
    source: &S,
    variable: &'static str,
    problems: &mut Problems,
    check: impl FnOnce(&str) -> Result<String, String>,
) -> Option<String> {
    let Some(value) = read(source, variable) else {
        problems.push(ConfigProblem::missing(variable));
        return None;
    };
    match check(&value) {
        Ok(v) => Some(v),
        Err(problem) => {
            problems.push(ConfigProblem::new(variable, problem));
            None
        }
    }
}

/// A secret variable, checked by `check` (whose messages must not contain the value); in live
/// mode it is required and must not be the published simulator value. Returns `None` with a
/// problem recorded when it is invalid (or missing in live mode), and `None` without a problem
/// when it is unset in simulator mode (the caller then uses its development default).
fn secret_var<S: VariableSource + ?Sized>(
    source: &S,
    variable: &'static str,
    mode: Mode,
    public_value: &str,
    problems: &mut Problems,
    check: impl FnOnce(&str) -> Result<(), &'static str>,
) -> Option<Secret> {
    let value = read(source, variable);
    let Some(value) = value else {
        if mode == Mode::Live {
            problems.push(ConfigProblem::missing(variable));
        }
        return None;
    };
    if let Err(problem) = check(&value) {
        problems.push(ConfigProblem::new(variable, problem));
        return None;
    }
    if mode == Mode::Live && value == public_value {
        problems.push(ConfigProblem::new(
            variable,
            "is the published simulator value; set a private one in live mode",
        ));
        return None;
    }
    Some(Secret::new(value))
}

fn check_appid(v: &str) -> Result<String, String> {
    if v.len() == 18 && v.starts_with("wx") && v.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(v.to_owned())
    } else {
        Err(format!(
            "must look like a mini program appid (\"wx\" and 16 letters or digits), got {}",
            quote(v)
        ))
    }
}

fn check_mch_id(v: &str) -> Result<String, String> {
    if (1..=32).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_digit()) {
        Ok(v.to_owned())
    } else {
        Err(format!(
            "must be the merchant number (digits only), got {}",
            quote(v)
        ))
    }
}

fn check_api_key(v: &str) -> Result<(), &'static str> {
    if v.len() == API_KEY_LEN && v.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(())
    } else if v.chars().any(char::is_whitespace) {
        Err("must be exactly 32 letters or digits (the APIv2 key); it contains whitespace")
    } else {
        Err("must be exactly 32 letters or digits (the APIv2 key, not the APIv3 key)")
    }
}

fn check_app_secret(v: &str) -> Result<(), &'static str> {
    if v.len() <= 128 && v.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err("must be the mini program AppSecret (letters and digits only)")
    }
}

fn check_session_secret(v: &str) -> Result<(), &'static str> {
    if v.len() >= MIN_SESSION_SECRET_LEN {
        Ok(())
    } else {
        Err("must be at least 32 bytes (use 32 random bytes, e.g. 64 hex characters)")
    }
}

fn check_admin_token(v: &str) -> Result<(), &'static str> {
    if v.chars().count() < MIN_ADMIN_TOKEN_LEN {
        Err("must be at least 16 characters")
    } else if v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Err("must not contain whitespace or control characters (it is sent as a bearer token)")
    } else {
        Ok(())
    }
}

fn load_sign_type<S: VariableSource + ?Sized>(source: &S, problems: &mut Problems) -> SignType {
    match read(source, WXPAY_SIGN_TYPE) {
        None => SignType::Md5,
        Some(v) => v.parse::<SignType>().unwrap_or_else(|_| {
            problems.push(ConfigProblem::new(
                WXPAY_SIGN_TYPE,
                format!("must be \"MD5\" or \"HMAC-SHA256\", got {}", quote(&v)),
            ));
            SignType::Md5
        }),
    }
}

fn optional_origin<S: VariableSource + ?Sized>(
    source: &S,
    variable: &'static str,
    default: &str,
    problems: &mut Problems,
) -> String {
    match read(source, variable) {
        None => default.to_owned(),
        Some(v) => check_origin(&v).unwrap_or_else(|problem| {
            problems.push(ConfigProblem::new(variable, problem));
            default.to_owned()
        }),
    }
}

/// `origin` + `path` (`path` starts with `/`).
fn join(origin: &str, path: &str) -> String {
    format!("{origin}{path}")
}

// ---- Sections -----------------------------------------------------------------------------------

/// What the pay API calls need (`order`, `pay-sign`, `notify`, `admin` components).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerchantConfig {
    pub mode: Mode,
    /// Which API orders are made, queried and closed with (`wxpay_api_version`).
    pub api_version: ApiVersion,
    pub appid: String,
    pub mch_id: String,
    /// The APIv2 key: required for APIv2; with APIv3 optional (set, the notify route still takes
    /// APIv2 notifications, e.g. of orders made before a switch).
    pub api_key: Option<Secret>,
    /// Used for unifiedorder and, necessarily the same, for the paySign.
    pub sign_type: SignType,
    /// The APIv3 settings: required for APIv3; with APIv2 loaded when `wxpay_apiv3_key` is set
    /// (the notify route then takes APIv3 notifications too).
    pub v3: Option<V3Config>,
    pub notify_url: String,
    /// Base of the pay API, without a trailing `/` (`https://api.mch.weixin.qq.com`, or
    /// [`SIM_BASE`] in simulator mode).
    pub mch_api: String,
}

/// What a component does with APIv3's keys (each declares only the variables it uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signing {
    /// `order`, `admin`: they call WeChat Pay, signing with the merchant private key.
    Signs,
    /// `notify`: verifies and decrypts (WeChat Pay key, APIv3 key); no merchant private key.
    VerifiesOnly,
    /// `pay-sign`: hands back an APIv3 order's stored params; no APIv3 key at all.
    NoV3Keys,
}

impl MerchantConfig {
    /// Reads `wxpay_mode`, `wxpay_api_version`, `wxpay_sign_type` and, in live mode, `wx_appid`,
    /// `wxpay_mch_id`, `wxpay_api_key`, `wxpay_notify_url`, `wxpay_mch_api` and the APIv3
    /// variables ([`V3Config::load`]), for a component that signs.
    pub fn load<S: VariableSource + ?Sized>(source: &S) -> Result<Self, ConfigProblems> {
        Self::load_for(source, Signing::Signs)
    }

    /// [`MerchantConfig::load`] for a component that `signing` says signs or not.
    pub fn load_for<S: VariableSource + ?Sized>(
        source: &S,
        signing: Signing,
    ) -> Result<Self, ConfigProblems> {
        let mut problems = Problems::default();
        let mode = load_mode(source, &mut problems);
        let sign_type = load_sign_type(source, &mut problems);
        let api_version = ApiVersion::load(source).unwrap_or_else(|p| {
            problems.0.extend(p.0);
            ApiVersion::V2
        });
        if mode == Mode::Simulator {
            return problems.finish(Self::simulator_for(sign_type, api_version, signing));
        }
        let appid = required(source, WX_APPID, &mut problems, check_appid);
        let mch_id = required(source, WXPAY_MCH_ID, &mut problems, check_mch_id);
        let v2_key_required = api_version == ApiVersion::V2;
        let api_key = if v2_key_required || read(source, WXPAY_API_KEY).is_some() {
            secret_var(
                source,
                WXPAY_API_KEY,
                mode,
                SIM_API_KEY,
                &mut problems,
                check_api_key,
            )
        } else {
            None
        };
        let wants_v3 = api_version == ApiVersion::V3 || read(source, WXPAY_APIV3_KEY).is_some();
        let v3 = if wants_v3 && signing != Signing::NoV3Keys {
            let signs = api_version == ApiVersion::V3 && signing == Signing::Signs;
            match V3Config::load(source, signs) {
                Ok(v3) => Some(v3),
                Err(p) => {
                    problems.0.extend(p.0);
                    None
                }
            }
        } else {
            None
        };
        let notify_url = required(source, WXPAY_NOTIFY_URL, &mut problems, check_notify_url);
        let mch_api = optional_origin(source, WXPAY_MCH_API, DEFAULT_MCH_API, &mut problems);
        match (appid, mch_id, notify_url) {
            (Some(appid), Some(mch_id), Some(notify_url)) => problems.finish(Self {
                mode,
                api_version,
                appid,
                mch_id,
                api_key,
                sign_type,
                v3,
                notify_url,
                mch_api,
            }),
            _ => Err(ConfigProblems(problems.0)),
        }
    }

    /// The simulator's merchant speaking APIv2 (public test credentials, WeChat calls to
    /// [`SIM_BASE`]).
    pub fn simulator(sign_type: SignType) -> Self {
        Self::simulator_for(sign_type, ApiVersion::V2, Signing::VerifiesOnly)
    }

    /// The simulator's merchant: both versions' development keys (so its notify route takes
    /// both), the private key parsed only for a component that signs APIv3.
    pub fn simulator_for(sign_type: SignType, api_version: ApiVersion, signing: Signing) -> Self {
        let signs = api_version == ApiVersion::V3 && signing == Signing::Signs;
        let v3 = (signing != Signing::NoV3Keys).then(|| V3Config::simulator(signs));
        Self {
            mode: Mode::Simulator,
            api_version,
            appid: SIM_APPID.to_owned(),
            mch_id: SIM_MCH_ID.to_owned(),
            api_key: Some(Secret::new(SIM_API_KEY)),
            sign_type,
            v3,
            notify_url: SIM_NOTIFY_URL.to_owned(),
            mch_api: SIM_BASE.to_owned(),
        }
    }

    /// Full URL of a pay API path, e.g. `url("/pay/unifiedorder")`.
    pub fn url(&self, path: &str) -> String {
        join(&self.mch_api, path)
    }

    /// Where WeChat delivers refund notifications: the notify URL with its last path segment
    /// `notify` turned into `refund-notify` (`…/api/wxpay/notify` → `…/api/wxpay/refund-notify`),
    /// or none (WeChat then uses the URL set on the merchant platform) when it does not end so.
    pub fn refund_notify_url(&self) -> Option<String> {
        self.notify_url
            .strip_suffix("/notify")
            .map(|base| format!("{base}/refund-notify"))
    }

    /// The APIv2 key, or why there is none (APIv3 without `wxpay_api_key`).
    pub fn v2_key(&self) -> Result<&Secret, NoV2Key> {
        self.api_key.as_ref().ok_or(NoV2Key)
    }
}

/// An APIv2 message to sign or verify with no APIv2 key configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("no APIv2 key is configured (wxpay_api_key)")]
pub struct NoV2Key;

/// What `POST /api/login` needs (`login` component).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginConfig {
    pub mode: Mode,
    pub appid: String,
    pub app_secret: Secret,
    /// Base of the WeChat API, without a trailing `/`.
    pub wx_api: String,
}

impl LoginConfig {
    /// Reads `wxpay_mode` and, in live mode, `wx_appid`, `wx_app_secret`, `wx_api`.
    pub fn load<S: VariableSource + ?Sized>(source: &S) -> Result<Self, ConfigProblems> {
        let mut problems = Problems::default();
        let mode = load_mode(source, &mut problems);
        if mode == Mode::Simulator {
            return problems.finish(Self::simulator());
        }
        let appid = required(source, WX_APPID, &mut problems, check_appid);
        let app_secret = secret_var(
            source,
            WX_APP_SECRET,
            mode,
            SIM_APP_SECRET,
            &mut problems,
            check_app_secret,
        );
        let wx_api = optional_origin(source, WX_API, DEFAULT_WX_API, &mut problems);
        match (appid, app_secret) {
            (Some(appid), Some(app_secret)) => problems.finish(Self {
                mode,
                appid,
                app_secret,
                wx_api,
            }),
            _ => Err(ConfigProblems(problems.0)),
        }
    }

    pub fn simulator() -> Self {
        Self {
            mode: Mode::Simulator,
            appid: SIM_APPID.to_owned(),
            app_secret: Secret::new(SIM_APP_SECRET),
            wx_api: SIM_BASE.to_owned(),
        }
    }

    /// Full URL of a WeChat API path, e.g. `url("/sns/jscode2session")`.
    pub fn url(&self, path: &str) -> String {
        join(&self.wx_api, path)
    }
}

/// Session tokens (`login` issues, every user route verifies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    pub secret: Secret,
    pub ttl_secs: u64,
}

impl SessionConfig {
    /// Reads `wxpay_mode` and `session_secret` (required in live mode; in simulator mode
    /// [`SIM_SESSION_SECRET`] when unset). A value that is set is validated in either mode.
    pub fn load<S: VariableSource + ?Sized>(source: &S) -> Result<Self, ConfigProblems> {
        let mut problems = Problems::default();
        let mode = load_mode(source, &mut problems);
        let secret = secret_var(
            source,
            SESSION_SECRET,
            mode,
            SIM_SESSION_SECRET,
            &mut problems,
            check_session_secret,
        );
        match secret {
            Some(secret) => problems.finish(Self {
                secret,
                ttl_secs: SESSION_TTL_SECS,
            }),
            None if problems.0.is_empty() => Ok(Self {
                secret: Secret::new(SIM_SESSION_SECRET),
                ttl_secs: SESSION_TTL_SECS,
            }),
            None => Err(ConfigProblems(problems.0)),
        }
    }
}

/// The admin routes' bearer token (`admin` component).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    pub token: Secret,
}

impl AdminConfig {
    /// Reads `wxpay_mode` and `admin_token` (required in live mode; in simulator mode
    /// [`SIM_ADMIN_TOKEN`] when unset). A value that is set is validated in either mode.
    pub fn load<S: VariableSource + ?Sized>(source: &S) -> Result<Self, ConfigProblems> {
        let mut problems = Problems::default();
        let mode = load_mode(source, &mut problems);
        let token = secret_var(
            source,
            ADMIN_TOKEN,
            mode,
            SIM_ADMIN_TOKEN,
            &mut problems,
            check_admin_token,
        );
        match token {
            Some(token) => problems.finish(Self { token }),
            None if problems.0.is_empty() => Ok(Self {
                token: Secret::new(SIM_ADMIN_TOKEN),
            }),
            None => Err(ConfigProblems(problems.0)),
        }
    }
}

// ---- APIv3 ----------------------------------------------------------------------------------------

// The simulator's APIv3 development keys: the throw-away keys of PROTOCOL.md's APIv3 vectors
// (public, like SIM_API_KEY; refused in live mode). The merchant signs with one pair, the
// simulator plays WeChat Pay with the other.
/// The simulator's APIv3 key.
pub const SIM_APIV3_KEY: &str = "a7cde1ef4e9a0ba9d5e3b2c1f0e9d8c7";
/// The simulator merchant's private key (PKCS#8 PEM).
pub const SIM_MCH_PRIVATE_KEY: &str = include_str!("v3/testdata/merchant_key.pem");
/// Its public key: the simulator verifies the merchant's `Authorization` with it.
pub const SIM_MCH_PUBLIC_KEY: &str = include_str!("v3/testdata/merchant_pub.pem");
/// The simulator merchant's certificate serial.
pub const SIM_MCH_CERT_SERIAL: &str = "1DDE55AD98ED71D6EDD4A4A16996DE7B47773A8C";
/// The simulator's WeChat Pay private key (signs its replies and notifications).
pub const SIM_WECHATPAY_PRIVATE_KEY: &str = include_str!("v3/testdata/wechatpay_key.pem");
/// The simulator's WeChat Pay public key and its id (what the app verifies with).
pub const SIM_WECHATPAY_PUBLIC_KEY: &str = include_str!("v3/testdata/wechatpay_pub.pem");
pub const SIM_WECHATPAY_PUBLIC_KEY_ID: &str = "PUB_KEY_ID_0112345678902025112700000000000001";

/// Which WeChat Pay API the merchant speaks (`wxpay_api_version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ApiVersion {
    #[default]
    V2,
    V3,
}

impl ApiVersion {
    /// `wxpay_api_version`: `v2` (the default when unset) or `v3`.
    pub fn load<S: VariableSource + ?Sized>(source: &S) -> Result<ApiVersion, ConfigProblems> {
        match read(source, WXPAY_API_VERSION).as_deref() {
            None | Some("v2") => Ok(ApiVersion::V2),
            Some("v3") => Ok(ApiVersion::V3),
            Some(other) => Err(ConfigProblems(vec![ConfigProblem::new(
                WXPAY_API_VERSION,
                format!("must be \"v2\" or \"v3\", got {}", quote(other)),
            )])),
        }
    }
}

/// How WeChat's APIv3 signatures are verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WechatVerification {
    /// The WeChat Pay public key (`wxpay_public_key`) under its id (`wxpay_public_key_id`,
    /// `PUB_KEY_ID_…`): merchants registered since 2024 have only this.
    PublicKey(crate::v3::verify::WechatPayKey),
    /// Platform certificates, downloaded from WeChat Pay (neither variable set).
    PlatformCertificates,
}

/// The APIv3 settings (`wxpay_api_version = v3`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V3Config {
    /// Decrypts notifications and platform certificates; 32 bytes.
    pub apiv3_key: Secret,
    /// The merchant API certificate's serial number, uppercase hex (`serial_no` of requests).
    pub mch_cert_serial: String,
    /// Signs requests and paySigns; `None` for a component that only verifies (notify).
    pub merchant_key: Option<crate::v3::sign::MerchantKey>,
    pub verification: WechatVerification,
}

impl V3Config {
    /// The simulator's development keys (the merchant's private key only when `signs`).
    pub fn simulator(signs: bool) -> V3Config {
        let parse = "the simulator's development keys parse";
        V3Config {
            apiv3_key: Secret::new(SIM_APIV3_KEY),
            mch_cert_serial: SIM_MCH_CERT_SERIAL.to_owned(),
            merchant_key: signs
                .then(|| crate::v3::sign::MerchantKey::from_pem(SIM_MCH_PRIVATE_KEY).expect(parse)),
            verification: WechatVerification::PublicKey(crate::v3::verify::WechatPayKey {
                id: SIM_WECHATPAY_PUBLIC_KEY_ID.to_owned(),
                key: crate::v3::verify::PublicKey::from_pem(SIM_WECHATPAY_PUBLIC_KEY).expect(parse),
            }),
        }
    }

    /// Reads the APIv3 variables, naming every problem and never a value. `signs`: whether the
    /// component signs requests (order, admin) and so needs the merchant private key and its
    /// serial; the notify route only verifies and decrypts.
    pub fn load<S: VariableSource + ?Sized>(
        source: &S,
        signs: bool,
    ) -> Result<V3Config, ConfigProblems> {
        let mut problems = Problems::default();
        let apiv3_key = match read(source, WXPAY_APIV3_KEY) {
            None => {
                problems.push(ConfigProblem::missing(WXPAY_APIV3_KEY));
                None
            }
            Some(v) if v == SIM_APIV3_KEY => {
                problems.push(ConfigProblem::new(
                    WXPAY_APIV3_KEY,
                    "is the published simulator value; set a private one in live mode",
                ));
                None
            }
            Some(v) if v.len() == crate::v3::aead::APIV3_KEY_LEN && v.is_ascii() => {
                Some(Secret::new(v))
            }
            Some(_) => {
                problems.push(ConfigProblem::new(
                    WXPAY_APIV3_KEY,
                    "must be exactly 32 bytes (the APIv3 key set in the merchant platform, not the APIv2 key)",
                ));
                None
            }
        };
        let merchant_key = if signs {
            match read(source, WXPAY_MCH_PRIVATE_KEY) {
                None => {
                    problems.push(ConfigProblem::missing(WXPAY_MCH_PRIVATE_KEY));
                    None
                }
                Some(pem) => match crate::v3::sign::MerchantKey::from_pem(&pem) {
                    Ok(key) => Some(key),
                    Err(e) => {
                        problems.push(ConfigProblem::new(WXPAY_MCH_PRIVATE_KEY, e.to_string()));
                        None
                    }
                },
            }
        } else {
            None
        };
        let mch_cert_serial = if signs {
            required(source, WXPAY_MCH_CERT_SERIAL, &mut problems, |v| {
                if !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_hexdigit()) {
                    Ok(v.to_ascii_uppercase())
                } else {
                    Err(format!(
                        "must be the merchant API certificate's serial number (hex, 40 characters), got {}",
                        quote(v)
                    ))
                }
            })
        } else {
            Some(String::new())
        };
        let verification = match (
            read(source, WXPAY_PUBLIC_KEY),
            read(source, WXPAY_PUBLIC_KEY_ID),
        ) {
            (None, None) => Some(WechatVerification::PlatformCertificates),
            (Some(pem), Some(id)) => {
                let key = crate::v3::verify::PublicKey::from_pem(&pem);
                if key.is_err() {
                    problems.push(ConfigProblem::new(
                        WXPAY_PUBLIC_KEY,
                        "must be the WeChat Pay public key, PEM (\"-----BEGIN PUBLIC KEY-----\", pub_key.pem)",
                    ));
                }
                let id_ok = id.starts_with("PUB_KEY_ID_")
                    && id.len() <= 64
                    && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if !id_ok {
                    problems.push(ConfigProblem::new(
                        WXPAY_PUBLIC_KEY_ID,
                        format!(
                            "must be the public key's id, PUB_KEY_ID_…, got {}",
                            quote(&id)
                        ),
                    ));
                }
                match key {
                    Ok(key) if id_ok => Some(WechatVerification::PublicKey(
                        crate::v3::verify::WechatPayKey { id, key },
                    )),
                    _ => None,
                }
            }
            (Some(_), None) => {
                problems.push(ConfigProblem::new(
                    WXPAY_PUBLIC_KEY_ID,
                    "is required with wxpay_public_key (set both, or neither to use platform certificates)",
                ));
                None
            }
            (None, Some(_)) => {
                problems.push(ConfigProblem::new(
                    WXPAY_PUBLIC_KEY,
                    "is required with wxpay_public_key_id (set both, or neither to use platform certificates)",
                ));
                None
            }
        };
        match (apiv3_key, mch_cert_serial, verification) {
            (Some(apiv3_key), Some(mch_cert_serial), Some(verification))
                if problems.0.is_empty() =>
            {
                Ok(V3Config {
                    apiv3_key,
                    mch_cert_serial,
                    merchant_key,
                    verification,
                })
            }
            _ => Err(ConfigProblems(problems.0)),
        }
    }
}

/// Every problem of every section, each once, for `GET /api/health`. The caller's source must be
/// able to read all of [`ALL_VARIABLES`] (a component that did not declare one sees it unset,
/// which is reported as missing in live mode).
pub fn check_all<S: VariableSource + ?Sized>(source: &S) -> Vec<ConfigProblem> {
    let mut all: Vec<ConfigProblem> = Vec::new();
    let sections = [
        Mode::load(source).err(),
        MerchantConfig::load(source).err(),
        LoginConfig::load(source).err(),
        SessionConfig::load(source).err(),
        AdminConfig::load(source).err(),
    ];
    for problem in sections.into_iter().flatten().flat_map(|p| p.0) {
        if !all.contains(&problem) {
            all.push(problem);
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_targets_split_for_wasi_http() {
        let target = |url| request_target(url);
        let t = target("https://api.mch.weixin.qq.com/pay/unifiedorder").unwrap();
        assert!(t.https);
        assert_eq!(t.authority, "api.mch.weixin.qq.com");
        assert_eq!(t.path_and_query, "/pay/unifiedorder");
        let t = target("http://127.0.0.1:8080/sns/jscode2session?appid=wx1&js_code=a%20b").unwrap();
        assert!(!t.https);
        assert_eq!(t.authority, "127.0.0.1:8080");
        assert_eq!(
            t.path_and_query,
            "/sns/jscode2session?appid=wx1&js_code=a%20b"
        );
        assert_eq!(
            target("https://h.example?q=1").unwrap().path_and_query,
            "/?q=1"
        );
        assert_eq!(target("http://self.alt").unwrap().path_and_query, "/");
        for bad in [
            "ftp://h.example/x",
            "https:///x",
            "https://user@h.example/x",
            "https://h.example/a b",
            "https://h.example/x#frag",
            "h.example/x",
        ] {
            assert_eq!(target(bad), None, "{bad}");
        }
    }

    #[test]
    fn refund_notifications_go_beside_the_notify_route() {
        let mut merchant =
            MerchantConfig::simulator_for(SignType::Md5, ApiVersion::V2, Signing::Signs);
        assert_eq!(
            merchant.refund_notify_url().as_deref(),
            Some(SIM_REFUND_NOTIFY_URL)
        );
        merchant.notify_url = "https://shop.example.com/pay/wechat-callback".into();
        assert_eq!(merchant.refund_notify_url(), None);
    }

    const LIVE_API_KEY: &str = "Aa1Bb2Cc3Dd4Ee5Ff6Gg7Hh8Ii9Jj0Kk";
    const LIVE_APP_SECRET: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";
    const LIVE_SESSION_SECRET: &str = "live-session-secret-0123456789abcdef";
    const LIVE_ADMIN_TOKEN: &str = "live-admin-token-xyz";
    const SECRETS: &[&str] = &[
        LIVE_API_KEY,
        LIVE_APP_SECRET,
        LIVE_SESSION_SECRET,
        LIVE_ADMIN_TOKEN,
        SIM_API_KEY,
        SIM_APP_SECRET,
        SIM_SESSION_SECRET,
        SIM_ADMIN_TOKEN,
    ];

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn live() -> BTreeMap<String, String> {
        vars(&[
            (WXPAY_MODE, "live"),
            (WX_APPID, "wx1234567890abcdef"),
            (WX_APP_SECRET, LIVE_APP_SECRET),
            (WXPAY_MCH_ID, "1900000109"),
            (WXPAY_API_KEY, LIVE_API_KEY),
            (
                WXPAY_NOTIFY_URL,
                "https://shop.example.com/api/wxpay/notify",
            ),
            (SESSION_SECRET, LIVE_SESSION_SECRET),
            (ADMIN_TOKEN, LIVE_ADMIN_TOKEN),
        ])
    }

    fn with(
        mut base: BTreeMap<String, String>,
        name: &str,
        value: &str,
    ) -> BTreeMap<String, String> {
        base.insert(name.to_owned(), value.to_owned());
        base
    }

    fn without(mut base: BTreeMap<String, String>, name: &str) -> BTreeMap<String, String> {
        base.remove(name);
        base
    }

    fn assert_no_secret(text: &str) {
        for s in SECRETS {
            assert!(!text.contains(s), "secret leaked into {text:?}");
        }
    }

    /// The problems of a failed load, checked for secrets on the way.
    fn problems<T: fmt::Debug>(r: Result<T, ConfigProblems>) -> ConfigProblems {
        let p = r.expect_err("expected configuration problems");
        assert!(!p.0.is_empty());
        assert_no_secret(&format!("{p} {p:?}"));
        p
    }

    #[test]
    fn empty_source_is_the_simulator() {
        let src = BTreeMap::new();
        assert_eq!(Mode::load(&src), Ok(Mode::Simulator));
        let m = MerchantConfig::load(&src).unwrap();
        assert_eq!(
            m,
            MerchantConfig::simulator_for(SignType::Md5, ApiVersion::V2, Signing::Signs)
        );
        assert_eq!(m.appid, SIM_APPID);
        assert_eq!(m.mch_id, SIM_MCH_ID);
        assert_eq!(m.api_key.as_ref().unwrap().expose(), SIM_API_KEY);
        assert_eq!(m.notify_url, "https://self.alt/api/wxpay/notify");
        assert_eq!(
            m.url("/pay/unifiedorder"),
            "http://self.alt/_sim/pay/unifiedorder"
        );
        let l = LoginConfig::load(&src).unwrap();
        assert_eq!(l.appid, SIM_APPID);
        assert_eq!(l.app_secret.expose(), SIM_APP_SECRET);
        assert_eq!(
            l.url("/sns/jscode2session"),
            "http://self.alt/_sim/sns/jscode2session"
        );
        let s = SessionConfig::load(&src).unwrap();
        assert_eq!(s.secret.expose(), SIM_SESSION_SECRET);
        assert_eq!(s.ttl_secs, SESSION_TTL_SECS);
        assert!(SIM_SESSION_SECRET.len() >= MIN_SESSION_SECRET_LEN);
        let a = AdminConfig::load(&src).unwrap();
        assert_eq!(a.token.expose(), SIM_ADMIN_TOKEN);
        assert!(SIM_ADMIN_TOKEN.len() >= MIN_ADMIN_TOKEN_LEN);
        assert!(check_all(&src).is_empty());
    }

    #[test]
    fn simulator_constants_pass_live_validation_rules() {
        assert!(check_appid(SIM_APPID).is_ok());
        assert!(check_mch_id(SIM_MCH_ID).is_ok());
        assert!(check_api_key(SIM_API_KEY).is_ok());
        assert!(check_app_secret(SIM_APP_SECRET).is_ok());
        assert!(check_admin_token(SIM_ADMIN_TOKEN).is_ok());
    }

    #[test]
    fn empty_strings_are_unset() {
        let src = vars(&[(WXPAY_SIGN_TYPE, ""), (SESSION_SECRET, "")]);
        assert_eq!(Mode::load(&src), Ok(Mode::Simulator));
        assert_eq!(MerchantConfig::load(&src).unwrap().sign_type, SignType::Md5);
        assert_eq!(
            SessionConfig::load(&src).unwrap().secret.expose(),
            SIM_SESSION_SECRET
        );
        let p = problems(MerchantConfig::load(&with(live(), WXPAY_API_KEY, "")));
        assert_eq!(p.0, vec![ConfigProblem::missing(WXPAY_API_KEY)]);
    }

    #[test]
    fn an_empty_mode_is_a_problem_not_the_simulator() {
        for empty in ["", " "] {
            let src = vars(&[(WXPAY_MODE, empty)]);
            let p = problems(Mode::load(&src));
            assert_eq!(p.0[0].variable, WXPAY_MODE);
            assert!(p.0[0].problem.contains("is empty"), "{p}");
            assert!(MerchantConfig::load(&src).is_err());
            assert!(LoginConfig::load(&src).is_err());
            assert!(!check_all(&src).is_empty());
        }
    }

    #[test]
    fn simulator_mode_with_live_credentials_is_a_problem() {
        for name in LIVE_CREDENTIALS {
            let src = vars(&[(WXPAY_MODE, "simulator"), (name, "some-live-value-9f8e7d")]);
            let p = problems(Mode::load(&src));
            assert_eq!(p.0.len(), 1, "{p}");
            assert_eq!(p.0[0].variable, WXPAY_MODE);
            assert!(p.0[0].problem.contains(name), "{p}");
            assert!(!p.to_string().contains("some-live-value-9f8e7d"), "{p}");
            // Every section refuses to run: the routes answer config_error.
            assert!(MerchantConfig::load(&src).is_err());
            assert!(LoginConfig::load(&src).is_err());
            assert!(SessionConfig::load(&src).is_err());
        }
        // The same credentials in live mode are what live mode needs.
        assert!(MerchantConfig::load(&live()).is_ok());
        // Origins, a session secret and an admin token are not live credentials.
        let src = vars(&[
            (WXPAY_MCH_API, "https://api.mch.weixin.qq.com"),
            (WX_API, "https://api.weixin.qq.com"),
            (
                SESSION_SECRET,
                "a session secret of at least thirty-two bytes",
            ),
            (ADMIN_TOKEN, "an-admin-token-of-some-length"),
        ]);
        assert!(check_all(&src).is_empty(), "{:?}", check_all(&src));
    }

    #[test]
    fn simulator_takes_the_sign_type_from_config() {
        let src = vars(&[(WXPAY_SIGN_TYPE, "HMAC-SHA256")]);
        assert_eq!(
            MerchantConfig::load(&src).unwrap().sign_type,
            SignType::HmacSha256
        );
    }

    #[test]
    fn simulator_validates_secrets_that_are_set() {
        let src = vars(&[(SESSION_SECRET, "short"), (ADMIN_TOKEN, "short")]);
        let p = problems(SessionConfig::load(&src));
        assert!(p.mentions(SESSION_SECRET));
        let p = problems(AdminConfig::load(&src));
        assert!(p.mentions(ADMIN_TOKEN));
        assert!(!format!("{p}").contains("short"));
        let ok = vars(&[
            (SESSION_SECRET, LIVE_SESSION_SECRET),
            (ADMIN_TOKEN, LIVE_ADMIN_TOKEN),
        ]);
        assert_eq!(
            SessionConfig::load(&ok).unwrap().secret.expose(),
            LIVE_SESSION_SECRET
        );
        assert_eq!(
            AdminConfig::load(&ok).unwrap().token.expose(),
            LIVE_ADMIN_TOKEN
        );
    }

    #[test]
    fn live_happy_path() {
        let src = live();
        assert_eq!(Mode::load(&src), Ok(Mode::Live));
        let m = MerchantConfig::load(&src).unwrap();
        assert_eq!(m.mode, Mode::Live);
        assert_eq!(m.appid, "wx1234567890abcdef");
        assert_eq!(m.mch_id, "1900000109");
        assert_eq!(m.api_key.as_ref().unwrap().expose(), LIVE_API_KEY);
        assert_eq!(m.sign_type, SignType::Md5);
        assert_eq!(m.notify_url, "https://shop.example.com/api/wxpay/notify");
        assert_eq!(m.mch_api, DEFAULT_MCH_API);
        assert_eq!(
            m.url("/pay/orderquery"),
            "https://api.mch.weixin.qq.com/pay/orderquery"
        );
        let l = LoginConfig::load(&src).unwrap();
        assert_eq!(l.wx_api, DEFAULT_WX_API);
        assert_eq!(l.app_secret.expose(), LIVE_APP_SECRET);
        assert_eq!(
            SessionConfig::load(&src).unwrap().secret.expose(),
            LIVE_SESSION_SECRET
        );
        assert_eq!(
            AdminConfig::load(&src).unwrap().token.expose(),
            LIVE_ADMIN_TOKEN
        );
        assert!(check_all(&src).is_empty());
    }

    #[test]
    fn live_origins_may_point_at_a_fake() {
        let src = with(
            with(live(), WXPAY_MCH_API, "http://127.0.0.1:8089/"),
            WX_API,
            "http://[::1]:9000",
        );
        assert_eq!(
            MerchantConfig::load(&src).unwrap().mch_api,
            "http://127.0.0.1:8089"
        );
        assert_eq!(LoginConfig::load(&src).unwrap().wx_api, "http://[::1]:9000");
        let src = with(
            live(),
            WXPAY_MCH_API,
            "https://fake-wechat.staging.example:8443",
        );
        assert_eq!(
            MerchantConfig::load(&src).unwrap().url("/pay/closeorder"),
            "https://fake-wechat.staging.example:8443/pay/closeorder"
        );
    }

    #[test]
    fn live_requires_every_credential_and_reports_them_together() {
        let src = vars(&[(WXPAY_MODE, "live")]);
        let p = problems(MerchantConfig::load(&src));
        for v in [WX_APPID, WXPAY_MCH_ID, WXPAY_API_KEY, WXPAY_NOTIFY_URL] {
            assert!(p.mentions(v), "{v} missing from {p}");
        }
        assert_eq!(p.0.len(), 4);
        let text = p.to_string();
        assert!(
            text.contains("wx_appid: is required in live mode"),
            "{text}"
        );
        let p = problems(LoginConfig::load(&src));
        assert!(p.mentions(WX_APPID) && p.mentions(WX_APP_SECRET));
        assert!(problems(SessionConfig::load(&src)).mentions(SESSION_SECRET));
        assert!(problems(AdminConfig::load(&src)).mentions(ADMIN_TOKEN));
        let all = check_all(&src);
        // wx_appid is needed by two sections but listed once.
        assert_eq!(all.iter().filter(|p| p.variable == WX_APPID).count(), 1);
        assert_eq!(all.len(), 7);
    }

    #[test]
    fn each_missing_live_credential_is_named() {
        for v in [WX_APPID, WXPAY_MCH_ID, WXPAY_API_KEY, WXPAY_NOTIFY_URL] {
            let p = problems(MerchantConfig::load(&without(live(), v)));
            assert_eq!(p.0, vec![ConfigProblem::missing(v)]);
        }
        let p = problems(LoginConfig::load(&without(live(), WX_APP_SECRET)));
        assert_eq!(p.0, vec![ConfigProblem::missing(WX_APP_SECRET)]);
    }

    #[test]
    fn bad_mode() {
        let src = vars(&[(WXPAY_MODE, "Live")]);
        let p = problems(Mode::load(&src));
        assert_eq!(p.0.len(), 1);
        assert_eq!(p.0[0].variable, WXPAY_MODE);
        assert!(p.0[0].problem.contains("\"Live\""), "{}", p.0[0].problem);
        // Every section refuses to load: no silent fallback to the simulator.
        assert!(problems(MerchantConfig::load(&src)).mentions(WXPAY_MODE));
        assert!(problems(LoginConfig::load(&src)).mentions(WXPAY_MODE));
        assert!(problems(SessionConfig::load(&src)).mentions(WXPAY_MODE));
        assert!(problems(AdminConfig::load(&src)).mentions(WXPAY_MODE));
        assert_eq!(check_all(&src).len(), 1);
        // Even with full live credentials present.
        assert!(MerchantConfig::load(&with(live(), WXPAY_MODE, "production")).is_err());
    }

    #[test]
    fn bad_sign_type() {
        for bad in ["md5", "SHA256", "HMAC_SHA256", " MD5"] {
            let p = problems(MerchantConfig::load(&with(live(), WXPAY_SIGN_TYPE, bad)));
            assert_eq!(p.0.len(), 1);
            assert_eq!(p.0[0].variable, WXPAY_SIGN_TYPE);
            assert!(p.0[0].problem.contains("HMAC-SHA256"));
            // Also in simulator mode.
            assert!(
                problems(MerchantConfig::load(&vars(&[(WXPAY_SIGN_TYPE, bad)])))
                    .mentions(WXPAY_SIGN_TYPE)
            );
        }
        let ok = MerchantConfig::load(&with(live(), WXPAY_SIGN_TYPE, "HMAC-SHA256")).unwrap();
        assert_eq!(ok.sign_type, SignType::HmacSha256);
        let ok = MerchantConfig::load(&with(live(), WXPAY_SIGN_TYPE, "MD5")).unwrap();
        assert_eq!(ok.sign_type, SignType::Md5);
    }

    #[test]
    fn notify_url_rules() {
        let bad = [
            ("http://shop.example.com/api/wxpay/notify", "https"),
            ("https://shop.example.com/api/wxpay/notify?x=1", "query"),
            ("https://shop.example.com/notify#frag", "fragment"),
            ("/api/wxpay/notify", "absolute"),
            ("shop.example.com/notify", "absolute"),
            ("ftp://shop.example.com/notify", "absolute"),
            ("HTTPS://shop.example.com/notify", "absolute"),
            ("https:///notify", "host"),
            ("https://user:pw@shop.example.com/notify", "user info"),
            ("https://shop.example.com:99999/notify", "port"),
            ("https://shop.example.com:/notify", "port"),
            ("https://shop example.com/notify", "whitespace"),
            ("https://shop.example.com/notify\n", "whitespace"),
        ];
        for (url, why) in bad {
            let p = problems(MerchantConfig::load(&with(live(), WXPAY_NOTIFY_URL, url)));
            assert_eq!(p.0.len(), 1, "{url}");
            assert_eq!(p.0[0].variable, WXPAY_NOTIFY_URL);
            assert!(p.0[0].problem.contains(why), "{url}: {}", p.0[0].problem);
        }
        let long = format!(
            "https://shop.example.com/{}",
            "a".repeat(MAX_NOTIFY_URL_LEN)
        );
        let p = problems(MerchantConfig::load(&with(live(), WXPAY_NOTIFY_URL, &long)));
        assert!(p.0[0].problem.contains("256"));
        let exactly = format!("https://e.cn/{}", "a".repeat(MAX_NOTIFY_URL_LEN - 13));
        assert_eq!(exactly.len(), MAX_NOTIFY_URL_LEN);
        assert!(MerchantConfig::load(&with(live(), WXPAY_NOTIFY_URL, &exactly)).is_ok());
        for ok in [
            "https://shop.example.com/api/wxpay/notify",
            "https://shop.example.com",
            "https://shop.example.com:8443/n",
            "https://[2001:db8::1]/notify",
        ] {
            assert!(
                MerchantConfig::load(&with(live(), WXPAY_NOTIFY_URL, ok)).is_ok(),
                "{ok}"
            );
        }
    }

    #[test]
    fn origin_rules() {
        for bad in [
            "https://api.mch.weixin.qq.com/pay",
            "https://api.mch.weixin.qq.com?x",
            "https://api.mch.weixin.qq.com#x",
            "api.mch.weixin.qq.com",
            "https://",
            "https://[::1",
            "https://a.b:0",
            // Plain http leaves the machine: refused in live mode.
            "http://api.mch.weixin.qq.com",
            "http://10.0.0.7:8080",
            "http://127.example.com",
        ] {
            let p = problems(MerchantConfig::load(&with(live(), WXPAY_MCH_API, bad)));
            assert_eq!(p.0.len(), 1, "{bad}");
            assert_eq!(p.0[0].variable, WXPAY_MCH_API);
            let p = problems(LoginConfig::load(&with(live(), WX_API, bad)));
            assert_eq!(p.0[0].variable, WX_API);
        }
    }

    #[test]
    fn plain_http_origins_only_to_loopback() {
        for ok in [
            "http://127.0.0.1:8080",
            "http://127.1.2.3",
            "http://localhost:9",
            "http://[::1]:8080",
            "https://api.mch.weixin.qq.com",
        ] {
            let m = MerchantConfig::load(&with(live(), WXPAY_MCH_API, ok)).unwrap();
            assert_eq!(m.mch_api, ok);
            assert!(LoginConfig::load(&with(live(), WX_API, ok)).is_ok(), "{ok}");
        }
        let p = problems(MerchantConfig::load(&with(
            live(),
            WXPAY_MCH_API,
            "http://api.mch.weixin.qq.com",
        )));
        assert!(p.0[0].problem.contains("must be https"), "{p}");
    }

    #[test]
    fn appid_and_mch_id_rules() {
        for bad in [
            "wx123",
            "xx1234567890abcdef",
            "wx1234567890abcde!",
            "wx1234567890abcdef0",
        ] {
            let p = problems(MerchantConfig::load(&with(live(), WX_APPID, bad)));
            assert_eq!(p.0.len(), 1);
            assert_eq!(p.0[0].variable, WX_APPID);
            assert!(p.0[0].problem.contains(&format!("{bad:?}")));
        }
        for bad in ["19000001O9", "-1", " 1900000109", &"1".repeat(33)] {
            let p = problems(MerchantConfig::load(&with(live(), WXPAY_MCH_ID, bad)));
            assert_eq!(p.0.len(), 1);
            assert_eq!(p.0[0].variable, WXPAY_MCH_ID);
        }
    }

    #[test]
    fn api_key_rules_never_quote_the_key() {
        let short = "Aa1Bb2Cc3Dd4Ee5Ff6Gg7Hh8Ii9Jj0K";
        let long = "Aa1Bb2Cc3Dd4Ee5Ff6Gg7Hh8Ii9Jj0KkL";
        let newline = "Aa1Bb2Cc3Dd4Ee5Ff6Gg7Hh8Ii9Jj0K\n";
        let symbol = "Aa1Bb2Cc3Dd4Ee5Ff6Gg7Hh8Ii9Jj0K!";
        for bad in [short, long, newline, symbol] {
            let p = problems(MerchantConfig::load(&with(live(), WXPAY_API_KEY, bad)));
            assert_eq!(p.0.len(), 1);
            assert_eq!(p.0[0].variable, WXPAY_API_KEY);
            assert!(p.0[0].problem.contains("32"));
            let text = format!("{p} {p:?}");
            assert!(!text.contains(bad.trim()), "{text}");
        }
        let p = problems(MerchantConfig::load(&with(live(), WXPAY_API_KEY, newline)));
        assert!(p.0[0].problem.contains("whitespace"));
    }

    #[test]
    fn live_refuses_published_simulator_secrets() {
        for (var, value) in [
            (WXPAY_API_KEY, SIM_API_KEY),
            (WX_APP_SECRET, SIM_APP_SECRET),
            (SESSION_SECRET, SIM_SESSION_SECRET),
            (ADMIN_TOKEN, SIM_ADMIN_TOKEN),
        ] {
            let src = with(live(), var, value);
            let all = check_all(&src);
            assert_eq!(all.len(), 1, "{var}: {all:?}");
            assert_eq!(all[0].variable, var);
            assert!(all[0].problem.contains("simulator"));
        }
    }

    #[test]
    fn session_and_admin_rules() {
        let p = problems(SessionConfig::load(&with(
            live(),
            SESSION_SECRET,
            &"s".repeat(31),
        )));
        assert_eq!(p.0[0].variable, SESSION_SECRET);
        assert!(p.0[0].problem.contains("32"));
        assert!(SessionConfig::load(&with(live(), SESSION_SECRET, &"s".repeat(32))).is_ok());
        let p = problems(AdminConfig::load(&with(
            live(),
            ADMIN_TOKEN,
            &"t".repeat(15),
        )));
        assert_eq!(p.0[0].variable, ADMIN_TOKEN);
        assert!(AdminConfig::load(&with(live(), ADMIN_TOKEN, &"t".repeat(16))).is_ok());
        let p = problems(AdminConfig::load(&with(
            live(),
            ADMIN_TOKEN,
            "token with spaces inside",
        )));
        assert!(p.0[0].problem.contains("whitespace"));
    }

    #[test]
    fn several_problems_are_reported_together() {
        let src = with(
            with(
                with(
                    with(live(), WXPAY_SIGN_TYPE, "SHA1"),
                    WXPAY_NOTIFY_URL,
                    "http://x.cn/n?a=b",
                ),
                WXPAY_API_KEY,
                "short",
            ),
            WX_APPID,
            "",
        );
        let p = problems(MerchantConfig::load(&src));
        let vars: Vec<_> = p.iter().map(|p| p.variable).collect();
        assert_eq!(
            vars,
            vec![WXPAY_SIGN_TYPE, WX_APPID, WXPAY_API_KEY, WXPAY_NOTIFY_URL]
        );
        let text = p.to_string();
        for v in vars {
            assert!(text.contains(v), "{text}");
        }
        assert!(!text.contains("short"));
    }

    #[test]
    fn configs_never_print_secrets() {
        let src = live();
        let text = format!(
            "{:?} {:?} {:?} {:?} {:?} {:?}",
            MerchantConfig::load(&src).unwrap(),
            LoginConfig::load(&src).unwrap(),
            SessionConfig::load(&src).unwrap(),
            AdminConfig::load(&src).unwrap(),
            MerchantConfig::simulator(SignType::Md5),
            LoginConfig::simulator(),
        );
        assert_no_secret(&text);
        assert!(text.contains("wx1234567890abcdef")); // non-secrets are visible
    }

    #[test]
    fn sources() {
        let map: HashMap<String, String> = [(WXPAY_MODE.to_owned(), "live".to_owned())]
            .into_iter()
            .collect();
        assert_eq!(Mode::load(&map), Ok(Mode::Live));
        let closure = |name: &str| (name == WXPAY_MODE).then(|| "live".to_owned());
        assert_eq!(Mode::load(&closure), Ok(Mode::Live));
        let dynamic: &dyn VariableSource = &map;
        assert_eq!(Mode::load(dynamic), Ok(Mode::Live));
    }

    #[test]
    fn mode_spelling() {
        assert_eq!(
            serde_json::to_string(&Mode::Simulator).unwrap(),
            "\"simulator\""
        );
        assert_eq!(serde_json::to_string(&Mode::Live).unwrap(), "\"live\"");
        assert_eq!(
            serde_json::from_str::<Mode>("\"live\"").unwrap(),
            Mode::Live
        );
        assert!(serde_json::from_str::<Mode>("\"Live\"").is_err());
        assert_eq!(Mode::Live.to_string(), "live");
        assert_eq!("simulator".parse::<Mode>(), Ok(Mode::Simulator));
        assert_eq!(Mode::default(), Mode::Simulator);
    }

    #[test]
    fn long_bad_values_are_shortened() {
        let huge = "x".repeat(10_000);
        let p = problems(Mode::load(&vars(&[(WXPAY_MODE, &huge)])));
        assert!(p.to_string().len() < 200);
    }

    #[test]
    fn variable_names_are_spin_names() {
        for v in ALL_VARIABLES {
            assert!(
                v.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            );
        }
    }

    fn v3(extra: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut src = vars(&[
            (WXPAY_API_VERSION, "v3"),
            (WXPAY_APIV3_KEY, "b8def2f05f1b1cb0e6f4c3d2e1f0a9d8"),
            (WXPAY_MCH_PRIVATE_KEY, crate::v3::vectors::MERCHANT_KEY),
            (
                WXPAY_MCH_CERT_SERIAL,
                "1dde55ad98ed71d6edd4a4a16996de7b47773a8c",
            ),
            (WXPAY_PUBLIC_KEY, crate::v3::vectors::WECHATPAY_PUB),
            (
                WXPAY_PUBLIC_KEY_ID,
                "PUB_KEY_ID_0112345678902025112700000000000001",
            ),
        ]);
        for (k, v) in extra {
            src.insert((*k).to_owned(), (*v).to_owned());
        }
        src
    }

    #[test]
    fn api_version() {
        assert_eq!(
            ApiVersion::load(&BTreeMap::<String, String>::new()),
            Ok(ApiVersion::V2)
        );
        assert_eq!(
            ApiVersion::load(&vars(&[(WXPAY_API_VERSION, "v3")])),
            Ok(ApiVersion::V3)
        );
        let p = problems(ApiVersion::load(&vars(&[(WXPAY_API_VERSION, "3")])));
        assert_eq!(p.0[0].variable, WXPAY_API_VERSION);
    }

    #[test]
    fn merchant_sections_load_each_version_with_the_keys_it_needs() {
        let with = |extra: &[(&str, &str)], drop: &[&str]| {
            let mut src = live();
            for (k, v) in extra {
                src.insert((*k).to_owned(), (*v).to_owned());
            }
            for k in drop {
                src.remove(*k);
            }
            src
        };
        let v3_live = |drop: &[&str]| {
            let mut src = live();
            src.extend(v3(&[]));
            for k in drop {
                src.remove(*k);
            }
            src
        };
        // APIv3 without the APIv2 key: fine, and APIv2 notifications are then not accepted.
        let m = MerchantConfig::load(&v3_live(&[WXPAY_API_KEY])).unwrap();
        assert_eq!(m.api_version, ApiVersion::V3);
        assert!(m.api_key.is_none() && m.v2_key().is_err());
        assert!(m.v3.as_ref().unwrap().merchant_key.is_some());
        // The notify route does not read the private key; pay-sign no APIv3 key at all.
        let notify = v3_live(&[WXPAY_MCH_PRIVATE_KEY, WXPAY_MCH_CERT_SERIAL]);
        let m = MerchantConfig::load_for(&notify, Signing::VerifiesOnly).unwrap();
        assert!(m.v3.as_ref().unwrap().merchant_key.is_none());
        let resign = with(&[(WXPAY_API_VERSION, "v3")], &[]);
        assert!(
            MerchantConfig::load_for(&resign, Signing::NoV3Keys)
                .unwrap()
                .v3
                .is_none()
        );
        // APIv3 named but not configured: every missing variable by name.
        let p = problems(MerchantConfig::load(&with(
            &[(WXPAY_API_VERSION, "v3")],
            &[],
        )));
        for name in [
            WXPAY_APIV3_KEY,
            WXPAY_MCH_PRIVATE_KEY,
            WXPAY_MCH_CERT_SERIAL,
        ] {
            assert!(p.mentions(name), "{name}: {p}");
        }
        // APIv2 with an APIv3 key set: APIv3 notifications are verified too (no signing key).
        let v2 = with(
            &[
                (WXPAY_APIV3_KEY, "b8def2f05f1b1cb0e6f4c3d2e1f0a9d8"),
                (WXPAY_PUBLIC_KEY, crate::v3::vectors::WECHATPAY_PUB),
                (
                    WXPAY_PUBLIC_KEY_ID,
                    "PUB_KEY_ID_0112345678902025112700000000000001",
                ),
            ],
            &[],
        );
        let m = MerchantConfig::load(&v2).unwrap();
        assert_eq!(m.api_version, ApiVersion::V2);
        assert!(m.v3.as_ref().unwrap().merchant_key.is_none());
        // The simulator's published APIv3 key is refused in live mode.
        let p = problems(MerchantConfig::load(&with(
            &[(WXPAY_APIV3_KEY, SIM_APIV3_KEY)],
            &[],
        )));
        assert!(p.mentions(WXPAY_APIV3_KEY), "{p}");
        // In simulator mode APIv3 runs on the development keys, the private key only to sign.
        let sim = vars(&[(WXPAY_API_VERSION, "v3")]);
        let m = MerchantConfig::load(&sim).unwrap();
        assert!(m.v3.as_ref().unwrap().merchant_key.is_some());
        let m = MerchantConfig::load_for(&sim, Signing::VerifiesOnly).unwrap();
        assert!(m.v3.as_ref().unwrap().merchant_key.is_none());
    }

    #[test]
    fn v3_settings_load_in_both_key_modes() {
        let c = V3Config::load(&v3(&[]), true).unwrap();
        assert_eq!(
            c.mch_cert_serial,
            "1DDE55AD98ED71D6EDD4A4A16996DE7B47773A8C"
        );
        assert!(c.merchant_key.is_some());
        assert!(
            matches!(&c.verification, WechatVerification::PublicKey(k) if k.id.starts_with("PUB_KEY_ID_"))
        );
        // Keys as environment variables carry them: `\n`-escaped.
        let escaped = crate::v3::vectors::MERCHANT_KEY.replace('\n', "\\n");
        assert!(V3Config::load(&v3(&[(WXPAY_MCH_PRIVATE_KEY, &escaped)]), true).is_ok());
        // Neither public key variable: platform certificates.
        let mut src = v3(&[]);
        src.remove(WXPAY_PUBLIC_KEY);
        src.remove(WXPAY_PUBLIC_KEY_ID);
        let c = V3Config::load(&src, true).unwrap();
        assert!(matches!(
            c.verification,
            WechatVerification::PlatformCertificates
        ));
        // The notify route needs no private key nor its serial.
        let mut src = v3(&[]);
        src.remove(WXPAY_MCH_PRIVATE_KEY);
        src.remove(WXPAY_MCH_CERT_SERIAL);
        let c = V3Config::load(&src, false).unwrap();
        assert!(c.merchant_key.is_none());
    }

    #[test]
    fn v3_problems_are_named_and_never_quote_secrets() {
        let secret_key = crate::v3::vectors::MERCHANT_KEY;
        for (name, value, mentions) in [
            (WXPAY_APIV3_KEY, "too-short", "32 bytes"),
            (
                WXPAY_MCH_PRIVATE_KEY,
                "-----BEGIN PRIVATE KEY-----\nMIIsecret\n-----END PRIVATE KEY-----",
                "PKCS#8",
            ),
            (
                WXPAY_MCH_PRIVATE_KEY,
                crate::v3::vectors::MERCHANT_PUB,
                "PKCS#8",
            ),
            (WXPAY_MCH_CERT_SERIAL, "not-hex", "serial"),
            (WXPAY_PUBLIC_KEY, "nope", "public key"),
            (WXPAY_PUBLIC_KEY_ID, "KEY_1", "PUB_KEY_ID_"),
        ] {
            let p = problems(V3Config::load(&v3(&[(name, value)]), true));
            assert_eq!(p.0.len(), 1, "{name}: {p}");
            assert_eq!(p.0[0].variable, name);
            assert!(p.0[0].problem.contains(mentions), "{name}: {p}");
            let text = p.to_string();
            assert!(
                !text.contains("MIIsecret") && !text.contains(&secret_key[30..60]),
                "{text}"
            );
            assert!(!text.contains("b8def2f05f1b1cb0e6f4c3d2e1f0a9d8"), "{text}");
        }
        // One of the pair alone.
        let mut src = v3(&[]);
        src.remove(WXPAY_PUBLIC_KEY_ID);
        let p = problems(V3Config::load(&src, true));
        assert_eq!(p.0[0].variable, WXPAY_PUBLIC_KEY_ID);
        // Everything missing: each named.
        let p = problems(V3Config::load(&vars(&[(WXPAY_API_VERSION, "v3")]), true));
        let named: Vec<&str> = p.0.iter().map(|p| p.variable).collect();
        assert_eq!(
            named,
            [
                WXPAY_APIV3_KEY,
                WXPAY_MCH_PRIVATE_KEY,
                WXPAY_MCH_CERT_SERIAL
            ]
        );
    }
}
