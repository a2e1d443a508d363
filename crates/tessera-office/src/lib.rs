//! The back office: its directory and every operation on it
//! ([`dir::OfficeDir`]: keys, TLS identity, ledger, terminal bundles,
//! signed files, batch import) and the HTTP server in front of the ledger
//! ([`server`]). The till's side of settlement and sync is the
//! `tessera-client` crate (re-exported here as [`upload_batch`],
//! [`fetch_sync`], [`ack_sync`]).
//!
//! The contract is `docs/settlement.md`:
//!
//! | request | body | answers |
//! |---|---|---|
//! | `POST /v1/batches` | a batch (JSON Lines, `Content-Type: application/x-ndjson`, its header MAC in `Tessera-Batch-Mac`, checked before any work), spooled to a private file, then ingested | `200` + [`Ack`](tessera_settlement::batch::Ack) JSON; `400`, `401`, `403`, `408`, `409`, `413`, `415`, `503` |
//! | `GET /v1/sync?terminal=N&nonce=HEX&time=T&mac=HEX` | — | `200` + [`SyncEnvelope`] JSON: the feed encrypted for terminal N, then MAC'd; `400`, `401`, `403` |
//! | `POST /v1/sync/ack?terminal=N&nonce=HEX&time=T&mac=HEX` | [`SyncAck`] JSON, the MAC ([`ack_mac`]) covering it | `200` + `{"recorded": n}`; `400`, `401`, `403`, `413`, `503` |
//! | `GET /metrics` | — | `200` Prometheus text (loopback peers only); `403` |
//!
//! Over HTTPS with the office's self-signed certificate, which terminals pin
//! ([`tls`]); plain HTTP on loopback only, by explicit choice.
//!
//! Every refusal is `{"error": "one line"}` and changes nothing.
//!
//! # The sync feed
//! [`SyncData`] travels sealed in a [`SyncEnvelope`]
//! `{"format","terminal_id","issued_at","nonce","iv","ciphertext","mac"}`
//! (format [`SYNC_FORMAT`]): the payload (hotlist, campaigns, profile
//! updates, settled counters, unblocks, key updates) is AES-128-CBC under
//! `K_enc = KDF(batch key, "tessera sync enc", [terminal]32)` with a fresh
//! random IV, and the envelope is AES-CMAC'd under
//! `K_mac = KDF(batch key, "tessera sync mac", [terminal]32)` over
//!
//! ```text
//! "TS" 02 ‖ SHA-256(canonical envelope)
//! ```
//!
//! where the canonical envelope is the compact JSON (no whitespace, fields
//! in the order above, `mac` left out, strings escaped as `serde_json`
//! does) of every other field. The terminal checks the MAC, its terminal
//! id and the `nonce` it sent (16 random bytes, hex) before decrypting, so
//! an old answer cannot be replayed to it and nobody else reads it
//! (`docs/settlement.md`, byte for byte).
//!
//! Card ids are 16 upper-case hex digits, profile blobs lower-case hex of
//! the signed profile (`SignedProfile::to_bytes`), the campaign file and its
//! signature as published in the office directory (`campaigns.toml`,
//! `campaigns.toml.sig`).

pub mod analytics;
pub mod audit;
pub mod authorization;
pub mod cards;
pub mod dashboard;
pub mod dir;
mod metrics;
pub mod reports;
pub mod server;
pub mod tls;

pub use server::{serve, spawn, Running, ServerConfig, ServerError, Transport, DEFAULT_ADDR, MAX_BATCH_BYTES};
pub use tessera_client::{
    ack_sync, authorize, fetch_sync, settle, upload_batch, ClientError, OfficeAuthorizer, RetryPolicy,
};
pub use tessera_settlement::sync::{
    ack_mac, request_mac, AckKeyUpdate, AckProfile, AckUnblock, SyncAck, SyncAdjustment, SyncCampaigns, SyncData,
    SyncEnvelope, SyncHotlist, SyncKeyUpdate, SyncOpenError, SyncProfile, SyncSettled, SyncUnblock, SYNC_ACK_FORMAT,
    SYNC_FORMAT, SYNC_REQUEST_WINDOW_SECS,
};
pub use tls::{OfficeIdentity, TlsError};
