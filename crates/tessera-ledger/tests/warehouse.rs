//! The warehouse: purchase facts from the decisions whichever copy posts
//! first, incremental maintenance equal to a rebuild after a messy
//! history, and the analytics queries against hand-computed figures.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use rusqlite::Connection;
use tessera_ledger::books::OfficeBooks;
use tessera_ledger::Warehouse as _;
use tessera_ledger::{Ledger, NewCustomer, Period};
use tessera_protocol::messages::TxKind;
use tessera_protocol::profile::Date;
use tessera_settlement::record::BasketLine;
use tessera_terminal::journal::{Entry, EntryKind};

/// 2026-11-27 (T0's day, UTC) as a local day number.
const DAY0: i32 = 20_784;

fn customer(ledger: &mut Ledger, household: &[u8; 8], tier: u8) -> u64 {
    ledger
        .register_customer(&NewCustomer {
            name: "Анна Petrova".into(),
            birth_date: Date::new(1990, 5, 17).unwrap(),
            home_city: "Lyon".into(),
            household: *household,
            preferences: vec![],
            tier,
        })
        .unwrap()
}

#[allow(clippy::too_many_arguments)]
fn earn(card: u32, counter: u32, points: u32, balance: u32, till: u32, time: u32, minor: u64, cats: &[&str]) -> Entry {
    let mut e = certified(
        EntryKind::Completion,
        card,
        counter,
        TxKind::Earn,
        points,
        balance,
        till,
        0,
        time,
    );
    e.purchase_minor = Some(minor);
    e.categories = cats.iter().map(|c| (*c).to_owned()).collect();
    e
}

/// A shop of two tills in two stores, customers 1 (card 9) and 2 (card
/// 10) in one household, card 11 anonymous.
fn setup(shop: &Shop) -> Ledger {
    let mut ledger = shop.ledger();
    for t in [88, 89] {
        ledger.register_terminal(t, T0).unwrap();
    }
    ledger.add_store(1, "Центральный", "Moscow", T0).unwrap();
    ledger.add_store(2, "Riverside", "", T0).unwrap();
    ledger.assign_terminal(88, 1).unwrap();
    ledger.assign_terminal(89, 2).unwrap();
    let a = customer(&mut ledger, b"HH000001", 1);
    let b = customer(&mut ledger, b"HH000001", 2);
    ledger.register_card(card_id(9), a, 1, T0).unwrap();
    ledger.register_card(card_id(10), b, 1, T0).unwrap();
    ledger
}

/// Card 9 bought for 120.00 at till 88 (store 1); till 89 (store 2)
/// delivered its recovered copy of the card's record first, carrying no
/// purchase. When till 88's decision arrives, the 120.00 is counted once,
/// in store 1, in the warehouse and in the customers report.
#[test]
fn a_recovered_copy_first_then_the_decision_counts_the_spend_once() {
    let shop = Shop::new();
    let mut ledger = setup(&shop);
    let recovered = journal_batch(
        &shop.journal_path(89),
        89,
        vec![certified(EntryKind::Recovered, 9, 1, TxKind::Earn, 120, 120, 88, 1, T0)],
        T0,
    );
    ledger.ingest(&recovered[..], T0 + 100).unwrap();
    let facts = ledger.customer_facts(T0 + 100).unwrap();
    assert_eq!(facts.len(), 1);
    assert_eq!((facts[0].purchases, facts[0].spend_minor), (1, 0));
    assert_eq!(facts[0].favourite_store, None, "no decision yet: no store");
    let own = journal_batch(
        &shop.journal_path(88),
        88,
        vec![earn(9, 1, 120, 120, 88, T0, 12_000, &["food"])],
        T0,
    );
    let out = ledger.ingest(&own[..], T0 + 200).unwrap();
    assert_eq!((out.report.posted, out.report.duplicates), (0, 1));
    let facts = ledger.customer_facts(T0 + 200).unwrap();
    assert_eq!(facts.len(), 1);
    let f = &facts[0];
    assert_eq!(
        (f.customer_id, f.purchases, f.visits, f.spend_minor),
        (Some(1), 1, 1, 12_000)
    );
    assert_eq!(f.favourite_store, Some((1, "Центральный".to_owned())));
    assert_eq!(f.favourite_category.as_deref(), Some("food"));
    assert_eq!(f.household.as_deref(), Some("4848303030303031"));
    assert_eq!(
        (f.visit_days.clone(), f.visit_spend_minor.clone()),
        (vec![DAY0], vec![12_000])
    );
    let report = ledger.customers_report(T0 + 200).unwrap();
    assert_eq!(report.rows.len(), 1);
    assert_eq!(report.rows[0].spend_minor, 12_000);
    assert_eq!(report.rows[0].favourite_store.as_deref(), Some("Центральный"));
    assert_eq!(report.rows[0].favourite_category.as_deref(), Some("food"));
    // One visit yesterday is one visit in 30 days, not 30.
    let later = ledger.customers_report(T0 + 86_400).unwrap();
    assert!((later.rows[0].visits_per_30_days - 1.0).abs() < f64::EPSILON);
    let stores = ledger.store_performance(Period::Day).unwrap();
    assert_eq!(stores.len(), 1);
    assert_eq!(
        (
            stores[0].period.as_str(),
            stores[0].store_id,
            stores[0].purchases,
            stores[0].spend_minor
        ),
        ("2026-11-27", 1, 1, 12_000)
    );
    // And the rebuild agrees.
    let before = dump(&shop);
    assert_eq!(ledger.rebuild_warehouse().unwrap(), 1);
    assert_eq!(dump(&shop), before);
}

/// Everything in the warehouse, by natural keys (surrogate keys are the
/// warehouse's own and may differ between builds).
fn dump(shop: &Shop) -> Vec<String> {
    let conn = Connection::open(shop.ledger_path()).unwrap();
    let mut out = Vec::new();
    for sql in [
        "SELECT hex(f.card_id), f.counter, f.tx_type, f.points, f.delta, f.amount_minor, f.time, dd.date,
                s.store_id, cu.customer_id, hex(h.household), f.reference
         FROM wh_fact_tx f JOIN wh_dim_date dd ON dd.date_key = f.date_key
         JOIN wh_dim_card c ON c.card_key = f.card_key AND c.card_id = f.card_id
         LEFT JOIN wh_dim_store s ON s.store_key = f.store_key
         LEFT JOIN wh_dim_customer cu ON cu.customer_key = f.customer_key
         LEFT JOIN wh_dim_household h ON h.household_key = f.household_key
         ORDER BY f.card_id, f.counter",
        "SELECT hex(f.card_id), f.counter, cat.name, fc.amount_minor, fc.from_basket FROM wh_fact_category fc
         JOIN wh_fact_tx f ON f.tx_key = fc.tx_key
         JOIN wh_dim_category cat ON cat.category_key = fc.category_key ORDER BY f.card_id, f.counter, cat.name",
        "SELECT hex(f.card_id), f.counter, p.source, cm.campaign_id, p.points FROM wh_fact_points p
         JOIN wh_fact_tx f ON f.tx_key = p.tx_key
         LEFT JOIN wh_dim_campaign cm ON cm.campaign_key = p.campaign_key ORDER BY f.card_id, f.counter, p.source",
        "SELECT hex(c.card_id), cu.customer_id, hex(h.household), hex(c.replaced_by) FROM wh_dim_card c
         LEFT JOIN wh_dim_customer cu ON cu.customer_key = c.customer_key
         LEFT JOIN wh_dim_household h ON h.household_key = c.household_key ORDER BY c.card_id",
        "SELECT customer_id, tier FROM wh_dim_customer ORDER BY customer_id",
        "SELECT hex(household) FROM wh_dim_household ORDER BY household",
        "SELECT store_id, name, city FROM wh_dim_store ORDER BY store_id",
        "SELECT name FROM wh_dim_category ORDER BY name",
        "SELECT campaign_id, name, kind, tier, valid_from, valid_until, holdout_percent FROM wh_dim_campaign
         ORDER BY campaign_id",
        "SELECT date_key, start_unix, end_unix, date, month_label, iso_week, weekday FROM wh_dim_date
         ORDER BY date_key",
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

/// Copies, out-of-order batches, a pending record posted later, late
/// decisions, a basket, a refund, an adjustment record, a card registered
/// after its purchases and an erased customer: the warehouse maintained
/// batch by batch equals the one rebuilt from the books, and the queries
/// give the hand-computed figures.
#[test]
fn incremental_maintenance_equals_a_rebuild_after_a_messy_history() {
    let shop = Shop::new();
    let mut ledger = setup(&shop);
    let day = 86_400;
    // Till 89 delivers recovered copies of till 88's decisions first:
    // card 9 counter 1 (decision 88/1).
    let r89 = journal_batch(
        &shop.journal_path(89),
        89,
        vec![certified(EntryKind::Recovered, 9, 1, TxKind::Earn, 120, 120, 88, 1, T0)],
        T0,
    );
    ledger.ingest(&r89[..], T0 + 10).unwrap();
    ack_locally(&shop.journal_path(89), 89, &r89, T0 + 10);
    // Till 88, batch 1: card 9's purchase (its decision, seq 1; the copy
    // is a duplicate) and card 10's with a basket.
    let mut basket = earn(10, 1, 50, 50, 88, T0 + 60, 5_000, &[]);
    basket.basket = vec![
        BasketLine {
            category: "food".into(),
            amount_minor: 3_000,
        },
        BasketLine {
            category: "drinks".into(),
            amount_minor: 1_500,
        },
        BasketLine {
            category: "food".into(),
            amount_minor: 500,
        },
    ];
    let b1 = journal_batch(
        &shop.journal_path(88),
        88,
        vec![earn(9, 1, 120, 120, 88, T0, 12_000, &["food"]), basket],
        T0 + 100,
    );
    ack_locally(&shop.journal_path(88), 88, &b1, T0 + 100);
    // Till 88, batch 2 (arrives before batch 1: held): card 11 (anonymous)
    // buys food and toys for 10.01, card 10 refunds its purchase, card 9
    // redeems 30 and gets an issuer credit of 25.
    let b2 = journal_batch(
        &shop.journal_path(88),
        88,
        vec![
            earn(11, 1, 10, 10, 88, T0 + day, 1_001, &["food", "toys"]),
            certified_refund(10, 2, TxKind::RefundEarn, 50, 0, 1, 88, 0, T0 + day + 60),
            certified(
                EntryKind::Completion,
                9,
                2,
                TxKind::Redeem,
                30,
                90,
                88,
                0,
                T0 + day + 120,
            ),
            certified(
                EntryKind::Completion,
                9,
                3,
                TxKind::IssuerCredit,
                25,
                115,
                88,
                0,
                T0 + day + 180,
            ),
        ],
        T0 + day + 200,
    );
    ledger.ingest(&b2[..], T0 + day + 300).unwrap();
    ledger.ingest(&b1[..], T0 + day + 400).unwrap();
    // Card 12: counter 2 first (pending), then counter 1 (both post), at
    // till 89, in December.
    let dec = T0 + 5 * day;
    let c2 = journal_batch(
        &shop.journal_path(89),
        89,
        vec![earn(12, 2, 7, 12, 89, dec + 60, 700, &["toys"])],
        dec + 100,
    );
    ledger.ingest(&c2[..], dec + 200).unwrap();
    ack_locally(&shop.journal_path(89), 89, &c2, dec + 200);
    let c1 = journal_batch(
        &shop.journal_path(89),
        89,
        vec![earn(12, 1, 5, 5, 89, dec, 500, &["toys"])],
        dec + 300,
    );
    ledger.ingest(&c1[..], dec + 400).unwrap();
    // Card 11 is registered later to a new customer of another household;
    // customer 2 (card 10) is erased.
    let c = customer(&mut ledger, b"HH000002", 1);
    ledger.register_card(card_id(11), c, 1, dec + 500).unwrap();
    ledger.erase_customer(2).unwrap();

    let incremental = dump(&shop);
    assert!(!ledger.warehouse_stale().unwrap());
    assert_eq!(ledger.rebuild_warehouse().unwrap(), 8);
    assert_eq!(dump(&shop), incremental, "incremental == rebuild");

    // Hand-computed figures.
    let facts = ledger.customer_facts(dec + 1_000).unwrap();
    let summary: Vec<_> = facts
        .iter()
        .map(|f| {
            (
                f.customer_id,
                f.cards.clone(),
                f.purchases,
                f.visits,
                f.spend_minor,
                f.points_earned,
                f.points_redeemed,
                f.favourite_category.clone(),
            )
        })
        .collect();
    let hexcard = |n| hex::encode_upper(card_id(n));
    assert_eq!(
        summary,
        vec![
            (
                Some(1),
                vec![hexcard(9)],
                1,
                1,
                12_000,
                120,
                30,
                Some("food".to_owned())
            ),
            (Some(3), vec![hexcard(11)], 1, 1, 1_001, 10, 0, Some("food".to_owned())),
            // Erased: anonymous figures, the refund deducted.
            (None, vec![hexcard(10)], 1, 1, 0, 50, 0, Some("food".to_owned())),
            (None, vec![hexcard(12)], 2, 1, 1_200, 12, 0, Some("toys".to_owned())),
        ]
    );
    assert_eq!(facts[3].favourite_store, Some((2, "Riverside".to_owned())));
    assert_eq!(facts[3].visit_days, vec![DAY0 + 5]);
    assert_eq!(facts[3].today, DAY0 + 5);
    // Customer 3's household; the erased customer's is gone.
    let households = ledger.households().unwrap();
    let hh: Vec<_> = households
        .iter()
        .map(|h| {
            (
                h.household.clone(),
                h.customers,
                h.cards,
                h.visits,
                h.spend_minor,
                h.points,
            )
        })
        .collect();
    assert_eq!(
        hh,
        vec![
            ("4848303030303031".to_owned(), 1, 1, 1, 12_000, 120),
            ("4848303030303032".to_owned(), 1, 1, 1, 1_001, 10),
        ]
    );
    // Categories: 10.01 shared between food (5.01) and toys (5.00); the
    // basket's food lines summed.
    let cats = ledger.category_performance(Period::Month).unwrap();
    let got: Vec<_> = cats
        .iter()
        .map(|c| {
            (
                c.period.as_str(),
                c.category.as_str(),
                c.purchases,
                c.customers,
                c.spend_minor,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("2026-11", "drinks", 1, 1, 1_500),
            ("2026-11", "food", 3, 3, 12_000 + 3_500 + 501),
            ("2026-11", "toys", 1, 1, 500),
            ("2026-12", "toys", 2, 1, 1_200),
        ]
    );
    // Stores by ISO week: 2026-11-27 is a Friday of week 48; 12-02 is week 49.
    let stores = ledger.store_performance(Period::Week).unwrap();
    let got: Vec<_> = stores
        .iter()
        .map(|s| {
            (
                s.period.as_str(),
                s.store_id,
                s.purchases,
                s.customers,
                s.spend_minor,
                s.points_issued,
                s.points_redeemed,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("2026-W48", 1, 3, 3, 12_000 + 5_000 - 5_000 + 1_001, 180, 30),
            ("2026-W49", 2, 2, 1, 1_200, 12, 0),
        ]
    );
    // Points: day 0 issued 170; day 1 issued 10 - 50 refunded, redeemed
    // 30, adjusted 25; December 5 + 7.
    let points = ledger.points_economy(Period::Day).unwrap();
    let got: Vec<_> = points
        .iter()
        .map(|p| (p.period.as_str(), p.issued, p.redeemed, p.adjusted, p.outstanding))
        .collect();
    assert_eq!(
        got,
        vec![
            ("2026-11-27", 170, 0, 0, 170),
            ("2026-11-28", -40, 30, 25, 125),
            ("2026-12-02", 12, 0, 0, 137),
        ]
    );
    assert_eq!(points[0].redemption_rate, Some(0.0));
    assert_eq!(points[1].redemption_rate, None);
    // Cohorts: three first visits in November (cards 9, 10 and 11's
    // customer), one in December.
    let cohorts = ledger.cohorts().unwrap();
    let got: Vec<_> = cohorts
        .iter()
        .map(|c| (c.cohort.as_str(), c.months_after, c.active))
        .collect();
    assert_eq!(got, vec![("2026-11", 0, 3), ("2026-12", 0, 1)]);
    // A customer's drill-down.
    let rows = ledger.customer_purchases(1).unwrap();
    let got: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r.counter,
                r.tx_type.as_str(),
                r.amount_minor,
                r.date.as_str(),
                r.store.clone(),
            )
        })
        .collect();
    let store1 = Some((1, "Центральный".to_owned()));
    assert_eq!(
        got,
        vec![
            (1, "earn", 12_000, "2026-11-27", store1.clone()),
            (2, "redeem", 0, "2026-11-28", store1.clone()),
            (3, "issuer-credit", 0, "2026-11-28", store1),
        ]
    );
    assert_eq!(rows[0].categories, vec![("food".to_owned(), 12_000)]);
    assert!(ledger.customer_purchases(2).unwrap().is_empty(), "erased");
}

/// Off, posting leaves the warehouse behind (marked stale); the rebuild
/// brings it level with what maintenance would have made.
#[test]
fn the_toggle_leaves_the_warehouse_to_the_rebuild() {
    let shop = Shop::new();
    let mut ledger = setup(&shop);
    ledger.set_warehouse(false);
    let b = journal_batch(
        &shop.journal_path(88),
        88,
        vec![earn(9, 1, 120, 120, 88, T0, 12_000, &["food"])],
        T0,
    );
    ledger.ingest(&b[..], T0 + 10).unwrap();
    assert!(ledger.warehouse_stale().unwrap());
    assert!(ledger.customer_facts(T0 + 10).unwrap().is_empty());
    ledger.set_warehouse(true);
    assert_eq!(ledger.rebuild_warehouse().unwrap(), 1);
    assert!(!ledger.warehouse_stale().unwrap());
    assert_eq!(ledger.customer_facts(T0 + 10).unwrap()[0].spend_minor, 12_000);
}

/// A version-11 file (facts keyed by card and counter) opened by this
/// code: its facts are made anew, the warehouse is stale, and the rebuild
/// gives what maintenance had made, categories and rules included.
#[test]
fn a_version_11_warehouse_is_stale_after_the_upgrade_and_rebuilt_equal() {
    let shop = Shop::new();
    let mut ledger = setup(&shop);
    let b = journal_batch(
        &shop.journal_path(88),
        88,
        vec![earn(9, 1, 120, 120, 88, T0, 12_000, &["food", "toys"])],
        T0,
    );
    ledger.ingest(&b[..], T0 + 10).unwrap();
    drop(ledger);
    let maintained = dump(&shop);
    {
        // Back to version 11's layout of the facts, rows in it (and without
        // version 13's online authorizations).
        let conn = Connection::open(shop.ledger_path()).unwrap();
        conn.execute_batch(
            "DROP TABLE wh_fact_points; DROP TABLE wh_fact_category; DROP TABLE wh_fact_tx;
             CREATE TABLE wh_fact_tx (card_id BLOB NOT NULL, counter INTEGER NOT NULL, tx_type TEXT NOT NULL,
                 PRIMARY KEY (card_id, counter));
             CREATE INDEX wh_fact_tx_customer ON wh_fact_tx (tx_type);
             CREATE TABLE wh_fact_category (card_id BLOB NOT NULL, counter INTEGER NOT NULL,
                 PRIMARY KEY (card_id, counter));
             CREATE TABLE wh_fact_points (card_id BLOB NOT NULL, counter INTEGER NOT NULL,
                 PRIMARY KEY (card_id, counter));
             INSERT INTO wh_fact_tx SELECT card_id, counter, tx_type FROM card_transactions;
             DROP TABLE online_authorizations;
             ALTER TABLE card_transactions DROP COLUMN online;
             PRAGMA user_version = 11;",
        )
        .unwrap();
    }
    let mut ledger = shop.ledger();
    assert!(ledger.warehouse_stale().unwrap());
    assert!(ledger.customer_facts(T0 + 10).unwrap().is_empty());
    assert_eq!(ledger.rebuild_warehouse().unwrap(), 1);
    drop(ledger);
    assert_eq!(dump(&shop), maintained);
    let conn = Connection::open(shop.ledger_path()).unwrap();
    let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(v, tessera_ledger::SCHEMA_VERSION);
}

/// The zone decides local dates: at 23:30 UTC on 2026-11-27 it is already
/// the 28th in Moscow; changing the zone rebuilds the date keys.
#[test]
fn the_warehouse_zone_decides_the_local_day() {
    let shop = Shop::new();
    let mut ledger = setup(&shop);
    let late = T0 + 11 * 3_600 + 1_800;
    let b = journal_batch(
        &shop.journal_path(88),
        88,
        vec![earn(9, 1, 120, 120, 88, late, 12_000, &["food"])],
        late,
    );
    ledger.ingest(&b[..], late + 10).unwrap();
    assert_eq!(ledger.store_performance(Period::Day).unwrap()[0].period, "2026-11-27");
    let moscow = tessera_rules::display::Zone::named("Europe/Moscow").unwrap();
    ledger.set_warehouse_zone(&moscow).unwrap();
    assert_eq!(ledger.store_performance(Period::Day).unwrap()[0].period, "2026-11-28");
    assert_eq!(ledger.customer_facts(late + 10).unwrap()[0].visit_days, vec![DAY0 + 1]);
    // Recorded in the ledger: a reopened ledger keeps it.
    drop(ledger);
    let ledger = shop.ledger();
    assert_eq!(ledger.warehouse_zone().name(), Some("Europe/Moscow"));
}

/// A real till under the example campaigns: the ledger's recomputation
/// agrees, and the warehouse keeps which rule gave which points. 40.00 of
/// coffee for a tier-1 customer who prefers coffee: base 40, the policy's
/// coffee ×2 (+40), the "favourites" campaign ×1.5 (+40), the policy's
/// tier 1 ×1.10 (+12) = 132.
#[test]
fn the_points_of_each_rule_are_kept_per_purchase() {
    let campaigns_toml = include_str!("../../tessera-rules/campaigns.example.toml");
    let shop = Shop::new();
    let mut ledger = shop.ledger();
    ledger.register_terminal(51, T0).unwrap();
    ledger.register_campaigns(campaigns_toml, T0).unwrap();
    let id = customer(&mut ledger, b"HH000042", 1);
    ledger.register_card(card_id(1), id, 1, T0).unwrap();
    let mut till = shop.till_with(
        51,
        tessera_terminal::policy::Policy::default_policy(),
        tessera_terminal::offers::CampaignSet::from_toml(campaigns_toml).unwrap(),
    );
    let mut card = issued_card(1);
    shop.advance(60);
    card.insert().unwrap();
    let mut tap = till.tap(&mut card).unwrap();
    let points = match tap.purchase(4_000, &["coffee".to_owned()]).unwrap() {
        tessera_terminal::till::TillOutcome::Approved { receipt, .. } => receipt.record.amount,
        other => panic!("{other:?}"),
    };
    drop(tap);
    drop(till);
    assert_eq!(points, 132);
    ledger.ingest(&shop.settle(51)[..], shop.now()).unwrap();
    assert!(ledger.exceptions().unwrap().is_empty());
    let rows = ledger.customer_purchases(id).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].rules,
        vec![
            ("favourites".to_owned(), 40),
            ("policy.category".to_owned(), 40),
            ("policy.tier".to_owned(), 12)
        ]
    );
    assert_eq!(rows[0].categories, vec![("coffee".to_owned(), 4_000)]);
    // The campaign line is linked to the campaign dimension.
    let before = dump(&shop);
    assert!(
        before
            .iter()
            .any(|l| l.ends_with("Text(\"favourites\")|Text(\"favourites\")|Integer(40)")),
        "{before:?}"
    );
    ledger.rebuild_warehouse().unwrap();
    assert_eq!(dump(&shop), before);
}

/// Campaign outcomes: eligible are the cards whose first purchase is
/// before the campaign's first day (and, for a tier campaign, of its
/// tier); visits and spend are counted over the campaign's days, zeros
/// included; the control flag is the holdout group's.
#[test]
fn campaign_outcomes_count_eligible_cards_over_the_campaign_days() {
    let shop = Shop::new();
    let mut ledger = setup(&shop);
    let toml = "version = 3
[[campaigns]]
id = \"tier-one\"
name = \"Silver days\"
valid_from = 2026-11-28
valid_until = 2026-11-30
kind = \"tier\"
tier = 1
multiplier_percent = 150
holdout_percent = 50

[[campaigns]]
id = \"visit-3\"
name = \"Third visit\"
valid_from = 2026-11-28
valid_until = 2026-11-30
kind = \"nth_visit\"
every = 3
points = 10
";
    ledger.register_campaigns(toml, T0).unwrap();
    let day = 86_400;
    let b = journal_batch(
        &shop.journal_path(88),
        88,
        vec![
            // Day 0, before the campaigns: cards 9 (tier 1), 10 (tier 2), 11.
            earn(9, 1, 10, 10, 88, T0, 1_000, &[]),
            earn(10, 1, 10, 10, 88, T0, 1_000, &[]),
            earn(11, 1, 10, 10, 88, T0, 1_000, &[]),
            // During: card 9 twice on the 29th and once on the 30th; card
            // 10 once on the 29th; card 12's first purchase (not eligible).
            earn(9, 2, 10, 20, 88, T0 + 2 * day, 1_000, &[]),
            earn(9, 3, 10, 30, 88, T0 + 2 * day + 60, 1_000, &[]),
            earn(9, 4, 5, 35, 88, T0 + 3 * day, 500, &[]),
            earn(10, 2, 20, 30, 88, T0 + 2 * day, 2_000, &[]),
            earn(12, 1, 10, 10, 88, T0 + 2 * day, 1_000, &[]),
            // After: not counted.
            earn(10, 3, 10, 40, 88, T0 + 4 * day, 1_000, &[]),
        ],
        T0 + 5 * day,
    );
    ledger.ingest(&b[..], T0 + 5 * day).unwrap();
    let outcomes = ledger.campaign_outcomes().unwrap();
    let control = |c: &str, n| tessera_rules::offers::in_control(c, &card_id(n), 50);
    let got: Vec<_> = outcomes
        .iter()
        .map(|o| {
            (
                o.id.as_str(),
                o.kind.as_str(),
                o.valid_from.as_str(),
                o.holdout_percent,
                o.cards
                    .iter()
                    .map(|c| (c.card_id.clone(), c.control, c.visits, c.spend_minor))
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    let h = |n| hex::encode_upper(card_id(n));
    assert_eq!(
        got,
        vec![
            (
                "tier-one",
                "tier",
                "2026-11-28",
                50,
                vec![(h(9), control("tier-one", 9), 2, 2_500)]
            ),
            (
                "visit-3",
                "nth_visit",
                "2026-11-28",
                0,
                vec![(h(9), false, 2, 2_500), (h(10), false, 1, 2_000), (h(11), false, 0, 0)]
            ),
        ]
    );
}
