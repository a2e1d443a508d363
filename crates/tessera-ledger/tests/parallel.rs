//! `Ledger::ingest_send` (reading on a second thread) gives exactly what
//! `Ledger::ingest` gives, refuses the same way, and writes nothing when it
//! refuses — with batches long enough to fill the channel between the
//! threads.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufReader, Read};
use tessera_rules::display::Zone;

use common::*;
use tessera_crypto::cert::certificate;
use tessera_crypto::kdf::{diversify, labels};
use tessera_crypto::Key;
use tessera_ledger::{Ledger, LedgerError, LedgerKeys, NewCustomer};
use tessera_protocol::messages::{LogRecord, TxKind};
use tessera_protocol::profile::Date;
use tessera_terminal::batch::AckStatus;
use tessera_terminal::journal::{Entry, EntryKind};

const TERMINAL: u32 = 61;
const CARDS: u32 = 7;
const RECORDS: u32 = 3_000;
/// A card of key version 2 (registered so): its certificates do not
/// verify under the key version the reading thread checks ahead with.
const V2_CARD: u32 = 100;

fn master_v2() -> Key {
    Key::from_hex("000102030405060708090a0b0c0d0e0f").unwrap()
}

fn ledger_keys() -> LedgerKeys {
    let k = keys();
    LedgerKeys::new([(1, k.cert_master.clone()), (2, master_v2())], k.batch_master.clone())
}

fn open(path: &std::path::Path) -> Ledger {
    let mut l = Ledger::open(path, ledger_keys()).unwrap();
    l.register_terminal(TERMINAL, T0).unwrap();
    let customer = l
        .register_customer(&NewCustomer {
            name: "V. Two".into(),
            birth_date: Date::new(1980, 1, 1).unwrap(),
            home_city: "Gent".into(),
            household: [0; 8],
            preferences: Vec::new(),
            tier: 0,
        })
        .unwrap();
    l.register_card(card_id(V2_CARD), customer, 2, T0).unwrap();
    l
}

fn certified_v2(counter: u32, balance_after: u32, seq: u32) -> Entry {
    let id = card_id(V2_CARD);
    let mut rec = LogRecord {
        counter,
        kind: TxKind::Earn,
        amount: 10,
        balance_after,
        terminal_id: TERMINAL,
        terminal_seq: seq,
        time: T0,
        reference: 0,
        online: false,
        certificate: [0; 16],
    };
    rec.certificate = certificate(&diversify(&master_v2(), labels::CARD_CERT, &id, 2), &id, &rec);
    Entry::from_card_record(EntryKind::Completion, T0, &id, &rec)
}

/// Long enough for many chunks; with a forged certificate, a duplicate,
/// a gap (held), a balance jump and a key version 2 card along the way.
fn entries() -> Vec<Entry> {
    let mut out = Vec::new();
    for i in 0..RECORDS {
        let (card, counter) = (i % CARDS, i / CARDS + 1);
        let seq = out.len() as u32 + 1;
        let mut e = certified(
            EntryKind::Completion,
            card,
            counter,
            TxKind::Earn,
            10,
            10 * counter,
            TERMINAL,
            seq,
            T0,
        );
        if i == 1_500 {
            e.certificate = Some("00112233445566778899AABBCCDDEEFF".into());
        }
        out.push(e);
        if i % 500 == 0 {
            let c = i / 500 + 1;
            let seq = out.len() as u32 + 1;
            out.push(certified_v2(c, 10 * c, seq));
        }
    }
    let seq = out.len() as u32 + 1;
    // Card 1 again, its last counter: a duplicate of a posted record.
    out.push(out[out.len() - CARDS as usize].clone());
    // Card 2 skips a counter: held.
    let last = (RECORDS - 1) / CARDS + 1;
    out.push(certified(
        EntryKind::Completion,
        2,
        last + 3,
        TxKind::Earn,
        10,
        10 * (last + 3),
        TERMINAL,
        seq + 1,
        T0,
    ));
    // Card 3 jumps its balance.
    out.push(certified(
        EntryKind::Completion,
        3,
        last + 1,
        TxKind::Earn,
        10,
        99_999,
        TERMINAL,
        seq + 2,
        T0,
    ));
    out
}

fn books(l: &Ledger) -> String {
    let mut s = String::new();
    for n in (0..CARDS).chain([V2_CARD]) {
        s += &format!("{:?}\n", l.card(card_id(n)).unwrap());
    }
    s += &serde_json::to_string(&l.exceptions().unwrap()).unwrap();
    s += &serde_json::to_string(&l.reconciliation(None, None, &Zone::utc()).unwrap()).unwrap();
    s += &serde_json::to_string(&l.liability(1).unwrap()).unwrap();
    s += &format!("{:?}{:?}", l.settled_counters().unwrap(), l.hotlist().unwrap());
    s
}

#[test]
fn ingest_send_gives_what_ingest_gives() {
    let shop = Shop::new();
    let batch = journal_batch(&shop.journal_path(TERMINAL), TERMINAL, entries(), T0);
    let dir = tempfile::tempdir().unwrap();
    let mut serial = open(&dir.path().join("serial.sqlite"));
    let mut parallel = open(&dir.path().join("parallel.sqlite"));
    let a = serial.ingest(&batch[..], T0).unwrap();
    let b = parallel.ingest_send(&batch[..], T0).unwrap();
    assert_eq!(b.ack.status, AckStatus::Posted);
    assert_eq!(format!("{:?}", a.report), format!("{:?}", b.report));
    assert_eq!(a.ack, b.ack);
    let r = &b.report;
    // Card 2's forged counter 215 holds its 214 later ones, and the gap.
    assert_eq!((r.rejected, r.duplicates, r.held), (1, 1, 215), "{r:?}");
    assert_eq!(r.posted + r.rejected + r.duplicates + r.held, r.card_transactions);
    assert_eq!(r.card_transactions, RECORDS + 6 + 3);
    assert_eq!(
        parallel.card(card_id(V2_CARD)).unwrap().unwrap().shadow_balance,
        60,
        "key version 2 verified"
    );
    assert_eq!(books(&serial), books(&parallel));
    let again = parallel.ingest_send(&batch[..], T0).unwrap();
    assert_eq!(again.ack.status, AckStatus::Duplicate);
    assert_eq!(books(&serial), books(&parallel));
}

/// Hands out `data` and fails with an I/O error after `fail_at` bytes.
struct Cut {
    data: Vec<u8>,
    pos: usize,
    fail_at: usize,
}

impl Read for Cut {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.fail_at {
            return Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "gone"));
        }
        let n = buf.len().min(self.fail_at - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[test]
fn ingest_send_refuses_like_ingest_and_writes_nothing() {
    let shop = Shop::new();
    let batch = journal_batch(&shop.journal_path(TERMINAL), TERMINAL, entries(), T0);
    let text = String::from_utf8(batch.clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // A record late in the batch altered (its stated hash kept).
    let mut altered = lines.clone();
    let forged = altered[2_900].replacen(r#"\"points\":10"#, r#"\"points\":1000"#, 1);
    assert_ne!(forged, altered[2_900]);
    altered[2_900] = &forged;
    let altered = altered.join("\n") + "\n";
    // The MAC line replaced.
    let mut bad_mac = lines.clone();
    let mac = r#"{"type":"mac","mac":"00000000000000000000000000000000"}"#;
    *bad_mac.last_mut().unwrap() = mac;
    let bad_mac = bad_mac.join("\n") + "\n";
    let dir = tempfile::tempdir().unwrap();
    let mut serial = open(&dir.path().join("serial.sqlite"));
    let mut parallel = open(&dir.path().join("parallel.sqlite"));
    let empty = books(&parallel);
    for input in [altered.as_bytes(), bad_mac.as_bytes(), &batch[..batch.len() - 10]] {
        let a = serial.ingest(input, T0).unwrap_err();
        let b = parallel.ingest_send(input, T0).unwrap_err();
        assert_eq!(a.to_string(), b.to_string());
    }
    let cut = Cut {
        data: batch.clone(),
        pos: 0,
        fail_at: batch.len() * 2 / 3,
    };
    let err = parallel.ingest_send(BufReader::new(cut), T0).unwrap_err();
    assert!(matches!(err, LedgerError::Io(_)), "{err}");
    assert_eq!(books(&serial), books(&parallel));
    // Only the broken chain's exception: no card, no transaction.
    assert_eq!(parallel.exceptions().unwrap().len(), 1);
    assert_eq!(
        books(&parallel).lines().take(CARDS as usize + 1).collect::<Vec<_>>(),
        empty.lines().take(CARDS as usize + 1).collect::<Vec<_>>()
    );
    assert_eq!(
        parallel.ingest_send(&batch[..], T0).unwrap().ack.status,
        AckStatus::Posted
    );
}

#[test]
fn a_batch_verified_ahead_posts_what_ingest_posts() {
    let shop = Shop::new();
    let batch = journal_batch(&shop.journal_path(TERMINAL), TERMINAL, entries(), T0);
    let dir = tempfile::tempdir().unwrap();
    let mut serial = open(&dir.path().join("serial.sqlite"));
    let mut ahead = open(&dir.path().join("ahead.sqlite"));
    let a = serial.ingest(&batch[..], T0).unwrap();
    let verifier = ahead.verifier();
    // Too many records for the caller's bound: not verified ahead.
    assert!(matches!(
        verifier.verify(&batch[..], 100),
        Err(LedgerError::Malformed(_))
    ));
    let verified = std::thread::spawn(move || verifier.verify(&batch[..], 10_000).unwrap())
        .join()
        .unwrap();
    assert_eq!((verified.terminal_id(), verified.batch_no()), (TERMINAL, 1));
    let b = ahead.post_verified(verified, T0).unwrap();
    assert_eq!(format!("{:?}", a.report), format!("{:?}", b.report));
    assert_eq!(a.ack, b.ack);
    assert_eq!(books(&serial), books(&ahead));
}

#[test]
fn a_forged_batch_is_not_verified_ahead() {
    let shop = Shop::new();
    let batch = journal_batch(&shop.journal_path(TERMINAL), TERMINAL, entries(), T0);
    let text = String::from_utf8(batch).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut altered = lines.clone();
    let forged = altered[2_900].replacen(r#"\"points\":10"#, r#"\"points\":1000"#, 1);
    altered[2_900] = &forged;
    let altered = altered.join("\n") + "\n";
    let mut bad_mac = lines.clone();
    *bad_mac.last_mut().unwrap() = r#"{"type":"mac","mac":"00000000000000000000000000000000"}"#;
    let bad_mac = bad_mac.join("\n") + "\n";
    let dir = tempfile::tempdir().unwrap();
    let l = open(&dir.path().join("l.sqlite"));
    let v = l.verifier();
    assert!(matches!(
        v.verify(altered.as_bytes(), 10_000),
        Err(LedgerError::BrokenChain { .. })
    ));
    assert!(matches!(v.verify(bad_mac.as_bytes(), 10_000), Err(LedgerError::BadMac)));
}

/// A group of uploads: each is all or nothing on its own, one commit for
/// all, and the books are those of ingesting them one by one.
#[test]
fn a_group_posts_each_batch_as_ingest_would_and_refuses_alone() {
    let shop = Shop::new();
    let tills = [71u32, 72, 73];
    let mut batches = Vec::new();
    for (i, t) in tills.iter().enumerate() {
        let card = i as u32;
        let entries: Vec<Entry> = (1..=5)
            .map(|n| certified(EntryKind::Completion, card, n, TxKind::Earn, 10, 10 * n, *t, n, T0))
            .collect();
        batches.push(journal_batch(&shop.journal_path(*t), *t, entries, T0));
    }
    // Till 72's batch with a wrong MAC: refused, alone.
    let text = String::from_utf8(batches[1].clone()).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    *lines.last_mut().unwrap() = r#"{"type":"mac","mac":"00000000000000000000000000000000"}"#;
    let forged = (lines.join("\n") + "\n").into_bytes();
    let dir = tempfile::tempdir().unwrap();
    let register = |l: &mut Ledger| {
        for t in tills {
            l.register_terminal(t, T0).unwrap();
        }
    };
    let mut one_by_one = open(&dir.path().join("one.sqlite"));
    register(&mut one_by_one);
    let mut grouped = open(&dir.path().join("group.sqlite"));
    register(&mut grouped);
    let inputs = [&batches[0][..], &forged[..], &batches[2][..]];
    let singles: Vec<_> = inputs.iter().map(|b| one_by_one.ingest(*b, T0)).collect();
    let ahead = grouped.verifier().verify(inputs[0], 100).unwrap();
    let outcomes = grouped.ingest_group(
        vec![
            tessera_ledger::Upload::Verified(Box::new(ahead)),
            tessera_ledger::Upload::Stream(inputs[1]),
            tessera_ledger::Upload::Stream(inputs[2]),
        ],
        T0,
    );
    assert_eq!(outcomes.len(), 3);
    for (single, grouped) in singles.iter().zip(&outcomes) {
        match (single, grouped) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a.ack, b.ack);
                assert_eq!(b.ack.status, AckStatus::Posted);
            }
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(outcomes[1], Err(LedgerError::BadMac)));
    assert_eq!(books(&one_by_one), books(&grouped));
    assert_eq!(grouped.card(card_id(2)).unwrap().unwrap().shadow_balance, 50);
    assert!(
        grouped.card(card_id(1)).unwrap().is_none(),
        "the refused batch wrote nothing"
    );
    // The whole group again: duplicates, nothing changes.
    let before = books(&grouped);
    let again = grouped.ingest_group(inputs.iter().map(|b| tessera_ledger::Upload::Stream(*b)).collect(), T0);
    assert!(matches!(&again[0], Ok(o) if o.ack.status == AckStatus::Duplicate));
    assert!(matches!(&again[2], Ok(o) if o.ack.status == AckStatus::Duplicate));
    assert_eq!(books(&grouped), before);
}
