//! Cryptography of the Tessera card application (spec §5).
//!
//! * [`kdf`]: NIST SP 800-108 counter-mode KDF with AES-CMAC as PRF, and the
//!   key diversification built on it;
//! * [`channel`]: session keys, cryptograms, C-MAC/R-MAC chaining and
//!   encryption of personal data;
//! * [`cert`]: transaction certificates;
//! * [`sign`]: the issuer's ECDSA P-256 signature over customer profiles;
//! * [`keys`]: key stores, including the clearly marked test keys.
//!
//! Every key lives in a [`Key`], which wipes itself on drop.

pub mod cert;
pub mod channel;
pub mod envelope;
pub mod files;
pub mod kdf;
pub mod keys;
pub mod referral;
pub mod rng;
pub mod sign;
pub mod voice;

use aes::cipher::{BlockEncrypt, KeyInit};
use cmac::Mac;
use zeroize::Zeroizing;

/// An AES-128 key, wiped from memory when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(Zeroizing<[u8; 16]>);

impl Key {
    /// Wraps key bytes.
    pub fn new(bytes: [u8; 16]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Parses 32 hex digits.
    ///
    /// # Errors
    /// [`CryptoError::BadKey`] on anything else.
    pub fn from_hex(s: &str) -> Result<Self, CryptoError> {
        let mut out = Zeroizing::new([0u8; 16]);
        hex::decode_to_slice(s.trim(), out.as_mut_slice()).map_err(|_| CryptoError::BadKey)?;
        Ok(Self(out))
    }

    /// The key bytes. Callers must not copy them out of a zeroizing buffer.
    pub fn bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl core::fmt::Debug for Key {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Key(..)")
    }
}

/// Errors of this crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// A MAC, cryptogram or certificate did not verify.
    #[error("MAC verification failed")]
    BadMac,
    /// Ciphertext has a wrong length or wrong padding.
    #[error("decryption failed")]
    BadCiphertext,
    /// The profile signature did not verify or is not a valid encoding.
    #[error("bad signature")]
    BadSignature,
    /// Key material is malformed.
    #[error("malformed key material")]
    BadKey,
    /// The data is too short to hold the expected MAC.
    #[error("data too short for its MAC")]
    Truncated,
    /// A terminal bundle keeps its authentication masters in a PKCS#11
    /// token: open it with that token's module, not with the software key
    /// module.
    #[error("this bundle keeps its masters in the PKCS#11 token {token_label:?}: open that token's module to use it")]
    MastersInToken {
        /// The token's label.
        token_label: String,
    },
}

/// AES-CMAC (RFC 4493) of `data` under `key`.
pub fn cmac(key: &Key, data: &[u8]) -> [u8; 16] {
    // A 16-byte key is always a valid AES-128 key.
    let mut mac = <cmac::Cmac<aes::Aes128> as KeyInit>::new(key.bytes().into());
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// AES-CMAC over several parts, as if concatenated.
pub fn cmac_parts(key: &Key, parts: &[&[u8]]) -> [u8; 16] {
    let mut mac = <cmac::Cmac<aes::Aes128> as KeyInit>::new(key.bytes().into());
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Encrypts one block with AES-128 (used for IV derivation).
pub(crate) fn aes_block(key: &Key, block: [u8; 16]) -> [u8; 16] {
    let cipher = aes::Aes128::new(key.bytes().into());
    let mut b = block.into();
    cipher.encrypt_block(&mut b);
    b.into()
}

/// Constant-time comparison of two byte strings.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle_eq::ConstantTimeEq;
    a.len() == b.len() && a.ct_eq(b)
}

mod subtle_eq {
    /// Minimal constant-time equality, avoiding an extra dependency.
    pub trait ConstantTimeEq {
        fn ct_eq(&self, other: &Self) -> bool;
    }
    impl ConstantTimeEq for [u8] {
        fn ct_eq(&self, other: &Self) -> bool {
            let mut acc = 0u8;
            for (x, y) in self.iter().zip(other) {
                acc |= x ^ y;
            }
            core::hint::black_box(acc) == 0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    /// RFC 4493 §4 test vectors, byte for byte.
    #[test]
    fn rfc4493_vectors() {
        let key = Key::from_hex("2b7e151628aed2a6abf7158809cf4f3c").unwrap();
        let msg = h("6bc1bee22e409f96e93d7e117393172a ae2d8a571e03ac9c9eb76fac45af8e51 \
                     30c81c46a35ce411e5fbc1191a0a52ef f69f2445df4f9b17ad2b417be66c3710");
        let cases = [
            (0, "bb1d6929e95937287fa37d129b756746"),
            (16, "070a16b46b4d4144f79bdd9dd04a287c"),
            (40, "dfa66747de9ae63030ca32611497c827"),
            (64, "51f0bebf7e3b9d92fc49741779363cfe"),
        ];
        for (len, expected) in cases {
            assert_eq!(cmac(&key, &msg[..len]).to_vec(), h(expected), "Mlen = {len}");
        }
    }
}
