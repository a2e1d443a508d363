//! Benchmark: the cost of keeping the authentication masters in a PKCS#11
//! token, per cached-profile earn over the in-process simulator.
//!
//! The same card, terminal and transaction as
//! `crates/tessera-terminal/benches/transaction.rs`, run once with the
//! software key module and once with the masters in a private SoftHSM2
//! token; prints the host CPU time per transaction of each and the ratio.
//! Run with `cargo bench -p tessera-pkcs11 --bench earn` (SoftHSM2 must be
//! installed: `scripts/install-deps.sh`).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use cpu_time::ProcessTime;
use tessera_crypto::keys::{IssuerKeys, OfficeLink};
use tessera_crypto::rng::Rng;
use tessera_pkcs11::softhsm::SoftHsmToken;
use tessera_pkcs11::{provision, Pin, Pkcs11Sam, TokenConfig};
use tessera_protocol::profile::{Date, Profile};
use tessera_simulator::SimCard;
use tessera_terminal::issuer::{personalize, IssueParams};
use tessera_terminal::{FixedClock, Sam, SoftwareSam, Terminal};

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

struct Figures {
    cpu_per_tx: Duration,
    median: Duration,
    p99: Duration,
    sam_per_call: Duration,
}

/// Cached-profile earns with `sam`, as in the terminal crate's benchmark,
/// then the module's own cost: one `session_keys` call.
fn measure<S: Sam>(keys: &IssuerKeys, sam: &S, n: usize) -> Figures {
    let id = [0x7E, 0x57, 0, 0, 0, 0, 0, 1];
    let mut card = SimCard::manufacture(id, &keys.card_perso_key(&id), Rng::seeded(1)).unwrap();
    personalize(
        &mut card,
        keys,
        profile(),
        &IssueParams {
            earn_cap: 10,
            ..IssueParams::default()
        },
    )
    .unwrap();
    let mut terminal = Terminal::new(sam, FixedClock(1_795_780_800), 1).with_rng(Rng::seeded(2));
    terminal.tap(&mut card).unwrap().earn(1).unwrap();
    let _ = terminal.take_trace();
    let mut samples = Vec::with_capacity(n);
    let cpu = ProcessTime::now();
    for _ in 0..n {
        let t = Instant::now();
        black_box(terminal.tap(&mut card).unwrap().earn(1).unwrap());
        samples.push(t.elapsed());
        let _ = terminal.take_trace();
    }
    let cpu_per_tx = cpu.elapsed() / n as u32;
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    let (median, p99) = (pct(0.5), pct(0.99));
    let start = ProcessTime::now();
    for i in 0..n {
        let mut ch = [0u8; 8];
        ch[..].copy_from_slice(&(i as u64).to_be_bytes());
        black_box(sam.session_keys(&id, 1, &ch, &[2; 8]).unwrap());
    }
    Figures {
        cpu_per_tx,
        median,
        p99,
        sam_per_call: start.elapsed() / n as u32,
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    // `cargo bench` passes --bench; under `cargo test` this is a smoke run.
    let full = std::env::args().any(|a| a == "--bench");
    let n: usize = if full { 20_000 } else { 200 };
    let dir = tempfile::tempdir().unwrap();
    let token = SoftHsmToken::create(dir.path(), "tessera-bench", "87654321", "123456")
        .unwrap_or_else(|e| panic!("the PKCS#11 benchmark needs SoftHSM2: {e}"));
    // Read when this process first loads the module, just below; nothing
    // else runs yet.
    std::env::set_var("SOFTHSM2_CONF", &token.conf);
    let keys = IssuerKeys::test().unwrap();
    let config = TokenConfig {
        module: token.module.clone(),
        token_label: token.label.clone(),
        pin: Pin::new(token.user_pin.clone()),
    };
    let bundle = provision(&config, &keys, 1, OfficeLink::PlainLoopback).unwrap().bundle;
    let hw = Pkcs11Sam::from_bundle(&bundle, &token.module, Pin::new(token.user_pin.clone())).unwrap();

    let soft = measure(&keys, &SoftwareSam::new(keys.terminal_keys()), n);
    let pk = measure(&keys, &hw, n);

    println!("Tessera key module benchmark (in-process simulator, {n} cached-profile earns each)");
    println!("module: {}", token.module.display());
    println!();
    println!("                                   software      PKCS#11 (SoftHSM2)");
    println!(
        "  host CPU time per transaction : {:>8.1} µs   {:>8.1} µs",
        us(soft.cpu_per_tx),
        us(pk.cpu_per_tx)
    );
    println!(
        "  wall time median              : {:>8.1} µs   {:>8.1} µs",
        us(soft.median),
        us(pk.median)
    );
    println!(
        "  wall time p99                 : {:>8.1} µs   {:>8.1} µs",
        us(soft.p99),
        us(pk.p99)
    );
    println!(
        "  session_keys() CPU per call   : {:>8.1} µs   {:>8.1} µs",
        us(soft.sam_per_call),
        us(pk.sam_per_call)
    );
    println!(
        "ratio PKCS#11 / software, CPU per transaction: {:.2}x (+{:.1} µs)",
        pk.cpu_per_tx.as_secs_f64() / soft.cpu_per_tx.as_secs_f64(),
        us(pk.cpu_per_tx) - us(soft.cpu_per_tx)
    );
}
