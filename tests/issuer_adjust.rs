//! ISSUER ADJUST (applet-spec §4.16, v2.1): the card takes a credit or debit
//! only with the issuer MAC for this card, sequence, kind and points, and
//! only the next adjustment sequence; a forged, replayed, re-pointed or
//! out-of-order adjustment changes nothing. At a till, an adjustment is
//! journaled before the card is touched; a card pulled mid-adjustment is
//! resolved from its log at the next tap, credited once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use tessera_crypto::keys::{IssuerDecision, IssuerKeys};
use tessera_protocol::apdu::Command;
use tessera_protocol::ins::CLA_PROPRIETARY;
use tessera_protocol::messages::{AdjustCommand, TxKind};
use tessera_protocol::{Ins, StatusWord};
use tessera_simulator::{Faults, SimCard};
use tessera_suite::{card_id, card_with_history, issued_card, issuer_mac, test_terminal, TEST_TIME};
use tessera_terminal::journal::{EntryKind, Journal};
use tessera_terminal::offers::CampaignSet;
use tessera_terminal::policy::{Hotlist, Policy};
use tessera_terminal::till::{Till, TillConfig, TillError};
use tessera_terminal::{Adjustment, FixedClock, SoftwareSam, Terminal, TerminalError};
use tessera_transport::Transport;

fn adjustment(card: u32, seq: u32, kind: TxKind, points: u32) -> Adjustment {
    let id = card_id(card);
    Adjustment {
        card_id: id,
        key_version: 1,
        seq,
        kind,
        points,
        issuer_mac: issuer_mac(
            &id,
            IssuerDecision::Adjust {
                seq,
                kind: kind.to_byte(),
                points,
            },
        ),
    }
}

fn balance(card: &SimCard) -> u32 {
    card.state().unwrap().balance
}

fn refused_with(err: TerminalError, sw: StatusWord) {
    match err {
        TerminalError::Card { command, sw: got } => {
            assert_eq!(command, "ISSUER ADJUST");
            assert_eq!(got, sw);
        }
        other => panic!("expected the card's {sw:?}, got {other:?}"),
    }
}

#[test]
fn genuine_credit_and_debit_are_certified_records_with_the_sequence() {
    let mut card = card_with_history(501); // 400 points, counter 2
    let keys = IssuerKeys::test().unwrap();
    let mut t = test_terminal(5);
    let mut s = t.tap(&mut card).unwrap();
    let r = s.adjust(&adjustment(501, 1, TxKind::IssuerCredit, 250)).unwrap();
    assert_eq!(
        (
            r.record.counter,
            r.record.kind,
            r.record.amount,
            r.record.balance_after,
            r.record.reference
        ),
        (3, TxKind::IssuerCredit, 250, 650, 1)
    );
    assert_eq!((r.record.terminal_id, r.record.time), (5, TEST_TIME));
    keys.certificate_verifier().verify(&card_id(501), 1, &r.record).unwrap();
    let d = s.adjust(&adjustment(501, 2, TxKind::IssuerDebit, 50)).unwrap();
    assert_eq!(
        (d.record.kind, d.record.balance_after, d.record.reference),
        (TxKind::IssuerDebit, 600, 2)
    );
    keys.certificate_verifier().verify(&card_id(501), 1, &d.record).unwrap();
    drop(s);
    let st = card.state().unwrap();
    assert_eq!((st.balance, st.counter, st.adjust_seq), (600, 4, 2));
    // An adjustment record is never refundable.
    let mut s = t.tap(&mut card).unwrap();
    let err = s.refund(&r.record).unwrap_err();
    assert!(matches!(err, TerminalError::InvalidRequest(_)), "{err:?}");
}

#[test]
fn replayed_forged_moved_or_out_of_order_adjustments_change_nothing() {
    let (mut card, _) = issued_card(502, 502);
    let (mut other, _) = issued_card(503, 503);
    let mut t = test_terminal(5);
    let first = adjustment(502, 1, TxKind::IssuerCredit, 100);
    t.tap(&mut card).unwrap().adjust(&first).unwrap();
    assert_eq!(balance(&card), 100);
    let memory = card.memory();

    // Replayed, at this or any till: the sequence is spent.
    refused_with(
        t.tap(&mut card).unwrap().adjust(&first).unwrap_err(),
        StatusWord::WrongData,
    );
    refused_with(
        test_terminal(6).tap(&mut card).unwrap().adjust(&first).unwrap_err(),
        StatusWord::WrongData,
    );
    // Forged: a MAC the office did not make.
    let mut forged = adjustment(502, 2, TxKind::IssuerCredit, 100_000);
    forged.issuer_mac[0] ^= 1;
    refused_with(
        t.tap(&mut card).unwrap().adjust(&forged).unwrap_err(),
        StatusWord::BadMac,
    );
    // Points or kind changed under a genuine MAC.
    let mut more = adjustment(502, 2, TxKind::IssuerCredit, 10);
    more.points = 1000;
    refused_with(t.tap(&mut card).unwrap().adjust(&more).unwrap_err(), StatusWord::BadMac);
    let mut flipped = adjustment(502, 2, TxKind::IssuerDebit, 10);
    flipped.kind = TxKind::IssuerCredit;
    refused_with(
        t.tap(&mut card).unwrap().adjust(&flipped).unwrap_err(),
        StatusWord::BadMac,
    );
    // A gap: sequence 3 before 2 (nothing the office issued is skipped).
    refused_with(
        t.tap(&mut card)
            .unwrap()
            .adjust(&adjustment(502, 3, TxKind::IssuerCredit, 10))
            .unwrap_err(),
        StatusWord::WrongData,
    );
    assert_eq!(card.memory().cells(), memory.cells(), "nothing changed");

    // Another card's adjustment, presented on this card: the MAC binds it.
    let mut moved = adjustment(503, 1, TxKind::IssuerCredit, 500);
    moved.card_id = card_id(502);
    refused_with(
        t.tap(&mut card).unwrap().adjust(&moved).unwrap_err(),
        StatusWord::BadMac,
    );
    assert_eq!(card.memory().cells(), memory.cells(), "nothing changed");
    // … and it is still good for its own card.
    t.tap(&mut other)
        .unwrap()
        .adjust(&adjustment(503, 1, TxKind::IssuerCredit, 500))
        .unwrap();
    assert_eq!(balance(&other), 500);
    // The next genuine one goes through.
    t.tap(&mut card)
        .unwrap()
        .adjust(&adjustment(502, 2, TxKind::IssuerCredit, 10))
        .unwrap();
    assert_eq!(balance(&card), 110);
}

#[test]
fn a_debit_never_takes_the_card_below_zero() {
    let (mut card, _) = issued_card(504, 504);
    let mut t = test_terminal(5);
    t.tap(&mut card)
        .unwrap()
        .adjust(&adjustment(504, 1, TxKind::IssuerCredit, 40))
        .unwrap();
    let err = t
        .tap(&mut card)
        .unwrap()
        .adjust(&adjustment(504, 2, TxKind::IssuerDebit, 41))
        .unwrap_err();
    assert!(
        matches!(err, TerminalError::InsufficientBalance { balance: 40 }),
        "{err:?}"
    );
    assert_eq!(balance(&card), 40);
    t.tap(&mut card)
        .unwrap()
        .adjust(&adjustment(504, 2, TxKind::IssuerDebit, 40))
        .unwrap();
    assert_eq!(balance(&card), 0);
}

#[test]
fn issuer_adjust_needs_a_session_and_its_class() {
    let (mut card, _) = issued_card(505, 505);
    let a = adjustment(505, 1, TxKind::IssuerCredit, 10);
    let data = AdjustCommand {
        amount: 10,
        terminal_id: 5,
        terminal_seq: 1,
        time: TEST_TIME,
        seq: 1,
        issuer_mac: a.issuer_mac,
    }
    .to_bytes();
    let select = Command::new(0, Ins::Select, 4, 0, tessera_protocol::AID.to_vec(), Some(256));
    card.transmit(&select.to_bytes()).unwrap();
    // Without secure messaging: wrong class.
    let plain = Command::new(CLA_PROPRIETARY, Ins::IssuerAdjust, 5, 0, data.clone(), Some(256));
    assert_eq!(card.transmit(&plain.to_bytes()).unwrap(), vec![0x6E, 0x00]);
    // Secure class, no session.
    let secure = Command::new(0x84, Ins::IssuerAdjust, 5, 0, data, Some(256));
    assert_eq!(card.transmit(&secure.to_bytes()).unwrap(), vec![0x69, 0x82]);
    assert_eq!(balance(&card), 0);
}

/// The card leaves the field just before the command `ins` reaches it.
struct PulledBefore<'a> {
    card: &'a mut SimCard,
    ins: u8,
    pulled: bool,
}

impl Transport for PulledBefore<'_> {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, tessera_transport::TransportError> {
        if command.get(1) == Some(&self.ins) {
            self.pulled = true;
        }
        if self.pulled {
            return Err(tessera_transport::TransportError::CardRemoved);
        }
        self.card.transmit(command)
    }
}

fn till(dir: &tempfile::TempDir) -> Till<SoftwareSam, FixedClock> {
    let keys = IssuerKeys::test().unwrap();
    let journal = Journal::open(&dir.path().join("j.sqlite"), 7).unwrap();
    let terminal = Terminal::new(SoftwareSam::new(keys.terminal_keys()), FixedClock(TEST_TIME), 7);
    Till::new(
        terminal,
        journal,
        TillConfig {
            policy: Policy::default_policy(),
            hotlist: Hotlist::default(),
            campaigns: CampaignSet::empty(),
            online: Default::default(),
        },
    )
    .unwrap()
}

#[test]
fn the_till_journals_an_adjustment_around_the_card_and_sends_it_once() {
    let (mut card, _) = issued_card(506, 506);
    let dir = tempfile::tempdir().unwrap();
    let mut till = till(&dir);
    till.set_adjustments([
        adjustment(506, 2, TxKind::IssuerCredit, 20),
        adjustment(506, 1, TxKind::IssuerCredit, 100),
        adjustment(507, 1, TxKind::IssuerCredit, 999),
    ]);
    let tap = till.tap(&mut card).unwrap();
    let applied: Vec<(u32, u32)> = tap
        .adjusted
        .iter()
        .map(|r| (r.record.reference, r.record.amount))
        .collect();
    assert_eq!(applied, vec![(1, 100), (2, 20)], "in sequence order, this card's only");
    drop(tap);
    assert_eq!(balance(&card), 120);
    let records = till.journal().records().unwrap();
    let kinds: Vec<EntryKind> = records.iter().map(|r| r.entry.kind).collect();
    assert_eq!(
        kinds,
        vec![
            EntryKind::Decision,
            EntryKind::Completion,
            EntryKind::Decision,
            EntryKind::Completion
        ]
    );
    // The decision is journaled before the card certifies its sequence.
    let rec = records[1].entry.card_record().unwrap();
    assert_eq!(rec.terminal_seq, records[0].seq);
    assert_eq!(records[0].entry.tx_type.as_deref(), Some("issuer-credit"));
    // Tapped again: the journal holds both, nothing is sent.
    let tap = till.tap(&mut card).unwrap();
    assert!(tap.adjusted.is_empty());
    drop(tap);
    assert_eq!(till.journal().records().unwrap().len(), 4);
    assert_eq!(balance(&card), 120);
}

#[test]
fn a_card_pulled_mid_adjustment_is_credited_once() {
    let (mut card, _) = issued_card(508, 508);
    let dir = tempfile::tempdir().unwrap();
    let mut till = till(&dir);
    // Warm the profile cache: SELECT, AUTHENTICATE, then the adjustment is
    // the third command, whose answer is lost after the card executed it.
    drop(till.tap(&mut card).unwrap());
    till.set_adjustments([adjustment(508, 1, TxKind::IssuerCredit, 300)]);
    card.set_faults(Faults {
        lose_response_of_apdu: Some(3),
        ..Faults::default()
    });
    let err = till.tap(&mut card).map(|_| ()).unwrap_err();
    assert!(
        matches!(err, TillError::Terminal(TerminalError::Interrupted(_))),
        "{err:?}"
    );
    card.set_faults(Faults::default());
    card.insert().unwrap();
    assert_eq!(balance(&card), 300, "the card executed it");
    // Next tap: resolved from the card's log, journaled as recovered, not
    // sent again, and the clerk's next purchase is no "already done".
    let mut tap = till.tap(&mut card).unwrap();
    assert!(tap.adjusted.is_empty());
    assert_eq!(tap.recovered.len(), 1);
    assert!(tap.completed_earlier.is_empty());
    let rec = tap.recovered[0].entry.card_record().unwrap();
    assert_eq!((rec.kind, rec.amount, rec.reference), (TxKind::IssuerCredit, 300, 1));
    let outcome = tap.purchase(1000, &[]).unwrap();
    assert!(
        matches!(outcome, tessera_terminal::till::TillOutcome::Approved { .. }),
        "{outcome:?}"
    );
    drop(tap);
    assert!(balance(&card) > 300);
    let credits = till
        .journal()
        .records()
        .unwrap()
        .iter()
        .filter(|r| {
            matches!(r.entry.kind, EntryKind::Completion | EntryKind::Recovered)
                && r.entry.tx_type.as_deref() == Some("issuer-credit")
        })
        .count();
    assert_eq!(credits, 1);

    // Pulled before the card committed: the decision is void at the next
    // tap, and the adjustment goes through then.
    till.set_adjustments([adjustment(508, 2, TxKind::IssuerCredit, 5)]);
    let before = balance(&card);
    let err = till
        .tap(PulledBefore {
            card: &mut card,
            ins: 0x36,
            pulled: false,
        })
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(err, TillError::Terminal(TerminalError::Interrupted(_))),
        "{err:?}"
    );
    assert_eq!(balance(&card), before);
    let tap = till.tap(&mut card).unwrap();
    assert_eq!(tap.voided.len(), 1);
    assert_eq!(tap.adjusted.len(), 1);
    drop(tap);
    assert_eq!(balance(&card), before + 5);
}
