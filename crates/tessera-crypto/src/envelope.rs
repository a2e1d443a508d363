//! Encrypt-then-MAC for documents the office sends one terminal (the sync
//! feed, `docs/settlement.md`): keys derived from the terminal's batch key
//! under their own labels, AES-128-CBC with a fresh random IV and
//! ISO/IEC 9797-1 method 2 padding, then AES-CMAC over what the caller
//! binds (terminal, nonce, IV, ciphertext).

use zeroize::Zeroizing;

use crate::kdf::derive_key;
use crate::{CryptoError, Key};

/// KDF label of the sync encryption key.
pub const SYNC_ENC: &[u8] = b"tessera sync enc";
/// KDF label of the sync MAC key.
pub const SYNC_MAC: &[u8] = b"tessera sync mac";

/// The two keys of a terminal's sync feed:
/// `K_enc = KDF(batch key, "tessera sync enc", [terminal]32)` and
/// `K_mac = KDF(batch key, "tessera sync mac", [terminal]32)`. Neither is
/// the batch key itself, nor any other terminal's.
pub struct SyncKeys {
    /// Encrypts the feed.
    pub enc: Key,
    /// MACs the sealed feed.
    pub mac: Key,
}

impl SyncKeys {
    /// Derives the keys of `terminal_id` from its batch key.
    pub fn derive(batch_key: &Key, terminal_id: u32) -> Self {
        let ctx = terminal_id.to_be_bytes();
        Self {
            enc: derive_key(batch_key, SYNC_ENC, &ctx),
            mac: derive_key(batch_key, SYNC_MAC, &ctx),
        }
    }
}

/// AES-128-CBC with ISO/IEC 9797-1 method 2 padding under `key` and `iv`.
pub fn encrypt(key: &Key, iv: &[u8; 16], plaintext: &[u8]) -> Vec<u8> {
    use aes::cipher::{BlockEncryptMut, KeyIvInit};
    cbc::Encryptor::<aes::Aes128>::new(key.bytes().into(), iv.into())
        .encrypt_padded_vec_mut::<cbc::cipher::block_padding::Iso7816>(plaintext)
}

/// Decrypts what [`encrypt`] made. Check the MAC first: this is only for
/// a ciphertext already authenticated.
///
/// # Errors
/// [`CryptoError::BadCiphertext`] on a wrong length or padding.
pub fn decrypt(key: &Key, iv: &[u8; 16], ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    use aes::cipher::{BlockDecryptMut, KeyIvInit};
    if ciphertext.is_empty() || !ciphertext.len().is_multiple_of(16) {
        return Err(CryptoError::BadCiphertext);
    }
    cbc::Decryptor::<aes::Aes128>::new(key.bytes().into(), iv.into())
        .decrypt_padded_vec_mut::<cbc::cipher::block_padding::Iso7816>(ciphertext)
        .map(Zeroizing::new)
        .map_err(|_| CryptoError::BadCiphertext)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn round_trip_and_distinct_keys_per_terminal() {
        let batch = Key::new([3; 16]);
        let k7 = SyncKeys::derive(&batch, 7);
        let k8 = SyncKeys::derive(&batch, 8);
        assert_ne!(k7.enc, k8.enc);
        assert_ne!(k7.enc, k7.mac);
        assert_ne!(k7.enc, batch);
        let iv = [9u8; 16];
        let text = "«Анна Петрова», Нижний Новгород".as_bytes();
        let ct = encrypt(&k7.enc, &iv, text);
        assert_eq!(ct.len() % 16, 0);
        assert_eq!(&decrypt(&k7.enc, &iv, &ct).unwrap()[..], text);
        assert!(decrypt(&k7.enc, &iv, &ct[..ct.len() - 1]).is_err());
        assert!(decrypt(&k8.enc, &iv, &ct).map_or(true, |p| &p[..] != text));
    }
}
