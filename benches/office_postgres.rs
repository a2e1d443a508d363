//! 200 tills settling at once through `tessera office serve` processes, in
//! one run: one process on the embedded SQLite ledger, one process on
//! PostgreSQL, and two and four processes sharing one PostgreSQL.
//!
//! 200 tills (terminal ids 1…200), each with its own card and a batch of
//! 10 purchases (20 journal records), sealed with the test keys. For each
//! configuration, a fresh office directory with those terminals registered
//! (moved to a fresh PostgreSQL database with `office migrate` for the
//! PostgreSQL ones), then the server processes (`office serve --plain-http`
//! on loopback), then 200 client threads released together, till `i`
//! uploading its batch to server `i mod n` (`tessera_office::upload_batch`,
//! one connection each, retrying a `503` as a till does). Timed from the
//! release to the last acknowledgement; every batch must be acknowledged
//! `posted`, and the books are counted afterwards. Each configuration runs
//! five times, in turn; the median is printed, with the speed-up over one
//! PostgreSQL process.
//!
//! `cargo bench --bench office_postgres` runs it in full. Without `--bench`
//! (as `cargo test --all-targets` runs it) it does 8 tills, once, to prove
//! it still works.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use tessera_crypto::keys::{IssuerKeys, OfficeLink};
use tessera_crypto::rng::Rng;
use tessera_ledger::{Ledger, LedgerKeys, LedgerStore};
use tessera_ledger_pg::cluster::Cluster;
use tessera_ledger_pg::posting::PgLedger;
use tessera_office::RetryPolicy;
use tessera_simulator::SimCard;
use tessera_suite::office::Server;
use tessera_terminal::batch::{write_range, AckStatus};
use tessera_terminal::issuer::{personalize, IssueParams};
use tessera_terminal::journal::Journal;
use tessera_terminal::offers::CampaignSet;
use tessera_terminal::policy::{Hotlist, Policy};
use tessera_terminal::till::{Till, TillConfig};
use tessera_terminal::{FixedClock, SoftwareSam, Terminal};

const NOW: u32 = 1_790_000_000;
const PURCHASES: u32 = 10;

fn till_batch(work: &Path, keys: &IssuerKeys, id: u32) -> Vec<u8> {
    let mut cid = [0x7E, 0x57, 0xC1, 0, 0, 0, 0, 0];
    cid[4..].copy_from_slice(&id.to_be_bytes());
    let mut card = SimCard::manufacture(cid, &keys.card_perso_key(&cid), Rng::seeded(u64::from(id))).unwrap();
    personalize(&mut card, keys, tessera_suite::anna(), &IssueParams::default()).unwrap();
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

/// A fresh office directory with the test keys and `tills` terminals; its
/// books moved to `url` when given.
fn office(work: &Path, name: &str, tills: u32, url: Option<&str>) -> PathBuf {
    let dir = work.join(name);
    std::fs::create_dir(&dir).unwrap();
    let keys = IssuerKeys::test().unwrap();
    tessera_crypto::files::write_new_private(&dir.join("issuer-keys.json"), keys.to_json().as_bytes()).unwrap();
    let mut ledger = Ledger::open(&dir.join("ledger.sqlite"), LedgerKeys::from_issuer(&keys)).unwrap();
    for id in 1..=tills {
        ledger.register_terminal(id, NOW).unwrap();
    }
    drop(ledger);
    if let Some(url) = url {
        tessera_office::dir::OfficeDir::new(&dir)
            .migrate_to_postgres(url)
            .unwrap();
    }
    dir
}

/// Uploads every batch at once through `servers`; the time from the
/// release to the last acknowledgement.
fn settle_all(batches: &Arc<Vec<Vec<u8>>>, servers: &[Server]) -> Duration {
    let keys = IssuerKeys::test().unwrap();
    let urls: Vec<String> = servers.iter().map(Server::http).collect();
    let go = Arc::new(Barrier::new(batches.len() + 1));
    let workers: Vec<_> = (0..batches.len())
        .map(|i| {
            let (batches, go) = (Arc::clone(batches), Arc::clone(&go));
            let url = urls[i % urls.len()].clone();
            let bundle = keys.terminal_bundle(i as u32 + 1, OfficeLink::PlainLoopback);
            std::thread::spawn(move || {
                go.wait();
                let ack = tessera_office::upload_batch(&url, &batches[i], &bundle, &RetryPolicy::default()).unwrap();
                assert_eq!(ack.status, AckStatus::Posted);
            })
        })
        .collect();
    go.wait();
    let start = Instant::now();
    for w in workers {
        w.join().unwrap();
    }
    start.elapsed()
}

#[derive(Clone, Copy, PartialEq)]
enum Books {
    Sqlite,
    Postgres(usize),
}

/// CPU seconds (user and system) a process has used, from `/proc`.
fn cpu_of(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // After the command name in parentheses: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i - 3).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(14) + ticks(15)) / 100.0
}

/// CPU seconds used so far by every running PostgreSQL process (the
/// server and its backends: those of the servers measured live through the
/// run), and by `pids`.
fn cpu(pids: &[u32]) -> (f64, f64) {
    let mut pg = 0.0;
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.chars().all(|c| c.is_ascii_digit()) {
                continue;
            }
            let comm = std::fs::read_to_string(format!("/proc/{name}/comm")).unwrap_or_default();
            if comm.trim() == "postgres" {
                pg += cpu_of(&name);
            }
        }
    }
    let servers = pids.iter().map(|p| cpu_of(&p.to_string())).sum();
    (pg, servers)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (tills, rounds) = if full { (200u32, 5) } else { (8, 1) };
    let tills = std::env::var("TESSERA_BENCH_TILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(tills);
    let work = tempfile::tempdir().unwrap();
    let keys = IssuerKeys::test().unwrap();
    eprintln!("sealing {tills} batches of {PURCHASES} purchases…");
    let batches = Arc::new(
        (1..=tills)
            .map(|id| till_batch(work.path(), &keys, id))
            .collect::<Vec<_>>(),
    );
    let cluster = Cluster::start().unwrap();
    let configs = [
        Books::Sqlite,
        Books::Postgres(1),
        Books::Postgres(2),
        Books::Postgres(4),
    ];
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); configs.len()];
    // Per configuration and run: CPU seconds of PostgreSQL, of the
    // servers, of the clients (this process).
    let mut cpu_used: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); configs.len()];
    let mut n = 0;
    for _ in 0..rounds {
        for (c, books) in configs.iter().enumerate() {
            n += 1;
            let (url, processes) = match books {
                Books::Sqlite => (None, 1),
                Books::Postgres(p) => (Some(cluster.database(&format!("bench{n}")).unwrap()), *p),
            };
            let dir = office(work.path(), &format!("office{n}"), tills, url.as_deref());
            let servers: Vec<Server> = (0..processes)
                .map(|_| Server::start(&dir, &["--plain-http", "--max-uploads", "256"], &[]))
                .collect();
            let pids: Vec<u32> = servers.iter().map(Server::pid).collect();
            let before = (cpu(&pids), cpu_of("self"));
            let took = settle_all(&batches, &servers);
            let after = (cpu(&pids), cpu_of("self"));
            cpu_used[c].push((after.0 .0 - before.0 .0, after.0 .1 - before.0 .1, after.1 - before.1));
            drop(servers);
            // Every card record posted once.
            let posted = match &url {
                None => {
                    let l = Ledger::open_existing(&dir.join("ledger.sqlite"), LedgerKeys::from_issuer(&keys)).unwrap();
                    l.settled_counters().unwrap().iter().map(|(_, n)| *n).sum::<u32>()
                }
                Some(url) => {
                    let l = PgLedger::open(url, LedgerKeys::from_issuer(&keys)).unwrap();
                    l.settled_counters().unwrap().iter().map(|(_, n)| *n).sum::<u32>()
                }
            };
            assert_eq!(posted, tills * PURCHASES);
            times[c].push(took);
        }
    }
    let label = |b: &Books| match b {
        Books::Sqlite => "SQLite, 1 process".to_owned(),
        Books::Postgres(1) => "PostgreSQL, 1 process".to_owned(),
        Books::Postgres(p) => format!("PostgreSQL, {p} processes"),
    };
    let medians: Vec<Duration> = times.into_iter().map(median).collect();
    let pg1 = medians[1];
    println!(
        "{tills} tills x {PURCHASES} purchases ({} card records), uploaded at once, median of {rounds}:",
        tills * PURCHASES
    );
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    for ((b, m), used) in configs.iter().zip(&medians).zip(&cpu_used) {
        let n = used.len() as f64;
        let (pg, srv, cli) = used
            .iter()
            .fold((0.0, 0.0, 0.0), |a, u| (a.0 + u.0 / n, a.1 + u.1 / n, a.2 + u.2 / n));
        let wall = m.as_secs_f64();
        println!(
            "  {:<26} {:>7.3} s {:>7.0} records/s {:>5.2}x | CPU s: database {:.2}, servers {:.2}, clients {:.2}; {:.0}% of {cores} cores",
            label(b),
            wall,
            f64::from(tills * PURCHASES) / wall,
            pg1.as_secs_f64() / wall,
            pg,
            srv,
            cli,
            100.0 * (pg + srv + cli) / (wall * cores as f64),
        );
    }
}
