//! `tessera pos`: the clerk's point of sale.
//!
//! Every command works on the terminal directory (`--terminal-dir`):
//!
//! | file | what |
//! |---|---|
//! | `journal.sqlite` | the journal (terminal id, every decision and card transaction) |
//! | `policy.toml` | the authorization policy (optional: the documented default applies) |
//! | `hotlist.toml` | blocked cards (optional: none) |
//! | `campaigns.toml`, `campaigns.toml.sig` | campaigns signed by the issuer (optional: none) |
//! | `profiles/` | verified customer profiles cached by digest |
//! | `profile-updates/`, `settled.json`, `unblocks.json` | issuer decisions written by `pos sync` (see `settle.rs`) |
//!
//! `--keys BUNDLE.json` (from `tessera office export-terminal`) gives the
//! terminal its keys; `--test-keys` uses the published test keys with a
//! warning. Without either, nothing is done: a till never falls back to keys
//! it was not given.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde_json::json;
use tessera_crypto::keys::{IssuerKeys, TerminalKeys};
use tessera_crypto::rng::Rng;
use tessera_simulator::SimCard;
use tessera_terminal::dir::{DirError, TerminalDir};
use tessera_terminal::journal::{EntryKind, Journal, JournalRecord, Verdict};
use tessera_terminal::policy::Decision;
use tessera_terminal::station::{self, DirTill, Operation, TapReport};
use tessera_terminal::till::{TillError, TillOutcome};
use tessera_terminal::{Clock, FixedClock, SoftwareSam, SystemClock};

use crate::fail::{parse_points, Failure, EXIT_ALREADY_DONE, EXIT_DECLINED, EXIT_FILE, EXIT_REFERRED};
use crate::out::{self, print_json};
use crate::{OutputArgs, TerminalArgs};

/// `tessera pos …`
#[derive(Subcommand)]
pub enum PosCmd {
    /// Tap a card: greet the customer, show tier, balance and today's offers.
    Read(CardArgs),
    /// A purchase: points follow from the amount, categories and campaigns.
    Earn(EarnArgs),
    /// Spend points from the card.
    Redeem(RedeemArgs),
    /// Reverse an earlier earn or redemption of the presented card.
    Refund(RefundArgs),
    /// The journal, newest last.
    History(HistoryArgs),
    /// Shift report: counts and sums per type, declines per reason.
    Totals(TotalsArgs),
    /// Journal size and health, pending and unsettled records, rule versions.
    Status(ReportArgs),
    /// List the PC/SC readers.
    Readers(OutputArgs),
    /// Settle the journal with the back office (upload, or a batch file).
    Settle(crate::settle::SettleArgs),
    /// Fetch hotlist, campaigns, profile updates and settled counters.
    Sync(crate::settle::SyncArgs),
}

/// Which card, and where the terminal state lives.
#[derive(Args)]
#[group(id = "source", required = true, multiple = false, args = ["card", "reader"])]
pub struct CardArgs {
    /// Simulated card image file.
    #[arg(long, value_name = "FILE")]
    pub card: Option<PathBuf>,
    /// PC/SC reader: exact name or a unique part of it (see `pos readers`).
    #[arg(long, value_name = "NAME")]
    pub reader: Option<String>,
    /// Seconds to wait for a card on the reader.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub wait: u64,
    #[command(flatten)]
    pub terminal: TerminalArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Arguments of `pos earn`.
#[derive(Args)]
pub struct EarnArgs {
    #[command(flatten)]
    pub card: CardArgs,
    /// Purchase amount, e.g. 12.50.
    #[arg(long, allow_hyphen_values = true)]
    pub amount: String,
    /// Purchased categories (repeat or comma-separate), e.g. coffee.
    #[arg(long = "category", value_delimiter = ',')]
    pub categories: Vec<String>,
    #[command(flatten)]
    pub again: AgainArg,
    #[command(flatten)]
    pub approval: ApprovalArg,
}

/// `--again`: a new operation even after a retry found the earlier one done.
#[derive(Args)]
pub struct AgainArg {
    /// Perform the operation even if this tap finds that an earlier
    /// interrupted operation of this till on this card went through (by
    /// default nothing new is done then, exit code 7, so that a retry after
    /// a pulled card never charges twice).
    #[arg(long)]
    pub again: bool,
}

/// `--approval CODE`: the office's referral approval for this operation.
#[derive(Args)]
pub struct ApprovalArg {
    /// The approval code the office read out for this referred operation
    /// (`office approve`), e.g. 7KQ2-M9XD-3FHT-0B4W: checked for this card,
    /// operation, amount and till before the card is touched; single use.
    #[arg(long, value_name = "CODE")]
    pub approval: Option<String>,
}

/// Arguments of `pos redeem`.
#[derive(Args)]
pub struct RedeemArgs {
    #[command(flatten)]
    pub card: CardArgs,
    /// Points, a whole number from 1.
    #[arg(long, allow_hyphen_values = true)]
    pub points: String,
    #[command(flatten)]
    pub again: AgainArg,
    #[command(flatten)]
    pub approval: ApprovalArg,
}

/// Arguments of `pos refund`.
#[derive(Args)]
pub struct RefundArgs {
    #[command(flatten)]
    pub card: CardArgs,
    /// The transaction to reverse, as CARD:COUNTER (card id in hex).
    #[arg(long = "of", value_name = "CARD:COUNTER")]
    pub of: String,
    #[command(flatten)]
    pub again: AgainArg,
    #[command(flatten)]
    pub approval: ApprovalArg,
}

/// Arguments of reports on the journal.
#[derive(Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub terminal: TerminalArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Arguments of `pos history`.
#[derive(Args)]
pub struct HistoryArgs {
    /// Only this card (16 hex digits).
    #[arg(long, value_name = "ID")]
    pub card: Option<String>,
    /// At most this many records, the newest.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    #[command(flatten)]
    pub report: ReportArgs,
}

/// Arguments of `pos totals`.
#[derive(Args)]
pub struct TotalsArgs {
    /// Start of the shift, YYYY-MM-DD (UTC) [default: today].
    #[arg(long, value_name = "DATE")]
    pub since: Option<String>,
    #[command(flatten)]
    pub report: ReportArgs,
}

pub(crate) fn terminal_dir(a: &TerminalArgs) -> PathBuf {
    if let Some(d) = &a.terminal_dir {
        return d.clone();
    }
    if let Some(d) = std::env::var_os("TESSERA_TERMINAL_DIR") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("tessera/terminal")
}

/// The terminal's clock: the system clock, or a fixed time from
/// `TESSERA_NOW` (seconds since the epoch) for training and tests.
#[derive(Clone, Copy)]
pub enum CliClock {
    /// The system clock.
    System,
    /// A fixed time.
    Fixed(u32),
}

impl Clock for CliClock {
    fn now(&self) -> u32 {
        match self {
            Self::System => SystemClock.now(),
            Self::Fixed(t) => FixedClock(*t).now(),
        }
    }
}

pub(crate) fn clock() -> Result<CliClock, Failure> {
    match std::env::var("TESSERA_NOW") {
        Ok(v) => v
            .trim()
            .parse()
            .map(CliClock::Fixed)
            .map_err(|_| Failure::usage(format!("TESSERA_NOW={v:?} is not a Unix time"))),
        Err(_) => Ok(CliClock::System),
    }
}

pub(crate) fn file_err(what: &str, e: impl std::fmt::Display) -> Failure {
    Failure::new(EXIT_FILE, format!("{what}: {e}"))
}

fn open_journal(dir: &Path, default_id: u32) -> Result<Journal, Failure> {
    open_journal_checked(dir, default_id, None)
}

/// Opens the terminal's journal; with `required` (the terminal id of the
/// keys in use), a journal of another terminal is refused and a new one
/// gets that id ([`TerminalDir::open_journal`]).
pub(crate) fn open_journal_checked(dir: &Path, default_id: u32, required: Option<u32>) -> Result<Journal, Failure> {
    TerminalDir::new(dir)
        .open_journal(default_id, required)
        .map_err(dir_failure)
}

/// A till directory's refusal: its one line, exit code 4.
pub(crate) fn dir_failure(e: DirError) -> Failure {
    Failure::new(EXIT_FILE, e.to_string())
}

/// The warning printed by every command that runs on the test keys.
pub(crate) const TEST_KEYS_WARNING: &str =
    "WARNING: using the published TEST keys (--test-keys): training only, never for real cards";

/// The terminal's keys: the bundle given with `--keys`, or the test keys
/// with `--test-keys` (and a warning line), never a silent default.
/// Returns the keys and the bundle's terminal id.
///
/// A bundle whose masters are in a PKCS#11 token gives its public keys only
/// with `--pkcs11-module` (the till then opens the token, see
/// [`open_till`]); without it, it is refused: it is never run in software.
fn terminal_keys(t: &TerminalArgs) -> Result<(TerminalKeys, Option<u32>), Failure> {
    match (&t.keys, t.test_keys) {
        (Some(p), _) => {
            let b = crate::settle::load_bundle(p)?;
            let id = b.terminal_id;
            if t.pkcs11_module.is_some() {
                return Ok((b.keys, Some(id)));
            }
            let keys = b.into_software_keys().map_err(|e| match e {
                tessera_crypto::CryptoError::MastersInToken { token_label } => Failure::usage(format!(
                    "this bundle keeps its masters in a PKCS#11 token ({token_label:?}): give --pkcs11-module PATH (PIN via --pin-file FILE or TESSERA_PKCS11_PIN)"
                )),
                other => file_err(&format!("keys {}", p.display()), other),
            })?;
            Ok((keys, Some(id)))
        }
        (None, true) => {
            eprintln!("{TEST_KEYS_WARNING}");
            let keys = IssuerKeys::test().map_err(|e| file_err("test key store", e))?;
            Ok((keys.terminal_keys(), None))
        }
        (None, false) => Err(Failure::usage(
            "this till has no keys: give --keys BUNDLE.json (from `tessera office export-terminal`), or --test-keys for training",
        )),
    }
}

/// The till, with its keys in software or in a PKCS#11 token.
type CliTill = DirTill<Box<dyn tessera_terminal::Sam>, CliClock>;

fn open_till(t: &TerminalArgs) -> Result<CliTill, Failure> {
    let (keys, bundle_id) = terminal_keys(t)?;
    let issuer = keys.issuer_public.clone();
    let sam: Box<dyn tessera_terminal::Sam> = match (&t.pkcs11_module, &t.keys) {
        (Some(module), Some(p)) => {
            let bundle = crate::settle::load_bundle(p)?;
            let pin =
                tessera_pkcs11::Pin::from_file_or_env(t.pin_file.as_deref()).map_err(crate::office::token_failure)?;
            Box::new(
                tessera_pkcs11::Pkcs11Sam::from_bundle_labelled(&bundle, module, t.token_label.as_deref(), pin)
                    .map_err(crate::office::token_failure)?,
            )
        }
        _ => Box::new(SoftwareSam::new(keys)),
    };
    DirTill::open(
        TerminalDir::new(terminal_dir(t)),
        sam,
        &issuer,
        clock()?,
        t.terminal_id,
        bundle_id,
        t.store,
    )
    .map_err(dir_failure)
}

fn till_failure(e: TillError) -> Failure {
    match e {
        TillError::Terminal(t) => Failure::from(t),
        TillError::Journal(j) => file_err("journal", j),
        TillError::Hotlisted => Failure::new(EXIT_DECLINED, "Card blocked — please keep the card and call the office"),
        e @ TillError::WrongCard { .. } => Failure::usage(e.to_string()),
        TillError::Dir(d) => dir_failure(d),
        other => Failure::new(crate::fail::EXIT_CARD, other.to_string()),
    }
}

/// Parses a purchase amount like `12.50` into minor units.
fn parse_amount(s: &str, minor_per_unit: u64) -> Result<u64, Failure> {
    let t = s.trim();
    let bad = || Failure::usage(format!("invalid amount {s:?}: give a positive amount like 12.50"));
    if t.starts_with('-') {
        return Err(Failure::usage(format!(
            "invalid amount {s:?}: amounts cannot be negative"
        )));
    }
    let digits = minor_per_unit.checked_ilog10().unwrap_or(0) as usize;
    let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    if frac.len() > digits {
        return Err(Failure::usage(format!(
            "invalid amount {s:?}: at most {digits} decimals"
        )));
    }
    let whole: u64 = whole.parse().map_err(|_| bad())?;
    let frac: u64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<digits$}").parse().map_err(|_| bad())?
    };
    let minor = whole
        .checked_mul(minor_per_unit)
        .and_then(|w| w.checked_add(frac))
        .ok_or_else(bad)?;
    if minor == 0 {
        return Err(Failure::usage(format!(
            "invalid amount {s:?}: the amount must be more than zero"
        )));
    }
    Ok(minor)
}

/// Runs a `pos` subcommand.
pub fn run(cmd: PosCmd) -> Result<(), Failure> {
    match cmd {
        PosCmd::Read(a) => {
            let json = a.output.json;
            tap(&a, Operation::Read, false, None).map_err(|f| f.json(json))
        }
        PosCmd::Earn(e) => {
            let json = e.card.output.json;
            let op = || -> Result<Operation, Failure> {
                let policy_minor = 100;
                Ok(Operation::Purchase {
                    amount_minor: parse_amount(&e.amount, policy_minor)?,
                    categories: e
                        .categories
                        .iter()
                        .map(|c| c.trim().to_lowercase())
                        .filter(|c| !c.is_empty())
                        .collect(),
                })
            };
            op().and_then(|op| tap(&e.card, op, e.again.again, e.approval.approval.as_deref()))
                .map_err(|f| f.json(json))
        }
        PosCmd::Redeem(r) => {
            let json = r.card.output.json;
            parse_points(&r.points)
                .and_then(|points| {
                    tap(
                        &r.card,
                        Operation::Redeem { points },
                        r.again.again,
                        r.approval.approval.as_deref(),
                    )
                })
                .map_err(|f| f.json(json))
        }
        PosCmd::Refund(r) => {
            let json = r.card.output.json;
            parse_ref(&r.of)
                .and_then(|(id, original)| {
                    tap(
                        &r.card,
                        Operation::Refund {
                            card: Some(id),
                            original,
                        },
                        r.again.again,
                        r.approval.approval.as_deref(),
                    )
                })
                .map_err(|f| f.json(json))
        }
        PosCmd::History(h) => {
            let json = h.report.output.json;
            history(&h).map_err(|f| f.json(json))
        }
        PosCmd::Totals(t) => {
            let json = t.report.output.json;
            totals(&t).map_err(|f| f.json(json))
        }
        PosCmd::Status(s) => status(&s).map_err(|f| f.json(s.output.json)),
        PosCmd::Readers(o) => readers(o).map_err(|f| f.json(o.json)),
        PosCmd::Settle(a) => crate::settle::settle(&a).map_err(|f| f.json(a.output.json)),
        PosCmd::Sync(a) => crate::settle::sync(&a).map_err(|f| f.json(a.output.json)),
    }
}

fn parse_ref(s: &str) -> Result<([u8; 8], u32), Failure> {
    let bad = || {
        Failure::usage(format!(
            "invalid --of {s:?}: give CARD:COUNTER, e.g. 7E57000000000001:3"
        ))
    };
    let (card, n) = s.trim().split_once(':').ok_or_else(bad)?;
    let mut id = [0u8; 8];
    hex::decode_to_slice(card, &mut id).map_err(|_| bad())?;
    let n: u32 = n.parse().map_err(|_| bad())?;
    if n == 0 {
        return Err(bad());
    }
    Ok((id, n))
}

fn decision_failure(d: &Decision) -> Failure {
    let code = if matches!(d, Decision::Refer(_)) {
        EXIT_REFERRED
    } else {
        EXIT_DECLINED
    };
    let word = if matches!(d, Decision::Refer(_)) {
        "REFERRED"
    } else {
        "DECLINED"
    };
    Failure::new(code, format!("{word} — {} ({})", d.message(), d.code()))
}

fn tap(a: &CardArgs, op: Operation, again: bool, approval: Option<&str>) -> Result<(), Failure> {
    let approval = approval
        .map(|c| crate::office_approve::till_approval(&a.terminal, c))
        .transpose()?;
    let mut till = open_till(&a.terminal)?;
    if let Some(ap) = approval {
        till.set_approval(ap);
    }
    let mut card = open_card(a)?;
    let tap = till.operate(&mut card, op, again).map_err(till_failure)?;
    let TapReport {
        card: info,
        offers,
        recovered,
        voided,
        profile_updated,
        keys_updated,
        settlement_acknowledged,
        adjusted,
        adjustment_refused,
        outcome,
        trace,
    } = tap;
    let p = &info.profile;
    if a.output.json {
        let outcome_json = outcome.as_ref().map(tessera_terminal::json::outcome_json);
        let failure = match &outcome {
            Some(TillOutcome::Refused { decision, .. }) => Some(decision_failure(decision)),
            Some(TillOutcome::AlreadyDone { earlier }) => Some(already_done_failure(earlier)),
            _ => None,
        };
        let mut doc = json!({
            "card": out::card_json(&info),
            "offers": offers,
            "recovered": recovered.iter().map(|r| r.seq).collect::<Vec<_>>(),
            "profile_updated": profile_updated,
            "settlement_acknowledged": settlement_acknowledged,
            "keys_updated": keys_updated,
            "adjusted": adjusted.iter().map(|r| json!({"seq": r.record.reference, "type": r.record.kind.name(), "points": r.record.amount, "counter": r.record.counter, "balance_after": r.record.balance_after})).collect::<Vec<_>>(),
            "adjustment_waiting": adjustment_refused.as_ref().map(|(seq, why)| json!({"seq": seq, "why": why})),
            "outcome": outcome_json,
            "trace": out::trace_json(&trace),
        });
        if let (Some(f), serde_json::Value::Object(m)) = (&failure, &mut doc) {
            m.insert("ok".into(), json!(false));
            m.insert("error".into(), json!(f.message));
            m.insert("exit_code".into(), json!(f.code));
        }
        print_json(doc);
        if let Some(f) = failure {
            return Err(f.printed(true));
        }
        return Ok(());
    }
    // Only the resolution of this till's own interrupted transactions
    // concerns the clerk; other tills' records are journaled silently.
    let me = till.journal().terminal_id();
    let already_done = matches!(outcome, Some(TillOutcome::AlreadyDone { .. }));
    for r in recovered
        .iter()
        .filter(|r| r.entry.origin_terminal == Some(me) && !already_done)
    {
        if let Some(rec) = r.entry.card_record() {
            println!(
                "Note: the {} of {} points interrupted here earlier went through (card #{}); it is now journaled.",
                rec.kind.name(),
                rec.amount,
                rec.counter
            );
        }
    }
    for v in &voided {
        println!(
            "Note: the {} of {} points interrupted here earlier never reached the card; it did not happen.",
            v.entry.tx_type.as_deref().unwrap_or("transaction"),
            v.entry.points.unwrap_or(0)
        );
    }
    if let Some(v) = profile_updated {
        println!("Note: the customer's profile was updated on the card (version {v}).");
    }
    if let Some(v) = keys_updated {
        println!("Note: the card moved to the office's key version {v}.");
    }
    for r in &adjusted {
        let sign = if r.record.kind.is_credit() {
            "credited"
        } else {
            "debited"
        };
        println!(
            "Note: the office {sign} {} points (adjustment {}); balance {} points.",
            r.record.amount, r.record.reference, r.record.balance_after
        );
    }
    if let Some((seq, why)) = &adjustment_refused {
        println!("Note: the office's adjustment {seq} is still waiting: {why}.");
    }
    if let Some(n) = settlement_acknowledged {
        println!("Note: the card now knows its transactions up to #{n} are settled (offline limits restart).");
    }
    match &outcome {
        None => {
            println!("Hello {}! Tier {} · Balance {} points.", p.name, p.tier, info.balance);
            for o in &offers {
                println!("  Offer: {o}");
            }
            Ok(())
        }
        Some(TillOutcome::Approved { receipt, quote, .. }) => {
            let r = &receipt.record;
            let sign = if r.kind.is_credit() { "+" } else { "-" };
            let what = match r.kind {
                tessera_protocol::messages::TxKind::Earn => "earned",
                tessera_protocol::messages::TxKind::Redeem => "redeemed",
                _ => "refunded",
            };
            println!(
                "APPROVED — {sign}{} points {what} for {}. New balance {} points. (card #{}, {} APDUs)",
                r.amount,
                p.name,
                r.balance_after,
                r.counter,
                trace.commands()
            );
            if let Some(q) = quote {
                let mut parts = vec![format!("base {}", q.base)];
                parts.extend(q.lines.iter().map(|l| format!("{} {:+}", l.label, l.points)));
                println!("  Points: {} = {}", q.total, parts.join(", "));
            }
            Ok(())
        }
        Some(TillOutcome::Refused { decision, .. }) => Err(decision_failure(decision)),
        Some(TillOutcome::AlreadyDone { earlier }) => Err(already_done_failure(earlier)),
    }
}

/// "Nothing new was done": the retry found the earlier operation done.
fn already_done_failure(earlier: &[JournalRecord]) -> Failure {
    let what: Vec<String> = earlier
        .iter()
        .filter_map(|r| r.entry.card_record())
        .map(|c| {
            format!(
                "the {} of {} points (card #{}, balance {})",
                c.kind.name(),
                c.amount,
                c.counter,
                c.balance_after
            )
        })
        .collect();
    Failure::new(
        EXIT_ALREADY_DONE,
        format!(
            "ALREADY DONE — {} interrupted here earlier went through; nothing new was charged. For another operation, run again with --again",
            what.join(" and ")
        ),
    )
}

fn history(h: &HistoryArgs) -> Result<(), Failure> {
    let journal = open_journal(&terminal_dir(&h.report.terminal), h.report.terminal.terminal_id)?;
    let card = match &h.card {
        Some(c) => {
            let mut id = [0u8; 8];
            hex::decode_to_slice(c.trim(), &mut id)
                .map_err(|_| Failure::usage(format!("invalid card id {c:?}: give 16 hex digits")))?;
            Some(id)
        }
        None => None,
    };
    let recs = station::history(&journal, card.as_ref(), h.limit).map_err(|e| file_err("journal", e))?;
    if h.report.output.json {
        print_json(
            json!({"terminal_id": journal.terminal_id(), "records": recs.iter().map(record_json).collect::<Vec<_>>()}),
        );
        return Ok(());
    }
    if recs.is_empty() {
        println!("The journal is empty.");
    }
    for r in &recs {
        println!("{}", record_line(r));
    }
    Ok(())
}

fn record_json(r: &JournalRecord) -> serde_json::Value {
    let mut v = serde_json::to_value(&r.entry).unwrap_or_default();
    if let serde_json::Value::Object(m) = &mut v {
        m.insert("seq".into(), json!(r.seq));
        m.insert("terminal_id".into(), json!(r.terminal_id));
        m.insert("hash".into(), json!(hex::encode(r.hash)));
    }
    v
}

fn record_line(r: &JournalRecord) -> String {
    let e = &r.entry;
    let card = e.card_id.as_deref().unwrap_or("-");
    let counter = e.card_counter.map(|c| format!("#{c}")).unwrap_or_default();
    let what = e.tx_type.as_deref().unwrap_or("-");
    let pts = e.points.map(|p| p.to_string()).unwrap_or_default();
    let detail = match e.kind {
        EntryKind::Decision => match e.verdict {
            Some(Verdict::Approve) => "approved".to_owned(),
            Some(Verdict::Decline) => format!("declined {}", e.reason.as_deref().unwrap_or("")),
            Some(Verdict::Refer) => format!("referred {}", e.reason.as_deref().unwrap_or("")),
            None => String::new(),
        },
        EntryKind::Completion => format!("done, balance {}", e.balance_after.unwrap_or(0)),
        EntryKind::Recovered => format!(
            "recovered from terminal {} seq {}, balance {}",
            e.origin_terminal.unwrap_or(0),
            e.origin_seq.unwrap_or(0),
            e.balance_after.unwrap_or(0)
        ),
        EntryKind::Void => format!("void ({})", e.reason.as_deref().unwrap_or("")),
    };
    let kind = match e.kind {
        EntryKind::Decision => "decision",
        EntryKind::Completion => "completion",
        EntryKind::Recovered => "recovered",
        EntryKind::Void => "void",
    };
    format!(
        "{:>6} {:>10} {kind:<10} {card} {counter:<6} {what:<13} {pts:>7}  {detail}",
        r.seq, e.time
    )
}

fn totals(t: &TotalsArgs) -> Result<(), Failure> {
    let journal = open_journal(&terminal_dir(&t.report.terminal), t.report.terminal.terminal_id)?;
    let since = match &t.since {
        Some(d) => {
            let date = tessera_protocol::profile::Date::parse_iso(d)
                .map_err(|_| Failure::usage(format!("invalid date {d:?}: use YYYY-MM-DD")))?;
            date.to_unix_days() * 86_400
        }
        None => clock()?.now() / 86_400 * 86_400,
    };
    let shift = station::totals(&journal, since).map_err(|e| file_err("journal", e))?;
    let (by_type, refusals) = (&shift.transactions, &shift.refusals);
    if t.report.output.json {
        print_json(json!({
            "since": since,
            "transactions": by_type.iter().map(|(k, t)| json!({"type": k, "count": t.count, "points": t.points})).collect::<Vec<_>>(),
            "refusals": refusals.iter().map(|(k, n)| json!({"reason": k, "count": n, "message": reason_title(k)})).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    println!("Shift since {} — terminal {}", since, journal.terminal_id());
    if by_type.is_empty() {
        println!("  No card transactions.");
    }
    for (k, t) in by_type {
        println!("  {k:<14} {:>5} transactions {:>9} points", t.count, t.points);
    }
    for (k, n) in refusals {
        println!("  refused {k:<6} {n:>5}  {}", reason_title(k));
    }
    Ok(())
}

fn status(s: &ReportArgs) -> Result<(), Failure> {
    let dir = terminal_dir(&s.terminal);
    let (keys, bundle_id) = terminal_keys(&s.terminal)?;
    let journal = open_journal_checked(&dir, s.terminal.terminal_id, bundle_id)?;
    let st =
        station::status(&TerminalDir::new(&dir), &journal, &keys.issuer_public).map_err(|e| file_err("journal", e))?;
    let (chain, pending, unsettled, settled_up_to) = (st.chain, st.pending, st.unsettled, st.settled_up_to);
    let (policy_v, hotlist_v, campaigns_v, config_err) = match &st.rules {
        Ok((p, h, c)) => (Some(*p), Some(*h), Some(*c), None),
        Err(e) => (None, None, None, Some(e.to_string())),
    };
    if s.output.json {
        print_json(json!({
            "terminal_id": journal.terminal_id(),
            "records": journal.len(),
            "chain_ok": chain.is_ok(),
            "chain_error": chain.as_ref().err().map(|e| e.to_string()),
            "pending": pending,
            "unsettled_card_transactions": unsettled,
            "settled_up_to": settled_up_to,
            "policy_version": policy_v,
            "hotlist_version": hotlist_v,
            "campaigns_version": campaigns_v,
            "config_error": config_err,
        }));
    } else {
        println!(
            "Terminal {} — journal {} ({} records)",
            journal.terminal_id(),
            TerminalDir::new(&dir).journal_path().display(),
            journal.len()
        );
        match &chain {
            Ok(_) => println!("  Chain: verified"),
            Err(e) => println!("  Chain: BROKEN — {e}"),
        }
        println!("  Unsettled card transactions: {unsettled}");
        println!(
            "  Pending (card pulled, outcome unknown until it is tapped again): {}",
            pending.len()
        );
        match &config_err {
            None => println!(
                "  Policy v{} · hotlist v{} · campaigns v{}",
                policy_v.unwrap_or(0),
                hotlist_v.unwrap_or(0),
                campaigns_v.unwrap_or(0)
            ),
            Some(m) => println!("  Rules: {m}"),
        }
    }
    if let Err(e) = chain {
        return Err(Failure::new(EXIT_FILE, format!("journal chain broken: {e}")).printed(s.output.json));
    }
    Ok(())
}

fn pcsc_failure(e: tessera_pcsc::PcscError) -> Failure {
    use tessera_pcsc::PcscError as P;
    let code = match e {
        P::ReaderNotFound { .. } | P::AmbiguousReader { .. } | P::InvalidReaderName(_) => crate::fail::EXIT_USAGE,
        _ => crate::fail::EXIT_CARD,
    };
    let msg = match &e {
        P::Timeout(_) => "No card was presented in time".to_owned(),
        P::NoService => "The PC/SC service (pcscd) is not running".to_owned(),
        _ => format!("Card reader: {e}"),
    };
    Failure::new(code, msg)
}

fn readers(o: OutputArgs) -> Result<(), Failure> {
    let list = tessera_pcsc::list_readers().map_err(pcsc_failure)?;
    if o.json {
        print_json(json!({ "readers": list }));
    } else if list.is_empty() {
        println!("No readers.");
    } else {
        for r in list {
            println!("{r}");
        }
    }
    Ok(())
}

/// Opens the card named by the arguments: an image file, or whatever card
/// is presented to a PC/SC reader (waiting for it with a visible prompt).
fn open_card(a: &CardArgs) -> Result<Box<dyn tessera_transport::Transport>, Failure> {
    if let Some(path) = &a.card {
        return Ok(Box::new(SimCard::open(path, Rng::Os)?));
    }
    let wanted = a.reader.as_deref().unwrap_or_default();
    let reader = tessera_pcsc::find_reader(wanted).map_err(pcsc_failure)?;
    let timeout = std::time::Duration::from_secs(a.wait);
    if tessera_pcsc::wait_for_card(&reader, true, std::time::Duration::ZERO).is_err() {
        if !a.output.json {
            eprintln!("Waiting for a card on {reader}… (up to {} s)", a.wait);
        }
        tessera_pcsc::wait_for_card(&reader, true, timeout).map_err(pcsc_failure)?;
    }
    Ok(Box::new(
        tessera_pcsc::PcscTransport::connect(&reader).map_err(pcsc_failure)?,
    ))
}

/// A short title for a decision code, for reports.
fn reason_title(code: &str) -> &'static str {
    match code {
        "D01" => "card hotlisted",
        "D02" => "card expired",
        "D03" => "card not yet valid",
        "D04" => "zero points",
        "D05" => "purchase above the offline limit",
        "D06" => "above the earn cap",
        "D07" => "above the redeem cap",
        "D08" => "not enough points",
        "D09" => "already refunded",
        "D10" => "original transaction unknown",
        "R01" => "referred: offline redemption count",
        "R02" => "referred: offline redeemed points",
        "R03" => "referred: till clock behind the card",
        _ => "other",
    }
}
