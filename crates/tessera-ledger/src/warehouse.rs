//! The warehouse beside the books (`docs/warehouse.md`): a dimensional
//! model of the card transactions — facts of transactions, categories and
//! points by rule; dimensions of customers, households, cards, stores,
//! categories, campaigns and local dates — in the `wh_` tables of the same
//! database, maintained as batches post, and the queries the analytics
//! read it with.

use tessera_rules::display::Zone;

use crate::db::{SqlValue, WarehouseDb};
use crate::{wh_build, Ledger, LedgerError};

/// The zone recorded in the warehouse (`UTC` for a new ledger).
///
/// # Errors
/// A storage error, or a recorded zone this build does not know.
pub fn stored_zone(db: &dyn WarehouseDb) -> Result<Zone, LedgerError> {
    let name = wh_build::meta(db, "zone")?.unwrap_or_else(|| "UTC".to_owned());
    Zone::named(&name).map_err(|e| LedgerError::Storage(format!("the warehouse's time zone: {e}")))
}

/// The amount of an approved purchase per category, as the books record
/// it in `decision_categories` (category, minor units, whether from the
/// basket's lines): the basket's lines summed per category, or, without a
/// basket, the purchase amount shared equally among its journaled
/// categories (the remainder to the first). Empty for anything but an
/// `earn`.
pub fn category_amounts(e: &tessera_settlement::record::Entry) -> Vec<(String, i64, bool)> {
    wh_build::category_amounts(e)
}

/// For a backend that posts batches itself (the PostgreSQL one): brings
/// the warehouse up to date for the card transactions it noted in the
/// session's `wh_touched` table (`card_id`, `counter`; over-noting is
/// harmless), in the caller's transaction, with the same statements the
/// SQLite ledger runs after each batch; empties the noted rows.
///
/// # Errors
/// A storage error (the caller rolls back).
pub fn maintain(db: &dyn WarehouseDb, zone: &Zone) -> Result<(), LedgerError> {
    wh_build::maintain(db, zone)
}

/// For a backend: empties the warehouse and builds it again from the books
/// under `zone`, in the caller's transaction, as
/// [`Ledger::rebuild_warehouse`] does; returns the number of transaction
/// fact rows.
///
/// # Errors
/// A storage error (the caller rolls back).
pub fn rebuild(db: &dyn WarehouseDb, zone: &Zone) -> Result<u64, LedgerError> {
    wh_build::rebuild(db, zone)
}

impl Ledger {
    /// Whether posting a batch maintains the warehouse (on by default).
    /// While it is off, batches post as before and the warehouse falls
    /// behind: it is marked stale, and [`Ledger::rebuild_warehouse`]
    /// brings it up to date. The setting lasts as long as this `Ledger`.
    pub fn set_warehouse(&mut self, enabled: bool) {
        self.warehouse = enabled;
    }

    /// Whether posting maintains the warehouse ([`Ledger::set_warehouse`]).
    pub fn warehouse_enabled(&self) -> bool {
        self.warehouse
    }

    /// Empties the warehouse and builds it again from the books, in one
    /// transaction; returns the number of transaction fact rows (one per
    /// posted card transaction).
    ///
    /// # Errors
    /// A storage error (then nothing changed).
    pub fn rebuild_warehouse(&mut self) -> Result<u64, LedgerError> {
        let tx = self.conn.transaction()?;
        let n = wh_build::rebuild(&tx, &self.wh_zone)?;
        tx.commit()?;
        Ok(n)
    }

    /// Records `zone` as the warehouse's: local dates, days, weeks and
    /// months of every fact and report are read in it. Changing it
    /// rebuilds the warehouse (the date keys change). A new ledger's zone
    /// is UTC (`docs/warehouse.md`).
    ///
    /// # Errors
    /// [`LedgerError::Malformed`] for a zone without an IANA name (it could
    /// not be recorded), or a storage error (then nothing changed).
    pub fn set_warehouse_zone(&mut self, zone: &Zone) -> Result<(), LedgerError> {
        let Some(name) = zone.name() else {
            return Err(LedgerError::Malformed(
                "the warehouse's time zone needs an IANA name (e.g. Europe/Paris)".into(),
            ));
        };
        let name = name.to_owned();
        if self.wh_zone.name() == Some(name.as_str()) {
            return Ok(());
        }
        let tx = self.conn.transaction()?;
        wh_build::set_meta(&tx, "zone", Some(&name))?;
        wh_build::rebuild(&tx, zone)?;
        tx.commit()?;
        self.wh_zone = zone.clone();
        Ok(())
    }

    /// The warehouse's zone ([`Ledger::set_warehouse_zone`]).
    pub fn warehouse_zone(&self) -> &Zone {
        &self.wh_zone
    }

    /// A value that changes whenever the ledger's database changes: a
    /// commit by another connection (SQLite's `data_version`) or a row
    /// changed through this one. Equal stamps mean the same figures, so a
    /// reader may keep what it computed (the dashboard server does).
    ///
    /// # Errors
    /// A storage error.
    pub fn change_stamp(&self) -> Result<(i64, u64), LedgerError> {
        let version: i64 = self.conn.query_row("PRAGMA data_version", [], |r| r.get(0))?;
        Ok((version, self.conn.total_changes()))
    }

    /// Marks the warehouse stale before a batch posts without it.
    pub(crate) fn note_unmaintained(&self) -> Result<(), LedgerError> {
        if !self.warehouse {
            wh_build::set_meta(&self.conn, "stale", Some("1"))?;
        }
        Ok(())
    }
}

/// A period of the performance reports, in the warehouse's zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    /// A local day, labelled `YYYY-MM-DD`.
    Day,
    /// An ISO 8601 week (Monday to Sunday), labelled `YYYY-Www`.
    Week,
    /// A calendar month, labelled `YYYY-MM`.
    Month,
}

impl Period {
    /// The `wh_dim_date` column holding this period's label.
    fn column(self) -> &'static str {
        match self {
            Self::Day => "dd.date",
            Self::Week => "dd.iso_week",
            Self::Month => "dd.month_label",
        }
    }
}

/// What the warehouse knows of one customer — or of one anonymous card
/// (a card no registered customer holds, or held by an erased one), which
/// counts as a customer of its own.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CustomerFacts {
    /// The registered customer (`None`: an anonymous card).
    pub customer_id: Option<u64>,
    /// The customer's cards with transactions (hex), in order.
    pub cards: Vec<String>,
    /// The customer's household (hex, from the profile).
    pub household: Option<String>,
    /// Purchases: posted `earn` transactions.
    pub purchases: u64,
    /// Visits: distinct local days with a purchase.
    pub visits: u64,
    /// The first purchase (Unix seconds).
    pub first_visit: Option<u32>,
    /// The last purchase (Unix seconds).
    pub last_visit: Option<u32>,
    /// The first purchase's local date (`YYYY-MM-DD`).
    pub first_visit_date: Option<String>,
    /// The last purchase's local date (`YYYY-MM-DD`).
    pub last_visit_date: Option<String>,
    /// Money spent, minor units: purchase amounts minus the amounts of
    /// their refunds.
    pub spend_minor: i64,
    /// Points of the purchases (before refunds).
    pub points_earned: u64,
    /// Points redeemed (before refunds of redemptions).
    pub points_redeemed: u64,
    /// The store of most purchases (store number, name); ties go to the
    /// lower number.
    pub favourite_store: Option<(u32, String)>,
    /// The category of the most money spent; ties go to the name first in
    /// order.
    pub favourite_category: Option<String>,
    /// The local day numbers (days since 1970-01-01) of the visits, in
    /// order: for BG/NBD, `x` = visits − 1, `t_x` = last − first, `T` =
    /// `today` − first.
    pub visit_days: Vec<i32>,
    /// The money of each visit's purchases (minor units), one per entry of
    /// `visit_days`.
    pub visit_spend_minor: Vec<i64>,
    /// The local day number of `now`.
    pub today: i32,
}

/// Customers of a first-visit month active some months later.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CohortCell {
    /// The month of the customers' first visit (`YYYY-MM`).
    pub cohort: String,
    /// Months after that month (0 = the first month: the cohort's size).
    pub months_after: u32,
    /// Customers of the cohort with a visit in that month.
    pub active: u64,
}

/// A store's figures in one period.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StorePeriodRow {
    /// The period's label.
    pub period: String,
    /// The store number.
    pub store_id: u32,
    /// The store's name.
    pub store: String,
    /// Purchases.
    pub purchases: u64,
    /// Distinct customers (anonymous cards each count as one).
    pub customers: u64,
    /// Money: purchase amounts minus refunded amounts (minor units).
    pub spend_minor: i64,
    /// Points of purchases.
    pub points_issued: u64,
    /// Points redeemed.
    pub points_redeemed: u64,
}

/// A category's figures in one period.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CategoryPeriodRow {
    /// The period's label.
    pub period: String,
    /// The category.
    pub category: String,
    /// Purchases with this category.
    pub purchases: u64,
    /// Distinct customers (anonymous cards each count as one).
    pub customers: u64,
    /// Money attributed to the category (minor units; refunds not
    /// deducted).
    pub spend_minor: i64,
}

/// The points economy in one period.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PointsPeriodRow {
    /// The period's label.
    pub period: String,
    /// Points of purchases, minus the points of their refunds.
    pub issued: i64,
    /// Points redeemed, minus the points of refunded redemptions.
    pub redeemed: i64,
    /// Issuer adjustments: credits minus debits.
    pub adjusted: i64,
    /// The liability at the period's end: every posted point so far
    /// (issued − redeemed + adjusted, cumulative).
    pub outstanding: i64,
    /// `redeemed / issued` of the period (`None` when nothing was issued).
    pub redemption_rate: Option<f64>,
}

/// A household's figures.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HouseholdRow {
    /// The household (hex).
    pub household: String,
    /// Its registered customers with cards.
    pub customers: u64,
    /// Their cards.
    pub cards: u64,
    /// Visits: distinct (customer, local day) pairs with a purchase.
    pub visits: u64,
    /// Money spent (purchases minus refunds, minor units).
    pub spend_minor: i64,
    /// Points of purchases.
    pub points: u64,
}

/// One eligible card's outcome in a campaign.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CampaignCard {
    /// The card (hex).
    pub card_id: String,
    /// Whether the card is in the campaign's control group
    /// ([`tessera_rules::offers::in_control`]).
    pub control: bool,
    /// Visits during the campaign's days (0 counts).
    pub visits: u64,
    /// Money spent during the campaign's days (0 counts).
    pub spend_minor: i64,
}

/// A campaign and the outcome of each eligible card.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CampaignOutcome {
    /// The campaign's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its kind (`birthday_bonus`, `nth_visit`, `preferred_category`,
    /// `tier`).
    pub kind: String,
    /// First day (`YYYY-MM-DD`).
    pub valid_from: String,
    /// Last day (`YYYY-MM-DD`).
    pub valid_until: String,
    /// Share held out, percent.
    pub holdout_percent: u8,
    /// The eligible cards (`docs/warehouse.md`), by card id.
    pub cards: Vec<CampaignCard>,
}

/// One transaction of a customer, for a drill-down.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PurchaseRow {
    /// The card (hex).
    pub card_id: String,
    /// The card's counter.
    pub counter: u32,
    /// The transaction type (`earn`, `redeem`, `refund-earn`, ...).
    pub tx_type: String,
    /// The card's time (Unix seconds).
    pub time: u32,
    /// Its local date.
    pub date: String,
    /// The store (number, name), when its decision is known.
    pub store: Option<(u32, String)>,
    /// Money (purchase amount, or refunded amount), minor units.
    pub amount_minor: i64,
    /// Points.
    pub points: u32,
    /// Amount per category.
    pub categories: Vec<(String, i64)>,
    /// Points per campaign or policy rule.
    pub rules: Vec<(String, i64)>,
}

/// One subject of the customer facts: a customer or an anonymous card.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
enum Subject {
    Customer(i64),
    Card(i64),
}

fn subject(customer_key: Option<i64>, card_key: i64) -> Subject {
    customer_key.map_or(Subject::Card(card_key), Subject::Customer)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn label_of_day(day: i32) -> String {
    tessera_protocol::profile::Date::from_days_since_epoch(i64::from(day)).to_string()
}

/// The warehouse's reports, on whichever database holds it: the embedded
/// SQLite [`Ledger`] or the PostgreSQL backend. The queries are written
/// once ([`crate::db`]); a backend gives the database and the warehouse's
/// zone.
pub trait Warehouse {
    /// The database the warehouse's tables are read from.
    fn warehouse_db(&self) -> &dyn WarehouseDb;

    /// The zone of the warehouse's local dates ([`Ledger::set_warehouse_zone`]).
    fn warehouse_zone(&self) -> &Zone;

    /// Empties the warehouse and builds it again from the books, in one
    /// transaction; returns the number of transaction fact rows.
    ///
    /// # Errors
    /// A storage error (then nothing changed).
    fn rebuild_warehouse(&mut self) -> Result<u64, LedgerError>;

    /// A value that changes whenever the books do (a cache of reports is
    /// good while it holds): never the same across a committed change.
    ///
    /// # Errors
    /// A storage error.
    fn change_stamp(&self) -> Result<(i64, u64), LedgerError>;

    /// The points outstanding and their value at `minor_units_per_point`
    /// (as [`Ledger::liability`]), from the books beside the warehouse.
    ///
    /// # Errors
    /// A storage error.
    fn liability(&self, minor_units_per_point: u64) -> Result<crate::LiabilityReport, LedgerError> {
        crate::reports::liability(self.warehouse_db(), minor_units_per_point)
    }

    /// Reconciliation per terminal and settlement day (as
    /// [`Ledger::reconciliation`]), from the books beside the warehouse.
    ///
    /// # Errors
    /// [`LedgerError::UnknownTerminal`] for a terminal never registered; a
    /// storage error.
    fn reconciliation(
        &self,
        date: Option<tessera_protocol::profile::Date>,
        terminal: Option<u32>,
        tz: &Zone,
    ) -> Result<crate::ReconciliationReport, LedgerError> {
        crate::reports::reconciliation(self.warehouse_db(), date, terminal, tz)
    }

    /// Whether the ledger is sound: the books against the postings (as
    /// [`Ledger::verify`]), and the storage where the backend can scan it
    /// here (the SQLite file; a PostgreSQL server keeps its own).
    ///
    /// # Errors
    /// A storage error.
    fn soundness(&self) -> Result<crate::Soundness, LedgerError> {
        Ok(crate::Soundness {
            storage_checked: false,
            problems: crate::reports::books_problems(self.warehouse_db())?,
        })
    }

    /// Whether every point is explained (as [`Ledger::explanation`]), from
    /// the books beside the warehouse.
    ///
    /// # Errors
    /// A storage error.
    fn explanation(&self) -> Result<crate::Explanation, LedgerError> {
        crate::reports::explanation(self.warehouse_db())
    }

    /// Calls `f` with every exception, oldest first, one at a time (as
    /// [`Ledger::each_exception`]).
    ///
    /// # Errors
    /// A storage error, or `f`'s.
    fn each_exception(
        &self,
        f: &mut dyn FnMut(crate::Exception) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        crate::reports::each_exception(self.warehouse_db(), f)
    }

    /// Whether the warehouse is behind the books until
    /// [`Warehouse::rebuild_warehouse`]: something changed them while its
    /// maintenance was off ([`Ledger::set_warehouse`]: a batch, a card
    /// registered, replaced or erased, a store, a campaign file), or the
    /// ledger was upgraded from a version without a warehouse with
    /// postings in it.
    ///
    /// # Errors
    /// A storage error.
    fn warehouse_stale(&self) -> Result<bool, LedgerError> {
        Ok(wh_build::meta(self.warehouse_db(), "stale")?.is_some())
    }

    /// Visit frequency, recency, favourite store and RFM segment per
    /// customer (and per anonymous card), as of `now`, from the books.
    ///
    /// # Errors
    /// A storage error.
    fn customers_report(&self, now: u32) -> Result<crate::CustomersReport, LedgerError> {
        crate::reports::customers(self.warehouse_db(), now)
    }
    /// Per customer (and per anonymous card), what the warehouse knows:
    /// see [`CustomerFacts`]. Transactions after `now` are left out.
    /// Ordered by customer id, then the anonymous cards by card id.
    ///
    /// # Errors
    /// A storage error.
    fn customer_facts(&self, now: u32) -> Result<Vec<CustomerFacts>, LedgerError> {
        use std::collections::{BTreeMap, BTreeSet};
        #[derive(Default)]
        struct Acc {
            customer_id: Option<u64>,
            cards: BTreeSet<String>,
            household: Option<String>,
            purchases: u64,
            first: Option<u32>,
            last: Option<u32>,
            spend: i64,
            earned: u64,
            redeemed: u64,
            days: BTreeMap<i32, i64>,
            stores: BTreeMap<(u32, String), u64>,
            categories: BTreeMap<String, i64>,
        }
        let mut acc: BTreeMap<Subject, Acc> = BTreeMap::new();
        let db = self.warehouse_db();
        db.each(
            "SELECT f.customer_key, f.card_key, c.card_id, cu.customer_id, h.household, f.tx_type, f.points,
                    f.amount_minor, f.time, f.date_key, s.store_id, s.name
             FROM wh_fact_tx f
             JOIN wh_dim_card c ON c.card_key = f.card_key
             LEFT JOIN wh_dim_customer cu ON cu.customer_key = f.customer_key
             LEFT JOIN wh_dim_household h ON h.household_key = f.household_key
             LEFT JOIN wh_dim_store s ON s.store_key = f.store_key
             WHERE f.time <= ?1
             ORDER BY f.card_key, f.counter",
            &[SqlValue::from(now)],
            &mut |r| {
                let (ck, card_key) = (r.opt_i64(0)?, r.i64(1)?);
                let a = acc.entry(subject(ck, card_key)).or_default();
                a.cards.insert(hex::encode_upper(r.blob(2)?));
                a.customer_id = r.opt_i64(3)?.map(to_u64);
                a.household = r.opt_blob(4)?.map(hex::encode_upper);
                let (tx_type, points, amount, time, day): (String, u32, i64, u32, i32) =
                    (r.text(5)?, r.int(6)?, r.i64(7)?, r.int(8)?, r.int(9)?);
                match tx_type.as_str() {
                    "earn" => {
                        a.purchases += 1;
                        a.spend += amount;
                        a.earned += u64::from(points);
                        a.first = Some(a.first.map_or(time, |f| f.min(time)));
                        a.last = Some(a.last.map_or(time, |l| l.max(time)));
                        *a.days.entry(day).or_default() += amount;
                        if let (Some(id), Some(name)) = (r.opt_int::<u32>(10)?, r.opt_text(11)?) {
                            *a.stores.entry((id, name)).or_default() += 1;
                        }
                    }
                    "refund-earn" => a.spend -= amount,
                    "redeem" => a.redeemed += u64::from(points),
                    _ => {}
                }
                Ok(())
            },
        )?;
        db.each(
            "SELECT f.customer_key, f.card_key, cat.name, CAST(SUM(fc.amount_minor) AS BIGINT)
             FROM wh_fact_category fc
             JOIN wh_fact_tx f ON f.tx_key = fc.tx_key
             JOIN wh_dim_category cat ON cat.category_key = fc.category_key
             WHERE f.time <= ?1
             GROUP BY f.customer_key, f.card_key, cat.name",
            &[SqlValue::from(now)],
            &mut |r| {
                if let Some(a) = acc.get_mut(&subject(r.opt_i64(0)?, r.i64(1)?)) {
                    *a.categories.entry(r.text(2)?).or_default() += r.i64(3)?;
                }
                Ok(())
            },
        )?;
        let zone = self.warehouse_zone();
        let today = i32::try_from(zone.date(now).days_since_epoch()).unwrap_or(0);
        let mut out: Vec<CustomerFacts> = acc
            .into_values()
            .map(|a| {
                let favourite_store = a
                    .stores
                    .iter()
                    .max_by(|x, y| x.1.cmp(y.1).then_with(|| y.0.cmp(x.0)))
                    .map(|(k, _)| k.clone());
                let favourite_category = a
                    .categories
                    .iter()
                    .max_by(|x, y| x.1.cmp(y.1).then_with(|| y.0.cmp(x.0)))
                    .map(|(k, _)| k.clone());
                CustomerFacts {
                    customer_id: a.customer_id,
                    cards: a.cards.into_iter().collect(),
                    household: a.household,
                    purchases: a.purchases,
                    visits: a.days.len() as u64,
                    first_visit: a.first,
                    last_visit: a.last,
                    first_visit_date: a.first.map(|t| zone.date(t).to_string()),
                    last_visit_date: a.last.map(|t| zone.date(t).to_string()),
                    spend_minor: a.spend,
                    points_earned: a.earned,
                    points_redeemed: a.redeemed,
                    favourite_store,
                    favourite_category,
                    visit_days: a.days.keys().copied().collect(),
                    visit_spend_minor: a.days.values().copied().collect(),
                    today,
                }
            })
            .collect();
        out.sort_by(|x, y| {
            (x.customer_id.is_none(), x.customer_id, &x.cards).cmp(&(y.customer_id.is_none(), y.customer_id, &y.cards))
        });
        Ok(out)
    }

    /// Cohorts by the month of the first visit and their activity in each
    /// month after (anonymous cards each count as one customer); the cell
    /// of `months_after` 0 is the cohort's size. Ordered by cohort and
    /// month; months without an active customer are left out.
    ///
    /// # Errors
    /// A storage error.
    fn cohorts(&self) -> Result<Vec<CohortCell>, LedgerError> {
        use std::collections::{BTreeMap, BTreeSet};
        let mut months: BTreeMap<Subject, BTreeSet<(i32, i32)>> = BTreeMap::new();
        self.warehouse_db().each(
            "SELECT DISTINCT f.customer_key, f.card_key, dd.year, dd.month
             FROM wh_fact_tx f JOIN wh_dim_date dd ON dd.date_key = f.date_key
             WHERE f.tx_type = 'earn'",
            &[],
            &mut |r| {
                months
                    .entry(subject(r.opt_i64(0)?, r.i64(1)?))
                    .or_default()
                    .insert((r.int(2)?, r.int(3)?));
                Ok(())
            },
        )?;
        let mut cells: BTreeMap<(String, u32), u64> = BTreeMap::new();
        for set in months.values() {
            let Some(&(y0, m0)) = set.iter().next() else { continue };
            let cohort = format!("{y0:04}-{m0:02}");
            for &(y, m) in set {
                let after = u32::try_from((y - y0) * 12 + (m - m0)).unwrap_or(0);
                *cells.entry((cohort.clone(), after)).or_default() += 1;
            }
        }
        Ok(cells
            .into_iter()
            .map(|((cohort, months_after), active)| CohortCell {
                cohort,
                months_after,
                active,
            })
            .collect())
    }

    /// Each store's figures per period (stores of the purchases' decisions;
    /// a transaction whose decision has not reached the office has no
    /// store and is left out). Ordered by period, then store number.
    ///
    /// # Errors
    /// A storage error.
    fn store_performance(&self, period: Period) -> Result<Vec<StorePeriodRow>, LedgerError> {
        let sql = format!(
            "SELECT {p}, s.store_id, s.name,
                 CAST(SUM(CASE WHEN f.tx_type = 'earn' THEN 1 ELSE 0 END) AS BIGINT),
                 COUNT(DISTINCT CASE WHEN f.tx_type = 'earn' THEN COALESCE(f.customer_key, -f.card_key) END),
                 CAST(SUM(CASE WHEN f.tx_type = 'earn' THEN f.amount_minor
                          WHEN f.tx_type = 'refund-earn' THEN -f.amount_minor ELSE 0 END) AS BIGINT),
                 CAST(SUM(CASE WHEN f.tx_type = 'earn' THEN f.points ELSE 0 END) AS BIGINT),
                 CAST(SUM(CASE WHEN f.tx_type = 'redeem' THEN f.points ELSE 0 END) AS BIGINT)
             FROM wh_fact_tx f
             JOIN wh_dim_store s ON s.store_key = f.store_key
             JOIN wh_dim_date dd ON dd.date_key = f.date_key
             GROUP BY {p}, s.store_id, s.name
             ORDER BY {p}, s.store_id",
            p = period.column()
        );
        self.warehouse_db().rows(&sql, &[], |r| {
            Ok(StorePeriodRow {
                period: r.text(0)?,
                store_id: r.int(1)?,
                store: r.text(2)?,
                purchases: r.count(3)?,
                customers: r.count(4)?,
                spend_minor: r.i64(5)?,
                points_issued: r.count(6)?,
                points_redeemed: r.count(7)?,
            })
        })
    }

    /// Each category's figures per period. Ordered by period, then
    /// category.
    ///
    /// # Errors
    /// A storage error.
    fn category_performance(&self, period: Period) -> Result<Vec<CategoryPeriodRow>, LedgerError> {
        let sql = format!(
            "SELECT {p}, cat.name, COUNT(*), COUNT(DISTINCT COALESCE(f.customer_key, -f.card_key)),
                 CAST(SUM(fc.amount_minor) AS BIGINT)
             FROM wh_fact_category fc
             JOIN wh_fact_tx f ON f.tx_key = fc.tx_key
             JOIN wh_dim_category cat ON cat.category_key = fc.category_key
             JOIN wh_dim_date dd ON dd.date_key = f.date_key
             GROUP BY {p}, cat.name
             ORDER BY {p}, cat.name",
            p = period.column()
        );
        self.warehouse_db().rows(&sql, &[], |r| {
            Ok(CategoryPeriodRow {
                period: r.text(0)?,
                category: r.text(1)?,
                purchases: r.count(2)?,
                customers: r.count(3)?,
                spend_minor: r.i64(4)?,
            })
        })
    }

    /// The points economy per period, in order: issued, redeemed,
    /// adjusted, the outstanding liability at each period's end and the
    /// redemption rate. Tessera's points do not expire.
    ///
    /// # Errors
    /// A storage error.
    fn points_economy(&self, period: Period) -> Result<Vec<PointsPeriodRow>, LedgerError> {
        let sql = format!(
            "SELECT {p},
                 CAST(SUM(CASE f.tx_type WHEN 'earn' THEN f.points WHEN 'refund-earn' THEN -f.points ELSE 0 END)
                     AS BIGINT),
                 CAST(SUM(CASE f.tx_type WHEN 'redeem' THEN f.points WHEN 'refund-redeem' THEN -f.points ELSE 0 END)
                     AS BIGINT),
                 CAST(SUM(CASE f.tx_type WHEN 'issuer-credit' THEN f.points WHEN 'issuer-debit' THEN -f.points
                     ELSE 0 END) AS BIGINT),
                 CAST(SUM(f.delta) AS BIGINT)
             FROM wh_fact_tx f JOIN wh_dim_date dd ON dd.date_key = f.date_key
             GROUP BY {p}
             ORDER BY {p}",
            p = period.column()
        );
        let rows: Vec<(String, i64, i64, i64, i64)> = self.warehouse_db().rows(&sql, &[], |r| {
            Ok((r.text(0)?, r.i64(1)?, r.i64(2)?, r.i64(3)?, r.i64(4)?))
        })?;
        let mut outstanding = 0i64;
        Ok(rows
            .into_iter()
            .map(|(period, issued, redeemed, adjusted, delta)| {
                outstanding += delta;
                #[allow(clippy::cast_precision_loss)]
                let redemption_rate = (issued > 0).then(|| redeemed as f64 / issued as f64);
                PointsPeriodRow {
                    period,
                    issued,
                    redeemed,
                    adjusted,
                    outstanding,
                    redemption_rate,
                }
            })
            .collect())
    }

    /// Each household's figures, by household.
    ///
    /// # Errors
    /// A storage error.
    fn households(&self) -> Result<Vec<HouseholdRow>, LedgerError> {
        // Each figure grouped once over its table, then joined to the
        // households: a correlated subquery per household would read the
        // facts once per household (no index by household).
        self.warehouse_db().rows(
            "WITH cards AS (
                 SELECT household_key, COUNT(DISTINCT customer_key) AS customers, COUNT(*) AS cards
                 FROM wh_dim_card WHERE household_key IS NOT NULL GROUP BY household_key),
             visits AS (
                 SELECT household_key, COUNT(*) AS visits FROM (
                     SELECT DISTINCT household_key, customer_key, date_key FROM wh_fact_tx
                     WHERE household_key IS NOT NULL AND tx_type = 'earn') v
                 GROUP BY household_key),
             facts AS (
                 SELECT household_key,
                     SUM(CASE tx_type WHEN 'earn' THEN amount_minor WHEN 'refund-earn' THEN -amount_minor ELSE 0 END)
                         AS spend,
                     SUM(CASE WHEN tx_type = 'earn' THEN points ELSE 0 END) AS points
                 FROM wh_fact_tx WHERE household_key IS NOT NULL GROUP BY household_key)
             SELECT h.household, COALESCE(c.customers, 0), COALESCE(c.cards, 0), COALESCE(v.visits, 0),
                 CAST(COALESCE(f.spend, 0) AS BIGINT), CAST(COALESCE(f.points, 0) AS BIGINT)
             FROM wh_dim_household h
             LEFT JOIN cards c ON c.household_key = h.household_key
             LEFT JOIN visits v ON v.household_key = h.household_key
             LEFT JOIN facts f ON f.household_key = h.household_key
             ORDER BY h.household",
            &[],
            |r| {
                Ok(HouseholdRow {
                    household: hex::encode_upper(r.blob(0)?),
                    customers: r.count(1)?,
                    cards: r.count(2)?,
                    visits: r.count(3)?,
                    spend_minor: r.i64(4)?,
                    points: r.count(5)?,
                })
            },
        )
    }

    /// Every registered campaign with the outcome of each eligible card
    /// (`docs/warehouse.md`, "Campaign outcomes"): a card is eligible when
    /// its first purchase falls before the campaign's first day and, for a
    /// tier campaign, its customer is of that tier; `control` is its
    /// holdout group; visits and spend are those of the campaign's days.
    /// Who got points plays no part. Ordered by campaign id, then card.
    ///
    /// # Errors
    /// A storage error.
    fn campaign_outcomes(&self) -> Result<Vec<CampaignOutcome>, LedgerError> {
        type CampaignRow = (String, String, String, Option<u8>, String, String, i64, i64, u8);
        let db = self.warehouse_db();
        let campaigns: Vec<CampaignRow> = db.rows(
            "SELECT campaign_id, name, kind, tier, valid_from, valid_until, first_day, last_day, holdout_percent
             FROM wh_dim_campaign ORDER BY campaign_id",
            &[],
            |r| {
                Ok((
                    r.text(0)?,
                    r.text(1)?,
                    r.text(2)?,
                    r.opt_int(3)?,
                    r.text(4)?,
                    r.text(5)?,
                    r.i64(6)?,
                    r.i64(7)?,
                    r.int(8)?,
                ))
            },
        )?;
        let mut out = Vec::new();
        for (id, name, kind, tier, valid_from, valid_until, first_day, last_day, holdout) in campaigns {
            let cards = db
                .rows(
                    "SELECT c.card_id,
                     COUNT(DISTINCT CASE WHEN f.tx_type = 'earn' AND f.date_key BETWEEN ?2 AND ?3
                         THEN f.date_key END),
                     CAST(COALESCE(SUM(CASE WHEN f.date_key BETWEEN ?2 AND ?3 THEN
                         CASE f.tx_type WHEN 'earn' THEN f.amount_minor WHEN 'refund-earn' THEN -f.amount_minor
                         ELSE 0 END ELSE 0 END), 0) AS BIGINT)
                 FROM wh_dim_card c
                 JOIN wh_fact_tx f ON f.card_key = c.card_key
                 LEFT JOIN wh_dim_customer cu ON cu.customer_key = c.customer_key
                 WHERE (CAST(?1 AS BIGINT) IS NULL OR cu.tier = ?1)
                 GROUP BY c.card_id
                 HAVING MIN(CASE WHEN f.tx_type = 'earn' THEN f.date_key END) < ?2
                 ORDER BY c.card_id",
                    &[
                        SqlValue::from(tier.map(i64::from)),
                        SqlValue::Int(first_day),
                        SqlValue::Int(last_day),
                    ],
                    |r| Ok((r.blob(0)?, r.count(1)?, r.i64(2)?)),
                )?
                .into_iter()
                .map(|(card, visits, spend_minor)| {
                    let mut id8 = [0u8; 8];
                    let n = card.len().min(8);
                    id8[..n].copy_from_slice(&card[..n]);
                    CampaignCard {
                        card_id: hex::encode_upper(&card),
                        control: tessera_rules::offers::in_control(&id, &id8, holdout),
                        visits,
                        spend_minor,
                    }
                })
                .collect();
            out.push(CampaignOutcome {
                id,
                name,
                kind,
                valid_from,
                valid_until,
                holdout_percent: holdout,
                cards,
            });
        }
        Ok(out)
    }

    /// A customer's transactions, oldest first, with their store,
    /// categories and the rules that gave the points (empty for an
    /// unknown or erased customer).
    ///
    /// # Errors
    /// A storage error.
    fn customer_purchases(&self, customer_id: u64) -> Result<Vec<PurchaseRow>, LedgerError> {
        type Row = (
            i64,
            Vec<u8>,
            u32,
            String,
            u32,
            i32,
            Option<u32>,
            Option<String>,
            i64,
            u32,
        );
        // Through the customer's cards (`wh_dim_card_customer`), then each
        // card's facts by their key: the facts have no index by customer.
        let db = self.warehouse_db();
        let rows: Vec<Row> = db.rows(
            "SELECT f.tx_key, f.card_id, f.counter, f.tx_type, f.time, f.date_key, s.store_id, s.name,
                        f.amount_minor, f.points
                 FROM wh_dim_customer cu CROSS JOIN wh_dim_card c CROSS JOIN wh_fact_tx f
                 LEFT JOIN wh_dim_store s ON s.store_key = f.store_key
                 WHERE cu.customer_id = ?1 AND c.customer_key = cu.customer_key AND f.card_id = c.card_id
                     AND f.customer_key = cu.customer_key
                 ORDER BY f.time, f.card_id, f.counter",
            &[SqlValue::from(customer_id)],
            |r| {
                Ok((
                    r.i64(0)?,
                    r.blob(1)?,
                    r.int(2)?,
                    r.text(3)?,
                    r.int(4)?,
                    r.int(5)?,
                    r.opt_int(6)?,
                    r.opt_text(7)?,
                    r.i64(8)?,
                    r.int(9)?,
                ))
            },
        )?;
        let mut out = Vec::with_capacity(rows.len());
        for (tx_key, card, counter, tx_type, time, day, store_id, store, amount_minor, points) in rows {
            let categories = db.rows(
                "SELECT cat.name, fc.amount_minor FROM wh_fact_category fc
                 JOIN wh_dim_category cat ON cat.category_key = fc.category_key
                 WHERE fc.tx_key = ?1 ORDER BY cat.name",
                &[SqlValue::Int(tx_key)],
                |r| Ok((r.text(0)?, r.i64(1)?)),
            )?;
            let rules = db.rows(
                "SELECT source, points FROM wh_fact_points WHERE tx_key = ?1 ORDER BY source",
                &[SqlValue::Int(tx_key)],
                |r| Ok((r.text(0)?, r.i64(1)?)),
            )?;
            out.push(PurchaseRow {
                card_id: hex::encode_upper(&card),
                counter,
                tx_type,
                time,
                date: label_of_day(day),
                store: store_id.zip(store),
                amount_minor,
                points,
                categories,
                rules,
            });
        }
        Ok(out)
    }
}

impl Warehouse for Ledger {
    fn warehouse_db(&self) -> &dyn WarehouseDb {
        &self.conn
    }

    fn warehouse_zone(&self) -> &Zone {
        &self.wh_zone
    }

    fn rebuild_warehouse(&mut self) -> Result<u64, LedgerError> {
        Ledger::rebuild_warehouse(self)
    }

    fn change_stamp(&self) -> Result<(i64, u64), LedgerError> {
        Ledger::change_stamp(self)
    }

    /// SQLite's full `integrity_check`, then the books.
    fn soundness(&self) -> Result<crate::Soundness, LedgerError> {
        Ok(crate::Soundness {
            storage_checked: true,
            problems: Ledger::verify(self)?,
        })
    }
}
