//! The flows speaking APIv3 (docs/ARCHITECTURE.md §9) against a fake WeChat Pay APIv3 that checks our
//! `Authorization` with the merchant's public key and signs its replies with the vectors'
//! throw-away WeChat keys: both key modes (the WeChat Pay public key; platform certificates,
//! with a rotation), every refusal of a reply or a notification, and both versions'
//! notifications on one deployment.

use super::*;
use crate::config::{ApiVersion, V3Config, WechatVerification};
use crate::ledger;
use crate::pay_params::verify_v3_pay_params;
use crate::v3::sign::MerchantKey;
use crate::v3::verify::{PublicKey, SignatureHeaders, WechatPayKey};

/// 2026-12-02T00:00:00Z: inside every test certificate's validity.
const NOW_V3: u64 = 1_796_169_600;
const APIV3_KEY: &str = "b8def2f05f1b1cb0e6f4c3d2e1f0a9d8";
const MCH_SERIAL: &str = V3Signer::MERCHANT_SERIAL;
const MERCHANT_KEY: &str = include_str!("../../v3/testdata/merchant_key.pem");
const MERCHANT_PUB: &str = include_str!("../../v3/testdata/merchant_pub.pem");

pub(super) fn public_key_mode() -> WechatVerification {
    WechatVerification::PublicKey(WechatPayKey {
        id: V3Signer::PUBLIC_KEY_ID.into(),
        key: PublicKey::from_pem(V3Signer::WECHATPAY_PUB).unwrap(),
    })
}

fn v3_merchant(verification: WechatVerification) -> MerchantConfig {
    MerchantConfig {
        api_version: ApiVersion::V3,
        api_key: None,
        v3: Some(V3Config {
            apiv3_key: Secret::new(APIV3_KEY),
            mch_cert_serial: MCH_SERIAL.into(),
            merchant_key: Some(MerchantKey::from_pem(MERCHANT_KEY).unwrap()),
            verification,
        }),
        ..merchant(SignType::Md5)
    }
}

pub(super) fn v3_world(verification: WechatVerification) -> World {
    World::with_merchant(v3_merchant(verification), NOW_V3)
}

/// A world in platform-certificate mode whose fake WeChat signs with `signer`.
fn certificate_world(signer: V3Signer) -> World {
    let w = v3_world(WechatVerification::PlatformCertificates);
    *w.wx.v3_signer.borrow_mut() = signer;
    w
}

fn merchant_public() -> PublicKey {
    PublicKey::from_pem(MERCHANT_PUB).unwrap()
}

/// Creates an order (201) and returns its number and pay params.
pub(super) fn create_v3(w: &World) -> (String, PayParams) {
    let r = w.create(json!({"sku": "coffee-L", "quantity": 2}));
    assert_eq!(r.status, 201, "{r:?}");
    let body = r.json_body().unwrap();
    let params: PayParams = serde_json::from_value(body["pay_params"].clone()).unwrap();
    (
        body["order"]["order_no"].as_str().unwrap().to_owned(),
        params,
    )
}

/// A payment notification as WeChat sends it for `order_no`: the transaction (as `edit`
/// leaves it) encrypted with `apiv3_key` under `nonce` and AAD `transaction`, in WeChat's
/// envelope (stating `aad` as its AAD), signed by the fake WeChat's signer at the world's time
/// plus `skew`.
pub(super) struct V3Notification {
    apiv3_key: &'static str,
    aad: &'static str,
    nonce: &'static str,
    skew: i64,
}

impl Default for V3Notification {
    fn default() -> Self {
        Self {
            apiv3_key: APIV3_KEY,
            aad: "transaction",
            nonce: "0123456789ab",
            skew: 0,
        }
    }
}

impl V3Notification {
    pub(super) fn build(
        &self,
        w: &World,
        order_no: &str,
        edit: impl FnOnce(&mut Value),
    ) -> (Vec<u8>, SignatureHeaders) {
        let trade = Trade {
            state: "SUCCESS".into(),
            total_fee: 3980,
            transaction_id: format!("4200{order_no}"),
            time_end: PAID_TIME_END.into(),
        };
        let mut transaction: Value =
            serde_json::from_str(&w.wx.v3_transaction(order_no, &trade, &w.merchant.mch_id))
                .unwrap();
        edit(&mut transaction);
        let body = crate::v3::notify::payment_envelope(
            &Secret::new(self.apiv3_key),
            self.nonce,
            "EV-2018022511223320873",
            "2026-12-02T08:00:00+08:00",
            &transaction.to_string(),
        )
        .unwrap()
        // Another AAD stated than the one the resource was sealed with.
        .replace(
            r#""associated_data":"transaction""#,
            &format!(r#""associated_data":"{}""#, self.aad),
        )
        .into_bytes();
        let at = w.clock.now_unix().saturating_add_signed(self.skew);
        let headers = w.wx.v3_signer.borrow().sign(at, &body);
        (body, headers)
    }

    pub(super) fn request(
        &self,
        w: &World,
        order_no: &str,
        edit: impl FnOnce(&mut Value),
    ) -> Request {
        let (body, headers) = self.build(w, order_no, edit);
        signed_request(body, headers)
    }
}

fn signed_request(body: Vec<u8>, headers: SignatureHeaders) -> Request {
    let mut request = Request::new(body).with_content_type("application/json");
    request.wechatpay = Some(headers);
    request
}

fn fail_message(r: &Response) -> String {
    let v = r.json_body().unwrap();
    assert_eq!(v["code"], "FAIL", "{r:?}");
    v["message"].as_str().unwrap().to_owned()
}

#[test]
fn order_is_signed_once_and_resigning_hands_back_the_stored_params() {
    let w = v3_world(public_key_mode());
    let (no, params) = create_v3(&w);
    // The fake WeChat verified the Authorization (else 401 SIGN_ERROR, no 201).
    let sent = w.wx.sent_to(crate::v3::api::JSAPI_PATH);
    assert_eq!(sent.len(), 1);
    let body: Value = serde_json::from_str(&sent[0].body).unwrap();
    assert_eq!(body["amount"], json!({"total": 3980, "currency": "CNY"}));
    assert_eq!(body["payer"]["openid"], OPENID);
    assert_eq!(body["out_trade_no"], no.as_str());
    // The paySign is RSA, over the order's prepay id, verifiable by the WeChat client.
    assert_eq!(params.sign_type, "RSA");
    assert_eq!(params.package, format!("prepay_id=wx{no}"));
    assert!(verify_v3_pay_params(
        &w.merchant.appid,
        &params,
        &merchant_public()
    ));
    let order = w.order(&no);
    assert_eq!(order.status, Status::AwaitingPayment);
    assert_eq!(order.pay_params.as_ref(), Some(&params));
    assert_eq!(order.sign_type, None);
    // Re-signing later answers the stored params unchanged: no private-key operation.
    w.clock.advance(600);
    let r = w.pay_params(&no, OPENID);
    assert_eq!(r.status, 200, "{r:?}");
    let again: PayParams = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(again, params);
    // Past the prepay's life it is gone, as in APIv2.
    w.clock.advance(2 * 3600);
    assert_eq!(code(&w.pay_params(&no, OPENID)), "prepay_expired");
}

#[test]
fn a_notification_settles_the_order_once_and_duplicates_write_nothing() {
    let w = v3_world(public_key_mode());
    let (no, _) = create_v3(&w);
    let request = V3Notification::default().request(&w, &no, |_| {});
    let (r, outcome) = w.notify_request(&request);
    assert_eq!(r.status, 204, "{r:?}");
    assert!(r.body.is_empty());
    assert!(
        matches!(outcome, notify::NotifyOutcome::Applied { .. }),
        "{outcome:?}"
    );
    let order = w.order(&no);
    assert_eq!(order.status, Status::Paid);
    assert_eq!(
        order.transaction_id.as_deref(),
        Some(format!("4200{no}").as_str())
    );
    // The same paid_at as APIv2 would record from time_end.
    assert_eq!(order.paid_at.as_deref(), Some("2024-05-01T08:03:12Z"));
    let writes = w.store.writes.get();
    for _ in 0..20 {
        let (r, outcome) = w.notify_request(&request);
        assert_eq!(r.status, 204);
        assert!(matches!(outcome, notify::NotifyOutcome::Duplicate { .. }));
    }
    assert_eq!(w.store.writes.get(), writes, "duplicates write nothing");
    assert_eq!(status_events_to(&w.order(&no), Status::Paid), 1);
}

#[test]
fn untrusted_notifications_are_refused_with_401_and_change_nothing() {
    let w = v3_world(public_key_mode());
    let (no, _) = create_v3(&w);
    let good = V3Notification::default();
    let (body, headers) = good.build(&w, &no, |_| {});
    let mut cases: Vec<(&str, Request)> = Vec::new();
    let mut tampered = String::from_utf8(body.clone()).unwrap();
    tampered = tampered.replace("EV-2018", "EV-2019");
    cases.push((
        "tampered body",
        signed_request(tampered.into_bytes(), headers.clone()),
    ));
    let mut wrong_serial = headers.clone();
    wrong_serial.serial = "PUB_KEY_ID_0112345678902025112700000000000002".into();
    cases.push(("unknown serial", signed_request(body.clone(), wrong_serial)));
    let mut signtest = headers.clone();
    signtest.signature = format!("WECHATPAY/SIGNTEST/{}", headers.signature);
    cases.push(("SIGNTEST probe", signed_request(body.clone(), signtest)));
    let mut no_nonce = headers.clone();
    no_nonce.nonce.clear();
    cases.push(("missing nonce", signed_request(body.clone(), no_nonce)));
    for (name, skew) in [("stale", -300), ("future", 300)] {
        let n = V3Notification {
            skew,
            ..V3Notification::default()
        };
        cases.push((name, n.request(&w, &no, |_| {})));
    }
    // Signed correctly, but the resource does not authenticate under our key, AAD or nonce.
    for (name, n) in [
        (
            "wrong AAD",
            V3Notification {
                aad: "certificate",
                ..V3Notification::default()
            },
        ),
        (
            "other APIv3 key",
            V3Notification {
                apiv3_key: "c9e0f3a16a2c2dc1f7a5d4e3f2a1b0c9",
                ..V3Notification::default()
            },
        ),
    ] {
        cases.push((name, n.request(&w, &no, |_| {})));
    }
    let mut wrong_nonce = String::from_utf8(body.clone()).unwrap();
    wrong_nonce = wrong_nonce.replace("0123456789ab", "ba9876543210");
    let resigned = w.wx.v3_signer.borrow().sign(NOW_V3, wrong_nonce.as_bytes());
    cases.push((
        "wrong nonce",
        signed_request(wrong_nonce.into_bytes(), resigned),
    ));
    let writes = w.store.writes.get();
    for (name, request) in cases {
        let (r, outcome) = w.notify_request(&request);
        assert_eq!(r.status, 401, "{name}: {r:?}");
        assert!(!fail_message(&r).is_empty(), "{name}");
        assert!(
            matches!(outcome, notify::NotifyOutcome::Rejected { .. }),
            "{name}: {outcome:?}"
        );
    }
    assert_eq!(w.store.writes.get(), writes, "nothing written");
    assert_eq!(w.order(&no).status, Status::AwaitingPayment);
    // The good one still applies afterwards.
    let (r, _) = w.notify_request(&signed_request(body, headers));
    assert_eq!(r.status, 204);
}

#[test]
fn mismatched_notifications_alert_and_unknown_orders_are_refused() {
    let w = v3_world(public_key_mode());
    let (no, _) = create_v3(&w);
    let n = V3Notification::default();
    for (edit, expected) in [
        (
            Box::new(|t: &mut Value| t["amount"]["total"] = json!(1)) as Box<dyn Fn(&mut Value)>,
            "total_fee 1 does not match",
        ),
        (
            Box::new(|t: &mut Value| t["appid"] = json!("wx0000000000000000")),
            "appid is not ours",
        ),
        (
            Box::new(|t: &mut Value| t["mchid"] = json!("1999999999")),
            "mch_id is not ours",
        ),
        (
            Box::new(|t: &mut Value| t["trade_state"] = json!("PAYERROR")),
            "trade_state PAYERROR",
        ),
    ] {
        let (r, outcome) = w.notify_request(&n.request(&w, &no, |t| edit(t)));
        // Validly signed: received (204), not paid, an alert recorded.
        assert_eq!(r.status, 204, "{expected}: {r:?}");
        match outcome {
            notify::NotifyOutcome::Alerted { reason, .. } => {
                assert!(reason.contains(expected), "{reason}")
            }
            other => panic!("{expected}: {other:?}"),
        }
    }
    let order = w.order(&no);
    assert_eq!(order.status, Status::AwaitingPayment);
    assert_eq!(alerts(&order).len(), 4);
    // An order we do not know: a failure (WeChat retries), nothing written.
    let (r, outcome) = w.notify_request(&n.request(&w, "20240501000000deadbeef", |_| {}));
    assert_eq!(r.status, 404, "{r:?}");
    assert!(matches!(outcome, notify::NotifyOutcome::Rejected { .. }));
}

#[test]
fn both_versions_notifications_settle_orders_on_one_deployment() {
    // Configured for APIv3 with the APIv2 key kept: an APIv2 order made before the switch
    // still settles by its XML notification.
    let mut m = v3_merchant(public_key_mode());
    m.api_key = merchant(SignType::Md5).api_key;
    let w = World::with_merchant(m, NOW_V3);
    let (v3_no, _) = create_v3(&w);
    let v2_no = "20261201000000aaaaaaaaaaaa";
    let mut old = w.order(&v3_no);
    old.order_no = v2_no.into();
    old.pay_params = None;
    old.sign_type = Some(SignType::Md5);
    w.store.put_order(&old);
    let (r, outcome) = w.notify(&w.notification(v2_no, |_| {}));
    assert_eq!(r.body, SUCCESS_REPLY.as_bytes(), "{outcome:?}");
    assert_eq!(w.order(v2_no).status, Status::Paid);
    let (r, _) = w.notify_request(&V3Notification::default().request(&w, &v3_no, |_| {}));
    assert_eq!(r.status, 204);
    assert_eq!(w.order(&v3_no).status, Status::Paid);

    // Without the APIv2 key, an APIv2 notification cannot be verified: FAIL, WeChat retries.
    let w = v3_world(public_key_mode());
    let (no, _) = create_v3(&w);
    let (r, outcome) = w.notify(&w.notification(&no, |_| {}));
    assert!(String::from_utf8_lossy(&r.body).contains("FAIL"), "{r:?}");
    assert!(
        matches!(outcome, notify::NotifyOutcome::Rejected { reason } if reason.contains("wxpay_api_key"))
    );
    assert_eq!(w.order(&no).status, Status::AwaitingPayment);

    // An APIv2 deployment without APIv3 keys answers an APIv3 notification 500 (our side).
    let w = World::new();
    let no = w.awaiting();
    let (body, headers) = V3Notification::default().build(&w, &no, |_| {});
    let (r, outcome) = w.notify_request(&signed_request(body, headers));
    assert_eq!(r.status, 500, "{r:?}");
    assert!(
        matches!(outcome, notify::NotifyOutcome::Failed { reason } if reason.contains("APIv3 is not configured"))
    );
}

#[test]
fn a_store_failure_answers_500_and_the_retry_applies() {
    let w = v3_world(public_key_mode());
    let (no, _) = create_v3(&w);
    let request = V3Notification::default().request(&w, &no, |_| {});
    w.store.fail_sets(&ledger::paid_key(&no), Some(1));
    let (r, outcome) = w.notify_request(&request);
    assert_eq!(r.status, 500, "{r:?}");
    assert!(matches!(outcome, notify::NotifyOutcome::Failed { .. }));
    assert_eq!(w.order(&no).status, Status::AwaitingPayment);
    let (r, _) = w.notify_request(&request);
    assert_eq!(r.status, 204);
    assert_eq!(w.order(&no).status, Status::Paid);
}

#[test]
fn a_lost_notification_is_found_by_polling_the_v3_query() {
    let w = v3_world(public_key_mode());
    let (no, _) = create_v3(&w);
    w.wx.pay(&no, 3980);
    let r = w.get(&no, OPENID);
    assert_eq!(r.json_body().unwrap()["status"], "PAID", "{r:?}");
    let order = w.order(&no);
    assert_eq!(order.paid_at.as_deref(), Some("2024-05-01T08:03:12Z"));
    assert!(
        w.wx.sent_to(&format!("/v3/pay/transactions/out-trade-no/{no}"))
            .len()
            == 1
    );
    // A query reply about another merchant is not trusted.
    let w = v3_world(public_key_mode());
    let (no, _) = create_v3(&w);
    w.wx.pay(&no, 3980);
    w.wx.fault(V3_QUERY, Fault::ForeignMchId);
    assert_eq!(
        w.get(&no, OPENID).json_body().unwrap()["status"],
        "AWAITING_PAYMENT"
    );
}

#[test]
fn untrusted_replies_never_create_an_order() {
    for fault in [
        Fault::BadSignature,
        Fault::SignTest,
        Fault::Skewed(-300),
        Fault::Skewed(300),
        Fault::UnknownSerial,
        Fault::Unsigned,
    ] {
        let w = v3_world(public_key_mode());
        w.wx.fault(V3_JSAPI, fault.clone());
        let r = w.create(json!({"sku": "coffee-L", "quantity": 1}));
        assert_eq!(r.status, 502, "{fault:?}: {r:?}");
        assert_eq!(code(&r), "wechat_reply_untrusted", "{fault:?}");
        // Stored CREATED (reconcile settles it), never AWAITING_PAYMENT.
        let orders = w.store.orders();
        assert_eq!(orders.len(), 1);
        assert_eq!(orders[0].status, Status::Created, "{fault:?}");
    }
}

#[test]
fn refusals_and_retries_follow_the_same_rules_as_v2() {
    // 5xx twice: retried with the identical signed request, then the prepay.
    let w = v3_world(public_key_mode());
    w.wx.fault(V3_JSAPI, Fault::Http(500));
    w.wx.fault(V3_JSAPI, Fault::Refuse("SYSTEM_ERROR"));
    let (no, _) = create_v3(&w);
    let sent = w.wx.sent_to(crate::v3::api::JSAPI_PATH);
    assert_eq!(sent.len(), 3);
    assert!(
        sent.iter().all(|s| s == &sent[0]),
        "identical bytes on retry"
    );
    assert_eq!(w.order(&no).status, Status::AwaitingPayment);
    // A signed refusal fails the order with WeChat's code.
    let w = v3_world(public_key_mode());
    w.wx.fault(V3_JSAPI, Fault::Refuse("NO_AUTH"));
    let r = w.create(json!({"sku": "coffee-L", "quantity": 1}));
    assert_eq!(code(&r), "wechat_refused", "{r:?}");
    assert_eq!(w.store.orders()[0].status, Status::Failed);
    // ORDERPAID is not a failure: the order stays CREATED for a query.
    let w = v3_world(public_key_mode());
    w.wx.fault(V3_JSAPI, Fault::Refuse("ORDERPAID"));
    let r = w.create(json!({"sku": "coffee-L", "quantity": 1}));
    assert_eq!(code(&r), "wechat_refused");
    assert_eq!(w.store.orders()[0].status, Status::Created);
    // Our own signature refused (wrong merchant key): 401 SIGN_ERROR, a refusal.
    let mut m = v3_merchant(public_key_mode());
    m.v3.as_mut().unwrap().mch_cert_serial = "0000".into();
    let w = World::with_merchant(m, NOW_V3);
    let r = w.create(json!({"sku": "coffee-L", "quantity": 1}));
    assert_eq!(code(&r), "wechat_refused", "{r:?}");
    assert!(
        r.json_body().unwrap()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("SIGNERROR")
    );
}

#[test]
fn platform_certificates_are_downloaded_once_on_an_unknown_serial() {
    let w = certificate_world(V3Signer::platform());
    let (no, _) = create_v3(&w);
    assert_eq!(w.wx.sent_to(V3_CERTIFICATES).len(), 1);
    let stored = w
        .store
        .raw(&super::wechat::certificate_key(V3Signer::PLATFORM_SERIAL))
        .expect("the certificate is stored by serial");
    let stored: crate::v3::certificates::StoredCertificate =
        serde_json::from_slice(&stored).unwrap();
    let certificate =
        crate::v3::certificates::PlatformCertificate::from_pem(V3Signer::PLATFORM_CERT).unwrap();
    assert_eq!(stored, certificate.stored());
    // Known now: no second download; the notify route verifies with the stored one.
    create_v3(&w);
    assert_eq!(w.wx.sent_to(V3_CERTIFICATES).len(), 1);
    let (r, _) = w.notify_request(&V3Notification::default().request(&w, &no, |_| {}));
    assert_eq!(r.status, 204, "{r:?}");
}

#[test]
fn a_rotated_certificate_is_fetched_and_both_stay_valid() {
    let w = certificate_world(V3Signer::platform());
    let (old_no, _) = create_v3(&w);
    // WeChat starts signing with a new certificate and lists both.
    w.wx.v3_listed.borrow_mut().push(V3Signer::ROTATED_CERT);
    *w.wx.v3_signer.borrow_mut() = V3Signer::rotated();
    let (new_no, _) = create_v3(&w);
    assert_eq!(w.wx.sent_to(V3_CERTIFICATES).len(), 2);
    assert!(
        w.store
            .raw(&super::wechat::certificate_key(V3Signer::ROTATED_SERIAL))
            .is_some()
    );
    // Notifications signed by either certificate verify.
    let (r, _) = w.notify_request(&V3Notification::default().request(&w, &new_no, |_| {}));
    assert_eq!(r.status, 204, "{r:?}");
    *w.wx.v3_signer.borrow_mut() = V3Signer::platform();
    let (r, _) = w.notify_request(&V3Notification::default().request(&w, &old_no, |_| {}));
    assert_eq!(r.status, 204, "{r:?}");
}

#[test]
fn a_serial_still_unknown_after_the_refresh_is_refused() {
    // WeChat signs with a certificate its list does not carry: one download, then refused.
    let w = certificate_world(V3Signer::rotated());
    let r = w.create(json!({"sku": "coffee-L", "quantity": 1}));
    assert_eq!(code(&r), "wechat_reply_untrusted", "{r:?}");
    assert_eq!(w.wx.sent_to(V3_CERTIFICATES).len(), 1);
    // The notify route (no merchant key) never downloads: an unknown serial is a 401.
    let n = V3Notification::default().request(&w, "20240501000000deadbeef", |_| {});
    let (r, _) = w.notify_request(&n);
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(w.wx.sent_to(V3_CERTIFICATES).len(), 1);
}

#[test]
fn reconcile_fetches_platform_certificates_for_the_notify_route() {
    // WeChat rotated before any order met the new certificate: reconcile stores it, and the
    // notify route (which cannot fetch) verifies a notification signed with it.
    let w = certificate_world(V3Signer::platform());
    let (no, _) = create_v3(&w);
    w.wx.v3_listed.borrow_mut().push(V3Signer::ROTATED_CERT);
    *w.wx.v3_signer.borrow_mut() = V3Signer::rotated();
    let r = w.admin("POST", "/api/admin/reconcile", Value::Null);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(w.wx.sent_to(V3_CERTIFICATES).len(), 2);
    let (r, _) = w.notify_request(&V3Notification::default().request(&w, &no, |_| {}));
    assert_eq!(r.status, 204, "{r:?}");
    // In public-key mode there is nothing to fetch.
    let w = v3_world(public_key_mode());
    w.admin("POST", "/api/admin/reconcile", Value::Null);
    assert!(w.wx.sent_to(V3_CERTIFICATES).is_empty());
}

#[test]
fn reconcile_closes_an_expired_v3_order_and_settles_a_paid_one() {
    let w = v3_world(public_key_mode());
    let (open, _) = create_v3(&w);
    let (paid, _) = create_v3(&w);
    w.wx.pay(&paid, 3980);
    w.clock.advance(3 * 3600);
    let r = w.admin("POST", "/api/admin/reconcile", Value::Null);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(w.order(&open).status, Status::Closed);
    assert_eq!(w.order(&paid).status, Status::Paid);
    assert_eq!(
        w.wx.sent_to(&format!("/out-trade-no/{open}/close")).len(),
        1
    );
    assert_eq!(w.wx.trades.borrow()[&open].state, "CLOSED");
}
