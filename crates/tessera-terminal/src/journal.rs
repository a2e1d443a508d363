//! The terminal's durable journal: one SQLite file, append-only, hash-chained.
//!
//! Every decision at the till and every card transaction the terminal learns
//! of becomes one [`JournalRecord`] with a gapless sequence number. Each
//! record carries the SHA-256 of its predecessor, so an edited, deleted or
//! reordered record breaks the chain ([`Journal::verify_chain`]); the chain
//! head is also kept in the file's metadata so that cutting records off the
//! end is detected too.
//!
//! Kinds of records ([`EntryKind`]):
//! * `decision` — approve, decline or refer, with the reason. An approved
//!   card transaction is journaled *before* the command goes to the card
//!   (write-ahead), and its sequence number is the terminal sequence the
//!   card certifies;
//! * `completion` — the card's answer to an approved decision, with the
//!   certificate; durable before the clerk sees "approved";
//! * `recovered` — a card record learned at a tap rather than from the
//!   card's answer: the answer to one of this terminal's decisions that was
//!   lost (the card was pulled), or the last transaction of a card made at
//!   another terminal, which the ledger matches by card id and counter;
//! * `void` — one of this terminal's approved decisions that the card shows
//!   it never committed.
//!
//! Storage: WAL mode, `synchronous = FULL`, one transaction per append,
//! schema version in `PRAGMA user_version` (migrations run in one
//! transaction; a newer schema than this code knows is refused).

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Deserialize;

use tessera_protocol::messages::CardId;

/// Schema version this code writes.
pub const SCHEMA_VERSION: i64 = 2;

/// Errors of the journal. After any of them, no decision may be taken:
/// the till must not touch a card it cannot journal first.
///
/// # What the caller does
/// * [`JournalError::Db`], [`JournalError::Permissions`]: the disk or the
///   file's permissions; fix them and retry (nothing was half-written: each
///   append is one transaction).
/// * [`JournalError::NewerSchema`]: upgrade the till's software.
/// * [`JournalError::WrongTerminal`]: the wrong directory or bundle was
///   given; never copy a till's directory to another till.
/// * [`JournalError::ChainBroken`], [`JournalError::Corrupt`]: the journal
///   was edited or damaged; stop the till and call the office (its batches
///   settled so far are safe in the ledger).
/// * [`JournalError::NotResealable`]: settle first; only unacknowledged
///   batches can be re-sealed smaller.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// SQLite failed (I/O, locking, corruption).
    #[error("journal database: {0}")]
    Db(#[from] rusqlite::Error),
    /// The file was written by a newer version of Tessera.
    #[error("journal schema version {found} is newer than this program's ({SCHEMA_VERSION}); upgrade Tessera")]
    NewerSchema {
        /// The version found.
        found: i64,
    },
    /// The journal belongs to another terminal.
    #[error("journal belongs to terminal {found}, not {expected}")]
    WrongTerminal {
        /// Terminal id in the file.
        found: u32,
        /// Terminal id asked for.
        expected: u32,
    },
    /// The journal file's permissions could not be set to owner-only.
    #[error("journal file permissions: {0}")]
    Permissions(String),
    /// The hash chain does not verify.
    #[error("journal chain broken at record {seq}: {why}")]
    ChainBroken {
        /// First bad sequence number.
        seq: u32,
        /// What is wrong.
        why: String,
    },
    /// Unacknowledged batches cannot be re-sealed: a later one is
    /// acknowledged ([`Journal::split_unacknowledged`]).
    #[error("batches cannot be re-sealed: {0}")]
    NotResealable(String),
    /// A stored record cannot be decoded.
    #[error("journal record {seq} is unreadable: {why}")]
    Corrupt {
        /// Sequence number.
        seq: u32,
        /// What is wrong.
        why: String,
    },
}

pub use tessera_settlement::batch::SealedRange;
pub use tessera_settlement::record::{
    record_hash, tx_kind, BasketLine, Entry, EntryKind, QuoteInputs, RawRecord, Verdict,
};

/// A stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalRecord {
    /// Gapless sequence number, from 1.
    pub seq: u32,
    /// The terminal.
    pub terminal_id: u32,
    /// The content.
    pub entry: Entry,
    /// SHA-256 of the previous record (zeros for the first).
    pub prev_hash: [u8; 32],
    /// SHA-256 of this record.
    pub hash: [u8; 32],
}

/// What the chain check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    /// Number of records.
    pub records: u32,
    /// Hash of the last record.
    pub head: [u8; 32],
}

/// A stored row: seq, terminal id, body, previous hash, hash.
type RawRow = (u32, u32, String, Vec<u8>, Vec<u8>);

/// The journal of one terminal.
pub struct Journal {
    conn: Connection,
    terminal_id: u32,
    head_seq: u32,
    head_hash: [u8; 32],
}

const MIGRATION_1: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE records (
    seq INTEGER PRIMARY KEY,
    terminal_id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    time INTEGER NOT NULL,
    card_id TEXT,
    card_counter INTEGER,
    body TEXT NOT NULL,
    prev_hash BLOB NOT NULL,
    hash BLOB NOT NULL UNIQUE
);
CREATE INDEX records_card ON records (card_id, card_counter);
";

/// Version 2: settlement batches (sealed ranges and their acknowledgements).
const MIGRATION_2: &str = "
CREATE TABLE batches (
    batch_no INTEGER PRIMARY KEY,
    seq_from INTEGER NOT NULL,
    seq_to INTEGER NOT NULL,
    head BLOB NOT NULL,
    sealed_at INTEGER NOT NULL,
    acked_at INTEGER
);
";

impl Journal {
    /// Opens (creating if needed) the journal of `terminal_id` at `path`.
    ///
    /// # Errors
    /// [`JournalError::NewerSchema`], [`JournalError::WrongTerminal`], or a
    /// database error (unreadable or corrupt file).
    pub fn open(path: &Path, terminal_id: u32) -> Result<Self, JournalError> {
        let mut conn = Connection::open(path)?;
        // Card ids, purchases and categories: owner-only (SQLite gives the
        // WAL and shared-memory files the database file's permissions).
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| JournalError::Permissions(format!("{}: {e}", path.display())))?;
        }
        // Not Unix (Windows): no mode bits; the file inherits its
        // directory's ACL, so a private directory keeps the journal private.
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // WAL keeps readers off the writer's back; FULL makes every commit
        // durable before it returns.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(JournalError::NewerSchema { found: version });
        }
        if version < SCHEMA_VERSION {
            // Every migration step in one transaction: all or nothing.
            let tx = conn.transaction()?;
            if version < 1 {
                tx.execute_batch(MIGRATION_1)?;
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES ('terminal_id', ?1)",
                    params![terminal_id.to_string()],
                )?;
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES ('head', ?1)",
                    params![format!("0:{}", hex::encode([0u8; 32]))],
                )?;
            }
            if version < 2 {
                tx.execute_batch(MIGRATION_2)?;
            }
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            tx.commit()?;
        }
        let found: String = conn.query_row("SELECT value FROM meta WHERE key = 'terminal_id'", [], |r| r.get(0))?;
        let found: u32 = found.parse().map_err(|_| JournalError::Corrupt {
            seq: 0,
            why: "terminal id".into(),
        })?;
        if found != terminal_id {
            return Err(JournalError::WrongTerminal {
                found,
                expected: terminal_id,
            });
        }
        let (head_seq, head_hash) = Self::stored_head(&conn)?;
        Ok(Self {
            conn,
            terminal_id,
            head_seq,
            head_hash,
        })
    }

    /// The terminal id recorded in an existing journal file, without opening
    /// it for writing.
    ///
    /// # Errors
    /// A database error, or [`JournalError::Corrupt`].
    pub fn terminal_id_of(path: &Path) -> Result<Option<u32>, JournalError> {
        if !path.exists() {
            return Ok(None);
        }
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let v: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'terminal_id'", [], |r| r.get(0))
            .optional()?;
        v.map(|s| {
            s.parse().map_err(|_| JournalError::Corrupt {
                seq: 0,
                why: "terminal id".into(),
            })
        })
        .transpose()
    }

    fn stored_head(conn: &Connection) -> Result<(u32, [u8; 32]), JournalError> {
        let head: String = conn.query_row("SELECT value FROM meta WHERE key = 'head'", [], |r| r.get(0))?;
        let bad = || JournalError::Corrupt {
            seq: 0,
            why: format!("head {head:?}"),
        };
        let (seq, hash) = head.split_once(':').ok_or_else(bad)?;
        let mut h = [0u8; 32];
        hex::decode_to_slice(hash, &mut h).map_err(|_| bad())?;
        Ok((seq.parse().map_err(|_| bad())?, h))
    }

    /// This journal's terminal.
    pub fn terminal_id(&self) -> u32 {
        self.terminal_id
    }

    /// The sequence number the next record will get.
    pub fn next_seq(&self) -> u32 {
        self.head_seq + 1
    }

    /// Number of records.
    pub fn len(&self) -> u32 {
        self.head_seq
    }

    /// Whether the journal is empty.
    pub fn is_empty(&self) -> bool {
        self.head_seq == 0
    }

    /// Appends a record durably (one SQLite transaction, fsync'd) and
    /// returns it.
    ///
    /// # Errors
    /// A database error; then nothing was written.
    pub fn append(&mut self, entry: Entry) -> Result<JournalRecord, JournalError> {
        let seq = self.head_seq + 1;
        let (hash, body) = record_hash(&self.head_hash, seq, self.terminal_id, &entry);
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO records (seq, terminal_id, kind, time, card_id, card_counter, body, prev_hash, hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                seq,
                self.terminal_id,
                kind_name(entry.kind),
                entry.time,
                entry.card_id,
                entry.card_counter,
                body,
                self.head_hash.to_vec(),
                hash.to_vec()
            ],
        )?;
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'head'",
            params![format!("{seq}:{}", hex::encode(hash))],
        )?;
        tx.commit()?;
        let prev_hash = self.head_hash;
        self.head_seq = seq;
        self.head_hash = hash;
        Ok(JournalRecord {
            seq,
            terminal_id: self.terminal_id,
            entry,
            prev_hash,
            hash,
        })
    }

    fn row_to_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
        Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?))
    }

    fn decode(raw: RawRow) -> Result<JournalRecord, JournalError> {
        let (seq, terminal_id, body, prev, hash) = raw;
        #[derive(Deserialize)]
        struct Stored {
            seq: u32,
            terminal_id: u32,
            entry: Entry,
        }
        let s: Stored = serde_json::from_str(&body).map_err(|e| JournalError::Corrupt {
            seq,
            why: e.to_string(),
        })?;
        if s.seq != seq || s.terminal_id != terminal_id {
            return Err(JournalError::ChainBroken {
                seq,
                why: "record moved".into(),
            });
        }
        let to32 = |v: Vec<u8>| -> Result<[u8; 32], JournalError> {
            v.try_into().map_err(|_| JournalError::Corrupt {
                seq,
                why: "hash length".into(),
            })
        };
        Ok(JournalRecord {
            seq,
            terminal_id,
            entry: s.entry,
            prev_hash: to32(prev)?,
            hash: to32(hash)?,
        })
    }

    fn query(&self, sql: &str, p: impl rusqlite::Params) -> Result<Vec<JournalRecord>, JournalError> {
        let mut stmt = self.conn.prepare(sql)?;
        let rows = stmt.query_map(p, Self::row_to_record)?;
        let mut out = Vec::new();
        for r in rows {
            out.push(Self::decode(r?)?);
        }
        Ok(out)
    }

    /// All records in order.
    ///
    /// # Errors
    /// A database or decoding error.
    pub fn records(&self) -> Result<Vec<JournalRecord>, JournalError> {
        self.query(
            "SELECT seq, terminal_id, body, prev_hash, hash FROM records ORDER BY seq",
            [],
        )
    }

    /// The records about one card, in order.
    ///
    /// # Errors
    /// A database or decoding error.
    pub fn records_for(&self, card_id: &CardId) -> Result<Vec<JournalRecord>, JournalError> {
        self.query(
            "SELECT seq, terminal_id, body, prev_hash, hash FROM records WHERE card_id = ?1 ORDER BY seq",
            params![hex::encode_upper(card_id)],
        )
    }

    /// The record with a sequence number.
    ///
    /// # Errors
    /// A database or decoding error.
    pub fn get(&self, seq: u32) -> Result<Option<JournalRecord>, JournalError> {
        Ok(self
            .query(
                "SELECT seq, terminal_id, body, prev_hash, hash FROM records WHERE seq = ?1",
                params![seq],
            )?
            .pop())
    }

    /// The card transaction (completion or recovered) with this card id
    /// and counter, if journaled here.
    ///
    /// # Errors
    /// A database or decoding error.
    pub fn card_transaction(&self, card_id: &CardId, counter: u32) -> Result<Option<JournalRecord>, JournalError> {
        Ok(self
            .query(
                "SELECT seq, terminal_id, body, prev_hash, hash FROM records
                 WHERE card_id = ?1 AND card_counter = ?2 AND kind IN ('completion', 'recovered') ORDER BY seq LIMIT 1",
                params![hex::encode_upper(card_id), counter],
            )?
            .pop())
    }

    /// Approved decisions of this terminal whose outcome is not journaled
    /// yet (no completion, no void, no recovered record of the same
    /// terminal sequence).
    ///
    /// # Errors
    /// A database or decoding error.
    pub fn pending(&self) -> Result<Vec<JournalRecord>, JournalError> {
        Ok(self.unresolved(self.records()?))
    }

    /// [`Journal::pending`] for one card only (an indexed lookup: what a
    /// tap needs).
    ///
    /// # Errors
    /// A database or decoding error.
    pub fn pending_for(&self, card_id: &CardId) -> Result<Vec<JournalRecord>, JournalError> {
        Ok(self.unresolved(self.records_for(card_id)?))
    }

    fn unresolved(&self, all: Vec<JournalRecord>) -> Vec<JournalRecord> {
        let resolved: std::collections::HashSet<u32> = all
            .iter()
            .filter(|r| match r.entry.kind {
                EntryKind::Completion | EntryKind::Void => true,
                EntryKind::Recovered => r.entry.origin_terminal == Some(self.terminal_id),
                EntryKind::Decision => false,
            })
            .filter_map(|r| r.entry.origin_seq)
            .collect();
        all.into_iter()
            .filter(|r| {
                r.entry.kind == EntryKind::Decision
                    && r.entry.verdict == Some(Verdict::Approve)
                    && r.entry.tx_type.as_deref().and_then(tx_kind).is_some()
                    && !resolved.contains(&r.seq)
            })
            .collect()
    }

    /// Whether a refund of `original` on this card is journaled here
    /// (approved, or still pending).
    ///
    /// # Errors
    /// A database or decoding error.
    pub fn refund_of(&self, card_id: &CardId, original: u32) -> Result<Option<JournalRecord>, JournalError> {
        Ok(self.records_for(card_id)?.into_iter().find(|r| {
            r.entry.reference == Some(original)
                && r.entry
                    .tx_type
                    .as_deref()
                    .and_then(tx_kind)
                    .is_some_and(|k| k.is_refund())
                && match r.entry.kind {
                    EntryKind::Completion | EntryKind::Recovered => true,
                    EntryKind::Decision => r.entry.verdict == Some(Verdict::Approve),
                    EntryKind::Void => false,
                }
        }))
    }

    /// The card record of issuer adjustment `seq` of this card (v2.1), if
    /// this journal holds it (completion or recovered): the adjustment went
    /// through and must not be sent again.
    ///
    /// # Errors
    /// A database or decoding error.
    pub fn adjustment_of(&self, card_id: &CardId, seq: u32) -> Result<Option<JournalRecord>, JournalError> {
        Ok(self.records_for(card_id)?.into_iter().find(|r| {
            r.entry.reference == Some(seq)
                && r.entry
                    .tx_type
                    .as_deref()
                    .and_then(tx_kind)
                    .is_some_and(|k| k.is_adjustment())
                && matches!(r.entry.kind, EntryKind::Completion | EntryKind::Recovered)
        }))
    }

    /// The approved decision on this card that went ahead on the office
    /// approval `code` (canonical form), unless the card never committed
    /// it (a `void` names it: the code may be used again).
    ///
    /// # Errors
    /// A database or decoding error.
    pub fn approval_use(&self, card_id: &CardId, code: &str) -> Result<Option<JournalRecord>, JournalError> {
        let recs = self.records_for(card_id)?;
        let voided: std::collections::HashSet<u32> = recs
            .iter()
            .filter(|r| r.entry.kind == EntryKind::Void)
            .filter_map(|r| r.entry.origin_seq)
            .collect();
        Ok(recs.into_iter().find(|r| {
            r.entry.kind == EntryKind::Decision
                && r.entry.verdict == Some(Verdict::Approve)
                && r.entry.approval.as_deref() == Some(code)
                && !voided.contains(&r.seq)
        }))
    }

    /// The times of the decisions journaled at or after `since` whose
    /// reason is one of `reasons`, oldest first (the wrong approval codes
    /// of the last hour).
    ///
    /// # Errors
    /// A database error.
    pub fn decision_times_since(&self, since: u32, reasons: &[&str]) -> Result<Vec<u32>, JournalError> {
        let mut stmt = self.conn.prepare(
            "SELECT time, json_extract(body, '$.entry.reason') FROM records
             WHERE kind = 'decision' AND time >= ?1 ORDER BY time",
        )?;
        let rows = stmt.query_map(params![since], |r| {
            Ok((r.get::<_, u32>(0)?, r.get::<_, Option<String>>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (t, reason) = row?;
            if reason.is_some_and(|r| reasons.contains(&r.as_str())) {
                out.push(t);
            }
        }
        Ok(out)
    }

    /// The stored rows of records `from..=to`: sequence, the exact hashed
    /// body, previous hash, hash — what a settlement batch carries.
    ///
    /// # Errors
    /// A database error.
    pub fn raw_range(&self, from: u32, to: u32) -> Result<Vec<RawRecord>, JournalError> {
        let mut stmt = self.conn.prepare(
            "SELECT seq, terminal_id, body, prev_hash, hash FROM records WHERE seq BETWEEN ?1 AND ?2 ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![from, to], Self::row_to_record)?;
        let mut out = Vec::new();
        for r in rows {
            let (seq, _, body, prev, hash) = r?;
            let to32 = |v: Vec<u8>| -> Result<[u8; 32], JournalError> {
                v.try_into().map_err(|_| JournalError::Corrupt {
                    seq,
                    why: "hash length".into(),
                })
            };
            out.push((seq, body, to32(prev)?, to32(hash)?));
        }
        Ok(out)
    }

    fn ranges(&self, sql: &str) -> Result<Vec<SealedRange>, JournalError> {
        let mut stmt = self.conn.prepare(sql)?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, u32>(0)?,
                r.get::<_, u32>(1)?,
                r.get::<_, u32>(2)?,
                r.get::<_, Vec<u8>>(3)?,
                r.get::<_, u32>(4)?,
                r.get::<_, Option<u32>>(5)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (batch_no, seq_from, seq_to, head, sealed_at, acked_at) = row?;
            let head: [u8; 32] = head.try_into().map_err(|_| JournalError::Corrupt {
                seq: seq_to,
                why: "batch head".into(),
            })?;
            let prev_head = if seq_from <= 1 {
                [0u8; 32]
            } else {
                self.get(seq_from - 1)?.map(|r| r.hash).ok_or(JournalError::Corrupt {
                    seq: seq_from - 1,
                    why: "missing".into(),
                })?
            };
            out.push(SealedRange {
                batch_no,
                seq_from,
                seq_to,
                prev_head,
                head,
                sealed_at,
                acked_at,
            });
        }
        Ok(out)
    }

    /// Every sealed batch, oldest first.
    ///
    /// # Errors
    /// A database error.
    pub fn batches(&self) -> Result<Vec<SealedRange>, JournalError> {
        self.ranges("SELECT batch_no, seq_from, seq_to, head, sealed_at, acked_at FROM batches ORDER BY batch_no")
    }

    /// The last record acknowledged as settled (0 if none).
    ///
    /// # Errors
    /// A database error.
    pub fn settled_up_to(&self) -> Result<u32, JournalError> {
        Ok(self.conn.query_row(
            "SELECT COALESCE(MAX(seq_to), 0) FROM batches WHERE acked_at IS NOT NULL",
            [],
            |r| r.get(0),
        )?)
    }

    /// Seals the unsettled journal into a batch range. An earlier sealed
    /// batch that was never acknowledged is returned again, unchanged, so a
    /// retry always sends the same batch; otherwise the records after the
    /// last sealed batch become the next batch. `None` when there is
    /// nothing to settle.
    ///
    /// # Errors
    /// A database error.
    pub fn seal(&mut self, now: u32) -> Result<Option<SealedRange>, JournalError> {
        if let Some(open) = self.batches()?.into_iter().find(|b| b.acked_at.is_none()) {
            return Ok(Some(open));
        }
        self.seal_next(now)
    }

    /// Seals the records after the last sealed batch into the next batch,
    /// even while earlier batches wait for their acknowledgement: the
    /// offline path, where batches travel as files and may reach the back
    /// office in any order (it holds a batch until its predecessors
    /// arrive). `None` when nothing new is there to seal.
    ///
    /// # Errors
    /// A database error.
    pub fn seal_next(&mut self, now: u32) -> Result<Option<SealedRange>, JournalError> {
        let all = self.batches()?;
        let from = all.last().map_or(1, |b| b.seq_to + 1);
        if from > self.head_seq {
            return Ok(None);
        }
        let batch_no = all.last().map_or(1, |b| b.batch_no + 1);
        self.conn.execute(
            "INSERT INTO batches (batch_no, seq_from, seq_to, head, sealed_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![batch_no, from, self.head_seq, self.head_hash.to_vec(), now],
        )?;
        Ok(self.batches()?.into_iter().find(|b| b.batch_no == batch_no))
    }

    /// As [`Journal::seal`], but a new batch holds at most `max_records`
    /// records (the rest wait for the next call); an unacknowledged batch is
    /// still returned unchanged, whatever its size.
    ///
    /// # Errors
    /// A database error.
    pub fn seal_at_most(&mut self, now: u32, max_records: u32) -> Result<Option<SealedRange>, JournalError> {
        if let Some(open) = self.batches()?.into_iter().find(|b| b.acked_at.is_none()) {
            return Ok(Some(open));
        }
        let all = self.batches()?;
        let from = all.last().map_or(1, |b| b.seq_to + 1);
        if from > self.head_seq {
            return Ok(None);
        }
        let to = self.head_seq.min(from.saturating_add(max_records.max(1) - 1));
        let head = self
            .get(to)?
            .ok_or_else(|| JournalError::Corrupt {
                seq: to,
                why: "missing".into(),
            })?
            .hash;
        let batch_no = all.last().map_or(1, |b| b.batch_no + 1);
        self.conn.execute(
            "INSERT INTO batches (batch_no, seq_from, seq_to, head, sealed_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![batch_no, from, to, head.to_vec(), now],
        )?;
        Ok(self.batches()?.into_iter().find(|b| b.batch_no == batch_no))
    }

    /// Re-seals the unacknowledged batches, from the oldest on, into
    /// batches of at most `max_records` records each, with the same
    /// numbers from the oldest on: for an office that refused them as too
    /// large (`413`), so never stored them. Refused
    /// ([`JournalError::NotResealable`]) when a later batch is acknowledged
    /// already (the office holds it: its number and head must not change).
    /// Returns the new ranges.
    ///
    /// # Errors
    /// A database error, or as above.
    pub fn split_unacknowledged(&mut self, now: u32, max_records: u32) -> Result<Vec<SealedRange>, JournalError> {
        let all = self.batches()?;
        let Some(first) = all.iter().position(|b| b.acked_at.is_none()) else {
            return Ok(Vec::new());
        };
        if all[first..].iter().any(|b| b.acked_at.is_some()) {
            return Err(JournalError::NotResealable(
                "a later batch is acknowledged by the office".into(),
            ));
        }
        let (from, to, mut batch_no) = (all[first].seq_from, all[all.len() - 1].seq_to, all[first].batch_no);
        let max = max_records.max(1);
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM batches WHERE batch_no >= ?1", [batch_no])?;
        let mut seq = from;
        while seq <= to {
            let end = to.min(seq.saturating_add(max - 1));
            let head: Vec<u8> = tx.query_row("SELECT hash FROM records WHERE seq = ?1", [end], |r| r.get(0))?;
            tx.execute(
                "INSERT INTO batches (batch_no, seq_from, seq_to, head, sealed_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![batch_no, seq, end, head, now],
            )?;
            batch_no += 1;
            seq = end + 1;
        }
        tx.commit()?;
        Ok(self.batches()?.into_iter().skip(first).collect())
    }

    /// Marks a sealed batch acknowledged by the back office: its records
    /// are settled. Idempotent.
    ///
    /// # Errors
    /// [`JournalError::Corrupt`] if no such batch with that head exists.
    pub fn acknowledge(&mut self, batch_no: u32, head: &[u8; 32], now: u32) -> Result<(), JournalError> {
        let n = self.conn.execute(
            "UPDATE batches SET acked_at = COALESCE(acked_at, ?1) WHERE batch_no = ?2 AND head = ?3",
            params![now, batch_no, head.to_vec()],
        )?;
        if n == 0 {
            return Err(JournalError::Corrupt {
                seq: 0,
                why: format!("no sealed batch {batch_no} with that head"),
            });
        }
        Ok(())
    }

    /// Checks the whole chain: gapless sequence from 1, every hash, every
    /// link, the indexed columns against the hashed body, and the head.
    ///
    /// # Errors
    /// [`JournalError::ChainBroken`] naming the first bad record.
    pub fn verify_chain(&self) -> Result<ChainReport, JournalError> {
        let mut stmt = self.conn.prepare(
            "SELECT seq, terminal_id, body, prev_hash, hash, kind, time, card_id, card_counter FROM records ORDER BY seq",
        )?;
        let mut rows = stmt.query([])?;
        let mut prev = [0u8; 32];
        let mut expected_seq = 1u32;
        while let Some(row) = rows.next()? {
            let raw = Self::row_to_record(row)?;
            let seq = raw.0;
            let broken = |why: &str| JournalError::ChainBroken { seq, why: why.into() };
            if seq != expected_seq {
                return Err(JournalError::ChainBroken {
                    seq: expected_seq,
                    why: format!("record missing (next is {seq})"),
                });
            }
            let rec = Self::decode(raw)?;
            if rec.prev_hash != prev {
                return Err(broken("does not link to the previous record"));
            }
            let (hash, _) = record_hash(&prev, rec.seq, rec.terminal_id, &rec.entry);
            if hash != rec.hash {
                return Err(broken("content does not match its hash"));
            }
            let kind: String = row.get(5)?;
            let time: u32 = row.get(6)?;
            let card_id: Option<String> = row.get(7)?;
            let card_counter: Option<u32> = row.get(8)?;
            if kind != kind_name(rec.entry.kind)
                || time != rec.entry.time
                || card_id != rec.entry.card_id
                || card_counter != rec.entry.card_counter
            {
                return Err(broken("indexed columns differ from the record"));
            }
            if rec.terminal_id != self.terminal_id {
                return Err(broken("record of another terminal"));
            }
            prev = rec.hash;
            expected_seq += 1;
        }
        let (head_seq, head_hash) = Self::stored_head(&self.conn)?;
        if head_seq != expected_seq - 1 || head_hash != prev {
            return Err(JournalError::ChainBroken {
                seq: expected_seq,
                why: "records cut off the end".into(),
            });
        }
        Ok(ChainReport {
            records: expected_seq - 1,
            head: prev,
        })
    }
}

fn kind_name(k: EntryKind) -> &'static str {
    match k {
        EntryKind::Decision => "decision",
        EntryKind::Completion => "completion",
        EntryKind::Recovered => "recovered",
        EntryKind::Void => "void",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(j: &mut Journal, n: u32) {
        for i in 0..n {
            let mut e = Entry::new(EntryKind::Decision, 1000 + i);
            e.card_id = Some("7E57000000000001".into());
            e.card_counter = Some(i + 1);
            e.tx_type = Some("earn".into());
            e.points = Some(10);
            e.verdict = Some(Verdict::Approve);
            j.append(e).unwrap();
        }
    }

    #[test]
    fn appends_and_verifies() {
        let dir = tempfile_dir();
        let path = dir.join("j.sqlite");
        let mut j = Journal::open(&path, 7).unwrap();
        sample(&mut j, 5);
        assert_eq!(j.verify_chain().unwrap().records, 5);
        drop(j);
        let j = Journal::open(&path, 7).unwrap();
        assert_eq!(j.next_seq(), 6);
        assert!(matches!(
            Journal::open(&path, 8),
            Err(JournalError::WrongTerminal { .. })
        ));
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "tessera-journal-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::create_dir_all(&d);
        d
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile_dir();
        let path = dir.join("n.sqlite");
        drop(Journal::open(&path, 1).unwrap());
        let c = Connection::open(&path).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
        drop(c);
        assert!(matches!(
            Journal::open(&path, 1),
            Err(JournalError::NewerSchema { found: 99 })
        ));
        let _ = std::fs::remove_dir_all(dir);
    }
}
