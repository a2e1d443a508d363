//! The whole stack as a till uses it, through the real PC/SC daemon: cards
//! served into vpcd virtual readers by `tessera card serve` processes, the
//! terminal library over `PcscTransport`, and independent PC/SC tools
//! (issue acceptance: real PC/SC stack).
//!
//! - earn and redeem give the same records, balances, certificates and APDU
//!   counts (4 on a first visit, 3 with the profile cached) as in-process;
//! - the card pulled away at every APDU of an earn, before or after the card
//!   executed it: the transaction is fully done or not at all, and the
//!   terminal knows which;
//! - two readers, two cards, two terminals on two threads at the same time;
//! - `opensc-tool` and `pcsc_scan` see the card as the spec describes it.
//!
//! Each test owns the daemon (`tessera_suite::pcscd::exclusive`), starts
//! its own in `/tmp/tessera-pcscd-suite` and stops it, and every served
//! card, by PID, even when it fails; a watchdog aborts a hanging test.
//! `TESSERA_NO_PCSCD=1` skips them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use tessera_card::CardState;
use tessera_crypto::keys::IssuerKeys;
use tessera_crypto::sign::profile_digest;
use tessera_pcsc::{list_readers, CardProtocol, PcscTransport};
use tessera_protocol::messages::{Lifecycle, LogRecord, SelectResponse, TxKind};
use tessera_protocol::profile::SignedProfile;
use tessera_simulator::ATR;
use tessera_suite::pcscd::{
    card_file_state, exclusive, run_tessera, run_with_timeout, skip, Pcscd, ServedCard, Watchdog, WAIT,
};
use tessera_suite::{card_id, issued_card, test_terminal};
use tessera_terminal::{FixedClock, Receipt, Resolution, SoftwareSam, Terminal, TerminalError};
use tessera_transport::{Transport, TransportError};

type TestTerminal = Terminal<SoftwareSam, FixedClock>;

/// Longest a single test of this file may run before the watchdog aborts.
const TEST_LIMIT: Duration = Duration::from_secs(150);

/// Writes card number `n` (issued with the test keys, seeded) to
/// `dir/<name>` and returns the path.
fn card_file(dir: &Path, name: &str, n: u32, seed: u64) -> PathBuf {
    let path = dir.join(name);
    let (mut card, _) = issued_card(n, seed);
    card.save_as(&path).unwrap();
    path
}

/// One tap and one transaction; the receipt and the trace's labels.
fn tap_and<T: Transport>(
    terminal: &mut TestTerminal,
    transport: T,
    kind: TxKind,
    amount: u32,
) -> (Receipt, bool, Vec<&'static str>) {
    terminal.take_trace();
    let mut session = terminal.tap(transport).unwrap();
    let cached = session.card().profile_cached;
    let receipt = match kind {
        TxKind::Earn => session.earn(amount).unwrap(),
        TxKind::Redeem => session.redeem(amount).unwrap(),
        other => panic!("{other:?}"),
    };
    drop(session);
    let trace = terminal.take_trace();
    assert!(trace.entries.iter().all(|e| e.response.is_some()));
    (receipt, cached, trace.entries.iter().map(|e| e.label).collect())
}

#[test]
fn earn_and_redeem_through_pcscd_match_in_process() {
    if skip("earn_and_redeem_through_pcscd_match_in_process") {
        return;
    }
    let _own = exclusive();
    let _dog = Watchdog::arm("earn_and_redeem_through_pcscd_match_in_process", TEST_LIMIT);
    let dir = tempfile::tempdir().unwrap();
    let path = card_file(dir.path(), "anna.card", 1, 7);
    let (mut local, _) = issued_card(1, 7);
    assert_eq!(card_file_state(&path), local.state().unwrap(), "the same card twice");

    let _pcscd = Pcscd::start_suite(1);
    let served = ServedCard::start(&path, 0, &[]);
    let mut transport = PcscTransport::connect(served.reader()).unwrap();
    assert_eq!(transport.atr(), ATR, "the ATR of spec §2 through pcscd");
    assert_eq!(transport.protocol(), Some(CardProtocol::T1));

    let mut local_terminal = test_terminal(0x5100_0001);
    let mut pcsc_terminal = test_terminal(0x5100_0001);
    let verifier = IssuerKeys::test().unwrap().certificate_verifier();
    let ops = [
        (TxKind::Earn, 120),
        (TxKind::Redeem, 50),
        (TxKind::Earn, 7),
        (TxKind::Redeem, 77),
        (TxKind::Earn, 1),
    ];
    let mut balance = 0u32;
    for (i, (kind, amount)) in ops.into_iter().enumerate() {
        let (local_receipt, local_cached, local_labels) = tap_and(&mut local_terminal, &mut local, kind, amount);
        let (receipt, cached, labels) = tap_and(&mut pcsc_terminal, &mut transport, kind, amount);
        balance = match kind {
            TxKind::Earn => balance + amount,
            _ => balance - amount,
        };
        assert_eq!(receipt.record.balance_after, balance, "op {i}");
        assert_eq!(receipt.record.counter, i as u32 + 1, "op {i}");
        // Same card keys, terminal, sequence and clock: the very same record
        // and certificate.
        assert_eq!(receipt, local_receipt, "op {i}: pcscd and in-process disagree");
        verifier
            .verify(&receipt.card_id, receipt.key_version, &receipt.record)
            .unwrap();
        assert_eq!(labels, local_labels, "op {i}: same APDUs");
        assert_eq!(cached, local_cached);
        let op = if kind == TxKind::Earn { "EARN" } else { "REDEEM" };
        if i == 0 {
            assert!(!cached);
            assert_eq!(labels, ["SELECT", "AUTHENTICATE", "READ PROFILE", "EARN"]);
        } else {
            assert!(cached, "op {i}: the profile comes from the cache");
            assert_eq!(labels, ["SELECT", "AUTHENTICATE", op]);
        }
    }

    // The card's own log, read through pcscd, and its image file.
    let mut session = pcsc_terminal.tap(&mut transport).unwrap();
    let log = session.read_full_log().unwrap();
    drop(session);
    let local_log = local_terminal.tap(&mut local).unwrap().read_full_log().unwrap();
    assert_eq!(log, local_log);
    assert_eq!(log.len(), ops.len());
    for rec in &log {
        verifier.verify(&card_id(1), 1, rec).unwrap();
    }
    let on_file = card_file_state(&path);
    assert_eq!(
        on_file,
        local.state().unwrap(),
        "the served card's file equals the in-process card"
    );
    assert_eq!((on_file.balance, on_file.counter), (balance, ops.len() as u32));

    // The CLI sees the same in the file.
    let out = run_tessera(
        &["card", "show", "--card", path.to_str().unwrap(), "--json"],
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["balance"], balance);
    assert_eq!(shown["counter"], ops.len());
    assert_eq!(shown["log"].as_array().unwrap().len(), ops.len());
}

/// Where the card leaves the field during `tap` + `earn`.
#[derive(Debug, Clone, Copy)]
struct Removal {
    /// The command during which the card leaves (0-based APDU index).
    at: u64,
    /// Its label in the trace.
    label: &'static str,
    /// Whether the terminal has the profile cached (no READ PROFILE).
    cached: bool,
    /// Whether the card executes the command before leaving.
    execute: bool,
}

#[test]
fn card_pulled_away_at_every_apdu_of_an_earn() {
    if skip("card_pulled_away_at_every_apdu_of_an_earn") {
        return;
    }
    let _own = exclusive();
    let _dog = Watchdog::arm("card_pulled_away_at_every_apdu_of_an_earn", TEST_LIMIT);
    let dir = tempfile::tempdir().unwrap();
    let path = card_file(dir.path(), "pulled.card", 2, 8);
    let _pcscd = Pcscd::start_suite(1);

    let positions = [
        (0, "SELECT", false),
        (1, "AUTHENTICATE", false),
        (2, "READ PROFILE", false),
        (3, "EARN", false),
        (2, "EARN", true),
    ];
    let mut cases = Vec::new();
    for (at, label, cached) in positions {
        for execute in [false, true] {
            cases.push(Removal {
                at,
                label,
                cached,
                execute,
            });
        }
    }
    // Every case runs even when one fails, so that a failure report names
    // all the positions that misbehave.
    let mut completed = 0;
    let mut failed = Vec::new();
    for (n, case) in cases.iter().enumerate() {
        let started = Instant::now();
        match std::panic::catch_unwind(AssertUnwindSafe(|| pull_away(&path, n as u32, *case))) {
            Ok(done) => completed += u32::from(done),
            Err(_) => failed.push(*case),
        }
        eprintln!("{case:?}: {:?}", started.elapsed());
    }
    assert!(failed.is_empty(), "failed removal cases: {failed:#?}");
    assert_eq!(completed, 2, "only an executed EARN happens");
    // One earn of 1 point after every case, and the two executed earns.
    assert_eq!(card_file_state(&path).counter, cases.len() as u32 + completed);
}

/// Runs one removal case against the card in `path`; returns whether the
/// interrupted earn happened.
fn pull_away(path: &Path, n: u32, case: Removal) -> bool {
    const POINTS: u32 = 25;
    let before = card_file_state(path);
    let mut terminal = test_terminal(0x5200_0000 + n);
    terminal.set_next_seq(1000 + n);
    if case.cached {
        let signed = SignedProfile::parse(&before.profile).unwrap();
        terminal.cache_mut().insert(profile_digest(&before.profile), signed);
    }
    let at = case.at.to_string();
    let mut args = vec!["--remove-after", at.as_str()];
    if case.execute {
        args.push("--execute-before-removal");
    }
    let mut served = ServedCard::start(path, 0, &args);
    let mut transport = PcscTransport::connect(served.reader()).unwrap();

    let pending = match terminal.tap(&mut transport) {
        Ok(mut session) => {
            assert_eq!(session.card().profile_cached, case.cached);
            match session.earn(POINTS) {
                Err(TerminalError::Interrupted(p)) => Some(p),
                other => panic!("{case:?}: {other:?}"),
            }
        }
        // A card gone in the middle of a command is CardRemoved, whatever
        // PC/SC error reports it (vpcd: an empty answer, or
        // SCARD_E_NOT_TRANSACTED when the driver has already lost the card).
        Err(TerminalError::Transport(TransportError::CardRemoved)) => None,
        Err(e) => panic!("{case:?}: tap failed with {e:?}, not CardRemoved"),
    };
    assert_eq!(pending.is_some(), case.label == "EARN", "{case:?}");
    let trace = terminal.take_trace();
    // After a lost transaction answer the terminal tries, in the same tap,
    // to select the card again and read the outcome from its authenticated
    // state: one more SELECT, unanswered while the card is out.
    let retried = u64::from(pending.is_some());
    assert_eq!(trace.commands() as u64, case.at + 1 + retried, "{case:?}");
    let cut = &trace.entries[case.at as usize];
    assert_eq!(cut.label, case.label);
    assert!(cut.response.is_none(), "the answer to {} is lost", case.label);
    if pending.is_some() {
        let last = trace.entries.last().unwrap();
        assert_eq!(last.label, "SELECT", "{case:?}");
        assert!(last.response.is_none(), "{case:?}: the card is out");
    }

    // The card is out, then back (the serve process re-inserts it after 1 s).
    served.wait_absent(WAIT).unwrap();
    served.wait_present(WAIT);
    served.assert_running();

    // The same terminal and transport: a new tap, the pending earn resolved.
    let on_file = card_file_state(path);
    let done = case.execute && case.label == "EARN";
    let mut session = terminal.tap(&mut transport).unwrap();
    let info = session.card().clone();
    let resolution = pending.as_ref().map(|p| session.resolve(p).unwrap());
    let log = session.read_full_log().unwrap();
    drop(session);

    let expected_counter = before.counter + u32::from(done);
    let expected_balance = before.balance + if done { POINTS } else { 0 };
    assert_eq!(
        (on_file.counter, on_file.balance),
        (expected_counter, expected_balance),
        "{case:?}"
    );
    assert_eq!(
        (info.counter, info.balance),
        (expected_counter, expected_balance),
        "{case:?}"
    );
    assert_eq!(info.last_record.as_ref(), on_file.last_record(), "{case:?}");
    let file_log: Vec<LogRecord> = on_file.records().cloned().collect();
    assert_eq!(log, file_log, "{case:?}: the log read through pcscd is the file's");
    if done {
        let Some(Resolution::Completed(rec)) = &resolution else {
            panic!("{case:?}: the card committed, the terminal says {resolution:?}")
        };
        assert_eq!(Some(rec), on_file.last_record());
        assert_eq!(
            (rec.kind, rec.amount, rec.terminal_seq),
            (TxKind::Earn, POINTS, 1000 + n)
        );
        IssuerKeys::test()
            .unwrap()
            .certificate_verifier()
            .verify(&before.card_id, before.key_version, rec)
            .unwrap();
    } else {
        if pending.is_some() {
            assert_eq!(resolution, Some(Resolution::NotDone), "{case:?}");
        }
        assert_eq!(
            on_file.records().collect::<Vec<_>>(),
            before.records().collect::<Vec<_>>(),
            "{case:?}"
        );
    }

    // The card keeps working, with the next counter.
    let mut session = terminal.tap(&mut transport).unwrap();
    let receipt = session.earn(1).unwrap();
    assert_eq!(receipt.record.counter, expected_counter + 1, "no counter reused");
    drop(session);
    let (status, log) = served.stop();
    assert!(status.is_some_and(|s| s.success()), "{log}");
    done
}

/// What one till did in the parallel test.
struct TillRun {
    receipts: Vec<Receipt>,
    started: Instant,
    ended: Instant,
}

#[test]
fn two_readers_two_terminals_at_the_same_time() {
    if skip("two_readers_two_terminals_at_the_same_time") {
        return;
    }
    let _own = exclusive();
    let _dog = Watchdog::arm("two_readers_two_terminals_at_the_same_time", TEST_LIMIT);
    let dir = tempfile::tempdir().unwrap();
    const ROUNDS: u32 = 30;
    // (card number, earn, redeem): redeem every third round.
    let tills = [(11u32, 20u32, 15u32), (12, 30, 25)];
    let paths: Vec<PathBuf> = tills
        .iter()
        .map(|(n, _, _)| card_file(dir.path(), &format!("card{n}.card"), *n, u64::from(*n)))
        .collect();
    let _pcscd = Pcscd::start_suite(2);
    let served: Vec<ServedCard> = paths
        .iter()
        .enumerate()
        .map(|(i, p)| ServedCard::start(p, i, &[]))
        .collect();

    let barrier = Arc::new(Barrier::new(tills.len()));
    let handles: Vec<_> = tills
        .iter()
        .zip(&served)
        .enumerate()
        .map(|(i, (&(_, earn, redeem), s))| {
            let reader = s.reader().to_owned();
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                let mut terminal = test_terminal(0x5300_0000 + i as u32);
                let mut transport = PcscTransport::connect(&reader).unwrap();
                barrier.wait();
                let started = Instant::now();
                let mut receipts = Vec::new();
                for round in 0..ROUNDS {
                    let (kind, amount) = if round % 3 == 2 {
                        (TxKind::Redeem, redeem)
                    } else {
                        (TxKind::Earn, earn)
                    };
                    let (receipt, _, labels) = tap_and(&mut terminal, &mut transport, kind, amount);
                    assert_eq!(labels.len(), if round == 0 { 4 } else { 3 });
                    receipts.push(receipt);
                }
                TillRun {
                    receipts,
                    started,
                    ended: Instant::now(),
                }
            })
        })
        .collect();
    let runs: Vec<TillRun> = handles.into_iter().map(|h| h.join().unwrap()).collect();

    let verifier = IssuerKeys::test().unwrap().certificate_verifier();
    for ((&(n, earn, redeem), run), path) in tills.iter().zip(&runs).zip(&paths) {
        let redeems = ROUNDS / 3;
        let expected = (ROUNDS - redeems) * earn - redeems * redeem;
        for (i, r) in run.receipts.iter().enumerate() {
            assert_eq!(r.card_id, card_id(n), "a receipt from the other reader's card");
            assert_eq!(r.record.counter, i as u32 + 1);
            verifier.verify(&r.card_id, r.key_version, &r.record).unwrap();
        }
        let last = run.receipts.last().unwrap();
        assert_eq!((last.record.balance_after, last.record.counter), (expected, ROUNDS));
        let st: CardState = card_file_state(path);
        assert_eq!((st.balance, st.counter), (expected, ROUNDS), "card {n}");
        eprintln!("card {n}: {ROUNDS} taps in {:?}", run.ended.duration_since(run.started));
    }
    // The two tills really overlapped.
    assert!(runs[0].started < runs[1].ended && runs[1].started < runs[0].ended);
}

/// The data and status word `opensc-tool -s` reports, from its hex dump
/// (16 bytes per line in the first 48 columns, then their ASCII).
fn opensc_response(stdout: &str) -> (Vec<u8>, u16) {
    let mut lines = stdout.lines().skip_while(|l| !l.starts_with("Received"));
    let head = lines.next().unwrap_or_else(|| panic!("no response in {stdout:?}"));
    let sw = |key: &str| {
        let at = head.find(key).unwrap_or_else(|| panic!("{head}")) + key.len();
        u8::from_str_radix(&head[at..at + 2], 16).unwrap()
    };
    let sw = u16::from_be_bytes([sw("SW1=0x"), sw("SW2=0x")]);
    let mut data = Vec::new();
    for line in lines {
        let hex: String = line.chars().take(48).collect();
        let bytes: Vec<u8> = hex
            .split_whitespace()
            .map_while(|t| u8::from_str_radix(t, 16).ok().filter(|_| t.len() == 2))
            .collect();
        if bytes.is_empty() {
            break;
        }
        data.extend(bytes);
    }
    (data, sw)
}

fn opensc_send(reader: usize, apdu: &str) -> (Vec<u8>, u16) {
    let out = run_with_timeout(
        Command::new("opensc-tool").args(["-r", &reader.to_string(), "-s", apdu]),
        Duration::from_secs(30),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("opensc-tool -r {reader} -s {apdu:?}:\n{stdout}");
    assert!(
        stdout.contains("Received"),
        "opensc-tool failed ({}): {stdout} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    opensc_response(&stdout)
}

#[test]
fn independent_tools_see_the_card_of_the_spec() {
    if skip("independent_tools_see_the_card_of_the_spec") {
        return;
    }
    let _own = exclusive();
    let _dog = Watchdog::arm("independent_tools_see_the_card_of_the_spec", TEST_LIMIT);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tools.card");
    let id_hex = "7E57000000000D01";
    let out = run_tessera(
        &[
            "card",
            "issue",
            "--card",
            path.to_str().unwrap(),
            "--name",
            "Анна Петрова",
            "--birth-date",
            "1990-03-14",
            "--city",
            "Нижний Новгород",
            "--card-id",
            id_hex,
        ],
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let before = card_file_state(&path);

    let _pcscd = Pcscd::start_suite(1);
    let served = ServedCard::start(&path, 0, &[]);
    let index = list_readers()
        .unwrap()
        .iter()
        .position(|r| r == served.reader())
        .unwrap();

    // SELECT by AID (spec §4.1) from OpenSC.
    let (data, sw) = opensc_send(index, "00 A4 04 00 09 F0 54 45 53 53 45 52 41 01 00");
    assert_eq!(sw, 0x9000);
    let id = hex::decode(id_hex).unwrap();
    let digest = profile_digest(&before.profile);
    assert_eq!(data.len(), 10 + 4 + 7 + 3 + 34 + 10, "{data:02X?}");
    assert_eq!(data[..2], [0xC0, 0x08]);
    assert_eq!(data[2..10], id[..], "C0: the card id");
    assert_eq!(data[10..14], [0xC1, 0x02, 0x02, 0x01], "C1: applet v2, key version 1");
    assert_eq!(data[14..21], [0xDF, 0x07, 0x04, b'T', b'E', b'S', b'T'], "DF07: issuer");
    assert_eq!(data[21..24], [0xC2, 0x01, 0x02], "C2");
    assert_eq!(data[24..26], [0xC3, 0x20]);
    assert_eq!(data[26..58], digest, "C3: SHA-256 of the stored profile");
    assert_eq!(data[58..60], [0xC4, 0x08], "C4: an 8-byte challenge");
    let sel = SelectResponse::parse(&data).unwrap();
    assert_eq!(sel.card_id[..], id[..]);
    assert_eq!((sel.applet_version, sel.key_version), (2, 1));
    assert_eq!(sel.lifecycle, Lifecycle::Active);
    assert_eq!(sel.profile_digest, Some(digest));
    let (again, _) = opensc_send(index, "00 A4 04 00 09 F0 54 45 53 53 45 52 41 01 00");
    assert_ne!(again[60..], data[60..], "a fresh challenge every SELECT");

    // An instruction the card does not know.
    let (data, sw) = opensc_send(index, "80 FF 00 00");
    assert!(data.is_empty());
    assert_eq!(sw, 0x6D00);

    // pcsc_scan lists the reader with the card and its ATR, then quits.
    let out = run_with_timeout(
        Command::new("pcsc_scan").args(["-n", "-t", "2"]),
        Duration::from_secs(20),
    );
    let scan = String::from_utf8_lossy(&out.stdout);
    eprintln!("pcsc_scan -n -t 2:\n{scan}");
    let atr: Vec<String> = ATR.iter().map(|b| format!("{b:02X}")).collect();
    let atr = atr.join(" ");
    assert_eq!(atr, "3B 8A 80 01 54 45 53 53 45 52 41 2D 30 31 60");
    assert_eq!(ATR[1..].iter().fold(0, |a, b| a ^ b), 0, "TCK: T0 to TCK XOR to zero");
    assert_eq!(&ATR[4..14], b"TESSERA-01", "historical bytes");
    let block = scan
        .split("\n Reader ")
        .skip(1)
        .find(|b| b.contains(served.reader()))
        .unwrap_or_else(|| panic!("pcsc_scan does not list {}: {scan}", served.reader()));
    assert!(block.contains("Card inserted"), "{block}");
    assert!(block.contains(&format!("ATR: {atr}")), "{block}");

    // The tools changed nothing, and a till still works after them.
    assert_eq!(card_file_state(&path), before);
    let mut terminal = test_terminal(0x5400_0001);
    let mut transport = PcscTransport::connect(served.reader()).unwrap();
    let (receipt, _, labels) = tap_and(&mut terminal, &mut transport, TxKind::Earn, 5);
    assert_eq!(receipt.record.balance_after, 5);
    assert_eq!(labels.len(), 4);
}

/// A relay in the field turns the card's `9000` to a committed EARN into
/// `6C10` (the served card plays the relay). Through the real pcscd: the
/// PC/SC transport does not re-send the MAC'd EARN (it would get a genuine
/// `6988` from the card and a till that believed it would void a committed
/// transaction); the terminal establishes the outcome from the card's
/// authenticated state in the same tap: one earn, done, once.
#[test]
fn relay_6c10_through_pcscd_no_blind_resend() {
    if skip("relay_6c10_through_pcscd_no_blind_resend") {
        return;
    }
    let _own = exclusive();
    let _dog = Watchdog::arm("relay_6c10_through_pcscd_no_blind_resend", TEST_LIMIT);
    let dir = tempfile::tempdir().unwrap();
    let path = card_file(dir.path(), "relay.card", 40, 40);
    let _pcscd = Pcscd::start_suite(1);
    let mut served = ServedCard::start(&path, 0, &["--relay-rewrite", "30:6C10", "--json"]);
    let mut transport = PcscTransport::connect(served.reader()).unwrap();
    let mut terminal = test_terminal(0x5300_0001);
    let receipt = {
        let mut session = terminal.tap(&mut transport).unwrap();
        session.earn(25).unwrap()
    };
    assert_eq!((receipt.record.counter, receipt.record.balance_after), (1, 25));
    let trace = terminal.take_trace();
    assert_eq!(
        trace.labels(),
        [
            "SELECT",
            "AUTHENTICATE",
            "READ PROFILE",
            "EARN",
            "SELECT",
            "AUTHENTICATE"
        ],
        "the outcome is read from the card, in the same tap"
    );
    let earn = &trace.entries[3];
    assert_eq!(
        earn.response.as_deref(),
        Some(&[0x6C, 0x10][..]),
        "the forged answer reached the terminal"
    );
    drop(transport);
    let (status, log) = served.stop();
    assert!(status.is_some_and(|s| s.success()), "{log}");
    // The card saw exactly the commands in the trace: no hidden re-send.
    let stats: serde_json::Value = log
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no stats in {log}"));
    assert_eq!(stats["apdus"], trace.commands() as u64, "{stats}");
    let st = card_file_state(&path);
    assert_eq!((st.counter, st.balance), (1, 25));
}

/// The hurried clerk through the real PC/SC stack and the CLI: the card is
/// pulled during `pos earn --reader` after it committed the earn; the clerk
/// runs the identical command again. The second run finds the first one
/// done on the card and charges nothing (exit code 7); `--again` is a new
/// purchase.
#[test]
fn pulled_card_and_identical_retry_through_pcscd_credit_once() {
    if skip("pulled_card_and_identical_retry_through_pcscd_credit_once") {
        return;
    }
    let _own = exclusive();
    let _dog = Watchdog::arm("pulled_card_and_identical_retry_through_pcscd_credit_once", TEST_LIMIT);
    let dir = tempfile::tempdir().unwrap();
    let path = card_file(dir.path(), "retry.card", 41, 41);
    let _pcscd = Pcscd::start_suite(1);
    // SELECT, AUTHENTICATE, READ PROFILE are answered; the card executes
    // the EARN, leaves the field without answering, and comes back.
    let mut served = ServedCard::start(&path, 0, &["--remove-after", "3", "--execute-before-removal"]);
    let till = dir.path().join("till");
    let earn = |extra: &[&str]| {
        let mut args = vec![
            "pos",
            "earn",
            "--test-keys",
            "--reader",
            served.reader(),
            "--wait",
            "15",
            "--terminal-dir",
            till.to_str().unwrap(),
            "--amount",
            "42.00",
        ];
        args.extend_from_slice(extra);
        run_tessera(&args, Duration::from_secs(60))
    };
    let first = earn(&[]);
    assert_eq!(
        first.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(String::from_utf8_lossy(&first.stderr).contains("tap the card again"));
    let after_first = card_file_state(&path);
    assert_eq!(after_first.counter, 1, "the card committed the earn");
    // Out of the field, then back (the serve process re-inserts it).
    served.wait_absent(WAIT).unwrap();
    served.wait_present(WAIT);

    let retry = earn(&[]);
    assert_eq!(
        retry.status.code(),
        Some(7),
        "{} / serve log: {}",
        String::from_utf8_lossy(&retry.stderr),
        served.log()
    );
    assert!(String::from_utf8_lossy(&retry.stderr).contains("ALREADY DONE"));
    assert_eq!(card_file_state(&path), after_first, "nothing charged twice");

    let again = earn(&["--again"]);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    let st = card_file_state(&path);
    assert_eq!(st.counter, 2);
    assert_eq!(st.balance, 2 * after_first.balance);
    let (status, log) = served.stop();
    assert!(status.is_some_and(|s| s.success()), "{log}");
}
