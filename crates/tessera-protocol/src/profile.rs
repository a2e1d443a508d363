//! The customer profile and its signed encoding (spec §7).
//!
//! The card stores the signed profile as an opaque blob; terminals and the
//! issuer parse it with [`SignedProfile::parse`]. Signing and verification
//! live in `tessera-crypto`.

use core::fmt;

use crate::messages::CardId;
use crate::tlv::{encode, tags, TlvList};
use crate::ProtocolError;

/// Longest customer name, in UTF-8 bytes.
pub const MAX_NAME: usize = 64;
/// Longest home city, in UTF-8 bytes.
pub const MAX_CITY: usize = 48;
/// Longest preference list, in UTF-8 bytes including commas.
pub const MAX_PREFERENCES: usize = 64;
/// Length of an ECDSA P-256 signature in `r ‖ s` form.
pub const SIGNATURE_LEN: usize = 64;
/// Longest signed profile blob the card accepts (spec §6.1).
pub const MAX_PROFILE_BLOB: usize = 512;

/// A calendar date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    /// Year (1900–9999).
    pub year: u16,
    /// Month (1–12).
    pub month: u8,
    /// Day (1–31, checked against the month).
    pub day: u8,
}

impl Date {
    /// Builds a valid date.
    ///
    /// # Errors
    /// [`ProtocolError::InvalidValue`] (tag 0) if the date does not exist.
    pub fn new(year: u16, month: u8, day: u8) -> Result<Self, ProtocolError> {
        let leap = (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400);
        let days = match month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if leap => 29,
            2 => 28,
            _ => 0,
        };
        if !(1900..=9999).contains(&year) || day == 0 || day > days {
            return Err(ProtocolError::InvalidValue(0));
        }
        Ok(Self { year, month, day })
    }

    /// Parses `YYYY-MM-DD`.
    ///
    /// # Errors
    /// [`ProtocolError::InvalidValue`] on any other shape or an impossible
    /// date.
    pub fn parse_iso(s: &str) -> Result<Self, ProtocolError> {
        let bad = ProtocolError::InvalidValue(0);
        let mut it = s.split('-');
        let (Some(y), Some(m), Some(d), None) = (it.next(), it.next(), it.next(), it.next()) else {
            return Err(bad);
        };
        if y.len() != 4 || m.len() != 2 || d.len() != 2 {
            return Err(bad);
        }
        Self::new(
            y.parse().map_err(|_| bad.clone())?,
            m.parse().map_err(|_| bad.clone())?,
            d.parse().map_err(|_| bad)?,
        )
    }

    /// Days from 1970-01-01 to this date, negative before it (proleptic
    /// Gregorian calendar; Howard Hinnant's `days_from_civil`).
    pub fn days_since_epoch(self) -> i64 {
        let (m, d) = (i64::from(self.month), i64::from(self.day));
        let y = i64::from(self.year) - i64::from(m <= 2);
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400); // [0, 399]
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1; // [0, 365]
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
        era * 146_097 + doe - 719_468
    }

    /// The date `days` days after 1970-01-01 (Howard Hinnant's
    /// `civil_from_days`); callers keep it within the years 1900–9999.
    pub fn from_days_since_epoch(days: i64) -> Self {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097); // [0, 146096]
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
        let mp = (5 * doy + 2) / 153; // [0, 11], March-based
        let day = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
        let month = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
        let year = yoe + era * 400 + i64::from(month <= 2);
        Self {
            year: u16::try_from(year).unwrap_or(u16::MAX),
            month: u8::try_from(month).unwrap_or(1),
            day: u8::try_from(day).unwrap_or(1),
        }
    }

    /// Days since 1970-01-01 as an unsigned count (0 for earlier dates).
    pub fn to_unix_days(self) -> u32 {
        u32::try_from(self.days_since_epoch().max(0)).unwrap_or(u32::MAX)
    }

    /// The date `days` after 1970-01-01.
    pub fn from_unix_days(days: u32) -> Self {
        Self::from_days_since_epoch(i64::from(days))
    }

    fn to_bytes(self) -> [u8; 4] {
        let [a, b] = self.year.to_be_bytes();
        [a, b, self.month, self.day]
    }

    fn from_bytes(tag: u32, b: [u8; 4]) -> Result<Self, ProtocolError> {
        Self::new(u16::from_be_bytes([b[0], b[1]]), b[2], b[3]).map_err(|_| ProtocolError::InvalidValue(tag))
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// The customer profile: the personal data the card carries (spec §7.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// The card this profile is bound to.
    pub card_id: CardId,
    /// Profile version, incremented by the issuer on every update.
    pub version: u16,
    /// Customer name, UTF-8.
    pub name: String,
    /// Birth date.
    pub birth_date: Date,
    /// Home city, UTF-8.
    pub home_city: String,
    /// Household identifier (cards of one household share it).
    pub household: [u8; 8],
    /// Preferred categories (e.g. "coffee").
    pub preferences: Vec<String>,
    /// Loyalty tier (0 = base).
    pub tier: u8,
    /// First day the profile is valid.
    pub valid_from: Date,
    /// Last day the profile is valid.
    pub valid_until: Date,
}

impl Profile {
    /// Encodes the signed part of the profile (spec §7.1), in tag order.
    ///
    /// # Errors
    /// [`ProtocolError::InvalidValue`] when a text field is too long or a
    /// preference is empty or contains a comma.
    pub fn body_bytes(&self) -> Result<Vec<u8>, ProtocolError> {
        if self.name.is_empty() || self.name.len() > MAX_NAME {
            return Err(ProtocolError::InvalidValue(tags::NAME));
        }
        if self.home_city.len() > MAX_CITY {
            return Err(ProtocolError::InvalidValue(tags::HOME_CITY));
        }
        if self.preferences.iter().any(|p| p.is_empty() || p.contains(',')) {
            return Err(ProtocolError::InvalidValue(tags::PREFERENCES));
        }
        let prefs = self.preferences.join(",");
        if prefs.len() > MAX_PREFERENCES {
            return Err(ProtocolError::InvalidValue(tags::PREFERENCES));
        }
        let mut out = Vec::new();
        out.extend(encode(tags::CARD_ID, &self.card_id));
        out.extend(encode(tags::PROFILE_VERSION, &self.version.to_be_bytes()));
        out.extend(encode(tags::NAME, self.name.as_bytes()));
        out.extend(encode(tags::BIRTH_DATE, &self.birth_date.to_bytes()));
        out.extend(encode(tags::HOME_CITY, self.home_city.as_bytes()));
        out.extend(encode(tags::HOUSEHOLD, &self.household));
        out.extend(encode(tags::PREFERENCES, prefs.as_bytes()));
        out.extend(encode(tags::TIER, &[self.tier]));
        out.extend(encode(tags::VALID_FROM, &self.valid_from.to_bytes()));
        out.extend(encode(tags::VALID_UNTIL, &self.valid_until.to_bytes()));
        Ok(out)
    }

    /// Decodes the signed part of a profile.
    ///
    /// # Errors
    /// Any [`ProtocolError`] on malformed data, invalid UTF-8 or impossible
    /// dates.
    pub fn parse_body(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let l = TlvList::parse(bytes)?;
        l.only(&[
            tags::CARD_ID,
            tags::PROFILE_VERSION,
            tags::NAME,
            tags::BIRTH_DATE,
            tags::HOME_CITY,
            tags::HOUSEHOLD,
            tags::PREFERENCES,
            tags::TIER,
            tags::VALID_FROM,
            tags::VALID_UNTIL,
        ])?;
        let text = |tag: u32, max: usize| -> Result<String, ProtocolError> {
            let v = l.require(tag)?;
            if v.len() > max {
                return Err(ProtocolError::InvalidValue(tag));
            }
            String::from_utf8(v.to_vec()).map_err(|_| ProtocolError::InvalidValue(tag))
        };
        let prefs = text(tags::PREFERENCES, MAX_PREFERENCES)?;
        let [tier] = l.array::<1>(tags::TIER)?;
        let name = text(tags::NAME, MAX_NAME)?;
        if name.is_empty() {
            return Err(ProtocolError::InvalidValue(tags::NAME));
        }
        Ok(Self {
            card_id: l.array(tags::CARD_ID)?,
            version: u16::from_be_bytes(l.array(tags::PROFILE_VERSION)?),
            name,
            birth_date: Date::from_bytes(tags::BIRTH_DATE, l.array(tags::BIRTH_DATE)?)?,
            home_city: text(tags::HOME_CITY, MAX_CITY)?,
            household: l.array(tags::HOUSEHOLD)?,
            preferences: if prefs.is_empty() {
                Vec::new()
            } else {
                prefs.split(',').map(str::to_owned).collect()
            },
            tier,
            valid_from: Date::from_bytes(tags::VALID_FROM, l.array(tags::VALID_FROM)?)?,
            valid_until: Date::from_bytes(tags::VALID_UNTIL, l.array(tags::VALID_UNTIL)?)?,
        })
    }
}

/// A profile with the issuer's signature, as stored on the card (spec §7.2):
/// the body objects followed by the `5F37` signature object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedProfile {
    /// The decoded profile.
    pub profile: Profile,
    /// The exact signed bytes.
    pub body: Vec<u8>,
    /// ECDSA P-256 signature over SHA-256 of `body`, `r ‖ s`.
    pub signature: [u8; SIGNATURE_LEN],
}

impl SignedProfile {
    /// The blob as stored on the card.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.body.clone();
        out.extend(encode(tags::SIGNATURE, &self.signature));
        out
    }

    /// Splits and decodes a blob. The signature is not verified here.
    ///
    /// # Errors
    /// Any [`ProtocolError`] on malformed data.
    pub fn parse(blob: &[u8]) -> Result<Self, ProtocolError> {
        // The signature object is the last 67 bytes: tag 5F37, length 40.
        let sig_obj_len = 3 + SIGNATURE_LEN;
        if blob.len() < sig_obj_len || blob.len() > MAX_PROFILE_BLOB {
            return Err(ProtocolError::InvalidValue(tags::PROFILE));
        }
        let (body, sig_obj) = blob.split_at(blob.len() - sig_obj_len);
        let l = TlvList::parse(sig_obj)?;
        l.only(&[tags::SIGNATURE])?;
        let signature = l.array(tags::SIGNATURE)?;
        Ok(Self {
            profile: Profile::parse_body(body)?,
            body: body.to_vec(),
            signature,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn anna() -> Profile {
        Profile {
            card_id: [0x10, 0, 0, 0, 0, 0, 0, 1],
            version: 1,
            name: "Анна Петрова".into(),
            birth_date: Date::new(1990, 3, 14).unwrap(),
            home_city: "Нижний Новгород".into(),
            household: [7; 8],
            preferences: vec!["coffee".into(), "bakery".into()],
            tier: 1,
            valid_from: Date::new(2026, 1, 1).unwrap(),
            valid_until: Date::new(2030, 12, 31).unwrap(),
        }
    }

    #[test]
    fn utf8_profile_round_trips() {
        let p = anna();
        let sp = SignedProfile {
            body: p.body_bytes().unwrap(),
            profile: p,
            signature: [9; 64],
        };
        assert_eq!(SignedProfile::parse(&sp.to_bytes()).unwrap(), sp);
    }

    #[test]
    fn unix_days_round_trip() {
        assert_eq!(Date::new(1970, 1, 1).unwrap().to_unix_days(), 0);
        assert_eq!(Date::new(2026, 11, 27).unwrap().to_unix_days(), 20_784);
        assert_eq!(Date::from_unix_days(20_784), Date::new(2026, 11, 27).unwrap());
        for d in (0..40_000).step_by(7) {
            assert_eq!(Date::from_unix_days(d).to_unix_days(), d);
        }
    }

    #[test]
    fn dates() {
        assert!(Date::parse_iso("2024-02-29").is_ok());
        assert!(Date::parse_iso("2023-02-29").is_err());
        assert!(Date::parse_iso("2023-13-01").is_err());
        assert!(Date::parse_iso("23-01-01").is_err());
        assert_eq!(Date::parse_iso("1990-03-14").unwrap().to_string(), "1990-03-14");
    }

    proptest! {
        #[test]
        fn arbitrary_blobs_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = SignedProfile::parse(&bytes);
            let _ = Profile::parse_body(&bytes);
        }
    }
}
