//! Online authorization (card application v2.2, applet-spec §4.17;
//! `docs/settlement.md`, "Online authorization"): the office decides a
//! card's request against its live view of the card, records the decision
//! at once — so an approved operation is in the books before the till's
//! batch brings its record — and, when the record arrives, matches it to
//! the approval, once.
//!
//! The decision ([`Ledger::authorize_online`]) checks, in order, the first
//! failure giving the answer:
//!
//! | code | decline |
//! |---|---|
//! | `O02` | the request's cryptogram does not verify (not the card's, or altered; not kept) |
//! | `O01` | the card is not one the office issued |
//! | `D01` | the card is hotlisted |
//! | `O03` | the card is flagged (its books disagree: under review) |
//! | `O04` | the card's counter is behind the books (a restored or cloned card, or a replayed request) |
//! | `O05` | the card's balance disagrees with the books, which hold every one of its transactions |
//! | `D08` | a debit above the card's balance |
//! | `O06` | a refund of a transaction the books do not hold, or of another kind |
//! | `O07` | a refund beyond what remains of its original (refunded already) |
//! | `O08` | the office's own daily limits of online operations or points for the card |
//!
//! `A00` approves. An approval says, with it, the counter up to which the
//! books hold every transaction of the card (its settled counter), so the
//! card restarts its velocity counters in the same commit.
//!
//! A request decided before (same card and cryptogram: the till asks again
//! after a lost answer) gets the same decision, never a second one.
//!
//! A request read over the telephone ([`crate::books::OfficeBooks::authorize_by_voice`]:
//! its cryptogram and the counter's low bits, `tessera_crypto::voice`) is
//! decided by the same checks but the cryptogram's, on the books' balance,
//! and recorded and matched the same way (`delivery` `voice`).
//!
//! The decision's SQL is written once ([`decide_and_record`],
//! [`meet`], over [`WarehouseDb`]) and runs on the SQLite ledger and on
//! the PostgreSQL backend alike; a backend serving several office servers
//! locks the card's row first, so that two servers deciding for one card
//! take turns (the daily limits hold across them).

use serde::Serialize;
use serde_json::json;
use tessera_crypto::cert::CertificateVerifier;
use tessera_protocol::messages::{AuthorizationRequest, CardId, LogRecord, TxKind};

use crate::db::{SqlRow, SqlValue, WarehouseDb};
use crate::{ExceptionClass, Ledger, LedgerError};

/// The office's own limits of online operations per card and UTC day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnlinePolicy {
    /// Online approvals per card and day.
    pub max_operations_per_day: u32,
    /// Points of online-approved debits (redemptions, refunds of earns) per
    /// card and day.
    pub max_debit_points_per_day: u64,
}

impl Default for OnlinePolicy {
    /// 20 operations and 100,000 points a day.
    fn default() -> Self {
        Self {
            max_operations_per_day: 20,
            max_debit_points_per_day: 100_000,
        }
    }
}

/// What the till sends: its card's request, and which card and key
/// version it is (the till read both from the card's authenticated state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnlineQuery {
    /// The till asking (authenticated by its request MAC).
    pub terminal_id: u32,
    /// The card.
    pub card_id: CardId,
    /// The card's key version.
    pub key_version: u8,
    /// The card's request, as the card gave it.
    pub request: AuthorizationRequest,
}

/// The office's decision on one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OnlineVerdict {
    /// Approved or not.
    pub approved: bool,
    /// `A00`, or the decline's code (module docs).
    pub code: String,
    /// One line for the clerk.
    pub message: String,
    /// With an approval: the card's transactions up to this counter are
    /// in the books (0 for none or a decline).
    pub settled: u32,
}

impl OnlineVerdict {
    fn decline(code: &str, message: String) -> Self {
        Self {
            approved: false,
            code: code.to_owned(),
            message,
            settled: 0,
        }
    }
}

/// One online decision, as the books keep it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OnlineAuthorization {
    /// The card (hex in JSON).
    #[serde(serialize_with = "ser_card")]
    pub card_id: CardId,
    /// The card's counter when it asked (the operation gets counter + 1).
    pub counter: u32,
    /// The operation's kind (`earn`, `redeem`, `refund-earn`, `refund-redeem`).
    pub kind: &'static str,
    /// Points.
    pub amount: u32,
    /// Refunds: the original's counter.
    pub reference: u32,
    /// The till that asked.
    pub terminal_id: u32,
    /// `A00` or the decline's code.
    pub code: String,
    /// `approved` (in the books, its record not yet arrived), `posted` (its
    /// record arrived and matched), `lapsed` (the card gave that counter to
    /// another transaction: it was never made), `declined`.
    pub state: String,
    /// Decided at, Unix seconds.
    pub decided_at: u32,
    /// `online` (`POST /v1/authorize`) or `voice` (read over the
    /// telephone, `office approve --request`).
    pub delivery: String,
}

fn ser_card<S: serde::Serializer>(c: &CardId, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode_upper(c))
}

fn day(t: u32) -> u32 {
    t / 86_400
}

impl Ledger {
    /// Decides a card's online request (module docs), records the decision
    /// and returns it. Idempotent for a request decided before.
    ///
    /// # Errors
    /// A storage error.
    pub fn authorize_online(
        &mut self,
        q: &OnlineQuery,
        policy: &OnlinePolicy,
        now: u32,
    ) -> Result<OnlineVerdict, LedgerError> {
        // Only a genuine request is decided, or looked up: an altered one
        // (whatever it claims) is declined and not kept.
        if let Some(forged) = check_request(&self.keys.certificate_verifier(), q) {
            return Ok(forged);
        }
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let verdict = decide_and_record(&tx, q, Some(q.request.balance), policy, now, ("online", None))?;
        tx.commit()?;
        Ok(verdict)
    }
}

/// The first check, before the books are read: a request whose cryptogram
/// does not verify under the card's key version is declined `O02` (and not
/// kept); `None` for a genuine one.
pub fn check_request(verifier: &CertificateVerifier, q: &OnlineQuery) -> Option<OnlineVerdict> {
    verifier
        .verify_request(&q.card_id, q.key_version, &q.request)
        .is_err()
        .then(|| OnlineVerdict::decline("O02", message_of("O02")))
}

/// The decision on a genuine request ([`check_request`]), in the caller's
/// transaction: the one taken before for the same card and cryptogram, or
/// a new one (the module's checks, in order), recorded. `balance` is the
/// card's certified balance (an online request), or `None` (a request read
/// over the telephone: its balance is not certified to the office, which
/// then judges on its books when they hold every transaction of the card).
/// `delivery`: `online` or `voice`, and the operator who read it.
///
/// A backend that several servers share locks the card's row before
/// calling this, so that decisions on one card take turns; two deciding
/// the same request at once store one decision, and both return it.
///
/// # Errors
/// A storage error (nothing recorded: the caller rolls back).
pub fn decide_and_record(
    db: &dyn WarehouseDb,
    q: &OnlineQuery,
    balance: Option<u32>,
    policy: &OnlinePolicy,
    now: u32,
    delivery: (&str, Option<&str>),
) -> Result<OnlineVerdict, LedgerError> {
    if let Some(v) = stored_verdict(db, &q.card_id, &q.request.cryptogram)? {
        return Ok(v);
    }
    let mut verdict = decide(db, q, balance, policy, now)?;
    if balance.is_none() {
        // The telephone answer says nothing about settlement (the clerk
        // would have to type it).
        verdict.settled = 0;
    }
    if !insert(db, q, &verdict, delivery, now)? {
        // Decided meanwhile (by another server, for the same request):
        // that decision stands.
        return stored_verdict(db, &q.card_id, &q.request.cryptogram)?
            .ok_or_else(|| LedgerError::Storage("an online decision vanished as it was taken".into()));
    }
    Ok(verdict)
}

fn stored_verdict(
    db: &dyn WarehouseDb,
    card: &CardId,
    cryptogram: &[u8],
) -> Result<Option<OnlineVerdict>, LedgerError> {
    db.first(
        "SELECT approved, code, message, settled FROM online_authorizations
         WHERE card_id = ?1 AND cryptogram = ?2",
        &[card[..].into(), cryptogram.into()],
        |r| {
            Ok(OnlineVerdict {
                approved: r.i64(0)? != 0,
                code: r.text(1)?,
                message: r.text(2)?,
                settled: r.int(3)?,
            })
        },
    )
}

/// Every online decision of a card, oldest first (then by counter and
/// cryptogram), from the books `db`.
///
/// # Errors
/// A storage error.
pub fn authorizations_of(db: &dyn WarehouseDb, card_id: CardId) -> Result<Vec<OnlineAuthorization>, LedgerError> {
    db.rows(
        "SELECT counter, kind, amount, reference, terminal_id, code, state, decided_at, delivery
         FROM online_authorizations WHERE card_id = ?1 ORDER BY decided_at, counter, cryptogram",
        &[card_id[..].into()],
        |r| {
            let kind = r.text(1)?;
            Ok(OnlineAuthorization {
                card_id,
                counter: r.int(0)?,
                kind: TxKind::ALL
                    .into_iter()
                    .find(|k| k.name() == kind)
                    .map_or("unknown", TxKind::name),
                amount: r.int(2)?,
                reference: r.int(3)?,
                terminal_id: r.int(4)?,
                code: r.text(5)?,
                state: r.text(6)?,
                decided_at: r.int(7)?,
                delivery: r.text(8)?,
            })
        },
    )
}

/// Records a decision; `false` when one for the same card and cryptogram
/// was there already (nothing written).
fn insert(
    db: &dyn WarehouseDb,
    q: &OnlineQuery,
    verdict: &OnlineVerdict,
    delivery: (&str, Option<&str>),
    now: u32,
) -> Result<bool, LedgerError> {
    let r = &q.request;
    let n = db.run(
        "INSERT INTO online_authorizations (card_id, cryptogram, counter, kind, amount, reference, terminal_id,
             key_version, approved, code, message, settled, state, decided_at, delivery, operator)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
         ON CONFLICT (card_id, cryptogram) DO NOTHING",
        &[
            q.card_id[..].into(),
            r.cryptogram[..].into(),
            r.counter.into(),
            r.kind.name().into(),
            r.amount.into(),
            r.reference.into(),
            q.terminal_id.into(),
            u32::from(q.key_version).into(),
            i64::from(verdict.approved).into(),
            verdict.code.as_str().into(),
            verdict.message.as_str().into(),
            verdict.settled.into(),
            (if verdict.approved { "approved" } else { "declined" }).into(),
            now.into(),
            delivery.0.into(),
            delivery.1.into(),
        ],
    )?;
    Ok(n == 1)
}

/// The signed points of a card's online approvals whose records have not
/// arrived, in the books `db`.
///
/// # Errors
/// A storage error.
pub fn outstanding(db: &dyn WarehouseDb, card: &CardId) -> Result<i64, LedgerError> {
    let rows = db.rows(
        "SELECT kind, amount FROM online_authorizations WHERE card_id = ?1 AND state = 'approved'",
        &[card[..].into()],
        |r| Ok((r.text(0)?, r.int::<u32>(1)?)),
    )?;
    Ok(rows
        .into_iter()
        .filter_map(|(kind, amount)| {
            TxKind::ALL
                .into_iter()
                .find(|k| k.name() == kind)
                .map(|k| k.delta(amount))
        })
        .sum())
}

/// The clerk's line for a code.
pub fn message_of(code: &str) -> String {
    match code {
        "A00" => "Approved online by the office",
        "O01" => "The office does not know this card — keep the card and call the office",
        "O02" => "The card's request does not verify — the card or the link is not genuine; call the office",
        "D01" => "Card blocked — please keep the card and call the office",
        "O03" => "This card is under review at the office — call the office",
        "O04" => "The card is behind the office's books (restored or copied card) — keep the card and call the office",
        "O05" => "The card's balance disagrees with the office's books — call the office",
        "D08" => "Not enough points on the card",
        "O06" => "The office holds no original transaction of that kind to refund",
        "O07" => "Already refunded — nothing remains of the original to refund",
        "O08" => "The office's daily limit of online operations for this card is reached",
        _ => "Declined by the office",
    }
    .to_owned()
}

fn decide(
    db: &dyn WarehouseDb,
    q: &OnlineQuery,
    balance: Option<u32>,
    policy: &OnlinePolicy,
    now: u32,
) -> Result<OnlineVerdict, LedgerError> {
    let r = &q.request;
    let card: SqlValue = q.card_id[..].into();
    let d = |code: &str| Ok(OnlineVerdict::decline(code, message_of(code)));
    let book = db.first(
        "SELECT last_counter, shadow_balance,
                CASE WHEN registered_at IS NOT NULL THEN 1 ELSE 0 END,
                CASE WHEN flagged != 0 OR discrepancy != 0 THEN 1 ELSE 0 END,
                CASE WHEN EXISTS (SELECT 1 FROM hotlist h WHERE h.card_id = c.card_id) THEN 1 ELSE 0 END,
                pending
         FROM cards c WHERE card_id = ?1",
        std::slice::from_ref(&card),
        |row: SqlRow<'_>| {
            Ok((
                row.int::<u32>(0)?,
                row.i64(1)?,
                row.i64(2)? != 0,
                row.i64(3)? != 0,
                row.i64(4)? != 0,
                row.i64(5)?,
            ))
        },
    )?;
    let Some((last_counter, shadow, registered, flagged, hotlisted, pending)) = book else {
        return d("O01");
    };
    if !registered {
        return d("O01");
    }
    if hotlisted {
        return d("D01");
    }
    if flagged {
        return d("O03");
    }
    if r.counter < last_counter {
        return d("O04");
    }
    // With every transaction of the card in the books (none pending, none
    // since), the card's certified balance must be the shadow balance.
    let complete = r.counter == last_counter && pending == 0;
    if complete && balance.is_some_and(|b| i64::from(b) != shadow) {
        return d("O05");
    }
    let available = balance.map(i64::from).or(complete.then_some(shadow));
    if let Some(available) = available.filter(|a| !r.kind.is_credit() && i64::from(r.amount) > *a) {
        return Ok(OnlineVerdict::decline(
            "D08",
            format!("Not enough points: the card has {available}, {} asked", r.amount),
        ));
    }
    if r.kind.is_refund() {
        let original = db.first(
            "SELECT tx_type, points FROM card_transactions WHERE card_id = ?1 AND counter = ?2",
            &[card.clone(), r.reference.into()],
            |row| Ok((row.text(0)?, row.count(1)?)),
        )?;
        let Some((tx_type, points)) = original else {
            return d("O06");
        };
        let reversed = TxKind::ALL
            .into_iter()
            .find(|k| k.name() == tx_type)
            .and_then(TxKind::reversal);
        if reversed != Some(r.kind) {
            return d("O06");
        }
        let sum = |sql: &str| -> Result<u64, LedgerError> {
            Ok(db
                .first(sql, &[card.clone(), r.reference.into(), r.kind.name().into()], |row| {
                    row.count(0)
                })?
                .unwrap_or(0))
        };
        let refunded = sum("SELECT CAST(COALESCE(SUM(points), 0) AS BIGINT) FROM card_transactions
             WHERE card_id = ?1 AND reference = ?2 AND tx_type = ?3")?;
        let approved = sum(
            "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM online_authorizations
             WHERE card_id = ?1 AND reference = ?2 AND kind = ?3 AND state = 'approved'",
        )?;
        if refunded + approved + u64::from(r.amount) > points {
            return d("O07");
        }
    }
    let today = day(now);
    let (ops, debits) = db
        .first(
            "SELECT COUNT(*),
                    CAST(COALESCE(SUM(CASE WHEN kind IN ('redeem', 'refund-earn') THEN amount ELSE 0 END), 0) AS BIGINT)
             FROM online_authorizations
             WHERE card_id = ?1 AND approved = 1 AND state != 'lapsed' AND decided_at >= ?2 AND decided_at < ?3",
            &[card, (today * 86_400).into(), ((today + 1) * 86_400).into()],
            |row| Ok((row.count(0)?, row.count(1)?)),
        )?
        .unwrap_or((0, 0));
    let debit = if r.kind.is_credit() { 0 } else { u64::from(r.amount) };
    if ops >= u64::from(policy.max_operations_per_day) || debits + debit > policy.max_debit_points_per_day {
        return d("O08");
    }
    Ok(OnlineVerdict {
        approved: true,
        code: "A00".to_owned(),
        message: message_of("A00"),
        settled: last_counter.min(r.counter),
    })
}

/// An approval whose card record has not arrived: what a record must be
/// to meet it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outstanding {
    /// The card's counter when it asked.
    pub counter: u32,
    /// The operation's kind.
    pub kind: String,
    /// Points.
    pub amount: u32,
    /// Refunds: the original's counter.
    pub reference: u32,
    /// The request's cryptogram (with the card, the approval's key).
    pub cryptogram: Vec<u8>,
}

/// What a card record written to the books does to the approvals
/// outstanding at its counter ([`meet`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Meeting {
    /// The approval the record meets: now `posted`.
    pub posted: Option<Vec<u8>>,
    /// The other approvals at its counter: now `lapsed` (the card gave the
    /// counter to another transaction).
    pub lapsed: Vec<Vec<u8>>,
    /// A record the card marked online that meets no approval: the
    /// evidence of its `online unmatched` exception.
    pub unmatched: Option<serde_json::Value>,
}

/// At posting: the record of an online-approved operation meets its
/// approval (same card, counter, kind, points and reference; of several,
/// the first of `at`, which the caller lists oldest first, then by
/// cryptogram) and the approval becomes `posted`; the other approvals at
/// that counter lapse. A record the card marked online that meets no
/// approval is an `online unmatched` exception (the record is posted: the
/// card moved the points). `at`: the card's outstanding approvals at the
/// record's counter − 1.
pub fn meet(card: &CardId, rec: &LogRecord, at: &[Outstanding]) -> Meeting {
    let counter = rec.counter.saturating_sub(1);
    let mut m = Meeting::default();
    for a in at.iter().filter(|a| a.counter == counter) {
        let same = a.kind == rec.kind.name() && a.amount == rec.amount && a.reference == rec.reference;
        if rec.online && same && m.posted.is_none() {
            m.posted = Some(a.cryptogram.clone());
        } else {
            m.lapsed.push(a.cryptogram.clone());
        }
    }
    if rec.online && m.posted.is_none() {
        m.unmatched = Some(json!({
            "card_id": hex::encode_upper(card),
            "counter": rec.counter,
            "kind": rec.kind.name(),
            "points": rec.amount,
            "reference": rec.reference,
            "why": "the card marked the transaction authorized online, and the office holds no approval of it",
        }));
    }
    m
}

/// The order in which outstanding approvals are listed for [`meet`].
pub const OUTSTANDING_ORDER: &str = "decided_at, cryptogram";

/// [`meet`] in the SQLite ledger, for one record as it is written.
pub(crate) fn record_posted(
    db: &dyn WarehouseDb,
    card: &CardId,
    rec: &LogRecord,
) -> Result<Option<serde_json::Value>, LedgerError> {
    let counter = rec.counter.saturating_sub(1);
    let at = db.rows(
        &format!(
            "SELECT counter, kind, amount, reference, cryptogram FROM online_authorizations
             WHERE card_id = ?1 AND counter = ?2 AND state = 'approved' ORDER BY {OUTSTANDING_ORDER}"
        ),
        &[card[..].into(), counter.into()],
        outstanding_row,
    )?;
    let m = meet(card, rec, &at);
    let set = |state: &str, cryptogram: &[u8]| {
        db.run(
            "UPDATE online_authorizations SET state = ?3 WHERE card_id = ?1 AND cryptogram = ?2",
            &[card[..].into(), cryptogram.into(), state.into()],
        )
    };
    if let Some(c) = &m.posted {
        set("posted", c)?;
    }
    for c in &m.lapsed {
        set("lapsed", c)?;
    }
    Ok(m.unmatched)
}

/// An outstanding approval from `counter, kind, amount, reference,
/// cryptogram`.
///
/// # Errors
/// A storage error for a column of another type.
pub fn outstanding_row(r: SqlRow<'_>) -> Result<Outstanding, LedgerError> {
    Ok(Outstanding {
        counter: r.int(0)?,
        kind: r.text(1)?,
        amount: r.int(2)?,
        reference: r.int(3)?,
        cryptogram: r.blob(4)?,
    })
}

/// The class of the exception [`record_posted`] reports.
pub(crate) const UNMATCHED: ExceptionClass = ExceptionClass::OnlineUnmatched;

/// Decides a request read over the telephone (module docs; the voice
/// reference of `tessera_crypto::voice`), inside the caller's write
/// transaction, the card's row locked first: the same checks as
/// [`Ledger::authorize_online`] but the cryptogram's (which the office
/// cannot check without the request's body; the card checks the answer
/// against its own request) and with the books' balance when they hold
/// every transaction of the card. Recorded like an online decision
/// (`delivery` `voice`, with the operator), and matched at posting the
/// same way. Returns the decision and the card's counter the reference
/// names.
///
/// # Errors
/// A storage error.
#[allow(clippy::too_many_arguments)]
pub fn authorize_by_voice_in(
    db: &dyn WarehouseDb,
    terminal_id: u32,
    card_id: CardId,
    voice: &tessera_crypto::voice::VoiceReference,
    kind: TxKind,
    amount: u32,
    reference: u32,
    operator: &str,
    policy: &OnlinePolicy,
    now: u32,
) -> Result<(OnlineVerdict, u32, u8), LedgerError> {
    lock_card(db, &card_id)?;
    let card = &card_id[..];
    let known: Option<(u32, u8)> = db.first(
        "SELECT last_counter, key_version FROM cards WHERE card_id = ?1 AND registered_at IS NOT NULL",
        &[card.into()],
        |r| Ok((r.int(0)?, r.int(1)?)),
    )?;
    let Some((last_counter, key_version)) = known else {
        return Ok((OnlineVerdict::decline("O01", message_of("O01")), 0, 0));
    };
    let counter = voice.counter(last_counter);
    // A refund reverses its original's kind, which the books know.
    let kind = if kind.is_refund() {
        let original: Option<String> = db.first(
            "SELECT tx_type FROM card_transactions WHERE card_id = ?1 AND counter = ?2",
            &[card.into(), reference.into()],
            |r| r.text(0),
        )?;
        original
            .and_then(|t| TxKind::ALL.into_iter().find(|k| k.name() == t))
            .and_then(TxKind::reversal)
            .unwrap_or(kind)
    } else {
        kind
    };
    let q = OnlineQuery {
        terminal_id,
        card_id,
        key_version,
        request: AuthorizationRequest {
            counter,
            kind,
            amount,
            terminal_id,
            reference,
            balance: 0,
            velocity: tessera_protocol::messages::Velocity::default(),
            challenge: [0; 8],
            cryptogram: voice.cryptogram,
        },
    };
    let verdict = decide_and_record(db, &q, None, policy, now, ("voice", Some(operator)))?;
    Ok((verdict, counter, key_version))
}

/// Locks a card's row for the rest of the caller's write transaction, in
/// SQL both backends speak: an update that changes nothing (PostgreSQL
/// takes the row's lock, which conflicts with the `FOR UPDATE` of online
/// authorization and posting; SQLite holds the database's write lock
/// already).
///
/// # Errors
/// A storage error.
pub fn lock_card(db: &dyn WarehouseDb, card_id: &CardId) -> Result<(), LedgerError> {
    db.run(
        "UPDATE cards SET key_version = key_version WHERE card_id = ?1",
        &[card_id[..].into()],
    )
    .map(drop)
}
