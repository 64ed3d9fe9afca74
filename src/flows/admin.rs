//! `/api/admin/...` (docs/ARCHITECTURE.md §6): the catalog, order records and reconciliation. Every route
//! needs `Authorization: Bearer <admin_token>`.

use serde::Serialize;
use serde_json::{Value, json};

use super::wechat::{self, QueryEffect};
use crate::config::quote;

use super::{
    AdminFlowConfig, ApiError, Clock, Env, Nonce, Refusal, Request, Response, Store, Transport,
    answer, bearer_token, json_request, load_order, load_order_with_alerts, load_product,
    record_learned, same_mode, store_unavailable,
};
use crate::money::Fen;
use crate::order::{
    ORDER_KEY_PREFIX, Order, PRODUCT_KEY_PREFIX, Product, ProductError, ProductInput, Status,
    Trigger, product_key, valid_out_trade_no, valid_sku,
};
use crate::time::{parse_rfc3339, rfc3339};
use crate::v2::api::{ErrCode, PREPAY_TTL_SECS, TradeState};

/// Reconcile leaves a CREATED order alone for this long (its unified order may be in flight).
pub const CREATED_GRACE_SECS: u64 = 60;

/// At most this many error messages are listed in a reconcile answer.
pub const MAX_LISTED_ERRORS: usize = 50;

fn authorize(request: &Request, config: &AdminFlowConfig) -> Result<(), ApiError> {
    match bearer_token(request.authorization.as_deref()) {
        Some(token) if config.admin.token.matches(token) => Ok(()),
        _ => Err(ApiError::new(
            401,
            "unauthorized",
            "Authorization: Bearer <admin_token> is required",
        )),
    }
}

/// Refuses a browser's request from another origin (a page elsewhere using a token the admin's
/// browser holds): `Sec-Fetch-Site` other than `same-origin` / `none`, or an `Origin` whose
/// host is not the `Host` the request was sent to. The console is served from the app's own
/// origin; curl and servers send neither header.
fn refuse_cross_origin(request: &Request) -> Result<(), ApiError> {
    let refused = |why: String| {
        ApiError::new(
            403,
            "cross_origin_refused",
            format!("the admin routes answer only their own origin: {why}"),
        )
    };
    if let Some(site) = request.sec_fetch_site.as_deref()
        && !matches!(site, "same-origin" | "none")
    {
        return Err(refused(format!("Sec-Fetch-Site is {}", quote(site))));
    }
    let Some(origin) = request.origin.as_deref() else {
        return Ok(());
    };
    let origin_host = origin
        .split_once("://")
        .map_or(origin, |(_, rest)| rest)
        .trim_end_matches('/');
    match request.host.as_deref() {
        Some(host) if host.eq_ignore_ascii_case(origin_host) => Ok(()),
        _ => Err(refused(format!(
            "Origin {} is not this host",
            quote(origin)
        ))),
    }
}

fn unknown_sku(sku: &str) -> ApiError {
    ApiError::new(404, "unknown_sku", format!("no product {}", quote(sku)))
}

fn product_error(e: ProductError) -> ApiError {
    let code = match e {
        ProductError::Sku => "invalid_sku",
        ProductError::Name => "invalid_name",
        ProductError::Price => "invalid_price",
    };
    ApiError::new(400, code, e.to_string())
}

/// Where the admin routes are mounted (the wildcard route `/api/admin/...` in spin.toml).
pub const ADMIN_PREFIX: &str = "/api/admin";

/// Routes an admin request by method and `sub_path`, the path below [`ADMIN_PREFIX`]
/// (`/products/tea` for `/api/admin/products/tea`; what Spin reports as `spin-path-info`):
/// 404 `not_found` for an unknown path, 405 `method_not_allowed` for a known path with another
/// method. Authorization is checked before anything else.
pub async fn handle<S, T, C, N>(
    env: &Env<S, T, C, N, AdminFlowConfig>,
    method: &str,
    sub_path: &str,
    request: &Request,
) -> Response
where
    S: Store,
    T: Transport,
    C: Clock,
    N: Nonce,
{
    if let Err(e) = refuse_cross_origin(request).and_then(|()| authorize(request, &env.config)) {
        return e.into();
    }
    let rest = sub_path.split(['?', '#']).next().unwrap_or("");
    let query = sub_path
        .split('#')
        .next()
        .and_then(|p| p.split_once('?'))
        .map_or("", |(_, q)| q);
    let path = format!("{ADMIN_PREFIX}{rest}");
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let method_not_allowed = || {
        Refusal::MethodNotAllowed {
            method: method.to_owned(),
            route: path.clone(),
        }
        .response()
    };
    match segments.as_slice() {
        ["products"] => match method {
            "GET" => list_products(env, request).await,
            _ => method_not_allowed(),
        },
        ["products", sku] => match method {
            "GET" => get_product(env, request, sku).await,
            "PUT" => put_product(env, request, sku).await,
            "DELETE" => delete_product(env, request, sku).await,
            _ => method_not_allowed(),
        },
        ["orders"] => match method {
            "GET" => answer(list_orders(env, query).await),
            _ => method_not_allowed(),
        },
        ["orders", order_no] => match method {
            "GET" => get_order(env, request, order_no).await,
            _ => method_not_allowed(),
        },
        ["orders", order_no, "refunds"] => match method {
            "POST" => super::refunds::create(env, request, order_no).await,
            _ => method_not_allowed(),
        },
        ["reconcile"] => match method {
            "POST" => reconcile(env, request).await,
            _ => method_not_allowed(),
        },
        _ => Response::error(404, "not_found", format!("no admin route {}", quote(&path))),
    }
}

/// `PUT /api/admin/products/{sku}` `{"name", "price", "active"?}` → 200 Product.
pub async fn put_product<S: Store, T, C, N>(
    env: &Env<S, T, C, N, AdminFlowConfig>,
    request: &Request,
    sku: &str,
) -> Response {
    answer(put_product_inner(env, request, sku).await)
}

async fn put_product_inner<S: Store, T, C, N>(
    env: &Env<S, T, C, N, AdminFlowConfig>,
    request: &Request,
    sku: &str,
) -> Result<Response, ApiError> {
    authorize(request, &env.config)?;
    if !valid_sku(sku) {
        return Err(product_error(ProductError::Sku));
    }
    let object = json_request(request)?;
    let name = match object.get("name") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(ApiError::new(400, "invalid_name", "name must be a string")),
    };
    let price = match object.get("price") {
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| product_error(ProductError::Price))?,
        _ => {
            return Err(ApiError::new(
                400,
                "invalid_price",
                "price must be a whole number of fen (a JSON integer)",
            ));
        }
    };
    let active = match object.get("active") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => {
            return Err(ApiError::new(
                400,
                "invalid_active",
                "active must be true or false",
            ));
        }
    };
    let product = ProductInput {
        name,
        price: Fen(price),
        active,
    }
    .into_product(sku)
    .map_err(product_error)?;
    let bytes =
        serde_json::to_vec(&product).map_err(|e| ApiError::new(500, "internal", e.to_string()))?;
    env.store
        .set(&product_key(sku), &bytes)
        .await
        .map_err(|e| store_unavailable(&e))?;
    Ok(Response::json(200, &product))
}

/// `GET /api/admin/products` → `{"products": [..]}` sorted by sku.
pub async fn list_products<S: Store, T, C, N>(
    env: &Env<S, T, C, N, AdminFlowConfig>,
    request: &Request,
) -> Response {
    answer(list_products_inner(env, request).await)
}

async fn list_products_inner<S: Store, T, C, N>(
    env: &Env<S, T, C, N, AdminFlowConfig>,
    request: &Request,
) -> Result<Response, ApiError> {
    authorize(request, &env.config)?;
    let keys = env
        .store
        .keys_with_prefix(PRODUCT_KEY_PREFIX)
        .await
        .map_err(|e| store_unavailable(&e))?;
    let mut products = Vec::with_capacity(keys.len());
    if keys.is_empty() {
        // Simulator mode shows (and seeds) the demo catalog instead of nothing.
        products = super::demo::seed_if_empty(&env.store, env.config.merchant.mode).await?;
    }
    for key in keys {
        let Some(sku) = key.strip_prefix(PRODUCT_KEY_PREFIX) else {
            continue;
        };
        // Deleted between the listing and the read: skip.
        if let Some(p) = load_product(&env.store, sku).await? {
            products.push(p);
        }
    }
    products.sort_by(|a, b| a.sku.cmp(&b.sku));
    #[derive(Serialize)]
    struct Products {
        products: Vec<Product>,
    }
    Ok(Response::json(200, &Products { products }))
}

/// `GET /api/admin/products/{sku}` → 200 Product or 404 `unknown_sku`.
pub async fn get_product<S: Store, T, C, N>(
    env: &Env<S, T, C, N, AdminFlowConfig>,
    request: &Request,
    sku: &str,
) -> Response {
    answer(get_product_inner(env, request, sku).await)
}

async fn get_product_inner<S: Store, T, C, N>(
    env: &Env<S, T, C, N, AdminFlowConfig>,
    request: &Request,
    sku: &str,
) -> Result<Response, ApiError> {
    authorize(request, &env.config)?;
    if !valid_sku(sku) {
        return Err(unknown_sku(sku));
    }
    match load_product(&env.store, sku).await? {
        Some(p) => Ok(Response::json(200, &p)),
        None => Err(unknown_sku(sku)),
    }
}

/// `DELETE /api/admin/products/{sku}` → 204, or 404 `unknown_sku`.
pub async fn delete_product<S: Store, T, C, N>(
    env: &Env<S, T, C, N, AdminFlowConfig>,
    request: &Request,
    sku: &str,
) -> Response {
    answer(delete_product_inner(env, request, sku).await)
}

async fn delete_product_inner<S: Store, T, C, N>(
    env: &Env<S, T, C, N, AdminFlowConfig>,
    request: &Request,
    sku: &str,
) -> Result<Response, ApiError> {
    authorize(request, &env.config)?;
    if !valid_sku(sku) {
        return Err(unknown_sku(sku));
    }
    let exists = env
        .store
        .get(&product_key(sku))
        .await
        .map_err(|e| store_unavailable(&e))?
        .is_some();
    if !exists {
        return Err(unknown_sku(sku));
    }
    env.store
        .delete(&product_key(sku))
        .await
        .map_err(|e| store_unavailable(&e))?;
    Ok(Response::no_content())
}

/// `GET /api/admin/orders/{order_no}` → the full record (with openid, prepay_id, events).
pub async fn get_order<S: Store, T, C, N>(
    env: &Env<S, T, C, N, AdminFlowConfig>,
    request: &Request,
    order_no: &str,
) -> Response {
    answer(get_order_inner(env, request, order_no).await)
}

async fn get_order_inner<S: Store, T, C, N>(
    env: &Env<S, T, C, N, AdminFlowConfig>,
    request: &Request,
    order_no: &str,
) -> Result<Response, ApiError> {
    authorize(request, &env.config)?;
    let not_found = || ApiError::new(404, "order_not_found", "no such order");
    if !valid_out_trade_no(order_no) {
        return Err(not_found());
    }
    match load_order_with_alerts(&env.store, order_no).await? {
        Some(order) => {
            same_mode(&order, env.config.merchant.mode)?;
            let refunds = super::refunds::refunds_for_view(&env.store, &order).await?;
            Ok(Response::json(200, &admin_order_view(&order, &refunds)))
        }
        None => Err(not_found()),
    }
}

/// Orders a listing page holds at most ([`list_orders`]), and by default.
pub const MAX_LISTED_ORDERS: usize = 100;
pub const DEFAULT_LISTED_ORDERS: usize = 20;

/// One page of `GET /api/admin/orders?limit=&before=`.
#[derive(Debug, Serialize)]
pub struct OrderPage {
    /// Newest first (order numbers begin with their creation time).
    pub orders: Vec<crate::order::OrderView>,
    /// The `before` of the next page, if there is one.
    pub next: Option<String>,
}

/// `GET /api/admin/orders?limit=&before=` (the caller authorized it): the most recent orders,
/// `limit` (1-[`MAX_LISTED_ORDERS`], default [`DEFAULT_LISTED_ORDERS`]) per page, older than
/// the order number `before`. Spin's store lists keys only whole, so a page costs one listing
/// of every key plus a few reads per order on it (docs/ARCHITECTURE.md §4).
async fn list_orders<S: Store, T, C, N>(
    env: &Env<S, T, C, N, AdminFlowConfig>,
    query: &str,
) -> Result<Response, ApiError> {
    let mut limit = DEFAULT_LISTED_ORDERS;
    let mut before: Option<&str> = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=').unwrap_or((pair, "")) {
            ("limit", n) => {
                limit = n
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_LISTED_ORDERS).contains(n))
                    .ok_or_else(|| {
                        ApiError::new(
                            400,
                            "invalid_limit",
                            format!("limit must be an integer in 1..={MAX_LISTED_ORDERS}"),
                        )
                    })?;
            }
            ("before", no) if valid_out_trade_no(no) => before = Some(no),
            ("before", _) => {
                return Err(ApiError::new(
                    400,
                    "invalid_before",
                    "before must be an order number (the `next` of the previous page)",
                ));
            }
            _ => {}
        }
    }
    let keys = env
        .store
        .keys_with_prefix(ORDER_KEY_PREFIX)
        .await
        .map_err(|e| store_unavailable(&e))?;
    let mut numbers: Vec<&str> = keys
        .iter()
        .filter_map(|key| crate::ledger::base_order_no(key))
        .filter(|no| before.is_none_or(|b| *no < b))
        .collect();
    numbers.sort_unstable_by(|a, b| b.cmp(a));
    let more = numbers.len() > limit;
    numbers.truncate(limit);
    let mut orders = Vec::with_capacity(numbers.len());
    for no in &numbers {
        if let Some(order) = load_order(&env.store, no).await? {
            let refunds = super::refunds::refunds_for_view(&env.store, &order).await?;
            orders.push(order.view().with_refunds(&order, &refunds));
        }
    }
    let next = more
        .then(|| numbers.last().map(|no| (*no).to_owned()))
        .flatten();
    Ok(Response::json(200, &OrderPage { orders, next }))
}

/// The order record as the admin sees it; with refunds, also each refund, `refunded_total`,
/// and the status `REFUNDED` once they gave the whole paid total back.
fn admin_order_view(order: &Order, refunds: &[crate::refund::Refund]) -> Value {
    let mut view = serde_json::to_value(order).unwrap_or(Value::Null);
    if refunds.is_empty() {
        return view;
    }
    let shown = order.view().with_refunds(order, refunds);
    if let Value::Object(fields) = &mut view {
        fields.insert("status".into(), json!(shown.status));
        fields.insert("refunded_total".into(), json!(shown.refunded_total));
        let listed: Vec<crate::refund::RefundView> = refunds.iter().map(Into::into).collect();
        fields.insert("refunds".into(), json!(listed));
    }
    view
}

/// The answer of `POST /api/admin/reconcile`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Reconciled {
    /// Orders asked about at WeChat.
    pub checked: u64,
    /// Orders that became PAID.
    pub paid: u64,
    /// Orders that became CLOSED.
    pub closed: u64,
    /// Orders that could not be settled this run (WeChat or store errors, mismatches).
    pub failed: u64,
    /// Refunds not yet ended (PROCESSING, ABNORMAL) asked about at WeChat.
    pub refunds_checked: u64,
    /// Of those, the refunds WeChat said had ended, now recorded (a lost notification).
    pub refunds_settled: u64,
    /// What went wrong, one line per failed order (at most [`MAX_LISTED_ERRORS`]).
    pub errors: Vec<String>,
    /// Whether this run looked at every order. `false`: its time budget
    /// ([`RECONCILE_BUDGET_SECS`]) ran out, and the next run resumes after the last order it
    /// looked at.
    pub complete: bool,
}

/// A reconcile run starts no WeChat call after this many seconds, so that a large store or a
/// slow WeChat cannot hold the request past a scheduler's or Spin's patience.
pub const RECONCILE_BUDGET_SECS: u64 = 20;

/// Where the last run that ran out of time stopped: the next run begins after this order
/// number and comes round to it last, so no order waits behind the others forever. A hint: if
/// it is lost or two runs race on it, a run only starts elsewhere.
pub const RECONCILE_CURSOR_KEY: &str = "reconcile:cursor";

/// Order numbers sorted, rotated to begin after `cursor` (and end with it).
fn in_cursor_order(mut numbers: Vec<String>, cursor: Option<&str>) -> Vec<String> {
    numbers.sort();
    if let Some(cursor) = cursor {
        let start = numbers.partition_point(|no| no.as_str() <= cursor);
        numbers.rotate_left(start);
    }
    numbers
}

enum Settled {
    Unchanged,
    Paid,
    Closed,
    Failed(String),
}

/// `POST /api/admin/reconcile`: settles every open order with WeChat (docs/ARCHITECTURE.md §4: WeChat is
/// the source of truth; an order is closed at WeChat before it is closed here). One order's
/// failure does not stop the others.
pub async fn reconcile<S, T, C, N>(
    env: &Env<S, T, C, N, AdminFlowConfig>,
    request: &Request,
) -> Response
where
    S: Store,
    T: Transport,
    C: Clock,
    N: Nonce,
{
    if let Err(e) = authorize(request, &env.config) {
        return e.into();
    }
    match run_reconcile(env).await {
        Ok(report) => Response::json(200, &report),
        Err(e) => e.into(),
    }
}

/// Reconciliation itself (no authorization), e.g. for a scheduled job.
pub async fn run_reconcile<S, T, C, N>(
    env: &Env<S, T, C, N, AdminFlowConfig>,
) -> Result<Reconciled, ApiError>
where
    S: Store,
    T: Transport,
    C: Clock,
    N: Nonce,
{
    let keys = env
        .store
        .keys_with_prefix(ORDER_KEY_PREFIX)
        .await
        .map_err(|e| store_unavailable(&e))?;
    let numbers = keys
        .iter()
        .filter_map(|key| crate::ledger::base_order_no(key).map(str::to_owned))
        .collect();
    // Orders with refunds (their marker key).
    let refunded: std::collections::BTreeSet<&str> = keys
        .iter()
        .filter(|key| key.ends_with(":refunds"))
        .map(String::as_str)
        .collect();
    let cursor = env
        .store
        .get(RECONCILE_CURSOR_KEY)
        .await
        .ok()
        .flatten()
        .and_then(|bytes| String::from_utf8(bytes).ok());
    let started = env.clock.now_unix();
    let mut report = Reconciled {
        complete: true,
        ..Reconciled::default()
    };
    let fail = |report: &mut Reconciled, line: String| {
        report.failed += 1;
        if report.errors.len() < MAX_LISTED_ERRORS {
            report.errors.push(line);
        }
    };
    // Platform-certificate mode: the list is fetched on every run, so that a new certificate
    // reaches the store — where the notify route, which holds no key to fetch it, reads it —
    // even when no order or poll meets it first.
    if let Err(e) = wechat::Wechat::new(env, &env.config.merchant)
        .refresh_platform_certificates()
        .await
        && report.errors.len() < MAX_LISTED_ERRORS
    {
        report.errors.push(format!("platform certificates: {e}"));
    }
    let mut last_looked_at = None;
    for order_no in in_cursor_order(numbers, cursor.as_deref()) {
        let now = env.clock.now_unix();
        if now.saturating_sub(started) >= RECONCILE_BUDGET_SECS {
            report.complete = false;
            break;
        }
        let order = match load_order(&env.store, &order_no).await {
            Ok(Some(order)) => order,
            Ok(None) => continue,
            Err(e) => {
                fail(&mut report, format!("{order_no}: {}", e.message));
                last_looked_at = Some(order_no);
                continue;
            }
        };
        last_looked_at = Some(order_no.clone());
        if order.status == Status::Paid
            && order.mode == env.config.merchant.mode
            && refunded.contains(crate::refund::marker_key(&order_no).as_str())
        {
            let refunds = super::refunds::reconcile_refunds(env, &order, now).await;
            report.refunds_checked += refunds.checked;
            report.refunds_settled += refunds.settled;
            for line in refunds.errors {
                fail(&mut report, line);
            }
        }
        if !is_candidate(&order, now) {
            continue;
        }
        if let Err(e) = same_mode(&order, env.config.merchant.mode) {
            fail(&mut report, e.message);
            continue;
        }
        report.checked += 1;
        match settle(env, order, now).await {
            Settled::Unchanged => {}
            Settled::Paid => report.paid += 1,
            Settled::Closed => report.closed += 1,
            Settled::Failed(why) => fail(&mut report, format!("{order_no}: {why}")),
        }
    }
    // Best effort: a lost cursor only moves where the next run starts.
    let _ = match (report.complete, last_looked_at) {
        (false, Some(order_no)) => {
            env.store
                .set(RECONCILE_CURSOR_KEY, order_no.as_bytes())
                .await
        }
        _ if cursor.is_some() => env.store.delete(RECONCILE_CURSOR_KEY).await,
        _ => Ok(()),
    };
    Ok(report)
}

fn created_at(order: &Order) -> u64 {
    parse_rfc3339(&order.created_at).unwrap_or(0)
}

/// AWAITING_PAYMENT orders, and CREATED ones older than [`CREATED_GRACE_SECS`].
fn is_candidate(order: &Order, now: u64) -> bool {
    match order.status {
        Status::AwaitingPayment => true,
        Status::Created => now.saturating_sub(created_at(order)) >= CREATED_GRACE_SECS,
        _ => false,
    }
}

/// When the order can no longer be paid with its prepay id.
fn payable_until(order: &Order) -> u64 {
    order
        .prepay_expires_at
        .unwrap_or_else(|| created_at(order).saturating_add(PREPAY_TTL_SECS))
}

async fn settle<S, T, C, N>(
    env: &Env<S, T, C, N, AdminFlowConfig>,
    mut order: Order,
    now: u64,
) -> Settled
where
    S: Store,
    T: Transport,
    C: Clock,
    N: Nonce,
{
    let merchant = &env.config.merchant;
    let before = order.clone();
    let at = rfc3339(now);
    let outcome = match wechat::Wechat::new(env, merchant)
        .query(&order.order_no)
        .await
    {
        Err(e)
            if e.err_code() == Some(&ErrCode::OrderNotExist) && order.status == Status::Created =>
        {
            close_here(
                &mut order,
                &at,
                "orderquery: ORDERNOTEXIST (WeChat never saw it)",
            )
        }
        Err(e) => Settled::Failed(format!("orderquery: {e}")),
        Ok(answer) => match wechat::apply_query(&mut order, &answer, now) {
            QueryEffect::Paid => Settled::Paid,
            QueryEffect::Closed => Settled::Closed,
            QueryEffect::Alerted => Settled::Failed(format!(
                "orderquery answer not applied (trade_state {:?}); see the order's alerts",
                answer.trade_state
            )),
            // Unpaid at WeChat and no longer payable: the prepay expired, or the order is
            // still CREATED past the grace period — its pay params were never handed out (they
            // are answered only after AWAITING_PAYMENT is stored), so nobody can pay it.
            QueryEffect::Unchanged
                if matches!(
                    answer.trade_state,
                    TradeState::NotPay | TradeState::PayError
                ) && (order.status == Status::Created || now >= payable_until(&order)) =>
            {
                close_at_wechat(env, &mut order, now).await
            }
            QueryEffect::Unchanged => Settled::Unchanged,
        },
    };
    if order != before
        && let Err(e) = record_learned(&env.store, &before, &order).await
    {
        return Settled::Failed(e.message);
    }
    outcome
}

fn close_here(order: &mut Order, at: &str, reason: &str) -> Settled {
    let trigger = Trigger::ClosedAtWechat {
        reason: reason.to_owned(),
    };
    match order.apply(trigger, at) {
        Ok(_) => Settled::Closed,
        Err(e) => Settled::Failed(e.to_string()),
    }
}

/// The prepay expired unpaid: close it at WeChat first, then here.
async fn close_at_wechat<S, T, C, N>(
    env: &Env<S, T, C, N, AdminFlowConfig>,
    order: &mut Order,
    now: u64,
) -> Settled
where
    S: Store,
    T: Transport,
    C: Clock,
    N: Nonce,
{
    let merchant = &env.config.merchant;
    let at = rfc3339(now);
    match wechat::Wechat::new(env, merchant)
        .close(&order.order_no)
        .await
    {
        Ok(()) => close_here(
            order,
            &at,
            "closed at WeChat by reconcile: payment window expired",
        ),
        Err(e) => match e.err_code() {
            Some(ErrCode::OrderClosed) => close_here(order, &at, "closeorder: ORDERCLOSED"),
            Some(ErrCode::OrderNotExist) => close_here(order, &at, "closeorder: ORDERNOTEXIST"),
            Some(ErrCode::OrderPaid) => {
                // Paid in the meantime: ask again for the payment's details.
                match wechat::Wechat::new(env, merchant)
                    .query(&order.order_no)
                    .await
                {
                    Ok(answer) => match wechat::apply_query(order, &answer, now) {
                        QueryEffect::Paid => Settled::Paid,
                        QueryEffect::Closed => Settled::Closed,
                        _ => Settled::Failed(format!(
                            "closeorder says ORDERPAID but orderquery says {:?}",
                            answer.trade_state
                        )),
                    },
                    Err(e) => {
                        Settled::Failed(format!("closeorder says ORDERPAID; orderquery: {e}"))
                    }
                }
            }
            _ => Settled::Failed(format!("closeorder: {e}")),
        },
    }
}
