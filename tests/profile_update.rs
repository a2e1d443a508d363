//! UPDATE PROFILE (spec §4.13): a newer signed profile from the back office
//! reaches the card at its next tap, and terminals verify the new signature.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use tessera_crypto::keys::IssuerDecision;
use tessera_crypto::keys::IssuerKeys;
use tessera_crypto::rng::Rng;
use tessera_crypto::sign::IssuerKey;
use tessera_protocol::profile::SignedProfile;
use tessera_simulator::{Faults, PowerCut, SimCard};
use tessera_suite::{anna, card_id, issued_card, issuer_mac, test_terminal};
use tessera_terminal::journal::Journal;
use tessera_terminal::offers::CampaignSet;
use tessera_terminal::policy::{Hotlist, Policy};
use tessera_terminal::till::{ProfileUpdate, Till, TillConfig};
use tessera_terminal::TerminalError;

/// The issuer MAC the office sends with a profile update.
fn pmac(sp: &SignedProfile) -> [u8; 8] {
    issuer_mac(&sp.profile.card_id, IssuerDecision::Profile(&sp.to_bytes()))
}

fn v2(id: [u8; 8]) -> SignedProfile {
    let mut p = anna();
    p.card_id = id;
    p.version = 2;
    p.home_city = "Казань".into();
    p.tier = 2;
    IssuerKeys::test().unwrap().issuer.sign(&p).unwrap()
}

#[test]
fn a_profile_update_reaches_the_card_at_its_next_tap() {
    let (mut card, _) = issued_card(70, 1);
    let id = card_id(70);
    let dir = tempfile::tempdir().unwrap();
    let keys = IssuerKeys::test().unwrap();
    let journal = Journal::open(&dir.path().join("j.sqlite"), 1).unwrap();
    let config = TillConfig {
        policy: Policy::default_policy(),
        hotlist: Hotlist::empty(),
        campaigns: CampaignSet::empty(),
        online: Default::default(),
    };
    let mut till = Till::new(test_terminal(1), journal, config).unwrap();
    let update = v2(id);
    till.set_profile_updates([ProfileUpdate {
        key_version: 1,
        issuer_mac: pmac(&update),
        profile: update,
    }]);
    {
        let tap = till.tap(&mut card).unwrap();
        assert_eq!(tap.profile_updated, Some(2));
        assert_eq!(tap.card().profile.home_city, "Казань");
    }
    assert_eq!(till.profile_updates().count(), 0, "delivered");
    // Another terminal reads and verifies the new profile from the card.
    let mut other = test_terminal(2);
    let s = other.tap(&mut card).unwrap();
    assert!(!s.card().profile_cached);
    assert_eq!((s.card().profile.version, s.card().profile.tier), (2, 2));
    drop(s);
    assert_eq!(
        SignedProfile::parse(&card.state().unwrap().profile)
            .unwrap()
            .profile
            .version,
        2
    );
    let _ = keys;
}

#[test]
fn stale_forged_or_foreign_updates_are_refused() {
    let (mut card, _) = issued_card(71, 2);
    let id = card_id(71);
    let mut t = test_terminal(1);
    let mut s = t.tap(&mut card).unwrap();
    // Not newer.
    let mut same = anna();
    same.card_id = id;
    let same = IssuerKeys::test().unwrap().issuer.sign(&same).unwrap();
    assert!(matches!(
        s.update_profile(&same, pmac(&same)),
        Err(TerminalError::InvalidRequest(_))
    ));
    // Signed by someone else.
    let mut p = anna();
    p.card_id = id;
    p.version = 3;
    let forged = IssuerKey::from_hex(&"22".repeat(32)).unwrap().sign(&p).unwrap();
    assert!(matches!(
        s.update_profile(&forged, pmac(&forged)),
        Err(TerminalError::BadProfileSignature)
    ));
    // For another card.
    assert!(matches!(
        s.update_profile(&v2(card_id(72)), pmac(&v2(card_id(72)))),
        Err(TerminalError::ProfileCardMismatch)
    ));
    drop(s);
    assert_eq!(
        SignedProfile::parse(&card.state().unwrap().profile)
            .unwrap()
            .profile
            .version,
        1
    );
}

#[test]
fn power_loss_during_an_update_leaves_old_or_new() {
    let (card, _) = issued_card(73, 3);
    let id = card_id(73);
    let base = card.memory();
    let mut seen_old = false;
    let mut seen_new = false;
    for n in 0..=4u64 {
        let mut c = SimCard::from_eeprom(base.clone(), Rng::seeded(n)).unwrap();
        // A tap spends 8 writes on authentication (the failure counter up,
        // then back down); UPDATE PROFILE commits one field: 4 writes.
        c.set_faults(Faults {
            power_cut: Some(PowerCut { at_write: n + 8 }),
            ..Faults::default()
        });
        let mut t = test_terminal(1);
        let result = t.tap(&mut c).and_then(|mut s| s.update_profile(&v2(id), pmac(&v2(id))));
        c.set_faults(Faults::default());
        let v = SignedProfile::parse(&c.state().unwrap().profile)
            .unwrap()
            .profile
            .version;
        assert!(v == 1 || v == 2, "cut at {n}");
        seen_old |= v == 1;
        seen_new |= v == 2;
        assert_eq!(result.is_ok(), n == 4, "cut at {n}: {result:?}");
        c.insert().unwrap();
        let mut check = test_terminal(3);
        let s = check.tap(&mut c).unwrap();
        assert_eq!(s.card().profile.version, v);
    }
    assert!(seen_old && seen_new);
}
