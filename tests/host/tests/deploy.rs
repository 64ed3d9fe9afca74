//! The deployment files a user copies (`deploy/`), kept true to `spin.toml`.
//!
//! Every file is parsed (TOML with `toml`, YAML with `serde_norway`) and checked against the
//! app's manifest and against each other: the variables the SpinApps set exist in `spin.toml`,
//! the secret ones come from the Secret and every credential is set; the Secret example has
//! exactly the keys the manifests use; the runtime configs put a store the components use on
//! Redis and give `[[client_tls]]` to every component that calls WeChat Pay, for the host of
//! `wxpay_mch_api`, as the README's mTLS section shows; the Redis URLs name the Service of
//! `redis.yaml`; the hosted-platform page sets only variables that exist. Renaming, adding or
//! marking secret a variable in `spin.toml` fails these tests until `deploy/` follows.
//!
//! With a Spin binary (`SPIN_BIN`, `spin` on `PATH`, or the shared Spin 4.0.2), the last test
//! starts the app under Spin with each runtime config, its `[[client_tls]]` entry included.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::Deserialize as _;
use serde_norway::Value as Yaml;
use spin_test_host::real_spin::{SpinUp, spin_build, spin_or_skip, workspace_root};

// ---- Reading the files --------------------------------------------------------------------------

fn path(rel: &str) -> PathBuf {
    workspace_root().join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn toml_table(rel: &str, text: &str) -> toml::Table {
    text.parse()
        .unwrap_or_else(|e| panic!("{rel} is not valid TOML: {e}"))
}

/// Every document of a YAML file.
fn yaml_docs(rel: &str) -> Vec<Yaml> {
    let text = read(rel);
    let docs: Vec<Yaml> = serde_norway::Deserializer::from_str(&text)
        .map(|doc| {
            Yaml::deserialize(doc).unwrap_or_else(|e| panic!("{rel} is not valid YAML: {e}"))
        })
        .filter(|doc| !doc.is_null())
        .collect();
    assert!(!docs.is_empty(), "{rel} has no YAML document");
    docs
}

/// The one document of `rel` whose `kind` is `kind`.
fn yaml_doc(rel: &str, kind: &str) -> Yaml {
    let mut found: Vec<Yaml> = yaml_docs(rel)
        .into_iter()
        .filter(|d| d["kind"].as_str() == Some(kind))
        .collect();
    assert_eq!(found.len(), 1, "{rel}: expected one {kind}");
    found.remove(0)
}

fn str_at<'a>(v: &'a Yaml, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what} should be a string, is {v:?}"))
}

fn seq<'a>(v: &'a Yaml, what: &str) -> &'a [Yaml] {
    v.as_sequence()
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("{what} should be a list, is {v:?}"))
}

// ---- spin.toml ----------------------------------------------------------------------------------

struct Variable {
    default: Option<String>,
    secret: bool,
}

struct Component {
    key_value_stores: Vec<String>,
    allowed_outbound_hosts: Vec<String>,
}

struct Manifest {
    variables: BTreeMap<String, Variable>,
    components: BTreeMap<String, Component>,
}

impl Manifest {
    fn load() -> Manifest {
        let table = toml_table("spin.toml", &read("spin.toml"));
        let strings = |v: Option<&toml::Value>| -> Vec<String> {
            v.and_then(toml::Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|s| s.as_str().expect("a string").to_string())
                        .collect()
                })
                .unwrap_or_default()
        };
        let variables = table["variables"]
            .as_table()
            .expect("spin.toml [variables]")
            .iter()
            .map(|(name, v)| {
                let v = v.as_table().expect("a variable is a table");
                let variable = Variable {
                    default: v.get("default").map(|d| d.as_str().unwrap().to_string()),
                    secret: v.get("secret").and_then(toml::Value::as_bool) == Some(true),
                };
                (name.clone(), variable)
            })
            .collect();
        let components = table["component"]
            .as_table()
            .expect("spin.toml [component]")
            .iter()
            .map(|(id, c)| {
                let component = Component {
                    key_value_stores: strings(c.get("key_value_stores")),
                    allowed_outbound_hosts: strings(c.get("allowed_outbound_hosts")),
                };
                (id.clone(), component)
            })
            .collect();
        let manifest = Manifest {
            variables,
            components,
        };
        // The checks below would pass vacuously without these.
        assert!(
            manifest.secret_variables().len() >= 4,
            "spin.toml's secrets"
        );
        assert!(!manifest.credential_variables().is_empty());
        assert!(!manifest.wechat_pay_callers().is_empty());
        manifest
    }

    fn secret_variables(&self) -> BTreeSet<&str> {
        self.variables
            .iter()
            .filter(|(_, v)| v.secret)
            .map(|(n, _)| n.as_str())
            .collect()
    }

    /// The variables without a usable default (required ones, or an empty default): the
    /// credentials and URLs a live deployment must set.
    fn credential_variables(&self) -> BTreeSet<&str> {
        self.variables
            .iter()
            .filter(|(_, v)| v.default.as_deref().is_none_or(str::is_empty))
            .map(|(n, _)| n.as_str())
            .collect()
    }

    /// Every store label some component uses.
    fn store_labels(&self) -> BTreeSet<&str> {
        self.components
            .values()
            .flat_map(|c| c.key_value_stores.iter().map(String::as_str))
            .collect()
    }

    /// The components that call WeChat Pay (`{{ wxpay_mch_api }}` among their outbound hosts).
    fn wechat_pay_callers(&self) -> BTreeSet<&str> {
        self.components
            .iter()
            .filter(|(_, c)| {
                c.allowed_outbound_hosts
                    .iter()
                    .any(|h| h.replace(' ', "") == "{{wxpay_mch_api}}")
            })
            .map(|(id, _)| id.as_str())
            .collect()
    }

    /// The host of `wxpay_mch_api`'s default (`api.mch.weixin.qq.com`).
    fn wechat_pay_host(&self) -> String {
        let origin = self.variables["wxpay_mch_api"]
            .default
            .clone()
            .expect("wxpay_mch_api has a default");
        let host = origin
            .strip_prefix("https://")
            .expect("wxpay_mch_api's default is https");
        host.trim_end_matches('/').to_string()
    }
}

// ---- The files ----------------------------------------------------------------------------------

const SPINAPP: &str = "deploy/spinkube/spinapp.yaml";
const SPINAPP_CLIENT_TLS: &str = "deploy/spinkube/spinapp.client-tls.yaml";
const SPINAPPS: [&str; 2] = [SPINAPP, SPINAPP_CLIENT_TLS];
const SECRET_EXAMPLE: &str = "deploy/spinkube/secret.example.yaml";
const REDIS: &str = "deploy/spinkube/redis.yaml";
const RECONCILE: &str = "deploy/spinkube/reconcile.cronjob.yaml";
const KUBE_RUNTIME_CONFIG: &str = "deploy/spinkube/runtime-config.toml";
const KUBE_README: &str = "deploy/spinkube/README.md";
const REDIS_RUNTIME_CONFIG: &str = "deploy/runtime-config.redis.toml";
const HOSTED: &str = "deploy/fermyon-wasm-functions.md";

fn spinapp(rel: &str) -> Yaml {
    let app = yaml_doc(rel, "SpinApp");
    assert_eq!(
        app["apiVersion"].as_str(),
        Some("core.spinkube.dev/v1alpha1"),
        "{rel}"
    );
    app
}

/// The Secret of `secret.example.yaml`: its name and keys.
fn secret_example() -> (String, BTreeMap<String, String>) {
    let secret = yaml_doc(SECRET_EXAMPLE, "Secret");
    assert_eq!(secret["apiVersion"].as_str(), Some("v1"));
    assert!(
        secret["data"].is_null(),
        "{SECRET_EXAMPLE}: stringData only (plain placeholders)"
    );
    let name = str_at(&secret["metadata"]["name"], "the Secret's name").to_string();
    let keys = secret["stringData"]
        .as_mapping()
        .expect("the Secret's stringData")
        .iter()
        .map(|(k, v)| {
            let k = str_at(k, "a Secret key").to_string();
            let v = str_at(v, &k).to_string();
            (k, v)
        })
        .collect();
    (name, keys)
}

/// Every `secretKeyRef` in `v` (any depth): (Secret name, key).
fn secret_key_refs(v: &Yaml, out: &mut Vec<(String, String)>) {
    match v {
        Yaml::Mapping(m) => {
            for (k, child) in m {
                if k.as_str() == Some("secretKeyRef") {
                    out.push((
                        str_at(&child["name"], "secretKeyRef.name").to_string(),
                        str_at(&child["key"], "secretKeyRef.key").to_string(),
                    ));
                } else {
                    secret_key_refs(child, out);
                }
            }
        }
        Yaml::Sequence(s) => s.iter().for_each(|c| secret_key_refs(c, out)),
        _ => {}
    }
}

/// The runtime config with its commented-out `[[client_tls]]` entry (the `# ` lines from
/// `# [[client_tls]]` on) uncommented, as a user enabling it would.
fn uncomment_client_tls(rel: &str, text: &str) -> String {
    let mut out = String::new();
    let mut in_entry = false;
    let mut found = false;
    for line in text.lines() {
        if line == "# [[client_tls]]" {
            in_entry = true;
            found = true;
        }
        match line.strip_prefix("# ") {
            Some(uncommented) if in_entry => out.push_str(uncommented),
            _ => {
                in_entry = false;
                out.push_str(line);
            }
        }
        out.push('\n');
    }
    assert!(found, "{rel} has no commented `# [[client_tls]]` entry");
    out
}

/// The runtime configs as Spin reads them once set up: `runtime-config.redis.toml` with its
/// client certificate entry enabled, and the SpinKube one.
fn runtime_configs() -> Vec<(&'static str, String)> {
    let redis = read(REDIS_RUNTIME_CONFIG);
    // As shipped (no client certificate), it parses too.
    let plain = toml_table(REDIS_RUNTIME_CONFIG, &redis);
    assert!(
        !plain.contains_key("client_tls"),
        "{REDIS_RUNTIME_CONFIG}: the entry is commented out"
    );
    vec![
        (
            REDIS_RUNTIME_CONFIG,
            uncomment_client_tls(REDIS_RUNTIME_CONFIG, &redis),
        ),
        (KUBE_RUNTIME_CONFIG, read(KUBE_RUNTIME_CONFIG)),
    ]
}

/// `redis://[:password@]host:port`: (password, host, port).
fn redis_url_parts(url: &str) -> (Option<String>, String, u16) {
    let rest = url
        .strip_prefix("redis://")
        .or_else(|| url.strip_prefix("rediss://"))
        .unwrap_or_else(|| panic!("{url} is not a redis:// or rediss:// URL"));
    let (auth, host_port) = match rest.rsplit_once('@') {
        Some((auth, hp)) => (Some(auth), hp),
        None => (None, rest),
    };
    let host_port = host_port.split('/').next().unwrap();
    let (host, port) = host_port
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("{url}: name the port"));
    let password = auth.map(|a| a.strip_prefix(':').unwrap_or(a).to_string());
    (password, host.to_string(), port.parse().expect("a port"))
}

// ---- The SpinApps -------------------------------------------------------------------------------

/// The variables each SpinApp sets exist in `spin.toml`; the secret ones come from the
/// Secret's keys, never as a plain value, the others as plain values; every credential is set,
/// and the mode is live.
#[test]
fn spinapps_set_spin_toml_variables_with_the_secrets_from_the_secret() {
    let manifest = Manifest::load();
    let (secret_name, secret_keys) = secret_example();
    for rel in SPINAPPS {
        let app = spinapp(rel);
        let mut set = BTreeMap::new();
        for var in seq(&app["spec"]["variables"], "spec.variables") {
            let name = str_at(&var["name"], "a variable's name");
            let declared = manifest
                .variables
                .get(name)
                .unwrap_or_else(|| panic!("{rel} sets `{name}`, which spin.toml does not declare"));
            assert!(set.insert(name, var).is_none(), "{rel} sets `{name}` twice");
            if declared.secret {
                assert!(
                    var["value"].is_null(),
                    "{rel}: `{name}` is secret in spin.toml: it must come from the Secret, not a plain value"
                );
                let secret_ref = &var["valueFrom"]["secretKeyRef"];
                assert_eq!(
                    secret_ref["name"].as_str(),
                    Some(secret_name.as_str()),
                    "{rel}: `{name}` from the Secret {secret_name}"
                );
                let key = str_at(&secret_ref["key"], "secretKeyRef.key");
                assert!(
                    secret_keys.contains_key(key),
                    "{rel}: `{name}` reads key `{key}`, which {SECRET_EXAMPLE} lacks"
                );
            } else {
                assert!(
                    var["valueFrom"].is_null() && var["value"].is_string(),
                    "{rel}: `{name}` is not secret: a plain string value"
                );
            }
        }
        for name in manifest.secret_variables() {
            assert!(
                set.contains_key(name),
                "{rel} does not set the secret variable `{name}`"
            );
        }
        for name in manifest.credential_variables() {
            assert!(
                set.contains_key(name),
                "{rel} does not set `{name}` (no usable default in spin.toml)"
            );
        }
        assert_eq!(
            set["wxpay_mode"]["value"].as_str(),
            Some("live"),
            "{rel}: a deployment is live"
        );
    }
}

/// Two or more replicas on the Spin shim, health checks on a route that exists, and the two
/// SpinApps the same app with the same variables.
#[test]
fn spinapps_run_two_replicas_of_the_same_app() {
    let [plain, client_tls] = SPINAPPS.map(spinapp);
    for (rel, app) in [(SPINAPP, &plain), (SPINAPP_CLIENT_TLS, &client_tls)] {
        let spec = &app["spec"];
        let replicas = spec["replicas"].as_i64().expect("spec.replicas");
        assert!(replicas >= 2, "{rel}: replicas {replicas} < 2");
        assert_ne!(spec["enableAutoscaling"].as_bool(), Some(true), "{rel}");
        assert_eq!(
            spec["executor"].as_str(),
            Some("containerd-shim-spin"),
            "{rel}"
        );
        assert!(!str_at(&spec["image"], "spec.image").is_empty());
        for probe in ["readiness", "liveness"] {
            assert_eq!(
                spec["checks"][probe]["httpGet"]["path"].as_str(),
                Some("/api/health"),
                "{rel}: {probe} probe"
            );
        }
    }
    assert!(
        read("spin.toml").contains("route = \"/api/health\""),
        "spin.toml routes /api/health"
    );
    for field in ["image", "executor", "replicas", "variables", "checks"] {
        assert_eq!(
            plain["spec"][field], client_tls["spec"][field],
            "{SPINAPP} and {SPINAPP_CLIENT_TLS} differ in spec.{field}"
        );
    }
    assert_eq!(plain["metadata"]["name"], client_tls["metadata"]["name"]);
}

/// `spinapp.yaml` puts the store the components use on Redis (the operator's generated
/// runtime config), its URL from the Secret.
#[test]
fn spinapp_store_is_redis_for_a_label_the_components_use() {
    let manifest = Manifest::load();
    let (secret_name, secret_keys) = secret_example();
    let app = spinapp(SPINAPP);
    let runtime_config = &app["spec"]["runtimeConfig"];
    assert!(runtime_config["loadFromSecret"].is_null());
    let stores = seq(&runtime_config["keyValueStores"], "keyValueStores");
    let mut labels = BTreeSet::new();
    for store in stores {
        let label = str_at(&store["name"], "a store's name");
        assert!(
            manifest.store_labels().contains(label),
            "{SPINAPP}: store `{label}` is not one a component of spin.toml uses"
        );
        assert_eq!(
            store["type"].as_str(),
            Some("redis"),
            "{SPINAPP}: `{label}`"
        );
        let options = seq(&store["options"], "options");
        let url: Vec<_> = options
            .iter()
            .filter(|o| o["name"].as_str() == Some("url"))
            .collect();
        assert_eq!(url.len(), 1, "{SPINAPP}: `{label}` has one url option");
        let secret_ref = &url[0]["valueFrom"]["secretKeyRef"];
        assert_eq!(secret_ref["name"].as_str(), Some(secret_name.as_str()));
        let key = str_at(&secret_ref["key"], "url's secretKeyRef.key");
        redis_url_parts(&secret_keys[key]);
        labels.insert(label);
    }
    assert_eq!(labels, manifest.store_labels(), "{SPINAPP}: every store");
}

/// `spinapp.client-tls.yaml` takes the whole runtime config from a Secret (nothing else in
/// `runtimeConfig`, which the operator would ignore) and mounts the certificate's Secret where
/// `runtime-config.toml`'s `[[client_tls]]` entry reads it.
#[test]
fn client_tls_spinapp_mounts_what_its_runtime_config_reads() {
    let app = spinapp(SPINAPP_CLIENT_TLS);
    let spec = &app["spec"];
    let runtime_config = spec["runtimeConfig"]
        .as_mapping()
        .expect("spec.runtimeConfig");
    assert_eq!(
        runtime_config.keys().collect::<Vec<_>>(),
        vec![&Yaml::from("loadFromSecret")],
        "{SPINAPP_CLIENT_TLS}: with loadFromSecret the operator ignores the other fields"
    );
    // The files the volumes put in the pod: mount path + item path, by Secret.
    let mut mounted = BTreeMap::new();
    for mount in seq(&spec["volumeMounts"], "volumeMounts") {
        let name = str_at(&mount["name"], "a mount's name");
        let at = str_at(&mount["mountPath"], "mountPath");
        let volume = seq(&spec["volumes"], "volumes")
            .iter()
            .find(|v| v["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("{SPINAPP_CLIENT_TLS}: no volume `{name}`"));
        let secret = str_at(&volume["secret"]["secretName"], "secretName");
        for item in seq(&volume["secret"]["items"], "items") {
            assert_eq!(item["key"], item["path"], "file named as the Secret key");
            let file = format!("{at}/{}", str_at(&item["path"], "an item's path"));
            mounted.insert(file, secret.to_string());
        }
    }
    let config = toml_table(KUBE_RUNTIME_CONFIG, &read(KUBE_RUNTIME_CONFIG));
    let entries = config["client_tls"].as_array().expect("[[client_tls]]");
    let mut secrets = BTreeSet::new();
    for entry in entries {
        for field in ["client_cert_file", "client_private_key_file"] {
            let file = entry[field].as_str().expect(field);
            let secret = mounted.get(file).unwrap_or_else(|| {
                panic!(
                    "{KUBE_RUNTIME_CONFIG}: {field} {file} is not mounted by {SPINAPP_CLIENT_TLS}"
                )
            });
            secrets.insert(secret.clone());
        }
    }
    // The Secrets the user creates with kubectl are named in the steps.
    let readme = read(KUBE_README);
    secrets.insert(str_at(&spec["runtimeConfig"]["loadFromSecret"], "loadFromSecret").to_string());
    for secret in secrets {
        assert!(
            readme.contains(&format!("kubectl create secret generic {secret}")),
            "{KUBE_README} does not say how to create the Secret {secret}"
        );
    }
}

// ---- The runtime configs ------------------------------------------------------------------------

/// Both runtime configs put a store the components use on Redis, and give the client
/// certificate to every component that calls WeChat Pay (Spin pools connections per app, not per
/// component) for the host of `wxpay_mch_api`, without a port; the VM one's entry is the
/// README's.
#[test]
fn runtime_configs_put_the_store_on_redis_and_the_certificate_on_wechat_pay_calls() {
    let manifest = Manifest::load();
    let host = manifest.wechat_pay_host();
    for (rel, text) in runtime_configs() {
        let config = toml_table(rel, &text);
        let stores = config["key_value_store"]
            .as_table()
            .unwrap_or_else(|| panic!("{rel}: [key_value_store.*]"));
        let labels: BTreeSet<&str> = stores.keys().map(String::as_str).collect();
        assert_eq!(labels, manifest.store_labels(), "{rel}: the stores");
        for (label, store) in stores {
            assert_eq!(store["type"].as_str(), Some("redis"), "{rel}: `{label}`");
            redis_url_parts(store["url"].as_str().expect("url"));
        }
        let entries = config["client_tls"].as_array().expect("[[client_tls]]");
        assert_eq!(entries.len(), 1, "{rel}: one [[client_tls]] entry");
        let entry = entries[0].as_table().unwrap();
        let ids: BTreeSet<&str> = entry["component_ids"]
            .as_array()
            .expect("component_ids")
            .iter()
            .map(|id| id.as_str().unwrap())
            .collect();
        for id in &ids {
            assert!(
                manifest.components.contains_key(*id),
                "{rel}: component `{id}` is not in spin.toml"
            );
        }
        assert_eq!(
            ids,
            manifest.wechat_pay_callers(),
            "{rel}: every component that calls WeChat Pay, and only those"
        );
        let hosts: Vec<&str> = entry["hosts"]
            .as_array()
            .expect("hosts")
            .iter()
            .map(|h| h.as_str().unwrap())
            .collect();
        assert_eq!(hosts, [host.as_str()], "{rel}: wxpay_mch_api's host");
        assert!(
            hosts.iter().all(|h| !h.contains(':')),
            "{rel}: no port in hosts"
        );
        for field in ["client_cert_file", "client_private_key_file"] {
            assert!(
                entry[field].as_str().is_some_and(|f| !f.is_empty()),
                "{rel}: {field}"
            );
        }
        assert!(
            !entry.contains_key("ca_roots_file"),
            "{rel}: the system's roots for WeChat"
        );
    }

    // The README's example, word for word in substance.
    let readme = read("README.md");
    let section = readme
        .split("### Client certificate for APIv2 refunds")
        .nth(1)
        .expect("README's mTLS section");
    let example = section
        .split("```toml\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("README's mTLS example");
    let readme_config = toml_table("README.md's mTLS example", example);
    let (rel, text) = &runtime_configs()[0];
    assert_eq!(
        toml_table(rel, text)["client_tls"],
        readme_config["client_tls"],
        "{rel}'s [[client_tls]] is not the README's"
    );
}

// ---- The Secret, Redis and the CronJob ----------------------------------------------------------

/// The Secret example has exactly the keys the manifests read (none missing, none stale), all
/// from the one Secret.
#[test]
fn secret_example_has_exactly_the_keys_the_manifests_read() {
    let (secret_name, secret_keys) = secret_example();
    let mut refs = Vec::new();
    for rel in [SPINAPP, SPINAPP_CLIENT_TLS, REDIS, RECONCILE] {
        for doc in yaml_docs(rel) {
            secret_key_refs(&doc, &mut refs);
        }
    }
    assert!(refs.len() > 6);
    let mut used = BTreeSet::new();
    for (name, key) in refs {
        assert_eq!(name, secret_name, "a secretKeyRef to another Secret");
        used.insert(key);
    }
    let example: BTreeSet<String> = secret_keys.keys().cloned().collect();
    assert_eq!(
        example, used,
        "{SECRET_EXAMPLE}'s keys and the keys the manifests read"
    );
}

/// The Redis URLs (the Secret's, the SpinKube runtime config's) name the Service of
/// `redis.yaml`, its port and the password Redis is started with.
#[test]
fn redis_urls_name_the_redis_service() {
    let (_, secret_keys) = secret_example();
    let service = yaml_doc(REDIS, "Service");
    let statefulset = yaml_doc(REDIS, "StatefulSet");
    let service_name = str_at(&service["metadata"]["name"], "Service name");
    let port = seq(&service["spec"]["ports"], "ports")[0]["port"]
        .as_u64()
        .expect("the Service port");
    let container = &seq(
        &statefulset["spec"]["template"]["spec"]["containers"],
        "containers",
    )[0];
    let args: Vec<&str> = seq(&container["args"], "args")
        .iter()
        .map(|a| str_at(a, "an arg"))
        .collect();
    let requirepass = args
        .iter()
        .position(|a| *a == "--requirepass")
        .map(|i| args[i + 1])
        .expect("--requirepass");
    let password_env = requirepass
        .strip_prefix("$(")
        .and_then(|s| s.strip_suffix(')'))
        .expect("--requirepass $(ENV)");
    let env = seq(&container["env"], "env")
        .iter()
        .find(|e| e["name"].as_str() == Some(password_env))
        .expect("the password's env");
    let password_key = str_at(&env["valueFrom"]["secretKeyRef"]["key"], "key");
    let password = &secret_keys[password_key];
    assert!(args.windows(2).any(|w| w == ["--appendonly", "yes"]));

    let kube_config = toml_table(KUBE_RUNTIME_CONFIG, &read(KUBE_RUNTIME_CONFIG));
    let urls = [
        secret_keys["redis-url"].clone(),
        kube_config["key_value_store"]["default"]["url"]
            .as_str()
            .unwrap()
            .to_string(),
    ];
    assert_eq!(urls[0], urls[1], "the two Redis URLs");
    let (url_password, host, url_port) = redis_url_parts(&urls[0]);
    assert_eq!(host, service_name);
    assert_eq!(u64::from(url_port), port);
    assert_eq!(url_password.as_ref(), Some(password));
}

/// The reconcile CronJob posts to the app's Service (named after the SpinApp) with the admin
/// token.
#[test]
fn reconcile_cronjob_posts_to_the_apps_service() {
    let app = spinapp(SPINAPP);
    let name = str_at(&app["metadata"]["name"], "the SpinApp's name");
    let job = yaml_doc(RECONCILE, "CronJob");
    let container = &seq(
        &job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"],
        "containers",
    )[0];
    let args: Vec<&str> = seq(&container["args"], "args")
        .iter()
        .map(|a| str_at(a, "an arg"))
        .collect();
    assert!(args.contains(&"POST"));
    assert!(
        args.contains(&format!("http://{name}/api/admin/reconcile").as_str()),
        "{RECONCILE}: {args:?}"
    );
    assert!(args.contains(&"Authorization: Bearer $(ADMIN_TOKEN)"));
    let env = seq(&container["env"], "env");
    assert_eq!(env[0]["name"].as_str(), Some("ADMIN_TOKEN"));
    assert_eq!(
        env[0]["valueFrom"]["secretKeyRef"]["key"].as_str(),
        Some("admin_token")
    );
    assert!(
        read("spin.toml").contains("route = \"/api/admin/...\""),
        "spin.toml routes /api/admin/..."
    );
}

// ---- The hosted platform and the README ---------------------------------------------------------

/// The hosted page's commands' `--variable` flags name variables of `spin.toml`, each once, every
/// credential among them; APIv3, since that platform has no client certificate for APIv2
/// refunds.
#[test]
fn hosted_page_sets_spin_toml_variables() {
    let manifest = Manifest::load();
    let page = read(HOSTED);
    // The commands: the page's ```sh blocks.
    let commands: String = page
        .split("```sh\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .collect();
    let mut set = BTreeMap::new();
    for flag in commands.split("--variable ").skip(1) {
        let (name, value) = flag
            .split_once('=')
            .unwrap_or_else(|| panic!("{HOSTED}: `--variable {flag:.30}` without ="));
        assert!(
            manifest.variables.contains_key(name),
            "{HOSTED} sets `{name}`, which spin.toml does not declare"
        );
        let value = value.split_whitespace().next().unwrap_or("");
        assert!(
            set.insert(name, value).is_none(),
            "{HOSTED} sets `{name}` twice"
        );
    }
    for name in manifest.credential_variables() {
        assert!(set.contains_key(name), "{HOSTED} does not set `{name}`");
    }
    for name in manifest.secret_variables() {
        assert!(
            set[name].starts_with("\"$"),
            "{HOSTED}: secret `{name}` from the environment, not typed in: {}",
            set[name]
        );
    }
    assert_eq!(set["wxpay_mode"], "live");
    assert_eq!(set["wxpay_api_version"], "v3");
}

/// Every file of `deploy/` is named in the README's Deploy section or the SpinKube steps.
#[test]
fn every_deploy_file_is_linked() {
    let readme = read("README.md");
    let deploy_section = readme
        .split("\n## Deploy\n")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README's Deploy section");
    let kube_readme = read(KUBE_README);
    let mut files = Vec::new();
    let mut dirs = vec![path("deploy")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                files.push(p);
            }
        }
    }
    assert!(files.len() >= 9, "{files:?}");
    for file in files {
        let rel = file
            .strip_prefix(workspace_root())
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let in_readme = deploy_section.contains(&rel);
        let in_kube = rel
            .strip_prefix("deploy/spinkube/")
            .is_some_and(|f| kube_readme.contains(&format!("`{f}`")));
        assert!(
            in_readme || in_kube,
            "{rel} is named neither in README's Deploy section nor in {KUBE_README}"
        );
    }
}

// ---- Under Spin ---------------------------------------------------------------------------------

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `text` as a runtime config in a fresh directory, with a throw-away client certificate where
/// its `[[client_tls]]` entry reads one (absolute paths moved into the directory) if `certs`.
fn write_runtime_config(name: &str, text: &str, certs: bool) -> (TempDir, PathBuf) {
    let dir = std::env::temp_dir().join(format!("spin-wxpay-deploy-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let dir = TempDir(dir);
    // Absolute paths (the pod's /certs) into the directory.
    let text = text.replace("\"/certs/", &format!("\"{}/certs/", dir.0.display()));
    let config = toml_table(name, &text);
    if certs {
        let ca = spin_test_host::tls::TestCa::new("deploy test CA").unwrap();
        let client = ca.client_cert("1900000109").unwrap();
        let entry = &config["client_tls"][0];
        for (field, pem) in [
            ("client_cert_file", &client.cert_pem),
            ("client_private_key_file", &client.key_pem),
        ] {
            let file = dir.0.join(entry[field].as_str().unwrap());
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, pem).unwrap();
        }
    }
    let file = dir.0.join("runtime-config.toml");
    std::fs::write(&file, text).unwrap();
    (dir, file)
}

/// Spin 4 starts the app with each runtime config (the VM one with its client certificate
/// entry enabled, the SpinKube one with `/certs` moved to a local directory): the store on Redis
/// (Spin connects on first use, so no Redis is needed to start) and the `[[client_tls]]` entry
/// read, which the control shows: without the certificate files Spin refuses to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spin_starts_with_the_runtime_configs() {
    let Some(spin) = spin_or_skip("spin_starts_with_the_runtime_configs") else {
        return;
    };
    let manifest = workspace_root().join("spin.toml");
    spin_build(&spin, &manifest).expect("spin build");
    for (i, (rel, text)) in runtime_configs().into_iter().enumerate() {
        let (_dir, file) = write_runtime_config(&format!("{i}"), &text, true);
        let args = ["--runtime-config-file", file.to_str().unwrap()];
        let up = SpinUp::start_with(&spin, &manifest, &[], &args)
            .await
            .unwrap_or_else(|e| panic!("spin up with {rel}: {e:#}"));
        let health = up
            .request("GET", "/api/health", &[], "")
            .await
            .expect("GET /api/health");
        assert_eq!(health.status, 200, "{rel}: {}", health.text());
        let output = up.output();
        assert!(
            output.contains("key_value_store.default: redis"),
            "{rel}: Spin did not put the store on Redis:\n{output}"
        );
        drop(up);

        let (_dir, file) = write_runtime_config(&format!("{i}-nocert"), &text, false);
        let args = ["--runtime-config-file", file.to_str().unwrap()];
        let refused = SpinUp::start_with(&spin, &manifest, &[], &args).await;
        assert!(
            refused.is_err(),
            "{rel}: Spin started without the client certificate files, so it did not read [[client_tls]]"
        );
    }
}
