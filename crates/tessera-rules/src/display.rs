//! What a person reads and types at the till: money, amounts, local
//! times, dates and category names.
//!
//! Every front end (the `tessera` CLI, the office's reports, POS software
//! over the C ABI) formats and parses through this module, so that a clerk
//! and a back-office clerk read the same thing:
//!
//! * [`format_money`]: `123456` minor units at 100 per unit in `EUR` is
//!   `1,234.56 EUR` (thousands separated by commas, the decimals the
//!   currency has);
//! * [`parse_amount`]: what a clerk types — `12.50` or `12,50` — into minor
//!   units, refusing everything ambiguous ([`AmountError`]);
//! * [`Zone`]: Unix seconds as the till's local time (`2026-12-03 08:15`)
//!   and as ISO 8601 with its offset for JSON;
//! * [`parse_date`], [`check_birth_date`]: `YYYY-MM-DD` with a different
//!   answer for a malformed date and an impossible one (`1990-02-30`);
//! * [`check_categories`]: purchase categories against the list the policy
//!   knows, with a suggestion for a typo.
//!
//! ```
//! use tessera_rules::display::{format_money, parse_amount, Zone};
//!
//! assert_eq!(parse_amount("12,50", 100), Ok(1250));
//! assert_eq!(format_money(123_456, 100, "EUR"), "1,234.56 EUR");
//! let utc = Zone::named("UTC")?;
//! assert_eq!(utc.local(1_796_169_600), "2026-12-02 00:00");
//! assert_eq!(utc.iso8601(1_796_169_600), "2026-12-02T00:00:00+00:00");
//! # Ok::<(), tessera_rules::display::ZoneError>(())
//! ```

use std::collections::BTreeSet;

use tessera_protocol::profile::Date;

/// The number of decimals of a currency with `per_unit` minor units in one
/// unit: 2 for 100, 0 for 1; `None` when `per_unit` is not a power of ten.
pub fn decimals(per_unit: u64) -> Option<usize> {
    let mut p = 1u64;
    let mut d = 0;
    while p < per_unit {
        p = p.checked_mul(10)?;
        d += 1;
    }
    (p == per_unit).then_some(d)
}

/// Groups the digits of `n` by three with commas: `1234567` → `1,234,567`.
pub fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// An amount of minor units as money with its currency: `1234567` at 100
/// per unit in `EUR` is `12,345.67 EUR`; an empty currency gives the
/// number alone. A unit that is not a power of ten shows the minor units
/// (`1234 minor units EUR`).
pub fn format_money(minor: u64, per_unit: u64, currency: &str) -> String {
    let number = match decimals(per_unit) {
        Some(0) => group_thousands(minor),
        Some(d) => format!("{}.{:0d$}", group_thousands(minor / per_unit), minor % per_unit),
        None => format!("{} minor units", group_thousands(minor)),
    };
    if currency.is_empty() {
        number
    } else {
        format!("{number} {currency}")
    }
}

/// [`format_money`] for a signed amount (refunds): `-12.50 EUR`.
pub fn format_signed_money(minor: i64, per_unit: u64, currency: &str) -> String {
    let m = format_money(minor.unsigned_abs(), per_unit, currency);
    if minor < 0 {
        format!("-{m}")
    } else {
        m
    }
}

/// Points with thousands separators: `12,345`.
pub fn format_points(points: u64) -> String {
    group_thousands(points)
}

/// Why an amount typed at the till was refused. Each message says what to
/// type instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AmountError {
    /// Nothing was typed.
    #[error("no amount given: type it like 12.50 or 12,50")]
    Empty,
    /// A minus sign.
    #[error("amounts cannot be negative (for a return, refund the original sale)")]
    Negative,
    /// Both a comma and a point, or the same separator twice: thousands
    /// separators make an amount ambiguous.
    #[error("ambiguous amount: type it without thousands separators, like 1234.50 or 1234,50")]
    Ambiguous,
    /// More decimals than the currency has.
    #[error("at most {decimals} decimals (thousands separators are not accepted: type 1234.50, not 1,234)")]
    TooManyDecimals {
        /// The currency's decimals.
        decimals: usize,
    },
    /// Not a number.
    #[error("not an amount: type digits with at most one decimal comma or point, like 12.50")]
    Malformed,
    /// Too large to count.
    #[error("amount too large")]
    TooLarge,
    /// Zero.
    #[error("the amount must be more than zero")]
    Zero,
}

/// Parses an amount as a clerk types it into minor units: digits, with at
/// most one decimal separator, a point or a comma (`12.50`, `12,50`,
/// `12`, `12.5`).
///
/// # Errors
/// [`AmountError`]: negative, zero, ambiguous (`1,234.5`, `1.234.567`),
/// more decimals than the currency has (`1,234` for a 2-decimal currency
/// is three decimals, not a thousand), malformed, or too large for 64 bits.
pub fn parse_amount(s: &str, per_unit: u64) -> Result<u64, AmountError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(AmountError::Empty);
    }
    if t.starts_with('-') || t.starts_with('\u{2212}') {
        return Err(AmountError::Negative);
    }
    let commas = t.matches(',').count();
    let points = t.matches('.').count();
    if (commas > 0 && points > 0) || commas > 1 || points > 1 {
        return Err(AmountError::Ambiguous);
    }
    let (whole, frac) = t.split_once([',', '.']).unwrap_or((t, ""));
    let digits_only = |x: &str| x.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && frac.is_empty()) || !digits_only(whole) || !digits_only(frac) {
        return Err(AmountError::Malformed);
    }
    let Some(d) = decimals(per_unit) else {
        // A unit that is not a power of ten: minor units only.
        if !frac.is_empty() || t.len() != whole.len() {
            return Err(AmountError::TooManyDecimals { decimals: 0 });
        }
        return match whole.parse::<u64>() {
            Ok(0) => Err(AmountError::Zero),
            Ok(n) => Ok(n),
            Err(_) => Err(AmountError::TooLarge),
        };
    };
    if frac.len() > d || (d == 0 && t.len() != whole.len()) {
        return Err(AmountError::TooManyDecimals { decimals: d });
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| AmountError::TooLarge)?
    };
    let frac: u64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<d$}").parse().map_err(|_| AmountError::Malformed)?
    };
    let minor = whole
        .checked_mul(per_unit)
        .and_then(|w| w.checked_add(frac))
        .ok_or(AmountError::TooLarge)?;
    if minor == 0 {
        return Err(AmountError::Zero);
    }
    Ok(minor)
}

/// Why a time zone could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown time zone {name:?}: give an IANA name like Europe/Paris (see /usr/share/zoneinfo) or UTC")]
pub struct ZoneError {
    /// The name given.
    pub name: String,
}

/// A time zone in which people read times: the till's, or the office's.
#[derive(Debug, Clone)]
pub struct Zone {
    tz: jiff::tz::TimeZone,
}

impl Zone {
    /// The system's zone: `TZ` when set, else `/etc/localtime`, else UTC.
    pub fn system() -> Self {
        Self {
            tz: jiff::tz::TimeZone::system(),
        }
    }

    /// Coordinated universal time.
    pub fn utc() -> Self {
        Self {
            tz: jiff::tz::TimeZone::UTC,
        }
    }

    /// The zone named `name` (IANA, e.g. `Europe/Paris`, or `UTC`).
    ///
    /// # Errors
    /// [`ZoneError`] for a name the time zone database does not have.
    pub fn named(name: &str) -> Result<Self, ZoneError> {
        jiff::tz::TimeZone::get(name.trim())
            .map(|tz| Self { tz })
            .map_err(|_| ZoneError { name: name.to_owned() })
    }

    /// The zone's IANA name, when it has one.
    pub fn name(&self) -> Option<&str> {
        self.tz.iana_name()
    }

    fn zoned(&self, unix: u32) -> jiff::Zoned {
        jiff::Timestamp::from_second(i64::from(unix))
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
            .to_zoned(self.tz.clone())
    }

    /// Date and time to the minute: `2026-12-03 08:15`.
    pub fn local(&self, unix: u32) -> String {
        self.zoned(unix).strftime("%Y-%m-%d %H:%M").to_string()
    }

    /// Date and time to the second: `2026-12-03 08:15:02`.
    pub fn local_seconds(&self, unix: u32) -> String {
        self.zoned(unix).strftime("%Y-%m-%d %H:%M:%S").to_string()
    }

    /// Time of day: `08:15:02`.
    pub fn time_of_day(&self, unix: u32) -> String {
        self.zoned(unix).strftime("%H:%M:%S").to_string()
    }

    /// The local date.
    pub fn date(&self, unix: u32) -> Date {
        let z = self.zoned(unix);
        let (y, m, d) = (z.year(), z.month(), z.day());
        Date::new(
            u16::try_from(y).unwrap_or(1970),
            u8::try_from(m).unwrap_or(1),
            u8::try_from(d).unwrap_or(1),
        )
        .unwrap_or_else(|_| Date::from_unix_days(unix / 86_400))
    }

    /// ISO 8601 with the zone's offset: `2026-12-03T08:15:02+01:00`.
    pub fn iso8601(&self, unix: u32) -> String {
        self.zoned(unix).strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
    }

    /// The Unix time of local midnight starting `date` (the first instant
    /// of that day where a change of offset skips midnight).
    pub fn start_of(&self, date: Date) -> u32 {
        let civil = jiff::civil::date(
            i16::try_from(date.year).unwrap_or(1970),
            i8::try_from(date.month).unwrap_or(1),
            i8::try_from(date.day).unwrap_or(1),
        );
        civil
            .to_zoned(self.tz.clone())
            .and_then(|z| z.start_of_day())
            .map(|z| z.timestamp().as_second())
            .ok()
            .and_then(|s| u32::try_from(s).ok())
            .unwrap_or(date.to_unix_days().saturating_mul(86_400))
    }

    /// The Unix time of local midnight of the day `unix` falls in.
    pub fn start_of_day(&self, unix: u32) -> u32 {
        self.start_of(self.date(unix))
    }
}

/// Why a date typed by a person was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DateError {
    /// Not of the form `YYYY-MM-DD`.
    #[error("use YYYY-MM-DD, e.g. 1990-02-28")]
    Format,
    /// Well formed, but the calendar has no such day (`1990-02-30`).
    #[error("there is no such date")]
    NoSuchDate,
    /// A birth date after today.
    #[error("a birth date cannot be in the future (today is {today})")]
    Future {
        /// Today.
        today: Date,
    },
}

/// Parses `YYYY-MM-DD`, telling a malformed date from an impossible one.
///
/// # Errors
/// [`DateError::Format`], [`DateError::NoSuchDate`].
pub fn parse_date(s: &str) -> Result<Date, DateError> {
    let t = s.trim();
    let mut it = t.split('-');
    let (Some(y), Some(m), Some(d), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err(DateError::Format);
    };
    let ok = |x: &str, n: usize| x.len() == n && x.bytes().all(|b| b.is_ascii_digit());
    if !ok(y, 4) || !ok(m, 2) || !ok(d, 2) {
        return Err(DateError::Format);
    }
    let (Ok(y), Ok(m), Ok(d)) = (y.parse::<u16>(), m.parse::<u8>(), d.parse::<u8>()) else {
        return Err(DateError::Format);
    };
    Date::new(y, m, d).map_err(|_| DateError::NoSuchDate)
}

/// Checks a birth date against today: not in the future.
///
/// # Errors
/// [`DateError::Future`].
pub fn check_birth_date(birth: Date, today: Date) -> Result<(), DateError> {
    if birth > today {
        return Err(DateError::Future { today });
    }
    Ok(())
}

/// The category a sale outside the policy's list is rung up as: always
/// accepted, multiplier 100.
pub const OTHER_CATEGORY: &str = "other";

/// A purchase category the till does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown category {given}{} (known: {}; for anything else use --category {OTHER_CATEGORY})", .suggestion.as_ref().map(|s| format!(" — did you mean {s}?")).unwrap_or_default(), .known.join(", "))]
pub struct CategoryError {
    /// The category given (normalized).
    pub given: String,
    /// The nearest known category, when one is close.
    pub suggestion: Option<String>,
    /// Every known category.
    pub known: Vec<String>,
}

/// Normalizes (trim, lower case, drop empty) and checks purchase categories
/// against `known` (and [`OTHER_CATEGORY`]).
///
/// # Errors
/// [`CategoryError`] for the first unknown one, with the nearest known
/// name when it is at most two edits away.
pub fn check_categories(given: &[String], known: &BTreeSet<String>) -> Result<Vec<String>, CategoryError> {
    let mut out = Vec::new();
    for c in given {
        let c = c.trim().to_lowercase();
        if c.is_empty() {
            continue;
        }
        if c != OTHER_CATEGORY && !known.contains(&c) {
            return Err(CategoryError {
                suggestion: suggest(&c, known.iter().map(String::as_str)),
                given: c,
                known: known.iter().cloned().collect(),
            });
        }
        if !out.contains(&c) {
            out.push(c);
        }
    }
    Ok(out)
}

/// Why a basket line the clerk typed was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BasketError {
    /// Not `CATEGORY=AMOUNT`.
    #[error("basket line {0:?} is not CATEGORY=AMOUNT (e.g. coffee=3,50)")]
    Malformed(String),
    /// The amount of a line is refused.
    #[error("basket line {line:?}: invalid amount: {error}")]
    Amount {
        /// The line as typed.
        line: String,
        /// Why its amount is refused.
        error: AmountError,
    },
    /// The category of a line is unknown.
    #[error(transparent)]
    Category(#[from] CategoryError),
    /// The lines add up to more than 64 bits of minor units.
    #[error("the basket's lines add up to more than any purchase can be")]
    TooLarge,
}

/// Parses and checks a purchase's basket lines, each `CATEGORY=AMOUNT`
/// (`coffee=3,50`, amounts as [`parse_amount`] takes them, categories as
/// [`check_categories`] checks them). Returns each line's normalized
/// category and amount in minor units, in the order given, and their
/// total.
///
/// # Errors
/// [`BasketError`] for the first line refused, or when the total does not
/// fit in 64 bits. An empty list is [`BasketError::Malformed`].
pub fn parse_basket(
    lines: &[String],
    per_unit: u64,
    known: &BTreeSet<String>,
) -> Result<(Vec<(String, u64)>, u64), BasketError> {
    if lines.is_empty() {
        return Err(BasketError::Malformed(String::new()));
    }
    let mut out = Vec::with_capacity(lines.len());
    let mut total: u64 = 0;
    for line in lines {
        let Some((category, amount)) = line.split_once('=') else {
            return Err(BasketError::Malformed(line.clone()));
        };
        let category = check_categories(&[category.to_owned()], known)?;
        let Some(category) = category.into_iter().next() else {
            return Err(BasketError::Malformed(line.clone()));
        };
        let amount = parse_amount(amount, per_unit).map_err(|error| BasketError::Amount {
            line: line.clone(),
            error,
        })?;
        total = total.checked_add(amount).ok_or(BasketError::TooLarge)?;
        out.push((category, amount));
    }
    Ok((out, total))
}

/// The nearest of `candidates` to `word`, if at most two edits away
/// (insertions, deletions, substitutions, transpositions).
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, c)| *d <= 2 && *d < c.chars().count())
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_owned())
}

/// Optimal string alignment distance (Levenshtein with transpositions).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basket_lines_are_category_equals_amount() {
        let known: BTreeSet<String> = ["coffee", "bakery"].iter().map(|s| (*s).to_owned()).collect();
        let lines = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            parse_basket(&lines(&["coffee=3,50", " Bakery =2.00", "other=0,01"]), 100, &known),
            Ok((
                vec![("coffee".into(), 350), ("bakery".into(), 200), ("other".into(), 1)],
                551
            ))
        );
        assert_eq!(
            parse_basket(&lines(&["coffee 3,50"]), 100, &known),
            Err(BasketError::Malformed("coffee 3,50".into()))
        );
        assert!(matches!(
            parse_basket(&lines(&["cofee=3"]), 100, &known),
            Err(BasketError::Category(CategoryError { suggestion: Some(ref s), .. })) if s == "coffee"
        ));
        assert!(matches!(
            parse_basket(&lines(&["coffee=0"]), 100, &known),
            Err(BasketError::Amount {
                error: AmountError::Zero,
                ..
            })
        ));
        assert_eq!(
            parse_basket(
                &lines(&["coffee=100000000000000000", "bakery=100000000000000000"]),
                100,
                &known
            ),
            Err(BasketError::TooLarge)
        );
        assert_eq!(
            parse_basket(&[], 100, &known),
            Err(BasketError::Malformed(String::new()))
        );
        assert!(matches!(
            parse_basket(&lines(&["=3"]), 100, &known),
            Err(BasketError::Malformed(_))
        ));
    }

    #[test]
    fn amounts_with_comma_or_point_and_refusals() {
        assert_eq!(parse_amount("12,50", 100), Ok(1250));
        assert_eq!(parse_amount("12.50", 100), Ok(1250));
        assert_eq!(parse_amount(" 12.5 ", 100), Ok(1250));
        assert_eq!(parse_amount("12", 100), Ok(1200));
        assert_eq!(parse_amount("0,01", 100), Ok(1));
        assert_eq!(parse_amount(",50", 100), Ok(50));
        assert_eq!(parse_amount("1,234.5", 100), Err(AmountError::Ambiguous));
        assert_eq!(parse_amount("1.234.567", 100), Err(AmountError::Ambiguous));
        assert_eq!(
            parse_amount("1,234", 100),
            Err(AmountError::TooManyDecimals { decimals: 2 })
        );
        assert_eq!(parse_amount("-5", 100), Err(AmountError::Negative));
        assert_eq!(parse_amount("0,00", 100), Err(AmountError::Zero));
        assert_eq!(parse_amount("", 100), Err(AmountError::Empty));
        assert_eq!(parse_amount("12a", 100), Err(AmountError::Malformed));
        assert_eq!(parse_amount(".", 100), Err(AmountError::Malformed));
        assert_eq!(parse_amount("99999999999999999999", 100), Err(AmountError::TooLarge));
        assert_eq!(parse_amount("184467440737095517", 100), Err(AmountError::TooLarge));
        assert_eq!(parse_amount("500", 1), Ok(500));
        assert_eq!(
            parse_amount("5,5", 1),
            Err(AmountError::TooManyDecimals { decimals: 0 })
        );
    }

    #[test]
    fn money_has_currency_and_separators() {
        assert_eq!(format_money(1, 100, "EUR"), "0.01 EUR");
        assert_eq!(format_money(123_456_789, 100, "EUR"), "1,234,567.89 EUR");
        assert_eq!(format_money(1500, 1, "JPY"), "1,500 JPY");
        assert_eq!(format_money(1250, 100, ""), "12.50");
        assert_eq!(format_signed_money(-1250, 100, "EUR"), "-12.50 EUR");
        assert_eq!(format_points(4_294_967_295), "4,294,967,295");
    }

    #[test]
    fn local_time_follows_the_zone() {
        let paris = Zone::named("Europe/Paris").unwrap();
        // 2026-12-02 00:00 UTC is 01:00 in Paris (winter time).
        assert_eq!(paris.local(1_796_169_600), "2026-12-02 01:00");
        assert_eq!(paris.iso8601(1_796_169_600), "2026-12-02T01:00:00+01:00");
        assert_eq!(paris.start_of_day(1_796_169_600), 1_796_169_600 - 3600);
        assert!(Zone::named("Mars/Olympus").is_err());
    }

    #[test]
    fn dates_tell_malformed_from_impossible() {
        assert_eq!(parse_date("1990-02-30"), Err(DateError::NoSuchDate));
        assert_eq!(parse_date("30.02.1990"), Err(DateError::Format));
        assert_eq!(parse_date("1990-2-3"), Err(DateError::Format));
        let today = Date::new(2026, 12, 3).unwrap();
        assert!(check_birth_date(Date::new(2030, 1, 1).unwrap(), today).is_err());
        assert!(check_birth_date(Date::new(1990, 2, 28).unwrap(), today).is_ok());
    }

    #[test]
    fn categories_suggest_the_nearest() {
        let known: BTreeSet<String> = ["coffee", "bakery", "books"].iter().map(|s| s.to_string()).collect();
        let e = check_categories(&["cofee".into()], &known).unwrap_err();
        assert_eq!(e.suggestion.as_deref(), Some("coffee"));
        assert!(e
            .to_string()
            .starts_with("unknown category cofee — did you mean coffee?"));
        assert_eq!(
            check_categories(&[" Coffee ".into(), "other".into()], &known).unwrap(),
            vec!["coffee".to_string(), "other".to_string()]
        );
        assert_eq!(
            check_categories(&["xyzzy".into()], &known).unwrap_err().suggestion,
            None
        );
    }
}
