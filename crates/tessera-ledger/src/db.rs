//! The few calls the warehouse's SQL needs from a database, so that one
//! text of it — its maintenance (`wh_build`) and its reports
//! ([`crate::Warehouse`]) — runs on the embedded SQLite ledger and on the
//! PostgreSQL backend alike.
//!
//! Statements are written once, in the SQL both databases speak:
//! parameters are `?1`, `?2`, … (a backend rewrites them to its own
//! syntax), every sum is cast to `BIGINT` (PostgreSQL's `SUM` of a
//! `bigint` is a `numeric`), and integers are read as 64-bit.

use crate::LedgerError;

/// A value bound to a statement or read from a row.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    /// SQL `NULL`.
    Null,
    /// An integer (every integer column is read as 64-bit).
    Int(i64),
    /// A floating-point number.
    Real(f64),
    /// Text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

impl From<i64> for SqlValue {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}

impl From<u32> for SqlValue {
    fn from(v: u32) -> Self {
        Self::Int(i64::from(v))
    }
}

impl From<i32> for SqlValue {
    fn from(v: i32) -> Self {
        Self::Int(i64::from(v))
    }
}

impl From<u64> for SqlValue {
    fn from(v: u64) -> Self {
        i64::try_from(v).map_or(Self::Null, Self::Int)
    }
}

impl From<&str> for SqlValue {
    fn from(v: &str) -> Self {
        Self::Text(v.to_owned())
    }
}

impl From<&[u8]> for SqlValue {
    fn from(v: &[u8]) -> Self {
        Self::Blob(v.to_vec())
    }
}

impl<T: Into<SqlValue>> From<Option<T>> for SqlValue {
    fn from(v: Option<T>) -> Self {
        v.map_or(Self::Null, Into::into)
    }
}

/// One row of a result, with typed getters that fail with a storage error
/// (never a panic) on a type or range the caller did not expect.
#[derive(Debug, Clone, Copy)]
pub struct SqlRow<'a>(pub &'a [SqlValue]);

impl SqlRow<'_> {
    fn at(&self, i: usize) -> Result<&SqlValue, LedgerError> {
        self.0
            .get(i)
            .ok_or_else(|| LedgerError::Storage(format!("the warehouse read no column {i}")))
    }

    fn wrong(i: usize, want: &str, v: &SqlValue) -> LedgerError {
        LedgerError::Storage(format!("the warehouse's column {i} is {v:?}, not {want}"))
    }

    /// An integer that may be `NULL`.
    ///
    /// # Errors
    /// [`LedgerError::Storage`] for another type.
    pub fn opt_i64(&self, i: usize) -> Result<Option<i64>, LedgerError> {
        match self.at(i)? {
            SqlValue::Null => Ok(None),
            SqlValue::Int(v) => Ok(Some(*v)),
            v => Err(Self::wrong(i, "an integer", v)),
        }
    }

    /// An integer.
    ///
    /// # Errors
    /// [`LedgerError::Storage`] for `NULL` or another type.
    pub fn i64(&self, i: usize) -> Result<i64, LedgerError> {
        self.opt_i64(i)?
            .ok_or_else(|| Self::wrong(i, "an integer", &SqlValue::Null))
    }

    /// An integer in `T`'s range that may be `NULL`.
    ///
    /// # Errors
    /// [`LedgerError::Storage`] for another type or a value out of range.
    pub fn opt_int<T: TryFrom<i64>>(&self, i: usize) -> Result<Option<T>, LedgerError> {
        self.opt_i64(i)?
            .map(|v| {
                T::try_from(v)
                    .map_err(|_| LedgerError::Storage(format!("the warehouse's column {i} is out of range: {v}")))
            })
            .transpose()
    }

    /// An integer in `T`'s range.
    ///
    /// # Errors
    /// [`LedgerError::Storage`] for `NULL`, another type or a value out of
    /// range.
    pub fn int<T: TryFrom<i64>>(&self, i: usize) -> Result<T, LedgerError> {
        self.opt_int(i)?
            .ok_or_else(|| Self::wrong(i, "an integer", &SqlValue::Null))
    }

    /// A count or a sum that is never negative (`0` for a negative one).
    ///
    /// # Errors
    /// [`LedgerError::Storage`] for `NULL` or another type.
    pub fn count(&self, i: usize) -> Result<u64, LedgerError> {
        Ok(u64::try_from(self.i64(i)?).unwrap_or(0))
    }

    /// Text that may be `NULL`.
    ///
    /// # Errors
    /// [`LedgerError::Storage`] for another type.
    pub fn opt_text(&self, i: usize) -> Result<Option<String>, LedgerError> {
        match self.at(i)? {
            SqlValue::Null => Ok(None),
            SqlValue::Text(v) => Ok(Some(v.clone())),
            v => Err(Self::wrong(i, "text", v)),
        }
    }

    /// Text.
    ///
    /// # Errors
    /// [`LedgerError::Storage`] for `NULL` or another type.
    pub fn text(&self, i: usize) -> Result<String, LedgerError> {
        self.opt_text(i)?.ok_or_else(|| Self::wrong(i, "text", &SqlValue::Null))
    }

    /// Bytes that may be `NULL`.
    ///
    /// # Errors
    /// [`LedgerError::Storage`] for another type.
    pub fn opt_blob(&self, i: usize) -> Result<Option<Vec<u8>>, LedgerError> {
        match self.at(i)? {
            SqlValue::Null => Ok(None),
            SqlValue::Blob(v) => Ok(Some(v.clone())),
            v => Err(Self::wrong(i, "bytes", v)),
        }
    }

    /// Bytes.
    ///
    /// # Errors
    /// [`LedgerError::Storage`] for `NULL` or another type.
    pub fn blob(&self, i: usize) -> Result<Vec<u8>, LedgerError> {
        self.opt_blob(i)?
            .ok_or_else(|| Self::wrong(i, "bytes", &SqlValue::Null))
    }
}

/// What the warehouse's SQL needs from a database. Statements are written
/// with `?1`-style parameters, and a call must not be made from inside the
/// row callback of another (a backend may refuse it with a storage error).
pub trait WarehouseDb {
    /// Runs a statement; returns the rows it changed.
    ///
    /// # Errors
    /// A storage error.
    fn run(&self, sql: &str, params: &[SqlValue]) -> Result<u64, LedgerError>;

    /// Runs a query and calls `f` with each row, in order, streaming; stops
    /// at the first error `f` returns.
    ///
    /// # Errors
    /// A storage error, or `f`'s.
    fn each(
        &self,
        sql: &str,
        params: &[SqlValue],
        f: &mut dyn FnMut(SqlRow<'_>) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError>;
}

impl dyn WarehouseDb + '_ {
    /// Every row of a query, each mapped by `f`.
    ///
    /// # Errors
    /// A storage error, or `f`'s.
    pub fn rows<T>(
        &self,
        sql: &str,
        params: &[SqlValue],
        mut f: impl FnMut(SqlRow<'_>) -> Result<T, LedgerError>,
    ) -> Result<Vec<T>, LedgerError> {
        let mut out = Vec::new();
        self.each(sql, params, &mut |r| {
            out.push(f(r)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// The first row of a query mapped by `f` (`None` without a row).
    ///
    /// # Errors
    /// A storage error, or `f`'s.
    pub fn first<T>(
        &self,
        sql: &str,
        params: &[SqlValue],
        mut f: impl FnMut(SqlRow<'_>) -> Result<T, LedgerError>,
    ) -> Result<Option<T>, LedgerError> {
        let mut out = None;
        self.each(sql, params, &mut |r| {
            if out.is_none() {
                out = Some(f(r)?);
            }
            Ok(())
        })?;
        Ok(out)
    }
}

impl WarehouseDb for rusqlite::Connection {
    fn run(&self, sql: &str, params: &[SqlValue]) -> Result<u64, LedgerError> {
        let n = self
            .prepare_cached(sql)?
            .execute(rusqlite::params_from_iter(params.iter().map(to_sqlite)))?;
        Ok(n as u64)
    }

    fn each(
        &self,
        sql: &str,
        params: &[SqlValue],
        f: &mut dyn FnMut(SqlRow<'_>) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        let mut stmt = self.prepare_cached(sql)?;
        let n = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(params.iter().map(to_sqlite)))?;
        let mut values = Vec::with_capacity(n);
        while let Some(r) = rows.next()? {
            values.clear();
            for i in 0..n {
                values.push(match r.get_ref(i)? {
                    rusqlite::types::ValueRef::Null => SqlValue::Null,
                    rusqlite::types::ValueRef::Integer(v) => SqlValue::Int(v),
                    rusqlite::types::ValueRef::Real(v) => SqlValue::Real(v),
                    rusqlite::types::ValueRef::Text(t) => SqlValue::Text(String::from_utf8_lossy(t).into_owned()),
                    rusqlite::types::ValueRef::Blob(b) => SqlValue::Blob(b.to_vec()),
                });
            }
            f(SqlRow(&values))?;
        }
        Ok(())
    }
}

fn to_sqlite(v: &SqlValue) -> rusqlite::types::Value {
    use rusqlite::types::Value;
    match v {
        SqlValue::Null => Value::Null,
        SqlValue::Int(i) => Value::Integer(*i),
        SqlValue::Real(r) => Value::Real(*r),
        SqlValue::Text(t) => Value::Text(t.clone()),
        SqlValue::Blob(b) => Value::Blob(b.clone()),
    }
}

impl WarehouseDb for rusqlite::Transaction<'_> {
    fn run(&self, sql: &str, params: &[SqlValue]) -> Result<u64, LedgerError> {
        (**self).run(sql, params)
    }

    fn each(
        &self,
        sql: &str,
        params: &[SqlValue],
        f: &mut dyn FnMut(SqlRow<'_>) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        (**self).each(sql, params, f)
    }
}
