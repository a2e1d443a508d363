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
use std::io::Write as _;

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
    // Created when new, then locked, both in card id order (the lock node
    // sits above the sort: rows are locked in the order they are returned).
    let ids: Vec<Vec<u8>> = cards.iter().map(|c| c.to_vec()).collect();
    tx.execute(
        "INSERT INTO cards (card_id) SELECT c FROM unnest($1::bytea[]) AS c ORDER BY c ON CONFLICT DO NOTHING",
        &[&ids],
    )?;
    tx.query(
        "SELECT card_id FROM cards WHERE card_id = ANY($1) ORDER BY card_id FOR UPDATE",
        &[&ids],
    )?;
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

/// Posts the batch's records, set-based: the decisions and the card records
/// go in with `COPY` (the card records into a staging table), then a few
/// statements sort them out — copies of posted records, conflicting ones,
/// new ones — and post, per card, the run of counters that follows on from
/// its last posted one (the batch's new records and the pending ones they
/// complete), moving its shadow balance by their sum. The cards are locked
/// already, in card id order.
fn post_records(tx: &mut Transaction<'_>, keys: &LedgerKeys, v: &Verified, now: u32) -> Result<Outcome, PgError> {
    let terminal = i64::from(v.header.terminal_id);
    let batch_no = i64::from(v.header.batch_no);
    let mut out = Outcome {
        status: Status::Posted,
        posted: 0,
        duplicates: 0,
        pending: 0,
        conflicts: 0,
    };
    // The journal's records.
    let mut lines = Vec::new();
    for (seq, e) in &v.records {
        let kind = serde_json::to_value(e.kind)
            .ok()
            .and_then(|k| k.as_str().map(str::to_owned))
            .unwrap_or_default();
        let verdict = e.verdict.and_then(|k| serde_json::to_value(k).ok()?.as_str().map(str::to_owned));
        let card = e.card_id.as_deref().and_then(|c| hex::decode(c).ok()).map(|c| bytea(&c));
        let cols: [Option<String>; 12] = [
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
             reason, points, purchase_minor) FROM STDIN",
    )?;
    w.write_all(&lines).map_err(|e| PgError::Copy(e.to_string()))?;
    w.finish()?;

    // The card records, their certificates checked under each card's key
    // version.
    let mut recs: Vec<(CardId, LogRecord, EntryKind, u32)> = v
        .records
        .iter()
        .filter_map(|(seq, e)| card_of(e).map(|(c, r)| (c, r, e.kind, *seq)))
        .collect();
    if recs.is_empty() {
        return Ok(out);
    }
    let ids: Vec<Vec<u8>> = {
        let mut ids: Vec<Vec<u8>> = recs.iter().map(|(c, ..)| c.to_vec()).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    };
    let versions: BTreeMap<Vec<u8>, u8> = tx
        .query("SELECT card_id, key_version FROM cards WHERE card_id = ANY($1)", &[&ids])?
        .iter()
        .map(|r| (r.get::<_, Vec<u8>>(0), u8::try_from(r.get::<_, i64>(1)).unwrap_or(1)))
        .collect();
    let verifier = keys.certificate_verifier();
    let mut bad = Vec::new();
    recs.retain(|(card, rec, ..)| {
        let kv = versions.get(&card[..]).copied().unwrap_or(1);
        let ok = verifier.verify(card, kv, rec).is_ok();
        if !ok {
            bad.push((*card, rec.clone()));
        }
        ok
    });
    for (card, rec) in &bad {
        exception(tx, "bad-certificate", card, rec, terminal, batch_no, now)?;
    }
    tx.batch_execute(
        "CREATE TEMP TABLE IF NOT EXISTS stage (
             card_id bytea NOT NULL, counter bigint NOT NULL, tx_type text NOT NULL, points bigint NOT NULL,
             delta bigint NOT NULL, balance_after bigint NOT NULL, origin_terminal bigint NOT NULL,
             origin_seq bigint NOT NULL, card_time bigint NOT NULL, reference bigint NOT NULL,
             certificate bytea NOT NULL, kind text NOT NULL, seq bigint NOT NULL, online bigint NOT NULL)
             ON COMMIT DELETE ROWS;
         TRUNCATE stage",
    )?;
    let mut lines = Vec::new();
    for (card, r, kind, seq) in &recs {
        writeln!(
            lines,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            bytea(card),
            r.counter,
            r.kind.name(),
            r.amount,
            r.kind.delta(r.amount),
            r.balance_after,
            r.terminal_id,
            r.terminal_seq,
            r.time,
            r.reference,
            bytea(&r.certificate),
            if *kind == EntryKind::Recovered { "recovered" } else { "completion" },
            seq,
            u8::from(r.online),
        )
        .map_err(|e| PgError::Copy(e.to_string()))?;
    }
    let mut w = tx.copy_in(
        "COPY stage (card_id, counter, tx_type, points, delta, balance_after, origin_terminal, origin_seq,
             card_time, reference, certificate, kind, seq, online) FROM STDIN",
    )?;
    w.write_all(&lines).map_err(|e| PgError::Copy(e.to_string()))?;
    w.finish()?;

    // Copies of posted records (same card, counter and content).
    out.duplicates = tx.execute(
        "INSERT INTO duplicate_copies (card_id, counter, terminal_id, batch_no, seq)
         SELECT s.card_id, s.counter, $1, $2, MIN(s.seq) FROM stage s
         JOIN card_transactions t ON t.card_id = s.card_id AND t.counter = s.counter
         WHERE t.certificate = s.certificate AND t.tx_type = s.tx_type AND t.points = s.points
           AND t.balance_after = s.balance_after
         GROUP BY s.card_id, s.counter
         ON CONFLICT DO NOTHING",
        &[&terminal, &batch_no],
    )?;
    // Another record under a posted counter: two chips hold the card's keys.
    let conflicts = tx.query(
        "SELECT DISTINCT ON (s.card_id, s.counter) s.card_id, s.counter, s.tx_type, s.points, s.balance_after,
                s.certificate
         FROM stage s JOIN card_transactions t ON t.card_id = s.card_id AND t.counter = s.counter
         WHERE NOT (t.certificate = s.certificate AND t.tx_type = s.tx_type AND t.points = s.points
                    AND t.balance_after = s.balance_after)
         ORDER BY s.card_id, s.counter",
        &[],
    )?;
    for c in &conflicts {
        let evidence = serde_json::json!({
            "counter": c.get::<_, i64>(1), "type": c.get::<_, String>(2), "points": c.get::<_, i64>(3),
            "balance_after": c.get::<_, i64>(4), "certificate": hex::encode_upper(c.get::<_, Vec<u8>>(5)),
        });
        let card: Vec<u8> = c.get(0);
        tx.execute(
            "INSERT INTO exceptions (class, card_id, counter, terminal_id, batch_no, evidence, at)
             VALUES ('conflict', $1, $2, $3, $4, $5, $6)",
            &[&card, &c.get::<_, i64>(1), &terminal, &batch_no, &evidence.to_string(), &i64::from(now)],
        )?;
        tx.execute(
            "INSERT INTO hotlist (card_id, reason, at) VALUES ($1, 'clone', $2) ON CONFLICT DO NOTHING",
            &[&card, &i64::from(now)],
        )?;
    }
    out.conflicts = conflicts.len() as u64;
    // New records, pending until the run below posts them.
    tx.execute(
        "INSERT INTO card_transactions (card_id, counter, status, tx_type, points, delta, balance_after,
             origin_terminal, origin_seq, card_time, reference, certificate, kind, terminal_id, batch_no, seq,
             received_at, online)
         SELECT DISTINCT ON (card_id, counter) card_id, counter, 'pending', tx_type, points, delta, balance_after,
                origin_terminal, origin_seq, card_time, reference, certificate, kind, $1, $2, seq, $3, online
         FROM stage s
         WHERE NOT EXISTS (SELECT 1 FROM card_transactions t WHERE t.card_id = s.card_id AND t.counter = s.counter)
         ORDER BY card_id, counter, seq",
        &[&terminal, &batch_no, &i64::from(now)],
    )?;
    // Per card, the run of pending counters that follows on from its last
    // posted one: counter − (its rank among the card's pending) = last.
    let posted = tx.query(
        "WITH p AS (
             SELECT t.card_id, t.counter, k.last_counter,
                    t.counter - row_number() OVER (PARTITION BY t.card_id ORDER BY t.counter) AS island
             FROM card_transactions t JOIN cards k ON k.card_id = t.card_id
             WHERE t.status = 'pending' AND t.card_id = ANY($1)),
         run AS (SELECT card_id, counter FROM p WHERE island = last_counter),
         done AS (
             UPDATE card_transactions t SET status = 'posted', posted_at = $2
             FROM run WHERE t.card_id = run.card_id AND t.counter = run.counter
             RETURNING t.card_id, t.counter, t.delta, t.balance_after),
         agg AS (
             SELECT card_id, COUNT(*) AS n, MAX(counter) AS last, SUM(delta)::bigint AS moved,
                    (ARRAY_AGG(balance_after ORDER BY counter DESC))[1] AS balance
             FROM done GROUP BY card_id)
         UPDATE cards k SET last_counter = agg.last, shadow_balance = k.shadow_balance + agg.moved,
                card_balance = agg.balance
         FROM agg WHERE k.card_id = agg.card_id
         RETURNING agg.n",
        &[&ids, &i64::from(now)],
    )?;
    out.posted = posted.iter().map(|r| u64::try_from(r.get::<_, i64>(0)).unwrap_or(0)).sum();
    tx.execute(
        "UPDATE cards k SET pending = (SELECT count(*) FROM card_transactions t
                                       WHERE t.card_id = k.card_id AND t.status = 'pending')
         WHERE k.card_id = ANY($1)",
        &[&ids],
    )?;
    let still: i64 = tx
        .query_one(
            "SELECT count(*) FROM card_transactions WHERE terminal_id = $1 AND batch_no = $2 AND status = 'pending'",
            &[&terminal, &batch_no],
        )?
        .get(0);
    out.pending = u64::try_from(still).unwrap_or(0);
    Ok(out)
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
