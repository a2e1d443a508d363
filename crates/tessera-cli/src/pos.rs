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
//! | `time_zone` | the till's time zone, an IANA name (optional: the system's, `TZ` honoured) |
//! | `shift.json` | the open shift's start (`pos shift open`; removed by `pos shift close`) |
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
use tessera_terminal::display;
use tessera_terminal::journal::{BasketLine, EntryKind, Journal, JournalRecord, Verdict};
use tessera_terminal::policy::Decision;
use tessera_terminal::station::{self, DirTill, Operation, ReceiptRef, TapReport};
use tessera_terminal::till::{TillError, TillOutcome};
use tessera_terminal::{Clock, FixedClock, SoftwareSam, SystemClock};

use crate::fail::{parse_points, Failure, EXIT_ALREADY_DONE, EXIT_DECLINED, EXIT_FILE, EXIT_REFERRED};
use crate::out::{self, print_json};
use crate::{OutputArgs, TerminalArgs};

/// `tessera pos …`
#[derive(Subcommand)]
pub enum PosCmd {
    /// Tap a card: greet the customer, show tier, balance and today's offers.
    #[command(
        after_help = "Examples:\n  tessera pos read --card ada.card --keys till.json\n  tessera pos read --reader ACS --keys till.json"
    )]
    Read(CardArgs),
    /// A purchase: points follow from the amount, categories and campaigns.
    #[command(
        after_help = "Examples:\n  tessera pos earn --card ada.card --keys till.json --amount 12,50 --category coffee\n  tessera pos earn --card ada.card --keys till.json --amount 3.20 --category bakery,coffee\n  tessera pos earn --card ada.card --keys till.json --amount 9.99 --category other\n  tessera pos earn --card ada.card --keys till.json --line coffee=3,50 --line bakery=2,40\n\nAmounts take a decimal comma or point (12,50 or 12.50), no thousands separators.\nCategories are checked against the policy's list; anything else is rung up as `other`."
    )]
    Earn(EarnArgs),
    /// Spend points from the card.
    #[command(after_help = "Example:\n  tessera pos redeem --card ada.card --keys till.json --points 200")]
    Redeem(RedeemArgs),
    /// Reverse an earlier earn or redemption of the presented card.
    #[command(
        after_help = "Examples (the card is presented):\n  tessera pos refund --card ada.card --keys till.json --of 0001-0003   (the receipt's reference)\n  tessera pos refund --card ada.card --keys till.json --of 3           (the card's transaction number)\n  tessera pos refund --card ada.card --keys till.json --of 7E57000000000001:3"
    )]
    Refund(RefundArgs),
    /// Open or close the shift; close prints its final totals.
    #[command(subcommand)]
    Shift(ShiftCmd),
    /// The journal as a receipt roll, newest last.
    #[command(
        after_help = "Examples:\n  tessera pos history --limit 20\n  tessera pos history --card 7E57000000000001 --json"
    )]
    History(HistoryArgs),
    /// Totals of the open shift (or of today): sales, points and counts per type and category, refusals per reason.
    #[command(after_help = "Examples:\n  tessera pos totals\n  tessera pos totals --since 2026-12-03 --json")]
    Totals(TotalsArgs),
    /// Journal size and health, pending and unsettled records, rule versions.
    #[command(after_help = "Example:\n  tessera pos status --keys till.json")]
    Status(StatusArgs),
    /// List the PC/SC readers.
    Readers(OutputArgs),
    /// Settle the journal with the back office (upload, or a batch file).
    #[command(
        after_help = "Examples:\n  tessera pos settle --keys till.json --server https://office.example:8443\n  tessera pos settle --keys till.json --out batch.bin\n  tessera pos settle --keys till.json --ack-file ack.json\n\nWhile the office is unreachable, each retry is told on standard error:\n  office unreachable (…), retry 2 of 10 in 100 ms"
    )]
    Settle(crate::settle::SettleArgs),
    /// Fetch hotlist, campaigns, profile updates and settled counters.
    #[command(
        after_help = "Example:\n  tessera pos sync --keys till.json --server https://office.example:8443 --attempts 5"
    )]
    Sync(crate::settle::SyncArgs),
}

/// `tessera pos shift …`
#[derive(Subcommand)]
pub enum ShiftCmd {
    /// Start a shift now: `pos totals` counts from here.
    #[command(after_help = "Example:\n  tessera pos shift open")]
    Open(JournalArgs),
    /// End the shift now and print its final totals.
    #[command(after_help = "Example:\n  tessera pos shift close")]
    Close(JournalArgs),
}

/// The till's directory and journal only (reports need no keys).
#[derive(Args)]
pub struct JournalArgs {
    /// Terminal state directory [default: $TESSERA_TERMINAL_DIR, else
    /// $XDG_DATA_HOME/tessera/terminal, else ~/.local/share/tessera/terminal].
    #[arg(long, value_name = "DIR")]
    pub terminal_dir: Option<PathBuf>,
    /// This terminal's identifier, for a new directory.
    #[arg(long, default_value_t = 1, hide = true)]
    pub terminal_id: u32,
    /// Accepted for scripts that pass the keys to every `pos` command; a
    /// report of the journal needs none.
    #[arg(long, value_name = "BUNDLE.json", hide = true)]
    pub keys: Option<PathBuf>,
    /// Accepted and ignored, as `--keys`.
    #[arg(long, hide = true)]
    pub test_keys: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

impl JournalArgs {
    fn dir(&self) -> PathBuf {
        terminal_dir_of(self.terminal_dir.as_ref())
    }
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
    /// Purchase amount, e.g. 12.50 or 12,50.
    #[arg(long, allow_hyphen_values = true, required_unless_present = "lines")]
    pub amount: Option<String>,
    /// Purchased categories (repeat or comma-separate), e.g. coffee; one
    /// the policy does not know is refused (use `other` for anything else).
    #[arg(long = "category", value_delimiter = ',', conflicts_with = "lines")]
    pub categories: Vec<String>,
    /// A basket line CATEGORY=AMOUNT (repeat for each line), instead of
    /// --amount and --category: the amount is the lines' total and the
    /// office sees what was bought for how much.
    #[arg(long = "line", id = "lines", conflicts_with = "amount", allow_hyphen_values = true)]
    pub lines: Vec<String>,
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
    /// Ask the office at this URL online, with the card on the reader,
    /// when the till's policy says so (what only the office can lift:
    /// referrals, the redemption cap, a refund whose original left the
    /// card's log); needs --keys BUNDLE.json. When, how long to wait and
    /// what to do without an answer: the till directory's online.toml
    /// (default: referrals only, 5 s, the referral stands).
    #[arg(long, value_name = "URL", conflicts_with = "voice")]
    pub online: Option<String>,
    /// Ask the office by telephone, with the card on the reader, when the
    /// till's policy would go online: the till shows a reference to read
    /// to the office (`office approve --request REF`) and waits for the
    /// answer code on standard input; the card checks the code itself.
    #[arg(long)]
    pub voice: bool,
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
    /// The transaction to reverse: the receipt's reference (A3F9-0012), the
    /// card's transaction number (12), or CARD-ID:COUNTER.
    #[arg(long = "of", value_name = "REF")]
    pub of: String,
    #[command(flatten)]
    pub again: AgainArg,
    #[command(flatten)]
    pub approval: ApprovalArg,
}

/// Arguments of `pos status`: the directory and the keys (to check the
/// signed files).
#[derive(Args)]
pub struct StatusArgs {
    /// Terminal state directory [default: $TESSERA_TERMINAL_DIR, else
    /// $XDG_DATA_HOME/tessera/terminal, else ~/.local/share/tessera/terminal].
    #[arg(long, value_name = "DIR")]
    pub terminal_dir: Option<PathBuf>,
    /// This terminal's identifier, for a new directory.
    #[arg(long, default_value_t = 1, hide = true)]
    pub terminal_id: u32,
    /// This terminal's keys (a bundle from `tessera office export-terminal`).
    #[arg(long, value_name = "BUNDLE.json", conflicts_with = "test_keys")]
    pub keys: Option<PathBuf>,
    /// Use the published test keys (training only).
    #[arg(long)]
    pub test_keys: bool,
    /// The PKCS#11 module of a bundle whose masters are in a token (only
    /// its public keys are read).
    #[arg(long, value_name = "PATH", requires = "keys", conflicts_with = "test_keys")]
    pub pkcs11_module: Option<PathBuf>,
    /// Accepted for scripts; status opens no token session.
    #[arg(long, value_name = "LABEL", hide = true)]
    pub token_label: Option<String>,
    /// Accepted for scripts; status needs no PIN.
    #[arg(long, value_name = "FILE", hide = true)]
    pub pin_file: Option<PathBuf>,
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
    /// Every journal record, the approvals written before the card answered
    /// too (by default an approval the card answered shows as its answer).
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub report: JournalArgs,
}

/// Arguments of `pos totals`.
#[derive(Args)]
pub struct TotalsArgs {
    /// From local midnight of this day, YYYY-MM-DD [default: the open
    /// shift, else today].
    #[arg(long, value_name = "DATE")]
    pub since: Option<String>,
    #[command(flatten)]
    pub report: JournalArgs,
}

pub(crate) fn terminal_dir(a: &TerminalArgs) -> PathBuf {
    terminal_dir_of(a.terminal_dir.as_ref())
}

fn terminal_dir_of(given: Option<&PathBuf>) -> PathBuf {
    if let Some(d) = given {
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
        e @ (TillError::WrongCard { .. } | TillError::WrongReference { .. } | TillError::InvalidBasket(_)) => {
            Failure::usage(e.to_string())
        }
        TillError::Dir(d) => dir_failure(d),
        other => Failure::new(crate::fail::EXIT_CARD, other.to_string()),
    }
}

/// Runs a `pos` subcommand.
pub fn run(cmd: PosCmd) -> Result<(), Failure> {
    match cmd {
        PosCmd::Read(a) => {
            let json = a.output.json;
            tap(
                &a,
                Operation::Read,
                false,
                &ApprovalArg {
                    approval: None,
                    online: None,
                    voice: false,
                },
            )
            .map_err(|f| f.json(json))
        }
        PosCmd::Earn(e) => {
            let json = e.card.output.json;
            let (amount, categories, lines) = (e.amount.clone(), e.categories.clone(), e.lines.clone());
            // The amount and categories are checked against the policy in
            // force before the card is touched: a typo changes nothing.
            let op = move |policy: &tessera_terminal::policy::Policy| -> Result<Operation, Failure> {
                let Some(amount) = amount else {
                    let (lines, _) =
                        display::parse_basket(&lines, policy.points.minor_units_per_unit, &policy.known_categories())
                            .map_err(|err| Failure::usage(err.to_string()))?;
                    let lines = lines
                        .into_iter()
                        .map(|(category, amount_minor)| BasketLine { category, amount_minor })
                        .collect();
                    return Ok(Operation::Basket { lines });
                };
                let amount_minor = display::parse_amount(&amount, policy.points.minor_units_per_unit)
                    .map_err(|err| Failure::usage(format!("invalid amount {amount:?}: {err}")))?;
                let categories = display::check_categories(&categories, &policy.known_categories())
                    .map_err(|err| Failure::usage(err.to_string()))?;
                Ok(Operation::Purchase {
                    amount_minor,
                    categories,
                })
            };
            tap_with(&e.card, op, e.again.again, &e.approval).map_err(|f| f.json(json))
        }
        PosCmd::Redeem(r) => {
            let json = r.card.output.json;
            parse_points(&r.points)
                .and_then(|points| tap(&r.card, Operation::Redeem { points }, r.again.again, &r.approval))
                .map_err(|f| f.json(json))
        }
        PosCmd::Refund(r) => {
            let json = r.card.output.json;
            ReceiptRef::parse(&r.of)
                .map_err(|e| Failure::usage(e.to_string()))
                .and_then(|reference| tap(&r.card, Operation::RefundOf(reference), r.again.again, &r.approval))
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
        PosCmd::Shift(ShiftCmd::Open(a)) => shift_open(&a).map_err(|f| f.json(a.output.json)),
        PosCmd::Shift(ShiftCmd::Close(a)) => shift_close(&a).map_err(|f| f.json(a.output.json)),
        PosCmd::Readers(o) => readers(o).map_err(|f| f.json(o.json)),
        PosCmd::Settle(a) => crate::settle::settle(&a).map_err(|f| f.json(a.output.json)),
        PosCmd::Sync(a) => crate::settle::sync(&a).map_err(|f| f.json(a.output.json)),
    }
}

fn decision_failure(d: &Decision) -> Failure {
    let (code, word) = if matches!(d, Decision::Refer(_)) {
        (EXIT_REFERRED, "REFERRED")
    } else {
        (EXIT_DECLINED, "DECLINED")
    };
    Failure::new(code, format!("{word} — {} ({})", d.message(), d.code()))
}

/// Prints a refusal on standard error as `main` would, its verdict word
/// coloured when standard output is a terminal, and gives its exit code.
fn refusal(f: Failure, colour: bool) -> Failure {
    if !colour {
        return f;
    }
    let (word, rest) = f.message.split_once(' ').unwrap_or((f.message.as_str(), ""));
    eprintln!("tessera: {} {rest}", out::verdict(word, colour));
    f.printed(true)
}

fn tap(a: &CardArgs, op: Operation, again: bool, approval: &ApprovalArg) -> Result<(), Failure> {
    tap_with(a, move |_| Ok(op), again, approval)
}

fn tap_with(
    a: &CardArgs,
    op: impl FnOnce(&tessera_terminal::policy::Policy) -> Result<Operation, Failure>,
    again: bool,
    approval: &ApprovalArg,
) -> Result<(), Failure> {
    let online = approval.online.as_deref();
    let voice = approval.voice;
    let approval = approval
        .approval
        .as_deref()
        .map(|c| crate::office_approve::till_approval(&a.terminal, c))
        .transpose()?;
    let mut till = open_till(&a.terminal)?;
    if let Some(ap) = approval {
        till.set_approval(ap);
    }
    if voice {
        let terminal_id = till.journal().terminal_id();
        till.set_online(Box::new(tessera_terminal::till::VoiceAuthorizer {
            terminal_id,
            ask: |p: &tessera_terminal::till::VoicePrompt, why: Option<&str>| {
                if let Some(why) = why {
                    eprintln!("tessera: {why}");
                } else {
                    let what = if p.original == 0 {
                        format!("{} of {} points", p.kind.name(), p.points)
                    } else {
                        format!("{} of {} points of #{}", p.kind.name(), p.points, p.original)
                    };
                    eprintln!(
                        "Call the office and read: till {}, card {}, {what}, reference {}",
                        p.terminal_id,
                        hex::encode_upper(p.card_id),
                        p.reference
                    );
                }
                eprint!("The office's answer code (Enter alone gives up): ");
                let mut line = String::new();
                std::io::stdin().read_line(&mut line).ok()?;
                let line = line.trim().to_owned();
                (!line.is_empty()).then_some(line)
            },
        }));
    }
    if let Some(url) = online {
        let Some(keys) = &a.terminal.keys else {
            return Err(Failure::new(
                crate::fail::EXIT_USAGE,
                "--online needs the till's keys: give --keys BUNDLE.json (from `tessera office export-terminal`)",
            ));
        };
        till.set_online(Box::new(tessera_client::OfficeAuthorizer {
            base_url: url.to_owned(),
            bundle: crate::settle::load_bundle(keys)?,
        }));
    }
    let zone = till.dir().time_zone().map_err(dir_failure)?;
    let policy = till.till().config().policy.clone();
    let op = op(&policy)?;
    let sale_minor = match &op {
        Operation::Purchase { amount_minor, .. } => Some(*amount_minor),
        Operation::Basket { lines } => Some(lines.iter().map(|l| l.amount_minor).sum()),
        _ => None,
    };
    let colour = out::colour(a.output.json);
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
        let now = clock()?.now();
        let mut doc = json!({
            "time": now,
            "time_local": zone.iso8601(now),
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
            println!(
                "Hello {}! Tier {} · Balance {} points.",
                p.name,
                p.tier,
                display::format_points(u64::from(info.balance))
            );
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
            let reference = ReceiptRef::for_record(&receipt.card_id, r.counter);
            let sale = match sale_minor {
                Some(minor) => format!(" on a sale of {}", policy.money(minor)),
                None => String::new(),
            };
            println!(
                "{} — {sign}{} points {what}{sale} for {}. New balance {} points.",
                out::verdict("APPROVED", colour),
                display::format_points(u64::from(r.amount)),
                p.name,
                display::format_points(u64::from(r.balance_after)),
            );
            println!(
                "  Receipt {reference} · {} · card #{} · {} APDUs",
                zone.local_seconds(r.time),
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
        Some(TillOutcome::ApprovedNoPoints { .. }) => {
            println!(
                "{} — sale of {} approved with 0 points (the amount earns none; the card was not changed). Balance {} points.",
                out::verdict("APPROVED", colour),
                policy.money(sale_minor.unwrap_or(0)),
                display::format_points(u64::from(info.balance)),
            );
            Ok(())
        }
        Some(TillOutcome::Refused { decision, .. }) => Err(refusal(decision_failure(decision), colour)),
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

/// The directory's money format and time zone, for reports.
fn report_format(dir: &Path) -> Result<(tessera_terminal::policy::Policy, display::Zone), Failure> {
    let d = TerminalDir::new(dir);
    Ok((
        d.display_policy().map_err(dir_failure)?,
        d.time_zone().map_err(dir_failure)?,
    ))
}

fn history(h: &HistoryArgs) -> Result<(), Failure> {
    let dir = h.report.dir();
    let journal = open_journal(&dir, h.report.terminal_id)?;
    let (policy, zone) = report_format(&dir)?;
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
        print_json(json!({
            "terminal_id": journal.terminal_id(),
            "currency": policy.currency,
            "records": recs.iter().map(|r| record_json(r, &zone)).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    if recs.is_empty() {
        println!("The journal is empty.");
    }
    let shown: Vec<&JournalRecord> = if h.all {
        recs.iter().collect()
    } else {
        station::receipt_roll(&recs, journal.terminal_id())
    };
    for r in shown {
        println!("{}", record_line(r, &policy, &zone, !h.all));
    }
    Ok(())
}

fn record_json(r: &JournalRecord, zone: &display::Zone) -> serde_json::Value {
    let mut v = serde_json::to_value(&r.entry).unwrap_or_default();
    if let serde_json::Value::Object(m) = &mut v {
        m.insert("seq".into(), json!(r.seq));
        m.insert("terminal_id".into(), json!(r.terminal_id));
        m.insert("hash".into(), json!(hex::encode(r.hash)));
        m.insert("time_local".into(), json!(zone.iso8601(r.entry.time)));
        m.insert(
            "receipt_ref".into(),
            json!(station::record_reference(r).map(|x| x.to_string())),
        );
    }
    v
}

/// One line of the receipt roll: local time, what, amount, points,
/// reference, verdict.
fn record_line(
    r: &JournalRecord,
    policy: &tessera_terminal::policy::Policy,
    zone: &display::Zone,
    roll: bool,
) -> String {
    let e = &r.entry;
    let what = e.tx_type.as_deref().unwrap_or("-");
    let money = e.purchase_minor.map(|m| policy.money(m)).unwrap_or_default();
    let reference = station::record_reference(r).map(|x| x.to_string()).unwrap_or_default();
    let refused = e.kind == EntryKind::Decision && e.verdict != Some(Verdict::Approve);
    // A refused operation moved no points: its request is not shown as if
    // it had (a decline of an unquotable purchase journals u32::MAX).
    let pts = match (refused, e.points, e.delta()) {
        (true, _, _) => String::new(),
        (_, _, Some(d)) => format!("{d:+} pts"),
        (_, Some(p), None) => format!("{} pts", display::format_points(u64::from(p))),
        _ => String::new(),
    };
    let verdict = match e.kind {
        EntryKind::Decision => match e.verdict {
            Some(Verdict::Approve) if what == tessera_terminal::till::SALE => {
                "approved, 0 points, card untouched".to_owned()
            }
            Some(Verdict::Approve) if roll => "approved, card answer unknown (card pulled): tap it again".to_owned(),
            Some(Verdict::Approve) => "approved".to_owned(),
            Some(Verdict::Decline) => format!("DECLINED {}", e.reason.as_deref().unwrap_or("")),
            Some(Verdict::Refer) => format!("REFERRED {}", e.reason.as_deref().unwrap_or("")),
            None => String::new(),
        },
        EntryKind::Completion => format!(
            "{}, balance {}",
            if roll { "approved" } else { "done" },
            display::format_points(u64::from(e.balance_after.unwrap_or(0)))
        ),
        EntryKind::Recovered => format!(
            "recovered (terminal {} #{}), balance {}",
            e.origin_terminal.unwrap_or(0),
            e.origin_seq.unwrap_or(0),
            display::format_points(u64::from(e.balance_after.unwrap_or(0)))
        ),
        EntryKind::Void => format!("void ({})", e.reason.as_deref().unwrap_or("")),
    };
    let of = e.reference.map(|n| format!(" of #{n}")).unwrap_or_default();
    format!(
        "{:>5}  {}  {:<13} {:>14} {:>10}  {:<10} {verdict}{of}",
        r.seq,
        zone.local_seconds(e.time),
        what,
        money,
        pts,
        reference,
    )
    .trim_end()
    .to_owned()
}

fn totals_json(
    t: &station::ShiftTotals,
    policy: &tessera_terminal::policy::Policy,
    zone: &display::Zone,
) -> serde_json::Value {
    let row = |k: &String, x: &station::TypeTotal, key: &str| json!({key: k, "count": x.count, "points": x.points, "sales_minor": x.sales_minor, "sales": policy.money(x.sales_minor)});
    json!({
        "since": t.since,
        "since_local": zone.iso8601(t.since),
        "until": t.until,
        "until_local": t.until.map(|u| zone.iso8601(u)),
        "currency": policy.currency,
        "sales_minor": t.sales_minor(),
        "sales": policy.money(t.sales_minor()),
        "transactions": t.transactions.iter().map(|(k, x)| row(k, x, "type")).collect::<Vec<_>>(),
        "categories": t.categories.iter().map(|(k, x)| row(k, x, "category")).collect::<Vec<_>>(),
        "refusals": t.refusals.iter().map(|(k, n)| json!({"reason": k, "count": n, "message": reason_title(k)})).collect::<Vec<_>>(),
    })
}

fn print_totals(title: &str, t: &station::ShiftTotals, policy: &tessera_terminal::policy::Policy) {
    println!("{title}");
    let count: u64 = t.transactions.values().map(|x| x.count).sum();
    println!("  Sales {} · {count} transactions", policy.money(t.sales_minor()));
    if t.transactions.is_empty() {
        println!("  No card transactions.");
    }
    for (k, x) in &t.transactions {
        println!(
            "  {k:<14} {:>5} × {:>16} {:>12} points",
            x.count,
            policy.money(x.sales_minor),
            display::format_points(x.points.unsigned_abs())
        );
    }
    if !t.categories.is_empty() {
        println!("  By category:");
    }
    for (k, x) in &t.categories {
        println!(
            "    {k:<12} {:>5} × {:>16} {:>12} points",
            x.count,
            policy.money(x.sales_minor),
            display::format_points(x.points.unsigned_abs())
        );
    }
    for (k, n) in &t.refusals {
        println!("  refused {k:<6} {n:>5}  {}", reason_title(k));
    }
}

fn totals(t: &TotalsArgs) -> Result<(), Failure> {
    let dir = t.report.dir();
    let journal = open_journal(&dir, t.report.terminal_id)?;
    let (policy, zone) = report_format(&dir)?;
    let now = clock()?.now();
    let (shift, open) = match &t.since {
        Some(d) => {
            let date = display::parse_date(d).map_err(|e| Failure::usage(format!("invalid date {d:?}: {e}")))?;
            (
                station::totals(&journal, zone.start_of(date)).map_err(|e| file_err("journal", e))?,
                false,
            )
        }
        None => station::shift_totals(&TerminalDir::new(&dir), &journal, &zone, now).map_err(shift_failure)?,
    };
    if t.report.output.json {
        let mut v = totals_json(&shift, &policy, &zone);
        v["shift_open"] = json!(open);
        print_json(v);
        return Ok(());
    }
    let title = if open {
        format!(
            "Shift open since {} — terminal {}",
            zone.local(shift.since),
            journal.terminal_id()
        )
    } else {
        format!(
            "Since {} (no shift open; `tessera pos shift open` starts one) — terminal {}",
            zone.local(shift.since),
            journal.terminal_id()
        )
    };
    print_totals(&title, &shift, &policy);
    Ok(())
}

fn shift_failure(e: station::ShiftError) -> Failure {
    match e {
        station::ShiftError::AlreadyOpen { .. } | station::ShiftError::NotOpen => {
            Failure::new(EXIT_ALREADY_DONE, e.to_string())
        }
        station::ShiftError::Dir(d) => dir_failure(d),
        other => file_err("journal", other),
    }
}

fn shift_open(a: &JournalArgs) -> Result<(), Failure> {
    let dir = a.dir();
    drop(open_journal(&dir, a.terminal_id)?);
    let (_, zone) = report_format(&dir)?;
    let now = clock()?.now();
    let d = TerminalDir::new(&dir);
    let opened = station::open_shift(&d, now).map_err(|e| match e {
        station::ShiftError::AlreadyOpen { since } => Failure::new(
            EXIT_ALREADY_DONE,
            format!(
                "a shift is already open since {}: close it first with `tessera pos shift close`",
                zone.local(since)
            ),
        ),
        other => shift_failure(other),
    })?;
    if a.output.json {
        print_json(json!({"opened_at": opened, "opened_at_local": zone.iso8601(opened)}));
    } else {
        println!("Shift opened at {}.", zone.local(opened));
    }
    Ok(())
}

fn shift_close(a: &JournalArgs) -> Result<(), Failure> {
    let dir = a.dir();
    let journal = open_journal(&dir, a.terminal_id)?;
    let (policy, zone) = report_format(&dir)?;
    let now = clock()?.now();
    let t = station::close_shift(&TerminalDir::new(&dir), &journal, now).map_err(shift_failure)?;
    if a.output.json {
        let mut v = totals_json(&t, &policy, &zone);
        v["closed_at"] = json!(now);
        v["closed_at_local"] = json!(zone.iso8601(now));
        print_json(v);
        return Ok(());
    }
    let title = format!(
        "Shift closed — {} to {} — terminal {} — final totals",
        zone.local(t.since),
        zone.local(now),
        journal.terminal_id()
    );
    print_totals(&title, &t, &policy);
    Ok(())
}

fn status(s: &StatusArgs) -> Result<(), Failure> {
    let terminal = TerminalArgs {
        terminal_dir: s.terminal_dir.clone(),
        terminal_id: s.terminal_id,
        store: 1,
        keys: s.keys.clone(),
        test_keys: s.test_keys,
        pkcs11_module: s.pkcs11_module.clone(),
        token_label: s.token_label.clone(),
        pin_file: s.pin_file.clone(),
    };
    let dir = terminal_dir(&terminal);
    let (keys, bundle_id) = terminal_keys(&terminal)?;
    let journal = open_journal_checked(&dir, s.terminal_id, bundle_id)?;
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
        "D05" => "purchase above the offline limit (before R05)",
        "D06" => "above the earn cap",
        "D07" => "above the redeem cap",
        "D08" => "not enough points",
        "D09" => "already refunded",
        "D10" => "original transaction unknown",
        "D11" => "refund of a refund",
        "R01" => "referred: offline redemption count",
        "R02" => "referred: offline redeemed points",
        "R03" => "referred: till clock behind the card",
        "R04" => "referred: refund outside the card's log",
        "R05" => "referred: purchase above the offline limit",
        "R06" => "referred: above the offline earn cap",
        _ => "other",
    }
}
