//! The terminal's link to real smart-card readers through PC/SC.
//!
//! This crate implements [`tessera_transport::Transport`] on top of the
//! [`pcsc`](https://docs.rs/pcsc) crate (pcsc-lite's `pcscd` on Linux), and
//! keeps every `pcsc` type out of its public API:
//!
//! - [`list_readers`], [`choose_reader`] and [`find_reader`] name a reader;
//! - [`wait_for_card`] blocks on PC/SC status changes until a card arrives
//!   or leaves (no polling loop);
//! - [`ReaderWatcher`] reports [`ReaderEvent`]s (readers added and removed,
//!   cards inserted with their ATR and removed) from a thread of its own
//!   through a channel, and [`wait_for_tap`] waits with it for a card in any
//!   reader matching a [`ReaderFilter`];
//! - [`PcscTransport`] talks to the card in a reader, handling the ISO 7816
//!   transport concerns (`61xx` GET RESPONSE chaining, `6Cxx` retries, see
//!   [`iso7816`]), card removal and resets, and restarts of `pcscd` itself.
//!
//! # Recovery rules
//! - A card that leaves the field, is reset by another application or loses
//!   power makes the command in flight fail with
//!   [`TransportError::CardRemoved`](tessera_transport::TransportError::CardRemoved).
//!   The next [`Transport::transmit`](tessera_transport::Transport::transmit)
//!   connects again (a new tap). The card has lost its volatile state, so the
//!   terminal, which starts every session with SELECT, simply starts a new
//!   session; [`PcscTransport::reconnect`] does the reconnect and SELECT in
//!   one call for callers that want it explicitly.
//! - When `pcscd` stops or restarts, the command in flight (if any) fails with
//!   `CardRemoved`; the next call establishes a new PC/SC context and
//!   connects again by reader name, with nothing to do for the caller.

mod error;
mod events;
pub mod iso7816;
mod readers;
mod transport;

pub use error::PcscError;
pub use events::{wait_for_tap, ReaderEvent, ReaderFilter, ReaderWatcher, Tap};
pub use readers::{choose_reader, find_reader, list_readers, wait_for_card};
pub use transport::{CardProtocol, Disposition, PcscTransport};
