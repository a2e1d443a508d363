//! The points of each purchase, recomputed (`docs/settlement.md`, "Points
//! are checked").
//!
//! A till journals with every approved purchase the SHA-256 of the signed
//! policy and campaign file it decided under, and what the card said that
//! the points depend on (tier, preferences and birth date from the
//! issuer-signed profile; the visit counters the card keeps). The office
//! registers every policy and campaign file it signs (and the policy
//! shipped with Tessera); the ledger recomputes the points with the same
//! function the till uses ([`tessera_rules::offers::quote`]) and raises
//! `points-mismatch` when they differ or when the decision names a file
//! the office never signed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use hex::FromHex as _;
use rusqlite::{Connection, OptionalExtension};
use serde_json::{json, Value};
use tessera_protocol::messages::Visits;
use tessera_protocol::profile::{Date, Profile};
use tessera_rules::offers::{quote, CampaignSet};
use tessera_rules::policy::{date_from_unix, Policy};
use tessera_settlement::record::{Entry, EntryKind, Verdict};

use crate::LedgerError;

/// Why a decision's points are not explained, and the evidence.
pub type Problem = (&'static str, Value);

/// The lines of a recomputed quote: campaign id or policy rule, points.
pub type Lines = Vec<(String, i64)>;

/// The registered text of a signed file: the table (`policies` or
/// `campaign_sets`) and its digest → its TOML, `None` when the office never
/// registered it. How a backend answers [`Rules::check_with`].
pub type Registered<'a> = dyn FnMut(&'static str, &[u8; 32]) -> Result<Option<String>, LedgerError> + 'a;

/// The points check of purchase decisions (module docs), for one batch:
/// the files parsed by digest (`None`: not registered or not parsable).
#[derive(Default)]
pub struct Rules {
    policies: HashMap<[u8; 32], Option<Arc<Policy>>>,
    campaigns: HashMap<[u8; 32], Option<Arc<CampaignSet>>>,
}

/// Files parsed before, by the SHA-256 of their text: the same text parses
/// the same, so batches after the first (and other ledgers in the process)
/// skip parsing. Whether a ledger has *registered* a digest is still asked
/// of that ledger each batch. Bounded: emptied when full.
struct Parsed {
    policies: HashMap<[u8; 32], Arc<Policy>>,
    campaigns: HashMap<[u8; 32], Arc<CampaignSet>>,
}

const PARSED_MAX: usize = 256;

fn parsed() -> std::sync::MutexGuard<'static, Parsed> {
    static PARSED: OnceLock<Mutex<Parsed>> = OnceLock::new();
    PARSED
        .get_or_init(|| {
            Mutex::new(Parsed {
                policies: HashMap::new(),
                campaigns: HashMap::new(),
            })
        })
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn parse_cached<T>(
    digest: &[u8; 32],
    text: Option<String>,
    map: impl Fn(&mut Parsed) -> &mut HashMap<[u8; 32], Arc<T>>,
    parse: impl Fn(&str) -> Option<T>,
) -> Option<Arc<T>> {
    let text = text?;
    if let Some(hit) = map(&mut parsed()).get(digest) {
        return Some(Arc::clone(hit));
    }
    let value = Arc::new(parse(&text)?);
    let mut cache = parsed();
    let m = map(&mut cache);
    if m.len() >= PARSED_MAX {
        m.clear();
    }
    m.insert(*digest, Arc::clone(&value));
    Some(value)
}

fn digest_of(hex_digest: &str) -> Option<[u8; 32]> {
    let mut d = [0u8; 32];
    hex::decode_to_slice(hex_digest, &mut d).ok().map(|()| d)
}

fn stored(conn: &Connection, table: &'static str, digest: &[u8; 32]) -> Result<Option<String>, LedgerError> {
    Ok(conn
        .prepare_cached(&format!("SELECT toml FROM {table} WHERE digest = ?1"))?
        .query_row([&digest[..]], |r| r.get(0))
        .optional()?)
}

impl Rules {
    /// A problem with an approved purchase decision's points: why, and the
    /// evidence. `None` when they are what the signed rules give (or the
    /// entry is not a purchase decision, or predates journaled rules);
    /// then also the recomputed quote's lines (campaign id or
    /// `policy.category` / `policy.tier`, points), empty otherwise.
    pub(crate) fn check(&mut self, conn: &Connection, e: &Entry) -> Result<(Option<Problem>, Lines), LedgerError> {
        self.check_with(&mut |table, digest| stored(conn, table, digest), e)
    }

    /// The check of one entry on any backend: the problem with an approved
    /// purchase decision's points, if any, and the recomputed quote's lines
    /// otherwise; `registered` answers which files the office signed.
    ///
    /// # Errors
    /// What `registered` fails with.
    pub fn check_with(
        &mut self,
        registered: &mut Registered<'_>,
        e: &Entry,
    ) -> Result<(Option<Problem>, Lines), LedgerError> {
        match self.check_lines(registered, e)? {
            Ok(lines) => Ok((None, lines)),
            Err(problem) => Ok((Some(problem), Vec::new())),
        }
    }

    fn check_lines(
        &mut self,
        registered: &mut Registered<'_>,
        e: &Entry,
    ) -> Result<Result<Lines, Problem>, LedgerError> {
        if e.kind != EntryKind::Decision || e.verdict != Some(Verdict::Approve) || e.tx_type.as_deref() != Some("earn")
        {
            return Ok(Ok(Vec::new()));
        }
        // A basket is what was bought: its lines add up to the purchase
        // amount and name its categories, in order of first appearance.
        if !e.basket.is_empty() {
            let total = e.basket.iter().try_fold(0u64, |sum, l| {
                (l.amount_minor > 0).then(|| sum.checked_add(l.amount_minor)).flatten()
            });
            let mut categories: Vec<&str> = Vec::new();
            for l in &e.basket {
                if !categories.contains(&l.category.as_str()) {
                    categories.push(&l.category);
                }
            }
            if total.is_none() || total != e.purchase_minor || categories != e.categories {
                return Ok(Err((
                    "the decision's basket lines do not add up to its purchase amount and categories",
                    json!({"purchase_minor": e.purchase_minor, "categories": e.categories, "basket": e.basket}),
                )));
            }
        }
        let Some(policy_hex) = e.policy.as_deref() else {
            // Journaled before decisions named their policy.
            return Ok(Ok(Vec::new()));
        };
        let Some(pd) = digest_of(policy_hex) else {
            return Ok(Err((
                "the decision's policy digest is malformed",
                json!({"policy": policy_hex}),
            )));
        };
        if let std::collections::hash_map::Entry::Vacant(slot) = self.policies.entry(pd) {
            let text = registered("policies", &pd)?;
            slot.insert(parse_cached(
                &pd,
                text,
                |p| &mut p.policies,
                |t| Policy::from_toml(t).ok(),
            ));
        }
        let empty = CampaignSet::empty();
        let campaigns = match e.campaigns.as_deref() {
            None => Some(&empty),
            Some(h) => match digest_of(h) {
                None => None,
                Some(cd) => {
                    if let std::collections::hash_map::Entry::Vacant(slot) = self.campaigns.entry(cd) {
                        let text = registered("campaign_sets", &cd)?;
                        slot.insert(parse_cached(
                            &cd,
                            text,
                            |p| &mut p.campaigns,
                            |t| CampaignSet::from_toml(t).ok(),
                        ));
                    }
                    self.campaigns.get(&cd).and_then(Option::as_deref)
                }
            },
        };
        let Some(policy) = self.policies.get(&pd).and_then(Option::as_deref) else {
            return Ok(Err((
                "the decision names a policy the office never signed",
                json!({"policy": policy_hex}),
            )));
        };
        let Some(campaigns) = campaigns else {
            return Ok(Err((
                "the decision names a campaign file the office never signed",
                json!({"campaigns": e.campaigns}),
            )));
        };
        let Some(inputs) = &e.quote_inputs else {
            return Ok(Err(("the decision journals no quote inputs", Value::Null)));
        };
        let (Some(points), Some(purchase)) = (e.points, e.purchase_minor) else {
            return Ok(Err((
                "the decision journals no points or no purchase amount",
                Value::Null,
            )));
        };
        let Ok(birth_date) = Date::parse_iso(&inputs.birth_date) else {
            return Ok(Err((
                "the decision's birth date is malformed",
                json!({"birth_date": inputs.birth_date}),
            )));
        };
        let epoch = Date::from_unix_days(0);
        // The card id decides the campaigns' control groups.
        let Some(card_id) = e.card_id.as_deref().and_then(|h| <[u8; 8]>::from_hex(h).ok()) else {
            return Ok(Err(("the decision names no card", Value::Null)));
        };
        let profile = Profile {
            card_id,
            version: 0,
            name: String::new(),
            birth_date,
            home_city: String::new(),
            household: [0; 8],
            preferences: inputs.preferences.clone(),
            tier: inputs.tier,
            valid_from: epoch,
            valid_until: epoch,
        };
        let visits = Visits {
            count: inputs.visits,
            last_day: inputs.last_visit_day,
            last_store: 0,
        };
        let q = quote(
            policy,
            campaigns,
            &profile,
            &visits,
            purchase,
            &e.categories,
            date_from_unix(e.time),
        );
        if q.total == points {
            return Ok(Ok(q.lines.iter().map(|l| (l.campaign_id.clone(), l.points)).collect()));
        }
        Ok(Err((
            "the points are not what the signed policy and campaigns give",
            json!({
                "journaled_points": points,
                "recomputed_points": q.total,
                "purchase_minor": purchase,
                "policy": policy_hex,
                "campaigns": e.campaigns,
                "recomputed_lines": q.lines.iter().map(|l| json!([l.campaign_id, l.points])).collect::<Vec<_>>(),
            }),
        )))
    }
}

/// Registers the exact text of a policy the office signed (idempotent);
/// returns its digest.
pub(crate) fn register(conn: &Connection, table: &str, toml: &str, now: u32) -> Result<[u8; 32], LedgerError> {
    Ok(crate::books::register_text(conn, table, toml, now)?.0)
}
