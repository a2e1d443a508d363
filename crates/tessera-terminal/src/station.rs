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
    /// Spend points.
    Redeem {
        /// Points to spend.
        points: u32,
    },
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
        let mut t = self.till.tap(transport)?;
        if again {
            t.allow_repeat();
        }
        if let Some(a) = approval {
            t.use_approval(a);
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

/// Count and points of one transaction type in a shift.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TypeTotal {
    /// Completed card transactions.
    pub count: u64,
    /// Points moved (absolute).
    pub points: i64,
}

/// A shift report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShiftTotals {
    /// Start of the shift (Unix seconds).
    pub since: u32,
    /// Completed card transactions per type (`earn`, `redeem`, …).
    pub transactions: BTreeMap<String, TypeTotal>,
    /// Declines and referrals per reason code.
    pub refusals: BTreeMap<String, u64>,
}

/// Counts and sums per transaction type, and refusals per reason, of the
/// records journaled since `since`. A card transaction counts once: when
/// the card answered, or, for a card pulled before its answer, when a
/// later tap found it done.
///
/// # Errors
/// [`JournalError`].
pub fn totals(journal: &Journal, since: u32) -> Result<ShiftTotals, JournalError> {
    let mut out = ShiftTotals {
        since,
        ..ShiftTotals::default()
    };
    let me = journal.terminal_id();
    for r in journal.records()?.into_iter().filter(|r| r.entry.time >= since) {
        // This till's own card transactions: completed, or resolved at a
        // later tap after the card was pulled (other tills' records that a
        // tap recovered are theirs).
        let ours = r.entry.kind == EntryKind::Completion
            || (r.entry.kind == EntryKind::Recovered && r.entry.origin_terminal == Some(me));
        match (ours, r.entry.kind, r.entry.delta()) {
            (true, _, Some(d)) => {
                let x = out
                    .transactions
                    .entry(r.entry.tx_type.clone().unwrap_or_default())
                    .or_default();
                x.count += 1;
                x.points += d.abs();
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
