//! Stateless session tokens: `POST /api/login` hands one out, every user route checks it.
//!
//! A token binds an openid to an expiry with HMAC-SHA256 under the `session_secret`, so the
//! backend needs no session store and the openid never comes from the client (docs/ARCHITECTURE.md §1).
//!
//! Format, version 1 (ASCII, at most [`MAX_TOKEN_LEN`] bytes):
//!
//! ```text
//! v1.<openid as lowercase hex>.<expires_at, Unix seconds, canonical decimal>.<mac, 64 lowercase hex>
//! ```
//!
//! The MAC covers everything before the last `.` (`v1.<openid-hex>.<expires_at>`), so the
//! version is authenticated too. The openid is hex-encoded because nothing guarantees its
//! alphabet; hex keeps the token free of `.` and safe in an `Authorization` header. Every part
//! has exactly one accepted spelling (lowercase hex, no leading zeros), so a valid token cannot be
//! rewritten into another string that also verifies.
//!
//! Time is passed in by the caller: the core never reads a clock.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use thiserror::Error;

use crate::secret::Secret;

/// The version prefix of tokens this module issues.
pub const TOKEN_VERSION: &str = "v1";

/// Longest openid a token is issued for, in bytes. WeChat openids are 28 characters today.
pub const MAX_OPENID_LEN: usize = 128;

/// Tokens longer than this are refused before any parsing (a v1 token is at most
/// 2 + 1 + 256 + 1 + 20 + 1 + 64 = 345 bytes).
pub const MAX_TOKEN_LEN: usize = 512;

const MAC_HEX_LEN: usize = 64;
const MAX_EXPIRY_DIGITS: usize = 20; // u64::MAX has 20 digits

type HmacSha256 = Hmac<Sha256>;

/// A verified session: whose it is and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub openid: String,
    /// Unix seconds; the token is refused from this instant on.
    pub expires_at: u64,
}

impl Session {
    /// Seconds left at `now` (0 once expired).
    pub fn expires_in(&self, now: u64) -> u64 {
        self.expires_at.saturating_sub(now)
    }
}

/// Why a token could not be issued or was refused. No variant carries the token, the openid or
/// the secret, so an error can be logged or returned as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SessionError {
    /// Issuing: the openid is empty or longer than [`MAX_OPENID_LEN`] bytes.
    #[error("openid must be 1..={MAX_OPENID_LEN} bytes")]
    InvalidOpenid,
    /// Issuing: the lifetime is zero or `now + ttl` overflows.
    #[error("session lifetime must be positive and end before the end of time")]
    InvalidTtl,
    /// The session secret is empty: configuration is broken, refuse rather than sign with it.
    #[error("session secret is empty")]
    MissingSecret,
    /// Not a token of this format: wrong shape, version, encoding or size.
    #[error("session token is malformed")]
    Malformed,
    /// Well-formed, but the MAC does not match: altered, or signed with another secret.
    #[error("session token signature does not match")]
    Tampered,
    /// Authentic but past its expiry.
    #[error("session token has expired")]
    Expired,
}

fn mac_over(secret: &Secret, body: &str) -> Result<HmacSha256, SessionError> {
    let key = secret.expose().as_bytes();
    if key.is_empty() {
        return Err(SessionError::MissingSecret);
    }
    // HMAC accepts keys of any length; the error arm is unreachable but costs nothing.
    let mut mac = HmacSha256::new_from_slice(key).map_err(|_| SessionError::MissingSecret)?;
    mac.update(body.as_bytes());
    Ok(mac)
}

/// Issues a token for `openid`, valid from `now` for `ttl_secs` seconds.
pub fn issue(
    secret: &Secret,
    openid: &str,
    now: u64,
    ttl_secs: u64,
) -> Result<String, SessionError> {
    if openid.is_empty() || openid.len() > MAX_OPENID_LEN {
        return Err(SessionError::InvalidOpenid);
    }
    if ttl_secs == 0 {
        return Err(SessionError::InvalidTtl);
    }
    let expires_at = now.checked_add(ttl_secs).ok_or(SessionError::InvalidTtl)?;
    let body = format!("{TOKEN_VERSION}.{}.{expires_at}", hex::encode(openid));
    let tag = mac_over(secret, &body)?.finalize().into_bytes();
    Ok(format!("{body}.{}", hex::encode(tag)))
}

/// Verifies a token at `now`: shape first, then the MAC, and only then the (now trusted) expiry.
pub fn verify(secret: &Secret, token: &str, now: u64) -> Result<Session, SessionError> {
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(SessionError::Malformed);
    }
    let (body, mac_hex) = token.rsplit_once('.').ok_or(SessionError::Malformed)?;
    let mut parts = body.split('.');
    let (Some(version), Some(openid_hex), Some(expiry), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SessionError::Malformed);
    };
    if version != TOKEN_VERSION
        || openid_hex.is_empty()
        || openid_hex.len() > 2 * MAX_OPENID_LEN
        || !is_lower_hex(openid_hex)
        || mac_hex.len() != MAC_HEX_LEN
        || !is_lower_hex(mac_hex)
    {
        return Err(SessionError::Malformed);
    }
    let expires_at = parse_canonical_u64(expiry).ok_or(SessionError::Malformed)?;
    let openid_bytes = hex::decode(openid_hex).map_err(|_| SessionError::Malformed)?;
    let tag = hex::decode(mac_hex).map_err(|_| SessionError::Malformed)?;

    // Constant-time comparison inside `verify_slice`.
    mac_over(secret, body)?
        .verify_slice(&tag)
        .map_err(|_| SessionError::Tampered)?;

    // Only tokens we issued get here, and we issue only for UTF-8 openids.
    let openid = String::from_utf8(openid_bytes).map_err(|_| SessionError::Malformed)?;
    if now >= expires_at {
        return Err(SessionError::Expired);
    }
    Ok(Session { openid, expires_at })
}

/// Even-length lowercase hex (the only spelling `hex::encode` produces).
fn is_lower_hex(s: &str) -> bool {
    s.len().is_multiple_of(2) && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A decimal `u64` with no sign, no leading zero (except `0` itself), no overflow.
fn parse_canonical_u64(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.is_empty()
        || b.len() > MAX_EXPIRY_DIGITS
        || !b.iter().all(u8::is_ascii_digit)
        || (b.len() > 1 && b[0] == b'0')
    {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const OPENID: &str = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o";
    const NOW: u64 = 1_700_000_000;
    const TTL: u64 = 7200;

    fn secret() -> Secret {
        Secret::new("a session secret of at least thirty-two bytes")
    }

    fn token() -> String {
        issue(&secret(), OPENID, NOW, TTL).unwrap()
    }

    /// Rebuilds a token from its four parts.
    fn parts(t: &str) -> Vec<String> {
        t.split('.').map(str::to_owned).collect()
    }

    #[test]
    fn round_trip() {
        let t = token();
        assert!(t.starts_with("v1."));
        assert!(t.len() <= MAX_TOKEN_LEN);
        let s = verify(&secret(), &t, NOW).unwrap();
        assert_eq!(
            s,
            Session {
                openid: OPENID.to_owned(),
                expires_at: NOW + TTL
            }
        );
        assert_eq!(s.expires_in(NOW), TTL);
        assert_eq!(s.expires_in(NOW + TTL + 5), 0);
    }

    #[test]
    fn deterministic_and_documented_shape() {
        let t = token();
        assert_eq!(t, token());
        let p = parts(&t);
        assert_eq!(p.len(), 4);
        assert_eq!(p[0], "v1");
        assert_eq!(hex::decode(&p[1]).unwrap(), OPENID.as_bytes());
        assert_eq!(p[2], (NOW + TTL).to_string());
        assert_eq!(p[3].len(), 64);
        // The MAC is HMAC-SHA256 over "v1.<openid-hex>.<exp>".
        let body = format!("v1.{}.{}", p[1], p[2]);
        let mut mac = HmacSha256::new_from_slice(secret().expose().as_bytes()).unwrap();
        mac.update(body.as_bytes());
        assert_eq!(hex::encode(mac.finalize().into_bytes()), p[3]);
    }

    #[test]
    fn expiry_boundary() {
        let t = token();
        assert!(verify(&secret(), &t, NOW + TTL - 1).is_ok());
        assert_eq!(verify(&secret(), &t, NOW + TTL), Err(SessionError::Expired));
        assert_eq!(verify(&secret(), &t, u64::MAX), Err(SessionError::Expired));
        // Verification before the issue time is fine (clock skew between instances).
        assert!(verify(&secret(), &t, 0).is_ok());
    }

    #[test]
    fn another_secret_is_tampered() {
        let t = token();
        assert_eq!(
            verify(
                &Secret::new("another secret of at least thirty-two bytes"),
                &t,
                NOW
            ),
            Err(SessionError::Tampered)
        );
    }

    #[test]
    fn tampered_openid() {
        let mut p = parts(&token());
        p[1] = hex::encode("oUpF8uMuAJO_M2pxb1Q9zNjWeS6p");
        assert_eq!(
            verify(&secret(), &p.join("."), NOW),
            Err(SessionError::Tampered)
        );
    }

    #[test]
    fn tampered_expiry() {
        let mut p = parts(&token());
        p[2] = (NOW + TTL * 1000).to_string();
        assert_eq!(
            verify(&secret(), &p.join("."), NOW),
            Err(SessionError::Tampered)
        );
        // The MAC is checked before the expiry: an extended expired token is Tampered, not
        // Expired, and a shortened one is not trusted either.
        p[2] = "1".to_owned();
        assert_eq!(
            verify(&secret(), &p.join("."), NOW),
            Err(SessionError::Tampered)
        );
    }

    #[test]
    fn tampered_mac() {
        let mut p = parts(&token());
        p[3] = "0".repeat(64);
        assert_eq!(
            verify(&secret(), &p.join("."), NOW),
            Err(SessionError::Tampered)
        );
    }

    #[test]
    fn every_single_character_flip_is_refused() {
        let t = token();
        for i in 0..t.len() {
            let mut bytes = t.clone().into_bytes();
            // Stay within the hex alphabet where possible so most flips reach the MAC check.
            bytes[i] = match bytes[i] {
                b'0' => b'1',
                b'.' => b'x',
                b'a' => b'b',
                b'v' => b'w',
                b => b ^ 1,
            };
            let flipped = String::from_utf8(bytes).unwrap();
            let err = verify(&secret(), &flipped, NOW).unwrap_err();
            assert!(
                matches!(err, SessionError::Tampered | SessionError::Malformed),
                "position {i}: {err:?}"
            );
        }
    }

    #[test]
    fn version_is_checked() {
        let mut p = parts(&token());
        p[0] = "v2".to_owned();
        assert_eq!(
            verify(&secret(), &p.join("."), NOW),
            Err(SessionError::Malformed)
        );
    }

    #[test]
    fn non_canonical_spellings_are_malformed() {
        let p = parts(&token());
        let variants = [
            // Uppercase hex in the openid or the MAC.
            format!("{}.{}.{}.{}", p[0], p[1].to_uppercase(), p[2], p[3]),
            format!("{}.{}.{}.{}", p[0], p[1], p[2], p[3].to_uppercase()),
            // Leading zero or sign in the expiry.
            format!("{}.{}.0{}.{}", p[0], p[1], p[2], p[3]),
            format!("{}.{}.+{}.{}", p[0], p[1], p[2], p[3]),
        ];
        for v in variants {
            assert_eq!(
                verify(&secret(), &v, NOW),
                Err(SessionError::Malformed),
                "{v}"
            );
        }
    }

    #[test]
    fn malformed_shapes() {
        let t = token();
        let p = parts(&t);
        let mac = &p[3];
        let huge = format!("v1.{}.{}.{mac}", "ab".repeat(300), NOW + TTL);
        let cases: Vec<String> = vec![
            String::new(),
            ".".into(),
            "...".into(),
            "v1".into(),
            "v1..".into(),
            format!("v1.{}.{}", p[1], p[2]),         // missing MAC
            format!("v1.{}.{mac}", p[1]),            // missing expiry
            format!("{}.{}.{mac}", p[1], p[2]),      // missing version
            format!("{t}.00"),                       // extra part
            format!("v1.x.{t}"),                     // extra part in front
            format!("v1..{}.{mac}", p[2]),           // empty openid
            format!("v1.{}..{mac}", p[1]),           // empty expiry
            format!("v1.{}.{}.", p[1], p[2]),        // empty MAC
            format!("v1.zz{}.{}.{mac}", p[1], p[2]), // non-hex openid
            format!("v1.{}a.{}.{mac}", p[1], p[2]),  // odd-length openid
            format!("v1.{}.{}.{}", p[1], p[2], &mac[..63]), // short MAC
            format!("v1.{}.{}.{mac}0", p[1], p[2]),  // long MAC
            format!("v1.{}.{}.{}g", p[1], p[2], &mac[..63]), // non-hex MAC
            format!("v1.{}.12ab.{mac}", p[1]),       // non-numeric expiry
            format!("v1.{}.-5.{mac}", p[1]),         // negative expiry
            format!("v1.{}.99999999999999999999.{mac}", p[1]), // u64 overflow
            format!("v1.{}.{}.{mac}", p[1], "1".repeat(25)), // too many digits
            format!(" {t}"),
            format!("{t} "),
            format!("Bearer {t}"),
            huge,
            "x".repeat(100_000),
        ];
        for c in cases {
            assert_eq!(
                verify(&secret(), &c, NOW),
                Err(SessionError::Malformed),
                "{:?}",
                c.get(..80).unwrap_or(&c)
            );
        }
    }

    #[test]
    fn oversize_is_malformed_before_anything_else() {
        let t = format!("{}{}", token(), "0".repeat(MAX_TOKEN_LEN));
        assert_eq!(verify(&secret(), &t, NOW), Err(SessionError::Malformed));
    }

    #[test]
    fn issue_refusals() {
        let s = secret();
        assert_eq!(issue(&s, "", NOW, TTL), Err(SessionError::InvalidOpenid));
        assert_eq!(
            issue(&s, &"o".repeat(MAX_OPENID_LEN + 1), NOW, TTL),
            Err(SessionError::InvalidOpenid)
        );
        assert_eq!(issue(&s, OPENID, NOW, 0), Err(SessionError::InvalidTtl));
        assert_eq!(
            issue(&s, OPENID, u64::MAX, 1),
            Err(SessionError::InvalidTtl)
        );
        assert_eq!(
            issue(&Secret::new(""), OPENID, NOW, TTL),
            Err(SessionError::MissingSecret)
        );
    }

    #[test]
    fn empty_secret_never_verifies() {
        assert_eq!(
            verify(&Secret::new(""), &token(), NOW),
            Err(SessionError::MissingSecret)
        );
    }

    #[test]
    fn longest_openid_fits() {
        // Worst case: 128 bytes of a multi-byte openid.
        let openid = "é".repeat(MAX_OPENID_LEN / 2);
        let t = issue(&secret(), &openid, NOW, u64::MAX - NOW).unwrap();
        assert!(t.len() <= MAX_TOKEN_LEN);
        assert_eq!(verify(&secret(), &t, NOW).unwrap().openid, openid);
    }

    #[test]
    fn errors_say_nothing_about_the_token_or_secret() {
        let t = token();
        for e in [
            SessionError::InvalidOpenid,
            SessionError::InvalidTtl,
            SessionError::MissingSecret,
            SessionError::Malformed,
            SessionError::Tampered,
            SessionError::Expired,
        ] {
            let text = format!("{e} {e:?}");
            assert!(!text.contains(&t) && !text.contains(secret().expose()));
            assert!(!text.contains(OPENID));
        }
    }

    proptest! {
        #[test]
        fn prop_round_trip(
            openid in "[A-Za-z0-9_-]{1,128}",
            now in 0u64..=u64::MAX / 2,
            ttl in 1u64..=1_000_000,
        ) {
            let t = issue(&secret(), &openid, now, ttl).unwrap();
            let s = verify(&secret(), &t, now).unwrap();
            prop_assert_eq!(s.openid, openid);
            prop_assert_eq!(s.expires_at, now + ttl);
            prop_assert_eq!(verify(&secret(), &t, now + ttl), Err(SessionError::Expired));
        }

        #[test]
        fn prop_any_change_is_refused(
            openid in "\\PC{1,40}",
            pos in any::<prop::sample::Index>(),
            replacement in any::<u8>(),
        ) {
            prop_assume!(openid.len() <= MAX_OPENID_LEN);
            let t = issue(&secret(), &openid, NOW, TTL).unwrap();
            let mut bytes = t.clone().into_bytes();
            let i = pos.index(bytes.len());
            prop_assume!(bytes[i] != replacement);
            bytes[i] = replacement;
            // Bytes that are not UTF-8 cannot be presented as a `&str` at all.
            if let Ok(changed) = String::from_utf8(bytes) {
                let err = verify(&secret(), &changed, NOW).unwrap_err();
                prop_assert!(matches!(err, SessionError::Tampered | SessionError::Malformed));
            }
        }

        #[test]
        fn prop_garbage_never_verifies(s in "\\PC{0,600}") {
            prop_assert!(verify(&secret(), &s, NOW).is_err());
        }
    }
}
