//! `tessera pos settle` and `tessera pos sync`: the terminal's side of
//! settlement (`docs/settlement.md`).
//!
//! * `pos settle --server URL` seals the unsettled journal, uploads the
//!   batch (retrying with backoff while the office is unreachable or
//!   answers 5xx), and marks it settled only on a genuine acknowledgement;
//!   it repeats until nothing is left to settle.
//! * `pos settle --out FILE` seals the records not yet in any batch as the
//!   next batch (even while earlier files wait for their acknowledgement;
//!   the office holds a batch until its predecessors arrive) and writes it
//!   for `tessera office import`; with nothing new it writes the oldest
//!   unacknowledged batch again. The office prints the acknowledgement,
//!   which `pos settle --ack-file ACK.json` applies. `pos settle --server`
//!   re-sends every unacknowledged batch unchanged, oldest first.
//! * `pos sync --server URL` fetches the office's news, checks its MAC with
//!   the terminal's batch key, and writes into the terminal directory:
//!   `hotlist.toml`, `campaigns.toml` + `campaigns.toml.sig` (only if the
//!   signature verifies), `profile-updates/<CARD>.json` (signed profile
//!   blobs, verified, with the issuer MAC the card checks), `settled.json`
//!   (settled card counters with their issuer MACs) and `unblocks.json`
//!   (issuer UNBLOCKs). The issuer MACs are made in the office with keys no
//!   till holds: an edited file only makes the card refuse it.
//!
//! Both need the terminal bundle (`--keys`): its batch key seals batches and
//! checks the office's answers, and its terminal id must be the journal's.

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::json;
use tessera_client::{status_name, RetryPolicy, SettleError, SettleEvent};
use tessera_crypto::keys::TerminalBundle;
use tessera_terminal::batch::Ack;
use tessera_terminal::dir::{DirError, TerminalDir};
use tessera_terminal::journal::Journal;
use tessera_terminal::settlement::{apply_ack, read_ack_file, seal_for_transfer, write_atomic, AckError};
use tessera_terminal::Clock;

use crate::fail::{Failure, EXIT_FILE};
use crate::out::print_json;
use crate::pos::{clock, file_err, terminal_dir};
use crate::{OutputArgs, TerminalArgs};

/// Exit code: the back office refused the request or could not be reached.
pub const EXIT_OFFICE: u8 = 6;

/// Arguments of `pos settle`.
#[derive(Args)]
#[group(id = "target", required = true, multiple = false, args = ["server", "out", "ack_file"])]
pub struct SettleArgs {
    /// The back office, e.g. https://127.0.0.1:8420 (the bundle pins its certificate).
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// Write the batch to FILE for `tessera office import` instead.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Apply the acknowledgement that `tessera office import` printed.
    #[arg(long, value_name = "ACK.json")]
    pub ack_file: Option<PathBuf>,
    /// Attempts before giving up on an unreachable office.
    #[arg(long, default_value_t = 10)]
    pub attempts: u32,
    /// Give up retrying after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    pub deadline: u64,
    #[command(flatten)]
    pub terminal: TerminalArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Arguments of `pos sync`.
#[derive(Args)]
pub struct SyncArgs {
    /// The back office, e.g. https://127.0.0.1:8420 (the bundle pins its certificate).
    #[arg(long, value_name = "URL")]
    pub server: String,
    /// Attempts before giving up on an unreachable office.
    #[arg(long, default_value_t = 10)]
    pub attempts: u32,
    /// Give up retrying after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    pub deadline: u64,
    #[command(flatten)]
    pub terminal: TerminalArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Attempts and deadline from the command line; each retry is told on
/// standard error, one line per attempt (also when standard error is not a
/// terminal, so that a log shows it), except with `--json`.
fn retry_policy(attempts: u32, deadline: u64, quiet: bool) -> RetryPolicy {
    fn tell(n: &tessera_client::RetryNotice) {
        let secs = n.delay.as_secs_f64();
        let wait = if secs < 1.0 {
            format!("{} ms", n.delay.as_millis())
        } else {
            format!("{secs:.0} s")
        };
        eprintln!(
            "office unreachable ({}), retry {} of {} in {wait}",
            n.reason, n.next_attempt, n.max_attempts
        );
    }
    RetryPolicy {
        max_attempts: attempts.max(1),
        deadline: std::time::Duration::from_secs(deadline),
        on_retry: (!quiet).then_some(tell as fn(&tessera_client::RetryNotice)),
        ..RetryPolicy::default()
    }
}

/// Reads a terminal bundle (`tessera office export-terminal`).
pub fn load_bundle(path: &Path) -> Result<TerminalBundle, Failure> {
    tessera_terminal::dir::load_bundle(path).map_err(crate::pos::dir_failure)
}

fn bundle_for(t: &TerminalArgs) -> Result<TerminalBundle, Failure> {
    match &t.keys {
        Some(p) => load_bundle(p),
        None => Err(Failure::usage(
            "settlement needs this terminal's keys: --keys BUNDLE.json (from `tessera office export-terminal`)",
        )),
    }
}

/// Opens the journal of the bundle's terminal (creating it if new).
fn journal_for(t: &TerminalArgs, bundle: &TerminalBundle) -> Result<Journal, Failure> {
    crate::pos::open_journal_checked(&terminal_dir(t), t.terminal_id, Some(bundle.terminal_id))
}

/// The exit code of a settlement failure: the office's side (6) or the
/// till's files (4).
fn settle_failure(e: SettleError) -> Failure {
    let code = match &e {
        SettleError::Office(_)
        | SettleError::RecordTooLarge { .. }
        | SettleError::UnknownBatch(_)
        | SettleError::Ack(AckError::NotGenuine | AckError::BadHead)
        | SettleError::Dir(DirError::Refused { .. }) => EXIT_OFFICE,
        _ => EXIT_FILE,
    };
    Failure::new(code, e.to_string())
}

fn ack_json(a: &Ack) -> serde_json::Value {
    json!({"terminal_id": a.terminal_id, "batch_no": a.batch_no, "head": a.head, "status": status_name(a.status)})
}

/// Runs `pos settle`.
pub fn settle(a: &SettleArgs) -> Result<(), Failure> {
    let bundle = bundle_for(&a.terminal)?;
    let mut journal = journal_for(&a.terminal, &bundle)?;
    let now = clock()?.now();
    if let Some(path) = &a.ack_file {
        let ack = read_ack_file(path).map_err(|e| settle_failure(e.into()))?;
        apply_ack(&mut journal, &bundle, &ack, now).map_err(|e| settle_failure(e.into()))?;
        return report(a.output, &journal, &[ack]);
    }
    if let Some(out) = &a.out {
        let Some((range, buf)) =
            seal_for_transfer(&mut journal, &bundle.batch_key, now).map_err(|e| file_err("batch", e))?
        else {
            return report(a.output, &journal, &[]);
        };
        write_atomic(out, &buf).map_err(|e| file_err(&format!("batch file {}", out.display()), e))?;
        if a.output.json {
            print_json(json!({
                "terminal_id": journal.terminal_id(),
                "batch_no": range.batch_no,
                "seq_from": range.seq_from,
                "seq_to": range.seq_to,
                "file": out.display().to_string(),
                "bytes": buf.len(),
            }));
        } else {
            println!(
                "Sealed batch {} (records {}–{}) → {} ({} bytes). Import it with `tessera office import`, then apply the acknowledgement with `tessera pos settle --ack-file`.",
                range.batch_no,
                range.seq_from,
                range.seq_to,
                out.display(),
                buf.len()
            );
        }
        return Ok(());
    }
    let server = a.server.as_deref().unwrap_or_default();
    let quiet = a.output.json;
    let retry = retry_policy(a.attempts, a.deadline, quiet);
    let done = tessera_client::settle(&mut journal, &bundle, server, &retry, now, |event| {
        if quiet {
            return;
        }
        match event {
            SettleEvent::Uploading {
                batch_no,
                seq_from,
                seq_to,
                bytes,
            } => eprintln!("Uploading batch {batch_no} (records {seq_from}–{seq_to}, {bytes} bytes) to {server}…"),
            SettleEvent::Resealing {
                max_batch_bytes,
                records,
            } => eprintln!(
                "The office takes at most {max_batch_bytes} bytes a batch: re-sealing in batches of {records} records…"
            ),
            SettleEvent::Resending {
                batch_no,
                seq_from,
                seq_to,
            } => eprintln!("The office lacks batch {batch_no} (records {seq_from}–{seq_to}): sending it again…"),
            _ => {}
        }
    })
    .map_err(settle_failure)?;
    report(a.output, &journal, &done.acks)
}

fn report(output: OutputArgs, journal: &Journal, acks: &[Ack]) -> Result<(), Failure> {
    let settled = journal.settled_up_to().map_err(|e| file_err("journal", e))?;
    if output.json {
        print_json(json!({
            "terminal_id": journal.terminal_id(),
            "acks": acks.iter().map(ack_json).collect::<Vec<_>>(),
            "settled_up_to": settled,
            "records": journal.len(),
        }));
        return Ok(());
    }
    if acks.is_empty() {
        println!(
            "Nothing to settle: records up to {settled} of {} are settled.",
            journal.len()
        );
    }
    for a in acks {
        println!("Batch {} acknowledged: {}.", a.batch_no, status_name(a.status));
    }
    if !acks.is_empty() {
        println!("Settled up to record {settled} of {}.", journal.len());
    }
    Ok(())
}

/// Runs `pos sync`.
pub fn sync(a: &SyncArgs) -> Result<(), Failure> {
    let bundle = bundle_for(&a.terminal)?;
    // `sync` checks the directory is this terminal's before writing.
    let dir = TerminalDir::new(terminal_dir(&a.terminal));
    let retry = retry_policy(a.attempts, a.deadline, a.output.json);
    let r = tessera_client::sync(&dir, &bundle, &a.server, &retry).map_err(settle_failure)?;
    if a.output.json {
        print_json(json!({
            "acknowledged": r.acknowledged,
            "terminal_id": r.terminal_id,
            "hotlist_version": r.hotlist_version,
            "hotlist_cards": r.hotlist_cards,
            "hotlist_written": r.applied.hotlist_written,
            "campaigns_version": r.applied.campaigns_version,
            "profile_updates": r.applied.profiles.len(),
            "settled_cards": r.settled_cards,
            "unblocks": r.unblocks,
            "key_updates": r.key_updates,
            "adjustments": r.applied.adjustments,
            "notes": r.applied.notes,
        }));
    } else {
        println!(
            "Synced terminal {}: hotlist v{} ({} cards), campaigns {}, {} profile updates, {} settled cards.",
            r.terminal_id,
            r.hotlist_version,
            r.hotlist_cards,
            r.applied
                .campaigns_version
                .map_or("none".to_owned(), |v| format!("v{v}")),
            r.applied.profiles.len(),
            r.settled_cards
        );
        if r.applied.adjustments > 0 {
            println!(
                "  {} issuer adjustments waiting for their cards' next tap.",
                r.applied.adjustments
            );
        }
        for n in &r.applied.notes {
            println!("  Note: {n}");
        }
    }
    Ok(())
}
