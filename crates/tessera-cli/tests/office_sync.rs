//! Sync through a real `tessera office serve`: a profile update queued in
//! the back office reaches the card at its next tap, the terminal verifies
//! the new signature; settled counters restart the card's offline limits.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

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
        .output()
        .unwrap()
}

fn ok(term: &Path, args: &[&str]) -> String {
    let out = run(term, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
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
    Server(child, format!("http://{addr}"))
}

#[test]
fn profile_update_and_settlement_reach_the_card_through_sync() {
    let dir = tempfile::tempdir().unwrap();
    let (office, term) = (dir.path().join("office"), dir.path().join("terminal"));
    let o = office.to_str().unwrap();
    let bundle = dir.path().join("bundle.json");
    let card = dir.path().join("anna.card");
    let (b, c) = (bundle.to_str().unwrap(), card.to_str().unwrap());
    ok(&term, &["office", "init", "--dir", o]);
    ok(
        &term,
        &[
            "office",
            "export-terminal",
            "--dir",
            o,
            "--terminal-id",
            "7",
            "--out",
            b,
        ],
    );
    ok(
        &term,
        &[
            "office",
            "issue",
            "--dir",
            o,
            "--card",
            c,
            "--card-id",
            "7E57000000000A01",
            "--name",
            "Анна Петрова",
            "--birth-date",
            "1990-03-14",
            "--city",
            "Нижний Новгород",
        ],
    );
    let server = serve(&office);
    ok(
        &term,
        &[
            "pos",
            "earn",
            "--card",
            c,
            "--keys",
            b,
            "--terminal-id",
            "7",
            "--amount",
            "100",
        ],
    );
    ok(&term, &["pos", "redeem", "--card", c, "--keys", b, "--points", "30"]);
    ok(&term, &["pos", "settle", "--server", &server.1, "--keys", b]);

    // The office changes the customer's city; the terminal syncs.
    ok(
        &term,
        &[
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
            "--tier",
            "1",
        ],
    );
    ok(&term, &["pos", "sync", "--server", &server.1, "--keys", b]);
    assert!(term.join("profile-updates/7E57000000000A01.json").exists());

    // Next tap: the card gets the new profile and learns what is settled.
    let read = ok(&term, &["pos", "read", "--card", c, "--keys", b, "--json"]);
    let j: serde_json::Value = serde_json::from_str(&read).unwrap();
    assert_eq!(j["profile_updated"], 2, "{j}");
    assert_eq!(j["settlement_acknowledged"], 2, "{j}");
    assert!(
        !term.join("profile-updates/7E57000000000A01.json").exists(),
        "delivered once"
    );

    // Another terminal (fresh cache) reads the new profile from the card and
    // verifies the issuer's signature on it.
    let other = dir.path().join("other-terminal");
    let bundle2 = dir.path().join("bundle2.json");
    ok(
        &other,
        &[
            "office",
            "export-terminal",
            "--dir",
            o,
            "--terminal-id",
            "8",
            "--out",
            bundle2.to_str().unwrap(),
        ],
    );
    let read = ok(
        &other,
        &[
            "pos",
            "read",
            "--card",
            c,
            "--keys",
            bundle2.to_str().unwrap(),
            "--terminal-id",
            "8",
            "--json",
        ],
    );
    let j: serde_json::Value = serde_json::from_str(&read).unwrap();
    assert_eq!(j["card"]["profile"]["home_city"], "Казань");
    assert_eq!(j["card"]["profile"]["version"], 2);
    assert_eq!(j["card"]["profile_cached"], false);
    let show = ok(&term, &["card", "show", "--card", c, "--keys", b, "--json"]);
    let j: serde_json::Value = serde_json::from_str(&show).unwrap();
    assert_eq!(j["profile_signature_valid"], true);
    drop(server);
}
