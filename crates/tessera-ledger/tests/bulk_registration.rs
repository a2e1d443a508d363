//! Bulk registration (`Ledger::register_customers_and_cards`): the same
//! rows, books and warehouse as the single calls one after another, and a
//! refused entry anywhere changes nothing. Also the households query over
//! the registered chain against its definition.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use tessera_ledger::books::OfficeBooks;

use common::*;
use rusqlite::Connection;
use tessera_ledger::Warehouse as _;
use tessera_ledger::{Ledger, LedgerError, NewCustomer, NewRegistration};
use tessera_protocol::messages::TxKind;
use tessera_protocol::profile::Date;
use tessera_terminal::journal::{Entry, EntryKind};

fn earn(card: u32, counter: u32, points: u32, balance: u32, time: u32, minor: u64, cats: &[&str]) -> Entry {
    let mut e = certified(
        EntryKind::Completion,
        card,
        counter,
        TxKind::Earn,
        points,
        balance,
        88,
        0,
        time,
    );
    e.purchase_minor = Some(minor);
    e.categories = cats.iter().map(|c| (*c).to_owned()).collect();
    e
}

fn person(name: &str, household: &[u8; 8], tier: u8) -> NewCustomer {
    NewCustomer {
        name: name.into(),
        birth_date: Date::new(1985, 2, 28).unwrap(),
        home_city: "Kraków".into(),
        household: *household,
        preferences: vec!["food".into()],
        tier,
    }
}

/// Customers in three households; card 9 is listed twice (it moves from
/// Ewa to Jan, who leaves Ewa with no card), cards 9 and 11 are known from
/// settlement before they are registered, card 13 has no purchases yet.
fn entries() -> Vec<NewRegistration> {
    let e = |c: NewCustomer, card: u32| NewRegistration {
        customer: c,
        card_id: card_id(card),
        key_version: 1,
    };
    vec![
        e(person("Ewa Nowak", b"HH000001", 1), 9),
        e(person("Piotr Nowak", b"HH000001", 2), 10),
        e(person("Ἑλένη", b"HH000002", 0), 11),
        e(person("Jan Kowalski", b"HH000003", 3), 9),
        e(person("Zofia", b"HH000004", 1), 13),
    ]
}

/// Two terminals in two stores.
fn fresh(shop: &Shop, warehouse: bool) -> Ledger {
    let mut ledger = shop.ledger();
    ledger.set_warehouse(warehouse);
    for (t, s) in [(88, 1), (89, 2)] {
        ledger.register_terminal(t, T0).unwrap();
        ledger.add_store(s, &format!("Store {s}"), "Kraków", T0).unwrap();
        ledger.assign_terminal(t, s).unwrap();
    }
    ledger
}

/// Purchases of cards 9 and 11 before anyone registers them, and of cards
/// 9, 10 and 13 after: one batch each, the same bytes for every ledger.
fn batches() -> (Vec<u8>, Vec<u8>) {
    let shop = Shop::new();
    let path = shop.journal_path(88);
    let before = journal_batch(
        &path,
        88,
        vec![
            earn(9, 1, 120, 120, T0 + 60, 12_000, &["food"]),
            earn(11, 1, 10, 10, T0 + 120, 1_001, &["food", "toys"]),
        ],
        T0 + 200,
    );
    ack_locally(&path, 88, &before, T0 + 300);
    let after = journal_batch(
        &path,
        88,
        vec![
            earn(9, 2, 30, 150, T0 + 86_400, 3_000, &["drinks"]),
            earn(10, 1, 50, 50, T0 + 86_460, 5_000, &["food"]),
            earn(13, 1, 5, 5, T0 + 86_520, 500, &["toys"]),
        ],
        T0 + 86_600,
    );
    (before, after)
}

/// The books, the registry and the warehouse, by natural keys (surrogate
/// keys are the warehouse's own).
fn dump(path: &Path) -> Vec<String> {
    let conn = Connection::open(path).unwrap();
    let mut out = Vec::new();
    for sql in [
        "SELECT * FROM customers ORDER BY customer_id",
        "SELECT * FROM cards ORDER BY card_id",
        "SELECT * FROM card_transactions ORDER BY card_id, counter",
        "SELECT * FROM exceptions ORDER BY id",
        "SELECT key, value FROM wh_meta ORDER BY key",
        "SELECT hex(f.card_id), f.counter, f.tx_type, f.points, f.amount_minor, f.time, dd.date, s.store_id,
                cu.customer_id, cu.tier, hex(h.household)
         FROM wh_fact_tx f JOIN wh_dim_date dd ON dd.date_key = f.date_key
         JOIN wh_dim_card c ON c.card_key = f.card_key AND c.card_id = f.card_id
         LEFT JOIN wh_dim_store s ON s.store_key = f.store_key
         LEFT JOIN wh_dim_customer cu ON cu.customer_key = f.customer_key
         LEFT JOIN wh_dim_household h ON h.household_key = f.household_key
         ORDER BY f.card_id, f.counter",
        "SELECT hex(f.card_id), f.counter, cat.name, fc.amount_minor, fc.from_basket FROM wh_fact_category fc
         JOIN wh_fact_tx f ON f.tx_key = fc.tx_key
         JOIN wh_dim_category cat ON cat.category_key = fc.category_key ORDER BY f.card_id, f.counter, cat.name",
        "SELECT hex(f.card_id), f.counter, p.source, p.points FROM wh_fact_points p
         JOIN wh_fact_tx f ON f.tx_key = p.tx_key ORDER BY f.card_id, f.counter, p.source",
        "SELECT hex(c.card_id), cu.customer_id, hex(h.household), hex(c.replaced_by) FROM wh_dim_card c
         LEFT JOIN wh_dim_customer cu ON cu.customer_key = c.customer_key
         LEFT JOIN wh_dim_household h ON h.household_key = c.household_key ORDER BY c.card_id",
        "SELECT customer_id, tier FROM wh_dim_customer ORDER BY customer_id",
        "SELECT hex(household) FROM wh_dim_household ORDER BY household",
        "SELECT store_id, name, city FROM wh_dim_store ORDER BY store_id",
        "SELECT name FROM wh_dim_category ORDER BY name",
        "SELECT date_key, start_unix, end_unix FROM wh_dim_date ORDER BY date_key",
    ] {
        let mut stmt = conn.prepare(sql).unwrap();
        let n = stmt.column_count();
        let mut rows = stmt.query([]).unwrap();
        while let Some(r) = rows.next().unwrap() {
            let cols: Vec<String> = (0..n)
                .map(|i| format!("{:?}", r.get::<_, rusqlite::types::Value>(i).unwrap()))
                .collect();
            out.push(cols.join("|"));
        }
        out.push("--".into());
    }
    out
}

/// Registers `entries` one call after another in `single`, in one bulk
/// call in `bulk`, around the same batches; returns both dumps after
/// registration and after the later batch.
fn compare(warehouse: bool) -> [(Vec<String>, Vec<String>); 2] {
    let (before, after) = batches();
    let (s1, s2) = (Shop::new(), Shop::new());
    let (mut single, mut bulk) = (fresh(&s1, warehouse), fresh(&s2, warehouse));
    for l in [&mut single, &mut bulk] {
        let out = l.ingest(&before[..], T0 + 400).unwrap();
        assert_eq!(out.report.posted, 2);
    }
    let mut single_ids = Vec::new();
    for e in entries() {
        let id = single.register_customer(&e.customer).unwrap();
        single.register_card(e.card_id, id, e.key_version, T0 + 500).unwrap();
        single_ids.push(id);
    }
    let bulk_ids = bulk.register_customers_and_cards(&entries(), T0 + 500).unwrap();
    assert_eq!(bulk_ids, vec![1, 2, 3, 4, 5]);
    assert_eq!(bulk_ids, single_ids);
    for id in 1..=5 {
        assert_eq!(bulk.customer(id).unwrap(), single.customer(id).unwrap());
    }
    let registered = (dump(&s1.ledger_path()), dump(&s2.ledger_path()));
    for l in [&mut single, &mut bulk] {
        let out = l.ingest(&after[..], T0 + 86_700).unwrap();
        assert_eq!(out.report.posted, 3);
    }
    let later = (dump(&s1.ledger_path()), dump(&s2.ledger_path()));
    if warehouse {
        // And both equal a warehouse built from the books.
        let built = bulk.rebuild_warehouse().unwrap();
        assert_eq!(built, 5);
        assert_eq!(dump(&s2.ledger_path()), later.1);
    }
    [registered, later]
}

#[test]
fn bulk_registration_leaves_the_books_and_warehouse_of_the_single_calls() {
    let [registered, later] = compare(true);
    assert_eq!(registered.1, registered.0);
    assert_eq!(later.1, later.0);
    let d = &registered.1;
    let section = |first: &str| -> Vec<String> {
        d.iter()
            .skip_while(|l| !l.starts_with(first))
            .take_while(|l| *l != "--")
            .cloned()
            .collect()
    };
    // Card 9 moved to Jan (4) with its purchase; Ewa (1) has no card, so
    // she is no customer of the warehouse; Piotr keeps household 1.
    assert_eq!(
        section("Text(\"7E57000000000009\")|Integer(4)"),
        [
            "Text(\"7E57000000000009\")|Integer(4)|Text(\"4848303030303033\")|Text(\"\")",
            "Text(\"7E5700000000000A\")|Integer(2)|Text(\"4848303030303031\")|Text(\"\")",
            "Text(\"7E5700000000000B\")|Integer(3)|Text(\"4848303030303032\")|Text(\"\")",
            "Text(\"7E5700000000000D\")|Integer(5)|Text(\"4848303030303034\")|Text(\"\")",
        ]
    );
    assert_eq!(
        section("Integer(2)|Integer(2)"),
        [
            "Integer(2)|Integer(2)",
            "Integer(3)|Integer(0)",
            "Integer(4)|Integer(3)",
            "Integer(5)|Integer(1)"
        ]
    );
    assert_eq!(section("Text(\"4848303030303031\")").len(), 4, "households 1 to 4");
}

#[test]
fn with_the_warehouse_off_bulk_registration_marks_it_stale_as_the_single_calls_do() {
    let [registered, later] = compare(false);
    assert_eq!(registered.1, registered.0);
    assert_eq!(later.1, later.0);
    assert!(registered.1.contains(&"Text(\"stale\")|Text(\"1\")".to_owned()));
}

#[test]
fn a_refused_entry_anywhere_changes_nothing() {
    let (before, _) = batches();
    for bad in [0, 2, 4] {
        for warehouse in [true, false] {
            let shop = Shop::new();
            let mut ledger = fresh(&shop, warehouse);
            ledger.ingest(&before[..], T0 + 400).unwrap();
            if warehouse {
                // A fresh warehouse, so that "stale" would show a change.
                ledger.rebuild_warehouse().unwrap();
            }
            let untouched = dump(&shop.ledger_path());
            let mut list = entries();
            list[bad].customer.name = " \t".into();
            let err = ledger.register_customers_and_cards(&list, T0 + 500).unwrap_err();
            assert!(matches!(err, LedgerError::Malformed(_)), "{err:?}");
            assert_eq!(
                err.to_string(),
                format!("malformed: registration {} of 5: customer name is empty", bad + 1)
            );
            assert_eq!(
                dump(&shop.ledger_path()),
                untouched,
                "bad entry {bad}, warehouse {warehouse}"
            );
            assert_eq!(ledger.customer(1).unwrap(), None);
            let book = ledger.card(card_id(9)).unwrap().unwrap();
            assert_eq!(book.customer_id, None, "card 9 stays unregistered");
            assert!(ledger.card(card_id(13)).unwrap().is_none());
            // Nothing was used up: the corrected list gets the first ids.
            assert_eq!(
                ledger.register_customers_and_cards(&entries(), T0 + 500).unwrap(),
                vec![1, 2, 3, 4, 5]
            );
        }
    }
}

#[test]
fn an_empty_list_registers_nobody_and_changes_nothing() {
    let shop = Shop::new();
    let mut ledger = fresh(&shop, true);
    let untouched = dump(&shop.ledger_path());
    assert_eq!(ledger.register_customers_and_cards(&[], T0).unwrap(), Vec::<u64>::new());
    assert_eq!(dump(&shop.ledger_path()), untouched);
}

/// `Ledger::households` groups each figure once; its definition, one
/// correlated subquery per household, gives the same rows.
#[test]
fn households_equal_their_definition() {
    let (before, after) = batches();
    let shop = Shop::new();
    let mut ledger = fresh(&shop, true);
    ledger.ingest(&before[..], T0 + 400).unwrap();
    let mut list = entries();
    // A household of two customers with a card each, and a second card.
    list.push(NewRegistration {
        customer: person("Anna Nowak", b"HH000001", 0),
        card_id: card_id(14),
        key_version: 1,
    });
    ledger.register_customers_and_cards(&list, T0 + 500).unwrap();
    ledger.register_card(card_id(15), 2, 1, T0 + 500).unwrap();
    ledger.ingest(&after[..], T0 + 86_700).unwrap();
    let got: Vec<(String, u64, u64, u64, i64, u64)> = ledger
        .households()
        .unwrap()
        .into_iter()
        .map(|h| (h.household, h.customers, h.cards, h.visits, h.spend_minor, h.points))
        .collect();
    let conn = Connection::open(shop.ledger_path()).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT hex(h.household),
                 (SELECT COUNT(DISTINCT c.customer_key) FROM wh_dim_card c WHERE c.household_key = h.household_key),
                 (SELECT COUNT(*) FROM wh_dim_card c WHERE c.household_key = h.household_key),
                 (SELECT COUNT(*) FROM (SELECT DISTINCT f.customer_key, f.date_key FROM wh_fact_tx f
                      WHERE f.household_key = h.household_key AND f.tx_type = 'earn') v),
                 (SELECT COALESCE(SUM(CASE f.tx_type WHEN 'earn' THEN f.amount_minor
                      WHEN 'refund-earn' THEN -f.amount_minor ELSE 0 END), 0)
                  FROM wh_fact_tx f WHERE f.household_key = h.household_key),
                 (SELECT COALESCE(SUM(f.points), 0) FROM wh_fact_tx f
                  WHERE f.household_key = h.household_key AND f.tx_type = 'earn')
             FROM wh_dim_household h ORDER BY h.household",
        )
        .unwrap();
    let want: Vec<(String, u64, u64, u64, i64, u64)> = stmt
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(got, want);
    assert_eq!(
        got,
        [
            // Piotr (card 10 bought for 50.00, card 15 nothing) and Anna.
            ("4848303030303031".to_owned(), 2, 3, 1, 5_000, 50),
            ("4848303030303032".to_owned(), 1, 1, 1, 1_001, 10),
            // Jan, with card 9's two purchases on two days.
            ("4848303030303033".to_owned(), 1, 1, 2, 15_000, 150),
            ("4848303030303034".to_owned(), 1, 1, 1, 500, 5),
        ]
    );
}
