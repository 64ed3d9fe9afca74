//! Notification parse + verify + judge. Raw bytes must never panic; and a validly signed
//! notification built from fuzz fields (so the fuzzer gets past the signature) is judged
//! against an order without panicking and never Applied on a mismatched amount or merchant.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use wxpay::money::Fen;
use wxpay::secret::Secret;
use wxpay::v2::notify::{Verdict, judge, parse};
use wxpay::v2::sign::{SignType, sign_in_place};
use wxpay::v2::{Params, xml};

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
    // 1. Raw bytes.
    if let Ok(n) = parse(rest, &merchant) {
        let _ = judge(&n, &merchant, None);
    }
    // 2. Structured and validly signed.
    let mut p = Params::new();
    for (k, v) in common::fields(rest) {
        p.insert(k, v);
    }
    if selector & 2 == 0 {
        // Mostly-right notifications reach the deeper checks.
        for (k, v) in [
            ("return_code", "SUCCESS"),
            ("result_code", "SUCCESS"),
            ("appid", merchant.appid.as_str()),
            ("mch_id", merchant.mch_id.as_str()),
            ("out_trade_no", "202605280000001a2b3c4d"),
        ] {
            p.entry(k.into()).or_insert_with(|| v.into());
        }
    }
    if sign_type == SignType::HmacSha256 && selector & 4 == 0 {
        p.insert("sign_type".into(), "HMAC-SHA256".into());
    }
    sign_in_place(&mut p, &Secret::new(common::API_KEY), sign_type);
    let body = xml::write(&p);
    let Ok(n) = parse(body.as_bytes(), &merchant) else {
        return;
    };
    let total = u64::from(selector >> 3) + 1;
    let mut order = common::order("202605280000001a2b3c4d", total);
    if n.out_trade_no() != order.order_no {
        order.order_no = n.out_trade_no().to_owned();
    }
    let verdict = judge(&n, &merchant, Some(&order));
    if let Verdict::Apply(trade) = &verdict {
        assert_eq!(
            trade.total_fee,
            Fen(total),
            "applied with a mismatched amount"
        );
        assert_eq!(
            p.get("appid"),
            Some(&merchant.appid),
            "applied another appid"
        );
        assert_eq!(
            p.get("mch_id"),
            Some(&merchant.mch_id),
            "applied another mch_id"
        );
        assert_eq!(p.get("result_code").map(String::as_str), Some("SUCCESS"));
        assert_eq!(p.get("return_code").map(String::as_str), Some("SUCCESS"));
    }
    // The same notification with the signature broken is never accepted.
    let mut forged = p.clone();
    forged.insert("sign".into(), "0".repeat(32));
    assert!(
        parse(xml::write(&forged).as_bytes(), &merchant).is_err(),
        "forged accepted"
    );
});
