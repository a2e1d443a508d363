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
use tessera_protocol::messages::{CardId, IssuerId, TEST_ISSUER_ID};
use tessera_protocol::MAC_LEN;

/// A decision only the issuer may take, as its MAC binds it (spec §5.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssuerDecision<'a> {
    /// ACKNOWLEDGE SETTLEMENT: every transaction up to this counter is
    /// settled.
    Settled(u32),
    /// UPDATE PROFILE: this exact signed blob (its SHA-256 is MAC'd).
    Profile(&'a [u8]),
    /// UNBLOCK with this issuer sequence.
    Unblock(u32),
    /// ISSUER ADJUST (v2.1): this adjustment sequence, kind (`05` credit,
    /// `06` debit) and points.
    Adjust {
        /// The adjustment sequence.
        seq: u32,
        /// The record kind byte: `05` credit, `06` debit.
        kind: u8,
        /// Points.
        points: u32,
    },
    /// v2.2: the answer to an authorization request (spec §4.17): the
    /// request's cryptogram, the decision (`00` approved, `01` declined)
    /// and the counter up to which the card is settled (0: none said).
    Authorization {
        /// The request cryptogram (ARQC) the answer is for.
        cryptogram: [u8; MAC_LEN],
        /// `00` approved, `01` declined.
        decision: u8,
        /// Settled up to this counter; 0 says nothing.
        settled: u32,
    },
    /// KEY UPDATE to this key version with these encrypted keys.
    KeyUpdate {
        /// The new key version.
        key_version: u8,
        /// The encrypted new keys.
        ciphertext: &'a [u8],
    },
}

/// `IMAC = CMAC(K_iss, "TI" ‖ 02 ‖ INS ‖ card id ‖ payload)[0..8]` (spec
/// §5.9), the payload being `[N]32`, `SHA-256(blob)`, `[seq]32`,
/// `[seq]32 ‖ [kind]8 ‖ [points]32`, `ARQC ‖ [decision]8 ‖ [N]32` or
/// `[v]8 ‖ ciphertext`.
pub fn issuer_mac(k_iss: &Key, card_id: &CardId, decision: IssuerDecision<'_>) -> [u8; MAC_LEN] {
    let (ins, payload): (u8, Vec<u8>) = match decision {
        IssuerDecision::Settled(n) => (0x38, n.to_be_bytes().to_vec()),
        IssuerDecision::Profile(blob) => (0xDA, crate::sign::profile_digest(blob).to_vec()),
        IssuerDecision::Unblock(seq) => (0x2C, seq.to_be_bytes().to_vec()),
        IssuerDecision::Adjust { seq, kind, points } => {
            let mut p = seq.to_be_bytes().to_vec();
            p.push(kind);
            p.extend_from_slice(&points.to_be_bytes());
            (0x36, p)
        }
        IssuerDecision::Authorization {
            cryptogram,
            decision,
            settled,
        } => {
            let mut p = cryptogram.to_vec();
            p.push(decision);
            p.extend_from_slice(&settled.to_be_bytes());
            (0x3A, p)
        }
        IssuerDecision::KeyUpdate {
            key_version,
            ciphertext,
        } => {
            let mut p = vec![key_version];
            p.extend_from_slice(ciphertext);
            (0xD8, p)
        }
    };
    let full = crate::cmac_parts(k_iss, &[b"TI", &[0x02, ins], card_id, &payload]);
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(&full[..MAC_LEN]);
    out
}

/// The test key store, embedded from `fixtures/test-keys.json`.
pub const TEST_KEYS_JSON: &str = include_str!("../../../fixtures/test-keys.json");

/// The key version of the published test keys. Production key stores
/// never use it ([`IssuerKeys::generate`] refuses it) and production
/// terminal bundles refuse it.
pub const TEST_KEY_VERSION: u8 = 1;

/// Whether an issuer id and key version are those of the published test
/// keys (either one is enough: a production store uses neither).
pub fn is_test_identity(issuer_id: &IssuerId, key_version: u8) -> bool {
    *issuer_id == TEST_ISSUER_ID || key_version == TEST_KEY_VERSION
}

/// The key that carries a card's new keys in KEY UPDATE (spec §4.15):
/// `KDF(K_iss, "tessera key update", card id ‖ [new version]8, 128)`, from
/// the card's current issuer key.
pub fn key_update_key(k_iss: &Key, card_id: &CardId, new_version: u8) -> Key {
    diversify(k_iss, labels::KEY_UPDATE, card_id, new_version)
}

/// Encrypts the new card keys for KEY UPDATE: AES-128-CBC under
/// [`key_update_key`], ISO/IEC 9797-1 method 2 padding, IV =
/// `AES(K, 80 ‖ 00^11 ‖ [new version]32)` (spec §4.15).
pub fn encrypt_new_keys(k: &Key, new_version: u8, plaintext: &[u8]) -> Vec<u8> {
    use aes::cipher::{BlockEncryptMut, KeyIvInit};
    let iv = key_update_iv(k, new_version);
    cbc::Encryptor::<aes::Aes128>::new(k.bytes().into(), &iv.into())
        .encrypt_padded_vec_mut::<cbc::cipher::block_padding::Iso7816>(plaintext)
}

/// Decrypts what [`encrypt_new_keys`] made (the card's side).
///
/// # Errors
/// [`CryptoError::BadCiphertext`] on a wrong length or padding.
pub fn decrypt_new_keys(
    k: &Key,
    new_version: u8,
    ciphertext: &[u8],
) -> Result<zeroize::Zeroizing<Vec<u8>>, CryptoError> {
    use aes::cipher::{BlockDecryptMut, KeyIvInit};
    if ciphertext.is_empty() || !ciphertext.len().is_multiple_of(16) {
        return Err(CryptoError::BadCiphertext);
    }
    let iv = key_update_iv(k, new_version);
    cbc::Decryptor::<aes::Aes128>::new(k.bytes().into(), &iv.into())
        .decrypt_padded_vec_mut::<cbc::cipher::block_padding::Iso7816>(ciphertext)
        .map(zeroize::Zeroizing::new)
        .map_err(|_| CryptoError::BadCiphertext)
}

fn key_update_iv(k: &Key, new_version: u8) -> [u8; 16] {
    let mut block = [0u8; 16];
    block[0] = 0x80;
    block[15] = new_version;
    crate::aes_block(k, block)
}

/// A KEY UPDATE the office made for one card (spec §4.15).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUpdate {
    /// The card.
    pub card_id: CardId,
    /// The command data (new version, encrypted keys, issuer MAC).
    pub command: tessera_protocol::messages::KeyUpdateCommand,
}

/// The masters of an older key version, kept after a rotation so that
/// cards not yet moved keep working and their certificates verify.
pub struct OlderMasters {
    /// Their key version.
    pub key_version: u8,
    /// Authentication master.
    pub auth_master: Key,
    /// Certificate master.
    pub cert_master: Key,
    /// Issuer master.
    pub issuer_master: Key,
}

#[derive(Deserialize, Serialize)]
struct OlderFile {
    key_version: u8,
    auth_master: String,
    cert_master: String,
    issuer_master: String,
}

#[derive(Deserialize, Serialize)]
struct KeyFile {
    issuer_id: String,
    key_version: u8,
    auth_master: String,
    cert_master: String,
    perso_master: String,
    batch_master: String,
    issuer_master: String,
    issuer_signing_key: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    older: Vec<OlderFile>,
    /// The version K_perso is diversified with (the perso master is not
    /// rotated); absent: the key version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    perso_version: Option<u8>,
}

/// A fresh 128-bit key from OS randomness.
fn fresh_key() -> Key {
    use rand_core::RngCore;
    let mut k = zeroize::Zeroizing::new([0u8; 16]);
    rand_core::OsRng.fill_bytes(k.as_mut_slice());
    Key::new(*k)
}

fn parse_issuer_id(s: &str) -> Result<IssuerId, CryptoError> {
    let mut id = [0u8; 4];
    hex::decode_to_slice(s, &mut id).map_err(|_| CryptoError::BadKey)?;
    Ok(id)
}

/// The back office's keys.
pub struct IssuerKeys {
    /// The issuer identifier cards report in SELECT.
    pub issuer_id: IssuerId,
    /// Version of the masters below.
    pub key_version: u8,
    /// Master of the cards' authentication keys.
    pub auth_master: Key,
    /// Master of the cards' certificate keys.
    pub cert_master: Key,
    /// Master of the cards' transport (personalization) keys.
    pub perso_master: Key,
    /// The version the transport keys are diversified with: the key
    /// version the store was created with. A rotation does not change the
    /// perso master, so cards manufactured before it still personalize.
    pub perso_version: u8,
    /// Master of the terminals' settlement batch keys.
    pub batch_master: Key,
    /// Master of the cards' issuer keys K_iss (v2): issuer decisions.
    /// Never leaves the back office.
    pub issuer_master: Key,
    /// The profile signing key.
    pub issuer: IssuerKey,
    /// Masters of older key versions (after [`IssuerKeys::rotate`]), oldest
    /// first.
    pub older: Vec<OlderMasters>,
}

impl IssuerKeys {
    /// Parses a key store in the JSON layout of `fixtures/test-keys.json`.
    ///
    /// # Errors
    /// [`CryptoError::BadKey`] on malformed JSON or keys.
    pub fn from_json(s: &str) -> Result<Self, CryptoError> {
        let f: KeyFile = serde_json::from_str(s).map_err(|_| CryptoError::BadKey)?;
        Ok(Self {
            issuer_id: parse_issuer_id(&f.issuer_id)?,
            key_version: f.key_version,
            auth_master: Key::from_hex(&f.auth_master)?,
            cert_master: Key::from_hex(&f.cert_master)?,
            perso_master: Key::from_hex(&f.perso_master)?,
            perso_version: f.perso_version.unwrap_or(f.key_version),
            batch_master: Key::from_hex(&f.batch_master)?,
            issuer_master: Key::from_hex(&f.issuer_master)?,
            issuer: IssuerKey::from_hex(&f.issuer_signing_key)?,
            older: f
                .older
                .iter()
                .map(|o| {
                    Ok(OlderMasters {
                        key_version: o.key_version,
                        auth_master: Key::from_hex(&o.auth_master)?,
                        cert_master: Key::from_hex(&o.cert_master)?,
                        issuer_master: Key::from_hex(&o.issuer_master)?,
                    })
                })
                .collect::<Result<_, CryptoError>>()?,
        })
    }

    /// Moves to the next key version: fresh authentication, certificate and
    /// issuer masters; the current ones are kept as an older version.
    /// Cards move at their next tap (KEY UPDATE, queued by the office);
    /// terminals need a bundle exported after the rotation.
    ///
    /// # Errors
    /// [`CryptoError::BadKey`] when the key version is exhausted (255).
    pub fn rotate(&mut self) -> Result<(), CryptoError> {
        self.rotate_to(fresh_key(), fresh_key(), fresh_key())
    }

    /// [`IssuerKeys::rotate`] with given masters (worked examples, tests).
    ///
    /// # Errors
    /// [`CryptoError::BadKey`] when the key version is exhausted (255).
    pub fn rotate_to(&mut self, auth_master: Key, cert_master: Key, issuer_master: Key) -> Result<(), CryptoError> {
        let next = self.key_version.checked_add(1).ok_or(CryptoError::BadKey)?;
        let old = OlderMasters {
            key_version: self.key_version,
            auth_master: std::mem::replace(&mut self.auth_master, auth_master),
            cert_master: std::mem::replace(&mut self.cert_master, cert_master),
            issuer_master: std::mem::replace(&mut self.issuer_master, issuer_master),
        };
        self.older.push(old);
        self.key_version = next;
        Ok(())
    }

    /// The (auth, cert, issuer) masters of a key version, current or older.
    fn masters(&self, key_version: u8) -> Option<(&Key, &Key, &Key)> {
        if key_version == self.key_version {
            return Some((&self.auth_master, &self.cert_master, &self.issuer_master));
        }
        self.older
            .iter()
            .find(|o| o.key_version == key_version)
            .map(|o| (&o.auth_master, &o.cert_master, &o.issuer_master))
    }

    /// Every key version this store holds masters of, oldest first.
    pub fn key_versions(&self) -> Vec<u8> {
        let mut v: Vec<u8> = self.older.iter().map(|o| o.key_version).collect();
        v.push(self.key_version);
        v
    }

    /// The issuer key K_iss of a card at a given key version.
    pub fn card_issuer_key_of(&self, card_id: &CardId, key_version: u8) -> Option<Key> {
        let (_, _, issuer) = self.masters(key_version)?;
        Some(diversify(issuer, labels::CARD_ISSUER, card_id, key_version))
    }

    /// The issuer MAC of a decision for a card at a given key version
    /// (`None` for a version this store does not hold).
    pub fn issuer_mac_of(
        &self,
        card_id: &CardId,
        key_version: u8,
        decision: IssuerDecision<'_>,
    ) -> Option<[u8; MAC_LEN]> {
        Some(issuer_mac(
            &self.card_issuer_key_of(card_id, key_version)?,
            card_id,
            decision,
        ))
    }

    /// The KEY UPDATE that moves a card from `from_version` to the current
    /// key version (spec §4.15): the new keys encrypted under the card's
    /// current issuer key, with its issuer MAC. `None` when the card is
    /// already current or `from_version` is unknown.
    pub fn key_update(&self, card_id: &CardId, from_version: u8) -> Option<KeyUpdate> {
        if from_version >= self.key_version {
            return None;
        }
        let k_iss = self.card_issuer_key_of(card_id, from_version)?;
        let new = tessera_protocol::messages::NewCardKeys {
            key_auth: zeroize::Zeroizing::new(*self.card_auth_key(card_id).bytes()),
            key_cert: zeroize::Zeroizing::new(*self.card_cert_key(card_id).bytes()),
            key_issuer: zeroize::Zeroizing::new(*self.card_issuer_key(card_id).bytes()),
        };
        let ciphertext = encrypt_new_keys(
            &key_update_key(&k_iss, card_id, self.key_version),
            self.key_version,
            &new.to_bytes(),
        );
        let mac = issuer_mac(
            &k_iss,
            card_id,
            IssuerDecision::KeyUpdate {
                key_version: self.key_version,
                ciphertext: &ciphertext,
            },
        );
        Some(KeyUpdate {
            card_id: *card_id,
            command: tessera_protocol::messages::KeyUpdateCommand {
                key_version: self.key_version,
                ciphertext,
                issuer_mac: mac,
            },
        })
    }

    /// Whether these are the published test keys (their issuer id or key
    /// version).
    pub fn is_test(&self) -> bool {
        is_test_identity(&self.issuer_id, self.key_version)
    }

    /// Fresh keys from OS randomness (the key ceremony), with a random
    /// issuer id that is not the test issuer's.
    ///
    /// # Errors
    /// [`CryptoError::BadKey`] for the test key version (1) or 0.
    pub fn generate(key_version: u8) -> Result<Self, CryptoError> {
        use rand_core::RngCore;
        if key_version == TEST_KEY_VERSION || key_version == 0 {
            return Err(CryptoError::BadKey);
        }
        let mut issuer_id = [0u8; 4];
        while issuer_id == [0u8; 4] || issuer_id == TEST_ISSUER_ID {
            rand_core::OsRng.fill_bytes(&mut issuer_id);
        }
        let fresh = fresh_key;
        Ok(Self {
            issuer_id,
            key_version,
            auth_master: fresh(),
            cert_master: fresh(),
            perso_master: fresh(),
            perso_version: key_version,
            batch_master: fresh(),
            issuer_master: fresh(),
            issuer: IssuerKey::generate(),
            older: Vec::new(),
        })
    }

    /// The key store as JSON (the layout [`IssuerKeys::from_json`] reads).
    /// The caller must write it where only the back office can read it.
    pub fn to_json(&self) -> zeroize::Zeroizing<String> {
        let f = KeyFile {
            issuer_id: hex::encode(self.issuer_id),
            key_version: self.key_version,
            auth_master: hex::encode(self.auth_master.bytes()),
            cert_master: hex::encode(self.cert_master.bytes()),
            perso_master: hex::encode(self.perso_master.bytes()),
            batch_master: hex::encode(self.batch_master.bytes()),
            issuer_master: hex::encode(self.issuer_master.bytes()),
            issuer_signing_key: self.issuer.to_hex().to_string(),
            older: self
                .older
                .iter()
                .map(|o| OlderFile {
                    key_version: o.key_version,
                    auth_master: hex::encode(o.auth_master.bytes()),
                    cert_master: hex::encode(o.cert_master.bytes()),
                    issuer_master: hex::encode(o.issuer_master.bytes()),
                })
                .collect(),
            perso_version: (self.perso_version != self.key_version).then_some(self.perso_version),
        };
        let out = zeroize::Zeroizing::new(serde_json::to_string_pretty(&f).unwrap_or_default());
        let KeyFile {
            auth_master,
            cert_master,
            perso_master,
            batch_master,
            issuer_master,
            issuer_signing_key,
            older,
            ..
        } = f;
        let older_secrets = older
            .into_iter()
            .flat_map(|o| [o.auth_master, o.cert_master, o.issuer_master]);
        for mut s in [
            auth_master,
            cert_master,
            perso_master,
            batch_master,
            issuer_master,
            issuer_signing_key,
        ]
        .into_iter()
        .chain(older_secrets)
        {
            zeroize::Zeroize::zeroize(&mut s);
        }
        out
    }

    /// The settlement batch key of a terminal:
    /// `KDF(batch master, "tessera terminal batch", terminal id)`.
    pub fn terminal_batch_key(&self, terminal_id: u32) -> Key {
        crate::kdf::derive_key(&self.batch_master, labels::TERMINAL_BATCH, &terminal_id.to_be_bytes())
    }

    /// Everything one terminal may hold: the terminal bundle, with how it
    /// reaches and recognizes the office (`office`).
    pub fn terminal_bundle(&self, terminal_id: u32, office: OfficeLink) -> TerminalBundle {
        TerminalBundle {
            terminal_id,
            keys: self.terminal_keys(),
            batch_key: self.terminal_batch_key(terminal_id),
            office,
            token: None,
        }
    }

    /// The bundle of a terminal whose authentication masters were loaded
    /// into a hardware token (PKCS#11) labelled `token_label`: the same as
    /// [`IssuerKeys::terminal_bundle`] but without any master, naming the
    /// token and the key versions it holds instead.
    pub fn terminal_bundle_in_token(&self, terminal_id: u32, office: OfficeLink, token_label: &str) -> TerminalBundle {
        let mut b = self.terminal_bundle(terminal_id, office);
        let key_versions = b.keys.auth_masters.keys().copied().collect();
        // Dropped here: each `Key` wipes itself.
        b.keys.auth_masters.clear();
        b.token = Some(TokenMasters {
            token_label: token_label.to_owned(),
            key_versions,
        });
        b
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
        diversify(&self.perso_master, labels::CARD_PERSO, card_id, self.perso_version)
    }

    /// The card's authentication key.
    pub fn card_auth_key(&self, card_id: &CardId) -> Key {
        diversify(&self.auth_master, labels::CARD_AUTH, card_id, self.key_version)
    }

    /// The card's certificate key.
    pub fn card_cert_key(&self, card_id: &CardId) -> Key {
        diversify(&self.cert_master, labels::CARD_CERT, card_id, self.key_version)
    }

    /// The card's issuer key K_iss (v2, spec §5.2).
    pub fn card_issuer_key(&self, card_id: &CardId) -> Key {
        diversify(&self.issuer_master, labels::CARD_ISSUER, card_id, self.key_version)
    }

    /// The issuer MAC (spec §5.9) of a decision for one card: only the back
    /// office can compute it.
    pub fn issuer_mac(&self, card_id: &CardId, decision: IssuerDecision<'_>) -> [u8; MAC_LEN] {
        issuer_mac(&self.card_issuer_key(card_id), card_id, decision)
    }

    /// A certificate verifier for the back office, every key version.
    pub fn certificate_verifier(&self) -> CertificateVerifier {
        CertificateVerifier::new(self.cert_masters())
    }

    /// The certificate masters of every key version.
    pub fn cert_masters(&self) -> Vec<(u8, Key)> {
        let mut v: Vec<(u8, Key)> = self
            .older
            .iter()
            .map(|o| (o.key_version, o.cert_master.clone()))
            .collect();
        v.push((self.key_version, self.cert_master.clone()));
        v
    }

    /// The bundle a terminal may hold: the authentication masters of every
    /// key version (cards move to a new version at their own pace).
    pub fn terminal_keys(&self) -> TerminalKeys {
        let mut auth_masters: BTreeMap<u8, Key> = self
            .older
            .iter()
            .map(|o| (o.key_version, o.auth_master.clone()))
            .collect();
        auth_masters.insert(self.key_version, self.auth_master.clone());
        TerminalKeys {
            issuer_id: self.issuer_id,
            auth_masters,
            issuer_public: self.issuer.public(),
        }
    }
}

/// What a terminal holds: authentication masters by key version and the
/// issuer public key.
pub struct TerminalKeys {
    /// The issuer whose cards these keys open.
    pub issuer_id: IssuerId,
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
    /// How the terminal recognizes the office on the network.
    pub office: OfficeLink,
    /// Where the authentication masters are when the bundle carries none
    /// (`keys.auth_masters` is then empty): a hardware token. `None`: the
    /// masters are in `keys`.
    pub token: Option<TokenMasters>,
}

/// The authentication masters of a bundle kept in a PKCS#11 token: which
/// token, and which key versions it must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenMasters {
    /// The token's label (`CKA_LABEL` of the token, as `softhsm2-util` or
    /// the vendor's tool set it).
    pub token_label: String,
    /// The key versions whose masters the token holds.
    pub key_versions: Vec<u8>,
}

/// How a terminal recognizes its office: there is no default, a bundle
/// names one or is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfficeLink {
    /// HTTPS, accepting only the office certificate whose DER encoding has
    /// this SHA-256 (the pin written by `tessera office export-terminal`).
    Pinned {
        /// SHA-256 of the office's end-entity certificate (DER).
        cert_sha256: [u8; 32],
    },
    /// Plain HTTP to a loopback address only (tests, a till on the office
    /// machine): chosen explicitly, never a fallback.
    PlainLoopback,
}

/// The bundle file format written and read.
pub const BUNDLE_FORMAT: &str = "tessera-terminal-bundle-3";

/// The format of a bundle whose masters are in a PKCS#11 token: the fields
/// of [`BUNDLE_FORMAT`] without `auth_masters`, plus `pkcs11`. A distinct
/// name, so that a till that does not know tokens refuses it instead of
/// running with no keys.
pub const TOKEN_BUNDLE_FORMAT: &str = "tessera-terminal-bundle-3-pkcs11";

#[derive(Deserialize, Serialize)]
struct TokenFile {
    token_label: String,
    key_versions: Vec<u8>,
}

#[derive(Deserialize, Serialize)]
struct BundleFile {
    format: String,
    terminal_id: u32,
    issuer_id: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    auth_masters: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pkcs11: Option<TokenFile>,
    issuer_public_key: String,
    batch_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    office_cert_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    office_plain_http_loopback: Option<bool>,
}

impl TerminalBundle {
    /// The bundle as JSON; keep it owner-readable only.
    pub fn to_json(&self) -> zeroize::Zeroizing<String> {
        let f = BundleFile {
            format: if self.token.is_some() {
                TOKEN_BUNDLE_FORMAT
            } else {
                BUNDLE_FORMAT
            }
            .into(),
            terminal_id: self.terminal_id,
            issuer_id: hex::encode(self.keys.issuer_id),
            auth_masters: self
                .keys
                .auth_masters
                .iter()
                .map(|(v, k)| (v.to_string(), hex::encode(k.bytes())))
                .collect(),
            pkcs11: self.token.as_ref().map(|t| TokenFile {
                token_label: t.token_label.clone(),
                key_versions: t.key_versions.clone(),
            }),
            issuer_public_key: self.keys.issuer_public.to_hex(),
            batch_key: hex::encode(self.batch_key.bytes()),
            office_cert_sha256: match self.office {
                OfficeLink::Pinned { cert_sha256 } => Some(hex::encode(cert_sha256)),
                OfficeLink::PlainLoopback => None,
            },
            office_plain_http_loopback: (self.office == OfficeLink::PlainLoopback).then_some(true),
        };
        zeroize::Zeroizing::new(serde_json::to_string_pretty(&f).unwrap_or_default())
    }

    /// Parses a production bundle. A bundle that carries the test issuer id
    /// or the test key version is refused: production tills never accept
    /// cards made with the published test keys.
    ///
    /// # Errors
    /// [`CryptoError::BadKey`] on anything malformed, an older format, or a
    /// test identity.
    pub fn from_json(s: &str) -> Result<Self, CryptoError> {
        let b = Self::from_json_any(s)?;
        let in_token = b.token.as_ref().map(|t| t.key_versions.as_slice()).unwrap_or_default();
        if b.keys.issuer_id == TEST_ISSUER_ID
            || b.keys.auth_masters.contains_key(&TEST_KEY_VERSION)
            || in_token.contains(&TEST_KEY_VERSION)
        {
            return Err(CryptoError::BadKey);
        }
        Ok(b)
    }

    /// Parses a bundle, test identities included (training and tests only).
    ///
    /// # Errors
    /// [`CryptoError::BadKey`] on anything malformed, an older format, or
    /// a bundle that neither pins the office certificate nor is explicitly
    /// for plain HTTP on loopback (or claims both).
    pub fn from_json_any(s: &str) -> Result<Self, CryptoError> {
        let f: BundleFile = serde_json::from_str(s).map_err(|_| CryptoError::BadKey)?;
        // A software bundle names no token; a token bundle carries no master.
        let token = match (f.format.as_str(), &f.pkcs11) {
            (BUNDLE_FORMAT, None) => None,
            (TOKEN_BUNDLE_FORMAT, Some(t)) if f.auth_masters.is_empty() && !t.token_label.is_empty() => {
                Some(TokenMasters {
                    token_label: t.token_label.clone(),
                    key_versions: t.key_versions.clone(),
                })
            }
            _ => return Err(CryptoError::BadKey),
        };
        let office = match (&f.office_cert_sha256, f.office_plain_http_loopback) {
            (Some(pin), None) => {
                let mut cert_sha256 = [0u8; 32];
                hex::decode_to_slice(pin, &mut cert_sha256).map_err(|_| CryptoError::BadKey)?;
                OfficeLink::Pinned { cert_sha256 }
            }
            (None, Some(true)) => OfficeLink::PlainLoopback,
            _ => return Err(CryptoError::BadKey),
        };
        let mut auth_masters = BTreeMap::new();
        for (v, k) in &f.auth_masters {
            auth_masters.insert(v.parse().map_err(|_| CryptoError::BadKey)?, Key::from_hex(k)?);
        }
        Ok(Self {
            terminal_id: f.terminal_id,
            keys: TerminalKeys {
                issuer_id: parse_issuer_id(&f.issuer_id)?,
                auth_masters,
                issuer_public: IssuerPublicKey::from_hex(&f.issuer_public_key)?,
            },
            batch_key: Key::from_hex(&f.batch_key)?,
            office,
            token,
        })
    }

    /// The keys for a software key module.
    ///
    /// # Errors
    /// [`CryptoError::MastersInToken`] for a bundle whose masters are in a
    /// PKCS#11 token: it must be opened with that token, never run in
    /// software with no masters.
    pub fn into_software_keys(self) -> Result<TerminalKeys, CryptoError> {
        match self.token {
            Some(t) => Err(CryptoError::MastersInToken {
                token_label: t.token_label,
            }),
            None => Ok(self.keys),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn rotation_keeps_older_versions_and_the_transport_keys() {
        let mut keys = IssuerKeys::generate(2).unwrap();
        let card = [7u8; 8];
        let perso = keys.card_perso_key(&card);
        let old_auth = keys.card_auth_key(&card);
        let old_iss = keys.card_issuer_key(&card);
        keys.rotate().unwrap();
        assert_eq!(keys.key_version, 3);
        assert_eq!(keys.key_versions(), vec![2, 3]);
        assert_eq!(
            keys.card_perso_key(&card),
            perso,
            "blank cards made before still personalize"
        );
        assert_ne!(keys.card_auth_key(&card), old_auth);
        assert_eq!(keys.card_issuer_key_of(&card, 2), Some(old_iss.clone()));
        // The store survives its file.
        let back = IssuerKeys::from_json(&keys.to_json()).unwrap();
        assert_eq!(back.key_versions(), vec![2, 3]);
        assert_eq!(back.card_perso_key(&card), perso);
        assert_eq!(back.terminal_keys().auth_masters.len(), 2);
        assert_eq!(back.cert_masters().len(), 2);
        // The KEY UPDATE decrypts, with the old issuer key, to the new keys.
        let ku = back.key_update(&card, 2).unwrap();
        assert_eq!(ku.command.key_version, 3);
        let plain = decrypt_new_keys(&key_update_key(&old_iss, &card, 3), 3, &ku.command.ciphertext).unwrap();
        let new = tessera_protocol::messages::NewCardKeys::parse(&plain).unwrap();
        assert_eq!(&*new.key_auth, back.card_auth_key(&card).bytes());
        assert_eq!(&*new.key_issuer, back.card_issuer_key(&card).bytes());
        let expected = issuer_mac(
            &old_iss,
            &card,
            IssuerDecision::KeyUpdate {
                key_version: 3,
                ciphertext: &ku.command.ciphertext,
            },
        );
        assert_eq!(ku.command.issuer_mac, expected);
        assert!(back.key_update(&card, 3).is_none(), "already current");
        assert!(back.key_update(&card, 1).is_none(), "unknown version");
    }

    #[test]
    fn production_bundles_refuse_the_test_identity() {
        let test = IssuerKeys::test().unwrap();
        assert!(test.is_test());
        let link = OfficeLink::PlainLoopback;
        assert!(TerminalBundle::from_json(&test.terminal_bundle(1, link).to_json()).is_err());
        assert!(TerminalBundle::from_json_any(&test.terminal_bundle(1, link).to_json()).is_ok());
        let prod = IssuerKeys::generate(2).unwrap();
        assert!(!prod.is_test());
        assert!(TerminalBundle::from_json(&prod.terminal_bundle(1, link).to_json()).is_ok());
        assert!(IssuerKeys::generate(1).is_err());
    }

    #[test]
    fn a_token_bundle_holds_no_master_and_is_refused_in_software() {
        let mut prod = IssuerKeys::generate(2).unwrap();
        prod.rotate().unwrap();
        let b = prod.terminal_bundle_in_token(4, OfficeLink::PlainLoopback, "till-4");
        let text = b.to_json();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["format"], TOKEN_BUNDLE_FORMAT);
        assert!(v.get("auth_masters").is_none(), "{}", &*text);
        for k in [&prod.auth_master, &prod.older[0].auth_master] {
            assert!(!text.contains(&hex::encode(k.bytes())), "a master leaked: {}", &*text);
        }
        let back = TerminalBundle::from_json(&text).unwrap();
        assert!(back.keys.auth_masters.is_empty());
        assert_eq!(
            back.token,
            Some(TokenMasters {
                token_label: "till-4".into(),
                key_versions: vec![2, 3]
            })
        );
        assert_eq!(back.batch_key, prod.terminal_batch_key(4));
        assert_eq!(
            back.into_software_keys().err(),
            Some(CryptoError::MastersInToken {
                token_label: "till-4".into()
            })
        );
        // Software bundles are unchanged and still open in software.
        let soft = prod.terminal_bundle(4, OfficeLink::PlainLoopback).to_json();
        let sv: serde_json::Value = serde_json::from_str(&soft).unwrap();
        assert_eq!(sv["format"], BUNDLE_FORMAT);
        assert!(sv.get("pkcs11").is_none());
        let keys = TerminalBundle::from_json(&soft).unwrap().into_software_keys().unwrap();
        assert_eq!(keys.auth_masters.len(), 2);
        // Mixed forms are refused: masters in a token bundle, a token in a
        // software bundle, a token bundle with no token, the test version.
        let mut m = v.clone();
        m["auth_masters"] = serde_json::json!({"2": hex::encode([1u8; 16])});
        assert!(TerminalBundle::from_json(&m.to_string()).is_err());
        let mut m = v.clone();
        m["format"] = BUNDLE_FORMAT.into();
        assert!(TerminalBundle::from_json(&m.to_string()).is_err());
        let mut m = v.clone();
        m.as_object_mut().unwrap().remove("pkcs11");
        assert!(TerminalBundle::from_json(&m.to_string()).is_err());
        let mut m = v.clone();
        m["pkcs11"]["key_versions"] = serde_json::json!([1, 2]);
        assert!(TerminalBundle::from_json(&m.to_string()).is_err());
        assert!(TerminalBundle::from_json_any(&m.to_string()).is_ok());
    }

    #[test]
    fn a_bundle_names_how_it_recognizes_the_office_or_is_refused() {
        let prod = IssuerKeys::generate(2).unwrap();
        let pinned = OfficeLink::Pinned { cert_sha256: [9; 32] };
        let text = prod.terminal_bundle(4, pinned).to_json();
        assert_eq!(TerminalBundle::from_json(&text).unwrap().office, pinned);
        let plain = prod.terminal_bundle(4, OfficeLink::PlainLoopback).to_json();
        assert_eq!(
            TerminalBundle::from_json(&plain).unwrap().office,
            OfficeLink::PlainLoopback
        );
        // Neither a pin nor the explicit choice: refused, as are both, a
        // short pin, and the older format.
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v.as_object_mut().unwrap().remove("office_cert_sha256");
        assert!(TerminalBundle::from_json(&v.to_string()).is_err());
        v["office_plain_http_loopback"] = false.into();
        assert!(TerminalBundle::from_json(&v.to_string()).is_err());
        v["office_plain_http_loopback"] = true.into();
        v["office_cert_sha256"] = hex::encode([9; 32]).into();
        assert!(TerminalBundle::from_json(&v.to_string()).is_err());
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["office_cert_sha256"] = "0909".into();
        assert!(TerminalBundle::from_json(&v.to_string()).is_err());
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["format"] = "tessera-terminal-bundle-2".into();
        assert!(TerminalBundle::from_json(&v.to_string()).is_err());
    }
}
