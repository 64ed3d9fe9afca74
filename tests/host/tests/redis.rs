//! The app under the released Spin (4.0.2) with its key-value store on a real Redis
//! (`[key_value_store.default] type = "redis"` in a `--runtime-config-file`), in live mode
//! against the tests' fake WeChat (`app/support.rs`): what "several instances" and "the store
//! went away" mean on the real runtime, beside the exhaustive interleavings of
//! `src/flows/tests/interleave.rs` (docs/RELIABILITY.md, "Several instances on Redis").
//!
//! - `two_instances_share_one_redis_and_settle_each_order_once`: two `spin up` processes on one
//!   Redis; orders created on A are read on B; 20 concurrent duplicate notifications per order,
//!   split over both, are all answered SUCCESS and make exactly one PAID event.
//! - `redis_killed_during_a_stream_of_notifications`: Redis is killed (SIGKILL) and restarted on
//!   its data (append-only file, `appendfsync always`) in the middle of a stream of first-time
//!   notifications: no SUCCESS while it is down, every SUCCESS still PAID after the restart,
//!   every other notification applied when WeChat delivers it again.
//! - `soak_across_two_instances_on_redis`: a shortened `soak.rs` scenario (orders, payments,
//!   lost / duplicated / concurrent / forged / lying notifications, polls, reconciles) spread
//!   over two instances; invariants checked from Redis after every round and at the end.
//! - `store_round_trips_per_route`: Redis's own command counters (`INFO commandstats`) for one
//!   first-time notification, one duplicate, one order poll (printed with `--nocapture`).
//!
//! Each test starts its own `redis-server` (free loopback port, temporary data directory,
//! killed when dropped). Without Spin (`spin_test_host::real_spin::find_spin`) or
//! `redis-server` (`spin_test_host::redis::find_redis_server`) each test prints that it was
//! skipped and passes; `SPIN_WXPAY_REQUIRE_SPIN=1` (CI) turns either missing into a failure.

#[path = "app/support.rs"]
#[allow(dead_code)]
mod support;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use spin_test_host::real_spin::{
    SpinUp, WireResponse, find_spin, found_or_skip, spin_build, workspace_root,
};
use spin_test_host::redis::{RedisServer, find_redis_server};
use support::{
    ADMIN_TOKEN, API_KEY, APP_SECRET, APPID, FakeWechat, MCH_ID, SESSION_SECRET,
    assert_paid_once_and_never_reverted, notification, openid,
};
use tokio::task::JoinSet;
use wxpay::v2::sign::SignType;
use wxpay::v2::xml;

// ---- Tools, the app, requests --------------------------------------------------------------------

struct Tools {
    spin: PathBuf,
    redis: PathBuf,
}

/// Spin and redis-server, or `None` after saying why the test is skipped (a failure when
/// `SPIN_WXPAY_REQUIRE_SPIN` is set).
fn tools_or_skip(test: &str) -> Option<Tools> {
    let found = find_spin().and_then(|spin| find_redis_server().map(|redis| Tools { spin, redis }));
    found_or_skip(test, found, "set SPIN_BIN / REDIS_SERVER to run it")
}

fn app_manifest() -> PathBuf {
    workspace_root().join("spin.toml")
}

fn live_variables(wechat: &FakeWechat) -> Vec<(&'static str, String)> {
    vec![
        ("wxpay_mode", "live".into()),
        ("wx_appid", APPID.into()),
        ("wx_app_secret", APP_SECRET.into()),
        ("wxpay_mch_id", MCH_ID.into()),
        ("wxpay_api_key", API_KEY.into()),
        ("wxpay_sign_type", SignType::Md5.as_str().into()),
        (
            "wxpay_notify_url",
            "https://shop.example.com/api/wxpay/notify".into(),
        ),
        ("wxpay_mch_api", wechat.origin()),
        ("wx_api", wechat.origin()),
        ("session_secret", SESSION_SECRET.into()),
        ("admin_token", ADMIN_TOKEN.into()),
    ]
}

/// `spin build` (once per process), then `n` `spin up` processes of the app in live mode, each
/// with its own state directory and the key-value store `default` on `redis`.
async fn instances_on(
    spin: &Path,
    redis: &RedisServer,
    wechat: &FakeWechat,
    n: usize,
) -> Vec<Arc<SpinUp>> {
    spin_build(spin, &app_manifest()).expect("spin build");
    let config = redis.runtime_config_file().expect("runtime config");
    let config = config.to_str().expect("a UTF-8 path").to_owned();
    let variables = live_variables(wechat);
    let variables: Vec<(&str, &str)> = variables.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let args = ["--runtime-config-file", config.as_str()];
    let manifest = app_manifest();
    let start = || SpinUp::start_with(spin, &manifest, &variables, &args);
    let ups = match n {
        1 => vec![start().await],
        2 => {
            // Spin's start-up (compiling every component) is the cost: both at once.
            let (a, b) = tokio::join!(start(), start());
            vec![a, b]
        }
        _ => unimplemented!("one or two instances"),
    };
    ups.into_iter()
        .map(|up| Arc::new(up.expect("spin up")))
        .collect()
}

const JSON_TYPE: (&str, &str) = ("content-type", "application/json");
const XML_TYPE: (&str, &str) = ("content-type", "text/xml");

fn admin_auth() -> String {
    format!("Bearer {ADMIN_TOKEN}")
}

/// One request that must be answered (Spin's output in the panic otherwise).
async fn call(
    up: &SpinUp,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<String>,
) -> WireResponse {
    let body: String = body.into();
    up.request(method, path, headers, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e:#}\n{}", up.output()))
}

async fn put_products(up: &SpinUp) {
    let admin = admin_auth();
    for (sku, price) in [("tea", 199), ("cake", 1250)] {
        let res = call(
            up,
            "PUT",
            &format!("/api/admin/products/{sku}"),
            &[("authorization", &admin), JSON_TYPE],
            json!({"name": sku, "price": price}).to_string(),
        )
        .await;
        assert_eq!(res.status, 200, "{}", res.text());
    }
}

/// Logs `user` in; `Bearer <token>`.
async fn login(up: &SpinUp, user: &str) -> String {
    let res = call(
        up,
        "POST",
        "/api/login",
        &[JSON_TYPE],
        json!({"code": format!("u-{user}-1")}).to_string(),
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text());
    format!("Bearer {}", res.json()["token"].as_str().unwrap())
}

async fn try_create(up: &SpinUp, auth: &str, sku: &str, quantity: u64) -> WireResponse {
    call(
        up,
        "POST",
        "/api/orders",
        &[("authorization", auth), JSON_TYPE],
        json!({"sku": sku, "quantity": quantity}).to_string(),
    )
    .await
}

/// Creates an order that must succeed; its number.
async fn create(up: &SpinUp, auth: &str, sku: &str) -> String {
    let res = try_create(up, auth, sku, 1).await;
    assert_eq!(res.status, 201, "{}", res.text());
    res.json()["order"]["order_no"].as_str().unwrap().to_owned()
}

async fn notify(up: &SpinUp, body: &str) -> WireResponse {
    call(up, "POST", support::NOTIFY_PATH, &[XML_TYPE], body).await
}

/// WeChat's SUCCESS answer, exactly.
fn is_success(res: &WireResponse) -> bool {
    res.status == 200 && res.text() == wxpay::v2::notify::SUCCESS_REPLY
}

/// WeChat's FAIL answer (return_code FAIL): WeChat delivers the notification again.
fn is_fail(res: &WireResponse) -> bool {
    res.status == 200
        && xml::read(&res.body).is_ok_and(|p| p.get("return_code").is_some_and(|c| c == "FAIL"))
}

/// The admin view of an order (status, events, payment).
async fn admin_order(up: &SpinUp, order_no: &str) -> Value {
    let res = call(
        up,
        "GET",
        &format!("/api/admin/orders/{order_no}"),
        &[("authorization", &admin_auth())],
        "",
    )
    .await;
    assert_eq!(res.status, 200, "{order_no}: {}", res.text());
    res.json()
}

/// `status` events `to: PAID` in an admin view.
fn paid_events(order: &Value) -> usize {
    order["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "status" && e["to"] == "PAID")
        .count()
}

fn has_alert(order: &Value) -> bool {
    order["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["type"] == "alert")
}

/// The user's view of an order: its status.
async fn user_status(up: &SpinUp, auth: &str, order_no: &str) -> String {
    let res = call(
        up,
        "GET",
        &format!("/api/orders/{order_no}"),
        &[("authorization", auth)],
        "",
    )
    .await;
    assert_eq!(res.status, 200, "{order_no}: {}", res.text());
    res.json()["status"].as_str().unwrap().to_owned()
}

/// Spin's and the components' output must not show a component failure.
fn assert_clean_output(up: &SpinUp) {
    let output = up.output();
    for bad in ["Component error", "panicked", "error while executing"] {
        assert!(!output.contains(bad), "spin output has {bad:?}:\n{output}");
    }
    assert!(!output.contains(API_KEY) && !output.contains(APP_SECRET));
}

// ---- Two instances, one Redis --------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_redis_and_settle_each_order_once() {
    let Some(tools) = tools_or_skip("two_instances_share_one_redis_and_settle_each_order_once")
    else {
        return;
    };
    let redis = RedisServer::start(&tools.redis).expect("redis-server");
    let wechat = FakeWechat::start().await;
    let ups = instances_on(&tools.spin, &redis, &wechat, 2).await;
    let (a, b) = (&ups[0], &ups[1]);

    // Everything is made on A and must be visible on B: B has its own state directory (and
    // would have its own SQLite store without the runtime config), so only Redis can share it.
    put_products(a).await;
    let product = call(
        b,
        "GET",
        "/api/admin/products/tea",
        &[("authorization", &admin_auth())],
        "",
    )
    .await;
    assert_eq!(
        product.status,
        200,
        "B does not see A's product: {}",
        product.text()
    );
    let alice = login(a, "alice").await;
    let mut orders = Vec::new();
    for _ in 0..4 {
        let order_no = create(a, &alice, "tea").await;
        assert_eq!(
            user_status(b, &alice, &order_no).await,
            "AWAITING_PAYMENT",
            "an order created on A, read on B"
        );
        orders.push(order_no);
    }
    let mut client = redis.client().unwrap();
    for order_no in &orders {
        assert!(
            client.get(&format!("order:{order_no}")).unwrap().is_some(),
            "{order_no} is not in Redis"
        );
    }

    // Per order: WeChat's notification 20 times at once, alternately to A and B.
    for order_no in &orders {
        let body = wechat.pay(order_no, SignType::Md5);
        let mut set = JoinSet::new();
        for i in 0..20 {
            let up = ups[i % 2].clone();
            let body = body.clone();
            set.spawn(async move { (i % 2, notify(&up, &body).await) });
        }
        while let Some(joined) = set.join_next().await {
            let (instance, res) = joined.unwrap();
            assert!(
                is_success(&res),
                "{order_no}: instance {instance} answered {} {}",
                res.status,
                res.text()
            );
        }
    }

    for order_no in &orders {
        let trade = wechat.trade(order_no).unwrap();
        let (transaction_id, _) = trade.paid.unwrap();
        for (name, up) in [("A", a), ("B", b)] {
            let order = admin_order(up, order_no).await;
            assert_eq!(order["status"], "PAID", "{name}: {order}");
            assert_eq!(paid_events(&order), 1, "{name}: {order}");
            assert_eq!(order["transaction_id"], transaction_id.as_str(), "{name}");
            assert_eq!(user_status(up, &alice, order_no).await, "PAID", "{name}");
        }
        assert!(
            client
                .get(&format!("order:{order_no}:paid"))
                .unwrap()
                .is_some(),
            "{order_no}: no payment fact in Redis"
        );
    }
    wechat.assert_all_requests_verified();
    for up in &ups {
        assert_clean_output(up);
    }
}

// ---- Redis killed under a stream of notifications --------------------------------------------------

/// How long WeChat waits for an answer here (a notification not answered in time is, to
/// WeChat, not acknowledged: it delivers it again). Short, so that two deliveries into the
/// outage are over before Spin's Redis client retries its connection (1-2 s after the failure;
/// the next retry comes 60-120 s later).
const WECHAT_WAITS: Duration = Duration::from_millis(400);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Success,
    Fail,
    /// Another answer (e.g. a 5xx from Spin).
    Other(u16, String),
    /// No answer within [`WECHAT_WAITS`], or the connection failed.
    None,
}

#[derive(Debug, Clone)]
struct Delivered {
    order_no: String,
    /// Redis was down when it was sent / when its answer (or the give-up) came.
    sent_down: bool,
    answered_down: bool,
    answer: Answer,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_during_a_stream_of_notifications() {
    let Some(tools) = tools_or_skip("redis_killed_during_a_stream_of_notifications") else {
        return;
    };
    let mut redis = RedisServer::start(&tools.redis).expect("redis-server");
    let wechat = FakeWechat::start().await;
    let up = instances_on(&tools.spin, &redis, &wechat, 1)
        .await
        .remove(0);
    put_products(&up).await;
    let alice = login(&up, "alice").await;
    let mut bodies = BTreeMap::new();
    let mut queue = VecDeque::new();
    for _ in 0..30 {
        let order_no = create(&up, &alice, "tea").await;
        bodies.insert(order_no.clone(), wechat.pay(&order_no, SignType::Md5));
        queue.push_back(order_no);
    }
    let bodies = Arc::new(bodies);

    // The stream: two WeChat senders, each notification once, a short pause between sends.
    let queue = Arc::new(Mutex::new(queue));
    let down = Arc::new(AtomicBool::new(false));
    let delivered: Arc<Mutex<Vec<Delivered>>> = Arc::default();
    let mut senders = JoinSet::new();
    for _ in 0..2 {
        let (up, queue, down, delivered, bodies) = (
            up.clone(),
            queue.clone(),
            down.clone(),
            delivered.clone(),
            bodies.clone(),
        );
        senders.spawn(async move {
            loop {
                let Some(order_no) = queue.lock().unwrap().pop_front() else {
                    break;
                };
                let sent_down = down.load(Ordering::SeqCst);
                let sent = tokio::time::timeout(
                    WECHAT_WAITS,
                    up.request(
                        "POST",
                        support::NOTIFY_PATH,
                        &[XML_TYPE],
                        bodies[&order_no].clone(),
                    ),
                )
                .await;
                let answered_down = down.load(Ordering::SeqCst);
                let answer = match sent {
                    Ok(Ok(res)) if is_success(&res) => Answer::Success,
                    Ok(Ok(res)) if is_fail(&res) => Answer::Fail,
                    Ok(Ok(res)) => Answer::Other(res.status, res.text()),
                    Ok(Err(_)) | Err(_) => Answer::None,
                };
                delivered.lock().unwrap().push(Delivered {
                    order_no,
                    sent_down,
                    answered_down,
                    answer,
                });
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        });
    }
    let count =
        |f: &dyn Fn(&Delivered) -> bool| delivered.lock().unwrap().iter().filter(|d| f(d)).count();
    // Readiness waits only (generous deadlines): the stream is under way, then Redis is down
    // for a few deliveries.
    wait_until(
        "6 notifications answered SUCCESS",
        Duration::from_secs(30),
        || count(&|d| d.answer == Answer::Success) >= 6,
    )
    .await;
    // Answered SUCCESS before the kill: written before it.
    let before_kill: BTreeSet<String> = delivered
        .lock()
        .unwrap()
        .iter()
        .filter(|d| d.answer == Answer::Success)
        .map(|d| d.order_no.clone())
        .collect();
    redis.kill();
    let killed = Instant::now();
    // Set once Redis is gone: a notification sent from now on cannot reach it until the
    // restart (the flag is cleared before it).
    down.store(true, Ordering::SeqCst);
    // The first store operation after the kill fails at once (the broken connection), and
    // starts Spin's reconnection; later ones wait for it.
    wait_until(
        "a notification delivered while Redis is down",
        Duration::from_secs(30),
        || count(&|d| d.sent_down) >= 1,
    )
    .await;
    // Health, asked while the store is down (it reads one key): not awaited here, its read
    // waits for the store like every other.
    let health_while_down = {
        let (up, down) = (up.clone(), down.clone());
        tokio::spawn(async move {
            let res = up.request("GET", "/api/health", &[], "").await;
            (
                down.load(Ordering::SeqCst),
                res.map(|r| (r.status, r.json())),
            )
        })
    };
    // Two deliveries sent into the outage are over (answered, or given up on by WeChat), then
    // Redis comes back: well within a second, before Spin's Redis client retries.
    wait_until(
        "two notifications delivered while Redis is down",
        Duration::from_secs(30),
        || count(&|d| d.sent_down) >= 2,
    )
    .await;
    // Back on the same port and data; from here on, answers are not "while down".
    down.store(false, Ordering::SeqCst);
    redis.restart().expect("redis-server restarts");
    let outage = killed.elapsed();
    // What was answered SUCCESS before the kill survived it (the append-only file).
    let mut client = redis.client().unwrap();
    for order_no in &before_kill {
        assert!(
            client
                .get(&format!("order:{order_no}:paid"))
                .unwrap()
                .is_some(),
            "{order_no} was answered SUCCESS before Redis was killed; its payment is gone"
        );
    }
    // The app reaches Redis again. Spin 4.0.2's Redis client (redis-rs 0.32 ConnectionManager,
    // backon's exponential defaults: 1 s, then capped at 60 s, with jitter, 6 retries) tries
    // to reconnect at once, again 1-2 s later, then every 60-120 s; until then every store
    // operation waits. A wait, not an assertion (the outage here is shorter than 1 s, so the
    // second attempt normally succeeds).
    let probe = before_kill.iter().next().unwrap().clone();
    wait_until_async(
        "the app reads Redis again",
        Duration::from_secs(180),
        async || {
            let path = format!("/api/admin/orders/{probe}");
            let auth = admin_auth();
            matches!(
                tokio::time::timeout(
                    Duration::from_secs(5),
                    up.request("GET", &path, &[("authorization", &auth)], ""),
                )
                .await,
                Ok(Ok(res)) if res.status == 200
            )
        },
    )
    .await;
    let recovered = killed.elapsed();
    // Health never says the store is fine while it is down; once it is back, it does.
    let (health_answered_down, health) = health_while_down.await.unwrap();
    let (status, health) = health.expect("/api/health answers");
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["config_ok"], true, "{health}");
    if health_answered_down {
        assert_eq!(health["store"], "unavailable", "{health}");
    }
    let health_while_down = format!(
        "answered {} the restart: store {}",
        if health_answered_down {
            "before"
        } else {
            "after"
        },
        health["store"]
    );
    let health = call(&up, "GET", "/api/health", &[], "").await.json();
    assert_eq!(health["store"], "ok", "{health}");
    while let Some(joined) = senders.join_next().await {
        joined.unwrap();
    }
    let delivered = delivered.lock().unwrap().clone();
    assert_eq!(delivered.len(), bodies.len());

    // Never SUCCESS without the store: a notification sent and answered while Redis was down
    // is FAIL, or not answered in time.
    for d in &delivered {
        assert!(
            !(d.sent_down && d.answered_down && d.answer == Answer::Success),
            "{} answered SUCCESS while Redis was down",
            d.order_no
        );
        if let Answer::Other(status, text) = &d.answer {
            panic!("{}: neither SUCCESS nor FAIL: {status} {text}", d.order_no);
        }
    }

    // Every SUCCESS is PAID; WeChat delivers every other notification again, and it applies.
    let succeeded: BTreeSet<&String> = delivered
        .iter()
        .filter(|d| d.answer == Answer::Success)
        .map(|d| &d.order_no)
        .collect();
    for order_no in &succeeded {
        let order = admin_order(&up, order_no).await;
        assert_eq!(order["status"], "PAID", "answered SUCCESS: {order}");
    }
    let mut resent = 0;
    for d in delivered.iter().filter(|d| d.answer != Answer::Success) {
        let res = notify(&up, &bodies[&d.order_no]).await;
        assert!(
            is_success(&res),
            "{} delivered again after the restart: {} {}",
            d.order_no,
            res.status,
            res.text()
        );
        resent += 1;
    }
    for order_no in bodies.keys() {
        let order = admin_order(&up, order_no).await;
        assert_eq!(order["status"], "PAID", "{order}");
        assert_eq!(paid_events(&order), 1, "{order}");
        assert!(
            client
                .get(&format!("order:{order_no}:paid"))
                .unwrap()
                .is_some()
        );
    }
    let tally = |f: &dyn Fn(&Delivered) -> bool| delivered.iter().filter(|d| f(d)).count();
    let during = |d: &Delivered| d.sent_down && d.answered_down;
    println!(
        "redis outage: {} notifications; SUCCESS before the kill {}; delivered while down {} \
         (FAIL {}, no answer within {WECHAT_WAITS:?} {}); sent while down, answered after the \
         restart {}; after the kill, SUCCESS {}; delivered again after the restart {resent}, \
         all SUCCESS; Redis down for {outage:.1?}, the app read it again {recovered:.1?} after \
         the kill; health sent while down {health_while_down}",
        delivered.len(),
        before_kill.len(),
        tally(&during),
        tally(&|d| during(d) && d.answer == Answer::Fail),
        tally(&|d| during(d) && d.answer == Answer::None),
        tally(&|d| d.sent_down && !d.answered_down),
        tally(&|d| d.answer == Answer::Success) - before_kill.len(),
    );
    // The outage was met: deliveries over before Redis came back, none SUCCESS (checked
    // above), each applied when delivered again.
    assert!(
        tally(&during) >= 2,
        "the stream did not run into the outage"
    );
    assert!(resent >= 2);
    wechat.assert_all_requests_verified();
}

/// Waits (polling) until `ready`; panics after `deadline`. Only for readiness, never as an
/// assertion about speed.
async fn wait_until(what: &str, deadline: Duration, ready: impl Fn() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(
            started.elapsed() < deadline,
            "not within {deadline:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_until_async(what: &str, deadline: Duration, ready: impl AsyncFn() -> bool) {
    let started = Instant::now();
    while !ready().await {
        assert!(
            started.elapsed() < deadline,
            "not within {deadline:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---- A shortened soak across two instances -------------------------------------------------------

/// xorshift64*: small, seedable (as in soak.rs).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Genuine,
    /// A broken signature (an attacker without the key): never SUCCESS.
    Forged,
    /// Validly signed, the wrong amount: not paid, an alert.
    Lying,
}

#[derive(Debug, Clone)]
struct Delivery {
    order_no: String,
    body: String,
    kind: Kind,
    attempts: u32,
    copies: u32,
}

const SOAK_USERS: [&str; 4] = ["alice", "bob", "carol", "dave"];
const MAX_DELIVERIES: u32 = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_across_two_instances_on_redis() {
    let Some(tools) = tools_or_skip("soak_across_two_instances_on_redis") else {
        return;
    };
    let seed = std::env::var("SOAK_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    println!("redis soak: SOAK_SEED={seed}");
    let mut rng = Rng(seed.max(1));
    let redis = RedisServer::start(&tools.redis).expect("redis-server");
    let wechat = FakeWechat::start().await;
    let ups = instances_on(&tools.spin, &redis, &wechat, 2).await;
    let mut client = redis.client().unwrap();
    put_products(&ups[0]).await;
    let mut tokens = BTreeMap::new();
    for (i, user) in SOAK_USERS.iter().enumerate() {
        tokens.insert(*user, login(&ups[i % 2], user).await);
    }

    // Orders, alternately on A and B, four at a time, some under WeChat SYSTEMERRORs.
    let mut created: Vec<(String, &'static str)> = Vec::new();
    let mut refused = 0;
    for batch in 0..10 {
        if rng.chance(20) {
            wechat.fault("/pay/unifiedorder", support::Fault::SystemError, 1);
        }
        let mut set = JoinSet::new();
        for i in 0..4 {
            let user = SOAK_USERS[rng.below(4) as usize];
            let (up, auth) = (ups[(batch * 4 + i) % 2].clone(), tokens[user].clone());
            let sku = if rng.chance(50) { "tea" } else { "cake" };
            let quantity = 1 + rng.below(3);
            set.spawn(async move { (user, try_create(&up, &auth, sku, quantity).await) });
        }
        while let Some(joined) = set.join_next().await {
            let (user, res) = joined.unwrap();
            if res.status == 201 {
                let order_no = res.json()["order"]["order_no"].as_str().unwrap().to_owned();
                created.push((order_no, user));
            } else {
                refused += 1;
                assert!(res.status >= 500, "{}", res.text());
            }
        }
    }
    created.sort();
    rng.shuffle(&mut created);

    // What each user does at WeChat.
    let mut pool: Vec<Delivery> = Vec::new();
    let mut lost = 0;
    for (order_no, user) in &created {
        let roll = rng.below(100);
        let delivery = |body: String, kind, copies| Delivery {
            order_no: order_no.clone(),
            body,
            kind,
            attempts: 0,
            copies,
        };
        if roll < 60 {
            let body = wechat.pay(order_no, SignType::Md5);
            match rng.below(100) {
                0..10 => lost += 1,
                10..50 => pool.push(delivery(body, Kind::Genuine, 1)),
                50..75 => {
                    pool.push(delivery(body.clone(), Kind::Genuine, 1));
                    pool.push(delivery(body, Kind::Genuine, 1));
                }
                _ => pool.push(delivery(body, Kind::Genuine, 4)),
            }
        } else if roll < 75 {
            // A payment error the user saw: nothing reaches us.
        } else {
            let fee = wechat.trade(order_no).unwrap().total_fee;
            let signed = |fee, tid| {
                notification(
                    order_no,
                    &openid(user),
                    fee,
                    tid,
                    "20261127150000",
                    SignType::Md5,
                    |_| {},
                )
            };
            if rng.chance(40) {
                let mut p =
                    xml::read(signed(fee, "4200000000202611270099999999").as_bytes()).unwrap();
                p.insert("sign".into(), "0".repeat(32));
                pool.push(delivery(xml::write(&p), Kind::Forged, 1));
            }
            if rng.chance(20) {
                let body = signed(fee + 1, "4200000000202611270088888888");
                pool.push(delivery(body, Kind::Lying, 1));
            }
        }
    }

    // Rounds of concurrent notifications (each copy to A or B), polls and reconciles; the
    // invariants checked from Redis after every round.
    let mut successes: BTreeSet<String> = BTreeSet::new();
    let mut seen_paid: BTreeSet<String> = BTreeSet::new();
    let (mut sent, mut fails, mut polls, mut reconciles, mut rounds) = (0, 0, 0, 0, 0);
    while !pool.is_empty() {
        rounds += 1;
        rng.shuffle(&mut pool);
        let take = pool.len().min(10);
        let batch: Vec<Delivery> = pool.drain(..take).collect();
        let mut set = JoinSet::new();
        for d in batch {
            if rng.chance(15) {
                pool.push(d); // delivered in a later round
                continue;
            }
            for _ in 0..d.copies.max(1) {
                let up = ups[rng.below(2) as usize].clone();
                let d = d.clone();
                sent += 1;
                set.spawn(async move {
                    let res = notify(&up, &d.body).await;
                    let success = is_success(&res);
                    assert!(success || is_fail(&res), "{}", res.text());
                    Some((d, success))
                });
            }
        }
        for _ in 0..rng.below(3) {
            let (order_no, user) = created[rng.below(created.len() as u64) as usize].clone();
            let (up, auth) = (ups[rng.below(2) as usize].clone(), tokens[user].clone());
            polls += 1;
            set.spawn(async move {
                let status = user_status(&up, &auth, &order_no).await;
                assert!(!status.is_empty());
                None
            });
        }
        if rng.chance(10) {
            reconciles += 1;
            let up = ups[rng.below(2) as usize].clone();
            set.spawn(async move {
                let res = call(
                    &up,
                    "POST",
                    "/api/admin/reconcile",
                    &[("authorization", &admin_auth()), JSON_TYPE],
                    "{}",
                )
                .await;
                assert_eq!(res.status, 200, "{}", res.text());
                None
            });
        }
        while let Some(joined) = set.join_next().await {
            let Some((mut d, success)) = joined.unwrap() else {
                continue;
            };
            if success {
                assert_ne!(d.kind, Kind::Forged, "forged SUCCESS: {}", d.order_no);
                successes.insert(d.order_no.clone());
            } else {
                fails += 1;
                d.attempts += 1;
                d.copies = 1;
                if d.kind != Kind::Forged
                    && d.attempts < MAX_DELIVERIES
                    && !pool.iter().any(|p| p.body == d.body)
                {
                    pool.push(d);
                }
            }
        }
        // From the store itself, as the app derives orders.
        let keys = client.keys().unwrap();
        let mut values = BTreeMap::new();
        for key in keys.iter().filter(|k| k.starts_with("order:")) {
            values.insert(key.clone(), client.get(key).unwrap().unwrap_or_default());
        }
        let mut derived = BTreeMap::new();
        for (order_no, _) in &created {
            if let Some(order) =
                wxpay::ledger::read_order_from(order_no, |k| values.get(k).cloned(), &keys)
            {
                derived.insert(order_no.clone(), order);
            }
        }
        for order_no in &successes {
            let order = &derived[order_no];
            let alerted = order
                .events
                .iter()
                .any(|e| matches!(e, wxpay::order::Event::Alert { .. }));
            assert!(
                order.status == wxpay::order::Status::Paid || alerted,
                "round {rounds}: {order_no} answered SUCCESS, is {} without an alert",
                order.status
            );
        }
        for (order_no, order) in &derived {
            assert_paid_once_and_never_reverted(
                order_no,
                order,
                &mut seen_paid,
                &format!("round {rounds}"),
            );
        }
    }

    // Settle: traffic has stopped; age the open orders past reconcile's windows (in Redis),
    // then reconcile.
    wechat.clear_faults();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let aged = wxpay::time::rfc3339(now - 3 * 3600);
    for key in client.keys().unwrap() {
        let Some(order_no) = key.strip_prefix("order:") else {
            continue;
        };
        if order_no.contains(':') {
            continue;
        }
        let mut record: Value =
            serde_json::from_slice(&client.get(&key).unwrap().unwrap()).unwrap();
        if matches!(
            record["status"].as_str(),
            Some("CREATED" | "AWAITING_PAYMENT")
        ) {
            record["created_at"] = json!(aged);
            if record.get("prepay_expires_at").is_some() {
                record["prepay_expires_at"] = json!(now - 3600);
            }
            client
                .set(&key, &serde_json::to_vec(&record).unwrap())
                .unwrap();
        }
    }
    let mut report = Value::Null;
    for i in 0..3 {
        reconciles += 1;
        let res = call(
            &ups[i % 2],
            "POST",
            "/api/admin/reconcile",
            &[("authorization", &admin_auth()), JSON_TYPE],
            "{}",
        )
        .await;
        assert_eq!(res.status, 200, "{}", res.text());
        report = res.json();
        if report["failed"] == 0 && report["complete"] != false {
            break;
        }
    }
    assert_eq!(report["failed"], 0, "the final reconcile failed: {report}");

    // The invariants, on both instances' views of every order in Redis.
    let ledger = wechat.ledger();
    let stored: Vec<String> = client
        .keys()
        .unwrap()
        .into_iter()
        .filter_map(|k| k.strip_prefix("order:").map(str::to_owned))
        .filter(|no| !no.contains(':'))
        .collect();
    assert_eq!(stored.len(), created.len(), "orders in Redis vs created");
    let (mut paid, mut closed) = (0, 0);
    for order_no in &stored {
        let a = admin_order(&ups[0], order_no).await;
        let b = admin_order(&ups[1], order_no).await;
        assert_eq!(a, b, "{order_no}: A and B see different orders");
        let trade = ledger.get(order_no);
        match a["status"].as_str().unwrap() {
            "PAID" => {
                paid += 1;
                let (tid, _) = trade
                    .and_then(|t| t.paid.clone())
                    .unwrap_or_else(|| panic!("{order_no} PAID, WeChat did not pay it"));
                assert_eq!(a["transaction_id"], tid.as_str(), "{order_no}");
                assert_eq!(a["total_fee"], json!(trade.unwrap().total_fee));
                assert_eq!(paid_events(&a), 1, "{order_no}: {a}");
            }
            other => {
                assert_eq!(
                    paid_events(&a),
                    0,
                    "{order_no} is {other} with a PAID event"
                );
                assert!(
                    trade.is_none_or(|t| t.paid.is_none()),
                    "{order_no}: paid at WeChat, {other} here (lost)"
                );
                assert!(
                    matches!(other, "CLOSED" | "FAILED"),
                    "{order_no} left {other} after the final reconcile"
                );
                closed += 1;
            }
        }
        if successes.contains(order_no) {
            assert!(a["status"] == "PAID" || has_alert(&a), "{order_no}: {a}");
        }
    }
    let paid_at_wechat = ledger.values().filter(|t| t.paid.is_some()).count();
    assert_eq!(
        paid, paid_at_wechat,
        "every payment WeChat took is PAID here"
    );
    wechat.assert_all_requests_verified();
    for up in &ups {
        assert_clean_output(up);
    }
    println!(
        "redis soak: seed={seed} orders={} refused={refused} paid={paid} closed/failed={closed} \
         | notifications sent={sent} FAIL={fails} lost={lost} rounds={rounds} | polls={polls} \
         reconciles={reconciles}",
        created.len()
    );
    assert!(paid > 0, "the soak paid nothing");
}

// ---- Redis round trips per route ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_round_trips_per_route() {
    let Some(tools) = tools_or_skip("store_round_trips_per_route") else {
        return;
    };
    let redis = RedisServer::start(&tools.redis).expect("redis-server");
    let wechat = FakeWechat::start().await;
    let up = instances_on(&tools.spin, &redis, &wechat, 1)
        .await
        .remove(0);
    put_products(&up).await;
    let alice = login(&up, "alice").await;
    let mut client = redis.client().unwrap();
    let mut measured = Vec::new();
    // Each measured twice (on two orders): the first request may meet a new component
    // instance, which opens the store (Spin 4.0.2 then sends a PING).
    for round in 1..=2 {
        let order_no = create(&up, &alice, "tea").await;
        let body = wechat.pay(&order_no, SignType::Md5);

        client.reset_stats().unwrap();
        let first = notify(&up, &body).await;
        assert!(is_success(&first), "{}", first.text());
        let first = client.command_calls().unwrap();

        client.reset_stats().unwrap();
        let duplicate = notify(&up, &body).await;
        assert!(is_success(&duplicate), "{}", duplicate.text());
        let duplicate = client.command_calls().unwrap();

        client.reset_stats().unwrap();
        assert_eq!(user_status(&up, &alice, &order_no).await, "PAID");
        let poll = client.command_calls().unwrap();

        // Not asked for, but the route a waiting mini program calls most: a poll of an order
        // not yet paid (it asks WeChat, orderquery NOTPAY).
        let unpaid = create(&up, &alice, "tea").await;
        client.reset_stats().unwrap();
        assert_eq!(user_status(&up, &alice, &unpaid).await, "AWAITING_PAYMENT");
        let poll_unpaid = client.command_calls().unwrap();

        for (what, calls) in [
            ("first-time notification", &first),
            ("duplicate notification (order PAID)", &duplicate),
            ("GET /api/orders/{no} (PAID)", &poll),
            ("GET /api/orders/{no} (AWAITING_PAYMENT)", &poll_unpaid),
        ] {
            println!("redis commands, round {round}, {what}: {calls:?}");
            measured.push((round, what, calls.clone()));
        }

        let n = |calls: &BTreeMap<String, u64>, cmd: &str| calls.get(cmd).copied().unwrap_or(0);
        // A first-time notification reads the order and stores the payment fact.
        assert!(n(&first, "get") >= 1, "{first:?}");
        assert!(n(&first, "set") >= 1, "{first:?}");
        // A duplicate is answered from one read (the payment fact): it writes nothing.
        assert_eq!(n(&duplicate, "get"), 1, "{duplicate:?}");
        assert_eq!(
            n(&duplicate, "set") + n(&duplicate, "del"),
            0,
            "{duplicate:?}"
        );
        let total = |calls: &BTreeMap<String, u64>| {
            calls
                .iter()
                .filter(|(cmd, _)| *cmd != "ping")
                .map(|(_, n)| n)
                .sum::<u64>()
        };
        assert!(
            total(&duplicate) < total(&first),
            "{duplicate:?} vs {first:?}"
        );
        // A poll of a paid order reads and writes nothing.
        assert!(n(&poll, "get") >= 1, "{poll:?}");
        assert_eq!(n(&poll, "set") + n(&poll, "del"), 0, "{poll:?}");
        // No route lists every key (KEYS is O(keys in the store)).
        for calls in [&first, &duplicate, &poll, &poll_unpaid] {
            assert_eq!(n(calls, "keys") + n(calls, "scan"), 0, "{calls:?}");
        }
    }
    assert_clean_output(&up);
}
