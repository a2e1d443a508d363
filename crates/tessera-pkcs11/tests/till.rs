//! A whole till transaction over the in-process simulator with the keys in
//! a SoftHSM2 token, and the same with the software module.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::{config, with_token};
use tessera_crypto::keys::{IssuerKeys, OfficeLink};
use tessera_crypto::rng::Rng;
use tessera_pkcs11::{provision, Pin, Pkcs11Sam};
use tessera_protocol::profile::{Date, Profile};
use tessera_simulator::SimCard;
use tessera_terminal::issuer::{personalize, IssueParams};
use tessera_terminal::journal::Journal;
use tessera_terminal::offers::CampaignSet;
use tessera_terminal::policy::{Hotlist, Policy};
use tessera_terminal::till::{Till, TillConfig, TillOutcome};
use tessera_terminal::{FixedClock, Sam, SoftwareSam, Terminal};

const TEST_TIME: u32 = 1_795_780_800;

fn anna() -> Profile {
    Profile {
        card_id: [0; 8],
        version: 1,
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
        valid_from: Date {
            year: 2026,
            month: 1,
            day: 1,
        },
        valid_until: Date {
            year: 2030,
            month: 12,
            day: 31,
        },
    }
}

/// Issues a card, then earns on it twice and redeems once at a till with
/// `sam`; returns what the card certified and the balance.
fn day_at_the_till<S: Sam>(keys: &IssuerKeys, sam: S) -> (Vec<(u32, u32, [u8; 16])>, u32) {
    let id = [0x7E, 0x57, 0, 0, 0, 0, 0, 9];
    let mut card = SimCard::manufacture(id, &keys.card_perso_key(&id), Rng::seeded(5)).unwrap();
    personalize(&mut card, keys, anna(), &IssueParams::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(&dir.path().join("journal.sqlite"), 7).unwrap();
    let terminal = Terminal::new(sam, FixedClock(TEST_TIME), 7).with_rng(Rng::seeded(6));
    let config = TillConfig {
        policy: Policy::default_policy(),
        hotlist: Hotlist::empty(),
        campaigns: CampaignSet::empty(),
        online: Default::default(),
    };
    let mut till = Till::new(terminal, journal, config).unwrap();
    let mut certified = Vec::new();
    for (op, amount) in [("earn", 1250u64), ("earn", 4000), ("redeem", 10)] {
        let mut tap = till.tap(&mut card).unwrap();
        assert_eq!(tap.card().card_id, id);
        let outcome = match op {
            "earn" => tap.purchase(amount, &[]).unwrap(),
            _ => tap.redeem(u32::try_from(amount).unwrap()).unwrap(),
        };
        let TillOutcome::Approved { receipt, .. } = outcome else {
            panic!("{op} {amount}: {outcome:?}");
        };
        certified.push((
            receipt.record.amount,
            receipt.record.balance_after,
            receipt.record.certificate,
        ));
    }
    let balance = till.tap(&mut card).unwrap().card().balance;
    (certified, balance)
}

#[test]
fn a_till_on_the_token_earns_as_the_software_till_does() {
    with_token("a_till_on_the_token_earns_as_the_software_till_does", |token| {
        let keys = IssuerKeys::test().unwrap();
        let done = provision(&config(token), &keys, 7, OfficeLink::PlainLoopback).unwrap();
        let hw = Pkcs11Sam::from_bundle(&done.bundle, &token.module, Pin::new(token.user_pin.clone())).unwrap();
        let (on_token, balance) = day_at_the_till(&keys, hw);
        let (in_software, soft_balance) = day_at_the_till(&keys, SoftwareSam::new(keys.terminal_keys()));
        assert_eq!(on_token.len(), 3);
        assert!(on_token[0].0 > 0, "points were earned: {on_token:?}");
        assert_eq!(balance, on_token[0].0 + on_token[1].0 - 10);
        assert_eq!(on_token, in_software, "same records, same certificates");
        assert_eq!(balance, soft_balance);
    });
}
