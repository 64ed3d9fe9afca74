//! A secret value (API key, app secret, session secret, admin token) that never prints itself.

use std::fmt;

/// Holds a secret. `Debug` and `Display` are redacted so a secret cannot reach a log or an error
/// message by accident; read it with [`Secret::expose`] only where it is used.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself: for signing and comparing only, never for output.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time equality with a presented value (e.g. an admin bearer token). The SHA-256
    /// digests of both are compared, not the values: a byte compare stops at once on a length
    /// difference, which would tell a caller the secret's length by timing.
    pub fn matches(&self, presented: &str) -> bool {
        use sha2::{Digest, Sha256};
        use subtle::ConstantTimeEq;
        let ours = Sha256::digest(self.0.as_bytes());
        let theirs = Sha256::digest(presented.as_bytes());
        ours.as_slice().ct_eq(theirs.as_slice()).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_its_value() {
        let s = Secret::new("192006250b4c09247ec02edce69f6a2d");
        assert_eq!(format!("{s:?} {s}"), "Secret(***) ***");
    }

    #[test]
    fn matches_only_the_same_value() {
        let s = Secret::new("admin-token");
        assert!(s.matches("admin-token"));
        assert!(!s.matches("admin-toke"));
        assert!(!s.matches("admin-tokenx"));
        assert!(!s.matches(""));
    }
}
