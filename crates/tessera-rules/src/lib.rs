//! The rules a Tessera till and the office both apply.
//!
//! The till decides offline with them, and the ledger recomputes every
//! decision with the same code when the till's batch arrives:
//!
//! * [`policy`]: the signed till policy (points per amount, tier and
//!   category multipliers, offline caps and velocity limits), the hotlist,
//!   and [`policy::authorize`], the offline decision itself;
//! * [`offers`]: signed campaign files and [`offers::quote`], the points a
//!   purchase earns under them;
//! * [`display`]: money, amounts, local times, dates and categories as
//!   people read and type them.
//!
//! [`CardInfo`] is what the decision knows of the card: what the till read
//! from it in the authenticated session.
//!
//! ```
//! use tessera_rules::policy::{Policy, DEFAULT_POLICY_TOML};
//!
//! let policy = Policy::from_toml(DEFAULT_POLICY_TOML)?;
//! assert!(policy.version > 0 && policy.limits.max_earn_points > 0);
//! # Ok::<(), tessera_rules::policy::PolicyError>(())
//! ```

use tessera_protocol::messages::{CardId, LogRecord, Velocity, Visits};
use tessera_protocol::profile::Profile;

pub mod display;
pub mod offers;
pub mod policy;

/// What the terminal knows about the card in a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardInfo {
    /// Card identifier.
    pub card_id: CardId,
    /// Key version.
    pub key_version: u8,
    /// Balance after the last transaction.
    pub balance: u32,
    /// Counter of the last transaction.
    pub counter: u32,
    /// The card's most recent log record.
    pub last_record: Option<LogRecord>,
    /// The verified customer profile.
    pub profile: Profile,
    /// SHA-256 of the signed profile blob.
    pub profile_digest: [u8; 32],
    /// Whether the profile came from the cache (no READ PROFILE).
    pub profile_cached: bool,
    /// The card's visit history, kept up to date by this session's earns.
    pub visits: Visits,
    /// The card's offline velocity counters, kept up to date by this
    /// session's redemptions.
    pub velocity: Velocity,
}
