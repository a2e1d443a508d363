//! A simulated day (issue acceptance): three tills, 200 cards, 2,000
//! transactions with cards pulled away — offline, and one in fifty a
//! purchase above the offline limit that the till asks the office for
//! online, the office's server running all day — then settlement over
//! HTTP to `tessera office serve` on loopback — with one batch sent twice,
//! two batches out of order, one record tampered, one batch from an
//! unknown terminal, one cloned card used at two stores and one forged
//! certificate.
//!
//! Afterwards: for every card, the ledger's shadow balance equals the card's
//! balance; every injected fault appears exactly once in the exceptions
//! with the right class; nothing is posted twice; the untouched batches are
//! fully posted; every online approval is matched to its card record once
//! (or lapsed, its card pulled before the answer reached it), none is
//! unmatched.
//!
//! The same day runs on both backends: the embedded SQLite ledger, and the
//! books moved to PostgreSQL (`office migrate`) before the day's server
//! starts, with the same proof of every point and of every online
//! approval on both.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tessera_crypto::keys::{IssuerKeys, TerminalBundle};
use tessera_crypto::rng::Rng;
use tessera_crypto::Key;
use tessera_ledger::{ExceptionClass, Ledger, LedgerKeys, LedgerStore, Warehouse};
use tessera_ledger_pg::posting::PgLedger;
use tessera_office::{upload_batch, ClientError, RetryPolicy};
use tessera_simulator::{Faults, SimCard};
use tessera_suite::{anna, card_id, pcscd::tessera_bin};
use tessera_terminal::batch::{write_range, AckStatus};
use tessera_terminal::issuer::{personalize, IssueParams};
use tessera_terminal::journal::Journal;
use tessera_terminal::offers::CampaignSet;
use tessera_terminal::policy::{Hotlist, Policy};
use tessera_terminal::till::{Till, TillConfig, TillError, TillOutcome};
use tessera_terminal::{Clock, SoftwareSam, Terminal};

const CARDS: u32 = 200;
const TRANSACTIONS: u32 = 2_000;
const TILLS: [u32; 3] = [101, 102, 103];
const UNKNOWN_TILL: u32 = 999;

#[derive(Clone)]
struct SharedClock(Arc<AtomicU32>);

impl Clock for SharedClock {
    fn now(&self) -> u32 {
        self.0.load(Ordering::SeqCst)
    }
}

/// `tessera office serve` on a free loopback port, killed on drop.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(office: &Path) -> Self {
        let mut child = Command::new(tessera_bin())
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
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("server said {line:?}"))
            .to_owned();
        Self {
            child,
            url: format!("https://{addr}"),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tessera(args: &[&str]) {
    let out = Command::new(tessera_bin()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "tessera {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn till(dir: &Path, id: u32, keys: &IssuerKeys, clock: &SharedClock) -> Till<SoftwareSam, SharedClock> {
    till_with(dir, id, keys, clock, |_| {})
}

fn till_with(
    dir: &Path,
    id: u32,
    keys: &IssuerKeys,
    clock: &SharedClock,
    edit: impl FnOnce(&mut Policy),
) -> Till<SoftwareSam, SharedClock> {
    let journal = Journal::open(&dir.join(format!("till-{id}.sqlite")), id).unwrap();
    let terminal = Terminal::new(SoftwareSam::new(keys.terminal_keys()), clock.clone(), id)
        .with_store(id)
        .with_rng(Rng::seeded(u64::from(id)));
    let mut policy = Policy::default_policy();
    // The day is long and nobody settles before the evening.
    policy.velocity.max_offline_redeems = u32::MAX;
    policy.velocity.max_offline_points = u32::MAX;
    edit(&mut policy);
    let config = TillConfig {
        policy,
        hotlist: Hotlist::empty(),
        campaigns: CampaignSet::empty(),
        online: Default::default(),
    };
    Till::new(terminal, journal, config).unwrap()
}

fn issue(keys: &IssuerKeys, n: u32) -> SimCard {
    let id = card_id(n);
    let mut card = SimCard::manufacture(id, &keys.card_perso_key(&id), Rng::seeded(u64::from(n))).unwrap();
    personalize(&mut card, keys, anna(), &IssueParams::default()).unwrap();
    card
}

/// One transaction at a till; errors from pulled cards are expected.
fn transact(till: &mut Till<SoftwareSam, SharedClock>, card: &mut SimCard, rng: &mut ChaCha8Rng) -> bool {
    let op = rng.next_u32() % 10;
    let result = (|| -> Result<bool, TillError> {
        let mut tap = till.tap(&mut *card)?;
        let balance = tap.card().balance;
        let counter = tap.card().counter;
        let o = match op {
            0..=6 => tap.purchase(u64::from(rng.next_u32() % 8_000 + 100), &[])?,
            // Card application v2 in the mix: refunds of a recent
            // transaction, checked by the card against its log (wrong kind,
            // refunded already, gone from the log: refused or referred).
            9 if counter > 0 => tap.refund(counter - rng.next_u32() % counter.min(10))?,
            _ => tap.redeem(rng.next_u32() % (balance / 2 + 1) + 1)?,
        };
        Ok(matches!(o, TillOutcome::Approved { .. }))
    })();
    matches!(result, Ok(true))
}

/// Seals the records after the last sealed batch and returns the batch bytes.
fn seal(dir: &Path, id: u32, key: &Key, now: u32) -> Vec<u8> {
    let mut j = Journal::open(&dir.join(format!("till-{id}.sqlite")), id).unwrap();
    let range = j.seal_next(now).unwrap().expect("records to settle");
    let mut out = Vec::new();
    write_range(&j, key, &range, &mut out).unwrap();
    out
}

fn upload(url: &str, batch: &[u8], bundle: &TerminalBundle) -> Result<AckStatus, ClientError> {
    upload_batch(url, batch, bundle, &RetryPolicy::once()).map(|a| a.status)
}

#[test]
fn a_day_of_settlement_with_every_fault_injected() {
    settlement_day(None);
}

#[test]
fn a_day_of_settlement_with_every_fault_injected_on_postgresql() {
    let cluster = tessera_ledger_pg::cluster::Cluster::start().unwrap();
    settlement_day(Some(cluster.url()));
}

fn settlement_day(postgres: Option<&str>) {
    let started = Instant::now();
    let work = tempfile::tempdir().unwrap();
    let office = work.path().join("office");
    tessera(&["office", "init", "--dir", office.to_str().unwrap()]);
    let keys = IssuerKeys::from_json(&std::fs::read_to_string(office.join("issuer-keys.json")).unwrap()).unwrap();
    let mut bundles = BTreeMap::new();
    for id in TILLS {
        let out = work.path().join(format!("bundle-{id}.json"));
        tessera(&[
            "office",
            "export-terminal",
            "--dir",
            office.to_str().unwrap(),
            "--terminal-id",
            &id.to_string(),
            "--out",
            out.to_str().unwrap(),
        ]);
        bundles.insert(
            id,
            TerminalBundle::from_json(&std::fs::read_to_string(out).unwrap()).unwrap(),
        );
    }
    // Terminal 999 was never registered: its bundle is made by hand.
    let rogue_bundle = keys.terminal_bundle(UNKNOWN_TILL, bundles[&TILLS[0]].office);

    // The office knows its cards (issued to one customer here), and its
    // server runs all day for online authorization.
    {
        let mut ledger = Ledger::open(&office.join("ledger.sqlite"), LedgerKeys::from_issuer(&keys)).unwrap();
        let a = anna();
        let customer = ledger
            .register_customer(&tessera_ledger::NewCustomer {
                name: a.name.clone(),
                birth_date: a.birth_date,
                home_city: a.home_city.clone(),
                household: a.household,
                preferences: a.preferences.clone(),
                tier: a.tier,
            })
            .unwrap();
        for n in 0..CARDS {
            ledger
                .register_card(card_id(n), customer, keys.key_versions()[0], tessera_suite::TEST_TIME)
                .unwrap();
        }
    }
    if let Some(url) = postgres {
        tessera(&["office", "migrate", "--dir", office.to_str().unwrap(), "--to", url]);
    }
    let day_server = Server::start(&office);
    let mut authorizers: Vec<tessera_office::OfficeAuthorizer> = TILLS
        .iter()
        .map(|id| tessera_office::OfficeAuthorizer {
            base_url: day_server.url.clone(),
            bundle: TerminalBundle::from_json(&bundles[id].to_json()).unwrap(),
        })
        .collect();
    let mut online_approved = 0;

    // The day.
    let clock = SharedClock(Arc::new(AtomicU32::new(tessera_suite::TEST_TIME)));
    let mut tills: Vec<_> = TILLS.iter().map(|&id| till(work.path(), id, &keys, &clock)).collect();
    let mut cards: Vec<SimCard> = (0..CARDS).map(|n| issue(&keys, n)).collect();
    // A card whose certificate key is not the issuer's: every certificate it
    // makes is forged. It is used exactly once.
    let mut forger_keys = IssuerKeys::from_json(&keys.to_json()).unwrap();
    forger_keys.cert_master = Key::new([0x66; 16]);
    let mut forged = issue(&forger_keys, 500);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut approved = 0;
    let mut clone: Option<SimCard> = None;
    for i in 0..TRANSACTIONS {
        clock.0.fetch_add(20, Ordering::SeqCst);
        let c = (rng.next_u32() % CARDS) as usize;
        let t = (rng.next_u32() % 3) as usize;
        let card = &mut cards[c];
        card.insert().unwrap();
        // One transaction in five: the card is pulled after APDU 1 to 4.
        let pull = if i % 5 == 4 {
            Some(u64::from(rng.next_u32() % 4 + 1))
        } else {
            None
        };
        card.set_faults(Faults {
            lose_response_of_apdu: pull,
            ..Faults::default()
        });
        if i % 50 == 25 {
            // Above the offline limit (R05): asked online, the card in the
            // field (and sometimes pulled meanwhile).
            let ok = (|| -> Result<bool, TillError> {
                let mut tap = tills[t].tap(&mut *card)?;
                tap.use_online(&mut authorizers[t]);
                let o = tap.purchase(1_200_000, &[])?;
                Ok(matches!(o, TillOutcome::Approved { ref receipt, .. } if receipt.record.online))
            })();
            let ok = matches!(ok, Ok(true));
            online_approved += usize::from(ok);
            approved += usize::from(ok);
        } else {
            approved += usize::from(transact(&mut tills[t], card, &mut rng));
        }
        card.set_faults(Faults::default());
        if i == 1_000 {
            // Card 7 is cloned: its copy and the original each make the next
            // transaction, at two different stores.
            cards[7].insert().unwrap();
            let mut copy = SimCard::from_eeprom(cards[7].memory(), Rng::seeded(77)).unwrap();
            let mut tap = tills[0].tap(&mut cards[7]).unwrap();
            assert!(matches!(
                tap.purchase(1_000, &[]).unwrap(),
                TillOutcome::Approved { .. }
            ));
            drop(tap);
            let mut tap = tills[1].tap(&mut copy).unwrap();
            assert!(matches!(
                tap.purchase(2_000, &[]).unwrap(),
                TillOutcome::Approved { .. }
            ));
            drop(tap);
            clone = Some(copy);
            let mut tap = tills[2].tap(&mut forged).unwrap();
            assert!(matches!(
                tap.purchase(3_000, &[]).unwrap(),
                TillOutcome::Approved { .. }
            ));
        }
    }
    // A copy of till 101 (its genuine bundle) with an edited policy mints
    // points on card 3; the closing tap below journals the card's record
    // at whichever till the customer visits next.
    let minted = {
        std::fs::create_dir(work.path().join("copied")).unwrap();
        let mut copied = till_with(&work.path().join("copied"), 101, &keys, &clock, |p| {
            p.points.base_points_per_unit = 1_000_000;
            p.limits.max_earn_points = u32::MAX;
        });
        cards[3].insert().unwrap();
        let mut tap = copied.tap(&mut cards[3]).unwrap();
        match tap.purchase(7, &[]).unwrap() {
            TillOutcome::Approved { receipt, .. } => receipt.record.amount,
            other => panic!("the copied till: {other:?}"),
        }
    };
    assert!(minted >= 50_000, "{minted}");
    // Closing: every card but the clone's pair taps once more somewhere, so
    // any answer lost during the day is journaled.
    for (n, card) in cards.iter_mut().enumerate() {
        if n == 7 {
            continue;
        }
        card.insert().unwrap();
        let t = (rng.next_u32() % 3) as usize;
        drop(tills[t].tap(&mut *card).unwrap());
    }
    drop(tills);
    drop(authorizers);
    drop(day_server);
    assert!(online_approved >= 20, "{online_approved} online approvals");

    // A rogue till nobody registered.
    let mut rogue = till(work.path(), UNKNOWN_TILL, &keys, &clock);
    let mut stray = issue(&keys, 600);
    assert!(transact(&mut rogue, &mut stray, &mut rng) || !rogue.journal().is_empty());
    drop(rogue);

    // Evening: settlement over HTTP.
    let now = clock.0.load(Ordering::SeqCst);
    let server = Server::start(&office);
    let url = server.url.clone();
    let key = |id: u32| bundles[&id].batch_key.clone();
    // Till 101: its batch arrives twice.
    let b101 = seal(work.path(), 101, &key(101), now);
    assert_eq!(upload(&url, &b101, &bundles[&101]).unwrap(), AckStatus::Posted);
    assert_eq!(upload(&url, &b101, &bundles[&101]).unwrap(), AckStatus::Duplicate);
    // Till 102: two batches, sealed hours apart, arrive in the wrong order.
    let half = {
        let j = Journal::open(&work.path().join("till-102.sqlite"), 102).unwrap();
        j.len() / 2
    };
    let (b102_first, b102_second) = {
        // The batches a till sealing at noon and again in the evening would
        // have written (the day ran in one go here, so the two ranges are
        // cut by hand from the journal): genuine records, genuine MACs.
        let mut j = Journal::open(&work.path().join("till-102.sqlite"), 102).unwrap();
        let range = j.seal_next(now).unwrap().unwrap();
        let first = tessera_terminal::journal::SealedRange {
            batch_no: 1,
            seq_from: 1,
            seq_to: half,
            prev_head: [0; 32],
            head: j.get(half).unwrap().unwrap().hash,
            sealed_at: now,
            acked_at: None,
        };
        let second = tessera_terminal::journal::SealedRange {
            batch_no: 2,
            seq_from: half + 1,
            seq_to: range.seq_to,
            prev_head: first.head,
            head: range.head,
            sealed_at: now,
            acked_at: None,
        };
        let mut a = Vec::new();
        write_range(&j, &key(102), &first, &mut a).unwrap();
        let mut b = Vec::new();
        write_range(&j, &key(102), &second, &mut b).unwrap();
        (a, b)
    };
    assert_eq!(upload(&url, &b102_second, &bundles[&102]).unwrap(), AckStatus::Held);
    assert_eq!(upload(&url, &b102_first, &bundles[&102]).unwrap(), AckStatus::Posted);
    // Till 103: one record is tampered with on the way, then the genuine
    // batch is sent again.
    let b103 = seal(work.path(), 103, &key(103), now);
    let text = String::from_utf8(b103.clone()).unwrap();
    let victim = text
        .lines()
        .find(|l| l.contains("completion") && l.contains(r#"\"points\":"#))
        .unwrap();
    let tampered_line = victim.replacen(r#"\"points\":"#, r#"\"points\":9"#, 1);
    let tampered = text.replacen(victim, &tampered_line, 1);
    match upload(&url, tampered.as_bytes(), &bundles[&103]) {
        Err(ClientError::Refused { status, .. }) => assert_eq!(status, 400),
        other => panic!("tampered batch: {other:?}"),
    }
    assert_eq!(upload(&url, &b103, &bundles[&103]).unwrap(), AckStatus::Posted);
    // The unknown terminal.
    let b999 = seal(work.path(), UNKNOWN_TILL, &rogue_bundle.batch_key, now);
    match upload(&url, &b999, &rogue_bundle) {
        Err(ClientError::Refused { status, .. }) => assert_eq!(status, 403),
        other => panic!("unknown terminal: {other:?}"),
    }
    drop(server);

    // The books.
    let ledger: Box<dyn LedgerStore> = match postgres {
        None => Box::new(Ledger::open(&office.join("ledger.sqlite"), LedgerKeys::from_issuer(&keys)).unwrap()),
        Some(url) => Box::new(PgLedger::open(url, LedgerKeys::from_issuer(&keys)).unwrap()),
    };
    let exceptions = ledger.exceptions().unwrap();
    let count = |class: ExceptionClass| exceptions.iter().filter(|e| e.class == class).count();
    let classes: Vec<_> = exceptions.iter().map(|e| e.class.as_str()).collect();
    eprintln!("exceptions: {classes:?}");
    assert_eq!(count(ExceptionClass::BrokenChain), 1, "the tampered record");
    assert_eq!(count(ExceptionClass::UnknownTerminal), 1, "the unknown terminal");
    assert_eq!(count(ExceptionClass::Conflict), 1, "the cloned card");
    assert_eq!(count(ExceptionClass::BadCertificate), 1, "the forged certificate");
    assert_eq!(count(ExceptionClass::Orphan), 1, "the copied till's minted points");
    let orphan = exceptions.iter().find(|e| e.class == ExceptionClass::Orphan).unwrap();
    assert_eq!(
        (orphan.card_id, orphan.evidence["points"].as_u64()),
        (Some(card_id(3)), Some(u64::from(minted)))
    );
    let conflict = exceptions.iter().find(|e| e.class == ExceptionClass::Conflict).unwrap();
    assert_eq!(conflict.card_id, Some(card_id(7)));
    let bad = exceptions
        .iter()
        .find(|e| e.class == ExceptionClass::BadCertificate)
        .unwrap();
    assert_eq!(bad.card_id, Some(card_id(500)));
    assert!(
        ledger.hotlist().unwrap().contains(&card_id(7)),
        "the clone is hotlisted"
    );
    // The batch sent twice and the batches out of order are not faults of
    // the books: they leave no exception, and nothing was posted twice.
    assert_eq!(count(ExceptionClass::DuplicateRecord), 0);
    assert_eq!(exceptions.len(), 5, "{classes:?}");

    // Every card's shadow balance is the card's balance (the clone's pair
    // aside: the ledger follows the first of the two histories).
    for (n, card) in cards.iter().enumerate() {
        let st = card.state().unwrap();
        let book = ledger.card(st.card_id).unwrap();
        if st.counter == 0 {
            assert!(book.is_none_or(|b| b.shadow_balance == 0));
            continue;
        }
        let book = book.unwrap_or_else(|| panic!("card {n} not in the ledger"));
        if n == 7 {
            assert!(book.hotlisted);
            continue;
        }
        assert_eq!(
            (book.shadow_balance, book.last_counter),
            (i64::from(st.balance), st.counter),
            "card {n}"
        );
    }
    drop(ledger);
    let books: Box<dyn Warehouse> = match postgres {
        None => Box::new(Ledger::open(&office.join("ledger.sqlite"), LedgerKeys::from_issuer(&keys)).unwrap()),
        Some(url) => Box::new(PgLedger::open(url, LedgerKeys::from_issuer(&keys)).unwrap()),
    };
    let posted_online = proof_and_approvals(
        books.as_ref(),
        minted,
        online_approved,
        count(ExceptionClass::OnlineUnmatched),
    );
    drop(clone);
    eprintln!(
        "{approved} approved transactions ({online_approved} online, {posted_online} online records posted); day settled in {:?}",
        started.elapsed()
    );
}

/// The books' proof of every point, and every online approval met once;
/// the online records posted.
fn proof_and_approvals(books: &dyn Warehouse, minted: u32, online_approved: usize, online_unmatched: usize) -> usize {
    // Not every point is explained, and the proof says which are not.
    let proof = books.explanation().unwrap();
    assert!(!proof.explained);
    assert_eq!((proof.orphan_records, proof.orphan_points), (1, i64::from(minted)));
    assert_eq!(proof.awaiting_records, 0);
    assert_eq!(proof.cards_off_books, 0, "the books add up");
    assert_eq!(proof.points_outstanding, proof.posted_points);
    // Every online approval met its certified record once, or lapsed (its
    // card pulled before the answer reached it: the counter went to the
    // next transaction); none is left unexplained.
    let mut posted_online = 0;
    for n in 0..CARDS {
        for a in tessera_ledger::online::authorizations_of(books.warehouse_db(), card_id(n)).unwrap() {
            assert!(
                a.state == "posted" || a.state == "lapsed" || a.state == "declined",
                "card {n}: {a:?}"
            );
            posted_online += usize::from(a.state == "posted");
        }
        assert_eq!(
            tessera_ledger::online::outstanding(books.warehouse_db(), &card_id(n)).unwrap(),
            0,
            "card {n}"
        );
    }
    assert!(
        posted_online >= online_approved,
        "{posted_online} posted, {online_approved} seen approved"
    );
    assert_eq!(online_unmatched, 0);
    posted_online
}
