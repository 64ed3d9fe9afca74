//! A tiny local HTTP/1.1 server for fakes (e.g. a fake WeChat Pay API) in tests.
//!
//! Binds `127.0.0.1:0`, records every request (method, path with query, headers, body) and
//! answers with a test-supplied async handler. Dropping the server stops accepting.
//! [`FakeServer::start_tls`] serves HTTPS instead (rustls, e.g. requiring a client certificate:
//! see [`crate::tls::MtlsFake`]), recording each request's client certificate and every failed
//! handshake.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use wasmtime_wasi_http::io::TokioIo;

/// A request the fake received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// The method.
    pub method: http::Method,
    /// Path and query, e.g. `/pay/unifiedorder?x=1`.
    pub path_and_query: String,
    /// All headers.
    pub headers: http::HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// HTTPS only: the client certificate (DER, the leaf) the connection presented.
    pub client_cert: Option<Bytes>,
}

impl RecordedRequest {
    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

type BoxedHandler = Arc<
    dyn Fn(RecordedRequest) -> Pin<Box<dyn Future<Output = http::Response<Bytes>> + Send>>
        + Send
        + Sync,
>;

/// A running fake server.
pub struct FakeServer {
    addr: SocketAddr,
    tls: bool,
    requests: Arc<Mutex<Vec<RecordedRequest>>>,
    tls_failures: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl FakeServer {
    /// Starts a server answering every request with `handler`.
    pub async fn start<F, Fut>(handler: F) -> std::io::Result<Self>
    where
        F: Fn(RecordedRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = http::Response<Bytes>> + Send + 'static,
    {
        Self::serve(None, handler).await
    }

    /// Starts an HTTPS server with `config` (e.g. [`crate::tls::server_config`], which can
    /// require a client certificate) answering every request with `handler`.
    pub async fn start_tls<F, Fut>(
        config: Arc<rustls::ServerConfig>,
        handler: F,
    ) -> std::io::Result<Self>
    where
        F: Fn(RecordedRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = http::Response<Bytes>> + Send + 'static,
    {
        Self::serve(Some(tokio_rustls::TlsAcceptor::from(config)), handler).await
    }

    async fn serve<F, Fut>(
        acceptor: Option<tokio_rustls::TlsAcceptor>,
        handler: F,
    ) -> std::io::Result<Self>
    where
        F: Fn(RecordedRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = http::Response<Bytes>> + Send + 'static,
    {
        let handler: BoxedHandler = Arc::new(move |req| Box::pin(handler(req)));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let tls = acceptor.is_some();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let tls_failures = Arc::new(Mutex::new(Vec::new()));
        let recorded = requests.clone();
        let failures = tls_failures.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let handler = handler.clone();
                let recorded = recorded.clone();
                let acceptor = acceptor.clone();
                let failures = failures.clone();
                tokio::spawn(async move {
                    let (io, client_cert) = match acceptor {
                        None => (Box::new(stream) as Box<dyn Io>, None),
                        Some(acceptor) => match acceptor.accept(stream).await {
                            Ok(tls) => {
                                let cert = tls
                                    .get_ref()
                                    .1
                                    .peer_certificates()
                                    .and_then(|c| c.first())
                                    .map(|c| Bytes::copy_from_slice(c.as_ref()));
                                (Box::new(tls) as Box<dyn Io>, cert)
                            }
                            Err(e) => {
                                failures
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .push(e.to_string());
                                return;
                            }
                        },
                    };
                    let service = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let handler = handler.clone();
                            let recorded = recorded.clone();
                            let client_cert = client_cert.clone();
                            async move {
                                let (parts, body) = req.into_parts();
                                let body = body
                                    .collect()
                                    .await
                                    .map(|c| c.to_bytes())
                                    .unwrap_or_default();
                                let request = RecordedRequest {
                                    method: parts.method,
                                    path_and_query: parts
                                        .uri
                                        .path_and_query()
                                        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
                                    headers: parts.headers,
                                    body,
                                    client_cert,
                                };
                                recorded
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .push(request.clone());
                                let response = handler(request).await;
                                Ok::<_, Infallible>(response.map(Full::new))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(io), service)
                        .await;
                });
            }
        });
        Ok(Self {
            addr,
            tls,
            requests,
            tls_failures,
            task,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>` (HTTPS: `https://localhost:<port>`, the name its certificate
    /// is for): the origin to put in a variable / `allowed_outbound_hosts`.
    pub fn origin(&self) -> String {
        if self.tls {
            format!("https://localhost:{}", self.addr.port())
        } else {
            format!("http://{}", self.addr)
        }
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl FakeServer {
    /// HTTPS: why each failed handshake failed, as rustls told the server.
    pub fn tls_failures(&self) -> Vec<String> {
        self.tls_failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A connection's byte stream, plain or TLS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A response with `status` and a text body.
pub fn text_response(status: u16, body: impl Into<String>) -> http::Response<Bytes> {
    let mut response = http::Response::new(Bytes::from(body.into()));
    *response.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    response
}
