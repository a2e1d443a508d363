//! `tessera office adjust …` and `tessera office card …`: issuer
//! adjustments (goodwill, correction) and card replacement.
//!
//! An adjustment is issued in the ledger with the card's next adjustment
//! sequence; `office serve` sends it, with the issuer MAC, to every till at
//! `pos sync`, and the card takes it at its next tap (applet-spec §4.16).
//! A replacement issues a new card to the lost card's customer, hotlists
//! the lost card and issues its book balance to the new card as a
//! `replacement` credit, delivered at the new card's first tap.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};
use tessera_crypto::rng::Rng;
use tessera_ledger::{AdjustmentKind, AdjustmentRow, LedgerError};
use tessera_office::dir::{OfficeDir, OfficeDirError};
use tessera_office::reports::csv_field;
use tessera_simulator::SimCard;
use tessera_terminal::issuer::{personalize, IssueParams};
use tessera_terminal::Clock;

use crate::args::{card_id_or_random, date, hex8, refuse_existing_card};
use crate::fail::{Failure, EXIT_DECLINED, EXIT_FILE};
use crate::office::DirArgs;
use crate::out::{self, print_json};

/// The office's card commands (flattened into `tessera office`).
#[derive(Subcommand)]
pub enum CardsCmd {
    /// Issue a goodwill credit or a correction to a card, with a reason
    /// (delivered by `pos sync`, applied at the card's next tap); or
    /// `adjust list` the adjustments issued.
    Adjust(AdjustArgs),
    /// Card operations: replace a lost card, show a card's books.
    #[command(subcommand)]
    Card(CardCmd),
}

/// What an adjustment is for.
#[derive(Clone, Copy, ValueEnum)]
pub enum KindArg {
    /// A goodwill credit (points only added).
    Goodwill,
    /// A correction, credit or debit.
    Correction,
}

/// Arguments of `office adjust`.
#[derive(Args)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "Examples:\n  tessera office adjust --dir office --card 7E57000000000001 --points 200 --reason \"coffee machine broke\"\n  tessera office adjust --dir office --card 7E57000000000001 --points -50 --kind correction --reason \"double scan\"\n  tessera office adjust list --dir office --pending"
)]
pub struct AdjustArgs {
    #[command(subcommand)]
    pub list: Option<AdjustCmd>,
    /// The office directory.
    #[arg(long, value_name = "DIR", required = true)]
    pub dir: Option<PathBuf>,
    #[command(flatten)]
    pub output: crate::OutputArgs,
    /// The card, 16 hex digits.
    #[arg(long, value_name = "ID", required = true)]
    pub card: Option<String>,
    /// Points: positive credits, negative debits (corrections only; never
    /// below the card's balance).
    #[arg(long, value_name = "N", required = true, allow_negative_numbers = true)]
    pub points: Option<i64>,
    /// Why (kept in the books).
    #[arg(long, value_name = "TEXT", required = true)]
    pub reason: Option<String>,
    /// What the adjustment is for.
    #[arg(long, value_enum, default_value = "goodwill")]
    pub kind: KindArg,
    #[command(flatten)]
    pub who: crate::office_ops::OperatorArgs,
}

/// `office adjust list`.
#[derive(Subcommand)]
pub enum AdjustCmd {
    /// The adjustments issued: card, sequence, points, kind, reason,
    /// operator, time and state (pending until its record is settled).
    List(AdjustListArgs),
}

/// Arguments of `office adjust list`.
#[derive(Args)]
pub struct AdjustListArgs {
    #[command(flatten)]
    pub office: DirArgs,
    /// Only this card's.
    #[arg(long, value_name = "ID")]
    pub card: Option<String>,
    /// Only those not applied yet.
    #[arg(long)]
    pub pending: bool,
    /// CSV instead of a table.
    #[arg(long, conflicts_with = "json")]
    pub csv: bool,
}

/// `office card …`
#[derive(Subcommand)]
pub enum CardCmd {
    /// Replace a lost or broken card: issue a new card to its customer
    /// (same personal data), hotlist the old one and move its balance to
    /// the new one (credited at the new card's first tap after `pos sync`).
    #[command(
        after_help = "Example:\n  tessera office card replace --dir office --old 7E57000000000001 --card new.card --reason \"lost\""
    )]
    Replace(ReplaceArgs),
    /// A card's books: balances, adjustments and the balance moves of a
    /// replacement.
    Show(ShowArgs),
}

/// Arguments of `office card replace`.
#[derive(Args)]
pub struct ReplaceArgs {
    #[command(flatten)]
    pub office: DirArgs,
    /// The card being replaced, 16 hex digits.
    #[arg(long, value_name = "ID")]
    pub old: String,
    /// Card image file of the new card (must not exist).
    #[arg(long, value_name = "FILE")]
    pub card: PathBuf,
    /// New card id, 16 hex digits [default: random].
    #[arg(long, value_name = "HEX")]
    pub card_id: Option<String>,
    /// Why (kept in the books).
    #[arg(long, value_name = "TEXT", default_value = "lost card")]
    pub reason: String,
    /// New profile valid from, YYYY-MM-DD.
    #[arg(long, default_value = "2026-01-01")]
    pub valid_from: String,
    /// New profile valid until, YYYY-MM-DD.
    #[arg(long, default_value = "2031-12-31")]
    pub valid_until: String,
}

/// Arguments of `office card show`.
#[derive(Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub office: DirArgs,
    /// The card, 16 hex digits.
    #[arg(long, value_name = "ID")]
    pub card: String,
}

/// Runs an office card command.
pub fn run(cmd: CardsCmd) -> Result<(), Failure> {
    match cmd {
        CardsCmd::Adjust(AdjustArgs {
            list: Some(AdjustCmd::List(a)),
            ..
        }) => list(&a).map_err(|f| f.json(a.office.output.json)),
        CardsCmd::Adjust(a) => adjust(&a).map_err(|f| f.json(a.output.json)),
        CardsCmd::Card(CardCmd::Replace(a)) => replace(&a).map_err(|f| f.json(a.office.output.json)),
        CardsCmd::Card(CardCmd::Show(a)) => show(&a).map_err(|f| f.json(a.office.output.json)),
    }
}

fn ledger_err(e: LedgerError) -> Failure {
    let status = e.http_status();
    let code = if (400..500).contains(&status) {
        crate::settle::EXIT_OFFICE
    } else {
        EXIT_FILE
    };
    Failure::new(code, format!("ledger: {e}"))
}

fn office_err(e: OfficeDirError) -> Failure {
    match e {
        OfficeDirError::Ledger(l) => ledger_err(l),
        e => Failure::new(EXIT_FILE, e.to_string()),
    }
}

fn now() -> Result<u32, Failure> {
    Ok(crate::pos::clock()?.now())
}

fn adjustment_json(a: &AdjustmentRow) -> Value {
    json!({
        "card_id": out::card_id(&a.card_id),
        "seq": a.seq,
        "points": a.signed_points(),
        "type": a.direction,
        "kind": a.kind.as_str(),
        "reason": a.reason,
        "operator": a.operator,
        "issued_at": a.issued_at,
        "from_card": a.from_card.map(|c| out::card_id(&c)),
        "state": a.state,
        "applied_counter": a.applied_counter,
    })
}

fn adjust(a: &AdjustArgs) -> Result<(), Failure> {
    let (Some(dir), Some(card), Some(points), Some(reason)) = (&a.dir, &a.card, a.points, &a.reason) else {
        return Err(Failure::usage("give --dir, --card, --points and --reason"));
    };
    let card = hex8(card, "card id")?;
    let kind = match a.kind {
        KindArg::Goodwill => AdjustmentKind::Goodwill,
        KindArg::Correction => AdjustmentKind::Correction,
    };
    if points == 0 {
        return Err(Failure::usage("--points must not be 0"));
    }
    if points < 0 && kind == AdjustmentKind::Goodwill {
        return Err(Failure::usage(
            "a goodwill adjustment only credits: use --kind correction to debit",
        ));
    }
    if reason.trim().is_empty() {
        return Err(Failure::usage("--reason is empty: say why, for the books"));
    }
    let row = OfficeDir::new(dir)
        .with_operator(a.who.operator.clone())
        .adjust(card, points, kind, reason, now()?)
        .map_err(office_err)?;
    if a.output.json {
        print_json(json!({ "adjustment": adjustment_json(&row) }));
    } else {
        println!(
            "Adjustment {} for card {} queued: {:+} points ({}, \"{}\"). The card gets it at its next tap at a till after `pos sync`.",
            row.seq,
            out::card_id(&row.card_id),
            row.signed_points(),
            row.kind.as_str(),
            row.reason
        );
    }
    Ok(())
}

/// Local `YYYY-MM-DD HH:MM` for a person reading the table (the office's
/// time zone, `TZ` honoured; JSON and CSV keep Unix seconds).
fn local(secs: u32) -> String {
    tessera_office::reports::View::local().time(secs)
}

fn list(a: &AdjustListArgs) -> Result<(), Failure> {
    let card = a.card.as_deref().map(|c| hex8(c, "card id")).transpose()?;
    let rows: Vec<AdjustmentRow> = OfficeDir::new(&a.office.dir)
        .adjustments(card)
        .map_err(office_err)?
        .into_iter()
        .filter(|r| !a.pending || r.state == "pending")
        .collect();
    if a.office.output.json {
        print_json(json!({ "adjustments": rows.iter().map(adjustment_json).collect::<Vec<_>>() }));
        return Ok(());
    }
    let cells = |r: &AdjustmentRow| {
        vec![
            out::card_id(&r.card_id),
            r.seq.to_string(),
            format!("{:+}", r.signed_points()),
            r.kind.as_str().to_owned(),
            r.state.clone(),
            r.applied_counter.map(|c| format!("#{c}")).unwrap_or_default(),
            r.operator.clone(),
            r.issued_at.to_string(),
            r.reason.clone(),
        ]
    };
    let head = [
        "card",
        "seq",
        "points",
        "kind",
        "state",
        "applied",
        "operator",
        "issued_at",
        "reason",
    ];
    if a.csv {
        println!("{}", head.join(","));
        for r in &rows {
            println!(
                "{}",
                cells(r).iter().map(|c| csv_field(c)).collect::<Vec<_>>().join(",")
            );
        }
        return Ok(());
    }
    if rows.is_empty() {
        println!("(no adjustments)");
        return Ok(());
    }
    println!(
        "{:<16} {:>4} {:>8} {:<11} {:<7} {:>7}  {:<20}  operator · reason",
        "card", "seq", "points", "kind", "state", "applied", "issued"
    );
    for r in &rows {
        let c = cells(r);
        println!(
            "{:<16} {:>4} {:>8} {:<11} {:<7} {:>7}  {:<20}  {} · {}",
            c[0],
            c[1],
            c[2],
            c[3],
            c[4],
            c[5],
            local(r.issued_at),
            c[6],
            c[8]
        );
    }
    let pending = rows.iter().filter(|r| r.state == "pending").count();
    println!(
        "{} adjustments, {pending} pending (not yet settled from a till).",
        rows.len()
    );
    Ok(())
}

fn replace(a: &ReplaceArgs) -> Result<(), Failure> {
    let old = hex8(&a.old, "old card id")?;
    let new_id = card_id_or_random(a.card_id.as_deref())?;
    let valid_from = date(&a.valid_from, "valid-from date")?;
    let valid_until = date(&a.valid_until, "valid-until date")?;
    if valid_until < valid_from {
        return Err(Failure::usage("the profile's validity ends before it starts"));
    }
    if a.reason.trim().is_empty() {
        return Err(Failure::usage("--reason is empty: say why, for the books"));
    }
    refuse_existing_card(&a.card)?;
    let office = a.office.office();
    office.audit_ready().map_err(office_err)?;
    let (keys, books) = office.open_office_books().map_err(office_err)?;
    let (profile, customer) =
        tessera_office::cards::replacement_profile(books.as_ref(), old, new_id, valid_from, valid_until)
            .map_err(ledger_err)?;
    drop(books);
    // Made in memory, registered and replaced in the books (audited), then
    // written: a card file exists only for a card the books know.
    let mut card = SimCard::manufacture(new_id, &keys.card_perso_key(&new_id), Rng::Os)?;
    let signed = personalize(&mut card, &keys, profile, &IssueParams::default()).map_err(Failure::from)?;
    let replaced = office
        .register_replacement_card(keys.key_version, &signed, customer, old, &a.reason, now()?)
        .map_err(office_err)?;
    card.save_as(&a.card)
        .map_err(|e| Failure::new(EXIT_FILE, format!("cannot write the card file: {e}")))?;
    if a.office.output.json {
        print_json(json!({
            "old_card": out::card_id(&replaced.old_card),
            "new_card": out::card_id(&replaced.new_card),
            "card_file": a.card.display().to_string(),
            "customer_id": customer,
            "points": replaced.points,
            "adjustment": replaced.adjustment.as_ref().map(adjustment_json),
            "profile": out::profile_json(&signed.profile),
        }));
    } else {
        println!(
            "Card {} replaced by card {} ({}, customer {customer}) → {}. The old card is hotlisted.",
            out::card_id(&replaced.old_card),
            out::card_id(&replaced.new_card),
            signed.profile.name,
            a.card.display()
        );
        match &replaced.adjustment {
            Some(adj) => println!(
                "Its {} points move to the new card (adjustment {}): credited at the new card's first tap after `pos sync`.",
                replaced.points, adj.seq
            ),
            None => println!("The old card's books hold no points: nothing to move."),
        }
    }
    Ok(())
}

fn show(a: &ShowArgs) -> Result<(), Failure> {
    let card = hex8(&a.card, "card id")?;
    let (_, ledger) = OfficeDir::new(&a.office.dir).open_office_books().map_err(office_err)?;
    let book = ledger
        .card(card)
        .map_err(ledger_err)?
        .ok_or_else(|| Failure::new(EXIT_DECLINED, format!("card {} is unknown to the ledger", a.card)))?;
    let adjustments = ledger.adjustments(Some(card)).map_err(ledger_err)?;
    let postings = ledger.card_postings(card).map_err(ledger_err)?;
    let replaced_by = ledger.replacement_of(card).map_err(ledger_err)?;
    let replaces = ledger.replaces(card).map_err(ledger_err)?;
    let online = ledger.online_authorizations(card).map_err(ledger_err)?;
    let outstanding = ledger.online_outstanding(card).map_err(ledger_err)?;
    if a.office.output.json {
        print_json(json!({
            "card": book,
            "online_authorizations": online,
            "online_outstanding": outstanding,
            "replaced_by": replaced_by.map(|c| out::card_id(&c)),
            "replaces": replaces.map(|c| out::card_id(&c)),
            "adjustments": adjustments.iter().map(adjustment_json).collect::<Vec<_>>(),
            "postings": postings,
        }));
        return Ok(());
    }
    println!(
        "Card {}: book balance {} points, card balance {} points (last counter #{}){}{}.",
        out::card_id(&card),
        book.shadow_balance,
        book.card_balance,
        book.last_counter,
        if book.hotlisted { ", hotlisted" } else { "" },
        if book.flagged { ", flagged" } else { "" },
    );
    if let Some(c) = replaced_by {
        println!("  Replaced by card {}.", out::card_id(&c));
    }
    if let Some(c) = replaces {
        println!("  Replaces card {}.", out::card_id(&c));
    }
    for p in &postings {
        println!("  {} ({:+} points)", p.what, p.delta);
    }
    if outstanding != 0 {
        println!(
            "  Approved online, its record not settled yet: {outstanding:+} points (book balance once it is: {}).",
            book.shadow_balance + outstanding
        );
    }
    for o in &online {
        let what = if o.reference == 0 {
            format!("{} of {} points", o.kind, o.amount)
        } else {
            format!("{} of {} points of #{}", o.kind, o.amount, o.reference)
        };
        println!(
            "  Authorization ({}) at till {} for counter #{}: {what} — {} ({})",
            o.delivery,
            o.terminal_id,
            u64::from(o.counter) + 1,
            o.code,
            o.state
        );
    }
    for r in &adjustments {
        println!(
            "  Adjustment {}: {:+} points, {} — {} ({}, by {})",
            r.seq,
            r.signed_points(),
            r.kind.as_str(),
            r.reason,
            r.state,
            r.operator
        );
    }
    Ok(())
}
