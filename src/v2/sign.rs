//! APIv2 signatures (PROTOCOL.md "APIv2 signature"): MD5 or HMAC-SHA256 over the sorted
//! `k=v&…&key=API_KEY` string, uppercase hex.

use std::fmt;
use std::str::FromStr;

use hmac::{KeyInit, Mac};
use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

use super::Params;
use crate::secret::Secret;

/// The name of the signature field, which is never itself signed.
pub const SIGN_FIELD: &str = "sign";
/// The field that names the algorithm of a message; absent means MD5.
pub const SIGN_TYPE_FIELD: &str = "sign_type";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum SignType {
    #[default]
    Md5,
    HmacSha256,
}

impl SignType {
    /// The spelling WeChat uses in `sign_type` and `signType`.
    pub fn as_str(self) -> &'static str {
        match self {
            SignType::Md5 => "MD5",
            SignType::HmacSha256 => "HMAC-SHA256",
        }
    }
}

impl fmt::Display for SignType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown sign type {0:?}: expected MD5 or HMAC-SHA256")]
pub struct UnknownSignType(pub String);

impl FromStr for SignType {
    type Err = UnknownSignType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "MD5" => Ok(SignType::Md5),
            "HMAC-SHA256" => Ok(SignType::HmacSha256),
            other => Err(UnknownSignType(other.chars().take(32).collect())),
        }
    }
}

/// Stored as WeChat spells it (`MD5`, `HMAC-SHA256`): an order records the type it was
/// created with.
impl serde::Serialize for SignType {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for SignType {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("message has no sign field")]
    MissingSign,
    #[error(transparent)]
    UnknownSignType(#[from] UnknownSignType),
    #[error("signature does not verify")]
    Mismatch,
    /// APIv3 without `wxpay_api_key`: an APIv2 signature cannot be checked.
    #[error("no APIv2 key is configured (wxpay_api_key) to verify it")]
    NoKey,
}

/// The string that is hashed: every field but `sign`, empty values dropped, sorted by name in
/// byte order (the map's order), joined as `k=v&…`, then `&key=API_KEY`.
fn string_to_sign<'a>(
    fields: impl IntoIterator<Item = (&'a str, &'a str)>,
    key: &Secret,
) -> String {
    let mut out = String::with_capacity(512);
    for (name, value) in fields {
        if name == SIGN_FIELD || value.is_empty() {
            continue;
        }
        out.push_str(name);
        out.push('=');
        out.push_str(value);
        out.push('&');
    }
    out.push_str("key=");
    out.push_str(key.expose());
    out
}

fn digest(sign_type: SignType, data: &[u8], key: &Secret) -> String {
    match sign_type {
        SignType::Md5 => hex::encode_upper(Md5::digest(data)),
        SignType::HmacSha256 => {
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.expose().as_bytes())
                .expect("HMAC accepts keys of any length");
            mac.update(data);
            hex::encode_upper(mac.finalize().into_bytes())
        }
    }
}

/// Signs `params` (any `sign` field in it is ignored) with the API key.
pub fn sign(params: &Params, key: &Secret, sign_type: SignType) -> String {
    let fields = params.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    digest(sign_type, string_to_sign(fields, key).as_bytes(), key)
}

/// The algorithm a received message declares in its own `sign_type` (absent = MD5).
pub fn declared_sign_type(params: &Params) -> Result<SignType, UnknownSignType> {
    match params.get(SIGN_TYPE_FIELD).map(String::as_str) {
        None | Some("") => Ok(SignType::Md5),
        Some(name) => name.parse(),
    }
}

/// Verifies a received message: recomputes the signature over **all** its fields with the
/// algorithm the message declares, and compares it with `sign` in constant time.
pub fn verify(params: &Params, key: &Secret) -> Result<SignType, VerifyError> {
    let received = params.get(SIGN_FIELD).ok_or(VerifyError::MissingSign)?;
    let sign_type = declared_sign_type(params)?;
    let expected = sign(params, key, sign_type);
    // Hex case carries no meaning; WeChat sends uppercase.
    let received = received.to_ascii_uppercase();
    if bool::from(expected.as_bytes().ct_eq(received.as_bytes())) {
        Ok(sign_type)
    } else {
        Err(VerifyError::Mismatch)
    }
}

/// Verifies a reply or notification from WeChat Pay for a merchant configured with
/// `configured`. A message that names its algorithm in `sign_type` is verified with that one
/// ([`verify`]). One that names none is verified with `configured` and, failing that, with MD5:
/// WeChat signs its replies with the sign type of the request but does not name it in them
/// (the official SDKs verify replies with the configured type), and a notification without
/// `sign_type` is documented as MD5. Either way the signature must be made with our key.
pub fn verify_from_wechat(
    params: &Params,
    key: &Secret,
    configured: SignType,
) -> Result<SignType, VerifyError> {
    let declared = params.get(SIGN_TYPE_FIELD).is_some_and(|t| !t.is_empty());
    if declared || configured == SignType::Md5 {
        return verify(params, key);
    }
    let received = params.get(SIGN_FIELD).ok_or(VerifyError::MissingSign)?;
    let received = received.to_ascii_uppercase();
    for sign_type in [configured, SignType::Md5] {
        let expected = sign(params, key, sign_type);
        if bool::from(expected.as_bytes().ct_eq(received.as_bytes())) {
            return Ok(sign_type);
        }
    }
    Err(VerifyError::Mismatch)
}

/// Adds `sign_type` (for HMAC-SHA256; MD5 is the default and is left implicit only when the
/// caller did not set it) and `sign` to an outgoing message.
pub fn sign_in_place(params: &mut Params, key: &Secret, sign_type: SignType) {
    params.remove(SIGN_FIELD);
    if sign_type != SignType::Md5 {
        params.insert(SIGN_TYPE_FIELD.into(), sign_type.as_str().into());
    }
    let signature = sign(params, key, sign_type);
    params.insert(SIGN_FIELD.into(), signature);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn params(fields: &[(&str, &str)]) -> Params {
        fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const S1_KEY: &str = "192006250b4c09247ec02edce69f6a2d";

    fn s1() -> Params {
        params(&[
            ("appid", "wxd930ea5d5a258f4f"),
            ("mch_id", "10000100"),
            ("device_info", "1000"),
            ("body", "test"),
            ("nonce_str", "ibuaiVcKdpRxkhJA"),
        ])
    }

    #[test]
    fn s1_md5() {
        let key = Secret::new(S1_KEY);
        assert_eq!(
            string_to_sign(s1().iter().map(|(k, v)| (k.as_str(), v.as_str())), &key),
            "appid=wxd930ea5d5a258f4f&body=test&device_info=1000&mch_id=10000100&nonce_str=ibuaiVcKdpRxkhJA&key=192006250b4c09247ec02edce69f6a2d"
        );
        assert_eq!(
            sign(&s1(), &key, SignType::Md5),
            "9A0A8659F005D6984697E2CA0A9CF3B7"
        );
    }

    #[test]
    fn s2_hmac_sha256() {
        assert_eq!(
            sign(&s1(), &Secret::new(S1_KEY), SignType::HmacSha256),
            "6A9AE1657590FD6257D693A078E1C3E4BB6BA4DC30B23E0EE2496E54170DACD6"
        );
    }

    #[test]
    fn s3_s4_pay_sign() {
        let key = Secret::new("qazwsxedcrfvtgbyhnujmikolp111111");
        let mut fields = params(&[
            ("appId", "wxd678efh567hg6787"),
            ("nonceStr", "5K8264ILTKCH16CQ2502SI8ZNMTM67VS"),
            ("package", "prepay_id=wx2017033010242291fcfe0db70013231072"),
            ("signType", "MD5"),
            ("timeStamp", "1490840662"),
        ]);
        assert_eq!(
            sign(&fields, &key, SignType::Md5),
            "22D9B4E54AB1950F51E0649E8810ACD6"
        );
        fields.insert("signType".into(), "HMAC-SHA256".into());
        assert_eq!(
            sign(&fields, &key, SignType::HmacSha256),
            "FB9D1EFB5C509131BBFF729F88A99CA2DE9B724D06D3B3262832A53083862BC0"
        );
    }

    #[test]
    fn s5_utf8_body_and_empty_field_dropped() {
        let fields = params(&[
            ("appid", "wxd930ea5d5a258f4f"),
            ("attach", ""),
            ("body", "腾讯充值中心-QQ会员充值"),
            ("mch_id", "10000100"),
            ("nonce_str", "ibuaiVcKdpRxkhJA"),
            ("notify_url", "https://example.com/notify"),
            ("openid", "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"),
            ("out_trade_no", "20150806125346"),
            ("spbill_create_ip", "123.12.12.123"),
            ("total_fee", "888"),
            ("trade_type", "JSAPI"),
        ]);
        assert_eq!(
            sign(&fields, &Secret::new(S1_KEY), SignType::Md5),
            "7FA2AAA13D24B9D49D8713400A1BD7C7"
        );
    }

    pub(crate) fn s6() -> Params {
        params(&[
            ("appid", "wxd930ea5d5a258f4f"),
            ("bank_type", "CFT"),
            ("cash_fee", "1"),
            ("fee_type", "CNY"),
            ("is_subscribe", "N"),
            ("mch_id", "10000100"),
            ("nonce_str", "5d2b6c2a8db53831f7eda20af46e531c"),
            ("openid", "oUpF8uMEb4qRXf22hE3X68TekukE"),
            ("out_trade_no", "1409811653"),
            ("result_code", "SUCCESS"),
            ("return_code", "SUCCESS"),
            ("time_end", "20140903131540"),
            ("total_fee", "1"),
            ("trade_type", "JSAPI"),
            ("transaction_id", "1004400740201409030005092168"),
        ])
    }

    #[test]
    fn s6_notification_both_algorithms() {
        let key = Secret::new(S1_KEY);
        assert_eq!(
            sign(&s6(), &key, SignType::Md5),
            "6D734A04D8568BAE04858D958A82595A"
        );
        assert_eq!(
            sign(&s6(), &key, SignType::HmacSha256),
            "6A8AC774D25B2C1527A74028CE50777C691BCE692DF9B1711C2BDAB74F34C39A"
        );
    }

    #[test]
    fn verify_uses_the_declared_algorithm_over_all_fields() {
        let key = Secret::new(S1_KEY);
        let mut msg = s6();
        msg.insert("sign".into(), "6D734A04D8568BAE04858D958A82595A".into());
        assert_eq!(verify(&msg, &key), Ok(SignType::Md5));

        // A field WeChat added later is covered too.
        msg.insert("new_field".into(), "x".into());
        assert_eq!(verify(&msg, &key), Err(VerifyError::Mismatch));
        msg.remove("new_field");

        // Lowercase hex is the same signature.
        msg.insert("sign".into(), "6d734a04d8568bae04858d958a82595a".into());
        assert_eq!(verify(&msg, &key), Ok(SignType::Md5));

        // The declared sign_type is itself signed, so the HMAC vector does not apply verbatim.
        msg.insert("sign_type".into(), "HMAC-SHA256".into());
        msg.insert(
            "sign".into(),
            "6A8AC774D25B2C1527A74028CE50777C691BCE692DF9B1711C2BDAB74F34C39A".into(),
        );
        assert_eq!(verify(&msg, &key), Err(VerifyError::Mismatch));
        let resigned = sign(&msg, &key, SignType::HmacSha256);
        msg.insert("sign".into(), resigned);
        assert_eq!(verify(&msg, &key), Ok(SignType::HmacSha256));
        // ... and an MD5 signature over the same fields is refused when HMAC is declared.
        let md5 = sign(&msg, &key, SignType::Md5);
        msg.insert("sign".into(), md5);
        assert_eq!(verify(&msg, &key), Err(VerifyError::Mismatch));
    }

    #[test]
    fn verify_refusals() {
        let key = Secret::new(S1_KEY);
        assert_eq!(verify(&s6(), &key), Err(VerifyError::MissingSign));
        let mut msg = s6();
        msg.insert("sign_type".into(), "SHA1".into());
        msg.insert("sign".into(), "00".into());
        assert_eq!(
            verify(&msg, &key),
            Err(VerifyError::UnknownSignType(UnknownSignType("SHA1".into())))
        );
        let mut msg = s6();
        msg.insert("sign".into(), "6D734A04D8568BAE04858D958A82595A".into());
        assert_eq!(
            verify(&msg, &Secret::new("another key")),
            Err(VerifyError::Mismatch)
        );
        msg.insert("sign".into(), "".into());
        assert_eq!(verify(&msg, &key), Err(VerifyError::Mismatch));
    }

    #[test]
    fn sign_in_place_declares_hmac() {
        let key = Secret::new(S1_KEY);
        let mut msg = s1();
        sign_in_place(&mut msg, &key, SignType::HmacSha256);
        assert_eq!(msg["sign_type"], "HMAC-SHA256");
        assert_eq!(verify(&msg, &key), Ok(SignType::HmacSha256));
        let mut msg = s1();
        sign_in_place(&mut msg, &key, SignType::Md5);
        assert_eq!(msg["sign"], "9A0A8659F005D6984697E2CA0A9CF3B7");
    }

    #[test]
    fn replies_without_sign_type_verify_with_the_configured_type() {
        let key = Secret::new(S1_KEY);
        let mut p = s1();
        // Signed HMAC-SHA256 like WeChat signs a reply to an HMAC request: not named in it.
        let hmac = sign(&p, &key, SignType::HmacSha256);
        p.insert(SIGN_FIELD.into(), hmac);
        assert_eq!(verify(&p, &key), Err(VerifyError::Mismatch));
        assert_eq!(
            verify_from_wechat(&p, &key, SignType::HmacSha256),
            Ok(SignType::HmacSha256)
        );
        // An MD5 merchant never accepts an unnamed HMAC signature.
        assert_eq!(
            verify_from_wechat(&p, &key, SignType::Md5),
            Err(VerifyError::Mismatch)
        );
        // An unnamed MD5 signature (the documented default) verifies for either merchant.
        let md5 = sign(&p, &key, SignType::Md5);
        p.insert(SIGN_FIELD.into(), md5);
        assert_eq!(
            verify_from_wechat(&p, &key, SignType::HmacSha256),
            Ok(SignType::Md5)
        );
        // A declared type is the only one tried, and the key must be ours.
        p.insert(SIGN_TYPE_FIELD.into(), "HMAC-SHA256".into());
        assert_eq!(
            verify_from_wechat(&p, &key, SignType::HmacSha256),
            Err(VerifyError::Mismatch)
        );
        p.remove(SIGN_TYPE_FIELD);
        assert_eq!(
            verify_from_wechat(&p, &Secret::new("x".repeat(32)), SignType::HmacSha256),
            Err(VerifyError::Mismatch)
        );
        p.remove(SIGN_FIELD);
        assert_eq!(
            verify_from_wechat(&p, &key, SignType::HmacSha256),
            Err(VerifyError::MissingSign)
        );
    }

    #[test]
    fn sign_type_spelling() {
        assert_eq!("MD5".parse(), Ok(SignType::Md5));
        assert_eq!("HMAC-SHA256".parse(), Ok(SignType::HmacSha256));
        assert!("md5".parse::<SignType>().is_err());
        assert_eq!(SignType::HmacSha256.to_string(), "HMAC-SHA256");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn message() -> impl Strategy<Value = Params> {
            proptest::collection::btree_map("[a-z_]{1,12}", "\\PC{0,24}", 1..12)
        }

        proptest! {
            #[test]
            fn signed_messages_verify(mut msg in message(), hmac in any::<bool>(), key in "[A-Za-z0-9]{32}") {
                let key = Secret::new(key);
                let sign_type = if hmac { SignType::HmacSha256 } else { SignType::Md5 };
                msg.remove("sign_type");
                sign_in_place(&mut msg, &key, sign_type);
                prop_assert_eq!(verify(&msg, &key), Ok(sign_type));
            }

            #[test]
            fn any_changed_value_breaks_the_signature(
                mut msg in message(), key in "[A-Za-z0-9]{32}", pick in any::<prop::sample::Index>(), extra in "[a-z]{1,4}",
            ) {
                let key = Secret::new(key);
                msg.remove("sign_type");
                sign_in_place(&mut msg, &key, SignType::HmacSha256);
                let names: Vec<String> = msg.keys().filter(|k| *k != SIGN_FIELD && *k != SIGN_TYPE_FIELD).cloned().collect();
                let name = pick.get(&names).clone();
                msg.get_mut(&name).unwrap().push_str(&extra);
                prop_assert_eq!(verify(&msg, &key), Err(VerifyError::Mismatch));
            }
        }
    }
}
