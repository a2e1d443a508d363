//! A clerk's shift at the till, in a real pseudo-terminal (tmux), with
//! the mistakes a hurried clerk makes: a decimal comma, a typo in a
//! category, a 0.01 sale, a purchase above the offline limit, a refund by
//! the receipt's reference, a refund of a refund, a till clock set in 2023,
//! `pos history | head -1`, colours on the terminal and none with
//! `NO_COLOR`. What is checked is what the clerk sees on the screen.
//!
//! tmux comes from `scripts/install-deps.sh`; when it is missing and cannot
//! be installed the session test says so loudly and is skipped — except in
//! CI (`CI=true`), where it fails.
//!
//! The closed-pipe tests need no terminal: a reader that went away never
//! makes a committed transaction a failure, nor prints a panic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TESSERA: &str = env!("CARGO_BIN_EXE_tessera");
/// 2026-12-02 09:00 in Paris.
const NOW: &str = "1796198400";

fn issue(dir: &Path) -> PathBuf {
    let card = dir.join("ada.card");
    let out = Command::new(TESSERA)
        .args([
            "card",
            "issue",
            "--card",
            card.to_str().unwrap(),
            "--name",
            "Ada Lovelace",
        ])
        .args([
            "--birth-date",
            "1990-02-28",
            "--card-id",
            "7E57000000000001",
            "--prefer",
            "coffee",
        ])
        .env("TESSERA_NOW", NOW)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    card
}

fn have_tmux() -> bool {
    Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// tmux, installed if it is missing and this runs as root.
fn tmux_or_skip() -> bool {
    if have_tmux() {
        return true;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/install-deps.sh");
    let _ = Command::new("bash").arg(script).status();
    if have_tmux() {
        return true;
    }
    assert!(
        std::env::var("CI").map_or(true, |v| v != "true"),
        "tmux is missing and could not be installed (scripts/install-deps.sh): the clerk-session test cannot run in CI"
    );
    eprintln!("SKIPPED clerk_session: tmux is missing and could not be installed — run scripts/install-deps.sh");
    false
}

struct Tmux {
    socket: PathBuf,
    step: usize,
}

impl Tmux {
    fn start(dir: &Path) -> Self {
        let socket = dir.join("tmux.sock");
        let rc = dir.join("bashrc");
        std::fs::write(&rc, "PS1='$ '\n").unwrap();
        let status = Command::new("tmux")
            .arg("-S")
            .arg(&socket)
            .args([
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-s",
                "till",
                "-x",
                "200",
                "-y",
                "50",
            ])
            .arg(format!(
                "env -u NO_COLOR TERM=xterm-256color bash --noprofile --rcfile {}",
                rc.display()
            ))
            .status()
            .unwrap();
        assert!(status.success());
        Self { socket, step: 0 }
    }

    fn tmux(&self) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-S").arg(&self.socket);
        c
    }

    /// Types `line` at the prompt and returns what the screen shows for it
    /// (with colour escapes) and the exit code.
    fn run(&mut self, line: &str) -> (String, i32) {
        self.step += 1;
        let n = self.step;
        let typed =
            format!("printf '@@%s-{n}\\n' begin; {line}; printf '@@%s-{n} rc=%s\\n' end \"${{PIPESTATUS[0]}}\"");
        let s = self
            .tmux()
            .args(["send-keys", "-t", "till", "-l", &typed])
            .status()
            .unwrap();
        assert!(s.success());
        self.tmux().args(["send-keys", "-t", "till", "Enter"]).status().unwrap();
        let (begin, end) = (format!("@@begin-{n}\n"), format!("@@end-{n} rc="));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = self
                .tmux()
                .args(["capture-pane", "-p", "-e", "-J", "-S", "-5000", "-t", "till"])
                .output()
                .unwrap();
            let screen = String::from_utf8_lossy(&out.stdout).into_owned();
            if let (Some(b), Some(e)) = (screen.rfind(&begin), screen.rfind(&end)) {
                if e > b {
                    let rest = &screen[e + end.len()..];
                    let rc: i32 = rest
                        .chars()
                        .take_while(char::is_ascii_digit)
                        .collect::<String>()
                        .parse()
                        .unwrap();
                    return (screen[b + begin.len()..e].to_owned(), rc);
                }
            }
            assert!(Instant::now() < deadline, "no answer to {line:?}: {screen}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux().arg("kill-server").status();
    }
}

const GREEN: &str = "\u{1b}[32m";
const RED: &str = "\u{1b}[31m";
const YELLOW: &str = "\u{1b}[33m";

#[test]
fn a_shift_at_the_till_with_a_hurried_clerks_mistakes() {
    if !tmux_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let card = issue(tmp.path());
    let mut t = Tmux::start(tmp.path());
    let till = tmp.path().join("till");
    t.run(&format!(
        "export TESSERA_TERMINAL_DIR={} TZ=Europe/Paris TESSERA_NOW={NOW}; cd {}",
        till.display(),
        tmp.path().display()
    ));
    let pos = format!("{TESSERA} pos");
    let on_card = format!("--card {} --test-keys", card.display());

    let (screen, rc) = t.run(&format!("{pos} shift open"));
    assert_eq!(rc, 0, "{screen}");
    assert!(screen.contains("Shift opened at 2026-12-02 09:00."), "{screen}");

    // A decimal comma: approved, in colour, with a receipt reference, the
    // money in the policy's currency and the local time.
    let (screen, rc) = t.run(&format!("{pos} earn {on_card} --amount 12,50 --category coffee"));
    assert_eq!(rc, 0, "{screen}");
    assert!(screen.contains(&format!("{GREEN}APPROVED")), "{screen:?}");
    assert!(
        screen.contains("+24 points earned on a sale of 12.50 EUR for Ada Lovelace"),
        "{screen}"
    );
    assert!(screen.contains("Receipt 0001-0001 · 2026-12-02 09:00:00"), "{screen}");

    // A typo in the category: refused with a suggestion, nothing written.
    let (screen, rc) = t.run(&format!("{pos} earn {on_card} --amount 3,20 --category cofee"));
    assert_eq!(rc, 2, "{screen}");
    assert!(
        screen.contains("unknown category cofee — did you mean coffee?"),
        "{screen}"
    );
    assert!(!screen.contains("panicked"), "{screen}");

    // Thousands separators are ambiguous.
    let (screen, rc) = t.run(&format!("{pos} earn {on_card} --amount 1,234.5"));
    assert_eq!(rc, 2, "{screen}");
    assert!(screen.contains("ambiguous amount"), "{screen}");

    // A 0.01 sale earns nothing: approved with 0 points.
    let (screen, rc) = t.run(&format!("{pos} earn {on_card} --amount 0,01"));
    assert_eq!(rc, 0, "{screen}");
    assert!(screen.contains(&format!("{GREEN}APPROVED")), "{screen:?}");
    assert!(screen.contains("0.01 EUR approved with 0 points"), "{screen}");
    assert!(!screen.contains("DECLINED"), "{screen}");

    // Above the offline limit: referred, exit 5, in yellow.
    let (screen, rc) = t.run(&format!("{pos} earn {on_card} --amount 20000"));
    assert_eq!(rc, 5, "{screen}");
    assert!(screen.contains(&format!("{YELLOW}REFERRED")), "{screen:?}");
    assert!(
        screen.contains("offline limit of 10,000.00 EUR — call the office (R05)"),
        "{screen}"
    );

    // The refund by the receipt's reference, the card presented.
    let (screen, rc) = t.run(&format!("{pos} refund {on_card} --of 0001-0001"));
    assert_eq!(rc, 0, "{screen}");
    assert!(screen.contains("-24 points refunded"), "{screen}");
    assert!(screen.contains("Receipt 0001-0002"), "{screen}");

    // A refund of that refund: its own reason, in red.
    let (screen, rc) = t.run(&format!("{pos} refund {on_card} --of 2"));
    assert_eq!(rc, 1, "{screen}");
    assert!(screen.contains(&format!("{RED}DECLINED")), "{screen:?}");
    assert!(
        screen.contains("Transaction #2 is itself a refund (D11)") || screen.contains("itself a refund"),
        "{screen}"
    );
    assert!(!screen.contains("not found"), "{screen}");

    // The till's clock set in 2023: the message names the clock.
    let (screen, rc) = t.run(&format!("TESSERA_NOW=1685000000 {pos} earn {on_card} --amount 5"));
    assert_eq!(rc, 1, "{screen}");
    assert!(screen.contains("this till's clock says 2023-05-25"), "{screen}");
    assert!(screen.contains("check the till's date"), "{screen}");

    // The receipt roll: local time, money, points, reference; a refused
    // purchase shows no bogus points.
    let (screen, rc) = t.run(&format!("{pos} history"));
    assert_eq!(rc, 0, "{screen}");
    assert!(screen.contains("2026-12-02 09:00:00"), "{screen}");
    assert!(screen.contains("12.50 EUR"), "{screen}");
    assert!(screen.contains("0001-0001"), "{screen}");
    assert!(screen.contains("REFERRED R05"), "{screen}");
    assert!(
        !screen.contains("4294967295") && !screen.contains("4,294,967,295"),
        "{screen}"
    );
    assert!(!screen.contains("1796198400"), "Unix seconds on the roll: {screen}");

    // history | head -1: one line, no panic, exit 0.
    let (screen, rc) = t.run(&format!("{pos} history | head -1"));
    assert_eq!(rc, 0, "{screen}");
    assert!(!screen.contains("panicked"), "{screen}");
    assert_eq!(screen.trim().lines().count(), 1, "{screen}");

    // NO_COLOR: the same words, no colour.
    let (screen, rc) = t.run(&format!(
        "NO_COLOR=1 {pos} earn {on_card} --amount 2.00 --category bakery"
    ));
    assert_eq!(rc, 0, "{screen}");
    assert!(screen.contains("APPROVED"), "{screen}");
    assert!(!screen.contains(GREEN), "{screen:?}");

    // Totals of the shift: sales in money, per type and category.
    let (screen, rc) = t.run(&format!("{pos} totals"));
    assert_eq!(rc, 0, "{screen}");
    assert!(screen.contains("Shift open since 2026-12-02 09:00"), "{screen}");
    assert!(screen.contains("Sales 14.51 EUR"), "{screen}");
    assert!(screen.contains("coffee"), "{screen}");
    let (screen, rc) = t.run(&format!("{pos} shift close"));
    assert_eq!(rc, 0, "{screen}");
    assert!(screen.contains("final totals"), "{screen}");
}

/// Runs `tessera` with its standard output a pipe whose reader is gone.
fn run_into_closed_pipe(args: &[&str], env: &[(&str, &Path)]) -> std::process::Output {
    let mut c = Command::new(TESSERA);
    c.args(args).env("TESSERA_NOW", NOW);
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

#[test]
fn a_closed_stdout_is_never_a_panic_nor_a_failure_after_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let card = issue(tmp.path());
    let till = tmp.path().join("till");
    let env = [("TESSERA_TERMINAL_DIR", till.as_path())];
    let c = card.to_str().unwrap();

    // `pos earn … | true`: committed, so exit 0 — a script that retries
    // on failure never credits twice.
    let out = run_into_closed_pipe(&["pos", "earn", "--card", c, "--test-keys", "--amount", "10"], &env);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let out = Command::new(TESSERA)
        .args(["pos", "history", "--json"])
        .env("TESSERA_TERMINAL_DIR", &till)
        .output()
        .unwrap();
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let done = j["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "completion")
        .count();
    assert_eq!(done, 1, "{j}");

    // A declined operation keeps its own code.
    let out = run_into_closed_pipe(&["pos", "redeem", "--card", c, "--test-keys", "--points", "999"], &env);
    assert_eq!(out.status.code(), Some(1));

    // history into a closed pipe: quiet, exit 0.
    let out = run_into_closed_pipe(&["pos", "history"], &env);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.is_empty(), "{err}");
}

#[test]
fn help_completions_and_man_pages_come_from_the_cli_definition() {
    let help = Command::new(TESSERA).args(["pos", "--help"]).output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    for cmd in [
        "read", "earn", "redeem", "refund", "shift", "history", "totals", "status", "settle", "sync",
    ] {
        assert!(help.contains(&format!("  {cmd} ")), "pos --help lacks {cmd}: {help}");
    }
    let top = Command::new(TESSERA).arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&top.stdout)
        .contains("read, earn, redeem, refund, shift, history, totals, status, readers, settle, sync"));
    let earn = Command::new(TESSERA).args(["pos", "earn", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&earn.stdout).contains("Examples:"));
    let history = Command::new(TESSERA)
        .args(["pos", "history", "--help"])
        .output()
        .unwrap();
    let history = String::from_utf8(history.stdout).unwrap();
    for irrelevant in ["--store", "--keys", "--pkcs11-module", "--test-keys"] {
        assert!(
            !history.contains(irrelevant),
            "history --help shows {irrelevant}: {history}"
        );
    }

    let bash = Command::new(TESSERA).args(["completions", "bash"]).output().unwrap();
    assert!(bash.status.success());
    let bash = String::from_utf8(bash.stdout).unwrap();
    assert!(bash.contains("complete") && bash.contains("tessera") && bash.contains("refund"));
    let bad = Command::new(TESSERA).args(["completions", "cmd.exe"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("man1");
    let out = Command::new(TESSERA)
        .args(["man", "--out", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let earn = std::fs::read_to_string(dir.join("tessera-pos-earn.1")).unwrap();
    assert!(earn.contains(".TH") && earn.contains("amount"), "{earn}");
    assert!(dir.join("tessera.1").exists() && dir.join("tessera-pos-shift-open.1").exists());
}

#[test]
fn settle_and_sync_count_their_retries_on_standard_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (office, till, bundle) = (
        tmp.path().join("office"),
        tmp.path().join("till"),
        tmp.path().join("t7.json"),
    );
    let run = |args: &[&str]| {
        Command::new(TESSERA)
            .args(args)
            .env("TESSERA_TERMINAL_DIR", &till)
            .output()
            .unwrap()
    };
    let o = office.to_str().unwrap();
    assert!(run(&["office", "init", "--dir", o]).status.success());
    let b = bundle.to_str().unwrap();
    let out = run(&[
        "office",
        "export-terminal",
        "--dir",
        o,
        "--terminal-id",
        "7",
        "--out",
        b,
        "--plain-http",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let card = tmp.path().join("anna.card");
    let c = card.to_str().unwrap();
    let out = run(&[
        "office",
        "issue",
        "--dir",
        o,
        "--card",
        c,
        "--name",
        "Anna",
        "--birth-date",
        "1990-03-14",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Something to settle.
    let out = run(&["pos", "earn", "--card", c, "--keys", b, "--amount", "5"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A loopback port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = format!("http://127.0.0.1:{port}");
    for verb in ["sync", "settle"] {
        let out = run(&[
            "pos",
            verb,
            "--keys",
            b,
            "--server",
            &server,
            "--attempts",
            "3",
            "--deadline",
            "30",
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(6), "{verb}: {err}");
        assert!(err.contains("office unreachable"), "{verb}: {err}");
        assert!(err.contains("retry 2 of 3 in 100 ms"), "{verb}: {err}");
        assert!(err.contains("retry 3 of 3 in 200 ms"), "{verb}: {err}");
        assert!(!err.contains("retry 4"), "{verb}: {err}");
        // --json: no progress lines, the answer alone.
        let out = run(&[
            "pos",
            verb,
            "--keys",
            b,
            "--server",
            &server,
            "--attempts",
            "2",
            "--json",
        ]);
        assert!(!String::from_utf8_lossy(&out.stderr).contains("retry"), "{verb}");
    }
}

#[test]
fn birth_dates_are_real_and_not_in_the_future() {
    let tmp = tempfile::tempdir().unwrap();
    let office = tmp.path().join("office");
    let o = office.to_str().unwrap();
    let run = |args: &[&str]| {
        Command::new(TESSERA)
            .args(args)
            .env("TESSERA_NOW", NOW)
            .output()
            .unwrap()
    };
    assert!(run(&["office", "init", "--dir", o]).status.success());
    for (date, words) in [
        ("1990-02-30", "there is no such date"),
        ("2031-01-01", "cannot be in the future (today is 2026-12-02)"),
        ("14.03.1990", "use YYYY-MM-DD"),
    ] {
        let card = tmp.path().join(format!("{date}.card"));
        let c = card.to_str().unwrap();
        for args in [
            vec!["card", "issue", "--card", c, "--name", "Ada", "--birth-date", date],
            vec![
                "office",
                "issue",
                "--dir",
                o,
                "--card",
                c,
                "--name",
                "Ada",
                "--birth-date",
                date,
            ],
        ] {
            let out = run(&args);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
            assert!(err.contains(words), "{args:?}: {err}");
            assert!(!card.exists(), "{args:?} wrote a card");
        }
    }
}

#[test]
fn a_zero_point_sale_settles_without_an_exception() {
    let tmp = tempfile::tempdir().unwrap();
    let (office, till) = (tmp.path().join("office"), tmp.path().join("till"));
    let run = |args: &[&str]| {
        let out = Command::new(TESSERA)
            .args(args)
            .env("TESSERA_TERMINAL_DIR", &till)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let p = |name: &str| tmp.path().join(name).to_str().unwrap().to_owned();
    let o = office.to_str().unwrap();
    run(&["office", "init", "--dir", o]);
    run(&[
        "office",
        "export-terminal",
        "--dir",
        o,
        "--terminal-id",
        "7",
        "--out",
        &p("t7.json"),
    ]);
    run(&[
        "office",
        "issue",
        "--dir",
        o,
        "--card",
        &p("a.card"),
        "--name",
        "A",
        "--birth-date",
        "1990-01-01",
    ]);
    let sale = run(&[
        "pos",
        "earn",
        "--card",
        &p("a.card"),
        "--keys",
        &p("t7.json"),
        "--amount",
        "0,01",
        "--json",
    ]);
    let j: serde_json::Value = serde_json::from_str(&sale).unwrap();
    assert_eq!(j["outcome"]["decision"], "approve", "{j}");
    assert_eq!(j["outcome"]["card_touched"], false, "{j}");
    assert_eq!(j["card"]["counter"], 0, "the card was not touched: {j}");
    run(&[
        "pos",
        "earn",
        "--card",
        &p("a.card"),
        "--keys",
        &p("t7.json"),
        "--amount",
        "5",
    ]);
    run(&["pos", "settle", "--keys", &p("t7.json"), "--out", &p("b.bin")]);
    let import = run(&["office", "import", "--dir", o, &p("b.bin")]);
    assert!(import.contains("posted"), "{import}");
    let exceptions: serde_json::Value =
        serde_json::from_str(&run(&["office", "report", "exceptions", "--dir", o, "--json"])).unwrap();
    assert_eq!(exceptions["data"], serde_json::json!([]), "{exceptions}");
    let rec: serde_json::Value =
        serde_json::from_str(&run(&["office", "report", "reconciliation", "--dir", o, "--json"])).unwrap();
    let row = &rec["data"]["rows"][0];
    assert_eq!(
        (row["posted"].as_u64(), row["exceptions"].as_u64()),
        (Some(1), Some(0)),
        "{rec}"
    );
}
