//! Benchmark: durable journal commits (`synchronous = FULL`, WAL) and
//! end-to-end till transactions in process.
//!
//! Run with `cargo bench -p tessera-terminal --bench journal`. The journal
//! lives in `$TMPDIR` (the machine's disk: fsync cost is the point).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use tessera_crypto::keys::IssuerKeys;
use tessera_crypto::rng::Rng;
use tessera_protocol::profile::{Date, Profile};
use tessera_simulator::SimCard;
use tessera_terminal::issuer::{personalize, IssueParams};
use tessera_terminal::journal::{Entry, EntryKind, Journal, Verdict};
use tessera_terminal::offers::CampaignSet;
use tessera_terminal::policy::{Hotlist, Policy};
use tessera_terminal::till::{Till, TillConfig, TillOutcome};
use tessera_terminal::{FixedClock, SoftwareSam, Terminal};

fn pct(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3
}

fn main() {
    // `cargo bench` passes --bench; under `cargo test` this is a smoke run.
    let full = std::env::args().any(|a| a == "--bench");
    let dir = std::env::temp_dir().join(format!("tessera-bench-journal-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    // 1. Raw durable appends.
    let n = if full { 2_000 } else { 50 };
    let mut j = Journal::open(&dir.join("append.sqlite"), 1).unwrap();
    let mut samples = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n as u32 {
        let mut e = Entry::new(EntryKind::Decision, 1_800_000_000 + i);
        e.card_id = Some("7E57000000000001".into());
        e.card_counter = Some(i + 1);
        e.tx_type = Some("earn".into());
        e.points = Some(12);
        e.verdict = Some(Verdict::Approve);
        let t = Instant::now();
        j.append(e).unwrap();
        samples.push(t.elapsed());
    }
    let total = start.elapsed();
    samples.sort();
    let t = Instant::now();
    j.verify_chain().unwrap();
    let verify = t.elapsed();

    // 2. End to end: tap, decide, journal, EARN, journal — in process.
    let keys = IssuerKeys::test().unwrap();
    let id = [0x7E, 0x57, 0, 0, 0, 0, 0, 2];
    let mut card = SimCard::manufacture(id, &keys.card_perso_key(&id), Rng::seeded(1)).unwrap();
    let profile = Profile {
        card_id: id,
        version: 1,
        name: "Bench".into(),
        birth_date: Date {
            year: 1990,
            month: 1,
            day: 1,
        },
        home_city: String::new(),
        household: [0; 8],
        preferences: vec![],
        tier: 0,
        valid_from: Date {
            year: 2026,
            month: 1,
            day: 1,
        },
        valid_until: Date {
            year: 2030,
            month: 1,
            day: 1,
        },
    };
    personalize(&mut card, &keys, profile, &IssueParams::default()).unwrap();
    let terminal = Terminal::new(SoftwareSam::new(keys.terminal_keys()), FixedClock(1_795_780_800), 9);
    let journal = Journal::open(&dir.join("till.sqlite"), 9).unwrap();
    let config = TillConfig {
        policy: Policy::default_policy(),
        hotlist: Hotlist::empty(),
        campaigns: CampaignSet::empty(),
        online: Default::default(),
    };
    let mut till = Till::new(terminal, journal, config).unwrap();
    let m = if full { 500 } else { 20 };
    let mut tx_samples = Vec::with_capacity(m);
    let start2 = Instant::now();
    for _ in 0..m {
        let t = Instant::now();
        let mut tap = till.tap(&mut card).unwrap();
        let out = tap.purchase(1_000, &[]).unwrap();
        assert!(matches!(out, TillOutcome::Approved { .. }));
        drop(tap);
        tx_samples.push(t.elapsed());
    }
    let total2 = start2.elapsed();
    tx_samples.sort();
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "Tessera journal benchmark (SQLite WAL, synchronous=FULL, in {})",
        std::env::temp_dir().display()
    );
    println!();
    println!("durable append ({n} records, one transaction each)");
    println!(
        "  commit latency median / p99 : {:.3} ms / {:.3} ms",
        pct(&samples, 0.5),
        pct(&samples, 0.99)
    );
    println!("  commits per second          : {:.0}", n as f64 / total.as_secs_f64());
    println!(
        "  chain verification          : {:.1} ms for {n} records",
        verify.as_secs_f64() * 1e3
    );
    println!("end-to-end till purchase ({m}, in-process card: decision + EARN + completion)");
    println!(
        "  latency median / p99        : {:.3} ms / {:.3} ms",
        pct(&tx_samples, 0.5),
        pct(&tx_samples, 0.99)
    );
    println!("  transactions per second     : {:.0}", m as f64 / total2.as_secs_f64());
    println!(
        "target: p99 commit under 10 ms: {}",
        if pct(&samples, 0.99) < 10.0 { "met" } else { "NOT met" }
    );
}
