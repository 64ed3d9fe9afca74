//! A real `redis-server` for the tests that run the app under the released Spin on Redis
//! (`tests/host/tests/redis.rs`): Spin's `[key_value_store.default] type = "redis"` runtime
//! config, several `spin up` processes sharing one store, and Redis stopping under them.
//!
//! [`find_redis_server`] looks for the binary (`REDIS_SERVER`, then `redis-server` on `PATH`).
//! [`RedisServer`] runs it on a free loopback port with its own temporary directory, persistence
//! on (`appendonly yes`, `appendfsync always`: every write Redis acknowledged is on disk, so a
//! killed and restarted server still has it), can be killed (`SIGKILL`, a crash) and restarted
//! on the same port and data, writes the Spin runtime config pointing at it, and is killed and
//! its directory removed when dropped. [`RedisClient`] is a minimal RESP client over a
//! `TcpStream` (no dependency) for reading keys and `INFO commandstats`.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::real_spin::free_loopback_addr;

/// The `redis-server` binary to use, or why there is none (the caller prints it and skips).
pub fn find_redis_server() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os("REDIS_SERVER").filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(format!("REDIS_SERVER={} is not a file", bin.display()))
        };
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("redis-server");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(
        "no redis-server: REDIS_SERVER is unset and `redis-server` is not on PATH \
         (Debian/Ubuntu: apt-get install redis-server)"
            .into(),
    )
}

/// How long a (re)started server may take to answer `PING` with `PONG` (loading its data).
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `redis-server` with its own data directory; killed and removed when dropped.
pub struct RedisServer {
    bin: PathBuf,
    child: Option<Child>,
    port: u16,
    /// Holds `data/` (Redis's `dir`), `redis.log` and `runtime-config.toml`.
    root: PathBuf,
}

impl RedisServer {
    /// Starts `bin` on a free loopback port with an empty data directory and persistence on;
    /// returns once it answers `PING`.
    pub fn start(bin: &Path) -> anyhow::Result<RedisServer> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let root = std::env::temp_dir().join(format!(
            "spin-wxpay-redis-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("data"))?;
        let port = free_loopback_addr()?.port();
        let mut server = RedisServer {
            bin: bin.to_owned(),
            child: None,
            port,
            root,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let child = Command::new(&self.bin)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.root.join("data"))
            .arg("--logfile")
            .arg(self.root.join("redis.log"))
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(["--save", ""])
            .args(["--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("spawning {}", self.bin.display()))?;
        self.child = Some(child);
        let started = Instant::now();
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                bail!("redis-server exited ({status}):\n{}", self.log());
            }
            // `-LOADING` while it reads its data back: not ready yet.
            if let Ok(Resp::Simple(pong)) = self.client().and_then(|mut c| c.command(&["PING"]))
                && pong == "PONG"
            {
                return Ok(());
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "redis-server did not answer PING within {READY_TIMEOUT:?}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the server (`SIGKILL`: a crash, nothing flushed beyond what `appendfsync always`
    /// already wrote) and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same data (after [`Self::kill`]);
    /// returns once it answers `PING`, its data loaded.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Writes a Spin runtime config putting the key-value store `default` on this server; its
    /// path, for `spin up --runtime-config-file`.
    pub fn runtime_config_file(&self) -> anyhow::Result<PathBuf> {
        let path = self.root.join("runtime-config.toml");
        std::fs::write(
            &path,
            format!(
                "[key_value_store.default]\ntype = \"redis\"\nurl = \"{}\"\n",
                self.url()
            ),
        )?;
        Ok(path)
    }

    /// A new connection to the server.
    pub fn client(&self) -> anyhow::Result<RedisClient> {
        RedisClient::connect(self.port)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("redis.log")).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A RESP value as the server sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Resp>>),
}

/// A minimal synchronous RESP2 client (one connection, one command at a time).
pub struct RedisClient {
    reader: BufReader<TcpStream>,
}

impl RedisClient {
    pub fn connect(port: u16) -> anyhow::Result<RedisClient> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        Ok(RedisClient {
            reader: BufReader::new(stream),
        })
    }

    /// Sends one command; its reply (a Redis error is `Resp::Error`, not `Err`).
    pub fn command(&mut self, args: &[&str]) -> anyhow::Result<Resp> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.command_bytes(&args)
    }

    pub fn command_bytes(&mut self, args: &[&[u8]]) -> anyhow::Result<Resp> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
        self.reader.get_mut().write_all(&out)?;
        self.read()
    }

    fn read(&mut self) -> anyhow::Result<Resp> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            bail!("redis closed the connection");
        }
        let line = line.trim_end_matches("\r\n");
        let (kind, rest) = line.split_at(1.min(line.len()));
        Ok(match kind {
            "+" => Resp::Simple(rest.to_owned()),
            "-" => Resp::Error(rest.to_owned()),
            ":" => Resp::Int(rest.parse()?),
            "$" => {
                let len: i64 = rest.parse()?;
                if len < 0 {
                    Resp::Bulk(None)
                } else {
                    let mut buf = vec![0; len as usize + 2];
                    self.reader.read_exact(&mut buf)?;
                    buf.truncate(len as usize);
                    Resp::Bulk(Some(buf))
                }
            }
            "*" => {
                let len: i64 = rest.parse()?;
                if len < 0 {
                    Resp::Array(None)
                } else {
                    let mut items = Vec::with_capacity(len as usize);
                    for _ in 0..len {
                        items.push(self.read()?);
                    }
                    Resp::Array(Some(items))
                }
            }
            _ => bail!("not a RESP reply: {line:?}"),
        })
    }

    /// `GET key`.
    pub fn get(&mut self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        match self.command(&["GET", key])? {
            Resp::Bulk(value) => Ok(value),
            other => bail!("GET {key}: {other:?}"),
        }
    }

    /// `SET key value`.
    pub fn set(&mut self, key: &str, value: &[u8]) -> anyhow::Result<()> {
        match self.command_bytes(&[b"SET", key.as_bytes(), value])? {
            Resp::Simple(ok) if ok == "OK" => Ok(()),
            other => bail!("SET {key}: {other:?}"),
        }
    }

    /// Every key (`KEYS *`), sorted.
    pub fn keys(&mut self) -> anyhow::Result<Vec<String>> {
        match self.command(&["KEYS", "*"])? {
            Resp::Array(Some(items)) => {
                let mut keys = items
                    .into_iter()
                    .map(|item| match item {
                        Resp::Bulk(Some(k)) => Ok(String::from_utf8_lossy(&k).into_owned()),
                        other => bail!("KEYS: {other:?}"),
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                keys.sort();
                Ok(keys)
            }
            other => bail!("KEYS: {other:?}"),
        }
    }

    /// `INFO <section>` as text.
    pub fn info(&mut self, section: &str) -> anyhow::Result<String> {
        match self.command(&["INFO", section])? {
            Resp::Bulk(Some(text)) => Ok(String::from_utf8_lossy(&text).into_owned()),
            other => bail!("INFO {section}: {other:?}"),
        }
    }

    /// `CONFIG RESETSTAT`: the command counters start from zero.
    pub fn reset_stats(&mut self) -> anyhow::Result<()> {
        match self.command(&["CONFIG", "RESETSTAT"])? {
            Resp::Simple(ok) if ok == "OK" => Ok(()),
            other => bail!("CONFIG RESETSTAT: {other:?}"),
        }
    }

    /// Calls per command since the last [`Self::reset_stats`] (`INFO commandstats`), without
    /// the `CONFIG RESETSTAT` and `INFO` this client sent: `{"get": 3, "ping": 1, ...}`.
    pub fn command_calls(&mut self) -> anyhow::Result<BTreeMap<String, u64>> {
        let info = self.info("commandstats")?;
        let mut calls = BTreeMap::new();
        for line in info.lines() {
            let Some((name, stats)) = line
                .strip_prefix("cmdstat_")
                .and_then(|l| l.split_once(':'))
            else {
                continue;
            };
            if name == "config|resetstat" || name == "info" {
                continue;
            }
            let n = stats
                .split(',')
                .find_map(|s| s.strip_prefix("calls="))
                .with_context(|| format!("no calls in {line:?}"))?
                .parse()?;
            calls.insert(name.to_owned(), n);
        }
        Ok(calls)
    }
}
