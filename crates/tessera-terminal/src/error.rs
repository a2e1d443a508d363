//! The terminal's error type.

use tessera_protocol::messages::TxKind;
use tessera_protocol::{ProtocolError, StatusWord};
use tessera_transport::TransportError;

/// A transaction whose outcome is unknown because the card's answer was
/// lost. The next tap tells ([`crate::Session::resolve`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingTx {
    /// The card.
    pub card_id: [u8; 8],
    /// The counter the card would have given the transaction.
    pub expected_counter: u32,
    /// Earn or redeem.
    pub kind: TxKind,
    /// Points.
    pub amount: u32,
    /// This terminal's id.
    pub terminal_id: u32,
    /// This terminal's sequence number for the attempt.
    pub terminal_seq: u32,
}

/// Everything that can go wrong at the terminal.
///
/// Variants separate the card's refusals (a status word), a card or link
/// that broke the protocol (malformed or unauthenticated bytes), and misuse
/// of the API by the caller.
///
/// # What the caller does
/// * [`TerminalError::Interrupted`]: nothing to undo. Ask for the same card
///   again: the next tap learns from the card's own log whether the
///   operation happened, and a [`crate::till::Till`] journals the answer
///   (never charging twice).
/// * [`TerminalError::Transport`], [`TerminalError::Unanswered`]: nothing
///   happened; present the card again.
/// * [`TerminalError::InsufficientBalance`], [`TerminalError::AboveCap`],
///   [`TerminalError::BalanceOverflow`], the `Refund…` refusals: the card
///   refused the operation; tell the customer, nothing changed.
///   [`TerminalError::RefundOutsideLog`] needs the office.
/// * [`TerminalError::CardBlocked`], [`TerminalError::AuthBlocked`],
///   [`TerminalError::AuthRefused`], [`TerminalError::NotGenuine`],
///   [`TerminalError::SelectTampered`], the profile errors: do not serve
///   the card; keep it and call the office (a blocked authentication is
///   reopened by an issuer UNBLOCK after sync).
/// * [`TerminalError::UnknownKeyVersion`],
///   [`TerminalError::NotSetUpForCard`], [`TerminalError::KeyModule`]: the
///   till's keys are the problem, not the card: check the bundle or token,
///   sync after a key rotation.
/// * [`TerminalError::NeedsReissue`], [`TerminalError::NotTessera`],
///   [`TerminalError::NotPersonalized`], [`TerminalError::CounterExhausted`]:
///   the card cannot be used here; the office re-issues it.
/// * [`TerminalError::InvalidRequest`] and the other misuse variants: a bug
///   in the caller; nothing was sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TerminalError {
    /// The link failed (card removed, timeout, reader I/O) outside a
    /// transaction.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The card's answer to a transaction was lost: it may or may not have
    /// happened.
    #[error("card removed during {}: outcome unknown until the next tap", .0.kind.name())]
    Interrupted(Box<PendingTx>),
    /// The card is not a Tessera card (SELECT answered `6A82`).
    #[error("not a Tessera card")]
    NotTessera,
    /// The card is blocked.
    #[error("card blocked")]
    CardBlocked,
    /// The card has not been personalized.
    #[error("card not personalized")]
    NotPersonalized,
    /// The card was already personalized.
    #[error("card already personalized")]
    AlreadyPersonalized,
    /// The terminal holds no key for the card's key version.
    #[error("no terminal key for key version {0}")]
    UnknownKeyVersion(u8),
    /// The terminal's hardware key module (a PKCS#11 token) failed: it was
    /// removed, logged out or refused the operation. Nothing was sent to
    /// the card; check the module and tap again.
    #[error("the terminal's key module failed: {0}")]
    KeyModule(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The card belongs to another issuer or key version than the ones this
    /// terminal holds keys for: nothing was sent to authenticate, so no
    /// authentication try was spent. Use the right bundle, or ask the office.
    #[error("this till is not set up for this card (issuer {issuer}, key version {key_version})")]
    NotSetUpForCard {
        /// The card's issuer id, in hex (`-` when it reports none).
        issuer: String,
        /// The card's key version.
        key_version: u8,
    },
    /// The card was personalized under card application v1 (no issuer
    /// key): it cannot receive issuer decisions and must be re-issued.
    #[error("card application v1: this card must be re-issued")]
    NeedsReissue,
    /// What SELECT reported (profile digest, versions, issuer) differs from
    /// what the card authenticated: the link was tampered with. Nothing was
    /// done.
    #[error("the card's SELECT answer was altered on the way (relay?): nothing done")]
    SelectTampered,
    /// Mutual authentication failed: the card rejected our cryptogram.
    #[error("authentication refused by the card ({remaining} tries left)")]
    AuthRefused {
        /// Tries left before the card blocks authentication.
        remaining: u8,
    },
    /// The card's authentication is blocked after too many failures.
    #[error("card authentication blocked")]
    AuthBlocked,
    /// The card's cryptogram or a response MAC did not verify: the card is
    /// not genuine or the link was tampered with.
    #[error("card failed authentication (cryptogram or MAC)")]
    NotGenuine,
    /// The profile's issuer signature does not verify.
    #[error("profile signature invalid")]
    BadProfileSignature,
    /// The profile is signed for another card.
    #[error("profile belongs to another card")]
    ProfileCardMismatch,
    /// The redemption exceeds the balance.
    #[error("insufficient balance: {balance} points")]
    InsufficientBalance {
        /// The card's balance.
        balance: u32,
    },
    /// The amount exceeds the card's per-transaction cap.
    #[error("amount above the card's per-transaction cap")]
    AboveCap,
    /// The earn would overflow the balance.
    #[error("balance would overflow")]
    BalanceOverflow,
    /// The card can no longer count transactions.
    #[error("card transaction counter exhausted")]
    CounterExhausted,
    /// The card refused a refund because the original is no longer in its
    /// log (`6A88`): the back office must decide.
    #[error("the original transaction has left the card's log")]
    RefundOutsideLog,
    /// The card refused a refund: the original is of another kind (`9105`).
    #[error("the original transaction is of another kind")]
    RefundKindMismatch,
    /// The card refused a refund: it exceeds what remains refundable of the
    /// original, or the original was refunded already (`9106`).
    #[error("the original transaction was already refunded")]
    RefundExceedsOriginal,
    /// The office declined the operation online (its answer is a decline):
    /// the card was not asked.
    #[error("the office declined the operation")]
    DeclinedOnline,
    /// The card gave no usable answer to a transaction, and its
    /// authenticated state, read again in the same tap, shows it did not
    /// happen. Nothing changed; it may be tried again.
    #[error("the card did not complete {command}: nothing changed")]
    Unanswered {
        /// The command.
        command: &'static str,
    },
    /// The caller asked for something impossible (zero points, …).
    #[error("invalid request: {0}")]
    InvalidRequest(&'static str),
    /// The card answered with an unexpected status word.
    #[error("card answered {sw} to {command}")]
    Card {
        /// The command.
        command: &'static str,
        /// Its status word.
        sw: StatusWord,
    },
    /// The card's answer was malformed or inconsistent with the request.
    #[error("malformed card response to {command}: {detail}")]
    Malformed {
        /// The command.
        command: &'static str,
        /// What was wrong.
        detail: String,
    },
}

impl TerminalError {
    pub(crate) fn malformed(command: &'static str, e: impl ToString) -> Self {
        Self::Malformed {
            command,
            detail: e.to_string(),
        }
    }
}

impl From<(&'static str, ProtocolError)> for TerminalError {
    fn from((command, e): (&'static str, ProtocolError)) -> Self {
        Self::malformed(command, e)
    }
}
