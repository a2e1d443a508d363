//! Benchmark: a full earn against the in-process simulator.
//!
//! Prints host CPU time per transaction (cached profile and first visit),
//! command APDUs and bytes on the wire per transaction, and the share of the
//! time spent in cryptography. Run with
//! `cargo bench -p tessera-terminal --bench transaction`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use cpu_time::ProcessTime;
use tessera_crypto::cert::certificate;
use tessera_crypto::channel::{SecureChannel, SessionKeys};
use tessera_crypto::kdf::{diversify, labels};
use tessera_crypto::keys::IssuerKeys;
use tessera_crypto::rng::Rng;
use tessera_protocol::messages::{LogRecord, TxKind};
use tessera_protocol::profile::{Date, Profile};
use tessera_simulator::SimCard;
use tessera_terminal::issuer::{personalize, IssueParams};
use tessera_terminal::{FixedClock, SoftwareSam, Terminal};

fn profile() -> Profile {
    Profile {
        card_id: [0; 8],
        version: 1,
        name: "Анна Петрова".into(),
        birth_date: Date {
            year: 1990,
            month: 3,
            day: 14,
        },
        home_city: "Нижний Новгород".into(),
        household: [0; 8],
        preferences: vec!["coffee".into()],
        tier: 1,
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
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    // `cargo bench` passes --bench; under `cargo test` this is a smoke run.
    let full = std::env::args().any(|a| a == "--bench");
    let n: usize = if full { 20_000 } else { 200 };
    let keys = IssuerKeys::test().unwrap();
    let id = [0x7E, 0x57, 0, 0, 0, 0, 0, 1];
    let mut card = SimCard::manufacture(id, &keys.card_perso_key(&id), Rng::seeded(1)).unwrap();
    personalize(
        &mut card,
        &keys,
        profile(),
        &IssueParams {
            earn_cap: 10,
            ..IssueParams::default()
        },
    )
    .unwrap();
    let mut terminal =
        Terminal::new(SoftwareSam::new(keys.terminal_keys()), FixedClock(1_795_780_800), 1).with_rng(Rng::seeded(2));

    // Warm the profile cache, then measure cached-profile earns.
    terminal.tap(&mut card).unwrap().earn(1).unwrap();
    let _ = terminal.take_trace();
    let mut samples = Vec::with_capacity(n);
    let (mut apdus, mut bytes) = (0usize, 0usize);
    let cpu = ProcessTime::now();
    for _ in 0..n {
        let t = Instant::now();
        let r = terminal.tap(&mut card).unwrap().earn(1).unwrap();
        samples.push(t.elapsed());
        black_box(r);
        let tr = terminal.take_trace();
        apdus += tr.commands();
        bytes += tr.bytes();
    }
    let cpu_per_tx = cpu.elapsed() / n as u32;
    samples.sort();

    // First visit: the profile is read (and its signature verified).
    let mut first = Vec::with_capacity(n / 10);
    let mut first_apdus = 0;
    let mut first_bytes = 0;
    for _ in 0..n / 10 {
        terminal.cache_mut().clear_memory();
        let t = Instant::now();
        black_box(terminal.tap(&mut card).unwrap().earn(1).unwrap());
        first.push(t.elapsed());
        let tr = terminal.take_trace();
        first_apdus += tr.commands();
        first_bytes += tr.bytes();
    }
    first.sort();

    // The cryptography one cached-profile earn performs, card and terminal
    // side together: two session-key derivations (each with both
    // cryptograms), the SAM's diversification, one C-MAC computed and
    // checked, two R-MACs computed and checked, one certificate.
    let k_auth = keys.card_auth_key(&id);
    let k_cert = keys.card_cert_key(&id);
    let rec = LogRecord {
        counter: 1,
        kind: TxKind::Earn,
        amount: 1,
        balance_after: 1,
        terminal_id: 1,
        terminal_seq: 1,
        time: 1,
        reference: 0,
        online: false,
        certificate: [0; 16],
    };
    let data = [0u8; 24];
    let crypto = Instant::now();
    for _ in 0..n {
        black_box(diversify(&keys.auth_master, labels::CARD_AUTH, &id, 1));
        let mut term = SecureChannel::new(SessionKeys::derive(&k_auth, &[1; 8], &[2; 8]));
        let mut cardc = SecureChannel::new(SessionKeys::derive(&k_auth, &[1; 8], &[2; 8]));
        let auth = cardc.protect_response(data[..22].to_vec());
        term.verify_response(&auth).unwrap();
        let cmd = term.protect_command(0x84, 0x30, 0, 0, &data, Some(256));
        cardc.verify_command(&cmd).unwrap();
        black_box(certificate(&k_cert, &id, &rec));
        let resp = cardc.protect_response(vec![0; 43]);
        term.verify_response(&resp).unwrap();
    }
    let crypto_per_tx = crypto.elapsed() / n as u32;

    let median = percentile(&samples, 0.5);
    println!("Tessera transaction benchmark (in-process simulator, {n} earns)");
    println!();
    println!("cached-profile earn (SELECT, AUTHENTICATE, EARN)");
    println!(
        "  host CPU time per transaction : {:>8.1} µs",
        cpu_per_tx.as_secs_f64() * 1e6
    );
    println!(
        "  wall time median / p99        : {:>8.1} µs / {:.1} µs",
        median.as_secs_f64() * 1e6,
        percentile(&samples, 0.99).as_secs_f64() * 1e6
    );
    println!("  command APDUs per transaction : {:>8.2}", apdus as f64 / n as f64);
    println!("  bytes on the wire per tx      : {:>8.1}", bytes as f64 / n as f64);
    println!(
        "  cryptography per transaction  : {:>8.1} µs ({:.0}% of the CPU time)",
        crypto_per_tx.as_secs_f64() * 1e6,
        100.0 * crypto_per_tx.as_secs_f64() / cpu_per_tx.as_secs_f64()
    );
    println!("first-visit earn (adds READ PROFILE and the ECDSA verification)");
    println!(
        "  wall time median / p99        : {:>8.1} µs / {:.1} µs",
        percentile(&first, 0.5).as_secs_f64() * 1e6,
        percentile(&first, 0.99).as_secs_f64() * 1e6
    );
    println!(
        "  command APDUs per transaction : {:>8.2}",
        first_apdus as f64 / (n / 10) as f64
    );
    println!(
        "  bytes on the wire per tx      : {:>8.1}",
        first_bytes as f64 / (n / 10) as f64
    );
    println!(
        "ratio first-visit / cached median: {:.1}x",
        percentile(&first, 0.5).as_secs_f64() / median.as_secs_f64()
    );
}
