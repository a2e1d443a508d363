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
    Server(child, format!("https://{addr}"))
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
    // Personal data on the till's disk is owner-only.
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&term.join("profile-updates/7E57000000000A01.json")), 0o600);
        assert_eq!(mode(&term.join("profiles")), 0o700);
        for f in std::fs::read_dir(term.join("profiles")).unwrap() {
            assert_eq!(mode(&f.unwrap().path()), 0o600);
        }
    }

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

/// An office, a till bundle and an issued card, for the tests below.
struct Shop {
    dir: tempfile::TempDir,
}

impl Shop {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let shop = Self { dir };
        let o = shop.s("office");
        ok(&shop.term(), &["office", "init", "--dir", &o]);
        ok(
            &shop.term(),
            &[
                "office",
                "export-terminal",
                "--dir",
                &o,
                "--terminal-id",
                "7",
                "--out",
                &shop.s("bundle.json"),
            ],
        );
        ok(
            &shop.term(),
            &[
                "office",
                "issue",
                "--dir",
                &o,
                "--card",
                &shop.s("anna.card"),
                "--card-id",
                "7E57000000000B01",
                "--name",
                "Анна Петрова",
                "--birth-date",
                "1990-03-14",
            ],
        );
        shop
    }

    fn s(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }

    fn term(&self) -> std::path::PathBuf {
        self.dir.path().join("terminal")
    }

    fn pos(&self, args: &[&str]) -> Output {
        let mut a: Vec<&str> = args.to_vec();
        let (card, bundle) = (self.s("anna.card"), self.s("bundle.json"));
        if !matches!(args[1], "settle" | "sync") {
            a.extend_from_slice(&["--card", &card]);
        }
        a.extend_from_slice(&["--keys", &bundle]);
        run(&self.term(), &a)
    }
}

/// A clerk edits `settled.json` to reset the card's offline limits: the
/// card refuses the made-up acknowledgement and the redemption stays
/// referred. The office's genuine acknowledgement (settle, sync) works.
#[test]
fn hand_edited_settled_json_does_not_lift_offline_limits() {
    let shop = Shop::new();
    assert!(shop.pos(&["pos", "earn", "--amount", "4000"]).status.success());
    // The default policy allows 5 offline redemptions between settlements.
    for _ in 0..5 {
        let out = shop.pos(&["pos", "redeem", "--points", "10"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let out = shop.pos(&["pos", "redeem", "--points", "10"]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "referred: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The edit: everything up to counter 6 "settled", with a made-up MAC.
    std::fs::write(
        shop.term().join("settled.json"),
        r#"{"version": 3, "cards": {"7E57000000000B01": {"counter": 6, "issuer_macs": {"2": "0000000000000000"}}}}"#,
    )
    .unwrap();
    let out = shop.pos(&["pos", "redeem", "--points", "10"]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "still referred: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = shop.pos(&["pos", "read", "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&read.stdout).unwrap();
    assert_eq!(j["settlement_acknowledged"], serde_json::Value::Null, "{j}");
    // The genuine path.
    let server = serve(&shop.dir.path().join("office"));
    assert!(shop.pos(&["pos", "settle", "--server", &server.1]).status.success());
    assert!(shop.pos(&["pos", "sync", "--server", &server.1]).status.success());
    let out = shop.pos(&["pos", "redeem", "--points", "10", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["settlement_acknowledged"], 6, "{j}");
}

/// A card locked by failed authentications (here: its image says so, as
/// five random cryptograms would leave it) is unblocked by the office: the
/// UNBLOCK travels through sync and opens the card at its next tap.
#[test]
fn office_unblock_reaches_a_locked_card_through_sync() {
    let shop = Shop::new();
    let card = shop.s("anna.card");
    let image = std::fs::read_to_string(&card).unwrap();
    let locked = image.replace("\"auth_failures\": \"00\"", "\"auth_failures\": \"05\"");
    assert_ne!(locked, image);
    std::fs::write(&card, locked).unwrap();
    let out = shop.pos(&["pos", "read"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("locked"));
    let o = shop.s("office");
    // Only a card this office issued.
    let out = run(
        &shop.term(),
        &["office", "unblock", "--dir", &o, "--card", "7E57000000000B99"],
    );
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
    ok(
        &shop.term(),
        &["office", "unblock", "--dir", &o, "--card", "7E57000000000B01"],
    );
    let server = serve(&shop.dir.path().join("office"));
    assert!(shop.pos(&["pos", "sync", "--server", &server.1]).status.success());
    let out = shop.pos(&["pos", "read"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Delivered: the till drops it, and the next tap costs no extra APDU.
    let left: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(shop.term().join("unblocks.json")).unwrap()).unwrap();
    assert_eq!(left["cards"].as_object().unwrap().len(), 0, "{left}");
}

/// No keys, no till: `pos` without `--keys` or `--test-keys` does nothing;
/// `office sign-campaigns` needs `--dir` or `--test-keys`; a production
/// bundle is never the test keys.
#[test]
fn no_silent_fallback_to_the_test_keys() {
    let shop = Shop::new();
    let before = std::fs::read(shop.s("anna.card")).unwrap();
    let out = run(
        &shop.term(),
        &["pos", "earn", "--card", &shop.s("anna.card"), "--amount", "5"],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--keys") && err.contains("--test-keys"), "{err}");
    assert_eq!(std::fs::read(shop.s("anna.card")).unwrap(), before);
    // The test keys at a production card: refused before any AUTHENTICATE.
    let out = run(
        &shop.term(),
        &[
            "pos",
            "read",
            "--card",
            &shop.s("anna.card"),
            "--test-keys",
            "--terminal-dir",
            &shop.s("t2"),
        ],
    );
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("WARNING") && err.contains("not set up for this card"),
        "{err}"
    );
    let st: serde_json::Value = serde_json::from_slice(&std::fs::read(shop.s("anna.card")).unwrap()).unwrap();
    assert_eq!(st["cells"]["auth_failures"], "00", "no try spent");
    std::fs::write(shop.s("c.toml"), "version = 1\n").unwrap();
    let out = run(&shop.term(), &["office", "sign-campaigns", "--file", &shop.s("c.toml")]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let keys: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(shop.dir.path().join("office/issuer-keys.json")).unwrap())
            .unwrap();
    assert_ne!(keys["key_version"], 1);
    assert_ne!(keys["issuer_id"], "54455354");
}

/// Key rotation end to end: the office moves to a new key version, tills
/// get a new bundle, and the card moves at its next tap (KEY UPDATE through
/// sync); its certificates of both versions verify in the ledger; a till
/// with only the old bundle can no longer open it and says so without
/// spending a try.
#[test]
fn key_rotation_moves_cards_at_their_next_tap() {
    let shop = Shop::new();
    let o = shop.s("office");
    assert!(shop.pos(&["pos", "earn", "--amount", "10"]).status.success());
    let out = ok(&shop.term(), &["office", "rotate-keys", "--dir", &o, "--json"]);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (j["from_key_version"].as_u64(), j["key_version"].as_u64()),
        (Some(2), Some(3))
    );
    let b3 = shop.s("bundle3.json");
    ok(
        &shop.term(),
        &[
            "office",
            "export-terminal",
            "--dir",
            &o,
            "--terminal-id",
            "7",
            "--out",
            &b3,
        ],
    );
    let card = shop.s("anna.card");
    let pos3 = |args: &[&str]| {
        let mut a = args.to_vec();
        a.extend_from_slice(&["--keys", &b3]);
        run(&shop.term(), &a)
    };
    let server = serve(&shop.dir.path().join("office"));
    assert!(pos3(&["pos", "sync", "--server", &server.1]).status.success());
    let out = pos3(&["pos", "read", "--card", &card, "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["keys_updated"], 3, "{j}");
    let image: serde_json::Value = serde_json::from_slice(&std::fs::read(&card).unwrap()).unwrap();
    assert_eq!(image["cells"]["key_version"], "03");
    // Locked right after the move, before the ledger has seen any record of
    // the new version: the office's unblock carries a MAC for each version
    // the card may hold, and the till uses the one for the card's.
    let text = std::fs::read_to_string(&card).unwrap();
    std::fs::write(
        &card,
        text.replace("\"auth_failures\": \"00\"", "\"auth_failures\": \"05\""),
    )
    .unwrap();
    assert_eq!(pos3(&["pos", "read", "--card", &card]).status.code(), Some(1), "locked");
    ok(
        &shop.term(),
        &["office", "unblock", "--dir", &o, "--card", "7E57000000000B01"],
    );
    assert!(pos3(&["pos", "sync", "--server", &server.1]).status.success());
    let out = pos3(&["pos", "read", "--card", &card]);
    assert!(
        out.status.success(),
        "unblocked: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Business as usual under the new keys, then the books.
    assert!(pos3(&["pos", "earn", "--card", &card, "--amount", "20"])
        .status
        .success());
    assert!(pos3(&["pos", "settle", "--server", &server.1]).status.success());
    drop(server);
    let ex = ok(&shop.term(), &["office", "report", "exceptions", "--dir", &o, "--json"]);
    let ex: serde_json::Value = serde_json::from_str(&ex).unwrap();
    assert_eq!(ex["data"].as_array().map(Vec::len), Some(0), "{ex}");
    // Both earns posted (one certified under version 2, one under 3): the
    // books hold the card's 30 points, nothing pending or unexplained.
    let l = ok(&shop.term(), &["office", "report", "liability", "--dir", &o, "--json"]);
    let l: serde_json::Value = serde_json::from_str(&l).unwrap();
    assert_eq!(l["data"]["points_outstanding"], 30, "{l}");
    assert_eq!(l["data"]["card_balances"], 30, "{l}");
    assert_eq!(
        (
            l["data"]["pending_records"].as_u64(),
            l["data"]["unexplained_points"].as_i64()
        ),
        (Some(0), Some(0)),
        "{l}"
    );
    // The old bundle (version 2 only) cannot open the moved card.
    let out = run(
        &shop.term(),
        &[
            "pos",
            "read",
            "--card",
            &card,
            "--keys",
            &shop.s("bundle.json"),
            "--terminal-dir",
            &shop.s("old"),
        ],
    );
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("key version 3"));
    let image: serde_json::Value = serde_json::from_slice(&std::fs::read(&card).unwrap()).unwrap();
    assert_eq!(image["cells"]["auth_failures"], "00");
}
