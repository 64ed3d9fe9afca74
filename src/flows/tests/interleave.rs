//! Every interleaving of two or three handlers' key-value operations (docs/RELIABILITY.md,
//! "Storage model"). Spin's store has no transactions and several instances share it, so any
//! order of the handlers' gets and sets can happen. Each handler here runs on a store that
//! pauses it before every operation; a scheduler resumes one handler at a time, and the
//! exploration runs **every** sequence of resumptions from a fresh world, checking the
//! invariants after each:
//!
//! - a notification answered SUCCESS is durably recorded: the order is PAID at the end;
//! - a paid order has exactly one `PAID` status event;
//! - once anything answered that the order is paid (a notification's SUCCESS, a status poll's
//!   PAID, reconcile's count), it is PAID at the end: never shown awaiting or closed again;
//! - no fact is lost: the payment's key holds the payment WeChat confirmed.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use super::*;
use crate::ledger;
use crate::v2::notify::SUCCESS_REPLY;

/// A store that pauses its handler before every operation (see the module documentation).
struct Stepped<'a> {
    mem: &'a MemStore,
    /// Every operation performed, as `handler: op key`, in the order performed.
    trace: &'a RefCell<Vec<String>>,
    name: &'static str,
    /// Whether a `get` is a pause point too. Off only where every record a handler gets is
    /// immutable once listed or loaded, so that only the listings and writes order the
    /// handlers (and the schedules stay few enough to run them all).
    pause_on_get: bool,
}

/// Pending once, then ready: the point where the scheduler takes over.
struct Pause(bool);

impl Future for Pause {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            Poll::Pending
        }
    }
}

impl Stepped<'_> {
    async fn step(&self, op: &str, key: &str) {
        if op != "get" || self.pause_on_get {
            Pause(false).await;
        }
        self.trace
            .borrow_mut()
            .push(format!("{}: {op} {key}", self.name));
    }
}

impl Store for Stepped<'_> {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.step("get", key).await;
        self.mem.get(key).await
    }
    async fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.step("set", key).await;
        self.mem.set(key, value).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.step("delete", key).await;
        self.mem.delete(key).await
    }
    async fn keys_with_prefix(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.step("keys", prefix).await;
        self.mem.keys_with_prefix(prefix).await
    }
}

/// What a handler answered.
#[derive(Debug)]
enum Done {
    Notify(Response, notify::NotifyOutcome),
    /// A status poll (`GET /api/orders/{no}`) or the creating request.
    User(Response),
    Reconcile(Response),
}

type Task<'a> = Pin<Box<dyn Future<Output = Done> + 'a>>;

/// Runs `tasks` by `schedule` (each entry resumes that task for one store operation and what
/// follows it); returns the answers of the finished ones and the tasks still runnable.
fn run(mut tasks: Vec<Task<'_>>, schedule: &[usize]) -> (Vec<Option<Done>>, Vec<usize>) {
    let mut cx = Context::from_waker(Waker::noop());
    let mut done: Vec<Option<Done>> = tasks.iter().map(|_| None).collect();
    let mut poll = |i: usize, tasks: &mut Vec<Task<'_>>, done: &mut Vec<Option<Done>>| {
        assert!(done[i].is_none(), "schedule resumes finished task {i}");
        if let Poll::Ready(d) = tasks[i].as_mut().poll(&mut cx) {
            done[i] = Some(d);
        }
    };
    // To the first store operation (nothing shared happens before it).
    for i in 0..tasks.len() {
        poll(i, &mut tasks, &mut done);
    }
    for &i in schedule {
        poll(i, &mut tasks, &mut done);
    }
    let runnable = (0..tasks.len()).filter(|&i| done[i].is_none()).collect();
    (done, runnable)
}

/// One interleaving scenario: a world, its handlers, and what must hold afterwards.
struct Scenario {
    setup: fn() -> (World, String),
    handlers: for<'w> fn(&'w World, &'w str, &'w RefCell<Vec<String>>) -> Vec<Task<'w>>,
}

/// Runs every schedule of `scenario`, checks the invariants after each (and `extra`), and
/// returns how many schedules there were.
fn explore(scenario: &Scenario, extra: impl Fn(&World, &str, &[Done])) -> usize {
    let mut pending: Vec<Vec<usize>> = vec![Vec::new()];
    let mut schedules = 0;
    while let Some(prefix) = pending.pop() {
        let (w, no) = (scenario.setup)();
        let trace = RefCell::new(Vec::new());
        let (done, runnable) = run((scenario.handlers)(&w, &no, &trace), &prefix);
        if runnable.is_empty() {
            schedules += 1;
            let done: Vec<Done> = done.into_iter().map(Option::unwrap).collect();
            let context = || format!("schedule {prefix:?}:\n{}", trace.borrow().join("\n"));
            check_invariants(&w, &no, &done, &context);
            extra(&w, &no, &done);
        } else {
            for t in runnable {
                let mut next = prefix.clone();
                next.push(t);
                pending.push(next);
            }
        }
    }
    schedules
}

fn check_invariants(w: &World, no: &str, done: &[Done], context: &dyn Fn() -> String) {
    let order = w.store.order(no);
    let paid_told = done.iter().any(|d| match d {
        Done::Notify(r, outcome) => {
            r.body == SUCCESS_REPLY.as_bytes()
                && matches!(
                    outcome,
                    notify::NotifyOutcome::Applied { .. } | notify::NotifyOutcome::Duplicate { .. }
                )
        }
        Done::User(r) => r
            .json_body()
            .is_some_and(|b| b["status"] == "PAID" || b["order"]["status"] == "PAID"),
        Done::Reconcile(r) => r.json_body().is_some_and(|b| b["paid"] == 1),
    });
    if paid_told {
        let order = order
            .as_ref()
            .unwrap_or_else(|| panic!("paid, but no order\n{}", context()));
        assert_eq!(order.status, Status::Paid, "{}", context());
        let paid = w
            .store
            .raw(&ledger::paid_key(no))
            .unwrap_or_else(|| panic!("no payment fact\n{}", context()));
        let paid: ledger::PaidFact = serde_json::from_slice(&paid).unwrap();
        assert_eq!(order.transaction_id.as_ref(), Some(&paid.transaction_id));
    }
    if let Some(order) = &order {
        let paid_events = status_events_to(order, Status::Paid);
        assert!(paid_events <= 1, "{paid_events} PAID events\n{}", context());
        assert_eq!(
            paid_events == 1,
            order.status == Status::Paid,
            "{}",
            context()
        );
    }
}

// ---- The handlers ---------------------------------------------------------------------------------

fn stepped<'w>(w: &'w World, trace: &'w RefCell<Vec<String>>, name: &'static str) -> Stepped<'w> {
    Stepped {
        mem: &w.store,
        trace,
        name,
        pause_on_get: true,
    }
}

fn notify_task<'w>(
    w: &'w World,
    trace: &'w RefCell<Vec<String>>,
    body: Vec<u8>,
    name: &'static str,
) -> Task<'w> {
    notify_request_task(w, trace, Request::new(body), name)
}

fn notify_request_task<'w>(
    w: &'w World,
    trace: &'w RefCell<Vec<String>>,
    request: Request,
    name: &'static str,
) -> Task<'w> {
    let env = w.env_on(stepped(w, trace, name), w.merchant.clone());
    Box::pin(async move {
        let (r, outcome) = notify::notify(&env, &request).await;
        Done::Notify(r, outcome)
    })
}

fn poll_task<'w>(w: &'w World, trace: &'w RefCell<Vec<String>>, no: &'w str) -> Task<'w> {
    let env = w.env_on(stepped(w, trace, "poll"), w.shop().config);
    let req = Request::new("").with_bearer(&w.token(OPENID));
    Box::pin(async move { Done::User(orders::get(&env, &req, no).await) })
}

fn reconcile_task<'w>(w: &'w World, trace: &'w RefCell<Vec<String>>) -> Task<'w> {
    let env = w.env_on(stepped(w, trace, "reconcile"), w.admin_env().config);
    let req = Request::new("").with_bearer(ADMIN_TOKEN);
    Box::pin(async move { Done::Reconcile(admin::handle(&env, "POST", "/reconcile", &req).await) })
}

/// A refund request (`POST /api/admin/orders/{no}/refunds`) on the stepped store.
fn refund_task<'w>(
    w: &'w World,
    trace: &'w RefCell<Vec<String>>,
    no: &'w str,
    body: serde_json::Value,
) -> Task<'w> {
    refund_task_on(w, stepped(w, trace, "refund"), no, body)
}

fn refund_task_on<'w>(
    w: &'w World,
    store: Stepped<'w>,
    no: &'w str,
    body: serde_json::Value,
) -> Task<'w> {
    let env = w.env_on(store, w.admin_env().config);
    let req = Request::new(body.to_string()).with_bearer(ADMIN_TOKEN);
    Box::pin(async move { Done::User(crate::flows::refunds::create(&env, &req, no).await) })
}

/// A refund notification on the stepped store.
fn refund_notify_task<'w>(
    w: &'w World,
    trace: &'w RefCell<Vec<String>>,
    body: Vec<u8>,
    name: &'static str,
) -> Task<'w> {
    let env = w.env_on(stepped(w, trace, name), w.merchant.clone());
    Box::pin(async move {
        let (r, outcome) = crate::flows::refunds::notify(&env, &Request::new(body)).await;
        Done::Notify(r, outcome)
    })
}

/// A world with one order awaiting payment (2 × 19.90).
fn awaiting() -> (World, String) {
    let w = World::new();
    let no = w.awaiting();
    (w, no)
}

/// [`awaiting`], WeChat already knowing the payment (orderquery SUCCESS).
fn paid_at_wechat() -> (World, String) {
    let (w, no) = awaiting();
    w.wx.pay(&no, 3980);
    (w, no)
}

/// [`awaiting`], its payment window over and WeChat still saying NOTPAY (reconcile closes it).
fn expired_unpaid() -> (World, String) {
    let (w, no) = awaiting();
    w.wx.set_state(&no, "NOTPAY", 3980);
    w.clock.advance(crate::v2::api::PREPAY_TTL_SECS + 1);
    (w, no)
}

/// The notification of the payment `wx.pay` records (same transaction and time).
fn wechat_notification(w: &World, no: &str) -> Vec<u8> {
    w.notification(no, |p| {
        p.insert("transaction_id".into(), format!("4200{no}"));
    })
}

// ---- The pairs ------------------------------------------------------------------------------------

#[test]
fn notify_x_notify() {
    let scenario = Scenario {
        setup: paid_at_wechat,
        handlers: |w, no, trace| {
            vec![
                notify_task(w, trace, wechat_notification(w, no), "notify 1"),
                notify_task(w, trace, wechat_notification(w, no), "notify 2"),
            ]
        },
    };
    let n = explore(&scenario, |w, no, done| {
        assert!(
            done.iter()
                .all(|d| matches!(d, Done::Notify(r, _) if r.body == SUCCESS_REPLY.as_bytes()))
        );
        assert_eq!(w.store.order(no).unwrap().status, Status::Paid);
    });
    assert!(n >= 2, "{n} schedules");
}

/// The lost update an independent review found in the single-record model: a status poll gets
/// NOTPAY from orderquery, a notification then stores PAID and answers WeChat SUCCESS, and the
/// poll, writing down that it checked, put the record back to AWAITING_PAYMENT. WeChat never
/// delivers that notification again.
#[test]
fn a_status_poll_cannot_revert_a_notification_it_raced() {
    let setup = || {
        let (w, no) = awaiting();
        // WeChat answers the poll's orderquery before the user paid.
        w.wx.set_state(&no, "NOTPAY", 3980);
        (w, no)
    };
    let (w, no) = setup();
    let trace = RefCell::new(Vec::new());
    let tasks = vec![
        poll_task(&w, &trace, &no),
        notify_task(&w, &trace, wechat_notification(&w, &no), "notify"),
    ];
    // The poll reads the order, asks WeChat (NOTPAY) and reads again; then the notification
    // runs to its end; then the poll finishes (the single-record model wrote its check back
    // over the payment here).
    let poll_reads = 2;
    let mut schedule = vec![0; poll_reads];
    schedule.extend([1; 16]);
    let (done, _) = run_to_end(tasks, schedule);
    let notified = done
        .iter()
        .any(|d| matches!(d, Done::Notify(r, _) if r.body == SUCCESS_REPLY.as_bytes()));
    assert!(notified, "{}", trace.borrow().join("\n"));
    assert_eq!(
        w.store.order(&no).unwrap().status,
        Status::Paid,
        "{}",
        trace.borrow().join("\n")
    );
    // And the same in every other order of their operations.
    let scenario = Scenario {
        setup,
        handlers: |w, no, trace| {
            vec![
                poll_task(w, trace, no),
                notify_task(w, trace, wechat_notification(w, no), "notify"),
            ]
        },
    };
    assert!(explore(&scenario, |_, _, _| {}) > 10);
}

/// Runs `schedule` as far as it applies (entries for finished tasks are skipped), then the rest
/// in index order.
fn run_to_end(tasks: Vec<Task<'_>>, schedule: Vec<usize>) -> (Vec<Done>, Vec<usize>) {
    let mut cx = Context::from_waker(Waker::noop());
    let mut tasks = tasks;
    let mut done: Vec<Option<Done>> = tasks.iter().map(|_| None).collect();
    let mut taken = Vec::new();
    let mut step = |i: usize, tasks: &mut Vec<Task<'_>>, done: &mut Vec<Option<Done>>| {
        if done[i].is_none() {
            taken.push(i);
            if let Poll::Ready(d) = tasks[i].as_mut().poll(&mut cx) {
                done[i] = Some(d);
            }
        }
    };
    for i in 0..tasks.len() {
        step(i, &mut tasks, &mut done);
    }
    for i in schedule {
        step(i, &mut tasks, &mut done);
    }
    while let Some(i) = done.iter().position(Option::is_none) {
        step(i, &mut tasks, &mut done);
    }
    (done.into_iter().map(Option::unwrap).collect(), taken)
}

#[test]
fn notify_x_poll_when_wechat_knows_the_payment() {
    let scenario = Scenario {
        setup: paid_at_wechat,
        handlers: |w, no, trace| {
            vec![
                poll_task(w, trace, no),
                notify_task(w, trace, wechat_notification(w, no), "notify"),
            ]
        },
    };
    explore(&scenario, |w, no, _| {
        // Both sources wrote the payment: the same bytes.
        assert_eq!(w.store.order(no).unwrap().status, Status::Paid);
    });
}

/// APIv3: two deliveries of the same notification, in every order: one payment, both
/// answered 204.
#[test]
fn v3_notify_x_notify() {
    let scenario = Scenario {
        setup: || {
            let w = super::v3::v3_world(super::v3::public_key_mode());
            let (no, _) = super::v3::create_v3(&w);
            w.wx.pay(&no, 3980);
            (w, no)
        },
        handlers: |w, no, trace| {
            let n = super::v3::V3Notification::default();
            vec![
                notify_request_task(w, trace, n.request(w, no, |_| {}), "notify 1"),
                notify_request_task(w, trace, n.request(w, no, |_| {}), "notify 2"),
            ]
        },
    };
    let n = explore(&scenario, |w, no, done| {
        assert!(
            done.iter()
                .filter(|d| matches!(d, Done::Notify(..)))
                .all(|d| matches!(d, Done::Notify(r, _) if r.status == 204))
        );
        assert_eq!(w.store.order(no).unwrap().status, Status::Paid);
    });
    assert!(n >= 2, "{n} schedules");
}

/// A refund whose reply was lost, sent again by a retried request, while WeChat's SUCCESS
/// notification for it arrives: in every order, one refund at WeChat and the refund SUCCESS at
/// the end (a PROCESSING fact written after the SUCCESS one never reverts it).
#[test]
fn refund_resend_x_refund_notification() {
    let scenario = Scenario {
        setup: || {
            let (w, no) = paid_at_wechat();
            let (r, _) = w.notify(&wechat_notification(&w, &no));
            assert_eq!(r.body, SUCCESS_REPLY.as_bytes());
            for _ in 0..2 {
                w.wx.fault(crate::v2::refund::REFUND_PATH, Fault::Timeout);
            }
            let req = Request::new(r#"{"amount":3980,"refund_no":"R1"}"#).with_bearer(ADMIN_TOKEN);
            let r = block_on(crate::flows::refunds::create(&w.admin_env(), &req, &no));
            assert_eq!(r.status, 504, "{r:?}");
            (w, no)
        },
        handlers: |w, no, trace| {
            let body = super::refunds::v2_refund_notification(&w.merchant, no, "R1", 3980);
            vec![
                refund_task(
                    w,
                    trace,
                    no,
                    serde_json::json!({"amount": 3980, "refund_no": "R1"}),
                ),
                refund_notify_task(w, trace, body, "refund notify"),
            ]
        },
    };
    let n = explore(&scenario, |w, no, done| {
        let refunds = block_on(crate::flows::refunds::load_refunds(&w.store, no)).unwrap();
        assert_eq!(refunds.len(), 1);
        assert_eq!(refunds[0].status, crate::refund::RefundStatus::Success);
        assert!(w.wx.refunds.borrow().len() <= 1);
        for d in done {
            if let Done::Notify(r, _) = d {
                assert_eq!(r.body, SUCCESS_REPLY.as_bytes());
            }
        }
    });
    assert!(n >= 2, "{n} schedules");
}

#[test]
fn notify_x_reconcile() {
    let scenario = Scenario {
        setup: paid_at_wechat,
        handlers: |w, no, trace| {
            vec![
                reconcile_task(w, trace),
                notify_task(w, trace, wechat_notification(w, no), "notify"),
            ]
        },
    };
    explore(&scenario, |w, no, _| {
        assert_eq!(w.store.order(no).unwrap().status, Status::Paid);
    });
}

#[test]
fn poll_x_reconcile() {
    let scenario = Scenario {
        setup: paid_at_wechat,
        handlers: |w, no, trace| vec![poll_task(w, trace, no), reconcile_task(w, trace)],
    };
    explore(&scenario, |w, no, _| {
        let order = w.store.order(no).unwrap();
        assert_eq!(order.status, Status::Paid);
        assert_eq!(order.transaction_id, Some(format!("4200{no}")));
    });
}

#[test]
fn reconcile_close_x_late_notification() {
    // Reconcile finds the prepay expired and NOTPAY and closes the order; a notification of a
    // payment WeChat took all the same (it wins: PAID, with an alert) arrives meanwhile.
    let scenario = Scenario {
        setup: expired_unpaid,
        handlers: |w, no, trace| {
            vec![
                reconcile_task(w, trace),
                notify_task(w, trace, wechat_notification(w, no), "notify"),
            ]
        },
    };
    explore(&scenario, |w, no, done| {
        let order = w.store.order(no).unwrap();
        assert_eq!(
            order.status,
            Status::Paid,
            "the payment is never lost to a close"
        );
        let closed = w.store.raw(&ledger::closed_key(no)).is_some();
        if closed {
            assert!(
                alerts(&order).iter().any(|a| a.contains("was CLOSED here")),
                "{:?}",
                order.events
            );
        }
        assert!(
            done.iter()
                .any(|d| matches!(d, Done::Notify(r, _) if r.body == SUCCESS_REPLY.as_bytes()))
        );
    });
}

#[test]
fn create_x_notify() {
    // The notification races the request that creates the order (a fast payer, a slow
    // instance): it may find no order yet (FAIL: WeChat delivers again), the order CREATED, or
    // awaiting payment; the creating request's second write (the prepay) must not hide it.
    let setup = || {
        let w = World::new();
        // The order number the creating request will draw (the nonce counter is replayed).
        let probe = World::new();
        let no = probe.awaiting();
        (w, no)
    };
    let scenario = Scenario {
        setup,
        handlers: |w, no, trace| {
            let env = w.env_on(stepped(w, trace, "create"), w.shop().config);
            let req = Request::new(json!({"sku": "coffee-L", "quantity": 2}).to_string())
                .with_bearer(&w.token(OPENID))
                .with_client_addr(CLIENT);
            let create: Task<'_> =
                Box::pin(async move { Done::User(orders::create(&env, &req).await) });
            vec![
                create,
                notify_task(w, trace, w.notification(no, |_| {}), "notify"),
            ]
        },
    };
    let n = explore(&scenario, |w, no, done| {
        assert!(
            matches!(&done[0], Done::User(r) if r.status == 201),
            "{done:?}"
        );
        let order = w.store.order(no).unwrap();
        match &done[1] {
            Done::Notify(_, notify::NotifyOutcome::Applied { .. }) => {
                assert_eq!(order.status, Status::Paid)
            }
            Done::Notify(_, notify::NotifyOutcome::Rejected { .. }) => {
                assert_eq!(order.status, Status::AwaitingPayment)
            }
            other => panic!("{other:?}"),
        }
    });
    assert!(n > 3, "{n} schedules");
}

/// [`paid_at_wechat`], the payment's notification applied: a PAID order of 3980 fen.
fn paid() -> (World, String) {
    let (w, no) = paid_at_wechat();
    let (r, _) = w.notify(&wechat_notification(&w, &no));
    assert_eq!(r.body, SUCCESS_REPLY.as_bytes());
    (w, no)
}

/// Two admins refund one paid order at once with different refund numbers. The rules are
/// checked on what each request reads, and the store has no compare-and-swap, so the check
/// runs again after each refund is recorded: in every order of their store operations at most
/// one refund reaches WeChat (the two are within a minute, and together over the paid total),
/// and every recorded refund is cleared or refused, never left holding money unchecked.
/// The order and the refund records are immutable while they race (a refund's facts are each
/// written once, under keys the handlers list before they read them), so only the listings and
/// the writes are pause points.
#[test]
fn refund_x_refund() {
    let scenario = Scenario {
        setup: paid,
        handlers: |w, no, trace| {
            let store = |name| Stepped {
                pause_on_get: false,
                ..stepped(w, trace, name)
            };
            vec![
                refund_task_on(
                    w,
                    store("refund A"),
                    no,
                    json!({"amount": 3000, "refund_no": "RA"}),
                ),
                refund_task_on(
                    w,
                    store("refund B"),
                    no,
                    json!({"amount": 3000, "refund_no": "RB"}),
                ),
            ]
        },
    };
    let n = explore(&scenario, |w, no, done| {
        let sent = w.wx.refunds.borrow().clone();
        assert!(sent.len() <= 1, "both refunds sent: {sent:?}");
        let sent_total: u64 = sent.values().map(|(_, fee)| *fee).sum();
        assert!(sent_total <= 3980);
        let refunds = block_on(crate::flows::refunds::load_refunds(&w.store, no)).unwrap();
        assert!(crate::refund::held_total(&refunds).0 <= 3980, "{refunds:?}");
        assert!(refunds.iter().all(|r| r.cleared), "{refunds:?}");
        // What WeChat refunded is what the order shows, and the admins were told so.
        let created: Vec<&Response> = done
            .iter()
            .filter_map(|d| match d {
                Done::User(r) if r.status == 201 => Some(r),
                _ => None,
            })
            .collect();
        assert_eq!(created.len(), sent.len(), "{done:?}");
        assert_eq!(
            refunds.iter().map(|r| &r.refund_no).collect::<Vec<_>>(),
            sent.keys().collect::<Vec<_>>()
        );
        for d in done {
            if let Done::User(r) = d {
                assert!(
                    r.status == 201 || r.status == 409 || r.status == 429,
                    "{r:?}"
                );
            }
        }
    });
    assert!(n > 20, "{n} schedules");
}
