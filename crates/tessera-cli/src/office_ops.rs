//! `tessera office hotlist | store | terminal | customer | audit`: the
//! office's daily operations, each one call to
//! [`tessera_office::dir::OfficeDir`], each audited under the operator's
//! name (`--operator NAME`, else `$TESSERA_OPERATOR`, else `$USER` /
//! `$LOGNAME`; an empty name is refused).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{json, Value};
use tessera_ledger::{CustomerQuery, LedgerError};
use tessera_office::audit::AuditError;
use tessera_office::dir::{CustomerRef, OfficeDir, OfficeDirError};
use tessera_office::reports::csv_field;
use tessera_terminal::Clock;

use crate::args::hex8;
use crate::fail::{Failure, EXIT_ALREADY_DONE, EXIT_DECLINED, EXIT_USAGE};
use crate::office::DirArgs;
use crate::out::{self, print_json};

/// Exit code: the office refused (a log that does not verify).
const EXIT_OFFICE: u8 = crate::settle::EXIT_OFFICE;

/// Who does an office action (recorded in the audit log).
#[derive(Args, Clone, Default)]
pub struct OperatorArgs {
    /// The operator's name for the audit log [default: $TESSERA_OPERATOR,
    /// else the login name ($USER, $LOGNAME)].
    #[arg(long, value_name = "NAME")]
    pub operator: Option<String>,
}

impl DirArgs {
    /// The office directory, its actions audited under the operator named.
    pub fn office(&self) -> OfficeDir {
        OfficeDir::new(&self.dir).with_operator(self.who.operator.clone())
    }
}

/// The office's daily operations (flattened into `tessera office`).
#[derive(Subcommand)]
pub enum OpsCmd {
    /// The hotlist of blocked cards: add, list, remove (each change is a
    /// new hotlist version, delivered to the tills by `pos sync`).
    #[command(subcommand)]
    Hotlist(HotlistCmd),
    /// Stores: the named places where terminals stand.
    #[command(subcommand)]
    Store(StoreCmd),
    /// Terminals: list, assign to a store, revoke.
    #[command(subcommand)]
    Terminal(TerminalCmd),
    /// Customers' personal data: search, export, erase.
    #[command(subcommand)]
    Customer(CustomerCmd),
    /// The audit log of office actions: list, verify.
    #[command(subcommand)]
    Audit(AuditCmd),
}

/// `tessera office hotlist …`
#[derive(Subcommand)]
pub enum HotlistCmd {
    /// Block a card this office issued: tills block it at its next tap
    /// after `pos sync`.
    Add(HotlistAddArgs),
    /// The hotlist: version, cards, reasons.
    List(ListArgs),
    /// Take a card off the hotlist (tills stop blocking it after `pos
    /// sync`; a card a till already blocked stays blocked on the card).
    Remove(HotlistRemoveArgs),
}

/// Arguments of `office hotlist add`.
#[derive(Args)]
pub struct HotlistAddArgs {
    #[command(flatten)]
    pub office: DirArgs,
    /// The card, 16 hex digits.
    #[arg(long, value_name = "ID")]
    pub card: String,
    /// Why (kept in the ledger and the audit log): lost, stolen, fraud, …
    #[arg(long)]
    pub reason: String,
}

/// Arguments of `office hotlist remove`.
#[derive(Args)]
pub struct HotlistRemoveArgs {
    #[command(flatten)]
    pub office: DirArgs,
    /// The card, 16 hex digits.
    #[arg(long, value_name = "ID")]
    pub card: String,
    /// Why (kept in the audit log): found, mistake, …
    #[arg(long)]
    pub reason: String,
}

/// Arguments of the list commands.
#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub office: DirArgs,
    /// CSV instead of a table.
    #[arg(long, conflicts_with = "json")]
    pub csv: bool,
}

/// `tessera office store …`
#[derive(Subcommand)]
pub enum StoreCmd {
    /// Add a store.
    Add(StoreAddArgs),
    /// Every store, with its number of terminals.
    List(ListArgs),
}

/// Arguments of `office store add`.
#[derive(Args)]
pub struct StoreAddArgs {
    #[command(flatten)]
    pub office: DirArgs,
    /// The store's number (the one its tills are given with --store).
    #[arg(long)]
    pub id: u32,
    /// Its name.
    #[arg(long)]
    pub name: String,
    /// Its city.
    #[arg(long, default_value = "")]
    pub city: String,
}

/// `tessera office terminal …`
#[derive(Subcommand)]
pub enum TerminalCmd {
    /// Every registered terminal: store, registered, revoked, last batch.
    List(ListArgs),
    /// Register a terminal (made by `office export-terminal`) to a store.
    Assign(TerminalAssignArgs),
    /// Revoke a terminal: its later batches and syncs are refused (HTTP
    /// 403, `office import` exit 6) and reported as exceptions.
    Revoke(TerminalRevokeArgs),
}

/// Arguments of `office terminal assign`.
#[derive(Args)]
pub struct TerminalAssignArgs {
    #[command(flatten)]
    pub office: DirArgs,
    /// The terminal.
    #[arg(long)]
    pub terminal_id: u32,
    /// The store (`office store add`).
    #[arg(long)]
    pub store: u32,
}

/// Arguments of `office terminal revoke`.
#[derive(Args)]
pub struct TerminalRevokeArgs {
    #[command(flatten)]
    pub office: DirArgs,
    /// The terminal.
    #[arg(long)]
    pub terminal_id: u32,
    /// Why (kept in the ledger and the audit log): stolen, decommissioned, …
    #[arg(long)]
    pub reason: String,
}

/// `tessera office customer …`
#[derive(Subcommand)]
pub enum CustomerCmd {
    /// Find customers by part of the name (any case, any script), card or
    /// part of the city; criteria given together must all match.
    Search(CustomerSearchArgs),
    /// One customer's personal data and card books, as JSON (to a private
    /// file with --out).
    Export(CustomerExportArgs),
    /// Erase a customer's personal data from the registry and from the
    /// profile updates waiting for their cards. The books stay balanced and
    /// the cards stay valid, as anonymous cards. Needs --yes.
    Erase(CustomerEraseArgs),
}

/// Arguments of `office customer search`.
#[derive(Args)]
#[command(group(clap::ArgGroup::new("by").required(true).multiple(true).args(["name", "card", "city"])))]
pub struct CustomerSearchArgs {
    #[command(flatten)]
    pub office: DirArgs,
    /// Part of the name.
    #[arg(long)]
    pub name: Option<String>,
    /// One of the customer's cards, 16 hex digits.
    #[arg(long, value_name = "ID")]
    pub card: Option<String>,
    /// Part of the home city.
    #[arg(long)]
    pub city: Option<String>,
    /// CSV instead of a table.
    #[arg(long, conflicts_with = "json")]
    pub csv: bool,
}

/// Which customer.
#[derive(Args)]
#[command(group(clap::ArgGroup::new("who").required(true).args(["customer", "card"])))]
pub struct CustomerWho {
    /// The customer's number.
    #[arg(long, value_name = "N")]
    pub customer: Option<u64>,
    /// Or one of their cards, 16 hex digits.
    #[arg(long, value_name = "ID")]
    pub card: Option<String>,
}

/// Arguments of `office customer export`.
#[derive(Args)]
pub struct CustomerExportArgs {
    #[command(flatten)]
    pub office: DirArgs,
    #[command(flatten)]
    pub who: CustomerWho,
    /// Write the export to this new file (`0600`, never overwritten)
    /// instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Arguments of `office customer erase`.
#[derive(Args)]
pub struct CustomerEraseArgs {
    #[command(flatten)]
    pub office: DirArgs,
    #[command(flatten)]
    pub who: CustomerWho,
    /// Confirm: the personal data cannot be brought back.
    #[arg(long)]
    pub yes: bool,
}

/// `tessera office audit …`
#[derive(Subcommand)]
pub enum AuditCmd {
    /// Every entry: when, who, what, details.
    List(ListArgs),
    /// Check the chain of hashes and its anchor in the ledger (exit 0
    /// intact, 1 otherwise).
    Verify(DirArgs),
}

/// Runs an office operation.
pub fn run(cmd: OpsCmd) -> Result<(), Failure> {
    match cmd {
        OpsCmd::Hotlist(HotlistCmd::Add(a)) => hotlist_add(&a).map_err(|f| f.json(a.office.output.json)),
        OpsCmd::Hotlist(HotlistCmd::List(a)) => hotlist_list(&a).map_err(|f| f.json(a.office.output.json)),
        OpsCmd::Hotlist(HotlistCmd::Remove(a)) => hotlist_remove(&a).map_err(|f| f.json(a.office.output.json)),
        OpsCmd::Store(StoreCmd::Add(a)) => store_add(&a).map_err(|f| f.json(a.office.output.json)),
        OpsCmd::Store(StoreCmd::List(a)) => store_list(&a).map_err(|f| f.json(a.office.output.json)),
        OpsCmd::Terminal(TerminalCmd::List(a)) => terminal_list(&a).map_err(|f| f.json(a.office.output.json)),
        OpsCmd::Terminal(TerminalCmd::Assign(a)) => terminal_assign(&a).map_err(|f| f.json(a.office.output.json)),
        OpsCmd::Terminal(TerminalCmd::Revoke(a)) => terminal_revoke(&a).map_err(|f| f.json(a.office.output.json)),
        OpsCmd::Customer(CustomerCmd::Search(a)) => customer_search(&a).map_err(|f| f.json(a.office.output.json)),
        OpsCmd::Customer(CustomerCmd::Export(a)) => customer_export(&a).map_err(|f| f.json(a.office.output.json)),
        OpsCmd::Customer(CustomerCmd::Erase(a)) => customer_erase(&a).map_err(|f| f.json(a.office.output.json)),
        OpsCmd::Audit(AuditCmd::List(a)) => audit_list(&a).map_err(|f| f.json(a.office.output.json)),
        OpsCmd::Audit(AuditCmd::Verify(a)) => audit_verify(&a).map_err(|f| f.json(a.output.json)),
    }
}

/// An office error as a failure: what the caller gave wrong is a usage
/// error (2), a conflict a decline (1), an audit log that does not verify
/// the office's refusal (6).
fn fail(e: OfficeDirError) -> Failure {
    match e {
        OfficeDirError::Ledger(
            ref l @ (LedgerError::NotIssued(_)
            | LedgerError::UnknownStore(_)
            | LedgerError::UnknownTerminal(_)
            | LedgerError::UnknownCustomer(_)
            | LedgerError::Malformed(_)),
        ) => Failure::new(EXIT_USAGE, l.to_string()),
        OfficeDirError::Ledger(ref l @ LedgerError::StoreExists(_)) => Failure::new(EXIT_DECLINED, l.to_string()),
        e @ OfficeDirError::NoCustomer(_) => Failure::new(EXIT_USAGE, e.to_string()),
        e => Failure::from(e),
    }
}

/// An audit failure: no or a bad operator name is a usage error (2), a log
/// that does not verify the office's refusal (6), an unwritable one a file
/// error (4).
pub(crate) fn audit_failure(a: AuditError) -> Failure {
    let code = match a {
        AuditError::NoOperator | AuditError::BadOperator(_) => EXIT_USAGE,
        AuditError::Broken(_) => EXIT_OFFICE,
        _ => crate::fail::EXIT_FILE,
    };
    Failure::new(code, format!("audit: {a}"))
}

fn now() -> Result<u32, Failure> {
    Ok(crate::pos::clock()?.now())
}

/// A Unix time for a person: local `YYYY-MM-DD HH:MM` (`TZ` honoured), as
/// the reports show it.
fn when(t: u64) -> String {
    tessera_office::reports::View::local().time(u32::try_from(t).unwrap_or(u32::MAX))
}

fn when_opt(t: Option<u32>) -> String {
    t.map(|t| when(u64::from(t))).unwrap_or_default()
}

/// Writes text to standard output; a reader that stopped early (`| head`)
/// is not an error: what it read is whole lines.
pub(crate) fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Rows as a table (columns as wide as their widest cell) after a title
/// line, or CSV.
fn print_rows(title: &str, header: &[&str], rows: &[Vec<String>], csv: bool) {
    let mut text = String::new();
    if csv {
        text.push_str(&header.iter().map(|h| csv_field(h)).collect::<Vec<_>>().join(","));
        text.push('\n');
        for r in rows {
            text.push_str(&r.iter().map(|c| csv_field(c)).collect::<Vec<_>>().join(","));
            text.push('\n');
        }
        return emit(&text);
    }
    text.push_str(title);
    text.push('\n');
    if rows.is_empty() {
        text.push_str("  (none)\n");
        return emit(&text);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}", w = *w))
            .collect();
        text.push_str(&format!("  {}\n", parts.join("  ").trim_end()));
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
    emit(&text);
}

fn hotlist_add(a: &HotlistAddArgs) -> Result<(), Failure> {
    let card = hex8(&a.card, "card id")?;
    let change = a.office.office().hotlist_add(card, &a.reason, now()?).map_err(fail)?;
    let id = out::card_id(&card);
    if !change.changed {
        return Err(Failure::new(
            EXIT_ALREADY_DONE,
            format!(
                "card {id} is on the hotlist already (hotlist v{}): nothing changed",
                change.version
            ),
        ));
    }
    if a.office.output.json {
        print_json(json!({"card_id": id, "hotlist_version": change.version}));
    } else {
        println!(
            "Card {id} hotlisted (hotlist v{}): terminals block it at its next tap after `pos sync`.",
            change.version
        );
    }
    Ok(())
}

fn hotlist_remove(a: &HotlistRemoveArgs) -> Result<(), Failure> {
    let card = hex8(&a.card, "card id")?;
    let change = a.office.office().hotlist_remove(card, &a.reason).map_err(fail)?;
    let id = out::card_id(&card);
    if !change.changed {
        return Err(Failure::new(
            EXIT_ALREADY_DONE,
            format!(
                "card {id} is not on the hotlist (hotlist v{}): nothing changed",
                change.version
            ),
        ));
    }
    if a.office.output.json {
        print_json(json!({"card_id": id, "hotlist_version": change.version}));
    } else {
        println!(
            "Card {id} taken off the hotlist (hotlist v{}): terminals stop blocking it after `pos sync` (a card a till already blocked stays blocked).",
            change.version
        );
    }
    Ok(())
}

fn hotlist_list(a: &ListArgs) -> Result<(), Failure> {
    let (version, entries) = a.office.office().hotlist_entries().map_err(fail)?;
    if a.office.output.json {
        print_json(json!({"hotlist_version": version, "cards": entries}));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| vec![out::card_id(&e.card_id), when(u64::from(e.at)), e.reason.clone()])
        .collect();
    print_rows(
        &format!("Hotlist v{version}: {} cards", entries.len()),
        &["card_id", "since", "reason"],
        &rows,
        a.csv,
    );
    Ok(())
}

fn store_add(a: &StoreAddArgs) -> Result<(), Failure> {
    let store = a
        .office
        .office()
        .add_store(a.id, &a.name, &a.city, now()?)
        .map_err(fail)?;
    if a.office.output.json {
        print_json(json!({"store": store}));
    } else {
        println!(
            "Store {} added: {}{}. Assign its terminals with `office terminal assign --store {}`.",
            store.store_id,
            store.name,
            if store.city.is_empty() {
                String::new()
            } else {
                format!(", {}", store.city)
            },
            store.store_id
        );
    }
    Ok(())
}

fn store_list(a: &ListArgs) -> Result<(), Failure> {
    let stores = a.office.office().stores().map_err(fail)?;
    if a.office.output.json {
        print_json(json!({"stores": stores}));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = stores
        .iter()
        .map(|s| {
            vec![
                s.store_id.to_string(),
                s.name.clone(),
                s.city.clone(),
                s.terminals.to_string(),
            ]
        })
        .collect();
    print_rows("Stores", &["store", "name", "city", "terminals"], &rows, a.csv);
    Ok(())
}

fn terminal_list(a: &ListArgs) -> Result<(), Failure> {
    let terminals = a.office.office().terminals().map_err(fail)?;
    if a.office.output.json {
        print_json(json!({"terminals": terminals}));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = terminals
        .iter()
        .map(|t| {
            vec![
                t.terminal_id.to_string(),
                match (&t.store_id, &t.store_name) {
                    (Some(id), Some(n)) => format!("{id} {n}"),
                    _ => String::new(),
                },
                when(u64::from(t.registered_at)),
                match (t.revoked_at, &t.revoke_reason) {
                    (Some(at), Some(r)) => format!("{} ({r})", when(u64::from(at))),
                    (Some(at), None) => when(u64::from(at)),
                    _ => String::new(),
                },
                if t.last_batch_no == 0 {
                    String::new()
                } else {
                    format!("{} at {}", t.last_batch_no, when_opt(t.last_batch_at))
                },
            ]
        })
        .collect();
    print_rows(
        "Terminals",
        &["terminal", "store", "registered", "revoked", "last batch"],
        &rows,
        a.csv,
    );
    Ok(())
}

fn terminal_assign(a: &TerminalAssignArgs) -> Result<(), Failure> {
    a.office
        .office()
        .assign_terminal(a.terminal_id, a.store)
        .map_err(fail)?;
    if a.office.output.json {
        print_json(json!({"terminal_id": a.terminal_id, "store_id": a.store}));
    } else {
        println!("Terminal {} registered to store {}.", a.terminal_id, a.store);
    }
    Ok(())
}

fn terminal_revoke(a: &TerminalRevokeArgs) -> Result<(), Failure> {
    let revoked = a
        .office
        .office()
        .revoke_terminal(a.terminal_id, &a.reason, now()?)
        .map_err(fail)?;
    if !revoked {
        return Err(Failure::new(
            EXIT_ALREADY_DONE,
            format!("terminal {} is revoked already: nothing changed", a.terminal_id),
        ));
    }
    if a.office.output.json {
        print_json(json!({"terminal_id": a.terminal_id, "revoked": true}));
    } else {
        println!(
            "Terminal {} revoked: its batches and syncs are refused from now on, each reported as a revoked-terminal exception.",
            a.terminal_id
        );
    }
    Ok(())
}

fn who(w: &CustomerWho) -> Result<CustomerRef, Failure> {
    match (&w.customer, &w.card) {
        (Some(id), _) => Ok(CustomerRef::Id(*id)),
        (None, Some(c)) => Ok(CustomerRef::Card(hex8(c, "card id")?)),
        (None, None) => Err(Failure::usage("give --customer N or --card ID")),
    }
}

fn customer_search(a: &CustomerSearchArgs) -> Result<(), Failure> {
    let q = CustomerQuery {
        name: a.name.clone(),
        card: a.card.as_deref().map(|c| hex8(c, "card id")).transpose()?,
        city: a.city.clone(),
    };
    let found = a.office.office().search_customers(&q).map_err(fail)?;
    if a.office.output.json {
        print_json(json!({"customers": found}));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = found
        .iter()
        .map(|c| {
            vec![
                c.customer_id.to_string(),
                c.name.clone(),
                c.home_city.clone(),
                c.birth_date.clone(),
                c.cards.join(" "),
            ]
        })
        .collect();
    print_rows(
        &format!("Customers found: {}", found.len()),
        &["customer", "name", "city", "birth_date", "cards"],
        &rows,
        a.csv,
    );
    Ok(())
}

fn customer_export(a: &CustomerExportArgs) -> Result<(), Failure> {
    let who = who(&a.who)?;
    let export = a
        .office
        .office()
        .export_customer(who, a.out.as_deref(), now()?)
        .map_err(fail)?;
    let id = export.customer.customer_id;
    match (&a.out, a.office.output.json) {
        (Some(path), true) => print_json(json!({"customer_id": id, "file": path.display().to_string()})),
        (Some(path), false) => println!(
            "Customer {id}'s personal data → {} (private file: hand it to the customer only).",
            path.display()
        ),
        (None, _) => print_json(json!({"export": export})),
    }
    Ok(())
}

fn customer_erase(a: &CustomerEraseArgs) -> Result<(), Failure> {
    let who = who(&a.who)?;
    if !a.yes {
        return Err(Failure::usage(
            "erasing a customer's personal data cannot be undone: add --yes to confirm (nothing was changed)",
        ));
    }
    let (id, cards) = a.office.office().erase_customer(who).map_err(fail)?;
    if a.office.output.json {
        print_json(json!({"customer_id": id, "cards": cards, "erased": true}));
    } else {
        println!(
            "Customer {id}'s personal data erased (registry and queued profile updates). Their cards ({}) stay valid as anonymous cards; their books are unchanged.",
            if cards.is_empty() {
                "none".to_owned()
            } else {
                cards.join(", ")
            }
        );
    }
    Ok(())
}

fn audit_list(a: &ListArgs) -> Result<(), Failure> {
    let entries = a.office.office().audit_entries().map_err(fail)?;
    if a.office.output.json {
        print_json(json!({"entries": entries}));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.seq.to_string(),
                when(e.time),
                e.operator.clone(),
                e.action.clone(),
                crate::office_ops::details(&e.details),
            ]
        })
        .collect();
    print_rows(
        &format!("Audit log: {} entries", entries.len()),
        &["seq", "time", "operator", "action", "details"],
        &rows,
        a.csv,
    );
    Ok(())
}

/// An entry's details as `key=value` pairs.
fn details(v: &Value) -> String {
    match v {
        Value::Object(m) => m
            .iter()
            .map(|(k, x)| match x {
                Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

fn audit_verify(a: &DirArgs) -> Result<(), Failure> {
    let check = a.office().audit_verify().map_err(fail)?;
    if a.output.json {
        print_json(json!({"intact": check.problems.is_empty(), "check": check}));
    } else if check.problems.is_empty() {
        println!(
            "The audit log is intact: {} entries, head {} (anchored in the ledger).",
            check.entries, check.head
        );
    } else {
        println!("THE AUDIT LOG DOES NOT VERIFY:");
        for p in &check.problems {
            println!("  {p}");
        }
    }
    if check.problems.is_empty() {
        Ok(())
    } else {
        Err(Failure::new(
            EXIT_DECLINED,
            format!(
                "{} problems in the audit log: compare with a backup of the office directory",
                check.problems.len()
            ),
        )
        .printed(a.output.json))
    }
}
