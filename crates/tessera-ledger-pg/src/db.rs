//! The warehouse's SQL ([`tessera_ledger::db`]) on PostgreSQL: its `?1`
//! parameters rewritten to `$1`, each value bound as the type the server
//! inferred for its parameter, and rows streamed (`query_raw`), decoded to
//! [`SqlValue`] by their column's type.

use std::cell::RefCell;

use postgres::fallible_iterator::FallibleIterator as _;
use postgres::types::{ToSql, Type};
use postgres::GenericClient;
use tessera_ledger::{LedgerError, SqlRow, SqlValue, Warehouse, WarehouseDb};
use tessera_rules::display::Zone;

use crate::posting::PgLedger;
use crate::PgError;

/// A PostgreSQL connection or transaction as a [`WarehouseDb`].
pub struct PgDb<'a, C: GenericClient>(RefCell<&'a mut C>);

impl<'a, C: GenericClient> PgDb<'a, C> {
    /// Wraps a connection or a transaction.
    pub fn new(client: &'a mut C) -> Self {
        Self(RefCell::new(client))
    }
}

/// `?1` → `$1` (the shared statements hold no `?` in literals).
fn dollars(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

fn pg(e: postgres::Error) -> LedgerError {
    LedgerError::from(PgError::Postgres(e))
}

fn unbindable(ty: &Type, v: &SqlValue) -> LedgerError {
    LedgerError::Storage(format!("the warehouse cannot bind {v:?} to a PostgreSQL {ty}"))
}

type Bound = Box<dyn ToSql + Sync>;

fn bind_one(ty: &Type, v: &SqlValue) -> Result<Bound, LedgerError> {
    let range = |_| unbindable(ty, v);
    Ok(match (v, ty) {
        (SqlValue::Null, t) if *t == Type::INT8 => Box::new(None::<i64>),
        (SqlValue::Null, t) if *t == Type::INT4 => Box::new(None::<i32>),
        (SqlValue::Null, t) if *t == Type::INT2 => Box::new(None::<i16>),
        (SqlValue::Null, t) if *t == Type::FLOAT8 => Box::new(None::<f64>),
        (SqlValue::Null, t) if *t == Type::BOOL => Box::new(None::<bool>),
        (SqlValue::Null, t) if *t == Type::BYTEA => Box::new(None::<Vec<u8>>),
        (SqlValue::Null, t) if *t == Type::TEXT || *t == Type::VARCHAR => Box::new(None::<String>),
        (SqlValue::Int(i), t) if *t == Type::INT8 => Box::new(*i),
        (SqlValue::Int(i), t) if *t == Type::INT4 => Box::new(i32::try_from(*i).map_err(range)?),
        (SqlValue::Int(i), t) if *t == Type::INT2 => Box::new(i16::try_from(*i).map_err(range)?),
        (SqlValue::Int(i), t) if *t == Type::BOOL => Box::new(*i != 0),
        (SqlValue::Real(r), t) if *t == Type::FLOAT8 => Box::new(*r),
        (SqlValue::Text(s), t) if *t == Type::TEXT || *t == Type::VARCHAR => Box::new(s.clone()),
        (SqlValue::Blob(b), t) if *t == Type::BYTEA => Box::new(b.clone()),
        _ => return Err(unbindable(ty, v)),
    })
}

fn bind(types: &[Type], params: &[SqlValue]) -> Result<Vec<Bound>, LedgerError> {
    if types.len() != params.len() {
        return Err(LedgerError::Storage(format!(
            "the warehouse's statement takes {} parameters, {} given",
            types.len(),
            params.len()
        )));
    }
    types.iter().zip(params).map(|(t, v)| bind_one(t, v)).collect()
}

fn decode(row: &postgres::Row, out: &mut Vec<SqlValue>) -> Result<(), LedgerError> {
    out.clear();
    for (i, col) in row.columns().iter().enumerate() {
        let t = col.type_();
        let v = if *t == Type::INT8 {
            row.try_get::<_, Option<i64>>(i).map_err(pg)?.map(SqlValue::Int)
        } else if *t == Type::INT4 {
            row.try_get::<_, Option<i32>>(i).map_err(pg)?.map(SqlValue::from)
        } else if *t == Type::INT2 {
            row.try_get::<_, Option<i16>>(i)
                .map_err(pg)?
                .map(|v| SqlValue::Int(i64::from(v)))
        } else if *t == Type::FLOAT8 {
            row.try_get::<_, Option<f64>>(i).map_err(pg)?.map(SqlValue::Real)
        } else if *t == Type::BOOL {
            row.try_get::<_, Option<bool>>(i)
                .map_err(pg)?
                .map(|b| SqlValue::Int(i64::from(b)))
        } else if *t == Type::TEXT || *t == Type::VARCHAR || *t == Type::NAME || *t == Type::BPCHAR {
            row.try_get::<_, Option<String>>(i).map_err(pg)?.map(SqlValue::Text)
        } else if *t == Type::BYTEA {
            row.try_get::<_, Option<Vec<u8>>>(i).map_err(pg)?.map(SqlValue::Blob)
        } else {
            return Err(LedgerError::Storage(format!(
                "the warehouse's column {} is a PostgreSQL {t} (cast it to bigint, float8 or text)",
                col.name()
            )));
        };
        out.push(v.unwrap_or(SqlValue::Null));
    }
    Ok(())
}

impl<C: GenericClient> WarehouseDb for PgDb<'_, C> {
    fn run(&self, sql: &str, params: &[SqlValue]) -> Result<u64, LedgerError> {
        let mut c = self
            .0
            .try_borrow_mut()
            .map_err(|_| LedgerError::Storage("a warehouse statement ran inside another's rows".into()))?;
        let stmt = c.prepare(&dollars(sql)).map_err(pg)?;
        let bound = bind(stmt.params(), params)?;
        let refs: Vec<&(dyn ToSql + Sync)> = bound.iter().map(|b| &**b).collect();
        c.execute(&stmt, &refs).map_err(pg)
    }

    fn each(
        &self,
        sql: &str,
        params: &[SqlValue],
        f: &mut dyn FnMut(SqlRow<'_>) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        let mut c = self
            .0
            .try_borrow_mut()
            .map_err(|_| LedgerError::Storage("a warehouse query ran inside another's rows".into()))?;
        let stmt = c.prepare(&dollars(sql)).map_err(pg)?;
        let bound = bind(stmt.params(), params)?;
        let mut rows = c
            .query_raw(&stmt, bound.iter().map(|b| &**b as &dyn ToSql))
            .map_err(pg)?;
        let mut values = Vec::new();
        while let Some(row) = rows.next().map_err(pg)? {
            decode(&row, &mut values)?;
            f(SqlRow(&values))?;
        }
        Ok(())
    }
}

/// The ledger's connection, connected again first when the server closed
/// it.
impl WarehouseDb for PgLedger {
    fn run(&self, sql: &str, params: &[SqlValue]) -> Result<u64, LedgerError> {
        Ok(self.with(|c| PgDb::new(c).run(sql, params).map_err(PgError::Warehouse))?)
    }

    fn each(
        &self,
        sql: &str,
        params: &[SqlValue],
        f: &mut dyn FnMut(SqlRow<'_>) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        Ok(self.with(|c| PgDb::new(c).each(sql, params, f).map_err(PgError::Warehouse))?)
    }
}

/// The warehouse on PostgreSQL: maintained as batches post (in each
/// batch's transaction, `posting`), read by the same reports as on SQLite.
impl Warehouse for PgLedger {
    fn warehouse_db(&self) -> &dyn WarehouseDb {
        self
    }

    fn warehouse_zone(&self) -> &Zone {
        &self.wh_zone
    }

    /// The database cluster's write-ahead log position: every committed
    /// change moves it on (so do changes to other databases of the
    /// cluster, which only makes a cache refresh sooner).
    fn change_stamp(&self) -> Result<(i64, u64), LedgerError> {
        Ok(self.with(|c| {
            let lsn: i64 = c
                .query_one("SELECT CAST(pg_current_wal_lsn() - '0/0'::pg_lsn AS BIGINT)", &[])?
                .get(0);
            Ok((lsn, 0))
        })?)
    }

    /// Rebuilds in one transaction that first locks the warehouse's tables
    /// against writers (in the order posting writes them): batches posting
    /// meanwhile wait for it, then maintain their own rows.
    fn rebuild_warehouse(&mut self) -> Result<u64, LedgerError> {
        let zone = self.wh_zone.clone();
        Ok(self.with(|c| {
            let mut tx = c.transaction()?;
            tx.batch_execute(
                "LOCK TABLE wh_dim_date, wh_dim_customer, wh_dim_household, wh_dim_card, wh_dim_category,
                     wh_fact_tx, wh_fact_category, wh_fact_points, wh_dim_store, wh_dim_campaign, wh_meta
                 IN EXCLUSIVE MODE",
            )?;
            let n = tessera_ledger::warehouse::rebuild(&PgDb::new(&mut tx), &zone).map_err(PgError::Warehouse)?;
            tx.commit()?;
            Ok(n)
        })?)
    }
}

#[cfg(test)]
mod tests {
    use super::dollars;

    #[test]
    fn parameters_are_rewritten_and_nothing_else() {
        assert_eq!(
            dollars("SELECT ?1, ?12 FROM t WHERE a = ?2 AND b IS NULL"),
            "SELECT $1, $12 FROM t WHERE a = $2 AND b IS NULL"
        );
        assert_eq!(dollars("SELECT '?' || x"), "SELECT '?' || x");
    }
}
