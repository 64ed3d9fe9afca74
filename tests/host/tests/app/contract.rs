//! The HTTP contract, `docs/openapi.yaml`, held against the live app: every route is driven in
//! the test host (APIv2 against the fake WeChat of `support.rs`, APIv3 and refunds against
//! `fake_v3.rs`), and every answer — successes and a representative set of errors per route —
//! must be documented for its path, method and status, with a body that validates against the
//! schema given there (JSON Schema 2020-12; an error's `code` is an `enum` per route and
//! status). The contract must also have no untested operation: each path + method of the file
//! is exercised here.

use std::collections::BTreeSet;
use std::sync::Mutex;

use http::Request;
use serde_json::{Value, json};
use spin_test_host::{KvFailure, TestApp, TestResponse};
use wxpay::v2::sign::SignType;

use crate::fake_v3::{KeyMode, lock, notify_request};
use crate::support::{ADMIN_TOKEN, Fault, NOTIFY_PATH, World};
use crate::v3::V3World;

/// The contract, read at compile time so that editing it rebuilds the test.
const OPENAPI: &str = include_str!("../../../../docs/openapi.yaml");

/// The HTTP methods an OpenAPI path item can hold operations for.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

const REFUND_NOTIFY_PATH: &str = "/api/wxpay/refund-notify";

/// `docs/openapi.yaml`, and what has been checked against it.
pub struct Contract {
    doc: Value,
    /// (path template, METHOD, status) of every answer that passed.
    seen: Mutex<BTreeSet<(String, String, u16)>>,
}

impl Contract {
    pub fn load() -> Contract {
        Contract::parse(OPENAPI)
    }

    fn parse(yaml: &str) -> Contract {
        let doc: Value = serde_norway::from_str(yaml).expect("docs/openapi.yaml is YAML");
        assert!(
            doc["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.1")),
            "docs/openapi.yaml must be OpenAPI 3.1"
        );
        assert!(doc["paths"].is_object(), "docs/openapi.yaml has no paths");
        Contract {
            doc,
            seen: Mutex::new(BTreeSet::new()),
        }
    }

    /// The path template of `docs/openapi.yaml` that `path` (query ignored) matches.
    fn template_of(&self, path: &str) -> Option<String> {
        let path = path.split(['?', '#']).next().unwrap_or("");
        let segments: Vec<&str> = path.split('/').collect();
        self.doc["paths"]
            .as_object()?
            .keys()
            .find(|template| {
                let parts: Vec<&str> = template.split('/').collect();
                parts.len() == segments.len()
                    && parts.iter().zip(&segments).all(|(part, segment)| {
                        (part.starts_with('{') && part.ends_with('}') && !segment.is_empty())
                            || part == segment
                    })
            })
            .cloned()
    }

    /// Follows a local `$ref` (`#/components/responses/...`).
    fn resolve<'a>(&'a self, mut value: &'a Value) -> Result<&'a Value, String> {
        while let Some(reference) = value.get("$ref").and_then(Value::as_str) {
            let pointer = reference
                .strip_prefix('#')
                .ok_or_else(|| format!("only local $refs are followed: {reference}"))?;
            value = self
                .doc
                .pointer(pointer)
                .ok_or_else(|| format!("$ref {reference} points nowhere"))?;
        }
        Ok(value)
    }

    /// Every operation of the contract: (path template, METHOD).
    fn operations(&self) -> BTreeSet<(String, String)> {
        let mut all = BTreeSet::new();
        for (template, item) in self.doc["paths"].as_object().into_iter().flatten() {
            for method in METHODS {
                if item.get(method).is_some() {
                    all.insert((template.clone(), method.to_ascii_uppercase()));
                }
            }
        }
        all
    }

    /// Whether `res`, the answer to `method path`, is what the contract says: a documented
    /// status for the operation (or the path item's `x-method-not-allowed` for a method it
    /// has no operation for), a documented media type, and a body valid against its schema
    /// (an empty body where no content is documented).
    pub fn check(&self, method: &str, path: &str, res: &TestResponse) -> Result<(), String> {
        let status = res.status.as_u16();
        let template = self
            .template_of(path)
            .ok_or_else(|| format!("{method} {path}: no such path in docs/openapi.yaml"))?;
        let item = &self.doc["paths"][&template];
        let response = match item.get(method.to_ascii_lowercase()) {
            Some(operation) => operation["responses"]
                .get(status.to_string())
                .ok_or_else(|| format!("{method} {template}: status {status} is not documented"))?,
            None => {
                if status != 405 {
                    return Err(format!(
                        "{method} {template}: no such operation, yet answered {status} (not 405)"
                    ));
                }
                item.get("x-method-not-allowed").ok_or_else(|| {
                    format!("{template}: no x-method-not-allowed response documented")
                })?
            }
        };
        let response = self.resolve(response)?;
        let Some(content) = response.get("content").and_then(Value::as_object) else {
            if !res.body.is_empty() {
                return Err(format!(
                    "{method} {template} {status}: documented without a body, got {:?}",
                    res.text()
                ));
            }
            return Ok(());
        };
        let media_type = res
            .header("content-type")
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let media = content.get(&media_type).ok_or_else(|| {
            format!(
                "{method} {template} {status}: Content-Type {media_type:?} is not documented \
                 (documented: {:?})",
                content.keys().collect::<Vec<_>>()
            )
        })?;
        let instance = if media_type == "application/json" || media_type.ends_with("+json") {
            serde_json::from_slice(&res.body)
                .map_err(|e| format!("{method} {template} {status}: the body is not JSON ({e})"))?
        } else {
            // XML and other text bodies are validated as one JSON string.
            Value::String(res.text())
        };
        let schema = media
            .get("schema")
            .ok_or_else(|| format!("{method} {template} {status}: no schema for {media_type}"))?;
        let errors = self.validate(schema, &instance)?;
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{method} {template} {status}: the body does not match docs/openapi.yaml:\n  {}",
                errors.join("\n  ")
            ))
        }
    }

    /// Validates `instance` against `schema` (a schema of the contract): the contract's
    /// `components` travel along, so that `#/components/schemas/...` resolves.
    fn validate(&self, schema: &Value, instance: &Value) -> Result<Vec<String>, String> {
        let whole = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": self.doc["components"],
            "allOf": [schema],
        });
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&whole)
            .map_err(|e| format!("docs/openapi.yaml: a schema does not compile: {e}"))?;
        Ok(validator
            .iter_errors(instance)
            .map(|e| format!("at {:?}: {e}", e.instance_path().to_string()))
            .collect())
    }

    /// [`Contract::check`], panicking with the body; records what passed.
    pub fn assert(&self, method: &str, path: &str, res: &TestResponse) {
        if let Err(e) = self.check(method, path, res) {
            panic!("{e}\nthe answer: {} {}", res.status, res.text());
        }
        let template = self.template_of(path).expect("checked");
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).insert((
            template,
            method.to_owned(),
            res.status.as_u16(),
        ));
    }

    /// Panics unless every operation of the contract was answered and checked at least once;
    /// prints the documented statuses no answer showed (those a test cannot provoke: store
    /// failures, timeouts, ...).
    pub fn assert_every_operation_exercised(&self) {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let exercised: BTreeSet<(String, String)> = seen
            .iter()
            .map(|(t, m, _)| (t.clone(), m.clone()))
            .collect();
        let missing: Vec<_> = self.operations().difference(&exercised).cloned().collect();
        assert!(
            missing.is_empty(),
            "operations of docs/openapi.yaml never exercised: {missing:?}"
        );
        let mut unseen = Vec::new();
        for (template, method) in self.operations() {
            let operation = &self.doc["paths"][&template][method.to_ascii_lowercase()];
            for status in operation["responses"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(s, _)| s)
            {
                let status: u16 = status.parse().expect("numeric status");
                if !seen.contains(&(template.clone(), method.clone(), status)) {
                    unseen.push(format!("{method} {template} {status}"));
                }
            }
        }
        eprintln!(
            "contract: {} answers checked; documented statuses not provoked: {}",
            seen.len(),
            unseen.join(", ")
        );
    }
}

/// The app, with every answer checked against the contract.
struct Checked<'a> {
    contract: &'a Contract,
    app: &'a TestApp,
}

impl Checked<'_> {
    /// Sends `req`; the answer, which must be as documented.
    async fn call(&self, req: Request<String>) -> TestResponse {
        let method = req.method().to_string();
        let path = req.uri().path().to_owned();
        let res = self.app.request(req).await.expect("the app answers");
        self.contract.assert(&method, &path, &res);
        res
    }

    /// [`Checked::call`] that must answer `status`; the body as JSON (`Null` if none).
    async fn ok(&self, req: Request<String>, status: u16) -> Value {
        let res = self.call(req).await;
        assert_eq!(res.status, status, "{}", res.text());
        if res.body.is_empty() {
            Value::Null
        } else {
            res.json().unwrap()
        }
    }

    /// [`Checked::call`] that must answer the error `status` `code`.
    async fn error(&self, req: Request<String>, status: u16, code: &str) {
        let res = self.call(req).await;
        assert_eq!(res.status, status, "{}", res.text());
        let body: Value = res.json().unwrap();
        assert_eq!(body["error"]["code"], code, "{}", res.text());
    }
}

/// A request: `bearer` as `Authorization: Bearer`, `content_type` if any, `body`.
fn request(
    method: &str,
    path: &str,
    bearer: Option<&str>,
    content_type: Option<&str>,
    body: impl Into<String>,
) -> Request<String> {
    let mut b = Request::builder().method(method).uri(path);
    if let Some(ct) = content_type {
        b = b.header("content-type", ct);
    }
    if let Some(token) = bearer {
        b = b.header("authorization", format!("Bearer {token}"));
    }
    b.body(body.into()).unwrap()
}

/// A JSON request.
fn json_req(method: &str, path: &str, bearer: Option<&str>, body: Value) -> Request<String> {
    request(
        method,
        path,
        bearer,
        Some("application/json"),
        body.to_string(),
    )
}

/// A request without a body.
fn bare(method: &str, path: &str, bearer: Option<&str>) -> Request<String> {
    request(method, path, bearer, None, "")
}

const ADMIN: Option<&str> = Some(ADMIN_TOKEN);
const UNIFIED: &str = "/pay/unifiedorder";

#[tokio::test(flavor = "multi_thread")]
async fn every_route_answers_as_the_contract_says() {
    let contract = Contract::load();

    // ---- APIv2 (MD5) against the fake WeChat --------------------------------------------
    let w = World::new().await;
    let c = Checked {
        contract: &contract,
        app: &w.app,
    };

    // GET /api/health
    let health = c.ok(bare("GET", "/api/health", None), 200).await;
    assert_eq!(health["config_ok"], true, "{health}");
    assert_eq!(health["mode"], "live");
    assert_eq!(health["api_version"], "v2");
    c.error(bare("POST", "/api/health", None), 405, "method_not_allowed")
        .await;

    // POST /api/login
    let login = |code: &str| json_req("POST", "/api/login", None, json!({ "code": code }));
    let alice = c.ok(login("u-alice-1"), 200).await;
    let alice = alice["token"].as_str().unwrap().to_owned();
    let bob = c.ok(login("u-bob-1"), 200).await;
    let bob = bob["token"].as_str().unwrap().to_owned();
    c.error(
        json_req("POST", "/api/login", None, json!({})),
        400,
        "invalid_code",
    )
    .await;
    c.error(login("not a code!"), 400, "invalid_code").await;
    c.error(
        request("POST", "/api/login", None, Some("application/json"), "{"),
        400,
        "invalid_json",
    )
    .await;
    c.error(login("used"), 401, "invalid_code").await;
    c.error(login("busy"), 503, "wechat_busy").await;
    c.error(
        request("POST", "/api/login", None, Some("text/plain"), "code=1"),
        415,
        "unsupported_media_type",
    )
    .await;
    c.error(
        request(
            "POST",
            "/api/login",
            None,
            Some("application/json"),
            format!("{{\"code\": \"{}\"}}", "a".repeat(70 * 1024)),
        ),
        413,
        "body_too_large",
    )
    .await;
    c.error(bare("GET", "/api/login", None), 405, "method_not_allowed")
        .await;

    // PUT / GET / DELETE /api/admin/products/{sku}, GET /api/admin/products
    let product = c
        .ok(
            json_req(
                "PUT",
                "/api/admin/products/tea",
                ADMIN,
                json!({"name": "乌龙茶 Oolong", "price": 199}),
            ),
            200,
        )
        .await;
    assert_eq!(
        product,
        json!({"sku": "tea", "name": "乌龙茶 Oolong", "price": 199, "active": true})
    );
    let put = |sku: &str, body: Value| {
        json_req("PUT", &format!("/api/admin/products/{sku}"), ADMIN, body)
    };
    c.ok(
        put("gone", json!({"name": "Gone", "price": 5, "active": false})),
        200,
    )
    .await;
    c.error(
        put("tea", json!({"name": "Tea", "price": 0})),
        400,
        "invalid_price",
    )
    .await;
    c.error(
        put("tea", json!({"name": "Tea", "price": 1.5})),
        400,
        "invalid_price",
    )
    .await;
    c.error(
        put("tea", json!({"name": " ", "price": 1})),
        400,
        "invalid_name",
    )
    .await;
    c.error(
        put("tea", json!({"name": "Tea", "price": 1, "active": "yes"})),
        400,
        "invalid_active",
    )
    .await;
    c.error(
        put("a.b", json!({"name": "Tea", "price": 1})),
        400,
        "invalid_sku",
    )
    .await;
    c.error(
        request(
            "PUT",
            "/api/admin/products/tea",
            ADMIN,
            Some("application/json"),
            "[]",
        ),
        400,
        "invalid_json",
    )
    .await;
    c.error(
        request(
            "PUT",
            "/api/admin/products/tea",
            ADMIN,
            Some("text/plain"),
            "x",
        ),
        415,
        "unsupported_media_type",
    )
    .await;
    c.error(
        json_req(
            "PUT",
            "/api/admin/products/tea",
            Some("not-the-admin-token"),
            json!({"name": "Tea", "price": 1}),
        ),
        401,
        "unauthorized",
    )
    .await;
    let listed = c.ok(bare("GET", "/api/admin/products", ADMIN), 200).await;
    let skus: Vec<&str> = listed["products"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["sku"].as_str().unwrap())
        .collect();
    assert_eq!(skus, ["cake", "gone", "tea"]);
    c.error(
        bare("GET", "/api/admin/products", None),
        401,
        "unauthorized",
    )
    .await;
    c.error(
        bare("DELETE", "/api/admin/products", ADMIN),
        405,
        "method_not_allowed",
    )
    .await;
    let got = c
        .ok(bare("GET", "/api/admin/products/cake", ADMIN), 200)
        .await;
    assert_eq!(got["price"], 2500);
    c.error(
        bare("GET", "/api/admin/products/nope", ADMIN),
        404,
        "unknown_sku",
    )
    .await;
    c.error(
        bare("GET", "/api/admin/products/cake", None),
        401,
        "unauthorized",
    )
    .await;
    c.ok(bare("DELETE", "/api/admin/products/gone", ADMIN), 204)
        .await;
    c.error(
        bare("DELETE", "/api/admin/products/gone", ADMIN),
        404,
        "unknown_sku",
    )
    .await;
    c.error(
        bare("DELETE", "/api/admin/products/cake", None),
        401,
        "unauthorized",
    )
    .await;
    c.error(
        bare("POST", "/api/admin/products/cake", ADMIN),
        405,
        "method_not_allowed",
    )
    .await;

    // POST /api/orders
    let order = |token: Option<&str>, body: Value| json_req("POST", "/api/orders", token, body);
    let tea = json!({"sku": "tea", "quantity": 2});
    let created = c.ok(order(Some(&alice), tea.clone()), 201).await;
    assert_eq!(created["order"]["status"], "AWAITING_PAYMENT");
    assert_eq!(created["order"]["total_fee"], 398);
    assert_eq!(created["pay_params"]["signType"], "MD5");
    let no = created["order"]["order_no"].as_str().unwrap().to_owned();
    c.error(order(None, tea.clone()), 401, "missing_token")
        .await;
    c.error(
        order(Some("forged.token"), tea.clone()),
        401,
        "invalid_token",
    )
    .await;
    let mine = Some(alice.as_str());
    c.error(
        order(mine, json!({"sku": "tea", "quantity": 0})),
        400,
        "invalid_quantity",
    )
    .await;
    c.error(
        order(mine, json!({"sku": "tea", "quantity": "2"})),
        400,
        "invalid_quantity",
    )
    .await;
    c.error(order(mine, json!({"quantity": 1})), 400, "invalid_sku")
        .await;
    c.error(
        order(mine, json!({"sku": "tea", "quantity": 1, "attach": 5})),
        400,
        "invalid_attach",
    )
    .await;
    c.error(
        order(mine, json!({"sku": "nope", "quantity": 1})),
        404,
        "unknown_sku",
    )
    .await;
    c.error(
        request("POST", "/api/orders", mine, Some("application/json"), "1"),
        400,
        "invalid_json",
    )
    .await;
    c.error(
        request("POST", "/api/orders", mine, Some("application/xml"), "<x/>"),
        415,
        "unsupported_media_type",
    )
    .await;
    w.wechat.fault(UNIFIED, Fault::ErrCode("NOAUTH"), 1);
    c.error(order(mine, tea.clone()), 502, "wechat_refused")
        .await;
    w.wechat.fault(UNIFIED, Fault::BadSignature, 1);
    c.error(order(mine, tea.clone()), 502, "wechat_reply_untrusted")
        .await;
    w.wechat.fault(UNIFIED, Fault::SystemError, 3);
    c.error(order(mine, tea.clone()), 503, "wechat_busy").await;
    c.error(bare("GET", "/api/orders", mine), 405, "method_not_allowed")
        .await;

    // An order of the other mode (the same record, renumbered, marked simulator), and one
    // whose payment window has passed.
    let kv = w.app.kv("default");
    let other_mode = format!("{}x", &no[..no.len() - 1]);
    let mut record = w.stored_json(&no);
    record["order_no"] = other_mode.clone().into();
    record["mode"] = "simulator".into();
    kv.set(&format!("order:{other_mode}"), record.to_string());
    let expired_no = {
        let created = c.ok(order(mine, tea.clone()), 201).await;
        let expired_no = created["order"]["order_no"].as_str().unwrap().to_owned();
        let mut record = w.stored_json(&expired_no);
        record["prepay_expires_at"] = 1.into();
        kv.set(&format!("order:{expired_no}"), record.to_string());
        expired_no
    };

    // GET /api/orders/{order_no}
    let path = format!("/api/orders/{no}");
    let shown = c.ok(bare("GET", &path, mine), 200).await;
    assert_eq!(shown["status"], "AWAITING_PAYMENT");
    c.error(bare("GET", &path, Some(&bob)), 404, "order_not_found")
        .await;
    c.error(
        bare("GET", "/api/orders/nope", mine),
        404,
        "order_not_found",
    )
    .await;
    c.error(bare("GET", &path, None), 401, "missing_token")
        .await;
    c.error(
        bare("GET", &format!("/api/orders/{other_mode}"), mine),
        409,
        "mode_mismatch",
    )
    .await;
    c.error(bare("DELETE", &path, mine), 405, "method_not_allowed")
        .await;

    // POST /api/orders/{order_no}/pay-params
    let resign = format!("/api/orders/{no}/pay-params");
    let params = c.ok(bare("POST", &resign, mine), 200).await;
    assert_eq!(params["package"], created["pay_params"]["package"]);
    c.error(bare("POST", &resign, Some(&bob)), 404, "order_not_found")
        .await;
    c.error(bare("POST", &resign, None), 401, "missing_token")
        .await;
    c.error(
        bare(
            "POST",
            &format!("/api/orders/{expired_no}/pay-params"),
            mine,
        ),
        410,
        "prepay_expired",
    )
    .await;
    c.error(
        bare(
            "POST",
            &format!("/api/orders/{other_mode}/pay-params"),
            mine,
        ),
        409,
        "mode_mismatch",
    )
    .await;
    c.error(bare("GET", &resign, mine), 405, "method_not_allowed")
        .await;

    // POST /api/wxpay/notify (APIv2 XML)
    let xml = |path: &str, body: String| request("POST", path, None, Some("text/xml"), body);
    let paid = w.wechat.pay(&no, SignType::Md5);
    let forged = paid.replacen("<sign><![CDATA[", "<sign><![CDATA[0", 1);
    assert_ne!(forged, paid);
    let res = c.call(xml(NOTIFY_PATH, forged)).await;
    assert!(res.text().contains("FAIL"), "{}", res.text());
    let res = c.call(xml(NOTIFY_PATH, paid.clone())).await;
    assert_eq!(res.text(), wxpay::v2::notify::SUCCESS_REPLY);
    let res = c.call(xml(NOTIFY_PATH, "<xml><a>".into())).await;
    assert!(res.text().contains("FAIL"), "{}", res.text());
    c.error(bare("GET", NOTIFY_PATH, None), 405, "method_not_allowed")
        .await;
    let shown = c.ok(bare("GET", &path, mine), 200).await;
    assert_eq!(shown["status"], "PAID", "{shown}");
    assert!(shown["transaction_id"].is_string() && shown["paid_at"].is_string());
    c.error(bare("POST", &resign, mine), 409, "not_awaiting_payment")
        .await;

    // POST /api/wxpay/refund-notify (APIv2 XML: a req_info that does not decrypt)
    let undecryptable = format!(
        "<xml><return_code>SUCCESS</return_code><appid>{}</appid><mch_id>{}</mch_id>\
         <nonce_str>abc</nonce_str><req_info>AAAA</req_info></xml>",
        crate::support::APPID,
        crate::support::MCH_ID
    );
    let res = c.call(xml(REFUND_NOTIFY_PATH, undecryptable)).await;
    assert!(res.text().contains("FAIL"), "{}", res.text());
    c.error(
        bare("PUT", REFUND_NOTIFY_PATH, None),
        405,
        "method_not_allowed",
    )
    .await;

    // GET /api/admin/orders (the listing)
    let page = c
        .ok(bare("GET", "/api/admin/orders?limit=2", ADMIN), 200)
        .await;
    assert_eq!(page["orders"].as_array().map(Vec::len), Some(2), "{page}");
    let next = page["next"]
        .as_str()
        .expect("more than two orders")
        .to_owned();
    c.ok(
        bare("GET", &format!("/api/admin/orders?before={next}"), ADMIN),
        200,
    )
    .await;
    c.error(
        bare("GET", "/api/admin/orders?limit=0", ADMIN),
        400,
        "invalid_limit",
    )
    .await;
    c.error(
        bare("GET", "/api/admin/orders?before=a.b", ADMIN),
        400,
        "invalid_before",
    )
    .await;
    c.error(bare("GET", "/api/admin/orders", None), 401, "unauthorized")
        .await;
    let mut foreign = bare("GET", "/api/admin/orders", ADMIN);
    foreign.headers_mut().insert(
        "origin",
        http::HeaderValue::from_static("https://evil.example"),
    );
    c.error(foreign, 403, "cross_origin_refused").await;

    // GET /api/admin/orders/{order_no}
    let admin_path = format!("/api/admin/orders/{no}");
    let record = c.ok(bare("GET", &admin_path, ADMIN), 200).await;
    assert_eq!(record["status"], "PAID");
    assert!(!record["events"].as_array().unwrap().is_empty(), "{record}");
    c.error(bare("GET", &admin_path, None), 401, "unauthorized")
        .await;
    c.error(
        bare("GET", "/api/admin/orders/20260101000000ffffff", ADMIN),
        404,
        "order_not_found",
    )
    .await;
    c.error(
        bare("GET", &format!("/api/admin/orders/{other_mode}"), ADMIN),
        409,
        "mode_mismatch",
    )
    .await;
    c.error(
        bare("DELETE", &admin_path, ADMIN),
        405,
        "method_not_allowed",
    )
    .await;

    // POST /api/admin/reconcile
    let report = c.ok(bare("POST", "/api/admin/reconcile", ADMIN), 200).await;
    assert_eq!(report["complete"], true, "{report}");
    c.error(
        bare("POST", "/api/admin/reconcile", None),
        401,
        "unauthorized",
    )
    .await;
    c.error(
        bare("GET", "/api/admin/reconcile", ADMIN),
        405,
        "method_not_allowed",
    )
    .await;

    // A refund of an order of the other mode is refused before anything is recorded.
    c.error(
        json_req(
            "POST",
            &format!("/api/admin/orders/{other_mode}/refunds"),
            ADMIN,
            json!({"amount": 1}),
        ),
        409,
        "mode_mismatch",
    )
    .await;
    // The store failing: 503 `store_unavailable` (the backend's text only in the log). A
    // record that does not parse: 500 `record_unreadable`.
    kv.fail_gets_matching("", KvFailure::Always);
    kv.fail_sets_matching("", KvFailure::Always);
    kv.fail_get_keys(KvFailure::Always);
    for (method, path, bearer, body) in [
        ("POST", "/api/orders".to_owned(), mine, tea.to_string()),
        ("GET", path.clone(), mine, String::new()),
        ("POST", resign.clone(), mine, String::new()),
        (
            "GET",
            "/api/admin/products".to_owned(),
            ADMIN,
            String::new(),
        ),
        (
            "GET",
            "/api/admin/products/tea".to_owned(),
            ADMIN,
            String::new(),
        ),
        (
            "PUT",
            "/api/admin/products/tea".to_owned(),
            ADMIN,
            json!({"name": "Tea", "price": 1}).to_string(),
        ),
        (
            "DELETE",
            "/api/admin/products/tea".to_owned(),
            ADMIN,
            String::new(),
        ),
        ("GET", admin_path.clone(), ADMIN, String::new()),
        (
            "POST",
            format!("/api/admin/orders/{no}/refunds"),
            ADMIN,
            json!({"amount": 1}).to_string(),
        ),
        (
            "POST",
            "/api/admin/reconcile".to_owned(),
            ADMIN,
            String::new(),
        ),
    ] {
        let content_type = (!body.is_empty()).then_some("application/json");
        let req = request(method, &path, bearer, content_type, body);
        c.error(req, 503, "store_unavailable").await;
    }
    kv.clear_failures();
    let garbled = format!("{}y", &no[..no.len() - 1]);
    kv.set(&format!("order:{garbled}"), "{not json");
    kv.set("product:garbled", "{not json");
    for (path, bearer) in [
        (format!("/api/orders/{garbled}"), mine),
        (format!("/api/admin/orders/{garbled}"), ADMIN),
        ("/api/admin/products/garbled".to_owned(), ADMIN),
    ] {
        c.error(bare("GET", &path, bearer), 500, "record_unreadable")
            .await;
    }
    c.error(
        bare("POST", &format!("/api/orders/{garbled}/pay-params"), mine),
        500,
        "record_unreadable",
    )
    .await;

    // Bodies over 64 KiB: 413 on every JSON route that takes a body, WeChat's FAIL XML on
    // the notify routes (APIv2 dialect).
    let big = format!("{{\"pad\": \"{}\"}}", "a".repeat(70 * 1024));
    for (method, path, bearer) in [
        ("POST", "/api/orders".to_owned(), mine),
        ("POST", resign.clone(), mine),
        ("PUT", "/api/admin/products/tea".to_owned(), ADMIN),
        ("POST", format!("/api/admin/orders/{no}/refunds"), ADMIN),
        ("POST", "/api/admin/reconcile".to_owned(), ADMIN),
    ] {
        let req = request(method, &path, bearer, Some("application/json"), big.clone());
        c.error(req, 413, "body_too_large").await;
    }
    for path in [NOTIFY_PATH, REFUND_NOTIFY_PATH] {
        let res = c.call(xml(path, big.clone())).await;
        assert!(res.text().contains("FAIL"), "{}", res.text());
    }
    w.assert_logs_clean();

    // ---- APIv3: notifications in JSON, refunds ---------------------------------------------
    let v = V3World::new(KeyMode::PublicKey).await;
    let c = Checked {
        contract: &contract,
        app: &v.app,
    };
    let mine = Some(v.token.as_str());
    let created = c.ok(order(mine, tea.clone()), 201).await;
    assert_eq!(created["pay_params"]["signType"], "RSA");
    let no = created["order"]["order_no"].as_str().unwrap().to_owned();
    let unpaid = c.ok(order(mine, tea.clone()), 201).await;
    let unpaid = unpaid["order"]["order_no"].as_str().unwrap().to_owned();
    let params = c
        .ok(
            bare("POST", &format!("/api/orders/{no}/pay-params"), mine),
            200,
        )
        .await;
    assert_eq!(
        params, created["pay_params"],
        "APIv3 hands back the signed params"
    );

    // POST /api/wxpay/notify (APIv3 JSON)
    v.wechat.pay(&no);
    let (body, headers) = v.wechat.notification(&no, "transaction", 0, |_| {});
    let tampered = body.replacen("\"ciphertext\":\"", "\"ciphertext\":\"AAAA", 1);
    let res = c.call(notify_request(&tampered, &headers)).await;
    assert_eq!(res.status, 401, "{}", res.text());
    let (stranger, stranger_headers) = v.wechat.notification(&no, "transaction", 0, |t| {
        t["out_trade_no"] = "20260101000000abcdef".into()
    });
    let res = c.call(notify_request(&stranger, &stranger_headers)).await;
    assert_eq!(res.status, 404, "{}", res.text());
    let res = c.call(notify_request(&body, &headers)).await;
    assert_eq!(res.status, 204, "{}", res.text());

    // POST /api/admin/orders/{order_no}/refunds
    let refunds = |no: &str, body: Value| {
        json_req(
            "POST",
            &format!("/api/admin/orders/{no}/refunds"),
            ADMIN,
            body,
        )
    };
    c.error(refunds(&no, json!({"amount": 0})), 400, "invalid_amount")
        .await;
    c.error(refunds(&no, json!({"amount": "1"})), 400, "invalid_amount")
        .await;
    c.error(
        refunds(&no, json!({"amount": 1, "reason": "r".repeat(81)})),
        400,
        "invalid_reason",
    )
    .await;
    c.error(
        refunds(&no, json!({"amount": 1, "refund_no": "no spaces"})),
        400,
        "invalid_refund_no",
    )
    .await;
    c.error(
        refunds(&no, json!({"amount": 399})),
        409,
        "refund_exceeds_paid",
    )
    .await;
    c.error(refunds(&unpaid, json!({"amount": 1})), 409, "not_paid")
        .await;
    c.error(
        refunds("20260101000000abcdef", json!({"amount": 1})),
        404,
        "order_not_found",
    )
    .await;
    c.error(
        json_req(
            "POST",
            &format!("/api/admin/orders/{no}/refunds"),
            None,
            json!({"amount": 1}),
        ),
        401,
        "unauthorized",
    )
    .await;
    c.error(
        request(
            "POST",
            &format!("/api/admin/orders/{no}/refunds"),
            ADMIN,
            Some("text/plain"),
            "1",
        ),
        415,
        "unsupported_media_type",
    )
    .await;
    let asked = json!({"amount": 100, "reason": "contract", "refund_no": "R-contract-1"});
    let refund = c.ok(refunds(&no, asked.clone()), 201).await;
    assert_eq!(refund["status"], "PROCESSING");
    assert_eq!(refund["amount"], 100);
    let again = c.ok(refunds(&no, asked), 200).await;
    assert_eq!(again["refund_no"], "R-contract-1");
    c.error(
        refunds(&no, json!({"amount": 101, "refund_no": "R-contract-1"})),
        409,
        "refund_no_conflict",
    )
    .await;
    c.error(refunds(&no, json!({"amount": 1})), 429, "refund_too_soon")
        .await;
    c.error(
        bare("GET", &format!("/api/admin/orders/{no}/refunds"), ADMIN),
        405,
        "method_not_allowed",
    )
    .await;

    // POST /api/wxpay/refund-notify (APIv3 JSON)
    let refund_notify = |body: &str, headers: &wxpay::v3::verify::SignatureHeaders| {
        let mut request = notify_request(body, headers);
        *request.uri_mut() = REFUND_NOTIFY_PATH.parse().unwrap();
        request
    };
    let (body, headers) = v
        .wechat
        .refund_notification("R-contract-1", "SUCCESS", |_| {});
    let tampered = body.replacen("\"ciphertext\":\"", "\"ciphertext\":\"AAAA", 1);
    let res = c.call(refund_notify(&tampered, &headers)).await;
    assert_eq!(res.status, 401, "{}", res.text());
    let (unasked, unasked_headers) = v
        .wechat
        .refund_notification("R-contract-1", "SUCCESS", |r| {
            r["out_refund_no"] = "R-never-asked".into()
        });
    let res = c.call(refund_notify(&unasked, &unasked_headers)).await;
    assert_eq!(res.status, 404, "{}", res.text());
    let res = c.call(refund_notify(&body, &headers)).await;
    assert_eq!(res.status, 204, "{}", res.text());

    // A whole refund, WeChat unanswering at first: 503, then the same refund_no again (200),
    // its notification, and the order REFUNDED in both views.
    v.wechat.pay(&unpaid);
    let (body, headers) = v.wechat.notification(&unpaid, "transaction", 0, |_| {});
    let res = c.call(notify_request(&body, &headers)).await;
    assert_eq!(res.status, 204, "{}", res.text());
    lock(&v.wechat.state)
        .faults
        .insert("refund", vec!["lost_reply"; 3].into());
    let whole = json!({"amount": 398, "refund_no": "R-contract-2"});
    c.error(refunds(&unpaid, whole.clone()), 503, "wechat_busy")
        .await;
    let refund = c.ok(refunds(&unpaid, whole), 200).await;
    assert_eq!(refund["status"], "PROCESSING", "{refund}");
    let (body, headers) = v
        .wechat
        .refund_notification("R-contract-2", "SUCCESS", |_| {});
    let res = c.call(refund_notify(&body, &headers)).await;
    assert_eq!(res.status, 204, "{}", res.text());
    let shown = c
        .ok(bare("GET", &format!("/api/orders/{unpaid}"), mine), 200)
        .await;
    assert_eq!(shown["status"], "REFUNDED", "{shown}");
    assert_eq!(shown["refunded_total"], 398);
    let record = c
        .ok(
            bare("GET", &format!("/api/admin/orders/{unpaid}"), ADMIN),
            200,
        )
        .await;
    assert_eq!(record["status"], "REFUNDED", "{record}");

    // APIv3 notifications over 64 KiB: 413 with WeChat's FAIL JSON.
    let big = format!("{{\"pad\": \"{}\"}}", "a".repeat(70 * 1024));
    for path in [NOTIFY_PATH, REFUND_NOTIFY_PATH] {
        let mut request = notify_request(&big, &headers);
        *request.uri_mut() = path.parse().unwrap();
        let res = c.call(request).await;
        assert_eq!(res.status, 413, "{}", res.text());
    }

    // The order views with a refund.
    let shown = c
        .ok(bare("GET", &format!("/api/orders/{no}"), mine), 200)
        .await;
    assert_eq!(shown["status"], "PAID", "{shown}");
    assert_eq!(shown["refunded_total"], 100);
    assert_eq!(shown["refunds"][0]["status"], "SUCCESS");
    let record = c
        .ok(bare("GET", &format!("/api/admin/orders/{no}"), ADMIN), 200)
        .await;
    assert_eq!(record["refunds"][0]["refund_no"], "R-contract-1");
    assert_eq!(record["refunds"][0]["status"], "SUCCESS");
    let report = c.ok(bare("POST", "/api/admin/reconcile", ADMIN), 200).await;
    assert_eq!(report["complete"], true, "{report}");
    // The store failing under a notification: 500 with WeChat's FAIL JSON (it delivers again).
    let kv = v.app.kv("default");
    kv.fail_gets_matching("", KvFailure::Always);
    let (body, headers) = v.wechat.notification(&no, "transaction", 0, |_| {});
    let res = c.call(notify_request(&body, &headers)).await;
    assert_eq!(res.status, 500, "{}", res.text());
    let (body, headers) = v
        .wechat
        .refund_notification("R-contract-1", "SUCCESS", |_| {});
    let res = c.call(refund_notify(&body, &headers)).await;
    assert_eq!(res.status, 500, "{}", res.text());
    kv.clear_failures();
    v.assert_clean();

    contract.assert_every_operation_exercised();
}

// ---- The checker itself ----------------------------------------------------------------------

fn answer(status: u16, content_type: Option<&str>, body: &str) -> TestResponse {
    let mut headers = http::HeaderMap::new();
    if let Some(ct) = content_type {
        headers.insert("content-type", ct.parse().unwrap());
    }
    TestResponse {
        status: http::StatusCode::from_u16(status).unwrap(),
        headers,
        body: bytes::Bytes::copy_from_slice(body.as_bytes()),
    }
}

fn error_body(code: &str) -> String {
    json!({"error": {"code": code, "message": "m"}}).to_string()
}

fn order_body() -> Value {
    json!({
        "order_no": "20261127150000a1b2c3d4e5", "status": "PAID", "sku": "tea", "quantity": 2,
        "total_fee": 398, "description": "Tea", "created_at": "2026-11-27T07:00:00Z",
        "paid_at": "2026-11-27T07:01:00Z", "transaction_id": "4200", "mode": "live",
    })
}

/// The checker accepts what the contract documents and refuses the rest: an undocumented
/// error code, status, media type or method, an extra or missing field, a wrong type or enum
/// value, a body where none is documented.
#[test]
fn the_contract_refuses_what_it_does_not_document() {
    let contract = Contract::load();
    let json = Some("application/json");
    let check = |method: &str, path: &str, res: TestResponse| contract.check(method, path, &res);

    // Documented: passes.
    let ok = order_body().to_string();
    check(
        "GET",
        "/api/orders/20261127150000a1b2c3d4e5",
        answer(200, json, &ok),
    )
    .unwrap();
    check(
        "POST",
        "/api/orders",
        answer(401, json, &error_body("missing_token")),
    )
    .unwrap();
    check("DELETE", "/api/admin/products/tea", answer(204, None, "")).unwrap();
    check(
        "PATCH",
        "/api/orders",
        answer(405, json, &error_body("method_not_allowed")),
    )
    .unwrap();
    check(
        "POST",
        NOTIFY_PATH,
        answer(200, Some("text/xml"), wxpay::v2::notify::SUCCESS_REPLY),
    )
    .unwrap();
    check(
        "POST",
        NOTIFY_PATH,
        answer(401, json, r#"{"code":"FAIL","message":"signature"}"#),
    )
    .unwrap();

    let refused = |what: &str, result: Result<(), String>| {
        let e = result.expect_err(what);
        eprintln!("{what}: {e}");
        e
    };
    // An error code the route does not list for that status.
    let e = refused(
        "undocumented code",
        check(
            "POST",
            "/api/orders",
            answer(401, json, &error_body("unauthorized")),
        ),
    );
    assert!(e.contains("unauthorized"), "{e}");
    refused(
        "a code of another status",
        check(
            "POST",
            "/api/orders",
            answer(400, json, &error_body("unknown_sku")),
        ),
    );
    // A status the route does not document.
    let e = refused(
        "undocumented status",
        check(
            "GET",
            "/api/health",
            answer(404, json, &error_body("not_found")),
        ),
    );
    assert!(e.contains("not documented"), "{e}");
    // An error body of another shape.
    refused(
        "error without message",
        check(
            "POST",
            "/api/login",
            answer(400, json, r#"{"error":{"code":"invalid_code"}}"#),
        ),
    );
    refused(
        "flat error",
        check(
            "POST",
            "/api/login",
            answer(400, json, r#"{"code":"invalid_code","message":"m"}"#),
        ),
    );
    // Order: an extra field, a missing one, a wrong enum value, a string amount.
    let order_with = |edit: &dyn Fn(&mut Value)| {
        let mut body = order_body();
        edit(&mut body);
        answer(200, json, &body.to_string())
    };
    let path = "/api/orders/20261127150000a1b2c3d4e5";
    let e = refused(
        "extra field",
        check("GET", path, order_with(&|o| o["openid"] = "oX".into())),
    );
    assert!(e.contains("openid"), "{e}");
    refused(
        "missing status",
        check(
            "GET",
            path,
            order_with(&|o| {
                o.as_object_mut().unwrap().remove("status");
            }),
        ),
    );
    refused(
        "unknown status",
        check("GET", path, order_with(&|o| o["status"] = "SHIPPED".into())),
    );
    refused(
        "amount as a string",
        check("GET", path, order_with(&|o| o["total_fee"] = "3.98".into())),
    );
    refused(
        "timestamp not RFC 3339 UTC",
        check(
            "GET",
            path,
            order_with(&|o| o["created_at"] = "2026-11-27 07:00".into()),
        ),
    );
    // A body where none is documented, a media type not documented, a method on a path that
    // answers anything but 405, an unknown path.
    refused(
        "body on 204",
        check("DELETE", "/api/admin/products/tea", answer(204, json, "{}")),
    );
    refused(
        "JSON where XML is documented",
        check("POST", NOTIFY_PATH, answer(200, json, "{}")),
    );
    refused(
        "XML verdict of another shape",
        check(
            "POST",
            NOTIFY_PATH,
            answer(200, Some("text/xml"), "<xml>OK</xml>"),
        ),
    );
    refused(
        "undocumented method answering 200",
        check("PATCH", "/api/orders", answer(200, json, "{}")),
    );
    refused(
        "unknown path",
        check(
            "GET",
            "/api/nowhere",
            answer(404, json, &error_body("not_found")),
        ),
    );
}

/// Every operation the issue names is in the contract, with its error body's codes listed per
/// status (an `enum`), so the live test above cannot pass on a thinner contract.
#[test]
fn the_contract_lists_every_route() {
    let contract = Contract::load();
    let expected: BTreeSet<(String, String)> = [
        ("/api/login", "POST"),
        ("/api/orders", "POST"),
        ("/api/orders/{order_no}", "GET"),
        ("/api/orders/{order_no}/pay-params", "POST"),
        ("/api/wxpay/notify", "POST"),
        ("/api/wxpay/refund-notify", "POST"),
        ("/api/admin/products", "GET"),
        ("/api/admin/products/{sku}", "PUT"),
        ("/api/admin/products/{sku}", "GET"),
        ("/api/admin/products/{sku}", "DELETE"),
        ("/api/admin/orders", "GET"),
        ("/api/admin/orders/{order_no}", "GET"),
        ("/api/admin/orders/{order_no}/refunds", "POST"),
        ("/api/admin/reconcile", "POST"),
        ("/api/health", "GET"),
    ]
    .into_iter()
    .map(|(p, m)| (p.to_owned(), m.to_owned()))
    .collect();
    assert_eq!(contract.operations(), expected);
    // Each JSON error response names its codes.
    for (template, method) in contract.operations() {
        let operation = &contract.doc["paths"][&template][method.to_ascii_lowercase()];
        for (status, response) in operation["responses"].as_object().unwrap() {
            let response = contract.resolve(response).unwrap();
            let Some(schema) = response.pointer("/content/application~1json/schema") else {
                continue;
            };
            let text = schema.to_string();
            if text.contains("#/components/schemas/Error") {
                assert!(
                    text.contains("\"enum\""),
                    "{method} {template} {status}: an error response without its codes"
                );
            }
        }
        assert!(
            contract.doc["paths"][&template]["x-method-not-allowed"].is_object(),
            "{template}: no 405 documented"
        );
    }
}
