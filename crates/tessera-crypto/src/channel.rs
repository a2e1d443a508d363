//! Secure channel (spec §5.3–§5.6): session keys, cryptograms, C-MAC and
//! R-MAC chaining, and encryption of personal data.

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use cbc::cipher::block_padding::Iso7816;
use zeroize::Zeroizing;

use crate::kdf::{derive, derive_key, labels};
use crate::{aes_block, cmac_parts, ct_eq, CryptoError, Key};
use tessera_protocol::apdu::{Command, Response};
use tessera_protocol::messages::CardId;
use tessera_protocol::tlv::tags;
use tessera_protocol::{StatusWord, CHALLENGE_LEN, MAC_LEN};

type Challenge = [u8; CHALLENGE_LEN];

/// Length of the MAC data object `8E 08 <mac>` appended to protected data.
pub const MAC_OBJECT_LEN: usize = 2 + MAC_LEN;

/// The three session keys of one authenticated session (spec §5.3).
pub struct SessionKeys {
    enc: Key,
    mac: Key,
    rmac: Key,
    context: [u8; 2 * CHALLENGE_LEN],
}

impl SessionKeys {
    /// Derives the session keys from the card's authentication key with
    /// context `host_challenge ‖ card_challenge`.
    pub fn derive(k_auth: &Key, host_challenge: &Challenge, card_challenge: &Challenge) -> Self {
        let mut context = [0u8; 16];
        context[..8].copy_from_slice(host_challenge);
        context[8..].copy_from_slice(card_challenge);
        Self {
            enc: derive_key(k_auth, labels::S_ENC, &context),
            mac: derive_key(k_auth, labels::S_MAC, &context),
            rmac: derive_key(k_auth, labels::S_RMAC, &context),
            context,
        }
    }

    /// The card cryptogram: 64 bits of `KDF(S-MAC, "…card cryptogram", context)`.
    pub fn card_cryptogram(&self) -> [u8; MAC_LEN] {
        self.cryptogram(labels::CARD_CRYPTOGRAM)
    }

    /// The host cryptogram: 64 bits of `KDF(S-MAC, "…host cryptogram", context)`.
    pub fn host_cryptogram(&self) -> [u8; MAC_LEN] {
        self.cryptogram(labels::HOST_CRYPTOGRAM)
    }

    fn cryptogram(&self, label: &[u8]) -> [u8; MAC_LEN] {
        let v = derive(&self.mac, label, &self.context, MAC_LEN);
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&v);
        out
    }

    /// Session keys for personalization (spec §5.8): derived from the card's
    /// transport key with context `card_id ‖ card_challenge`. The R-MAC key
    /// equals the MAC key.
    pub fn personalization(k_perso: &Key, card_id: &CardId, card_challenge: &Challenge) -> Self {
        let mut context = [0u8; 16];
        context[..8].copy_from_slice(card_id);
        context[8..].copy_from_slice(card_challenge);
        let mac = derive_key(k_perso, labels::P_MAC, &context);
        Self {
            enc: derive_key(k_perso, labels::P_ENC, &context),
            rmac: mac.clone(),
            mac,
            context,
        }
    }

    /// For the spec's worked examples: the three keys as hex.
    pub fn to_hex(&self) -> [String; 3] {
        [
            hex::encode(self.enc.bytes()),
            hex::encode(self.mac.bytes()),
            hex::encode(self.rmac.bytes()),
        ]
    }
}

/// State of one secure-messaging session, the same on both sides.
pub struct SecureChannel {
    keys: SessionKeys,
    chain: Zeroizing<[u8; 16]>,
    enc_counter: u32,
}

impl SecureChannel {
    /// Opens the channel after mutual authentication. The initial MAC
    /// chaining value is `card_cryptogram ‖ host_cryptogram` (spec §5.5).
    pub fn new(keys: SessionKeys) -> Self {
        let mut chain = Zeroizing::new([0u8; 16]);
        chain[..8].copy_from_slice(&keys.card_cryptogram());
        chain[8..].copy_from_slice(&keys.host_cryptogram());
        Self {
            keys,
            chain,
            enc_counter: 0,
        }
    }

    /// Opens a personalization channel: chaining value is the personalization
    /// context `card_id ‖ card_challenge`.
    pub fn new_personalization(keys: SessionKeys) -> Self {
        let chain = Zeroizing::new(keys.context);
        Self {
            keys,
            chain,
            enc_counter: 0,
        }
    }

    fn command_mac(&self, cla: u8, ins: u8, p1: u8, p2: u8, data: &[u8]) -> [u8; 16] {
        let len = u16::try_from(data.len()).unwrap_or(u16::MAX).to_be_bytes();
        cmac_parts(
            &self.keys.mac,
            &[self.chain.as_slice(), &[cla, ins, p1, p2], &len, data],
        )
    }

    /// Terminal side: builds a command whose data is `data ‖ 8E 08 C-MAC`
    /// and advances the MAC chain.
    pub fn protect_command(&mut self, cla: u8, ins: u8, p1: u8, p2: u8, data: &[u8], le: Option<usize>) -> Command {
        let full = self.command_mac(cla, ins, p1, p2, data);
        *self.chain = full;
        let mut out = Vec::with_capacity(data.len() + MAC_OBJECT_LEN);
        out.extend_from_slice(data);
        out.extend_from_slice(&[tags::MAC as u8, MAC_LEN as u8]);
        out.extend_from_slice(&full[..MAC_LEN]);
        Command {
            cla,
            ins,
            p1,
            p2,
            data: out,
            le,
        }
    }

    /// Card side: checks the C-MAC of a protected command and returns its
    /// data without the MAC object. The chain advances only on success.
    ///
    /// # Errors
    /// [`CryptoError::Truncated`] when no MAC object ends the data,
    /// [`CryptoError::BadMac`] when it does not verify.
    pub fn verify_command(&mut self, cmd: &Command) -> Result<Vec<u8>, CryptoError> {
        let n = cmd.data.len();
        if n < MAC_OBJECT_LEN || cmd.data[n - MAC_OBJECT_LEN..n - MAC_LEN] != [tags::MAC as u8, MAC_LEN as u8] {
            return Err(CryptoError::Truncated);
        }
        let (data, mac) = cmd.data.split_at(n - MAC_LEN);
        let data = &data[..data.len() - 2];
        let full = self.command_mac(cmd.cla, cmd.ins, cmd.p1, cmd.p2, data);
        if !ct_eq(&full[..MAC_LEN], mac) {
            return Err(CryptoError::BadMac);
        }
        *self.chain = full;
        Ok(data.to_vec())
    }

    fn response_mac(&self, data: &[u8], sw: StatusWord) -> [u8; 16] {
        cmac_parts(&self.keys.rmac, &[self.chain.as_slice(), data, &sw.to_bytes()])
    }

    /// Card side: a `9000` response whose data is `data ‖ 8E 08 R-MAC`.
    /// The R-MAC covers the current chaining value, the data and the status
    /// word (spec §5.6).
    pub fn protect_response(&self, mut data: Vec<u8>) -> Response {
        let full = self.response_mac(&data, StatusWord::Ok);
        data.extend_from_slice(&[tags::MAC as u8, MAC_LEN as u8]);
        data.extend_from_slice(&full[..MAC_LEN]);
        Response::ok(data)
    }

    /// Terminal side: checks the R-MAC of a `9000` response and returns the
    /// data without the MAC object.
    ///
    /// # Errors
    /// [`CryptoError::Truncated`] or [`CryptoError::BadMac`].
    pub fn verify_response(&self, resp: &Response) -> Result<Vec<u8>, CryptoError> {
        let n = resp.data.len();
        if n < MAC_OBJECT_LEN || resp.data[n - MAC_OBJECT_LEN..n - MAC_LEN] != [tags::MAC as u8, MAC_LEN as u8] {
            return Err(CryptoError::Truncated);
        }
        let data = &resp.data[..n - MAC_OBJECT_LEN];
        let full = self.response_mac(data, resp.sw);
        if !ct_eq(&full[..MAC_LEN], &resp.data[n - MAC_LEN..]) {
            return Err(CryptoError::BadMac);
        }
        Ok(data.to_vec())
    }

    fn next_iv(&mut self) -> [u8; 16] {
        self.enc_counter = self.enc_counter.wrapping_add(1);
        let mut block = [0u8; 16];
        block[0] = 0x80;
        block[12..].copy_from_slice(&self.enc_counter.to_be_bytes());
        aes_block(&self.keys.enc, block)
    }

    /// Encrypts with AES-128-CBC under S-ENC, ISO/IEC 9797-1 padding method
    /// 2, IV = `AES(S-ENC, 80 ‖ 0¹¹ ‖ counter)` where the counter numbers the
    /// encrypted messages of the session from 1 (spec §5.4).
    pub fn encrypt(&mut self, plaintext: &[u8]) -> Vec<u8> {
        let iv = self.next_iv();
        cbc::Encryptor::<aes::Aes128>::new(self.keys.enc.bytes().into(), &iv.into())
            .encrypt_padded_vec_mut::<Iso7816>(plaintext)
    }

    /// Decrypts what [`SecureChannel::encrypt`] produced on the other side.
    ///
    /// # Errors
    /// [`CryptoError::BadCiphertext`] on a wrong length or padding.
    pub fn decrypt(&mut self, ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let iv = self.next_iv();
        if ciphertext.is_empty() || !ciphertext.len().is_multiple_of(16) {
            return Err(CryptoError::BadCiphertext);
        }
        cbc::Decryptor::<aes::Aes128>::new(self.keys.enc.bytes().into(), &iv.into())
            .decrypt_padded_vec_mut::<Iso7816>(ciphertext)
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::BadCiphertext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (SecureChannel, SecureChannel) {
        let k = Key::new([0x42; 16]);
        let a = SessionKeys::derive(&k, &[1; 8], &[2; 8]);
        let b = SessionKeys::derive(&k, &[1; 8], &[2; 8]);
        assert_eq!(a.card_cryptogram(), b.card_cryptogram());
        assert_ne!(a.card_cryptogram(), a.host_cryptogram());
        (SecureChannel::new(a), SecureChannel::new(b))
    }

    #[test]
    fn command_and_response_round_trip() {
        let (mut term, mut card) = pair();
        for i in 0..3u8 {
            let cmd = term.protect_command(0x84, 0x30, 0, 0, &[i; 5], Some(256));
            assert_eq!(card.verify_command(&cmd).unwrap(), vec![i; 5]);
            let resp = card.protect_response(vec![9, i]);
            assert_eq!(term.verify_response(&resp).unwrap(), vec![9, i]);
        }
    }

    #[test]
    fn replay_and_flip_are_refused() {
        let (mut term, mut card) = pair();
        let first = term.protect_command(0x84, 0x30, 0, 0, &[1, 2, 3], None);
        card.verify_command(&first).unwrap();
        assert_eq!(card.verify_command(&first), Err(CryptoError::BadMac));
        let second = term.protect_command(0x84, 0x30, 0, 0, &[1, 2, 3], None);
        let bytes = second.to_bytes();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            if let Ok(c) = Command::parse(&b) {
                assert!(card.verify_command(&c).is_err(), "flip at {i} accepted");
            }
        }
        assert!(card.verify_command(&second).is_ok());
    }

    #[test]
    fn encryption_round_trip() {
        let (mut term, mut card) = pair();
        let secret = "Анна Петрова".as_bytes();
        let ct = card.encrypt(secret);
        assert_eq!(ct.len() % 16, 0);
        assert!(!ct.windows(secret.len()).any(|w| w == secret));
        assert_eq!(&term.decrypt(&ct).unwrap()[..], secret);
        // The counter advanced: the same ciphertext no longer decrypts to the secret.
        assert_ne!(term.decrypt(&ct).ok().map(|p| p.to_vec()), Some(secret.to_vec()));
    }
}
