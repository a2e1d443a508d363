//! A seeded generator of a retail chain's loyalty history, sent through the
//! real settlement path into a [`Ledger`].
//!
//! [`generate_into`] builds a chain of stores and terminals, registers its
//! customers (names, birth dates, home cities and households in several
//! scripts, preferences, tiers) and their cards, the office's policy and
//! campaign file, and then lets the customers shop for
//! [`Spec::days`] days: every purchase, redemption and refund is a till's
//! approve decision followed by the card's certified completion record
//! (certificates under the card certificate keys of the [`IssuerKeys`]
//! given), journaled with the hash chain and body encoding of
//! `docs/settlement.md`, sealed into MAC'd per-terminal batches and
//! ingested with [`Ledger::ingest`]. Points come from
//! [`tessera_rules::offers::quote`] under the registered policy and
//! campaigns, and every decision passes [`tessera_rules::policy::authorize`],
//! so the ledger recomputes and accepts every point.
//!
//! The same [`Spec`] (with its seed) and the same keys give the same bytes.
//! Generation streams: the state kept is one small record per customer and
//! the open batch of each terminal, whatever the number of purchases.
//!
//! # The behaviour model
//! Each customer follows the BG/NBD story (Fader, Hardie, Lee 2005): a
//! first visit at an acquisition time spread uniformly over the first
//! 85 % of the period, then visits as a Poisson process of a personal rate
//! `λ ~ Gamma(`[`Model::rate_shape`]`)` (in visits per opening day, times a
//! chain-wide scale fitted so that exactly [`Spec::purchases`] purchases
//! happen within the period), and after each visit a dropout with a
//! personal probability `p ~ Beta(`[`Model::dropout_a`]`, `[`Model::dropout_b`]`)`
//! after which the customer never returns. Time runs in opening hours
//! (08:00–21:00 UTC every day). Spend follows Gamma-Gamma (Fader, Hardie,
//! Lee 2005, "RFM and CLV"): each purchase `z ~ Gamma(`[`Model::spend_p`]`, ν)`
//! with a personal `ν ~ Gamma(`[`Model::spend_q`]`, `[`Model::spend_gamma`]`)`
//! (the parameters published for the CDNOW sample, read in euros), in
//! [1.00, 500.00]. A customer shops at their favourite store
//! ([`Model::favourite_store_percent`] of visits, else any store), buys 1–3
//! basket lines with their preferred categories three times as likely,
//! redeems now and then ([`Model::redeem_percent`] of visits with at least
//! 300 points, up to 2,000 points), and returns a purchase
//! ([`Model::return_per_mille`] ‰) at the next visit (a refund of its
//! points).
//!
//! The campaign file ([`Spec::campaigns_toml`]) has a birthday bonus, an
//! every-10th-visit bonus and one campaign with a control group
//! ([`Spec::holdout`]): "Double points on your favourites", holding out
//! [`HOLDOUT_PERCENT`] % of the cards by
//! [`tessera_rules::offers::in_control`]. While it runs, the treated
//! customers (not in the control group) visit [`Model::campaign_lift_percent`]
//! % more often (their dropout per visit divided by the same factor, so
//! their chance of dropping out per day stays what it was: both groups
//! survive alike); the control group's behaviour does not change, so the
//! uplift in visits measured treated against control is that lift in
//! expectation, and the control group's own uplift is zero by construction.
//! [`Summary::holdout`] counts both groups' visits in the campaign window.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use tessera_ledger::books::OfficeBooks;

use tessera_crypto::cert::certificate;
use tessera_crypto::keys::IssuerKeys;
use tessera_crypto::Key;
use tessera_ledger::{IngestOutcome, Ledger, LedgerError, NewCustomer, NewRegistration};
use tessera_protocol::messages::{LogRecord, TxKind, Velocity, Visits};
use tessera_protocol::profile::{Date, Profile};
use tessera_rules::offers::{in_control, quote, CampaignSet};
use tessera_rules::policy::{authorize, date_from_unix, Hotlist, Policy, TxRequest, DEFAULT_POLICY_TOML};
use tessera_rules::CardInfo;
use tessera_settlement::batch::{write_records, AckStatus, SealedRange};
use tessera_settlement::record::{record_hash, BasketLine, Entry, EntryKind, QuoteInputs, RawRecord, Verdict};

mod people;
mod rng;

use rng::Rng;

/// The categories customers buy (all known to the default policy, none at
/// a zero multiplier, so every purchase earns points).
pub const CATEGORIES: [&str; 8] = [
    "grocery",
    "dairy",
    "produce",
    "drinks",
    "household",
    "coffee",
    "bakery",
    "books",
];
/// How often each of [`CATEGORIES`] is bought, before preferences.
const CATEGORY_WEIGHTS: [u32; 8] = [30, 14, 14, 12, 8, 10, 8, 4];

/// The id of the campaign with a control group.
pub const HOLDOUT_CAMPAIGN: &str = "favourites-double";
/// The share of cards the holdout campaign keeps as its control group.
pub const HOLDOUT_PERCENT: u8 = 20;

/// Seconds of opening time in a day (08:00–21:00).
const OPEN_SECS: f64 = 13.0 * 3600.0;
/// Opening time, seconds after midnight UTC.
const OPENS_AT: u32 = 8 * 3600;

/// The parameters of the behaviour model (see the crate documentation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Model {
    /// Shape of the gamma distribution of the customers' purchase rates.
    pub rate_shape: f64,
    /// First parameter of the beta distribution of the dropout probability.
    pub dropout_a: f64,
    /// Second parameter of the beta distribution of the dropout probability.
    pub dropout_b: f64,
    /// Gamma-Gamma: shape of each purchase's amount (euros).
    pub spend_p: f64,
    /// Gamma-Gamma: shape of the customers' spend rates ν.
    pub spend_q: f64,
    /// Gamma-Gamma: rate of the customers' spend rates ν.
    pub spend_gamma: f64,
    /// Share of visits at the favourite store, in percent.
    pub favourite_store_percent: u32,
    /// Share of visits with at least 300 points that redeem, in percent.
    pub redeem_percent: u32,
    /// Purchases returned at the next visit, per mille.
    pub return_per_mille: u32,
    /// How much more often treated customers visit while the holdout
    /// campaign runs, in percent.
    pub campaign_lift_percent: u32,
}

/// The model every [`Spec`] uses.
pub const MODEL: Model = Model {
    rate_shape: 2.0,
    dropout_a: 2.0,
    dropout_b: 30.0,
    spend_p: 6.25,
    spend_q: 3.74,
    spend_gamma: 15.44,
    favourite_store_percent: 75,
    redeem_percent: 12,
    return_per_mille: 15,
    campaign_lift_percent: 30,
};

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// The seed: the same spec gives the same history, byte for byte.
    pub seed: u64,
    /// Customers, each with one card (at least 1).
    pub customers: u32,
    /// Purchases (earns) in the whole history, exactly (at least 1).
    pub purchases: u64,
    /// Stores, numbered from 1 (1–9,999).
    pub stores: u32,
    /// Terminals in each store (1–99): store `s` has terminals
    /// `100 s + 1 …`.
    pub terminals_per_store: u32,
    /// The first day.
    pub start: Date,
    /// Days of history (at least 8).
    pub days: u32,
    /// Each terminal settles every this many days (at least 1).
    pub settle_every_days: u32,
}

/// The campaign with a control group, as [`Spec::holdout`] describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holdout {
    /// Campaign id ([`HOLDOUT_CAMPAIGN`]).
    pub campaign_id: String,
    /// First day.
    pub valid_from: Date,
    /// Last day.
    pub valid_until: Date,
    /// Control share in percent ([`HOLDOUT_PERCENT`]).
    pub holdout_percent: u8,
    /// The treated customers' extra visits while it runs, in percent
    /// ([`Model::campaign_lift_percent`]).
    pub visit_lift_percent: u32,
}

impl Spec {
    /// The benchmark's chain: `customers` and `purchases` over a year
    /// (2026), 50 stores of 4 terminals settling weekly.
    pub fn benchmark(seed: u64, customers: u32, purchases: u64) -> Spec {
        Spec {
            seed,
            customers,
            purchases,
            stores: 50,
            terminals_per_store: 4,
            start: Date {
                year: 2026,
                month: 1,
                day: 1,
            },
            days: 365,
            settle_every_days: 7,
        }
    }

    /// The start, as Unix seconds (midnight UTC).
    pub fn start_unix(&self) -> u32 {
        self.start.to_unix_days().saturating_mul(86_400)
    }

    fn day(&self, offset: u32) -> Date {
        Date::from_unix_days(self.start.to_unix_days().saturating_add(offset))
    }

    /// The holdout campaign: from 40 % into the period, for a quarter of it
    /// (at most 28 days).
    pub fn holdout(&self) -> Holdout {
        let from = self.days * 2 / 5;
        let len = (self.days / 4).clamp(1, 28);
        Holdout {
            campaign_id: HOLDOUT_CAMPAIGN.to_owned(),
            valid_from: self.day(from),
            valid_until: self.day(from + len - 1),
            holdout_percent: HOLDOUT_PERCENT,
            visit_lift_percent: MODEL.campaign_lift_percent,
        }
    }

    /// The campaign file the office signs and registers for this history.
    pub fn campaigns_toml(&self) -> String {
        let h = self.holdout();
        let (first, last) = (self.start, self.day(self.days - 1));
        format!(
            "version = 1\n\n\
             [[campaigns]]\nid = \"birthday-week\"\nname = \"Happy birthday week\"\nvalid_from = {first}\n\
             valid_until = {last}\nkind = \"birthday_bonus\"\npoints = 50\nwindow_days = 3\n\n\
             [[campaigns]]\nid = \"tenth-visit\"\nname = \"Every 10th visit\"\nvalid_from = {first}\n\
             valid_until = {last}\nkind = \"nth_visit\"\nevery = 10\npoints = 25\n\n\
             [[campaigns]]\nid = \"{}\"\nname = \"Double points on your favourites\"\nvalid_from = {}\n\
             valid_until = {}\nkind = \"preferred_category\"\nmultiplier_percent = 200\nholdout_percent = {}\n",
            h.campaign_id, h.valid_from, h.valid_until, h.holdout_percent
        )
    }

    /// Checks the spec's bounds.
    ///
    /// # Errors
    /// [`SynthError::Spec`] naming the field out of bounds.
    pub fn validate(&self) -> Result<(), SynthError> {
        let bad = |what: &str| Err(SynthError::Spec(what.to_owned()));
        if self.customers == 0 || self.customers > 10_000_000 {
            return bad("customers must be 1 to 10,000,000");
        }
        if self.purchases == 0 || self.purchases > 1_000_000_000 {
            return bad("purchases must be 1 to 1,000,000,000");
        }
        if self.stores == 0 || self.stores > 9_999 {
            return bad("stores must be 1 to 9,999");
        }
        if self.terminals_per_store == 0 || self.terminals_per_store > 99 {
            return bad("terminals_per_store must be 1 to 99");
        }
        if self.days < 8 || self.days > 3_650 {
            return bad("days must be 8 to 3,650");
        }
        if self.settle_every_days == 0 || self.settle_every_days > self.days {
            return bad("settle_every_days must be 1 to days");
        }
        if Date::new(self.start.year, self.start.month, self.start.day).is_err() || self.start.year < 1971 {
            return bad("start is not a date after 1970");
        }
        if u64::from(self.start_unix()) + u64::from(self.days + 1) * 86_400 > u64::from(u32::MAX) {
            return bad("the period ends after 2106");
        }
        Ok(())
    }
}

/// The demo's history: 400 customers, 5,000 purchases in 3 stores of 2
/// terminals over 180 days from 2026-05-01, settled weekly (seconds in a
/// debug build).
pub fn demo_spec() -> Spec {
    Spec {
        seed: 12,
        customers: 400,
        purchases: 5_000,
        stores: 3,
        terminals_per_store: 2,
        start: Date {
            year: 2026,
            month: 5,
            day: 1,
        },
        days: 180,
        settle_every_days: 7,
    }
}

/// The benchmarks' history: under `cargo bench` (`full`) 100,000
/// customers and 2,000,000 purchases, else a tiny one (200 / 2,000 in 5
/// stores of 2 terminals) that only proves the bench works;
/// `TESSERA_BENCH_CUSTOMERS` and `TESSERA_BENCH_PURCHASES` set the size.
pub fn bench_spec(full: bool) -> Spec {
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let customers = env("TESSERA_BENCH_CUSTOMERS").unwrap_or(if full { 100_000 } else { 200 });
    let purchases = env("TESSERA_BENCH_PURCHASES").unwrap_or(if full { 2_000_000 } else { 2_000 });
    let mut spec = Spec::benchmark(2026, u32::try_from(customers).unwrap_or(u32::MAX), purchases);
    if !full && customers < 10_000 {
        spec.stores = 5;
        spec.terminals_per_store = 2;
    }
    spec
}

/// Where the benchmarks put their ledgers: `TESSERA_BENCH_DIR`, else
/// `/dev/shm` when it exists (no disk flushes in the figures), else the
/// temporary directory.
pub fn bench_dir() -> std::path::PathBuf {
    std::env::var_os("TESSERA_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .or_else(|| Some(std::path::PathBuf::from("/dev/shm")).filter(|p| p.is_dir()))
        .unwrap_or_else(std::env::temp_dir)
}

/// Why generation failed. Nothing is half-written in the ledger: a batch
/// the ledger refuses is refused whole, and generation stops there.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SynthError {
    /// The spec is out of bounds.
    #[error("the history spec is not usable: {0}")]
    Spec(String),
    /// The customers cannot make that many purchases in the period.
    #[error("{asked} purchases asked, but these customers make at most {possible} before they drop out")]
    Unreachable {
        /// Purchases asked for.
        asked: u64,
        /// Purchases the customers make at most.
        possible: u64,
    },
    /// The ledger failed.
    #[error("ledger: {0}")]
    Ledger(#[from] LedgerError),
    /// The ledger did not post a generated batch cleanly.
    #[error("terminal {terminal_id}'s batch {batch_no} was not posted cleanly: {why}")]
    NotPosted {
        /// The terminal.
        terminal_id: u32,
        /// The batch.
        batch_no: u32,
        /// What the ledger said.
        why: String,
    },
    /// A generated record could not be written (a bug: never expected).
    #[error("writing a batch: {0}")]
    Format(String),
}

/// One sealed settlement batch of one terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The terminal.
    pub terminal_id: u32,
    /// Its batch number (from 1, gapless).
    pub batch_no: u32,
    /// When it was sealed (the evening of the last day it covers).
    pub sealed_at: u32,
    /// The batch as it travels (`docs/settlement.md`).
    pub bytes: Vec<u8>,
}

impl Batch {
    /// When the office receives it: ten minutes after sealing.
    pub fn received_at(&self) -> u32 {
        self.sealed_at.saturating_add(600)
    }
}

/// The holdout campaign's window, as the customers lived it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HoldoutSummary {
    /// Treated customers acquired before the campaign ended.
    pub treated_customers: u64,
    /// Control customers acquired before the campaign ended.
    pub control_customers: u64,
    /// The treated customers' purchases in the window.
    pub treated_visits: u64,
    /// The control customers' purchases in the window.
    pub control_visits: u64,
}

/// What was generated.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Summary {
    /// Customers registered (each with one card).
    pub customers: u64,
    /// Households.
    pub households: u64,
    /// Stores.
    pub stores: u32,
    /// Terminals.
    pub terminals: u32,
    /// Purchases (approved earns).
    pub purchases: u64,
    /// Their amounts, in minor units.
    pub spend_minor: u64,
    /// Points the purchases earned.
    pub points_earned: u64,
    /// Redemptions.
    pub redemptions: u64,
    /// Points redeemed.
    pub points_redeemed: u64,
    /// Refunds of purchases (returns).
    pub refunds: u64,
    /// Points the refunds took back.
    pub points_refunded: u64,
    /// The amounts of the refunded purchases, in minor units (included in
    /// `spend_minor`).
    pub refunded_minor: u64,
    /// Decisions the till declined or referred (journaled, no card
    /// transaction).
    pub declined: u64,
    /// Card transactions (earns, redemptions, refunds).
    pub card_transactions: u64,
    /// Journal records in all batches.
    pub journal_records: u64,
    /// Batches.
    pub batches: u64,
    /// Customers with at least one purchase.
    pub active_customers: u64,
    /// Time of the first purchase.
    pub first_purchase_at: u32,
    /// Time of the last purchase.
    pub last_purchase_at: u32,
    /// The chain-wide rate scale fitted: a customer's purchase rate is
    /// `rate_scale × λ` visits per opening day.
    pub rate_scale: f64,
    /// The holdout campaign's window.
    pub holdout: HoldoutSummary,
}

/// One customer, as generated.
struct Customer {
    profile: Profile,
    store: u32,
    lambda: f64,
    dropout: f64,
    nu: f64,
    /// Acquisition, in opening seconds from the start.
    t0: f64,
    treated: bool,
}

/// A generated history, ready to register and to run (see
/// [`generate_into`], which does both).
pub struct Generator {
    spec: Spec,
    customers: Vec<Customer>,
    households: u64,
    policy: Policy,
    campaigns: CampaignSet,
    campaigns_toml: String,
    scale: f64,
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator")
            .field("spec", &self.spec)
            .field("rate_scale", &self.scale)
            .finish_non_exhaustive()
    }
}

/// The window of the holdout campaign in opening seconds, and the rate
/// multiplier inside it.
#[derive(Clone, Copy)]
struct Window {
    from: f64,
    until: f64,
    factor: f64,
}

/// The opening time at which `e` units of intensity have accumulated from
/// `t`, at `rate` per opening second (times the window's factor inside it).
fn advance(mut t: f64, mut e: f64, rate: f64, window: Option<Window>) -> f64 {
    if let Some(w) = window {
        if t < w.from {
            let need = (w.from - t) * rate;
            if e <= need {
                return t + e / rate;
            }
            e -= need;
            t = w.from;
        }
        if t < w.until {
            let r = rate * w.factor;
            let need = (w.until - t) * r;
            if e <= need {
                return t + e / r;
            }
            e -= need;
            t = w.until;
        }
    }
    t + e / rate
}

/// The dropout probability after a visit at `t`: inside the campaign
/// window a treated customer's extra visits carry no extra risk of
/// dropping out (`p / factor` per visit at `factor` times the rate), so
/// both groups survive alike and the treated make `factor` times the
/// visits in expectation.
fn dropout_at(p: f64, t: f64, window: Option<Window>) -> f64 {
    match window {
        Some(w) if w.from <= t && t < w.until => p / w.factor,
        _ => p,
    }
}

/// Random streams: one per customer and purpose.
const STREAM_CUSTOMER: u64 = 1;
const STREAM_TIMING: u64 = 2;
const STREAM_VISITS: u64 = 3;
const STREAM_HOUSEHOLD: u64 = 4;

/// A card id: `5E 47`, two bytes of the seed, the customer's number.
fn card_id(seed: u64, index: u32) -> [u8; 8] {
    let s = (seed as u16).to_be_bytes();
    let n = (index + 1).to_be_bytes();
    [0x5E, 0x47, s[0], s[1], n[0], n[1], n[2], n[3]]
}

impl Generator {
    /// Draws the chain's customers and fits the rate scale that gives
    /// exactly [`Spec::purchases`] purchases in the period.
    ///
    /// # Errors
    /// [`SynthError::Spec`], [`SynthError::Unreachable`].
    pub fn new(spec: &Spec) -> Result<Generator, SynthError> {
        spec.validate()?;
        let policy = Policy::from_toml(DEFAULT_POLICY_TOML).map_err(|e| SynthError::Format(e.to_string()))?;
        let campaigns_toml = spec.campaigns_toml();
        let campaigns = CampaignSet::from_toml(&campaigns_toml).map_err(|e| SynthError::Format(e.to_string()))?;
        let horizon = f64::from(spec.days) * OPEN_SECS;
        let end = spec.start.to_unix_days() + spec.days;
        let mut customers = Vec::with_capacity(spec.customers as usize);
        let mut households = 0u64;
        while customers.len() < spec.customers as usize {
            let mut hh = Rng::new(spec.seed, STREAM_HOUSEHOLD, households);
            households += 1;
            let size = 1 + hh.weighted(&[35, 35, 15, 15]);
            let store = 1 + hh.below(spec.stores);
            let locale = &people::LOCALES[(store as usize - 1) % people::LOCALES.len()];
            let family = people::family_name(locale, &mut hh);
            let mut household = *b"HH000000";
            let digits = format!("{:06}", households % 1_000_000);
            household[2..].copy_from_slice(digits.as_bytes());
            for _ in 0..size {
                let Ok(index) = u32::try_from(customers.len()) else {
                    break;
                };
                if index >= spec.customers {
                    break;
                }
                let mut r = Rng::new(spec.seed, STREAM_CUSTOMER, u64::from(index));
                let name = people::full_name(locale, family, &mut r);
                let age_days = (18 * 365 + r.below(62 * 365)) as i64;
                let birth_date = Date::from_days_since_epoch(i64::from(spec.start.to_unix_days()) - age_days);
                let mut preferences = Vec::new();
                for _ in 0..1 + r.weighted(&[50, 35, 15]) {
                    let c = CATEGORIES[r.weighted(&CATEGORY_WEIGHTS)].to_owned();
                    if !preferences.contains(&c) {
                        preferences.push(c);
                    }
                }
                let tier = u8::try_from(r.weighted(&[55, 25, 14, 6])).unwrap_or(0);
                let id = card_id(spec.seed, index);
                let profile = Profile {
                    card_id: id,
                    version: 1,
                    name,
                    birth_date,
                    home_city: locale.city.to_owned(),
                    household,
                    preferences,
                    tier,
                    valid_from: spec.start,
                    valid_until: Date::from_unix_days(end + 3 * 365),
                };
                let lambda = r.gamma(MODEL.rate_shape);
                let dropout = r.beta(MODEL.dropout_a, MODEL.dropout_b);
                let nu = r.gamma(MODEL.spend_q) / MODEL.spend_gamma;
                let t0 = r.f64() * 0.85 * horizon;
                let treated = !in_control(HOLDOUT_CAMPAIGN, &id, HOLDOUT_PERCENT);
                // One customer in ten shops mostly at another store.
                let store = if r.chance(0.1) { 1 + r.below(spec.stores) } else { store };
                customers.push(Customer {
                    profile,
                    store,
                    lambda,
                    dropout,
                    nu,
                    t0,
                    treated,
                });
            }
        }
        let mut g = Generator {
            spec: spec.clone(),
            customers,
            households,
            policy,
            campaigns,
            campaigns_toml,
            scale: 0.0,
        };
        g.scale = g.fit_scale()?;
        Ok(g)
    }

    /// The spec.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// The fitted rate scale (see [`Summary::rate_scale`]).
    pub fn rate_scale(&self) -> f64 {
        self.scale
    }

    fn horizon(&self) -> f64 {
        f64::from(self.spec.days) * OPEN_SECS
    }

    fn window(&self, c: &Customer) -> Option<Window> {
        if !c.treated {
            return None;
        }
        let h = self.spec.holdout();
        let start = self.spec.start.to_unix_days();
        Some(Window {
            from: f64::from(h.valid_from.to_unix_days() - start) * OPEN_SECS,
            until: f64::from(h.valid_until.to_unix_days() + 1 - start) * OPEN_SECS,
            factor: 1.0 + f64::from(MODEL.campaign_lift_percent) / 100.0,
        })
    }

    /// Purchases of every customer within the period at rate scale `s`
    /// (the same draws [`Generator::run`] makes).
    fn purchases_at(&self, s: f64) -> u64 {
        let horizon = self.horizon();
        let mut n = 0u64;
        for (i, c) in self.customers.iter().enumerate() {
            let mut timing = Rng::new(self.spec.seed, STREAM_TIMING, i as u64);
            let rate = s * c.lambda / OPEN_SECS;
            let window = self.window(c);
            let mut t = c.t0;
            while t < horizon {
                n += 1;
                if timing.chance(dropout_at(c.dropout, t, window)) {
                    break;
                }
                t = advance(t, timing.exp1(), rate, window);
            }
        }
        n
    }

    /// The smallest scale (to a relative 1e-12) giving at least the
    /// purchases asked for; the run stops at exactly that many.
    fn fit_scale(&self) -> Result<f64, SynthError> {
        let asked = self.spec.purchases;
        let (mut lo, mut hi) = (1e-9f64, 1e4f64);
        let possible = self.purchases_at(hi);
        if possible < asked {
            return Err(SynthError::Unreachable { asked, possible });
        }
        for _ in 0..200 {
            if hi / lo < 1.0 + 1e-12 {
                break;
            }
            let mid = (lo * hi).sqrt();
            let n = self.purchases_at(mid);
            if n == asked {
                return Ok(mid);
            }
            if n > asked {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Ok(hi)
    }

    /// The registered text of the campaign file.
    pub fn campaigns_toml(&self) -> &str {
        &self.campaigns_toml
    }

    /// Registers the chain in a ledger, as the office does before the
    /// history starts: the policy and the campaign file, the stores and
    /// their terminals, every customer and their card (with the keys'
    /// current key version, in one [`Ledger::register_customers_and_cards`]
    /// transaction), all at `now`. Expects a fresh ledger (customer ids
    /// are the ledger's own).
    ///
    /// # Errors
    /// [`SynthError::Ledger`].
    pub fn register(&self, ledger: &mut Ledger, keys: &IssuerKeys, now: u32) -> Result<(), SynthError> {
        ledger.register_policy(DEFAULT_POLICY_TOML, now)?;
        ledger.register_campaigns(&self.campaigns_toml, now)?;
        let mut in_city: HashMap<&str, u32> = HashMap::new();
        for s in 1..=self.spec.stores {
            let city = people::LOCALES[(s as usize - 1) % people::LOCALES.len()].city;
            let k = in_city.entry(city).or_insert(0);
            *k += 1;
            ledger.add_store(s, &format!("{city} {k}"), city, now)?;
            for t in 1..=self.spec.terminals_per_store {
                let id = s * 100 + t;
                ledger.register_terminal(id, now)?;
                ledger.assign_terminal(id, s)?;
            }
        }
        let entries: Vec<NewRegistration> = self
            .customers
            .iter()
            .map(|c| {
                let p = &c.profile;
                NewRegistration {
                    customer: NewCustomer {
                        name: p.name.clone(),
                        birth_date: p.birth_date,
                        home_city: p.home_city.clone(),
                        household: p.household,
                        preferences: p.preferences.clone(),
                        tier: p.tier,
                    },
                    card_id: p.card_id,
                    key_version: keys.key_version,
                }
            })
            .collect();
        ledger.register_customers_and_cards(&entries, now)?;
        Ok(())
    }

    /// Lives the history and hands each sealed batch to `sink`, in the
    /// order the office receives them (period by period; in a period,
    /// terminal by terminal). Stops at the first error of `sink`.
    ///
    /// # Errors
    /// Whatever `sink` returns; [`SynthError::Format`] (as `E`) if a
    /// record could not be written.
    pub fn run<E: From<SynthError>>(
        &self,
        keys: &IssuerKeys,
        mut sink: impl FnMut(Batch) -> Result<(), E>,
    ) -> Result<Summary, E> {
        let spec = &self.spec;
        let horizon = self.horizon();
        let mut sum = Summary {
            customers: self.customers.len() as u64,
            households: self.households,
            stores: spec.stores,
            terminals: spec.stores * spec.terminals_per_store,
            rate_scale: self.scale,
            ..Summary::default()
        };
        let holdout = spec.holdout();
        let window_end = f64::from(holdout.valid_until.to_unix_days() + 1 - spec.start.to_unix_days()) * OPEN_SECS;
        for c in &self.customers {
            if c.t0 < window_end {
                if c.treated {
                    sum.holdout.treated_customers += 1;
                } else {
                    sum.holdout.control_customers += 1;
                }
            }
        }
        let mut tills: Vec<Till> = (1..=spec.stores)
            .flat_map(|s| (1..=spec.terminals_per_store).map(move |t| s * 100 + t))
            .map(|id| Till::new(id, keys.terminal_batch_key(id)))
            .collect();
        let mut cards: Vec<CardState> = Vec::with_capacity(self.customers.len());
        let mut heap = BinaryHeap::with_capacity(self.customers.len());
        for (i, c) in self.customers.iter().enumerate() {
            cards.push(CardState {
                cert_key: keys.card_cert_key(&c.profile.card_id),
                key_version: keys.key_version,
                timing: Rng::new(spec.seed, STREAM_TIMING, i as u64),
                draws: Rng::new(spec.seed, STREAM_VISITS, i as u64),
                counter: 0,
                balance: 0,
                visits: Visits::default(),
                last_record: None,
                velocity: Velocity::default(),
                period: 0,
                pending_return: None,
                purchased: false,
            });
            if c.t0 < horizon {
                heap.push(Reverse((c.t0.to_bits(), i)));
            }
        }
        let mut period = 0u32;
        while let Some(Reverse((bits, i))) = heap.pop() {
            if sum.purchases >= spec.purchases {
                break;
            }
            let t = f64::from_bits(bits);
            let day = (t / OPEN_SECS) as u32;
            let p = day / spec.settle_every_days;
            if p > period {
                self.settle(&mut tills, period, &mut sum, &mut sink)?;
                period = p;
            }
            let c = &self.customers[i];
            let card = &mut cards[i];
            let unix = spec.start_unix() + day * 86_400 + OPENS_AT + (t - f64::from(day) * OPEN_SECS) as u32;
            self.visit(c, card, unix, p, &mut tills, &mut sum)?;
            let window = self.window(c);
            if !card.timing.chance(dropout_at(c.dropout, t, window)) {
                let next = advance(t, card.timing.exp1(), self.scale * c.lambda / OPEN_SECS, window);
                if next < horizon {
                    heap.push(Reverse((next.to_bits(), i)));
                }
            }
        }
        self.settle(&mut tills, period, &mut sum, &mut sink)?;
        sum.active_customers = cards.iter().filter(|c| c.purchased).count() as u64;
        Ok(sum)
    }

    /// Seals every terminal's open records of settlement period `period`.
    fn settle<E: From<SynthError>>(
        &self,
        tills: &mut [Till],
        period: u32,
        sum: &mut Summary,
        sink: &mut impl FnMut(Batch) -> Result<(), E>,
    ) -> Result<(), E> {
        let last_day = ((period + 1) * self.spec.settle_every_days).min(self.spec.days) - 1;
        let sealed_at = self.spec.start_unix() + last_day * 86_400 + 21 * 3600 + 30 * 60;
        for till in tills.iter_mut() {
            if let Some(batch) = till.seal(sealed_at)? {
                sum.batches += 1;
                sink(batch)?;
            }
        }
        Ok(())
    }

    /// One visit: a return of the last visit's purchase if one is due,
    /// the purchase, now and then a redemption.
    fn visit(
        &self,
        c: &Customer,
        card: &mut CardState,
        unix: u32,
        period: u32,
        tills: &mut [Till],
        sum: &mut Summary,
    ) -> Result<(), SynthError> {
        let spec = &self.spec;
        let r = &mut card.draws;
        let store = if r.below(100) < MODEL.favourite_store_percent {
            c.store
        } else {
            1 + r.below(spec.stores)
        };
        let t_index = (store - 1) * spec.terminals_per_store + r.below(spec.terminals_per_store);
        let till = &mut tills[t_index as usize];
        if card.period != period {
            // The card met a synced till after its last settlement.
            card.velocity = Velocity {
                settled_counter: card.counter,
                ..Velocity::default()
            };
            card.period = period;
        }
        // A return of the last visit's purchase.
        if let Some((original, points, minor)) = card.pending_return.take() {
            if card.counter - original < tessera_protocol::LOG_CAPACITY as u32 {
                let mut d = Entry::new(EntryKind::Decision, unix);
                d.reference = Some(original);
                let done = self.card_tx(c, card, till, d, TxKind::RefundEarn, points, original, unix, sum)?;
                if done {
                    sum.refunds += 1;
                    sum.points_refunded += u64::from(points);
                    sum.refunded_minor += minor;
                }
            }
        }
        // The purchase.
        let r = &mut card.draws;
        let euros = r.gamma(MODEL.spend_p) / c.nu;
        let minor = ((euros * 100.0).round() as u64).clamp(100, 50_000);
        let weights: Vec<u32> = CATEGORIES
            .iter()
            .zip(CATEGORY_WEIGHTS)
            .map(|(cat, w)| {
                if c.profile.preferences.iter().any(|p| p == cat) {
                    w * 3
                } else {
                    w
                }
            })
            .collect();
        let lines = 1 + r.weighted(&[60, 30, 10]);
        let mut basket: Vec<BasketLine> = Vec::new();
        let shares: Vec<u64> = (0..lines).map(|_| 1 + u64::from(r.below(9))).collect();
        let total_share: u64 = shares.iter().sum();
        let mut left = minor;
        for (k, share) in shares.iter().enumerate() {
            let amount = if k + 1 == lines {
                left
            } else {
                minor * share / total_share
            };
            left -= amount;
            let category = CATEGORIES[r.weighted(&weights)].to_owned();
            match basket.iter_mut().find(|l| l.category == category) {
                Some(l) => l.amount_minor += amount,
                None if amount > 0 => basket.push(BasketLine {
                    category,
                    amount_minor: amount,
                }),
                None => {}
            }
        }
        basket.retain(|l| l.amount_minor > 0);
        let categories: Vec<String> = basket.iter().map(|l| l.category.clone()).collect();
        let at = unix + 30;
        let today = date_from_unix(at);
        let q = quote(
            &self.policy,
            &self.campaigns,
            &c.profile,
            &card.visits,
            minor,
            &categories,
            today,
        );
        let mut d = Entry::new(EntryKind::Decision, at);
        d.purchase_minor = Some(minor);
        d.policy = Some(hex::encode(self.policy.digest));
        d.campaigns = self.campaigns.digest.map(hex::encode);
        d.quote_inputs = Some(QuoteInputs {
            tier: c.profile.tier,
            preferences: c.profile.preferences.clone(),
            birth_date: c.profile.birth_date.to_string(),
            visits: card.visits.count,
            last_visit_day: card.visits.last_day,
        });
        d.quote_lines = q.lines.iter().map(|l| (l.campaign_id.clone(), l.points)).collect();
        d.categories.clone_from(&categories);
        d.basket = basket;
        if self.card_tx(c, card, till, d, TxKind::Earn, q.total, 0, at, sum)? {
            sum.purchases += 1;
            sum.spend_minor += minor;
            sum.points_earned += u64::from(q.total);
            if sum.first_purchase_at == 0 {
                sum.first_purchase_at = at;
            }
            sum.last_purchase_at = at;
            card.purchased = true;
            card.visits = Visits {
                count: card.visits.count + 1,
                last_day: at / 86_400,
                last_store: store,
            };
            let h = spec.holdout();
            if h.valid_from <= today && today <= h.valid_until {
                if c.treated {
                    sum.holdout.treated_visits += 1;
                } else {
                    sum.holdout.control_visits += 1;
                }
            }
            if card.draws.below(1000) < MODEL.return_per_mille {
                card.pending_return = Some((card.counter, q.total, minor));
            }
        }
        // Now and then a redemption.
        if card.balance >= 300 && card.draws.below(100) < MODEL.redeem_percent {
            let points = (card.balance / 100 * 100).min(2_000);
            let d = Entry::new(EntryKind::Decision, at + 30);
            if self.card_tx(c, card, till, d, TxKind::Redeem, points, 0, at + 30, sum)? {
                sum.redemptions += 1;
                sum.points_redeemed += u64::from(points);
                card.velocity.unsettled_redeems += 1;
                card.velocity.unsettled_points += points;
            }
        }
        Ok(())
    }

    /// A till's decision on a card transaction and, when approved, the
    /// card's certified record: both journaled. Returns whether approved.
    #[allow(clippy::too_many_arguments)]
    fn card_tx(
        &self,
        c: &Customer,
        card: &mut CardState,
        till: &mut Till,
        mut d: Entry,
        kind: TxKind,
        points: u32,
        reference: u32,
        at: u32,
        sum: &mut Summary,
    ) -> Result<bool, SynthError> {
        let id = c.profile.card_id;
        d.card_id = Some(hex::encode_upper(id));
        d.tx_type = Some(kind.name().to_owned());
        d.points = Some(points);
        let info = CardInfo {
            card_id: id,
            key_version: card.key_version,
            balance: card.balance,
            counter: card.counter,
            last_record: card.last_record.clone(),
            profile: c.profile.clone(),
            profile_digest: [0; 32],
            profile_cached: true,
            visits: card.visits,
            velocity: card.velocity,
        };
        let req = TxRequest {
            kind,
            points,
            purchase_minor: d.purchase_minor.unwrap_or(0),
            categories: d.categories.clone(),
        };
        let decision = authorize(&self.policy, &Hotlist::empty(), &info, &req, at);
        if !decision.is_approved() {
            d.verdict = Some(if matches!(decision, tessera_rules::policy::Decision::Refer(_)) {
                Verdict::Refer
            } else {
                Verdict::Decline
            });
            d.reason = Some(decision.code().to_owned());
            d.card_counter = None;
            till.append(&d);
            sum.declined += 1;
            sum.journal_records += 1;
            return Ok(false);
        }
        d.verdict = Some(Verdict::Approve);
        d.card_counter = Some(card.counter + 1);
        let seq = till.append(&d);
        let balance_after = match kind {
            TxKind::Earn => card.balance.saturating_add(points),
            _ => card.balance - points,
        };
        let mut rec = LogRecord {
            counter: card.counter + 1,
            kind,
            amount: points,
            balance_after,
            terminal_id: till.id,
            terminal_seq: seq,
            time: at,
            reference,
            online: false,
            certificate: [0; 16],
        };
        rec.certificate = certificate(&card.cert_key, &id, &rec);
        let mut done = Entry::from_card_record(EntryKind::Completion, at, &id, &rec);
        done.purchase_minor = d.purchase_minor;
        done.categories = d.categories;
        till.append(&done);
        card.counter = rec.counter;
        card.balance = balance_after;
        card.last_record = Some(rec);
        sum.card_transactions += 1;
        sum.journal_records += 2;
        Ok(true)
    }
}

/// What the generator knows of a card while the history runs.
struct CardState {
    cert_key: Key,
    key_version: u8,
    timing: Rng,
    draws: Rng,
    counter: u32,
    balance: u32,
    visits: Visits,
    last_record: Option<LogRecord>,
    velocity: Velocity,
    period: u32,
    /// The last purchase, to return at the next visit: counter, points,
    /// amount.
    pending_return: Option<(u32, u32, u64)>,
    purchased: bool,
}

/// A terminal's journal: the hash chain and the records not yet sealed.
struct Till {
    id: u32,
    key: Key,
    seq: u32,
    head: [u8; 32],
    batch_no: u32,
    open: Vec<RawRecord>,
}

impl Till {
    fn new(id: u32, key: Key) -> Self {
        Self {
            id,
            key,
            seq: 0,
            head: [0; 32],
            batch_no: 0,
            open: Vec::new(),
        }
    }

    /// Journals an entry; returns its sequence number.
    fn append(&mut self, e: &Entry) -> u32 {
        self.seq += 1;
        let (hash, body) = record_hash(&self.head, self.seq, self.id, e);
        self.open.push((self.seq, body, self.head, hash));
        self.head = hash;
        self.seq
    }

    /// Seals the open records into the next batch.
    fn seal(&mut self, sealed_at: u32) -> Result<Option<Batch>, SynthError> {
        let (Some(first), Some(last)) = (self.open.first(), self.open.last()) else {
            return Ok(None);
        };
        self.batch_no += 1;
        let range = SealedRange {
            batch_no: self.batch_no,
            seq_from: first.0,
            seq_to: last.0,
            prev_head: first.2,
            head: last.3,
            sealed_at,
            acked_at: None,
        };
        let mut bytes = Vec::with_capacity(self.open.len() * 700);
        write_records(self.id, &self.key, &range, &self.open, &mut bytes)
            .map_err(|e| SynthError::Format(e.to_string()))?;
        self.open.clear();
        Ok(Some(Batch {
            terminal_id: self.id,
            batch_no: self.batch_no,
            sealed_at,
            bytes,
        }))
    }
}

/// Ingests one generated batch and checks that the ledger posted all of
/// it with no exception.
///
/// # Errors
/// [`SynthError::Ledger`] when the ledger refuses it,
/// [`SynthError::NotPosted`] when it holds it, or posts it with
/// exceptions or records not posted.
pub fn ingest(ledger: &mut Ledger, batch: &Batch) -> Result<IngestOutcome, SynthError> {
    let out = ledger.ingest(batch.bytes.as_slice(), batch.received_at())?;
    let r = &out.report;
    let why = if out.ack.status != AckStatus::Posted {
        Some(format!("acknowledged {:?}", out.ack.status))
    } else if r.exceptions_total > 0 {
        Some(format!(
            "{} exception(s), the first: {}",
            r.exceptions_total,
            r.exceptions
                .first()
                .map(|e| format!("{} {}", e.class.as_str(), e.evidence))
                .unwrap_or_default()
        ))
    } else if r.rejected > 0 || r.duplicates > 0 {
        Some(format!("{} rejected, {} duplicate", r.rejected, r.duplicates))
    } else {
        None
    };
    match why {
        Some(why) => Err(SynthError::NotPosted {
            terminal_id: batch.terminal_id,
            batch_no: batch.batch_no,
            why,
        }),
        None => Ok(out),
    }
}

/// Generates the history of `spec` into `ledger`: registers the chain
/// ([`Generator::register`], at `now`; [`Spec::start_unix`] reads
/// naturally) and ingests every batch as the office receives it
/// ([`ingest`]). Returns what was generated.
///
/// # Errors
/// As [`Generator::new`], [`Generator::register`] and [`ingest`]; at the
/// first batch not posted cleanly generation stops (what was posted
/// before stays, each batch whole).
pub fn generate_into(spec: &Spec, ledger: &mut Ledger, keys: &IssuerKeys, now: u32) -> Result<Summary, SynthError> {
    let g = Generator::new(spec)?;
    g.register(ledger, keys, now)?;
    g.run(keys, |b| ingest(ledger, &b).map(|_| ()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_inverts_the_intensity() {
        let w = Some(Window {
            from: 10.0,
            until: 20.0,
            factor: 2.0,
        });
        assert!((advance(0.0, 5.0, 1.0, w) - 5.0).abs() < 1e-9);
        // 10 before the window, then 2 per unit: 10 more units take 5.
        assert!((advance(0.0, 20.0, 1.0, w) - 15.0).abs() < 1e-9);
        // 10 + 20 in the window, then 1 per unit.
        assert!((advance(0.0, 33.0, 1.0, w) - 23.0).abs() < 1e-9);
        assert!((advance(25.0, 3.0, 1.0, w) - 28.0).abs() < 1e-9);
    }

    #[test]
    fn bad_specs_are_refused() {
        let ok = demo_spec();
        for (spec, what) in [
            (
                Spec {
                    customers: 0,
                    ..ok.clone()
                },
                "customers",
            ),
            (
                Spec {
                    terminals_per_store: 100,
                    ..ok.clone()
                },
                "terminals_per_store",
            ),
            (Spec { days: 3, ..ok.clone() }, "days"),
            (
                Spec {
                    settle_every_days: 0,
                    ..ok.clone()
                },
                "settle_every_days",
            ),
            (
                Spec {
                    purchases: 0,
                    ..ok.clone()
                },
                "purchases",
            ),
        ] {
            let e = Generator::new(&spec).unwrap_err();
            assert!(e.to_string().contains(what), "{e}");
        }
        let too_many = Spec {
            customers: 2,
            purchases: 100_000,
            ..ok
        };
        assert!(matches!(
            Generator::new(&too_many),
            Err(SynthError::Unreachable { asked: 100_000, .. })
        ));
    }

    #[test]
    fn the_campaign_file_parses_with_its_holdout() {
        let spec = demo_spec();
        let set = CampaignSet::from_toml(&spec.campaigns_toml()).unwrap();
        let c = set.campaigns.iter().find(|c| c.id == HOLDOUT_CAMPAIGN).unwrap();
        assert_eq!(c.holdout_percent, HOLDOUT_PERCENT);
        let h = spec.holdout();
        assert_eq!((c.valid_from, c.valid_until), (h.valid_from, h.valid_until));
    }
}
