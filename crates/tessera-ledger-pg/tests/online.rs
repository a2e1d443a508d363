//! Online authorization on PostgreSQL (`tessera_ledger::online`, the SQL
//! shared with the SQLite ledger): the same requests decided on both
//! backends after the books moved give the same decisions, in the same
//! rows, every decline of the table in `docs/settlement.md` among them;
//! the records that arrive afterwards meet their approvals the same way
//! (posted once, the others at the counter lapsed, an online record
//! without an approval an `online-unmatched` exception). And two servers
//! deciding for one card at once keep its daily limit between them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};
use tessera_ledger::books::OfficeBooks;

use tessera_crypto::cert::request_cryptogram;
use tessera_crypto::keys::IssuerKeys;
use tessera_ledger::{Ledger, LedgerKeys, LedgerStore, OnlinePolicy, OnlineQuery, OnlineVerdict};
use tessera_ledger_pg::posting::PgLedger;
use tessera_protocol::messages::{AuthorizationRequest, LogRecord, TxKind, Velocity};
use tessera_terminal::journal::Journal;

mod common;

const NOW: u32 = 1_790_000_000;
const TILL: u32 = 5;

fn card(n: u8) -> [u8; 8] {
    [0x7E, 0x57, 0xAB, 0, 0, 0, 0, n]
}

/// A record of `card` certified with its key: counter, kind, points,
/// balance after, marked online or not.
fn record(keys: &IssuerKeys, card: [u8; 8], r: (u32, TxKind, u32, u32), online: bool) -> LogRecord {
    let (counter, kind, amount, balance_after) = r;
    common::certified(keys, card, TILL, NOW, (counter, kind, amount, balance_after, 0), online)
}

/// The card's genuine request: its counter, the operation, the balance it
/// certifies, and a challenge byte (each request its own cryptogram).
fn request(keys: &IssuerKeys, card: [u8; 8], op: (u32, TxKind, u32, u32), balance: u32, challenge: u8) -> OnlineQuery {
    let (counter, kind, amount, reference) = op;
    let mut request = AuthorizationRequest {
        counter,
        kind,
        amount,
        terminal_id: TILL,
        reference,
        balance,
        velocity: Velocity::default(),
        challenge: [challenge; 8],
        cryptogram: [0; 8],
    };
    request.cryptogram = request_cryptogram(&keys.card_cert_key(&card), &card, &request);
    OnlineQuery {
        terminal_id: TILL,
        card_id: card,
        key_version: 1,
        request,
    }
}

/// A sealed batch of the till carrying `recs` as recovered records.
fn seal(keys: &IssuerKeys, journal: &mut Journal, recs: &[([u8; 8], LogRecord)]) -> Vec<u8> {
    common::seal(keys, journal, NOW, recs)
}

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

/// A card's online decisions on each backend.
fn decisions(
    sqlite: &Ledger,
    pg: &PgLedger,
    card: [u8; 8],
) -> (
    Vec<tessera_ledger::OnlineAuthorization>,
    Vec<tessera_ledger::OnlineAuthorization>,
) {
    (
        sqlite.online_authorizations(card).unwrap(),
        pg.online_authorizations(card).unwrap(),
    )
}

/// A card's online decisions on PostgreSQL, counted by state.
fn states(pg: &PgLedger, card: [u8; 8]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for x in pg.online_authorizations(card).unwrap() {
        *m.entry(x.state).or_default() += 1;
    }
    m
}

/// Books on SQLite with cards `a`, `b` and `d` issued, their history
/// posted (a: 1,000 then 200 points; b: 100; d: 500) and `b` hotlisted,
/// then moved to PostgreSQL: both backends, the cluster, and the till's
/// journal (for later batches).
struct Moved {
    sqlite: Ledger,
    pg: PgLedger,
    cluster: tessera_ledger_pg::cluster::Cluster,
    journal: Journal,
    _work: tempfile::TempDir,
}

fn moved_books(keys: &IssuerKeys, (a, b, d): ([u8; 8], [u8; 8], [u8; 8])) -> Moved {
    use TxKind::Earn;
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("ledger.sqlite");
    let mut journal = Journal::open(&work.path().join("till.sqlite"), TILL).unwrap();
    let mut sqlite = Ledger::open(&path, LedgerKeys::from_issuer(keys)).unwrap();
    common::issue(&mut sqlite, TILL, &[a, b, d], NOW);
    let history = seal(
        keys,
        &mut journal,
        &[
            (a, record(keys, a, (1, Earn, 1_000, 1_000), false)),
            (a, record(keys, a, (2, Earn, 200, 1_200), false)),
            (b, record(keys, b, (1, Earn, 100, 100), false)),
            (d, record(keys, d, (1, Earn, 500, 500), false)),
        ],
    );
    sqlite.ingest(&history[..], NOW).unwrap();
    sqlite.hotlist_add(b, "lost", NOW).unwrap();
    drop(sqlite);
    let cluster = common::moved(&path);
    Moved {
        sqlite: Ledger::open_existing(&path, LedgerKeys::from_issuer(keys)).unwrap(),
        pg: PgLedger::open(cluster.url(), LedgerKeys::from_issuer(keys)).unwrap(),
        cluster,
        journal,
        _work: work,
    }
}

#[test]
fn both_backends_decide_record_and_match_online_requests_the_same() {
    use TxKind::{Earn, Redeem, RefundEarn, RefundRedeem};
    let keys = IssuerKeys::test().unwrap();
    let (a, b, d, unknown) = (card(1), card(2), card(3), card(9));
    // Every part bound: the cluster and the directory live to the end.
    let Moved {
        mut sqlite,
        mut pg,
        mut journal,
        cluster: _cluster,
        _work,
    } = moved_books(&keys, (a, b, d));

    let approved = request(&keys, a, (2, Redeem, 300, 0), 1_200, 1);
    let mut altered = approved.clone();
    altered.request.amount = 301;
    let asks: Vec<(OnlineQuery, &str)> = vec![
        (approved.clone(), "A00"),
        // Asked again after a lost answer: the same decision.
        (approved.clone(), "A00"),
        (altered, "O02"),
        (request(&keys, unknown, (0, Earn, 10, 0), 0, 2), "O01"),
        (request(&keys, b, (1, Redeem, 10, 0), 100, 3), "D01"),
        (request(&keys, a, (1, Redeem, 10, 0), 1_000, 4), "O04"),
        (request(&keys, a, (2, Redeem, 10, 0), 999, 5), "O05"),
        (request(&keys, a, (2, Redeem, 5_000, 0), 1_200, 6), "D08"),
        (request(&keys, a, (2, RefundEarn, 5, 9), 1_200, 7), "O06"),
        (request(&keys, a, (2, RefundRedeem, 5, 1), 1_200, 8), "O06"),
        (request(&keys, a, (2, RefundEarn, 1_000, 1), 1_200, 9), "A00"),
        // The approved refund not yet posted counts against its original.
        (request(&keys, a, (2, RefundEarn, 10, 1), 1_200, 10), "O07"),
        // The same operation asked again with another challenge: a third
        // approval of the day, the limit of this policy.
        (request(&keys, a, (2, Redeem, 300, 0), 1_200, 11), "A00"),
        (request(&keys, a, (2, Earn, 5, 0), 1_200, 12), "O08"),
        (request(&keys, d, (1, Earn, 20, 0), 500, 13), "A00"),
    ];
    let policy = OnlinePolicy {
        max_operations_per_day: 3,
        max_debit_points_per_day: 100_000,
    };
    let decide = |l: &mut dyn LedgerStore| -> Vec<OnlineVerdict> {
        asks.iter()
            .map(|(q, _)| l.authorize_online(q, &policy, NOW).unwrap())
            .collect()
    };
    let (on_sqlite, on_pg) = (decide(&mut sqlite), decide(&mut pg));
    assert_eq!(on_sqlite, on_pg);
    let codes: Vec<&str> = on_pg.iter().map(|v| v.code.as_str()).collect();
    let expected: Vec<&str> = asks.iter().map(|(_, c)| *c).collect();
    assert_eq!(codes, expected);
    assert_eq!(on_pg[0].settled, 2);
    assert!(on_pg[7].message.contains("1200"), "{}", on_pg[7].message);
    // The books hold every decision but the forged one, the same on both.
    for id in [a, b, d, unknown] {
        let (s, p) = decisions(&sqlite, &pg, id);
        assert_eq!(s, p, "card {id:02X?}");
    }
    assert_eq!(pg.online_authorizations(a).unwrap().len(), 10);
    assert_eq!(pg.online_outstanding(a).unwrap(), -300 - 1_000 - 300);
    assert_eq!(sqlite.online_outstanding(a).unwrap(), pg.online_outstanding(a).unwrap());

    // The records arrive: card a's redemption, online, meets one of its
    // two identical approvals, the other and the refund lapse; card d's
    // online record is not what the office approved: unmatched, and its
    // approval lapses.
    let batch = seal(
        &keys,
        &mut journal,
        &[
            (a, record(&keys, a, (3, Redeem, 300, 900), true)),
            (d, record(&keys, d, (2, Earn, 25, 525), true)),
        ],
    );
    sqlite.ingest(&batch[..], NOW).unwrap();
    pg.ingest(&batch, NOW).unwrap();
    for id in [a, d] {
        let (s, p) = decisions(&sqlite, &pg, id);
        assert_eq!(s, p, "card {id:02X?}");
    }
    assert_eq!(
        states(&pg, a),
        BTreeMap::from([("posted".into(), 1), ("lapsed".into(), 2), ("declined".into(), 7)])
    );
    assert_eq!(states(&pg, d), BTreeMap::from([("lapsed".into(), 1)]));
    assert_eq!(pg.online_outstanding(a).unwrap(), 0);
    let named = named_by(&pg);
    assert_eq!(named_by(&sqlite), named);
    assert_eq!(named.get(&("online-unmatched".into(), Some(d), Some(2))), Some(&1));
    assert!(!named
        .keys()
        .any(|(class, card, _)| class == "online-unmatched" && *card == Some(a)));

    // A copy of the same record delivered again is a duplicate: no
    // approval changes.
    let again = seal(
        &keys,
        &mut journal,
        &[(a, record(&keys, a, (3, Redeem, 300, 900), true))],
    );
    sqlite.ingest(&again[..], NOW).unwrap();
    pg.ingest(&again, NOW).unwrap();
    assert_eq!(decisions(&sqlite, &pg, a).0, decisions(&sqlite, &pg, a).1);
    assert_eq!(states(&pg, a).get("posted"), Some(&1));
    // The till journaled one record twice: named, on both, and nothing
    // else.
    let again_named = named_by(&pg);
    assert_eq!(named_by(&sqlite), again_named);
    assert_eq!(
        again_named.get(&("duplicate-record".into(), Some(a), Some(3))),
        Some(&1)
    );
    assert_eq!(again_named.len(), named.len() + 1);
}

/// Two servers deciding for one card at once: 2 × 12 requests of their
/// own and one they both receive (a till retrying through the other
/// server). The card's row lock makes them take turns: the day's limit of
/// 5 approvals holds across both, the shared request is decided once, and
/// both return that decision.
#[test]
fn two_servers_deciding_for_one_card_keep_its_daily_limit_between_them() {
    let keys = IssuerKeys::test().unwrap();
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("ledger.sqlite");
    let a = card(4);
    let mut sqlite = Ledger::open(&path, LedgerKeys::from_issuer(&keys)).unwrap();
    common::issue(&mut sqlite, TILL, &[a], NOW);
    drop(sqlite);
    let cluster = common::moved(&path);

    let policy = OnlinePolicy {
        max_operations_per_day: 5,
        max_debit_points_per_day: 100_000,
    };
    let shared = request(&keys, a, (0, TxKind::Earn, 7, 0), 0, 200);
    let barrier = Arc::new(Barrier::new(2));
    let servers: Vec<_> = (0..2u8)
        .map(|s| {
            let (url, barrier, shared) = (cluster.url().to_owned(), Arc::clone(&barrier), shared.clone());
            std::thread::spawn(move || {
                let keys = IssuerKeys::test().unwrap();
                let mut pg = PgLedger::open_current(&url, LedgerKeys::from_issuer(&keys)).unwrap();
                barrier.wait();
                let mut verdicts = Vec::new();
                for i in 0..12u8 {
                    if i == 3 {
                        verdicts.push((true, pg.authorize_online(&shared, &policy, NOW).unwrap()));
                    }
                    let q = request(&keys, a, (0, TxKind::Earn, 1, 0), 0, s * 100 + i);
                    verdicts.push((false, pg.authorize_online(&q, &policy, NOW).unwrap()));
                }
                verdicts
            })
        })
        .collect();
    let verdicts: Vec<Vec<(bool, OnlineVerdict)>> = servers.into_iter().map(|t| t.join().unwrap()).collect();
    let shared_verdicts: Vec<&OnlineVerdict> = verdicts.iter().flatten().filter(|(s, _)| *s).map(|(_, v)| v).collect();
    assert_eq!(shared_verdicts.len(), 2);
    assert_eq!(shared_verdicts[0], shared_verdicts[1]);
    let approvals =
        verdicts.iter().flatten().filter(|(s, v)| !*s && v.approved).count() + usize::from(shared_verdicts[0].approved);
    assert_eq!(approvals, 5);
    assert!(verdicts.iter().flatten().all(|(_, v)| v.approved || v.code == "O08"));
    let pg = PgLedger::open_current(cluster.url(), LedgerKeys::from_issuer(&keys)).unwrap();
    let rows = pg.online_authorizations(a).unwrap();
    assert_eq!(rows.len(), 25);
    assert_eq!(rows.iter().filter(|r| r.state == "approved").count(), 5);
}

/// Voice authorization (`office approve --request`) on PostgreSQL: the
/// same requests read over the telephone decided on both backends give
/// the same decisions in the same rows; and a server deciding by voice
/// while another decides online for the same card keeps the card's daily
/// limit between them (the voice decision takes the card's row first).
#[test]
fn voice_decisions_are_the_same_on_both_backends_and_share_the_cards_limit_with_online_ones() {
    use tessera_crypto::voice::VoiceReference;
    use TxKind::{Earn, Redeem};
    let keys = IssuerKeys::test().unwrap();
    let (a, b, d, unknown) = (card(11), card(12), card(13), card(19));
    let Moved {
        mut sqlite,
        mut pg,
        cluster,
        _work,
        ..
    } = moved_books(&keys, (a, b, d));
    let policy = OnlinePolicy {
        max_operations_per_day: 3,
        max_debit_points_per_day: 100_000,
    };
    // (card, the card's counter, kind, points, reference, cryptogram byte,
    // the decision expected)
    type VoiceAsk = ([u8; 8], u32, TxKind, u32, u32, u8, &'static str);
    let asks: Vec<VoiceAsk> = vec![
        (a, 2, Redeem, 300, 0, 1, "A00"),
        // Read out again after the line dropped: the same decision.
        (a, 2, Redeem, 300, 0, 1, "A00"),
        (b, 1, Redeem, 10, 0, 2, "D01"),
        (unknown, 0, Earn, 10, 0, 3, "O01"),
        // More than the books hold for the card.
        (a, 2, Redeem, 5_000, 0, 4, "D08"),
        (a, 2, Earn, 50, 0, 5, "A00"),
        (a, 2, Earn, 60, 0, 6, "A00"),
        // The day's limit of three approvals.
        (a, 2, Earn, 70, 0, 7, "O08"),
    ];
    let decide = |l: &mut dyn OfficeBooks| -> Vec<(OnlineVerdict, u32)> {
        asks.iter()
            .map(|&(c, counter, kind, amount, reference, byte, _)| {
                let voice = VoiceReference::new([byte; 8], counter);
                let (v, counter, _) = l
                    .authorize_by_voice(TILL, c, &voice, kind, amount, reference, "Marie", &policy, NOW)
                    .unwrap();
                (v, counter)
            })
            .collect()
    };
    let (on_sqlite, on_pg) = (decide(&mut sqlite), decide(&mut pg));
    assert_eq!(on_sqlite, on_pg);
    let codes: Vec<&str> = on_pg.iter().map(|(v, _)| v.code.as_str()).collect();
    let expected: Vec<&str> = asks.iter().map(|a| a.6).collect();
    assert_eq!(codes, expected);
    for id in [a, b, unknown] {
        let (s, p) = decisions(&sqlite, &pg, id);
        assert_eq!(s, p, "card {id:02X?}");
    }
    assert!(pg
        .online_authorizations(a)
        .unwrap()
        .iter()
        .all(|r| r.delivery == "voice"));

    // Card d (at counter 1, 500 points): one server decides by voice
    // while the other decides online, 8 requests each, under a limit of 5
    // a day.
    let limit = OnlinePolicy {
        max_operations_per_day: 5,
        max_debit_points_per_day: 100_000,
    };
    let barrier = Arc::new(Barrier::new(2));
    let servers: Vec<_> = (0..2u8)
        .map(|s| {
            let (url, barrier) = (cluster.url().to_owned(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                let keys = IssuerKeys::test().unwrap();
                let mut pg = PgLedger::open_current(&url, LedgerKeys::from_issuer(&keys)).unwrap();
                barrier.wait();
                (0..8u8)
                    .map(|i| {
                        if s == 0 {
                            let voice = VoiceReference::new([100 + i; 8], 1);
                            pg.authorize_by_voice(TILL, d, &voice, Earn, 1, 0, "Marie", &limit, NOW)
                                .unwrap()
                                .0
                        } else {
                            let q = request(&keys, d, (1, Earn, 1, 0), 500, 200 + i);
                            pg.authorize_online(&q, &limit, NOW).unwrap()
                        }
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let verdicts: Vec<OnlineVerdict> = servers.into_iter().flat_map(|t| t.join().unwrap()).collect();
    assert_eq!(verdicts.iter().filter(|v| v.approved).count(), 5, "{verdicts:?}");
    assert!(verdicts.iter().all(|v| v.approved || v.code == "O08"), "{verdicts:?}");
    let rows = pg.online_authorizations(d).unwrap();
    assert_eq!(rows.len(), 16);
    assert_eq!(rows.iter().filter(|r| r.state == "approved").count(), 5);
}
