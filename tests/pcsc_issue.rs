//! Issuance on a card in a PC/SC reader: the office's factory step makes a
//! blank card, the card sits in a vpcd reader of the real pcscd, and
//! `tessera office issue --reader` personalizes it through PC/SC; the till
//! then transacts with it, through PC/SC too.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tessera_protocol::messages::Lifecycle;
use tessera_suite::pcscd::{card_file_state, exclusive, run_tessera, skip, Pcscd, ServedCard, Watchdog};

fn ok(args: &[&str]) -> String {
    let out = run_tessera(args, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "tessera {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn office_issues_a_blank_card_in_a_reader() {
    if skip("office_issues_a_blank_card_in_a_reader") {
        return;
    }
    let _own = exclusive();
    let _dog = Watchdog::arm("office_issues_a_blank_card_in_a_reader", Duration::from_secs(120));
    let dir = tempfile::tempdir().unwrap();
    let office = dir.path().join("office");
    let (o, blank) = (office.to_str().unwrap().to_owned(), dir.path().join("blank.card"));
    let bundle = dir.path().join("bundle.json");
    let term = dir.path().join("terminal");
    ok(&["office", "init", "--dir", &o]);
    ok(&[
        "office",
        "manufacture",
        "--dir",
        &o,
        "--card",
        blank.to_str().unwrap(),
        "--card-id",
        "7E570000000B0001",
    ]);
    assert_eq!(card_file_state(&blank).lifecycle, Lifecycle::Personalization);
    ok(&[
        "office",
        "export-terminal",
        "--dir",
        &o,
        "--terminal-id",
        "9",
        "--out",
        bundle.to_str().unwrap(),
    ]);

    let _pcscd = Pcscd::start_suite(1);
    let served = ServedCard::start(&blank, 0, &[]);
    let reader = served.reader().to_owned();
    let out = ok(&[
        "office",
        "issue",
        "--dir",
        &o,
        "--reader",
        &reader,
        "--name",
        "Анна Петрова",
        "--birth-date",
        "1990-03-14",
        "--city",
        "Нижний Новгород",
        "--json",
    ]);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["card_id"], "7E570000000B0001");
    // The served card persisted its personalization.
    let st = card_file_state(&blank);
    assert_eq!(st.lifecycle, Lifecycle::Active);

    // The till, with the office's bundle, on the same reader.
    let out = ok(&[
        "pos",
        "earn",
        "--reader",
        &reader,
        "--keys",
        bundle.to_str().unwrap(),
        "--terminal-id",
        "9",
        "--terminal-dir",
        term.to_str().unwrap(),
        "--amount",
        "25.00",
        "--json",
    ]);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["card"]["profile"]["name"], "Анна Петрова");
    assert_eq!(j["outcome"]["receipt"]["record"]["balance_after"], 25);
    assert_eq!(card_file_state(&blank).balance, 25);
    // Issuing it again is refused: the card is no longer blank.
    let out = run_tessera(
        &[
            "office",
            "issue",
            "--dir",
            &o,
            "--reader",
            &reader,
            "--name",
            "X",
            "--birth-date",
            "1990-01-01",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
}
