//! Routing as Spin's HTTP trigger does it, and the `spin-*` headers with their exact values.

use std::net::SocketAddr;

use crate::{fixture, fixture_variant, header_lines};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_route_gets_spin_headers() -> anyhow::Result<()> {
    let app = fixture().start().await?;
    let client: SocketAddr = "10.1.2.3:45678".parse()?;
    let res = app
        .request_from(http::Request::get("/exact?q=1").body(())?, client)
        .await?;
    assert_eq!(res.status, 200, "{}", res.text());
    let h = header_lines(&res.text());
    assert_eq!(h["spin-full-url"], "http://127.0.0.1:3000/exact?q=1");
    assert_eq!(h["spin-path-info"], "");
    assert_eq!(h["spin-matched-route"], "/exact");
    assert_eq!(h["spin-raw-component-route"], "/exact");
    assert_eq!(h["spin-component-route"], "/exact");
    assert_eq!(h["spin-base-path"], "/");
    assert_eq!(h["spin-client-addr"], "10.1.2.3:45678");
    assert_eq!(h["host"], "127.0.0.1:3000");
    assert!(!h.keys().any(|k| k.starts_with("spin-path-match-")));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_segment_and_wildcards() -> anyhow::Result<()> {
    let app = fixture().start().await?;

    let h = header_lines(&app.get("/users/alice").await?.text());
    assert_eq!(h["spin-matched-route"], "/users/:name");
    assert_eq!(h["spin-path-match-name"], "alice");
    assert_eq!(h["spin-path-info"], "");

    let h = header_lines(&app.get("/files/img/a/b.png").await?.text());
    assert_eq!(h["spin-matched-route"], "/files/:kind/...");
    assert_eq!(h["spin-raw-component-route"], "/files/:kind/...");
    assert_eq!(h["spin-component-route"], "/files/:kind");
    assert_eq!(h["spin-path-match-kind"], "img");
    assert_eq!(h["spin-path-info"], "/a/b.png");

    // `/users/alice/x` does not match `/users/:name`: the catch-all takes it.
    let h = header_lines(&app.get("/users/alice/x").await?.text());
    assert_eq!(h["spin-matched-route"], "/...");
    assert_eq!(h["spin-component-route"], "");
    assert_eq!(h["spin-path-info"], "/users/alice/x");

    // Trailing slash kept in path-info, as Spin does.
    let h = header_lines(&app.get("/files/img/").await?.text());
    assert_eq!(h["spin-path-info"], "/");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_component_gets_its_prefix_and_client_headers_cannot_spoof() -> anyhow::Result<()> {
    let app = fixture().start().await?;
    let res = app
        .request(
            http::Request::get("/b/headers")
                .header("host", "shop.example.com")
                .header("spin-path-info", "/spoofed")
                .header("x-custom", "kept")
                .body(())?,
        )
        .await?;
    let h = header_lines(&res.text());
    assert_eq!(h["spin-matched-route"], "/b/...");
    assert_eq!(h["spin-component-route"], "/b");
    assert_eq!(h["spin-path-info"], "/headers");
    assert_eq!(h["spin-full-url"], "http://shop.example.com/b/headers");
    assert_eq!(h["x-custom"], "kept");
    // The default client address is loopback.
    assert!(h["spin-client-addr"].starts_with("127.0.0.1:"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmatched_path_is_an_empty_404() -> anyhow::Result<()> {
    // Without the catch-all route nothing matches `/nowhere`.
    let app = fixture_variant(
        "[[trigger.http]]\nroute = \"/...\"\ncomponent = \"fixture\"\n",
        "",
    )
    .start()
    .await?;
    let res = app.get("/nowhere").await?;
    assert_eq!(res.status, 404);
    assert!(res.body.is_empty());
    assert_eq!(app.get("/exact").await?.status, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_output_is_captured_per_component() -> anyhow::Result<()> {
    let app = fixture().start().await?;
    assert_eq!(app.get("/print?text=hello-logs").await?.status, 200);
    assert_eq!(app.get("/b/print?text=from-b").await?.status, 200);
    let logs = app.logs();
    assert!(logs.contains("hello-logs\n"), "{logs}");
    assert!(logs.contains("err:hello-logs\n"), "{logs}");
    let entries = app.log_entries();
    assert!(entries.iter().any(|e| e.component == "fixture-b"
        && e.stream == spin_test_host::Stream::Stderr
        && e.text.contains("err:from-b")));
    assert!(entries.iter().any(|e| e.component == "fixture"
        && e.stream == spin_test_host::Stream::Stdout
        && e.text.contains("hello-logs")));
    // The secret variable's value was never printed.
    assert!(!logs.contains("fixture-secret-key"));
    assert!(app.host_errors().is_empty(), "{:?}", app.host_errors());
    Ok(())
}
