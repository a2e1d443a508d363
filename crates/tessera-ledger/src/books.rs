//! The office's own actions on its books — registering terminals,
//! customers and cards, the hotlist, the audit log's anchor — behind one
//! trait ([`OfficeBooks`]) that the embedded SQLite [`Ledger`] and the
//! PostgreSQL backend implement, so that the office runs its commands
//! wherever its books are. Where the SQL is more than one statement it is
//! written once here, over [`WarehouseDb`] (customers and cards, with the
//! warehouse they feed).

pub use crate::adjust::{adjustments_in, issue_adjustment_in};
use crate::db::{SqlValue, WarehouseDb};
use crate::{wh_build, AuditAnchor, HotlistChange, HotlistEntry, Ledger, LedgerError, NewCustomer};

/// What the office's commands do to its books, on either backend. Every
/// method is one transaction: done, or nothing written.
pub trait OfficeBooks {
    /// Registers a terminal (idempotent: a known terminal, revoked or not,
    /// is left as it is).
    ///
    /// # Errors
    /// A storage error.
    fn register_terminal(&mut self, terminal_id: u32, now: u32) -> Result<(), LedgerError>;

    /// Registers a customer's personal data; returns the customer id.
    ///
    /// # Errors
    /// [`LedgerError::Malformed`] for an empty name, or a storage error.
    fn register_customer(&mut self, c: &NewCustomer) -> Result<u64, LedgerError>;

    /// Registers (or moves) a card to a known customer at `key_version`;
    /// its facts follow it in the warehouse.
    ///
    /// # Errors
    /// [`LedgerError::UnknownCustomer`], or a storage error.
    fn register_card(
        &mut self,
        card_id: [u8; 8],
        customer_id: u64,
        key_version: u8,
        now: u32,
    ) -> Result<(), LedgerError>;

    /// Puts a card this office issued on the hotlist with a reason; the
    /// hotlist version goes up by one if the card was not on it.
    ///
    /// # Errors
    /// [`LedgerError::Malformed`] for an empty reason,
    /// [`LedgerError::NotIssued`] for a card this office never issued, a
    /// storage error.
    fn hotlist_add(&mut self, card_id: [u8; 8], reason: &str, now: u32) -> Result<HotlistChange, LedgerError>;

    /// Takes a card off the hotlist; the version goes up by one if it was
    /// on it.
    ///
    /// # Errors
    /// A storage error.
    fn hotlist_remove(&mut self, card_id: [u8; 8]) -> Result<HotlistChange, LedgerError>;

    /// The hotlist's version and entries, by card id.
    ///
    /// # Errors
    /// A storage error.
    fn hotlist_entries(&self) -> Result<(u32, Vec<HotlistEntry>), LedgerError>;

    /// Issues an issuer adjustment (see [`Ledger::issue_adjustment`]).
    ///
    /// # Errors
    /// As [`Ledger::issue_adjustment`].
    fn issue_adjustment(&mut self, a: &crate::NewAdjustment, now: u32) -> Result<crate::AdjustmentRow, LedgerError>;

    /// Issues a referral approval code (see
    /// [`Ledger::issue_approval`]).
    ///
    /// # Errors
    /// As [`Ledger::issue_approval`].
    fn issue_approval(
        &mut self,
        a: &crate::approvals::ApprovalRequest<'_>,
        now: u32,
    ) -> Result<crate::approvals::IssuedApproval, LedgerError>;

    /// The adjustments issued, of one card or of all (see
    /// [`Ledger::adjustments`]).
    ///
    /// # Errors
    /// A storage error.
    fn adjustments(&self, card_id: Option<[u8; 8]>) -> Result<Vec<crate::AdjustmentRow>, LedgerError>;

    /// Every approval code issued, newest first, with its state at `now`
    /// (see [`Ledger::approvals`]).
    ///
    /// # Errors
    /// A storage error.
    fn approvals(&self, now: u32) -> Result<Vec<crate::approvals::ApprovalStatus>, LedgerError>;

    /// The audit log's anchor (`None` before the first entry).
    ///
    /// # Errors
    /// A storage error.
    fn audit_anchor(&self) -> Result<Option<AuditAnchor>, LedgerError>;

    /// Moves the audit log's anchor: `append` gets the current anchor,
    /// writes the entry and returns the new anchor, all while these books
    /// hold the anchor's lock, so two office commands never append the
    /// same entry number. Nothing is stored if `append` fails.
    ///
    /// # Errors
    /// `append`'s, or a storage error.
    fn advance_audit_anchor_with(
        &mut self,
        append: &mut dyn FnMut(Option<AuditAnchor>) -> Result<AuditAnchor, LedgerError>,
    ) -> Result<AuditAnchor, LedgerError>;
}

/// Inserts a customer's personal data (after checking it); returns the
/// customer id.
///
/// # Errors
/// [`LedgerError::Malformed`] for an empty name, or a storage error.
pub fn insert_customer(db: &dyn WarehouseDb, c: &NewCustomer) -> Result<u64, LedgerError> {
    if c.name.trim().is_empty() {
        return Err(LedgerError::Malformed("customer name is empty".into()));
    }
    db.first(
        "INSERT INTO customers (name, birth_date, home_city, household, preferences, tier)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING customer_id",
        &[
            c.name.as_str().into(),
            c.birth_date.to_string().as_str().into(),
            c.home_city.as_str().into(),
            c.household[..].into(),
            serde_json::to_string(&c.preferences)?.as_str().into(),
            i64::from(c.tier).into(),
        ],
        |r| r.int(0),
    )?
    .ok_or_else(|| LedgerError::Storage("customer id".into()))
}

/// Registers (or moves) a card to a known customer, inside the caller's
/// transaction, and notes it for the warehouse when `touch`. Returns the
/// customer and household the card was linked to before, if any:
/// [`finish_card_links`] drops them from the warehouse if nothing links
/// them any more.
///
/// # Errors
/// [`LedgerError::UnknownCustomer`], or a storage error.
pub fn link_card(
    db: &dyn WarehouseDb,
    card_id: &[u8; 8],
    customer_id: u64,
    key_version: u8,
    now: u32,
    touch: bool,
) -> Result<Option<(u64, Vec<u8>)>, LedgerError> {
    let known = db
        .first(
            "SELECT 1 FROM customers WHERE customer_id = ?1",
            &[SqlValue::from(customer_id)],
            |_| Ok(()),
        )?
        .is_some();
    if !known {
        return Err(LedgerError::UnknownCustomer(customer_id));
    }
    let before = db.first(
        "SELECT cu.customer_id, cu.household FROM cards c JOIN customers cu ON cu.customer_id = c.customer_id
         WHERE c.card_id = ?1",
        &[card_id[..].into()],
        |r| Ok((r.int(0)?, r.blob(1)?)),
    )?;
    db.run(
        "INSERT INTO cards (card_id, customer_id, key_version, registered_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (card_id) DO UPDATE SET customer_id = excluded.customer_id,
             key_version = excluded.key_version, registered_at = COALESCE(cards.registered_at, excluded.registered_at)",
        &[
            card_id[..].into(),
            customer_id.into(),
            u32::from(key_version).into(),
            now.into(),
        ],
    )?;
    // The card's facts follow it to its customer (and household).
    if touch {
        wh_build::touch_card(db, card_id)?;
    }
    Ok(before)
}

/// After cards were linked ([`link_card`]): maintains the warehouse (or
/// marks it stale when `zone` is `None`), then drops the customers and
/// households in `moved` that no card links any more.
///
/// # Errors
/// A storage error.
pub fn finish_card_links(
    db: &dyn WarehouseDb,
    zone: Option<&tessera_rules::display::Zone>,
    moved: Vec<(u64, Vec<u8>)>,
) -> Result<(), LedgerError> {
    wh_build::after_change(db, zone)?;
    if zone.is_some() && !moved.is_empty() {
        let (mut customers, mut households): (Vec<u64>, Vec<Vec<u8>>) = moved.into_iter().unzip();
        customers.sort_unstable();
        customers.dedup();
        households.sort_unstable();
        households.dedup();
        wh_build::drop_unlinked(db, &customers, &households)?;
    }
    Ok(())
}

impl OfficeBooks for Ledger {
    fn register_terminal(&mut self, terminal_id: u32, now: u32) -> Result<(), LedgerError> {
        Ledger::register_terminal(self, terminal_id, now)
    }

    fn register_customer(&mut self, c: &NewCustomer) -> Result<u64, LedgerError> {
        Ledger::register_customer(self, c)
    }

    fn register_card(
        &mut self,
        card_id: [u8; 8],
        customer_id: u64,
        key_version: u8,
        now: u32,
    ) -> Result<(), LedgerError> {
        Ledger::register_card(self, card_id, customer_id, key_version, now)
    }

    fn hotlist_add(&mut self, card_id: [u8; 8], reason: &str, now: u32) -> Result<HotlistChange, LedgerError> {
        Ledger::hotlist_add(self, card_id, reason, now)
    }

    fn hotlist_remove(&mut self, card_id: [u8; 8]) -> Result<HotlistChange, LedgerError> {
        Ledger::hotlist_remove(self, card_id)
    }

    fn hotlist_entries(&self) -> Result<(u32, Vec<HotlistEntry>), LedgerError> {
        Ok((self.hotlist()?.version, Ledger::hotlist_entries(self)?))
    }

    fn issue_adjustment(&mut self, a: &crate::NewAdjustment, now: u32) -> Result<crate::AdjustmentRow, LedgerError> {
        Ledger::issue_adjustment(self, a, now)
    }

    fn issue_approval(
        &mut self,
        a: &crate::approvals::ApprovalRequest<'_>,
        now: u32,
    ) -> Result<crate::approvals::IssuedApproval, LedgerError> {
        Ledger::issue_approval(
            self,
            a.terminal_id,
            a.card_id,
            a.kind,
            a.amount,
            a.valid_for_secs,
            a.issued_by,
            now,
        )
    }

    fn adjustments(&self, card_id: Option<[u8; 8]>) -> Result<Vec<crate::AdjustmentRow>, LedgerError> {
        Ledger::adjustments(self, card_id)
    }

    fn approvals(&self, now: u32) -> Result<Vec<crate::approvals::ApprovalStatus>, LedgerError> {
        Ledger::approvals(self, now)
    }

    fn audit_anchor(&self) -> Result<Option<AuditAnchor>, LedgerError> {
        Ledger::audit_anchor(self)
    }

    fn advance_audit_anchor_with(
        &mut self,
        append: &mut dyn FnMut(Option<AuditAnchor>) -> Result<AuditAnchor, LedgerError>,
    ) -> Result<AuditAnchor, LedgerError> {
        self.advance_audit_anchor(append)
    }
}
