//! Power loss at every persistent write (spec §6.4) of the commands card
//! application v2 added or changed: REFUND (now checked against the log),
//! ACKNOWLEDGE SETTLEMENT (issuer MAC), UNBLOCK, and PERSONALIZE (with the
//! issuer key and id). One run per write index: after power-up the card
//! holds its old or its new state, never a mixture; it keeps working and
//! never reuses a counter. (EARN and REDEEM: `power_loss.rs`; UPDATE
//! PROFILE: `profile_update.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use tessera_crypto::keys::{IssuerDecision, IssuerKeys};
use tessera_crypto::rng::Rng;
use tessera_protocol::apdu::Command;
use tessera_protocol::ins::{CLA_ISO, CLA_PROPRIETARY};
use tessera_protocol::messages::{Lifecycle, UnblockCommand};
use tessera_protocol::{Ins, AID};
use tessera_simulator::{Eeprom, Faults, PowerCut, SimCard};
use tessera_suite::{anna, card_id, card_with_history, issued_card, issuer_mac, test_terminal};
use tessera_terminal::issuer::{personalize, IssueParams};
use tessera_terminal::{FixedClock, SoftwareSam, Terminal, TerminalError};
use tessera_transport::{Transport, TransportError};

/// Arms a power cut just before the command with instruction `ins`.
struct ArmBefore<'a> {
    card: &'a mut SimCard,
    ins: u8,
    cut: Option<PowerCut>,
    /// With `stop_after`, the card leaves the field once it answered the
    /// command `ins` (so that only that command's writes are counted), and
    /// its status word is kept here.
    stop_after: bool,
    answered: Option<Vec<u8>>,
}

impl<'a> ArmBefore<'a> {
    fn new(card: &'a mut SimCard, ins: u8, cut: PowerCut) -> Self {
        Self {
            card,
            ins,
            cut: Some(cut),
            stop_after: false,
            answered: None,
        }
    }
}

impl Transport for ArmBefore<'_> {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
        if self.stop_after && self.answered.is_some() {
            return Err(TransportError::CardRemoved);
        }
        if command.get(1) == Some(&self.ins) {
            if let Some(cut) = self.cut.take() {
                self.card.set_faults(Faults {
                    power_cut: Some(cut),
                    ..Faults::default()
                });
            }
            let r = self.card.transmit(command)?;
            self.answered = Some(r[r.len().saturating_sub(2)..].to_vec());
            return Ok(r);
        }
        self.card.transmit(command)
    }
}

/// Runs `op` on a card made from `base` once without a fault (the "after"
/// state and the number of writes of the command `ins`), then once with a
/// power cut before each of those writes. Returns how many runs ended in
/// the old state and how many in the new one.
fn cut_everywhere(
    base: &Eeprom,
    ins: u8,
    expected_writes: u64,
    op: impl Fn(&mut ArmBefore<'_>) -> Result<(), TerminalError>,
) -> (u32, u32) {
    cut_everywhere_checked(base, ins, expected_writes, op, &|| test_terminal(9))
}

/// As [`cut_everywhere`], with the terminal that checks the card afterwards.
fn cut_everywhere_checked(
    base: &Eeprom,
    ins: u8,
    expected_writes: u64,
    op: impl Fn(&mut ArmBefore<'_>) -> Result<(), TerminalError>,
    checker: &dyn Fn() -> Terminal<SoftwareSam, FixedClock>,
) -> (u32, u32) {
    let mut reference = SimCard::from_eeprom(base.clone(), Rng::seeded(5)).unwrap();
    op(&mut ArmBefore::new(
        &mut reference,
        ins,
        PowerCut { at_write: u64::MAX },
    ))
    .unwrap();
    let writes = reference.writes();
    assert_eq!(writes, expected_writes, "writes of INS {ins:02X} (2n + 2 for n fields)");
    let after = reference.memory();
    assert_ne!(after.cells(), base.cells());

    let (mut old, mut new) = (0, 0);
    for n in 0..=writes {
        let mut card = SimCard::from_eeprom(base.clone(), Rng::seeded(5)).unwrap();
        let result = op(&mut ArmBefore::new(&mut card, ins, PowerCut { at_write: n }));
        assert_eq!(result.is_ok(), n == writes, "cut before write {n}: {result:?}");
        card.set_faults(Faults::default());
        let mut memory = card.memory();
        memory.recover();
        if memory.cells() == base.cells() {
            old += 1;
        } else {
            assert_eq!(
                memory.cells(),
                after.cells(),
                "cut before write {n}: neither old nor new"
            );
            new += 1;
        }
        // The card powers up again and works; a counter is never reused.
        card.insert().unwrap();
        let state = card.state().unwrap();
        if state.lifecycle == Lifecycle::Active && state.auth_failures < state.auth_limit {
            let counter = state.counter;
            let r = checker().tap(&mut card).unwrap().earn(1).unwrap();
            assert_eq!(r.record.counter, counter + 1, "cut before write {n}");
        }
    }
    assert_eq!(old + new, u32::try_from(writes).unwrap() + 1);
    (old, new)
}

/// A card with an earn (counter 1, 500 points) and a redemption (counter 2).
fn with_history(n: u32) -> Eeprom {
    card_with_history(n).memory()
}

#[test]
fn refund_is_atomic() {
    let base = with_history(400);
    let card = SimCard::from_eeprom(base.clone(), Rng::seeded(1)).unwrap();
    let redeem = card.state().unwrap().last_record().cloned().unwrap();
    let (old, new) = cut_everywhere(&base, 0x34, 8, |arm| {
        let mut t = test_terminal(2).with_rng(Rng::seeded(3));
        t.tap(&mut *arm)?.refund(&redeem).map(|_| ())
    });
    assert!(old > 0 && new > 0);
}

#[test]
fn acknowledge_settlement_is_atomic() {
    let base = with_history(401);
    let mac = issuer_mac(&card_id(401), IssuerDecision::Settled(2));
    let (old, new) = cut_everywhere(&base, 0x38, 4, |arm| {
        let mut t = test_terminal(2).with_rng(Rng::seeded(3));
        t.tap(&mut *arm)?.acknowledge_settlement(2, mac).map(|_| ())
    });
    assert!(old > 0 && new > 0);
}

/// ISSUER ADJUST (v2.1): balance, counter, log slot and the adjustment
/// sequence in one commit (10 writes); a torn adjustment can be delivered
/// again, a completed one never twice.
#[test]
fn issuer_adjust_is_atomic() {
    let base = with_history(403);
    for (kind, points) in [
        (tessera_protocol::messages::TxKind::IssuerCredit, 75),
        (tessera_protocol::messages::TxKind::IssuerDebit, 30),
    ] {
        let adj = tessera_terminal::Adjustment {
            card_id: card_id(403),
            key_version: 1,
            seq: 1,
            kind,
            points,
            issuer_mac: issuer_mac(
                &card_id(403),
                IssuerDecision::Adjust {
                    seq: 1,
                    kind: kind.to_byte(),
                    points,
                },
            ),
        };
        let (old, new) = cut_everywhere(&base, 0x36, 10, |arm| {
            let mut t = test_terminal(2).with_rng(Rng::seeded(3));
            t.tap(&mut *arm)?.adjust(&adj).map(|_| ())
        });
        assert!(old > 0 && new > 0);
    }
}

/// The office's approval of `request` on card `n`, settled up to `settled`.
fn approval(
    n: u32,
    request: &tessera_protocol::messages::AuthorizationRequest,
    settled: u32,
) -> tessera_protocol::messages::AuthorizationResponse {
    tessera_protocol::messages::AuthorizationResponse {
        approved: true,
        settled,
        issuer_mac: issuer_mac(
            &card_id(n),
            IssuerDecision::Authorization {
                cryptogram: request.cryptogram,
                decision: 0,
                settled,
            },
        ),
    }
}

#[test]
fn online_redemption_with_settlement_is_atomic() {
    // v2.2: an online-approved redemption above nothing offline would allow,
    // with the office's "settled up to 2": balance, counter, log slot and the
    // restarted velocity counters in one commit.
    let base = with_history(404);
    let (old, new) = cut_everywhere(&base, 0x32, 10, |arm| {
        let mut t = test_terminal(2).with_rng(Rng::seeded(3));
        let mut s = t.tap(&mut *arm)?;
        let request = s.request_authorization(tessera_protocol::messages::TxKind::Redeem, 300, 0)?;
        let answer = approval(404, &request, 2);
        s.transact_authorized(&request, &answer).map(|_| ())
    });
    assert!(old > 0 && new > 0);
}

#[test]
fn online_earn_with_settlement_is_atomic() {
    // Balance, counter, log slot, visits and velocity counters: five fields.
    let base = with_history(405);
    let (old, new) = cut_everywhere(&base, 0x30, 12, |arm| {
        let mut t = test_terminal(2).with_rng(Rng::seeded(3));
        let mut s = t.tap(&mut *arm)?;
        let request = s.request_authorization(tessera_protocol::messages::TxKind::Earn, 70, 0)?;
        let answer = approval(405, &request, 2);
        s.transact_authorized(&request, &answer).map(|_| ())
    });
    assert!(old > 0 && new > 0);
}

#[test]
fn online_refund_outside_the_log_with_settlement_is_atomic() {
    // A refund of the redemption (counter 2) after eight more earns, when
    // the original has left the log: balance, counter, log slot and the
    // restarted velocity counters in one commit.
    let mut card = card_with_history(406);
    {
        let mut t = test_terminal(1);
        let mut s = t.tap(&mut card).unwrap();
        for _ in 0..8 {
            s.earn(1).unwrap();
        }
    }
    let base = card.memory();
    let (old, new) = cut_everywhere(&base, 0x34, 10, |arm| {
        let mut t = test_terminal(2).with_rng(Rng::seeded(3));
        let mut s = t.tap(&mut *arm)?;
        let request = s.request_authorization(tessera_protocol::messages::TxKind::RefundRedeem, 100, 2)?;
        let answer = approval(406, &request, 10);
        s.transact_authorized(&request, &answer).map(|_| ())
    });
    assert!(old > 0 && new > 0);
}

#[test]
fn unblock_is_atomic() {
    let (mut card, _) = issued_card(402, 402);
    // Two failed authentications: the counter is at 2.
    for _ in 0..2 {
        card.transmit(&Command::new(CLA_ISO, Ins::Select, 4, 0, AID.to_vec(), Some(256)).to_bytes())
            .unwrap();
        let auth = tessera_protocol::messages::AuthCommand {
            host_challenge: [1; 8],
            host_cryptogram: [2; 8],
        };
        card.transmit(&Command::new(CLA_PROPRIETARY, Ins::Authenticate, 0, 0, auth.to_bytes(), Some(256)).to_bytes())
            .unwrap();
    }
    assert_eq!(card.state().unwrap().auth_failures, 2);
    let base = card.memory();
    let u = UnblockCommand {
        seq: 1,
        issuer_mac: issuer_mac(&card_id(402), IssuerDecision::Unblock(1)),
    };
    let (old, new) = cut_everywhere(&base, 0x2C, 6, |arm| {
        arm.transmit(&Command::new(CLA_ISO, Ins::Select, 4, 0, AID.to_vec(), Some(256)).to_bytes())?;
        let r = arm.transmit(&Command::new(CLA_PROPRIETARY, Ins::Unblock, 0, 0, u.to_bytes(), None).to_bytes())?;
        if r == [0x90, 0x00] {
            Ok(())
        } else {
            Err(TerminalError::InvalidRequest("unblock refused"))
        }
    });
    assert!(old > 0 && new > 0);
}

#[test]
fn personalize_is_atomic() {
    let keys = IssuerKeys::test().unwrap();
    let id = card_id(403);
    let blank = SimCard::manufacture(id, &keys.card_perso_key(&id), Rng::seeded(4)).unwrap();
    let base = blank.memory();
    let mut p = anna();
    p.card_id = id;
    // 11 fields: key version, K_auth, K_cert, K_iss, issuer id, caps, auth
    // limit, auth failures, profile, K_perso (erased), life-cycle.
    let (old, new) = cut_everywhere(&base, 0xE2, 24, |arm| {
        personalize(&mut *arm, &keys, p.clone(), &IssueParams::default()).map(|_| ())
    });
    assert!(old > 0 && new > 0);
    // A card left blank by the cut can be personalized again.
    let mut card = SimCard::from_eeprom(base, Rng::seeded(6)).unwrap();
    personalize(&mut card, &keys, p, &IssueParams::default()).unwrap();
    assert_eq!(card.state().unwrap().issuer_id, Some(*b"TEST"));
}

#[test]
fn key_update_is_atomic() {
    let base = with_history(404);
    let mut rotated = IssuerKeys::test().unwrap();
    rotated.rotate().unwrap();
    let update = rotated.key_update(&card_id(404), 1).unwrap().command;
    let both = || {
        Terminal::new(
            SoftwareSam::new(rotated.terminal_keys()),
            FixedClock(tessera_suite::TEST_TIME),
            2,
        )
    };
    // 4 fields: key version, K_auth, K_cert, K_iss.
    let (old, new) = cut_everywhere_checked(
        &base,
        0xD8,
        10,
        |arm| {
            let mut t = both().with_rng(Rng::seeded(3));
            // Only KEY UPDATE's writes: the card leaves before the terminal
            // authenticates again under the new keys.
            arm.stop_after = true;
            let _ = t.tap(&mut *arm)?.update_keys(&update);
            match arm.answered.as_deref() {
                Some([0x90, 0x00]) => Ok(()),
                _ => Err(TerminalError::InvalidRequest("KEY UPDATE not answered 9000")),
            }
        },
        &both,
    );
    assert!(old > 0 && new > 0);
}
