//! The customers report's RFM: M is money spent, not points, the scores
//! are quintiles within the report's customers, and the legend comes with
//! the report.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use tessera_ledger::Warehouse as _;
use tessera_protocol::messages::TxKind;
use tessera_terminal::journal::{Entry, EntryKind};

fn earn(card: u32, points: u32, time: u32, minor: u64) -> Entry {
    let mut e = certified(
        EntryKind::Completion,
        card,
        1,
        TxKind::Earn,
        points,
        points,
        88,
        0,
        time,
    );
    e.purchase_minor = Some(minor);
    e
}

/// Five anonymous cards, one purchase each at the same time: card 1 got
/// the most points for the least money (a double-points campaign), card 5
/// the fewest points for the most money. Recency and frequency tie (R3
/// F3 for all); M ranks by money: card 5 scores 5, card 1 scores 1.
#[test]
fn m_of_rfm_is_money_not_points() {
    let shop = Shop::new();
    let mut ledger = shop.ledger();
    ledger.register_terminal(88, T0).unwrap();
    let entries = vec![
        earn(1, 900, T0, 1_000),
        earn(2, 700, T0, 2_000),
        earn(3, 500, T0, 3_000),
        earn(4, 300, T0, 4_000),
        earn(5, 100, T0, 5_000),
    ];
    let batch = journal_batch(&shop.journal_path(88), 88, entries, T0);
    let out = ledger.ingest(&batch[..], T0 + 60).unwrap();
    assert_eq!(out.report.posted, 5);
    let r = ledger.customers_report(T0 + 60).unwrap();
    let by_card = |n: u32| {
        let id = hex::encode_upper(card_id(n));
        r.rows.iter().find(|row| row.cards == vec![id.clone()]).unwrap().clone()
    };
    // Quintile score = ceil(5 (2 worse + equal) / 2n): with n = 5 and no
    // ties the k-th smallest (k = 1..5) scores k.
    for (card, m) in [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)] {
        let row = by_card(card);
        assert_eq!(row.spend_minor, 1_000 * u64::from(card));
        assert_eq!(row.rfm, format!("R3F3M{m}"), "card {card}");
        // R3 (and F ≤ 3): "need attention", whatever the money.
        assert_eq!(row.segment, "need_attention");
    }
    assert_eq!(r.segments.get("need_attention"), Some(&5));
    let keys: Vec<&str> = r.legend.iter().map(|l| l.segment.as_str()).collect();
    assert_eq!(
        keys,
        [
            "champions",
            "loyal",
            "cannot_lose_them",
            "at_risk",
            "potential_loyalists",
            "new",
            "promising",
            "need_attention",
            "hibernating",
            "lost"
        ]
    );
    assert!(r
        .legend
        .iter()
        .all(|l| !l.rule.is_empty() && !l.meaning.is_empty() && !l.action.is_empty()));
}

/// A till's basket must be what it charged: lines that do not add up to
/// the purchase amount (or name other categories) are a `points
/// mismatch`; the card's record still posts.
#[test]
fn a_basket_that_does_not_add_up_is_an_exception() {
    use tessera_ledger::ExceptionClass;
    use tessera_settlement::record::BasketLine;
    let line = |c: &str, a: u64| BasketLine {
        category: c.into(),
        amount_minor: a,
    };
    for (case, basket, categories, raised) in [
        (
            "honest",
            vec![line("bakery", 300), line("dairy", 700)],
            vec!["bakery", "dairy"],
            false,
        ),
        (
            "short",
            vec![line("bakery", 300), line("dairy", 600)],
            vec!["bakery", "dairy"],
            true,
        ),
        ("other categories", vec![line("bakery", 1_000)], vec!["wine"], true),
        (
            "a line of 0",
            vec![line("bakery", 1_000), line("dairy", 0)],
            vec!["bakery", "dairy"],
            true,
        ),
    ] {
        let shop = Shop::new();
        let mut ledger = shop.ledger();
        ledger.register_terminal(88, T0).unwrap();
        let mut e = earn(1, 10, T0, 1_000);
        e.basket = basket;
        e.categories = categories.iter().map(|c| (*c).to_owned()).collect();
        let batch = journal_batch(&shop.journal_path(88), 88, vec![e], T0);
        let out = ledger.ingest(&batch[..], T0 + 60).unwrap();
        assert_eq!(out.report.posted, 1, "{case}");
        let ex = ledger.exceptions().unwrap();
        let mismatch = ex.iter().find(|x| x.class == ExceptionClass::PointsMismatch);
        assert_eq!(mismatch.is_some(), raised, "{case}: {ex:?}");
        if let Some(m) = mismatch {
            assert!(
                m.evidence["why"].as_str().unwrap().contains("basket"),
                "{case}: {}",
                m.evidence
            );
        }
    }
}
