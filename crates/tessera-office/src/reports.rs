//! The ledger's reports as people read them: tables that fit a
//! 100-column terminal by default (the details with `wide`, or per
//! terminal), dates and times in the office's local time zone, money in
//! the currency the policy names beside the points, and the same rows as
//! CSV. `tessera office report` prints these; an integrator's own screen
//! can use them as they are, or take the typed reports from
//! [`tessera_ledger::Ledger`] (their JSON is the `--json` output).
//!
//! ```
//! use tessera_office::reports::{Table, View};
//!
//! let view = View::utc();
//! let mut t = Table::new("Example", &["terminal", "posted"]);
//! t.push(vec!["7".into(), "12".into()]);
//! assert!(t.text().lines().all(|l| l.chars().count() <= 100));
//! assert_eq!(t.csv(), "terminal,posted\n7,12\n");
//! assert_eq!(view.time(0), "1970-01-01 00:00");
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;

use tessera_ledger::{
    CustomersReport, Exception, Explanation, LiabilityReport, ReconciliationReport, ReconciliationRow,
};
use tessera_rules::display::{self, Zone};
use tessera_settlement::batch::Total;

/// The widest a default table may be, in characters.
pub const SCREEN_WIDTH: usize = 100;

/// How reports show times and money.
#[derive(Debug, Clone)]
pub struct View {
    /// The time zone dates and times are shown in.
    pub tz: Zone,
    /// Minor units in one unit of the currency (100 for cents).
    pub minor_units_per_unit: u64,
    /// The currency's code (`EUR`), printed after amounts.
    pub currency: String,
    /// Every column instead of the ones that fit a screen.
    pub wide: bool,
}

impl View {
    /// The office's view: the system's time zone (`TZ` honoured) and the
    /// currency of the default till policy.
    pub fn local() -> Self {
        let policy = tessera_rules::policy::Policy::default_policy();
        View {
            tz: Zone::system(),
            minor_units_per_unit: policy.points.minor_units_per_unit,
            currency: policy.currency,
            wide: false,
        }
    }

    /// UTC and euro cents, for tests and examples.
    pub fn utc() -> Self {
        View {
            tz: Zone::utc(),
            minor_units_per_unit: 100,
            currency: "EUR".into(),
            wide: false,
        }
    }

    /// A Unix time as local `YYYY-MM-DD HH:MM`.
    pub fn time(&self, t: u32) -> String {
        self.tz.local(t)
    }

    /// A Unix time as ISO 8601 with the local offset (for JSON beside the
    /// Unix seconds).
    pub fn iso(&self, t: u32) -> String {
        self.tz.iso8601(t)
    }

    /// An amount in minor units as money: `1,234.50 EUR`.
    pub fn money(&self, minor: i64) -> String {
        display::format_signed_money(minor, self.minor_units_per_unit, &self.currency)
    }
}

/// `1234567` → `1,234,567`.
pub fn group(n: u64) -> String {
    display::group_thousands(n)
}

/// Points with thousands separators: `-1,250`.
pub fn points(p: i64) -> String {
    let s = group(p.unsigned_abs());
    if p < 0 {
        format!("-{s}")
    } else {
        s
    }
}

/// A report as a table: summary lines, a header, rows, and notes that
/// explain the columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// The report's title.
    pub title: String,
    /// Lines printed above the table.
    pub summary: Vec<String>,
    /// Column names.
    pub columns: Vec<String>,
    /// Cells, one vector per row, as many as columns.
    pub rows: Vec<Vec<String>>,
    /// Lines printed below the table (what a column means).
    pub notes: Vec<String>,
}

impl Table {
    /// An empty table with these columns.
    pub fn new(title: &str, columns: &[&str]) -> Self {
        Table {
            title: title.into(),
            summary: Vec::new(),
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Adds a row (missing cells are empty, extra ones dropped).
    pub fn push(&mut self, mut row: Vec<String>) {
        row.resize(self.columns.len(), String::new());
        self.rows.push(row);
    }

    /// The table for a screen: columns padded, numbers right-aligned,
    /// cells longer than 40 characters cut (CSV and JSON carry them whole).
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}", self.title);
        for s in &self.summary {
            for l in wrap(s, SCREEN_WIDTH - 2) {
                let _ = writeln!(out, "  {l}");
            }
        }
        if !self.columns.is_empty() {
            if self.rows.is_empty() {
                let _ = writeln!(out, "  (none)");
            } else {
                let cells: Vec<Vec<String>> = self
                    .rows
                    .iter()
                    .map(|r| r.iter().map(|c| screen_cell(c)).collect())
                    .collect();
                let widths: Vec<usize> = (0..self.columns.len())
                    .map(|i| {
                        cells
                            .iter()
                            .map(|r| r[i].chars().count())
                            .chain([self.columns[i].chars().count()])
                            .max()
                            .unwrap_or(0)
                    })
                    .collect();
                let numeric: Vec<bool> = (0..self.columns.len())
                    .map(|i| cells.iter().all(|r| is_number(&r[i])))
                    .collect();
                let line = |vals: &[String]| {
                    let mut l = String::from(" ");
                    for (i, v) in vals.iter().enumerate() {
                        let w = widths[i];
                        if numeric[i] {
                            let _ = write!(l, " {v:>w$}");
                        } else {
                            let _ = write!(l, " {v:<w$}");
                        }
                    }
                    l.trim_end().to_owned()
                };
                let _ = writeln!(out, "{}", line(&self.columns));
                for r in &cells {
                    let _ = writeln!(out, "{}", line(r));
                }
            }
        }
        for n in &self.notes {
            for l in wrap(n, SCREEN_WIDTH - 4) {
                let _ = writeln!(out, "  {l}");
            }
        }
        out
    }

    /// The rows as CSV (RFC 4180: a header line, fields quoted when they
    /// need it); a table without columns gives its summary lines as
    /// `field,value`.
    pub fn csv(&self) -> String {
        let mut out = String::new();
        let line = |vals: &[String]| vals.iter().map(|v| csv_field(v)).collect::<Vec<_>>().join(",");
        let _ = writeln!(out, "{}", line(&self.columns));
        for r in &self.rows {
            let _ = writeln!(out, "{}", line(r));
        }
        out
    }
}

/// A number as the tables print them (digits, separators, a sign).
fn is_number(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit() || c == ',')
}

/// Words of `s` in lines of at most `width` characters (continuations
/// indented by two).
fn wrap(s: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for w in s.split(' ') {
        if !line.is_empty() && line.chars().count() + 1 + w.chars().count() > width {
            lines.push(std::mem::take(&mut line));
            line.push_str("  ");
        } else if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(w);
    }
    lines.push(line);
    lines
}

/// A cell cut for the screen.
fn screen_cell(s: &str) -> String {
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(39).collect::<String>())
    } else {
        s.to_owned()
    }
}

/// One CSV field (RFC 4180).
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Totals per type: `earn 3 / 120, redeem 1 / 50` (count / points).
fn totals_cell(m: &BTreeMap<String, Total>) -> String {
    m.iter()
        .map(|(k, t)| format!("{k} {} / {}", t.count, group(t.points)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Counts per reason: `D03 2, R01 1`.
fn counts_cell(m: &BTreeMap<String, u64>) -> String {
    m.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ")
}

/// What the copies column means (the same words on every reconciliation).
pub const COPIES_NOTE: &str = "copies: transactions another till also delivered (recovered from the card's log \
after a pulled card) — normal, counted once";

/// The reconciliation: one row per local day and terminal. Narrow by
/// default (fits [`SCREEN_WIDTH`]); `view.wide` adds the declared and
/// stored totals per type and the refusals per reason.
pub fn reconciliation(r: &ReconciliationReport, view: &View) -> Table {
    let narrow = [
        "date",
        "terminal",
        "batches",
        "records",
        "posted",
        "copies",
        "rejected",
        "held",
        "exceptions",
        "refusals",
    ];
    let mut cols: Vec<&str> = narrow.to_vec();
    if view.wide {
        cols.extend([
            "held batches",
            "card transactions",
            "declared",
            "stored",
            "refusals by reason",
        ]);
    }
    let mut t = Table::new("Reconciliation", &cols);
    for row in &r.rows {
        let mut cells = vec![
            row.date.clone(),
            row.terminal_id.to_string(),
            group(u64::from(row.batches)),
            group(row.records),
            group(row.posted),
            group(row.copies),
            group(row.rejected),
            group(row.held),
            group(row.exceptions),
            group(row.declines.values().sum()),
        ];
        if view.wide {
            cells.extend([
                row.store.clone().unwrap_or_default(),
                group(u64::from(row.held_batches)),
                group(row.card_transactions),
                totals_cell(&row.declared),
                totals_cell(&row.stored),
                counts_cell(&row.declines),
            ]);
        }
        t.push(cells);
    }
    t.summary.push(reconciliation_verdict(r));
    t.notes.push(COPIES_NOTE.into());
    t.notes
        .push("refusals: declined and referred decisions (details: --wide, or --terminal N)".into());
    if !r.exceptions_by_class.is_empty() {
        t.notes.push(format!(
            "exceptions by class: {} (office report exceptions)",
            counts_cell(&r.exceptions_by_class)
        ));
    }
    t
}

/// One line: does every terminal's declared total match what was stored?
fn reconciliation_verdict(r: &ReconciliationReport) -> String {
    let off: Vec<String> = r
        .rows
        .iter()
        .filter(|row| !row_balances(row))
        .map(|row| format!("terminal {} on {}", row.terminal_id, row.date))
        .collect();
    let exceptions: u64 = r.exceptions_by_class.values().sum();
    match (off.is_empty(), exceptions) {
        (true, 0) => {
            "Every record is accounted for (posted, copies, rejected or held, as the tills declared); no exceptions."
                .into()
        }
        (true, n) => format!("Every record is accounted for; {n} exceptions to look at (office report exceptions)."),
        (false, _) => format!("NOT BALANCED: {}", off.join(", ")),
    }
}

/// Keeps the rows of one store's terminals.
pub fn only_store(r: &mut ReconciliationReport, store_id: u32) {
    r.rows.retain(|row| row.store_id == Some(store_id));
}

/// Whether a row's card transactions are all accounted for.
fn row_balances(row: &ReconciliationRow) -> bool {
    row.posted + row.copies + row.rejected + row.held == row.card_transactions
        && row.declared.values().map(|t| t.count).sum::<u64>() == row.card_transactions
}

/// One terminal's reconciliation in detail: per day and transaction type,
/// what the till declared against what the ledger stored; and the
/// refusals per reason.
pub fn reconciliation_detail(r: &ReconciliationReport, terminal_id: u32) -> Table {
    let mut t = Table::new(
        &format!("Reconciliation of terminal {terminal_id}"),
        &[
            "date",
            "type",
            "declared",
            "declared points",
            "stored",
            "stored points",
            "match",
        ],
    );
    for row in r.rows.iter().filter(|row| row.terminal_id == terminal_id) {
        let types: std::collections::BTreeSet<&String> = row.declared.keys().chain(row.stored.keys()).collect();
        for ty in types {
            let d = row.declared.get(ty).copied().unwrap_or_default();
            let s = row.stored.get(ty).copied().unwrap_or_default();
            t.push(vec![
                row.date.clone(),
                ty.clone(),
                group(d.count),
                group(d.points),
                group(s.count),
                group(s.points),
                if (d.count, d.points) == (s.count, s.points) {
                    "yes".into()
                } else {
                    "see copies/held".into()
                },
            ]);
        }
        for (reason, n) in &row.declines {
            t.notes.push(format!("{}: {n} refused with {reason}", row.date));
        }
        t.notes.push(format!(
            "{}: {} batches ({} held), {} records, {} posted, {} copies, {} rejected, {} held, {} exceptions",
            row.date,
            row.batches,
            row.held_batches,
            row.records,
            row.posted,
            row.copies,
            row.rejected,
            row.held,
            row.exceptions
        ));
    }
    t.summary.push(reconciliation_verdict(r));
    t.notes.push(COPIES_NOTE.into());
    t
}

/// The liability in points and money, as `field, value` rows.
pub fn liability(r: &LiabilityReport, view: &View) -> Table {
    let mut t = Table::new("Liability", &["", "points", "value"]);
    let value = |p: i64| view.money(p.saturating_mul(i64::try_from(r.minor_units_per_point).unwrap_or(i64::MAX)));
    let mut row = |what: &str, p: i64| t.push(vec![what.into(), points(p), value(p)]);
    row("outstanding (the books)", r.points_outstanding);
    row("on the cards (last certified)", r.card_balances);
    row("of which on hotlisted cards", r.hotlisted_points);
    row("held beyond a gap (not in outstanding)", r.pending_points);
    row("unexplained by a certificate", r.unexplained_points);
    t.summary.push(format!(
        "{} points outstanding on {} cards = {} at {} per point.",
        points(r.points_outstanding),
        group(r.cards),
        value(r.points_outstanding),
        view.money(i64::try_from(r.minor_units_per_point).unwrap_or(i64::MAX)),
    ));
    t.notes.push(format!(
        "{} hotlisted cards; {} records held beyond a gap.",
        group(r.hotlisted_cards),
        group(r.pending_records)
    ));
    t
}

/// The exception columns, in the order a clerk reads them.
pub const EXCEPTION_COLUMNS: [&str; 8] = ["id", "at", "class", "card", "counter", "terminal", "batch", "evidence"];

/// The title and column line of the exceptions table (rows are streamed,
/// [`exception_row`]).
pub fn exceptions_table() -> Table {
    Table::new("Exceptions", &EXCEPTION_COLUMNS)
}

/// Column widths of the streamed exceptions table (the evidence takes the
/// rest of a 100-column line).
const EXCEPTION_WIDTHS: [usize; 7] = [6, 16, 20, 16, 7, 8, 5];

/// One line of the streamed exceptions table — the header for
/// [`EXCEPTION_COLUMNS`], or a row of [`exception_row`] — in fixed widths,
/// the evidence cut to fit 100 columns.
pub fn exception_line(cells: &[String]) -> String {
    let mut l = String::from(" ");
    for (c, w) in cells.iter().zip(EXCEPTION_WIDTHS) {
        let _ = write!(l, " {c:<w$}");
    }
    let used = l.chars().count() + 1;
    if let Some(evidence) = cells.get(EXCEPTION_WIDTHS.len()) {
        let room = SCREEN_WIDTH.saturating_sub(used).max(10);
        let cut = if evidence.chars().count() > room {
            format!("{}…", evidence.chars().take(room - 1).collect::<String>())
        } else {
            evidence.clone()
        };
        let _ = write!(l, " {cut}");
    }
    l.trim_end().to_owned()
}

/// One exception as cells of [`EXCEPTION_COLUMNS`], the time local.
pub fn exception_row(e: &Exception, view: &View) -> Vec<String> {
    let opt = |x: Option<u32>| x.map(|v| v.to_string()).unwrap_or_default();
    vec![
        e.id.to_string(),
        view.time(e.at),
        e.class.to_string(),
        e.card_id.map(hex::encode_upper).unwrap_or_default(),
        opt(e.counter),
        opt(e.terminal_id),
        opt(e.batch_no),
        e.evidence.to_string(),
    ]
}

/// One exception's JSON: the ledger's, plus `at_local` (ISO 8601).
pub fn exception_json(e: &Exception, view: &View) -> serde_json::Value {
    let mut v = serde_json::to_value(e).unwrap_or(serde_json::Value::Null);
    if let Some(m) = v.as_object_mut() {
        m.insert("at_local".into(), view.iso(e.at).into());
    }
    v
}

/// Whether every point is explained, and what is not.
pub fn explained(p: &Explanation) -> Table {
    let mut t = Table::new("Explained", &["", "records", "points"]);
    let mut row = |what: &str, n: String, pts: i64| t.push(vec![what.into(), n, points(pts)]);
    row("liability (the books)", String::new(), p.points_outstanding);
    row("posted records add up to", String::new(), p.posted_points);
    row("matched to their decisions", group(p.matched_records), p.matched_points);
    row("awaiting their decision", group(p.awaiting_records), p.awaiting_points);
    row(
        "no decision explains (orphans)",
        group(p.orphan_records),
        p.orphan_points,
    );
    row("held beyond a gap", group(p.pending_records), 0);
    row("unexplained on the cards", String::new(), p.unexplained_points);
    t.summary.push(if p.explained {
        format!("Every point is explained ({} cards).", group(p.cards))
    } else {
        "NOT EXPLAINED:".into()
    });
    for pr in &p.problems {
        t.summary.push(format!("  {pr}"));
    }
    if !p.exceptions.is_empty() {
        t.notes
            .push(format!("exceptions by class: {}", counts_cell(&p.exceptions)));
    }
    t
}

/// The customers report, one row per customer (or anonymous card).
pub fn customers(r: &CustomersReport, view: &View) -> Table {
    let mut cols = vec![
        "customer",
        "name",
        "segment",
        "visits",
        "last visit",
        "recency",
        "earned",
        "redeemed",
        "spend",
        "store",
    ];
    if view.wide {
        cols.extend(["rfm", "category", "first visit", "transactions", "cards"]);
    }
    let mut t = Table::new("Customers", &cols);
    for c in &r.rows {
        let mut cells = vec![
            c.customer_id.map(|i| i.to_string()).unwrap_or_else(|| "-".into()),
            c.name.clone().unwrap_or_default(),
            c.segment.clone(),
            group(c.visits),
            c.last_visit.clone(),
            format!("{} d", c.recency_days),
            points(c.points_earned),
            points(c.points_redeemed),
            view.money(i64::try_from(c.spend_minor).unwrap_or(i64::MAX)),
            c.favourite_store.clone().unwrap_or_default(),
        ];
        if view.wide {
            cells.extend([
                c.rfm.clone(),
                c.favourite_category.clone().unwrap_or_default(),
                c.first_visit.clone(),
                group(c.transactions),
                c.cards.join(" "),
            ]);
        }
        t.push(cells);
    }
    t.summary.push(format!("As of {}.", r.as_of));
    t.summary
        .push("Segments: R, F and M are quintiles 1-5 within these customers (5 best; M on money spent):".into());
    for l in r.legend.iter().filter(|l| r.segments.contains_key(&l.segment)) {
        t.summary
            .push(format!("  {:<20} {:<30} {}", l.segment, l.rule, l.meaning));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::unwrap_used)]
    fn money_and_points_read_as_people_write_them() {
        let v = View::utc();
        assert_eq!(v.money(1_234_567), "12,345.67 EUR");
        assert_eq!(v.money(-5), "-0.05 EUR");
        assert_eq!(v.money(0), "0.00 EUR");
        let yen = View {
            minor_units_per_unit: 1,
            currency: "JPY".into(),
            ..View::utc()
        };
        assert_eq!(yen.money(1_000), "1,000 JPY");
        assert_eq!(points(-1_250), "-1,250");
        assert_eq!(group(999), "999");
        assert_eq!(group(1_000_000), "1,000,000");
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn times_are_local() {
        let berlin = View {
            tz: Zone::named("Europe/Berlin").unwrap(),
            ..View::utc()
        };
        // 2026-12-03 23:30 UTC is already the 4th in Berlin.
        let t = 1_796_340_600;
        assert_eq!(View::utc().time(t), "2026-12-03 23:30");
        assert_eq!(berlin.time(t), "2026-12-04 00:30");
        assert_eq!(berlin.iso(t), "2026-12-04T00:30:00+01:00");
    }

    #[test]
    fn tables_align_and_quote() {
        let mut t = Table::new("T", &["name", "n"]);
        t.push(vec!["a, b".into(), "1,000".into()]);
        t.push(vec!["c".into(), "2".into()]);
        assert_eq!(t.csv(), "name,n\n\"a, b\",\"1,000\"\nc,2\n");
        let text = t.text();
        assert_eq!(text, "T\n  name     n\n  a, b 1,000\n  c        2\n");
    }
}
