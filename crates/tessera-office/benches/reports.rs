//! The office's analytics reports and dashboard pages, timed beside a
//! plain SQL aggregation of the same question on the same data, in one
//! run (issue 12, §5).
//!
//! A chain history ([`tessera_synth::Spec::benchmark`]) is generated into
//! one ledger with the warehouse maintained; then each report of
//! `tessera_office::analytics` (what `office report NAME` prints, models
//! included), the dashboard's collection of every figure and the rendering
//! of its pages are timed, each beside the plain SQL over the books that
//! answers the same question without the warehouse (where there is one).
//!
//! `cargo bench -p tessera-office --bench reports` runs 100,000 customers
//! and 2,000,000 purchases; without `--bench` (as `cargo test
//! --all-targets` runs it) a tiny history, only to prove it works.
//! `TESSERA_BENCH_CUSTOMERS` and `TESSERA_BENCH_PURCHASES` set the size;
//! the ledger lives in `/dev/shm` when it exists (`TESSERA_BENCH_DIR`
//! chooses another place).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Instant;

use rusqlite::Connection;
use tessera_crypto::keys::IssuerKeys;
use tessera_ledger::{Ledger, LedgerKeys, Period};
use tessera_office::{analytics, dashboard};

fn time<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let v = f();
    (v, t.elapsed().as_secs_f64())
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let spec = tessera_synth::bench_spec(full);
    let (customers, purchases) = (spec.customers, spec.purchases);
    let base = tessera_synth::bench_dir();
    let dir = tempfile::tempdir_in(&base).unwrap();
    let path = dir.path().join("ledger.sqlite");
    let keys = IssuerKeys::test().unwrap();
    let mut ledger = Ledger::open(&path, LedgerKeys::from_issuer(&keys)).unwrap();
    let end = spec.start_unix() + spec.days * 86_400;
    let (summary, load_s) = time(|| tessera_synth::generate_into(&spec, &mut ledger, &keys, end).unwrap());
    println!(
        "office reports benchmark: {customers} customers, {purchases} purchases ({} card transactions), \
         generated and ingested in {load_s:.1} s, ledger in {}",
        summary.card_transactions,
        base.display()
    );
    let now = summary.last_purchase_at + 86_400;
    let conn = Connection::open(&path).unwrap();
    let plain = |sql: &str| time(|| conn.prepare(sql).unwrap().query_map([], |_| Ok(())).unwrap().count());
    let mut rows: Vec<(String, f64, Option<f64>)> = Vec::new();

    let (r, s) = time(|| analytics::rfm(&ledger, now).unwrap());
    let (_, p) = plain(
        "SELECT t.card_id, MAX(t.card_time), COUNT(DISTINCT t.card_time / 86400),
                SUM(CASE WHEN t.tx_type = 'earn' THEN t.purchase_minor ELSE 0 END)
         FROM card_transactions t WHERE t.status = 'posted' GROUP BY t.card_id",
    );
    rows.push((
        format!("office report rfm ({} customers scored)", r.customers),
        s,
        Some(p),
    ));

    let (r, s) = time(|| analytics::cohorts(&ledger).unwrap());
    let (_, p) = plain(
        "WITH p AS (SELECT card_id, strftime('%Y-%m', card_time, 'unixepoch') AS month FROM card_transactions
                    WHERE status = 'posted' AND tx_type = 'earn'),
              f AS (SELECT card_id, MIN(month) AS cohort FROM p GROUP BY card_id)
         SELECT f.cohort, p.month, COUNT(DISTINCT p.card_id) FROM p JOIN f ON f.card_id = p.card_id GROUP BY 1, 2",
    );
    rows.push((format!("office report cohorts ({} cohorts)", r.rows.len()), s, Some(p)));

    let (r, s) = time(|| analytics::customer_value(&ledger, now).unwrap());
    let (_, p) = plain(
        "SELECT card_id, COUNT(DISTINCT card_time / 86400), MIN(card_time), MAX(card_time), SUM(purchase_minor)
         FROM card_transactions WHERE status = 'posted' AND tx_type = 'earn' GROUP BY card_id",
    );
    rows.push((
        format!(
            "office report clv ({} customers; BG/NBD and Gamma-Gamma fitted)",
            r.rows.len()
        ),
        s,
        Some(p),
    ));

    let (r, s) = time(|| analytics::campaigns(&ledger).unwrap());
    rows.push((format!("office report campaigns ({} campaigns)", r.rows.len()), s, None));

    let (r, s) = time(|| analytics::stores(&ledger, Period::Month).unwrap());
    let (_, p) = plain(
        "SELECT strftime('%Y-%m', t.card_time, 'unixepoch'), tm.store_id,
                SUM(t.tx_type = 'earn'), COUNT(DISTINCT CASE WHEN t.tx_type = 'earn' THEN t.card_id END),
                SUM(CASE WHEN t.tx_type = 'earn' THEN t.purchase_minor ELSE 0 END)
         FROM card_transactions t JOIN terminals tm ON tm.terminal_id = t.origin_terminal
         WHERE t.status = 'posted' GROUP BY 1, 2",
    );
    rows.push((
        format!("office report stores --period month ({} rows)", r.rows.len()),
        s,
        Some(p),
    ));

    let (r, s) = time(|| analytics::categories(&ledger, Period::Month).unwrap());
    rows.push((
        format!("office report categories --period month ({} rows)", r.rows.len()),
        s,
        None,
    ));

    let (r, s) = time(|| analytics::households(&ledger).unwrap());
    rows.push((format!("office report households ({} rows)", r.rows.len()), s, None));

    let (r, s) = time(|| analytics::points_economy(&ledger, Period::Month, 1).unwrap());
    let (_, p) = plain(
        "SELECT strftime('%Y-%m', card_time, 'unixepoch'), tx_type, SUM(points) FROM card_transactions
         WHERE status = 'posted' GROUP BY 1, 2",
    );
    rows.push((
        format!("office report points --period month ({} rows)", r.rows.len()),
        s,
        Some(p),
    ));

    let zone = dashboard::Zone::utc();
    let currency = dashboard::Currency::euro();
    // What `office serve` does per request: the figures once per change
    // of the ledger (then kept), a customer's drill-down every time.
    let (data, s) = time(|| dashboard::collect_for(&ledger, now, &zone, &currency, Some("index.html")).unwrap());
    rows.push((
        "office serve: the figures, once per change of the ledger (then reused)".into(),
        s,
        None,
    ));
    let (_, s) = time(|| dashboard::page(&data, &zone, "index.html").unwrap());
    rows.push(("office serve: index.html from the kept figures".into(), s, None));
    let (_, s) = time(|| {
        let mut c = data.customers.iter().find(|c| c.key == "c1").unwrap().clone();
        c.transactions = dashboard::customer_transactions(&ledger, &zone, 1).unwrap();
        dashboard::customer_page_of(&data, &zone, &c)
    });
    let (_, p) =
        plain("SELECT * FROM card_transactions t JOIN cards c ON c.card_id = t.card_id WHERE c.customer_id = 1");
    rows.push((
        "office serve: customer-c1.html (its transactions read)".into(),
        s,
        Some(p),
    ));
    let (data, s) = time(|| dashboard::collect(&ledger, now, &zone, &currency).unwrap());
    rows.push((
        format!(
            "office dashboard --out: collect every figure ({} customers with drill-down)",
            data.customers.len()
        ),
        s,
        None,
    ));
    for name in [
        "index.html",
        "segments.html",
        "cohorts.html",
        "campaigns.html",
        "stores.html",
        "points.html",
    ] {
        let (_, s) = time(|| dashboard::page(&data, &zone, name).unwrap());
        rows.push((format!("dashboard: render {name}"), s, None));
    }
    let (_, s) = time(|| dashboard::page(&data, &zone, "customers.html").unwrap());
    rows.push(("dashboard: render customers.html".into(), s, None));

    println!();
    println!("| question ({customers} customers, {purchases} purchases) | report | plain SQL | ratio |");
    println!("|---|---|---|---|");
    for (label, s, p) in rows {
        match p {
            Some(p) => println!("| {label} | {s:.3} s | {p:.3} s | {:.2} |", s / p),
            None => println!("| {label} | {s:.3} s | | |"),
        }
    }
}
