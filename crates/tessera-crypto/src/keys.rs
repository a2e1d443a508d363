//! Key stores (spec §5.1).
//!
//! [`IssuerKeys`] is the back office's store: every master key and the
//! issuer signing key. [`TerminalKeys`] is the subset a terminal may hold:
//! the authentication masters and the issuer public key — never the
//! certificate master. [`IssuerKeys::test`] loads the published test keys
//! from `fixtures/test-keys.json`; they must never personalize a real card.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::cert::CertificateVerifier;
use crate::kdf::{diversify, labels};
use crate::sign::{IssuerKey, IssuerPublicKey};
use crate::{CryptoError, Key};
use tessera_protocol::messages::CardId;

/// The test key store, embedded from `fixtures/test-keys.json`.
pub const TEST_KEYS_JSON: &str = include_str!("../../../fixtures/test-keys.json");

#[derive(Deserialize, Serialize)]
struct KeyFile {
    key_version: u8,
    auth_master: String,
    cert_master: String,
    perso_master: String,
    batch_master: String,
    issuer_signing_key: String,
}

/// The back office's keys.
pub struct IssuerKeys {
    /// Version of the masters below.
    pub key_version: u8,
    /// Master of the cards' authentication keys.
    pub auth_master: Key,
    /// Master of the cards' certificate keys.
    pub cert_master: Key,
    /// Master of the cards' transport (personalization) keys.
    pub perso_master: Key,
    /// Master of the terminals' settlement batch keys.
    pub batch_master: Key,
    /// The profile signing key.
    pub issuer: IssuerKey,
}

impl IssuerKeys {
    /// Parses a key store in the JSON layout of `fixtures/test-keys.json`.
    ///
    /// # Errors
    /// [`CryptoError::BadKey`] on malformed JSON or keys.
    pub fn from_json(s: &str) -> Result<Self, CryptoError> {
        let f: KeyFile = serde_json::from_str(s).map_err(|_| CryptoError::BadKey)?;
        Ok(Self {
            key_version: f.key_version,
            auth_master: Key::from_hex(&f.auth_master)?,
            cert_master: Key::from_hex(&f.cert_master)?,
            perso_master: Key::from_hex(&f.perso_master)?,
            batch_master: Key::from_hex(&f.batch_master)?,
            issuer: IssuerKey::from_hex(&f.issuer_signing_key)?,
        })
    }

    /// Fresh keys from OS randomness (the key ceremony).
    pub fn generate(key_version: u8) -> Self {
        use rand_core::RngCore;
        let fresh = || {
            let mut k = zeroize::Zeroizing::new([0u8; 16]);
            rand_core::OsRng.fill_bytes(k.as_mut_slice());
            Key::new(*k)
        };
        Self {
            key_version,
            auth_master: fresh(),
            cert_master: fresh(),
            perso_master: fresh(),
            batch_master: fresh(),
            issuer: IssuerKey::generate(),
        }
    }

    /// The key store as JSON (the layout [`IssuerKeys::from_json`] reads).
    /// The caller must write it where only the back office can read it.
    pub fn to_json(&self) -> zeroize::Zeroizing<String> {
        let f = KeyFile {
            key_version: self.key_version,
            auth_master: hex::encode(self.auth_master.bytes()),
            cert_master: hex::encode(self.cert_master.bytes()),
            perso_master: hex::encode(self.perso_master.bytes()),
            batch_master: hex::encode(self.batch_master.bytes()),
            issuer_signing_key: self.issuer.to_hex().to_string(),
        };
        let out = zeroize::Zeroizing::new(serde_json::to_string_pretty(&f).unwrap_or_default());
        let KeyFile {
            auth_master,
            cert_master,
            perso_master,
            batch_master,
            issuer_signing_key,
            ..
        } = f;
        for mut s in [auth_master, cert_master, perso_master, batch_master, issuer_signing_key] {
            zeroize::Zeroize::zeroize(&mut s);
        }
        out
    }

    /// The settlement batch key of a terminal:
    /// `KDF(batch master, "tessera terminal batch", terminal id)`.
    pub fn terminal_batch_key(&self, terminal_id: u32) -> Key {
        crate::kdf::derive_key(&self.batch_master, labels::TERMINAL_BATCH, &terminal_id.to_be_bytes())
    }

    /// Everything one terminal may hold: the terminal bundle.
    pub fn terminal_bundle(&self, terminal_id: u32) -> TerminalBundle {
        TerminalBundle {
            terminal_id,
            keys: self.terminal_keys(),
            batch_key: self.terminal_batch_key(terminal_id),
        }
    }

    /// The published test keys.
    ///
    /// # Errors
    /// Only if the embedded file were corrupt.
    pub fn test() -> Result<Self, CryptoError> {
        Self::from_json(TEST_KEYS_JSON)
    }

    /// The card's transport key, which the card factory loads before
    /// personalization (spec §5.8).
    pub fn card_perso_key(&self, card_id: &CardId) -> Key {
        diversify(&self.perso_master, labels::CARD_PERSO, card_id, self.key_version)
    }

    /// The card's authentication key.
    pub fn card_auth_key(&self, card_id: &CardId) -> Key {
        diversify(&self.auth_master, labels::CARD_AUTH, card_id, self.key_version)
    }

    /// The card's certificate key.
    pub fn card_cert_key(&self, card_id: &CardId) -> Key {
        diversify(&self.cert_master, labels::CARD_CERT, card_id, self.key_version)
    }

    /// A certificate verifier for the back office.
    pub fn certificate_verifier(&self) -> CertificateVerifier {
        CertificateVerifier::new([(self.key_version, self.cert_master.clone())])
    }

    /// The bundle a terminal may hold.
    pub fn terminal_keys(&self) -> TerminalKeys {
        TerminalKeys {
            auth_masters: [(self.key_version, self.auth_master.clone())].into_iter().collect(),
            issuer_public: self.issuer.public(),
        }
    }
}

/// What a terminal holds: authentication masters by key version and the
/// issuer public key.
pub struct TerminalKeys {
    /// Authentication masters by key version.
    pub auth_masters: BTreeMap<u8, Key>,
    /// The issuer's public key for profile verification.
    pub issuer_public: IssuerPublicKey,
}

/// What the back office exports to one terminal: its authentication
/// masters, the issuer public key, and its own settlement batch key. Never
/// the certificate, personalization or batch masters.
pub struct TerminalBundle {
    /// The terminal this bundle is for.
    pub terminal_id: u32,
    /// Authentication masters and issuer public key.
    pub keys: TerminalKeys,
    /// The terminal's batch key (seals settlement batches, checks acks).
    pub batch_key: Key,
}

#[derive(Deserialize, Serialize)]
struct BundleFile {
    format: String,
    terminal_id: u32,
    auth_masters: BTreeMap<String, String>,
    issuer_public_key: String,
    batch_key: String,
}

impl TerminalBundle {
    /// The bundle as JSON; keep it owner-readable only.
    pub fn to_json(&self) -> zeroize::Zeroizing<String> {
        let f = BundleFile {
            format: "tessera-terminal-bundle-1".into(),
            terminal_id: self.terminal_id,
            auth_masters: self
                .keys
                .auth_masters
                .iter()
                .map(|(v, k)| (v.to_string(), hex::encode(k.bytes())))
                .collect(),
            issuer_public_key: self.keys.issuer_public.to_hex(),
            batch_key: hex::encode(self.batch_key.bytes()),
        };
        zeroize::Zeroizing::new(serde_json::to_string_pretty(&f).unwrap_or_default())
    }

    /// Parses a bundle.
    ///
    /// # Errors
    /// [`CryptoError::BadKey`] on anything malformed.
    pub fn from_json(s: &str) -> Result<Self, CryptoError> {
        let f: BundleFile = serde_json::from_str(s).map_err(|_| CryptoError::BadKey)?;
        if f.format != "tessera-terminal-bundle-1" {
            return Err(CryptoError::BadKey);
        }
        let mut auth_masters = BTreeMap::new();
        for (v, k) in &f.auth_masters {
            auth_masters.insert(v.parse().map_err(|_| CryptoError::BadKey)?, Key::from_hex(k)?);
        }
        Ok(Self {
            terminal_id: f.terminal_id,
            keys: TerminalKeys {
                auth_masters,
                issuer_public: IssuerPublicKey::from_hex(&f.issuer_public_key)?,
            },
            batch_key: Key::from_hex(&f.batch_key)?,
        })
    }
}
