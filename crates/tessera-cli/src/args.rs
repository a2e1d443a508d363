//! Arguments shared by several commands: the customer's profile, dates,
//! card ids.

use clap::Args;
use tessera_protocol::profile::{Date, Profile};

use crate::fail::Failure;

/// The customer's profile, as given on the command line.
#[derive(Args)]
pub struct ProfileArgs {
    /// Customer name (UTF-8).
    #[arg(long)]
    pub name: String,
    /// Birth date, YYYY-MM-DD.
    #[arg(long, value_name = "DATE")]
    pub birth_date: String,
    /// Home city (UTF-8).
    #[arg(long, default_value = "")]
    pub city: String,
    /// Household identifier, 16 hex digits [default: zero].
    #[arg(long, value_name = "HEX")]
    pub household: Option<String>,
    /// Preferred categories, comma separated (e.g. coffee,bakery).
    #[arg(long, value_delimiter = ',')]
    pub prefer: Vec<String>,
    /// Loyalty tier.
    #[arg(long, default_value_t = 0)]
    pub tier: u8,
    /// Profile valid from, YYYY-MM-DD.
    #[arg(long, default_value = "2026-01-01")]
    pub valid_from: String,
    /// Profile valid until, YYYY-MM-DD.
    #[arg(long, default_value = "2031-12-31")]
    pub valid_until: String,
}

/// Parses a `YYYY-MM-DD` argument (a malformed date and one the calendar
/// lacks, like `1990-02-30`, get different messages).
pub fn date(s: &str, what: &str) -> Result<Date, Failure> {
    tessera_terminal::display::parse_date(s).map_err(|e| Failure::usage(format!("invalid {what} {s:?}: {e}")))
}

/// A birth date: a real date, not after today (the till's clock,
/// `TESSERA_NOW` honoured).
fn birth_date(s: &str) -> Result<Date, Failure> {
    let d = date(s, "birth date")?;
    let today = tessera_terminal::policy::date_from_unix(tessera_terminal::Clock::now(&crate::pos::clock()?));
    tessera_terminal::display::check_birth_date(d, today)
        .map_err(|e| Failure::usage(format!("invalid birth date {s:?}: {e}")))?;
    Ok(d)
}

/// Parses a 16-hex-digit argument (card id, household).
pub fn hex8(s: &str, what: &str) -> Result<[u8; 8], Failure> {
    let mut out = [0u8; 8];
    hex::decode_to_slice(s.trim(), &mut out)
        .map_err(|_| Failure::usage(format!("invalid {what} {s:?}: give 16 hex digits")))?;
    Ok(out)
}

/// The profile from the arguments; every check before anything is written.
pub fn profile_from(a: &ProfileArgs, card_id: [u8; 8], version: u16) -> Result<Profile, Failure> {
    let p = Profile {
        card_id,
        version,
        name: a.name.trim().to_owned(),
        birth_date: birth_date(&a.birth_date)?,
        home_city: a.city.trim().to_owned(),
        household: match &a.household {
            Some(h) => hex8(h, "household")?,
            None => [0; 8],
        },
        preferences: a
            .prefer
            .iter()
            .map(|p| p.trim().to_lowercase())
            .filter(|p| !p.is_empty())
            .collect(),
        tier: a.tier,
        valid_from: date(&a.valid_from, "valid-from date")?,
        valid_until: date(&a.valid_until, "valid-until date")?,
    };
    if p.name.is_empty() {
        return Err(Failure::usage("the customer's name is empty"));
    }
    if p.valid_until < p.valid_from {
        return Err(Failure::usage("the profile's validity ends before it starts"));
    }
    p.body_bytes().map_err(|_| {
        Failure::usage(format!(
            "profile too large or malformed: name ≤ {} bytes, city ≤ {} bytes, preferences ≤ {} bytes in all",
            tessera_protocol::profile::MAX_NAME,
            tessera_protocol::profile::MAX_CITY,
            tessera_protocol::profile::MAX_PREFERENCES
        ))
    })?;
    Ok(p)
}

/// The card id given on the command line, or a fresh random one.
pub fn card_id_or_random(arg: Option<&str>) -> Result<[u8; 8], Failure> {
    match arg {
        Some(h) => hex8(h, "card id"),
        None => {
            let mut id = [0u8; 8];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut id);
            Ok(id)
        }
    }
}

/// Refuses a card file that already exists: card files are never
/// overwritten.
pub fn refuse_existing_card(path: &std::path::Path) -> Result<(), Failure> {
    if path.exists() {
        return Err(Failure::new(
            crate::fail::EXIT_DECLINED,
            format!("{} already exists: a card file is never overwritten", path.display()),
        ));
    }
    Ok(())
}
