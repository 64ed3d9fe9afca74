//! `/api/admin/...`: authorization, the catalog, order records and reconciliation.

use serde_json::{Value, json};
use wxpay::v2::sign::SignType;

use crate::support::*;

#[tokio::test]
async fn admin_routes_need_the_admin_token() {
    let w = World::new().await;
    let user = w.login("alice").await;
    let routes = [
        ("GET", "/api/admin/products"),
        ("GET", "/api/admin/products/tea"),
        ("PUT", "/api/admin/products/tea"),
        ("DELETE", "/api/admin/products/tea"),
        ("GET", "/api/admin/orders/20261127000000ffffffffffffffff"),
        ("POST", "/api/admin/reconcile"),
        ("GET", "/api/admin/nothing-here"),
    ];
    let body = json!({"name": "Free tea", "price": 1}).to_string();
    for (method, path) in routes {
        for bearer in [
            None,
            Some("wrong-admin-token-0123456789"),
            Some(user.as_str()),
        ] {
            let res = w.send(req(method, path, bearer, body.clone())).await;
            assert_error(&res, 401, "unauthorized", "admin_token");
        }
    }
    // Nothing changed.
    let res = w
        .send(req(
            "GET",
            "/api/admin/products/tea",
            Some(ADMIN_TOKEN),
            String::new(),
        ))
        .await;
    assert_eq!(res.json::<Value>().unwrap()["price"], 199);
    let res = w
        .send(req(
            "GET",
            "/api/admin/nothing-here",
            Some(ADMIN_TOKEN),
            String::new(),
        ))
        .await;
    assert_error(&res, 404, "not_found", "nothing-here");
    w.assert_logs_clean();
}

#[tokio::test]
async fn product_crud() {
    let w = World::new().await;
    let admin = |method: &str, path: &str, body: Value| {
        req(
            method,
            path,
            Some(ADMIN_TOKEN),
            if body.is_null() {
                String::new()
            } else {
                body.to_string()
            },
        )
    };
    let res = w
        .send(admin(
            "PUT",
            "/api/admin/products/green-tea",
            json!({"name": "绿茶", "price": 1990}),
        ))
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(
        res.json::<Value>().unwrap(),
        json!({"sku": "green-tea", "name": "绿茶", "price": 1990, "active": true})
    );
    let res = w
        .send(admin("GET", "/api/admin/products/green-tea", Value::Null))
        .await;
    assert_eq!(res.json::<Value>().unwrap()["name"], "绿茶");
    let res = w
        .send(admin("GET", "/api/admin/products", Value::Null))
        .await;
    let skus: Vec<String> = res.json::<Value>().unwrap()["products"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["sku"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(skus, ["cake", "green-tea", "tea"]);

    // Update, then deactivate.
    let res = w
        .send(admin(
            "PUT",
            "/api/admin/products/green-tea",
            json!({"name": "绿茶", "price": 2990, "active": false}),
        ))
        .await;
    assert_eq!(res.json::<Value>().unwrap()["active"], false);

    // Invalid products.
    for (body, code) in [
        (json!({"name": "x", "price": 19.9}), "invalid_price"),
        (json!({"name": "x", "price": "19.90"}), "invalid_price"),
        (json!({"name": "x", "price": -1}), "invalid_price"),
        (json!({"name": "x", "price": 0}), "invalid_price"),
        (json!({"price": 100}), "invalid_name"),
        (json!({"name": "", "price": 100}), "invalid_name"),
        (
            json!({"name": "x", "price": 100, "active": "yes"}),
            "invalid_active",
        ),
    ] {
        let res = w
            .send(admin("PUT", "/api/admin/products/x1", body.clone()))
            .await;
        assert_error(&res, 400, code, code.trim_start_matches("invalid_"));
    }
    let res = w
        .send(admin(
            "PUT",
            "/api/admin/products/bad%20sku",
            json!({"name": "x", "price": 1}),
        ))
        .await;
    assert_error(&res, 400, "invalid_sku", "sku");
    assert!(w.app.kv("default").get("product:x1").is_none());

    // Delete.
    let res = w
        .send(admin(
            "DELETE",
            "/api/admin/products/green-tea",
            Value::Null,
        ))
        .await;
    assert_eq!(res.status, 204, "{}", res.text());
    let res = w
        .send(admin("GET", "/api/admin/products/green-tea", Value::Null))
        .await;
    assert_error(&res, 404, "unknown_sku", "green-tea");
    let res = w
        .send(admin(
            "DELETE",
            "/api/admin/products/green-tea",
            Value::Null,
        ))
        .await;
    assert_error(&res, 404, "unknown_sku", "green-tea");
    w.assert_logs_clean();
}

#[tokio::test]
async fn reconcile_closes_expired_orders_and_finds_paid_ones() {
    let w = World::new().await;
    let token = w.login("alice").await;
    let no = |v: Value| v["order"]["order_no"].as_str().unwrap().to_owned();
    let expired = no(w.create(&token, "tea", 1).await);
    let paid = no(w.create(&token, "tea", 2).await);
    let waiting = no(w.create(&token, "cake", 1).await);
    let done = no(w.create(&token, "cake", 2).await);
    assert!(is_success(
        &w.notify(w.wechat.pay(&done, SignType::Md5)).await
    ));

    let mut record = w.stored_json(&expired);
    record["prepay_expires_at"] = json!(1_000_000_000u64);
    w.app
        .kv("default")
        .set(&format!("order:{expired}"), record.to_string());
    let _ = w.wechat.pay(&paid, SignType::Md5); // paid; the notification is lost
    // Expired too, but the user is paying right now: not closed.
    let mut record = w.stored_json(&waiting);
    record["prepay_expires_at"] = json!(1_000_000_000u64);
    w.app
        .kv("default")
        .set(&format!("order:{waiting}"), record.to_string());
    w.wechat.set_trade_state(&waiting, "USERPAYING");

    let res = w
        .send(req(
            "POST",
            "/api/admin/reconcile",
            Some(ADMIN_TOKEN),
            String::new(),
        ))
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let report: Value = res.json().unwrap();
    assert_eq!(report["checked"], 3, "{report}");
    assert_eq!(report["paid"], 1, "{report}");
    assert_eq!(report["closed"], 1, "{report}");
    assert_eq!(report["failed"], 0, "{report}");

    assert!(
        w.wechat.trade(&expired).unwrap().closed,
        "closed at WeChat first"
    );
    let closed = w.admin_order(&expired).await;
    assert_eq!(closed["status"], "CLOSED");
    assert_eq!(status_events(&closed).last().unwrap()["to"], "CLOSED");
    let now_paid = w.admin_order(&paid).await;
    assert_eq!(now_paid["status"], "PAID");
    assert_eq!(
        now_paid["transaction_id"],
        w.wechat.trade(&paid).unwrap().paid.unwrap().0
    );
    assert_eq!(w.admin_order(&waiting).await["status"], "AWAITING_PAYMENT");
    assert!(!w.wechat.trade(&waiting).unwrap().closed);
    // The mini program sees it too.
    let res = w.get_order(&token, &expired).await;
    assert_eq!(res.json::<Value>().unwrap()["status"], "CLOSED");

    // A second run has nothing left to settle but the open order.
    let res = w
        .send(req(
            "POST",
            "/api/admin/reconcile",
            Some(ADMIN_TOKEN),
            String::new(),
        ))
        .await;
    let report: Value = res.json().unwrap();
    assert_eq!(
        (
            report["checked"].clone(),
            report["paid"].clone(),
            report["closed"].clone()
        ),
        (json!(1), json!(0), json!(0))
    );
    w.assert_logs_clean();
}

#[tokio::test]
async fn admin_order_shows_the_record_and_its_events() {
    let w = World::new().await;
    let token = w.login("bob").await;
    let created = w.create(&token, "tea", 1).await;
    let order_no = created["order"]["order_no"].as_str().unwrap();
    assert!(is_success(
        &w.notify(w.wechat.pay(order_no, SignType::Md5)).await
    ));
    let order = w.admin_order(order_no).await;
    assert_eq!(order["openid"], openid("bob"));
    assert_eq!(
        order["prepay_id"],
        w.wechat.trade(order_no).unwrap().prepay_id
    );
    let kinds: Vec<&str> = order["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    // Created → awaiting payment → paid; the payment itself is a fact, not a logged delivery.
    assert_eq!(kinds, ["status", "status"], "{order}");
    for e in order["events"].as_array().unwrap() {
        assert!(
            e["at"].as_str().unwrap().ends_with('Z') || e["at"].as_str().unwrap().contains('+')
        );
    }
    let res = w
        .send(req(
            "GET",
            "/api/admin/orders/20261127000000ffffffffffffffff",
            Some(ADMIN_TOKEN),
            String::new(),
        ))
        .await;
    assert_error(&res, 404, "order_not_found", "no such order");
    w.assert_logs_clean();
}
