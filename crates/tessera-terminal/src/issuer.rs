//! Personalization of blank cards (spec §4.7, §5.8): the issuer side.

use tessera_crypto::channel::{SecureChannel, SessionKeys};
use tessera_crypto::keys::IssuerKeys;
use tessera_protocol::apdu::Command;
use tessera_protocol::ins::{CLA_ISO, CLA_PROPRIETARY};
use tessera_protocol::messages::{Lifecycle, PersonalizeData, SelectResponse};
use tessera_protocol::profile::{Profile, SignedProfile};
use tessera_protocol::tlv::{encode, tags};
use tessera_protocol::{Ins, StatusWord, AID};
use tessera_transport::Transport;
use zeroize::Zeroizing;

use crate::{exchange, AuditTrace, TerminalError};

/// Card parameters set at personalization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IssueParams {
    /// Largest EARN amount per transaction.
    pub earn_cap: u32,
    /// Largest REDEEM amount per transaction.
    pub redeem_cap: u32,
    /// Consecutive authentication failures before the card blocks
    /// authentication (1–15).
    pub auth_limit: u8,
}

impl Default for IssueParams {
    fn default() -> Self {
        Self {
            earn_cap: 100_000,
            redeem_cap: 100_000,
            auth_limit: 5,
        }
    }
}

/// Personalizes the blank card in `transport`: binds the profile to the
/// card's id, signs it, and writes keys, caps and profile in one PERSONALIZE.
/// Returns the signed profile as stored.
///
/// # Errors
/// [`TerminalError::AlreadyPersonalized`], [`TerminalError::InvalidRequest`]
/// for an unencodable profile or bad parameters, card and transport errors.
pub fn personalize<T: Transport>(
    transport: T,
    keys: &IssuerKeys,
    profile: Profile,
    params: &IssueParams,
) -> Result<SignedProfile, TerminalError> {
    personalize_traced(transport, keys, profile, params, &mut AuditTrace::default())
}

/// [`personalize`], recording the exchanges in `trace`.
///
/// # Errors
/// As [`personalize`].
pub fn personalize_traced<T: Transport>(
    mut transport: T,
    keys: &IssuerKeys,
    mut profile: Profile,
    params: &IssueParams,
    trace: &mut AuditTrace,
) -> Result<SignedProfile, TerminalError> {
    if !(1..=15).contains(&params.auth_limit) {
        return Err(TerminalError::InvalidRequest(
            "the authentication limit must be 1 to 15",
        ));
    }
    let cmd = Command::new(CLA_ISO, Ins::Select, 0x04, 0x00, AID.to_vec(), Some(256));
    let resp = exchange(&mut transport, trace, "SELECT", &cmd)?;
    match resp.sw {
        StatusWord::Ok => {}
        StatusWord::ApplicationBlocked => return Err(TerminalError::CardBlocked),
        StatusWord::NotFound => return Err(TerminalError::NotTessera),
        sw => return Err(TerminalError::Card { command: "SELECT", sw }),
    }
    let sel = SelectResponse::parse(&resp.data).map_err(|e| TerminalError::from(("SELECT", e)))?;
    if sel.lifecycle != Lifecycle::Personalization {
        return Err(TerminalError::AlreadyPersonalized);
    }
    profile.card_id = sel.card_id;
    let signed = keys
        .issuer
        .sign(&profile)
        .map_err(|_| TerminalError::InvalidRequest("profile cannot be encoded"))?;
    let blob = signed.to_bytes();
    write_personalization(&mut transport, keys, &sel, blob, params, trace)?;
    Ok(signed)
}

/// Writes an already signed profile blob to the blank card in `transport`,
/// without checking it: the back office's low-level path (and the way tests
/// build cards whose profile must be refused by terminals).
///
/// # Errors
/// As [`personalize`].
pub fn personalize_blob<T: Transport>(
    mut transport: T,
    keys: &IssuerKeys,
    blob: Vec<u8>,
    params: &IssueParams,
) -> Result<(), TerminalError> {
    let trace = &mut AuditTrace::default();
    let cmd = Command::new(CLA_ISO, Ins::Select, 0x04, 0x00, AID.to_vec(), Some(256));
    let resp = exchange(&mut transport, trace, "SELECT", &cmd)?;
    if resp.sw != StatusWord::Ok {
        return Err(TerminalError::Card {
            command: "SELECT",
            sw: resp.sw,
        });
    }
    let sel = SelectResponse::parse(&resp.data).map_err(|e| TerminalError::from(("SELECT", e)))?;
    if sel.lifecycle != Lifecycle::Personalization {
        return Err(TerminalError::AlreadyPersonalized);
    }
    write_personalization(&mut transport, keys, &sel, blob, params, trace)
}

fn write_personalization<T: Transport>(
    transport: &mut T,
    keys: &IssuerKeys,
    sel: &SelectResponse,
    profile: Vec<u8>,
    params: &IssueParams,
    trace: &mut AuditTrace,
) -> Result<(), TerminalError> {
    let data = PersonalizeData {
        key_version: keys.key_version,
        key_auth: Zeroizing::new(*keys.card_auth_key(&sel.card_id).bytes()),
        key_cert: Zeroizing::new(*keys.card_cert_key(&sel.card_id).bytes()),
        key_issuer: Zeroizing::new(*keys.card_issuer_key(&sel.card_id).bytes()),
        issuer_id: keys.issuer_id,
        earn_cap: params.earn_cap,
        redeem_cap: params.redeem_cap,
        auth_limit: params.auth_limit,
        profile,
    };
    if data.profile.len() > tessera_protocol::profile::MAX_PROFILE_BLOB {
        return Err(TerminalError::InvalidRequest("profile too large for the card"));
    }
    let k_perso = keys.card_perso_key(&sel.card_id);
    let mut channel = SecureChannel::new_personalization(SessionKeys::personalization(
        &k_perso,
        &sel.card_id,
        &sel.card_challenge,
    ));
    let ct = channel.encrypt(&data.to_bytes());
    let cmd = channel.protect_command(
        CLA_PROPRIETARY,
        Ins::Personalize.into(),
        0,
        0,
        &encode(tags::ENCRYPTED, &ct),
        None,
    );
    let resp = exchange(transport, trace, "PERSONALIZE", &cmd)?;
    if resp.sw != StatusWord::Ok {
        return Err(TerminalError::Card {
            command: "PERSONALIZE",
            sw: resp.sw,
        });
    }
    Ok(())
}
