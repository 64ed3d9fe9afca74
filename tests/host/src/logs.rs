//! Guest stdout/stderr capture.
//!
//! Spin writes each component's output to the terminal (and, with `spin up`, to
//! `.spin/logs/<component>_stdout.txt` / `_stderr.txt`). Here the output is recorded per app,
//! line by line, tagged with its component and stream, so a test can assert on everything the
//! guests printed (e.g. that no secret appears); each line is also echoed to the test's own
//! output as `[component] text` (stdout) or `[component:err] text` (stderr), where libtest
//! captures it.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Which guest stream a piece of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The guest's stdout.
    Stdout,
    /// The guest's stderr.
    Stderr,
}

/// One line a guest wrote (with its `\n`), or output not yet ended by a newline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// The component that wrote it.
    pub component: String,
    /// Which stream.
    pub stream: Stream,
    /// The text (lossy UTF-8).
    pub text: String,
}

/// All guest output of one app.
#[derive(Clone, Default)]
pub(crate) struct Logs {
    inner: Arc<Mutex<LogsInner>>,
    echo: bool,
}

#[derive(Default)]
struct LogsInner {
    /// Complete lines, in the order they were completed.
    entries: Vec<LogEntry>,
    /// Per (component, stream): text written since the last newline. Guests write in pieces
    /// (Rust's stderr is unbuffered: `eprintln!` is several writes).
    pending: Vec<LogEntry>,
}

impl Logs {
    pub(crate) fn new(echo: bool) -> Self {
        Self {
            inner: Arc::default(),
            echo,
        }
    }

    /// Complete lines, then any unterminated output.
    pub(crate) fn entries(&self) -> Vec<LogEntry> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .entries
            .iter()
            .chain(inner.pending.iter().filter(|p| !p.text.is_empty()))
            .cloned()
            .collect()
    }

    pub(crate) fn sink(&self, component: &str, stream: Stream) -> LogSink {
        LogSink {
            logs: self.clone(),
            component: component.into(),
            stream,
        }
    }

    fn record(&self, component: &str, stream: Stream, bytes: &[u8]) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let index = match inner
            .pending
            .iter()
            .position(|p| p.component == component && p.stream == stream)
        {
            Some(index) => index,
            None => {
                inner.pending.push(LogEntry {
                    component: component.to_owned(),
                    stream,
                    text: String::new(),
                });
                inner.pending.len() - 1
            }
        };
        inner.pending[index]
            .text
            .push_str(&String::from_utf8_lossy(bytes));
        while let Some(newline) = inner.pending[index].text.find('\n') {
            let rest = inner.pending[index].text.split_off(newline + 1);
            let line = std::mem::replace(&mut inner.pending[index].text, rest);
            if self.echo {
                let tag = match stream {
                    Stream::Stdout => component.to_owned(),
                    Stream::Stderr => format!("{component}:err"),
                };
                // print!/eprint! (not io::stdout) so that libtest captures it per test.
                match stream {
                    Stream::Stdout => print!("[{tag}] {line}"),
                    Stream::Stderr => eprint!("[{tag}] {line}"),
                }
            }
            inner.entries.push(LogEntry {
                component: component.to_owned(),
                stream,
                text: line,
            });
        }
    }
}

/// A guest stdout or stderr: a [`StdoutStream`] for `WasiCtxBuilder` (serves WASIp2 and
/// WASIp3 writes alike).
#[derive(Clone)]
pub(crate) struct LogSink {
    logs: Logs,
    component: Arc<str>,
    stream: Stream,
}

impl IsTerminal for LogSink {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogSink {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for LogSink {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.logs.record(&self.component, self.stream, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
