//! Shared support for the workspace-level test suites: test profiles and
//! freshly issued simulated cards.

pub mod office;
pub mod pcscd;

use tessera_crypto::keys::IssuerKeys;
use tessera_crypto::rng::Rng;
use tessera_protocol::profile::{Date, Profile, SignedProfile};
use tessera_simulator::SimCard;
use tessera_terminal::issuer::{personalize, IssueParams};
use tessera_terminal::{FixedClock, SoftwareSam, Terminal};

/// A fixed terminal time used by reproducible tests: 2026-11-27 12:00 UTC.
pub const TEST_TIME: u32 = 1_795_780_800;

/// The test profile of «Анна Петрова» of Нижний Новгород.
pub fn anna() -> Profile {
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
        preferences: vec!["coffee".into(), "bakery".into()],
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

/// The test card id of card number `n`.
pub fn card_id(n: u32) -> [u8; 8] {
    let mut id = [0x7E, 0x57, 0, 0, 0, 0, 0, 0];
    id[4..].copy_from_slice(&n.to_be_bytes());
    id
}

/// A card manufactured and personalized with the test keys, seeded for
/// reproducibility.
///
/// # Panics
/// If issuing fails, which is a test failure.
#[allow(clippy::expect_used)]
pub fn issued_card(n: u32, seed: u64) -> (SimCard, SignedProfile) {
    let keys = IssuerKeys::test().expect("test keys");
    let id = card_id(n);
    let mut card = SimCard::manufacture(id, &keys.card_perso_key(&id), Rng::seeded(seed)).expect("manufacture");
    let signed = personalize(&mut card, &keys, anna(), &IssueParams::default()).expect("personalize");
    (card, signed)
}

/// A terminal holding the test terminal bundle, at [`TEST_TIME`].
///
/// # Panics
/// If the embedded test keys are corrupt.
#[allow(clippy::expect_used)]
pub fn test_terminal(terminal_id: u32) -> Terminal<SoftwareSam, FixedClock> {
    let keys = IssuerKeys::test().expect("test keys");
    Terminal::new(
        SoftwareSam::new(keys.terminal_keys()),
        FixedClock(TEST_TIME),
        terminal_id,
    )
}

/// The issuer MAC of a decision for a card, made with the test issuer
/// master (what the office puts in the sync feed).
#[allow(clippy::expect_used)]
pub fn issuer_mac(card: &[u8; 8], decision: tessera_crypto::keys::IssuerDecision<'_>) -> [u8; 8] {
    tessera_crypto::keys::IssuerKeys::test()
        .expect("test keys")
        .issuer_mac(card, decision)
}

/// Card number `n` (test keys, seeded by `n`) after an earn of 500 points
/// (counter 1) and a redemption of 100 (counter 2) at terminal 1.
///
/// # Panics
/// If a transaction fails, which is a test failure.
#[allow(clippy::expect_used)]
pub fn card_with_history(n: u32) -> SimCard {
    let (mut card, _) = issued_card(n, u64::from(n));
    let mut t = test_terminal(1);
    let mut s = t.tap(&mut card).expect("tap");
    s.earn(500).expect("earn");
    s.redeem(100).expect("redeem");
    drop(s);
    card
}
