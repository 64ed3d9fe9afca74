//! Calling WeChat Pay through the [`Transport`] port in the configured version ([`Wechat`]),
//! and applying an orderquery answer to an order (shared by `GET /api/orders/{no}` and
//! reconcile).
//!
//! The flows speak one model for both versions: APIv2's (`OrderQuery`, `ReplyError::Refused`
//! with an [`ErrCode`]). An APIv3 reply is verified by its `Wechatpay-*` headers, then read
//! into that model (`crate::v3::api::err_code` maps its codes), so no flow has a v2 and a v3
//! copy.

use std::fmt;

use super::{
    ApiError, Clock, Env, HttpReply, Nonce, OutboundRequest, Store, Transport, TransportError,
    fresh_nonce, store_unavailable,
};
use crate::config::{ApiVersion, MerchantConfig, V3Config, WechatVerification};
use crate::order::{Event, Order, Trigger};
use crate::pay_params::PayParams;
use crate::time::{parse_beijing_compact, rfc3339};
use crate::v2::api::{self, ApiRequest, ErrCode, OrderQuery, ReplyError, TradeState};
use crate::v3::certificates::{self, CERTIFICATES_PATH, PlatformCertificate, StoredCertificate};
use crate::v3::sign::{RequestToSign, authorization};
use crate::v3::verify::{self as v3verify, SignatureHeaders, VerifyError, WechatPayKey};

/// Why a call to WeChat Pay gave no usable reply body. Carries no URL and no request data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CallError {
    Timeout,
    Unreachable,
    Denied,
    /// A reply with a non-2xx HTTP status.
    HttpStatus(u16),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Timeout => f.write_str("WeChat Pay did not answer in time"),
            CallError::Unreachable => f.write_str("WeChat Pay could not be reached"),
            CallError::Denied => f.write_str(
                "the host denied the outbound request to WeChat Pay (check allowed_outbound_hosts)",
            ),
            CallError::HttpStatus(s) => write!(f, "WeChat Pay answered HTTP {s}"),
        }
    }
}

impl From<&TransportError> for CallError {
    fn from(e: &TransportError) -> Self {
        match e {
            TransportError::Timeout => CallError::Timeout,
            TransportError::Denied => CallError::Denied,
            TransportError::Unreachable(_) | TransportError::Other(_) => CallError::Unreachable,
        }
    }
}

/// Sends a signed request once and returns the reply body of a 2xx answer.
pub(crate) async fn post<T: Transport>(
    transport: &T,
    merchant: &MerchantConfig,
    request: &ApiRequest,
) -> Result<Vec<u8>, CallError> {
    match transport
        .post_xml(&merchant.url(request.path), request.body.clone())
        .await
    {
        Ok(reply) if (200..300).contains(&reply.status) => Ok(reply.body),
        Ok(reply) => Err(CallError::HttpStatus(reply.status)),
        Err(e) => Err(CallError::from(&e)),
    }
}

/// A failed orderquery / closeorder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WechatError {
    Call(CallError),
    Reply(ReplyError),
    /// The request could not be built (a stored order number WeChat would refuse).
    Request(api::RequestError),
    /// A verified reply about another order.
    WrongOrder,
    /// An APIv3 reply that failed verification, or a verified one that is not what was asked
    /// (the text names the problem, never the body).
    Untrusted(String),
    /// An APIv3 request could not be made here (e.g. the component has no merchant key).
    Unsigned(String),
    /// The key-value store failed while looking up a platform certificate.
    Store(ApiError),
}

impl fmt::Display for WechatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WechatError::Call(e) => e.fmt(f),
            WechatError::Reply(e) => e.fmt(f),
            WechatError::Request(e) => e.fmt(f),
            WechatError::WrongOrder => f.write_str("WeChat Pay answered about another order"),
            WechatError::Untrusted(why) => {
                write!(f, "WeChat Pay's reply could not be trusted: {why}")
            }
            WechatError::Unsigned(why) => write!(f, "cannot sign the APIv3 request: {why}"),
            WechatError::Store(e) => f.write_str(&e.message),
        }
    }
}

impl WechatError {
    /// The err_code of a refusal, if that is what it was.
    pub(crate) fn err_code(&self) -> Option<&ErrCode> {
        match self {
            WechatError::Reply(ReplyError::Refused { err_code, .. }) => Some(err_code),
            _ => None,
        }
    }
}

/// `POST /pay/orderquery` for `order_no` (one attempt).
async fn query_v2<T: Transport, N: Nonce>(
    transport: &T,
    nonce: &N,
    merchant: &MerchantConfig,
    order_no: &str,
) -> Result<OrderQuery, WechatError> {
    let request = api::order_query_request(merchant, order_no, &fresh_nonce(nonce))
        .map_err(WechatError::Request)?;
    let body = post(transport, merchant, &request)
        .await
        .map_err(WechatError::Call)?;
    let answer = api::parse_order_query_reply(merchant, &body).map_err(WechatError::Reply)?;
    if answer.out_trade_no != order_no {
        return Err(WechatError::WrongOrder);
    }
    Ok(answer)
}

/// `POST /pay/closeorder` for `order_no` (one attempt).
async fn close_v2<T: Transport, N: Nonce>(
    transport: &T,
    nonce: &N,
    merchant: &MerchantConfig,
    order_no: &str,
) -> Result<(), WechatError> {
    let request = api::close_order_request(merchant, order_no, &fresh_nonce(nonce))
        .map_err(WechatError::Request)?;
    let body = post(transport, merchant, &request)
        .await
        .map_err(WechatError::Call)?;
    api::parse_close_order_reply(merchant, &body).map_err(WechatError::Reply)
}

// ---- The configured version -----------------------------------------------------------------------

/// `User-Agent` of APIv3 requests (WeChat answers 400 without one).
pub const USER_AGENT: &str = concat!("spin-wxpay/", env!("CARGO_PKG_VERSION"));

/// The KV key of a platform certificate ([`StoredCertificate`]) by its serial:
/// `v3:certificate:{serial}`. Looked up by the serial a message names, so verifying never lists
/// keys.
pub fn certificate_key(serial: &str) -> String {
    format!("v3:certificate:{}", serial.to_ascii_uppercase())
}

/// A prepared call (a JSAPI order / unified order, a refund): built (and for APIv3 signed)
/// once, so every retry sends identical bytes.
pub(crate) enum PreparedCall {
    V2(ApiRequest),
    V3(OutboundRequest),
}

/// WeChat Pay in the configured version (`wxpay_api_version`): order, query, close, and
/// APIv3's reply verification with the WeChat Pay public key or platform certificates
/// (refreshed once when a reply names an unknown serial).
pub(crate) struct Wechat<'a, S, T, C, N> {
    store: &'a S,
    transport: &'a T,
    clock: &'a C,
    nonce: &'a N,
    merchant: &'a MerchantConfig,
}

impl<'a, S: Store, T: Transport, C: Clock, N: Nonce> Wechat<'a, S, T, C, N> {
    pub fn new<K>(env: &'a Env<S, T, C, N, K>, merchant: &'a MerchantConfig) -> Self {
        Self {
            store: &env.store,
            transport: &env.transport,
            clock: &env.clock,
            nonce: &env.nonce,
            merchant,
        }
    }

    /// The APIv3 settings when the merchant speaks APIv3.
    fn v3(&self) -> Option<&'a V3Config> {
        match self.merchant.api_version {
            ApiVersion::V3 => self.merchant.v3.as_ref(),
            ApiVersion::V2 => None,
        }
    }

    /// The order for WeChat, prepared once (see [`PreparedCall`]).
    pub fn prepare_order(
        &self,
        order: &Order,
        client_ip: &str,
        expires_at: u64,
    ) -> Result<PreparedCall, String> {
        let merchant = self.merchant;
        let Some(v3) = self.v3() else {
            let time_expire = crate::time::beijing_compact(expires_at);
            return api::unified_order_request(
                merchant,
                &api::UnifiedOrder {
                    out_trade_no: &order.order_no,
                    body: &order.description,
                    total_fee: order.total_fee,
                    spbill_create_ip: client_ip,
                    openid: &order.openid,
                    time_expire: Some(&time_expire),
                    attach: order.attach.as_deref(),
                },
                &fresh_nonce(self.nonce),
            )
            .map(PreparedCall::V2)
            .map_err(|e| e.to_string());
        };
        let body = crate::v3::api::jsapi_order_body(&crate::v3::api::JsapiOrder {
            appid: &merchant.appid,
            mchid: &merchant.mch_id,
            description: &order.description,
            out_trade_no: &order.order_no,
            time_expire: Some(expires_at),
            attach: order.attach.as_deref(),
            notify_url: &merchant.notify_url,
            total: order.total_fee,
            openid: &order.openid,
        })
        .map_err(|e| e.to_string())?;
        self.v3_request(v3, "POST", crate::v3::api::JSAPI_PATH, body)
            .map(PreparedCall::V3)
            .map_err(|e| e.to_string())
    }

    /// Sends a prepared order once: its prepay id, or why not.
    pub async fn send_order(&self, prepared: &PreparedCall) -> Result<String, WechatError> {
        match prepared {
            PreparedCall::V2(request) => {
                let body = post(self.transport, self.merchant, request)
                    .await
                    .map_err(WechatError::Call)?;
                api::parse_unified_order_reply(self.merchant, &body)
                    .map(|prepay| prepay.prepay_id)
                    .map_err(WechatError::Reply)
            }
            PreparedCall::V3(request) => {
                let v3 = self.v3().ok_or_else(|| {
                    WechatError::Unsigned("the merchant no longer speaks APIv3".into())
                })?;
                let reply = self.v3_send(v3, request).await?;
                crate::v3::api::parse_prepay(&reply.body)
                    .map_err(|e| WechatError::Untrusted(e.to_string()))
            }
        }
    }

    /// The `wx.requestPayment` parameters for `prepay_id`: APIv2's signed with the API key,
    /// APIv3's with the merchant's private key (one RSA operation: the caller stores them).
    pub fn pay_params(&self, prepay_id: &str, now: u64) -> Result<PayParams, ApiError> {
        let merchant = self.merchant;
        let nonce = fresh_nonce(self.nonce);
        if let Some(v3) = self.v3() {
            let key = v3.merchant_key.as_ref().ok_or_else(|| {
                ApiError::new(
                    500,
                    "internal",
                    "this component has no merchant private key",
                )
            })?;
            return Ok(crate::pay_params::v3_pay_params(
                &merchant.appid,
                prepay_id,
                key,
                now,
                &nonce,
            ));
        }
        let key = merchant
            .v2_key()
            .map_err(|e| ApiError::new(503, "config_error", e.to_string()))?;
        Ok(crate::pay_params::pay_params(
            &merchant.appid,
            prepay_id,
            key,
            merchant.sign_type,
            now,
            &nonce,
        ))
    }

    /// A refund for WeChat, prepared once (see [`PreparedCall`]): APIv2's goes to
    /// `/secapi/pay/refund`, over the merchant's client certificate, which the host presents
    /// (Spin's `[[client_tls]]`), never this code.
    pub fn prepare_refund(
        &self,
        order: &Order,
        refund: &crate::refund::RefundAsked,
        notify_url: Option<&str>,
    ) -> Result<PreparedCall, String> {
        let merchant = self.merchant;
        let Some(v3) = self.v3() else {
            return crate::v2::refund::refund_request(
                merchant,
                &crate::v2::refund::RefundOrder {
                    out_trade_no: &order.order_no,
                    out_refund_no: &refund.refund_no,
                    total_fee: order.total_fee,
                    refund_fee: refund.amount,
                    refund_desc: refund.reason.as_deref(),
                    notify_url,
                },
                &fresh_nonce(self.nonce),
            )
            .map(PreparedCall::V2)
            .map_err(|e| e.to_string());
        };
        let body = crate::v3::refund::refund_body(&crate::v3::refund::RefundOrder {
            out_trade_no: &order.order_no,
            out_refund_no: &refund.refund_no,
            reason: refund.reason.as_deref(),
            notify_url,
            refund: refund.amount,
            total: order.total_fee,
        })
        .map_err(|e| e.to_string())?;
        self.v3_request(v3, "POST", crate::v3::refund::REFUNDS_PATH, body)
            .map(PreparedCall::V3)
            .map_err(|e| e.to_string())
    }

    /// Sends a prepared refund once: WeChat accepted it (APIv2: PROCESSING with its refund id;
    /// APIv3: the refund as it stands), or why not.
    pub async fn send_refund(
        &self,
        prepared: &PreparedCall,
        out_refund_no: &str,
    ) -> Result<crate::refund::RefundOutcomeReport, WechatError> {
        match prepared {
            PreparedCall::V2(request) => {
                let body = post(self.transport, self.merchant, request)
                    .await
                    .map_err(WechatError::Call)?;
                let accepted = crate::v2::refund::parse_refund_reply(self.merchant, &body)
                    .map_err(WechatError::Reply)?;
                if accepted.out_refund_no != out_refund_no {
                    return Err(WechatError::WrongOrder);
                }
                Ok(crate::refund::RefundOutcomeReport {
                    status: crate::refund::RefundStatus::Processing,
                    refund_id: accepted.refund_id,
                    refund_fee: accepted.refund_fee,
                    success_time: None,
                })
            }
            PreparedCall::V3(request) => {
                let v3 = self.v3().ok_or_else(|| {
                    WechatError::Unsigned("the merchant no longer speaks APIv3".into())
                })?;
                let reply = self.v3_send(v3, request).await?;
                let untrusted =
                    |e: crate::v3::api::ReplyError| WechatError::Untrusted(e.to_string());
                let report = crate::v3::refund::V3Refund::parse(&reply.body)
                    .and_then(|r| r.report())
                    .map_err(untrusted)?;
                if report.refund_no != out_refund_no {
                    return Err(WechatError::WrongOrder);
                }
                Ok(crate::refund::RefundOutcomeReport {
                    status: report.status,
                    refund_id: report.refund_id,
                    refund_fee: report.refund_fee,
                    success_time: report.success_time,
                })
            }
        }
    }

    /// A refund's state at WeChat, by our refund number (one attempt).
    pub async fn query_refund(
        &self,
        refund_no: &str,
    ) -> Result<crate::refund::RefundReport, WechatError> {
        let report = match self.v3() {
            None => {
                let request = crate::v2::refund::refund_query_request(
                    self.merchant,
                    refund_no,
                    &fresh_nonce(self.nonce),
                )
                .map_err(WechatError::Request)?;
                let body = post(self.transport, self.merchant, &request)
                    .await
                    .map_err(WechatError::Call)?;
                crate::v2::refund::parse_refund_query_reply(self.merchant, &body, refund_no)
                    .map_err(WechatError::Reply)?
            }
            Some(v3) => {
                let url = crate::v3::refund::refund_query_url(refund_no);
                let request = self.v3_request(v3, "GET", &url, String::new())?;
                let reply = self.v3_send(v3, &request).await?;
                crate::v3::refund::V3Refund::parse(&reply.body)
                    .and_then(|r| r.report())
                    .map_err(|e| WechatError::Untrusted(e.to_string()))?
            }
        };
        if report.refund_no != refund_no {
            return Err(WechatError::WrongOrder);
        }
        Ok(report)
    }

    /// The order's state at WeChat (one attempt).
    pub async fn query(&self, order_no: &str) -> Result<OrderQuery, WechatError> {
        let Some(v3) = self.v3() else {
            return query_v2(self.transport, self.nonce, self.merchant, order_no).await;
        };
        if !crate::order::valid_out_trade_no(order_no) {
            return Err(WechatError::Request(api::RequestError::OutTradeNo));
        }
        let url = crate::v3::api::query_url(order_no, &self.merchant.mch_id);
        let request = self.v3_request(v3, "GET", &url, String::new())?;
        let reply = self.v3_send(v3, &request).await?;
        let untrusted = |e: crate::v3::api::ReplyError| WechatError::Untrusted(e.to_string());
        let transaction = crate::v3::api::Transaction::parse(&reply.body).map_err(untrusted)?;
        transaction
            .check_merchant(&self.merchant.appid, &self.merchant.mch_id)
            .map_err(untrusted)?;
        if transaction.out_trade_no != order_no {
            return Err(WechatError::WrongOrder);
        }
        Ok(OrderQuery {
            out_trade_no: transaction.out_trade_no.clone(),
            trade_state: transaction.trade_state(),
            paid: transaction.paid().map_err(untrusted)?,
        })
    }

    /// Closes the order at WeChat (one attempt).
    pub async fn close(&self, order_no: &str) -> Result<(), WechatError> {
        let Some(v3) = self.v3() else {
            return close_v2(self.transport, self.nonce, self.merchant, order_no).await;
        };
        if !crate::order::valid_out_trade_no(order_no) {
            return Err(WechatError::Request(api::RequestError::OutTradeNo));
        }
        let url = crate::v3::api::close_url(order_no);
        let body = crate::v3::api::close_body(&self.merchant.mch_id);
        let request = self.v3_request(v3, "POST", &url, body)?;
        self.v3_send(v3, &request).await.map(|_| ())
    }

    /// An APIv3 request signed with the merchant key (`path_and_query` exactly as sent).
    fn v3_request(
        &self,
        v3: &V3Config,
        method: &'static str,
        path_and_query: &str,
        body: String,
    ) -> Result<OutboundRequest, WechatError> {
        let key = v3.merchant_key.as_ref().ok_or_else(|| {
            WechatError::Unsigned("this component has no merchant private key".into())
        })?;
        let nonce = fresh_nonce(self.nonce);
        let authorization = authorization(
            key,
            &RequestToSign {
                mchid: &self.merchant.mch_id,
                serial_no: &v3.mch_cert_serial,
                method,
                url: path_and_query,
                timestamp: self.clock.now_unix(),
                nonce: &nonce,
                body: &body,
            },
        );
        let mut headers = vec![
            ("Authorization", authorization),
            ("Accept", "application/json".to_owned()),
            ("User-Agent", USER_AGENT.to_owned()),
        ];
        if !body.is_empty() {
            headers.push(("Content-Type", "application/json".to_owned()));
        }
        Ok(OutboundRequest {
            method,
            url: self.merchant.url(path_and_query),
            headers,
            body: body.into_bytes(),
        })
    }

    /// Sends an APIv3 request once. A 2xx reply is returned once its signature verifies; a
    /// verified 4xx is WeChat's refusal ([`ReplyError::Refused`], its code in APIv2's names);
    /// a 5xx (retried as it is, so unverified) is [`CallError::HttpStatus`]; anything
    /// unverified is [`WechatError::Untrusted`].
    async fn v3_send(
        &self,
        v3: &V3Config,
        request: &OutboundRequest,
    ) -> Result<HttpReply, WechatError> {
        let reply = self
            .transport
            .send(request)
            .await
            .map_err(|e| WechatError::Call(CallError::from(&e)))?;
        if reply.status >= 500 {
            return Err(WechatError::Call(CallError::HttpStatus(reply.status)));
        }
        let Some(headers) = reply.wechatpay_signature() else {
            return Err(WechatError::Untrusted(format!(
                "an HTTP {} reply without a Wechatpay-Signature",
                reply.status
            )));
        };
        self.verify_reply(v3, &headers, &reply.body).await?;
        if (200..300).contains(&reply.status) {
            return Ok(reply);
        }
        match crate::v3::api::refusal(reply.status, &reply.body) {
            crate::v3::api::ReplyError::Refused { code, message, .. } => {
                Err(WechatError::Reply(ReplyError::Refused {
                    err_code: crate::v3::api::err_code(&code),
                    err_code_des: message,
                }))
            }
            other => Err(WechatError::Untrusted(other.to_string())),
        }
    }

    /// Verifies a reply; on an unknown serial in platform-certificate mode, downloads the
    /// certificates once and tries again.
    async fn verify_reply(
        &self,
        v3: &V3Config,
        headers: &SignatureHeaders,
        body: &[u8],
    ) -> Result<(), WechatError> {
        let now = self.clock.now_unix();
        let signed = headers.signed(body);
        let keys = keys_for(self.store, v3, &headers.serial, now)
            .await
            .map_err(WechatError::Store)?;
        match v3verify::verify(&signed, &keys, now) {
            Err(VerifyError::UnknownSerial(_))
                if matches!(v3.verification, WechatVerification::PlatformCertificates) =>
            {
                self.refresh_certificates(v3).await?;
                let keys = keys_for(self.store, v3, &headers.serial, now)
                    .await
                    .map_err(WechatError::Store)?;
                v3verify::verify(&signed, &keys, now)
                    .map_err(|e| WechatError::Untrusted(e.to_string()))
            }
            other => other.map_err(|e| WechatError::Untrusted(e.to_string())),
        }
    }

    /// In APIv3 platform-certificate mode, fetches and stores the certificates now (reconcile,
    /// each run); nothing to do otherwise.
    pub async fn refresh_platform_certificates(&self) -> Result<(), WechatError> {
        match self.v3() {
            Some(v3) if matches!(v3.verification, WechatVerification::PlatformCertificates) => {
                self.refresh_certificates(v3).await
            }
            _ => Ok(()),
        }
    }

    /// `GET /v3/certificates`: the reply is verified with a certificate it lists (the bootstrap)
    /// or one already stored, then every valid certificate is stored by its serial (the same
    /// bytes from every instance: concurrent refreshes cannot lose one).
    async fn refresh_certificates(&self, v3: &V3Config) -> Result<(), WechatError> {
        let request = self.v3_request(v3, "GET", CERTIFICATES_PATH, String::new())?;
        let reply = self
            .transport
            .send(&request)
            .await
            .map_err(|e| WechatError::Call(CallError::from(&e)))?;
        if !(200..300).contains(&reply.status) {
            return Err(WechatError::Call(CallError::HttpStatus(reply.status)));
        }
        let now = self.clock.now_unix();
        let listed = certificates::read_listing(&reply.body, &v3.apiv3_key, now)
            .map_err(|e| WechatError::Untrusted(e.to_string()))?;
        let headers = reply.wechatpay_signature().ok_or_else(|| {
            WechatError::Untrusted("the certificate list has no Wechatpay-Signature".into())
        })?;
        let mut keys: Vec<WechatPayKey> = listed.iter().map(PlatformCertificate::to_key).collect();
        keys.extend(
            keys_for(self.store, v3, &headers.serial, now)
                .await
                .map_err(WechatError::Store)?,
        );
        v3verify::verify(&headers.signed(&reply.body), &keys, now)
            .map_err(|e| WechatError::Untrusted(e.to_string()))?;
        for certificate in &listed {
            let stored = serde_json::to_vec(&certificate.stored())
                .map_err(|e| WechatError::Untrusted(e.to_string()))?;
            self.store
                .set(&certificate_key(&certificate.serial), &stored)
                .await
                .map_err(|e| WechatError::Store(store_unavailable(&e)))?;
        }
        Ok(())
    }
}

/// The keys that may have signed a message naming `serial`: the WeChat Pay public key when
/// it is that key, else the stored platform certificate of that serial, if valid at `now` (in
/// either mode: during a switch from certificates to the public key both verify). One KV read
/// at most, none for the public key.
pub(crate) async fn keys_for<S: Store>(
    store: &S,
    v3: &V3Config,
    serial: &str,
    now: u64,
) -> Result<Vec<WechatPayKey>, ApiError> {
    if let WechatVerification::PublicKey(key) = &v3.verification
        && key.id == serial
    {
        return Ok(vec![key.clone()]);
    }
    if serial.is_empty() || serial.len() > 64 || !serial.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(Vec::new());
    }
    let stored = store
        .get(&certificate_key(serial))
        .await
        .map_err(|e| store_unavailable(&e))?;
    Ok(stored
        .and_then(|bytes| serde_json::from_slice::<StoredCertificate>(&bytes).ok())
        .filter(|c| c.serial.eq_ignore_ascii_case(serial))
        .and_then(|c| c.to_key(now))
        .map(|key| vec![key])
        .unwrap_or_default())
}

/// Records an alert unless the same reason is already on the order. Whether it was added.
pub(crate) fn alert_once(order: &mut Order, at: &str, reason: &str) -> bool {
    let known = order
        .events
        .iter()
        .any(|e| matches!(e, Event::Alert { reason: r, .. } if r == reason));
    if !known {
        order.record_alert(at, reason);
    }
    !known
}

/// What an orderquery answer did to an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum QueryEffect {
    /// Now PAID.
    Paid,
    /// Now CLOSED.
    Closed,
    /// Not moved; an alert was recorded (e.g. amount mismatch).
    Alerted,
    /// Nothing to change (NOTPAY, USERPAYING, or already in the reported state).
    Unchanged,
}

/// Applies a verified orderquery answer (whose out_trade_no is this order's). Payment events
/// are dated from WeChat's `time_end`, like the notification's, so both paths record the same
/// `paid_at`; other events are dated `now`.
pub(crate) fn apply_query(order: &mut Order, answer: &OrderQuery, now: u64) -> QueryEffect {
    let now_at = rfc3339(now);
    match (&answer.trade_state, &answer.paid) {
        (TradeState::Success | TradeState::Refund, Some(paid)) => {
            if paid.total_fee != order.total_fee {
                let reason = format!(
                    "orderquery reports total_fee {} paid, but the order total is {}; not \
                     marked paid",
                    paid.total_fee, order.total_fee
                );
                alert_once(order, &now_at, &reason);
                return QueryEffect::Alerted;
            }
            let at = parse_beijing_compact(&paid.time_end)
                .map(rfc3339)
                .unwrap_or(now_at);
            let trigger = Trigger::PaymentConfirmed {
                transaction_id: paid.transaction_id.clone(),
            };
            let effect = match order.apply(trigger, &at) {
                Ok(_) => QueryEffect::Paid,
                Err(e)
                    if e.is_already_paid()
                        && order.transaction_id.as_ref() == Some(&paid.transaction_id) =>
                {
                    QueryEffect::Unchanged
                }
                Err(e) => {
                    alert_once(order, &at, &format!("orderquery: {e}"));
                    return QueryEffect::Alerted;
                }
            };
            if answer.trade_state == TradeState::Refund {
                alert_once(order, &at, "orderquery reports the trade as REFUND");
            }
            effect
        }
        (TradeState::Closed | TradeState::Revoked, _) => {
            let state = if answer.trade_state == TradeState::Closed {
                "CLOSED"
            } else {
                "REVOKED"
            };
            let trigger = Trigger::ClosedAtWechat {
                reason: format!("orderquery trade_state {state}"),
            };
            match order.apply(trigger, &now_at) {
                Ok(_) => QueryEffect::Closed,
                Err(_) => QueryEffect::Unchanged,
            }
        }
        _ => QueryEffect::Unchanged,
    }
}
