//! The Tessera terminal library.
//!
//! A [`Terminal`] talks to cards through any
//! [`Transport`]. A tap yields a
//! [`Session`] — only obtainable after SELECT, mutual authentication and
//! offline verification of the card's signed profile — on which earns and
//! redeems produce [`Receipt`]s carrying the card's transaction certificate:
//!
//! ```
//! # use tessera_terminal::*;
//! # use tessera_crypto::{keys::IssuerKeys, rng::Rng};
//! # use tessera_simulator::SimCard;
//! # let keys = IssuerKeys::test().unwrap();
//! # let mut card = SimCard::manufacture([1; 8], &keys.card_perso_key(&[1; 8]), Rng::seeded(1)).unwrap();
//! # let profile = tessera_protocol::profile::Profile {
//! #     card_id: [1; 8], version: 1, name: "Ada".into(),
//! #     birth_date: tessera_protocol::profile::Date::new(1990, 1, 2).unwrap(),
//! #     home_city: "Lyon".into(), household: [0; 8], preferences: vec![], tier: 0,
//! #     valid_from: tessera_protocol::profile::Date::new(2026, 1, 1).unwrap(),
//! #     valid_until: tessera_protocol::profile::Date::new(2030, 1, 1).unwrap() };
//! # issuer::personalize(&mut card, &keys, profile, &issuer::IssueParams::default()).unwrap();
//! let mut terminal = Terminal::new(SoftwareSam::new(keys.terminal_keys()), SystemClock, 42);
//! let mut session = terminal.tap(&mut card)?;
//! println!("Hello {}", session.card().profile.name);
//! let receipt = session.earn(120)?;
//! assert_eq!(receipt.record.balance_after, 120);
//! # Ok::<(), TerminalError>(())
//! ```
//!
//! A till is more than a session: [`till::Till`] wraps a terminal with
//! its durable [`journal::Journal`], the office's signed policy, hotlist
//! and campaigns, and the issuer decisions waiting for cards. It journals
//! every decision before the card is touched, and it resolves a tap whose
//! answer was lost at the next tap. [`dir::TerminalDir`] opens a whole
//! till from the directory `tessera pos` keeps (see its table of files),
//! with every signed file checked, and [`station::DirTill`] makes each
//! clerk operation one call on it (read, purchase, redeem, refund, with a
//! pulled card resolved at the next tap; history, totals, status) — see
//! its example. Settlement batches are sealed from the journal
//! ([`batch`]); [`settlement`] applies the office's acknowledgements and
//! sync data to the till, and the `tessera-client` crate does the round
//! trips. The rules themselves ([`policy`], [`offers`]) and the batch
//! format are the crates `tessera-rules` and `tessera-settlement`, shared
//! with the ledger.
//!
//! Every exchange is recorded with its duration in an [`AuditTrace`]
//! ([`Terminal::take_trace`]). The terminal assumes no clock it was not
//! given ([`Clock`]) and no reader: integrators' tests use the simulator.

pub mod approval;
pub mod batch;
mod cache;
pub mod dir;
mod error;
pub mod issuer;
pub mod journal;
pub mod json;
pub mod settlement;
pub mod station;
pub use tessera_rules::{display, offers, policy, CardInfo};
mod sam;
pub mod till;
mod trace;

use std::collections::BTreeMap;
use std::time::Instant;

use tessera_crypto::channel::SecureChannel;
use tessera_crypto::rng::Rng;
use tessera_crypto::sign::profile_digest;
use tessera_protocol::apdu::{Command, Response};
use tessera_protocol::ins::{CLA_ISO, CLA_PROPRIETARY, CLA_SECURE};
use tessera_protocol::messages::{
    AckCommand, AdjustCommand, AuthCommand, AuthResponse, AuthorizationRequest, AuthorizationRequestCommand,
    AuthorizationResponse, CardId, KeyUpdateCommand, Lifecycle, LogRecord, SelectResponse, TxCommand, TxKind,
    UnblockCommand, UpdateProfileCommand, Velocity,
};
use tessera_protocol::profile::{Profile, SignedProfile};
use tessera_protocol::tlv::{tags, TlvList};
use tessera_protocol::{Ins, StatusWord, AID, APPLET_VERSION, CHALLENGE_LEN};
use tessera_transport::{Transport, TransportError};

pub use cache::ProfileCache;
pub use error::{PendingTx, TerminalError};
pub use sam::{Sam, SoftwareSam};
pub use trace::{AuditTrace, TraceEntry};

use rand_core::RngCore;

/// The terminal's source of wall-clock time.
pub trait Clock {
    /// Seconds since the Unix epoch.
    fn now(&self) -> u32;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u32 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
            .unwrap_or(0)
    }
}

/// A clock stopped at a given time (tests, reproducible traces).
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub u32);

impl Clock for FixedClock {
    fn now(&self) -> u32 {
        self.0
    }
}

/// Proof of a completed card transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The card.
    pub card_id: CardId,
    /// The card's key version (selects the certificate master).
    pub key_version: u8,
    /// The card's log record, with its certificate.
    pub record: LogRecord,
}

/// Whether an interrupted transaction happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// The card committed it; here is its record.
    Completed(LogRecord),
    /// The card never committed it.
    NotDone,
}

/// A terminal: a key holder, a clock, an identity and a sequence counter.
pub struct Terminal<S: Sam, C: Clock> {
    sam: S,
    clock: C,
    terminal_id: u32,
    store_id: u32,
    next_seq: u32,
    cache: ProfileCache,
    trace: AuditTrace,
    rng: Rng,
    unblocks: BTreeMap<(CardId, u8), Unblock>,
}

impl<S: Sam, C: Clock> Terminal<S, C> {
    /// A terminal with an in-memory profile cache, OS randomness and
    /// sequence numbers starting at 1.
    pub fn new(sam: S, clock: C, terminal_id: u32) -> Self {
        Self {
            sam,
            clock,
            terminal_id,
            store_id: 0,
            next_seq: 1,
            cache: ProfileCache::new(),
            trace: AuditTrace::default(),
            rng: Rng::Os,
            unblocks: BTreeMap::new(),
        }
    }

    /// Sets the store this terminal stands in (recorded in the card's visit
    /// history).
    pub fn with_store(mut self, store_id: u32) -> Self {
        self.store_id = store_id;
        self
    }

    /// The store this terminal stands in.
    pub fn store_id(&self) -> u32 {
        self.store_id
    }

    /// The terminal's clock reading.
    pub fn now(&self) -> u32 {
        self.clock.now()
    }

    /// Replaces the profile cache.
    pub fn with_cache(mut self, cache: ProfileCache) -> Self {
        self.cache = cache;
        self
    }

    /// Replaces the random source (seeded for reproducible traces).
    pub fn with_rng(mut self, rng: Rng) -> Self {
        self.rng = rng;
        self
    }

    /// Sets the next terminal sequence number (from the caller's durable
    /// store).
    pub fn set_next_seq(&mut self, seq: u32) {
        self.next_seq = seq;
    }

    /// The next terminal sequence number.
    pub fn next_seq(&self) -> u32 {
        self.next_seq
    }

    /// This terminal's id.
    pub fn terminal_id(&self) -> u32 {
        self.terminal_id
    }

    /// The profile cache.
    pub fn cache_mut(&mut self) -> &mut ProfileCache {
        &mut self.cache
    }

    /// The exchanges recorded since the last call, leaving the trace empty.
    pub fn take_trace(&mut self) -> AuditTrace {
        std::mem::take(&mut self.trace)
    }

    /// The exchanges recorded so far.
    pub fn trace(&self) -> &AuditTrace {
        &self.trace
    }

    /// Issuer decisions to deliver before authentication: an UNBLOCK
    /// (issuer sequence and MAC, from the office's sync feed) per card. A
    /// card with a queued unblock gets it right after SELECT, so a card
    /// whose authentication was blocked opens again at this tap.
    pub fn set_unblocks(&mut self, unblocks: impl IntoIterator<Item = (CardId, Unblock)>) {
        self.unblocks = unblocks.into_iter().map(|(c, u)| ((c, u.key_version), u)).collect();
    }

    /// Unblocks still queued (not yet confirmed by a successful
    /// authentication after delivery), by card and key version.
    pub fn unblocks(&self) -> impl Iterator<Item = (&CardId, &Unblock)> {
        self.unblocks.iter().map(|((c, _), u)| (c, u))
    }

    /// Starts a session with the card in `transport`: SELECT, mutual
    /// AUTHENTICATE, and READ PROFILE unless the profile is cached — two or
    /// three command APDUs (one more when an UNBLOCK is queued for the card).
    ///
    /// Before AUTHENTICATE the terminal checks that it holds keys for the
    /// card's issuer and key version; after it, that what SELECT reported
    /// (versions, issuer, profile digest) is what the card authenticated.
    ///
    /// # Errors
    /// [`TerminalError`] when the card is absent, not Tessera, blocked,
    /// not genuine, of another issuer ([`TerminalError::NotSetUpForCard`],
    /// no try spent), personalized under v1, tampered with on the link, or
    /// its profile does not verify.
    pub fn tap<T: Transport>(&mut self, mut transport: T) -> Result<Session<'_, S, C, T>, TerminalError> {
        let opened = open_session(self, &mut transport)?;
        let digest = opened.digest;
        let mut session = Session {
            terminal: self,
            transport,
            channel: opened.channel,
            card: CardInfo {
                card_id: opened.card_id,
                key_version: opened.key_version,
                balance: opened.auth.balance,
                counter: opened.auth.counter,
                last_record: opened.auth.last_record,
                profile: placeholder_profile(opened.card_id),
                profile_digest: digest,
                profile_cached: false,
                visits: opened.auth.visits,
                velocity: opened.auth.velocity,
            },
        };

        // §4.3 READ PROFILE, unless cached (looked up by the authenticated
        // digest).
        let issuer = session.terminal.sam.issuer_public_key().clone();
        let cached = session.terminal.cache.get(&digest, &issuer).cloned();
        let signed = match cached {
            Some(sp) => {
                session.card.profile_cached = true;
                sp
            }
            None => {
                let sp = session.read_profile(&digest)?;
                issuer.verify(&sp).map_err(|_| TerminalError::BadProfileSignature)?;
                sp
            }
        };
        if signed.profile.card_id != session.card.card_id {
            return Err(TerminalError::ProfileCardMismatch);
        }
        if !session.card.profile_cached {
            session.terminal.cache.insert(digest, signed.clone());
        }
        session.card.profile = signed.profile;
        Ok(session)
    }
}

/// An issuer-MAC'd UNBLOCK for one card (spec §4.14), as the office's sync
/// feed delivers it: for one key version of the card (around a key
/// rotation the office sends one per version the card may hold).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unblock {
    /// The card key version whose issuer key made the MAC.
    pub key_version: u8,
    /// Issuer sequence (greater than the card's stored one).
    pub seq: u32,
    /// Issuer MAC over it.
    pub issuer_mac: [u8; 8],
}

/// An issuer-MAC'd adjustment for one card (spec §4.16, v2.1), as the
/// office's sync feed delivers it: a credit or debit of points with the
/// card's next adjustment sequence, MAC'd for one key version of the card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Adjustment {
    /// The card.
    pub card_id: CardId,
    /// The card key version whose issuer key made the MAC.
    pub key_version: u8,
    /// The adjustment sequence (the card accepts only its next one).
    pub seq: u32,
    /// [`TxKind::IssuerCredit`] or [`TxKind::IssuerDebit`].
    pub kind: TxKind,
    /// Points.
    pub points: u32,
    /// Issuer MAC over `[seq]32 ‖ [kind]8 ‖ [points]32`.
    pub issuer_mac: [u8; 8],
}

/// What SELECT and AUTHENTICATE established.
struct Opened {
    card_id: CardId,
    key_version: u8,
    digest: [u8; 32],
    channel: SecureChannel,
    auth: AuthResponse,
}

/// §8.1 steps 1–2: SELECT, the key checks, a queued UNBLOCK, AUTHENTICATE,
/// and the comparison of SELECT's facts with the authenticated ones.
fn open_session<S: Sam, C: Clock, T: Transport>(
    terminal: &mut Terminal<S, C>,
    transport: &mut T,
) -> Result<Opened, TerminalError> {
    // §4.1 SELECT
    let cmd = Command::new(CLA_ISO, Ins::Select, 0x04, 0x00, AID.to_vec(), Some(256));
    let resp = exchange(transport, &mut terminal.trace, "SELECT", &cmd)?;
    match resp.sw {
        StatusWord::Ok => {}
        StatusWord::ApplicationBlocked => return Err(TerminalError::CardBlocked),
        StatusWord::NotFound => return Err(TerminalError::NotTessera),
        sw => return Err(TerminalError::Card { command: "SELECT", sw }),
    }
    let sel = SelectResponse::parse(&resp.data).map_err(|e| TerminalError::from(("SELECT", e)))?;
    match sel.lifecycle {
        Lifecycle::Active => {}
        Lifecycle::Personalization => return Err(TerminalError::NotPersonalized),
        Lifecycle::Blocked => return Err(TerminalError::CardBlocked),
    }
    // §8.1 step 2 (v2): never spend a try on a card this till has no key for.
    let Some(issuer_id) = sel.issuer_id else {
        return Err(TerminalError::NeedsReissue);
    };
    if sel.applet_version < APPLET_VERSION {
        return Err(TerminalError::NeedsReissue);
    }
    if issuer_id != terminal.sam.issuer_id() || !terminal.sam.has_key_version(sel.key_version) {
        return Err(TerminalError::NotSetUpForCard {
            issuer: hex::encode_upper(issuer_id),
            key_version: sel.key_version,
        });
    }
    let digest = sel
        .profile_digest
        .ok_or_else(|| TerminalError::malformed("SELECT", "no profile digest"))?;

    // §4.14 UNBLOCK, when the issuer sent one for this card.
    let queued_unblock = terminal.unblocks.get(&(sel.card_id, sel.key_version)).copied();
    if let Some(u) = queued_unblock {
        let data = UnblockCommand {
            seq: u.seq,
            issuer_mac: u.issuer_mac,
        }
        .to_bytes();
        let cmd = Command::new(CLA_PROPRIETARY, Ins::Unblock, 0, 0, data, None);
        let resp = exchange(transport, &mut terminal.trace, "UNBLOCK", &cmd)?;
        // 6A80: the card has seen this sequence already. Anything else
        // (even a 9000, which carries no MAC) is confirmed only by the
        // authentication that follows.
        if resp.sw == StatusWord::WrongData {
            terminal.unblocks.retain(|(c, _), _| *c != sel.card_id);
        }
    }

    // §4.2 AUTHENTICATE
    let mut host_challenge = [0u8; CHALLENGE_LEN];
    terminal.rng.fill_bytes(&mut host_challenge);
    let keys = terminal
        .sam
        .session_keys(&sel.card_id, sel.key_version, &host_challenge, &sel.card_challenge)?;
    let req = AuthCommand {
        host_challenge,
        host_cryptogram: keys.host_cryptogram(),
    };
    let expected_card_cryptogram = keys.card_cryptogram();
    let cmd = Command::new(CLA_PROPRIETARY, Ins::Authenticate, 0, 0, req.to_bytes(), Some(256));
    let resp = exchange(transport, &mut terminal.trace, "AUTHENTICATE", &cmd)?;
    match resp.sw {
        StatusWord::Ok => {}
        StatusWord::AuthFailed { remaining } => return Err(TerminalError::AuthRefused { remaining }),
        StatusWord::AuthBlocked => return Err(TerminalError::AuthBlocked),
        sw => {
            return Err(TerminalError::Card {
                command: "AUTHENTICATE",
                sw,
            })
        }
    }
    let channel = SecureChannel::new(keys);
    let body = channel.verify_response(&resp).map_err(|_| TerminalError::NotGenuine)?;
    let auth = AuthResponse::parse(&body).map_err(|e| TerminalError::from(("AUTHENTICATE", e)))?;
    if !tessera_crypto::ct_eq(&auth.card_cryptogram, &expected_card_cryptogram) {
        return Err(TerminalError::NotGenuine);
    }
    // v2: what the terminal acted on must be what the card authenticated.
    if auth.versions != [sel.applet_version, sel.key_version]
        || auth.issuer_id != sel.issuer_id
        || auth.profile_digest != sel.profile_digest
    {
        return Err(TerminalError::SelectTampered);
    }
    if auth
        .last_record
        .as_ref()
        .is_some_and(|r| r.counter != auth.counter || r.balance_after != auth.balance)
    {
        return Err(TerminalError::malformed(
            "AUTHENTICATE",
            "last record disagrees with balance",
        ));
    }
    if queued_unblock.is_some() {
        terminal.unblocks.retain(|(c, _), _| *c != sel.card_id);
    }
    Ok(Opened {
        card_id: sel.card_id,
        key_version: sel.key_version,
        digest,
        channel,
        auth,
    })
}

fn placeholder_profile(card_id: CardId) -> Profile {
    let d = tessera_protocol::profile::Date {
        year: 1900,
        month: 1,
        day: 1,
    };
    Profile {
        card_id,
        version: 0,
        name: String::new(),
        birth_date: d,
        home_city: String::new(),
        household: [0; 8],
        preferences: Vec::new(),
        tier: 0,
        valid_from: d,
        valid_until: d,
    }
}

/// Sends one command, records it in the trace, parses the response.
pub(crate) fn exchange<T: Transport>(
    transport: &mut T,
    trace: &mut AuditTrace,
    label: &'static str,
    cmd: &Command,
) -> Result<Response, TransportError> {
    let bytes = cmd.to_bytes();
    let start = Instant::now();
    let result = transport.transmit(&bytes);
    let duration = start.elapsed();
    trace.entries.push(TraceEntry {
        label,
        command: bytes,
        response: result.as_ref().ok().cloned(),
        duration,
    });
    let raw = result?;
    Response::parse(&raw).map_err(|e| TransportError::MalformedResponse(e.to_string()))
}

/// An authenticated session with one card.
///
/// Obtained only from [`Terminal::tap`]; holds the secure channel, so
/// every command it sends is MAC'd and every answer checked.
pub struct Session<'t, S: Sam, C: Clock, T: Transport> {
    terminal: &'t mut Terminal<S, C>,
    transport: T,
    channel: SecureChannel,
    card: CardInfo,
}

impl<S: Sam, C: Clock, T: Transport> Session<'_, S, C, T> {
    /// The card as authenticated (updated by every transaction).
    pub fn card(&self) -> &CardInfo {
        &self.card
    }

    /// Makes the next transaction carry terminal sequence number `seq`
    /// (the journal's write-ahead record).
    pub fn set_next_seq(&mut self, seq: u32) {
        self.terminal.next_seq = seq;
    }

    /// The terminal's clock reading.
    pub fn now(&self) -> u32 {
        self.terminal.clock.now()
    }

    fn secure(
        &mut self,
        label: &'static str,
        ins: Ins,
        p1: u8,
        data: &[u8],
        le: usize,
    ) -> Result<Response, TransportError> {
        let cmd = self
            .channel
            .protect_command(CLA_SECURE, ins.into(), p1, 0, data, Some(le));
        exchange(&mut self.transport, &mut self.terminal.trace, label, &cmd)
    }

    fn verified(&self, label: &'static str, resp: &Response) -> Result<TlvList, TerminalError> {
        let body = self
            .channel
            .verify_response(resp)
            .map_err(|_| TerminalError::NotGenuine)?;
        TlvList::parse(&body).map_err(|e| TerminalError::from((label, e)))
    }

    fn read_profile(&mut self, digest: &[u8; 32]) -> Result<SignedProfile, TerminalError> {
        let resp = self.secure("READ PROFILE", Ins::ReadProfile, 0, &[], 65_536)?;
        if resp.sw != StatusWord::Ok {
            return Err(TerminalError::Card {
                command: "READ PROFILE",
                sw: resp.sw,
            });
        }
        let l = self.verified("READ PROFILE", &resp)?;
        let ct = l
            .require(tags::ENCRYPTED)
            .map_err(|e| TerminalError::from(("READ PROFILE", e)))?;
        let blob = self.channel.decrypt(ct).map_err(|_| TerminalError::NotGenuine)?;
        if profile_digest(&blob) != *digest {
            return Err(TerminalError::malformed(
                "READ PROFILE",
                "profile does not match its digest",
            ));
        }
        SignedProfile::parse(&blob).map_err(|_| TerminalError::BadProfileSignature)
    }

    /// §4.4 EARN: adds points. One command APDU.
    ///
    /// # Errors
    /// [`TerminalError::Interrupted`] when the answer was lost (resolve it
    /// at the next tap), the card's refusals as typed variants.
    pub fn earn(&mut self, points: u32) -> Result<Receipt, TerminalError> {
        self.transact(TxKind::Earn, points, 0, None, None)
    }

    /// §4.5 REDEEM: spends points. One command APDU.
    ///
    /// # Errors
    /// As [`Session::earn`]; [`TerminalError::InsufficientBalance`] without
    /// talking to the card when the balance is known to be too low.
    pub fn redeem(&mut self, points: u32) -> Result<Receipt, TerminalError> {
        self.transact(TxKind::Redeem, points, 0, None, None)
    }

    /// §4.9 REFUND: reverses the earn or redemption `original` of this card
    /// (a record the caller knows, from a receipt, a journal or the card's
    /// log): a new card transaction for the same points in the other
    /// direction, whose certificate names the original counter. One command
    /// APDU. The card checks (applet-spec §4.9) that the original is in its
    /// log, of the matching kind, and not refunded beyond its amount; the
    /// answer to a refusal is established from the card's authenticated
    /// state like any other transaction's.
    ///
    /// # Errors
    /// [`TerminalError::InvalidRequest`] when `original` is a refund itself
    /// or not older than the card's counter;
    /// [`TerminalError::RefundOutsideLog`], [`TerminalError::RefundKindMismatch`],
    /// [`TerminalError::RefundExceedsOriginal`] when the card refuses it;
    /// otherwise as [`Session::earn`].
    pub fn refund(&mut self, original: &LogRecord) -> Result<Receipt, TerminalError> {
        let kind = original
            .kind
            .reversal()
            .ok_or(TerminalError::InvalidRequest("a refund cannot be refunded"))?;
        if original.counter == 0 || original.counter > self.card.counter {
            return Err(TerminalError::InvalidRequest(
                "the original transaction is not on this card",
            ));
        }
        self.transact(kind, original.amount, original.counter, None, None)
    }

    /// §4.10 ACKNOWLEDGE SETTLEMENT: relays the back office's decision that
    /// the card's transactions up to `counter` are settled, with the
    /// issuer's MAC over it (only the office can make one), which restarts
    /// the card's offline velocity counters. Returns the counters after the
    /// command.
    ///
    /// # Errors
    /// [`TerminalError::InvalidRequest`] for a counter beyond the card's;
    /// card and transport errors.
    pub fn acknowledge_settlement(&mut self, counter: u32, issuer_mac: [u8; 8]) -> Result<Velocity, TerminalError> {
        if counter > self.card.counter {
            return Err(TerminalError::InvalidRequest(
                "settlement acknowledged beyond the card's counter",
            ));
        }
        let data = AckCommand { counter, issuer_mac }.to_bytes();
        let resp = self.secure("ACK SETTLEMENT", Ins::AckSettlement, 0, &data, 256)?;
        if resp.sw != StatusWord::Ok {
            return Err(TerminalError::Card {
                command: "ACK SETTLEMENT",
                sw: resp.sw,
            });
        }
        let l = self.verified("ACK SETTLEMENT", &resp)?;
        let raw = l
            .require(tags::VELOCITY)
            .map_err(|e| TerminalError::from(("ACK SETTLEMENT", e)))?;
        let v = Velocity::parse(raw).map_err(|e| TerminalError::from(("ACK SETTLEMENT", e)))?;
        self.card.velocity = v;
        Ok(v)
    }

    /// §4.16 ISSUER ADJUST (v2.1): relays the office's credit or debit of
    /// points to the card, with the issuer MAC over its adjustment
    /// sequence, kind and points (only the office can make one). One
    /// command APDU; the card certifies the record like any transaction's,
    /// its reference being the adjustment sequence. The outcome is
    /// established like an earn's (§8.4): a refusal or a lost answer is
    /// read from the card's authenticated state.
    ///
    /// # Errors
    /// [`TerminalError::InvalidRequest`] when the adjustment is for another
    /// card or key version, or is no adjustment;
    /// [`TerminalError::InsufficientBalance`] for a debit above the
    /// balance; [`TerminalError::Card`] when the card refuses it (a wrong
    /// MAC, or a sequence that is not the card's next); otherwise as
    /// [`Session::earn`].
    pub fn adjust(&mut self, adjustment: &Adjustment) -> Result<Receipt, TerminalError> {
        if adjustment.card_id != self.card.card_id {
            return Err(TerminalError::InvalidRequest("the adjustment is for another card"));
        }
        if adjustment.key_version != self.card.key_version {
            return Err(TerminalError::InvalidRequest(
                "the adjustment is MAC'd for another key version of the card",
            ));
        }
        if !adjustment.kind.is_adjustment() || adjustment.seq == 0 {
            return Err(TerminalError::InvalidRequest("not an issuer adjustment"));
        }
        self.transact(
            adjustment.kind,
            adjustment.points,
            adjustment.seq,
            Some(adjustment.issuer_mac),
            None,
        )
    }

    /// §4.17 AUTHORIZATION REQUEST (v2.2): asks the card for its request
    /// of the office's online decision on an operation (kind, points and,
    /// for a refund, the reversed counter), to be sent to the office as it
    /// is. One command APDU; the card keeps the request in this session for
    /// [`Session::transact_authorized`].
    ///
    /// # Errors
    /// [`TerminalError::InvalidRequest`] for an adjustment, no points, or a
    /// refund without its reference; [`TerminalError::Card`] when the card
    /// refuses (`6985` on a card that cannot check the answer: one
    /// personalized under v1, or a card without application 2.2, `6D00`);
    /// [`TerminalError::NotGenuine`] when the answer is not the card's, or
    /// is not about what was asked.
    pub fn request_authorization(
        &mut self,
        kind: TxKind,
        amount: u32,
        reference: u32,
    ) -> Result<AuthorizationRequest, TerminalError> {
        if kind.is_adjustment() || amount == 0 || kind.is_refund() != (reference != 0) {
            return Err(TerminalError::InvalidRequest(
                "an authorization request is for an earn, a redemption or a refund of some points",
            ));
        }
        let data = AuthorizationRequestCommand {
            amount,
            terminal_id: self.terminal.terminal_id,
            reference,
        }
        .to_bytes();
        let label = "AUTHORIZATION REQUEST";
        let resp = self.secure(label, Ins::AuthorizationRequest, kind.to_byte(), &data, 256)?;
        if resp.sw != StatusWord::Ok {
            return Err(TerminalError::Card {
                command: label,
                sw: resp.sw,
            });
        }
        let l = self.verified(label, &resp)?;
        let raw = l
            .require(tags::AUTH_REQUEST)
            .map_err(|e| TerminalError::from((label, e)))?;
        let request = AuthorizationRequest::parse(raw).map_err(|e| TerminalError::from((label, e)))?;
        if (
            request.counter,
            request.kind,
            request.amount,
            request.terminal_id,
            request.reference,
            request.balance,
        ) != (
            self.card.counter,
            kind,
            amount,
            self.terminal.terminal_id,
            reference,
            self.card.balance,
        ) {
            return Err(TerminalError::NotGenuine);
        }
        Ok(request)
    }

    /// The operation of an authorization request, made with the office's
    /// answer to it (spec §4.17): the card checks the answer's issuer MAC
    /// against the request it keeps in this session, and with an approval
    /// lifts its per-transaction caps and, for a refund, its log window. The
    /// outcome is established as for [`Session::earn`].
    ///
    /// # Errors
    /// [`TerminalError::DeclinedOnline`] when the answer is a decline (the
    /// card is not asked); [`TerminalError::Card`] when the card refuses
    /// the answer (`6988` a wrong MAC, `6A80` another operation, `6985` no
    /// request in this session); otherwise as [`Session::earn`].
    pub fn transact_authorized(
        &mut self,
        request: &AuthorizationRequest,
        answer: &AuthorizationResponse,
    ) -> Result<Receipt, TerminalError> {
        if !answer.approved {
            return Err(TerminalError::DeclinedOnline);
        }
        self.transact(
            request.kind,
            request.amount,
            request.reference,
            None,
            Some(answer.clone()),
        )
    }

    fn transact(
        &mut self,
        kind: TxKind,
        amount: u32,
        reference: u32,
        issuer_mac: Option<[u8; 8]>,
        authorization: Option<AuthorizationResponse>,
    ) -> Result<Receipt, TerminalError> {
        if amount == 0 {
            return Err(TerminalError::InvalidRequest("the amount must be at least 1 point"));
        }
        if !kind.is_credit() && amount > self.card.balance {
            return Err(TerminalError::InsufficientBalance {
                balance: self.card.balance,
            });
        }
        if kind.is_credit() && self.card.balance.checked_add(amount).is_none() {
            return Err(TerminalError::BalanceOverflow);
        }
        let seq = self.terminal.next_seq;
        // A sequence number is spent by every attempt that may reach a card.
        self.terminal.next_seq = seq.wrapping_add(1);
        let tx = TxCommand {
            amount,
            terminal_id: self.terminal.terminal_id,
            terminal_seq: seq,
            time: self.terminal.clock.now(),
            store_id: self.terminal.store_id,
            reference,
            authorization,
        };
        let online = tx.authorization.is_some();
        let (label, ins, p1) = match kind {
            TxKind::Earn => ("EARN", Ins::Earn, 0),
            TxKind::Redeem => ("REDEEM", Ins::Redeem, 0),
            TxKind::RefundEarn => ("REFUND", Ins::Refund, 0x03),
            TxKind::RefundRedeem => ("REFUND", Ins::Refund, 0x04),
            TxKind::IssuerCredit => ("ISSUER ADJUST", Ins::IssuerAdjust, 0x05),
            TxKind::IssuerDebit => ("ISSUER ADJUST", Ins::IssuerAdjust, 0x06),
        };
        let data = match issuer_mac {
            Some(issuer_mac) => AdjustCommand {
                amount,
                terminal_id: tx.terminal_id,
                terminal_seq: seq,
                time: tx.time,
                seq: reference,
                issuer_mac,
            }
            .to_bytes(),
            None => tx.to_bytes(),
        };
        let pending = PendingTx {
            card_id: self.card.card_id,
            expected_counter: self.card.counter.wrapping_add(1),
            kind,
            amount,
            terminal_id: tx.terminal_id,
            terminal_seq: seq,
        };
        let resp = self.secure(label, ins, p1, &data, 256);
        let expected_balance = if kind.is_credit() {
            self.card.balance.checked_add(amount)
        } else {
            self.card.balance.checked_sub(amount)
        };
        let verified = match &resp {
            Ok(r) if r.sw == StatusWord::Ok => self
                .verified(label, r)
                .ok()
                .and_then(|l| l.require(tags::LOG_RECORD).ok().map(LogRecord::parse))
                .and_then(Result::ok),
            _ => None,
        };
        // Only a 9000 whose R-MAC verifies and whose record is exactly what
        // was asked is an answer. Anything else — a refusal (its status word
        // carries no MAC and may be forged on the link), a damaged or
        // missing answer — is established from the card's authenticated
        // state (§8.4), never assumed.
        let rec = match verified {
            Some(rec)
                if rec.counter == pending.expected_counter
                    && rec.kind == kind
                    && rec.amount == amount
                    && Some(rec.balance_after) == expected_balance
                    && rec.terminal_id == tx.terminal_id
                    && rec.terminal_seq == seq
                    && rec.time == tx.time
                    && rec.reference == reference
                    && rec.online == online =>
            {
                rec
            }
            _ => {
                let claimed = resp.ok().map(|r| r.sw);
                return self.establish(label, pending, claimed);
            }
        };
        self.card.balance = rec.balance_after;
        self.card.counter = rec.counter;
        self.card.last_record = Some(rec.clone());
        // Mirror the card's own bookkeeping (spec §4.4, §4.5).
        match kind {
            TxKind::Earn => {
                self.card.visits.count = self.card.visits.count.saturating_add(1);
                self.card.visits.last_day = tx.time / 86_400;
                self.card.visits.last_store = tx.store_id;
            }
            TxKind::Redeem => {
                self.card.velocity.unsettled_redeems = self.card.velocity.unsettled_redeems.saturating_add(1);
                self.card.velocity.unsettled_points = self.card.velocity.unsettled_points.saturating_add(amount);
            }
            TxKind::RefundEarn | TxKind::RefundRedeem | TxKind::IssuerCredit | TxKind::IssuerDebit => {}
        }
        // An online approval that said "settled up to N" restarted the
        // card's counters from its log (§4.17); until the next
        // authentication this view keeps the higher, pre-recount values
        // (the safe side) and only the settled counter moves.
        if let Some(a) = &tx.authorization {
            if a.settled > self.card.velocity.settled_counter {
                self.card.velocity.settled_counter = a.settled;
            }
        }
        Ok(Receipt {
            card_id: self.card.card_id,
            key_version: self.card.key_version,
            record: rec,
        })
    }

    /// §8.4 (v2): the answer to a transaction was not a verified `9000`.
    /// While the card is still in the field, select and authenticate it
    /// again (two APDUs) and read the outcome from its authenticated counter
    /// and log; if it is gone, the outcome stays unknown
    /// ([`TerminalError::Interrupted`]) until the next tap.
    fn establish(
        &mut self,
        label: &'static str,
        pending: PendingTx,
        claimed: Option<StatusWord>,
    ) -> Result<Receipt, TerminalError> {
        if self.reauthenticate().is_err() {
            return Err(TerminalError::Interrupted(Box::new(pending)));
        }
        match self.resolve(&pending) {
            Ok(Resolution::Completed(rec)) => Ok(Receipt {
                card_id: self.card.card_id,
                key_version: self.card.key_version,
                record: rec,
            }),
            Ok(Resolution::NotDone) => Err(match claimed {
                Some(StatusWord::InsufficientBalance) => TerminalError::InsufficientBalance {
                    balance: self.card.balance,
                },
                Some(StatusWord::BalanceOverflow) => TerminalError::BalanceOverflow,
                Some(StatusWord::AboveCap) => TerminalError::AboveCap,
                Some(StatusWord::CounterExhausted) => TerminalError::CounterExhausted,
                Some(StatusWord::ReferenceNotFound) => TerminalError::RefundOutsideLog,
                Some(StatusWord::ReferenceMismatch) => TerminalError::RefundKindMismatch,
                Some(StatusWord::RefundExceedsOriginal) => TerminalError::RefundExceedsOriginal,
                Some(sw) => TerminalError::Card { command: label, sw },
                None => TerminalError::Unanswered { command: label },
            }),
            Err(_) => Err(TerminalError::Interrupted(Box::new(pending))),
        }
    }

    /// SELECT and AUTHENTICATE again on the same link, and take the card's
    /// authenticated state as this session's.
    ///
    /// # Errors
    /// As [`Terminal::tap`]; [`TerminalError::InvalidRequest`] when another
    /// card answers.
    pub fn reauthenticate(&mut self) -> Result<(), TerminalError> {
        let opened = open_session(self.terminal, &mut self.transport)?;
        if opened.card_id != self.card.card_id {
            return Err(TerminalError::InvalidRequest("another card was presented"));
        }
        self.channel = opened.channel;
        self.card.balance = opened.auth.balance;
        self.card.counter = opened.auth.counter;
        self.card.last_record = opened.auth.last_record;
        self.card.visits = opened.auth.visits;
        self.card.velocity = opened.auth.velocity;
        self.card.profile_digest = opened.digest;
        self.card.key_version = opened.key_version;
        Ok(())
    }

    /// §4.6 READ LOG: record `n` (1 = newest), `None` past the end.
    ///
    /// # Errors
    /// [`TerminalError`] on transport or protocol failure; `n` outside 1–8
    /// is [`TerminalError::InvalidRequest`].
    pub fn read_log(&mut self, n: u8) -> Result<Option<LogRecord>, TerminalError> {
        if n == 0 || usize::from(n) > tessera_protocol::LOG_CAPACITY {
            return Err(TerminalError::InvalidRequest("log records are numbered 1 to 8"));
        }
        let resp = self.secure("READ LOG", Ins::ReadLog, n, &[], 256)?;
        match resp.sw {
            StatusWord::Ok => {}
            StatusWord::RecordNotFound => return Ok(None),
            sw => {
                return Err(TerminalError::Card {
                    command: "READ LOG",
                    sw,
                })
            }
        }
        let l = self.verified("READ LOG", &resp)?;
        let rec = l
            .require(tags::LOG_RECORD)
            .map_err(|e| TerminalError::from(("READ LOG", e)))?;
        Ok(Some(
            LogRecord::parse(rec).map_err(|e| TerminalError::from(("READ LOG", e)))?,
        ))
    }

    /// The whole log, newest first (up to 8 records).
    ///
    /// # Errors
    /// As [`Session::read_log`].
    pub fn read_full_log(&mut self) -> Result<Vec<LogRecord>, TerminalError> {
        let mut out = Vec::new();
        for n in 1..=tessera_protocol::LOG_CAPACITY as u8 {
            match self.read_log(n)? {
                Some(r) => out.push(r),
                None => break,
            }
        }
        Ok(out)
    }

    /// Tells whether an interrupted transaction happened, from the card's
    /// own log: never guess, never retry blindly.
    ///
    /// # Errors
    /// [`TerminalError::InvalidRequest`] if `pending` is for another card;
    /// transport errors while reading the log.
    pub fn resolve(&mut self, pending: &PendingTx) -> Result<Resolution, TerminalError> {
        if pending.card_id != self.card.card_id {
            return Err(TerminalError::InvalidRequest("pending transaction is for another card"));
        }
        if self.card.counter < pending.expected_counter {
            return Ok(Resolution::NotDone);
        }
        let matches = |r: &LogRecord| {
            r.counter == pending.expected_counter
                && r.terminal_id == pending.terminal_id
                && r.terminal_seq == pending.terminal_seq
                && r.kind == pending.kind
                && r.amount == pending.amount
        };
        if let Some(r) = self
            .card
            .last_record
            .as_ref()
            .filter(|r| r.counter == pending.expected_counter)
        {
            return Ok(if matches(r) {
                Resolution::Completed(r.clone())
            } else {
                Resolution::NotDone
            });
        }
        let back = self.card.counter - pending.expected_counter + 1;
        if back > tessera_protocol::LOG_CAPACITY as u32 {
            return Err(TerminalError::InvalidRequest("the record has left the card's log"));
        }
        match self.read_log(back as u8)? {
            Some(r) if r.counter == pending.expected_counter => Ok(if matches(&r) {
                Resolution::Completed(r)
            } else {
                Resolution::NotDone
            }),
            _ => Err(TerminalError::malformed(
                "READ LOG",
                "log does not hold the expected counter",
            )),
        }
    }

    /// §4.13 UPDATE PROFILE: writes a newer signed profile version to the
    /// card (a profile update from the back office), with the issuer's MAC
    /// over the exact blob, which the card checks. The signature and the
    /// card binding are verified here first; the blob travels encrypted.
    ///
    /// # Errors
    /// [`TerminalError::BadProfileSignature`],
    /// [`TerminalError::ProfileCardMismatch`],
    /// [`TerminalError::InvalidRequest`] when it is not newer; card and
    /// transport errors.
    pub fn update_profile(&mut self, signed: &SignedProfile, issuer_mac: [u8; 8]) -> Result<(), TerminalError> {
        self.terminal
            .sam
            .issuer_public_key()
            .verify(signed)
            .map_err(|_| TerminalError::BadProfileSignature)?;
        if signed.profile.card_id != self.card.card_id {
            return Err(TerminalError::ProfileCardMismatch);
        }
        if signed.profile.version <= self.card.profile.version {
            return Err(TerminalError::InvalidRequest(
                "the card already holds this profile version or a newer one",
            ));
        }
        let blob = signed.to_bytes();
        let ciphertext = self.channel.encrypt(&blob);
        let data = UpdateProfileCommand { ciphertext, issuer_mac }.to_bytes();
        let resp = self.secure("UPDATE PROFILE", Ins::UpdateProfile, 0, &data, 256)?;
        if resp.sw != StatusWord::Ok {
            return Err(TerminalError::Card {
                command: "UPDATE PROFILE",
                sw: resp.sw,
            });
        }
        let l = self.verified("UPDATE PROFILE", &resp)?;
        let digest: [u8; 32] = l
            .array(tags::PROFILE_DIGEST)
            .map_err(|e| TerminalError::from(("UPDATE PROFILE", e)))?;
        if digest != profile_digest(&blob) {
            return Err(TerminalError::malformed(
                "UPDATE PROFILE",
                "card stored another profile",
            ));
        }
        self.terminal.cache.insert(digest, signed.clone());
        self.card.profile = signed.profile.clone();
        self.card.profile_digest = digest;
        Ok(())
    }

    /// §4.15 KEY UPDATE: relays the office's command that moves the card to
    /// a newer key version (the new keys are encrypted for the card; the
    /// terminal cannot read them), then selects and authenticates the card
    /// again under the new version. Returns the new key version.
    ///
    /// # Errors
    /// [`TerminalError::InvalidRequest`] when the card is at that version
    /// already or this terminal holds no master of the new version (the
    /// card would be unusable here); the card's refusals; transport errors.
    pub fn update_keys(&mut self, update: &KeyUpdateCommand) -> Result<u8, TerminalError> {
        if update.key_version <= self.card.key_version {
            return Err(TerminalError::InvalidRequest(
                "the card already holds this key version or a newer one",
            ));
        }
        if !self.terminal.sam.has_key_version(update.key_version) {
            return Err(TerminalError::InvalidRequest(
                "this terminal holds no master of the new key version",
            ));
        }
        let resp = self.secure("KEY UPDATE", Ins::KeyUpdate, 0, &update.to_bytes(), 256)?;
        if resp.sw != StatusWord::Ok {
            return Err(TerminalError::Card {
                command: "KEY UPDATE",
                sw: resp.sw,
            });
        }
        let l = self.verified("KEY UPDATE", &resp)?;
        let versions: [u8; 2] = l
            .array(tags::VERSIONS)
            .map_err(|e| TerminalError::from(("KEY UPDATE", e)))?;
        if versions[1] != update.key_version {
            return Err(TerminalError::malformed(
                "KEY UPDATE",
                "card reports another key version",
            ));
        }
        // The card closed the session: open one under the new keys.
        self.reauthenticate()?;
        self.card.key_version = versions[1];
        Ok(versions[1])
    }

    /// §4.8 BLOCK: blocks the card for good (hotlisted card at the till).
    ///
    /// # Errors
    /// [`TerminalError`] on transport or protocol failure.
    pub fn block(mut self) -> Result<(), TerminalError> {
        let resp = self.secure("BLOCK", Ins::Block, 0, &[], 256)?;
        if resp.sw != StatusWord::Ok {
            return Err(TerminalError::Card {
                command: "BLOCK",
                sw: resp.sw,
            });
        }
        self.verified("BLOCK", &resp)?;
        Ok(())
    }
}
