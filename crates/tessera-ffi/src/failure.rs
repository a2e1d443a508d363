//! Failures: a code, one line for the clerk, a machine-readable kind, and
//! whatever else the caller needs to act (the pending operation…).

use serde_json::{json, Map, Value};
use tessera_pcsc::PcscError;
use tessera_simulator::{ImageError, SimError};
use tessera_terminal::dir::DirError;
use tessera_terminal::till::TillError;
use tessera_terminal::TerminalError;
use tessera_transport::TransportError;

use crate::codes::*;

/// Why a call did not succeed.
#[derive(Debug)]
pub(crate) struct Failure {
    pub code: i32,
    pub kind: &'static str,
    pub message: String,
    pub extra: Map<String, Value>,
}

impl Failure {
    pub fn new(code: i32, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            kind,
            message: message.into(),
            extra: Map::new(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(TESSERA_INVALID_ARGUMENT, "invalid-argument", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(TESSERA_INTERNAL, "internal", message)
    }

    pub fn with(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.to_owned(), value);
        self
    }

    /// The members of an error document: `ok`, `code`, `code_name`,
    /// `error`, `kind` and the extras.
    pub fn fill(&self, doc: &mut Map<String, Value>) {
        doc.insert("ok".into(), json!(false));
        doc.insert("code".into(), json!(self.code));
        doc.insert("code_name".into(), json!(code_name(self.code)));
        doc.insert("error".into(), json!(self.message));
        doc.insert("kind".into(), json!(self.kind));
        for (k, v) in &self.extra {
            doc.insert(k.clone(), v.clone());
        }
    }

    /// The error document alone.
    pub fn to_json(&self) -> Value {
        let mut doc = Map::new();
        doc.insert("v".into(), json!(TESSERA_JSON_VERSION));
        self.fill(&mut doc);
        Value::Object(doc)
    }
}

impl From<TransportError> for Failure {
    fn from(e: TransportError) -> Self {
        match e {
            TransportError::CardRemoved => {
                Self::new(TESSERA_CARD_REMOVED, "card-removed", "card removed — please tap again")
            }
            TransportError::Timeout(_) => Self::new(
                TESSERA_CARD_REMOVED,
                "timeout",
                format!("the card did not answer ({e}) — please tap again"),
            ),
            other => Self::new(TESSERA_READER_ERROR, "reader", format!("card reader problem: {other}")),
        }
    }
}

impl From<TerminalError> for Failure {
    fn from(e: TerminalError) -> Self {
        use TerminalError as E;
        let msg = e.to_string();
        let (code, kind) = match &e {
            E::Transport(_) => {
                let E::Transport(t) = e else {
                    return Self::internal("unreachable");
                };
                return Self::from(t);
            }
            E::Interrupted(p) => {
                return Self::new(
                    TESSERA_INTERRUPTED,
                    "interrupted",
                    format!(
                        "card removed during the {} — tap the same card again to find out whether it went through",
                        p.kind.name()
                    ),
                )
                .with(
                    "pending",
                    json!({
                        "card_id": hex::encode_upper(p.card_id),
                        "type": p.kind.name(),
                        "points": p.amount,
                        "expected_card_counter": p.expected_counter,
                        "terminal_id": p.terminal_id,
                        "decision_seq": p.terminal_seq,
                    }),
                );
            }
            E::NotTessera => (TESSERA_CARD_ERROR, "not-tessera"),
            E::CardBlocked => (TESSERA_DECLINED, "card-blocked"),
            E::NotPersonalized => (TESSERA_CARD_ERROR, "not-personalized"),
            E::AlreadyPersonalized => (TESSERA_DECLINED, "already-personalized"),
            E::UnknownKeyVersion(_) => (TESSERA_CARD_ERROR, "unknown-key-version"),
            E::NotSetUpForCard { .. } => (TESSERA_CARD_ERROR, "not-set-up-for-card"),
            E::NeedsReissue => (TESSERA_CARD_ERROR, "needs-reissue"),
            E::SelectTampered => (TESSERA_CARD_ERROR, "select-tampered"),
            E::AuthRefused { .. } => (TESSERA_CARD_ERROR, "auth-refused"),
            E::AuthBlocked => (TESSERA_DECLINED, "auth-blocked"),
            E::NotGenuine => (TESSERA_CARD_ERROR, "not-genuine"),
            E::BadProfileSignature | E::ProfileCardMismatch => (TESSERA_CARD_ERROR, "profile-not-genuine"),
            E::InsufficientBalance { .. } => (TESSERA_DECLINED, "insufficient-balance"),
            E::AboveCap => (TESSERA_DECLINED, "above-cap"),
            E::BalanceOverflow => (TESSERA_DECLINED, "balance-overflow"),
            E::CounterExhausted => (TESSERA_DECLINED, "counter-exhausted"),
            E::RefundOutsideLog => (TESSERA_REFERRED, "refund-outside-log"),
            E::RefundKindMismatch => (TESSERA_DECLINED, "refund-kind-mismatch"),
            E::RefundExceedsOriginal => (TESSERA_DECLINED, "refund-exceeds-original"),
            E::Unanswered { .. } => (TESSERA_CARD_ERROR, "unanswered"),
            E::InvalidRequest(_) => (TESSERA_INVALID_ARGUMENT, "invalid-request"),
            E::Card { .. } => (TESSERA_CARD_ERROR, "card-status"),
            E::Malformed { .. } => (TESSERA_CARD_ERROR, "malformed"),
            _ => (TESSERA_CARD_ERROR, "card"),
        };
        Self::new(code, kind, msg)
    }
}

impl From<TillError> for Failure {
    fn from(e: TillError) -> Self {
        match e {
            TillError::Terminal(t) => Self::from(t),
            TillError::Journal(j) => Self::new(TESSERA_IO, "journal", format!("journal: {j}")),
            TillError::Hotlisted => Self::new(
                TESSERA_DECLINED,
                "hotlisted",
                "card blocked — please keep the card and call the office",
            )
            .with("reason", json!("D01")),
            other => Self::new(TESSERA_CARD_ERROR, "till", other.to_string()),
        }
    }
}

impl From<DirError> for Failure {
    fn from(e: DirError) -> Self {
        let kind = match &e {
            DirError::Journal(_) => "journal",
            DirError::OtherTerminal { .. } => "other-terminal",
            DirError::Unsigned { .. } | DirError::Refused { .. } => "refused-file",
            _ => "file",
        };
        Self::new(TESSERA_IO, kind, e.to_string())
    }
}

impl From<SimError> for Failure {
    fn from(e: SimError) -> Self {
        match e {
            SimError::Image(ImageError::Io { path, source }) => Self::new(
                TESSERA_IO,
                "card-image",
                format!("card file {}: {source}", path.display()),
            ),
            other => Self::new(TESSERA_IO, "card-image", format!("card file unusable: {other}")),
        }
    }
}

impl From<PcscError> for Failure {
    fn from(e: PcscError) -> Self {
        use PcscError as P;
        let (code, kind) = match &e {
            P::ReaderNotFound { .. } | P::AmbiguousReader { .. } | P::InvalidReaderName(_) => {
                (TESSERA_INVALID_ARGUMENT, "reader-name")
            }
            P::NoCard(_) | P::CardRemoved => (TESSERA_CARD_REMOVED, "card-removed"),
            P::Timeout(_) => (TESSERA_CARD_REMOVED, "timeout"),
            P::NoService => (TESSERA_READER_ERROR, "no-pcsc-service"),
            _ => (TESSERA_READER_ERROR, "pcsc"),
        };
        Self::new(code, kind, format!("card reader: {e}"))
    }
}
