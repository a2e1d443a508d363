//! One batch posted on PostgreSQL against a raw `COPY` of the same rows
//! into a table with the same keys, and against the SQLite ledger, in one
//! run (the scale-out issue's first figure).
//!
//! One till's batch of N purchases over N / 10 cards (a day at a busy
//! till), sealed with the test keys. Then, each on a fresh database:
//!
//! * **raw COPY**: the same rows the posting writes — the journal records
//!   into `terminal_records`, the card records into `card_transactions`,
//!   the ledger's own tables with their keys and indexes — already parsed,
//!   `COPY`'d in one transaction: the floor any posting on PostgreSQL is
//!   compared with;
//! * **PostgreSQL posting core** (`tessera_ledger_pg::posting`): verified
//!   (chain, MAC, certificates) and posted;
//! * **SQLite ledger** (`tessera_ledger::Ledger::ingest`): verified and
//!   posted with every check of the embedded ledger (matching, points,
//!   warehouse off) — more work than the core does, so its ratio is not
//!   like for like.
//!
//! The PostgreSQL server is a private cluster (`scripts/pg-up.sh`) on this
//! machine, over loopback TCP, `fsync` on.
//!
//! `cargo bench -p tessera-ledger-pg --bench ingest` posts N = 5,000
//! purchases. Without `--bench` (as `cargo test --all-targets` runs it) it
//! does N = 40, to prove it still works.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use tessera_crypto::keys::IssuerKeys;
use tessera_crypto::rng::Rng;
use tessera_ledger::{Ledger, LedgerKeys};
use tessera_ledger_pg::cluster::Cluster;
use tessera_ledger_pg::posting::PgLedger;
use tessera_settlement::batch::BatchReader;
use tessera_settlement::record::EntryKind;
use tessera_simulator::SimCard;
use tessera_terminal::batch::write_range;
use tessera_terminal::issuer::{personalize, IssueParams};
use tessera_terminal::journal::Journal;
use tessera_terminal::offers::CampaignSet;
use tessera_terminal::policy::{Hotlist, Policy};
use tessera_terminal::till::{Till, TillConfig};
use tessera_terminal::{FixedClock, SoftwareSam, Terminal};

const NOW: u32 = 1_790_000_000;

fn card_id(n: u32) -> [u8; 8] {
    let mut id = [0x7E, 0x57, 0xBE, 0, 0, 0, 0, 0];
    id[4..].copy_from_slice(&n.to_be_bytes());
    id
}

fn batch(work: &Path, keys: &IssuerKeys, purchases: u32) -> Vec<u8> {
    let n_cards = (purchases / 10).max(1);
    let mut cards: Vec<SimCard> = (0..n_cards)
        .map(|n| {
            let id = card_id(n);
            let mut c = SimCard::manufacture(id, &keys.card_perso_key(&id), Rng::seeded(u64::from(n))).unwrap();
            let mut p = tessera_protocol::profile::Profile {
                card_id: id,
                version: 1,
                name: format!("Customer {n}"),
                birth_date: tessera_protocol::profile::Date::new(1990, 1, 2).unwrap(),
                home_city: "Lyon".into(),
                household: [0; 8],
                preferences: vec![],
                tier: 0,
                valid_from: tessera_protocol::profile::Date::new(2020, 1, 1).unwrap(),
                valid_until: tessera_protocol::profile::Date::new(2035, 12, 31).unwrap(),
            };
            p.card_id = id;
            personalize(&mut c, keys, p, &IssueParams::default()).unwrap();
            c
        })
        .collect();
    let terminal = Terminal::new(SoftwareSam::new(keys.terminal_keys()), FixedClock(NOW), 7).with_rng(Rng::seeded(7));
    let config = TillConfig {
        policy: Policy::default_policy(),
        hotlist: Hotlist::empty(),
        campaigns: CampaignSet::empty(),
        online: Default::default(),
    };
    let mut till = Till::new(terminal, Journal::open(&work.join("till.sqlite"), 7).unwrap(), config).unwrap();
    for i in 0..purchases {
        let c = (i % n_cards) as usize;
        cards[c].insert().unwrap();
        till.tap(&mut cards[c])
            .unwrap()
            .purchase(1_000 + u64::from(i % 50) * 10, &[])
            .unwrap();
    }
    let range = till.journal_mut().seal_next(NOW).unwrap().unwrap();
    let mut out = Vec::new();
    write_range(till.journal(), &keys.terminal_batch_key(7), &range, &mut out).unwrap();
    out
}

/// The floor: the same rows the posting core writes — every journal
/// record into `terminal_records`, every card record into
/// `card_transactions`, the ledger's own tables with their keys and indexes
/// (a database migrated like the ledger's) — `COPY`'d in one transaction,
/// already parsed and encoded before the clock starts.
fn raw_copy(url: &str, batch: &[u8]) -> (Duration, usize) {
    let mut reader = BatchReader::open(batch).unwrap();
    let (mut records, mut cards) = (Vec::new(), Vec::new());
    let mut n = 0;
    while let Some(r) = reader.next_record().unwrap() {
        let e = &r.entry;
        let kind = serde_json::to_value(e.kind).unwrap().as_str().unwrap().to_owned();
        let opt = |v: Option<String>| v.unwrap_or_else(|| "\\N".into());
        writeln!(
            records,
            "7\t{}\t1\t{kind}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            r.seq,
            e.time,
            opt(e.card_id.as_deref().map(|c| format!("\\\\x{}", c.to_lowercase()))),
            opt(e.card_counter.map(|c| c.to_string())),
            opt(e.tx_type.clone()),
            opt(e
                .verdict
                .map(|v| serde_json::to_value(v).unwrap().as_str().unwrap().to_owned())),
            opt(e.reason.clone()),
            opt(e.points.map(|p| p.to_string())),
            opt(e.purchase_minor.map(|p| p.to_string())),
        )
        .unwrap();
        if !matches!(e.kind, EntryKind::Completion | EntryKind::Recovered) {
            continue;
        }
        let rec = e.card_record().unwrap();
        writeln!(
            cards,
            "\\\\x{}\t{}\tposted\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t\\\\x{}\tcompletion\t7\t1\t{}\t{NOW}\t{NOW}\t0",
            e.card_id.as_deref().unwrap().to_lowercase(),
            rec.counter,
            rec.kind.name(),
            rec.amount,
            rec.kind.delta(rec.amount),
            rec.balance_after,
            rec.terminal_id,
            rec.terminal_seq,
            rec.time,
            rec.reference,
            hex::encode(rec.certificate),
            r.seq,
        )
        .unwrap();
        n += 1;
    }
    let mut c = tessera_ledger_pg::connect(url).unwrap();
    let start = Instant::now();
    let mut tx = c.transaction().unwrap();
    let mut w = tx
        .copy_in(
            "COPY terminal_records (terminal_id, seq, batch_no, kind, time, card_id, card_counter, tx_type, verdict,
                 reason, points, purchase_minor) FROM STDIN",
        )
        .unwrap();
    w.write_all(&records).unwrap();
    w.finish().unwrap();
    let mut w = tx
        .copy_in(
            "COPY card_transactions (card_id, counter, status, tx_type, points, delta, balance_after,
                 origin_terminal, origin_seq, card_time, reference, certificate, kind, terminal_id, batch_no, seq,
                 received_at, posted_at, online) FROM STDIN",
        )
        .unwrap();
    w.write_all(&cards).unwrap();
    w.finish().unwrap();
    tx.commit().unwrap();
    (start.elapsed(), n)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let purchases = if full { 5_000 } else { 40 };
    let work = tempfile::tempdir().unwrap();
    let keys = IssuerKeys::test().unwrap();
    let t = Instant::now();
    let b = batch(work.path(), &keys, purchases);
    println!(
        "one batch of {purchases} purchases over {} cards ({} bytes), made in {:.1} s",
        (purchases / 10).max(1),
        b.len(),
        t.elapsed().as_secs_f64()
    );
    let cluster = Cluster::start().unwrap();
    let (raw, records) = raw_copy(&cluster.database("raw").unwrap(), &b);

    // Verification alone (header, chain, MAC, certificates), as both
    // ledgers do it before posting.
    let verifier = Ledger::open(&work.path().join("verifier.sqlite"), LedgerKeys::from_issuer(&keys))
        .unwrap()
        .verifier();
    let start = Instant::now();
    verifier.verify(&b[..], usize::MAX).unwrap();
    let verify = start.elapsed();

    let mut core = PgLedger::open(&cluster.database("core").unwrap(), LedgerKeys::from_issuer(&keys)).unwrap();
    core.register_terminal(7, NOW).unwrap();
    let start = Instant::now();
    let o = core.ingest(&b, NOW).unwrap();
    let pg = start.elapsed();
    assert_eq!(o.posted, records as u64);

    let mut sqlite = Ledger::open(&work.path().join("ledger.sqlite"), LedgerKeys::from_issuer(&keys)).unwrap();
    sqlite.set_warehouse(false);
    sqlite.register_terminal(7, NOW).unwrap();
    let start = Instant::now();
    sqlite.ingest(&b[..], NOW).unwrap();
    let lite = start.elapsed();
    // As the PostgreSQL core does: the warehouse maintained in the batch's
    // transaction.
    let mut sqlite_wh = Ledger::open(&work.path().join("ledger-wh.sqlite"), LedgerKeys::from_issuer(&keys)).unwrap();
    sqlite_wh.register_terminal(7, NOW).unwrap();
    let start = Instant::now();
    sqlite_wh.ingest(&b[..], NOW).unwrap();
    let lite_wh = start.elapsed();

    drop(cluster);
    let rate = |d: Duration| records as f64 / d.as_secs_f64();
    println!("| ingest of one batch ({records} card records) | time | card records/s | raw COPY / this |");
    println!("|---|---|---|---|");
    println!(
        "| raw COPY of the same rows into the same tables and keys | {:.3} s | {:.0} | 1.00 |",
        raw.as_secs_f64(),
        rate(raw)
    );
    println!(
        "| PostgreSQL posting core (verify + post, warehouse maintained) | {:.3} s | {:.0} | {:.3} |",
        pg.as_secs_f64(),
        rate(pg),
        raw.as_secs_f64() / pg.as_secs_f64()
    );
    println!(
        "| verification alone (chain, MAC, certificates) | {:.3} s | {:.0} | |",
        verify.as_secs_f64(),
        rate(verify)
    );
    let post = pg.saturating_sub(verify);
    println!(
        "| PostgreSQL posting core without verification (core − verification) | {:.3} s | {:.0} | {:.3} |",
        post.as_secs_f64(),
        rate(post),
        raw.as_secs_f64() / post.as_secs_f64()
    );
    println!(
        "| SQLite ledger (verify + every check, warehouse off) | {:.3} s | {:.0} | {:.3} |",
        lite.as_secs_f64(),
        rate(lite),
        raw.as_secs_f64() / lite.as_secs_f64()
    );
    println!(
        "| SQLite ledger (verify + every check, warehouse maintained) | {:.3} s | {:.0} | {:.3} |",
        lite_wh.as_secs_f64(),
        rate(lite_wh),
        raw.as_secs_f64() / lite_wh.as_secs_f64()
    );
}
