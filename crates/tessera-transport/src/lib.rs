//! The link between a terminal and a card: bytes in, bytes out.
//!
//! This crate holds only the [`Transport`] trait and its error type, so that
//! the terminal core never names a reader technology. Implementations live
//! elsewhere: the in-process simulator (`tessera-simulator`) and PC/SC
//! readers (`tessera-pcsc`). Transports own ISO 7816 transport concerns
//! (`61xx` GET RESPONSE chaining, `6Cxx` retries, resets and re-selects);
//! callers see whole response APDUs.

use std::time::Duration;

/// Errors a transport reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The card left the field (or was never there) before the response
    /// arrived. Whether the card executed the command is unknown.
    #[error("card removed")]
    CardRemoved,
    /// No response within the allowed time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The reader or the link to it failed.
    #[error("transport I/O error: {0}")]
    Io(String),
    /// The response could not be a response APDU (for example it is shorter
    /// than a status word).
    #[error("malformed response: {0}")]
    MalformedResponse(String),
}

/// A channel to one card.
pub trait Transport {
    /// Sends one command APDU and returns the full response APDU (data
    /// followed by SW1 SW2).
    ///
    /// # Errors
    /// [`TransportError::CardRemoved`] when the card is gone, the other
    /// variants for link failures. A returned response always has at least
    /// two bytes.
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError>;
}

impl<T: Transport + ?Sized> Transport for &mut T {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
        (**self).transmit(command)
    }
}

impl<T: Transport + ?Sized> Transport for Box<T> {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
        (**self).transmit(command)
    }
}
