//! `spin:variables`: defaults, overrides, templates, required variables, refusals.

use crate::{fixture, fixture_variant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defaults_and_templates() -> anyhow::Result<()> {
    let app = fixture().start().await?;
    let res = app.get("/var/greeting").await?;
    assert_eq!(
        (res.status.as_u16(), res.text().as_str()),
        (200, "hello, world")
    );
    let res = app.get("/var/endpoint").await?;
    assert_eq!(res.text(), "https://cn.example.com/hello");
    // fixture-b reads its own declaration of `region`.
    assert_eq!(app.get("/b/var/region").await?.text(), "cn");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overrides_win_in_both_spellings() -> anyhow::Result<()> {
    let app = fixture()
        .variable("greeting", "hi")
        .variable("SPIN_VARIABLE_REGION", "hk")
        .start()
        .await?;
    assert_eq!(app.get("/var/greeting").await?.text(), "hi, world");
    assert_eq!(
        app.get("/var/endpoint").await?.text(),
        "https://hk.example.com/hi"
    );
    assert_eq!(app.get("/b/var/region").await?.text(), "hk");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeclared_and_invalid_names_are_refused_like_spin() -> anyhow::Result<()> {
    let app = fixture().start().await?;
    // `region` is an application variable, but `fixture` does not declare it.
    let res = app.get("/var/region").await?;
    assert_eq!(res.status, 500);
    assert_eq!(
        res.text(),
        r#"Error::Undefined("no variable for \"fixture\".\"region\"")"#
    );
    let res = app.get("/b/var/greeting").await?;
    assert_eq!(
        res.text(),
        r#"Error::Undefined("no variable for \"fixture-b\".\"greeting\"")"#
    );
    let res = app.get("/var/Greeting").await?;
    assert!(
        res.text()
            .starts_with(r#"Error::InvalidName("\"Greeting\": invalid character 'G'"#),
        "{}",
        res.text()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_required_variable_fails_start_naming_it() -> anyhow::Result<()> {
    let with_required = || {
        fixture_variant(
            "region = { default = \"cn\" }",
            "region = { default = \"cn\" }\nmch_key = { required = true, secret = true }",
        )
    };
    let err = match with_required().start().await {
        Ok(_) => panic!("app started without its required variable"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("\"mch_key\""), "{err}");
    assert!(err.contains("required"), "{err}");
    // Supplied, it starts.
    let app = with_required().variable("mch_key", "k").start().await?;
    assert_eq!(app.get("/var/greeting").await?.status, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overriding_an_undeclared_variable_is_a_start_error() {
    let err = fixture()
        .variable("greetin", "typo")
        .start()
        .await
        .err()
        .expect("a typo in an override must not pass silently");
    assert!(format!("{err:#}").contains("\"greetin\""), "{err:#}");
}
