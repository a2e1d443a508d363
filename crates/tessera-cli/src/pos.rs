//! `tessera pos`: the clerk's point of sale.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tessera_crypto::keys::IssuerKeys;
use tessera_crypto::rng::Rng;
use tessera_simulator::{image, SimCard};
use tessera_terminal::{ProfileCache, SoftwareSam, SystemClock, Terminal};

use crate::fail::{parse_points, Failure, EXIT_FILE};
use crate::out::{self, print_json};
use crate::{OutputArgs, TerminalArgs};

/// `tessera pos …`
#[derive(Subcommand)]
pub enum PosCmd {
    /// Tap a card: greet the customer, show the balance and recent activity.
    Read(CardArgs),
    /// Add points to the card.
    Earn(TxArgs),
    /// Spend points from the card.
    Redeem(TxArgs),
    /// List the PC/SC readers.
    Readers(OutputArgs),
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

/// Arguments of earn and redeem.
#[derive(Args)]
pub struct TxArgs {
    #[command(flatten)]
    pub card: CardArgs,
    /// Points, a whole number from 1.
    #[arg(long, allow_hyphen_values = true)]
    pub points: String,
}

/// The terminal's small durable state.
#[derive(Serialize, Deserialize)]
struct TerminalState {
    terminal_id: u32,
    next_seq: u32,
}

fn terminal_dir(a: &TerminalArgs) -> PathBuf {
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

fn load_state(dir: &Path, default_id: u32) -> Result<TerminalState, Failure> {
    let path = dir.join("terminal.json");
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|_| Failure::new(EXIT_FILE, format!("terminal state {} is corrupt", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TerminalState {
            terminal_id: default_id,
            next_seq: 1,
        }),
        Err(e) => Err(Failure::new(
            EXIT_FILE,
            format!("terminal state {}: {e}", path.display()),
        )),
    }
}

fn save_state(dir: &Path, st: &TerminalState) -> Result<(), Failure> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Failure::new(EXIT_FILE, format!("terminal directory {}: {e}", dir.display())))?;
    let bytes = serde_json::to_vec(st).unwrap_or_default();
    image::write_atomic(&dir.join("terminal.json"), &bytes).map_err(|e| Failure::new(EXIT_FILE, e.to_string()))
}

/// Runs a `pos` subcommand.
pub fn run(cmd: PosCmd) -> Result<(), Failure> {
    match cmd {
        PosCmd::Read(a) => {
            let json = a.output.json;
            tap(&a, None).map_err(|f| f.json(json))
        }
        PosCmd::Earn(t) => {
            let json = t.card.output.json;
            parse_points(&t.points)
                .and_then(|p| tap(&t.card, Some((true, p))))
                .map_err(|f| f.json(json))
        }
        PosCmd::Redeem(t) => {
            let json = t.card.output.json;
            parse_points(&t.points)
                .and_then(|p| tap(&t.card, Some((false, p))))
                .map_err(|f| f.json(json))
        }
        PosCmd::Readers(o) => readers(o).map_err(|f| f.json(o.json)),
    }
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

fn tap(a: &CardArgs, tx: Option<(bool, u32)>) -> Result<(), Failure> {
    let dir = terminal_dir(&a.terminal);
    let mut state = load_state(&dir, a.terminal.terminal_id)?;
    let keys = IssuerKeys::test().map_err(|e| Failure::new(EXIT_FILE, format!("test key store unusable: {e}")))?;
    let mut card = open_card(a)?;
    let mut terminal = Terminal::new(SoftwareSam::new(keys.terminal_keys()), SystemClock, state.terminal_id)
        .with_cache(ProfileCache::in_dir(dir.join("profiles")));
    terminal.set_next_seq(state.next_seq);
    if tx.is_some() {
        // Reserve the sequence number before it can reach a card: a crash
        // can leave a gap, never a reuse.
        state.next_seq = state.next_seq.wrapping_add(1);
        save_state(&dir, &state)?;
    }
    let mut session = terminal.tap(&mut card)?;
    let info = session.card().clone();
    let receipt = match tx {
        None => None,
        Some((true, p)) => Some(session.earn(p)?),
        Some((false, p)) => Some(session.redeem(p)?),
    };
    drop(session);
    let trace = terminal.take_trace();
    if a.output.json {
        print_json(json!({
            "card": out::card_json(&info),
            "receipt": receipt.as_ref().map(out::receipt_json),
            "trace": out::trace_json(&trace),
        }));
        return Ok(());
    }
    let p = &info.profile;
    match &receipt {
        None => {
            println!("Hello {}! Balance {} points. Tier {}.", p.name, info.balance, p.tier);
            if let Some(r) = &info.last_record {
                println!("Last visit: {}", out::record_line(r));
            }
        }
        Some(r) => {
            let (verb, sign) = match r.record.kind {
                tessera_protocol::messages::TxKind::Earn => ("Earned", "+"),
                tessera_protocol::messages::TxKind::Redeem => ("Redeemed", "-"),
                tessera_protocol::messages::TxKind::RefundEarn => ("Refunded (points taken back)", "-"),
                tessera_protocol::messages::TxKind::RefundRedeem => ("Refunded (points given back)", "+"),
            };
            println!(
                "APPROVED — {verb} {sign}{} points for {}. New balance {} points. (card #{}, {} APDUs)",
                r.record.amount,
                p.name,
                r.record.balance_after,
                r.record.counter,
                trace.commands()
            );
        }
    }
    Ok(())
}
