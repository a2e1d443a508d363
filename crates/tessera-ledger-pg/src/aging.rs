//! The aging of gaps on PostgreSQL, as the SQLite ledger ages them
//! (`Ledger::age_gaps`, `docs/settlement.md`): what waited too long for
//! something that never came becomes an exception, once.
//!
//! * a card whose oldest held record waited longer than the period for
//!   the counters before it: `gap` (from the first missing counter to the
//!   one before the first held);
//! * a batch held longer for an earlier batch of its till the office does
//!   not have: `missing-batch`;
//! * a card record waiting longer for its origin till's decision: matched
//!   when that chain holds it by now, else `orphan` ("the origin till has
//!   not settled this decision within the aging period").
//!
//! Each part runs in a transaction of its own that first takes the
//! aging's advisory lock (two servers aging at once name each gap once)
//! and then the rows it reads in the order posting locks them: the
//! terminals' rows for the held batches, the cards' rows (in card id
//! order) for the held and waiting records, so that what it names is what
//! is still missing when it commits.

use postgres::Transaction;
use tessera_ledger::LedgerError;

use crate::posting::{match_records, raise_at, raise_on, PgLedger};
use crate::PgError;

/// The key of the aging's transaction-scoped advisory lock: ASCII
/// "tsrage" as a number.
pub(crate) const AGING_LOCK: i64 = 0x7473_7261_6765;

fn begin<'a>(c: &'a mut postgres::Client) -> Result<Transaction<'a>, PgError> {
    let mut tx = c.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&AGING_LOCK])?;
    Ok(tx)
}

impl PgLedger {
    /// Raises the exceptions of what waited longer than `older_than_secs`
    /// at `now` (module docs); returns how many were raised.
    ///
    /// # Errors
    /// A storage error ([`LedgerError::Unavailable`] when the database
    /// cannot be reached: nothing of the part that failed was raised).
    pub fn age_gaps(&mut self, now: u32, older_than_secs: u32) -> Result<usize, LedgerError> {
        let cutoff = i64::from(now.saturating_sub(older_than_secs));
        let now64 = i64::from(now);
        Ok(self.with(|c| {
            let mut raised = 0;
            // Held records: the cards locked, then their gaps.
            let mut tx = begin(c)?;
            tx.query(
                "SELECT card_id FROM cards WHERE pending > 0 ORDER BY card_id FOR UPDATE",
                &[],
            )?;
            let due = tx.query(
                "SELECT c.card_id, c.last_counter, MIN(t.counter), MIN(t.received_at), COUNT(*)
                 FROM cards c JOIN card_transactions t ON t.card_id = c.card_id AND t.status = 'pending'
                 WHERE c.pending > 0 GROUP BY c.card_id, c.last_counter
                 HAVING MIN(t.received_at) <= $1
                    AND NOT EXISTS (SELECT 1 FROM exceptions e
                                    WHERE e.card_id = c.card_id AND e.class = 'gap' AND e.counter = c.last_counter + 1)
                 ORDER BY c.card_id",
                &[&cutoff],
            )?;
            for r in &due {
                let (card, last, first_held, since, held): (Vec<u8>, i64, i64, i64, i64) =
                    (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
                let evidence = serde_json::json!({
                    "missing_from": last + 1,
                    "missing_to": first_held - 1,
                    "held_records": held,
                    "held_since": since,
                    "aged_secs": now64 - since,
                });
                raise_at(&mut tx, "gap", Some(&card), Some(last + 1), None, None, &evidence, now)?;
                raised += 1;
            }
            tx.commit()?;

            // Held batches: their tills locked, then the first batch each
            // lacks.
            let mut tx = begin(c)?;
            tx.query(
                "SELECT terminal_id FROM terminals WHERE terminal_id IN (
                     SELECT terminal_id FROM batches WHERE status = 'held' AND received_at < $1)
                 ORDER BY terminal_id FOR UPDATE",
                &[&cutoff],
            )?;
            let held = tx.query(
                "SELECT b.terminal_id, b.batch_no, b.received_at,
                        (SELECT MIN(n.n) FROM generate_series(t.last_batch_no + 1, b.batch_no - 1) AS n(n)
                         WHERE NOT EXISTS (SELECT 1 FROM batches x WHERE x.terminal_id = b.terminal_id
                                           AND x.batch_no = n.n))
                 FROM batches b JOIN terminals t ON t.terminal_id = b.terminal_id
                 WHERE b.status = 'held' AND b.received_at < $1
                 ORDER BY b.terminal_id, b.batch_no",
                &[&cutoff],
            )?;
            for r in &held {
                let (tid, batch_no, since, missing): (i64, i64, i64, Option<i64>) =
                    (r.get(0), r.get(1), r.get(2), r.get(3));
                let Some(missing) = missing else { continue };
                let known = tx
                    .query_opt(
                        "SELECT 1 FROM exceptions WHERE class = 'missing-batch' AND terminal_id = $1
                             AND (evidence::jsonb ->> 'missing_from')::bigint = $2",
                        &[&tid, &missing],
                    )?
                    .is_some();
                if known {
                    continue;
                }
                let evidence = serde_json::json!({
                    "why": "a batch of this till is held for an earlier one the ledger does not have; the till was asked to re-send it",
                    "missing_from": missing,
                    "held_batch_no": batch_no,
                    "held_since": since,
                    "aged_secs": now64 - since,
                });
                raise_at(&mut tx, "missing-batch", None, None, Some(tid), Some(batch_no), &evidence, now)?;
                raised += 1;
            }
            tx.commit()?;

            // Records waiting for their origin's decision: their cards
            // locked; matched (or orphans) when the origin's chain holds
            // the decision's place by now, else orphans of the aging.
            let mut tx = begin(c)?;
            tx.query(
                "SELECT card_id FROM cards WHERE card_id IN (
                     SELECT card_id FROM card_transactions WHERE decision = 'awaiting' AND received_at < $1)
                 ORDER BY card_id FOR UPDATE",
                &[&cutoff],
            )?;
            let before = orphans(&mut tx)?;
            match_records(&mut tx, "t.received_at < $1", &[&cutoff], now)?;
            raised += usize::try_from(orphans(&mut tx)? - before).unwrap_or(0);
            let aged = tx.query(
                "UPDATE card_transactions SET decision = 'orphan'
                 WHERE decision = 'awaiting' AND received_at < $1
                 RETURNING card_id, counter, tx_type, points, origin_terminal, origin_seq, received_at,
                           terminal_id, batch_no",
                &[&cutoff],
            )?;
            for r in &aged {
                let card: Vec<u8> = r.get(0);
                let received_at: i64 = r.get(6);
                // As on SQLite (`matching::evidence`).
                let evidence = serde_json::json!({
                    "seq": null,
                    "why": "the origin till has not settled this decision within the aging period",
                    "origin_terminal": r.get::<_, i64>(4),
                    "origin_seq": r.get::<_, i64>(5),
                    "type": r.get::<_, &str>(2),
                    "points": r.get::<_, i64>(3),
                    "held_at_origin": {"received_at": received_at, "aged_secs": now64 - received_at},
                });
                raise_on(&mut tx, "orphan", &card, r.get(1), (r.get(7), r.get(8), now), &evidence)?;
                raised += 1;
            }
            if !aged.is_empty() {
                // Their facts change with their decision.
                let (cards, counters): (Vec<Vec<u8>>, Vec<i64>) =
                    aged.iter().map(|r| (r.get::<_, Vec<u8>>(0), r.get::<_, i64>(1))).unzip();
                tx.execute(
                    "INSERT INTO wh_touched (card_id, counter) SELECT * FROM unnest($1::bytea[], $2::bigint[])
                     ON CONFLICT DO NOTHING",
                    &[&cards, &counters],
                )?;
            }
            tessera_ledger::warehouse::maintain(&crate::db::PgDb::new(&mut tx), &self.wh_zone)
                .map_err(PgError::Warehouse)?;
            tx.commit()?;
            Ok(raised)
        })?)
    }
}

fn orphans(tx: &mut Transaction<'_>) -> Result<i64, PgError> {
    Ok(tx
        .query_one(
            "SELECT COUNT(*) FROM exceptions WHERE class IN ('orphan', 'void-contradicted')",
            &[],
        )?
        .get(0))
}
