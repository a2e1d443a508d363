//! Failures as one clear line and an exit code (README, "Exit codes").

use tessera_simulator::{ImageError, SimError};
use tessera_terminal::TerminalError;
use tessera_transport::TransportError;

/// Exit code: the card or the rules declined the operation.
pub const EXIT_DECLINED: u8 = 1;
/// Exit code: bad arguments.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the card could not be read or is not trustworthy.
pub const EXIT_CARD: u8 = 3;
/// Exit code: a file could not be read or written.
pub const EXIT_FILE: u8 = 4;
/// Exit code: referred — the operation needs the back office.
pub const EXIT_REFERRED: u8 = 5;
/// Exit code: nothing new was done — an earlier interrupted operation of
/// this till on this card went through (`--again` performs a new one).
pub const EXIT_ALREADY_DONE: u8 = 7;

/// What the binary reports on failure.
#[derive(Debug)]
pub struct Failure {
    /// Process exit code.
    pub code: u8,
    /// One line for the clerk.
    pub message: String,
    /// Print as JSON.
    pub json: bool,
    /// The command already printed its (JSON) answer; only the exit code is
    /// left to give.
    pub printed: bool,
}

impl Failure {
    /// A failure with a code and message.
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            json: false,
            printed: false,
        }
    }

    /// Bad arguments.
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(EXIT_USAGE, message)
    }

    /// Marks the failure as already reported on standard output.
    pub fn printed(mut self, printed: bool) -> Self {
        self.printed = printed;
        self
    }

    /// Marks the failure for JSON output.
    pub fn json(mut self, json: bool) -> Self {
        self.json = json;
        self
    }
}

impl From<SimError> for Failure {
    fn from(e: SimError) -> Self {
        match e {
            SimError::Image(ImageError::Io { path, source }) if source.kind() == std::io::ErrorKind::NotFound => {
                Self::new(EXIT_FILE, format!("card file {} not found", path.display()))
            }
            SimError::Image(ImageError::Io { path, source }) => {
                Self::new(EXIT_FILE, format!("card file {}: {source}", path.display()))
            }
            SimError::Image(e) => Self::new(EXIT_FILE, format!("card file unusable: {e}")),
            SimError::Card(e) => Self::new(EXIT_FILE, format!("card file unusable: {e}")),
            other => Self::new(EXIT_FILE, other.to_string()),
        }
    }
}

impl From<TerminalError> for Failure {
    fn from(e: TerminalError) -> Self {
        use TerminalError as E;
        let (code, msg): (u8, String) = match &e {
            E::Transport(TransportError::CardRemoved) => (EXIT_CARD, "Card removed — please tap again".into()),
            E::Transport(t) => (EXIT_CARD, format!("Card reader problem: {t}")),
            E::Interrupted(p) => (
                EXIT_CARD,
                format!(
                    "Card removed during the {} — tap the card again to find out whether it went through (terminal sequence {})",
                    p.kind.name(),
                    p.terminal_seq
                ),
            ),
            E::NotTessera => (EXIT_CARD, "This is not a Tessera loyalty card".into()),
            E::CardBlocked => (EXIT_DECLINED, "Card blocked — please keep the card and call the office".into()),
            E::NotPersonalized => (EXIT_CARD, "This card has not been issued yet".into()),
            E::AlreadyPersonalized => (EXIT_DECLINED, "This card has already been issued".into()),
            E::AuthRefused { remaining } => (
                EXIT_CARD,
                format!("Card refused this terminal's keys ({remaining} tries left) — call the office"),
            ),
            E::AuthBlocked => (EXIT_DECLINED, "Card locked after repeated failed checks — call the office".into()),
            E::NotGenuine => (EXIT_CARD, "Card failed the security check — do not accept it, call the office".into()),
            E::BadProfileSignature | E::ProfileCardMismatch => {
                (EXIT_CARD, "Customer data on the card is not genuine — call the office".into())
            }
            E::InsufficientBalance { balance } => {
                (EXIT_DECLINED, format!("Not enough points: the balance is {balance}"))
            }
            E::AboveCap => (EXIT_DECLINED, "Amount above this card's per-transaction limit".into()),
            E::BalanceOverflow => (EXIT_DECLINED, "Balance would exceed the card's maximum".into()),
            E::CounterExhausted => (EXIT_DECLINED, "This card has reached the end of its life — replace it".into()),
            E::InvalidRequest(m) => (EXIT_USAGE, (*m).to_string()),
            E::UnknownKeyVersion(v) => (EXIT_CARD, format!("This terminal has no keys for card key version {v}")),
            E::NotSetUpForCard { issuer, key_version } => (
                EXIT_CARD,
                format!(
                    "This till is not set up for this card (issuer {issuer}, key version {key_version}) — nothing was tried on the card; check the till's key bundle or call the office"
                ),
            ),
            E::NeedsReissue => (
                EXIT_CARD,
                "This card was issued under card application v1 — it must be re-issued at the office".into(),
            ),
            E::SelectTampered => (
                EXIT_CARD,
                "The card's answer was altered on the way to the reader — nothing done; do not accept the card, call the office".into(),
            ),
            E::Unanswered { .. } => (EXIT_CARD, "The card did not answer — nothing changed; tap the card again".into()),
            E::RefundKindMismatch => (EXIT_DECLINED, "The card refused the refund: the original is of another kind".into()),
            E::RefundExceedsOriginal => (
                EXIT_DECLINED,
                "The card refused the refund: the original transaction was already refunded".into(),
            ),
            E::RefundOutsideLog => (
                EXIT_REFERRED,
                "The original transaction is too old for an offline refund — call the office".into(),
            ),
            E::Card { .. } | E::Malformed { .. } => (EXIT_CARD, format!("Card error: {e}")),
            _ => (EXIT_CARD, e.to_string()),
        };
        Self::new(code, msg)
    }
}

/// Parses a number of points: a whole number from 1 to 4,294,967,295.
pub fn parse_points(s: &str) -> Result<u32, Failure> {
    let t = s.trim();
    let bad = || {
        Failure::usage(format!(
            "invalid points {s:?}: give a whole number from 1 to {}",
            u32::MAX
        ))
    };
    if t.starts_with('-') {
        return Err(Failure::usage(format!(
            "invalid points {s:?}: points cannot be negative"
        )));
    }
    let n: u64 = t.parse().map_err(|_| bad())?;
    match u32::try_from(n) {
        Ok(0) => Err(Failure::usage("invalid points \"0\": give at least 1 point")),
        Ok(n) => Ok(n),
        Err(_) => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points() {
        assert_eq!(parse_points("120").unwrap(), 120);
        assert!(parse_points("0").is_err());
        assert!(parse_points("-5").is_err());
        assert!(parse_points("4294967296").is_err());
        assert!(parse_points("99999999999999999999999").is_err());
        assert!(parse_points("1.5").is_err());
        assert!(parse_points("").is_err());
    }
}
