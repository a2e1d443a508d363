//! Command and response APDUs (ISO/IEC 7816-4 §5.1), short and extended.

use crate::{Ins, ProtocolError, StatusWord};

/// Largest response length a short Le can ask for.
pub const SHORT_MAX_NE: usize = 256;
/// Largest response length an extended Le can ask for.
pub const EXTENDED_MAX_NE: usize = 65_536;

/// A command APDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// Class byte.
    pub cla: u8,
    /// Instruction byte.
    pub ins: u8,
    /// Parameter 1.
    pub p1: u8,
    /// Parameter 2.
    pub p2: u8,
    /// Command data (Lc is its length).
    pub data: Vec<u8>,
    /// Maximum number of response bytes expected (Ne), if any.
    pub le: Option<usize>,
}

impl Command {
    /// Builds a command with the given header, data and expected length.
    pub fn new(cla: u8, ins: Ins, p1: u8, p2: u8, data: Vec<u8>, le: Option<usize>) -> Self {
        Self {
            cla,
            ins: ins.into(),
            p1,
            p2,
            data,
            le,
        }
    }

    /// The instruction as a typed value.
    pub fn instruction(&self) -> Ins {
        Ins::from(self.ins)
    }

    /// Parses the bytes of a command APDU in any of the four ISO cases, short
    /// or extended.
    ///
    /// # Errors
    /// [`ProtocolError::MalformedApdu`] when the length fields disagree with
    /// the size of the input.
    pub fn parse(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let malformed = ProtocolError::MalformedApdu;
        if bytes.len() < 4 {
            return Err(malformed("shorter than the 4-byte header"));
        }
        let (cla, ins, p1, p2) = (bytes[0], bytes[1], bytes[2], bytes[3]);
        let body = &bytes[4..];
        let (data, le): (&[u8], Option<usize>) = match body.len() {
            0 => (&[], None),
            1 => (&[], Some(short_ne(body[0]))),
            _ if body[0] != 0 => {
                let lc = usize::from(body[0]);
                match body.len() - 1 {
                    n if n == lc => (&body[1..], None),
                    n if n == lc + 1 => (&body[1..=lc], Some(short_ne(body[lc + 1]))),
                    _ => return Err(malformed("short Lc disagrees with the data length")),
                }
            }
            3 => (&[], Some(extended_ne(body[1], body[2]))),
            n if n > 3 => {
                let lc = usize::from(u16::from_be_bytes([body[1], body[2]]));
                if lc == 0 {
                    return Err(malformed("extended Lc of zero"));
                }
                match n - 3 {
                    m if m == lc => (&body[3..], None),
                    m if m == lc + 2 => (&body[3..3 + lc], Some(extended_ne(body[3 + lc], body[4 + lc]))),
                    _ => return Err(malformed("extended Lc disagrees with the data length")),
                }
            }
            _ => return Err(malformed("truncated extended length field")),
        };
        Ok(Self {
            cla,
            ins,
            p1,
            p2,
            data: data.to_vec(),
            le,
        })
    }

    /// Whether this command needs the extended length encoding.
    pub fn is_extended(&self) -> bool {
        self.data.len() > 255 || self.le.is_some_and(|ne| ne > SHORT_MAX_NE)
    }

    /// Encodes the command, choosing the short form when both Lc and Ne fit
    /// and the extended form otherwise.
    ///
    /// Data longer than 65,535 bytes or Ne above 65,536 cannot be encoded
    /// and are clamped by the caller's construction; this function never
    /// panics and truncates nothing silently: such commands are encoded with
    /// the lengths saturated, which a card rejects as malformed.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + self.data.len());
        out.extend_from_slice(&[self.cla, self.ins, self.p1, self.p2]);
        if self.is_extended() {
            out.push(0);
            if !self.data.is_empty() {
                let lc = u16::try_from(self.data.len()).unwrap_or(u16::MAX);
                out.extend_from_slice(&lc.to_be_bytes());
                out.extend_from_slice(&self.data);
            }
            if let Some(ne) = self.le {
                let le = if ne >= EXTENDED_MAX_NE { 0 } else { ne as u16 };
                out.extend_from_slice(&le.to_be_bytes());
            }
        } else {
            if !self.data.is_empty() {
                out.push(self.data.len() as u8);
                out.extend_from_slice(&self.data);
            }
            if let Some(ne) = self.le {
                out.push(if ne >= SHORT_MAX_NE { 0 } else { ne as u8 });
            }
        }
        out
    }
}

fn short_ne(le: u8) -> usize {
    if le == 0 {
        SHORT_MAX_NE
    } else {
        usize::from(le)
    }
}

fn extended_ne(hi: u8, lo: u8) -> usize {
    match u16::from_be_bytes([hi, lo]) {
        0 => EXTENDED_MAX_NE,
        n => usize::from(n),
    }
}

/// A response APDU: data followed by the status word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Response data (may be empty).
    pub data: Vec<u8>,
    /// Status word.
    pub sw: StatusWord,
}

impl Response {
    /// A response carrying only a status word.
    pub fn status(sw: StatusWord) -> Self {
        Self { data: Vec::new(), sw }
    }

    /// A `9000` response with data.
    pub fn ok(data: Vec<u8>) -> Self {
        Self {
            data,
            sw: StatusWord::Ok,
        }
    }

    /// Splits response bytes into data and status word.
    ///
    /// # Errors
    /// [`ProtocolError::TruncatedResponse`] when fewer than two bytes arrive.
    pub fn parse(bytes: &[u8]) -> Result<Self, ProtocolError> {
        if bytes.len() < 2 {
            return Err(ProtocolError::TruncatedResponse);
        }
        let (data, sw) = bytes.split_at(bytes.len() - 2);
        Ok(Self {
            data: data.to_vec(),
            sw: StatusWord::from(u16::from_be_bytes([sw[0], sw[1]])),
        })
    }

    /// Encodes data followed by SW1 SW2.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.len() + 2);
        out.extend_from_slice(&self.data);
        out.extend_from_slice(&self.sw.to_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn iso_cases() {
        let c = Command::parse(&hex::decode("00A4040009F05445535345524101").unwrap()).unwrap();
        assert_eq!(c.data.len(), 9);
        assert_eq!(c.le, None);
        let c = Command::parse(&hex::decode("00A4040009F0544553534552410100").unwrap()).unwrap();
        assert_eq!(c.le, Some(256));
        let c = Command::parse(&hex::decode("84CA000000").unwrap()).unwrap();
        assert_eq!(c.le, Some(256));
        let c = Command::parse(&hex::decode("84CA0000000000").unwrap()).unwrap();
        assert_eq!(c.le, Some(65_536));
        assert!(Command::parse(&hex::decode("84CA00000500").unwrap()).is_err());
        assert!(Command::parse(&hex::decode("84CA00000001").unwrap()).is_err());
        assert!(Command::parse(&hex::decode("84CA").unwrap()).is_err());
    }

    #[test]
    fn extended_round_trip() {
        let c = Command {
            cla: 0x80,
            ins: 0xE2,
            p1: 0,
            p2: 0,
            data: vec![7; 300],
            le: Some(1000),
        };
        let bytes = c.to_bytes();
        assert_eq!(&bytes[4..7], &[0, 0x01, 0x2C]);
        assert_eq!(Command::parse(&bytes).unwrap(), c);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Command::parse(&bytes);
            let _ = Response::parse(&bytes);
        }

        #[test]
        fn parse_then_encode_gives_input_back(bytes in proptest::collection::vec(any::<u8>(), 4..600)) {
            if let Ok(c) = Command::parse(&bytes) {
                // A canonical encoding re-parses to the same command.
                prop_assert_eq!(Command::parse(&c.to_bytes()).unwrap(), c);
            }
        }

        #[test]
        fn encode_then_parse(cla: u8, ins: u8, p1: u8, p2: u8,
                             data in proptest::collection::vec(any::<u8>(), 0..400),
                             le in proptest::option::of(1usize..=65_536)) {
            let c = Command { cla, ins, p1, p2, data, le };
            prop_assert_eq!(Command::parse(&c.to_bytes()).unwrap(), c);
        }

        #[test]
        fn response_round_trip(bytes in proptest::collection::vec(any::<u8>(), 2..300)) {
            prop_assert_eq!(Response::parse(&bytes).unwrap().to_bytes(), bytes);
        }
    }
}
