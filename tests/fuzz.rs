//! Property tests on hostile input: arbitrary bytes and APDU sequences into
//! the card, arbitrary responses into the terminal, arbitrary card images.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use tessera_crypto::rng::Rng;
use tessera_simulator::{Eeprom, SimCard};
use tessera_suite::{issued_card, test_terminal};
use tessera_transport::{Transport, TransportError};

fn funded_memory() -> Eeprom {
    let (mut card, _) = issued_card(40, 12);
    test_terminal(1).tap(&mut card).unwrap().earn(1000).unwrap();
    card.memory()
}

/// A card with an open authenticated session (as a terminal left it).
fn authenticated(mem: &Eeprom, seed: u64) -> SimCard {
    let mut card = SimCard::from_eeprom(mem.clone(), Rng::seeded(seed)).unwrap();
    drop(test_terminal(1).tap(&mut card).unwrap());
    card
}

fn apdu() -> impl Strategy<Value = Vec<u8>> {
    let structured = (
        prop_oneof![Just(0x00u8), Just(0x80), Just(0x84), any::<u8>()],
        prop_oneof![
            Just(0xA4u8),
            Just(0x82),
            Just(0xCA),
            Just(0x30),
            Just(0x32),
            Just(0xB2),
            Just(0xE2),
            Just(0x1E),
            Just(0xC0),
            Just(0x34),
            Just(0x38),
            Just(0xDA),
            Just(0x2C),
            Just(0xD8),
            any::<u8>()
        ],
        0u8..10,
        0u8..3,
        proptest::collection::vec(any::<u8>(), 0..80),
        proptest::option::of(0usize..300),
    )
        .prop_map(|(cla, ins, p1, p2, data, le)| {
            tessera_protocol::Command {
                cla,
                ins,
                p1,
                p2,
                data,
                le,
            }
            .to_bytes()
        });
    prop_oneof![structured, proptest::collection::vec(any::<u8>(), 0..300)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_apdu_sequences_never_panic_nor_move_points(seq in proptest::collection::vec(apdu(), 1..24)) {
        let mem = funded_memory();
        let mut card = authenticated(&mem, 3);
        for a in &seq {
            match card.transmit(a) {
                Ok(resp) => prop_assert!(resp.len() >= 2),
                Err(e) => prop_assert!(false, "transport error {e}"),
            }
        }
        let st = card.state().unwrap();
        let before = tessera_card::CardState::load(&mem).unwrap();
        prop_assert_eq!((st.balance, st.counter), (1000, 1));
        prop_assert_eq!(&st.log, &before.log);
        // Nor the issuer's decisions (ACK SETTLEMENT, UPDATE PROFILE, UNBLOCK).
        prop_assert_eq!(st.velocity, before.velocity);
        prop_assert_eq!(&st.profile, &before.profile);
        prop_assert_eq!(st.issuer_seq, before.issuer_seq);
        prop_assert_eq!(st.key_version, before.key_version);
        prop_assert_eq!(&st.key_auth, &before.key_auth);
    }

    #[test]
    fn arbitrary_bytes_into_a_blank_card_never_panic(seq in proptest::collection::vec(apdu(), 1..16)) {
        let keys = tessera_crypto::keys::IssuerKeys::test().unwrap();
        let id = [9; 8];
        let mut card = SimCard::manufacture(id, &keys.card_perso_key(&id), Rng::seeded(1)).unwrap();
        for a in &seq {
            let _ = card.transmit(a).unwrap();
        }
        prop_assert_eq!(card.state().unwrap().lifecycle, tessera_protocol::messages::Lifecycle::Personalization);
    }

    #[test]
    fn arbitrary_responses_into_the_terminal_never_panic(
        responses in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..120), 0..6)
    ) {
        struct Scripted(std::vec::IntoIter<Vec<u8>>);
        impl Transport for Scripted {
            fn transmit(&mut self, _: &[u8]) -> Result<Vec<u8>, TransportError> {
                self.0.next().ok_or(TransportError::CardRemoved)
            }
        }
        let mut t = test_terminal(1);
        if let Ok(mut s) = t.tap(Scripted(responses.into_iter())) {
            let _ = s.earn(5);
            let _ = s.redeem(5);
            let _ = s.read_log(1);
        }
    }

    #[test]
    fn damaged_genuine_responses_never_panic_and_never_fool_the_terminal(
        which in 0usize..4, pos in any::<prop::sample::Index>(), byte: u8, cut in any::<bool>()
    ) {
        // Real card, one response damaged in flight (flipped byte or truncated).
        struct Damage<'a> { card: &'a mut SimCard, n: usize, which: usize, pos: prop::sample::Index, byte: u8, cut: bool }
        impl Transport for Damage<'_> {
            fn transmit(&mut self, c: &[u8]) -> Result<Vec<u8>, TransportError> {
                let mut r = self.card.transmit(c)?;
                if self.n == self.which && !r.is_empty() {
                    let i = self.pos.index(r.len());
                    if self.cut { r.truncate(i); } else { r[i] ^= self.byte | 1; }
                }
                self.n += 1;
                Ok(r)
            }
        }
        let mem = funded_memory();
        let mut card = SimCard::from_eeprom(mem, Rng::seeded(4)).unwrap();
        let mut t = test_terminal(1);
        let mut d = Damage { card: &mut card, n: 0, which, pos, byte, cut };
        let result = t.tap(&mut d).and_then(|mut s| s.earn(7));
        if let Ok(r) = result {
            // Accepted only if what the terminal believes is what the card holds.
            let st = card.state().unwrap();
            prop_assert_eq!(st.balance, r.record.balance_after);
            prop_assert_eq!(st.counter, r.record.counter);
        }
    }

    #[test]
    fn arbitrary_card_images_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(e) = tessera_simulator::image::from_bytes(&bytes) {
            let _ = SimCard::from_eeprom(e, Rng::seeded(1));
        }
    }
}
