//! The ledger's public data: exceptions, ingestion reports, card books,
//! customers and the reports the CLI prints.

use std::collections::BTreeMap;

use serde::{Serialize, Serializer};
use tessera_protocol::profile::Date;
use tessera_settlement::batch::{Ack, Total};

/// A card id as 16 upper-case hex digits, as in journals and hotlist files.
pub(crate) fn card_hex(id: &[u8; 8]) -> String {
    hex::encode_upper(id)
}

fn ser_card_opt<S: Serializer>(v: &Option<[u8; 8]>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(id) => s.serialize_some(&card_hex(id)),
        None => s.serialize_none(),
    }
}

fn ser_card<S: Serializer>(v: &[u8; 8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&card_hex(v))
}

/// Class of an exception (`docs/settlement.md`, "The ledger").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExceptionClass {
    /// The same terminal sent the same card record twice under two
    /// sequence numbers (identical copies from *different* terminals are
    /// normal recovered evidence and raise nothing).
    DuplicateRecord,
    /// A card's counters have a hole that stayed open longer than the aging
    /// period ([`crate::Ledger::age_gaps`]).
    Gap,
    /// Two different certified records with the same card and counter: a
    /// cloned card. The card is hotlisted.
    Conflict,
    /// A certificate does not verify (or the record is incomplete): the
    /// record was rejected.
    BadCertificate,
    /// A certified balance does not follow from the previous one and the
    /// delta. The record is posted, the card flagged and hotlisted.
    BalanceDiscontinuity,
    /// A batch from a terminal that is not registered.
    UnknownTerminal,
    /// A batch from a revoked terminal.
    RevokedTerminal,
    /// A batch whose records do not chain (inside, or from the terminal's
    /// last posted batch).
    BrokenChain,
    /// A batch number received twice with different chain heads.
    BatchConflict,
    /// A refund whose original is not in the books, is of another kind
    /// (a refund of an earn naming a redemption, a refund of a refund), or
    /// asks for more points than the original had. The record is posted —
    /// the card moved the points — and the exception names it.
    RefundMismatch,
    /// A refund of an original that its earlier refunds had already
    /// reversed in full: refunded twice, chain-wide.
    DuplicateRefund,
    /// A card record whose counter lies far beyond the card's last posted
    /// one ([`crate::COUNTER_JUMP_LIMIT`]): far more transactions than
    /// offline limits let a genuine card make unseen — a clone, or a card
    /// used without settlement. Raised at once; the card is hotlisted.
    CounterJump,
    /// A batch whose header totals (card transactions and points per type)
    /// are not what its records add up to. The records are posted.
    TotalsMismatch,
    /// A till journaled a decision void (the card did not do it) and the
    /// card certified that very transaction (same till, sequence, card and
    /// counter): a forged refusal believed, or a till that voids blindly.
    /// The certified record is posted.
    VoidContradicted,
    /// A certified card record that no approved decision explains: its
    /// origin till (the terminal and sequence the card recorded) is not
    /// registered or is revoked, or that till's verified chain holds no
    /// approve decision for this card, counter, type and amount at that
    /// sequence (a copied till, a decision voided), or the origin till has
    /// not settled it within the aging period. The record is posted — the
    /// card moved the points — and its points are not explained.
    Orphan,
    /// A till journaled as its own completion a card record the card says
    /// was made at another till or under another sequence: records copied
    /// into a batch and re-sealed. The record counts for its origin till,
    /// not for the delivering one.
    Misattributed,
    /// A batch has been held longer than the aging period for a
    /// predecessor the ledger does not have (lost in transit or in a
    /// storage rollback, and not re-sent although every acknowledgement of
    /// the held batch asks for it, `Ack::missing_from`).
    MissingBatch,
    /// An approved purchase whose points are not what the signed policy
    /// and campaigns its decision names give for its amount, categories and
    /// the card's profile and visits, or whose decision names a policy or
    /// campaign file the office never signed (a till with an edited
    /// policy). The card's record is posted; its points are not explained.
    PointsMismatch,
    /// An issuer adjustment record (applet-spec §4.16) that no adjustment
    /// the office issued explains: no adjustment of that card and
    /// sequence, another kind or other points, or one already applied by
    /// another record (applied twice). The record is posted.
    AdjustmentMismatch,
    /// A record of a card the office replaced, posted after the
    /// replacement moved its balance to the new card (used offline before
    /// the hotlist reached the till, or settled late): its points stay on
    /// the old card's books; the office decides (a correction on the new
    /// card).
    ReplacedCardUsed,
    /// An approved decision names an office referral approval code the
    /// office never issued (a till that made up a code, or minted one
    /// with its own batch key). The card's record is posted; the
    /// approval is not explained.
    ApprovalUnknown,
    /// An approved decision went ahead on an issued approval code for
    /// another card, kind, amount or till, or after the code's expiry.
    ApprovalMismatch,
    /// An approval code used by a second decision (single use): a copied
    /// till directory, a journal restored from a backup, or a till that
    /// ignores the rule. Raised also from a refused conflicting batch whose
    /// verified records use a code again.
    ApprovalReused,
    /// A card record marked as authorized online (card application v2.2)
    /// that matches no online approval in the books. The record is posted
    /// — the card moved the points — and its approval is not explained.
    OnlineUnmatched,
}

impl ExceptionClass {
    /// Every class, in declaration order.
    pub const ALL: [Self; 24] = [
        Self::DuplicateRecord,
        Self::Gap,
        Self::Conflict,
        Self::BadCertificate,
        Self::BalanceDiscontinuity,
        Self::UnknownTerminal,
        Self::RevokedTerminal,
        Self::BrokenChain,
        Self::BatchConflict,
        Self::RefundMismatch,
        Self::DuplicateRefund,
        Self::CounterJump,
        Self::TotalsMismatch,
        Self::VoidContradicted,
        Self::Orphan,
        Self::Misattributed,
        Self::MissingBatch,
        Self::PointsMismatch,
        Self::AdjustmentMismatch,
        Self::ReplacedCardUsed,
        Self::ApprovalUnknown,
        Self::ApprovalMismatch,
        Self::ApprovalReused,
        Self::OnlineUnmatched,
    ];

    /// The stable name: `"duplicate-record"`, `"gap"`, …
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DuplicateRecord => "duplicate-record",
            Self::Gap => "gap",
            Self::Conflict => "conflict",
            Self::BadCertificate => "bad-certificate",
            Self::BalanceDiscontinuity => "balance-discontinuity",
            Self::UnknownTerminal => "unknown-terminal",
            Self::RevokedTerminal => "revoked-terminal",
            Self::BrokenChain => "broken-chain",
            Self::BatchConflict => "batch-conflict",
            Self::RefundMismatch => "refund-mismatch",
            Self::DuplicateRefund => "duplicate-refund",
            Self::CounterJump => "counter-jump",
            Self::TotalsMismatch => "totals-mismatch",
            Self::VoidContradicted => "void-contradicted",
            Self::Orphan => "orphan",
            Self::Misattributed => "misattributed",
            Self::MissingBatch => "missing-batch",
            Self::PointsMismatch => "points-mismatch",
            Self::AdjustmentMismatch => "adjustment-mismatch",
            Self::ReplacedCardUsed => "replaced-card-used",
            Self::ApprovalUnknown => "approval-unknown",
            Self::ApprovalMismatch => "approval-mismatch",
            Self::ApprovalReused => "approval-reused",
            Self::OnlineUnmatched => "online-unmatched",
        }
    }

    /// Parses [`ExceptionClass::as_str`]'s names.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl std::fmt::Display for ExceptionClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something settlement could not explain, with its evidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Exception {
    /// Id, increasing.
    pub id: u64,
    /// Class.
    pub class: ExceptionClass,
    /// The card concerned (hex in JSON).
    #[serde(serialize_with = "ser_card_opt")]
    pub card_id: Option<[u8; 8]>,
    /// The card counter concerned.
    pub counter: Option<u32>,
    /// The terminal that sent the evidence.
    pub terminal_id: Option<u32>,
    /// The batch that carried it.
    pub batch_no: Option<u32>,
    /// The evidence (records, heads, balances), as JSON.
    pub evidence: serde_json::Value,
    /// When it was raised (ledger time).
    pub at: u32,
}

/// What [`crate::Ledger::ingest`] did with a batch.
#[derive(Debug, Clone, Serialize)]
pub struct IngestOutcome {
    /// The MAC'd acknowledgement for the terminal.
    pub ack: Ack,
    /// What happened to the records.
    pub report: IngestReport,
}

/// Counts of one ingestion. For a posted batch `posted + duplicates +
/// rejected + held == card_transactions`. A held or duplicate batch posts
/// nothing: only `records` and `card_transactions` are filled in.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IngestReport {
    /// The terminal.
    pub terminal_id: u32,
    /// The batch.
    pub batch_no: u32,
    /// Journal records in the batch.
    pub records: u32,
    /// Of which card transactions (completion and recovered).
    pub card_transactions: u32,
    /// Card transactions of this batch posted to their card.
    pub posted: u32,
    /// Card transactions already known with the same content.
    pub duplicates: u32,
    /// Card transactions rejected (bad certificate, conflict).
    pub rejected: u32,
    /// Card transactions of this batch held pending an earlier counter.
    pub held: u32,
    /// Card transactions of earlier batches that this one unblocked.
    pub released: u32,
    /// Held batches of this terminal posted after this one.
    pub released_batches: Vec<u32>,
    /// Exceptions raised (the first 1,000; see `exceptions_total`).
    pub exceptions: Vec<Exception>,
    /// Number of exceptions raised.
    pub exceptions_total: u32,
}

/// The books of one card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CardBook {
    /// The card (hex in JSON).
    #[serde(serialize_with = "ser_card")]
    pub card_id: [u8; 8],
    /// Its customer, when registered and not erased.
    pub customer_id: Option<u64>,
    /// Key version its certificates are checked with.
    pub key_version: u8,
    /// Whether the card was registered ([`crate::Ledger::register_card`]).
    pub registered: bool,
    /// Sum of the certified deltas posted: the ledger's balance.
    pub shadow_balance: i64,
    /// The balance the card certified last.
    pub card_balance: i64,
    /// `card_balance - shadow_balance`: points the card holds that no
    /// certified transaction explains.
    pub discrepancy: i64,
    /// A balance discontinuity was found on this card.
    pub flagged: bool,
    /// Highest counter with every counter `1..=n` posted.
    pub last_counter: u32,
    /// Whether the card is on the hotlist.
    pub hotlisted: bool,
    /// Card transactions held beyond a gap.
    pub pending: u32,
}

/// What an issuer adjustment is for (office ledger, applet-spec §4.16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AdjustmentKind {
    /// A goodwill credit.
    Goodwill,
    /// A correction (credit or debit).
    Correction,
    /// The balance of a replaced card, moved to its successor.
    Replacement,
}

impl AdjustmentKind {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Goodwill => "goodwill",
            Self::Correction => "correction",
            Self::Replacement => "replacement",
        }
    }

    /// Parses [`AdjustmentKind::as_str`]'s names.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Goodwill, Self::Correction, Self::Replacement]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// An adjustment to issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAdjustment {
    /// The card.
    pub card_id: [u8; 8],
    /// Signed points: positive credits, negative debits; never zero.
    pub points: i64,
    /// Goodwill or correction (replacements come from
    /// [`crate::books::OfficeBooks::replace_card`]).
    pub kind: AdjustmentKind,
    /// Why, for the books (not empty).
    pub reason: String,
    /// Who issued it (not empty).
    pub operator: String,
}

/// An adjustment the office issued, with its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdjustmentRow {
    /// The card (hex in JSON).
    #[serde(serialize_with = "ser_card")]
    pub card_id: [u8; 8],
    /// Adjustment sequence (1, 2, … per card).
    pub seq: u32,
    /// What it is for.
    pub kind: AdjustmentKind,
    /// The record kind the card certifies: `issuer-credit` or `issuer-debit`.
    pub direction: String,
    /// Points (positive).
    pub points: u32,
    /// Why.
    pub reason: String,
    /// Who issued it.
    pub operator: String,
    /// When (Unix seconds).
    pub issued_at: u32,
    /// Replacements: the old card (hex in JSON).
    #[serde(serialize_with = "ser_card_opt")]
    pub from_card: Option<[u8; 8]>,
    /// `pending` (issued, its record not posted yet) or `applied`.
    pub state: String,
    /// The card counter of the record that applied it.
    pub applied_counter: Option<u32>,
}

impl AdjustmentRow {
    /// Signed points (negative for a debit).
    pub fn signed_points(&self) -> i64 {
        if self.direction == "issuer-debit" {
            -i64::from(self.points)
        } else {
            i64::from(self.points)
        }
    }
}

/// The outcome of [`crate::books::OfficeBooks::replace_card`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Replacement {
    /// The lost card (hex in JSON), now hotlisted.
    #[serde(serialize_with = "ser_card")]
    pub old_card: [u8; 8],
    /// Its successor (hex in JSON).
    #[serde(serialize_with = "ser_card")]
    pub new_card: [u8; 8],
    /// The points moved: the old card's book balance at the replacement.
    pub points: u32,
    /// The credit that carries them to the new card (none for 0 points).
    pub adjustment: Option<AdjustmentRow>,
}

/// A card's book entry no card certified: a balance moved by a replacement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CardPosting {
    /// Signed points.
    pub delta: i64,
    /// What it says, e.g. "moved 120 points to card …".
    pub what: String,
    /// When it was posted.
    pub posted_at: u32,
}

/// A customer to register: personal data, kept apart from the books.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCustomer {
    /// Name (UTF-8).
    pub name: String,
    /// Date of birth.
    pub birth_date: Date,
    /// Home city (UTF-8).
    pub home_city: String,
    /// Household id.
    pub household: [u8; 8],
    /// Preferences.
    pub preferences: Vec<String>,
    /// Loyalty tier.
    pub tier: u8,
}

/// A registered customer, as exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Customer {
    /// Customer id.
    pub customer_id: u64,
    /// Name.
    pub name: String,
    /// Date of birth, `YYYY-MM-DD`.
    pub birth_date: String,
    /// Home city.
    pub home_city: String,
    /// Household id, hex.
    pub household: String,
    /// Preferences.
    pub preferences: Vec<String>,
    /// Loyalty tier.
    pub tier: u8,
    /// The customer's cards, hex.
    pub cards: Vec<String>,
}

/// Reconciliation of one terminal on one settlement day (the UTC day the
/// ledger received its batches).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReconciliationRow {
    /// Local day the batches were received, `YYYY-MM-DD` (in the time zone
    /// the report was asked for).
    pub date: String,
    /// The terminal.
    pub terminal_id: u32,
    /// The store the terminal is registered to (`office terminal assign`).
    pub store_id: Option<u32>,
    /// That store's name.
    pub store: Option<String>,
    /// Batches received (posted or held).
    pub batches: u32,
    /// Of which still held.
    pub held_batches: u32,
    /// Journal records received.
    pub records: u64,
    /// Of which card transactions.
    pub card_transactions: u64,
    /// Card transactions stored from these batches and posted by now.
    pub posted: u64,
    /// Copies of card transactions the ledger already held, counted once:
    /// normally the same transaction delivered by another till that
    /// recovered it from the card's log (a card pulled mid-transaction).
    /// A till repeating its own record is also a `duplicate-record`
    /// exception.
    pub copies: u64,
    /// Card transactions rejected.
    pub rejected: u64,
    /// Card transactions stored from these batches and still held beyond
    /// a gap.
    pub held: u64,
    /// Exceptions naming this terminal raised that day.
    pub exceptions: u64,
    /// Totals per transaction type as the terminal declared them (headers).
    pub declared: BTreeMap<String, Total>,
    /// Totals per transaction type of the card transactions stored.
    pub stored: BTreeMap<String, Total>,
    /// Declines and referrals per reason code.
    pub declines: BTreeMap<String, u64>,
}

/// The reconciliation report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReconciliationReport {
    /// One row per terminal and day, by day then terminal.
    pub rows: Vec<ReconciliationRow>,
    /// Exceptions by class over the rows' scope.
    pub exceptions_by_class: BTreeMap<String, u64>,
}

/// Points outstanding and their value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LiabilityReport {
    /// Cards with books.
    pub cards: u64,
    /// Sum of the cards' shadow balances: points the books owe.
    pub points_outstanding: i64,
    /// The rate used.
    pub minor_units_per_point: u64,
    /// `points_outstanding × minor_units_per_point`.
    pub value_minor: i64,
    /// Sum of the balances the cards last certified.
    pub card_balances: i64,
    /// Points on cards that no certified transaction explains.
    pub unexplained_points: i64,
    /// Hotlisted cards.
    pub hotlisted_cards: u64,
    /// Points outstanding on hotlisted cards.
    pub hotlisted_points: i64,
    /// Card transactions held beyond a gap.
    pub pending_records: u64,
    /// Their net points (not in `points_outstanding`).
    pub pending_points: i64,
}

/// The ledger's proof that every point is explained, or the list of what
/// is not (`docs/settlement.md`, "Every point is explained").
///
/// Every point is explained when, at once:
/// 1. the liability (the sum of the shadow balances) equals the sum of the
///    posted records' signed points, and so does every card's own shadow
///    balance (`cards_off_books == 0`);
/// 2. every posted record is matched to the approve decision of its origin
///    till (no `awaiting`, no `orphan` records);
/// 3. nothing is held beyond a gap and no certified balance jumps
///    (`pending_records == 0`, `unexplained_points == 0`);
/// 4. no exception is on record (each names something the books cannot
///    explain: a forged or unmatched record, a mismatched or doubled
///    refund, a claim of a till that its records contradict, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// Cards with books.
    pub cards: u64,
    /// Sum of the shadow balances.
    pub points_outstanding: i64,
    /// Sum of the signed points of every posted record.
    pub posted_points: i64,
    /// Cards whose shadow balance is not the sum of their posted records.
    pub cards_off_books: u64,
    /// Posted or held records matched to their decision, and their points.
    pub matched_records: u64,
    /// Points of the matched records (unsigned).
    pub matched_points: i64,
    /// Records whose origin till has not settled their decision yet.
    pub awaiting_records: u64,
    /// Their points (unsigned).
    pub awaiting_points: i64,
    /// Records no approved decision explains.
    pub orphan_records: u64,
    /// Their points (unsigned).
    pub orphan_points: i64,
    /// Records held beyond a gap.
    pub pending_records: u64,
    /// Points of certified balance jumps.
    pub unexplained_points: i64,
    /// Exceptions on record, by class.
    pub exceptions: std::collections::BTreeMap<String, u64>,
    /// What is not explained, one line each (empty when `explained`).
    pub problems: Vec<String>,
    /// Whether every point is explained (the four conditions above).
    pub explained: bool,
}

/// One customer (or an anonymous card) in the customers report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CustomerRow {
    /// The customer; `None` for a card without (or erased) customer.
    pub customer_id: Option<u64>,
    /// Name, when known.
    pub name: Option<String>,
    /// The cards, hex.
    pub cards: Vec<String>,
    /// Posted card transactions.
    pub transactions: u64,
    /// Distinct days with a transaction.
    pub visits: u64,
    /// First visit, `YYYY-MM-DD`.
    pub first_visit: String,
    /// Last visit, `YYYY-MM-DD`.
    pub last_visit: String,
    /// Days since the last visit.
    pub recency_days: u32,
    /// Visits (distinct days with a transaction) in the 30 days up to the
    /// report's time, counted: a customer seen once yesterday has 1.0, not
    /// an extrapolation to 30.
    pub visits_per_30_days: f64,
    /// Points earned (earns less refunded earns).
    pub points_earned: i64,
    /// Points redeemed (redemptions less refunded ones).
    pub points_redeemed: i64,
    /// Money spent, in minor units: the purchase amounts of the approve
    /// decisions behind the posted earns (whichever till's copy of the
    /// card's record posted first), less the amounts of their refunds (in
    /// the share of the points refunded); 0 at the least.
    pub spend_minor: u64,
    /// The category of the most money spent (basket lines, or the
    /// purchase shared among its categories); ties go to the first name.
    pub favourite_category: Option<String>,
    /// The store where most transactions were made (`office store`), by
    /// name: the store the deciding till was assigned to when its decision
    /// posted; `terminal N` for a till assigned to no store.
    pub favourite_store: Option<String>,
    /// That store's id (none for a till assigned to no store).
    pub favourite_store_id: Option<u32>,
    /// Recency, frequency and money scores, 1–5 each, as `"R5F3M4"`:
    /// quintiles within the report's population (`docs/analytics.md`), M
    /// on [`CustomerRow::spend_minor`] (money, not points).
    pub rfm: String,
    /// The segment's key (`champions`, `loyal`, `cannot_lose_them`,
    /// `at_risk`, `potential_loyalists`, `new`, `promising`,
    /// `need_attention`, `hibernating`, `lost`): see
    /// [`CustomersReport::legend`].
    pub segment: String,
}

/// The customers report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CustomersReport {
    /// The report's time.
    pub as_of: String,
    /// One row per customer (and per anonymous card).
    pub rows: Vec<CustomerRow>,
    /// Customers per segment.
    pub segments: BTreeMap<String, u64>,
    /// Every segment's rule and meaning, in rule order.
    pub legend: Vec<SegmentLegendRow>,
}

/// One segment of the RFM legend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SegmentLegendRow {
    /// The segment's key, as in [`CustomerRow::segment`].
    pub segment: String,
    /// Its display name.
    pub name: String,
    /// The rule on the scores R, F, M (tried in legend order).
    pub rule: String,
    /// What its customers have in common.
    pub meaning: String,
    /// The suggested action.
    pub action: String,
}

/// Whether a ledger is sound ([`crate::Warehouse::soundness`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Soundness {
    /// Whether the storage itself was scanned (SQLite's integrity check);
    /// `false` on PostgreSQL, whose server keeps its own.
    pub storage_checked: bool,
    /// One line per problem; empty: sound.
    pub problems: Vec<String>,
}
