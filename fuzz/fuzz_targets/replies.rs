//! Reply parsing of unifiedorder / orderquery / closeorder: raw bytes and validly signed
//! fuzz fields never panic; a success reply always carries what the caller relies on.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use wxpay::secret::Secret;
use wxpay::v2::api::{parse_close_order_reply, parse_order_query_reply, parse_unified_order_reply};
use wxpay::v2::sign::{SignType, sign_in_place};
use wxpay::v2::{Params, xml};

fn all(merchant: &wxpay::config::MerchantConfig, body: &[u8]) {
    if let Ok(prepay) = parse_unified_order_reply(merchant, body) {
        assert!(!prepay.prepay_id.is_empty(), "empty prepay_id accepted");
    }
    let _ = parse_order_query_reply(merchant, body);
    let _ = parse_close_order_reply(merchant, body);
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let sign_type = if selector & 1 == 0 {
        SignType::Md5
    } else {
        SignType::HmacSha256
    };
    let merchant = common::merchant(sign_type);
    all(&merchant, rest);
    let mut p = Params::new();
    for (k, v) in common::fields(rest) {
        p.insert(k, v);
    }
    if selector & 2 == 0 {
        for (k, v) in [
            ("return_code", "SUCCESS"),
            ("result_code", "SUCCESS"),
            ("appid", merchant.appid.as_str()),
            ("mch_id", merchant.mch_id.as_str()),
        ] {
            p.entry(k.into()).or_insert_with(|| v.into());
        }
    }
    sign_in_place(&mut p, &Secret::new(common::API_KEY), sign_type);
    all(&merchant, xml::write(&p).as_bytes());
});
