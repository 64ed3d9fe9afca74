//! The refund flows against the fake WeChat's refund endpoints in
//! both versions: one refund per number however often it is asked, nothing over the paid
//! total, rules checked before WeChat is asked, and notifications that must decrypt with our
//! key and name a refund we asked for.

use super::*;
use crate::flows::refunds as refund_flows;
use crate::refund::{RefundStatus, asked_key, marker_key};
use crate::v2::refund::{REFUND_PATH, encrypt_req_info};

/// An order of 3980 fen, paid (WeChat's trade SUCCESS, the notification applied).
fn paid(w: &World) -> String {
    let no = w.awaiting();
    w.wx.pay(&no, 3980);
    let (r, _) = w.notify(&w.notification(&no, |p| {
        p.insert("transaction_id".into(), format!("4200{no}"));
    }));
    assert_eq!(r.body, SUCCESS_REPLY.as_bytes());
    no
}

fn refund(w: &World, no: &str, body: Value) -> Response {
    let request = Request::new(body.to_string()).with_bearer(ADMIN_TOKEN);
    block_on(refund_flows::create(&w.admin_env(), &request, no))
}

fn refunds_of(w: &World, no: &str) -> Vec<crate::refund::Refund> {
    block_on(refund_flows::load_refunds(&w.store, no)).unwrap()
}

/// WeChat's APIv2 refund notification: `<root>` encrypted into `req_info` with the merchant's
/// API key, in the outer `<xml>` (no `sign`).
pub(super) fn v2_refund_notification(
    m: &MerchantConfig,
    no: &str,
    refund_no: &str,
    fee: u64,
) -> Vec<u8> {
    let plain = format!(
        "<root><out_refund_no><![CDATA[{refund_no}]]></out_refund_no>\
         <out_trade_no><![CDATA[{no}]]></out_trade_no>\
         <refund_id><![CDATA[5000{refund_no}]]></refund_id>\
         <refund_fee><![CDATA[{fee}]]></refund_fee><total_fee><![CDATA[3980]]></total_fee>\
         <refund_status><![CDATA[SUCCESS]]></refund_status>\
         <success_time><![CDATA[2024-05-01 17:00:00]]></success_time></root>"
    );
    let mut outer = Params::new();
    outer.insert("return_code".into(), "SUCCESS".into());
    outer.insert("appid".into(), m.appid.clone());
    outer.insert("mch_id".into(), m.mch_id.clone());
    outer.insert("nonce_str".into(), "TeqClE3i0mvn3DrK".into());
    outer.insert(
        "req_info".into(),
        encrypt_req_info(plain.as_bytes(), m.v2_key().unwrap()),
    );
    xml::write(&outer).into_bytes()
}

fn refund_notify(w: &World, body: Vec<u8>) -> (Response, notify::NotifyOutcome) {
    block_on(refund_flows::notify(&w.notify_env(), &Request::new(body)))
}

#[test]
fn a_full_refund_is_made_once_and_settled_by_its_notification() {
    let w = World::new();
    let no = paid(&w);
    let r = refund(
        &w,
        &no,
        json!({"amount": 3980, "refund_no": "R1", "reason": "售罄"}),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let body = r.json_body().unwrap();
    assert_eq!(body["status"], "PROCESSING");
    assert_eq!(body["refund_id"], "5000R1");
    assert_eq!(w.wx.refunds.borrow()["R1"], (no.clone(), 3980));
    assert!(w.store.raw(&marker_key(&no)).is_some());
    // The same request again: the refund as it stands, no second refund.
    let again = refund(&w, &no, json!({"amount": 3980, "refund_no": "R1"}));
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(w.wx.refund_requests.borrow()["R1"], 1);
    // WeChat's notification settles it; duplicates write nothing.
    let notification = v2_refund_notification(&w.merchant, &no, "R1", 3980);
    let (r, outcome) = refund_notify(&w, notification.clone());
    assert_eq!(r.body, SUCCESS_REPLY.as_bytes(), "{outcome:?}");
    let writes = w.store.writes.get();
    for _ in 0..5 {
        let (r, outcome) = refund_notify(&w, notification.clone());
        assert_eq!(r.body, SUCCESS_REPLY.as_bytes());
        assert!(matches!(outcome, notify::NotifyOutcome::Duplicate { .. }));
    }
    assert_eq!(w.store.writes.get(), writes);
    let refunds = refunds_of(&w, &no);
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0].status, RefundStatus::Success);
    assert_eq!(refunds[0].settled_at, Some(1_714_554_000));
    assert!(crate::refund::fully_refunded(&w.order(&no), &refunds));
}

#[test]
fn partial_refunds_never_exceed_the_paid_total_and_are_checked_before_wechat() {
    let w = World::new();
    let no = paid(&w);
    assert_eq!(
        refund(&w, &no, json!({"amount": 1000, "refund_no": "R1"})).status,
        201
    );
    // Within a minute: "retry in a minute".
    let r = refund(&w, &no, json!({"amount": 1000, "refund_no": "R2"}));
    assert_eq!(
        (r.status, code(&r)),
        (429, "refund_too_soon".to_owned()),
        "{r:?}"
    );
    w.clock.advance(61);
    let r = refund(&w, &no, json!({"amount": 2981, "refund_no": "R2"}));
    assert_eq!(code(&r), "refund_exceeds_paid", "{r:?}");
    assert!(
        !w.wx.refund_requests.borrow().contains_key("R2"),
        "WeChat never asked"
    );
    assert_eq!(
        refund(&w, &no, json!({"amount": 2980, "refund_no": "R2"})).status,
        201
    );
    // A number used for another amount is a conflict, not a new refund.
    let r = refund(&w, &no, json!({"amount": 5, "refund_no": "R1"}));
    assert_eq!(code(&r), "refund_no_conflict", "{r:?}");
    // Unpaid orders, bad amounts and numbers are refused before WeChat is asked.
    let unpaid = w.awaiting();
    let r = refund(&w, &unpaid, json!({"amount": 1, "refund_no": "R3"}));
    assert_eq!(code(&r), "not_paid", "{r:?}");
    for (body, expected) in [
        (json!({"amount": 0}), "invalid_amount"),
        (json!({"amount": "1"}), "invalid_amount"),
        (json!({}), "invalid_amount"),
        (
            json!({"amount": 1, "refund_no": "not ok"}),
            "invalid_refund_no",
        ),
    ] {
        assert_eq!(code(&refund(&w, &no, body.clone())), expected, "{body}");
    }
    assert_eq!(w.wx.refunds.borrow().len(), 2);
    let r = refund(&w, "20240501000000deadbeef", json!({"amount": 1}));
    assert_eq!(code(&r), "order_not_found");
}

#[test]
fn a_refund_whose_reply_was_lost_is_sent_again_with_the_same_number() {
    let w = World::new();
    let no = paid(&w);
    w.wx.fault(REFUND_PATH, Fault::Timeout);
    w.wx.fault(REFUND_PATH, Fault::Timeout);
    let r = refund(&w, &no, json!({"amount": 3980, "refund_no": "R1"}));
    assert_eq!((r.status, code(&r)), (504, "wechat_unreachable".into()));
    assert!(String::from_utf8_lossy(&r.body).contains("retry with the same refund_no"));
    // Recorded, holding its money: no second refund can take it meanwhile.
    let refunds = refunds_of(&w, &no);
    assert_eq!(refunds[0].status, RefundStatus::Processing);
    w.clock.advance(61);
    let r = refund(&w, &no, json!({"amount": 1, "refund_no": "R2"}));
    assert_eq!(code(&r), "refund_exceeds_paid");
    // The same request again: sent again with the same number, accepted once.
    let r = refund(&w, &no, json!({"amount": 3980, "refund_no": "R1"}));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json_body().unwrap()["refund_id"], "5000R1");
    assert_eq!(w.wx.refunds.borrow().len(), 1);
    // A busy WeChat is asked again with identical bytes within the request.
    let w = World::new();
    let no = paid(&w);
    w.wx.fault(REFUND_PATH, Fault::Refuse("SYSTEMERROR"));
    w.wx.fault(REFUND_PATH, Fault::Refuse("BIZERR_NEED_RETRY"));
    assert_eq!(
        refund(&w, &no, json!({"amount": 10, "refund_no": "R1"})).status,
        201
    );
    let sent = w.wx.sent_to(REFUND_PATH);
    assert_eq!(sent.len(), 3);
    assert!(sent.iter().all(|s| s == &sent[0]));
}

#[test]
fn a_refused_refund_holds_no_money() {
    let w = World::new();
    let no = paid(&w);
    w.wx.fault(REFUND_PATH, Fault::Refuse("NOTENOUGH"));
    let r = refund(&w, &no, json!({"amount": 3980, "refund_no": "R1"}));
    assert_eq!(code(&r), "wechat_refused", "{r:?}");
    assert!(String::from_utf8_lossy(&r.body).contains("NOTENOUGH"));
    assert_eq!(refunds_of(&w, &no)[0].status, RefundStatus::Closed);
    w.clock.advance(61);
    assert_eq!(
        refund(&w, &no, json!({"amount": 3980, "refund_no": "R2"})).status,
        201
    );
}

/// Records a refund as a request does before checking it (no CLEARED, no REFUSED yet).
fn record_unchecked(w: &World, no: &str, refund_no: &str, amount: u64) {
    let asked = crate::refund::RefundAsked {
        refund_no: refund_no.into(),
        amount: Fen(amount),
        reason: None,
        requested_at: w.clock.now_unix(),
    };
    w.store.data.borrow_mut().insert(
        asked_key(no, refund_no),
        serde_json::to_vec(&asked).unwrap(),
    );
}

/// A refund recorded by a request that has not (yet) checked it is never sent by another
/// request; one refused after it was recorded (it lost a race) keeps its number unused.
#[test]
fn only_the_recording_request_clears_a_refund_for_wechat() {
    let w = World::new();
    let no = paid(&w);
    record_unchecked(&w, &no, "R1", 100);
    let r = refund(&w, &no, json!({"amount": 100, "refund_no": "R1"}));
    assert_eq!((r.status, code(&r)), (503, "refund_being_checked".into()));
    assert!(w.wx.refunds.borrow().is_empty());
    // Unchecked, it holds its money: nothing else fits beside it.
    w.clock.advance(61);
    let r = refund(&w, &no, json!({"amount": 3900, "refund_no": "R2"}));
    assert_eq!(code(&r), "refund_exceeds_paid", "{r:?}");

    let refused = crate::refund::RefundRefused {
        message: "over".into(),
        at: 0,
    };
    w.store.data.borrow_mut().insert(
        crate::refund::refused_key(&no, "R1"),
        serde_json::to_vec(&refused).unwrap(),
    );
    assert!(
        refunds_of(&w, &no).is_empty(),
        "a refused refund is not one"
    );
    let r = refund(&w, &no, json!({"amount": 100, "refund_no": "R1"}));
    assert_eq!((r.status, code(&r)), (409, "refund_no_refused".into()));
    assert!(w.wx.refunds.borrow().is_empty());
    let r = refund(&w, &no, json!({"amount": 3980, "refund_no": "R2"}));
    assert_eq!(r.status, 201, "{r:?}");
}

#[test]
fn refund_notifications_must_decrypt_and_name_a_refund_we_asked_for() {
    let w = World::new();
    let no = paid(&w);
    assert_eq!(
        refund(&w, &no, json!({"amount": 100, "refund_no": "R1"})).status,
        201
    );
    let good = v2_refund_notification(&w.merchant, &no, "R1", 100);
    let mut other_key = w.merchant.clone();
    other_key.api_key = Some(Secret::new("0".repeat(32)));
    let mut foreign = w.merchant.clone();
    foreign.mch_id = "1999999999".into();
    let tampered = String::from_utf8(good.clone()).unwrap().replacen(
        "<req_info><![CDATA[",
        "<req_info><![CDATA[AAAA",
        1,
    );
    let writes = w.store.writes.get();
    for (name, body) in [
        (
            "another key",
            v2_refund_notification(&other_key, &no, "R1", 100),
        ),
        (
            "another merchant",
            v2_refund_notification(&foreign, &no, "R1", 100),
        ),
        ("tampered", tampered.into_bytes()),
        (
            "unknown refund",
            v2_refund_notification(&w.merchant, &no, "R9", 100),
        ),
        (
            "unknown order",
            v2_refund_notification(&w.merchant, "20240501000000deadbeef", "R1", 100),
        ),
    ] {
        let (r, outcome) = refund_notify(&w, body);
        assert!(
            String::from_utf8_lossy(&r.body).contains("FAIL"),
            "{name}: {r:?}"
        );
        assert!(
            matches!(outcome, notify::NotifyOutcome::Rejected { .. }),
            "{name}"
        );
    }
    assert_eq!(w.store.writes.get(), writes, "nothing written");
    // Made with our key but for another amount: an alert, not applied.
    let (r, outcome) = refund_notify(&w, v2_refund_notification(&w.merchant, &no, "R1", 99));
    assert_eq!(r.body, SUCCESS_REPLY.as_bytes());
    assert!(matches!(outcome, notify::NotifyOutcome::Alerted { .. }));
    assert_eq!(refunds_of(&w, &no)[0].status, RefundStatus::Processing);
    let (_, outcome) = refund_notify(&w, good);
    assert!(matches!(outcome, notify::NotifyOutcome::Applied { .. }));
    assert_eq!(refunds_of(&w, &no)[0].status, RefundStatus::Success);
}

#[test]
fn apiv3_refunds_are_signed_requests_and_encrypted_notifications() {
    use super::v3::{V3Notification, create_v3, public_key_mode, v3_world};
    let w = v3_world(public_key_mode());
    let (no, _) = create_v3(&w);
    w.wx.pay(&no, 3980);
    // Paid now (the fake's default payment time is years before the v3 world's clock, which a
    // refund rightly refuses).
    let now = V3Notification::default().request(&w, &no, |t| {
        t["success_time"] = json!("2026-12-02T08:00:00+08:00");
    });
    let (r, _) = w.notify_request(&now);
    assert_eq!(r.status, 204);
    let r = refund(&w, &no, json!({"amount": 3980, "refund_no": "R1"}));
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.json_body().unwrap()["refund_id"], "5000R1");
    assert_eq!(w.wx.refunds.borrow().len(), 1);
    // WeChat's REFUND.SUCCESS: the refund in the signed, encrypted envelope.
    let refund_json = json!({
        "mchid": w.merchant.mch_id, "out_trade_no": no, "transaction_id": format!("4200{no}"),
        "out_refund_no": "R1", "refund_id": "5000R1", "refund_status": "SUCCESS",
        "success_time": "2026-12-02T08:10:00+08:00",
        "amount": {"total": 3980, "refund": 3980, "payer_total": 3980, "payer_refund": 3980}
    })
    .to_string();
    let body = crate::v3::notify::payment_envelope(
        &Secret::new("b8def2f05f1b1cb0e6f4c3d2e1f0a9d8"),
        "0123456789ab",
        "EV-refund",
        "2026-12-02T08:10:01+08:00",
        &refund_json,
    )
    .unwrap()
    .replace("TRANSACTION.SUCCESS", "REFUND.SUCCESS");
    let headers =
        w.wx.v3_signer
            .borrow()
            .sign(w.clock.now_unix(), body.as_bytes());
    let mut request = Request::new(body.clone());
    request.wechatpay = Some(headers.clone());
    let (r, outcome) = block_on(refund_flows::notify(&w.notify_env(), &request));
    assert_eq!(r.status, 204, "{r:?} {outcome:?}");
    assert_eq!(refunds_of(&w, &no)[0].status, RefundStatus::Success);
    // Tampered: 401, nothing changes.
    let mut tampered = Request::new(body.replace("EV-refund", "EV-other"));
    tampered.wechatpay = Some(headers);
    let (r, _) = block_on(refund_flows::notify(&w.notify_env(), &tampered));
    assert_eq!(r.status, 401);
}

/// The refunds as the user's order view and the admin's order record show them.
fn views(w: &World, no: &str) -> (Value, Value) {
    let user = w.get(no, OPENID);
    assert_eq!(user.status, 200, "{user:?}");
    let admin = w.admin("GET", &format!("/api/admin/orders/{no}"), Value::Null);
    assert_eq!(admin.status, 200, "{admin:?}");
    (user.json_body().unwrap(), admin.json_body().unwrap())
}

#[test]
fn order_views_show_refunds_and_refunded_once_all_is_given_back() {
    let w = World::new();
    let no = paid(&w);
    let (user, admin) = views(&w, &no);
    assert_eq!(user["status"], "PAID");
    assert!(user.get("refunds").is_none() && user.get("refunded_total").is_none());
    assert!(admin.get("refunds").is_none());

    let r = refund(
        &w,
        &no,
        json!({"amount": 1000, "refund_no": "R1", "reason": "坏了"}),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let (user, admin) = views(&w, &no);
    assert_eq!(user["status"], "PAID");
    assert_eq!(user["refunded_total"], 0);
    assert_eq!(
        user["refunds"],
        json!([{"amount": 1000, "status": "PROCESSING", "requested_at": "2024-05-01T08:00:00Z"}]),
        "the user sees amount, status and time, not our refund numbers or reasons"
    );
    assert_eq!(admin["status"], "PAID");
    assert_eq!(admin["refunds"][0]["refund_no"], "R1");
    assert_eq!(admin["refunds"][0]["reason"], "坏了");
    assert_eq!(admin["refunds"][0]["refund_id"], "5000R1");

    let (r, _) = refund_notify(&w, v2_refund_notification(&w.merchant, &no, "R1", 1000));
    assert_eq!(r.body, SUCCESS_REPLY.as_bytes());
    w.clock.advance(61);
    assert_eq!(
        refund(&w, &no, json!({"amount": 2980, "refund_no": "R2"})).status,
        201
    );
    let (user, admin) = views(&w, &no);
    assert_eq!(
        admin["refunds"][0]["events"],
        json!([
            {"status": "PROCESSING", "at": "2024-05-01T08:00:00Z"},
            {"status": "SUCCESS", "at": "2024-05-01T08:00:00Z"}
        ])
    );
    assert_eq!(
        admin["refunds"][1]["events"],
        json!([{"status": "PROCESSING", "at": "2024-05-01T08:01:01Z"}])
    );
    assert_eq!(user["status"], "PAID", "R2 is still PROCESSING");
    assert_eq!(user["refunded_total"], 1000);
    assert_eq!(user["refunds"][0]["settled_at"], "2024-05-01T09:00:00Z");

    let (r, _) = refund_notify(&w, v2_refund_notification(&w.merchant, &no, "R2", 2980));
    assert_eq!(r.body, SUCCESS_REPLY.as_bytes());
    let (user, admin) = views(&w, &no);
    assert_eq!(user["status"], "REFUNDED");
    assert_eq!(user["refunded_total"], 3980);
    assert_eq!(admin["status"], "REFUNDED");
    assert_eq!(admin["refunded_total"], 3980);
    // The payment's facts are those of a paid order still.
    assert_eq!(w.order(&no).status, Status::Paid);
    assert_eq!(admin["transaction_id"], format!("4200{no}"));
}

fn reconcile(w: &World) -> Value {
    let r = w.admin("POST", "/api/admin/reconcile", Value::Null);
    assert_eq!(r.status, 200, "{r:?}");
    r.json_body().unwrap()
}

#[test]
fn reconcile_settles_a_refund_whose_notification_was_lost() {
    let w = World::new();
    let no = paid(&w);
    assert_eq!(
        refund(&w, &no, json!({"amount": 3980, "refund_no": "R1"})).status,
        201
    );
    // WeChat still processing: asked, nothing changes.
    let report = reconcile(&w);
    assert_eq!(
        (
            report["refunds_checked"].clone(),
            report["refunds_settled"].clone()
        ),
        (json!(1), json!(0)),
        "{report}"
    );
    assert_eq!(refunds_of(&w, &no)[0].status, RefundStatus::Processing);
    // The refund went through; its notification never came.
    w.wx.refund_states
        .borrow_mut()
        .insert("R1".into(), "SUCCESS");
    let report = reconcile(&w);
    assert_eq!(report["refunds_settled"], 1, "{report}");
    let refunds = refunds_of(&w, &no);
    assert_eq!(refunds[0].status, RefundStatus::Success);
    assert_eq!(refunds[0].settled_at, Some(1_714_554_000)); // 2024-05-01 17:00:00 +08:00
    assert_eq!(views(&w, &no).0["status"], "REFUNDED");
    // Settled refunds are not asked about again; the late notification is a duplicate.
    assert_eq!(reconcile(&w)["refunds_checked"], 0);
    let (r, outcome) = refund_notify(&w, v2_refund_notification(&w.merchant, &no, "R1", 3980));
    assert_eq!(r.body, SUCCESS_REPLY.as_bytes());
    assert!(matches!(outcome, notify::NotifyOutcome::Duplicate { .. }));
}

#[test]
fn reconcile_refuses_a_refund_its_request_never_checked() {
    let w = World::new();
    let no = paid(&w);
    // Recorded by a request that stopped before checking it (no CLEARED, no REFUSED).
    record_unchecked(&w, &no, "R1", 3980);
    w.store
        .data
        .borrow_mut()
        .insert(marker_key(&no), b"1".to_vec());
    w.clock.advance(refund_flows::ABANDONED_CHECK_SECS - 1);
    assert_eq!(reconcile(&w)["refunds_checked"], 0);
    assert_eq!(
        refunds_of(&w, &no).len(),
        1,
        "not yet abandoned: it holds its money"
    );
    w.clock.advance(1);
    reconcile(&w);
    assert!(refunds_of(&w, &no).is_empty());
    assert!(w.wx.refund_requests.borrow().is_empty(), "never sent");
    assert_eq!(
        refund(&w, &no, json!({"amount": 3980, "refund_no": "R2"})).status,
        201
    );
}

#[test]
fn apiv3_reconcile_settles_a_lost_refund_notification() {
    use super::v3::{V3Notification, create_v3, public_key_mode, v3_world};
    let w = v3_world(public_key_mode());
    let (no, _) = create_v3(&w);
    w.wx.pay(&no, 3980);
    let paid_now = V3Notification::default().request(&w, &no, |t| {
        t["success_time"] = json!("2026-12-02T08:00:00+08:00");
    });
    assert_eq!(w.notify_request(&paid_now).0.status, 204);
    assert_eq!(
        refund(&w, &no, json!({"amount": 1000, "refund_no": "R1"})).status,
        201
    );
    w.wx.refund_states
        .borrow_mut()
        .insert("R1".into(), "CLOSED");
    let report = reconcile(&w);
    assert_eq!(report["refunds_settled"], 1, "{report}");
    let refunds = refunds_of(&w, &no);
    assert_eq!(refunds[0].status, RefundStatus::Closed);
    // A closed refund holds nothing: the whole total can still be refunded.
    w.clock.advance(61);
    assert_eq!(
        refund(&w, &no, json!({"amount": 3980, "refund_no": "R2"})).status,
        201
    );
}

/// WeChat refused a refund, and recording the refusal (CLOSED) failed: the refund is left
/// PROCESSING, holding its money. Reconcile asks WeChat, which does not know it; once it is
/// older than a request could be, it is CLOSED and the money is free again.
#[test]
fn reconcile_closes_a_refund_wechat_never_knew() {
    let w = World::new();
    let no = paid(&w);
    w.wx.fault(REFUND_PATH, Fault::Refuse("NOTENOUGH"));
    w.store.fail_sets(
        &crate::refund::outcome_key(&no, "R1", RefundStatus::Closed),
        Some(1),
    );
    let r = refund(&w, &no, json!({"amount": 3980, "refund_no": "R1"}));
    assert_eq!(code(&r), "wechat_refused", "{r:?}");
    w.store.heal();
    assert_eq!(refunds_of(&w, &no)[0].status, RefundStatus::Processing);
    // Too recent: reported, not closed.
    let report = reconcile(&w);
    assert_eq!(report["refunds_settled"], 0, "{report}");
    assert!(
        report["errors"][0]
            .as_str()
            .unwrap()
            .contains("REFUNDNOTEXIST"),
        "{report}"
    );
    w.clock.advance(refund_flows::ABANDONED_CHECK_SECS);
    assert_eq!(reconcile(&w)["refunds_settled"], 1);
    assert_eq!(refunds_of(&w, &no)[0].status, RefundStatus::Closed);
    assert_eq!(
        refund(&w, &no, json!({"amount": 3980, "refund_no": "R2"})).status,
        201
    );
}
