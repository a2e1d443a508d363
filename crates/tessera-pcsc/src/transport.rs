//! [`PcscTransport`]: a [`Transport`] to the card in one PC/SC reader.

use std::ffi::CString;

use pcsc::{Card, Context, Protocols, ShareMode};
use tessera_protocol::apdu::{Command, SHORT_MAX_NE};
use tessera_protocol::ins::CLA_ISO;
use tessera_protocol::{Ins, AID};
use tessera_transport::{Transport, TransportError};

use crate::readers::{establish, find_reader, reader_cstring};
use crate::{iso7816, PcscError};

/// The transmission protocol negotiated with the card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CardProtocol {
    /// ISO/IEC 7816-3 T=0, character oriented.
    T0,
    /// ISO/IEC 7816-3 T=1, block oriented (preferred).
    T1,
    /// A raw or other protocol.
    Other,
}

/// What happens to the card when the transport lets it go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Disposition {
    /// Leave the card powered and as it is (the default, also on drop).
    #[default]
    Leave,
    /// Warm-reset the card: its volatile state (selection, secure channel)
    /// is lost.
    Reset,
    /// Power the card down.
    Unpower,
}

impl From<Disposition> for pcsc::Disposition {
    fn from(d: Disposition) -> Self {
        match d {
            Disposition::Leave => pcsc::Disposition::LeaveCard,
            Disposition::Reset => pcsc::Disposition::ResetCard,
            Disposition::Unpower => pcsc::Disposition::UnpowerCard,
        }
    }
}

/// How a PC/SC failure during an exchange affects the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The card left, was reset or lost power: connect again next time.
    Card,
    /// `pcscd` went away or restarted: new context and connection next time.
    Service,
    /// Anything else: the connection is kept.
    Other,
}

fn classify(err: pcsc::Error) -> Failure {
    use pcsc::Error as E;
    match err {
        // NotTransacted: vpcd's answer when its card vanished between the
        // connection and the command; the link is gone like a removal.
        E::RemovedCard | E::NoSmartcard | E::ResetCard | E::UnpoweredCard | E::UnresponsiveCard | E::NotTransacted => {
            Failure::Card
        }
        E::NoService | E::ServiceStopped | E::InvalidHandle | E::CommError | E::Shutdown => Failure::Service,
        _ => Failure::Other,
    }
}

/// The connection to the card in one reader, implementing [`Transport`].
///
/// Connects in shared mode, preferring T=1 and falling back to T=0. Every
/// [`transmit`](Transport::transmit) resolves `61xx` and `6Cxx` (see
/// [`iso7816::transceive`]) and passes extended-length commands through.
/// A command under secure messaging (CLA bits b4-b3 set, e.g. `84`; see
/// [`iso7816::is_secure_messaging`]) is never re-sent by the transport: its
/// `6Cxx` comes back to the caller unchanged, so a relay that rewrites a
/// status word cannot make the transport replay a MAC'd command. GET
/// RESPONSE chaining (`61xx`) applies to every command.
///
/// Failures and recovery:
/// - The card leaves, is reset or loses power (PC/SC `RemovedCard`,
///   `NoSmartcard`, `ResetCard`, `UnpoweredCard`, or a response shorter than
///   a status word, which is what vpcd yields when its card vanishes): the
///   call fails with [`TransportError::CardRemoved`] and the handle is
///   dropped; the next call connects again (a new tap).
/// - `pcscd` stops or restarts (PC/SC `NoService`, `ServiceStopped`,
///   `InvalidHandle`, `CommError`): the call fails with
///   [`TransportError::CardRemoved`] — whether the card executed the command
///   is unknown — and the next call establishes a new context and connects
///   again by reader name.
/// - A SELECT (`00 A4 04 ..`), which starts every session and changes
///   nothing, that fails with `CardRemoved` over a connection kept from
///   earlier (the card was tapped again, reset, or `pcscd` restarted while
///   the terminal was idle) is sent once more over a fresh connection, so a
///   new session starts without an error. It is the only command re-sent
///   this way; its class is `00`, without secure messaging.
/// - No card in the reader when (re)connecting: `CardRemoved`.
/// - No `pcscd` when (re)connecting, and other PC/SC failures:
///   [`TransportError::Io`].
pub struct PcscTransport {
    reader: String,
    reader_c: CString,
    context: Option<Context>,
    card: Option<Card>,
    protocol: Option<CardProtocol>,
    atr: Vec<u8>,
    buffer: Vec<u8>,
}

impl std::fmt::Debug for PcscTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcscTransport")
            .field("reader", &self.reader)
            .field("connected", &self.card.is_some())
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

impl PcscTransport {
    /// Connects to the card in the reader named exactly `reader`.
    ///
    /// # Errors
    /// [`PcscError::NoService`] without `pcscd`,
    /// [`PcscError::NoCard`] when the reader is empty,
    /// [`PcscError::ReaderNotFound`] for an unknown reader, and
    /// [`PcscError::Pcsc`] for other failures.
    pub fn connect(reader: &str) -> Result<Self, PcscError> {
        let mut transport = Self::lazy(reader)?;
        transport.ensure_connected()?;
        Ok(transport)
    }

    /// Finds the reader with [`find_reader`] (exact name, else unique
    /// fragment) and connects to its card.
    ///
    /// # Errors
    /// Those of [`find_reader`] and [`PcscTransport::connect`].
    pub fn open(wanted: &str) -> Result<Self, PcscError> {
        Self::connect(&find_reader(wanted)?)
    }

    /// A transport for the reader named exactly `reader` that connects on
    /// its first [`transmit`](Transport::transmit), so it can be created
    /// before the card is tapped (or before `pcscd` runs).
    ///
    /// # Errors
    /// [`PcscError::InvalidReaderName`] for a name with a NUL byte.
    pub fn lazy(reader: &str) -> Result<Self, PcscError> {
        Ok(Self {
            reader: reader.to_owned(),
            reader_c: reader_cstring(reader)?,
            context: None,
            card: None,
            protocol: None,
            atr: Vec::new(),
            buffer: vec![0; pcsc::MAX_BUFFER_SIZE_EXTENDED],
        })
    }

    /// The reader's name.
    pub fn reader(&self) -> &str {
        &self.reader
    }

    /// Whether a card connection is currently held (it may still turn out
    /// to be stale at the next exchange).
    pub fn is_connected(&self) -> bool {
        self.card.is_some()
    }

    /// The card's answer to reset from the last connection, empty when not
    /// connected.
    pub fn atr(&self) -> &[u8] {
        &self.atr
    }

    /// The protocol of the current connection.
    pub fn protocol(&self) -> Option<CardProtocol> {
        self.protocol
    }

    /// Drops the current connection (if any), connects again and SELECTs
    /// the Tessera application by [`AID`], returning the SELECT response
    /// (data and status word, whatever the status).
    ///
    /// Use it after [`TransportError::CardRemoved`] to resume explicitly;
    /// the next [`transmit`](Transport::transmit) would reconnect by itself.
    ///
    /// # Errors
    /// As [`Transport::transmit`]: [`TransportError::CardRemoved`] when there
    /// is no card or it leaves during the SELECT, [`TransportError::Io`]
    /// when `pcscd` or the reader fails.
    pub fn reconnect(&mut self) -> Result<Vec<u8>, TransportError> {
        self.drop_card(Disposition::Leave);
        self.ensure_connected()?;
        iso7816::transceive(&select_aid(), |c| self.exchange(c))
    }

    /// Lets the card go, applying `disposition`. Dropping the transport is
    /// the same as `disconnect(Disposition::Leave)` without the error.
    ///
    /// # Errors
    /// [`PcscError::Pcsc`] when PC/SC refuses; the handle is released all
    /// the same.
    pub fn disconnect(mut self, disposition: Disposition) -> Result<(), PcscError> {
        match self.card.take() {
            Some(card) => card
                .disconnect(disposition.into())
                .map_err(|(_card, e)| PcscError::from_pcsc("SCardDisconnect", e)),
            None => Ok(()),
        }
    }

    /// Makes sure a context and a card handle exist.
    fn ensure_connected(&mut self) -> Result<(), PcscError> {
        if self.card.is_some() {
            return Ok(());
        }
        let had_context = self.context.is_some();
        match self.try_connect() {
            // A context from before a pcscd restart answers every call with
            // NoService/InvalidHandle (and try_connect then forgets it):
            // start over once with a fresh one.
            Err(_) if had_context && self.context.is_none() => self.try_connect(),
            other => other,
        }
    }

    fn try_connect(&mut self) -> Result<(), PcscError> {
        let context = match &self.context {
            Some(c) => c.clone(),
            None => {
                let c = establish()?;
                self.context = Some(c.clone());
                c
            }
        };
        // Prefer T=1; fall back to T=0 for cards that only speak T=0.
        let card = match context.connect(&self.reader_c, ShareMode::Shared, Protocols::T1) {
            Err(pcsc::Error::ProtoMismatch) => {
                context.connect(&self.reader_c, ShareMode::Shared, Protocols::T0 | Protocols::T1)
            }
            other => other,
        };
        let card = match card {
            Ok(card) => card,
            Err(pcsc::Error::NoSmartcard | pcsc::Error::RemovedCard) => {
                return Err(PcscError::NoCard(self.reader.clone()))
            }
            Err(pcsc::Error::UnknownReader) => {
                return Err(PcscError::ReaderNotFound {
                    wanted: self.reader.clone(),
                    available: context
                        .list_readers_owned()
                        .map(|v| v.iter().map(|n| n.to_string_lossy().into_owned()).collect())
                        .unwrap_or_default(),
                })
            }
            Err(e) => {
                if classify(e) == Failure::Service {
                    self.context = None;
                }
                return Err(PcscError::from_pcsc("SCardConnect", e));
            }
        };
        let (atr, protocol) = match card.status2_owned() {
            Ok(status) => (
                status.atr().to_vec(),
                match status.protocol2() {
                    Some(pcsc::Protocol::T0) => CardProtocol::T0,
                    Some(pcsc::Protocol::T1) => CardProtocol::T1,
                    _ => CardProtocol::Other,
                },
            ),
            Err(_) => (Vec::new(), CardProtocol::Other),
        };
        self.atr = atr;
        self.protocol = Some(protocol);
        self.card = Some(card);
        Ok(())
    }

    fn drop_card(&mut self, disposition: Disposition) {
        if let Some(card) = self.card.take() {
            // The handle is usually dead already; its release can only fail.
            let _ = card.disconnect(disposition.into());
        }
        self.atr.clear();
        self.protocol = None;
    }

    /// One raw exchange, connecting first when needed.
    fn exchange(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
        self.ensure_connected()?;
        let Some(card) = self.card.as_ref() else {
            return Err(TransportError::CardRemoved);
        };
        match card.transmit(command, &mut self.buffer) {
            Ok(response) if response.len() >= 2 => Ok(response.to_vec()),
            // vpcd answers an empty response when its card went away.
            Ok(_) => {
                self.drop_card(Disposition::Leave);
                Err(TransportError::CardRemoved)
            }
            Err(e) => match classify(e) {
                Failure::Card => {
                    self.drop_card(Disposition::Leave);
                    Err(TransportError::CardRemoved)
                }
                Failure::Service => {
                    self.drop_card(Disposition::Leave);
                    self.context = None;
                    Err(TransportError::CardRemoved)
                }
                Failure::Other => Err(TransportError::Io(format!("SCardTransmit: {e}"))),
            },
        }
    }
}

impl Transport for PcscTransport {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
        // A handle kept from an earlier exchange may be stale: the card was
        // removed and tapped again, reset by another application, or pcscd
        // restarted. A SELECT, which starts every session and changes
        // nothing, is then sent once more over a fresh connection instead
        // of failing; any other command fails with CardRemoved, as the
        // session it belongs to is gone.
        let had_connection = self.card.is_some();
        match iso7816::transceive(command, |c| self.exchange(c)) {
            Err(TransportError::CardRemoved) if had_connection && is_select(command) => {
                iso7816::transceive(command, |c| self.exchange(c))
            }
            other => other,
        }
    }
}

/// SELECT by DF name (`00 A4 04 xx`): idempotent, starts every session.
fn is_select(command: &[u8]) -> bool {
    matches!(command, [CLA_ISO, 0xA4, 0x04, ..])
}

/// `00 A4 04 00 09 <AID> 00`: SELECT the Tessera application by name.
fn select_aid() -> Vec<u8> {
    Command::new(CLA_ISO, Ins::Select, 0x04, 0x00, AID.to_vec(), Some(SHORT_MAX_NE)).to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_is_the_iso_select_by_name() {
        let mut expected = vec![0x00, 0xA4, 0x04, 0x00, 0x09];
        expected.extend_from_slice(&AID);
        expected.push(0x00);
        assert_eq!(select_aid(), expected);
        assert!(is_select(&select_aid()));
        assert!(!is_select(&[0x80, 0xA4, 0x04, 0x00]));
        assert!(!is_select(&[0x00, 0xB2]));
    }

    #[test]
    fn failures_are_classified() {
        assert_eq!(classify(pcsc::Error::RemovedCard), Failure::Card);
        assert_eq!(classify(pcsc::Error::ResetCard), Failure::Card);
        assert_eq!(classify(pcsc::Error::UnpoweredCard), Failure::Card);
        assert_eq!(classify(pcsc::Error::NoSmartcard), Failure::Card);
        assert_eq!(classify(pcsc::Error::NoService), Failure::Service);
        assert_eq!(classify(pcsc::Error::ServiceStopped), Failure::Service);
        assert_eq!(classify(pcsc::Error::InvalidHandle), Failure::Service);
        assert_eq!(classify(pcsc::Error::InsufficientBuffer), Failure::Other);
    }

    #[test]
    fn errors_map_to_transport_errors() {
        let t: TransportError = PcscError::NoCard("r".into()).into();
        assert!(matches!(t, TransportError::CardRemoved));
        let t: TransportError = PcscError::NoService.into();
        assert!(matches!(t, TransportError::Io(_)));
    }

    #[test]
    fn lazy_transport_needs_no_service() {
        let t = PcscTransport::lazy("Virtual PCD 00 00").unwrap();
        assert!(!t.is_connected());
        assert!(t.atr().is_empty());
        assert!(matches!(
            PcscTransport::lazy("a\0b"),
            Err(PcscError::InvalidReaderName(_))
        ));
    }
}
