//! Settlement against a local office: a back office serves its ledger over
//! HTTPS (in this process, on a free loopback port); a till serves a
//! customer, settles its journal with one call, fetches the office's news
//! with another, and the ledger's books agree with the card.
//!
//! ```text
//! cargo run --example settle_with_office
//! ```
//!
//! Runs on the published TEST keys: training only, never for real cards.

use std::error::Error;

use tessera_client::{settle, status_name, sync, RetryPolicy};
use tessera_crypto::keys::{IssuerKeys, OfficeLink};
use tessera_crypto::rng::Rng;
use tessera_ledger::{Ledger, LedgerKeys, NewCustomer};
use tessera_office::{OfficeIdentity, ServerConfig, Transport};
use tessera_protocol::profile::{Date, Profile};
use tessera_simulator::SimCard;
use tessera_terminal::dir::TerminalDir;
use tessera_terminal::issuer::{personalize, IssueParams};
use tessera_terminal::station::{DirTill, Operation};
use tessera_terminal::{SoftwareSam, SystemClock};

const TERMINAL: u32 = 42;

fn now() -> Result<u32, Box<dyn Error>> {
    Ok(u32::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs(),
    )?)
}

fn main() -> Result<(), Box<dyn Error>> {
    let tmp = tempfile::tempdir()?;
    let keys = IssuerKeys::test()?;

    // The office: a ledger that knows the customer, the card and the till.
    let card_id = *b"\x7E\x57\x00\x00\x00\x00\x00\x02";
    let profile = Profile {
        card_id,
        version: 1,
        name: "Grace Hopper".into(),
        birth_date: Date::new(1986, 12, 9)?,
        home_city: "Arlington".into(),
        household: [0; 8],
        preferences: vec![],
        tier: 0,
        valid_from: Date::new(2026, 1, 1)?,
        valid_until: Date::new(2035, 12, 31)?,
    };
    let ledger_path = tmp.path().join("ledger.sqlite");
    let mut ledger = Ledger::open(&ledger_path, LedgerKeys::from_issuer(&keys))?;
    let customer = ledger.register_customer(&NewCustomer {
        name: profile.name.clone(),
        birth_date: profile.birth_date,
        home_city: profile.home_city.clone(),
        household: profile.household,
        preferences: vec![],
        tier: profile.tier,
    })?;
    ledger.register_card(card_id, customer, 1, now()?)?;
    ledger.register_terminal(TERMINAL, now()?)?;

    let identity = OfficeIdentity::generate(&[])?;
    let pin = identity.cert_sha256();
    let mut config = ServerConfig::new(Transport::Tls(identity.server_config()?));
    config.request_log = false;
    let office = tessera_office::spawn(ledger, IssuerKeys::test()?, "127.0.0.1:0".parse()?, config)?;
    let url = format!("https://{}", office.addr());
    println!("Office listening on {url}");

    // The till's bundle pins the office's certificate.
    let bundle = keys.terminal_bundle(TERMINAL, OfficeLink::Pinned { cert_sha256: pin });

    let mut card = SimCard::manufacture(card_id, &keys.card_perso_key(&card_id), Rng::Os)?;
    personalize(&mut card, &keys, profile, &IssueParams::default())?;

    let dir = TerminalDir::new(tmp.path().join("till"));
    let issuer = bundle.keys.issuer_public.clone();
    let mut till = DirTill::open(
        dir.clone(),
        SoftwareSam::new(keys.terminal_keys()), // the bundle's keys
        &issuer,
        SystemClock,
        TERMINAL,
        Some(TERMINAL),
        1,
    )?;
    for amount_minor in [1250, 830] {
        till.operate(
            &mut card,
            Operation::Purchase {
                amount_minor,
                categories: vec![],
            },
            false,
        )?;
    }
    till.operate(&mut card, Operation::Redeem { points: 10 }, false)?;
    let balance = till.operate(&mut card, Operation::Read, false)?.card.balance;
    println!("Card balance after the day: {balance} points");
    drop(till);

    // Settle: one call seals, uploads, checks the acknowledgement, marks settled.
    let mut journal = dir.open_journal(TERMINAL, Some(TERMINAL))?;
    let report = settle(&mut journal, &bundle, &url, &RetryPolicy::default(), now()?, |e| {
        println!("  {e:?}")
    })?;
    for ack in &report.acks {
        println!("Batch {} acknowledged: {}", ack.batch_no, status_name(ack.status));
    }
    println!("Settled up to record {} of {}", report.settled_up_to, report.records);
    if report.settled_up_to != report.records {
        return Err("not everything was settled".into());
    }
    drop(journal);

    // Sync: the office's hotlist, campaigns and issuer decisions, checked and written.
    let news = sync(&dir, &bundle, &url, &RetryPolicy::default())?;
    println!(
        "Synced: hotlist v{} ({} cards), {} settled cards, acknowledged {}",
        news.hotlist_version, news.hotlist_cards, news.settled_cards, news.acknowledged
    );

    // The office's books agree with the card.
    office.stop()?;
    let ledger = Ledger::open_existing(&ledger_path, LedgerKeys::from_issuer(&keys))?;
    let book = ledger.card(card_id)?.ok_or("the ledger does not know the card")?;
    println!(
        "Ledger: card balance {} (shadow {}), discrepancy {}",
        book.card_balance, book.shadow_balance, book.discrepancy
    );
    if book.card_balance != i64::from(balance) || book.discrepancy != 0 {
        return Err("the ledger disagrees with the card".into());
    }
    Ok(())
}
