//! Migrations on a real PostgreSQL server (a private cluster started by
//! `scripts/pg-up.sh`, stopped by PID at the end): a fresh database gets
//! the whole schema in one step, a second run changes nothing, a database
//! newer than the code is refused untouched, a failing step leaves nothing
//! of itself, several servers migrating at once migrate once, and the
//! books' keys hold as on SQLite.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use postgres::{Client, NoTls};
use tessera_ledger_pg::cluster::Cluster;
use tessera_ledger_pg::{connect, migrate, schema_version, PgError, SCHEMA_VERSION};

fn tables(c: &mut Client) -> i64 {
    c.query_one(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
        &[],
    )
    .unwrap()
    .get(0)
}

#[test]
fn migrations_once_in_one_transaction_and_newer_refused() {
    let cluster = Cluster::start().unwrap();

    // Fresh: the whole schema, every version; again: nothing changes.
    let url = cluster.database("fresh").unwrap();
    let mut c = Client::connect(&url, NoTls).unwrap();
    assert_eq!(schema_version(&mut c).unwrap(), 0);
    assert_eq!(migrate(&mut c).unwrap(), 0);
    assert_eq!(schema_version(&mut c).unwrap(), SCHEMA_VERSION);
    let n = tables(&mut c);
    assert_eq!(
        n, 39,
        "the ledger's 37 tables, the servers' shared request_nonces (version 2) and tessera_schema"
    );
    assert_eq!(migrate(&mut c).unwrap(), SCHEMA_VERSION);
    assert_eq!(tables(&mut c), n);
    let rows: i64 = c.query_one("SELECT count(*) FROM tessera_schema", &[]).unwrap().get(0);
    assert_eq!(rows, 1);

    // The books' keys, as on SQLite: one record per card and counter.
    c.batch_execute(
        "INSERT INTO card_transactions (card_id, counter, status, tx_type, points, delta, balance_after,
             origin_terminal, origin_seq, card_time, reference, certificate, kind, terminal_id, batch_no, seq,
             received_at)
         VALUES ('\\x7e57000000000001', 1, 'posted', 'earn', 10, 10, 10, 7, 1, 5, 0, '\\x00', 'completion', 7, 1, 1, 5)",
    )
    .unwrap();
    let again = c.batch_execute(
        "INSERT INTO card_transactions (card_id, counter, status, tx_type, points, delta, balance_after,
             origin_terminal, origin_seq, card_time, reference, certificate, kind, terminal_id, batch_no, seq,
             received_at)
         VALUES ('\\x7e57000000000001', 1, 'posted', 'earn', 99, 99, 99, 8, 1, 5, 0, '\\x00', 'completion', 8, 1, 1, 5)",
    );
    assert!(again.is_err(), "a counter is posted once");
    let bad_status = c.batch_execute(
        "INSERT INTO batches (terminal_id, batch_no, status, seq_from, seq_to, record_count, prev_head, head,
             totals, sealed_at, received_at)
         VALUES (7, 1, 'maybe', 1, 1, 1, '\\x00', '\\x00', '{}', 1, 1)",
    );
    assert!(bad_status.is_err(), "the checks hold");
    drop(c);

    // Newer than the code: refused, untouched.
    let url = cluster.database("newer").unwrap();
    let mut c = Client::connect(&url, NoTls).unwrap();
    c.batch_execute(&format!(
        "CREATE TABLE tessera_schema (version bigint NOT NULL); INSERT INTO tessera_schema VALUES ({})",
        SCHEMA_VERSION + 1
    ))
    .unwrap();
    match connect(&url) {
        Err(PgError::NewerSchema { found, expected }) => {
            assert_eq!((found, expected), (SCHEMA_VERSION + 1, SCHEMA_VERSION))
        }
        other => panic!("a newer database: {:?}", other.map(|_| ())),
    }
    assert_eq!(schema_version(&mut c).unwrap(), SCHEMA_VERSION + 1);
    assert_eq!(tables(&mut c), 1, "nothing was created");
    drop(c);

    // A step that fails (a table in the way) leaves nothing of itself: not
    // the tables before it, not the version.
    let url = cluster.database("blocked").unwrap();
    let mut c = Client::connect(&url, NoTls).unwrap();
    c.batch_execute("CREATE TABLE exceptions (whatever int)").unwrap();
    assert!(matches!(migrate(&mut c), Err(PgError::Postgres(_))));
    assert_eq!(schema_version(&mut c).unwrap(), 0);
    assert_eq!(tables(&mut c), 1, "only the table that was in the way");
    drop(c);

    // Four servers starting together: one migrates, the others find it done.
    let url = cluster.database("race").unwrap();
    let go = std::sync::Arc::new(std::sync::Barrier::new(4));
    let found: Vec<i64> = (0..4)
        .map(|_| {
            let (url, go) = (url.clone(), std::sync::Arc::clone(&go));
            std::thread::spawn(move || {
                let mut c = Client::connect(&url, NoTls).unwrap();
                go.wait();
                migrate(&mut c).unwrap()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    assert_eq!(found.iter().filter(|v| **v == 0).count(), 1, "{found:?}");
    assert_eq!(found.iter().filter(|v| **v == SCHEMA_VERSION).count(), 3, "{found:?}");
    let mut c = Client::connect(&url, NoTls).unwrap();
    assert_eq!(tables(&mut c), 39);
}

#[test]
fn the_postgresql_schema_has_the_sqlite_ledgers_tables_and_columns() {
    assert_eq!(
        tessera_ledger_pg::copy::SQLITE_SCHEMA_VERSION,
        tessera_ledger::SCHEMA_VERSION,
        "the copy follows the SQLite ledger's schema: update both together"
    );
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("ledger.sqlite");
    let keys = tessera_crypto::keys::IssuerKeys::test().unwrap();
    drop(tessera_ledger::Ledger::open(&path, tessera_ledger::LedgerKeys::from_issuer(&keys)).unwrap());
    let sqlite = rusqlite::Connection::open(&path).unwrap();
    let mut sqlite_cols: Vec<(String, String)> = sqlite
        .prepare(
            "SELECT m.name, p.name FROM sqlite_master m, pragma_table_info(m.name) p
             WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    sqlite_cols.sort();
    let cluster = Cluster::start().unwrap();
    let url = cluster.database("columns").unwrap();
    let mut c = connect(&url).unwrap();
    let mut pg_cols: Vec<(String, String)> = c
        .query(
            "SELECT table_name::text, column_name::text FROM information_schema.columns
             WHERE table_schema = 'public' AND table_name NOT IN ('tessera_schema', 'request_nonces')",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    pg_cols.sort();
    assert_eq!(pg_cols, sqlite_cols);
}
