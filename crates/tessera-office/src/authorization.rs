//! The office's answer to a card's authorization request (card application
//! 2.2): one mechanism, two deliveries. [`card_answer`] makes the `DF0B`
//! the card checks from a decision of the ledger; [`decide_by_voice`]
//! decides a request read over the telephone and gives the code the clerk
//! types (`POST /v1/authorize` decides online requests with
//! `Ledger::authorize_online` and answers with [`card_answer`]).

use tessera_crypto::keys::{IssuerDecision, IssuerKeys};
use tessera_crypto::voice::{VoiceAnswer, VoiceReference};
use tessera_ledger::books::OfficeBooks;
use tessera_ledger::{LedgerError, OnlinePolicy, OnlineVerdict};
use tessera_protocol::messages::{AuthorizationResponse, CardId, TxKind};

/// The card's answer to the request with `cryptogram` of `card` at
/// `key_version`: the decision, its settled counter and the issuer MAC over
/// them (applet-spec §4.17, §5.9). `None` for a key version the office does
/// not hold.
pub fn card_answer(
    keys: &IssuerKeys,
    card: &CardId,
    key_version: u8,
    cryptogram: [u8; 8],
    verdict: &OnlineVerdict,
) -> Option<AuthorizationResponse> {
    let issuer_mac = keys.issuer_mac_of(
        card,
        key_version,
        IssuerDecision::Authorization {
            cryptogram,
            decision: u8::from(!verdict.approved),
            settled: verdict.settled,
        },
    )?;
    Some(AuthorizationResponse {
        approved: verdict.approved,
        settled: verdict.settled,
        issuer_mac,
    })
}

/// Decides a request read over the telephone
/// ([`OfficeBooks::authorize_by_voice`], on either backend)
/// and, approved, gives the answer code for the clerk.
///
/// # Errors
/// A storage error.
#[allow(clippy::too_many_arguments)]
pub fn decide_by_voice(
    ledger: &mut dyn OfficeBooks,
    keys: &IssuerKeys,
    terminal_id: u32,
    card: CardId,
    voice: &VoiceReference,
    kind: TxKind,
    points: u32,
    original: u32,
    operator: &str,
    policy: &OnlinePolicy,
    now: u32,
) -> Result<(OnlineVerdict, u32, Option<VoiceAnswer>), LedgerError> {
    let (verdict, counter, key_version) =
        ledger.authorize_by_voice(terminal_id, card, voice, kind, points, original, operator, policy, now)?;
    let answer = verdict
        .approved
        .then(|| card_answer(keys, &card, key_version, voice.cryptogram, &verdict))
        .flatten()
        .map(|a| VoiceAnswer {
            issuer_mac: a.issuer_mac,
        });
    Ok((verdict, counter, answer))
}
