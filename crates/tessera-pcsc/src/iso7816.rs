//! ISO/IEC 7816-4 transport rules, free of I/O: `61xx` response chaining
//! with GET RESPONSE (§5.3.4 and §7.6.1) and `6Cxx` wrong-Le retries
//! (§5.6, "wrong Le field; SW2 encodes the exact number of available data
//! bytes").
//!
//! Readers and drivers hand these status words through unchanged (pcsc-lite
//! does not issue GET RESPONSE itself, and neither does vpcd), so the
//! transport layer resolves them before the terminal sees a response.
//! [`transceive`] takes the raw exchange as a closure, which keeps it
//! testable without a reader.
//!
//! # Commands under secure messaging are never re-sent
//! A `6Cxx` retry sends the *same command* again. For a command protected
//! by secure messaging (a MAC'd EARN, REDEEM, ...) that is a replay the
//! transport must not make on the card's behalf: the transport acts on the
//! status word before anyone checks the response MAC, so a relay between
//! terminal and card could turn the card's `9000` into `6C10` and have the
//! transport send the already executed command a second time. So the transport never re-sends a
//! command whose CLA indicates secure messaging (ISO/IEC 7816-4, class
//! byte: bits b4-b3 not both zero, `cla & 0x0C != 0`, e.g. the Tessera
//! secure class `84`; see [`is_secure_messaging`]). For such a command a
//! `6Cxx` is returned to the caller unchanged, after the one exchange; the
//! caller, which holds the secure channel, decides what it means.
//! Commands without secure messaging (CLA `00`, `80`) keep the retry.
//!
//! `61xx` chaining is the same for every command: GET RESPONSE
//! (`00 C0 ..`) only fetches the rest of an answer the card already gave
//! and never executes the original command again.

use tessera_protocol::apdu::{Command, SHORT_MAX_NE};
use tessera_transport::TransportError;

/// Most GET RESPONSE rounds for one command: 256 rounds of 256 bytes cover
/// the largest extended response (65,536 bytes). A card that chains longer
/// is answered with [`TransportError::MalformedResponse`].
pub const MAX_GET_RESPONSE_ROUNDS: usize = 256;

/// SW1 of "SW2 more response bytes are available" (`61xx`).
pub const SW1_MORE_DATA: u8 = 0x61;
/// SW1 of "wrong Le; SW2 is the exact length available" (`6Cxx`).
pub const SW1_WRONG_LE: u8 = 0x6C;
/// The secure-messaging indication of a CLA byte: bits b4-b3.
const CLA_SM_BITS: u8 = 0x0C;

/// The GET RESPONSE command `00 C0 00 00 le` (ISO/IEC 7816-4 §7.6.1); an
/// `le` of 0 asks for 256 bytes.
pub fn get_response(le: u8) -> [u8; 5] {
    [0x00, 0xC0, 0x00, 0x00, le]
}

/// Whether `command` is protected by secure messaging according to its
/// CLA byte: bits b4-b3 (`0x0C`) not both zero (ISO/IEC 7816-4, class byte),
/// as in CLA `84`. [`transceive`] never re-sends such a command. An empty
/// command has no CLA and is not.
pub fn is_secure_messaging(command: &[u8]) -> bool {
    command.first().is_some_and(|cla| cla & CLA_SM_BITS != 0)
}

/// Re-encodes `command` with its Le replaced by `le` (0 meaning 256), for
/// the retry a `6Cxx` asks for. Returns `None` when `command` is not a
/// well-formed command APDU, in which case there is nothing sensible to
/// retry.
pub fn with_le(command: &[u8], le: u8) -> Option<Vec<u8>> {
    let mut parsed = Command::parse(command).ok()?;
    parsed.le = Some(if le == 0 { SHORT_MAX_NE } else { usize::from(le) });
    Some(parsed.to_bytes())
}

fn status(response: &[u8]) -> Result<(u8, u8), TransportError> {
    match response {
        [.., sw1, sw2] => Ok((*sw1, *sw2)),
        _ => Err(TransportError::MalformedResponse(format!(
            "{} byte(s), shorter than a status word",
            response.len()
        ))),
    }
}

/// Sends `command` through `send` (one raw command-response exchange) and
/// resolves the transport status words, returning the complete response
/// APDU:
///
/// - `6Cxx`: the command is sent once more with Le = `xx`; a second `6Cxx`
///   is returned as it is. A command under secure messaging
///   ([`is_secure_messaging`], e.g. CLA `84`) is never re-sent: its `6Cxx`
///   is returned unchanged after the one exchange (see the module
///   documentation).
/// - `61xx`: GET RESPONSE with Le = `xx` is sent until the card stops
///   answering `61xx`; the data of every part is concatenated in order,
///   followed by the last status word. A `6Cxx` to a GET RESPONSE is
///   retried once with the length it names. This holds for every command,
///   with or without secure messaging.
///
/// Extended-length commands are passed through unchanged.
///
/// # Errors
/// Whatever `send` returns, and [`TransportError::MalformedResponse`] when
/// a response is shorter than a status word or the card chains more than
/// [`MAX_GET_RESPONSE_ROUNDS`] times.
pub fn transceive<F>(command: &[u8], mut send: F) -> Result<Vec<u8>, TransportError>
where
    F: FnMut(&[u8]) -> Result<Vec<u8>, TransportError>,
{
    let mut response = send(command)?;
    let (sw1, sw2) = status(&response)?;
    if sw1 == SW1_WRONG_LE && !is_secure_messaging(command) {
        if let Some(retry) = with_le(command, sw2) {
            response = send(&retry)?;
        }
    }

    let mut data = Vec::new();
    let mut rounds = 0;
    loop {
        let (sw1, sw2) = status(&response)?;
        if sw1 != SW1_MORE_DATA {
            break;
        }
        rounds += 1;
        if rounds > MAX_GET_RESPONSE_ROUNDS {
            return Err(TransportError::MalformedResponse(format!(
                "more than {MAX_GET_RESPONSE_ROUNDS} chained responses"
            )));
        }
        data.extend_from_slice(&response[..response.len() - 2]);
        response = send(&get_response(sw2))?;
        let (sw1, sw2) = status(&response)?;
        if sw1 == SW1_WRONG_LE {
            response = send(&get_response(sw2))?;
        }
    }
    if data.is_empty() {
        Ok(response)
    } else {
        data.extend_from_slice(&response);
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scripted card: each exchange must match the expected command and
    /// returns the scripted response.
    struct Script {
        steps: Vec<(Vec<u8>, Vec<u8>)>,
        at: usize,
    }

    impl Script {
        fn new(steps: &[(&[u8], &[u8])]) -> Self {
            Self {
                steps: steps.iter().map(|(c, r)| (c.to_vec(), r.to_vec())).collect(),
                at: 0,
            }
        }

        fn send(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
            let (expected, response) = &self.steps[self.at];
            assert_eq!(command, &expected[..], "exchange {}", self.at);
            self.at += 1;
            Ok(response.clone())
        }

        fn done(&self) {
            assert_eq!(self.at, self.steps.len(), "not every scripted exchange happened");
        }
    }

    #[test]
    fn plain_response_passes_through() {
        let mut s = Script::new(&[(&[0, 0xB2, 1, 0, 0], &[1, 2, 0x90, 0])]);
        let r = transceive(&[0, 0xB2, 1, 0, 0], |c| s.send(c)).unwrap();
        assert_eq!(r, [1, 2, 0x90, 0]);
        s.done();
    }

    #[test]
    fn chained_responses_are_concatenated() {
        let mut s = Script::new(&[
            (&[0x80, 0xCA, 0, 0, 0], &[1, 2, 0x61, 0x03]),
            (&[0, 0xC0, 0, 0, 3], &[3, 4, 5, 0x61, 0x00]),
            (&[0, 0xC0, 0, 0, 0], &[6, 0x90, 0x00]),
        ]);
        let r = transceive(&[0x80, 0xCA, 0, 0, 0], |c| s.send(c)).unwrap();
        assert_eq!(r, [1, 2, 3, 4, 5, 6, 0x90, 0]);
        s.done();
    }

    #[test]
    fn chaining_may_start_without_data_and_end_in_error() {
        let mut s = Script::new(&[
            (&[0x80, 0x30, 0, 0], &[0x61, 0x02]),
            (&[0, 0xC0, 0, 0, 2], &[7, 8, 0x6A, 0x82]),
        ]);
        let r = transceive(&[0x80, 0x30, 0, 0], |c| s.send(c)).unwrap();
        assert_eq!(r, [7, 8, 0x6A, 0x82]);
        s.done();
    }

    #[test]
    fn wrong_le_is_retried_with_the_exact_length() {
        let mut s = Script::new(&[
            (&[0, 0xB2, 1, 0, 0x10], &[0x6C, 0x04]),
            (&[0, 0xB2, 1, 0, 0x04], &[9, 9, 9, 9, 0x90, 0x00]),
        ]);
        let r = transceive(&[0, 0xB2, 1, 0, 0x10], |c| s.send(c)).unwrap();
        assert_eq!(r, [9, 9, 9, 9, 0x90, 0]);
        s.done();
    }

    #[test]
    fn wrong_le_on_a_command_without_le_adds_one() {
        let mut s = Script::new(&[
            (&[0, 0xA4, 4, 0, 1, 0xAA], &[0x6C, 0x00]),
            (&[0, 0xA4, 4, 0, 1, 0xAA, 0x00], &[0x90, 0x00]),
        ]);
        let r = transceive(&[0, 0xA4, 4, 0, 1, 0xAA], |c| s.send(c)).unwrap();
        assert_eq!(r, [0x90, 0]);
        s.done();
    }

    #[test]
    fn second_wrong_le_is_returned() {
        let mut s = Script::new(&[
            (&[0, 0xB2, 1, 0, 0x10], &[0x6C, 0x04]),
            (&[0, 0xB2, 1, 0, 0x04], &[0x6C, 0x05]),
        ]);
        let r = transceive(&[0, 0xB2, 1, 0, 0x10], |c| s.send(c)).unwrap();
        assert_eq!(r, [0x6C, 0x05]);
        s.done();
    }

    #[test]
    fn wrong_le_then_chaining() {
        let mut s = Script::new(&[
            (&[0, 0xB2, 1, 0, 0x01], &[0x6C, 0x00]),
            (&[0, 0xB2, 1, 0, 0x00], &[1, 0x61, 0x01]),
            (&[0, 0xC0, 0, 0, 1], &[0x6C, 0x02]),
            (&[0, 0xC0, 0, 0, 2], &[2, 3, 0x90, 0x00]),
        ]);
        let r = transceive(&[0, 0xB2, 1, 0, 0x01], |c| s.send(c)).unwrap();
        assert_eq!(r, [1, 2, 3, 0x90, 0]);
        s.done();
    }

    #[test]
    fn secure_messaging_is_read_from_the_cla() {
        for cla in [0x84, 0x04, 0x08, 0x0C, 0x8C, 0x0D] {
            assert!(is_secure_messaging(&[cla, 0x30, 0, 0]), "CLA {cla:02X}");
        }
        for cla in [0x00, 0x80, 0x01, 0x03, 0x10, 0x90] {
            assert!(!is_secure_messaging(&[cla, 0x30, 0, 0]), "CLA {cla:02X}");
        }
        assert!(!is_secure_messaging(&[]));
    }

    #[test]
    fn wrong_le_on_a_secure_command_is_returned_without_a_resend() {
        // A MAC'd EARN answered 6C10 (by the card or by a relay that
        // rewrote its 9000): sent exactly once, the 6C10 comes back.
        let earn = [0x84, 0x30, 0x00, 0x00, 0x04, 0xDE, 0xAD, 0xBE, 0xEF, 0x00];
        let mut sent: Vec<Vec<u8>> = Vec::new();
        let r = transceive(&earn, |c| {
            sent.push(c.to_vec());
            Ok(vec![0x6C, 0x10])
        })
        .unwrap();
        assert_eq!(r, [0x6C, 0x10]);
        assert_eq!(sent, [earn.to_vec()]);
    }

    #[test]
    fn wrong_le_is_returned_for_every_secure_class() {
        for cmd in [
            &[0x84, 0x32, 0, 0, 0x10][..],
            &[0x8C, 0xB2, 1, 0][..],
            &[0x0C, 0xB0, 0, 0, 0][..],
        ] {
            let mut s = Script::new(&[(cmd, &[0xAA, 0x6C, 0x00])]);
            assert_eq!(transceive(cmd, |c| s.send(c)).unwrap(), [0xAA, 0x6C, 0x00]);
            s.done();
        }
    }

    #[test]
    fn wrong_le_on_plain_classes_is_still_retried() {
        let mut s = Script::new(&[
            (&[0x00, 0xB2, 1, 0x0C, 0x10], &[0x6C, 0x08]),
            (&[0x00, 0xB2, 1, 0x0C, 0x08], &[1, 2, 3, 4, 5, 6, 7, 8, 0x90, 0x00]),
        ]);
        let r = transceive(&[0x00, 0xB2, 1, 0x0C, 0x10], |c| s.send(c)).unwrap();
        assert_eq!(r, [1, 2, 3, 4, 5, 6, 7, 8, 0x90, 0]);
        s.done();
        let mut s = Script::new(&[
            (&[0x80, 0xCA, 0, 0, 0], &[0x6C, 0x02]),
            (&[0x80, 0xCA, 0, 0, 2], &[7, 7, 0x90, 0x00]),
        ]);
        assert_eq!(
            transceive(&[0x80, 0xCA, 0, 0, 0], |c| s.send(c)).unwrap(),
            [7, 7, 0x90, 0]
        );
        s.done();
    }

    #[test]
    fn secure_commands_still_chain_with_get_response() {
        let mut s = Script::new(&[
            (&[0x84, 0x30, 0, 0, 2, 0xAB, 0xCD, 0], &[1, 2, 0x61, 0x02]),
            (&[0, 0xC0, 0, 0, 2], &[0x6C, 0x01]),
            (&[0, 0xC0, 0, 0, 1], &[3, 0x61, 0x01]),
            (&[0, 0xC0, 0, 0, 1], &[4, 0x90, 0x00]),
        ]);
        let r = transceive(&[0x84, 0x30, 0, 0, 2, 0xAB, 0xCD, 0], |c| s.send(c)).unwrap();
        assert_eq!(r, [1, 2, 3, 4, 0x90, 0]);
        s.done();
    }

    #[test]
    fn extended_command_passes_through() {
        let mut cmd = vec![0x80, 0xE2, 0, 0, 0, 0x01, 0x00];
        cmd.extend([0x5A; 256]);
        cmd.extend([0x00, 0x00]);
        let mut s = Script::new(&[(&cmd, &[0x90, 0x00])]);
        assert_eq!(transceive(&cmd, |c| s.send(c)).unwrap(), [0x90, 0]);
        s.done();
    }

    #[test]
    fn endless_chaining_is_an_error() {
        let mut calls = 0usize;
        let r = transceive(&[0, 0xCA, 0, 0, 0], |_| {
            calls += 1;
            Ok(vec![0xAB, 0x61, 0x01])
        });
        assert!(matches!(r, Err(TransportError::MalformedResponse(_))));
        assert_eq!(calls, MAX_GET_RESPONSE_ROUNDS + 1);
    }

    #[test]
    fn short_responses_are_malformed() {
        for bad in [&[][..], &[0x90][..]] {
            let r = transceive(&[0, 0xCA, 0, 0], |_| Ok(bad.to_vec()));
            assert!(matches!(r, Err(TransportError::MalformedResponse(_))));
        }
    }

    #[test]
    fn send_errors_propagate() {
        let r = transceive(&[0, 0xCA, 0, 0], |_| Err(TransportError::CardRemoved));
        assert!(matches!(r, Err(TransportError::CardRemoved)));
    }
}
