//! The attacks of `docs/threat-model.md`, each tried as an attacker or a
//! hurried clerk would, each a test that the attacker now loses.
//!
//! A *relay* sits between card and till: it sees every APDU and can change
//! any answer, but holds no key. A *rogue till* holds a terminal bundle
//! (the authentication master) and speaks raw APDUs, without the till
//! library's rules. The issuer decisions (ACKNOWLEDGE SETTLEMENT, UPDATE
//! PROFILE, UNBLOCK) need the issuer master, which only the office has.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use tessera_crypto::channel::{SecureChannel, SessionKeys};
use tessera_crypto::keys::{IssuerDecision, IssuerKeys, OfficeLink, TerminalBundle};
use tessera_crypto::rng::Rng;
use tessera_protocol::apdu::{Command, Response};
use tessera_protocol::ins::{CLA_ISO, CLA_PROPRIETARY, CLA_SECURE};
use tessera_protocol::messages::{
    AuthCommand, LogRecord, SelectResponse, TxKind, UnblockCommand, UpdateProfileCommand,
};
use tessera_protocol::{Ins, StatusWord, AID};
use tessera_simulator::{Faults, SimCard};
use tessera_suite::{anna, card_id, issued_card, issuer_mac, test_terminal, TEST_TIME};
use tessera_terminal::issuer::{personalize, IssueParams};
use tessera_terminal::journal::{EntryKind, Journal};
use tessera_terminal::offers::CampaignSet;
use tessera_terminal::policy::{Decision, Hotlist, Policy};
use tessera_terminal::till::{SettledCounter, Till, TillConfig, TillError, TillOutcome};
use tessera_terminal::{FixedClock, SoftwareSam, Terminal, TerminalError, Unblock};
use tessera_transport::{Transport, TransportError};

/// A relay in the field: passes every command to the card and may replace
/// the card's answer. `None` from the rule drops the answer (card gone).
struct Relay<'a, F: FnMut(&[u8], Vec<u8>) -> Option<Vec<u8>>> {
    card: &'a mut SimCard,
    rule: F,
}

impl<F: FnMut(&[u8], Vec<u8>) -> Option<Vec<u8>>> Transport for Relay<'_, F> {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
        let answer = self.card.transmit(command)?;
        (self.rule)(command, answer).ok_or(TransportError::CardRemoved)
    }
}

fn ins_of(cmd: &[u8]) -> u8 {
    cmd.get(1).copied().unwrap_or(0)
}

/// A rule that replaces the first answer to `ins` with `sw` (no data).
fn forge_first(ins: u8, sw: [u8; 2]) -> impl FnMut(&[u8], Vec<u8>) -> Option<Vec<u8>> {
    let mut done = false;
    move |cmd, answer| {
        if !done && ins_of(cmd) == ins {
            done = true;
            return Some(sw.to_vec());
        }
        Some(answer)
    }
}

type TestTill = Till<SoftwareSam, FixedClock>;

fn till_with(terminal_id: u32, policy: Policy, dir: &tempfile::TempDir) -> TestTill {
    let journal = Journal::open(&dir.path().join(format!("t{terminal_id}.sqlite")), terminal_id).unwrap();
    let config = TillConfig {
        policy,
        hotlist: Hotlist::empty(),
        campaigns: CampaignSet::empty(),
        online: Default::default(),
    };
    Till::new(test_terminal(terminal_id), journal, config).unwrap()
}

fn till(terminal_id: u32, dir: &tempfile::TempDir) -> TestTill {
    till_with(terminal_id, Policy::default_policy(), dir)
}

fn entries(till: &TestTill, kind: EntryKind) -> usize {
    till.journal()
        .records()
        .unwrap()
        .iter()
        .filter(|r| r.entry.kind == kind)
        .count()
}

fn balance(card: &SimCard) -> u32 {
    card.state().unwrap().balance
}

fn approved(o: TillOutcome) -> LogRecord {
    match o {
        TillOutcome::Approved { receipt, .. } => receipt.record,
        other => panic!("expected an approval, got {other:?}"),
    }
}

/// A relay with no keys lets the card commit EARN and tells the till `6988`.
/// The till must not journal `void` (the clerk would then charge again): it
/// reads the outcome from the card's authenticated state in the same tap.
#[test]
fn forged_6988_relay_does_not_void() {
    let (mut card, _) = issued_card(300, 1);
    let dir = tempfile::tempdir().unwrap();
    let mut till = till(7, &dir);
    let rec = {
        let mut relay = Relay {
            card: &mut card,
            rule: forge_first(0x30, [0x69, 0x88]),
        };
        let mut tap = till.tap(&mut relay).unwrap();
        approved(tap.purchase(4200, &[]).unwrap())
    };
    assert_eq!(balance(&card), rec.balance_after);
    assert_eq!(entries(&till, EntryKind::Void), 0, "no blind void");
    assert_eq!(entries(&till, EntryKind::Completion), 1);
    // The forged refusal also cannot hide it at the next tap: the retry is
    // a new, explicit purchase, and the card's counter says exactly one.
    assert_eq!(card.state().unwrap().counter, 1);

    // Variant: the relay forges 6988 and then drops the card. The decision
    // stays pending; the next tap finds it done and the clerk's identical
    // retry charges nothing.
    let mut dropped = false;
    let before = balance(&card);
    let err = {
        let mut relay = Relay {
            card: &mut card,
            rule: |cmd: &[u8], answer: Vec<u8>| {
                if dropped {
                    return None;
                }
                if ins_of(cmd) == 0x30 {
                    dropped = true;
                    return Some(vec![0x69, 0x88]);
                }
                Some(answer)
            },
        };
        let mut tap = till.tap(&mut relay).unwrap();
        tap.purchase(4200, &[]).unwrap_err()
    };
    assert!(
        matches!(err, TillError::Terminal(TerminalError::Interrupted(_))),
        "{err:?}"
    );
    let credited = balance(&card) - before;
    assert!(credited > 0, "the card committed the earn");
    let mut tap = till.tap(&mut card).unwrap();
    assert!(matches!(
        tap.purchase(4200, &[]).unwrap(),
        TillOutcome::AlreadyDone { .. }
    ));
    drop(tap);
    assert_eq!(balance(&card) - before, credited, "one credit for one purchase");
    assert_eq!(entries(&till, EntryKind::Void), 0);
}

/// The relay turns the card's `9000` into `6C10`. A transport that re-sent
/// the MAC'd EARN would get a genuine `6988` (the chain had advanced) and a
/// till that believed it would void a committed earn. Here nothing is
/// re-sent blindly and the outcome comes from the card.
#[test]
fn sw_6c10_relay_no_blind_resend() {
    let (mut card, _) = issued_card(301, 2);
    let dir = tempfile::tempdir().unwrap();
    let mut till = till(7, &dir);
    let mut earns_sent = 0;
    let rec = {
        let mut relay = Relay {
            card: &mut card,
            rule: |cmd: &[u8], answer: Vec<u8>| {
                if ins_of(cmd) == 0x30 {
                    earns_sent += 1;
                    if earns_sent == 1 {
                        return Some(vec![0x6C, 0x10]);
                    }
                }
                Some(answer)
            },
        };
        let mut tap = till.tap(&mut relay).unwrap();
        approved(tap.purchase(4200, &[]).unwrap())
    };
    assert_eq!(earns_sent, 1, "the secure command was sent once");
    assert_eq!(card.state().unwrap().counter, 1);
    assert_eq!(balance(&card), rec.balance_after);
    assert_eq!(entries(&till, EntryKind::Void), 0);
    // The PC/SC transport's own rule (no 6Cxx re-send of a CLA 84 command)
    // is tested in tessera-pcsc and through pcscd in tests/pcsc_stack.rs.
}

/// The relay swaps the profile digest in SELECT for the digest of an older
/// profile the till has cached (tier 3, valid to 2030) while the card holds
/// another one. The AUTHENTICATE answer carries the digest under the R-MAC:
/// the till notices and does nothing.
#[test]
fn select_digest_swap_is_detected() {
    let keys = IssuerKeys::test().unwrap();
    let (mut card, current) = issued_card(302, 3);
    let mut old = anna();
    old.card_id = card_id(302);
    old.tier = 3;
    let old = keys.issuer.sign(&old).unwrap();
    let old_digest = tessera_crypto::sign::profile_digest(&old.to_bytes());
    let real_digest = tessera_crypto::sign::profile_digest(&current.to_bytes());
    assert_ne!(old_digest, real_digest);
    let mut t = test_terminal(7);
    t.cache_mut().insert(old_digest, old);
    let mut relay = Relay {
        card: &mut card,
        rule: |cmd: &[u8], mut answer: Vec<u8>| {
            if ins_of(cmd) == 0xA4 {
                if let Some(p) = answer.windows(32).position(|w| w == real_digest) {
                    answer[p..p + 32].copy_from_slice(&old_digest);
                }
            }
            Some(answer)
        },
    };
    assert!(matches!(t.tap(&mut relay), Err(TerminalError::SelectTampered)));
    assert_eq!(t.take_trace().labels(), ["SELECT", "AUTHENTICATE"], "nothing else sent");
    let st = card.state().unwrap();
    assert_eq!((st.counter, st.auth_failures), (0, 0));
}

/// The same 2000-point redemption refunded at two tills: the second till's
/// journal does not know the first refund, the card does.
#[test]
fn double_refund_at_two_tills_refused_by_card() {
    let (mut card, _) = issued_card(303, 4);
    let dir = tempfile::tempdir().unwrap();
    let mut a = till(7, &dir);
    let mut b = till(8, &dir);
    let mut c = till(9, &dir);
    test_terminal(5).tap(&mut card).unwrap().earn(5000).unwrap();
    let redeem = approved(a.tap(&mut card).unwrap().redeem(2000).unwrap());
    let after_redeem = balance(&card);
    let r = approved(b.tap(&mut card).unwrap().refund(redeem.counter).unwrap());
    assert_eq!(
        (r.kind, r.amount, r.reference),
        (TxKind::RefundRedeem, 2000, redeem.counter)
    );
    assert_eq!(balance(&card), after_redeem + 2000);
    // Another purchase, so that till C does not even see the refund as the
    // card's last record: its journal knows nothing of it.
    approved(a.tap(&mut card).unwrap().purchase(1000, &[]).unwrap());
    let after = balance(&card);
    let err = c.tap(&mut card).unwrap().refund(redeem.counter).unwrap_err();
    assert!(
        matches!(err, TillError::Terminal(TerminalError::RefundExceedsOriginal)),
        "{err:?}"
    );
    assert_eq!(balance(&card), after, "refunded once");
    // The refusal was established from the card, then journaled as void.
    assert_eq!(entries(&c, EntryKind::Completion), 0);
}

/// REFUNDs a rogue till builds by hand: naming an EARN of 10 as a
/// redemption of 100 000, asking more than the original, naming a
/// transaction that has left the log. The card refuses each; nothing moves.
#[test]
fn refund_of_mismatched_or_missing_original_refused() {
    let (mut card, _) = issued_card(304, 5);
    let mut t = test_terminal(7);
    let mut s = t.tap(&mut card).unwrap();
    let earn = s.earn(10).unwrap().record; // counter 1
    s.earn(100).unwrap(); // counter 2: enough balance for any local check
    let mut fake = earn.clone();
    fake.kind = TxKind::Redeem;
    fake.amount = 100_000;
    assert!(matches!(s.refund(&fake), Err(TerminalError::RefundKindMismatch)));
    let mut more = earn.clone();
    more.amount = 11;
    assert!(matches!(s.refund(&more), Err(TerminalError::RefundExceedsOriginal)));
    assert_eq!(s.card().balance, 110);
    // A partial refund, then one more point than what remains.
    let mut part = earn.clone();
    part.amount = 4;
    s.refund(&part).unwrap();
    part.amount = 7;
    assert!(matches!(s.refund(&part), Err(TerminalError::RefundExceedsOriginal)));
    part.amount = 6;
    s.refund(&part).unwrap();
    assert!(matches!(s.refund(&earn), Err(TerminalError::RefundExceedsOriginal)));
    // Eight more transactions: counter 1 has left the 8-record log.
    for _ in 0..8 {
        s.earn(1).unwrap();
    }
    let gone = s.card().balance;
    let mut old = earn.clone();
    old.amount = 1;
    assert!(matches!(s.refund(&old), Err(TerminalError::RefundOutsideLog)));
    assert_eq!(s.card().balance, gone);
    drop(s);
    let st = card.state().unwrap();
    assert_eq!((st.balance, st.counter), (108, 12));
}

fn velocity_policy() -> Policy {
    let mut p = Policy::default_policy();
    p.velocity.max_offline_redeems = 2;
    p
}

/// A till whose `settled.json` was edited by hand (or a rogue till sending
/// ACKNOWLEDGE SETTLEMENT itself) cannot reset the card's offline counters:
/// the card wants the issuer's MAC over N.
#[test]
fn edited_settled_json_cannot_reset_velocity() {
    let (mut card, _) = issued_card(305, 6);
    let id = card_id(305);
    let dir = tempfile::tempdir().unwrap();
    let mut till = till_with(7, velocity_policy(), &dir);
    test_terminal(5).tap(&mut card).unwrap().earn(5000).unwrap();
    {
        let mut tap = till.tap(&mut card).unwrap();
        approved(tap.redeem(10).unwrap());
        approved(tap.redeem(10).unwrap());
        let refused = tap.redeem(10).unwrap();
        assert!(matches!(
            refused,
            TillOutcome::Refused {
                decision: Decision::Refer(_),
                ..
            }
        ));
    }
    // What an edited file gives the till: a counter with a made-up MAC.
    till.set_settled([(
        id,
        SettledCounter {
            key_version: 1,
            counter: 3,
            issuer_mac: [0; 8],
        },
    )]);
    {
        let mut tap = till.tap(&mut card).unwrap();
        assert_eq!(tap.settlement_acknowledged, None);
        assert_eq!(tap.card().velocity.unsettled_redeems, 2, "counters kept");
        let refused = tap.redeem(10).unwrap();
        assert!(matches!(
            refused,
            TillOutcome::Refused {
                decision: Decision::Refer(_),
                ..
            }
        ));
    }
    // The office's genuine acknowledgement works.
    till.set_settled([(
        id,
        SettledCounter {
            key_version: 1,
            counter: 3,
            issuer_mac: issuer_mac(&id, IssuerDecision::Settled(3)),
        },
    )]);
    let mut tap = till.tap(&mut card).unwrap();
    assert_eq!(tap.settlement_acknowledged, Some(3));
    approved(tap.redeem(10).unwrap());
}

/// A rogue till in an authenticated session sends ACKNOWLEDGE SETTLEMENT
/// with N = its counter: refused (`6988`), counters unchanged. A genuine
/// acknowledgement for another card is refused too.
#[test]
fn rogue_ack_settlement_refused() {
    let (mut card, _) = issued_card(306, 7);
    let mut t = test_terminal(7);
    let mut s = t.tap(&mut card).unwrap();
    s.earn(500).unwrap();
    s.redeem(100).unwrap();
    let n = s.card().counter;
    let err = s.acknowledge_settlement(n, [0x55; 8]).unwrap_err();
    assert!(
        matches!(
            err,
            TerminalError::Card {
                sw: StatusWord::BadMac,
                ..
            }
        ),
        "{err:?}"
    );
    drop(s);
    let mut s = t.tap(&mut card).unwrap();
    let other = issuer_mac(&card_id(999), IssuerDecision::Settled(n));
    assert!(s.acknowledge_settlement(n, other).is_err());
    drop(s);
    let v = card.state().unwrap().velocity;
    assert_eq!(
        (v.unsettled_redeems, v.unsettled_points, v.settled_counter),
        (1, 100, 0)
    );
}

/// A rogue till's raw session: SELECT and AUTHENTICATE with the
/// authentication master of a stolen bundle.
struct RawSession {
    channel: SecureChannel,
}

fn raw_session(card: &mut SimCard, id: &[u8; 8]) -> RawSession {
    let keys = IssuerKeys::test().unwrap();
    let sel = card
        .transmit(&Command::new(CLA_ISO, Ins::Select, 4, 0, AID.to_vec(), Some(256)).to_bytes())
        .unwrap();
    let sel = SelectResponse::parse(&sel[..sel.len() - 2]).unwrap();
    let host = [7u8; 8];
    let sk = SessionKeys::derive(&keys.card_auth_key(id), &host, &sel.card_challenge);
    let auth = AuthCommand {
        host_challenge: host,
        host_cryptogram: sk.host_cryptogram(),
    };
    let r = card
        .transmit(&Command::new(CLA_PROPRIETARY, Ins::Authenticate, 0, 0, auth.to_bytes(), Some(256)).to_bytes())
        .unwrap();
    assert_eq!(Response::parse(&r).unwrap().sw, StatusWord::Ok);
    RawSession {
        channel: SecureChannel::new(sk),
    }
}

/// UPDATE PROFILE with an unsigned blob at version 65535, from a rogue till
/// that bypasses the library's signature check: the card refuses it (no
/// issuer MAC), keeps its profile, and a genuine update still works.
#[test]
fn unsigned_update_profile_refused() {
    let (mut card, original) = issued_card(307, 8);
    let id = card_id(307);
    let mut p = anna();
    p.card_id = id;
    p.version = 65_535;
    // A well-formed blob whose "signature" is 64 zero bytes.
    let mut blob = p.body_bytes().unwrap();
    blob.extend_from_slice(&[0x5F, 0x37, 0x40]);
    blob.extend_from_slice(&[0; 64]);
    let mut raw = raw_session(&mut card, &id);
    let ciphertext = raw.channel.encrypt(&blob);
    let data = UpdateProfileCommand {
        ciphertext,
        issuer_mac: [0; 8],
    }
    .to_bytes();
    let cmd = raw
        .channel
        .protect_command(CLA_SECURE, Ins::UpdateProfile.into(), 0, 0, &data, Some(256));
    let answer = card.transmit(&cmd.to_bytes()).unwrap();
    assert_eq!(Response::parse(&answer).unwrap().sw, StatusWord::BadMac);
    assert_eq!(card.state().unwrap().profile, original.to_bytes(), "profile kept");

    // The office's genuine version 2 still reaches the card.
    let mut v2 = anna();
    v2.card_id = id;
    v2.version = 2;
    let v2 = IssuerKeys::test().unwrap().issuer.sign(&v2).unwrap();
    let mac = issuer_mac(&id, IssuerDecision::Profile(&v2.to_bytes()));
    let mut t = test_terminal(7);
    t.tap(&mut card).unwrap().update_profile(&v2, mac).unwrap();
    assert_eq!(card.state().unwrap().profile, v2.to_bytes());
}

fn production_keys() -> IssuerKeys {
    IssuerKeys::generate(2).unwrap()
}

fn production_till_terminal(keys: &IssuerKeys) -> Terminal<SoftwareSam, FixedClock> {
    // Through the bundle file, as a till gets it.
    let bundle = TerminalBundle::from_json(&keys.terminal_bundle(7, OfficeLink::PlainLoopback).to_json()).unwrap();
    Terminal::new(SoftwareSam::new(bundle.keys), FixedClock(TEST_TIME), 7)
}

/// A counterfeit card made with the public test keys (`tessera card issue`)
/// at a production till: refused before any AUTHENTICATE. One that lies
/// about its issuer and key version fails authentication and gets nothing.
/// A production bundle carrying the test identity is refused outright.
#[test]
fn counterfeit_test_key_card_refused_at_production_till() {
    let prod = production_keys();
    let (mut fake, _) = issued_card(308, 9);
    let mut t = production_till_terminal(&prod);
    assert!(matches!(t.tap(&mut fake), Err(TerminalError::NotSetUpForCard { .. })));
    assert_eq!(t.take_trace().labels(), ["SELECT"]);

    // A counterfeit that claims the production issuer and key version.
    let mut liar_keys = IssuerKeys::test().unwrap();
    liar_keys.issuer_id = prod.issuer_id;
    liar_keys.key_version = prod.key_version;
    let id = card_id(309);
    let mut liar = SimCard::manufacture(id, &liar_keys.card_perso_key(&id), Rng::seeded(10)).unwrap();
    let mut p = anna();
    p.card_id = id;
    personalize(&mut liar, &liar_keys, p, &IssueParams::default()).unwrap();
    let err = t.tap(&mut liar).err().unwrap();
    assert!(
        matches!(err, TerminalError::AuthRefused { .. } | TerminalError::NotGenuine),
        "{err:?}"
    );
    assert_eq!(liar.state().unwrap().counter, 0);

    // Production bundles never carry the test identity.
    let test_bundle = IssuerKeys::test()
        .unwrap()
        .terminal_bundle(7, OfficeLink::PlainLoopback)
        .to_json();
    assert!(TerminalBundle::from_json(&test_bundle).is_err());
    assert!(IssuerKeys::generate(1).is_err(), "key version 1 is the test keys'");
    assert!(!prod.is_test());
}

/// A till set up for another issuer (or key version) sends no AUTHENTICATE:
/// five taps at the wrong till burn no try, and the right till still works.
#[test]
fn wrong_keys_till_burns_no_try() {
    let office_a = production_keys();
    let office_b = production_keys();
    let id = card_id(310);
    let mut card = SimCard::manufacture(id, &office_b.card_perso_key(&id), Rng::seeded(11)).unwrap();
    let mut p = anna();
    p.card_id = id;
    personalize(&mut card, &office_b, p, &IssueParams::default()).unwrap();
    let mut wrong = production_till_terminal(&office_a);
    for _ in 0..5 {
        assert!(matches!(
            wrong.tap(&mut card),
            Err(TerminalError::NotSetUpForCard { .. })
        ));
    }
    assert!(wrong.take_trace().labels().iter().all(|l| *l == "SELECT"));
    assert_eq!(card.state().unwrap().auth_failures, 0);
    let mut right = production_till_terminal(&office_b);
    right.tap(&mut card).unwrap().earn(5).unwrap();
}

/// The card is pulled during the purchase after the card committed; the
/// clerk, told "tap again", runs the same command. One credit. The same for
/// a redemption. A genuinely new purchase is one explicit call away.
#[test]
fn pulled_card_identical_retry_credits_once() {
    let (mut card, _) = issued_card(311, 12);
    let dir = tempfile::tempdir().unwrap();
    let mut till = till(7, &dir);
    approved(till.tap(&mut card).unwrap().purchase(100_000, &[]).unwrap());
    for redeem in [false, true] {
        let before = balance(&card);
        // SELECT, AUTHENTICATE (profile cached), then the transaction: its
        // answer is lost after the card executed it.
        card.set_faults(Faults {
            lose_response_of_apdu: Some(3),
            ..Faults::default()
        });
        let err = {
            let mut tap = till.tap(&mut card).unwrap();
            if redeem {
                tap.redeem(30).unwrap_err()
            } else {
                tap.purchase(4200, &[]).unwrap_err()
            }
        };
        assert!(
            matches!(err, TillError::Terminal(TerminalError::Interrupted(_))),
            "{err:?}"
        );
        card.set_faults(Faults::default());
        card.insert().unwrap();
        let changed = i64::from(balance(&card)) - i64::from(before);
        assert_ne!(changed, 0, "the card executed it");
        // The identical retry.
        let mut tap = till.tap(&mut card).unwrap();
        assert_eq!(tap.completed_earlier.len(), 1);
        let again = if redeem {
            tap.redeem(30).unwrap()
        } else {
            tap.purchase(4200, &[]).unwrap()
        };
        assert!(matches!(again, TillOutcome::AlreadyDone { .. }), "{again:?}");
        drop(tap);
        assert_eq!(i64::from(balance(&card)) - i64::from(before), changed, "once");
        // The clerk confirms a new one: it goes through.
        let mut tap = till.tap(&mut card).unwrap();
        assert!(tap.completed_earlier.is_empty(), "resolved once, not again");
        approved(if redeem {
            tap.redeem(30).unwrap()
        } else {
            tap.purchase(4200, &[]).unwrap()
        });
    }
    // With the explicit opt-in, the same tap may go on.
    let before = balance(&card);
    card.set_faults(Faults {
        lose_response_of_apdu: Some(3),
        ..Faults::default()
    });
    let _ = till.tap(&mut card).unwrap().redeem(5).unwrap_err();
    card.set_faults(Faults::default());
    card.insert().unwrap();
    let mut tap = till.tap(&mut card).unwrap();
    tap.allow_repeat();
    approved(tap.redeem(5).unwrap());
    drop(tap);
    assert_eq!(before - balance(&card), 10);
}

/// Anyone in range locks a card with five random cryptograms; the issuer
/// unblocks it (the office's UNBLOCK through sync, delivered at the next
/// tap). A replayed or forged UNBLOCK does nothing.
#[test]
fn lock_then_issuer_unblock() {
    let (mut card, _) = issued_card(312, 13);
    let id = card_id(312);
    // The attacker: SELECT + AUTHENTICATE with a made-up cryptogram, 5 times.
    for _ in 0..5 {
        let sel = card
            .transmit(&Command::new(CLA_ISO, Ins::Select, 4, 0, AID.to_vec(), Some(256)).to_bytes())
            .unwrap();
        assert_eq!(sel[sel.len() - 2..], [0x90, 0x00]);
        let auth = AuthCommand {
            host_challenge: [1; 8],
            host_cryptogram: [2; 8],
        };
        card.transmit(&Command::new(CLA_PROPRIETARY, Ins::Authenticate, 0, 0, auth.to_bytes(), Some(256)).to_bytes())
            .unwrap();
    }
    let mut t = test_terminal(7);
    assert!(matches!(t.tap(&mut card), Err(TerminalError::AuthBlocked)));

    // A forged unblock: refused, still locked.
    t.set_unblocks([(
        id,
        Unblock {
            key_version: 1,
            seq: 1,
            issuer_mac: [0; 8],
        },
    )]);
    assert!(matches!(t.tap(&mut card), Err(TerminalError::AuthBlocked)));
    assert_eq!(card.state().unwrap().issuer_seq, 0);

    // The office's unblock opens the card at the next tap.
    let genuine = Unblock {
        key_version: 1,
        seq: 1,
        issuer_mac: issuer_mac(&id, IssuerDecision::Unblock(1)),
    };
    t.set_unblocks([(id, genuine)]);
    t.tap(&mut card).unwrap().earn(5).unwrap();
    assert!(t.unblocks().next().is_none(), "delivered and confirmed");
    let st = card.state().unwrap();
    assert_eq!((st.auth_failures, st.issuer_seq, st.balance), (0, 1, 5));

    // Replaying it after the card locks again does nothing.
    for _ in 0..5 {
        card.transmit(&Command::new(CLA_ISO, Ins::Select, 4, 0, AID.to_vec(), Some(256)).to_bytes())
            .unwrap();
        let auth = AuthCommand {
            host_challenge: [1; 8],
            host_cryptogram: [2; 8],
        };
        card.transmit(&Command::new(CLA_PROPRIETARY, Ins::Authenticate, 0, 0, auth.to_bytes(), Some(256)).to_bytes())
            .unwrap();
    }
    t.set_unblocks([(id, genuine)]);
    assert!(matches!(t.tap(&mut card), Err(TerminalError::AuthBlocked)));
    assert!(t.unblocks().next().is_none(), "a seen sequence is dropped");
    // Raw: the card answers 6A80 to a sequence it has seen, 6988 to a bad MAC.
    card.transmit(&Command::new(CLA_ISO, Ins::Select, 4, 0, AID.to_vec(), Some(256)).to_bytes())
        .unwrap();
    let replay = UnblockCommand {
        seq: 1,
        issuer_mac: genuine.issuer_mac,
    };
    let r = card
        .transmit(&Command::new(CLA_PROPRIETARY, Ins::Unblock, 0, 0, replay.to_bytes(), None).to_bytes())
        .unwrap();
    assert_eq!(r, [0x6A, 0x80]);
    // The next genuine one works.
    t.set_unblocks([(
        id,
        Unblock {
            key_version: 1,
            seq: 2,
            issuer_mac: issuer_mac(&id, IssuerDecision::Unblock(2)),
        },
    )]);
    t.tap(&mut card).unwrap();
    assert_eq!(card.state().unwrap().issuer_seq, 2);
}

/// KEY UPDATE (applet-spec §4.15): a rogue till cannot move a card to keys
/// of its own (it has no issuer key to MAC them, nor to encrypt them for
/// the card); the office's update moves the card once; a replay does
/// nothing; and a till without the new version's master does not deliver
/// it (the card would be unusable there).
#[test]
fn key_update_only_from_the_issuer() {
    let (mut card, _) = issued_card(313, 14);
    let id = card_id(313);
    let mut rotated = IssuerKeys::test().unwrap();
    rotated.rotate().unwrap();
    let update = rotated.key_update(&id, 1).unwrap().command;
    assert_eq!(update.key_version, 2);
    let mut t = Terminal::new(SoftwareSam::new(rotated.terminal_keys()), FixedClock(TEST_TIME), 7);

    // Forged: the genuine ciphertext with a made-up MAC, or made-up keys.
    let mut forged = update.clone();
    forged.issuer_mac = [0; 8];
    let err = t.tap(&mut card).unwrap().update_keys(&forged).unwrap_err();
    assert!(
        matches!(
            err,
            TerminalError::Card {
                sw: StatusWord::BadMac,
                ..
            }
        ),
        "{err:?}"
    );
    let mut junk = update.clone();
    junk.ciphertext = vec![0x42; 64];
    assert!(t.tap(&mut card).unwrap().update_keys(&junk).is_err());
    assert_eq!(card.state().unwrap().key_version, 1);

    // A till holding only version 1 does not deliver it.
    let mut old_till = test_terminal(8);
    let err = old_till.tap(&mut card).unwrap().update_keys(&update).unwrap_err();
    assert!(matches!(err, TerminalError::InvalidRequest(_)), "{err:?}");
    assert_eq!(card.state().unwrap().key_version, 1);

    // The office's update: the card moves, the session continues under the
    // new keys, certificates are made with the new K_cert.
    let receipt = {
        let mut s = t.tap(&mut card).unwrap();
        assert_eq!(s.update_keys(&update).unwrap(), 2);
        s.earn(5).unwrap()
    };
    assert_eq!(receipt.key_version, 2);
    rotated.certificate_verifier().verify(&id, 2, &receipt.record).unwrap();
    assert!(IssuerKeys::test()
        .unwrap()
        .certificate_verifier()
        .verify(&id, 2, &receipt.record)
        .is_err());
    // Replay: refused, nothing changes.
    let st = card.state().unwrap();
    let mut s = t.tap(&mut card).unwrap();
    assert!(matches!(s.update_keys(&update), Err(TerminalError::InvalidRequest(_))));
    drop(s);
    let mut raw = raw_session_keys(&mut card, &id, &rotated, 2);
    let cmd = raw
        .channel
        .protect_command(CLA_SECURE, Ins::KeyUpdate.into(), 0, 0, &update.to_bytes(), Some(256));
    let answer = card.transmit(&cmd.to_bytes()).unwrap();
    // Its MAC was made with the version-1 issuer key the card no longer has.
    assert_eq!(Response::parse(&answer).unwrap().sw, StatusWord::BadMac);
    assert_eq!(card.state().unwrap(), st);
    // The old till can no longer open the card, and spends no try on it.
    assert!(matches!(
        old_till.tap(&mut card),
        Err(TerminalError::NotSetUpForCard { key_version: 2, .. })
    ));
    assert_eq!(card.state().unwrap().auth_failures, 0);
}

fn raw_session_keys(card: &mut SimCard, id: &[u8; 8], keys: &IssuerKeys, version: u8) -> RawSession {
    let sel = card
        .transmit(&Command::new(CLA_ISO, Ins::Select, 4, 0, AID.to_vec(), Some(256)).to_bytes())
        .unwrap();
    let sel = SelectResponse::parse(&sel[..sel.len() - 2]).unwrap();
    assert_eq!(sel.key_version, version);
    let host = [9u8; 8];
    let sk = SessionKeys::derive(&keys.card_auth_key(id), &host, &sel.card_challenge);
    let auth = AuthCommand {
        host_challenge: host,
        host_cryptogram: sk.host_cryptogram(),
    };
    let r = card
        .transmit(&Command::new(CLA_PROPRIETARY, Ins::Authenticate, 0, 0, auth.to_bytes(), Some(256)).to_bytes())
        .unwrap();
    assert_eq!(Response::parse(&r).unwrap().sw, StatusWord::Ok);
    RawSession {
        channel: SecureChannel::new(sk),
    }
}
