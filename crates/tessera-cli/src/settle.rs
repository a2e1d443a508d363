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
use tessera_crypto::keys::TerminalBundle;
use tessera_office::{ClientError, RetryPolicy};
use tessera_protocol::profile::SignedProfile;
use tessera_simulator::image::write_atomic;
use tessera_terminal::batch::{write_range, Ack, AckStatus};
use tessera_terminal::journal::Journal;
use tessera_terminal::offers::CampaignSet;
use tessera_terminal::policy::Hotlist;
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
    #[command(flatten)]
    pub terminal: TerminalArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Writes a file atomically, readable by its owner only (personal data).
fn write_private_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    write_atomic(path, bytes).map_err(|e| e.to_string())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The `cards` of a per-card file `pos sync` wrote before (unblocks, key
/// updates): what is still waiting for its card. Missing or unreadable: none.
fn waiting_cards(path: &Path) -> serde_json::Map<String, serde_json::Value> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("cards").and_then(|c| c.as_object()).cloned())
        .unwrap_or_default()
}

/// Reads a terminal bundle (`tessera office export-terminal`).
pub fn load_bundle(path: &Path) -> Result<TerminalBundle, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| file_err(&format!("keys {}", path.display()), e))?;
    TerminalBundle::from_json(&text)
        .map_err(|_| Failure::new(EXIT_FILE, format!("keys {}: not a terminal bundle", path.display())))
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

fn office_failure(e: ClientError) -> Failure {
    Failure::new(EXIT_OFFICE, format!("settlement: {e}"))
}

fn status_name(s: AckStatus) -> &'static str {
    match s {
        AckStatus::Posted => "posted",
        AckStatus::Duplicate => "duplicate",
        AckStatus::Held => "held",
    }
}

fn ack_json(a: &Ack) -> serde_json::Value {
    json!({"terminal_id": a.terminal_id, "batch_no": a.batch_no, "head": a.head, "status": status_name(a.status)})
}

fn apply_ack(journal: &mut Journal, bundle: &TerminalBundle, ack: &Ack, now: u32) -> Result<(), Failure> {
    if !ack.verify(&bundle.batch_key) || ack.terminal_id != bundle.terminal_id {
        return Err(Failure::new(
            EXIT_OFFICE,
            "the acknowledgement is not genuine for this terminal: nothing marked settled",
        ));
    }
    let mut head = [0u8; 32];
    hex::decode_to_slice(&ack.head, &mut head)
        .map_err(|_| Failure::new(EXIT_OFFICE, "the acknowledgement's head is not 32 hex bytes"))?;
    journal
        .acknowledge(ack.batch_no, &head, now)
        .map_err(|e| file_err("journal", e))
}

/// Runs `pos settle`.
pub fn settle(a: &SettleArgs) -> Result<(), Failure> {
    let bundle = bundle_for(&a.terminal)?;
    let mut journal = journal_for(&a.terminal, &bundle)?;
    let now = clock()?.now();
    if let Some(path) = &a.ack_file {
        let text = std::fs::read_to_string(path).map_err(|e| file_err(&format!("ack file {}", path.display()), e))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Failure::new(EXIT_FILE, format!("ack file {}: {e}", path.display())))?;
        // Either a bare acknowledgement or `office import --json` output.
        let v = v.get("ack").cloned().unwrap_or(v);
        let ack: Ack = serde_json::from_value(v)
            .map_err(|e| Failure::new(EXIT_FILE, format!("ack file {}: {e}", path.display())))?;
        apply_ack(&mut journal, &bundle, &ack, now)?;
        return report(a.output, &journal, &[ack]);
    }
    if let Some(out) = &a.out {
        // Offline: new records become the next batch even while earlier
        // files wait for their acknowledgement; with nothing new, the
        // oldest unacknowledged batch is written again.
        let range = match journal.seal_next(now).map_err(|e| file_err("journal", e))? {
            Some(r) => Some(r),
            None => journal.seal(now).map_err(|e| file_err("journal", e))?,
        };
        let Some(range) = range else {
            return report(a.output, &journal, &[]);
        };
        let mut buf = Vec::new();
        write_range(&journal, &bundle.batch_key, &range, &mut buf).map_err(|e| file_err("batch", e))?;
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
    let retry = RetryPolicy {
        max_attempts: a.attempts.max(1),
        deadline: std::time::Duration::from_secs(a.deadline),
        ..RetryPolicy::default()
    };
    let mut acks = Vec::new();
    // Records per new batch: no limit until the office announces one.
    let mut cap = u32::MAX;
    // An unacknowledged batch is re-sent first; then every new one.
    loop {
        let mut buf = Vec::new();
        let Some(range) = journal.seal_at_most(now, cap).map_err(|e| file_err("journal", e))? else {
            break;
        };
        write_range(&journal, &bundle.batch_key, &range, &mut buf).map_err(|e| file_err("batch", e))?;
        if !a.output.json {
            eprintln!(
                "Uploading batch {} (records {}–{}, {} bytes) to {server}…",
                range.batch_no,
                range.seq_from,
                range.seq_to,
                buf.len()
            );
        }
        let ack = match tessera_office::upload_batch(server, &buf, &bundle, &retry) {
            Ok(ack) => ack,
            // Too large for the office (which stored nothing): re-seal the
            // unacknowledged records into batches that fit, with a margin.
            Err(ClientError::TooLarge { max_batch_bytes }) => {
                let records = u64::from(range.seq_to - range.seq_from + 1);
                let fit = records * max_batch_bytes * 9 / 10 / (buf.len() as u64).max(1);
                if records <= 1 {
                    return Err(Failure::new(
                        EXIT_OFFICE,
                        format!(
                            "record {} alone is larger than the office's batch limit of {max_batch_bytes} bytes",
                            range.seq_from
                        ),
                    ));
                }
                cap = u32::try_from(fit.clamp(1, records - 1)).unwrap_or(u32::MAX);
                if !a.output.json {
                    eprintln!(
                        "The office takes at most {max_batch_bytes} bytes a batch: re-sealing in batches of {cap} records…"
                    );
                }
                journal
                    .split_unacknowledged(now, cap)
                    .map_err(|e| file_err("journal", e))?;
                continue;
            }
            Err(e) => return Err(office_failure(e)),
        };
        apply_ack(&mut journal, &bundle, &ack, now)?;
        let missing = (ack.status == AckStatus::Held).then_some(ack.missing_from).flatten();
        let held = ack.batch_no;
        acks.push(ack);
        if let Some(from) = missing {
            // The office lost batches it had acknowledged (or never got
            // them): the journal keeps them; each goes again as first sealed.
            let ranges =
                tessera_terminal::batch::resend_ranges(&journal, from, held).map_err(|e| file_err("batch", e))?;
            if ranges.is_empty() {
                return Err(Failure::new(
                    EXIT_OFFICE,
                    format!("the office lacks batch {from}, which this journal never sealed: call the office"),
                ));
            }
            for range in ranges {
                let mut buf = Vec::new();
                write_range(&journal, &bundle.batch_key, &range, &mut buf).map_err(|e| file_err("batch", e))?;
                if !a.output.json {
                    eprintln!(
                        "The office lacks batch {} (records {}–{}): sending it again…",
                        range.batch_no, range.seq_from, range.seq_to
                    );
                }
                let ack = tessera_office::upload_batch(server, &buf, &bundle, &retry).map_err(office_failure)?;
                apply_ack(&mut journal, &bundle, &ack, now)?;
                acks.push(ack);
            }
        }
        if acks.len() > 10_000 {
            break;
        }
    }
    report(a.output, &journal, &acks)
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
    let journal = journal_for(&a.terminal, &bundle)?;
    drop(journal);
    let dir = terminal_dir(&a.terminal);
    let data = tessera_office::fetch_sync(&a.server, &bundle, &RetryPolicy::default()).map_err(office_failure)?;
    let mut notes = Vec::new();

    // Hotlist: never go back to an older version.
    let hotlist_path = dir.join("hotlist.toml");
    let issuer = &bundle.keys.issuer_public;
    // The local copy counts only if the office's signature still holds (an
    // edited copy is replaced by the office's list).
    let current = std::fs::read_to_string(&hotlist_path)
        .ok()
        .zip(std::fs::read_to_string(dir.join("hotlist.toml.sig")).ok())
        .and_then(|(text, sig)| Hotlist::load_signed(&text, &sig, issuer).ok())
        .map_or(0, |h| h.version);
    let mut hotlist_written = false;
    if data.hotlist.version > 0 && data.hotlist.version >= current {
        let cards: Vec<String> = data.hotlist.cards.iter().map(|c| format!("  \"{c}\",")).collect();
        let text = format!(
            "# Written by `tessera pos sync` from the back office.\nversion = {}\ncards = [\n{}\n]\n",
            data.hotlist.version,
            cards.join("\n")
        );
        Hotlist::load_signed(&text, &data.hotlist.signature, issuer)
            .map_err(|e| Failure::new(EXIT_OFFICE, format!("the office's hotlist: {e}")))?;
        // The signature first: a crash between the two leaves a pair the
        // till refuses until the next sync, never an unchecked list.
        write_atomic(
            &dir.join("hotlist.toml.sig"),
            format!("{}\n", data.hotlist.signature).as_bytes(),
        )
        .map_err(|e| file_err("hotlist", e))?;
        write_atomic(&hotlist_path, text.as_bytes()).map_err(|e| file_err("hotlist", e))?;
        hotlist_written = true;
    } else if data.hotlist.version < current {
        notes.push(format!(
            "kept hotlist v{current}: the office sent the older v{}",
            data.hotlist.version
        ));
    }

    // Campaigns: only a file the till will accept.
    let mut campaigns_version = None;
    if let Some(c) = &data.campaigns {
        match CampaignSet::load_signed(c.toml.as_bytes(), c.signature.trim(), &bundle.keys.issuer_public) {
            Ok(set) => {
                write_atomic(
                    &dir.join("campaigns.toml.sig"),
                    format!("{}\n", c.signature.trim()).as_bytes(),
                )
                .map_err(|e| file_err("campaigns", e))?;
                write_atomic(&dir.join("campaigns.toml"), c.toml.as_bytes()).map_err(|e| file_err("campaigns", e))?;
                campaigns_version = Some(set.version);
            }
            Err(e) => notes.push(format!("refused the office's campaign file: {e}")),
        }
    }

    // Profile updates, each verified with the issuer key.
    let updates_dir = dir.join("profile-updates");
    let mut profiles = 0;
    let mut written_profiles = Vec::new();
    for p in &data.profile_updates {
        let blob = hex::decode(&p.profile).ok();
        let signed = blob.as_deref().and_then(|b| SignedProfile::parse(b).ok());
        let ok = signed.as_ref().is_some_and(|s| {
            bundle.keys.issuer_public.verify(s).is_ok() && hex::encode_upper(s.profile.card_id) == p.card_id
        });
        match (ok, blob) {
            (true, Some(b)) => {
                std::fs::create_dir_all(&updates_dir).map_err(|e| file_err("profile updates", e))?;
                let doc = json!({"version": 2, "profile": hex::encode(&b), "issuer_macs": p.issuer_macs});
                write_private_atomic(
                    &updates_dir.join(format!("{}.json", p.card_id)),
                    format!("{doc:#}\n").as_bytes(),
                )
                .map_err(|e| file_err("profile updates", e))?;
                profiles += 1;
                written_profiles.push(tessera_office::AckProfile {
                    card_id: p.card_id.clone(),
                    version: p.version,
                });
            }
            _ => notes.push(format!(
                "refused the profile update for card {}: not genuine",
                p.card_id
            )),
        }
    }

    // Settled counters: which cards to send ACKNOWLEDGE SETTLEMENT.
    let settled: serde_json::Map<String, serde_json::Value> = data
        .settled
        .iter()
        .map(|s| {
            (
                s.card_id.clone(),
                json!({"counter": s.counter, "issuer_macs": s.issuer_macs}),
            )
        })
        .collect();
    let doc = json!({"version": 3, "synced_at": data.issued_at, "cards": settled});
    write_atomic(&dir.join("settled.json"), format!("{doc:#}\n").as_bytes()).map_err(|e| file_err("settled", e))?;

    // Unblocks for cards locked by failed authentications, added to the
    // ones still waiting (the office serves each once this till has
    // acknowledged it: an unblock already here stays until its card uses
    // it).
    let mut unblocks = waiting_cards(&dir.join("unblocks.json"));
    for u in &data.unblocks {
        unblocks.insert(u.card_id.clone(), json!({"seq": u.seq, "issuer_macs": u.issuer_macs}));
    }
    let doc = json!({"version": 2, "synced_at": data.issued_at, "cards": unblocks});
    write_atomic(&dir.join("unblocks.json"), format!("{doc:#}\n").as_bytes()).map_err(|e| file_err("unblocks", e))?;

    // Key updates after a key rotation (encrypted for each card), added to
    // the ones already here, as for unblocks.
    let mut key_updates = waiting_cards(&dir.join("key-updates.json"));
    for k in &data.key_updates {
        key_updates.insert(
            k.card_id.clone(),
            json!({"key_version": k.key_version, "ciphertext": k.ciphertext, "issuer_mac": k.issuer_mac}),
        );
    }
    let doc = json!({"version": 1, "synced_at": data.issued_at, "cards": key_updates});
    write_atomic(&dir.join("key-updates.json"), format!("{doc:#}\n").as_bytes())
        .map_err(|e| file_err("key updates", e))?;

    // Written: tell the office, which then stops serving them to this till.
    // A lost acknowledgement only means they come again next time.
    let ack = tessera_office::SyncAck::of(&data, &written_profiles);
    let mut acknowledged = false;
    if !ack.is_empty() {
        match tessera_office::ack_sync(&a.server, &bundle, &ack, &RetryPolicy::default()) {
            Ok(_) => acknowledged = true,
            Err(e) => notes.push(format!(
                "the office was not told what was written ({e}): it sends it again next time"
            )),
        }
    }

    if a.output.json {
        print_json(json!({
            "acknowledged": acknowledged,
            "terminal_id": data.terminal_id,
            "hotlist_version": data.hotlist.version,
            "hotlist_cards": data.hotlist.cards.len(),
            "hotlist_written": hotlist_written,
            "campaigns_version": campaigns_version,
            "profile_updates": profiles,
            "settled_cards": data.settled.len(),
            "unblocks": data.unblocks.len(),
            "key_updates": data.key_updates.len(),
            "notes": notes,
        }));
    } else {
        println!(
            "Synced terminal {}: hotlist v{} ({} cards), campaigns {}, {} profile updates, {} settled cards.",
            data.terminal_id,
            data.hotlist.version,
            data.hotlist.cards.len(),
            campaigns_version.map_or("none".to_owned(), |v| format!("v{v}")),
            profiles,
            data.settled.len()
        );
        for n in &notes {
            println!("  Note: {n}");
        }
    }
    Ok(())
}
