//! WeChat Pay misbehaving during order creation: busy, untrusted, refusing, unreachable, slow.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wxpay::v2::sign::SignType;

use crate::support::*;

const UNIFIED: &str = "/pay/unifiedorder";

/// No pay params, and the order is not payable.
fn assert_no_pay_params(res: &spin_test_host::TestResponse) {
    let body: Value = res.json().unwrap();
    assert!(
        body.get("pay_params").is_none() && body.get("order").is_none(),
        "{body}"
    );
    assert!(!res.text().contains("paySign"));
}

#[tokio::test]
async fn systemerror_is_retried_with_identical_parameters() {
    let w = World::new().await;
    let token = w.login("alice").await;
    w.wechat.fault(UNIFIED, Fault::SystemError, 2);
    let created = w.create(&token, "tea", 1).await;
    assert_eq!(created["order"]["status"], "AWAITING_PAYMENT");
    let sent = w.wechat.requests_to(UNIFIED);
    assert_eq!(sent.len(), 3, "two SYSTEMERRORs, then success");
    assert_eq!(
        sent[0].body, sent[1].body,
        "a retry sends the identical bytes"
    );
    assert_eq!(
        sent[1].body, sent[2].body,
        "a retry sends the identical bytes"
    );

    // Busy on every attempt: 503, the order is not payable, reconcile can settle it later.
    w.wechat.fault(UNIFIED, Fault::SystemError, 3);
    let res = w
        .try_create(&token, json!({"sku": "tea", "quantity": 1}))
        .await;
    assert_error(&res, 503, "wechat_busy", "SYSTEMERROR");
    let sent = w.wechat.requests_to(UNIFIED);
    assert_eq!(sent.len(), 6);
    assert!(sent[3..].iter().all(|r| r.body == sent[3].body));
    w.assert_logs_clean();
}

#[tokio::test]
async fn reply_with_a_bad_signature_is_not_trusted() {
    let w = World::new().await;
    let token = w.login("alice").await;
    w.wechat.fault(UNIFIED, Fault::BadSignature, 1);
    let res = w
        .try_create(&token, json!({"sku": "tea", "quantity": 1}))
        .await;
    assert!(res.status.is_server_error(), "{}", res.text());
    assert_error(&res, 502, "wechat_reply_untrusted", "signature");
    assert_no_pay_params(&res);
    // Nothing stored is payable.
    let kv = w.app.kv("default");
    for key in kv.keys().into_iter().filter(|k| k.starts_with("order:")) {
        let order: Value = kv.get_json(&key).unwrap();
        assert_ne!(order["status"], "AWAITING_PAYMENT", "{order}");
        assert!(order.get("prepay_id").is_none(), "{order}");
    }
    w.assert_logs_clean();
}

#[tokio::test]
async fn return_code_fail_and_refusals_are_502() {
    let w = World::new().await;
    let token = w.login("alice").await;
    w.wechat
        .fault(UNIFIED, Fault::ReturnFail("mch_id参数格式错误"), 1);
    let res = w
        .try_create(&token, json!({"sku": "tea", "quantity": 1}))
        .await;
    assert_error(&res, 502, "wechat_refused", "mch_id参数格式错误");
    assert_no_pay_params(&res);
    assert_eq!(
        w.wechat.requests_to(UNIFIED).len(),
        1,
        "a call failure is not retried"
    );

    w.wechat.fault(UNIFIED, Fault::ErrCode("NOAUTH"), 1);
    let res = w
        .try_create(&token, json!({"sku": "tea", "quantity": 1}))
        .await;
    assert_error(&res, 502, "wechat_refused", "NOAUTH");
    assert_eq!(
        w.wechat.requests_to(UNIFIED).len(),
        2,
        "NOAUTH is not retried"
    );
    w.assert_logs_clean();
}

/// A reply larger than any WeChat reply is not read past the limit: the order is not created
/// on its strength (retried like an unreachable host, then 504).
#[tokio::test]
async fn oversized_replies_are_cut_off() {
    let w = World::new().await;
    let token = w.login("alice").await;
    w.wechat.fault(UNIFIED, Fault::Oversized, 3);
    let res = w
        .try_create(&token, json!({"sku": "tea", "quantity": 1}))
        .await;
    assert_error(&res, 504, "wechat_unreachable", "could not be reached");
    assert_eq!(w.wechat.requests_to(UNIFIED).len(), 3);
    let created = w.create(&token, "tea", 1).await;
    assert_eq!(created["order"]["status"], "AWAITING_PAYMENT");
    w.assert_logs_clean();
}

#[tokio::test]
async fn unreachable_wechat_is_504() {
    let wechat = FakeWechat::start().await;
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let app = spin_test_host::TestApp::builder(MANIFEST)
        .variable("wxpay_mode", "live")
        .variable("wx_appid", APPID)
        .variable("wx_app_secret", APP_SECRET)
        .variable("wxpay_mch_id", MCH_ID)
        .variable("wxpay_api_key", API_KEY)
        .variable(
            "wxpay_notify_url",
            "https://shop.example.com/api/wxpay/notify",
        )
        .variable("wxpay_mch_api", format!("http://{closed}"))
        .variable("wx_api", format!("http://{closed}"))
        .variable("session_secret", SESSION_SECRET)
        .variable("admin_token", ADMIN_TOKEN)
        .start()
        .await
        .unwrap();
    let res = app
        .request(req(
            "POST",
            "/api/login",
            None,
            json!({"code": "u-alice-1"}).to_string(),
        ))
        .await
        .unwrap();
    assert_error(&res, 504, "wechat_unreachable", "could not be reached");

    let token = wxpay::session::issue(
        &wxpay::secret::Secret::new(SESSION_SECRET),
        &openid("alice"),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        600,
    )
    .unwrap();
    let put = req(
        "PUT",
        "/api/admin/products/tea",
        Some(ADMIN_TOKEN),
        json!({"name": "Tea", "price": 199}).to_string(),
    );
    assert_eq!(app.request(put).await.unwrap().status, 200);
    let res = app
        .request(req(
            "POST",
            "/api/orders",
            Some(&token),
            json!({"sku": "tea", "quantity": 1}).to_string(),
        ))
        .await
        .unwrap();
    assert_error(&res, 504, "wechat_unreachable", "could not be reached");
    assert_no_secrets_logged(&app, &[token]);
    drop(wechat);
}

/// The only slow test: one first-byte timeout (4 s in src/spin.rs) is waited for, once.
#[tokio::test]
async fn wechat_timeouts_are_retried_once_then_504() {
    let w = World::with_sign_type(SignType::Md5).await;
    let token = w.login("alice").await;
    w.wechat
        .fault(UNIFIED, Fault::Delay(Duration::from_millis(4300)), 2);
    let started = Instant::now();
    let res = w
        .try_create(&token, json!({"sku": "tea", "quantity": 1}))
        .await;
    let took = started.elapsed();
    assert_error(&res, 504, "wechat_unreachable", "in time");
    assert_no_pay_params(&res);
    assert!(
        took >= Duration::from_secs(8),
        "answered before two timeouts: {took:?}"
    );
    assert!(
        took < Duration::from_secs(12),
        "waited for more than two timeouts: {took:?}"
    );
    let sent = w.wechat.requests_to(UNIFIED);
    assert_eq!(sent.len(), 2);
    assert_eq!(
        sent[0].body, sent[1].body,
        "the retry must send identical bytes"
    );
    w.assert_logs_clean();
}
