//! The formats a Tessera till and the back office exchange, as
//! `docs/settlement.md` specifies them byte for byte:
//!
//! * [`record`]: a journal record ([`record::Entry`]) and its hash chain;
//! * [`batch`]: a sealed range of a till's journal as it travels (header,
//!   records, MAC), the streaming [`batch::BatchReader`] that checks it, and
//!   the office's MAC'd acknowledgement [`batch::Ack`];
//! * [`sync`]: what the office sends a till (hotlist, campaigns, profile
//!   updates, settled counters, unblocks, key updates) in a MAC'd envelope,
//!   and the till's acknowledgement of what it wrote.
//!
//! The crate has no I/O of its own beyond the readers and writers it is
//! given: the till's journal (`tessera-terminal`) and the ledger
//! (`tessera-ledger`) both build on it, and neither depends on the other.
//!
//! ```
//! use tessera_settlement::batch::{write_records, BatchReader, SealedRange};
//! use tessera_settlement::record::{record_hash, Entry, EntryKind};
//!
//! let key = tessera_crypto::Key::new([7; 16]);
//! // One journal record of terminal 42, chained from the start.
//! let entry = Entry::new(EntryKind::Decision, 1_790_000_000);
//! let (head, body) = record_hash(&[0; 32], 1, 42, &entry);
//! let range = SealedRange {
//!     batch_no: 1, seq_from: 1, seq_to: 1, prev_head: [0; 32], head,
//!     sealed_at: 1_790_000_100, acked_at: None,
//! };
//! let mut bytes = Vec::new();
//! write_records(42, &key, &range, &[(1, body, [0; 32], head)], &mut bytes)?;
//!
//! // The office's side: stream, check the chain, then the MAC.
//! let mut reader = BatchReader::open(bytes.as_slice())?;
//! while let Some(record) = reader.next_record()? {
//!     assert_eq!(record.entry.kind, EntryKind::Decision);
//! }
//! let header = reader.finish(&key)?;
//! assert_eq!((header.terminal_id, header.record_count), (42, 1));
//! # Ok::<(), tessera_settlement::batch::BatchError>(())
//! ```

pub mod authorize;
pub mod batch;
pub mod record;
pub mod sync;
