//! The back office on the wire: the HTTP server in front of the ledger
//! ([`server`]) and the terminal's side of settlement and sync ([`client`]).
//!
//! The contract is `docs/settlement.md`:
//!
//! | request | body | answers |
//! |---|---|---|
//! | `POST /v1/batches` | a batch (JSON Lines, `Content-Type: application/x-ndjson`, its header MAC in `Tessera-Batch-Mac`, checked before any work), spooled to a private file, then ingested | `200` + [`Ack`](tessera_terminal::batch::Ack) JSON; `400`, `401`, `403`, `408`, `409`, `413`, `415`, `503` |
//! | `GET /v1/sync?terminal=N&nonce=HEX&time=T&mac=HEX` | — | `200` + [`SyncData`] JSON MAC'd with terminal N's batch key; `400`, `401`, `403` |
//! | `GET /metrics` | — | `200` Prometheus text (loopback peers only); `403` |
//!
//! Over HTTPS with the office's self-signed certificate, which terminals pin
//! ([`tls`]); plain HTTP on loopback only, by explicit choice.
//!
//! Every refusal is `{"error": "one line"}` and changes nothing.
//!
//! # The sync MAC
//! A [`SyncData`] document is the JSON object
//! `{"format","terminal_id","issued_at","nonce","hotlist","campaigns","profile_updates","settled","mac"}`.
//! Its MAC is AES-CMAC under the terminal's batch key
//! (`KDF(batch master, "tessera terminal batch", terminal id)`) of
//!
//! ```text
//! "TS" 01 ‖ SHA-256(canonical body)
//! ```
//!
//! where the canonical body is the compact JSON (no whitespace, fields in
//! the order above, `mac` left out, strings escaped as `serde_json` does)
//! of every other field — the same construction as the batch header MAC
//! (`"TB" 01 ‖ SHA-256(canonical header)`). The terminal re-serializes what
//! it parsed and checks the MAC; the `nonce` it sent (16 random bytes, hex)
//! must come back, so an old answer cannot be replayed to it.
//!
//! Card ids are 16 upper-case hex digits, profile blobs lower-case hex of
//! the signed profile (`SignedProfile::to_bytes`), the campaign file and its
//! signature as published in the office directory (`campaigns.toml`,
//! `campaigns.toml.sig`).

pub mod client;
mod metrics;
pub mod server;
mod sync;
pub mod tls;

pub use client::{fetch_sync, upload_batch, ClientError, RetryPolicy};
pub use server::{serve, ServerConfig, ServerError, Transport, DEFAULT_ADDR, MAX_BATCH_BYTES};
pub use sync::{
    request_mac, SyncCampaigns, SyncData, SyncHotlist, SyncKeyUpdate, SyncProfile, SyncSettled, SyncUnblock,
    SYNC_FORMAT, SYNC_REQUEST_WINDOW_SECS,
};
pub use tls::{OfficeIdentity, TlsError};
