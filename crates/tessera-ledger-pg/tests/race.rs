//! The posting core on PostgreSQL raced (`tessera_ledger_pg::posting`):
//! four connections — four office servers — post the batches of eight tills
//! at once, shuffled (a till's later batch often before its earlier one)
//! and each batch sent twice by different servers, the tills' cards shared
//! so that other tills' recovered copies of the same records arrive in
//! other batches. Afterwards every card's books equal the card: each
//! record posted once, the counters gapless, the shadow balance the card's
//! balance; every till's batches posted in order, none left held; no
//! conflict, no deadlock, no error.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tessera_crypto::keys::IssuerKeys;
use tessera_crypto::rng::Rng;
use tessera_ledger::LedgerKeys;
use tessera_ledger_pg::cluster::Cluster;
use tessera_ledger_pg::posting::{PgLedger, Status};
use tessera_simulator::SimCard;
use tessera_terminal::batch::write_range;
use tessera_terminal::issuer::{personalize, IssueParams};
use tessera_terminal::journal::Journal;
use tessera_terminal::offers::CampaignSet;
use tessera_terminal::policy::{Hotlist, Policy};
use tessera_terminal::till::{Till, TillConfig};
use tessera_terminal::{FixedClock, SoftwareSam, Terminal};

const TILLS: u32 = 8;
const CARDS: u32 = 12;
const BATCHES: u32 = 4;
const PURCHASES: u32 = 10;
const SERVERS: usize = 4;
mod common;

const NOW: u32 = 1_790_000_000;

/// A customer's profile for card `id`.
fn profile(id: [u8; 8], name: impl Into<String>) -> tessera_protocol::profile::Profile {
    tessera_protocol::profile::Profile {
        card_id: id,
        version: 1,
        name: name.into(),
        birth_date: tessera_protocol::profile::Date::new(1990, 1, 2).unwrap(),
        home_city: "Lyon".into(),
        household: [0; 8],
        preferences: vec![],
        tier: 0,
        valid_from: tessera_protocol::profile::Date::new(2020, 1, 1).unwrap(),
        valid_until: tessera_protocol::profile::Date::new(2035, 12, 31).unwrap(),
    }
}

/// A till of terminal `id` on the test keys, its journal in `dir`.
fn till_at(keys: &IssuerKeys, id: u32, dir: &Path) -> Till<SoftwareSam, FixedClock> {
    let terminal =
        Terminal::new(SoftwareSam::new(keys.terminal_keys()), FixedClock(NOW), id).with_rng(Rng::seeded(u64::from(id)));
    let config = TillConfig {
        policy: Policy::default_policy(),
        hotlist: Hotlist::empty(),
        campaigns: CampaignSet::empty(),
        online: Default::default(),
    };
    Till::new(
        terminal,
        Journal::open(&dir.join(format!("till-{id}.sqlite")), id).unwrap(),
        config,
    )
    .unwrap()
}

fn card_id(n: u32) -> [u8; 8] {
    let mut id = [0x7E, 0x57, 0x9A, 0, 0, 0, 0, 0];
    id[4..].copy_from_slice(&n.to_be_bytes());
    id
}

/// A sealed batch: its terminal, number and bytes.
type Sealed = (u32, u32, Vec<u8>);

/// The day: every till's batches and the cards as they ended.
fn day(work: &Path, keys: &IssuerKeys) -> (Vec<Sealed>, Vec<SimCard>) {
    let mut cards: Vec<SimCard> = (0..CARDS)
        .map(|n| {
            let id = card_id(n);
            let mut c = SimCard::manufacture(id, &keys.card_perso_key(&id), Rng::seeded(u64::from(n))).unwrap();
            personalize(
                &mut c,
                keys,
                profile(id, format!("Customer {n}")),
                &IssueParams::default(),
            )
            .unwrap();
            c
        })
        .collect();
    let mut tills: Vec<Till<SoftwareSam, FixedClock>> = (1..=TILLS).map(|id| till_at(keys, id, work)).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let mut batches = Vec::new();
    for _ in 0..BATCHES {
        for (t, till) in tills.iter_mut().enumerate() {
            for _ in 0..PURCHASES {
                let c = (rng.next_u32() % CARDS) as usize;
                cards[c].insert().unwrap();
                let mut tap = till.tap(&mut cards[c]).unwrap();
                tap.purchase(u64::from(rng.next_u32() % 5_000 + 100), &[]).unwrap();
            }
            let id = t as u32 + 1;
            let range = till.journal_mut().seal_next(NOW).unwrap().expect("records to seal");
            let mut out = Vec::new();
            write_range(till.journal(), &keys.terminal_batch_key(id), &range, &mut out).unwrap();
            batches.push((id, range.batch_no, out));
        }
    }
    (batches, cards)
}

#[test]
fn four_servers_racing_post_every_record_once_and_every_batch_in_order() {
    let work = tempfile::tempdir().unwrap();
    let keys = IssuerKeys::test().unwrap();
    let (batches, cards) = day(work.path(), &keys);
    let cluster = Cluster::start().unwrap();
    let mut setup = PgLedger::open(cluster.url(), LedgerKeys::from_issuer(&keys)).unwrap();
    for id in 1..=TILLS {
        setup.register_terminal(id, NOW).unwrap();
    }
    // Every batch twice, shuffled.
    let mut queue: Vec<Sealed> = batches.iter().cloned().chain(batches.iter().cloned()).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    for i in (1..queue.len()).rev() {
        let j = (rng.next_u32() as usize) % (i + 1);
        queue.swap(i, j);
    }
    let queue = Arc::new(Mutex::new(queue));
    let results = Arc::new(Mutex::new(Vec::new()));
    let servers: Vec<_> = (0..SERVERS)
        .map(|_| {
            let (queue, results, url) = (Arc::clone(&queue), Arc::clone(&results), cluster.url().to_owned());
            let keys = LedgerKeys::from_issuer(&IssuerKeys::test().unwrap());
            std::thread::spawn(move || {
                let mut ledger = PgLedger::open(&url, keys).unwrap();
                loop {
                    let Some((t, n, b)) = queue.lock().unwrap().pop() else {
                        break;
                    };
                    let r = ledger.ingest(&b, NOW).map(|o| o.status).map_err(|e| e.to_string());
                    results.lock().unwrap().push((t, n, r));
                }
            })
        })
        .collect();
    for s in servers {
        s.join().unwrap();
    }
    let results = results.lock().unwrap();
    let errors: Vec<_> = results.iter().filter(|(_, _, r)| r.is_err()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    let held = results.iter().filter(|(_, _, r)| *r == Ok(Status::Held)).count();
    eprintln!(
        "{} submissions: {} posted, {held} held first, {} duplicates",
        results.len(),
        results.iter().filter(|(_, _, r)| *r == Ok(Status::Posted)).count(),
        results.iter().filter(|(_, _, r)| *r == Ok(Status::Duplicate)).count()
    );

    let c = setup.client().expect("connected");
    // Every till's batches, in order, none held.
    for id in 1..=TILLS {
        let last: i64 = c
            .query_one(
                "SELECT last_batch_no FROM terminals WHERE terminal_id = $1",
                &[&i64::from(id)],
            )
            .unwrap()
            .get(0);
        assert_eq!(last, i64::from(BATCHES), "till {id}");
    }
    let held_left: i64 = c
        .query_one("SELECT count(*) FROM batches WHERE status = 'held'", &[])
        .unwrap()
        .get(0);
    assert_eq!(held_left, 0);
    let conflicts: i64 = c.query_one("SELECT count(*) FROM exceptions", &[]).unwrap().get(0);
    assert_eq!(conflicts, 0, "no conflict, no bad certificate, no orphan");
    // Every record matched to the decision that allowed it, whichever till
    // delivered it first.
    let unmatched: i64 = c
        .query_one(
            "SELECT count(*) FROM card_transactions WHERE decision <> 'matched'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(unmatched, 0);
    // Every card's books equal the card.
    let mut expected = BTreeMap::new();
    for card in &cards {
        let st = card.state().unwrap();
        expected.insert(st.card_id, (i64::from(st.counter), i64::from(st.balance)));
    }
    for (id, (counter, balance)) in expected {
        let r = c
            .query_one(
                "SELECT last_counter, shadow_balance, pending,
                        (SELECT count(*) FROM card_transactions t WHERE t.card_id = c.card_id),
                        (SELECT count(DISTINCT counter) FROM card_transactions t WHERE t.card_id = c.card_id),
                        (SELECT COALESCE(SUM(delta), 0)::bigint FROM card_transactions t WHERE t.card_id = c.card_id)
                 FROM cards c WHERE card_id = $1",
                &[&&id[..]],
            )
            .unwrap();
        let (last, shadow, pending, rows, distinct, sum): (i64, i64, i64, i64, i64, i64) =
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5));
        assert_eq!(
            (last, shadow, pending),
            (counter, balance, 0),
            "card {}",
            hex::encode(id)
        );
        assert_eq!(
            (rows, distinct, sum),
            (counter, counter, balance),
            "card {}",
            hex::encode(id)
        );
    }
    // The warehouse the racing servers maintained, batch by batch, each in
    // its batch's transaction: one fact per posted transaction, each with
    // its decision's amount and categories (a decision that reached the
    // office after the card's record, from another till, included), equal
    // row for row to the warehouse rebuilt from the books.
    let facts = |c: &mut postgres::Client| -> Vec<String> {
        c.query(
            "SELECT encode(f.card_id, 'hex'), f.counter, f.tx_type, f.points, f.delta, f.amount_minor, f.time,
                    dd.date, s.store_id,
                    (SELECT string_agg(cat.name || '=' || fc.amount_minor, ',' ORDER BY cat.name)
                     FROM wh_fact_category fc JOIN wh_dim_category cat ON cat.category_key = fc.category_key
                     WHERE fc.tx_key = f.tx_key),
                    (SELECT string_agg(p.source || '=' || p.points, ',' ORDER BY p.source)
                     FROM wh_fact_points p WHERE p.tx_key = f.tx_key)
             FROM wh_fact_tx f JOIN wh_dim_date dd ON dd.date_key = f.date_key
             LEFT JOIN wh_dim_store s ON s.store_key = f.store_key
             ORDER BY f.card_id, f.counter",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {} {} {} {} {} {:?} {:?} {:?}",
                r.get::<_, String>(0),
                r.get::<_, i64>(1),
                r.get::<_, String>(2),
                r.get::<_, i64>(3),
                r.get::<_, i64>(4),
                r.get::<_, i64>(5),
                r.get::<_, i64>(6),
                r.get::<_, String>(7),
                r.get::<_, Option<i64>>(8),
                r.get::<_, Option<String>>(9),
                r.get::<_, Option<String>>(10)
            )
        })
        .collect()
    };
    let maintained = facts(c);
    let posted: i64 = c
        .query_one("SELECT count(*) FROM card_transactions WHERE status = 'posted'", &[])
        .unwrap()
        .get(0);
    assert_eq!(maintained.len() as i64, posted, "one fact per posted transaction");
    let money: i64 = c
        .query_one("SELECT COALESCE(SUM(amount_minor), 0)::bigint FROM wh_fact_tx", &[])
        .unwrap()
        .get(0);
    assert!(money > 0, "the purchases' amounts come from their decisions");
    tessera_ledger::Warehouse::rebuild_warehouse(&mut setup).unwrap();
    let rebuilt = facts(setup.client().expect("connected"));
    assert_eq!(maintained, rebuilt, "the maintained warehouse is the rebuilt one");
}

#[test]
fn a_cloned_card_and_a_forged_certificate_are_exceptions_and_a_gap_waits() {
    let work = tempfile::tempdir().unwrap();
    let keys = IssuerKeys::test().unwrap();
    let (mut batches, mut cards) = day(work.path(), &keys);
    batches.retain(|(t, n, _)| *t <= 2 && *n == 1);
    let cluster = Cluster::start().unwrap();
    let mut ledger = PgLedger::open(cluster.url(), LedgerKeys::from_issuer(&keys)).unwrap();
    for id in 1..=TILLS + 2 {
        ledger.register_terminal(id, NOW).unwrap();
    }
    // A card copied: the original and the copy each make the next
    // transaction, at two tills of their own.
    let original = &mut cards[0];
    let mut copy = SimCard::from_eeprom(original.memory(), Rng::seeded(99)).unwrap();
    let seal = |till: &mut Till<SoftwareSam, FixedClock>, id: u32| {
        let range = till.journal_mut().seal_next(NOW).unwrap().unwrap();
        let mut out = Vec::new();
        write_range(till.journal(), &keys.terminal_batch_key(id), &range, &mut out).unwrap();
        out
    };
    let mut a = till_at(&keys, TILLS + 1, work.path());
    let mut b = till_at(&keys, TILLS + 2, work.path());
    original.insert().unwrap();
    a.tap(&mut *original).unwrap().purchase(1_000, &[]).unwrap();
    copy.insert().unwrap();
    b.tap(&mut copy).unwrap().purchase(2_000, &[]).unwrap();
    let (ba, bb) = (seal(&mut a, TILLS + 1), seal(&mut b, TILLS + 2));
    // The clone's batches first: their card's earlier counters have not
    // come yet — they wait (pending) and nothing conflicts yet.
    let o = ledger.ingest(&ba, NOW).unwrap();
    assert!(o.pending > 0, "{o:?}");
    let o = ledger.ingest(&bb, NOW).unwrap();
    assert_eq!(o.conflicts, 1, "{o:?}");
    for (_, _, day_batch) in &batches {
        ledger.ingest(day_batch, NOW).unwrap();
    }
    let c = ledger.client().expect("connected");
    let classes: Vec<String> = c
        .query("SELECT class FROM exceptions ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(classes, ["conflict"]);
    let hot: i64 = c
        .query_one("SELECT count(*) FROM hotlist WHERE card_id = $1", &[&&card_id(0)[..]])
        .unwrap()
        .get(0);
    assert_eq!(hot, 1, "the cloned card is hotlisted");

    // A batch whose card record carries a forged certificate.
    let mut forger = IssuerKeys::test().unwrap();
    forger.cert_master = tessera_crypto::Key::new([0x66; 16]);
    let fid = card_id(900);
    let mut forged = SimCard::manufacture(fid, &forger.card_perso_key(&fid), Rng::seeded(900)).unwrap();
    personalize(&mut forged, &forger, profile(fid, "Forger"), &IssueParams::default()).unwrap();
    forged.insert().unwrap();
    a.tap(&mut forged).unwrap().purchase(3_000, &[]).unwrap();
    let bf = seal(&mut a, TILLS + 1);
    let o = ledger.ingest(&bf, NOW).unwrap();
    assert_eq!((o.posted, o.conflicts), (0, 0), "{o:?}");
    let c = ledger.client().expect("connected");
    let bad: i64 = c
        .query_one("SELECT count(*) FROM exceptions WHERE class = 'bad-certificate'", &[])
        .unwrap()
        .get(0);
    assert_eq!(bad, 1);
    let posted: i64 = c
        .query_one(
            "SELECT count(*) FROM card_transactions WHERE card_id = $1",
            &[&&fid[..]],
        )
        .unwrap()
        .get(0);
    assert_eq!(posted, 0, "a forged record is never posted");
}

#[test]
fn postgresql_restarted_mid_ingest_fails_cleanly_and_retries_post_once() {
    let work = tempfile::tempdir().unwrap();
    let keys = IssuerKeys::test().unwrap();
    let (batches, cards) = day(work.path(), &keys);
    let cluster = Cluster::start().unwrap();
    let mut setup = PgLedger::open(cluster.url(), LedgerKeys::from_issuer(&keys)).unwrap();
    for id in 1..=TILLS {
        setup.register_terminal(id, NOW).unwrap();
    }
    drop(setup);
    // A till-like poster: each batch until it is acknowledged, reconnecting
    // after a failure, as `pos settle` retries an upload.
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let failures = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let poster = {
        let (done, failures, url) = (Arc::clone(&done), Arc::clone(&failures), cluster.url().to_owned());
        let batches = batches.clone();
        std::thread::spawn(move || {
            let keys = || LedgerKeys::from_issuer(&IssuerKeys::test().unwrap());
            let mut ledger: Option<PgLedger> = None;
            let mut statuses = Vec::new();
            for (_, _, b) in &batches {
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    assert!(attempts < 300, "no answer after 300 attempts");
                    if ledger.is_none() {
                        ledger = PgLedger::open(&url, keys()).ok();
                    }
                    let Some(l) = ledger.as_mut() else {
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        continue;
                    };
                    match l.ingest(b, NOW) {
                        Ok(o) => {
                            statuses.push(o.status);
                            break;
                        }
                        Err(_) => {
                            failures.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            ledger = None;
                            std::thread::sleep(std::time::Duration::from_millis(50));
                        }
                    }
                }
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                // A till's pace, so that the restart lands mid-ingest.
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            statuses
        })
    };
    while done.load(std::sync::atomic::Ordering::SeqCst) < batches.len() / 3 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    cluster.crash_and_restart().unwrap();
    let statuses = poster.join().unwrap();
    assert!(
        failures.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "the restart landed mid-ingest"
    );
    // Each batch acknowledged once it went through: posted, or a duplicate
    // when its commit had landed before the answer was lost.
    assert_eq!(statuses.len(), batches.len());
    assert!(statuses.iter().all(|s| matches!(s, Status::Posted | Status::Duplicate)));
    let mut ledger = PgLedger::open(cluster.url(), LedgerKeys::from_issuer(&keys)).unwrap();
    let c = ledger.client().expect("connected");
    for card in &cards {
        let st = card.state().unwrap();
        let r = c
            .query_one(
                "SELECT last_counter, shadow_balance, pending,
                        (SELECT count(*) FROM card_transactions t WHERE t.card_id = c.card_id)
                 FROM cards c WHERE card_id = $1",
                &[&&st.card_id[..]],
            )
            .unwrap();
        let (last, shadow, pending, rows): (i64, i64, i64, i64) = (r.get(0), r.get(1), r.get(2), r.get(3));
        assert_eq!(
            (last, shadow, pending, rows),
            (i64::from(st.counter), i64::from(st.balance), 0, i64::from(st.counter)),
            "card {}: nothing lost, nothing doubled",
            hex::encode(st.card_id)
        );
    }
}

#[test]
fn a_record_no_approved_decision_explains_is_an_orphan_and_the_others_match() {
    let work = tempfile::tempdir().unwrap();
    let keys = IssuerKeys::test().unwrap();
    let cluster = Cluster::start().unwrap();
    let mut ledger = PgLedger::open(cluster.url(), LedgerKeys::from_issuer(&keys)).unwrap();
    ledger.register_terminal(1, NOW).unwrap();
    let id = card_id(700);
    let mut card = SimCard::manufacture(id, &keys.card_perso_key(&id), Rng::seeded(700)).unwrap();
    personalize(&mut card, &keys, profile(id, "Orphan"), &IssueParams::default()).unwrap();
    // An earn at a till the office never registered (its batch never comes)…
    let mut rogue = Terminal::new(SoftwareSam::new(keys.terminal_keys()), FixedClock(NOW), 50);
    rogue.tap(&mut card).unwrap().earn(5_000).unwrap();
    // …reaches the office as the registered till's recovered copy, with the
    // till's own purchase after it.
    let mut till = till_at(&keys, 1, work.path());
    card.insert().unwrap();
    till.tap(&mut card).unwrap().purchase(1_000, &[]).unwrap();
    let range = till.journal_mut().seal_next(NOW).unwrap().unwrap();
    let mut b = Vec::new();
    write_range(till.journal(), &keys.terminal_batch_key(1), &range, &mut b).unwrap();
    let o = ledger.ingest(&b, NOW).unwrap();
    assert_eq!(o.posted, 2, "{o:?}");
    let c = ledger.client().expect("connected");
    let states: Vec<(i64, String)> = c
        .query(
            "SELECT counter, decision FROM card_transactions WHERE card_id = $1 ORDER BY counter",
            &[&&id[..]],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(states, [(1, "orphan".to_owned()), (2, "matched".to_owned())]);
    let orphans: i64 = c
        .query_one(
            "SELECT count(*) FROM exceptions WHERE class = 'orphan' AND counter = 1",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(orphans, 1);
}

/// Two servers posting, at the same moment, two tills' decisions that use
/// one single-use office code (a code read out twice): the code's lock
/// makes them take turns, so the second to post always sees the first's
/// use — one `approval-reused` per code, never none.
#[test]
fn two_servers_posting_uses_of_one_code_at_once_name_the_reuse() {
    use std::sync::Barrier;
    use tessera_crypto::referral::ReferralKind;
    use tessera_terminal::journal::{Entry, EntryKind, Verdict};
    const ROUNDS: u32 = 8;
    let keys = IssuerKeys::test().unwrap();
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("ledger.sqlite");
    let cards: Vec<[u8; 8]> = (0..ROUNDS).map(|n| card_id(900 + n)).collect();
    let mut sqlite = tessera_ledger::Ledger::open(&path, LedgerKeys::from_issuer(&keys)).unwrap();
    common::issue(&mut sqlite, 1, &cards, NOW);
    sqlite.register_terminal(2, NOW).unwrap();
    let codes: Vec<String> = cards
        .iter()
        .map(|c| {
            sqlite
                .issue_approval(1, *c, ReferralKind::Redeem, 25, 3_600, "test", NOW)
                .unwrap()
                .code
        })
        .collect();
    drop(sqlite);
    let cluster = common::moved(&path);
    // Each till journals one decision per round on that round's code, and
    // seals a batch per round.
    let batches: Vec<Vec<Vec<u8>>> = [1u32, 2]
        .iter()
        .map(|till| {
            let mut j = Journal::open(&work.path().join(format!("till-{till}.sqlite")), *till).unwrap();
            (0..ROUNDS as usize)
                .map(|r| {
                    let mut e = Entry::new(EntryKind::Decision, NOW + 60);
                    e.card_id = Some(hex::encode_upper(cards[r]));
                    e.card_counter = Some(*till);
                    e.tx_type = Some("redeem".into());
                    e.points = Some(25);
                    e.verdict = Some(Verdict::Approve);
                    e.approval = Some(codes[r].clone());
                    j.append(e).unwrap();
                    common::seal(&keys, &mut j, NOW + 60, &[])
                })
                .collect()
        })
        .collect();
    let barrier = Arc::new(Barrier::new(2));
    let servers: Vec<_> = batches
        .into_iter()
        .map(|till_batches| {
            let (url, barrier) = (cluster.url().to_owned(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                let keys = IssuerKeys::test().unwrap();
                let mut pg = PgLedger::open_current(&url, LedgerKeys::from_issuer(&keys)).unwrap();
                for b in till_batches {
                    barrier.wait();
                    assert_eq!(pg.ingest(&b, NOW + 120).unwrap().status, Status::Posted);
                }
            })
        })
        .collect();
    for s in servers {
        s.join().unwrap();
    }
    let pg = PgLedger::open_current(cluster.url(), LedgerKeys::from_issuer(&keys)).unwrap();
    use tessera_ledger::LedgerStore as _;
    let exceptions = pg.exceptions().unwrap();
    for c in &cards {
        let reused = exceptions
            .iter()
            .filter(|e| e.class.as_str() == "approval-reused" && e.card_id == Some(*c))
            .count();
        let named: Vec<_> = exceptions.iter().map(|e| (e.class.as_str(), e.card_id)).collect();
        assert_eq!(reused, 1, "card {c:02X?}: {named:?}");
    }
}
