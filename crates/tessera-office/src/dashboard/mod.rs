//! The dashboard: the office's figures as server-rendered HTML pages with
//! SVG charts drawn here, served by `office serve` under `/dashboard/`
//! behind a staff login ([`auth`]) and written as static files by
//! `office dashboard --out DIR` ([`export`]).
//!
//! The pages render given figures ([`DashboardData`]); they compute no
//! analytics. [`collect`] fills what the ledger offers and leaves the other
//! sections empty, which the pages show as "no data yet". Every figure a
//! test can compare carries its machine value:
//! `<td data-figure="overview.customers" data-value="1234">1,234</td>`.
//!
//! Nothing on a page is loaded from outside the office: no script at all,
//! one stylesheet (`dashboard.css`) beside the pages, and the
//! [`CONTENT_SECURITY_POLICY`] says so to the browser.
//!
//! ```
//! use tessera_office::dashboard::{pages, Currency, DashboardData};
//! use tessera_rules::display::Zone;
//!
//! let data = DashboardData::empty("2026-12-03 10:00", Currency::euro());
//! let site = pages(&data, &Zone::utc());
//! assert!(site.iter().any(|p| p.name == "index.html"));
//! assert!(site.iter().all(|p| !p.body.contains("<script")));
//! ```

pub mod auth;
mod html;
pub mod svg;

use std::path::Path;

use serde::Serialize;
use tessera_ledger::{CustomersReport, LedgerError, LiabilityReport, Period, Warehouse};

use crate::analytics;
pub use tessera_rules::display::Zone;

pub use html::{customer_page_of, login_page, page, pages, Page, FAVICON, STYLESHEET};

/// The `Content-Security-Policy` of every dashboard page: everything from
/// the office itself, no script at all, no frames, forms posted only back
/// to the office.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; script-src 'none'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The currency figures are shown in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Currency {
    /// The currency's code, printed after amounts (`EUR`).
    pub code: String,
    /// Minor units in one unit (100 for cents).
    pub minor_units_per_unit: u64,
    /// What one point is worth in minor units (the liability's rate).
    pub minor_units_per_point: u64,
}

impl Currency {
    /// The office's: the currency of the default till policy, a point
    /// worth 0.01 of it (the liability report's default).
    pub fn office() -> Self {
        let policy = tessera_rules::policy::Policy::default_policy();
        let per_unit = policy.points.minor_units_per_unit;
        Currency {
            code: policy.currency,
            minor_units_per_unit: per_unit,
            minor_units_per_point: tessera_rules::display::parse_amount("0.01", per_unit)
                .unwrap_or(1)
                .max(1),
        }
    }

    /// Euro cents, a point worth one cent (tests, examples).
    pub fn euro() -> Self {
        Currency {
            code: "EUR".into(),
            minor_units_per_unit: 100,
            minor_units_per_point: 1,
        }
    }
}

/// Everything the dashboard shows: plain computed values, money in minor
/// units of [`DashboardData::currency`]. A section that has no source yet
/// is empty (or `None`) and its page says "no data yet".
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DashboardData {
    /// When the figures were taken, local time of the office (`YYYY-MM-DD HH:MM`).
    pub as_of: String,
    /// The currency of every `*_minor` figure.
    pub currency: Currency,
    /// The headline figures.
    pub overview: Overview,
    /// Customer segments with their legend.
    pub segments: Vec<Segment>,
    /// Cohorts by first visit month.
    pub cohorts: Vec<Cohort>,
    /// Campaigns and their measured effect against the control group.
    pub campaigns: Vec<CampaignEffect>,
    /// Store performance by period.
    pub stores: Vec<StorePeriod>,
    /// Category performance by period.
    pub categories: Vec<CategoryPeriod>,
    /// The points economy by period.
    pub points: Vec<PointsPeriod>,
    /// One row per customer (and per anonymous card).
    pub customers: Vec<CustomerSummary>,
}

/// The headline figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Overview {
    /// Customers (and anonymous cards) with a posted transaction.
    pub customers: Option<u64>,
    /// Of them, those with a visit in the last 90 days.
    pub active_customers_90d: Option<u64>,
    /// Purchases posted.
    pub purchases: Option<u64>,
    /// Money spent in those purchases, minor units.
    pub spend_minor: Option<u64>,
    /// Points the books owe.
    pub points_outstanding: Option<i64>,
    /// Their value, minor units.
    pub liability_minor: Option<i64>,
    /// The store with the most spend, by name.
    pub top_store: Option<String>,
}

/// One customer segment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Segment {
    /// Its key (`champions`, …), as in the customers report.
    pub name: String,
    /// Its display name (`Champions`).
    pub label: String,
    /// Customers in it.
    pub customers: u64,
    /// Their spend, minor units.
    pub spend_minor: u64,
    /// The rule that puts a customer in it.
    pub rule: String,
    /// What it means for marketing.
    pub meaning: String,
}

/// Customers first seen in one month and how many came back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cohort {
    /// The month of the first visit, `YYYY-MM`.
    pub cohort: String,
    /// Customers in the cohort.
    pub size: u64,
    /// Share (0–1) of the cohort with a visit in month 0, 1, 2, … after it.
    pub retention: Vec<f64>,
}

/// A campaign's effect: treated customers against its control group.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CampaignEffect {
    /// The campaign's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Eligible customers who got the offer.
    pub treated: u64,
    /// Eligible customers held out.
    pub control: u64,
    /// Visits per treated customer.
    pub visits_treated: f64,
    /// Visits per control customer.
    pub visits_control: f64,
    /// `visits_treated - visits_control`.
    pub visits_uplift: f64,
    /// Lower bound of the uplift's confidence interval.
    pub visits_ci_low: f64,
    /// Upper bound of the uplift's confidence interval.
    pub visits_ci_high: f64,
    /// Spend uplift per customer, minor units.
    pub spend_uplift_minor: i64,
    /// Lower bound of its confidence interval, minor units.
    pub spend_ci_low_minor: i64,
    /// Upper bound of its confidence interval, minor units.
    pub spend_ci_high_minor: i64,
}

/// One store in one period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StorePeriod {
    /// The period (`YYYY-MM`).
    pub period: String,
    /// The store's name.
    pub store: String,
    /// Purchases.
    pub purchases: u64,
    /// Distinct customers.
    pub customers: u64,
    /// Spend, minor units.
    pub spend_minor: u64,
}

/// One category in one period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CategoryPeriod {
    /// The period (`YYYY-MM`).
    pub period: String,
    /// The category.
    pub category: String,
    /// Purchases with a line in it.
    pub purchases: u64,
    /// Spend in it, minor units.
    pub spend_minor: u64,
}

/// The points economy in one period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PointsPeriod {
    /// The period (`YYYY-MM`).
    pub period: String,
    /// Points issued.
    pub issued: i64,
    /// Points redeemed.
    pub redeemed: i64,
    /// Points outstanding at the end of the period.
    pub outstanding: i64,
    /// Redeemed over issued in the period (0–1), when anything was issued.
    pub redemption_rate: Option<f64>,
}

/// One customer (or anonymous card).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CustomerSummary {
    /// The page key: `c<id>` for a customer, `card-<hex>` for an anonymous card.
    pub key: String,
    /// The customer, when registered and not erased.
    pub customer_id: Option<u64>,
    /// The name, when known.
    pub name: Option<String>,
    /// The segment.
    pub segment: Option<String>,
    /// Distinct days with a transaction.
    pub visits: u64,
    /// Spend, minor units.
    pub spend_minor: u64,
    /// Expected visits in the next 90 days (BG/NBD), when fitted.
    pub expected_visits_90d: Option<f64>,
    /// Customer lifetime value, minor units, when fitted.
    pub clv_minor: Option<i64>,
    /// The store of most visits.
    pub favourite_store: Option<String>,
    /// The category of most spend.
    pub favourite_category: Option<String>,
    /// The household, when the profile names one.
    pub household: Option<String>,
    /// The customer's transactions, newest first (empty when not known).
    pub transactions: Vec<CustomerTransaction>,
}

/// One transaction in a customer's drill-down.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CustomerTransaction {
    /// Local date and time (`YYYY-MM-DD HH:MM`).
    pub date_local: String,
    /// The store's name.
    pub store: Option<String>,
    /// `earn`, `redeem`, `refund`, …
    pub tx_type: String,
    /// The purchase amount, minor units.
    pub amount_minor: Option<u64>,
    /// Signed points.
    pub points: i64,
    /// Categories of the basket.
    pub categories: Vec<String>,
}

impl DashboardData {
    /// Figures with every section empty.
    pub fn empty(as_of: &str, currency: Currency) -> Self {
        DashboardData {
            as_of: as_of.into(),
            currency,
            overview: Overview::default(),
            segments: Vec::new(),
            cohorts: Vec::new(),
            campaigns: Vec::new(),
            stores: Vec::new(),
            categories: Vec::new(),
            points: Vec::new(),
            customers: Vec::new(),
        }
    }

    /// Fills the overview, segments and customers from the ledger's
    /// customers and liability reports.
    pub fn from_reports(
        as_of: &str,
        currency: Currency,
        customers: &CustomersReport,
        liability: &LiabilityReport,
    ) -> Self {
        let mut d = DashboardData::empty(as_of, currency);
        d.overview.customers = Some(customers.rows.len() as u64);
        d.overview.active_customers_90d = Some(customers.rows.iter().filter(|r| r.recency_days <= 90).count() as u64);
        d.overview.spend_minor = Some(customers.rows.iter().map(|r| r.spend_minor).sum());
        d.overview.points_outstanding = Some(liability.points_outstanding);
        d.overview.liability_minor = Some(liability.value_minor);
        for l in &customers.legend {
            let n = customers.segments.get(&l.segment).copied().unwrap_or(0);
            if n == 0 {
                continue;
            }
            d.segments.push(Segment {
                name: l.segment.clone(),
                label: l.name.clone(),
                customers: n,
                spend_minor: customers
                    .rows
                    .iter()
                    .filter(|r| r.segment == l.segment)
                    .map(|r| r.spend_minor)
                    .sum(),
                rule: l.rule.clone(),
                meaning: l.meaning.clone(),
            });
        }
        d.customers = customers
            .rows
            .iter()
            .map(|r| CustomerSummary {
                key: match (r.customer_id, r.cards.first()) {
                    (Some(id), _) => format!("c{id}"),
                    (None, Some(card)) => format!("card-{}", card.to_ascii_lowercase()),
                    (None, None) => "card-unknown".into(),
                },
                customer_id: r.customer_id,
                name: r.name.clone(),
                segment: Some(r.segment.clone()),
                visits: r.visits,
                spend_minor: r.spend_minor,
                expected_visits_90d: None,
                clv_minor: None,
                favourite_store: r.favourite_store.clone(),
                favourite_category: r.favourite_category.clone(),
                household: None,
                transactions: Vec::new(),
            })
            .collect();
        d
    }
}

impl DashboardData {
    /// Adds the cohorts report.
    pub fn with_cohorts(&mut self, r: &analytics::CohortsReport) {
        self.cohorts = r
            .rows
            .iter()
            .map(|c| Cohort {
                cohort: c.cohort.clone(),
                size: c.size,
                retention: c.retention.clone(),
            })
            .collect();
    }

    /// Adds the campaigns report: the campaigns with an uplift estimate
    /// (a control group of at least 2 cards, and 2 treated).
    pub fn with_campaigns(&mut self, r: &analytics::CampaignsReport) {
        #[allow(clippy::cast_possible_truncation)]
        let minor = |v: f64| v.round() as i64;
        self.campaigns = r
            .rows
            .iter()
            .filter_map(|c| {
                let (v, s) = (c.visits.as_ref()?, c.spend_minor.as_ref()?);
                Some(CampaignEffect {
                    id: c.id.clone(),
                    name: c.name.clone(),
                    treated: c.treated,
                    control: c.control,
                    visits_treated: v.treated_mean,
                    visits_control: v.control_mean,
                    visits_uplift: v.difference,
                    visits_ci_low: v.ci95_low,
                    visits_ci_high: v.ci95_high,
                    spend_uplift_minor: minor(s.difference),
                    spend_ci_low_minor: minor(s.ci95_low),
                    spend_ci_high_minor: minor(s.ci95_high),
                })
            })
            .collect();
    }

    /// Adds the stores report (and the overview's top store).
    pub fn with_stores(&mut self, r: &analytics::StoresReport) {
        self.stores = r
            .rows
            .iter()
            .map(|s| StorePeriod {
                period: s.period.clone(),
                store: s.store.clone(),
                purchases: s.purchases,
                customers: s.customers,
                spend_minor: u64::try_from(s.spend_minor).unwrap_or(0),
            })
            .collect();
        self.overview.top_store = analytics::top_store(&r.rows).map(|(name, _)| name);
        self.overview.purchases = Some(r.rows.iter().map(|s| s.purchases).sum());
    }

    /// Adds the categories report.
    pub fn with_categories(&mut self, r: &analytics::CategoriesReport) {
        self.categories = r
            .rows
            .iter()
            .map(|c| CategoryPeriod {
                period: c.period.clone(),
                category: c.category.clone(),
                purchases: c.purchases,
                spend_minor: u64::try_from(c.spend_minor).unwrap_or(0),
            })
            .collect();
    }

    /// Adds the points economy report.
    pub fn with_points(&mut self, r: &analytics::PointsReport) {
        self.points = r
            .rows
            .iter()
            .map(|p| PointsPeriod {
                period: p.period.clone(),
                issued: p.issued,
                redeemed: p.redeemed,
                outstanding: p.outstanding,
                redemption_rate: p.redemption_rate,
            })
            .collect();
    }

    /// Adds each customer's predicted visits and value.
    pub fn with_clv(&mut self, r: &analytics::ClvReport) {
        let key = |id: Option<u64>, card: &str| match id {
            Some(id) => format!("c{id}"),
            None => format!("card-{}", card.to_ascii_lowercase()),
        };
        let by_key: std::collections::HashMap<String, &analytics::ClvRow> =
            r.rows.iter().map(|x| (key(x.customer_id, &x.card), x)).collect();
        for c in &mut self.customers {
            if let Some(x) = by_key.get(&c.key) {
                c.expected_visits_90d = x.expected_visits_90d.is_finite().then_some(x.expected_visits_90d);
                #[allow(clippy::cast_possible_truncation)]
                {
                    c.clv_minor = x.clv_minor.filter(|v| v.is_finite()).map(|v| v.round() as i64);
                }
            }
        }
    }
}

/// Takes the dashboard's figures from the ledger as of `now`, times in
/// `zone`, money in `currency`: the overview, segments and customers from
/// [`Warehouse::customers_report`] and [`Warehouse::liability`], the other
/// sections from the reports of [`analytics`] (the same figures as
/// `office report …`), and each registered customer's transactions.
///
/// # Errors
/// The ledger's error.
pub fn collect(
    ledger: &dyn Warehouse,
    now: u32,
    zone: &Zone,
    currency: &Currency,
) -> Result<DashboardData, LedgerError> {
    collect_for(ledger, now, zone, currency, None)
}

/// [`collect`] for one page: the drill-down transactions only of the
/// customer whose page `page` is (`customer-c42.html`), none for another
/// page; `None`: every customer's (the static export). What `office
/// serve` calls per request.
///
/// # Errors
/// The ledger's error.
pub fn collect_for(
    ledger: &dyn Warehouse,
    now: u32,
    zone: &Zone,
    currency: &Currency,
    page: Option<&str>,
) -> Result<DashboardData, LedgerError> {
    let wanted = page.map(|p| p.strip_prefix("customer-").and_then(|k| k.strip_suffix(".html")));
    let customers = ledger.customers_report(now)?;
    let liability = ledger.liability(currency.minor_units_per_point)?;
    let mut d = DashboardData::from_reports(&zone.local(now), currency.clone(), &customers, &liability);
    d.with_cohorts(&analytics::cohorts(ledger)?);
    d.with_campaigns(&analytics::campaigns(ledger)?);
    d.with_stores(&analytics::stores(ledger, Period::Month)?);
    d.with_categories(&analytics::categories(ledger, Period::Month)?);
    d.with_points(&analytics::points_economy(
        ledger,
        Period::Month,
        currency.minor_units_per_point,
    )?);
    d.with_clv(&analytics::customer_value(ledger, now)?);
    let households: std::collections::BTreeMap<u64, String> = ledger
        .customer_facts(now)?
        .into_iter()
        .filter_map(|f| Some((f.customer_id?, f.household?)))
        .collect();
    for c in &mut d.customers {
        let Some(id) = c.customer_id else { continue };
        c.household = households.get(&id).cloned();
        if wanted.is_some_and(|w| w != Some(c.key.as_str())) {
            continue;
        }
        c.transactions = customer_transactions(ledger, zone, id)?;
    }
    Ok(d)
}

/// A customer's drill-down transactions, newest first.
///
/// # Errors
/// The ledger's error.
pub fn customer_transactions(
    ledger: &dyn Warehouse,
    zone: &Zone,
    customer_id: u64,
) -> Result<Vec<CustomerTransaction>, LedgerError> {
    let mut rows = ledger.customer_purchases(customer_id)?;
    rows.reverse();
    Ok(rows
        .into_iter()
        .map(|p| CustomerTransaction {
            date_local: zone.local(p.time),
            store: p.store.map(|(_, name)| name),
            tx_type: p.tx_type,
            amount_minor: u64::try_from(p.amount_minor).ok().filter(|a| *a > 0),
            points: i64::from(p.points),
            categories: p.categories.into_iter().map(|(c, _)| c).collect(),
        })
        .collect())
}

/// Errors writing the static dashboard.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The output directory exists and is not empty.
    #[error("{0} exists and is not empty: the dashboard is written into a new or empty directory")]
    NotEmpty(std::path::PathBuf),
    /// A file or the directory could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// What.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Writes the dashboard's pages and stylesheet into `out` as static files
/// with relative links (open `index.html`): the directory is made `0700`
/// and every file `0600` (the customer pages carry names). `out` must not
/// exist or be an empty directory. Returns the files written.
///
/// # Errors
/// [`ExportError::NotEmpty`], [`ExportError::Io`].
pub fn export(data: &DashboardData, zone: &Zone, out: &Path) -> Result<Vec<std::path::PathBuf>, ExportError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ExportError::Io { path, source }
    };
    match std::fs::read_dir(out) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(ExportError::NotEmpty(out.to_owned()));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut builder = std::fs::DirBuilder::new();
            #[cfg(unix)]
            {
                use std::os::unix::fs::DirBuilderExt;
                builder.mode(0o700);
            }
            builder.create(out).map_err(io(out))?;
        }
        Err(e) => return Err(io(out)(e)),
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(out, std::fs::Permissions::from_mode(0o700)).map_err(io(out))?;
    }
    let mut written = Vec::new();
    for (name, body) in [("dashboard.css", STYLESHEET), ("favicon.svg", FAVICON)] {
        let path = out.join(name);
        tessera_crypto::files::write_new_private(&path, body.as_bytes()).map_err(io(&path))?;
        written.push(path);
    }
    for page in pages(data, zone) {
        let path = out.join(&page.name);
        tessera_crypto::files::write_new_private(&path, page.body.as_bytes()).map_err(io(&path))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tessera_ledger::CustomerRow;

    fn report() -> (CustomersReport, LiabilityReport) {
        let row = |id: Option<u64>, name: Option<&str>, segment: &str, spend: u64, recency: u32| CustomerRow {
            customer_id: id,
            name: name.map(str::to_owned),
            cards: vec!["00112233445566AA".into()],
            transactions: 3,
            visits: 2,
            first_visit: "2026-11-01".into(),
            last_visit: "2026-12-01".into(),
            recency_days: recency,
            visits_per_30_days: 2.0,
            points_earned: 100,
            points_redeemed: 0,
            spend_minor: spend,
            favourite_category: Some("bakery".into()),
            favourite_store: Some("Main <Street>".into()),
            favourite_store_id: Some(1),
            rfm: "R3F2M1".into(),
            segment: segment.into(),
        };
        let customers = CustomersReport {
            as_of: "2026-12-03".into(),
            rows: vec![
                row(Some(1), Some("<script>alert(1)</script>"), "loyal", 123_456, 2),
                row(None, None, "hibernating", 700, 200),
            ],
            segments: [("hibernating".to_owned(), 1), ("loyal".to_owned(), 1)]
                .into_iter()
                .collect(),
            legend: ["loyal", "hibernating"]
                .iter()
                .map(|k| tessera_ledger::SegmentLegendRow {
                    segment: (*k).into(),
                    name: k.to_uppercase(),
                    rule: "R >= 3".into(),
                    meaning: "regulars".into(),
                    action: "keep them".into(),
                })
                .collect(),
        };
        let liability = LiabilityReport {
            cards: 2,
            points_outstanding: 1_234,
            minor_units_per_point: 1,
            value_minor: 1_234,
            card_balances: 1_234,
            unexplained_points: 0,
            hotlisted_cards: 0,
            hotlisted_points: 0,
            pending_records: 0,
            pending_points: 0,
        };
        (customers, liability)
    }

    #[test]
    fn dashboard_figures_come_from_the_reports_and_carry_their_values() {
        let (c, l) = report();
        let d = DashboardData::from_reports("2026-12-03 10:00", Currency::euro(), &c, &l);
        assert_eq!(d.overview.customers, Some(2));
        assert_eq!(d.overview.active_customers_90d, Some(1));
        assert_eq!(d.overview.spend_minor, Some(124_156));
        assert_eq!(d.overview.liability_minor, Some(1_234));
        assert_eq!(d.customers[1].key, "card-00112233445566aa");
        let loyal = d.segments.iter().find(|s| s.name == "loyal").unwrap();
        assert_eq!((loyal.customers, loyal.spend_minor), (1, 123_456));
        assert!(!loyal.rule.is_empty() && !loyal.meaning.is_empty());
        let site = pages(&d, &Zone::utc());
        let index = &site.iter().find(|p| p.name == "index.html").unwrap().body;
        assert!(index.contains("data-figure=\"overview.spend_minor\" data-value=\"124156\">1,241.56 EUR</td>"));
        assert!(index.contains("data-figure=\"overview.points_outstanding\" data-value=\"1234\">1,234</td>"));
        let customers = &site.iter().find(|p| p.name == "customers.html").unwrap().body;
        assert!(customers.contains("data-figure=\"customers.c1.spend_minor\" data-value=\"123456\""));
        assert!(site.iter().any(|p| p.name == "customer-c1.html"));
        assert!(site.iter().any(|p| p.name == "customer-card-00112233445566aa.html"));
        for p in &site {
            assert!(!p.body.contains("<script"), "{}: markup from data is escaped", p.name);
            let outside = p.body.replace("http://www.w3.org/2000/svg", "");
            assert!(
                !outside.contains("http://") && !outside.contains("https://"),
                "{}",
                p.name
            );
            assert!(
                !p.body.contains("href=\"/") && !p.body.contains("src="),
                "{}: relative links only",
                p.name
            );
        }
        assert!(customers.contains("&lt;script&gt;"));
        assert!(page(&d, &Zone::utc(), "customer-nobody.html").is_none());
        assert!(page(&d, &Zone::utc(), "../index.html").is_none());
    }

    #[test]
    fn dashboard_empty_sections_say_no_data_yet() {
        let d = DashboardData::empty("2026-12-03 10:00", Currency::euro());
        for p in pages(&d, &Zone::utc()) {
            if p.name != "index.html" {
                assert!(p.body.contains("No data yet."), "{}", p.name);
            }
        }
        let index = page(&d, &Zone::utc(), "index.html").unwrap().body;
        assert!(index.contains("data-figure=\"overview.customers\" data-value=\"\">—</td>"));
    }

    #[test]
    fn dashboard_charts_appear_with_data() {
        let mut d = DashboardData::empty("2026-12-03 10:00", Currency::euro());
        d.cohorts.push(Cohort {
            cohort: "2026-11".into(),
            size: 10,
            retention: vec![1.0, 0.4],
        });
        d.points.push(PointsPeriod {
            period: "2026-11".into(),
            issued: 100,
            redeemed: 20,
            outstanding: 80,
            redemption_rate: Some(0.2),
        });
        d.stores.push(StorePeriod {
            period: "2026-11".into(),
            store: "Main".into(),
            purchases: 3,
            customers: 2,
            spend_minor: 5_000,
        });
        d.campaigns.push(CampaignEffect {
            id: "autumn".into(),
            name: "Autumn".into(),
            treated: 90,
            control: 10,
            visits_treated: 2.5,
            visits_control: 2.0,
            visits_uplift: 0.5,
            visits_ci_low: 0.1,
            visits_ci_high: 0.9,
            spend_uplift_minor: 1_000,
            spend_ci_low_minor: -200,
            spend_ci_high_minor: 2_200,
        });
        let z = Zone::utc();
        let cohorts = page(&d, &z, "cohorts.html").unwrap().body;
        assert!(
            cohorts.contains("<svg")
                && cohorts.contains("data-figure=\"cohorts.2026-11.retention.1\" data-value=\"0.4\"")
        );
        let points = page(&d, &z, "points.html").unwrap().body;
        assert!(points.contains("<polyline") && points.contains("data-value=\"0.2\">20.0%"));
        let stores = page(&d, &z, "stores.html").unwrap().body;
        assert!(
            stores.contains("<polyline") && stores.contains("No data yet."),
            "categories are still empty"
        );
        let campaigns = page(&d, &z, "campaigns.html").unwrap().body;
        assert!(campaigns.contains("-2.00 EUR") && campaigns.contains("data-value=\"1000\""));
    }

    #[test]
    fn dashboard_export_is_private_and_refuses_a_full_directory() {
        let (c, l) = report();
        let d = DashboardData::from_reports("2026-12-03 10:00", Currency::euro(), &c, &l);
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("site");
        let files = export(&d, &Zone::utc(), &out).unwrap();
        assert!(files.iter().any(|f| f.ends_with("index.html")));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&out), 0o700);
            for f in &files {
                assert_eq!(mode(f), 0o600, "{}", f.display());
            }
        }
        assert!(matches!(export(&d, &Zone::utc(), &out), Err(ExportError::NotEmpty(_))));
        let index = std::fs::read_to_string(out.join("index.html")).unwrap();
        assert_eq!(index, page(&d, &Zone::utc(), "index.html").unwrap().body);
    }
}
