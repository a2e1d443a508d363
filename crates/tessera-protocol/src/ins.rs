//! Class and instruction bytes (spec §4).

/// CLA of commands sent without secure messaging (SELECT).
pub const CLA_ISO: u8 = 0x00;
/// CLA of proprietary commands without secure messaging (AUTHENTICATE,
/// PERSONALIZE).
pub const CLA_PROPRIETARY: u8 = 0x80;
/// CLA of proprietary commands protected by C-MAC (spec §5.5).
pub const CLA_SECURE: u8 = 0x84;

/// Instruction codes understood by the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Ins {
    /// `A4` SELECT by AID (spec §4.1).
    Select,
    /// `82` mutual AUTHENTICATE (spec §4.2).
    Authenticate,
    /// `CA` READ PROFILE (spec §4.3).
    ReadProfile,
    /// `30` EARN (spec §4.4).
    Earn,
    /// `32` REDEEM (spec §4.5).
    Redeem,
    /// `34` REFUND (spec §4.9).
    Refund,
    /// `38` ACKNOWLEDGE SETTLEMENT (spec §4.10).
    AckSettlement,
    /// `B2` READ LOG (spec §4.6).
    ReadLog,
    /// `E2` PERSONALIZE (spec §4.7).
    Personalize,
    /// `1E` BLOCK (spec §4.8).
    Block,
    /// `DA` UPDATE PROFILE (spec §4.13).
    UpdateProfile,
    /// `2C` UNBLOCK (spec §4.14): the issuer resets the authentication
    /// failure counter.
    Unblock,
    /// `D8` KEY UPDATE (spec §4.15): the issuer moves the card to a new key
    /// version.
    KeyUpdate,
    /// `36` ISSUER ADJUST (spec §4.16, v2.1): the issuer credits or debits
    /// points, with its own adjustment sequence.
    IssuerAdjust,
    /// `3A` AUTHORIZATION REQUEST (spec §4.17, v2.2): the card's request
    /// for an online authorization of a proposed operation.
    AuthorizationRequest,
    /// `C0` GET RESPONSE (ISO 7816-4; handled by transports).
    GetResponse,
    /// Any other instruction byte.
    Other(u8),
}

impl From<u8> for Ins {
    fn from(v: u8) -> Self {
        match v {
            0xA4 => Self::Select,
            0x82 => Self::Authenticate,
            0xCA => Self::ReadProfile,
            0x30 => Self::Earn,
            0x32 => Self::Redeem,
            0x34 => Self::Refund,
            0x38 => Self::AckSettlement,
            0xB2 => Self::ReadLog,
            0xE2 => Self::Personalize,
            0x1E => Self::Block,
            0xDA => Self::UpdateProfile,
            0x2C => Self::Unblock,
            0xD8 => Self::KeyUpdate,
            0x36 => Self::IssuerAdjust,
            0x3A => Self::AuthorizationRequest,
            0xC0 => Self::GetResponse,
            other => Self::Other(other),
        }
    }
}

impl From<Ins> for u8 {
    fn from(ins: Ins) -> u8 {
        match ins {
            Ins::Select => 0xA4,
            Ins::Authenticate => 0x82,
            Ins::ReadProfile => 0xCA,
            Ins::Earn => 0x30,
            Ins::Redeem => 0x32,
            Ins::Refund => 0x34,
            Ins::AckSettlement => 0x38,
            Ins::ReadLog => 0xB2,
            Ins::Personalize => 0xE2,
            Ins::Block => 0x1E,
            Ins::UpdateProfile => 0xDA,
            Ins::Unblock => 0x2C,
            Ins::KeyUpdate => 0xD8,
            Ins::IssuerAdjust => 0x36,
            Ins::AuthorizationRequest => 0x3A,
            Ins::GetResponse => 0xC0,
            Ins::Other(v) => v,
        }
    }
}
