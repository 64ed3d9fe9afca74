//! Self requests (`allowed_outbound_hosts = ["http://self"]`), routed back into the app.

use crate::{fixture, header_lines};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_alt_request_reaches_another_route_of_the_app() -> anyhow::Result<()> {
    let app = fixture().start().await?;
    let res = app.get("/self/users/bob?via=self").await?;
    assert_eq!(res.status, 200, "{}", res.text());
    let text = res.text();
    let (status, body) = text.split_once('\n').expect("status line");
    assert_eq!(status, "200");
    let h = header_lines(body);
    assert_eq!(h["spin-matched-route"], "/users/:name");
    assert_eq!(h["spin-path-match-name"], "bob");
    // It arrives as at Spin's own listener.
    assert_eq!(h["host"], "127.0.0.1:3000");
    assert_eq!(
        h["spin-full-url"],
        "http://127.0.0.1:3000/users/bob?via=self"
    );
    assert!(h["spin-client-addr"].starts_with("127.0.0.1:"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_request_into_the_other_component_shares_kv() -> anyhow::Result<()> {
    let app = fixture().start().await?;
    app.kv("default").set("k", "shared");
    let res = app.get("/self/b/kv/k").await?;
    assert_eq!(res.text(), "200\nshared");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_requests_need_permission() -> anyhow::Result<()> {
    let app = fixture().start().await?;
    // fixture-b does not list `self` in allowed_outbound_hosts.
    let res = app.get("/b/self/exact").await?;
    assert_eq!(
        (res.status.as_u16(), res.text().as_str()),
        (502, "ErrorCode::HttpRequestDenied")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relative_urls_fail_in_wasmtime_44_wasip3() -> anyhow::Result<()> {
    // Documents the runtime's behaviour: WASIp3 `wasi:http` on Wasmtime 44 (Spin 4.0) cannot
    // build a request URI without an authority, so the guest gets HTTP-request-URI-invalid
    // before any host policy runs. Apps must use `http://self.alt/...`.
    let app = fixture().start().await?;
    let res = app.get("/self-relative/exact").await?;
    assert_eq!(res.status, 502);
    assert_eq!(res.text(), "ErrorCode::HttpRequestUriInvalid");
    Ok(())
}
