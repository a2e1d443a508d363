//! Ingestion throughput of the ledger against the storage floor.
//!
//! Generates a valid settlement batch of N completion records (real
//! certificates under the test keys' card certificate keys, the exact
//! journal body encoding and hash chain of `tessera_terminal::journal`,
//! MAC'd header), streams it from a file into a fresh ledger, and compares
//! the rate with a raw SQLite insert of the same rows, in the same order,
//! into a table of the same columns with the same unique `(card_id,
//! counter)` key the ledger needs to detect duplicates (same pragmas, one
//! transaction): the storage floor. A table without any key is timed too,
//! for reference only. Peak RSS (`VmHWM`) is read before and
//! after the import to show memory stays flat.
//!
//! `cargo bench -p tessera-ledger --bench ingest` runs N = 1,000,000.
//! Without `--bench` (as `cargo test --all-targets` runs it) N = 20,000,
//! only to prove it works. `TESSERA_BENCH_RECORDS=N` sets N.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use rusqlite::{params, Connection};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tessera_crypto::cert::certificate;
use tessera_crypto::keys::IssuerKeys;
use tessera_crypto::Key;
use tessera_ledger::{Ledger, LedgerKeys};
use tessera_protocol::messages::{LogRecord, TxKind};
use tessera_terminal::batch::{AckStatus, Header, RecordLine, Total, FORMAT, VERSION};
use tessera_terminal::journal::{Entry, EntryKind};

const TERMINAL: u32 = 4242;
const T0: u32 = 1_795_780_800;
const CARDS: u32 = 10_000;

/// The journal's hashed body (`journal.rs` `Hashed`): same fields, same order.
#[derive(Serialize)]
struct Hashed<'a> {
    seq: u32,
    terminal_id: u32,
    entry: &'a Entry,
}

fn card_id(n: u32) -> [u8; 8] {
    let mut id = [0xBE, 0x4C, 0, 0, 0, 0, 0, 0];
    id[4..].copy_from_slice(&n.to_be_bytes());
    id
}

/// Record `i` (0-based): card `i % CARDS`, its counter `i / CARDS + 1`.
fn record(i: u32, cert_keys: &[Key]) -> ([u8; 8], LogRecord) {
    let card = i % CARDS;
    let counter = i / CARDS + 1;
    let id = card_id(card);
    let mut rec = LogRecord {
        counter,
        kind: TxKind::Earn,
        amount: 10,
        balance_after: 10 * counter,
        terminal_id: TERMINAL,
        terminal_seq: 2 * i + 1,
        time: T0 + i,
        reference: 0,
        online: false,
        certificate: [0; 16],
    };
    rec.certificate = certificate(&cert_keys[card as usize], &id, &rec);
    (id, rec)
}

fn entry(i: u32, cert_keys: &[Key]) -> Entry {
    let (id, rec) = record(i, cert_keys);
    let mut e = Entry::from_card_record(EntryKind::Completion, T0 + i, &id, &rec);
    e.purchase_minor = Some(1_000);
    e
}

/// Writes the batch to `path`, streaming (records to a side file first,
/// since the header, which comes first, needs the head).
fn generate(path: &Path, n: u32, keys: &IssuerKeys, cert_keys: &[Key]) {
    let body_path = path.with_extension("records");
    let mut prev = [0u8; 32];
    {
        let mut out = BufWriter::new(File::create(&body_path).unwrap());
        // Each card transaction as a till journals it: the approve
        // decision (seq 2i + 1, the sequence the card records), then the
        // completion (seq 2i + 2).
        for (seq, e) in (0..n).flat_map(|i| {
            let c = entry(i, cert_keys);
            let mut d = Entry::new(EntryKind::Decision, c.time);
            d.card_id.clone_from(&c.card_id);
            d.card_counter = c.card_counter;
            d.tx_type.clone_from(&c.tx_type);
            d.points = c.points;
            d.purchase_minor = c.purchase_minor;
            d.verdict = Some(tessera_terminal::journal::Verdict::Approve);
            [(2 * i + 1, d), (2 * i + 2, c)]
        }) {
            let body = serde_json::to_string(&Hashed {
                seq,
                terminal_id: TERMINAL,
                entry: &e,
            })
            .unwrap();
            let mut h = Sha256::new();
            h.update(prev);
            h.update(body.as_bytes());
            let hash: [u8; 32] = h.finalize().into();
            let line = RecordLine {
                kind: "record".into(),
                seq,
                body,
                prev_hash: hex::encode(prev),
                hash: hex::encode(hash),
            };
            serde_json::to_writer(&mut out, &line).unwrap();
            out.write_all(b"\n").unwrap();
            prev = hash;
        }
        out.flush().unwrap();
    }
    let mut totals = BTreeMap::new();
    totals.insert(
        "earn".to_owned(),
        Total {
            count: u64::from(n),
            points: 10 * u64::from(n),
        },
    );
    let header = Header {
        kind: "header".into(),
        format: FORMAT.into(),
        version: VERSION,
        terminal_id: TERMINAL,
        batch_no: 1,
        seq_from: 1,
        seq_to: 2 * n,
        record_count: 2 * n,
        prev_head: hex::encode([0u8; 32]),
        head: hex::encode(prev),
        totals,
        sealed_at: T0 + n,
    };
    let mut out = BufWriter::new(File::create(path).unwrap());
    serde_json::to_writer(&mut out, &header).unwrap();
    out.write_all(b"\n").unwrap();
    std::io::copy(&mut File::open(&body_path).unwrap(), &mut out).unwrap();
    let mac = hex::encode(header.mac(&keys.terminal_batch_key(TERMINAL)));
    writeln!(out, "{{\"type\":\"mac\",\"mac\":\"{mac}\"}}").unwrap();
    out.flush().unwrap();
    std::fs::remove_file(body_path).unwrap();
}

/// The layout of the ledger's `card_transactions` (same columns, same
/// unique `(card_id, counter)` key the ledger needs to detect duplicates).
const FLOOR_TABLE: &str = "CREATE TABLE t (card_id BLOB NOT NULL, counter INTEGER NOT NULL, status TEXT NOT NULL,
         tx_type TEXT NOT NULL, points INTEGER NOT NULL, delta INTEGER NOT NULL, balance_after INTEGER NOT NULL,
         origin_terminal INTEGER NOT NULL, origin_seq INTEGER NOT NULL, card_time INTEGER NOT NULL,
         reference INTEGER NOT NULL, certificate BLOB NOT NULL, kind TEXT NOT NULL, terminal_id INTEGER NOT NULL,
         batch_no INTEGER NOT NULL, seq INTEGER NOT NULL, purchase_minor INTEGER, categories TEXT,
         received_at INTEGER NOT NULL, posted_at INTEGER);
     CREATE UNIQUE INDEX t_key ON t (card_id, counter)";

/// Without any key: what storing the bytes alone costs (for reference).
const HEAP_TABLE: &str = "CREATE TABLE t (card_id BLOB, counter INTEGER, status TEXT, tx_type TEXT, points INTEGER,
         delta INTEGER, balance_after INTEGER, origin_terminal INTEGER, origin_seq INTEGER, card_time INTEGER,
         reference INTEGER, certificate BLOB, kind TEXT, terminal_id INTEGER, batch_no INTEGER, seq INTEGER,
         purchase_minor INTEGER, categories TEXT, received_at INTEGER, posted_at INTEGER)";

/// The same rows, in the same order, into `table` (same pragmas as the
/// ledger, one transaction): the storage floor.
fn raw_insert(path: &Path, table: &str, rows: &[([u8; 8], LogRecord)]) -> f64 {
    let mut conn = Connection::open(path).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "FULL").unwrap();
    conn.pragma_update(None, "cache_size", -32_768).unwrap();
    conn.execute_batch(table).unwrap();
    let start = Instant::now();
    let tx = conn.transaction().unwrap();
    {
        let mut stmt = tx
            .prepare("INSERT INTO t VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)")
            .unwrap();
        for (i, (id, r)) in rows.iter().enumerate() {
            stmt.execute(params![
                &id[..],
                r.counter,
                "posted",
                "earn",
                r.amount,
                i64::from(r.amount),
                r.balance_after,
                r.terminal_id,
                r.terminal_seq,
                r.time,
                r.reference,
                &r.certificate[..],
                "completion",
                TERMINAL,
                1,
                i + 1,
                1_000,
                None::<String>,
                T0,
                T0
            ])
            .unwrap();
        }
    }
    tx.commit().unwrap();
    start.elapsed().as_secs_f64()
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    // `TESSERA_BENCH_RECORDS=200000` for a quicker run.
    let n: u32 = std::env::var("TESSERA_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 1_000_000 } else { 20_000 });
    let dir = tempfile::tempdir().unwrap();
    let keys = IssuerKeys::test().unwrap();
    let cert_keys: Vec<Key> = (0..CARDS).map(|c| keys.card_cert_key(&card_id(c))).collect();

    let batch = dir.path().join("batch.jsonl");
    let t = Instant::now();
    generate(&batch, n, &keys, &cert_keys);
    let size = std::fs::metadata(&batch).unwrap().len();
    println!(
        "generated {n} records ({:.1} MiB) in {:.1} s",
        size as f64 / 1_048_576.0,
        t.elapsed().as_secs_f64()
    );

    let mut ledger = Ledger::open(&dir.path().join("ledger.sqlite"), LedgerKeys::from_issuer(&keys)).unwrap();
    ledger.register_terminal(TERMINAL, T0).unwrap();
    let hwm_before = vm_hwm_kib();
    let t = Instant::now();
    let out = ledger
        .ingest_send(BufReader::with_capacity(1 << 16, File::open(&batch).unwrap()), T0 + n)
        .unwrap();
    let ingest_s = t.elapsed().as_secs_f64();
    let hwm_after = vm_hwm_kib();
    assert_eq!(out.ack.status, AckStatus::Posted);
    assert_eq!((out.report.posted, out.report.exceptions_total), (n, 0));

    let t = Instant::now();
    let dup = ledger
        .ingest_send(BufReader::with_capacity(1 << 16, File::open(&batch).unwrap()), T0 + n)
        .unwrap();
    let dup_s = t.elapsed().as_secs_f64();
    assert_eq!(dup.ack.status, AckStatus::Duplicate);
    let liability = ledger.liability(1).unwrap();
    assert_eq!(liability.points_outstanding, 10 * i64::from(n));
    drop(ledger);

    // Rows prepared before the clock starts: only storage is measured.
    let rows: Vec<([u8; 8], LogRecord)> = (0..n).map(|i| record(i, &cert_keys)).collect();
    let raw_s = raw_insert(&dir.path().join("raw.sqlite"), FLOOR_TABLE, &rows);
    let heap_s = raw_insert(&dir.path().join("heap.sqlite"), HEAP_TABLE, &rows);
    let clustered = FLOOR_TABLE.replace(
        ");\n     CREATE UNIQUE INDEX t_key ON t (card_id, counter)",
        ", PRIMARY KEY (card_id, counter)) WITHOUT ROWID",
    );
    assert!(clustered.ends_with("WITHOUT ROWID"));
    let clustered_s = raw_insert(&dir.path().join("clustered.sqlite"), &clustered, &rows);
    drop(rows);
    let ingest_rate = f64::from(n) / ingest_s;
    let raw_rate = f64::from(n) / raw_s;
    println!();
    println!(
        "| measure ({n} card transactions, each after its decision: {} journal records; {CARDS} cards) | value |",
        2 * n
    );
    println!("|---|---|");
    println!(
        "| ingest: verified and posted | {ingest_s:.2} s, {ingest_rate:.0} card transactions/s (decisions matched) |"
    );
    println!(
        "| raw insert of the same rows, same order, same columns and unique (card, counter) key, one tx | {raw_s:.2} s, {raw_rate:.0} rows/s |"
    );
    println!("| ingest / raw | {:.2} |", ingest_rate / raw_rate);
    println!(
        "| (reference: the same rows into a WITHOUT ROWID table keyed by (card, counter), schema 1) | {clustered_s:.2} s, {:.0} rows/s |",
        f64::from(n) / clustered_s
    );
    println!(
        "| (reference: the same rows into a table without any key) | {heap_s:.2} s, {:.0} rows/s |",
        f64::from(n) / heap_s
    );
    println!(
        "| duplicate upload (verify only) | {dup_s:.2} s, {:.0} records/s |",
        f64::from(n) / dup_s
    );
    println!(
        "| peak RSS (VmHWM) before / after ingest | {} / {} KiB (+{} KiB) |",
        hwm_before,
        hwm_after,
        hwm_after.saturating_sub(hwm_before)
    );
    println!(
        "| targets | ≥ 100,000 records/s: {}; ≥ half the raw rate: {} |",
        if ingest_rate >= 100_000.0 { "met" } else { "NOT met" },
        if ingest_rate * 2.0 >= raw_rate {
            "met"
        } else {
            "NOT met"
        }
    );
}
