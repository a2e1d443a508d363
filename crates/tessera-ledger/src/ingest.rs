//! Ingestion of one settlement batch (`docs/settlement.md`, "The ledger",
//! steps 1–4).
//!
//! The batch is streamed through [`BatchReader`] inside one SQLite
//! transaction. In the usual case (the next batch of the terminal) every
//! record is posted as it is read; the transaction commits only after
//! [`BatchReader::finish`] has verified the chain head and the MAC, so a
//! forged, cut or broken batch — or a crash at any point — leaves nothing.
//! Memory stays flat: records are never collected, and the per-card state
//! kept while posting is a bounded write-back cache.

use std::collections::HashMap;
use std::io::BufRead;

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{json, Value};
use tessera_crypto::cert::certificate;
use tessera_crypto::{ct_eq, Key};
use tessera_protocol::messages::{CardId, LogRecord, TxKind};
use tessera_settlement::batch::{Ack, AckStatus, BatchError, BatchReader, Header};
use tessera_settlement::record::{tx_kind, Entry, EntryKind, Verdict};

use tessera_rules::display::Zone;

use crate::error::from_batch;
use crate::matching;
use crate::{hotlist_insert, raise, Exception, ExceptionClass, IngestOutcome, IngestReport, LedgerError, LedgerKeys};

/// Exceptions listed in one [`IngestReport`] (all are stored).
const REPORTED_EXCEPTIONS: usize = 1_000;
/// Cards whose state is cached while posting one batch; the cache is
/// written back and emptied when full.
const CARD_CACHE: usize = 65_536;

/// What to do with the records of a batch while reading it.
enum Mode {
    /// The next batch of the terminal: post.
    Post,
    /// An earlier batch is missing: keep the verified records, held.
    Hold,
    /// Only verify, then answer from what is already known.
    Verify(Check),
}

/// What a verify-only read ends with.
enum Check {
    /// A batch of this number was received before (status, head).
    Existing(String, Vec<u8>),
    /// The batch does not continue the terminal's last posted batch.
    Discontinuous(Value),
}

/// A refusal, with the exception it records (in its own transaction,
/// after the batch's transaction was rolled back).
struct Refused {
    err: LedgerError,
    exception: Option<(ExceptionClass, Value)>,
}

impl From<LedgerError> for Refused {
    fn from(err: LedgerError) -> Self {
        Self { err, exception: None }
    }
}

impl From<rusqlite::Error> for Refused {
    fn from(e: rusqlite::Error) -> Self {
        LedgerError::from(e).into()
    }
}

fn unhex32(s: &str) -> Result<Vec<u8>, LedgerError> {
    let v = hex::decode(s).map_err(|_| LedgerError::Malformed("head is not hex".into()))?;
    if v.len() != 32 {
        return Err(LedgerError::Malformed("head is not 32 bytes".into()));
    }
    Ok(v)
}

fn batch_evidence(h: &Header) -> Value {
    json!({
        "batch_no": h.batch_no,
        "seq_from": h.seq_from,
        "seq_to": h.seq_to,
        "record_count": h.record_count,
        "prev_head": h.prev_head.to_lowercase(),
        "head": h.head.to_lowercase(),
        "sealed_at": h.sealed_at,
    })
}

fn refused_by_reader(h: &Header, e: BatchError) -> Refused {
    match e {
        BatchError::BrokenChain { seq, why } => {
            let mut ev = batch_evidence(h);
            ev["seq"] = json!(seq);
            ev["why"] = json!(why);
            Refused {
                err: LedgerError::BrokenChain {
                    terminal_id: h.terminal_id,
                    seq,
                    why,
                },
                exception: Some((ExceptionClass::BrokenChain, ev)),
            }
        }
        e => from_batch(h.terminal_id, e).into(),
    }
}

/// One record as read and chain-checked, with what posting needs parsed
/// ahead (so that, with [`ingest_send`], it is done on the reading thread).
pub(crate) struct Read {
    seq: u32,
    entry: Entry,
    /// Card transactions: the card, when the entry names one.
    card: Option<CardId>,
    /// Card transactions: the card's log record, when the entry is complete.
    record: Option<LogRecord>,
    /// The certificate checked ahead under this key version, and the
    /// verdict. Used only if the card's key version is that one; posting
    /// checks it itself otherwise.
    checked: Option<(u8, Result<(), &'static str>)>,
}

impl Read {
    fn new(seq: u32, entry: Entry) -> Self {
        let (card, record) = if matches!(entry.kind, EntryKind::Completion | EntryKind::Recovered) {
            (entry.card_id.as_deref().and_then(parse_card), entry.card_record())
        } else {
            (None, None)
        };
        Self {
            seq,
            entry,
            card,
            record,
            checked: None,
        }
    }
}

/// What a record source hands each record to.
type Each<'a> = &'a mut dyn FnMut(Read) -> Result<(), LedgerError>;

/// Reads every record, handing each to `each`, then checks head and MAC.
fn read_all<R: BufRead>(mut reader: BatchReader<R>, key: &Key, each: Each<'_>) -> Result<Header, Refused> {
    let header = reader.header().clone();
    loop {
        match reader.next_record() {
            Ok(Some(r)) => each(Read::new(r.seq, r.entry))?,
            Ok(None) => break,
            Err(e) => return Err(refused_by_reader(&header, e)),
        }
    }
    reader.finish(key).map_err(|e| refused_by_reader(&header, e))
}

/// Records per message from the reading thread.
const CHUNK: usize = 256;
/// Messages in flight: at most `CHUNK * (IN_FLIGHT + 2)` records are held
/// between the threads, whatever the batch size.
const IN_FLIGHT: usize = 8;

/// From the reading thread to the posting one.
enum Message {
    Records(Vec<Read>),
    /// The reader refused the batch; nothing follows.
    Failed(BatchError),
    /// Every record was read, the head and the MAC verified.
    Done(Header),
}

/// As [`read_all`], with the reading (lines, JSON, the hash chain, and —
/// when `certify`, for posting — the certificates under the key version
/// [`CertKeys::likely_version`]) on a second thread, a bounded channel
/// apart. The header is handed back only
/// once the reading thread has verified the chain head and the MAC.
fn read_all_parallel<R: BufRead + Send>(
    mut reader: BatchReader<R>,
    key: &Key,
    keys: &LedgerKeys,
    certify: bool,
    each: Each<'_>,
) -> Result<Header, Refused> {
    let header = reader.header().clone();
    let (tx, rx) = std::sync::mpsc::sync_channel::<Message>(IN_FLIGHT);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut certs = CertKeys::new(keys);
            let version = certs.likely_version();
            let mut chunk = Vec::with_capacity(CHUNK);
            loop {
                match reader.next_record() {
                    Ok(Some(r)) => {
                        let mut read = Read::new(r.seq, r.entry);
                        if let (true, Some(card), Some(rec)) = (certify, &read.card, &read.record) {
                            read.checked = Some((version, certs.check(card, version, rec)));
                        }
                        chunk.push(read);
                        if chunk.len() == CHUNK {
                            let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
                            if tx.send(Message::Records(full)).is_err() {
                                return; // the posting side stopped
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let _ = tx.send(Message::Failed(e));
                        return;
                    }
                }
            }
            if !chunk.is_empty() && tx.send(Message::Records(chunk)).is_err() {
                return;
            }
            let _ = tx.send(match reader.finish(key) {
                Ok(h) => Message::Done(h),
                Err(e) => Message::Failed(e),
            });
        });
        // Returning (on error too) drops `rx`: the reading thread's next
        // send fails and it stops.
        loop {
            match rx.recv() {
                Ok(Message::Records(records)) => {
                    for r in records {
                        each(r)?;
                    }
                }
                Ok(Message::Failed(e)) => return Err(refused_by_reader(&header, e)),
                Ok(Message::Done(h)) => return Ok(h),
                // The reading thread panicked; the scope re-raises it.
                Err(_) => return Err(LedgerError::Storage("the batch reader stopped".into()).into()),
            }
        }
    })
}

/// Diversified certificate keys of the cards seen (bounded).
struct CertKeys<'k> {
    keys: &'k LedgerKeys,
    cache: HashMap<(CardId, u8), Key>,
}

impl<'k> CertKeys<'k> {
    fn new(keys: &'k LedgerKeys) -> Self {
        Self {
            keys,
            cache: HashMap::new(),
        }
    }

    /// The key version a card most likely has, and the one an
    /// unregistered card is checked with: the newest the ledger holds a
    /// certificate master of. (Only a guess to check ahead with: a
    /// registered card of another version is checked again when posted.)
    fn likely_version(&self) -> u8 {
        self.keys.newest_cert_version().unwrap_or(1)
    }

    /// Checks a record's certificate (spec §5.7) with the card's
    /// certificate key, diversified once per card and batch.
    /// Checks a certificate under each certificate master the ledger holds
    /// whose version `accept` allows, newest first; returns the version that
    /// verifies.
    fn check_any(&mut self, card: &CardId, rec: &LogRecord, accept: impl Fn(u8) -> bool) -> Result<u8, &'static str> {
        let versions: Vec<u8> = self.keys.cert_versions().rev().filter(|v| accept(*v)).collect();
        for v in versions {
            if self.check(card, v, rec).is_ok() {
                return Ok(v);
            }
        }
        Err("certificate does not verify")
    }

    fn check(&mut self, card: &CardId, key_version: u8, rec: &LogRecord) -> Result<(), &'static str> {
        if !self.cache.contains_key(&(*card, key_version)) {
            if self.cache.len() >= CARD_CACHE {
                self.cache.clear();
            }
            let key = self
                .keys
                .card_cert_key(card, key_version)
                .ok_or("no certificate master of this key version")?;
            self.cache.insert((*card, key_version), key);
        }
        let key = self.cache.get(&(*card, key_version)).ok_or("no certificate key")?;
        if ct_eq(&certificate(key, card, rec), &rec.certificate) {
            Ok(())
        } else {
            Err("certificate does not verify")
        }
    }
}

/// Records a refusal's exception in its own small transaction.
fn raise_alone(
    conn: &mut Connection,
    class: ExceptionClass,
    h: &Header,
    evidence: Value,
    now: u32,
) -> Result<(), LedgerError> {
    let tx = conn.savepoint()?;
    raise(
        &tx,
        class,
        None,
        None,
        Some(h.terminal_id),
        Some(h.batch_no),
        evidence,
        now,
    )?;
    tx.commit()?;
    Ok(())
}

/// See [`crate::Ledger::ingest`].
pub(crate) fn ingest<R: BufRead>(
    conn: &mut Connection,
    keys: &LedgerKeys,
    wh: Option<&Zone>,
    input: R,
    now: u32,
) -> Result<IngestOutcome, LedgerError> {
    let reader = BatchReader::open(input).map_err(|e| from_batch(0, e))?;
    let h = reader.header().clone();
    ingest_with(conn, keys, wh, h, now, |key, _, each| read_all(reader, key, each))
}

/// See [`crate::Ledger::ingest_send`]: as [`ingest`], reading on a second
/// thread.
pub(crate) fn ingest_send<R: BufRead + Send>(
    conn: &mut Connection,
    keys: &LedgerKeys,
    wh: Option<&Zone>,
    input: R,
    now: u32,
) -> Result<IngestOutcome, LedgerError> {
    let reader = BatchReader::open(input).map_err(|e| from_batch(0, e))?;
    let h = reader.header().clone();
    ingest_with(conn, keys, wh, h, now, |key, certify, each| {
        read_all_parallel(reader, key, keys, certify, each)
    })
}

/// A batch read and verified ahead of posting, with no ledger at hand:
/// its header MAC, its hash chain from `prev_head` to `head`, and every
/// card record's certificate (under the newest certificate key version)
/// were checked by [`crate::BatchVerifier::verify`]. Posting it ([`crate::Ledger::post_verified`])
/// runs the ledger's own steps — terminal, batch number, chain
/// continuity, matching, shadow balances — without reading or hashing
/// again.
pub struct VerifiedBatch {
    /// The header as the batch opened with it.
    first: Header,
    /// The header as [`BatchReader::finish`] verified it.
    last: Header,
    records: Vec<Read>,
}

impl VerifiedBatch {
    /// The terminal the batch is from.
    pub fn terminal_id(&self) -> u32 {
        self.last.terminal_id
    }

    /// The batch number.
    pub fn batch_no(&self) -> u32 {
        self.last.batch_no
    }

    /// Its records.
    pub fn record_count(&self) -> usize {
        self.records.len()
    }
}

impl std::fmt::Debug for VerifiedBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedBatch")
            .field("terminal_id", &self.last.terminal_id)
            .field("batch_no", &self.last.batch_no)
            .field("records", &self.records.len())
            .finish()
    }
}

/// See [`crate::BatchVerifier::verify`].
pub(crate) fn verify_ahead<R: BufRead>(
    keys: &LedgerKeys,
    input: R,
    max_records: usize,
) -> Result<VerifiedBatch, LedgerError> {
    let mut reader = BatchReader::open(input).map_err(|e| from_batch(0, e))?;
    let first = reader.header().clone();
    let tid = first.terminal_id;
    if usize::try_from(first.record_count).map_or(true, |n| n > max_records) {
        return Err(LedgerError::Malformed(format!(
            "{} records: more than the {max_records} verified ahead",
            first.record_count
        )));
    }
    let mut certs = CertKeys::new(keys);
    let version = certs.likely_version();
    let mut records = Vec::with_capacity(usize::try_from(first.record_count).unwrap_or(0));
    while let Some(r) = reader.next_record().map_err(|e| from_batch(tid, e))? {
        if records.len() == max_records {
            return Err(LedgerError::Malformed(format!(
                "more than the {max_records} records verified ahead"
            )));
        }
        let mut read = Read::new(r.seq, r.entry);
        if let (Some(card), Some(rec)) = (&read.card, &read.record) {
            read.checked = Some((version, certs.check(card, version, rec)));
        }
        records.push(read);
    }
    let last = reader.finish(&keys.batch_key(tid)).map_err(|e| from_batch(tid, e))?;
    Ok(VerifiedBatch { first, last, records })
}

/// See [`crate::Ledger::post_verified`].
pub(crate) fn post_verified(
    conn: &mut Connection,
    keys: &LedgerKeys,
    wh: Option<&Zone>,
    batch: VerifiedBatch,
    now: u32,
) -> Result<IngestOutcome, LedgerError> {
    let VerifiedBatch { first, last, records } = batch;
    ingest_with(conn, keys, wh, first, now, move |_, _, each| {
        for r in records {
            each(r)?;
        }
        Ok(last)
    })
}

fn ingest_with(
    conn: &mut Connection,
    keys: &LedgerKeys,
    wh: Option<&Zone>,
    h: Header,
    now: u32,
    read: impl FnOnce(&Key, bool, Each<'_>) -> Result<Header, Refused>,
) -> Result<IngestOutcome, LedgerError> {
    let tid = h.terminal_id;
    // 1. The terminal must be known and active.
    let terminal: Option<(Option<u32>, u32, u32, Vec<u8>)> = conn
        .query_row(
            "SELECT revoked_at, last_batch_no, last_seq, last_head FROM terminals WHERE terminal_id = ?1",
            [tid],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let Some((revoked, last_batch, last_seq, last_head)) = terminal else {
        raise_alone(conn, ExceptionClass::UnknownTerminal, &h, batch_evidence(&h), now)?;
        return Err(LedgerError::UnknownTerminal(tid));
    };
    if let Some(at) = revoked {
        let mut ev = batch_evidence(&h);
        ev["revoked_at"] = json!(at);
        raise_alone(conn, ExceptionClass::RevokedTerminal, &h, ev, now)?;
        return Err(LedgerError::RevokedTerminal(tid));
    }
    // 3. What the batch number says (decided now, acted on only once the
    //    MAC has verified).
    let existing: Option<(String, Vec<u8>)> = conn
        .query_row(
            "SELECT status, head FROM batches WHERE terminal_id = ?1 AND batch_no = ?2",
            params![tid, h.batch_no],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let mode = if let Some((status, head)) = existing {
        Mode::Verify(Check::Existing(status, head))
    } else if h.batch_no <= last_batch {
        // Cannot happen with gapless posting; refuse as a conflict.
        Mode::Verify(Check::Existing("posted".into(), Vec::new()))
    } else if h.batch_no == last_batch + 1 {
        if h.seq_from != last_seq.wrapping_add(1) || unhex32(&h.prev_head)? != last_head {
            let mut ev = batch_evidence(&h);
            ev["why"] = json!("does not continue the last posted batch");
            ev["last_batch_no"] = json!(last_batch);
            ev["last_seq"] = json!(last_seq);
            ev["last_head"] = json!(hex::encode(&last_head));
            Mode::Verify(Check::Discontinuous(ev))
        } else {
            Mode::Post
        }
    } else {
        Mode::Hold
    };
    let key = keys.batch_key(tid);
    let post = matches!(mode, Mode::Post);
    match process(conn, keys, wh, &h, |key, each| read(key, post, each), mode, &key, now) {
        Ok(outcome) => Ok(outcome),
        Err(Refused { err, exception }) => {
            // The batch's transaction is gone (rolled back): record the
            // exception on its own.
            if let Some((class, evidence)) = exception {
                raise_alone(conn, class, &h, evidence, now)?;
            }
            Err(err)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn process(
    conn: &mut Connection,
    keys: &LedgerKeys,
    wh: Option<&Zone>,
    h: &Header,
    read: impl FnOnce(&Key, Each<'_>) -> Result<Header, Refused>,
    mode: Mode,
    key: &Key,
    now: u32,
) -> Result<IngestOutcome, Refused> {
    let tid = h.terminal_id;
    // A savepoint: a transaction of its own, or a part of the caller's
    // (`Ledger::ingest_group`), rolled back alone when this batch fails.
    let tx = conn.savepoint()?;
    match mode {
        Mode::Post => {
            let mut p = Posting::new(&tx, keys, wh.is_some(), tid, h.batch_no, now);
            let header = read(key, &mut |r| p.record(r))?;
            p.flush()?;
            if p.totals != header.totals {
                // Genuine (the MAC verified) but not what the records say:
                // the records are posted, the header's claim is named.
                let mut ev = batch_evidence(&header);
                ev["why"] = json!("the header's totals are not the records' totals");
                ev["records_totals"] = serde_json::to_value(&p.totals).unwrap_or_default();
                let e = raise(
                    &tx,
                    ExceptionClass::TotalsMismatch,
                    None,
                    None,
                    Some(tid),
                    Some(header.batch_no),
                    ev,
                    now,
                )?;
                p.report.exceptions_total += 1;
                if p.report.exceptions.len() < REPORTED_EXCEPTIONS {
                    p.report.exceptions.push(e);
                }
            }
            let head = unhex32(&header.head)?;
            tx.execute(
                "INSERT INTO batches (terminal_id, batch_no, status, seq_from, seq_to, record_count, prev_head, head,
                     totals, sealed_at, received_at, posted_at, card_transactions, posted, duplicates, rejected, held)
                 VALUES (?1, ?2, 'posted', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11, ?12, ?13, ?14, ?15)",
                params![
                    tid,
                    header.batch_no,
                    header.seq_from,
                    header.seq_to,
                    header.record_count,
                    unhex32(&header.prev_head)?,
                    head,
                    serde_json::to_string(&header.totals).map_err(LedgerError::from)?,
                    header.sealed_at,
                    now,
                    p.report.card_transactions,
                    p.report.posted,
                    p.report.duplicates,
                    p.report.rejected,
                    p.report.held
                ],
            )?;
            tx.execute(
                "UPDATE terminals SET last_batch_no = ?1, last_seq = ?2, last_head = ?3 WHERE terminal_id = ?4",
                params![header.batch_no, header.seq_to, head, tid],
            )?;
            let mut report = p.into_report();
            release_held(&tx, keys, wh.is_some(), &header, now, &mut report)?;
            // Records that waited for this till's decisions (copies other
            // tills delivered first, or this batch's own).
            for e in matching::resolve(&tx, Some(tid), None, now)? {
                report.exceptions_total += 1;
                if report.exceptions.len() < REPORTED_EXCEPTIONS {
                    report.exceptions.push(e);
                }
            }
            // The warehouse, over the rows this batch touched.
            if let Some(zone) = wh {
                crate::wh_build::maintain(&*tx, zone)?;
            }
            tx.commit()?;
            let ack = Ack::new(key, tid, header.batch_no, &header.head, AckStatus::Posted);
            Ok(IngestOutcome { ack, report })
        }
        Mode::Hold => {
            let mut records = 0u32;
            let mut card_transactions = 0u32;
            let header = {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO held_records (terminal_id, batch_no, seq, entry) VALUES (?1, ?2, ?3, ?4)",
                )?;
                read(key, &mut |r| {
                    records += 1;
                    card_transactions +=
                        u32::from(matches!(r.entry.kind, EntryKind::Completion | EntryKind::Recovered));
                    stmt.execute(params![tid, h.batch_no, r.seq, serde_json::to_string(&r.entry)?])?;
                    Ok(())
                })?
            };
            tx.execute(
                "INSERT INTO batches (terminal_id, batch_no, status, seq_from, seq_to, record_count, prev_head, head,
                     totals, sealed_at, received_at, card_transactions)
                 VALUES (?1, ?2, 'held', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    tid,
                    header.batch_no,
                    header.seq_from,
                    header.seq_to,
                    header.record_count,
                    unhex32(&header.prev_head)?,
                    unhex32(&header.head)?,
                    serde_json::to_string(&header.totals).map_err(LedgerError::from)?,
                    header.sealed_at,
                    now,
                    card_transactions
                ],
            )?;
            // A lost batch does not come by itself: the acknowledgement
            // asks the till for it (and a hold that outlives the aging
            // period is a `missing-batch` exception, `age_gaps`).
            let missing = missing_from(&tx, tid, header.batch_no)?;
            tx.commit()?;
            let ack = Ack::with_missing(key, tid, header.batch_no, &header.head, AckStatus::Held, missing);
            let report = IngestReport {
                terminal_id: tid,
                batch_no: header.batch_no,
                records,
                card_transactions,
                ..IngestReport::default()
            };
            Ok(IngestOutcome { ack, report })
        }
        Mode::Verify(check) => {
            let mut records = 0u32;
            let mut card_transactions = 0u32;
            // Decisions on approval codes: a refused copy of the till's
            // chain that used a code again is named (`approval-reused`).
            let mut approved = Vec::new();
            let header = read(key, &mut |r| {
                records += 1;
                card_transactions += u32::from(matches!(r.entry.kind, EntryKind::Completion | EntryKind::Recovered));
                if r.entry.approval.is_some() && r.entry.verdict == Some(Verdict::Approve) {
                    approved.push((r.seq, r.entry));
                }
                Ok(())
            })?;
            drop(tx);
            let refused = match &check {
                Check::Existing(_, head) => *head != unhex32(&header.head)?,
                Check::Discontinuous(_) => true,
            };
            if refused && !approved.is_empty() {
                let tx = conn.savepoint()?;
                for (class, ev) in crate::approvals::reused_in_refused(&*tx, tid, header.batch_no, &approved)? {
                    let card = ev["used"]["card_id"].as_str().and_then(parse_card);
                    let counter = ev["used"]["card_counter"].as_u64().and_then(|c| u32::try_from(c).ok());
                    raise(&tx, class, card, counter, Some(tid), Some(header.batch_no), ev, now)?;
                }
                tx.commit()?;
            }
            let report = IngestReport {
                terminal_id: tid,
                batch_no: header.batch_no,
                records,
                card_transactions,
                ..IngestReport::default()
            };
            match check {
                Check::Existing(status, head) if head == unhex32(&header.head)? => {
                    let (status, missing) = if status == "held" {
                        (AckStatus::Held, missing_from(conn, tid, header.batch_no)?)
                    } else {
                        (AckStatus::Duplicate, None)
                    };
                    let ack = Ack::with_missing(key, tid, header.batch_no, &header.head, status, missing);
                    Ok(IngestOutcome { ack, report })
                }
                Check::Existing(_, head) => {
                    let mut ev = batch_evidence(&header);
                    ev["received_head"] = json!(header.head.to_lowercase());
                    ev["known_head"] = json!(hex::encode(head));
                    Err(Refused {
                        err: LedgerError::BatchConflict {
                            terminal_id: tid,
                            batch_no: header.batch_no,
                        },
                        exception: Some((ExceptionClass::BatchConflict, ev)),
                    })
                }
                Check::Discontinuous(ev) => Err(Refused {
                    err: LedgerError::BrokenChain {
                        terminal_id: tid,
                        seq: header.seq_from,
                        why: "batch does not continue the terminal's last posted batch".into(),
                    },
                    exception: Some((ExceptionClass::BrokenChain, ev)),
                }),
            }
        }
    }
}

/// The first batch number below `held` that the ledger lacks for this
/// terminal (neither posted nor held), if any.
pub(crate) fn missing_from(conn: &Connection, tid: u32, held: u32) -> Result<Option<u32>, LedgerError> {
    let last: u32 = conn.query_row(
        "SELECT last_batch_no FROM terminals WHERE terminal_id = ?1",
        [tid],
        |r| r.get(0),
    )?;
    let mut stmt =
        conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM batches WHERE terminal_id = ?1 AND batch_no = ?2)")?;
    for n in last.saturating_add(1)..held {
        if !stmt.query_row(params![tid, n], |r| r.get::<_, bool>(0))? {
            return Ok(Some(n));
        }
    }
    Ok(None)
}

/// After batch `posted` of a terminal: posts the held batches that now
/// follow it, in order, inside the same transaction.
fn release_held(
    conn: &Connection,
    keys: &LedgerKeys,
    touch: bool,
    posted: &Header,
    now: u32,
    report: &mut IngestReport,
) -> Result<(), LedgerError> {
    let tid = posted.terminal_id;
    let mut last_seq = posted.seq_to;
    let mut last_head = unhex32(&posted.head)?;
    let mut next = posted.batch_no.wrapping_add(1);
    loop {
        let held: Option<(u32, u32, Vec<u8>, Vec<u8>)> = conn
            .query_row(
                "SELECT seq_from, seq_to, prev_head, head FROM batches
                 WHERE terminal_id = ?1 AND batch_no = ?2 AND status = 'held'",
                params![tid, next],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let Some((seq_from, seq_to, prev_head, head)) = held else {
            return Ok(());
        };
        if seq_from != last_seq.wrapping_add(1) || prev_head != last_head {
            let e = raise(
                conn,
                ExceptionClass::BrokenChain,
                None,
                None,
                Some(tid),
                Some(next),
                json!({
                    "batch_no": next,
                    "why": "held batch does not continue the batch before it; it stays held",
                    "seq_from": seq_from,
                    "prev_head": hex::encode(&prev_head),
                    "last_seq": last_seq,
                    "last_head": hex::encode(&last_head),
                }),
                now,
            )?;
            report.exceptions_total += 1;
            if report.exceptions.len() < REPORTED_EXCEPTIONS {
                report.exceptions.push(e);
            }
            return Ok(());
        }
        let mut p = Posting::new(conn, keys, touch, tid, next, now);
        {
            let mut stmt = conn
                .prepare("SELECT seq, entry FROM held_records WHERE terminal_id = ?1 AND batch_no = ?2 ORDER BY seq")?;
            let mut rows = stmt.query(params![tid, next])?;
            while let Some(r) = rows.next()? {
                let seq: u32 = r.get(0)?;
                let entry: Entry = serde_json::from_str(&r.get::<_, String>(1)?)?;
                p.record(Read::new(seq, entry))?;
            }
        }
        p.flush()?;
        conn.execute(
            "UPDATE batches SET status = 'posted', posted_at = ?1, posted = ?2, duplicates = ?3, rejected = ?4, held = ?5
             WHERE terminal_id = ?6 AND batch_no = ?7",
            params![now, p.report.posted, p.report.duplicates, p.report.rejected, p.report.held, tid, next],
        )?;
        conn.execute(
            "DELETE FROM held_records WHERE terminal_id = ?1 AND batch_no = ?2",
            params![tid, next],
        )?;
        conn.execute(
            "UPDATE terminals SET last_batch_no = ?1, last_seq = ?2, last_head = ?3 WHERE terminal_id = ?4",
            params![next, seq_to, head, tid],
        )?;
        let r = p.into_report();
        report.released += r.posted + r.released;
        report.released_batches.push(next);
        report.exceptions_total += r.exceptions_total;
        for e in r.exceptions {
            if report.exceptions.len() < REPORTED_EXCEPTIONS {
                report.exceptions.push(e);
            }
        }
        last_seq = seq_to;
        last_head = head;
        next = next.wrapping_add(1);
    }
}

/// A card's books while posting.
#[derive(Debug, Clone, Copy)]
struct CardState {
    key_version: u8,
    last_counter: u32,
    shadow: i64,
    card_balance: i64,
    discrepancy: i64,
    flagged: bool,
    pending: u32,
    dirty: bool,
    /// The key version is a guess: the card was never registered and no
    /// certificate of it has verified yet.
    guessed: bool,
    /// The first counter certified under `key_version` (0: since issue).
    version_from: u32,
}

impl Default for CardState {
    fn default() -> Self {
        // Replaced by the ledger's newest key version for an unregistered
        // card (`likely_version`).
        Self {
            key_version: 1,
            last_counter: 0,
            shadow: 0,
            card_balance: 0,
            discrepancy: 0,
            flagged: false,
            pending: 0,
            dirty: false,
            guessed: false,
            version_from: 0,
        }
    }
}

/// A card transaction as stored, with where it came from.
struct Stored {
    record: LogRecord,
    terminal_id: u32,
    batch_no: u32,
    seq: u32,
}

/// A card record as the exceptions' evidence shows it (both backends).
pub fn record_json(r: &LogRecord) -> Value {
    let mut v = json!({
        "counter": r.counter,
        "type": r.kind.name(),
        "points": r.amount,
        "balance_after": r.balance_after,
        "terminal_id": r.terminal_id,
        "terminal_seq": r.terminal_seq,
        "time": r.time,
        "reference": r.reference,
        "certificate": hex::encode_upper(r.certificate),
    });
    // Card application 2.2: the online mark, when the card set it.
    if let (true, Value::Object(m)) = (r.online, &mut v) {
        m.insert("online".into(), json!(true));
    }
    v
}

fn parse_card(s: &str) -> Option<CardId> {
    let mut id = [0u8; 8];
    hex::decode_to_slice(s, &mut id).ok()?;
    Some(id)
}

/// Posts the records of one batch, per card in counter order.
struct Posting<'c> {
    conn: &'c Connection,
    terminal_id: u32,
    batch_no: u32,
    now: u32,
    cards: HashMap<CardId, CardState>,
    certs: CertKeys<'c>,
    report: IngestReport,
    /// Card transactions per type, as the records say (to check the
    /// header's totals against).
    totals: std::collections::BTreeMap<String, tessera_settlement::batch::Total>,
    /// Signed policies and campaign files, parsed once per batch.
    rules: crate::points::Rules,
    /// Whether to note the rows touched for the warehouse (`wh_touched`).
    touch: bool,
}

impl<'c> Posting<'c> {
    fn new(conn: &'c Connection, keys: &'c LedgerKeys, touch: bool, terminal_id: u32, batch_no: u32, now: u32) -> Self {
        let report = IngestReport {
            terminal_id,
            batch_no,
            ..IngestReport::default()
        };
        Self {
            conn,
            terminal_id,
            batch_no,
            now,
            cards: HashMap::new(),
            certs: CertKeys::new(keys),
            report,
            totals: std::collections::BTreeMap::new(),
            rules: crate::points::Rules::default(),
            touch,
        }
    }

    /// Notes a card transaction whose warehouse facts must be brought up
    /// to date at the end of the batch.
    fn touched(&self, card: &[u8], counter: u32) -> Result<(), LedgerError> {
        if self.touch {
            self.conn
                .prepare_cached("INSERT INTO wh_touched (card_id, counter) VALUES (?1, ?2) ON CONFLICT DO NOTHING")?
                .execute(params![card, counter])?;
        }
        Ok(())
    }

    fn into_report(self) -> IngestReport {
        self.report
    }

    #[allow(clippy::too_many_arguments)]
    fn raise(
        &mut self,
        class: ExceptionClass,
        card_id: Option<CardId>,
        counter: Option<u32>,
        terminal_id: u32,
        batch_no: u32,
        evidence: Value,
    ) -> Result<(), LedgerError> {
        let e: Exception = raise(
            self.conn,
            class,
            card_id,
            counter,
            Some(terminal_id),
            Some(batch_no),
            evidence,
            self.now,
        )?;
        self.report.exceptions_total += 1;
        if self.report.exceptions.len() < REPORTED_EXCEPTIONS {
            self.report.exceptions.push(e);
        }
        Ok(())
    }

    /// One verified record of the batch.
    fn record(&mut self, r: Read) -> Result<(), LedgerError> {
        self.report.records += 1;
        // The same count the terminal makes when it seals (`write_range`).
        if let (Some(delta), Some(t)) = (r.entry.delta(), r.entry.tx_type.as_ref()) {
            let x = self.totals.entry(t.clone()).or_default();
            x.count += 1;
            x.points += delta.unsigned_abs();
        }
        match r.entry.kind {
            EntryKind::Decision | EntryKind::Void => self.terminal_record(r.seq, &r.entry),
            EntryKind::Completion | EntryKind::Recovered => {
                self.report.card_transactions += 1;
                self.card_transaction(r)
            }
        }
    }

    /// Decisions and voids: kept for reconciliation; they move no balance.
    fn terminal_record(&mut self, seq: u32, e: &Entry) -> Result<(), LedgerError> {
        let verdict = e.verdict.map(|v| match v {
            Verdict::Approve => "approve",
            Verdict::Decline => "decline",
            Verdict::Refer => "refer",
        });
        let kind = if e.kind == EntryKind::Void { "void" } else { "decision" };
        self.conn
            .prepare_cached(
                "INSERT OR IGNORE INTO terminal_records (terminal_id, seq, batch_no, kind, time, card_id, card_counter,
                     tx_type, verdict, reason, points, purchase_minor, origin_seq, categories, basket, store_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
                     (SELECT store_id FROM terminals WHERE terminal_id = ?1))",
            )?
            .execute(params![
                self.terminal_id,
                seq,
                self.batch_no,
                kind,
                e.time,
                e.card_id.as_deref().and_then(parse_card).map(|c| c.to_vec()),
                e.card_counter,
                e.tx_type,
                verdict,
                e.reason,
                e.points,
                e.purchase_minor,
                e.origin_seq,
                (!e.categories.is_empty())
                    .then(|| serde_json::to_string(&e.categories))
                    .transpose()?,
                (!e.basket.is_empty())
                    .then(|| serde_json::to_string(&e.basket))
                    .transpose()?
            ])?;
        let approved = e.kind == EntryKind::Decision && e.verdict == Some(Verdict::Approve);
        if approved {
            // The purchase facts belong to the decision: its amount per
            // category, and the card transaction it allowed is touched
            // (its copy may have been posted before, from another till).
            for (category, amount, from_basket) in crate::wh_build::category_amounts(e) {
                self.conn
                    .prepare_cached(
                        "INSERT INTO decision_categories (terminal_id, seq, category, amount_minor, from_basket)
                         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
                    )?
                    .execute(params![self.terminal_id, seq, category, amount, from_basket])?;
            }
            if let (Some(card), Some(counter)) = (e.card_id.as_deref().and_then(parse_card), e.card_counter) {
                self.touched(&card, counter)?;
            }
        }
        // A decision that went ahead on an office approval code.
        if e.kind == EntryKind::Decision && e.verdict == Some(Verdict::Approve) {
            for (class, ev) in crate::approvals::check_use(self.conn, self.terminal_id, self.batch_no, seq, e)? {
                self.raise(
                    class,
                    e.card_id.as_deref().and_then(parse_card),
                    e.card_counter,
                    self.terminal_id,
                    self.batch_no,
                    ev,
                )?;
            }
        }
        // A purchase's points against the signed rules it names; when they
        // agree, which campaign or rule gave which points.
        let (problem, lines) = self.rules.check(self.conn, e)?;
        for (source, points) in lines {
            self.conn
                .prepare_cached(
                    "INSERT INTO decision_points (terminal_id, seq, source, points) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (terminal_id, seq, source) DO UPDATE SET points = decision_points.points + excluded.points",
                )?
                .execute(params![self.terminal_id, seq, source, points])?;
        }
        if let Some((why, mut ev)) = problem {
            if !ev.is_object() {
                ev = json!({});
            }
            ev["seq"] = json!(seq);
            ev["why"] = json!(why);
            self.raise(
                ExceptionClass::PointsMismatch,
                e.card_id.as_deref().and_then(parse_card),
                e.card_counter,
                self.terminal_id,
                self.batch_no,
                ev,
            )?;
        }
        // A void the card contradicts: its certified record of that very
        // decision is in the books already.
        if let (EntryKind::Void, Some(card), Some(counter), Some(origin)) = (
            e.kind,
            e.card_id.as_deref().and_then(parse_card),
            e.card_counter,
            e.origin_seq,
        ) {
            let certified: bool = self
                .conn
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM card_transactions
                     WHERE card_id = ?1 AND counter = ?2 AND origin_terminal = ?3 AND origin_seq = ?4)",
                )?
                .query_row(params![&card[..], counter, self.terminal_id, origin], |r| r.get(0))?;
            if certified {
                self.void_contradicted(card, counter, self.terminal_id, origin, seq)?;
            }
        }
        Ok(())
    }

    /// Raises `void-contradicted` for decision `origin` of till `terminal`.
    fn void_contradicted(
        &mut self,
        card: CardId,
        counter: u32,
        terminal: u32,
        origin: u32,
        seq: u32,
    ) -> Result<(), LedgerError> {
        // Its points are not explained.
        self.conn
            .prepare_cached(
                "UPDATE card_transactions SET decision = 'orphan'
                 WHERE card_id = ?1 AND counter = ?2 AND origin_terminal = ?3 AND origin_seq = ?4",
            )?
            .execute(params![&card[..], counter, terminal, origin])?;
        let ev = json!({
            "seq": seq,
            "why": "the till journaled this decision void; the card certified it",
            "origin_terminal": terminal,
            "origin_seq": origin,
        });
        self.raise(
            ExceptionClass::VoidContradicted,
            Some(card),
            Some(counter),
            self.terminal_id,
            self.batch_no,
            ev,
        )
    }

    fn load(&mut self, card: &CardId) -> Result<CardState, LedgerError> {
        if let Some(s) = self.cards.get(card) {
            return Ok(*s);
        }
        if self.cards.len() >= CARD_CACHE {
            self.flush()?;
            self.cards.clear();
        }
        let s = self
            .conn
            .prepare_cached(
                "SELECT key_version, last_counter, shadow_balance, card_balance, discrepancy, flagged, pending,
                        key_version_from
                 FROM cards WHERE card_id = ?1",
            )?
            .query_row([&card[..]], |r| {
                Ok(CardState {
                    key_version: r.get(0)?,
                    last_counter: r.get(1)?,
                    shadow: r.get(2)?,
                    card_balance: r.get(3)?,
                    discrepancy: r.get(4)?,
                    flagged: r.get(5)?,
                    pending: r.get(6)?,
                    dirty: false,
                    guessed: false,
                    version_from: r.get(7)?,
                })
            })
            .optional()?;
        // A card first seen in settlement gets its row at the flush.
        Ok(s.unwrap_or(CardState {
            dirty: true,
            key_version: self.certs.likely_version(),
            guessed: true,
            ..CardState::default()
        }))
    }

    /// Writes the cached card states back.
    fn flush(&mut self) -> Result<(), LedgerError> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO cards (card_id, key_version, last_counter, shadow_balance, card_balance, discrepancy, flagged, pending,
                                key_version_from)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (card_id) DO UPDATE SET last_counter = excluded.last_counter,
                 key_version = excluded.key_version, key_version_from = excluded.key_version_from,
                 shadow_balance = excluded.shadow_balance, card_balance = excluded.card_balance,
                 discrepancy = excluded.discrepancy, flagged = excluded.flagged, pending = excluded.pending",
        )?;
        for (card, s) in self.cards.iter_mut().filter(|(_, s)| s.dirty) {
            stmt.execute(params![
                &card[..],
                s.key_version,
                s.last_counter,
                s.shadow,
                s.card_balance,
                s.discrepancy,
                s.flagged,
                s.pending,
                s.version_from
            ])?;
            s.dirty = false;
        }
        Ok(())
    }

    /// A completion or recovered record: certificate, then duplicate /
    /// conflict / post / hold.
    fn card_transaction(&mut self, r: Read) -> Result<(), LedgerError> {
        let (seq, entry) = (r.seq, &r.entry);
        let card = r.card;
        let (Some(card), Some(rec)) = (card, r.record) else {
            self.report.rejected += 1;
            let ev = json!({"seq": seq, "why": "incomplete card record", "entry": entry});
            return self.raise(
                ExceptionClass::BadCertificate,
                card,
                entry.card_counter,
                self.terminal_id,
                self.batch_no,
                ev,
            );
        };
        let mut st = self.load(&card)?;
        let mut verified = match r.checked {
            Some((version, verdict)) if version == st.key_version => verdict,
            _ => self.certs.check(&card, st.key_version, &rec),
        };
        if verified.is_err() {
            let (current, from, counter) = (st.key_version, st.version_from, rec.counter);
            verified = if st.guessed {
                // Never registered: whichever version the card has.
                self.certs.check_any(&card, &rec, |_| true).map(|v| {
                    st.key_version = v;
                    st.version_from = counter;
                })
            } else {
                // A card only moves forward (KEY UPDATE, applet-spec §4.15):
                // a newer version from this counter on; an older one only
                // for counters made before the card was seen at its current
                // version (so an old, retired master cannot certify new
                // transactions).
                self.certs
                    .check_any(&card, &rec, |v| v > current || (v < current && counter < from))
                    .map(|v| {
                        if v > current {
                            st.key_version = v;
                            st.version_from = counter;
                        }
                    })
            };
            if verified.is_ok() {
                st.dirty = true;
            }
        }
        if verified.is_ok() {
            st.guessed = false;
        }
        if let Err(why) = verified {
            self.report.rejected += 1;
            let ev = json!({"seq": seq, "why": why, "key_version": st.key_version, "record": record_json(&rec)});
            return self.raise(
                ExceptionClass::BadCertificate,
                Some(card),
                Some(rec.counter),
                self.terminal_id,
                self.batch_no,
                ev,
            );
        }
        if entry.kind == EntryKind::Completion
            && (rec.terminal_id != self.terminal_id || entry.origin_seq != Some(rec.terminal_seq))
        {
            let ev = json!({
                "seq": seq,
                "why": "journaled as this till's completion; the card recorded another till or sequence",
                "journaled_origin_seq": entry.origin_seq,
                "record": record_json(&rec),
            });
            self.raise(
                ExceptionClass::Misattributed,
                Some(card),
                Some(rec.counter),
                self.terminal_id,
                self.batch_no,
                ev,
            )?;
        }
        if rec.counter > st.last_counter {
            let post = rec.counter == st.last_counter + 1;
            let claim = matching::Claim {
                card: &card,
                counter: rec.counter,
                tx_type: rec.kind.name(),
                points: rec.amount,
                origin_terminal: rec.terminal_id,
                origin_seq: rec.terminal_seq,
            };
            let found = matching::find(self.conn, &claim)?;
            let categories = if entry.categories.is_empty() {
                None
            } else {
                Some(serde_json::to_string(&entry.categories)?)
            };
            let kind = if entry.kind == EntryKind::Recovered {
                "recovered"
            } else {
                "completion"
            };
            let inserted = self
                .conn
                .prepare_cached(
                    "INSERT INTO card_transactions (card_id, counter, status, tx_type, points, delta, balance_after,
                         origin_terminal, origin_seq, card_time, reference, certificate, kind, terminal_id, batch_no, seq,
                         purchase_minor, categories, received_at, posted_at, decision, online)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)
                     ON CONFLICT DO NOTHING",
                )?
                .execute(params![
                    &card[..],
                    rec.counter,
                    if post { "posted" } else { "pending" },
                    rec.kind.name(),
                    rec.amount,
                    rec.kind.delta(rec.amount),
                    rec.balance_after,
                    rec.terminal_id,
                    rec.terminal_seq,
                    rec.time,
                    rec.reference,
                    &rec.certificate[..],
                    kind,
                    self.terminal_id,
                    self.batch_no,
                    seq,
                    entry.purchase_minor,
                    categories,
                    self.now,
                    post.then_some(self.now),
                    found.state(),
                    rec.online
                ])?
                > 0;
            if inserted {
                self.touched(&card, rec.counter)?;
                if let Some(ev) = crate::online::record_posted(self.conn, &card, &rec)? {
                    self.raise(
                        crate::online::UNMATCHED,
                        Some(card),
                        Some(rec.counter),
                        self.terminal_id,
                        self.batch_no,
                        ev,
                    )?;
                }
                if let matching::Match::Orphan(why, held) = found {
                    let ev = matching::evidence(&claim, why, held, Some(seq));
                    self.raise(
                        ExceptionClass::Orphan,
                        Some(card),
                        Some(rec.counter),
                        self.terminal_id,
                        self.batch_no,
                        ev,
                    )?;
                }
                // The record of a decision its till journaled void.
                let voided: bool = self
                    .conn
                    .prepare_cached(
                        "SELECT EXISTS (SELECT 1 FROM terminal_records
                         WHERE kind = 'void' AND card_id = ?1 AND card_counter = ?2 AND terminal_id = ?3
                           AND origin_seq = ?4)",
                    )?
                    .query_row(
                        params![&card[..], rec.counter, rec.terminal_id, rec.terminal_seq],
                        |r| r.get(0),
                    )?;
                if voided {
                    self.void_contradicted(card, rec.counter, rec.terminal_id, rec.terminal_seq, seq)?;
                }
                if post {
                    self.report.posted += 1;
                    self.apply(&card, &mut st, &rec, self.terminal_id, self.batch_no, seq)?;
                    self.release(&card, &mut st)?;
                } else {
                    self.report.held += 1;
                    st.pending += 1;
                    st.dirty = true;
                    if rec.counter - st.last_counter > crate::COUNTER_JUMP_LIMIT {
                        let ev = json!({
                            "seq": seq,
                            "last_posted_counter": st.last_counter,
                            "jump": rec.counter - st.last_counter,
                            "limit": crate::COUNTER_JUMP_LIMIT,
                            "record": record_json(&rec),
                            "action": "hotlisted",
                        });
                        self.raise(
                            ExceptionClass::CounterJump,
                            Some(card),
                            Some(rec.counter),
                            self.terminal_id,
                            self.batch_no,
                            ev,
                        )?;
                        hotlist_insert(self.conn, &card, "counter jump", self.now)?;
                    }
                }
                self.cards.insert(card, st);
                return Ok(());
            }
        }
        self.cards.insert(card, st);
        self.known(&card, seq, &rec)
    }

    /// A record whose card and counter the ledger already holds.
    fn known(&mut self, card: &CardId, seq: u32, rec: &LogRecord) -> Result<(), LedgerError> {
        let Some(first) = self.stored(card, rec.counter, false)? else {
            // Only counter 0 gets here: cards never issue it.
            self.report.rejected += 1;
            let ev = json!({"seq": seq, "why": "counter 0 is never issued", "record": record_json(rec)});
            return self.raise(
                ExceptionClass::BadCertificate,
                Some(*card),
                Some(rec.counter),
                self.terminal_id,
                self.batch_no,
                ev,
            );
        };
        if first.record == *rec {
            self.report.duplicates += 1;
            // The same record from another terminal is recovered evidence
            // (normal). From the same terminal under another sequence it
            // means the terminal journaled it twice: worth a look.
            // Copies from other terminals are kept (which terminal saw
            // which transaction) in `duplicate_copies`.
            let earlier = if first.terminal_id == self.terminal_id {
                Some((first.batch_no, first.seq))
            } else {
                let mut stmt = self.conn.prepare_cached(
                    "INSERT INTO duplicate_copies (card_id, counter, terminal_id, batch_no, seq) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT DO NOTHING",
                )?;
                if stmt.execute(params![&card[..], rec.counter, self.terminal_id, self.batch_no, seq])? > 0 {
                    None
                } else {
                    self.conn
                        .prepare_cached(
                            "SELECT batch_no, seq FROM duplicate_copies WHERE card_id = ?1 AND counter = ?2 AND terminal_id = ?3",
                        )?
                        .query_row(params![&card[..], rec.counter, self.terminal_id], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()?
                }
            };
            if let Some((first_batch_no, first_seq)) = earlier.filter(|e| *e != (self.batch_no, seq)) {
                let ev = json!({"seq": seq, "first_batch_no": first_batch_no, "first_seq": first_seq, "record": record_json(rec)});
                self.raise(
                    ExceptionClass::DuplicateRecord,
                    Some(*card),
                    Some(rec.counter),
                    self.terminal_id,
                    self.batch_no,
                    ev,
                )?;
            }
            return Ok(());
        }
        // Two records, both certified by the card's key, for one counter:
        // two chips hold this card's keys.
        self.report.rejected += 1;
        let ev = json!({
            "seq": seq,
            "received": record_json(rec),
            "first": record_json(&first.record),
            "first_terminal_id": first.terminal_id,
            "first_batch_no": first.batch_no,
            "first_seq": first.seq,
            "action": "hotlisted",
        });
        self.raise(
            ExceptionClass::Conflict,
            Some(*card),
            Some(rec.counter),
            self.terminal_id,
            self.batch_no,
            ev,
        )?;
        hotlist_insert(self.conn, card, "clone", self.now)?;
        Ok(())
    }

    fn stored(&self, card: &CardId, counter: u32, pending_only: bool) -> Result<Option<Stored>, LedgerError> {
        let sql = if pending_only {
            "SELECT tx_type, points, balance_after, origin_terminal, origin_seq, card_time, reference, certificate,
                    terminal_id, batch_no, seq, online
             FROM card_transactions WHERE card_id = ?1 AND counter = ?2 AND status = 'pending'"
        } else {
            "SELECT tx_type, points, balance_after, origin_terminal, origin_seq, card_time, reference, certificate,
                    terminal_id, batch_no, seq, online
             FROM card_transactions WHERE card_id = ?1 AND counter = ?2"
        };
        let row = self
            .conn
            .prepare_cached(sql)?
            .query_row(params![&card[..], counter], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, u32>(1)?,
                    r.get::<_, u32>(2)?,
                    r.get::<_, u32>(3)?,
                    r.get::<_, u32>(4)?,
                    r.get::<_, u32>(5)?,
                    r.get::<_, u32>(6)?,
                    r.get::<_, Vec<u8>>(7)?,
                    r.get::<_, u32>(8)?,
                    r.get::<_, u32>(9)?,
                    r.get::<_, u32>(10)?,
                    r.get::<_, bool>(11)?,
                ))
            })
            .optional()?;
        let Some((
            ty,
            amount,
            balance_after,
            origin_terminal,
            origin_seq,
            time,
            reference,
            cert,
            terminal_id,
            batch_no,
            seq,
            online,
        )) = row
        else {
            return Ok(None);
        };
        let kind = tx_kind(&ty).ok_or_else(|| LedgerError::Storage(format!("stored transaction type {ty:?}")))?;
        let certificate = cert
            .try_into()
            .map_err(|_| LedgerError::Storage("stored certificate length".into()))?;
        let record = LogRecord {
            counter,
            kind,
            amount,
            balance_after,
            terminal_id: origin_terminal,
            terminal_seq: origin_seq,
            time,
            reference,
            online,
            certificate,
        };
        Ok(Some(Stored {
            record,
            terminal_id,
            batch_no,
            seq,
        }))
    }

    /// Posts `rec` (the card's next counter) to the card's books.
    fn apply(
        &mut self,
        card: &CardId,
        st: &mut CardState,
        rec: &LogRecord,
        terminal_id: u32,
        batch_no: u32,
        seq: u32,
    ) -> Result<(), LedgerError> {
        let delta = rec.kind.delta(rec.amount);
        let expected = st.card_balance + delta;
        let found = i64::from(rec.balance_after);
        if found != expected {
            // The record is certified, so it happened: it is posted and the
            // books follow the certified deltas; the card is flagged and
            // the unexplained points kept in `discrepancy`. Later records
            // are checked against the card's own certified balance, so one
            // jump raises one exception.
            let ev = json!({
                "seq": seq,
                "action": "hotlisted",
                "previous_balance": st.card_balance,
                "delta": delta,
                "expected": expected,
                "balance_after": found,
                "unexplained": found - expected,
                "record": record_json(rec),
            });
            self.raise(
                ExceptionClass::BalanceDiscontinuity,
                Some(*card),
                Some(rec.counter),
                terminal_id,
                batch_no,
                ev,
            )?;
            st.discrepancy += found - expected;
            st.flagged = true;
            // Points the books cannot explain: no till serves the card
            // until the office has looked (docs/settlement.md).
            hotlist_insert(self.conn, card, "balance discontinuity", self.now)?;
        }
        st.shadow += delta;
        st.card_balance = found;
        st.last_counter = rec.counter;
        st.dirty = true;
        if matches!(rec.kind, TxKind::RefundEarn | TxKind::RefundRedeem) {
            self.pair_refund(card, rec, terminal_id, batch_no, seq)?;
        }
        if rec.kind.is_adjustment() {
            self.pair_adjustment(card, rec, terminal_id, batch_no, seq)?;
        }
        // A replaced card's balance moved to its successor: whatever it
        // does afterwards (offline, before the hotlist reached the till, or
        // settled late) stays on its own books and is named.
        if let Some(new) = crate::adjust::replaced_by(self.conn, card)? {
            let ev = json!({
                "seq": seq,
                "why": "the card was replaced: its balance moved to the new card",
                "new_card": hex::encode_upper(new),
                "delta": delta,
                "record": record_json(rec),
            });
            self.raise(
                ExceptionClass::ReplacedCardUsed,
                Some(*card),
                Some(rec.counter),
                terminal_id,
                batch_no,
                ev,
            )?;
        }
        Ok(())
    }

    /// Pairs a posted issuer adjustment record with the adjustment the
    /// office issued (same card, sequence, kind and points, applied once);
    /// a replacement credit also moves its points off the old card's books.
    fn pair_adjustment(
        &mut self,
        card: &CardId,
        rec: &LogRecord,
        terminal_id: u32,
        batch_no: u32,
        seq: u32,
    ) -> Result<(), LedgerError> {
        match crate::adjust::pair(
            self.conn,
            card,
            rec.reference,
            rec.kind.name(),
            rec.amount,
            rec.counter,
            self.now,
        )? {
            crate::adjust::Paired::Matched(None) => {}
            crate::adjust::Paired::Matched(Some(old)) => {
                let mut st = self.load(&old)?;
                st.shadow -= i64::from(rec.amount);
                st.dirty = true;
                self.cards.insert(old, st);
                crate::adjust::post_move(self.conn, &old, card, rec.amount, rec.reference, self.now)?;
            }
            crate::adjust::Paired::Mismatch(why, issued) => {
                let ev = json!({
                    "seq": seq,
                    "why": why,
                    "issued": issued,
                    "record": record_json(rec),
                });
                self.raise(
                    ExceptionClass::AdjustmentMismatch,
                    Some(*card),
                    Some(rec.counter),
                    terminal_id,
                    batch_no,
                    ev,
                )?;
            }
        }
        Ok(())
    }

    /// Pairs a posted refund with its original, chain-wide: the original
    /// must be in the books, of the kind the refund reverses, and the
    /// refunds of it so far (of that kind) plus this one may not exceed its
    /// points. Posting
    /// runs in counter order and a refund's reference is older, so the
    /// original and every earlier refund of it are posted already.
    fn pair_refund(
        &mut self,
        card: &CardId,
        rec: &LogRecord,
        terminal_id: u32,
        batch_no: u32,
        seq: u32,
    ) -> Result<(), LedgerError> {
        let original: Option<(String, u32)> = self
            .conn
            .prepare_cached(
                "SELECT tx_type, points FROM card_transactions
                 WHERE card_id = ?1 AND counter = ?2 AND status = 'posted'",
            )?
            .query_row(params![&card[..], rec.reference], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let earlier: i64 = self
            .conn
            .prepare_cached(
                "SELECT COALESCE(SUM(points), 0) FROM card_transactions
                 WHERE card_id = ?1 AND reference = ?2 AND counter < ?3 AND status = 'posted' AND tx_type = ?4",
            )?
            .query_row(params![&card[..], rec.reference, rec.counter, rec.kind.name()], |r| {
                r.get(0)
            })?;
        let reverses = match rec.kind {
            TxKind::RefundEarn => TxKind::Earn,
            _ => TxKind::Redeem,
        };
        let problem = match &original {
            None => Some((ExceptionClass::RefundMismatch, "the original is not in the books")),
            Some((kind, _)) if kind != reverses.name() => {
                Some((ExceptionClass::RefundMismatch, "the original is of another kind"))
            }
            Some((_, points)) if earlier >= i64::from(*points) => Some((
                ExceptionClass::DuplicateRefund,
                "the original was refunded in full already",
            )),
            Some((_, points)) if earlier + i64::from(rec.amount) > i64::from(*points) => Some((
                ExceptionClass::RefundMismatch,
                "the refunds exceed the original's points",
            )),
            Some(_) => None,
        };
        if let Some((class, why)) = problem {
            let ev = json!({
                "seq": seq,
                "why": why,
                "original": original.map(|(kind, points)| json!({"counter": rec.reference, "type": kind, "points": points})),
                "refunded_before": earlier,
                "record": record_json(rec),
            });
            self.raise(class, Some(*card), Some(rec.counter), terminal_id, batch_no, ev)?;
        }
        Ok(())
    }

    /// Posts the card's held records that now follow, in counter order.
    fn release(&mut self, card: &CardId, st: &mut CardState) -> Result<(), LedgerError> {
        while st.pending > 0 {
            let next = st.last_counter + 1;
            let Some(s) = self.stored(card, next, true)? else { break };
            self.conn
                .prepare_cached(
                    "UPDATE card_transactions SET status = 'posted', posted_at = ?1 WHERE card_id = ?2 AND counter = ?3",
                )?
                .execute(params![self.now, &card[..], next])?;
            self.touched(card, next)?;
            st.pending -= 1;
            self.apply(card, st, &s.record, s.terminal_id, s.batch_no, s.seq)?;
            if s.terminal_id == self.terminal_id && s.batch_no == self.batch_no {
                self.report.held -= 1;
                self.report.posted += 1;
            } else {
                self.report.released += 1;
            }
        }
        Ok(())
    }
}
