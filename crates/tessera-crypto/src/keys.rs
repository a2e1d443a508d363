//! Key stores (spec §5.1).
//!
//! [`IssuerKeys`] is the back office's store: every master key and the
//! issuer signing key. [`TerminalKeys`] is the subset a terminal may hold:
//! the authentication masters and the issuer public key — never the
//! certificate master. [`IssuerKeys::test`] loads the published test keys
//! from `fixtures/test-keys.json`; they must never personalize a real card.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::cert::CertificateVerifier;
use crate::kdf::{diversify, labels};
use crate::sign::{IssuerKey, IssuerPublicKey};
use crate::{CryptoError, Key};
use tessera_protocol::messages::CardId;

/// The test key store, embedded from `fixtures/test-keys.json`.
pub const TEST_KEYS_JSON: &str = include_str!("../../../fixtures/test-keys.json");

#[derive(Deserialize)]
struct KeyFile {
    key_version: u8,
    auth_master: String,
    cert_master: String,
    perso_master: String,
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
            issuer: IssuerKey::from_hex(&f.issuer_signing_key)?,
        })
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
