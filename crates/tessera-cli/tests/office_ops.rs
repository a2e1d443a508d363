//! The office's daily operations through the `tessera` binary: hotlist,
//! stores and terminals, customers, the audit log — and, through a real
//! `tessera office serve`, what sync delivers (hotlist changes) and what
//! settlement refuses (a revoked terminal's batches).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

const ANNA: &str = "7E57000000000A01";
const BORIS: &str = "7E57000000000A02";
const OLGA: &str = "7E57000000000A03";

struct Server(Child, String);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An office with terminal 7 and Anna's card, in a temporary directory.
struct Office {
    dir: tempfile::TempDir,
}

impl Office {
    fn new() -> Self {
        let o = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        o.ok(&["office", "init", "--dir", &o.o()]);
        o.ok(&[
            "office",
            "export-terminal",
            "--dir",
            &o.o(),
            "--terminal-id",
            "7",
            "--out",
            &o.s("till7.json"),
        ]);
        o.issue(ANNA, "Анна Петрова", "Нижний Новгород");
        o
    }

    fn issue(&self, id: &str, name: &str, city: &str) {
        self.ok(&[
            "office",
            "issue",
            "--dir",
            &self.o(),
            "--card",
            &self.s(&format!("{id}.card")),
            "--card-id",
            id,
            "--name",
            name,
            "--birth-date",
            "1990-03-14",
            "--city",
            city,
        ]);
    }

    fn s(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }

    fn o(&self) -> String {
        self.s("office")
    }

    fn term(&self) -> PathBuf {
        self.dir.path().join("terminal")
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(args)
            .env("TESSERA_TERMINAL_DIR", self.term())
            .env("TESSERA_OPERATOR", "olga.office")
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let v: Value = serde_json::from_str(&self.ok(&a)).unwrap();
        assert_eq!(v["version"], 1, "{v}");
        v
    }

    /// Exit code and standard error of a command that must fail.
    fn fails(&self, args: &[&str]) -> (i32, String) {
        let out = self.run(args);
        assert!(!out.status.success(), "{args:?} should fail");
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// A till command with the card and the bundle.
    fn pos(&self, card: &str, args: &[&str]) -> Output {
        let mut a = args.to_vec();
        let (c, b) = (self.s(&format!("{card}.card")), self.s("till7.json"));
        if !matches!(args[1], "settle" | "sync") {
            a.extend_from_slice(&["--card", &c]);
        }
        a.extend_from_slice(&["--keys", &b]);
        self.run(&a)
    }

    fn pos_ok(&self, card: &str, args: &[&str]) -> String {
        let out = self.pos(card, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn serve(&self, dir: &str) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(["office", "serve", "--dir", dir, "--listen", "127.0.0.1:0"])
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

    fn audit(&self) -> Vec<Value> {
        self.json(&["office", "audit", "list", "--dir", &self.o()])["entries"]
            .as_array()
            .unwrap()
            .clone()
    }
}

/// A copy of a flat directory (an office: keys, TLS, ledger, audit log).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// A change to an office's audit file (given its path).
type Tamper = Box<dyn Fn(&Path)>;

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn hotlist_add_list_remove_each_change_a_new_version() {
    let office = Office::new();
    let o = office.o();
    let list = |office: &Office| office.json(&["office", "hotlist", "list", "--dir", &o]);
    // A card this office never issued is refused, and nothing changes.
    let (code, err) = office.fails(&[
        "office", "hotlist", "add", "--dir", &o, "--card", BORIS, "--reason", "lost",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("never issued by this office"), "{err}");
    assert_eq!(list(&office)["hotlist_version"], 0);
    // The reason is required, and not blank.
    let (code, _) = office.fails(&["office", "hotlist", "add", "--dir", &o, "--card", ANNA]);
    assert_eq!(code, 2);
    let (code, err) = office.fails(&["office", "hotlist", "add", "--dir", &o, "--card", ANNA, "--reason", " "]);
    assert_eq!(code, 2, "{err}");
    let (code, _) = office.fails(&[
        "office", "hotlist", "add", "--dir", &o, "--card", "7E57", "--reason", "x",
    ]);
    assert_eq!(code, 2);

    let v = office.json(&[
        "office",
        "hotlist",
        "add",
        "--dir",
        &o,
        "--card",
        ANNA,
        "--reason",
        "lost at the till",
    ]);
    assert_eq!(v["hotlist_version"], 1);
    // Again: nothing new (exit 7), the version stays.
    let (code, err) = office.fails(&[
        "office", "hotlist", "add", "--dir", &o, "--card", ANNA, "--reason", "lost",
    ]);
    assert_eq!(code, 7, "{err}");
    let l = list(&office);
    assert_eq!(l["hotlist_version"], 1);
    assert_eq!(l["cards"][0]["card_id"], ANNA);
    assert_eq!(l["cards"][0]["reason"], "lost at the till");
    let table = office.ok(&["office", "hotlist", "list", "--dir", &o]);
    assert!(
        table.contains("Hotlist v1: 1 cards") && table.contains("lost at the till"),
        "{table}"
    );
    let csv = office.ok(&["office", "hotlist", "list", "--dir", &o, "--csv"]);
    assert!(csv.starts_with("card_id,since,reason\n7E57000000000A01,"), "{csv}");

    let v = office.json(&[
        "office", "hotlist", "remove", "--dir", &o, "--card", ANNA, "--reason", "found",
    ]);
    assert_eq!(v["hotlist_version"], 2);
    let (code, _) = office.fails(&[
        "office", "hotlist", "remove", "--dir", &o, "--card", ANNA, "--reason", "found",
    ]);
    assert_eq!(code, 7);
    let l = list(&office);
    assert_eq!(
        (l["hotlist_version"].clone(), l["cards"].as_array().unwrap().len()),
        (2.into(), 0)
    );
    let actions: Vec<String> = office
        .audit()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        actions,
        [
            "office.init",
            "terminal.export",
            "card.issue",
            "hotlist.add",
            "hotlist.remove"
        ]
    );
}

/// Hotlist changes reach the till through `pos sync` against `office
/// serve`: an addition, then a removal (a list with the card gone, at a
/// higher version). An office restored from an older backup serves an
/// older list: the till keeps its newer one.
#[test]
fn hotlist_additions_and_removals_reach_the_till_and_an_older_feed_never_replaces_a_newer_list() {
    let office = Office::new();
    office.issue(BORIS, "Борис Иванов", "Казань");
    let o = office.o();
    office.ok(&[
        "office", "hotlist", "add", "--dir", &o, "--card", ANNA, "--reason", "lost",
    ]);
    office.ok(&[
        "office", "hotlist", "add", "--dir", &o, "--card", BORIS, "--reason", "stolen",
    ]);
    // A backup of the office at hotlist v2.
    let backup = office.dir.path().join("backup");
    copy_dir(Path::new(&o), &backup);

    let server = office.serve(&o);
    let sync = |office: &Office, url: &str| -> Value {
        let out = office.pos(ANNA, &["pos", "sync", "--server", url, "--json"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let hotlist = || std::fs::read_to_string(office.term().join("hotlist.toml")).unwrap();
    let s = sync(&office, &server.1);
    assert_eq!(
        (s["hotlist_version"].clone(), s["hotlist_written"].clone()),
        (2.into(), true.into())
    );
    assert!(hotlist().contains(ANNA) && hotlist().contains(BORIS), "{}", hotlist());
    // Boris's card is blocked at its next tap.
    let out = office.pos(BORIS, &["pos", "earn", "--amount", "10"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));

    // Anna's card was found: off the list, v3, and the till follows.
    office.ok(&[
        "office",
        "hotlist",
        "remove",
        "--dir",
        &o,
        "--card",
        ANNA,
        "--reason",
        "found by the customer",
    ]);
    let s = sync(&office, &server.1);
    assert_eq!(
        (s["hotlist_version"].clone(), s["hotlist_cards"].clone()),
        (3.into(), 1.into())
    );
    assert!(!hotlist().contains(ANNA) && hotlist().contains(BORIS), "{}", hotlist());
    assert!(hotlist().contains("version = 3"), "{}", hotlist());
    // Never blocked at a till, so it works at once.
    office.pos_ok(ANNA, &["pos", "earn", "--amount", "10"]);
    drop(server);

    // The office restored from the backup serves hotlist v2 (Anna on it):
    // the till keeps v3 and says so.
    let old = office.serve(backup.to_str().unwrap());
    let s = sync(&office, &old.1);
    assert_eq!(s["hotlist_written"], false, "{s}");
    assert!(s["notes"].to_string().contains("kept hotlist v3"), "{s}");
    assert!(
        hotlist().contains("version = 3") && !hotlist().contains(ANNA),
        "{}",
        hotlist()
    );
    office.pos_ok(ANNA, &["pos", "earn", "--amount", "10"]);
}

#[test]
fn stores_and_terminals_added_listed_assigned_and_revoked() {
    let office = Office::new();
    let o = office.o();
    let v = office.json(&[
        "office",
        "store",
        "add",
        "--dir",
        &o,
        "--id",
        "3",
        "--name",
        "Центральный",
        "--city",
        "Москва",
    ]);
    assert_eq!(v["store"]["name"], "Центральный");
    let (code, err) = office.fails(&["office", "store", "add", "--dir", &o, "--id", "3", "--name", "Other"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("store 3 exists already"), "{err}");
    let (code, _) = office.fails(&["office", "store", "add", "--dir", &o, "--id", "4", "--name", "  "]);
    assert_eq!(code, 2);
    let (code, _) = office.fails(&["office", "store", "add", "--dir", &o, "--id", "0", "--name", "Zero"]);
    assert_eq!(code, 2);
    office.ok(&["office", "store", "add", "--dir", &o, "--id", "4", "--name", "Вокзал"]);

    // Unknown store, unknown terminal: refused.
    let (code, err) = office.fails(&[
        "office",
        "terminal",
        "assign",
        "--dir",
        &o,
        "--terminal-id",
        "7",
        "--store",
        "9",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown store 9"), "{err}");
    let (code, err) = office.fails(&[
        "office",
        "terminal",
        "assign",
        "--dir",
        &o,
        "--terminal-id",
        "8",
        "--store",
        "3",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown terminal 8"), "{err}");
    office.ok(&[
        "office",
        "terminal",
        "assign",
        "--dir",
        &o,
        "--terminal-id",
        "7",
        "--store",
        "3",
    ]);

    let stores = office.json(&["office", "store", "list", "--dir", &o]);
    assert_eq!(stores["stores"][0]["terminals"], 1);
    assert_eq!(stores["stores"][1]["terminals"], 0);
    let csv = office.ok(&["office", "store", "list", "--dir", &o, "--csv"]);
    assert_eq!(csv, "store,name,city,terminals\n3,Центральный,Москва,1\n4,Вокзал,,0\n");

    let t = office.json(&["office", "terminal", "list", "--dir", &o]);
    let t7 = &t["terminals"][0];
    assert_eq!(
        (t7["terminal_id"].clone(), t7["store_name"].clone()),
        (7.into(), "Центральный".into())
    );
    assert!(t7["revoked_at"].is_null() && t7["last_batch_no"] == 0, "{t7}");

    // Revocation needs a reason; twice is nothing new; unknown is refused.
    let (code, _) = office.fails(&["office", "terminal", "revoke", "--dir", &o, "--terminal-id", "7"]);
    assert_eq!(code, 2);
    let (code, _) = office.fails(&[
        "office",
        "terminal",
        "revoke",
        "--dir",
        &o,
        "--terminal-id",
        "9",
        "--reason",
        "x",
    ]);
    assert_eq!(code, 2);
    office.ok(&[
        "office",
        "terminal",
        "revoke",
        "--dir",
        &o,
        "--terminal-id",
        "7",
        "--reason",
        "stolen",
    ]);
    let (code, _) = office.fails(&[
        "office",
        "terminal",
        "revoke",
        "--dir",
        &o,
        "--terminal-id",
        "7",
        "--reason",
        "x",
    ]);
    assert_eq!(code, 7);
    let t = office.json(&["office", "terminal", "list", "--dir", &o]);
    assert_eq!(t["terminals"][0]["revoke_reason"], "stolen");
    let table = office.ok(&["office", "terminal", "list", "--dir", &o]);
    assert!(table.contains("3 Центральный") && table.contains("(stolen)"), "{table}");
    let csv = office.ok(&["office", "terminal", "list", "--dir", &o, "--csv"]);
    assert!(
        csv.starts_with("terminal,store,registered,revoked,last batch\n7,3 Центральный,"),
        "{csv}"
    );
}

/// A revoked terminal's later batches are refused over HTTP (`pos settle`
/// exits 6 naming the revocation) and by `office import`, and each refusal
/// is an exception in the report; its earlier batch stays posted.
#[test]
fn a_revoked_terminals_batches_are_refused_over_http_and_by_import_and_reported() {
    let office = Office::new();
    let o = office.o();
    let server = office.serve(&o);
    office.pos_ok(ANNA, &["pos", "earn", "--amount", "100"]);
    office.pos_ok(ANNA, &["pos", "settle", "--server", &server.1]);
    let t = office.json(&["office", "terminal", "list", "--dir", &o]);
    assert_eq!(t["terminals"][0]["last_batch_no"], 1, "{t}");

    office.ok(&[
        "office",
        "terminal",
        "revoke",
        "--dir",
        &o,
        "--terminal-id",
        "7",
        "--reason",
        "stolen from store 3",
    ]);
    office.pos_ok(ANNA, &["pos", "earn", "--amount", "50"]);
    let out = office.pos(ANNA, &["pos", "settle", "--server", &server.1]);
    assert_eq!(out.status.code(), Some(6), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("403") && err.contains("revoked"), "{err}");
    // Nor does it sync.
    let out = office.pos(ANNA, &["pos", "sync", "--server", &server.1]);
    assert_eq!(out.status.code(), Some(6), "{}", String::from_utf8_lossy(&out.stderr));

    // The same batch carried as a file.
    let file = office.s("batch.jsonl");
    office.pos_ok(ANNA, &["pos", "settle", "--out", &file]);
    let (code, err) = office.fails(&["office", "import", "--dir", &o, &file]);
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("terminal 7 is revoked"), "{err}");

    let ex = office.json(&["office", "report", "exceptions", "--dir", &o]);
    let revoked = ex["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["class"] == "revoked-terminal" && e["terminal_id"] == 7)
        .count();
    assert!(revoked >= 2, "{ex}");
    // The posted batch stays, and the books are sound.
    office.ok(&["office", "verify", "--dir", &o]);
    let liability = office.json(&["office", "report", "liability", "--dir", &o]);
    assert!(
        liability.to_string().contains("\"points_outstanding\":100"),
        "{liability}"
    );
}

/// Search by name (any case, Cyrillic), card or city; export one customer
/// (stdout or a private file); erase: gone from the registry, from the
/// queued profile update (sync delivers none), from the ledger file's bytes;
/// the card stays valid and the books balance.
#[test]
fn customers_searched_exported_and_erased_with_the_books_still_balanced() {
    let office = Office::new();
    office.issue(BORIS, "АННА Смирнова", "Казань");
    office.issue(OLGA, "Olga Berg", "Нижний Новгород");
    let o = office.o();
    let search = |by: &[&str]| -> Vec<u64> {
        let mut a = vec!["office", "customer", "search", "--dir", &o];
        a.extend_from_slice(by);
        office.json(&a)["customers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["customer_id"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(search(&["--name", "анна"]), [1, 2]);
    assert_eq!(search(&["--name", "ПЕТРОВ"]), [1]);
    assert_eq!(search(&["--city", "нижний"]), [1, 3]);
    assert_eq!(search(&["--city", "нижний", "--name", "анна"]), [1]);
    assert_eq!(search(&["--card", BORIS]), [2]);
    assert!(search(&["--name", "nobody"]).is_empty());
    let (code, _) = office.fails(&["office", "customer", "search", "--dir", &o]);
    assert_eq!(code, 2);
    let table = office.ok(&["office", "customer", "search", "--dir", &o, "--name", "анна"]);
    assert!(
        table.contains("Customers found: 2") && table.contains("Анна Петрова"),
        "{table}"
    );
    let csv = office.ok(&["office", "customer", "search", "--dir", &o, "--card", ANNA, "--csv"]);
    assert!(
        csv.starts_with("customer,name,city,birth_date,cards\n1,Анна Петрова,Нижний Новгород,1990-03-14,"),
        "{csv}"
    );

    // Export: to stdout, and to a private file (never overwritten).
    let v = office.json(&["office", "customer", "export", "--dir", &o, "--card", ANNA]);
    assert_eq!(v["export"]["customer"]["name"], "Анна Петрова");
    assert_eq!(v["export"]["cards"][0]["card_id"], ANNA);
    let file = office.dir.path().join("Петрова.json");
    let f = file.to_str().unwrap();
    office.ok(&[
        "office",
        "customer",
        "export",
        "--dir",
        &o,
        "--customer",
        "1",
        "--out",
        f,
    ]);
    assert_eq!(mode(&file), 0o600);
    let exported: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(exported["customer"]["home_city"], "Нижний Новгород");
    let (code, _) = office.fails(&[
        "office",
        "customer",
        "export",
        "--dir",
        &o,
        "--customer",
        "1",
        "--out",
        f,
    ]);
    assert_eq!(code, 1);
    let (code, _) = office.fails(&["office", "customer", "export", "--dir", &o, "--customer", "99"]);
    assert_eq!(code, 2);

    // Books to keep: an earn settled; a profile update queued, not delivered.
    let server = office.serve(&o);
    office.pos_ok(ANNA, &["pos", "earn", "--amount", "100"]);
    office.pos_ok(ANNA, &["pos", "settle", "--server", &server.1]);
    office.ok(&[
        "office",
        "update-profile",
        "--dir",
        &o,
        "--card",
        ANNA,
        "--name",
        "Анна Петрова",
        "--birth-date",
        "1990-03-14",
        "--city",
        "Самара",
    ]);

    // Erase needs --yes, and changes nothing without it.
    let (code, err) = office.fails(&["office", "customer", "erase", "--dir", &o, "--card", ANNA]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--yes"), "{err}");
    assert_eq!(search(&["--card", ANNA]), [1]);
    let v = office.json(&["office", "customer", "erase", "--dir", &o, "--card", ANNA, "--yes"]);
    assert_eq!(v["customer_id"], 1);
    assert!(search(&["--name", "Петров"]).is_empty());
    assert!(search(&["--city", "Самара"]).is_empty());
    let (code, err) = office.fails(&["office", "customer", "export", "--dir", &o, "--card", ANNA]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("belongs to no customer"), "{err}");
    let (code, _) = office.fails(&["office", "customer", "erase", "--dir", &o, "--customer", "1", "--yes"]);
    assert_eq!(code, 2);

    // Sync delivers no profile update for the card any more.
    let out = office.pos(ANNA, &["pos", "sync", "--server", &server.1, "--json"]);
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["profile_updates"], 0, "{s}");
    // The card stays valid; its books are anonymous figures, and balanced.
    office.pos_ok(ANNA, &["pos", "earn", "--amount", "20"]);
    office.pos_ok(ANNA, &["pos", "settle", "--server", &server.1]);
    drop(server);
    office.ok(&["office", "verify", "--dir", &o]);
    let explained = office.json(&["office", "report", "explained", "--dir", &o]);
    assert_eq!(explained["data"]["explained"], true, "{explained}");
    let rec = office.json(&["office", "report", "reconciliation", "--dir", &o]);
    assert!(!rec["data"].to_string().is_empty());
    let customers = office.json(&["office", "report", "customers", "--dir", &o]).to_string();
    // The card's figures stay, anonymous.
    assert!(
        !customers.contains("Петрова") && customers.contains("\"customer_id\":null"),
        "{customers}"
    );
    assert!(customers.contains("\"points_earned\":120"), "{customers}");
    // Gone from the file itself, not only from the tables.
    for f in ["ledger.sqlite", "ledger.sqlite-wal"] {
        let p = Path::new(&o).join(f);
        if let Ok(bytes) = std::fs::read(&p) {
            let needle = "Петрова".as_bytes();
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{f} still holds the name"
            );
            let needle = "Самара".as_bytes();
            assert!(!bytes.windows(needle.len()).any(|w| w == needle), "{f} holds the city");
        }
    }
    // Nor does the audit log hold it.
    let audit = std::fs::read_to_string(Path::new(&o).join("audit.jsonl")).unwrap();
    assert!(!audit.contains("Петрова") && !audit.contains("Нижний"), "{audit}");
}

#[test]
fn the_audit_log_names_the_operator_and_finds_every_tampering() {
    let office = Office::new();
    let o = office.o();
    office.ok(&[
        "office",
        "store",
        "add",
        "--dir",
        &o,
        "--id",
        "1",
        "--name",
        "A",
        "--operator",
        "Мария",
    ]);
    office.ok(&[
        "office",
        "terminal",
        "assign",
        "--dir",
        &o,
        "--terminal-id",
        "7",
        "--store",
        "1",
    ]);
    office.ok(&[
        "office", "hotlist", "add", "--dir", &o, "--card", ANNA, "--reason", "lost",
    ]);
    office.ok(&["office", "unblock", "--dir", &o, "--card", ANNA]);
    office.ok(&["office", "rotate-keys", "--dir", &o, "--operator", "root.admin"]);
    // An empty operator name is refused before anything is done.
    let (code, err) = office.fails(&[
        "office",
        "store",
        "add",
        "--dir",
        &o,
        "--id",
        "2",
        "--name",
        "B",
        "--operator",
        " ",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("operator"), "{err}");
    let stores = office.json(&["office", "store", "list", "--dir", &o]);
    assert_eq!(stores["stores"].as_array().unwrap().len(), 1);

    let entries = office.audit();
    let who: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e["operator"].as_str().unwrap(), e["action"].as_str().unwrap()))
        .collect();
    assert_eq!(
        who,
        [
            ("olga.office", "office.init"),
            ("olga.office", "terminal.export"),
            ("olga.office", "card.issue"),
            ("Мария", "store.add"),
            ("olga.office", "terminal.assign"),
            ("olga.office", "hotlist.add"),
            ("olga.office", "card.unblock"),
            ("root.admin", "keys.rotate"),
        ]
    );
    assert_eq!(entries[5]["details"]["card_id"], ANNA);
    assert_eq!(entries[0]["seq"], 1);
    assert_eq!(entries[1]["prev"], entries[0]["hash"]);
    let table = office.ok(&["office", "audit", "list", "--dir", &o]);
    assert!(
        table.contains("Audit log: 8 entries") && table.contains("Мария"),
        "{table}"
    );
    let csv = office.ok(&["office", "audit", "list", "--dir", &o, "--csv"]);
    assert!(csv.starts_with("seq,time,operator,action,details\n1,"), "{csv}");
    let v = office.json(&["office", "audit", "verify", "--dir", &o]);
    assert_eq!(v["intact"], true, "{v}");
    assert_eq!(mode(&Path::new(&o).join("audit.jsonl")), 0o600);

    // Each tampering on its own copy of the office: found by `audit
    // verify` (exit 1), and the office refuses further actions (exit 6).
    let lines: Vec<String> = std::fs::read_to_string(Path::new(&o).join("audit.jsonl"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let cases: Vec<(&str, Tamper, &str)> = vec![
        (
            "edited",
            Box::new(|f: &Path| {
                let t = std::fs::read_to_string(f).unwrap().replacen("\"Мария\"", "\"Иван\"", 1);
                std::fs::write(f, t).unwrap();
            }),
            "entry 4 was edited",
        ),
        (
            "deleted",
            Box::new({
                let l = lines.clone();
                move |f: &Path| {
                    let mut l = l.clone();
                    l.remove(3);
                    std::fs::write(f, l.join("\n") + "\n").unwrap();
                }
            }),
            "does not follow the entry before it",
        ),
        (
            "reordered",
            Box::new({
                let l = lines.clone();
                move |f: &Path| {
                    let mut l = l.clone();
                    l.swap(3, 4);
                    std::fs::write(f, l.join("\n") + "\n").unwrap();
                }
            }),
            "line 4 holds entry 5",
        ),
        (
            "truncated",
            Box::new({
                let l = lines.clone();
                move |f: &Path| std::fs::write(f, l[..6].join("\n") + "\n").unwrap()
            }),
            "cut off the end",
        ),
        (
            "removed",
            Box::new(|f: &Path| std::fs::remove_file(f).unwrap()),
            "the audit file is missing",
        ),
        (
            "anchor edited by a DBA",
            Box::new(|f: &Path| {
                let db = rusqlite::Connection::open(f.with_file_name("ledger.sqlite")).unwrap();
                db.execute("UPDATE audit_anchor SET entries = 7", []).unwrap();
            }),
            "entries after it were added outside the office",
        ),
    ];
    for (i, (what, tamper, want)) in cases.iter().enumerate() {
        let copy = office.dir.path().join(format!("copy{i}"));
        copy_dir(Path::new(&o), &copy);
        let c = copy.to_str().unwrap();
        tamper(&copy.join("audit.jsonl"));
        let out = office.run(&["office", "audit", "verify", "--dir", c, "--json"]);
        assert_eq!(out.status.code(), Some(1), "{what}");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["intact"], false, "{what}: {v}");
        assert!(v["check"]["problems"].to_string().contains(want), "{what}: {v}");
        let (code, err) = office.fails(&["office", "store", "add", "--dir", c, "--id", "5", "--name", "X"]);
        assert_eq!(code, 6, "{what}: {err}");
        assert!(err.contains("audit log does not verify"), "{what}: {err}");
        let stores = office.json(&["office", "store", "list", "--dir", c]);
        assert_eq!(stores["stores"].as_array().unwrap().len(), 1, "{what}: nothing done");
    }
}
