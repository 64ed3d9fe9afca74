//! The released Spin CLI, for the tests and benchmarks that check the app under the real
//! runtime (the embedded host imitates it; this is the truth it is checked against).
//!
//! [`find_spin`] looks for a binary: `SPIN_BIN`, then `spin` on `PATH`, then the shared Spin
//! 4.0.2 kept beside the repository (`../shared/tools/spin/install.sh`, which unpacks it once).
//! [`spin_build`] runs `spin build` once per manifest and process. [`SpinUp`] runs `spin up` on
//! a free loopback port with its own state directory (a fresh SQLite key-value store), passes
//! variables as `SPIN_VARIABLE_*`, collects Spin's output, and kills the process when dropped.

use std::collections::HashSet;
use std::io::Read as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};

/// `found`, or `None` after saying on stderr (past the test harness's capture, so a passing run
/// still shows it) why `test` is skipped and how to run it (`hint`). With
/// `SPIN_WXPAY_REQUIRE_SPIN` set (CI) a missing tool is a failure instead: never a silent skip.
pub fn found_or_skip<T>(test: &str, found: Result<T, String>, hint: &str) -> Option<T> {
    match found {
        Ok(found) => Some(found),
        Err(why) if std::env::var_os("SPIN_WXPAY_REQUIRE_SPIN").is_some() => {
            panic!("SPIN_WXPAY_REQUIRE_SPIN is set, but: {why}")
        }
        Err(why) => {
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "{test} skipped: {why} ({hint})");
            None
        }
    }
}

/// The Spin binary ([`find_spin`]) for `test`, or `None` ([`found_or_skip`]).
pub fn spin_or_skip(test: &str) -> Option<PathBuf> {
    found_or_skip(test, find_spin(), "set SPIN_BIN to run it")
}

/// The Spin binary to use, or why there is none (the caller prints it and skips).
pub fn find_spin() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os("SPIN_BIN").filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(format!("SPIN_BIN={} is not a file", bin.display()))
        };
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("spin");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    let install = workspace_root().join("../shared/tools/spin/install.sh");
    if !install.is_file() {
        return Err(format!(
            "no Spin binary: SPIN_BIN is unset, `spin` is not on PATH and {} does not exist",
            install.display()
        ));
    }
    let out = Command::new("bash")
        .arg(&install)
        .output()
        .map_err(|e| format!("{}: {e}", install.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed: {}",
            install.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let printed = String::from_utf8_lossy(&out.stdout);
    let bin = PathBuf::from(printed.lines().last().unwrap_or("").trim());
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!("{} printed no binary path", install.display()))
    }
}

/// The repository root (the workspace of this crate). Cargo's run-time `CARGO_MANIFEST_DIR`
/// first: a test binary built in another clone that shares the target directory (CI's) has
/// that clone's path compiled in.
pub fn workspace_root() -> PathBuf {
    let crate_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    crate_dir.join("../..")
}

/// `spin build -f <manifest>`, once per manifest in this process (concurrent callers wait).
pub fn spin_build(spin: &Path, manifest: &Path) -> anyhow::Result<()> {
    static BUILT: OnceLock<Mutex<HashSet<PathBuf>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let manifest = manifest
        .canonicalize()
        .with_context(|| format!("manifest {}", manifest.display()))?;
    if built.contains(&manifest) {
        return Ok(());
    }
    let out = Command::new(spin)
        .arg("build")
        .arg("-f")
        .arg(&manifest)
        .output()
        .context("running spin build")?;
    if !out.status.success() {
        bail!(
            "spin build -f {} failed:\n{}\n{}",
            manifest.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    built.insert(manifest);
    Ok(())
}

/// A response as a client on the wire sees it.
#[derive(Debug, Clone)]
pub struct WireResponse {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl WireResponse {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (panics with the body if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A running `spin up`; killed when dropped.
pub struct SpinUp {
    child: Child,
    addr: SocketAddr,
    state_dir: PathBuf,
    output: Arc<Mutex<String>>,
}

/// How long `spin up` may take to answer its first request (it compiles every component).
const START_TIMEOUT: Duration = Duration::from_secs(120);

impl SpinUp {
    /// `spin up -f <manifest>` on a free loopback port with a fresh state directory and
    /// `variables` as `SPIN_VARIABLE_*`; returns once the listener accepts connections.
    pub async fn start(
        spin: &Path,
        manifest: &Path,
        variables: &[(&str, &str)],
    ) -> anyhow::Result<SpinUp> {
        Self::start_with(spin, manifest, variables, &[]).await
    }

    /// [`SpinUp::start`] with extra `spin up` arguments (e.g. `--runtime-config-file`).
    pub async fn start_with(
        spin: &Path,
        manifest: &Path,
        variables: &[(&str, &str)],
        args: &[&str],
    ) -> anyhow::Result<SpinUp> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let state_dir = std::env::temp_dir().join(format!(
            "spin-wxpay-real-spin-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&state_dir);
        std::fs::create_dir_all(&state_dir)?;
        let addr = free_loopback_addr()?;
        let mut cmd = Command::new(spin);
        cmd.arg("up")
            .arg("-f")
            .arg(manifest)
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--state-dir")
            .arg(&state_dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in variables {
            cmd.env(
                format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase()),
                value,
            );
        }
        let mut child = cmd.spawn().context("spawning spin up")?;
        let output = Arc::new(Mutex::new(String::new()));
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let output = output.clone();
            std::thread::spawn(move || collect(stream, &output));
        }
        let mut up = SpinUp {
            child,
            addr,
            state_dir,
            output,
        };
        let started = Instant::now();
        loop {
            if let Some(status) = up.child.try_wait()? {
                bail!("spin up exited ({status}):\n{}", up.output());
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(up);
            }
            if started.elapsed() > START_TIMEOUT {
                bail!(
                    "spin up did not listen within {START_TIMEOUT:?}:\n{}",
                    up.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything Spin and the components printed so far.
    pub fn output(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// One HTTP/1.1 request on a new connection. `Host` is the listen address; `content-length`
    /// is sent for a non-empty body (and for an empty one when `headers` names it).
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> anyhow::Result<WireResponse> {
        send(self.addr, method, path, headers, body.into()).await
    }
}

impl Drop for SpinUp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

/// One HTTP/1.1 request to `addr` on a new connection (see [`SpinUp::request`]).
pub async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> anyhow::Result<WireResponse> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let io = wasmtime_wasi_http::io::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut builder = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, addr.to_string());
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(Full::new(body))?;
    let response = tokio::time::timeout(Duration::from_secs(60), sender.send_request(request))
        .await
        .context("no response within 60 s")??;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(WireResponse {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    })
}

/// A loopback address no one listens on right now.
pub fn free_loopback_addr() -> std::io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

fn collect(mut stream: Box<dyn std::io::Read + Send>, output: &Mutex<String>) {
    let mut buf = [0u8; 8192];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}
