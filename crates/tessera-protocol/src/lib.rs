//! Wire format of the Tessera loyalty card application.
//!
//! This crate owns everything card and terminal must agree on byte for byte:
//! command and response APDUs ([`apdu`]), status words ([`sw`]), instruction
//! codes ([`ins`]), BER-TLV tags and the strict TLV reader ([`tlv`]), and the
//! typed message bodies of every command ([`messages`], [`profile`]).
//! It performs no I/O and holds no keys. The normative description is
//! `applet-spec/README.md` at the repository root.

pub mod apdu;
pub mod ins;
pub mod messages;
pub mod profile;
pub mod sw;
pub mod tlv;

pub use apdu::{Command, Response};
pub use ins::Ins;
pub use sw::StatusWord;

/// The application identifier of the Tessera loyalty application
/// (spec §2): a proprietary `F0` RID followed by "TESSERA" and version 01.
pub const AID: [u8; 9] = [0xF0, 0x54, 0x45, 0x53, 0x53, 0x45, 0x52, 0x41, 0x01];

/// Length of a card identifier in bytes (spec §6).
pub const CARD_ID_LEN: usize = 8;

/// Length of a challenge (card or host) in bytes (spec §5.3).
pub const CHALLENGE_LEN: usize = 8;

/// Length of a cryptogram and of a truncated MAC in bytes (spec §5.4).
pub const MAC_LEN: usize = 8;

/// Length of a transaction certificate in bytes (spec §5.7).
pub const CERT_LEN: usize = 16;

/// Number of records in the card's cyclic transaction log (spec §6).
pub const LOG_CAPACITY: usize = 8;

/// Applet version reported by SELECT (spec §4.1).
pub const APPLET_VERSION: u8 = 2;

/// Errors raised while decoding bytes into protocol structures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The APDU is shorter than its header or its length fields disagree with
    /// its size.
    #[error("malformed APDU: {0}")]
    MalformedApdu(&'static str),
    /// A response is shorter than the two status bytes.
    #[error("response shorter than a status word")]
    TruncatedResponse,
    /// The BER-TLV data could not be parsed.
    #[error("malformed BER-TLV data")]
    MalformedTlv,
    /// A mandatory data object is missing.
    #[error("missing data object {0:#X}")]
    MissingTag(u32),
    /// A data object has the wrong length or an impossible value.
    #[error("invalid value in data object {0:#X}")]
    InvalidValue(u32),
    /// A data object appears twice or is not allowed here.
    #[error("unexpected data object {0:#X}")]
    UnexpectedTag(u32),
}
