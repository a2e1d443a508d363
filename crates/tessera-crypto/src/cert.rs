//! Transaction certificates (spec §5.7).
//!
//! A certificate is the full 16-byte AES-CMAC, under the card's certificate
//! key, of [`LogRecord::certified_bytes`]. Terminals cannot compute or check
//! it: only the card and the back office hold certificate keys.

use std::collections::BTreeMap;

use crate::kdf::{diversify, labels};
use crate::{cmac, ct_eq, CryptoError, Key};
use tessera_protocol::messages::{AuthorizationRequest, CardId, LogRecord};
use tessera_protocol::{CERT_LEN, MAC_LEN};

/// Computes the certificate of `record` (card side).
pub fn certificate(k_cert: &Key, card_id: &CardId, record: &LogRecord) -> [u8; CERT_LEN] {
    cmac(k_cert, &record.certified_bytes(card_id))
}

/// The request cryptogram of an authorization request (spec §5.10, v2.2):
/// `CMAC(K_cert, "TQ" ‖ 01 ‖ card id ‖ request body)[0..8]` (card side,
/// and the office's check).
pub fn request_cryptogram(k_cert: &Key, card_id: &CardId, request: &AuthorizationRequest) -> [u8; MAC_LEN] {
    let mut input = Vec::with_capacity(11 + AuthorizationRequest::BODY_LEN);
    input.extend_from_slice(b"TQ");
    input.push(0x01);
    input.extend_from_slice(card_id);
    input.extend_from_slice(&request.body());
    let full = cmac(k_cert, &input);
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(&full[..MAC_LEN]);
    out
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

    /// Verifies the cryptogram of a card's authorization request (spec
    /// §5.10) under the card's certificate key of `key_version`.
    ///
    /// # Errors
    /// As [`CertificateVerifier::verify`].
    pub fn verify_request(
        &self,
        card_id: &CardId,
        key_version: u8,
        request: &AuthorizationRequest,
    ) -> Result<(), CryptoError> {
        let master = self.masters.get(&key_version).ok_or(CryptoError::BadKey)?;
        let k_cert = diversify(master, labels::CARD_CERT, card_id, key_version);
        if ct_eq(&request_cryptogram(&k_cert, card_id, request), &request.cryptogram) {
            Ok(())
        } else {
            Err(CryptoError::BadMac)
        }
    }
}
