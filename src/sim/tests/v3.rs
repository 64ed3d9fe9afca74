//! The simulator playing WeChat Pay APIv3 with its development keys: the app's own flows
//! (order, re-sign, notification, poll, reconcile) against it in-process, and its checks of
//! our `Authorization` and its faults.

use super::*;
use crate::config::{
    ApiVersion, SIM_MCH_CERT_SERIAL, SIM_MCH_PRIVATE_KEY, SIM_MCH_PUBLIC_KEY,
    SIM_WECHATPAY_PUBLIC_KEY, SIM_WECHATPAY_PUBLIC_KEY_ID, Signing,
};
use crate::flows::{AdminFlowConfig, admin, pay_sign};
use crate::pay_params::{PayParams, verify_v3_pay_params};
use crate::v3::sign::{MerchantKey, RequestToSign, authorization};
use crate::v3::verify::{PublicKey, WechatPayKey, verify};

pub(super) fn v3_shop() -> ShopConfig {
    let mut vars = BTreeMap::new();
    vars.insert("wxpay_api_version".to_owned(), "v3".to_owned());
    ShopConfig::load(&vars).unwrap()
}

pub(super) fn wechatpay_keys() -> Vec<WechatPayKey> {
    vec![WechatPayKey {
        id: SIM_WECHATPAY_PUBLIC_KEY_ID.into(),
        key: PublicKey::from_pem(SIM_WECHATPAY_PUBLIC_KEY).unwrap(),
    }]
}

#[test]
fn the_walk_through_in_v3_pays_through_an_encrypted_signed_notification() {
    let w = World::new(SignType::Md5);
    let sim = w.sim_env(Mode::Simulator);
    let to_sim = w.to_sim();
    let token = token(&w, &to_sim, "v3-code");
    let shop = v3_shop();
    assert_eq!(shop.merchant.api_version, ApiVersion::V3);
    let env = Env::new(&w.store, &to_sim, &w.clock, &w.nonce, shop);
    let created = block_on(orders::create(
        &env,
        &Request::new(json!({"sku": "demo", "quantity": 1}).to_string()).with_bearer(&token),
    ));
    assert_eq!(created.status, 201, "{created:?}");
    let body = created.json_body().unwrap();
    let order_no = body["order"]["order_no"].as_str().unwrap().to_owned();
    let params: PayParams = serde_json::from_value(body["pay_params"].clone()).unwrap();
    // What wx.requestPayment checks: an RSA paySign by the simulator merchant's key.
    assert_eq!(params.sign_type, "RSA");
    let merchant_public = PublicKey::from_pem(SIM_MCH_PUBLIC_KEY).unwrap();
    assert!(verify_v3_pay_params(SIM_APPID, &params, &merchant_public));
    // The simulator keeps it as an APIv3 order.
    let prepay = params.package.strip_prefix("prepay_id=").unwrap();
    let sim_order = load_order(&w.store, &order_no);
    let sim_order = block_on(sim_order).unwrap().unwrap();
    assert_eq!(sim_order.sign_type, "RSA");
    assert_eq!(sim_order.field("total_fee"), "1");
    // Re-signing hands the stored params back.
    let again = block_on(pay_sign::pay_params(
        &Env::new(&w.store, (), &w.clock, &w.nonce, v3_shop()),
        &Request::default().with_bearer(&token),
        &order_no,
    ));
    assert_eq!(
        serde_json::from_slice::<PayParams>(&again.body).unwrap(),
        params
    );

    // A burst of 5 identical deliveries: every one answered 204, one payment.
    w.post(&sim, "/_sim/faults", r#"{"duplicate_notifications": 5}"#);
    let paid = pay(&w, &sim, prepay, "SUCCESS").json_body().unwrap();
    assert_eq!(paid["notified"], true, "{paid}");
    let deliveries = paid["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 5);
    assert!(deliveries.iter().all(|d| d["status"] == 204), "{paid}");
    // What was delivered is WeChat's APIv3 envelope, signed in the headers.
    let received = sim.transport.received.borrow();
    let (url, envelope) = &received[0];
    assert_eq!(url, SIM_NOTIFY_URL);
    let envelope: Value = serde_json::from_str(envelope).unwrap();
    assert_eq!(envelope["event_type"], "TRANSACTION.SUCCESS");
    assert_eq!(envelope["resource"]["algorithm"], "AEAD_AES_256_GCM");
    drop(received);
    let order = w.store.order(&order_no).unwrap();
    assert_eq!(order.status, Status::Paid);
    assert_eq!(
        order.transaction_id.as_deref(),
        paid["transaction_id"].as_str()
    );
    let got = block_on(orders::get(
        &env,
        &Request::default().with_bearer(&token),
        &order_no,
    ));
    assert_eq!(got.json_body().unwrap()["status"], "PAID");
}

#[test]
fn a_lost_v3_notification_is_found_by_polling_and_reconcile_closes_the_unpaid() {
    let w = World::new(SignType::Md5);
    let sim = w.sim_env(Mode::Simulator);
    let to_sim = w.to_sim();
    let token = token(&w, &to_sim, "v3-poll");
    let env = Env::new(&w.store, &to_sim, &w.clock, &w.nonce, v3_shop());
    let create = || {
        let r = block_on(orders::create(
            &env,
            &Request::new(json!({"sku": "demo", "quantity": 1}).to_string()).with_bearer(&token),
        ));
        let body = r.json_body().unwrap();
        let no = body["order"]["order_no"].as_str().unwrap().to_owned();
        let package = body["pay_params"]["package"].as_str().unwrap().to_owned();
        (no, package)
    };
    let (paid_no, package) = create();
    let (open_no, _) = create();
    sim.transport.no_answer.set(true);
    let paid = pay(
        &w,
        &sim,
        package.strip_prefix("prepay_id=").unwrap(),
        "SUCCESS",
    );
    assert_eq!(paid.json_body().unwrap()["notified"], false);
    assert_eq!(
        w.store.order(&paid_no).unwrap().status,
        Status::AwaitingPayment
    );
    let got = block_on(orders::get(
        &env,
        &Request::default().with_bearer(&token),
        &paid_no,
    ));
    assert_eq!(got.json_body().unwrap()["status"], "PAID", "{got:?}");
    // Reconcile (a signing component too) closes the expired unpaid one through the v3 close.
    w.clock.advance(3 * 3600);
    let mut vars = BTreeMap::new();
    vars.insert("wxpay_api_version".to_owned(), "v3".to_owned());
    let admin_env = Env::new(
        &w.store,
        &to_sim,
        &w.clock,
        &w.nonce,
        AdminFlowConfig::load(&vars).unwrap(),
    );
    let r = block_on(admin::handle(
        &admin_env,
        "POST",
        "/reconcile",
        &Request::default().with_bearer(crate::config::SIM_ADMIN_TOKEN),
    ));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(w.store.order(&open_no).unwrap().status, Status::Closed);
    let sim_order = block_on(load_order(&w.store, &open_no)).unwrap().unwrap();
    assert_eq!(sim_order.trade_state, TradeState::Closed);
}

/// A signed APIv3 request to the simulator, as the app sends it.
pub(super) fn v3_request(
    method: &'static str,
    path: &str,
    body: &str,
    timestamp: u64,
    serial: &str,
    key_pem: &str,
) -> OutboundRequest {
    let key = MerchantKey::from_pem(key_pem).unwrap();
    let authorization = authorization(
        &key,
        &RequestToSign {
            mchid: SIM_MCH_ID,
            serial_no: serial,
            method,
            url: path,
            timestamp,
            nonce: "n0nce",
            body,
        },
    );
    OutboundRequest {
        method,
        url: format!("{}{path}", crate::config::SIM_BASE),
        headers: vec![("Authorization", authorization)],
        body: body.as_bytes().to_vec(),
    }
}

fn jsapi_body(no: &str) -> String {
    json!({
        "appid": SIM_APPID, "mchid": SIM_MCH_ID, "description": "Demo", "out_trade_no": no,
        "notify_url": SIM_NOTIFY_URL, "amount": {"total": 1, "currency": "CNY"},
        "payer": {"openid": "o1"}
    })
    .to_string()
}

#[test]
fn the_simulator_checks_our_authorization_as_wechat_does() {
    let w = World::new(SignType::Md5);
    let link = w.to_sim();
    let path = crate::v3::api::JSAPI_PATH;
    let body = jsapi_body("v3order0001");
    let good = v3_request(
        "POST",
        path,
        &body,
        NOW,
        SIM_MCH_CERT_SERIAL,
        SIM_MCH_PRIVATE_KEY,
    );
    let reply = block_on(link.send(&good)).unwrap();
    assert_eq!(reply.status, 200, "{reply:?}");
    // Signed by the simulator's WeChat Pay key, verifiable by its public key.
    let headers = reply.wechatpay_signature().unwrap();
    verify(&headers.signed(&reply.body), &wechatpay_keys(), NOW).unwrap();
    let prepay: Value = serde_json::from_slice(&reply.body).unwrap();
    // The same order again: the same prepay id; changed: OUT_TRADE_NO_USED.
    let again = block_on(link.send(&good)).unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&again.body).unwrap(),
        prepay
    );
    let changed = body.replace("\"total\":1", "\"total\":2");
    let r = block_on(link.send(&v3_request(
        "POST",
        path,
        &changed,
        NOW,
        SIM_MCH_CERT_SERIAL,
        SIM_MCH_PRIVATE_KEY,
    )))
    .unwrap();
    assert_eq!(r.status, 403);

    let rotated_key = include_str!("../../v3/testdata/wechatpay_rotated_key.pem");
    for (name, request, detail) in [
        (
            "wrong serial",
            v3_request("POST", path, &body, NOW, "0123ABCD", SIM_MCH_PRIVATE_KEY),
            "serial_no",
        ),
        (
            "stale",
            v3_request(
                "POST",
                path,
                &body,
                NOW - 300,
                SIM_MCH_CERT_SERIAL,
                SIM_MCH_PRIVATE_KEY,
            ),
            "timestamp",
        ),
        (
            "another key",
            v3_request("POST", path, &body, NOW, SIM_MCH_CERT_SERIAL, rotated_key),
            "signature",
        ),
        (
            "body changed after signing",
            OutboundRequest {
                body: changed.as_bytes().to_vec(),
                ..good.clone()
            },
            "signature",
        ),
        (
            "no Authorization",
            OutboundRequest {
                headers: Vec::new(),
                ..good.clone()
            },
            "Authorization",
        ),
    ] {
        let r = block_on(link.send(&request)).unwrap();
        assert_eq!(r.status, 401, "{name}: {r:?}");
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["code"], "SIGN_ERROR", "{name}");
        assert!(
            v["message"].as_str().unwrap().contains(detail),
            "{name}: {v}"
        );
        let headers = r.wechatpay_signature().unwrap();
        verify(&headers.signed(&r.body), &wechatpay_keys(), NOW).unwrap();
    }
}

#[test]
fn v3_faults_spoil_the_next_replies() {
    let w = World::new(SignType::Md5);
    let sim = w.sim_env(Mode::Simulator);
    let link = w.to_sim();
    let query = |no: &str| {
        let path = format!("/v3/pay/transactions/out-trade-no/{no}?mchid={SIM_MCH_ID}");
        v3_request(
            "GET",
            &path,
            "",
            NOW,
            SIM_MCH_CERT_SERIAL,
            SIM_MCH_PRIVATE_KEY,
        )
    };
    let created = v3_request(
        "POST",
        crate::v3::api::JSAPI_PATH,
        &jsapi_body("v3order0002"),
        NOW,
        SIM_MCH_CERT_SERIAL,
        SIM_MCH_PRIVATE_KEY,
    );
    assert_eq!(block_on(link.send(&created)).unwrap().status, 200);
    w.post(
        &sim,
        "/_sim/faults",
        r#"{"systemerror": 1, "bad_signature": 1, "signtest": 1}"#,
    );
    let r = block_on(link.send(&query("v3order0002"))).unwrap();
    assert_eq!(r.status, 500);
    let r = block_on(link.send(&query("v3order0002"))).unwrap();
    let headers = r.wechatpay_signature().unwrap();
    assert_eq!(
        verify(&headers.signed(&r.body), &wechatpay_keys(), NOW),
        Err(crate::v3::verify::VerifyError::Mismatch)
    );
    let r = block_on(link.send(&query("v3order0002"))).unwrap();
    let headers = r.wechatpay_signature().unwrap();
    assert_eq!(
        verify(&headers.signed(&r.body), &wechatpay_keys(), NOW),
        Err(crate::v3::verify::VerifyError::SignTest)
    );
    // Then clean: the transaction, NOTPAY.
    let r = block_on(link.send(&query("v3order0002"))).unwrap();
    let headers = r.wechatpay_signature().unwrap();
    verify(&headers.signed(&r.body), &wechatpay_keys(), NOW).unwrap();
    let t: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(t["trade_state"], "NOTPAY");
    assert_eq!(t["amount"]["total"], 1);
    let r = block_on(link.send(&query("v3order9999"))).unwrap();
    assert_eq!(r.status, 404);
    // The notify route's config in the simulator never carries the merchant private key.
    let m = MerchantConfig::load_for(&BTreeMap::<String, String>::new(), Signing::VerifiesOnly)
        .unwrap();
    assert!(m.v3.unwrap().merchant_key.is_none());
}
