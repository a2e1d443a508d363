//! The whole settlement and sync of a till, one call each: what
//! `tessera pos settle --server` and `tessera pos sync` do.

use tessera_crypto::keys::TerminalBundle;
use tessera_settlement::batch::{Ack, AckStatus};
use tessera_terminal::batch::{resend_ranges, write_range, SealError};
use tessera_terminal::dir::{DirError, TerminalDir};
use tessera_terminal::journal::{Journal, JournalError};
use tessera_terminal::settlement::{apply_ack, apply_sync, AckError, SyncApplied};

use crate::http::{ack_sync, fetch_sync, upload_batch, ClientError, RetryPolicy};

/// Why settlement or sync stopped. What was acknowledged before stays
/// settled; nothing else changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettleError {
    /// The office refused or could not be reached (see [`ClientError`] for
    /// each case): try again later; batches are re-sent unchanged, so a
    /// retry never counts twice.
    #[error("settlement: {0}")]
    Office(#[from] ClientError),
    /// The office's acknowledgement was not applied (see [`AckError`]).
    #[error(transparent)]
    Ack(#[from] AckError),
    /// One record alone is larger than the office's batch limit: the
    /// office must raise its limit (`office serve --max-batch-bytes`).
    #[error("record {seq} alone is larger than the office's batch limit of {max_batch_bytes} bytes")]
    RecordTooLarge {
        /// The record.
        seq: u32,
        /// The office's limit.
        max_batch_bytes: u64,
    },
    /// The office lacks a batch this journal never sealed: the office's
    /// books and this till disagree; call the office.
    #[error("the office lacks batch {0}, which this journal never sealed: call the office")]
    UnknownBatch(u32),
    /// The journal failed (see [`JournalError`]).
    #[error("journal: {0}")]
    Journal(#[from] JournalError),
    /// Sealing or writing a batch failed (see [`SealError`]).
    #[error("batch: {0}")]
    Seal(#[from] SealError),
    /// The till's directory could not be written (see [`DirError`]).
    #[error(transparent)]
    Dir(#[from] DirError),
}

/// Progress of [`settle`], for a progress line at the till.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SettleEvent {
    /// A batch is being uploaded.
    Uploading {
        /// Its number.
        batch_no: u32,
        /// First record.
        seq_from: u32,
        /// Last record.
        seq_to: u32,
        /// Its size.
        bytes: usize,
    },
    /// The office takes smaller batches: the unacknowledged records are
    /// re-sealed in batches of `records`.
    Resealing {
        /// The office's limit.
        max_batch_bytes: u64,
        /// Records per batch from now on.
        records: u32,
    },
    /// The office lacks an earlier batch: it goes again as first sealed.
    Resending {
        /// Its number.
        batch_no: u32,
        /// First record.
        seq_from: u32,
        /// Last record.
        seq_to: u32,
    },
}

/// What [`settle`] achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettleReport {
    /// The office's acknowledgements, in order.
    pub acks: Vec<Ack>,
    /// Every record up to this one is settled.
    pub settled_up_to: u32,
    /// Records in the journal.
    pub records: u32,
}

/// The name of an acknowledgement status in reports.
pub fn status_name(s: AckStatus) -> &'static str {
    match s {
        AckStatus::Posted => "posted",
        AckStatus::Duplicate => "duplicate",
        AckStatus::Held => "held",
    }
}

/// Settles the journal with the office at `server`: every unacknowledged
/// batch is re-sent unchanged, oldest first, then every new record is
/// sealed and sent, until nothing is left. A batch is marked settled only
/// on a genuine acknowledgement. When the office announces a smaller batch
/// limit, the unacknowledged records are re-sealed into batches that fit;
/// when it says it lacks earlier batches, those go again.
///
/// `on_event` sees each step (for a progress line); `now` is the till's
/// time for the seals.
///
/// # Errors
/// [`SettleError`]; acknowledgements applied before the error stay.
pub fn settle(
    journal: &mut Journal,
    bundle: &TerminalBundle,
    server: &str,
    retry: &RetryPolicy,
    now: u32,
    mut on_event: impl FnMut(&SettleEvent),
) -> Result<SettleReport, SettleError> {
    let mut acks = Vec::new();
    // Records per new batch: no limit until the office announces one.
    let mut cap = u32::MAX;
    while let Some(range) = journal.seal_at_most(now, cap)? {
        let mut buf = Vec::new();
        write_range(journal, &bundle.batch_key, &range, &mut buf)?;
        on_event(&SettleEvent::Uploading {
            batch_no: range.batch_no,
            seq_from: range.seq_from,
            seq_to: range.seq_to,
            bytes: buf.len(),
        });
        let ack = match upload_batch(server, &buf, bundle, retry) {
            Ok(ack) => ack,
            // Too large for the office (which stored nothing): re-seal the
            // unacknowledged records into batches that fit, with a margin.
            Err(ClientError::TooLarge { max_batch_bytes }) => {
                let records = u64::from(range.seq_to - range.seq_from + 1);
                if records <= 1 {
                    return Err(SettleError::RecordTooLarge {
                        seq: range.seq_from,
                        max_batch_bytes,
                    });
                }
                let fit = records * max_batch_bytes * 9 / 10 / (buf.len() as u64).max(1);
                cap = u32::try_from(fit.clamp(1, records - 1)).unwrap_or(u32::MAX);
                on_event(&SettleEvent::Resealing {
                    max_batch_bytes,
                    records: cap,
                });
                journal.split_unacknowledged(now, cap)?;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        apply_ack(journal, bundle, &ack, now)?;
        let missing = (ack.status == AckStatus::Held).then_some(ack.missing_from).flatten();
        let held = ack.batch_no;
        acks.push(ack);
        if let Some(from) = missing {
            // The office lost batches it had acknowledged (or never got
            // them): the journal keeps them; each goes again as first sealed.
            let ranges = resend_ranges(journal, from, held)?;
            if ranges.is_empty() {
                return Err(SettleError::UnknownBatch(from));
            }
            for range in ranges {
                let mut buf = Vec::new();
                write_range(journal, &bundle.batch_key, &range, &mut buf)?;
                on_event(&SettleEvent::Resending {
                    batch_no: range.batch_no,
                    seq_from: range.seq_from,
                    seq_to: range.seq_to,
                });
                let ack = upload_batch(server, &buf, bundle, retry)?;
                apply_ack(journal, bundle, &ack, now)?;
                acks.push(ack);
            }
        }
        if acks.len() > 10_000 {
            break;
        }
    }
    Ok(SettleReport {
        acks,
        settled_up_to: journal.settled_up_to()?,
        records: journal.len(),
    })
}

/// What [`sync`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncReport {
    /// The terminal the office answered for.
    pub terminal_id: u32,
    /// The office's hotlist version.
    pub hotlist_version: u32,
    /// Cards on it.
    pub hotlist_cards: usize,
    /// Settled counters received.
    pub settled_cards: usize,
    /// Unblocks received.
    pub unblocks: usize,
    /// Key updates received.
    pub key_updates: usize,
    /// What was written (and refused) in the till's directory.
    pub applied: SyncApplied,
    /// Whether the office was told what was written (if not, it sends it
    /// again next time; nothing is lost).
    pub acknowledged: bool,
}

/// Fetches the office's news for this till (checked with its batch key),
/// writes it into the till's directory ([`apply_sync`]), and tells the
/// office what was written. A lost acknowledgement is a note, not an
/// error: the office then sends the same again.
///
/// # Errors
/// [`SettleError::Office`] when the office cannot be reached or its answer
/// is not genuine (nothing written); [`SettleError::Dir`].
pub fn sync(
    dir: &TerminalDir,
    bundle: &TerminalBundle,
    server: &str,
    retry: &RetryPolicy,
) -> Result<SyncReport, SettleError> {
    // The directory must be this terminal's before anything is written.
    drop(dir.open_journal(bundle.terminal_id, Some(bundle.terminal_id))?);
    let data = fetch_sync(server, bundle, retry)?;
    let mut applied = apply_sync(dir, &data, &bundle.keys.issuer_public)?;
    let ack = applied.ack(&data);
    let mut acknowledged = false;
    if !ack.is_empty() {
        match ack_sync(server, bundle, &ack, retry) {
            Ok(_) => acknowledged = true,
            Err(e) => applied.notes.push(format!(
                "the office was not told what was written ({e}): it sends it again next time"
            )),
        }
    }
    Ok(SyncReport {
        terminal_id: data.terminal_id,
        hotlist_version: data.hotlist.version,
        hotlist_cards: data.hotlist.cards.len(),
        settled_cards: data.settled.len(),
        unblocks: data.unblocks.len(),
        key_updates: data.key_updates.len(),
        applied,
        acknowledged,
    })
}
