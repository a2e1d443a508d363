//! The office's HTTP boundary over real sockets: `tessera office serve`
//! as a process, terminals through `tessera_office`'s client or raw
//! TCP/TLS.
//!
//! * TLS: a pinned bundle reaches its office and no other (a server with
//!   another certificate is refused before anything is sent); plain HTTP
//!   only on loopback and only by explicit choice on both sides.
//! * Spool before lock: a genuine till trickling its batch a byte at a
//!   time delays no other till's settlement; one overall deadline per
//!   upload (not an idle timeout); a bounded number of uploads (`503` with
//!   `Retry-After` beyond); a keyless flood writes nothing to the ledger
//!   and shows in `/metrics` only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_crypto::keys::{IssuerKeys, OfficeLink, TerminalBundle};
use tessera_crypto::rng::Rng;
use tessera_office::{fetch_sync, upload_batch, ClientError, RetryPolicy};
use tessera_simulator::SimCard;
use tessera_suite::office::{log_path, Server};
use tessera_suite::pcscd::tessera_bin;
use tessera_suite::{anna, card_id, TEST_TIME};
use tessera_terminal::batch::{write_range, AckStatus};
use tessera_terminal::issuer::{personalize, IssueParams};
use tessera_terminal::journal::Journal;
use tessera_terminal::offers::CampaignSet;
use tessera_terminal::policy::{Hotlist, Policy};
use tessera_terminal::till::{Till, TillConfig};
use tessera_terminal::{FixedClock, SoftwareSam, Terminal};

fn tessera(args: &[&str]) -> std::process::Output {
    Command::new(tessera_bin()).args(args).output().unwrap()
}

fn tessera_ok(args: &[&str]) {
    let out = tessera(args);
    assert!(
        out.status.success(),
        "tessera {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A new office in `dir/name` with terminals registered; returns its path.
fn office(dir: &Path, name: &str) -> PathBuf {
    let office = dir.join(name);
    tessera_ok(&["office", "init", "--dir", office.to_str().unwrap()]);
    office
}

/// Exports terminal `id`'s bundle (`--plain-http` if `plain`).
fn bundle(office: &Path, id: u32, plain: bool) -> TerminalBundle {
    let out = office.with_file_name(format!(
        "{}-t{id}-{plain}.json",
        office.file_name().unwrap().to_str().unwrap()
    ));
    let id = id.to_string();
    let mut args = vec![
        "office",
        "export-terminal",
        "--dir",
        office.to_str().unwrap(),
        "--terminal-id",
        &id,
        "--out",
        out.to_str().unwrap(),
    ];
    if plain {
        args.push("--plain-http");
    }
    tessera_ok(&args);
    TerminalBundle::from_json(&std::fs::read_to_string(out).unwrap()).unwrap()
}

#[test]
fn a_pinned_bundle_reaches_its_office_only_and_plain_http_stays_on_loopback() {
    let work = tempfile::tempdir().unwrap();
    let ours = office(work.path(), "ours");
    let theirs = office(work.path(), "theirs");
    let pinned = bundle(&ours, 7, false);
    let plain = bundle(&ours, 7, true);
    assert!(matches!(pinned.office, OfficeLink::Pinned { .. }));
    assert_eq!(plain.office, OfficeLink::PlainLoopback);

    let server = Server::start(&ours, &[], &[]);
    let sync = fetch_sync(&server.https(), &pinned, &RetryPolicy::once()).unwrap();
    assert_eq!(sync.terminal_id, 7);
    // Plain HTTP to a TLS office does not even get an answer; a pinned
    // bundle refuses http:// itself, an unpinned one refuses https://.
    assert!(fetch_sync(&server.http(), &plain, &RetryPolicy::once()).is_err());
    assert!(matches!(
        fetch_sync(&server.http(), &pinned, &RetryPolicy::once()),
        Err(ClientError::Insecure(_))
    ));
    assert!(matches!(
        fetch_sync(&server.https(), &plain, &RetryPolicy::once()),
        Err(ClientError::Insecure(_))
    ));

    // Another office (another certificate) on the same address space: the
    // handshake fails on the pin and it is not retried.
    let impostor = Server::start(&theirs, &[], &[]);
    let start = std::time::Instant::now();
    let refused = fetch_sync(&impostor.https(), &pinned, &RetryPolicy::default());
    assert!(matches!(refused, Err(ClientError::Untrusted(_))), "{refused:?}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "a wrong certificate is not retried"
    );

    // Plain HTTP by explicit choice, on loopback only.
    drop(server);
    let server = Server::start(&ours, &["--plain-http"], &[]);
    assert_eq!(
        fetch_sync(&server.http(), &plain, &RetryPolicy::once())
            .unwrap()
            .terminal_id,
        7
    );
    let out = tessera(&[
        "office",
        "serve",
        "--dir",
        ours.to_str().unwrap(),
        "--listen",
        "0.0.0.0:0",
        "--plain-http",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(matches!(
        fetch_sync("http://192.0.2.1:8420", &plain, &RetryPolicy::once()),
        Err(ClientError::Insecure(_))
    ));

    // An office without a certificate (made before TLS) neither serves nor
    // exports a pinned bundle until `office tls-cert` makes one, once.
    let old = office(work.path(), "old");
    std::fs::remove_file(old.join("office-cert.pem")).unwrap();
    std::fs::remove_file(old.join("office-key.pem")).unwrap();
    let o = old.to_str().unwrap();
    let serve = tessera(&["office", "serve", "--dir", o, "--listen", "127.0.0.1:0"]);
    assert_eq!(serve.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&serve.stderr).contains("office tls-cert"));
    let out = work.path().join("old-7.json");
    let export = [
        "office",
        "export-terminal",
        "--dir",
        o,
        "--terminal-id",
        "7",
        "--out",
        out.to_str().unwrap(),
    ];
    assert_eq!(tessera(&export).status.code(), Some(4));
    assert!(!out.exists());
    tessera_ok(&["office", "tls-cert", "--dir", o]);
    assert_eq!(tessera(&["office", "tls-cert", "--dir", o]).status.code(), Some(1));
    tessera_ok(&export);
    assert!(matches!(
        TerminalBundle::from_json(&std::fs::read_to_string(&out).unwrap())
            .unwrap()
            .office,
        OfficeLink::Pinned { .. }
    ));
}

/// A sealed batch of `n` purchases by terminal `id` on card `card` (issued
/// with the office's keys), as the till would upload it.
fn batch(dir: &Path, keys: &IssuerKeys, id: u32, card: u32, n: u32) -> Vec<u8> {
    let cid = card_id(card);
    let mut sim = SimCard::manufacture(cid, &keys.card_perso_key(&cid), Rng::seeded(u64::from(card))).unwrap();
    personalize(&mut sim, keys, anna(), &IssueParams::default()).unwrap();
    let path = dir.join(format!("till-{id}.sqlite"));
    let journal = Journal::open(&path, id).unwrap();
    let terminal = Terminal::new(SoftwareSam::new(keys.terminal_keys()), FixedClock(TEST_TIME), id)
        .with_store(id)
        .with_rng(Rng::seeded(u64::from(id)));
    let config = TillConfig {
        policy: Policy::default_policy(),
        hotlist: Hotlist::empty(),
        campaigns: CampaignSet::empty(),
        online: Default::default(),
    };
    let mut till = Till::new(terminal, journal, config).unwrap();
    for _ in 0..n {
        sim.insert().unwrap();
        let mut tap = till.tap(&mut sim).unwrap();
        tap.purchase(1_000, &[]).unwrap();
    }
    drop(till);
    let mut j = Journal::open(&path, id).unwrap();
    let range = j.seal_next(TEST_TIME).unwrap().expect("records to settle");
    let mut out = Vec::new();
    write_range(&j, &keys.terminal_batch_key(id), &range, &mut out).unwrap();
    out
}

/// Rows of every table of the ledger.
fn row_counts(office: &Path) -> Vec<(String, i64)> {
    let db =
        rusqlite::Connection::open_with_flags(office.join("ledger.sqlite"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let tables: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    tables
        .into_iter()
        .map(|t| {
            let n = db
                .query_row(&format!("SELECT COUNT(*) FROM \"{t}\""), [], |r| r.get(0))
                .unwrap();
            (t, n)
        })
        .collect()
}

/// The header MAC of a batch, hex, as the till sends it.
fn header_mac(batch: &[u8], bundle: &TerminalBundle) -> String {
    let first = batch.split(|b| *b == b'\n').next().unwrap();
    let header: tessera_terminal::batch::Header = serde_json::from_slice(first).unwrap();
    hex::encode(header.mac(&bundle.batch_key))
}

/// Opens a raw upload: the request head announcing `len` bytes.
fn open_upload(addr: &str, len: usize, mac: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let head = format!(
        "POST /v1/batches HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-ndjson\r\nContent-Length: {len}\r\nTessera-Batch-Mac: {mac}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    s
}

/// Reads an HTTP answer to its end: status, headers and body.
fn answer(mut s: TcpStream) -> (u16, String) {
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no answer: {text:?}"))
        .parse()
        .unwrap();
    (status, text)
}

fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    answer(s)
}

/// Checks the Prometheus text format line by line and returns the
/// samples (`name{labels}` → value).
fn prometheus(text: &str) -> std::collections::BTreeMap<String, f64> {
    let body = text.split("\r\n\r\n").nth(1).unwrap();
    let mut samples = std::collections::BTreeMap::new();
    for line in body.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix('#') {
            assert!(
                rest.starts_with(" HELP ") || rest.starts_with(" TYPE "),
                "comment line {line:?}"
            );
            continue;
        }
        let (name, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("sample {line:?}"));
        let metric = name.split('{').next().unwrap();
        assert!(
            !metric.is_empty()
                && metric
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "metric name {line:?}"
        );
        if let Some(labels) = name.strip_prefix(metric) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "{line:?}"
            );
        }
        samples.insert(
            name.to_owned(),
            value.parse::<f64>().unwrap_or_else(|_| panic!("value {line:?}")),
        );
    }
    samples
}

#[test]
fn a_trickling_till_delays_nobody_and_a_keyless_flood_writes_nothing() {
    let work = tempfile::tempdir().unwrap();
    let office = office(work.path(), "office");
    let keys = IssuerKeys::from_json(&std::fs::read_to_string(office.join("issuer-keys.json")).unwrap()).unwrap();
    let slow = bundle(&office, 7, true);
    let quick = bundle(&office, 8, true);
    let slow_batch = batch(work.path(), &keys, 7, 1, 3);
    let quick_batch = batch(work.path(), &keys, 8, 2, 3);
    let server = Server::start(&office, &["--plain-http", "--upload-deadline", "120"], &[]);
    let addr = server.addr.clone();

    // Terminal 7 sends its (authenticated) header at once, then one byte
    // every two seconds.
    let header_len = slow_batch.iter().position(|b| *b == b'\n').unwrap() + 1;
    let mut s = open_upload(&addr, slow_batch.len(), &header_mac(&slow_batch, &slow));
    s.write_all(&slow_batch[..header_len]).unwrap();
    let slow_done = Arc::new(AtomicBool::new(false));
    let trickler = {
        let slow_done = Arc::clone(&slow_done);
        let body = slow_batch.clone();
        std::thread::spawn(move || {
            for b in &body[header_len..header_len + 5] {
                std::thread::sleep(Duration::from_secs(2));
                s.write_all(std::slice::from_ref(b)).unwrap();
            }
            s.write_all(&body[header_len + 5..]).unwrap();
            let answer = answer(s);
            slow_done.store(true, Ordering::SeqCst);
            answer
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    // Terminal 8 settles meanwhile, through the client, and is done long
    // before terminal 7 has finished sending.
    let start = Instant::now();
    let ack = upload_batch(&server.http(), &quick_batch, &quick, &RetryPolicy::once()).unwrap();
    assert_eq!(ack.status, AckStatus::Posted);
    assert!(
        !slow_done.load(Ordering::SeqCst),
        "terminal 8's settlement finished before the trickling upload"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "terminal 8 waited {:?} behind a trickling upload",
        start.elapsed()
    );
    let (status, text) = trickler.join().unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"posted\""), "{text}");

    // A keyless flood: no MAC, wrong MACs for a real header, junk; sync
    // requests without a valid MAC. Nothing is written to the ledger.
    let before = row_counts(&office);
    let (_, metrics_before) = get(&addr, "/metrics");
    let metrics_before = prometheus(&metrics_before);
    let fresh = batch(work.path(), &keys, 7, 1, 1);
    for i in 0..60u32 {
        let mac = match i % 3 {
            0 => String::new(),
            1 => hex::encode(i.to_be_bytes().repeat(4)),
            _ => "zz".to_owned(),
        };
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let extra = if mac.is_empty() {
            String::new()
        } else {
            format!("Tessera-Batch-Mac: {mac}\r\n")
        };
        write!(
            s,
            "POST /v1/batches HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
            fresh.len()
        )
        .unwrap();
        let _ = s.write_all(&fresh);
        let (status, text) = answer(s);
        assert_eq!(status, 401, "{text}");
        let (status, _) = get(
            &addr,
            &format!(
                "/v1/sync?terminal=7&nonce={:08x}&time={TEST_TIME}&mac={}",
                i,
                "00".repeat(16)
            ),
        );
        assert_eq!(status, 401);
    }
    assert_eq!(row_counts(&office), before, "a keyless flood wrote to the ledger");
    let (status, metrics_after) = get(&addr, "/metrics");
    assert_eq!(status, 200);
    let after = prometheus(&metrics_after);
    let moved = |name: &str| after.get(name).copied().unwrap_or(0.0) - metrics_before.get(name).copied().unwrap_or(0.0);
    assert_eq!(moved("tessera_http_unauthenticated_total{route=\"/v1/batches\"}"), 60.0);
    assert_eq!(moved("tessera_http_unauthenticated_total{route=\"/v1/sync\"}"), 60.0);
    assert_eq!(
        moved("tessera_http_requests_total{route=\"/v1/batches\",status=\"401\"}"),
        60.0
    );
    assert_eq!(after["tessera_batches_total{status=\"posted\"}"], 2.0);
    assert_eq!(after["tessera_upload_duration_seconds_count"], 2.0);
    // The trickled upload's ten seconds of sleeps are in the duration,
    // less however late the server started its clock after the header
    // (a loaded machine: tens of milliseconds), never a fraction of them.
    assert!(
        after["tessera_upload_duration_seconds_sum"] >= 8.0,
        "the trickled upload's time is counted: {}",
        after["tessera_upload_duration_seconds_sum"]
    );
    assert_eq!(after["tessera_uploads_in_flight"], 0.0);
    assert!(after["tessera_http_received_bytes_total"] >= (slow_batch.len() + quick_batch.len()) as f64);
}

#[test]
fn one_deadline_per_upload_and_a_bounded_number_of_uploads() {
    let work = tempfile::tempdir().unwrap();
    let office = office(work.path(), "office");
    let keys = IssuerKeys::from_json(&std::fs::read_to_string(office.join("issuer-keys.json")).unwrap()).unwrap();
    let slow = bundle(&office, 7, true);
    let quick = bundle(&office, 8, true);
    let slow_batch = batch(work.path(), &keys, 7, 1, 2);
    let quick_batch = batch(work.path(), &keys, 8, 2, 2);
    let server = Server::start(
        &office,
        &["--plain-http", "--upload-deadline", "3", "--max-uploads", "1"],
        &[],
    );
    let before = row_counts(&office);
    // A byte a second never lets an idle timeout fire, but the upload's
    // one deadline does: 408, nothing written.
    let header_len = slow_batch.iter().position(|b| *b == b'\n').unwrap() + 1;
    let mut s = open_upload(&server.addr, slow_batch.len(), &header_mac(&slow_batch, &slow));
    s.write_all(&slow_batch[..header_len]).unwrap();
    let start = Instant::now();
    let writer = {
        let mut s = s.try_clone().unwrap();
        let body = slow_batch[header_len..].to_vec();
        std::thread::spawn(move || {
            for b in body.iter().take(8) {
                std::thread::sleep(Duration::from_secs(1));
                if s.write_all(std::slice::from_ref(b)).is_err() {
                    break;
                }
            }
        })
    };
    // Meanwhile the only upload slot is taken: an authenticated upload is
    // told to come back later.
    std::thread::sleep(Duration::from_millis(500));
    let mut busy = open_upload(&server.addr, quick_batch.len(), &header_mac(&quick_batch, &quick));
    let _ = busy.write_all(&quick_batch);
    let (status, text) = answer(busy);
    assert_eq!(status, 503, "{text}");
    assert!(text.to_ascii_lowercase().contains("retry-after: 5"), "{text}");
    let (status, text) = answer(s);
    assert_eq!(status, 408, "{text}");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(8),
        "{took:?}"
    );
    writer.join().unwrap();
    assert_eq!(row_counts(&office), before, "nothing of a timed-out upload was written");
    // The slot is free again.
    let ack = upload_batch(&server.http(), &quick_batch, &quick, &RetryPolicy::once()).unwrap();
    assert_eq!(ack.status, AckStatus::Posted);
    // /metrics counted both.
    let m = prometheus(&get(&server.addr, "/metrics").1);
    assert_eq!(m["tessera_uploads_timed_out_total"], 1.0);
    assert_eq!(m["tessera_uploads_busy_total"], 1.0);
}

/// A raw `GET /v1/sync` signed with `bundle`'s key: the bytes on the wire.
fn raw_sync(addr: &str, bundle: &TerminalBundle, nonce: &[u8]) -> (u16, String) {
    let time = u32::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    let mac = hex::encode(tessera_office::request_mac(
        &bundle.batch_key,
        bundle.terminal_id,
        time,
        nonce,
    ));
    get(
        addr,
        &format!(
            "/v1/sync?terminal={}&nonce={}&time={time}&mac={mac}",
            bundle.terminal_id,
            hex::encode(nonce)
        ),
    )
}

#[test]
fn the_sync_feed_is_readable_by_its_terminal_only_and_acknowledged_items_stop() {
    let work = tempfile::tempdir().unwrap();
    let office = office(work.path(), "office");
    let o = office.to_str().unwrap();
    let card = work.path().join("anna.card");
    tessera_ok(&[
        "office",
        "issue",
        "--dir",
        o,
        "--card",
        card.to_str().unwrap(),
        "--card-id",
        "7E57000000000A01",
        "--name",
        "Анна Петрова",
        "--birth-date",
        "1990-03-14",
        "--city",
        "Нижний Новгород",
    ]);
    tessera_ok(&[
        "office",
        "update-profile",
        "--dir",
        o,
        "--card",
        "7E57000000000A01",
        "--name",
        "Анна Петрова",
        "--birth-date",
        "1990-03-14",
        "--city",
        "Казань",
    ]);
    tessera_ok(&["office", "unblock", "--dir", o, "--card", "7E57000000000A01"]);
    // Only a card the office issued can be hotlisted.
    tessera_ok(&[
        "office",
        "issue",
        "--dir",
        o,
        "--card",
        work.path().join("stolen.card").to_str().unwrap(),
        "--card-id",
        "7E57000000000B02",
        "--name",
        "Борис",
        "--birth-date",
        "1980-01-01",
    ]);
    tessera_ok(&[
        "office",
        "hotlist",
        "add",
        "--dir",
        o,
        "--card",
        "7E57000000000B02",
        "--reason",
        "stolen",
    ]);
    let t7 = bundle(&office, 7, true);
    let t8 = bundle(&office, 8, true);
    let server = Server::start(&office, &["--plain-http"], &[]);

    // On the wire: no card id, no profile, no hotlisted card in clear.
    let (status, text) = raw_sync(&server.addr, &t7, &[1; 16]);
    assert_eq!(status, 200, "{text}");
    let body = text.split("\r\n\r\n").nth(1).unwrap();
    for secret in [
        "7E57000000000A01",
        "7e57000000000a01",
        "7E57000000000B02",
        "Казань",
        "Анна",
    ] {
        assert!(!body.contains(secret), "{secret} in clear: {body}");
    }
    let sealed: tessera_office::SyncEnvelope = serde_json::from_str(body).unwrap();
    assert_eq!(sealed.format, "tessera-sync-3");
    // Terminal 8's keys do not open terminal 7's feed.
    assert!(sealed.open(&t8.batch_key, 7, &sealed.nonce).is_err());
    let feed = sealed.open(&t7.batch_key, 7, &hex::encode([1; 16])).unwrap();
    assert_eq!(feed.profile_updates.len(), 1);
    assert_eq!(feed.unblocks.len(), 1);
    assert_eq!(feed.hotlist.cards, ["7E57000000000B02"]);
    // Two answers to the same feed differ (fresh IV).
    let (_, again) = raw_sync(&server.addr, &t7, &[2; 16]);
    let again: tessera_office::SyncEnvelope = serde_json::from_str(again.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_ne!(again.iv, sealed.iv);

    // A forged acknowledgement (terminal 8's key claiming terminal 7, or a
    // body changed after signing) records nothing.
    let before = row_counts(&office);
    let ack = tessera_office::SyncAck::of(
        &feed,
        &[tessera_office::AckProfile {
            card_id: "7E57000000000A01".into(),
            version: feed.profile_updates[0].version,
        }],
    );
    let mut forged = TerminalBundle::from_json(&t8.to_json()).unwrap();
    forged.terminal_id = 7;
    assert!(matches!(
        tessera_office::ack_sync(&server.http(), &forged, &ack, &RetryPolicy::once()),
        Err(ClientError::Refused { status: 401, .. })
    ));
    let body = serde_json::to_vec(&ack).unwrap();
    let time = u32::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    let mac = hex::encode(tessera_office::ack_mac(&t7.batch_key, 7, time, &[3; 16], b"{}"));
    let mut s = TcpStream::connect(&server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST /v1/sync/ack?terminal=7&nonce={}&time={time}&mac={mac} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        hex::encode([3; 16]),
        body.len()
    )
    .unwrap();
    s.write_all(&body).unwrap();
    assert_eq!(answer(s).0, 401);
    assert_eq!(
        row_counts(&office),
        before,
        "a forged acknowledgement recorded something"
    );

    // The genuine one is recorded; terminal 7 no longer gets those items,
    // terminal 8 still does.
    assert_eq!(
        tessera_office::ack_sync(&server.http(), &t7, &ack, &RetryPolicy::once()).unwrap(),
        2
    );
    assert_eq!(
        tessera_office::ack_sync(&server.http(), &t7, &ack, &RetryPolicy::once()).unwrap(),
        0,
        "recorded once"
    );
    let after = fetch_sync(&server.http(), &t7, &RetryPolicy::once()).unwrap();
    assert!(
        after.profile_updates.is_empty() && after.unblocks.is_empty(),
        "{after:?}"
    );
    assert_eq!(
        after.hotlist.cards,
        ["7E57000000000B02"],
        "the hotlist is always served"
    );
    let other = fetch_sync(&server.http(), &t8, &RetryPolicy::once()).unwrap();
    assert_eq!((other.profile_updates.len(), other.unblocks.len()), (1, 1));

    // `pos sync` acknowledges what it wrote: terminal 8's second sync gets
    // nothing new and keeps its files.
    let term = work.path().join("till8");
    let b8 = office.with_file_name("office-t8-true.json");
    let sync = || {
        let out = Command::new(tessera_bin())
            .args([
                "pos",
                "sync",
                "--server",
                &server.http(),
                "--keys",
                b8.to_str().unwrap(),
                "--json",
            ])
            .env("TESSERA_TERMINAL_DIR", &term)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let first = sync();
    assert_eq!(first["profile_updates"], 1, "{first}");
    assert_eq!(first["unblocks"], 1, "{first}");
    assert_eq!(first["acknowledged"], true, "{first}");
    let second = sync();
    assert_eq!(second["profile_updates"], 0, "{second}");
    assert_eq!(second["unblocks"], 0, "{second}");
    assert!(term.join("profile-updates/7E57000000000A01.json").exists());
    let unblocks: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(term.join("unblocks.json")).unwrap()).unwrap();
    assert!(unblocks["cards"]["7E57000000000A01"].is_object(), "kept: {unblocks}");
    let m = prometheus(&get(&server.addr, "/metrics").1);
    assert_eq!(m["tessera_sync_acks_total"], 3.0);

    // One log line per request, key=value, with the terminal when it
    // authenticated; no card id, name, city or MAC in it.
    drop(server);
    let log = std::fs::read_to_string(log_path(&office)).unwrap();
    let lines: Vec<&str> = log.lines().filter(|l| l.starts_with("ts=")).collect();
    assert!(lines.len() >= 10, "{log}");
    for l in &lines {
        for key in [
            "method=",
            "route=",
            "status=",
            "terminal=",
            "bytes_in=",
            "bytes_out=",
            "ms=",
        ] {
            assert!(l.contains(key), "{l}");
        }
        for secret in ["7E57", "7e57", "Анна", "Казань", "mac="] {
            assert!(!l.contains(secret), "{secret} logged: {l}");
        }
    }
    assert!(lines
        .iter()
        .any(|l| l.contains("route=/v1/sync/ack status=200 terminal=7")));
    assert!(lines
        .iter()
        .any(|l| l.contains("route=/v1/sync/ack status=401 terminal=-")));
}

/// Many tills at once, one of them forged: every genuine batch is posted
/// exactly once (verified beside the others, posted by whichever upload
/// holds the ledger, commits shared), the forged one is refused alone, and
/// with one upload slot the others wait for it instead of being sent away.
#[test]
fn concurrent_uploads_post_once_each_and_a_forged_one_alone() {
    let work = tempfile::tempdir().unwrap();
    let office = office(work.path(), "office");
    let keys = IssuerKeys::from_json(&std::fs::read_to_string(office.join("issuer-keys.json")).unwrap()).unwrap();
    let tills: Vec<u32> = (21..=32).collect();
    let bundles: Arc<Vec<TerminalBundle>> = Arc::new(tills.iter().map(|id| bundle(&office, *id, true)).collect());
    let batches: Vec<Vec<u8>> = tills.iter().map(|id| batch(work.path(), &keys, *id, *id, 3)).collect();
    let server = Server::start(&office, &["--plain-http", "--max-uploads", "1"], &[]);
    let url = server.http();
    let go = Arc::new(std::sync::Barrier::new(tills.len() + 1));
    let workers: Vec<_> = batches
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, mut b)| {
            let (url, go, bundles) = (url.clone(), Arc::clone(&go), Arc::clone(&bundles));
            std::thread::spawn(move || {
                let bundle = &bundles[i];
                if i == 5 {
                    // The batch's closing MAC altered: the header MAC
                    // (sent beside it) still verifies, the batch does not.
                    let at = b.iter().rposition(|c| *c == b'"').unwrap();
                    b[at - 1] ^= 1;
                }
                go.wait();
                upload_batch(&url, &b, bundle, &RetryPolicy::once())
            })
        })
        .collect();
    go.wait();
    let results: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    for (i, r) in results.iter().enumerate() {
        if i == 5 {
            assert!(r.is_err(), "the forged batch is refused: {r:?}");
        } else {
            assert_eq!(r.as_ref().unwrap().status, AckStatus::Posted, "till {}", tills[i]);
        }
    }
    let m = prometheus(&get(&server.addr, "/metrics").1);
    assert_eq!(m["tessera_uploads_busy_total"], 0.0, "with one slot, the others waited");
    assert_eq!(m["tessera_batches_total{status=\"posted\"}"], (tills.len() - 1) as f64);
    assert_eq!(m["tessera_ledger_committed_uploads_total"], tills.len() as f64);
    assert!(m["tessera_ledger_commits_total"] >= 1.0 && m["tessera_ledger_commits_total"] <= tills.len() as f64);
    drop(server);
    // Every genuine batch again: duplicates; the ledger holds each once.
    let server = Server::start(&office, &["--plain-http"], &[]);
    for (i, (b, bundle)) in batches.iter().zip(bundles.iter()).enumerate() {
        if i != 5 {
            let ack = upload_batch(&server.http(), b, bundle, &RetryPolicy::once()).unwrap();
            assert_eq!(ack.status, AckStatus::Duplicate);
        }
    }
    drop(server);
    let out = tessera(&["office", "verify", "--dir", office.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
