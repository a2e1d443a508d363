//! The analytics reports on the same chain history on both backends, side
//! by side in one run (issue: scale-out, §3): one seeded history
//! ([`tessera_synth::Spec::benchmark`]) generated and settled into the
//! SQLite ledger with its warehouse maintained, the books copied to a
//! private PostgreSQL cluster with `copy_ledger` (what `office migrate`
//! does, verified), then each `office report` (the library call behind it,
//! models included) timed on SQLite and on PostgreSQL, one after the
//! other, and their results compared.
//!
//! `cargo bench --bench analytics_backends` runs 100,000 customers and
//! 2,000,000 purchases; without `--bench` (as `cargo test --all-targets`
//! runs it) a tiny history, only to prove it works.
//! `TESSERA_BENCH_CUSTOMERS` and `TESSERA_BENCH_PURCHASES` set the size;
//! the SQLite ledger lives in `/dev/shm` when it exists
//! (`TESSERA_BENCH_DIR` chooses another place), the cluster in `TMPDIR`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Instant;

use tessera_crypto::keys::IssuerKeys;
use tessera_ledger::{Ledger, LedgerKeys, Period, Warehouse};
use tessera_ledger_pg::cluster::Cluster;
use tessera_ledger_pg::posting::PgLedger;
use tessera_office::analytics;

fn time<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let v = f();
    (v, t.elapsed().as_secs_f64())
}

type Report<'a> = (String, Box<dyn Fn(&dyn Warehouse) -> serde_json::Value + 'a>);

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let spec = tessera_synth::bench_spec(full);
    let (customers, purchases) = (spec.customers, spec.purchases);
    let base = tessera_synth::bench_dir();
    let dir = tempfile::tempdir_in(&base).unwrap();
    let path = dir.path().join("ledger.sqlite");
    let keys = IssuerKeys::test().unwrap();
    let mut sqlite = Ledger::open(&path, LedgerKeys::from_issuer(&keys)).unwrap();
    let end = spec.start_unix() + spec.days * 86_400;
    let (summary, load_s) = time(|| tessera_synth::generate_into(&spec, &mut sqlite, &keys, end).unwrap());
    let cluster = Cluster::start().unwrap();
    let (tables, copy_s) = time(|| {
        let mut client = tessera_ledger_pg::connect(cluster.url()).unwrap();
        tessera_ledger_pg::copy::copy_ledger(&path, &mut client).unwrap()
    });
    assert!(tables.iter().all(|t| t.equal()), "the copy is proved equal");
    let pg = PgLedger::open(cluster.url(), LedgerKeys::from_issuer(&keys)).unwrap();
    println!(
        "analytics on both backends: {customers} customers, {purchases} purchases ({} card transactions), \
         generated and settled into SQLite in {load_s:.1} s, copied to PostgreSQL and verified in {copy_s:.1} s",
        summary.card_transactions
    );
    let now = summary.last_purchase_at + 86_400;
    let json = |v: serde_json::Result<serde_json::Value>| v.unwrap();
    let reports: Vec<Report<'_>> = vec![
        (
            "office report rfm".into(),
            Box::new(|w| json(serde_json::to_value(analytics::rfm(w, now).unwrap()))),
        ),
        (
            "office report cohorts".into(),
            Box::new(|w| json(serde_json::to_value(analytics::cohorts(w).unwrap()))),
        ),
        (
            "office report clv (BG/NBD and Gamma-Gamma fitted)".into(),
            Box::new(|w| json(serde_json::to_value(analytics::customer_value(w, now).unwrap()))),
        ),
        (
            "office report campaigns".into(),
            Box::new(|w| json(serde_json::to_value(analytics::campaigns(w).unwrap()))),
        ),
        (
            "office report stores --period month".into(),
            Box::new(|w| json(serde_json::to_value(analytics::stores(w, Period::Month).unwrap()))),
        ),
        (
            "office report categories --period month".into(),
            Box::new(|w| json(serde_json::to_value(analytics::categories(w, Period::Month).unwrap()))),
        ),
        (
            "office report households".into(),
            Box::new(|w| json(serde_json::to_value(analytics::households(w).unwrap()))),
        ),
        (
            "office report points --period month".into(),
            Box::new(|w| {
                json(serde_json::to_value(
                    analytics::points_economy(w, Period::Month, 1).unwrap(),
                ))
            }),
        ),
        (
            "a customer's drill-down (customer 1)".into(),
            Box::new(|w| json(serde_json::to_value(w.customer_purchases(1).unwrap()))),
        ),
    ];
    println!();
    println!("| report ({customers} customers, {purchases} purchases) | SQLite | PostgreSQL | PostgreSQL / SQLite | same result |");
    println!("|---|---|---|---|---|");
    let (mut total_s, mut total_p) = (0.0, 0.0);
    for (label, f) in &reports {
        let (a, s) = time(|| f(&sqlite));
        let (b, p) = time(|| f(&pg));
        total_s += s;
        total_p += p;
        println!(
            "| {label} | {s:.3} s | {p:.3} s | {:.2} | {} |",
            p / s,
            if a == b { "yes" } else { "NO" }
        );
        assert_eq!(a, b, "{label}: the backends disagree");
    }
    println!(
        "| every report | {total_s:.3} s | {total_p:.3} s | {:.2} | |",
        total_p / total_s
    );
}
