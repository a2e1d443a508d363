//! The audit trace: every command and response with its duration.

use std::time::Duration;

/// One exchange with the card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEntry {
    /// What the terminal was doing ("SELECT", "EARN", …).
    pub label: &'static str,
    /// The command APDU as sent.
    pub command: Vec<u8>,
    /// The response APDU, or `None` when the transport failed.
    pub response: Option<Vec<u8>>,
    /// Time from sending to receiving.
    pub duration: Duration,
}

/// The exchanges since the trace was last taken.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditTrace {
    /// Exchanges in order.
    pub entries: Vec<TraceEntry>,
}

impl AuditTrace {
    /// Number of command APDUs sent.
    pub fn commands(&self) -> usize {
        self.entries.len()
    }

    /// The labels of the exchanges, in order ("SELECT", "AUTHENTICATE", …).
    pub fn labels(&self) -> Vec<&'static str> {
        self.entries.iter().map(|e| e.label).collect()
    }

    /// Bytes on the wire, both directions.
    pub fn bytes(&self) -> usize {
        self.entries
            .iter()
            .map(|e| e.command.len() + e.response.as_ref().map_or(0, Vec::len))
            .sum()
    }

    /// Total time spent waiting for the card.
    pub fn duration(&self) -> Duration {
        self.entries.iter().map(|e| e.duration).sum()
    }
}
