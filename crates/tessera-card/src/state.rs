//! The typed view of the card's persistent fields.

use tessera_crypto::Key;
use tessera_protocol::messages::{IssuerId, Lifecycle, LogRecord, Velocity, Visits};
use tessera_protocol::LOG_CAPACITY;

use crate::storage::{Field, Storage};
use crate::CardError;

/// The card's committed persistent state, decoded from its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardState {
    /// Life-cycle state.
    pub lifecycle: Lifecycle,
    /// Card identifier.
    pub card_id: [u8; 8],
    /// Key version (0 before personalization).
    pub key_version: u8,
    /// Transport key (present only before personalization).
    pub key_perso: Option<Key>,
    /// Authentication key.
    pub key_auth: Option<Key>,
    /// Certificate key.
    pub key_cert: Option<Key>,
    /// Balance in points.
    pub balance: u32,
    /// Counter of the last transaction (0 = none yet).
    pub counter: u32,
    /// Per-transaction earn cap.
    pub earn_cap: u32,
    /// Per-transaction redeem cap.
    pub redeem_cap: u32,
    /// Consecutive authentication failures.
    pub auth_failures: u8,
    /// Failures before authentication blocks.
    pub auth_limit: u8,
    /// Log slots; slot `(counter - 1) % 8` holds the record of `counter`.
    pub log: [Option<LogRecord>; LOG_CAPACITY],
    /// The signed profile blob (empty before personalization).
    pub profile: Vec<u8>,
    /// Visit history.
    pub visits: Visits,
    /// Offline velocity counters.
    pub velocity: Velocity,
    /// Issuer key (v2); `None` on a card personalized under v1.
    pub key_issuer: Option<Key>,
    /// Issuer identifier (v2); `None` on a v1 card.
    pub issuer_id: Option<IssuerId>,
    /// Issuer sequence of the last UNBLOCK (0 = none).
    pub issuer_seq: u32,
    /// Adjustment sequence of the last ISSUER ADJUST (0 = none, v2.1).
    pub adjust_seq: u32,
}

fn corrupt(f: Field) -> CardError {
    CardError::CorruptState(f.name())
}

fn fixed<const N: usize>(s: &dyn Storage, f: Field) -> Result<[u8; N], CardError> {
    s.read(f).and_then(|v| v.try_into().ok()).ok_or_else(|| corrupt(f))
}

fn decode_key(v: &[u8], f: Field) -> Result<Option<Key>, CardError> {
    match v.len() {
        0 => Ok(None),
        16 => {
            let mut k = [0u8; 16];
            k.copy_from_slice(v);
            let key = Key::new(k);
            zeroize::Zeroize::zeroize(&mut k);
            Ok(Some(key))
        }
        _ => Err(corrupt(f)),
    }
}

impl CardState {
    /// Slot of the record with transaction counter `counter` (≥ 1).
    pub fn slot(counter: u32) -> u8 {
        (counter.wrapping_sub(1) % LOG_CAPACITY as u32) as u8
    }

    /// Decodes every field.
    ///
    /// # Errors
    /// [`CardError::CorruptState`] naming the first bad field.
    pub fn load(s: &dyn Storage) -> Result<Self, CardError> {
        let mut state = Self {
            lifecycle: Lifecycle::from_byte(fixed::<1>(s, Field::Lifecycle)?[0])
                .map_err(|_| corrupt(Field::Lifecycle))?,
            card_id: fixed(s, Field::CardId)?,
            key_version: fixed::<1>(s, Field::KeyVersion)?[0],
            key_perso: None,
            key_auth: None,
            key_cert: None,
            balance: u32::from_be_bytes(fixed(s, Field::Balance)?),
            counter: u32::from_be_bytes(fixed(s, Field::Counter)?),
            earn_cap: 0,
            redeem_cap: 0,
            auth_failures: fixed::<1>(s, Field::AuthFailures)?[0],
            auth_limit: fixed::<1>(s, Field::AuthLimit)?[0],
            log: Default::default(),
            profile: s.read(Field::Profile).ok_or_else(|| corrupt(Field::Profile))?,
            visits: Visits::default(),
            velocity: Velocity::default(),
            key_issuer: None,
            issuer_id: None,
            issuer_seq: 0,
            adjust_seq: 0,
        };
        // Fields added after the first cards: absent means zero (or, for the
        // v2 issuer fields, a card personalized under application v1).
        for f in [
            Field::Visits,
            Field::Velocity,
            Field::IssuerId,
            Field::IssuerSeq,
            Field::AdjustSeq,
        ] {
            if let Some(v) = s.read(f) {
                state.set(f, &v)?;
            }
        }
        for f in [Field::KeyPerso, Field::KeyAuth, Field::KeyCert] {
            let v = zeroize::Zeroizing::new(s.read(f).ok_or_else(|| corrupt(f))?);
            state.set(f, &v)?;
        }
        if let Some(v) = s.read(Field::KeyIssuer).map(zeroize::Zeroizing::new) {
            state.set(Field::KeyIssuer, &v)?;
        }
        state.set(Field::Caps, &fixed::<8>(s, Field::Caps)?)?;
        for i in 0..LOG_CAPACITY as u8 {
            let v = s.read(Field::Log(i)).ok_or_else(|| corrupt(Field::Log(i)))?;
            state.set(Field::Log(i), &v)?;
        }
        if state.lifecycle == Lifecycle::Active && (state.key_auth.is_none() || state.key_cert.is_none()) {
            return Err(corrupt(Field::KeyAuth));
        }
        if state.lifecycle == Lifecycle::Active && !(1..=15).contains(&state.auth_limit) {
            return Err(corrupt(Field::AuthLimit));
        }
        if state.auth_failures > state.auth_limit.max(1) {
            return Err(corrupt(Field::AuthFailures));
        }
        if let Some(r) = state.last_record() {
            if r.counter != state.counter || r.balance_after != state.balance {
                return Err(corrupt(Field::Log(Self::slot(state.counter))));
            }
        }
        Ok(state)
    }

    fn set(&mut self, f: Field, v: &[u8]) -> Result<(), CardError> {
        let one = || v.first().copied().filter(|_| v.len() == 1).ok_or_else(|| corrupt(f));
        let four = || -> Result<u32, CardError> { Ok(u32::from_be_bytes(v.try_into().map_err(|_| corrupt(f))?)) };
        match f {
            Field::Lifecycle => self.lifecycle = Lifecycle::from_byte(one()?).map_err(|_| corrupt(f))?,
            Field::CardId => self.card_id = v.try_into().map_err(|_| corrupt(f))?,
            Field::KeyVersion => self.key_version = one()?,
            Field::KeyPerso => self.key_perso = decode_key(v, f)?,
            Field::KeyAuth => self.key_auth = decode_key(v, f)?,
            Field::KeyCert => self.key_cert = decode_key(v, f)?,
            Field::Balance => self.balance = four()?,
            Field::Counter => self.counter = four()?,
            Field::Caps => {
                if v.len() != 8 {
                    return Err(corrupt(f));
                }
                self.earn_cap = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
                self.redeem_cap = u32::from_be_bytes([v[4], v[5], v[6], v[7]]);
            }
            Field::AuthFailures => self.auth_failures = one()?,
            Field::AuthLimit => self.auth_limit = one()?,
            Field::Log(i) => {
                let slot = self.log.get_mut(usize::from(i)).ok_or_else(|| corrupt(f))?;
                *slot = if v.is_empty() {
                    None
                } else {
                    Some(LogRecord::parse(v).map_err(|_| corrupt(f))?)
                };
            }
            Field::Profile => self.profile = v.to_vec(),
            Field::Visits => self.visits = Visits::parse(v).map_err(|_| corrupt(f))?,
            Field::Velocity => self.velocity = Velocity::parse(v).map_err(|_| corrupt(f))?,
            Field::KeyIssuer => self.key_issuer = decode_key(v, f)?,
            Field::IssuerId => self.issuer_id = Some(v.try_into().map_err(|_| corrupt(f))?),
            Field::IssuerSeq => self.issuer_seq = four()?,
            Field::AdjustSeq => self.adjust_seq = four()?,
        }
        Ok(())
    }

    /// Applies committed writes to this mirror. The writes were produced by
    /// the applet itself and decode; a failure would leave the mirror as it
    /// was for that field.
    pub(crate) fn apply(&mut self, writes: &[(Field, Vec<u8>)]) {
        for (f, v) in writes {
            let _ = self.set(*f, v);
        }
    }

    /// The newest log record.
    pub fn last_record(&self) -> Option<&LogRecord> {
        if self.counter == 0 {
            return None;
        }
        self.log[usize::from(Self::slot(self.counter))].as_ref()
    }

    /// The velocity counters once the office has settled every transaction
    /// up to `n` (spec §4.10 step 6; `n` above the settled counter):
    /// redemptions after `n` are recounted from the log when it reaches back
    /// that far; otherwise the counters keep their values, which can only
    /// overstate the unsettled amount (the safe side).
    pub fn settled_velocity(&self, n: u32) -> Velocity {
        let mut v = self.velocity;
        if self.counter - n <= LOG_CAPACITY as u32 {
            let after = self
                .records()
                .filter(|r| r.counter > n && r.kind == tessera_protocol::messages::TxKind::Redeem);
            let (count, points) = after.fold((0u32, 0u32), |(c, p), r| (c + 1, p.saturating_add(r.amount)));
            v.unsettled_redeems = count;
            v.unsettled_points = points;
        }
        v.settled_counter = n;
        v
    }

    /// Log records, newest first.
    pub fn records(&self) -> impl Iterator<Item = &LogRecord> + '_ {
        let n = (self.counter as usize).min(LOG_CAPACITY);
        // A missing slot ends the walk: numbering never shifts past a hole.
        (0..n as u32).map_while(move |k| self.log[usize::from(Self::slot(self.counter - k))].as_ref())
    }
}
