//! The till's settlement client: what a till links to settle with the back
//! office and to fetch its news, without the office server's dependencies
//! (no async runtime, no database).
//!
//! * [`settle`]: seal, upload, verify each acknowledgement, mark settled,
//!   until nothing is left (re-sealing smaller when the office asks,
//!   re-sending what the office lacks);
//! * [`sync`]: fetch the hotlist, campaigns, profile updates, settled
//!   counters, unblocks and key updates, check them, write them into the
//!   till's directory, acknowledge;
//! * the single round trips under them: [`upload_batch`], [`fetch_sync`],
//!   [`ack_sync`], with retries ([`RetryPolicy`]);
//! * [`authorize`] (and [`OfficeAuthorizer`] for a till's tap): the office's
//!   online decision on a card's request, within the till's wait.
//!
//! Every request and answer is authenticated with the terminal's batch key
//! from its bundle, over HTTPS pinned to the office's certificate
//! ([`tls`]). The contract is `docs/settlement.md`.
//!
//! ```no_run
//! use tessera_client::{settle, sync, RetryPolicy};
//! use tessera_crypto::keys::TerminalBundle;
//! use tessera_terminal::dir::TerminalDir;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bundle = TerminalBundle::from_json(&std::fs::read_to_string("till-7.json")?)?;
//! let dir = TerminalDir::new("/var/lib/tessera/till-7");
//! let mut journal = dir.open_journal(bundle.terminal_id, Some(bundle.terminal_id))?;
//! let now = u32::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs())?;
//! let report = settle(&mut journal, &bundle, "https://office:8420", &RetryPolicy::default(), now, |e| {
//!     eprintln!("{e:?}");
//! })?;
//! println!("settled up to record {}", report.settled_up_to);
//! let news = sync(&dir, &bundle, "https://office:8420", &RetryPolicy::default())?;
//! println!("hotlist v{}", news.hotlist_version);
//! # Ok(())
//! # }
//! ```

pub mod http;
pub mod tls;
mod workflow;

pub use http::{
    ack_sync, authorize, fetch_sync, upload_batch, ClientError, OfficeAuthorizer, RetryNotice, RetryPolicy,
};
pub use workflow::{settle, status_name, sync, SettleError, SettleEvent, SettleReport, SyncReport};
