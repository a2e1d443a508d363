//! Reconciliation of card records with the decisions that allowed them
//! (`docs/settlement.md`, "Every point is explained").
//!
//! A card certifies, in each record, the terminal and the journal sequence
//! number of the decision it acted on. A record is **matched** when the
//! verified chain of that origin till holds, at that sequence, an approve
//! decision for the same card, counter, type and points, and no void of
//! it. It is an **orphan** when the origin till is not registered or is
//! revoked, when the origin's chain covers that sequence with something
//! else (or nothing), when the decision was voided, or when the origin has
//! not settled it within the aging period. Until then it is **awaiting**:
//! the copy may have reached the office through another till before the
//! origin settled.

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{json, Value};
use tessera_protocol::messages::CardId;

use crate::{card_of, raise, Exception, ExceptionClass, LedgerError};

/// The `card_transactions.decision` states.
pub(crate) const MATCHED: &str = "matched";
/// Waiting for the origin till's batch.
pub(crate) const AWAITING: &str = "awaiting";
/// No decision explains the record.
pub(crate) const ORPHAN: &str = "orphan";

/// What a card record claims about its origin.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Claim<'a> {
    pub card: &'a CardId,
    pub counter: u32,
    pub tx_type: &'a str,
    pub points: u32,
    pub origin_terminal: u32,
    pub origin_seq: u32,
}

/// The outcome of [`find`].
#[derive(Debug)]
pub(crate) enum Match {
    /// The approve decision is there.
    Matched,
    /// The origin has not settled that far yet.
    Awaiting,
    /// The decision is there and its till voided it (the
    /// `void-contradicted` exception names it).
    Voided,
    /// Nothing explains it: why, and what the chain holds instead.
    Orphan(&'static str, Value),
}

impl Match {
    /// The `card_transactions.decision` state.
    pub(crate) fn state(&self) -> &'static str {
        match self {
            Self::Matched => MATCHED,
            Self::Awaiting => AWAITING,
            Self::Voided | Self::Orphan(..) => ORPHAN,
        }
    }
}

/// card, counter, type, points, origin terminal and seq, received at,
/// delivering terminal and batch.
type AwaitingRow = (Vec<u8>, u32, String, u32, u32, u32, u32, u32, u32);

type DecisionRow = (
    String,
    Option<String>,
    Option<Vec<u8>>,
    Option<u32>,
    Option<String>,
    Option<u32>,
);

/// Looks the claim's decision up in the origin till's verified chain.
pub(crate) fn find(conn: &Connection, c: &Claim<'_>) -> Result<Match, LedgerError> {
    let row: Option<DecisionRow> = conn
        .prepare_cached(
            "SELECT kind, verdict, card_id, card_counter, tx_type, points FROM terminal_records
             WHERE terminal_id = ?1 AND seq = ?2",
        )?
        .query_row(params![c.origin_terminal, c.origin_seq], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
        })
        .optional()?;
    if let Some((kind, verdict, card, counter, tx_type, points)) = row {
        let same = kind == "decision"
            && verdict.as_deref() == Some("approve")
            && card.as_deref() == Some(&c.card[..])
            && counter == Some(c.counter)
            && tx_type.as_deref() == Some(c.tx_type)
            && points == Some(c.points);
        if !same {
            let held = json!({
                "kind": kind,
                "verdict": verdict,
                "card_id": card.map(hex::encode_upper),
                "card_counter": counter,
                "type": tx_type,
                "points": points,
            });
            return Ok(Match::Orphan(
                "the origin till's decision at that sequence is not this transaction",
                held,
            ));
        }
        let voided: bool = conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM terminal_records
                 WHERE kind = 'void' AND card_id = ?1 AND card_counter = ?2 AND terminal_id = ?3 AND origin_seq = ?4)",
            )?
            .query_row(params![&c.card[..], c.counter, c.origin_terminal, c.origin_seq], |r| {
                r.get(0)
            })?;
        return Ok(if voided { Match::Voided } else { Match::Matched });
    }
    let terminal: Option<(Option<u32>, u32)> = conn
        .prepare_cached("SELECT revoked_at, last_seq FROM terminals WHERE terminal_id = ?1")?
        .query_row([c.origin_terminal], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(match terminal {
        None => Match::Orphan("the origin till is not registered", Value::Null),
        Some((_, last_seq)) if c.origin_seq <= last_seq => Match::Orphan(
            "the origin till's verified chain holds no decision at that sequence",
            json!({"origin_last_seq": last_seq}),
        ),
        Some((Some(_), _)) => Match::Orphan("the origin till is revoked and never settled the decision", Value::Null),
        Some((None, _)) => Match::Awaiting,
    })
}

/// The evidence of an orphan exception.
pub(crate) fn evidence(c: &Claim<'_>, why: &str, held: Value, seq: Option<u32>) -> Value {
    json!({
        "seq": seq,
        "why": why,
        "origin_terminal": c.origin_terminal,
        "origin_seq": c.origin_seq,
        "type": c.tx_type,
        "points": c.points,
        "held_at_origin": held,
    })
}

/// Re-examines the awaiting records: those of `origin` (after it settled
/// further or was revoked), or every one received before `aged_before`
/// (their origin never settled them). Returns the exceptions raised.
pub(crate) fn resolve(
    conn: &Connection,
    origin: Option<u32>,
    aged_before: Option<u32>,
    now: u32,
) -> Result<Vec<Exception>, LedgerError> {
    // Two texts, so that one origin's awaiting records are found through
    // the index on (origin_terminal, origin_seq), not by scanning all.
    let sql = if origin.is_some() {
        "SELECT card_id, counter, tx_type, points, origin_terminal, origin_seq, received_at, terminal_id, batch_no
         FROM card_transactions
         WHERE decision = 'awaiting' AND origin_terminal = ?1 AND (?2 IS NULL OR received_at < ?2)"
    } else {
        "SELECT card_id, counter, tx_type, points, origin_terminal, origin_seq, received_at, terminal_id, batch_no
         FROM card_transactions
         WHERE decision = 'awaiting' AND ?1 IS NULL AND (?2 IS NULL OR received_at < ?2)"
    };
    let rows: Vec<AwaitingRow> = conn
        .prepare_cached(sql)?
        .query_map(params![origin, aged_before], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    let mut raised = Vec::new();
    for (card, counter, tx_type, points, origin_terminal, origin_seq, received_at, terminal_id, batch_no) in rows {
        let card = card_of(card)?;
        let claim = Claim {
            card: &card,
            counter,
            tx_type: &tx_type,
            points,
            origin_terminal,
            origin_seq,
        };
        let found = match find(conn, &claim)? {
            Match::Awaiting if aged_before.is_some() => Match::Orphan(
                "the origin till has not settled this decision within the aging period",
                json!({"received_at": received_at, "aged_secs": now.saturating_sub(received_at)}),
            ),
            m => m,
        };
        if matches!(found, Match::Awaiting) {
            continue;
        }
        conn.prepare_cached("UPDATE card_transactions SET decision = ?1 WHERE card_id = ?2 AND counter = ?3")?
            .execute(params![found.state(), &card[..], counter])?;
        if let Match::Orphan(why, held) = found {
            raised.push(raise(
                conn,
                ExceptionClass::Orphan,
                Some(card),
                Some(counter),
                Some(terminal_id),
                Some(batch_no),
                evidence(&claim, why, held, None),
                now,
            )?);
        }
    }
    Ok(raised)
}
