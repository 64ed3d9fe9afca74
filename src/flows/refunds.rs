//! Refunds (docs/ARCHITECTURE.md §10): `POST /api/admin/orders/{order_no}/refunds` and
//! `POST /api/wxpay/refund-notify` (refunds in the configured API version; notifications of
//! either).
//!
//! A refund is recorded with its number before WeChat hears of it, and every retry — of a
//! WeChat call within the request, or of the whole request with the same `refund_no` — sends
//! the same number and amount: WeChat refunds once per number. A refund WeChat did not answer
//! stays PROCESSING (its money held against the paid total) until a notification, a query or a
//! retried request settles it. What a notification says is stored in its own key per status
//! (`refund::outcome_key`: WeChat's refund id and time, and when this app learned it), written
//! once, and success is answered only after the write.

use serde_json::Value;

use super::notify::{Dialect, NotifyOutcome};
use super::orders::{
    UNIFIED_ORDER_ATTEMPTS, UNIFIED_ORDER_BUDGET_SECS, UNIFIED_ORDER_TIMEOUT_ATTEMPTS,
};
use super::wechat::{CallError, PreparedCall, Wechat, WechatError, keys_for};
use super::{
    AdminFlowConfig, ApiError, Clock, Env, Nonce, Request, Response, Store, Transport, answer,
    json_request, load_order, read_json, same_mode, store_unavailable, write_json,
};
use crate::config::{MerchantConfig, quote};
use crate::ledger::AlertFact;
use crate::money::Fen;
use crate::order::{Order, valid_out_trade_no};
use crate::refund::{
    Refund, RefundAsk, RefundAsked, RefundOutcome, RefundOutcomeReport, RefundRefusal,
    RefundRefused, RefundReport, RefundStatus, RefundView, asked_key, check_new_refund,
    cleared_key, marker_key, outcome_key, refund_prefix, refunds_from, refused_key,
};
use crate::time::rfc3339;
use crate::v2::api::{ErrCode, ReplyError};

/// An order's refunds (one listing of its refund keys, then their records).
pub(crate) async fn load_refunds<S: Store>(
    store: &S,
    order_no: &str,
) -> Result<Vec<Refund>, ApiError> {
    let mut keys = store
        .keys_with_prefix(&refund_prefix(order_no))
        .await
        .map_err(|e| store_unavailable(&e))?;
    keys.sort();
    let mut entries = Vec::with_capacity(keys.len());
    for key in keys {
        if let Some(bytes) = store.get(&key).await.map_err(|e| store_unavailable(&e))? {
            entries.push((key, bytes));
        }
    }
    Ok(refunds_from(order_no, &entries))
}

/// A paid order's refunds, for its views: none without the order's refund marker (one read;
/// most orders are never refunded).
pub(crate) async fn refunds_for_view<S: Store>(
    store: &S,
    order: &Order,
) -> Result<Vec<Refund>, ApiError> {
    if order.status != crate::order::Status::Paid {
        return Ok(Vec::new());
    }
    let marked = store
        .get(&marker_key(&order.order_no))
        .await
        .map_err(|e| store_unavailable(&e))?;
    match marked {
        Some(_) => load_refunds(store, &order.order_no).await,
        None => Ok(Vec::new()),
    }
}

struct RefundInput {
    amount: Fen,
    reason: Option<String>,
    refund_no: Option<String>,
}

/// Reads `{"amount", "reason"?, "refund_no"?}` (the amount in integer fen).
fn parse_input(request: &Request) -> Result<RefundInput, ApiError> {
    let object = json_request(request)?;
    let amount = match object.get("amount") {
        Some(Value::Number(n)) => n.as_u64().filter(|a| *a >= 1).ok_or_else(|| {
            ApiError::new(
                400,
                "invalid_amount",
                "amount must be an integer number of fen, at least 1",
            )
        })?,
        _ => {
            return Err(ApiError::new(
                400,
                "invalid_amount",
                "amount is required: an integer number of fen, at least 1",
            ));
        }
    };
    let text = |name: &str, code: &'static str| match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::new(400, code, format!("{name} must be a string"))),
    };
    Ok(RefundInput {
        amount: Fen(amount),
        reason: text("reason", "invalid_reason")?,
        refund_no: text("refund_no", "invalid_refund_no")?,
    })
}

/// How a refund call ended.
enum RefundCall {
    Accepted(RefundOutcomeReport),
    /// A refusal: the refund did not happen and holds no money (stored CLOSED).
    Refused {
        message: String,
    },
    /// No usable answer: the refund stays PROCESSING.
    Unanswered(ApiError),
}

/// Sends a prepared refund, retrying a busy WeChat (SYSTEMERROR, BIZERR_NEED_RETRY, 5xx) and a
/// timeout with the identical request, within the unified order's attempts and time budget.
async fn call_refund<S: Store, T: Transport, C: Clock, N: Nonce>(
    wechat: &Wechat<'_, S, T, C, N>,
    clock: &C,
    prepared: &PreparedCall,
    refund_no: &str,
) -> RefundCall {
    // Busy (503) or unreachable (504), as the order route answers; either way it stays
    // PROCESSING.
    let pending = |status: u16, code: &'static str, why: String| {
        RefundCall::Unanswered(ApiError::new(
            status,
            code,
            format!(
                "the refund {} is recorded as PROCESSING but WeChat Pay did not confirm it ({why}); \
                 retry with the same refund_no (WeChat refunds a number once), or let reconcile settle it",
                quote(refund_no)
            ),
        ))
    };
    let busy = |why: String| pending(503, "wechat_busy", why);
    let unreachable = |why: String| pending(504, "wechat_unreachable", why);
    let mut last = busy("no attempt".into());
    let mut timeouts = 0;
    let started = clock.now_unix();
    for attempt in 0..UNIFIED_ORDER_ATTEMPTS {
        if attempt > 0 && clock.now_unix().saturating_sub(started) >= UNIFIED_ORDER_BUDGET_SECS {
            break;
        }
        match wechat.send_refund(prepared, refund_no).await {
            Ok(report) => return RefundCall::Accepted(report),
            Err(WechatError::Call(CallError::Denied)) => {
                return RefundCall::Unanswered(ApiError::new(
                    500,
                    "outbound_denied",
                    CallError::Denied.to_string(),
                ));
            }
            Err(WechatError::Call(e @ CallError::Timeout)) => {
                timeouts += 1;
                last = unreachable(e.to_string());
                if timeouts >= UNIFIED_ORDER_TIMEOUT_ATTEMPTS {
                    break;
                }
            }
            Err(WechatError::Call(e @ CallError::Unreachable)) => last = unreachable(e.to_string()),
            Err(WechatError::Call(e)) => last = busy(e.to_string()),
            Err(WechatError::Reply(ReplyError::Refused {
                err_code,
                err_code_des,
            })) => {
                if is_busy(&err_code) {
                    last = busy(format!("{err_code}"));
                    continue;
                }
                return RefundCall::Refused {
                    message: if err_code_des.is_empty() {
                        format!("WeChat Pay refused the refund: {err_code}")
                    } else {
                        format!("WeChat Pay refused the refund: {err_code} ({err_code_des})")
                    },
                };
            }
            Err(WechatError::Store(e)) => return RefundCall::Unanswered(e),
            Err(other) => {
                return RefundCall::Unanswered(ApiError::new(
                    502,
                    "wechat_reply_untrusted",
                    format!(
                        "the refund {} is recorded as PROCESSING; WeChat Pay's reply could not be \
                         used: {other}",
                        quote(refund_no)
                    ),
                ));
            }
        }
    }
    last
}

/// `POST /api/admin/orders/{order_no}/refunds` (admin; the caller, `admin::handle`, authorizes
/// it): 201 with the refund (200 with the existing one when `refund_no` repeats with the same
/// amount; 409 with another).
pub async fn create<S, T, C, N>(
    env: &Env<S, T, C, N, AdminFlowConfig>,
    request: &Request,
    order_no: &str,
) -> Response
where
    S: Store,
    T: Transport,
    C: Clock,
    N: Nonce,
{
    answer(create_inner(env, request, order_no).await)
}

async fn create_inner<S, T, C, N>(
    env: &Env<S, T, C, N, AdminFlowConfig>,
    request: &Request,
    order_no: &str,
) -> Result<Response, ApiError>
where
    S: Store,
    T: Transport,
    C: Clock,
    N: Nonce,
{
    let input = parse_input(request)?;
    let not_found = || ApiError::new(404, "order_not_found", "no such order");
    if !valid_out_trade_no(order_no) {
        return Err(not_found());
    }
    let order = load_order(&env.store, order_no)
        .await?
        .ok_or_else(not_found)?;
    let merchant = &env.config.merchant;
    same_mode(&order, merchant.mode)?;
    let refunds = load_refunds(&env.store, order_no).await?;
    let now = env.clock.now_unix();
    let refund_no = input
        .refund_no
        .clone()
        .unwrap_or_else(|| format!("R{}", hex::encode_upper(&env.nonce.random16()[..8])));
    let existing = refunds.iter().find(|r| r.refund_no == refund_no).cloned();
    let asked = match &existing {
        Some(r) if r.amount != input.amount => {
            return Err(ApiError::new(
                409,
                "refund_no_conflict",
                format!(
                    "refund_no {} was used for {} fen, not {} fen",
                    quote(&refund_no),
                    r.amount,
                    input.amount
                ),
            ));
        }
        // WeChat has answered for it: the refund as it stands.
        Some(r) if r.refund_id.is_some() || r.status != RefundStatus::Processing => {
            return Ok(Response::json(200, &RefundView::from(r)));
        }
        // Its own request is still checking it (or stopped before it could): only that
        // request may clear it for WeChat.
        Some(r) if !r.cleared => {
            return Err(ApiError::new(
                503,
                "refund_being_checked",
                format!(
                    "the refund {} is recorded but not yet checked against the order's other \
                     refunds; retry in a few seconds",
                    quote(&r.refund_no)
                ),
            ));
        }
        // Cleared, never confirmed: the same refund is sent again.
        Some(r) => RefundAsked {
            refund_no: r.refund_no.clone(),
            amount: r.amount,
            reason: r.reason.clone(),
            requested_at: r.requested_at,
        },
        None => record_and_check(env, &order, &refunds, &input, &refund_no, now).await?,
    };
    let wechat = Wechat::new(env, merchant);
    let refund_notify_url = merchant.refund_notify_url();
    let prepared = wechat
        .prepare_refund(&order, &asked, refund_notify_url.as_deref())
        .map_err(|e| ApiError::new(500, "internal", format!("cannot build the refund: {e}")))?;
    let mut refund = Refund {
        refund_no: asked.refund_no.clone(),
        amount: asked.amount,
        reason: asked.reason.clone(),
        status: RefundStatus::Processing,
        refund_id: None,
        requested_at: asked.requested_at,
        settled_at: None,
        cleared: true,
        events: vec![crate::refund::RefundEvent {
            status: RefundStatus::Processing,
            at: asked.requested_at,
        }],
    };
    match call_refund(&wechat, &env.clock, &prepared, &refund_no).await {
        RefundCall::Accepted(report) => {
            let outcome = RefundOutcome {
                refund_id: report.refund_id.clone(),
                success_time: report.success_time,
                recorded_at: env.clock.now_unix(),
            };
            write_json(
                &env.store,
                &outcome_key(order_no, &refund_no, report.status),
                &outcome,
            )
            .await?;
            if report.status != RefundStatus::Processing {
                refund.events.push(crate::refund::RefundEvent {
                    status: report.status,
                    at: outcome.recorded_at,
                });
            }
            refund.status = report.status;
            refund.refund_id = Some(report.refund_id);
            refund.settled_at = report.success_time;
            let status = if existing.is_some() { 200 } else { 201 };
            Ok(Response::json(status, &RefundView::from(&refund)))
        }
        RefundCall::Refused { message } => {
            // It did not happen: recorded CLOSED, so that it holds no money.
            let outcome = RefundOutcome {
                refund_id: String::new(),
                success_time: None,
                recorded_at: env.clock.now_unix(),
            };
            let key = outcome_key(order_no, &refund_no, RefundStatus::Closed);
            let _ = write_json(&env.store, &key, &outcome).await;
            Err(ApiError::new(502, "wechat_refused", message))
        }
        RefundCall::Unanswered(e) => Err(e),
    }
}

/// Records a new refund, then checks it against every refund of the order recorded by then
/// (docs/RELIABILITY.md "Refunds": of two concurrent requests the later-recorded one sees the
/// other) and marks it CLEARED for WeChat or REFUSED. A request the rules refuse on a first
/// read records nothing, so the same `refund_no` can be asked again later.
async fn record_and_check<S, T, C, N>(
    env: &Env<S, T, C, N, AdminFlowConfig>,
    order: &Order,
    refunds: &[Refund],
    input: &RefundInput,
    refund_no: &str,
    now: u64,
) -> Result<RefundAsked, ApiError>
where
    S: Store,
    T: Transport,
    C: Clock,
    N: Nonce,
{
    let order_no = &order.order_no;
    let refused: Option<RefundRefused> =
        read_json(&env.store, &refused_key(order_no, refund_no)).await?;
    if let Some(refused) = refused {
        return Err(ApiError::new(
            409,
            "refund_no_refused",
            format!(
                "refund_no {} was refused and never sent ({}); ask again with a new refund_no",
                quote(refund_no),
                refused.message
            ),
        ));
    }
    let ask = RefundAsk {
        refund_no,
        amount: input.amount,
        reason: input.reason.as_deref(),
    };
    let refusal = |refusal: RefundRefusal| {
        let (status, code) = refusal.status_and_code();
        ApiError::new(status, code, refusal.to_string())
    };
    check_new_refund(order, refunds, &ask, now).map_err(refusal)?;
    let asked = RefundAsked {
        refund_no: refund_no.to_owned(),
        amount: input.amount,
        reason: input.reason.clone(),
        requested_at: now,
    };
    // Recorded before WeChat hears of it: a crash or a timeout leaves a PROCESSING refund
    // holding its money, which a retry or reconcile settles.
    write_json(&env.store, &asked_key(order_no, refund_no), &asked).await?;
    env.store
        .set(&marker_key(order_no), b"1")
        .await
        .map_err(|e| store_unavailable(&e))?;
    let others: Vec<Refund> = load_refunds(&env.store, order_no)
        .await?
        .into_iter()
        .filter(|r| r.refund_no != refund_no)
        .collect();
    if let Err(e) = check_new_refund(order, &others, &ask, now) {
        let refused = RefundRefused {
            message: e.to_string(),
            at: now,
        };
        write_json(&env.store, &refused_key(order_no, refund_no), &refused).await?;
        let mut error = refusal(e);
        error.message = format!(
            "{} (a concurrent refund of this order got in first; refund_no {} was not sent)",
            error.message,
            quote(refund_no)
        );
        return Err(error);
    }
    if env.clock.now_unix().saturating_sub(now) >= CHECK_DEADLINE_SECS {
        // Reconcile may already count it abandoned: never send it.
        let refused = RefundRefused {
            message: "checking it took too long".into(),
            at: now,
        };
        write_json(&env.store, &refused_key(order_no, refund_no), &refused).await?;
        return Err(ApiError::new(
            503,
            "refund_check_timed_out",
            format!(
                "checking the refund {} took too long; it was not sent, ask again with a new refund_no",
                quote(refund_no)
            ),
        ));
    }
    write_json(&env.store, &cleared_key(order_no, refund_no), &now).await?;
    Ok(asked)
}

/// Reads and authenticates a refund notification in its dialect.
async fn receive<S: Store>(
    store: &S,
    merchant: &MerchantConfig,
    request: &Request,
    now: u64,
) -> Result<RefundReport, Box<(Response, NotifyOutcome)>> {
    let Some(headers) = &request.wechatpay else {
        return crate::v2::refund::parse_refund_notification(&request.body, merchant).map_err(
            |e| Box::new(Dialect::V2.rejected(401, "refund notification refused", e.to_string())),
        );
    };
    let Some(v3) = &merchant.v3 else {
        return Err(Box::new(Dialect::V3.failed(
            "an APIv3 refund notification arrived, but APIv3 is not configured".into(),
        )));
    };
    let keys = keys_for(store, v3, &headers.serial, now)
        .await
        .map_err(|e| Box::new(Dialect::V3.failed(e.message)))?;
    crate::v3::refund::parse_refund_notification(
        &headers.signed(&request.body),
        &keys,
        &v3.apiv3_key,
        &merchant.mch_id,
        now,
    )
    .map_err(|e| Box::new(Dialect::V3.rejected(401, "refund notification refused", e.to_string())))
}

/// `POST /api/wxpay/refund-notify`: WeChat's refund notification, APIv2 or APIv3. Success
/// (APIv2 SUCCESS XML, APIv3 204) once what it says is stored, or was already; a failure for
/// anything undecryptable, foreign or unknown (WeChat delivers it again).
pub async fn notify<S, T, C, N>(
    env: &Env<S, T, C, N, MerchantConfig>,
    request: &Request,
) -> (Response, NotifyOutcome)
where
    S: Store,
    C: Clock,
{
    let merchant = &env.config;
    let now = env.clock.now_unix();
    let dialect = Dialect::of(request.wechatpay.as_ref());
    let report = match receive(&env.store, merchant, request, now).await {
        Ok(report) => report,
        Err(answer) => return *answer,
    };
    let order_no = report.out_trade_no.clone();
    let unknown = |what: &str| {
        dialect.rejected(
            404,
            "refund unknown",
            format!(
                "{what}: out_trade_no {:?}",
                crate::v2::api::cut_to_bytes(&order_no, 64)
            ),
        )
    };
    if !valid_out_trade_no(&order_no) || !crate::refund::valid_refund_no(&report.refund_no) {
        return unknown("unknown order or refund");
    }
    let order: Option<Order> = match load_order(&env.store, &order_no).await {
        Ok(order) => order,
        Err(e) => return dialect.failed(e.message),
    };
    let Some(order) = order else {
        return unknown("unknown order");
    };
    if order.mode != merchant.mode {
        return unknown("an order of the other mode");
    }
    let asked: Option<RefundAsked> =
        match read_json(&env.store, &asked_key(&order_no, &report.refund_no)).await {
            Ok(asked) => asked,
            Err(e) => return dialect.failed(e.message),
        };
    let Some(asked) = asked else {
        return unknown("a refund this app did not ask for");
    };
    let answer = |recorded| match recorded {
        Recorded::Applied => NotifyOutcome::Applied {
            order_no: order_no.clone(),
            transaction_id: report.refund_id.clone(),
        },
        Recorded::Duplicate => NotifyOutcome::Duplicate {
            order_no: order_no.clone(),
            transaction_id: report.refund_id.clone(),
        },
        Recorded::Alerted(reason) => NotifyOutcome::Alerted {
            order_no: order_no.clone(),
            reason,
            recorded: true,
        },
    };
    match record_report(&env.store, &asked, &report, now).await {
        Ok(recorded) => (dialect.success(), answer(recorded)),
        Err(e) => dialect.failed(e.message),
    }
}

/// What recording a verified report about a refund did.
enum Recorded {
    /// Its status is now stored.
    Applied,
    /// It was stored already: nothing written.
    Duplicate,
    /// It names another amount than the refund's: an alert, not applied.
    Alerted(String),
}

/// Records what WeChat verifiably reported about one of our refunds (`asked`, of the report's
/// order): a fact per status, written once; another amount than asked is an alert for a
/// person, never applied.
async fn record_report<S: Store>(
    store: &S,
    asked: &RefundAsked,
    report: &RefundReport,
    now: u64,
) -> Result<Recorded, ApiError> {
    let order_no = &report.out_trade_no;
    if report.refund_fee != asked.amount {
        let alert = AlertFact {
            at: rfc3339(now),
            reason: format!(
                "refund {} reported for {} fen, but {} fen was asked; not applied",
                report.refund_no, report.refund_fee, asked.amount
            ),
            transaction_id: Some(report.refund_id.clone()),
        };
        write_json(store, &alert.key(order_no), &alert).await?;
        return Ok(Recorded::Alerted(alert.reason));
    }
    let key = outcome_key(order_no, &report.refund_no, report.status);
    if store
        .get(&key)
        .await
        .map_err(|e| store_unavailable(&e))?
        .is_some()
    {
        return Ok(Recorded::Duplicate);
    }
    write_json(store, &key, &RefundOutcome::of(report, now)).await?;
    Ok(Recorded::Applied)
}

/// A refund recorded but never cleared or refused (its request stopped in between) is refused
/// by reconcile after this long; its request refuses itself past [`CHECK_DEADLINE_SECS`], so
/// the two never disagree.
pub const ABANDONED_CHECK_SECS: u64 = 600;
/// A request that took longer than this between recording a refund and clearing it refuses
/// it instead.
pub const CHECK_DEADLINE_SECS: u64 = 60;

/// What reconcile did about one order's refunds.
#[derive(Debug, Default)]
pub(crate) struct RefundsReconciled {
    /// Refunds asked about at WeChat.
    pub checked: u64,
    /// Refunds WeChat said ended (SUCCESS, CLOSED, ABNORMAL), now recorded.
    pub settled: u64,
    pub errors: Vec<String>,
}

/// Reconcile for a paid order's refunds: each cleared refund not yet SUCCESS or CLOSED is
/// queried at WeChat and what WeChat says is recorded (a lost notification settled), and one
/// WeChat still does not know [`ABANDONED_CHECK_SECS`] after it was asked for is CLOSED; a
/// refund its request never checked is refused after the same time.
pub(crate) async fn reconcile_refunds<S, T, C, N>(
    env: &Env<S, T, C, N, AdminFlowConfig>,
    order: &Order,
    now: u64,
) -> RefundsReconciled
where
    S: Store,
    T: Transport,
    C: Clock,
    N: Nonce,
{
    let mut done = RefundsReconciled::default();
    let order_no = &order.order_no;
    let refunds = match load_refunds(&env.store, order_no).await {
        Ok(refunds) => refunds,
        Err(e) => {
            done.errors
                .push(format!("{order_no} refunds: {}", e.message));
            return done;
        }
    };
    let wechat = Wechat::new(env, &env.config.merchant);
    let open = |r: &&Refund| matches!(r.status, RefundStatus::Processing | RefundStatus::Abnormal);
    for refund in refunds.iter().filter(open) {
        let refund_no = &refund.refund_no;
        if !refund.cleared {
            if now.saturating_sub(refund.requested_at) >= ABANDONED_CHECK_SECS {
                let refused = RefundRefused {
                    message: "its request stopped before checking it; it was never sent".into(),
                    at: now,
                };
                if let Err(e) =
                    write_json(&env.store, &refused_key(order_no, refund_no), &refused).await
                {
                    done.errors
                        .push(format!("{order_no} refund {refund_no}: {}", e.message));
                }
            }
            continue;
        }
        done.checked += 1;
        let report = match wechat.query_refund(refund_no).await {
            Ok(report) if report.out_trade_no == *order_no => report,
            Ok(_) => {
                done.errors.push(format!(
                    "{order_no} refund {refund_no}: WeChat reports it for another order"
                ));
                continue;
            }
            // WeChat does not know it, long after it was asked for: it never reached WeChat (its
            // request stopped before sending, or WeChat refused it and recording that failed).
            // CLOSED, so that it holds no money; a later SUCCESS fact would still outrank it.
            Err(WechatError::Reply(ReplyError::Refused { err_code, .. }))
                if matches!(err_code.as_str(), "REFUNDNOTEXIST" | "RESOURCE_NOT_EXISTS")
                    && now.saturating_sub(refund.requested_at) >= ABANDONED_CHECK_SECS =>
            {
                let closed = RefundOutcome {
                    refund_id: String::new(),
                    success_time: None,
                    recorded_at: now,
                };
                let key = outcome_key(order_no, refund_no, RefundStatus::Closed);
                match write_json(&env.store, &key, &closed).await {
                    Ok(()) => done.settled += 1,
                    Err(e) => done
                        .errors
                        .push(format!("{order_no} refund {refund_no}: {}", e.message)),
                }
                continue;
            }
            Err(e) => {
                done.errors
                    .push(format!("{order_no} refund {refund_no}: {e}"));
                continue;
            }
        };
        if report.status == refund.status && refund.refund_id.is_some() {
            continue;
        }
        let asked = RefundAsked {
            refund_no: refund_no.clone(),
            amount: refund.amount,
            reason: refund.reason.clone(),
            requested_at: refund.requested_at,
        };
        match record_report(&env.store, &asked, &report, now).await {
            Ok(Recorded::Applied) if report.status != RefundStatus::Processing => done.settled += 1,
            Ok(Recorded::Alerted(reason)) => done.errors.push(format!("{order_no}: {reason}")),
            Ok(_) => {}
            Err(e) => done
                .errors
                .push(format!("{order_no} refund {refund_no}: {}", e.message)),
        }
    }
    done
}

/// Whether a refusal means "busy, send the same again": SYSTEMERROR (APIv3's SYSTEM_ERROR,
/// 429) and APIv2 refunds' BIZERR_NEED_RETRY.
fn is_busy(code: &ErrCode) -> bool {
    code.is_retryable() || code.as_str() == "BIZERR_NEED_RETRY"
}
