//! `tessera office report …`: each report its own subcommand with only the
//! filters it understands (anything else is refused by the parser), the
//! tables from `tessera_office::reports`, and `--json` / `--csv`.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::json;
use tessera_ledger::LedgerError;
use tessera_office::analytics;
use tessera_office::reports::{self, View};

use crate::args::date;
use crate::fail::Failure;
use crate::office::{ledger_err, now, open_books_reports};
use crate::out::print_json;
use crate::OutputArgs;

/// `tessera office report …`
#[derive(Subcommand)]
pub enum ReportCmd {
    /// Per terminal and local day: batches, records, posted, copies,
    /// rejected, held, exceptions, refusals — and whether it all adds up.
    #[command(after_help = "Examples:\n  tessera office report reconciliation --dir office\n  \
        tessera office report reconciliation --dir office --date 2026-12-03 --terminal 7\n  \
        tessera office report reconciliation --dir office --wide --csv > recon.csv")]
    Reconciliation(ReconciliationArgs),
    /// Points outstanding, in points and money.
    #[command(after_help = "Example:\n  tessera office report liability --dir office --point-value 0.01")]
    Liability(LiabilityArgs),
    /// Every exception with its evidence, oldest first.
    Exceptions(ReportDir),
    /// Whether every point is explained, and what is not (docs/settlement.md).
    Explained(ReportDir),
    /// Visit frequency, recency, favourite store and category, RFM
    /// segment per customer.
    Customers(CustomersArgs),
    /// Customers and spend per RFM segment, with the segments' legend.
    Rfm(CustomersArgs),
    /// Cohorts by first purchase month and their retention.
    Cohorts(CustomersArgs),
    /// Customer lifetime value: BG/NBD visits, Gamma-Gamma spend.
    Clv(CustomersArgs),
    /// Campaign uplift in visits and spend, treated against control.
    Campaigns(ReportDir),
    /// Store performance by period.
    #[command(after_help = "Example:\n  tessera office report stores --dir office --period week")]
    Stores(PeriodArgs),
    /// Category performance by period.
    Categories(PeriodArgs),
    /// Households: customers, cards, visits, spend.
    Households(ReportDir),
    /// The points economy by period: issued, redeemed, outstanding, redemption rate.
    Points(PointsArgs),
}

/// Arguments of a report by period.
#[derive(Args)]
pub struct PeriodArgs {
    #[command(flatten)]
    pub report: ReportDir,
    /// The period: day, week (ISO) or month.
    #[arg(long, value_enum, default_value = "month")]
    pub period: PeriodArg,
}

/// Arguments of `office report points`.
#[derive(Args)]
pub struct PointsArgs {
    #[command(flatten)]
    pub report: ReportDir,
    /// The period: day, week (ISO) or month.
    #[arg(long, value_enum, default_value = "month")]
    pub period: PeriodArg,
    /// What one point is worth in money (the currency of the policy).
    #[arg(long, value_name = "AMOUNT", default_value = "0.01")]
    pub point_value: String,
}

/// A report's period.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum PeriodArg {
    /// Local days.
    Day,
    /// ISO weeks.
    Week,
    /// Calendar months.
    Month,
}

impl PeriodArg {
    fn period(self) -> tessera_ledger::Period {
        match self {
            PeriodArg::Day => tessera_ledger::Period::Day,
            PeriodArg::Week => tessera_ledger::Period::Week,
            PeriodArg::Month => tessera_ledger::Period::Month,
        }
    }
}

/// The office directory and the output format of a report.
#[derive(Args)]
pub struct ReportDir {
    /// The office directory.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    #[command(flatten)]
    pub output: OutputArgs,
    /// CSV instead of a table (every column).
    #[arg(long, conflicts_with = "json")]
    pub csv: bool,
}

/// Arguments of `office report reconciliation`.
#[derive(Args)]
pub struct ReconciliationArgs {
    #[command(flatten)]
    pub report: ReportDir,
    /// Only this local day, YYYY-MM-DD.
    #[arg(long, value_name = "DATE")]
    pub date: Option<String>,
    /// Only this terminal, in detail: declared against stored per type,
    /// refusals per reason.
    #[arg(long, value_name = "ID")]
    pub terminal: Option<u32>,
    /// Only the terminals of this store (`office store list`).
    #[arg(long, value_name = "ID", conflicts_with = "terminal")]
    pub store: Option<u32>,
    /// Every column (store, declared and stored totals, refusals by
    /// reason); wider than a screen.
    #[arg(long)]
    pub wide: bool,
}

/// Arguments of `office report liability`.
#[derive(Args)]
pub struct LiabilityArgs {
    #[command(flatten)]
    pub report: ReportDir,
    /// What one point is worth in money (the currency of the policy):
    /// `0.01`, `0,01`.
    #[arg(long, value_name = "AMOUNT", default_value = "0.01")]
    pub point_value: String,
}

/// Arguments of `office report customers`.
#[derive(Args)]
pub struct CustomersArgs {
    #[command(flatten)]
    pub report: ReportDir,
    /// Every column (RFM scores, first visit, transactions, cards).
    #[arg(long)]
    pub wide: bool,
}

impl ReportCmd {
    /// Whether the output is JSON (for the failure's format).
    pub fn json(&self) -> bool {
        self.dir().output.json
    }

    fn dir(&self) -> &ReportDir {
        match self {
            ReportCmd::Reconciliation(a) => &a.report,
            ReportCmd::Liability(a) => &a.report,
            ReportCmd::Exceptions(a) | ReportCmd::Explained(a) => a,
            ReportCmd::Customers(a) | ReportCmd::Rfm(a) | ReportCmd::Cohorts(a) | ReportCmd::Clv(a) => &a.report,
            ReportCmd::Campaigns(a) | ReportCmd::Households(a) => a,
            ReportCmd::Stores(a) | ReportCmd::Categories(a) => &a.report,
            ReportCmd::Points(a) => &a.report,
        }
    }
}

/// Runs `office report …`.
pub fn run(cmd: &ReportCmd) -> Result<(), Failure> {
    let d = cmd.dir();
    if !matches!(
        cmd,
        ReportCmd::Reconciliation(_) | ReportCmd::Exceptions(_) | ReportCmd::Explained(_)
    ) {
        // The analytics and the liability: wherever the books are.
        let mut warehouse = crate::office::open_warehouse(&d.dir)?;
        if !matches!(cmd, ReportCmd::Liability(_)) {
            // (The liability is the books' own, not the warehouse's.)
            analytics::bring_up_to_date(warehouse.as_mut()).map_err(ledger_err)?;
        }
        return analytics_report(cmd, d, warehouse.as_ref());
    }
    // The reports of the books, wherever they are; holes held too long
    // are exceptions by now.
    let ages = matches!(cmd, ReportCmd::Exceptions(_) | ReportCmd::Explained(_));
    let books = open_books_reports(&d.dir, if ages { Some(now()?) } else { None })?;
    let ledger = books.as_ref();
    let mut view = View::local();
    let (name, value, table) = match cmd {
        ReportCmd::Reconciliation(a) => {
            let day = a.date.as_deref().map(|s| date(s, "date")).transpose()?;
            let r = ledger.reconciliation(day, a.terminal, &view.tz).map_err(|e| match e {
                LedgerError::UnknownTerminal(t) => Failure::usage(format!(
                    "no terminal {t} is registered in this ledger: nothing to report"
                )),
                e => ledger_err(e),
            })?;
            view.wide = a.wide;
            let table = match a.terminal {
                Some(t) if !a.wide && !d.csv => reports::reconciliation_detail(&r, t),
                _ => reports::reconciliation(&r, &view),
            };
            if d.csv {
                // CSV is for machines: every column.
                view.wide = true;
            }
            let table = if d.csv {
                reports::reconciliation(&r, &view)
            } else {
                table
            };
            ("reconciliation", serde_json::to_value(&r), table)
        }
        ReportCmd::Exceptions(_) => return stream_exceptions(ledger, d, &view),
        ReportCmd::Explained(_) => {
            let p = ledger.explanation().map_err(ledger_err)?;
            ("explained", serde_json::to_value(&p), reports::explained(&p))
        }
        _ => return Err(misrouted()),
    };
    emit(name, value, table, d)
}

/// A report sent to the wrong backend's runner (not reached: `run`
/// routes each report).
fn misrouted() -> Failure {
    Failure::usage("this report is not one of these books".to_owned())
}

/// The analytics reports, from the warehouse of either backend.
fn analytics_report(cmd: &ReportCmd, d: &ReportDir, ledger: &dyn tessera_ledger::Warehouse) -> Result<(), Failure> {
    let mut view = View::local();
    let (name, value, table) = match cmd {
        ReportCmd::Liability(a) => {
            let per_point = tessera_terminal::display::parse_amount(&a.point_value, view.minor_units_per_unit)
                .map_err(|e| Failure::usage(format!("invalid point value {:?}: {e}", a.point_value)))?;
            let r = ledger.liability(per_point).map_err(ledger_err)?;
            let mut v = serde_json::to_value(&r);
            if let Ok(serde_json::Value::Object(m)) = &mut v {
                m.insert("currency".into(), view.currency.clone().into());
                m.insert("minor_units_per_unit".into(), view.minor_units_per_unit.into());
            }
            ("liability", v, reports::liability(&r, &view))
        }
        ReportCmd::Customers(a) => {
            let r = ledger.customers_report(now()?).map_err(ledger_err)?;
            view.wide = a.wide || d.csv;
            ("customers", serde_json::to_value(&r), reports::customers(&r, &view))
        }
        ReportCmd::Rfm(a) => {
            let r = analytics::rfm(ledger, now()?).map_err(ledger_err)?;
            view.wide = a.wide || d.csv;
            ("rfm", serde_json::to_value(&r), analytics::rfm_table(&r, &view))
        }
        ReportCmd::Cohorts(a) => {
            let r = analytics::cohorts(ledger).map_err(ledger_err)?;
            view.wide = a.wide || d.csv;
            ("cohorts", serde_json::to_value(&r), analytics::cohorts_table(&r, &view))
        }
        ReportCmd::Clv(a) => {
            let r = analytics::customer_value(ledger, now()?).map_err(ledger_err)?;
            view.wide = a.wide || d.csv;
            ("clv", serde_json::to_value(&r), analytics::clv_table(&r, &view))
        }
        ReportCmd::Campaigns(_) => {
            let r = analytics::campaigns(ledger).map_err(ledger_err)?;
            (
                "campaigns",
                serde_json::to_value(&r),
                analytics::campaigns_table(&r, &view),
            )
        }
        ReportCmd::Stores(a) => {
            let r = analytics::stores(ledger, a.period.period()).map_err(ledger_err)?;
            ("stores", serde_json::to_value(&r), analytics::stores_table(&r, &view))
        }
        ReportCmd::Categories(a) => {
            let r = analytics::categories(ledger, a.period.period()).map_err(ledger_err)?;
            (
                "categories",
                serde_json::to_value(&r),
                analytics::categories_table(&r, &view),
            )
        }
        ReportCmd::Households(_) => {
            let r = analytics::households(ledger).map_err(ledger_err)?;
            (
                "households",
                serde_json::to_value(&r),
                analytics::households_table(&r, &view),
            )
        }
        ReportCmd::Points(a) => {
            let per_point = tessera_terminal::display::parse_amount(&a.point_value, view.minor_units_per_unit)
                .map_err(|e| Failure::usage(format!("invalid point value {:?}: {e}", a.point_value)))?;
            let r = analytics::points_economy(ledger, a.period.period(), per_point).map_err(ledger_err)?;
            ("points", serde_json::to_value(&r), analytics::points_table(&r, &view))
        }
        _ => return Err(misrouted()),
    };
    emit(name, value, table, d)
}

/// Prints a report as JSON, CSV or a table.
fn emit(
    name: &str,
    value: serde_json::Result<serde_json::Value>,
    table: tessera_office::reports::Table,
    d: &ReportDir,
) -> Result<(), Failure> {
    let value = value.map_err(|e| Failure::new(crate::fail::EXIT_FILE, format!("report: {e}")))?;
    if d.output.json {
        print_json(json!({"report": name, "data": value}));
    } else if d.csv {
        let t = table;
        crate::office_ops::emit(&t.csv());
    } else {
        crate::office_ops::emit(&table.text());
    }
    Ok(())
}

/// The exceptions report, one exception at a time from the ledger to
/// stdout (flat memory whatever their number): JSON with the same shape as
/// the other reports, CSV, or a table.
fn stream_exceptions(ledger: &dyn tessera_ledger::Warehouse, d: &ReportDir, view: &View) -> Result<(), Failure> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    const GONE: &str = "stdout closed";
    let broken = |e: std::io::Error| {
        LedgerError::Io(if e.kind() == std::io::ErrorKind::BrokenPipe {
            GONE.to_owned()
        } else {
            e.to_string()
        })
    };
    let t = reports::exceptions_table();
    let head = if d.output.json {
        format!(
            "{{\"version\":{},\"ok\":true,\"report\":\"exceptions\",\"data\":[",
            crate::out::JSON_VERSION
        )
    } else if d.csv {
        t.csv()
    } else {
        format!("{}\n", t.title)
    };
    let head = if d.output.json || d.csv {
        head
    } else {
        let cols: Vec<String> = reports::EXCEPTION_COLUMNS.iter().map(|c| (*c).to_owned()).collect();
        format!("{head}{}\n", reports::exception_line(&cols))
    };
    let mut n = 0u64;
    let written = out.write_all(head.as_bytes()).map_err(broken).and_then(|()| {
        ledger.each_exception(&mut |e| {
            n += 1;
            let line = if d.output.json {
                format!("{}{}", if n == 1 { "" } else { "," }, reports::exception_json(&e, view))
            } else {
                let row = reports::exception_row(&e, view);
                if d.csv {
                    row.iter().map(|c| reports::csv_field(c)).collect::<Vec<_>>().join(",") + "\n"
                } else {
                    reports::exception_line(&row) + "\n"
                }
            };
            out.write_all(line.as_bytes()).map_err(broken)
        })
    });
    let written = written.and_then(|()| {
        let tail = if d.output.json {
            "]}\n"
        } else if !d.csv && n == 0 {
            "  (none)\n"
        } else {
            ""
        };
        out.write_all(tail.as_bytes())
            .and_then(|()| out.flush())
            .map_err(broken)
    });
    match written {
        Ok(()) => Ok(()),
        // A reader that stopped early (`| head`): what it read is whole.
        Err(LedgerError::Io(m)) if m == GONE => Ok(()),
        Err(e) => Err(ledger_err(e)),
    }
}
