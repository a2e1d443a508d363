//! The Tessera loyalty card application (spec §4–§6) as a sans-I/O state
//! machine: [`Applet::handle`] takes command APDU bytes and returns response
//! APDU bytes. Persistent memory comes in through [`Storage`], randomness
//! through a [`rand_core`] generator; there are no files, sockets or clocks
//! in here.
//!
//! Every command is parsed into a typed form first, then executed; each
//! handler names the spec section it implements.

mod state;
pub mod storage;

use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use tessera_crypto::cert::{certificate, request_cryptogram};
use tessera_crypto::channel::{SecureChannel, SessionKeys};
use tessera_crypto::keys::{decrypt_new_keys, issuer_mac, key_update_key, IssuerDecision};
use tessera_crypto::sign::profile_digest;
use tessera_crypto::{CryptoError, Key};
use tessera_protocol::apdu::{Command, Response};
use tessera_protocol::ins::{CLA_ISO, CLA_PROPRIETARY, CLA_SECURE};
use tessera_protocol::messages::{
    AckCommand, AdjustCommand, AuthCommand, AuthResponse, AuthorizationRequest, AuthorizationRequestCommand,
    AuthorizationResponse, KeyUpdateCommand, Lifecycle, LogRecord, NewCardKeys, PersonalizeData, SelectResponse,
    TxCommand, TxKind, UnblockCommand, UpdateProfileCommand, Velocity,
};
use tessera_protocol::profile::{SignedProfile, MAX_PROFILE_BLOB};
use tessera_protocol::tlv::{encode, tags, TlvList};
use tessera_protocol::{Ins, StatusWord, AID, APPLET_VERSION, CHALLENGE_LEN, LOG_CAPACITY};

pub use state::CardState;
pub use storage::{Field, MemoryStorage, Storage, StorageError};

/// Errors when bringing the applet up from its storage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CardError {
    /// A persistent field is missing or holds an impossible value.
    #[error("corrupt card memory: field {0}")]
    CorruptState(String),
    /// The storage refused the write.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Transient (RAM) session state, lost on power-off or reset (spec §5.1).
enum Session {
    /// Nothing selected.
    Idle,
    /// Selected; the challenge is single-use and consumed by AUTHENTICATE or
    /// PERSONALIZE.
    Selected { challenge: Option<[u8; CHALLENGE_LEN]> },
    /// Mutually authenticated, with its secure channel and, after an
    /// AUTHORIZATION REQUEST (v2.2), the request that awaits the office's
    /// answer (taken by the next EARN, REDEEM or REFUND, whatever its
    /// outcome).
    Authenticated {
        channel: Box<SecureChannel>,
        pending: Option<Box<AuthorizationRequest>>,
    },
}

/// Result of a command handler: a response, or a status word alone.
type Outcome = Result<Response, StatusWord>;

/// The card application.
pub struct Applet<S: Storage, R: RngCore + CryptoRng> {
    storage: S,
    rng: R,
    state: CardState,
    session: Session,
    /// Set when a commit failed with a power loss: the card is dead until
    /// the host builds a new applet from the storage.
    powered_off: bool,
}

impl<S: Storage, R: RngCore + CryptoRng> Applet<S, R> {
    /// Powers the applet up over `storage`, which must have been
    /// manufactured ([`Applet::manufacture`]).
    ///
    /// # Errors
    /// [`CardError::CorruptState`] when the storage does not hold a valid
    /// card.
    pub fn new(storage: S, rng: R) -> Result<Self, CardError> {
        let state = CardState::load(&storage)?;
        Ok(Self {
            storage,
            rng,
            state,
            session: Session::Idle,
            powered_off: false,
        })
    }

    /// Writes a blank card into `storage` (spec §6.3): life-cycle
    /// personalization, the card id and its transport key.
    ///
    /// # Errors
    /// [`CardError::Storage`] if the commit fails.
    pub fn manufacture(storage: &mut S, card_id: [u8; 8], perso_key: &Key) -> Result<(), CardError> {
        let mut writes = vec![
            (Field::Lifecycle, vec![Lifecycle::Personalization.to_byte()]),
            (Field::CardId, card_id.to_vec()),
            (Field::KeyVersion, vec![0]),
            (Field::KeyPerso, perso_key.bytes().to_vec()),
            (Field::KeyAuth, Vec::new()),
            (Field::KeyCert, Vec::new()),
            (Field::Balance, 0u32.to_be_bytes().to_vec()),
            (Field::Counter, 0u32.to_be_bytes().to_vec()),
            (Field::Caps, vec![0; 8]),
            (Field::AuthFailures, vec![0]),
            (Field::AuthLimit, vec![0]),
            (Field::Profile, Vec::new()),
        ];
        writes.extend((0..LOG_CAPACITY as u8).map(|i| (Field::Log(i), Vec::new())));
        storage.commit(&writes)?;
        Ok(())
    }

    /// The committed state, as the applet sees it.
    pub fn state(&self) -> &CardState {
        &self.state
    }

    /// The storage.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// The storage, mutably (for hosts that arm fault hooks).
    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.storage
    }

    /// Gives the storage back (power-off).
    pub fn into_storage(self) -> S {
        self.storage
    }

    /// Gives the storage and the random source back (power-off).
    pub fn into_parts(self) -> (S, R) {
        (self.storage, self.rng)
    }

    /// Whether a power loss stopped the applet.
    pub fn is_powered_off(&self) -> bool {
        self.powered_off
    }

    /// Clears the transient state, as a warm reset does.
    pub fn reset(&mut self) {
        self.session = Session::Idle;
    }

    /// Processes one command APDU and returns the response APDU. Never
    /// panics; malformed input gets the spec's status word and changes
    /// nothing.
    pub fn handle(&mut self, apdu: &[u8]) -> Vec<u8> {
        if self.powered_off {
            return Response::status(StatusWord::MemoryFailure).to_bytes();
        }
        let response = match Command::parse(apdu) {
            Ok(cmd) => match self.dispatch(&cmd) {
                Ok(r) => r,
                Err(sw) => Response::status(sw),
            },
            Err(_) => Response::status(StatusWord::WrongLength),
        };
        response.to_bytes()
    }

    fn dispatch(&mut self, cmd: &Command) -> Outcome {
        let ins = cmd.instruction();
        let expected_cla = match ins {
            Ins::Select => CLA_ISO,
            Ins::Authenticate | Ins::Personalize | Ins::Unblock => CLA_PROPRIETARY,
            Ins::ReadProfile
            | Ins::Earn
            | Ins::Redeem
            | Ins::Refund
            | Ins::AckSettlement
            | Ins::ReadLog
            | Ins::UpdateProfile
            | Ins::KeyUpdate
            | Ins::IssuerAdjust
            | Ins::AuthorizationRequest
            | Ins::Block => CLA_SECURE,
            _ => return Err(StatusWord::InsNotSupported),
        };
        if cmd.cla != expected_cla {
            return Err(StatusWord::ClaNotSupported);
        }
        if ins == Ins::Select {
            return self.select(cmd);
        }
        if matches!(self.session, Session::Idle) {
            return Err(StatusWord::ConditionsNotSatisfied);
        }
        match ins {
            Ins::Authenticate => self.authenticate(cmd),
            Ins::Personalize => self.personalize(cmd),
            Ins::Unblock => self.unblock(cmd),
            _ => {
                let data = self.unwrap_secure(cmd)?;
                match ins {
                    Ins::ReadProfile => self.read_profile(cmd, &data),
                    Ins::Earn => self.transact(TxKind::Earn, cmd, &data),
                    Ins::Redeem => self.transact(TxKind::Redeem, cmd, &data),
                    Ins::Refund => match cmd.p1 {
                        0x03 => self.transact(TxKind::RefundEarn, cmd, &data),
                        0x04 => self.transact(TxKind::RefundRedeem, cmd, &data),
                        _ => Err(StatusWord::WrongP1P2),
                    },
                    Ins::AckSettlement => self.ack_settlement(cmd, &data),
                    Ins::UpdateProfile => self.update_profile(cmd, &data),
                    Ins::KeyUpdate => self.key_update(cmd, &data),
                    Ins::IssuerAdjust => self.issuer_adjust(cmd, &data),
                    Ins::AuthorizationRequest => self.authorization_request(cmd, &data),
                    Ins::ReadLog => self.read_log(cmd, &data),
                    _ => self.block(cmd, &data),
                }
            }
        }
    }

    /// §5.5: checks the C-MAC of a secure command. A wrong MAC closes the
    /// session (`6988`); a command without a session gets `6982`.
    fn unwrap_secure(&mut self, cmd: &Command) -> Result<Vec<u8>, StatusWord> {
        let Session::Authenticated { channel, .. } = &mut self.session else {
            return Err(StatusWord::SecurityNotSatisfied);
        };
        match channel.verify_command(cmd) {
            Ok(data) => Ok(data),
            Err(_) => {
                self.session = Session::Selected { challenge: None };
                Err(StatusWord::BadMac)
            }
        }
    }

    fn respond(&self, data: Vec<u8>) -> Outcome {
        match &self.session {
            Session::Authenticated { channel, .. } => Ok(channel.protect_response(data)),
            _ => Err(StatusWord::SecurityNotSatisfied),
        }
    }

    fn commit(&mut self, writes: Vec<(Field, Vec<u8>)>) -> Result<(), StatusWord> {
        match self.storage.commit(&writes) {
            Ok(()) => {
                self.state.apply(&writes);
                Ok(())
            }
            Err(StorageError::PowerLost) => {
                self.powered_off = true;
                self.session = Session::Idle;
                Err(StatusWord::MemoryFailure)
            }
            Err(StorageError::Failure(_)) => Err(StatusWord::MemoryFailure),
        }
    }

    /// §4.1 SELECT by AID.
    fn select(&mut self, cmd: &Command) -> Outcome {
        if (cmd.p1, cmd.p2) != (0x04, 0x00) {
            return Err(StatusWord::WrongP1P2);
        }
        if cmd.data != AID {
            self.session = Session::Idle;
            return Err(StatusWord::NotFound);
        }
        let mut challenge = [0u8; CHALLENGE_LEN];
        self.rng.fill_bytes(&mut challenge);
        self.session = Session::Selected {
            challenge: Some(challenge),
        };
        let s = &self.state;
        let body = SelectResponse {
            card_id: s.card_id,
            applet_version: APPLET_VERSION,
            key_version: s.key_version,
            issuer_id: s.issuer_id,
            lifecycle: s.lifecycle,
            profile_digest: (!s.profile.is_empty()).then(|| profile_digest(&s.profile)),
            card_challenge: challenge,
        };
        let sw = if s.lifecycle == Lifecycle::Blocked {
            StatusWord::ApplicationBlocked
        } else {
            StatusWord::Ok
        };
        Ok(Response {
            data: body.to_bytes(),
            sw,
        })
    }

    fn take_challenge(&mut self) -> Result<[u8; CHALLENGE_LEN], StatusWord> {
        match &mut self.session {
            Session::Selected { challenge } => challenge.take().ok_or(StatusWord::ConditionsNotSatisfied),
            Session::Authenticated { .. } | Session::Idle => {
                self.session = Session::Selected { challenge: None };
                Err(StatusWord::ConditionsNotSatisfied)
            }
        }
    }

    /// §4.2 AUTHENTICATE: mutual authentication in one round trip.
    fn authenticate(&mut self, cmd: &Command) -> Outcome {
        if (cmd.p1, cmd.p2) != (0, 0) {
            return Err(StatusWord::WrongP1P2);
        }
        if self.state.lifecycle != Lifecycle::Active {
            return Err(StatusWord::ConditionsNotSatisfied);
        }
        let card_challenge = self.take_challenge()?;
        let req = AuthCommand::parse(&cmd.data).map_err(|_| StatusWord::WrongData)?;
        let limit = self.state.auth_limit;
        let failures = self.state.auth_failures;
        if failures >= limit {
            return Err(StatusWord::AuthBlocked);
        }
        // §6.4: the failure counter is raised before the check and lowered
        // after success, so tearing can never grant a free try.
        self.commit(vec![(Field::AuthFailures, vec![failures + 1])])?;
        let k_auth = self.state.key_auth.clone().ok_or(StatusWord::ConditionsNotSatisfied)?;
        let keys = SessionKeys::derive(&k_auth, &req.host_challenge, &card_challenge);
        if !tessera_crypto::ct_eq(&keys.host_cryptogram(), &req.host_cryptogram) {
            let remaining = limit - (failures + 1);
            return Err(if remaining == 0 {
                StatusWord::AuthBlocked
            } else {
                StatusWord::AuthFailed { remaining }
            });
        }
        self.commit(vec![(Field::AuthFailures, vec![0])])?;
        let body = AuthResponse {
            card_cryptogram: keys.card_cryptogram(),
            balance: self.state.balance,
            counter: self.state.counter,
            lifecycle: self.state.lifecycle,
            last_record: self.state.last_record().cloned(),
            visits: self.state.visits,
            velocity: self.state.velocity,
            // v2: what SELECT said, now under the R-MAC (§4.2).
            versions: [APPLET_VERSION, self.state.key_version],
            issuer_id: self.state.issuer_id,
            profile_digest: (!self.state.profile.is_empty()).then(|| profile_digest(&self.state.profile)),
        };
        self.session = Session::Authenticated {
            channel: Box::new(SecureChannel::new(keys)),
            pending: None,
        };
        self.respond(body.to_bytes())
    }

    /// §4.3 READ PROFILE: the signed profile, encrypted under S-ENC.
    fn read_profile(&mut self, cmd: &Command, data: &[u8]) -> Outcome {
        if (cmd.p1, cmd.p2) != (0, 0) {
            return Err(StatusWord::WrongP1P2);
        }
        if !data.is_empty() {
            return Err(StatusWord::WrongData);
        }
        let profile = Zeroizing::new(self.state.profile.clone());
        let Session::Authenticated { channel, .. } = &mut self.session else {
            return Err(StatusWord::SecurityNotSatisfied);
        };
        let ct = channel.encrypt(&profile);
        self.respond(encode(tags::ENCRYPTED, &ct))
    }

    /// §4.4 EARN, §4.5 REDEEM and §4.9 REFUND.
    fn transact(&mut self, kind: TxKind, cmd: &Command, data: &[u8]) -> Outcome {
        let refund = matches!(kind, TxKind::RefundEarn | TxKind::RefundRedeem);
        if cmd.p2 != 0 || (!refund && cmd.p1 != 0) {
            return Err(StatusWord::WrongP1P2);
        }
        if self.state.lifecycle != Lifecycle::Active {
            return Err(StatusWord::ConditionsNotSatisfied);
        }
        // v2.2: every transaction command takes the session's pending
        // authorization request, whatever its outcome: an answer is good
        // for one attempt only.
        let pending = match &mut self.session {
            Session::Authenticated { pending, .. } => pending.take(),
            _ => None,
        };
        let tx = TxCommand::parse(data).map_err(|_| StatusWord::WrongData)?;
        // A refund names the transaction it reverses, which must be older;
        // other transactions name none.
        if tx.amount == 0 || refund != (tx.reference != 0) || tx.reference > self.state.counter {
            return Err(StatusWord::WrongData);
        }
        let settle = match &tx.authorization {
            None => None,
            Some(answer) => Some(self.check_authorization(kind, &tx, pending.as_deref(), answer)?),
        };
        let online = settle.is_some();
        let s = &self.state;
        let cap = match kind {
            TxKind::Earn | TxKind::RefundEarn => s.earn_cap,
            TxKind::Redeem | TxKind::RefundRedeem => s.redeem_cap,
            // Not reached: adjustments go through `issuer_adjust`.
            TxKind::IssuerCredit | TxKind::IssuerDebit => return Err(StatusWord::WrongP1P2),
        };
        // The office's approval lifts the card's per-transaction caps.
        if tx.amount > cap && !online {
            return Err(StatusWord::AboveCap);
        }
        // ... and the log window of refunds: an original that has left the
        // log was checked by the office, which holds every record. One
        // still in the log is checked here as always.
        if refund && !(online && s.counter - tx.reference >= LOG_CAPACITY as u32) {
            self.check_refund(kind, tx.reference, tx.amount)?;
        }
        let s = &self.state;
        let balance_after = if kind.is_credit() {
            s.balance.checked_add(tx.amount).ok_or(StatusWord::BalanceOverflow)?
        } else {
            s.balance
                .checked_sub(tx.amount)
                .ok_or(StatusWord::InsufficientBalance)?
        };
        let counter = s.counter.checked_add(1).ok_or(StatusWord::CounterExhausted)?;
        let mut record = LogRecord {
            counter,
            kind,
            amount: tx.amount,
            balance_after,
            terminal_id: tx.terminal_id,
            terminal_seq: tx.terminal_seq,
            time: tx.time,
            reference: tx.reference,
            online,
            certificate: [0; 16],
        };
        let k_cert = s.key_cert.as_ref().ok_or(StatusWord::ConditionsNotSatisfied)?;
        record.certificate = certificate(k_cert, &s.card_id, &record);
        // §6.4: balance, counter, the log slot and the visit or velocity
        // counters change in one commit.
        let mut writes = vec![
            (Field::Balance, balance_after.to_be_bytes().to_vec()),
            (Field::Counter, counter.to_be_bytes().to_vec()),
            (Field::Log(CardState::slot(counter)), record.to_bytes()),
        ];
        // v2.2: the office's "settled up to N" with an online approval
        // restarts the velocity counters in the same commit (as ACKNOWLEDGE
        // SETTLEMENT would, §4.10), before this redemption is counted.
        let mut velocity = match settle {
            Some(n) if n > s.velocity.settled_counter => Some(s.settled_velocity(n)),
            _ => None,
        };
        match kind {
            TxKind::Earn => {
                let mut v = s.visits;
                v.count = v.count.saturating_add(1);
                v.last_day = tx.time / 86_400;
                v.last_store = tx.store_id;
                writes.push((Field::Visits, v.to_bytes().to_vec()));
            }
            TxKind::Redeem => {
                let mut v = velocity.unwrap_or(s.velocity);
                v.unsettled_redeems = v.unsettled_redeems.saturating_add(1);
                v.unsettled_points = v.unsettled_points.saturating_add(tx.amount);
                velocity = Some(v);
            }
            TxKind::RefundEarn | TxKind::RefundRedeem | TxKind::IssuerCredit | TxKind::IssuerDebit => {}
        }
        if let Some(v) = velocity {
            writes.push((Field::Velocity, v.to_bytes().to_vec()));
        }
        self.commit(writes)?;
        self.respond(encode(tags::LOG_RECORD, &record.to_bytes()))
    }

    /// §4.17 AUTHORIZATION REQUEST (v2.2): the card's request for the
    /// office's online decision on a proposed operation, bound to the
    /// card's id, counter, balance and velocity counters and a fresh
    /// challenge, under K_cert. Nothing persistent changes; the request is
    /// kept in the session for the operation command that follows.
    fn authorization_request(&mut self, cmd: &Command, data: &[u8]) -> Outcome {
        let kind = match (cmd.p1, cmd.p2) {
            (0x01, 0) => TxKind::Earn,
            (0x02, 0) => TxKind::Redeem,
            (0x03, 0) => TxKind::RefundEarn,
            (0x04, 0) => TxKind::RefundRedeem,
            _ => return Err(StatusWord::WrongP1P2),
        };
        if self.state.lifecycle != Lifecycle::Active {
            return Err(StatusWord::ConditionsNotSatisfied);
        }
        let a = AuthorizationRequestCommand::parse(data).map_err(|_| StatusWord::WrongData)?;
        let refund = kind.is_refund();
        if a.amount == 0 || refund != (a.reference != 0) || a.reference > self.state.counter {
            return Err(StatusWord::WrongData);
        }
        // Only a card that can check the office's answer may ask for one.
        if self.state.key_issuer.is_none() {
            return Err(StatusWord::ConditionsNotSatisfied);
        }
        if self.state.counter == u32::MAX {
            return Err(StatusWord::CounterExhausted);
        }
        let s = &self.state;
        let k_cert = s.key_cert.as_ref().ok_or(StatusWord::ConditionsNotSatisfied)?;
        let mut challenge = [0u8; CHALLENGE_LEN];
        self.rng.fill_bytes(&mut challenge);
        let mut request = AuthorizationRequest {
            counter: s.counter,
            kind,
            amount: a.amount,
            terminal_id: a.terminal_id,
            reference: a.reference,
            balance: s.balance,
            velocity: s.velocity,
            challenge,
            cryptogram: [0; 8],
        };
        request.cryptogram = request_cryptogram(k_cert, &s.card_id, &request);
        let body = encode(tags::AUTH_REQUEST, &request.to_bytes());
        if let Session::Authenticated { pending, .. } = &mut self.session {
            *pending = Some(Box::new(request));
        }
        self.respond(body)
    }

    /// §4.17 (v2.2): checks the office's answer carried by a transaction
    /// command against the session's pending request: there is one, the
    /// command is the operation it proposed, the issuer MAC is right, the
    /// office approved, and its settled counter is one the card has
    /// reached. Returns that counter (0: none said).
    fn check_authorization(
        &mut self,
        kind: TxKind,
        tx: &TxCommand,
        pending: Option<&AuthorizationRequest>,
        answer: &AuthorizationResponse,
    ) -> Result<u32, StatusWord> {
        let request = pending.ok_or(StatusWord::ConditionsNotSatisfied)?;
        // The operation asked for, on the state the office decided on.
        if (
            request.kind,
            request.amount,
            request.terminal_id,
            request.reference,
            request.counter,
        ) != (kind, tx.amount, tx.terminal_id, tx.reference, self.state.counter)
        {
            return Err(StatusWord::WrongData);
        }
        self.check_issuer_mac(
            IssuerDecision::Authorization {
                cryptogram: request.cryptogram,
                decision: answer.decision_byte(),
                settled: answer.settled,
            },
            &answer.issuer_mac,
        )?;
        if !answer.approved {
            return Err(StatusWord::DeclinedByIssuer);
        }
        if answer.settled > self.state.counter {
            return Err(StatusWord::WrongData);
        }
        Ok(answer.settled)
    }

    /// §4.9 steps 6–8 (v2): the original must still be in the log, of the
    /// kind this refund reverses, and the refunds of it so far plus this one
    /// must not exceed its amount. Every refund of an original still in the
    /// log is itself in the log (its counter is newer), so the log is the
    /// complete record of what was refunded — and the refund record written
    /// in the same commit as the balance is the refunded mark.
    fn check_refund(&self, kind: TxKind, reference: u32, amount: u32) -> Result<(), StatusWord> {
        let s = &self.state;
        if s.counter - reference >= LOG_CAPACITY as u32 {
            return Err(StatusWord::ReferenceNotFound);
        }
        let original = s
            .records()
            .find(|r| r.counter == reference)
            .ok_or(StatusWord::ReferenceNotFound)?;
        if original.kind.reversal() != Some(kind) {
            return Err(StatusWord::ReferenceMismatch);
        }
        let refunded = s
            .records()
            .filter(|r| r.reference == reference && r.kind.is_refund())
            .fold(0u64, |a, r| a + u64::from(r.amount));
        if u64::from(amount) + refunded > u64::from(original.amount) {
            return Err(StatusWord::RefundExceedsOriginal);
        }
        Ok(())
    }

    /// §5.9: checks an issuer MAC with K_iss. A card personalized under v1
    /// has no issuer key (`6985`); a wrong MAC is `6988` and closes an
    /// authenticated session (as a wrong C-MAC does, §4.0); outside a
    /// session (UNBLOCK) the session state is unchanged.
    fn check_issuer_mac(&mut self, decision: IssuerDecision<'_>, mac: &[u8; 8]) -> Result<(), StatusWord> {
        let k_iss = self
            .state
            .key_issuer
            .as_ref()
            .ok_or(StatusWord::ConditionsNotSatisfied)?;
        let expected = issuer_mac(k_iss, &self.state.card_id, decision);
        if !tessera_crypto::ct_eq(&expected, mac) {
            if matches!(self.session, Session::Authenticated { .. }) {
                self.session = Session::Selected { challenge: None };
            }
            return Err(StatusWord::BadMac);
        }
        Ok(())
    }

    /// §4.14 UNBLOCK (v2): the issuer resets the authentication failure
    /// counter. Needs a selection, not a session: a card whose
    /// authentication is blocked cannot open one.
    fn unblock(&mut self, cmd: &Command) -> Outcome {
        if (cmd.p1, cmd.p2) != (0, 0) {
            return Err(StatusWord::WrongP1P2);
        }
        if self.state.lifecycle != Lifecycle::Active {
            return Err(StatusWord::ConditionsNotSatisfied);
        }
        let u = UnblockCommand::parse(&cmd.data).map_err(|_| StatusWord::WrongData)?;
        self.check_issuer_mac(IssuerDecision::Unblock(u.seq), &u.issuer_mac)?;
        if u.seq <= self.state.issuer_seq {
            return Err(StatusWord::WrongData);
        }
        self.commit(vec![
            (Field::AuthFailures, vec![0]),
            (Field::IssuerSeq, u.seq.to_be_bytes().to_vec()),
        ])?;
        Ok(Response::status(StatusWord::Ok))
    }

    /// §4.16 ISSUER ADJUST (v2.1): the issuer credits (P1 `05`) or debits
    /// (P1 `06`, never below zero) points. The adjustment sequence must be
    /// exactly one more than the card's, so no adjustment the office issued
    /// is ever skipped and none is applied twice; the record, certified like
    /// any transaction's, carries the sequence as its reference. Balance,
    /// counter, log slot and the sequence change in one commit.
    fn issuer_adjust(&mut self, cmd: &Command, data: &[u8]) -> Outcome {
        let kind = match (cmd.p1, cmd.p2) {
            (0x05, 0) => TxKind::IssuerCredit,
            (0x06, 0) => TxKind::IssuerDebit,
            _ => return Err(StatusWord::WrongP1P2),
        };
        if self.state.lifecycle != Lifecycle::Active {
            return Err(StatusWord::ConditionsNotSatisfied);
        }
        let a = AdjustCommand::parse(data).map_err(|_| StatusWord::WrongData)?;
        if a.amount == 0 {
            return Err(StatusWord::WrongData);
        }
        self.check_issuer_mac(
            IssuerDecision::Adjust {
                seq: a.seq,
                kind: kind.to_byte(),
                points: a.amount,
            },
            &a.issuer_mac,
        )?;
        // Single use and no gaps: only the next sequence is accepted.
        if Some(a.seq) != self.state.adjust_seq.checked_add(1) {
            return Err(StatusWord::WrongData);
        }
        let s = &self.state;
        let balance_after = if kind.is_credit() {
            s.balance.checked_add(a.amount).ok_or(StatusWord::BalanceOverflow)?
        } else {
            s.balance.checked_sub(a.amount).ok_or(StatusWord::InsufficientBalance)?
        };
        let counter = s.counter.checked_add(1).ok_or(StatusWord::CounterExhausted)?;
        let mut record = LogRecord {
            counter,
            kind,
            amount: a.amount,
            balance_after,
            terminal_id: a.terminal_id,
            terminal_seq: a.terminal_seq,
            time: a.time,
            reference: a.seq,
            online: false,
            certificate: [0; 16],
        };
        let k_cert = s.key_cert.as_ref().ok_or(StatusWord::ConditionsNotSatisfied)?;
        record.certificate = certificate(k_cert, &s.card_id, &record);
        self.commit(vec![
            (Field::Balance, balance_after.to_be_bytes().to_vec()),
            (Field::Counter, counter.to_be_bytes().to_vec()),
            (Field::Log(CardState::slot(counter)), record.to_bytes()),
            (Field::AdjustSeq, a.seq.to_be_bytes().to_vec()),
        ])?;
        self.respond(encode(tags::LOG_RECORD, &record.to_bytes()))
    }

    /// §4.10 ACKNOWLEDGE SETTLEMENT: the back office has settled every
    /// transaction up to counter N; the velocity counters restart from the
    /// redemptions after N.
    fn ack_settlement(&mut self, cmd: &Command, data: &[u8]) -> Outcome {
        if (cmd.p1, cmd.p2) != (0, 0) {
            return Err(StatusWord::WrongP1P2);
        }
        let ack = AckCommand::parse(data).map_err(|_| StatusWord::WrongData)?;
        let upto = ack.counter;
        if upto > self.state.counter {
            return Err(StatusWord::WrongData);
        }
        // v2: N comes from the issuer, not from the terminal.
        self.check_issuer_mac(IssuerDecision::Settled(upto), &ack.issuer_mac)?;
        let s = &self.state;
        if upto > s.velocity.settled_counter {
            let v = s.settled_velocity(upto);
            self.commit(vec![(Field::Velocity, v.to_bytes().to_vec())])?;
        }
        let v: Velocity = self.state.velocity;
        self.respond(encode(tags::VELOCITY, &v.to_bytes()))
    }

    /// §4.6 READ LOG: record P1 (1 = newest).
    fn read_log(&mut self, cmd: &Command, data: &[u8]) -> Outcome {
        if cmd.p2 != 0 || cmd.p1 == 0 || usize::from(cmd.p1) > LOG_CAPACITY {
            return Err(StatusWord::WrongP1P2);
        }
        if !data.is_empty() {
            return Err(StatusWord::WrongData);
        }
        let rec = self.state.records().nth(usize::from(cmd.p1) - 1).cloned();
        let rec = rec.ok_or(StatusWord::RecordNotFound)?;
        self.respond(encode(tags::LOG_RECORD, &rec.to_bytes()))
    }

    /// §4.13 UPDATE PROFILE: replaces the signed profile with a newer version
    /// for this card, sent encrypted under S-ENC. The card checks the
    /// binding (card id) and that the version increases; the issuer
    /// signature is checked by every terminal that reads it.
    fn update_profile(&mut self, cmd: &Command, data: &[u8]) -> Outcome {
        if (cmd.p1, cmd.p2) != (0, 0) {
            return Err(StatusWord::WrongP1P2);
        }
        if self.state.lifecycle != Lifecycle::Active {
            return Err(StatusWord::ConditionsNotSatisfied);
        }
        let up = UpdateProfileCommand::parse(data).map_err(|_| StatusWord::WrongData)?;
        let Session::Authenticated { channel, .. } = &mut self.session else {
            return Err(StatusWord::SecurityNotSatisfied);
        };
        // The encryption counter advances whether or not decryption works.
        let blob = channel.decrypt(&up.ciphertext).map_err(|_| StatusWord::WrongData)?;
        if blob.len() > MAX_PROFILE_BLOB {
            return Err(StatusWord::NotEnoughMemory);
        }
        // v2: the exact blob must be the issuer's decision.
        self.check_issuer_mac(IssuerDecision::Profile(&blob), &up.issuer_mac)?;
        let new = SignedProfile::parse(&blob).map_err(|_| StatusWord::WrongData)?;
        let current = SignedProfile::parse(&self.state.profile)
            .map(|p| p.profile.version)
            .unwrap_or(0);
        if new.profile.card_id != self.state.card_id || new.profile.version <= current {
            return Err(StatusWord::WrongData);
        }
        self.commit(vec![(Field::Profile, blob.to_vec())])?;
        let digest = profile_digest(&self.state.profile);
        self.respond(encode(tags::PROFILE_DIGEST, &digest))
    }

    /// §4.15 KEY UPDATE (v2): the issuer moves the card to a newer key
    /// version. The new K_auth, K_cert and K_iss arrive encrypted under a
    /// key derived from the current K_iss, with the issuer MAC; the terminal
    /// that relays them cannot read them. The session is closed afterwards
    /// (its keys belong to the old version).
    fn key_update(&mut self, cmd: &Command, data: &[u8]) -> Outcome {
        if (cmd.p1, cmd.p2) != (0, 0) {
            return Err(StatusWord::WrongP1P2);
        }
        if self.state.lifecycle != Lifecycle::Active {
            return Err(StatusWord::ConditionsNotSatisfied);
        }
        let ku = KeyUpdateCommand::parse(data).map_err(|_| StatusWord::WrongData)?;
        self.check_issuer_mac(
            IssuerDecision::KeyUpdate {
                key_version: ku.key_version,
                ciphertext: &ku.ciphertext,
            },
            &ku.issuer_mac,
        )?;
        if ku.key_version <= self.state.key_version {
            return Err(StatusWord::WrongData);
        }
        let k_iss = self
            .state
            .key_issuer
            .as_ref()
            .ok_or(StatusWord::ConditionsNotSatisfied)?;
        let k = key_update_key(k_iss, &self.state.card_id, ku.key_version);
        let plain = decrypt_new_keys(&k, ku.key_version, &ku.ciphertext).map_err(|_| StatusWord::WrongData)?;
        let new = NewCardKeys::parse(&plain).map_err(|_| StatusWord::WrongData)?;
        self.commit(vec![
            (Field::KeyVersion, vec![ku.key_version]),
            (Field::KeyAuth, new.key_auth.to_vec()),
            (Field::KeyCert, new.key_cert.to_vec()),
            (Field::KeyIssuer, new.key_issuer.to_vec()),
        ])?;
        let resp = self.respond(encode(tags::VERSIONS, &[APPLET_VERSION, ku.key_version]));
        self.session = Session::Selected { challenge: None };
        resp
    }

    /// §4.8 BLOCK: blocks the application for good.
    fn block(&mut self, cmd: &Command, data: &[u8]) -> Outcome {
        if (cmd.p1, cmd.p2) != (0, 0) {
            return Err(StatusWord::WrongP1P2);
        }
        if !data.is_empty() {
            return Err(StatusWord::WrongData);
        }
        self.commit(vec![(Field::Lifecycle, vec![Lifecycle::Blocked.to_byte()])])?;
        let resp = self.respond(Vec::new());
        self.session = Session::Selected { challenge: None };
        resp
    }

    /// §4.7 PERSONALIZE: once, keyed by the card's transport key.
    fn personalize(&mut self, cmd: &Command) -> Outcome {
        if (cmd.p1, cmd.p2) != (0, 0) {
            return Err(StatusWord::WrongP1P2);
        }
        if self.state.lifecycle != Lifecycle::Personalization {
            return Err(StatusWord::ConditionsNotSatisfied);
        }
        let challenge = self.take_challenge()?;
        let k_perso = self.state.key_perso.clone().ok_or(StatusWord::ConditionsNotSatisfied)?;
        let keys = SessionKeys::personalization(&k_perso, &self.state.card_id, &challenge);
        let mut channel = SecureChannel::new_personalization(keys);
        let data = channel.verify_command(cmd).map_err(|e| match e {
            CryptoError::Truncated => StatusWord::WrongData,
            _ => StatusWord::BadMac,
        })?;
        let list = TlvList::parse(&data).map_err(|_| StatusWord::WrongData)?;
        list.only(&[tags::ENCRYPTED]).map_err(|_| StatusWord::WrongData)?;
        let ct = list.require(tags::ENCRYPTED).map_err(|_| StatusWord::WrongData)?;
        let plain = channel.decrypt(ct).map_err(|_| StatusWord::WrongData)?;
        let p = PersonalizeData::parse(&plain).map_err(|_| StatusWord::WrongData)?;
        if p.profile.len() > MAX_PROFILE_BLOB {
            return Err(StatusWord::NotEnoughMemory);
        }
        let mut caps = p.earn_cap.to_be_bytes().to_vec();
        caps.extend_from_slice(&p.redeem_cap.to_be_bytes());
        self.commit(vec![
            (Field::KeyVersion, vec![p.key_version]),
            (Field::KeyAuth, p.key_auth.to_vec()),
            (Field::KeyCert, p.key_cert.to_vec()),
            (Field::KeyIssuer, p.key_issuer.to_vec()),
            (Field::IssuerId, p.issuer_id.to_vec()),
            (Field::Caps, caps),
            (Field::AuthLimit, vec![p.auth_limit]),
            (Field::AuthFailures, vec![0]),
            (Field::Profile, p.profile.clone()),
            (Field::KeyPerso, Vec::new()),
            (Field::Lifecycle, vec![Lifecycle::Active.to_byte()]),
        ])?;
        Ok(Response::status(StatusWord::Ok))
    }
}
