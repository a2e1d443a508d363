//! Issue a card, tap, earn 120, redeem 50 (issue acceptance: end to end,
//! round trips, certificates).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use tessera_crypto::keys::IssuerKeys;
use tessera_protocol::messages::TxKind;
use tessera_suite::{issued_card, test_terminal};

#[test]
fn issue_tap_earn_redeem_certificates_verify() {
    let (mut card, _) = issued_card(1, 7);
    let before = card.state().unwrap();
    assert_eq!((before.balance, before.counter), (0, 0));

    let mut terminal = test_terminal(0x5100_0001);
    let mut session = terminal.tap(&mut card).unwrap();
    assert_eq!(session.card().profile.name, "Анна Петрова");
    assert_eq!(session.card().profile.home_city, "Нижний Новгород");
    let earn = session.earn(120).unwrap();
    let redeem = session.redeem(50).unwrap();
    assert_eq!(redeem.record.balance_after, 70);
    assert_eq!(session.card().balance, 70);
    let log = session.read_full_log().unwrap();
    drop(session);

    let after = card.state().unwrap();
    assert_eq!(after.balance, 70);
    assert_eq!(after.counter, before.counter + 2);
    assert_eq!(log.len(), 2);
    assert_eq!(log[0], redeem.record);
    assert_eq!(log[1], earn.record);
    assert_eq!(log[1].kind, TxKind::Earn);

    let verifier = IssuerKeys::test().unwrap().certificate_verifier();
    for rec in &log {
        verifier.verify(&earn.card_id, earn.key_version, rec).unwrap();
        // Any single flipped bit in the certificate or the data is caught.
        let mut bad = rec.clone();
        bad.certificate[3] ^= 0x10;
        assert!(verifier.verify(&earn.card_id, earn.key_version, &bad).is_err());
        let mut bad = rec.clone();
        bad.amount += 1;
        assert!(verifier.verify(&earn.card_id, earn.key_version, &bad).is_err());
    }
}

#[test]
fn round_trips_per_transaction() {
    let (mut card, _) = issued_card(2, 8);
    let mut terminal = test_terminal(7);

    // First visit: the profile is not cached: SELECT, AUTHENTICATE, READ PROFILE, EARN.
    terminal.take_trace();
    terminal.tap(&mut card).unwrap().earn(10).unwrap();
    let trace = terminal.take_trace();
    let labels: Vec<_> = trace.entries.iter().map(|e| e.label).collect();
    assert_eq!(labels, ["SELECT", "AUTHENTICATE", "READ PROFILE", "EARN"]);
    assert!(trace.commands() <= 4);

    // Returning card: the verified profile comes from the cache.
    for op in ["earn", "redeem"] {
        let mut s = terminal.tap(&mut card).unwrap();
        assert!(s.card().profile_cached);
        if op == "earn" {
            s.earn(5).unwrap();
        } else {
            s.redeem(5).unwrap();
        }
        drop(s);
        let trace = terminal.take_trace();
        let labels: Vec<_> = trace.entries.iter().map(|e| e.label).collect();
        assert_eq!(labels.len(), 3, "{op}: {labels:?}");
        assert!(trace.commands() <= 3);
        assert!(trace.entries.iter().all(|e| e.response.is_some()));
    }
}

#[test]
fn name_never_in_clear_on_the_wire() {
    let (mut card, _) = issued_card(3, 9);
    let mut terminal = test_terminal(7);
    terminal.tap(&mut card).unwrap().earn(1).unwrap();
    let trace = terminal.take_trace();
    assert!(trace.entries.iter().any(|e| e.label == "READ PROFILE"));
    for needle in ["Анна".as_bytes(), "Петрова".as_bytes(), "Нижний".as_bytes(), b"coffee"] {
        for e in &trace.entries {
            assert!(!e.command.windows(needle.len()).any(|w| w == needle));
            let r = e.response.as_ref().unwrap();
            assert!(!r.windows(needle.len()).any(|w| w == needle), "{} leaks", e.label);
        }
    }
}
