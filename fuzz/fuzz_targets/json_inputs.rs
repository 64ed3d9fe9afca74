//! The JSON request decoders, through the flows' own entry points with in-memory ports:
//! `POST /api/orders` (order input), `POST /api/login`, `PUT /api/admin/products/{sku}`.
//! Never panics; every answer is a well-formed status with a JSON body; an order is never
//! priced from the request.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use wxpay::flows::{
    AdminFlowConfig, Env, LoginFlowConfig, Request, ShopConfig, admin, login, orders,
};
use wxpay::order::product_key;
use wxpay::secret::Secret;
use wxpay::v2::sign::{SignType, sign_in_place};
use wxpay::v2::{Params, xml};

fn prepay_reply() -> Vec<u8> {
    let mut p = Params::new();
    for (k, v) in [
        ("return_code", "SUCCESS"),
        ("result_code", "SUCCESS"),
        ("appid", "wx1234567890abcdef"),
        ("mch_id", "1900000109"),
        ("nonce_str", "n0nce"),
        ("trade_type", "JSAPI"),
        ("prepay_id", "wx2026052800000000000000000000"),
    ] {
        p.insert(k.into(), v.into());
    }
    sign_in_place(&mut p, &Secret::new(common::API_KEY), SignType::Md5);
    xml::write(&p).into_bytes()
}

fn check(status: u16, body: &[u8]) {
    assert!((200..600).contains(&status));
    if status >= 400 {
        let v: serde_json::Value = serde_json::from_slice(body).expect("error bodies are JSON");
        assert!(v["error"]["code"].is_string());
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let store = common::MemStore::default();
    store.0.borrow_mut().insert(
        product_key("tea"),
        serde_json::to_vec(&common::product(199)).unwrap(),
    );
    match selector % 3 {
        0 => {
            let env = Env::new(
                &store,
                common::Canned(prepay_reply()),
                common::FixedClock,
                common::FixedNonce,
                ShopConfig {
                    merchant: common::merchant(SignType::Md5),
                    session: common::session(),
                },
            );
            let token =
                wxpay::session::issue(&env.config.session.secret, "oFuzz_user", common::NOW, 7200)
                    .unwrap();
            let request = Request::new(body.to_vec()).with_bearer(&token);
            let res = common::block_on(orders::create(&env, &request));
            check(res.status, &res.body);
            if res.status == 201 {
                let v: serde_json::Value = serde_json::from_slice(&res.body).unwrap();
                let q = v["order"]["quantity"].as_u64().unwrap();
                assert_eq!(
                    v["order"]["total_fee"].as_u64().unwrap(),
                    199 * q,
                    "priced from the catalog"
                );
            }
        }
        1 => {
            let reply = br#"{"openid":"oFuzz_user","session_key":"k"}"#.to_vec();
            let env = Env::new(
                (),
                common::Canned(reply),
                common::FixedClock,
                common::FixedNonce,
                LoginFlowConfig {
                    login: common::login(),
                    session: common::session(),
                },
            );
            let res = common::block_on(login::login(&env, &Request::new(body.to_vec())));
            check(res.status, &res.body);
        }
        _ => {
            let env = Env::new(
                &store,
                common::Canned(Vec::new()),
                common::FixedClock,
                common::FixedNonce,
                AdminFlowConfig {
                    merchant: common::merchant(SignType::Md5),
                    admin: common::admin(),
                },
            );
            let request = Request::new(body.to_vec()).with_bearer("fuzz-admin-token-0123");
            let res = common::block_on(admin::handle(&env, "PUT", "/products/tea", &request));
            check(res.status, &res.body);
        }
    }
});
