//! REFUND (spec §4.9), ACKNOWLEDGE SETTLEMENT (spec §4.10) and the card's
//! visit and velocity counters (spec §6.1).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use tessera_crypto::keys::IssuerDecision;
use tessera_crypto::keys::IssuerKeys;
use tessera_protocol::messages::TxKind;
use tessera_suite::{card_id, issued_card, issuer_mac, test_terminal, TEST_TIME};
use tessera_terminal::TerminalError;

#[test]
fn refunds_reverse_and_reference_the_original() {
    let (mut card, _) = issued_card(50, 1);
    let mut t = test_terminal(1).with_store(77);
    let mut s = t.tap(&mut card).unwrap();
    let earn = s.earn(300).unwrap();
    let redeem = s.redeem(100).unwrap();
    let r1 = s.refund(&redeem.record).unwrap();
    assert_eq!(r1.record.kind, TxKind::RefundRedeem);
    assert_eq!((r1.record.balance_after, r1.record.reference), (300, 2));
    let r2 = s.refund(&earn.record).unwrap();
    assert_eq!(r2.record.kind, TxKind::RefundEarn);
    assert_eq!((r2.record.balance_after, r2.record.reference), (0, 1));
    // A refund is not refundable; an original the card has not made yet is refused.
    assert!(matches!(s.refund(&r2.record), Err(TerminalError::InvalidRequest(_))));
    let mut future = earn.record.clone();
    future.counter = 99;
    assert!(matches!(s.refund(&future), Err(TerminalError::InvalidRequest(_))));
    drop(s);
    let verifier = IssuerKeys::test().unwrap().certificate_verifier();
    for r in [&r1, &r2] {
        verifier.verify(&r.card_id, r.key_version, &r.record).unwrap();
        // The reference is certified: changing it breaks the certificate.
        let mut forged = r.record.clone();
        forged.reference += 1;
        assert!(verifier.verify(&r.card_id, r.key_version, &forged).is_err());
    }
}

#[test]
fn refund_of_an_earn_cannot_overdraw() {
    let (mut card, _) = issued_card(51, 2);
    let mut t = test_terminal(1);
    let mut s = t.tap(&mut card).unwrap();
    let earn = s.earn(100).unwrap();
    s.redeem(60).unwrap();
    assert!(matches!(
        s.refund(&earn.record),
        Err(TerminalError::InsufficientBalance { balance: 40 })
    ));
    drop(s);
    assert_eq!(card.state().unwrap().balance, 40);
}

#[test]
fn visits_and_velocity_are_counted_in_the_same_commit() {
    let (mut card, _) = issued_card(52, 3);
    let mut t = test_terminal(1).with_store(12);
    let mut s = t.tap(&mut card).unwrap();
    assert_eq!(s.card().visits.count, 0);
    s.earn(500).unwrap();
    s.earn(10).unwrap();
    s.redeem(40).unwrap();
    s.redeem(60).unwrap();
    drop(s);
    let s = t.tap(&mut card).unwrap();
    let c = s.card();
    assert_eq!(c.visits.count, 2);
    assert_eq!(c.visits.last_store, 12);
    assert_eq!(c.visits.last_day, TEST_TIME / 86_400);
    assert_eq!(
        (
            c.velocity.unsettled_redeems,
            c.velocity.unsettled_points,
            c.velocity.settled_counter
        ),
        (2, 100, 0)
    );
}

#[test]
fn settlement_acknowledgement_restarts_velocity_from_the_log() {
    let (mut card, _) = issued_card(53, 4);
    let mut t = test_terminal(1);
    let mut s = t.tap(&mut card).unwrap();
    s.earn(1000).unwrap(); // 1
    s.redeem(10).unwrap(); // 2
    s.redeem(20).unwrap(); // 3
    s.redeem(30).unwrap(); // 4
                           // Settled up to counter 3: only the redemption at 4 is still unsettled.
    let id = card_id(53);
    let v = s
        .acknowledge_settlement(3, issuer_mac(&id, IssuerDecision::Settled(3)))
        .unwrap();
    assert_eq!((v.unsettled_redeems, v.unsettled_points, v.settled_counter), (1, 30, 3));
    // Idempotent, never backwards.
    let v = s
        .acknowledge_settlement(2, issuer_mac(&id, IssuerDecision::Settled(2)))
        .unwrap();
    assert_eq!((v.unsettled_redeems, v.unsettled_points, v.settled_counter), (1, 30, 3));
    assert!(matches!(
        s.acknowledge_settlement(5, issuer_mac(&id, IssuerDecision::Settled(5))),
        Err(TerminalError::InvalidRequest(_))
    ));
    drop(s);
    assert_eq!(card.state().unwrap().velocity.settled_counter, 3);
}
