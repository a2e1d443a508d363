//! Every office command on PostgreSQL, through the real binary, against a
//! private cluster: the same day of office work — stores and terminals,
//! cards issued, a policy and campaigns signed, a till's batch imported, a
//! card replaced, a profile updated, an unblock queued, a customer found,
//! exported and erased, a terminal revoked, the keys rotated — is run on
//! an office whose books stayed in SQLite and on one whose books moved to
//! PostgreSQL right after `office init`, and every answer the two give is
//! the same. Then what only PostgreSQL shows: the erased customer is gone
//! from its tables, and `office serve` refuses books edited in the
//! database.

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
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn s(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_owned()
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

    /// What a command that is refused answers: its exit code and message.
    fn refusal(&self, args: &[&str]) -> Value {
        let o = self.run(args);
        serde_json::json!([o.status.code(), String::from_utf8_lossy(&o.stderr)])
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.ok(&a);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("tessera {}: {e}: {out}", args.join(" ")))
    }
}

/// Keeps what two offices with their own keys answer alike: drops what
/// their keys make (signatures, MACs, hashes, file names of each office's
/// directory), and whether `office verify` scanned the storage (SQLite's
/// integrity check; PostgreSQL's server keeps its own).
fn comparable(mut v: Value) -> Value {
    fn scrub(v: &mut Value) {
        match v {
            Value::Object(m) => {
                for k in [
                    "signature",
                    "signature_file",
                    "published",
                    "issuer_mac",
                    "ack",
                    "acknowledgement",
                    "mac",
                    "head",
                    "card_file",
                    "bundle",
                    "hash",
                    "prev",
                    "file",
                    "issuer_public_key",
                    "tls_cert_sha256",
                    "issuer_id",
                    "storage_checked",
                ] {
                    m.remove(k);
                }
                m.values_mut().for_each(scrub);
            }
            Value::Array(a) => a.iter_mut().for_each(scrub),
            _ => {}
        }
    }
    scrub(&mut v);
    v
}

/// One day of office work on the office in `env`; its books moved to
/// `postgres` first when given. Returns every answer, by command.
fn office_day(env: &Env, postgres: Option<&str>) -> Vec<(String, Value)> {
    let office = env.s("office");
    let o = office.as_str();
    let mut answers = Vec::new();
    let mut keep = |what: &str, v: Value| answers.push((what.to_owned(), comparable(v)));
    env.ok(&["office", "init", "--dir", o]);
    if let Some(url) = postgres {
        env.ok(&["office", "migrate", "--dir", o, "--to", url]);
    }
    env.ok(&[
        "office", "store", "add", "--dir", o, "--id", "3", "--name", "Centre", "--city", "Lyon",
    ]);
    keep(
        "store add again",
        serde_json::json!(env
            .run(&["office", "store", "add", "--dir", o, "--id", "3", "--name", "Centre"])
            .status
            .code()),
    );
    for t in ["7", "9"] {
        env.ok(&[
            "office",
            "export-terminal",
            "--dir",
            o,
            "--terminal-id",
            t,
            "--out",
            &env.s(&format!("t{t}.json")),
            "--plain-http",
        ]);
    }
    env.ok(&[
        "office",
        "terminal",
        "assign",
        "--dir",
        o,
        "--terminal-id",
        "7",
        "--store",
        "3",
    ]);
    keep("store list", env.json(&["office", "store", "list", "--dir", o]));
    for (file, id, name, city) in [
        ("anna.card", "0A11CE0000000001", "Anna Lind", "Lyon"),
        ("boris.card", "0B0B000000000001", "Boris Berg", "Nantes"),
    ] {
        keep(
            "issue",
            env.json(&[
                "office",
                "issue",
                "--dir",
                o,
                "--card",
                &env.s(file),
                "--card-id",
                id,
                "--name",
                name,
                "--birth-date",
                "1990-03-14",
                "--city",
                city,
                "--prefer",
                "coffee",
            ]),
        );
    }
    // The policy the tills run, and a campaign file, signed and registered.
    let rules = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tessera-rules");
    std::fs::copy(rules.join("policy.toml"), env.path("policy.toml")).unwrap();
    std::fs::copy(rules.join("campaigns.example.toml"), env.path("campaigns.toml")).unwrap();
    keep(
        "sign-policy",
        env.json(&["office", "sign-policy", "--dir", o, "--file", &env.s("policy.toml")]),
    );
    keep(
        "sign-campaigns",
        env.json(&[
            "office",
            "sign-campaigns",
            "--dir",
            o,
            "--file",
            &env.s("campaigns.toml"),
        ]),
    );
    // A till's day, carried to the office as a file and imported.
    let keys = env.s("t7.json");
    for (card, amount) in [("anna.card", "12,50"), ("boris.card", "40,00"), ("anna.card", "7,30")] {
        env.ok(&[
            "pos",
            "earn",
            "--keys",
            &keys,
            "--card",
            &env.s(card),
            "--amount",
            amount,
        ]);
    }
    env.ok(&[
        "pos",
        "redeem",
        "--keys",
        &keys,
        "--card",
        &env.s("anna.card"),
        "--points",
        "5",
    ]);
    env.ok(&["pos", "settle", "--keys", &keys, "--out", &env.s("batch.jsonl")]);
    keep(
        "import",
        env.json(&["office", "import", "--dir", o, &env.s("batch.jsonl")]),
    );
    keep(
        "import again",
        env.json(&["office", "import", "--dir", o, &env.s("batch.jsonl")]),
    );
    keep(
        "card show",
        env.json(&["office", "card", "show", "--dir", o, "--card", "0A11CE0000000001"]),
    );
    // Anna's card is lost: replaced, its points moved to the new card.
    keep(
        "card replace",
        env.json(&[
            "office",
            "card",
            "replace",
            "--dir",
            o,
            "--old",
            "0A11CE0000000001",
            "--card",
            &env.s("anna2.card"),
            "--card-id",
            "0A11CE0000000002",
            "--reason",
            "lost at the station",
        ]),
    );
    keep(
        "card replace again",
        env.refusal(&[
            "office",
            "card",
            "replace",
            "--dir",
            o,
            "--old",
            "0A11CE0000000001",
            "--card",
            &env.s("anna3.card"),
            "--card-id",
            "0A11CE0000000003",
        ]),
    );
    for c in ["0A11CE0000000001", "0A11CE0000000002"] {
        keep(
            "card show",
            env.json(&["office", "card", "show", "--dir", o, "--card", c]),
        );
    }
    keep("hotlist", env.json(&["office", "hotlist", "list", "--dir", o]));
    // Boris moves house, and his card locked itself.
    keep(
        "update-profile",
        env.json(&[
            "office",
            "update-profile",
            "--dir",
            o,
            "--card",
            "0B0B000000000001",
            "--name",
            "Boris Berg",
            "--birth-date",
            "1990-03-14",
            "--city",
            "Brest",
        ]),
    );
    keep(
        "unblock",
        env.json(&["office", "unblock", "--dir", o, "--card", "0B0B000000000001"]),
    );
    keep(
        "unblock",
        env.json(&["office", "unblock", "--dir", o, "--card", "0B0B000000000001"]),
    );
    keep(
        "search",
        env.json(&["office", "customer", "search", "--dir", o, "--name", "bor"]),
    );
    keep(
        "search",
        env.json(&["office", "customer", "search", "--dir", o, "--city", "LYON"]),
    );
    keep(
        "export",
        env.json(&["office", "customer", "export", "--dir", o, "--card", "0B0B000000000001"]),
    );
    // His data-subject request: erased; the card keeps its books.
    keep(
        "erase",
        env.json(&[
            "office",
            "customer",
            "erase",
            "--dir",
            o,
            "--card",
            "0B0B000000000001",
            "--yes",
        ]),
    );
    keep(
        "search",
        env.json(&["office", "customer", "search", "--dir", o, "--name", "bor"]),
    );
    keep(
        "export erased",
        env.refusal(&["office", "customer", "export", "--dir", o, "--card", "0B0B000000000001"]),
    );
    keep(
        "card show",
        env.json(&["office", "card", "show", "--dir", o, "--card", "0B0B000000000001"]),
    );
    // Till 9 was stolen.
    keep(
        "revoke",
        env.json(&[
            "office",
            "terminal",
            "revoke",
            "--dir",
            o,
            "--terminal-id",
            "9",
            "--reason",
            "stolen",
        ]),
    );
    keep(
        "revoke again",
        env.refusal(&[
            "office",
            "terminal",
            "revoke",
            "--dir",
            o,
            "--terminal-id",
            "9",
            "--reason",
            "again",
        ]),
    );
    keep("terminal list", env.json(&["office", "terminal", "list", "--dir", o]));
    keep("rotate-keys", env.json(&["office", "rotate-keys", "--dir", o]));
    keep("explained", env.json(&["office", "report", "explained", "--dir", o]));
    keep("liability", env.json(&["office", "report", "liability", "--dir", o]));
    keep("verify", env.json(&["office", "verify", "--dir", o]));
    let audit = env.json(&["office", "audit", "list", "--dir", o]);
    let actions: Vec<Value> = audit["data"]["entries"]
        .as_array()
        .or_else(|| audit["entries"].as_array())
        .unwrap_or_else(|| panic!("the audit entries: {audit}"))
        .iter()
        .map(|e| e["action"].clone())
        .collect();
    keep("audit actions", Value::Array(actions));
    env.ok(&["office", "audit", "verify", "--dir", o]);
    answers
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
fn every_office_command_answers_on_postgresql_as_on_sqlite() {
    let cluster = Cluster::start().unwrap();
    let url = cluster.database("books").unwrap();
    let (sqlite, pg) = (Env::new(), Env::new());
    let on_sqlite = office_day(&sqlite, None);
    let on_pg = office_day(&pg, Some(&url));
    assert!(pg.path("office").join("books.toml").exists());
    assert_eq!(on_sqlite.len(), on_pg.len());
    for ((what, a), (_, b)) in on_sqlite.iter().zip(&on_pg) {
        assert_eq!(a, b, "`{what}` answers differently on PostgreSQL");
    }
    // The answers say what was done, not only the same thing twice.
    let said = |what: &str| -> Vec<&Value> { on_pg.iter().filter(|(w, _)| w == what).map(|(_, v)| v).collect() };
    let text = |what: &str| said(what).iter().map(|v| v.to_string()).collect::<Vec<_>>().join(" ");
    assert!(
        text("card replace").contains("lost at the station"),
        "{}",
        text("card replace")
    );
    assert!(
        said("card replace")[0].to_string().contains("\"points\":"),
        "{}",
        text("card replace")
    );
    assert!(
        text("card replace again").contains("replaced already"),
        "{}",
        text("card replace again")
    );
    assert!(text("store add again").contains('1'), "{}", text("store add again"));
    let search = said("search");
    assert!(search[0].to_string().contains("Boris Berg") && search[1].to_string().contains("Anna Lind"));
    assert!(!search[2].to_string().contains("Boris"), "erased: {}", search[2]);
    assert!(
        text("export").contains("Brest") || text("export").contains("Nantes"),
        "{}",
        text("export")
    );
    assert!(!text("export erased").starts_with("[0"), "{}", text("export erased"));
    assert!(
        text("revoke again").contains("revoked already"),
        "{}",
        text("revoke again")
    );
    assert!(text("terminal list").contains("stolen"), "{}", text("terminal list"));
    assert!(text("audit actions").contains("customer.erase") && text("audit actions").contains("card.replace"));
    // What the day did, on PostgreSQL itself (not only what the commands
    // say): the import posted once, the replacement moved the points, the
    // customer is gone with the profile queued for his card.
    assert_eq!(psql(&url, "SELECT count(*) FROM batches"), "1");
    assert_eq!(psql(&url, "SELECT count(*) FROM card_transactions"), "4");
    assert_eq!(
        psql(&url, "SELECT count(*) FROM customers WHERE name LIKE 'Boris%'"),
        "0"
    );
    assert_eq!(
        psql(
            &url,
            "SELECT count(*) FROM profile_updates WHERE card_id = '\\x0b0b000000000001'"
        ),
        "0"
    );
    assert_eq!(
        psql(
            &url,
            "SELECT customer_id IS NULL FROM cards WHERE card_id = '\\x0b0b000000000001'"
        ),
        "t"
    );
    assert_eq!(
        psql(
            &url,
            "SELECT count(*) FROM hotlist WHERE card_id = '\\x0a11ce0000000001'"
        ),
        "1"
    );
    assert_eq!(
        psql(&url, "SELECT revoke_reason FROM terminals WHERE terminal_id = 9"),
        "stolen"
    );
    // The SQLite file the books left was never written after the move.
    let left = tessera_ledger::Ledger::open_existing(
        &pg.path("office").join("ledger.sqlite"),
        tessera_ledger::LedgerKeys::from_issuer(
            &tessera_crypto::keys::IssuerKeys::from_json(
                &std::fs::read_to_string(pg.path("office").join("issuer-keys.json")).unwrap(),
            )
            .unwrap(),
        ),
    )
    .unwrap();
    assert!(
        tessera_ledger::LedgerStore::card(&left, [0x0A, 0x11, 0xCE, 0, 0, 0, 0, 1])
            .unwrap()
            .is_none()
    );
    drop(left);

    // `office serve` checks the books before it takes a request: a balance
    // edited in the database is refused at start, and served once it is
    // put back.
    let o = pg.s("office");
    psql(
        &url,
        "UPDATE cards SET shadow_balance = shadow_balance + 500 WHERE card_id = '\\x0a11ce0000000002'",
    );
    let refused = pg.run(&[
        "office",
        "serve",
        "--dir",
        &o,
        "--plain-http",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_ne!(refused.status.code(), Some(0));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("0A11CE0000000002") && err.contains("shadow balance"),
        "{err}"
    );
    psql(
        &url,
        "UPDATE cards SET shadow_balance = shadow_balance - 500 WHERE card_id = '\\x0a11ce0000000002'",
    );
    pg.ok(&["office", "verify", "--dir", &o]);
}
