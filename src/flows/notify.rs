//! `POST /api/wxpay/notify` (docs/ARCHITECTURE.md §1.4, §4, §9; PROTOCOL.md "Payment notification",
//! "APIv3"): APIv2 XML and APIv3 JSON (told apart by `Wechatpay-Signature`), whatever the
//! configured version, as long as that version's keys are configured — so a switch between
//! versions loses no notification.
//!
//! Everything written is derived from the verified notification alone (the events are dated
//! from its payment time), so concurrent deliveries of the same notification write identical
//! bytes; success is answered only after the write returned; a duplicate writes nothing. Both
//! versions are judged by the same rules ([`crate::payment::judge`]).

use super::wechat::keys_for;
use super::{
    Clock, Env, JSON, Refusal, Request, Response, Store, load_order_with_paid, read_json,
    record_learned, write_json,
};
use crate::config::MerchantConfig;
use crate::ledger::{AlertFact, PaidFact, paid_key};
use crate::order::{Trigger, valid_out_trade_no};
use crate::payment::{PaymentReport, Verdict, judge, repeats_recorded_payment};
use crate::time::{parse_beijing_compact, parse_rfc3339_offset, rfc3339};
use crate::v2::notify::{NotifyError, SUCCESS_REPLY, check_sign_type, fail_reply};
use crate::v2::sign::SignType;
use crate::v3::verify::SignatureHeaders;

/// What the notify route did, for the component's log and for tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyOutcome {
    /// The order became PAID (answered SUCCESS after the write).
    Applied {
        order_no: String,
        transaction_id: String,
    },
    /// Already applied: answered SUCCESS, nothing written.
    Duplicate {
        order_no: String,
        transaction_id: String,
    },
    /// Validly signed but not a payment of this order: not paid, an alert recorded
    /// (`recorded: false` when the same alert was already on the order and nothing was
    /// written), answered SUCCESS.
    Alerted {
        order_no: String,
        reason: String,
        recorded: bool,
    },
    /// Not trusted or not ours (bad XML, bad signature, unknown order): answered FAIL (APIv3:
    /// 4xx), nothing changed.
    Rejected { reason: String },
    /// Our side failed (store, configuration): answered FAIL (APIv3: 500) so that WeChat
    /// delivers it again.
    Failed { reason: String },
}

impl NotifyOutcome {
    /// Whether WeChat was answered SUCCESS.
    pub fn is_success(&self) -> bool {
        matches!(
            self,
            NotifyOutcome::Applied { .. }
                | NotifyOutcome::Duplicate { .. }
                | NotifyOutcome::Alerted { .. }
        )
    }
}

/// How WeChat wants a notification answered: APIv2 reads the XML body of an HTTP 200; APIv3
/// takes a 2xx as received and wants a 4xx/5xx with `{"code":"FAIL","message"}` otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    V2,
    V3,
}

impl Dialect {
    /// APIv3 when the request carries `Wechatpay-Signature`.
    pub fn of(wechatpay: Option<&SignatureHeaders>) -> Dialect {
        if wechatpay.is_some() {
            Dialect::V3
        } else {
            Dialect::V2
        }
    }

    pub(super) fn success(self) -> Response {
        match self {
            Dialect::V2 => Response::xml(SUCCESS_REPLY),
            Dialect::V3 => Response::no_content(),
        }
    }

    /// A failure answer; `v3_status` is APIv3's (401 untrusted, 404 not ours, 500 our side).
    pub(super) fn fail(self, v3_status: u16, message: &str) -> Response {
        match self {
            Dialect::V2 => Response::xml(fail_reply(message)),
            Dialect::V3 => Response {
                status: v3_status,
                content_type: JSON,
                headers: Vec::new(),
                body: crate::v3::notify::fail_body(message).into_bytes(),
            },
        }
    }

    pub(super) fn rejected(
        self,
        v3_status: u16,
        short: &str,
        reason: String,
    ) -> (Response, NotifyOutcome) {
        (
            self.fail(v3_status, short),
            NotifyOutcome::Rejected { reason },
        )
    }

    pub(super) fn failed(self, reason: String) -> (Response, NotifyOutcome) {
        (
            self.fail(500, "temporarily unavailable"),
            NotifyOutcome::Failed { reason },
        )
    }
}

/// The answer to a notification refused before it was read (see [`Refusal`]), in its
/// [`Dialect`], so that WeChat delivers it again once we can take it (never a JSON error: for
/// APIv2 the FAIL XML, for APIv3 a 4xx/5xx). A body too large or unreadable was not trusted
/// (`Rejected`); a configuration problem is our side (`Failed`). A request with another method
/// is not WeChat's: it gets the JSON 405.
pub fn refuse(refusal: &Refusal, dialect: Dialect) -> (Response, NotifyOutcome) {
    match refusal {
        Refusal::BodyTooLarge => {
            dialect.rejected(413, "body too large", "body over the size limit".into())
        }
        Refusal::UnreadableBody(why) => dialect.rejected(
            400,
            "body unreadable",
            format!("body could not be read: {why}"),
        ),
        Refusal::Config(problems) => dialect.failed(problems.to_string()),
        Refusal::MethodNotAllowed { method, .. } => (
            refusal.response(),
            NotifyOutcome::Rejected {
                reason: format!("method {method} is not POST"),
            },
        ),
    }
}

/// A verified notification, whatever its version.
struct Received {
    order_no: String,
    transaction_id: String,
    /// The time stamp of every event it adds: WeChat's payment time (falling back to `now`
    /// only when a validly signed notification has none, e.g. a result FAIL).
    at: String,
    report: PaymentReport,
    /// An APIv2 notification's signature type (checked against the order's).
    v2_sign_type: Option<SignType>,
}

/// Reads and verifies an APIv2 notification.
fn receive_v2(
    merchant: &MerchantConfig,
    body: &[u8],
    now: u64,
) -> Result<Received, Box<(Response, NotifyOutcome)>> {
    let n = crate::v2::notify::parse(body, merchant).map_err(|e| {
        let short = match &e {
            NotifyError::Xml(_) => "invalid XML",
            NotifyError::Signature(_) => "signature error",
            NotifyError::MissingOrderNo => "missing out_trade_no",
            NotifyError::SignTypeDowngrade { .. } => "signature type",
        };
        Box::new(Dialect::V2.rejected(401, short, e.to_string()))
    })?;
    let at = n
        .params
        .get("time_end")
        .and_then(|t| parse_beijing_compact(t).ok())
        .map_or_else(|| rfc3339(now), rfc3339);
    Ok(Received {
        order_no: n.out_trade_no().to_owned(),
        transaction_id: n.transaction_id().to_owned(),
        at,
        report: n.report(),
        v2_sign_type: Some(n.sign_type),
    })
}

/// Verifies (the WeChat Pay public key, or the stored platform certificate the serial names)
/// and decrypts an APIv3 notification. This route holds no merchant private key, so it
/// never downloads certificates: the signing components do (docs/RELIABILITY.md).
async fn receive_v3<S: Store>(
    store: &S,
    merchant: &MerchantConfig,
    headers: &SignatureHeaders,
    body: &[u8],
    now: u64,
) -> Result<Received, Box<(Response, NotifyOutcome)>> {
    let Some(v3) = &merchant.v3 else {
        return Err(Box::new(
            Dialect::V3.failed(
                "an APIv3 notification arrived, but APIv3 is not configured (wxpay_apiv3_key and \
             the WeChat Pay key): not applied"
                    .into(),
            ),
        ));
    };
    let keys = keys_for(store, v3, &headers.serial, now)
        .await
        .map_err(|e| Box::new(Dialect::V3.failed(e.message)))?;
    let n = crate::v3::notify::parse(&headers.signed(body), &keys, &v3.apiv3_key, now).map_err(
        |e| {
            let short = match &e {
                crate::v3::notify::NotifyError::Signature(_) => "signature error",
                _ => "notification unreadable",
            };
            Dialect::V3.rejected(401, short, e.to_string())
        },
    )?;
    let t = &n.transaction;
    let at = t
        .success_time
        .as_deref()
        .and_then(|s| parse_rfc3339_offset(s).ok())
        .map_or_else(|| rfc3339(now), rfc3339);
    if t.out_trade_no.is_empty() {
        return Err(Box::new(Dialect::V3.rejected(
            401,
            "missing out_trade_no",
            "notification has no out_trade_no".into(),
        )));
    }
    Ok(Received {
        order_no: t.out_trade_no.clone(),
        transaction_id: t.transaction_id.clone().unwrap_or_default(),
        at,
        report: n.report(),
        v2_sign_type: None,
    })
}

/// Handles one notification. The transport is never used.
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
    let received = match &request.wechatpay {
        None => receive_v2(merchant, &request.body, now),
        Some(headers) => receive_v3(&env.store, merchant, headers, &request.body, now).await,
    };
    let n = match received {
        Ok(n) => n,
        Err(answer) => return *answer,
    };
    let order_no = n.order_no.clone();
    let order = if valid_out_trade_no(&order_no) {
        // The payment fact first: WeChat repeats a notification until it hears success, often
        // several times at once, and a repeat is answered from this one read.
        let paid: Option<PaidFact> = match read_json(&env.store, &paid_key(&order_no)).await {
            Ok(paid) => paid,
            Err(e) => return dialect.failed(e.message),
        };
        if let Some(paid) = &paid
            && repeats_recorded_payment(&n.report, merchant, paid)
        {
            return (
                dialect.success(),
                NotifyOutcome::Duplicate {
                    order_no,
                    transaction_id: n.transaction_id,
                },
            );
        }
        match load_order_with_paid(&env.store, &order_no, paid).await {
            Ok(order) => order,
            Err(e) => return dialect.failed(e.message),
        }
    } else {
        None
    };
    if let Some(order) = &order
        && order.mode != merchant.mode
    {
        // A simulator deployment must never settle a live order (nor the reverse): a failure,
        // so that WeChat delivers it again (to the right deployment, once routed there), and
        // an alert on the order, which is best effort (the failure is the answer either way).
        let reason = format!(
            "a notification for this {} order reached a {} deployment; not applied",
            order.mode, merchant.mode
        );
        let alert = AlertFact {
            at: n.at.clone(),
            reason: reason.clone(),
            transaction_id: Some(n.transaction_id.clone()),
        };
        let _ = write_json(&env.store, &alert.key(&order_no), &alert).await;
        return dialect.rejected(
            404,
            "order of another mode",
            format!("{reason}: out_trade_no {:?}", short(&order_no)),
        );
    }
    if let (Some(order), Some(used)) = (&order, n.v2_sign_type) {
        let expected = order.sign_type.unwrap_or(merchant.sign_type);
        if let Err(e) = check_sign_type(used, expected) {
            return dialect.rejected(
                401,
                "signature type",
                format!("{e}: out_trade_no {:?}", short(&order_no)),
            );
        }
    }
    match judge(&n.report, merchant, order.as_ref()) {
        Verdict::Reject(reason) => dialect.rejected(
            404,
            "order unknown",
            format!("{reason}: out_trade_no {:?}", short(&order_no)),
        ),
        Verdict::Duplicate => (
            dialect.success(),
            NotifyOutcome::Duplicate {
                order_no,
                transaction_id: n.transaction_id,
            },
        ),
        Verdict::Apply(trade) => {
            let Some(mut order) = order else {
                return unknown_order(dialect, &order_no);
            };
            let before = order.clone();
            let trigger = Trigger::PaymentConfirmed {
                transaction_id: trade.transaction_id.clone(),
            };
            if let Err(e) = order.apply(trigger, &n.at) {
                return (
                    dialect.fail(500, "cannot apply"),
                    NotifyOutcome::Failed {
                        reason: e.to_string(),
                    },
                );
            }
            match record_learned(&env.store, &before, &order).await {
                Ok(()) => (
                    dialect.success(),
                    NotifyOutcome::Applied {
                        order_no,
                        transaction_id: trade.transaction_id,
                    },
                ),
                Err(e) => dialect.failed(e.message),
            }
        }
        Verdict::Alert(reason) => {
            if order.is_none() {
                return unknown_order(dialect, &order_no);
            }
            // Its own key, named by what it says: a repeated notification finds it there.
            let alert = AlertFact {
                at: n.at.clone(),
                reason: reason.clone(),
                transaction_id: Some(n.transaction_id.clone()),
            };
            let key = alert.key(&order_no);
            let known = match env.store.get(&key).await {
                Ok(known) => known.is_some(),
                Err(e) => return dialect.failed(e.to_string()),
            };
            if !known && let Err(e) = write_json(&env.store, &key, &alert).await {
                return dialect.failed(e.message);
            }
            (
                dialect.success(),
                NotifyOutcome::Alerted {
                    order_no,
                    reason,
                    recorded: !known,
                },
            )
        }
    }
}

/// `judge` only applies or alerts for a known order; kept total rather than panicking.
fn unknown_order(dialect: Dialect, order_no: &str) -> (Response, NotifyOutcome) {
    dialect.rejected(
        404,
        "order unknown",
        format!("unknown order: out_trade_no {:?}", short(order_no)),
    )
}

fn short(s: &str) -> &str {
    crate::v2::api::cut_to_bytes(s, 64)
}
