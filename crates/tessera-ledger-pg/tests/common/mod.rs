//! What the tests that move books from SQLite to PostgreSQL share.

#![allow(clippy::unwrap_used, dead_code)]

use std::path::Path;

use tessera_crypto::cert::certificate;
use tessera_crypto::keys::IssuerKeys;
use tessera_ledger::Ledger;
use tessera_ledger_pg::cluster::Cluster;
use tessera_protocol::messages::{LogRecord, TxKind};
use tessera_terminal::batch::write_range;
use tessera_terminal::journal::{Entry, EntryKind, Journal};

/// A record to certify: counter, kind, points, balance after, reference.
pub type Spec = (u32, TxKind, u32, u32, u32);

/// A record of `card` made at `till` at time `now`, certified with the
/// card's key (as the card would), marked online or not.
pub fn certified(keys: &IssuerKeys, card: [u8; 8], till: u32, now: u32, r: Spec, online: bool) -> LogRecord {
    let (counter, kind, amount, balance_after, reference) = r;
    let mut rec = LogRecord {
        counter,
        kind,
        amount,
        balance_after,
        terminal_id: till,
        terminal_seq: 1_000 + counter,
        time: now,
        reference,
        online,
        certificate: [0; 16],
    };
    rec.certificate = certificate(&keys.card_cert_key(&card), &card, &rec);
    rec
}

/// Registers terminal `till`, one customer and `cards` of theirs (key
/// version 1) in the SQLite ledger.
pub fn issue(sqlite: &mut Ledger, till: u32, cards: &[[u8; 8]], now: u32) {
    sqlite.register_terminal(till, now).unwrap();
    let customer = sqlite
        .register_customer(&tessera_ledger::NewCustomer {
            name: "Test Customer".into(),
            birth_date: tessera_protocol::profile::Date::new(1990, 1, 2).unwrap(),
            home_city: "Lyon".into(),
            household: [0; 8],
            preferences: vec![],
            tier: 0,
        })
        .unwrap();
    for id in cards {
        sqlite.register_card(*id, customer, 1, now).unwrap();
    }
}

/// A private cluster holding a copy of the SQLite ledger at `path` (as
/// `office migrate` makes it).
pub fn moved(path: &Path) -> Cluster {
    let cluster = Cluster::start().unwrap();
    let mut client = tessera_ledger_pg::connect(cluster.url()).unwrap();
    tessera_ledger_pg::copy::copy_ledger(path, &mut client).unwrap();
    cluster
}

/// A sealed batch of `journal`'s till carrying `recs` as recovered
/// records, journaled at `now` and acknowledged.
pub fn seal(keys: &IssuerKeys, journal: &mut Journal, now: u32, recs: &[([u8; 8], LogRecord)]) -> Vec<u8> {
    for (id, rec) in recs {
        journal
            .append(Entry::from_card_record(EntryKind::Recovered, now, id, rec))
            .unwrap();
    }
    let range = journal.seal_next(now).unwrap().unwrap();
    let mut batch = Vec::new();
    write_range(
        journal,
        &keys.terminal_batch_key(journal.terminal_id()),
        &range,
        &mut batch,
    )
    .unwrap();
    journal.acknowledge(range.batch_no, &range.head, now).unwrap();
    batch
}
