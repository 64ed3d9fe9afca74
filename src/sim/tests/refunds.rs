//! The simulator playing WeChat Pay's refunds in both versions: its rules (one refund per
//! number, nothing over the paid total, a paid trade, the 50-refund and 1-minute limits), its
//! faults, its queries, and `/_sim/refund` settling a refund the app asked for and delivering
//! the notification the app's refund-notify flow takes.

use super::v3::{v3_request, v3_shop, wechatpay_keys};
use super::*;
use crate::config::{
    SIM_ADMIN_TOKEN, SIM_MCH_CERT_SERIAL, SIM_MCH_PRIVATE_KEY, SIM_REFUND_NOTIFY_URL,
};
use crate::flows::{AdminFlowConfig, Clock, refunds as app_refunds};
use crate::refund::{MAX_REFUNDS_PER_ORDER, RefundStatus};
use crate::sim::refunds::{RefundApi, load_refund};
use crate::v2::refund::{
    RefundAccepted, RefundOrder, parse_refund_query_reply, parse_refund_reply,
    refund_query_request, refund_request,
};
use crate::v3::refund::{REFUNDS_PATH, V3Refund, refund_body, refund_query_url};
use crate::v3::verify::verify;

/// A trade the simulator holds as paid, made through APIv2 (one merchant: a refund through
/// either API may name it). The app knows nothing of it, so its notification goes unanswered.
/// Its transaction id.
fn paid_trade(w: &World, env: &SimEnv<'_>, no: &str, total: u64) -> String {
    env.transport.no_answer.set(true);
    let r = w.post(
        env,
        "/_sim/pay/unifiedorder",
        w.unified_order_xml(no, total, None),
    );
    let prepay = prepay_of(w, &r);
    let paid = pay(w, env, &prepay, "SUCCESS").json_body().unwrap();
    env.transport.no_answer.set(false);
    paid["transaction_id"].as_str().unwrap().to_owned()
}

/// An APIv2 refund as the app's core signs it.
fn refund_xml(w: &World, no: &str, refund_no: &str, total: u64, fee: u64) -> String {
    refund_request(
        &w.merchant(),
        &RefundOrder {
            out_trade_no: no,
            out_refund_no: refund_no,
            total_fee: Fen(total),
            refund_fee: Fen(fee),
            refund_desc: Some("售罄"),
            notify_url: Some(SIM_REFUND_NOTIFY_URL),
        },
        &crate::v2::nonce_str(&w.nonce_bytes()),
    )
    .unwrap()
    .body
}

fn v2_refund(
    w: &World,
    env: &SimEnv<'_>,
    no: &str,
    refund_no: &str,
    total: u64,
    fee: u64,
) -> Result<RefundAccepted, ReplyError> {
    let r = w.post(
        env,
        "/_sim/secapi/pay/refund",
        refund_xml(w, no, refund_no, total, fee),
    );
    parse_refund_reply(&w.merchant(), &r.body)
}

/// The `err_code` of a refused (validly signed) reply, and its description.
fn refusal<T: std::fmt::Debug>(result: Result<T, ReplyError>) -> (String, String) {
    match result {
        Err(ReplyError::Refused {
            err_code,
            err_code_des,
        }) => (err_code.as_str().to_owned(), err_code_des),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn sim_refund_keys(w: &World) -> usize {
    w.store
        .data
        .borrow()
        .keys()
        .filter(|k| k.starts_with(REFUND_KEY_PREFIX))
        .count()
}

#[test]
fn v2_refunds_are_made_once_per_number_within_the_paid_total() {
    let w = World::new(SignType::HmacSha256);
    let env = w.sim_env(Mode::Simulator);
    let no = "refund000001";
    let transaction_id = paid_trade(&w, &env, no, 3980);

    let first = v2_refund(&w, &env, no, "R1", 3980, 1000).unwrap();
    assert_eq!(first.out_refund_no, "R1");
    assert_eq!(first.refund_fee, Fen(1000));
    assert_eq!(first.refund_id.len(), 29);
    assert!(first.refund_id.bytes().all(|b| b.is_ascii_digit()));
    let stored = block_on(load_refund(&w.store, "R1")).unwrap().unwrap();
    assert_eq!(stored.status, RefundStatus::Processing);
    assert_eq!(stored.api, RefundApi::V2);
    assert_eq!(stored.transaction_id, transaction_id);
    assert_eq!(stored.notify_url.as_deref(), Some(SIM_REFUND_NOTIFY_URL));
    assert_eq!(stored.reason.as_deref(), Some("售罄"));

    // The same refund again (a retry): the same refund, nothing new.
    assert_eq!(v2_refund(&w, &env, no, "R1", 3980, 1000).unwrap(), first);
    assert_eq!(sim_refund_keys(&w), 1);
    // Named by transaction_id instead: still the same refund.
    let by_transaction = w.resigned(&refund_xml(&w, no, "R1", 3980, 1000), SIM_API_KEY, |p| {
        p.remove("out_trade_no");
        p.insert("transaction_id".into(), transaction_id.clone());
    });
    let r = w.post(&env, "/_sim/secapi/pay/refund", by_transaction);
    assert_eq!(parse_refund_reply(&w.merchant(), &r.body).unwrap(), first);
    // The number with another amount: refused, the refund unchanged.
    let (code, _) = refusal(v2_refund(&w, &env, no, "R1", 3980, 999));
    assert_eq!(code, "INVALID_REQUEST");
    assert_eq!(
        block_on(load_refund(&w.store, "R1")).unwrap().unwrap(),
        stored
    );

    // A second refund within a minute of the first: too frequent.
    let (code, _) = refusal(v2_refund(&w, &env, no, "R2", 3980, 10));
    assert_eq!(code, "FREQUENCY_LIMITED");
    w.clock.advance(61);
    // Over the paid total: refused, naming the numbers.
    let (code, des) = refusal(v2_refund(&w, &env, no, "R2", 3980, 2981));
    assert_eq!(code, "INVALID_REQUEST");
    assert!(des.contains("3980 fen paid, 1000 fen"), "{des}");
    assert!(v2_refund(&w, &env, no, "R2", 3980, 2980).is_ok());
    // total_fee must be the trade's.
    w.clock.advance(61);
    let (code, _) = refusal(v2_refund(&w, &env, no, "R3", 3981, 1));
    assert_eq!(code, "INVALID_REQUEST");
    assert_eq!(sim_refund_keys(&w), 2);

    // An unpaid trade, an unknown one, an unknown transaction id.
    let unpaid = "refund000002";
    w.post(
        &env,
        "/_sim/pay/unifiedorder",
        w.unified_order_xml(unpaid, 3980, None),
    );
    let (code, _) = refusal(v2_refund(&w, &env, unpaid, "R4", 3980, 1));
    assert_eq!(code, "TRADE_STATE_ERROR");
    let (code, _) = refusal(v2_refund(&w, &env, "refund000404", "R4", 3980, 1));
    assert_eq!(code, "ORDERNOTEXIST");
    let unknown_transaction = w.resigned(&refund_xml(&w, no, "R4", 3980, 1), SIM_API_KEY, |p| {
        p.insert(
            "transaction_id".into(),
            "4200000000000000000000000000".into(),
        );
    });
    let r = w.post(&env, "/_sim/secapi/pay/refund", unknown_transaction);
    let (code, _) = refusal(parse_refund_reply(&w.merchant(), &r.body));
    assert_eq!(code, "INVALID_TRANSACTIONID");

    // A call WeChat cannot trust or read: return_code FAIL, nothing recorded.
    let bad_sign = w.resigned(&refund_xml(&w, no, "R5", 3980, 1), &"0".repeat(32), |_| {});
    let msg = call_failed(&w.post(&env, "/_sim/secapi/pay/refund", bad_sign));
    assert!(msg.contains("SIGNERROR"), "{msg}");
    let no_fee = w.resigned(&refund_xml(&w, no, "R5", 3980, 1), SIM_API_KEY, |p| {
        p.remove("refund_fee");
    });
    let msg = call_failed(&w.post(&env, "/_sim/secapi/pay/refund", no_fee));
    assert!(msg.contains("LACK_PARAMS"), "{msg}");
    let zero = w.resigned(&refund_xml(&w, no, "R5", 3980, 1), SIM_API_KEY, |p| {
        p.insert("refund_fee".into(), "0".into());
    });
    let msg = call_failed(&w.post(&env, "/_sim/secapi/pay/refund", zero));
    assert!(msg.contains("refund_fee"), "{msg}");
    assert!(block_on(load_refund(&w.store, "R5")).unwrap().is_none());
}

#[test]
fn a_trade_is_refunded_at_most_fifty_times() {
    let w = World::new(SignType::Md5);
    let env = w.sim_env(Mode::Simulator);
    let no = "refund000050";
    paid_trade(&w, &env, no, 100);
    for i in 0..MAX_REFUNDS_PER_ORDER {
        let accepted = v2_refund(&w, &env, no, &format!("R{i}"), 100, 1);
        assert!(accepted.is_ok(), "refund {i}: {accepted:?}");
        w.clock.advance(61);
    }
    let (code, des) = refusal(v2_refund(&w, &env, no, "R50", 100, 1));
    assert_eq!(code, "INVALID_REQUEST");
    assert!(des.contains("at most 50"), "{des}");
}

#[test]
fn faults_refuse_refunds_as_wechat_does_and_record_nothing() {
    let w = World::new(SignType::Md5);
    let env = w.sim_env(Mode::Simulator);
    let no = "refund000003";
    paid_trade(&w, &env, no, 3980);
    let r = w.post(
        &env,
        "/_sim/faults",
        r#"{"notenough": 1, "systemerror": 1}"#,
    );
    assert_eq!(r.json_body().unwrap()["notenough"], 1);
    // systemerror first (a merchant API fault): nothing processed.
    let (code, _) = refusal(v2_refund(&w, &env, no, "R1", 3980, 1000));
    assert_eq!(code, "SYSTEMERROR");
    // Then the empty balance: NOTENOUGH, nothing recorded.
    let (code, des) = refusal(v2_refund(&w, &env, no, "R1", 3980, 1000));
    assert_eq!(code, "NOTENOUGH");
    assert!(des.contains("余额不足"), "{des}");
    assert!(block_on(load_refund(&w.store, "R1")).unwrap().is_none());
    // The same number once the balance is back: accepted.
    let accepted = v2_refund(&w, &env, no, "R1", 3980, 1000).unwrap();
    // A repeated number is answered with its refund and leaves a pending notenough alone.
    w.post(&env, "/_sim/faults", r#"{"notenough": 1}"#);
    assert_eq!(v2_refund(&w, &env, no, "R1", 3980, 1000).unwrap(), accepted);
    let faults = w.call(&env, "GET", "/_sim/faults", "", b"");
    assert_eq!(faults.json_body().unwrap()["notenough"], 1);
    // The APIv3 refund consumes it as 403 NOT_ENOUGH.
    w.clock.advance(61);
    let link = w.to_sim();
    let body = v3_refund_body(no, "R2", 3980, 1);
    let r = block_on(link.send(&signed_v3(&w, "POST", REFUNDS_PATH, &body))).unwrap();
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(v3_code(&r.body), "NOT_ENOUGH");
    assert!(block_on(load_refund(&w.store, "R2")).unwrap().is_none());
}

#[test]
fn v2_refundquery_answers_by_refund_and_by_trade() {
    let w = World::new(SignType::Md5);
    let env = w.sim_env(Mode::Simulator);
    let m = w.merchant();
    let no = "refund000004";
    paid_trade(&w, &env, no, 3980);
    let query = |refund_no: &str| {
        let xml = refund_query_request(&m, refund_no, "q1").unwrap().body;
        w.post(&env, "/_sim/pay/refundquery", xml)
    };
    let first = v2_refund(&w, &env, no, "R1", 3980, 1000).unwrap();
    let report = parse_refund_query_reply(&m, &query("R1").body, "R1").unwrap();
    assert_eq!(report.status, RefundStatus::Processing);
    assert_eq!(report.refund_id, first.refund_id);
    assert_eq!(report.refund_fee, Fen(1000));
    assert_eq!(report.total_fee, Fen(3980));
    assert_eq!(report.out_trade_no, no);
    assert_eq!(report.success_time, None);

    // Settled (the app knows nothing of it: its notification goes unanswered).
    env.transport.no_answer.set(true);
    let settled = w.post(&env, "/_sim/refund", json!({"refund_no": "R1"}).to_string());
    assert_eq!(settled.status, 200, "{settled:?}");
    assert_eq!(settled.json_body().unwrap()["notified"], false);
    let report = parse_refund_query_reply(&m, &query("R1").body, "R1").unwrap();
    assert_eq!(report.status, RefundStatus::Success);
    assert_eq!(report.success_time, Some(NOW));

    w.clock.advance(61);
    v2_refund(&w, &env, no, "R2", 3980, 500).unwrap();
    w.post(
        &env,
        "/_sim/refund",
        json!({"refund_no": "R2", "result": "CLOSED"}).to_string(),
    );
    // By the trade: both, in the order asked, with APIv2's status words.
    let by_trade = w.resigned(
        &refund_query_request(&m, "R1", "q2").unwrap().body,
        SIM_API_KEY,
        |p| {
            p.remove("out_refund_no");
            p.insert("out_trade_no".into(), no.into());
        },
    );
    let r = w.post(&env, "/_sim/pay/refundquery", by_trade);
    let p = fields(&r);
    assert_eq!(p["refund_count"], "2");
    assert_eq!(p["out_refund_no_0"], "R1");
    assert_eq!(p["refund_status_0"], "SUCCESS");
    assert_eq!(p["out_refund_no_1"], "R2");
    assert_eq!(p["refund_status_1"], "REFUNDCLOSE");
    assert!(!p.contains_key("refund_success_time_1"));
    assert_eq!(
        parse_refund_query_reply(&m, &r.body, "R2").unwrap().status,
        RefundStatus::Closed
    );
    // By WeChat's refund id.
    let by_id = w.resigned(
        &refund_query_request(&m, "R1", "q3").unwrap().body,
        SIM_API_KEY,
        |p| {
            p.remove("out_refund_no");
            p.insert("refund_id".into(), first.refund_id.clone());
        },
    );
    let r = w.post(&env, "/_sim/pay/refundquery", by_id);
    assert_eq!(fields(&r)["out_refund_no_0"], "R1");
    // An unknown refund.
    let (code, _) = refusal(parse_refund_query_reply(&m, &query("R9").body, "R9"));
    assert_eq!(code, "REFUNDNOTEXIST");
}

// ---- The app's refunds, settled by /_sim/refund --------------------------------------------------

/// An order of `price` fen the app created and the simulator's user paid (its notification
/// applied): its number.
fn app_paid_order(w: &World, sim: &SimEnv<'_>, shop: ShopConfig, price: u64) -> String {
    w.store.put_product(&Product {
        sku: "tea".into(),
        name: "Tea".into(),
        price: Fen(price),
        active: true,
    });
    let to_sim = w.to_sim();
    let token = token(w, &to_sim, "refund-code");
    let env = Env::new(&w.store, &to_sim, &w.clock, &w.nonce, shop);
    let created = block_on(orders::create(
        &env,
        &Request::new(json!({"sku": "tea", "quantity": 1}).to_string()).with_bearer(&token),
    ));
    assert_eq!(created.status, 201, "{created:?}");
    let body = created.json_body().unwrap();
    let order_no = body["order"]["order_no"].as_str().unwrap().to_owned();
    let package = body["pay_params"]["package"].as_str().unwrap();
    let paid = pay(
        w,
        sim,
        package.strip_prefix("prepay_id=").unwrap(),
        "SUCCESS",
    );
    assert_eq!(paid.json_body().unwrap()["notified"], true, "{paid:?}");
    assert_eq!(w.store.order(&order_no).unwrap().status, Status::Paid);
    order_no
}

/// The admin refund route's flow, reaching the simulator in-process.
fn app_refund(w: &World, vars: &[(&str, &str)], order_no: &str, body: Value) -> Response {
    app_refund_through(w, &w.to_sim(), vars, order_no, body)
}

/// [`app_refund`] through `link`.
fn app_refund_through<L: Transport>(
    w: &World,
    link: &L,
    vars: &[(&str, &str)],
    order_no: &str,
    body: Value,
) -> Response {
    let vars: BTreeMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let admin = Env::new(
        &w.store,
        link,
        &w.clock,
        &w.nonce,
        AdminFlowConfig::load(&vars).unwrap(),
    );
    let request = Request::new(body.to_string()).with_bearer(SIM_ADMIN_TOKEN);
    block_on(app_refunds::create(&admin, &request, order_no))
}

fn app_refund_status(w: &World, order_no: &str, refund_no: &str) -> RefundStatus {
    block_on(app_refunds::load_refunds(&w.store, order_no))
        .unwrap()
        .into_iter()
        .find(|r| r.refund_no == refund_no)
        .expect("the app's refund")
        .status
}

fn settle(w: &World, sim: &SimEnv<'_>, body: Value) -> Response {
    w.post(sim, "/_sim/refund", body.to_string())
}

#[test]
fn sim_refund_delivers_the_v2_notification_the_app_applies() {
    let w = World::new(SignType::Md5);
    let sim = w.sim_env(Mode::Simulator);
    let order_no = app_paid_order(&w, &sim, shop(SignType::Md5), 3980);
    let vars = [("wxpay_sign_type", "MD5")];
    let r = app_refund(
        &w,
        &vars,
        &order_no,
        json!({"amount": 1000, "refund_no": "R1"}),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let asked = r.json_body().unwrap();
    assert_eq!(asked["status"], "PROCESSING");
    let sim_refund = block_on(load_refund(&w.store, "R1")).unwrap().unwrap();
    assert_eq!(asked["refund_id"], sim_refund.refund_id.as_str());
    assert_eq!(sim_refund.api, RefundApi::V2);
    assert_eq!(
        app_refund_status(&w, &order_no, "R1"),
        RefundStatus::Processing
    );

    let settled = settle(&w, &sim, json!({"refund_no": "R1"}));
    assert_eq!(settled.status, 200, "{settled:?}");
    let settled = settled.json_body().unwrap();
    assert_eq!(settled["status"], "SUCCESS");
    assert_eq!(settled["api"], "v2");
    assert_eq!(settled["refund_fee"], 1000);
    assert_eq!(settled["notify_url"], SIM_REFUND_NOTIFY_URL);
    assert_eq!(settled["notified"], true, "{settled}");
    let delivery = &settled["deliveries"][0];
    assert_eq!(delivery["status"], 200);
    assert!(
        delivery["body"].as_str().unwrap().contains("SUCCESS"),
        "{settled}"
    );
    // What went out: WeChat's refund notification, req_info encrypted, no sign.
    let (url, body) = sim.transport.received.borrow().last().cloned().unwrap();
    assert_eq!(url, SIM_REFUND_NOTIFY_URL);
    let outer = xml::read(body.as_bytes()).unwrap();
    assert!(outer.contains_key("req_info"));
    assert!(!outer.contains_key("sign"));
    let report =
        crate::v2::refund::parse_refund_notification(body.as_bytes(), &w.merchant()).unwrap();
    assert_eq!(report.refund_no, "R1");
    assert_eq!(report.success_time, Some(NOW));
    // The app's refund is settled.
    let refunds = block_on(app_refunds::load_refunds(&w.store, &order_no)).unwrap();
    assert_eq!(refunds[0].status, RefundStatus::Success);
    assert_eq!(refunds[0].settled_at, Some(NOW));
    // Final: settling it again is a conflict.
    let again = settle(&w, &sim, json!({"refund_no": "R1", "result": "CLOSED"}));
    assert_eq!(again.status, 409, "{again:?}");
    assert_eq!(again.error_code().unwrap(), "refund_settled");

    // A second refund, closed, its notification delivered as a burst of duplicates.
    w.clock.advance(61);
    let r = app_refund(
        &w,
        &vars,
        &order_no,
        json!({"amount": 2980, "refund_no": "R2"}),
    );
    assert_eq!(r.status, 201, "{r:?}");
    w.post(&sim, "/_sim/faults", r#"{"duplicate_notifications": 3}"#);
    let settled = settle(&w, &sim, json!({"refund_no": "R2", "result": "CLOSED"}));
    let settled = settled.json_body().unwrap();
    let deliveries = settled["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 3, "{settled}");
    assert!(deliveries.iter().all(|d| d["acknowledged"] == true));
    assert_eq!(app_refund_status(&w, &order_no, "R2"), RefundStatus::Closed);

    // Refusals of the route itself.
    let r = settle(&w, &sim, json!({"refund_no": "R404"}));
    assert_eq!(
        (r.status, r.error_code().unwrap()),
        (404, "unknown_refund_no".into())
    );
    let r = settle(&w, &sim, json!({"refund_no": "R1", "result": "DONE"}));
    assert_eq!(
        (r.status, r.error_code().unwrap()),
        (400, "invalid_result".into())
    );
    let r = settle(&w, &sim, json!({}));
    assert_eq!(r.status, 400);
    assert_eq!(w.call(&sim, "GET", "/_sim/refund", "", b"").status, 405);
}

#[test]
fn sim_refund_redelivers_an_unacknowledged_refund_notification() {
    let w = World::new(SignType::Md5);
    let sim = w.sim_env(Mode::Simulator);
    let order_no = app_paid_order(&w, &sim, shop(SignType::Md5), 100);
    let r = app_refund(
        &w,
        &[],
        &order_no,
        json!({"amount": 100, "refund_no": "R1"}),
    );
    assert_eq!(r.status, 201, "{r:?}");
    w.sleep.0.borrow_mut().clear();
    sim.transport.fail_first.set(2);
    let settled = settle(&w, &sim, json!({"refund_no": "R1"}))
        .json_body()
        .unwrap();
    let deliveries = settled["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 3, "{settled}");
    assert_eq!(deliveries[2]["acknowledged"], true);
    assert_eq!(settled["notified"], true);
    assert_eq!(*w.sleep.0.borrow(), RETRY_DELAYS[..2].to_vec());
    assert_eq!(
        app_refund_status(&w, &order_no, "R1"),
        RefundStatus::Success
    );
}

#[test]
fn a_refund_whose_reply_timed_out_is_made_once_when_the_app_sends_it_again() {
    for vars in [
        vec![("wxpay_sign_type", "HMAC-SHA256")],
        vec![("wxpay_api_version", "v3")],
    ] {
        let w = World::new(SignType::HmacSha256);
        let sim = w.sim_env(Mode::Simulator);
        let shop_config = if vars[0].0 == "wxpay_api_version" {
            v3_shop()
        } else {
            shop(SignType::HmacSha256)
        };
        let order_no = app_paid_order(&w, &sim, shop_config, 3980);
        // The simulator makes the refund, then holds its reply back past the link's deadline.
        w.post(&sim, "/_sim/faults", r#"{"timeout": 1}"#);
        let sleep = ShortSleepsOnly(TIMEOUT_DELAY);
        let link: SimulatorLink<_, _, _, _> =
            SimulatorLink::new(&w.store, &w.clock, &w.nonce, &sleep, FIRST_BYTE_TIMEOUT);
        let r = app_refund_through(
            &w,
            &link,
            &vars,
            &order_no,
            json!({"amount": 3980, "refund_no": "R1"}),
        );
        assert_eq!(r.status, 201, "{vars:?}: {r:?}");
        // The app sent the same number again and got the refund made the first time.
        let made = block_on(load_refund(&w.store, "R1")).unwrap().unwrap();
        assert_eq!(r.json_body().unwrap()["refund_id"], made.refund_id.as_str());
        assert_eq!(sim_refund_keys(&w), 1, "{vars:?}");
        assert_eq!(
            block_on(super::super::faults::load(&&w.store))
                .unwrap()
                .timeout,
            0
        );
    }
}

// ---- APIv3 ----------------------------------------------------------------------------------------

fn v3_refund_body(no: &str, refund_no: &str, total: u64, refund: u64) -> String {
    refund_body(&crate::v3::refund::RefundOrder {
        out_trade_no: no,
        out_refund_no: refund_no,
        reason: Some("售罄"),
        notify_url: Some(SIM_REFUND_NOTIFY_URL),
        refund: Fen(refund),
        total: Fen(total),
    })
    .unwrap()
}

/// A request signed now by the simulator merchant's key.
fn signed_v3(w: &World, method: &'static str, path: &str, body: &str) -> OutboundRequest {
    v3_request(
        method,
        path,
        body,
        w.clock.now_unix(),
        SIM_MCH_CERT_SERIAL,
        SIM_MCH_PRIVATE_KEY,
    )
}

fn v3_code(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body).unwrap()["code"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn v3_refunds_follow_the_same_rules_in_apiv3s_words() {
    let w = World::new(SignType::Md5);
    let env = w.sim_env(Mode::Simulator);
    let link = w.to_sim();
    let no = "refund000005";
    paid_trade(&w, &env, no, 3980);
    let send = |body: &str| {
        let reply = block_on(link.send(&signed_v3(&w, "POST", REFUNDS_PATH, body))).unwrap();
        // Every answer, refusals included, is signed by the simulator's WeChat Pay key.
        let headers = reply.wechatpay_signature().unwrap();
        verify(
            &headers.signed(&reply.body),
            &wechatpay_keys(),
            w.clock.now_unix(),
        )
        .unwrap();
        reply
    };

    let r = send(&v3_refund_body(no, "R1", 3980, 1000));
    assert_eq!(r.status, 200, "{r:?}");
    let first = V3Refund::parse(&r.body).unwrap();
    assert_eq!(first.status, "PROCESSING");
    assert_eq!(first.amount.refund, 1000);
    assert_eq!(first.amount.total, 3980);
    assert_eq!(first.out_trade_no, no);
    assert_eq!(
        block_on(load_refund(&w.store, "R1")).unwrap().unwrap().api,
        RefundApi::V3
    );
    // The same refund again: the same refund.
    let again = V3Refund::parse(&send(&v3_refund_body(no, "R1", 3980, 1000)).body).unwrap();
    assert_eq!(again, first);
    for (body, status, code) in [
        // The number with another amount.
        (v3_refund_body(no, "R1", 3980, 999), 400, "INVALID_REQUEST"),
        // A second refund within a minute.
        (v3_refund_body(no, "R2", 3980, 1), 429, "FREQUENCY_LIMITED"),
        // Another total than the trade's.
        (v3_refund_body(no, "R2", 3981, 1), 400, "INVALID_REQUEST"),
        // Unknown trade.
        (
            v3_refund_body("refund000404", "R2", 3980, 1),
            404,
            "RESOURCE_NOT_EXISTS",
        ),
        // Not a refund WeChat can read.
        (
            v3_refund_body(no, "R2", 3980, 1).replace("CNY", "USD"),
            400,
            "PARAM_ERROR",
        ),
    ] {
        let r = send(&body);
        assert_eq!(
            (r.status, v3_code(&r.body)),
            (status, code.into()),
            "{body}"
        );
    }
    w.clock.advance(61);
    let r = send(&v3_refund_body(no, "R2", 3980, 2981));
    assert_eq!(
        (r.status, v3_code(&r.body)),
        (400, "INVALID_REQUEST".into())
    );
    assert!(String::from_utf8_lossy(&r.body).contains("3980 fen paid"));
    let unpaid = "refund000006";
    w.post(
        &env,
        "/_sim/pay/unifiedorder",
        w.unified_order_xml(unpaid, 3980, None),
    );
    let r = send(&v3_refund_body(unpaid, "R3", 3980, 1));
    assert_eq!(
        (r.status, v3_code(&r.body)),
        (400, "INVALID_REQUEST".into())
    );
    assert!(block_on(load_refund(&w.store, "R2")).unwrap().is_none());

    // Signed by another key: 401 SIGN_ERROR, nothing recorded.
    let rotated = include_str!("../../v3/testdata/wechatpay_rotated_key.pem");
    let forged = v3_request(
        "POST",
        REFUNDS_PATH,
        &v3_refund_body(no, "R2", 3980, 1),
        w.clock.now_unix(),
        SIM_MCH_CERT_SERIAL,
        rotated,
    );
    let r = block_on(link.send(&forged)).unwrap();
    assert_eq!((r.status, v3_code(&r.body)), (401, "SIGN_ERROR".into()));
    assert!(block_on(load_refund(&w.store, "R2")).unwrap().is_none());

    // The query, then the systemerror fault applying to it.
    let query = |refund_no: &str| {
        block_on(link.send(&signed_v3(&w, "GET", &refund_query_url(refund_no), ""))).unwrap()
    };
    let r = query("R1");
    assert_eq!(r.status, 200);
    assert_eq!(V3Refund::parse(&r.body).unwrap(), first);
    let r = query("R9");
    assert_eq!(
        (r.status, v3_code(&r.body)),
        (404, "RESOURCE_NOT_EXISTS".into())
    );
    w.post(&env, "/_sim/faults", r#"{"systemerror": 1}"#);
    assert_eq!(query("R1").status, 500);
    assert_eq!(query("R1").status, 200);
}

#[test]
fn sim_refund_delivers_v3_refund_events_the_app_applies() {
    let w = World::new(SignType::Md5);
    let sim = w.sim_env(Mode::Simulator);
    let order_no = app_paid_order(&w, &sim, v3_shop(), 3980);
    let vars = [("wxpay_api_version", "v3")];
    let r = app_refund(
        &w,
        &vars,
        &order_no,
        json!({"amount": 3980, "refund_no": "R1"}),
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(
        block_on(load_refund(&w.store, "R1")).unwrap().unwrap().api,
        RefundApi::V3
    );

    // ABNORMAL first: the app records it, and it may still succeed.
    let settled = settle(&w, &sim, json!({"refund_no": "R1", "result": "ABNORMAL"}));
    let settled = settled.json_body().unwrap();
    assert_eq!(settled["api"], "v3");
    assert_eq!(settled["notified"], true, "{settled}");
    assert_eq!(settled["deliveries"][0]["status"], 204);
    let (url, envelope) = sim.transport.received.borrow().last().cloned().unwrap();
    assert_eq!(url, SIM_REFUND_NOTIFY_URL);
    let envelope: Value = serde_json::from_str(&envelope).unwrap();
    assert_eq!(envelope["event_type"], "REFUND.ABNORMAL");
    assert_eq!(envelope["resource"]["original_type"], "refund");
    assert_eq!(envelope["resource"]["associated_data"], "refund");
    assert_eq!(
        app_refund_status(&w, &order_no, "R1"),
        RefundStatus::Abnormal
    );
    let again = settle(&w, &sim, json!({"refund_no": "R1", "result": "ABNORMAL"}));
    assert_eq!(again.status, 409);

    // Then SUCCESS (the merchant acted): REFUND.SUCCESS, the order fully refunded.
    let settled = settle(&w, &sim, json!({"refund_no": "R1", "result": "SUCCESS"}));
    let settled = settled.json_body().unwrap();
    assert_eq!(settled["notified"], true, "{settled}");
    let (_, envelope) = sim.transport.received.borrow().last().cloned().unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&envelope).unwrap()["event_type"],
        "REFUND.SUCCESS"
    );
    let refunds = block_on(app_refunds::load_refunds(&w.store, &order_no)).unwrap();
    assert_eq!(refunds[0].status, RefundStatus::Success);
    assert!(crate::refund::fully_refunded(
        &w.store.order(&order_no).unwrap(),
        &refunds
    ));
    let r = settle(&w, &sim, json!({"refund_no": "R1", "result": "CLOSED"}));
    assert_eq!(r.status, 409);
}
