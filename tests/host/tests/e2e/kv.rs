//! `spin:key-value`: shared stores, permissions, `get-keys`, injected failures.

use spin_test_host::{KvFailure, KvOpKind};

use crate::{fixture, fixture_variant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_is_shared_between_components_requests_and_the_test() -> anyhow::Result<()> {
    let app = fixture().start().await?;
    let res = app.request(http::Request::put("/kv/a").body("1")?).await?;
    assert_eq!((res.status.as_u16(), res.text().as_str()), (200, "stored"));
    assert_eq!(app.kv("default").get("a"), Some(b"1".to_vec()));
    // The other component sees the same store.
    assert_eq!(app.get("/b/kv/a").await?.text(), "1");
    // Written by the test, read by a guest.
    app.kv("default").set("from-test", "x");
    assert_eq!(app.get("/kv/from-test").await?.text(), "x");
    // Deleted by a guest.
    let res = app
        .request(http::Request::delete("/b/kv/a").body(())?)
        .await?;
    assert_eq!(res.text(), "deleted");
    assert_eq!(app.kv("default").get("a"), None);
    assert_eq!(app.get("/kv/a").await?.status, 404);

    let ops = app.kv("default").ops();
    assert_eq!(ops[0].component, "fixture");
    assert_eq!(
        (ops[0].kind, ops[0].key.as_str()),
        (KvOpKind::Open, "default")
    );
    assert_eq!(ops[1].kind, KvOpKind::Set);
    assert!(
        ops.iter()
            .any(|op| op.component == "fixture-b" && op.kind == KvOpKind::Delete)
    );
    assert_eq!(app.kv("default").writes(), 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_keys_streams_every_key() -> anyhow::Result<()> {
    let app = fixture().start().await?;
    assert_eq!(app.get("/kv").await?.text(), "");
    for key in ["order:2", "order:1", "product:a"] {
        app.kv("default").set(key, "v");
    }
    // More keys than one stream write usually carries.
    for i in 0..300 {
        app.kv("default").set(&format!("bulk:{i:03}"), "v");
    }
    let res = app.get("/kv").await?;
    assert_eq!(res.status, 200);
    let keys: Vec<String> = res.text().lines().map(str::to_owned).collect();
    assert_eq!(keys.len(), 303);
    assert_eq!(keys, app.kv("default").keys());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeclared_store_is_access_denied() -> anyhow::Result<()> {
    let app = fixture().key_value_store("other").start().await?;
    assert_eq!(app.get("/kv-open/default").await?.text(), "opened");
    let res = app.get("/kv-open/other").await?;
    assert_eq!(
        (res.status.as_u16(), res.text().as_str()),
        (500, "Error::AccessDenied")
    );
    let res = app.get("/kv-open/nonexistent").await?;
    assert_eq!(res.text(), "Error::AccessDenied");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_store_must_be_configured() -> anyhow::Result<()> {
    let declare_other = || {
        fixture_variant(
            "key_value_stores = [\"default\"]\nallowed_outbound_hosts",
            "key_value_stores = [\"default\", \"other\"]\nallowed_outbound_hosts",
        )
    };
    let err = declare_other()
        .start()
        .await
        .err()
        .expect("an unconfigured store label must fail the start");
    assert!(
        format!("{err:#}")
            .contains("unknown key_value_stores label \"other\" for component \"fixture\""),
        "{err:#}"
    );
    let app = declare_other().key_value_store("other").start().await?;
    assert_eq!(app.get("/kv-open/other").await?.text(), "opened");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_failures_hit_only_matching_calls() -> anyhow::Result<()> {
    let app = fixture().start().await?;
    let kv = app.kv("default");
    kv.fail_sets_matching("order:", KvFailure::Times(1));

    let put = |key: &str| http::Request::put(format!("/kv/{key}")).body("v");
    let res = app.request(put("order:1")?).await?;
    assert_eq!(res.status, 500);
    assert_eq!(
        res.text(),
        "Error::Other(\"injected failure: set order:1\")"
    );
    assert_eq!(kv.get("order:1"), None);
    // Spent after one call; other keys never affected.
    assert_eq!(app.request(put("order:1")?).await?.status, 200);
    assert_eq!(kv.get_str("order:1").as_deref(), Some("v"));

    kv.fail_sets_matching("product:", KvFailure::Always);
    for _ in 0..3 {
        assert_eq!(app.request(put("product:x")?).await?.status, 500);
    }
    assert_eq!(app.request(put("other")?).await?.status, 200);
    kv.clear_failures();
    assert_eq!(app.request(put("product:x")?).await?.status, 200);

    kv.fail_gets_matching("", KvFailure::Times(2));
    assert!(
        app.get("/kv/other")
            .await?
            .text()
            .contains("injected failure: get other")
    );
    assert!(
        app.get("/b/kv/other")
            .await?
            .text()
            .contains("injected failure: get other")
    );
    assert_eq!(app.get("/kv/other").await?.text(), "v");

    kv.fail_deletes_matching("other", KvFailure::Always);
    let res = app
        .request(http::Request::delete("/kv/other").body(())?)
        .await?;
    assert_eq!(res.status, 500);
    assert!(kv.get("other").is_some());

    kv.fail_get_keys(KvFailure::Times(1));
    let res = app.get("/kv").await?;
    assert_eq!(
        res.text(),
        "get_keys: Error::Other(\"injected failure: get-keys\")"
    );
    assert_eq!(app.get("/kv").await?.status, 200);

    assert_eq!(
        kv.ops().iter().filter(|op| op.failed).count(),
        1 + 3 + 2 + 1 + 1
    );
    Ok(())
}
