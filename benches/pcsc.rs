//! Latency of the real PC/SC path against the in-process transport, in the
//! same run: a private `pcscd` (one vpcd reader, `scripts/pcscd-up.sh`)
//! with a simulated card served in-process by
//! `tessera_simulator::vpcd::serve` on a thread, and `PcscTransport`
//! talking to it, side by side with the same card driven directly.
//!
//! Measures the round trip of one SELECT APDU (median and p99 of 2000) and
//! a whole cached-profile tap and earn, 3 APDUs with mutual authentication
//! (median and p99 of 1000), prints a table with the ratios, and checks the
//! target of a cached-profile earn under 5 ms median over pcscd (reported,
//! never a failure).
//!
//! `cargo bench --bench pcsc` runs it in full. Without `--bench` (as
//! `cargo test --all-targets` runs it) it does a few iterations only, to
//! prove it still works. `TESSERA_NO_PCSCD=1` skips it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tessera_pcsc::{wait_for_card, PcscTransport};
use tessera_protocol::AID;
use tessera_simulator::vpcd::{self, ServeOptions, ServeStats};
use tessera_simulator::SimCard;
use tessera_suite::pcscd::{reader_name, Pcscd, Watchdog, WAIT};
use tessera_suite::{issued_card, test_terminal};
use tessera_transport::Transport;

/// The bench's own state directory, apart from the test suites'.
const DIR: &str = "/tmp/tessera-pcscd-bench";
/// The target for a cached-profile earn over pcscd.
const TARGET: Duration = Duration::from_millis(5);

/// A card served on a thread; stopped and joined on drop.
struct Served {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<ServeStats>>,
}

impl Served {
    fn start(card: SimCard) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = thread::spawn(move || {
            let mut card = card;
            let opts = ServeOptions {
                addr: vpcd::reader_addr(0),
                ..ServeOptions::default()
            };
            vpcd::serve(&mut card, &opts, &flag).expect("vpcd::serve")
        });
        Self {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Median and p99 of a sample.
struct Stats {
    median: Duration,
    p99: Duration,
}

fn stats(mut v: Vec<Duration>) -> Stats {
    v.sort();
    let at = |q: usize| v[(v.len() * q / 100).min(v.len() - 1)];
    Stats {
        median: at(50),
        p99: at(99),
    }
}

fn time_n(n: usize, mut f: impl FnMut()) -> Vec<Duration> {
    (0..n)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect()
}

fn select() -> Vec<u8> {
    let mut c = vec![0x00, 0xA4, 0x04, 0x00, AID.len() as u8];
    c.extend_from_slice(&AID);
    c.push(0x00);
    c
}

/// `n` SELECTs, after a warm-up.
fn selects(t: &mut impl Transport, n: usize) -> Stats {
    let cmd = select();
    let mut once = || {
        let r = t.transmit(&cmd).unwrap();
        assert_eq!(r[r.len() - 2..], [0x90, 0x00]);
    };
    for _ in 0..n / 10 {
        once();
    }
    stats(time_n(n, once))
}

/// `n` cached-profile taps and earns of one point, after a first tap that
/// fills the profile cache and a warm-up.
fn earns(t: &mut impl Transport, n: usize) -> Stats {
    let mut terminal = test_terminal(0x5E00_0001);
    terminal.tap(&mut *t).unwrap().earn(1).unwrap();
    terminal.take_trace();
    let mut once = || {
        let mut s = terminal.tap(&mut *t).unwrap();
        assert!(s.card().profile_cached);
        s.earn(1).unwrap();
    };
    for _ in 0..n / 10 {
        once();
    }
    let v = time_n(n, &mut once);
    let runs = n + n / 10;
    assert_eq!(terminal.take_trace().commands(), 3 * runs, "3 APDUs per cached earn");
    stats(v)
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn row(what: &str, local: Duration, pcsc: Duration) {
    println!(
        "{what:<36} {:>12} {:>12} {:>8.1}×",
        us(local),
        us(pcsc),
        pcsc.as_secs_f64() / local.as_secs_f64()
    );
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    if std::env::var("TESSERA_NO_PCSCD").as_deref() == Ok("1") {
        eprintln!("bench pcsc: SKIPPED because TESSERA_NO_PCSCD=1");
        return;
    }
    let (n_select, n_earn) = if full { (2000, 1000) } else { (20, 10) };
    let _dog = Watchdog::arm("bench pcsc", Duration::from_secs(600));
    let _pcscd = Pcscd::start(1, Path::new(DIR));
    let reader = reader_name(0);
    let (served_card, _) = issued_card(90, 90);
    let _served = Served::start(served_card);
    wait_for_card(&reader, true, WAIT).unwrap();
    let mut pcsc = PcscTransport::connect(&reader).unwrap();
    let (mut local, _) = issued_card(90, 90);

    let sel_local = selects(&mut local, n_select);
    let sel_pcsc = selects(&mut pcsc, n_select);
    let earn_local = earns(&mut local, n_earn);
    let earn_pcsc = earns(&mut pcsc, n_earn);

    println!();
    println!(
        "PC/SC path (pcscd + vpcd, {}) vs in-process, same card and terminal",
        if cfg!(debug_assertions) {
            "debug build"
        } else {
            "release build"
        }
    );
    println!("{:<36} {:>12} {:>12} {:>9}", "", "in-process", "pcscd+vpcd", "ratio");
    row("SELECT round trip, median", sel_local.median, sel_pcsc.median);
    row("SELECT round trip, p99", sel_local.p99, sel_pcsc.p99);
    row("cached tap+earn (3 APDUs), median", earn_local.median, earn_pcsc.median);
    row("cached tap+earn (3 APDUs), p99", earn_local.p99, earn_pcsc.p99);
    println!(
        "({n_select} SELECTs, {n_earn} taps+earns each{})",
        if full {
            ""
        } else {
            "; a smoke run: pass --bench for the full measurement"
        }
    );
    println!(
        "target: cached-profile earn under {} ms median over pcscd: {} ({})",
        TARGET.as_millis(),
        if earn_pcsc.median < TARGET { "met" } else { "NOT met" },
        us(earn_pcsc.median)
    );
}
