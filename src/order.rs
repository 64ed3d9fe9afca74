//! The order record, its statuses and events, the catalog entry, and the transition table
//! (docs/ARCHITECTURE.md §4, §6).
//!
//! Everything here is deterministic given its inputs: no clock, no randomness. Times (`at`) and
//! random bytes are passed in, so two handlers that apply the same verified notification to the
//! same stored record produce byte-identical records (Spin KV has no transactions; docs/ARCHITECTURE.md §4).

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::config::Mode;
use crate::money::Fen;
use crate::time::beijing_compact;

/// Version of the stored [`Order`] record format: 2, the base record of the storage model
/// (`crate::ledger`: payment, closing, refusal and alerts in their own keys).
pub const ORDER_VERSION: u32 = 2;
/// The first format (status, payment and events all in the record), still read: the facts
/// stored beside it since are applied over it (`crate::ledger::Facts::apply_to`).
pub const ORDER_VERSION_FIRST: u32 = 1;

/// KV key prefix of order records.
pub const ORDER_KEY_PREFIX: &str = "order:";
/// KV key prefix of catalog entries.
pub const PRODUCT_KEY_PREFIX: &str = "product:";

/// Largest quantity of one order line (docs/ARCHITECTURE.md §6: 1..=999).
pub const MAX_QUANTITY: u32 = 999;
/// WeChat's `body` and `attach` are at most 127 (bytes, to be safe; PROTOCOL.md).
pub const MAX_BODY_BYTES: usize = 127;
/// WeChat's `attach` limit.
pub const MAX_ATTACH_BYTES: usize = 127;
/// Longest sku, in characters of `[A-Za-z0-9_-]`.
pub const MAX_SKU_LEN: usize = 32;
/// WeChat's `prepay_id` is at most 64 characters.
pub const MAX_PREPAY_ID_LEN: usize = 64;
/// `GET /api/orders/{no}` asks WeChat at most this often per order (docs/ARCHITECTURE.md §1.5).
pub const QUERY_THROTTLE_SECS: u64 = 5;

/// `order:{order_no}`. Callers validate `order_no` first ([`valid_out_trade_no`] excludes `:`).
pub fn order_key(order_no: &str) -> String {
    format!("{ORDER_KEY_PREFIX}{order_no}")
}

/// `product:{sku}`. Callers validate `sku` first ([`valid_sku`]).
pub fn product_key(sku: &str) -> String {
    format!("{PRODUCT_KEY_PREFIX}{sku}")
}

// ---- Order numbers ------------------------------------------------------------------------------

/// Random bytes in an order number (64 bits: collisions are out of reach even at thousands of
/// orders per second within one second's prefix).
pub const ORDER_NO_RANDOM_BYTES: usize = 8;

/// A new `out_trade_no`: the Beijing time `yyyyMMddHHmmss` of `now_unix` (readable, sortable,
/// and what WeChat's merchant console shows) followed by 16 lowercase hex digits of `random`.
/// Always 30 characters of `[0-9a-f]`, valid per [`valid_out_trade_no`].
pub fn new_order_no(now_unix: u64, random: [u8; ORDER_NO_RANDOM_BYTES]) -> String {
    format!("{}{}", beijing_compact(now_unix), hex::encode(random))
}

/// PROTOCOL.md: `out_trade_no` is 6–32 characters of `[0-9A-Za-z_\-|*]`.
pub fn valid_out_trade_no(s: &str) -> bool {
    (6..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'|' | b'*'))
}

/// A sku: 1..=32 characters of `[A-Za-z0-9_-]` (it is part of a KV key and a URL path).
pub fn valid_sku(s: &str) -> bool {
    (1..=MAX_SKU_LEN).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

// ---- Status -------------------------------------------------------------------------------------

/// Where an order stands. `PAID`, `CLOSED` and `FAILED` are terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// Stored, unified order not (yet) answered.
    Created,
    /// WeChat gave a `prepay_id`; the user can pay.
    AwaitingPayment,
    Paid,
    /// Closed at WeChat (or unknown to it): can no longer be paid.
    Closed,
    /// WeChat refused the unified order.
    Failed,
    /// Shown, never stored: a PAID order whose successful refunds sum to its paid total
    /// ([`crate::refund::fully_refunded`]). The payment's facts stay those of a PAID order.
    Refunded,
}

impl Status {
    /// The statuses an order is stored in (the transition table's; not the shown REFUNDED).
    pub const ALL: [Status; 5] = [
        Status::Created,
        Status::AwaitingPayment,
        Status::Paid,
        Status::Closed,
        Status::Failed,
    ];

    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "CREATED",
            Status::AwaitingPayment => "AWAITING_PAYMENT",
            Status::Paid => "PAID",
            Status::Closed => "CLOSED",
            Status::Failed => "FAILED",
            Status::Refunded => "REFUNDED",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::Paid | Status::Closed | Status::Failed | Status::Refunded
        )
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ---- Events -------------------------------------------------------------------------------------

/// What became of a payment notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyResult {
    Applied,
    Rejected,
}

/// One entry of an order's append-only history. JSON: `{"type": "status" | "notify" | "alert",
/// "at": RFC 3339, ...}`.
///
/// Read through [`RawEvent`] (one flat struct) rather than serde's internally tagged enum,
/// which buffers every event into an intermediate tree first: the notify route reads every
/// event of an order on each notification, and the buffering code was ~15 KB of each
/// component (docs/PERFORMANCE.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", try_from = "RawEvent")]
pub enum Event {
    /// A status change (exactly one per transition).
    Status {
        at: String,
        from: Status,
        to: Status,
        /// Why, when WeChat gave a reason (err_code of a refusal, what closed it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A verified notification was seen.
    Notify {
        at: String,
        transaction_id: String,
        result: NotifyResult,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Something a person should look at (amount mismatch, paid after close, ...).
    Alert { at: String, reason: String },
}

/// The `type` of a stored [`Event`].
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum EventType {
    Status,
    Notify,
    Alert,
}

/// Every field any [`Event`] has; which are required depends on `type`.
#[derive(Deserialize)]
struct RawEvent {
    #[serde(rename = "type")]
    kind: EventType,
    at: String,
    from: Option<Status>,
    to: Option<Status>,
    reason: Option<String>,
    transaction_id: Option<String>,
    result: Option<NotifyResult>,
}

/// A stored event that lacks a field its `type` requires.
#[derive(Debug, Error)]
#[error("missing field `{0}`")]
struct MissingEventField(&'static str);

impl TryFrom<RawEvent> for Event {
    type Error = MissingEventField;

    fn try_from(raw: RawEvent) -> Result<Event, MissingEventField> {
        fn required<T>(value: Option<T>, name: &'static str) -> Result<T, MissingEventField> {
            value.ok_or(MissingEventField(name))
        }
        Ok(match raw.kind {
            EventType::Status => Event::Status {
                at: raw.at,
                from: required(raw.from, "from")?,
                to: required(raw.to, "to")?,
                reason: raw.reason,
            },
            EventType::Notify => Event::Notify {
                at: raw.at,
                transaction_id: required(raw.transaction_id, "transaction_id")?,
                result: required(raw.result, "result")?,
                reason: raw.reason,
            },
            EventType::Alert => Event::Alert {
                at: raw.at,
                reason: required(raw.reason, "reason")?,
            },
        })
    }
}

impl Event {
    pub fn at(&self) -> &str {
        match self {
            Event::Status { at, .. } | Event::Notify { at, .. } | Event::Alert { at, .. } => at,
        }
    }
}

// ---- Triggers and the transition table ----------------------------------------------------------

/// Something that happened at WeChat and moves an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// The unified order succeeded: the user can now pay with `prepay_id` until `expires_at`
    /// (Unix seconds).
    PrepayObtained { prepay_id: String, expires_at: u64 },
    /// WeChat refused the unified order for good (a non-retryable `err_code`).
    RefusedByWechat { err_code: String },
    /// WeChat says the order is paid: a verified notification, or orderquery `trade_state`
    /// SUCCESS. Authoritative, so it also overrides a local `CLOSED`/`FAILED`.
    PaymentConfirmed { transaction_id: String },
    /// WeChat closed the order (closeorder succeeded, orderquery says CLOSED/REVOKED) or reports
    /// that it does not exist (ORDERNOTEXIST): it can no longer be paid.
    ClosedAtWechat { reason: String },
}

/// The kind of a [`Trigger`], without its data: what the table is indexed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TriggerKind {
    PrepayObtained,
    RefusedByWechat,
    PaymentConfirmed,
    ClosedAtWechat,
}

impl TriggerKind {
    pub const ALL: [TriggerKind; 4] = [
        TriggerKind::PrepayObtained,
        TriggerKind::RefusedByWechat,
        TriggerKind::PaymentConfirmed,
        TriggerKind::ClosedAtWechat,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TriggerKind::PrepayObtained => "prepay_obtained",
            TriggerKind::RefusedByWechat => "refused_by_wechat",
            TriggerKind::PaymentConfirmed => "payment_confirmed",
            TriggerKind::ClosedAtWechat => "closed_at_wechat",
        }
    }
}

impl fmt::Display for TriggerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Trigger {
    pub fn kind(&self) -> TriggerKind {
        match self {
            Trigger::PrepayObtained { .. } => TriggerKind::PrepayObtained,
            Trigger::RefusedByWechat { .. } => TriggerKind::RefusedByWechat,
            Trigger::PaymentConfirmed { .. } => TriggerKind::PaymentConfirmed,
            Trigger::ClosedAtWechat { .. } => TriggerKind::ClosedAtWechat,
        }
    }
}

/// Every allowed transition; anything not listed is refused. The two rows leaving a terminal
/// status are WeChat's authoritative word that the order was paid after all (docs/ARCHITECTURE.md §4):
/// they are taken and an alert is recorded.
pub const TRANSITIONS: &[(Status, TriggerKind, Status)] = &[
    (
        Status::Created,
        TriggerKind::PrepayObtained,
        Status::AwaitingPayment,
    ),
    (
        Status::Created,
        TriggerKind::RefusedByWechat,
        Status::Failed,
    ),
    (Status::Created, TriggerKind::PaymentConfirmed, Status::Paid),
    (
        Status::AwaitingPayment,
        TriggerKind::PaymentConfirmed,
        Status::Paid,
    ),
    (Status::Closed, TriggerKind::PaymentConfirmed, Status::Paid),
    (Status::Failed, TriggerKind::PaymentConfirmed, Status::Paid),
    (Status::Created, TriggerKind::ClosedAtWechat, Status::Closed),
    (
        Status::AwaitingPayment,
        TriggerKind::ClosedAtWechat,
        Status::Closed,
    ),
];

/// Why a trigger did not move an order.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TransitionError {
    /// Not in the table (e.g. anything from `PAID` other than a payment confirmation, a second
    /// prepay, closing a closed order).
    #[error("{trigger} is not allowed for an order in status {from}")]
    NotAllowed { from: Status, trigger: TriggerKind },
    /// The order is already paid and this confirmation carries the same transaction_id: a
    /// duplicate (WeChat repeats notifications), not a transition. Nothing changed; nothing
    /// needs writing; a notification is answered SUCCESS.
    #[error("order is already paid by this transaction")]
    AlreadyPaid,
    /// The order is already paid by another transaction: two payments for one order, or a
    /// corrupt record. Nothing changed; a person must look.
    #[error(
        "order is already paid by transaction {}, but WeChat now confirms transaction {received}",
        .recorded.as_deref().unwrap_or("(none recorded)")
    )]
    ConflictingPayment {
        recorded: Option<String>,
        received: String,
    },
    /// The trigger's data is unusable (e.g. an empty transaction_id).
    #[error("invalid {trigger}: {problem}")]
    InvalidTrigger {
        trigger: TriggerKind,
        problem: &'static str,
    },
}

impl TransitionError {
    /// Whether the order is already `PAID` (same or another transaction).
    pub fn is_already_paid(&self) -> bool {
        matches!(
            self,
            TransitionError::AlreadyPaid | TransitionError::ConflictingPayment { .. }
        )
    }
}

/// The pure table: the status `trigger` moves `from` to.
///
/// `PAID` + `PaymentConfirmed` is [`TransitionError::AlreadyPaid`] here; [`Order::apply`], which
/// knows the recorded transaction_id, tells a duplicate from a conflicting payment.
pub fn transition(from: Status, trigger: TriggerKind) -> Result<Status, TransitionError> {
    if from == Status::Paid && trigger == TriggerKind::PaymentConfirmed {
        return Err(TransitionError::AlreadyPaid);
    }
    TRANSITIONS
        .iter()
        .find(|(f, t, _)| *f == from && *t == trigger)
        .map(|&(_, _, to)| to)
        .ok_or(TransitionError::NotAllowed { from, trigger })
}

/// What [`Order::apply`] did. The order changed: persist it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "the order changed and must be stored"]
pub struct Applied {
    pub from: Status,
    pub to: Status,
    /// A terminal status was overridden by WeChat's word; an alert event was recorded.
    pub alerted: bool,
}

// ---- Catalog ------------------------------------------------------------------------------------

/// A catalog entry, stored under `product:{sku}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    pub sku: String,
    /// Becomes WeChat's `body` (≤ 127 bytes).
    pub name: String,
    pub price: Fen,
    #[serde(default = "active_by_default")]
    pub active: bool,
}

fn active_by_default() -> bool {
    true
}

/// An invalid product field; the message names the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ProductError {
    #[error("sku must be 1..=32 characters of A-Z, a-z, 0-9, '_' or '-'")]
    Sku,
    #[error("name must be non-blank, at most 127 bytes, without control characters")]
    Name,
    #[error("price must be a positive whole number of fen")]
    Price,
}

impl ProductError {
    /// The offending field's JSON name.
    pub fn field(self) -> &'static str {
        match self {
            ProductError::Sku => "sku",
            ProductError::Name => "name",
            ProductError::Price => "price",
        }
    }
}

/// The body of `PUT /api/admin/products/{sku}` (the sku comes from the path).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ProductInput {
    pub name: String,
    pub price: Fen,
    #[serde(default)]
    pub active: Option<bool>,
}

impl ProductInput {
    /// The validated product (`active` defaults to true).
    pub fn into_product(self, sku: &str) -> Result<Product, ProductError> {
        let product = Product {
            sku: sku.to_owned(),
            name: self.name,
            price: self.price,
            active: self.active.unwrap_or(true),
        };
        product.validate()?;
        Ok(product)
    }
}

impl Product {
    /// Checks sku, name and price, in that order.
    pub fn validate(&self) -> Result<(), ProductError> {
        if !valid_sku(&self.sku) {
            return Err(ProductError::Sku);
        }
        if self.name.trim().is_empty()
            || self.name.len() > MAX_BODY_BYTES
            || self.name.chars().any(char::is_control)
        {
            return Err(ProductError::Name);
        }
        if self.price == Fen(0) {
            return Err(ProductError::Price);
        }
        Ok(())
    }
}

// ---- The order record ---------------------------------------------------------------------------

/// The stored order, JSON under `order:{order_no}`. It is also the admin view (docs/ARCHITECTURE.md §6:
/// the order plus openid, prepay_id and events). Never sent to the mini program: see
/// [`OrderView`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// Record format version ([`ORDER_VERSION`]).
    pub version: u32,
    /// Also WeChat's `out_trade_no`.
    pub order_no: String,
    pub openid: String,
    pub sku: String,
    pub quantity: u32,
    /// Price × quantity, fixed at creation from the catalog.
    pub total_fee: Fen,
    /// The product name at creation; sent as WeChat's `body`.
    pub description: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepay_id: Option<String>,
    /// Unix seconds after which `prepay_id` can no longer be paid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepay_expires_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    /// RFC 3339, from WeChat's `time_end`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paid_at: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    pub mode: Mode,
    /// Echoed by WeChat in the notification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<String>,
    /// The signature type the unified order was made with, which WeChat uses for the order's
    /// notification (`None` in records made before it was recorded: the configured type is
    /// used for them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sign_type: Option<crate::v2::sign::SignType>,
    /// An APIv3 order's `wx.requestPayment` parameters, signed once with its prepay id (an RSA
    /// private-key operation costs milliseconds in Wasm): the re-sign route hands them back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pay_params: Option<crate::pay_params::PayParams>,
    /// Unix seconds of the last orderquery (throttles `GET /api/orders/{no}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checked_at: Option<u64>,
    #[serde(default)]
    pub events: Vec<Event>,
}

/// What a new order is made of; the total comes from the catalog, never from the client.
#[derive(Debug, Clone)]
pub struct NewOrder<'a> {
    pub order_no: String,
    pub openid: String,
    pub product: &'a Product,
    pub quantity: u32,
    pub attach: Option<String>,
    pub mode: Mode,
    /// RFC 3339.
    pub created_at: String,
}

/// Why an order cannot be created.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NewOrderError {
    #[error("order_no must be 6..=32 characters of 0-9, A-Z, a-z, '_', '-', '|' or '*'")]
    InvalidOrderNo,
    #[error("openid is empty")]
    MissingOpenid,
    #[error("product is not for sale")]
    InactiveProduct,
    #[error("product is invalid: {0}")]
    InvalidProduct(ProductError),
    #[error("quantity must be an integer in 1..={MAX_QUANTITY}")]
    InvalidQuantity,
    #[error("attach must be at most {MAX_ATTACH_BYTES} bytes without control characters")]
    InvalidAttach,
    #[error("total amount overflows")]
    AmountOverflow,
}

/// A stored record that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RecordError {
    #[error("order record is not valid JSON for this version: {0}")]
    Json(String),
    #[error("order record has version {0}, this code reads version {ORDER_VERSION}")]
    UnsupportedVersion(u32),
}

impl Order {
    /// A `CREATED` order priced from the catalog. No events yet: creation is not a transition
    /// (`created_at` records it).
    pub fn new(new: NewOrder<'_>) -> Result<Order, NewOrderError> {
        if !valid_out_trade_no(&new.order_no) {
            return Err(NewOrderError::InvalidOrderNo);
        }
        if new.openid.is_empty() {
            return Err(NewOrderError::MissingOpenid);
        }
        new.product
            .validate()
            .map_err(NewOrderError::InvalidProduct)?;
        if !new.product.active {
            return Err(NewOrderError::InactiveProduct);
        }
        if !(1..=MAX_QUANTITY).contains(&new.quantity) {
            return Err(NewOrderError::InvalidQuantity);
        }
        // WeChat drops empty fields, so an empty attach is no attach.
        let attach = new.attach.filter(|a| !a.is_empty());
        if let Some(a) = &attach
            && (a.len() > MAX_ATTACH_BYTES || a.chars().any(char::is_control))
        {
            return Err(NewOrderError::InvalidAttach);
        }
        let total_fee = new
            .product
            .price
            .checked_mul(u64::from(new.quantity))
            .map_err(|_| NewOrderError::AmountOverflow)?;
        Ok(Order {
            version: ORDER_VERSION,
            order_no: new.order_no,
            openid: new.openid,
            sku: new.product.sku.clone(),
            quantity: new.quantity,
            total_fee,
            description: new.product.name.clone(),
            status: Status::Created,
            prepay_id: None,
            prepay_expires_at: None,
            transaction_id: None,
            paid_at: None,
            created_at: new.created_at,
            mode: new.mode,
            attach,
            sign_type: None,
            pay_params: None,
            last_checked_at: None,
            events: Vec::new(),
        })
    }

    /// Applies a trigger at `at` (RFC 3339; for a payment, derived from WeChat's `time_end` so
    /// that duplicates converge): checks the table, updates the fields, and appends exactly one
    /// `status` event, plus an `alert` when a terminal status is overridden. On error the order
    /// is unchanged.
    pub fn apply(&mut self, trigger: Trigger, at: &str) -> Result<Applied, TransitionError> {
        let kind = trigger.kind();
        if let Trigger::PaymentConfirmed { transaction_id } = &trigger {
            if transaction_id.is_empty() {
                return Err(TransitionError::InvalidTrigger {
                    trigger: kind,
                    problem: "transaction_id is empty",
                });
            }
            if self.status == Status::Paid {
                return Err(if self.transaction_id.as_ref() == Some(transaction_id) {
                    TransitionError::AlreadyPaid
                } else {
                    TransitionError::ConflictingPayment {
                        recorded: self.transaction_id.clone(),
                        received: transaction_id.clone(),
                    }
                });
            }
        }
        if let Trigger::PrepayObtained { prepay_id, .. } = &trigger
            && (prepay_id.is_empty() || prepay_id.len() > MAX_PREPAY_ID_LEN)
        {
            return Err(TransitionError::InvalidTrigger {
                trigger: kind,
                problem: "prepay_id must be 1..=64 characters",
            });
        }

        let from = self.status;
        let to = transition(from, kind)?;
        let (reason, alert) = match trigger {
            Trigger::PrepayObtained {
                prepay_id,
                expires_at,
            } => {
                self.prepay_id = Some(prepay_id);
                self.prepay_expires_at = Some(expires_at);
                (None, None)
            }
            Trigger::RefusedByWechat { err_code } => (Some(err_code), None),
            Trigger::PaymentConfirmed { transaction_id } => {
                // The table lets a terminal status go only for WeChat's word that it was paid.
                let alert = from.is_terminal().then(|| {
                    format!(
                        "WeChat confirmed payment {transaction_id} for an order that was {from} \
                         here; recorded as PAID"
                    )
                });
                self.transaction_id = Some(transaction_id);
                self.paid_at = Some(at.to_owned());
                (None, alert)
            }
            Trigger::ClosedAtWechat { reason } => (Some(reason), None),
        };
        self.events.push(Event::Status {
            at: at.to_owned(),
            from,
            to,
            reason,
        });
        let alerted = alert.is_some();
        if let Some(reason) = alert {
            self.events.push(Event::Alert {
                at: at.to_owned(),
                reason,
            });
        }
        self.status = to;
        Ok(Applied { from, to, alerted })
    }

    /// Records that a verified notification was seen (applied or rejected).
    pub fn record_notify(
        &mut self,
        at: &str,
        transaction_id: &str,
        result: NotifyResult,
        reason: Option<String>,
    ) {
        self.events.push(Event::Notify {
            at: at.to_owned(),
            transaction_id: transaction_id.to_owned(),
            result,
            reason,
        });
    }

    /// Records something a person should look at.
    pub fn record_alert(&mut self, at: &str, reason: impl Into<String>) {
        self.events.push(Event::Alert {
            at: at.to_owned(),
            reason: reason.into(),
        });
    }

    /// The `prepay_id`, if the order awaits payment and it is still valid at `now`.
    pub fn payable_prepay_id(&self, now: u64) -> Option<&str> {
        match (self.status, &self.prepay_id, self.prepay_expires_at) {
            (Status::AwaitingPayment, Some(id), Some(exp)) if now < exp => Some(id),
            _ => None,
        }
    }

    /// Whether `GET /api/orders/{no}` should ask WeChat now: the order awaits payment and was
    /// not checked in the last [`QUERY_THROTTLE_SECS`] (a `last_checked_at` in the future, from
    /// clock skew between instances, does not block it).
    pub fn query_due(&self, now: u64) -> bool {
        self.status == Status::AwaitingPayment
            && self
                .last_checked_at
                .is_none_or(|t| now < t || now - t >= QUERY_THROTTLE_SECS)
    }

    /// The client's view (no openid, prepay_id or events).
    pub fn view(&self) -> OrderView {
        OrderView::from(self)
    }

    /// The stored bytes.
    pub fn to_json(&self) -> Result<Vec<u8>, RecordError> {
        serde_json::to_vec(self).map_err(|e| RecordError::Json(e.to_string()))
    }

    /// Reads a stored record, refusing versions this code does not know.
    pub fn from_json(bytes: &[u8]) -> Result<Order, RecordError> {
        #[derive(Deserialize)]
        struct VersionOnly {
            version: u32,
        }
        // One pass for a record of this version (every read of the hot routes); a record
        // that does not parse is looked at again for its version, so that one written by
        // another version is reported as such rather than as bad JSON.
        if let Ok(order) = serde_json::from_slice::<Order>(bytes) {
            return match order.version {
                ORDER_VERSION | ORDER_VERSION_FIRST => Ok(order),
                other => Err(RecordError::UnsupportedVersion(other)),
            };
        }
        let v: VersionOnly =
            serde_json::from_slice(bytes).map_err(|e| RecordError::Json(e.to_string()))?;
        if v.version != ORDER_VERSION && v.version != ORDER_VERSION_FIRST {
            return Err(RecordError::UnsupportedVersion(v.version));
        }
        serde_json::from_slice(bytes).map_err(|e| RecordError::Json(e.to_string()))
    }
}

/// The order as the mini program sees it (docs/ARCHITECTURE.md §6 "Order").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderView {
    pub order_no: String,
    pub status: Status,
    pub sku: String,
    pub quantity: u32,
    pub total_fee: Fen,
    pub description: String,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paid_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    /// `simulator` or `live`: a simulated payment is never mistaken for a real one.
    pub mode: Mode,
    /// What the successful refunds gave back (absent without refunds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refunded_total: Option<Fen>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refunds: Vec<crate::refund::RefundBrief>,
}

impl OrderView {
    /// The view with the order's refunds: each refund's amount, status and times, the total
    /// given back, and `REFUNDED` once that is the whole paid total.
    pub fn with_refunds(mut self, order: &Order, refunds: &[crate::refund::Refund]) -> Self {
        if refunds.is_empty() {
            return self;
        }
        if crate::refund::fully_refunded(order, refunds) {
            self.status = Status::Refunded;
        }
        self.refunded_total = Some(crate::refund::refunded_total(refunds));
        self.refunds = refunds
            .iter()
            .map(crate::refund::RefundBrief::from)
            .collect();
        self
    }
}

impl From<&Order> for OrderView {
    fn from(o: &Order) -> Self {
        OrderView {
            order_no: o.order_no.clone(),
            status: o.status,
            sku: o.sku.clone(),
            quantity: o.quantity,
            total_fee: o.total_fee,
            description: o.description.clone(),
            created_at: o.created_at.clone(),
            paid_at: o.paid_at.clone(),
            transaction_id: o.transaction_id.clone(),
            mode: o.mode,
            refunded_total: None,
            refunds: Vec::new(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// A valid `CREATED` order (3 × 19.90 yuan, simulator mode) for tests of other modules.
    pub(crate) fn sample_order() -> Order {
        order()
    }

    const AT: &str = "2024-05-01T08:00:00Z";
    const AT2: &str = "2024-05-01T08:05:00Z";
    const TID: &str = "4200001234202405011234567890";

    fn product() -> Product {
        Product {
            sku: "coffee-L".into(),
            name: "Large coffee".into(),
            price: Fen(1990),
            active: true,
        }
    }

    fn order() -> Order {
        Order::new(NewOrder {
            order_no: "20240501160000a1b2c3d4e5f60708".into(),
            openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into(),
            product: &product(),
            quantity: 3,
            attach: None,
            mode: Mode::Simulator,
            created_at: "2024-05-01T07:59:00Z".into(),
        })
        .unwrap()
    }

    fn order_in(status: Status) -> Order {
        let mut o = order();
        o.status = status;
        if status == Status::Paid {
            o.transaction_id = Some(TID.into());
            o.paid_at = Some(AT.into());
        }
        o
    }

    fn sample(kind: TriggerKind) -> Trigger {
        match kind {
            TriggerKind::PrepayObtained => Trigger::PrepayObtained {
                prepay_id: "wx2017033010242291fcfe0db70013231072".into(),
                expires_at: 1_714_557_600,
            },
            TriggerKind::RefusedByWechat => Trigger::RefusedByWechat {
                err_code: "NOAUTH".into(),
            },
            TriggerKind::PaymentConfirmed => Trigger::PaymentConfirmed {
                transaction_id: "4200009999202405019999999999".into(),
            },
            TriggerKind::ClosedAtWechat => Trigger::ClosedAtWechat {
                reason: "ORDERNOTEXIST".into(),
            },
        }
    }

    /// The table written out independently of `TRANSITIONS`, as the specification.
    fn expected(from: Status, kind: TriggerKind) -> Option<Status> {
        use Status::*;
        use TriggerKind::*;
        match (from, kind) {
            (Created, PrepayObtained) => Some(AwaitingPayment),
            (Created, RefusedByWechat) => Some(Failed),
            (Created | AwaitingPayment | Closed | Failed, PaymentConfirmed) => Some(Paid),
            (Created | AwaitingPayment, ClosedAtWechat) => Some(Closed),
            _ => None,
        }
    }

    fn status_events(o: &Order) -> Vec<&Event> {
        o.events
            .iter()
            .filter(|e| matches!(e, Event::Status { .. }))
            .collect()
    }

    #[test]
    fn pure_table_matches_the_specification() {
        for from in Status::ALL {
            for kind in TriggerKind::ALL {
                let got = transition(from, kind);
                match expected(from, kind) {
                    Some(to) => assert_eq!(got, Ok(to), "{from} + {kind}"),
                    None if from == Status::Paid && kind == TriggerKind::PaymentConfirmed => {
                        assert_eq!(got, Err(TransitionError::AlreadyPaid))
                    }
                    None => assert_eq!(
                        got,
                        Err(TransitionError::NotAllowed {
                            from,
                            trigger: kind
                        }),
                        "{from} + {kind}"
                    ),
                }
            }
        }
    }

    #[test]
    fn apply_on_every_combination() {
        for from in Status::ALL {
            for kind in TriggerKind::ALL {
                let mut o = order_in(from);
                let before = o.clone();
                let result = o.apply(sample(kind), AT2);
                match expected(from, kind) {
                    Some(to) => {
                        let applied = result.unwrap_or_else(|e| panic!("{from} + {kind}: {e}"));
                        assert_eq!(applied.from, from);
                        assert_eq!(applied.to, to);
                        assert_eq!(o.status, to);
                        assert_eq!(applied.alerted, from.is_terminal());
                        // Exactly one status event, describing this transition.
                        let statuses = status_events(&o);
                        assert_eq!(statuses.len(), 1, "{from} + {kind}");
                        assert!(matches!(
                            statuses[0],
                            Event::Status { at, from: f, to: t, .. }
                                if at == AT2 && *f == from && *t == to
                        ));
                        let alerts = o
                            .events
                            .iter()
                            .filter(|e| matches!(e, Event::Alert { .. }))
                            .count();
                        assert_eq!(alerts, usize::from(applied.alerted));
                        assert_eq!(o.events.len(), 1 + alerts);
                    }
                    None => {
                        assert!(result.is_err(), "{from} + {kind} should be refused");
                        assert_eq!(o, before, "a refused trigger changes nothing");
                    }
                }
            }
        }
    }

    #[test]
    fn happy_path_fields() {
        let mut o = order();
        assert_eq!(o.total_fee, Fen(5970));
        assert!(o.events.is_empty());
        let a = o
            .apply(
                Trigger::PrepayObtained {
                    prepay_id: "wx_prepay".into(),
                    expires_at: 1000,
                },
                AT,
            )
            .unwrap();
        assert_eq!(
            a,
            Applied {
                from: Status::Created,
                to: Status::AwaitingPayment,
                alerted: false
            }
        );
        assert_eq!(o.prepay_id.as_deref(), Some("wx_prepay"));
        assert_eq!(o.prepay_expires_at, Some(1000));
        assert_eq!(o.payable_prepay_id(999), Some("wx_prepay"));
        assert_eq!(o.payable_prepay_id(1000), None);

        let a = o
            .apply(
                Trigger::PaymentConfirmed {
                    transaction_id: TID.into(),
                },
                AT2,
            )
            .unwrap();
        assert_eq!(a.to, Status::Paid);
        assert!(!a.alerted);
        assert_eq!(o.transaction_id.as_deref(), Some(TID));
        assert_eq!(o.paid_at.as_deref(), Some(AT2));
        assert_eq!(o.payable_prepay_id(0), None, "a paid order is not payable");
        assert_eq!(o.events.len(), 2);
    }

    #[test]
    fn refusal_and_close_record_the_reason() {
        let mut o = order();
        let _ = o
            .apply(
                Trigger::RefusedByWechat {
                    err_code: "NOAUTH".into(),
                },
                AT,
            )
            .unwrap();
        assert_eq!(
            o.events,
            vec![Event::Status {
                at: AT.into(),
                from: Status::Created,
                to: Status::Failed,
                reason: Some("NOAUTH".into())
            }]
        );
        let mut o = order_in(Status::AwaitingPayment);
        let _ = o
            .apply(
                Trigger::ClosedAtWechat {
                    reason: "closeorder".into(),
                },
                AT,
            )
            .unwrap();
        assert_eq!(o.status, Status::Closed);
        assert!(matches!(&o.events[0], Event::Status { reason: Some(r), .. } if r == "closeorder"));
    }

    #[test]
    fn paid_after_close_is_taken_with_an_alert() {
        for terminal in [Status::Closed, Status::Failed] {
            let mut o = order_in(terminal);
            let a = o
                .apply(
                    Trigger::PaymentConfirmed {
                        transaction_id: TID.into(),
                    },
                    AT2,
                )
                .unwrap();
            assert!(a.alerted);
            assert_eq!(o.status, Status::Paid);
            assert_eq!(o.transaction_id.as_deref(), Some(TID));
            assert_eq!(o.events.len(), 2);
            assert!(matches!(
                &o.events[0],
                Event::Status { from, to: Status::Paid, .. } if *from == terminal
            ));
            match &o.events[1] {
                Event::Alert { at, reason } => {
                    assert_eq!(at, AT2);
                    assert!(reason.contains(TID) && reason.contains(terminal.as_str()));
                }
                other => panic!("expected an alert, got {other:?}"),
            }
        }
    }

    #[test]
    fn duplicate_vs_conflicting_payment() {
        let mut o = order_in(Status::AwaitingPayment);
        let _ = o
            .apply(
                Trigger::PaymentConfirmed {
                    transaction_id: TID.into(),
                },
                AT,
            )
            .unwrap();
        let paid = o.clone();

        let dup = o.apply(
            Trigger::PaymentConfirmed {
                transaction_id: TID.into(),
            },
            AT2,
        );
        assert_eq!(dup, Err(TransitionError::AlreadyPaid));
        assert!(dup.unwrap_err().is_already_paid());
        assert_eq!(o, paid);

        let other = o.apply(
            Trigger::PaymentConfirmed {
                transaction_id: "4200000000000000000000000000".into(),
            },
            AT2,
        );
        let err = other.unwrap_err();
        assert_eq!(
            err,
            TransitionError::ConflictingPayment {
                recorded: Some(TID.into()),
                received: "4200000000000000000000000000".into()
            }
        );
        assert!(err.is_already_paid());
        assert!(err.to_string().contains(TID));
        assert_eq!(o, paid);
        assert_eq!(
            status_events(&o)
                .iter()
                .filter(|e| matches!(
                    e,
                    Event::Status {
                        to: Status::Paid,
                        ..
                    }
                ))
                .count(),
            1
        );

        // A PAID record without a transaction id (corrupt) is a conflict, never a duplicate.
        let mut corrupt = order_in(Status::Paid);
        corrupt.transaction_id = None;
        assert!(matches!(
            corrupt.apply(
                Trigger::PaymentConfirmed {
                    transaction_id: TID.into()
                },
                AT
            ),
            Err(TransitionError::ConflictingPayment { recorded: None, .. })
        ));
    }

    #[test]
    fn invalid_trigger_data() {
        let mut o = order_in(Status::AwaitingPayment);
        let before = o.clone();
        assert!(matches!(
            o.apply(
                Trigger::PaymentConfirmed {
                    transaction_id: String::new()
                },
                AT
            ),
            Err(TransitionError::InvalidTrigger { .. })
        ));
        let mut c = order();
        let c_before = c.clone();
        for bad in [String::new(), "p".repeat(65)] {
            assert!(matches!(
                c.apply(
                    Trigger::PrepayObtained {
                        prepay_id: bad,
                        expires_at: 1
                    },
                    AT
                ),
                Err(TransitionError::InvalidTrigger { .. })
            ));
        }
        assert_eq!(o, before);
        assert_eq!(c, c_before);
    }

    #[test]
    fn concurrent_duplicates_converge_to_identical_bytes() {
        let stored = {
            let mut o = order();
            let _ = o.apply(sample(TriggerKind::PrepayObtained), AT).unwrap();
            o.to_json().unwrap()
        };
        let handle = || {
            let mut o = Order::from_json(&stored).unwrap();
            let _ = o
                .apply(
                    Trigger::PaymentConfirmed {
                        transaction_id: TID.into(),
                    },
                    "2024-05-01T08:03:12Z",
                )
                .unwrap();
            o.record_notify("2024-05-01T08:03:12Z", TID, NotifyResult::Applied, None);
            o.to_json().unwrap()
        };
        assert_eq!(handle(), handle());
    }

    #[test]
    fn status_json_spelling() {
        let spelled: Vec<String> = Status::ALL
            .iter()
            .map(|s| serde_json::to_string(s).unwrap())
            .collect();
        assert_eq!(
            spelled,
            [
                "\"CREATED\"",
                "\"AWAITING_PAYMENT\"",
                "\"PAID\"",
                "\"CLOSED\"",
                "\"FAILED\""
            ]
        );
        for s in Status::ALL {
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
            let back: Status = serde_json::from_str(&format!("\"{}\"", s.as_str())).unwrap();
            assert_eq!(back, s);
        }
        assert!(serde_json::from_str::<Status>("\"paid\"").is_err());
        assert!(!Status::Created.is_terminal() && !Status::AwaitingPayment.is_terminal());
        assert!(
            Status::Paid.is_terminal()
                && Status::Closed.is_terminal()
                && Status::Failed.is_terminal()
        );
    }

    #[test]
    fn event_json_spelling() {
        let events = vec![
            Event::Status {
                at: AT.into(),
                from: Status::AwaitingPayment,
                to: Status::Paid,
                reason: None,
            },
            Event::Status {
                at: AT.into(),
                from: Status::Created,
                to: Status::Failed,
                reason: Some("NOAUTH".into()),
            },
            Event::Notify {
                at: AT.into(),
                transaction_id: TID.into(),
                result: NotifyResult::Applied,
                reason: None,
            },
            Event::Notify {
                at: AT.into(),
                transaction_id: TID.into(),
                result: NotifyResult::Rejected,
                reason: Some("total_fee 1 differs from the order's 5970".into()),
            },
            Event::Alert {
                at: AT.into(),
                reason: "look".into(),
            },
        ];
        let v = serde_json::to_value(&events).unwrap();
        assert_eq!(
            v,
            json!([
                {"type": "status", "at": AT, "from": "AWAITING_PAYMENT", "to": "PAID"},
                {"type": "status", "at": AT, "from": "CREATED", "to": "FAILED", "reason": "NOAUTH"},
                {"type": "notify", "at": AT, "transaction_id": TID, "result": "applied"},
                {"type": "notify", "at": AT, "transaction_id": TID, "result": "rejected",
                 "reason": "total_fee 1 differs from the order's 5970"},
                {"type": "alert", "at": AT, "reason": "look"},
            ])
        );
        let back: Vec<Event> = serde_json::from_value(v).unwrap();
        assert_eq!(back, events);
        assert_eq!(events[4].at(), AT);
    }

    #[test]
    fn events_read_field_order_free_and_refuse_missing_fields() {
        // `type` need not come first; unknown fields are ignored.
        let e: Event = serde_json::from_value(
            json!({"at": AT, "reason": "look", "extra": 1, "type": "alert"}),
        )
        .unwrap();
        assert_eq!(
            e,
            Event::Alert {
                at: AT.into(),
                reason: "look".into()
            }
        );
        for (bad, missing) in [
            (json!({"type": "status", "at": AT, "to": "PAID"}), "from"),
            (
                json!({"type": "notify", "at": AT, "result": "applied"}),
                "transaction_id",
            ),
            (json!({"type": "alert", "at": AT}), "reason"),
            (
                json!({"type": "status", "from": "CREATED", "to": "PAID"}),
                "at",
            ),
        ] {
            let err = serde_json::from_value::<Event>(bad)
                .unwrap_err()
                .to_string();
            assert!(err.contains(missing), "{err}");
        }
        assert!(serde_json::from_value::<Event>(json!({"type": "refund", "at": AT})).is_err());
        assert!(serde_json::from_value::<Event>(json!({"at": AT, "reason": "x"})).is_err());
    }

    #[test]
    fn order_record_round_trip_and_spelling() {
        let mut o = order();
        o.attach = Some("table 7".into());
        let _ = o.apply(sample(TriggerKind::PrepayObtained), AT).unwrap();
        o.last_checked_at = Some(1_714_550_000);
        let bytes = o.to_json().unwrap();
        assert_eq!(Order::from_json(&bytes).unwrap(), o);
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            v,
            json!({
                "version": 2,
                "order_no": "20240501160000a1b2c3d4e5f60708",
                "openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
                "sku": "coffee-L",
                "quantity": 3,
                "total_fee": 5970,
                "description": "Large coffee",
                "status": "AWAITING_PAYMENT",
                "prepay_id": "wx2017033010242291fcfe0db70013231072",
                "prepay_expires_at": 1_714_557_600u64,
                "created_at": "2024-05-01T07:59:00Z",
                "mode": "simulator",
                "attach": "table 7",
                "last_checked_at": 1_714_550_000u64,
                "events": [{"type": "status", "at": AT, "from": "CREATED", "to": "AWAITING_PAYMENT"}],
            })
        );
    }

    #[test]
    fn record_versions_and_garbage() {
        let mut v = serde_json::to_value(order()).unwrap();
        v["version"] = json!(3);
        assert_eq!(
            Order::from_json(&serde_json::to_vec(&v).unwrap()),
            Err(RecordError::UnsupportedVersion(3))
        );
        // The first format still reads.
        v["version"] = json!(1);
        assert_eq!(
            Order::from_json(&serde_json::to_vec(&v).unwrap())
                .unwrap()
                .version,
            1
        );
        assert!(matches!(Order::from_json(b"{}"), Err(RecordError::Json(_))));
        assert!(matches!(
            Order::from_json(b"not json"),
            Err(RecordError::Json(_))
        ));
        assert!(matches!(
            Order::from_json(br#"{"version":1,"status":"SHIPPED"}"#),
            Err(RecordError::Json(_))
        ));
    }

    #[test]
    fn client_view_hides_private_fields() {
        let mut o = order();
        let _ = o.apply(sample(TriggerKind::PrepayObtained), AT).unwrap();
        let v = serde_json::to_value(o.view()).unwrap();
        assert_eq!(
            v,
            json!({
                "order_no": "20240501160000a1b2c3d4e5f60708",
                "status": "AWAITING_PAYMENT",
                "sku": "coffee-L",
                "quantity": 3,
                "total_fee": 5970,
                "mode": "simulator",
                "description": "Large coffee",
                "created_at": "2024-05-01T07:59:00Z",
            })
        );
        let _ = o
            .apply(
                Trigger::PaymentConfirmed {
                    transaction_id: TID.into(),
                },
                AT2,
            )
            .unwrap();
        let v = serde_json::to_value(o.view()).unwrap();
        assert_eq!(v["paid_at"], AT2);
        assert_eq!(v["transaction_id"], TID);
        let text = v.to_string();
        assert!(!text.contains("oUpF8") && !text.contains("prepay") && !text.contains("events"));
    }

    #[test]
    fn new_order_rules() {
        let p = product();
        let base = || NewOrder {
            order_no: "20240501160000a1b2c3d4e5f60708".into(),
            openid: "o".into(),
            product: &p,
            quantity: 1,
            attach: None,
            mode: Mode::Live,
            created_at: AT.into(),
        };
        assert_eq!(Order::new(base()).unwrap().mode, Mode::Live);
        let bad_no = NewOrder {
            order_no: "abc".into(),
            ..base()
        };
        assert_eq!(Order::new(bad_no), Err(NewOrderError::InvalidOrderNo));
        let no_openid = NewOrder {
            openid: String::new(),
            ..base()
        };
        assert_eq!(Order::new(no_openid), Err(NewOrderError::MissingOpenid));
        for q in [0, MAX_QUANTITY + 1, u32::MAX] {
            assert_eq!(
                Order::new(NewOrder {
                    quantity: q,
                    ..base()
                }),
                Err(NewOrderError::InvalidQuantity)
            );
        }
        assert_eq!(
            Order::new(NewOrder {
                quantity: MAX_QUANTITY,
                ..base()
            })
            .unwrap()
            .total_fee,
            Fen(1990 * 999)
        );
        let inactive = Product {
            active: false,
            ..product()
        };
        assert_eq!(
            Order::new(NewOrder {
                product: &inactive,
                ..base()
            }),
            Err(NewOrderError::InactiveProduct)
        );
        let free = Product {
            price: Fen(0),
            ..product()
        };
        assert_eq!(
            Order::new(NewOrder {
                product: &free,
                ..base()
            }),
            Err(NewOrderError::InvalidProduct(ProductError::Price))
        );
        let huge = Product {
            price: Fen(u64::MAX / 2),
            ..product()
        };
        assert_eq!(
            Order::new(NewOrder {
                product: &huge,
                quantity: 3,
                ..base()
            }),
            Err(NewOrderError::AmountOverflow)
        );
        assert_eq!(
            Order::new(NewOrder {
                attach: Some("a".repeat(128)),
                ..base()
            }),
            Err(NewOrderError::InvalidAttach)
        );
        assert_eq!(
            Order::new(NewOrder {
                attach: Some(String::new()),
                ..base()
            })
            .unwrap()
            .attach,
            None
        );
        assert_eq!(
            Order::new(NewOrder {
                attach: Some("a".repeat(127)),
                ..base()
            })
            .unwrap()
            .attach
            .map(|a| a.len()),
            Some(127)
        );
    }

    #[test]
    fn product_validation_names_the_field() {
        assert_eq!(product().validate(), Ok(()));
        let cases = [
            (
                Product {
                    sku: String::new(),
                    ..product()
                },
                "sku",
            ),
            (
                Product {
                    sku: "a".repeat(33),
                    ..product()
                },
                "sku",
            ),
            (
                Product {
                    sku: "a b".into(),
                    ..product()
                },
                "sku",
            ),
            (
                Product {
                    sku: "a:b".into(),
                    ..product()
                },
                "sku",
            ),
            (
                Product {
                    sku: "咖啡".into(),
                    ..product()
                },
                "sku",
            ),
            (
                Product {
                    name: String::new(),
                    ..product()
                },
                "name",
            ),
            (
                Product {
                    name: "   ".into(),
                    ..product()
                },
                "name",
            ),
            (
                Product {
                    name: "x".repeat(128),
                    ..product()
                },
                "name",
            ),
            // 43 three-byte characters = 129 bytes.
            (
                Product {
                    name: "咖".repeat(43),
                    ..product()
                },
                "name",
            ),
            (
                Product {
                    name: "a\nb".into(),
                    ..product()
                },
                "name",
            ),
            (
                Product {
                    price: Fen(0),
                    ..product()
                },
                "price",
            ),
        ];
        for (p, field) in cases {
            let err = p.validate().unwrap_err();
            assert_eq!(err.field(), field, "{p:?}");
            assert!(err.to_string().starts_with(field));
        }
        assert!(
            Product {
                name: "咖".repeat(42),
                ..product()
            }
            .validate()
            .is_ok()
        );
        assert!(
            Product {
                sku: "a".repeat(32),
                ..product()
            }
            .validate()
            .is_ok()
        );
        assert!(
            Product {
                sku: "A_z-09".into(),
                ..product()
            }
            .validate()
            .is_ok()
        );
    }

    #[test]
    fn product_json() {
        let p = product();
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(
            v,
            json!({"sku": "coffee-L", "name": "Large coffee", "price": 1990, "active": true})
        );
        assert_eq!(serde_json::from_value::<Product>(v).unwrap(), p);
        let input: ProductInput = serde_json::from_str(r#"{"name": "Tea", "price": 800}"#).unwrap();
        assert_eq!(
            input.into_product("tea").unwrap(),
            Product {
                sku: "tea".into(),
                name: "Tea".into(),
                price: Fen(800),
                active: true
            }
        );
        let input: ProductInput =
            serde_json::from_str(r#"{"name": "Tea", "price": 800, "active": false}"#).unwrap();
        assert!(!input.into_product("tea").unwrap().active);
        let input: ProductInput = serde_json::from_str(r#"{"name": "Tea", "price": 0}"#).unwrap();
        assert_eq!(input.into_product("tea"), Err(ProductError::Price));
        // Amounts are integers: a float price is refused by the parser.
        assert!(serde_json::from_str::<ProductInput>(r#"{"name": "Tea", "price": 8.5}"#).is_err());
        assert!(serde_json::from_str::<ProductInput>(r#"{"name": "Tea", "price": -1}"#).is_err());
    }

    #[test]
    fn keys() {
        assert_eq!(order_key("20240501abc"), "order:20240501abc");
        assert_eq!(product_key("coffee-L"), "product:coffee-L");
    }

    #[test]
    fn query_throttle() {
        let mut o = order_in(Status::AwaitingPayment);
        assert!(o.query_due(100));
        o.last_checked_at = Some(100);
        assert!(!o.query_due(100));
        assert!(!o.query_due(104));
        assert!(o.query_due(105));
        assert!(
            o.query_due(99),
            "a check stamped in the future does not block"
        );
        for s in [
            Status::Created,
            Status::Paid,
            Status::Closed,
            Status::Failed,
        ] {
            let mut o = order_in(s);
            o.last_checked_at = None;
            assert!(!o.query_due(1000));
        }
    }

    #[test]
    fn order_numbers() {
        let no = new_order_no(
            1_714_550_400,
            [0xa1, 0xb2, 0xc3, 0xd4, 0xe5, 0xf6, 0x07, 0x08],
        );
        assert_eq!(no, "20240501160000a1b2c3d4e5f60708");
        assert!(valid_out_trade_no(&no));
        for ok in ["123456", "a-b_c|d*e", &"9".repeat(32), "20150806125346"] {
            assert!(valid_out_trade_no(ok), "{ok}");
        }
        for bad in [
            "",
            "12345",
            &"9".repeat(33),
            "abc def",
            "abc:def",
            "订单号123456",
            "abc/def1",
            "abc.def1",
        ] {
            assert!(!valid_out_trade_no(bad), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn generated_order_numbers_are_valid(now in any::<u64>(), random in any::<[u8; 8]>()) {
            let no = new_order_no(now, random);
            prop_assert_eq!(no.len(), 30);
            prop_assert!(valid_out_trade_no(&no));
            prop_assert!(valid_sku(&no)); // also safe in a path and a key
        }

        #[test]
        fn distinct_randomness_gives_distinct_numbers(now in any::<u64>(), a in any::<[u8; 8]>(), b in any::<[u8; 8]>()) {
            prop_assume!(a != b);
            prop_assert_ne!(new_order_no(now, a), new_order_no(now, b));
        }

        /// Any sequence of triggers keeps the invariants: at most one PAID status event, PAID is
        /// never left, every success adds exactly one status event.
        #[test]
        fn random_trigger_sequences(kinds in prop::collection::vec(0usize..4, 0..12), tids in prop::collection::vec(0u8..2, 12)) {
            let mut o = order();
            for (i, k) in kinds.iter().enumerate() {
                let kind = TriggerKind::ALL[*k];
                let trigger = match kind {
                    TriggerKind::PaymentConfirmed => Trigger::PaymentConfirmed { transaction_id: format!("tid{}", tids[i]) },
                    _ => sample(kind),
                };
                let was_paid = o.status == Status::Paid;
                let before = status_events(&o).len();
                match o.apply(trigger, AT) {
                    Ok(_) => prop_assert_eq!(status_events(&o).len(), before + 1),
                    Err(_) => prop_assert_eq!(status_events(&o).len(), before),
                }
                if was_paid {
                    prop_assert_eq!(o.status, Status::Paid);
                }
            }
            let paid_events = o.events.iter().filter(|e| matches!(e, Event::Status { to: Status::Paid, .. })).count();
            prop_assert!(paid_events <= 1);
            prop_assert_eq!(paid_events == 1, o.status == Status::Paid);
        }
    }
}
