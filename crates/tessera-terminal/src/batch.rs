//! Settlement batches sealed from the till's journal. The format itself
//! (header, records, MAC, acknowledgement) is
//! [`tessera_settlement::batch`], re-exported here; this module adds the
//! writers that read the journal.

pub use tessera_settlement::batch::*;

use std::io::Write;

use tessera_crypto::Key;

use crate::journal::{Journal, JournalError};

/// Errors sealing or writing a batch from the journal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The journal failed (see [`JournalError`] for what to do).
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// Writing the batch failed, or a record in the journal is not a
    /// record body: run `pos status` to check the journal's chain.
    #[error(transparent)]
    Batch(#[from] BatchError),
}

/// Seals the terminal's unsettled journal (see [`Journal::seal`]) and writes
/// the batch to `out`. Returns the sealed range, or `None` when there is
/// nothing to settle.
///
/// # Errors
/// [`SealError::Journal`] or [`SealError::Batch`].
pub fn write_batch(
    journal: &mut Journal,
    key: &Key,
    now: u32,
    out: &mut impl Write,
) -> Result<Option<SealedRange>, SealError> {
    let Some(range) = journal.seal(now)? else {
        return Ok(None);
    };
    write_range(journal, key, &range, out)?;
    Ok(Some(range))
}

/// Writes an already sealed range (from [`Journal::seal`],
/// [`Journal::seal_next`] or [`Journal::batches`]) as a batch.
///
/// # Errors
/// [`SealError::Journal`] or [`SealError::Batch`].
pub fn write_range(journal: &Journal, key: &Key, range: &SealedRange, out: &mut impl Write) -> Result<(), SealError> {
    let rows = journal.raw_range(range.seq_from, range.seq_to)?;
    write_records(journal.terminal_id(), key, range, &rows, out)?;
    Ok(())
}

/// The sealed batches a till re-sends when the office says it lacks
/// batches from `missing_from` on, up to (not including) `held`, the batch
/// it holds: the journal keeps every sealed range and its records, so each
/// is written again with [`write_range`] exactly as first sealed (same
/// records, same head). Empty when the journal has none of them (the
/// office's number is not one this till sealed).
///
/// # Errors
/// A journal error.
pub fn resend_ranges(journal: &Journal, missing_from: u32, held: u32) -> Result<Vec<SealedRange>, JournalError> {
    Ok(journal
        .batches()?
        .into_iter()
        .filter(|b| b.batch_no >= missing_from && b.batch_no < held)
        .collect())
}
