//! 200 tills settling at once into one PostgreSQL ledger through one, two
//! and four connections, in one run: how the posting core scales with
//! posting servers on this machine.
//!
//! 200 tills (terminal ids 1…200), each with its own card and a batch of
//! 10 purchases (a day's batch of a quiet till), sealed with the test keys.
//! On a fresh database each time, the 200 batches are posted by 1, 2 and 4
//! threads, each with its own connection (each thread a posting server:
//! `tessera_ledger_pg::posting`, verification included), taking batches
//! from one queue. Prints the wall time, card records per second and the
//! speed-up over one connection.
//!
//! This measures the posting core against one PostgreSQL server: no HTTP,
//! no TLS (`benches/office_postgres.rs` measures `office serve` processes).
//!
//! `cargo bench -p tessera-ledger-pg --bench concurrent` runs it in full.
//! Without `--bench` (as `cargo test --all-targets` runs it) it does 4
//! tills, to prove it still works.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tessera_crypto::keys::IssuerKeys;
use tessera_crypto::rng::Rng;
use tessera_ledger::LedgerKeys;
use tessera_ledger_pg::cluster::Cluster;
use tessera_ledger_pg::posting::PgLedger;
use tessera_simulator::SimCard;
use tessera_terminal::batch::write_range;
use tessera_terminal::issuer::{personalize, IssueParams};
use tessera_terminal::journal::Journal;
use tessera_terminal::offers::CampaignSet;
use tessera_terminal::policy::{Hotlist, Policy};
use tessera_terminal::till::{Till, TillConfig};
use tessera_terminal::{FixedClock, SoftwareSam, Terminal};

const NOW: u32 = 1_790_000_000;
const PURCHASES: u32 = 10;

fn till_batch(work: &Path, keys: &IssuerKeys, id: u32) -> Vec<u8> {
    let mut cid = [0x7E, 0x57, 0xC0, 0, 0, 0, 0, 0];
    cid[4..].copy_from_slice(&id.to_be_bytes());
    let mut card = SimCard::manufacture(cid, &keys.card_perso_key(&cid), Rng::seeded(u64::from(id))).unwrap();
    let profile = tessera_protocol::profile::Profile {
        card_id: cid,
        version: 1,
        name: format!("Customer {id}"),
        birth_date: tessera_protocol::profile::Date::new(1990, 1, 2).unwrap(),
        home_city: "Lyon".into(),
        household: [0; 8],
        preferences: vec![],
        tier: 0,
        valid_from: tessera_protocol::profile::Date::new(2020, 1, 1).unwrap(),
        valid_until: tessera_protocol::profile::Date::new(2035, 12, 31).unwrap(),
    };
    personalize(&mut card, keys, profile, &IssueParams::default()).unwrap();
    let terminal =
        Terminal::new(SoftwareSam::new(keys.terminal_keys()), FixedClock(NOW), id).with_rng(Rng::seeded(u64::from(id)));
    let config = TillConfig {
        policy: Policy::default_policy(),
        hotlist: Hotlist::empty(),
        campaigns: CampaignSet::empty(),
        online: Default::default(),
    };
    let mut till = Till::new(
        terminal,
        Journal::open(&work.join(format!("t{id}.sqlite")), id).unwrap(),
        config,
    )
    .unwrap();
    for i in 0..PURCHASES {
        card.insert().unwrap();
        till.tap(&mut card)
            .unwrap()
            .purchase(1_000 + u64::from(i) * 10, &[])
            .unwrap();
    }
    let range = till.journal_mut().seal_next(NOW).unwrap().unwrap();
    let mut out = Vec::new();
    write_range(till.journal(), &keys.terminal_batch_key(id), &range, &mut out).unwrap();
    out
}

fn run(url: &str, batches: &[Vec<u8>], threads: usize, tills: u32) -> Duration {
    let mut setup = PgLedger::open(url, LedgerKeys::from_issuer(&IssuerKeys::test().unwrap())).unwrap();
    for id in 1..=tills {
        setup.register_terminal(id, NOW).unwrap();
    }
    let queue = Arc::new(Mutex::new(batches.to_vec()));
    let go = Arc::new(std::sync::Barrier::new(threads + 1));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (queue, go, url) = (Arc::clone(&queue), Arc::clone(&go), url.to_owned());
            std::thread::spawn(move || {
                let mut l = PgLedger::open(&url, LedgerKeys::from_issuer(&IssuerKeys::test().unwrap())).unwrap();
                go.wait();
                loop {
                    let Some(b) = queue.lock().unwrap().pop() else { break };
                    l.ingest(&b, NOW).unwrap();
                }
            })
        })
        .collect();
    go.wait();
    let start = Instant::now();
    for w in workers {
        w.join().unwrap();
    }
    let took = start.elapsed();
    let posted: i64 = setup
        .client()
        .unwrap()
        .query_one("SELECT count(*) FROM card_transactions WHERE status = 'posted'", &[])
        .unwrap()
        .get(0);
    assert_eq!(posted, i64::from(tills * PURCHASES));
    took
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let tills: u32 = if full { 200 } else { 4 };
    let work = tempfile::tempdir().unwrap();
    let keys = IssuerKeys::test().unwrap();
    let t = Instant::now();
    let batches: Vec<Vec<u8>> = (1..=tills).map(|id| till_batch(work.path(), &keys, id)).collect();
    println!(
        "{tills} tills, one batch of {PURCHASES} purchases each, made in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let cluster = Cluster::start().unwrap();
    let records = f64::from(tills * PURCHASES);
    let mut one = None;
    println!("| posting connections | {tills} batches posted in | card records/s | speed-up over one |");
    println!("|---|---|---|---|");
    for threads in [1usize, 2, 4] {
        let url = cluster.database(&format!("c{threads}")).unwrap();
        let took = run(&url, &batches, threads, tills);
        let first = *one.get_or_insert(took);
        println!(
            "| {threads} | {:.3} s | {:.0} | {:.2} |",
            took.as_secs_f64(),
            records / took.as_secs_f64(),
            first.as_secs_f64() / took.as_secs_f64()
        );
    }
}
