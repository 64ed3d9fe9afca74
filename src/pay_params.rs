//! The parameters of `wx.requestPayment` and their `paySign` (PROTOCOL.md "wx.requestPayment
//! parameters"). Re-signing needs no call to WeChat: the same `prepay_id` with a fresh
//! timestamp and nonce.

use serde::{Deserialize, Serialize};

use crate::secret::Secret;
use crate::v2::Params;
use crate::v2::sign::{SignType, sign};

/// What the mini program passes to `wx.requestPayment`, spelled as WeChat spells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayParams {
    #[serde(rename = "timeStamp")]
    pub time_stamp: String,
    #[serde(rename = "nonceStr")]
    pub nonce_str: String,
    pub package: String,
    #[serde(rename = "signType")]
    pub sign_type: String,
    #[serde(rename = "paySign")]
    pub pay_sign: String,
}

/// Signs fresh payment parameters for `prepay_id`. `sign_type` must be the one the unified
/// order used; `now_unix` is Unix **seconds**; `nonce` at most 32 characters (see
/// [`crate::v2::nonce_str`]).
pub fn pay_params(
    appid: &str,
    prepay_id: &str,
    key: &Secret,
    sign_type: SignType,
    now_unix: u64,
    nonce: &str,
) -> PayParams {
    let time_stamp = now_unix.to_string();
    let package = format!("prepay_id={prepay_id}");
    // `extend`, not `collect` (which sorts first: see `v2::api::signed_request`).
    let mut signed = Params::new();
    signed.extend(
        [
            ("appId", appid),
            ("nonceStr", nonce),
            ("package", &package),
            ("signType", sign_type.as_str()),
            ("timeStamp", &time_stamp),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let pay_sign = sign(&signed, key, sign_type);
    PayParams {
        time_stamp,
        nonce_str: nonce.to_owned(),
        package,
        sign_type: sign_type.as_str().to_owned(),
        pay_sign,
    }
}

/// Verifies a `paySign` the way the WeChat client does (used by tests and the simulator).
pub fn verify_pay_params(appid: &str, params: &PayParams, key: &Secret) -> bool {
    let Ok(sign_type) = params.sign_type.parse::<SignType>() else {
        return false;
    };
    let Some(prepay_id) = params.package.strip_prefix("prepay_id=") else {
        return false;
    };
    let Ok(now) = params.time_stamp.parse::<u64>() else {
        return false;
    };
    let expected = pay_params(appid, prepay_id, key, sign_type, now, &params.nonce_str);
    // Both sides are public parameters, but keep the one compare constant-time anyway.
    use subtle::ConstantTimeEq;
    expected.time_stamp == params.time_stamp
        && bool::from(
            expected
                .pay_sign
                .as_bytes()
                .ct_eq(params.pay_sign.as_bytes()),
        )
}

/// `signType` of APIv3 pay params.
pub const RSA_SIGN_TYPE: &str = "RSA";

/// APIv3 payment parameters for `prepay_id` (`signType: "RSA"`): one RSA private-key operation,
/// so signed once per prepay id and stored with the order.
pub fn v3_pay_params(
    appid: &str,
    prepay_id: &str,
    key: &crate::v3::sign::MerchantKey,
    now_unix: u64,
    nonce: &str,
) -> PayParams {
    let time_stamp = now_unix.to_string();
    let package = format!("prepay_id={prepay_id}");
    let pay_sign = crate::v3::sign::pay_sign(key, appid, &time_stamp, nonce, &package);
    PayParams {
        time_stamp,
        nonce_str: nonce.to_owned(),
        package,
        sign_type: RSA_SIGN_TYPE.to_owned(),
        pay_sign,
    }
}

/// Verifies an APIv3 `paySign` with the merchant's public key, as the WeChat client does
/// (the simulator and tests).
pub fn verify_v3_pay_params(
    appid: &str,
    params: &PayParams,
    merchant_public_key: &crate::v3::verify::PublicKey,
) -> bool {
    let message = format!(
        "{appid}\n{}\n{}\n{}\n",
        params.time_stamp, params.nonce_str, params.package
    );
    params.sign_type == RSA_SIGN_TYPE
        && merchant_public_key.verifies(message.as_bytes(), &params.pay_sign)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "qazwsxedcrfvtgbyhnujmikolp111111";

    #[test]
    fn s3_md5_vector() {
        let p = pay_params(
            "wxd678efh567hg6787",
            "wx2017033010242291fcfe0db70013231072",
            &Secret::new(KEY),
            SignType::Md5,
            1490840662,
            "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
        );
        assert_eq!(p.pay_sign, "22D9B4E54AB1950F51E0649E8810ACD6");
        assert_eq!(p.package, "prepay_id=wx2017033010242291fcfe0db70013231072");
        assert_eq!(p.time_stamp, "1490840662");
        assert_eq!(p.sign_type, "MD5");
    }

    #[test]
    fn s4_hmac_vector() {
        let p = pay_params(
            "wxd678efh567hg6787",
            "wx2017033010242291fcfe0db70013231072",
            &Secret::new(KEY),
            SignType::HmacSha256,
            1490840662,
            "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
        );
        assert_eq!(
            p.pay_sign,
            "FB9D1EFB5C509131BBFF729F88A99CA2DE9B724D06D3B3262832A53083862BC0"
        );
        assert_eq!(p.sign_type, "HMAC-SHA256");
    }

    #[test]
    fn serializes_with_wechat_spelling_and_no_appid() {
        let p = pay_params(
            "wxd678efh567hg6787",
            "wx1",
            &Secret::new(KEY),
            SignType::Md5,
            7,
            "n",
        );
        let json = serde_json::to_value(&p).unwrap();
        let mut names: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
        names.sort();
        assert_eq!(
            names,
            ["nonceStr", "package", "paySign", "signType", "timeStamp"]
        );
    }

    #[test]
    fn v4_rsa_pay_params_verify_with_the_merchant_public_key() {
        use crate::v3::vectors::{MERCHANT_KEY, MERCHANT_PUB, text, vector};
        let v = vector("V4_pay_sign_rsa");
        let key = crate::v3::sign::MerchantKey::from_pem(MERCHANT_KEY).unwrap();
        let prepay_id = text(&v, "package").replace("prepay_id=", "");
        let p = v3_pay_params(
            &text(&v, "appId"),
            &prepay_id,
            &key,
            text(&v, "timeStamp").parse().unwrap(),
            &text(&v, "nonceStr"),
        );
        assert_eq!(p.pay_sign, text(&v, "paySign"));
        assert_eq!(p.sign_type, "RSA");
        let public = crate::v3::verify::PublicKey::from_pem(MERCHANT_PUB).unwrap();
        assert!(verify_v3_pay_params(&text(&v, "appId"), &p, &public));
        let mut changed = p.clone();
        changed.package = "prepay_id=wx2".into();
        assert!(!verify_v3_pay_params(&text(&v, "appId"), &changed, &public));
        assert!(!verify_v3_pay_params("wx0000000000000000", &p, &public));
    }

    #[test]
    fn verification_catches_any_change() {
        let key = Secret::new(KEY);
        let p = pay_params(
            "wxd678efh567hg6787",
            "wx1",
            &key,
            SignType::HmacSha256,
            1700000000,
            "abc",
        );
        assert!(verify_pay_params("wxd678efh567hg6787", &p, &key));
        assert!(!verify_pay_params("wxd678efh567hg6788", &p, &key));
        assert!(!verify_pay_params(
            "wxd678efh567hg6787",
            &p,
            &Secret::new("other")
        ));
        let mut changed = p.clone();
        changed.package = "prepay_id=wx2".into();
        assert!(!verify_pay_params("wxd678efh567hg6787", &changed, &key));
        let mut changed = p.clone();
        changed.time_stamp = "1700000001".into();
        assert!(!verify_pay_params("wxd678efh567hg6787", &changed, &key));
        let mut changed = p.clone();
        changed.time_stamp = "01700000000".into();
        assert!(!verify_pay_params("wxd678efh567hg6787", &changed, &key));
        let mut changed = p;
        changed.sign_type = "MD5".into();
        assert!(!verify_pay_params("wxd678efh567hg6787", &changed, &key));
    }
}
