//! Typed bodies of every command and response (spec §4).
//!
//! Each type has `to_bytes` producing the exact TLV encoding the spec gives
//! and `parse` accepting exactly that encoding.

use crate::tlv::{encode, encode_all, tags, TlvList};
use crate::{ProtocolError, CARD_ID_LEN, CERT_LEN, CHALLENGE_LEN, MAC_LEN};

/// Card identifier.
pub type CardId = [u8; CARD_ID_LEN];

/// The application's life-cycle state (spec §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lifecycle {
    /// `01`: manufactured, waiting for PERSONALIZE.
    Personalization,
    /// `02`: personalized and in use.
    Active,
    /// `03`: blocked for good.
    Blocked,
}

impl Lifecycle {
    /// The encoded byte.
    pub fn to_byte(self) -> u8 {
        match self {
            Self::Personalization => 0x01,
            Self::Active => 0x02,
            Self::Blocked => 0x03,
        }
    }

    /// Decodes the byte.
    ///
    /// # Errors
    /// [`ProtocolError::InvalidValue`] for unknown states.
    pub fn from_byte(b: u8) -> Result<Self, ProtocolError> {
        match b {
            0x01 => Ok(Self::Personalization),
            0x02 => Ok(Self::Active),
            0x03 => Ok(Self::Blocked),
            _ => Err(ProtocolError::InvalidValue(tags::LIFECYCLE)),
        }
    }
}

/// Response to SELECT (spec §4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectResponse {
    /// Card identifier.
    pub card_id: CardId,
    /// Applet version.
    pub applet_version: u8,
    /// Version of the card's diversified keys.
    pub key_version: u8,
    /// Issuer identifier (v2); absent before personalization and on cards
    /// personalized under application v1.
    pub issuer_id: Option<IssuerId>,
    /// Life-cycle state.
    pub lifecycle: Lifecycle,
    /// SHA-256 of the stored signed profile; absent before personalization.
    pub profile_digest: Option<[u8; 32]>,
    /// Fresh card challenge for this session.
    pub card_challenge: [u8; CHALLENGE_LEN],
}

/// Issuer identifier (tag `DF07`, 4 bytes).
pub type IssuerId = [u8; 4];

/// The issuer identifier of the published test keys: `"TEST"`. Production
/// key stores never use it.
pub const TEST_ISSUER_ID: IssuerId = *b"TEST";

impl SelectResponse {
    /// Encodes the response data.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = encode_all(&[
            (tags::CARD_ID, &self.card_id),
            (tags::VERSIONS, &[self.applet_version, self.key_version]),
        ]);
        if let Some(i) = &self.issuer_id {
            out.extend(encode(tags::ISSUER_ID, i));
        }
        out.extend(encode(tags::LIFECYCLE, &[self.lifecycle.to_byte()]));
        if let Some(d) = &self.profile_digest {
            out.extend(encode(tags::PROFILE_DIGEST, d));
        }
        out.extend(encode(tags::CARD_CHALLENGE, &self.card_challenge));
        out
    }

    /// Decodes the response data.
    ///
    /// # Errors
    /// Any [`ProtocolError`] on malformed data.
    pub fn parse(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let l = TlvList::parse(bytes)?;
        l.only(&[
            tags::CARD_ID,
            tags::VERSIONS,
            tags::ISSUER_ID,
            tags::LIFECYCLE,
            tags::PROFILE_DIGEST,
            tags::CARD_CHALLENGE,
        ])?;
        let [applet_version, key_version] = l.array::<2>(tags::VERSIONS)?;
        let [lc] = l.array::<1>(tags::LIFECYCLE)?;
        Ok(Self {
            card_id: l.array(tags::CARD_ID)?,
            applet_version,
            key_version,
            issuer_id: optional_array(&l, tags::ISSUER_ID)?,
            lifecycle: Lifecycle::from_byte(lc)?,
            profile_digest: optional_array(&l, tags::PROFILE_DIGEST)?,
            card_challenge: l.array(tags::CARD_CHALLENGE)?,
        })
    }
}

fn optional_array<const N: usize>(l: &TlvList, tag: u32) -> Result<Option<[u8; N]>, ProtocolError> {
    match l.get(tag) {
        Some(_) => Ok(Some(l.array(tag)?)),
        None => Ok(None),
    }
}

/// Data of the AUTHENTICATE command (spec §4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthCommand {
    /// Host challenge.
    pub host_challenge: [u8; CHALLENGE_LEN],
    /// Host cryptogram.
    pub host_cryptogram: [u8; MAC_LEN],
}

impl AuthCommand {
    /// Encodes the command data.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode_all(&[
            (tags::HOST_CHALLENGE, &self.host_challenge),
            (tags::HOST_CRYPTOGRAM, &self.host_cryptogram),
        ])
    }

    /// Decodes the command data.
    ///
    /// # Errors
    /// Any [`ProtocolError`] on malformed data.
    pub fn parse(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let l = TlvList::parse(bytes)?;
        l.only(&[tags::HOST_CHALLENGE, tags::HOST_CRYPTOGRAM])?;
        Ok(Self {
            host_challenge: l.array(tags::HOST_CHALLENGE)?,
            host_cryptogram: l.array(tags::HOST_CRYPTOGRAM)?,
        })
    }
}

/// Response data of AUTHENTICATE, before the R-MAC (spec §4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthResponse {
    /// Card cryptogram.
    pub card_cryptogram: [u8; MAC_LEN],
    /// Current balance.
    pub balance: u32,
    /// Current transaction counter (the counter of the last transaction).
    pub counter: u32,
    /// Life-cycle state.
    pub lifecycle: Lifecycle,
    /// The most recent log record, absent on a card that never transacted.
    pub last_record: Option<LogRecord>,
    /// The card's visit history.
    pub visits: Visits,
    /// The card's offline velocity counters.
    pub velocity: Velocity,
    /// Applet version and key version, as SELECT reported them (v2: under
    /// the R-MAC, so a relay cannot change what the terminal acts on).
    pub versions: [u8; 2],
    /// Issuer identifier, as SELECT reported it (v2).
    pub issuer_id: Option<IssuerId>,
    /// Profile digest, as SELECT reported it (v2).
    pub profile_digest: Option<[u8; 32]>,
}

/// Visit history kept by the card (spec §6.1), updated by every EARN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Visits {
    /// Number of purchases (EARNs) ever.
    pub count: u32,
    /// Day of the last purchase, in days since 1970-01-01 (0 = never).
    pub last_day: u32,
    /// Store of the last purchase.
    pub last_store: u32,
}

impl Visits {
    /// The 12-byte encoding.
    pub fn to_bytes(&self) -> [u8; 12] {
        twelve(self.count, self.last_day, self.last_store)
    }

    /// Decodes the 12-byte encoding.
    ///
    /// # Errors
    /// [`ProtocolError::InvalidValue`] on a wrong length.
    pub fn parse(b: &[u8]) -> Result<Self, ProtocolError> {
        let [count, last_day, last_store] = three(b, tags::VISITS)?;
        Ok(Self {
            count,
            last_day,
            last_store,
        })
    }
}

/// Offline velocity counters kept by the card (spec §6.1): redemptions not
/// yet acknowledged as settled by the back office.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Velocity {
    /// Redemptions since the last acknowledged settlement.
    pub unsettled_redeems: u32,
    /// Points redeemed since the last acknowledged settlement.
    pub unsettled_points: u32,
    /// Card counter up to which settlement was acknowledged.
    pub settled_counter: u32,
}

impl Velocity {
    /// The 12-byte encoding.
    pub fn to_bytes(&self) -> [u8; 12] {
        twelve(self.unsettled_redeems, self.unsettled_points, self.settled_counter)
    }

    /// Decodes the 12-byte encoding.
    ///
    /// # Errors
    /// [`ProtocolError::InvalidValue`] on a wrong length.
    pub fn parse(b: &[u8]) -> Result<Self, ProtocolError> {
        let [unsettled_redeems, unsettled_points, settled_counter] = three(b, tags::VELOCITY)?;
        Ok(Self {
            unsettled_redeems,
            unsettled_points,
            settled_counter,
        })
    }
}

fn twelve(a: u32, b: u32, c: u32) -> [u8; 12] {
    let mut out = [0u8; 12];
    out[..4].copy_from_slice(&a.to_be_bytes());
    out[4..8].copy_from_slice(&b.to_be_bytes());
    out[8..].copy_from_slice(&c.to_be_bytes());
    out
}

fn three(b: &[u8], tag: u32) -> Result<[u32; 3], ProtocolError> {
    if b.len() != 12 {
        return Err(ProtocolError::InvalidValue(tag));
    }
    let u = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    Ok([u(0), u(4), u(8)])
}

impl AuthResponse {
    /// Encodes the response data (without the MAC object).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = encode_all(&[
            (tags::CARD_CRYPTOGRAM, &self.card_cryptogram),
            (tags::BALANCE, &self.balance.to_be_bytes()),
            (tags::COUNTER, &self.counter.to_be_bytes()),
            (tags::LIFECYCLE, &[self.lifecycle.to_byte()]),
            (tags::VISITS, &self.visits.to_bytes()),
            (tags::VELOCITY, &self.velocity.to_bytes()),
            (tags::VERSIONS, &self.versions),
        ]);
        if let Some(i) = &self.issuer_id {
            out.extend(encode(tags::ISSUER_ID, i));
        }
        if let Some(d) = &self.profile_digest {
            out.extend(encode(tags::PROFILE_DIGEST, d));
        }
        if let Some(r) = &self.last_record {
            out.extend(encode(tags::LOG_RECORD, &r.to_bytes()));
        }
        out
    }

    /// Decodes the response data (without the MAC object).
    ///
    /// # Errors
    /// Any [`ProtocolError`] on malformed data.
    pub fn parse(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let l = TlvList::parse(bytes)?;
        l.only(&[
            tags::CARD_CRYPTOGRAM,
            tags::BALANCE,
            tags::COUNTER,
            tags::LIFECYCLE,
            tags::VISITS,
            tags::VELOCITY,
            tags::VERSIONS,
            tags::ISSUER_ID,
            tags::PROFILE_DIGEST,
            tags::LOG_RECORD,
        ])?;
        let [lc] = l.array::<1>(tags::LIFECYCLE)?;
        Ok(Self {
            card_cryptogram: l.array(tags::CARD_CRYPTOGRAM)?,
            balance: l.u32(tags::BALANCE)?,
            counter: l.u32(tags::COUNTER)?,
            lifecycle: Lifecycle::from_byte(lc)?,
            last_record: l.get(tags::LOG_RECORD).map(LogRecord::parse).transpose()?,
            visits: Visits::parse(l.require(tags::VISITS)?)?,
            velocity: Velocity::parse(l.require(tags::VELOCITY)?)?,
            versions: l.array(tags::VERSIONS)?,
            issuer_id: optional_array(&l, tags::ISSUER_ID)?,
            profile_digest: optional_array(&l, tags::PROFILE_DIGEST)?,
        })
    }
}

/// Kind of a card transaction (spec §6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TxKind {
    /// `01`: points added for a purchase.
    Earn,
    /// `02`: points spent.
    Redeem,
    /// `03`: reversal of an earn: points taken back.
    RefundEarn,
    /// `04`: reversal of a redemption: points given back.
    RefundRedeem,
    /// `05` (v2.1): points credited by the issuer (ISSUER ADJUST, spec
    /// §4.16); the record's reference is the adjustment sequence.
    IssuerCredit,
    /// `06` (v2.1): points debited by the issuer, never below zero.
    IssuerDebit,
}

impl TxKind {
    /// The encoded byte.
    pub fn to_byte(self) -> u8 {
        match self {
            Self::Earn => 0x01,
            Self::Redeem => 0x02,
            Self::RefundEarn => 0x03,
            Self::RefundRedeem => 0x04,
            Self::IssuerCredit => 0x05,
            Self::IssuerDebit => 0x06,
        }
    }

    /// Decodes the byte.
    ///
    /// # Errors
    /// [`ProtocolError::InvalidValue`] for unknown kinds.
    pub fn from_byte(b: u8) -> Result<Self, ProtocolError> {
        match b {
            0x01 => Ok(Self::Earn),
            0x02 => Ok(Self::Redeem),
            0x03 => Ok(Self::RefundEarn),
            0x04 => Ok(Self::RefundRedeem),
            0x05 => Ok(Self::IssuerCredit),
            0x06 => Ok(Self::IssuerDebit),
            _ => Err(ProtocolError::InvalidValue(tags::LOG_RECORD)),
        }
    }

    /// Whether the transaction adds points to the balance.
    pub fn is_credit(self) -> bool {
        matches!(self, Self::Earn | Self::RefundRedeem | Self::IssuerCredit)
    }

    /// Whether the record is an issuer adjustment (ISSUER ADJUST, v2.1),
    /// whose reference is the adjustment sequence.
    pub fn is_adjustment(self) -> bool {
        matches!(self, Self::IssuerCredit | Self::IssuerDebit)
    }

    /// Whether the record is a refund, whose reference names the reversed
    /// transaction.
    pub fn is_refund(self) -> bool {
        matches!(self, Self::RefundEarn | Self::RefundRedeem)
    }

    /// Every kind, in byte order.
    pub const ALL: [Self; 6] = [
        Self::Earn,
        Self::Redeem,
        Self::RefundEarn,
        Self::RefundRedeem,
        Self::IssuerCredit,
        Self::IssuerDebit,
    ];

    /// The signed change of the balance for `amount` points.
    pub fn delta(self, amount: u32) -> i64 {
        if self.is_credit() {
            i64::from(amount)
        } else {
            -i64::from(amount)
        }
    }

    /// The refund kind that reverses this kind, if any.
    pub fn reversal(self) -> Option<Self> {
        match self {
            Self::Earn => Some(Self::RefundEarn),
            Self::Redeem => Some(Self::RefundRedeem),
            _ => None,
        }
    }

    /// Lower-case name used in human and JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Self::Earn => "earn",
            Self::Redeem => "redeem",
            Self::RefundEarn => "refund-earn",
            Self::RefundRedeem => "refund-redeem",
            Self::IssuerCredit => "issuer-credit",
            Self::IssuerDebit => "issuer-debit",
        }
    }
}

/// Data of EARN and REDEEM (spec §4.4, §4.5), before the MAC object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxCommand {
    /// Points to add or spend; never zero.
    pub amount: u32,
    /// The terminal's identifier.
    pub terminal_id: u32,
    /// The terminal's sequence number for this transaction.
    pub terminal_seq: u32,
    /// Terminal time, seconds since the Unix epoch.
    pub time: u32,
    /// The store the terminal stands in.
    pub store_id: u32,
    /// For REFUND: the counter of the transaction it reverses; 0 otherwise.
    pub reference: u32,
    /// v2.2: the office's authorization response to the card's request
    /// of this session (spec §4.17), when the operation was authorized
    /// online.
    pub authorization: Option<AuthorizationResponse>,
}

impl TxCommand {
    /// Encodes the command data (without the MAC object). The reference
    /// object is present only when non-zero, the authorization response
    /// only when there is one (last).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = encode_all(&[
            (tags::AMOUNT, &self.amount.to_be_bytes()),
            (tags::TERMINAL_ID, &self.terminal_id.to_be_bytes()),
            (tags::TERMINAL_SEQ, &self.terminal_seq.to_be_bytes()),
            (tags::TIME, &self.time.to_be_bytes()),
            (tags::STORE_ID, &self.store_id.to_be_bytes()),
        ]);
        if self.reference != 0 {
            out.extend(encode(tags::REFERENCE, &self.reference.to_be_bytes()));
        }
        if let Some(a) = &self.authorization {
            out.extend(encode(tags::AUTH_RESPONSE, &a.to_bytes()));
        }
        out
    }

    /// Decodes the command data (without the MAC object).
    ///
    /// # Errors
    /// Any [`ProtocolError`] on malformed data.
    pub fn parse(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let l = TlvList::parse(bytes)?;
        l.only(&[
            tags::AMOUNT,
            tags::TERMINAL_ID,
            tags::TERMINAL_SEQ,
            tags::TIME,
            tags::STORE_ID,
            tags::REFERENCE,
            tags::AUTH_RESPONSE,
        ])?;
        let reference = match l.get(tags::REFERENCE) {
            Some(_) => match l.u32(tags::REFERENCE)? {
                0 => return Err(ProtocolError::InvalidValue(tags::REFERENCE)),
                r => r,
            },
            None => 0,
        };
        let authorization = match l.get(tags::AUTH_RESPONSE) {
            Some(raw) => Some(AuthorizationResponse::parse(raw)?),
            None => None,
        };
        Ok(Self {
            amount: l.u32(tags::AMOUNT)?,
            terminal_id: l.u32(tags::TERMINAL_ID)?,
            terminal_seq: l.u32(tags::TERMINAL_SEQ)?,
            time: l.u32(tags::TIME)?,
            store_id: l.u32(tags::STORE_ID)?,
            reference,
            authorization,
        })
    }
}

/// Bit 7 of a log record's kind byte (v2.2, spec §6.2): the transaction
/// was authorized online by the office.
pub const ONLINE_FLAG: u8 = 0x80;

/// One record of the card's transaction log (spec §6.2): 45 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LogRecord {
    /// Transaction counter value given to this transaction.
    pub counter: u32,
    /// Earn or redeem.
    pub kind: TxKind,
    /// Points added or spent.
    pub amount: u32,
    /// Balance after the transaction.
    pub balance_after: u32,
    /// Terminal identifier.
    pub terminal_id: u32,
    /// Terminal sequence number.
    pub terminal_seq: u32,
    /// Terminal time, seconds since the Unix epoch.
    pub time: u32,
    /// For refunds, the counter of the reversed transaction; 0 otherwise.
    pub reference: u32,
    /// v2.2: the card made the transaction on the office's online
    /// authorization (spec §4.17): bit 7 of the kind byte, certified with
    /// it.
    pub online: bool,
    /// Transaction certificate (spec §5.7).
    pub certificate: [u8; CERT_LEN],
}

impl LogRecord {
    /// Encoded length of a record.
    pub const LEN: usize = Self::BODY_LEN + CERT_LEN;
    /// Length of the record without its certificate.
    pub const BODY_LEN: usize = 29;

    /// The bytes covered by the certificate (spec §5.7): a domain tag, the
    /// card id and every field of the record but the certificate.
    pub fn certified_bytes(&self, card_id: &CardId) -> Vec<u8> {
        let mut out = Vec::with_capacity(3 + 8 + Self::BODY_LEN);
        out.extend_from_slice(b"TC");
        out.push(0x01);
        out.extend_from_slice(card_id);
        out.extend_from_slice(&self.to_bytes()[..Self::BODY_LEN]);
        out
    }

    /// Encodes the record.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::LEN);
        out.extend_from_slice(&self.counter.to_be_bytes());
        out.push(self.kind.to_byte() | if self.online { ONLINE_FLAG } else { 0 });
        out.extend_from_slice(&self.amount.to_be_bytes());
        out.extend_from_slice(&self.balance_after.to_be_bytes());
        out.extend_from_slice(&self.terminal_id.to_be_bytes());
        out.extend_from_slice(&self.terminal_seq.to_be_bytes());
        out.extend_from_slice(&self.time.to_be_bytes());
        out.extend_from_slice(&self.reference.to_be_bytes());
        out.extend_from_slice(&self.certificate);
        out
    }

    /// Decodes a record.
    ///
    /// # Errors
    /// [`ProtocolError::InvalidValue`] on a wrong length or kind.
    pub fn parse(b: &[u8]) -> Result<Self, ProtocolError> {
        let bad = ProtocolError::InvalidValue(tags::LOG_RECORD);
        if b.len() != Self::LEN {
            return Err(bad);
        }
        let u = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let mut certificate = [0u8; CERT_LEN];
        certificate.copy_from_slice(&b[Self::BODY_LEN..]);
        let online = b[4] & ONLINE_FLAG != 0;
        let kind = TxKind::from_byte(b[4] & !ONLINE_FLAG)?;
        // Issuer adjustments are the office's own decision: never online.
        if online && kind.is_adjustment() {
            return Err(bad);
        }
        Ok(Self {
            counter: u(0),
            kind,
            amount: u(5),
            balance_after: u(9),
            terminal_id: u(13),
            terminal_seq: u(17),
            time: u(21),
            reference: u(25),
            online,
            certificate,
        })
    }
}

/// Data of AUTHORIZATION REQUEST (spec §4.17, v2.2), before the MAC
/// object: the proposed operation. Its kind travels in P1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationRequestCommand {
    /// Points the operation would move; never zero.
    pub amount: u32,
    /// The terminal asking.
    pub terminal_id: u32,
    /// Refunds: the counter of the reversed transaction; 0 otherwise.
    pub reference: u32,
}

impl AuthorizationRequestCommand {
    /// Encodes the command data; the reference object only when non-zero.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = encode_all(&[
            (tags::AMOUNT, &self.amount.to_be_bytes()),
            (tags::TERMINAL_ID, &self.terminal_id.to_be_bytes()),
        ]);
        if self.reference != 0 {
            out.extend(encode(tags::REFERENCE, &self.reference.to_be_bytes()));
        }
        out
    }

    /// Decodes the command data.
    ///
    /// # Errors
    /// Any [`ProtocolError`] on malformed data (a zero reference included).
    pub fn parse(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let l = TlvList::parse(bytes)?;
        l.only(&[tags::AMOUNT, tags::TERMINAL_ID, tags::REFERENCE])?;
        let reference = match l.get(tags::REFERENCE) {
            Some(_) => match l.u32(tags::REFERENCE)? {
                0 => return Err(ProtocolError::InvalidValue(tags::REFERENCE)),
                r => r,
            },
            None => 0,
        };
        Ok(Self {
            amount: l.u32(tags::AMOUNT)?,
            terminal_id: l.u32(tags::TERMINAL_ID)?,
            reference,
        })
    }
}

/// The card's authorization request (spec §4.17, v2.2; object `DF0A`, 49
/// bytes): the proposed operation, the card's state, a fresh challenge and
/// the request cryptogram over them, which only the card and the office can
/// compute (spec §5.10).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AuthorizationRequest {
    /// The card's transaction counter (the operation would get counter + 1).
    pub counter: u32,
    /// The proposed operation's kind (earn, redeem or a refund).
    pub kind: TxKind,
    /// Its points.
    pub amount: u32,
    /// The terminal that asked.
    pub terminal_id: u32,
    /// Refunds: the reversed transaction's counter; 0 otherwise.
    pub reference: u32,
    /// The card's balance.
    pub balance: u32,
    /// The card's offline velocity counters.
    pub velocity: Velocity,
    /// The card's authorization challenge, fresh for this request.
    pub challenge: [u8; CHALLENGE_LEN],
    /// The request cryptogram (ARQC, spec §5.10).
    pub cryptogram: [u8; MAC_LEN],
}

impl AuthorizationRequest {
    /// Length of the request body (everything but the cryptogram).
    pub const BODY_LEN: usize = 41;
    /// Encoded length.
    pub const LEN: usize = Self::BODY_LEN + MAC_LEN;

    /// The request body, which the cryptogram covers (after its domain
    /// tag and the card id, spec §5.10).
    pub fn body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::LEN);
        out.extend_from_slice(&self.counter.to_be_bytes());
        out.push(self.kind.to_byte());
        out.extend_from_slice(&self.amount.to_be_bytes());
        out.extend_from_slice(&self.terminal_id.to_be_bytes());
        out.extend_from_slice(&self.reference.to_be_bytes());
        out.extend_from_slice(&self.balance.to_be_bytes());
        out.extend_from_slice(&self.velocity.to_bytes());
        out.extend_from_slice(&self.challenge);
        out
    }

    /// Encodes the value of `DF0A`: body ‖ cryptogram.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.body();
        out.extend_from_slice(&self.cryptogram);
        out
    }

    /// Decodes the value of `DF0A`.
    ///
    /// # Errors
    /// [`ProtocolError::InvalidValue`] on a wrong length, or a kind that no
    /// request carries (an issuer adjustment).
    pub fn parse(b: &[u8]) -> Result<Self, ProtocolError> {
        let bad = ProtocolError::InvalidValue(tags::AUTH_REQUEST);
        if b.len() != Self::LEN {
            return Err(bad);
        }
        let u = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let kind = TxKind::from_byte(b[4]).map_err(|_| bad.clone())?;
        if kind.is_adjustment() {
            return Err(bad);
        }
        let mut challenge = [0u8; CHALLENGE_LEN];
        challenge.copy_from_slice(&b[33..41]);
        let mut cryptogram = [0u8; MAC_LEN];
        cryptogram.copy_from_slice(&b[41..49]);
        Ok(Self {
            counter: u(0),
            kind,
            amount: u(5),
            terminal_id: u(9),
            reference: u(13),
            balance: u(17),
            velocity: Velocity::parse(&b[21..33]).map_err(|_| bad.clone())?,
            challenge,
            cryptogram,
        })
    }
}

/// The office's answer to an authorization request (spec §4.17, v2.2;
/// object `DF0B`, 13 bytes), relayed by the terminal in the operation
/// command: the decision, the counter up to which the office has settled
/// the card (0: none said), and the issuer MAC over the request's
/// cryptogram and both (spec §5.9).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AuthorizationResponse {
    /// `true`: approved (`00`); `false`: declined (`01`).
    pub approved: bool,
    /// Every transaction of the card up to this counter is settled; 0 says
    /// nothing (the velocity counters are left as they are).
    pub settled: u32,
    /// Issuer MAC (spec §5.9) with INS `3A`.
    pub issuer_mac: [u8; MAC_LEN],
}

impl AuthorizationResponse {
    /// Encoded length.
    pub const LEN: usize = 13;

    /// The decision byte: `00` approved, `01` declined.
    pub fn decision_byte(&self) -> u8 {
        u8::from(!self.approved)
    }

    /// Encodes the value of `DF0B`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::LEN);
        out.push(self.decision_byte());
        out.extend_from_slice(&self.settled.to_be_bytes());
        out.extend_from_slice(&self.issuer_mac);
        out
    }

    /// Decodes the value of `DF0B`.
    ///
    /// # Errors
    /// [`ProtocolError::InvalidValue`] on a wrong length or a decision byte
    /// other than `00` and `01`.
    pub fn parse(b: &[u8]) -> Result<Self, ProtocolError> {
        let bad = ProtocolError::InvalidValue(tags::AUTH_RESPONSE);
        if b.len() != Self::LEN || b[0] > 1 {
            return Err(bad);
        }
        let mut issuer_mac = [0u8; MAC_LEN];
        issuer_mac.copy_from_slice(&b[5..13]);
        Ok(Self {
            approved: b[0] == 0,
            settled: u32::from_be_bytes([b[1], b[2], b[3], b[4]]),
            issuer_mac,
        })
    }
}

/// Plaintext of PERSONALIZE (spec §4.7), encrypted on the wire.
#[derive(Clone, PartialEq, Eq)]
pub struct PersonalizeData {
    /// Version of the diversified keys.
    pub key_version: u8,
    /// The card's authentication key.
    pub key_auth: zeroize::Zeroizing<[u8; 16]>,
    /// The card's certificate key.
    pub key_cert: zeroize::Zeroizing<[u8; 16]>,
    /// The card's issuer key K_iss (v2): checks the issuer's MACs.
    pub key_issuer: zeroize::Zeroizing<[u8; 16]>,
    /// The issuer identifier (v2).
    pub issuer_id: IssuerId,
    /// Per-transaction cap on EARN amounts.
    pub earn_cap: u32,
    /// Per-transaction cap on REDEEM amounts.
    pub redeem_cap: u32,
    /// Consecutive authentication failures before authentication blocks
    /// (1 to 15).
    pub auth_limit: u8,
    /// The signed profile blob (spec §7).
    pub profile: Vec<u8>,
}

impl core::fmt::Debug for PersonalizeData {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PersonalizeData")
            .field("key_version", &self.key_version)
            .field("issuer_id", &self.issuer_id)
            .field("earn_cap", &self.earn_cap)
            .field("redeem_cap", &self.redeem_cap)
            .field("auth_limit", &self.auth_limit)
            .field("profile_len", &self.profile.len())
            .finish_non_exhaustive()
    }
}

impl PersonalizeData {
    /// Encodes the plaintext.
    pub fn to_bytes(&self) -> zeroize::Zeroizing<Vec<u8>> {
        let mut caps = [0u8; 8];
        caps[..4].copy_from_slice(&self.earn_cap.to_be_bytes());
        caps[4..].copy_from_slice(&self.redeem_cap.to_be_bytes());
        zeroize::Zeroizing::new(encode_all(&[
            (tags::KEY_VERSION, &[self.key_version]),
            (tags::KEY_AUTH, self.key_auth.as_slice()),
            (tags::KEY_CERT, self.key_cert.as_slice()),
            (tags::KEY_ISSUER, self.key_issuer.as_slice()),
            (tags::ISSUER_ID, &self.issuer_id),
            (tags::CAPS, &caps),
            (tags::AUTH_TRIES, &[self.auth_limit]),
            (tags::PROFILE, &self.profile),
        ]))
    }

    /// Decodes the plaintext.
    ///
    /// # Errors
    /// Any [`ProtocolError`] on malformed data or an auth limit outside 1–15.
    pub fn parse(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let l = TlvList::parse(bytes)?;
        l.only(&[
            tags::KEY_VERSION,
            tags::KEY_AUTH,
            tags::KEY_CERT,
            tags::KEY_ISSUER,
            tags::ISSUER_ID,
            tags::CAPS,
            tags::AUTH_TRIES,
            tags::PROFILE,
        ])?;
        let caps = l.array::<8>(tags::CAPS)?;
        let [key_version] = l.array::<1>(tags::KEY_VERSION)?;
        let [auth_limit] = l.array::<1>(tags::AUTH_TRIES)?;
        if !(1..=15).contains(&auth_limit) {
            return Err(ProtocolError::InvalidValue(tags::AUTH_TRIES));
        }
        Ok(Self {
            key_version,
            key_auth: zeroize::Zeroizing::new(l.array(tags::KEY_AUTH)?),
            key_cert: zeroize::Zeroizing::new(l.array(tags::KEY_CERT)?),
            key_issuer: zeroize::Zeroizing::new(l.array(tags::KEY_ISSUER)?),
            issuer_id: l.array(tags::ISSUER_ID)?,
            earn_cap: u32::from_be_bytes([caps[0], caps[1], caps[2], caps[3]]),
            redeem_cap: u32::from_be_bytes([caps[4], caps[5], caps[6], caps[7]]),
            auth_limit,
            profile: l.require(tags::PROFILE)?.to_vec(),
        })
    }
}

/// Data of ACKNOWLEDGE SETTLEMENT (spec §4.10), before the C-MAC object:
/// the settled counter N and the issuer's MAC over it (v2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckCommand {
    /// The back office has settled every transaction up to this counter.
    pub counter: u32,
    /// Issuer MAC (spec §5.9) over N.
    pub issuer_mac: [u8; MAC_LEN],
}

impl AckCommand {
    /// Encodes the command data.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode_all(&[
            (tags::COUNTER, &self.counter.to_be_bytes()),
            (tags::ISSUER_MAC, &self.issuer_mac),
        ])
    }

    /// Decodes the command data.
    ///
    /// # Errors
    /// Any [`ProtocolError`] on malformed data.
    pub fn parse(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let l = TlvList::parse(bytes)?;
        l.only(&[tags::COUNTER, tags::ISSUER_MAC])?;
        Ok(Self {
            counter: l.u32(tags::COUNTER)?,
            issuer_mac: l.array(tags::ISSUER_MAC)?,
        })
    }
}

/// Data of UNBLOCK (spec §4.14): the issuer sequence and the issuer's MAC
/// over it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnblockCommand {
    /// Issuer sequence; must exceed the card's stored one.
    pub seq: u32,
    /// Issuer MAC (spec §5.9) over the sequence.
    pub issuer_mac: [u8; MAC_LEN],
}

impl UnblockCommand {
    /// Encodes the command data.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode_all(&[
            (tags::ISSUER_SEQ, &self.seq.to_be_bytes()),
            (tags::ISSUER_MAC, &self.issuer_mac),
        ])
    }

    /// Decodes the command data.
    ///
    /// # Errors
    /// Any [`ProtocolError`] on malformed data.
    pub fn parse(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let l = TlvList::parse(bytes)?;
        l.only(&[tags::ISSUER_SEQ, tags::ISSUER_MAC])?;
        Ok(Self {
            seq: l.u32(tags::ISSUER_SEQ)?,
            issuer_mac: l.array(tags::ISSUER_MAC)?,
        })
    }
}

/// Data of ISSUER ADJUST (spec §4.16, v2.1), before the C-MAC object: the
/// points, the terminal's identity, sequence and time (copied into the
/// record as for EARN), the issuer's adjustment sequence and the issuer MAC
/// over `[seq]32 ‖ [kind]8 ‖ [points]32`. The kind travels in P1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdjustCommand {
    /// Points to credit or debit; never zero.
    pub amount: u32,
    /// The terminal's identifier.
    pub terminal_id: u32,
    /// The terminal's sequence number for this transaction.
    pub terminal_seq: u32,
    /// Terminal time, seconds since the Unix epoch.
    pub time: u32,
    /// The issuer's adjustment sequence: exactly one more than the card's.
    pub seq: u32,
    /// Issuer MAC (spec §5.9).
    pub issuer_mac: [u8; MAC_LEN],
}

impl AdjustCommand {
    /// Encodes the command data (without the MAC object).
    pub fn to_bytes(&self) -> Vec<u8> {
        encode_all(&[
            (tags::AMOUNT, &self.amount.to_be_bytes()),
            (tags::TERMINAL_ID, &self.terminal_id.to_be_bytes()),
            (tags::TERMINAL_SEQ, &self.terminal_seq.to_be_bytes()),
            (tags::TIME, &self.time.to_be_bytes()),
            (tags::ADJUST_SEQ, &self.seq.to_be_bytes()),
            (tags::ISSUER_MAC, &self.issuer_mac),
        ])
    }

    /// Decodes the command data (without the MAC object).
    ///
    /// # Errors
    /// Any [`ProtocolError`] on malformed data.
    pub fn parse(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let l = TlvList::parse(bytes)?;
        l.only(&[
            tags::AMOUNT,
            tags::TERMINAL_ID,
            tags::TERMINAL_SEQ,
            tags::TIME,
            tags::ADJUST_SEQ,
            tags::ISSUER_MAC,
        ])?;
        Ok(Self {
            amount: l.u32(tags::AMOUNT)?,
            terminal_id: l.u32(tags::TERMINAL_ID)?,
            terminal_seq: l.u32(tags::TERMINAL_SEQ)?,
            time: l.u32(tags::TIME)?,
            seq: l.u32(tags::ADJUST_SEQ)?,
            issuer_mac: l.array(tags::ISSUER_MAC)?,
        })
    }
}

/// Data of UPDATE PROFILE (spec §4.13), before the C-MAC object: the
/// encrypted blob and the issuer's MAC over its digest (v2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateProfileCommand {
    /// The new signed profile blob, encrypted under S-ENC.
    pub ciphertext: Vec<u8>,
    /// Issuer MAC (spec §5.9) over SHA-256 of the plaintext blob.
    pub issuer_mac: [u8; MAC_LEN],
}

impl UpdateProfileCommand {
    /// Encodes the command data.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode_all(&[
            (tags::ENCRYPTED, &self.ciphertext),
            (tags::ISSUER_MAC, &self.issuer_mac),
        ])
    }

    /// Decodes the command data.
    ///
    /// # Errors
    /// Any [`ProtocolError`] on malformed data.
    pub fn parse(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let l = TlvList::parse(bytes)?;
        l.only(&[tags::ENCRYPTED, tags::ISSUER_MAC])?;
        Ok(Self {
            ciphertext: l.require(tags::ENCRYPTED)?.to_vec(),
            issuer_mac: l.array(tags::ISSUER_MAC)?,
        })
    }
}

/// Data of KEY UPDATE (spec §4.15), before the C-MAC object: the new key
/// version, the new card keys encrypted under a key derived from the
/// card's issuer key, and the issuer's MAC over both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUpdateCommand {
    /// The key version the card moves to; must exceed its current one.
    pub key_version: u8,
    /// `D4 K_auth ‖ D5 K_cert ‖ DF05 K_iss` of the new version, encrypted
    /// (spec §4.15).
    pub ciphertext: Vec<u8>,
    /// Issuer MAC (spec §5.9) over `[key version]8 ‖ ciphertext`.
    pub issuer_mac: [u8; MAC_LEN],
}

impl KeyUpdateCommand {
    /// Encodes the command data.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode_all(&[
            (tags::KEY_VERSION, &[self.key_version]),
            (tags::ENCRYPTED, &self.ciphertext),
            (tags::ISSUER_MAC, &self.issuer_mac),
        ])
    }

    /// Decodes the command data.
    ///
    /// # Errors
    /// Any [`ProtocolError`] on malformed data.
    pub fn parse(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let l = TlvList::parse(bytes)?;
        l.only(&[tags::KEY_VERSION, tags::ENCRYPTED, tags::ISSUER_MAC])?;
        let [key_version] = l.array::<1>(tags::KEY_VERSION)?;
        Ok(Self {
            key_version,
            ciphertext: l.require(tags::ENCRYPTED)?.to_vec(),
            issuer_mac: l.array(tags::ISSUER_MAC)?,
        })
    }
}

/// The plaintext of KEY UPDATE: the card's three keys of the new version.
#[derive(Clone, PartialEq, Eq)]
pub struct NewCardKeys {
    /// Authentication key.
    pub key_auth: zeroize::Zeroizing<[u8; 16]>,
    /// Certificate key.
    pub key_cert: zeroize::Zeroizing<[u8; 16]>,
    /// Issuer key.
    pub key_issuer: zeroize::Zeroizing<[u8; 16]>,
}

impl core::fmt::Debug for NewCardKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("NewCardKeys").finish_non_exhaustive()
    }
}

impl NewCardKeys {
    /// Encodes `D4 ‖ D5 ‖ DF05` (55 bytes).
    pub fn to_bytes(&self) -> zeroize::Zeroizing<Vec<u8>> {
        zeroize::Zeroizing::new(encode_all(&[
            (tags::KEY_AUTH, self.key_auth.as_slice()),
            (tags::KEY_CERT, self.key_cert.as_slice()),
            (tags::KEY_ISSUER, self.key_issuer.as_slice()),
        ]))
    }

    /// Decodes exactly `D4`, `D5` and `DF05`, 16 bytes each.
    ///
    /// # Errors
    /// Any [`ProtocolError`] on malformed data.
    pub fn parse(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let l = TlvList::parse(bytes)?;
        l.only(&[tags::KEY_AUTH, tags::KEY_CERT, tags::KEY_ISSUER])?;
        Ok(Self {
            key_auth: zeroize::Zeroizing::new(l.array(tags::KEY_AUTH)?),
            key_cert: zeroize::Zeroizing::new(l.array(tags::KEY_CERT)?),
            key_issuer: zeroize::Zeroizing::new(l.array(tags::KEY_ISSUER)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record() -> LogRecord {
        LogRecord {
            counter: 7,
            kind: TxKind::Redeem,
            amount: 50,
            balance_after: 70,
            terminal_id: 0x0102_0304,
            terminal_seq: 9,
            time: 1_800_000_000,
            reference: 0,
            online: false,
            certificate: [0xAB; 16],
        }
    }

    #[test]
    fn record_round_trip() {
        let r = record();
        assert_eq!(LogRecord::parse(&r.to_bytes()).unwrap(), r);
        assert_eq!(r.to_bytes().len(), LogRecord::LEN);
        assert_eq!(r.certified_bytes(&[1; 8]).len(), 40);
    }

    #[test]
    fn auth_response_round_trip() {
        let a = AuthResponse {
            card_cryptogram: [1; 8],
            balance: 70,
            counter: 2,
            lifecycle: Lifecycle::Active,
            last_record: Some(record()),
            visits: Visits {
                count: 3,
                last_day: 20_000,
                last_store: 7,
            },
            velocity: Velocity {
                unsettled_redeems: 1,
                unsettled_points: 50,
                settled_counter: 0,
            },
            versions: [2, 1],
            issuer_id: Some(TEST_ISSUER_ID),
            profile_digest: Some([9; 32]),
        };
        assert_eq!(AuthResponse::parse(&a.to_bytes()).unwrap(), a);
    }

    proptest! {
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = SelectResponse::parse(&bytes);
            let _ = AuthCommand::parse(&bytes);
            let _ = AuthResponse::parse(&bytes);
            let _ = TxCommand::parse(&bytes);
            let _ = LogRecord::parse(&bytes);
            let _ = PersonalizeData::parse(&bytes);
            let _ = AckCommand::parse(&bytes);
            let _ = UnblockCommand::parse(&bytes);
            let _ = AdjustCommand::parse(&bytes);
            let _ = UpdateProfileCommand::parse(&bytes);
            let _ = KeyUpdateCommand::parse(&bytes);
            let _ = NewCardKeys::parse(&bytes);
        }

        #[test]
        fn key_update_round_trips(kv: u8, mac: [u8; 8], ct in proptest::collection::vec(any::<u8>(), 1..100), a: [u8; 16], c: [u8; 16], i: [u8; 16]) {
            let k = KeyUpdateCommand { key_version: kv, ciphertext: ct, issuer_mac: mac };
            prop_assert_eq!(KeyUpdateCommand::parse(&k.to_bytes()).unwrap(), k);
            let n = NewCardKeys { key_auth: zeroize::Zeroizing::new(a), key_cert: zeroize::Zeroizing::new(c), key_issuer: zeroize::Zeroizing::new(i) };
            prop_assert!(NewCardKeys::parse(&n.to_bytes()).unwrap() == n);
        }

        #[test]
        fn issuer_command_round_trips(counter: u32, seq: u32, mac: [u8; 8], ct in proptest::collection::vec(any::<u8>(), 1..300)) {
            let a = AckCommand { counter, issuer_mac: mac };
            prop_assert_eq!(AckCommand::parse(&a.to_bytes()).unwrap(), a);
            let u = UnblockCommand { seq, issuer_mac: mac };
            prop_assert_eq!(UnblockCommand::parse(&u.to_bytes()).unwrap(), u);
            let j = AdjustCommand { amount: counter, terminal_id: seq, terminal_seq: counter ^ seq, time: seq, seq: counter, issuer_mac: mac };
            prop_assert_eq!(AdjustCommand::parse(&j.to_bytes()).unwrap(), j);
            let p = UpdateProfileCommand { ciphertext: ct, issuer_mac: mac };
            prop_assert_eq!(UpdateProfileCommand::parse(&p.to_bytes()).unwrap(), p);
        }

        #[test]
        fn select_round_trip(card_id: [u8; 8], kv: u8, issuer in proptest::option::of(any::<[u8; 4]>()), digest in proptest::option::of(any::<[u8; 32]>()), ch: [u8; 8]) {
            let s = SelectResponse { card_id, applet_version: 2, key_version: kv, issuer_id: issuer, lifecycle: Lifecycle::Active, profile_digest: digest, card_challenge: ch };
            prop_assert_eq!(SelectResponse::parse(&s.to_bytes()).unwrap(), s);
        }

        #[test]
        fn tx_command_round_trip(amount: u32, terminal_id: u32, terminal_seq: u32, time: u32, store_id: u32, reference: u32) {
            let c = TxCommand { amount, terminal_id, terminal_seq, time, store_id, reference, authorization: None };
            prop_assert_eq!(TxCommand::parse(&c.to_bytes()).unwrap(), c);
        }
    }
}
