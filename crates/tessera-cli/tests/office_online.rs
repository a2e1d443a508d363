//! Online authorization through the real binary (card application 2.2):
//! `pos earn --online URL` with `office serve` running, and the telephone
//! delivery — `pos earn --voice` shows a reference, the office decides it
//! with `office approve --request REF` and reads back an answer code the
//! clerk types, which the card checks itself. A mistyped code is asked for
//! again; a wrong one is refused by the card and changes nothing; `office
//! card show` lists the card's authorizations and what is still to come.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

const T0: u32 = 1_790_000_000;
const CARD: &str = "BE4C00000000B001";

struct Env {
    dir: tempfile::TempDir,
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
            "--plain-http",
        ]);
        e.ok(&[
            "office",
            "issue",
            "--dir",
            e.s("office"),
            "--card",
            e.s("anna.card"),
            "--card-id",
            CARD,
            "--name",
            "Анна Петрова",
            "--birth-date",
            "1990-03-14",
        ]);
        e
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn s(&self, name: &str) -> &'static str {
        Box::leak(self.path(name).to_str().unwrap().to_owned().into_boxed_str())
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tessera"));
        c.args(args)
            .env("TESSERA_TERMINAL_DIR", self.path("terminal"))
            .env("TESSERA_NOW", T0.to_string())
            .env("TESSERA_OPERATOR", "Marie at the office");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).stdin(Stdio::null()).output().unwrap()
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

    fn serve(&self) -> (Child, String) {
        let mut child = self
            .cmd(&[
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
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line.trim().strip_prefix("listening on ").unwrap().to_owned();
        (child, format!("http://{addr}"))
    }

    fn balance(&self) -> i64 {
        let v: Value = serde_json::from_str(&self.ok(&[
            "pos",
            "read",
            "--keys",
            self.s("t7.json"),
            "--card",
            self.s("anna.card"),
            "--json",
        ]))
        .unwrap();
        v["card"]["balance"].as_i64().unwrap()
    }

    /// `pos earn --voice` for 15,000.00: `answer` gets the reference and the
    /// points the till shows and returns what the clerk types (lines).
    fn voice_earn(&self, answer: impl FnOnce(&str, &str) -> Vec<String>) -> (Option<i32>, String) {
        let mut child = self
            .cmd(&[
                "pos",
                "earn",
                "--keys",
                self.s("t7.json"),
                "--card",
                self.s("anna.card"),
                "--amount",
                "15000",
                "--voice",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        // The prompt line: "Call the office and read: till 7, card …, earn of N points, reference R".
        let mut prompt = String::new();
        loop {
            prompt.clear();
            assert!(err.read_line(&mut prompt).unwrap() > 0, "no prompt");
            if prompt.contains("reference ") {
                break;
            }
        }
        let reference = prompt.rsplit("reference ").next().unwrap().trim().to_owned();
        let points = prompt
            .split("earn of ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .unwrap()
            .to_owned();
        let mut stdin = child.stdin.take().unwrap();
        for l in answer(&reference, &points) {
            writeln!(stdin, "{l}").unwrap();
        }
        drop(stdin);
        let mut rest = String::new();
        err.read_to_string(&mut rest).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            format!("{prompt}{rest}{}", String::from_utf8_lossy(&out.stdout)),
        )
    }

    fn approve(&self, reference: &str, points: &str) -> Value {
        serde_json::from_str(&self.ok(&[
            "office",
            "approve",
            "--dir",
            self.s("office"),
            "--terminal-id",
            "7",
            "--card",
            CARD,
            "--kind",
            "earn",
            "--amount",
            points,
            "--request",
            reference,
            "--json",
        ]))
        .unwrap()
    }
}

#[test]
fn referrals_resolved_online_and_by_telephone_through_the_binary() {
    let env = Env::new();
    let (mut server, url) = env.serve();
    let keys = env.s("t7.json");
    let card = env.s("anna.card");
    // Offline: referred.
    let o = env.run(&["pos", "earn", "--keys", keys, "--card", card, "--amount", "15000"]);
    assert_eq!(o.status.code(), Some(5), "{}", String::from_utf8_lossy(&o.stderr));
    // Online: approved by the office, the card checks its answer.
    let v: Value = serde_json::from_str(&env.ok(&[
        "pos", "earn", "--keys", keys, "--card", card, "--amount", "15000", "--online", &url, "--json",
    ]))
    .unwrap();
    let rec = &v["outcome"]["receipt"]["record"];
    assert_eq!(rec["online"], true, "{v}");
    let after_online = env.balance();
    assert_eq!(after_online, rec["balance_after"].as_i64().unwrap());

    // By telephone: a mistyped code is asked for again, the right one
    // approves.
    let (code, text) = env.voice_earn(|reference, points| {
        let a = env.approve(reference, points);
        assert_eq!(a["authorization"]["code"], "A00", "{a}");
        let answer = a["authorization"]["answer"].as_str().unwrap().to_owned();
        let mut typo: Vec<char> = answer.chars().collect();
        typo[0] = if typo[0] == 'A' { 'B' } else { 'A' };
        vec![typo.into_iter().collect(), answer]
    });
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("check character"), "{text}");
    let after_voice = env.balance();
    assert!(after_voice > after_online);

    // A well-formed code the office did not give: the card refuses it,
    // nothing changes.
    let (code, text) = env.voice_earn(|_, _| vec!["0000-0000-0000-00".into()]);
    assert_ne!(code, Some(0), "{text}");
    assert_eq!(env.balance(), after_voice);
    // The clerk gives up (Enter): the referral stands.
    let (code, text) = env.voice_earn(|_, _| vec![String::new()]);
    assert_eq!(code, Some(5), "{text}");
    assert_eq!(env.balance(), after_voice);

    // The office's books: both approvals, waiting for the till's batch.
    let show: Value = serde_json::from_str(&env.ok(&[
        "office",
        "card",
        "show",
        "--dir",
        env.s("office"),
        "--card",
        CARD,
        "--json",
    ]))
    .unwrap();
    let auths = show["online_authorizations"].as_array().unwrap();
    let deliveries: Vec<&str> = auths.iter().map(|a| a["delivery"].as_str().unwrap()).collect();
    assert!(
        deliveries.contains(&"online") && deliveries.contains(&"voice"),
        "{show}"
    );
    assert_eq!(show["online_outstanding"].as_i64().unwrap(), after_voice, "{show}");
    // Settled: each matched once, nothing outstanding.
    env.ok(&["pos", "settle", "--keys", keys, "--server", &url]);
    let show: Value = serde_json::from_str(&env.ok(&[
        "office",
        "card",
        "show",
        "--dir",
        env.s("office"),
        "--card",
        CARD,
        "--json",
    ]))
    .unwrap();
    assert_eq!(show["online_outstanding"], 0, "{show}");
    let posted = show["online_authorizations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["state"] == "posted")
        .count();
    assert_eq!(posted, 2, "{show}");
    assert_eq!(show["card"]["shadow_balance"].as_i64().unwrap(), after_voice);
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn online_and_voice_need_a_bundle_and_a_well_formed_reference() {
    let env = Env::new();
    // No --keys: --online cannot authenticate to the office.
    let o = env.run(&[
        "pos",
        "earn",
        "--test-keys",
        "--card",
        env.s("anna.card"),
        "--amount",
        "15000",
        "--online",
        "http://127.0.0.1:9",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    // The till's online.toml: an unreachable office declines (O09) instead
    // of leaving the referral; a malformed file is refused, nothing done.
    // (A till of its own: the training run above made terminal 1's journal.)
    std::fs::remove_dir_all(env.path("terminal")).unwrap();
    env.ok(&["pos", "read", "--keys", env.s("t7.json"), "--card", env.s("anna.card")]);
    let earn = [
        "pos",
        "earn",
        "--keys",
        env.s("t7.json"),
        "--card",
        env.s("anna.card"),
        "--amount",
        "15000",
        "--online",
        "http://127.0.0.1:9",
        "--json",
    ];
    let o = env.run(&earn);
    assert_eq!(
        o.status.code(),
        Some(5),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::write(
        env.path("terminal").join("online.toml"),
        "without_answer = \"decline\"\ntimeout_ms = 500\n",
    )
    .unwrap();
    let o = env.run(&earn);
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["outcome"]["reason"], "O09", "{v}");
    std::fs::write(
        env.path("terminal").join("online.toml"),
        "without_answer = \"approve\"\n",
    )
    .unwrap();
    let o = env.run(&earn);
    assert_eq!(o.status.code(), Some(4));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["error"].as_str().unwrap().contains("online.toml"), "{v}");
    std::fs::remove_file(env.path("terminal").join("online.toml")).unwrap();
    // A reference read wrong: refused before anything is decided.
    let o = env.run(&[
        "office",
        "approve",
        "--dir",
        env.s("office"),
        "--terminal-id",
        "7",
        "--card",
        CARD,
        "--kind",
        "earn",
        "--amount",
        "100",
        "--request",
        "AAAAA-AAAAA-AAAAA-AA",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("reference"));
}
