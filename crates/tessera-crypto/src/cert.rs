//! Transaction certificates (spec §5.7).
//!
//! A certificate is the full 16-byte AES-CMAC, under the card's certificate
//! key, of [`LogRecord::certified_bytes`]. Terminals cannot compute or check
//! it: only the card and the back office hold certificate keys.

use std::collections::BTreeMap;

use crate::kdf::{diversify, labels};
use crate::{cmac, ct_eq, CryptoError, Key};
use tessera_protocol::messages::{CardId, LogRecord};
use tessera_protocol::CERT_LEN;

/// Computes the certificate of `record` (card side).
pub fn certificate(k_cert: &Key, card_id: &CardId, record: &LogRecord) -> [u8; CERT_LEN] {
    cmac(k_cert, &record.certified_bytes(card_id))
}

/// Back-office verifier holding the certificate master keys by version.
pub struct CertificateVerifier {
    masters: BTreeMap<u8, Key>,
}

impl CertificateVerifier {
    /// A verifier for the given `(key_version, master)` pairs.
    pub fn new(masters: impl IntoIterator<Item = (u8, Key)>) -> Self {
        Self {
            masters: masters.into_iter().collect(),
        }
    }

    /// Verifies the certificate carried by `record`.
    ///
    /// # Errors
    /// [`CryptoError::BadKey`] for an unknown key version,
    /// [`CryptoError::BadMac`] when the certificate is wrong.
    pub fn verify(&self, card_id: &CardId, key_version: u8, record: &LogRecord) -> Result<(), CryptoError> {
        let master = self.masters.get(&key_version).ok_or(CryptoError::BadKey)?;
        let k_cert = diversify(master, labels::CARD_CERT, card_id, key_version);
        if ct_eq(&certificate(&k_cert, card_id, record), &record.certificate) {
            Ok(())
        } else {
            Err(CryptoError::BadMac)
        }
    }
}
