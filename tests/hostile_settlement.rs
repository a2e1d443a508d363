//! Settlement against people who try, over HTTPS to a real `tessera office
//! serve` (its own certificate, pinned in each till's bundle), with real
//! tills over simulated cards and batches sealed with genuine keys:
//!
//! * a copy of till 7 (its genuine bundle) with an edited policy mints
//!   points; the card's record reaches the office through honest till 8:
//!   `orphan`, and "every point is explained" fails, naming it;
//! * till 7's completions copied into till 8's batch and re-sealed with
//!   till 8's genuine key: `misattributed`, nothing posted twice;
//! * a till inflates its header totals under its genuine key:
//!   `totals-mismatch`;
//! * a clone whose counter jumped: `counter-jump` at once, and the card is
//!   on the hotlist the next sync gives every till;
//! * a sync request without the terminal's MAC: `401`, and nothing of the
//!   customers in the answer.
//!
//! Each attack is checked against the books: the honest records post once
//! and the cards' balances agree with the ledger's. The same day runs on
//! both backends: the embedded SQLite ledger, and the books moved to
//! PostgreSQL (`office migrate`) before the server starts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use tessera_crypto::cert::certificate;
use tessera_crypto::keys::{IssuerKeys, TerminalBundle};
use tessera_crypto::rng::Rng;
use tessera_ledger::{ExceptionClass, Ledger, LedgerKeys, LedgerStore};
use tessera_ledger_pg::posting::PgLedger;
use tessera_office::{fetch_sync, upload_batch, RetryPolicy};
use tessera_protocol::messages::{LogRecord, TxKind};
use tessera_simulator::SimCard;
use tessera_suite::office::Server;
use tessera_suite::pcscd::tessera_bin;
use tessera_suite::{anna, card_id, TEST_TIME};
use tessera_terminal::batch::{write_range, AckStatus, Header};
use tessera_terminal::issuer::{personalize, IssueParams};
use tessera_terminal::journal::{Entry, EntryKind, Journal};
use tessera_terminal::offers::CampaignSet;
use tessera_terminal::policy::{Hotlist, Policy};
use tessera_terminal::till::{Till, TillConfig, TillOutcome};
use tessera_terminal::{FixedClock, SoftwareSam, Terminal};

fn tessera_ok(args: &[&str]) -> String {
    let out = Command::new(tessera_bin()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "tessera {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn bundle(office: &Path, id: u32) -> TerminalBundle {
    let out = office.with_file_name(format!("t{id}.json"));
    let id_s = id.to_string();
    tessera_ok(&[
        "office",
        "export-terminal",
        "--dir",
        office.to_str().unwrap(),
        "--terminal-id",
        &id_s,
        "--out",
        out.to_str().unwrap(),
    ]);
    TerminalBundle::from_json(&std::fs::read_to_string(out).unwrap()).unwrap()
}

fn issue(keys: &IssuerKeys, n: u32) -> SimCard {
    let id = card_id(n);
    let mut sim = SimCard::manufacture(id, &keys.card_perso_key(&id), Rng::seeded(u64::from(n))).unwrap();
    personalize(&mut sim, keys, anna(), &IssueParams::default()).unwrap();
    sim
}

fn till(
    path: PathBuf,
    keys: &IssuerKeys,
    id: u32,
    seed: u64,
    edit: impl FnOnce(&mut Policy),
) -> Till<SoftwareSam, FixedClock> {
    let terminal = Terminal::new(SoftwareSam::new(keys.terminal_keys()), FixedClock(TEST_TIME), id)
        .with_store(id)
        .with_rng(Rng::seeded(seed));
    let mut policy = Policy::default_policy();
    edit(&mut policy);
    let config = TillConfig {
        policy,
        hotlist: Hotlist::empty(),
        campaigns: CampaignSet::empty(),
        online: Default::default(),
    };
    Till::new(terminal, Journal::open(&path, id).unwrap(), config).unwrap()
}

fn purchase(till: &mut Till<SoftwareSam, FixedClock>, card: &mut SimCard, minor: u64) -> u32 {
    card.insert().unwrap();
    let mut tap = till.tap(&mut *card).unwrap();
    match tap.purchase(minor, &[]).unwrap() {
        TillOutcome::Approved { receipt, .. } => receipt.record.amount,
        other => panic!("{other:?}"),
    }
}

/// Seals what the journal has not sealed yet.
fn seal(path: &Path, id: u32, key: &tessera_crypto::Key) -> Vec<u8> {
    let mut j = Journal::open(path, id).unwrap();
    let range = j.seal_next(TEST_TIME).unwrap().expect("records to settle");
    let mut out = Vec::new();
    write_range(&j, key, &range, &mut out).unwrap();
    out
}

/// Re-seals a batch's records under a new header (same records, same
/// chain), with `edit` applied to the header, MAC'd with `key`.
fn reheader(batch: &[u8], key: &tessera_crypto::Key, edit: impl FnOnce(&mut Header)) -> Vec<u8> {
    let text = String::from_utf8(batch.to_vec()).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let mut header: Header = serde_json::from_str(lines[0]).unwrap();
    edit(&mut header);
    let mac = hex::encode(header.mac(key));
    let head = serde_json::to_string(&header).unwrap();
    lines.pop();
    let mut out = head + "\n";
    for l in &lines[1..] {
        out.push_str(l);
        out.push('\n');
    }
    out.push_str(&format!("{{\"type\":\"mac\",\"mac\":\"{mac}\"}}\n"));
    out.into_bytes()
}

fn ledger(office: &Path, keys: &IssuerKeys) -> Ledger {
    Ledger::open_existing(&office.join("ledger.sqlite"), LedgerKeys::from_issuer(keys)).unwrap()
}

#[test]
fn hostile_settlement_over_https() {
    hostile_settlement(None);
}

#[test]
fn hostile_settlement_over_https_on_postgresql() {
    let cluster = tessera_ledger_pg::cluster::Cluster::start().unwrap();
    hostile_settlement(Some(cluster.url()));
}

fn hostile_settlement(postgres: Option<&str>) {
    let work = tempfile::tempdir().unwrap();
    let office = work.path().join("office");
    tessera_ok(&["office", "init", "--dir", office.to_str().unwrap()]);
    let keys = IssuerKeys::from_json(&std::fs::read_to_string(office.join("issuer-keys.json")).unwrap()).unwrap();
    let (b7, b8, b9) = (bundle(&office, 7), bundle(&office, 8), bundle(&office, 9));
    let retry = RetryPolicy::once();
    let (j7, j8, j9) = (
        work.path().join("t7.sqlite"),
        work.path().join("t8.sqlite"),
        work.path().join("t9.sqlite"),
    );

    // The day: honest tills 7 and 8; a copy of till 7 (its bundle, an
    // edited policy) on card 1; the card then taps at till 8.
    let mut card1 = issue(&keys, 1);
    let mut card2 = issue(&keys, 2);
    let mut t7 = till(j7.clone(), &keys, 7, 7, |_| {});
    let mut t8 = till(j8.clone(), &keys, 8, 8, |_| {});
    let honest = purchase(&mut t7, &mut card2, 1_000);
    let minted = {
        let mut copy = till(work.path().join("copy-of-7.sqlite"), &keys, 7, 77, |p| {
            p.points.base_points_per_unit = 1_000_000;
            p.limits.max_earn_points = u32::MAX;
        });
        purchase(&mut copy, &mut card1, 7)
    };
    assert!(minted > 10_000, "{minted}");
    card1.insert().unwrap();
    drop(t8.tap(&mut card1).unwrap()); // till 8 journals the card's record
    drop((t7, t8));

    if let Some(url) = postgres {
        tessera_ok(&["office", "migrate", "--dir", office.to_str().unwrap(), "--to", url]);
    }
    let server = Server::start(&office, &[], &[]);
    let url = server.https();
    let batch7 = seal(&j7, 7, &b7.batch_key);
    let batch8 = seal(&j8, 8, &b8.batch_key);
    assert_eq!(
        upload_batch(&url, &batch7, &b7, &retry).unwrap().status,
        AckStatus::Posted
    );
    assert_eq!(
        upload_batch(&url, &batch8, &b8, &retry).unwrap().status,
        AckStatus::Posted
    );

    // Till 9 copies till 7's completion into its own batch and re-seals it
    // with its genuine key; and inflates its header totals.
    let completion: Entry = {
        let text = String::from_utf8(batch7.clone()).unwrap();
        let line = text.lines().find(|l| l.contains(r#"\"completion\""#)).unwrap();
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let body: serde_json::Value = serde_json::from_str(v["body"].as_str().unwrap()).unwrap();
        serde_json::from_value(body["entry"].clone()).unwrap()
    };
    {
        let mut j = Journal::open(&j9, 9).unwrap();
        j.append(completion).unwrap();
    }
    let copied = seal(&j9, 9, &b9.batch_key);
    let inflated = reheader(&copied, &b9.batch_key, |h| {
        for t in h.totals.values_mut() {
            t.points *= 10;
        }
    });
    let out = upload_batch(&url, &inflated, &b9, &retry).unwrap();
    assert_eq!(out.status, AckStatus::Posted);

    // A clone of card 2 whose counter jumped by 500, recovered at till 8.
    {
        let id = card_id(2);
        let mut rec = LogRecord {
            counter: 501,
            kind: TxKind::Redeem,
            amount: 5,
            balance_after: 0,
            terminal_id: 8,
            terminal_seq: 90_000,
            time: TEST_TIME,
            reference: 0,
            online: false,
            certificate: [0; 16],
        };
        rec.certificate = certificate(&keys.card_cert_key(&id), &id, &rec);
        let mut j = Journal::open(&j8, 8).unwrap();
        j.append(Entry::from_card_record(EntryKind::Recovered, TEST_TIME, &id, &rec))
            .unwrap();
    }
    let jumped = seal(&j8, 8, &b8.batch_key);
    assert_eq!(
        upload_batch(&url, &jumped, &b8, &retry).unwrap().status,
        AckStatus::Posted
    );
    // The next sync carries the clone to every till.
    let sync = fetch_sync(&url, &b7, &retry).unwrap();
    assert!(
        sync.hotlist
            .cards
            .iter()
            .any(|c| c.eq_ignore_ascii_case(&hex::encode(card_id(2)))),
        "{:?}",
        sync.hotlist
    );

    // A sync request whose MAC is not the terminal's (a client without
    // its batch key): refused, and no customer data in the refusal.
    let mut forged =
        TerminalBundle::from_json(&std::fs::read_to_string(office.with_file_name("t7.json")).unwrap()).unwrap();
    forged.batch_key = tessera_crypto::Key::new([0x5A; 16]);
    match fetch_sync(&url, &forged, &retry) {
        Err(tessera_office::ClientError::Refused { status, message }) => {
            assert_eq!(status, 401, "{message}");
            assert!(!message.contains("Анна"), "{message}");
        }
        other => panic!("a forged sync request: {other:?}"),
    }
    drop(server);

    // The books.
    let l: Box<dyn LedgerStore> = match postgres {
        None => Box::new(ledger(&office, &keys)),
        Some(url) => Box::new(PgLedger::open(url, LedgerKeys::from_issuer(&keys)).unwrap()),
    };
    let ex = l.exceptions().unwrap();
    let classes: Vec<&str> = ex.iter().map(|e| e.class.as_str()).collect();
    let count = |c: ExceptionClass| ex.iter().filter(|e| e.class == c).count();
    assert_eq!(count(ExceptionClass::Orphan), 1, "{classes:?}");
    let orphan = ex.iter().find(|e| e.class == ExceptionClass::Orphan).unwrap();
    assert_eq!(
        (orphan.card_id, orphan.evidence["points"].as_u64()),
        (Some(card_id(1)), Some(u64::from(minted)))
    );
    assert_eq!(count(ExceptionClass::Misattributed), 1, "{classes:?}");
    assert_eq!(count(ExceptionClass::TotalsMismatch), 1, "{classes:?}");
    assert_eq!(count(ExceptionClass::CounterJump), 1, "{classes:?}");
    assert_eq!(ex.len(), 4, "{classes:?}");
    // The honest purchase posted once, the copy is a duplicate.
    let book2 = l.card(card_id(2)).unwrap().unwrap();
    assert_eq!(
        (book2.shadow_balance, book2.last_counter, book2.pending),
        (i64::from(honest), 1, 1)
    );
    assert!(book2.hotlisted);
    let book1 = l.card(card_id(1)).unwrap().unwrap();
    assert_eq!(book1.shadow_balance, i64::from(card1.state().unwrap().balance));
    drop(l);
    let Some(url) = postgres else {
        explained(&office, &keys, minted);
        return;
    };
    // On PostgreSQL (where the proof of every point is not ported yet):
    // the one record no decision explains, and its points.
    let mut pg = PgLedger::open(url, LedgerKeys::from_issuer(&keys)).unwrap();
    let row = pg
        .client()
        .unwrap()
        .query_one(
            "SELECT count(*), COALESCE(sum(points), 0)::bigint FROM card_transactions WHERE decision = 'orphan'",
            &[],
        )
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (1, i64::from(minted)));
}

/// The SQLite ledger's proof that not every point is explained, naming
/// the minted one.
fn explained(office: &Path, keys: &IssuerKeys, minted: u32) {
    let l = ledger(office, keys);
    let proof = l.explanation().unwrap();
    assert!(!proof.explained);
    assert_eq!((proof.orphan_records, proof.orphan_points), (1, i64::from(minted)));
    assert!(
        proof
            .problems
            .iter()
            .any(|p| p.contains("no approved decision explains")),
        "{:?}",
        proof.problems
    );
}
