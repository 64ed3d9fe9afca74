//! The flat `<xml>` reader: never panics; what it accepts writes back to the same fields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wxpay::v2::xml;

fuzz_target!(|data: &[u8]| {
    if let Ok(params) = xml::read(data) {
        let written = xml::write(&params);
        let again = xml::read(written.as_bytes()).expect("what we write, we read");
        assert_eq!(again, params, "xml write/read round trip");
    }
});
