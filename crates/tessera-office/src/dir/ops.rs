//! The office's daily operations: hotlist, stores and terminals,
//! customers (search, export, erasure), each audited.

use std::path::Path;

use serde::Serialize;
use serde_json::json;
use tessera_ledger::{
    CardBook, Customer, CustomerQuery, HotlistChange, HotlistEntry, LedgerError, Replacement, Store, TerminalInfo,
};
use tessera_protocol::profile::SignedProfile;

use super::{write_once, OfficeDir, OfficeDirError};
use tessera_ledger::books::OfficeBooks;

/// One customer's personal data, as `office customer export` writes it
/// (the answer to a data subject's access request).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CustomerExport {
    /// Format version of this document (1).
    pub format: u32,
    /// When it was exported (Unix seconds).
    pub exported_at: u32,
    /// The registry's record: name, birth date, city, household,
    /// preferences, tier, cards.
    pub customer: Customer,
    /// The books of each of the customer's cards (balance, last counter,
    /// hotlisted).
    pub cards: Vec<CardBook>,
}

/// Which customer: by number or by one of their cards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CustomerRef {
    /// The customer's number.
    Id(u64),
    /// One of the customer's cards.
    Card([u8; 8]),
}

fn card_hex(c: &[u8; 8]) -> String {
    hex::encode_upper(c)
}

impl OfficeDir {
    /// Puts a card this office issued on the hotlist (see
    /// [`OfficeBooks::hotlist_add`]); audited as `hotlist.add` when it changed
    /// the list.
    ///
    /// # Errors
    /// [`LedgerError::NotIssued`], [`LedgerError::Malformed`] (empty
    /// reason) inside [`OfficeDirError::Ledger`]; audit and open errors.
    pub fn hotlist_add(&self, card: [u8; 8], reason: &str, now: u32) -> Result<HotlistChange, OfficeDirError> {
        let (_keys, mut ledger, operator) = self.open_books_for_action()?;
        let change = ledger.hotlist_add(card, reason, now)?;
        if change.changed {
            self.audit_with(
                ledger.as_mut(),
                &operator,
                "hotlist.add",
                json!({"card_id": card_hex(&card), "reason": reason.trim(), "hotlist_version": change.version}),
            )?;
        }
        Ok(change)
    }

    /// Takes a card off the hotlist (see [`OfficeBooks::hotlist_remove`]);
    /// audited as `hotlist.remove` with `reason` when it changed the list.
    ///
    /// # Errors
    /// [`LedgerError::Malformed`] for an empty reason; audit and open errors.
    pub fn hotlist_remove(&self, card: [u8; 8], reason: &str) -> Result<HotlistChange, OfficeDirError> {
        if reason.trim().is_empty() {
            return Err(LedgerError::Malformed("give the reason for taking the card off the hotlist".into()).into());
        }
        let (_keys, mut ledger, operator) = self.open_books_for_action()?;
        let change = ledger.hotlist_remove(card)?;
        if change.changed {
            self.audit_with(
                ledger.as_mut(),
                &operator,
                "hotlist.remove",
                json!({"card_id": card_hex(&card), "reason": reason.trim(), "hotlist_version": change.version}),
            )?;
        }
        Ok(change)
    }

    /// The hotlist: its version and entries.
    ///
    /// # Errors
    /// Those of [`OfficeDir::open`].
    pub fn hotlist_entries(&self) -> Result<(u32, Vec<HotlistEntry>), OfficeDirError> {
        let (_keys, books) = self.open_office_books()?;
        Ok(books.hotlist_entries()?)
    }

    /// Adds a store (see [`OfficeBooks::add_store`]); audited as `store.add`.
    ///
    /// # Errors
    /// [`LedgerError::StoreExists`], [`LedgerError::Malformed`]; audit and
    /// open errors.
    pub fn add_store(&self, store_id: u32, name: &str, city: &str, now: u32) -> Result<Store, OfficeDirError> {
        let (_keys, mut ledger, operator) = self.open_books_for_action()?;
        ledger.add_store(store_id, name, city, now)?;
        // A store's name and city are the business's, not personal data.
        self.audit_with(
            ledger.as_mut(),
            &operator,
            "store.add",
            json!({"store_id": store_id, "name": name.trim(), "city": city.trim()}),
        )?;
        let store = ledger.stores()?.into_iter().find(|s| s.store_id == store_id);
        store.ok_or_else(|| LedgerError::UnknownStore(store_id).into())
    }

    /// Every store.
    ///
    /// # Errors
    /// Those of [`OfficeDir::open`].
    pub fn stores(&self) -> Result<Vec<Store>, OfficeDirError> {
        Ok(self.open_office_books()?.1.stores()?)
    }

    /// Registers a terminal to a store (see [`OfficeBooks::assign_terminal`]);
    /// audited as `terminal.assign`.
    ///
    /// # Errors
    /// [`LedgerError::UnknownTerminal`], [`LedgerError::UnknownStore`];
    /// audit and open errors.
    pub fn assign_terminal(&self, terminal_id: u32, store_id: u32) -> Result<(), OfficeDirError> {
        let (_keys, mut ledger, operator) = self.open_books_for_action()?;
        ledger.assign_terminal(terminal_id, store_id)?;
        self.audit_with(
            ledger.as_mut(),
            &operator,
            "terminal.assign",
            json!({"terminal_id": terminal_id, "store_id": store_id}),
        )
    }

    /// Every registered terminal.
    ///
    /// # Errors
    /// Those of [`OfficeDir::open`].
    pub fn terminals(&self) -> Result<Vec<TerminalInfo>, OfficeDirError> {
        Ok(self.open_office_books()?.1.terminals()?)
    }

    /// Revokes a terminal (see [`OfficeBooks::revoke_terminal_for`]): its later
    /// batches are refused over HTTP (403) and by `office import`, each a
    /// `revoked-terminal` exception in the exceptions report. Audited as
    /// `terminal.revoke`. Returns false if it was revoked already.
    ///
    /// # Errors
    /// [`LedgerError::UnknownTerminal`], [`LedgerError::Malformed`]; audit
    /// and open errors.
    pub fn revoke_terminal(&self, terminal_id: u32, reason: &str, now: u32) -> Result<bool, OfficeDirError> {
        let (_keys, mut ledger, operator) = self.open_books_for_action()?;
        let revoked = ledger.revoke_terminal_for(terminal_id, reason, now)?;
        if revoked {
            self.audit_with(
                ledger.as_mut(),
                &operator,
                "terminal.revoke",
                json!({"terminal_id": terminal_id, "reason": reason.trim()}),
            )?;
        }
        Ok(revoked)
    }

    /// Queues an issuer UNBLOCK for a card (see [`OfficeBooks::queue_unblock`]);
    /// audited as `card.unblock`. Returns its issuer sequence.
    ///
    /// # Errors
    /// The ledger's; audit and open errors.
    pub fn queue_unblock(&self, card: [u8; 8], now: u32) -> Result<u32, OfficeDirError> {
        let (_keys, mut ledger, operator) = self.open_books_for_action()?;
        let seq = ledger.queue_unblock(card, now)?;
        self.audit_with(
            ledger.as_mut(),
            &operator,
            "card.unblock",
            json!({"card_id": card_hex(&card), "issuer_seq": seq}),
        )?;
        Ok(seq)
    }

    /// Registers a freshly personalized card with its customer
    /// ([`super::register_issued`]) in `ledger` (this office's, opened by
    /// [`OfficeDir::open`]) and audits it as `card.issue` (card and
    /// customer numbers only). Call [`OfficeDir::audit_ready`] before
    /// personalizing.
    ///
    /// # Errors
    /// The ledger's; audit errors.
    pub fn register_issued(
        &self,
        ledger: &mut dyn OfficeBooks,
        key_version: u8,
        signed: &SignedProfile,
        now: u32,
    ) -> Result<u64, OfficeDirError> {
        let operator = self.operator()?;
        let customer = super::register_issued(ledger, key_version, signed, now)?;
        self.audit_with(
            ledger,
            &operator,
            "card.issue",
            json!({"card_id": card_hex(&signed.profile.card_id), "customer_id": customer, "key_version": key_version}),
        )?;
        Ok(customer)
    }

    /// [`OfficeDir::register_issued`] in the office's books, wherever they
    /// are (the SQLite ledger, or PostgreSQL once they moved).
    ///
    /// # Errors
    /// As [`OfficeDir::register_issued`]; those of opening the books.
    pub fn register_issued_card(
        &self,
        key_version: u8,
        signed: &SignedProfile,
        now: u32,
    ) -> Result<u64, OfficeDirError> {
        let (_keys, mut books, _operator) = self.open_books_for_action()?;
        self.register_issued(books.as_mut(), key_version, signed, now)
    }

    /// Registers a freshly personalized replacement card to `customer_id`
    /// and replaces `old` with it ([`crate::cards::register_replacement`]:
    /// the old card hotlisted, its balance credited to the new one) in the
    /// office's books, wherever they are; audited as `card.replace`. Take
    /// the profile from [`crate::cards::replacement_profile`] and call
    /// [`OfficeDir::audit_ready`] before personalizing.
    ///
    /// # Errors
    /// The ledger's ([`LedgerError::Refused`] for a replacement the books
    /// refuse); audit and open errors.
    pub fn register_replacement_card(
        &self,
        key_version: u8,
        signed: &SignedProfile,
        customer_id: u64,
        old: [u8; 8],
        reason: &str,
        now: u32,
    ) -> Result<Replacement, OfficeDirError> {
        let (_keys, mut books, operator) = self.open_books_for_action()?;
        let replaced = crate::cards::register_replacement(
            books.as_mut(),
            key_version,
            signed,
            customer_id,
            old,
            reason,
            &operator,
            now,
        )?;
        self.audit_with(
            books.as_mut(),
            &operator,
            "card.replace",
            json!({
                "old_card": card_hex(&replaced.old_card), "new_card": card_hex(&replaced.new_card),
                "points": replaced.points, "adjustment_seq": replaced.adjustment.as_ref().map(|r| r.seq),
                "reason": reason.trim(),
            }),
        )?;
        Ok(replaced)
    }

    /// The customers matching `q` (see [`OfficeBooks::search_customers`]).
    ///
    /// # Errors
    /// Those of [`OfficeDir::open`].
    pub fn search_customers(&self, q: &CustomerQuery) -> Result<Vec<Customer>, OfficeDirError> {
        Ok(self.open_office_books()?.1.search_customers(q)?)
    }

    fn customer_id(ledger: &dyn OfficeBooks, who: CustomerRef) -> Result<u64, OfficeDirError> {
        match who {
            CustomerRef::Id(id) => Ok(id),
            CustomerRef::Card(card) => match ledger.customer_of_card(card)? {
                Some(id) => Ok(id),
                None if ledger.card_issued(card)? => Err(OfficeDirError::NoCustomer(card_hex(&card))),
                None => Err(LedgerError::NotIssued(card_hex(&card)).into()),
            },
        }
    }

    /// One customer's personal data and card books; with `out`, also
    /// written there as JSON (`0600`, never overwritten). Audited as
    /// `customer.export` (the customer's number, and whether a file was
    /// written — not its name).
    ///
    /// # Errors
    /// [`LedgerError::UnknownCustomer`], [`LedgerError::NotIssued`],
    /// [`OfficeDirError::NoCustomer`], [`OfficeDirError::Exists`]; audit and
    /// open errors.
    pub fn export_customer(
        &self,
        who: CustomerRef,
        out: Option<&Path>,
        now: u32,
    ) -> Result<CustomerExport, OfficeDirError> {
        let (_keys, mut ledger, operator) = self.open_books_for_action()?;
        let id = Self::customer_id(ledger.as_ref(), who)?;
        let customer = ledger.customer(id)?.ok_or(LedgerError::UnknownCustomer(id))?;
        let mut cards = Vec::new();
        for c in &customer.cards {
            let mut card = [0u8; 8];
            hex::decode_to_slice(c, &mut card).map_err(|_| LedgerError::Storage("stored card id".into()))?;
            if let Some(book) = ledger.card(card)? {
                cards.push(book);
            }
        }
        let export = CustomerExport {
            format: 1,
            exported_at: now,
            customer,
            cards,
        };
        if let Some(path) = out {
            let text = serde_json::to_string_pretty(&export).map_err(LedgerError::from)? + "\n";
            write_once(path, text.as_bytes())?;
        }
        self.audit_with(
            ledger.as_mut(),
            &operator,
            "customer.export",
            // Whether a file was written, not its name: an operator may
            // name it after the customer, and the log is never rewritten.
            json!({"customer_id": id, "to_file": out.is_some()}),
        )?;
        Ok(export)
    }

    /// Erases a customer's personal data (see [`OfficeBooks::erase_customer_rows`]):
    /// gone from the registry and from the profile updates queued for
    /// their cards, so sync never sends it again. The cards stay valid and
    /// keep their books as anonymous figures; the profile on a card is the
    /// card holder's, on the card. Audited as `customer.erase` (numbers
    /// only). Returns the customer's number and cards.
    ///
    /// # Errors
    /// As [`OfficeDir::export_customer`].
    pub fn erase_customer(&self, who: CustomerRef) -> Result<(u64, Vec<String>), OfficeDirError> {
        let (_keys, mut ledger, operator) = self.open_books_for_action()?;
        let id = Self::customer_id(ledger.as_ref(), who)?;
        let cards = ledger.customer(id)?.ok_or(LedgerError::UnknownCustomer(id))?.cards;
        ledger.erase_customer_rows(id)?;
        self.audit_with(
            ledger.as_mut(),
            &operator,
            "customer.erase",
            json!({"customer_id": id, "cards": cards}),
        )?;
        // Audited first: the erasure is committed whatever the cleaning of
        // the storage it freed says.
        ledger.scrub_erased()?;
        Ok((id, cards))
    }
}
