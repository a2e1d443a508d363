//! The ledger's one error type.

use tessera_settlement::batch::BatchError;

/// Why a ledger operation failed. Each variant maps to the HTTP status the
/// back-office server answers with ([`LedgerError::http_status`]). A failed
/// operation has changed nothing, except for the refusal exceptions that
/// `docs/settlement.md` asks to be recorded (unknown or revoked terminal,
/// broken chain, batch conflict), each written in its own small transaction.
///
/// # What the caller does
/// * 4xx variants ([`LedgerError::Malformed`], [`LedgerError::BadMac`],
///   [`LedgerError::BrokenChain`], [`LedgerError::UnsupportedVersion`],
///   [`LedgerError::Io`]): the batch or request is refused; retrying the
///   same bytes will not help (a cut-off upload, [`LedgerError::Io`], may be
///   sent again whole).
/// * [`LedgerError::UnknownTerminal`], [`LedgerError::RevokedTerminal`]:
///   register the terminal (`office export-terminal`) or investigate the
///   revoked one; its batches are recorded as exceptions.
/// * [`LedgerError::BatchConflict`]: two different batches under one
///   number — a copied till directory or a forged batch; investigate.
/// * [`LedgerError::NewerSchema`]: upgrade the office's software.
/// * [`LedgerError::Storage`]: the database failed; nothing was committed;
///   fix the disk and retry, `office verify` checks the books.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// The input is not a well-formed batch (or a request argument is
    /// invalid). HTTP 400.
    #[error("malformed: {0}")]
    Malformed(String),
    /// The batch MAC does not verify under the terminal's batch key. HTTP 401.
    #[error("batch MAC does not verify")]
    BadMac,
    /// The terminal is not registered. HTTP 403.
    #[error("unknown terminal {0}")]
    UnknownTerminal(u32),
    /// The terminal has been revoked. HTTP 403.
    #[error("terminal {0} is revoked")]
    RevokedTerminal(u32),
    /// A batch of this number was already received with another chain head.
    /// HTTP 409.
    #[error("batch {batch_no} of terminal {terminal_id} conflicts with the one already received")]
    BatchConflict {
        /// The terminal.
        terminal_id: u32,
        /// The batch number.
        batch_no: u32,
    },
    /// The records do not chain (inside the batch, or from the terminal's
    /// last posted batch). HTTP 400.
    #[error("broken chain (terminal {terminal_id}, record {seq}): {why}")]
    BrokenChain {
        /// The terminal.
        terminal_id: u32,
        /// The record at fault.
        seq: u32,
        /// What is wrong.
        why: String,
    },
    /// The batch was written by a newer format version. HTTP 400.
    #[error("batch format version {0} is not supported")]
    UnsupportedVersion(u32),
    /// Reading the input failed (the upload was cut off). HTTP 400.
    #[error("reading the batch: {0}")]
    Io(String),
    /// An office operation the books refuse (an adjustment for a card the
    /// office never issued, a debit above the card's balance, a card
    /// replaced twice): nothing changed. HTTP 409.
    #[error("{0}")]
    Refused(String),
    /// No such customer. HTTP 404.
    #[error("unknown customer {0}")]
    UnknownCustomer(u64),
    /// No store of this id (`office store add` first). HTTP 404.
    #[error("unknown store {0}: add it first (`office store add`)")]
    UnknownStore(u32),
    /// A store of this id exists already. HTTP 409.
    #[error("store {0} exists already")]
    StoreExists(u32),
    /// The card was never issued by this office (16 hex digits). HTTP 404.
    #[error("card {0} was never issued by this office")]
    NotIssued(String),
    /// The ledger file was written by a newer version of Tessera. HTTP 500.
    #[error("ledger schema version {found} is newer than this program's ({expected}); upgrade Tessera")]
    NewerSchema {
        /// Version found in the file.
        found: i64,
        /// Version this code writes.
        expected: i64,
    },
    /// The database failed (I/O, locking, corruption) or holds data it
    /// cannot decode. HTTP 500.
    #[error("ledger storage: {0}")]
    Storage(String),
    /// The database server cannot be reached or lost the connection (a
    /// restart, a network cut): nothing was committed that the caller did
    /// not see acknowledged; retry. HTTP 503.
    #[error("the ledger's database is unavailable: {0}; retry shortly")]
    Unavailable(String),
    /// An operation this storage backend does not provide yet (named):
    /// nothing was done. HTTP 501.
    #[error("{0} is not available on this ledger backend")]
    Unsupported(String),
}

impl LedgerError {
    /// The HTTP status the back-office server answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::Malformed(_) | Self::BrokenChain { .. } | Self::UnsupportedVersion(_) | Self::Io(_) => 400,
            Self::BadMac => 401,
            Self::UnknownTerminal(_) | Self::RevokedTerminal(_) => 403,
            Self::UnknownCustomer(_) | Self::UnknownStore(_) | Self::NotIssued(_) => 404,
            Self::BatchConflict { .. } | Self::StoreExists(_) | Self::Refused(_) => 409,
            Self::NewerSchema { .. } | Self::Storage(_) => 500,
            Self::Unsupported(_) => 501,
            Self::Unavailable(_) => 503,
        }
    }
}

impl From<rusqlite::Error> for LedgerError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Storage(e.to_string())
    }
}

impl From<serde_json::Error> for LedgerError {
    fn from(e: serde_json::Error) -> Self {
        Self::Storage(format!("stored JSON: {e}"))
    }
}

/// A batch error of a known terminal (`0` before the header is read), as
/// a ledger error.
pub fn from_batch(terminal_id: u32, e: BatchError) -> LedgerError {
    match e {
        BatchError::Malformed(m) => LedgerError::Malformed(m),
        BatchError::UnsupportedVersion(v) => LedgerError::UnsupportedVersion(v),
        BatchError::BadMac => LedgerError::BadMac,
        BatchError::BrokenChain { seq, why } => LedgerError::BrokenChain { terminal_id, seq, why },
        BatchError::Io(e) => LedgerError::Io(e.to_string()),
        other => LedgerError::Malformed(other.to_string()),
    }
}
