//! The back office on PostgreSQL, as processes (issue: scale-out): the
//! books moved from the office's SQLite ledger with `office migrate`, then
//! served by `tessera office serve` — two of them sharing one database.
//!
//! * **One of two servers killed with SIGKILL while the tills upload**:
//!   the other keeps serving; the tills whose server died see their
//!   upload fail and send it again, unchanged, to the other; every batch
//!   is posted once (a batch whose commit landed before the kill is
//!   acknowledged as a duplicate), every card record once, and every
//!   card's books equal the card.
//! * **PostgreSQL stopped as by a crash while the tills upload**, then
//!   started again (recovery from its WAL): uploads fail cleanly (the
//!   server answers 503, or the connection fails) while it is down, and
//!   succeed when it is back, through the same server, which opens its
//!   connections again; nothing is lost or doubled.
//! * **The README's command** (`scripts/office-postgres.sh`) starts the
//!   office on a private local cluster when none is configured, moves the
//!   books there, and a till settles through it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;
use tessera_ledger::books::OfficeBooks;

use tessera_crypto::keys::{IssuerKeys, TerminalBundle};
use tessera_crypto::rng::Rng;
use tessera_ledger::{Ledger, LedgerKeys, LedgerStore, NewCustomer};
use tessera_ledger_pg::cluster::Cluster;
use tessera_ledger_pg::posting::PgLedger;
use tessera_office::RetryPolicy;
use tessera_simulator::SimCard;
use tessera_suite::office::Server;
use tessera_suite::pcscd::tessera_bin;
use tessera_suite::{anna, card_id, TEST_TIME};
use tessera_terminal::issuer::{personalize, IssueParams};
use tessera_terminal::journal::Journal;
use tessera_terminal::offers::CampaignSet;
use tessera_terminal::policy::{Hotlist, Policy};
use tessera_terminal::till::{Till, TillConfig, TillOutcome};
use tessera_terminal::{FixedClock, SoftwareSam, Terminal};

/// Tills; each has two cards of its own.
const TILLS: u32 = 6;
/// Rounds of purchases, each followed by a settlement.
const ROUNDS: u32 = 4;
/// Purchases per till and round.
const PER_ROUND: u32 = 10;

fn tessera(args: &[&str]) -> String {
    let out = Command::new(tessera_bin()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "tessera {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn till_id(k: u32) -> u32 {
    200 + k
}

fn card_no(k: u32, c: u32) -> u32 {
    1_000 + 2 * k + c
}

struct Office {
    _work: tempfile::TempDir,
    dir: PathBuf,
    keys: IssuerKeys,
    bundles: Vec<TerminalBundle>,
    url: String,
}

/// An office with [`TILLS`] terminals and their cards registered, its
/// books then moved to the database `url`.
fn office(url: &str) -> Office {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("office");
    let d = dir.to_str().unwrap();
    tessera(&["office", "init", "--dir", d]);
    let keys = IssuerKeys::from_json(&std::fs::read_to_string(dir.join("issuer-keys.json")).unwrap()).unwrap();
    let mut bundles = Vec::new();
    for k in 0..TILLS {
        let out = work.path().join(format!("till{k}.json"));
        tessera(&[
            "office",
            "export-terminal",
            "--dir",
            d,
            "--terminal-id",
            &till_id(k).to_string(),
            "--out",
            out.to_str().unwrap(),
            "--plain-http",
        ]);
        bundles.push(TerminalBundle::from_json(&std::fs::read_to_string(out).unwrap()).unwrap());
    }
    let mut ledger = Ledger::open_existing(&dir.join("ledger.sqlite"), LedgerKeys::from_issuer(&keys)).unwrap();
    let a = anna();
    let customer = ledger
        .register_customer(&NewCustomer {
            name: a.name.clone(),
            birth_date: a.birth_date,
            home_city: a.home_city.clone(),
            household: a.household,
            preferences: a.preferences.clone(),
            tier: a.tier,
        })
        .unwrap();
    for k in 0..TILLS {
        for c in 0..2 {
            ledger
                .register_card(card_id(card_no(k, c)), customer, keys.key_versions()[0], TEST_TIME)
                .unwrap();
        }
    }
    drop(ledger);
    tessera(&["office", "migrate", "--dir", d, "--to", url]);
    Office {
        _work: work,
        dir,
        keys,
        bundles,
        url: url.to_owned(),
    }
}

fn card(keys: &IssuerKeys, n: u32) -> SimCard {
    let id = card_id(n);
    let mut card = SimCard::manufacture(id, &keys.card_perso_key(&id), Rng::seeded(u64::from(n))).unwrap();
    personalize(&mut card, keys, anna(), &IssueParams::default()).unwrap();
    card
}

fn till(keys: &IssuerKeys, journal: &Path, id: u32) -> Till<SoftwareSam, FixedClock> {
    let terminal = Terminal::new(SoftwareSam::new(keys.terminal_keys()), FixedClock(TEST_TIME), id)
        .with_store(1)
        .with_rng(Rng::seeded(u64::from(id)));
    let config = TillConfig {
        policy: Policy::default_policy(),
        hotlist: Hotlist::empty(),
        campaigns: CampaignSet::empty(),
        online: Default::default(),
    };
    Till::new(terminal, Journal::open(journal, id).unwrap(), config).unwrap()
}

/// One till's day: its two cards, rounds of purchases, and after each a
/// settlement that goes to `urls[0]` and, whenever an upload fails, is
/// sent again to the next of `urls` (as a till behind a load balancer
/// whose server died). Returns the cards and how many uploads failed.
struct TillRun {
    cards: Vec<SimCard>,
    failures: u32,
    batches: u32,
    records: u32,
}

fn run_till(
    o: &Office,
    k: u32,
    urls: Vec<Arc<std::sync::Mutex<String>>>,
    barrier: &Barrier,
    uploading: &AtomicBool,
) -> TillRun {
    let dir = o.dir.parent().unwrap();
    let mut t = till(&o.keys, &dir.join(format!("till{k}.sqlite")), till_id(k));
    let mut cards = vec![card(&o.keys, card_no(k, 0)), card(&o.keys, card_no(k, 1))];
    let mut failures = 0;
    for _ in 0..ROUNDS {
        barrier.wait();
        for i in 0..PER_ROUND {
            let c = &mut cards[(i % 2) as usize];
            let mut tap = t.tap(&mut *c).unwrap();
            let o = tap.purchase(u64::from(100 + 37 * i + 11 * k), &[]).unwrap();
            assert!(matches!(o, TillOutcome::Approved { .. }), "{o:?}");
        }
        uploading.store(true, Ordering::SeqCst);
        let mut attempt = 0usize;
        loop {
            let url = urls[attempt % urls.len()].lock().unwrap().clone();
            match tessera_office::settle(
                t.journal_mut(),
                &o.bundles[k as usize],
                &url,
                &RetryPolicy::once(),
                TEST_TIME,
                |_| {},
            ) {
                Ok(_) => break,
                Err(_) => {
                    failures += 1;
                    attempt += 1;
                    assert!(attempt < 400, "till {k}: no server took its batch");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        barrier.wait();
    }
    let j = t.journal_mut();
    assert_eq!(
        j.settled_up_to().unwrap(),
        j.len(),
        "till {k}: every record acknowledged"
    );
    let batches = j.batches().unwrap().len() as u32;
    TillRun {
        cards,
        failures,
        batches,
        records: j.len(),
    }
}

/// Every batch of every till posted once, every card record once, every
/// card's books equal to the card, no exception.
fn check_books(o: &Office, runs: &[TillRun]) {
    let mut pg = PgLedger::open(&o.url, LedgerKeys::from_issuer(&o.keys)).unwrap();
    for (k, run) in runs.iter().enumerate() {
        let tid = i64::from(till_id(k as u32));
        let c = pg.client().unwrap();
        let row = c
            .query_one(
                "SELECT count(*), COALESCE(max(batch_no), 0), count(DISTINCT batch_no) FROM batches
                 WHERE terminal_id = $1 AND status = 'posted'",
                &[&tid],
            )
            .unwrap();
        let (n, max, distinct): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        assert_eq!(
            (n, max, distinct),
            (i64::from(run.batches), i64::from(run.batches), n),
            "till {k}"
        );
        let records: i64 = c
            .query_one("SELECT count(*) FROM terminal_records WHERE terminal_id = $1", &[&tid])
            .unwrap()
            .get(0);
        assert_eq!(records, i64::from(run.records), "till {k}: each journal record once");
        for card in &run.cards {
            let st = card.state().unwrap();
            let posted: i64 = pg
                .client()
                .unwrap()
                .query_one(
                    "SELECT count(*) FROM card_transactions WHERE card_id = $1 AND status = 'posted'",
                    &[&&st.card_id[..]],
                )
                .unwrap()
                .get(0);
            assert_eq!(posted, i64::from(st.counter), "each card record once");
            let book = pg.card(st.card_id).unwrap().unwrap();
            assert_eq!(
                (book.shadow_balance, book.card_balance, book.last_counter, book.pending),
                (i64::from(st.balance), i64::from(st.balance), st.counter, 0)
            );
        }
    }
    let exceptions = pg.exceptions().unwrap();
    assert!(exceptions.is_empty(), "{exceptions:?}");
}

#[test]
fn one_of_two_office_servers_killed_mid_upload_the_other_serves_and_every_batch_posts_once() {
    let cluster = Cluster::start().unwrap();
    let o = Arc::new(office(cluster.url()));
    let mut a = Server::start(&o.dir, &["--plain-http", "--postgres-connections", "2"], &[]);
    let b = Server::start(&o.dir, &["--plain-http", "--postgres-connections", "2"], &[]);
    let (url_a, url_b) = (
        Arc::new(std::sync::Mutex::new(a.http())),
        Arc::new(std::sync::Mutex::new(b.http())),
    );
    let barrier = Arc::new(Barrier::new(TILLS as usize + 1));
    let uploading = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..TILLS)
        .map(|k| {
            let (o, barrier, uploading) = (Arc::clone(&o), Arc::clone(&barrier), Arc::clone(&uploading));
            // Half the tills upload to A, half to B; each fails over to the other.
            let urls = if k % 2 == 0 {
                vec![Arc::clone(&url_a), Arc::clone(&url_b)]
            } else {
                vec![Arc::clone(&url_b), Arc::clone(&url_a)]
            };
            std::thread::spawn(move || run_till(&o, k, urls, &barrier, &uploading))
        })
        .collect();
    for round in 0..ROUNDS {
        uploading.store(false, Ordering::SeqCst);
        barrier.wait();
        if round == 1 {
            // Once the tills have started this round's uploads, A dies.
            while !uploading.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(3));
            a.kill();
        }
        barrier.wait();
    }
    let runs: Vec<TillRun> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    // The tills of A failed over; those of B never saw a failure.
    let (of_a, of_b): (u32, u32) = (
        runs.iter().step_by(2).map(|r| r.failures).sum(),
        runs.iter().skip(1).step_by(2).map(|r| r.failures).sum(),
    );
    assert!(of_a >= TILLS / 2, "every till of A failed over at least once: {of_a}");
    assert_eq!(of_b, 0, "B kept serving");
    check_books(&o, &runs);
    // B is still serving; `office verify` reads the PostgreSQL books:
    // every card's books agree with its postings after the kill.
    let v: serde_json::Value = serde_json::from_str(&tessera(&[
        "office",
        "verify",
        "--dir",
        o.dir.to_str().unwrap(),
        "--json",
    ]))
    .unwrap();
    assert_eq!(
        (v["sound"].as_bool(), v["storage_checked"].as_bool()),
        (Some(true), Some(false)),
        "{v}"
    );
    drop(b);
}

#[test]
fn postgresql_crashed_while_tills_upload_they_fail_cleanly_and_post_once_when_it_is_back() {
    let cluster = Cluster::start().unwrap();
    let o = Arc::new(office(cluster.url()));
    let server = Server::start(&o.dir, &["--plain-http", "--postgres-connections", "2"], &[]);
    let url = Arc::new(std::sync::Mutex::new(server.http()));
    let barrier = Arc::new(Barrier::new(TILLS as usize + 1));
    let uploading = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..TILLS)
        .map(|k| {
            let (o, barrier, uploading, url) = (
                Arc::clone(&o),
                Arc::clone(&barrier),
                Arc::clone(&uploading),
                Arc::clone(&url),
            );
            std::thread::spawn(move || run_till(&o, k, vec![url], &barrier, &uploading))
        })
        .collect();
    let down = AtomicU32::new(0);
    for round in 0..ROUNDS {
        uploading.store(false, Ordering::SeqCst);
        barrier.wait();
        if round == 2 {
            while !uploading.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(3));
            cluster.crash().unwrap();
            // Down long enough for every till's upload to fail against it.
            std::thread::sleep(Duration::from_millis(1_500));
            down.fetch_add(1, Ordering::SeqCst);
            cluster.restart().unwrap();
        }
        barrier.wait();
    }
    let runs: Vec<TillRun> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    let failures: u32 = runs.iter().map(|r| r.failures).sum();
    assert_eq!(down.load(Ordering::SeqCst), 1);
    assert!(failures >= 1, "uploads failed while the database was down");
    check_books(&o, &runs);
    drop(server);
}

#[test]
fn the_readme_command_starts_the_office_on_a_local_cluster_and_a_till_settles_through_it() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("office");
    let pg = work.path().join("office.postgres");
    // An office that has worked on SQLite: a till's bundle exported.
    let d = dir.to_str().unwrap();
    tessera(&["office", "init", "--dir", d]);
    let bundle_path = work.path().join("till.json");
    tessera(&[
        "office",
        "export-terminal",
        "--dir",
        d,
        "--terminal-id",
        "7",
        "--out",
        bundle_path.to_str().unwrap(),
        "--plain-http",
    ]);
    let log = work.path().join("serve.log");
    let child = Command::new("bash")
        .arg(tessera_ledger_pg::cluster::scripts_dir().join("office-postgres.sh"))
        .arg(&dir)
        .args(["--plain-http", "--listen", "127.0.0.1:0"])
        .env("TESSERA_BIN", tessera_bin())
        .env_remove("TESSERA_POSTGRES")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut office = ScriptOffice { child, pg: pg.clone() };
    let stdout = office.child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let addr = loop {
        match rx.recv_timeout(Duration::from_secs(300)) {
            Ok(line) => {
                if let Some(a) = line.strip_prefix("listening on ") {
                    break a.to_owned();
                }
            }
            Err(_) => panic!(
                "the office did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ),
        }
    };
    // A local cluster of its own, and the books moved there.
    let url = std::fs::read_to_string(pg.join("url")).unwrap().trim().to_owned();
    let books = std::fs::read_to_string(dir.join("books.toml")).unwrap();
    assert!(books.contains(&url), "{books}");

    // The office's own commands run on the PostgreSQL books, audited: a
    // till registered, a card issued to a new customer and hotlisted.
    let till8 = work.path().join("till8.json");
    tessera(&[
        "office",
        "export-terminal",
        "--dir",
        d,
        "--terminal-id",
        "8",
        "--out",
        till8.to_str().unwrap(),
        "--plain-http",
    ]);
    assert!(till8.exists());
    let issued = work.path().join("new.card");
    let card_out: serde_json::Value = serde_json::from_str(&tessera(&[
        "office",
        "issue",
        "--dir",
        d,
        "--card",
        issued.to_str().unwrap(),
        "--card-id",
        "0C0C000000000001",
        "--name",
        "Clara Test",
        "--birth-date",
        "1991-02-03",
        "--json",
    ]))
    .unwrap();
    assert_eq!(card_out["ok"], true, "{card_out}");
    let one = |sql: &str| -> i64 {
        tessera_ledger_pg::connect(&url)
            .unwrap()
            .query_one(sql, &[])
            .unwrap()
            .get(0)
    };
    // A referral approval code for the new till and card, before the card
    // is hotlisted.
    let code: serde_json::Value = serde_json::from_str(&tessera(&[
        "office",
        "approve",
        "--dir",
        d,
        "--terminal-id",
        "8",
        "--card",
        "0C0C000000000001",
        "--kind",
        "redeem",
        "--amount",
        "30",
        "--valid-for",
        "30m",
        "--json",
    ]))
    .unwrap();
    assert!(
        code["approval"]["code"].as_str().is_some_and(|c| c.len() > 10) && code["approval"]["terminal_id"] == 8,
        "{code}"
    );
    assert_eq!(one("SELECT count(*) FROM approvals WHERE terminal_id = 8"), 1);
    // A goodwill credit for the new card, served to the tills by sync.
    tessera(&[
        "office",
        "adjust",
        "--dir",
        d,
        "--card",
        "0C0C000000000001",
        "--points",
        "200",
        "--reason",
        "welcome",
    ]);
    assert_eq!(
        one("SELECT count(*) FROM adjustments WHERE card_id = '\\x0c0c000000000001' AND points = 200 AND state = 'issued'"),
        1
    );
    // Their lists read the PostgreSQL books.
    let adjustments = tessera(&["office", "adjust", "list", "--dir", d, "--json"]);
    assert!(
        adjustments.contains("0C0C000000000001") && adjustments.contains("welcome"),
        "{adjustments}"
    );
    let codes = tessera(&["office", "approve", "list", "--dir", d, "--json"]);
    assert!(codes.contains(code["approval"]["code"].as_str().unwrap()), "{codes}");
    tessera(&[
        "office",
        "hotlist",
        "add",
        "--dir",
        d,
        "--card",
        "0C0C000000000001",
        "--reason",
        "lost",
    ]);
    let listed = tessera(&["office", "hotlist", "list", "--dir", d]);
    assert!(listed.contains("0C0C000000000001"), "{listed}");
    tessera(&["office", "audit", "verify", "--dir", d]);
    // `office verify` proves the PostgreSQL books, and finds an edited
    // balance there.
    tessera(&["office", "verify", "--dir", d]);
    let edit = |sql: &str| {
        tessera_ledger_pg::connect(&url).unwrap().execute(sql, &[]).unwrap();
    };
    edit("UPDATE cards SET shadow_balance = shadow_balance + 1000 WHERE card_id = '\\x0c0c000000000001'");
    let out = Command::new(tessera_bin())
        .args(["office", "verify", "--dir", d])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("card 0C0C000000000001: shadow balance is not the sum of its posted records"),
        "{said}"
    );
    edit("UPDATE cards SET shadow_balance = shadow_balance - 1000 WHERE card_id = '\\x0c0c000000000001'");
    tessera(&["office", "verify", "--dir", d]);
    assert_eq!(one("SELECT count(*) FROM terminals WHERE terminal_id = 8"), 1);
    assert_eq!(
        one("SELECT count(*) FROM cards WHERE card_id = '\\x0c0c000000000001' AND registered_at IS NOT NULL AND customer_id IS NOT NULL"),
        1
    );
    assert_eq!(
        one("SELECT count(*) FROM hotlist WHERE card_id = '\\x0c0c000000000001'"),
        1
    );
    let audited = std::fs::read_to_string(dir.join("audit.jsonl")).unwrap_or_default();
    for action in [
        "terminal.export",
        "card.issue",
        "approval.issue",
        "card.adjust",
        "hotlist.add",
    ] {
        assert!(audited.contains(action), "{action} audited: {audited}");
    }
    assert_eq!(
        one("SELECT entries FROM audit_anchor WHERE id = 1"),
        i64::try_from(audited.lines().count()).unwrap(),
        "the anchor on PostgreSQL follows the log"
    );
    let keys = IssuerKeys::from_json(&std::fs::read_to_string(dir.join("issuer-keys.json")).unwrap()).unwrap();
    let bundle = TerminalBundle::from_json(&std::fs::read_to_string(&bundle_path).unwrap()).unwrap();
    let pg_ledger = PgLedger::open(&url, LedgerKeys::from_issuer(&keys)).unwrap();
    let mut t = till(&keys, &work.path().join("till7.sqlite"), 7);
    let mut c = card(&keys, 77);
    for i in 0..3u64 {
        let mut tap = t.tap(&mut c).unwrap();
        assert!(matches!(
            tap.purchase(1_000 + i, &[]).unwrap(),
            TillOutcome::Approved { .. }
        ));
    }
    let report = tessera_office::settle(
        t.journal_mut(),
        &bundle,
        &format!("http://{addr}"),
        &RetryPolicy::once(),
        TEST_TIME,
        |_| {},
    )
    .unwrap();
    assert_eq!(report.settled_up_to, t.journal_mut().len());
    let st = c.state().unwrap();
    let book = pg_ledger.card(st.card_id).unwrap().unwrap();
    assert_eq!((book.shadow_balance, book.last_counter), (i64::from(st.balance), 3));
    // The sync feed is read from the same books: the card's settled
    // counter, MAC'd for the card.
    let feed = tessera_office::fetch_sync(&format!("http://{addr}"), &bundle, &RetryPolicy::once()).unwrap();
    let settled: Vec<(String, u32)> = feed.settled.iter().map(|s| (s.card_id.clone(), s.counter)).collect();
    assert_eq!(settled, [(hex::encode_upper(st.card_id), 3)]);
    assert!(!feed.settled[0].issuer_macs.is_empty());

    // The analytics read the warehouse on PostgreSQL, maintained as the
    // batch posted: the points issued are the card's, and the customer
    // (an anonymous card) is scored.
    let points: serde_json::Value = serde_json::from_str(&tessera(&[
        "office", "report", "points", "--dir", d, "--period", "day", "--json",
    ]))
    .unwrap();
    let issued: i64 = points["data"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["issued"].as_i64().unwrap())
        .sum();
    assert_eq!(issued, i64::from(st.balance), "{points}");
    let rfm: serde_json::Value =
        serde_json::from_str(&tessera(&["office", "report", "rfm", "--dir", d, "--json"])).unwrap();
    assert_eq!(rfm["data"]["customers"], 1, "{rfm}");
    // The liability is the PostgreSQL books': the card's points.
    let liability: serde_json::Value =
        serde_json::from_str(&tessera(&["office", "report", "liability", "--dir", d, "--json"])).unwrap();
    assert_eq!(
        liability["data"]["points_outstanding"],
        i64::from(st.balance),
        "{liability}"
    );
    // The dashboard is served from them too, behind the staff login.
    let token: serde_json::Value =
        serde_json::from_str(&tessera(&["office", "dashboard-token", "--dir", d, "--json"])).unwrap();
    let base = format!("http://{addr}");
    assert!(raw(&base, "GET /dashboard/ HTTP/1.1\r\n", "").starts_with("HTTP/1.1 303"));
    let login = raw(
        &base,
        "POST /dashboard/login HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\n",
        &format!("token={}", token["token"].as_str().unwrap()),
    );
    let cookie = login
        .lines()
        .find_map(|l| {
            l.strip_prefix("set-cookie: ")
                .or_else(|| l.strip_prefix("Set-Cookie: "))
        })
        .and_then(|c| c.split(';').next())
        .unwrap_or_else(|| panic!("no session: {login}"))
        .to_owned();
    let page = raw(&base, &format!("GET /dashboard/ HTTP/1.1\r\nCookie: {cookie}\r\n"), "");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    let figure = format!(
        "data-figure=\"overview.points_outstanding\" data-value=\"{}\"",
        st.balance
    );
    assert!(page.contains(&figure), "the card's points on the overview: {page}");

    // The reports of the books themselves read PostgreSQL too: the till's
    // batch reconciled (its three earns declared and stored), every point
    // explained by the till's approved decisions.
    let rec: serde_json::Value =
        serde_json::from_str(&tessera(&["office", "report", "reconciliation", "--dir", d, "--json"])).unwrap();
    let rows = rec["data"]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{rec}");
    assert_eq!(
        (rows[0]["terminal_id"].as_u64(), rows[0]["posted"].as_u64()),
        (Some(7), Some(3)),
        "{rec}"
    );
    assert_eq!(rows[0]["declared"], rows[0]["stored"], "{rec}");
    let explained: serde_json::Value =
        serde_json::from_str(&tessera(&["office", "report", "explained", "--dir", d, "--json"])).unwrap();
    assert_eq!(
        explained["data"]["points_outstanding"],
        i64::from(st.balance),
        "{explained}"
    );
    assert_eq!(explained["data"]["posted_points"], i64::from(st.balance), "{explained}");
    assert_eq!(explained["data"]["cards_off_books"], 0, "{explained}");
    assert_eq!(explained["data"]["matched_records"], 3, "{explained}");
    assert_eq!(explained["data"]["explained"], true, "{explained}");
    let exceptions = tessera(&["office", "report", "exceptions", "--dir", d, "--json"]);
    assert!(exceptions.contains("\"report\":\"exceptions\""), "{exceptions}");

    drop(office);
}

/// The script's office server and the cluster it started: stopped when
/// dropped, a failing test included.
struct ScriptOffice {
    child: std::process::Child,
    pg: PathBuf,
}

impl Drop for ScriptOffice {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("bash")
            .arg(tessera_ledger_pg::cluster::scripts_dir().join("pg-down.sh"))
            .args(["--dir", self.pg.to_str().unwrap()])
            .output();
    }
}

/// One HTTP/1.1 request: `head` (request line and headers, each ending
/// in CRLF) and `body`; the whole answer.
fn raw(base: &str, head: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://").trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{head}Host: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
}

/// A signed sync request, sent as it is: its status line and body.
fn raw_get(base: &str, path: &str) -> (u16, String) {
    let answer = raw(base, &format!("GET {path} HTTP/1.1\r\n"), "");
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

#[test]
fn a_signed_request_answered_by_one_server_is_refused_by_the_other() {
    let cluster = Cluster::start().unwrap();
    let o = office(cluster.url());
    let a = Server::start(&o.dir, &["--plain-http"], &[]);
    let b = Server::start(&o.dir, &["--plain-http"], &[]);
    let bundle = &o.bundles[0];
    let signed = |nonce: &[u8]| {
        let time = u32::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        )
        .unwrap();
        let mac = tessera_settlement::sync::request_mac(&bundle.batch_key, bundle.terminal_id, time, nonce);
        format!(
            "/v1/sync?terminal={}&nonce={}&time={time}&mac={}",
            bundle.terminal_id,
            hex::encode(nonce),
            hex::encode(mac)
        )
    };
    let request = signed(&[0x5A; 16]);
    let (status, _) = raw_get(&a.http(), &request);
    assert_eq!(status, 200, "the request itself is good");
    // The same bytes, replayed to the other server and to the first.
    let (status, body) = raw_get(&b.http(), &request);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("answered already"), "{body}");
    let (status, _) = raw_get(&a.http(), &request);
    assert_eq!(status, 401);
    // A new nonce is answered by either.
    assert_eq!(raw_get(&b.http(), &signed(&[0x5B; 16])).0, 200);
    let stored: i64 = tessera_ledger_pg::connect(cluster.url())
        .unwrap()
        .query_one("SELECT count(*) FROM request_nonces", &[])
        .unwrap()
        .get(0);
    assert_eq!(stored, 2, "one claim per request answered");
}

/// Online authorization through `office serve` on PostgreSQL: a
/// redemption above the till's cap, asked of one server, approved there,
/// in the shared books before any batch; a hotlisted card declined by the
/// other; the till's batch, settled through the other server, meets the
/// approval once.
#[test]
fn an_approval_taken_by_one_server_is_matched_when_the_batch_arrives_through_the_other() {
    use tessera_terminal::till::{OnlineSettings, WithoutAnswer};
    let cluster = Cluster::start().unwrap();
    let o = office(cluster.url());
    let a = Server::start(&o.dir, &["--plain-http"], &[]);
    let b = Server::start(&o.dir, &["--plain-http"], &[]);
    let (id, stolen_id) = (card_no(0, 0), card_no(0, 1));
    let mut pg = PgLedger::open_current(cluster.url(), LedgerKeys::from_issuer(&o.keys)).unwrap();
    pg.client()
        .unwrap()
        .execute(
            "INSERT INTO hotlist (card_id, reason, at) VALUES ($1, 'reported stolen', 0)",
            &[&&card_id(stolen_id)[..]],
        )
        .unwrap();
    // Both cards earned 50,000 points at a till the office has not heard from.
    let mut cards: Vec<SimCard> = [id, stolen_id]
        .iter()
        .map(|n| {
            let mut c = card(&o.keys, *n);
            let mut t = Terminal::new(SoftwareSam::new(o.keys.terminal_keys()), FixedClock(TEST_TIME), 99);
            t.tap(&mut c).unwrap().earn(50_000).unwrap();
            c
        })
        .collect();
    let work = tempfile::tempdir().unwrap();
    let terminal = Terminal::new(
        SoftwareSam::new(o.keys.terminal_keys()),
        FixedClock(TEST_TIME),
        till_id(0),
    )
    .with_store(1)
    .with_rng(Rng::seeded(5));
    let config = TillConfig {
        policy: Policy::default_policy(),
        hotlist: Hotlist::empty(),
        campaigns: CampaignSet::empty(),
        online: OnlineSettings {
            timeout: Duration::from_secs(5),
            without_answer: WithoutAnswer::Decline,
            ..OnlineSettings::default()
        },
    };
    let mut t = Till::new(
        terminal,
        Journal::open(&work.path().join("till.sqlite"), till_id(0)).unwrap(),
        config,
    )
    .unwrap();
    let mut redeem = |card: &mut SimCard, server: &Server| {
        let mut online = tessera_office::OfficeAuthorizer {
            base_url: server.http(),
            bundle: TerminalBundle::from_json(&o.bundles[0].to_json()).unwrap(),
        };
        card.insert().unwrap();
        let mut tap = t.tap(&mut *card).unwrap();
        tap.use_online(&mut online);
        // Above the till's redemption cap (10,000 at once).
        tap.redeem(12_000).unwrap()
    };
    let out = redeem(&mut cards[0], &a);
    let TillOutcome::Approved { receipt, .. } = out else {
        panic!("not approved online: {out:?}");
    };
    assert!(receipt.record.online);
    let out = redeem(&mut cards[1], &b);
    assert!(
        matches!(out, TillOutcome::Refused { ref decision, .. } if decision.code() == "D01"),
        "{out:?}"
    );
    let auths = pg.online_authorizations(card_id(id)).unwrap();
    assert_eq!(auths.len(), 1);
    assert_eq!((auths[0].state.as_str(), auths[0].code.as_str()), ("approved", "A00"));
    assert_eq!(pg.online_outstanding(card_id(id)).unwrap(), -12_000);
    assert_eq!(pg.online_authorizations(card_id(stolen_id)).unwrap()[0].code, "D01");

    let report = tessera_office::settle(
        t.journal_mut(),
        &o.bundles[0],
        &b.http(),
        &RetryPolicy::once(),
        TEST_TIME,
        |_| {},
    )
    .unwrap();
    assert!(report.settled_up_to > 0);
    let auths = pg.online_authorizations(card_id(id)).unwrap();
    assert_eq!(auths[0].state, "posted", "{auths:?}");
    assert_eq!(pg.online_outstanding(card_id(id)).unwrap(), 0);
    let book = pg.card(card_id(id)).unwrap().unwrap();
    assert_eq!(book.shadow_balance, i64::from(cards[0].state().unwrap().balance));
    assert_eq!(book.shadow_balance, 50_000 - 12_000);
    assert!(!pg
        .exceptions()
        .unwrap()
        .iter()
        .any(|e| e.class == tessera_ledger::ExceptionClass::OnlineUnmatched));
}
