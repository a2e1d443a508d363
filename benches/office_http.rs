//! Settlement throughput through the office's HTTPS boundary against the
//! ledger in process, in the same run.
//!
//! 200 tills (terminal ids 1001…1200), each with its own card and a
//! journal of 10 purchases, seal one batch each. Then, with the same batch
//! bytes:
//!
//! * **in process**: a fresh ledger ingests the 200 batches one after
//!   another (`Ledger::ingest_send`, what the server runs per upload);
//! * **HTTPS**: a fresh ledger behind `tessera_office::spawn` on loopback
//!   with a new self-signed certificate and 200 threads, one per till,
//!   released together, each calling `upload_batch` with a bundle pinning
//!   the certificate (TLS handshake included, one connection each) — once
//!   with the default 32 upload slots (the others answered 503 and retried
//!   by the client's backoff), once with a slot for every till.
//!
//! Prints records per second and the median and p95 latency of one batch
//! (ingestion alone in process; the whole upload, retries included, over
//! HTTPS), side by side.
//!
//! `cargo bench --bench office_http` runs it in full. Without `--bench`
//! (as `cargo test --all-targets` runs it) it does 4 tills of 2 purchases,
//! to prove it still works.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use tessera_crypto::keys::{IssuerKeys, OfficeLink};
use tessera_crypto::rng::Rng;
use tessera_ledger::{Ledger, LedgerKeys};
use tessera_office::{OfficeIdentity, RetryPolicy, ServerConfig, Transport};
use tessera_simulator::SimCard;
use tessera_suite::{anna, card_id, TEST_TIME};
use tessera_terminal::batch::{write_range, AckStatus};
use tessera_terminal::issuer::{personalize, IssueParams};
use tessera_terminal::journal::Journal;
use tessera_terminal::offers::CampaignSet;
use tessera_terminal::policy::{Hotlist, Policy};
use tessera_terminal::till::{Till, TillConfig};
use tessera_terminal::{FixedClock, SoftwareSam, Terminal};

/// One till's sealed batch: `n` purchases of its own card.
fn batch(dir: &Path, keys: &IssuerKeys, id: u32, n: u32) -> Vec<u8> {
    let cid = card_id(id);
    let mut sim = SimCard::manufacture(cid, &keys.card_perso_key(&cid), Rng::seeded(u64::from(id))).unwrap();
    personalize(&mut sim, keys, anna(), &IssueParams::default()).unwrap();
    let path = dir.join(format!("till-{id}.sqlite"));
    let terminal = Terminal::new(SoftwareSam::new(keys.terminal_keys()), FixedClock(TEST_TIME), id)
        .with_store(id)
        .with_rng(Rng::seeded(u64::from(id)));
    let config = TillConfig {
        policy: Policy::default_policy(),
        hotlist: Hotlist::empty(),
        campaigns: CampaignSet::empty(),
    };
    let mut till = Till::new(terminal, Journal::open(&path, id).unwrap(), config).unwrap();
    for _ in 0..n {
        sim.insert().unwrap();
        till.tap(&mut sim).unwrap().purchase(1_000, &[]).unwrap();
    }
    drop(till);
    let mut j = Journal::open(&path, id).unwrap();
    let range = j.seal_next(TEST_TIME).unwrap().expect("records to settle");
    let mut out = Vec::new();
    write_range(&j, &keys.terminal_batch_key(id), &range, &mut out).unwrap();
    out
}

fn ledger(dir: &Path, name: &str, keys: &IssuerKeys, tills: &[u32]) -> Ledger {
    let mut l = Ledger::open(&dir.join(name), LedgerKeys::from_issuer(keys)).unwrap();
    for id in tills {
        l.register_terminal(*id, TEST_TIME).unwrap();
    }
    l
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (tills, purchases) = if full { (200u32, 10u32) } else { (4, 2) };
    let work = tempfile::tempdir().unwrap();
    let keys = IssuerKeys::generate(2).unwrap();
    let ids: Vec<u32> = (1001..1001 + tills).collect();
    let start = Instant::now();
    let batches: Vec<Vec<u8>> = ids.iter().map(|id| batch(work.path(), &keys, *id, purchases)).collect();
    // Journal records per batch: the header line and the MAC line aside.
    let records: usize = batches
        .iter()
        .map(|b| b.split(|c| *c == b'\n').filter(|l| !l.is_empty()).count() - 2)
        .sum();
    let bytes: usize = batches.iter().map(Vec::len).sum();
    eprintln!(
        "{tills} batches, {records} records, {bytes} bytes made in {:.1} s",
        start.elapsed().as_secs_f64()
    );

    // In process.
    let mut l = ledger(work.path(), "inproc.sqlite", &keys, &ids);
    let mut local = Vec::new();
    let t = Instant::now();
    for b in &batches {
        let one = Instant::now();
        let outcome = l.ingest_send(&b[..], TEST_TIME + 60).unwrap();
        assert_eq!(outcome.ack.status, AckStatus::Posted);
        local.push(one.elapsed());
    }
    let local_wall = t.elapsed();
    drop(l);

    // Over HTTPS: with the default upload slots (32; the rest are told to
    // retry), and with a slot for every till.
    let https = |slots: usize, name: &str| -> (Duration, Vec<Duration>) {
        let identity = OfficeIdentity::generate(&[]).unwrap();
        let pin = identity.cert_sha256();
        let mut config = ServerConfig::new(Transport::Tls(identity.server_config().unwrap()));
        config.request_log = false;
        config.max_concurrent_uploads = slots;
        let server = tessera_office::spawn(
            ledger(work.path(), name, &keys, &ids),
            IssuerKeys::from_json(&keys.to_json()).unwrap(),
            "127.0.0.1:0".parse().unwrap(),
            config,
        )
        .unwrap();
        let url = format!("https://{}", server.addr());
        let go = Arc::new(Barrier::new(ids.len() + 1));
        let workers: Vec<_> = ids
            .iter()
            .zip(batches.iter().cloned())
            .map(|(id, b)| {
                let bundle = keys.terminal_bundle(*id, OfficeLink::Pinned { cert_sha256: pin });
                let (url, go) = (url.clone(), Arc::clone(&go));
                std::thread::spawn(move || {
                    go.wait();
                    let one = Instant::now();
                    let ack = tessera_office::upload_batch(&url, &b, &bundle, &RetryPolicy::default()).unwrap();
                    assert_eq!(ack.status, AckStatus::Posted);
                    one.elapsed()
                })
            })
            .collect();
        go.wait();
        let t = Instant::now();
        let mut each: Vec<Duration> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        let wall = t.elapsed();
        server.stop().unwrap();
        each.sort();
        (wall, each)
    };
    let default_slots = tessera_office::server::DEFAULT_MAX_UPLOADS;
    let (remote_wall, remote) = https(default_slots, "https.sqlite");
    let (wide_wall, wide) = https(ids.len(), "https-wide.sqlite");

    local.sort();
    let rate = |wall: Duration| records as f64 / wall.as_secs_f64();
    println!("| path | tills | records | wall | records/s | batch p50 | batch p95 |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| in process, one batch after another | {tills} | {records} | {:.2} s | {:.0} | {} | {} |",
        local_wall.as_secs_f64(),
        rate(local_wall),
        ms(percentile(&local, 0.5)),
        ms(percentile(&local, 0.95))
    );
    println!(
        "| HTTPS, {tills} tills at once, {default_slots} upload slots (503 + retry beyond) | {tills} | {records} | {:.2} s | {:.0} | {} | {} |",
        remote_wall.as_secs_f64(),
        rate(remote_wall),
        ms(percentile(&remote, 0.5)),
        ms(percentile(&remote, 0.95))
    );
    println!(
        "| HTTPS, {tills} tills at once, {tills} upload slots | {tills} | {records} | {:.2} s | {:.0} | {} | {} |",
        wide_wall.as_secs_f64(),
        rate(wide_wall),
        ms(percentile(&wide, 0.5)),
        ms(percentile(&wide, 0.95))
    );
    println!(
        "HTTPS / in process: {:.2}× the wall time",
        remote_wall.as_secs_f64() / local_wall.as_secs_f64()
    );
}
