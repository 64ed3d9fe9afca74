//! Concurrency and instance reuse as Spin 4 runs WASIp3 components.
//!
//! The fixture's `/sleep` route awaits a timer, then answers `<requests this instance served>
//! <instance id>`: a per-instance static, exactly the kind of state that leaks between requests
//! when instances are reused.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use spin_test_host::{InstanceReuse, TestApp};

use crate::fixture;

/// Sends `n` concurrent `/sleep?ms=..` requests; returns `(served, instance id)` per request.
async fn sleep_burst(app: &TestApp, n: usize, ms: u64) -> anyhow::Result<Vec<(u64, String)>> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            app.get(&format!("/sleep?ms={ms}")).await
        }));
    }
    let mut out = Vec::new();
    for task in tasks {
        let res = task.await??;
        assert_eq!(res.status, 200, "{}", res.text());
        let text = res.text();
        let (served, id) = text.split_once(' ').expect("`served id`");
        out.push((served.parse()?, id.to_owned()));
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_instances_serve_many_requests_concurrently() -> anyhow::Result<()> {
    let app = fixture().start().await?;
    let mut all = Vec::new();
    for round in 0..3 {
        let started = Instant::now();
        let results = sleep_burst(&app, 20, 400).await?;
        let elapsed = started.elapsed();
        // In flight together: far less than 20 × 400 ms.
        assert!(elapsed < Duration::from_millis(3000), "took {elapsed:?}");
        let ids: BTreeSet<_> = results.iter().map(|(_, id)| id.clone()).collect();
        let max_served = results.iter().map(|(s, _)| *s).max().unwrap();
        eprintln!(
            "round {round}: {} instances, max served {max_served}",
            ids.len()
        );
        all.extend(results);
    }
    let ids: BTreeSet<_> = all.iter().map(|(_, id)| id.clone()).collect();
    let max_served = all.iter().map(|(s, _)| *s).max().unwrap();
    // Wasmtime's dispatcher starts extra instances while others are busy starting up (more
    // under CPU contention), but requests share instances and per-instance state is visibly
    // shared.
    assert!(ids.len() < all.len(), "instances: {}", ids.len());
    assert!(
        max_served >= 3,
        "no instance served several requests: {all:?}"
    );
    // The dispatcher may start an instance that ends up serving nothing (the work went to a
    // busy one first), so the count is a lower bound, not an equality.
    let created = app.instances_created("fixture").unwrap_or(0);
    assert!(
        created >= ids.len() as u64,
        "created {created}, seen {}",
        ids.len()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_reuse_every_request_gets_a_fresh_instance() -> anyhow::Result<()> {
    let app = fixture().no_instance_reuse().start().await?;
    let started = Instant::now();
    let results = sleep_burst(&app, 20, 400).await?;
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_millis(3000), "took {elapsed:?}");
    assert!(
        results.iter().all(|(served, _)| *served == 1),
        "{results:?}"
    );
    let ids: BTreeSet<_> = results.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(ids.len(), 20);
    assert_eq!(app.instances_created("fixture"), Some(20));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reuse_limit_retires_instances() -> anyhow::Result<()> {
    let app = fixture()
        .instance_reuse(InstanceReuse {
            max_instance_reuse_count: 3,
            max_instance_concurrent_reuse_count: 1,
            ..InstanceReuse::default()
        })
        .start()
        .await?;
    let mut served = Vec::new();
    for _ in 0..12 {
        let text = app.get("/sleep?ms=0").await?.text();
        served.push(text.split(' ').next().unwrap().parse::<u64>()?);
    }
    // No instance serves more than 3 requests (which instance gets a request is up to
    // Wasmtime's dispatcher, as in Spin), so 12 requests need at least 4 instances.
    assert!(served.iter().all(|s| (1..=3).contains(s)), "{served:?}");
    assert!(served.contains(&3), "{served:?}");
    assert!(app.instances_created("fixture").unwrap() >= 4);
    Ok(())
}
