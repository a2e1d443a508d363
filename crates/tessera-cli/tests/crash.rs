//! The terminal process killed with SIGKILL at random points during a run
//! of transactions: the journal always opens intact with its chain
//! verified, and the next tap of each card brings the journal level with it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use tessera_crypto::rng::Rng;
use tessera_simulator::SimCard;
use tessera_terminal::journal::{EntryKind, Journal};

fn tessera(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tessera"));
    c.env("TESSERA_TERMINAL_DIR", dir.join("terminal"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

#[test]
fn sigkill_at_random_points_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cards: Vec<_> = (1..=2).map(|n| dir.path().join(format!("card{n}.json"))).collect();
    for (n, card) in cards.iter().enumerate() {
        let ok = tessera(dir.path())
            .args([
                "card",
                "issue",
                "--card",
                card.to_str().unwrap(),
                "--name",
                "Kill Test",
                "--birth-date",
                "1980-01-01",
            ])
            .args(["--card-id", &format!("7E5700000000C0{n:02}")])
            .status()
            .unwrap();
        assert!(ok.success());
        // A first purchase so that redemptions have points to spend.
        let ok = tessera(dir.path())
            .args([
                "pos",
                "earn",
                "--test-keys",
                "--card",
                card.to_str().unwrap(),
                "--amount",
                "2000",
            ])
            .status();
        assert!(ok.unwrap().success());
    }
    let journal_path = dir.path().join("terminal/journal.sqlite");
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    // How long one transaction takes here: kills are spread over that time.
    let t0 = std::time::Instant::now();
    for _ in 0..3 {
        let ok = tessera(dir.path())
            .args([
                "pos",
                "earn",
                "--test-keys",
                "--card",
                cards[0].to_str().unwrap(),
                "--amount",
                "1.00",
            ])
            .status();
        assert!(ok.unwrap().success());
    }
    // The machine's pace moves while the test runs (other work, a cold
    // cache for the first runs): the span follows it, shorter after a run
    // that ended before its kill, longer after one that was killed, so
    // the kills keep landing inside runs whatever the load.
    let mut span = (t0.elapsed() / 3).as_micros().max(1) as u64;
    let mut killed = 0;
    for i in 0..80 {
        let card = &cards[(next() % 2) as usize];
        let mut cmd = tessera(dir.path());
        if i % 3 == 2 {
            cmd.args([
                "pos",
                "redeem",
                "--test-keys",
                "--card",
                card.to_str().unwrap(),
                "--points",
                "5",
            ]);
        } else {
            cmd.args([
                "pos",
                "earn",
                "--test-keys",
                "--card",
                card.to_str().unwrap(),
                "--amount",
                "3.00",
            ]);
        }
        let mut child = cmd.spawn().unwrap();
        // Start-up is the first third of a run; aim at the rest.
        std::thread::sleep(Duration::from_micros(span * 3 / 10 + next() % (span * 8 / 10).max(1)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            killed += 1;
            span += span / 20;
        } else {
            span = (span - span / 8).max(1_000);
        }
        child.wait().unwrap();
        // Whatever the moment, the journal opens and its chain verifies.
        let j = Journal::open(&journal_path, 1).unwrap();
        j.verify_chain().unwrap_or_else(|e| panic!("after run {i}: {e}"));
    }
    // Enough kills land mid-way for the test to mean something; how many
    // depends on the machine's load (a busy machine stretches start-up).
    assert!(
        killed >= 12,
        "only {killed} of 80 runs were killed mid-way (one run takes {span} µs)"
    );

    // Recovery: the next tap of each card.
    for card in &cards {
        assert!(tessera(dir.path())
            .args(["pos", "read", "--test-keys", "--card", card.to_str().unwrap()])
            .status()
            .unwrap()
            .success());
    }
    let j = Journal::open(&journal_path, 1).unwrap();
    j.verify_chain().unwrap();
    assert!(
        j.pending().unwrap().is_empty(),
        "every interrupted decision was resolved"
    );
    let records = j.records().unwrap();
    let voided = records.iter().filter(|r| r.entry.kind == EntryKind::Void).count();
    let recovered = records.iter().filter(|r| r.entry.kind == EntryKind::Recovered).count();
    for card in &cards {
        let st = SimCard::open(card, Rng::seeded(1)).unwrap().state().unwrap();
        let id = hex::encode_upper(st.card_id);
        let mut balance = 0i64;
        for counter in 1..=st.counter {
            let mut txs = records.iter().filter(|r| {
                matches!(r.entry.kind, EntryKind::Completion | EntryKind::Recovered)
                    && r.entry.card_id.as_deref() == Some(id.as_str())
                    && r.entry.card_counter == Some(counter)
            });
            let tx = txs
                .next()
                .unwrap_or_else(|| panic!("card {id}: counter {counter} not journaled"));
            assert!(txs.next().is_none(), "card {id}: counter {counter} journaled twice");
            balance += tx.entry.delta().unwrap();
        }
        assert_eq!(balance, i64::from(st.balance), "card {id}");
    }
    eprintln!("{killed} of 80 runs killed; {recovered} transactions recovered, {voided} decisions voided");
}
