//! Power loss at every persistent write (spec §6.4): for EARN and REDEEM,
//! one run per write index, the card ends in its old or its new state, never
//! between; the terminal learns which at the next tap; the card keeps
//! working and never reuses a counter.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use tessera_crypto::rng::Rng;
use tessera_protocol::messages::TxKind;
use tessera_simulator::{Eeprom, Faults, PowerCut, SimCard};
use tessera_suite::{issued_card, test_terminal};
use tessera_terminal::{Resolution, TerminalError};

/// A card with 500 points, and its memory.
fn funded() -> Eeprom {
    let (mut card, _) = issued_card(30, 11);
    test_terminal(1).tap(&mut card).unwrap().earn(500).unwrap();
    card.memory()
}

/// A full tap and earn at a fresh terminal, with no fault wrapper.
fn run_tx(card: &mut SimCard) -> Result<(), TerminalError> {
    let mut t = test_terminal(2).with_rng(Rng::seeded(99));
    t.tap(&mut *card)?.earn(40).map(|_| ())
}

/// Arms a power cut just before the transaction command reaches the card.
struct ArmBeforeTx<'a> {
    card: &'a mut SimCard,
    cut: Option<PowerCut>,
}

impl tessera_transport::Transport for ArmBeforeTx<'_> {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, tessera_transport::TransportError> {
        if command.len() > 1 && matches!(command[1], 0x30 | 0x32) {
            if let Some(cut) = self.cut.take() {
                self.card.set_faults(Faults {
                    power_cut: Some(cut),
                    ..Faults::default()
                });
            }
        }
        self.card.transmit(command)
    }
}

fn cut_everywhere(kind: TxKind) {
    let base = funded();
    // The reference run without faults gives the "after" memory and the
    // number of persistent writes the command performs.
    let mut reference = SimCard::from_eeprom(base.clone(), Rng::seeded(5)).unwrap();
    {
        let mut arm = ArmBeforeTx {
            card: &mut reference,
            cut: Some(PowerCut { at_write: u64::MAX }),
        };
        run_tx_via(&mut arm, kind).unwrap();
    }
    let writes = reference.writes();
    assert_eq!(
        writes, 10,
        "4 fields (balance, counter, log slot, visits or velocity): 4 journal writes, flag, 4 cell writes, clear"
    );
    let after = reference.memory();
    assert_ne!(after.cells(), base.cells());

    let mut saw_old = false;
    let mut saw_new = false;
    for n in 0..=writes {
        let mut card = SimCard::from_eeprom(base.clone(), Rng::seeded(5)).unwrap();
        let result = {
            let mut arm = ArmBeforeTx {
                card: &mut card,
                cut: Some(PowerCut { at_write: n }),
            };
            run_tx_via(&mut arm, kind)
        };
        if n < writes {
            assert!(
                matches!(result, Err(TerminalError::Interrupted(_))),
                "cut at {n}: {result:?}"
            );
            assert!(!card.is_present(), "a power cut takes the card out of the field");
        } else {
            assert!(result.is_ok(), "no cut: {result:?}");
        }
        let mem = card.memory();
        let old = mem.cells() == base.cells();
        let new = mem.cells() == after.cells();
        assert!(
            old ^ new,
            "cut at write {n}: the card is neither in its old nor its new state"
        );
        saw_old |= old;
        saw_new |= new;

        // The next tap knows which, and the card keeps working.
        card.set_faults(Faults::default());
        card.insert().unwrap();
        let mut t = test_terminal(3);
        t.set_next_seq(1000);
        let mut s = t.tap(&mut card).unwrap();
        let expected_counter = if new { 3 } else { 2 };
        assert_eq!(s.card().counter, expected_counter - 1);
        if let Err(TerminalError::Interrupted(p)) = &result {
            let r = s.resolve(p).unwrap();
            assert_eq!(matches!(r, Resolution::Completed(_)), new, "cut at {n}");
        }
        let receipt = s.earn(1).unwrap();
        assert_eq!(
            receipt.record.counter, expected_counter,
            "counter reused after cut at {n}"
        );
    }
    assert!(saw_old && saw_new);
}

fn run_tx_via(t: &mut ArmBeforeTx<'_>, kind: TxKind) -> Result<(), TerminalError> {
    let mut term = test_terminal(2).with_rng(Rng::seeded(99));
    term.set_next_seq(7);
    let mut s = term.tap(&mut *t)?;
    match kind {
        TxKind::Earn => s.earn(40).map(|_| ()),
        _ => s.redeem(40).map(|_| ()),
    }
}

#[test]
fn earn_survives_power_loss_at_every_write() {
    cut_everywhere(TxKind::Earn);
}

#[test]
fn redeem_survives_power_loss_at_every_write() {
    cut_everywhere(TxKind::Redeem);
}

#[test]
fn card_image_file_torn_mid_commit_recovers_on_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("card.json");
    let base = funded();
    for n in 0..10 {
        let mut card = SimCard::from_eeprom(base.clone(), Rng::seeded(5)).unwrap();
        card.save_as(&path).unwrap();
        {
            let mut arm = ArmBeforeTx {
                card: &mut card,
                cut: Some(PowerCut { at_write: n }),
            };
            assert!(run_tx_via(&mut arm, TxKind::Redeem).is_err());
        }
        drop(card);
        // The file holds the memory exactly as the cut left it (journal and
        // all); opening it runs recovery and persists the result.
        let reopened = SimCard::open(&path, Rng::seeded(6)).unwrap();
        let st = reopened.state().unwrap();
        assert!(
            (st.balance, st.counter) == (500, 1) || (st.balance, st.counter) == (460, 2),
            "cut at {n}: {} / {}",
            st.balance,
            st.counter
        );
        // After recovery the file no longer holds a journal.
        let again = tessera_simulator::image::load(&path).unwrap();
        assert!(!again.has_journal(), "cut at {n}: recovered image not persisted");
    }
}

#[test]
fn authentication_counter_survives_power_loss() {
    let base = funded();
    for n in 0..8 {
        let mut card = SimCard::from_eeprom(base.clone(), Rng::seeded(5)).unwrap();
        card.set_faults(Faults {
            power_cut: Some(PowerCut { at_write: n }),
            ..Faults::default()
        });
        let _ = run_tx(&mut card);
        let st = card.state().unwrap();
        assert!(st.auth_failures <= 1, "cut at {n}");
        assert_eq!(
            (st.balance, st.counter),
            (500, 1),
            "cut at {n}: only authentication was in flight"
        );
        card.insert().unwrap();
        test_terminal(4).tap(&mut card).unwrap().earn(1).unwrap();
        assert_eq!(card.state().unwrap().auth_failures, 0);
    }
}
