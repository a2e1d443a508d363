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
//! A request read over the telephone ([`Ledger::authorize_by_voice`]:
//! its cryptogram and the counter's low bits, `tessera_crypto::voice`) is
//! decided by the same checks but the cryptogram's, on the books' balance,
//! and recorded and matched the same way (`delivery` `voice`).

use rusqlite::{params, OptionalExtension};
use serde::Serialize;
use serde_json::json;
use tessera_protocol::messages::{AuthorizationRequest, CardId, LogRecord, TxKind};

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
        let r = &q.request;
        // Only a genuine request is decided, or looked up: an altered one
        // (whatever it claims) is declined and not kept.
        if self
            .keys
            .certificate_verifier()
            .verify_request(&q.card_id, q.key_version, r)
            .is_err()
        {
            return Ok(OnlineVerdict::decline("O02", message_of("O02")));
        }
        let tx = self.conn.transaction()?;
        let card = &q.card_id[..];
        if let Some((approved, code, message, settled)) = tx
            .query_row(
                "SELECT approved, code, message, settled FROM online_authorizations
                 WHERE card_id = ?1 AND cryptogram = ?2",
                params![card, &r.cryptogram[..]],
                |row| Ok((row.get::<_, bool>(0)?, row.get(1)?, row.get(2)?, row.get::<_, u32>(3)?)),
            )
            .optional()?
        {
            return Ok(OnlineVerdict {
                approved,
                code,
                message,
                settled,
            });
        }
        let verdict = decide(&tx, q, Some(r.balance), policy, now)?;
        insert(&tx, q, &verdict, "online", None, now)?;
        tx.commit()?;
        Ok(verdict)
    }

    /// Decides a request read over the telephone (module docs; the voice
    /// reference of `tessera_crypto::voice`): the same checks as
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
    pub fn authorize_by_voice(
        &mut self,
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
        let tx = self.conn.transaction()?;
        let card = &card_id[..];
        let known: Option<(u32, u8)> = tx
            .query_row(
                "SELECT last_counter, key_version FROM cards WHERE card_id = ?1 AND registered_at IS NOT NULL",
                [card],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        let Some((last_counter, key_version)) = known else {
            return Ok((OnlineVerdict::decline("O01", message_of("O01")), 0, 0));
        };
        let counter = voice.counter(last_counter);
        // A refund reverses its original's kind, which the books know.
        let kind = if kind.is_refund() {
            let original: Option<String> = tx
                .query_row(
                    "SELECT tx_type FROM card_transactions WHERE card_id = ?1 AND counter = ?2",
                    params![card, reference],
                    |row| row.get(0),
                )
                .optional()?;
            original
                .and_then(|t| TxKind::ALL.into_iter().find(|k| k.name() == t))
                .and_then(TxKind::reversal)
                .unwrap_or(kind)
        } else {
            kind
        };
        if let Some((approved, code, message, settled)) = tx
            .query_row(
                "SELECT approved, code, message, settled FROM online_authorizations
                 WHERE card_id = ?1 AND cryptogram = ?2",
                params![card, &voice.cryptogram[..]],
                |row| Ok((row.get::<_, bool>(0)?, row.get(1)?, row.get(2)?, row.get::<_, u32>(3)?)),
            )
            .optional()?
        {
            let v = OnlineVerdict {
                approved,
                code,
                message,
                settled,
            };
            return Ok((v, counter, key_version));
        }
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
        let mut verdict = decide(&tx, &q, None, policy, now)?;
        // The telephone answer says nothing about settlement (the clerk
        // would have to type it).
        verdict.settled = 0;
        insert(&tx, &q, &verdict, "voice", Some(operator), now)?;
        tx.commit()?;
        Ok((verdict, counter, key_version))
    }

    /// Every online decision of a card, oldest first.
    ///
    /// # Errors
    /// A storage error.
    pub fn online_authorizations(&self, card_id: CardId) -> Result<Vec<OnlineAuthorization>, LedgerError> {
        let mut stmt = self.conn.prepare(
            "SELECT counter, kind, amount, reference, terminal_id, code, state, decided_at, delivery
             FROM online_authorizations WHERE card_id = ?1 ORDER BY decided_at, rowid",
        )?;
        let rows = stmt.query_map([&card_id[..]], |r| {
            let kind: String = r.get(1)?;
            Ok(OnlineAuthorization {
                card_id,
                counter: r.get(0)?,
                kind: TxKind::ALL
                    .into_iter()
                    .find(|k| k.name() == kind)
                    .map_or("unknown", TxKind::name),
                amount: r.get(2)?,
                reference: r.get(3)?,
                terminal_id: r.get(4)?,
                code: r.get(5)?,
                state: r.get(6)?,
                decided_at: r.get(7)?,
                delivery: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The signed points of a card's online approvals whose records have
    /// not arrived: what the books will move when they do.
    ///
    /// # Errors
    /// A storage error.
    pub fn online_outstanding(&self, card_id: CardId) -> Result<i64, LedgerError> {
        outstanding(&self.conn, &card_id)
    }
}

fn insert(
    tx: &rusqlite::Transaction<'_>,
    q: &OnlineQuery,
    verdict: &OnlineVerdict,
    delivery: &str,
    operator: Option<&str>,
    now: u32,
) -> Result<(), LedgerError> {
    let r = &q.request;
    tx.execute(
        "INSERT INTO online_authorizations (card_id, cryptogram, counter, kind, amount, reference, terminal_id,
             key_version, approved, code, message, settled, state, decided_at, delivery, operator)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        params![
            &q.card_id[..],
            &r.cryptogram[..],
            r.counter,
            r.kind.name(),
            r.amount,
            r.reference,
            q.terminal_id,
            q.key_version,
            verdict.approved,
            verdict.code,
            verdict.message,
            verdict.settled,
            if verdict.approved { "approved" } else { "declined" },
            now,
            delivery,
            operator
        ],
    )?;
    Ok(())
}

fn outstanding(conn: &rusqlite::Connection, card: &CardId) -> Result<i64, LedgerError> {
    let mut stmt = conn
        .prepare_cached("SELECT kind, amount FROM online_authorizations WHERE card_id = ?1 AND state = 'approved'")?;
    let rows = stmt.query_map([&card[..]], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?)))?;
    let mut sum = 0i64;
    for row in rows {
        let (kind, amount) = row?;
        if let Some(k) = TxKind::ALL.into_iter().find(|k| k.name() == kind) {
            sum += k.delta(amount);
        }
    }
    Ok(sum)
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

/// `balance`: the card's certified balance (an online request), or `None`
/// (a request read over the telephone: its balance is not certified to the
/// office, which then judges on its books when they hold every transaction
/// of the card).
fn decide(
    tx: &rusqlite::Transaction<'_>,
    q: &OnlineQuery,
    balance: Option<u32>,
    policy: &OnlinePolicy,
    now: u32,
) -> Result<OnlineVerdict, LedgerError> {
    let r = &q.request;
    let card = &q.card_id[..];
    let d = |code: &str| Ok(OnlineVerdict::decline(code, message_of(code)));
    let book: Option<(u32, i64, bool, bool, bool, u32)> = tx
        .query_row(
            "SELECT last_counter, shadow_balance, registered_at IS NOT NULL, flagged != 0 OR discrepancy != 0,
                    EXISTS (SELECT 1 FROM hotlist h WHERE h.card_id = c.card_id), pending
             FROM cards c WHERE card_id = ?1",
            [card],
            |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                    row.get(5)?,
                ))
            },
        )
        .optional()?;
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
        let original: Option<(String, u32)> = tx
            .query_row(
                "SELECT tx_type, points FROM card_transactions WHERE card_id = ?1 AND counter = ?2",
                params![card, r.reference],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
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
        let refunded: u64 = tx.query_row(
            "SELECT COALESCE(SUM(points), 0) FROM card_transactions
             WHERE card_id = ?1 AND reference = ?2 AND tx_type = ?3",
            params![card, r.reference, r.kind.name()],
            |row| row.get(0),
        )?;
        let approved: u64 = tx.query_row(
            "SELECT COALESCE(SUM(amount), 0) FROM online_authorizations
             WHERE card_id = ?1 AND reference = ?2 AND kind = ?3 AND state = 'approved'",
            params![card, r.reference, r.kind.name()],
            |row| row.get(0),
        )?;
        if refunded + approved + u64::from(r.amount) > u64::from(points) {
            return d("O07");
        }
    }
    let today = day(now);
    let (ops, debits): (u32, u64) = tx.query_row(
        "SELECT COUNT(*), COALESCE(SUM(CASE WHEN kind IN ('redeem', 'refund-earn') THEN amount ELSE 0 END), 0)
         FROM online_authorizations
         WHERE card_id = ?1 AND approved = 1 AND state != 'lapsed' AND decided_at >= ?2 AND decided_at < ?3",
        params![card, today * 86_400, (today + 1) * 86_400],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    let debit = if r.kind.is_credit() { 0 } else { u64::from(r.amount) };
    if ops >= policy.max_operations_per_day || debits + debit > policy.max_debit_points_per_day {
        return d("O08");
    }
    Ok(OnlineVerdict {
        approved: true,
        code: "A00".to_owned(),
        message: message_of("A00"),
        settled: last_counter.min(r.counter),
    })
}

/// At posting: the record of an online-approved operation meets its
/// approval (same card, counter, kind, points and reference) and the
/// approval becomes `posted`; other approvals at that counter lapse (the card gave the counter to another transaction). A record the
/// card marked online that meets no approval is an `online unmatched`
/// exception (the record is posted: the card moved the points).
pub(crate) fn record_posted(
    conn: &rusqlite::Connection,
    card: &CardId,
    rec: &LogRecord,
) -> Result<Option<serde_json::Value>, LedgerError> {
    let counter = rec.counter.saturating_sub(1);
    let matched = if rec.online {
        conn.prepare_cached(
            "UPDATE online_authorizations SET state = 'posted'
             WHERE card_id = ?1 AND counter = ?2 AND kind = ?3 AND amount = ?4 AND reference = ?5
               AND approved = 1 AND state = 'approved'
               AND rowid = (SELECT MIN(rowid) FROM online_authorizations
                            WHERE card_id = ?1 AND counter = ?2 AND kind = ?3 AND amount = ?4 AND reference = ?5
                              AND approved = 1 AND state = 'approved')",
        )?
        .execute(params![&card[..], counter, rec.kind.name(), rec.amount, rec.reference])?
    } else {
        0
    };
    conn.prepare_cached(
        "UPDATE online_authorizations SET state = 'lapsed' WHERE card_id = ?1 AND counter = ?2 AND state = 'approved'",
    )?
    .execute(params![&card[..], counter])?;
    if rec.online && matched == 0 {
        return Ok(Some(json!({
            "card_id": hex::encode_upper(card),
            "counter": rec.counter,
            "kind": rec.kind.name(),
            "points": rec.amount,
            "reference": rec.reference,
            "why": "the card marked the transaction authorized online, and the office holds no approval of it",
        })));
    }
    Ok(None)
}

/// The class of the exception [`record_posted`] reports.
pub(crate) const UNMATCHED: ExceptionClass = ExceptionClass::OnlineUnmatched;
