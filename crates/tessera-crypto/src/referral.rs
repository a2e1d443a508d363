//! Referral approval codes: the office approves one referred operation of
//! one card at one till, and a person reads the code over the phone to the
//! clerk, who types it in (`docs/terminal-policy.md`, "Referral approval
//! codes").
//!
//! A code is 16 symbols of Crockford's base 32 (`0-9`, `A-Z` without `I L O
//! U`), printed in four groups (`7KQ2-M9XD-3FHT-0B4W`): 15 data symbols
//! (75 bits) and one check symbol. The 75 bits, most significant first:
//!
//! | bits | field |
//! |---|---|
//! | 2 | kind: 0 earn, 1 redeem, 2 refund (3 is not a code) |
//! | 12 | the approval's serial at its till, modulo 4096 |
//! | 14 | expiry, minutes since the Unix epoch, modulo 16384 |
//! | 5 | terminal hint: the terminal id modulo 32 |
//! | 5 | card hint: the top 5 bits of SHA-256(`"tessera referral card"` ‖ card id) |
//! | 5 | amount hint: the top 5 bits of SHA-256(`"tessera referral amount"` ‖ `[amount]64`) |
//! | 32 | the MAC, truncated to its first 32 bits |
//!
//! The MAC is AES-CMAC under `K_ref = KDF(batch key, "tessera referral",
//! [terminal id]32)` (the SP 800-108 KDF of spec §5.2, keyed with the
//! terminal's settlement batch key, which the office and that till's
//! bundle both hold) over `"tessera referral v1" ‖ [terminal id]32 ‖ card
//! id (8) ‖ kind (1) ‖ [amount]64 ‖ [expiry minutes]32 ‖ [serial]16`. The
//! amount is the purchase in minor units for an earn, the points for a
//! redemption or a refund.
//!
//! The hints are not secret and prove nothing: they let the till say *why*
//! a code does not fit (another card, another amount, another till) before
//! the MAC, which alone decides. A forged code passes with probability
//! 2⁻³² per attempt.
//!
//! The check symbol makes `Σ αⁱ⁺¹·dᵢ + c = 0` in GF(32) (`x⁵ + x² + 1`),
//! over the 15 data symbols `dᵢ` and the check `c`: every weight is a
//! distinct non-zero element, so every single mistyped symbol and every
//! swap of two symbols is caught before any key is used.

use sha2::{Digest, Sha256};

use crate::kdf::derive_key;
use crate::{cmac_parts, ct_eq, Key};

/// The KDF label of the referral key.
pub const LABEL: &[u8] = b"tessera referral";
/// The MAC's domain prefix.
const MAC_PREFIX: &[u8] = b"tessera referral v1";
/// Crockford's base-32 alphabet.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Symbols in a code (15 data and one check).
pub const SYMBOLS: usize = 16;
/// Bits of the truncated MAC: a forged code passes with probability 2⁻³².
pub const MAC_BITS: u32 = 32;
/// Serials are carried modulo this.
pub const SERIAL_MODULUS: u32 = 1 << 12;
/// Expiry minutes are carried modulo this (about 11.4 days).
pub const EXPIRY_MODULUS: u32 = 1 << 14;
/// The longest validity the office gives a code, in seconds (3 days):
/// far inside the half of [`EXPIRY_MODULUS`] the till reconstructs the
/// expiry from.
pub const MAX_VALIDITY_SECS: u32 = 3 * 86_400;

/// What a code approves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReferralKind {
    /// A purchase (the amount in minor units).
    Earn,
    /// A redemption (the amount in points).
    Redeem,
    /// A refund of an earn or of a redemption (the amount in points).
    Refund,
}

impl ReferralKind {
    /// `earn`, `redeem`, `refund`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Earn => "earn",
            Self::Redeem => "redeem",
            Self::Refund => "refund",
        }
    }

    /// Parses [`ReferralKind::name`].
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Earn, Self::Redeem, Self::Refund]
            .into_iter()
            .find(|k| k.name() == s)
    }

    fn bits(self) -> u8 {
        match self {
            Self::Earn => 0,
            Self::Redeem => 1,
            Self::Refund => 2,
        }
    }
}

/// The key codes of one terminal are made and checked with.
pub struct ReferralKey {
    key: Key,
    terminal_id: u32,
}

impl ReferralKey {
    /// `KDF(batch key, "tessera referral", [terminal id]32)`.
    pub fn derive(batch_key: &Key, terminal_id: u32) -> Self {
        Self {
            key: derive_key(batch_key, LABEL, &terminal_id.to_be_bytes()),
            terminal_id,
        }
    }

    /// The terminal this key is for.
    pub fn terminal_id(&self) -> u32 {
        self.terminal_id
    }
}

impl std::fmt::Debug for ReferralKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReferralKey")
            .field("terminal_id", &self.terminal_id)
            .finish_non_exhaustive()
    }
}

/// One approval, as the office issues it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Referral {
    /// The till.
    pub terminal_id: u32,
    /// The card.
    pub card_id: [u8; 8],
    /// What is approved.
    pub kind: ReferralKind,
    /// Minor units (earn) or points (redeem, refund).
    pub amount: u64,
    /// Expiry, whole minutes since the Unix epoch.
    pub expires_min: u32,
    /// The serial at this till, below [`SERIAL_MODULUS`].
    pub serial: u16,
}

/// A code as typed, with a correct check symbol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReferralCode {
    symbols: [u8; SYMBOLS],
}

/// Why a typed code is not a code at all (nothing was checked against a
/// key: ask for the code to be read again).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodeFormatError {
    /// Not 16 symbols.
    #[error("an approval code has 16 characters (4 groups of 4), this one has {0}")]
    Length(usize),
    /// A character outside the alphabet.
    #[error("{0:?} is not a character of approval codes (digits and letters except I, L, O, U)")]
    Symbol(char),
    /// The check symbol does not match: a mistyped or swapped character.
    #[error("the approval code's check character does not match: a character is mistyped — ask for the code again")]
    Check,
    /// The kind field holds no kind.
    #[error("this is not an approval code (unknown kind)")]
    Kind,
}

/// Why a well-formed code does not approve this operation. In checking
/// order: the first that applies is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mismatch {
    /// The code approves another kind of operation.
    Kind {
        /// What it approves.
        approves: ReferralKind,
    },
    /// The code is for another till.
    Terminal,
    /// The code is for another card.
    Card,
    /// The code is for another amount.
    Amount,
    /// The MAC does not verify: not issued by the office for this
    /// operation (mistyped in a way the check missed, or forged).
    NotIssued,
    /// Genuine, but expired.
    Expired {
        /// Expiry, Unix seconds.
        at: u32,
    },
}

/// A verified code: what the till journals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// The approval's serial (modulo [`SERIAL_MODULUS`]).
    pub serial: u16,
    /// Expiry, Unix seconds.
    pub expires_at: u32,
}

/// The symbols of a typed code: case, spaces and dashes do not matter; `O`
/// is read as `0`, `I` and `L` as `1` (Crockford). `Err` names the first
/// character outside the alphabet.
pub(crate) fn parse_symbols(text: &str) -> Result<Vec<u8>, char> {
    let mut symbols = Vec::with_capacity(SYMBOLS);
    for ch in text.chars().filter(|c| !matches!(c, '-' | ' ' | '\t')) {
        let up = match ch.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            c => c,
        };
        let v = ALPHABET.iter().position(|&a| char::from(a) == up).ok_or(ch)?;
        symbols.push(v as u8);
    }
    Ok(symbols)
}

/// Symbols as text, in groups of the given sizes joined by dashes.
pub(crate) fn render_symbols(symbols: &[u8], groups: &[usize]) -> String {
    let mut out = String::new();
    let mut it = symbols.iter();
    for (g, &n) in groups.iter().enumerate() {
        if g > 0 {
            out.push('-');
        }
        for &s in it.by_ref().take(n) {
            out.push(char::from(ALPHABET[usize::from(s & 0x1f)]));
        }
    }
    out
}

/// GF(32) multiplication, reduction polynomial `x⁵ + x² + 1`.
fn gf_mul(mut a: u8, mut b: u8) -> u8 {
    let mut p = 0u8;
    while b != 0 {
        if b & 1 != 0 {
            p ^= a;
        }
        b >>= 1;
        a <<= 1;
        if a & 0x20 != 0 {
            a ^= 0x25;
        }
    }
    p & 0x1f
}

/// The check symbol of data symbols (15 for a referral code; any number
/// below 31 keeps the single-error and swap properties).
pub(crate) fn check_symbol(data: &[u8]) -> u8 {
    let mut w = 1u8;
    let mut sum = 0u8;
    for &d in data {
        w = gf_mul(w, 2); // αⁱ⁺¹, α = x
        sum ^= gf_mul(w, d);
    }
    sum
}

fn hint(label: &[u8], data: &[u8]) -> u8 {
    let h = Sha256::new().chain_update(label).chain_update(data).finalize();
    h[0] >> 3
}

/// The card hint a code carries (5 bits): it lets a till tell "another
/// card" from a forged code; it proves nothing.
pub fn card_hint(card: &[u8; 8]) -> u8 {
    hint(b"tessera referral card", card)
}

/// The amount hint a code carries (5 bits), as [`card_hint`].
pub fn amount_hint(amount: u64) -> u8 {
    hint(b"tessera referral amount", &amount.to_be_bytes())
}

fn mac(key: &ReferralKey, r: &Referral) -> [u8; 4] {
    let full = cmac_parts(
        &key.key,
        &[
            MAC_PREFIX,
            &r.terminal_id.to_be_bytes(),
            &r.card_id,
            &[r.kind.bits()],
            &r.amount.to_be_bytes(),
            &r.expires_min.to_be_bytes(),
            &r.serial.to_be_bytes(),
        ],
    );
    let mut m = [0u8; 4];
    m.copy_from_slice(&full[..4]);
    m
}

impl Referral {
    /// The code for this approval, under `key` (the key of
    /// `self.terminal_id`).
    pub fn code(&self, key: &ReferralKey) -> ReferralCode {
        let serial = u128::from(u32::from(self.serial) % SERIAL_MODULUS);
        let mut v: u128 = u128::from(self.kind.bits());
        v = (v << 12) | serial;
        v = (v << 14) | u128::from(self.expires_min % EXPIRY_MODULUS);
        v = (v << 5) | u128::from(self.terminal_id % 32);
        v = (v << 5) | u128::from(card_hint(&self.card_id));
        v = (v << 5) | u128::from(amount_hint(self.amount));
        v = (v << 32) | u128::from(u32::from_be_bytes(mac(key, self)));
        let mut symbols = [0u8; SYMBOLS];
        for (i, s) in symbols[..15].iter_mut().enumerate() {
            *s = ((v >> (5 * (14 - i))) & 0x1f) as u8;
        }
        symbols[15] = check_symbol(&symbols[..15]);
        ReferralCode { symbols }
    }
}

impl ReferralCode {
    /// Parses a typed code: case, spaces and dashes do not matter; `O` is
    /// read as `0`, `I` and `L` as `1` (Crockford).
    ///
    /// # Errors
    /// [`CodeFormatError`]: not a code, or a typo the check symbol caught.
    pub fn parse(text: &str) -> Result<Self, CodeFormatError> {
        let symbols = parse_symbols(text).map_err(CodeFormatError::Symbol)?;
        let symbols: [u8; SYMBOLS] = symbols
            .as_slice()
            .try_into()
            .map_err(|_| CodeFormatError::Length(symbols.len()))?;
        if check_symbol(&symbols[..15]) != symbols[15] {
            return Err(CodeFormatError::Check);
        }
        let code = Self { symbols };
        if code.value() >> 73 == 3 {
            return Err(CodeFormatError::Kind);
        }
        Ok(code)
    }

    fn value(&self) -> u128 {
        self.symbols[..15].iter().fold(0u128, |v, &s| (v << 5) | u128::from(s))
    }

    fn field(&self, shift: u32, bits: u32) -> u32 {
        ((self.value() >> shift) & ((1u128 << bits) - 1)) as u32
    }

    /// What the code approves.
    pub fn kind(&self) -> ReferralKind {
        match self.field(73, 2) {
            0 => ReferralKind::Earn,
            1 => ReferralKind::Redeem,
            _ => ReferralKind::Refund,
        }
    }

    /// The serial it carries.
    pub fn serial(&self) -> u16 {
        self.field(61, 12) as u16
    }

    /// The expiry the code carries, reconstructed as the whole minute
    /// congruent to it nearest to `now_unix` (within half of
    /// [`EXPIRY_MODULUS`]), in Unix seconds.
    pub fn expires_at(&self, now_unix: u32) -> u32 {
        self.expires_min(now_unix).saturating_mul(60)
    }

    fn expires_min(&self, now_unix: u32) -> u32 {
        let e = self.field(47, 14);
        let now_min = now_unix / 60;
        let base = now_min.saturating_sub(EXPIRY_MODULUS / 2);
        base + (e + EXPIRY_MODULUS - base % EXPIRY_MODULUS) % EXPIRY_MODULUS
    }

    /// Checks the code for this operation at `now_unix`: kind, the hints
    /// (till, card, amount), the MAC, then the expiry.
    ///
    /// # Errors
    /// The first [`Mismatch`] found.
    pub fn verify(
        &self,
        key: &ReferralKey,
        card_id: &[u8; 8],
        kind: ReferralKind,
        amount: u64,
        now_unix: u32,
    ) -> Result<Verified, Mismatch> {
        if self.kind() != kind {
            return Err(Mismatch::Kind { approves: self.kind() });
        }
        if self.field(42, 5) != key.terminal_id % 32 {
            return Err(Mismatch::Terminal);
        }
        if self.field(37, 5) != u32::from(card_hint(card_id)) {
            return Err(Mismatch::Card);
        }
        if self.field(32, 5) != u32::from(amount_hint(amount)) {
            return Err(Mismatch::Amount);
        }
        let expires_min = self.expires_min(now_unix);
        let r = Referral {
            terminal_id: key.terminal_id,
            card_id: *card_id,
            kind,
            amount,
            expires_min,
            serial: self.serial(),
        };
        if !ct_eq(&mac(key, &r), &self.field(0, 32).to_be_bytes()) {
            return Err(Mismatch::NotIssued);
        }
        let expires_at = expires_min.saturating_mul(60);
        if now_unix > expires_at {
            return Err(Mismatch::Expired { at: expires_at });
        }
        Ok(Verified {
            serial: self.serial(),
            expires_at,
        })
    }
}

impl std::fmt::Display for ReferralCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, &s) in self.symbols.iter().enumerate() {
            if i > 0 && i % 4 == 0 {
                f.write_str("-")?;
            }
            write!(f, "{}", char::from(ALPHABET[usize::from(s)]))?;
        }
        Ok(())
    }
}

impl std::str::FromStr for ReferralCode {
    type Err = CodeFormatError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn key(t: u32) -> ReferralKey {
        ReferralKey::derive(&Key::new([7; 16]), t)
    }

    fn sample() -> Referral {
        Referral {
            terminal_id: 7,
            card_id: [0x7E, 0x57, 0, 0, 0, 0, 0, 1],
            kind: ReferralKind::Redeem,
            amount: 30,
            expires_min: 1_790_000_000 / 60 + 30,
            serial: 5,
        }
    }

    const NOW: u32 = 1_790_000_000;

    #[test]
    fn a_code_verifies_for_its_operation_only() {
        let r = sample();
        let code = r.code(&key(7));
        let text = code.to_string();
        assert_eq!(text.len(), 19);
        let back = ReferralCode::parse(&text.to_lowercase().replace('-', " ")).unwrap();
        assert_eq!(back, code);
        let v = back.verify(&key(7), &r.card_id, r.kind, 30, NOW).unwrap();
        assert_eq!(v.serial, 5);
        assert_eq!(v.expires_at, r.expires_min * 60);
        assert_eq!(
            back.verify(&key(7), &r.card_id, ReferralKind::Earn, 30, NOW),
            Err(Mismatch::Kind {
                approves: ReferralKind::Redeem
            })
        );
        assert_eq!(
            back.verify(&key(8), &r.card_id, r.kind, 30, NOW),
            Err(Mismatch::Terminal)
        );
        // Terminal 39 has the same hint as 7: the MAC refuses it.
        assert_eq!(
            back.verify(&key(39), &r.card_id, r.kind, 30, NOW),
            Err(Mismatch::NotIssued)
        );
        let other = (0..=255u8)
            .map(|b| [0x7E, 0x57, 0, 0, 0, 0, 0, b])
            .find(|c| card_hint(c) != card_hint(&r.card_id))
            .unwrap();
        assert_eq!(back.verify(&key(7), &other, r.kind, 30, NOW), Err(Mismatch::Card));
        let amount = (31..).find(|a| amount_hint(*a) != amount_hint(30)).unwrap();
        assert_eq!(
            back.verify(&key(7), &r.card_id, r.kind, amount, NOW),
            Err(Mismatch::Amount)
        );
        let late = r.expires_min * 60 + 1;
        assert_eq!(
            back.verify(&key(7), &r.card_id, r.kind, 30, late),
            Err(Mismatch::Expired { at: r.expires_min * 60 })
        );
        // A different batch key: not issued.
        let stranger = ReferralKey::derive(&Key::new([8; 16]), 7);
        assert_eq!(
            back.verify(&stranger, &r.card_id, r.kind, 30, NOW),
            Err(Mismatch::NotIssued)
        );
    }

    #[test]
    fn every_single_typo_and_every_swap_is_caught_by_the_check() {
        let code = sample().code(&key(7));
        let s = code.symbols;
        for i in 0..SYMBOLS {
            for v in 0..32u8 {
                if v == s[i] {
                    continue;
                }
                let mut t = s;
                t[i] = v;
                assert_ne!(check_symbol(&t[..15]), t[15], "substitution at {i}");
            }
            for j in i + 1..SYMBOLS {
                if s[i] == s[j] {
                    continue;
                }
                let mut t = s;
                t.swap(i, j);
                assert_ne!(check_symbol(&t[..15]), t[15], "swap {i} {j}");
            }
        }
        let mut text: Vec<char> = code.to_string().chars().collect();
        let c = text[0];
        text[0] = if c == 'Z' { 'Y' } else { 'Z' };
        let typo: String = text.into_iter().collect();
        assert_eq!(ReferralCode::parse(&typo), Err(CodeFormatError::Check));
        assert_eq!(ReferralCode::parse("ABC"), Err(CodeFormatError::Length(3)));
        assert!(matches!(
            ReferralCode::parse("ABCD-EFGH-JKMN-PQRU"),
            Err(CodeFormatError::Symbol('U'))
        ));
    }

    #[test]
    fn the_expiry_is_reconstructed_around_the_tills_clock() {
        let mut r = sample();
        for offset in [0u32, 1, 59, 60 * 24 * 3] {
            r.expires_min = NOW / 60 + offset / 60 + 1;
            let code = r.code(&key(7));
            assert_eq!(code.expires_at(NOW), r.expires_min * 60);
        }
        // An expiry a day in the past is still recognised as expired.
        r.expires_min = NOW / 60 - 24 * 60;
        let code = r.code(&key(7));
        assert_eq!(code.expires_at(NOW), r.expires_min * 60);
        assert!(matches!(
            code.verify(&key(7), &r.card_id, r.kind, 30, NOW),
            Err(Mismatch::Expired { .. })
        ));
    }

    #[test]
    fn gf32_multiplication_is_a_field() {
        for a in 1..32u8 {
            assert_eq!(
                (1..32u8).filter(|&b| gf_mul(a, b) == 1).count(),
                1,
                "{a} has one inverse"
            );
        }
        // α = x has order 31: the 15 data weights and 1 are distinct.
        let mut w = 1u8;
        let mut seen = vec![1u8];
        for _ in 0..15 {
            w = gf_mul(w, 2);
            assert!(!seen.contains(&w));
            seen.push(w);
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in ".{0,40}") {
            let _ = ReferralCode::parse(&s);
        }

        #[test]
        fn codes_round_trip(serial in 0u16..4096, amount in 1u64..1_000_000, card in proptest::array::uniform8(0u8..)) {
            let r = Referral { serial, amount, card_id: card, ..sample() };
            let code = r.code(&key(7));
            let back = ReferralCode::parse(&code.to_string()).unwrap();
            proptest::prop_assert_eq!(back, code);
            proptest::prop_assert_eq!(back.verify(&key(7), &card, r.kind, amount, NOW).map(|v| v.serial), Ok(serial));
        }
    }
}
