//! APIv2 refunds (PROTOCOL.md "Refunds"): `POST /secapi/pay/refund` (sent over the merchant's
//! client certificate: Spin's runtime config presents it, never the component),
//! `POST /pay/refundquery`, and the refund notification, which carries no `sign`: it is
//! authenticated by decrypting `req_info` (AES-256-ECB, PKCS#7, the key the lowercase hex MD5
//! of the API key), and then its appid / mch_id are checked.

use aes::Aes256;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ecb::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyInit, block_padding::Pkcs7};
use md5::{Digest, Md5};

use super::Params;
use super::api::{ApiRequest, ReplyError, RequestError, required, signed_request, verified_reply};
use super::xml::{self, XmlError};
use crate::config::MerchantConfig;
use crate::money::Fen;
use crate::order::valid_out_trade_no;
use crate::refund::{RefundReport, RefundStatus, valid_refund_no};
use crate::secret::Secret;
use crate::time::parse_beijing_spaced;

pub const REFUND_PATH: &str = "/secapi/pay/refund";
pub const REFUND_QUERY_PATH: &str = "/pay/refundquery";

/// A refund as asked of WeChat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefundOrder<'a> {
    pub out_trade_no: &'a str,
    pub out_refund_no: &'a str,
    /// The order's paid total.
    pub total_fee: Fen,
    pub refund_fee: Fen,
    pub refund_desc: Option<&'a str>,
    /// Where the refund notification goes (the app's refund-notify route).
    pub notify_url: Option<&'a str>,
}

/// Builds `POST /secapi/pay/refund`. Retrying sends these same bytes (the same
/// `out_refund_no`: WeChat refunds once per number).
pub fn refund_request(
    merchant: &MerchantConfig,
    refund: &RefundOrder<'_>,
    nonce: &str,
) -> Result<ApiRequest, RequestError> {
    if !valid_out_trade_no(refund.out_trade_no) {
        return Err(RequestError::OutTradeNo);
    }
    if !valid_refund_no(refund.out_refund_no) {
        return Err(RequestError::OutRefundNo);
    }
    if refund.refund_fee == Fen::ZERO || refund.refund_fee > refund.total_fee {
        return Err(RequestError::RefundFee);
    }
    let total_fee = refund.total_fee.to_string();
    let refund_fee = refund.refund_fee.to_string();
    signed_request(
        merchant,
        REFUND_PATH,
        &[
            ("out_trade_no", refund.out_trade_no),
            ("out_refund_no", refund.out_refund_no),
            ("total_fee", &total_fee),
            ("refund_fee", &refund_fee),
            ("refund_desc", refund.refund_desc.unwrap_or("")),
            ("notify_url", refund.notify_url.unwrap_or("")),
        ],
        nonce,
    )
}

/// WeChat accepted a refund (it is PROCESSING until a notification or query says more).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundAccepted {
    pub out_refund_no: String,
    pub refund_id: String,
    pub refund_fee: Fen,
}

/// Reads a verified refund reply (`result_code` SUCCESS: accepted).
pub fn parse_refund_reply(
    merchant: &MerchantConfig,
    body: &[u8],
) -> Result<RefundAccepted, ReplyError> {
    let params = verified_reply(merchant, body)?;
    Ok(RefundAccepted {
        out_refund_no: required(&params, "out_refund_no")?.to_owned(),
        refund_id: required(&params, "refund_id")?.to_owned(),
        refund_fee: fen(&params, "refund_fee")?,
    })
}

/// Builds `POST /pay/refundquery` by our refund number.
pub fn refund_query_request(
    merchant: &MerchantConfig,
    out_refund_no: &str,
    nonce: &str,
) -> Result<ApiRequest, RequestError> {
    if !valid_refund_no(out_refund_no) {
        return Err(RequestError::OutRefundNo);
    }
    signed_request(
        merchant,
        REFUND_QUERY_PATH,
        &[("out_refund_no", out_refund_no)],
        nonce,
    )
}

fn fen(params: &Params, field: &'static str) -> Result<Fen, ReplyError> {
    required(params, field)?
        .parse::<Fen>()
        .map_err(|_| ReplyError::MissingField(field))
}

/// Reads a verified refund query reply: the refund with our number (`_0` when queried by it).
pub fn parse_refund_query_reply(
    merchant: &MerchantConfig,
    body: &[u8],
    out_refund_no: &str,
) -> Result<RefundReport, ReplyError> {
    let params = verified_reply(merchant, body)?;
    let count: usize = required(&params, "refund_count")?
        .parse()
        .map_err(|_| ReplyError::MissingField("refund_count"))?;
    let index = (0..count)
        .find(|i| {
            params
                .get(&format!("out_refund_no_{i}"))
                .map(String::as_str)
                == Some(out_refund_no)
        })
        .ok_or(ReplyError::MissingField("out_refund_no_$n"))?;
    let field = |name: &str| params.get(&format!("{name}_{index}")).map(String::as_str);
    let status = field("refund_status")
        .and_then(RefundStatus::parse)
        .ok_or(ReplyError::MissingField("refund_status_$n"))?;
    Ok(RefundReport {
        out_trade_no: required(&params, "out_trade_no")?.to_owned(),
        refund_no: out_refund_no.to_owned(),
        refund_id: field("refund_id").unwrap_or("").to_owned(),
        status,
        refund_fee: field("refund_fee")
            .and_then(|f| f.parse().ok())
            .ok_or(ReplyError::MissingField("refund_fee_$n"))?,
        total_fee: fen(&params, "total_fee")?,
        success_time: field("refund_success_time").and_then(|t| parse_beijing_spaced(t).ok()),
    })
}

/// Why a refund notification is not trusted or not ours (answer FAIL, change nothing).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefundNotifyError {
    #[error("refund notification is not acceptable XML: {0}")]
    Xml(#[from] XmlError),
    #[error("refund notification return_code is not SUCCESS")]
    CallFailed,
    #[error("refund notification has no req_info")]
    MissingReqInfo,
    #[error("req_info does not decrypt with our API key")]
    Undecryptable,
    #[error("refund notification is for another {0}")]
    Foreign(&'static str),
    #[error("refund notification lacks or garbles {0}")]
    MissingField(&'static str),
    #[error(transparent)]
    NoKey(#[from] crate::config::NoV2Key),
}

/// The `req_info` key: the 32 ASCII bytes of the lowercase hex MD5 of the API key.
fn req_info_key(api_key: &Secret) -> [u8; 32] {
    let digest = Md5::digest(api_key.expose().as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(hex::encode(digest).as_bytes());
    key
}

/// Decrypts `req_info`: base64, then AES-256-ECB with PKCS#7 padding. Failing to decrypt is
/// the notification's failing to authenticate.
pub fn decrypt_req_info(req_info: &str, api_key: &Secret) -> Result<Vec<u8>, RefundNotifyError> {
    let mut data = STANDARD
        .decode(req_info.trim())
        .map_err(|_| RefundNotifyError::Undecryptable)?;
    let cipher = ecb::Decryptor::<Aes256>::new(&req_info_key(api_key).into());
    let plain = cipher
        .decrypt_padded::<Pkcs7>(&mut data)
        .map_err(|_| RefundNotifyError::Undecryptable)?;
    Ok(plain.to_vec())
}

/// Encrypts a `req_info` as WeChat Pay does (the simulator and tests play WeChat): AES-256-ECB
/// with PKCS#7 padding under the MD5 of the API key, base64.
pub fn encrypt_req_info(plaintext: &[u8], api_key: &Secret) -> String {
    let cipher = ecb::Encryptor::<Aes256>::new(&req_info_key(api_key).into());
    STANDARD.encode(cipher.encrypt_padded_vec::<Pkcs7>(plaintext))
}

/// A refund notification as WeChat Pay sends it (the simulator and tests play WeChat): the
/// refund's fields `info` written as `<root>`, encrypted into `req_info` with `api_key`
/// ([`encrypt_req_info`]), in an outer `<xml>` with `return_code` SUCCESS, `appid`, `mch_id`
/// and `nonce_str`, and no `sign`.
pub fn refund_notification(
    appid: &str,
    mch_id: &str,
    nonce_str: &str,
    info: &Params,
    api_key: &Secret,
) -> String {
    let written = xml::write(info);
    let fields = written
        .strip_prefix("<xml>")
        .and_then(|rest| rest.strip_suffix("</xml>"))
        .unwrap_or_default();
    let plaintext = format!("<root>{fields}</root>");
    let mut outer = Params::new();
    outer.insert("return_code".into(), "SUCCESS".into());
    outer.insert("appid".into(), appid.into());
    outer.insert("mch_id".into(), mch_id.into());
    outer.insert("nonce_str".into(), nonce_str.into());
    outer.insert(
        "req_info".into(),
        encrypt_req_info(plaintext.as_bytes(), api_key),
    );
    xml::write(&outer)
}

/// Reads and authenticates a refund notification: `return_code` SUCCESS, `req_info` decrypted
/// with our key and read (its `<root>`), and appid / mch_id ours.
pub fn parse_refund_notification(
    body: &[u8],
    merchant: &MerchantConfig,
) -> Result<RefundReport, RefundNotifyError> {
    let outer = xml::read(body)?;
    if outer.get("return_code").map(String::as_str) != Some("SUCCESS") {
        return Err(RefundNotifyError::CallFailed);
    }
    let req_info = outer
        .get("req_info")
        .filter(|r| !r.is_empty())
        .ok_or(RefundNotifyError::MissingReqInfo)?;
    let plain = decrypt_req_info(req_info, merchant.v2_key()?)?;
    let inner = xml::read_root(&plain, "root").map_err(|_| RefundNotifyError::Undecryptable)?;
    // Checked after decryption: only a message made with our key is evidence of anything.
    if outer.get("appid") != Some(&merchant.appid) {
        return Err(RefundNotifyError::Foreign("appid"));
    }
    if outer.get("mch_id") != Some(&merchant.mch_id) {
        return Err(RefundNotifyError::Foreign("mch_id"));
    }
    let field = |name: &'static str| {
        inner
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
            .ok_or(RefundNotifyError::MissingField(name))
    };
    let money = |name: &'static str| {
        field(name)?
            .parse::<Fen>()
            .map_err(|_| RefundNotifyError::MissingField(name))
    };
    let status = RefundStatus::parse(field("refund_status")?)
        .ok_or(RefundNotifyError::MissingField("refund_status"))?;
    Ok(RefundReport {
        out_trade_no: field("out_trade_no")?.to_owned(),
        refund_no: field("out_refund_no")?.to_owned(),
        refund_id: field("refund_id")?.to_owned(),
        status,
        refund_fee: money("refund_fee")?,
        total_fee: money("total_fee")?,
        success_time: inner
            .get("success_time")
            .and_then(|t| parse_beijing_spaced(t).ok()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v2::api::tests::{merchant, signed_reply};
    use crate::v2::sign::{SignType, verify};
    use crate::v3::vectors::{text, vector};

    /// V6: WeChat's refund notification for the S1 merchant (key 192006…), as PROTOCOL.md
    /// gives it.
    #[test]
    fn v6_req_info_decrypts_and_reads() {
        let v = vector("V6_v2_refund_req_info");
        let key = Secret::new(text(&v, "api_key"));
        assert_eq!(req_info_key(&key), *text(&v, "aes_key").as_bytes());
        let plain = decrypt_req_info(&text(&v, "req_info"), &key).unwrap();
        assert_eq!(String::from_utf8(plain).unwrap(), text(&v, "plaintext"));
        assert_eq!(
            encrypt_req_info(text(&v, "plaintext").as_bytes(), &key),
            text(&v, "req_info")
        );
        let m = merchant(SignType::Md5);
        assert_eq!(m.v2_key().unwrap().expose(), key.expose());
        let report = parse_refund_notification(text(&v, "notification").as_bytes(), &m).unwrap();
        assert_eq!(report.refund_no, "131811191610442717309");
        assert_eq!(report.out_trade_no, "71106718111915575302817");
        assert_eq!(report.refund_id, "50000408942018111907145868882");
        assert_eq!(report.refund_fee, Fen(3960));
        assert_eq!(report.status, RefundStatus::Success);
    }

    #[test]
    fn a_built_refund_notification_reads_back() {
        let m = merchant(SignType::Md5);
        let mut info = Params::new();
        for (name, value) in [
            ("out_refund_no", "R1"),
            ("out_trade_no", "1217752501201407033233368018"),
            ("refund_id", "50000408942018111907145868882"),
            ("refund_fee", "1990"),
            ("total_fee", "3980"),
            ("refund_status", "REFUNDCLOSE"),
        ] {
            info.insert(name.into(), value.into());
        }
        let body = refund_notification(&m.appid, &m.mch_id, "n0nce", &info, m.v2_key().unwrap());
        assert!(!body.contains("<sign>"));
        let report = parse_refund_notification(body.as_bytes(), &m).unwrap();
        assert_eq!(report.status, RefundStatus::Closed);
        assert_eq!(report.refund_fee, Fen(1990));
        assert_eq!(report.success_time, None);
    }

    #[test]
    fn a_refund_notification_must_decrypt_with_our_key_and_be_ours() {
        let v = vector("V6_v2_refund_req_info");
        let body = text(&v, "notification");
        let m = merchant(SignType::Md5);
        // Another merchant key: it does not decrypt (and so proves nothing).
        let mut other = m.clone();
        other.api_key = Some(Secret::new("0".repeat(32)));
        assert_eq!(
            parse_refund_notification(body.as_bytes(), &other),
            Err(RefundNotifyError::Undecryptable)
        );
        // Tampered ciphertext.
        let tampered = body.replacen("WBzG", "WBzH", 1);
        assert_eq!(
            parse_refund_notification(tampered.as_bytes(), &m),
            Err(RefundNotifyError::Undecryptable)
        );
        // Ours by key, but another merchant's or app's id: refused.
        let mut foreign = m.clone();
        foreign.mch_id = "1900000109".into();
        assert_eq!(
            parse_refund_notification(body.as_bytes(), &foreign),
            Err(RefundNotifyError::Foreign("mch_id"))
        );
        let no_info = body.replace("req_info", "req_inf");
        assert_eq!(
            parse_refund_notification(no_info.as_bytes(), &m),
            Err(RefundNotifyError::MissingReqInfo)
        );
        let failed = body.replace("<return_code>SUCCESS", "<return_code>FAIL");
        assert_eq!(
            parse_refund_notification(failed.as_bytes(), &m),
            Err(RefundNotifyError::CallFailed)
        );
        assert!(matches!(
            parse_refund_notification(b"<!DOCTYPE x><xml/>", &m),
            Err(RefundNotifyError::Xml(_))
        ));
    }

    #[test]
    fn refund_requests_are_signed_and_checked() {
        let m = merchant(SignType::HmacSha256);
        let refund = RefundOrder {
            out_trade_no: "1217752501201407033233368018",
            out_refund_no: "R20240501-1",
            total_fee: Fen(3980),
            refund_fee: Fen(1990),
            refund_desc: Some("退一杯"),
            notify_url: Some("https://shop.example.com/api/wxpay/refund-notify"),
        };
        let request = refund_request(&m, &refund, "5K8264ILTKCH16CQ2502SI8ZNMTM67VS").unwrap();
        assert_eq!(request.path, REFUND_PATH);
        let sent = xml::read(request.body.as_bytes()).unwrap();
        assert_eq!(verify(&sent, m.v2_key().unwrap()), Ok(SignType::HmacSha256));
        assert_eq!(sent["out_refund_no"], "R20240501-1");
        assert_eq!(sent["refund_fee"], "1990");
        assert_eq!(sent["total_fee"], "3980");
        for (bad, expected) in [
            (
                RefundOrder {
                    refund_fee: Fen(0),
                    ..refund
                },
                RequestError::RefundFee,
            ),
            (
                RefundOrder {
                    refund_fee: Fen(3981),
                    ..refund
                },
                RequestError::RefundFee,
            ),
            (
                RefundOrder {
                    out_refund_no: "no spaces",
                    ..refund
                },
                RequestError::OutRefundNo,
            ),
            (
                RefundOrder {
                    out_trade_no: "x",
                    ..refund
                },
                RequestError::OutTradeNo,
            ),
        ] {
            assert_eq!(refund_request(&m, &bad, "n").unwrap_err(), expected);
        }
        // The reply: accepted, with WeChat's refund id.
        let reply = signed_reply(
            &m,
            &[
                ("return_code", "SUCCESS"),
                ("appid", &m.appid),
                ("mch_id", &m.mch_id),
                ("result_code", "SUCCESS"),
                ("out_refund_no", "R20240501-1"),
                ("refund_id", "50000408942018111907145868882"),
                ("refund_fee", "1990"),
            ],
        );
        let accepted = parse_refund_reply(&m, &reply).unwrap();
        assert_eq!(accepted.refund_id, "50000408942018111907145868882");
        assert_eq!(accepted.refund_fee, Fen(1990));
    }

    #[test]
    fn refund_query_finds_the_refund_by_its_number() {
        let m = merchant(SignType::Md5);
        let request = refund_query_request(&m, "R2", "n0nce").unwrap();
        assert_eq!(request.path, REFUND_QUERY_PATH);
        let reply = signed_reply(
            &m,
            &[
                ("return_code", "SUCCESS"),
                ("appid", &m.appid),
                ("mch_id", &m.mch_id),
                ("result_code", "SUCCESS"),
                ("out_trade_no", "1217752501201407033233368018"),
                ("total_fee", "3980"),
                ("refund_count", "2"),
                ("out_refund_no_0", "R1"),
                ("refund_status_0", "REFUNDCLOSE"),
                ("refund_fee_0", "100"),
                ("out_refund_no_1", "R2"),
                ("refund_id_1", "5000"),
                ("refund_status_1", "SUCCESS"),
                ("refund_fee_1", "1990"),
                ("refund_success_time_1", "2024-05-01 16:03:12"),
            ],
        );
        let report = parse_refund_query_reply(&m, &reply, "R2").unwrap();
        assert_eq!(report.status, RefundStatus::Success);
        assert_eq!(report.refund_fee, Fen(1990));
        assert_eq!(report.total_fee, Fen(3980));
        // 2024-05-01 16:03:12 in Beijing is 08:03:12Z.
        assert_eq!(report.success_time, Some(1_714_550_592));
        assert_eq!(
            parse_refund_query_reply(&m, &reply, "R9"),
            Err(ReplyError::MissingField("out_refund_no_$n"))
        );
    }
}
