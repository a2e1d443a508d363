//! Copying an embedded SQLite ledger into PostgreSQL, and proving the copy
//! (`office migrate --to postgres://…`).
//!
//! [`copy_ledger`] copies every table of a SQLite ledger of schema
//! [`SQLITE_SCHEMA_VERSION`] into a PostgreSQL database migrated to
//! [`crate::SCHEMA_VERSION`] whose ledger tables are empty — in one
//! transaction, with `COPY … FROM STDIN`, every value checked against its
//! column's type — then sets the identity columns past the copied keys and,
//! before committing, compares both sides ([`compare`]). A copy that does
//! not verify is rolled back: nothing is left half-copied.
//!
//! The comparison is per table: the number of rows and a digest of their
//! contents that does not depend on the order the databases return them
//! in — the sum, modulo 2²⁵⁶, of SHA-256 of each row's canonical bytes
//! (per column: `00` NULL; `01` and the integer as 8 bytes big-endian;
//! `02`, the length as 4 bytes and the UTF-8 text; `03`, the length and the
//! bytes). Equal counts and digests on both sides mean the same multiset of
//! rows.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use postgres::types::Type;
use postgres::{Client, GenericClient};
use rusqlite::types::ValueRef;
use sha2::{Digest, Sha256};

use crate::PgError;

/// The SQLite ledger schema this code copies (`tessera_ledger::SCHEMA_VERSION`).
pub const SQLITE_SCHEMA_VERSION: i64 = 13;

/// One table's copy or comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDigest {
    /// The table.
    pub table: String,
    /// Rows in SQLite.
    pub sqlite_rows: u64,
    /// Rows in PostgreSQL.
    pub postgres_rows: u64,
    /// The SQLite side's digest (hex).
    pub sqlite_digest: String,
    /// The PostgreSQL side's digest (hex).
    pub postgres_digest: String,
}

impl TableDigest {
    /// Both sides hold the same rows.
    pub fn equal(&self) -> bool {
        self.sqlite_rows == self.postgres_rows && self.sqlite_digest == self.postgres_digest
    }
}

/// The ledger tables of a SQLite ledger, in an order that satisfies the
/// foreign keys (`stores` before `terminals`).
fn tables(sqlite: &rusqlite::Connection) -> Result<Vec<String>, PgError> {
    let mut stmt = sqlite
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY rowid")?;
    let mut names: Vec<String> = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    if let Some(i) = names.iter().position(|n| n == "stores") {
        let s = names.remove(i);
        names.insert(0, s);
    }
    Ok(names)
}

fn columns(sqlite: &rusqlite::Connection, table: &str) -> Result<Vec<String>, PgError> {
    let mut stmt = sqlite.prepare(&format!("SELECT name FROM pragma_table_info('{table}') ORDER BY cid"))?;
    let names: Vec<String> = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    Ok(names)
}

/// Adds one row's SHA-256 to a 256-bit sum.
fn add(sum: &mut [u64; 4], row: &[u8]) {
    let h = Sha256::digest(row);
    let mut carry = 0u128;
    for i in (0..4).rev() {
        let limb = u64::from_be_bytes(h[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
        let t = u128::from(sum[i]) + u128::from(limb) + carry;
        sum[i] = t as u64;
        carry = t >> 64;
    }
}

fn hex_sum(sum: &[u64; 4]) -> String {
    sum.iter().fold(String::new(), |mut s, l| {
        let _ = write!(s, "{l:016x}");
        s
    })
}

/// A value in the digest's canonical form.
enum Canon<'a> {
    Null,
    Int(i64),
    Text(&'a [u8]),
    Blob(&'a [u8]),
}

fn canon(out: &mut Vec<u8>, v: Canon<'_>) {
    match v {
        Canon::Null => out.push(0),
        Canon::Int(i) => {
            out.push(1);
            out.extend_from_slice(&i.to_be_bytes());
        }
        Canon::Text(t) | Canon::Blob(t) => {
            out.push(if matches!(v, Canon::Text(_)) { 2 } else { 3 });
            out.extend_from_slice(&u32::try_from(t.len()).unwrap_or(u32::MAX).to_be_bytes());
            out.extend_from_slice(t);
        }
    }
}

/// Escapes text for `COPY … FROM STDIN` (text format).
pub(crate) fn copy_text(out: &mut Vec<u8>, t: &[u8]) {
    for &b in t {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

/// The SQLite side of one table: its rows as `COPY` text (when `copy`),
/// their number and digest.
fn read_sqlite(
    sqlite: &rusqlite::Connection,
    table: &str,
    cols: &[String],
    pg_types: &[Type],
    mut copy: Option<&mut dyn std::io::Write>,
) -> Result<(u64, String), PgError> {
    let list = cols.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ");
    let mut stmt = sqlite.prepare(&format!("SELECT {list} FROM \"{table}\""))?;
    let mut rows = stmt.query([])?;
    let (mut n, mut sum) = (0u64, [0u64; 4]);
    let mut line = Vec::new();
    let mut canonical = Vec::new();
    while let Some(row) = rows.next()? {
        line.clear();
        canonical.clear();
        for (i, col) in cols.iter().enumerate() {
            if i > 0 {
                line.push(b'\t');
            }
            let wrong = |found: &str| PgError::Copy(format!("{table}.{col} holds {found}, not a {}", pg_types[i]));
            match (row.get_ref(i)?, &pg_types[i]) {
                (ValueRef::Null, _) => {
                    line.extend_from_slice(b"\\N");
                    canon(&mut canonical, Canon::Null);
                }
                (ValueRef::Integer(v), t) if *t == Type::INT8 => {
                    line.extend_from_slice(v.to_string().as_bytes());
                    canon(&mut canonical, Canon::Int(v));
                }
                (ValueRef::Text(t), ty) if *ty == Type::TEXT => {
                    std::str::from_utf8(t).map_err(|_| wrong("text that is not UTF-8"))?;
                    copy_text(&mut line, t);
                    canon(&mut canonical, Canon::Text(t));
                }
                (ValueRef::Blob(b), t) if *t == Type::BYTEA => {
                    line.extend_from_slice(b"\\\\x");
                    line.extend_from_slice(hex::encode(b).as_bytes());
                    canon(&mut canonical, Canon::Blob(b));
                }
                (ValueRef::Integer(_), _) => return Err(wrong("an integer")),
                (ValueRef::Text(_), _) => return Err(wrong("text")),
                (ValueRef::Blob(_), _) => return Err(wrong("a blob")),
                (ValueRef::Real(_), _) => return Err(wrong("a real number")),
            }
        }
        line.push(b'\n');
        if let Some(w) = copy.as_deref_mut() {
            w.write_all(&line).map_err(|e| PgError::Copy(format!("{table}: {e}")))?;
        }
        add(&mut sum, &canonical);
        n += 1;
    }
    Ok((n, hex_sum(&sum)))
}

/// The PostgreSQL side of one table: its columns' types, or its rows'
/// number and digest.
fn pg_types(pg: &mut impl GenericClient, table: &str, cols: &[String]) -> Result<Vec<Type>, PgError> {
    let list = cols.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ");
    let stmt = pg.prepare(&format!("SELECT {list} FROM \"{table}\" LIMIT 0"))?;
    Ok(stmt.columns().iter().map(|c| c.type_().clone()).collect())
}

fn read_pg(pg: &mut impl GenericClient, table: &str, cols: &[String]) -> Result<(u64, String), PgError> {
    let list = cols.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ");
    let (mut n, mut sum) = (0u64, [0u64; 4]);
    let mut canonical = Vec::new();
    for row in pg.query(&format!("SELECT {list} FROM \"{table}\""), &[])? {
        canonical.clear();
        for (i, c) in row.columns().iter().enumerate() {
            let t = c.type_();
            if *t == Type::INT8 {
                match row.try_get::<_, Option<i64>>(i)? {
                    Some(v) => canon(&mut canonical, Canon::Int(v)),
                    None => canon(&mut canonical, Canon::Null),
                }
            } else if *t == Type::TEXT {
                match row.try_get::<_, Option<&str>>(i)? {
                    Some(v) => canon(&mut canonical, Canon::Text(v.as_bytes())),
                    None => canon(&mut canonical, Canon::Null),
                }
            } else if *t == Type::BYTEA {
                match row.try_get::<_, Option<&[u8]>>(i)? {
                    Some(v) => canon(&mut canonical, Canon::Blob(v)),
                    None => canon(&mut canonical, Canon::Null),
                }
            } else {
                return Err(PgError::Copy(format!("{table}.{} is of type {t}", c.name())));
            }
        }
        add(&mut sum, &canonical);
        n += 1;
    }
    Ok((n, hex_sum(&sum)))
}

fn open_sqlite(path: &Path) -> Result<rusqlite::Connection, PgError> {
    let sqlite = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let version: i64 = sqlite.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version != SQLITE_SCHEMA_VERSION {
        return Err(PgError::Copy(format!(
            "the SQLite ledger is at schema {version}, this program copies schema {SQLITE_SCHEMA_VERSION}: open it with this version of Tessera first"
        )));
    }
    Ok(sqlite)
}

fn compare_in(sqlite: &rusqlite::Connection, pg: &mut impl GenericClient) -> Result<Vec<TableDigest>, PgError> {
    let mut out = Vec::new();
    for table in tables(sqlite)? {
        let cols = columns(sqlite, &table)?;
        let types = pg_types(pg, &table, &cols)?;
        let (sqlite_rows, sqlite_digest) = read_sqlite(sqlite, &table, &cols, &types, None)?;
        let (postgres_rows, postgres_digest) = read_pg(pg, &table, &cols)?;
        out.push(TableDigest {
            table,
            sqlite_rows,
            postgres_rows,
            sqlite_digest,
            postgres_digest,
        });
    }
    Ok(out)
}

/// Compares the SQLite ledger at `path` with the PostgreSQL ledger,
/// table by table (module docs).
///
/// # Errors
/// [`PgError`]: either side unreadable, a table or column missing on the
/// PostgreSQL side, a value of another type.
pub fn compare(path: &Path, client: &mut Client) -> Result<Vec<TableDigest>, PgError> {
    let sqlite = open_sqlite(path)?;
    let mut tx = client.transaction()?;
    tx.batch_execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")?;
    let out = compare_in(&sqlite, &mut tx)?;
    tx.commit()?;
    Ok(out)
}

/// Copies the SQLite ledger at `path` into the (migrated, empty)
/// PostgreSQL ledger and proves the copy before committing (module docs).
/// Returns the comparison.
///
/// # Errors
/// [`PgError::NotEmpty`] when a ledger table already holds rows (nothing
/// is overwritten); [`PgError::CopyMismatch`] when the copy does not verify
/// (rolled back); otherwise as [`compare`].
pub fn copy_ledger(path: &Path, client: &mut Client) -> Result<Vec<TableDigest>, PgError> {
    let sqlite = open_sqlite(path)?;
    crate::migrate(client)?;
    let mut tx = client.transaction()?;
    let names = tables(&sqlite)?;
    for table in &names {
        let any: bool = tx
            .query_one(&format!("SELECT EXISTS (SELECT 1 FROM \"{table}\")"), &[])?
            .get(0);
        if any {
            return Err(PgError::NotEmpty(table.clone()));
        }
    }
    for table in &names {
        let cols = columns(&sqlite, table)?;
        let types = pg_types(&mut tx, table, &cols)?;
        let list = cols.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ");
        let mut writer = tx.copy_in(&format!("COPY \"{table}\" ({list}) FROM STDIN"))?;
        read_sqlite(&sqlite, table, &cols, &types, Some(&mut writer))?;
        writer.flush().map_err(|e| PgError::Copy(format!("{table}: {e}")))?;
        writer.finish()?;
    }
    // Identity columns continue after the copied keys.
    let identities: Vec<(String, String)> = tx
        .query(
            "SELECT table_name::text, column_name::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND is_identity = 'YES'",
            &[],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for (table, col) in identities {
        tx.execute(
            &format!(
                "SELECT setval(pg_get_serial_sequence('\"{table}\"', '{col}'), COALESCE(MAX(\"{col}\"), 0) + 1, false) FROM \"{table}\""
            ),
            &[],
        )?;
    }
    let digests = compare_in(&sqlite, &mut tx)?;
    if let Some(bad) = digests.iter().find(|d| !d.equal()) {
        return Err(PgError::CopyMismatch(bad.table.clone()));
    }
    tx.commit()?;
    Ok(digests)
}
