//! Voice delivery of an online authorization (card application v2.2,
//! `docs/terminal-policy.md`, "Voice authorization"): the same request and
//! the same answer as `POST /v1/authorize`, read over the telephone.
//!
//! The till shows the card's request as a [`VoiceReference`] — its
//! request cryptogram (64 bits) and the card's counter modulo 2¹⁵ — which
//! the clerk reads to the office with the card, the operation and its
//! amount. The office answers with a [`VoiceAnswer`]: the issuer MAC of an
//! approval of that request (applet-spec §5.9, INS `3A`, decision `00`,
//! settled counter 0), which the clerk types in and the till relays to the
//! card in `DF0B`. The card checks it as it checks an answer that came over
//! the network: for that request (its challenge, counter, kind, amount),
//! once, while the card is still in the field.
//!
//! Both codes are Crockford base 32 (as the referral codes,
//! [`crate::referral`]): digits and letters without `I`, `L`, `O`, `U`;
//! case, spaces and dashes do not matter; `O` reads as `0`, `I` and `L` as
//! `1`; the last symbol is a check symbol over the others that catches
//! every single mistyped symbol and every swap of two.

use crate::referral::{check_symbol, parse_symbols, render_symbols};
use tessera_protocol::MAC_LEN;

/// Why a typed voice code is not one (nothing was checked against a key:
/// read it again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VoiceCodeError {
    /// Not the code's number of characters.
    #[error("this code has {expected} characters, the one given has {found}")]
    Length {
        /// The code's length.
        expected: usize,
        /// What was given.
        found: usize,
    },
    /// A character outside the alphabet.
    #[error("{0:?} is not a character of these codes (digits and letters except I, L, O, U)")]
    Symbol(char),
    /// The check symbol does not match.
    #[error("the code's check character does not match: a character is mistyped — read it again")]
    Check,
}

/// Symbols of a [`VoiceReference`]: 16 data (79 bits) and a check.
pub const REFERENCE_SYMBOLS: usize = 17;
/// Symbols of a [`VoiceAnswer`]: 13 data (64 bits, 1 spare bit) and a check.
pub const ANSWER_SYMBOLS: usize = 14;
/// The counter bits a reference carries.
pub const COUNTER_BITS: u32 = 15;

/// What the till reads out: the request cryptogram and the card's counter
/// modulo 2¹⁵.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VoiceReference {
    /// The card's request cryptogram (ARQC).
    pub cryptogram: [u8; MAC_LEN],
    /// The card's counter modulo 2¹⁵.
    pub counter_low: u16,
}

impl VoiceReference {
    /// The reference of a request made at `counter`.
    pub fn new(cryptogram: [u8; MAC_LEN], counter: u32) -> Self {
        Self {
            cryptogram,
            counter_low: (counter % (1 << COUNTER_BITS)) as u16,
        }
    }

    /// The 17 symbols, `XXXXX-XXXXX-XXXXX-XX`.
    pub fn to_code(&self) -> String {
        let v = (u128::from(u64::from_be_bytes(self.cryptogram)) << COUNTER_BITS) | u128::from(self.counter_low);
        render_symbols(&with_check(v, REFERENCE_SYMBOLS - 1), &[5, 5, 5, 2])
    }

    /// Parses a read-out reference.
    ///
    /// # Errors
    /// [`VoiceCodeError`]: not a reference, or a typo the check caught.
    pub fn parse(text: &str) -> Result<Self, VoiceCodeError> {
        let v = checked(text, REFERENCE_SYMBOLS)?;
        let counter_low = (v & ((1 << COUNTER_BITS) - 1)) as u16;
        let cryptogram = ((v >> COUNTER_BITS) as u64).to_be_bytes();
        Ok(Self {
            cryptogram,
            counter_low,
        })
    }

    /// The full counter: the one congruent to the reference's modulo 2¹⁵
    /// that is at least `at_least` (the office's last posted counter for
    /// the card) and closest to it.
    pub fn counter(&self, at_least: u32) -> u32 {
        let m = 1u32 << COUNTER_BITS;
        let base = at_least - at_least % m + u32::from(self.counter_low);
        if base >= at_least {
            base
        } else {
            base.saturating_add(m)
        }
    }
}

/// What the office reads back: the issuer MAC of its approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VoiceAnswer {
    /// IMAC over the request's cryptogram, decision `00`, settled 0.
    pub issuer_mac: [u8; MAC_LEN],
}

impl VoiceAnswer {
    /// The 14 symbols, `XXXX-XXXX-XXXX-XX`.
    pub fn to_code(&self) -> String {
        let v = u128::from(u64::from_be_bytes(self.issuer_mac));
        render_symbols(&with_check(v, ANSWER_SYMBOLS - 1), &[4, 4, 4, 2])
    }

    /// Parses a typed answer.
    ///
    /// # Errors
    /// [`VoiceCodeError`]: not an answer, or a typo the check caught.
    pub fn parse(text: &str) -> Result<Self, VoiceCodeError> {
        let v = checked(text, ANSWER_SYMBOLS)?;
        if v >> 64 != 0 {
            return Err(VoiceCodeError::Check);
        }
        Ok(Self {
            issuer_mac: (v as u64).to_be_bytes(),
        })
    }
}

/// `n` data symbols of `v` (most significant first) and their check.
fn with_check(v: u128, n: usize) -> Vec<u8> {
    let mut symbols: Vec<u8> = (0..n).map(|i| ((v >> (5 * (n - 1 - i))) & 0x1f) as u8).collect();
    let c = check_symbol(&symbols);
    symbols.push(c);
    symbols
}

fn checked(text: &str, len: usize) -> Result<u128, VoiceCodeError> {
    let symbols = parse_symbols(text).map_err(VoiceCodeError::Symbol)?;
    if symbols.len() != len {
        return Err(VoiceCodeError::Length {
            expected: len,
            found: symbols.len(),
        });
    }
    if check_symbol(&symbols[..len - 1]) != symbols[len - 1] {
        return Err(VoiceCodeError::Check);
    }
    Ok(symbols[..len - 1].iter().fold(0u128, |v, &s| (v << 5) | u128::from(s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_catch_every_single_typo_and_swap() {
        let r = VoiceReference::new([0x36, 0x81, 0xA6, 0xA5, 0x6C, 0xCC, 0xE1, 0xAB], 70_004);
        let code = r.to_code();
        assert_eq!(code.len(), 17 + 3);
        assert_eq!(VoiceReference::parse(&code).unwrap(), r);
        assert_eq!(
            VoiceReference::parse(&code.to_lowercase().replace('-', " ")).unwrap(),
            r
        );
        assert_eq!(r.counter(70_000), 70_004);
        assert_eq!(r.counter(0), 70_004 % 32_768);
        let a = VoiceAnswer {
            issuer_mac: [0x73, 0x4E, 0x2F, 0x22, 0x56, 0x79, 0xDA, 0xE5],
        };
        assert_eq!(VoiceAnswer::parse(&a.to_code()).unwrap(), a);
        let plain: Vec<char> = a.to_code().chars().filter(|c| *c != '-').collect();
        let alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
        for i in 0..plain.len() {
            for c in alphabet.chars().filter(|c| *c != plain[i]) {
                let mut t = plain.clone();
                t[i] = c;
                let s: String = t.iter().collect();
                assert!(VoiceAnswer::parse(&s).is_err_and(|e| e == VoiceCodeError::Check), "{s}");
            }
            if i + 1 < plain.len() && plain[i] != plain[i + 1] {
                let mut t = plain.clone();
                t.swap(i, i + 1);
                let s: String = t.iter().collect();
                assert!(VoiceAnswer::parse(&s).is_err(), "{s}");
            }
        }
        assert_eq!(
            VoiceAnswer::parse("7KQ2-M9XD-3FHT"),
            Err(VoiceCodeError::Length {
                expected: 14,
                found: 12
            })
        );
        assert_eq!(
            VoiceAnswer::parse("7KQ2-M9XD-3FHT-U1"),
            Err(VoiceCodeError::Symbol('U'))
        );
    }
}
