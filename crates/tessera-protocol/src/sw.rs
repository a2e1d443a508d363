//! Status words (spec §4, "Status words").

use core::fmt;

/// A status word returned by the card, named where the spec gives it a
/// meaning, with [`StatusWord::Other`] for anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StatusWord {
    /// `9000`: normal processing.
    Ok,
    /// `61xx`: more response bytes are available through GET RESPONSE.
    MoreData(u8),
    /// `6283`: the application is blocked (answer to SELECT on a blocked card).
    ApplicationBlocked,
    /// `63Cx`: authentication failed; `x` tries remain before blocking.
    AuthFailed {
        /// Remaining tries (0 to 15).
        remaining: u8,
    },
    /// `6581`: the card's persistent memory could not be written.
    MemoryFailure,
    /// `6700`: wrong length (Lc or Le inconsistent with the command).
    WrongLength,
    /// `6982`: the command needs an authenticated session.
    SecurityNotSatisfied,
    /// `6983`: authentication is blocked after too many failures.
    AuthBlocked,
    /// `6985`: the command is not allowed in the card's life-cycle state.
    ConditionsNotSatisfied,
    /// `6988`: the secure messaging MAC is wrong; the session is closed.
    BadMac,
    /// `6A80`: the command data is malformed or holds impossible values.
    WrongData,
    /// `6A82`: the selected application is not on this card.
    NotFound,
    /// `6A83`: the requested log record does not exist.
    RecordNotFound,
    /// `6A84`: not enough memory for the data (profile too large).
    NotEnoughMemory,
    /// `6A88`: the referenced transaction is no longer in the card's log
    /// (REFUND, v2): the back office must decide.
    ReferenceNotFound,
    /// `6A86`: incorrect P1 or P2.
    WrongP1P2,
    /// `6Cxx`: wrong Le; the exact length is `xx`.
    WrongLe(u8),
    /// `6D00`: instruction not supported.
    InsNotSupported,
    /// `6E00`: class not supported.
    ClaNotSupported,
    /// `9101`: the redemption exceeds the balance.
    InsufficientBalance,
    /// `9102`: the earn would overflow the balance.
    BalanceOverflow,
    /// `9103`: the amount exceeds the per-transaction cap set at
    /// personalization.
    AboveCap,
    /// `9104`: the transaction counter is exhausted; the card can no longer
    /// transact.
    CounterExhausted,
    /// `9105`: the refund's reference names a transaction of another kind
    /// (v2).
    ReferenceMismatch,
    /// `9106`: the refund exceeds what remains refundable of the original;
    /// `0` remaining means it was refunded already (v2).
    RefundExceedsOriginal,
    /// `9107`: the office declined the operation in its authorization
    /// response (v2.2, spec §4.17); nothing changed.
    DeclinedByIssuer,
    /// Any other status word.
    Other(u16),
}

impl StatusWord {
    /// The two status bytes as one big-endian number.
    pub fn to_u16(self) -> u16 {
        match self {
            Self::Ok => 0x9000,
            Self::MoreData(n) => 0x6100 | u16::from(n),
            Self::ApplicationBlocked => 0x6283,
            Self::AuthFailed { remaining } => 0x63C0 | u16::from(remaining.min(15)),
            Self::MemoryFailure => 0x6581,
            Self::WrongLength => 0x6700,
            Self::SecurityNotSatisfied => 0x6982,
            Self::AuthBlocked => 0x6983,
            Self::ConditionsNotSatisfied => 0x6985,
            Self::BadMac => 0x6988,
            Self::WrongData => 0x6A80,
            Self::NotFound => 0x6A82,
            Self::RecordNotFound => 0x6A83,
            Self::NotEnoughMemory => 0x6A84,
            Self::WrongP1P2 => 0x6A86,
            Self::ReferenceNotFound => 0x6A88,
            Self::WrongLe(n) => 0x6C00 | u16::from(n),
            Self::InsNotSupported => 0x6D00,
            Self::ClaNotSupported => 0x6E00,
            Self::InsufficientBalance => 0x9101,
            Self::BalanceOverflow => 0x9102,
            Self::AboveCap => 0x9103,
            Self::CounterExhausted => 0x9104,
            Self::ReferenceMismatch => 0x9105,
            Self::RefundExceedsOriginal => 0x9106,
            Self::DeclinedByIssuer => 0x9107,
            Self::Other(v) => v,
        }
    }

    /// The two status bytes `[SW1, SW2]`.
    pub fn to_bytes(self) -> [u8; 2] {
        self.to_u16().to_be_bytes()
    }

    /// Whether this is `9000`.
    pub fn is_ok(self) -> bool {
        self == Self::Ok
    }
}

impl From<u16> for StatusWord {
    fn from(v: u16) -> Self {
        let [sw1, sw2] = v.to_be_bytes();
        match (sw1, sw2) {
            (0x90, 0x00) => Self::Ok,
            (0x61, n) => Self::MoreData(n),
            (0x62, 0x83) => Self::ApplicationBlocked,
            (0x63, n) if n & 0xF0 == 0xC0 => Self::AuthFailed { remaining: n & 0x0F },
            (0x65, 0x81) => Self::MemoryFailure,
            (0x67, 0x00) => Self::WrongLength,
            (0x69, 0x82) => Self::SecurityNotSatisfied,
            (0x69, 0x83) => Self::AuthBlocked,
            (0x69, 0x85) => Self::ConditionsNotSatisfied,
            (0x69, 0x88) => Self::BadMac,
            (0x6A, 0x80) => Self::WrongData,
            (0x6A, 0x82) => Self::NotFound,
            (0x6A, 0x83) => Self::RecordNotFound,
            (0x6A, 0x84) => Self::NotEnoughMemory,
            (0x6A, 0x86) => Self::WrongP1P2,
            (0x6A, 0x88) => Self::ReferenceNotFound,
            (0x6C, n) => Self::WrongLe(n),
            (0x6D, 0x00) => Self::InsNotSupported,
            (0x6E, 0x00) => Self::ClaNotSupported,
            (0x91, 0x01) => Self::InsufficientBalance,
            (0x91, 0x02) => Self::BalanceOverflow,
            (0x91, 0x03) => Self::AboveCap,
            (0x91, 0x04) => Self::CounterExhausted,
            (0x91, 0x05) => Self::ReferenceMismatch,
            (0x91, 0x06) => Self::RefundExceedsOriginal,
            (0x91, 0x07) => Self::DeclinedByIssuer,
            _ => Self::Other(v),
        }
    }
}

impl fmt::Display for StatusWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04X}", self.to_u16())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_u16_round_trips() {
        for v in 0..=u16::MAX {
            assert_eq!(StatusWord::from(v).to_u16(), v);
        }
    }
}
