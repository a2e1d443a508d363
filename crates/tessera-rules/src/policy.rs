//! Offline authorization at the till: the policy file, the hotlist, and
//! [`authorize`], which turns a card and a request into a [`Decision`].
//!
//! Everything here is pure: files come in as text (or through the small
//! `load` helpers), the time comes in as a number, and nothing is written.
//! The file formats, the order of the checks and the decision codes are
//! documented in `docs/terminal-policy.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use tessera_protocol::messages::{CardId, TxKind};
use tessera_protocol::profile::Date;

use crate::CardInfo;

/// The documented default policy file, built into the terminal.
pub const DEFAULT_POLICY_TOML: &str = include_str!("../policy.toml");

/// Largest multiplier a policy or campaign may give, in percent (×100).
pub const MAX_MULTIPLIER_PERCENT: u32 = 10_000;

/// Why a policy, hotlist or other terminal file was refused. One line each,
/// naming the key at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// What the operating system said.
        reason: String,
    },
    /// The file is not valid TOML (or not UTF-8).
    #[error("line {line}: {message}")]
    Syntax {
        /// 1-based line of the error.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A key the format does not know (a misspelling, usually).
    #[error("unknown key `{0}`")]
    UnknownKey(String),
    /// A required key is absent.
    #[error("missing key `{0}`")]
    MissingKey(String),
    /// A key has a value of the wrong type or out of range.
    #[error("`{key}`: {reason}")]
    BadValue {
        /// The key, dotted from the top of the file (`limits.max_earn_points`).
        key: String,
        /// What is wrong with the value.
        reason: String,
    },
}

/// Points rates: how a purchase becomes base points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PointsRates {
    /// Minor currency units in one unit (100 for cents).
    pub minor_units_per_unit: u64,
    /// Points per whole unit spent, before multipliers.
    pub base_points_per_unit: u32,
}

/// The currency of a policy without `points.currency`.
pub const DEFAULT_CURRENCY: &str = "EUR";

/// Per-transaction caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most points one earn may add.
    pub max_earn_points: u32,
    /// Most points one redemption may spend.
    pub max_redeem_points: u32,
    /// Largest purchase, in minor units, that may earn offline.
    pub max_purchase_minor: u64,
}

/// Offline velocity limits, evaluated on the card's own counters since its
/// last acknowledged settlement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VelocityLimits {
    /// Most redemptions between settlements.
    pub max_offline_redeems: u32,
    /// Most points redeemed between settlements.
    pub max_offline_points: u32,
}

/// The rules a terminal applies offline (see `policy.toml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Version of the policy, recorded with every transaction (0 only for
    /// the fail-closed fallback of [`Policy::default_policy`]).
    pub version: u32,
    /// Points rates.
    pub points: PointsRates,
    /// The currency's code as people read it (`EUR`; key `points.currency`,
    /// default [`DEFAULT_CURRENCY`]).
    pub currency: String,
    /// Multiplier in percent by purchase category (lower-case names).
    pub category_multipliers: BTreeMap<String, u32>,
    /// Further categories the till accepts at multiplier 100 (top-level
    /// `categories`, optional): with the multiplier categories and
    /// [`crate::display::OTHER_CATEGORY`], the list a clerk's category is
    /// checked against ([`Policy::known_categories`]).
    pub categories: BTreeSet<String>,
    /// Multiplier in percent by loyalty tier.
    pub tier_multipliers: BTreeMap<u8, u32>,
    /// Per-transaction caps.
    pub limits: Limits,
    /// Offline velocity limits.
    pub velocity: VelocityLimits,
    /// Largest tolerated lag of the terminal clock behind the card's last
    /// transaction, in seconds.
    pub max_clock_skew_secs: u32,
    /// SHA-256 of the exact file this policy was parsed from (all zero for
    /// the fail-closed fallback): journaled with each purchase decision, so
    /// the ledger recomputes its points under the very same policy.
    pub digest: [u8; 32],
}

impl Policy {
    /// The default policy: [`DEFAULT_POLICY_TOML`], parsed.
    ///
    /// The embedded file is checked by a unit test; should it ever fail to
    /// parse, this returns a fail-closed policy of version 0 that declines
    /// every earn and redemption rather than panicking.
    pub fn default_policy() -> Self {
        Self::from_toml(DEFAULT_POLICY_TOML).unwrap_or_else(|_| Self::fail_closed())
    }

    fn fail_closed() -> Self {
        Self {
            version: 0,
            points: PointsRates {
                minor_units_per_unit: 100,
                base_points_per_unit: 1,
            },
            currency: DEFAULT_CURRENCY.into(),
            category_multipliers: BTreeMap::new(),
            categories: BTreeSet::new(),
            tier_multipliers: BTreeMap::new(),
            limits: Limits {
                max_earn_points: 0,
                max_redeem_points: 0,
                max_purchase_minor: 0,
            },
            velocity: VelocityLimits {
                max_offline_redeems: 0,
                max_offline_points: 0,
            },
            max_clock_skew_secs: 0,
            digest: [0; 32],
        }
    }

    /// Parses a policy file.
    ///
    /// # Errors
    /// [`PolicyError::Syntax`] for invalid TOML, [`PolicyError::UnknownKey`],
    /// [`PolicyError::MissingKey`], and [`PolicyError::BadValue`] for a wrong
    /// type or an impossible value (zero divisor, zero cap, multiplier above
    /// [`MAX_MULTIPLIER_PERCENT`], category name not in lower case, …).
    pub fn from_toml(text: &str) -> Result<Self, PolicyError> {
        let root = toml_file::parse(text)?;
        toml_file::only(
            &root,
            "",
            &[
                "version",
                "categories",
                "points",
                "category_multipliers",
                "tier_multipliers",
                "limits",
                "velocity",
                "clock",
            ],
        )?;
        let version = toml_file::num(&root, "", "version", 1u32, u32::MAX)?;

        let t = toml_file::table(&root, "", "points")?;
        toml_file::only(
            t,
            "points",
            &["minor_units_per_unit", "base_points_per_unit", "currency"],
        )?;
        let currency = match t.get("currency") {
            None => DEFAULT_CURRENCY.to_owned(),
            Some(toml::Value::String(c))
                if (1..=8).contains(&c.len()) && c.chars().all(|ch| ch.is_ascii_alphabetic() || ch == '$') =>
            {
                c.clone()
            }
            Some(_) => {
                return Err(toml_file::bad(
                    "points.currency",
                    "a currency code of 1 to 8 letters in quotes, like \"EUR\"",
                ))
            }
        };
        let points = PointsRates {
            minor_units_per_unit: toml_file::num(t, "points", "minor_units_per_unit", 1u64, 1_000_000)?,
            base_points_per_unit: toml_file::num(t, "points", "base_points_per_unit", 1u32, 1_000_000)?,
        };
        let mut categories = BTreeSet::new();
        if let Some(v) = root.get("categories") {
            let toml::Value::Array(list) = v else {
                return Err(toml_file::bad("categories", "must be a list of category names"));
            };
            for (i, c) in list.iter().enumerate() {
                match c.as_str() {
                    Some(name) if is_category_name(name) => {
                        categories.insert(name.to_owned());
                    }
                    _ => {
                        return Err(toml_file::bad(
                            &format!("categories[{i}]"),
                            "a category name is lower case, without commas or spaces, at most 64 bytes",
                        ))
                    }
                }
            }
        }

        let t = toml_file::table(&root, "", "category_multipliers")?;
        let mut category_multipliers = BTreeMap::new();
        for (name, value) in t {
            let key = toml_file::join("category_multipliers", name);
            if !is_category_name(name) {
                return Err(PolicyError::BadValue {
                    key,
                    reason: "a category name is lower case, without commas or spaces, at most 64 bytes".into(),
                });
            }
            let m = toml_file::num_value(value, &key, 0u32, MAX_MULTIPLIER_PERCENT)?;
            category_multipliers.insert(name.clone(), m);
        }

        let t = toml_file::table(&root, "", "tier_multipliers")?;
        let mut tier_multipliers = BTreeMap::new();
        for (name, value) in t {
            let key = toml_file::join("tier_multipliers", name);
            let tier = name.parse::<u8>().map_err(|_| PolicyError::BadValue {
                key: key.clone(),
                reason: "a tier is a number from 0 to 255".into(),
            })?;
            let m = toml_file::num_value(value, &key, 0u32, MAX_MULTIPLIER_PERCENT)?;
            tier_multipliers.insert(tier, m);
        }

        let t = toml_file::table(&root, "", "limits")?;
        toml_file::only(
            t,
            "limits",
            &["max_earn_points", "max_redeem_points", "max_purchase_minor"],
        )?;
        let limits = Limits {
            max_earn_points: toml_file::num(t, "limits", "max_earn_points", 1u32, u32::MAX)?,
            max_redeem_points: toml_file::num(t, "limits", "max_redeem_points", 1u32, u32::MAX)?,
            max_purchase_minor: toml_file::num(t, "limits", "max_purchase_minor", 1u64, i64::MAX.unsigned_abs())?,
        };

        let t = toml_file::table(&root, "", "velocity")?;
        toml_file::only(t, "velocity", &["max_offline_redeems", "max_offline_points"])?;
        let velocity = VelocityLimits {
            max_offline_redeems: toml_file::num(t, "velocity", "max_offline_redeems", 0u32, u32::MAX)?,
            max_offline_points: toml_file::num(t, "velocity", "max_offline_points", 0u32, u32::MAX)?,
        };

        let t = toml_file::table(&root, "", "clock")?;
        toml_file::only(t, "clock", &["max_clock_skew_secs"])?;
        let max_clock_skew_secs = toml_file::num(t, "clock", "max_clock_skew_secs", 0u32, u32::MAX)?;

        Ok(Self {
            version,
            points,
            currency,
            category_multipliers,
            categories,
            tier_multipliers,
            limits,
            velocity,
            max_clock_skew_secs,
            digest: <sha2::Sha256 as sha2::Digest>::digest(text.as_bytes()).into(),
        })
    }

    /// Reads and parses a policy file **without checking its signature**
    /// (the back office, before signing it; tills use
    /// [`Policy::load_signed`]).
    ///
    /// # Errors
    /// [`PolicyError::Read`], or any error of [`Policy::from_toml`].
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        Self::from_toml(&toml_file::read(path)?)
    }

    /// Verifies the issuer's signature over the exact bytes of a policy
    /// file (`sig_hex`: the content of `policy.toml.sig`), then parses it:
    /// a till decides only under a policy the office signed, so an edited
    /// `policy.toml` is refused, never applied.
    ///
    /// # Errors
    /// [`crate::offers::OfferError::BadSignature`] for an edited file or
    /// another key's signature, [`crate::offers::OfferError::NotUtf8`],
    /// [`crate::offers::OfferError::File`] for a refused content.
    pub fn load_signed(
        toml_bytes: &[u8],
        sig_hex: &str,
        key: &tessera_crypto::sign::IssuerPublicKey,
    ) -> Result<Self, crate::offers::OfferError> {
        crate::offers::verify_signed(toml_bytes, sig_hex, key)?;
        let text = std::str::from_utf8(toml_bytes).map_err(|_| crate::offers::OfferError::NotUtf8)?;
        Ok(Self::from_toml(text)?)
    }

    /// The category multiplier of a purchase, in percent: the largest over
    /// its categories, a category not in the policy counting as 100; 100 for
    /// a purchase without categories. Returns the winning category too
    /// (`None` when the multiplier is the default 100).
    pub fn category_multiplier<'a>(&self, categories: &'a [String]) -> (u32, Option<&'a str>) {
        let mut best: Option<(u32, &str)> = None;
        for c in categories {
            let m = self
                .category_multipliers
                .get(&normalize_category(c))
                .copied()
                .unwrap_or(100);
            if best.is_none_or(|(b, _)| m > b) {
                best = Some((m, c.as_str()));
            }
        }
        match best {
            Some((m, c)) if m != 100 => (m, Some(c)),
            _ => (100, None),
        }
    }

    /// Every category a clerk may ring up: the multiplier categories, the
    /// `categories` list, and [`crate::display::OTHER_CATEGORY`].
    pub fn known_categories(&self) -> BTreeSet<String> {
        let mut k: BTreeSet<String> = self.category_multipliers.keys().cloned().collect();
        k.extend(self.categories.iter().cloned());
        k.insert(crate::display::OTHER_CATEGORY.to_owned());
        k
    }

    /// Minor units as money in the policy's currency: `1,234.50 EUR`.
    pub fn money(&self, minor: u64) -> String {
        crate::display::format_money(minor, self.points.minor_units_per_unit, &self.currency)
    }

    /// The tier multiplier in percent (100 for a tier not in the policy).
    pub fn tier_multiplier(&self, tier: u8) -> u32 {
        self.tier_multipliers.get(&tier).copied().unwrap_or(100)
    }
}

/// Whether `name` is a category name as policies and campaigns write it:
/// non-empty, lower case, no commas or white space, at most 64 bytes.
pub(crate) fn is_category_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.chars().any(|c| c == ',' || c.is_whitespace() || c.is_control())
        && name.to_lowercase() == name
}

/// The form in which categories are compared: trimmed, lower case.
pub(crate) fn normalize_category(c: &str) -> String {
    c.trim().to_lowercase()
}

/// The terminal's replica of the back office's list of blocked cards.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hotlist {
    /// Version published by the back office (0 for the empty list).
    pub version: u32,
    /// Blocked cards.
    pub cards: BTreeSet<CardId>,
}

impl Hotlist {
    /// The empty hotlist, version 0.
    pub fn empty() -> Self {
        Self::default()
    }

    /// The bytes the office signs for this list: `"tessera hotlist 1\n"`,
    /// the version in decimal and `"\n"`, then each card id as 16
    /// upper-case hex digits and `"\n"`, in ascending order.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut v = format!("tessera hotlist 1\n{}\n", self.version).into_bytes();
        for c in &self.cards {
            v.extend_from_slice(hex::encode_upper(c).as_bytes());
            v.push(b'\n');
        }
        v
    }

    /// Parses a hotlist file and checks the office's signature over its
    /// content ([`Hotlist::signed_bytes`]; `sig_hex` is `hotlist.toml.sig`):
    /// the till's local copy is what the office published, or refused.
    ///
    /// # Errors
    /// [`crate::offers::OfferError::BadSignature`] for an edited list or
    /// another key's signature; [`crate::offers::OfferError::File`] for a
    /// refused content.
    pub fn load_signed(
        text: &str,
        sig_hex: &str,
        key: &tessera_crypto::sign::IssuerPublicKey,
    ) -> Result<Self, crate::offers::OfferError> {
        let list = Self::from_toml(text)?;
        crate::offers::verify_signed(&list.signed_bytes(), sig_hex, key)?;
        Ok(list)
    }

    /// Parses a hotlist file: `version = N` and `cards = ["1000000000000001",
    /// …]`, card ids as 16 hex digits.
    ///
    /// # Errors
    /// [`PolicyError`] naming the key (`cards[3]` for the fourth card id).
    pub fn from_toml(text: &str) -> Result<Self, PolicyError> {
        let root = toml_file::parse(text)?;
        toml_file::only(&root, "", &["version", "cards"])?;
        let version = toml_file::num(&root, "", "version", 1u32, u32::MAX)?;
        let list = match toml_file::get(&root, "", "cards")? {
            toml::Value::Array(a) => a,
            _ => return Err(toml_file::bad("cards", "must be a list of card ids")),
        };
        let mut cards = BTreeSet::new();
        for (i, v) in list.iter().enumerate() {
            let key = format!("cards[{i}]");
            let id = v
                .as_str()
                .and_then(parse_card_id)
                .ok_or_else(|| toml_file::bad(&key, "a card id is 16 hex digits in quotes"))?;
            cards.insert(id);
        }
        Ok(Self { version, cards })
    }

    /// Reads and parses a hotlist file.
    ///
    /// # Errors
    /// [`PolicyError::Read`], or any error of [`Hotlist::from_toml`].
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        Self::from_toml(&toml_file::read(path)?)
    }

    /// Whether the card is blocked.
    pub fn contains(&self, card: &CardId) -> bool {
        self.cards.contains(card)
    }
}

fn parse_card_id(s: &str) -> Option<CardId> {
    if s.len() != 16 {
        return None;
    }
    hex::decode(s).ok()?.try_into().ok()
}

/// What the terminal is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxRequest {
    /// Earn, redeem or a refund.
    pub kind: TxKind,
    /// Points to add or spend (for an earn, usually the total of a
    /// [`Quote`](crate::offers::Quote)).
    pub points: u32,
    /// The purchase in minor units (0 when there is none).
    pub purchase_minor: u64,
    /// Categories of the purchase (for the quote and the journal;
    /// [`authorize`] does not look at them).
    pub categories: Vec<String>,
}

/// Why the terminal says no. Codes are stable (`D01`…).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeclineReason {
    /// `D01`: the card is on the hotlist.
    Hotlisted,
    /// `D02`: the profile's last valid day has passed.
    ProfileExpired {
        /// Last valid day.
        valid_until: Date,
    },
    /// `D03`: the profile is not valid yet.
    ProfileNotYetValid {
        /// First valid day.
        valid_from: Date,
        /// The till's date (its clock may be the one that is wrong).
        today: Date,
    },
    /// `D04`: zero points: nothing to earn or redeem.
    ZeroAmount,
    /// `D05`: the purchase is above the offline limit. No longer decided
    /// ([`authorize`] refers it, `R05`); kept to read older journals.
    PurchaseTooLarge {
        /// The limit, in minor units.
        max_minor: u64,
        /// Minor units per unit (to show the limit as money).
        minor_units_per_unit: u64,
    },
    /// `D06`: more points than one earn (or its refund) may add. No longer
    /// decided ([`authorize`] refers it, `R06`); kept to read older journals.
    AboveEarnCap {
        /// The cap.
        max: u32,
    },
    /// `D07`: more points than one redemption (or its refund) may spend.
    AboveRedeemCap {
        /// The cap.
        max: u32,
    },
    /// `D08`: the card's balance does not cover the debit.
    InsufficientBalance {
        /// The card's balance.
        balance: u32,
        /// The points asked.
        requested: u32,
    },
    /// `D09`: the original transaction was already refunded (known from the
    /// terminal's journal).
    RefundAlreadyDone,
    /// `D10`: the original transaction of a refund is not in the terminal's
    /// journal.
    RefundUnknownOriginal,
    /// The office declined the operation online (card application v2.2):
    /// its code (`O01`–`O08`, or `D01`, `D08` as the office saw them) and
    /// its line for the clerk.
    Office {
        /// The office's code, one of [`OFFICE_CODES`] (`O00` for a code
        /// this till does not know).
        code: &'static str,
        /// The office's line for the clerk.
        message: String,
    },
    /// `O09`: the office did not answer an online authorization in time,
    /// and the till's policy declines without an answer.
    OfficeUnreachable,
    /// `D11`: the transaction named for a refund is itself a refund; only
    /// earns and redemptions can be refunded.
    RefundOfRefund {
        /// The refund's card counter.
        original: u32,
    },
    /// `C01`–`C08`: the office approval code the clerk typed does not
    /// approve this operation (see [`ApprovalRefusal`]).
    Approval(ApprovalRefusal),
}

/// Why the till refused an office approval code typed for a referred
/// operation (`docs/terminal-policy.md`, "Referral approval codes"). The
/// card was not touched. Codes are stable: `C01`–`C05` are codes that did
/// not verify and count towards the till's limit of wrong codes per hour.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApprovalRefusal {
    /// `C01`: the code approves another kind of operation.
    OtherKind {
        /// What it approves (`earn`, `redeem`, `refund`).
        approves: &'static str,
        /// What was asked.
        asked: &'static str,
    },
    /// `C02`: the code is for another till.
    OtherTerminal,
    /// `C03`: the code is for another card.
    OtherCard,
    /// `C04`: the code is for another amount.
    OtherAmount,
    /// `C05`: the office did not issue this code for this operation.
    NotIssued,
    /// `C06`: the code was genuine but has expired.
    Expired {
        /// Expiry, Unix seconds.
        at: u32,
    },
    /// `C07`: the code was used already (single use).
    AlreadyUsed {
        /// Journal sequence of the decision that used it.
        seq: u32,
    },
    /// `C08`: too many wrong codes at this till within the hour.
    TooManyAttempts {
        /// Wrong codes allowed per hour.
        limit: u32,
        /// When the next code is accepted (Unix seconds).
        retry_at: u32,
    },
}

impl ApprovalRefusal {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::OtherKind { .. } => "C01",
            Self::OtherTerminal => "C02",
            Self::OtherCard => "C03",
            Self::OtherAmount => "C04",
            Self::NotIssued => "C05",
            Self::Expired { .. } => "C06",
            Self::AlreadyUsed { .. } => "C07",
            Self::TooManyAttempts { .. } => "C08",
        }
    }

    /// The codes of wrong codes (counted towards the hourly limit).
    pub const WRONG_CODES: [&'static str; 5] = ["C01", "C02", "C03", "C04", "C05"];

    /// One line for the clerk.
    pub fn message(&self) -> String {
        match self {
            Self::OtherKind { approves, asked } => {
                format!("This approval code is for a {approves}, not a {asked} — check the operation with the office")
            }
            Self::OtherTerminal => "This approval code is for another till — the office must issue one for this till".into(),
            Self::OtherCard => "This approval code is for another card — check the card with the office".into(),
            Self::OtherAmount => "This approval code is for another amount — check the amount with the office".into(),
            Self::NotIssued => {
                "This approval code was not issued for this operation — ask the office to read it again".into()
            }
            Self::Expired { at } => format!(
                "This approval code expired at {} UTC — ask the office for a new one",
                utc_minute(*at)
            ),
            Self::AlreadyUsed { seq } => {
                format!("This approval code was already used (journal #{seq}) — a code approves one operation")
            }
            Self::TooManyAttempts { limit, retry_at } => format!(
                "{limit} wrong approval codes within the hour at this till — no code is accepted before {} UTC; call the office",
                utc_minute(*retry_at)
            ),
        }
    }
}

/// `YYYY-MM-DD HH:MM` of a Unix time, UTC.
fn utc_minute(secs: u32) -> String {
    let day = secs % 86_400;
    format!("{} {:02}:{:02}", date_from_unix(secs), day / 3600, day % 3600 / 60)
}

impl DeclineReason {
    /// The stable code (`D01`–`D11`).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Hotlisted => "D01",
            Self::ProfileExpired { .. } => "D02",
            Self::ProfileNotYetValid { .. } => "D03",
            Self::ZeroAmount => "D04",
            Self::PurchaseTooLarge { .. } => "D05",
            Self::AboveEarnCap { .. } => "D06",
            Self::AboveRedeemCap { .. } => "D07",
            Self::InsufficientBalance { .. } => "D08",
            Self::RefundAlreadyDone => "D09",
            Self::RefundUnknownOriginal => "D10",
            Self::Approval(a) => a.code(),
            Self::Office { code, .. } => code,
            Self::OfficeUnreachable => "O09",
            Self::RefundOfRefund { .. } => "D11",
        }
    }

    /// One line for the clerk.
    pub fn message(&self) -> String {
        match self {
            Self::Hotlisted => "Card blocked — please keep the card and call the office".into(),
            Self::ProfileExpired { valid_until } => {
                format!("Card expired on {valid_until} — the customer needs a new card")
            }
            Self::ProfileNotYetValid { valid_from, today } => format!(
                "Card valid from {valid_from}, but this till's clock says {today} — check the till's date; if it is right, the card cannot be used yet"
            ),
            Self::ZeroAmount => "Nothing to earn or redeem: zero points".into(),
            Self::PurchaseTooLarge {
                max_minor,
                minor_units_per_unit,
            } => format!(
                "Purchase above the offline limit of {} — call the office",
                money(*max_minor, *minor_units_per_unit)
            ),
            Self::AboveEarnCap { max } => format!("At most {max} points can be earned at once — call the office"),
            Self::AboveRedeemCap { max } => format!("At most {max} points can be redeemed at once"),
            Self::InsufficientBalance { balance, requested } => {
                format!("Not enough points: the card has {balance}, {requested} asked")
            }
            Self::RefundAlreadyDone => "Already refunded — a transaction can be refunded only once".into(),
            Self::RefundUnknownOriginal => {
                "Original transaction not found at this till — refund at the original till or call the office".into()
            }
            Self::Approval(a) => a.message(),
            Self::Office { message, .. } => message.clone(),
            Self::OfficeUnreachable => {
                "The office did not answer in time — the operation is declined; try again or call the office".into()
            }
            Self::RefundOfRefund { original } => format!(
                "Transaction #{original} is itself a refund — only an earn or a redemption can be refunded"
            ),
        }
    }
}

/// The codes an office's online decline may carry (`docs/settlement.md`,
/// "Online authorization"); any other is read as `O00`.
pub const OFFICE_CODES: [&str; 10] = ["O01", "O02", "D01", "O03", "O04", "O05", "D08", "O06", "O07", "O08"];

impl DeclineReason {
    /// The office's decline with `code` and `message` as it sent them.
    pub fn office(code: &str, message: &str) -> Self {
        Self::Office {
            code: OFFICE_CODES.into_iter().find(|c| *c == code).unwrap_or("O00"),
            message: message.chars().filter(|c| !c.is_control()).take(200).collect(),
        }
    }
}

/// An amount of minor units as money: `1000000` at 100 per unit is
/// `10000.00`; with a unit that is not a power of ten, the minor units.
fn money(minor: u64, per_unit: u64) -> String {
    let mut digits = 0;
    let mut p = 1u64;
    while p < per_unit {
        p = p.saturating_mul(10);
        digits += 1;
    }
    if p != per_unit {
        return format!("{minor} minor units");
    }
    if digits == 0 {
        return minor.to_string();
    }
    format!("{}.{:0digits$}", minor / per_unit, minor % per_unit)
}

/// Why the terminal cannot decide alone: the back office must approve.
/// Codes are stable (`R01`…).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReferReason {
    /// `R01`: one more redemption would exceed the offline count limit.
    VelocityCount {
        /// The limit.
        max: u32,
    },
    /// `R02`: the points would exceed the offline points limit.
    VelocityPoints {
        /// The limit.
        max: u32,
    },
    /// `R03`: the terminal clock is behind the card's last transaction by
    /// more than the tolerated skew.
    ClockBehindCard {
        /// Time of the card's last transaction (Unix seconds).
        card_time: u32,
        /// The terminal's time (Unix seconds).
        now: u32,
    },
    /// `R04`: the refund's original has left the card's 8-record log; the
    /// card refuses it offline (`6A88`) and only the office can decide.
    RefundOutsideLog {
        /// The original's counter.
        original: u32,
    },
    /// `R05`: the purchase is above the offline limit: only the office can
    /// approve it (it was the decline `D05` before).
    PurchaseAboveLimit {
        /// The limit, in minor units.
        max_minor: u64,
        /// Minor units per unit (to show the limit as money).
        minor_units_per_unit: u64,
        /// The policy's currency.
        currency: String,
    },
    /// `R06`: more points than one earn (or its refund) may add offline: the
    /// office decides (it was the decline `D06` before).
    AboveEarnCap {
        /// The cap.
        max: u32,
    },
}

impl ReferReason {
    /// The stable code (`R01`–`R06`).
    pub fn code(&self) -> &'static str {
        match self {
            Self::VelocityCount { .. } => "R01",
            Self::VelocityPoints { .. } => "R02",
            Self::ClockBehindCard { .. } => "R03",
            Self::RefundOutsideLog { .. } => "R04",
            Self::PurchaseAboveLimit { .. } => "R05",
            Self::AboveEarnCap { .. } => "R06",
        }
    }

    /// One line for the clerk.
    pub fn message(&self) -> String {
        match self {
            Self::VelocityCount { max } => {
                format!("Offline limit of {max} redemptions reached on this card — call the office for approval")
            }
            Self::VelocityPoints { max } => {
                format!("Offline limit of {max} redeemed points reached on this card — call the office for approval")
            }
            Self::ClockBehindCard { .. } => {
                "This till's clock is behind the card's last transaction — check the date and time, or call the office"
                    .into()
            }
            Self::RefundOutsideLog { original } => format!(
                "Transaction #{original} is too old for an offline refund (no longer on the card) — call the office"
            ),
            Self::PurchaseAboveLimit {
                max_minor,
                minor_units_per_unit,
                currency,
            } => format!(
                "Purchase above the offline limit of {} — call the office",
                crate::display::format_money(*max_minor, *minor_units_per_unit, currency)
            ),
            Self::AboveEarnCap { max } => format!(
                "At most {} points can be earned at once offline — call the office",
                crate::display::format_points(u64::from(*max))
            ),
        }
    }
}

/// The terminal's answer to a [`TxRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead with the card transaction.
    Approve,
    /// No.
    Decline(DeclineReason),
    /// Only the back office can approve; the terminal does not transact.
    Refer(ReferReason),
}

impl Decision {
    /// The stable code: `A00`, `D01`–`D11`, `R01`–`R06`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Approve => "A00",
            Self::Decline(r) => r.code(),
            Self::Refer(r) => r.code(),
        }
    }

    /// One line for the clerk.
    pub fn message(&self) -> String {
        match self {
            Self::Approve => "Approved".into(),
            Self::Decline(r) => r.message(),
            Self::Refer(r) => r.message(),
        }
    }

    /// Whether the transaction may go ahead.
    pub fn is_approved(&self) -> bool {
        matches!(self, Self::Approve)
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code(), self.message())
    }
}

/// Decides offline whether `req` may be done on `card` at `now_unix`.
///
/// Pure: no I/O, no clock but `now_unix`. The checks, in this order, the
/// first failing one giving the answer:
///
/// 1. the card is on the hotlist → `D01`;
/// 2. today (UTC, from `now_unix`) is after the profile's `valid_until` →
///    `D02`, or before its `valid_from` → `D03`;
/// 3. the card's last transaction is later than `now_unix` by more than
///    `max_clock_skew_secs` → refer `R03`;
/// 4. zero points → `D04`; a purchase above `max_purchase_minor` → refer
///    `R05`; an earn or earn refund above `max_earn_points` → refer `R06`; a redemption
///    or redemption refund above `max_redeem_points` → `D07`;
/// 5. a debit (redemption, earn refund) above the card's balance → `D08`;
/// 6. for a redemption only, the card's own velocity counters:
///    `unsettled_redeems + 1 > max_offline_redeems` → refer `R01`,
///    `unsettled_points + points > max_offline_points` → refer `R02`.
///
/// Refund checks against the journal (`D09`, `D10`) are the journal's.
pub fn authorize(policy: &Policy, hotlist: &Hotlist, card: &CardInfo, req: &TxRequest, now_unix: u32) -> Decision {
    use DeclineReason as D;
    if hotlist.contains(&card.card_id) {
        return Decision::Decline(D::Hotlisted);
    }
    let today = date_from_unix(now_unix);
    if today > card.profile.valid_until {
        return Decision::Decline(D::ProfileExpired {
            valid_until: card.profile.valid_until,
        });
    }
    if today < card.profile.valid_from {
        return Decision::Decline(D::ProfileNotYetValid {
            valid_from: card.profile.valid_from,
            today,
        });
    }
    if let Some(last) = &card.last_record {
        if last.time > now_unix.saturating_add(policy.max_clock_skew_secs) {
            return Decision::Refer(ReferReason::ClockBehindCard {
                card_time: last.time,
                now: now_unix,
            });
        }
    }
    if req.points == 0 {
        return Decision::Decline(D::ZeroAmount);
    }
    if req.purchase_minor > policy.limits.max_purchase_minor {
        return Decision::Refer(ReferReason::PurchaseAboveLimit {
            max_minor: policy.limits.max_purchase_minor,
            minor_units_per_unit: policy.points.minor_units_per_unit,
            currency: policy.currency.clone(),
        });
    }
    match req.kind {
        TxKind::Earn | TxKind::RefundEarn if req.points > policy.limits.max_earn_points => {
            return Decision::Refer(ReferReason::AboveEarnCap {
                max: policy.limits.max_earn_points,
            });
        }
        TxKind::Redeem | TxKind::RefundRedeem if req.points > policy.limits.max_redeem_points => {
            return Decision::Decline(D::AboveRedeemCap {
                max: policy.limits.max_redeem_points,
            });
        }
        _ => {}
    }
    if !req.kind.is_credit() && req.points > card.balance {
        return Decision::Decline(D::InsufficientBalance {
            balance: card.balance,
            requested: req.points,
        });
    }
    if req.kind == TxKind::Redeem {
        let v = &card.velocity;
        let max = policy.velocity.max_offline_redeems;
        if u64::from(v.unsettled_redeems) + 1 > u64::from(max) {
            return Decision::Refer(ReferReason::VelocityCount { max });
        }
        let max = policy.velocity.max_offline_points;
        if u64::from(v.unsettled_points) + u64::from(req.points) > u64::from(max) {
            return Decision::Refer(ReferReason::VelocityPoints { max });
        }
    }
    Decision::Approve
}

/// [`authorize`] for an operation the office approved with a referral
/// code the till verified: the same checks in the same order, except the
/// limits an office approval lifts — the purchase limit (`R05`), the earn
/// and redemption caps (`R06`, `D07`) and the offline velocity limits
/// (`R01`, `R02`). What a code cannot override: the hotlist (`D01`), the
/// card's validity dates (`D02`, `D03`), a till clock behind the card
/// (`R03`), zero points (`D04`), the card's balance (`D08`), the journal's
/// refund checks (`D09`, `D10`, `D11`), and everything the card itself refuses
/// (a refund whose original has left its log, `R04`; a balance overflow).
pub fn authorize_approved(
    policy: &Policy,
    hotlist: &Hotlist,
    card: &CardInfo,
    req: &TxRequest,
    now_unix: u32,
) -> Decision {
    let mut lifted = policy.clone();
    lifted.limits = Limits {
        max_earn_points: u32::MAX,
        max_redeem_points: u32::MAX,
        max_purchase_minor: u64::MAX,
    };
    lifted.velocity = VelocityLimits {
        max_offline_redeems: u32::MAX,
        max_offline_points: u32::MAX,
    };
    authorize(&lifted, hotlist, card, req, now_unix)
}

/// The UTC calendar date of a Unix time.
pub fn date_from_unix(secs: u32) -> Date {
    Date::from_unix_days(secs / 86_400)
}

/// Days from 1970-01-01 to `date`, the unit of
/// [`Visits::last_day`](tessera_protocol::messages::Visits::last_day).
pub fn days_since_epoch(date: Date) -> i64 {
    date.days_since_epoch()
}

/// Reading the terminal's TOML files with errors that name the key.
pub(crate) mod toml_file {
    use std::path::Path;

    use tessera_protocol::profile::Date;

    use super::PolicyError;

    /// Reads a file as UTF-8 text.
    pub(crate) fn read(path: &Path) -> Result<String, PolicyError> {
        let bytes = std::fs::read(path).map_err(|e| PolicyError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        String::from_utf8(bytes).map_err(|e| PolicyError::Syntax {
            line: 1 + e.as_bytes()[..e.utf8_error().valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count(),
            message: "the file is not UTF-8 text".into(),
        })
    }

    /// Parses TOML text into its top-level table.
    pub(crate) fn parse(text: &str) -> Result<toml::Table, PolicyError> {
        text.parse::<toml::Table>().map_err(|e| {
            let at = e.span().map_or(0, |s| s.start.min(text.len()));
            PolicyError::Syntax {
                line: 1 + text.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count(),
                message: e.message().trim().replace('\n', " "),
            }
        })
    }

    /// `path.key`, or `key` at the top.
    pub(crate) fn join(path: &str, key: &str) -> String {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    }

    /// A [`PolicyError::BadValue`].
    pub(crate) fn bad(key: &str, reason: &str) -> PolicyError {
        PolicyError::BadValue {
            key: key.to_owned(),
            reason: reason.to_owned(),
        }
    }

    /// Refuses any key of `t` not in `allowed`.
    pub(crate) fn only(t: &toml::Table, path: &str, allowed: &[&str]) -> Result<(), PolicyError> {
        match t.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(k) => Err(PolicyError::UnknownKey(join(path, k))),
            None => Ok(()),
        }
    }

    /// A required value.
    pub(crate) fn get<'a>(t: &'a toml::Table, path: &str, key: &str) -> Result<&'a toml::Value, PolicyError> {
        t.get(key).ok_or_else(|| PolicyError::MissingKey(join(path, key)))
    }

    /// A required sub-table.
    pub(crate) fn table<'a>(t: &'a toml::Table, path: &str, key: &str) -> Result<&'a toml::Table, PolicyError> {
        get(t, path, key)?
            .as_table()
            .ok_or_else(|| bad(&join(path, key), "must be a table"))
    }

    /// A required integer in `min..=max`.
    pub(crate) fn num<T>(t: &toml::Table, path: &str, key: &str, min: T, max: T) -> Result<T, PolicyError>
    where
        T: TryFrom<i64> + PartialOrd + std::fmt::Display + Copy,
    {
        num_value(get(t, path, key)?, &join(path, key), min, max)
    }

    /// An integer value in `min..=max`.
    pub(crate) fn num_value<T>(v: &toml::Value, key: &str, min: T, max: T) -> Result<T, PolicyError>
    where
        T: TryFrom<i64> + PartialOrd + std::fmt::Display + Copy,
    {
        let range = || bad(key, &format!("must be a whole number from {min} to {max}"));
        let i = v.as_integer().ok_or_else(range)?;
        let n = T::try_from(i).map_err(|_| range())?;
        if n < min || n > max {
            return Err(range());
        }
        Ok(n)
    }

    /// A required non-empty string of at most `max_len` bytes without control
    /// characters.
    pub(crate) fn text<'a>(t: &'a toml::Table, path: &str, key: &str, max_len: usize) -> Result<&'a str, PolicyError> {
        let k = join(path, key);
        let s = get(t, path, key)?
            .as_str()
            .ok_or_else(|| bad(&k, "must be a quoted string"))?;
        if s.trim().is_empty() || s.len() > max_len || s.chars().any(char::is_control) {
            return Err(bad(
                &k,
                &format!("must be non-empty text of at most {max_len} bytes, on one line"),
            ));
        }
        Ok(s)
    }

    /// A required date: a TOML local date (`2026-01-01`) or the same in
    /// quotes.
    pub(crate) fn date(t: &toml::Table, path: &str, key: &str) -> Result<Date, PolicyError> {
        let k = join(path, key);
        let wrong = || bad(&k, "must be a date, YYYY-MM-DD");
        let s = match get(t, path, key)? {
            toml::Value::Datetime(d) if d.time.is_none() && d.offset.is_none() => d.to_string(),
            toml::Value::String(s) => s.clone(),
            _ => return Err(wrong()),
        };
        Date::parse_iso(&s).map_err(|_| wrong())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tessera_protocol::messages::{LogRecord, Velocity, Visits};
    use tessera_protocol::profile::Profile;

    /// 2026-03-16 12:00:00 UTC.
    const NOW: u32 = 1_773_662_400;

    fn card() -> CardInfo {
        CardInfo {
            card_id: [0x10, 0, 0, 0, 0, 0, 0, 1],
            key_version: 1,
            balance: 500,
            counter: 7,
            last_record: Some(record(NOW - 3600)),
            profile: Profile {
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
            },
            profile_digest: [0; 32],
            profile_cached: false,
            visits: Visits {
                count: 4,
                last_day: 20_500,
                last_store: 1,
            },
            velocity: Velocity::default(),
        }
    }

    fn record(time: u32) -> LogRecord {
        LogRecord {
            counter: 7,
            kind: TxKind::Earn,
            amount: 10,
            balance_after: 500,
            terminal_id: 1,
            terminal_seq: 1,
            time,
            reference: 0,
            online: false,
            certificate: [0; 16],
        }
    }

    fn req(kind: TxKind, points: u32) -> TxRequest {
        TxRequest {
            kind,
            points,
            purchase_minor: 0,
            categories: vec![],
        }
    }

    fn decide(card: &CardInfo, req: &TxRequest) -> Decision {
        authorize(&Policy::default_policy(), &Hotlist::empty(), card, req, NOW)
    }

    #[test]
    fn default_policy_file_parses_with_documented_values() {
        let p = Policy::from_toml(DEFAULT_POLICY_TOML).unwrap();
        assert_eq!(p, Policy::default_policy());
        assert_eq!(p.version, 1);
        assert_eq!(p.points.minor_units_per_unit, 100);
        assert_eq!(p.points.base_points_per_unit, 1);
        assert_eq!(p.category_multipliers["coffee"], 200);
        assert_eq!(p.category_multipliers["tobacco"], 0);
        assert_eq!(p.tier_multiplier(1), 110);
        assert_eq!(p.tier_multiplier(2), 125);
        assert_eq!(p.tier_multiplier(9), 100);
        assert_eq!(p.limits.max_earn_points, 5000);
        assert_eq!(p.limits.max_redeem_points, 10_000);
        assert_eq!(p.limits.max_purchase_minor, 1_000_000);
        assert_eq!(p.velocity.max_offline_redeems, 5);
        assert_eq!(p.velocity.max_offline_points, 20_000);
        assert_eq!(p.max_clock_skew_secs, 600);
    }

    #[test]
    fn category_multiplier_is_the_largest_unlisted_counting_100() {
        let p = Policy::default_policy();
        let cats = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(p.category_multiplier(&cats(&[])), (100, None));
        assert_eq!(p.category_multiplier(&cats(&["tobacco"])), (0, Some("tobacco")));
        assert_eq!(p.category_multiplier(&cats(&["tobacco", "news"])), (100, None));
        assert_eq!(
            p.category_multiplier(&cats(&["bakery", "Coffee"])),
            (200, Some("Coffee"))
        );
    }

    #[test]
    fn unknown_keys_are_rejected_naming_them() {
        let with = |from: &str, to: &str| DEFAULT_POLICY_TOML.replacen(from, to, 1);
        let e = Policy::from_toml(&with("max_earn_points", "max_earn_pionts")).unwrap_err();
        assert_eq!(e, PolicyError::UnknownKey("limits.max_earn_pionts".into()));
        assert_eq!(e.to_string(), "unknown key `limits.max_earn_pionts`");
        let e = Policy::from_toml(&format!("colour = 1\n{DEFAULT_POLICY_TOML}")).unwrap_err();
        assert_eq!(e, PolicyError::UnknownKey("colour".into()));
        let e = Policy::from_toml(&with("[clock]", "[clocks]")).unwrap_err();
        assert_eq!(e, PolicyError::UnknownKey("clocks".into()));
        let e = Hotlist::from_toml("version = 1\ncards = []\nextra = true\n").unwrap_err();
        assert_eq!(e, PolicyError::UnknownKey("extra".into()));
    }

    #[test]
    fn impossible_values_are_rejected_naming_the_key() {
        let with = |from: &str, to: &str| Policy::from_toml(&DEFAULT_POLICY_TOML.replacen(from, to, 1)).unwrap_err();
        let key = |e: PolicyError| match e {
            PolicyError::BadValue { key, .. } => key,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            key(with("minor_units_per_unit = 100", "minor_units_per_unit = 0")),
            "points.minor_units_per_unit"
        );
        assert_eq!(
            key(with("max_earn_points = 5000", "max_earn_points = -5")),
            "limits.max_earn_points"
        );
        assert_eq!(
            key(with("max_redeem_points = 10000", "max_redeem_points = \"lots\"")),
            "limits.max_redeem_points"
        );
        assert_eq!(
            key(with("coffee = 200", "coffee = 10001")),
            "category_multipliers.coffee"
        );
        assert_eq!(key(with("coffee = 200", "Coffee = 200")), "category_multipliers.Coffee");
        assert_eq!(key(with("3 = 150", "256 = 150")), "tier_multipliers.256");
        assert_eq!(key(with("version = 1", "version = 0")), "version");
        assert_eq!(
            with("max_clock_skew_secs = 600", ""),
            PolicyError::MissingKey("clock.max_clock_skew_secs".into())
        );
        let e = with("[velocity]", "[velocity");
        assert!(matches!(e, PolicyError::Syntax { .. }), "{e:?}");
        assert!(!e.to_string().contains('\n'));
        assert!(!with("coffee = 200", "coffee = 1e3").to_string().contains('\n'));
    }

    #[test]
    fn hotlist_file() {
        let h = Hotlist::from_toml("version = 7\ncards = [\"1000000000000001\", \"10000000000000AB\"]\n").unwrap();
        assert_eq!(h.version, 7);
        assert!(h.contains(&[0x10, 0, 0, 0, 0, 0, 0, 1]));
        assert!(h.contains(&[0x10, 0, 0, 0, 0, 0, 0, 0xAB]));
        assert!(!h.contains(&[0x10, 0, 0, 0, 0, 0, 0, 2]));
        assert!(!Hotlist::empty().contains(&[0x10, 0, 0, 0, 0, 0, 0, 1]));
        for bad in ["\"10000000000001\"", "\"100000000000000G\"", "1"] {
            let e = Hotlist::from_toml(&format!("version = 1\ncards = [\"1000000000000001\", {bad}]")).unwrap_err();
            assert_eq!(
                e,
                PolicyError::BadValue {
                    key: "cards[1]".into(),
                    reason: "a card id is 16 hex digits in quotes".into()
                }
            );
        }
        assert_eq!(
            Hotlist::from_toml("cards = []").unwrap_err(),
            PolicyError::MissingKey("version".into())
        );
    }

    #[test]
    fn load_reports_missing_files() {
        let e = Policy::load(Path::new("/nonexistent/policy.toml")).unwrap_err();
        assert!(matches!(e, PolicyError::Read { .. }));
        assert!(e.to_string().starts_with("cannot read /nonexistent/policy.toml: "));
        assert!(matches!(
            Hotlist::load(Path::new("/nonexistent/hotlist.toml")),
            Err(PolicyError::Read { .. })
        ));
    }

    #[test]
    fn dates_from_unix_time() {
        assert_eq!(date_from_unix(0), Date::new(1970, 1, 1).unwrap());
        assert_eq!(date_from_unix(NOW), Date::new(2026, 3, 16).unwrap());
        assert_eq!(date_from_unix(951_782_400), Date::new(2000, 2, 29).unwrap());
        assert_eq!(date_from_unix(u32::MAX), Date::new(2106, 2, 7).unwrap());
        assert_eq!(days_since_epoch(Date::new(1970, 1, 1).unwrap()), 0);
        assert_eq!(days_since_epoch(Date::new(1900, 3, 1).unwrap()), -25_508);
        // Every day from 1970 to 2106 round-trips.
        for day in 0..=u32::MAX / 86_400 {
            let d = date_from_unix(day * 86_400);
            assert!(Date::new(d.year, d.month, d.day).is_ok(), "{d}");
            assert_eq!(days_since_epoch(d), i64::from(day));
        }
    }

    #[test]
    fn approves_an_ordinary_earn_and_redeem() {
        let c = card();
        for r in [
            req(TxKind::Earn, 120),
            req(TxKind::Redeem, 500),
            req(TxKind::RefundEarn, 10),
            req(TxKind::RefundRedeem, 50),
        ] {
            let d = decide(&c, &r);
            assert_eq!(d, Decision::Approve);
            assert!(d.is_approved());
            assert_eq!(d.to_string(), "A00 Approved");
        }
    }

    fn declined(d: &Decision, code: &str, message: &str) {
        assert_eq!(d.code(), code, "{d:?}");
        assert_eq!(d.message(), message);
        assert!(!d.is_approved());
        assert!(!message.contains('\n'));
    }

    #[test]
    fn hotlisted_card_is_declined_first() {
        let mut c = card();
        c.profile.valid_until = Date::new(2020, 1, 1).unwrap();
        let hot = Hotlist {
            version: 3,
            cards: [c.card_id].into(),
        };
        let d = authorize(&Policy::default_policy(), &hot, &c, &req(TxKind::Earn, 1), NOW);
        assert_eq!(d, Decision::Decline(DeclineReason::Hotlisted));
        declined(&d, "D01", "Card blocked — please keep the card and call the office");
    }

    #[test]
    fn profile_validity() {
        let mut c = card();
        c.profile.valid_until = Date::new(2026, 3, 15).unwrap();
        declined(
            &decide(&c, &req(TxKind::Earn, 1)),
            "D02",
            "Card expired on 2026-03-15 — the customer needs a new card",
        );
        c.profile.valid_until = Date::new(2026, 3, 16).unwrap();
        assert!(decide(&c, &req(TxKind::Earn, 1)).is_approved());
        c.profile.valid_from = Date::new(2026, 3, 17).unwrap();
        c.profile.valid_until = Date::new(2030, 1, 1).unwrap();
        declined(
            &decide(&c, &req(TxKind::Earn, 1)),
            "D03",
            "Card valid from 2026-03-17, but this till's clock says 2026-03-16 — check the till's date; if it is right, the card cannot be used yet",
        );
    }

    #[test]
    fn clock_behind_the_card_is_referred() {
        let mut c = card();
        c.last_record = Some(record(NOW + 600));
        assert!(decide(&c, &req(TxKind::Earn, 1)).is_approved());
        c.last_record = Some(record(NOW + 601));
        let d = decide(&c, &req(TxKind::Earn, 1));
        assert_eq!(
            d,
            Decision::Refer(ReferReason::ClockBehindCard {
                card_time: NOW + 601,
                now: NOW
            })
        );
        declined(
            &d,
            "R03",
            "This till's clock is behind the card's last transaction — check the date and time, or call the office",
        );
        c.last_record = None;
        assert!(decide(&c, &req(TxKind::Earn, 1)).is_approved());
    }

    #[test]
    fn amounts_and_caps() {
        let mut c = card();
        c.balance = 50_000;
        declined(
            &decide(&c, &req(TxKind::Earn, 0)),
            "D04",
            "Nothing to earn or redeem: zero points",
        );
        let mut big = req(TxKind::Earn, 10);
        big.purchase_minor = 1_000_001;
        declined(
            &decide(&c, &big),
            "R05",
            "Purchase above the offline limit of 10,000.00 EUR — call the office",
        );
        big.purchase_minor = 1_000_000;
        assert!(decide(&c, &big).is_approved());
        assert!(decide(&c, &req(TxKind::Earn, 5000)).is_approved());
        for kind in [TxKind::Earn, TxKind::RefundEarn] {
            declined(
                &decide(&c, &req(kind, 5001)),
                "R06",
                "At most 5,000 points can be earned at once offline — call the office",
            );
        }
        for kind in [TxKind::Redeem, TxKind::RefundRedeem] {
            declined(
                &decide(&c, &req(kind, 10_001)),
                "D07",
                "At most 10000 points can be redeemed at once",
            );
        }
    }

    #[test]
    fn debits_need_the_balance() {
        let c = card();
        for kind in [TxKind::Redeem, TxKind::RefundEarn] {
            let d = decide(&c, &req(kind, 501));
            assert_eq!(
                d,
                Decision::Decline(DeclineReason::InsufficientBalance {
                    balance: 500,
                    requested: 501
                })
            );
            declined(&d, "D08", "Not enough points: the card has 500, 501 asked");
        }
        assert!(decide(&c, &req(TxKind::RefundRedeem, 501)).is_approved());
    }

    #[test]
    fn an_office_approval_lifts_limits_and_velocity_only() {
        let p = Policy::default_policy();
        let h = Hotlist::empty();
        let mut c = card();
        c.balance = 50_000;
        c.velocity.unsettled_redeems = 5;
        assert_eq!(authorize(&p, &h, &c, &req(TxKind::Redeem, 10), NOW).code(), "R01");
        assert!(authorize_approved(&p, &h, &c, &req(TxKind::Redeem, 10), NOW).is_approved());
        // The balance still applies.
        assert_eq!(
            authorize_approved(&p, &h, &c, &req(TxKind::Redeem, 50_001), NOW).code(),
            "D08"
        );
        // A purchase above the offline limit.
        let mut big = req(TxKind::Earn, 10);
        big.purchase_minor = p.limits.max_purchase_minor + 1;
        assert_eq!(authorize(&p, &h, &c, &big, NOW).code(), "R05");
        assert!(authorize_approved(&p, &h, &c, &big, NOW).is_approved());
        // The hotlist, the card's dates, the clock and zero points still apply.
        let mut hot = Hotlist::empty();
        hot.cards.insert(c.card_id);
        assert_eq!(
            authorize_approved(&p, &hot, &c, &req(TxKind::Redeem, 10), NOW).code(),
            "D01"
        );
        assert_eq!(
            authorize_approved(&p, &h, &c, &req(TxKind::Redeem, 0), NOW).code(),
            "D04"
        );
        let late = NOW + 365 * 86_400 * 10;
        assert_eq!(
            authorize_approved(&p, &h, &c, &req(TxKind::Redeem, 10), late).code(),
            "D02"
        );
        let refusal = DeclineReason::Approval(ApprovalRefusal::OtherCard);
        assert_eq!(refusal.code(), "C03");
        assert!(refusal.message().contains("another card"));
    }

    #[test]
    fn velocity_on_the_cards_own_counters() {
        let mut c = card();
        c.balance = 50_000;
        c.velocity = Velocity {
            unsettled_redeems: 4,
            unsettled_points: 19_500,
            settled_counter: 3,
        };
        assert!(decide(&c, &req(TxKind::Redeem, 500)).is_approved());
        declined(
            &decide(&c, &req(TxKind::Redeem, 501)),
            "R02",
            "Offline limit of 20000 redeemed points reached on this card — call the office for approval",
        );
        c.velocity.unsettled_redeems = 5;
        let d = decide(&c, &req(TxKind::Redeem, 1));
        assert_eq!(d, Decision::Refer(ReferReason::VelocityCount { max: 5 }));
        declined(
            &d,
            "R01",
            "Offline limit of 5 redemptions reached on this card — call the office for approval",
        );
        // Velocity limits only redemptions.
        assert!(decide(&c, &req(TxKind::Earn, 100)).is_approved());
        assert!(decide(&c, &req(TxKind::RefundRedeem, 100)).is_approved());
        // A zero limit refers every redemption.
        let mut p = Policy::default_policy();
        p.velocity.max_offline_redeems = 0;
        let d = authorize(&p, &Hotlist::empty(), &card(), &req(TxKind::Redeem, 1), NOW);
        assert_eq!(d.code(), "R01");
        // Saturated counters never overflow.
        c.velocity.unsettled_redeems = u32::MAX;
        assert_eq!(decide(&c, &req(TxKind::Redeem, 1)).code(), "R01");
        c.velocity = Velocity {
            unsettled_redeems: 0,
            unsettled_points: u32::MAX,
            settled_counter: 0,
        };
        assert_eq!(decide(&c, &req(TxKind::Redeem, 1)).code(), "R02");
    }

    #[test]
    fn money_format() {
        assert_eq!(money(1_000_000, 100), "10000.00");
        assert_eq!(money(1_050, 100), "10.50");
        assert_eq!(money(7, 1000), "0.007");
        assert_eq!(money(1234, 1), "1234");
        assert_eq!(money(1234, 60), "1234 minor units");
        assert_eq!(money(u64::MAX, 1_000_000), "18446744073709.551615");
    }

    #[test]
    fn journal_refund_reasons() {
        let d = Decision::Decline(DeclineReason::RefundAlreadyDone);
        declined(&d, "D09", "Already refunded — a transaction can be refunded only once");
        let d = Decision::Decline(DeclineReason::RefundUnknownOriginal);
        declined(
            &d,
            "D10",
            "Original transaction not found at this till — refund at the original till or call the office",
        );
        let d = Decision::Decline(DeclineReason::RefundOfRefund { original: 4 });
        declined(
            &d,
            "D11",
            "Transaction #4 is itself a refund — only an earn or a redemption can be refunded",
        );
    }

    #[test]
    fn fail_closed_fallback_declines() {
        let p = Policy::fail_closed();
        let d = authorize(&p, &Hotlist::empty(), &card(), &req(TxKind::Earn, 1), NOW);
        assert_eq!(d.code(), "R06");
        let d = authorize(&p, &Hotlist::empty(), &card(), &req(TxKind::Redeem, 1), NOW);
        assert_eq!(d.code(), "D07");
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,400}", bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Policy::from_toml(&text);
            let _ = Hotlist::from_toml(&text);
            let lossy = String::from_utf8_lossy(&bytes);
            let _ = Policy::from_toml(&lossy);
            let _ = Hotlist::from_toml(&lossy);
        }

        #[test]
        fn mutated_policy_never_panics(at in 0usize..2000, insert in ".{0,12}") {
            let mut s = DEFAULT_POLICY_TOML.to_owned();
            let at = (0..=at.min(s.len())).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
            s.insert_str(at, &insert);
            if let Err(e) = Policy::from_toml(&s) {
                prop_assert!(!e.to_string().contains('\n'));
            }
        }

        #[test]
        fn authorize_never_panics(
            kind in 1u8..=4, points: u32, purchase: u64, balance: u32, last in proptest::option::of(any::<u32>()),
            redeems: u32, redeemed: u32, now: u32,
        ) {
            let mut c = card();
            c.balance = balance;
            c.last_record = last.map(record);
            c.velocity = Velocity { unsettled_redeems: redeems, unsettled_points: redeemed, settled_counter: 0 };
            let r = TxRequest { kind: TxKind::from_byte(kind).unwrap(), points, purchase_minor: purchase, categories: vec![] };
            let d = authorize(&Policy::default_policy(), &Hotlist::empty(), &c, &r, now);
            prop_assert!(!d.message().is_empty());
        }
    }
}
