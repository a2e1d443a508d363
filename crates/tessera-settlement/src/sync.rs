//! The sync document and its MAC (see the crate documentation).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tessera_crypto::envelope::SyncKeys;
use tessera_crypto::{cmac, ct_eq, Key};

/// Value of the `format` field.
pub const SYNC_FORMAT: &str = "tessera-sync-3";

/// The hotlist as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncHotlist {
    /// Version (0: the empty list, never published).
    pub version: u32,
    /// Blocked cards, 16 upper-case hex digits each, sorted.
    pub cards: Vec<String>,
    /// The issuer's ECDSA P-256 signature (`r ‖ s`, hex) over
    /// `Hotlist::signed_bytes` of this list: the till keeps it as
    /// `hotlist.toml.sig` and checks its local copy at every load.
    pub signature: String,
}

/// The signed campaign file the office publishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncCampaigns {
    /// `campaigns.toml`, verbatim.
    pub toml: String,
    /// `campaigns.toml.sig`, trimmed.
    pub signature: String,
}

/// A pending profile update for a card's next tap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncProfile {
    /// The card, 16 upper-case hex digits.
    pub card_id: String,
    /// The profile version.
    pub version: u16,
    /// The signed profile blob, hex.
    pub profile: String,
    /// The issuer MAC over the blob (applet-spec §5.9), hex, by the card
    /// key version whose issuer key made it (one per version the card may
    /// hold: after a key rotation the card moves at its next tap). The card
    /// checks it; no terminal can make one.
    pub issuer_macs: BTreeMap<u8, String>,
}

/// The highest settled counter of a card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncSettled {
    /// The card, 16 upper-case hex digits.
    pub card_id: String,
    /// Transactions up to this card counter are settled.
    pub counter: u32,
    /// The issuer MAC over the counter (applet-spec §5.9), hex, by key
    /// version (as for profile updates).
    pub issuer_macs: BTreeMap<u8, String>,
}

/// An issuer UNBLOCK for a card whose authentication is blocked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncUnblock {
    /// The card, 16 upper-case hex digits.
    pub card_id: String,
    /// The issuer sequence (applet-spec §4.14).
    pub seq: u32,
    /// The issuer MAC over it, hex, by key version.
    pub issuer_macs: BTreeMap<u8, String>,
}

/// An issuer adjustment (applet-spec §4.16, v2.1): a credit or debit of
/// points the office issued for a card, with the card's adjustment
/// sequence. Served until the ledger has posted its record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncAdjustment {
    /// The card, 16 upper-case hex digits.
    pub card_id: String,
    /// The adjustment sequence (the card takes only its next one).
    pub seq: u32,
    /// `"issuer-credit"` or `"issuer-debit"`.
    pub kind: String,
    /// Points, at least 1.
    pub points: u32,
    /// The issuer MAC over `[seq]32 ‖ [kind]8 ‖ [points]32`, hex, by key
    /// version (as for unblocks).
    pub issuer_macs: BTreeMap<u8, String>,
}

/// A KEY UPDATE for a card still below the office's key version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncKeyUpdate {
    /// The card, 16 upper-case hex digits.
    pub card_id: String,
    /// The key version the card moves to.
    pub key_version: u8,
    /// The new keys, encrypted for the card (applet-spec §4.15), hex.
    pub ciphertext: String,
    /// The issuer MAC, hex.
    pub issuer_mac: String,
}

/// The sync feed once opened: what the office tells one terminal. On the
/// wire it travels sealed in a [`SyncEnvelope`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncData {
    /// Always [`SYNC_FORMAT`].
    pub format: String,
    /// The terminal it is for.
    pub terminal_id: u32,
    /// The office's clock when it answered (Unix seconds).
    pub issued_at: u32,
    /// The nonce the terminal sent (hex).
    pub nonce: String,
    /// The hotlist.
    pub hotlist: SyncHotlist,
    /// The published campaign file, if any.
    pub campaigns: Option<SyncCampaigns>,
    /// Pending profile updates (not yet acknowledged by this terminal).
    pub profile_updates: Vec<SyncProfile>,
    /// Settled card counters.
    pub settled: Vec<SyncSettled>,
    /// Queued unblocks (not yet acknowledged by this terminal).
    pub unblocks: Vec<SyncUnblock>,
    /// Key updates for cards below the office's key version (not yet
    /// acknowledged by this terminal).
    pub key_updates: Vec<SyncKeyUpdate>,
    /// Issuer adjustments whose record the office has not posted yet (every
    /// terminal gets all of them at every sync; the till replaces its copy).
    pub adjustments: Vec<SyncAdjustment>,
}

/// The encrypted part of the feed: its plaintext is the compact JSON of
/// this object, fields in this order.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SyncPayload {
    hotlist: SyncHotlist,
    campaigns: Option<SyncCampaigns>,
    profile_updates: Vec<SyncProfile>,
    settled: Vec<SyncSettled>,
    unblocks: Vec<SyncUnblock>,
    key_updates: Vec<SyncKeyUpdate>,
    /// Absent when empty, so a feed without adjustments is the same bytes
    /// as before they existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    adjustments: Vec<SyncAdjustment>,
}

/// What `GET /v1/sync` answers: the feed encrypted for the requesting
/// terminal, then MAC'd (see the crate documentation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncEnvelope {
    /// Always [`SYNC_FORMAT`].
    pub format: String,
    /// The terminal it is for.
    pub terminal_id: u32,
    /// The office's clock when it answered (Unix seconds).
    pub issued_at: u32,
    /// The nonce the terminal sent (hex).
    pub nonce: String,
    /// The random IV, 32 hex digits.
    pub iv: String,
    /// AES-128-CBC of the payload under `K_enc`, hex.
    pub ciphertext: String,
    /// AES-CMAC under `K_mac`, hex.
    pub mac: String,
}

#[derive(Serialize)]
struct EnvelopeCanonical<'a> {
    format: &'a str,
    terminal_id: u32,
    issued_at: u32,
    nonce: &'a str,
    iv: &'a str,
    ciphertext: &'a str,
}

/// Why a sync answer was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SyncOpenError {
    /// Another format than [`SYNC_FORMAT`].
    #[error("sync format {0:?}")]
    Format(String),
    /// The MAC does not verify with this terminal's keys.
    #[error("the sync MAC does not verify")]
    BadMac,
    /// Authentic but for another terminal or request.
    #[error("the sync answer is for another request")]
    OtherRequest,
    /// Authentic but undecipherable or not the payload.
    #[error("the sync payload is malformed: {0}")]
    Malformed(String),
}

impl SyncData {
    /// Seals the feed for its terminal (office side): the payload
    /// encrypted under `K_enc` with `iv` (fresh random bytes for every
    /// answer), the envelope MAC'd under `K_mac`, both derived from the
    /// terminal's batch key ([`tessera_crypto::envelope::SyncKeys`]).
    pub fn seal(&self, batch_key: &Key, iv: [u8; 16]) -> SyncEnvelope {
        let keys = SyncKeys::derive(batch_key, self.terminal_id);
        let payload = SyncPayload {
            hotlist: self.hotlist.clone(),
            campaigns: self.campaigns.clone(),
            profile_updates: self.profile_updates.clone(),
            settled: self.settled.clone(),
            unblocks: self.unblocks.clone(),
            key_updates: self.key_updates.clone(),
            adjustments: self.adjustments.clone(),
        };
        let plaintext = zeroize::Zeroizing::new(serde_json::to_vec(&payload).unwrap_or_default());
        let mut envelope = SyncEnvelope {
            format: self.format.clone(),
            terminal_id: self.terminal_id,
            issued_at: self.issued_at,
            nonce: self.nonce.clone(),
            iv: hex::encode(iv),
            ciphertext: hex::encode(tessera_crypto::envelope::encrypt(&keys.enc, &iv, &plaintext)),
            mac: String::new(),
        };
        envelope.mac = hex::encode(cmac(&keys.mac, &envelope.mac_input()));
        envelope
    }
}

impl SyncEnvelope {
    /// The bytes the MAC covers: `"TS" 02 ‖ SHA-256(canonical envelope)`,
    /// the canonical envelope being the compact JSON of every field but
    /// `mac`, in order.
    pub fn mac_input(&self) -> Vec<u8> {
        let c = EnvelopeCanonical {
            format: &self.format,
            terminal_id: self.terminal_id,
            issued_at: self.issued_at,
            nonce: &self.nonce,
            iv: &self.iv,
            ciphertext: &self.ciphertext,
        };
        let body = serde_json::to_vec(&c).unwrap_or_default();
        let mut input = b"TS\x02".to_vec();
        input.extend_from_slice(&Sha256::digest(body));
        input
    }

    /// Opens the feed (terminal side): the format, then the MAC with the
    /// keys of `terminal_id`, then that it answers this terminal's request
    /// (`nonce`, hex), and only then decrypts.
    ///
    /// # Errors
    /// [`SyncOpenError`]: nothing of a refused answer is to be used.
    pub fn open(&self, batch_key: &Key, terminal_id: u32, nonce: &str) -> Result<SyncData, SyncOpenError> {
        if self.format != SYNC_FORMAT {
            return Err(SyncOpenError::Format(self.format.clone()));
        }
        let keys = SyncKeys::derive(batch_key, terminal_id);
        let expected = cmac(&keys.mac, &self.mac_input());
        if !hex::decode(&self.mac).is_ok_and(|m| ct_eq(&m, &expected)) {
            return Err(SyncOpenError::BadMac);
        }
        if self.terminal_id != terminal_id || !self.nonce.eq_ignore_ascii_case(nonce) {
            return Err(SyncOpenError::OtherRequest);
        }
        let mut iv = [0u8; 16];
        hex::decode_to_slice(&self.iv, &mut iv).map_err(|_| SyncOpenError::Malformed("IV".into()))?;
        let ciphertext = hex::decode(&self.ciphertext).map_err(|_| SyncOpenError::Malformed("ciphertext".into()))?;
        let plaintext = tessera_crypto::envelope::decrypt(&keys.enc, &iv, &ciphertext)
            .map_err(|_| SyncOpenError::Malformed("ciphertext".into()))?;
        let p: SyncPayload = serde_json::from_slice(&plaintext).map_err(|e| SyncOpenError::Malformed(e.to_string()))?;
        Ok(SyncData {
            format: self.format.clone(),
            terminal_id: self.terminal_id,
            issued_at: self.issued_at,
            nonce: self.nonce.clone(),
            hotlist: p.hotlist,
            campaigns: p.campaigns,
            profile_updates: p.profile_updates,
            settled: p.settled,
            unblocks: p.unblocks,
            key_updates: p.key_updates,
            adjustments: p.adjustments,
        })
    }
}

/// Value of the sync acknowledgement's `format` field.
pub const SYNC_ACK_FORMAT: &str = "tessera-sync-ack-1";

/// A profile update the till wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckProfile {
    /// The card, 16 upper-case hex digits.
    pub card_id: String,
    /// The profile version written.
    pub version: u16,
}

/// An unblock the till wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckUnblock {
    /// The card, 16 upper-case hex digits.
    pub card_id: String,
    /// The issuer sequence written.
    pub seq: u32,
}

/// A key update the till wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckKeyUpdate {
    /// The card, 16 upper-case hex digits.
    pub card_id: String,
    /// The key version the update moves the card to.
    pub key_version: u8,
}

/// The body of `POST /v1/sync/ack`: what the till has written from a sync
/// feed, so the office stops serving it to this terminal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncAck {
    /// Always [`SYNC_ACK_FORMAT`].
    pub format: String,
    /// Profile updates written.
    pub profiles: Vec<AckProfile>,
    /// Unblocks written.
    pub unblocks: Vec<AckUnblock>,
    /// Key updates written.
    pub key_updates: Vec<AckKeyUpdate>,
}

impl SyncAck {
    /// What a till wrote from `data`: every profile update in `profiles`
    /// (the ones it verified and stored), every unblock and key update.
    pub fn of(data: &SyncData, profiles: &[AckProfile]) -> Self {
        Self {
            format: SYNC_ACK_FORMAT.into(),
            profiles: profiles.to_vec(),
            unblocks: data
                .unblocks
                .iter()
                .map(|u| AckUnblock {
                    card_id: u.card_id.clone(),
                    seq: u.seq,
                })
                .collect(),
            key_updates: data
                .key_updates
                .iter()
                .map(|k| AckKeyUpdate {
                    card_id: k.card_id.clone(),
                    key_version: k.key_version,
                })
                .collect(),
        }
    }

    /// Whether it lists nothing.
    pub fn is_empty(&self) -> bool {
        self.profiles.is_empty() && self.unblocks.is_empty() && self.key_updates.is_empty()
    }
}

/// The MAC of a sync acknowledgement request (query `mac`), under the
/// terminal's batch key: `CMAC(key, "TA" 01 ‖ [terminal]32 ‖ [time]32 ‖
/// SHA-256(body) ‖ nonce)` — the sync request's MAC with the body bound in.
pub fn ack_mac(key: &Key, terminal_id: u32, time: u32, nonce: &[u8], body: &[u8]) -> [u8; 16] {
    let mut input = b"TA\x01".to_vec();
    input.extend_from_slice(&terminal_id.to_be_bytes());
    input.extend_from_slice(&time.to_be_bytes());
    input.extend_from_slice(&Sha256::digest(body));
    input.extend_from_slice(nonce);
    cmac(key, &input)
}

/// How far a sync request's time may be from the office's clock.
pub const SYNC_REQUEST_WINDOW_SECS: u32 = 300;

/// The MAC a terminal puts on its sync request (query `mac`), under its
/// batch key: `CMAC(key, "TQ" 01 ‖ [terminal]32 ‖ [time]32 ‖ nonce)`, the
/// nonce being the request's 1 to 32 random bytes. The office answers only a
/// request whose MAC verifies, whose time is within
/// [`SYNC_REQUEST_WINDOW_SECS`] of its clock and whose nonce it has not seen
/// in that window.
pub fn request_mac(key: &Key, terminal_id: u32, time: u32, nonce: &[u8]) -> [u8; 16] {
    let mut input = b"TQ\x01".to_vec();
    input.extend_from_slice(&terminal_id.to_be_bytes());
    input.extend_from_slice(&time.to_be_bytes());
    input.extend_from_slice(nonce);
    cmac(key, &input)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SyncData {
        SyncData {
            format: SYNC_FORMAT.into(),
            terminal_id: 7,
            issued_at: 1_780_000_000,
            nonce: "00ff".into(),
            hotlist: SyncHotlist {
                version: 2,
                cards: vec!["1000000000000001".into()],
                signature: "cd".into(),
            },
            campaigns: Some(SyncCampaigns {
                toml: "version = 1\n# «Анна»\n".into(),
                signature: "ab".into(),
            }),
            profile_updates: vec![SyncProfile {
                card_id: "1000000000000002".into(),
                version: 2,
                profile: "00".into(),
                issuer_macs: [(2, "0102030405060708".into())].into(),
            }],
            settled: vec![SyncSettled {
                card_id: "1000000000000002".into(),
                counter: 4,
                issuer_macs: [(2, "0102030405060708".into())].into(),
            }],
            unblocks: vec![SyncUnblock {
                card_id: "1000000000000003".into(),
                seq: 1,
                issuer_macs: [(2, "0102030405060708".into()), (3, "0807060504030201".into())].into(),
            }],
            key_updates: vec![SyncKeyUpdate {
                card_id: "1000000000000004".into(),
                key_version: 3,
                ciphertext: "00".repeat(64),
                issuer_mac: "0102030405060708".into(),
            }],
            adjustments: vec![SyncAdjustment {
                card_id: "1000000000000005".into(),
                seq: 1,
                kind: "issuer-credit".into(),
                points: 250,
                issuer_macs: [(2, "0102030405060708".into())].into(),
            }],
        }
    }

    /// A feed without adjustments is the payload of before they existed
    /// (tills of that time open it), and one with them round-trips.
    #[test]
    fn adjustments_are_absent_from_a_feed_without_any() {
        let mut s = sample();
        s.adjustments.clear();
        let p = SyncPayload {
            hotlist: s.hotlist.clone(),
            campaigns: s.campaigns.clone(),
            profile_updates: s.profile_updates.clone(),
            settled: s.settled.clone(),
            unblocks: s.unblocks.clone(),
            key_updates: s.key_updates.clone(),
            adjustments: Vec::new(),
        };
        let text = serde_json::to_string(&p).unwrap();
        assert!(!text.contains("adjustments"));
        assert!(text.ends_with("]}"), "{text}");
        let key = Key::new([7; 16]);
        let full = sample();
        assert_eq!(full.seal(&key, [1; 16]).open(&key, 7, "00ff").unwrap(), full);
    }

    #[test]
    fn sealed_feed_opens_for_its_terminal_and_request_only() {
        let key = Key::new([7; 16]);
        let s = sample();
        let sealed = s.seal(&key, [5; 16]);
        let text = serde_json::to_string_pretty(&sealed).unwrap();
        assert!(!text.contains("1000000000000002"), "card ids travel encrypted");
        assert!(!text.contains("Анна"), "nothing of the payload in clear");
        let back: SyncEnvelope = serde_json::from_str(&text).unwrap();
        assert_eq!(back.open(&key, 7, "00ff").unwrap(), s);
        assert_eq!(back.open(&key, 7, "00FF").unwrap(), s);
        assert_eq!(back.open(&Key::new([8; 16]), 7, "00ff"), Err(SyncOpenError::BadMac));
        assert_eq!(back.open(&key, 8, "00ff"), Err(SyncOpenError::BadMac));
        assert_eq!(back.open(&key, 7, "00fe"), Err(SyncOpenError::OtherRequest));
        // Any change to the envelope is caught by the MAC.
        for change in [
            |e: &mut SyncEnvelope| e.nonce = "00fe".into(),
            |e: &mut SyncEnvelope| e.iv = hex::encode([6u8; 16]),
            |e: &mut SyncEnvelope| e.issued_at += 1,
            |e: &mut SyncEnvelope| {
                let mut c = hex::decode(&e.ciphertext).unwrap();
                c[0] ^= 1;
                e.ciphertext = hex::encode(c);
            },
        ] {
            let mut changed = back.clone();
            change(&mut changed);
            assert_eq!(
                changed.open(&key, 7, &changed.nonce.clone()),
                Err(SyncOpenError::BadMac)
            );
        }
        // A fresh IV gives another ciphertext of the same feed.
        assert_ne!(s.seal(&key, [6; 16]).ciphertext, sealed.ciphertext);
        let mut old = back;
        old.format = "tessera-sync-2".into();
        assert!(matches!(old.open(&key, 7, "00ff"), Err(SyncOpenError::Format(_))));
    }

    #[test]
    fn ack_mac_binds_the_body() {
        let key = Key::new([7; 16]);
        let a = ack_mac(&key, 7, 100, b"n", b"{}");
        assert_ne!(a, ack_mac(&key, 7, 100, b"n", b"{ }"));
        assert_ne!(a, ack_mac(&key, 8, 100, b"n", b"{}"));
        assert_ne!(a, ack_mac(&key, 7, 101, b"n", b"{}"));
        assert_ne!(a, ack_mac(&key, 7, 100, b"m", b"{}"));
        assert_ne!(a, request_mac(&key, 7, 100, b"n"));
    }
}
