//! BER-TLV data objects (spec §3): the tag registry and a strict reader.
//!
//! Encoding and decoding go through `iso7816-tlv`. The reader is strict:
//! trailing garbage, constructed objects where primitives are expected, and
//! duplicated tags are all errors, so one byte sequence has one meaning.

use iso7816_tlv::ber::{Tag, Tlv, Value};

use crate::ProtocolError;

/// Tag numbers, as listed in spec §3.
pub mod tags {
    /// Card identifier, 8 bytes.
    pub const CARD_ID: u32 = 0xC0;
    /// Versions: applet version, key version (1 byte each).
    pub const VERSIONS: u32 = 0xC1;
    /// Life-cycle state, 1 byte.
    pub const LIFECYCLE: u32 = 0xC2;
    /// SHA-256 digest of the stored signed profile, 32 bytes.
    pub const PROFILE_DIGEST: u32 = 0xC3;
    /// Card challenge, 8 bytes.
    pub const CARD_CHALLENGE: u32 = 0xC4;
    /// Card cryptogram, 8 bytes.
    pub const CARD_CRYPTOGRAM: u32 = 0xC5;
    /// Balance in points, 4 bytes big-endian.
    pub const BALANCE: u32 = 0xC6;
    /// Transaction counter, 4 bytes big-endian.
    pub const COUNTER: u32 = 0xC7;
    /// A log record (spec §6.2), 45 bytes.
    pub const LOG_RECORD: u32 = 0xC8;
    /// Encrypted data (profile cryptogram or personalization data).
    pub const ENCRYPTED: u32 = 0xC9;
    /// Per-transaction caps: earn cap, redeem cap (4 bytes each).
    pub const CAPS: u32 = 0xCA;
    /// Authentication failure limit (personalization only), 1 byte.
    pub const AUTH_TRIES: u32 = 0xCB;
    /// Host challenge, 8 bytes.
    pub const HOST_CHALLENGE: u32 = 0xCC;
    /// Host cryptogram, 8 bytes.
    pub const HOST_CRYPTOGRAM: u32 = 0xCD;
    /// Visit history: visit count, last visit day, last store (4 bytes each).
    pub const VISITS: u32 = 0xCE;
    /// Offline velocity: unsettled redemptions count and sum, settled
    /// counter (4 bytes each).
    pub const VELOCITY: u32 = 0xCF;
    /// Amount in points, 4 bytes big-endian.
    pub const AMOUNT: u32 = 0xD0;
    /// Terminal identifier, 4 bytes.
    pub const TERMINAL_ID: u32 = 0xD1;
    /// Terminal sequence number, 4 bytes.
    pub const TERMINAL_SEQ: u32 = 0xD2;
    /// Transaction time, seconds since the Unix epoch, 4 bytes.
    pub const TIME: u32 = 0xD3;
    /// Store identifier, 4 bytes.
    pub const STORE_ID: u32 = 0xD9;
    /// Card authentication key (personalization only), 16 bytes.
    pub const KEY_AUTH: u32 = 0xD4;
    /// Card certificate key (personalization only), 16 bytes.
    pub const KEY_CERT: u32 = 0xD5;
    /// Key version (personalization only), 1 byte.
    pub const KEY_VERSION: u32 = 0xD6;
    /// Signed profile (personalization only).
    pub const PROFILE: u32 = 0xD7;
    /// Profile version, 2 bytes.
    pub const PROFILE_VERSION: u32 = 0xD8;
    /// Customer name, UTF-8.
    pub const NAME: u32 = 0xDA;
    /// Birth date: year (2 bytes), month, day.
    pub const BIRTH_DATE: u32 = 0xDB;
    /// Home city, UTF-8.
    pub const HOME_CITY: u32 = 0xDC;
    /// Household identifier, 8 bytes.
    pub const HOUSEHOLD: u32 = 0xDD;
    /// Preferred categories, UTF-8, comma separated.
    pub const PREFERENCES: u32 = 0xDE;
    /// Tier, 1 byte.
    pub const TIER: u32 = 0xDF01;
    /// Profile valid from (date).
    pub const VALID_FROM: u32 = 0xDF02;
    /// Profile valid until (date).
    pub const VALID_UNTIL: u32 = 0xDF03;
    /// Counter of the transaction a refund reverses, 4 bytes.
    pub const REFERENCE: u32 = 0xDF04;
    /// Card issuer key K_iss (personalization only, v2), 16 bytes.
    pub const KEY_ISSUER: u32 = 0xDF05;
    /// Issuer MAC over an issuer decision (v2, spec §5.9), 8 bytes.
    pub const ISSUER_MAC: u32 = 0xDF06;
    /// Issuer identifier (v2), 4 bytes.
    pub const ISSUER_ID: u32 = 0xDF07;
    /// Issuer sequence of an UNBLOCK (v2), 4 bytes.
    pub const ISSUER_SEQ: u32 = 0xDF08;
    /// `DF09` adjustment sequence of an ISSUER ADJUST (v2.1, spec §4.16).
    pub const ADJUST_SEQ: u32 = 0xDF09;
    /// `DF0A` the card's authorization request (v2.2, spec §4.17), 49
    /// bytes: the request body and its cryptogram.
    pub const AUTH_REQUEST: u32 = 0xDF0A;
    /// `DF0B` the office's authorization response (v2.2, spec §4.17), 13
    /// bytes: decision, settled counter and issuer MAC.
    pub const AUTH_RESPONSE: u32 = 0xDF0B;
    /// Secure messaging MAC (ISO 7816-4 cryptographic checksum), 8 bytes.
    pub const MAC: u32 = 0x8E;
    /// Issuer signature over the profile, 64 bytes (r ‖ s).
    pub const SIGNATURE: u32 = 0x5F37;
}

/// Encodes one primitive data object.
///
/// Tags in this crate are constants known to be valid primitive tags, and
/// values longer than 16 MiB never occur; on either impossible condition an
/// empty vector is returned rather than a panic.
pub fn encode(tag: u32, value: &[u8]) -> Vec<u8> {
    Tag::try_from(tag)
        .and_then(|t| Tlv::new(t, Value::Primitive(value.to_vec())))
        .map(|tlv| tlv.to_vec())
        .unwrap_or_default()
}

/// Encodes a sequence of primitive data objects in order.
pub fn encode_all(items: &[(u32, &[u8])]) -> Vec<u8> {
    items.iter().flat_map(|(t, v)| encode(*t, v)).collect()
}

/// A parsed list of primitive data objects, in wire order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlvList {
    items: Vec<(u32, Vec<u8>)>,
}

impl TlvList {
    /// Parses `bytes` as a concatenation of primitive BER-TLV objects.
    ///
    /// # Errors
    /// [`ProtocolError::MalformedTlv`] on any encoding error or trailing
    /// bytes, [`ProtocolError::UnexpectedTag`] on a constructed object or a
    /// repeated tag.
    pub fn parse(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let mut items: Vec<(u32, Vec<u8>)> = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let (tlv, tail) = Tlv::parse(rest);
            let tlv = tlv.map_err(|_| ProtocolError::MalformedTlv)?;
            if tail.len() >= rest.len() {
                return Err(ProtocolError::MalformedTlv);
            }
            rest = tail;
            let tag: u64 = tlv.tag().clone().into();
            let tag = u32::try_from(tag).map_err(|_| ProtocolError::MalformedTlv)?;
            let Value::Primitive(v) = tlv.value() else {
                return Err(ProtocolError::UnexpectedTag(tag));
            };
            if items.iter().any(|(t, _)| *t == tag) {
                return Err(ProtocolError::UnexpectedTag(tag));
            }
            items.push((tag, v.clone()));
        }
        Ok(Self { items })
    }

    /// The value of `tag`, if present.
    pub fn get(&self, tag: u32) -> Option<&[u8]> {
        self.items.iter().find(|(t, _)| *t == tag).map(|(_, v)| v.as_slice())
    }

    /// The value of a mandatory `tag`.
    ///
    /// # Errors
    /// [`ProtocolError::MissingTag`] when absent.
    pub fn require(&self, tag: u32) -> Result<&[u8], ProtocolError> {
        self.get(tag).ok_or(ProtocolError::MissingTag(tag))
    }

    /// The value of a mandatory `tag` that must be exactly `N` bytes long.
    ///
    /// # Errors
    /// [`ProtocolError::MissingTag`] or [`ProtocolError::InvalidValue`].
    pub fn array<const N: usize>(&self, tag: u32) -> Result<[u8; N], ProtocolError> {
        self.require(tag)?
            .try_into()
            .map_err(|_| ProtocolError::InvalidValue(tag))
    }

    /// A mandatory 4-byte big-endian number.
    ///
    /// # Errors
    /// As [`TlvList::array`].
    pub fn u32(&self, tag: u32) -> Result<u32, ProtocolError> {
        self.array::<4>(tag).map(u32::from_be_bytes)
    }

    /// The tags present, in wire order.
    pub fn tags(&self) -> impl Iterator<Item = u32> + '_ {
        self.items.iter().map(|(t, _)| *t)
    }

    /// Fails if any tag outside `allowed` is present.
    ///
    /// # Errors
    /// [`ProtocolError::UnexpectedTag`] naming the first stray tag.
    pub fn only(&self, allowed: &[u32]) -> Result<(), ProtocolError> {
        match self.tags().find(|t| !allowed.contains(t)) {
            Some(t) => Err(ProtocolError::UnexpectedTag(t)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn two_byte_tags() {
        let b = encode(tags::TIER, &[2]);
        assert_eq!(b, vec![0xDF, 0x01, 0x01, 0x02]);
        let b = encode(tags::SIGNATURE, &[0u8; 64]);
        assert_eq!(&b[..3], &[0x5F, 0x37, 0x40]);
        assert_eq!(TlvList::parse(&b).unwrap().get(tags::SIGNATURE).unwrap().len(), 64);
    }

    #[test]
    fn strictness() {
        let mut b = encode_all(&[(tags::BALANCE, &[0, 0, 0, 1])]);
        assert!(TlvList::parse(&b).is_ok());
        b.push(0xC6);
        assert!(TlvList::parse(&b).is_err());
        let dup = encode_all(&[(tags::BALANCE, &[1]), (tags::BALANCE, &[1])]);
        assert_eq!(TlvList::parse(&dup), Err(ProtocolError::UnexpectedTag(tags::BALANCE)));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(list) = TlvList::parse(&bytes) {
                // Parse then encode gives the input back for canonical input.
                let items: Vec<(u32, Vec<u8>)> = list.tags().map(|t| (t, list.get(t).unwrap().to_vec())).collect();
                let again: Vec<(u32, &[u8])> = items.iter().map(|(t, v)| (*t, v.as_slice())).collect();
                prop_assert_eq!(TlvList::parse(&encode_all(&again)).unwrap(), list);
            }
        }
    }
}
