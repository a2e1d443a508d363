//! `pcscd` stopped and started again while a till and a served card keep
//! running (issue acceptance: real PC/SC stack, daemon restart): the same
//! `Terminal` and the same `PcscTransport` recover by themselves at the next
//! operation, the `tessera card serve` process reconnects by itself, a
//! transaction cut by the restart is resolved at the next tap, and the CLI
//! (`tessera pos earn --reader`) works afterwards.
//!
//! Its own test binary because it restarts the daemon, which no other test
//! may be using. `TESSERA_NO_PCSCD=1` skips it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tessera_crypto::keys::IssuerKeys;
use tessera_pcsc::PcscTransport;
use tessera_suite::pcscd::{card_file_state, exclusive, run_tessera, skip, Pcscd, ServedCard, Watchdog, WAIT};
use tessera_suite::{issued_card, test_terminal};
use tessera_terminal::TerminalError;

#[test]
fn terminal_transport_and_served_card_survive_pcscd_restarts() {
    if skip("terminal_transport_and_served_card_survive_pcscd_restarts") {
        return;
    }
    let _own = exclusive();
    let _dog = Watchdog::arm(
        "terminal_transport_and_served_card_survive_pcscd_restarts",
        Duration::from_secs(150),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("restart.card");
    let (mut card, _) = issued_card(40, 40);
    card.save_as(&path).unwrap();
    drop(card);

    let mut pcscd = Pcscd::start_suite(1);
    let first_pid = pcscd.pid();
    let mut served = ServedCard::start(&path, 0, &["--json"]);
    let serve_pid = served.pid();
    let mut terminal = test_terminal(0x5500_0001);
    let mut transport = PcscTransport::connect(served.reader()).unwrap();
    let verifier = IssuerKeys::test().unwrap().certificate_verifier();

    let receipt = terminal.tap(&mut transport).unwrap().earn(40).unwrap();
    assert_eq!((receipt.record.counter, receipt.record.balance_after), (1, 40));

    // Restart between two transactions: nothing to do for the caller.
    pcscd.restart();
    assert_ne!(pcscd.pid(), first_pid);
    served.wait_present(WAIT);
    served.assert_running();
    assert_eq!(served.pid(), serve_pid, "the same serve process reconnected");
    terminal.take_trace();
    let mut session = terminal.tap(&mut transport).expect("first tap after the restart");
    assert!(session.card().profile_cached);
    let receipt = session.earn(10).unwrap();
    drop(session);
    assert_eq!((receipt.record.counter, receipt.record.balance_after), (2, 50));
    verifier
        .verify(&receipt.card_id, receipt.key_version, &receipt.record)
        .unwrap();
    assert_eq!(terminal.take_trace().commands(), 3);

    // Restart in the middle of a session: the card lost power with it, so
    // the earn is cut. The card is back in the field, so the terminal
    // selects and authenticates it again in the same tap and reads from its
    // authenticated counter that the earn did not happen (never from a
    // status word).
    let mut session = terminal.tap(&mut transport).unwrap();
    pcscd.restart();
    served.wait_present(WAIT);
    match session.earn(5) {
        Err(TerminalError::Unanswered { .. } | TerminalError::Card { .. }) => {}
        other => panic!("an earn over a restarted pcscd: {other:?}"),
    }
    assert_eq!((session.card().counter, session.card().balance), (2, 50));
    let receipt = session.earn(5).unwrap();
    drop(session);
    assert_eq!((receipt.record.counter, receipt.record.balance_after), (3, 55));
    let st = card_file_state(&path);
    assert_eq!((st.counter, st.balance), (3, 55));

    // The CLI, after one more restart, with the terminal waiting for the card.
    pcscd.restart();
    let terminal_dir = dir.path().join("till");
    let mut args = vec![
        "pos",
        "earn",
        "--test-keys",
        "--reader",
        served.reader(),
        "--wait",
        "15",
        "--terminal-dir",
        terminal_dir.to_str().unwrap(),
        "--json",
    ];
    args.extend(earn_amount_args());
    let out = run_tessera(&args, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tessera pos earn --reader after a restart: {} {stdout} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let st = card_file_state(&path);
    assert_eq!(st.counter, 4, "{stdout}");
    assert!(st.balance > 55, "{stdout}");
    // `receipt` at the top, or inside the till's `outcome`.
    let receipt = match &json["receipt"] {
        r if r.is_object() => r,
        _ => &json["outcome"]["receipt"],
    };
    assert_eq!(receipt["record"]["balance_after"], st.balance, "{stdout}");
    assert_eq!(receipt["record"]["counter"], 4, "{stdout}");

    // The same terminal and transport once more, after the CLI.
    let receipt = terminal.tap(&mut transport).unwrap().redeem(12).unwrap();
    assert_eq!(
        (receipt.record.counter, receipt.record.balance_after),
        (5, st.balance - 12)
    );

    // One serve process throughout, which reconnected after each restart.
    let (status, log) = served.stop();
    assert!(status.is_some_and(|s| s.success()), "{log}");
    let stats: serde_json::Value = serde_json::from_str(log.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("serve --json stats: {e}: {log}"));
    assert!(stats["connections"].as_u64().unwrap() >= 4, "{stats}");
    assert_eq!(stats["removals"], 0);
}

/// The arguments of `tessera pos earn` that say how much: `--points N` in
/// the CLI that takes points, `--amount X.YY` (a purchase amount the points
/// follow from) in the one that takes amounts.
fn earn_amount_args() -> [&'static str; 2] {
    let help = run_tessera(&["pos", "earn", "--help"], Duration::from_secs(30));
    if String::from_utf8_lossy(&help.stdout).contains("--amount") {
        ["--amount", "7.00"]
    } else {
        ["--points", "7"]
    }
}
