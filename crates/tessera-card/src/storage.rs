//! Persistent storage of the applet (spec §6).
//!
//! The applet sees its persistent memory as a set of named fields and
//! changes it only through [`Storage::commit`], which must be atomic: after
//! a power loss at any point, every field of the commit holds its old value
//! or every field holds its new value.

use std::collections::BTreeMap;

/// A persistent field of the card (spec §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    /// Life-cycle state, 1 byte.
    Lifecycle,
    /// Card identifier, 8 bytes (written at manufacturing).
    CardId,
    /// Key version, 1 byte.
    KeyVersion,
    /// Transport key, 16 bytes; erased (empty) after personalization.
    KeyPerso,
    /// Authentication key, 16 bytes.
    KeyAuth,
    /// Certificate key, 16 bytes.
    KeyCert,
    /// Balance, 4 bytes.
    Balance,
    /// Transaction counter, 4 bytes.
    Counter,
    /// Earn cap and redeem cap, 4 bytes each.
    Caps,
    /// Consecutive authentication failures, 1 byte.
    AuthFailures,
    /// Authentication failure limit, 1 byte.
    AuthLimit,
    /// Log slot `0..8`, a 45-byte record or empty.
    Log(u8),
    /// The signed profile blob.
    Profile,
    /// Visit history (12 bytes); absent on cards made before it existed.
    Visits,
    /// Offline velocity counters (12 bytes); absent on cards made before
    /// they existed.
    Velocity,
    /// Issuer key K_iss (16 bytes, v2); absent on cards personalized under
    /// application v1.
    KeyIssuer,
    /// Issuer identifier (4 bytes, v2); absent on v1 cards.
    IssuerId,
    /// Issuer sequence of the last UNBLOCK (4 bytes, v2); absent means 0.
    IssuerSeq,
    /// Adjustment sequence of the last ISSUER ADJUST (4 bytes, v2.1);
    /// absent means 0.
    AdjustSeq,
}

impl Field {
    /// The stable name used in card images.
    pub fn name(self) -> String {
        match self {
            Self::Lifecycle => "lifecycle".into(),
            Self::CardId => "card_id".into(),
            Self::KeyVersion => "key_version".into(),
            Self::KeyPerso => "key_perso".into(),
            Self::KeyAuth => "key_auth".into(),
            Self::KeyCert => "key_cert".into(),
            Self::Balance => "balance".into(),
            Self::Counter => "counter".into(),
            Self::Caps => "caps".into(),
            Self::AuthFailures => "auth_failures".into(),
            Self::AuthLimit => "auth_limit".into(),
            Self::Log(i) => format!("log.{i}"),
            Self::Profile => "profile".into(),
            Self::Visits => "visits".into(),
            Self::Velocity => "velocity".into(),
            Self::KeyIssuer => "key_issuer".into(),
            Self::IssuerId => "issuer_id".into(),
            Self::IssuerSeq => "issuer_seq".into(),
            Self::AdjustSeq => "adjust_seq".into(),
        }
    }

    /// Parses a name produced by [`Field::name`].
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "lifecycle" => Self::Lifecycle,
            "card_id" => Self::CardId,
            "key_version" => Self::KeyVersion,
            "key_perso" => Self::KeyPerso,
            "key_auth" => Self::KeyAuth,
            "key_cert" => Self::KeyCert,
            "balance" => Self::Balance,
            "counter" => Self::Counter,
            "caps" => Self::Caps,
            "auth_failures" => Self::AuthFailures,
            "auth_limit" => Self::AuthLimit,
            "profile" => Self::Profile,
            "visits" => Self::Visits,
            "velocity" => Self::Velocity,
            "key_issuer" => Self::KeyIssuer,
            "issuer_id" => Self::IssuerId,
            "issuer_seq" => Self::IssuerSeq,
            "adjust_seq" => Self::AdjustSeq,
            other => {
                let i: u8 = other.strip_prefix("log.")?.parse().ok()?;
                if usize::from(i) >= tessera_protocol::LOG_CAPACITY {
                    return None;
                }
                Self::Log(i)
            }
        })
    }
}

/// Why a commit did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// Power was cut during the commit (fault injection). The storage holds
    /// the old or the new values; which one is known after recovery.
    #[error("power lost during commit")]
    PowerLost,
    /// The memory could not be written.
    #[error("memory failure: {0}")]
    Failure(String),
}

/// Persistent memory with atomic multi-field commits.
pub trait Storage {
    /// The committed value of a field, if it was ever written.
    fn read(&self, field: Field) -> Option<Vec<u8>>;

    /// Writes all fields at once, atomically.
    ///
    /// # Errors
    /// [`StorageError`] when the commit did not complete; then no field may
    /// have changed as far as later reads can tell, except after
    /// [`StorageError::PowerLost`], after which the applet is discarded and
    /// the storage recovers to old or new on the next power-up.
    fn commit(&mut self, writes: &[(Field, Vec<u8>)]) -> Result<(), StorageError>;
}

/// Plain in-memory storage: a commit is a single map update.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryStorage {
    fields: BTreeMap<Field, Vec<u8>>,
    commits: u64,
}

impl MemoryStorage {
    /// An empty memory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of successful commits so far.
    pub fn commits(&self) -> u64 {
        self.commits
    }

    /// All fields, for inspection.
    pub fn fields(&self) -> &BTreeMap<Field, Vec<u8>> {
        &self.fields
    }
}

impl Storage for MemoryStorage {
    fn read(&self, field: Field) -> Option<Vec<u8>> {
        self.fields.get(&field).cloned()
    }

    fn commit(&mut self, writes: &[(Field, Vec<u8>)]) -> Result<(), StorageError> {
        for (f, v) in writes {
            self.fields.insert(*f, v.clone());
        }
        self.commits += 1;
        Ok(())
    }
}
