//! `POST /api/wxpay/notify`: forged, mismatched, concurrent, unknown and failed-write
//! notifications.

use std::collections::BTreeMap;

use serde_json::Value;
use spin_test_host::{KvFailure, KvOpKind};
use wxpay::v2::sign::SignType;

use crate::support::*;

/// A world with one awaiting-payment order of alice's (2 × tea = 398 fen).
async fn one_order() -> (World, String) {
    let w = World::new().await;
    let token = w.login("alice").await;
    let order_no = w.create_order_no(&token, "tea", 2).await;
    (w, order_no)
}

fn paid_notification(order_no: &str, edit: impl FnOnce(&mut wxpay::v2::Params)) -> String {
    notification(
        order_no,
        &openid("alice"),
        398,
        "4200000000202611270000000777",
        "20261127150000",
        SignType::Md5,
        edit,
    )
}

fn snapshot(w: &World) -> BTreeMap<String, Vec<u8>> {
    w.app.kv("default").snapshot()
}

#[tokio::test]
async fn forged_notifications_fail_and_change_nothing() {
    let (w, order_no) = one_order().await;
    let before = snapshot(&w);
    let genuine = paid_notification(&order_no, |_| {});

    // Signed with another key.
    let mut p = wxpay::v2::xml::read(genuine.as_bytes()).unwrap();
    wxpay::v2::sign::sign_in_place(
        &mut p,
        &wxpay::secret::Secret::new("an0therKeyan0therKeyan0therKey12"),
        SignType::Md5,
    );
    let other_key = wxpay::v2::xml::write(&p);
    // A field changed after signing (the amount), the signature kept.
    let tampered = genuine.replace("<total_fee><![CDATA[398]]>", "<total_fee><![CDATA[1]]>");
    assert_ne!(tampered, genuine);
    // No signature at all; a claimed HMAC signature type that does not match.
    let unsigned = {
        let mut p = wxpay::v2::xml::read(genuine.as_bytes()).unwrap();
        p.remove("sign");
        wxpay::v2::xml::write(&p)
    };
    let wrong_type = {
        let mut p = wxpay::v2::xml::read(genuine.as_bytes()).unwrap();
        p.insert("sign_type".into(), "HMAC-SHA256".into());
        wxpay::v2::xml::write(&p)
    };
    for forged in [
        other_key,
        tampered,
        unsigned,
        wrong_type,
        "not xml".to_owned(),
        String::new(),
    ] {
        let res = w.notify(forged).await;
        assert!(is_fail(&res), "{}", res.text());
    }
    assert_eq!(
        snapshot(&w),
        before,
        "a forged notification changed the store"
    );
    let writes = w
        .app
        .kv("default")
        .ops()
        .into_iter()
        .filter(|op| op.component == "notify" && op.kind == KvOpKind::Set)
        .count();
    assert_eq!(writes, 0);
    assert_eq!(w.admin_order(&order_no).await["status"], "AWAITING_PAYMENT");
    w.assert_logs_clean();
}

#[tokio::test]
async fn validly_signed_mismatches_alert_and_do_not_pay() {
    let (w, order_no) = one_order().await;
    let cases: Vec<(String, &str)> = vec![
        (
            paid_notification(&order_no, |p| {
                p.insert("total_fee".into(), "1".into());
                p.insert("cash_fee".into(), "1".into());
            }),
            "total_fee 1",
        ),
        (
            paid_notification(&order_no, |p| {
                drop(p.insert("mch_id".into(), "1230000109".into()))
            }),
            "mch_id",
        ),
        (
            paid_notification(&order_no, |p| {
                drop(p.insert("appid".into(), "wxffffffffffffffff".into()))
            }),
            "appid",
        ),
        (
            paid_notification(&order_no, |p| {
                p.insert("result_code".into(), "FAIL".into());
                p.insert("err_code".into(), "NOTENOUGH".into());
            }),
            "result_code FAIL",
        ),
    ];
    for (body, reason) in cases {
        // Policy: answered SUCCESS (WeChat would only repeat the mismatch), not paid, alerted.
        let res = w.notify(body.clone()).await;
        assert!(is_success(&res), "{reason}: {}", res.text());
        let admin = w.admin_order(&order_no).await;
        assert_eq!(admin["status"], "AWAITING_PAYMENT", "{reason}");
        assert!(admin.get("transaction_id").is_none());
        assert!(
            alerts(&admin).iter().any(|a| a.contains(reason)),
            "no alert about {reason}: {:?}",
            alerts(&admin)
        );
        // The same mismatch again is recorded once: no further write.
        let before = w.stored(&order_no);
        assert!(is_success(&w.notify(body).await));
        assert_eq!(
            w.stored(&order_no),
            before,
            "{reason}: repeated alert rewrote the order"
        );
    }
    // The genuine payment still applies afterwards.
    assert!(is_success(
        &w.notify(paid_notification(&order_no, |_| {})).await
    ));
    assert_eq!(w.admin_order(&order_no).await["status"], "PAID");
    w.assert_logs_clean();
}

#[tokio::test]
async fn twenty_concurrent_identical_notifications_pay_once() {
    let (w, order_no) = one_order().await;
    let body = paid_notification(&order_no, |_| {});
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let app = w.app.clone();
        let body = body.clone();
        tasks.spawn(async move {
            app.request(req("POST", NOTIFY_PATH, None, body))
                .await
                .unwrap()
        });
    }
    let mut successes = 0;
    while let Some(res) = tasks.join_next().await {
        let res = res.unwrap();
        if is_success(&res) {
            successes += 1;
        }
    }
    assert_eq!(successes, 20);
    let admin = w.admin_order(&order_no).await;
    assert_eq!(admin["status"], "PAID");
    let to_paid = status_events(&admin)
        .iter()
        .filter(|e| e["to"] == "PAID")
        .count();
    assert_eq!(to_paid, 1, "{admin}");
    // One payment fact, whichever delivery wrote it last: they all wrote the same bytes.
    let paid: Value = w
        .app
        .kv("default")
        .get_json(&format!("order:{order_no}:paid"))
        .expect("payment stored");
    assert_eq!(paid["transaction_id"], admin["transaction_id"]);
    w.assert_logs_clean();
}

#[tokio::test]
async fn notification_for_an_unknown_order_fails() {
    let (w, _) = one_order().await;
    let before = snapshot(&w);
    for order_no in ["20261127000000ffffffffffffffff", "../../etc", "x"] {
        let res = w.notify(paid_notification(order_no, |_| {})).await;
        assert!(is_fail(&res), "{}", res.text());
    }
    assert_eq!(snapshot(&w), before);
    w.assert_logs_clean();
}

#[tokio::test]
async fn failed_write_answers_fail_and_the_retry_applies_once() {
    let (w, order_no) = one_order().await;
    let body = paid_notification(&order_no, |_| {});
    w.app
        .kv("default")
        .fail_sets_matching("order:", KvFailure::Times(1));
    let res = w.notify(body.clone()).await;
    assert!(is_fail(&res), "{}", res.text());
    assert_eq!(w.stored_json(&order_no)["status"], "AWAITING_PAYMENT");

    // WeChat retries: applied now, and once.
    assert!(is_success(&w.notify(body.clone()).await));
    assert!(is_success(&w.notify(body).await));
    let admin = w.admin_order(&order_no).await;
    assert_eq!(admin["status"], "PAID");
    assert_eq!(
        status_events(&admin)
            .iter()
            .filter(|e| e["to"] == "PAID")
            .count(),
        1
    );
    let sets = w
        .app
        .kv("default")
        .ops()
        .into_iter()
        .filter(|op| op.component == "notify" && op.kind == KvOpKind::Set)
        .map(|op| op.failed)
        .collect::<Vec<_>>();
    assert_eq!(
        sets,
        [true, false],
        "one failed write, one real write, no write for the duplicate"
    );
    w.assert_logs_clean();
}

#[tokio::test]
async fn notify_route_answers_xml_to_everything() {
    let (w, _) = one_order().await;
    // Oversized body: FAIL XML, not JSON.
    let big = format!("<xml><a>{}</a></xml>", "x".repeat(70 * 1024));
    let res = w.notify(big).await;
    assert!(
        is_fail(&res),
        "{:?} {}",
        res.header("content-type"),
        res.text()
    );
    // XXE: refused before anything is resolved.
    let xxe = r#"<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><xml><out_trade_no>&e;</out_trade_no></xml>"#;
    let res = w.notify(xxe).await;
    assert!(is_fail(&res), "{}", res.text());
    assert!(!res.text().contains("root:"));
    // A GET is refused (405) but still in the route's own language.
    let res = w.send(req("GET", NOTIFY_PATH, None, String::new())).await;
    assert_eq!(res.status, 405, "{}", res.text());
    let _: Value = res.json().unwrap();
    w.assert_logs_clean();
}

/// Opening the store costs a round trip to the backend (Spin 4.0.2 PINGs Redis on every open),
/// so a component opens it once per instance, not per request, and again after a failed
/// operation (a backend outage is not remembered past its end).
#[tokio::test]
async fn the_store_is_opened_once_per_instance_and_again_after_a_failure() {
    let (w, order_no) = one_order().await;
    let notification = paid_notification(&order_no, |_| {});
    let kv = w.app.kv("default");
    let opens = || {
        kv.ops()
            .iter()
            .filter(|op| op.component == "notify" && op.kind == KvOpKind::Open)
            .count()
    };
    for _ in 0..10 {
        assert!(is_success(&w.notify(notification.clone()).await));
    }
    let instances = w.app.instances_created("notify").unwrap() as usize;
    assert!(
        instances < 10,
        "instances are reused ({instances} for 10 requests)"
    );
    assert_eq!(opens(), instances, "one open per instance");
    // A failed read: that request answers FAIL, the next one opens the store again.
    kv.fail_gets_matching("order:", KvFailure::Times(1));
    assert!(is_fail(&w.notify(notification.clone()).await));
    assert!(is_success(&w.notify(notification.clone()).await));
    let instances = w.app.instances_created("notify").unwrap() as usize;
    assert_eq!(opens(), instances + 1, "reopened after the failure");
    w.assert_logs_clean();
}

/// WeChat repeats a notification until it hears success, often several copies at once: a
/// repeat of a recorded payment is answered from one store read (the payment fact), and a
/// status poll of a paid order reads the base record, the payment and the refunds marker.
#[tokio::test]
async fn store_reads_of_a_duplicate_notification_and_a_poll() {
    let (w, order_no) = one_order().await;
    let notification = paid_notification(&order_no, |_| {});
    let kv = w.app.kv("default");
    assert!(is_success(&w.notify(notification.clone()).await));
    let token = w.login("alice").await;
    let ops = |kv: &spin_test_host::KvStore| -> Vec<(KvOpKind, String)> {
        kv.ops()
            .into_iter()
            .filter(|op| op.kind != KvOpKind::Open)
            .map(|op| (op.kind, op.key.replace(&order_no, "{no}")))
            .collect()
    };
    kv.clear_ops();
    assert!(is_success(&w.notify(notification.clone()).await));
    assert_eq!(ops(&kv), [(KvOpKind::Get, "order:{no}:paid".to_owned())]);
    kv.clear_ops();
    let res = w.get_order(&token, &order_no).await;
    assert_eq!(res.status, 200);
    let get = |key: &str| (KvOpKind::Get, key.to_owned());
    assert_eq!(
        ops(&kv),
        [
            get("order:{no}"),
            get("order:{no}:paid"),
            get("order:{no}:refunds")
        ]
    );
    w.assert_logs_clean();
}
