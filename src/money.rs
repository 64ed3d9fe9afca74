//! Money as integer fen (分, 1/100 yuan) end to end: no float ever touches an amount.
//!
//! `(int)(19.9*100)` is 1989: the float bug behind many "amount mismatch" reports
//! (PROTOCOL.md "Money"). Amounts are stored, sent and compared as whole fen.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An amount in fen. Serializes as a bare integer, as WeChat's `total_fee` is.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Fen(pub u64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("amount overflows")]
    Overflow,
    #[error("amount is empty")]
    Empty,
    #[error("amount must not have a sign")]
    Signed,
    #[error("amount has more than two decimals")]
    TooManyDecimals,
    #[error("amount is not a decimal number: unexpected {0:?}")]
    InvalidCharacter(char),
    #[error("amount must have digits before and after the decimal point")]
    MissingDigits,
}

impl Fen {
    pub const ZERO: Fen = Fen(0);

    /// `self × quantity`, refusing overflow.
    pub fn checked_mul(self, quantity: u64) -> Result<Fen, MoneyError> {
        self.0
            .checked_mul(quantity)
            .map(Fen)
            .ok_or(MoneyError::Overflow)
    }

    pub fn checked_add(self, other: Fen) -> Result<Fen, MoneyError> {
        self.0
            .checked_add(other.0)
            .map(Fen)
            .ok_or(MoneyError::Overflow)
    }

    /// Parses a yuan amount written as a decimal string ("19.9" → 1990 fen, "0.29" → 29 fen)
    /// without ever going through a float. Refuses signs, more than two decimals, exponents,
    /// whitespace and overflow.
    pub fn parse_yuan(text: &str) -> Result<Fen, MoneyError> {
        if text.is_empty() {
            return Err(MoneyError::Empty);
        }
        if text.starts_with(['-', '+']) {
            return Err(MoneyError::Signed);
        }
        let (whole, fraction) = match text.split_once('.') {
            Some((whole, fraction)) => (whole, Some(fraction)),
            None => (text, None),
        };
        let digits = |part: &str| match part.chars().find(|c| !c.is_ascii_digit()) {
            Some(c) => Err(MoneyError::InvalidCharacter(c)),
            None => Ok(()),
        };
        digits(whole)?;
        if whole.is_empty() {
            return Err(MoneyError::MissingDigits);
        }
        let mut fen: u64 = 0;
        for d in whole.bytes() {
            fen = fen
                .checked_mul(10)
                .and_then(|f| f.checked_add(u64::from(d - b'0')))
                .ok_or(MoneyError::Overflow)?;
        }
        fen = fen.checked_mul(100).ok_or(MoneyError::Overflow)?;
        if let Some(fraction) = fraction {
            digits(fraction)?;
            let cents = match fraction.as_bytes() {
                [] => return Err(MoneyError::MissingDigits),
                [tenths] => u64::from(tenths - b'0') * 10,
                [tenths, hundredths] => {
                    u64::from(tenths - b'0') * 10 + u64::from(hundredths - b'0')
                }
                _ => return Err(MoneyError::TooManyDecimals),
            };
            fen = fen.checked_add(cents).ok_or(MoneyError::Overflow)?;
        }
        Ok(Fen(fen))
    }
}

/// Parses a whole number of fen as WeChat sends it (`total_fee=1990`): ASCII digits only, no sign,
/// no decimals, no whitespace.
impl std::str::FromStr for Fen {
    type Err = MoneyError;

    fn from_str(text: &str) -> Result<Fen, MoneyError> {
        if text.is_empty() {
            return Err(MoneyError::Empty);
        }
        if let Some(c) = text.chars().find(|c| !c.is_ascii_digit()) {
            return Err(if c == '-' || c == '+' {
                MoneyError::Signed
            } else {
                MoneyError::InvalidCharacter(c)
            });
        }
        text.parse::<u64>()
            .map(Fen)
            .map_err(|_| MoneyError::Overflow)
    }
}

/// Displays the integer fen, the unit of every API field (`total_fee=1990`).
impl fmt::Display for Fen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_float_traps_exactly() {
        assert_eq!(Fen::parse_yuan("19.9"), Ok(Fen(1990)));
        assert_eq!(Fen::parse_yuan("19.90"), Ok(Fen(1990)));
        assert_eq!(Fen::parse_yuan("0.29"), Ok(Fen(29)));
        assert_eq!(Fen::parse_yuan("0.01"), Ok(Fen(1)));
        assert_eq!(Fen::parse_yuan("100"), Ok(Fen(10000)));
        assert_eq!(Fen::parse_yuan("0"), Ok(Fen(0)));
    }

    #[test]
    fn refuses_what_is_not_a_plain_amount() {
        assert_eq!(Fen::parse_yuan("1.005"), Err(MoneyError::TooManyDecimals));
        assert_eq!(Fen::parse_yuan("-1"), Err(MoneyError::Signed));
        assert_eq!(Fen::parse_yuan("+1"), Err(MoneyError::Signed));
        assert_eq!(Fen::parse_yuan(""), Err(MoneyError::Empty));
        assert_eq!(Fen::parse_yuan(".5"), Err(MoneyError::MissingDigits));
        assert_eq!(Fen::parse_yuan("5."), Err(MoneyError::MissingDigits));
        assert_eq!(
            Fen::parse_yuan("1e3"),
            Err(MoneyError::InvalidCharacter('e'))
        );
        assert_eq!(
            Fen::parse_yuan(" 1"),
            Err(MoneyError::InvalidCharacter(' '))
        );
        assert_eq!(
            Fen::parse_yuan("1.2.3"),
            Err(MoneyError::InvalidCharacter('.'))
        );
        assert_eq!(
            Fen::parse_yuan("１"),
            Err(MoneyError::InvalidCharacter('１'))
        );
    }

    #[test]
    fn refuses_overflow() {
        // u64::MAX fen is 184467440737095516.15 yuan.
        assert_eq!(Fen::parse_yuan("184467440737095516.15"), Ok(Fen(u64::MAX)));
        assert_eq!(
            Fen::parse_yuan("184467440737095516.16"),
            Err(MoneyError::Overflow)
        );
        assert_eq!(
            Fen::parse_yuan("184467440737095517"),
            Err(MoneyError::Overflow)
        );
        assert_eq!(
            Fen::parse_yuan("99999999999999999999999"),
            Err(MoneyError::Overflow)
        );
    }

    #[test]
    fn arithmetic_is_checked() {
        assert_eq!(Fen(199).checked_mul(3), Ok(Fen(597)));
        assert_eq!(
            Fen(u64::MAX / 2 + 1).checked_mul(2),
            Err(MoneyError::Overflow)
        );
        assert_eq!(Fen(u64::MAX).checked_add(Fen(1)), Err(MoneyError::Overflow));
        assert_eq!(Fen(1).checked_add(Fen(2)), Ok(Fen(3)));
    }

    #[test]
    fn parses_wire_fen_strictly() {
        assert_eq!("1990".parse(), Ok(Fen(1990)));
        assert_eq!("0".parse(), Ok(Fen(0)));
        assert_eq!("18446744073709551615".parse(), Ok(Fen(u64::MAX)));
        assert_eq!(
            "18446744073709551616".parse::<Fen>(),
            Err(MoneyError::Overflow)
        );
        assert_eq!("".parse::<Fen>(), Err(MoneyError::Empty));
        assert_eq!("-1".parse::<Fen>(), Err(MoneyError::Signed));
        assert_eq!("+1".parse::<Fen>(), Err(MoneyError::Signed));
        assert_eq!(
            "19.9".parse::<Fen>(),
            Err(MoneyError::InvalidCharacter('.'))
        );
        assert_eq!(" 1".parse::<Fen>(), Err(MoneyError::InvalidCharacter(' ')));
    }

    #[test]
    fn serializes_as_a_bare_integer() {
        assert_eq!(serde_json::to_string(&Fen(1990)).unwrap(), "1990");
        assert_eq!(serde_json::from_str::<Fen>("1").unwrap(), Fen(1));
        assert!(serde_json::from_str::<Fen>("19.9").is_err());
        assert!(serde_json::from_str::<Fen>("-1").is_err());
        assert_eq!(Fen(888).to_string(), "888");
    }
}
