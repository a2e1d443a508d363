//! Online authorization on the card (applet-spec §4.17, v2.2): the card's
//! request, bound to its id, counter, balance, velocity counters and a
//! fresh challenge under K_cert, and the office's answer, an issuer MAC
//! over the request's cryptogram, the decision and a settled counter. With
//! an approval the card goes beyond its offline rules — an amount above its
//! cap, a refund whose original left the log — and marks the record as
//! authorized online; a declined, missing, replayed, re-targeted or
//! amount-changed answer changes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use tessera_crypto::keys::{IssuerDecision, IssuerKeys};
use tessera_crypto::rng::Rng;
use tessera_protocol::messages::{AuthorizationRequest, AuthorizationResponse, LogRecord, TxKind};
use tessera_protocol::StatusWord;
use tessera_simulator::SimCard;
use tessera_suite::{anna, card_id, issuer_mac, test_terminal};
use tessera_terminal::issuer::{personalize, IssueParams};
use tessera_terminal::TerminalError;

/// A card whose caps are 1,000 points to earn and 100 to redeem, with an
/// earn of 500 (counter 1).
fn small_caps_card(n: u32) -> SimCard {
    let keys = IssuerKeys::test().unwrap();
    let id = card_id(n);
    let mut card = SimCard::manufacture(id, &keys.card_perso_key(&id), Rng::seeded(u64::from(n))).unwrap();
    let params = IssueParams {
        earn_cap: 1_000,
        redeem_cap: 100,
        ..IssueParams::default()
    };
    personalize(&mut card, &keys, anna(), &params).unwrap();
    let mut t = test_terminal(1);
    t.tap(&mut card).unwrap().earn(500).unwrap();
    card
}

/// What the office answers (the test issuer keys).
fn answer(card: u32, request: &AuthorizationRequest, approved: bool, settled: u32) -> AuthorizationResponse {
    AuthorizationResponse {
        approved,
        settled,
        issuer_mac: issuer_mac(
            &card_id(card),
            IssuerDecision::Authorization {
                cryptogram: request.cryptogram,
                decision: u8::from(!approved),
                settled,
            },
        ),
    }
}

fn refused(err: TerminalError) -> StatusWord {
    match err {
        TerminalError::Card { sw, .. } => sw,
        other => panic!("expected a card refusal, got {other:?}"),
    }
}

#[test]
fn a_redemption_above_the_cap_goes_ahead_with_the_office_approval_and_is_marked_online() {
    let mut card = small_caps_card(601);
    let keys = IssuerKeys::test().unwrap();
    let mut t = test_terminal(7);
    let mut s = t.tap(&mut card).unwrap();
    // Offline the card refuses it.
    assert!(matches!(s.redeem(150), Err(TerminalError::AboveCap)));
    let request = s.request_authorization(TxKind::Redeem, 150, 0).unwrap();
    assert_eq!(
        (
            request.counter,
            request.kind,
            request.amount,
            request.balance,
            request.terminal_id
        ),
        (1, TxKind::Redeem, 150, 500, 7)
    );
    // The office can check that the card made the request.
    keys.certificate_verifier()
        .verify_request(&card_id(601), 1, &request)
        .unwrap();
    let r = s
        .transact_authorized(&request, &answer(601, &request, true, 0))
        .unwrap();
    assert_eq!(
        (
            r.record.counter,
            r.record.kind,
            r.record.amount,
            r.record.balance_after,
            r.record.online
        ),
        (2, TxKind::Redeem, 150, 350, true)
    );
    // Certified with the online bit: the office sees the record was
    // authorized online, and nobody can strip the mark.
    keys.certificate_verifier().verify(&card_id(601), 1, &r.record).unwrap();
    assert_eq!(r.record.to_bytes()[4], 0x82);
    let mut stripped = r.record.clone();
    stripped.online = false;
    assert!(keys.certificate_verifier().verify(&card_id(601), 1, &stripped).is_err());
    assert_eq!(LogRecord::parse(&r.record.to_bytes()).unwrap(), r.record);
    drop(s);
    let st = card.state().unwrap();
    assert_eq!((st.balance, st.counter), (350, 2));
    assert_eq!((st.velocity.unsettled_redeems, st.velocity.unsettled_points), (1, 150));
}

#[test]
fn a_declined_answer_changes_nothing() {
    let mut card = small_caps_card(602);
    let before = card.memory();
    let mut t = test_terminal(7);
    let mut s = t.tap(&mut card).unwrap();
    let request = s.request_authorization(TxKind::Redeem, 150, 0).unwrap();
    // The terminal does not even ask the card.
    assert!(matches!(
        s.transact_authorized(&request, &answer(602, &request, false, 0)),
        Err(TerminalError::DeclinedOnline)
    ));
    drop(s);
    assert_eq!(card.memory().cells(), before.cells());
}

/// Sends an operation command with `answer` whatever it is (a hostile or
/// confused terminal): the low-level path, so the card's own checks are
/// what is tested.
fn send_raw(card: &mut SimCard, n: u32, ask: (TxKind, u32, u32), op: (TxKind, u32, u32), pick: Pick) -> StatusWord {
    let mut t = test_terminal(7);
    let mut s = t.tap(&mut *card).unwrap();
    let request = s.request_authorization(ask.0, ask.1, ask.2).unwrap();
    let a = match pick {
        Pick::Genuine => answer(n, &request, true, 0),
        Pick::OtherCard => answer(n + 1, &request, true, 0),
        Pick::SettledBeyond => answer(n, &request, true, request.counter + 1),
    };
    let forged = AuthorizationRequest {
        kind: op.0,
        amount: op.1,
        reference: op.2,
        ..request
    };
    refused(s.transact_authorized(&forged, &a).unwrap_err())
}

#[derive(Clone, Copy)]
enum Pick {
    Genuine,
    OtherCard,
    SettledBeyond,
}

#[test]
fn an_answer_for_another_amount_kind_card_or_settled_counter_is_refused_and_changes_nothing() {
    let mut card = small_caps_card(603);
    let before = card.memory();
    // Amount changed after the request: the operation is not the one asked.
    assert_eq!(
        send_raw(
            &mut card,
            603,
            (TxKind::Redeem, 150, 0),
            (TxKind::Redeem, 400, 0),
            Pick::Genuine
        ),
        StatusWord::WrongData
    );
    // Kind changed: an approval to earn used for a redemption.
    assert_eq!(
        send_raw(
            &mut card,
            603,
            (TxKind::Earn, 150, 0),
            (TxKind::Redeem, 150, 0),
            Pick::Genuine
        ),
        StatusWord::WrongData
    );
    // Another card's answer (re-targeted): its issuer MAC is not this card's.
    assert_eq!(
        send_raw(
            &mut card,
            603,
            (TxKind::Redeem, 150, 0),
            (TxKind::Redeem, 150, 0),
            Pick::OtherCard
        ),
        StatusWord::BadMac
    );
    // A decline relayed anyway is 9107 (tests/card_v2_commands.rs).
    let mut t = test_terminal(7);
    let mut s = t.tap(&mut card).unwrap();
    let request = s.request_authorization(TxKind::Redeem, 150, 0).unwrap();
    let mut flipped = answer(603, &request, false, 0);
    // ... and a decline flipped to an approval on the link: the MAC covers the decision.
    flipped.approved = true;
    assert_eq!(
        refused(s.transact_authorized(&request, &flipped).unwrap_err()),
        StatusWord::BadMac
    );
    drop(s);
    assert_eq!(
        send_raw(
            &mut card,
            603,
            (TxKind::Redeem, 150, 0),
            (TxKind::Redeem, 150, 0),
            Pick::SettledBeyond
        ),
        StatusWord::WrongData
    );
    assert_eq!(card.memory().cells(), before.cells());
}

#[test]
fn an_answer_is_good_once_in_its_session_only() {
    let mut card = small_caps_card(604);
    let mut t = test_terminal(7);
    let mut s = t.tap(&mut card).unwrap();
    let request = s.request_authorization(TxKind::Redeem, 150, 0).unwrap();
    let a = answer(604, &request, true, 0);
    s.transact_authorized(&request, &a).unwrap();
    // Replayed in the same session: no request is pending any more.
    assert_eq!(
        refused(s.transact_authorized(&request, &a).unwrap_err()),
        StatusWord::ConditionsNotSatisfied
    );
    // Replayed after a new request (another challenge, another counter).
    let again = s.request_authorization(TxKind::Redeem, 150, 0).unwrap();
    assert_ne!(again.challenge, request.challenge);
    assert_eq!(
        refused(s.transact_authorized(&again, &a).unwrap_err()),
        StatusWord::BadMac
    );
    drop(s);
    // Replayed at a new tap: the card forgot the request when it left the
    // field (the card pulled between request and answer is the same case).
    let mut s = t.tap(&mut card).unwrap();
    assert_eq!(
        refused(s.transact_authorized(&request, &a).unwrap_err()),
        StatusWord::ConditionsNotSatisfied
    );
    drop(s);
    let st = card.state().unwrap();
    assert_eq!((st.balance, st.counter), (350, 2));
}

#[test]
fn an_offline_operation_after_a_request_takes_the_request_away() {
    let mut card = small_caps_card(605);
    let mut t = test_terminal(7);
    let mut s = t.tap(&mut card).unwrap();
    let request = s.request_authorization(TxKind::Redeem, 150, 0).unwrap();
    let a = answer(605, &request, true, 0);
    // The clerk gives up and redeems 50 offline instead.
    s.redeem(50).unwrap();
    assert_eq!(
        refused(s.transact_authorized(&request, &a).unwrap_err()),
        StatusWord::ConditionsNotSatisfied
    );
    drop(s);
    assert_eq!(card.state().unwrap().balance, 450);
}

#[test]
fn a_refund_whose_original_left_the_log_is_made_with_the_office_approval() {
    let mut card = small_caps_card(606);
    let mut t = test_terminal(7);
    let mut s = t.tap(&mut card).unwrap();
    let original = s.redeem(80).unwrap().record; // counter 2
    for _ in 0..8 {
        s.earn(1).unwrap();
    }
    assert!(matches!(s.refund(&original), Err(TerminalError::RefundOutsideLog)));
    let request = s
        .request_authorization(TxKind::RefundRedeem, 80, original.counter)
        .unwrap();
    let r = s
        .transact_authorized(&request, &answer(606, &request, true, 0))
        .unwrap();
    assert_eq!(
        (r.record.kind, r.record.reference, r.record.amount, r.record.online),
        (TxKind::RefundRedeem, 2, 80, true)
    );
    assert_eq!(r.record.balance_after, 500 - 80 + 8 + 80);
}

#[test]
fn a_refund_still_in_the_log_is_checked_by_the_card_even_when_approved() {
    let mut card = small_caps_card(607);
    let mut t = test_terminal(7);
    let mut s = t.tap(&mut card).unwrap();
    let original = s.redeem(80).unwrap().record;
    s.refund(&original).unwrap();
    // Refunded in full already: the office's approval cannot make the card
    // refund it twice while the card can see it.
    let request = s
        .request_authorization(TxKind::RefundRedeem, 80, original.counter)
        .unwrap();
    assert!(matches!(
        s.transact_authorized(&request, &answer(607, &request, true, 0)),
        Err(TerminalError::RefundExceedsOriginal)
    ));
}

#[test]
fn the_office_settled_counter_restarts_the_velocity_counters_in_the_same_commit() {
    let mut card = small_caps_card(608);
    let mut t = test_terminal(7);
    let mut s = t.tap(&mut card).unwrap();
    for _ in 0..3 {
        s.redeem(10).unwrap(); // counters 2, 3, 4
    }
    let request = s.request_authorization(TxKind::Redeem, 150, 0).unwrap();
    // Settled up to 3: the redemption of counter 4 and this one stay unsettled.
    s.transact_authorized(&request, &answer(608, &request, true, 3))
        .unwrap();
    drop(s);
    let v = card.state().unwrap().velocity;
    assert_eq!(
        (v.unsettled_redeems, v.unsettled_points, v.settled_counter),
        (2, 160, 3)
    );
}

#[test]
fn an_approval_is_refused_once_another_transaction_moved_the_counter() {
    let mut card = small_caps_card(609);
    let mut t = test_terminal(7);
    let mut s = t.tap(&mut card).unwrap();
    let request = s.request_authorization(TxKind::Redeem, 150, 0).unwrap();
    let a = answer(609, &request, true, 0);
    // An issuer credit between request and operation: the office approved
    // a state the card has left.
    let credit = tessera_terminal::Adjustment {
        card_id: card_id(609),
        key_version: 1,
        seq: 1,
        kind: TxKind::IssuerCredit,
        points: 5,
        issuer_mac: issuer_mac(
            &card_id(609),
            IssuerDecision::Adjust {
                seq: 1,
                kind: 0x05,
                points: 5,
            },
        ),
    };
    s.adjust(&credit).unwrap();
    assert_eq!(
        refused(s.transact_authorized(&request, &a).unwrap_err()),
        StatusWord::WrongData
    );
    drop(s);
    assert_eq!(card.state().unwrap().balance, 505);
}
