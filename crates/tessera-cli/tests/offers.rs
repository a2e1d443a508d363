//! Personal offers at the till through the CLI: a birthday-week customer
//! with coffee as a preference buying coffee gets exactly the points
//! `docs/terminal-policy.md` documents; a tampered campaign file is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

/// 2026-03-16 12:00 UTC: two days after Анна's birthday (1990-03-14).
const BIRTHDAY_WEEK: &str = "1773662400";

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .env("TESSERA_TERMINAL_DIR", dir.join("terminal"))
        .env("TESSERA_NOW", BIRTHDAY_WEEK)
        .output()
        .unwrap()
}

fn setup() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let card = dir.path().join("anna.card").to_str().unwrap().to_owned();
    let out = run(
        dir.path(),
        &[
            "card",
            "issue",
            "--card",
            &card,
            "--name",
            "Анна Петрова",
            "--birth-date",
            "1990-03-14",
            "--city",
            "Нижний Новгород",
            "--prefer",
            "coffee,bakery",
            "--tier",
            "1",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let term = dir.path().join("terminal");
    std::fs::create_dir_all(&term).unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tessera-rules/campaigns.example.toml");
    std::fs::copy(example, term.join("campaigns.toml")).unwrap();
    let out = run(
        dir.path(),
        &[
            "office",
            "sign-campaigns",
            "--test-keys",
            "--file",
            term.join("campaigns.toml").to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (dir, card)
}

#[test]
fn birthday_week_coffee_lover_gets_the_documented_points() {
    let (dir, card) = setup();
    // The greeting lists today's offers.
    let out = run(dir.path(), &["pos", "read", "--test-keys", "--card", &card]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Hello Анна Петрова! Tier 1"), "{text}");
    assert!(
        text.contains("Offer:") && text.to_lowercase().contains("birthday"),
        "{text}"
    );

    let out = run(
        dir.path(),
        &[
            "pos",
            "earn",
            "--test-keys",
            "--card",
            &card,
            "--amount",
            "12.50",
            "--category",
            "coffee",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // docs/terminal-policy.md, "Worked example": 12 base, coffee ×2, favourites
    // ×1.5, tier 1 ×1.1, birthday +50 = 89.
    assert_eq!(j["outcome"]["quote"]["base"], 12);
    assert_eq!(j["outcome"]["quote"]["total"], 89);
    assert_eq!(j["outcome"]["receipt"]["record"]["points"], 89);
    assert_eq!(j["outcome"]["receipt"]["record"]["balance_after"], 89);

    // The birthday bonus is once per birthday window: a second coffee earns 39.
    let out = run(
        dir.path(),
        &[
            "pos",
            "earn",
            "--test-keys",
            "--card",
            &card,
            "--amount",
            "12.50",
            "--category",
            "coffee",
            "--json",
        ],
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["outcome"]["quote"]["total"], 39);
}

#[test]
fn a_tampered_campaign_file_is_refused() {
    let (dir, card) = setup();
    let campaigns = dir.path().join("terminal/campaigns.toml");
    let text = std::fs::read_to_string(&campaigns).unwrap();
    std::fs::write(&campaigns, text.replace("points = 50", "points = 5000")).unwrap();
    let before = std::fs::read(&card).unwrap();
    let out = run(
        dir.path(),
        &[
            "pos",
            "earn",
            "--test-keys",
            "--card",
            &card,
            "--amount",
            "12.50",
            "--category",
            "coffee",
        ],
    );
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8(out.stderr).unwrap();
    // The --test-keys warning, then the one line that says why.
    assert_eq!(err.lines().count(), 2, "{err}");
    assert!(err
        .lines()
        .next()
        .unwrap()
        .starts_with("WARNING: using the published TEST keys"));
    assert!(err.contains("campaigns refused"), "{err}");
    assert_eq!(std::fs::read(&card).unwrap(), before, "the card was touched");
    // A signature made with another key is refused the same way.
    std::fs::write(&campaigns, text).unwrap();
    std::fs::write(dir.path().join("terminal/campaigns.toml.sig"), "00".repeat(64)).unwrap();
    let out = run(dir.path(), &["pos", "read", "--test-keys", "--card", &card]);
    assert_eq!(out.status.code(), Some(4));
}
