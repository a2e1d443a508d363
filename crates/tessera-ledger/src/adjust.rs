//! Issuer adjustments and card replacement (applet-spec §4.16,
//! `docs/settlement.md` "Issuer adjustments").
//!
//! The office issues an adjustment — goodwill, correction or the balance of
//! a replaced card — as a row of `adjustments`: card, sequence (one more
//! than the card's last issued, so the card, which takes only its next
//! sequence, never skips one), signed points, reason, operator. The sync
//! feed carries it with the issuer MAC to every till; the card certifies a
//! record of kind `issuer-credit` or `issuer-debit` whose reference is the
//! sequence. At posting ([`crate::ingest`]) every such record must match an
//! issued adjustment of that card and sequence, kind and points, applied
//! once; anything else is an `adjustment-mismatch` exception. An issued
//! adjustment whose record has not been posted is *pending*.
//!
//! A replacement hotlists the old card and issues a credit of the old
//! card's book balance to the new one. When that credit's record posts, the
//! same points leave the old card's books as a posting ("moved N points to
//! card X"), so the liability counts them once. Any record of the old card
//! posted after that is a `replaced-card-used` exception: its points stay
//! on the old card's books, neither lost nor doubled, until the office
//! corrects the new card.

use crate::db::WarehouseDb;
use rusqlite::{params, Connection, OptionalExtension};

use crate::types::{AdjustmentKind, AdjustmentRow, NewAdjustment};
use crate::{card_of, Ledger, LedgerError};

const COLUMNS: &str =
    "card_id, seq, kind, direction, points, reason, operator, issued_at, from_card, state, applied_counter";

pub(crate) fn registered(db: &dyn WarehouseDb, card: &[u8; 8]) -> Result<bool, LedgerError> {
    Ok(db
        .first(
            "SELECT 1 FROM cards WHERE card_id = ?1 AND registered_at IS NOT NULL",
            &[card[..].into()],
            |_| Ok(()),
        )?
        .is_some())
}

fn hotlisted(db: &dyn WarehouseDb, card: &[u8; 8]) -> Result<bool, LedgerError> {
    Ok(db
        .first("SELECT 1 FROM hotlist WHERE card_id = ?1", &[card[..].into()], |_| {
            Ok(())
        })?
        .is_some())
}

pub(crate) fn book_balance(db: &dyn WarehouseDb, card: &[u8; 8]) -> Result<i64, LedgerError> {
    Ok(db
        .first(
            "SELECT shadow_balance FROM cards WHERE card_id = ?1",
            &[card[..].into()],
            |r| r.i64(0),
        )?
        .unwrap_or(0))
}

/// Issues one adjustment inside the caller's transaction (the SQL both
/// backends speak; a backend several servers share locks the card's row
/// first, so that two adjustments of one card take two sequences).
///
/// # Errors
/// As [`Ledger::issue_adjustment`].
#[allow(clippy::too_many_arguments)]
pub fn issue(
    conn: &dyn WarehouseDb,
    card: &[u8; 8],
    points: i64,
    kind: AdjustmentKind,
    reason: &str,
    operator: &str,
    from_card: Option<&[u8; 8]>,
    now: u32,
) -> Result<AdjustmentRow, LedgerError> {
    let hex = hex::encode_upper(card);
    if !registered(conn, card)? {
        return Err(LedgerError::Refused(format!(
            "card {hex} was never issued by this office"
        )));
    }
    if hotlisted(conn, card)? {
        return Err(LedgerError::Refused(format!(
            "card {hex} is on the hotlist: no till would deliver the adjustment"
        )));
    }
    let magnitude = u32::try_from(points.unsigned_abs())
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| LedgerError::Refused("the points must be a non-zero number of at most 4294967295".into()))?;
    if reason.trim().is_empty() {
        return Err(LedgerError::Refused("an adjustment needs a reason".into()));
    }
    if operator.trim().is_empty() {
        return Err(LedgerError::Refused("an adjustment needs the operator's name".into()));
    }
    let pending: i64 = conn
        .first(
            "SELECT CAST(COALESCE(SUM(CASE direction WHEN 'issuer-debit' THEN -points ELSE points END), 0) AS BIGINT)
             FROM adjustments WHERE card_id = ?1 AND state = 'issued'",
            &[card[..].into()],
            |r| r.i64(0),
        )?
        .unwrap_or(0);
    let balance = book_balance(conn, card)?;
    if points < 0 && balance + pending + points < 0 {
        return Err(LedgerError::Refused(format!(
            "card {hex} has {balance} points on its books ({pending:+} pending): a debit never takes a card below zero"
        )));
    }
    // The card takes only its next sequence: one more than every one
    // issued here and every one its records show (an adjustment this
    // ledger did not issue, an `adjustment-mismatch`, still used one).
    let seq: u32 = conn
        .first(
            "SELECT CASE WHEN a > b THEN a ELSE b END + 1 FROM (
                 SELECT (SELECT COALESCE(MAX(seq), 0) FROM adjustments WHERE card_id = ?1) AS a,
                        (SELECT COALESCE(MAX(reference), 0) FROM card_transactions
                         WHERE card_id = ?1 AND tx_type IN ('issuer-credit', 'issuer-debit')) AS b) x",
            &[card[..].into()],
            |r| r.int(0),
        )?
        .ok_or_else(|| LedgerError::Storage("an adjustment sequence".into()))?;
    let direction = if points > 0 { "issuer-credit" } else { "issuer-debit" };
    conn.run(
        "INSERT INTO adjustments (card_id, seq, kind, direction, points, reason, operator, issued_at, from_card)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        &[
            card[..].into(),
            seq.into(),
            kind.as_str().into(),
            direction.into(),
            magnitude.into(),
            reason.trim().into(),
            operator.trim().into(),
            now.into(),
            from_card.map(|c| &c[..]).into(),
        ],
    )?;
    Ok(AdjustmentRow {
        card_id: *card,
        seq,
        kind,
        direction: direction.into(),
        points: magnitude,
        reason: reason.trim().into(),
        operator: operator.trim().into(),
        issued_at: now,
        from_card: from_card.copied(),
        state: "pending".into(),
        applied_counter: None,
    })
}

/// [`Ledger::issue_adjustment`] in the caller's transaction, on either
/// backend (the SQL both speak).
///
/// # Errors
/// As [`Ledger::issue_adjustment`].
pub fn issue_adjustment_in(db: &dyn WarehouseDb, a: &NewAdjustment, now: u32) -> Result<AdjustmentRow, LedgerError> {
    if a.kind == AdjustmentKind::Goodwill && a.points < 0 {
        return Err(LedgerError::Refused(
            "a goodwill adjustment only credits: a debit is a correction".into(),
        ));
    }
    if a.kind == AdjustmentKind::Replacement {
        return Err(LedgerError::Refused(
            "a replacement credit is issued by replacing the card".into(),
        ));
    }
    issue(db, &a.card_id, a.points, a.kind, &a.reason, &a.operator, None, now)
}

/// The adjustments the office issued, of one card or of all, by card and
/// sequence (as [`Ledger::adjustments`]), on either backend.
///
/// # Errors
/// A storage error.
pub fn adjustments_in(db: &dyn WarehouseDb, card_id: Option<[u8; 8]>) -> Result<Vec<AdjustmentRow>, LedgerError> {
    let (filter, params): (&str, Vec<crate::db::SqlValue>) = match &card_id {
        Some(c) => ("WHERE card_id = ?1", vec![c[..].into()]),
        None => ("", vec![]),
    };
    db.rows(
        &format!("SELECT {COLUMNS} FROM adjustments {filter} ORDER BY card_id, seq"),
        &params,
        |r| {
            let kind = r.text(2)?;
            let from = r.opt_blob(8)?;
            Ok(AdjustmentRow {
                card_id: card_of(r.blob(0)?)?,
                seq: r.int(1)?,
                kind: AdjustmentKind::parse(&kind).unwrap_or(AdjustmentKind::Correction),
                direction: r.text(3)?,
                points: r.int(4)?,
                reason: r.text(5)?,
                operator: r.text(6)?,
                issued_at: r.int(7)?,
                from_card: from.and_then(|f| f.try_into().ok()),
                state: if r.text(9)? == "applied" {
                    "applied".into()
                } else {
                    "pending".into()
                },
                applied_counter: r.opt_int(10)?,
            })
        },
    )
}

impl Ledger {
    /// Issues an issuer adjustment (goodwill or correction) for a card: the
    /// next adjustment sequence of that card, to be delivered by sync with
    /// the issuer MAC at the card's next tap at any till.
    ///
    /// # Errors
    /// [`LedgerError::Refused`] (nothing changed) for a card the office
    /// never issued or has hotlisted, zero points, an empty reason or
    /// operator, a goodwill debit, a replacement kind, or a debit that would take the card's
    /// books (with its pending adjustments) below zero; a storage error.
    pub fn issue_adjustment(&mut self, a: &NewAdjustment, now: u32) -> Result<AdjustmentRow, LedgerError> {
        let tx = self.conn.transaction()?;
        let row = issue_adjustment_in(&tx, a, now)?;
        tx.commit()?;
        Ok(row)
    }

    /// The adjustments the office issued, of one card or of all, by card
    /// and sequence, with their state (`pending` or `applied`).
    ///
    /// # Errors
    /// A storage error.
    pub fn adjustments(&self, card_id: Option<[u8; 8]>) -> Result<Vec<AdjustmentRow>, LedgerError> {
        adjustments_in(&self.conn, card_id)
    }

    /// The adjustments whose record has not been posted yet: what the sync
    /// feed serves to every till.
    ///
    /// # Errors
    /// A storage error.
    pub fn pending_adjustments(&self) -> Result<Vec<AdjustmentRow>, LedgerError> {
        // Not applied yet: stored `issued`, shown `pending`.
        Ok(adjustments_in(&self.conn, None)?
            .into_iter()
            .filter(|a| a.state == "pending")
            .collect())
    }
}

/// What posting an adjustment record found (see [`pair`]).
pub(crate) enum Paired {
    /// It matched; for a replacement credit, the old card to move the
    /// points off.
    Matched(Option<[u8; 8]>),
    /// No issued adjustment explains it: why.
    Mismatch(&'static str, serde_json::Value),
}

/// Direction, points, state, applied counter and old card of an issued
/// adjustment.
type IssuedRow = (String, u32, String, Option<u32>, Option<Vec<u8>>);

/// Matches a posted adjustment record (`kind`, `points`, sequence
/// `seq`, card counter `counter`) with the office's issued adjustment and
/// marks it applied.
pub(crate) fn pair(
    conn: &Connection,
    card: &[u8; 8],
    seq: u32,
    direction: &str,
    points: u32,
    counter: u32,
    now: u32,
) -> Result<Paired, LedgerError> {
    let found: Option<IssuedRow> = conn
        .prepare_cached(
            "SELECT direction, points, state, applied_counter, from_card FROM adjustments
             WHERE card_id = ?1 AND seq = ?2",
        )?
        .query_row(params![&card[..], seq], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()?;
    let Some((d, p, state, applied, from)) = found else {
        return Ok(Paired::Mismatch(
            "the office never issued this adjustment",
            serde_json::json!({"seq": seq}),
        ));
    };
    let issued = serde_json::json!({"seq": seq, "type": d, "points": p, "state": state, "applied_counter": applied});
    if d != direction || p != points {
        return Ok(Paired::Mismatch(
            "the record is not the adjustment the office issued",
            issued,
        ));
    }
    if state == "applied" && applied != Some(counter) {
        return Ok(Paired::Mismatch("the adjustment was applied twice", issued));
    }
    conn.prepare_cached(
        "UPDATE adjustments SET state = 'applied', applied_counter = ?3, applied_at = ?4 WHERE card_id = ?1 AND seq = ?2",
    )?
    .execute(params![&card[..], seq, counter, now])?;
    Ok(Paired::Matched(from.and_then(|f| f.try_into().ok())))
}

/// The card that replaced `card`, if the office replaced it.
pub(crate) fn replaced_by(conn: &Connection, card: &[u8; 8]) -> Result<Option<[u8; 8]>, LedgerError> {
    crate::books::replacement_link(conn, "new_card", "old_card", *card)
}

/// Records the posting that moves `points` off the replaced `old` card.
pub(crate) fn post_move(
    conn: &Connection,
    old: &[u8; 8],
    new: &[u8; 8],
    points: u32,
    seq: u32,
    now: u32,
) -> Result<(), LedgerError> {
    let nh = hex::encode_upper(new);
    let oh = hex::encode_upper(old);
    conn.prepare_cached(
        "INSERT INTO card_postings (card_id, delta, what, other_card, adjustment_seq, posted_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        &old[..],
        -i64::from(points),
        format!("moved {points} points to card {nh}"),
        &new[..],
        seq,
        now
    ])?;
    conn.prepare_cached(
        "INSERT INTO card_postings (card_id, delta, what, other_card, adjustment_seq, posted_at)
         VALUES (?1, 0, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        &new[..],
        format!("received {points} points from card {oh} (adjustment {seq})"),
        &old[..],
        seq,
        now
    ])?;
    Ok(())
}
