//! The analytics suite on both backends: one seeded chain history (a few
//! hundred customers, campaigns with holdouts, several stores and tills,
//! settled week by week through the real settlement path) posted batch by
//! batch to the SQLite ledger and, after the registrations moved with
//! `copy_ledger` (as `office migrate` does), to PostgreSQL, whose posting
//! maintains its warehouse in each batch's transaction. Every report the
//! office prints — RFM, cohorts, CLV with its fitted models, campaigns with
//! uplift, stores, categories and points per day, week and month,
//! households, the summary and every customer's drill-down — must be the
//! same on both, and so must the liability and the dashboard built from
//! them all; and on PostgreSQL the warehouse maintained batch by batch
//! must equal the one rebuilt from its books.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use tessera_crypto::keys::IssuerKeys;
use tessera_ledger::{Ledger, LedgerKeys, Period, Warehouse};
use tessera_ledger_pg::cluster::Cluster;
use tessera_ledger_pg::posting::{PgLedger, Status};
use tessera_office::analytics;

/// Every report of `office report`, as JSON (floats included: both
/// backends hand the models the same facts in the same order).
fn reports(w: &dyn Warehouse, now: u32) -> Vec<(String, serde_json::Value)> {
    let j = |v: serde_json::Result<serde_json::Value>| v.unwrap();
    let mut out = vec![
        (
            "rfm".to_owned(),
            j(serde_json::to_value(analytics::rfm(w, now).unwrap())),
        ),
        (
            "cohorts".to_owned(),
            j(serde_json::to_value(analytics::cohorts(w).unwrap())),
        ),
        (
            "clv".to_owned(),
            j(serde_json::to_value(analytics::customer_value(w, now).unwrap())),
        ),
        (
            "campaigns".to_owned(),
            j(serde_json::to_value(analytics::campaigns(w).unwrap())),
        ),
        (
            "households".to_owned(),
            j(serde_json::to_value(analytics::households(w).unwrap())),
        ),
        (
            "summary".to_owned(),
            j(serde_json::to_value(analytics::summary(w, now).unwrap())),
        ),
        (
            "customer facts".to_owned(),
            j(serde_json::to_value(w.customer_facts(now).unwrap())),
        ),
    ];
    for p in [Period::Day, Period::Week, Period::Month] {
        out.push((
            format!("stores {p:?}"),
            j(serde_json::to_value(analytics::stores(w, p).unwrap())),
        ));
        out.push((
            format!("categories {p:?}"),
            j(serde_json::to_value(analytics::categories(w, p).unwrap())),
        ));
        out.push((
            format!("points {p:?}"),
            j(serde_json::to_value(analytics::points_economy(w, p, 1).unwrap())),
        ));
    }
    for f in w.customer_facts(now).unwrap() {
        if let Some(id) = f.customer_id {
            out.push((
                format!("drill-down of customer {id}"),
                j(serde_json::to_value(w.customer_purchases(id).unwrap())),
            ));
        }
    }
    out
}

fn assert_same(what: &str, a: &[(String, serde_json::Value)], b: &[(String, serde_json::Value)]) {
    assert_eq!(a.len(), b.len(), "{what}: not the same reports");
    for ((name, x), (_, y)) in a.iter().zip(b) {
        assert_eq!(x, y, "{what}: the {name} report differs");
    }
}

#[test]
fn every_report_is_the_same_on_sqlite_and_on_postgresql() {
    let keys = IssuerKeys::test().unwrap();
    let mut spec = tessera_synth::Spec::benchmark(7, 300, 4_000);
    spec.stores = 3;
    spec.terminals_per_store = 2;
    let generator = tessera_synth::Generator::new(&spec).unwrap();
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("ledger.sqlite");
    let start = spec.start_unix();
    let mut sqlite = Ledger::open(&path, LedgerKeys::from_issuer(&keys)).unwrap();
    generator.register(&mut sqlite, &keys, start).unwrap();
    drop(sqlite);

    // The registered books (customers, cards, stores, tills, the policy
    // and the campaigns) move to PostgreSQL before any batch posts.
    let cluster = Cluster::start().unwrap();
    let mut client = tessera_ledger_pg::connect(cluster.url()).unwrap();
    tessera_ledger_pg::copy::copy_ledger(&path, &mut client).unwrap();
    drop(client);
    let mut pg = PgLedger::open(cluster.url(), LedgerKeys::from_issuer(&keys)).unwrap();
    let mut sqlite = Ledger::open_existing(&path, LedgerKeys::from_issuer(&keys)).unwrap();

    let mut batches = 0u64;
    let summary = generator
        .run(&keys, |b| -> Result<(), tessera_synth::SynthError> {
            tessera_synth::ingest(&mut sqlite, &b)?;
            let out = pg.ingest(&b.bytes, b.received_at()).unwrap();
            assert_eq!(out.status, Status::Posted, "batch {batches} posted on PostgreSQL");
            batches += 1;
            Ok(())
        })
        .unwrap();
    assert!(batches > 20, "a history of many batches ({batches})");
    assert!(summary.card_transactions > 4_000);
    let now = summary.last_purchase_at + 86_400;

    // The facts are there, on both, one per posted transaction.
    let facts = |w: &dyn Warehouse| {
        w.warehouse_db()
            .first("SELECT COUNT(*) FROM wh_fact_tx", &[], |r| r.count(0))
            .unwrap()
            .unwrap()
    };
    assert_eq!(facts(&sqlite), summary.card_transactions);
    assert_eq!(facts(&pg), summary.card_transactions);
    assert!(!pg.warehouse_stale().unwrap());

    let on_sqlite = reports(&sqlite, now);
    let on_pg = reports(&pg, now);
    assert!(on_sqlite.len() > 200, "every customer's drill-down is compared");
    assert_same("SQLite and PostgreSQL", &on_sqlite, &on_pg);
    // The liability, from the books beside the warehouse, and the
    // dashboard built from all of them (every customer's page with its
    // transactions): the same on both.
    assert_eq!(sqlite.liability(1).unwrap(), Warehouse::liability(&pg, 1).unwrap());
    assert!(Warehouse::liability(&pg, 1).unwrap().points_outstanding > 0);
    let zone = tessera_terminal::display::Zone::utc();
    let currency = tessera_office::dashboard::Currency::office();
    let dashboard = |w: &dyn Warehouse| tessera_office::dashboard::collect(w, now, &zone, &currency).unwrap();
    let (d_sqlite, d_pg) = (dashboard(&sqlite), dashboard(&pg));
    assert!(d_pg.customers.len() >= 300 && d_pg.customers.iter().any(|c| !c.transactions.is_empty()));
    assert_eq!(d_sqlite, d_pg);
    // The reports of the books themselves: reconciliation per till and
    // day, the explanation of every point, the exceptions.
    let zone = tessera_terminal::display::Zone::utc();
    let rec_pg = Warehouse::reconciliation(&pg, None, None, &zone).unwrap();
    assert!(rec_pg.rows.len() > 20, "a row per till and day");
    let rec_sqlite = sqlite.reconciliation(None, None, &zone).unwrap();
    assert_eq!(rec_sqlite.rows.len(), rec_pg.rows.len());
    for (x, y) in rec_sqlite.rows.iter().zip(&rec_pg.rows) {
        assert_eq!(x, y);
    }
    assert_eq!(rec_sqlite, rec_pg);
    let explained = Warehouse::explanation(&pg).unwrap();
    assert_eq!(sqlite.explanation().unwrap(), explained);
    assert_eq!(explained.posted_points, explained.points_outstanding);
    let classes = |w: &dyn Warehouse| {
        let mut v = Vec::new();
        w.each_exception(&mut |e| {
            v.push((e.class, e.card_id, e.counter, e.terminal_id, e.batch_no));
            Ok(())
        })
        .unwrap();
        v.sort();
        v
    };
    assert_eq!(classes(&sqlite), classes(&pg));

    // Maintained batch by batch, the warehouse on PostgreSQL equals the
    // one built again from its books.
    assert_eq!(pg.rebuild_warehouse().unwrap(), summary.card_transactions);
    assert_same("PostgreSQL maintained and rebuilt", &on_pg, &reports(&pg, now));
}
