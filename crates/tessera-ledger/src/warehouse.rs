//! The warehouse beside the books (`docs/warehouse.md`): a dimensional
//! model of the card transactions — facts of transactions, categories and
//! points by rule; dimensions of customers, households, cards, stores,
//! categories, campaigns and local dates — in the `wh_` tables of the same
//! database, maintained as batches post, and the queries the analytics
//! read it with.

use rusqlite::Connection;
use tessera_rules::display::Zone;

use crate::{wh_build, Ledger, LedgerError};

/// The zone recorded in the warehouse (`UTC` for a new ledger).
pub(crate) fn stored_zone(conn: &Connection) -> Result<Zone, LedgerError> {
    let name = wh_build::meta(conn, "zone")?.unwrap_or_else(|| "UTC".to_owned());
    Zone::named(&name).map_err(|e| LedgerError::Storage(format!("the warehouse's time zone: {e}")))
}

impl Ledger {
    /// Whether posting a batch maintains the warehouse (on by default).
    /// While it is off, batches post as before and the warehouse falls
    /// behind: it is marked stale, and [`Ledger::rebuild_warehouse`]
    /// brings it up to date. The setting lasts as long as this `Ledger`.
    pub fn set_warehouse(&mut self, enabled: bool) {
        self.warehouse = enabled;
    }

    /// Whether posting maintains the warehouse ([`Ledger::set_warehouse`]).
    pub fn warehouse_enabled(&self) -> bool {
        self.warehouse
    }

    /// Empties the warehouse and builds it again from the books, in one
    /// transaction; returns the number of transaction fact rows (one per
    /// posted card transaction).
    ///
    /// # Errors
    /// A storage error (then nothing changed).
    pub fn rebuild_warehouse(&mut self) -> Result<u64, LedgerError> {
        let tx = self.conn.transaction()?;
        let n = wh_build::rebuild(&tx, &self.wh_zone)?;
        tx.commit()?;
        Ok(n)
    }

    /// Records `zone` as the warehouse's: local dates, days, weeks and
    /// months of every fact and report are read in it. Changing it
    /// rebuilds the warehouse (the date keys change). A new ledger's zone
    /// is UTC (`docs/warehouse.md`).
    ///
    /// # Errors
    /// [`LedgerError::Malformed`] for a zone without an IANA name (it could
    /// not be recorded), or a storage error (then nothing changed).
    pub fn set_warehouse_zone(&mut self, zone: &Zone) -> Result<(), LedgerError> {
        let Some(name) = zone.name() else {
            return Err(LedgerError::Malformed(
                "the warehouse's time zone needs an IANA name (e.g. Europe/Paris)".into(),
            ));
        };
        let name = name.to_owned();
        if self.wh_zone.name() == Some(name.as_str()) {
            return Ok(());
        }
        let tx = self.conn.transaction()?;
        wh_build::set_meta(&tx, "zone", Some(&name))?;
        wh_build::rebuild(&tx, zone)?;
        tx.commit()?;
        self.wh_zone = zone.clone();
        Ok(())
    }

    /// The warehouse's zone ([`Ledger::set_warehouse_zone`]).
    pub fn warehouse_zone(&self) -> &Zone {
        &self.wh_zone
    }

    /// Whether batches posted while the warehouse was off
    /// ([`Ledger::set_warehouse`]) since its last rebuild.
    ///
    /// # Errors
    /// A storage error.
    pub fn warehouse_stale(&self) -> Result<bool, LedgerError> {
        Ok(wh_build::meta(&self.conn, "stale")?.is_some())
    }

    /// Marks the warehouse stale before a batch posts without it.
    pub(crate) fn note_unmaintained(&self) -> Result<(), LedgerError> {
        if !self.warehouse {
            wh_build::set_meta(&self.conn, "stale", Some("1"))?;
        }
        Ok(())
    }
}
