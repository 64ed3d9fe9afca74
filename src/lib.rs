//! Sans-IO core of spin-wxpay: WeChat Pay APIv2 and APIv3 for mini programs.
//!
//! Builds and parses bytes and decides state transitions; callers (the Spin components, the
//! tests) perform the I/O. See `docs/ARCHITECTURE.md` §3.

pub mod config;
pub mod flows;
pub mod ledger;
pub mod money;
pub mod order;
pub mod pay_params;
pub mod payment;
pub mod refund;
pub mod secret;
pub mod session;
pub mod sim;
#[cfg(feature = "spin")]
pub mod spin;
pub mod time;
pub mod v2;
pub mod v3;
