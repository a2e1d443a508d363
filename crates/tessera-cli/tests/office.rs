//! The back office through the real binary: key ceremony, issuance,
//! settlement to a real `tessera office serve` process on loopback, hostile
//! HTTP input, a server killed mid-import, and hotlist sync.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(120);

struct Env {
    dir: tempfile::TempDir,
}

fn wait_output(mut child: Child, what: &str) -> Output {
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} timed out");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Env {
    fn new() -> Self {
        let e = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        e.ok(&["office", "init", "--dir", e.s("office")]);
        e.ok(&[
            "office",
            "export-terminal",
            "--dir",
            e.s("office"),
            "--terminal-id",
            "7",
            "--out",
            e.s("t7.json"),
            // These tests speak raw HTTP/1.1 to the office on loopback.
            "--plain-http",
        ]);
        e
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn s(&self, name: &str) -> &'static str {
        Box::leak(self.path(name).to_str().unwrap().to_owned().into_boxed_str())
    }

    fn run(&self, args: &[&str]) -> Output {
        let child = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(args)
            .env("TESSERA_TERMINAL_DIR", self.path("terminal"))
            .env_remove("TESSERA_NOW")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Drain both pipes while waiting (large outputs would block).
        wait_output(child, &args.join(" "))
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
        String::from_utf8(o.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ok(&a)).unwrap()
    }

    /// Issues a card with the office's keys; returns its id.
    fn issue(&self, file: &str) -> String {
        let v = self.json(&[
            "office",
            "issue",
            "--dir",
            self.s("office"),
            "--card",
            self.s(file),
            "--name",
            "Анна Петрова",
            "--birth-date",
            "1990-03-14",
            "--city",
            "Нижний Новгород",
            "--prefer",
            "coffee",
        ]);
        v["card_id"].as_str().unwrap().to_owned()
    }

    fn pos(&self, args: &[&str]) -> Output {
        let mut a = vec!["pos"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["--keys", self.s("t7.json")]);
        self.run(&a)
    }

    fn pos_ok(&self, args: &[&str]) -> String {
        let o = self.pos(args);
        assert!(
            o.status.success(),
            "pos {args:?}: {}{}",
            stdout(&o),
            String::from_utf8_lossy(&o.stderr)
        );
        stdout(&o)
    }

    /// The books as the reports show them.
    fn books(&self) -> (Value, Value) {
        (
            self.json(&["office", "report", "reconciliation", "--dir", self.s("office")])["data"].clone(),
            self.json(&["office", "report", "liability", "--dir", self.s("office")])["data"].clone(),
        )
    }

    /// Batches and journal records the ledger holds for terminal 7.
    fn posted(&self) -> (u64, u64) {
        let (rec, _) = self.books();
        let rows = rec["rows"].as_array().unwrap();
        rows.iter().filter(|r| r["terminal_id"] == 7).fold((0, 0), |(b, n), r| {
            (b + r["batches"].as_u64().unwrap(), n + r["records"].as_u64().unwrap())
        })
    }

    fn serve(&self, max_bytes: Option<u64>) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
        cmd.args([
            "office",
            "serve",
            "--dir",
            self.s("office"),
            "--listen",
            "127.0.0.1:0",
            "--plain-http",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        if let Some(m) = max_bytes {
            cmd.env("TESSERA_MAX_BATCH_BYTES", m.to_string());
        }
        let mut child = cmd.spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(out).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut server = Server { child, port: 0 };
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the server did not start");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("first line {line:?}"));
        server.port = addr.rsplit(':').next().unwrap().parse().unwrap();
        server
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A server process, killed (by its PID) when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One raw HTTP/1.1 request; returns status and body.
fn http(port: u16, method: &str, path: &str, content_type: &str, body: &[u8]) -> (u16, Value) {
    http_with(port, method, path, content_type, "", body)
}

fn http_with(port: u16, method: &str, path: &str, content_type: &str, extra: &str, body: &[u8]) -> (u16, Value) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    );
    // The server may answer and close before reading everything.
    let _ = s.write_all(head.as_bytes()).and_then(|()| s.write_all(body));
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp);
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no answer: {text:?}"))
        .parse()
        .unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// The MAC of a batch's first line (its header) under the batch key of
/// `bundle`, hex; zeros when the first line is not a header (the office
/// then refuses the body as malformed).
fn header_mac(bundle: &Path, body: &[u8]) -> String {
    let bundle = tessera_crypto::keys::TerminalBundle::from_json(&std::fs::read_to_string(bundle).unwrap()).unwrap();
    let first = body.split(|b| *b == b'\n').next().unwrap_or_default();
    serde_json::from_slice::<tessera_terminal::batch::Header>(first)
        .map(|h| hex::encode(h.mac(&bundle.batch_key)))
        .unwrap_or_else(|_| "00".repeat(16))
}

/// A keyless upload: no header MAC.
fn post_batch(port: u16, body: &[u8]) -> (u16, Value) {
    http(port, "POST", "/v1/batches", "application/x-ndjson", body)
}

/// An upload authenticated as the terminal of `bundle` would: the MAC of
/// the batch's first line (its header) under the terminal's batch key.
fn post_batch_as(port: u16, bundle: &Path, body: &[u8]) -> (u16, Value) {
    let mac = header_mac(bundle, body);
    http_with(
        port,
        "POST",
        "/v1/batches",
        "application/x-ndjson",
        &format!("Tessera-Batch-Mac: {mac}\r\n"),
        body,
    )
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

#[test]
fn settle_through_the_server_duplicates_and_hostile_input() {
    let env = Env::new();
    let card = env.s("anna.card");
    env.issue("anna.card");
    env.pos_ok(&["earn", "--card", card, "--amount", "40"]);
    env.pos_ok(&["redeem", "--card", card, "--points", "15"]);
    let status: Value = serde_json::from_str(&env.pos_ok(&["status", "--json"])).unwrap();
    assert_eq!(status["unsettled_card_transactions"], 2);

    // Sealed to a file first: the same batch then travels over HTTP.
    let batch_file = env.path("batch1.jsonl");
    env.pos_ok(&["settle", "--out", batch_file.to_str().unwrap()]);
    let batch = read(&batch_file);
    let t7 = env.path("t7.json");
    let server = env.serve(None);
    let empty = env.books();
    assert_eq!(env.posted(), (0, 0));

    // Hostile input, each refused with the documented status, nothing written.
    let cases: Vec<(&str, u16, (u16, Value))> = vec![
        (
            "truncated body",
            400,
            post_batch_as(server.port, &t7, &batch[..batch.len() / 2]),
        ),
        (
            "malformed JSON",
            400,
            post_batch_as(server.port, &t7, b"{\"type\":\"header\",\n"),
        ),
        ("not JSON at all", 400, post_batch_as(server.port, &t7, &[0xff; 64])),
        ("keyless: no header MAC", 401, post_batch(server.port, &batch)),
        ("keyless: a made-up header MAC", 401, {
            let head = "Tessera-Batch-Mac: 00112233445566778899aabbccddeeff\r\n";
            http_with(server.port, "POST", "/v1/batches", "application/x-ndjson", head, &batch)
        }),
        (
            "wrong content type",
            415,
            http(server.port, "POST", "/v1/batches", "text/plain", &batch),
        ),
        ("wrong MAC", 401, {
            let text = String::from_utf8(batch.clone()).unwrap();
            let at = text.rfind("\"mac\":\"").unwrap() + 7;
            let mut bad = text.into_bytes();
            bad[at] = if bad[at] == b'0' { b'1' } else { b'0' };
            post_batch_as(server.port, &t7, &bad)
        }),
        (
            "unknown terminal's sync, keyless",
            401,
            http(server.port, "GET", "/v1/sync?terminal=99&nonce=00", "text/plain", b""),
        ),
        (
            "a registered terminal's sync, keyless",
            401,
            http(server.port, "GET", "/v1/sync?terminal=7&nonce=00", "text/plain", b""),
        ),
        ("a registered terminal's sync, made-up MAC", 401, {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let path = format!("/v1/sync?terminal=7&nonce=0011&time={t}&mac={}", "ab".repeat(16));
            http(server.port, "GET", &path, "text/plain", b"")
        }),
        (
            "sync without terminal",
            400,
            http(server.port, "GET", "/v1/sync", "text/plain", b""),
        ),
    ];
    for (what, want, (got, body)) in &cases {
        assert_eq!(got, want, "{what}: {body}");
        let msg = body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no error line in {body}"));
        assert!(!msg.is_empty() && !msg.contains('\n'), "{what}: {msg:?}");
    }
    assert_eq!(env.books(), empty, "a refusal changed the books");
    // A keyless flood, for a registered and for an unknown terminal: every
    // request refused before any work, not one exception written.
    let forged_unknown = String::from_utf8(batch.clone())
        .unwrap()
        .replacen("\"terminal_id\":7", "\"terminal_id\":99", 1)
        .into_bytes();
    for i in 0..100 {
        let body = if i % 2 == 0 { &batch } else { &forged_unknown };
        let (code, _) = http_with(
            server.port,
            "POST",
            "/v1/batches",
            "application/x-ndjson",
            "Tessera-Batch-Mac: 00112233445566778899aabbccddeeff\r\n",
            body,
        );
        assert_eq!(code, 401);
    }
    let ex = env.json(&["office", "report", "exceptions", "--dir", env.s("office")]);
    assert_eq!(ex["data"].as_array().map(Vec::len), Some(0), "{ex}");
    // An authenticated sync request answers once; the same request again
    // (a replay) is refused; a stale one too.
    let bundle = tessera_crypto::keys::TerminalBundle::from_json(&std::fs::read_to_string(&t7).unwrap()).unwrap();
    let now = u32::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    let signed = |time: u32, nonce: &[u8]| {
        let mac = tessera_office::request_mac(&bundle.batch_key, 7, time, nonce);
        format!(
            "/v1/sync?terminal=7&nonce={}&time={time}&mac={}",
            hex::encode(nonce),
            hex::encode(mac)
        )
    };
    let fresh = signed(now, &[1, 2, 3, 4]);
    assert_eq!(http(server.port, "GET", &fresh, "text/plain", b"").0, 200);
    assert_eq!(http(server.port, "GET", &fresh, "text/plain", b"").0, 401, "replayed");
    assert_eq!(
        http(server.port, "GET", &signed(now - 3600, &[5]), "text/plain", b"").0,
        401,
        "stale"
    );

    // The terminal settles: the sealed batch is sent unchanged and posted.
    let out: Value = serde_json::from_str(&env.pos_ok(&["settle", "--server", &server.url(), "--json"])).unwrap();
    assert_eq!(out["acks"][0]["status"], "posted", "{out}");
    let status: Value = serde_json::from_str(&env.pos_ok(&["status", "--json"])).unwrap();
    assert_eq!(status["unsettled_card_transactions"], 0, "{status}");
    let posted = env.books();
    let (batches, records) = env.posted();
    assert_eq!(batches, 1);
    assert!(records >= 4, "{records}");

    // The same batch again (a replayed request): acknowledged duplicate, nothing changes.
    let (code, ack) = post_batch_as(server.port, &t7, &batch);
    assert_eq!(code, 200, "{ack}");
    assert_eq!(ack["status"], "duplicate");
    assert_eq!(env.books(), posted);
    let again: Value = serde_json::from_str(&env.pos_ok(&["settle", "--server", &server.url(), "--json"])).unwrap();
    assert_eq!(again["acks"].as_array().unwrap().len(), 0, "{again}");

    // Oversized: a server with a small limit refuses with 413 and writes nothing.
    drop(server);
    let small = env.serve(Some(512));
    let (code, body) = post_batch_as(small.port, &t7, &batch);
    assert_eq!(code, 413, "{body}");
    assert_eq!(env.books(), posted);
}

#[test]
fn file_settlement_with_import_and_ack_file() {
    let env = Env::new();
    let card = env.s("anna.card");
    env.issue("anna.card");
    env.pos_ok(&["earn", "--card", card, "--amount", "10"]);
    let file = env.path("b.jsonl");
    env.pos_ok(&["settle", "--out", file.to_str().unwrap()]);
    let ack = env.path("ack.json");
    let out = env.ok(&[
        "office",
        "import",
        "--dir",
        env.s("office"),
        file.to_str().unwrap(),
        "--ack-out",
        ack.to_str().unwrap(),
    ]);
    assert!(out.contains("posted"), "{out}");
    env.pos_ok(&["settle", "--ack-file", ack.to_str().unwrap()]);
    let status: Value = serde_json::from_str(&env.pos_ok(&["status", "--json"])).unwrap();
    assert_eq!(status["unsettled_card_transactions"], 0);
    // Importing again: duplicate, books unchanged.
    let before = env.books();
    let out = env.ok(&["office", "import", "--dir", env.s("office"), file.to_str().unwrap()]);
    assert!(out.contains("duplicate"), "{out}");
    assert_eq!(env.books(), before);
    // A forged acknowledgement is refused.
    let mut forged: Value = serde_json::from_slice(&read(&ack)).unwrap();
    forged["mac"] = Value::String("00".repeat(16));
    std::fs::write(&ack, forged.to_string()).unwrap();
    assert_eq!(
        env.pos(&["settle", "--ack-file", ack.to_str().unwrap()]).status.code(),
        Some(6)
    );
}

#[test]
fn server_killed_mid_import_then_retry_posts_the_batch_once() {
    use tessera_terminal::journal::{Entry, EntryKind, Journal, Verdict};
    let env = Env::new();
    let card = env.s("anna.card");
    env.issue("anna.card");
    env.pos_ok(&["earn", "--card", card, "--amount", "25"]);
    // Pad the journal with declines so that the batch takes a while to stream.
    {
        let mut j = Journal::open(&env.path("terminal").join("journal.sqlite"), 7).unwrap();
        for i in 0..3000 {
            let mut e = Entry::new(EntryKind::Decision, 1_790_000_000 + i);
            e.verdict = Some(Verdict::Decline);
            e.reason = Some("D04".into());
            j.append(e).unwrap();
        }
    }
    let file = env.path("big.jsonl");
    env.pos_ok(&["settle", "--out", file.to_str().unwrap()]);
    let batch = read(&file);
    let records = batch.iter().filter(|b| **b == b'\n').count() as u64 - 2; // header and MAC lines

    let mut server = env.serve(None);
    let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    let head = format!(
        "POST /v1/batches HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\nTessera-Batch-Mac: {}\r\n\r\n",
        batch.len(),
        header_mac(&env.path("t7.json"), &batch)
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&batch[..batch.len() * 2 / 3]).unwrap();
    s.flush().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    server.kill(); // SIGKILL while the ledger is reading the batch
    drop(s);
    drop(server);
    assert_eq!(env.posted(), (0, 0), "a batch was posted in part");

    let server = env.serve(None);
    let out: Value = serde_json::from_str(&env.pos_ok(&["settle", "--server", &server.url(), "--json"])).unwrap();
    assert_eq!(out["acks"][0]["status"], "posted", "{out}");
    assert_eq!(env.posted(), (1, records));
    let (code, ack) = post_batch_as(server.port, &env.path("t7.json"), &batch);
    assert_eq!((code, ack["status"].as_str()), (200, Some("duplicate")));
    assert_eq!(env.posted(), (1, records));
}

#[test]
fn sync_after_hotlist_blocks_the_card_at_its_next_tap() {
    let env = Env::new();
    let card = env.s("anna.card");
    let id = env.issue("anna.card");
    env.pos_ok(&["earn", "--card", card, "--amount", "12.50"]);
    let server = env.serve(None);
    env.ok(&[
        "office",
        "hotlist",
        "add",
        "--dir",
        env.s("office"),
        "--card",
        &id,
        "--reason",
        "lost",
    ]);
    let out: Value = serde_json::from_str(&env.pos_ok(&["sync", "--server", &server.url(), "--json"])).unwrap();
    assert!(out["hotlist_version"].as_u64().unwrap() >= 1, "{out}");
    let hotlist = std::fs::read_to_string(env.path("terminal").join("hotlist.toml")).unwrap();
    assert!(hotlist.contains(&id), "{hotlist}");
    assert!(env.path("terminal").join("settled.json").exists());

    let o = env.pos(&["earn", "--card", card, "--amount", "5"]);
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    let history: Value = serde_json::from_str(&env.pos_ok(&["history", "--json"])).unwrap();
    let last = history["records"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["reason"], "D01", "{last}");
    let show: Value = serde_json::from_str(&env.ok(&["card", "show", "--card", card, "--json"])).unwrap();
    assert_eq!(show["lifecycle"], "blocked");

    // The clerk takes the card off the till's copy of the hotlist: the
    // office's signature no longer holds and the till refuses to decide,
    // with one line; the next sync restores the office's list.
    let a = env.issue("anna2.card");
    let hot = env.path("terminal").join("hotlist.toml");
    std::fs::write(&hot, hotlist.replace(&id, &a)).unwrap();
    let o = env.pos(&["earn", "--card", env.s("anna2.card"), "--amount", "5"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(err.contains("hotlist refused") && err.lines().count() == 1, "{err}");
    std::fs::remove_file(env.path("terminal").join("hotlist.toml.sig")).unwrap();
    let o = env.pos(&["earn", "--card", env.s("anna2.card"), "--amount", "5"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("hotlist.toml.sig is missing"));
    env.pos_ok(&["sync", "--server", &server.url()]);
    assert!(
        std::fs::read_to_string(&hot).unwrap().contains(&id),
        "the office's list is back"
    );
    env.pos_ok(&["earn", "--card", env.s("anna2.card"), "--amount", "5"]);

    // A sync answer for another terminal's keys does not verify.
    env.ok(&[
        "office",
        "export-terminal",
        "--dir",
        env.s("office"),
        "--terminal-id",
        "8",
        "--out",
        env.s("t8.json"),
        "--plain-http",
    ]);
    let mut forged: Value = serde_json::from_slice(&read(&env.path("t8.json"))).unwrap();
    forged["terminal_id"] = Value::from(7);
    std::fs::write(env.path("t8-as-7.json"), forged.to_string()).unwrap();
    let o = env.run(&[
        "pos",
        "sync",
        "--server",
        &server.url(),
        "--keys",
        env.s("t8-as-7.json"),
    ]);
    assert_eq!(o.status.code(), Some(6), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn office_init_refuses_to_overwrite_and_keeps_keys_private() {
    let env = Env::new();
    let o = env.run(&["office", "init", "--dir", env.s("office")]);
    assert_eq!(o.status.code(), Some(1));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&env.path("office")), 0o700);
        assert_eq!(mode(&env.path("office").join("issuer-keys.json")), 0o600);
        assert_eq!(mode(&env.path("office").join("office-key.pem")), 0o600);
        assert_eq!(mode(&env.path("t7.json")), 0o600);
    }
    let o = env.run(&[
        "office",
        "export-terminal",
        "--dir",
        env.s("office"),
        "--terminal-id",
        "7",
        "--out",
        env.s("t7.json"),
    ]);
    assert_eq!(o.status.code(), Some(1), "a bundle is never overwritten");
    // Reports print tables, CSV and JSON.
    let table = env.ok(&["office", "report", "liability", "--dir", env.s("office")]);
    assert!(table.starts_with("Liability"), "{table}");
    env.ok(&["office", "report", "reconciliation", "--dir", env.s("office"), "--csv"]);
    env.ok(&["office", "report", "exceptions", "--dir", env.s("office")]);
    env.ok(&["office", "report", "customers", "--dir", env.s("office")]);
}

/// A missing, empty or damaged ledger is refused — by reports, imports and
/// the server alike — and never recreated empty.
#[test]
fn a_missing_empty_or_corrupt_ledger_is_refused_never_recreated() {
    let env = Env::new();
    env.issue("anna.card");
    let ledger = env.path("office/ledger.sqlite");
    let good = std::fs::read(&ledger).unwrap();
    let refused = |what: &str| {
        for args in [
            vec!["office", "report", "liability", "--dir", env.s("office")],
            vec!["office", "serve", "--dir", env.s("office"), "--listen", "127.0.0.1:0"],
        ] {
            let out = env.run(&args);
            assert!(!out.status.success(), "{what}: {args:?} accepted it");
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(err.lines().count(), 1, "{what}: {err}");
        }
    };
    std::fs::write(&ledger, b"").unwrap();
    refused("empty");
    assert_eq!(std::fs::metadata(&ledger).unwrap().len(), 0, "not recreated");
    std::fs::remove_file(&ledger).unwrap();
    refused("missing");
    assert!(!ledger.exists(), "not recreated");
    let mut damaged = good.clone();
    let mid = damaged.len() / 2;
    for b in &mut damaged[mid..mid + 4096.min(good.len() - mid)] {
        *b = 0x5A;
    }
    std::fs::write(&ledger, &damaged).unwrap();
    refused("corrupt");
    std::fs::write(&ledger, b"not a database at all, just text").unwrap();
    refused("not a ledger");
    std::fs::write(&ledger, &good).unwrap();
    assert!(env
        .run(&["office", "report", "liability", "--dir", env.s("office")])
        .status
        .success());
}

/// The office's disk is rolled back to a backup taken after batch 1: batch
/// 2, acknowledged, is gone. The next `pos settle` is held, its
/// acknowledgement asks for batch 2, the till re-sends it from its journal,
/// and the books match the card again. `office verify` then finds the
/// ledger sound — until someone edits a balance in the file, which it
/// names and `office serve` refuses to serve on.
#[test]
fn a_storage_rollback_is_detected_resent_and_verified() {
    let env = Env::new();
    let card = env.s("anna.card");
    env.issue("anna.card");
    let ledger = env.path("office/ledger.sqlite");
    let backup = env.path("backup.sqlite");
    let mut server = env.serve(None);
    let settle = |server: &Server| {
        let o = env.pos(&["settle", "--server", &server.url(), "--json"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<Value>(&o.stdout).unwrap()
    };
    env.pos_ok(&["earn", "--card", card, "--amount", "10"]);
    settle(&server);
    server.kill();
    // A consistent copy (the server is down): the backup, with its WAL.
    std::fs::copy(&ledger, &backup).unwrap();
    let wal = format!("{}-wal", ledger.display());
    let backup_wal = env.path("backup.sqlite-wal");
    let had_wal = std::fs::copy(&wal, &backup_wal).is_ok();
    let mut server = env.serve(None);
    env.pos_ok(&["earn", "--card", card, "--amount", "20"]);
    assert_eq!(settle(&server)["acks"][0]["status"], "posted");
    server.kill();
    // The rollback.
    for ext in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", ledger.display()));
    }
    std::fs::copy(&backup, &ledger).unwrap();
    if had_wal {
        std::fs::copy(&backup_wal, &wal).unwrap();
    }
    let server = env.serve(None);
    env.pos_ok(&["earn", "--card", card, "--amount", "30"]);
    let out = settle(&server);
    let acks: Vec<(u64, String)> = out["acks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["batch_no"].as_u64().unwrap(),
                a["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(acks, vec![(3, "held".to_owned()), (2, "posted".to_owned())], "{out}");
    drop(server);
    let read: Value = serde_json::from_str(&env.pos_ok(&["read", "--card", card, "--json"])).unwrap();
    let balance = read["balance"]
        .as_i64()
        .unwrap_or_else(|| read["card"]["balance"].as_i64().unwrap());
    let (_, liability) = env.books();
    assert_eq!(liability["points_outstanding"].as_i64(), Some(balance), "{liability}");
    assert_eq!(liability["pending_records"], 0);
    let proof = env.json(&["office", "report", "explained", "--dir", env.s("office")]);
    assert_eq!(proof["data"]["explained"], true, "{proof}");
    let v = env.json(&["office", "verify", "--dir", env.s("office")]);
    assert_eq!(v["sound"], true, "{v}");

    // Someone edits a balance in the file.
    {
        let conn = rusqlite::Connection::open(&ledger).unwrap();
        conn.execute("UPDATE cards SET shadow_balance = shadow_balance + 1000", [])
            .unwrap();
    }
    let o = env.run(&["office", "verify", "--dir", env.s("office")]);
    assert_eq!(o.status.code(), Some(1));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("shadow balance is not the sum of its posted records"),
        "{text}"
    );
    let o = env.run(&["office", "serve", "--dir", env.s("office"), "--listen", "127.0.0.1:0"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("disagree with its postings") && err.lines().count() == 1,
        "{err}"
    );
}

/// Peak resident memory of a running process, KiB (Linux).
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// 200,000 exceptions stream out of `office report exceptions` — JSON,
/// CSV and text — in flat memory (the whole report is ~50 MB of JSON; the
/// process stays far below that), and a reader that stops early gets a
/// clean exit, not a panic.
#[test]
fn the_exceptions_report_streams_in_flat_memory() {
    const N: u64 = 200_000;
    let env = Env::new();
    env.issue("anna.card");
    {
        let conn = rusqlite::Connection::open(env.path("office/ledger.sqlite")).unwrap();
        conn.execute_batch(&format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {N})
             INSERT INTO exceptions (class, card_id, counter, terminal_id, batch_no, evidence, at)
             SELECT 'gap', x'7E57000000000001', i, 7, 1,
                    json_object('missing_from', i, 'why', 'a hole in the counters, kept open for the aging period'),
                    1796000000 + i FROM n"
        ))
        .unwrap();
    }
    for format in ["--json", "--csv", "--text"] {
        let mut args = vec!["office", "report", "exceptions", "--dir", env.s("office")];
        if format != "--text" {
            args.push(format);
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut out = child.stdout.take().unwrap();
        let (mut bytes, mut lines, mut peak) = (0usize, 0usize, 0u64);
        let mut buf = vec![0u8; 1 << 16];
        let mut json = Vec::new();
        loop {
            let n = out.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            if let Some(k) = vm_hwm_kib(pid) {
                peak = peak.max(k);
            }
            bytes += n;
            lines += buf[..n].iter().filter(|b| **b == b'\n').count();
            if format == "--json" {
                json.extend_from_slice(&buf[..n]);
            }
        }
        assert!(child.wait().unwrap().success(), "{format}");
        assert!(bytes > 20_000_000, "{format}: {bytes} bytes");
        assert!(
            peak > 0 && peak < 64 * 1024,
            "{format}: peak {peak} KiB for {bytes} bytes of report"
        );
        match format {
            "--json" => {
                let v: Value = serde_json::from_slice(&json).unwrap();
                let data = v["data"].as_array().unwrap();
                assert_eq!(data.len() as u64, N);
                assert_eq!(data[0]["class"], "gap");
                assert_eq!(data[N as usize - 1]["evidence"]["missing_from"], N);
            }
            "--csv" => assert_eq!(lines as u64, N + 1, "header and one line each"),
            _ => assert_eq!(lines as u64, N + 2, "title, header and one line each"),
        }
    }
    // A reader that stops after the first lines (`| head`).
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["office", "report", "exceptions", "--dir", env.s("office")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 4096];
    let mut out = child.stdout.take().unwrap();
    out.read_exact(&mut first).unwrap();
    drop(out);
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "{:?}: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.stderr.is_empty(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// The office announces its batch limit with the `413`; `pos settle`
/// re-seals its unsettled records into batches that fit, sends them all,
/// and the books hold every record once. A record larger than the limit by
/// itself is a clear error, and nothing is marked settled.
#[test]
fn a_batch_too_large_for_the_office_is_split_to_fit() {
    let env = Env::new();
    let card = env.s("anna.card");
    env.issue("anna.card");
    for amount in ["10", "11", "12", "13", "14", "15"] {
        env.pos_ok(&["earn", "--card", card, "--amount", amount]);
    }
    // The whole journal as one batch, to size the limit from.
    let whole = env.path("whole.jsonl");
    let o = env.pos(&["settle", "--out", whole.to_str().unwrap(), "--json"]);
    assert!(o.status.success());
    let size = std::fs::metadata(&whole).unwrap().len();
    let limit = size / 3;
    let server = env.serve(Some(limit));
    let o = env.pos(&["settle", "--server", &server.url(), "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out: Value = serde_json::from_slice(&o.stdout).unwrap();
    let acks = out["acks"].as_array().unwrap();
    assert!(acks.len() >= 3, "{out}");
    assert!(acks.iter().all(|a| a["status"] == "posted"), "{out}");
    let batches: Vec<u64> = acks.iter().map(|a| a["batch_no"].as_u64().unwrap()).collect();
    assert_eq!(
        batches,
        (1..=acks.len() as u64).collect::<Vec<_>>(),
        "numbered from 1, gapless"
    );
    assert_eq!(out["settled_up_to"], out["records"]);
    let (batches_posted, records) = env.posted();
    assert_eq!(
        (batches_posted, records),
        (acks.len() as u64, out["records"].as_u64().unwrap())
    );
    let proof = env.json(&["office", "report", "explained", "--dir", env.s("office")]);
    assert_eq!(proof["data"]["explained"], true, "{proof}");
    drop(server);
    // A limit no single record fits in.
    env.pos_ok(&["earn", "--card", card, "--amount", "16"]);
    let tiny = env.serve(Some(200));
    let o = env.pos(&["settle", "--server", &tiny.url()]);
    assert_eq!(o.status.code(), Some(6), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    // Progress lines, then one line that says why.
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.contains("alone is larger than the office's batch limit of 200 bytes"),
        "{err}"
    );
    let status: Value = serde_json::from_str(&env.pos_ok(&["status", "--json"])).unwrap();
    assert!(status["unsettled_card_transactions"].as_u64().unwrap() > 0, "{status}");
}

/// Every file a till and an office write — journal, caches, sync files,
/// keys, ledger — is readable by its owner only, in owner-only
/// directories; no temporary file is left behind.
#[cfg(unix)]
#[test]
fn till_and_office_files_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let card = env.s("anna.card");
    env.issue("anna.card");
    env.pos_ok(&["earn", "--card", card, "--amount", "10"]);
    let server = env.serve(None);
    env.pos_ok(&["settle", "--server", &server.url()]);
    env.pos_ok(&["sync", "--server", &server.url()]);
    env.pos_ok(&["read", "--card", card]);
    drop(server);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let mut seen = 0;
    for dir in [env.path("terminal"), env.path("office")] {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                assert!(!name.ends_with(".tmp"), "left behind: {}", p.display());
                if p.is_dir() {
                    assert_eq!(mode(&p), 0o700, "{}", p.display());
                    stack.push(p);
                } else {
                    assert_eq!(mode(&p), 0o600, "{}", p.display());
                    seen += 1;
                }
            }
        }
    }
    assert!(seen >= 4, "{seen} files");
}

/// A till decides only under a policy the office signed: an unsigned or
/// edited `policy.toml` refuses every tap with one line; the office signs
/// it (and registers it), the till applies it, and the ledger recomputes
/// its points under it.
#[test]
fn a_till_policy_must_be_signed_and_its_points_are_recomputed() {
    let env = Env::new();
    let card = env.s("anna.card");
    env.issue("anna.card");
    env.pos_ok(&["read", "--card", card]); // creates the terminal directory
    let policy =
        include_str!("../../tessera-rules/policy.toml").replace("base_points_per_unit = 1", "base_points_per_unit = 2");
    let path = env.path("terminal").join("policy.toml");
    std::fs::write(&path, &policy).unwrap();
    let o = env.pos(&["earn", "--card", card, "--amount", "10"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("policy.toml.sig is missing") && err.lines().count() == 1,
        "{err}"
    );
    env.ok(&[
        "office",
        "sign-policy",
        "--dir",
        env.s("office"),
        "--file",
        path.to_str().unwrap(),
    ]);
    let out = env.pos_ok(&["earn", "--card", card, "--amount", "10"]);
    assert!(out.contains("+20"), "twice the default rate: {out}");
    // Edited after signing: refused.
    std::fs::write(
        &path,
        policy.replace("base_points_per_unit = 2", "base_points_per_unit = 900"),
    )
    .unwrap();
    let o = env.pos(&["earn", "--card", card, "--amount", "10"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("policy refused"), "{err}");
    // Settled: the office recomputes the 20 points under the signed policy.
    let server = env.serve(None);
    env.pos_ok(&["settle", "--server", &server.url()]);
    drop(server);
    let proof = env.json(&["office", "report", "explained", "--dir", env.s("office")]);
    assert_eq!(proof["data"]["explained"], true, "{proof}");
    assert_eq!(proof["data"]["points_outstanding"], 20);
}

/// Settles till `terminal`'s journal (in `dir`, bundle `keys`) through a
/// batch file and `office import`, and gives the till the acknowledgement.
fn settle_by_file(env: &Env, dir: &str, keys: &str, name: &str) {
    let file = env.path(&format!("{name}.jsonl"));
    let ack = env.path(&format!("{name}.ack.json"));
    let pos = |args: &[&str]| {
        let mut a = vec!["pos"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["--keys", keys, "--terminal-dir", dir]);
        env.ok(&a)
    };
    pos(&["settle", "--out", file.to_str().unwrap()]);
    env.ok(&[
        "office",
        "import",
        "--dir",
        env.s("office"),
        file.to_str().unwrap(),
        "--ack-out",
        ack.to_str().unwrap(),
    ]);
    pos(&["settle", "--ack-file", ack.to_str().unwrap()]);
}

/// The reports a back-office clerk reads: reconciliation fits 100 columns
/// (the details with `--wide` or per terminal), copies another till
/// recovered are named as such, times are local, the liability is in
/// points and money, and a filter that does not apply or names nothing is
/// refused rather than answered with an empty report.
#[test]
fn reports_fit_a_screen_speak_local_time_and_refuse_unknown_filters() {
    let env = Env::new();
    env.ok(&[
        "office",
        "export-terminal",
        "--dir",
        env.s("office"),
        "--terminal-id",
        "8",
        "--out",
        env.s("t8.json"),
        "--plain-http",
    ]);
    let card = env.s("anna.card");
    env.issue("anna.card");
    let till = |dir: &str, keys: &str, args: &[&str]| {
        let mut a = vec!["pos"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["--keys", keys, "--terminal-dir", dir]);
        env.ok(&a)
    };
    let (t7, t8) = (env.s("terminal"), env.s("terminal8"));
    till(t7, env.s("t7.json"), &["earn", "--card", card, "--amount", "100"]);
    // Till 8 journals the card's last transaction at till 7 as recovered
    // evidence: a copy, normal.
    till(t8, env.s("t8.json"), &["earn", "--card", card, "--amount", "50"]);
    till(t8, env.s("t8.json"), &["redeem", "--card", card, "--points", "30"]);
    settle_by_file(&env, t7, env.s("t7.json"), "b7");
    settle_by_file(&env, t8, env.s("t8.json"), "b8");

    let dir = env.s("office");
    let recon = env.ok(&["office", "report", "reconciliation", "--dir", dir]);
    for line in recon.lines() {
        assert!(
            line.chars().count() <= 100,
            "{} columns: {line}\n{recon}",
            line.chars().count()
        );
    }
    assert!(recon.contains("copies"), "{recon}");
    assert!(!recon.contains("duplicates"), "{recon}");
    assert!(recon.contains("recovered from the card's log"), "{recon}");
    assert!(recon.contains("Every record is accounted for"), "{recon}");
    let data = env.json(&["office", "report", "reconciliation", "--dir", dir]);
    let rows = data["data"]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{data}");
    assert!(
        rows.iter().map(|r| r["copies"].as_u64().unwrap()).sum::<u64>() >= 1,
        "{data}"
    );
    let wide = env.ok(&["office", "report", "reconciliation", "--dir", dir, "--wide"]);
    assert!(wide.contains("declared") && wide.contains("redeem 1 / 30"), "{wide}");
    let detail = env.ok(&["office", "report", "reconciliation", "--dir", dir, "--terminal", "8"]);
    assert!(detail.starts_with("Reconciliation of terminal 8"), "{detail}");
    assert!(detail.contains("redeem"), "{detail}");
    let csv = env.ok(&["office", "report", "reconciliation", "--dir", dir, "--csv"]);
    assert!(csv.starts_with("date,terminal,batches,records,posted,copies,"), "{csv}");
    assert_eq!(csv.lines().count(), 3, "{csv}");

    // Filters that name nothing, or do not apply, are refused.
    let o = env.run(&["office", "report", "reconciliation", "--dir", dir, "--terminal", "9"]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no terminal 9"), "{err}");
    assert!(stdout(&o).is_empty());
    let o = env.run(&["office", "report", "customers", "--dir", dir, "--date", "2026-12-01"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--date"));
    let o = env.run(&[
        "office",
        "report",
        "reconciliation",
        "--dir",
        dir,
        "--date",
        "2026-02-30",
    ]);
    assert_eq!(o.status.code(), Some(2));

    // Liability: points and money.
    let liability = env.ok(&["office", "report", "liability", "--dir", dir, "--point-value", "0,05"]);
    let v = env.json(&["office", "report", "liability", "--dir", dir, "--point-value", "0,05"]);
    let outstanding = v["data"]["points_outstanding"].as_i64().unwrap();
    assert!(outstanding > 0, "{v}");
    assert_eq!(v["data"]["value_minor"].as_i64().unwrap(), outstanding * 5);
    assert!(
        liability.contains(&format!("{outstanding} points outstanding on 1 cards")),
        "{liability}"
    );
    let money = format!("{}.{:02}", outstanding * 5 / 100, outstanding * 5 % 100);
    assert!(liability.contains(&money), "{money} in {liability}");
    for bad in ["-1", "0.001", "abc", "1,2,3"] {
        let o = env.run(&["office", "report", "liability", "--dir", dir, "--point-value", bad]);
        assert_eq!(o.status.code(), Some(2), "{bad}");
    }

    // Exceptions at a known instant read in the office's time zone.
    {
        let conn = rusqlite::Connection::open(env.path("office/ledger.sqlite")).unwrap();
        conn.execute(
            "INSERT INTO exceptions (class, card_id, counter, terminal_id, batch_no, evidence, at)
             VALUES ('gap', NULL, NULL, 7, 1, '{}', 1796340600)",
            [],
        )
        .unwrap();
    }
    let at = |tz: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(["office", "report", "exceptions", "--dir", dir])
            .env("TZ", tz)
            .output()
            .unwrap();
        assert!(o.status.success());
        stdout(&o)
    };
    assert!(at("UTC").contains("2026-12-03 23:30"), "{}", at("UTC"));
    assert!(at("Asia/Tokyo").contains("2026-12-04 08:30"), "{}", at("Asia/Tokyo"));
    let o = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["office", "report", "exceptions", "--dir", dir, "--json"])
        .env("TZ", "Asia/Tokyo")
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let e = v["data"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(e["at"], 1_796_340_600);
    assert_eq!(e["at_local"], "2026-12-04T08:30:00+09:00");
}
