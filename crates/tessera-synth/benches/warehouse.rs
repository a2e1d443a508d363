//! The warehouse benchmark (issue 12, §5): one generated chain history,
//! ingested into two fresh ledgers side by side, and the reports timed
//! against plain SQL over the same data.
//!
//! 1. The history of [`Spec::benchmark`] (50 stores of 4 terminals, a
//!    year, weekly settlement) is generated once into batch files.
//! 2. Two fresh ledgers register the same chain; then every batch, in the
//!    order the office receives them, is ingested into ledger A and right
//!    after into ledger B, each ingestion timed on its own: both see the
//!    same machine load, batch by batch.
//! 3. With the same history in a ledger, each report is timed ([`time`])
//!    beside a plain SQL aggregation answering the same question.
//!
//! The ledgers live in `/dev/shm` when it exists (tmpfs: the disk's
//! flushes, a few milliseconds each and the same for both ledgers, are not
//! what is measured), else in the temporary directory;
//! `TESSERA_BENCH_DIR` chooses another place.
//!
//! `cargo bench -p tessera-synth --bench warehouse` runs 100,000 customers
//! and 2,000,000 purchases; without `--bench` (as `cargo test
//! --all-targets` runs it) a tiny history, only to prove it works.
//! `TESSERA_BENCH_CUSTOMERS` and `TESSERA_BENCH_PURCHASES` set the size.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rusqlite::Connection;
use tessera_crypto::keys::IssuerKeys;
use tessera_ledger::Warehouse as _;
use tessera_ledger::{Ledger, LedgerKeys};
use tessera_synth::{ingest, Batch, Generator, Summary, SynthError};

/// Runs `f`, prints how long it took under `label`, returns its value and
/// the seconds.
fn time<T>(label: &str, f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let v = f();
    let s = t.elapsed().as_secs_f64();
    println!("  {label}: {s:.3} s");
    (v, s)
}

/// A batch written to a file.
struct BatchFile {
    terminal_id: u32,
    batch_no: u32,
    sealed_at: u32,
    path: PathBuf,
}

impl BatchFile {
    fn load(&self) -> Batch {
        Batch {
            terminal_id: self.terminal_id,
            batch_no: self.batch_no,
            sealed_at: self.sealed_at,
            bytes: std::fs::read(&self.path).unwrap(),
        }
    }
}

/// A ledger loaded with the history, and what loading it cost.
struct Loaded {
    ledger: Ledger,
    path: PathBuf,
    register_s: f64,
    ingest_s: f64,
}

fn fresh(dir: &Path, name: &str, g: &Generator, keys: &IssuerKeys) -> Loaded {
    let path = dir.join(format!("{name}.sqlite"));
    let mut ledger = Ledger::open(&path, LedgerKeys::from_issuer(keys)).unwrap();
    let ((), register_s) = time(&format!("register the chain in ledger {name}"), || {
        g.register(&mut ledger, keys, g.spec().start_unix()).unwrap();
    });
    Loaded {
        ledger,
        path,
        register_s,
        ingest_s: 0.0,
    }
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

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1_048_576.0
}

fn file_size(path: &Path) -> u64 {
    let wal = path.with_extension("sqlite-wal");
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) + std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let spec = tessera_synth::bench_spec(full);
    let (customers, purchases) = (spec.customers, spec.purchases);
    let base = tessera_synth::bench_dir();
    let dir = tempfile::tempdir_in(&base).unwrap();
    let batch_dir = tempfile::tempdir().unwrap();
    let keys = IssuerKeys::test().unwrap();
    println!(
        "warehouse benchmark: {customers} customers, {purchases} purchases, {} stores × {} terminals, {} days from {}, ledgers in {}",
        spec.stores,
        spec.terminals_per_store,
        spec.days,
        spec.start,
        base.display()
    );

    // 1. The history, once, into batch files.
    let (g, fit_s) = time("draw the customers and fit the rate scale", || {
        Generator::new(&spec).unwrap()
    });
    let mut files = Vec::new();
    let mut batch_bytes = 0u64;
    let (summary, gen_s): (Summary, f64) = time("generate the batches", || {
        g.run::<SynthError>(&keys, |b| {
            let path = batch_dir.path().join(format!("{:07}.jsonl", files.len()));
            let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
            f.write_all(&b.bytes).unwrap();
            f.flush().unwrap();
            batch_bytes += b.bytes.len() as u64;
            files.push(BatchFile {
                terminal_id: b.terminal_id,
                batch_no: b.batch_no,
                sealed_at: b.sealed_at,
                path,
            });
            Ok(())
        })
        .unwrap()
    });
    println!("  {summary:?}");

    // 2. Two fresh ledgers, the same batches, side by side.
    let mut a = fresh(dir.path(), "a", &g, &keys);
    let mut b = fresh(dir.path(), "b", &g, &keys);
    // A without warehouse maintenance, B with it.
    a.ledger.set_warehouse(false);
    b.ledger.set_warehouse(true);
    let hwm_before = vm_hwm_kib();
    for f in &files {
        let batch = f.load();
        for l in [&mut a, &mut b] {
            let t = Instant::now();
            ingest(&mut l.ledger, &batch).unwrap();
            l.ingest_s += t.elapsed().as_secs_f64();
        }
    }
    let hwm_after = vm_hwm_kib();
    println!(
        "  ingest: A (warehouse off) {:.2} s, B (on) {:.2} s, B / A = {:.3}",
        a.ingest_s,
        b.ingest_s,
        b.ingest_s / a.ingest_s
    );
    for l in [&a, &b] {
        assert!(l.ledger.exceptions().unwrap().is_empty());
        let ex = l.ledger.explanation().unwrap();
        assert!(ex.explained, "{:?}", ex.problems);
        assert_eq!(ex.matched_records, summary.card_transactions);
    }

    // 3. Reports against plain SQL on the same data (ledger B).
    println!("reports (ledger B):");
    let now = summary.last_purchase_at + 86_400;
    let (report, report_s) = time("customers report (Ledger::customers_report)", || {
        b.ledger.customers_report(now).unwrap()
    });
    let conn = Connection::open(&b.path).unwrap();
    let (plain_rows, plain_s) = time(
        "plain SQL: transactions, days and spend per card, with its customer",
        || {
            let mut stmt = conn
                .prepare(
                    "SELECT c.customer_id, t.card_id, COUNT(*), COUNT(DISTINCT t.card_time / 86400),
                            SUM(CASE WHEN t.tx_type = 'earn' THEN t.purchase_minor ELSE 0 END)
                     FROM card_transactions t LEFT JOIN cards c ON c.card_id = t.card_id
                     WHERE t.status = 'posted' GROUP BY t.card_id",
                )
                .unwrap();
            let rows = stmt.query_map([], |r| r.get::<_, i64>(2)).unwrap();
            rows.count()
        },
    );
    assert_eq!(plain_rows as u64, summary.active_customers);
    let mut queries = vec![(
        format!(
            "customers report ({} rows) / plain SQL per card ({plain_rows} rows)",
            report.rows.len()
        ),
        report_s,
        plain_s,
    )];
    let plain = |label: &str, sql: &str| {
        time(&format!("plain SQL: {label}"), || {
            conn.prepare(sql).unwrap().query_map([], |_| Ok(())).unwrap().count()
        })
    };
    let (n, s) = time("warehouse: customer facts", || {
        b.ledger.customer_facts(now).unwrap().len()
    });
    let (m, ps) = plain(
        "purchases, days, first and last visit, spend per card",
        "SELECT card_id, COUNT(*), COUNT(DISTINCT card_time / 86400), MIN(card_time), MAX(card_time), SUM(purchase_minor)
         FROM card_transactions WHERE status = 'posted' AND tx_type = 'earn' GROUP BY card_id",
    );
    queries.push((format!("customer facts ({n} rows) / plain SQL ({m} rows)"), s, ps));
    let (n, s) = time("warehouse: cohorts", || b.ledger.cohorts().unwrap().len());
    let (m, ps) = plain(
        "cards active per first-purchase month and month",
        "WITH p AS (SELECT card_id, strftime('%Y-%m', card_time, 'unixepoch') AS month FROM card_transactions
                    WHERE status = 'posted' AND tx_type = 'earn'),
              f AS (SELECT card_id, MIN(month) AS cohort FROM p GROUP BY card_id)
         SELECT f.cohort, p.month, COUNT(DISTINCT p.card_id) FROM p JOIN f ON f.card_id = p.card_id GROUP BY 1, 2",
    );
    queries.push((format!("cohorts ({n} cells) / plain SQL ({m} cells)"), s, ps));
    let (n, s) = time("warehouse: store performance by month", || {
        b.ledger
            .store_performance(tessera_ledger::warehouse::Period::Month)
            .unwrap()
            .len()
    });
    let (m, ps) = plain(
        "purchases, customers, spend, points per store and month",
        "SELECT strftime('%Y-%m', t.card_time, 'unixepoch'), tm.store_id,
                SUM(t.tx_type = 'earn'), COUNT(DISTINCT CASE WHEN t.tx_type = 'earn' THEN t.card_id END),
                SUM(CASE WHEN t.tx_type = 'earn' THEN t.purchase_minor ELSE 0 END),
                SUM(CASE WHEN t.tx_type = 'earn' THEN t.points ELSE 0 END),
                SUM(CASE WHEN t.tx_type = 'redeem' THEN t.points ELSE 0 END)
         FROM card_transactions t JOIN terminals tm ON tm.terminal_id = t.origin_terminal
         WHERE t.status = 'posted' GROUP BY 1, 2",
    );
    queries.push((
        format!("store performance by month ({n} rows) / plain SQL ({m} rows)"),
        s,
        ps,
    ));
    let (n, s) = time("warehouse: points economy by month", || {
        b.ledger
            .points_economy(tessera_ledger::warehouse::Period::Month)
            .unwrap()
            .len()
    });
    let (m, ps) = plain(
        "points per type and month",
        "SELECT strftime('%Y-%m', card_time, 'unixepoch'), tx_type, SUM(points) FROM card_transactions
         WHERE status = 'posted' GROUP BY 1, 2",
    );
    queries.push((
        format!("points economy by month ({n} rows) / plain SQL ({m} rows)"),
        s,
        ps,
    ));
    let (n, s) = time("warehouse: category performance by month", || {
        b.ledger
            .category_performance(tessera_ledger::warehouse::Period::Month)
            .unwrap()
            .len()
    });
    queries.push((format!("category performance by month ({n} rows)"), s, f64::NAN));
    let (n, s) = time("warehouse: households", || b.ledger.households().unwrap().len());
    queries.push((format!("households ({n} rows)"), s, f64::NAN));
    let (n, s) = time("warehouse: campaign outcomes", || {
        b.ledger.campaign_outcomes().unwrap().len()
    });
    queries.push((format!("campaign outcomes ({n} rows)"), s, f64::NAN));

    let records = summary.journal_records as f64;
    println!();
    println!(
        "| measure ({customers} customers, {purchases} purchases: {} card transactions, {} journal records in {} batches of {} terminals) | value |",
        summary.card_transactions, summary.journal_records, summary.batches, summary.terminals
    );
    println!("|---|---|");
    println!("| draw customers, fit the rate scale | {fit_s:.2} s |");
    println!(
        "| generate the batches (decisions, certificates, hash chains, MACs) | {gen_s:.2} s, {:.1} MiB |",
        mib(batch_bytes)
    );
    println!(
        "| register the chain (stores, terminals, customers, cards, policy, campaigns), A / B | {:.2} s / {:.2} s |",
        a.register_s, b.register_s
    );
    println!(
        "| ingest into A (warehouse maintenance off) | {:.2} s, {:.0} records/s |",
        a.ingest_s,
        records / a.ingest_s
    );
    println!(
        "| ingest into B (warehouse maintenance on) | {:.2} s, {:.0} records/s |",
        b.ingest_s,
        records / b.ingest_s
    );
    println!(
        "| B / A (the warehouse's share of ingestion: B / A − 1) | {:.3} ({:+.1} %) |",
        b.ingest_s / a.ingest_s,
        (b.ingest_s / a.ingest_s - 1.0) * 100.0
    );
    println!(
        "| ledger files, A / B | {:.1} MiB / {:.1} MiB |",
        mib(file_size(&a.path)),
        mib(file_size(&b.path))
    );
    for (label, s, ps) in &queries {
        if ps.is_nan() {
            println!("| {label} | {s:.3} s |");
        } else {
            println!("| {label} | {s:.3} s / {ps:.3} s = {:.2} |", s / ps);
        }
    }
    println!(
        "| peak RSS (VmHWM) before / after ingest | {hwm_before} / {hwm_after} KiB (+{} KiB) |",
        hwm_after.saturating_sub(hwm_before)
    );
}
