//! Back-office reports: exceptions, reconciliation, liability, customers,
//! and the aging of held gaps.

use std::collections::BTreeMap;

use rusqlite::{params, Connection};

use crate::db::{SqlValue, WarehouseDb};
use serde_json::json;
use tessera_protocol::profile::Date;
use tessera_rules::display::Zone;
use tessera_settlement::batch::Total;

use crate::{
    card_of, raise, CustomerRow, CustomersReport, Exception, ExceptionClass, Explanation, LedgerError, LiabilityReport,
    ReconciliationReport, ReconciliationRow, SegmentLegendRow,
};

const DAY: u32 = 86_400;

fn date_of(t: u32) -> String {
    Date::from_unix_days(t / DAY).to_string()
}

/// Every exception, oldest first.
pub(crate) fn exceptions(db: &dyn WarehouseDb) -> Result<Vec<Exception>, LedgerError> {
    let mut all = Vec::new();
    each_exception(db, |e| {
        all.push(e);
        Ok(())
    })?;
    Ok(all)
}

/// Calls `f` with every exception, oldest first, one at a time (memory
/// stays flat however many there are); stops at `f`'s first error.
pub(crate) fn each_exception(
    db: &dyn WarehouseDb,
    mut f: impl FnMut(Exception) -> Result<(), LedgerError>,
) -> Result<(), LedgerError> {
    db.each(
        "SELECT id, class, card_id, counter, terminal_id, batch_no, evidence, at FROM exceptions ORDER BY id",
        &[],
        &mut |r| {
            let class = r.text(1)?;
            f(Exception {
                id: r.int(0)?,
                class: ExceptionClass::parse(&class)
                    .ok_or_else(|| LedgerError::Storage(format!("stored exception class {class:?}")))?,
                card_id: r.opt_blob(2)?.map(card_of).transpose()?,
                counter: r.opt_int(3)?,
                terminal_id: r.opt_int(4)?,
                batch_no: r.opt_int(5)?,
                evidence: serde_json::from_str(&r.text(6)?)?,
                at: r.int(7)?,
            })
        },
    )
}

/// Reconciliation per terminal and settlement day (local days in `tz`),
/// from the books `db` (the SQL both backends speak).
pub(crate) fn reconciliation(
    db: &dyn WarehouseDb,
    date: Option<Date>,
    terminal: Option<u32>,
    tz: &Zone,
) -> Result<ReconciliationReport, LedgerError> {
    if let Some(t) = terminal {
        let known = db.first(
            "SELECT 1 FROM terminals WHERE terminal_id = ?1",
            &[t.into()],
            |_| Ok(()),
        )?;
        if known.is_none() {
            return Err(LedgerError::UnknownTerminal(t));
        }
    }
    // The local day `[start, end)` in Unix seconds.
    let (from, until) = match date {
        Some(d) => (
            Some(tz.start_of(d)),
            Some(tz.start_of(Date::from_unix_days(d.to_unix_days() + 1))),
        ),
        None => (None, None),
    };
    let mut rows: BTreeMap<(Date, u32), ReconciliationRow> = BTreeMap::new();
    let rows_of = |rows: &mut BTreeMap<(Date, u32), ReconciliationRow>, t_received: u32, terminal_id: u32| {
        let d = tz.date(t_received);
        let key = (d, terminal_id);
        rows.entry(key).or_insert_with(|| ReconciliationRow {
            date: d.to_string(),
            terminal_id,
            store_id: None,
            store: None,
            batches: 0,
            held_batches: 0,
            records: 0,
            card_transactions: 0,
            posted: 0,
            copies: 0,
            rejected: 0,
            held: 0,
            exceptions: 0,
            declared: BTreeMap::new(),
            stored: BTreeMap::new(),
            declines: BTreeMap::new(),
        });
        key
    };
    let params: [SqlValue; 3] = [from.into(), until.into(), terminal.into()];
    // (Each parameter's type is said where it is first used, for
    // PostgreSQL.)
    let filter =
        "(CAST(?1 AS BIGINT) IS NULL OR b.received_at >= ?1) AND (CAST(?2 AS BIGINT) IS NULL OR b.received_at < ?2)
                  AND (CAST(?3 AS BIGINT) IS NULL OR b.terminal_id = ?3)";
    db.each(
        &format!(
            "SELECT b.received_at, b.terminal_id, b.status, b.record_count, b.card_transactions,
                    b.duplicates, b.rejected, b.totals
             FROM batches b WHERE {filter}"
        ),
        &params,
        &mut |r| {
            let key = rows_of(&mut rows, r.int(0)?, r.int(1)?);
            let Some(row) = rows.get_mut(&key) else { return Ok(()) };
            row.batches += 1;
            row.held_batches += u32::from(r.text(2)? == "held");
            row.records += r.count(3)?;
            row.card_transactions += r.count(4)?;
            // Posted and held are counted below from the records' current
            // state: a record held at ingestion may have been posted since.
            row.copies += r.count(5)?;
            row.rejected += r.count(6)?;
            let totals: BTreeMap<String, Total> = serde_json::from_str(&r.text(7)?)?;
            for (ty, x) in totals {
                let e = row.declared.entry(ty).or_default();
                e.count += x.count;
                e.points += x.points;
            }
            Ok(())
        },
    )?;
    db.each(
        &format!(
            "SELECT b.received_at, b.terminal_id, c.tx_type, COUNT(*), CAST(SUM(c.points) AS BIGINT),
                    CAST(SUM(CASE WHEN c.status = 'posted' THEN 1 ELSE 0 END) AS BIGINT),
                    CAST(SUM(CASE WHEN c.status = 'pending' THEN 1 ELSE 0 END) AS BIGINT)
             FROM card_transactions c JOIN batches b ON b.terminal_id = c.terminal_id AND b.batch_no = c.batch_no
             WHERE {filter} GROUP BY b.terminal_id, b.batch_no, c.tx_type"
        ),
        &params,
        &mut |r| {
            let key = rows_of(&mut rows, r.int(0)?, r.int(1)?);
            let Some(row) = rows.get_mut(&key) else { return Ok(()) };
            let e = row.stored.entry(r.text(2)?).or_default();
            e.count += r.count(3)?;
            e.points += r.count(4)?;
            row.posted += r.count(5)?;
            row.held += r.count(6)?;
            Ok(())
        },
    )?;
    db.each(
        &format!(
            "SELECT b.received_at, b.terminal_id, COALESCE(d.reason, d.verdict), COUNT(*)
             FROM terminal_records d JOIN batches b ON b.terminal_id = d.terminal_id AND b.batch_no = d.batch_no
             WHERE d.verdict IN ('decline', 'refer') AND {filter} GROUP BY b.terminal_id, b.batch_no, 3"
        ),
        &params,
        &mut |r| {
            let key = rows_of(&mut rows, r.int(0)?, r.int(1)?);
            if let Some(row) = rows.get_mut(&key) {
                *row.declines.entry(r.text(2)?).or_insert(0) += r.count(3)?;
            }
            Ok(())
        },
    )?;
    let mut exceptions_by_class = BTreeMap::new();
    db.each(
        "SELECT at, terminal_id, class, COUNT(*) FROM exceptions
         WHERE (CAST(?1 AS BIGINT) IS NULL OR at >= ?1) AND (CAST(?2 AS BIGINT) IS NULL OR at < ?2)
           AND (CAST(?3 AS BIGINT) IS NULL OR terminal_id = ?3)
         GROUP BY 1, 2, 3",
        &params,
        &mut |r| {
            let (at, t, class, n): (u32, Option<u32>, String, u64) =
                (r.int(0)?, r.opt_int(1)?, r.text(2)?, r.count(3)?);
            *exceptions_by_class.entry(class).or_insert(0) += n;
            if let Some(row) = t.and_then(|t| rows.get_mut(&(tz.date(at), t))) {
                row.exceptions += n;
            }
            Ok(())
        },
    )?;
    let mut rows: Vec<ReconciliationRow> = rows.into_values().collect();
    for row in &mut rows {
        if let Some((id, name)) = db.first(
            "SELECT s.store_id, s.name FROM terminals t JOIN stores s ON s.store_id = t.store_id
             WHERE t.terminal_id = ?1",
            &[row.terminal_id.into()],
            |r| Ok((r.int(0)?, r.text(1)?)),
        )? {
            row.store_id = Some(id);
            row.store = Some(name);
        }
    }
    Ok(ReconciliationReport {
        rows,
        exceptions_by_class,
    })
}

/// Points outstanding and their value, from the books `db` (the SQL both
/// backends speak).
pub(crate) fn liability(
    db: &dyn crate::db::WarehouseDb,
    minor_units_per_point: u64,
) -> Result<LiabilityReport, LedgerError> {
    let (cards, points, card_balances, unexplained, hot_cards, hot_points) = db
        .first(
            "SELECT COUNT(*), CAST(COALESCE(SUM(shadow_balance), 0) AS BIGINT),
                    CAST(COALESCE(SUM(card_balance), 0) AS BIGINT), CAST(COALESCE(SUM(discrepancy), 0) AS BIGINT),
                    COUNT(h.card_id),
                    CAST(COALESCE(SUM(CASE WHEN h.card_id IS NOT NULL THEN shadow_balance END), 0) AS BIGINT)
             FROM cards c LEFT JOIN hotlist h ON h.card_id = c.card_id",
            &[],
            |r| Ok((r.count(0)?, r.i64(1)?, r.i64(2)?, r.i64(3)?, r.count(4)?, r.i64(5)?)),
        )?
        .unwrap_or_default();
    let (pending_records, pending_points) = db
        .first(
            "SELECT COUNT(*), CAST(COALESCE(SUM(delta), 0) AS BIGINT) FROM card_transactions WHERE status = 'pending'",
            &[],
            |r| Ok((r.count(0)?, r.i64(1)?)),
        )?
        .unwrap_or_default();
    let rate = i64::try_from(minor_units_per_point).unwrap_or(i64::MAX);
    Ok(LiabilityReport {
        cards,
        points_outstanding: points,
        minor_units_per_point,
        value_minor: points.saturating_mul(rate),
        card_balances,
        unexplained_points: unexplained,
        hotlisted_cards: hot_cards,
        hotlisted_points: hot_points,
        pending_records,
        pending_points,
    })
}

/// See [`crate::Ledger::verify`]: each line is one thing wrong.
pub(crate) fn verify(conn: &Connection, integrity: bool) -> Result<Vec<String>, LedgerError> {
    let mut problems = Vec::new();
    if integrity {
        let mut stmt = conn.prepare("PRAGMA integrity_check")?;
        let lines: Vec<String> = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
        if lines != ["ok"] {
            problems.extend(lines.into_iter().map(|l| format!("storage: {l}")));
        }
    }
    problems.extend(books_problems(conn)?);
    Ok(problems)
}

/// The books against the postings (the SQL both backends speak): per
/// card, the shadow balance is the sum of its posted records (and of its
/// replacement postings), the last counter its highest posted one, the
/// certified balance its last record's, the held count its pending
/// records, and posted balances chain; per terminal, the last batch is its
/// highest posted one. One line per problem, at most 20 per check.
pub(crate) fn books_problems(db: &dyn WarehouseDb) -> Result<Vec<String>, LedgerError> {
    let mut problems = Vec::new();
    let checks: [(&str, &str); 5] = [
        (
            "shadow balance is not the sum of its posted records",
            "SELECT card_id, a, b FROM (
                 SELECT c.card_id, c.shadow_balance AS a,
                        CAST((SELECT COALESCE(SUM(t.delta), 0) FROM card_transactions t
                              WHERE t.card_id = c.card_id AND t.status = 'posted')
                           + (SELECT COALESCE(SUM(p.delta), 0) FROM card_postings p WHERE p.card_id = c.card_id)
                             AS BIGINT) AS b
                 FROM cards c) x WHERE a != b ORDER BY card_id",
        ),
        (
            "last counter is not its highest posted record",
            "SELECT card_id, a, b FROM (
                 SELECT c.card_id, c.last_counter AS a,
                        (SELECT COALESCE(MAX(t.counter), 0) FROM card_transactions t
                         WHERE t.card_id = c.card_id AND t.status = 'posted') AS b
                 FROM cards c) x WHERE a != b ORDER BY card_id",
        ),
        (
            "certified balance is not its last posted record's",
            "SELECT c.card_id, c.card_balance, t.balance_after FROM cards c
                 JOIN card_transactions t ON t.card_id = c.card_id AND t.counter = c.last_counter
                 WHERE c.last_counter > 0 AND t.status = 'posted' AND c.card_balance != t.balance_after
                 ORDER BY c.card_id",
        ),
        (
            "held-record count is not its pending records'",
            "SELECT card_id, a, b FROM (
                 SELECT c.card_id, c.pending AS a, (SELECT COUNT(*) FROM card_transactions t
                     WHERE t.card_id = c.card_id AND t.status = 'pending') AS b
                 FROM cards c) x WHERE a != b ORDER BY card_id",
        ),
        (
            "posted records' balances do not chain (and no exception names it)",
            "SELECT t.card_id, t.counter, t.balance_after FROM card_transactions t
                 JOIN card_transactions p ON p.card_id = t.card_id AND p.counter = t.counter - 1
                 WHERE t.status = 'posted' AND p.status = 'posted' AND t.balance_after != p.balance_after + t.delta
                   AND NOT EXISTS (SELECT 1 FROM exceptions e WHERE e.card_id = t.card_id AND e.counter = t.counter
                                   AND e.class = 'balance-discontinuity')
                 ORDER BY t.card_id, t.counter",
        ),
    ];
    for (what, sql) in checks {
        let mut n = 0;
        db.each(sql, &[], &mut |r| {
            n += 1;
            if n <= 20 {
                problems.push(format!(
                    "card {}: {what} ({} vs {})",
                    hex::encode_upper(r.blob(0)?),
                    r.i64(1)?,
                    r.i64(2)?
                ));
            }
            Ok(())
        })?;
        if n > 20 {
            problems.push(format!("… and {} more cards: {what}", n - 20));
        }
    }
    // Each terminal's chain position against its posted batches.
    db.each(
        "SELECT terminal_id, a, b FROM (
             SELECT t.terminal_id, t.last_batch_no AS a, (SELECT COALESCE(MAX(b.batch_no), 0) FROM batches b
                 WHERE b.terminal_id = t.terminal_id AND b.status = 'posted') AS b
             FROM terminals t) x WHERE a != b ORDER BY terminal_id",
        &[],
        &mut |r| {
            problems.push(format!(
                "terminal {}: last batch {} is not its highest posted batch {}",
                r.i64(0)?,
                r.i64(1)?,
                r.i64(2)?
            ));
            Ok(())
        },
    )?;
    Ok(problems)
}

/// See [`Explanation`]: from the books `db` (the SQL both backends speak).
pub(crate) fn explanation(db: &dyn WarehouseDb) -> Result<Explanation, LedgerError> {
    let one = |sql: &str| -> Result<i64, LedgerError> { Ok(db.first(sql, &[], |r| r.i64(0))?.unwrap_or(0)) };
    let (cards, points_outstanding, unexplained_points) = db
        .first(
            "SELECT COUNT(*), CAST(COALESCE(SUM(shadow_balance), 0) AS BIGINT),
                    CAST(COALESCE(SUM(discrepancy), 0) AS BIGINT) FROM cards",
            &[],
            |r| Ok((r.count(0)?, r.i64(1)?, r.i64(2)?)),
        )?
        .unwrap_or_default();
    // Replacements move points between cards' books without a card
    // record (`card_postings`); they sum to zero once both sides posted.
    let posted_points = one(
        "SELECT CAST((SELECT COALESCE(SUM(delta), 0) FROM card_transactions WHERE status = 'posted')
              + (SELECT COALESCE(SUM(delta), 0) FROM card_postings) AS BIGINT)",
    )?;
    let cards_off_books = u64::try_from(one("SELECT COUNT(*) FROM cards c WHERE c.shadow_balance != (
             SELECT COALESCE(SUM(t.delta), 0) FROM card_transactions t
             WHERE t.card_id = c.card_id AND t.status = 'posted')
             + (SELECT COALESCE(SUM(p.delta), 0) FROM card_postings p WHERE p.card_id = c.card_id)")?)
    .unwrap_or(0);
    let by_state: BTreeMap<String, (u64, i64)> = db
        .rows(
            "SELECT decision, COUNT(*), CAST(COALESCE(SUM(points), 0) AS BIGINT) FROM card_transactions GROUP BY 1",
            &[],
            |r| Ok((r.text(0)?, (r.count(1)?, r.i64(2)?))),
        )?
        .into_iter()
        .collect();
    let pending_records =
        u64::try_from(one("SELECT COUNT(*) FROM card_transactions WHERE status = 'pending'")?).unwrap_or(0);
    let exceptions: BTreeMap<String, u64> = db
        .rows("SELECT class, COUNT(*) FROM exceptions GROUP BY 1", &[], |r| {
            Ok((r.text(0)?, r.count(1)?))
        })?
        .into_iter()
        .collect();
    let state = |s: &str| by_state.get(s).copied().unwrap_or((0, 0));
    let (matched_records, matched_points) = state(crate::matching::MATCHED);
    let (awaiting_records, awaiting_points) = state(crate::matching::AWAITING);
    let (orphan_records, orphan_points) = state(crate::matching::ORPHAN);
    let mut problems = Vec::new();
    if points_outstanding != posted_points || cards_off_books > 0 {
        problems.push(format!(
            "liability {points_outstanding} is not the posted records' {posted_points} ({cards_off_books} cards off their books)"
        ));
    }
    if orphan_records > 0 {
        problems.push(format!(
            "{orphan_records} records ({orphan_points} points) no approved decision explains"
        ));
    }
    if awaiting_records > 0 {
        problems.push(format!(
            "{awaiting_records} records ({awaiting_points} points) wait for their origin till's decision"
        ));
    }
    if pending_records > 0 {
        problems.push(format!("{pending_records} records held beyond a gap"));
    }
    if unexplained_points != 0 {
        problems.push(format!("{unexplained_points} points of certified balance jumps"));
    }
    for (class, n) in &exceptions {
        problems.push(format!("{n} {class} exceptions"));
    }
    Ok(Explanation {
        cards,
        points_outstanding,
        posted_points,
        cards_off_books,
        matched_records,
        matched_points,
        awaiting_records,
        awaiting_points,
        orphan_records,
        orphan_points,
        pending_records,
        unexplained_points,
        exceptions,
        explained: problems.is_empty(),
        problems,
    })
}

#[derive(Default)]
struct Agg {
    name: Option<String>,
    cards: Vec<String>,
    transactions: u64,
    days: std::collections::BTreeSet<u32>,
    first: u32,
    last: u32,
    earned: i64,
    redeemed: i64,
    spend: i64,
    stores: BTreeMap<(Option<u32>, String), u64>,
    categories: BTreeMap<String, i64>,
}

/// A segment's key in reports: its name in snake case (`champions`,
/// `cannot_lose_them`, …).
pub(crate) fn segment_key(segment: tessera_analytics::rfm::Segment) -> String {
    serde_json::to_value(segment)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The customers report as of `now`.
pub(crate) fn customers(db: &dyn crate::db::WarehouseDb, now: u32) -> Result<CustomersReport, LedgerError> {
    // Issuer adjustments are no visits: they stay out of frequency and
    // recency.
    // Key: Ok(customer id) or Err(card hex) for anonymous cards.
    let mut aggs: BTreeMap<Result<u64, String>, Agg> = BTreeMap::new();
    // The purchase facts are the approve decision's (whichever copy of the
    // card's record posted first); a refund's money is its original's, in
    // the share of the points refunded; the store is the one the deciding
    // till was assigned to when the decision posted (else the till's store
    // now, else the till itself).
    // One row per transaction and category of its decision (the
    // categories of purchases only), in card and counter order: a
    // transaction's rows are adjacent, and counted once.
    let mut last: Option<(Vec<u8>, i64)> = None;
    db.each(
        "SELECT c.card_id, c.customer_id, k.name, t.card_time, t.tx_type, t.points,
                CASE WHEN t.tx_type = 'earn' THEN d.purchase_minor
                     WHEN t.tx_type = 'refund-earn' THEN (
                         SELECT od.purchase_minor * t.points / o.points FROM card_transactions o
                         JOIN terminal_records od ON od.terminal_id = o.origin_terminal AND od.seq = o.origin_seq
                             AND od.kind = 'decision' AND od.verdict = 'approve' AND od.card_id = o.card_id
                             AND od.card_counter = o.counter
                         WHERE o.card_id = t.card_id AND o.counter = t.reference AND o.tx_type = 'earn'
                             AND o.points > 0) END,
                t.origin_terminal, s.store_id, s.name, t.counter, dc.category, dc.amount_minor
         FROM card_transactions t JOIN cards c ON c.card_id = t.card_id
         LEFT JOIN customers k ON k.customer_id = c.customer_id
         LEFT JOIN terminal_records d ON d.terminal_id = t.origin_terminal AND d.seq = t.origin_seq
             AND d.kind = 'decision' AND d.verdict = 'approve' AND d.card_id = t.card_id AND d.card_counter = t.counter
         LEFT JOIN terminals m ON m.terminal_id = t.origin_terminal
         LEFT JOIN stores s ON s.store_id = COALESCE(d.store_id, m.store_id)
         LEFT JOIN decision_categories dc ON t.tx_type = 'earn' AND dc.terminal_id = d.terminal_id
             AND dc.seq = d.seq
         WHERE t.status = 'posted' AND t.tx_type NOT IN ('issuer-credit', 'issuer-debit')
         ORDER BY c.card_id, t.counter, dc.category",
        &[],
        &mut |r| {
            let card_id = r.blob(0)?;
            let counter = r.i64(10)?;
            let customer: Option<u64> = r.opt_int(1)?;
            let again = last.as_ref().is_some_and(|(c, n)| *c == card_id && *n == counter);
            if again {
                // Another category of the same purchase.
                let card = hex::encode_upper(&card_id);
                let key = customer.ok_or(card);
                if let (Some(a), Some(cat)) = (aggs.get_mut(&key), r.opt_text(11)?) {
                    *a.categories.entry(cat).or_insert(0) += r.opt_i64(12)?.unwrap_or(0);
                }
                return Ok(());
            }
            last = Some((card_id.clone(), counter));
            let card = hex::encode_upper(&card_id);
            let key = customer.ok_or_else(|| card.clone());
            let a = aggs.entry(key).or_insert_with(|| Agg {
                first: u32::MAX,
                ..Agg::default()
            });
            if a.cards.last() != Some(&card) {
                a.cards.push(card);
            }
            a.name = r.opt_text(2)?;
            let time: u32 = r.int(3)?;
            let ty: String = r.text(4)?;
            let points: i64 = r.i64(5)?;
            let money: i64 = r.opt_i64(6)?.unwrap_or(0);
            a.transactions += 1;
            a.days.insert(time / DAY);
            a.first = a.first.min(time);
            a.last = a.last.max(time);
            match ty.as_str() {
                "earn" => {
                    a.earned += points;
                    a.spend += money;
                    if let Some(cat) = r.opt_text(11)? {
                        *a.categories.entry(cat).or_insert(0) += r.opt_i64(12)?.unwrap_or(0);
                    }
                }
                "refund-earn" => {
                    a.earned -= points;
                    a.spend -= money;
                }
                "redeem" => a.redeemed += points,
                "refund-redeem" => a.redeemed -= points,
                _ => {}
            }
            let place = match (r.opt_int::<u32>(8)?, r.opt_text(9)?) {
                (Some(id), Some(name)) => (Some(id), name),
                _ => (None, format!("terminal {}", r.int::<u32>(7)?)),
            };
            *a.stores.entry(place).or_insert(0) += 1;
            Ok(())
        },
    )?;
    // RFM on money: quintile scores within this population
    // (docs/analytics.md), on days since the last visit, visit days and
    // money spent.
    let population: Vec<tessera_analytics::rfm::RfmInput> = aggs
        .values()
        .map(|a| tessera_analytics::rfm::RfmInput {
            recency_days: now.saturating_sub(a.last) / DAY,
            visits: u32::try_from(a.days.len()).unwrap_or(u32::MAX),
            spend_minor: a.spend,
        })
        .collect();
    let scores = tessera_analytics::rfm::score(&population);
    let mut rows = Vec::new();
    let mut segments = BTreeMap::new();
    for ((key, a), score) in aggs.into_iter().zip(scores) {
        let visits = a.days.len() as u64;
        let recency_days = now.saturating_sub(a.last) / DAY;
        // Visits in the 30 days up to `now` (days `now/DAY - 29 ..= now/DAY`):
        // counted, never extrapolated from a shorter history.
        let today = now / DAY;
        let recent = a.days.range(today.saturating_sub(29)..=today).count();
        let seg = segment_key(score.segment);
        *segments.entry(seg.clone()).or_insert(0u64) += 1;
        let favourite = a
            .stores
            .iter()
            .max_by_key(|(place, n)| (**n, std::cmp::Reverse((*place).clone())))
            .map(|(place, _)| place.clone());
        rows.push(CustomerRow {
            customer_id: key.ok(),
            name: a.name,
            cards: a.cards,
            transactions: a.transactions,
            visits,
            first_visit: date_of(a.first),
            last_visit: date_of(a.last),
            recency_days,
            #[allow(clippy::cast_precision_loss)]
            visits_per_30_days: recent as f64,
            points_earned: a.earned,
            points_redeemed: a.redeemed,
            spend_minor: u64::try_from(a.spend).unwrap_or(0),
            favourite_category: a
                .categories
                .iter()
                .max_by(|x, y| x.1.cmp(y.1).then_with(|| y.0.cmp(x.0)))
                .map(|(c, _)| c.clone()),
            favourite_store_id: favourite.as_ref().and_then(|p| p.0),
            favourite_store: favourite.map(|p| p.1),
            rfm: format!("R{}F{}M{}", score.r, score.f, score.m),
            segment: seg,
        });
    }
    let legend = tessera_analytics::rfm::legend()
        .iter()
        .map(|l| SegmentLegendRow {
            segment: segment_key(l.segment),
            name: l.name.to_owned(),
            rule: l.rule.to_owned(),
            meaning: l.meaning.to_owned(),
            action: l.action.to_owned(),
        })
        .collect();
    Ok(CustomersReport {
        as_of: date_of(now),
        rows,
        segments,
        legend,
    })
}

/// Raises the `gap` exceptions due (see [`crate::Ledger::age_gaps`]).
pub(crate) fn age_gaps(conn: &Connection, now: u32, older_than_secs: u32) -> Result<usize, LedgerError> {
    let mut stmt = conn.prepare(
        "SELECT c.card_id, c.last_counter, MIN(t.counter), MIN(t.received_at), COUNT(*)
         FROM cards c JOIN card_transactions t ON t.card_id = c.card_id AND t.status = 'pending'
         WHERE c.pending > 0 GROUP BY c.card_id",
    )?;
    let due: Vec<(Vec<u8>, u32, u32, u32, u32)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?
        .collect::<Result<_, _>>()?;
    let mut raised = 0;
    for (card, last, first_held, since, held) in due {
        if now.saturating_sub(since) < older_than_secs {
            continue;
        }
        let missing = last + 1;
        let known: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM exceptions WHERE card_id = ?1 AND class = 'gap' AND counter = ?2)",
            params![card, missing],
            |r| r.get(0),
        )?;
        if known {
            continue;
        }
        let card = card_of(card)?;
        let evidence = json!({
            "missing_from": missing,
            "missing_to": first_held - 1,
            "held_records": held,
            "held_since": since,
            "aged_secs": now.saturating_sub(since),
        });
        raise(
            conn,
            ExceptionClass::Gap,
            Some(card),
            Some(missing),
            None,
            None,
            evidence,
            now,
        )?;
        raised += 1;
    }
    // Batches held for a predecessor that never came (lost in transit or
    // in a storage rollback, and not re-sent).
    let held: Vec<(u32, u32, u32)> = conn
        .prepare("SELECT terminal_id, batch_no, received_at FROM batches WHERE status = 'held' AND received_at < ?1")?
        .query_map([now.saturating_sub(older_than_secs)], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<Result<_, _>>()?;
    for (tid, batch_no, since) in held {
        let Some(missing) = crate::ingest::missing_from(conn, tid, batch_no)? else {
            continue;
        };
        let known: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM exceptions WHERE class = 'missing-batch' AND terminal_id = ?1
                 AND json_extract(evidence, '$.missing_from') = ?2)",
            params![tid, missing],
            |r| r.get(0),
        )?;
        if known {
            continue;
        }
        let evidence = json!({
            "why": "a batch of this till is held for an earlier one the ledger does not have; the till was asked to re-send it",
            "missing_from": missing,
            "held_batch_no": batch_no,
            "held_since": since,
            "aged_secs": now.saturating_sub(since),
        });
        raise(
            conn,
            ExceptionClass::MissingBatch,
            None,
            None,
            Some(tid),
            Some(batch_no),
            evidence,
            now,
        )?;
        raised += 1;
    }
    // Card records whose origin till never settled their decision.
    raised += crate::matching::resolve(conn, None, Some(now.saturating_sub(older_than_secs)), now)?.len();
    Ok(raised)
}
