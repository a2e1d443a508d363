//! Journal records as they travel in a batch: what a till decided and
//! what the card answered ([`Entry`]), and how a record is hash-chained
//! ([`record_hash`]).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use tessera_protocol::messages::{CardId, LogRecord, TxKind};

/// What a record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// A decision at the till.
    Decision,
    /// The card's answer to an approved decision.
    Completion,
    /// A card record learned at a tap.
    Recovered,
    /// An approved decision the card never committed.
    Void,
}

/// The outcome of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Approved: the transaction goes to the card.
    Approve,
    /// Declined, with a reason code.
    Decline,
    /// Referred to the back office, with a reason code.
    Refer,
}

/// The content of a record, as the caller gives it. Absent fields are
/// `None`; the journal fills in the sequence number and the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Kind of record.
    pub kind: EntryKind,
    /// Terminal time, seconds since the Unix epoch.
    pub time: u32,
    /// The card, as 16 hex digits.
    pub card_id: Option<String>,
    /// Card counter: of the transaction (completion, recovered, void) or
    /// the counter the card will give it (approved decision).
    pub card_counter: Option<u32>,
    /// Transaction type ("earn", "redeem", "refund-earn", "refund-redeem",
    /// "issuer-credit", "issuer-debit", or "read" for a decision taken at a
    /// plain tap).
    pub tx_type: Option<String>,
    /// Points.
    pub points: Option<u32>,
    /// Purchase amount in minor currency units (earns).
    pub purchase_minor: Option<u64>,
    /// Purchased categories.
    pub categories: Vec<String>,
    /// Decision verdict (decisions only).
    pub verdict: Option<Verdict>,
    /// Reason code of a decline or referral.
    pub reason: Option<String>,
    /// Certificate, 32 hex digits (completion, recovered).
    pub certificate: Option<String>,
    /// Balance after the transaction.
    pub balance_after: Option<u32>,
    /// Refunds: the counter of the reversed transaction. Issuer
    /// adjustments: the adjustment sequence.
    pub reference: Option<u32>,
    /// Completion, void: the decision's sequence number. Recovered: the
    /// terminal sequence number the card recorded.
    pub origin_seq: Option<u32>,
    /// Recovered: the terminal that made the transaction.
    pub origin_terminal: Option<u32>,
    /// Recovered and completion: the time the card recorded.
    pub card_time: Option<u32>,
    /// Purchase decisions: SHA-256 of the signed policy the points were
    /// computed under, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Purchase decisions: SHA-256 of the signed campaign file in force,
    /// hex (absent: no campaigns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaigns: Option<String>,
    /// Purchase decisions: what the card said that the points depend on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quote_inputs: Option<QuoteInputs>,
    /// Purchase decisions: the points each rule added, by campaign id
    /// (`policy.category`, `policy.tier` for the policy's own multipliers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quote_lines: Vec<(String, i64)>,
    /// Approved decisions only: the office's referral approval code the
    /// clerk typed (`XXXX-XXXX-XXXX-XXXX`, canonical form), when the
    /// decision went ahead on it. Absent otherwise, so records without
    /// one hash as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
    /// Purchase decisions, when the till gives them: the basket's lines,
    /// each a category and its amount in minor units. Their amounts add
    /// up to `purchase_minor` and their categories, in order of first
    /// appearance, are `categories`. Absent (empty) otherwise, so records
    /// without lines hash as before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub basket: Vec<BasketLine>,
    /// Completion and recovered (card application v2.2): the card made the
    /// transaction on the office's online authorization — bit 7 of the
    /// record's kind byte, covered by the certificate. Absent (false)
    /// otherwise, so records without it hash as before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub online: bool,
    /// Approved decisions only (v2.2): the cryptogram of the card's
    /// authorization request (16 hex digits) when the office authorized
    /// the decision online. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<String>,
}

/// One line of a purchase's basket: what kind of goods and for how much.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BasketLine {
    /// The category, as the policy lists it.
    pub category: String,
    /// The line's amount, in minor currency units.
    pub amount_minor: u64,
}

/// The card's side of a purchase's points (applet-spec §7: from the
/// issuer-signed profile and the card's visit counters, read in the
/// authenticated session), journaled with the decision so the ledger can
/// recompute the points.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuoteInputs {
    /// Loyalty tier.
    pub tier: u8,
    /// Preferred categories.
    pub preferences: Vec<String>,
    /// Birth date, YYYY-MM-DD.
    pub birth_date: String,
    /// Purchases ever, before this one.
    pub visits: u32,
    /// Day of the last purchase (days since 1970-01-01; 0 = never).
    pub last_visit_day: u32,
}

impl Entry {
    /// An empty entry of a kind at a time.
    pub fn new(kind: EntryKind, time: u32) -> Self {
        Self {
            kind,
            time,
            card_id: None,
            card_counter: None,
            tx_type: None,
            points: None,
            purchase_minor: None,
            categories: Vec::new(),
            verdict: None,
            reason: None,
            certificate: None,
            balance_after: None,
            reference: None,
            origin_seq: None,
            origin_terminal: None,
            card_time: None,
            policy: None,
            campaigns: None,
            quote_inputs: None,
            quote_lines: Vec::new(),
            approval: None,
            basket: Vec::new(),
            online: false,
            authorization: None,
        }
    }

    /// An entry carrying a card's log record (completion or recovered).
    pub fn from_card_record(kind: EntryKind, time: u32, card_id: &CardId, r: &LogRecord) -> Self {
        let mut e = Self::new(kind, time);
        e.card_id = Some(hex::encode_upper(card_id));
        e.card_counter = Some(r.counter);
        e.tx_type = Some(r.kind.name().to_owned());
        e.points = Some(r.amount);
        e.certificate = Some(hex::encode_upper(r.certificate));
        e.balance_after = Some(r.balance_after);
        e.reference = (r.reference != 0).then_some(r.reference);
        e.origin_seq = Some(r.terminal_seq);
        e.origin_terminal = Some(r.terminal_id);
        e.card_time = Some(r.time);
        e.online = r.online;
        e
    }

    /// The signed balance change this record stands for, if it is a card
    /// transaction (completion or recovered).
    pub fn delta(&self) -> Option<i64> {
        if !matches!(self.kind, EntryKind::Completion | EntryKind::Recovered) {
            return None;
        }
        let kind = tx_kind(self.tx_type.as_deref()?)?;
        Some(kind.delta(self.points?))
    }

    /// The card's log record this entry carries, when it carries one.
    pub fn card_record(&self) -> Option<LogRecord> {
        let mut certificate = [0u8; 16];
        hex::decode_to_slice(self.certificate.as_deref()?, &mut certificate).ok()?;
        Some(LogRecord {
            counter: self.card_counter?,
            kind: tx_kind(self.tx_type.as_deref()?)?,
            amount: self.points?,
            balance_after: self.balance_after?,
            terminal_id: self.origin_terminal?,
            terminal_seq: self.origin_seq?,
            time: self.card_time?,
            reference: self.reference.unwrap_or(0),
            online: self.online,
            certificate,
        })
    }
}

/// Parses a transaction type name.
pub fn tx_kind(name: &str) -> Option<TxKind> {
    TxKind::ALL.into_iter().find(|k| k.name() == name)
}

#[derive(Serialize)]
struct Hashed<'a> {
    seq: u32,
    terminal_id: u32,
    entry: &'a Entry,
}

/// The hash of a journal record and the exact body text it hashes:
/// SHA-256 of the previous record's hash followed by the body
/// `{"seq","terminal_id","entry"}` (fields in this order, serde_json's
/// compact encoding), as `docs/settlement.md` specifies.
pub fn record_hash(prev: &[u8; 32], seq: u32, terminal_id: u32, entry: &Entry) -> ([u8; 32], String) {
    // serde_json writes struct fields in declaration order: one encoding.
    let body = serde_json::to_string(&Hashed {
        seq,
        terminal_id,
        entry,
    })
    .unwrap_or_default();
    let mut h = Sha256::new();
    h.update(prev);
    h.update(body.as_bytes());
    (h.finalize().into(), body)
}

/// A record as a batch carries it: sequence, the exact hashed body,
/// previous hash, hash.
pub type RawRecord = (u32, String, [u8; 32], [u8; 32]);
