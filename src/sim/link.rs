//! Simulator mode without self requests: the app's components reach the simulator in-process.
//!
//! Spin 4.0.x cannot send a self request from a WASIp3 (spin-sdk 6) component (its reused
//! instances have no self-request origin), so in simulator mode no WeChat call leaves the
//! component. Two [`Transport`]s stand where the network would be, and both carry the exact
//! bytes a live deployment sends and receives, so signing, the XML codec and reply
//! verification run exactly as in live mode:
//!
//! - [`SimulatorLink`]: the app → WeChat. A request to a URL under [`SIM_BASE`] is handed to the
//!   simulator's WeChat APIs ([`super::api`]: jscode2session, APIv2's unifiedorder, orderquery,
//!   closeorder, refund, refundquery, APIv3's JSAPI order, query, close, refund and refund
//!   query) on the same store, and its reply comes back as the reply body. A reply that
//!   takes longer than the network transport's first-byte timeout (the simulator's `timeout`
//!   fault) fails with [`TransportError::Timeout`], as it does over HTTP.
//! - [`NotifyLink`]: WeChat → the app. The simulator's notification delivery runs the app's
//!   route for the URL on the same store and answers with its exact reply, so the retry
//!   schedule and duplicate bursts of [`super::user::deliver`] work unchanged: a payment
//!   notification (`POST /_sim/pay`) to [`SIM_NOTIFY_URL`] runs the notify route's flow
//!   ([`notify::notify`]), a refund notification (`POST /_sim/refund`) to
//!   [`SIM_REFUND_NOTIFY_URL`] the refund-notify route's ([`refunds::notify`]). Any other URL
//!   is refused ([`TransportError::Denied`]).
//!
//! [`Outbound`] picks the network or the simulator by the configured mode.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use super::{SimConfig, SimRequest, Sleep};
use crate::config::{MerchantConfig, Mode, SIM_BASE, SIM_NOTIFY_URL, SIM_REFUND_NOTIFY_URL};
use crate::flows::{
    Clock, Env, HttpReply, Nonce, OutboundRequest, Request, Response, Store, Transport,
    TransportError, notify, refunds,
};

/// Which of the simulator's WeChat APIs a [`SimulatorLink`] reaches. A type rather than a
/// value, so that a component links only the simulator code it can call: the login component
/// has no use for WeChat Pay's APIs, whose RSA costs hundreds of kilobytes of Wasm.
pub trait SimApis {
    #[allow(async_fn_in_trait)]
    async fn serve<S: Store, C: Clock, N: Nonce, P: Sleep>(
        env: &Env<S, (), C, N, SimConfig>,
        sleep: &P,
        request: SimRequest<'_>,
    ) -> Option<Response>;
}

/// Every WeChat API the simulator plays ([`super::api`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct AllApis;

impl SimApis for AllApis {
    async fn serve<S: Store, C: Clock, N: Nonce, P: Sleep>(
        env: &Env<S, (), C, N, SimConfig>,
        sleep: &P,
        request: SimRequest<'_>,
    ) -> Option<Response> {
        super::api::<_, _, _, _, _, true>(env, sleep, request).await
    }
}

/// WeChat Pay's APIs without refunds, and WeChat's login: the order component's link (it
/// never refunds, and so carries none of the simulator's refund code).
#[derive(Debug, Clone, Copy, Default)]
pub struct PaymentApis;

impl SimApis for PaymentApis {
    async fn serve<S: Store, C: Clock, N: Nonce, P: Sleep>(
        env: &Env<S, (), C, N, SimConfig>,
        sleep: &P,
        request: SimRequest<'_>,
    ) -> Option<Response> {
        super::api::<_, _, _, _, _, false>(env, sleep, request).await
    }
}

/// WeChat's login API only ([`super::login_api`]): the login component's link.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoginApi;

impl SimApis for LoginApi {
    async fn serve<S: Store, C: Clock, N: Nonce, P: Sleep>(
        env: &Env<S, (), C, N, SimConfig>,
        _sleep: &P,
        request: SimRequest<'_>,
    ) -> Option<Response> {
        super::login_api(env, request).await
    }
}

/// The simulator's WeChat APIs (those of `A`) as a [`Transport`] (see the module
/// documentation).
#[derive(Debug, Clone)]
pub struct SimulatorLink<S, C, N, P, A = AllApis> {
    store: S,
    clock: C,
    nonce: N,
    sleep: P,
    first_byte_timeout: Duration,
    apis: PhantomData<A>,
}

impl<S: Store, C: Clock, N: Nonce, P: Sleep, A: SimApis> SimulatorLink<S, C, N, P, A> {
    /// A link over the app's `store`. `first_byte_timeout` is the network transport's, so a
    /// held-back reply times the caller out the same way.
    pub fn new(store: S, clock: C, nonce: N, sleep: P, first_byte_timeout: Duration) -> Self {
        Self {
            store,
            clock,
            nonce,
            sleep,
            first_byte_timeout,
            apis: PhantomData,
        }
    }

    async fn call(
        &self,
        method: &str,
        url: &str,
        authorization: Option<&str>,
        body: &[u8],
    ) -> Result<HttpReply, TransportError> {
        // Only the simulator's URLs: anything else would be a live call, which simulator mode
        // never makes.
        let rest = url.strip_prefix(SIM_BASE).ok_or(TransportError::Denied)?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let env = Env::new(
            &self.store,
            (),
            &self.clock,
            &self.nonce,
            SimConfig::serving(None),
        );
        let request = SimRequest {
            method,
            path,
            query,
            authorization,
            body,
        };
        let answer = A::serve(&env, &self.sleep, request);
        let response = within(&self.sleep, self.first_byte_timeout, answer)
            .await
            .ok_or(TransportError::Timeout)?
            .unwrap_or_else(super::not_found);
        Ok(HttpReply {
            status: response.status,
            headers: response
                .headers
                .into_iter()
                .map(|(name, value)| (name.to_ascii_lowercase(), value))
                .collect(),
            body: response.body,
        })
    }
}

impl<S: Store, C: Clock, N: Nonce, P: Sleep, A: SimApis> Transport
    for SimulatorLink<S, C, N, P, A>
{
    async fn post_xml(&self, url: &str, body: String) -> Result<HttpReply, TransportError> {
        self.call("POST", url, None, body.as_bytes()).await
    }

    async fn get(&self, url: &str) -> Result<HttpReply, TransportError> {
        self.call("GET", url, None, b"").await
    }

    async fn send(&self, request: &OutboundRequest) -> Result<HttpReply, TransportError> {
        let authorization = request.header("authorization");
        self.call(request.method, &request.url, authorization, &request.body)
            .await
    }
}

/// The app's notify routes (payments, refunds) as the simulator's [`Transport`] (see the module
/// documentation).
#[derive(Debug, Clone)]
pub struct NotifyLink<S, C> {
    store: S,
    clock: C,
    /// What the notify route verifies with; `None` (the simulator serves nothing, e.g. in live
    /// mode) refuses every delivery.
    merchant: Option<MerchantConfig>,
}

impl<S: Store, C: Clock> NotifyLink<S, C> {
    pub fn new(store: S, clock: C, merchant: Option<MerchantConfig>) -> Self {
        Self {
            store,
            clock,
            merchant,
        }
    }
}

impl<S: Store, C: Clock> NotifyLink<S, C> {
    /// The answer of the app's route for `url` (the payment or the refund notify route) to
    /// `request` (APIv3 when it carries `Wechatpay-*` headers).
    async fn deliver(&self, url: &str, request: Request) -> Result<HttpReply, TransportError> {
        let merchant = self.merchant.as_ref().ok_or(TransportError::Denied)?;
        let env = Env::new(&self.store, (), &self.clock, (), merchant.clone());
        let (response, _outcome) = match url {
            SIM_NOTIFY_URL => notify::notify(&env, &request).await,
            SIM_REFUND_NOTIFY_URL => refunds::notify(&env, &request).await,
            _ => return Err(TransportError::Denied),
        };
        Ok(HttpReply::new(response.status, response.body))
    }
}

impl<S: Store, C: Clock> Transport for NotifyLink<S, C> {
    async fn post_xml(&self, url: &str, body: String) -> Result<HttpReply, TransportError> {
        self.deliver(url, Request::new(body)).await
    }

    async fn get(&self, _url: &str) -> Result<HttpReply, TransportError> {
        Err(TransportError::Denied)
    }

    async fn send(&self, request: &OutboundRequest) -> Result<HttpReply, TransportError> {
        if request.method != "POST" {
            return Err(TransportError::Denied);
        }
        let mut inbound = Request::new(request.body.clone());
        inbound.content_type = request.header("content-type").map(str::to_owned);
        inbound.wechatpay =
            crate::v3::verify::SignatureHeaders::from_lookup(|name| request.header(name));
        self.deliver(&request.url, inbound).await
    }
}

/// A component's WeChat transport: the network in live mode, the simulator in simulator mode.
#[derive(Debug, Clone)]
pub enum Outbound<T, L> {
    Network(T),
    Simulator(L),
}

impl<T, L> Outbound<T, L> {
    /// [`Outbound::Simulator`] in [`Mode::Simulator`], else the network; only the chosen one is
    /// built.
    pub fn for_mode(
        mode: Mode,
        network: impl FnOnce() -> T,
        simulator: impl FnOnce() -> L,
    ) -> Self {
        match mode {
            Mode::Simulator => Outbound::Simulator(simulator()),
            Mode::Live => Outbound::Network(network()),
        }
    }
}

impl<T: Transport, L: Transport> Transport for Outbound<T, L> {
    async fn post_xml(&self, url: &str, body: String) -> Result<HttpReply, TransportError> {
        match self {
            Outbound::Network(t) => t.post_xml(url, body).await,
            Outbound::Simulator(l) => l.post_xml(url, body).await,
        }
    }

    async fn get(&self, url: &str) -> Result<HttpReply, TransportError> {
        match self {
            Outbound::Network(t) => t.get(url).await,
            Outbound::Simulator(l) => l.get(url).await,
        }
    }

    async fn send(&self, request: &OutboundRequest) -> Result<HttpReply, TransportError> {
        match self {
            Outbound::Network(t) => t.send(request).await,
            Outbound::Simulator(l) => l.send(request).await,
        }
    }
}

/// `work`'s output, or `None` if `limit` passed first. `work` is polled first, so work that is
/// ready at once wins even over a sleep that is (as in native tests).
pub async fn within<P: Sleep, F: Future>(sleep: &P, limit: Duration, work: F) -> Option<F::Output> {
    let mut work = pin!(work);
    let mut deadline = pin!(sleep.sleep(limit));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(output) = work.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        if deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}
