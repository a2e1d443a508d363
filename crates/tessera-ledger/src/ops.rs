//! The office's daily operations on the ledger: stores and the terminals
//! in them, the hotlist as a list of entries the office adds to and removes
//! from, customer search, and the anchor of the office's audit log.

use rusqlite::{params, OptionalExtension, TransactionBehavior};
use serde::Serialize;

use crate::books::OfficeBooks;
use crate::types::card_hex;
use crate::{Ledger, LedgerError};

/// A store: a named place where terminals stand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Store {
    /// The store's number (the one tills record as their store).
    pub store_id: u32,
    /// Its name.
    pub name: String,
    /// Its city (may be empty).
    pub city: String,
    /// When it was added (Unix seconds).
    pub created_at: u32,
    /// How many terminals are registered to it.
    pub terminals: u32,
}

/// A registered terminal, as `office terminal list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TerminalInfo {
    /// The terminal.
    pub terminal_id: u32,
    /// Its store, if it was assigned one.
    pub store_id: Option<u32>,
    /// The store's name.
    pub store_name: Option<String>,
    /// When it was registered (Unix seconds).
    pub registered_at: u32,
    /// When it was revoked, if it was.
    pub revoked_at: Option<u32>,
    /// Why it was revoked.
    pub revoke_reason: Option<String>,
    /// The number of its last batch received (0: none).
    pub last_batch_no: u32,
    /// When its last batch was received.
    pub last_batch_at: Option<u32>,
}

/// One card on the hotlist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HotlistEntry {
    /// The card, 16 upper-case hex digits.
    #[serde(serialize_with = "ser_card")]
    pub card_id: [u8; 8],
    /// Why it is there (the office's reason, or the ledger's exception).
    pub reason: String,
    /// Since when (Unix seconds).
    pub at: u32,
}

fn ser_card<S: serde::Serializer>(v: &[u8; 8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&card_hex(v))
}

/// What a hotlist change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HotlistChange {
    /// The hotlist version after the call (it goes up by one with every
    /// change, and only then).
    pub version: u32,
    /// Whether anything changed (false: the card was already on the list,
    /// or, for a removal, was not on it).
    pub changed: bool,
}

/// What `office customer search` looks for; every criterion given must
/// match. Names and cities match as case-insensitive substrings (Unicode
/// lower case: «анна» finds «Анна Петрова»).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CustomerQuery {
    /// Part of the name.
    pub name: Option<String>,
    /// One of the customer's cards.
    pub card: Option<[u8; 8]>,
    /// Part of the home city.
    pub city: Option<String>,
}

/// The anchor of the office's audit log: how many entries it has and the
/// hash of the newest one (see `docs/audit.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditAnchor {
    /// Number of entries.
    pub entries: u64,
    /// Hash of the newest entry.
    pub head: [u8; 32],
}

impl Ledger {
    /// The store a terminal is registered to: `None` for a terminal with no
    /// store (or an unknown one). For reports by store.
    ///
    /// # Errors
    /// A storage error.
    pub fn terminal_store(&self, terminal_id: u32) -> Result<Option<Store>, LedgerError> {
        let store: Option<u32> = self
            .conn
            .query_row(
                "SELECT store_id FROM terminals WHERE terminal_id = ?1",
                [terminal_id],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        Ok(match store {
            Some(s) => self.stores()?.into_iter().find(|x| x.store_id == s),
            None => None,
        })
    }

    /// The audit log's anchor (`None` before the first entry).
    ///
    /// # Errors
    /// A storage error.
    pub fn audit_anchor(&self) -> Result<Option<AuditAnchor>, LedgerError> {
        let row: Option<(u64, Vec<u8>)> = self
            .conn
            .query_row("SELECT entries, head FROM audit_anchor WHERE id = 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        row.map(|(entries, head)| {
            Ok(AuditAnchor {
                entries,
                head: head
                    .try_into()
                    .map_err(|_| LedgerError::Storage("the audit anchor's hash is not 32 bytes".into()))?,
            })
        })
        .transpose()
    }

    /// Moves the audit log's anchor: `append` gets the current anchor,
    /// writes the entry (to the audit file) and returns the new anchor,
    /// all while this ledger holds its write lock, so two office commands
    /// never append the same entry number. Nothing is stored if `append`
    /// fails.
    ///
    /// # Errors
    /// `append`'s, or a storage error.
    pub fn advance_audit_anchor<E: From<LedgerError>>(
        &mut self,
        append: impl FnOnce(Option<AuditAnchor>) -> Result<AuditAnchor, E>,
    ) -> Result<AuditAnchor, E> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(LedgerError::from)?;
        let current: Option<(u64, Vec<u8>)> = tx
            .query_row("SELECT entries, head FROM audit_anchor WHERE id = 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(LedgerError::from)?;
        let current = current
            .map(|(entries, head)| {
                Ok::<_, LedgerError>(AuditAnchor {
                    entries,
                    head: head
                        .try_into()
                        .map_err(|_| LedgerError::Storage("the audit anchor's hash is not 32 bytes".into()))?,
                })
            })
            .transpose()?;
        let next = append(current)?;
        tx.execute(
            "INSERT INTO audit_anchor (id, entries, head) VALUES (1, ?1, ?2)
             ON CONFLICT (id) DO UPDATE SET entries = excluded.entries, head = excluded.head",
            params![next.entries, &next.head[..]],
        )
        .map_err(LedgerError::from)?;
        tx.commit().map_err(LedgerError::from)?;
        Ok(next)
    }
}
