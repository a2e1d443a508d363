//! Online authorization on the wire (`POST /v1/authorize`,
//! `docs/settlement.md`, "Online authorization").
//!
//! The till sends the card's request (applet-spec §4.17, the 49 bytes of
//! `DF0A`) with the card's id and key version as [`AuthorizeRequest`],
//! authenticated like a sync acknowledgement: query `terminal`, `nonce`,
//! `time`, `mac` = [`request_mac`] under its batch key, over the body. The
//! office answers [`AuthorizeAnswer`]: its decision, the card's answer (the
//! 13 bytes of `DF0B`, which only the office can make and the card checks)
//! and a MAC under the same batch key over the answer and the request's
//! nonce ([`answer_mac`]), so a till never acts on a decline or a reason
//! the office did not give.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tessera_crypto::{cmac, Key};
use tessera_protocol::messages::{AuthorizationRequest, AuthorizationResponse, CardId};

/// The `format` of both bodies.
pub const AUTHORIZE_FORMAT: &str = "tessera-authorize-1";

/// Largest request body the office reads.
pub const MAX_AUTHORIZE_BYTES: usize = 4096;

/// The office's deadline for an answer, in milliseconds: a request it cannot
/// decide within it (its books busy) is answered `503` with `Retry-After`.
/// The till's own wait is its policy's (`online.timeout_ms`).
pub const AUTHORIZE_DEADLINE_MS: u64 = 2_000;

/// What the till sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizeRequest {
    /// [`AUTHORIZE_FORMAT`].
    pub format: String,
    /// The card, 16 hex digits.
    pub card_id: String,
    /// The card's key version (as AUTHENTICATE reported it).
    pub key_version: u8,
    /// The card's request: the value of `DF0A`, 98 hex digits.
    pub request: String,
}

impl AuthorizeRequest {
    /// The body for a card's request.
    pub fn new(card_id: &CardId, key_version: u8, request: &AuthorizationRequest) -> Self {
        Self {
            format: AUTHORIZE_FORMAT.to_owned(),
            card_id: hex::encode_upper(card_id),
            key_version,
            request: hex::encode_upper(request.to_bytes()),
        }
    }

    /// The card, its key version and its request.
    ///
    /// # Errors
    /// A one-line reason for another format, a malformed card id or request.
    pub fn parse(&self) -> Result<(CardId, u8, AuthorizationRequest), String> {
        if self.format != AUTHORIZE_FORMAT {
            return Err(format!("authorization request format {:?}", self.format));
        }
        let mut card = [0u8; 8];
        hex::decode_to_slice(&self.card_id, &mut card).map_err(|_| "a card id is 16 hex digits".to_owned())?;
        let raw = hex::decode(&self.request).map_err(|_| "the card's request is hex".to_owned())?;
        let request =
            AuthorizationRequest::parse(&raw).map_err(|_| "the card's request is not 49 bytes of DF0A".to_owned())?;
        Ok((card, self.key_version, request))
    }
}

/// What the office answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizeAnswer {
    /// [`AUTHORIZE_FORMAT`].
    pub format: String,
    /// The card, 16 hex digits.
    pub card_id: String,
    /// The request's cryptogram, 16 hex digits: which request this answers.
    pub cryptogram: String,
    /// Approved or declined.
    pub approved: bool,
    /// `A00`, or the decline's code (`docs/settlement.md`).
    pub code: String,
    /// One line for the clerk.
    pub message: String,
    /// With an approval: the card's transactions up to this counter are in
    /// the books (0: none said).
    pub settled: u32,
    /// The card's answer: the value of `DF0B`, 26 hex digits.
    pub response: String,
    /// [`answer_mac`], 32 hex digits.
    pub mac: String,
}

impl AuthorizeAnswer {
    /// The answer for a decision, MAC'd for the till that asked with
    /// `nonce`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        key: &Key,
        terminal_id: u32,
        nonce: &[u8],
        card_id: &CardId,
        cryptogram: &[u8; 8],
        code: &str,
        message: &str,
        response: &AuthorizationResponse,
    ) -> Self {
        let mut a = Self {
            format: AUTHORIZE_FORMAT.to_owned(),
            card_id: hex::encode_upper(card_id),
            cryptogram: hex::encode_upper(cryptogram),
            approved: response.approved,
            code: code.to_owned(),
            message: message.to_owned(),
            settled: response.settled,
            response: hex::encode_upper(response.to_bytes()),
            mac: String::new(),
        };
        a.mac = hex::encode(answer_mac(key, terminal_id, nonce, &a.mac_input()));
        a
    }

    /// The bytes [`answer_mac`] covers besides terminal and nonce:
    /// `card id ‖ cryptogram ‖ [approved]8 ‖ [len]8 ‖ code ‖ [len]16 ‖
    /// message ‖ [settled]32 ‖ response` (hex fields decoded as given,
    /// lengths in bytes).
    fn mac_input(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&hex::decode(&self.card_id).unwrap_or_default());
        out.extend_from_slice(&hex::decode(&self.cryptogram).unwrap_or_default());
        out.push(u8::from(self.approved));
        out.push(u8::try_from(self.code.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(self.code.as_bytes());
        out.extend_from_slice(&u16::try_from(self.message.len()).unwrap_or(u16::MAX).to_be_bytes());
        out.extend_from_slice(self.message.as_bytes());
        out.extend_from_slice(&self.settled.to_be_bytes());
        out.extend_from_slice(&hex::decode(&self.response).unwrap_or_default());
        out
    }

    /// Checks the answer for the request the till made (its card,
    /// cryptogram and nonce) and returns the card's answer.
    ///
    /// # Errors
    /// A one-line reason: another format, a MAC that does not verify, an
    /// answer to another request, or a response that disagrees with the
    /// decision it carries.
    pub fn check(
        &self,
        key: &Key,
        terminal_id: u32,
        nonce: &[u8],
        card_id: &CardId,
        request: &AuthorizationRequest,
    ) -> Result<AuthorizationResponse, String> {
        if self.format != AUTHORIZE_FORMAT {
            return Err(format!("authorization answer format {:?}", self.format));
        }
        let mut mac = [0u8; 16];
        hex::decode_to_slice(&self.mac, &mut mac).map_err(|_| "the answer's MAC is 32 hex digits".to_owned())?;
        if !tessera_crypto::ct_eq(&answer_mac(key, terminal_id, nonce, &self.mac_input()), &mac) {
            return Err("the answer's MAC does not verify".to_owned());
        }
        if !self.card_id.eq_ignore_ascii_case(&hex::encode(card_id))
            || !self.cryptogram.eq_ignore_ascii_case(&hex::encode(request.cryptogram))
        {
            return Err("the answer is for another request".to_owned());
        }
        let raw = hex::decode(&self.response).map_err(|_| "the card's answer is hex".to_owned())?;
        let response =
            AuthorizationResponse::parse(&raw).map_err(|_| "the card's answer is not 13 bytes of DF0B".to_owned())?;
        if response.approved != self.approved || response.settled != self.settled {
            return Err("the card's answer disagrees with the decision".to_owned());
        }
        Ok(response)
    }
}

/// The MAC on an authorization request (query `mac`), under the till's
/// batch key: `CMAC(key, "TZ" 01 ‖ [terminal]32 ‖ [time]32 ‖ SHA-256(body)
/// ‖ nonce)`.
pub fn request_mac(key: &Key, terminal_id: u32, time: u32, nonce: &[u8], body: &[u8]) -> [u8; 16] {
    let mut input = b"TZ\x01".to_vec();
    input.extend_from_slice(&terminal_id.to_be_bytes());
    input.extend_from_slice(&time.to_be_bytes());
    input.extend_from_slice(&Sha256::digest(body));
    input.extend_from_slice(nonce);
    cmac(key, &input)
}

/// The MAC on the office's answer (field `mac`), under the till's batch
/// key: `CMAC(key, "TY" 01 ‖ [terminal]32 ‖ nonce ‖ [len]8 ‖ answer bytes)`,
/// the nonce being the request's.
pub fn answer_mac(key: &Key, terminal_id: u32, nonce: &[u8], answer: &[u8]) -> [u8; 16] {
    let mut input = b"TY\x01".to_vec();
    input.extend_from_slice(&terminal_id.to_be_bytes());
    input.push(u8::try_from(nonce.len()).unwrap_or(u8::MAX));
    input.extend_from_slice(nonce);
    input.extend_from_slice(answer);
    cmac(key, &input)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_protocol::messages::{TxKind, Velocity};

    fn request() -> AuthorizationRequest {
        AuthorizationRequest {
            counter: 4,
            kind: TxKind::Redeem,
            amount: 250,
            terminal_id: 7,
            reference: 0,
            balance: 320,
            velocity: Velocity::default(),
            challenge: [9; 8],
            cryptogram: [1, 2, 3, 4, 5, 6, 7, 8],
        }
    }

    #[test]
    fn request_round_trips() {
        let r = AuthorizeRequest::new(&[0x7E; 8], 2, &request());
        let back: AuthorizeRequest = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back.parse().unwrap(), ([0x7E; 8], 2, request()));
        let mut bad = r.clone();
        bad.request.truncate(96);
        assert!(bad.parse().is_err());
    }

    #[test]
    fn an_answer_checks_for_its_request_only_and_any_change_breaks_it() {
        let key = Key::new([5; 16]);
        let response = AuthorizationResponse {
            approved: false,
            settled: 0,
            issuer_mac: [3; 8],
        };
        let a = AuthorizeAnswer::new(
            &key,
            7,
            b"nonce",
            &[0x7E; 8],
            &[1, 2, 3, 4, 5, 6, 7, 8],
            "D01",
            "blocked",
            &response,
        );
        assert_eq!(a.check(&key, 7, b"nonce", &[0x7E; 8], &request()).unwrap(), response);
        // Another nonce (a replayed answer), another till, another key.
        assert!(a.check(&key, 7, b"other", &[0x7E; 8], &request()).is_err());
        assert!(a.check(&key, 8, b"nonce", &[0x7E; 8], &request()).is_err());
        assert!(a
            .check(&Key::new([6; 16]), 7, b"nonce", &[0x7E; 8], &request())
            .is_err());
        // A decline turned into an approval, or its reason changed.
        let mut flipped = a.clone();
        flipped.approved = true;
        assert!(flipped.check(&key, 7, b"nonce", &[0x7E; 8], &request()).is_err());
        let mut reason = a.clone();
        reason.code = "O08".into();
        assert!(reason.check(&key, 7, b"nonce", &[0x7E; 8], &request()).is_err());
        // Another card's request.
        assert!(a.check(&key, 7, b"nonce", &[0x7F; 8], &request()).is_err());
    }
}
