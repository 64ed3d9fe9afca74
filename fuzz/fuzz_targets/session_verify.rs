//! Session tokens: verifying any string never panics and never yields a session that was not
//! issued with our secret; what we issue verifies to the same openid.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use wxpay::secret::Secret;
use wxpay::session::{issue, verify};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let secret = Secret::new(common::SESSION_SECRET);
    if let Ok(session) = verify(&secret, &text, common::NOW) {
        assert!(
            session.expires_at > common::NOW,
            "an expired token verified"
        );
        assert!(
            !session.openid.is_empty(),
            "a token without an openid verified"
        );
    }
    let _ = verify(&Secret::new(""), &text, common::NOW);
    if let Ok(token) = issue(&secret, &text, common::NOW, 7200) {
        let session = verify(&secret, &token, common::NOW).expect("our own token verifies");
        assert_eq!(session.openid, text.as_ref());
        assert!(
            verify(
                &Secret::new("another secret, thirty-two bytes long!!"),
                &token,
                common::NOW
            )
            .is_err()
        );
    }
});
