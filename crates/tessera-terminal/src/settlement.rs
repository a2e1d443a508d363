//! The till's side of settlement that needs no network: applying the
//! office's acknowledgement to the journal, sealing a batch for a file
//! transfer, and writing what the office sent at sync into the till's
//! directory. `tessera-client` adds the HTTP round trips on top; a till
//! that moves batches on a USB stick uses these directly.
//!
//! ```
//! use tessera_crypto::keys::{IssuerKeys, OfficeLink};
//! use tessera_terminal::dir::TerminalDir;
//! use tessera_terminal::settlement::{apply_ack, seal_for_transfer};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let tmp = tempfile::tempdir()?;
//! let bundle = IssuerKeys::test()?.terminal_bundle(7, OfficeLink::PlainLoopback);
//! let dir = TerminalDir::new(tmp.path().join("till"));
//! let mut journal = dir.open_journal(7, Some(bundle.terminal_id))?;
//! // Nothing journaled yet: nothing to seal.
//! assert!(seal_for_transfer(&mut journal, &bundle.batch_key, 1_790_000_000)?.is_none());
//! # let _ = apply_ack;
//! # Ok(())
//! # }
//! ```

use std::path::Path;

use serde_json::json;
use tessera_crypto::keys::TerminalBundle;
use tessera_crypto::sign::IssuerPublicKey;
use tessera_crypto::Key;
use tessera_protocol::profile::SignedProfile;
use tessera_settlement::batch::{Ack, SealedRange};
use tessera_settlement::sync::{AckProfile, SyncAck, SyncData};

use crate::batch::{write_range, SealError};
use crate::dir::{DirError, TerminalDir};
use crate::journal::{Journal, JournalError};
use crate::offers::CampaignSet;
use crate::policy::Hotlist;

/// Why an acknowledgement was not applied. Nothing was marked settled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AckError {
    /// The acknowledgement's MAC does not verify under this terminal's
    /// batch key, or it names another terminal: do not trust it; settle
    /// again (the office answers the same batch with a genuine one).
    #[error("the acknowledgement is not genuine for this terminal: nothing marked settled")]
    NotGenuine,
    /// The acknowledged head is not 32 hex bytes.
    #[error("the acknowledgement's head is not 32 hex bytes")]
    BadHead,
    /// The journal refused it (the head is not the sealed batch's, the
    /// batch was never sealed) or failed: see [`JournalError`].
    #[error("journal: {0}")]
    Journal(#[from] JournalError),
    /// An acknowledgement file could not be read or is not one: give the
    /// file `tessera office import` printed.
    #[error("ack file {path}: {why}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
}

/// Marks the batch an acknowledgement names as settled, after checking
/// that the office made it for this terminal.
///
/// # Errors
/// [`AckError::NotGenuine`], [`AckError::BadHead`], [`AckError::Journal`].
pub fn apply_ack(journal: &mut Journal, bundle: &TerminalBundle, ack: &Ack, now: u32) -> Result<(), AckError> {
    if !ack.verify(&bundle.batch_key) || ack.terminal_id != bundle.terminal_id {
        return Err(AckError::NotGenuine);
    }
    let mut head = [0u8; 32];
    hex::decode_to_slice(&ack.head, &mut head).map_err(|_| AckError::BadHead)?;
    journal.acknowledge(ack.batch_no, &head, now)?;
    Ok(())
}

/// Reads an acknowledgement file: a bare acknowledgement, or the JSON
/// `tessera office import --json` prints (its `ack` member).
///
/// # Errors
/// [`AckError::File`].
pub fn read_ack_file(path: &Path) -> Result<Ack, AckError> {
    let bad = |why: String| AckError::File {
        path: path.display().to_string(),
        why,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let v = v.get("ack").cloned().unwrap_or(v);
    serde_json::from_value(v).map_err(|e| bad(e.to_string()))
}

/// Seals the records not yet in any batch as the next batch, even while
/// earlier batches wait for their acknowledgement (the office holds a
/// batch until its predecessors arrive); with nothing new, the oldest
/// unacknowledged batch again. Returns the range and the batch bytes, or
/// `None` when everything is settled.
///
/// # Errors
/// [`SealError`].
pub fn seal_for_transfer(
    journal: &mut Journal,
    batch_key: &Key,
    now: u32,
) -> Result<Option<(SealedRange, Vec<u8>)>, SealError> {
    let range = match journal.seal_next(now)? {
        Some(r) => Some(r),
        None => journal.seal(now)?,
    };
    let Some(range) = range else {
        return Ok(None);
    };
    let mut buf = Vec::new();
    write_range(journal, batch_key, &range, &mut buf)?;
    Ok(Some((range, buf)))
}

/// What [`apply_sync`] wrote into the till's directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncApplied {
    /// Whether the office's hotlist replaced the local one.
    pub hotlist_written: bool,
    /// The version of the campaign file written, if one was.
    pub campaigns_version: Option<u32>,
    /// Profile updates written (each verified with the issuer key).
    pub profiles: Vec<AckProfile>,
    /// Issuer adjustments now held (`adjustments.json`).
    pub adjustments: usize,
    /// Things refused or kept, one line each, for the operator.
    pub notes: Vec<String>,
}

impl SyncApplied {
    /// The acknowledgement that tells the office what this till now holds.
    pub fn ack(&self, data: &SyncData) -> SyncAck {
        SyncAck::of(data, &self.profiles)
    }
}

pub use tessera_crypto::files::write_atomic;

/// The `cards` of a per-card file sync wrote before (unblocks, key
/// updates): what is still waiting for its card. Missing or unreadable:
/// none (the office sends again what it has not seen acknowledged).
fn waiting_cards(path: &Path) -> serde_json::Map<String, serde_json::Value> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("cards").and_then(|c| c.as_object()).cloned())
        .unwrap_or_default()
}

/// Writes what the office sent into the till's directory (see the table in
/// [`crate::dir`]), checking everything the till can check:
///
/// * the hotlist, only if its issuer signature verifies and it is not
///   older than the local copy (an edited local copy counts as none); the
///   signature is written first, so a crash between the two leaves a pair
///   the till refuses until the next sync, never an unchecked list;
/// * the campaign file, only if its signature verifies;
/// * each profile update, only if the issuer signed it for that card;
/// * settled counters, unblocks and key updates as they came: the card
///   checks their issuer MACs, which no till can make.
///
/// # Errors
/// [`DirError::Refused`] when the office's hotlist does not verify (nothing
/// is then written), [`DirError::Io`].
pub fn apply_sync(dir: &TerminalDir, data: &SyncData, issuer: &IssuerPublicKey) -> Result<SyncApplied, DirError> {
    dir.create()?;
    let path = dir.path();
    let io = |what: &str| {
        let what = what.to_owned();
        move |source| DirError::Io { what, source }
    };
    let mut applied = SyncApplied::default();

    let hotlist_path = path.join("hotlist.toml");
    let current = std::fs::read_to_string(&hotlist_path)
        .ok()
        .zip(std::fs::read_to_string(path.join("hotlist.toml.sig")).ok())
        .and_then(|(text, sig)| Hotlist::load_signed(&text, &sig, issuer).ok())
        .map_or(0, |h| h.version);
    if data.hotlist.version > 0 && data.hotlist.version >= current {
        let cards: Vec<String> = data.hotlist.cards.iter().map(|c| format!("  \"{c}\",")).collect();
        let text = format!(
            "# Written by sync from the back office.\nversion = {}\ncards = [\n{}\n]\n",
            data.hotlist.version,
            cards.join("\n")
        );
        Hotlist::load_signed(&text, &data.hotlist.signature, issuer).map_err(|e| DirError::Refused {
            what: "the office's hotlist",
            why: e.to_string(),
            fix: "nothing was written; call the office",
        })?;
        write_atomic(
            &path.join("hotlist.toml.sig"),
            format!("{}\n", data.hotlist.signature).as_bytes(),
        )
        .map_err(io("hotlist"))?;
        write_atomic(&hotlist_path, text.as_bytes()).map_err(io("hotlist"))?;
        applied.hotlist_written = true;
    } else if data.hotlist.version < current {
        applied.notes.push(format!(
            "kept hotlist v{current}: the office sent the older v{}",
            data.hotlist.version
        ));
    }

    if let Some(c) = &data.campaigns {
        match CampaignSet::load_signed(c.toml.as_bytes(), c.signature.trim(), issuer) {
            Ok(set) => {
                write_atomic(
                    &path.join("campaigns.toml.sig"),
                    format!("{}\n", c.signature.trim()).as_bytes(),
                )
                .map_err(io("campaigns"))?;
                write_atomic(&path.join("campaigns.toml"), c.toml.as_bytes()).map_err(io("campaigns"))?;
                applied.campaigns_version = Some(set.version);
            }
            Err(e) => applied.notes.push(format!("refused the office's campaign file: {e}")),
        }
    }

    let updates_dir = path.join("profile-updates");
    for p in &data.profile_updates {
        let blob = hex::decode(&p.profile).ok();
        let signed = blob.as_deref().and_then(|b| SignedProfile::parse(b).ok());
        let ok = signed
            .as_ref()
            .is_some_and(|s| issuer.verify(s).is_ok() && hex::encode_upper(s.profile.card_id) == p.card_id);
        match (ok, blob) {
            (true, Some(b)) => {
                std::fs::create_dir_all(&updates_dir).map_err(io("profile updates"))?;
                let doc = json!({"version": 2, "profile": hex::encode(&b), "issuer_macs": p.issuer_macs});
                write_atomic(
                    &updates_dir.join(format!("{}.json", p.card_id)),
                    format!("{doc:#}\n").as_bytes(),
                )
                .map_err(io("profile updates"))?;
                applied.profiles.push(AckProfile {
                    card_id: p.card_id.clone(),
                    version: p.version,
                });
            }
            _ => applied.notes.push(format!(
                "refused the profile update for card {}: not genuine",
                p.card_id
            )),
        }
    }

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
    write_atomic(&path.join("settled.json"), format!("{doc:#}\n").as_bytes()).map_err(io("settled"))?;

    // Unblocks and key updates are added to the ones still waiting: the
    // office serves each once this till has acknowledged it, and one
    // already here stays until its card uses it.
    let mut unblocks = waiting_cards(&path.join("unblocks.json"));
    for u in &data.unblocks {
        unblocks.insert(u.card_id.clone(), json!({"seq": u.seq, "issuer_macs": u.issuer_macs}));
    }
    let doc = json!({"version": 2, "synced_at": data.issued_at, "cards": unblocks});
    write_atomic(&path.join("unblocks.json"), format!("{doc:#}\n").as_bytes()).map_err(io("unblocks"))?;

    let mut key_updates = waiting_cards(&path.join("key-updates.json"));
    for k in &data.key_updates {
        key_updates.insert(
            k.card_id.clone(),
            json!({"key_version": k.key_version, "ciphertext": k.ciphertext, "issuer_mac": k.issuer_mac}),
        );
    }
    let doc = json!({"version": 1, "synced_at": data.issued_at, "cards": key_updates});
    write_atomic(&path.join("key-updates.json"), format!("{doc:#}\n").as_bytes()).map_err(io("key updates"))?;

    // Issuer adjustments replace the till's copy: the office serves every
    // one whose record it has not posted, and a till never sends again one
    // its journal holds.
    let adjustments: Vec<serde_json::Value> = data
        .adjustments
        .iter()
        .map(|a| json!({"card_id": a.card_id, "seq": a.seq, "kind": a.kind, "points": a.points, "issuer_macs": a.issuer_macs}))
        .collect();
    let doc = json!({"version": 1, "synced_at": data.issued_at, "adjustments": adjustments});
    write_atomic(&path.join("adjustments.json"), format!("{doc:#}\n").as_bytes()).map_err(io("adjustments"))?;
    applied.adjustments = data.adjustments.len();
    Ok(applied)
}
