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
pub const SCHEMA_VERSION: i64 = 1;

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
    conn.set_prepared_statement_cache_capacity(64);
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
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        tx.commit()?;
    }
    Ok(())
}
