//! The posting core on PostgreSQL: batches in order per terminal, each
//! card record posted once, in counter order, against its card's shadow
//! balance — correct when several office servers post at once.
//!
//! This is the part of ingestion whose correctness depends on the
//! database's concurrency control; it is written and raced here first
//! (`tests/race.rs`). The ledger's other checks at posting — matching each
//! record to its decision, refunds with their originals, the points, the
//! approvals, online authorizations, the warehouse — are not ported yet:
//! records posted here stay `decision = 'awaiting'`, and the SQLite ledger
//! remains the one `office serve` runs.
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

use std::collections::BTreeMap;

use postgres::{Client, Transaction};
use tessera_ledger::LedgerKeys;
use tessera_protocol::messages::{CardId, LogRecord};
use tessera_settlement::batch::{BatchReader, Header};
use tessera_settlement::record::{Entry, EntryKind};

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

/// One batch's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The batch's status.
    pub status: Status,
    /// Card records posted (this batch's, and pending ones it released).
    pub posted: u64,
    /// Card records that were copies of posted ones.
    pub duplicates: u64,
    /// Card records held for an earlier counter.
    pub pending: u64,
    /// Conflicting card records (exception raised, card hotlisted).
    pub conflicts: u64,
}

/// A verified batch: its header and records.
struct Verified {
    header: Header,
    records: Vec<(u32, Entry)>,
}

fn unhex32(s: &str) -> Result<Vec<u8>, PgError> {
    let v = hex::decode(s).map_err(|_| PgError::Refused("a chain head is 64 hex digits".into()))?;
    if v.len() != 32 {
        return Err(PgError::Refused("a chain head is 32 bytes".into()));
    }
    Ok(v)
}

fn verify(keys: &LedgerKeys, batch: &[u8]) -> Result<Verified, PgError> {
    let bad = |e: tessera_settlement::batch::BatchError| PgError::Refused(e.to_string());
    let mut reader = BatchReader::open(batch).map_err(bad)?;
    let terminal = reader.header().terminal_id;
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
    client: Client,
    keys: LedgerKeys,
}

impl PgLedger {
    /// Connects to `url`, migrating it ([`crate::migrate`]).
    ///
    /// # Errors
    /// As [`crate::connect`].
    pub fn open(url: &str, keys: LedgerKeys) -> Result<Self, PgError> {
        Ok(Self {
            client: crate::connect(url)?,
            keys,
        })
    }

    /// The connection, for reading the books.
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    /// Registers a terminal (idempotent).
    ///
    /// # Errors
    /// [`PgError::Postgres`].
    pub fn register_terminal(&mut self, terminal_id: u32, now: u32) -> Result<(), PgError> {
        self.client.execute(
            "INSERT INTO terminals (terminal_id, registered_at, last_head) VALUES ($1, $2, $3)
             ON CONFLICT (terminal_id) DO NOTHING",
            &[&i64::from(terminal_id), &i64::from(now), &vec![0u8; 32]],
        )?;
        Ok(())
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
        let v = verify(&self.keys, batch)?;
        let mut tx = self.client.transaction()?;
        let out = post_batch(&mut tx, &self.keys, v, now)?;
        tx.commit()?;
        Ok(out)
    }
}

fn post_batch(tx: &mut Transaction<'_>, keys: &LedgerKeys, v: Verified, now: u32) -> Result<Outcome, PgError> {
    let h = &v.header;
    let terminal = i64::from(h.terminal_id);
    let row = tx.query_opt(
        "SELECT revoked_at, last_batch_no, last_seq, last_head FROM terminals WHERE terminal_id = $1 FOR UPDATE",
        &[&terminal],
    )?;
    let Some(row) = row else {
        return Err(PgError::Refused(format!("unknown terminal {}", h.terminal_id)));
    };
    if row.get::<_, Option<i64>>(0).is_some() {
        return Err(PgError::Refused(format!("terminal {} is revoked", h.terminal_id)));
    }
    let (last_batch, last_seq, last_head): (i64, i64, Vec<u8>) = (row.get(1), row.get(2), row.get(3));
    let batch_no = i64::from(h.batch_no);
    let head = unhex32(&h.head)?;
    if batch_no <= last_batch {
        let posted: Option<Vec<u8>> = tx
            .query_opt(
                "SELECT head FROM batches WHERE terminal_id = $1 AND batch_no = $2",
                &[&terminal, &batch_no],
            )?
            .map(|r| r.get(0));
        return match posted {
            Some(p) if p == head => Ok(Outcome {
                status: Status::Duplicate,
                posted: 0,
                duplicates: 0,
                pending: 0,
                conflicts: 0,
            }),
            _ => Err(PgError::Refused(format!(
                "batch {} of terminal {} conflicts with the posted one",
                h.batch_no, h.terminal_id
            ))),
        };
    }
    let prev = unhex32(&h.prev_head)?;
    if batch_no > last_batch + 1 {
        // Held until its predecessor arrives (a re-send is a duplicate).
        let inserted = tx.execute(
            "INSERT INTO batches (terminal_id, batch_no, status, seq_from, seq_to, record_count, prev_head, head,
                 totals, sealed_at, received_at)
             VALUES ($1, $2, 'held', $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING",
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
        return Ok(Outcome {
            status: Status::Held,
            posted: 0,
            duplicates: 0,
            pending: 0,
            conflicts: 0,
        });
    }
    if i64::from(h.seq_from) != last_seq + 1 || prev != last_head {
        return Err(PgError::Refused(format!(
            "batch {} of terminal {} does not continue its chain",
            h.batch_no, h.terminal_id
        )));
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
    cards.sort_unstable();
    cards.dedup();
    for c in &cards {
        tx.execute(
            "INSERT INTO cards (card_id) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&&c[..]],
        )?;
        tx.query_one("SELECT 1 FROM cards WHERE card_id = $1 FOR UPDATE", &[&&c[..]])?;
    }
    let mut out = Outcome {
        status: Status::Posted,
        posted: 0,
        duplicates: 0,
        pending: 0,
        conflicts: 0,
    };
    for (k, b) in chain.iter().enumerate() {
        if k > 0 {
            let (p, h) = (&chain[k - 1].header, &b.header);
            if h.seq_from != p.seq_to.wrapping_add(1) || h.prev_head != p.head {
                // A held batch that does not continue the chain stays out.
                return Err(PgError::Refused(format!(
                    "held batch {} of terminal {} does not continue its chain",
                    h.batch_no, h.terminal_id
                )));
            }
        }
        let o = post_one(tx, keys, b, now)?;
        out.posted += o.posted;
        out.duplicates += o.duplicates;
        out.pending += o.pending;
        out.conflicts += o.conflicts;
    }
    Ok(out)
}

/// Posts one batch that continues its terminal's chain (its cards locked).
fn post_one(tx: &mut Transaction<'_>, keys: &LedgerKeys, v: &Verified, now: u32) -> Result<Outcome, PgError> {
    let h = &v.header;
    let terminal = i64::from(h.terminal_id);
    let batch_no = i64::from(h.batch_no);
    let head = unhex32(&h.head)?;
    let prev = unhex32(&h.prev_head)?;
    let out = post_records(tx, keys, v, now)?;
    tx.execute(
        "INSERT INTO batches (terminal_id, batch_no, status, seq_from, seq_to, record_count, prev_head, head,
             totals, sealed_at, received_at, posted_at)
         VALUES ($1, $2, 'posted', $3, $4, $5, $6, $7, $8, $9, $10, $10)
         ON CONFLICT (terminal_id, batch_no) DO UPDATE SET status = 'posted', posted_at = EXCLUDED.posted_at",
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
        ],
    )?;
    tx.execute(
        "UPDATE terminals SET last_batch_no = $1, last_seq = $2, last_head = $3 WHERE terminal_id = $4",
        &[&batch_no, &i64::from(h.seq_to), &head, &terminal],
    )?;
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
                .map_err(|e| PgError::Refused(format!("a held record: {e}")))?;
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

/// Posts the batch's card records, card by card in card id order, each
/// card's in counter order (module docs).
fn post_records(tx: &mut Transaction<'_>, keys: &LedgerKeys, v: &Verified, now: u32) -> Result<Outcome, PgError> {
    let terminal = i64::from(v.header.terminal_id);
    let batch_no = i64::from(v.header.batch_no);
    let mut by_card: BTreeMap<CardId, Vec<(u32, LogRecord, EntryKind)>> = BTreeMap::new();
    for (seq, e) in &v.records {
        tx.execute(
            "INSERT INTO terminal_records (terminal_id, seq, batch_no, kind, time, card_id, card_counter, tx_type,
                 verdict, reason, points, purchase_minor)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            &[
                &terminal,
                &i64::from(*seq),
                &batch_no,
                &serde_json::to_value(e.kind)
                    .ok()
                    .and_then(|k| k.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                &i64::from(e.time),
                &e.card_id.as_deref().and_then(|c| hex::decode(c).ok()),
                &e.card_counter.map(i64::from),
                &e.tx_type,
                &e.verdict
                    .and_then(|k| serde_json::to_value(k).ok()?.as_str().map(str::to_owned)),
                &e.reason,
                &e.points.map(i64::from),
                &e.purchase_minor.and_then(|m| i64::try_from(m).ok()),
            ],
        )?;
        if let Some((card, rec)) = card_of(e) {
            by_card.entry(card).or_default().push((*seq, rec, e.kind));
        }
    }
    let verifier = keys.certificate_verifier();
    let mut out = Outcome {
        status: Status::Posted,
        posted: 0,
        duplicates: 0,
        pending: 0,
        conflicts: 0,
    };
    for (card, mut recs) in by_card {
        recs.sort_by_key(|(_, r, _)| r.counter);
        let cid = &card[..];
        tx.execute(
            "INSERT INTO cards (card_id) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&cid],
        )?;
        let row = tx.query_one(
            "SELECT key_version, last_counter, shadow_balance FROM cards WHERE card_id = $1 FOR UPDATE",
            &[&cid],
        )?;
        let key_version = u8::try_from(row.get::<_, i64>(0)).unwrap_or(1);
        let (mut last, mut balance): (i64, i64) = (row.get(1), row.get(2));
        for (seq, rec, kind) in recs {
            if verifier.verify(&card, key_version, &rec).is_err() {
                exception(tx, "bad-certificate", &card, &rec, terminal, batch_no, now)?;
                continue;
            }
            let counter = i64::from(rec.counter);
            let existing = tx.query_opt(
                "SELECT certificate, tx_type, points, balance_after FROM card_transactions
                 WHERE card_id = $1 AND counter = $2",
                &[&cid, &counter],
            )?;
            if let Some(x) = existing {
                let same = x.get::<_, Vec<u8>>(0) == rec.certificate
                    && x.get::<_, String>(1) == rec.kind.name()
                    && x.get::<_, i64>(2) == i64::from(rec.amount)
                    && x.get::<_, i64>(3) == i64::from(rec.balance_after);
                if same {
                    tx.execute(
                        "INSERT INTO duplicate_copies (card_id, counter, terminal_id, batch_no, seq)
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                        &[&cid, &counter, &terminal, &batch_no, &i64::from(seq)],
                    )?;
                    out.duplicates += 1;
                } else {
                    exception(tx, "conflict", &card, &rec, terminal, batch_no, now)?;
                    tx.execute(
                        "INSERT INTO hotlist (card_id, reason, at) VALUES ($1, 'clone', $2) ON CONFLICT DO NOTHING",
                        &[&cid, &i64::from(now)],
                    )?;
                    out.conflicts += 1;
                }
                continue;
            }
            let post = counter == last + 1;
            insert_record(tx, &card, &rec, kind, terminal, batch_no, seq, post, now)?;
            if post {
                last = counter;
                balance += rec.kind.delta(rec.amount);
                out.posted += 1;
                // Pending records that now follow on.
                loop {
                    let next = tx.query_opt(
                        "UPDATE card_transactions SET status = 'posted', posted_at = $3
                         WHERE card_id = $1 AND counter = $2 AND status = 'pending' RETURNING delta",
                        &[&cid, &(last + 1), &i64::from(now)],
                    )?;
                    let Some(n) = next else { break };
                    last += 1;
                    balance += n.get::<_, i64>(0);
                    out.posted += 1;
                    out.pending = out.pending.saturating_sub(1);
                }
            } else {
                out.pending += 1;
            }
        }
        let pending: i64 = tx
            .query_one(
                "SELECT count(*) FROM card_transactions WHERE card_id = $1 AND status = 'pending'",
                &[&cid],
            )?
            .get(0);
        let card_balance: Option<i64> = tx
            .query_opt(
                "SELECT balance_after FROM card_transactions WHERE card_id = $1 AND counter = $2",
                &[&cid, &last],
            )?
            .map(|r| r.get(0));
        tx.execute(
            "UPDATE cards SET last_counter = $2, shadow_balance = $3, card_balance = $4, pending = $5
             WHERE card_id = $1",
            &[&cid, &last, &balance, &card_balance.unwrap_or(0), &pending],
        )?;
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn insert_record(
    tx: &mut Transaction<'_>,
    card: &CardId,
    rec: &LogRecord,
    kind: EntryKind,
    terminal: i64,
    batch_no: i64,
    seq: u32,
    post: bool,
    now: u32,
) -> Result<(), PgError> {
    tx.execute(
        "INSERT INTO card_transactions (card_id, counter, status, tx_type, points, delta, balance_after,
             origin_terminal, origin_seq, card_time, reference, certificate, kind, terminal_id, batch_no, seq,
             received_at, posted_at, online)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)",
        &[
            &&card[..],
            &i64::from(rec.counter),
            &if post { "posted" } else { "pending" },
            &rec.kind.name(),
            &i64::from(rec.amount),
            &rec.kind.delta(rec.amount),
            &i64::from(rec.balance_after),
            &i64::from(rec.terminal_id),
            &i64::from(rec.terminal_seq),
            &i64::from(rec.time),
            &i64::from(rec.reference),
            &&rec.certificate[..],
            &if kind == EntryKind::Recovered {
                "recovered"
            } else {
                "completion"
            },
            &terminal,
            &batch_no,
            &i64::from(seq),
            &i64::from(now),
            &post.then_some(i64::from(now)),
            &i64::from(rec.online),
        ],
    )?;
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
    tx.execute(
        "INSERT INTO exceptions (class, card_id, counter, terminal_id, batch_no, evidence, at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &class,
            &&card[..],
            &i64::from(rec.counter),
            &terminal,
            &batch_no,
            &evidence.to_string(),
            &i64::from(now),
        ],
    )?;
    Ok(())
}
