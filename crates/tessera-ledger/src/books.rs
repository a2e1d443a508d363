//! The office's own actions on its books — registering terminals,
//! customers and cards, the hotlist, the audit log's anchor — behind one
//! trait ([`OfficeBooks`]) that the embedded SQLite [`Ledger`] and the
//! PostgreSQL backend implement, so that the office runs its commands
//! wherever its books are. Where the SQL is more than one statement it is
//! written once here, over [`WarehouseDb`] (customers and cards, with the
//! warehouse they feed).

pub use crate::adjust::{adjustments_in, issue_adjustment_in};
use rusqlite::TransactionBehavior;
use tessera_protocol::profile::MAX_PROFILE_BLOB;
use tessera_rules::display::Zone;

use crate::adjust::{book_balance, issue, registered};
use crate::db::{SqlRow, SqlValue, WarehouseDb};
use crate::types::card_hex;
use crate::warehouse::Warehouse;
use crate::{
    card_of, wh_build, AdjustmentKind, AuditAnchor, Customer, CustomerQuery, HotlistChange, HotlistEntry, Ledger,
    LedgerError, LedgerStore, NewCustomer, Replacement, Store, TerminalInfo,
};

/// The work of one write transaction of the books
/// ([`OfficeBooks::transact`]): given the transaction, and the warehouse's
/// zone when the warehouse is maintained with the books.
pub type BooksWork<'a> = dyn FnMut(&dyn WarehouseDb, Option<&Zone>) -> Result<(), LedgerError> + 'a;

/// What the office's commands do to its books, on either backend (with
/// what the servers do to them, [`LedgerStore`], and the reports they
/// feed, [`Warehouse`]). Every method is one transaction: done, or nothing
/// written. The provided methods are written once, over
/// [`OfficeBooks::transact`] and [`Warehouse::warehouse_db`].
pub trait OfficeBooks: LedgerStore + Warehouse {
    /// Runs `f` in one write transaction of these books (SQLite: an
    /// `IMMEDIATE` one, the database's write lock held; PostgreSQL: `READ
    /// COMMITTED`, the rows written locked as they are written): committed
    /// when `f` returns `Ok`, rolled back otherwise. `f` is given the
    /// warehouse's zone when the warehouse is maintained with the books
    /// (`None`: it is marked stale instead).
    ///
    /// # Errors
    /// `f`'s, or a storage error.
    fn transact(&mut self, f: &mut BooksWork<'_>) -> Result<(), LedgerError>;

    /// Erases a customer's personal data in one transaction (see
    /// [`Ledger::erase_customer`]); the storage it freed is cleaned by
    /// [`OfficeBooks::scrub_erased`].
    ///
    /// # Errors
    /// [`LedgerError::UnknownCustomer`], or a storage error.
    fn erase_customer_rows(&mut self, customer_id: u64) -> Result<(), LedgerError>;

    /// Cleans the storage that erased rows left (SQLite: the write-ahead
    /// log checkpointed and truncated, the pages overwritten already;
    /// PostgreSQL: `VACUUM` of the tables that held them).
    ///
    /// # Errors
    /// A storage error.
    fn scrub_erased(&mut self) -> Result<(), LedgerError>;

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
    fn hotlist_add(&mut self, card_id: [u8; 8], reason: &str, now: u32) -> Result<HotlistChange, LedgerError> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(LedgerError::Malformed("give the reason for the hotlisting".into()));
        }
        let changed = write(self, |db, _| {
            if !registered(db, &card_id)? {
                return Err(LedgerError::NotIssued(card_hex(&card_id)));
            }
            hotlist_insert_in(db, &card_id, reason, now)
        })?;
        Ok(HotlistChange {
            version: self.hotlist()?.version,
            changed,
        })
    }

    /// Takes a card off the hotlist; the hotlist version goes up by one if
    /// it was on it, so that the tills' next sync replaces their list (a
    /// till never replaces its list with an older version). A card the
    /// till already blocked stays blocked on the card itself.
    ///
    /// # Errors
    /// A storage error.
    fn hotlist_remove(&mut self, card_id: [u8; 8]) -> Result<HotlistChange, LedgerError> {
        let changed = write(self, |db, _| {
            let changed = db.run("DELETE FROM hotlist WHERE card_id = ?1", &[card_id[..].into()])? > 0;
            if changed {
                bump_hotlist_version(db)?;
            }
            Ok(changed)
        })?;
        Ok(HotlistChange {
            version: self.hotlist()?.version,
            changed,
        })
    }

    /// The hotlist's version and entries, by card id.
    ///
    /// # Errors
    /// A storage error.
    fn hotlist_entries(&self) -> Result<(u32, Vec<HotlistEntry>), LedgerError> {
        let entries =
            self.warehouse_db()
                .rows("SELECT card_id, reason, at FROM hotlist ORDER BY card_id", &[], |r| {
                    Ok(HotlistEntry {
                        card_id: card_of(r.blob(0)?)?,
                        reason: r.text(1)?,
                        at: r.int(2)?,
                    })
                })?;
        Ok((self.hotlist()?.version, entries))
    }

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

    /// Decides a request read over the telephone
    /// ([`crate::online::authorize_by_voice_in`]) in one transaction, the
    /// card's row locked: two servers deciding for one card at once keep
    /// its limits between them. Returns the decision, the card's counter
    /// the reference names and the card's key version.
    ///
    /// # Errors
    /// A storage error.
    #[allow(clippy::too_many_arguments)]
    fn authorize_by_voice(
        &mut self,
        terminal_id: u32,
        card_id: [u8; 8],
        voice: &tessera_crypto::voice::VoiceReference,
        kind: tessera_protocol::messages::TxKind,
        amount: u32,
        reference: u32,
        operator: &str,
        policy: &crate::OnlinePolicy,
        now: u32,
    ) -> Result<(crate::OnlineVerdict, u32, u8), LedgerError> {
        write(self, |db, _| {
            crate::online::authorize_by_voice_in(
                db,
                terminal_id,
                card_id,
                voice,
                kind,
                amount,
                reference,
                operator,
                policy,
                now,
            )
        })
    }

    /// Adds a store.
    ///
    /// # Errors
    /// [`LedgerError::Malformed`] for an empty name or store 0,
    /// [`LedgerError::StoreExists`], a storage error.
    fn add_store(&mut self, store_id: u32, name: &str, city: &str, now: u32) -> Result<(), LedgerError> {
        let name = name.trim();
        if name.is_empty() {
            return Err(LedgerError::Malformed("the store's name is empty".into()));
        }
        if store_id == 0 {
            return Err(LedgerError::Malformed("store numbers start at 1".into()));
        }
        self.transact(&mut |db, zone| {
            let n = db.run(
                "INSERT INTO stores (store_id, name, city, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (store_id) DO NOTHING",
                &[store_id.into(), name.into(), city.trim().into(), now.into()],
            )?;
            if n == 0 {
                return Err(LedgerError::StoreExists(store_id));
            }
            // The store dimension.
            if zone.is_some() {
                wh_build::refresh_stores(db)?;
            }
            wh_build::after_change(db, zone)
        })
    }

    /// Every store, by number, with its terminal count.
    ///
    /// # Errors
    /// A storage error.
    fn stores(&self) -> Result<Vec<Store>, LedgerError> {
        self.warehouse_db().rows(
            "SELECT s.store_id, s.name, s.city, s.created_at,
                    (SELECT COUNT(*) FROM terminals t WHERE t.store_id = s.store_id)
             FROM stores s ORDER BY s.store_id",
            &[],
            |r| {
                Ok(Store {
                    store_id: r.int(0)?,
                    name: r.text(1)?,
                    city: r.text(2)?,
                    created_at: r.int(3)?,
                    terminals: r.int(4)?,
                })
            },
        )
    }

    /// Registers a terminal to a store (or moves it to another).
    ///
    /// # Errors
    /// [`LedgerError::UnknownTerminal`], [`LedgerError::UnknownStore`], a
    /// storage error.
    fn assign_terminal(&mut self, terminal_id: u32, store_id: u32) -> Result<(), LedgerError> {
        self.transact(&mut |db, _| {
            if db
                .first("SELECT 1 FROM stores WHERE store_id = ?1", &[store_id.into()], |_| {
                    Ok(())
                })?
                .is_none()
            {
                return Err(LedgerError::UnknownStore(store_id));
            }
            let n = db.run(
                "UPDATE terminals SET store_id = ?1 WHERE terminal_id = ?2",
                &[store_id.into(), terminal_id.into()],
            )?;
            if n == 0 {
                return Err(LedgerError::UnknownTerminal(terminal_id));
            }
            Ok(())
        })
    }

    /// Every registered terminal, by id: store, registration, revocation,
    /// last batch.
    ///
    /// # Errors
    /// A storage error.
    fn terminals(&self) -> Result<Vec<TerminalInfo>, LedgerError> {
        self.warehouse_db().rows(
            "SELECT t.terminal_id, t.store_id, s.name, t.registered_at, t.revoked_at, t.revoke_reason,
                    t.last_batch_no, (SELECT MAX(b.received_at) FROM batches b WHERE b.terminal_id = t.terminal_id)
             FROM terminals t LEFT JOIN stores s ON s.store_id = t.store_id ORDER BY t.terminal_id",
            &[],
            |r| {
                Ok(TerminalInfo {
                    terminal_id: r.int(0)?,
                    store_id: r.opt_int(1)?,
                    store_name: r.opt_text(2)?,
                    registered_at: r.int(3)?,
                    revoked_at: r.opt_int(4)?,
                    revoke_reason: r.opt_text(5)?,
                    last_batch_no: r.int(6)?,
                    last_batch_at: r.opt_int(7)?,
                })
            },
        )
    }

    /// Revokes a terminal with a reason ([`LedgerStore::revoke_terminal`]):
    /// its later batches and syncs are refused (403) and recorded as
    /// `revoked-terminal` exceptions. Returns false if it was revoked
    /// already (the first time and reason stay).
    ///
    /// # Errors
    /// [`LedgerError::Malformed`] for an empty reason,
    /// [`LedgerError::UnknownTerminal`], a storage error.
    fn revoke_terminal_for(&mut self, terminal_id: u32, reason: &str, now: u32) -> Result<bool, LedgerError> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(LedgerError::Malformed("give the reason for the revocation".into()));
        }
        if self.terminal_active(terminal_id)? == Some(false) {
            return Ok(false);
        }
        self.revoke_terminal(terminal_id, now)?;
        self.transact(&mut |db, _| {
            db.run(
                "UPDATE terminals SET revoke_reason = ?1 WHERE terminal_id = ?2 AND revoke_reason IS NULL",
                &[reason.into(), terminal_id.into()],
            )
            .map(drop)
        })?;
        Ok(true)
    }

    /// Whether this office issued the card (registered it at issuance).
    ///
    /// # Errors
    /// A storage error.
    fn card_issued(&self, card_id: [u8; 8]) -> Result<bool, LedgerError> {
        registered(self.warehouse_db(), &card_id)
    }

    /// The customer a card belongs to (`None`: unknown card, or its
    /// customer was erased).
    ///
    /// # Errors
    /// A storage error.
    fn customer_of_card(&self, card_id: [u8; 8]) -> Result<Option<u64>, LedgerError> {
        Ok(self
            .warehouse_db()
            .first(
                "SELECT customer_id FROM cards WHERE card_id = ?1",
                &[card_id[..].into()],
                |r| r.opt_int(0),
            )?
            .flatten())
    }

    /// A customer's personal data and cards (the export of a data subject
    /// access request); `None` if unknown or erased.
    ///
    /// # Errors
    /// A storage error.
    fn customer(&self, customer_id: u64) -> Result<Option<Customer>, LedgerError> {
        customer_in(self.warehouse_db(), customer_id)
    }

    /// The customers matching every criterion of `q`, by customer id (all
    /// of them for an empty query).
    ///
    /// # Errors
    /// A storage error.
    fn search_customers(&self, q: &CustomerQuery) -> Result<Vec<Customer>, LedgerError> {
        let by_card = match q.card {
            Some(c) => match self.customer_of_card(c)? {
                Some(id) => Some(id),
                None => return Ok(Vec::new()),
            },
            None => None,
        };
        let fold = |s: &str| s.trim().to_lowercase();
        let (name, city) = (q.name.as_deref().map(fold), q.city.as_deref().map(fold));
        let db = self.warehouse_db();
        let ids = db
            .rows(
                "SELECT customer_id, name, home_city FROM customers ORDER BY customer_id",
                &[],
                |r| Ok((r.int::<u64>(0)?, r.text(1)?, r.text(2)?)),
            )?
            .into_iter()
            .filter(|(id, n, c)| {
                by_card.is_none_or(|x| x == *id)
                    && name.as_ref().is_none_or(|w| fold(n).contains(w.as_str()))
                    && city.as_ref().is_none_or(|w| fold(c).contains(w.as_str()))
            })
            .map(|(id, _, _)| id);
        let mut out = Vec::new();
        for id in ids {
            if let Some(c) = customer_in(db, id)? {
                out.push(c);
            }
        }
        Ok(out)
    }

    /// Queues a signed profile blob for a card's next tap. Queuing the same
    /// version again replaces its blob (and makes it pending again if the
    /// blob changed).
    ///
    /// # Errors
    /// [`LedgerError::Malformed`] for an empty blob or one above the card's
    /// 512 bytes, or a storage error.
    fn queue_profile_update(
        &mut self,
        card_id: [u8; 8],
        version: u16,
        blob: Vec<u8>,
        now: u32,
    ) -> Result<(), LedgerError> {
        if blob.is_empty() || blob.len() > MAX_PROFILE_BLOB {
            return Err(LedgerError::Malformed(format!("profile blob of {} bytes", blob.len())));
        }
        self.transact(&mut |db, _| {
            db.run(
                "INSERT INTO profile_updates (card_id, version, blob, queued_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (card_id, version) DO UPDATE SET
                     delivered = CASE WHEN profile_updates.blob = excluded.blob THEN profile_updates.delivered ELSE 0 END,
                     blob = excluded.blob, queued_at = excluded.queued_at",
                &[card_id[..].into(), u32::from(version).into(), blob[..].into(), now.into()],
            )
            .map(drop)
        })
    }

    /// Queues an issuer UNBLOCK for a card this office issued; returns its
    /// issuer sequence (one more than the card's last). The card's row is
    /// locked first, so two unblocks queued at once take two sequences.
    ///
    /// # Errors
    /// [`LedgerError::Malformed`] for a card this office never issued, a
    /// storage error.
    fn queue_unblock(&mut self, card_id: [u8; 8], now: u32) -> Result<u32, LedgerError> {
        write(self, |db, _| {
            crate::online::lock_card(db, &card_id)?;
            if !registered(db, &card_id)? {
                return Err(LedgerError::Malformed(format!(
                    "card {} was never issued by this office",
                    card_hex(&card_id)
                )));
            }
            db.first(
                "INSERT INTO unblocks (card_id, seq, queued_at)
                 SELECT ?1, COALESCE(MAX(seq), 0) + 1, ?2 FROM unblocks WHERE card_id = ?1 RETURNING seq",
                &[card_id[..].into(), now.into()],
                |r| r.int(0),
            )?
            .ok_or_else(|| LedgerError::Storage("the unblock's sequence".into()))
        })
    }

    /// Registers the exact text of a till policy the office signed
    /// (`office sign-policy`); returns its SHA-256. Idempotent.
    ///
    /// # Errors
    /// A storage error.
    fn register_policy(&mut self, toml: &str, now: u32) -> Result<[u8; 32], LedgerError> {
        write(self, |db, _| Ok(register_text(db, "policies", toml, now)?.0))
    }

    /// Registers the exact text of a campaign file the office signed
    /// (`office sign-campaigns`); returns its SHA-256. Idempotent. A new
    /// file's campaigns join the campaign dimension.
    ///
    /// # Errors
    /// A storage error.
    fn register_campaigns(&mut self, toml: &str, now: u32) -> Result<[u8; 32], LedgerError> {
        write(self, |db, zone| {
            let (digest, new) = register_text(db, "campaign_sets", toml, now)?;
            // A file registered again changes nothing.
            match (new, zone) {
                (false, _) => {}
                (true, Some(_)) => wh_build::register_campaigns(db, toml)?,
                (true, None) => wh_build::set_meta(db, "stale", Some("1"))?,
            }
            Ok(digest)
        })
    }

    /// Replaces a lost or damaged card with a freshly issued one: the old
    /// card is hotlisted, and its book balance is issued to the new card as
    /// a `replacement` credit (applied at the new card's first tap at a
    /// synced till; when its record posts, the points move off the old
    /// card's books). Both cards must be this office's; the new one must
    /// be unused and replace no other card.
    ///
    /// # Errors
    /// [`LedgerError::Refused`] for any of those, or for no reason or
    /// operator given; a storage error.
    fn replace_card(
        &mut self,
        old: [u8; 8],
        new: [u8; 8],
        reason: &str,
        operator: &str,
        now: u32,
    ) -> Result<Replacement, LedgerError> {
        if old == new {
            return Err(LedgerError::Refused("a card cannot replace itself".into()));
        }
        if operator.trim().is_empty() || reason.trim().is_empty() {
            return Err(LedgerError::Refused(
                "a replacement needs a reason and the operator's name".into(),
            ));
        }
        write(self, |db, zone| {
            replace_in(db, zone, old, new, reason.trim(), operator.trim(), now)
        })
    }

    /// The card that replaced `card`, if the office replaced it.
    ///
    /// # Errors
    /// A storage error.
    fn replacement_of(&self, card: [u8; 8]) -> Result<Option<[u8; 8]>, LedgerError> {
        replacement_link(self.warehouse_db(), "new_card", "old_card", card)
    }

    /// The card `card` replaces, if it is a replacement.
    ///
    /// # Errors
    /// A storage error.
    fn replaces(&self, card: [u8; 8]) -> Result<Option<[u8; 8]>, LedgerError> {
        replacement_link(self.warehouse_db(), "old_card", "new_card", card)
    }

    /// Every online decision of a card, oldest first.
    ///
    /// # Errors
    /// A storage error.
    fn online_authorizations(&self, card_id: [u8; 8]) -> Result<Vec<crate::OnlineAuthorization>, LedgerError> {
        crate::online::authorizations_of(self.warehouse_db(), card_id)
    }

    /// The signed points of a card's online approvals whose records have
    /// not arrived: what the books will move when they do.
    ///
    /// # Errors
    /// A storage error.
    fn online_outstanding(&self, card_id: [u8; 8]) -> Result<i64, LedgerError> {
        crate::online::outstanding(self.warehouse_db(), &card_id)
    }

    /// A card's book entries that no card certified (balances moved by a
    /// replacement), oldest first.
    ///
    /// # Errors
    /// A storage error.
    fn card_postings(&self, card_id: [u8; 8]) -> Result<Vec<crate::CardPosting>, LedgerError> {
        self.warehouse_db().rows(
            "SELECT delta, what, posted_at FROM card_postings WHERE card_id = ?1 ORDER BY id",
            &[card_id[..].into()],
            |r| {
                Ok(crate::CardPosting {
                    delta: r.i64(0)?,
                    what: r.text(1)?,
                    posted_at: r.int(2)?,
                })
            },
        )
    }
}

/// [`OfficeBooks::transact`] for work that gives a value: the value, once
/// the transaction committed.
fn write<B: OfficeBooks + ?Sized, T>(
    books: &mut B,
    mut f: impl FnMut(&dyn WarehouseDb, Option<&Zone>) -> Result<T, LedgerError>,
) -> Result<T, LedgerError> {
    let mut out = None;
    books.transact(&mut |db, zone| {
        out = Some(f(db, zone)?);
        Ok(())
    })?;
    out.ok_or_else(|| LedgerError::Storage("a committed transaction gave no value".into()))
}

/// The other card of `card`'s replacement: `want` of the row whose `by`
/// is `card` (`new_card` by `old_card`, or the reverse).
pub(crate) fn replacement_link(
    db: &dyn WarehouseDb,
    want: &str,
    by: &str,
    card: [u8; 8],
) -> Result<Option<[u8; 8]>, LedgerError> {
    db.first(
        &format!("SELECT {want} FROM card_replacements WHERE {by} = ?1"),
        &[card[..].into()],
        |r| card_of(r.blob(0)?),
    )
}

/// Registers a signed text (a policy or a campaign file) in `table` by its
/// SHA-256; returns the digest and whether it was new.
pub(crate) fn register_text(
    db: &dyn WarehouseDb,
    table: &str,
    toml: &str,
    now: u32,
) -> Result<([u8; 32], bool), LedgerError> {
    let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(toml.as_bytes()).into();
    let n = db.run(
        &format!(
            "INSERT INTO {table} (digest, toml, registered_at) VALUES (?1, ?2, ?3) ON CONFLICT (digest) DO NOTHING"
        ),
        &[digest[..].into(), toml.into(), now.into()],
    )?;
    Ok((digest, n > 0))
}

/// A customer's record and cards (see [`OfficeBooks::customer`]).
fn customer_in(db: &dyn WarehouseDb, customer_id: u64) -> Result<Option<Customer>, LedgerError> {
    let row = db.first(
        "SELECT name, birth_date, home_city, household, preferences, tier FROM customers WHERE customer_id = ?1",
        &[customer_id.into()],
        |r: SqlRow<'_>| {
            Ok((
                r.text(0)?,
                r.text(1)?,
                r.text(2)?,
                r.blob(3)?,
                r.text(4)?,
                r.int::<u8>(5)?,
            ))
        },
    )?;
    let Some((name, birth_date, home_city, household, prefs, tier)) = row else {
        return Ok(None);
    };
    let cards = db.rows(
        "SELECT card_id FROM cards WHERE customer_id = ?1 ORDER BY card_id",
        &[customer_id.into()],
        |r| Ok(hex::encode_upper(r.blob(0)?)),
    )?;
    Ok(Some(Customer {
        customer_id,
        name,
        birth_date,
        home_city,
        household: hex::encode_upper(household),
        preferences: serde_json::from_str(&prefs)?,
        tier,
        cards,
    }))
}

/// Erases a customer's personal data inside the caller's transaction: the
/// customer row and the profile updates queued for their cards, delivered
/// or not (their blobs hold the profile). The cards, their transactions
/// and every report total stay; the cards become anonymous.
///
/// # Errors
/// [`LedgerError::UnknownCustomer`], or a storage error.
pub fn erase_customer_in(db: &dyn WarehouseDb, zone: Option<&Zone>, customer_id: u64) -> Result<(), LedgerError> {
    let household = db.first(
        "SELECT household FROM customers WHERE customer_id = ?1",
        &[customer_id.into()],
        |r| r.blob(0),
    )?;
    if zone.is_some() {
        let cards = db.rows(
            "SELECT card_id FROM cards WHERE customer_id = ?1",
            &[customer_id.into()],
            |r| r.blob(0),
        )?;
        for c in cards {
            wh_build::touch_card(db, &c)?;
        }
    }
    db.run(
        "DELETE FROM profile_updates WHERE card_id IN (SELECT card_id FROM cards WHERE customer_id = ?1)",
        &[customer_id.into()],
    )?;
    db.run(
        "UPDATE cards SET customer_id = NULL WHERE customer_id = ?1",
        &[customer_id.into()],
    )?;
    if db.run("DELETE FROM customers WHERE customer_id = ?1", &[customer_id.into()])? == 0 {
        return Err(LedgerError::UnknownCustomer(customer_id));
    }
    // The facts stay, unlinked from the person: anonymous figures.
    wh_build::after_change(db, zone)?;
    if zone.is_some() {
        wh_build::drop_unlinked(db, &[customer_id], &household.into_iter().collect::<Vec<_>>())?;
    }
    Ok(())
}

/// Puts a card on the hotlist and moves the hotlist's version on if it was
/// not there, inside the caller's transaction. Returns whether it changed
/// anything.
///
/// # Errors
/// A storage error.
pub fn hotlist_insert_in(db: &dyn WarehouseDb, card_id: &[u8; 8], reason: &str, now: u32) -> Result<bool, LedgerError> {
    let n = db.run(
        "INSERT INTO hotlist (card_id, reason, at) VALUES (?1, ?2, ?3) ON CONFLICT (card_id) DO NOTHING",
        &[card_id[..].into(), reason.into(), now.into()],
    )?;
    if n > 0 {
        bump_hotlist_version(db)?;
    }
    Ok(n > 0)
}

/// Moves the hotlist's version on (the row is created at 1 in books that
/// have none).
fn bump_hotlist_version(db: &dyn WarehouseDb) -> Result<(), LedgerError> {
    db.run(
        "INSERT INTO meta (key, value) VALUES ('hotlist_version', 1)
         ON CONFLICT (key) DO UPDATE SET value = meta.value + 1",
        &[],
    )
    .map(drop)
}

/// [`OfficeBooks::replace_card`] inside the caller's transaction (reason
/// and operator trimmed and not empty).
fn replace_in(
    db: &dyn WarehouseDb,
    zone: Option<&Zone>,
    old: [u8; 8],
    new: [u8; 8],
    reason: &str,
    operator: &str,
    now: u32,
) -> Result<Replacement, LedgerError> {
    let (oh, nh) = (card_hex(&old), card_hex(&new));
    for (c, h) in [(&old, &oh), (&new, &nh)] {
        if !registered(db, c)? {
            return Err(LedgerError::Refused(format!(
                "card {h} was never issued by this office"
            )));
        }
    }
    let replaced = db
        .first(
            "SELECT 1 FROM card_replacements WHERE old_card = ?1 OR new_card = ?2",
            &[old[..].into(), new[..].into()],
            |_| Ok(()),
        )?
        .is_some();
    if replaced {
        return Err(LedgerError::Refused(format!(
            "card {oh} was replaced already, or card {nh} already replaces a card"
        )));
    }
    let used = db
        .first(
            "SELECT 1 WHERE EXISTS (SELECT 1 FROM card_transactions WHERE card_id = ?1)
                 OR EXISTS (SELECT 1 FROM adjustments WHERE card_id = ?1)",
            &[new[..].into()],
            |_| Ok(()),
        )?
        .is_some();
    if used {
        return Err(LedgerError::Refused(format!(
            "card {nh} has been used: replace with a new card"
        )));
    }
    let balance = book_balance(db, &old)?;
    let points = u32::try_from(balance)
        .map_err(|_| LedgerError::Refused(format!("card {oh} has {balance} points on its books")))?;
    hotlist_insert_in(db, &old, &format!("replaced by card {nh}"), now)?;
    let adjustment = if points > 0 {
        Some(issue(
            db,
            &new,
            i64::from(points),
            AdjustmentKind::Replacement,
            &format!("replaces card {oh}: {reason}"),
            operator,
            Some(&old),
            now,
        )?)
    } else {
        None
    };
    db.run(
        "INSERT INTO card_replacements (old_card, new_card, points, adjustment_seq, operator, reason, replaced_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        &[
            old[..].into(),
            new[..].into(),
            points.into(),
            adjustment.as_ref().map(|a| a.seq).into(),
            operator.into(),
            reason.into(),
            now.into(),
        ],
    )?;
    // The old card's successor, in the card dimension.
    match zone {
        Some(zone) => {
            wh_build::touch_card_dim(db, &old)?;
            wh_build::maintain(db, zone)?;
        }
        None => wh_build::set_meta(db, "stale", Some("1"))?,
    }
    Ok(Replacement {
        old_card: old,
        new_card: new,
        points,
        adjustment,
    })
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
    fn transact(&mut self, f: &mut BooksWork<'_>) -> Result<(), LedgerError> {
        let zone = self.warehouse.then_some(&self.wh_zone);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        f(&tx, zone)?;
        tx.commit()?;
        Ok(())
    }

    /// With SQLite's `secure_delete` on: the freed pages are overwritten.
    fn erase_customer_rows(&mut self, customer_id: u64) -> Result<(), LedgerError> {
        self.conn.pragma_update(None, "secure_delete", true)?;
        let erased = self.transact(&mut |db, zone| erase_customer_in(db, zone, customer_id));
        self.conn.pragma_update(None, "secure_delete", false)?;
        erased
    }

    /// The write-ahead log checkpointed and truncated, so the data is gone
    /// from the files, not only from the tables (while another connection
    /// reads — a running `office serve` — SQLite truncates the log at a
    /// later checkpoint instead).
    fn scrub_erased(&mut self) -> Result<(), LedgerError> {
        self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
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
