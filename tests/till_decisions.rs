//! Every decline and referral reason, produced at a till, shown with its
//! clerk message, journaled with its code; a hotlisted card is blocked on
//! the card itself.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use tessera_crypto::keys::IssuerKeys;
use tessera_protocol::messages::Lifecycle;
use tessera_simulator::SimCard;
use tessera_suite::{issued_card, TEST_TIME};
use tessera_terminal::journal::{EntryKind, Journal, Verdict};
use tessera_terminal::offers::CampaignSet;
use tessera_terminal::policy::{Decision, Hotlist, Policy};
use tessera_terminal::till::{Till, TillConfig, TillError, TillOutcome};
use tessera_terminal::{Clock, SoftwareSam, Terminal, TerminalError};

#[derive(Clone)]
struct SharedClock(Arc<AtomicU32>);

impl Clock for SharedClock {
    fn now(&self) -> u32 {
        self.0.load(Ordering::SeqCst)
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    clock: SharedClock,
    till: Till<SoftwareSam, SharedClock>,
}

fn setup(hotlist: Hotlist) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let clock = SharedClock(Arc::new(AtomicU32::new(TEST_TIME)));
    let keys = IssuerKeys::test().unwrap();
    let journal = Journal::open(&dir.path().join("j.sqlite"), 7).unwrap();
    let terminal = Terminal::new(SoftwareSam::new(keys.terminal_keys()), clock.clone(), 7);
    let config = TillConfig {
        policy: Policy::default_policy(),
        hotlist,
        campaigns: CampaignSet::empty(),
        online: Default::default(),
    };
    Setup {
        _dir: dir,
        clock,
        till: Till::new(terminal, journal, config).unwrap(),
    }
}

fn refused(outcome: TillOutcome, code: &str) -> Decision {
    match outcome {
        TillOutcome::Refused { decision, .. } => {
            assert_eq!(decision.code(), code, "{decision:?}");
            assert!(!decision.message().is_empty());
            eprintln!("{code}: {}", decision.message());
            decision
        }
        other => panic!("expected {code}, got {other:?}"),
    }
}

fn last_decision_code(till: &Till<SoftwareSam, SharedClock>) -> (Verdict, String) {
    let r = till
        .journal()
        .records()
        .unwrap()
        .into_iter()
        .rev()
        .find(|r| r.entry.kind == EntryKind::Decision)
        .unwrap();
    (r.entry.verdict.unwrap(), r.entry.reason.unwrap_or_default())
}

fn card(n: u32) -> SimCard {
    issued_card(n, u64::from(n)).0
}

#[test]
fn hotlisted_card_is_declined_blocked_and_journaled() {
    let mut c = card(60);
    let id = c.state().unwrap().card_id;
    let mut s = setup(Hotlist {
        version: 3,
        cards: [id].into_iter().collect(),
    });
    assert!(matches!(s.till.tap(&mut c), Err(TillError::Hotlisted)));
    assert_eq!(c.state().unwrap().lifecycle, Lifecycle::Blocked);
    assert_eq!(last_decision_code(&s.till), (Verdict::Decline, "D01".into()));
    // The card now refuses every till, hotlist or not.
    let mut other = setup(Hotlist::empty());
    assert!(matches!(
        other.till.tap(&mut c),
        Err(TillError::Terminal(TerminalError::CardBlocked))
    ));
    assert_eq!(
        Decision::Decline(tessera_terminal::policy::DeclineReason::Hotlisted).message(),
        "Card blocked — please keep the card and call the office"
    );
    s.till.journal().verify_chain().unwrap();
}

#[test]
fn every_decline_and_referral_reason() {
    let mut s = setup(Hotlist::empty());
    let mut c = card(61);

    // D02, D03: the profile is valid 2026-01-01 to 2030-12-31.
    s.clock.0.store(1_924_992_000 + 86_400 * 2, Ordering::SeqCst); // 2031-01-03
    refused(s.till.tap(&mut c).unwrap().purchase(1000, &[]).unwrap(), "D02");
    s.clock.0.store(1_764_547_200, Ordering::SeqCst); // 2025-12-01
    refused(s.till.tap(&mut c).unwrap().purchase(1000, &[]).unwrap(), "D03");
    s.clock.0.store(TEST_TIME, Ordering::SeqCst);

    let mut t = s.till.tap(&mut c).unwrap();
    // 0.50 earns no point: a sale approved with 0 points, the card untouched.
    assert!(matches!(
        t.purchase(50, &[]).unwrap(),
        TillOutcome::ApprovedNoPoints { .. }
    ));
    refused(t.redeem(0).unwrap(), "D04"); // nothing to redeem
    refused(t.purchase(100_000_000, &[]).unwrap(), "R05"); // above the offline purchase limit: referred
    refused(t.purchase(600_000, &[]).unwrap(), "R06"); // 6000 points > the earn cap: referred
    refused(t.redeem(10_001).unwrap(), "D07");
    refused(t.redeem(1).unwrap(), "D08");
    for _ in 0..5 {
        assert!(matches!(
            t.purchase(450_000, &[]).unwrap(),
            TillOutcome::Approved { .. }
        ));
    }
    let TillOutcome::Approved { receipt, .. } = t.redeem(10_000).unwrap() else {
        panic!()
    };
    let original = receipt.record.counter;
    assert!(matches!(t.refund(original).unwrap(), TillOutcome::Approved { .. }));
    refused(t.refund(original).unwrap(), "D09");
    refused(t.refund(999).unwrap(), "D10");
    assert!(matches!(t.redeem(10_000).unwrap(), TillOutcome::Approved { .. }));
    // 20,000 points redeemed offline since the last settlement: one more is referred.
    refused(t.redeem(1).unwrap(), "R02");
    drop(t);
    assert_eq!(last_decision_code(&s.till), (Verdict::Refer, "R02".into()));

    // R01: a sixth redemption between settlements.
    let mut c2 = card(62);
    let mut t = s.till.tap(&mut c2).unwrap();
    assert!(matches!(
        t.purchase(100_000, &[]).unwrap(),
        TillOutcome::Approved { .. }
    ));
    for _ in 0..5 {
        assert!(matches!(t.redeem(10).unwrap(), TillOutcome::Approved { .. }));
    }
    refused(t.redeem(10).unwrap(), "R01");
    drop(t);

    // R03: this till's clock is an hour behind the card's last transaction.
    s.clock.0.store(TEST_TIME - 3_600, Ordering::SeqCst);
    refused(s.till.tap(&mut c2).unwrap().purchase(1000, &[]).unwrap(), "R03");

    // Every refusal is journaled with its code, and the chain holds.
    let codes: Vec<String> = s
        .till
        .journal()
        .records()
        .unwrap()
        .into_iter()
        .filter(|r| r.entry.kind == EntryKind::Decision && r.entry.verdict != Some(Verdict::Approve))
        .map(|r| r.entry.reason.unwrap())
        .collect();
    for code in [
        "D02", "D03", "D04", "R05", "R06", "D07", "D08", "D09", "D10", "R01", "R02", "R03",
    ] {
        assert!(codes.iter().any(|c| c == code), "{code} not journaled: {codes:?}");
    }
    s.till.journal().verify_chain().unwrap();
}
