//! Removal campaign (issue acceptance): 1,000 randomized transactions at
//! three tills over twenty cards, the card pulled away after every possible
//! APDU in turn, then re-taps at random tills. Afterwards, for every card,
//! the journals of all tills together explain the card exactly:
//!
//! * every card counter from 1 to the card's counter is journaled as a card
//!   transaction (completion or recovered) with the card's certificate —
//!   none missing;
//! * no counter is journaled twice with different content, and no journal
//!   holds the same counter twice; the same transaction may appear in two
//!   journals only as the identical record (a till that lost the answer
//!   journals the decision, the next till journals the card's record as
//!   recovered evidence; the ledger merges them by card id and counter);
//! * the sum of the journaled deltas equals the card's balance;
//! * every certificate verifies; every chain verifies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tessera_crypto::keys::{IssuerDecision, IssuerKeys};
use tessera_crypto::rng::Rng;
use tessera_protocol::messages::LogRecord;
use tessera_simulator::{Faults, PowerCut, SimCard};
use tessera_suite::issued_card;
use tessera_terminal::journal::{EntryKind, Journal};
use tessera_terminal::offers::CampaignSet;
use tessera_terminal::policy::{Hotlist, Policy};
use tessera_terminal::till::{SettledCounter, Till, TillConfig, TillError};
use tessera_terminal::{Clock, SoftwareSam, Terminal};

const CARDS: u32 = 20;
const TILLS: u32 = 3;
const TRANSACTIONS: u32 = 1_000;

/// A clock all tills share, advanced by the test.
#[derive(Clone)]
struct SharedClock(Arc<AtomicU32>);

impl Clock for SharedClock {
    fn now(&self) -> u32 {
        self.0.load(Ordering::SeqCst)
    }
}

fn policy() -> Policy {
    let mut p = Policy::default_policy();
    // Settlement is the next issue: here the offline velocity limits must
    // not stop a thousand transactions.
    p.velocity.max_offline_redeems = u32::MAX;
    p.velocity.max_offline_points = u32::MAX;
    p
}

fn till(dir: &std::path::Path, id: u32, clock: &SharedClock) -> Till<SoftwareSam, SharedClock> {
    let keys = IssuerKeys::test().unwrap();
    let journal = Journal::open(&dir.join(format!("till-{id}.sqlite")), id).unwrap();
    let terminal = Terminal::new(SoftwareSam::new(keys.terminal_keys()), clock.clone(), id)
        .with_store(id)
        .with_rng(Rng::seeded(u64::from(id)));
    let config = TillConfig {
        policy: policy(),
        hotlist: Hotlist::empty(),
        campaigns: CampaignSet::empty(),
        online: Default::default(),
    };
    Till::new(terminal, journal, config).unwrap()
}

#[test]
fn removal_campaign_journals_explain_every_card() {
    let dir = tempfile::tempdir().unwrap();
    let clock = SharedClock(Arc::new(AtomicU32::new(tessera_suite::TEST_TIME)));
    let mut tills: Vec<_> = (1..=TILLS).map(|id| till(dir.path(), 100 + id, &clock)).collect();
    let mut cards: Vec<SimCard> = (0..CARDS).map(|n| issued_card(n, 1000 + u64::from(n)).0).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(2026);

    let (mut interrupted, mut removed_before, mut approved, mut refused, mut cuts) = (0, 0, 0, 0, 0);
    let mut acks = 0;
    let mut pull_at = 0u64;
    for i in 0..TRANSACTIONS {
        clock.0.fetch_add(30, Ordering::SeqCst);
        let c = (rng.next_u32() % CARDS) as usize;
        let t = (rng.next_u32() % TILLS) as usize;
        let card = &mut cards[c];
        card.insert().unwrap();
        // Two transactions in three are disturbed: the card is pulled after
        // APDU 1, 2, 3, … in turn (its answer lost), or its power is cut at
        // a persistent write.
        match i % 3 {
            0 => card.set_faults(Faults::default()),
            1 => {
                pull_at = pull_at % 6 + 1;
                card.set_faults(Faults {
                    lose_response_of_apdu: Some(pull_at),
                    ..Faults::default()
                });
            }
            _ => {
                cuts += 1;
                let at_write = u64::from(rng.next_u32() % 24);
                card.set_faults(Faults {
                    power_cut: Some(PowerCut { at_write }),
                    ..Faults::default()
                });
            }
        }
        // One tap in seven also carries the office's settlement
        // acknowledgement (issuer-MAC'd) of the card's current counter, so
        // ACKNOWLEDGE SETTLEMENT meets the same pulls and power cuts.
        if i % 7 == 3 {
            let st = card.state().unwrap();
            let n = st.counter;
            tills[t].set_settled([(
                st.card_id,
                SettledCounter {
                    key_version: 1,
                    counter: n,
                    issuer_mac: tessera_suite::issuer_mac(&st.card_id, IssuerDecision::Settled(n)),
                },
            )]);
        }
        let op = rng.next_u32() % 10;
        let result = (|| -> Result<bool, TillError> {
            let mut tap = tills[t].tap(&mut *card)?;
            acks += usize::from(tap.settlement_acknowledged.is_some());
            let balance = tap.card().balance;
            let counter = tap.card().counter;
            let outcome = match op {
                0..=5 => {
                    let amount = u64::from(rng.next_u32() % 5_000 + 1);
                    let cats = if rng.next_u32() % 2 == 0 {
                        vec!["coffee".to_owned()]
                    } else {
                        Vec::new()
                    };
                    tap.purchase(amount, &cats)?
                }
                6..=8 => tap.redeem(rng.next_u32() % (balance / 2 + 2) + 1)?,
                _ if counter > 0 => tap.refund(rng.next_u32() % counter + 1)?,
                _ => tap.redeem(1)?,
            };
            Ok(matches!(outcome, tessera_terminal::till::TillOutcome::Approved { .. }))
        })();
        match result {
            Ok(true) => approved += 1,
            Ok(false) => refused += 1,
            Err(TillError::Terminal(tessera_terminal::TerminalError::Interrupted(_))) => interrupted += 1,
            Err(TillError::Terminal(_)) => removed_before += 1,
            Err(e) => panic!("transaction {i}: {e}"),
        }
    }

    // Re-taps at random tills: every card once, then every card at every
    // till that still has a pending decision for it.
    for card in cards.iter_mut() {
        card.set_faults(Faults::default());
        card.insert().unwrap();
        let t = (rng.next_u32() % TILLS) as usize;
        drop(tills[t].tap(&mut *card).unwrap());
    }
    for t in tills.iter_mut() {
        let pending = t.journal().pending().unwrap();
        for p in pending {
            let id = p.entry.card_id.clone().unwrap();
            let card = cards
                .iter_mut()
                .find(|c| hex::encode_upper(c.state().unwrap().card_id) == id)
                .unwrap();
            drop(t.tap(&mut *card).unwrap());
        }
    }

    // Every journal verifies; gather every card transaction.
    let verifier = IssuerKeys::test().unwrap().certificate_verifier();
    let mut seen: BTreeMap<(String, u32), LogRecord> = BTreeMap::new();
    let mut duplicates_across_tills = 0;
    let mut recovered = 0;
    let mut still_pending = Vec::new();
    for t in &tills {
        let j = t.journal();
        j.verify_chain().unwrap();
        still_pending.extend(j.pending().unwrap().into_iter().map(|p| (j.terminal_id(), p)));
        let mut mine: BTreeMap<(String, u32), ()> = BTreeMap::new();
        for r in j.records().unwrap() {
            if !matches!(r.entry.kind, EntryKind::Completion | EntryKind::Recovered) {
                continue;
            }
            recovered += usize::from(r.entry.kind == EntryKind::Recovered);
            let key = (r.entry.card_id.clone().unwrap(), r.entry.card_counter.unwrap());
            assert!(
                mine.insert(key.clone(), ()).is_none(),
                "till {} journaled {key:?} twice",
                j.terminal_id()
            );
            let rec = r.entry.card_record().unwrap();
            if let Some(prev) = seen.get(&key) {
                assert_eq!(prev, &rec, "{key:?} journaled with different content");
                duplicates_across_tills += 1;
            } else {
                seen.insert(key, rec);
            }
        }
    }
    for card in &cards {
        let st = card.state().unwrap();
        let id = hex::encode_upper(st.card_id);
        let mut balance: i64 = 0;
        for counter in 1..=st.counter {
            let rec = seen
                .get(&(id.clone(), counter))
                .unwrap_or_else(|| panic!("card {id} counter {counter} missing"));
            verifier.verify(&st.card_id, st.key_version, rec).unwrap();
            balance += rec.kind.delta(rec.amount);
            assert_eq!(
                balance,
                i64::from(rec.balance_after),
                "card {id} counter {counter}: delta chain"
            );
        }
        assert_eq!(balance, i64::from(st.balance), "card {id}");
        assert!(
            !seen.contains_key(&(id.clone(), st.counter + 1)),
            "card {id}: a counter beyond the card's"
        );
    }
    eprintln!(
        "{TRANSACTIONS} transactions: {approved} approved, {refused} refused by policy, {interrupted} interrupted \
         (outcome resolved later), {removed_before} failed before the transaction, {cuts} with a power cut armed; \
         {recovered} recovered records, {duplicates_across_tills} identical copies across tills, {} decisions \
         pending at their till, {acks} settlement acknowledgements",
        still_pending.len()
    );
    assert!(approved > 300 && interrupted > 50 && recovered > 0 && acks > 20);
    // Every card's settled counter only moved forward, never past its counter.
    for card in &cards {
        let st = card.state().unwrap();
        assert!(st.velocity.settled_counter <= st.counter);
    }
    // A decision can stay pending at its till when the card's log no longer
    // reaches back to it (eight newer transactions). The journals together
    // still decide it: the card transaction with that counter is journaled
    // somewhere, made by this till and sequence (it happened) or not (it
    // did not).
    for (till_id, p) in &still_pending {
        let key = (p.entry.card_id.clone().unwrap(), p.entry.card_counter.unwrap());
        let card = cards
            .iter()
            .find(|c| hex::encode_upper(c.state().unwrap().card_id) == key.0)
            .unwrap();
        if key.1 <= card.state().unwrap().counter {
            let rec = seen.get(&key).unwrap();
            let happened = rec.terminal_id == *till_id && rec.terminal_seq == p.seq;
            eprintln!(
                "pending decision {} at till {till_id}: decided by the journals ({})",
                p.seq,
                if happened { "done" } else { "not done" }
            );
        }
    }
}
