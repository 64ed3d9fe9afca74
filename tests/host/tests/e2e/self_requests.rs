//! Self requests (`allowed_outbound_hosts = ["http://self"]`) as Spin 4.0.2 answers them for a
//! WASIp3 (spin-sdk 6) component: permitted, then refused, because its reused instances have no
//! self-request origin. The app must not depend on them (its simulator runs in-process).

use crate::fixture;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permitted_self_alt_request_fails_like_spin_4_0_2() -> anyhow::Result<()> {
    let app = fixture().start().await?;
    let res = app.get("/self/users/bob?via=self").await?;
    assert_eq!(
        (res.status.as_u16(), res.text().as_str()),
        (502, "ErrorCode::HttpRequestUriInvalid")
    );
    // The error Spin 4.0.2 logs, and no request reached the route.
    let errors = app.host_errors();
    assert!(
        errors.iter().any(|e| e
            == "component fixture: Couldn't handle outbound HTTP request to relative URI; no origin set"),
        "{errors:?}"
    );
    assert_eq!(
        app.instances_created("fixture"),
        Some(1),
        "only the caller ran"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_requests_need_permission() -> anyhow::Result<()> {
    let app = fixture().start().await?;
    // fixture-b does not list `self` in allowed_outbound_hosts: denied before anything else.
    let res = app.get("/b/self/exact").await?;
    assert_eq!(
        (res.status.as_u16(), res.text().as_str()),
        (502, "ErrorCode::HttpRequestDenied")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relative_urls_fail_in_wasmtime_44_wasip3() -> anyhow::Result<()> {
    // WASIp3 `wasi:http` on Wasmtime 44 (Spin 4.0) cannot build a request URI without an
    // authority, so the guest gets HTTP-request-URI-invalid before any host policy runs.
    let app = fixture().start().await?;
    let res = app.get("/self-relative/exact").await?;
    assert_eq!(res.status, 502);
    assert_eq!(res.text(), "ErrorCode::HttpRequestUriInvalid");
    Ok(())
}
