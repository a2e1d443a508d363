//! The posting core on PostgreSQL: batches in order per terminal, each
//! card record posted once, in counter order, against its card's shadow
//! balance — correct when several office servers post at once.
//!
//! This is the part of ingestion whose correctness depends on the
//! database's concurrency control, and the one that must be fast: a batch
//! is posted with a fixed number of statements, its rows written with
//! `COPY` (`post_records`). It is written and raced here first
//! (`tests/race.rs`). Each record is also matched to the decision that
//! allowed it, as on SQLite (`matched`, `orphan` with an exception, or
//! `awaiting` its origin till's chain, examined again after that till's
//! next batch). As on SQLite, certificates are checked under each card's
//! key version (which moves forward), and the books name header totals
//! that are not the records', completions copied from another till,
//! counter jumps, balance discontinuities, refunds that do not pair with
//! their original, adjustments the office did not issue, purchase points
//! that are not what the signed policy and campaigns give (the same
//! recomputation, `tessera_ledger::points`) and voids the card
//! contradicts; each record meets the card's online
//! approvals (`tessera_ledger::online::meet`) and each decision on an
//! office approval code is reconciled with the codes issued
//! (`tessera_ledger::approvals::check_use`); the warehouse is maintained
//! in the same transaction; records of a card the office replaced are
//! named. `tests/parity.rs` posts the same batches to both backends. The
//! aging of gaps is in `aging`.
//!
//! **Verification** is the SQLite ledger's: the batch streams through
//! `BatchReader` (header, hash chain, MAC under the terminal's batch key)
//! and every card record's certificate is checked under the card's key
//! version before any row is written.
//!
//! **Isolation and locks.** One transaction per batch at READ COMMITTED,
//! with explicit row locks, taken in one order:
//!
//! 1. the terminal's row (`SELECT … FOR UPDATE`): two servers posting
//!    batches of one terminal take turns, so a terminal's batches post in
//!    number order and each once; batches of other terminals do not wait;
//! 2. then each card the batch touches, in card id order (`cards … FOR
//!    UPDATE`, the row created first when new): a card's records post in
//!    counter order against its balance, and two batches sharing cards
//!    cannot deadlock (same order everywhere).
//! 3. then the advisory lock of each office approval code its decisions
//!    use, in key order: the uses of one code take turns, so a reuse is
//!    always seen.
//!
//! Every decision reads the rows it has locked, after the lock is granted,
//! so READ COMMITTED sees the other transactions' committed work. The
//! unique key on `(card_id, counter)` is the last line: a record is never
//! posted twice, whatever a server believes.
//!
//! **Outcomes**, as on SQLite: a batch already posted with the same head is
//! a duplicate (nothing changes); another head under a posted number is a
//! conflict (refused); a batch after a gap is held and posted when the gap
//! closes. A card record already posted with the same content is a
//! duplicate copy (recorded in `duplicate_copies`); with other content, a
//! `conflict` exception and the card hotlisted; a counter beyond the next
//! is held `pending` and posted when the gap closes.

use std::cell::RefCell;

use hex::FromHex as _;
use std::collections::BTreeMap;
use std::io::Write as _;

use postgres::{Client, Transaction};
use tessera_ledger::{from_batch, record_json, LedgerError, LedgerKeys};
use tessera_protocol::messages::{CardId, LogRecord, TxKind};
use tessera_rules::display::Zone;
use tessera_settlement::batch::{BatchReader, Header};
use tessera_settlement::record::{Entry, EntryKind, Verdict};

use crate::db::PgDb;
use crate::PgError;

/// What became of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Posted now.
    Posted,
    /// Posted before, same head: nothing changed.
    Duplicate,
    /// Held for an earlier batch of its terminal.
    Held,
}

/// One batch's outcome, counted as the SQLite ledger counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The batch's status.
    pub status: Status,
    /// The batch's card records (completions and recovered records).
    pub card_transactions: u64,
    /// The batch's card records posted now.
    pub posted: u64,
    /// Card records that were copies of ones the books hold, or of one
    /// earlier in the batch.
    pub duplicates: u64,
    /// The batch's card records held for an earlier counter.
    pub pending: u64,
    /// Conflicting card records (exception raised, card hotlisted).
    pub conflicts: u64,
    /// Card records not posted: the conflicting ones, those whose
    /// certificate does not verify, incomplete ones.
    pub rejected: u64,
    /// Records of earlier batches posted now: held ones this batch's
    /// records completed the counters of, and those of the held batches
    /// it released.
    pub released: u64,
}

impl Outcome {
    fn none(status: Status) -> Self {
        Self {
            status,
            card_transactions: 0,
            posted: 0,
            duplicates: 0,
            pending: 0,
            conflicts: 0,
            rejected: 0,
            released: 0,
        }
    }
}

/// A record the books hold already: certificate, type, points, balance
/// after, and the terminal, batch and sequence that delivered it.
type HeldRecord = (Vec<u8>, String, i64, i64, (i64, i64, i64));

/// A verified batch: its header and records.
struct Verified {
    header: Header,
    records: Vec<(u32, Entry)>,
}

fn unhex32(s: &str) -> Result<Vec<u8>, PgError> {
    let v =
        hex::decode(s).map_err(|_| PgError::Refused(LedgerError::Malformed("a chain head is 64 hex digits".into())))?;
    if v.len() != 32 {
        return Err(PgError::Refused(LedgerError::Malformed(
            "a chain head is 32 bytes".into(),
        )));
    }
    Ok(v)
}

fn verify(keys: &LedgerKeys, batch: &[u8]) -> Result<Verified, PgError> {
    let mut reader = BatchReader::open(batch).map_err(|e| PgError::Refused(from_batch(0, e)))?;
    let terminal = reader.header().terminal_id;
    let bad = |e| PgError::Refused(from_batch(terminal, e));
    let mut records = Vec::new();
    while let Some(r) = reader.next_record().map_err(bad)? {
        records.push((r.seq, r.entry));
    }
    let header = reader.finish(&keys.batch_key(terminal)).map_err(bad)?;
    Ok(Verified { header, records })
}

fn card_of(entry: &Entry) -> Option<(CardId, LogRecord)> {
    if !matches!(entry.kind, EntryKind::Completion | EntryKind::Recovered) {
        return None;
    }
    let mut card = [0u8; 8];
    hex::decode_to_slice(entry.card_id.as_deref()?, &mut card).ok()?;
    Some((card, entry.card_record()?))
}

/// The PostgreSQL ledger's posting core (module docs).
pub struct PgLedger {
    client: RefCell<Client>,
    url: String,
    pub(crate) keys: LedgerKeys,
    /// The warehouse's zone, as recorded in the books.
    pub(crate) wh_zone: Zone,
}

/// The session's own tables of the rows a transaction touched, for the
/// warehouse (as the SQLite ledger's temporary tables; every statement
/// that fills them empties them before the transaction ends).
const SESSION_TABLES: &str = "
    CREATE TEMP TABLE IF NOT EXISTS wh_touched (
        card_id bytea NOT NULL, counter bigint NOT NULL, PRIMARY KEY (card_id, counter));
    CREATE TEMP TABLE IF NOT EXISTS wh_touched_cards (card_id bytea PRIMARY KEY);
    CREATE TEMP TABLE IF NOT EXISTS wh_batch (
        card_id bytea NOT NULL, counter bigint NOT NULL, tx_type text NOT NULL, points bigint NOT NULL,
        delta bigint NOT NULL, card_time bigint NOT NULL, reference bigint NOT NULL, d_terminal bigint,
        d_seq bigint, purchase_minor bigint, store_id bigint, PRIMARY KEY (card_id, counter));";

/// A connection made ready for posting: the session's tables, and the
/// warehouse's zone read.
fn session(mut client: Client) -> Result<(Client, Zone), PgError> {
    client.batch_execute(SESSION_TABLES)?;
    let zone = tessera_ledger::warehouse::stored_zone(&PgDb::new(&mut client)).map_err(PgError::Warehouse)?;
    Ok((client, zone))
}

impl PgLedger {
    /// Connects to `url`, migrating it ([`crate::migrate`]).
    ///
    /// # Errors
    /// As [`crate::connect`].
    pub fn open(url: &str, keys: LedgerKeys) -> Result<Self, PgError> {
        let mut client = crate::connect(url)?;
        // As the SQLite ledger does at every open: the policy shipped with
        // Tessera is the office's own (tills without a policy file decide
        // under it), registered for the points check.
        let toml = tessera_rules::policy::DEFAULT_POLICY_TOML;
        let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(toml.as_bytes()).into();
        client.execute(
            "INSERT INTO policies (digest, toml, registered_at) VALUES ($1, $2, 0) ON CONFLICT DO NOTHING",
            &[&&digest[..], &toml],
        )?;
        let (client, wh_zone) = session(client)?;
        Ok(Self {
            client: RefCell::new(client),
            url: url.to_owned(),
            keys,
            wh_zone,
        })
    }

    /// Connects to `url`, which must be migrated already
    /// ([`crate::connect_current`]): the connections of a server after the
    /// first.
    ///
    /// # Errors
    /// As [`crate::connect_current`].
    pub fn open_current(url: &str, keys: LedgerKeys) -> Result<Self, PgError> {
        let (client, wh_zone) = session(crate::connect_current(url)?)?;
        Ok(Self {
            client: RefCell::new(client),
            url: url.to_owned(),
            keys,
            wh_zone,
        })
    }

    /// Whether the database closed this connection.
    pub fn is_closed(&self) -> bool {
        self.client.borrow().is_closed()
    }

    /// The connection, for reading the books (connected again first if
    /// the server closed it).
    ///
    /// # Errors
    /// [`PgError::Postgres`] when connecting again fails.
    pub fn client(&mut self) -> Result<&mut Client, PgError> {
        self.reconnect()?;
        Ok(self.client.get_mut())
    }

    /// Connects again when the connection was lost (a restart of the
    /// server): what failed on the old one was rolled back by the server.
    fn reconnect(&self) -> Result<(), PgError> {
        if self.client.borrow().is_closed() {
            *self.client.borrow_mut() = session(crate::connect_current(&self.url)?)?.0;
        }
        Ok(())
    }

    /// Runs `f` on the connection (connected again first if needed).
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut Client) -> Result<T, PgError>) -> Result<T, PgError> {
        self.reconnect()?;
        f(&mut self.client.borrow_mut())
    }

    /// Registers a terminal (idempotent).
    ///
    /// # Errors
    /// [`PgError::Postgres`].
    pub fn register_terminal(&mut self, terminal_id: u32, now: u32) -> Result<(), PgError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO terminals (terminal_id, registered_at, last_head) VALUES ($1, $2, $3)
                 ON CONFLICT (terminal_id) DO NOTHING",
                &[&i64::from(terminal_id), &i64::from(now), &vec![0u8; 32]],
            )?;
            Ok(())
        })
    }

    /// Verifies and posts one batch (module docs), in one transaction; a
    /// batch it releases (held for this one) is posted in the same
    /// transaction.
    ///
    /// # Errors
    /// [`PgError::Refused`]: not a genuine batch (nothing written), an
    /// unknown or revoked terminal, another batch under a posted number;
    /// [`PgError::Postgres`] (nothing written).
    pub fn ingest(&mut self, batch: &[u8], now: u32) -> Result<Outcome, PgError> {
        self.ingest_headed(batch, now).map(|(_, o)| o)
    }

    /// [`Self::ingest`], with the batch's header. A refusal the books name
    /// as on SQLite — an unknown or revoked terminal, a broken chain, a
    /// conflict with a posted batch — is recorded as an exception in a
    /// transaction of its own once the batch's has rolled back. As on
    /// SQLite, a chain broken inside the batch is named before its MAC is
    /// checked (for a registered terminal); a batch that is well formed
    /// but whose MAC does not verify leaves no trace.
    pub(crate) fn ingest_headed(&self, batch: &[u8], now: u32) -> Result<(Header, Outcome), PgError> {
        match self.ingest_verified(batch, now) {
            Err(PgError::Refused(e)) => {
                if let Some(h) = BatchReader::open(batch).ok().map(|r| r.header().clone()) {
                    self.record_refusal(&h, &e, now)?;
                }
                Err(PgError::Refused(e))
            }
            other => other,
        }
    }

    /// The exception of a refused batch, when the refusal is one the books
    /// name (evidence as on SQLite).
    fn record_refusal(&self, h: &Header, e: &LedgerError, now: u32) -> Result<(), PgError> {
        let mut ev = serde_json::json!({
            "batch_no": h.batch_no,
            "seq_from": h.seq_from,
            "seq_to": h.seq_to,
            "record_count": h.record_count,
            "prev_head": h.prev_head.to_lowercase(),
            "head": h.head.to_lowercase(),
            "sealed_at": h.sealed_at,
        });
        let class = match e {
            LedgerError::UnknownTerminal(_) => "unknown-terminal",
            LedgerError::RevokedTerminal(_) => "revoked-terminal",
            LedgerError::BrokenChain { seq, why, .. } => {
                ev["seq"] = serde_json::json!(seq);
                ev["why"] = serde_json::json!(why);
                "broken-chain"
            }
            LedgerError::BatchConflict { .. } => {
                ev["received_head"] = serde_json::json!(h.head.to_lowercase());
                "batch-conflict"
            }
            _ => return Ok(()),
        };
        let terminal = i64::from(h.terminal_id);
        self.with(|c| {
            // A broken chain inside the batch is found before its terminal
            // is looked up: named only for a registered terminal.
            if class == "broken-chain"
                && c.query_opt("SELECT 1 FROM terminals WHERE terminal_id = $1", &[&terminal])?
                    .is_none()
            {
                return Ok(());
            }
            let mut tx = c.transaction()?;
            raise(&mut tx, class, None, None, terminal, i64::from(h.batch_no), &ev, now)?;
            tx.commit()?;
            Ok(())
        })
    }

    fn ingest_verified(&self, batch: &[u8], now: u32) -> Result<(Header, Outcome), PgError> {
        let v = verify(&self.keys, batch)?;
        let header = v.header.clone();
        let terminal = i64::from(v.header.terminal_id);
        // Approve decisions on office codes, for a batch refused below.
        let coded: Vec<(u32, Entry)> = v.records.iter().filter(|(_, e)| uses_code(e)).cloned().collect();
        self.with(|client| {
            let mut tx = client.transaction()?;
            let out = match post_batch(&mut tx, &self.keys, v, now, &self.wh_zone) {
                Ok(out) => out,
                Err(PgError::Refused(e @ (LedgerError::BatchConflict { .. } | LedgerError::BrokenChain { .. })))
                    if !coded.is_empty() =>
                {
                    // A genuine batch that does not continue the till's
                    // posted chain (a copy of its directory): its codes
                    // used again are named, as on SQLite.
                    drop(tx);
                    reused_in_refused(client, &header, &coded, now)?;
                    return Err(PgError::Refused(e));
                }
                Err(e) => return Err(e),
            };
            tx.commit()?;
            // Whether records of other batches wait for this till's chain (an
            // index lookup): most batches have none, and then no second
            // transaction, no second commit. One committed after this check
            // was matched against this chain by its own batch's
            // transaction, or waits for this till's next batch.
            let waiting = matches!(out.status, Status::Posted | Status::Duplicate)
                && client
                    .query_one(
                        "SELECT EXISTS (SELECT 1 FROM card_transactions
                                        WHERE decision = 'awaiting' AND origin_terminal = $1)",
                        &[&terminal],
                    )?
                    .get::<_, bool>(0);
            if waiting {
                // Records of other cards that waited for this till's chain, in a
                // transaction of their own that locks their cards in card id
                // order and nothing else (a crash before it leaves them
                // `awaiting`, examined again after the till's next batch).
                let mut tx = client.transaction()?;
                tx.query(
                    "SELECT card_id FROM cards WHERE card_id IN (
                         SELECT card_id FROM card_transactions WHERE decision = 'awaiting' AND origin_terminal = $1)
                     ORDER BY card_id FOR UPDATE",
                    &[&terminal],
                )?;
                match_records(&mut tx, "t.origin_terminal = $1", &[&terminal], now)?;
                // Their facts now have the decision's amount, store and
                // categories.
                maintain_warehouse(&mut tx, &self.wh_zone)?;
                tx.commit()?;
            }
            Ok((header, out))
        })
    }
}

/// For a refused genuine batch: each approve decision that uses a code a
/// settled decision used already, as another decision, is an
/// `approval-reused` exception (`tessera_ledger::approvals::
/// reused_in_refused`), in a transaction of its own holding the codes'
/// locks.
fn reused_in_refused(client: &mut Client, h: &Header, coded: &[(u32, Entry)], now: u32) -> Result<(), PgError> {
    let mut tx = client.transaction()?;
    lock_codes(&mut tx, coded.iter().map(|(_, e)| e))?;
    let found = tessera_ledger::approvals::reused_in_refused(&PgDb::new(&mut tx), h.terminal_id, h.batch_no, coded)
        .map_err(PgError::Books)?;
    for (class, evidence) in found {
        let card = evidence["used"]["card_id"].as_str().and_then(|c| hex::decode(c).ok());
        let counter = evidence["used"]["card_counter"].as_i64();
        let (terminal, batch_no) = (i64::from(h.terminal_id), i64::from(h.batch_no));
        raise(
            &mut tx,
            class.as_str(),
            card.as_deref(),
            counter,
            terminal,
            batch_no,
            &evidence,
            now,
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// Brings the warehouse up to date for the rows noted in `wh_touched`, in
/// the caller's transaction (`tessera_ledger::warehouse::maintain`: the
/// SQLite ledger's statements). Every row it writes belongs to a card
/// the transaction holds locked, or is a dimension row inserted in key
/// order, so two servers maintaining at once neither lose a fact nor
/// deadlock on one another's.
pub(crate) fn maintain_warehouse(tx: &mut Transaction<'_>, zone: &Zone) -> Result<(), PgError> {
    tessera_ledger::warehouse::maintain(&PgDb::new(tx), zone).map_err(PgError::Warehouse)
}

fn post_batch(
    tx: &mut Transaction<'_>,
    keys: &LedgerKeys,
    v: Verified,
    now: u32,
    zone: &Zone,
) -> Result<Outcome, PgError> {
    let h = &v.header;
    let terminal = i64::from(h.terminal_id);
    let row = tx.query_opt(
        "SELECT revoked_at, last_batch_no, last_seq, last_head FROM terminals WHERE terminal_id = $1 FOR UPDATE",
        &[&terminal],
    )?;
    let Some(row) = row else {
        return Err(PgError::Refused(LedgerError::UnknownTerminal(h.terminal_id)));
    };
    if row.get::<_, Option<i64>>(0).is_some() {
        return Err(PgError::Refused(LedgerError::RevokedTerminal(h.terminal_id)));
    }
    let (last_batch, last_seq, last_head): (i64, i64, Vec<u8>) = (row.get(1), row.get(2), row.get(3));
    let batch_no = i64::from(h.batch_no);
    let head = unhex32(&h.head)?;
    if batch_no <= last_batch {
        let posted: Option<(Vec<u8>, i64)> = tx
            .query_opt(
                "SELECT head, card_transactions FROM batches WHERE terminal_id = $1 AND batch_no = $2",
                &[&terminal, &batch_no],
            )?
            .map(|r| (r.get(0), r.get(1)));
        return match posted {
            // The same batch: its card transactions are those it posted
            // with, as the SQLite ledger reports a copy it reads again.
            Some((p, n)) if p == head => Ok(Outcome {
                card_transactions: u64::try_from(n).unwrap_or(0),
                ..Outcome::none(Status::Duplicate)
            }),
            _ => Err(PgError::Refused(LedgerError::BatchConflict {
                terminal_id: h.terminal_id,
                batch_no: h.batch_no,
            })),
        };
    }
    let prev = unhex32(&h.prev_head)?;
    if batch_no > last_batch + 1 {
        // Held until its predecessor arrives (a re-send is a duplicate).
        let inserted = tx.execute(
            "INSERT INTO batches (terminal_id, batch_no, status, seq_from, seq_to, record_count, prev_head, head,
                 totals, sealed_at, received_at, card_transactions)
             VALUES ($1, $2, 'held', $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING",
            &[
                &terminal,
                &batch_no,
                &i64::from(h.seq_from),
                &i64::from(h.seq_to),
                &i64::from(h.record_count),
                &prev,
                &head,
                &serde_json::to_string(&h.totals).unwrap_or_default(),
                &i64::from(h.sealed_at),
                &i64::from(now),
                &(v.records
                    .iter()
                    .filter(|(_, e)| matches!(e.kind, EntryKind::Completion | EntryKind::Recovered))
                    .count() as i64),
            ],
        )?;
        if inserted > 0 {
            for (seq, e) in &v.records {
                tx.execute(
                    "INSERT INTO held_records (terminal_id, batch_no, seq, entry) VALUES ($1, $2, $3, $4)",
                    &[
                        &terminal,
                        &batch_no,
                        &i64::from(*seq),
                        &serde_json::to_string(e).unwrap_or_default(),
                    ],
                )?;
            }
        }
        return Ok(Outcome::none(Status::Held));
    }
    if i64::from(h.seq_from) != last_seq + 1 || prev != last_head {
        return Err(PgError::Refused(LedgerError::BrokenChain {
            terminal_id: h.terminal_id,
            seq: h.seq_from,
            why: format!("batch {} does not continue the posted chain", h.batch_no),
        }));
    }
    // This batch and the held ones it releases post in this transaction:
    // every card any of them touches is locked now, in card id order, so
    // no lock is ever taken out of that order.
    let mut chain = vec![v];
    loop {
        let next = i64::from(chain[chain.len() - 1].header.batch_no) + 1;
        let held: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM batches WHERE terminal_id = $1 AND batch_no = $2 AND status = 'held')",
                &[&terminal, &next],
            )?
            .get(0);
        if !held {
            break;
        }
        let b = held_batch(tx, terminal, next)?;
        tx.execute(
            "DELETE FROM held_records WHERE terminal_id = $1 AND batch_no = $2",
            &[&terminal, &next],
        )?;
        tx.execute(
            "DELETE FROM batches WHERE terminal_id = $1 AND batch_no = $2",
            &[&terminal, &next],
        )?;
        chain.push(b);
    }
    let mut cards: Vec<CardId> = chain
        .iter()
        .flat_map(|b| b.records.iter().filter_map(|(_, e)| card_of(e).map(|(c, _)| c)))
        .collect();
    // The cards the records post to get their row when new.
    let mut new_rows: Vec<Vec<u8>> = cards.iter().map(|c| c.to_vec()).collect();
    new_rows.sort_unstable();
    new_rows.dedup();
    // A void names the card whose record it contradicts: locked too (when
    // the books know it).
    cards.extend(chain.iter().flat_map(|b| {
        b.records.iter().filter_map(|(_, e)| {
            (e.kind == EntryKind::Void)
                .then(|| e.card_id.as_deref().and_then(|c| <[u8; 8]>::from_hex(c).ok()))
                .flatten()
        })
    }));
    // An issuer credit to a replacement card moves the points off the card
    // it replaced, when it posts: that card is locked with the others.
    let credits: Vec<Vec<u8>> = chain
        .iter()
        .flat_map(|b| b.records.iter().filter_map(|(_, e)| card_of(e)))
        .filter(|(_, r)| r.kind == TxKind::IssuerCredit)
        .map(|(c, _)| c.to_vec())
        .collect();
    if !credits.is_empty() {
        for r in tx.query(
            "SELECT old_card FROM card_replacements WHERE new_card = ANY($1)",
            &[&credits],
        )? {
            if let Ok(old) = <[u8; 8]>::try_from(r.get::<_, Vec<u8>>(0)) {
                cards.push(old);
            }
        }
    }
    cards.sort_unstable();
    cards.dedup();
    // Created when new, then locked, both in card id order (the lock node
    // sits above the sort: rows are locked in the order they are returned).
    let ids: Vec<Vec<u8>> = cards.iter().map(|c| c.to_vec()).collect();
    tx.execute(
        "INSERT INTO cards (card_id) SELECT c FROM unnest($1::bytea[]) AS c ORDER BY c ON CONFLICT DO NOTHING",
        &[&new_rows],
    )?;
    tx.query(
        "SELECT card_id FROM cards WHERE card_id = ANY($1) ORDER BY card_id FOR UPDATE",
        &[&ids],
    )?;
    lock_codes(tx, chain.iter().flat_map(|b| b.records.iter().map(|(_, e)| e)))?;
    let mut out = Outcome::none(Status::Posted);
    for (k, b) in chain.iter().enumerate() {
        if k > 0 {
            let (p, h) = (&chain[k - 1].header, &b.header);
            if h.seq_from != p.seq_to.wrapping_add(1) || h.prev_head != p.head {
                // A held batch that does not continue the chain stays out.
                return Err(PgError::Refused(LedgerError::BrokenChain {
                    terminal_id: h.terminal_id,
                    seq: h.seq_from,
                    why: format!("held batch {} does not continue the chain", h.batch_no),
                }));
            }
        }
        let o = post_one(tx, keys, b, now)?;
        if k == 0 {
            out = o;
        } else {
            // A held batch released: its records are the released ones.
            out.released += o.posted + o.released;
        }
    }
    // The warehouse, over what this transaction posted (noted in
    // `wh_touched` by `post_records` and `match_records`).
    maintain_warehouse(tx, zone)?;
    Ok(out)
}

/// An approve decision that went ahead on an office approval code.
fn uses_code(e: &Entry) -> bool {
    e.kind == EntryKind::Decision && e.verdict == Some(Verdict::Approve) && e.approval.is_some()
}

/// Takes the transaction-scoped advisory lock of every approval code the
/// entries' approve decisions use, in key order, after the cards' locks:
/// two servers posting uses of one code take turns, so the second sees
/// the first's use (`approval-reused`) and no two transactions wait on
/// each other's codes.
fn lock_codes<'e>(tx: &mut Transaction<'_>, entries: impl Iterator<Item = &'e Entry>) -> Result<(), PgError> {
    let mut keys: Vec<i64> = entries
        .filter(|e| uses_code(e))
        .filter_map(|e| e.approval.as_deref())
        .map(|code| {
            let d = <sha2::Sha256 as sha2::Digest>::digest(format!("tessera approval {code}").as_bytes());
            i64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    for k in keys {
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&k])?;
    }
    Ok(())
}

/// Each approve decision of the batch that went ahead on an office
/// approval code against the codes the office issued, as on SQLite
/// (`tessera_ledger::approvals::check_use`, the SQL shared): unknown,
/// mismatched and reused codes named, the use recorded.
fn check_codes(tx: &mut Transaction<'_>, v: &Verified, now: u32) -> Result<(), PgError> {
    let (terminal, batch_no) = (v.header.terminal_id, v.header.batch_no);
    for (seq, e) in v.records.iter().filter(|(_, e)| uses_code(e)) {
        let found = tessera_ledger::approvals::check_use(&PgDb::new(&mut *tx), terminal, batch_no, *seq, e)
            .map_err(PgError::Books)?;
        let card = e.card_id.as_deref().and_then(|c| hex::decode(c).ok());
        for (class, evidence) in found {
            raise(
                tx,
                class.as_str(),
                card.as_deref(),
                e.card_counter.map(i64::from),
                i64::from(terminal),
                i64::from(batch_no),
                &evidence,
                now,
            )?;
        }
    }
    Ok(())
}

/// Posts one batch that continues its terminal's chain (its cards locked).
fn post_one(tx: &mut Transaction<'_>, keys: &LedgerKeys, v: &Verified, now: u32) -> Result<Outcome, PgError> {
    let h = &v.header;
    let terminal = i64::from(h.terminal_id);
    let batch_no = i64::from(h.batch_no);
    let head = unhex32(&h.head)?;
    let prev = unhex32(&h.prev_head)?;
    let out = post_records(tx, keys, v, now)?;
    check_points(tx, v, now)?;
    check_codes(tx, v, now)?;
    // The header's totals against the records' (the count the till makes
    // when it seals): genuine (the MAC verified) but not what the records
    // say is named; the records are posted.
    let mut totals: BTreeMap<String, tessera_settlement::batch::Total> = BTreeMap::new();
    for (_, e) in &v.records {
        if let (Some(delta), Some(t)) = (e.delta(), e.tx_type.as_ref()) {
            let x = totals.entry(t.clone()).or_default();
            x.count += 1;
            x.points += delta.unsigned_abs();
        }
    }
    if totals != h.totals {
        let evidence = serde_json::json!({
            "batch_no": h.batch_no,
            "seq_from": h.seq_from,
            "seq_to": h.seq_to,
            "record_count": h.record_count,
            "prev_head": h.prev_head.to_lowercase(),
            "head": h.head.to_lowercase(),
            "sealed_at": h.sealed_at,
            "why": "the header's totals are not the records' totals",
            "records_totals": totals,
        });
        raise(tx, "totals-mismatch", None, None, terminal, batch_no, &evidence, now)?;
    }
    // The batch's counts, as on SQLite (a held batch posted now keeps
    // the time it was received and gets its counts).
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    tx.execute(
        "INSERT INTO batches (terminal_id, batch_no, status, seq_from, seq_to, record_count, prev_head, head,
             totals, sealed_at, received_at, posted_at, card_transactions, posted, duplicates, rejected, held)
         VALUES ($1, $2, 'posted', $3, $4, $5, $6, $7, $8, $9, $10, $10, $11, $12, $13, $14, $15)
         ON CONFLICT (terminal_id, batch_no) DO UPDATE SET status = 'posted', posted_at = EXCLUDED.posted_at,
             card_transactions = EXCLUDED.card_transactions, posted = EXCLUDED.posted,
             duplicates = EXCLUDED.duplicates, rejected = EXCLUDED.rejected, held = EXCLUDED.held",
        &[
            &terminal,
            &batch_no,
            &i64::from(h.seq_from),
            &i64::from(h.seq_to),
            &i64::from(h.record_count),
            &prev,
            &head,
            &serde_json::to_string(&h.totals).unwrap_or_default(),
            &i64::from(h.sealed_at),
            &i64::from(now),
            &n(out.card_transactions),
            &n(out.posted),
            &n(out.duplicates),
            &n(out.rejected),
            &n(out.pending),
        ],
    )?;
    tx.execute(
        "UPDATE terminals SET last_batch_no = $1, last_seq = $2, last_head = $3 WHERE terminal_id = $4",
        &[&batch_no, &i64::from(h.seq_to), &head, &terminal],
    )?;
    // This batch's records (their cards are locked), against what the
    // origins' chains hold now.
    let voided = match_records(
        tx,
        "t.terminal_id = $1 AND t.batch_no = $2",
        &[&terminal, &batch_no],
        now,
    )?;
    contradicted_voids(tx, v, &voided, now)?;
    Ok(out)
}

/// A held batch, as it was verified.
fn held_batch(tx: &mut Transaction<'_>, terminal: i64, batch_no: i64) -> Result<Verified, PgError> {
    let b = tx.query_one(
        "SELECT seq_from, seq_to, record_count, prev_head, head, totals, sealed_at FROM batches
         WHERE terminal_id = $1 AND batch_no = $2",
        &[&terminal, &batch_no],
    )?;
    let records = tx
        .query(
            "SELECT seq, entry FROM held_records WHERE terminal_id = $1 AND batch_no = $2 ORDER BY seq",
            &[&terminal, &batch_no],
        )?
        .iter()
        .map(|r| {
            let entry: Entry = serde_json::from_str(r.get::<_, &str>(1))
                .map_err(|e| PgError::Refused(LedgerError::Storage(format!("a held record: {e}"))))?;
            Ok((u32::try_from(r.get::<_, i64>(0)).unwrap_or(0), entry))
        })
        .collect::<Result<Vec<_>, PgError>>()?;
    let n = |i: usize| u32::try_from(b.get::<_, i64>(i)).unwrap_or(0);
    Ok(Verified {
        header: Header {
            kind: "header".into(),
            format: tessera_settlement::batch::FORMAT.into(),
            version: tessera_settlement::batch::VERSION,
            terminal_id: u32::try_from(terminal).unwrap_or(0),
            batch_no: u32::try_from(batch_no).unwrap_or(0),
            seq_from: n(0),
            seq_to: n(1),
            record_count: n(2),
            prev_head: hex::encode(b.get::<_, Vec<u8>>(3)),
            head: hex::encode(b.get::<_, Vec<u8>>(4)),
            totals: serde_json::from_str(b.get::<_, &str>(5)).unwrap_or_default(),
            sealed_at: n(6),
        },
        records,
    })
}

/// A value for `COPY … FROM STDIN` (text format): `\N` for none.
fn field(out: &mut Vec<u8>, v: Option<&str>) {
    match v {
        Some(t) => crate::copy::copy_text(out, t.as_bytes()),
        None => out.extend_from_slice(b"\\N"),
    }
}

fn bytea(b: &[u8]) -> String {
    format!("\\\\x{}", hex::encode(b))
}

/// Posts the batch's records with a fixed number of statements, whatever
/// its size: the journal records go in with one `COPY`; the cards' books
/// (locked already, in card id order) and the rows the books hold at the
/// batch's counters are read with one query each; the records are sorted
/// out here — copies of held records, conflicting ones, new ones, and per
/// card the run of counters that follows on from its last posted one among
/// its new and pending records — and the new records go in with one more
/// `COPY`, posted or pending as they fall; the pending records the run
/// completes and the cards' counters, balances and pending counts are
/// updated with one statement each.
fn post_records(tx: &mut Transaction<'_>, keys: &LedgerKeys, v: &Verified, now: u32) -> Result<Outcome, PgError> {
    let terminal = i64::from(v.header.terminal_id);
    let batch_no = i64::from(v.header.batch_no);
    let mut out = Outcome::none(Status::Posted);
    // The journal's records; a decision keeps the store its till is
    // assigned to now, and an approved purchase its amount per category
    // (`decision_categories`), as on SQLite.
    let store: Option<i64> = tx
        .query_opt("SELECT store_id FROM terminals WHERE terminal_id = $1", &[&terminal])?
        .and_then(|r| r.get(0));
    let store = store.map(|s| s.to_string());
    let mut cat_rows: (Vec<i64>, Vec<String>, Vec<i64>, Vec<i64>) = Default::default();
    let mut lines = Vec::new();
    for (seq, e) in &v.records {
        if e.kind == EntryKind::Decision && e.verdict == Some(tessera_settlement::record::Verdict::Approve) {
            for (category, amount, from_basket) in tessera_ledger::warehouse::category_amounts(e) {
                cat_rows.0.push(i64::from(*seq));
                cat_rows.1.push(category);
                cat_rows.2.push(amount);
                cat_rows.3.push(i64::from(from_basket));
            }
        }
        let kind = serde_json::to_value(e.kind)
            .ok()
            .and_then(|k| k.as_str().map(str::to_owned))
            .unwrap_or_default();
        let verdict = e
            .verdict
            .and_then(|k| serde_json::to_value(k).ok()?.as_str().map(str::to_owned));
        let card = e
            .card_id
            .as_deref()
            .and_then(|c| hex::decode(c).ok())
            .map(|c| bytea(&c));
        let cols: [Option<String>; 16] = [
            Some(terminal.to_string()),
            Some(seq.to_string()),
            Some(batch_no.to_string()),
            Some(kind),
            Some(e.time.to_string()),
            card,
            e.card_counter.map(|c| c.to_string()),
            e.tx_type.clone(),
            verdict,
            e.reason.clone(),
            e.points.map(|p| p.to_string()),
            e.purchase_minor.map(|m| m.to_string()),
            // A void names the decision it voids.
            (e.kind == EntryKind::Void)
                .then_some(e.origin_seq)
                .flatten()
                .map(|s| s.to_string()),
            (!e.categories.is_empty())
                .then(|| serde_json::to_string(&e.categories).ok())
                .flatten(),
            (!e.basket.is_empty())
                .then(|| serde_json::to_string(&e.basket).ok())
                .flatten(),
            store.clone(),
        ];
        for (k, c) in cols.iter().enumerate() {
            if k > 0 {
                lines.push(b'\t');
            }
            // Hex bytea values carry their own escaped backslash.
            if k == 5 {
                match c {
                    Some(b) => lines.extend_from_slice(b.as_bytes()),
                    None => lines.extend_from_slice(b"\\N"),
                }
            } else {
                field(&mut lines, c.as_deref());
            }
        }
        lines.push(b'\n');
    }
    let mut w = tx.copy_in(
        "COPY terminal_records (terminal_id, seq, batch_no, kind, time, card_id, card_counter, tx_type, verdict,
             reason, points, purchase_minor, origin_seq, categories, basket, store_id) FROM STDIN",
    )?;
    w.write_all(&lines).map_err(|e| PgError::Copy(e.to_string()))?;
    w.finish()?;
    if !cat_rows.0.is_empty() {
        tx.execute(
            "INSERT INTO decision_categories (terminal_id, seq, category, amount_minor, from_basket)
             SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::bigint[], $5::bigint[])
             ON CONFLICT DO NOTHING",
            &[&terminal, &cat_rows.0, &cat_rows.1, &cat_rows.2, &cat_rows.3],
        )?;
    }

    // The card records, their certificates checked under each card's key
    // version. A batch may carry a record and a copy of it (the first
    // counts, the copy is a duplicate) or two records for one counter (a
    // conflict), as on SQLite.
    let mut recs: Vec<(CardId, LogRecord, EntryKind, u32)> = Vec::new();
    for (seq, e) in &v.records {
        if !matches!(e.kind, EntryKind::Completion | EntryKind::Recovered) {
            continue;
        }
        out.card_transactions += 1;
        match card_of(e) {
            Some((c, r)) => recs.push((c, r, e.kind, *seq)),
            None => {
                // Incomplete: no card, counter or certificate to post.
                out.rejected += 1;
                let evidence = serde_json::json!({"seq": seq, "why": "incomplete card record", "entry": e});
                let card = e.card_id.as_deref().and_then(|c| hex::decode(c).ok());
                let counter = e.card_counter.map(i64::from);
                raise(
                    tx,
                    "bad-certificate",
                    card.as_deref(),
                    counter,
                    terminal,
                    batch_no,
                    &evidence,
                    now,
                )?;
            }
        }
    }
    if recs.is_empty() {
        return Ok(out);
    }
    recs.sort_by_key(|(c, r, _, seq)| (*c, r.counter, *seq));
    let ids: Vec<Vec<u8>> = {
        let mut ids: Vec<Vec<u8>> = recs.iter().map(|(c, ..)| c.to_vec()).collect();
        ids.dedup();
        ids
    };
    // The cards' books (locked by the caller).
    let rows = tx.query(
        "SELECT card_id, key_version, last_counter, pending, card_balance FROM cards WHERE card_id = ANY($1)",
        &[&ids],
    )?;
    let mut books: BTreeMap<Vec<u8>, (u8, i64, i64)> = rows
        .iter()
        .map(|r| {
            (
                r.get::<_, Vec<u8>>(0),
                (u8::try_from(r.get::<_, i64>(1)).unwrap_or(1), r.get(2), r.get(3)),
            )
        })
        .collect();
    // The balance each card certified last (what its next record's balance
    // must follow on from).
    let balances: BTreeMap<Vec<u8>, i64> = rows.iter().map(|r| (r.get(0), r.get(4))).collect();
    // Each certificate under its card's key version, in counter order, as
    // on SQLite: a card never registered nor posted to takes whichever
    // version verifies; a card only moves forward (KEY UPDATE, applet-spec
    // §4.15) — a newer version from this counter on, an older one only for
    // counters made before the card was seen at its current version.
    let mut versions: BTreeMap<Vec<u8>, (u8, i64, bool, bool)> = tx
        .query(
            "SELECT card_id, key_version, key_version_from,
                    registered_at IS NULL AND last_counter = 0 AND pending = 0
             FROM cards WHERE card_id = ANY($1)",
            &[&ids],
        )?
        .iter()
        .map(|r| {
            (
                r.get::<_, Vec<u8>>(0),
                (u8::try_from(r.get::<_, i64>(1)).unwrap_or(1), r.get(2), r.get(3), false),
            )
        })
        .collect();
    let known: Vec<u8> = keys.cert_versions().rev().collect();
    let verifier = keys.certificate_verifier();
    let mut bad = Vec::new();
    recs.retain(|(card, rec, ..)| {
        let Some((kv, from, guessed, moved)) = versions.get_mut(&card[..]) else {
            bad.push((*card, rec.clone()));
            return false;
        };
        let counter = i64::from(rec.counter);
        let mut ok = verifier.verify(card, *kv, rec).is_ok();
        if !ok {
            let found = known
                .iter()
                .copied()
                .filter(|v| *guessed || *v > *kv || (*v < *kv && counter < *from))
                .find(|v| verifier.verify(card, *v, rec).is_ok());
            if let Some(v) = found {
                if *guessed || v > *kv {
                    (*kv, *from, *moved) = (v, counter, true);
                }
                ok = true;
            }
        }
        if ok {
            *guessed = false;
        } else {
            bad.push((*card, rec.clone()));
        }
        ok
    });
    out.rejected += bad.len() as u64;
    for (card, rec) in &bad {
        exception(tx, "bad-certificate", card, rec, terminal, batch_no, now)?;
    }
    // A completion is this till's own record: the card must have recorded
    // this till and the decision's sequence. Otherwise it was copied from
    // another till's batch (or journaled wrongly): named, and posted or
    // counted as a copy as any record is.
    for (card, rec, kind, seq) in &recs {
        if *kind != EntryKind::Completion {
            continue;
        }
        let origin = v.records.iter().find(|(s, _)| s == seq).and_then(|(_, e)| e.origin_seq);
        if rec.terminal_id != v.header.terminal_id || origin != Some(rec.terminal_seq) {
            let evidence = serde_json::json!({
                "seq": seq,
                "why": "journaled as this till's completion; the card recorded another till or sequence",
                "journaled_origin_seq": origin,
                "record": record_json(rec),
            });
            raise_on(
                tx,
                "misattributed",
                &card[..],
                i64::from(rec.counter),
                (terminal, batch_no, now),
                &evidence,
            )?;
        }
    }
    let moved: Vec<_> = versions.iter().filter(|(_, v)| v.3).collect();
    if !moved.is_empty() {
        let (mc, mv, mf): (Vec<Vec<u8>>, Vec<i64>, Vec<i64>) = (
            moved.iter().map(|(c, _)| (*c).clone()).collect(),
            moved.iter().map(|(_, v)| i64::from(v.0)).collect(),
            moved.iter().map(|(_, v)| v.1).collect(),
        );
        tx.execute(
            "UPDATE cards c SET key_version = m.v, key_version_from = m.f
             FROM unnest($1::bytea[], $2::bigint[], $3::bigint[]) AS m(card_id, v, f) WHERE c.card_id = m.card_id",
            &[&mc, &mv, &mf],
        )?;
    }
    // What the books hold already at these counters (posted ones, and the
    // pending ones of cards that have any), in one query each.
    let (mut kc, mut kn) = (Vec::new(), Vec::new());
    for (card, rec, ..) in &recs {
        let (_, last, pending) = books.get(&card[..]).copied().unwrap_or((1, 0, 0));
        if i64::from(rec.counter) <= last || pending > 0 {
            kc.push(card.to_vec());
            kn.push(i64::from(rec.counter));
        }
    }
    let mut held: BTreeMap<(Vec<u8>, i64), HeldRecord> = BTreeMap::new();
    if !kc.is_empty() {
        for r in tx.query(
            "SELECT DISTINCT t.card_id, t.counter, t.certificate, t.tx_type, t.points, t.balance_after,
                    t.terminal_id, t.batch_no, t.seq
             FROM card_transactions t JOIN unnest($1::bytea[], $2::bigint[]) AS k(card_id, counter)
               ON t.card_id = k.card_id AND t.counter = k.counter",
            &[&kc, &kn],
        )? {
            held.insert(
                (r.get(0), r.get(1)),
                (r.get(2), r.get(3), r.get(4), r.get(5), (r.get(6), r.get(7), r.get(8))),
            );
        }
    }
    let with_pending: Vec<Vec<u8>> = books.iter().filter(|(_, b)| b.2 > 0).map(|(c, _)| c.clone()).collect();
    let mut pending_rows: BTreeMap<Vec<u8>, Vec<(i64, i64, i64)>> = BTreeMap::new();
    if !with_pending.is_empty() {
        for r in tx.query(
            "SELECT card_id, counter, delta, balance_after FROM card_transactions
             WHERE status = 'pending' AND card_id = ANY($1) ORDER BY card_id, counter",
            &[&with_pending],
        )? {
            pending_rows
                .entry(r.get(0))
                .or_default()
                .push((r.get(1), r.get(2), r.get(3)));
        }
    }
    // A record this batch's own decision allowed is matched here, as
    // `match_records` would match it (the decision at its origin sequence
    // approves this card, counter, type and points, and no void of that
    // decision is in the books, this batch's voids included): it is
    // written `matched`, so the matching statement reads only what awaits
    // other batches' decisions, not every record of the batch again.
    let own: BTreeMap<u32, &Entry> = v.records.iter().map(|(s, e)| (*s, e)).collect();
    let voids: std::collections::BTreeSet<(Vec<u8>, i64, i64, i64)> = tx
        .query(
            "SELECT card_id, card_counter, terminal_id, origin_seq FROM terminal_records
             WHERE kind = 'void' AND card_id = ANY($1) AND card_counter IS NOT NULL AND origin_seq IS NOT NULL",
            &[&ids],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let matched_here = |card: &CardId, r: &LogRecord| -> bool {
        if r.terminal_id != v.header.terminal_id {
            return false;
        }
        let Some(d) = own.get(&r.terminal_seq) else {
            return false;
        };
        d.kind == EntryKind::Decision
            && d.verdict == Some(Verdict::Approve)
            && d.card_id.as_deref().and_then(|c| hex::decode(c).ok()).as_deref() == Some(&card[..])
            && d.card_counter == Some(r.counter)
            && d.tx_type.as_deref() == Some(r.kind.name())
            && d.points == Some(r.amount)
            && !voids.contains(&(
                card.to_vec(),
                i64::from(r.counter),
                i64::from(r.terminal_id),
                i64::from(r.terminal_seq),
            ))
    };
    // Sort each card's records out, and find the run of counters that
    // follows on from its last posted one among its new and pending ones.
    let mut lines = Vec::new();
    let (mut up_c, mut up_n) = (Vec::new(), Vec::new());
    // Every record posted now, new or released: the warehouse's rows.
    let (mut wh_c, mut wh_n): (Vec<Vec<u8>>, Vec<i64>) = (Vec::new(), Vec::new());
    let (mut cc, mut cl, mut cm, mut cb, mut cp) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut dups = Vec::new();
    let mut conflicts = Vec::new();
    let mut jumps = Vec::new();
    let mut jolts: Vec<Jolt> = Vec::new();
    // Refunds posted now (this batch's, and released pending ones), paired
    // with their originals once everything is posted.
    let (mut refunds_c, mut refunds_n): (Vec<Vec<u8>>, Vec<i64>) = (Vec::new(), Vec::new());
    // Issuer adjustments posted now, paired with what the office issued.
    let (mut adjusted_c, mut adjusted_n): (Vec<Vec<u8>>, Vec<i64>) = (Vec::new(), Vec::new());
    // Every record written now (posted or pending), in card and counter
    // order: each meets the card's online approvals at its counter.
    let mut written: Vec<usize> = Vec::new();
    let mut k = 0;
    while k < recs.len() {
        let card = recs[k].0;
        let mut end = k;
        while end < recs.len() && recs[end].0 == card {
            end += 1;
        }
        let (_, last, _) = books.get(&card[..]).copied().unwrap_or((1, 0, 0));
        // counter → (delta, balance after, index of a new record or none).
        let mut cand: BTreeMap<i64, (i64, i64, Option<usize>)> = pending_rows
            .remove(&card[..])
            .unwrap_or_default()
            .into_iter()
            .map(|(n, d, b)| (n, (d, b, None)))
            .collect();
        for (idx, (_, rec, _, seq)) in recs.iter().enumerate().take(end).skip(k) {
            let n = i64::from(rec.counter);
            if let Some((cert, ty, points, balance, first)) = held.get(&(card.to_vec(), n)) {
                let same = cert[..] == rec.certificate[..]
                    && ty == rec.kind.name()
                    && *points == i64::from(rec.amount)
                    && *balance == i64::from(rec.balance_after);
                if same {
                    dups.push((card, n, *seq, *first, idx));
                } else {
                    conflicts.push((card, rec.clone()));
                }
                continue;
            }
            // A second record of this batch for the same counter: a copy of
            // the first (a duplicate), or another record (a conflict).
            if let Some((_, _, Some(i))) = cand.get(&n) {
                if recs[*i].1 == *rec {
                    dups.push((card, n, *seq, (terminal, batch_no, i64::from(recs[*i].3)), idx));
                } else {
                    conflicts.push((card, rec.clone()));
                }
                continue;
            }
            cand.insert(n, (rec.kind.delta(rec.amount), i64::from(rec.balance_after), Some(idx)));
        }
        let mut next = last + 1;
        let (mut moved, mut balance) = (0i64, None);
        let mut posted_new: Vec<usize> = Vec::new();
        let mut previous = balances.get(&card[..]).copied().unwrap_or(0);
        for (n, (d, b, new)) in &cand {
            if *n != next {
                break;
            }
            next += 1;
            moved += d;
            balance = Some(*b);
            if new.is_some() {
                out.posted += 1;
            } else {
                out.released += 1;
            }
            wh_c.push(card.to_vec());
            wh_n.push(*n);
            // The record is certified, so it happened: it is posted and the
            // books follow the certified deltas; a balance that does not
            // follow on from the card's previous one is named, the
            // unexplained points kept, the card flagged and hotlisted. The
            // next record is checked against the card's own balance, so
            // one jump is one exception.
            if *b != previous + d {
                jolts.push(Jolt {
                    card,
                    counter: *n,
                    record: new.map(|i| (recs[i].1.clone(), recs[i].3)),
                    previous,
                    delta: *d,
                    found: *b,
                });
            }
            previous = *b;
            match new {
                Some(idx) => posted_new.push(*idx),
                None => {
                    up_c.push(card.to_vec());
                    up_n.push(*n);
                }
            }
        }
        let mut still_pending = 0i64;
        for (n, (_, _, new)) in &cand {
            let Some(idx) = new else {
                if *n >= next {
                    still_pending += 1;
                }
                continue;
            };
            let post = posted_new.contains(idx);
            written.push(*idx);
            let (_, r, kind, seq) = &recs[*idx];
            if post && matches!(r.kind, TxKind::RefundEarn | TxKind::RefundRedeem) {
                refunds_c.push(card.to_vec());
                refunds_n.push(i64::from(r.counter));
            }
            if post && r.kind.is_adjustment() {
                adjusted_c.push(card.to_vec());
                adjusted_n.push(i64::from(r.counter));
            }
            if !post {
                still_pending += 1;
                out.pending += 1;
                // Far beyond the last posted counter: a clone whose counter
                // jumped, or a card used without settlement.
                let jump = i64::from(r.counter) - (next - 1);
                if jump > i64::from(tessera_ledger::COUNTER_JUMP_LIMIT) {
                    jumps.push((card, r.clone(), *seq, next - 1, jump));
                }
            }
            writeln!(
                lines,
                "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{terminal}\t{batch_no}\t{seq}\t{now}\t{}\t{}\t{}",
                bytea(&card),
                r.counter,
                if post { "posted" } else { "pending" },
                r.kind.name(),
                r.amount,
                r.kind.delta(r.amount),
                r.balance_after,
                r.terminal_id,
                r.terminal_seq,
                r.time,
                r.reference,
                bytea(&r.certificate),
                if *kind == EntryKind::Recovered {
                    "recovered"
                } else {
                    "completion"
                },
                if post { now.to_string() } else { "\\N".to_owned() },
                u8::from(r.online),
                if matched_here(&card, r) { "matched" } else { "awaiting" },
            )
            .map_err(|e| PgError::Copy(e.to_string()))?;
        }
        if let Some(b) = balance {
            cc.push(card.to_vec());
            cl.push(next - 1);
            cm.push(moved);
            cb.push(b);
            cp.push(still_pending);
        } else if still_pending != books.get(&card[..]).map_or(0, |b| b.2) {
            cc.push(card.to_vec());
            cl.push(last);
            cm.push(0);
            cb.push(i64::MIN);
            cp.push(still_pending);
        }
        if let Some(b) = books.get_mut(&card[..]) {
            b.2 = still_pending;
        }
        k = end;
    }
    if !lines.is_empty() {
        let mut w = tx.copy_in(
            "COPY card_transactions (card_id, counter, status, tx_type, points, delta, balance_after,
                 origin_terminal, origin_seq, card_time, reference, certificate, kind, terminal_id, batch_no, seq,
                 received_at, posted_at, online, decision) FROM STDIN",
        )?;
        w.write_all(&lines).map_err(|e| PgError::Copy(e.to_string()))?;
        w.finish()?;
    }
    if !written.is_empty() {
        let written: Vec<(CardId, &LogRecord)> = written.iter().map(|i| (recs[*i].0, &recs[*i].1)).collect();
        meet_approvals(tx, &written, (terminal, batch_no, now))?;
    }
    if !wh_c.is_empty() {
        tx.execute(
            "INSERT INTO wh_touched (card_id, counter) SELECT * FROM unnest($1::bytea[], $2::bigint[])
             ON CONFLICT DO NOTHING",
            &[&wh_c, &wh_n],
        )?;
        replaced_cards_used(tx, &wh_c, &wh_n, now)?;
    }
    refunds_c.extend(up_c.iter().cloned());
    refunds_n.extend(up_n.iter().copied());
    adjusted_c.extend(up_c.iter().cloned());
    adjusted_n.extend(up_n.iter().copied());
    if !up_c.is_empty() {
        tx.execute(
            "UPDATE card_transactions t SET status = 'posted', posted_at = $3
             FROM unnest($1::bytea[], $2::bigint[]) AS k(card_id, counter)
             WHERE t.card_id = k.card_id AND t.counter = k.counter",
            &[&up_c, &up_n, &i64::from(now)],
        )?;
    }
    if !cc.is_empty() {
        tx.execute(
            "UPDATE cards c SET last_counter = k.last, shadow_balance = c.shadow_balance + k.moved,
                    card_balance = CASE WHEN k.balance = -9223372036854775808 THEN c.card_balance ELSE k.balance END,
                    pending = k.pending
             FROM unnest($1::bytea[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[])
                  AS k(card_id, last, moved, balance, pending)
             WHERE c.card_id = k.card_id",
            &[&cc, &cl, &cm, &cb, &cp],
        )?;
    }
    // Copies, as on SQLite: another till's copy is kept (which till saw
    // which transaction) in `duplicate_copies`; a till that journaled one
    // record twice, under two sequences, is named (`duplicate-record`).
    for (card, n, seq, first, idx) in &dups {
        let seq = i64::from(*seq);
        let earlier = if first.0 == terminal {
            Some((first.1, first.2))
        } else if tx.execute(
            "INSERT INTO duplicate_copies (card_id, counter, terminal_id, batch_no, seq)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            &[&&card[..], n, &terminal, &batch_no, &seq],
        )? > 0
        {
            None
        } else {
            tx.query_opt(
                "SELECT batch_no, seq FROM duplicate_copies WHERE card_id = $1 AND counter = $2 AND terminal_id = $3",
                &[&&card[..], n, &terminal],
            )?
            .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1)))
        };
        if let Some((first_batch_no, first_seq)) = earlier.filter(|e| *e != (batch_no, seq)) {
            let evidence = serde_json::json!({
                "seq": seq, "first_batch_no": first_batch_no, "first_seq": first_seq,
                "record": record_json(&recs[*idx].1),
            });
            raise_on(
                tx,
                "duplicate-record",
                &card[..],
                *n,
                (terminal, batch_no, now),
                &evidence,
            )?;
        }
    }
    out.duplicates = dups.len() as u64;
    for (card, rec) in &conflicts {
        exception(tx, "conflict", card, rec, terminal, batch_no, now)?;
        // The published hotlist's version moves with every change, so that
        // tills take the new list.
        hotlist_card(tx, card, "clone", now)?;
    }
    out.conflicts = conflicts.len() as u64;
    out.rejected += out.conflicts;
    if !refunds_c.is_empty() {
        pair_refunds(tx, &refunds_c, &refunds_n, terminal, batch_no, now)?;
    }
    if !jolts.is_empty() {
        balance_discontinuities(tx, &jolts, terminal, batch_no, now)?;
    }
    if !adjusted_c.is_empty() {
        pair_adjustments(tx, &adjusted_c, &adjusted_n, terminal, batch_no, now)?;
    }
    for (card, rec, seq, last, jump) in &jumps {
        let evidence = serde_json::json!({
            "seq": seq,
            "last_posted_counter": last,
            "jump": jump,
            "limit": tessera_ledger::COUNTER_JUMP_LIMIT,
            "record": record_json(rec),
            "action": "hotlisted",
        });
        raise_on(
            tx,
            "counter-jump",
            &card[..],
            i64::from(rec.counter),
            (terminal, batch_no, now),
            &evidence,
        )?;
        hotlist_card(tx, card, "counter jump", now)?;
    }
    Ok(out)
}

/// The card records written now meet their cards' online approvals
/// (`tessera_ledger::online::meet`, as on SQLite): the approval a record
/// meets becomes `posted`, the others at its counter `lapsed`, and a
/// record the card marked online that meets none is an `online-unmatched`
/// exception. One query for the approvals of every card of the batch
/// (their rows locked by the caller), one update for what changed.
fn meet_approvals(
    tx: &mut Transaction<'_>,
    written: &[(CardId, &LogRecord)],
    at: (i64, i64, u32),
) -> Result<(), PgError> {
    use tessera_ledger::online::{meet, Outstanding, OUTSTANDING_ORDER};
    let mut cards: Vec<Vec<u8>> = written.iter().map(|(c, _)| c.to_vec()).collect();
    cards.dedup();
    let u32_at = |r: &postgres::Row, i: usize| {
        u32::try_from(r.get::<_, i64>(i))
            .map_err(|_| PgError::Books(LedgerError::Storage("a stored approval is out of range".into())))
    };
    let mut approvals: BTreeMap<(Vec<u8>, u32), Vec<Outstanding>> = BTreeMap::new();
    for r in tx.query(
        &format!(
            "SELECT card_id, counter, kind, amount, reference, cryptogram FROM online_authorizations
             WHERE card_id = ANY($1) AND state = 'approved' ORDER BY card_id, {OUTSTANDING_ORDER}"
        ),
        &[&cards],
    )? {
        let a = Outstanding {
            counter: u32_at(&r, 1)?,
            kind: r.get(2),
            amount: u32_at(&r, 3)?,
            reference: u32_at(&r, 4)?,
            cryptogram: r.get(5),
        };
        approvals.entry((r.get(0), a.counter)).or_default().push(a);
    }
    let (mut uc, mut ux, mut us): (Vec<Vec<u8>>, Vec<Vec<u8>>, Vec<&str>) = Default::default();
    for (card, rec) in written {
        let none = Vec::new();
        let here = approvals
            .get(&(card.to_vec(), rec.counter.saturating_sub(1)))
            .unwrap_or(&none);
        if here.is_empty() && !rec.online {
            continue;
        }
        let m = meet(card, rec, here);
        for (cryptogram, state) in m
            .posted
            .into_iter()
            .map(|c| (c, "posted"))
            .chain(m.lapsed.into_iter().map(|c| (c, "lapsed")))
        {
            uc.push(card.to_vec());
            ux.push(cryptogram);
            us.push(state);
        }
        if let Some(evidence) = m.unmatched {
            raise_on(tx, "online-unmatched", &card[..], i64::from(rec.counter), at, &evidence)?;
        }
    }
    if !uc.is_empty() {
        tx.execute(
            "UPDATE online_authorizations o SET state = k.state
             FROM unnest($1::bytea[], $2::bytea[], $3::text[]) AS k(card_id, cryptogram, state)
             WHERE o.card_id = k.card_id AND o.cryptogram = k.cryptogram",
            &[&uc, &ux, &us],
        )?;
    }
    Ok(())
}

/// Matches card records to the decisions that allowed them, as the SQLite
/// ledger does (`docs/settlement.md`, "The ledger", step 4): a record whose
/// origin till's chain holds, at the record's sequence, an approve
/// decision of the same card, counter, type and points, not voided, is
/// `matched`; one whose origin is not registered, is revoked, or whose
/// chain covers the sequence with something else is an `orphan` (with an
/// exception); otherwise it keeps `awaiting`. `scope` selects the records
/// examined (their cards locked by the caller).
pub(crate) fn match_records(
    tx: &mut Transaction<'_>,
    scope: &str,
    params: &[&(dyn postgres::types::ToSql + Sync)],
    now: u32,
) -> Result<Vec<(Vec<u8>, i64)>, PgError> {
    let sql = format!(
        "WITH c AS (
             SELECT t.card_id, t.counter, t.origin_terminal, t.origin_seq, t.tx_type, t.points, t.terminal_id,
                    t.batch_no
             FROM card_transactions t WHERE t.decision = 'awaiting' AND ({scope})),
         m AS (
             SELECT c.*, CASE
                 WHEN d.seq IS NOT NULL THEN
                     CASE WHEN d.kind = 'decision' AND d.verdict = 'approve' AND d.card_id = c.card_id
                               AND d.card_counter = c.counter AND d.tx_type = c.tx_type AND d.points = c.points
                          THEN CASE WHEN EXISTS (
                                   SELECT 1 FROM terminal_records v WHERE v.kind = 'void' AND v.card_id = c.card_id
                                   AND v.card_counter = c.counter AND v.terminal_id = c.origin_terminal
                                   AND v.origin_seq = c.origin_seq)
                               THEN 'voided' ELSE 'matched' END
                          ELSE 'orphan' END
                 WHEN o.terminal_id IS NULL OR o.revoked_at IS NOT NULL OR c.origin_seq <= o.last_seq THEN 'orphan'
                 ELSE 'awaiting' END AS state
             FROM c LEFT JOIN terminal_records d ON d.terminal_id = c.origin_terminal AND d.seq = c.origin_seq
                    LEFT JOIN terminals o ON o.terminal_id = c.origin_terminal)
         UPDATE card_transactions t SET decision = CASE WHEN m.state = 'voided' THEN 'orphan' ELSE m.state END
         FROM m
         WHERE t.card_id = m.card_id AND t.counter = m.counter AND m.state <> 'awaiting'
         RETURNING t.card_id, t.counter, m.state, m.origin_terminal, m.origin_seq, m.terminal_id, m.batch_no,
                   t.tx_type, t.points, t.seq"
    );
    let mut voided = Vec::new();
    let rows = tx.query(&sql, params)?;
    // Their facts change with their decision (the warehouse, when the
    // caller maintains it).
    let (cards, counters): (Vec<Vec<u8>>, Vec<i64>) = rows
        .iter()
        .map(|r| (r.get::<_, Vec<u8>>(0), r.get::<_, i64>(1)))
        .unzip();
    if !cards.is_empty() {
        tx.execute(
            "INSERT INTO wh_touched (card_id, counter) SELECT * FROM unnest($1::bytea[], $2::bigint[])
             ON CONFLICT DO NOTHING",
            &[&cards, &counters],
        )?;
    }
    for r in rows {
        if r.get::<_, &str>(2) == "voided" {
            // The decision that allowed it was journaled void by its till,
            // and the card certified it: its points are not explained.
            let evidence = serde_json::json!({
                "seq": r.get::<_, i64>(9),
                "why": "the till journaled this decision void; the card certified it",
                "origin_terminal": r.get::<_, i64>(3),
                "origin_seq": r.get::<_, i64>(4),
            });
            let card: Vec<u8> = r.get(0);
            let counter: i64 = r.get(1);
            raise_on(
                tx,
                "void-contradicted",
                &card[..],
                counter,
                (r.get(5), r.get(6), now),
                &evidence,
            )?;
            voided.push((card, counter));
            continue;
        }
        if r.get::<_, &str>(2) != "orphan" {
            continue;
        }
        // As on SQLite (`matching::evidence`).
        let evidence = serde_json::json!({
            "seq": r.get::<_, i64>(9),
            "why": "no approve decision of the origin till explains the record",
            "origin_terminal": r.get::<_, i64>(3),
            "origin_seq": r.get::<_, i64>(4),
            "type": r.get::<_, &str>(7),
            "points": r.get::<_, i64>(8),
            "held_at_origin": null,
        });
        let card: Vec<u8> = r.get(0);
        raise_on(tx, "orphan", &card, r.get(1), (r.get(5), r.get(6), now), &evidence)?;
    }
    Ok(voided)
}

/// The voids of this batch the card contradicts, as on SQLite: the card's
/// certified record of that very decision is in the books already, so its
/// points are not explained (`orphan`) and `void-contradicted` is raised —
/// once: a record whose match in this transaction met the void raised it
/// already (`voided`). The voids' cards are locked by the caller.
fn contradicted_voids(
    tx: &mut Transaction<'_>,
    v: &Verified,
    voided: &[(Vec<u8>, i64)],
    now: u32,
) -> Result<(), PgError> {
    let terminal = i64::from(v.header.terminal_id);
    let batch_no = i64::from(v.header.batch_no);
    for (seq, e) in &v.records {
        let (EntryKind::Void, Some(card), Some(counter), Some(origin)) = (
            e.kind,
            e.card_id.as_deref().and_then(|c| <[u8; 8]>::from_hex(c).ok()),
            e.card_counter,
            e.origin_seq,
        ) else {
            continue;
        };
        let counter = i64::from(counter);
        let certified = tx
            .query_opt(
                "UPDATE card_transactions SET decision = 'orphan'
                 WHERE card_id = $1 AND counter = $2 AND origin_terminal = $3 AND origin_seq = $4
                 RETURNING counter",
                &[&&card[..], &counter, &terminal, &i64::from(origin)],
            )?
            .is_some();
        if !certified || voided.iter().any(|(c, n)| c[..] == card[..] && *n == counter) {
            continue;
        }
        let evidence = serde_json::json!({
            "seq": seq,
            "why": "the till journaled this decision void; the card certified it",
            "origin_terminal": terminal,
            "origin_seq": origin,
        });
        raise_on(
            tx,
            "void-contradicted",
            &card[..],
            counter,
            (terminal, batch_no, now),
            &evidence,
        )?;
    }
    Ok(())
}

fn exception(
    tx: &mut Transaction<'_>,
    class: &str,
    card: &CardId,
    rec: &LogRecord,
    terminal: i64,
    batch_no: i64,
    now: u32,
) -> Result<(), PgError> {
    let evidence = serde_json::json!({
        "counter": rec.counter, "type": rec.kind.name(), "points": rec.amount,
        "balance_after": rec.balance_after, "certificate": hex::encode_upper(rec.certificate),
    });
    raise_on(
        tx,
        class,
        &card[..],
        i64::from(rec.counter),
        (terminal, batch_no, now),
        &evidence,
    )
}

/// Records an exception with its evidence, of a terminal's batch.
#[allow(clippy::too_many_arguments)]
fn raise(
    tx: &mut Transaction<'_>,
    class: &str,
    card: Option<&[u8]>,
    counter: Option<i64>,
    terminal: i64,
    batch_no: i64,
    evidence: &serde_json::Value,
    now: u32,
) -> Result<(), PgError> {
    raise_at(tx, class, card, counter, Some(terminal), Some(batch_no), evidence, now)
}

/// Records an exception with its evidence; its card, counter, terminal or
/// batch may be none (the aging's gaps name no batch).
#[allow(clippy::too_many_arguments)]
pub(crate) fn raise_at(
    tx: &mut Transaction<'_>,
    class: &str,
    card: Option<&[u8]>,
    counter: Option<i64>,
    terminal: Option<i64>,
    batch_no: Option<i64>,
    evidence: &serde_json::Value,
    now: u32,
) -> Result<(), PgError> {
    tx.execute(
        "INSERT INTO exceptions (class, card_id, counter, terminal_id, batch_no, evidence, at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &class,
            &card,
            &counter,
            &terminal,
            &batch_no,
            &evidence.to_string(),
            &i64::from(now),
        ],
    )?;
    Ok(())
}

/// The points of each approved purchase decision recomputed from the
/// signed policy and campaign file it names, as on SQLite
/// (`tessera_ledger::points`): `points-mismatch` when they differ or name a
/// file the office never registered; when they agree, which campaign or
/// rule gave which points (`decision_points`).
fn check_points(tx: &mut Transaction<'_>, v: &Verified, now: u32) -> Result<(), PgError> {
    let terminal = i64::from(v.header.terminal_id);
    let batch_no = i64::from(v.header.batch_no);
    let mut rules = tessera_ledger::points::Rules::default();
    let mut lines: BTreeMap<(i64, String), i64> = BTreeMap::new();
    let mut problems = Vec::new();
    for (seq, e) in &v.records {
        if e.kind != EntryKind::Decision {
            continue;
        }
        let (problem, quoted) = rules
            .check_with(
                &mut |table, digest| {
                    Ok(tx
                        .query_opt(&format!("SELECT toml FROM {table} WHERE digest = $1"), &[&&digest[..]])
                        .map_err(|e| LedgerError::from(PgError::from(e)))?
                        .map(|r| r.get(0)))
                },
                e,
            )
            .map_err(PgError::Refused)?;
        for (source, points) in quoted {
            *lines.entry((i64::from(*seq), source)).or_default() += points;
        }
        if let Some((why, mut ev)) = problem {
            if !ev.is_object() {
                ev = serde_json::json!({});
            }
            ev["seq"] = serde_json::json!(seq);
            ev["why"] = serde_json::json!(why);
            let card = e.card_id.as_deref().and_then(|c| <[u8; 8]>::from_hex(c).ok());
            problems.push((card, e.card_counter.map(i64::from), ev));
        }
    }
    for (card, counter, ev) in &problems {
        raise(
            tx,
            "points-mismatch",
            card.as_ref().map(|c| &c[..]),
            *counter,
            terminal,
            batch_no,
            ev,
            now,
        )?;
    }
    if !lines.is_empty() {
        let (mut seqs, mut sources, mut points) = (Vec::new(), Vec::new(), Vec::new());
        for ((seq, source), p) in lines {
            seqs.push(seq);
            sources.push(source);
            points.push(p);
        }
        tx.execute(
            "INSERT INTO decision_points (terminal_id, seq, source, points)
             SELECT $1, s, src, p FROM unnest($2::bigint[], $3::text[], $4::bigint[]) AS l(s, src, p)
             ON CONFLICT (terminal_id, seq, source) DO UPDATE SET points = decision_points.points + excluded.points",
            &[&terminal, &seqs, &sources, &points],
        )?;
    }
    Ok(())
}

/// Pairs the issuer adjustments among the records `(cards[i],
/// counters[i])`, posted in this transaction, with what the office issued,
/// as on SQLite: the adjustment of the record's sequence (its reference),
/// same direction and points, applied once — then marked applied (the
/// sync feed stops serving it); a replacement's credit moves the points
/// off the card it replaced (locked by the caller). Otherwise
/// `adjustment-mismatch`.
fn pair_adjustments(
    tx: &mut Transaction<'_>,
    cards: &[Vec<u8>],
    counters: &[i64],
    terminal: i64,
    batch_no: i64,
    now: u32,
) -> Result<(), PgError> {
    let stored = stored_columns("r");
    let rows = tx.query(
        &format!(
            "SELECT r.card_id, r.seq, a.direction, a.points, a.state, a.applied_counter, a.from_card, {stored}
             FROM card_transactions r
             JOIN unnest($1::bytea[], $2::bigint[]) AS k(card_id, counter)
               ON r.card_id = k.card_id AND r.counter = k.counter
             LEFT JOIN adjustments a ON a.card_id = r.card_id AND a.seq = r.reference
             WHERE r.tx_type IN ('issuer-credit', 'issuer-debit')
             ORDER BY r.card_id, r.counter"
        ),
        &[&cards, &counters],
    )?;
    // Applied in this transaction: (card, sequence) → counter.
    let mut applied_now: BTreeMap<(Vec<u8>, i64), i64> = BTreeMap::new();
    for r in rows {
        let card: Vec<u8> = r.get(0);
        let (counter, direction, points, reference): (i64, String, i64, i64) =
            (r.get(7), r.get(8), r.get(9), r.get(14));
        let issued: Option<(String, i64, String, Option<i64>)> =
            r.get::<_, Option<String>>(2).map(|d| (d, r.get(3), r.get(4), r.get(5)));
        let problem = match &issued {
            None => Some((
                "the office never issued this adjustment",
                serde_json::json!({"seq": reference}),
            )),
            Some((d, p, state, applied)) => {
                let applied = applied_now.get(&(card.clone(), reference)).copied().or(*applied);
                let state = if applied_now.contains_key(&(card.clone(), reference)) {
                    "applied"
                } else {
                    state.as_str()
                };
                let ev = serde_json::json!({"seq": reference, "type": d, "points": p, "state": state, "applied_counter": applied});
                if *d != direction || *p != points {
                    Some(("the record is not the adjustment the office issued", ev))
                } else if state == "applied" && applied != Some(counter) {
                    Some(("the adjustment was applied twice", ev))
                } else {
                    None
                }
            }
        };
        if let Some((why, issued)) = problem {
            let evidence = serde_json::json!({
                "seq": r.get::<_, i64>(1),
                "why": why,
                "issued": issued,
                "record": stored_record_json(&r, 7),
            });
            raise_on(
                tx,
                "adjustment-mismatch",
                &card[..],
                counter,
                (terminal, batch_no, now),
                &evidence,
            )?;
            continue;
        }
        tx.execute(
            "UPDATE adjustments SET state = 'applied', applied_counter = $3, applied_at = $4
             WHERE card_id = $1 AND seq = $2",
            &[&card, &reference, &counter, &i64::from(now)],
        )?;
        applied_now.insert((card.clone(), reference), counter);
        // A replacement: the points leave the replaced card's books now.
        if let Some(old) = r.get::<_, Option<Vec<u8>>>(6) {
            let (oh, nh) = (hex::encode_upper(&old), hex::encode_upper(&card));
            tx.execute(
                "UPDATE cards SET shadow_balance = shadow_balance - $2 WHERE card_id = $1",
                &[&old, &points],
            )?;
            tx.execute(
                "INSERT INTO card_postings (card_id, delta, what, other_card, adjustment_seq, posted_at)
                 VALUES ($1, $2, $3, $4, $5, $6), ($4, 0, $7, $1, $5, $6)",
                &[
                    &old,
                    &-points,
                    &format!("moved {points} points to card {nh}"),
                    &card,
                    &reference,
                    &i64::from(now),
                    &format!("received {points} points from card {oh} (adjustment {reference})"),
                ],
            )?;
        }
    }
    Ok(())
}

/// A posted record whose balance does not follow on from its card's
/// previous one.
struct Jolt {
    card: CardId,
    counter: i64,
    /// This batch's record and its sequence (`None`: a pending record
    /// released now, read back from the books).
    record: Option<(LogRecord, u32)>,
    previous: i64,
    delta: i64,
    found: i64,
}

/// Names each balance discontinuity (as on SQLite), keeps the unexplained
/// points in the card's `discrepancy`, flags and hotlists the card.
fn balance_discontinuities(
    tx: &mut Transaction<'_>,
    jolts: &[Jolt],
    terminal: i64,
    batch_no: i64,
    now: u32,
) -> Result<(), PgError> {
    for j in jolts {
        let expected = j.previous + j.delta;
        let (record, seq) = match &j.record {
            Some((rec, seq)) => (record_json(rec), i64::from(*seq)),
            None => {
                let r = tx.query_one(
                    &format!("SELECT seq, {STORED_RECORD} FROM card_transactions WHERE card_id = $1 AND counter = $2"),
                    &[&&j.card[..], &j.counter],
                )?;
                (stored_record_json(&r, 1), r.get(0))
            }
        };
        let evidence = serde_json::json!({
            "seq": seq,
            "action": "hotlisted",
            "previous_balance": j.previous,
            "delta": j.delta,
            "expected": expected,
            "balance_after": j.found,
            "unexplained": j.found - expected,
            "record": record,
        });
        raise_on(
            tx,
            "balance-discontinuity",
            &j.card[..],
            j.counter,
            (terminal, batch_no, now),
            &evidence,
        )?;
        tx.execute(
            "UPDATE cards SET discrepancy = discrepancy + $2, flagged = 1 WHERE card_id = $1",
            &[&&j.card[..], &(j.found - expected)],
        )?;
        // Points the books cannot explain: no till serves the card until
        // the office has looked (docs/settlement.md).
        hotlist_card(tx, &j.card, "balance discontinuity", now)?;
    }
    Ok(())
}

/// Every record posted now, `(cards[i], counters[i])`, of a card the
/// office replaced, as on SQLite: its balance moved to its successor, so
/// whatever it does afterwards (offline, before the hotlist reached the
/// till, or settled late) stays on its own books and is named
/// (`replaced-card-used`). One query for all of them.
fn replaced_cards_used(tx: &mut Transaction<'_>, cards: &[Vec<u8>], counters: &[i64], now: u32) -> Result<(), PgError> {
    let rows = tx.query(
        &format!(
            "SELECT t.card_id, t.terminal_id, t.batch_no, t.seq, t.delta, r.new_card, {}
             FROM unnest($1::bytea[], $2::bigint[]) AS k(card_id, counter)
             JOIN card_replacements r ON r.old_card = k.card_id
             JOIN card_transactions t ON t.card_id = k.card_id AND t.counter = k.counter
             ORDER BY t.card_id, t.counter",
            stored_columns("t")
        ),
        &[&cards, &counters],
    )?;
    for r in rows {
        let card: Vec<u8> = r.get(0);
        let evidence = serde_json::json!({
            "seq": r.get::<_, i64>(3),
            "why": "the card was replaced: its balance moved to the new card",
            "new_card": hex::encode_upper(r.get::<_, Vec<u8>>(5)),
            "delta": r.get::<_, i64>(4),
            "record": stored_record_json(&r, 6),
        });
        let counter: i64 = r.get(6);
        raise_on(
            tx,
            "replaced-card-used",
            &card,
            counter,
            (r.get(1), r.get(2), now),
            &evidence,
        )?;
    }
    Ok(())
}

/// The columns of a stored card record that [`stored_record_json`] reads.
const STORED_RECORD: &str =
    "counter, tx_type, points, balance_after, origin_terminal, origin_seq, card_time, reference, certificate, online";

/// The [`STORED_RECORD`] columns of the table aliased `alias`.
fn stored_columns(alias: &str) -> String {
    STORED_RECORD
        .split(", ")
        .map(|c| format!("{alias}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A stored card record (the [`STORED_RECORD`] columns from `at` on) as
/// `tessera_ledger::record_json` shows it.
fn stored_record_json(r: &postgres::Row, at: usize) -> serde_json::Value {
    let mut v = serde_json::json!({
        "counter": r.get::<_, i64>(at),
        "type": r.get::<_, &str>(at + 1),
        "points": r.get::<_, i64>(at + 2),
        "balance_after": r.get::<_, i64>(at + 3),
        "terminal_id": r.get::<_, i64>(at + 4),
        "terminal_seq": r.get::<_, i64>(at + 5),
        "time": r.get::<_, i64>(at + 6),
        "reference": r.get::<_, i64>(at + 7),
        "certificate": hex::encode_upper(r.get::<_, Vec<u8>>(at + 8)),
    });
    if let (true, serde_json::Value::Object(m)) = (r.get::<_, i64>(at + 9) != 0, &mut v) {
        m.insert("online".into(), serde_json::json!(true));
    }
    v
}

/// Pairs the refunds among the records `(cards[i], counters[i])`, posted
/// in this transaction, with their originals, as on SQLite: the original
/// (the refund's reference) posted on the same card, of the kind the refund
/// reverses, and the refunds of it up to this one within its points;
/// otherwise `refund-mismatch`, or `duplicate-refund` when it was refunded
/// in full already. One query for all of them.
fn pair_refunds(
    tx: &mut Transaction<'_>,
    cards: &[Vec<u8>],
    counters: &[i64],
    terminal: i64,
    batch_no: i64,
    now: u32,
) -> Result<(), PgError> {
    let stored = stored_columns("r");
    let rows = tx.query(
        &format!(
            "SELECT r.card_id, r.seq, o.tx_type, o.points,
                (SELECT COALESCE(sum(e.points), 0)::bigint FROM card_transactions e
                 WHERE e.card_id = r.card_id AND e.reference = r.reference AND e.counter < r.counter
                   AND e.status = 'posted' AND e.tx_type = r.tx_type),
                {stored}
         FROM card_transactions r
         JOIN unnest($1::bytea[], $2::bigint[]) AS k(card_id, counter) ON r.card_id = k.card_id AND r.counter = k.counter
         LEFT JOIN card_transactions o ON o.card_id = r.card_id AND o.counter = r.reference AND o.status = 'posted'
         WHERE r.tx_type IN ('refund-earn', 'refund-redeem')
         ORDER BY r.card_id, r.counter"
        ),
        &[&cards, &counters],
    )?;
    for r in rows {
        let (counter, tx_type, points, reference): (i64, String, i64, i64) = (r.get(5), r.get(6), r.get(7), r.get(12));
        let original: Option<(String, i64)> = r.get::<_, Option<String>>(2).map(|k| (k, r.get(3)));
        let earlier: i64 = r.get(4);
        let reverses = if tx_type == "refund-earn" { "earn" } else { "redeem" };
        let problem = match &original {
            None => Some(("refund-mismatch", "the original is not in the books")),
            Some((kind, _)) if kind != reverses => Some(("refund-mismatch", "the original is of another kind")),
            Some((_, p)) if earlier >= *p => Some(("duplicate-refund", "the original was refunded in full already")),
            Some((_, p)) if earlier + points > *p => {
                Some(("refund-mismatch", "the refunds exceed the original's points"))
            }
            Some(_) => None,
        };
        let Some((class, why)) = problem else { continue };
        let record = stored_record_json(&r, 5);
        let evidence = serde_json::json!({
            "seq": r.get::<_, i64>(1),
            "why": why,
            "original": original.map(|(kind, p)| serde_json::json!({"counter": reference, "type": kind, "points": p})),
            "refunded_before": earlier,
            "record": record,
        });
        let card: Vec<u8> = r.get(0);
        raise_on(tx, class, &card[..], counter, (terminal, batch_no, now), &evidence)?;
    }
    Ok(())
}

/// Records an exception about one card record of a batch (`at`: the
/// batch's terminal and number, and the time).
pub(crate) fn raise_on(
    tx: &mut Transaction<'_>,
    class: &str,
    card: &[u8],
    counter: i64,
    at: (i64, i64, u32),
    evidence: &serde_json::Value,
) -> Result<(), PgError> {
    let (terminal, batch_no, now) = at;
    raise(tx, class, Some(card), Some(counter), terminal, batch_no, evidence, now)
}

/// Puts a card on the hotlist, moving the published version on when it
/// was not there; whether it was not (the SQLite ledger's SQL,
/// `books::hotlist_insert_in`).
pub(crate) fn hotlist_card(tx: &mut Transaction<'_>, card: &CardId, reason: &str, now: u32) -> Result<bool, PgError> {
    tessera_ledger::books::hotlist_insert_in(&crate::db::PgDb::new(tx), card, reason, now).map_err(PgError::Books)
}
