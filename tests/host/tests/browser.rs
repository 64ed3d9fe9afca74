//! The merchant console (`components/console`, README "Merchant console") in a real browser:
//! headless Chromium from the distribution's packages, driven over WebDriver (chromedriver,
//! through `fantoccini`), against the app under the released Spin (4.0.2) in simulator mode.
//!
//! One scenario walks every page as a merchant would: a wrong token shows the API's error, the
//! simulator banner is up, a product is added in the catalog, an order for it (made and paid
//! through the API and the simulator) is found in the recent orders and by its number, part of
//! it is refunded (invalid amounts are refused in the page without a request), the refund is
//! PROCESSING, then SUCCESS once the simulator settles it, a price is changed, a product
//! deactivated, and reconcile shows its counts. A screenshot of each page is written to
//! `target/browser-screenshots/`; with `SPIN_WXPAY_UPDATE_SCREENSHOT=1` the order page's also
//! replaces `docs/console.png` (the README's), which a plain run leaves alone.
//! The console's own answers (security headers, 404/405) are checked on the wire.
//!
//! Skipped with a message where Spin, Chromium or chromedriver is missing, unless
//! `SPIN_WXPAY_REQUIRE_SPIN` is set (CI, which installs them): then it fails. Every wait polls
//! with a generous deadline; nothing is timed.

use std::io::Write as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator, elements::Element};
use serde_json::{Value, json};
use spin_test_host::real_spin::{
    SpinUp, WireResponse, found_or_skip, free_loopback_addr, spin_build, spin_or_skip,
    workspace_root,
};

const ADMIN_TOKEN: &str = "simulator-admin-token";
/// How long any one thing the page does may take before the test gives up on it (Chromium and
/// Spin share a 2-core machine with the build; this is a deadline, not a measurement).
const DEADLINE: Duration = Duration::from_secs(60);

/// The first of `names` on `PATH`.
fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// Chromium and chromedriver (`CHROMIUM_BIN` / `CHROMEDRIVER_BIN`, else on `PATH`).
fn browser() -> Result<(PathBuf, PathBuf), String> {
    let find = |var: &str, names: &[&str]| match std::env::var_os(var).filter(|v| !v.is_empty()) {
        Some(bin) if Path::new(&bin).is_file() => Ok(PathBuf::from(bin)),
        Some(bin) => Err(format!("{var}={} is not a file", bin.display())),
        None => on_path(names).ok_or_else(|| format!("no {} on PATH and {var} is unset", names[0])),
    };
    Ok((
        find(
            "CHROMIUM_BIN",
            &["chromium", "chromium-browser", "google-chrome"],
        )?,
        find("CHROMEDRIVER_BIN", &["chromedriver"])?,
    ))
}

/// A chromedriver on a free loopback port; killed when dropped.
struct ChromeDriver {
    child: Child,
    port: u16,
}

impl ChromeDriver {
    fn start(bin: &Path) -> ChromeDriver {
        let port = free_loopback_addr().expect("free port").port();
        let child = Command::new(bin)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning chromedriver");
        let driver = ChromeDriver { child, port };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < DEADLINE,
                "chromedriver did not listen on {port} within {DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        driver
    }

    async fn session(&self, chromium: &Path) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                // --no-sandbox: CI runs as root, where Chromium's sandbox cannot start.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1000",
                         "--no-first-run", "--disable-extensions"],
            }),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("WebDriver session with headless Chromium")
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The page's error box and the current text of `css`, for a failure message.
async fn page_state(client: &Client) -> String {
    let error = match client.find(Locator::Css("#error")).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let main = match client.find(Locator::Css("main")).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    format!("error box: {error:?}\npage: {main}")
}

/// Waits until an element matching `css` is displayed and its text contains every one of
/// `parts`; returns it.
async fn wait_text(client: &Client, css: &str, parts: &[&str]) -> Element {
    let started = Instant::now();
    loop {
        if let Ok(element) = client.find(Locator::Css(css)).await {
            let text = element.text().await.unwrap_or_default();
            if element.is_displayed().await.unwrap_or(false)
                && parts.iter().all(|p| text.contains(p))
            {
                return element;
            }
        }
        if started.elapsed() > DEADLINE {
            panic!(
                "no {css} showing {parts:?} within {DEADLINE:?}\n{}",
                page_state(client).await
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_element(client: &Client, css: &str) -> Element {
    wait_text(client, css, &[]).await
}

/// Replaces an input's text.
async fn type_into(client: &Client, css: &str, text: &str) {
    let input = wait_element(client, css).await;
    input.clear().await.expect("clear");
    if !text.is_empty() {
        input.send_keys(text).await.expect("send_keys");
    }
}

async fn click(client: &Client, css: &str) {
    wait_element(client, css)
        .await
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

/// Goes to a page of the console by its hash route.
async fn open(client: &Client, base: &str, hash: &str) {
    client
        .goto(&format!("{base}/console/{hash}"))
        .await
        .expect("goto");
}

fn screenshots_dir() -> PathBuf {
    let dir = workspace_root().join("target/browser-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

async fn screenshot(client: &Client, name: &str) -> PathBuf {
    let png = client.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
    let path = screenshots_dir().join(format!("{name}.png"));
    std::fs::write(&path, png).expect("writing the screenshot");
    path
}

/// Counts the page's requests from now on (`window.__requests`).
async fn count_requests(client: &Client) {
    client
        .execute(
            "window.__requests = 0; const f = window.fetch; \
             window.fetch = (...a) => { window.__requests += 1; return f(...a); };",
            vec![],
        )
        .await
        .expect("instrumenting fetch");
}

async fn requests(client: &Client) -> Value {
    client
        .execute("return window.__requests;", vec![])
        .await
        .expect("reading the request count")
}

/// A JSON request to the app (through the wire, as a client would).
async fn call(
    up: &SpinUp,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Value,
) -> WireResponse {
    let auth = auth.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(auth) = auth.as_deref() {
        headers.push(("authorization", auth));
    }
    let body = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    up.request(method, path, &headers, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// The console's answers on the wire: the files with their types and security headers, 404,
/// 405, the redirect of `/console`; and the admin API refusing a cross-origin request.
async fn console_answers(up: &SpinUp) {
    let csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
               connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
    for (method, path, status, content_type) in [
        ("GET", "/console/", 200, "text/html; charset=utf-8"),
        ("HEAD", "/console/", 200, "text/html; charset=utf-8"),
        (
            "GET",
            "/console/console.js",
            200,
            "text/javascript; charset=utf-8",
        ),
        (
            "GET",
            "/console/console.css",
            200,
            "text/css; charset=utf-8",
        ),
        (
            "GET",
            "/console/secrets.txt",
            404,
            "text/plain; charset=utf-8",
        ),
        ("POST", "/console/", 405, "text/plain; charset=utf-8"),
        ("GET", "/console", 308, "text/plain; charset=utf-8"),
    ] {
        let res = up.request(method, path, &[], Vec::new()).await.expect(path);
        let what = format!("{method} {path}");
        assert_eq!(res.status, status, "{what}: {}", res.text());
        assert_eq!(res.header("content-security-policy"), Some(csp), "{what}");
        assert_eq!(res.header("x-frame-options"), Some("DENY"), "{what}");
        assert_eq!(res.header("referrer-policy"), Some("no-referrer"), "{what}");
        assert_eq!(
            res.header("x-content-type-options"),
            Some("nosniff"),
            "{what}"
        );
        assert_eq!(res.header("cache-control"), Some("no-store"), "{what}");
        assert_eq!(
            res.header("x-wxpay-mode"),
            None,
            "{what}: the console reads no variable"
        );
        assert_eq!(res.header("content-type"), Some(content_type), "{what}");
        if method == "HEAD" {
            assert!(res.body.is_empty(), "{what}: a body");
        }
    }
    let page = up
        .request("GET", "/console/", &[], Vec::new())
        .await
        .unwrap();
    assert!(page.text().contains("<script src=\"/console/console.js\""));
    let redirect = up
        .request("GET", "/console", &[], Vec::new())
        .await
        .unwrap();
    assert_eq!(redirect.header("location"), Some("/console/"));
    assert_eq!(
        up.request("POST", "/console/", &[], Vec::new())
            .await
            .unwrap()
            .header("allow"),
        Some("GET, HEAD")
    );

    // The admin API refuses what a page of another origin would send with the token.
    let auth = format!("Bearer {ADMIN_TOKEN}");
    for (name, value) in [
        ("origin", "http://evil.example"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let res = up
            .request(
                "GET",
                "/api/admin/products",
                &[("authorization", &auth), (name, value)],
                Vec::new(),
            )
            .await
            .unwrap();
        assert_eq!(res.status, 403, "{name}: {value}: {}", res.text());
        assert_eq!(
            res.json()["error"]["code"],
            "cross_origin_refused",
            "{name}: {value}"
        );
    }
    // The console's own origin passes.
    let origin = up.base();
    let res = up
        .request(
            "GET",
            "/api/admin/products",
            &[
                ("authorization", &auth),
                ("origin", &origin),
                ("sec-fetch-site", "same-origin"),
            ],
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(res.status, 200, "same origin: {}", res.text());
}

/// A user orders `sku` and pays it through the simulator; returns the order number.
async fn order_and_pay(up: &SpinUp, sku: &str) -> String {
    let login = call(
        up,
        "POST",
        "/api/login",
        None,
        json!({"code": "browser-test-code"}),
    )
    .await;
    assert_eq!(login.status, 200, "login: {}", login.text());
    let token = login.json()["token"].as_str().expect("token").to_owned();
    let order = call(
        up,
        "POST",
        "/api/orders",
        Some(&token),
        json!({"sku": sku, "quantity": 1}),
    )
    .await;
    assert_eq!(order.status, 201, "order: {}", order.text());
    let order = order.json();
    assert_eq!(order["order"]["total_fee"], 3980);
    let order_no = order["order"]["order_no"]
        .as_str()
        .expect("order_no")
        .to_owned();
    let prepay_id = order["pay_params"]["package"]
        .as_str()
        .and_then(|p| p.strip_prefix("prepay_id="))
        .expect("prepay_id")
        .to_owned();
    let paid = call(
        up,
        "POST",
        "/_sim/pay",
        None,
        json!({"prepay_id": prepay_id, "result": "SUCCESS"}),
    )
    .await;
    assert_eq!(paid.status, 200, "pay: {}", paid.text());
    let status = call(
        up,
        "GET",
        &format!("/api/orders/{order_no}"),
        Some(&token),
        Value::Null,
    )
    .await;
    assert_eq!(status.json()["status"], "PAID", "{}", status.text());
    order_no
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merchant_console_in_headless_chromium() {
    const TEST: &str = "merchant_console_in_headless_chromium";
    let Some(spin) = spin_or_skip(TEST) else {
        return;
    };
    let Some((chromium, chromedriver)) = found_or_skip(
        TEST,
        browser(),
        "install chromium and chromium-driver to run it",
    ) else {
        return;
    };
    let manifest = workspace_root().join("spin.toml");
    spin_build(&spin, &manifest).expect("spin build");
    let up = SpinUp::start(&spin, &manifest, &[]).await.expect("spin up");
    let base = up.base();

    console_answers(&up).await;

    let driver = ChromeDriver::start(&chromedriver);
    let client = driver.session(&chromium).await;

    // Sign in: the simulator banner is up, a wrong token shows the API's code and message.
    open(&client, &base, "").await;
    wait_element(&client, "#token").await;
    wait_text(&client, "#sim-banner", &["SIMULATOR", "no real payment"]).await;
    type_into(&client, "#token", "not-the-admin-token").await;
    click(&client, "#sign-in").await;
    wait_text(&client, "#error .error-code", &["unauthorized"]).await;
    let message = wait_element(&client, "#error .error-message")
        .await
        .text()
        .await
        .unwrap();
    assert!(!message.trim().is_empty(), "the error's message is shown");
    screenshot(&client, "1-sign-in-refused").await;
    let stored = client
        .execute("return sessionStorage.length;", vec![])
        .await
        .unwrap();
    assert_eq!(stored, json!(0), "a refused token is not kept");
    type_into(&client, "#token", ADMIN_TOKEN).await;
    click(&client, "#sign-in").await;
    wait_element(&client, "#orders").await;
    wait_text(&client, "#sim-banner", &["SIMULATOR"]).await;

    // The token is in this tab's session storage only: not in the URL, not in a cookie.
    let kept = client
        .execute(
            "return [sessionStorage.getItem('wxpay-admin-token'), localStorage.length, document.cookie];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(kept, json!([ADMIN_TOKEN, 0, ""]));
    assert!(
        !client
            .current_url()
            .await
            .unwrap()
            .as_str()
            .contains(ADMIN_TOKEN)
    );

    // The page's amount rules, exact in fen.
    let parsed = client
        .execute(
            "return ['12.34', '39.8', '12', '0.01', '1.234', '-1', 'abc', '', '01', '1e3', '0', '0.00', ' 7.50 ']\
             .map(window.wxpayConsole.parseYuan);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        parsed,
        json!([
            1234, 3980, 1200, 1, null, null, null, null, null, null, null, null, 750
        ])
    );

    // Catalog: an invalid price is refused in the page; a product is added at ¥39.80.
    open(&client, &base, "#/catalog").await;
    wait_element(&client, "#products").await;
    count_requests(&client).await;
    type_into(&client, "#new-sku", "tea").await;
    type_into(&client, "#new-name", "Oolong tea").await;
    type_into(&client, "#new-price", "1.234").await;
    click(&client, "#add-button").await;
    wait_text(&client, "#error", &["invalid_price", "1.234"]).await;
    assert_eq!(
        requests(&client).await,
        json!(0),
        "an invalid price was sent"
    );
    type_into(&client, "#new-price", "39.80").await;
    click(&client, "#add-button").await;
    wait_text(&client, "tr[data-sku=tea] .price", &["39.80"]).await;
    wait_text(&client, "#notice", &["tea saved at ¥39.80"]).await;
    let product = call(
        &up,
        "GET",
        "/api/admin/products/tea",
        Some(ADMIN_TOKEN),
        Value::Null,
    )
    .await;
    assert_eq!(
        product.json(),
        json!({"sku": "tea", "name": "Oolong tea", "price": 3980, "active": true})
    );

    // A customer buys it (through the API and the simulator's payment).
    let order_no = order_and_pay(&up, "tea").await;

    // Orders: the paid order is among the most recent ones.
    open(&client, &base, "#/orders").await;
    let row = format!("tr[data-order='{order_no}']");
    wait_text(&client, &row, &[order_no.as_str(), "PAID", "39.80"]).await;
    screenshot(&client, "2-orders").await;

    // Found by its number.
    type_into(&client, "#search-order", &order_no).await;
    click(&client, "#search-button").await;
    wait_text(&client, "#order-no", &[order_no.as_str()]).await;
    wait_text(&client, "#order-status", &["PAID"]).await;
    let transaction = wait_element(&client, "#order-transaction")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        transaction.len() > 8,
        "the WeChat transaction id is shown: {transaction:?}"
    );
    wait_text(&client, "#refund", &["At most ¥39.80 is left"]).await;
    let prefilled = wait_element(&client, "#refund-amount")
        .await
        .prop("value")
        .await
        .unwrap();
    assert_eq!(
        prefilled.as_deref(),
        Some("39.80"),
        "the refund form holds what is left"
    );

    // Invalid amounts are refused in the page: no confirmation asked, no request made.
    count_requests(&client).await;
    for bad in ["1.234", "-1", "abc", "", "0", "40.00"] {
        type_into(&client, "#refund-amount", bad).await;
        click(&client, "#refund-button").await;
        let code = if bad == "40.00" {
            "refund_exceeds_paid"
        } else {
            "invalid_amount"
        };
        wait_text(&client, "#error", &[code, "nothing was sent"]).await;
    }
    assert!(
        client.get_alert_text().await.is_err(),
        "no confirmation for an invalid amount"
    );
    assert_eq!(
        requests(&client).await,
        json!(0),
        "an invalid amount was sent"
    );

    // A partial refund of ¥10.00, confirmed: PROCESSING.
    type_into(&client, "#refund-amount", "10.00").await;
    type_into(&client, "#refund-reason", "one cup missing").await;
    click(&client, "#refund-button").await;
    let started = Instant::now();
    let confirm = loop {
        match client.get_alert_text().await {
            Ok(text) => break text,
            Err(_) if started.elapsed() < DEADLINE => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("no confirmation asked: {e}"),
        }
    };
    assert!(
        confirm.contains("¥10.00") && confirm.contains(&order_no),
        "{confirm}"
    );
    client.accept_alert().await.expect("confirming the refund");
    wait_text(&client, "#notice", &["¥10.00", "PROCESSING"]).await;
    let refund_row = wait_text(
        &client,
        "tr[data-refund]",
        &["10.00", "PROCESSING", "one cup missing"],
    )
    .await;
    let refund_no = refund_row
        .attr("data-refund")
        .await
        .unwrap()
        .expect("refund_no");
    // Its ¥10.00 is held while it is PROCESSING.
    let left = wait_element(&client, "#refund-amount")
        .await
        .prop("value")
        .await
        .unwrap();
    assert_eq!(left.as_deref(), Some("29.80"));

    // WeChat Pay settles it; after a reload the page shows SUCCESS.
    let settled = call(
        &up,
        "POST",
        "/_sim/refund",
        None,
        json!({"refund_no": refund_no, "result": "SUCCESS"}),
    )
    .await;
    assert_eq!(settled.status, 200, "settle: {}", settled.text());
    click(&client, "#reload").await;
    wait_text(
        &client,
        &format!("tr[data-refund='{refund_no}']"),
        &["10.00", "SUCCESS"],
    )
    .await;
    wait_text(&client, "#order-refunded", &["¥10.00"]).await;
    wait_text(&client, "#order-status", &["PAID"]).await;
    wait_text(&client, "#events", &["PAID"]).await;
    // Tall enough for the refunds and the events.
    client
        .set_window_size(1280, 1500)
        .await
        .expect("window size");
    let order_png = screenshot(&client, "3-order").await;
    client
        .set_window_size(1280, 1000)
        .await
        .expect("window size");
    if std::env::var_os("SPIN_WXPAY_UPDATE_SCREENSHOT").is_some() {
        std::fs::copy(&order_png, workspace_root().join("docs/console.png"))
            .expect("docs/console.png");
    }

    // Catalog: a new price, then the product deactivated.
    open(&client, &base, "#/catalog").await;
    type_into(&client, "tr[data-sku=tea] .price-input", "42").await;
    click(&client, "tr[data-sku=tea] .save-price").await;
    wait_text(&client, "tr[data-sku=tea] .price", &["42.00"]).await;
    wait_text(&client, "#notice", &["tea now costs ¥42.00"]).await;
    screenshot(&client, "4-catalog").await;
    click(&client, "tr[data-sku=tea] .deactivate").await;
    wait_text(&client, "tr[data-sku=tea] .active", &["no"]).await;
    let product = call(
        &up,
        "GET",
        "/api/admin/products/tea",
        Some(ADMIN_TOKEN),
        Value::Null,
    )
    .await;
    assert_eq!(
        product.json(),
        json!({"sku": "tea", "name": "Oolong tea", "price": 4200, "active": false})
    );

    // Twenty-one more orders: the recent orders come 20 a page, the paid one on the second.
    // Order numbers start with the second they were made in (the listing's order): these come a
    // second after the paid one whatever the pace.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let cake = call(
        &up,
        "PUT",
        "/api/admin/products/cake",
        Some(ADMIN_TOKEN),
        json!({"name": "Cake", "price": 1250}),
    )
    .await;
    assert_eq!(cake.status, 200, "{}", cake.text());
    let login = call(
        &up,
        "POST",
        "/api/login",
        None,
        json!({"code": "browser-test-pages"}),
    )
    .await;
    let token = login.json()["token"].as_str().expect("token").to_owned();
    for _ in 0..21 {
        let order = call(
            &up,
            "POST",
            "/api/orders",
            Some(&token),
            json!({"sku": "cake", "quantity": 1}),
        )
        .await;
        assert_eq!(order.status, 201, "{}", order.text());
    }
    open(&client, &base, "#/orders").await;
    wait_text(&client, "#recent h2", &["Recent orders"]).await;
    let rows = client
        .find_all(Locator::Css("#orders tr[data-order]"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 20, "a page of 20");
    assert!(
        client.find(Locator::Css(&row)).await.is_err(),
        "the oldest order is on page 2"
    );
    click(&client, "#older").await;
    wait_text(&client, "#recent h2", &["page 2"]).await;
    wait_text(&client, &row, &[order_no.as_str(), "PAID", "10.00"]).await;
    let rows = client
        .find_all(Locator::Css("#orders tr[data-order]"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 2, "21 + 1 orders: 2 on page 2");
    assert!(
        client.find(Locator::Css("#older")).await.is_err(),
        "no page 3"
    );
    click(&client, "#newer").await;
    wait_element(&client, "#older").await;
    wait_text(&client, "#orders tbody", &["12.50", "AWAITING_PAYMENT"]).await;

    // Reconcile: the counts it returns. The 21 orders await payment: each is asked about, none
    // paid nor expired; the refund was settled by its notification.
    open(&client, &base, "#/reconcile").await;
    click(&client, "#run-reconcile").await;
    wait_element(&client, "#reconcile-counts").await;
    for (key, want) in [
        ("checked", "21"),
        ("paid", "0"),
        ("closed", "0"),
        ("refunds_checked", "0"),
        ("complete", "yes"),
    ] {
        let shown = wait_element(&client, &format!("[data-count={key}]"))
            .await
            .text()
            .await
            .unwrap();
        assert_eq!(shown, want, "reconcile count {key}");
    }
    wait_text(&client, "#sim-banner", &["SIMULATOR"]).await;
    screenshot(&client, "5-reconcile").await;

    // Signing out forgets the token.
    click(&client, "#sign-out").await;
    wait_element(&client, "#token").await;
    let stored = client
        .execute("return sessionStorage.length;", vec![])
        .await
        .unwrap();
    assert_eq!(stored, json!(0));

    // A token the API refuses mid-session (the deployment's was changed): the page signs out
    // and says why, instead of showing an empty page.
    client
        .execute(
            "sessionStorage.setItem('wxpay-admin-token', 'a-stale-admin-token');",
            vec![],
        )
        .await
        .unwrap();
    open(&client, &base, "#/catalog").await;
    wait_text(&client, "#error .error-code", &["unauthorized"]).await;
    wait_element(&client, "#token").await;
    assert!(client.find(Locator::Css("#products")).await.is_err());
    let stored = client
        .execute("return sessionStorage.length;", vec![])
        .await
        .unwrap();
    assert_eq!(stored, json!(0), "a refused token is forgotten");

    client.close().await.expect("closing the browser");
    drop(driver);

    let output = up.output();
    for bad in ["Component error", "panicked", "error while executing"] {
        assert!(!output.contains(bad), "spin output has {bad:?}:\n{output}");
    }
    let _ = writeln!(
        std::io::stderr(),
        "browser screenshots in {}",
        screenshots_dir().display()
    );
}
