//! The C ABI of the Tessera till, for POS software in any language.
//!
//! Everything crosses the boundary as opaque handles ([`TesseraTill`],
//! [`TesseraTransport`]), plain integers, UTF-8 C strings and versioned
//! JSON documents (`{"v":1,...}`); no Rust type does. Every function
//! returns one of the stable `TESSERA_*` codes below (the table in
//! `docs/ffi.md`), never panics across the boundary (a panic becomes
//! [`TESSERA_INTERNAL`]), and checks every pointer and length it is given.
//!
//! * Opening a till: [`tessera_till_open`] over the directory `tessera pos`
//!   keeps ([`tessera_terminal::dir::TerminalDir`]), closing it:
//!   [`tessera_till_close`].
//! * Transports: a callback the POS provides ([`tessera_transport_callback`]),
//!   a PC/SC reader ([`tessera_transport_pcsc`]), or the in-process
//!   simulator over a card image file ([`tessera_transport_sim`], tests and
//!   training).
//! * Operations, one tap each: [`tessera_till_read`], [`tessera_till_quote`],
//!   [`tessera_till_purchase`], [`tessera_till_redeem`],
//!   [`tessera_till_refund`]. Each tap first resolves the till's pending
//!   operations on that card (a card pulled during an earlier operation)
//!   and reports them in the `resolved` member of its JSON answer.
//! * Results: a JSON document returned as a string the library allocated,
//!   freed with [`tessera_string_free`]; the last failure of the calling
//!   thread as JSON with [`tessera_last_error`].
//!
//! This is the only crate of the workspace where `unsafe` code is allowed,
//! and only in the modules that cross the boundary; every `unsafe` block
//! says why it is sound.

mod boundary;
mod codes;
mod failure;
mod sim;
mod till;
mod transport;

pub use boundary::{tessera_code_name, tessera_last_error, tessera_string_free, tessera_version};
pub use codes::*;
pub use sim::{tessera_sim_issue, tessera_sim_set_present, tessera_sim_state, tessera_transport_sim};
pub use till::{
    tessera_till_close, tessera_till_open, tessera_till_purchase, tessera_till_quote, tessera_till_read,
    tessera_till_redeem, tessera_till_refund, tessera_till_set_online, tessera_till_settle, tessera_till_sync,
    TesseraTill,
};
pub use transport::{
    tessera_pcsc_readers, tessera_pcsc_wait_for_card, tessera_transport_callback, tessera_transport_free,
    tessera_transport_pcsc, tessera_transport_transmit, TesseraTransmitFn, TesseraTransport,
};
