//! `office migrate --to postgres://…` through the real binary, against a
//! private PostgreSQL cluster (`scripts/pg-up.sh`): a ledger with a day's
//! settled business is copied in one transaction and proved equal, table
//! by table; a second copy into the same database is refused (nothing is
//! overwritten); `--verify` finds a row changed afterwards; books that
//! disagree with their postings are not copied.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use tessera_ledger_pg::cluster::Cluster;

const T0: u32 = 1_790_000_000;

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn s(&self, name: &str) -> &'static str {
        Box::leak(self.path(name).to_str().unwrap().to_owned().into_boxed_str())
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(args)
            .env("TESSERA_TERMINAL_DIR", self.path("terminal"))
            .env("TESSERA_NOW", T0.to_string())
            .env("TESSERA_OPERATOR", "Marie at the office")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "tessera {} failed ({:?}): {}{}",
            args.join(" "),
            o.status.code(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([url, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn a_ledger_is_copied_into_postgresql_proved_equal_and_never_overwritten() {
    let env = Env {
        dir: tempfile::tempdir().unwrap(),
    };
    let office = env.s("office");
    env.ok(&["office", "init", "--dir", office]);
    env.ok(&[
        "office",
        "store",
        "add",
        "--dir",
        office,
        "--id",
        "3",
        "--name",
        "Центральный",
        "--city",
        "Нижний Новгород",
    ]);
    env.ok(&[
        "office",
        "export-terminal",
        "--dir",
        office,
        "--terminal-id",
        "7",
        "--out",
        env.s("t7.json"),
        "--plain-http",
    ]);
    env.ok(&[
        "office",
        "terminal",
        "assign",
        "--dir",
        office,
        "--terminal-id",
        "7",
        "--store",
        "3",
    ]);
    for (file, id, name) in [
        ("anna.card", "0A11CE0000000001", "Анна Петрова"),
        ("boris.card", "0B0B000000000001", "Борис"),
    ] {
        env.ok(&[
            "office",
            "issue",
            "--dir",
            office,
            "--card",
            env.s(file),
            "--card-id",
            id,
            "--name",
            name,
            "--birth-date",
            "1990-03-14",
            "--prefer",
            "coffee",
        ]);
    }
    let keys = env.s("t7.json");
    for (card, amount) in [("anna.card", "12,50"), ("boris.card", "40,00"), ("anna.card", "7,30")] {
        env.ok(&[
            "pos",
            "earn",
            "--keys",
            keys,
            "--card",
            env.s(card),
            "--amount",
            amount,
            "--category",
            "coffee",
        ]);
    }
    env.ok(&[
        "pos",
        "redeem",
        "--keys",
        keys,
        "--card",
        env.s("anna.card"),
        "--points",
        "5",
    ]);
    env.ok(&["pos", "settle", "--keys", keys, "--out", env.s("batch.jsonl")]);
    env.ok(&["office", "import", "--dir", office, env.s("batch.jsonl")]);
    env.ok(&[
        "office",
        "hotlist",
        "add",
        "--dir",
        office,
        "--card",
        "0B0B000000000001",
        "--reason",
        "lost",
    ]);

    let cluster = Cluster::start().unwrap();
    let url = cluster.database("books").unwrap();
    let v: Value =
        serde_json::from_str(&env.ok(&["office", "migrate", "--dir", office, "--to", &url, "--json"])).unwrap();
    assert_eq!(
        (v["copied"].as_bool(), v["equal"].as_bool()),
        (Some(true), Some(true)),
        "{v}"
    );
    let tables = v["tables"].as_array().unwrap();
    assert_eq!(tables.len(), 37);
    let rows = |name: &str| {
        tables
            .iter()
            .find(|t| t["table"] == name)
            .map(|t| t["postgres_rows"].as_u64().unwrap())
            .unwrap()
    };
    assert_eq!(rows("cards"), 2);
    assert_eq!(rows("card_transactions"), 4);
    assert_eq!(rows("hotlist"), 1);
    assert!(rows("terminal_records") >= 4, "the decisions");
    // The copy is the books: the balance, the customers' names, the card ids.
    assert_eq!(
        psql(&url, "SELECT shadow_balance FROM cards WHERE card_id = '\\x0a11ce0000000001'"),
        psql(&url, "SELECT balance_after FROM card_transactions WHERE card_id = '\\x0a11ce0000000001' ORDER BY counter DESC LIMIT 1")
    );
    assert_eq!(
        psql(&url, "SELECT name FROM customers ORDER BY customer_id LIMIT 1"),
        "Анна Петрова"
    );
    // New rows continue after the copied keys.
    psql(
        &url,
        "INSERT INTO exceptions (class, evidence, at) VALUES ('gap', '{}', 1)",
    );
    let ids = psql(&url, "SELECT count(DISTINCT id) = count(*) FROM exceptions");
    assert_eq!(ids, "t");
    psql(
        &url,
        "DELETE FROM exceptions WHERE at = 1 AND class = 'gap' AND evidence = '{}'",
    );

    // The books moved: books.toml (0600) names the database; the SQLite
    // ledger is no longer written (copying it again is refused), and the
    // office's commands run on PostgreSQL: the batch imported again is
    // the duplicate of the one the copy holds.
    let books = std::fs::read_to_string(env.path("office").join("books.toml")).unwrap();
    assert!(books.contains(&format!("postgres = \"{url}\"")), "{books}");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(env.path("office").join("books.toml"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let o = env.run(&["office", "migrate", "--dir", office, "--to", &url]);
    assert_ne!(o.status.code(), Some(0));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("are on PostgreSQL already") && err.contains("nothing was done"),
        "{err}"
    );
    let sqlite_before = std::fs::read(env.path("office").join("ledger.sqlite")).unwrap();
    let again: Value =
        serde_json::from_str(&env.ok(&["office", "import", "--dir", office, env.s("batch.jsonl"), "--json"])).unwrap();
    assert_eq!(
        (
            again["report"]["posted"].as_u64(),
            again["report"]["card_transactions"].as_u64()
        ),
        (Some(0), Some(4)),
        "{again}"
    );
    assert_eq!(psql(&url, "SELECT count(*) FROM card_transactions"), "4");
    assert_eq!(
        std::fs::read(env.path("office").join("ledger.sqlite")).unwrap(),
        sqlite_before,
        "the SQLite file the books left is not written"
    );
    // Never overwritten, even with books.toml gone.
    std::fs::remove_file(env.path("office").join("books.toml")).unwrap();
    let again = env.run(&["office", "migrate", "--dir", office, "--to", &url]);
    assert_eq!(
        again.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
    assert!(!env.path("office").join("books.toml").exists());

    // --verify: equal, then a changed row is found.
    env.ok(&["office", "migrate", "--dir", office, "--to", &url, "--verify"]);
    psql(
        &url,
        "UPDATE card_transactions SET points = points + 1 WHERE counter = 1 AND card_id = '\\x0b0b000000000001'",
    );
    let o = env.run(&["office", "migrate", "--dir", office, "--to", &url, "--verify", "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let differing: Vec<&str> = v["tables"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["equal"] == false)
        .map(|t| t["table"].as_str().unwrap())
        .collect();
    assert_eq!(differing, ["card_transactions"]);

    // Books that disagree with their postings are not copied anywhere.
    let db = rusqlite::Connection::open(env.path("office").join("ledger.sqlite")).unwrap();
    db.execute("UPDATE cards SET shadow_balance = shadow_balance + 1000", [])
        .unwrap();
    drop(db);
    let fresh = cluster.database("fresh").unwrap();
    let o = env.run(&["office", "migrate", "--dir", office, "--to", &fresh]);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("disagree"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Refused before the database was touched at all.
    assert_eq!(
        psql(
            &fresh,
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ),
        "0"
    );
}
