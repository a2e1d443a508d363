//! Security acceptance: wrong keys, blocking after the failure limit,
//! replay, single-byte tampering, forged or misbound profiles.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use tessera_crypto::keys::{IssuerKeys, TerminalKeys};
use tessera_crypto::rng::Rng;
use tessera_crypto::sign::IssuerKey;
use tessera_crypto::Key;
use tessera_protocol::{Response, StatusWord};
use tessera_simulator::SimCard;
use tessera_suite::{anna, card_id, issued_card, test_terminal, TEST_TIME};
use tessera_terminal::issuer::{personalize, personalize_blob, IssueParams};
use tessera_terminal::{FixedClock, SoftwareSam, Terminal, TerminalError};
use tessera_transport::{Transport, TransportError};

fn sw_of(resp: &[u8]) -> StatusWord {
    Response::parse(resp).unwrap().sw
}

fn rogue_terminal() -> Terminal<SoftwareSam, FixedClock> {
    let good = IssuerKeys::test().unwrap();
    let keys = TerminalKeys {
        // An attacker who claims the card's issuer, without its keys.
        issuer_id: tessera_protocol::messages::TEST_ISSUER_ID,
        auth_masters: [(1u8, Key::new([0x99; 16]))].into_iter().collect(),
        issuer_public: good.issuer.public(),
    };
    Terminal::new(SoftwareSam::new(keys), FixedClock(TEST_TIME), 666)
}

#[test]
fn wrong_terminal_key_fails_and_card_blocks_after_limit() {
    let (mut card, _) = issued_card(10, 1);
    let mut rogue = rogue_terminal();
    for remaining in (1..=4).rev() {
        match rogue.tap(&mut card) {
            Err(TerminalError::AuthRefused { remaining: r }) => assert_eq!(r, remaining),
            Err(e) => panic!("expected AuthRefused, got {e:?}"),
            Ok(_) => panic!("rogue terminal authenticated"),
        }
        let trace = rogue.take_trace();
        let auth = trace.entries.iter().find(|e| e.label == "AUTHENTICATE").unwrap();
        assert_eq!(
            sw_of(auth.response.as_ref().unwrap()),
            StatusWord::AuthFailed { remaining }
        );
        assert_eq!(card.state().unwrap().auth_failures, 5 - remaining);
    }
    // The fifth failure blocks authentication…
    assert!(matches!(rogue.tap(&mut card), Err(TerminalError::AuthBlocked)));
    // …for everybody, the genuine terminal included.
    let mut good = test_terminal(1);
    assert!(matches!(good.tap(&mut card), Err(TerminalError::AuthBlocked)));
    let trace = good.take_trace();
    assert_eq!(
        sw_of(trace.entries[1].response.as_ref().unwrap()),
        StatusWord::AuthBlocked
    );
    let st = card.state().unwrap();
    assert_eq!((st.balance, st.counter), (0, 0));
}

#[test]
fn success_resets_the_failure_counter() {
    let (mut card, _) = issued_card(11, 2);
    let mut rogue = rogue_terminal();
    for _ in 0..3 {
        assert!(rogue.tap(&mut card).is_err());
    }
    assert_eq!(card.state().unwrap().auth_failures, 3);
    test_terminal(1).tap(&mut card).unwrap();
    assert_eq!(card.state().unwrap().auth_failures, 0);
}

#[test]
fn recorded_earn_replayed_in_a_new_session_is_refused() {
    let (mut card, _) = issued_card(12, 3);
    let mut terminal = test_terminal(1);
    terminal.tap(&mut card).unwrap().earn(100).unwrap();
    let trace = terminal.take_trace();
    let earn = trace
        .entries
        .iter()
        .find(|e| e.label == "EARN")
        .unwrap()
        .command
        .clone();
    let before = card.memory();

    // A new authenticated session, then the recorded EARN bytes.
    drop(terminal.tap(&mut card).unwrap());
    let resp = card.transmit(&earn).unwrap();
    assert_eq!(sw_of(&resp), StatusWord::BadMac);
    // And without any session: after a fresh SELECT only.
    card.remove();
    card.insert().unwrap();
    let resp = card.transmit(&earn).unwrap();
    assert_eq!(sw_of(&resp), StatusWord::ConditionsNotSatisfied);
    let after = card.state().unwrap();
    assert_eq!((after.balance, after.counter), (100, 1));
    // Only the authentication failure counter went up and back down.
    assert_eq!(card.memory().cells(), before.cells());
}

/// A man in the middle that flips one byte of the first command whose INS
/// is `ins`.
struct Tamper<'a> {
    card: &'a mut SimCard,
    ins: u8,
    index: usize,
    done: bool,
}

impl Transport for Tamper<'_> {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
        let mut c = command.to_vec();
        if !self.done && c.len() > 1 && c[1] == self.ins {
            self.done = true;
            if let Some(b) = c.get_mut(self.index) {
                *b ^= 0x01;
            }
        }
        self.card.transmit(&c)
    }
}

fn tamper_every_byte(ins: u8, redeem: bool) {
    let (mut card, _) = issued_card(13, 4);
    let mut terminal = test_terminal(1);
    terminal.tap(&mut card).unwrap().earn(500).unwrap();
    // Learn the length of the command to tamper with.
    let mut probe = SimCard::from_eeprom(card.memory(), Rng::seeded(1)).unwrap();
    let mut s = terminal.tap(&mut probe).unwrap();
    if redeem {
        s.redeem(10).unwrap();
    } else {
        s.earn(10).unwrap();
    }
    drop(s);
    let len = terminal.take_trace().entries.last().unwrap().command.len();
    assert!(len > 20);

    for index in 0..len {
        let memory = card.memory();
        let mut victim = SimCard::from_eeprom(memory.clone(), Rng::seeded(index as u64)).unwrap();
        let mut mitm = Tamper {
            card: &mut victim,
            ins,
            index,
            done: false,
        };
        let mut s = terminal.tap(&mut mitm).unwrap();
        let r = if redeem { s.redeem(10) } else { s.earn(10) };
        drop(s);
        match r {
            Ok(receipt) => {
                // Only Le is outside the MAC (ISO 7816-4 secure messaging):
                // flipping it changes how the answer is delivered (here a
                // 61xx), not what the card does. The terminal does not guess:
                // it authenticates the card again in the same tap and reads
                // from its log that the card did exactly the request.
                assert_eq!(index, len - 1, "flip at byte {index} was accepted");
                let st = victim.state().unwrap();
                assert_eq!((st.balance, st.counter), (if redeem { 490 } else { 510 }, 2));
                assert_eq!(Some(&receipt.record), st.last_record());
                continue;
            }
            Err(TerminalError::Interrupted(_)) => panic!("flip at byte {index}: the card was present"),
            Err(_) => {}
        }
        let st = victim.state().unwrap();
        assert_eq!(
            (st.balance, st.counter),
            (500, 1),
            "flip at byte {index} changed the card"
        );
        let mut m = victim.memory();
        m.recover();
        assert_eq!(m.cells(), memory.cells(), "flip at byte {index} changed the memory");
    }
}

#[test]
fn every_single_byte_flip_of_earn_is_refused_and_changes_nothing() {
    tamper_every_byte(0x30, false);
}

#[test]
fn every_single_byte_flip_of_redeem_is_refused_and_changes_nothing() {
    tamper_every_byte(0x32, true);
}

#[test]
fn profile_signed_by_another_key_is_refused() {
    let keys = IssuerKeys::test().unwrap();
    let id = card_id(20);
    let mut card = SimCard::manufacture(id, &keys.card_perso_key(&id), Rng::seeded(5)).unwrap();
    let forger = IssuerKey::from_hex("1111111111111111111111111111111111111111111111111111111111111111").unwrap();
    let mut p = anna();
    p.card_id = id;
    let forged = forger.sign(&p).unwrap();
    personalize_blob(&mut card, &keys, forged.to_bytes(), &IssueParams::default()).unwrap();
    assert!(matches!(
        test_terminal(1).tap(&mut card),
        Err(TerminalError::BadProfileSignature)
    ));
}

#[test]
fn profile_signed_for_another_card_is_refused() {
    let keys = IssuerKeys::test().unwrap();
    let id = card_id(21);
    let mut card = SimCard::manufacture(id, &keys.card_perso_key(&id), Rng::seeded(6)).unwrap();
    let mut p = anna();
    p.card_id = card_id(22); // genuinely signed, but for another card
    let signed = keys.issuer.sign(&p).unwrap();
    personalize_blob(&mut card, &keys, signed.to_bytes(), &IssueParams::default()).unwrap();
    assert!(matches!(
        test_terminal(1).tap(&mut card),
        Err(TerminalError::ProfileCardMismatch)
    ));
}

#[test]
fn personalization_happens_once_and_needs_the_transport_key() {
    let keys = IssuerKeys::test().unwrap();
    let (mut card, _) = issued_card(23, 7);
    assert!(matches!(
        personalize(&mut card, &keys, anna(), &IssueParams::default()),
        Err(TerminalError::AlreadyPersonalized)
    ));
    // A blank card loaded with another transport key refuses the issuer.
    let id = card_id(24);
    let mut blank = SimCard::manufacture(id, &Key::new([0x42; 16]), Rng::seeded(8)).unwrap();
    match personalize(&mut blank, &keys, anna(), &IssueParams::default()) {
        Err(TerminalError::Card { sw, .. }) => assert_eq!(sw, StatusWord::BadMac),
        other => panic!("expected 6988, got {other:?}"),
    }
    assert_eq!(
        blank.state().unwrap().lifecycle,
        tessera_protocol::messages::Lifecycle::Personalization
    );
}

#[test]
fn caps_and_balance_limits_hold() {
    let keys = IssuerKeys::test().unwrap();
    let id = card_id(25);
    let mut card = SimCard::manufacture(id, &keys.card_perso_key(&id), Rng::seeded(9)).unwrap();
    let params = IssueParams {
        earn_cap: 1000,
        redeem_cap: 300,
        auth_limit: 3,
    };
    personalize(&mut card, &keys, anna(), &params).unwrap();
    let mut t = test_terminal(1);
    let mut s = t.tap(&mut card).unwrap();
    assert!(matches!(s.earn(1001), Err(TerminalError::AboveCap)));
    s.earn(1000).unwrap();
    assert!(matches!(s.redeem(301), Err(TerminalError::AboveCap)));
    assert!(matches!(s.earn(0), Err(TerminalError::InvalidRequest(_))));
    s.redeem(300).unwrap();
    drop(s);
    let st = card.state().unwrap();
    assert_eq!((st.balance, st.counter), (700, 2));
}

#[test]
fn blocked_card_is_refused_everywhere() {
    let (mut card, _) = issued_card(26, 10);
    let mut t = test_terminal(1);
    t.tap(&mut card).unwrap().block().unwrap();
    assert!(matches!(t.tap(&mut card), Err(TerminalError::CardBlocked)));
    let trace = t.take_trace();
    assert_eq!(
        sw_of(trace.entries.last().unwrap().response.as_ref().unwrap()),
        StatusWord::ApplicationBlocked
    );
}
