//! The added time of an online authorization (card application 2.2) over
//! loopback HTTPS, against the offline path, in the same run.
//!
//! One till, one simulated card in process, the office's server on
//! loopback (`tessera_office::spawn`, a fresh self-signed certificate the
//! till's bundle pins; its ledger in a temporary directory). The till makes
//! purchases, alternating: **offline** (the till decides alone) and
//! **online** (`OnlineMode::Always`: the card's AUTHORIZATION REQUEST, the
//! office's decision over HTTPS with a new TLS connection each time, the
//! answer relayed to the card in the EARN). Each operation is timed from
//! the tap (SELECT) to the journaled completion. Prints median and p99 of
//! both and their difference.
//!
//! `cargo bench --bench online` runs 300 of each. Without `--bench` (as
//! `cargo test --all-targets` runs it) it does 3 of each, to prove it
//! still works.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use tessera_crypto::keys::{IssuerKeys, OfficeLink};
use tessera_crypto::rng::Rng;
use tessera_ledger::{Ledger, LedgerKeys, NewCustomer, OnlinePolicy};
use tessera_office::{OfficeIdentity, ServerConfig, Transport};
use tessera_simulator::SimCard;
use tessera_suite::{anna, card_id, TEST_TIME};
use tessera_terminal::issuer::{personalize, IssueParams};
use tessera_terminal::journal::Journal;
use tessera_terminal::offers::CampaignSet;
use tessera_terminal::policy::{Hotlist, Policy};
use tessera_terminal::till::{OnlineMode, OnlineSettings, Till, TillConfig, TillOutcome};
use tessera_terminal::{FixedClock, SoftwareSam, Terminal};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let n = if std::env::args().any(|a| a == "--bench") {
        300
    } else {
        3
    };
    let keys = IssuerKeys::test().unwrap();
    let work = tempfile::tempdir().unwrap();
    let ledger_path = work.path().join("ledger.sqlite");
    let id = card_id(880);
    {
        let mut ledger = Ledger::open(&ledger_path, LedgerKeys::from_issuer(&keys)).unwrap();
        ledger.register_terminal(7, TEST_TIME).unwrap();
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
        ledger.register_card(id, customer, 1, TEST_TIME).unwrap();
    }
    let identity = OfficeIdentity::generate(&[]).unwrap();
    let pin = identity.cert_sha256();
    let mut config = ServerConfig::new(Transport::Tls(identity.server_config().unwrap()));
    config.request_log = false;
    config.online_policy = OnlinePolicy {
        max_operations_per_day: u32::MAX,
        max_debit_points_per_day: u64::MAX,
    };
    let server = tessera_office::spawn(
        Ledger::open(&ledger_path, LedgerKeys::from_issuer(&keys)).unwrap(),
        IssuerKeys::test().unwrap(),
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        config,
    )
    .unwrap();
    let url = format!("https://{}", server.addr());

    let mut card = SimCard::manufacture(id, &keys.card_perso_key(&id), Rng::seeded(880)).unwrap();
    personalize(&mut card, &keys, anna(), &IssueParams::default()).unwrap();
    let till_of = |online: bool, journal: &std::path::Path| {
        let terminal = Terminal::new(SoftwareSam::new(keys.terminal_keys()), FixedClock(TEST_TIME), 7)
            .with_store(1)
            .with_rng(Rng::seeded(3));
        let config = TillConfig {
            policy: Policy::default_policy(),
            hotlist: Hotlist::empty(),
            campaigns: CampaignSet::empty(),
            online: OnlineSettings {
                mode: if online {
                    OnlineMode::Always
                } else {
                    OnlineMode::Referred
                },
                timeout: Duration::from_secs(10),
                ..OnlineSettings::default()
            },
        };
        Till::new(terminal, Journal::open(journal, 7).unwrap(), config).unwrap()
    };
    let journal = work.path().join("till.sqlite");
    let mut authorizer = tessera_office::OfficeAuthorizer {
        base_url: url.clone(),
        bundle: keys.terminal_bundle(7, OfficeLink::Pinned { cert_sha256: pin }),
    };
    let (mut offline, mut online) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..2 * n {
        let go_online = i % 2 == 1;
        // One till per mode over the same journal file: a fresh open is not
        // timed (the journal is reopened by each till in turn).
        let mut till = till_of(go_online, &journal);
        card.insert().unwrap();
        let start = Instant::now();
        let mut tap = till.tap(&mut card).unwrap();
        if go_online {
            tap.use_online(&mut authorizer);
        }
        let out = tap.purchase(1_000, &[]).unwrap();
        let took = start.elapsed();
        let TillOutcome::Approved { receipt, .. } = out else {
            panic!("not approved: {out:?}");
        };
        assert_eq!(receipt.record.online, go_online);
        if go_online {
            online.push(took);
        } else {
            offline.push(took);
        }
    }
    server.stop().unwrap();
    offline.sort();
    online.sort();
    let (om, op) = (percentile(&offline, 0.5), percentile(&offline, 0.99));
    let (nm, np) = (percentile(&online, 0.5), percentile(&online, 0.99));
    println!("online authorization over loopback HTTPS ({n} purchases each way, alternating, one new TLS connection per request):");
    println!("| path | median | p99 |");
    println!("|---|---|---|");
    println!(
        "| offline (tap to journaled completion) | {:.2} ms | {:.2} ms |",
        ms(om),
        ms(op)
    );
    println!(
        "| online (AUTHORIZATION REQUEST, POST /v1/authorize, EARN with DF0B) | {:.2} ms | {:.2} ms |",
        ms(nm),
        ms(np)
    );
    println!(
        "| added by going online | {:.2} ms | {:.2} ms |",
        ms(nm) - ms(om),
        ms(np) - ms(op)
    );
}
