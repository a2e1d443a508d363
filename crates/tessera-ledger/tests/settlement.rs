//! Settlement into the ledger with real data: batches sealed by real tills
//! (simulated cards, real terminal stack, SQLite journals) or by the real
//! journal with genuinely certified records.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read};
use tessera_ledger::books::OfficeBooks;
use tessera_rules::display::Zone;

use common::*;
use tessera_crypto::rng::Rng;
use tessera_ledger::Warehouse as _;
use tessera_ledger::{ExceptionClass, Ledger, LedgerError, LedgerKeys, NewCustomer};
use tessera_protocol::messages::TxKind;
use tessera_protocol::profile::Date;
use tessera_simulator::SimCard;
use tessera_terminal::batch::AckStatus;
use tessera_terminal::journal::{Entry, EntryKind};
use tessera_terminal::policy::Policy;

/// Everything the books say, to compare before and after.
fn snapshot(l: &Ledger) -> String {
    let mut s = String::new();
    for n in 0..8 {
        s += &format!("{:?}\n", l.card(card_id(n)).unwrap());
    }
    s += &serde_json::to_string(&l.exceptions().unwrap()).unwrap();
    s += &serde_json::to_string(&l.reconciliation(None, None, &Zone::utc()).unwrap()).unwrap();
    s += &serde_json::to_string(&l.liability(1).unwrap()).unwrap();
    s += &format!("{:?}{:?}", l.settled_counters().unwrap(), l.hotlist().unwrap());
    s
}

fn classes(l: &Ledger) -> Vec<ExceptionClass> {
    l.exceptions().unwrap().into_iter().map(|e| e.class).collect()
}

/// A day at two tills over three cards; returns the cards.
fn trading_day(shop: &Shop, tills: [u32; 2]) -> Vec<SimCard> {
    let mut a = shop.till(tills[0]);
    let mut b = shop.till(tills[1]);
    let mut cards: Vec<SimCard> = (1..=3).map(issued_card).collect();
    for round in 0..4u64 {
        for (i, card) in cards.iter_mut().enumerate() {
            shop.advance(60);
            let till = if (i as u64 + round).is_multiple_of(2) {
                &mut a
            } else {
                &mut b
            };
            assert!(purchase(till, card, 2_000 + 500 * round));
        }
    }
    shop.advance(60);
    assert!(redeem(&mut b, &mut cards[0], 10));
    cards
}

#[test]
fn posts_real_batches_and_books_match_the_cards() {
    let shop = Shop::new();
    let cards = trading_day(&shop, [11, 12]);
    let mut ledger = shop.ledger();
    ledger.register_terminal(11, shop.now()).unwrap();
    ledger.register_terminal(12, shop.now()).unwrap();
    ledger.register_terminal(12, shop.now()).unwrap(); // idempotent
    for id in [11, 12] {
        let batch = shop.settle(id);
        let out = ledger.ingest(&batch[..], shop.now()).unwrap();
        assert_eq!(out.ack.status, AckStatus::Posted);
        assert!(out.ack.verify(&keys().terminal_batch_key(id)));
        let r = &out.report;
        assert!(r.records > r.card_transactions && r.card_transactions > 0, "{r:?}");
        assert_eq!(r.posted + r.duplicates + r.rejected + r.held, r.card_transactions);
        assert_eq!(r.exceptions_total, 0, "{:?}", r.exceptions);
        acknowledge(&shop.journal_path(id), id, &out.ack, shop.now());
    }
    for card in &cards {
        let st = card.state().unwrap();
        let book = ledger.card(st.card_id).unwrap().unwrap();
        assert_eq!(book.shadow_balance, i64::from(st.balance));
        assert_eq!(book.card_balance, i64::from(st.balance));
        assert_eq!(book.last_counter, st.counter);
        assert_eq!((book.pending, book.flagged, book.hotlisted), (0, false, false));
    }
    let settled = ledger.settled_counters().unwrap();
    assert_eq!(settled.len(), 3);
    assert!(settled.iter().all(|(id, n)| cards
        .iter()
        .any(|c| c.state().unwrap().card_id == *id && c.state().unwrap().counter == *n)));
    assert!(ledger.exceptions().unwrap().is_empty());
}

#[test]
fn the_same_batch_twice_changes_nothing() {
    let shop = Shop::new();
    trading_day(&shop, [11, 12]);
    let mut ledger = shop.ledger();
    ledger.register_terminal(11, shop.now()).unwrap();
    let batch = shop.settle(11);
    assert_eq!(
        ledger.ingest(&batch[..], shop.now()).unwrap().ack.status,
        AckStatus::Posted
    );
    let before = snapshot(&ledger);
    for _ in 0..2 {
        let again = ledger.ingest(&batch[..], shop.now() + 100).unwrap();
        assert_eq!(again.ack.status, AckStatus::Duplicate);
        assert!(again.ack.verify(&keys().terminal_batch_key(11)));
        assert_eq!(again.report.posted, 0);
    }
    assert_eq!(snapshot(&ledger), before);
}

#[test]
fn out_of_order_batches_are_held_then_posted_in_order() {
    let shop = Shop::new();
    let path = shop.journal_path(21);
    let mut till = shop.till(21);
    let mut card = issued_card(1);
    let mut batches = Vec::new();
    for round in 0..3 {
        for _ in 0..=round {
            shop.advance(60);
            assert!(purchase(&mut till, &mut card, 3_000));
        }
        shop.advance(60);
        let b = shop.settle(21);
        ack_locally(&path, 21, &b, shop.now());
        batches.push(b);
    }
    let mut ledger = shop.ledger();
    ledger.register_terminal(21, T0).unwrap();
    let third = ledger.ingest(&batches[2][..], shop.now()).unwrap();
    assert_eq!(third.ack.status, AckStatus::Held);
    assert!(third.ack.verify(&keys().terminal_batch_key(21)));
    assert_eq!(ledger.card(card_id(1)).unwrap(), None, "nothing posted yet");
    assert_eq!(
        ledger.ingest(&batches[2][..], shop.now()).unwrap().ack.status,
        AckStatus::Held,
        "a held batch again"
    );
    assert_eq!(
        ledger.ingest(&batches[1][..], shop.now()).unwrap().ack.status,
        AckStatus::Held
    );
    let first = ledger.ingest(&batches[0][..], shop.now()).unwrap();
    assert_eq!(first.ack.status, AckStatus::Posted);
    assert_eq!(first.report.released_batches, vec![2, 3]);
    assert_eq!(first.report.released, 5);
    let st = card.state().unwrap();
    let book = ledger.card(card_id(1)).unwrap().unwrap();
    assert_eq!(
        (book.shadow_balance, book.last_counter, book.pending),
        (i64::from(st.balance), st.counter, 0)
    );
    assert_eq!(
        ledger.ingest(&batches[1][..], shop.now()).unwrap().ack.status,
        AckStatus::Duplicate
    );
    assert!(ledger.exceptions().unwrap().is_empty());
    let rec = ledger.reconciliation(None, Some(21), &Zone::utc()).unwrap();
    assert_eq!(rec.rows.len(), 1);
    assert_eq!(
        (rec.rows[0].batches, rec.rows[0].held_batches, rec.rows[0].posted),
        (3, 0, 6)
    );
}

/// Replaces, in the first record line whose body matches, `from` by `to`
/// inside the hashed body (keeping the stated hash).
fn tamper(batch: &[u8], from: &str, to: &str) -> Vec<u8> {
    let text = String::from_utf8(batch.to_vec()).unwrap();
    let mut done = false;
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            if !done && l.contains("\"type\":\"record\"") && l.contains(from) {
                done = true;
                l.replacen(from, to, 1)
            } else {
                l.to_owned()
            }
        })
        .collect();
    assert!(done, "nothing to tamper with");
    (lines.join("\n") + "\n").into_bytes()
}

/// A till (its genuine batch key) that inflates its header totals: the
/// MAC verifies, the records are posted, the claim is an exception.
#[test]
fn inflated_header_totals_are_an_exception() {
    let shop = Shop::new();
    let batch = journal_batch(
        &shop.journal_path(86),
        86,
        vec![
            certified(EntryKind::Completion, 6, 1, TxKind::Earn, 100, 100, 86, 1, T0),
            certified(EntryKind::Completion, 6, 2, TxKind::Redeem, 30, 70, 86, 2, T0 + 10),
        ],
        T0,
    );
    let text = String::from_utf8(batch).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut header: tessera_terminal::batch::Header = serde_json::from_str(&lines[0]).unwrap();
    header.totals.get_mut("earn").unwrap().points = 100_000;
    let key = keys().terminal_batch_key(86);
    lines[0] = serde_json::to_string(&header).unwrap();
    let last = lines.len() - 1;
    lines[last] = serde_json::json!({"type": "mac", "mac": hex::encode(header.mac(&key))}).to_string();
    let forged = lines.join("\n") + "\n";
    let mut ledger = shop.ledger();
    ledger.register_terminal(86, T0).unwrap();
    let out = ledger.ingest(forged.as_bytes(), T0).unwrap();
    assert_eq!(out.report.posted, 2, "the records are what count");
    assert_eq!(classes(&ledger), vec![ExceptionClass::TotalsMismatch]);
    let e = &ledger.exceptions().unwrap()[0];
    assert_eq!(e.evidence["records_totals"]["earn"]["points"], 100);
    // The honest batch of another till: no exception.
    let honest = journal_batch(
        &shop.journal_path(87),
        87,
        vec![certified(EntryKind::Completion, 7, 1, TxKind::Earn, 10, 10, 87, 1, T0)],
        T0,
    );
    ledger.register_terminal(87, T0).unwrap();
    ledger.ingest(&honest[..], T0).unwrap();
    assert_eq!(classes(&ledger), vec![ExceptionClass::TotalsMismatch]);
}

/// A void entry: the till journaled its decision `origin` (for `counter`)
/// as not done.
fn void(card: u32, counter: u32, origin: u32, time: u32) -> Entry {
    let mut e = Entry::new(EntryKind::Void, time);
    e.card_id = Some(hex::encode_upper(card_id(card)));
    e.card_counter = Some(counter);
    e.tx_type = Some("earn".into());
    e.points = Some(69);
    e.origin_seq = Some(origin);
    e.reason = Some("card: 6988".into());
    e
}

/// A till voided its decision (it believed a refusal) while the card
/// certified it — the record reaching the office through another till, in
/// either order: `void-contradicted`, and the certified points posted.
#[test]
fn a_void_the_card_contradicts_is_an_exception() {
    for void_first in [true, false] {
        let shop = Shop::new();
        let mut ledger = shop.ledger();
        ledger.register_terminal(88, T0).unwrap();
        ledger.register_terminal(89, T0).unwrap();
        // Till 88: decision 1 for counter 1, then its void.
        let voided = journal_batch(
            &shop.journal_path(88),
            88,
            vec![approved(9, 1, TxKind::Earn, 69, T0), void(9, 1, 1, T0 + 5)],
            T0,
        );
        // Till 89 recovered the card's record of that decision (till 88, seq 1),
        // and a record of another decision of till 88 that was never voided.
        let recovered = journal_batch(
            &shop.journal_path(89),
            89,
            vec![
                certified(EntryKind::Recovered, 9, 1, TxKind::Earn, 69, 69, 88, 1, T0),
                certified(EntryKind::Recovered, 9, 2, TxKind::Earn, 10, 79, 88, 7, T0 + 60),
            ],
            T0,
        );
        let (a, b) = if void_first {
            (&voided, &recovered)
        } else {
            (&recovered, &voided)
        };
        ledger.ingest(&a[..], T0).unwrap();
        ledger.ingest(&b[..], T0).unwrap();
        let ex = ledger.exceptions().unwrap();
        let got: Vec<(ExceptionClass, Option<u32>)> = ex.iter().map(|e| (e.class, e.counter)).collect();
        assert_eq!(
            got,
            vec![(ExceptionClass::VoidContradicted, Some(1))],
            "void first: {void_first}"
        );
        assert_eq!(ex[0].evidence["origin_seq"], 1);
        let book = ledger.card(card_id(9)).unwrap().unwrap();
        assert_eq!((book.shadow_balance, book.card_balance), (79, 79));
    }
}

#[test]
fn a_tampered_record_breaks_the_chain_and_is_refused() {
    let shop = Shop::new();
    let path = shop.journal_path(31);
    let batch = journal_batch(
        &path,
        31,
        vec![
            certified(EntryKind::Completion, 1, 1, TxKind::Earn, 100, 100, 31, 1, T0),
            certified(EntryKind::Completion, 2, 1, TxKind::Earn, 40, 40, 31, 2, T0),
        ],
        T0,
    );
    let forged = tamper(&batch, r#"\"points\":40"#, r#"\"points\":4000"#);
    let mut ledger = shop.ledger();
    ledger.register_terminal(31, T0).unwrap();
    let err = ledger.ingest(&forged[..], T0).unwrap_err();
    assert!(
        matches!(
            err,
            LedgerError::BrokenChain {
                terminal_id: 31,
                // Seq 3: the second decision (each completion follows its own).
                seq: 3,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.http_status(), 400);
    assert_eq!(classes(&ledger), vec![ExceptionClass::BrokenChain]);
    assert_eq!(
        ledger.card(card_id(1)).unwrap(),
        None,
        "record 1 was fine but the batch is all or nothing"
    );
    // The genuine batch still posts.
    assert_eq!(ledger.ingest(&batch[..], T0).unwrap().ack.status, AckStatus::Posted);
}

#[test]
fn a_wrong_mac_is_refused_and_writes_nothing() {
    let shop = Shop::new();
    let path = shop.journal_path(32);
    let entries = vec![certified(
        EntryKind::Completion,
        1,
        1,
        TxKind::Earn,
        100,
        100,
        32,
        1,
        T0,
    )];
    let mut j = tessera_terminal::journal::Journal::open(&path, 32).unwrap();
    for e in entries {
        j.append(e).unwrap();
    }
    // Sealed with another terminal's key.
    let mut batch = Vec::new();
    tessera_terminal::batch::write_batch(&mut j, &keys().terminal_batch_key(33), T0, &mut batch).unwrap();
    let mut ledger = shop.ledger();
    ledger.register_terminal(32, T0).unwrap();
    let before = snapshot(&ledger);
    let err = ledger.ingest(&batch[..], T0).unwrap_err();
    assert!(matches!(err, LedgerError::BadMac), "{err}");
    assert_eq!(err.http_status(), 401);
    assert_eq!(snapshot(&ledger), before);
}

#[test]
fn unknown_and_revoked_terminals_are_refused_with_an_exception() {
    let shop = Shop::new();
    let batch = journal_batch(
        &shop.journal_path(41),
        41,
        vec![certified(
            EntryKind::Completion,
            1,
            1,
            TxKind::Earn,
            100,
            100,
            41,
            1,
            T0,
        )],
        T0,
    );
    let mut ledger = shop.ledger();
    let err = ledger.ingest(&batch[..], T0).unwrap_err();
    assert!(matches!(err, LedgerError::UnknownTerminal(41)));
    assert_eq!(err.http_status(), 403);
    assert_eq!(classes(&ledger), vec![ExceptionClass::UnknownTerminal]);
    assert_eq!(ledger.card(card_id(1)).unwrap(), None);
    ledger.register_terminal(41, T0).unwrap();
    ledger.revoke_terminal(41, T0 + 1).unwrap();
    ledger.register_terminal(41, T0 + 2).unwrap(); // does not lift the revocation
    let err = ledger.ingest(&batch[..], T0).unwrap_err();
    assert!(matches!(err, LedgerError::RevokedTerminal(41)));
    assert_eq!(
        classes(&ledger),
        vec![ExceptionClass::UnknownTerminal, ExceptionClass::RevokedTerminal]
    );
    assert_eq!(ledger.card(card_id(1)).unwrap(), None);
    assert!(matches!(
        ledger.revoke_terminal(99, T0),
        Err(LedgerError::UnknownTerminal(99))
    ));
}

#[test]
fn a_forged_certificate_is_rejected_with_an_exception() {
    let shop = Shop::new();
    let mut forged = certified(EntryKind::Completion, 2, 1, TxKind::Earn, 500, 500, 51, 2, T0);
    forged.certificate = Some("00112233445566778899AABBCCDDEEFF".into());
    let mut upgraded = certified(EntryKind::Completion, 3, 1, TxKind::Earn, 5, 5, 51, 3, T0);
    upgraded.points = Some(5_000); // certificate of 5 points, claims 5,000
    upgraded.balance_after = Some(5_000);
    let batch = journal_batch(
        &shop.journal_path(51),
        51,
        vec![
            certified(EntryKind::Completion, 1, 1, TxKind::Earn, 100, 100, 51, 1, T0),
            forged,
            upgraded,
        ],
        T0,
    );
    let mut ledger = shop.ledger();
    ledger.register_terminal(51, T0).unwrap();
    let out = ledger.ingest(&batch[..], T0).unwrap();
    assert_eq!(out.ack.status, AckStatus::Posted);
    assert_eq!((out.report.posted, out.report.rejected), (1, 2));
    assert_eq!(classes(&ledger), vec![ExceptionClass::BadCertificate; 2]);
    assert_eq!(ledger.exceptions().unwrap()[0].card_id, Some(card_id(2)));
    assert_eq!(ledger.card(card_id(2)).unwrap(), None);
    assert_eq!(ledger.card(card_id(3)).unwrap(), None);
    assert_eq!(ledger.card(card_id(1)).unwrap().unwrap().shadow_balance, 100);
}

#[test]
fn a_cloned_card_used_at_two_tills_is_a_conflict_and_hotlisted() {
    let shop = Shop::new();
    let mut card = issued_card(1);
    let mut clone = SimCard::from_eeprom(card.memory(), Rng::seeded(77)).unwrap();
    let mut a = shop.till(61);
    let mut b = shop.till(62);
    shop.advance(60);
    assert!(purchase(&mut a, &mut card, 2_000));
    shop.advance(60);
    assert!(purchase(&mut b, &mut clone, 9_000));
    let mut ledger = shop.ledger();
    ledger.register_terminal(61, T0).unwrap();
    ledger.register_terminal(62, T0).unwrap();
    let v0 = ledger.hotlist().unwrap().version;
    assert_eq!(
        ledger.ingest(&shop.settle(61)[..], shop.now()).unwrap().report.posted,
        1
    );
    let out = ledger.ingest(&shop.settle(62)[..], shop.now()).unwrap();
    assert_eq!((out.report.posted, out.report.rejected), (0, 1));
    assert_eq!(out.report.exceptions[0].class, ExceptionClass::Conflict);
    assert_eq!(out.report.exceptions[0].card_id, Some(card_id(1)));
    let hot = ledger.hotlist().unwrap();
    assert!(hot.contains(&card_id(1)));
    assert_eq!(hot.version, v0 + 1);
    let book = ledger.card(card_id(1)).unwrap().unwrap();
    assert!(book.hotlisted);
    assert_eq!(
        book.shadow_balance,
        i64::from(card.state().unwrap().balance),
        "the first record stays posted"
    );
}

#[test]
fn recovered_evidence_from_another_till_is_a_silent_duplicate() {
    let shop = Shop::new();
    let c1 = certified(EntryKind::Completion, 1, 1, TxKind::Earn, 100, 100, 71, 1, T0);
    let mut r1 = c1.clone();
    r1.kind = EntryKind::Recovered;
    r1.purchase_minor = None;
    let mut ledger = shop.ledger();
    ledger.register_terminal(71, T0).unwrap();
    ledger.register_terminal(72, T0).unwrap();
    let b2 = journal_batch(&shop.journal_path(72), 72, vec![r1], T0);
    let b1 = journal_batch(&shop.journal_path(71), 71, vec![c1.clone(), c1], T0);
    assert_eq!(ledger.ingest(&b2[..], T0).unwrap().report.posted, 1);
    let out = ledger.ingest(&b1[..], T0).unwrap();
    assert_eq!((out.report.posted, out.report.duplicates), (0, 2));
    // The copy from the other till raises nothing; the same till sending
    // the record twice raises one duplicate-record.
    assert_eq!(classes(&ledger), vec![ExceptionClass::DuplicateRecord]);
    assert_eq!(ledger.card(card_id(1)).unwrap().unwrap().shadow_balance, 100);
}

#[test]
fn a_balance_discontinuity_is_posted_flagged_and_explained() {
    let shop = Shop::new();
    let batch = journal_batch(
        &shop.journal_path(81),
        81,
        vec![
            certified(EntryKind::Completion, 1, 1, TxKind::Earn, 100, 100, 81, 1, T0),
            certified(EntryKind::Completion, 1, 2, TxKind::Earn, 50, 500, 81, 2, T0 + 60),
            certified(EntryKind::Completion, 1, 3, TxKind::Redeem, 20, 480, 81, 3, T0 + 120),
        ],
        T0,
    );
    let mut ledger = shop.ledger();
    ledger.register_terminal(81, T0).unwrap();
    let out = ledger.ingest(&batch[..], T0).unwrap();
    assert_eq!(out.report.posted, 3);
    assert_eq!(
        classes(&ledger),
        vec![ExceptionClass::BalanceDiscontinuity],
        "one jump, one exception"
    );
    let e = &ledger.exceptions().unwrap()[0];
    assert_eq!(
        (
            e.counter,
            e.evidence["expected"].as_i64(),
            e.evidence["balance_after"].as_i64()
        ),
        (Some(2), Some(150), Some(500))
    );
    let book = ledger.card(card_id(1)).unwrap().unwrap();
    assert_eq!(
        (book.shadow_balance, book.card_balance, book.discrepancy, book.flagged),
        (130, 480, 350, true)
    );
    let l = ledger.liability(10).unwrap();
    assert_eq!(
        (l.points_outstanding, l.unexplained_points, l.value_minor),
        (130, 350, 1300)
    );
    // Unexplained points: the card is hotlisted until the office looks.
    assert!(ledger.hotlist().unwrap().contains(&card_id(1)));
}

/// A record far beyond the card's last counter (a clone whose counter
/// jumped by 500) is held, raises `counter-jump` at once and hotlists the
/// card; a hole left open ages into a `gap` exception by itself at a later
/// ingestion, without anyone calling for it.
#[test]
fn counter_jumps_hotlist_at_once_and_gaps_age_by_themselves() {
    let shop = Shop::new();
    let a = journal_batch(
        &shop.journal_path(84),
        84,
        vec![
            certified(EntryKind::Completion, 3, 1, TxKind::Earn, 100, 100, 84, 1, T0),
            certified(EntryKind::Completion, 3, 501, TxKind::Redeem, 90, 10, 84, 2, T0 + 10),
            certified(EntryKind::Completion, 4, 1, TxKind::Earn, 50, 50, 84, 3, T0 + 20),
            certified(EntryKind::Completion, 4, 3, TxKind::Earn, 50, 150, 84, 4, T0 + 30),
        ],
        T0,
    );
    let mut ledger = shop.ledger();
    ledger.register_terminal(84, T0).unwrap();
    ledger.register_terminal(85, T0).unwrap();
    let out = ledger.ingest(&a[..], T0).unwrap();
    assert_eq!((out.report.posted, out.report.held), (2, 2));
    assert_eq!(classes(&ledger), vec![ExceptionClass::CounterJump]);
    assert!(ledger.hotlist().unwrap().contains(&card_id(3)));
    assert!(
        !ledger.hotlist().unwrap().contains(&card_id(4)),
        "a small hole is not a jump"
    );
    // Eight days later another till settles something unrelated: card 4's
    // hole (counter 2) has aged.
    let later = T0 + tessera_ledger::GAP_AGE_SECS + 86_400;
    let b = journal_batch(
        &shop.journal_path(85),
        85,
        vec![certified(
            EntryKind::Completion,
            5,
            1,
            TxKind::Earn,
            10,
            10,
            85,
            1,
            later,
        )],
        later,
    );
    ledger.ingest(&b[..], later).unwrap();
    let got: Vec<(ExceptionClass, Option<u32>)> = ledger
        .exceptions()
        .unwrap()
        .iter()
        .map(|e| (e.class, e.card_id.map(|c| c[7] as u32)))
        .collect();
    assert!(got.contains(&(ExceptionClass::Gap, Some(4))), "{got:?}");
    assert_eq!(got.iter().filter(|g| g.0 == ExceptionClass::Gap).count(), 2, "{got:?}");
}

/// Refunds are paired with their originals chain-wide (whichever tills
/// delivered them): a second full refund, a refund of an earn booked as a
/// refund of a redemption (the 100 000-point "refund" of an earn of 10), a
/// refund above the original, a refund of a transaction the books never
/// saw — each posted (the card moved the points) and each an exception.
#[test]
fn refunds_are_paired_with_their_originals() {
    let shop = Shop::new();
    let a = journal_batch(
        &shop.journal_path(82),
        82,
        vec![
            certified(EntryKind::Completion, 2, 1, TxKind::Earn, 10, 10, 82, 1, T0),
            certified(EntryKind::Completion, 2, 2, TxKind::Earn, 200, 210, 82, 2, T0 + 10),
            certified(EntryKind::Completion, 2, 3, TxKind::Redeem, 40, 170, 82, 3, T0 + 20),
            certified_refund(2, 4, TxKind::RefundRedeem, 40, 210, 3, 82, 4, T0 + 30),
        ],
        T0,
    );
    // Another till's batch: it did not know the first refund.
    let b = journal_batch(
        &shop.journal_path(83),
        83,
        vec![
            certified_refund(2, 5, TxKind::RefundRedeem, 40, 250, 3, 83, 1, T0 + 40),
            certified_refund(2, 6, TxKind::RefundRedeem, 100_000, 100_250, 1, 83, 2, T0 + 50),
            certified_refund(2, 7, TxKind::RefundEarn, 201, 100_049, 2, 83, 3, T0 + 60),
            certified_refund(2, 8, TxKind::RefundEarn, 5, 100_044, 6, 83, 4, T0 + 70),
            certified_refund(2, 9, TxKind::RefundEarn, 5, 100_039, 1, 83, 5, T0 + 80),
        ],
        T0,
    );
    let mut ledger = shop.ledger();
    ledger.register_terminal(82, T0).unwrap();
    ledger.register_terminal(83, T0).unwrap();
    assert_eq!(ledger.ingest(&a[..], T0).unwrap().report.posted, 4);
    assert!(classes(&ledger).is_empty(), "an earn, a redemption and its refund pair");
    assert_eq!(ledger.ingest(&b[..], T0).unwrap().report.posted, 5);
    let ex = ledger.exceptions().unwrap();
    let got: Vec<(ExceptionClass, Option<u32>)> = ex.iter().map(|e| (e.class, e.counter)).collect();
    assert_eq!(
        got,
        vec![
            (ExceptionClass::DuplicateRefund, Some(5)),
            (ExceptionClass::RefundMismatch, Some(6)),
            (ExceptionClass::RefundMismatch, Some(7)),
            (ExceptionClass::RefundMismatch, Some(8)),
        ],
        "{ex:#?}"
    );
    assert_eq!(ex[1].evidence["why"], "the original is of another kind");
    assert_eq!(ex[2].evidence["why"], "the refunds exceed the original's points");
    assert_eq!(
        ex[3].evidence["why"], "the original is of another kind",
        "a refund is not refundable"
    );
    // The partial refund of the earn of 10 (counter 9, 5 points) pairs.
    let book = ledger.card(card_id(2)).unwrap().unwrap();
    assert_eq!(
        (book.shadow_balance, book.card_balance, book.discrepancy),
        (100_039, 100_039, 0)
    );
}

#[test]
fn a_gap_holds_records_and_ages_into_an_exception_once() {
    let shop = Shop::new();
    let path = shop.journal_path(91);
    let b1 = journal_batch(
        &path,
        91,
        vec![
            certified(EntryKind::Completion, 1, 1, TxKind::Earn, 100, 100, 91, 1, T0),
            certified(EntryKind::Completion, 1, 3, TxKind::Earn, 30, 150, 91, 2, T0),
        ],
        T0,
    );
    let mut ledger = shop.ledger();
    ledger.register_terminal(91, T0).unwrap();
    let out = ledger.ingest(&b1[..], T0).unwrap();
    assert_eq!((out.report.posted, out.report.held), (1, 1));
    let book = ledger.card(card_id(1)).unwrap().unwrap();
    assert_eq!((book.last_counter, book.pending, book.shadow_balance), (1, 1, 100));
    assert_eq!(ledger.settled_counters().unwrap(), vec![(card_id(1), 1)]);
    assert_eq!(ledger.age_gaps(T0 + 60, 3_600).unwrap(), 0);
    assert_eq!(ledger.age_gaps(T0 + 7_200, 3_600).unwrap(), 1);
    assert_eq!(ledger.age_gaps(T0 + 9_000, 3_600).unwrap(), 0, "once");
    let gap = ledger.exceptions().unwrap().pop().unwrap();
    assert_eq!(
        (gap.class, gap.counter, gap.evidence["missing_to"].as_u64()),
        (ExceptionClass::Gap, Some(2), Some(2))
    );
    assert_eq!(ledger.liability(1).unwrap().pending_points, 30);
    // The missing record arrives (a recovered copy from the same till).
    ack_locally(&path, 91, &b1, T0);
    let b2 = journal_batch(
        &path,
        91,
        vec![certified(EntryKind::Recovered, 1, 2, TxKind::Earn, 20, 120, 92, 7, T0)],
        T0 + 8_000,
    );
    let out = ledger.ingest(&b2[..], T0 + 8_000).unwrap();
    assert_eq!((out.report.posted, out.report.released), (1, 1));
    let book = ledger.card(card_id(1)).unwrap().unwrap();
    assert_eq!(
        (book.last_counter, book.pending, book.shadow_balance, book.flagged),
        (3, 0, 150, false)
    );
}

#[test]
fn batch_number_conflict_and_discontinuous_batches_are_refused() {
    let shop = Shop::new();
    let dir = shop.dir.path();
    let a = journal_batch(
        &dir.join("a.sqlite"),
        5,
        vec![certified(EntryKind::Completion, 1, 1, TxKind::Earn, 10, 10, 5, 1, T0)],
        T0,
    );
    let b = journal_batch(
        &dir.join("b.sqlite"),
        5,
        vec![certified(EntryKind::Completion, 2, 1, TxKind::Earn, 10, 10, 5, 1, T0)],
        T0,
    );
    let mut ledger = shop.ledger();
    ledger.register_terminal(5, T0).unwrap();
    ledger.ingest(&a[..], T0).unwrap();
    let err = ledger.ingest(&b[..], T0).unwrap_err();
    assert!(matches!(
        err,
        LedgerError::BatchConflict {
            terminal_id: 5,
            batch_no: 1
        }
    ));
    assert_eq!(err.http_status(), 409);
    // Batch 2 of journal b does not continue batch 1 of journal a.
    ack_locally(&dir.join("b.sqlite"), 5, &b, T0);
    let b2 = journal_batch(
        &dir.join("b.sqlite"),
        5,
        vec![certified(EntryKind::Completion, 2, 2, TxKind::Earn, 10, 20, 5, 2, T0)],
        T0,
    );
    let err = ledger.ingest(&b2[..], T0).unwrap_err();
    assert!(matches!(err, LedgerError::BrokenChain { terminal_id: 5, .. }), "{err}");
    assert_eq!(
        classes(&ledger),
        vec![ExceptionClass::BatchConflict, ExceptionClass::BrokenChain]
    );
    assert_eq!(ledger.card(card_id(2)).unwrap(), None);
}

/// Hands out `data` and fails with an I/O error after `fail_at` bytes.
struct FailingReader {
    data: Vec<u8>,
    pos: usize,
    fail_at: usize,
    panic: bool,
}

impl Read for FailingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.fail_at {
            if self.panic {
                panic!("server killed mid-import");
            }
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "client went away",
            ));
        }
        let n = buf.len().min(self.fail_at - self.pos).min(97);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[test]
fn an_import_cut_halfway_leaves_nothing_and_the_retry_posts_once() {
    let shop = Shop::new();
    let entries: Vec<Entry> = (0..40)
        .map(|i| {
            certified(
                EntryKind::Completion,
                i % 4,
                i / 4 + 1,
                TxKind::Earn,
                10,
                10 * (i / 4 + 1),
                7,
                i + 1,
                T0,
            )
        })
        .collect();
    let batch = journal_batch(&shop.journal_path(7), 7, entries, T0);
    {
        let mut ledger = shop.ledger();
        ledger.register_terminal(7, T0).unwrap();
        let before = snapshot(&ledger);
        let cut = FailingReader {
            data: batch.clone(),
            pos: 0,
            fail_at: batch.len() / 2,
            panic: false,
        };
        let err = ledger.ingest(BufReader::new(cut), T0).unwrap_err();
        assert!(matches!(err, LedgerError::Io(_)), "{err}");
        assert_eq!(snapshot(&ledger), before);
        // A panic mid-import (the closest to a kill in-process): the open
        // transaction dies with the ledger.
        let killed = FailingReader {
            data: batch.clone(),
            pos: 0,
            fail_at: batch.len() * 3 / 4,
            panic: true,
        };
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut l = shop.ledger();
            let _ = l.ingest(BufReader::new(killed), T0);
        }));
        assert!(r.is_err());
        drop(ledger);
    }
    let mut ledger = shop.ledger();
    assert_eq!(ledger.card(card_id(1)).unwrap(), None);
    assert!(ledger.reconciliation(None, None, &Zone::utc()).unwrap().rows.is_empty());
    let out = ledger.ingest(&batch[..], T0).unwrap();
    assert_eq!((out.ack.status, out.report.posted), (AckStatus::Posted, 40));
    assert_eq!(ledger.ingest(&batch[..], T0).unwrap().ack.status, AckStatus::Duplicate);
    assert_eq!(ledger.card(card_id(1)).unwrap().unwrap().shadow_balance, 100);
}

#[test]
fn erasing_a_customer_keeps_the_books() {
    let shop = Shop::new();
    let mut ledger = shop.ledger();
    let c = NewCustomer {
        name: "Анна Петрова".into(),
        birth_date: Date {
            year: 1990,
            month: 3,
            day: 14,
        },
        home_city: "Нижний Новгород".into(),
        household: *b"HH000042",
        preferences: vec!["coffee".into()],
        tier: 1,
    };
    let id = ledger.register_customer(&c).unwrap();
    ledger.register_card(card_id(1), id, 1, T0).unwrap();
    assert!(matches!(
        ledger.register_card(card_id(2), 999, 1, T0),
        Err(LedgerError::UnknownCustomer(999))
    ));
    ledger.queue_profile_update(card_id(1), 2, vec![1, 2, 3], T0).unwrap();
    ledger.register_terminal(3, T0).unwrap();
    let batch = journal_batch(
        &shop.journal_path(3),
        3,
        vec![
            certified(EntryKind::Completion, 1, 1, TxKind::Earn, 100, 100, 3, 1, T0),
            certified(EntryKind::Completion, 1, 2, TxKind::Redeem, 30, 70, 3, 2, T0 + 60),
        ],
        T0,
    );
    ledger.ingest(&batch[..], T0).unwrap();
    let exported = ledger.customer(id).unwrap().unwrap();
    assert_eq!((exported.name.as_str(), exported.cards.len()), ("Анна Петрова", 1));
    let report = ledger.customers_report(T0 + 86_400).unwrap();
    assert_eq!(report.rows[0].name.as_deref(), Some("Анна Петрова"));
    let liability = ledger.liability(5).unwrap();
    let recon = ledger.reconciliation(None, None, &Zone::utc()).unwrap();
    let book = ledger.card(card_id(1)).unwrap().unwrap();
    assert_eq!(book.customer_id, Some(id));

    ledger.erase_customer(id).unwrap();
    assert_eq!(ledger.customer(id).unwrap(), None);
    assert!(
        ledger.profile_updates().unwrap().is_empty(),
        "queued profiles are personal data"
    );
    assert!(matches!(
        ledger.erase_customer(id),
        Err(LedgerError::UnknownCustomer(_))
    ));
    let after = ledger.card(card_id(1)).unwrap().unwrap();
    assert_eq!(after.customer_id, None);
    assert_eq!(
        (after.shadow_balance, after.last_counter, after.key_version),
        (book.shadow_balance, 2, 1)
    );
    assert_eq!(ledger.liability(5).unwrap(), liability);
    assert_eq!(ledger.reconciliation(None, None, &Zone::utc()).unwrap(), recon);
    let report = ledger.customers_report(T0 + 86_400).unwrap();
    assert_eq!((report.rows[0].customer_id, report.rows[0].name.as_ref()), (None, None));
    assert_eq!(report.rows[0].transactions, 2);
    // No trace of the name anywhere in the file's live tables.
    drop(ledger);
    let conn = rusqlite_free_text(&shop.ledger_path());
    assert!(!conn.contains("Анна"));
}

/// Every text value of every table, concatenated (the file's live data).
fn rusqlite_free_text(path: &std::path::Path) -> String {
    // Checkpoint the WAL into the file, then read the raw bytes after a
    // VACUUM would be overkill: query the tables instead.
    let l = Ledger::open(path, LedgerKeys::from_issuer(&keys())).unwrap();
    let mut s = serde_json::to_string(&l.customers_report(T0).unwrap()).unwrap();
    s += &serde_json::to_string(&l.exceptions().unwrap()).unwrap();
    s += &format!("{:?}", l.profile_updates().unwrap());
    s
}

#[test]
fn reports_on_a_small_day() {
    let shop = Shop::new();
    let cards = trading_day(&shop, [11, 12]);
    let mut ledger = shop.ledger();
    for id in [11, 12] {
        ledger.register_terminal(id, T0).unwrap();
    }
    let day = shop.now();
    for id in [11, 12] {
        ledger.ingest(&shop.settle(id)[..], day).unwrap();
    }
    let date = Date::from_unix_days(day / 86_400);
    let recon = ledger.reconciliation(Some(date), None, &Zone::utc()).unwrap();
    assert_eq!(recon.rows.len(), 2);
    for row in &recon.rows {
        assert_eq!(row.date, date.to_string());
        // Each till also journals, as recovered evidence, the last
        // transaction a card made at the other till: copies.
        assert_eq!((row.rejected, row.held), (0, 0));
        assert_eq!(row.posted + row.copies, row.card_transactions);
        assert_eq!(
            row.declared.values().map(|t| t.count).sum::<u64>(),
            row.card_transactions
        );
        assert_eq!(row.stored.values().map(|t| t.count).sum::<u64>(), row.posted);
        assert_eq!(row.exceptions, 0);
    }
    assert!(recon.rows.iter().map(|r| r.copies).sum::<u64>() > 0);
    let posted: u64 = recon.rows.iter().map(|r| r.posted).sum();
    assert_eq!(
        posted,
        cards.iter().map(|c| u64::from(c.state().unwrap().counter)).sum::<u64>()
    );
    assert!(ledger
        .reconciliation(
            Some(Date {
                year: 2020,
                month: 1,
                day: 1
            }),
            None,
            &Zone::utc()
        )
        .unwrap()
        .rows
        .is_empty());
    assert_eq!(
        ledger.reconciliation(None, Some(12), &Zone::utc()).unwrap().rows.len(),
        1
    );
    let total: i64 = cards.iter().map(|c| i64::from(c.state().unwrap().balance)).sum();
    let l = ledger.liability(2).unwrap();
    assert_eq!((l.cards, l.points_outstanding, l.value_minor), (3, total, total * 2));
    let cr = ledger.customers_report(day + 3_600).unwrap();
    assert_eq!(cr.rows.len(), 3, "three anonymous cards");
    for row in &cr.rows {
        assert_eq!((row.visits, row.recency_days), (1, 0));
        // Tills assigned to no store are their own place.
        assert!(
            matches!(row.favourite_store.as_deref(), Some("terminal 11" | "terminal 12")),
            "{row:?}"
        );
        assert_eq!(row.favourite_store_id, None);
        // Everyone came once today: ties take the middle quintile, so all
        // three score R3 F3 and need attention (docs/analytics.md).
        assert!(row.rfm.starts_with("R3F3M"), "{row:?}");
        assert_eq!(row.segment, "need_attention");
    }
    assert_eq!(cr.segments.get("need_attention"), Some(&3));
    assert_eq!(cr.legend.len(), 10);
    // Both tills in one store: that store is every customer's favourite.
    ledger.add_store(3, "Центральный", "Нижний Новгород", day).unwrap();
    ledger.assign_terminal(11, 3).unwrap();
    ledger.assign_terminal(12, 3).unwrap();
    for row in &ledger.customers_report(day + 3_600).unwrap().rows {
        assert_eq!(row.favourite_store.as_deref(), Some("Центральный"));
        assert_eq!(row.favourite_store_id, Some(3));
    }
    assert!(cr.rows.iter().any(|r| r.points_redeemed == 10));
    // Everything serializes for the CLI.
    for v in [
        serde_json::to_value(&recon).unwrap(),
        serde_json::to_value(&l).unwrap(),
        serde_json::to_value(&cr).unwrap(),
        serde_json::to_value(ledger.card(card_id(1)).unwrap()).unwrap(),
    ] {
        assert!(!v.is_null());
    }
}

#[test]
fn declines_are_stored_for_reconciliation() {
    let shop = Shop::new();
    let mut till = shop.till(13);
    let mut card = issued_card(1);
    shop.advance(60);
    assert!(purchase(&mut till, &mut card, 2_000));
    shop.advance(60);
    assert!(
        !redeem(&mut till, &mut card, 1_000_000),
        "more than the balance is declined"
    );
    let mut ledger = shop.ledger();
    ledger.register_terminal(13, T0).unwrap();
    ledger.ingest(&shop.settle(13)[..], shop.now()).unwrap();
    let recon = ledger.reconciliation(None, Some(13), &Zone::utc()).unwrap();
    assert_eq!(
        recon.rows[0].declines.values().sum::<u64>(),
        1,
        "{:?}",
        recon.rows[0].declines
    );
}

#[test]
fn hotlist_profile_updates_and_schema_versions() {
    let shop = Shop::new();
    let mut ledger = shop.ledger();
    assert_eq!(ledger.hotlist().unwrap().version, 0);
    ledger.hotlist_card(card_id(1), "lost", T0).unwrap();
    ledger.hotlist_card(card_id(1), "lost", T0).unwrap();
    ledger.hotlist_card(card_id(2), "stolen", T0).unwrap();
    let h = ledger.hotlist().unwrap();
    assert_eq!((h.version, h.cards.len()), (2, 2));

    ledger.queue_profile_update(card_id(1), 2, vec![2; 10], T0).unwrap();
    ledger.queue_profile_update(card_id(1), 3, vec![3; 10], T0).unwrap();
    ledger.queue_profile_update(card_id(2), 1, vec![1; 10], T0).unwrap();
    assert!(ledger.queue_profile_update(card_id(2), 1, vec![0; 513], T0).is_err());
    assert_eq!(
        ledger.profile_updates().unwrap(),
        vec![(card_id(1), 3, vec![3; 10]), (card_id(2), 1, vec![1; 10])]
    );
    ledger.mark_profile_delivered(card_id(1), 3).unwrap();
    assert_eq!(ledger.profile_updates().unwrap(), vec![(card_id(2), 1, vec![1; 10])]);
    drop(ledger);

    let conn = rusqlite::Connection::open(shop.ledger_path()).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = Ledger::open(&shop.ledger_path(), LedgerKeys::from_issuer(&keys())).unwrap_err();
    assert!(matches!(err, LedgerError::NewerSchema { found: 99, .. }), "{err}");
}

#[test]
fn sync_deliveries_are_per_terminal_and_recorded_once() {
    use tessera_ledger::SyncDelivery;
    let shop = Shop::new();
    let mut ledger = shop.ledger();
    let items = [
        SyncDelivery::Profile(card_id(1), 3),
        SyncDelivery::Unblock(card_id(1), 2),
        SyncDelivery::KeyUpdate(card_id(2), 3),
    ];
    assert_eq!(ledger.record_sync_deliveries(7, &items, T0).unwrap(), 3);
    assert_eq!(ledger.record_sync_deliveries(7, &items, T0 + 1).unwrap(), 0, "once");
    assert_eq!(ledger.record_sync_deliveries(8, &items[..1], T0).unwrap(), 1);
    let seven = ledger.sync_delivered(7).unwrap();
    assert_eq!(seven.len(), 3);
    assert!(items.iter().all(|i| seven.contains(i)));
    assert_eq!(
        ledger.sync_delivered(8).unwrap().into_iter().collect::<Vec<_>>(),
        vec![SyncDelivery::Profile(card_id(1), 3)]
    );
    assert!(ledger.sync_delivered(9).unwrap().is_empty());
    // A newer version of the same decision is another delivery.
    assert_eq!(
        ledger
            .record_sync_deliveries(7, &[SyncDelivery::Profile(card_id(1), 4)], T0)
            .unwrap(),
        1
    );
}

#[test]
fn ledger_keys_match_the_issuer() {
    let k = keys();
    let lk = LedgerKeys::from_issuer(&k);
    for id in [0, 1, 42, u32::MAX] {
        assert_eq!(lk.batch_key(id), k.terminal_batch_key(id));
    }
    assert!(format!("{lk:?}").starts_with("LedgerKeys"));
}

#[test]
fn garbage_and_truncated_input_is_malformed() {
    let shop = Shop::new();
    let mut ledger = shop.ledger();
    for input in [
        &b""[..],
        b"{}",
        b"not json\n",
        b"{\"type\":\"header\",\"format\":\"tessera-batch\",\"version\":9}\n",
    ] {
        let err = ledger.ingest(input, T0).unwrap_err();
        assert_eq!(err.http_status(), 400, "{err}");
    }
    ledger.register_terminal(8, T0).unwrap();
    let batch = journal_batch(
        &shop.journal_path(8),
        8,
        vec![certified(EntryKind::Completion, 1, 1, TxKind::Earn, 10, 10, 8, 1, T0)],
        T0,
    );
    let lines: Vec<&[u8]> = batch.split(|b| *b == b'\n').collect();
    let no_mac = [lines[0], lines[1]].join(&b'\n');
    assert_eq!(ledger.ingest(&no_mac[..], T0).unwrap_err().http_status(), 400);
    let mut extra = batch.clone();
    extra.extend_from_slice(b"{}\n");
    assert_eq!(ledger.ingest(&extra[..], T0).unwrap_err().http_status(), 400);
    assert_eq!(ledger.card(card_id(1)).unwrap(), None);
    let _ = BufRead::fill_buf(&mut &batch[..]);
}

/// The classes and counters of the exceptions, in order.
fn raised(l: &Ledger) -> Vec<(ExceptionClass, Option<u32>)> {
    l.exceptions().unwrap().iter().map(|e| (e.class, e.counter)).collect()
}

/// A copy of till 7 (its genuine keys, an edited policy) gave a card
/// 87 500 points; the card's record reached the office through honest
/// till 8. Till 7's own verified chain holds, at the sequence the card
/// recorded, a decision for another card: an orphan, whichever batch
/// arrives first.
#[test]
fn a_record_no_approved_decision_explains_is_an_orphan() {
    for origin_first in [true, false] {
        let shop = Shop::new();
        let mut ledger = shop.ledger();
        ledger.register_terminal(7, T0).unwrap();
        ledger.register_terminal(8, T0).unwrap();
        // The real till 7: seq 1 approves card 2's earn of 10, seq 2 its completion.
        let honest = journal_batch(
            &shop.journal_path(7),
            7,
            vec![certified(EntryKind::Completion, 2, 1, TxKind::Earn, 10, 10, 7, 1, T0)],
            T0,
        );
        // The rogue copy's decision was also seq 1 (for card 1, 87 500 points).
        let rogue = certified(EntryKind::Recovered, 1, 1, TxKind::Earn, 87_500, 87_500, 7, 1, T0);
        let recovered = journal_batch(&shop.journal_path(8), 8, vec![rogue], T0);
        let (a, b) = if origin_first {
            (&honest, &recovered)
        } else {
            (&recovered, &honest)
        };
        ledger.ingest(&a[..], T0).unwrap();
        if !origin_first {
            assert!(raised(&ledger).is_empty(), "awaiting till 7's batch: nothing yet");
        }
        ledger.ingest(&b[..], T0 + 60).unwrap();
        let ex = ledger.exceptions().unwrap();
        assert_eq!(
            raised(&ledger),
            vec![(ExceptionClass::Orphan, Some(1))],
            "origin first: {origin_first}"
        );
        assert_eq!(ex[0].card_id, Some(card_id(1)));
        assert_eq!(ex[0].evidence["origin_terminal"], 7);
        assert_eq!(
            ex[0].evidence["held_at_origin"]["card_id"],
            hex::encode_upper(card_id(2))
        );
        // The card moved the points: posted, and not explained.
        let l = ledger.liability(1).unwrap();
        assert_eq!(l.points_outstanding, 87_510);
        let proof = ledger.explanation().unwrap();
        assert!(!proof.explained);
        assert_eq!((proof.orphan_records, proof.orphan_points), (1, 87_500));
        assert_eq!(proof.matched_points, 10);
    }
}

/// Origins the ledger cannot match at all: an unregistered till at once;
/// a registered till that never settles, after the aging period; a till
/// revoked before it settled, at the revocation.
#[test]
fn unregistered_silent_and_revoked_origins_make_orphans() {
    let shop = Shop::new();
    let mut ledger = shop.ledger();
    for t in [8, 40, 41] {
        ledger.register_terminal(t, T0).unwrap();
    }
    let b = journal_batch(
        &shop.journal_path(8),
        8,
        vec![
            certified(EntryKind::Recovered, 1, 1, TxKind::Earn, 50, 50, 99, 3, T0),
            certified(EntryKind::Recovered, 2, 1, TxKind::Earn, 60, 60, 40, 3, T0),
            certified(EntryKind::Recovered, 3, 1, TxKind::Earn, 70, 70, 41, 3, T0),
        ],
        T0,
    );
    ledger.ingest(&b[..], T0).unwrap();
    assert_eq!(raised(&ledger), vec![(ExceptionClass::Orphan, Some(1))]);
    assert_eq!(
        ledger.exceptions().unwrap()[0].evidence["why"],
        "the origin till is not registered"
    );
    ledger.revoke_terminal(41, T0 + 10).unwrap();
    assert_eq!(raised(&ledger).len(), 2, "the revoked till's record at once");
    assert_eq!(ledger.exceptions().unwrap()[1].card_id, Some(card_id(3)));
    assert_eq!(
        ledger.age_gaps(T0 + 3_000, 3_600).unwrap(),
        0,
        "till 40 may still settle"
    );
    assert_eq!(ledger.age_gaps(T0 + 3_601, 3_600).unwrap(), 1);
    assert_eq!(ledger.age_gaps(T0 + 9_000, 3_600).unwrap(), 0, "once");
    let last = ledger.exceptions().unwrap().pop().unwrap();
    assert_eq!((last.class, last.card_id), (ExceptionClass::Orphan, Some(card_id(2))));
    let proof = ledger.explanation().unwrap();
    assert_eq!((proof.orphan_records, proof.awaiting_records), (3, 0));
}

/// A copy delivered before its origin settles waits, then matches: no
/// exception, every point explained.
#[test]
fn a_copy_delivered_first_matches_when_its_origin_settles() {
    let shop = Shop::new();
    let mut ledger = shop.ledger();
    ledger.register_terminal(7, T0).unwrap();
    ledger.register_terminal(8, T0).unwrap();
    let honest = journal_batch(
        &shop.journal_path(7),
        7,
        vec![certified(EntryKind::Completion, 2, 1, TxKind::Earn, 10, 10, 7, 1, T0)],
        T0,
    );
    // Till 8 read the card's record of till 7's decision (seq 1).
    let copy = certified(EntryKind::Recovered, 2, 1, TxKind::Earn, 10, 10, 7, 1, T0);
    let recovered = journal_batch(&shop.journal_path(8), 8, vec![copy], T0);
    ledger.ingest(&recovered[..], T0).unwrap();
    let proof = ledger.explanation().unwrap();
    assert_eq!((proof.awaiting_records, proof.explained), (1, false));
    ledger.ingest(&honest[..], T0 + 60).unwrap();
    assert!(raised(&ledger).is_empty(), "{:?}", ledger.exceptions().unwrap());
    let proof = ledger.explanation().unwrap();
    assert!(proof.explained, "{proof:?}");
    assert_eq!(
        (proof.matched_records, proof.matched_points, proof.awaiting_records),
        (1, 10, 0)
    );
}

/// Till 1's completions copied into till 3's batch and sealed with till
/// 3's genuine key: misattributed, and counted for till 1 only.
#[test]
fn records_copied_into_another_tills_batch_are_misattributed() {
    let shop = Shop::new();
    let mut ledger = shop.ledger();
    ledger.register_terminal(1, T0).unwrap();
    ledger.register_terminal(3, T0).unwrap();
    let genuine = journal_batch(
        &shop.journal_path(1),
        1,
        vec![certified(EntryKind::Completion, 4, 1, TxKind::Earn, 25, 25, 1, 1, T0)],
        T0,
    );
    ledger.ingest(&genuine[..], T0).unwrap();
    // The copied line: till 1's completion, card record and all.
    let text = String::from_utf8(genuine.clone()).unwrap();
    let line = text.lines().find(|l| l.contains(r#"\"completion\""#)).unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let body: serde_json::Value = serde_json::from_str(v["body"].as_str().unwrap()).unwrap();
    let copied: Entry = serde_json::from_value(body["entry"].clone()).unwrap();
    let forged = journal_batch(&shop.journal_path(3), 3, vec![copied], T0);
    let out = ledger.ingest(&forged[..], T0 + 60).unwrap();
    assert_eq!((out.report.posted, out.report.duplicates), (0, 1));
    assert_eq!(raised(&ledger), vec![(ExceptionClass::Misattributed, Some(1))]);
    let book = ledger.card(card_id(4)).unwrap().unwrap();
    assert_eq!(book.shadow_balance, 25, "posted once");
}

/// The ledger file is restored from a backup taken before batch 2 (a
/// storage rollback): batch 2 was acknowledged and is gone. Batch 3 is
/// held with a `missing-batch` exception and an acknowledgement that asks
/// for batch 2; the till re-sends it from its journal exactly as sealed,
/// both post, and the books match the card again.
#[test]
fn a_batch_lost_in_a_rollback_is_asked_for_and_resent() {
    let shop = Shop::new();
    let path = shop.journal_path(61);
    let mut till = shop.till(61);
    let mut card = issued_card(1);
    let mut ledger = shop.ledger();
    ledger.register_terminal(61, T0).unwrap();
    let backup = shop.dir.path().join("backup.sqlite");
    for round in 1..=3u32 {
        shop.advance(60);
        assert!(purchase(&mut till, &mut card, 1_000 * u64::from(round)));
        let batch = shop.settle(61);
        let out = ledger.ingest(&batch[..], shop.now()).unwrap();
        if round == 1 {
            drop(ledger);
            std::fs::copy(shop.ledger_path(), &backup).unwrap();
            ledger = shop.ledger();
        }
        if round == 2 {
            assert_eq!(out.ack.status, AckStatus::Posted);
            acknowledge(&path, 61, &out.ack, shop.now());
            // The rollback: the office's disk goes back to the backup.
            drop(ledger);
            for ext in ["-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{ext}", shop.ledger_path().display()));
            }
            std::fs::copy(&backup, shop.ledger_path()).unwrap();
            ledger = shop.ledger();
            continue;
        }
        if round == 3 {
            assert_eq!(out.ack.status, AckStatus::Held);
            assert!(out.ack.verify(&keys().terminal_batch_key(61)));
            assert_eq!(out.ack.missing_from, Some(2));
            let mut tampered = out.ack.clone();
            tampered.missing_from = Some(1);
            assert!(
                !tampered.verify(&keys().terminal_batch_key(61)),
                "missing_from is under the MAC"
            );
            assert!(raised(&ledger).is_empty(), "batches may arrive out of order");
            // Not re-sent within the aging period: an exception says so.
            let later = shop.now() + 3_601;
            assert_eq!(ledger.age_gaps(later, 3_600).unwrap(), 1);
            assert_eq!(ledger.age_gaps(later + 60, 3_600).unwrap(), 0, "once");
            assert_eq!(raised(&ledger), vec![(ExceptionClass::MissingBatch, None)]);
            assert_eq!(ledger.exceptions().unwrap()[0].evidence["missing_from"], 2);
            // The till re-sends what the office lacks.
            let journal = tessera_terminal::journal::Journal::open(&path, 61).unwrap();
            let ranges = tessera_terminal::batch::resend_ranges(&journal, 2, out.ack.batch_no).unwrap();
            assert_eq!(ranges.iter().map(|r| r.batch_no).collect::<Vec<_>>(), vec![2]);
            let mut again = Vec::new();
            tessera_terminal::batch::write_range(&journal, &keys().terminal_batch_key(61), &ranges[0], &mut again)
                .unwrap();
            let resent = ledger.ingest(&again[..], shop.now()).unwrap();
            assert_eq!(resent.ack.status, AckStatus::Posted);
            assert_eq!(resent.report.released_batches, vec![3]);
            assert_eq!(raised(&ledger).len(), 1, "nothing else");
        } else {
            acknowledge(&path, 61, &out.ack, shop.now());
        }
    }
    let st = card.state().unwrap();
    let book = ledger.card(st.card_id).unwrap().unwrap();
    assert_eq!(
        (book.shadow_balance, book.last_counter, book.pending),
        (i64::from(st.balance), 3, 0)
    );
}

/// The ledger recomputes each purchase's points under the signed policy
/// and campaigns its decision names. A till whose policy was edited in
/// memory (its file's digest unchanged) gives more points: `points-mismatch`
/// with the recomputed figure. A till deciding under a policy file the
/// office never registered: `points-mismatch`, unknown policy; once the
/// office registers (signs) it, the same purchases recompute cleanly. An
/// honest till with campaigns (tier, favourites, nth visit) raises nothing.
#[test]
fn purchase_points_are_recomputed_under_the_signed_rules() {
    let own_policy =
        tessera_terminal::policy::DEFAULT_POLICY_TOML.replace("base_points_per_unit = 1", "base_points_per_unit = 3");
    assert_ne!(
        own_policy,
        tessera_terminal::policy::DEFAULT_POLICY_TOML,
        "the policy text changed"
    );
    let campaigns_toml = include_str!("../../tessera-rules/campaigns.example.toml");
    for case in ["edited", "unregistered", "registered", "honest-with-campaigns"] {
        let shop = Shop::new();
        let mut ledger = shop.ledger();
        ledger.register_terminal(51, T0).unwrap();
        let (policy, campaigns) = match case {
            "edited" => {
                let mut p = Policy::default_policy();
                p.points.base_points_per_unit *= 1_000;
                p.limits.max_earn_points = u32::MAX;
                (p, tessera_terminal::offers::CampaignSet::empty())
            }
            "unregistered" | "registered" => (
                Policy::from_toml(&own_policy).unwrap(),
                tessera_terminal::offers::CampaignSet::empty(),
            ),
            _ => (
                Policy::default_policy(),
                tessera_terminal::offers::CampaignSet::from_toml(campaigns_toml).unwrap(),
            ),
        };
        if case == "registered" {
            ledger.register_policy(&own_policy, T0).unwrap();
        }
        if case == "honest-with-campaigns" {
            ledger.register_campaigns(campaigns_toml, T0).unwrap();
        }
        let mut till = shop.till_with(51, policy, campaigns);
        let mut card = issued_card(1);
        let mut earned = 0;
        for minor in [1_250u64, 4_000, 990] {
            shop.advance(60);
            card.insert().unwrap();
            let mut tap = till.tap(&mut card).unwrap();
            match tap.purchase(minor, &["coffee".to_owned()]).unwrap() {
                tessera_terminal::till::TillOutcome::Approved { receipt, .. } => earned += receipt.record.amount,
                other => panic!("{case}: {other:?}"),
            }
        }
        drop(till);
        let out = ledger.ingest(&shop.settle(51)[..], shop.now()).unwrap();
        assert_eq!(out.report.posted, 3, "{case}");
        let ex = ledger.exceptions().unwrap();
        let mismatches: Vec<_> = ex
            .iter()
            .filter(|e| e.class == ExceptionClass::PointsMismatch)
            .collect();
        match case {
            "edited" => {
                assert_eq!(mismatches.len(), 3, "{case}: {ex:?}");
                let first = &mismatches[0].evidence;
                assert!(
                    first["journaled_points"].as_u64() > first["recomputed_points"].as_u64(),
                    "{first}"
                );
                assert!(!ledger.explanation().unwrap().explained);
            }
            "unregistered" => {
                assert_eq!(mismatches.len(), 3, "{case}: {ex:?}");
                assert_eq!(
                    mismatches[0].evidence["why"],
                    "the decision names a policy the office never signed"
                );
            }
            _ => {
                assert!(ex.is_empty(), "{case}: {ex:?}");
                assert!(ledger.explanation().unwrap().explained, "{case}");
            }
        }
        // The card moved the points either way: they are in the books.
        let book = ledger.card(card_id(1)).unwrap().unwrap();
        assert_eq!(book.shadow_balance, i64::from(earned), "{case}");
    }
}
