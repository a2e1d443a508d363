//! The generated history through the real ledger: every batch posted with
//! no exception, the books sound, and the ledger's counts and amounts what
//! the generator says it produced.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use rusqlite::Connection;
use sha2::{Digest, Sha256};
use tessera_crypto::keys::IssuerKeys;
use tessera_ledger::{Ledger, LedgerKeys};
use tessera_protocol::profile::Date;
use tessera_synth::{demo_spec, generate_into, Generator, Spec, Summary, SynthError, HOLDOUT_CAMPAIGN};

fn small() -> Spec {
    Spec {
        seed: 7,
        customers: 300,
        purchases: 5_000,
        stores: 4,
        terminals_per_store: 3,
        start: Date {
            year: 2026,
            month: 1,
            day: 1,
        },
        days: 120,
        settle_every_days: 7,
    }
}

/// Generates `spec` into a fresh ledger file; checks the books are sound
/// and every point explained; returns the summary and the file.
fn generated(spec: &Spec) -> (Summary, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let keys = IssuerKeys::test().unwrap();
    let mut ledger = Ledger::open(&path, LedgerKeys::from_issuer(&keys)).unwrap();
    let sum = generate_into(spec, &mut ledger, &keys, spec.start_unix()).unwrap();
    assert_eq!(ledger.verify().unwrap(), Vec::<String>::new());
    assert!(ledger.exceptions().unwrap().is_empty());
    let ex = ledger.explanation().unwrap();
    assert!(ex.explained, "{:?}", ex.problems);
    assert_eq!(ex.matched_records, sum.card_transactions);
    let liability = ledger.liability(1).unwrap();
    assert_eq!(
        liability.points_outstanding,
        i64::try_from(sum.points_earned).unwrap() - i64::try_from(sum.points_redeemed + sum.points_refunded).unwrap()
    );
    assert_eq!(liability.pending_records, 0);
    (sum, dir)
}

fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get::<_, Option<i64>>(0))
        .unwrap()
        .unwrap_or(0)
}

#[test]
fn a_small_history_posts_cleanly_and_adds_up() {
    let spec = small();
    let (sum, dir) = generated(&spec);
    assert_eq!(sum.purchases, 5_000);
    assert_eq!(sum.customers, 300);
    assert_eq!(sum.card_transactions, sum.purchases + sum.redemptions + sum.refunds);
    assert!(sum.redemptions > 0 && sum.refunds > 0, "{sum:?}");
    assert!(sum.households > 75 && sum.households < 300, "{sum:?}");
    assert!(sum.last_purchase_at < spec.start_unix() + spec.days * 86_400);

    let conn = Connection::open(dir.path().join("ledger.sqlite")).unwrap();
    let n = |sql: &str| count(&conn, sql);
    let as_i = |v: u64| i64::try_from(v).unwrap();
    assert_eq!(n("SELECT COUNT(*) FROM customers"), 300);
    assert_eq!(n("SELECT COUNT(*) FROM cards WHERE customer_id IS NOT NULL"), 300);
    assert_eq!(n("SELECT COUNT(*) FROM stores"), 4);
    assert_eq!(n("SELECT COUNT(*) FROM terminals"), 12);
    assert_eq!(
        n("SELECT COUNT(*) FROM card_transactions WHERE status = 'posted'"),
        as_i(sum.card_transactions)
    );
    assert_eq!(
        n("SELECT COUNT(*) FROM card_transactions WHERE tx_type = 'earn'"),
        as_i(sum.purchases)
    );
    assert_eq!(
        n("SELECT SUM(purchase_minor) FROM card_transactions WHERE tx_type = 'earn'"),
        as_i(sum.spend_minor)
    );
    assert_eq!(
        n("SELECT SUM(points) FROM card_transactions WHERE tx_type = 'earn'"),
        as_i(sum.points_earned)
    );
    assert_eq!(
        n("SELECT COUNT(*) FROM card_transactions WHERE tx_type = 'redeem'"),
        as_i(sum.redemptions)
    );
    assert_eq!(
        n("SELECT COUNT(*) FROM card_transactions WHERE tx_type = 'refund-earn'"),
        as_i(sum.refunds)
    );
    assert_eq!(
        n("SELECT COUNT(*) FROM terminal_records"),
        as_i(sum.card_transactions + sum.declined)
    );
    // Every purchase carries its categories; names in several scripts.
    assert_eq!(
        n("SELECT COUNT(*) FROM card_transactions WHERE tx_type = 'earn' AND categories IS NULL"),
        0
    );
    let scripts: Vec<String> = conn
        .prepare("SELECT name FROM customers")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (script, range) in [
        ("Cyrillic", '\u{0400}'..='\u{04FF}'),
        ("Latin with diacritics", '\u{00C0}'..='\u{017F}'),
        ("Greek", '\u{0370}'..='\u{03FF}'),
        ("Han or kana", '\u{3040}'..='\u{9FFF}'),
    ] {
        assert!(
            scripts.iter().any(|s| s.chars().any(|c| range.contains(&c))),
            "no name in {script}"
        );
    }
    // Households of 1 to 4 people.
    let biggest = n("SELECT MAX(c) FROM (SELECT COUNT(*) AS c FROM customers GROUP BY household)");
    assert!((2..=4).contains(&biggest), "{biggest}");
}

#[test]
fn the_same_seed_gives_the_same_bytes() {
    let keys = IssuerKeys::test().unwrap();
    let digest = |spec: &Spec| {
        let g = Generator::new(spec).unwrap();
        let mut h = Sha256::new();
        let sum = g
            .run::<SynthError>(&keys, |b| {
                h.update(&b.bytes);
                Ok(())
            })
            .unwrap();
        (<[u8; 32]>::from(h.finalize()), sum)
    };
    let spec = Spec {
        purchases: 1_500,
        customers: 120,
        ..small()
    };
    let (a, sa) = digest(&spec);
    let (b, sb) = digest(&spec);
    assert_eq!(a, b);
    assert_eq!(sa, sb);
    let (c, _) = digest(&Spec { seed: 8, ..spec });
    assert_ne!(a, c);
}

/// The campaign's treated customers visit more while it runs, by the
/// documented lift; the control group does not.
#[test]
fn the_holdout_campaign_lifts_the_treated_customers_visits() {
    let keys = IssuerKeys::test().unwrap();
    let spec = Spec {
        customers: 3_000,
        purchases: 30_000,
        ..small()
    };
    let g = Generator::new(&spec).unwrap();
    let sum = g.run::<SynthError>(&keys, |_| Ok(())).unwrap();
    let h = sum.holdout;
    let share = h.control_customers as f64 / (h.control_customers + h.treated_customers) as f64;
    assert!((share - 0.2).abs() < 0.03, "control share {share}");
    let treated = h.treated_visits as f64 / h.treated_customers as f64;
    let control = h.control_visits as f64 / h.control_customers as f64;
    let lift = treated / control - 1.0;
    let expected = f64::from(spec.holdout().visit_lift_percent) / 100.0;
    println!("{h:?}: lift {lift:.3}, expected {expected}");
    assert!((lift - expected).abs() < 0.15, "lift {lift:.3}, expected {expected}");
    assert_eq!(spec.holdout().campaign_id, HOLDOUT_CAMPAIGN);
}

#[test]
fn the_demo_history_generates_in_seconds() {
    let spec = demo_spec();
    let t = Instant::now();
    let (sum, _dir) = generated(&spec);
    println!("demo history: {sum:?} in {:.1} s", t.elapsed().as_secs_f64());
    assert_eq!(sum.purchases, 5_000);
    assert_eq!((sum.customers, sum.stores, sum.terminals), (400, 3, 6));
    assert!(sum.holdout.control_customers > 0 && sum.holdout.control_visits > 0);
}
