//! The issuer's signature over customer profiles (spec §7.2): ECDSA P-256
//! with SHA-256, signature encoded as `r ‖ s` (64 bytes).

use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::CryptoError;
use tessera_protocol::profile::{Profile, SignedProfile};
use tessera_protocol::ProtocolError;

/// SHA-256 of a stored profile blob: the digest SELECT reports and terminals
/// cache verified profiles by.
pub fn profile_digest(blob: &[u8]) -> [u8; 32] {
    Sha256::digest(blob).into()
}

/// The issuer's private signing key (back office only).
pub struct IssuerKey(SigningKey);

impl IssuerKey {
    /// Loads the 32-byte private scalar from hex.
    ///
    /// # Errors
    /// [`CryptoError::BadKey`] if it is not a valid P-256 scalar.
    pub fn from_hex(s: &str) -> Result<Self, CryptoError> {
        let bytes = zeroize::Zeroizing::new(hex::decode(s.trim()).map_err(|_| CryptoError::BadKey)?);
        SigningKey::from_slice(&bytes)
            .map(Self)
            .map_err(|_| CryptoError::BadKey)
    }

    /// Generates a fresh key from OS randomness.
    pub fn generate() -> Self {
        Self(SigningKey::random(&mut rand_core::OsRng))
    }

    /// The private scalar as hex (for writing a key store).
    pub fn to_hex(&self) -> zeroize::Zeroizing<String> {
        zeroize::Zeroizing::new(hex::encode(self.0.to_bytes()))
    }

    /// The matching public key.
    pub fn public(&self) -> IssuerPublicKey {
        IssuerPublicKey(*self.0.verifying_key())
    }

    /// Signs a profile. Signatures are deterministic (RFC 6979), so worked
    /// examples are reproducible.
    ///
    /// # Errors
    /// [`ProtocolError`] when the profile cannot be encoded.
    pub fn sign(&self, profile: &Profile) -> Result<SignedProfile, ProtocolError> {
        let body = profile.body_bytes()?;
        let sig: Signature = self.0.sign(&body);
        Ok(SignedProfile {
            profile: profile.clone(),
            body,
            signature: sig.to_bytes().into(),
        })
    }
}

/// The issuer's public key, held by every terminal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuerPublicKey(VerifyingKey);

impl IssuerPublicKey {
    /// Loads an SEC1-encoded point from hex.
    ///
    /// # Errors
    /// [`CryptoError::BadKey`] if it is not a point on P-256.
    pub fn from_hex(s: &str) -> Result<Self, CryptoError> {
        let bytes = hex::decode(s.trim()).map_err(|_| CryptoError::BadKey)?;
        VerifyingKey::from_sec1_bytes(&bytes)
            .map(Self)
            .map_err(|_| CryptoError::BadKey)
    }

    /// The compressed SEC1 encoding as hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.to_encoded_point(true).as_bytes())
    }

    /// Verifies the issuer signature over the profile body.
    ///
    /// # Errors
    /// [`CryptoError::BadSignature`].
    pub fn verify(&self, signed: &SignedProfile) -> Result<(), CryptoError> {
        let sig = Signature::from_slice(&signed.signature).map_err(|_| CryptoError::BadSignature)?;
        self.0.verify(&signed.body, &sig).map_err(|_| CryptoError::BadSignature)
    }
}
