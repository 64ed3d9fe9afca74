//! The mini program's path through the app: login, order, pay params, notification, status.

use serde_json::{Value, json};
use wxpay::pay_params::{PayParams, verify_pay_params};
use wxpay::secret::Secret;
use wxpay::v2::sign::SignType;
use wxpay::v2::xml;

use crate::support::*;

async fn happy_path(sign_type: SignType) {
    let w = World::with_sign_type(sign_type).await;
    let token = w.login("alice").await;

    // The client's amount is ignored: the catalog prices the order.
    let res = w
        .try_create(
            &token,
            json!({"sku": "tea", "quantity": 2, "total_fee": 1, "price": 1}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text());
    let created: Value = res.json().unwrap();
    let order = &created["order"];
    assert_eq!(order["total_fee"], 398);
    assert_eq!(order["quantity"], 2);
    assert_eq!(order["status"], "AWAITING_PAYMENT");
    assert!(order.get("openid").is_none() && order.get("prepay_id").is_none());
    let order_no = order["order_no"].as_str().unwrap().to_owned();

    // What WeChat was sent: the catalog amount, the user's openid, our sign type; a body of
    // declared length (not chunked), as XML.
    let request = &w.wechat.requests_to("/pay/unifiedorder")[0];
    let header = |name| request.headers.get(name).and_then(|v| v.to_str().ok());
    assert_eq!(
        header("content-length"),
        Some(request.body.len().to_string().as_str())
    );
    assert_eq!(header("content-type"), Some("text/xml; charset=utf-8"));
    let sent = xml::read(&request.body).unwrap();
    assert_eq!(sent["total_fee"], "398");
    assert_eq!(sent["openid"], openid("alice"));
    assert_eq!(sent["out_trade_no"], order_no);
    assert_eq!(sent["trade_type"], "JSAPI");
    assert_eq!(
        sent["notify_url"],
        "https://shop.example.com/api/wxpay/notify"
    );
    assert_eq!(
        sent.get("sign_type").map(String::as_str).unwrap_or("MD5"),
        sign_type.as_str()
    );

    let pay: PayParams = serde_json::from_value(created["pay_params"].clone()).unwrap();
    assert_eq!(pay.sign_type, sign_type.as_str());
    assert!(
        verify_pay_params(APPID, &pay, &Secret::new(API_KEY)),
        "paySign verifies"
    );
    let prepay_id = w.wechat.trade(&order_no).unwrap().prepay_id;
    assert_eq!(pay.package, format!("prepay_id={prepay_id}"));

    // The user pays; WeChat notifies.
    let notification = w.wechat.pay(&order_no, sign_type);
    let res = w.notify(notification).await;
    assert!(is_success(&res), "{}", res.text());
    assert!(res.header("content-type").unwrap().starts_with("text/xml"));
    let length = res.header("content-length").map(str::to_owned);
    assert_eq!(length, Some(res.text().len().to_string()));
    assert_eq!(res.header("cache-control"), Some("no-store"));

    let res = w.get_order(&token, &order_no).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let view: Value = res.json().unwrap();
    assert_eq!(view["status"], "PAID");
    let (tid, _) = w.wechat.trade(&order_no).unwrap().paid.unwrap();
    assert_eq!(view["transaction_id"], tid);
    assert_eq!(view["paid_at"], "2026-11-27T07:00:00Z");

    let admin = w.admin_order(&order_no).await;
    let to: Vec<_> = status_events(&admin)
        .iter()
        .map(|e| e["to"].clone())
        .collect();
    assert_eq!(to, [json!("AWAITING_PAYMENT"), json!("PAID")]);
    assert_eq!(admin["openid"], openid("alice"));
    w.assert_logs_clean();
}

#[tokio::test]
async fn happy_path_md5() {
    happy_path(SignType::Md5).await;
}

#[tokio::test]
async fn happy_path_hmac_sha256() {
    happy_path(SignType::HmacSha256).await;
}

#[tokio::test]
async fn resign_gives_fresh_valid_params_for_the_same_prepay_id() {
    let w = World::new().await;
    let token = w.login("alice").await;
    let created = w.create(&token, "cake", 1).await;
    let order_no = created["order"]["order_no"].as_str().unwrap();
    let first: PayParams = serde_json::from_value(created["pay_params"].clone()).unwrap();
    let calls = w.wechat.server.requests().len();

    // timeStamp has second resolution: make sure a new second starts.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let res = w.pay_params(&token, order_no).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let again: PayParams = res.json().unwrap();
    assert!(verify_pay_params(APPID, &again, &Secret::new(API_KEY)));
    assert_eq!(again.package, first.package);
    assert_ne!(again.nonce_str, first.nonce_str);
    assert_ne!(again.time_stamp, first.time_stamp);
    assert_ne!(again.pay_sign, first.pay_sign);
    assert_eq!(
        w.wechat.server.requests().len(),
        calls,
        "re-signing calls nobody"
    );
    w.assert_logs_clean();
}

#[tokio::test]
async fn resign_refuses_other_users_paid_and_expired_orders() {
    let w = World::new().await;
    let alice = w.login("alice").await;
    let bob = w.login("bob").await;
    let paid = w.create_order_no(&alice, "tea", 1).await;
    let open = w.create_order_no(&alice, "tea", 3).await;

    // Someone else's order, and a number that does not exist, look the same: 404.
    let res = w.pay_params(&bob, &open).await;
    assert_error(&res, 404, "order_not_found", "no such order");
    let res = w.get_order(&bob, &open).await;
    assert_error(&res, 404, "order_not_found", "no such order");
    let res = w.pay_params(&alice, "20261127000000ffffffffffffffff").await;
    assert_error(&res, 404, "order_not_found", "no such order");

    // Paid: 409.
    assert!(is_success(
        &w.notify(w.wechat.pay(&paid, SignType::Md5)).await
    ));
    let res = w.pay_params(&alice, &paid).await;
    assert_error(&res, 409, "not_awaiting_payment", "PAID");

    // Prepay expired: 410.
    let mut record = w.stored_json(&open);
    record["prepay_expires_at"] = json!(1_000_000_000u64);
    w.app
        .kv("default")
        .set(&format!("order:{open}"), record.to_string());
    let res = w.pay_params(&alice, &open).await;
    assert_error(&res, 410, "prepay_expired", "expired");
    w.assert_logs_clean();
}

#[tokio::test]
async fn lost_notification_polling_finds_paid() {
    let w = World::new().await;
    let token = w.login("alice").await;
    let order_no = w.create_order_no(&token, "tea", 1).await;

    // Not paid yet: WeChat says NOTPAY, the order still awaits payment.
    let res = w.get_order(&token, &order_no).await;
    assert_eq!(res.json::<Value>().unwrap()["status"], "AWAITING_PAYMENT");
    assert_eq!(w.wechat.requests_to("/pay/orderquery").len(), 1);

    // Paid at WeChat; the notification never arrives. The query is throttled (5 s per order):
    // pretend the last check was long ago rather than sleeping.
    let _ = w.wechat.pay(&order_no, SignType::Md5);
    w.app
        .kv("default")
        .delete(&format!("order:{order_no}:checked"));

    let res = w.get_order(&token, &order_no).await;
    let view: Value = res.json().unwrap();
    assert_eq!(view["status"], "PAID", "{view}");
    let (tid, _) = w.wechat.trade(&order_no).unwrap().paid.unwrap();
    assert_eq!(view["transaction_id"], tid);
    // The payment is its own fact; the base record was never rewritten.
    let paid: Value = w
        .app
        .kv("default")
        .get_json(&format!("order:{order_no}:paid"))
        .expect("payment stored");
    assert_eq!(paid["transaction_id"], tid);
    assert_eq!(w.stored_json(&order_no)["status"], "AWAITING_PAYMENT");

    // The late notification is then a duplicate: SUCCESS, nothing written.
    let before = w.stored(&order_no);
    assert!(is_success(
        &w.notify(w.wechat.pay(&order_no, SignType::Md5)).await
    ));
    assert_eq!(w.stored(&order_no), before);
    let admin = w.admin_order(&order_no).await;
    let paid = status_events(&admin)
        .iter()
        .filter(|e| e["to"] == "PAID")
        .count();
    assert_eq!(paid, 1);
    w.assert_logs_clean();
}

#[tokio::test]
async fn logs_are_one_json_line_per_request_and_state_change() {
    let w = World::new().await;
    let token = w.login("alice").await;
    let created = w.create(&token, "tea", 1).await;
    let order_no = created["order"]["order_no"].as_str().unwrap().to_owned();
    let body = w.wechat.pay(&order_no, SignType::Md5);
    assert!(is_success(&w.notify(body.clone()).await));
    assert!(is_success(&w.notify(body).await));

    let lines: Vec<Value> = w
        .app
        .log_entries()
        .iter()
        .map(|e| serde_json::from_str(e.text.trim_end()).expect("a JSON log line"))
        .collect();
    let of_order = |kind: &str| -> Vec<&Value> {
        lines
            .iter()
            .filter(|l| l["log"] == kind && l["order_no"] == order_no.as_str())
            .collect()
    };
    // Created, awaiting payment, paid: one line each, however many notifications came.
    let changes: Vec<(Value, Value)> = of_order("state_change")
        .iter()
        .map(|l| (l["from"].clone(), l["to"].clone()))
        .collect();
    assert_eq!(
        changes,
        [
            (Value::Null, json!("CREATED")),
            (json!("CREATED"), json!("AWAITING_PAYMENT")),
            (json!("AWAITING_PAYMENT"), json!("PAID")),
        ]
    );
    let requests = of_order("request");
    let outcomes: Vec<&str> = requests
        .iter()
        .map(|l| l["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["ok", "applied", "duplicate"]);
    assert_eq!(requests[0]["route"], "/api/orders");
    assert_eq!(requests[0]["status"], 201);
    assert_eq!(requests[1]["route"], "/api/wxpay/notify");
    assert!(
        requests
            .iter()
            .all(|l| l["latency_ms"].as_f64().unwrap() >= 0.0)
    );
    // The login line exists and names no openid, code or token.
    let login = lines
        .iter()
        .find(|l| l["route"] == "/api/login")
        .expect("a login line");
    assert_eq!(login["outcome"], "ok");
    w.assert_logs_clean();
}
