//! Issuer adjustments in the books (docs/settlement.md, "Issuer
//! adjustments and card replacement"): every adjustment record a card
//! certified must match an adjustment the office issued (card, sequence,
//! direction, points), applied once; a replacement moves the old card's
//! balance once, when the new card's credit posts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use tessera_crypto::keys::IssuerDecision;
use tessera_ledger::books::OfficeBooks;
use tessera_ledger::{AdjustmentKind, ExceptionClass, Ledger, LedgerError, NewAdjustment};
use tessera_protocol::messages::TxKind;
use tessera_protocol::profile::Date;
use tessera_simulator::SimCard;
use tessera_terminal::Adjustment;

fn register(ledger: &mut Ledger, n: u32) {
    let c = tessera_ledger::NewCustomer {
        name: "Анна Петрова".into(),
        birth_date: Date {
            year: 1990,
            month: 3,
            day: 14,
        },
        home_city: "Казань".into(),
        household: [0; 8],
        preferences: Vec::new(),
        tier: 0,
    };
    let id = ledger.register_customer(&c).unwrap();
    ledger.register_card(card_id(n), id, 1, T0).unwrap();
}

fn mac_for(n: u32, seq: u32, kind: TxKind, points: u32) -> Adjustment {
    Adjustment {
        card_id: card_id(n),
        key_version: 1,
        seq,
        kind,
        points,
        issuer_mac: keys().issuer_mac(
            &card_id(n),
            IssuerDecision::Adjust {
                seq,
                kind: kind.to_byte(),
                points,
            },
        ),
    }
}

fn goodwill(n: u32, points: i64) -> NewAdjustment {
    NewAdjustment {
        card_id: card_id(n),
        points,
        kind: AdjustmentKind::Goodwill,
        reason: "broken machine".into(),
        operator: "Мария".into(),
    }
}

fn classes(l: &Ledger) -> Vec<ExceptionClass> {
    l.exceptions().unwrap().into_iter().map(|e| e.class).collect()
}

fn post(shop: &Shop, ledger: &mut Ledger, till: u32) {
    let batch = shop.settle(till);
    let out = ledger.ingest(&batch[..], shop.now()).unwrap();
    ack_locally(&shop.journal_path(till), till, &batch, shop.now());
    let _ = out;
}

#[test]
fn issued_adjustments_pair_with_their_records_and_unissued_ones_are_exceptions() {
    let shop = Shop::new();
    let mut ledger = shop.ledger();
    ledger.register_terminal(3, T0).unwrap();
    register(&mut ledger, 1);
    let mut card: SimCard = issued_card(1);

    // The books refuse what no card could take, changing nothing.
    for (a, why) in [
        (goodwill(2, 10), "never issued"),
        (goodwill(1, 0), "non-zero"),
        (goodwill(1, -5), "goodwill"),
        (
            NewAdjustment {
                reason: " ".into(),
                ..goodwill(1, 5)
            },
            "reason",
        ),
        (
            NewAdjustment {
                kind: AdjustmentKind::Correction,
                ..goodwill(1, -1)
            },
            "below zero",
        ),
    ] {
        match ledger.issue_adjustment(&a, T0) {
            Err(LedgerError::Refused(m)) => assert!(m.contains(why), "{m}"),
            other => panic!("{a:?}: {other:?}"),
        }
    }
    assert!(ledger.adjustments(None).unwrap().is_empty());

    let first = ledger.issue_adjustment(&goodwill(1, 250), T0).unwrap();
    let second = ledger.issue_adjustment(&goodwill(1, 20), T0).unwrap();
    assert_eq!((first.seq, second.seq), (1, 2));
    assert_eq!(ledger.pending_adjustments().unwrap().len(), 2);

    let mut till = shop.till(3);
    till.set_adjustments([
        mac_for(1, 1, TxKind::IssuerCredit, 250),
        mac_for(1, 2, TxKind::IssuerCredit, 20),
    ]);
    drop(till.tap(&mut card).unwrap());
    post(&shop, &mut ledger, 3);
    assert!(classes(&ledger).is_empty(), "{:?}", ledger.exceptions().unwrap());
    assert!(ledger.pending_adjustments().unwrap().is_empty());
    let rows = ledger.adjustments(Some(card_id(1))).unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| (r.state.as_str(), r.applied_counter))
            .collect::<Vec<_>>(),
        vec![("applied", Some(1)), ("applied", Some(2))]
    );
    assert_eq!(ledger.card(card_id(1)).unwrap().unwrap().shadow_balance, 270);
    assert!(ledger.verify().unwrap().is_empty());

    // An adjustment the card took with a genuine issuer MAC that this
    // ledger never issued (made outside it, or lost in a restore): the
    // record is posted and named.
    let mut till = shop.till(3);
    till.set_adjustments([mac_for(1, 3, TxKind::IssuerCredit, 1000)]);
    shop.advance(60);
    drop(till.tap(&mut card).unwrap());
    post(&shop, &mut ledger, 3);
    assert_eq!(classes(&ledger), vec![ExceptionClass::AdjustmentMismatch]);
    let e = &ledger.exceptions().unwrap()[0];
    assert!(e.evidence.to_string().contains("never issued"), "{}", e.evidence);
    assert_eq!(ledger.card(card_id(1)).unwrap().unwrap().shadow_balance, 1270);
    assert!(ledger.verify().unwrap().is_empty(), "the books still add up");
    // The next issued one follows the card's sequence.
    assert_eq!(ledger.issue_adjustment(&goodwill(1, 1), T0).unwrap().seq, 4);
}

#[test]
fn a_replacement_moves_the_balance_once() {
    let shop = Shop::new();
    let mut ledger = shop.ledger();
    ledger.register_terminal(3, T0).unwrap();
    register(&mut ledger, 1);
    register(&mut ledger, 2);
    let mut old = issued_card(1);
    let mut new = issued_card(2);
    let mut till = shop.till(3);
    assert!(purchase(&mut till, &mut old, 5_000));
    post(&shop, &mut ledger, 3);
    let points = ledger.card(card_id(1)).unwrap().unwrap().shadow_balance;
    assert!(points > 0);
    let liability = ledger.liability(1).unwrap().points_outstanding;

    assert!(matches!(
        ledger.replace_card(card_id(1), card_id(1), "lost", "Мария", T0),
        Err(LedgerError::Refused(_))
    ));
    let r = ledger
        .replace_card(card_id(1), card_id(2), "lost", "Мария", T0)
        .unwrap();
    assert_eq!(i64::from(r.points), points);
    let adj = r.adjustment.unwrap();
    assert_eq!(
        (adj.kind, adj.seq, adj.from_card),
        (AdjustmentKind::Replacement, 1, Some(card_id(1)))
    );
    assert!(ledger.hotlist().unwrap().cards.contains(&card_id(1)));
    assert!(matches!(
        ledger.replace_card(card_id(1), card_id(2), "again", "Мария", T0),
        Err(LedgerError::Refused(_))
    ));
    // Until the credit's record posts, the points stay on the old card.
    assert_eq!(ledger.liability(1).unwrap().points_outstanding, liability);

    till.set_adjustments([mac_for(2, 1, TxKind::IssuerCredit, r.points)]);
    shop.advance(60);
    drop(till.tap(&mut new).unwrap());
    post(&shop, &mut ledger, 3);
    assert!(classes(&ledger).is_empty(), "{:?}", ledger.exceptions().unwrap());
    assert_eq!(ledger.card(card_id(1)).unwrap().unwrap().shadow_balance, 0);
    assert_eq!(ledger.card(card_id(2)).unwrap().unwrap().shadow_balance, points);
    assert_eq!(
        ledger.liability(1).unwrap().points_outstanding,
        liability,
        "counted once"
    );
    let moved = ledger.card_postings(card_id(1)).unwrap();
    assert_eq!(moved[0].delta, -points);
    assert!(moved[0].what.contains("to card 7E57000000000002"), "{}", moved[0].what);
    assert!(ledger.card_postings(card_id(2)).unwrap()[0]
        .what
        .contains("from card 7E57000000000001"));
    assert!(ledger.verify().unwrap().is_empty());
    assert!(ledger.explanation().unwrap().problems.is_empty());

    // The old card, used at a till that had not heard of the hotlist.
    let mut stale = shop.till(4);
    ledger.register_terminal(4, T0).unwrap();
    shop.advance(60);
    assert!(redeem(&mut stale, &mut old, 10));
    post(&shop, &mut ledger, 4);
    assert_eq!(classes(&ledger), vec![ExceptionClass::ReplacedCardUsed]);
    assert_eq!(ledger.card(card_id(1)).unwrap().unwrap().shadow_balance, -10);
    assert_eq!(ledger.card(card_id(2)).unwrap().unwrap().shadow_balance, points);
    assert!(
        ledger.verify().unwrap().is_empty(),
        "balanced: nothing lost, nothing doubled"
    );
}
