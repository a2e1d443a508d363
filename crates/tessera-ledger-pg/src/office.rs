//! The office's own actions on the PostgreSQL books
//! (`tessera_ledger::books::OfficeBooks`): terminals, customers and
//! cards, the hotlist and the audit log's anchor, each in one
//! transaction, with the SQLite ledger's SQL where it is more than one
//! statement.
//!
//! Locks, as posting takes them: a card registered or hotlisted is its
//! row's (`INSERT … ON CONFLICT` and `DELETE` lock the row they touch), so
//! a batch posting for the card meanwhile waits for the change or sees it
//! committed; the audit anchor is moved under a transaction-scoped
//! advisory lock (`AUDIT_LOCK`), so two office commands at once never
//! append the same entry number.

use tessera_crypto::referral::ReferralKey;
use tessera_ledger::approvals::{issue_in, ApprovalRequest, IssuedApproval};
use tessera_ledger::books::{
    adjustments_in, erase_customer_in, finish_card_links, insert_customer, issue_adjustment_in, link_card, BooksWork,
    OfficeBooks,
};
use tessera_ledger::{AdjustmentRow, AuditAnchor, LedgerError, NewAdjustment, NewCustomer};

use crate::db::PgDb;
use crate::posting::PgLedger;
use crate::PgError;

/// The key of the audit anchor's advisory lock: ASCII "tsraud" as a
/// number.
pub(crate) const AUDIT_LOCK: i64 = 0x7473_7261_7564;

fn anchor_of(entries: i64, head: Vec<u8>) -> Result<AuditAnchor, LedgerError> {
    Ok(AuditAnchor {
        entries: u64::try_from(entries).map_err(|_| LedgerError::Storage("the audit anchor's count".into()))?,
        head: head
            .try_into()
            .map_err(|_| LedgerError::Storage("the audit anchor's hash is not 32 bytes".into()))?,
    })
}

impl OfficeBooks for PgLedger {
    fn transact(&mut self, f: &mut BooksWork<'_>) -> Result<(), LedgerError> {
        let zone = self.wh_zone.clone();
        Ok(self.with(|client| {
            let mut tx = client.transaction()?;
            f(&PgDb::new(&mut tx), Some(&zone)).map_err(PgError::Books)?;
            tx.commit()?;
            Ok(())
        })?)
    }

    fn erase_customer_rows(&mut self, customer_id: u64) -> Result<(), LedgerError> {
        self.transact(&mut |db, zone| erase_customer_in(db, zone, customer_id))
    }

    /// `VACUUM` of the tables that held the erased personal data (the
    /// customer's record, the profiles queued for their cards, their
    /// warehouse dimensions): their dead row versions are removed from the
    /// tables' pages. The cards' rows only lose the customer's number, and
    /// the cards table is the books' largest: it is not scanned for that. What PostgreSQL keeps
    /// beyond them — write-ahead log segments not yet recycled, a standby's
    /// copy, backups — is the database administrator's to handle
    /// (`docs/scale.md`).
    fn scrub_erased(&mut self) -> Result<(), LedgerError> {
        Ok(self.with(|c| {
            c.batch_execute("VACUUM customers, profile_updates, wh_dim_customer, wh_dim_household")?;
            Ok(())
        })?)
    }

    fn register_customer(&mut self, c: &NewCustomer) -> Result<u64, LedgerError> {
        Ok(self.with(|client| {
            let mut tx = client.transaction()?;
            let id = insert_customer(&PgDb::new(&mut tx), c).map_err(PgError::Books)?;
            tx.commit()?;
            Ok(id)
        })?)
    }

    fn register_card(
        &mut self,
        card_id: [u8; 8],
        customer_id: u64,
        key_version: u8,
        now: u32,
    ) -> Result<(), LedgerError> {
        let zone = self.wh_zone.clone();
        Ok(self.with(|client| {
            let mut tx = client.transaction()?;
            {
                let db = PgDb::new(&mut tx);
                let moved = link_card(&db, &card_id, customer_id, key_version, now, true).map_err(PgError::Books)?;
                finish_card_links(&db, Some(&zone), moved.into_iter().collect()).map_err(PgError::Books)?;
            }
            tx.commit()?;
            Ok(())
        })?)
    }

    /// The SQLite ledger's SQL, the card's row locked first: two
    /// adjustments of one card issued at once take two sequences, and a
    /// debit is checked against the books and the pending adjustments as
    /// they are.
    fn issue_adjustment(&mut self, a: &NewAdjustment, now: u32) -> Result<AdjustmentRow, LedgerError> {
        Ok(self.with(|client| {
            let mut tx = client.transaction()?;
            tx.execute("SELECT 1 FROM cards WHERE card_id = $1 FOR UPDATE", &[&&a.card_id[..]])?;
            let row = issue_adjustment_in(&PgDb::new(&mut tx), a, now).map_err(PgError::Books)?;
            tx.commit()?;
            Ok(row)
        })?)
    }

    /// The SQLite ledger's SQL, the till's row locked first: two codes
    /// issued for one till at once take two serials.
    fn issue_approval(&mut self, a: &ApprovalRequest<'_>, now: u32) -> Result<IssuedApproval, LedgerError> {
        let key = ReferralKey::derive(&self.keys.batch_key(a.terminal_id), a.terminal_id);
        Ok(self.with(|client| {
            let mut tx = client.transaction()?;
            tx.execute(
                "SELECT 1 FROM terminals WHERE terminal_id = $1 FOR UPDATE",
                &[&i64::from(a.terminal_id)],
            )?;
            let issued = issue_in(&PgDb::new(&mut tx), &key, a, now).map_err(PgError::Books)?;
            tx.commit()?;
            Ok(issued)
        })?)
    }

    fn adjustments(&self, card_id: Option<[u8; 8]>) -> Result<Vec<AdjustmentRow>, LedgerError> {
        adjustments_in(self, card_id)
    }

    fn approvals(&self, now: u32) -> Result<Vec<tessera_ledger::approvals::ApprovalStatus>, LedgerError> {
        tessera_ledger::approvals::approvals_in(self, now)
    }

    fn audit_anchor(&self) -> Result<Option<AuditAnchor>, LedgerError> {
        let row = self.with(|c| Ok(c.query_opt("SELECT entries, head FROM audit_anchor WHERE id = 1", &[])?))?;
        row.map(|r| anchor_of(r.get(0), r.get(1))).transpose()
    }

    fn advance_audit_anchor_with(
        &mut self,
        append: &mut dyn FnMut(Option<AuditAnchor>) -> Result<AuditAnchor, LedgerError>,
    ) -> Result<AuditAnchor, LedgerError> {
        Ok(self.with(|client| {
            let mut tx = client.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&AUDIT_LOCK])?;
            let current = tx
                .query_opt("SELECT entries, head FROM audit_anchor WHERE id = 1", &[])?
                .map(|r| anchor_of(r.get(0), r.get(1)))
                .transpose()
                .map_err(PgError::Books)?;
            let next = append(current).map_err(PgError::Books)?;
            let entries = i64::try_from(next.entries)
                .map_err(|_| PgError::Books(LedgerError::Storage("the audit anchor's count".into())))?;
            tx.execute(
                "INSERT INTO audit_anchor (id, entries, head) VALUES (1, $1, $2)
                 ON CONFLICT (id) DO UPDATE SET entries = EXCLUDED.entries, head = EXCLUDED.head",
                &[&entries, &&next.head[..]],
            )?;
            tx.commit()?;
            Ok(next)
        })?)
    }
}
