//! The journal's hash chain finds every edit, deletion, reordering and
//! truncation; the schema version guards against newer files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rusqlite::{params, Connection};
use tessera_terminal::journal::{Entry, EntryKind, Journal, JournalError, Verdict};

fn journal_with(n: u32) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.sqlite");
    let mut j = Journal::open(&path, 42).unwrap();
    for i in 0..n {
        let mut e = Entry::new(
            if i % 2 == 0 {
                EntryKind::Decision
            } else {
                EntryKind::Completion
            },
            1_000 + i,
        );
        e.card_id = Some(format!("7E570000000000{:02X}", i % 5));
        e.card_counter = Some(i / 2 + 1);
        e.tx_type = Some("earn".into());
        e.points = Some(10 + i);
        e.verdict = (i % 2 == 0).then_some(Verdict::Approve);
        e.certificate = (i % 2 == 1).then(|| "00112233445566778899AABBCCDDEEFF".into());
        e.balance_after = Some(100 + i);
        j.append(e).unwrap();
    }
    assert_eq!(j.verify_chain().unwrap().records, n);
    (dir, path)
}

fn broken(path: &std::path::Path) -> String {
    match Journal::open(path, 42).unwrap().verify_chain() {
        Err(JournalError::ChainBroken { seq, why }) => format!("{seq}: {why}"),
        other => panic!("tampering not detected: {other:?}"),
    }
}

#[test]
fn editing_any_record_is_detected() {
    for seq in 1..=8u32 {
        let (_d, path) = journal_with(8);
        let c = Connection::open(&path).unwrap();
        let body: String = c
            .query_row("SELECT body FROM records WHERE seq = ?1", params![seq], |r| r.get(0))
            .unwrap();
        let edited = body.replacen(
            &format!("\"points\":{}", 10 + seq - 1),
            &format!("\"points\":{}", 9_999),
            1,
        );
        assert_ne!(body, edited);
        c.execute("UPDATE records SET body = ?1 WHERE seq = ?2", params![edited, seq])
            .unwrap();
        drop(c);
        assert!(broken(&path).starts_with(&format!("{seq}:")));
    }
    // An indexed column edited behind the body's back is caught too.
    let (_d, path) = journal_with(4);
    Connection::open(&path)
        .unwrap()
        .execute("UPDATE records SET card_counter = 77 WHERE seq = 3", [])
        .unwrap();
    assert!(broken(&path).starts_with("3:"));
}

#[test]
fn deleting_any_record_is_detected() {
    for seq in 1..=8u32 {
        let (_d, path) = journal_with(8);
        Connection::open(&path)
            .unwrap()
            .execute("DELETE FROM records WHERE seq = ?1", params![seq])
            .unwrap();
        let why = broken(&path);
        assert!(why.contains("missing") || why.contains("cut off"), "{seq}: {why}");
    }
}

#[test]
fn reordering_records_is_detected() {
    let (_d, path) = journal_with(8);
    let c = Connection::open(&path).unwrap();
    // Swap the contents of records 3 and 4, keeping the sequence numbers.
    c.execute_batch(
        "UPDATE records SET seq = -3 WHERE seq = 3;
         UPDATE records SET seq = 3 WHERE seq = 4;
         UPDATE records SET seq = 4 WHERE seq = -3;",
    )
    .unwrap();
    drop(c);
    assert!(broken(&path).starts_with("3:"));
}

#[test]
fn a_rewritten_head_cannot_hide_a_rewritten_record() {
    let (_d, path) = journal_with(6);
    let c = Connection::open(&path).unwrap();
    // Replace the last record by a forged one with a self-consistent hash:
    // its link to record 5 still has to hold, and record 5 is untouched.
    c.execute("UPDATE records SET prev_hash = zeroblob(32) WHERE seq = 6", [])
        .unwrap();
    drop(c);
    assert!(broken(&path).starts_with("6:"));
}

#[test]
fn a_newer_schema_is_refused() {
    let (_d, path) = journal_with(2);
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 3)
        .unwrap();
    match Journal::open(&path, 42) {
        Err(e @ JournalError::NewerSchema { found: 3 }) => assert!(e.to_string().contains("upgrade")),
        other => panic!("{:?}", other.map(|_| ())),
    }
}

#[test]
fn a_corrupt_file_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.sqlite");
    std::fs::write(&path, b"this is not a database, it is a shopping list").unwrap();
    assert!(Journal::open(&path, 1).is_err());
}

#[test]
fn a_version_1_journal_is_migrated_in_place() {
    // A journal as the first release wrote it: schema 1, no batches table.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.sqlite");
    {
        let c = Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE records (seq INTEGER PRIMARY KEY, terminal_id INTEGER NOT NULL, kind TEXT NOT NULL,
               time INTEGER NOT NULL, card_id TEXT, card_counter INTEGER, body TEXT NOT NULL,
               prev_hash BLOB NOT NULL, hash BLOB NOT NULL UNIQUE);
             CREATE INDEX records_card ON records (card_id, card_counter);
             INSERT INTO meta VALUES ('terminal_id', '42');
             INSERT INTO meta VALUES ('head', '0:0000000000000000000000000000000000000000000000000000000000000000');
             PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let mut j = Journal::open(&path, 42).unwrap();
    j.append(Entry::new(EntryKind::Decision, 1)).unwrap();
    assert_eq!(j.seal(2).unwrap().unwrap().seq_to, 1);
    j.verify_chain().unwrap();
    let v: i64 = Connection::open(&path)
        .unwrap()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, 2);
}
