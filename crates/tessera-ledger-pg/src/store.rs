//! The ledger's storage trait on PostgreSQL: what `office serve` needs —
//! posting a batch and acknowledging it, and the sync feed's reads and
//! writes — on the same tables, with the same meaning, as the SQLite
//! ledger's methods of the same names.
//!
//! Online authorization decides with the SQLite ledger's SQL
//! (`tessera_ledger::online`), the card's row locked.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;

use postgres::Row;
use tessera_crypto::Key;
use tessera_ledger::{
    AdjustmentKind, AdjustmentRow, CardBook, Exception, ExceptionClass, IngestOutcome, IngestReport, LedgerError,
    LedgerStore, OnlinePolicy, OnlineQuery, OnlineVerdict, ProfileUpdate, SyncDelivery,
};
use tessera_rules::policy::Hotlist;
use tessera_settlement::batch::{Ack, AckStatus};

use crate::db::PgDb;
use crate::posting::{PgLedger, Status};
use crate::PgError;

fn card_of(v: Vec<u8>) -> Result<[u8; 8], LedgerError> {
    v.try_into()
        .map_err(|_| LedgerError::Storage("a stored card id is not 8 bytes".into()))
}

fn u32_of(v: i64, what: &str) -> Result<u32, LedgerError> {
    u32::try_from(v).map_err(|_| LedgerError::Storage(format!("stored {what} {v} out of range")))
}

impl PgLedger {
    /// Verifies and posts one batch ([`PgLedger::ingest`]) and returns what
    /// the SQLite ledger returns: the acknowledgement MAC'd under the
    /// terminal's batch key (a held batch names the first batch the office
    /// lacks), and the counts.
    ///
    /// # Errors
    /// The batch's refusal as the SQLite ledger types it
    /// ([`LedgerError::BadMac`], [`LedgerError::UnknownTerminal`],
    /// [`LedgerError::BatchConflict`], …); [`LedgerError::Unavailable`]
    /// when the database cannot be reached or went away (nothing the
    /// caller saw acknowledged was lost: retry).
    pub fn ingest_acked(&self, batch: &[u8], now: u32) -> Result<IngestOutcome, LedgerError> {
        let (h, out) = self.ingest_headed(batch, now)?;
        let status = match out.status {
            Status::Posted => AckStatus::Posted,
            Status::Duplicate => AckStatus::Duplicate,
            Status::Held => AckStatus::Held,
        };
        let missing_from = if out.status == Status::Held {
            Some(self.missing_from(h.terminal_id)?)
        } else {
            None
        };
        let key = self.keys.batch_key(h.terminal_id);
        let ack = Ack::with_missing(&key, h.terminal_id, h.batch_no, &h.head, status, missing_from);
        let n = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        let report = IngestReport {
            terminal_id: h.terminal_id,
            batch_no: h.batch_no,
            records: h.record_count,
            card_transactions: n(out.card_transactions),
            posted: n(out.posted),
            duplicates: n(out.duplicates),
            rejected: n(out.rejected),
            held: n(out.pending),
            released: n(out.released),
            ..IngestReport::default()
        };
        Ok(IngestOutcome { ack, report })
    }

    /// The first batch number of `terminal_id` the office holds neither
    /// posted nor held.
    fn missing_from(&self, terminal_id: u32) -> Result<u32, LedgerError> {
        let n: i64 = self.with(|c| {
            Ok(c.query_one(
                "SELECT MIN(n) FROM (
                     SELECT t.last_batch_no + 1 AS n FROM terminals t WHERE t.terminal_id = $1
                     UNION ALL
                     SELECT b.batch_no + 1 FROM batches b WHERE b.terminal_id = $1
                 ) c WHERE NOT EXISTS (SELECT 1 FROM batches x WHERE x.terminal_id = $1 AND x.batch_no = c.n)",
                &[&i64::from(terminal_id)],
            )?
            .get::<_, Option<i64>>(0)
            .unwrap_or(1))
        })?;
        u32_of(n, "batch number")
    }

    fn rows(&self, sql: &str, params: &[&(dyn postgres::types::ToSql + Sync)]) -> Result<Vec<Row>, LedgerError> {
        Ok(self.with(|c| Ok(c.query(sql, params)?))?)
    }
}

fn adjustment(r: &Row) -> Result<AdjustmentRow, LedgerError> {
    let kind: String = r.get(2);
    let from: Option<Vec<u8>> = r.get(8);
    let state: String = r.get(9);
    Ok(AdjustmentRow {
        card_id: card_of(r.get(0))?,
        seq: u32_of(r.get(1), "adjustment sequence")?,
        kind: AdjustmentKind::parse(&kind)
            .ok_or_else(|| LedgerError::Storage(format!("stored adjustment kind {kind:?}")))?,
        direction: r.get(3),
        points: u32_of(r.get(4), "adjustment points")?,
        reason: r.get(5),
        operator: r.get(6),
        issued_at: u32_of(r.get(7), "time")?,
        from_card: from.map(card_of).transpose()?,
        state: if state == "applied" {
            "applied".into()
        } else {
            "pending".into()
        },
        applied_counter: r.get::<_, Option<i64>>(10).map(|c| u32_of(c, "counter")).transpose()?,
    })
}

impl LedgerStore for PgLedger {
    fn register_terminal(&mut self, terminal_id: u32, now: u32) -> Result<(), LedgerError> {
        Ok(PgLedger::register_terminal(self, terminal_id, now)?)
    }

    /// As on SQLite, the records of other tills awaiting its decisions are
    /// examined again in the same transaction (their cards locked in card
    /// id order, after the terminal's row, as posting locks them): they
    /// will never be matched, and are orphans now.
    fn revoke_terminal(&mut self, terminal_id: u32, now: u32) -> Result<(), LedgerError> {
        let zone = self.wh_zone.clone();
        let n = self.with(|c| {
            let mut tx = c.transaction()?;
            let terminal = i64::from(terminal_id);
            let n = tx.execute(
                "UPDATE terminals SET revoked_at = COALESCE(revoked_at, $2) WHERE terminal_id = $1",
                &[&terminal, &i64::from(now)],
            )?;
            if n > 0 {
                tx.query(
                    "SELECT card_id FROM cards WHERE card_id IN (
                         SELECT card_id FROM card_transactions WHERE decision = 'awaiting' AND origin_terminal = $1)
                     ORDER BY card_id FOR UPDATE",
                    &[&terminal],
                )?;
                crate::posting::match_records(&mut tx, "t.origin_terminal = $1", &[&terminal], now)?;
                crate::posting::maintain_warehouse(&mut tx, &zone)?;
            }
            tx.commit()?;
            Ok(n)
        })?;
        if n == 0 {
            return Err(LedgerError::UnknownTerminal(terminal_id));
        }
        Ok(())
    }

    fn ingest_dyn(&mut self, input: &mut dyn BufRead, now: u32) -> Result<IngestOutcome, LedgerError> {
        let mut batch = Vec::new();
        input
            .read_to_end(&mut batch)
            .map_err(|e| LedgerError::Io(e.to_string()))?;
        self.ingest_acked(&batch, now)
    }

    fn batch_key(&self, terminal_id: u32) -> Key {
        self.keys.batch_key(terminal_id)
    }

    fn terminal_active(&self, terminal_id: u32) -> Result<Option<bool>, LedgerError> {
        Ok(self
            .rows(
                "SELECT revoked_at IS NULL FROM terminals WHERE terminal_id = $1",
                &[&i64::from(terminal_id)],
            )?
            .first()
            .map(|r| r.get(0)))
    }

    fn hotlist(&self) -> Result<Hotlist, LedgerError> {
        let version = self
            .rows("SELECT value FROM meta WHERE key = 'hotlist_version'", &[])?
            .first()
            .map_or(0, |r| r.get::<_, i64>(0));
        let cards = self
            .rows("SELECT card_id FROM hotlist", &[])?
            .into_iter()
            .map(|r| card_of(r.get(0)))
            .collect::<Result<BTreeSet<_>, _>>()?;
        Ok(Hotlist {
            version: u32_of(version, "hotlist version")?,
            cards,
        })
    }

    fn settled_counters(&self) -> Result<Vec<([u8; 8], u32)>, LedgerError> {
        self.rows(
            "SELECT card_id, last_counter FROM cards WHERE last_counter > 0 ORDER BY card_id",
            &[],
        )?
        .into_iter()
        .map(|r| Ok((card_of(r.get(0))?, u32_of(r.get(1), "counter")?)))
        .collect()
    }

    fn profile_updates(&self) -> Result<Vec<ProfileUpdate>, LedgerError> {
        self.rows(
            "SELECT p.card_id, p.version, p.blob FROM profile_updates p
             WHERE p.delivered = 0 AND p.version = (SELECT MAX(version) FROM profile_updates q WHERE q.card_id = p.card_id)
             ORDER BY p.card_id",
            &[],
        )?
        .into_iter()
        .map(|r| {
            let v = u16::try_from(r.get::<_, i64>(1))
                .map_err(|_| LedgerError::Storage("stored profile version out of range".into()))?;
            Ok((card_of(r.get(0))?, v, r.get(2)))
        })
        .collect()
    }

    fn mark_profile_delivered(&mut self, card_id: [u8; 8], version: u16) -> Result<(), LedgerError> {
        self.with(|c| {
            c.execute(
                "UPDATE profile_updates SET delivered = 1 WHERE card_id = $1 AND version <= $2",
                &[&&card_id[..], &i64::from(version)],
            )?;
            Ok(())
        })?;
        Ok(())
    }

    fn card(&self, card_id: [u8; 8]) -> Result<Option<CardBook>, LedgerError> {
        let rows = self.rows(
            "SELECT customer_id, key_version, registered_at IS NOT NULL, shadow_balance, card_balance, discrepancy,
                    flagged, last_counter, EXISTS (SELECT 1 FROM hotlist h WHERE h.card_id = c.card_id), pending
             FROM cards c WHERE card_id = $1",
            &[&&card_id[..]],
        )?;
        let Some(r) = rows.first() else {
            return Ok(None);
        };
        Ok(Some(CardBook {
            card_id,
            customer_id: r.get::<_, Option<i64>>(0).map(|c| c as u64),
            key_version: u8::try_from(r.get::<_, i64>(1))
                .map_err(|_| LedgerError::Storage("stored key version out of range".into()))?,
            registered: r.get(2),
            shadow_balance: r.get(3),
            card_balance: r.get(4),
            discrepancy: r.get(5),
            flagged: r.get::<_, i64>(6) != 0,
            last_counter: u32_of(r.get(7), "counter")?,
            hotlisted: r.get(8),
            pending: u32_of(r.get(9), "pending count")?,
        }))
    }

    fn exceptions(&self) -> Result<Vec<Exception>, LedgerError> {
        self.rows(
            "SELECT id, class, card_id, counter, terminal_id, batch_no, evidence, at FROM exceptions ORDER BY id",
            &[],
        )?
        .into_iter()
        .map(|r| {
            let class: String = r.get(1);
            let opt = |i: usize, what: &str| r.get::<_, Option<i64>>(i).map(|v| u32_of(v, what)).transpose();
            Ok(Exception {
                id: r.get::<_, i64>(0) as u64,
                class: ExceptionClass::parse(&class)
                    .ok_or_else(|| LedgerError::Storage(format!("stored exception class {class:?}")))?,
                card_id: r.get::<_, Option<Vec<u8>>>(2).map(card_of).transpose()?,
                counter: opt(3, "counter")?,
                terminal_id: opt(4, "terminal")?,
                batch_no: opt(5, "batch number")?,
                evidence: serde_json::from_str(r.get::<_, &str>(6))?,
                at: u32_of(r.get(7), "time")?,
            })
        })
        .collect()
    }

    fn unblocks(&self) -> Result<Vec<([u8; 8], u32)>, LedgerError> {
        self.rows(
            "SELECT u.card_id, MAX(u.seq) FROM unblocks u
                 WHERE NOT EXISTS (SELECT 1 FROM card_transactions t
                                   WHERE t.card_id = u.card_id AND t.card_time > u.queued_at)
                 GROUP BY u.card_id ORDER BY u.card_id",
            &[],
        )?
        .into_iter()
        .map(|r| Ok((card_of(r.get(0))?, u32_of(r.get(1), "unblock sequence")?)))
        .collect()
    }

    fn pending_adjustments(&self) -> Result<Vec<AdjustmentRow>, LedgerError> {
        self.rows(
            "SELECT card_id, seq, kind, direction, points, reason, operator, issued_at, from_card, state,
                    applied_counter
             FROM adjustments WHERE state = 'issued' ORDER BY card_id, seq",
            &[],
        )?
        .iter()
        .map(adjustment)
        .collect()
    }

    fn card_key_versions(&self) -> Result<BTreeMap<[u8; 8], u8>, LedgerError> {
        self.rows("SELECT card_id, key_version FROM cards", &[])?
            .into_iter()
            .map(|r| {
                let v = u8::try_from(r.get::<_, i64>(1))
                    .map_err(|_| LedgerError::Storage("stored key version out of range".into()))?;
                Ok((card_of(r.get(0))?, v))
            })
            .collect()
    }

    fn cards_below_key_version(&self, key_version: u8) -> Result<Vec<([u8; 8], u8)>, LedgerError> {
        self.rows(
            "SELECT card_id, key_version FROM cards
             WHERE registered_at IS NOT NULL AND key_version < $1 ORDER BY card_id",
            &[&i64::from(key_version)],
        )?
        .into_iter()
        .map(|r| {
            let v = u8::try_from(r.get::<_, i64>(1))
                .map_err(|_| LedgerError::Storage("stored key version out of range".into()))?;
            Ok((card_of(r.get(0))?, v))
        })
        .collect()
    }

    fn sync_delivered(&self, terminal_id: u32) -> Result<BTreeSet<SyncDelivery>, LedgerError> {
        self.rows(
            "SELECT kind, card_id, ref FROM sync_deliveries WHERE terminal_id = $1",
            &[&i64::from(terminal_id)],
        )?
        .into_iter()
        .map(|r| {
            Ok(SyncDelivery::from_key(
                r.get::<_, &str>(0),
                card_of(r.get(1))?,
                u32_of(r.get(2), "delivery reference")?,
            ))
        })
        .collect()
    }

    fn record_sync_deliveries(
        &mut self,
        terminal_id: u32,
        deliveries: &[SyncDelivery],
        now: u32,
    ) -> Result<usize, LedgerError> {
        let (mut kinds, mut cards, mut refs) = (Vec::new(), Vec::new(), Vec::new());
        for d in deliveries {
            let (kind, card, r) = d.key();
            kinds.push(kind.to_owned());
            cards.push(card.to_vec());
            refs.push(i64::from(r));
        }
        // One statement: all of them or none.
        let n = self.with(|c| {
            Ok(c.execute(
                "INSERT INTO sync_deliveries (terminal_id, kind, card_id, ref, delivered_at)
                 SELECT $1, k, c, r, $5 FROM unnest($2::text[], $3::bytea[], $4::bigint[]) AS d(k, c, r)
                 ON CONFLICT DO NOTHING",
                &[&i64::from(terminal_id), &kinds, &cards, &refs, &i64::from(now)],
            )?)
        })?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn age_gaps(&mut self, now: u32, older_than_secs: u32) -> Result<usize, LedgerError> {
        PgLedger::age_gaps(self, now, older_than_secs)
    }

    fn claim_nonce(&mut self, terminal_id: u32, key: &[u8], now: u32, forget_before: u32) -> Result<bool, LedgerError> {
        Ok(self.with(|c| {
            let mut tx = c.transaction()?;
            // Claims too old to matter go first (their requests are
            // refused by their time): the table stays the size of the
            // window.
            tx.execute(
                "DELETE FROM request_nonces WHERE seen_at < $1",
                &[&i64::from(forget_before)],
            )?;
            // The key decides between two servers claiming at once: one
            // inserts, the other waits for it and inserts nothing.
            let n = tx.execute(
                "INSERT INTO request_nonces (terminal_id, nonce, seen_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&i64::from(terminal_id), &key, &i64::from(now)],
            )?;
            tx.commit()?;
            Ok(n == 1)
        })?)
    }

    /// The SQLite ledger's decision (`tessera_ledger::online`), its SQL
    /// shared, in a transaction that first locks the card's row: two
    /// servers deciding for one card take turns, so its daily limits and
    /// what remains of a refund's original hold across them, and the books
    /// they read (last counter, balance, hotlist) are the committed ones.
    fn authorize_online(
        &mut self,
        query: &OnlineQuery,
        policy: &OnlinePolicy,
        now: u32,
    ) -> Result<OnlineVerdict, LedgerError> {
        if let Some(forged) = tessera_ledger::online::check_request(&self.keys.certificate_verifier(), query) {
            return Ok(forged);
        }
        Ok(self.with(|c| {
            let mut tx = c.transaction()?;
            tx.execute(
                "SELECT 1 FROM cards WHERE card_id = $1 FOR UPDATE",
                &[&&query.card_id[..]],
            )?;
            let verdict = tessera_ledger::online::decide_and_record(
                &PgDb::new(&mut tx),
                query,
                Some(query.request.balance),
                policy,
                now,
                ("online", None),
            )
            .map_err(PgError::Books)?;
            tx.commit()?;
            Ok(verdict)
        })?)
    }
}
