//! Settlement throughput through the office's HTTPS boundary against the
//! ledger in process, in the same run.
//!
//! 200 tills (terminal ids 1001…1200), each with its own card and a
//! journal of N purchases, seal one batch each; one more till (999) makes
//! the same purchases of the same 200 cards into one batch. Then, with the
//! same batch bytes:
//!
//! * **one batch**: a fresh ledger ingests till 999's single batch
//!   (`Ledger::ingest_send`) — the rate the others are compared with;
//! * **in process**: a fresh ledger ingests the 200 batches one after
//!   another (`Ledger::ingest_send`);
//! * **HTTPS**: a fresh ledger behind `tessera_office::spawn` on loopback
//!   with a new self-signed certificate and 200 threads, one per till,
//!   released together, each calling `upload_batch` with a bundle pinning
//!   the certificate (TLS handshake included, one connection each) — once
//!   with the default 32 upload slots (the others wait for one), once with
//!   a slot for every till;
//! * **as one group**, in between: a fresh ledger verifies the 200 batches
//!   on as many threads as the machine has (`BatchVerifier::verify`) and
//!   posts them with one commit (`Ledger::ingest_group`), which is what the
//!   server does with the uploads queued for its lock.
//!
//! Prints records per second, the ratio to the single batch, and the
//! median and p95 latency of one batch (ingestion alone in process; the
//! whole upload, retries included, over HTTPS), side by side — for small
//! batches (N = 10: 20 records a till) and a day's batches (N = 100).
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
use tessera_ledger::{Ledger, LedgerKeys, Upload};
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

/// One till's sealed batch: `n` purchases of each of `cards`.
fn batch(dir: &Path, keys: &IssuerKeys, id: u32, cards: &[u32], n: u32) -> Vec<u8> {
    let mut sims: Vec<SimCard> = cards
        .iter()
        .map(|c| {
            let cid = card_id(*c);
            let mut sim = SimCard::manufacture(cid, &keys.card_perso_key(&cid), Rng::seeded(u64::from(*c))).unwrap();
            personalize(&mut sim, keys, anna(), &IssueParams::default()).unwrap();
            sim
        })
        .collect();
    let path = dir.join(format!("till-{id}.sqlite"));
    let terminal = Terminal::new(SoftwareSam::new(keys.terminal_keys()), FixedClock(TEST_TIME), id)
        .with_store(id)
        .with_rng(Rng::seeded(u64::from(id)));
    let config = TillConfig {
        policy: Policy::default_policy(),
        hotlist: Hotlist::empty(),
        campaigns: CampaignSet::empty(),
        online: Default::default(),
    };
    let mut till = Till::new(terminal, Journal::open(&path, id).unwrap(), config).unwrap();
    for _ in 0..n {
        for sim in &mut sims {
            sim.insert().unwrap();
            till.tap(sim).unwrap().purchase(1_000, &[]).unwrap();
        }
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

fn count_records(b: &[u8]) -> usize {
    // Journal records: the header line and the MAC line aside.
    b.split(|c| *c == b'\n').filter(|l| !l.is_empty()).count() - 2
}

fn run(tills: u32, purchases: u32) {
    let work = tempfile::tempdir().unwrap();
    let keys = IssuerKeys::generate(2).unwrap();
    let ids: Vec<u32> = (1001..1001 + tills).collect();
    let start = Instant::now();
    let batches: Vec<Vec<u8>> = ids
        .iter()
        .map(|id| batch(work.path(), &keys, *id, &[*id], purchases))
        .collect();
    let single = batch(work.path(), &keys, 999, &ids, purchases);
    let records: usize = batches.iter().map(|b| count_records(b)).sum();
    assert_eq!(count_records(&single), records);
    let bytes: usize = batches.iter().map(Vec::len).sum();
    eprintln!(
        "{tills} batches, {records} records, {bytes} bytes (and one batch of the same) made in {:.1} s",
        start.elapsed().as_secs_f64()
    );

    // The same records as one batch.
    let mut l = ledger(work.path(), "single.sqlite", &keys, &[999]);
    let t = Instant::now();
    let outcome = l.ingest_send(&single[..], TEST_TIME + 60).unwrap();
    let single_wall = t.elapsed();
    assert_eq!(outcome.ack.status, AckStatus::Posted);
    assert_eq!(outcome.report.posted as usize * 2, records);
    drop(l);

    // In process, one batch after another.
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

    // In process, verified ahead on as many threads as the machine has,
    // then posted as one group (one commit): what the server does with a
    // queue of uploads.
    let mut l = ledger(work.path(), "group.sqlite", &keys, &ids);
    let t = Instant::now();
    let verifier = l.verifier();
    let threads = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let chunk = batches.len().div_ceil(threads);
    let verified: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = batches
            .chunks(chunk)
            .map(|part| {
                let verifier = verifier.clone();
                s.spawn(move || {
                    part.iter()
                        .map(|b| Upload::<&[u8]>::Verified(Box::new(verifier.verify(&b[..], 100_000).unwrap())))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    for outcome in l.ingest_group(verified, TEST_TIME + 60) {
        assert_eq!(outcome.unwrap().ack.status, AckStatus::Posted);
    }
    let group_wall = t.elapsed();
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
    let ratio = |wall: Duration| single_wall.as_secs_f64() / wall.as_secs_f64();
    println!();
    println!("{tills} tills × {purchases} purchases: {records} records");
    println!();
    println!("| path | wall | records/s | vs one batch | batch p50 | batch p95 |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| the same records as one batch, in process | {:.3} s | {:.0} | 1.00× | | |",
        single_wall.as_secs_f64(),
        rate(single_wall),
    );
    println!(
        "| {tills} batches in process, one after another | {:.3} s | {:.0} | {:.2}× | {} | {} |",
        local_wall.as_secs_f64(),
        rate(local_wall),
        ratio(local_wall),
        ms(percentile(&local, 0.5)),
        ms(percentile(&local, 0.95))
    );
    println!(
        "| {tills} batches in process, verified on {threads} threads, posted as one group | {:.3} s | {:.0} | {:.2}× | | |",
        group_wall.as_secs_f64(),
        rate(group_wall),
        ratio(group_wall),
    );
    println!(
        "| HTTPS, {tills} tills at once, {default_slots} upload slots (the rest wait) | {:.3} s | {:.0} | {:.2}× | {} | {} |",
        remote_wall.as_secs_f64(),
        rate(remote_wall),
        ratio(remote_wall),
        ms(percentile(&remote, 0.5)),
        ms(percentile(&remote, 0.95))
    );
    println!(
        "| HTTPS, {tills} tills at once, {tills} upload slots | {:.3} s | {:.0} | {:.2}× | {} | {} |",
        wide_wall.as_secs_f64(),
        rate(wide_wall),
        ratio(wide_wall),
        ms(percentile(&wide, 0.5)),
        ms(percentile(&wide, 0.95))
    );
}

fn main() {
    if std::env::args().any(|a| a == "--bench") {
        run(200, 10);
        run(200, 100);
    } else {
        run(4, 2);
    }
}
