//! The runnable examples (`examples/`) run as a user runs them, and say
//! what they promise: a till over the simulator that survives a pulled
//! card, a till over a real PC/SC stack (pcscd with the vpcd driver and a
//! served simulated card), and settlement against a local office whose
//! books then agree with the card.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use tessera_suite::issued_card;
use tessera_suite::pcscd::{example_bin, exclusive, run_with_timeout, skip, Pcscd, ServedCard, Watchdog};

fn run(name: &str, args: &[&std::ffi::OsStr]) -> String {
    let out = run_with_timeout(Command::new(example_bin(name)).args(args), Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "example {name} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn sim_till_resolves_a_pulled_card_and_counts_the_shift() {
    let dir = tempfile::tempdir().unwrap();
    let till = dir.path().join("till");
    let out = run("sim_till", &[till.as_os_str()]);
    assert!(out.contains("APPROVED: +26 points, balance 26"), "{out}");
    assert!(out.contains("Card pulled: the earn of 26 points is pending"), "{out}");
    assert!(out.contains("already done, nothing charged twice"), "{out}");
    assert!(out.contains("Balance now 52 points."), "{out}");
    assert!(out.contains("Shift: earn × 2 = 52 points"), "{out}");
    assert!(till.join("journal.sqlite").exists(), "the till lives where it was told");
}

#[test]
fn settlement_example_settles_everything_and_the_books_agree() {
    let out = run("settle_with_office", &[]);
    assert!(out.contains("Batch 1 acknowledged: posted"), "{out}");
    assert!(out.contains("Settled up to record 6 of 6"), "{out}");
    assert!(
        out.contains("Ledger: card balance 10 (shadow 10), discrepancy 0"),
        "{out}"
    );
}

#[test]
fn pcsc_till_earns_through_pcscd() {
    if skip("pcsc_till_earns_through_pcscd") {
        return;
    }
    let _own = exclusive();
    let _dog = Watchdog::arm("pcsc_till_earns_through_pcscd", Duration::from_secs(180));
    let dir = tempfile::tempdir().unwrap();
    let card = dir.path().join("anna.card");
    let (mut sim, _) = issued_card(1, 11);
    sim.save_as(&card).unwrap();
    let _pcscd = Pcscd::start_suite(1);
    let served = ServedCard::start(&card, 0, &[]);
    let till = dir.path().join("till");
    let out = run(
        "pcsc_till",
        &[served.reader().as_ref(), till.as_os_str(), "2000".as_ref()],
    );
    assert!(out.contains("Hello Анна Петрова! Balance 0 points."), "{out}");
    // 20.00 at tier 1: 20 base points × the tier multiplier of the default policy.
    assert!(out.contains("APPROVED: +"), "{out}");
    assert!(out.contains("(card #1,"), "{out}");
}
