//! The sync document and its MAC (see the crate documentation).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tessera_crypto::{cmac, ct_eq, Key};

/// Value of the `format` field.
pub const SYNC_FORMAT: &str = "tessera-sync-2";

/// The hotlist as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncHotlist {
    /// Version (0: the empty list, never published).
    pub version: u32,
    /// Blocked cards, 16 upper-case hex digits each, sorted.
    pub cards: Vec<String>,
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

/// What `GET /v1/sync` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncData {
    /// Always [`SYNC_FORMAT`].
    pub format: String,
    /// The terminal it is for.
    pub terminal_id: u32,
    /// The office's clock when it answered (Unix seconds).
    pub issued_at: u32,
    /// The nonce the terminal sent (hex), empty if none.
    pub nonce: String,
    /// The hotlist.
    pub hotlist: SyncHotlist,
    /// The published campaign file, if any.
    pub campaigns: Option<SyncCampaigns>,
    /// Pending profile updates.
    pub profile_updates: Vec<SyncProfile>,
    /// Settled card counters.
    pub settled: Vec<SyncSettled>,
    /// Queued unblocks.
    pub unblocks: Vec<SyncUnblock>,
    /// Key updates for cards below the office's key version.
    pub key_updates: Vec<SyncKeyUpdate>,
    /// The MAC, hex (see the crate documentation).
    #[serde(default)]
    pub mac: String,
}

#[derive(Serialize)]
struct Canonical<'a> {
    format: &'a str,
    terminal_id: u32,
    issued_at: u32,
    nonce: &'a str,
    hotlist: &'a SyncHotlist,
    campaigns: &'a Option<SyncCampaigns>,
    profile_updates: &'a [SyncProfile],
    settled: &'a [SyncSettled],
    unblocks: &'a [SyncUnblock],
    key_updates: &'a [SyncKeyUpdate],
}

impl SyncData {
    /// The bytes the MAC covers: `"TS" 01 ‖ SHA-256(canonical body)`.
    pub fn mac_input(&self) -> Vec<u8> {
        let c = Canonical {
            format: &self.format,
            terminal_id: self.terminal_id,
            issued_at: self.issued_at,
            nonce: &self.nonce,
            hotlist: &self.hotlist,
            campaigns: &self.campaigns,
            profile_updates: &self.profile_updates,
            settled: &self.settled,
            unblocks: &self.unblocks,
            key_updates: &self.key_updates,
        };
        let body = serde_json::to_vec(&c).unwrap_or_default();
        let mut input = b"TS\x01".to_vec();
        input.extend_from_slice(&Sha256::digest(body));
        input
    }

    /// Sets the MAC (office side).
    pub fn seal(&mut self, key: &Key) {
        self.mac = hex::encode(cmac(key, &self.mac_input()));
    }

    /// Checks the MAC (terminal side).
    pub fn verify(&self, key: &Key) -> bool {
        let expected = cmac(key, &self.mac_input());
        hex::decode(&self.mac).is_ok_and(|m| ct_eq(&m, &expected))
    }
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
            mac: String::new(),
        }
    }

    #[test]
    fn mac_round_trips_through_json_and_catches_changes() {
        let key = Key::new([7; 16]);
        let mut s = sample();
        s.seal(&key);
        let text = serde_json::to_string_pretty(&s).unwrap();
        let back: SyncData = serde_json::from_str(&text).unwrap();
        assert!(back.verify(&key));
        assert!(!back.verify(&Key::new([8; 16])));
        let mut changed = back.clone();
        changed.hotlist.cards.clear();
        assert!(!changed.verify(&key));
        let mut changed = back;
        changed.nonce = "00fe".into();
        assert!(!changed.verify(&key));
    }
}
