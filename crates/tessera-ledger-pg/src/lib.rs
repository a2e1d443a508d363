//! The Tessera ledger's schema on PostgreSQL and its versioned migrations:
//! the first part of the PostgreSQL backend for scale-out (`docs/scale.md`).
//!
//! [`migrate`] brings a database to [`SCHEMA_VERSION`]:
//!
//! * every step in **one transaction**: a failure (or a crash) leaves the
//!   database at the version it had, with nothing of the step applied;
//! * **one migrator at a time**: the transaction first takes a
//!   transaction-scoped advisory lock ([`MIGRATION_LOCK`]), so several
//!   `office serve` processes starting together against one database
//!   migrate it once, the others finding it done;
//! * **a database newer than the code is refused** ([`PgError::NewerSchema`])
//!   and left untouched.
//!
//! The version lives in `tessera_schema (version)`, one row. Version 1 is
//! the embedded SQLite ledger's schema 13 with PostgreSQL's types
//! (`schema/001_books.sql`). On it: the posting core
//! ([`posting::PgLedger`]) and the sync feed's reads and writes, behind the
//! ledger's storage trait (`tessera_ledger::LedgerStore`), which is what
//! `office serve --postgres` runs — with online authorization, the
//! warehouse, the reports and the aging of gaps (`docs/scale.md`). Version
//! 2 adds the nonces the servers of one database share.

use postgres::{Client, NoTls};

mod aging;
pub mod cluster;
pub mod copy;
pub mod db;
mod office;
pub mod posting;
mod store;

/// The schema version this code brings a database to.
pub const SCHEMA_VERSION: i64 = 2;

/// The key of the transaction-scoped advisory lock migrations take
/// (`pg_advisory_xact_lock`): ASCII "tessera" as a number.
pub const MIGRATION_LOCK: i64 = 0x0074_6573_7365_7261;

/// The migrations, in order: step n brings version n − 1 to n.
const MIGRATIONS: [&str; 2] = [
    include_str!("schema/001_books.sql"),
    include_str!("schema/002_request_nonces.sql"),
];

/// Errors of the PostgreSQL ledger.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    /// The database's schema is newer than this code's: run a newer
    /// Tessera. Nothing was changed.
    #[error(
        "the database's ledger schema is version {found}, newer than this program's {expected}: use a newer Tessera"
    )]
    NewerSchema {
        /// The database's version.
        found: i64,
        /// This code's version.
        expected: i64,
    },
    /// The server refused or failed (connection, SQL, a migration step);
    /// a failed migration changed nothing.
    #[error("PostgreSQL: {}", pg_message(.0))]
    Postgres(#[from] postgres::Error),
    /// The SQLite ledger to copy could not be read.
    #[error("the SQLite ledger: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A copy target's ledger table already holds rows: nothing is
    /// overwritten, nothing was copied.
    #[error("the PostgreSQL ledger is not empty (table {0} holds rows): copy into a new database")]
    NotEmpty(String),
    /// A value or table that cannot be copied as it is.
    #[error("copy: {0}")]
    Copy(String),
    /// A batch refused at posting (not genuine, unknown or revoked
    /// terminal, conflicting with a posted batch): nothing written.
    #[error("refused: {0}")]
    Refused(tessera_ledger::LedgerError),
    /// The copy does not equal its source: rolled back, nothing copied.
    #[error("the copy of table {0} does not equal the SQLite ledger's: rolled back, nothing copied")]
    CopyMismatch(String),
    /// The warehouse could not be read or brought up to date: the
    /// transaction was rolled back.
    #[error("the warehouse: {0}")]
    Warehouse(tessera_ledger::LedgerError),
    /// The books' SQL shared with the SQLite ledger (online decisions,
    /// approval codes) failed: the transaction was rolled back.
    #[error("the books: {0}")]
    Books(tessera_ledger::LedgerError),
}

impl From<PgError> for tessera_ledger::LedgerError {
    /// The ledger's error for the server's answer: a refusal as it is; a
    /// lost or refused connection, a server shutting down or a transaction
    /// PostgreSQL chose to abort (serialization, deadlock) as
    /// [`LedgerError::Unavailable`](tessera_ledger::LedgerError::Unavailable)
    /// — nothing was committed, the caller retries; anything else as a
    /// storage error.
    fn from(e: PgError) -> Self {
        use tessera_ledger::LedgerError;
        match e {
            PgError::Refused(l) | PgError::Warehouse(l) | PgError::Books(l) => l,
            PgError::NewerSchema { found, expected } => LedgerError::NewerSchema { found, expected },
            PgError::Postgres(p) => {
                let retry = match p.as_db_error() {
                    // Class 08 (connection), 57P01-57P03 (shutdown,
                    // crash, cannot connect now), 40001 and 40P01.
                    Some(db) => {
                        let code = db.code().code();
                        code.starts_with("08") || code.starts_with("57P") || code == "40001" || code == "40P01"
                    }
                    None => true,
                };
                if retry {
                    LedgerError::Unavailable(pg_message(&p))
                } else {
                    LedgerError::Storage(format!("PostgreSQL: {}", pg_message(&p)))
                }
            }
            other => LedgerError::Storage(other.to_string()),
        }
    }
}

/// The server's own message (and SQLSTATE) when it gave one.
fn pg_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// Connects to `url` (`postgres://user@host:port/db`, no TLS: a database
/// server on the office's own network or loopback) and migrates it.
///
/// # Errors
/// [`PgError`]: the connection, or as [`migrate`].
pub fn connect(url: &str) -> Result<Client, PgError> {
    let mut client = Client::connect(url, NoTls)?;
    migrate(&mut client)?;
    Ok(client)
}

/// Connects to `url` without migrating: for the connections of a server
/// that migrated the database when it started. One query checks that the
/// database is at [`SCHEMA_VERSION`], without the migration lock.
///
/// # Errors
/// [`PgError::NewerSchema`] for a newer database; [`PgError::Copy`] for one
/// not migrated to this version; [`PgError::Postgres`].
pub fn connect_current(url: &str) -> Result<Client, PgError> {
    let mut client = Client::connect(url, NoTls)?;
    let found = schema_version(&mut client)?;
    if found > SCHEMA_VERSION {
        return Err(PgError::NewerSchema {
            found,
            expected: SCHEMA_VERSION,
        });
    }
    if found < SCHEMA_VERSION {
        return Err(PgError::Copy(format!(
            "the database's ledger schema is version {found}, not {SCHEMA_VERSION}: migrate it first"
        )));
    }
    Ok(client)
}

/// The database's schema version (0 for a database without the ledger).
///
/// # Errors
/// [`PgError::Postgres`].
pub fn schema_version(client: &mut Client) -> Result<i64, PgError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('tessera_schema') IS NOT NULL", &[])?
        .get(0);
    if !exists {
        return Ok(0);
    }
    Ok(client
        .query_opt("SELECT version FROM tessera_schema", &[])?
        .map_or(0, |r| r.get(0)))
}

/// Brings the database to [`SCHEMA_VERSION`] (module docs) and returns the
/// version it had.
///
/// # Errors
/// [`PgError::NewerSchema`] (nothing changed); [`PgError::Postgres`] when a
/// step fails (nothing of it applied).
pub fn migrate(client: &mut Client) -> Result<i64, PgError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS tessera_schema (version bigint NOT NULL)")?;
    let found: i64 = tx
        .query_opt("SELECT version FROM tessera_schema", &[])?
        .map_or(0, |r| r.get(0));
    if found > SCHEMA_VERSION {
        return Err(PgError::NewerSchema {
            found,
            expected: SCHEMA_VERSION,
        });
    }
    let done = usize::try_from(found).unwrap_or(0);
    for step in MIGRATIONS.iter().skip(done) {
        tx.batch_execute(step)?;
    }
    if found < SCHEMA_VERSION {
        tx.execute("DELETE FROM tessera_schema", &[])?;
        tx.execute("INSERT INTO tessera_schema (version) VALUES ($1)", &[&SCHEMA_VERSION])?;
    }
    tx.commit()?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_step_per_version() {
        assert_eq!(MIGRATIONS.len(), usize::try_from(SCHEMA_VERSION).unwrap_or(0));
        assert!(MIGRATIONS[0].contains("CREATE TABLE card_transactions"));
    }
}
