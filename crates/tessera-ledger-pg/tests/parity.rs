//! The same batches posted to the SQLite ledger and to the PostgreSQL
//! posting core name the same exceptions and leave the same books: a
//! differential test of the checks both backends make.
//!
//! Card records certified with the card's own key (as a card would) but
//! chosen to break the books' rules, recovered into a till's journal:
//! refunds within and beyond their original, of the wrong kind, of an
//! original the books never saw, refunded twice; a counter far beyond the
//! last posted one; a void of a decision the card certified; balances that do not follow on from the card's
//! previous one (a refund beyond its original leaves the card at 0, not
//! at −20).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use tessera_ledger::books::OfficeBooks;

use tessera_crypto::keys::IssuerKeys;
use tessera_ledger::{Ledger, LedgerKeys, LedgerStore};
use tessera_ledger_pg::cluster::Cluster;
use tessera_ledger_pg::posting::PgLedger;
use tessera_protocol::messages::{LogRecord, TxKind};
use tessera_terminal::batch::write_range;
use tessera_terminal::journal::{Entry, EntryKind, Journal};

mod common;

const NOW: u32 = 1_790_000_000;
const TILL: u32 = 5;

use common::Spec;
/// Exceptions by class, card and counter.
type Named = BTreeMap<(String, Option<[u8; 8]>, Option<u32>), usize>;

/// A backend's exceptions, counted by class, card and counter.
fn named_by(l: &dyn LedgerStore) -> Named {
    let mut m = Named::new();
    for e in l.exceptions().unwrap() {
        *m.entry((e.class.as_str().to_owned(), e.card_id, e.counter))
            .or_default() += 1;
    }
    m
}

fn card(n: u8) -> [u8; 8] {
    [0x7E, 0x57, 0xAA, 0, 0, 0, 0, n]
}

/// A certified record of `card`: counter, kind, points, balance after,
/// reference.
fn record(keys: &IssuerKeys, card: [u8; 8], r: Spec) -> LogRecord {
    common::certified(keys, card, TILL, NOW, r, false)
}

#[test]
fn both_backends_name_the_same_exceptions_and_keep_the_same_books() {
    use TxKind::{Earn, RefundEarn, RefundRedeem};
    let keys = IssuerKeys::test().unwrap();
    let work = tempfile::tempdir().unwrap();
    let a = card(1);
    let b = card(2);
    let c = card(3);
    let history: Vec<([u8; 8], Vec<Spec>)> = vec![
        (
            a,
            vec![
                (1, Earn, 100, 100, 0),
                (2, RefundEarn, 60, 40, 1),   // within the original
                (3, RefundEarn, 60, 0, 1),    // beyond it (60 + 60 > 100): mismatch
                (4, RefundRedeem, 10, 10, 1), // reverses a redemption; the original is an earn: mismatch
                (5, RefundEarn, 5, 5, 90),    // an original the books never saw: mismatch
            ],
        ),
        (
            b,
            vec![
                (1, Earn, 50, 50, 0),
                (2, RefundEarn, 50, 0, 1), // in full
                (3, RefundEarn, 10, 0, 1), // again: duplicate refund
            ],
        ),
        // A counter far beyond the last posted one: a clone, hotlisted.
        (c, vec![(1, Earn, 10, 10, 0), (500, Earn, 10, 20, 0)]),
    ];
    let mut journal = Journal::open(&work.path().join("till.sqlite"), TILL).unwrap();
    for (id, recs) in &history {
        for r in recs {
            let rec = record(&keys, *id, *r);
            journal
                .append(Entry::from_card_record(EntryKind::Recovered, NOW, id, &rec))
                .unwrap();
        }
    }
    // The till journals void the decision behind card a's first record,
    // which the card certified: contradicted.
    let mut void = Entry::new(EntryKind::Void, NOW);
    void.card_id = Some(hex::encode_upper(a));
    void.card_counter = Some(1);
    void.origin_seq = Some(1_001);
    journal.append(void).unwrap();
    let range = journal.seal_next(NOW).unwrap().unwrap();
    let mut batch = Vec::new();
    write_range(&journal, &keys.terminal_batch_key(TILL), &range, &mut batch).unwrap();

    let mut sqlite = Ledger::open(&work.path().join("ledger.sqlite"), LedgerKeys::from_issuer(&keys)).unwrap();
    sqlite.register_terminal(TILL, NOW).unwrap();
    sqlite.ingest(&batch[..], NOW).unwrap();

    let cluster = Cluster::start().unwrap();
    let mut pg = PgLedger::open(cluster.url(), LedgerKeys::from_issuer(&keys)).unwrap();
    pg.register_terminal(TILL, NOW).unwrap();
    pg.ingest(&batch, NOW).unwrap();

    let classes = named_by;
    let (on_sqlite, on_pg) = (classes(&sqlite), classes(&pg));
    assert_eq!(on_sqlite, on_pg);
    // The rules each record breaks, named on both.
    let named =
        |class: &str, card: [u8; 8], counter: u32| on_pg.contains_key(&(class.to_owned(), Some(card), Some(counter)));
    assert!(named("refund-mismatch", a, 3));
    assert!(named("refund-mismatch", a, 4));
    assert!(named("refund-mismatch", a, 5));
    assert!(!named("refund-mismatch", a, 2));
    assert!(named("duplicate-refund", b, 3));
    assert!(named("counter-jump", c, 500));
    assert!(named("void-contradicted", a, 1));
    assert!(named("balance-discontinuity", a, 3));
    assert!(named("balance-discontinuity", b, 3));
    for id in [a, b, c] {
        let (s, p) = (sqlite.card(id).unwrap().unwrap(), pg.card(id).unwrap().unwrap());
        assert_eq!(
            (
                s.shadow_balance,
                s.card_balance,
                s.discrepancy,
                s.flagged,
                s.last_counter,
                s.pending,
                s.hotlisted
            ),
            (
                p.shadow_balance,
                p.card_balance,
                p.discrepancy,
                p.flagged,
                p.last_counter,
                p.pending,
                p.hotlisted
            ),
            "card {id:02X?}"
        );
    }
    assert!(pg.card(c).unwrap().unwrap().hotlisted);
    assert_eq!(sqlite.hotlist().unwrap().version, pg.hotlist().unwrap().version);
}

/// Issuer adjustments issued on SQLite, the books then moved to
/// PostgreSQL (`copy_ledger`, as `office migrate` does), and the same
/// batch of adjustment records posted to both: a goodwill credit applied
/// once (then no longer served by the sync feed), applied twice, one never
/// issued, and a replacement's credit, which moves the points off the
/// card it replaced.
#[test]
fn issuer_adjustments_pair_the_same_on_both_backends_after_the_move() {
    use TxKind::{Earn, IssuerCredit, IssuerDebit};
    let keys = IssuerKeys::test().unwrap();
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("ledger.sqlite");
    let (d, old, new) = (card(4), card(5), card(6));
    let mut journal = Journal::open(&work.path().join("till.sqlite"), TILL).unwrap();
    let seal = |journal: &mut Journal, recs: &[([u8; 8], Spec)]| {
        let recs: Vec<_> = recs.iter().map(|(id, r)| (*id, record(&keys, *id, *r))).collect();
        common::seal(&keys, journal, NOW, &recs)
    };

    // On SQLite: the cards issued, the old card's points, then a goodwill
    // credit and the replacement issued.
    let mut sqlite = Ledger::open(&path, LedgerKeys::from_issuer(&keys)).unwrap();
    common::issue(&mut sqlite, TILL, &[d, old, new], NOW);
    sqlite
        .ingest(&seal(&mut journal, &[(old, (1, Earn, 40, 40, 0))])[..], NOW)
        .unwrap();
    let goodwill = sqlite
        .issue_adjustment(
            &tessera_ledger::NewAdjustment {
                card_id: d,
                points: 30,
                kind: tessera_ledger::AdjustmentKind::Goodwill,
                reason: "a late delivery".into(),
                operator: "test".into(),
            },
            NOW,
        )
        .unwrap();
    let replacement = sqlite.replace_card(old, new, "lost", "test", NOW).unwrap();
    drop(sqlite);
    let cluster = common::moved(&path);

    let batch = seal(
        &mut journal,
        &[
            (d, (1, IssuerCredit, 30, 30, goodwill.seq)),
            (d, (2, IssuerCredit, 30, 60, goodwill.seq)), // applied twice
            (d, (3, IssuerDebit, 5, 55, 7)),              // never issued
            (
                new,
                (1, IssuerCredit, 40, 40, replacement.adjustment.as_ref().unwrap().seq),
            ),
            // The replaced card used again (before the hotlist reached
            // the till): its own books, named.
            (old, (2, Earn, 5, 45, 0)),
        ],
    );
    let mut sqlite = Ledger::open_existing(&path, LedgerKeys::from_issuer(&keys)).unwrap();
    sqlite.ingest(&batch[..], NOW).unwrap();
    let mut pg = PgLedger::open(cluster.url(), LedgerKeys::from_issuer(&keys)).unwrap();
    pg.ingest(&batch, NOW).unwrap();

    let named = named_by;
    let on_pg = named(&pg);
    assert_eq!(named(&sqlite), on_pg);
    assert!(on_pg.contains_key(&("adjustment-mismatch".to_owned(), Some(d), Some(2))));
    assert!(on_pg.contains_key(&("adjustment-mismatch".to_owned(), Some(d), Some(3))));
    assert!(!on_pg.contains_key(&("adjustment-mismatch".to_owned(), Some(d), Some(1))));
    assert_eq!(
        on_pg.get(&("replaced-card-used".to_owned(), Some(old), Some(2))),
        Some(&1)
    );
    for id in [d, old, new] {
        let (s, p) = (sqlite.card(id).unwrap().unwrap(), pg.card(id).unwrap().unwrap());
        assert_eq!(
            (
                s.shadow_balance,
                s.card_balance,
                s.discrepancy,
                s.last_counter,
                s.hotlisted
            ),
            (
                p.shadow_balance,
                p.card_balance,
                p.discrepancy,
                p.last_counter,
                p.hotlisted
            ),
            "card {id:02X?}"
        );
    }
    // The replaced card's points moved to its successor; what it did
    // afterwards stays on its own books.
    assert_eq!(pg.card(old).unwrap().unwrap().shadow_balance, 5);
    assert_eq!(pg.card(new).unwrap().unwrap().shadow_balance, 40);
    // Applied adjustments are no longer served.
    let pending = |l: &dyn LedgerStore| {
        l.pending_adjustments()
            .unwrap()
            .iter()
            .map(|a| (a.card_id, a.seq))
            .collect::<Vec<_>>()
    };
    assert_eq!(pending(&sqlite), pending(&pg));
    assert!(pending(&pg).is_empty());
}

/// A till's purchases, honest, and a copy of one decision with its points
/// edited in another till's journal: on both backends the honest points
/// are recomputed from the policy shipped with Tessera and explained line
/// by line (`decision_points`), and the edited ones are `points-mismatch`;
/// a decision the till voids in the same batch as the card's certified
/// record of it is `void-contradicted` on both.
#[test]
fn purchase_points_are_recomputed_the_same_on_both_backends() {
    use tessera_crypto::rng::Rng;
    use tessera_simulator::SimCard;
    use tessera_terminal::issuer::{personalize, IssueParams};
    use tessera_terminal::offers::CampaignSet;
    use tessera_terminal::policy::{Hotlist, Policy};
    use tessera_terminal::till::{Till, TillConfig};
    use tessera_terminal::{FixedClock, SoftwareSam, Terminal};
    const OTHER: u32 = 6;
    let keys = IssuerKeys::test().unwrap();
    let work = tempfile::tempdir().unwrap();
    let id = card(7);
    let mut sim = SimCard::manufacture(id, &keys.card_perso_key(&id), Rng::seeded(7)).unwrap();
    let profile = tessera_protocol::profile::Profile {
        card_id: id,
        version: 1,
        name: "Test Customer".into(),
        birth_date: tessera_protocol::profile::Date::new(1990, 1, 2).unwrap(),
        home_city: "Lyon".into(),
        household: [0; 8],
        preferences: vec![],
        tier: 1,
        valid_from: tessera_protocol::profile::Date::new(2020, 1, 1).unwrap(),
        valid_until: tessera_protocol::profile::Date::new(2035, 12, 31).unwrap(),
    };
    personalize(&mut sim, &keys, profile, &IssueParams::default()).unwrap();
    let terminal =
        Terminal::new(SoftwareSam::new(keys.terminal_keys()), FixedClock(NOW), TILL).with_rng(Rng::seeded(1));
    let config = TillConfig {
        policy: Policy::default_policy(),
        hotlist: Hotlist::empty(),
        campaigns: CampaignSet::empty(),
        online: Default::default(),
    };
    let mut till = Till::new(
        terminal,
        Journal::open(&work.path().join("t.sqlite"), TILL).unwrap(),
        config,
    )
    .unwrap();
    for minor in [1_250u64, 9_990, 30_000] {
        till.tap(&mut sim).unwrap().purchase(minor, &[]).unwrap();
    }
    // The till then journals the second purchase's decision void, in the
    // same batch as the card's certified record of it: contradicted.
    let second = till
        .journal()
        .records()
        .unwrap()
        .into_iter()
        .filter(|r| r.entry.kind == EntryKind::Completion)
        .nth(1)
        .unwrap()
        .entry;
    let mut void = Entry::new(EntryKind::Void, NOW);
    void.card_id = second.card_id.clone();
    void.card_counter = second.card_counter;
    void.origin_seq = second.origin_seq;
    till.journal_mut().append(void).unwrap();
    let honest = {
        let j = till.journal_mut();
        let range = j.seal_next(NOW).unwrap().unwrap();
        let mut b = Vec::new();
        write_range(j, &keys.terminal_batch_key(TILL), &range, &mut b).unwrap();
        b
    };
    // Another till's journal with a copy of the first decision, its
    // points multiplied.
    let mut decision = till
        .journal()
        .records()
        .unwrap()
        .into_iter()
        .find(|r| r.entry.kind == EntryKind::Decision)
        .unwrap()
        .entry;
    decision.points = decision.points.map(|p| p * 10);
    let mut other = Journal::open(&work.path().join("o.sqlite"), OTHER).unwrap();
    other.append(decision).unwrap();
    let range = other.seal_next(NOW).unwrap().unwrap();
    let mut edited = Vec::new();
    write_range(&other, &keys.terminal_batch_key(OTHER), &range, &mut edited).unwrap();

    let mut sqlite = Ledger::open(&work.path().join("ledger.sqlite"), LedgerKeys::from_issuer(&keys)).unwrap();
    let cluster = Cluster::start().unwrap();
    let mut pg = PgLedger::open(cluster.url(), LedgerKeys::from_issuer(&keys)).unwrap();
    for t in [TILL, OTHER] {
        sqlite.register_terminal(t, NOW).unwrap();
        pg.register_terminal(t, NOW).unwrap();
    }
    for b in [&honest, &edited] {
        sqlite.ingest(&b[..], NOW).unwrap();
        pg.ingest(b, NOW).unwrap();
    }
    let named = named_by;
    let on_pg = named(&pg);
    assert_eq!(named(&sqlite), on_pg);
    let mismatches: usize = on_pg
        .iter()
        .filter(|((class, ..), _)| class == "points-mismatch")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(mismatches, 1, "{on_pg:?}");
    assert!(
        on_pg.contains_key(&("void-contradicted".to_owned(), Some(id), second.card_counter)),
        "{on_pg:?}"
    );
    // The honest decisions' points, line by line, the same on both.
    let db = rusqlite::Connection::open(work.path().join("ledger.sqlite")).unwrap();
    let mut stmt = db
        .prepare("SELECT terminal_id, seq, source, points FROM decision_points ORDER BY 1, 2, 3")
        .unwrap();
    let on_sqlite: Vec<(i64, i64, String, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let lines: Vec<(i64, i64, String, i64)> = pg
        .client()
        .unwrap()
        .query(
            "SELECT terminal_id, seq, source, points FROM decision_points ORDER BY 1, 2, 3",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert!(!lines.is_empty());
    assert_eq!(on_sqlite, lines);
}

/// Office approval codes issued on SQLite, the books moved, and the same
/// batches posted to both: a decision on a genuine code, one on a code
/// the office never issued, one on a code for another amount, a second
/// use of a single-use code, and a refused copy of the till's batch (its
/// directory copied) using a code again — named the same on both, and
/// the uses recorded the same.
#[test]
fn approval_codes_are_reconciled_the_same_on_both_backends() {
    use tessera_crypto::referral::ReferralKind;
    use tessera_terminal::journal::Verdict;
    let keys = IssuerKeys::test().unwrap();
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("ledger.sqlite");
    let (a, b) = (card(7), card(8));
    let mut sqlite = Ledger::open(&path, LedgerKeys::from_issuer(&keys)).unwrap();
    common::issue(&mut sqlite, TILL, &[a, b], NOW);
    let issue = |l: &mut Ledger, card, amount| {
        l.issue_approval(TILL, card, ReferralKind::Redeem, amount, 3_600, "test", NOW)
            .unwrap()
            .code
    };
    let (good, twice, other) = (
        issue(&mut sqlite, a, 30),
        issue(&mut sqlite, b, 40),
        issue(&mut sqlite, a, 50),
    );
    drop(sqlite);
    let cluster = common::moved(&path);

    let decision = |card: [u8; 8], counter: u32, points: u32, code: &str| {
        let mut e = Entry::new(EntryKind::Decision, NOW + 60);
        e.card_id = Some(hex::encode_upper(card));
        e.card_counter = Some(counter);
        e.tx_type = Some("redeem".into());
        e.points = Some(points);
        e.verdict = Some(Verdict::Approve);
        e.approval = Some(code.to_owned());
        e
    };
    let mut journal = Journal::open(&work.path().join("till.sqlite"), TILL).unwrap();
    let copy = work.path().join("copy.sqlite");
    for e in [
        decision(a, 1, 30, &good),
        decision(a, 2, 10, "NOT-A-CODE"),
        decision(a, 3, 500, &other),
        decision(b, 1, 40, &twice),
        decision(b, 2, 40, &twice),
    ] {
        journal.append(e).unwrap();
    }
    // The till's directory copied before it seals: the copy journals its
    // own batch 1 with the code used again.
    drop(journal);
    std::fs::copy(work.path().join("till.sqlite"), &copy).unwrap();
    let mut journal = Journal::open(&work.path().join("till.sqlite"), TILL).unwrap();
    let batch = common::seal(&keys, &mut journal, NOW + 120, &[]);
    let mut copied = Journal::open(&copy, TILL).unwrap();
    copied.append(decision(b, 3, 40, &twice)).unwrap();
    let forked = common::seal(&keys, &mut copied, NOW + 180, &[]);

    let mut sqlite = Ledger::open_existing(&path, LedgerKeys::from_issuer(&keys)).unwrap();
    let mut pg = PgLedger::open(cluster.url(), LedgerKeys::from_issuer(&keys)).unwrap();
    sqlite.ingest(&batch[..], NOW + 120).unwrap();
    pg.ingest(&batch, NOW + 120).unwrap();
    assert!(sqlite.ingest(&forked[..], NOW + 180).is_err());
    assert!(pg.ingest(&forked, NOW + 180).is_err());

    let on_pg = named_by(&pg);
    assert_eq!(named_by(&sqlite), on_pg);
    let named =
        |class: &str, card: [u8; 8], counter: u32| on_pg.get(&(class.to_owned(), Some(card), Some(counter))).copied();
    assert_eq!(named("approval-unknown", a, 2), Some(1));
    assert_eq!(named("approval-mismatch", a, 3), Some(1));
    // The second use of the single-use code when it settled, and again in
    // the refused copy; the copy's copy of the first use (the code's other
    // settled use stands against it); the copy's own new use.
    assert_eq!(named("approval-reused", b, 2), Some(2));
    assert_eq!(named("approval-reused", b, 1), Some(1));
    assert_eq!(named("approval-reused", b, 3), Some(1), "the copied directory's use");
    assert!(!on_pg
        .keys()
        .any(|(class, card, counter)| class.starts_with("approval") && *card == Some(a) && *counter == Some(1)));
    let uses = |w: &dyn tessera_ledger::Warehouse| {
        w.warehouse_db()
            .rows(
                "SELECT terminal_id, seq, code, batch_no, card_counter FROM approval_uses ORDER BY terminal_id, seq",
                &[],
                |r| Ok((r.i64(0)?, r.i64(1)?, r.text(2)?, r.i64(3)?, r.opt_i64(4)?)),
            )
            .unwrap()
    };
    let used = uses(&pg);
    assert_eq!(used.len(), 5);
    assert_eq!(uses(&sqlite), used);
}

/// What waited too long, aged the same on both backends: a card's held
/// record whose earlier counter never came (`gap`), a batch held for one
/// its till never sent (`missing-batch`), a record whose origin till
/// never settled its decision (`orphan`) — each once, however often the
/// aging runs.
#[test]
fn gaps_age_into_the_same_exceptions_on_both_backends() {
    use TxKind::Earn;
    const OTHER: u32 = 6;
    let keys = IssuerKeys::test().unwrap();
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("ledger.sqlite");
    let (a, b) = (card(11), card(12));
    let mut sqlite = Ledger::open(&path, LedgerKeys::from_issuer(&keys)).unwrap();
    common::issue(&mut sqlite, TILL, &[a, b], NOW);
    sqlite.register_terminal(OTHER, NOW).unwrap();
    drop(sqlite);
    let cluster = common::moved(&path);

    let mut journal = Journal::open(&work.path().join("till.sqlite"), TILL).unwrap();
    let first = common::seal(
        &keys,
        &mut journal,
        NOW,
        &[
            (a, record(&keys, a, (1, Earn, 10, 10, 0))),
            // Counter 2 never arrives: 3 is held.
            (a, record(&keys, a, (3, Earn, 10, 30, 0))),
            // Made at the other till, which never settles.
            (b, common::certified(&keys, b, OTHER, NOW, (1, Earn, 5, 5, 0), false)),
        ],
    );
    // Batch 2 is lost on the way; batch 3 arrives and is held.
    let _lost = common::seal(&keys, &mut journal, NOW, &[(a, record(&keys, a, (2, Earn, 10, 20, 0)))]);
    let third = common::seal(&keys, &mut journal, NOW, &[(a, record(&keys, a, (4, Earn, 10, 40, 0)))]);

    let mut sqlite = Ledger::open_existing(&path, LedgerKeys::from_issuer(&keys)).unwrap();
    let mut pg = PgLedger::open(cluster.url(), LedgerKeys::from_issuer(&keys)).unwrap();
    for batch in [&first, &third] {
        sqlite.ingest(&batch[..], NOW).unwrap();
        pg.ingest(batch, NOW).unwrap();
    }
    // Not yet too old: nothing.
    assert_eq!(
        LedgerStore::age_gaps(&mut pg, NOW + 60, tessera_ledger::GAP_AGE_SECS).unwrap(),
        0
    );
    assert!(named_by(&pg).is_empty());
    let later = NOW + tessera_ledger::GAP_AGE_SECS + 60;
    // The gap, the missing batch, and three orphans: card b's, and card
    // a's two records, whose origin sequences (1,001 and 1,003) the till's
    // chain never reached.
    assert_eq!(sqlite.age_gaps(later, tessera_ledger::GAP_AGE_SECS).unwrap(), 5);
    assert_eq!(pg.age_gaps(later, tessera_ledger::GAP_AGE_SECS).unwrap(), 5);
    let on_pg = named_by(&pg);
    assert_eq!(named_by(&sqlite), on_pg);
    assert_eq!(on_pg.get(&("gap".to_owned(), Some(a), Some(2))), Some(&1));
    assert_eq!(on_pg.get(&("missing-batch".to_owned(), None, None)), Some(&1));
    assert_eq!(on_pg.get(&("orphan".to_owned(), Some(b), Some(1))), Some(&1));
    // Once.
    assert_eq!(pg.age_gaps(later + 3_600, tessera_ledger::GAP_AGE_SECS).unwrap(), 0);
    assert_eq!(named_by(&pg), on_pg);
    let decision = |w: &dyn tessera_ledger::Warehouse| {
        w.warehouse_db()
            .rows(
                "SELECT decision FROM card_transactions ORDER BY card_id, counter",
                &[],
                |r| r.text(0),
            )
            .unwrap()
    };
    assert_eq!(decision(&sqlite), decision(&pg));
}
