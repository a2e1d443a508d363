//! The marketing analyst's reports: the warehouse's figures
//! ([`tessera_ledger::Ledger`]'s warehouse queries) put through the
//! models of [`tessera_analytics`], each as a typed report (its JSON is
//! `office report … --json`) and a [`Table`] (the table and `--csv`).
//! The definitions are in `docs/analytics.md` and `docs/warehouse.md`.
//!
//! Each report is computed in two steps: the ledger's query, then a pure
//! function of its rows (`*_from`), which is what the tests check against
//! hand-computed values.
//!
//! ```
//! use tessera_office::analytics::{cohorts_from, cohorts_table};
//! use tessera_office::reports::View;
//! use tessera_ledger::CohortCell;
//!
//! let cells = vec![
//!     CohortCell { cohort: "2026-10".into(), months_after: 0, active: 4 },
//!     CohortCell { cohort: "2026-10".into(), months_after: 2, active: 1 },
//! ];
//! let r = cohorts_from(&cells);
//! assert_eq!(r.rows[0].active, vec![4, 0, 1]);
//! assert_eq!(r.rows[0].retention, vec![1.0, 0.0, 0.25]);
//! assert!(cohorts_table(&r, &View::utc()).text().contains("2026-10"));
//! ```

use serde::Serialize;
use tessera_analytics::uplift::UpliftOutcome;
use tessera_analytics::{bgnbd, clv, gamma_gamma, uplift};
use tessera_ledger::{
    CampaignOutcome, CategoryPeriodRow, CohortCell, CustomerFacts, CustomersReport, HouseholdRow, LedgerError, Period,
    PointsPeriodRow, StorePeriodRow, Warehouse,
};

use crate::reports::{group, points, Table, View};

/// Rebuilds the warehouse when it is behind the books
/// ([`Warehouse::warehouse_stale`]: maintenance was off, or the ledger was
/// upgraded with postings in it), so that the reports read every posting;
/// returns whether it rebuilt. Reports call it first.
///
/// # Errors
/// The ledger's error (then nothing changed).
pub fn bring_up_to_date(ledger: &mut dyn Warehouse) -> Result<bool, LedgerError> {
    if ledger.warehouse_stale()? {
        ledger.rebuild_warehouse()?;
        return Ok(true);
    }
    Ok(false)
}

/// Customers and spend of one RFM segment, with its legend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SegmentRow {
    /// The segment's key (`champions`, …), as in the customers report.
    pub segment: String,
    /// Its display name.
    pub name: String,
    /// Customers (and anonymous cards) in it.
    pub customers: u64,
    /// Their money spent, minor units.
    pub spend_minor: u64,
    /// The rule on the scores.
    pub rule: String,
    /// What its customers have in common.
    pub meaning: String,
    /// The suggested action.
    pub action: String,
}

/// The RFM report: the customers report's segments, every segment of the
/// legend in rule order (empty ones too).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RfmReport {
    /// The report's day.
    pub as_of: String,
    /// Customers scored.
    pub customers: u64,
    /// One row per segment of the legend.
    pub segments: Vec<SegmentRow>,
}

/// The RFM report of a customers report ([`Warehouse::customers_report`]).
pub fn rfm_from(c: &CustomersReport) -> RfmReport {
    let segments = c
        .legend
        .iter()
        .map(|l| {
            let rows = c.rows.iter().filter(|r| r.segment == l.segment);
            SegmentRow {
                segment: l.segment.clone(),
                name: l.name.clone(),
                customers: c.segments.get(&l.segment).copied().unwrap_or(0),
                spend_minor: rows.map(|r| r.spend_minor).sum(),
                rule: l.rule.clone(),
                meaning: l.meaning.clone(),
                action: l.action.clone(),
            }
        })
        .collect();
    RfmReport {
        as_of: c.as_of.clone(),
        customers: c.rows.len() as u64,
        segments,
    }
}

/// The RFM report as of `now`.
///
/// # Errors
/// The ledger's error.
pub fn rfm(ledger: &dyn Warehouse, now: u32) -> Result<RfmReport, LedgerError> {
    Ok(rfm_from(&ledger.customers_report(now)?))
}

/// The RFM report as a table: segment, customers, spend, rule, meaning,
/// action (the legend is the table).
pub fn rfm_table(r: &RfmReport, view: &View) -> Table {
    let mut cols = vec!["segment", "customers", "spend", "rule", "meaning"];
    if view.wide {
        cols.push("action");
    }
    let mut t = Table::new("RFM segments", &cols);
    for s in &r.segments {
        let mut cells = vec![
            s.name.clone(),
            group(s.customers),
            view.money(i64::try_from(s.spend_minor).unwrap_or(i64::MAX)),
            s.rule.clone(),
            s.meaning.clone(),
        ];
        if view.wide {
            cells.push(s.action.clone());
        }
        t.push(cells);
    }
    t.summary.push(format!(
        "{} customers scored as of {}: R, F and M are quintiles 1-5 within them (5 best), M on money spent.",
        group(r.customers),
        r.as_of
    ));
    t
}

/// One cohort's retention.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CohortReportRow {
    /// The month of the first purchase, `YYYY-MM`.
    pub cohort: String,
    /// Customers whose first purchase was in that month.
    pub size: u64,
    /// `active[k]`: of them, customers with a purchase `k` months after it
    /// (`active[0] == size`), through the last month with data.
    pub active: Vec<u64>,
    /// `active[k] / size`.
    pub retention: Vec<f64>,
}

/// Cohorts by first purchase month.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CohortsReport {
    /// The last month with data (`YYYY-MM`; empty without data).
    pub through: String,
    /// One row per cohort, oldest first.
    pub rows: Vec<CohortReportRow>,
}

fn month_index(label: &str) -> Option<i64> {
    let (y, m) = label.split_once('-')?;
    let (y, m): (i64, i64) = (y.parse().ok()?, m.parse().ok()?);
    (1..=12).contains(&m).then_some(y * 12 + m - 1)
}

/// The retention table of the warehouse's cohort cells
/// ([`Warehouse::cohorts`]): every cohort runs to the last month with data,
/// months without an active customer are 0.
pub fn cohorts_from(cells: &[CohortCell]) -> CohortsReport {
    let last = cells
        .iter()
        .filter_map(|c| Some((month_index(&c.cohort)? + i64::from(c.months_after), c)))
        .max_by_key(|(i, _)| *i)
        .map(|(i, _)| i);
    let mut rows: Vec<CohortReportRow> = Vec::new();
    for c in cells {
        let (Some(start), Some(end)) = (month_index(&c.cohort), last) else {
            continue;
        };
        let width = usize::try_from(end - start + 1).unwrap_or(1).max(1);
        if rows.last().map(|r| r.cohort.as_str()) != Some(c.cohort.as_str()) {
            rows.push(CohortReportRow {
                cohort: c.cohort.clone(),
                size: 0,
                active: vec![0; width],
                retention: Vec::new(),
            });
        }
        if let Some(row) = rows.last_mut() {
            if let Some(slot) = row.active.get_mut(c.months_after as usize) {
                *slot = c.active;
            }
            if c.months_after == 0 {
                row.size = c.active;
            }
        }
    }
    for r in &mut rows {
        #[allow(clippy::cast_precision_loss)]
        let size = r.size as f64;
        r.retention = r
            .active
            .iter()
            .map(|&a| if r.size == 0 { 0.0 } else { a as f64 / size })
            .collect();
    }
    let through = last
        .map(|i| format!("{:04}-{:02}", i.div_euclid(12), i.rem_euclid(12) + 1))
        .unwrap_or_default();
    CohortsReport { through, rows }
}

/// The cohorts report.
///
/// # Errors
/// The ledger's error.
pub fn cohorts(ledger: &dyn Warehouse) -> Result<CohortsReport, LedgerError> {
    Ok(cohorts_from(&ledger.cohorts()?))
}

/// The cohorts report as a table: cohort, size, then retention in month
/// 1, 2, … (the first six on a screen, all with `wide`).
pub fn cohorts_table(r: &CohortsReport, view: &View) -> Table {
    let months = r
        .rows
        .iter()
        .map(|c| c.retention.len())
        .max()
        .unwrap_or(1)
        .saturating_sub(1);
    let shown = if view.wide { months } else { months.min(6) };
    let heads: Vec<String> = (1..=shown).map(|k| format!("m+{k}")).collect();
    let mut cols: Vec<&str> = vec!["cohort", "customers"];
    cols.extend(heads.iter().map(String::as_str));
    let mut t = Table::new("Cohorts by first purchase month: share active k months later", &cols);
    for c in &r.rows {
        let mut cells = vec![c.cohort.clone(), group(c.size)];
        for k in 1..=shown {
            cells.push(
                c.retention
                    .get(k)
                    .map(|v| format!("{:.1}%", v * 100.0))
                    .unwrap_or_default(),
            );
        }
        t.push(cells);
    }
    if !r.through.is_empty() {
        t.summary.push(format!("Through {}.", r.through));
    }
    t
}

/// The fitted models of the lifetime value report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClvModels {
    /// BG/NBD in days: visits per day.
    pub bgnbd: bgnbd::BgNbdFit,
    /// Gamma-Gamma on the mean money of repeat visits, minor units.
    pub gamma_gamma: Option<gamma_gamma::GammaGammaFit>,
    /// Why there is no Gamma-Gamma fit, when there is none.
    pub gamma_gamma_missing: Option<String>,
}

/// One customer's predicted value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClvRow {
    /// The customer (`None`: an anonymous card).
    pub customer_id: Option<u64>,
    /// The first card (hex).
    pub card: String,
    /// Repeat visits `x` (visits − 1).
    pub repeat_visits: u32,
    /// Days from the first to the last visit, `t_x`.
    pub t_x_days: u32,
    /// Days from the first visit to the report's day, `T`.
    pub t_days: u32,
    /// Probability the customer is still active.
    pub p_alive: f64,
    /// Expected visits in the next 90 days.
    pub expected_visits_90d: f64,
    /// Expected money per visit, minor units (Gamma-Gamma; `None` without
    /// a fit).
    pub expected_spend_per_visit_minor: Option<f64>,
    /// Lifetime value over the horizon, minor units (`None` without a
    /// Gamma-Gamma fit).
    pub clv_minor: Option<f64>,
}

/// The customer lifetime value report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClvReport {
    /// The options of the value (horizon, margin, discount).
    pub options: clv::ClvOptions,
    /// The fits (`None` when the population cannot be fitted).
    pub models: Option<ClvModels>,
    /// Why there is no fit, when there is none.
    pub missing: Option<String>,
    /// One row per customer, highest value first (by expected visits
    /// without a spend model).
    pub rows: Vec<ClvRow>,
}

/// The value's options: 12 months, revenue (margin 1), 1 % a month
/// discount, a BG/NBD fitted in days.
pub const CLV_OPTIONS: clv::ClvOptions = clv::ClvOptions {
    horizon_months: 12,
    periods_per_month: clv::DAYS_PER_MONTH,
    margin: 1.0,
    monthly_discount_rate: 0.01,
};

/// `(x, t_x, T, mean repeat money)`: see [`clv_history`].
pub type History = (u32, u32, u32, f64);

/// A customer's BG/NBD history in days and the mean money of the repeat
/// visits: `(x, t_x, T, mean)`, `x` = visits − 1, `t_x` = last − first
/// visit day, `T` = today − first, `mean` = the mean of the visits' money
/// after the first (0 without repeat visits). `None` for no visit.
pub fn clv_history(f: &CustomerFacts) -> Option<History> {
    let first = *f.visit_days.first()?;
    let last = *f.visit_days.last()?;
    let x = u32::try_from(f.visit_days.len() - 1).ok()?;
    let t_x = u32::try_from(last - first).ok()?;
    let t = u32::try_from(f.today.max(last) - first).ok()?;
    let repeat = f.visit_spend_minor.get(1..).unwrap_or(&[]);
    #[allow(clippy::cast_precision_loss)]
    let mean = if repeat.is_empty() {
        0.0
    } else {
        repeat.iter().sum::<i64>() as f64 / repeat.len() as f64
    };
    Some((x, t_x, t, mean))
}

/// The lifetime value report of the warehouse's customer facts
/// ([`Warehouse::customer_facts`]): BG/NBD fitted on every customer with a
/// visit, Gamma-Gamma on those with a repeat visit of positive mean money
/// (the others get the population's expected spend), the value over
/// [`CLV_OPTIONS`].
pub fn clv_from(facts: &[CustomerFacts]) -> ClvReport {
    let histories: Vec<(&CustomerFacts, History)> = facts.iter().filter_map(|f| Some((f, clv_history(f)?))).collect();
    let visits: Vec<(u32, f64, f64)> = histories
        .iter()
        .map(|(_, (x, t_x, t, _))| (*x, f64::from(*t_x), f64::from(*t)))
        .collect();
    let fit = match bgnbd::fit(&visits) {
        Ok(fit) => fit,
        Err(e) => {
            return ClvReport {
                options: CLV_OPTIONS,
                models: None,
                missing: Some(format!("no BG/NBD fit: {e}")),
                rows: Vec::new(),
            }
        }
    };
    let spend: Vec<(u32, f64)> = histories
        .iter()
        .filter(|(_, (x, _, _, m))| *x >= 1 && *m > 0.0)
        .map(|(_, (x, _, _, m))| (*x, *m))
        .collect();
    let (gg, gg_missing) = match gamma_gamma::fit(&spend) {
        Ok(g) if g.params.population_mean_spend().is_some() => (Some(g), None),
        Ok(_) => (
            None,
            Some("the Gamma-Gamma fit has no finite mean spend (q <= 1)".to_owned()),
        ),
        Err(e) => (None, Some(format!("no Gamma-Gamma fit: {e}"))),
    };
    let mut rows: Vec<ClvRow> = histories
        .iter()
        .map(|(f, (x, t_x, t, m))| {
            let (tx, tt) = (f64::from(*t_x), f64::from(*t));
            let p_alive = bgnbd::probability_alive(&fit.params, *x, tx, tt).unwrap_or(f64::NAN);
            let e90 = bgnbd::conditional_expected_transactions(&fit.params, *x, tx, tt, 90.0).unwrap_or(f64::NAN);
            // A repeat customer without positive repeat money is valued
            // at the population's spend (as one without a repeat visit).
            let (gx, gm) = if *x >= 1 && *m > 0.0 { (*x, *m) } else { (0, 0.0) };
            let value = gg
                .as_ref()
                .and_then(|g| clv::customer_value(&fit.params, &g.params, (gx, tx, tt), gm, &CLV_OPTIONS).ok());
            ClvRow {
                customer_id: f.customer_id,
                card: f.cards.first().cloned().unwrap_or_default(),
                repeat_visits: *x,
                t_x_days: *t_x,
                t_days: *t,
                p_alive,
                expected_visits_90d: e90,
                expected_spend_per_visit_minor: value.map(|v| v.expected_spend_per_visit),
                clv_minor: value.map(|v| v.value),
            }
        })
        .collect();
    rows.sort_by(|a, b| {
        let key = |r: &ClvRow| r.clv_minor.unwrap_or(r.expected_visits_90d);
        key(b)
            .total_cmp(&key(a))
            .then_with(|| a.customer_id.cmp(&b.customer_id))
    });
    ClvReport {
        options: CLV_OPTIONS,
        models: Some(ClvModels {
            bgnbd: fit,
            gamma_gamma: gg,
            gamma_gamma_missing: gg_missing,
        }),
        missing: None,
        rows,
    }
}

/// The lifetime value report as of `now`.
///
/// # Errors
/// The ledger's error.
pub fn customer_value(ledger: &dyn Warehouse, now: u32) -> Result<ClvReport, LedgerError> {
    Ok(clv_from(&ledger.customer_facts(now)?))
}

fn customer_cell(id: Option<u64>, card: &str) -> String {
    id.map_or_else(|| format!("card {card}"), |i| i.to_string())
}

/// The lifetime value report as a table, the 50 most valuable customers
/// on a screen (all with `wide`), the fitted parameters below.
pub fn clv_table(r: &ClvReport, view: &View) -> Table {
    let mut t = Table::new(
        "Customer lifetime value (BG/NBD visits, Gamma-Gamma spend)",
        &[
            "customer",
            "repeat visits",
            "P(alive)",
            "visits next 90 d",
            "spend per visit",
            "value 12 months",
        ],
    );
    let shown = if view.wide { r.rows.len() } else { r.rows.len().min(50) };
    #[allow(clippy::cast_possible_truncation)]
    let money = |v: Option<f64>| v.map(|v| view.money(v.round() as i64)).unwrap_or_else(|| "-".into());
    for c in &r.rows[..shown] {
        t.push(vec![
            customer_cell(c.customer_id, &c.card),
            group(u64::from(c.repeat_visits)),
            format!("{:.2}", c.p_alive),
            format!("{:.2}", c.expected_visits_90d),
            money(c.expected_spend_per_visit_minor),
            money(c.clv_minor),
        ]);
    }
    if shown < r.rows.len() {
        t.notes.push(format!(
            "{} more customers with --wide or --csv.",
            group((r.rows.len() - shown) as u64)
        ));
    }
    match &r.models {
        Some(m) => {
            let p = &m.bgnbd.params;
            t.summary.push(format!(
                "BG/NBD (days, {} customers): r {:.4}, alpha {:.4}, a {:.4}, b {:.4}{}.",
                group(m.bgnbd.customers as u64),
                p.r,
                p.alpha,
                p.a,
                p.b,
                if m.bgnbd.converged { "" } else { " (not converged)" }
            ));
            match (&m.gamma_gamma, &m.gamma_gamma_missing) {
                (Some(g), _) => t.summary.push(format!(
                    "Gamma-Gamma (minor units, {} customers): p {:.4}, q {:.4}, gamma {:.4}{}.",
                    group(g.customers as u64),
                    g.params.p,
                    g.params.q,
                    g.params.gamma,
                    if g.converged { "" } else { " (not converged)" }
                )),
                (None, Some(why)) => t.summary.push(format!("{why}.")),
                (None, None) => {}
            }
            t.summary.push(format!(
                "Value: {} months, margin {}, {}% a month discount.",
                r.options.horizon_months,
                r.options.margin,
                r.options.monthly_discount_rate * 100.0
            ));
        }
        None => t.summary.push(r.missing.clone().unwrap_or_default()),
    }
    t
}

/// Treated against control on one measure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Uplift {
    /// Mean per treated card.
    pub treated_mean: f64,
    /// Mean per control card.
    pub control_mean: f64,
    /// `treated_mean − control_mean`.
    pub difference: f64,
    /// The 95 % interval's lower bound.
    pub ci95_low: f64,
    /// Its upper bound.
    pub ci95_high: f64,
    /// `difference / control_mean` (`None` when the control mean is 0).
    pub relative: Option<f64>,
    /// Whether a group has fewer than 30 cards (a rough interval).
    pub small_sample: bool,
}

/// A campaign's measured effect.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CampaignRow {
    /// The campaign's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: String,
    /// First day.
    pub valid_from: String,
    /// Last day.
    pub valid_until: String,
    /// Share held out, percent.
    pub holdout_percent: u8,
    /// Eligible cards that got the offer.
    pub treated: u64,
    /// Eligible cards held out.
    pub control: u64,
    /// Uplift in visits per card during the campaign (`None`: fewer than
    /// 2 cards in a group).
    pub visits: Option<Uplift>,
    /// Uplift in money per card during the campaign, minor units.
    pub spend_minor: Option<Uplift>,
}

/// The campaigns report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CampaignsReport {
    /// One row per campaign, by id.
    pub rows: Vec<CampaignRow>,
}

fn to_uplift(o: UpliftOutcome) -> Option<Uplift> {
    match o {
        UpliftOutcome::Estimate(e) => Some(Uplift {
            treated_mean: e.treated.mean,
            control_mean: e.control.mean,
            difference: e.difference,
            ci95_low: e.ci95_low,
            ci95_high: e.ci95_high,
            relative: e.relative,
            small_sample: e.small_sample,
        }),
        _ => None,
    }
}

/// The campaigns report of the warehouse's campaign outcomes
/// ([`Warehouse::campaign_outcomes`]): per campaign, the mean visits and
/// money of its eligible treated cards against its control cards, with
/// the Welch 95 % interval of the difference ([`uplift::uplift`]).
pub fn campaigns_from(outcomes: &[CampaignOutcome]) -> CampaignsReport {
    let rows = outcomes
        .iter()
        .map(|c| {
            #[allow(clippy::cast_precision_loss)]
            let split = |f: &dyn Fn(&tessera_ledger::CampaignCard) -> f64| {
                let (t, k): (Vec<_>, Vec<_>) = c.cards.iter().partition(|x| !x.control);
                (
                    t.iter().map(|x| f(x)).collect::<Vec<f64>>(),
                    k.iter().map(|x| f(x)).collect::<Vec<f64>>(),
                )
            };
            #[allow(clippy::cast_precision_loss)]
            let (vt, vc) = split(&|x| x.visits as f64);
            #[allow(clippy::cast_precision_loss)]
            let (st, sc) = split(&|x| x.spend_minor as f64);
            CampaignRow {
                id: c.id.clone(),
                name: c.name.clone(),
                kind: c.kind.clone(),
                valid_from: c.valid_from.clone(),
                valid_until: c.valid_until.clone(),
                holdout_percent: c.holdout_percent,
                treated: vt.len() as u64,
                control: vc.len() as u64,
                visits: uplift::uplift(&vt, &vc).ok().and_then(to_uplift),
                spend_minor: uplift::uplift(&st, &sc).ok().and_then(to_uplift),
            }
        })
        .collect();
    CampaignsReport { rows }
}

/// The campaigns report.
///
/// # Errors
/// The ledger's error.
pub fn campaigns(ledger: &dyn Warehouse) -> Result<CampaignsReport, LedgerError> {
    Ok(campaigns_from(&ledger.campaign_outcomes()?))
}

/// The campaigns report as a table.
pub fn campaigns_table(r: &CampaignsReport, view: &View) -> Table {
    let mut t = Table::new(
        "Campaigns: treated against held-out control, per eligible card during the campaign",
        &[
            "campaign",
            "days",
            "holdout",
            "treated",
            "control",
            "visits uplift (95% CI)",
            "spend uplift (95% CI)",
        ],
    );
    #[allow(clippy::cast_possible_truncation)]
    let m = |v: f64| view.money(v.round() as i64);
    for c in &r.rows {
        let visits = c.visits.as_ref().map_or_else(
            || "-".to_owned(),
            |u| format!("{:+.2} ({:+.2} to {:+.2})", u.difference, u.ci95_low, u.ci95_high),
        );
        let spend = c.spend_minor.as_ref().map_or_else(
            || "-".to_owned(),
            |u| format!("{} ({} to {})", m(u.difference), m(u.ci95_low), m(u.ci95_high)),
        );
        t.push(vec![
            c.id.clone(),
            format!("{}..{}", c.valid_from, c.valid_until),
            format!("{}%", c.holdout_percent),
            group(c.treated),
            group(c.control),
            visits,
            spend,
        ]);
    }
    if r.rows.iter().any(|c| c.visits.is_none()) {
        t.notes
            .push("-: fewer than 2 cards in a group (a campaign without holdout has no control group).".into());
    }
    if r.rows.iter().any(|c| c.visits.as_ref().is_some_and(|u| u.small_sample)) {
        t.notes.push("a group under 30 cards: the interval is rough.".into());
    }
    t
}

/// The stores report: per period and store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoresReport {
    /// The period.
    pub period: Period,
    /// The rows, by period then store.
    pub rows: Vec<StorePeriodRow>,
}

/// The stores report.
///
/// # Errors
/// The ledger's error.
pub fn stores(ledger: &dyn Warehouse, period: Period) -> Result<StoresReport, LedgerError> {
    Ok(StoresReport {
        period,
        rows: ledger.store_performance(period)?,
    })
}

/// The stores report as a table.
pub fn stores_table(r: &StoresReport, view: &View) -> Table {
    let mut t = Table::new(
        "Stores by period",
        &[
            "period",
            "store",
            "purchases",
            "customers",
            "spend",
            "points issued",
            "points redeemed",
        ],
    );
    for s in &r.rows {
        t.push(vec![
            s.period.clone(),
            format!("{} {}", s.store_id, s.store),
            group(s.purchases),
            group(s.customers),
            view.money(s.spend_minor),
            points(i64::try_from(s.points_issued).unwrap_or(i64::MAX)),
            points(i64::try_from(s.points_redeemed).unwrap_or(i64::MAX)),
        ]);
    }
    if let Some(top) = top_store(&r.rows) {
        t.summary
            .push(format!("Top store by spend: {} ({}).", top.0, view.money(top.1)));
    }
    t
}

/// The store with the most money over all periods: (name, spend).
pub fn top_store(rows: &[StorePeriodRow]) -> Option<(String, i64)> {
    let mut by: std::collections::BTreeMap<(u32, &str), i64> = std::collections::BTreeMap::new();
    for r in rows {
        *by.entry((r.store_id, r.store.as_str())).or_insert(0) += r.spend_minor;
    }
    by.into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0 .0.cmp(&a.0 .0)))
        .map(|((_, name), spend)| (name.to_owned(), spend))
}

/// The categories report: per period and category.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CategoriesReport {
    /// The period.
    pub period: Period,
    /// The rows, by period then category.
    pub rows: Vec<CategoryPeriodRow>,
}

/// The categories report.
///
/// # Errors
/// The ledger's error.
pub fn categories(ledger: &dyn Warehouse, period: Period) -> Result<CategoriesReport, LedgerError> {
    Ok(CategoriesReport {
        period,
        rows: ledger.category_performance(period)?,
    })
}

/// The categories report as a table.
pub fn categories_table(r: &CategoriesReport, view: &View) -> Table {
    let mut t = Table::new(
        "Categories by period",
        &["period", "category", "purchases", "customers", "spend"],
    );
    for c in &r.rows {
        t.push(vec![
            c.period.clone(),
            c.category.clone(),
            group(c.purchases),
            group(c.customers),
            view.money(c.spend_minor),
        ]);
    }
    t.notes
        .push("spend: the money of the lines in the category (refunds not deducted).".into());
    t
}

/// The households report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HouseholdsReport {
    /// One row per household, by household.
    pub rows: Vec<HouseholdRow>,
}

/// The households report.
///
/// # Errors
/// The ledger's error.
pub fn households(ledger: &dyn Warehouse) -> Result<HouseholdsReport, LedgerError> {
    Ok(HouseholdsReport {
        rows: ledger.households()?,
    })
}

/// The households report as a table.
pub fn households_table(r: &HouseholdsReport, view: &View) -> Table {
    let mut t = Table::new(
        "Households",
        &["household", "customers", "cards", "visits", "spend", "points"],
    );
    for h in &r.rows {
        t.push(vec![
            h.household.clone(),
            group(h.customers),
            group(h.cards),
            group(h.visits),
            view.money(h.spend_minor),
            points(i64::try_from(h.points).unwrap_or(i64::MAX)),
        ]);
    }
    t
}

/// The points economy report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PointsReport {
    /// The period.
    pub period: Period,
    /// What one point is worth, minor units (the liability's rate).
    pub minor_units_per_point: u64,
    /// The rows, oldest first.
    pub rows: Vec<PointsPeriodRow>,
}

/// The points economy report.
///
/// # Errors
/// The ledger's error.
pub fn points_economy(
    ledger: &dyn Warehouse,
    period: Period,
    minor_units_per_point: u64,
) -> Result<PointsReport, LedgerError> {
    Ok(PointsReport {
        period,
        minor_units_per_point,
        rows: ledger.points_economy(period)?,
    })
}

/// The points economy as a table.
pub fn points_table(r: &PointsReport, view: &View) -> Table {
    let mut t = Table::new(
        "Points economy by period",
        &[
            "period",
            "issued",
            "redeemed",
            "adjusted",
            "outstanding",
            "liability",
            "redemption rate",
        ],
    );
    let per = i64::try_from(r.minor_units_per_point).unwrap_or(1);
    for p in &r.rows {
        t.push(vec![
            p.period.clone(),
            points(p.issued),
            points(p.redeemed),
            points(p.adjusted),
            points(p.outstanding),
            view.money(p.outstanding.saturating_mul(per)),
            p.redemption_rate
                .map(|v| format!("{:.1}%", v * 100.0))
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    t
}

/// The few figures a manager reads first: segments, each campaign's
/// uplift, the top store.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Customers (and anonymous cards) with a posted transaction.
    pub customers: u64,
    /// Money spent, minor units.
    pub spend_minor: u64,
    /// The segments with customers, largest first.
    pub segments: Vec<SegmentRow>,
    /// The campaigns with a control group.
    pub campaigns: Vec<CampaignRow>,
    /// The store of most money, and its money.
    pub top_store: Option<(String, i64)>,
}

/// The summary as of `now`.
///
/// # Errors
/// The ledger's error.
pub fn summary(ledger: &dyn Warehouse, now: u32) -> Result<Summary, LedgerError> {
    let customers = ledger.customers_report(now)?;
    let mut segments: Vec<SegmentRow> = rfm_from(&customers)
        .segments
        .into_iter()
        .filter(|s| s.customers > 0)
        .collect();
    segments.sort_by(|a, b| b.customers.cmp(&a.customers).then_with(|| a.segment.cmp(&b.segment)));
    Ok(Summary {
        customers: customers.rows.len() as u64,
        spend_minor: customers.rows.iter().map(|r| r.spend_minor).sum(),
        segments,
        campaigns: campaigns(ledger)?
            .rows
            .into_iter()
            .filter(|c| c.visits.is_some())
            .collect(),
        top_store: top_store(&ledger.store_performance(Period::Month)?),
    })
}

/// The summary as lines of text.
pub fn summary_lines(s: &Summary, view: &View) -> Vec<String> {
    let mut out = vec![format!(
        "{} customers spent {}.",
        group(s.customers),
        view.money(i64::try_from(s.spend_minor).unwrap_or(i64::MAX))
    )];
    let segs: Vec<String> = s
        .segments
        .iter()
        .take(4)
        .map(|g| format!("{} {}", g.name, group(g.customers)))
        .collect();
    if !segs.is_empty() {
        out.push(format!("Segments (RFM on money): {}.", segs.join(", ")));
    }
    #[allow(clippy::cast_possible_truncation)]
    let m = |v: f64| view.money(v.round() as i64);
    for c in &s.campaigns {
        if let (Some(v), Some(sp)) = (&c.visits, &c.spend_minor) {
            out.push(format!(
                "Campaign {} ({}% held out, {} treated / {} control cards): {:+.2} visits per card{} \
                 (95% CI {:+.2} to {:+.2}), {} spend per card (95% CI {} to {}).",
                c.id,
                c.holdout_percent,
                group(c.treated),
                group(c.control),
                v.difference,
                v.relative.map(|r| format!(" ({:+.0}%)", r * 100.0)).unwrap_or_default(),
                v.ci95_low,
                v.ci95_high,
                m(sp.difference),
                m(sp.ci95_low),
                m(sp.ci95_high)
            ));
        }
    }
    if let Some((name, spend)) = &s.top_store {
        out.push(format!("Top store: {name} ({}).", view.money(*spend)));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tessera_ledger::CampaignCard;

    fn card(id: &str, control: bool, visits: u64, spend_minor: i64) -> CampaignCard {
        CampaignCard {
            card_id: id.into(),
            control,
            visits,
            spend_minor,
        }
    }

    #[test]
    fn campaign_uplift_is_treated_mean_minus_control_mean_with_a_welch_interval() {
        // Treated visits 1, 2, 3 (mean 2, variance 1); control 0, 2 (mean
        // 1, variance 2). Difference 1, SE = sqrt(1/3 + 2/2) = sqrt(4/3).
        let o = CampaignOutcome {
            id: "double".into(),
            name: "Double".into(),
            kind: "preferred_category".into(),
            valid_from: "2026-11-01".into(),
            valid_until: "2026-11-30".into(),
            holdout_percent: 20,
            cards: vec![
                card("01", false, 1, 1_000),
                card("02", false, 2, 2_000),
                card("03", false, 3, 3_000),
                card("04", true, 0, 0),
                card("05", true, 2, 2_000),
            ],
        };
        let r = campaigns_from(&[o]);
        let c = &r.rows[0];
        assert_eq!((c.treated, c.control), (3, 2));
        let v = c.visits.as_ref().unwrap();
        assert_eq!((v.treated_mean, v.control_mean, v.difference), (2.0, 1.0, 1.0));
        let se = (4.0f64 / 3.0).sqrt();
        assert!((v.ci95_low - (1.0 - 1.959_963_984_540_054 * se)).abs() < 1e-12);
        assert!((v.ci95_high - (1.0 + 1.959_963_984_540_054 * se)).abs() < 1e-12);
        assert_eq!(v.relative, Some(1.0));
        assert!(v.small_sample);
        let s = c.spend_minor.as_ref().unwrap();
        assert_eq!(s.difference, 1_000.0);
        let t = campaigns_table(&r, &View::utc()).text();
        assert!(t.contains("+1.00 (-1.26 to +3.26)"), "{t}");
        assert!(t.contains("10.00 EUR (-12.63 EUR to 32.63 EUR)"), "{t}");
    }

    #[test]
    fn a_campaign_without_control_cards_has_no_uplift() {
        let o = CampaignOutcome {
            id: "all".into(),
            name: "All".into(),
            kind: "tier".into(),
            valid_from: "2026-11-01".into(),
            valid_until: "2026-11-30".into(),
            holdout_percent: 0,
            cards: vec![card("01", false, 1, 100), card("02", false, 2, 100)],
        };
        let r = campaigns_from(&[o]);
        assert_eq!((r.rows[0].treated, r.rows[0].control), (2, 0));
        assert!(r.rows[0].visits.is_none() && r.rows[0].spend_minor.is_none());
        assert!(campaigns_table(&r, &View::utc()).text().contains("no control group"));
    }

    #[test]
    fn cohorts_run_to_the_last_month_with_zeros_where_nobody_came() {
        let cell = |c: &str, k: u32, n: u64| CohortCell {
            cohort: c.into(),
            months_after: k,
            active: n,
        };
        // 2026-11 + 2 = 2027-01 is the last month with data.
        let r = cohorts_from(&[
            cell("2026-11", 0, 4),
            cell("2026-11", 2, 1),
            cell("2026-12", 0, 2),
            cell("2026-12", 1, 1),
        ]);
        assert_eq!(r.through, "2027-01");
        assert_eq!(r.rows.len(), 2);
        assert_eq!(r.rows[0].active, vec![4, 0, 1]);
        assert_eq!(r.rows[0].retention, vec![1.0, 0.0, 0.25]);
        assert_eq!(r.rows[1].active, vec![2, 1]);
        assert_eq!(r.rows[1].retention, vec![1.0, 0.5]);
        let t = cohorts_table(&r, &View::utc()).text();
        assert!(t.contains("25.0%") && t.contains("50.0%"), "{t}");
        assert_eq!(cohorts_from(&[]).rows.len(), 0);
    }

    fn facts(id: u64, days: &[i32], spend: &[i64], today: i32) -> CustomerFacts {
        CustomerFacts {
            customer_id: Some(id),
            cards: vec![format!("{id:016X}")],
            household: None,
            purchases: days.len() as u64,
            visits: days.len() as u64,
            first_visit: None,
            last_visit: None,
            first_visit_date: None,
            last_visit_date: None,
            spend_minor: spend.iter().sum(),
            points_earned: 0,
            points_redeemed: 0,
            favourite_store: None,
            favourite_category: None,
            visit_days: days.to_vec(),
            visit_spend_minor: spend.to_vec(),
            today,
        }
    }

    #[test]
    fn clv_history_is_x_tx_t_and_the_mean_of_repeat_visits() {
        // Visits on days 100, 110, 130; today 160: x = 2, t_x = 30, T = 60;
        // repeat money (2,000 + 4,000) / 2 = 3,000 (the first visit's 9,999
        // is left out, as the model prescribes).
        let f = facts(1, &[100, 110, 130], &[9_999, 2_000, 4_000], 160);
        assert_eq!(clv_history(&f), Some((2, 30, 60, 3_000.0)));
        assert_eq!(clv_history(&facts(2, &[150], &[500], 160)), Some((0, 0, 10, 0.0)));
        assert_eq!(clv_history(&facts(3, &[], &[], 160)), None);
    }

    #[test]
    fn clv_needs_a_population_and_says_why_not() {
        let r = clv_from(&[]);
        assert!(r.models.is_none() && r.rows.is_empty());
        assert!(r.missing.unwrap().contains("BG/NBD"));
    }

    #[test]
    fn clv_ranks_the_frequent_recent_customer_first() {
        let mut pop = Vec::new();
        // Half the customers keep coming every 20 days; the other half came
        // a few times in the first weeks and were not seen again.
        for i in 0..60u64 {
            let k = i32::try_from(i % 6).unwrap();
            let gap = if i < 30 { 20 } else { 3 };
            let days: Vec<i32> = (0..=k).map(|j| 10 + j * gap).collect();
            let spend: Vec<i64> = days.iter().map(|_| 1_000 + i64::from(k) * 300).collect();
            pop.push(facts(i + 1, &days, &spend, 130));
        }
        let r = clv_from(&pop);
        let m = r.models.as_ref().unwrap();
        assert!(m.bgnbd.converged, "{:?}", m.bgnbd);
        assert!(m.gamma_gamma.is_some(), "{:?}", m.gamma_gamma_missing);
        assert_eq!(r.rows.len(), 60);
        // The most valuable have the most and latest repeat visits; the
        // lapsed are less likely alive than the regulars of as many visits.
        assert_eq!((r.rows[0].repeat_visits, r.rows[0].t_x_days), (5, 100));
        let alive = |x: u32, t_x: u32| {
            r.rows
                .iter()
                .find(|c| c.repeat_visits == x && c.t_x_days == t_x)
                .unwrap()
                .p_alive
        };
        assert!(alive(3, 9) < alive(3, 60));
        assert!(r.rows.windows(2).all(|w| w[0].clv_minor >= w[1].clv_minor));
        assert!(r.rows.iter().all(|c| (0.0..=1.0).contains(&c.p_alive)));
    }

    #[test]
    fn the_top_store_is_the_one_of_most_money_over_all_periods() {
        let row = |p: &str, id: u32, name: &str, spend: i64| StorePeriodRow {
            period: p.into(),
            store_id: id,
            store: name.into(),
            purchases: 1,
            customers: 1,
            spend_minor: spend,
            points_issued: 0,
            points_redeemed: 0,
        };
        let rows = [
            row("2026-10", 1, "North", 500),
            row("2026-11", 1, "North", 600),
            row("2026-11", 2, "South", 1_000),
        ];
        assert_eq!(top_store(&rows), Some(("North".into(), 1_100)));
        assert_eq!(top_store(&[]), None);
    }
}
