//! Refunds end to end over HTTP in the test host, in live mode against the fake WeChat Pay
//! APIv3 (`fake_v3.rs`, which makes one refund per `out_refund_no` and counts every request):
//! `POST /api/admin/orders/{no}/refunds`, `POST /api/wxpay/refund-notify`, the order views and
//! reconcile. (APIv2 refunds, which need the merchant's client certificate, are in `mtls.rs`.)

use serde_json::{Value, json};
use spin_test_host::TestResponse;
use wxpay::refund::{
    RefundAsked, RefundOutcome, RefundStatus, asked_key, cleared_key, marker_key, outcome_key,
};

use crate::fake_v3::{KeyMode, lock, notify_request, now};
use crate::support::{ADMIN_TOKEN, assert_error, req};
use crate::v3::V3World;

const REFUND_NOTIFY_PATH: &str = "/api/wxpay/refund-notify";
const REFUNDS_PATH: &str = wxpay::v3::refund::REFUNDS_PATH;

impl V3World {
    /// A created order (2 × 1.99), paid: WeChat's notification acknowledged.
    async fn paid(&self) -> String {
        let (no, _) = self.create().await;
        self.wechat.pay(&no);
        let (body, headers) = self.wechat.notification(&no, "transaction", 0, |_| {});
        assert_eq!(self.notify(&body, &headers).await.status, 204);
        no
    }

    async fn refund(&self, no: &str, body: Value) -> TestResponse {
        self.send(req(
            "POST",
            &format!("/api/admin/orders/{no}/refunds"),
            Some(ADMIN_TOKEN),
            body.to_string(),
        ))
        .await
    }

    async fn refund_notify(
        &self,
        body: &str,
        headers: &wxpay::v3::verify::SignatureHeaders,
    ) -> http::StatusCode {
        let mut request = notify_request(body, headers);
        *request.uri_mut() = REFUND_NOTIFY_PATH.parse().unwrap();
        self.send(request).await.status
    }

    async fn user_order(&self, no: &str) -> Value {
        let res = self
            .send(req(
                "GET",
                &format!("/api/orders/{no}"),
                Some(&self.token),
                String::new(),
            ))
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
        res.json().unwrap()
    }

    async fn reconcile(&self) -> Value {
        let res = self
            .send(req(
                "POST",
                "/api/admin/reconcile",
                Some(ADMIN_TOKEN),
                String::new(),
            ))
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
        res.json().unwrap()
    }
}

fn events_to(refund: &Value, status: &str) -> usize {
    refund["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["status"] == status)
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_refund_is_settled_once_by_twenty_concurrent_notifications() {
    let w = V3World::new(KeyMode::PublicKey).await;
    let no = w.paid().await;
    let res = w
        .refund(&no, json!({"amount": 398, "reason": "售罄 sold out"}))
        .await;
    assert_eq!(res.status, 201, "{}", res.text());
    let refund: Value = res.json().unwrap();
    assert_eq!(refund["status"], "PROCESSING");
    assert_eq!(refund["amount"], 398);
    let refund_no = refund["refund_no"].as_str().unwrap().to_owned();
    assert_eq!(refund["refund_id"], format!("5000{refund_no}"));
    assert_eq!(w.wechat.refund_requests(&refund_no), 1);

    // Refund notifications that cannot be trusted or are not ours: 401, and nothing changes.
    let kv = w.app.kv("default");
    let before = kv.snapshot();
    let (good, headers) = w.wechat.refund_notification(&refund_no, "SUCCESS", |_| {});
    let tampered = good.replacen("\"ciphertext\":\"", "\"ciphertext\":\"AAAA", 1);
    let (foreign, foreign_headers) = w
        .wechat
        .refund_notification(&refund_no, "SUCCESS", |r| r["mchid"] = "1999999999".into());
    let undecryptable = {
        let json = json!({"out_refund_no": refund_no});
        wxpay::v3::refund::refund_envelope(
            &wxpay::secret::Secret::new("0".repeat(32)),
            "abcdef012345",
            "EV-x",
            "2026-12-01T20:10:01+08:00",
            "REFUND.SUCCESS",
            &json.to_string(),
        )
        .unwrap()
    };
    let undecryptable_headers = w.wechat.sign(now(), undecryptable.as_bytes());
    for (name, body, headers) in [
        ("tampered", &tampered, &headers),
        ("foreign mchid", &foreign, &foreign_headers),
        ("undecryptable", &undecryptable, &undecryptable_headers),
    ] {
        assert_eq!(w.refund_notify(body, headers).await, 401, "{name}");
    }
    assert_eq!(
        kv.snapshot(),
        before,
        "a refused notification writes nothing"
    );

    // WeChat's REFUND.SUCCESS, delivered 20 times at once: every copy 204, one SUCCESS.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let app = w.app.clone();
        let mut request = notify_request(&good, &headers);
        *request.uri_mut() = REFUND_NOTIFY_PATH.parse().unwrap();
        tasks.spawn(async move { app.request(request).await.unwrap() });
    }
    while let Some(res) = tasks.join_next().await {
        let res = res.unwrap();
        assert_eq!(res.status, 204, "{}", res.text());
    }
    let order = w.admin_order(&no).await;
    assert_eq!(order["status"], "REFUNDED", "{order}");
    assert_eq!(order["refunded_total"], 398);
    assert_eq!(order["refunds"][0]["status"], "SUCCESS");
    assert_eq!(events_to(&order["refunds"][0], "SUCCESS"), 1, "{order}");
    let user = w.user_order(&no).await;
    assert_eq!(user["status"], "REFUNDED");
    assert_eq!(user["refunds"][0]["amount"], 398);
    assert_eq!(user["refunds"][0]["status"], "SUCCESS");
    assert!(user["refunds"][0].get("refund_no").is_none(), "{user}");
    // The same request again: the refund as it stands, never a second one.
    let again = w
        .refund(&no, json!({"amount": 398, "refund_no": refund_no}))
        .await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json::<Value>().unwrap()["status"], "SUCCESS");
    assert_eq!(w.wechat.refund_requests(&refund_no), 1);
    w.assert_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refund_whose_reply_timed_out_is_made_once_and_reconcile_settles_it() {
    let w = V3World::new(KeyMode::PublicKey).await;
    let no = w.paid().await;
    // WeChat makes the refund, but its replies come after the app's 4 s first-byte timeout.
    lock(&w.wechat.state)
        .faults
        .insert("refund", ["timeout", "timeout"].into());
    let res = w
        .refund(&no, json!({"amount": 100, "refund_no": "RT1"}))
        .await;
    assert_error(&res, 504, "wechat_unreachable", "RT1");
    assert_eq!(w.wechat.refund_requests("RT1"), 2);
    assert_eq!(lock(&w.wechat.state).refunds.len(), 1);
    let order = w.admin_order(&no).await;
    assert_eq!(order["refunds"][0]["status"], "PROCESSING", "{order}");
    // The admin sends the same request again: the same number, and WeChat refunds once.
    let res = w
        .refund(&no, json!({"amount": 100, "refund_no": "RT1"}))
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(w.wechat.refund_requests("RT1"), 3);
    assert_eq!(lock(&w.wechat.state).refunds.len(), 1);

    // The refund notification is lost; reconcile asks WeChat and records the SUCCESS.
    assert_eq!(w.reconcile().await["refunds_settled"], 0);
    lock(&w.wechat.state).refunds.get_mut("RT1").unwrap().status = "SUCCESS";
    let report = w.reconcile().await;
    assert_eq!(report["refunds_settled"], 1, "{report}");
    let user = w.user_order(&no).await;
    assert_eq!(user["status"], "PAID", "a partial refund");
    assert_eq!(user["refunded_total"], 100);
    assert_eq!(user["refunds"][0]["status"], "SUCCESS");
    assert_eq!(user["refunds"][0]["settled_at"], "2026-12-01T12:10:00Z");
    w.assert_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn refunds_against_the_rules_are_refused_before_wechat_is_called() {
    let w = V3World::new(KeyMode::PublicKey).await;
    let (unpaid, _) = w.create().await;
    assert_error(
        &w.refund(&unpaid, json!({"amount": 1})).await,
        409,
        "not_paid",
        "AWAITING_PAYMENT",
    );
    let no = w.paid().await;
    assert_error(
        &w.refund(&no, json!({"amount": 399})).await,
        409,
        "refund_exceeds_paid",
        "398 fen paid",
    );
    assert_error(
        &w.refund(&no, json!({"amount": 0})).await,
        400,
        "invalid_amount",
        "at least 1",
    );
    assert_error(
        &w.refund(&no, json!({"amount": 1.5})).await,
        400,
        "invalid_amount",
        "integer",
    );
    assert_error(
        &w.refund(&no, json!({"amount": 1, "refund_no": "R 1"}))
            .await,
        400,
        "invalid_refund_no",
        "refund_no",
    );
    let unauthorized = w
        .send(req(
            "POST",
            &format!("/api/admin/orders/{no}/refunds"),
            Some("not-the-admin-token"),
            json!({"amount": 1}).to_string(),
        ))
        .await;
    assert_eq!(unauthorized.status, 401);

    // 50 refunds made long ago (1 fen each, settled): the 51st is refused.
    let kv = w.app.kv("default");
    let long_ago = now() - 3600;
    for i in 0..50 {
        let refund_no = format!("OLD{i}");
        let asked = RefundAsked {
            refund_no: refund_no.clone(),
            amount: wxpay::money::Fen(1),
            reason: None,
            requested_at: long_ago,
        };
        kv.set(
            &asked_key(&no, &refund_no),
            serde_json::to_vec(&asked).unwrap(),
        );
        kv.set(&cleared_key(&no, &refund_no), long_ago.to_string());
        let outcome = RefundOutcome {
            refund_id: format!("5000{refund_no}"),
            success_time: Some(long_ago),
            recorded_at: long_ago,
        };
        kv.set(
            &outcome_key(&no, &refund_no, RefundStatus::Success),
            serde_json::to_vec(&outcome).unwrap(),
        );
    }
    kv.set(&marker_key(&no), "1");
    assert_eq!(w.admin_order(&no).await["refunded_total"], 50);
    assert_error(
        &w.refund(&no, json!({"amount": 1})).await,
        409,
        "too_many_refunds",
        "at most 50",
    );
    assert_eq!(w.wechat.requests_to(REFUNDS_PATH), 0, "WeChat never asked");
    w.assert_clean();
}
