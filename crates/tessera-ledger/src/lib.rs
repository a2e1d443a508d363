//! The central ledger of Tessera: settlement ingestion and verification,
//! the card books, the hotlist, the customer registry and the back-office
//! reports. See `docs/settlement.md` ("The ledger") for the contract.
//!
//! Storage is SQLite (bundled), one file, behind the [`LedgerStore`] trait.
//! A batch is ingested in one database transaction, streaming: records are
//! posted as they are read inside the open transaction, and the transaction
//! commits only after [`tessera_settlement::batch::BatchReader::finish`] has
//! checked the chain head and the MAC. Anything else — a bad MAC, a broken
//! chain, an input cut off halfway, a crash — rolls the whole batch back.

mod adjust;
pub mod approvals;
pub mod books;
pub mod db;
mod error;
mod ingest;
mod matching;
pub mod online;
mod ops;
pub mod points;
mod reports;
mod schema;
mod types;
pub mod warehouse;
mod wh_build;

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use tessera_crypto::cert::CertificateVerifier;
use tessera_crypto::kdf::{derive_key, labels};
use tessera_crypto::keys::IssuerKeys;
use tessera_crypto::Key;
use tessera_protocol::messages::CardId;
use tessera_rules::policy::Hotlist;

pub use db::{SqlRow, SqlValue, WarehouseDb};
pub use error::{from_batch, LedgerError};
pub use ingest::{record_json, VerifiedBatch};
pub use online::{OnlineAuthorization, OnlinePolicy, OnlineQuery, OnlineVerdict};
pub use ops::{AuditAnchor, CustomerQuery, HotlistChange, HotlistEntry, Store, TerminalInfo};
pub use schema::SCHEMA_VERSION;
pub use warehouse::{
    CampaignCard, CampaignOutcome, CategoryPeriodRow, CohortCell, CustomerFacts, HouseholdRow, Period, PointsPeriodRow,
    PurchaseRow, StorePeriodRow, Warehouse,
};

/// One item of a sync feed a terminal acknowledged writing
/// (`POST /v1/sync/ack`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SyncDelivery {
    /// A profile update: card and profile version.
    Profile([u8; 8], u16),
    /// An issuer UNBLOCK: card and issuer sequence.
    Unblock([u8; 8], u32),
    /// A KEY UPDATE: card and the key version it moves to.
    KeyUpdate([u8; 8], u8),
}

impl SyncDelivery {
    /// How it is stored (`sync_deliveries`): kind, card, reference.
    pub fn key(&self) -> (&'static str, [u8; 8], u32) {
        match *self {
            Self::Profile(c, v) => ("profile", c, u32::from(v)),
            Self::Unblock(c, s) => ("unblock", c, s),
            Self::KeyUpdate(c, v) => ("key_update", c, u32::from(v)),
        }
    }

    /// The delivery stored as `kind`, `card`, `reference` ([`Self::key`]).
    pub fn from_key(kind: &str, card: [u8; 8], reference: u32) -> Self {
        match kind {
            "profile" => Self::Profile(card, u16::try_from(reference).unwrap_or(u16::MAX)),
            "unblock" => Self::Unblock(card, reference),
            _ => Self::KeyUpdate(card, u8::try_from(reference).unwrap_or(u8::MAX)),
        }
    }
}

/// How long a hole in a card's counters may stay open before it becomes a
/// `gap` exception: 7 days. Every ingestion ages the gaps with it, and so
/// does the exceptions report.
pub const GAP_AGE_SECS: u32 = 7 * 86_400;

/// How far beyond a card's last posted counter a record may lie before it
/// is a `counter-jump` exception and the card is hotlisted at once: 100
/// transactions, far more than the offline limits let a genuine card make
/// between settlements (a clone whose counter jumped, or a card used
/// without settlement).
pub const COUNTER_JUMP_LIMIT: u32 = 100;

/// A profile update for a card: card id, profile version, signed blob.
pub type ProfileUpdate = ([u8; 8], u16, Vec<u8>);
pub use types::{AdjustmentKind, AdjustmentRow, CardPosting, NewAdjustment, Replacement, Soundness};
pub use types::{
    CardBook, Customer, CustomerRow, CustomersReport, Exception, ExceptionClass, Explanation, IngestOutcome,
    IngestReport, LiabilityReport, NewCustomer, ReconciliationReport, ReconciliationRow, SegmentLegendRow,
};

/// One customer and the card registered to them, for
/// [`Ledger::register_customers_and_cards`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRegistration {
    /// The customer's personal data.
    pub customer: NewCustomer,
    /// The customer's card.
    pub card_id: [u8; 8],
    /// The card's key version.
    pub key_version: u8,
}

/// Verifies settlement batches without a ledger: see [`Ledger::verifier`].
#[derive(Clone, Debug)]
pub struct BatchVerifier {
    keys: LedgerKeys,
}

impl BatchVerifier {
    /// Reads a whole batch into memory and verifies it: its header MAC
    /// under the terminal's batch key, its hash chain, and each card
    /// record's certificate. At most `max_records` records are read (the
    /// caller's memory bound: a few hundred bytes each).
    ///
    /// # Errors
    /// Any error of reading or verifying, and [`LedgerError::Malformed`]
    /// for a batch of more than `max_records` records. A batch that fails
    /// here is not refused yet: hand the same bytes to [`Ledger::ingest`]
    /// (or [`Upload::Stream`]), which refuses it and records the exception
    /// the refusal calls for.
    pub fn verify<R: BufRead>(&self, input: R, max_records: usize) -> Result<VerifiedBatch, LedgerError> {
        ingest::verify_ahead(&self.keys, input, max_records)
    }
}

/// One upload for [`Ledger::ingest_group`].
#[derive(Debug)]
pub enum Upload<R> {
    /// Read and verified ahead ([`BatchVerifier::verify`]).
    Verified(Box<VerifiedBatch>),
    /// Still to be read (streamed, as [`Ledger::ingest_send`]).
    Stream(R),
}

/// The keys the ledger needs: the certificate masters (by key version) to
/// verify card transactions, and the batch master to derive each
/// terminal's batch key. Never the authentication or personalization
/// masters.
#[derive(Clone)]
pub struct LedgerKeys {
    cert_masters: BTreeMap<u8, Key>,
    batch_master: Key,
}

impl LedgerKeys {
    /// The ledger's share of the issuer's key store.
    pub fn from_issuer(keys: &IssuerKeys) -> Self {
        Self {
            cert_masters: keys.cert_masters().into_iter().collect(),
            batch_master: keys.batch_master.clone(),
        }
    }

    /// Keys for several certificate key versions (after a key rollover).
    pub fn new(cert_masters: impl IntoIterator<Item = (u8, Key)>, batch_master: Key) -> Self {
        Self {
            cert_masters: cert_masters.into_iter().collect(),
            batch_master,
        }
    }

    /// The settlement batch key of a terminal:
    /// `KDF(batch master, "tessera terminal batch", terminal id)`, the same
    /// as [`IssuerKeys::terminal_batch_key`].
    pub fn batch_key(&self, terminal_id: u32) -> Key {
        derive_key(&self.batch_master, labels::TERMINAL_BATCH, &terminal_id.to_be_bytes())
    }

    /// A card's certificate key for a key version (`None` for a version
    /// the ledger has no master of).
    pub(crate) fn card_cert_key(&self, card_id: &CardId, key_version: u8) -> Option<Key> {
        let master = self.cert_masters.get(&key_version)?;
        Some(tessera_crypto::kdf::diversify(
            master,
            labels::CARD_CERT,
            card_id,
            key_version,
        ))
    }

    /// The key versions the ledger holds certificate masters of, oldest
    /// first.
    pub fn cert_versions(&self) -> impl DoubleEndedIterator<Item = u8> + '_ {
        self.cert_masters.keys().copied()
    }

    /// The newest key version the ledger holds a certificate master of.
    pub(crate) fn newest_cert_version(&self) -> Option<u8> {
        self.cert_masters.keys().next_back().copied()
    }

    /// A certificate verifier over the certificate masters.
    pub fn certificate_verifier(&self) -> CertificateVerifier {
        CertificateVerifier::new(self.cert_masters.clone())
    }
}

impl std::fmt::Debug for LedgerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerKeys")
            .field("key_versions", &self.cert_masters.keys())
            .finish_non_exhaustive()
    }
}

/// The ledger's storage operations, as the back-office server uses them.
/// [`Ledger`] (SQLite) implements it; every method has the meaning of the
/// inherent method of the same name.
pub trait LedgerStore: Send {
    /// See [`Ledger::register_terminal`].
    ///
    /// # Errors
    /// As the inherent method.
    fn register_terminal(&mut self, terminal_id: u32, now: u32) -> Result<(), LedgerError>;
    /// See [`Ledger::revoke_terminal`].
    ///
    /// # Errors
    /// As the inherent method.
    fn revoke_terminal(&mut self, terminal_id: u32, now: u32) -> Result<(), LedgerError>;
    /// See [`Ledger::ingest`] (object-safe form).
    ///
    /// # Errors
    /// As the inherent method.
    fn ingest_dyn(&mut self, input: &mut dyn BufRead, now: u32) -> Result<IngestOutcome, LedgerError>;
    /// See [`Ledger::batch_key`].
    fn batch_key(&self, terminal_id: u32) -> Key;
    /// See [`Ledger::terminal_active`].
    ///
    /// # Errors
    /// As the inherent method.
    fn terminal_active(&self, terminal_id: u32) -> Result<Option<bool>, LedgerError>;
    /// See [`Ledger::hotlist`].
    ///
    /// # Errors
    /// As the inherent method.
    fn hotlist(&self) -> Result<Hotlist, LedgerError>;
    /// See [`Ledger::settled_counters`].
    ///
    /// # Errors
    /// As the inherent method.
    fn settled_counters(&self) -> Result<Vec<([u8; 8], u32)>, LedgerError>;
    /// See [`Ledger::profile_updates`].
    ///
    /// # Errors
    /// As the inherent method.
    fn profile_updates(&self) -> Result<Vec<ProfileUpdate>, LedgerError>;
    /// See [`Ledger::mark_profile_delivered`].
    ///
    /// # Errors
    /// As the inherent method.
    fn mark_profile_delivered(&mut self, card_id: [u8; 8], version: u16) -> Result<(), LedgerError>;
    /// See [`Ledger::card`].
    ///
    /// # Errors
    /// As the inherent method.
    fn card(&self, card_id: [u8; 8]) -> Result<Option<CardBook>, LedgerError>;
    /// See [`Ledger::exceptions`].
    ///
    /// # Errors
    /// As the inherent method.
    fn exceptions(&self) -> Result<Vec<Exception>, LedgerError>;
    /// See [`Ledger::unblocks`].
    ///
    /// # Errors
    /// As the inherent method.
    fn unblocks(&self) -> Result<Vec<([u8; 8], u32)>, LedgerError>;
    /// See [`Ledger::pending_adjustments`].
    ///
    /// # Errors
    /// As the inherent method.
    fn pending_adjustments(&self) -> Result<Vec<AdjustmentRow>, LedgerError>;
    /// See [`Ledger::card_key_versions`].
    ///
    /// # Errors
    /// As the inherent method.
    fn card_key_versions(&self) -> Result<std::collections::BTreeMap<[u8; 8], u8>, LedgerError>;
    /// See [`Ledger::cards_below_key_version`].
    ///
    /// # Errors
    /// As the inherent method.
    fn cards_below_key_version(&self, key_version: u8) -> Result<Vec<([u8; 8], u8)>, LedgerError>;
    /// See [`Ledger::sync_delivered`].
    ///
    /// # Errors
    /// As the inherent method.
    fn sync_delivered(&self, terminal_id: u32) -> Result<BTreeSet<SyncDelivery>, LedgerError>;
    /// See [`Ledger::record_sync_deliveries`].
    ///
    /// # Errors
    /// As the inherent method.
    fn record_sync_deliveries(
        &mut self,
        terminal_id: u32,
        deliveries: &[SyncDelivery],
        now: u32,
    ) -> Result<usize, LedgerError>;
    /// See [`Ledger::authorize_online`].
    ///
    /// # Errors
    /// As the inherent method; [`LedgerError::Unsupported`] from a backend
    /// that does not decide online requests.
    fn authorize_online(
        &mut self,
        query: &OnlineQuery,
        policy: &OnlinePolicy,
        now: u32,
    ) -> Result<OnlineVerdict, LedgerError>;
    /// Claims a signed request's nonce (`key`: its namespace and nonce) for
    /// `terminal_id` in the books every server of them shares: `false`
    /// when a server answered it already. Claims older than `forget_before`
    /// (Unix seconds; requests that old are refused by their time) may be
    /// dropped. Books one server holds alone (the SQLite ledger, locked by
    /// its server) claim nothing: that server's memory is the record.
    ///
    /// # Errors
    /// A storage error (the request is then not answered).
    fn claim_nonce(&mut self, terminal_id: u32, key: &[u8], now: u32, forget_before: u32) -> Result<bool, LedgerError>;
    /// See [`Ledger::age_gaps`]: what waited longer than `older_than_secs`
    /// at `now` raised as exceptions, once; returns how many.
    ///
    /// # Errors
    /// A storage error.
    fn age_gaps(&mut self, now: u32, older_than_secs: u32) -> Result<usize, LedgerError>;
}

/// The SQLite ledger.
pub struct Ledger {
    conn: Connection,
    keys: LedgerKeys,
    /// Whether posting maintains the warehouse ([`Ledger::set_warehouse`]).
    warehouse: bool,
    /// The warehouse's zone ([`Ledger::set_warehouse_zone`]).
    wh_zone: tessera_rules::display::Zone,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("path", &self.conn.path())
            .finish_non_exhaustive()
    }
}

/// Reads an 8-byte card id from a BLOB column.
pub(crate) fn card_of(v: Vec<u8>) -> Result<CardId, LedgerError> {
    v.try_into()
        .map_err(|_| LedgerError::Storage("stored card id is not 8 bytes".into()))
}

/// Raises an exception on `conn` (inside the caller's transaction, if any).
#[allow(clippy::too_many_arguments)]
pub(crate) fn raise(
    conn: &Connection,
    class: ExceptionClass,
    card_id: Option<CardId>,
    counter: Option<u32>,
    terminal_id: Option<u32>,
    batch_no: Option<u32>,
    evidence: serde_json::Value,
    at: u32,
) -> Result<Exception, LedgerError> {
    conn.prepare_cached(
        "INSERT INTO exceptions (class, card_id, counter, terminal_id, batch_no, evidence, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        class.as_str(),
        card_id.map(|c| c.to_vec()),
        counter,
        terminal_id,
        batch_no,
        evidence.to_string(),
        at
    ])?;
    let id = u64::try_from(conn.last_insert_rowid()).map_err(|_| LedgerError::Storage("exception id".into()))?;
    Ok(Exception {
        id,
        class,
        card_id,
        counter,
        terminal_id,
        batch_no,
        evidence,
        at,
    })
}

/// Puts a card on the hotlist and bumps the hotlist version if it was not
/// there. Returns whether it changed anything.
pub(crate) fn hotlist_insert(conn: &Connection, card_id: &CardId, reason: &str, now: u32) -> Result<bool, LedgerError> {
    books::hotlist_insert_in(conn, card_id, reason, now)
}

use books::OfficeBooks;
pub(crate) use books::{finish_card_links, insert_customer, link_card};

impl Ledger {
    /// Opens (creating if needed) the ledger at `path`: WAL,
    /// `synchronous=FULL`, migrations in one transaction.
    ///
    /// # Errors
    /// [`LedgerError::NewerSchema`] for a file of a newer Tessera, or
    /// [`LedgerError::Storage`] for an unreadable file.
    pub fn open(path: &Path, keys: LedgerKeys) -> Result<Ledger, LedgerError> {
        let mut conn = Connection::open(path)?;
        // The books and the customer registry: owner-only (SQLite gives
        // the WAL the database file's permissions).
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| LedgerError::Storage(format!("the ledger {}: {e}", path.display())))?;
        }
        schema::prepare(&mut conn)?;
        // The policy shipped with Tessera is the office's own (tills
        // without a policy file decide under it).
        points::register(&conn, "policies", tessera_rules::policy::DEFAULT_POLICY_TOML, 0)?;
        let wh_zone = warehouse::stored_zone(&conn)?;
        Ok(Ledger {
            conn,
            keys,
            warehouse: true,
            wh_zone,
        })
    }

    /// Opens a ledger that must already exist — what an office does at
    /// every start: a missing or empty file, one that is not a Tessera
    /// ledger, or one that fails SQLite's integrity check is refused, never
    /// recreated empty (only the key ceremony creates a ledger, with
    /// [`Ledger::open`]).
    ///
    /// # Errors
    /// [`LedgerError::Storage`] naming what is wrong; as [`Ledger::open`].
    pub fn open_existing(path: &Path, keys: LedgerKeys) -> Result<Ledger, LedgerError> {
        let len = std::fs::metadata(path)
            .map_err(|e| LedgerError::Storage(format!("the ledger {}: {e}", path.display())))?
            .len();
        if len == 0 {
            return Err(LedgerError::Storage(format!(
                "the ledger {} is empty: restore it from a backup (it is never recreated)",
                path.display()
            )));
        }
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| LedgerError::Storage(format!("the ledger {} is not readable: {e}", path.display())))?;
        let has_books: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'card_transactions')",
                [],
                |r| r.get(0),
            )
            .map_err(|e| LedgerError::Storage(format!("the ledger {} is not readable: {e}", path.display())))?;
        if version == 0 || !has_books {
            return Err(LedgerError::Storage(format!(
                "{} is not a Tessera ledger",
                path.display()
            )));
        }
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| LedgerError::Storage(format!("the ledger {} is corrupt: {e}", path.display())))?;
        if check != "ok" {
            let what: Vec<&str> = check.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
            return Err(LedgerError::Storage(format!(
                "the ledger {} is corrupt ({}): restore it from a backup",
                path.display(),
                what.join("; ")
            )));
        }
        drop(conn);
        Ledger::open(path, keys)
    }

    /// The settlement batch key of a terminal (to MAC sync answers).
    pub fn batch_key(&self, terminal_id: u32) -> Key {
        self.keys.batch_key(terminal_id)
    }

    /// Registers a terminal. Idempotent: registering a known terminal
    /// changes nothing (in particular it does not lift a revocation).
    ///
    /// # Errors
    /// A storage error.
    pub fn register_terminal(&mut self, terminal_id: u32, now: u32) -> Result<(), LedgerError> {
        self.conn.execute(
            "INSERT OR IGNORE INTO terminals (terminal_id, registered_at, last_head) VALUES (?1, ?2, ?3)",
            params![terminal_id, now, vec![0u8; 32]],
        )?;
        Ok(())
    }

    /// Revokes a terminal: its batches are refused from now on. Idempotent
    /// (the first revocation time stays).
    ///
    /// # Errors
    /// [`LedgerError::UnknownTerminal`], or a storage error.
    pub fn revoke_terminal(&mut self, terminal_id: u32, now: u32) -> Result<(), LedgerError> {
        let tx = self.conn.transaction()?;
        let n = tx.execute(
            "UPDATE terminals SET revoked_at = COALESCE(revoked_at, ?1) WHERE terminal_id = ?2",
            params![now, terminal_id],
        )?;
        if n == 0 {
            return Err(LedgerError::UnknownTerminal(terminal_id));
        }
        // Records awaiting its decisions will never be matched.
        matching::resolve(&tx, Some(terminal_id), None, now)?;
        tx.commit()?;
        Ok(())
    }

    /// Whether a terminal is registered and active: `None` if unknown,
    /// `Some(false)` if revoked.
    ///
    /// # Errors
    /// A storage error.
    pub fn terminal_active(&self, terminal_id: u32) -> Result<Option<bool>, LedgerError> {
        Ok(self
            .conn
            .query_row(
                "SELECT revoked_at IS NULL FROM terminals WHERE terminal_id = ?1",
                [terminal_id],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Ingests one settlement batch (see the crate documentation and
    /// `docs/settlement.md`): all of it or nothing.
    ///
    /// # Errors
    /// [`LedgerError::Malformed`], [`LedgerError::UnsupportedVersion`],
    /// [`LedgerError::Io`] (400); [`LedgerError::BrokenChain`] (400, with a
    /// `broken-chain` exception); [`LedgerError::BadMac`] (401);
    /// [`LedgerError::UnknownTerminal`], [`LedgerError::RevokedTerminal`]
    /// (403, with an exception); [`LedgerError::BatchConflict`] (409, with
    /// an exception); [`LedgerError::Storage`] (500). On every error the
    /// batch left no trace but the exception named.
    pub fn ingest<R: BufRead>(&mut self, input: R, now: u32) -> Result<IngestOutcome, LedgerError> {
        self.note_unmaintained()?;
        let out = ingest::ingest(
            &mut self.conn,
            &self.keys,
            self.warehouse.then_some(&self.wh_zone),
            input,
            now,
        )?;
        self.age_gaps(now, GAP_AGE_SECS)?;
        Ok(out)
    }

    /// As [`Ledger::ingest`], with the same checks and the same outcome,
    /// but the input is read on a second thread (the lines, the JSON, the
    /// hash chain, the MAC and the records' certificates) while this one
    /// posts: faster on more than one core. At most a few thousand records
    /// are in flight between the threads, whatever the batch size.
    ///
    /// # Errors
    /// As [`Ledger::ingest`].
    pub fn ingest_send<R: BufRead + Send>(&mut self, input: R, now: u32) -> Result<IngestOutcome, LedgerError> {
        self.note_unmaintained()?;
        let out = ingest::ingest_send(
            &mut self.conn,
            &self.keys,
            self.warehouse.then_some(&self.wh_zone),
            input,
            now,
        )?;
        self.age_gaps(now, GAP_AGE_SECS)?;
        Ok(out)
    }

    /// A verifier of batches that needs no ledger (and no lock on one):
    /// many uploads can be verified at once on as many threads, then posted
    /// one after another with [`Ledger::post_verified`] or
    /// [`Ledger::ingest_group`].
    pub fn verifier(&self) -> BatchVerifier {
        BatchVerifier {
            keys: self.keys.clone(),
        }
    }

    /// Posts a batch that [`BatchVerifier::verify`] read and verified: the
    /// same steps, checks and outcome as [`Ledger::ingest`] of the same
    /// bytes, without reading, hashing or checking MACs again.
    ///
    /// # Errors
    /// As [`Ledger::ingest`].
    pub fn post_verified(&mut self, batch: VerifiedBatch, now: u32) -> Result<IngestOutcome, LedgerError> {
        self.note_unmaintained()?;
        let out = ingest::post_verified(
            &mut self.conn,
            &self.keys,
            self.warehouse.then_some(&self.wh_zone),
            batch,
            now,
        )?;
        self.age_gaps(now, GAP_AGE_SECS)?;
        Ok(out)
    }

    /// Ingests several batches (of one terminal or many) with one commit
    /// to disk: each batch is still all or nothing on its own (a savepoint
    /// each: a refused batch changes nothing for the others, and records
    /// its exception as [`Ledger::ingest`] would), and the outcomes come
    /// back in the order of `uploads`. What a server does when uploads
    /// arrive faster than one disk flush each (group commit).
    ///
    /// If the final commit fails, every outcome is that storage error:
    /// nothing of the group was written, and each till sends again.
    pub fn ingest_group<R: BufRead + Send>(
        &mut self,
        uploads: Vec<Upload<R>>,
        now: u32,
    ) -> Vec<Result<IngestOutcome, LedgerError>> {
        let n = uploads.len();
        let failed = |e: &LedgerError| (0..n).map(|_| Err(LedgerError::Storage(e.to_string()))).collect();
        if let Err(e) = self.note_unmaintained() {
            return failed(&e);
        }
        if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            return failed(&e.into());
        }
        let wh = self.warehouse.then_some(&self.wh_zone);
        let outcomes: Vec<Result<IngestOutcome, LedgerError>> = uploads
            .into_iter()
            .map(|u| match u {
                Upload::Verified(b) => ingest::post_verified(&mut self.conn, &self.keys, wh, *b, now),
                Upload::Stream(r) => ingest::ingest_send(&mut self.conn, &self.keys, wh, r, now),
            })
            .collect();
        let finished = reports::age_gaps(&self.conn, now, GAP_AGE_SECS)
            .and_then(|_| self.conn.execute_batch("COMMIT").map_err(LedgerError::from));
        if let Err(e) = finished {
            let _ = self.conn.execute_batch("ROLLBACK");
            return failed(&e);
        }
        outcomes
    }

    /// Registers a customer's personal data; returns the customer id.
    ///
    /// # Errors
    /// [`LedgerError::Malformed`] for an empty name, or a storage error.
    pub fn register_customer(&mut self, c: &NewCustomer) -> Result<u64, LedgerError> {
        insert_customer(&self.conn, c)
    }

    /// Registers many customers, each with a card, in one transaction:
    /// the same checks, the same rows and the same warehouse as
    /// [`Ledger::register_customer`] then [`Ledger::register_card`] (to the
    /// new customer, `now` as its registration time) for each entry in
    /// order, with one commit and one warehouse maintenance instead of one
    /// per entry. All or nothing: if any entry is refused, nothing of the
    /// call is written. Returns the new customer ids, in the order of
    /// `entries`.
    ///
    /// A card listed twice, or already registered, moves to the later
    /// customer and keeps its books, as [`Ledger::register_card`] does.
    ///
    /// # Errors
    /// [`LedgerError::Malformed`] naming the first refused entry (counted
    /// from 1) and why (an empty name), or a storage error.
    pub fn register_customers_and_cards(
        &mut self,
        entries: &[NewRegistration],
        now: u32,
    ) -> Result<Vec<u64>, LedgerError> {
        let zone = self.warehouse.then_some(&self.wh_zone);
        let tx = self.conn.transaction()?;
        let mut ids = Vec::with_capacity(entries.len());
        let mut moved = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let at = |err: LedgerError| match err {
                LedgerError::Malformed(why) => {
                    LedgerError::Malformed(format!("registration {} of {}: {why}", i + 1, entries.len()))
                }
                other => other,
            };
            let id = insert_customer(&tx, &e.customer).map_err(at)?;
            if let Some(before) = link_card(&tx, &e.card_id, id, e.key_version, now, zone.is_some()).map_err(at)? {
                moved.push(before);
            }
            ids.push(id);
        }
        finish_card_links(&tx, zone, moved)?;
        tx.commit()?;
        Ok(ids)
    }

    /// Registers a card to a customer with its key version (or moves it to
    /// another customer, or changes its key version). A card already known
    /// from settlement keeps its books.
    ///
    /// # Errors
    /// [`LedgerError::UnknownCustomer`], or a storage error.
    pub fn register_card(
        &mut self,
        card_id: [u8; 8],
        customer_id: u64,
        key_version: u8,
        now: u32,
    ) -> Result<(), LedgerError> {
        let zone = self.warehouse.then_some(&self.wh_zone);
        let tx = self.conn.transaction()?;
        let moved = link_card(&tx, &card_id, customer_id, key_version, now, zone.is_some())?;
        finish_card_links(&tx, zone, moved.into_iter().collect())?;
        tx.commit()?;
        Ok(())
    }

    /// Erases a customer's personal data: the customer row and the profile
    /// updates queued for their cards, delivered or not (their blobs hold
    /// the profile). The cards, their transactions and every report total
    /// stay; the cards become anonymous. The freed pages are overwritten
    /// (`secure_delete`) and the write-ahead log is checkpointed and
    /// truncated, so the data is gone from the file, not only from the
    /// tables (backups made before are the office's to handle; while
    /// another connection reads — a running `office serve` — SQLite
    /// truncates the log at a later checkpoint instead).
    ///
    /// # Errors
    /// [`LedgerError::UnknownCustomer`], or a storage error.
    pub fn erase_customer(&mut self, customer_id: u64) -> Result<(), LedgerError> {
        OfficeBooks::erase_customer_rows(self, customer_id)?;
        self.scrub_erased()
    }

    /// The pending profile updates: per card, the latest version queued,
    /// unless it was delivered.
    ///
    /// # Errors
    /// A storage error.
    pub fn profile_updates(&self) -> Result<Vec<ProfileUpdate>, LedgerError> {
        let mut stmt = self.conn.prepare(
            "SELECT p.card_id, p.version, p.blob FROM profile_updates p
             WHERE p.delivered = 0 AND p.version = (SELECT MAX(version) FROM profile_updates q WHERE q.card_id = p.card_id)
             ORDER BY p.card_id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, u16>(1)?, r.get::<_, Vec<u8>>(2)?))
        })?;
        rows.map(|r| {
            let (c, v, b) = r?;
            Ok((card_of(c)?, v, b))
        })
        .collect()
    }

    /// The newest queued UNBLOCK of every card that has not transacted
    /// since it was queued: `(card, issuer sequence)`. A card transaction
    /// made after the request shows the card authenticates again, so the
    /// unblock is no longer served; one served again is harmless (the card
    /// refuses a sequence it has seen).
    ///
    /// # Errors
    /// A storage error.
    pub fn unblocks(&self) -> Result<Vec<([u8; 8], u32)>, LedgerError> {
        let mut stmt = self.conn.prepare(
            "SELECT u.card_id, MAX(u.seq) FROM unblocks u
                 WHERE NOT EXISTS (SELECT 1 FROM card_transactions t
                                   WHERE t.card_id = u.card_id AND t.card_time > u.queued_at)
                 GROUP BY u.card_id ORDER BY u.card_id",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, u32>(1)?)))?;
        rows.map(|r| {
            let (c, n) = r?;
            Ok((card_of(c)?, n))
        })
        .collect()
    }

    /// The key version of every card the ledger knows (registered at issue,
    /// moved forward when a certificate of a newer version verifies).
    ///
    /// # Errors
    /// A storage error.
    pub fn card_key_versions(&self) -> Result<std::collections::BTreeMap<[u8; 8], u8>, LedgerError> {
        let mut stmt = self.conn.prepare("SELECT card_id, key_version FROM cards")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, u8>(1)?)))?;
        rows.map(|r| {
            let (c, v) = r?;
            Ok((card_of(c)?, v))
        })
        .collect()
    }

    /// Issued cards still below `key_version`: they get a KEY UPDATE
    /// through sync until a certificate of the new version shows they moved.
    ///
    /// # Errors
    /// A storage error.
    pub fn cards_below_key_version(&self, key_version: u8) -> Result<Vec<([u8; 8], u8)>, LedgerError> {
        let mut stmt = self.conn.prepare(
            "SELECT card_id, key_version FROM cards
             WHERE registered_at IS NOT NULL AND key_version < ?1 ORDER BY card_id",
        )?;
        let rows = stmt.query_map([key_version], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, u8>(1)?)))?;
        rows.map(|r| {
            let (c, v) = r?;
            Ok((card_of(c)?, v))
        })
        .collect()
    }

    /// Records what a terminal acknowledged writing from its sync feed
    /// (idempotent: a delivery recorded twice is recorded once) and returns
    /// how many deliveries were new. Those items are no longer served to
    /// that terminal ([`Ledger::sync_delivered`]); other terminals still
    /// get them.
    ///
    /// # Errors
    /// A storage error (nothing is recorded then).
    pub fn record_sync_deliveries(
        &mut self,
        terminal_id: u32,
        deliveries: &[SyncDelivery],
        now: u32,
    ) -> Result<usize, LedgerError> {
        let tx = self.conn.transaction()?;
        let mut new = 0;
        {
            let mut stmt = tx.prepare(
                "INSERT OR IGNORE INTO sync_deliveries (terminal_id, kind, card_id, ref, delivered_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for d in deliveries {
                let (kind, card, r) = d.key();
                new += stmt.execute(params![terminal_id, kind, &card[..], r, now])?;
            }
        }
        tx.commit()?;
        Ok(new)
    }

    /// Everything `terminal_id` has acknowledged writing from its feed.
    ///
    /// # Errors
    /// A storage error.
    pub fn sync_delivered(&self, terminal_id: u32) -> Result<std::collections::BTreeSet<SyncDelivery>, LedgerError> {
        let mut stmt = self
            .conn
            .prepare("SELECT kind, card_id, ref FROM sync_deliveries WHERE terminal_id = ?1")?;
        let rows = stmt.query_map([terminal_id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?, r.get::<_, u32>(2)?))
        })?;
        let mut out = std::collections::BTreeSet::new();
        for row in rows {
            let (kind, card, r) = row?;
            out.insert(SyncDelivery::from_key(&kind, card_of(card)?, r));
        }
        Ok(out)
    }

    /// Marks a card's profile update delivered (and every older version).
    ///
    /// # Errors
    /// A storage error.
    pub fn mark_profile_delivered(&mut self, card_id: [u8; 8], version: u16) -> Result<(), LedgerError> {
        self.conn.execute(
            "UPDATE profile_updates SET delivered = 1 WHERE card_id = ?1 AND version <= ?2",
            params![&card_id[..], version],
        )?;
        Ok(())
    }

    /// Puts a card on the hotlist (the version goes up if it was not there).
    ///
    /// # Errors
    /// A storage error.
    pub fn hotlist_card(&mut self, card_id: [u8; 8], reason: &str, now: u32) -> Result<(), LedgerError> {
        let tx = self.conn.transaction()?;
        hotlist_insert(&tx, &card_id, reason, now)?;
        tx.commit()?;
        Ok(())
    }

    /// The hotlist to publish; its version is a counter bumped on every
    /// change.
    ///
    /// # Errors
    /// A storage error.
    pub fn hotlist(&self) -> Result<Hotlist, LedgerError> {
        let version: u32 = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'hotlist_version'", [], |r| r.get(0))?;
        let mut stmt = self.conn.prepare("SELECT card_id FROM hotlist")?;
        let cards = stmt
            .query_map([], |r| r.get::<_, Vec<u8>>(0))?
            .map(|c| card_of(c?))
            .collect::<Result<BTreeSet<_>, _>>()?;
        Ok(Hotlist { version, cards })
    }

    /// Per card, the highest counter with every counter `1..=n` posted
    /// (cards with none posted are left out): what terminals acknowledge to
    /// cards.
    ///
    /// # Errors
    /// A storage error.
    pub fn settled_counters(&self) -> Result<Vec<([u8; 8], u32)>, LedgerError> {
        let mut stmt = self
            .conn
            .prepare("SELECT card_id, last_counter FROM cards WHERE last_counter > 0 ORDER BY card_id")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, u32>(1)?)))?;
        rows.map(|r| {
            let (c, n) = r?;
            Ok((card_of(c)?, n))
        })
        .collect()
    }

    /// The books of one card, `None` if the ledger never heard of it.
    ///
    /// # Errors
    /// A storage error.
    pub fn card(&self, card_id: [u8; 8]) -> Result<Option<CardBook>, LedgerError> {
        Ok(self
            .conn
            .query_row(
                "SELECT customer_id, key_version, registered_at IS NOT NULL, shadow_balance, card_balance, discrepancy,
                        flagged, last_counter, EXISTS (SELECT 1 FROM hotlist h WHERE h.card_id = c.card_id), pending
                 FROM cards c WHERE card_id = ?1",
                [&card_id[..]],
                |r| {
                    Ok(CardBook {
                        card_id,
                        customer_id: r.get(0)?,
                        key_version: r.get(1)?,
                        registered: r.get(2)?,
                        shadow_balance: r.get(3)?,
                        card_balance: r.get(4)?,
                        discrepancy: r.get(5)?,
                        flagged: r.get(6)?,
                        last_counter: r.get(7)?,
                        hotlisted: r.get(8)?,
                        pending: r.get(9)?,
                    })
                },
            )
            .optional()?)
    }

    /// Every exception, oldest first.
    ///
    /// # Errors
    /// A storage error.
    pub fn exceptions(&self) -> Result<Vec<Exception>, LedgerError> {
        reports::exceptions(&self.conn)
    }

    /// Calls `f` with every exception, oldest first, one at a time: a
    /// report of a million exceptions streams in flat memory. Stops at the
    /// first error `f` returns.
    ///
    /// # Errors
    /// A storage error, or `f`'s.
    pub fn each_exception(&self, f: impl FnMut(Exception) -> Result<(), LedgerError>) -> Result<(), LedgerError> {
        reports::each_exception(&self.conn, f)
    }

    /// Reconciliation per terminal and settlement day — the local day in
    /// `tz` the batches were received — optionally for one day and/or one
    /// terminal.
    ///
    /// # Errors
    /// [`LedgerError::UnknownTerminal`] for a terminal the ledger never
    /// registered (a typo, not an empty report); a storage error.
    pub fn reconciliation(
        &self,
        date: Option<tessera_protocol::profile::Date>,
        terminal: Option<u32>,
        tz: &tessera_rules::display::Zone,
    ) -> Result<ReconciliationReport, LedgerError> {
        reports::reconciliation(&self.conn, date, terminal, tz)
    }

    /// Points outstanding and their money value at `minor_units_per_point`.
    ///
    /// # Errors
    /// A storage error.
    pub fn liability(&self, minor_units_per_point: u64) -> Result<LiabilityReport, LedgerError> {
        reports::liability(&self.conn, minor_units_per_point)
    }

    /// Checks the whole ledger: SQLite's full `integrity_check` and the
    /// books against the postings — per card, the shadow balance is the
    /// sum of its posted records, the last counter its highest posted one,
    /// the certified balance its last record's, the held count its pending
    /// records, and posted balances chain; per terminal, the last batch is
    /// its highest posted one. Returns one line per problem (empty: sound).
    ///
    /// # Errors
    /// A storage error.
    pub fn verify(&self) -> Result<Vec<String>, LedgerError> {
        reports::verify(&self.conn, true)
    }

    /// [`Ledger::verify`] without the storage scan: the books against the
    /// postings (what `office serve` checks before it takes a request).
    ///
    /// # Errors
    /// A storage error.
    pub fn self_check(&self) -> Result<Vec<String>, LedgerError> {
        reports::verify(&self.conn, false)
    }

    /// Whether every point is explained, with what is not
    /// ([`Explanation`]).
    ///
    /// # Errors
    /// A storage error.
    pub fn explanation(&self) -> Result<Explanation, LedgerError> {
        reports::explanation(&self.conn)
    }

    /// Raises a `gap` exception for every card whose oldest held record
    /// has waited more than `older_than_secs` for a missing counter, once
    /// per missing counter, and an `orphan` exception for every card record
    /// that has waited as long for its origin till's decision. Returns the
    /// number raised.
    ///
    /// # Errors
    /// A storage error.
    pub fn age_gaps(&mut self, now: u32, older_than_secs: u32) -> Result<usize, LedgerError> {
        let tx = self.conn.transaction()?;
        let n = reports::age_gaps(&tx, now, older_than_secs)?;
        tx.commit()?;
        Ok(n)
    }
}

impl LedgerStore for Ledger {
    fn register_terminal(&mut self, terminal_id: u32, now: u32) -> Result<(), LedgerError> {
        Ledger::register_terminal(self, terminal_id, now)
    }
    fn revoke_terminal(&mut self, terminal_id: u32, now: u32) -> Result<(), LedgerError> {
        Ledger::revoke_terminal(self, terminal_id, now)
    }
    fn ingest_dyn(&mut self, input: &mut dyn BufRead, now: u32) -> Result<IngestOutcome, LedgerError> {
        Ledger::ingest(self, input, now)
    }
    fn batch_key(&self, terminal_id: u32) -> Key {
        Ledger::batch_key(self, terminal_id)
    }
    fn terminal_active(&self, terminal_id: u32) -> Result<Option<bool>, LedgerError> {
        Ledger::terminal_active(self, terminal_id)
    }
    fn hotlist(&self) -> Result<Hotlist, LedgerError> {
        Ledger::hotlist(self)
    }
    fn settled_counters(&self) -> Result<Vec<([u8; 8], u32)>, LedgerError> {
        Ledger::settled_counters(self)
    }
    fn profile_updates(&self) -> Result<Vec<ProfileUpdate>, LedgerError> {
        Ledger::profile_updates(self)
    }
    fn mark_profile_delivered(&mut self, card_id: [u8; 8], version: u16) -> Result<(), LedgerError> {
        Ledger::mark_profile_delivered(self, card_id, version)
    }
    fn card(&self, card_id: [u8; 8]) -> Result<Option<CardBook>, LedgerError> {
        Ledger::card(self, card_id)
    }
    fn exceptions(&self) -> Result<Vec<Exception>, LedgerError> {
        Ledger::exceptions(self)
    }
    fn unblocks(&self) -> Result<Vec<([u8; 8], u32)>, LedgerError> {
        Ledger::unblocks(self)
    }
    fn pending_adjustments(&self) -> Result<Vec<AdjustmentRow>, LedgerError> {
        Ledger::pending_adjustments(self)
    }
    fn card_key_versions(&self) -> Result<std::collections::BTreeMap<[u8; 8], u8>, LedgerError> {
        Ledger::card_key_versions(self)
    }
    fn cards_below_key_version(&self, key_version: u8) -> Result<Vec<([u8; 8], u8)>, LedgerError> {
        Ledger::cards_below_key_version(self, key_version)
    }
    fn sync_delivered(&self, terminal_id: u32) -> Result<BTreeSet<SyncDelivery>, LedgerError> {
        Ledger::sync_delivered(self, terminal_id)
    }
    fn record_sync_deliveries(
        &mut self,
        terminal_id: u32,
        deliveries: &[SyncDelivery],
        now: u32,
    ) -> Result<usize, LedgerError> {
        Ledger::record_sync_deliveries(self, terminal_id, deliveries, now)
    }
    fn age_gaps(&mut self, now: u32, older_than_secs: u32) -> Result<usize, LedgerError> {
        Ledger::age_gaps(self, now, older_than_secs)
    }
    fn claim_nonce(&mut self, _terminal_id: u32, _key: &[u8], _now: u32, _forget: u32) -> Result<bool, LedgerError> {
        // One server holds this file (its lock): its own memory of the
        // nonces is the whole record.
        Ok(true)
    }
    fn authorize_online(
        &mut self,
        query: &OnlineQuery,
        policy: &OnlinePolicy,
        now: u32,
    ) -> Result<OnlineVerdict, LedgerError> {
        Ledger::authorize_online(self, query, policy, now)
    }
}
