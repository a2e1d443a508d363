//! Settlement batches: sealed from a real journal, written, read back
//! streaming; every alteration, a wrong key and a wrong ack are refused;
//! re-sealing before the ack gives the same batch.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::BufReader;

use tessera_crypto::keys::IssuerKeys;
use tessera_terminal::batch::{write_batch, Ack, AckStatus, BatchError, BatchReader};
use tessera_terminal::journal::{Entry, EntryKind, Journal, Verdict};

fn journal(dir: &std::path::Path, n: u32) -> Journal {
    let mut j = Journal::open(&dir.join("j.sqlite"), 5).unwrap();
    for i in 0..n {
        let mut e = Entry::new(EntryKind::Decision, 100 + i);
        e.card_id = Some("7E57000000000001".into());
        e.tx_type = Some("earn".into());
        e.points = Some(i);
        e.verdict = Some(Verdict::Approve);
        j.append(e).unwrap();
    }
    j
}

fn read_all(bytes: &[u8], key: &tessera_crypto::Key) -> Result<(u32, u32), BatchError> {
    let mut r = BatchReader::open(BufReader::new(bytes))?;
    let mut n = 0;
    while r.next_record()?.is_some() {
        n += 1;
    }
    let h = r.finish(key)?;
    Ok((n, h.batch_no))
}

#[test]
fn seal_write_read_and_ack() {
    let dir = tempfile::tempdir().unwrap();
    let keys = IssuerKeys::test().unwrap();
    let key = keys.terminal_batch_key(5);
    let mut j = journal(dir.path(), 7);
    let mut first = Vec::new();
    let range = write_batch(&mut j, &key, 1_000, &mut first).unwrap().unwrap();
    assert_eq!((range.batch_no, range.seq_from, range.seq_to), (1, 1, 7));
    assert_eq!(read_all(&first, &key).unwrap(), (7, 1));

    // Not acknowledged yet: sealing again sends the very same batch.
    let mut again = Vec::new();
    write_batch(&mut j, &key, 2_000, &mut again).unwrap();
    assert_eq!(first, again);

    // A genuine ack settles the range; a forged one is refused.
    let ack = Ack::new(&key, 5, 1, &hex::encode(range.head), AckStatus::Posted);
    assert!(ack.verify(&key));
    assert!(!ack.verify(&keys.terminal_batch_key(6)));
    let mut forged = ack.clone();
    forged.batch_no = 2;
    assert!(!forged.verify(&key));
    j.acknowledge(1, &range.head, 3_000).unwrap();
    assert_eq!(j.settled_up_to().unwrap(), 7);

    // The next batch continues the chain; nothing new, nothing to seal.
    let mut e = Entry::new(EntryKind::Decision, 200);
    e.verdict = Some(Verdict::Decline);
    j.append(e).unwrap();
    let mut second = Vec::new();
    let r2 = write_batch(&mut j, &key, 4_000, &mut second).unwrap().unwrap();
    assert_eq!(
        (r2.batch_no, r2.seq_from, r2.seq_to, r2.prev_head),
        (2, 8, 8, range.head)
    );
    j.acknowledge(2, &r2.head, 5_000).unwrap();
    assert!(write_batch(&mut j, &key, 6_000, &mut Vec::new()).unwrap().is_none());
}

#[test]
fn every_alteration_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let keys = IssuerKeys::test().unwrap();
    let key = keys.terminal_batch_key(5);
    let mut j = journal(dir.path(), 4);
    let mut bytes = Vec::new();
    write_batch(&mut j, &key, 1_000, &mut bytes).unwrap();
    assert!(matches!(
        read_all(&bytes, &keys.terminal_batch_key(9)),
        Err(BatchError::BadMac)
    ));
    // Flip every byte that is not a JSON structural or whitespace byte, one at a time.
    let mut refused = 0;
    for i in 0..bytes.len() {
        if matches!(bytes[i], b'\n') {
            continue;
        }
        let mut b = bytes.clone();
        b[i] ^= 0x01;
        if read_all(&b, &key).is_err() {
            refused += 1;
        } else {
            panic!("flip at byte {i} ({:?}) accepted", bytes[i] as char);
        }
    }
    assert!(refused > 500);
    // Truncated anywhere: refused.
    for cut in [0, 10, bytes.len() / 2, bytes.len() - 5] {
        assert!(read_all(&bytes[..cut], &key).is_err(), "cut at {cut}");
    }
}
