//! `tessera office dashboard` (the dashboard as static files) and
//! `tessera office dashboard-token` (the staff token that opens the
//! dashboard `office serve` serves).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::json;
use tessera_office::dashboard::{self, auth::Staff, Currency, ExportError, Zone};

use crate::fail::{Failure, EXIT_DECLINED, EXIT_FILE};
use crate::office::{ledger_err, now, open_warehouse};
use crate::out::print_json;
use crate::OutputArgs;

/// The dashboard commands.
#[derive(Subcommand)]
pub enum DashboardCmd {
    /// Write the dashboard (overview, customers, segments, cohorts,
    /// campaigns, stores, points economy) as static HTML files with
    /// relative links: open DIR/index.html in a browser. DIR is made 0700
    /// and the files 0600 (customer pages carry names).
    #[command(after_help = "Example:\n  tessera office dashboard --dir office --out dashboard\n  \
        xdg-open dashboard/index.html")]
    Dashboard(DashboardArgs),
    /// Make a new staff token for the dashboard `office serve` serves at
    /// /dashboard/ (printed once; stored hashed). A new token ends every
    /// session of the old one.
    DashboardToken(TokenArgs),
}

/// Arguments of `office dashboard`.
#[derive(Args)]
pub struct DashboardArgs {
    /// The office directory.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// The directory to write the pages into (new, or empty).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Arguments of `office dashboard-token`.
#[derive(Args)]
pub struct TokenArgs {
    /// The office directory.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    #[command(flatten)]
    pub output: OutputArgs,
}

impl DashboardCmd {
    /// Whether the output is JSON.
    pub fn json(&self) -> bool {
        match self {
            DashboardCmd::Dashboard(a) => a.output.json,
            DashboardCmd::DashboardToken(a) => a.output.json,
        }
    }
}

/// Runs a dashboard command.
pub fn run(cmd: &DashboardCmd) -> Result<(), Failure> {
    match cmd {
        DashboardCmd::Dashboard(a) => write_static(a),
        DashboardCmd::DashboardToken(a) => token(a),
    }
}

fn write_static(a: &DashboardArgs) -> Result<(), Failure> {
    // Wherever the books are (SQLite, or PostgreSQL once they moved).
    let mut books = open_warehouse(&a.dir)?;
    tessera_office::analytics::bring_up_to_date(books.as_mut()).map_err(ledger_err)?;
    let zone = Zone::system();
    let data = dashboard::collect(books.as_ref(), now()?, &zone, &Currency::office()).map_err(ledger_err)?;
    let files = dashboard::export(&data, &zone, &a.out).map_err(|e| match e {
        e @ ExportError::NotEmpty(_) => Failure::new(EXIT_DECLINED, e.to_string()),
        e => Failure::new(EXIT_FILE, e.to_string()),
    })?;
    let index = a.out.join("index.html");
    if a.output.json {
        print_json(json!({
            "index": index.display().to_string(),
            "files": files.len(),
            "customers": data.customers.len(),
        }));
    } else {
        println!(
            "Wrote the dashboard: {} files ({} customer pages). Open {}",
            files.len(),
            data.customers.len(),
            index.display()
        );
    }
    Ok(())
}

fn token(a: &TokenArgs) -> Result<(), Failure> {
    // Only for an office whose books open: never a token beside nothing.
    open_warehouse(&a.dir)?;
    let token = Staff::create(&a.dir, now()?).map_err(|e| Failure::new(EXIT_FILE, e.to_string()))?;
    if a.output.json {
        print_json(json!({"token": token}));
    } else {
        println!("Staff token (shown once; log in at https://OFFICE/dashboard/login):");
        println!("{token}");
    }
    Ok(())
}
