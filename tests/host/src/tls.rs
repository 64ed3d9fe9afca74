//! Client TLS for outbound `https://`: the runtime config's `[[client_tls]]` (mutual TLS, e.g.
//! the merchant certificate WeChat Pay APIv2's `/secapi/pay/refund` requires), and for tests an
//! HTTPS fake that *requires* a client certificate ([`MtlsFake`]) with a throw-away PKI
//! ([`TestCa`]).
//!
//! # What Spin 4.0.2 does (read from the `v4.0.2` tag of spinframework/spin)
//!
//! - Parsing: `crates/factor-outbound-networking/src/runtime_config/spin.rs`. Each
//!   `[[client_tls]]` entry has exactly the fields `component_ids` (non-empty list of component
//!   ids), `hosts` (non-empty list), `ca_use_platform_roots`, `ca_use_webpki_roots`,
//!   `ca_roots_file`, `client_cert_file`, `client_private_key_file`; any other field is an
//!   error (`deny_unknown_fields`). A certificate file without its key file, or the reverse, is
//!   an error. Certificates are read with `CertificateDer::pem_file_iter` (every `CERTIFICATE`
//!   block, so a chain works), the key with `PrivateKeyDer::from_pem_file` (PKCS#8
//!   `PRIVATE KEY`, PKCS#1 `RSA PRIVATE KEY` or SEC1 `EC PRIVATE KEY`).
//! - `hosts` are host names **without a port**: `crate::tls::validate_host`
//!   (`crates/factor-outbound-networking/src/tls.rs`) parses each as an authority and refuses a
//!   port ("invalid TLS 'host' ...; ports not currently supported"), so `spin up` fails to
//!   start. An entry for `localhost` therefore applies to `https://localhost:<any port>`.
//! - Relative paths are relative to the **directory of the runtime-config file**
//!   (`crates/runtime-config/src/lib.rs`: `runtime_config_path.parent()` is handed to
//!   `SpinRuntimeConfig::new`, which `join`s every path onto it), not to the working directory
//!   or the app. Without `--runtime-config-file` there is no `[[client_tls]]` at all.
//! - Roots (`load_tls_config`): with neither `ca_use_*` flag set, the platform roots are used
//!   only when there is no `ca_roots_file`, and the webpki roots are **off**; so
//!   `ca_roots_file` *replaces* the defaults. Setting one flag turns the other off unless set
//!   too. `ca_roots_file` is added to whatever roots the flags enable
//!   (`ClientTlsRuntimeConfig::root_certificates`). No roots at all is an error at start.
//! - Applying it (`crates/factor-outbound-networking/src/tls.rs`, `TlsClientConfigs`): a map
//!   component id → host → rustls `ClientConfig`; the first entry naming a (component, host)
//!   pair wins. The outbound-http factor (`crates/factor-outbound-http/src/wasi.rs`,
//!   `send_request`) looks the config up with the request's `uri.host()` (exact string, no
//!   port) for the calling component. Without a matching entry the default applies: platform
//!   roots plus the webpki roots (`TlsClientConfig::default()`), no client certificate.
//! - Handshake failures (`connect_tls` in the same file): any error of
//!   `tokio_rustls::TlsConnector::connect` reaches the guest as `ErrorCode::TlsProtocolError`
//!   (Spin logs "tls protocol error" at warn level). A server that rejects the client
//!   certificate under TLS 1.3 does so *after* the client's side of the handshake is complete,
//!   so the client sees the server's alert while reading the response: `HttpProtocolError`
//!   (`hyper_legacy_request_error`). This app maps both to 504 `wechat_unreachable`.
//!   When the client refuses the server (untrusted CA), the server sees the connection end
//!   without an alert ("tls handshake eof"), as `tests/real_spin.rs` observes.
//! - ALPN offers `h2` and `http/1.1`. Spin's outbound HTTP clients (and their connection pool)
//!   are per *app* (`crates/factor-outbound-http/src/lib.rs`, `configure_app`), keyed by scheme
//!   and authority, not by component or TLS config: a pooled connection opened by a component
//!   without a certificate carries another component's later request to the same host without
//!   one (`tests/real_spin.rs`, `outbound_connections_are_pooled_across_components`). Pooling is
//!   on without an `[outbound_http]` table; `[outbound_http] connection_pooling = false` turns
//!   it off (note: an `[outbound_http]` table *without* the key also turns it off, the serde
//!   default of a `bool`; `crates/factor-outbound-http/src/runtime_config/spin.rs`).
//!
//! # What this host does
//!
//! [`crate::TestAppBuilder::runtime_config_file`] reads the file; `[[client_tls]]` is parsed and
//! validated as above (same fields, same errors at start, paths resolved against the file's
//! directory, first match wins, lookup by component and `uri.host()`). Outbound `https://`
//! then uses rustls (ring provider) with the entry's roots and client certificate.
//!
//! Simplified: the platform and webpki roots are **not loaded** (the tests only talk to local
//! fakes whose CA is in no such store, where Spin fails the same way). An `https://` request
//! with no matching entry, or with an entry that trusts no `ca_roots_file`, therefore fails the
//! handshake with `TlsProtocolError`, and the host prints why
//! (`[spin-test-host] ...: TLS handshake with ... failed: ...`, naming the missing roots).
//! ALPN offers only `http/1.1`; connections are not pooled (so the cross-component reuse above
//! does not happen here).
//!
//! # Test helpers
//!
//! [`MtlsFake::proxy`] puts an HTTPS front that requires a client certificate before any
//! plain-http fake (e.g. the fake WeChat of the app tests): point `wxpay_mch_api` at
//! [`MtlsFake::origin`] (`https://localhost:<port>`) and start the app with
//! [`MtlsFake::write_runtime_config`]. It records what it forwarded, with the client
//! certificate each request came with, and every failed handshake:
//!
//! ```no_run
//! # async fn example(upstream_origin: &str) -> anyhow::Result<()> {
//! use spin_test_host::TestApp;
//! use spin_test_host::tls::{ClientCert, MtlsFake};
//!
//! let front = MtlsFake::proxy(upstream_origin).await?;
//! let runtime_config = front.write_runtime_config(&["admin"], ClientCert::Right)?;
//! let app = TestApp::builder("spin.toml")
//!     .variable("wxpay_mch_api", front.origin())
//!     .runtime_config_file(&runtime_config)
//!     .start()
//!     .await?;
//! // ... a request that makes `admin` call WeChat ...
//! assert!(front.requests().iter().all(|r| front.is_right_client_cert(&r.client_cert)));
//! # Ok(())
//! # }
//! ```
//!
//! [`TestCa`] makes the certificates: a CA, a server certificate for `localhost` and
//! `127.0.0.1`, client certificates; [`ClientCert::WrongCa`] is one from another CA.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

use crate::fake::{FakeServer, RecordedRequest, text_response};

// ---- The runtime config's [[client_tls]] (host side) ---------------------------------------------

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// One `[[client_tls]]` entry, with Spin's field names.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientTlsToml {
    component_ids: Vec<String>,
    hosts: Vec<String>,
    ca_use_platform_roots: Option<bool>,
    ca_use_webpki_roots: Option<bool>,
    ca_roots_file: Option<PathBuf>,
    client_cert_file: Option<PathBuf>,
    client_private_key_file: Option<PathBuf>,
}

/// The client TLS config for one (component, host).
#[derive(Clone)]
pub(crate) struct HostTls {
    pub(crate) config: Arc<rustls::ClientConfig>,
    /// Why a handshake may fail here where Spin's would not (roots this host does not load).
    pub(crate) note: Option<&'static str>,
}

const NO_ENTRY_NOTE: &str = "no [[client_tls]] entry for this component and host: Spin would \
     trust the platform and webpki roots, which spin-test-host does not load";
const SYSTEM_ROOTS_NOTE: &str = "the [[client_tls]] entry trusts the platform or webpki roots, \
     which spin-test-host does not load; name the CA in ca_roots_file";

impl HostTls {
    fn default_config() -> Self {
        Self::build(Vec::new(), None, Some(NO_ENTRY_NOTE)).expect("an empty client config builds")
    }

    fn build(
        roots: Vec<CertificateDer<'static>>,
        client_cert: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
        note: Option<&'static str>,
    ) -> anyhow::Result<Self> {
        let mut store = rustls::RootCertStore::empty();
        for cert in roots {
            store.add(cert).context("adding a root certificate")?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(store);
        let mut config = match client_cert {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .context("the client certificate and private key do not form a usable pair")?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            config: Arc::new(config),
            note,
        })
    }
}

/// Every component's client TLS configs (Spin's `TlsClientConfigs`).
#[derive(Default)]
pub(crate) struct ClientTlsConfigs {
    by_component: HashMap<String, Arc<HashMap<String, HostTls>>>,
}

impl ClientTlsConfigs {
    /// Parses the `client_tls` array of a runtime config whose file is in `dir`.
    pub(crate) fn from_toml(value: &toml::Value, dir: &Path) -> anyhow::Result<Self> {
        let entries: Vec<ClientTlsToml> = value
            .clone()
            .try_into()
            .context("failed to parse [[client_tls]] table")?;
        let mut by_component: HashMap<String, HashMap<String, HostTls>> = HashMap::new();
        for entry in entries {
            let (components, hosts, tls) =
                load_entry(entry, dir).context("failed to parse TLS config")?;
            for component in components {
                let host_configs = by_component.entry(component).or_default();
                for host in &hosts {
                    // First matching (component, host) pair wins.
                    host_configs
                        .entry(host.clone())
                        .or_insert_with(|| tls.clone());
                }
            }
        }
        Ok(Self {
            by_component: by_component
                .into_iter()
                .map(|(k, v)| (k, Arc::new(v)))
                .collect(),
        })
    }

    /// The configs of component `id`.
    pub(crate) fn for_component(&self, id: &str) -> ComponentTls {
        ComponentTls {
            hosts: self.by_component.get(id).cloned(),
            default: HostTls::default_config(),
        }
    }
}

/// One component's client TLS configs (Spin's `ComponentTlsClientConfigs`).
#[derive(Clone)]
pub(crate) struct ComponentTls {
    hosts: Option<Arc<HashMap<String, HostTls>>>,
    default: HostTls,
}

impl Default for ComponentTls {
    fn default() -> Self {
        Self {
            hosts: None,
            default: HostTls::default_config(),
        }
    }
}

impl std::fmt::Debug for ComponentTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hosts: Vec<&String> = self.hosts.iter().flat_map(|h| h.keys()).collect();
        f.debug_struct("ComponentTls")
            .field("hosts", &hosts)
            .finish()
    }
}

impl ComponentTls {
    /// The config for `host` (the request's `uri.host()`, exactly as Spin looks it up).
    pub(crate) fn for_host(&self, host: &str) -> &HostTls {
        self.hosts
            .as_ref()
            .and_then(|h| h.get(host))
            .unwrap_or(&self.default)
    }
}

/// A Spin component id (`KebabId`): lowercase words of letters and digits joined by `-`, the
/// first starting with a letter.
fn check_component_id(id: &str) -> anyhow::Result<()> {
    let ok = id.split('-').enumerate().all(|(i, word)| {
        !word.is_empty()
            && word
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && (i > 0 || word.starts_with(|c: char| c.is_ascii_lowercase()))
    });
    ensure!(ok, "invalid component id {id:?} in 'component_ids'");
    Ok(())
}

/// Spin's `validate_host`: an authority without a port.
fn validate_host(host: &str) -> anyhow::Result<()> {
    let authority: http::uri::Authority = host
        .parse()
        .with_context(|| format!("invalid TLS 'host' {host:?}"))?;
    ensure!(
        authority.port().is_none(),
        "invalid TLS 'host' {host:?}; ports not currently supported"
    );
    Ok(())
}

/// Spin's `load_tls_config` and `TlsClientConfig::new`.
fn load_entry(
    entry: ClientTlsToml,
    dir: &Path,
) -> anyhow::Result<(Vec<String>, Vec<String>, HostTls)> {
    let ClientTlsToml {
        component_ids,
        hosts,
        ca_use_platform_roots,
        ca_use_webpki_roots,
        ca_roots_file,
        client_cert_file,
        client_private_key_file,
    } = entry;
    ensure!(
        !component_ids.is_empty(),
        "'component_ids' list may not be empty"
    );
    ensure!(!hosts.is_empty(), "'hosts' list may not be empty");
    for id in &component_ids {
        check_component_id(id)?;
    }
    for host in &hosts {
        validate_host(host)?;
    }
    let (use_platform_roots, use_webpki_roots) = match (ca_use_platform_roots, ca_use_webpki_roots)
    {
        (Some(platform), Some(webpki)) => (platform, webpki),
        (Some(platform), None) => (platform, false),
        (None, Some(webpki)) => (false, webpki),
        (None, None) => (ca_roots_file.is_none(), false),
    };
    let roots = match ca_roots_file {
        Some(path) => load_certs(&dir.join(path))?,
        None => Vec::new(),
    };
    let client_cert = match (client_cert_file, client_private_key_file) {
        (Some(cert), Some(key)) => Some((load_certs(&dir.join(cert))?, load_key(&dir.join(key))?)),
        (None, None) => None,
        (Some(_), None) => bail!("client_cert_file specified without client_private_key_file"),
        (None, Some(_)) => bail!("client_private_key_file specified without client_cert_file"),
    };
    ensure!(
        use_platform_roots || use_webpki_roots || !roots.is_empty(),
        "error building TLS client config: at least one of 'use_platform_roots', \
         'use_webpki_roots', or 'root_certificates' must be set"
    );
    let note = (use_platform_roots || use_webpki_roots).then_some(SYSTEM_ROOTS_NOTE);
    let tls =
        HostTls::build(roots, client_cert, note).context("error building TLS client config")?;
    Ok((component_ids, hosts, tls))
}

fn load_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect)
        .with_context(|| format!("failed to load certificate(s) from '{}'", path.display()))
}

fn load_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path)
        .with_context(|| format!("failed to load key from '{}'", path.display()))
}

// ---- Test PKI -----------------------------------------------------------------------------------

/// A certificate and its private key, PEM.
#[derive(Debug, Clone)]
pub struct CertAndKey {
    /// `-----BEGIN CERTIFICATE-----` ...
    pub cert_pem: String,
    /// `-----BEGIN PRIVATE KEY-----` (PKCS#8) ...
    pub key_pem: String,
}

impl CertAndKey {
    /// The certificate's DER (what a server records as the peer certificate).
    pub fn cert_der(&self) -> Bytes {
        let der = CertificateDer::from_pem_slice(self.cert_pem.as_bytes())
            .expect("a certificate made by rcgen parses");
        Bytes::copy_from_slice(der.as_ref())
    }
}

/// A throw-away certificate authority (ECDSA P-256, made with rcgen).
pub struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    /// A new CA named `name`.
    pub fn new(name: &str) -> anyhow::Result<TestCa> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate()?)?;
        Ok(TestCa { issuer })
    }

    /// The CA certificate, PEM (what `ca_roots_file` names).
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    fn issue(
        &self,
        names: &[&str],
        common_name: &str,
        usage: rcgen::ExtendedKeyUsagePurpose,
    ) -> anyhow::Result<CertAndKey> {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        let key = rcgen::KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(CertAndKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A server certificate for `localhost` and `127.0.0.1`.
    pub fn server_cert(&self) -> anyhow::Result<CertAndKey> {
        self.issue(
            &["localhost", "127.0.0.1"],
            "localhost",
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate (`clientAuth`) with this common name (WeChat's carry the merchant
    /// id).
    pub fn client_cert(&self, common_name: &str) -> anyhow::Result<CertAndKey> {
        self.issue(&[], common_name, rcgen::ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// A rustls server config presenting `server`, requiring (or, if `optional`, asking for) a
/// client certificate issued by `client_ca`.
pub fn server_config(
    server: &CertAndKey,
    client_ca: &TestCa,
    optional: bool,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(
        client_ca.cert_pem().as_bytes(),
    )?)?;
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
    let verifier = if optional {
        verifier.allow_unauthenticated()
    } else {
        verifier
    }
    .build()?;
    let chain = CertificateDer::pem_slice_iter(server.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(server.key_pem.as_bytes())?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

// ---- The mTLS fake ------------------------------------------------------------------------------

/// Which client certificate a runtime config written by [`MtlsFake`] presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCert {
    /// One issued by the CA the fake requires (`client.pem` / `client.key`).
    Right,
    /// One issued by another CA (`wrong-client.pem` / `wrong-client.key`).
    WrongCa,
    /// An entry that trusts the fake's CA but presents no client certificate.
    None,
}

/// A directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> io::Result<Self> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An HTTPS server on `localhost` that requires a client certificate from its CA, with the PEM
/// files a runtime config names in a temp directory (removed on drop): `ca.pem` (the CA of the
/// server *and* of the right client certificate), `client.pem` / `client.key`,
/// `wrong-client.pem` / `wrong-client.key` (from another CA).
pub struct MtlsFake {
    /// The HTTPS server (requests it served, with their client certificates; failed handshakes).
    pub server: FakeServer,
    dir: TempDir,
    client: CertAndKey,
    wrong_client: CertAndKey,
}

impl MtlsFake {
    /// An HTTPS front requiring the client certificate, forwarding every request it accepts to
    /// the plain-http `upstream_origin` (`http://127.0.0.1:<port>`, e.g. a fake WeChat) and
    /// answering with its reply (502 if the upstream does not answer).
    pub async fn proxy(upstream_origin: &str) -> anyhow::Result<MtlsFake> {
        Self::proxy_with(upstream_origin, false).await
    }

    /// [`Self::proxy`] that also serves clients without a certificate (recorded with
    /// `client_cert: None`, as WeChat Pay serves its other APIs); a wrong certificate is still
    /// refused.
    pub async fn proxy_optional(upstream_origin: &str) -> anyhow::Result<MtlsFake> {
        Self::proxy_with(upstream_origin, true).await
    }

    async fn proxy_with(upstream_origin: &str, optional: bool) -> anyhow::Result<MtlsFake> {
        let upstream: http::Uri = upstream_origin.parse()?;
        let authority = upstream
            .authority()
            .context("upstream origin without authority")?
            .to_string();
        ensure!(
            upstream.scheme_str() == Some("http"),
            "the upstream must be plain http"
        );
        Self::start(optional, move |req| {
            let authority = authority.clone();
            async move {
                forward(&authority, req)
                    .await
                    .unwrap_or_else(|e| text_response(502, format!("mTLS fake: upstream: {e:#}")))
            }
        })
        .await
    }

    /// An HTTPS fake answering with `handler`; `optional`: a client without a certificate is
    /// served too (its requests record `client_cert: None`), one with a wrong certificate is
    /// still refused.
    pub async fn start<F, Fut>(optional: bool, handler: F) -> anyhow::Result<MtlsFake>
    where
        F: Fn(RecordedRequest) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = http::Response<Bytes>> + Send + 'static,
    {
        let ca = TestCa::new("spin-wxpay test CA")?;
        let other_ca = TestCa::new("another CA")?;
        let server_cert = ca.server_cert()?;
        let client = ca.client_cert("1900000109")?;
        let wrong_client = other_ca.client_cert("1900000109")?;
        let dir = TempDir::new("spin-wxpay-mtls")?;
        for (name, text) in [
            ("ca.pem", ca.cert_pem()),
            ("client.pem", client.cert_pem.clone()),
            ("client.key", client.key_pem.clone()),
            ("wrong-client.pem", wrong_client.cert_pem.clone()),
            ("wrong-client.key", wrong_client.key_pem.clone()),
        ] {
            std::fs::write(dir.0.join(name), text)?;
        }
        let config = server_config(&server_cert, &ca, optional)?;
        let server = FakeServer::start_tls(config, handler).await?;
        Ok(MtlsFake {
            server,
            dir,
            client,
            wrong_client,
        })
    }

    /// `https://localhost:<port>`: the origin for a variable and `allowed_outbound_hosts`.
    pub fn origin(&self) -> String {
        self.server.origin()
    }

    /// The host a `[[client_tls]]` entry names: `localhost` (no port, as Spin requires).
    pub fn host(&self) -> &'static str {
        "localhost"
    }

    /// The directory holding the PEM files (and the runtime configs written).
    pub fn dir(&self) -> &Path {
        &self.dir.0
    }

    /// The right client certificate's DER.
    pub fn client_cert_der(&self) -> Bytes {
        self.client.cert_der()
    }

    /// Whether a recorded `client_cert` is the right client certificate.
    pub fn is_right_client_cert(&self, cert: &Option<Bytes>) -> bool {
        cert.as_ref() == Some(&self.client_cert_der())
    }

    /// The wrong client certificate's DER (issued by another CA).
    pub fn wrong_client_cert_der(&self) -> Bytes {
        self.wrong_client.cert_der()
    }

    /// A `[[client_tls]]` entry for `component_ids` and [`Self::host`] trusting `ca.pem` and
    /// presenting `client`, with paths relative to [`Self::dir`] (where Spin resolves them
    /// when the runtime config file is in that directory).
    pub fn client_tls_entry(&self, component_ids: &[&str], client: ClientCert) -> String {
        let ids = component_ids
            .iter()
            .map(|id| format!("{id:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut entry = format!(
            "[[client_tls]]\ncomponent_ids = [{ids}]\nhosts = [\"{}\"]\nca_roots_file = \"ca.pem\"\n",
            self.host()
        );
        let files = match client {
            ClientCert::Right => Some(("client.pem", "client.key")),
            ClientCert::WrongCa => Some(("wrong-client.pem", "wrong-client.key")),
            ClientCert::None => None,
        };
        if let Some((cert, key)) = files {
            entry.push_str(&format!(
                "client_cert_file = \"{cert}\"\nclient_private_key_file = \"{key}\"\n"
            ));
        }
        entry
    }

    /// Writes `runtime-config-<n>.toml` with [`Self::client_tls_entry`] into [`Self::dir`];
    /// its path.
    pub fn write_runtime_config(
        &self,
        component_ids: &[&str],
        client: ClientCert,
    ) -> io::Result<PathBuf> {
        self.write_file(&self.client_tls_entry(component_ids, client))
    }

    /// Writes `text` as a new `runtime-config-<n>.toml` in [`Self::dir`]; its path.
    pub fn write_file(&self, text: &str) -> io::Result<PathBuf> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = self.dir.0.join(format!(
            "runtime-config-{}.toml",
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, text)?;
        Ok(path)
    }

    /// The requests served (each with the client certificate of its connection).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.server.requests()
    }

    /// Why each refused handshake failed, as the server saw it (e.g. "peer sent no
    /// certificates", "invalid peer certificate: UnknownIssuer", "received fatal alert:
    /// UnknownCA" when the client did not trust the server).
    pub fn tls_failures(&self) -> Vec<String> {
        self.server.tls_failures()
    }
}

/// Forwards `req` to `http://<authority>` over a new HTTP/1.1 connection.
async fn forward(authority: &str, req: RecordedRequest) -> anyhow::Result<http::Response<Bytes>> {
    let stream = tokio::net::TcpStream::connect(authority).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(wasmtime_wasi_http::io::TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut builder = http::Request::builder()
        .method(req.method)
        .uri(req.path_and_query);
    for (name, value) in &req.headers {
        if name != http::header::HOST {
            builder = builder.header(name, value);
        }
    }
    let request = builder
        .header(http::header::HOST, authority)
        .body(Full::new(req.body))?;
    let response = sender.send_request(request).await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(http::Response::from_parts(parts, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, dir: &Path) -> anyhow::Result<ClientTlsConfigs> {
        let table: toml::Table = toml::from_str(text)?;
        ClientTlsConfigs::from_toml(&table["client_tls"], dir)
    }

    fn pki_dir() -> (TempDir, TestCa) {
        let dir = TempDir::new("spin-wxpay-tls-unit").unwrap();
        let ca = TestCa::new("unit CA").unwrap();
        let client = ca.client_cert("c").unwrap();
        std::fs::write(dir.0.join("ca.pem"), ca.cert_pem()).unwrap();
        std::fs::write(dir.0.join("c.pem"), &client.cert_pem).unwrap();
        std::fs::write(dir.0.join("c.key"), &client.key_pem).unwrap();
        (dir, ca)
    }

    #[test]
    fn entries_are_validated_like_spin() {
        let (dir, _ca) = pki_dir();
        let cases = [
            (
                "[[client_tls]]\ncomponent_ids = [\"a\"]\nhosts = [\"localhost:8443\"]",
                "ports not currently supported",
            ),
            (
                "[[client_tls]]\ncomponent_ids = []\nhosts = [\"x\"]",
                "'component_ids' list may not be empty",
            ),
            (
                "[[client_tls]]\ncomponent_ids = [\"a\"]\nhosts = []",
                "'hosts' list may not be empty",
            ),
            (
                "[[client_tls]]\ncomponent_ids = [\"a\"]\nhosts = [\"x\"]\nca_file = \"ca.pem\"",
                "unknown field",
            ),
            (
                "[[client_tls]]\ncomponent_ids = [\"a\"]\nhosts = [\"x\"]\nclient_cert_file = \"c.pem\"",
                "client_cert_file specified without client_private_key_file",
            ),
            (
                "[[client_tls]]\ncomponent_ids = [\"a\"]\nhosts = [\"x\"]\nca_roots_file = \"missing.pem\"",
                "failed to load certificate(s)",
            ),
            (
                "[[client_tls]]\ncomponent_ids = [\"a\"]\nhosts = [\"x\"]\nca_roots_file = \"ca.pem\"\nca_use_platform_roots = false\nca_use_webpki_roots = false\nclient_cert_file = \"c.pem\"\nclient_private_key_file = \"ca.pem\"",
                "failed to load key",
            ),
            (
                "[[client_tls]]\ncomponent_ids = [\"a\"]\nhosts = [\"x\"]\nca_use_platform_roots = false",
                "at least one of",
            ),
        ];
        for (text, expected) in cases {
            let err = match parse(text, &dir.0) {
                Ok(_) => panic!("accepted: {text}"),
                Err(e) => format!("{e:#}"),
            };
            assert!(err.contains(expected), "{text}\n→ {err}");
        }
    }

    #[test]
    fn pem_files_as_openssl_pkcs12_writes_them_load() {
        // `openssl pkcs12 -nokeys` / `-nocerts -nodes` put `Bag Attributes` text before each
        // PEM block (README, "Client certificate for APIv2 refunds").
        let (dir, ca) = pki_dir();
        let client = ca.client_cert("1900000109").unwrap();
        let bag = "Bag Attributes\n    localKeyID: 96 84 AD 11 D3 E0\nsubject=CN = 1900000109\nissuer=CN = unit CA\n";
        std::fs::write(dir.0.join("cert.pem"), format!("{bag}{}", client.cert_pem)).unwrap();
        std::fs::write(
            dir.0.join("key.pem"),
            format!("{bag}Key Attributes: <No Attributes>\n{}", client.key_pem),
        )
        .unwrap();
        let certs = load_certs(&dir.0.join("cert.pem")).unwrap();
        assert_eq!(certs.len(), 1);
        assert_eq!(certs[0].as_ref(), client.cert_der().as_ref());
        load_key(&dir.0.join("key.pem")).unwrap();
        // An encrypted key (no `-nodes`) is not read.
        std::fs::write(
            dir.0.join("enc.pem"),
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        )
        .unwrap();
        assert!(load_key(&dir.0.join("enc.pem")).is_err());
    }

    #[test]
    fn lookup_is_by_component_and_host_first_entry_winning() {
        let (dir, _ca) = pki_dir();
        let configs = parse(
            "[[client_tls]]\ncomponent_ids = [\"admin\"]\nhosts = [\"localhost\"]\nca_roots_file = \"ca.pem\"\nclient_cert_file = \"c.pem\"\nclient_private_key_file = \"c.key\"\n\
             [[client_tls]]\ncomponent_ids = [\"admin\", \"order\"]\nhosts = [\"localhost\"]\nca_roots_file = \"ca.pem\"\n",
            &dir.0,
        )
        .unwrap();
        let admin = configs.for_component("admin");
        assert!(
            admin
                .for_host("localhost")
                .config
                .client_auth_cert_resolver
                .has_certs()
        );
        assert_eq!(admin.for_host("localhost").note, None);
        // Another host, or another component: no client certificate.
        assert!(
            !admin
                .for_host("127.0.0.1")
                .config
                .client_auth_cert_resolver
                .has_certs()
        );
        assert_eq!(admin.for_host("127.0.0.1").note, Some(NO_ENTRY_NOTE));
        let order = configs.for_component("order");
        assert!(
            !order
                .for_host("localhost")
                .config
                .client_auth_cert_resolver
                .has_certs()
        );
        assert_eq!(order.for_host("localhost").note, None);
        assert_eq!(
            configs.for_component("login").for_host("localhost").note,
            Some(NO_ENTRY_NOTE)
        );
    }
}
