//! Referral approval through the real binary: a redemption the till
//! refers (offline velocity limit) is approved by the office with a code
//! the clerk types; the till checks it for that card, kind, amount and
//! till before the card is touched, uses it once, limits wrong codes; the
//! ledger reconciles each use with the issued approvals at settlement.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use tessera_crypto::referral::{amount_hint, card_hint, Referral, ReferralKey, ReferralKind};
use tessera_crypto::Key;

/// The office's and the tills' clock (2026-09-21).
const T0: u32 = 1_790_000_000;
const CARD_A: &str = "BE4C00000000A001";

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        let e = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        e.ok(T0, &["office", "init", "--dir", e.s("office")]);
        for t in ["7", "8"] {
            e.ok(
                T0,
                &[
                    "office",
                    "export-terminal",
                    "--dir",
                    e.s("office"),
                    "--terminal-id",
                    t,
                    "--out",
                    e.s(&format!("t{t}.json")),
                    "--plain-http",
                ],
            );
        }
        e
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn s(&self, name: &str) -> &'static str {
        Box::leak(self.path(name).to_str().unwrap().to_owned().into_boxed_str())
    }

    fn run(&self, now: u32, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(args)
            .env("TESSERA_TERMINAL_DIR", self.path("terminal"))
            .env("TESSERA_NOW", now.to_string())
            .env("TESSERA_OPERATOR", "Marie at the office")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn ok(&self, now: u32, args: &[&str]) -> String {
        let o = self.run(now, args);
        assert!(
            o.status.success(),
            "tessera {} failed ({:?}): {}{}",
            args.join(" "),
            o.status.code(),
            out(&o),
            String::from_utf8_lossy(&o.stderr)
        );
        out(&o)
    }

    fn issue(&self, file: &str, id: &str) {
        self.ok(
            T0,
            &[
                "office",
                "issue",
                "--dir",
                self.s("office"),
                "--card",
                self.s(file),
                "--card-id",
                id,
                "--name",
                "Анна Петрова",
                "--birth-date",
                "1990-03-14",
            ],
        );
    }

    /// `pos …` at till 7 (its bundle), in `terminal` unless `--terminal-dir` is given.
    fn pos(&self, now: u32, args: &[&str]) -> Output {
        let mut a = vec!["pos"];
        a.extend_from_slice(args);
        if !args.contains(&"--keys") {
            a.extend_from_slice(&["--keys", self.s("t7.json")]);
        }
        self.run(now, &a)
    }

    fn pos_json(&self, now: u32, args: &[&str]) -> (Option<i32>, Value) {
        let mut a = args.to_vec();
        a.push("--json");
        let o = self.pos(now, &a);
        let v = serde_json::from_str(&out(&o)).unwrap_or_else(|e| panic!("{e}: {}{}", out(&o), err(&o)));
        (o.status.code(), v)
    }

    fn approve(&self, now: u32, terminal: &str, card: &str, kind: &str, amount: &str, valid: &str) -> String {
        let v: Value = serde_json::from_str(&self.ok(
            now,
            &[
                "office",
                "approve",
                "--dir",
                self.s("office"),
                "--terminal-id",
                terminal,
                "--card",
                card,
                "--kind",
                kind,
                "--amount",
                amount,
                "--valid-for",
                valid,
                "--json",
            ],
        ))
        .unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(v["approval"]["issued_by"], "Marie at the office");
        v["approval"]["code"].as_str().unwrap().to_owned()
    }

    /// Card A with 2000 points and five unsettled redemptions: the next
    /// redemption is referred (R01).
    fn referred_card(&self) {
        self.issue("a.card", CARD_A);
        let card = self.s("a.card");
        assert!(self
            .pos(T0, &["earn", "--card", card, "--amount", "2000"])
            .status
            .success());
        for _ in 0..5 {
            assert!(self
                .pos(T0, &["redeem", "--card", card, "--points", "10"])
                .status
                .success());
        }
        let (code, v) = self.pos_json(T0, &["redeem", "--card", card, "--points", "30"]);
        assert_eq!(code, Some(5), "{v}");
        assert_eq!(v["outcome"]["reason"], "R01");
    }

    fn journal_len(&self, dir: &str) -> u64 {
        let o = self.pos(T0, &["status", "--terminal-dir", self.s(dir), "--json"]);
        let v: Value = serde_json::from_str(&out(&o)).unwrap();
        v["records"].as_u64().unwrap()
    }

    fn settle(&self, dir: &str, now: u32) -> Output {
        let file = self.path(&format!("{dir}.batch"));
        let _ = std::fs::remove_file(&file);
        let o = self.pos(
            now,
            &["settle", "--terminal-dir", self.s(dir), "--out", file.to_str().unwrap()],
        );
        assert!(o.status.success(), "{}{}", out(&o), err(&o));
        self.run(
            now,
            &["office", "import", "--dir", self.s("office"), file.to_str().unwrap()],
        )
    }

    fn exceptions(&self) -> Vec<Value> {
        let v: Value = serde_json::from_str(&self.ok(
            T0,
            &["office", "report", "exceptions", "--dir", self.s("office"), "--json"],
        ))
        .unwrap();
        v["data"].as_array().unwrap_or_else(|| panic!("{v}")).clone()
    }

    fn approvals(&self, now: u32) -> Vec<Value> {
        let v: Value =
            serde_json::from_str(&self.ok(now, &["office", "approve", "list", "--dir", self.s("office"), "--json"]))
                .unwrap();
        v["approvals"].as_array().unwrap().clone()
    }

    fn batch_key(&self, bundle: &str) -> Key {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(self.path(bundle)).unwrap()).unwrap();
        Key::from_hex(v["batch_key"].as_str().unwrap()).unwrap()
    }
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[test]
fn a_referred_redemption_approved_by_code_settles_and_the_books_balance() {
    let env = Env::new();
    env.referred_card();
    let card = env.s("a.card");
    let code = env.approve(T0 + 60, "7", CARD_A, "redeem", "30", "30m");
    assert_eq!(code.len(), 19, "{code}");
    assert_eq!(env.approvals(T0 + 60)[0]["state"], "issued");
    // The clerk types it as heard: lower case, spaces.
    let typed = code.to_lowercase().replace('-', " ");
    let o = env.pos(
        T0 + 120,
        &["redeem", "--card", card, "--points", "30", "--approval", &typed],
    );
    assert!(o.status.success(), "{}{}", out(&o), err(&o));
    assert!(out(&o).contains("APPROVED — -30 points redeemed"), "{}", out(&o));
    // Replay: refused, nothing written to the card.
    let before = std::fs::read(env.path("a.card")).unwrap();
    let (exit, v) = env.pos_json(
        T0 + 180,
        &["redeem", "--card", card, "--points", "30", "--approval", &code],
    );
    assert_eq!(exit, Some(1), "{v}");
    assert_eq!(v["outcome"]["reason"], "C07");
    assert!(v["error"].as_str().unwrap().contains("already used"), "{v}");
    assert_eq!(std::fs::read(env.path("a.card")).unwrap(), before);
    // Settled: the approval is used, the books are sound, no exception.
    let o = env.settle("terminal", T0 + 240);
    assert!(o.status.success(), "{}{}", out(&o), err(&o));
    env.ok(T0 + 240, &["office", "verify", "--dir", env.s("office")]);
    assert!(env.exceptions().is_empty(), "{:?}", env.exceptions());
    let list = env.approvals(T0 + 240);
    assert_eq!(list[0]["state"], "used");
    assert_eq!(list[0]["uses"][0]["terminal_id"], 7);
    let table = env.ok(T0 + 240, &["office", "approve", "list", "--dir", env.s("office")]);
    assert!(
        table.contains(&code) && table.contains("used") && table.contains("till 7 #"),
        "{table}"
    );
    let csv = env.ok(
        T0 + 240,
        &["office", "approve", "list", "--dir", env.s("office"), "--csv"],
    );
    assert!(
        csv.starts_with("id,code,till,card,kind,amount,expires,by,issued,state,used by\n"),
        "{csv}"
    );
    // What the office refuses: a card it never issued, an unknown till,
    // a validity beyond three days, a zero amount.
    let approve = |t: &str, c: &str, amount: &str, valid: &str| {
        env.run(
            T0,
            &[
                "office",
                "approve",
                "--dir",
                env.s("office"),
                "--terminal-id",
                t,
                "--card",
                c,
                "--kind",
                "redeem",
                "--amount",
                amount,
                "--valid-for",
                valid,
            ],
        )
    };
    let o = approve("7", "BE4C00000000FFFF", "30", "30m");
    assert_eq!(o.status.code(), Some(6), "{}", err(&o));
    assert!(err(&o).contains("never issued"), "{}", err(&o));
    let o = approve("9", CARD_A, "30", "30m");
    assert_eq!(o.status.code(), Some(6), "{}", err(&o));
    assert!(err(&o).contains("terminal 9 is not registered"), "{}", err(&o));
    assert_eq!(approve("7", CARD_A, "30", "4d").status.code(), Some(2));
    assert_eq!(approve("7", CARD_A, "0", "30m").status.code(), Some(2));
    assert_eq!(env.approvals(T0 + 240).len(), 1, "nothing issued by the refusals");
    // Issued and not used: listed as issued, then expired.
    env.approve(T0 + 300, "7", CARD_A, "redeem", "40", "1m");
    let unused = env.ok(
        T0 + 600,
        &[
            "office",
            "approve",
            "list",
            "--dir",
            env.s("office"),
            "--state",
            "expired",
            "--csv",
        ],
    );
    assert_eq!(unused.lines().count(), 2, "{unused}");
}

#[test]
fn codes_for_another_card_amount_kind_till_or_time_are_refused_and_typos_caught() {
    let env = Env::new();
    env.referred_card();
    let card = env.s("a.card");
    let redeem = |now: u32, points: &str, code: &str| {
        env.pos_json(now, &["redeem", "--card", card, "--points", points, "--approval", code])
    };
    let refused = |(exit, v): (Option<i32>, Value), reason: &str, words: &str| {
        assert_eq!(exit, Some(1), "{v}");
        assert_eq!(v["outcome"]["reason"], reason, "{v}");
        assert!(v["error"].as_str().unwrap().contains(words), "{v}");
    };
    // Another card: a card whose hint differs from A's.
    let a_id: [u8; 8] = hex::decode(CARD_A).unwrap().try_into().unwrap();
    let b_id = (1..=255u8)
        .map(|b| {
            let mut c = a_id;
            c[7] = b;
            c
        })
        .find(|c| card_hint(c) != card_hint(&a_id))
        .unwrap();
    let b_hex = hex::encode_upper(b_id);
    env.issue("b.card", &b_hex);
    let for_b = env.approve(T0, "7", &b_hex, "redeem", "30", "30m");
    refused(redeem(T0, "30", &for_b), "C03", "another card");
    // Another amount.
    let other = (31..).find(|a| amount_hint(*a) != amount_hint(30)).unwrap().to_string();
    let code = env.approve(T0, "7", CARD_A, "redeem", &other, "30m");
    refused(redeem(T0, "30", &code), "C04", "another amount");
    // Another kind.
    let code = env.approve(T0, "7", CARD_A, "earn", "30", "30m");
    refused(redeem(T0, "30", &code), "C01", "for a earn, not a redeem");
    // Another till.
    let code = env.approve(T0, "8", CARD_A, "redeem", "30", "30m");
    refused(redeem(T0, "30", &code), "C02", "another till");
    // Expired.
    let code = env.approve(T0, "7", CARD_A, "redeem", "30", "1m");
    refused(redeem(T0 + 180, "30", &code), "C06", "expired");
    // A typo: caught by the check character before the till opens.
    let good = env.approve(T0, "7", CARD_A, "redeem", "30", "30m");
    let mut chars: Vec<char> = good.chars().collect();
    chars[5] = if chars[5] == '7' { '8' } else { '7' };
    let typo: String = chars.into_iter().collect();
    let records = env.journal_len("terminal");
    let before = std::fs::read(env.path("a.card")).unwrap();
    let o = env.pos(T0, &["redeem", "--card", card, "--points", "30", "--approval", &typo]);
    assert_eq!(o.status.code(), Some(2), "{}{}", out(&o), err(&o));
    assert!(err(&o).contains("check character"), "{}", err(&o));
    assert_eq!(env.journal_len("terminal"), records, "a typo writes nothing");
    assert_eq!(std::fs::read(env.path("a.card")).unwrap(), before);
    // Without a bundle there is no key to check a code with.
    let o = env.run(
        T0,
        &[
            "pos",
            "redeem",
            "--card",
            card,
            "--points",
            "30",
            "--test-keys",
            "--approval",
            &good,
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    // The genuine code still works (4 wrong codes this hour: below the limit).
    let (exit, v) = redeem(T0 + 60, "30", &good);
    assert_eq!(exit, Some(0), "{v}");
}

#[test]
fn wrong_codes_are_limited_per_hour() {
    let env = Env::new();
    env.referred_card();
    let card = env.s("a.card");
    let good = env.approve(T0, "7", CARD_A, "redeem", "30", "3h");
    // Codes a clerk might try: right card, kind, amount and till, but not
    // made with the office's key.
    let a_id: [u8; 8] = hex::decode(CARD_A).unwrap().try_into().unwrap();
    let forged = |serial: u16| {
        Referral {
            terminal_id: 7,
            card_id: a_id,
            kind: ReferralKind::Redeem,
            amount: 30,
            expires_min: T0 / 60 + 100,
            serial,
        }
        .code(&ReferralKey::derive(&Key::new([serial as u8; 16]), 7))
        .to_string()
    };
    for i in 0..5u16 {
        let (exit, v) = env.pos_json(
            T0 + u32::from(i),
            &["redeem", "--card", card, "--points", "30", "--approval", &forged(i + 1)],
        );
        assert_eq!(exit, Some(1), "{v}");
        assert_eq!(v["outcome"]["reason"], "C05", "{v}");
    }
    // The sixth, even the genuine code, waits for the hour.
    let (exit, v) = env.pos_json(
        T0 + 10,
        &["redeem", "--card", card, "--points", "30", "--approval", &good],
    );
    assert_eq!(exit, Some(1), "{v}");
    assert_eq!(v["outcome"]["reason"], "C08", "{v}");
    assert!(v["error"].as_str().unwrap().contains("5 wrong approval codes"), "{v}");
    // An hour after the first wrong code, one more code is accepted.
    let (exit, v) = env.pos_json(
        T0 + 3600,
        &["redeem", "--card", card, "--points", "30", "--approval", &good],
    );
    assert_eq!(exit, Some(0), "{v}");
}

#[test]
fn a_copied_till_directory_using_a_code_twice_is_an_exception_at_the_ledger() {
    let env = Env::new();
    env.referred_card();
    let card = env.s("a.card");
    let code = env.approve(T0, "7", CARD_A, "redeem", "30", "30m");
    copy_dir(&env.path("terminal"), &env.path("copy"));
    let o = env.pos(
        T0 + 60,
        &["redeem", "--card", card, "--points", "30", "--approval", &code],
    );
    assert!(o.status.success(), "{}{}", out(&o), err(&o));
    // The copy does not know the code was used.
    let o = env.pos(
        T0 + 120,
        &[
            "redeem",
            "--card",
            card,
            "--points",
            "30",
            "--approval",
            &code,
            "--terminal-dir",
            env.s("copy"),
        ],
    );
    assert!(o.status.success(), "{}{}", out(&o), err(&o));
    assert!(env.settle("terminal", T0 + 180).status.success());
    // The copy's batch conflicts with the till's; its verified records
    // show the code used again.
    let o = env.settle("copy", T0 + 240);
    assert!(!o.status.success(), "{}", out(&o));
    // Sent again, the copy's batch names nothing new.
    let o = env.settle("copy", T0 + 300);
    assert!(!o.status.success(), "{}", out(&o));
    let ex = env.exceptions();
    assert_eq!(
        ex.iter().filter(|e| e["class"] == "approval-reused").count(),
        1,
        "{ex:?}"
    );
    let reused = ex
        .iter()
        .find(|e| e["class"] == "approval-reused")
        .unwrap_or_else(|| panic!("{ex:?}"));
    let evidence = if reused["evidence"].is_string() {
        serde_json::from_str(reused["evidence"].as_str().unwrap()).unwrap()
    } else {
        reused["evidence"].clone()
    };
    assert_eq!(evidence["code"], code.as_str());
    assert_eq!(evidence["earlier"][0]["terminal_id"], 7);
}

#[test]
fn a_till_minting_its_own_codes_is_caught_at_settlement() {
    let env = Env::new();
    env.referred_card();
    let card = env.s("a.card");
    let a_id: [u8; 8] = hex::decode(CARD_A).unwrap().try_into().unwrap();
    // A compromised till holds its batch key, so it can make a code the
    // till accepts; the office never issued it.
    let minted = Referral {
        terminal_id: 7,
        card_id: a_id,
        kind: ReferralKind::Redeem,
        amount: 30,
        expires_min: T0 / 60 + 30,
        serial: 99,
    }
    .code(&ReferralKey::derive(&env.batch_key("t7.json"), 7))
    .to_string();
    let o = env.pos(T0, &["redeem", "--card", card, "--points", "30", "--approval", &minted]);
    assert!(o.status.success(), "{}{}", out(&o), err(&o));
    assert!(env.settle("terminal", T0 + 60).status.success());
    let ex = env.exceptions();
    assert!(ex.iter().any(|e| e["class"] == "approval-unknown"), "{ex:?}");
}

#[test]
fn a_purchase_above_the_offline_limit_is_approved_by_code_and_its_points_reconcile() {
    let env = Env::new();
    env.issue("a.card", CARD_A);
    let card = env.s("a.card");
    let (exit, v) = env.pos_json(T0, &["earn", "--card", card, "--amount", "15000"]);
    assert_eq!(exit, Some(5), "referred: {v}");
    assert_eq!(v["outcome"]["reason"], "R05");
    let code = env.approve(T0, "7", CARD_A, "earn", "15000.00", "30m");
    // The code is for that purchase: another amount is refused.
    let (exit, v) = env.pos_json(
        T0 + 30,
        &["earn", "--card", card, "--amount", "15000.01", "--approval", &code],
    );
    assert_eq!(exit, Some(1), "{v}");
    assert!(
        ["C04", "C05"].contains(&v["outcome"]["reason"].as_str().unwrap()),
        "{v}"
    );
    let (exit, v) = env.pos_json(
        T0 + 60,
        &["earn", "--card", card, "--amount", "15000", "--approval", &code],
    );
    assert_eq!(exit, Some(0), "{v}");
    assert_eq!(v["card"]["balance"], 0, "the card as read before the earn");
    let o = env.settle("terminal", T0 + 120);
    assert!(o.status.success(), "{}{}", out(&o), err(&o));
    env.ok(T0 + 120, &["office", "verify", "--dir", env.s("office")]);
    assert!(env.exceptions().is_empty(), "{:?}", env.exceptions());
    assert_eq!(env.approvals(T0 + 120)[0]["state"], "used");
    // Its refund is above the till's earn cap too (R06): a refund code.
    let of = format!("{CARD_A}:1");
    let (exit, v) = env.pos_json(T0 + 180, &["refund", "--card", card, "--of", &of]);
    assert_eq!(exit, Some(5), "referred: {v}");
    assert_eq!(v["outcome"]["reason"], "R06");
    let code = env.approve(T0 + 180, "7", CARD_A, "refund", "15000", "30m");
    let (exit, v) = env.pos_json(T0 + 240, &["refund", "--card", card, "--of", &of, "--approval", &code]);
    assert_eq!(exit, Some(0), "{v}");
    assert!(env.settle("terminal", T0 + 300).status.success());
    env.ok(T0 + 300, &["office", "verify", "--dir", env.s("office")]);
    assert!(env.exceptions().is_empty(), "{:?}", env.exceptions());
}

#[test]
fn a_till_that_skips_its_checks_is_caught_using_a_code_for_another_amount() {
    use tessera_terminal::journal::{Entry, EntryKind, Journal, Verdict};
    let env = Env::new();
    env.referred_card();
    let code = env.approve(T0, "7", CARD_A, "redeem", "30", "30m");
    // A till running modified software journals a redemption of 300 on
    // the code for 30 (its journal, chained and sealed with its genuine key).
    {
        let mut j = Journal::open(&env.path("terminal").join("journal.sqlite"), 7).unwrap();
        let mut e = Entry::new(EntryKind::Decision, T0 + 60);
        e.card_id = Some(CARD_A.into());
        e.card_counter = Some(7);
        e.tx_type = Some("redeem".into());
        e.points = Some(300);
        e.verdict = Some(Verdict::Approve);
        e.approval = Some(code.clone());
        j.append(e).unwrap();
    }
    assert!(env.settle("terminal", T0 + 120).status.success());
    let ex = env.exceptions();
    let m = ex
        .iter()
        .find(|e| e["class"] == "approval-mismatch")
        .unwrap_or_else(|| panic!("{ex:?}"));
    assert!(m.to_string().contains("amount"), "{m}");
}
