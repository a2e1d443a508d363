//! NIST SP 800-108 KDF in counter mode with AES-CMAC as PRF (spec §5.2).

use zeroize::Zeroizing;

use crate::{cmac_parts, Key};
use tessera_protocol::messages::CardId;

/// SP 800-108 §4.1 with the counter *before* the fixed input data:
/// `K(i) = CMAC(KI, [i]_r ‖ FixedInput)`, for `i = 1..`, output truncated to
/// `out_len` bytes. `r_bits` is 8, 16, 24 or 32.
///
/// This is the raw form, checked against NIST's CAVP vectors; protocol code
/// uses [`derive()`].
pub fn counter_mode(key: &Key, fixed_input: &[u8], r_bits: u32, out_len: usize) -> Zeroizing<Vec<u8>> {
    let r_bytes = (r_bits / 8).clamp(1, 4) as usize;
    let mut out = Zeroizing::new(Vec::with_capacity(out_len + 16));
    let mut i: u32 = 1;
    while out.len() < out_len {
        let ctr = i.to_be_bytes();
        let block = cmac_parts(key, &[&ctr[4 - r_bytes..], fixed_input]);
        out.extend_from_slice(&block);
        i = i.wrapping_add(1);
    }
    out.truncate(out_len);
    out
}

/// The KDF as Tessera uses it (spec §5.2): 8-bit counter before the fixed
/// input `Label ‖ 0x00 ‖ Context ‖ [L]_16`, where `L` is the output length in
/// bits.
pub fn derive(key: &Key, label: &[u8], context: &[u8], out_len: usize) -> Zeroizing<Vec<u8>> {
    let l_bits = u16::try_from(out_len * 8).unwrap_or(u16::MAX);
    let mut fixed = Zeroizing::new(Vec::with_capacity(label.len() + context.len() + 3));
    fixed.extend_from_slice(label);
    fixed.push(0x00);
    fixed.extend_from_slice(context);
    fixed.extend_from_slice(&l_bits.to_be_bytes());
    counter_mode(key, &fixed, 8, out_len)
}

/// Derives a 128-bit key.
pub fn derive_key(key: &Key, label: &[u8], context: &[u8]) -> Key {
    let v = derive(key, label, context, 16);
    let mut k = [0u8; 16];
    k.copy_from_slice(&v);
    let key = Key::new(k);
    zeroize::Zeroize::zeroize(&mut k);
    key
}

/// Labels of the key hierarchy (spec §5.2).
pub mod labels {
    /// Card authentication key from the authentication master.
    pub const CARD_AUTH: &[u8] = b"tessera card auth";
    /// Card certificate key from the certificate master.
    pub const CARD_CERT: &[u8] = b"tessera card cert";
    /// Card issuer key K_iss from the issuer master (v2).
    pub const CARD_ISSUER: &[u8] = b"tessera card issuer";
    /// Transport key of a KEY UPDATE from the card's issuer key (v2).
    pub const KEY_UPDATE: &[u8] = b"tessera key update";
    /// Card transport (personalization) key from the personalization master.
    pub const CARD_PERSO: &[u8] = b"tessera card perso";
    /// Session encryption key.
    pub const S_ENC: &[u8] = b"tessera S-ENC";
    /// Session C-MAC key.
    pub const S_MAC: &[u8] = b"tessera S-MAC";
    /// Session R-MAC key.
    pub const S_RMAC: &[u8] = b"tessera S-RMAC";
    /// Card cryptogram.
    pub const CARD_CRYPTOGRAM: &[u8] = b"tessera card cryptogram";
    /// Host cryptogram.
    pub const HOST_CRYPTOGRAM: &[u8] = b"tessera host cryptogram";
    /// A terminal's settlement batch key from the batch master.
    pub const TERMINAL_BATCH: &[u8] = b"tessera terminal batch";
    /// Personalization session encryption key.
    pub const P_ENC: &[u8] = b"tessera P-ENC";
    /// Personalization session MAC key.
    pub const P_MAC: &[u8] = b"tessera P-MAC";
}

/// Diversifies a master key for one card (spec §5.2):
/// `KDF(master, label, card_id ‖ key_version)`.
pub fn diversify(master: &Key, label: &[u8], card_id: &CardId, key_version: u8) -> Key {
    let mut ctx = [0u8; 9];
    ctx[..8].copy_from_slice(card_id);
    ctx[8] = key_version;
    derive_key(master, label, &ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NIST CAVP KDFCTR vectors, PRF = CMAC_AES128, CTRLOCATION = BEFORE_FIXED,
    /// L = 128, COUNT = 0 of each counter length.
    #[test]
    fn nist_sp800_108_cmac_aes128_counter_vectors() {
        let cases = [
            (
                8,
                "dff1e50ac0b69dc40f1051d46c2b069c",
                "c16e6e02c5a3dcc8d78b9ac1306877761310455b4e41469951d9e6c2245a064b33fd8c3b01203a7824485bf0a64060c4648b707d2607935699316ea5",
                "8be8f0869b3c0ba97b71863d1b9f7813",
            ),
            (
                16,
                "30ec5f6fa1def33cff008178c4454211",
                "c95e7b1d4f2570259abfc05bb00730f0284c3bb9a61d07259848a1cb57c81d8a6c3382c500bf801dfc8f70726b082cf4c3fa34386c1e7bf0e5471438",
                "00018fff9574994f5c4457f461c7a67e",
            ),
            (
                24,
                "ca1cf43e5ccd512cc719a2f9de41734c",
                "e3884ac963196f02ddd09fc04c20c88b60faa775b5ef6feb1faf8c5e098b5210e2b4e45d62cc0bf907fd68022ee7b15631b5c8daf903d99642c5b831",
                "1cb2b12326cc5ec1eba248167f0efd58",
            ),
            (
                32,
                "c10b152e8c97b77e18704e0f0bd38305",
                "98cd4cbbbebe15d17dc86e6dbad800a2dcbd64f7c7ad0e78e9cf94ffdba89d03e97eadf6c4f7b806caf52aa38f09d0eb71d71f497bcc6906b48d36c4",
                "26faf61908ad9ee881b8305c221db53f",
            ),
        ];
        for (r, ki, fixed, ko) in cases {
            let key = Key::from_hex(ki).unwrap();
            let out = counter_mode(&key, &hex::decode(fixed).unwrap(), r, 16);
            assert_eq!(hex::encode(&*out), ko, "r = {r}");
        }
    }

    #[test]
    fn multi_block_output_is_prefix_consistent() {
        let key = Key::new([1; 16]);
        let long = derive(&key, b"x", b"y", 40);
        assert_eq!(long.len(), 40);
        // L is bound into the fixed input, so a shorter output differs.
        assert_ne!(&derive(&key, b"x", b"y", 16)[..], &long[..16]);
    }
}
