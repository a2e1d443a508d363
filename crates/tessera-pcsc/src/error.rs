//! The crate's error type.

use std::time::Duration;

use tessera_transport::TransportError;

/// Errors of PC/SC reader discovery, card waiting and connection.
///
/// No variant carries a `pcsc` type: PC/SC failures without a dedicated
/// variant are kept as [`PcscError::Pcsc`] with the operation, the PC/SC
/// status code and its description.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PcscError {
    /// The PC/SC service (`pcscd`) is not running or cannot be reached.
    #[error("the PC/SC service (pcscd) is not running")]
    NoService,
    /// The service runs but has no reader.
    #[error("no smart-card reader is available")]
    NoReaders,
    /// No reader has the wanted name, nor contains it.
    #[error("no reader matches {wanted:?} (available: {available:?})")]
    ReaderNotFound {
        /// The name or name fragment asked for.
        wanted: String,
        /// The readers there are.
        available: Vec<String>,
    },
    /// The wanted fragment is contained in several reader names.
    #[error("{wanted:?} matches several readers: {matches:?}")]
    AmbiguousReader {
        /// The name fragment asked for.
        wanted: String,
        /// The readers containing it.
        matches: Vec<String>,
    },
    /// A reader name cannot be passed to PC/SC (it contains a NUL byte).
    #[error("invalid reader name {0:?}")]
    InvalidReaderName(String),
    /// There is no card in the reader.
    #[error("no card in reader {0:?}")]
    NoCard(String),
    /// The card left the field, was reset or lost power during the
    /// operation.
    #[error("card removed or reset")]
    CardRemoved,
    /// The awaited event did not happen in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The [`ReaderWatcher`](crate::ReaderWatcher)'s thread has ended
    /// (after its last event, [`ReaderEvent::Failed`](crate::ReaderEvent::Failed),
    /// or because it was stopped): start a new watcher.
    #[error("the reader watcher has stopped")]
    WatcherStopped,
    /// Any other PC/SC failure.
    #[error("PC/SC {operation} failed: {message} (0x{code:08X})")]
    Pcsc {
        /// The PC/SC call that failed (`SCardConnect`, ...).
        operation: &'static str,
        /// The PC/SC status code (`SCARD_E_*`, `SCARD_W_*`).
        code: u32,
        /// Its description.
        message: String,
    },
}

/// Whether anything listens on pcsc-lite's socket (`PCSCLITE_CSOCK_NAME`,
/// else pcsc-lite's default path): asked only when a call was refused as a
/// security violation, which pcsc-lite also answers when its daemon was
/// killed and its socket is half torn down.
fn daemon_listening() -> bool {
    #[cfg(unix)]
    {
        let path = std::env::var_os("PCSCLITE_CSOCK_NAME").map_or_else(
            || std::path::PathBuf::from("/run/pcscd/pcscd.comm"),
            std::path::PathBuf::from,
        );
        std::os::unix::net::UnixStream::connect(path).is_ok()
    }
    #[cfg(not(unix))]
    {
        true
    }
}

impl PcscError {
    pub(crate) fn from_pcsc(operation: &'static str, err: pcsc::Error) -> Self {
        match err {
            pcsc::Error::NoService | pcsc::Error::ServiceStopped => Self::NoService,
            // A "security violation" from a daemon nobody listens for is a
            // daemon that went away; a real refusal (a policy denying this
            // user) comes from a running one and stays what it is.
            pcsc::Error::NoAccess if !daemon_listening() => Self::NoService,
            pcsc::Error::NoReadersAvailable => Self::NoReaders,
            pcsc::Error::RemovedCard | pcsc::Error::ResetCard | pcsc::Error::UnpoweredCard => Self::CardRemoved,
            other => Self::Pcsc {
                operation,
                code: other as u32,
                message: other.to_string(),
            },
        }
    }
}

impl From<PcscError> for TransportError {
    fn from(err: PcscError) -> Self {
        match err {
            PcscError::CardRemoved | PcscError::NoCard(_) => TransportError::CardRemoved,
            PcscError::Timeout(d) => TransportError::Timeout(d),
            other => TransportError::Io(other.to_string()),
        }
    }
}
