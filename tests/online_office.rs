//! Online authorization end to end (card application v2.2): a till with
//! its card in the field asks `tessera office serve` — the real server, as
//! a process — over HTTP, relays the office's answer to the card, and
//! settles; the ledger holds the approval before the batch and matches the
//! batch's record to it once.
//!
//! * a redemption beyond the offline limits (the till's redemption cap and
//!   its offline velocity) is approved online and made;
//! * the same is declined for a card the office hotlisted after the till's
//!   last sync, and for more points than the card has (asked by a till that
//!   skips its own check);
//! * a refund whose original has left the card's log is approved online;
//! * an unreachable office (stopped, killed with SIGKILL while the till's
//!   request is in it, or hung without answering) is handled as the till's
//!   policy says — the referral stands, or it is declined — within the
//!   till's timeout, and the next tap is approved once;
//! * the card pulled between request and answer: nothing happens, and the
//!   office's approval lapses when the card's counter moves on;
//! * settlement posts each online record once and matches it to its
//!   approval; `office verify` passes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tessera_ledger::books::OfficeBooks;

use tessera_crypto::keys::{IssuerKeys, TerminalBundle};
use tessera_crypto::rng::Rng;
use tessera_ledger::{Ledger, LedgerKeys, NewCustomer};
use tessera_office::RetryPolicy;
use tessera_protocol::messages::TxKind;
use tessera_simulator::SimCard;
use tessera_suite::office::Server;
use tessera_suite::pcscd::tessera_bin;
use tessera_suite::{anna, card_id, TEST_TIME};
use tessera_terminal::issuer::{personalize, IssueParams};
use tessera_terminal::journal::{EntryKind, Journal};
use tessera_terminal::offers::CampaignSet;
use tessera_terminal::policy::{Decision, Hotlist, Policy};
use tessera_terminal::till::{OnlineSettings, Till, TillConfig, TillOutcome, WithoutAnswer};
use tessera_terminal::{FixedClock, SoftwareSam, Terminal};

const TILL: u32 = 7;

fn tessera_ok(args: &[&str]) {
    let out = Command::new(tessera_bin()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "tessera {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Office {
    _work: tempfile::TempDir,
    dir: PathBuf,
    keys: IssuerKeys,
    bundle: TerminalBundle,
}

/// An office with terminal [`TILL`] and the cards `cards` issued to a
/// customer (registered in its ledger).
fn office(cards: &[u32]) -> Office {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("office");
    tessera_ok(&["office", "init", "--dir", dir.to_str().unwrap()]);
    let keys = IssuerKeys::from_json(&std::fs::read_to_string(dir.join("issuer-keys.json")).unwrap()).unwrap();
    let out = work.path().join("bundle.json");
    tessera_ok(&[
        "office",
        "export-terminal",
        "--dir",
        dir.to_str().unwrap(),
        "--terminal-id",
        &TILL.to_string(),
        "--out",
        out.to_str().unwrap(),
        "--plain-http",
    ]);
    let bundle = TerminalBundle::from_json(&std::fs::read_to_string(out).unwrap()).unwrap();
    let mut ledger = open_ledger(&dir, &keys);
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
    for c in cards {
        ledger
            .register_card(card_id(*c), customer, keys.key_versions()[0], TEST_TIME)
            .unwrap();
    }
    drop(ledger);
    Office {
        _work: work,
        dir,
        keys,
        bundle,
    }
}

fn open_ledger(dir: &Path, keys: &IssuerKeys) -> Ledger {
    Ledger::open_existing(&dir.join("ledger.sqlite"), LedgerKeys::from_issuer(keys)).unwrap()
}

/// Card `n` issued with the office's keys and `points` earned at another
/// till (unsettled: the office has not seen them).
fn card(o: &Office, n: u32, points: u32) -> SimCard {
    let id = card_id(n);
    let mut card = SimCard::manufacture(id, &o.keys.card_perso_key(&id), Rng::seeded(u64::from(n))).unwrap();
    personalize(&mut card, &o.keys, anna(), &IssueParams::default()).unwrap();
    let mut t = Terminal::new(SoftwareSam::new(o.keys.terminal_keys()), FixedClock(TEST_TIME), 99);
    t.tap(&mut card).unwrap().earn(points).unwrap();
    card
}

fn till(o: &Office, journal: &Path, without_answer: WithoutAnswer) -> Till<SoftwareSam, FixedClock> {
    let terminal = Terminal::new(SoftwareSam::new(o.keys.terminal_keys()), FixedClock(TEST_TIME), TILL)
        .with_store(1)
        .with_rng(Rng::seeded(11));
    let config = TillConfig {
        policy: Policy::default_policy(),
        hotlist: Hotlist::empty(),
        campaigns: CampaignSet::empty(),
        online: OnlineSettings {
            timeout: Duration::from_secs(3),
            without_answer,
            ..OnlineSettings::default()
        },
    };
    Till::new(terminal, Journal::open(journal, TILL).unwrap(), config).unwrap()
}

/// The office at `url` for the till's taps.
fn authorizer(o: &Office, url: &str) -> tessera_office::OfficeAuthorizer {
    tessera_office::OfficeAuthorizer {
        base_url: url.to_owned(),
        bundle: TerminalBundle::from_json(&o.bundle.to_json()).unwrap(),
    }
}

/// Redeems `points` at the till, online through `url`.
fn redeem_online(
    t: &mut Till<SoftwareSam, FixedClock>,
    card: &mut SimCard,
    o: &Office,
    url: &str,
    points: u32,
) -> TillOutcome {
    let mut online = authorizer(o, url);
    card.insert().unwrap();
    let mut tap = t.tap(&mut *card).unwrap();
    tap.use_online(&mut online);
    tap.redeem(points).unwrap()
}

fn settle(t: &mut Till<SoftwareSam, FixedClock>, o: &Office, url: &str) {
    let report =
        tessera_office::settle(t.journal_mut(), &o.bundle, url, &RetryPolicy::once(), TEST_TIME, |_| {}).unwrap();
    assert!(report.settled_up_to > 0);
}

fn verify(o: &Office) {
    let out = Command::new(tessera_bin())
        .args(["office", "verify", "--dir", o.dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn beyond_the_offline_limits_approved_online_visible_before_the_batch_and_matched_once() {
    let o = office(&[701]);
    let mut card = card(&o, 701, 50_000);
    let server = Server::start(&o.dir, &["--plain-http"], &[]);
    let work = tempfile::tempdir().unwrap();
    let mut t = till(&o, &work.path().join("till.sqlite"), WithoutAnswer::Refer);
    // Above the till's redemption cap (10,000 at once: D07 offline).
    let TillOutcome::Approved { receipt, .. } = redeem_online(&mut t, &mut card, &o, &server.http(), 12_000) else {
        panic!("not approved online");
    };
    assert!(receipt.record.online);
    assert_eq!((receipt.record.amount, receipt.record.balance_after), (12_000, 38_000));
    // Four more small redemptions reach the offline velocity limit of five
    // (R01 at the sixth): online.
    for _ in 0..4 {
        let out = redeem_online(&mut t, &mut card, &o, &server.http(), 10);
        assert!(
            matches!(out, TillOutcome::Approved { ref receipt, .. } if !receipt.record.online),
            "{out:?}"
        );
    }
    let TillOutcome::Approved { receipt, .. } = redeem_online(&mut t, &mut card, &o, &server.http(), 10) else {
        panic!("the velocity referral was not approved online");
    };
    assert!(receipt.record.online);
    // The decisions carry the request's cryptogram; the records the online mark.
    let online: Vec<_> = t
        .journal()
        .records()
        .unwrap()
        .into_iter()
        .filter(|r| r.entry.kind == EntryKind::Decision && r.entry.authorization.is_some())
        .collect();
    assert_eq!(online.len(), 2);
    drop(server);

    // The ledger holds both approvals before any batch: -12,010 points to come.
    let ledger = open_ledger(&o.dir, &o.keys);
    let auths = ledger.online_authorizations(card_id(701)).unwrap();
    assert_eq!(auths.len(), 2);
    assert!(auths.iter().all(|a| a.state == "approved" && a.code == "A00"));
    assert_eq!(ledger.online_outstanding(card_id(701)).unwrap(), -12_010);
    drop(ledger);

    // Settlement: the records post once and meet their approvals — the
    // last one also as another till's recovered copy (it journals the
    // card's last record at its tap), a duplicate, not a clone.
    let server = Server::start(&o.dir, &["--plain-http"], &[]);
    settle(&mut t, &o, &server.http());
    let other = {
        let terminal =
            Terminal::new(SoftwareSam::new(o.keys.terminal_keys()), FixedClock(TEST_TIME), 8).with_rng(Rng::seeded(12));
        let config = TillConfig {
            policy: Policy::default_policy(),
            hotlist: Hotlist::empty(),
            campaigns: CampaignSet::empty(),
            online: OnlineSettings::default(),
        };
        let mut t8 = Till::new(
            terminal,
            Journal::open(&work.path().join("till8.sqlite"), 8).unwrap(),
            config,
        )
        .unwrap();
        card.insert().unwrap();
        let tap = t8.tap(&mut card).unwrap();
        assert_eq!(tap.recovered.len(), 1);
        assert!(tap.recovered[0].entry.online);
        drop(tap);
        t8
    };
    let mut other = other;
    let bundle8 = {
        let out = o.dir.with_file_name("bundle8.json");
        tessera_ok(&[
            "office",
            "export-terminal",
            "--dir",
            o.dir.to_str().unwrap(),
            "--terminal-id",
            "8",
            "--out",
            out.to_str().unwrap(),
            "--plain-http",
        ]);
        TerminalBundle::from_json(&std::fs::read_to_string(out).unwrap()).unwrap()
    };
    let report = tessera_office::settle(
        other.journal_mut(),
        &bundle8,
        &server.http(),
        &RetryPolicy::once(),
        TEST_TIME,
        |_| {},
    )
    .unwrap();
    assert!(report.settled_up_to > 0);
    drop(server);
    let ledger = open_ledger(&o.dir, &o.keys);
    let auths = ledger.online_authorizations(card_id(701)).unwrap();
    assert!(auths.iter().all(|a| a.state == "posted"), "{auths:?}");
    assert_eq!(ledger.online_outstanding(card_id(701)).unwrap(), 0);
    let book = ledger.card(card_id(701)).unwrap().unwrap();
    // Every transaction once (the earn at till 99 came as the till's
    // recovered copy): the books' balance is the card's.
    assert_eq!((book.pending, book.last_counter), (0, 7));
    assert_eq!(book.shadow_balance, i64::from(card.state().unwrap().balance));
    assert_eq!(book.shadow_balance, 50_000 - 12_000 - 40 - 10);
    // The one exception is the setup's: the first earn was made at a till
    // the office never registered. No conflict, no unmatched online record.
    let exceptions = ledger.exceptions().unwrap();
    assert_eq!(exceptions.len(), 1, "{exceptions:?}");
    assert_eq!(exceptions[0].class, tessera_ledger::ExceptionClass::Orphan);
    assert_eq!(exceptions[0].evidence["origin_terminal"], 99);
    drop(ledger);
    verify(&o);
}

#[test]
fn declined_online_for_a_hotlisted_card_and_for_more_points_than_the_card_has() {
    let o = office(&[702, 703]);
    let mut ledger = open_ledger(&o.dir, &o.keys);
    ledger.hotlist_card(card_id(702), "reported stolen", TEST_TIME).unwrap();
    drop(ledger);
    let mut stolen = card(&o, 702, 50_000);
    let server = Server::start(&o.dir, &["--plain-http"], &[]);
    let work = tempfile::tempdir().unwrap();
    let mut t = till(&o, &work.path().join("till.sqlite"), WithoutAnswer::Refer);
    // The till's own hotlist does not have it yet: the office's does.
    let before = stolen.state().unwrap();
    let out = redeem_online(&mut t, &mut stolen, &o, &server.http(), 12_000);
    let TillOutcome::Refused { decision, .. } = out else {
        panic!("approved a hotlisted card: {out:?}");
    };
    assert_eq!(decision.code(), "D01");
    assert!(matches!(decision, Decision::Decline(_)));
    assert_eq!(stolen.state().unwrap().balance, before.balance, "the card did nothing");

    // A till that skips its own balance check asks for more than the card
    // has: the office declines (D08) on the card's certified balance.
    let mut poor = card(&o, 703, 100);
    poor.insert().unwrap();
    let mut term = Terminal::new(SoftwareSam::new(o.keys.terminal_keys()), FixedClock(TEST_TIME), TILL);
    let mut s = term.tap(&mut poor).unwrap();
    let request = s.request_authorization(TxKind::Redeem, 500, 0).unwrap();
    let a = tessera_office::authorize(
        &server.http(),
        &o.bundle,
        &card_id(703),
        s.card().key_version,
        &request,
        Duration::from_secs(3),
    )
    .unwrap();
    assert_eq!((a.code.as_str(), a.response.approved), ("D08", false));
    // A request replayed to the office gets the same decision, not a new one.
    let again = tessera_office::authorize(
        &server.http(),
        &o.bundle,
        &card_id(703),
        s.card().key_version,
        &request,
        Duration::from_secs(3),
    )
    .unwrap();
    assert_eq!(again, a);
    // A request altered on the way (another amount) does not verify: O02.
    let mut altered = request.clone();
    altered.amount = 50;
    let forged = tessera_office::authorize(
        &server.http(),
        &o.bundle,
        &card_id(703),
        s.card().key_version,
        &altered,
        Duration::from_secs(3),
    )
    .unwrap();
    assert_eq!(forged.code, "O02");
    drop(s);
    drop(server);
    let ledger = open_ledger(&o.dir, &o.keys);
    // One decision kept: the replay was answered from it, the altered
    // request not kept at all.
    let kept = ledger.online_authorizations(card_id(703)).unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(
        (kept[0].code.as_str(), kept[0].state.as_str(), kept[0].amount),
        ("D08", "declined", 500)
    );
    let hot = ledger.online_authorizations(card_id(702)).unwrap();
    assert_eq!((hot.len(), hot[0].code.as_str()), (1, "D01"));
}

#[test]
fn a_refund_whose_original_left_the_log_is_approved_online_once() {
    let o = office(&[704]);
    let mut card = card(&o, 704, 1_000);
    let server = Server::start(&o.dir, &["--plain-http"], &[]);
    let work = tempfile::tempdir().unwrap();
    let mut t = till(&o, &work.path().join("till.sqlite"), WithoutAnswer::Refer);
    let TillOutcome::Approved { receipt, .. } = redeem_online(&mut t, &mut card, &o, &server.http(), 300) else {
        panic!()
    };
    let original = receipt.record.counter;
    for _ in 0..8 {
        card.insert().unwrap();
        let mut tap = t.tap(&mut card).unwrap();
        tap.purchase(1_000, &[]).unwrap();
    }
    // The office must hold the original to refund it: settle first.
    settle(&mut t, &o, &server.http());
    let refund = |t: &mut Till<SoftwareSam, FixedClock>, card: &mut SimCard| {
        let mut online = authorizer(&o, &server.http());
        card.insert().unwrap();
        let mut tap = t.tap(&mut *card).unwrap();
        tap.use_online(&mut online);
        tap.refund(original).unwrap()
    };
    let out = refund(&mut t, &mut card);
    let TillOutcome::Approved { receipt, .. } = out else {
        panic!("refund outside the log not approved online: {out:?}");
    };
    assert_eq!(
        (receipt.record.kind, receipt.record.reference, receipt.record.online),
        (TxKind::RefundRedeem, original, true)
    );
    // Once only: the till's journal knows it is refunded (D09) before
    // anyone is asked.
    let TillOutcome::Refused { decision, .. } = refund(&mut t, &mut card) else {
        panic!()
    };
    assert_eq!(decision.code(), "D09");
    settle(&mut t, &o, &server.http());
    drop(server);
    verify(&o);
}

#[test]
fn an_unreachable_office_is_handled_as_the_policy_says_and_a_pulled_card_does_nothing() {
    let o = office(&[705]);
    let mut card = card(&o, 705, 50_000);
    let work = tempfile::tempdir().unwrap();
    // Nobody listens: the referral stands (the clerk may call for a voice
    // code), or, by policy, it is declined (O09). The card did nothing.
    let gone = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let mut t = till(&o, &work.path().join("refer.sqlite"), WithoutAnswer::Refer);
    let TillOutcome::Refused { decision, .. } = redeem_online(&mut t, &mut card, &o, &gone, 12_000) else {
        panic!()
    };
    assert_eq!(
        decision.code(),
        "D07",
        "declined offline above the cap: the offline decision stands"
    );
    let mut t = till(&o, &work.path().join("decline.sqlite"), WithoutAnswer::Decline);
    let TillOutcome::Refused { decision, .. } = redeem_online(&mut t, &mut card, &o, &gone, 12_000) else {
        panic!()
    };
    assert_eq!(decision.code(), "O09");
    assert_eq!(card.state().unwrap().balance, 50_000);

    // The office killed while the till waits: no answer, nothing done.
    let server = Server::start(&o.dir, &["--plain-http"], &[]);
    let url = server.http();
    drop(server);
    let TillOutcome::Refused { decision, .. } = redeem_online(&mut t, &mut card, &o, &url, 12_000) else {
        panic!()
    };
    assert_eq!(decision.code(), "O09");

    // The card pulled between the request and the answer: the office
    // approved, the card never sees the answer; at the next tap the answer
    // is worthless (the card forgot the request) and the approval lapses
    // once the card's counter moves on.
    let server = Server::start(&o.dir, &["--plain-http"], &[]);
    let (request, answer) = {
        card.insert().unwrap();
        let mut term = Terminal::new(SoftwareSam::new(o.keys.terminal_keys()), FixedClock(TEST_TIME), TILL);
        let mut s = term.tap(&mut card).unwrap();
        let request = s.request_authorization(TxKind::Redeem, 12_000, 0).unwrap();
        let kv = s.card().key_version;
        drop(s);
        card.remove();
        let a = tessera_office::authorize(
            &server.http(),
            &o.bundle,
            &card_id(705),
            kv,
            &request,
            Duration::from_secs(3),
        )
        .unwrap();
        (request, a)
    };
    assert!(answer.response.approved);
    card.insert().unwrap();
    let mut term = Terminal::new(SoftwareSam::new(o.keys.terminal_keys()), FixedClock(TEST_TIME), TILL);
    let mut s = term.tap(&mut card).unwrap();
    assert!(s.transact_authorized(&request, &answer.response).is_err());
    drop(s);
    assert_eq!(card.state().unwrap().balance, 50_000);
    // The next operation of the card (its record settled) lapses the approval.
    let mut t = till(&o, &work.path().join("after.sqlite"), WithoutAnswer::Refer);
    card.insert().unwrap();
    t.tap(&mut card).unwrap().purchase(1_000, &[]).unwrap();
    settle(&mut t, &o, &server.http());
    drop(server);
    let ledger = open_ledger(&o.dir, &o.keys);
    let states: Vec<String> = ledger
        .online_authorizations(card_id(705))
        .unwrap()
        .into_iter()
        .map(|a| a.state)
        .collect();
    assert_eq!(states, ["lapsed"], "the card gave the counter to the purchase");
}

/// Reads one HTTP request (head and `Content-Length` body) from `s`.
fn read_request(s: &mut std::net::TcpStream) -> Vec<u8> {
    use std::io::Read;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).unwrap() == 0 {
            return buf;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    buf.extend(body);
    buf
}

#[test]
fn the_office_killed_mid_request_or_hung_leaves_nothing_done_and_the_next_tap_works() {
    use std::io::Write;
    let o = office(&[706]);
    let mut card = card(&o, 706, 50_000);
    let work = tempfile::tempdir().unwrap();
    let mut t = till(&o, &work.path().join("till.sqlite"), WithoutAnswer::Decline);

    // Killed: a relay in front of the office forwards the till's request,
    // then the office is killed (SIGKILL) before it can answer.
    let server = Server::start(&o.dir, &["--plain-http"], &[]);
    let upstream = server.addr.clone();
    let relay = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let relay_url = format!("http://{}", relay.local_addr().unwrap());
    let killer = std::thread::spawn(move || {
        let (mut c, _) = relay.accept().unwrap();
        let request = read_request(&mut c);
        let mut up = std::net::TcpStream::connect(&upstream).unwrap();
        up.write_all(&request).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        drop(server);
        drop(c);
        drop(relay);
    });
    let TillOutcome::Refused { decision, .. } = redeem_online(&mut t, &mut card, &o, &relay_url, 12_000) else {
        panic!()
    };
    killer.join().unwrap();
    assert_eq!(decision.code(), "O09");
    assert_eq!(card.state().unwrap().balance, 50_000, "the card did nothing");

    // Hung: an office that takes the connection and never answers; the till
    // waits its timeout (3 s here), no longer.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hung_url = format!("http://{}", hung.local_addr().unwrap());
    let holder = std::thread::spawn(move || {
        let mut held = Vec::new();
        hung.set_nonblocking(true).unwrap();
        let until = std::time::Instant::now() + Duration::from_secs(8);
        while std::time::Instant::now() < until {
            if let Ok((c, _)) = hung.accept() {
                held.push(c);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let started = std::time::Instant::now();
    let TillOutcome::Refused { decision, .. } = redeem_online(&mut t, &mut card, &o, &hung_url, 12_000) else {
        panic!()
    };
    let waited = started.elapsed();
    assert_eq!(decision.code(), "O09");
    assert!(waited < Duration::from_secs(7), "waited {waited:?}");
    holder.join().unwrap();

    // The office back: the next tap asks again and is approved once; the
    // approval the killed office may have recorded lapses, never doubles.
    let server = Server::start(&o.dir, &["--plain-http"], &[]);
    let TillOutcome::Approved { receipt, .. } = redeem_online(&mut t, &mut card, &o, &server.http(), 12_000) else {
        panic!()
    };
    assert_eq!((receipt.record.balance_after, receipt.record.online), (38_000, true));
    settle(&mut t, &o, &server.http());
    drop(server);
    let ledger = open_ledger(&o.dir, &o.keys);
    let states: Vec<String> = ledger
        .online_authorizations(card_id(706))
        .unwrap()
        .into_iter()
        .map(|a| a.state)
        .collect();
    assert_eq!(states.iter().filter(|s| *s == "posted").count(), 1, "{states:?}");
    assert!(states.iter().all(|s| s == "posted" || s == "lapsed"), "{states:?}");
    assert_eq!(ledger.online_outstanding(card_id(706)).unwrap(), 0);
    assert_eq!(ledger.card(card_id(706)).unwrap().unwrap().shadow_balance, 38_000);
}
