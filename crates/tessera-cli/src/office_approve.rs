//! `tessera office approve`: referral approval codes for the clerk to type
//! at the till (`docs/terminal-policy.md`, "Referral approval codes"), and
//! the list of issued approvals with their state; and the till's side of
//! `pos earn|redeem|refund --approval CODE`.

use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use tessera_crypto::referral::ReferralKind;
use tessera_ledger::approvals::ApprovalStatus;
use tessera_office::dir::OfficeDir;
use tessera_office::reports::View;
use tessera_terminal::approval::TillApproval;
use tessera_terminal::Clock;

use crate::args::hex8;
use crate::fail::{parse_points, Failure};
use crate::out::{self, print_json};
use crate::pos::clock;
use crate::TerminalArgs;

/// `office approve …`
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ApproveArgs {
    /// `office approve list`.
    #[command(subcommand)]
    pub list: Option<ApproveCmd>,
    #[command(flatten)]
    pub issue: IssueArgs,
}

/// The subcommands of `office approve`.
#[derive(Subcommand)]
pub enum ApproveCmd {
    /// The issued approvals, newest first: issued, used or expired.
    List(ListArgs),
}

/// Arguments of `office approve` (issuing a code).
#[derive(Args)]
pub struct IssueArgs {
    /// The office directory.
    #[arg(long, value_name = "DIR", required = true)]
    pub dir: Option<std::path::PathBuf>,
    /// The till that referred the operation.
    #[arg(long, value_name = "T", required = true)]
    pub terminal_id: Option<u32>,
    /// The card, 16 hex digits.
    #[arg(long, value_name = "ID", required = true)]
    pub card: Option<String>,
    /// What is approved.
    #[arg(long, value_enum, required = true)]
    pub kind: Option<Kind>,
    /// The amount the referral was about: the purchase as the till takes it
    /// (e.g. 250.00) for an earn, the points for a redemption or a refund.
    #[arg(long, required = true, allow_hyphen_values = true)]
    pub amount: Option<String>,
    /// How long the code is valid: e.g. 30m, 2h, 1d (1 minute to 3 days).
    #[arg(long, value_name = "DURATION", default_value = "30m")]
    pub valid_for: String,
    /// Who approves, for the audit log [default: $TESSERA_OPERATOR, else
    /// the login name ($USER, $LOGNAME)].
    #[arg(long, value_name = "NAME")]
    pub operator: Option<String>,
    /// The reference the till shows for a card's request (card application
    /// 2.2, `XXXXX-XXXXX-XXXXX-XX`): the office decides it as an online
    /// request and, approved, prints the answer code for the clerk, which
    /// the card itself checks. With it, --amount is the points the till
    /// shows, for an earn too.
    #[arg(long, value_name = "REF")]
    pub request: Option<String>,
    /// With --request and --kind refund: the card counter of the refunded
    /// transaction.
    #[arg(long, value_name = "COUNTER")]
    pub original: Option<u32>,
    /// Print versioned JSON instead of human-readable text.
    #[arg(long)]
    pub json: bool,
}

/// What a code approves.
#[derive(Clone, Copy, ValueEnum)]
pub enum Kind {
    /// A purchase above the till's offline limits.
    Earn,
    /// A redemption beyond the card's offline limits.
    Redeem,
    /// A refund above the till's caps.
    Refund,
}

/// Arguments of `office approve list`.
#[derive(Args)]
pub struct ListArgs {
    /// The office directory.
    #[arg(long, value_name = "DIR")]
    pub dir: std::path::PathBuf,
    /// Only approvals in this state.
    #[arg(long, value_parser = ["issued", "used", "expired"])]
    pub state: Option<String>,
    /// Print versioned JSON instead of a table.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print CSV instead of a table.
    #[arg(long)]
    pub csv: bool,
}

/// Runs `office approve`.
pub fn run(a: ApproveArgs) -> Result<(), Failure> {
    match a.list {
        Some(ApproveCmd::List(l)) => {
            let json = l.json;
            list(&l).map_err(|f| f.json(json))
        }
        None => {
            let json = a.issue.json;
            issue(&a.issue).map_err(|f| f.json(json))
        }
    }
}

fn required<T: Clone>(v: &Option<T>, flag: &str) -> Result<T, Failure> {
    v.clone()
        .ok_or_else(|| Failure::usage(format!("office approve needs {flag}")))
}

/// `30m`, `2h`, `1d`, `90s`, or minutes alone.
fn duration(s: &str) -> Result<u32, Failure> {
    let t = s.trim();
    let bad = || Failure::usage(format!("invalid --valid-for {s:?}: give e.g. 30m, 2h or 1d"));
    let (n, unit) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&t[..i], c),
        _ => (t, 'm'),
    };
    let n: u32 = n.parse().map_err(|_| bad())?;
    let mult = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(bad()),
    };
    let secs = n.checked_mul(mult).ok_or_else(bad)?;
    if !(60..=tessera_crypto::referral::MAX_VALIDITY_SECS).contains(&secs) {
        return Err(Failure::usage(format!(
            "invalid --valid-for {s:?}: a code is valid from 1 minute to 3 days"
        )));
    }
    Ok(secs)
}

/// A purchase as the till takes it (`12.50`, `12,50`, `12`) in minor
/// units of the policy's currency (as `pos earn`).
fn money_minor(s: &str) -> Result<u64, Failure> {
    tessera_terminal::display::parse_amount(s, View::local().minor_units_per_unit)
        .map_err(|e| Failure::usage(format!("invalid amount {s:?}: {e}")))
}

/// Local `YYYY-MM-DD HH:MM` (the office's time zone, `TZ` honoured).
fn local(secs: u32) -> String {
    View::local().time(secs)
}

fn amount_text(kind: &str, amount: u64) -> String {
    if kind == "earn" {
        View::local().money(i64::try_from(amount).unwrap_or(i64::MAX))
    } else {
        format!("{amount} points")
    }
}

/// "a purchase of 250.00", "a redemption of 30 points", "a refund of 30 points".
fn what(kind: &str, amount: u64) -> String {
    let noun = match kind {
        "earn" => "a purchase",
        "redeem" => "a redemption",
        _ => "a refund",
    };
    format!("{noun} of {}", amount_text(kind, amount))
}

/// `office approve --request REF`: the telephone delivery of an online
/// authorization.
fn voice(
    a: &IssueArgs,
    dir: &std::path::Path,
    terminal_id: u32,
    card: [u8; 8],
    kind: ReferralKind,
    amount: &str,
    text: &str,
) -> Result<(), Failure> {
    use tessera_protocol::messages::TxKind;
    let reference = tessera_crypto::voice::VoiceReference::parse(text)
        .map_err(|e| Failure::usage(format!("the request reference: {e}")))?;
    let points = parse_points(amount)?;
    let (tx_kind, original) = match kind {
        ReferralKind::Earn => (TxKind::Earn, 0),
        ReferralKind::Redeem => (TxKind::Redeem, 0),
        ReferralKind::Refund => (
            TxKind::RefundRedeem,
            a.original
                .filter(|c| *c > 0)
                .ok_or_else(|| Failure::usage("a refund needs --original COUNTER (the refunded transaction)"))?,
        ),
    };
    let now = clock()?.now();
    let (verdict, answer) = OfficeDir::new(dir).with_operator(a.operator.clone()).approve_voice(
        terminal_id,
        card,
        &reference,
        tx_kind,
        points,
        original,
        now,
    )?;
    let code = answer.map(|x| x.to_code());
    if a.json {
        print_json(json!({
            "authorization": {
                "approved": verdict.approved, "code": verdict.code, "message": verdict.message,
                "answer": code,
            }
        }));
    } else if let Some(code) = &code {
        println!(
            "Approved: read this answer to the clerk at till {terminal_id}: {code}\n(card {}, {} of {points} points; the card checks it for its own request)",
            hex::encode_upper(card),
            tx_kind.name()
        );
    } else {
        println!("{} {}", verdict.code, verdict.message);
    }
    if verdict.approved {
        Ok(())
    } else {
        Err(Failure::new(
            crate::fail::EXIT_DECLINED,
            format!("{} {}", verdict.code, verdict.message),
        )
        .printed(!a.json))
    }
}

fn issue(a: &IssueArgs) -> Result<(), Failure> {
    let dir = required(&a.dir, "--dir DIR")?;
    let terminal_id = required(&a.terminal_id, "--terminal-id T")?;
    let card = hex8(&required(&a.card, "--card ID")?, "card id")?;
    let kind = match required(&a.kind, "--kind earn|redeem|refund")? {
        Kind::Earn => ReferralKind::Earn,
        Kind::Redeem => ReferralKind::Redeem,
        Kind::Refund => ReferralKind::Refund,
    };
    let amount_arg = required(&a.amount, "--amount")?;
    if let Some(text) = &a.request {
        return voice(a, &dir, terminal_id, card, kind, &amount_arg, text);
    }
    let amount = match kind {
        ReferralKind::Earn => money_minor(&amount_arg)?,
        _ => u64::from(parse_points(&amount_arg)?),
    };
    let valid_for = duration(&a.valid_for)?;
    let now = clock()?.now();
    let issued = OfficeDir::new(&dir).with_operator(a.operator.clone()).approve(
        terminal_id,
        card,
        kind,
        amount,
        valid_for,
        now,
    )?;
    if a.json {
        print_json(json!({ "approval": issued }));
    } else {
        println!(
            "Approval #{} for till {}: {} on card {}, valid until {}, by {}.",
            issued.id,
            issued.terminal_id,
            what(issued.kind, issued.amount),
            out::card_id(&issued.card_id),
            local(issued.expires_at),
            issued.issued_by
        );
        println!("Read to the clerk: {}", issued.code);
    }
    Ok(())
}

fn list(l: &ListArgs) -> Result<(), Failure> {
    let now = clock()?.now();
    let all: Vec<ApprovalStatus> = OfficeDir::new(&l.dir)
        .approvals(now)?
        .into_iter()
        .filter(|s| l.state.as_deref().is_none_or(|w| s.state.as_str() == w))
        .collect();
    if l.json {
        print_json(json!({ "approvals": all }));
        return Ok(());
    }
    let header = [
        "id", "code", "till", "card", "kind", "amount", "expires", "by", "issued", "state", "used by",
    ];
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|s| {
            let a = &s.approval;
            vec![
                a.id.to_string(),
                a.code.clone(),
                a.terminal_id.to_string(),
                out::card_id(&a.card_id),
                a.kind.to_owned(),
                amount_text(a.kind, a.amount),
                local(a.expires_at),
                a.issued_by.clone(),
                local(a.issued_at),
                s.state.as_str().to_owned(),
                s.uses
                    .iter()
                    .map(|u| format!("till {} #{}", u.terminal_id, u.seq))
                    .collect::<Vec<_>>()
                    .join(" "),
            ]
        })
        .collect();
    if l.csv {
        let field = |c: &str| {
            if c.contains([',', '"', '\n']) {
                format!("\"{}\"", c.replace('"', "\"\""))
            } else {
                c.to_owned()
            }
        };
        println!("{}", header.iter().map(|h| field(h)).collect::<Vec<_>>().join(","));
        for r in &rows {
            println!("{}", r.iter().map(|c| field(c)).collect::<Vec<_>>().join(","));
        }
        return Ok(());
    }
    if rows.is_empty() {
        println!("(no approvals)");
        return Ok(());
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    println!("{}", line(header.iter().map(|h| (*h).to_owned()).collect()));
    for r in rows {
        println!("{}", line(r));
    }
    Ok(())
}

/// The till's side of `--approval CODE`: the code with the referral key of
/// the till's bundle. A mistyped code is refused here, before the till is
/// opened or a card tapped (exit 2).
pub(crate) fn till_approval(t: &TerminalArgs, code: &str) -> Result<TillApproval, Failure> {
    let Some(path) = &t.keys else {
        return Err(Failure::usage(
            "an approval code is checked with the till's own keys: give --keys BUNDLE.json",
        ));
    };
    let bundle = crate::settle::load_bundle(path)?;
    TillApproval::new(code, &bundle.batch_key, bundle.terminal_id).map_err(|e| Failure::usage(e.to_string()))
}
