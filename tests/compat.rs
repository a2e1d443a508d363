//! Compatibility: card images of every released format version, kept in
//! `fixtures/images/`, load and transact forever.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use tessera_crypto::rng::Rng;
use tessera_simulator::SimCard;
use tessera_suite::test_terminal;
use tessera_terminal::TerminalError;

/// A card personalized under card application v1 (no issuer key): the
/// image still loads with its balance and log intact, and a v2 till refuses
/// it cleanly — "re-issue this card" — without sending AUTHENTICATE, so no
/// authentication try is spent and nothing changes.
#[test]
fn application_v1_card_loads_and_is_sent_for_reissue() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/images/card-v1.json");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("card.json");
    std::fs::copy(&fixture, &path).unwrap();
    let before = std::fs::read(&path).unwrap();

    let mut card = SimCard::open(&path, Rng::seeded(1)).unwrap();
    let st = card.state().unwrap();
    assert_eq!(hex::encode_upper(st.card_id), "7E57000000000099");
    assert_eq!((st.balance, st.counter), (70, 2));
    assert!(st.key_issuer.is_none() && st.issuer_id.is_none());
    let verifier = tessera_crypto::keys::IssuerKeys::test().unwrap().certificate_verifier();
    for r in st.records() {
        verifier.verify(&st.card_id, st.key_version, r).unwrap();
    }

    let mut t = test_terminal(5);
    assert!(matches!(t.tap(&mut card), Err(TerminalError::NeedsReissue)));
    let trace = t.take_trace();
    assert_eq!(trace.labels(), ["SELECT"], "no AUTHENTICATE sent");
    assert_eq!(card.state().unwrap().auth_failures, 0);
    drop(card);
    assert_eq!(std::fs::read(&path).unwrap(), before, "the image is untouched");
}

/// An image of a card personalized under application v2 (same image
/// format, version 1, with the v2 fields) loads and transacts, forever.
#[test]
fn application_v2_card_image_loads_and_transacts() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/images/card-app2.json");
    if std::env::var_os("TESSERA_REGENERATE_FIXTURES").is_some() {
        let (mut card, _) = tessera_suite::issued_card(0x98, 98);
        let mut t = test_terminal(5);
        let mut s = t.tap(&mut card).unwrap();
        s.earn(120).unwrap();
        s.redeem(50).unwrap();
        drop(s);
        card.save_as(&fixture).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("card.json");
    std::fs::copy(&fixture, &path).unwrap();

    let mut card = SimCard::open(&path, Rng::seeded(1)).unwrap();
    let st = card.state().unwrap();
    assert_eq!(hex::encode_upper(st.card_id), "7E57000000000098");
    assert_eq!((st.balance, st.counter), (70, 2));
    assert_eq!(st.issuer_id, Some(*b"TEST"));

    let mut t = test_terminal(5);
    let mut s = t.tap(&mut card).unwrap();
    assert_eq!(s.card().profile.name, "Анна Петрова");
    let log = s.read_full_log().unwrap();
    assert_eq!(log.len(), 2);
    let verifier = tessera_crypto::keys::IssuerKeys::test().unwrap().certificate_verifier();
    for r in &log {
        verifier.verify(&st.card_id, st.key_version, r).unwrap();
    }
    let r = s.earn(30).unwrap();
    assert_eq!((r.record.balance_after, r.record.counter), (100, 3));
    drop(s);
    // The change was persisted in the same format.
    let reopened = SimCard::open(&path, Rng::seeded(2)).unwrap();
    assert_eq!(reopened.state().unwrap().balance, 100);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"version\": 1"));
}

#[test]
fn newer_or_foreign_images_are_refused_with_a_clear_error() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/images/card-v1.json");
    let text = std::fs::read_to_string(fixture).unwrap();
    let newer = text.replace("\"version\": 1", "\"version\": 2");
    let err = tessera_simulator::image::from_bytes(newer.as_bytes()).unwrap_err();
    assert!(err.to_string().contains("version 2 is not supported"), "{err}");
    assert!(tessera_simulator::image::from_bytes(b"{\"format\":\"x\"}").is_err());
    let truncated = &text.as_bytes()[..text.len() / 2];
    assert!(tessera_simulator::image::from_bytes(truncated).is_err());
}
