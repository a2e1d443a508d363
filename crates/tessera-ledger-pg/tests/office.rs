//! The office's commands on PostgreSQL, where several servers and office
//! commands write the same books at once: two connections queueing
//! unblocks for one card at once take one issuer sequence each, in turn
//! (the card's row locked first), and none fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Barrier};

use tessera_crypto::keys::IssuerKeys;
use tessera_ledger::books::OfficeBooks;
use tessera_ledger::{Ledger, LedgerKeys, LedgerStore};
use tessera_ledger_pg::posting::PgLedger;

mod common;

const NOW: u32 = 1_790_000_000;

#[test]
fn unblocks_queued_at_once_by_two_connections_take_one_sequence_each() {
    let card = [0x0B, 0x10, 0xC4, 0, 0, 0, 0, 1];
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("ledger.sqlite");
    let keys = IssuerKeys::test().unwrap();
    let mut sqlite = Ledger::open(&path, LedgerKeys::from_issuer(&keys)).unwrap();
    common::issue(&mut sqlite, 5, &[card], NOW);
    drop(sqlite);
    let cluster = common::moved(&path);
    let barrier = Arc::new(Barrier::new(2));
    let offices: Vec<_> = (0..2)
        .map(|_| {
            let (url, barrier) = (cluster.url().to_owned(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                let keys = IssuerKeys::test().unwrap();
                let mut pg = PgLedger::open_current(&url, LedgerKeys::from_issuer(&keys)).unwrap();
                barrier.wait();
                (0..15)
                    .map(|_| pg.queue_unblock(card, NOW).unwrap())
                    .collect::<Vec<u32>>()
            })
        })
        .collect();
    let mut seqs: Vec<u32> = offices.into_iter().flat_map(|t| t.join().unwrap()).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=30).collect::<Vec<u32>>());
    let pg = PgLedger::open_current(cluster.url(), LedgerKeys::from_issuer(&keys)).unwrap();
    assert_eq!(pg.unblocks().unwrap(), vec![(card, 30)]);
}
