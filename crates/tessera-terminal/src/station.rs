//! A till at work on its directory: every clerk operation is one call.
//!
//! [`DirTill`] is a [`Till`] opened from a [`TerminalDir`] that keeps the
//! directory in step with what happens at the card: a profile update the
//! card took is removed, the unblocks still waiting for their card are
//! written back. [`history`], [`totals`] and [`status`] read the journal
//! without keys or card. `tessera pos` is this module plus argument
//! parsing and printing.
//!
//! ```
//! use tessera_crypto::{keys::IssuerKeys, rng::Rng};
//! use tessera_simulator::SimCard;
//! use tessera_terminal::dir::TerminalDir;
//! use tessera_terminal::station::{DirTill, Operation};
//! use tessera_terminal::till::TillOutcome;
//! use tessera_terminal::{issuer, FixedClock, SoftwareSam};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let keys = IssuerKeys::test()?;
//! # let mut card = SimCard::manufacture([1; 8], &keys.card_perso_key(&[1; 8]), Rng::seeded(1))?;
//! # let profile = tessera_protocol::profile::Profile {
//! #     card_id: [1; 8], version: 1, name: "Ada".into(),
//! #     birth_date: tessera_protocol::profile::Date::new(1990, 1, 2)?,
//! #     home_city: "Lyon".into(), household: [0; 8], preferences: vec![], tier: 0,
//! #     valid_from: tessera_protocol::profile::Date::new(2026, 1, 1)?,
//! #     valid_until: tessera_protocol::profile::Date::new(2030, 1, 1)? };
//! # issuer::personalize(&mut card, &keys, profile, &issuer::IssueParams::default())?;
//! let tmp = tempfile::tempdir()?;
//! let terminal_keys = keys.terminal_keys(); // from the till's bundle in real life
//! let issuer_key = terminal_keys.issuer_public.clone();
//! let mut till = DirTill::open(
//!     TerminalDir::new(tmp.path().join("till")),
//!     SoftwareSam::new(terminal_keys),
//!     &issuer_key,
//!     FixedClock(1_790_000_000),
//!     7,    // terminal id of a new journal
//!     None, // the bundle's terminal id, when there is one
//!     1,    // store
//! )?;
//! let purchase = Operation::Purchase { amount_minor: 1250, categories: vec!["coffee".into()] };
//! let tap = till.operate(&mut card, purchase, false)?;
//! assert!(matches!(tap.outcome, Some(TillOutcome::Approved { .. })));
//! let shift = tessera_terminal::station::totals(till.journal(), 1_789_977_600)?;
//! assert_eq!(shift.transactions["earn"].count, 1);
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;

use tessera_crypto::sign::IssuerPublicKey;
use tessera_protocol::messages::CardId;
use tessera_transport::Transport;

use crate::approval::TillApproval;
use crate::dir::{DirError, TerminalDir};
use crate::journal::{ChainReport, EntryKind, Journal, JournalError, JournalRecord, Verdict};
use crate::till::{Till, TillError, TillOutcome};
use crate::{AuditTrace, CardInfo, Clock, Sam, Unblock};

/// What the clerk asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// Read the card: greet the customer, show balance and offers.
    Read,
    /// A purchase: the points follow from the amount, categories and
    /// campaigns.
    Purchase {
        /// Amount in minor units (cents).
        amount_minor: u64,
        /// Purchased categories, lower-case.
        categories: Vec<String>,
    },
    /// A purchase given line by line: the amount is the lines' total,
    /// the categories theirs, and the lines are journaled
    /// ([`TillTap::purchase_basket`](crate::till::TillTap::purchase_basket)).
    Basket {
        /// The basket's lines.
        lines: Vec<crate::journal::BasketLine>,
    },
    /// Spend points.
    Redeem {
        /// Points to spend.
        points: u32,
    },
    /// Reverse an earlier earn or redemption of the presented card, named
    /// by its receipt reference ([`ReceiptRef`]): a reference of another
    /// card is refused before anything is done.
    RefundOf(ReceiptRef),
    /// Reverse an earlier earn or redemption of the presented card.
    Refund {
        /// The card the original was made on, when the clerk gave it: a
        /// different card presented is refused before anything is done.
        card: Option<CardId>,
        /// The original's card counter.
        original: u32,
    },
}

/// Everything one tap did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapReport {
    /// The card as read in the authenticated session.
    pub card: CardInfo,
    /// Today's offers for the customer, for the clerk's screen.
    pub offers: Vec<String>,
    /// Records journaled as `recovered` (interrupted operations resolved,
    /// other tills' last transactions).
    pub recovered: Vec<JournalRecord>,
    /// Decisions journaled as `void` (the card shows it never committed
    /// them).
    pub voided: Vec<JournalRecord>,
    /// Profile version written to the card at this tap.
    pub profile_updated: Option<u16>,
    /// Key version the card moved to at this tap.
    pub keys_updated: Option<u8>,
    /// Settled counter acknowledged to the card at this tap.
    pub settlement_acknowledged: Option<u32>,
    /// Issuer adjustments applied to the card at this tap (v2.1), each
    /// journaled with its certified record.
    pub adjusted: Vec<crate::Receipt>,
    /// An issuer adjustment the card did not take at this tap (its
    /// sequence and why); it waits for a later tap.
    pub adjustment_refused: Option<(u32, String)>,
    /// The operation's outcome; `None` for [`Operation::Read`].
    pub outcome: Option<TillOutcome>,
    /// Every exchange with the card, timed.
    pub trace: AuditTrace,
}

/// A till opened from its directory (see the module documentation).
pub struct DirTill<S: Sam, C: Clock> {
    dir: TerminalDir,
    till: Till<S, C>,
    approval: Option<TillApproval>,
    online: Option<Box<dyn crate::till::OnlineAuthorizer>>,
}

impl<S: Sam, C: Clock> DirTill<S, C> {
    /// Opens the till kept in `dir` ([`TerminalDir::open_till`]: journal
    /// bound to the keys, signed files checked, issuer decisions loaded).
    ///
    /// # Errors
    /// [`DirError`]: each names the file and what to do.
    pub fn open(
        dir: TerminalDir,
        sam: S,
        issuer: &IssuerPublicKey,
        clock: C,
        default_id: u32,
        required: Option<u32>,
        store: u32,
    ) -> Result<Self, DirError> {
        let till = dir.open_till(sam, issuer, clock, default_id, required, store)?;
        Ok(Self {
            dir,
            till,
            approval: None,
            online: None,
        })
    }

    /// The office's referral approval code for the next
    /// [`DirTill::operate`] (earn, redeem or refund): checked against the
    /// presented card, the operation and its amount before the card is
    /// asked to transact ([`crate::till::TillTap::use_approval`]); a code
    /// that does not fit is journaled as a decline (`C01`–`C08`) and the
    /// card is not touched. Used once: a read ignores it and drops it.
    pub fn set_approval(&mut self, approval: TillApproval) {
        self.approval = Some(approval);
    }

    /// The office to ask online (card application v2.2) at every
    /// following [`DirTill::operate`], under the till's
    /// [`crate::till::OnlineSettings`] ([`crate::till::TillTap::use_online`]).
    pub fn set_online(&mut self, authorizer: Box<dyn crate::till::OnlineAuthorizer>) {
        self.online = Some(authorizer);
    }

    /// The till's directory.
    pub fn dir(&self) -> &TerminalDir {
        &self.dir
    }

    /// The till.
    pub fn till(&self) -> &Till<S, C> {
        &self.till
    }

    /// The till, for operations this type does not wrap.
    pub fn till_mut(&mut self) -> &mut Till<S, C> {
        &mut self.till
    }

    /// The journal.
    pub fn journal(&self) -> &Journal {
        self.till.journal()
    }

    /// One tap: authenticate the card, resolve what an earlier pulled card
    /// left open, deliver waiting issuer decisions, then do `op`. With
    /// `again`, an operation the tap found already done earlier is done
    /// once more (the clerk confirmed it is a new one); without, it is
    /// answered [`TillOutcome::AlreadyDone`].
    ///
    /// # Errors
    /// [`TillError::WrongCard`] for a refund on another card than given
    /// (nothing done); the till's errors otherwise. The directory is kept
    /// in step either way.
    pub fn operate<T: Transport>(&mut self, transport: T, op: Operation, again: bool) -> Result<TapReport, TillError> {
        let unblocks_before = self.till.terminal_mut().unblocks().count();
        let result = self.operate_inner(transport, op, again);
        self.keep_waiting_unblocks(unblocks_before)?;
        let mut report = result?;
        report.trace = self.till.terminal_mut().take_trace();
        Ok(report)
    }

    fn operate_inner<T: Transport>(
        &mut self,
        transport: T,
        op: Operation,
        again: bool,
    ) -> Result<TapReport, TillError> {
        let approval = self.approval.take();
        let online = self.online.as_deref_mut();
        let mut t = self.till.tap(transport)?;
        if again {
            t.allow_repeat();
        }
        if let Some(a) = approval {
            t.use_approval(a);
        }
        if let Some(o) = online {
            t.use_online(o);
        }
        if t.profile_updated.is_some() {
            // Delivered: the card holds it now.
            let path = self
                .dir
                .path()
                .join("profile-updates")
                .join(format!("{}.json", hex::encode_upper(t.card().card_id)));
            let _ = std::fs::remove_file(path);
        }
        let card = t.card().clone();
        let offers = t.offers();
        let outcome = match op {
            Operation::Read => None,
            Operation::Purchase {
                amount_minor,
                categories,
            } => Some(t.purchase(amount_minor, &categories)?),
            Operation::Basket { lines } => Some(t.purchase_basket(&lines)?),
            Operation::Redeem { points } => Some(t.redeem(points)?),
            Operation::Refund { card: given, original } => {
                if let Some(given) = given.filter(|g| *g != card.card_id) {
                    return Err(TillError::WrongCard {
                        presented: card.card_id,
                        given,
                    });
                }
                Some(t.refund(original)?)
            }
            Operation::RefundOf(r) => {
                if !r.matches(&card.card_id) {
                    return Err(TillError::WrongReference {
                        presented: card.card_id,
                        reference: r.to_string(),
                    });
                }
                Some(t.refund(r.counter)?)
            }
        };
        Ok(TapReport {
            card,
            offers,
            recovered: t.recovered.clone(),
            voided: t.voided.clone(),
            profile_updated: t.profile_updated,
            keys_updated: t.keys_updated,
            settlement_acknowledged: t.settlement_acknowledged,
            adjusted: t.adjusted.clone(),
            adjustment_refused: t.adjustment_refused.clone(),
            outcome,
            trace: AuditTrace::default(),
        })
    }

    /// After a tap that delivered an UNBLOCK, keeps only the unblocks
    /// still waiting for their card.
    fn keep_waiting_unblocks(&mut self, before: usize) -> Result<(), TillError> {
        let now: Vec<([u8; 8], Unblock)> = self.till.terminal_mut().unblocks().map(|(c, u)| (*c, *u)).collect();
        if now.len() == before {
            return Ok(());
        }
        self.dir.write_unblocks(&now).map_err(TillError::Dir)
    }
}

/// The journal's records, newest last: at most `limit` of them, of one
/// card when given.
///
/// # Errors
/// [`JournalError`].
pub fn history(journal: &Journal, card: Option<&CardId>, limit: usize) -> Result<Vec<JournalRecord>, JournalError> {
    let mut recs = match card {
        Some(c) => journal.records_for(c)?,
        None => journal.records()?,
    };
    let skip = recs.len().saturating_sub(limit);
    recs.drain(..skip);
    Ok(recs)
}

/// The records a receipt roll shows, of `records` (as [`history`] gives
/// them): one line per operation — an approved decision whose card answer
/// is among them (completion, recovery or void) is left out, the answer
/// standing for it; refusals, zero-point sales, still pending approvals
/// and everything else stay.
pub fn receipt_roll(records: &[JournalRecord], terminal_id: u32) -> Vec<&JournalRecord> {
    let answered: std::collections::HashSet<u32> = records
        .iter()
        .filter(|r| match r.entry.kind {
            EntryKind::Completion | EntryKind::Void => true,
            EntryKind::Recovered => r.entry.origin_terminal == Some(terminal_id),
            EntryKind::Decision => false,
        })
        .filter_map(|r| r.entry.origin_seq)
        .collect();
    records
        .iter()
        .filter(|r| {
            !(r.entry.kind == EntryKind::Decision
                && r.entry.verdict == Some(Verdict::Approve)
                && answered.contains(&r.seq))
        })
        .collect()
}

/// Count, points and sales of one transaction type (or one category) in a
/// shift.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TypeTotal {
    /// Completed card transactions (for `sale`: approved sales without
    /// points).
    pub count: u64,
    /// Points moved (absolute).
    pub points: i64,
    /// The purchases' amounts, in minor units (earns and sales; 0 for the
    /// others).
    pub sales_minor: u64,
}

/// A shift report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShiftTotals {
    /// Start of the shift (Unix seconds).
    pub since: u32,
    /// End of the report (Unix seconds, exclusive), when it has one.
    pub until: Option<u32>,
    /// Completed card transactions per type (`earn`, `redeem`,
    /// `refund-earn`, `refund-redeem`, and `sale` for approved sales that
    /// earned no points).
    pub transactions: BTreeMap<String, TypeTotal>,
    /// Earns and sales per purchased category (a purchase of several
    /// categories counts in each; `(none)` for a purchase without one).
    pub categories: BTreeMap<String, TypeTotal>,
    /// Declines and referrals per reason code.
    pub refusals: BTreeMap<String, u64>,
}

impl ShiftTotals {
    /// Money taken in earns and sales, in minor units.
    pub fn sales_minor(&self) -> u64 {
        self.transactions.values().map(|t| t.sales_minor).sum()
    }
}

/// A receipt reference: what a receipt carries so that the transaction
/// can be refunded with the card presented — the last four hex digits of
/// the card id and the card's transaction counter, `A3F9-0012`
/// ([`ReceiptRef::for_record`]).
///
/// [`ReceiptRef::parse`] also takes the counter alone (`12`, the card is
/// the one presented) and the full form `CARD-ID:COUNTER`
/// (`7E57000000000001:12`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiptRef {
    /// Which card, as far as the reference says.
    pub card: RefCard,
    /// The card's transaction counter.
    pub counter: u32,
}

/// The card part of a [`ReceiptRef`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefCard {
    /// Whichever card is presented (the counter alone was given).
    Presented,
    /// The last two bytes of the card id (the short form).
    Tail([u8; 2]),
    /// The whole card id.
    Full(CardId),
}

/// A receipt reference that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid reference {0:?}: give the receipt's reference like A3F9-0012, the card's transaction number like 12, or CARD-ID:COUNTER")]
pub struct RefError(pub String);

impl ReceiptRef {
    /// The reference of the card's transaction `counter`.
    pub fn for_record(card: &CardId, counter: u32) -> Self {
        Self {
            card: RefCard::Tail([card[6], card[7]]),
            counter,
        }
    }

    /// Reads a reference (see the type's documentation).
    ///
    /// # Errors
    /// [`RefError`]; a counter of 0 is refused (counters start at 1).
    pub fn parse(s: &str) -> Result<Self, RefError> {
        let t = s.trim();
        let bad = || RefError(s.to_owned());
        let counter = |n: &str| -> Result<u32, RefError> {
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            match n.parse::<u32>() {
                Ok(0) | Err(_) => Err(bad()),
                Ok(c) => Ok(c),
            }
        };
        if let Some((card, n)) = t.split_once(':') {
            let mut id = [0u8; 8];
            hex::decode_to_slice(card, &mut id).map_err(|_| bad())?;
            return Ok(Self {
                card: RefCard::Full(id),
                counter: counter(n)?,
            });
        }
        if let Some((tail, n)) = t.split_once('-') {
            let mut b = [0u8; 2];
            if tail.len() != 4 {
                return Err(bad());
            }
            hex::decode_to_slice(tail, &mut b).map_err(|_| bad())?;
            return Ok(Self {
                card: RefCard::Tail(b),
                counter: counter(n)?,
            });
        }
        Ok(Self {
            card: RefCard::Presented,
            counter: counter(t.trim_start_matches('#'))?,
        })
    }

    /// Whether the reference can be of `card`.
    pub fn matches(&self, card: &CardId) -> bool {
        match self.card {
            RefCard::Presented => true,
            RefCard::Tail(t) => t == [card[6], card[7]],
            RefCard::Full(c) => c == *card,
        }
    }
}

impl std::fmt::Display for ReceiptRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.card {
            RefCard::Presented => write!(f, "{}", self.counter),
            RefCard::Tail(t) => write!(f, "{}-{:04}", hex::encode_upper(t), self.counter),
            RefCard::Full(c) => write!(f, "{}:{}", hex::encode_upper(c), self.counter),
        }
    }
}

impl std::str::FromStr for ReceiptRef {
    type Err = RefError;
    fn from_str(s: &str) -> Result<Self, RefError> {
        Self::parse(s)
    }
}

/// The receipt reference of a journal record of a card transaction
/// (`None` for decisions without a card counter).
pub fn record_reference(r: &JournalRecord) -> Option<ReceiptRef> {
    let card = r.entry.card_id.as_deref()?;
    let mut id = [0u8; 8];
    hex::decode_to_slice(card, &mut id).ok()?;
    let counter = r.entry.card_counter?;
    Some(ReceiptRef::for_record(&id, counter))
}

/// Counts and sums per transaction type, and refusals per reason, of the
/// records journaled since `since`. A card transaction counts once: when
/// the card answered, or, for a card pulled before its answer, when a
/// later tap found it done.
///
/// # Errors
/// [`JournalError`].
pub fn totals(journal: &Journal, since: u32) -> Result<ShiftTotals, JournalError> {
    totals_between(journal, since, None)
}

/// [`totals`] of the records journaled from `since` up to, not including,
/// `until` (a closed shift).
///
/// # Errors
/// [`JournalError`].
pub fn totals_between(journal: &Journal, since: u32, until: Option<u32>) -> Result<ShiftTotals, JournalError> {
    let mut out = ShiftTotals {
        since,
        until,
        ..ShiftTotals::default()
    };
    let me = journal.terminal_id();
    let in_range = |t: u32| t >= since && until.is_none_or(|u| t < u);
    for r in journal.records()?.into_iter().filter(|r| in_range(r.entry.time)) {
        // An approved sale that earned nothing: no card transaction.
        if r.entry.kind == EntryKind::Decision
            && r.entry.verdict == Some(Verdict::Approve)
            && r.entry.tx_type.as_deref() == Some(crate::till::SALE)
        {
            let amount = r.entry.purchase_minor.unwrap_or(0);
            add(out.transactions.entry(crate::till::SALE.into()).or_default(), 0, amount);
            for c in categories_of(&r.entry.categories) {
                add(out.categories.entry(c).or_default(), 0, amount);
            }
            continue;
        }
        // This till's own card transactions: completed, or resolved at a
        // later tap after the card was pulled (other tills' records that a
        // tap recovered are theirs).
        let ours = r.entry.kind == EntryKind::Completion
            || (r.entry.kind == EntryKind::Recovered && r.entry.origin_terminal == Some(me));
        match (ours, r.entry.kind, r.entry.delta()) {
            (true, _, Some(d)) => {
                let amount = r.entry.purchase_minor.unwrap_or(0);
                let x = out
                    .transactions
                    .entry(r.entry.tx_type.clone().unwrap_or_default())
                    .or_default();
                add(x, d.abs(), amount);
                if r.entry.tx_type.as_deref() == Some("earn") {
                    for c in categories_of(&r.entry.categories) {
                        add(out.categories.entry(c).or_default(), d.abs(), amount);
                    }
                }
            }
            (_, EntryKind::Decision, _) if r.entry.verdict != Some(Verdict::Approve) => {
                *out.refusals
                    .entry(r.entry.reason.clone().unwrap_or_default())
                    .or_default() += 1;
            }
            _ => {}
        }
    }
    Ok(out)
}

fn add(t: &mut TypeTotal, points: i64, sales_minor: u64) {
    t.count += 1;
    t.points += points;
    t.sales_minor = t.sales_minor.saturating_add(sales_minor);
}

fn categories_of(c: &[String]) -> Vec<String> {
    if c.is_empty() {
        vec!["(none)".into()]
    } else {
        c.to_vec()
    }
}

/// Why a shift could not be opened or closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShiftError {
    /// A shift is open already: close it first.
    #[error("a shift is already open (since Unix time {since}): close it first with `tessera pos shift close`")]
    AlreadyOpen {
        /// When it opened.
        since: u32,
    },
    /// No shift is open.
    #[error("no shift is open: open one with `tessera pos shift open`")]
    NotOpen,
    /// The directory.
    #[error(transparent)]
    Dir(#[from] DirError),
    /// The journal.
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// Opens a shift at `now`: [`shift_totals`] count from here on.
///
/// # Errors
/// [`ShiftError::AlreadyOpen`] (nothing changed); [`ShiftError::Dir`].
pub fn open_shift(dir: &TerminalDir, now: u32) -> Result<u32, ShiftError> {
    if let Some(since) = dir.shift_opened()? {
        return Err(ShiftError::AlreadyOpen { since });
    }
    dir.set_shift(Some(now))?;
    Ok(now)
}

/// The totals of the open shift, or, when none is open, of the day so far
/// (from local midnight in `zone`); the flag tells which.
///
/// # Errors
/// [`ShiftError::Dir`], [`ShiftError::Journal`].
pub fn shift_totals(
    dir: &TerminalDir,
    journal: &Journal,
    zone: &tessera_rules::display::Zone,
    now: u32,
) -> Result<(ShiftTotals, bool), ShiftError> {
    Ok(match dir.shift_opened()? {
        Some(since) => (totals(journal, since)?, true),
        None => (totals(journal, zone.start_of_day(now))?, false),
    })
}

/// Closes the open shift at `now` and gives its final totals.
///
/// # Errors
/// [`ShiftError::NotOpen`] (nothing changed); [`ShiftError::Dir`],
/// [`ShiftError::Journal`].
pub fn close_shift(dir: &TerminalDir, journal: &Journal, now: u32) -> Result<ShiftTotals, ShiftError> {
    let since = dir.shift_opened()?.ok_or(ShiftError::NotOpen)?;
    let t = totals_between(journal, since, Some(now.saturating_add(1)))?;
    dir.set_shift(None)?;
    Ok(t)
}

/// The till's health.
#[derive(Debug)]
pub struct TillStatus {
    /// The journal's terminal.
    pub terminal_id: u32,
    /// Records in the journal.
    pub records: u32,
    /// The chain check: a broken chain means the journal was edited; call
    /// the office before settling.
    pub chain: Result<ChainReport, JournalError>,
    /// Decisions whose card answer is unknown (card pulled) until the card
    /// is tapped again.
    pub pending: Vec<u32>,
    /// Card transactions not yet acknowledged by the office.
    pub unsettled: usize,
    /// Every record up to this one is settled.
    pub settled_up_to: u32,
    /// Versions of the policy, hotlist and campaigns in force, or why the
    /// till refuses them.
    pub rules: Result<(u32, u32, u32), DirError>,
}

/// The till's health: journal chain, pending and unsettled records, rule
/// versions in force (each signed file checked as at a tap).
///
/// # Errors
/// [`JournalError`] when the journal cannot be read at all.
pub fn status(dir: &TerminalDir, journal: &Journal, issuer: &IssuerPublicKey) -> Result<TillStatus, JournalError> {
    let settled_up_to = journal.settled_up_to()?;
    let unsettled = journal
        .records()?
        .iter()
        .filter(|r| r.seq > settled_up_to && r.entry.delta().is_some())
        .count();
    Ok(TillStatus {
        terminal_id: journal.terminal_id(),
        records: journal.len(),
        chain: journal.verify_chain(),
        pending: journal.pending()?.iter().map(|r| r.seq).collect(),
        unsettled,
        settled_up_to,
        rules: dir
            .load_config(issuer)
            .map(|c| (c.policy.version, c.hotlist.version, c.campaigns.version)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipt_references_short_counter_alone_and_full() {
        let card = [0x7E, 0x57, 0, 0, 0, 0, 0xA3, 0xF9];
        let r = ReceiptRef::for_record(&card, 12);
        assert_eq!(r.to_string(), "A3F9-0012");
        assert_eq!(ReceiptRef::parse("A3F9-0012").unwrap(), r);
        assert_eq!(ReceiptRef::parse("a3f9-12").unwrap(), r);
        assert!(r.matches(&card));
        assert!(!r.matches(&[0x7E, 0x57, 0, 0, 0, 0, 0xA3, 0xFA]));
        let n = ReceiptRef::parse(" 12 ").unwrap();
        assert_eq!((n.card, n.counter), (RefCard::Presented, 12));
        assert!(n.matches(&card));
        let f = ReceiptRef::parse("7E5700000000A3F9:12").unwrap();
        assert_eq!(f.card, RefCard::Full(card));
        assert_eq!(ReceiptRef::for_record(&card, 123_456).to_string(), "A3F9-123456");
        for bad in [
            "",
            "0",
            "A3F9-0",
            "A3F-0012",
            "ZZZZ-0012",
            "7E57:1",
            "x",
            "-1",
            "12.5",
            "4294967296",
        ] {
            assert!(ReceiptRef::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
