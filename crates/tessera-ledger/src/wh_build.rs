//! Maintenance of the warehouse (`docs/warehouse.md`): the `wh_` tables,
//! derived from the books.
//!
//! Every change of the books that a fact depends on notes the card
//! transactions it touched in the connection's temporary `wh_touched`
//! table (posting a record, releasing a pending one, a decision arriving,
//! a card registered, replaced or its customer erased). [`maintain`] then
//! brings the dimensions and facts of exactly those rows up to date with
//! set-based SQL, inside the same transaction. [`rebuild`] empties the
//! warehouse and runs the same statements over every posted transaction,
//! so the two cannot disagree.
//!
//! The statements are plain SQL that PostgreSQL also runs (`INSERT ...
//! ON CONFLICT`, correlated subqueries, `LIMIT`): local dates come from
//! `wh_dim_date`, whose rows hold the Unix range of each local day,
//! computed in Rust from the warehouse's zone.
//!
//! Every maintenance statement is driven by the touched rows:
//! `wh_touched t CROSS JOIN card_transactions ct CROSS JOIN
//! terminal_records d`, the join conditions in `WHERE`. SQLite keeps the
//! tables of a `CROSS JOIN` in the order written; without it, having no
//! statistics of the temporary tables, it chose to scan the whole books or
//! the whole journal and look each row up in the few touched ones — every
//! batch, so ingestion slowed down with the size of the books
//! (BENCHMARKS.md). Other databases read it as the inner join it is.

use tessera_protocol::profile::Date;
use tessera_rules::display::Zone;
use tessera_rules::offers::{CampaignKind, CampaignSet};
use tessera_settlement::record::Entry;

use crate::db::{SqlValue, WarehouseDb};
use crate::LedgerError;

/// The amount of an approved purchase per category: its basket lines
/// summed per category (`from_basket`), or, without a basket, the purchase
/// amount shared equally among its journaled categories (the remainder of
/// the division to the first). Categories in first-seen order.
pub(crate) fn category_amounts(e: &Entry) -> Vec<(String, i64, bool)> {
    if e.tx_type.as_deref() != Some("earn") {
        return Vec::new();
    }
    let mut out: Vec<(String, i64, bool)> = Vec::new();
    if !e.basket.is_empty() {
        for line in &e.basket {
            let amount = i64::try_from(line.amount_minor).unwrap_or(i64::MAX);
            match out.iter_mut().find(|(c, _, _)| *c == line.category) {
                Some(x) => x.1 = x.1.saturating_add(amount),
                None => out.push((line.category.clone(), amount, true)),
            }
        }
        return out;
    }
    let mut cats: Vec<&String> = Vec::new();
    for c in &e.categories {
        if !cats.contains(&c) {
            cats.push(c);
        }
    }
    let Some(total) = e.purchase_minor.and_then(|p| i64::try_from(p).ok()) else {
        return Vec::new();
    };
    let Ok(n) = i64::try_from(cats.len()) else {
        return Vec::new();
    };
    if n == 0 {
        return Vec::new();
    }
    let (share, rest) = (total / n, total % n);
    cats.iter()
        .enumerate()
        .map(|(i, c)| ((*c).clone(), if i == 0 { share + rest } else { share }, false))
        .collect()
}

/// The decision a card transaction acted on, as a join condition on
/// `terminal_records d` and `card_transactions ct`: the approve decision of
/// its origin till, at its origin sequence, for the same card and counter.
const DECISION: &str = "d.terminal_id = ct.origin_terminal AND d.seq = ct.origin_seq AND d.kind = 'decision'
     AND d.verdict = 'approve' AND d.card_id = ct.card_id AND d.card_counter = ct.counter";

/// ISO 8601 week label of a day: `2026-W49`.
pub(crate) fn iso_week(date: Date) -> String {
    let days = date.days_since_epoch();
    // 1970-01-01 was a Thursday; Monday = 1.
    let weekday = (days + 3).rem_euclid(7) + 1;
    let thursday = Date::from_days_since_epoch(days - weekday + 4);
    let jan1 = Date::new(thursday.year, 1, 1).map_or(days, Date::days_since_epoch);
    let week = (thursday.days_since_epoch() - jan1) / 7 + 1;
    format!("{:04}-W{week:02}", thursday.year)
}

/// Makes `wh_dim_date` cover the local days of `from..=to` (Unix seconds),
/// keeping it one contiguous run of days.
fn cover_days(db: &dyn WarehouseDb, zone: &Zone, from: u32, to: u32) -> Result<(), LedgerError> {
    let (lo, hi) = (zone.date(from).days_since_epoch(), zone.date(to).days_since_epoch());
    let have: Option<(i64, i64)> = db
        .first("SELECT MIN(date_key), MAX(date_key) FROM wh_dim_date", &[], |r| {
            Ok(r.opt_i64(0)?.zip(r.opt_i64(1)?))
        })?
        .flatten();
    let ranges: Vec<(i64, i64)> = match have {
        None => vec![(lo, hi)],
        Some((a, b)) => vec![(lo, a - 1), (b + 1, hi)],
    };
    for (a, b) in ranges {
        for day in a..=b {
            let date = Date::from_days_since_epoch(day);
            let next = Date::from_days_since_epoch(day + 1);
            db.run(
                "INSERT INTO wh_dim_date (date_key, start_unix, end_unix, date, year, month, day, month_label,
                     iso_week, weekday)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT (date_key) DO NOTHING",
                &[
                    SqlValue::Int(day),
                    SqlValue::from(zone.start_of(date)),
                    SqlValue::from(zone.start_of(next)),
                    SqlValue::Text(date.to_string()),
                    SqlValue::from(i64::from(date.year)),
                    SqlValue::from(i64::from(date.month)),
                    SqlValue::from(i64::from(date.day)),
                    SqlValue::Text(format!("{:04}-{:02}", date.year, date.month)),
                    SqlValue::Text(iso_week(date)),
                    SqlValue::Int((day + 3).rem_euclid(7) + 1),
                ],
            )?;
        }
    }
    Ok(())
}

/// Brings the warehouse up to date for the card transactions in
/// `wh_touched` (and the cards in `wh_touched_cards`), then empties both.
pub(crate) fn maintain(db: &dyn WarehouseDb, zone: &Zone) -> Result<(), LedgerError> {
    // A refund's amount follows its original's: when the original's
    // decision arrives late, its refunds are brought up to date too (found
    // by the index `card_transactions_refunds`, not by reading every
    // transaction of the card).
    db.run(
        "INSERT INTO wh_touched (card_id, counter)
         SELECT r.card_id, r.counter FROM wh_touched t CROSS JOIN card_transactions r
         WHERE r.card_id = t.card_id AND r.reference = t.counter AND r.tx_type = 'refund-earn' AND r.status = 'posted'
         ON CONFLICT DO NOTHING",
        &[],
    )?;
    // The touched rows that are posted, with their decision, read from the
    // books once: every statement below reads this small table.
    db.run(
        &format!(
            "INSERT INTO wh_batch (card_id, counter, tx_type, points, delta, card_time, reference, d_terminal, d_seq,
             purchase_minor, store_id)
         SELECT ct.card_id, ct.counter, ct.tx_type, ct.points, ct.delta, ct.card_time, ct.reference, d.terminal_id,
             d.seq, d.purchase_minor, d.store_id
         FROM wh_touched t CROSS JOIN card_transactions ct
         LEFT JOIN terminal_records d ON {DECISION}
         WHERE ct.card_id = t.card_id AND ct.counter = t.counter AND ct.status = 'posted'"
        ),
        &[],
    )?;
    let span: Option<(u32, u32)> = db
        .first("SELECT MIN(card_time), MAX(card_time) FROM wh_batch", &[], |r| {
            Ok(r.opt_int(0)?.zip(r.opt_int(1)?))
        })?
        .flatten();
    if let Some((from, to)) = span {
        cover_days(db, zone, from, to)?;
    }
    // A card's dimension rows change only through the calls that note the
    // card itself (registration, replacement, erasure): a card already in
    // `wh_dim_card` needs nothing here, a card first seen in settlement
    // gets its row.
    db.run(
        "INSERT INTO wh_touched_cards (card_id) SELECT DISTINCT b.card_id FROM wh_batch b
         WHERE NOT EXISTS (SELECT 1 FROM wh_dim_card dc WHERE dc.card_id = b.card_id)
         ON CONFLICT DO NOTHING",
        &[],
    )?;
    refresh_card_dims(db)?;
    db.run(
        "INSERT INTO wh_dim_category (name)
         SELECT DISTINCT dc.category FROM wh_batch b
         JOIN decision_categories dc ON dc.terminal_id = b.d_terminal AND dc.seq = b.d_seq
         WHERE true ORDER BY dc.category
         ON CONFLICT (name) DO NOTHING",
        &[],
    )?;
    db.run(
        "INSERT INTO wh_fact_tx (card_id, counter, tx_type, points, delta, amount_minor, time, date_key, store_key,
             card_key, customer_key, household_key, reference)
         SELECT b.card_id, b.counter, b.tx_type, b.points, b.delta,
             CASE WHEN b.tx_type = 'earn' THEN COALESCE(b.purchase_minor, 0)
                  WHEN b.tx_type = 'refund-earn' THEN COALESCE((
                      SELECT od.purchase_minor * b.points / o.points
                      FROM card_transactions o
                      JOIN terminal_records od ON od.terminal_id = o.origin_terminal AND od.seq = o.origin_seq
                          AND od.kind = 'decision' AND od.verdict = 'approve' AND od.card_id = o.card_id
                          AND od.card_counter = o.counter
                      WHERE o.card_id = b.card_id AND o.counter = b.reference AND o.tx_type = 'earn'
                          AND o.points > 0), 0)
                  ELSE 0 END,
             b.card_time,
             (SELECT dd.date_key FROM wh_dim_date dd WHERE dd.start_unix <= b.card_time
                  AND dd.end_unix > b.card_time
              ORDER BY dd.start_unix DESC LIMIT 1),
             ds.store_key, dcard.card_key, dcard.customer_key, dcard.household_key, b.reference
         FROM wh_batch b
         JOIN wh_dim_card dcard ON dcard.card_id = b.card_id
         LEFT JOIN wh_dim_store ds ON ds.store_id = b.store_id
         WHERE true
         ON CONFLICT (card_id, counter) DO UPDATE SET amount_minor = excluded.amount_minor,
             date_key = excluded.date_key, store_key = excluded.store_key, customer_key = excluded.customer_key,
             household_key = excluded.household_key",
        &[],
    )?;
    db.run(
        "INSERT INTO wh_fact_category (tx_key, category_key, amount_minor, from_basket)
         SELECT f.tx_key, cat.category_key, dc.amount_minor, dc.from_basket
         FROM wh_batch b CROSS JOIN wh_fact_tx f
         JOIN decision_categories dc ON dc.terminal_id = b.d_terminal AND dc.seq = b.d_seq
         JOIN wh_dim_category cat ON cat.name = dc.category
         WHERE f.card_id = b.card_id AND f.counter = b.counter
         ON CONFLICT (tx_key, category_key) DO NOTHING",
        &[],
    )?;
    db.run(
        "INSERT INTO wh_fact_points (tx_key, source, campaign_key, points)
         SELECT f.tx_key, dp.source, cmp.campaign_key, dp.points
         FROM wh_batch b CROSS JOIN wh_fact_tx f
         JOIN decision_points dp ON dp.terminal_id = b.d_terminal AND dp.seq = b.d_seq
         LEFT JOIN wh_dim_campaign cmp ON cmp.campaign_id = dp.source
         WHERE f.card_id = b.card_id AND f.counter = b.counter
         ON CONFLICT (tx_key, source) DO NOTHING",
        &[],
    )?;
    db.run("DELETE FROM wh_batch", &[])?;
    db.run("DELETE FROM wh_touched", &[])?;
    db.run("DELETE FROM wh_touched_cards", &[])?;
    Ok(())
}

/// The store dimension from `stores`: every store, its name and city
/// (after a store is added, and in a rebuild; batches add no store).
pub(crate) fn refresh_stores(db: &dyn WarehouseDb) -> Result<(), LedgerError> {
    db.run(
        "INSERT INTO wh_dim_store (store_id, name, city) SELECT store_id, name, city FROM stores WHERE true
         ON CONFLICT (store_id) DO UPDATE SET name = excluded.name, city = excluded.city
         WHERE wh_dim_store.name <> excluded.name OR wh_dim_store.city <> excluded.city",
        &[],
    )?;
    Ok(())
}

/// The customer, household and card dimensions of the cards in
/// `wh_touched_cards`; customers and households no card links any more
/// leave.
fn refresh_card_dims(db: &dyn WarehouseDb) -> Result<(), LedgerError> {
    db.run(
        "INSERT INTO wh_dim_customer (customer_id, tier)
         SELECT DISTINCT cu.customer_id, cu.tier FROM wh_touched_cards t CROSS JOIN cards c
         JOIN customers cu ON cu.customer_id = c.customer_id
         WHERE c.card_id = t.card_id
         ORDER BY cu.customer_id
         ON CONFLICT (customer_id) DO UPDATE SET tier = excluded.tier WHERE wh_dim_customer.tier <> excluded.tier",
        &[],
    )?;
    db.run(
        "INSERT INTO wh_dim_household (household)
         SELECT DISTINCT cu.household FROM wh_touched_cards t CROSS JOIN cards c
         JOIN customers cu ON cu.customer_id = c.customer_id
         WHERE c.card_id = t.card_id
         ORDER BY cu.household
         ON CONFLICT (household) DO NOTHING",
        &[],
    )?;
    db.run(
        "INSERT INTO wh_dim_card (card_id, customer_key, household_key, replaced_by)
         SELECT c.card_id, dc.customer_key, dh.household_key, r.new_card
         FROM wh_touched_cards t JOIN cards c ON c.card_id = t.card_id
         LEFT JOIN wh_dim_customer dc ON dc.customer_id = c.customer_id
         LEFT JOIN customers cu ON cu.customer_id = c.customer_id
         LEFT JOIN wh_dim_household dh ON dh.household = cu.household
         LEFT JOIN card_replacements r ON r.old_card = c.card_id
         WHERE true
         ON CONFLICT (card_id) DO UPDATE SET customer_key = excluded.customer_key,
             household_key = excluded.household_key, replaced_by = excluded.replaced_by
         WHERE COALESCE(wh_dim_card.customer_key, -1) <> COALESCE(excluded.customer_key, -1)
            OR COALESCE(wh_dim_card.household_key, -1) <> COALESCE(excluded.household_key, -1)
            OR (wh_dim_card.replaced_by IS NULL) <> (excluded.replaced_by IS NULL)
            OR wh_dim_card.replaced_by <> excluded.replaced_by",
        &[],
    )?;
    Ok(())
}

/// Notes every posted transaction of `card` (and the card itself) for the
/// next [`maintain`]: its customer, household or successor changed.
pub(crate) fn touch_card(db: &dyn WarehouseDb, card: &[u8]) -> Result<(), LedgerError> {
    touch_card_dim(db, card)?;
    db.run(
        "INSERT INTO wh_touched (card_id, counter)
         SELECT card_id, counter FROM card_transactions WHERE card_id = ?1 AND status = 'posted'
         ON CONFLICT DO NOTHING",
        &[SqlValue::from(card)],
    )?;
    Ok(())
}

/// Notes `card` for the next [`maintain`]: its dimension row changed, not
/// its facts.
pub(crate) fn touch_card_dim(db: &dyn WarehouseDb, card: &[u8]) -> Result<(), LedgerError> {
    db.run(
        "INSERT INTO wh_touched_cards (card_id) VALUES (?1) ON CONFLICT DO NOTHING",
        &[SqlValue::from(card)],
    )?;
    Ok(())
}

/// After a change outside batch posting: maintains the warehouse over
/// what was touched when it is on (`zone`), or marks it stale.
pub(crate) fn after_change(db: &dyn WarehouseDb, zone: Option<&Zone>) -> Result<(), LedgerError> {
    match zone {
        Some(z) => maintain(db, z),
        None => {
            db.run("DELETE FROM wh_touched", &[])?;
            db.run("DELETE FROM wh_touched_cards", &[])?;
            set_meta(db, "stale", Some("1"))
        }
    }
}

/// Removes the customer dimension rows no card links any more, and the
/// households none of the remaining customers has (after an erasure or a
/// card moved to another customer): `customers` lists the ids to look at.
pub(crate) fn drop_unlinked(
    db: &dyn WarehouseDb,
    customers: &[u64],
    households: &[Vec<u8>],
) -> Result<(), LedgerError> {
    for id in customers {
        db.run(
            "DELETE FROM wh_dim_customer WHERE customer_id = ?1
             AND NOT EXISTS (SELECT 1 FROM cards c WHERE c.customer_id = ?1)",
            &[SqlValue::from(*id)],
        )?;
    }
    for h in households {
        db.run(
            "DELETE FROM wh_dim_household WHERE household = ?1 AND NOT EXISTS (
                 SELECT 1 FROM customers cu JOIN wh_dim_customer dc ON dc.customer_id = cu.customer_id
                 WHERE cu.household = ?1)",
            &[SqlValue::from(&h[..])],
        )?;
    }
    Ok(())
}

/// The campaign dimension from one registered campaign file (the newest
/// registration of an id wins).
pub(crate) fn register_campaigns(db: &dyn WarehouseDb, toml: &str) -> Result<(), LedgerError> {
    let Ok(set) = CampaignSet::from_toml(toml) else {
        // A file the tills cannot parse gives no campaign either.
        return Ok(());
    };
    for c in &set.campaigns {
        let (kind, tier) = match c.kind {
            CampaignKind::BirthdayBonus { .. } => ("birthday_bonus", None),
            CampaignKind::NthVisit { .. } => ("nth_visit", None),
            CampaignKind::PreferredCategory { .. } => ("preferred_category", None),
            CampaignKind::Tier { tier, .. } => ("tier", Some(tier)),
        };
        db.run(
            "INSERT INTO wh_dim_campaign (campaign_id, name, kind, tier, valid_from, valid_until, first_day, last_day,
                 holdout_percent, set_version)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT (campaign_id) DO UPDATE SET name = excluded.name, kind = excluded.kind, tier = excluded.tier,
                 valid_from = excluded.valid_from, valid_until = excluded.valid_until, first_day = excluded.first_day,
                 last_day = excluded.last_day, holdout_percent = excluded.holdout_percent,
                 set_version = excluded.set_version",
            &[
                SqlValue::from(c.id.as_str()),
                SqlValue::from(c.name.as_str()),
                SqlValue::from(kind),
                SqlValue::from(tier.map(i64::from)),
                SqlValue::Text(c.valid_from.to_string()),
                SqlValue::Text(c.valid_until.to_string()),
                SqlValue::Int(c.valid_from.days_since_epoch()),
                SqlValue::Int(c.valid_until.days_since_epoch()),
                SqlValue::from(i64::from(c.holdout_percent)),
                SqlValue::from(i64::from(set.version)),
            ],
        )?;
    }
    Ok(())
}

/// Empties the warehouse and builds it again from the books under `zone`.
/// Returns the number of transaction fact rows.
pub(crate) fn rebuild(db: &dyn WarehouseDb, zone: &Zone) -> Result<u64, LedgerError> {
    for table in [
        "wh_fact_points",
        "wh_fact_category",
        "wh_fact_tx",
        "wh_dim_card",
        "wh_dim_customer",
        "wh_dim_household",
        "wh_dim_store",
        "wh_dim_category",
        "wh_dim_campaign",
        "wh_dim_date",
        "wh_touched",
        "wh_touched_cards",
    ] {
        db.run(&format!("DELETE FROM {table}"), &[])?;
    }
    let files: Vec<String> = db.rows(
        "SELECT toml FROM campaign_sets ORDER BY registered_at, digest",
        &[],
        |r| r.text(0),
    )?;
    for toml in files {
        register_campaigns(db, &toml)?;
    }
    db.run("INSERT INTO wh_touched_cards (card_id) SELECT card_id FROM cards", &[])?;
    db.run(
        "INSERT INTO wh_touched (card_id, counter) SELECT card_id, counter FROM card_transactions
         WHERE status = 'posted'",
        &[],
    )?;
    refresh_stores(db)?;
    maintain(db, zone)?;
    set_meta(db, "stale", None)?;
    Ok(db
        .first("SELECT COUNT(*) FROM wh_fact_tx", &[], |r| r.count(0))?
        .unwrap_or(0))
}

/// A `wh_meta` value.
pub(crate) fn meta(db: &dyn WarehouseDb, key: &str) -> Result<Option<String>, LedgerError> {
    db.first(
        "SELECT value FROM wh_meta WHERE key = ?1",
        &[SqlValue::from(key)],
        |r| r.text(0),
    )
}

/// Sets (or, with `None`, removes) a `wh_meta` value.
pub(crate) fn set_meta(db: &dyn WarehouseDb, key: &str, value: Option<&str>) -> Result<(), LedgerError> {
    match value {
        Some(v) => db.run(
            "INSERT INTO wh_meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[SqlValue::from(key), SqlValue::from(v)],
        )?,
        None => db.run("DELETE FROM wh_meta WHERE key = ?1", &[SqlValue::from(key)])?,
    };
    Ok(())
}
