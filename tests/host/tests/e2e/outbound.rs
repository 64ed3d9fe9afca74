//! Outbound HTTP: `allowed_outbound_hosts` (templated from a variable), denial, timeouts.

use std::time::{Duration, Instant};

use spin_test_host::{FakeServer, text_response};

use crate::fixture;

async fn fake(body: &'static str) -> FakeServer {
    FakeServer::start(move |_req| async move { text_response(200, body) })
        .await
        .expect("fake server")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_host_from_a_variable_is_reached() -> anyhow::Result<()> {
    let upstream = fake("from upstream").await;
    let app = fixture()
        .variable("upstream", upstream.origin())
        .start()
        .await?;
    let url = format!("{}/pay/orderquery?x=1", upstream.origin());
    let res = app.get(&format!("/outbound?url={url}")).await?;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.text(), "200\nfrom upstream");
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path_and_query, "/pay/orderquery?x=1");
    assert_eq!(seen[0].headers["host"], upstream.addr().to_string());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_hosts_ports_and_components_are_denied() -> anyhow::Result<()> {
    let upstream = fake("allowed").await;
    let elsewhere = fake("must not be reached").await;
    let app = fixture()
        .variable("upstream", upstream.origin())
        .start()
        .await?;

    // Same IP, another port: not in allowed_outbound_hosts.
    let res = app
        .get(&format!("/outbound?url={}/x", elsewhere.origin()))
        .await?;
    assert_eq!(res.status, 502);
    assert_eq!(res.text(), "ErrorCode::HttpRequestDenied");
    // https to a real host: denied before anything else happens.
    let res = app
        .get("/outbound?url=https://api.mch.weixin.qq.com/pay")
        .await?;
    assert_eq!(res.text(), "ErrorCode::HttpRequestDenied");
    // fixture-b has no allowed_outbound_hosts at all.
    let res = app
        .get(&format!("/b/outbound?url={}/x", upstream.origin()))
        .await?;
    assert_eq!(res.text(), "ErrorCode::HttpRequestDenied");

    assert!(elsewhere.requests().is_empty());
    assert!(upstream.requests().is_empty());
    // The allowed one still works.
    let res = app
        .get(&format!("/outbound?url={}/ok", upstream.origin()))
        .await?;
    assert_eq!(res.text(), "200\nallowed");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_byte_timeout_is_honoured() -> anyhow::Result<()> {
    let slow = FakeServer::start(|_req| async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        text_response(200, "late")
    })
    .await?;
    let app = fixture()
        .variable("upstream", slow.origin())
        .start()
        .await?;

    let started = Instant::now();
    let res = app
        .get(&format!(
            "/outbound?url={}/slow&first_byte_ms=200",
            slow.origin()
        ))
        .await?;
    let elapsed = started.elapsed();
    assert_eq!(res.text(), "ErrorCode::ConnectionReadTimeout");
    assert!(elapsed < Duration::from_millis(1200), "took {elapsed:?}");

    // Without the guest's timeout the same request waits and succeeds.
    let res = app
        .get(&format!("/outbound?url={}/slow", slow.origin()))
        .await?;
    assert_eq!(res.text(), "200\nlate");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_is_reported() -> anyhow::Result<()> {
    // Port 9 (discard) is the fixture's default upstream; nothing listens there.
    let app = fixture().start().await?;
    let res = app
        .get("/outbound?url=http://127.0.0.1:9/x&connect_ms=500")
        .await?;
    assert_eq!(res.status, 502);
    assert!(
        res.text() == "ErrorCode::ConnectionRefused"
            || res.text() == "ErrorCode::ConnectionTimeout",
        "{}",
        res.text()
    );
    Ok(())
}
