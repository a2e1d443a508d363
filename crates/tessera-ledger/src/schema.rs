//! The ledger's SQLite schema and its migrations.
//!
//! Books (`terminals`, `batches`, `held_records`, `cards`,
//! `card_transactions`, `terminal_records`, `exceptions`, `hotlist`) are
//! apart from personal data (`customers`, `profile_updates`): erasing a
//! customer removes their rows and unlinks their cards, and every book
//! still balances.

use rusqlite::Connection;

use crate::LedgerError;

/// Schema version this code writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 13;

const MIGRATION_1: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO meta (key, value) VALUES ('hotlist_version', 0);
CREATE TABLE terminals (
    terminal_id INTEGER PRIMARY KEY,
    registered_at INTEGER NOT NULL,
    revoked_at INTEGER,
    last_batch_no INTEGER NOT NULL DEFAULT 0,
    last_seq INTEGER NOT NULL DEFAULT 0,
    last_head BLOB NOT NULL
);
CREATE TABLE batches (
    terminal_id INTEGER NOT NULL,
    batch_no INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('posted', 'held')),
    seq_from INTEGER NOT NULL,
    seq_to INTEGER NOT NULL,
    record_count INTEGER NOT NULL,
    prev_head BLOB NOT NULL,
    head BLOB NOT NULL,
    totals TEXT NOT NULL,
    sealed_at INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    posted_at INTEGER,
    card_transactions INTEGER NOT NULL DEFAULT 0,
    posted INTEGER NOT NULL DEFAULT 0,
    duplicates INTEGER NOT NULL DEFAULT 0,
    rejected INTEGER NOT NULL DEFAULT 0,
    held INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (terminal_id, batch_no)
) WITHOUT ROWID;
CREATE TABLE held_records (
    terminal_id INTEGER NOT NULL,
    batch_no INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    entry TEXT NOT NULL,
    PRIMARY KEY (terminal_id, batch_no, seq)
) WITHOUT ROWID;
CREATE TABLE cards (
    card_id BLOB PRIMARY KEY,
    customer_id INTEGER,
    key_version INTEGER NOT NULL DEFAULT 1,
    registered_at INTEGER,
    last_counter INTEGER NOT NULL DEFAULT 0,
    shadow_balance INTEGER NOT NULL DEFAULT 0,
    card_balance INTEGER NOT NULL DEFAULT 0,
    discrepancy INTEGER NOT NULL DEFAULT 0,
    flagged INTEGER NOT NULL DEFAULT 0,
    pending INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX cards_customer ON cards (customer_id);
CREATE TABLE card_transactions (
    card_id BLOB NOT NULL,
    counter INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('posted', 'pending')),
    tx_type TEXT NOT NULL,
    points INTEGER NOT NULL,
    delta INTEGER NOT NULL,
    balance_after INTEGER NOT NULL,
    origin_terminal INTEGER NOT NULL,
    origin_seq INTEGER NOT NULL,
    card_time INTEGER NOT NULL,
    reference INTEGER NOT NULL,
    certificate BLOB NOT NULL,
    kind TEXT NOT NULL,
    terminal_id INTEGER NOT NULL,
    batch_no INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    purchase_minor INTEGER,
    categories TEXT,
    received_at INTEGER NOT NULL,
    posted_at INTEGER,
    PRIMARY KEY (card_id, counter)
) WITHOUT ROWID;
CREATE INDEX card_transactions_pending ON card_transactions (card_id, counter) WHERE status = 'pending';
CREATE TABLE duplicate_copies (
    card_id BLOB NOT NULL,
    counter INTEGER NOT NULL,
    terminal_id INTEGER NOT NULL,
    batch_no INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (card_id, counter, terminal_id)
) WITHOUT ROWID;
CREATE TABLE terminal_records (
    terminal_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    batch_no INTEGER NOT NULL,
    kind TEXT NOT NULL,
    time INTEGER NOT NULL,
    card_id BLOB,
    card_counter INTEGER,
    tx_type TEXT,
    verdict TEXT,
    reason TEXT,
    points INTEGER,
    purchase_minor INTEGER,
    PRIMARY KEY (terminal_id, seq)
) WITHOUT ROWID;
CREATE TABLE exceptions (
    id INTEGER PRIMARY KEY,
    class TEXT NOT NULL,
    card_id BLOB,
    counter INTEGER,
    terminal_id INTEGER,
    batch_no INTEGER,
    evidence TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX exceptions_card ON exceptions (card_id, class, counter);
CREATE TABLE hotlist (
    card_id BLOB PRIMARY KEY,
    reason TEXT NOT NULL,
    at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE customers (
    customer_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    birth_date TEXT NOT NULL,
    home_city TEXT NOT NULL,
    household BLOB NOT NULL,
    preferences TEXT NOT NULL,
    tier INTEGER NOT NULL
);
CREATE TABLE profile_updates (
    card_id BLOB NOT NULL,
    version INTEGER NOT NULL,
    blob BLOB NOT NULL,
    queued_at INTEGER NOT NULL,
    delivered INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (card_id, version)
) WITHOUT ROWID;
";

/// Version 2: `card_transactions` becomes a rowid table (rows appended in
/// arrival order) with a unique `(card_id, counter)` index, instead of a
/// `WITHOUT ROWID` table keyed by `(card_id, counter)`. A batch arrives in
/// terminal order, which interleaves every card: inserting whole rows into
/// a B-tree keyed by card touched a leaf per card (far more than the page
/// cache holds) while the index entries are a sixth of a row.
const MIGRATION_2: &str = "
CREATE TABLE card_transactions_v2 (
    card_id BLOB NOT NULL,
    counter INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('posted', 'pending')),
    tx_type TEXT NOT NULL,
    points INTEGER NOT NULL,
    delta INTEGER NOT NULL,
    balance_after INTEGER NOT NULL,
    origin_terminal INTEGER NOT NULL,
    origin_seq INTEGER NOT NULL,
    card_time INTEGER NOT NULL,
    reference INTEGER NOT NULL,
    certificate BLOB NOT NULL,
    kind TEXT NOT NULL,
    terminal_id INTEGER NOT NULL,
    batch_no INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    purchase_minor INTEGER,
    categories TEXT,
    received_at INTEGER NOT NULL,
    posted_at INTEGER
);
INSERT INTO card_transactions_v2 SELECT * FROM card_transactions ORDER BY received_at, terminal_id, batch_no, seq;
DROP TABLE card_transactions;
ALTER TABLE card_transactions_v2 RENAME TO card_transactions;
CREATE UNIQUE INDEX card_transactions_key ON card_transactions (card_id, counter);
CREATE INDEX card_transactions_pending ON card_transactions (card_id, counter) WHERE status = 'pending';
";

/// Version 3 (card application v2): issuer UNBLOCKs queued for delivery
/// through sync (`seq` is the card's issuer sequence; one row per
/// request), per card the first counter certified under its current key
/// version (`key_version_from`, after a KEY UPDATE; 0 = since issue), and
/// the decision a void names (`terminal_records.origin_seq`).
const MIGRATION_3: &str = "
ALTER TABLE cards ADD COLUMN key_version_from INTEGER NOT NULL DEFAULT 0;
ALTER TABLE terminal_records ADD COLUMN origin_seq INTEGER;
CREATE INDEX terminal_records_void ON terminal_records (card_id, card_counter) WHERE kind = 'void';
CREATE TABLE unblocks (
    card_id BLOB NOT NULL,
    seq INTEGER NOT NULL,
    queued_at INTEGER NOT NULL,
    PRIMARY KEY (card_id, seq)
) WITHOUT ROWID;
";

/// Version 4 (reconciliation): each card transaction's match against the
/// approve decision of its origin till (`decision`: `matched`, `awaiting`
/// the origin's batch, or `orphan`); rows of earlier versions are matched
/// here against the decisions already held, the rest await.
const MIGRATION_4: &str = "
ALTER TABLE card_transactions ADD COLUMN decision TEXT NOT NULL DEFAULT 'awaiting'
    CHECK (decision IN ('matched', 'awaiting', 'orphan'));
UPDATE card_transactions SET decision = 'matched' WHERE EXISTS (
    SELECT 1 FROM terminal_records d
    WHERE d.terminal_id = card_transactions.origin_terminal AND d.seq = card_transactions.origin_seq
      AND d.kind = 'decision' AND d.verdict = 'approve' AND d.card_id = card_transactions.card_id
      AND d.card_counter = card_transactions.counter AND d.tx_type = card_transactions.tx_type
      AND d.points = card_transactions.points);
CREATE INDEX card_transactions_awaiting ON card_transactions (origin_terminal, origin_seq)
    WHERE decision = 'awaiting';
";

/// Version 5 (points checked): the exact text of every till policy and
/// campaign file the office signed, by SHA-256, to recompute each
/// purchase's points under the rules its decision names.
const MIGRATION_5: &str = "
CREATE TABLE policies (digest BLOB PRIMARY KEY, toml TEXT NOT NULL, registered_at INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE campaign_sets (digest BLOB PRIMARY KEY, toml TEXT NOT NULL, registered_at INTEGER NOT NULL) WITHOUT ROWID;
";

/// Version 6: what each terminal has acknowledged writing from its sync
/// feed (`POST /v1/sync/ack`), so the office stops serving it to that
/// terminal: `kind` is `profile` (`ref` = profile version), `unblock`
/// (`ref` = issuer sequence) or `key_update` (`ref` = new key version).
const MIGRATION_SYNC_ACK: &str = "
CREATE TABLE sync_deliveries (
    terminal_id INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('profile', 'unblock', 'key_update')),
    card_id BLOB NOT NULL,
    ref INTEGER NOT NULL,
    delivered_at INTEGER NOT NULL,
    PRIMARY KEY (terminal_id, kind, card_id, ref)
) WITHOUT ROWID;
";

/// Version 7: the office's daily operations. Stores as named entities,
/// each terminal's store and the reason it was revoked, and the anchor of
/// the office's audit log (`docs/audit.md`): the entry count and the hash
/// of the newest entry, kept here so that an audit file cut short or
/// rewritten is found by comparing it with the ledger.
const MIGRATION_OPS: &str = "
CREATE TABLE stores (
    store_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    city TEXT NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL
);
ALTER TABLE terminals ADD COLUMN store_id INTEGER REFERENCES stores (store_id);
ALTER TABLE terminals ADD COLUMN revoke_reason TEXT;
CREATE TABLE audit_anchor (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    entries INTEGER NOT NULL,
    head BLOB NOT NULL
);
";

/// Version 8: issuer adjustments (applet-spec §4.16) and card replacement.
/// `adjustments` is the office's ledger of what it issued (one row per card
/// and adjustment sequence, `direction` the record kind the card will
/// certify); `card_replacements` links a replaced card to its successor;
/// `card_postings` holds the book entries no card certified — the balance
/// a replacement moved off the old card, posted when the new card's credit
/// posts — so that a card's books are its posted records plus its postings.
const MIGRATION_ADJUST: &str = "
CREATE TABLE adjustments (
    card_id BLOB NOT NULL,
    seq INTEGER NOT NULL CHECK (seq > 0),
    kind TEXT NOT NULL CHECK (kind IN ('goodwill', 'correction', 'replacement')),
    direction TEXT NOT NULL CHECK (direction IN ('issuer-credit', 'issuer-debit')),
    points INTEGER NOT NULL CHECK (points > 0),
    reason TEXT NOT NULL,
    operator TEXT NOT NULL,
    issued_at INTEGER NOT NULL,
    from_card BLOB,
    state TEXT NOT NULL DEFAULT 'issued' CHECK (state IN ('issued', 'applied')),
    applied_counter INTEGER,
    applied_at INTEGER,
    PRIMARY KEY (card_id, seq)
) WITHOUT ROWID;
CREATE TABLE card_replacements (
    old_card BLOB PRIMARY KEY,
    new_card BLOB NOT NULL UNIQUE,
    points INTEGER NOT NULL,
    adjustment_seq INTEGER,
    operator TEXT NOT NULL,
    reason TEXT NOT NULL,
    replaced_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE card_postings (
    id INTEGER PRIMARY KEY,
    card_id BLOB NOT NULL,
    delta INTEGER NOT NULL,
    what TEXT NOT NULL,
    other_card BLOB,
    adjustment_seq INTEGER,
    posted_at INTEGER NOT NULL
);
CREATE INDEX card_postings_card ON card_postings (card_id);
";

/// Version 9: office referral approvals (`office approve`): each code
/// issued for one till, card, kind and amount until its expiry, by whom and
/// when; and each decision of a till's verified chain that went ahead on
/// one (`approval_uses`). `amount` is minor units for an earn, points
/// otherwise; `code` is the canonical code text the tills journal.
const MIGRATION_APPROVALS: &str = "
CREATE TABLE approvals (
    id INTEGER PRIMARY KEY,
    terminal_id INTEGER NOT NULL,
    serial INTEGER NOT NULL,
    card_id BLOB NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('earn', 'redeem', 'refund')),
    amount INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    code TEXT NOT NULL UNIQUE,
    issued_by TEXT NOT NULL,
    issued_at INTEGER NOT NULL
);
CREATE INDEX approvals_terminal ON approvals (terminal_id, serial);
CREATE TABLE approval_uses (
    terminal_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    code TEXT NOT NULL,
    batch_no INTEGER NOT NULL,
    card_id BLOB,
    card_counter INTEGER,
    tx_type TEXT,
    amount INTEGER,
    time INTEGER NOT NULL,
    PRIMARY KEY (terminal_id, seq)
) WITHOUT ROWID;
CREATE INDEX approval_uses_code ON approval_uses (code);
";

/// Version 10: the purchase facts of each approve decision and the
/// warehouse (`docs/warehouse.md`). Books: each decision keeps its
/// categories and basket (JSON, as journaled) and the store its till was
/// assigned to when it posted; `decision_categories` holds its amount per
/// category (basket lines summed per category, or the amount shared
/// equally among the journaled categories); `decision_points` holds which
/// campaign or policy rule gave which points, when the ledger's
/// recomputation agreed with the till. The `wh_` tables are the
/// dimensional model maintained from the books.
const MIGRATION_WAREHOUSE: &str = "
ALTER TABLE terminal_records ADD COLUMN categories TEXT;
ALTER TABLE terminal_records ADD COLUMN basket TEXT;
ALTER TABLE terminal_records ADD COLUMN store_id INTEGER;
CREATE TABLE decision_categories (
    terminal_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    category TEXT NOT NULL,
    amount_minor INTEGER NOT NULL,
    from_basket INTEGER NOT NULL,
    PRIMARY KEY (terminal_id, seq, category)
) WITHOUT ROWID;
CREATE TABLE decision_points (
    terminal_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    source TEXT NOT NULL,
    points INTEGER NOT NULL,
    PRIMARY KEY (terminal_id, seq, source)
) WITHOUT ROWID;
CREATE TABLE wh_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO wh_meta (key, value) VALUES ('zone', 'UTC');
-- A ledger upgraded with postings already in it has an empty warehouse:
-- stale until rebuilt.
INSERT INTO wh_meta (key, value) SELECT 'stale', '1' WHERE EXISTS (SELECT 1 FROM card_transactions);
CREATE TABLE wh_dim_date (
    date_key INTEGER PRIMARY KEY,
    start_unix INTEGER NOT NULL UNIQUE,
    end_unix INTEGER NOT NULL,
    date TEXT NOT NULL,
    year INTEGER NOT NULL,
    month INTEGER NOT NULL,
    day INTEGER NOT NULL,
    month_label TEXT NOT NULL,
    iso_week TEXT NOT NULL,
    weekday INTEGER NOT NULL
);
CREATE TABLE wh_dim_customer (
    customer_key INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL UNIQUE,
    tier INTEGER NOT NULL
);
CREATE TABLE wh_dim_household (
    household_key INTEGER PRIMARY KEY,
    household BLOB NOT NULL UNIQUE
);
CREATE TABLE wh_dim_card (
    card_key INTEGER PRIMARY KEY,
    card_id BLOB NOT NULL UNIQUE,
    customer_key INTEGER,
    household_key INTEGER,
    replaced_by BLOB
);
CREATE INDEX wh_dim_card_customer ON wh_dim_card (customer_key);
CREATE TABLE wh_dim_store (
    store_key INTEGER PRIMARY KEY,
    store_id INTEGER NOT NULL UNIQUE,
    name TEXT NOT NULL,
    city TEXT NOT NULL
);
CREATE TABLE wh_dim_category (
    category_key INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE wh_dim_campaign (
    campaign_key INTEGER PRIMARY KEY,
    campaign_id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    tier INTEGER,
    valid_from TEXT NOT NULL,
    valid_until TEXT NOT NULL,
    first_day INTEGER NOT NULL,
    last_day INTEGER NOT NULL,
    holdout_percent INTEGER NOT NULL,
    set_version INTEGER NOT NULL
);
CREATE TABLE wh_fact_tx (
    card_id BLOB NOT NULL,
    counter INTEGER NOT NULL,
    tx_type TEXT NOT NULL,
    points INTEGER NOT NULL,
    delta INTEGER NOT NULL,
    amount_minor INTEGER NOT NULL,
    time INTEGER NOT NULL,
    date_key INTEGER NOT NULL,
    store_key INTEGER,
    card_key INTEGER NOT NULL,
    customer_key INTEGER,
    household_key INTEGER,
    reference INTEGER NOT NULL,
    PRIMARY KEY (card_id, counter)
);
CREATE INDEX wh_fact_tx_date ON wh_fact_tx (date_key);
CREATE INDEX wh_fact_tx_customer ON wh_fact_tx (customer_key);
CREATE TABLE wh_fact_category (
    card_id BLOB NOT NULL,
    counter INTEGER NOT NULL,
    category_key INTEGER NOT NULL,
    amount_minor INTEGER NOT NULL,
    from_basket INTEGER NOT NULL,
    PRIMARY KEY (card_id, counter, category_key)
);
CREATE TABLE wh_fact_points (
    card_id BLOB NOT NULL,
    counter INTEGER NOT NULL,
    source TEXT NOT NULL,
    campaign_key INTEGER,
    points INTEGER NOT NULL,
    PRIMARY KEY (card_id, counter, source)
);
";

/// Version 11: the refunds of a card by the counter they refund, so that
/// the warehouse finds the refunds of the rows a batch touched without
/// reading every transaction of their cards (`wh_build::maintain`).
const MIGRATION_BULK: &str = "
CREATE INDEX card_transactions_refunds ON card_transactions (card_id, reference) WHERE tx_type = 'refund-earn';
";

/// Version 12: the warehouse's facts keyed so that new facts are appended.
/// `wh_fact_tx` gets a surrogate `tx_key` in posting order (its
/// `(card_id, counter)` stays unique); the category and points facts are
/// keyed by `tx_key` instead of the card and counter, and the index by
/// customer goes (a customer's facts are found through `wh_dim_card`).
/// Before, every new fact went to a random place in four B-trees keyed
/// by card; a batch of 200 purchases dirtied hundreds of pages there
/// (BENCHMARKS.md). The facts are derived: the tables are made anew and
/// a ledger with postings is stale until the next rebuild.
const MIGRATION_FACT_KEYS: &str = "
DROP TABLE wh_fact_points;
DROP TABLE wh_fact_category;
DROP TABLE wh_fact_tx;
CREATE TABLE wh_fact_tx (
    tx_key INTEGER PRIMARY KEY,
    card_id BLOB NOT NULL,
    counter INTEGER NOT NULL,
    tx_type TEXT NOT NULL,
    points INTEGER NOT NULL,
    delta INTEGER NOT NULL,
    amount_minor INTEGER NOT NULL,
    time INTEGER NOT NULL,
    date_key INTEGER NOT NULL,
    store_key INTEGER,
    card_key INTEGER NOT NULL,
    customer_key INTEGER,
    household_key INTEGER,
    reference INTEGER NOT NULL,
    UNIQUE (card_id, counter)
);
CREATE INDEX wh_fact_tx_date ON wh_fact_tx (date_key);
CREATE TABLE wh_fact_category (
    tx_key INTEGER NOT NULL,
    category_key INTEGER NOT NULL,
    amount_minor INTEGER NOT NULL,
    from_basket INTEGER NOT NULL,
    PRIMARY KEY (tx_key, category_key)
) WITHOUT ROWID;
CREATE TABLE wh_fact_points (
    tx_key INTEGER NOT NULL,
    source TEXT NOT NULL,
    campaign_key INTEGER,
    points INTEGER NOT NULL,
    PRIMARY KEY (tx_key, source)
) WITHOUT ROWID;
INSERT INTO wh_meta (key, value) SELECT 'stale', '1' WHERE EXISTS (SELECT 1 FROM card_transactions)
ON CONFLICT (key) DO UPDATE SET value = excluded.value;
";

/// Version 13 (card application v2.2): online authorization. Each card
/// record keeps whether the card made it on an online approval (bit 7 of
/// its kind, certified); each decision of `POST /v1/authorize` is kept
/// (`online_authorizations`, one row per card and request cryptogram),
/// with its state: `approved` (its record not arrived), `posted`,
/// `lapsed` (the card gave the counter to another transaction) or
/// `declined`; and how it was delivered (`online`, or `voice`: read over
/// the telephone, with the office operator).
const MIGRATION_ONLINE: &str = "
ALTER TABLE card_transactions ADD COLUMN online INTEGER NOT NULL DEFAULT 0;
CREATE TABLE online_authorizations (
    card_id BLOB NOT NULL,
    cryptogram BLOB NOT NULL,
    counter INTEGER NOT NULL,
    kind TEXT NOT NULL,
    amount INTEGER NOT NULL,
    reference INTEGER NOT NULL,
    terminal_id INTEGER NOT NULL,
    key_version INTEGER NOT NULL,
    approved INTEGER NOT NULL,
    code TEXT NOT NULL,
    message TEXT NOT NULL,
    settled INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('approved', 'posted', 'lapsed', 'declined')),
    decided_at INTEGER NOT NULL,
    delivery TEXT NOT NULL CHECK (delivery IN ('online', 'voice')),
    operator TEXT,
    UNIQUE (card_id, cryptogram)
);
CREATE INDEX online_authorizations_card ON online_authorizations (card_id, counter);
";

/// Opens the connection's settings and brings the schema up to date.
///
/// # Errors
/// [`LedgerError::NewerSchema`] for a file of a newer Tessera, or a storage
/// error.
pub(crate) fn prepare(conn: &mut Connection) -> Result<(), LedgerError> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // WAL: readers (reports, sync) never wait for an import; FULL: a
    // committed batch survives power loss before its ack is sent.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    // A fixed page cache (32 MiB): an import's memory does not grow with
    // the batch.
    conn.pragma_update(None, "cache_size", -32_768)?;
    // Room for every statement ingestion caches: with fewer slots than
    // statements the cache evicts on every record and ingestion re-prepares
    // them (1.6× slower at 64 once adjustments and approvals were checked;
    // BENCHMARKS.md).
    conn.set_prepared_statement_cache_capacity(128);
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(LedgerError::NewerSchema {
            found: version,
            expected: SCHEMA_VERSION,
        });
    }
    if version < SCHEMA_VERSION {
        // Every step in one transaction: a crash leaves the old version.
        let tx = conn.transaction()?;
        if version < 1 {
            tx.execute_batch(MIGRATION_1)?;
        }
        if version < 2 {
            tx.execute_batch(MIGRATION_2)?;
        }
        if version < 3 {
            tx.execute_batch(MIGRATION_3)?;
        }
        if version < 4 {
            tx.execute_batch(MIGRATION_4)?;
        }
        if version < 5 {
            tx.execute_batch(MIGRATION_5)?;
        }
        if version < 6 {
            tx.execute_batch(MIGRATION_SYNC_ACK)?;
        }
        if version < 7 {
            tx.execute_batch(MIGRATION_OPS)?;
        }
        if version < 8 {
            tx.execute_batch(MIGRATION_ADJUST)?;
        }
        if version < 9 {
            tx.execute_batch(MIGRATION_APPROVALS)?;
        }
        if version < 10 {
            tx.execute_batch(MIGRATION_WAREHOUSE)?;
        }
        if version < 11 {
            tx.execute_batch(MIGRATION_BULK)?;
        }
        if version < 12 {
            tx.execute_batch(MIGRATION_FACT_KEYS)?;
        }
        if version < 13 {
            tx.execute_batch(MIGRATION_ONLINE)?;
        }
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        tx.commit()?;
    }
    // The rows a batch touched, for the warehouse (this connection's own).
    conn.execute_batch(
        "CREATE TEMP TABLE IF NOT EXISTS wh_touched (
             card_id BLOB NOT NULL, counter INTEGER NOT NULL, PRIMARY KEY (card_id, counter)) WITHOUT ROWID;
         CREATE TEMP TABLE IF NOT EXISTS wh_touched_cards (card_id BLOB PRIMARY KEY) WITHOUT ROWID;
         CREATE TEMP TABLE IF NOT EXISTS wh_batch (
             card_id BLOB NOT NULL, counter INTEGER NOT NULL, tx_type TEXT NOT NULL, points INTEGER NOT NULL,
             delta INTEGER NOT NULL, card_time INTEGER NOT NULL, reference INTEGER NOT NULL, d_terminal INTEGER,
             d_seq INTEGER, purchase_minor INTEGER, store_id INTEGER, PRIMARY KEY (card_id, counter)) WITHOUT ROWID;",
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn version_6_files_gain_the_adjustment_books() {
        let mut conn = Connection::open_in_memory().unwrap();
        for m in [
            MIGRATION_1,
            MIGRATION_2,
            MIGRATION_3,
            MIGRATION_4,
            MIGRATION_5,
            MIGRATION_SYNC_ACK,
        ] {
            conn.execute_batch(m).unwrap();
        }
        conn.pragma_update(None, "user_version", 6).unwrap();
        prepare(&mut conn).unwrap();
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        conn.execute(
            "INSERT INTO adjustments (card_id, seq, kind, direction, points, reason, operator, issued_at)
             VALUES (x'BE4C000000000001', 1, 'goodwill', 'issuer-credit', 5, 'r', 'o', 100)",
            [],
        )
        .unwrap();
        // Sequence, kind and points are checked by the schema too.
        for bad in [
            "(x'BE4C000000000001', 1, 'goodwill', 'issuer-credit', 5, 'r', 'o', 100)",
            "(x'BE4C000000000001', 2, 'gift', 'issuer-credit', 5, 'r', 'o', 100)",
            "(x'BE4C000000000001', 3, 'goodwill', 'issuer-credit', 0, 'r', 'o', 100)",
        ] {
            let sql = format!(
                "INSERT INTO adjustments (card_id, seq, kind, direction, points, reason, operator, issued_at) VALUES {bad}"
            );
            assert!(conn.execute(&sql, []).is_err(), "{bad}");
        }
    }

    #[test]
    fn version_6_files_gain_the_approvals() {
        let mut conn = Connection::open_in_memory().unwrap();
        for m in [
            MIGRATION_1,
            MIGRATION_2,
            MIGRATION_3,
            MIGRATION_4,
            MIGRATION_5,
            MIGRATION_SYNC_ACK,
        ] {
            conn.execute_batch(m).unwrap();
        }
        conn.pragma_update(None, "user_version", 6).unwrap();
        prepare(&mut conn).unwrap();
        conn.execute(
            "INSERT INTO approvals (terminal_id, serial, card_id, kind, amount, expires_at, code, issued_by, issued_at)
             VALUES (7, 1, x'BE4C000000000001', 'redeem', 30, 1000, 'C', 'Marie', 100)",
            [],
        )
        .unwrap();
        // One code, one approval; kinds are the three a code carries.
        assert!(conn
            .execute(
                "INSERT INTO approvals (terminal_id, serial, card_id, kind, amount, expires_at, code, issued_by,
                     issued_at)
                 VALUES (7, 2, x'BE4C000000000001', 'redeem', 30, 1000, 'C', 'Marie', 100)",
                [],
            )
            .is_err());
        assert!(conn
            .execute(
                "INSERT INTO approvals (terminal_id, serial, card_id, kind, amount, expires_at, code, issued_by,
                     issued_at)
                 VALUES (7, 3, x'BE4C000000000001', 'refund-earn', 30, 1000, 'D', 'Marie', 100)",
                [],
            )
            .is_err());
    }

    #[test]
    fn version_3_files_gain_the_sync_deliveries() {
        let mut conn = Connection::open_in_memory().unwrap();
        for m in [MIGRATION_1, MIGRATION_2, MIGRATION_3] {
            conn.execute_batch(m).unwrap();
        }
        conn.pragma_update(None, "user_version", 3).unwrap();
        prepare(&mut conn).unwrap();
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        conn.execute(
            "INSERT INTO sync_deliveries VALUES (7, 'profile', x'BE4C000000000001', 2, 100)",
            [],
        )
        .unwrap();
        assert!(conn
            .execute(
                "INSERT INTO sync_deliveries VALUES (7, 'other', x'BE4C000000000001', 2, 100)",
                [],
            )
            .is_err());
    }

    #[test]
    fn version_6_files_gain_stores_and_the_audit_anchor() {
        let mut conn = Connection::open_in_memory().unwrap();
        for m in [
            MIGRATION_1,
            MIGRATION_2,
            MIGRATION_3,
            MIGRATION_4,
            MIGRATION_5,
            MIGRATION_SYNC_ACK,
        ] {
            conn.execute_batch(m).unwrap();
        }
        conn.execute(
            "INSERT INTO terminals (terminal_id, registered_at, last_head) VALUES (7, 100, x'00')",
            [],
        )
        .unwrap();
        conn.pragma_update(None, "user_version", 6).unwrap();
        prepare(&mut conn).unwrap();
        let row: (Option<u32>, Option<String>) = conn
            .query_row(
                "SELECT store_id, revoke_reason FROM terminals WHERE terminal_id = 7",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(row, (None, None));
        conn.execute("INSERT INTO stores VALUES (3, 'Центральный', '', 100)", [])
            .unwrap();
        conn.execute("INSERT INTO audit_anchor VALUES (1, 1, x'00')", [])
            .unwrap();
        assert!(conn
            .execute("INSERT INTO audit_anchor VALUES (2, 1, x'00')", [])
            .is_err());
    }

    #[test]
    fn version_1_files_are_migrated_keeping_their_transactions() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(MIGRATION_1).unwrap();
        conn.execute_batch(
            "INSERT INTO card_transactions VALUES (x'BE4C000000000001', 1, 'posted', 'earn', 10, 10, 10, 7, 1, 5, 0,
                 x'00112233445566778899AABBCCDDEEFF', 'completion', 7, 1, 1, 1000, NULL, 5, 5);
             INSERT INTO card_transactions VALUES (x'BE4C000000000001', 2, 'pending', 'earn', 10, 10, 30, 7, 3, 6, 0,
                 x'00112233445566778899AABBCCDDEEFF', 'completion', 7, 1, 3, NULL, '[\"food\"]', 5, NULL);",
        )
        .unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        prepare(&mut conn).unwrap();
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let rows: Vec<(u32, String, Option<String>, Option<u32>)> = conn
            .prepare("SELECT counter, status, categories, posted_at FROM card_transactions ORDER BY counter")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            vec![
                (1, "posted".into(), None, Some(5)),
                (2, "pending".into(), Some("[\"food\"]".into()), None)
            ]
        );
        // (card, counter) is still unique.
        let dup = conn.execute(
            "INSERT INTO card_transactions SELECT * FROM card_transactions WHERE counter = 1",
            [],
        );
        assert!(dup.is_err());
        let indexes: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'card_transactions'
                     AND name IN ('card_transactions_key', 'card_transactions_pending')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(indexes, 2);
    }
}
