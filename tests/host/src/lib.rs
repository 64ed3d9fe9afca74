//! Embedded Spin-like test host (issue 3).
