//! Issuer adjustments and card replacement end to end, through the CLI and
//! a real `tessera office serve`: `office adjust` → `pos sync` → tap →
//! `pos settle` → the books (`office adjust list`, `office card show`,
//! `office verify`); `office card replace` moves a lost card's balance to
//! its successor, and a replaced card used at a till that had not synced
//! yet is an exception, its points neither lost nor doubled.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

struct Server(Child, String);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(term: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .env("TESSERA_TERMINAL_DIR", term)
        .env_remove("TESSERA_OPERATOR")
        .env("USER", "tester")
        .output()
        .unwrap()
}

fn ok(term: &Path, args: &[&str]) -> String {
    let out = run(term, args);
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json(term: &Path, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    let v: Value = serde_json::from_str(&ok(term, &a)).unwrap();
    assert_eq!(v["version"], 1);
    v
}

fn serve(office: &Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args([
            "office",
            "serve",
            "--dir",
            office.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().strip_prefix("listening on ").unwrap().to_owned();
    Server(child, format!("https://{addr}"))
}

struct Office {
    dir: tempfile::TempDir,
}

impl Office {
    fn new(terminals: &[u32]) -> Self {
        let office = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        let o = office.s("office");
        ok(&office.term(7), &["office", "init", "--dir", &o]);
        for t in terminals {
            let bundle = office.s(&format!("bundle{t}.json"));
            let id = t.to_string();
            ok(
                &office.term(*t),
                &[
                    "office",
                    "export-terminal",
                    "--dir",
                    &o,
                    "--terminal-id",
                    &id,
                    "--out",
                    &bundle,
                ],
            );
        }
        office
    }

    fn s(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }

    fn term(&self, t: u32) -> PathBuf {
        self.dir.path().join(format!("terminal{t}"))
    }

    fn issue(&self, file: &str, id: &str) {
        ok(
            &self.term(7),
            &[
                "office",
                "issue",
                "--dir",
                &self.s("office"),
                "--card",
                &self.s(file),
                "--card-id",
                id,
                "--name",
                "Анна Петрова",
                "--birth-date",
                "1990-03-14",
                "--city",
                "Нижний Новгород",
            ],
        );
    }

    /// `tessera pos …` at terminal `t` (with its bundle; with the card for
    /// taps).
    fn pos(&self, t: u32, args: &[&str], card: Option<&str>) -> Output {
        let mut a: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        if let Some(c) = card {
            a.extend(["--card".to_owned(), self.s(c)]);
        }
        a.extend(["--keys".to_owned(), self.s(&format!("bundle{t}.json"))]);
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        run(&self.term(t), &refs)
    }

    fn pos_ok(&self, t: u32, args: &[&str], card: Option<&str>) -> String {
        let out = self.pos(t, args, card);
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn read(&self, t: u32, card: &str) -> Value {
        serde_json::from_str(&self.pos_ok(t, &["pos", "read", "--json"], Some(card))).unwrap()
    }

    fn office(&self, args: &[&str]) -> Value {
        let dir = self.s("office");
        let mut a = args.to_vec();
        a.extend(["--dir", &dir]);
        json(&self.term(7), &a)
    }
}

fn balance(tap: &Value) -> i64 {
    tap["card"]["balance"].as_i64().unwrap()
}

#[test]
fn goodwill_credit_reaches_the_card_through_sync_and_settles() {
    let shop = Office::new(&[7]);
    let o = shop.s("office");
    shop.issue("anna.card", "7E57000000000C01");
    let server = serve(&shop.dir.path().join("office"));
    shop.pos_ok(7, &["pos", "sync", "--server", &server.1], None);
    shop.pos_ok(7, &["pos", "earn", "--amount", "20"], Some("anna.card"));
    let before = balance(&shop.read(7, "anna.card"));

    // Refused, each with one line and nothing changed: a card never issued,
    // zero points, a goodwill debit, no reason.
    for (args, code) in [
        (vec!["--card", "7E57000000000C99", "--points", "10", "--reason", "x"], 6),
        (vec!["--card", "7E57000000000C01", "--points", "0", "--reason", "x"], 2),
        (vec!["--card", "7E57000000000C01", "--points", "-5", "--reason", "x"], 2),
        (vec!["--card", "7E57000000000C01", "--points", "5", "--reason", " "], 2),
        (
            vec![
                "--card",
                "7E57000000000C01",
                "--points",
                "-100000",
                "--kind",
                "correction",
                "--reason",
                "x",
            ],
            6,
        ),
    ] {
        let mut a = vec!["office", "adjust", "--dir", &o];
        a.extend(args.iter().copied());
        let out = run(&shop.term(7), &a);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{a:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
    }
    assert_eq!(
        shop.office(&["office", "adjust", "list"])["adjustments"],
        serde_json::json!([])
    );

    let issued = shop.office(&[
        "office",
        "adjust",
        "--card",
        "7E57000000000C01",
        "--points",
        "250",
        "--reason",
        "the coffee machine broke",
        "--operator",
        "Мария",
    ]);
    assert_eq!(issued["adjustment"]["seq"], 1);
    assert_eq!(issued["adjustment"]["state"], "pending");
    let list = shop.office(&["office", "adjust", "list", "--pending"]);
    assert_eq!(list["adjustments"][0]["operator"], "Мария");
    assert_eq!(list["adjustments"][0]["kind"], "goodwill");

    // Not synced yet: the tap knows nothing of it.
    let tap = shop.read(7, "anna.card");
    assert_eq!(tap["adjusted"], serde_json::json!([]));
    shop.pos_ok(7, &["pos", "sync", "--server", &server.1], None);
    let tap = shop.read(7, "anna.card");
    assert_eq!(tap["adjusted"][0]["seq"], 1);
    assert_eq!(tap["adjusted"][0]["points"], 250);
    assert_eq!(balance(&tap), before + 250);
    // Delivered once: the next tap sends nothing, even before settlement.
    let text = shop.pos_ok(7, &["pos", "read"], Some("anna.card"));
    assert!(!text.contains("adjustment"), "{text}");
    assert_eq!(balance(&shop.read(7, "anna.card")), before + 250);

    shop.pos_ok(7, &["pos", "settle", "--server", &server.1], None);
    let list = shop.office(&["office", "adjust", "list"]);
    assert_eq!(list["adjustments"][0]["state"], "applied");
    assert!(shop.office(&["office", "adjust", "list", "--pending"])["adjustments"]
        .as_array()
        .unwrap()
        .is_empty());
    let book = shop.office(&["office", "card", "show", "--card", "7E57000000000C01"]);
    assert_eq!(book["card"]["shadow_balance"].as_i64().unwrap(), before + 250);
    assert_eq!(book["card"]["card_balance"].as_i64().unwrap(), before + 250);
    ok(&shop.term(7), &["office", "verify", "--dir", &o]);
    let exceptions = shop.office(&["office", "report", "exceptions"]);
    assert!(!exceptions.to_string().contains("adjustment-mismatch"), "{exceptions}");
    // The next sync no longer carries it.
    shop.pos_ok(7, &["pos", "sync", "--server", &server.1], None);
    let held: Value =
        serde_json::from_str(&std::fs::read_to_string(shop.term(7).join("adjustments.json")).unwrap()).unwrap();
    assert_eq!(held["adjustments"], serde_json::json!([]));

    // A correction debit, then the list in CSV.
    shop.office(&[
        "office",
        "adjust",
        "--card",
        "7E57000000000C01",
        "--points",
        "-50",
        "--kind",
        "correction",
        "--reason",
        "scanned twice",
    ]);
    shop.pos_ok(7, &["pos", "sync", "--server", &server.1], None);
    assert_eq!(balance(&shop.read(7, "anna.card")), before + 200);
    shop.pos_ok(7, &["pos", "settle", "--server", &server.1], None);
    ok(&shop.term(7), &["office", "verify", "--dir", &o]);
    let csv = ok(&shop.term(7), &["office", "adjust", "list", "--dir", &o, "--csv"]);
    assert!(csv.starts_with("card,seq,points,kind,state"), "{csv}");
    assert!(csv.contains("7E57000000000C01,2,-50,correction,applied"), "{csv}");
}

#[test]
fn a_replaced_card_hands_its_balance_to_the_new_one() {
    let shop = Office::new(&[7, 8]);
    let o = shop.s("office");
    shop.issue("old.card", "7E57000000000D01");
    let server = serve(&shop.dir.path().join("office"));
    for t in [7, 8] {
        shop.pos_ok(t, &["pos", "sync", "--server", &server.1], None);
    }
    shop.pos_ok(7, &["pos", "earn", "--amount", "30"], Some("old.card"));
    let points = balance(&shop.read(7, "old.card"));
    assert!(points > 0);
    shop.pos_ok(7, &["pos", "settle", "--server", &server.1], None);

    // A card never issued, or the same card, is refused.
    let new = shop.s("new.card");
    let out = run(
        &shop.term(7),
        &[
            "office",
            "card",
            "replace",
            "--dir",
            &o,
            "--old",
            "7E57000000000D99",
            "--card",
            &new,
        ],
    );
    assert_eq!(out.status.code(), Some(6), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!Path::new(&new).exists(), "no card file for a refused replacement");

    let r = shop.office(&[
        "office",
        "card",
        "replace",
        "--old",
        "7E57000000000D01",
        "--card",
        &new,
        "--card-id",
        "7E57000000000D02",
        "--reason",
        "lost on the bus",
    ]);
    assert_eq!(r["points"].as_i64().unwrap(), points);
    assert_eq!(r["adjustment"]["kind"], "replacement");
    assert_eq!(r["profile"]["name"], "Анна Петрова");
    // Replaced once only.
    let out = run(
        &shop.term(7),
        &[
            "office",
            "card",
            "replace",
            "--dir",
            &o,
            "--old",
            "7E57000000000D01",
            "--card",
            &shop.s("third.card"),
        ],
    );
    assert_eq!(out.status.code(), Some(6));

    // Till 8 has not synced since: the old card still works there, offline.
    let spend = (points / 2).max(1).to_string();
    shop.pos_ok(8, &["pos", "redeem", "--points", &spend], Some("old.card"));

    // Till 7 syncs: the new card gets the balance at its first tap, the old
    // card is blocked.
    shop.pos_ok(7, &["pos", "sync", "--server", &server.1], None);
    let tap = shop.read(7, "new.card");
    assert_eq!(balance(&tap), points);
    assert_eq!(tap["adjusted"][0]["points"].as_i64().unwrap(), points);
    let out = shop.pos(7, &["pos", "read"], Some("old.card"));
    assert_ne!(out.status.code(), Some(0));
    for t in [7, 8] {
        shop.pos_ok(t, &["pos", "settle", "--server", &server.1], None);
    }

    // Both cards' books explain it; the liability counts the points once,
    // minus what the old card spent after the replacement, which is named.
    let old = shop.office(&["office", "card", "show", "--card", "7E57000000000D01"]);
    assert_eq!(old["replaced_by"], "7E57000000000D02");
    assert_eq!(old["card"]["hotlisted"], true);
    let moved = format!("moved {points} points to card 7E57000000000D02");
    assert!(old["postings"].to_string().contains(&moved), "{old}");
    let spent: i64 = spend.parse().unwrap();
    assert_eq!(old["card"]["shadow_balance"].as_i64().unwrap(), -spent);
    let newb = shop.office(&["office", "card", "show", "--card", "7E57000000000D02"]);
    assert_eq!(newb["replaces"], "7E57000000000D01");
    assert!(newb["postings"]
        .to_string()
        .contains(&format!("received {points} points from card 7E57000000000D01")));
    assert_eq!(newb["card"]["shadow_balance"].as_i64().unwrap(), points);
    let text = ok(
        &shop.term(7),
        &["office", "card", "show", "--dir", &o, "--card", "7E57000000000D01"],
    );
    assert!(text.contains(&moved), "{text}");
    ok(&shop.term(7), &["office", "verify", "--dir", &o]);
    let exceptions = shop.office(&["office", "report", "exceptions"]).to_string();
    assert!(exceptions.contains("replaced-card-used"), "{exceptions}");
    assert!(!exceptions.contains("adjustment-mismatch"), "{exceptions}");
    let liability = shop.office(&["office", "report", "liability"]);
    assert!(
        liability
            .to_string()
            .contains(&format!("\"points_outstanding\":{}", points - spent)),
        "{liability}"
    );
}
