//! The issuer's signature over customer profiles (spec §7.2): ECDSA P-256
//! with SHA-256, signature encoded as `r ‖ s` (64 bytes).
//!
//! # Low-s signatures
//! For every ECDSA signature `(r, s)`, `(r, n − s)` is valid too (`n` the
//! group order). Some ECDSA libraries accept only the "low-s" form
//! `s ≤ n/2` (BIP 62 normalization), so [`IssuerKey::sign`] always
//! produces it: the RFC 6979 deterministic signature, with `s` replaced by
//! `n − s` when it is high. Signing stays deterministic.
//!
//! [`IssuerPublicKey::verify`] accepts both forms, on purpose: profiles
//! signed before signatures were normalized, which issued cards hold, carry
//! high-s signatures about half the time and must keep verifying.

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
    /// examples are reproducible, and always in low-s form (`s ≤ n/2`, see
    /// the module documentation).
    ///
    /// # Errors
    /// [`ProtocolError`] when the profile cannot be encoded.
    pub fn sign(&self, profile: &Profile) -> Result<SignedProfile, ProtocolError> {
        let body = profile.body_bytes()?;
        let sig = self.sign_low_s(&body);
        Ok(SignedProfile {
            profile: profile.clone(),
            body,
            signature: sig.to_bytes().into(),
        })
    }

    /// The RFC 6979 signature over `message`, normalized to low s.
    fn sign_low_s(&self, message: &[u8]) -> Signature {
        let sig: Signature = self.0.sign(message);
        // `normalize_s` answers `Some` only when it had to change `s`.
        sig.normalize_s().unwrap_or(sig)
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

    /// Verifies the issuer signature over the profile body. Both the low-s
    /// form [`IssuerKey::sign`] produces and the high-s form of signatures
    /// made before it normalized are accepted.
    ///
    /// # Errors
    /// [`CryptoError::BadSignature`].
    pub fn verify(&self, signed: &SignedProfile) -> Result<(), CryptoError> {
        let sig = Signature::from_slice(&signed.signature).map_err(|_| CryptoError::BadSignature)?;
        self.0.verify(&signed.body, &sig).map_err(|_| CryptoError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_protocol::profile::Date;

    /// The P-256 private key of RFC 6979, appendix A.2.5.
    const RFC6979_KEY: &str = "C9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721";

    fn key() -> IssuerKey {
        IssuerKey::from_hex(RFC6979_KEY).unwrap()
    }

    fn profile(n: u16) -> Profile {
        Profile {
            card_id: [0x10, 0, 0, 0, 0, 0, 0, n as u8],
            version: n,
            name: format!("Customer {n}"),
            birth_date: Date::new(1990, 3, 14).unwrap(),
            home_city: "Nizhny Novgorod".into(),
            household: [0; 8],
            preferences: vec!["coffee".into(), "bakery".into()],
            tier: 1,
            valid_from: Date::new(2025, 1, 1).unwrap(),
            valid_until: Date::new(2027, 12, 31).unwrap(),
        }
    }

    /// `(r, n − s)`: the high-s twin of a signature (or the low-s twin of a
    /// high-s one).
    fn twin(signature: &[u8; 64]) -> [u8; 64] {
        let sig = Signature::from_slice(signature).unwrap();
        let (r, s) = sig.split_scalars();
        Signature::from_scalars(r, -s).unwrap().to_bytes().into()
    }

    fn is_low_s(signature: &[u8; 64]) -> bool {
        Signature::from_slice(signature).unwrap().normalize_s().is_none()
    }

    #[test]
    fn signatures_are_always_low_s_and_verify() {
        let key = key();
        let public = key.public();
        let mut high_before_normalizing = 0;
        for n in 0..64 {
            let signed = key.sign(&profile(n)).unwrap();
            assert!(is_low_s(&signed.signature), "profile {n}: s > n/2");
            public.verify(&signed).unwrap();
            let raw: Signature = key.0.sign(&signed.body);
            if raw.normalize_s().is_some() {
                high_before_normalizing += 1;
            }
        }
        // The raw RFC 6979 signatures are high-s about half the time, so
        // the normalization was exercised.
        assert!(high_before_normalizing > 0);
    }

    #[test]
    fn signing_stays_deterministic_rfc6979() {
        // RFC 6979 A.2.5, P-256 with SHA-256, message "sample": the raw
        // signature's s is high; the issuer signs with n − s instead.
        let key = key();
        let raw: Signature = key.0.sign(b"sample");
        assert_eq!(
            hex::encode_upper(raw.to_bytes()),
            "EFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716\
             F7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8"
        );
        assert_eq!(
            hex::encode_upper(key.sign_low_s(b"sample").to_bytes()),
            "EFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716\
             0834E36AD29A83BF2BC9385E491D6099C8FDF9D1ED67AA7EA5F51F93782857A9"
        );
        assert_eq!(key.sign(&profile(7)).unwrap(), key.sign(&profile(7)).unwrap());
    }

    #[test]
    fn high_s_signatures_from_before_still_verify() {
        let key = key();
        let public = key.public();
        for n in 0..8 {
            let mut signed = key.sign(&profile(n)).unwrap();
            signed.signature = twin(&signed.signature);
            assert!(!is_low_s(&signed.signature));
            public.verify(&signed).unwrap();
        }
    }

    #[test]
    fn wrong_signatures_are_rejected() {
        let key = key();
        let public = key.public();
        let signed = key.sign(&profile(1)).unwrap();
        let mut other_body = signed.clone();
        other_body.body = key.sign(&profile(2)).unwrap().body;
        assert!(matches!(public.verify(&other_body), Err(CryptoError::BadSignature)));
        let mut flipped = signed.clone();
        flipped.signature[63] ^= 1;
        assert!(matches!(public.verify(&flipped), Err(CryptoError::BadSignature)));
        let mut zero = signed.clone();
        zero.signature = [0; 64];
        assert!(matches!(public.verify(&zero), Err(CryptoError::BadSignature)));
        let stranger = IssuerKey::generate().public();
        assert!(matches!(stranger.verify(&signed), Err(CryptoError::BadSignature)));
    }
}
