//! The real app (`spin.toml` at the repository root) in the embedded host, with WeChat played
//! by a fake server on 127.0.0.1 that checks our signatures like WeChat does (issue 4). One test
//! binary, so the components are built and compiled once.
//!
//! Every test ends with [`support::World::assert_logs_clean`]: nothing the components printed
//! contains a key, a secret, a token, the session_key or a full openid.

mod admin;
mod contract;
mod fake_v3;
mod faults;
mod flow;
mod input;
mod mtls;
mod notify;
mod refunds;
mod support;
mod v3;
