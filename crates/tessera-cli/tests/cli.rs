//! The `tessera` binary as a clerk uses it: results, one-line errors, exit
//! codes, and card files left untouched by every failure.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(args)
            .env("TESSERA_TERMINAL_DIR", self.path("terminal"))
            .output()
            .unwrap()
    }

    fn issue(&self, name: &str) -> PathBuf {
        let card = self.path(name);
        let out = self.run(&[
            "card",
            "issue",
            "--card",
            card.to_str().unwrap(),
            "--name",
            "Анна Петрова",
            "--birth-date",
            "1990-03-14",
            "--city",
            "Нижний Новгород",
            "--prefer",
            "coffee,bakery",
            "--redeem-cap",
            "1000",
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        card
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn issue_read_earn_redeem() {
    let env = Env::new();
    let card = env.issue("anna.card");
    let c = card.to_str().unwrap();
    let out = env.run(&["pos", "read", "--test-keys", "--card", c]);
    assert!(out.status.success());
    assert_eq!(
        stdout(&out).lines().next().unwrap(),
        "Hello Анна Петрова! Tier 0 · Balance 0 points."
    );

    let out = env.run(&[
        "pos",
        "earn",
        "--test-keys",
        "--card",
        c,
        "--amount",
        "120.00",
        "--json",
    ]);
    assert!(out.status.success());
    let j = json(&out);
    assert_eq!(j["version"], 1);
    assert_eq!(j["outcome"]["receipt"]["record"]["balance_after"], 120);
    assert_eq!(j["outcome"]["quote"]["base"], 120);
    assert_eq!(j["trace"]["apdus"], 3, "the profile was cached by the read");

    let out = env.run(&["pos", "redeem", "--test-keys", "--card", c, "--points", "50"]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("New balance 70 points"));

    // A basket, line by line: 3.50 + 6.50 + 1.00 = 11.00, one point per
    // unit; the lines go into the journal with the decision.
    let out = env.run(&[
        "pos",
        "earn",
        "--test-keys",
        "--card",
        c,
        "--line",
        "coffee=3,50",
        "--line",
        "bakery=6.50",
        "--line",
        "coffee=1",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let j = json(&out);
    assert_eq!(j["outcome"]["quote"]["base"], 11);
    let total = j["outcome"]["quote"]["total"].as_u64().unwrap();
    assert!(total >= 11, "{j}");
    assert_eq!(j["outcome"]["receipt"]["record"]["balance_after"], 70 + total);
    // The journal keeps each record's hashed body as text in its SQLite
    // file: find the decision's.
    let journal = std::fs::read(env.path("terminal").join("journal.sqlite")).unwrap();
    let journal = String::from_utf8_lossy(&journal);
    assert!(
        journal.contains(r#""purchase_minor":1100,"categories":["coffee","bakery"]"#),
        "the decision's amount and categories"
    );
    assert!(
        journal.contains(r#""basket":[{"category":"coffee","amount_minor":350},{"category":"bakery","amount_minor":650},{"category":"coffee","amount_minor":100}]"#),
        "the basket is journaled"
    );

    let out = env.run(&["card", "show", "--card", c, "--json"]);
    let j = json(&out);
    assert_eq!(j["balance"], 70 + total);
    assert_eq!(j["counter"], 3);
    assert_eq!(j["profile"]["home_city"], "Нижний Новгород");
    assert_eq!(j["profile_signature_valid"], true);
    assert_eq!(j["log"].as_array().unwrap().len(), 3);
}

fn assert_refused(env: &Env, card: &Path, args: &[&str], code: i32, words: &str) {
    let before = std::fs::read(card).ok();
    let out = env.run(args);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {}", stderr(&out));
    let err = stderr(&out);
    // `--test-keys` adds its warning line on every command.
    let err: String = err
        .lines()
        .filter(|l| !l.starts_with("WARNING: using the published TEST keys"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(err.lines().count(), 1, "{args:?}: not one line: {err:?}");
    assert!(err.contains(words), "{args:?}: {err:?} lacks {words:?}");
    assert_eq!(std::fs::read(card).ok(), before, "{args:?} changed the card file");
}

#[test]
fn bad_input_gives_one_line_a_code_and_changes_nothing() {
    let env = Env::new();
    let card = env.issue("anna.card");
    let c = card.to_str().unwrap();
    assert!(env
        .run(&["pos", "earn", "--test-keys", "--card", c, "--amount", "100"])
        .status
        .success());

    let cases: &[(&[&str], i32, &str)] = &[
        (&["earn", "--amount", "0"], 2, "more than zero"),
        (&["earn", "--amount", "0.00"], 2, "more than zero"),
        (&["earn", "--amount", "-5"], 2, "cannot be negative"),
        (&["earn", "--amount", "1.234"], 2, "decimals"),
        (&["earn", "--amount", "99999999999999999999"], 2, "too large"),
        (&["earn", "--amount", "1,234.5"], 2, "ambiguous"),
        (&["earn", "--amount", "1,234"], 2, "at most 2 decimals"),
        (
            &["earn", "--amount", "12,50", "--category", "cofee"],
            2,
            "did you mean coffee?",
        ),
        (&["earn", "--line", "cofee=3,50"], 2, "did you mean coffee?"),
        (&["earn", "--line", "coffee 3,50"], 2, "CATEGORY=AMOUNT"),
        (
            &["earn", "--line", "coffee=3,50", "--line", "bakery=0"],
            2,
            "more than zero",
        ),
        // Above the offline limit: the office decides, a referral (exit 5).
        (&["earn", "--amount", "4294967295"], 5, "offline limit"),
        (&["redeem", "--points", "0"], 2, "at least 1 point"),
        (&["redeem", "--points", "-5"], 2, "cannot be negative"),
        (&["redeem", "--points", "4294967296"], 2, "whole number"),
        (&["redeem", "--points", "1e3"], 2, "whole number"),
        (&["redeem", "--points", "101"], 1, "Not enough points"),
        (&["redeem", "--points", "1001"], 1, "Not enough points"),
        (&["refund", "--of", "nonsense"], 2, "A3F9-0012"),
        (&["refund", "--of", "0999-0001"], 2, "present the card"),
        (&["refund", "--of", "7E57000000000999:1"], 2, "present the card"),
    ];
    for (args, code, words) in cases {
        let mut full = vec!["pos", args[0], "--test-keys", "--card", c];
        full.extend_from_slice(&args[1..]);
        assert_refused(&env, &card, &full, *code, words);
    }

    let missing = env.path("missing.card");
    assert_refused(
        &env,
        &missing,
        &["pos", "read", "--test-keys", "--card", missing.to_str().unwrap()],
        4,
        "not found",
    );

    // Corrupt files: garbage, a truncated image, a damaged field.
    let text = std::fs::read_to_string(&card).unwrap();
    let variants = [
        ("garbage.card", "not json at all".to_string()),
        ("truncated.card", text[..text.len() / 2].to_string()),
        ("field.card", text.replace("\"balance\": \"", "\"balance\": \"zz")),
        ("short.card", text.replace("\"counter\": \"0000", "\"counter\": \"")),
    ];
    for (name, content) in variants {
        let p = env.path(name);
        std::fs::write(&p, content).unwrap();
        assert_refused(
            &env,
            &p,
            &[
                "pos",
                "earn",
                "--test-keys",
                "--card",
                p.to_str().unwrap(),
                "--amount",
                "5",
            ],
            4,
            "card file",
        );
    }

    // JSON mode reports failures as JSON too.
    let out = env.run(&["pos", "redeem", "--test-keys", "--card", c, "--points", "500", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let j = json(&out);
    assert_eq!(j["ok"], false);
    assert_eq!(j["exit_code"], 1);
    assert_eq!(j["outcome"]["reason"], "D08");
}

#[test]
fn issue_never_overwrites_and_validates_first() {
    let env = Env::new();
    let card = env.issue("anna.card");
    let c = card.to_str().unwrap();
    assert_refused(
        &env,
        &card,
        &[
            "card",
            "issue",
            "--card",
            c,
            "--name",
            "X",
            "--birth-date",
            "1990-01-01",
        ],
        1,
        "never overwritten",
    );
    let p = env.path("new.card");
    let out = env.run(&[
        "card",
        "issue",
        "--card",
        p.to_str().unwrap(),
        "--name",
        "X",
        "--birth-date",
        "1990-02-30",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!p.exists());
    let long = "Ж".repeat(40);
    let out = env.run(&[
        "card",
        "issue",
        "--card",
        p.to_str().unwrap(),
        "--name",
        &long,
        "--birth-date",
        "1990-02-03",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!p.exists());
}

#[test]
fn demo_runs_and_reconciles() {
    let env = Env::new();
    let dash = env.path("dash");
    let dash = dash.to_str().unwrap();
    let out = env.run(&["demo", "--seed", "3", "--in-process", "--dashboard", dash]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = stdout(&out);
    assert!(s.contains("Every point is explained."));
    // The analyst's summary of the generated history, and its dashboard.
    assert!(s.contains("400 customers spent"), "{s}");
    assert!(s.contains("Segments (RFM on money): "), "{s}");
    assert!(s.contains("Campaign favourites-double (20% held out"), "{s}");
    assert!(s.contains("Top store: "), "{s}");
    assert!(s.contains(&format!("Open {dash}/index.html")), "{s}");
    for page in [
        "index",
        "segments",
        "cohorts",
        "campaigns",
        "stores",
        "points",
        "customers",
    ] {
        let html = std::fs::read_to_string(env.path("dash").join(format!("{page}.html"))).unwrap();
        assert!(html.contains("data-figure") && !html.contains("No data yet."), "{page}");
    }
    // A directory that is not the demo's is never overwritten.
    std::fs::create_dir(env.path("mine")).unwrap();
    std::fs::write(env.path("mine").join("notes.txt"), "mine").unwrap();
    let out = env.run(&[
        "demo",
        "--seed",
        "3",
        "--in-process",
        "--dashboard",
        env.path("mine").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("was not written by the demo"), "{}", stderr(&out));
    assert!(stdout(&out).is_empty(), "refused before the day begins");
    assert_eq!(
        std::fs::read_to_string(env.path("mine").join("notes.txt")).unwrap(),
        "mine"
    );
    assert!(s.contains("Анна Петрова"));
    assert!(s.contains("Happy birthday week +50"), "{s}");
    assert!(s.contains("went through"), "{s}");
    // The demo replaces its own dashboard of a previous run.
    let out = env.run(&["demo", "--seed", "3", "--json", "--in-process", "--dashboard", dash]);
    let j = json(&out);
    let a = &j["analytics"];
    assert_eq!(a["generated"]["customers"], 400);
    assert_eq!(a["summary"]["customers"], 400);
    assert_eq!(a["dashboard"], format!("{dash}/index.html"));
    let b = &j["back_office"];
    assert_eq!(b["reconciled"], true);
    assert_eq!(b["chains_intact"], true);
    assert_eq!(b["exceptions"], 0);
    assert!(b["card_transactions_posted"].as_u64().unwrap() >= 8);
    for c in b["cards"].as_array().unwrap() {
        assert_eq!(c["balance"], c["ledger_balance"], "{c}");
    }
    // Cached-profile transactions take 3 APDUs, first visits 4; the pulled
    // purchase adds the unanswered re-SELECT of its own tap and the re-tap
    // (SELECT, AUTHENTICATE), where the clerk's repeat charges nothing.
    for e in j["events"].as_array().unwrap() {
        let pulled = e["lines"].to_string().contains("Card removed");
        assert!(e["apdus"].as_u64().unwrap() <= if pulled { 6 } else { 5 }, "{e}");
        if pulled {
            assert!(
                e["lines"].to_string().contains("ALREADY DONE") || e["lines"].to_string().contains("did not happen"),
                "{e}"
            );
        }
    }
}
