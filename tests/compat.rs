//! Compatibility: card images of every released format version, kept in
//! `fixtures/images/`, load and transact forever.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use tessera_crypto::rng::Rng;
use tessera_simulator::SimCard;
use tessera_suite::test_terminal;

#[test]
fn card_image_format_v1_loads_and_transacts() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/images/card-v1.json");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("card.json");
    std::fs::copy(&fixture, &path).unwrap();

    let mut card = SimCard::open(&path, Rng::seeded(1)).unwrap();
    let st = card.state().unwrap();
    assert_eq!(hex::encode_upper(st.card_id), "7E57000000000099");
    assert_eq!((st.balance, st.counter), (70, 2));

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
