//! The till: a terminal with its journal, its policy and its offers.
//!
//! [`Till::tap`] authenticates the card, first brings the journal level with
//! it (recovery, below), then blocks a hotlisted card on the spot. On the
//! resulting [`TillTap`], every operation follows the same order:
//!
//! 1. the offers and the policy decide, offline ([`crate::policy::authorize`]);
//! 2. the decision is journaled — declines and referrals too; an approval is
//!    journaled *before* the command goes to the card, and its journal
//!    sequence number is the terminal sequence the card certifies;
//! 3. the card transacts;
//! 4. the card's answer and certificate are journaled (durably, `fsync`)
//!    before the caller — the clerk — learns "approved".
//!
//! Recovery: if the card's answer to an approved decision was lost (card
//! pulled), the decision stays *pending*. At the card's next tap here, the
//! card's own log tells whether it happened: the record is journaled as
//! `recovered`, or the decision as `void`. At any tap, the card's last
//! record (in the AUTHENTICATE response) is journaled as `recovered` when
//! this journal does not have it — whoever made it — so a transaction whose
//! answer was lost at another terminal is still journaled with its
//! certificate; the ledger matches such records by card id and counter.
//! A till never retries a transaction blindly.

use std::collections::BTreeMap;

use tessera_protocol::messages::{
    AuthorizationRequest, AuthorizationResponse, CardId, KeyUpdateCommand, LogRecord, TxKind,
};
use tessera_protocol::profile::SignedProfile;
use tessera_transport::Transport;

use crate::approval::{ReferralKind, TillApproval, WRONG_CODES_PER_HOUR};
use crate::journal::{BasketLine, Entry, EntryKind, Journal, JournalError, JournalRecord, Verdict};
use crate::offers::{offers_today, quote, CampaignSet, Quote};
use crate::policy::{
    authorize, authorize_approved, date_from_unix, ApprovalRefusal, Decision, DeclineReason, Hotlist, Policy,
    ReferReason, TxRequest,
};
use crate::{Adjustment, CardInfo, Clock, PendingTx, Receipt, Resolution, Sam, Session, Terminal, TerminalError};
use tessera_crypto::referral::Mismatch;

/// The journal's transaction type of an approved sale that earned no
/// points and did not touch the card ([`TillOutcome::ApprovedNoPoints`]).
pub const SALE: &str = "sale";

/// A profile update from the back office: the signed profile and the
/// issuer's MAC over its exact blob (spec §5.9), which the card checks. The
/// MAC is made with the issuer key of one key version of the card; around a
/// key rotation the office sends one per version the card may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileUpdate {
    /// The card key version whose issuer key made the MAC.
    pub key_version: u8,
    /// The new signed profile.
    pub profile: SignedProfile,
    /// Issuer MAC over the blob.
    pub issuer_mac: [u8; 8],
}

/// The back office's settled counter for one card, with the issuer's MAC
/// over it (spec §5.9): a till can relay it, not make one. As for
/// [`ProfileUpdate`], the MAC is for one key version of the card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettledCounter {
    /// The card key version whose issuer key made the MAC.
    pub key_version: u8,
    /// Every transaction of the card up to this counter is settled.
    pub counter: u32,
    /// Issuer MAC over the counter.
    pub issuer_mac: [u8; 8],
}

/// The rules a till applies.
#[derive(Debug, Clone)]
pub struct TillConfig {
    /// Offline authorization policy and points rates.
    pub policy: Policy,
    /// Blocked cards.
    pub hotlist: Hotlist,
    /// Verified campaigns.
    pub campaigns: CampaignSet,
    /// When to ask the office online, how long to wait, and what to do
    /// without an answer (card application v2.2; applies only when the tap
    /// has an authorizer, [`TillTap::use_online`]).
    pub online: OnlineSettings,
}

/// When the till asks the office for an online authorization (with an
/// authorizer at the tap), and what it does without an answer.
///
/// The till goes online, with the card in the field, when its offline
/// decision is a referral the office can lift — offline velocity (`R01`,
/// `R02`), a purchase above the offline limit (`R05`), an earn above the
/// offline cap (`R06`), a redemption above the till's cap (`D07`), a
/// refund whose original left the card's log
/// (`R04`, found when the card refuses it) — or when the card's own cap
/// refuses the amount; at or above [`OnlineSettings::floor_points`]; and
/// for every operation with [`OnlineMode::Always`]. It never asks for what
/// it declines offline (the hotlist, validity dates, the balance, the
/// journal's refund checks), nor for a clock behind the card (`R03`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnlineSettings {
    /// Which operations go online.
    pub mode: OnlineMode,
    /// Operations of at least this many points go online (none: no floor).
    pub floor_points: Option<u32>,
    /// How long the till waits for the office's answer.
    pub timeout: std::time::Duration,
    /// What an unanswered request becomes.
    pub without_answer: WithoutAnswer,
}

impl Default for OnlineSettings {
    /// Online for referrals, no floor, 5 seconds, referred without an
    /// answer (the clerk may then call the office for a voice code).
    fn default() -> Self {
        Self {
            mode: OnlineMode::Referred,
            floor_points: None,
            timeout: std::time::Duration::from_secs(5),
            without_answer: WithoutAnswer::Refer,
        }
    }
}

/// Which operations go online ([`OnlineSettings`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnlineMode {
    /// What the office can lift: referrals, the card's caps, the floor.
    Referred,
    /// Every earn, redemption and refund the till approves or refers
    /// offline.
    Always,
}

/// What an online request without an answer in time becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WithoutAnswer {
    /// Declined (`O09`).
    Decline,
    /// The offline decision stands: a referral is referred (call the office
    /// for a voice code), an offline decline (`D07`) declined; an operation
    /// that went online only for the floor or [`OnlineMode::Always`] is
    /// declined (`O09`).
    Refer,
}

/// The office's answer to a card's online request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnlineAnswer {
    /// `A00` or the office's decline code.
    pub code: String,
    /// The office's line for the clerk.
    pub message: String,
    /// The card's answer (`DF0B`), relayed to the card as it is.
    pub response: AuthorizationResponse,
}

/// Asks the office: implemented over HTTPS by `tessera-client`
/// (`OfficeAuthorizer`), by tests with an office of their own.
pub trait OnlineAuthorizer {
    /// The office's answer to the card's request, within `timeout`.
    ///
    /// # Errors
    /// A one-line reason when there is no answer in time (unreachable,
    /// refused, not genuine): the till applies
    /// [`OnlineSettings::without_answer`].
    fn authorize(
        &mut self,
        card_id: &CardId,
        key_version: u8,
        request: &AuthorizationRequest,
        timeout: std::time::Duration,
    ) -> Result<OnlineAnswer, String>;
}

/// Errors at the till.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TillError {
    /// The card or the link failed.
    #[error(transparent)]
    Terminal(#[from] TerminalError),
    /// The journal failed: nothing more may be done until it is fixed.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The card was hotlisted: it has been blocked and the decline
    /// journaled. Keep the card and call the office.
    #[error("card blocked")]
    Hotlisted,
    /// A refund was asked for on another card than the one presented:
    /// nothing was done; present the card of the original transaction.
    #[error("this is card {}, not {}: present the card of the original transaction", hex::encode_upper(.presented), hex::encode_upper(.given))]
    WrongCard {
        /// The card presented.
        presented: CardId,
        /// The card the clerk named.
        given: CardId,
    },
    /// A refund named a receipt reference of another card than the one
    /// presented: nothing was done.
    #[error("reference {reference} is not of this card ({}): present the card of the receipt", hex::encode_upper(.presented))]
    WrongReference {
        /// The card presented.
        presented: CardId,
        /// The reference given.
        reference: String,
    },
    /// The till's directory could not be kept in step with the card (see
    /// [`DirError`](crate::dir::DirError)); what the card did is journaled.
    #[error(transparent)]
    Dir(#[from] crate::dir::DirError),
    /// The basket lines cannot make a purchase: nothing was done.
    #[error("invalid basket: {0}")]
    InvalidBasket(&'static str),
}

/// What became of an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TillOutcome {
    /// Approved and done on the card; journaled.
    Approved {
        /// The card's receipt.
        receipt: Receipt,
        /// How the points were computed (purchases only).
        quote: Option<Quote>,
        /// Journal sequence of the decision (the certified terminal sequence).
        decision_seq: u32,
    },
    /// Nothing new was done: this tap found that an earlier operation of
    /// this till on this card, interrupted (card pulled, answer lost), went
    /// through. A retry of that operation must not charge twice; if the
    /// customer really wants another one, call [`TillTap::allow_repeat`]
    /// and ask again.
    AlreadyDone {
        /// The earlier operations, as journaled now (`recovered`).
        earlier: Vec<JournalRecord>,
    },
    /// A sale that earns no points (a purchase of 0.01): approved, with 0
    /// points; journaled as an approved decision of type `sale`; the card
    /// was not touched (no card transaction, nothing certified).
    ApprovedNoPoints {
        /// How the (zero) points were computed.
        quote: Quote,
        /// Journal sequence of the decision.
        decision_seq: u32,
    },
    /// Declined or referred; journaled; the card was not touched.
    Refused {
        /// The decision.
        decision: Decision,
        /// Journal sequence of the decision.
        decision_seq: u32,
    },
}

/// A terminal, its journal and its rules.
pub struct Till<S: Sam, C: Clock> {
    terminal: Terminal<S, C>,
    journal: Journal,
    config: TillConfig,
    profile_updates: BTreeMap<(CardId, u8), ProfileUpdate>,
    settled: BTreeMap<(CardId, u8), SettledCounter>,
    key_updates: BTreeMap<CardId, KeyUpdateCommand>,
    adjustments: Vec<Adjustment>,
}

impl<S: Sam, C: Clock> Till<S, C> {
    /// A till. The journal must belong to the terminal's id.
    ///
    /// # Errors
    /// [`JournalError::WrongTerminal`] otherwise.
    pub fn new(terminal: Terminal<S, C>, journal: Journal, config: TillConfig) -> Result<Self, JournalError> {
        if journal.terminal_id() != terminal.terminal_id() {
            return Err(JournalError::WrongTerminal {
                found: journal.terminal_id(),
                expected: terminal.terminal_id(),
            });
        }
        Ok(Self {
            terminal,
            journal,
            config,
            profile_updates: BTreeMap::new(),
            settled: BTreeMap::new(),
            key_updates: BTreeMap::new(),
            adjustments: Vec::new(),
        })
    }

    /// The journal.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The journal, for sealing settlement batches and applying
    /// acknowledgements.
    pub fn journal_mut(&mut self) -> &mut Journal {
        &mut self.journal
    }

    /// The terminal.
    pub fn terminal_mut(&mut self) -> &mut Terminal<S, C> {
        &mut self.terminal
    }

    /// The rules.
    pub fn config(&self) -> &TillConfig {
        &self.config
    }

    /// Profile updates from the back office, written to each card at its
    /// next tap here (when newer than the card's).
    pub fn set_profile_updates(&mut self, updates: impl IntoIterator<Item = ProfileUpdate>) {
        self.profile_updates = updates
            .into_iter()
            .map(|p| ((p.profile.profile.card_id, p.key_version), p))
            .collect();
    }

    /// The back office's settled counters per card (from a sync): at its
    /// next tap here, a card whose offline velocity counters still count
    /// settled redemptions gets ACKNOWLEDGE SETTLEMENT.
    pub fn set_settled(&mut self, settled: impl IntoIterator<Item = (CardId, SettledCounter)>) {
        self.settled = settled.into_iter().map(|(c, s)| ((c, s.key_version), s)).collect();
    }

    /// KEY UPDATEs from the back office (after a key rotation): a card
    /// below the update's key version moves at its next tap here, if this
    /// till holds the new version's master.
    pub fn set_key_updates(&mut self, updates: impl IntoIterator<Item = (CardId, KeyUpdateCommand)>) {
        self.key_updates = updates.into_iter().collect();
    }

    /// Issuer adjustments from the back office (v2.1, spec §4.16): at its
    /// next tap here a card gets those MAC'd for its key version, in
    /// sequence order, each journaled before the card is touched and its
    /// answer after, like a purchase. One already in this journal is not
    /// sent again.
    pub fn set_adjustments(&mut self, adjustments: impl IntoIterator<Item = Adjustment>) {
        self.adjustments = adjustments.into_iter().collect();
        self.adjustments.sort_by_key(|a| (a.card_id, a.seq, a.key_version));
    }

    /// Issuer adjustments held (delivered or not: the office stops serving
    /// one once its record has settled).
    pub fn adjustments(&self) -> &[Adjustment] {
        &self.adjustments
    }

    /// Profile updates not yet delivered.
    pub fn profile_updates(&self) -> impl Iterator<Item = &ProfileUpdate> {
        self.profile_updates.values()
    }

    /// Replaces the hotlist (after a sync).
    pub fn set_hotlist(&mut self, hotlist: Hotlist) {
        self.config.hotlist = hotlist;
    }

    /// A tap: authenticate, recover, and block the card if it is hotlisted.
    ///
    /// # Errors
    /// [`TillError::Hotlisted`] after blocking a hotlisted card;
    /// [`TillError::Terminal`] for card and link failures;
    /// [`TillError::Journal`] if the journal cannot be written.
    pub fn tap<T: Transport>(&mut self, transport: T) -> Result<TillTap<'_, S, C, T>, TillError> {
        let Self {
            terminal,
            journal,
            config,
            profile_updates,
            settled,
            key_updates,
            adjustments,
        } = self;
        let session = terminal.tap(transport)?;
        let mut tap = TillTap {
            session,
            journal,
            config,
            recovered: Vec::new(),
            completed_earlier: Vec::new(),
            voided: Vec::new(),
            profile_updated: None,
            settlement_acknowledged: None,
            keys_updated: None,
            adjusted: Vec::new(),
            adjustment_refused: None,
            allow_repeat: false,
            approval: None,
            online: None,
        };
        tap.recover()?;
        if tap.config.hotlist.contains(&tap.session.card().card_id) {
            let decision = Decision::Decline(DeclineReason::Hotlisted);
            let mut e = tap.card_entry(EntryKind::Decision);
            e.tx_type = Some("read".into());
            e.verdict = Some(Verdict::Decline);
            e.reason = Some(decision.code().to_owned());
            let TillTap { session, journal, .. } = tap;
            journal.append(e)?;
            session.block()?;
            return Err(TillError::Hotlisted);
        }
        let id = tap.session.card().card_id;
        let kv = tap.session.card().key_version;
        if let Some(update) = profile_updates
            .get(&(id, kv))
            .filter(|u| u.profile.profile.version > tap.session.card().profile.version)
        {
            match tap.session.update_profile(&update.profile, update.issuer_mac) {
                Ok(()) => {
                    tap.profile_updated = Some(update.profile.profile.version);
                    profile_updates.retain(|(c, _), _| *c != id);
                }
                // The link failed: the tap cannot go on.
                Err(e @ (TerminalError::Transport(_) | TerminalError::NotGenuine)) => return Err(e.into()),
                // Refused locally (not newer, bad signature): nothing was sent.
                Err(
                    TerminalError::InvalidRequest(_)
                    | TerminalError::BadProfileSignature
                    | TerminalError::ProfileCardMismatch,
                ) => {}
                // Refused by the card (its session is closed): a fresh one.
                Err(_) => tap.session.reauthenticate()?,
            }
        }
        let card = tap.session.card();
        if let Some(&s) = settled
            .get(&(id, kv))
            .filter(|s| s.counter > card.velocity.settled_counter && s.counter <= card.counter)
        {
            match tap.session.acknowledge_settlement(s.counter, s.issuer_mac) {
                Ok(_) => tap.settlement_acknowledged = Some(s.counter),
                Err(e @ (TerminalError::Transport(_) | TerminalError::NotGenuine)) => return Err(e.into()),
                // Refused (a made-up or stale MAC closes the card's session):
                // serve the customer in a fresh one.
                Err(_) => tap.session.reauthenticate()?,
            }
        }
        let card = tap.session.card();
        if let Some(ku) = key_updates.get(&id).filter(|k| k.key_version > card.key_version) {
            match tap.session.update_keys(ku) {
                Ok(v) => tap.keys_updated = Some(v),
                Err(e @ (TerminalError::Transport(_) | TerminalError::NotGenuine)) => return Err(e.into()),
                // Not for this till (no master of the new version): later.
                Err(TerminalError::InvalidRequest(_)) => {}
                Err(_) => tap.session.reauthenticate()?,
            }
        }
        let kv = tap.session.card().key_version;
        let due: Vec<Adjustment> = adjustments
            .iter()
            .filter(|a| a.card_id == id && a.key_version == kv)
            .copied()
            .collect();
        for a in due {
            if tap.journal.adjustment_of(&id, a.seq)?.is_some() {
                continue;
            }
            if !tap.adjust(&a)? {
                // Refused: the later ones wait too (the card takes only its
                // next sequence).
                break;
            }
        }
        Ok(tap)
    }
}

/// An authenticated card at the till.
pub struct TillTap<'a, S: Sam, C: Clock, T: Transport> {
    session: Session<'a, S, C, T>,
    journal: &'a mut Journal,
    config: &'a TillConfig,
    /// Records journaled as `recovered` by this tap.
    pub recovered: Vec<JournalRecord>,
    /// Of those, this till's own interrupted operations that went through
    /// (the card's log shows them): until [`TillTap::allow_repeat`], the
    /// next operation answers [`TillOutcome::AlreadyDone`].
    pub completed_earlier: Vec<JournalRecord>,
    allow_repeat: bool,
    approval: Option<TillApproval>,
    online: Option<&'a mut dyn OnlineAuthorizer>,
    /// Decisions journaled as `void` by this tap.
    pub voided: Vec<JournalRecord>,
    /// The profile version written to the card by this tap, if any.
    pub profile_updated: Option<u16>,
    /// The settled counter acknowledged to the card by this tap, if any.
    pub settlement_acknowledged: Option<u32>,
    /// The key version the card moved to at this tap, if any.
    pub keys_updated: Option<u8>,
    /// Issuer adjustments applied to the card at this tap (journaled).
    pub adjusted: Vec<Receipt>,
    /// An issuer adjustment the card did not take at this tap (sequence
    /// and why); it stays queued.
    pub adjustment_refused: Option<(u32, String)>,
}

impl<'a, S: Sam, C: Clock, T: Transport> TillTap<'a, S, C, T> {
    /// The card.
    pub fn card(&self) -> &CardInfo {
        self.session.card()
    }

    /// The offers that apply to this customer today.
    pub fn offers(&self) -> Vec<String> {
        let c = self.session.card();
        offers_today(
            &self.config.campaigns,
            &c.profile,
            &c.visits,
            date_from_unix(self.session.now()),
        )
    }

    /// The points a purchase would earn, with the campaigns that apply.
    pub fn quote(&self, purchase_minor: u64, categories: &[String]) -> Quote {
        let c = self.session.card();
        quote(
            &self.config.policy,
            &self.config.campaigns,
            &c.profile,
            &c.visits,
            purchase_minor,
            categories,
            date_from_unix(self.session.now()),
        )
    }

    fn card_entry(&self, kind: EntryKind) -> Entry {
        let mut e = Entry::new(kind, self.session.now());
        e.card_id = Some(hex::encode_upper(self.session.card().card_id));
        e
    }

    /// Brings the journal level with the card (module docs, "Recovery").
    fn recover(&mut self) -> Result<(), TillError> {
        let card = self.session.card().clone();
        let me = self.journal.terminal_id();
        let pending = self.journal.pending_for(&card.card_id)?;
        for d in pending {
            let (Some(kind), Some(points), Some(expected)) = (
                d.entry.tx_type.as_deref().and_then(crate::journal::tx_kind),
                d.entry.points,
                d.entry.card_counter,
            ) else {
                continue;
            };
            let p = PendingTx {
                card_id: card.card_id,
                expected_counter: expected,
                kind,
                amount: points,
                terminal_id: me,
                terminal_seq: d.seq,
            };
            match self.session.resolve(&p) {
                Ok(Resolution::Completed(rec)) => {
                    if self.journal.card_transaction(&card.card_id, rec.counter)?.is_none() {
                        let mut e =
                            Entry::from_card_record(EntryKind::Recovered, self.session.now(), &card.card_id, &rec);
                        e.purchase_minor = d.entry.purchase_minor;
                        e.categories.clone_from(&d.entry.categories);
                        let r = self.journal.append(e)?;
                        // An issuer adjustment is no clerk's operation: it
                        // never makes the next one a retry.
                        if !kind.is_adjustment() {
                            self.completed_earlier.push(r.clone());
                        }
                        self.recovered.push(r);
                    }
                }
                Ok(Resolution::NotDone) => {
                    let mut e = self.card_entry(EntryKind::Void);
                    e.card_counter = Some(expected);
                    e.tx_type = d.entry.tx_type.clone();
                    e.points = Some(points);
                    e.origin_seq = Some(d.seq);
                    e.reason = Some("not-on-card".into());
                    self.voided.push(self.journal.append(e)?);
                }
                // The record has left the card's log: the ledger will tell.
                Err(TerminalError::InvalidRequest(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(rec) = &card.last_record {
            if self.journal.card_transaction(&card.card_id, rec.counter)?.is_none() {
                let e = Entry::from_card_record(EntryKind::Recovered, self.session.now(), &card.card_id, rec);
                self.recovered.push(self.journal.append(e)?);
            }
        }
        Ok(())
    }

    /// Delivers one issuer adjustment (v2.1): journals the decision (the
    /// issuer's, approved; its sequence is the certified terminal
    /// sequence) before the card is touched, then the card's certified
    /// record, or a void when the card did not take it. Returns whether
    /// the card took it. A lost answer leaves the decision pending, to be
    /// resolved from the card's log at its next tap, like a purchase's.
    fn adjust(&mut self, a: &Adjustment) -> Result<bool, TillError> {
        let card = self.session.card().clone();
        let mut e = self.card_entry(EntryKind::Decision);
        e.tx_type = Some(a.kind.name().to_owned());
        e.points = Some(a.points);
        e.reference = Some(a.seq);
        e.verdict = Some(Verdict::Approve);
        e.reason = Some("issuer-adjustment".into());
        e.card_counter = Some(card.counter.saturating_add(1));
        if !a.kind.is_credit() && a.points > card.balance {
            // Nothing is sent: a debit never takes the card below zero.
            self.adjustment_refused = Some((a.seq, "the balance is below the debit".into()));
            return Ok(false);
        }
        let d = self.journal.append(e)?;
        self.session.set_next_seq(d.seq);
        match self.session.adjust(a) {
            Ok(receipt) => {
                let c = Entry::from_card_record(
                    EntryKind::Completion,
                    self.session.now(),
                    &card.card_id,
                    &receipt.record,
                );
                self.journal.append(c)?;
                self.adjusted.push(receipt);
                Ok(true)
            }
            Err(err @ TerminalError::Interrupted(_)) => Err(err.into()),
            Err(err) => {
                let mut v = self.card_entry(EntryKind::Void);
                v.card_counter = d.entry.card_counter;
                v.tx_type = d.entry.tx_type.clone();
                v.points = d.entry.points;
                v.reference = d.entry.reference;
                v.origin_seq = Some(d.seq);
                v.reason = Some(format!("card: {err}"));
                self.journal.append(v)?;
                self.adjustment_refused = Some((a.seq, err.to_string()));
                // The card may have closed its session (a refused MAC).
                self.session.reauthenticate()?;
                Ok(false)
            }
        }
    }

    /// Lets the next operation go ahead although this tap found an earlier
    /// interrupted operation that went through: the customer really wants
    /// another one (the clerk confirmed).
    pub fn allow_repeat(&mut self) {
        self.allow_repeat = true;
    }

    /// Lets this tap ask the office online (card application v2.2) under
    /// the till's [`OnlineSettings`]: the card stays in the field while the
    /// till waits for the answer.
    pub fn use_online(&mut self, authorizer: &'a mut dyn OnlineAuthorizer) {
        self.online = Some(authorizer);
    }

    /// The office's approval code for the next operation: it is checked
    /// against the card, the operation and its amount before the card is
    /// asked anything, and, when it verifies, the operation is decided
    /// under [`authorize_approved`] and journaled with the code.
    pub fn use_approval(&mut self, approval: TillApproval) {
        self.approval = Some(approval);
    }

    /// Checks an approval code for `req` on the presented card (module
    /// `approval`): the hourly limit of wrong codes, the code itself, then
    /// whether this journal used it already.
    fn check_approval(&self, a: &TillApproval, req: &TxRequest) -> Result<Result<(), ApprovalRefusal>, TillError> {
        let now = self.session.now();
        let card = self.session.card();
        let wrong = self
            .journal
            .decision_times_since(now.saturating_sub(3599), &ApprovalRefusal::WRONG_CODES)?;
        let limit = WRONG_CODES_PER_HOUR as usize;
        if wrong.len() >= limit {
            return Ok(Err(ApprovalRefusal::TooManyAttempts {
                limit: WRONG_CODES_PER_HOUR,
                retry_at: wrong[wrong.len() - limit].saturating_add(3600),
            }));
        }
        if a.key.terminal_id() != self.journal.terminal_id() {
            return Ok(Err(ApprovalRefusal::OtherTerminal));
        }
        let (kind, amount) = match req.kind {
            TxKind::Earn => (ReferralKind::Earn, req.purchase_minor),
            TxKind::Redeem => (ReferralKind::Redeem, u64::from(req.points)),
            TxKind::RefundEarn | TxKind::RefundRedeem => (ReferralKind::Refund, u64::from(req.points)),
            // Issuer adjustments carry the office's own MAC: no code applies.
            TxKind::IssuerCredit | TxKind::IssuerDebit => return Ok(Err(ApprovalRefusal::NotIssued)),
        };
        if let Err(m) = a.code.verify(&a.key, &card.card_id, kind, amount, now) {
            return Ok(Err(match m {
                Mismatch::Kind { approves } => ApprovalRefusal::OtherKind {
                    approves: approves.name(),
                    asked: kind.name(),
                },
                Mismatch::Terminal => ApprovalRefusal::OtherTerminal,
                Mismatch::Card => ApprovalRefusal::OtherCard,
                Mismatch::Amount => ApprovalRefusal::OtherAmount,
                Mismatch::Expired { at } => ApprovalRefusal::Expired { at },
                _ => ApprovalRefusal::NotIssued,
            }));
        }
        if let Some(used) = self.journal.approval_use(&card.card_id, &a.code())? {
            return Ok(Err(ApprovalRefusal::AlreadyUsed { seq: used.seq }));
        }
        Ok(Ok(()))
    }

    /// Journals a refused decision.
    fn refuse(&mut self, mut e: Entry, decision: Decision) -> Result<TillOutcome, TillError> {
        e.verdict = Some(if matches!(decision, Decision::Refer(_)) {
            Verdict::Refer
        } else {
            Verdict::Decline
        });
        e.reason = Some(decision.code().to_owned());
        let rec = self.journal.append(e)?;
        Ok(TillOutcome::Refused {
            decision,
            decision_seq: rec.seq,
        })
    }

    /// Decides, journals, transacts, journals (module docs).
    fn run(
        &mut self,
        req: TxRequest,
        mut e: Entry,
        original: Option<LogRecord>,
        q: Option<Quote>,
    ) -> Result<TillOutcome, TillError> {
        if !self.completed_earlier.is_empty() && !self.allow_repeat {
            return Ok(TillOutcome::AlreadyDone {
                earlier: self.completed_earlier.clone(),
            });
        }
        let card = self.session.card().clone();
        e.tx_type = Some(req.kind.name().to_owned());
        e.points = Some(req.points);
        e.categories.clone_from(&req.categories);
        let mut authorized = None;
        let decision = match self.approval.take() {
            None => {
                let offline = authorize(
                    &self.config.policy,
                    &self.config.hotlist,
                    &card,
                    &req,
                    self.session.now(),
                );
                if self.online.is_some() && self.goes_online(&offline, &req) {
                    let reference = original.as_ref().map_or(0, |o| o.counter);
                    match self.ask_office(&req, reference)? {
                        Ok(Ok(pair)) => {
                            let d = authorize_approved(
                                &self.config.policy,
                                &self.config.hotlist,
                                &card,
                                &req,
                                self.session.now(),
                            );
                            if d.is_approved() {
                                e.authorization = Some(hex::encode_upper(pair.0.cryptogram));
                                authorized = Some(pair);
                            }
                            d
                        }
                        Ok(Err(declined)) => declined,
                        Err(()) => self.without_answer(offline),
                    }
                } else {
                    offline
                }
            }
            Some(a) => {
                if let Err(refusal) = self.check_approval(&a, &req)? {
                    return self.refuse(e, Decision::Decline(DeclineReason::Approval(refusal)));
                }
                let d = authorize_approved(
                    &self.config.policy,
                    &self.config.hotlist,
                    &card,
                    &req,
                    self.session.now(),
                );
                if d.is_approved() {
                    e.approval = Some(a.code());
                }
                d
            }
        };
        if !decision.is_approved() {
            return self.refuse(e, decision);
        }
        self.execute(req, e, original, q, authorized)
    }

    /// Whether an operation goes online ([`OnlineSettings`]).
    fn goes_online(&self, offline: &Decision, req: &TxRequest) -> bool {
        let s = &self.config.online;
        match offline {
            Decision::Refer(r) => !matches!(r, ReferReason::ClockBehindCard { .. }),
            Decision::Approve => s.mode == OnlineMode::Always || s.floor_points.is_some_and(|f| req.points >= f),
            // The till's redemption cap: the office may lift it, as a
            // voice code does.
            Decision::Decline(DeclineReason::AboveRedeemCap { .. }) => true,
            Decision::Decline(_) => false,
        }
    }

    /// Asks the card for its request and the office for its answer, with
    /// the card in the field. `Ok(Ok(..))`: approved, the request and the
    /// card's answer; `Ok(Err(decision))`: declined by the office (or the
    /// card cannot ask); `Err(())`: no answer in time.
    #[allow(clippy::type_complexity)]
    fn ask_office(
        &mut self,
        req: &TxRequest,
        reference: u32,
    ) -> Result<Result<Result<(AuthorizationRequest, AuthorizationResponse), Decision>, ()>, TillError> {
        let Some(authorizer) = self.online.as_mut() else {
            return Ok(Err(()));
        };
        let request = match self.session.request_authorization(req.kind, req.points, reference) {
            Ok(r) => r,
            Err(e @ (TerminalError::Transport(_) | TerminalError::NotGenuine)) => return Err(e.into()),
            // The card cannot ask (an older application): as without an
            // answer, in a fresh session.
            Err(_) => {
                self.session.reauthenticate()?;
                return Ok(Err(()));
            }
        };
        let card = self.session.card();
        let (card_id, key_version) = (card.card_id, card.key_version);
        match authorizer.authorize(&card_id, key_version, &request, self.config.online.timeout) {
            Ok(a) if a.response.approved => Ok(Ok(Ok((request, a.response)))),
            Ok(a) => Ok(Ok(Err(Decision::Decline(DeclineReason::office(&a.code, &a.message))))),
            Err(_) => Ok(Err(())),
        }
    }

    /// The decision when the office did not answer in time.
    fn without_answer(&self, offline: Decision) -> Decision {
        match (self.config.online.without_answer, offline) {
            (WithoutAnswer::Refer, d @ (Decision::Refer(_) | Decision::Decline(_))) => d,
            _ => Decision::Decline(DeclineReason::OfficeUnreachable),
        }
    }

    /// Journals the approved decision, transacts (with the office's answer
    /// when it went online), journals the card's record.
    fn execute(
        &mut self,
        req: TxRequest,
        mut e: Entry,
        original: Option<LogRecord>,
        q: Option<Quote>,
        authorized: Option<(AuthorizationRequest, AuthorizationResponse)>,
    ) -> Result<TillOutcome, TillError> {
        let card = self.session.card().clone();
        e.verdict = Some(Verdict::Approve);
        e.card_counter = Some(card.counter.saturating_add(1));
        let d = self.journal.append(e)?;
        self.session.set_next_seq(d.seq);
        let online = authorized.is_some();
        let result = match (&authorized, &original, req.kind) {
            (Some((request, answer)), _, _) => self.session.transact_authorized(request, answer),
            (None, Some(orig), _) => self.session.refund(orig),
            (None, None, TxKind::Earn) => self.session.earn(req.points),
            (None, None, _) => self.session.redeem(req.points),
        };
        match result {
            Ok(receipt) => {
                let mut c = Entry::from_card_record(
                    EntryKind::Completion,
                    self.session.now(),
                    &card.card_id,
                    &receipt.record,
                );
                c.purchase_minor = d.entry.purchase_minor;
                c.categories.clone_from(&d.entry.categories);
                self.journal.append(c)?;
                Ok(TillOutcome::Approved {
                    receipt,
                    quote: q,
                    decision_seq: d.seq,
                })
            }
            // Outcome unknown: the decision stays pending until the card is seen again.
            Err(err @ TerminalError::Interrupted(_)) => Err(err.into()),
            // The card refused a refund whose original has left its log, or
            // an amount above its own cap (established from its
            // authenticated state): the office decides — online when this
            // tap can ask, else by referral.
            Err(err @ (TerminalError::RefundOutsideLog | TerminalError::AboveCap)) if !online => {
                let mut v = self.card_entry(EntryKind::Void);
                v.card_counter = d.entry.card_counter;
                v.tx_type = d.entry.tx_type.clone();
                v.points = d.entry.points;
                v.origin_seq = Some(d.seq);
                v.reason = Some(match err {
                    TerminalError::RefundOutsideLog => "card: original outside the log".into(),
                    _ => format!("card: {err}"),
                });
                self.journal.append(v)?;
                let reference = d.entry.reference.unwrap_or(0);
                let mut e = self.card_entry(EntryKind::Decision);
                e.tx_type = d.entry.tx_type.clone();
                e.points = d.entry.points;
                e.purchase_minor = d.entry.purchase_minor;
                e.categories.clone_from(&d.entry.categories);
                e.basket.clone_from(&d.entry.basket);
                e.policy.clone_from(&d.entry.policy);
                e.campaigns.clone_from(&d.entry.campaigns);
                e.quote_inputs.clone_from(&d.entry.quote_inputs);
                e.quote_lines.clone_from(&d.entry.quote_lines);
                e.reference = d.entry.reference;
                let offline = matches!(err, TerminalError::RefundOutsideLog)
                    .then_some(Decision::Refer(ReferReason::RefundOutsideLog { original: reference }));
                if self.online.is_none() {
                    return match offline {
                        Some(d) => self.refuse(e, d),
                        None => Err(err.into()),
                    };
                }
                match self.ask_office(&req, reference)? {
                    Ok(Ok(pair)) => {
                        e.authorization = Some(hex::encode_upper(pair.0.cryptogram));
                        self.execute(req, e, original, q, Some(pair))
                    }
                    Ok(Err(declined)) => self.refuse(e, declined),
                    Err(()) => match offline {
                        Some(d) => {
                            let d = self.without_answer(d);
                            self.refuse(e, d)
                        }
                        None => Err(err.into()),
                    },
                }
            }
            // The card did not do it — established from its authenticated
            // state, not from a status word: the approval is void.
            Err(err) => {
                let mut v = self.card_entry(EntryKind::Void);
                v.card_counter = d.entry.card_counter;
                v.tx_type = d.entry.tx_type.clone();
                v.points = d.entry.points;
                v.origin_seq = Some(d.seq);
                v.reason = Some(format!("card: {err}"));
                self.journal.append(v)?;
                Err(err.into())
            }
        }
    }

    /// A purchase: the points follow from the amount, the categories, the
    /// policy's rates and today's campaigns.
    ///
    /// # Errors
    /// [`TillError`]; a refusal by policy is an `Ok(TillOutcome::Refused)`.
    pub fn purchase(&mut self, purchase_minor: u64, categories: &[String]) -> Result<TillOutcome, TillError> {
        self.purchase_with(purchase_minor, categories, Vec::new())
    }

    /// A purchase given as basket lines (category and amount each): the
    /// amount is their total, the categories theirs in order of first
    /// appearance, and the lines are journaled with the decision, so the
    /// office sees what was bought for how much.
    ///
    /// # Errors
    /// [`TillError::InvalidBasket`] for no lines, a line of 0 or totals
    /// beyond 64 bits; else as [`TillTap::purchase`].
    pub fn purchase_basket(&mut self, lines: &[BasketLine]) -> Result<TillOutcome, TillError> {
        let mut total: u64 = 0;
        let mut categories: Vec<String> = Vec::new();
        for l in lines {
            if l.amount_minor == 0 {
                return Err(TillError::InvalidBasket("a basket line of 0"));
            }
            total = total.checked_add(l.amount_minor).ok_or(TillError::InvalidBasket(
                "the lines add up to more than any purchase can be",
            ))?;
            if !categories.contains(&l.category) {
                categories.push(l.category.clone());
            }
        }
        if lines.is_empty() {
            return Err(TillError::InvalidBasket("a basket has at least one line"));
        }
        self.purchase_with(total, &categories, lines.to_vec())
    }

    fn purchase_with(
        &mut self,
        purchase_minor: u64,
        categories: &[String],
        basket: Vec<BasketLine>,
    ) -> Result<TillOutcome, TillError> {
        let q = self.quote(purchase_minor, categories);
        if q.total == 0 && purchase_minor > 0 {
            return self.sale_without_points(purchase_minor, categories, basket, q);
        }
        let req = TxRequest {
            kind: TxKind::Earn,
            points: q.total,
            purchase_minor,
            categories: categories.to_vec(),
        };
        let mut e = self.card_entry(EntryKind::Decision);
        e.purchase_minor = Some(purchase_minor);
        e.basket = basket;
        // What the ledger needs to recompute these points.
        let card = self.session.card();
        e.policy = Some(hex::encode(self.config.policy.digest));
        e.campaigns = self.config.campaigns.digest.map(hex::encode);
        e.quote_inputs = Some(crate::journal::QuoteInputs {
            tier: card.profile.tier,
            preferences: card.profile.preferences.clone(),
            birth_date: card.profile.birth_date.to_string(),
            visits: card.visits.count,
            last_visit_day: card.visits.last_day,
        });
        e.quote_lines = q.lines.iter().map(|l| (l.campaign_id.clone(), l.points)).collect();
        self.run(req, e, None, Some(q))
    }

    /// A purchase that earns nothing: the card's checks still apply (a
    /// blocked, expired card or a wrong clock is refused as for any
    /// purchase), a `D04` (zero points) becomes an approved `sale`.
    fn sale_without_points(
        &mut self,
        purchase_minor: u64,
        categories: &[String],
        basket: Vec<BasketLine>,
        q: Quote,
    ) -> Result<TillOutcome, TillError> {
        if !self.completed_earlier.is_empty() && !self.allow_repeat {
            return Ok(TillOutcome::AlreadyDone {
                earlier: self.completed_earlier.clone(),
            });
        }
        let card = self.session.card().clone();
        let req = TxRequest {
            kind: TxKind::Earn,
            points: 0,
            purchase_minor,
            categories: categories.to_vec(),
        };
        let mut e = self.card_entry(EntryKind::Decision);
        e.purchase_minor = Some(purchase_minor);
        e.categories = categories.to_vec();
        e.basket = basket;
        let decision = authorize(
            &self.config.policy,
            &self.config.hotlist,
            &card,
            &req,
            self.session.now(),
        );
        if decision != Decision::Decline(DeclineReason::ZeroAmount) {
            e.tx_type = Some(TxKind::Earn.name().to_owned());
            e.points = Some(0);
            return self.refuse(e, decision);
        }
        e.tx_type = Some(SALE.to_owned());
        e.points = Some(0);
        e.verdict = Some(Verdict::Approve);
        let d = self.journal.append(e)?;
        Ok(TillOutcome::ApprovedNoPoints {
            quote: q,
            decision_seq: d.seq,
        })
    }

    /// A redemption of `points`.
    ///
    /// # Errors
    /// As [`TillTap::purchase`].
    pub fn redeem(&mut self, points: u32) -> Result<TillOutcome, TillError> {
        let req = TxRequest {
            kind: TxKind::Redeem,
            points,
            purchase_minor: 0,
            categories: Vec::new(),
        };
        let e = self.card_entry(EntryKind::Decision);
        self.run(req, e, None, None)
    }

    /// Refunds the card's transaction with counter `original`: found in
    /// this journal or in the card's own log; refused if this journal
    /// already holds a refund of it.
    ///
    /// # Errors
    /// As [`TillTap::purchase`].
    pub fn refund(&mut self, original: u32) -> Result<TillOutcome, TillError> {
        let card = self.session.card().clone();
        let mut e = self.card_entry(EntryKind::Decision);
        e.reference = Some(original);
        let found = match self
            .journal
            .card_transaction(&card.card_id, original)?
            .and_then(|r| r.entry.card_record())
        {
            Some(r) => Some(r),
            None if original >= 1
                && original <= card.counter
                && card.counter - original < tessera_protocol::LOG_CAPACITY as u32 =>
            {
                self.session
                    .read_log((card.counter - original + 1) as u8)?
                    .filter(|r| r.counter == original)
            }
            None => None,
        };
        if found.is_none() && original >= 1 && original <= card.counter {
            // On the card once, but no longer in its 8-record log: the card
            // refuses such a refund offline (v2), the office decides.
            e.tx_type = Some("refund".into());
            return self.refuse(e, Decision::Refer(ReferReason::RefundOutsideLog { original }));
        }
        if found.as_ref().is_some_and(|r| r.kind.reversal().is_none()) {
            e.tx_type = Some("refund".into());
            return self.refuse(e, Decision::Decline(DeclineReason::RefundOfRefund { original }));
        }
        let Some(orig) = found.filter(|r| r.kind.reversal().is_some()) else {
            e.tx_type = Some("refund".into());
            return self.refuse(e, Decision::Decline(DeclineReason::RefundUnknownOriginal));
        };
        if self.journal.refund_of(&card.card_id, original)?.is_some() {
            e.tx_type = Some("refund".into());
            return self.refuse(e, Decision::Decline(DeclineReason::RefundAlreadyDone));
        }
        let kind = orig.kind.reversal().unwrap_or(TxKind::RefundEarn);
        let req = TxRequest {
            kind,
            points: orig.amount,
            purchase_minor: 0,
            categories: Vec::new(),
        };
        self.run(req, e, Some(orig), None)
    }
}

/// What the clerk reads to the office for a request delivered by voice
/// ([`VoiceAuthorizer`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoicePrompt {
    /// The card.
    pub card_id: CardId,
    /// The operation's kind.
    pub kind: TxKind,
    /// Its points.
    pub points: u32,
    /// Refunds: the refunded transaction's counter; 0 otherwise.
    pub original: u32,
    /// The till.
    pub terminal_id: u32,
    /// The reference code to read out (`XXXXX-XXXXX-XXXXX-XX`).
    pub reference: String,
}

/// The telephone delivery of an online authorization: the same card
/// request and the same card-checked answer as over the network
/// (`tessera_crypto::voice`). `ask` shows the clerk the [`VoicePrompt`] and
/// returns the answer code the office read back, or `None` when the clerk
/// gives up; a code that is not one (a typo its check character catches)
/// is asked for again, up to three times. The card checks the answer
/// itself: a wrong code changes nothing. The clerk's wait is the clerk's:
/// the till's timeout does not apply.
pub struct VoiceAuthorizer<F: FnMut(&VoicePrompt, Option<&str>) -> Option<String>> {
    /// Shows the prompt (and, after a typo, why the code was not taken)
    /// and returns the typed answer.
    pub ask: F,
    /// The till's terminal id.
    pub terminal_id: u32,
}

impl<F: FnMut(&VoicePrompt, Option<&str>) -> Option<String>> OnlineAuthorizer for VoiceAuthorizer<F> {
    fn authorize(
        &mut self,
        card_id: &CardId,
        _key_version: u8,
        request: &AuthorizationRequest,
        _timeout: std::time::Duration,
    ) -> Result<OnlineAnswer, String> {
        let prompt = VoicePrompt {
            card_id: *card_id,
            kind: request.kind,
            points: request.amount,
            original: request.reference,
            terminal_id: self.terminal_id,
            reference: tessera_crypto::voice::VoiceReference::new(request.cryptogram, request.counter).to_code(),
        };
        let mut why: Option<String> = None;
        for _ in 0..3 {
            let Some(text) = (self.ask)(&prompt, why.as_deref()) else {
                return Err("no answer code given".into());
            };
            match tessera_crypto::voice::VoiceAnswer::parse(&text) {
                Ok(a) => {
                    return Ok(OnlineAnswer {
                        code: "A00".into(),
                        message: "Approved by the office (voice)".into(),
                        response: AuthorizationResponse {
                            approved: true,
                            settled: 0,
                            issuer_mac: a.issuer_mac,
                        },
                    })
                }
                Err(e) => why = Some(e.to_string()),
            }
        }
        Err(why.unwrap_or_default())
    }
}
