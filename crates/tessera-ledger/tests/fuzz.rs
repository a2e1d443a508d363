//! Arbitrary bytes into `ingest` never panic, and a damaged batch never
//! posts partially.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use proptest::prelude::*;
use tessera_ledger::Ledger;
use tessera_protocol::messages::TxKind;
use tessera_terminal::journal::EntryKind;

fn books(l: &Ledger) -> String {
    format!("{:?}{:?}", l.settled_counters().unwrap(), l.liability(1).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let shop = Shop::new();
        let mut ledger = shop.ledger();
        ledger.register_terminal(1, T0).unwrap();
        let _ = ledger.ingest(&bytes[..], T0);
        prop_assert!(ledger.settled_counters().unwrap().is_empty());
    }

    #[test]
    fn a_damaged_batch_posts_all_or_nothing(pos in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<bool>()) {
        let shop = Shop::new();
        let entries = (0..6).map(|i| certified(EntryKind::Completion, i % 2, i / 2 + 1, TxKind::Earn, 10, 10 * (i / 2 + 1), 1, i + 1, T0)).collect();
        let batch = journal_batch(&shop.journal_path(1), 1, entries, T0);
        let mut damaged = batch.clone();
        let at = pos.index(batch.len());
        if cut { damaged.truncate(at) } else { damaged[at] = byte }
        let mut ledger = shop.ledger();
        ledger.register_terminal(1, T0).unwrap();
        let empty = books(&ledger);
        match ledger.ingest(&damaged[..], T0) {
            Ok(out) => prop_assert_eq!(out.report.posted, 6),
            Err(_) => prop_assert_eq!(books(&ledger), empty),
        }
    }
}
