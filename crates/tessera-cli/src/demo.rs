//! `tessera demo`: a short day at two tills, from issuance to the back
//! office's proof that every point is explained.
//!
//! The cards are simulated; the tills are the real thing: offline policy,
//! signed campaigns, journals on SQLite, recovery of a card pulled away
//! mid-transaction. With a `pcscd` running two vpcd virtual readers (see
//! `scripts/demo.sh`) every APDU goes through the real PC/SC stack. In
//! the evening the tills settle over HTTPS to the office's server, started
//! on loopback with a fresh certificate that the tills' bundles pin.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tessera_ledger::books::OfficeBooks;

use clap::Args;
use serde_json::json;
use tessera_crypto::keys::IssuerKeys;
use tessera_crypto::rng::Rng;
use tessera_ledger::{Ledger, LedgerKeys};
use tessera_protocol::profile::{Date, Profile};
use tessera_simulator::vpcd::{self, ServeOptions};
use tessera_simulator::{Faults, SimCard};
use tessera_terminal::issuer::{personalize, IssueParams};
use tessera_terminal::journal::Journal;
use tessera_terminal::offers::{sign_campaigns, CampaignSet};
use tessera_terminal::policy::{Hotlist, Policy};
use tessera_terminal::till::{Till, TillConfig, TillError, TillOutcome};
use tessera_terminal::{Clock, SoftwareSam, Terminal};
use tessera_transport::Transport;

use crate::fail::{Failure, EXIT_CARD, EXIT_FILE};
use crate::out::{self, print_json};
use crate::OutputArgs;

/// Arguments of `demo`.
#[derive(Args)]
pub struct DemoArgs {
    /// Seed for cards and terminals, for a reproducible run [default: OS randomness].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Keep the cards in process even when pcscd with virtual readers runs.
    #[arg(long)]
    pub in_process: bool,
    /// Where the demo writes the dashboard of the chain's generated
    /// history [default: tessera-demo-dashboard in the system's temporary
    /// directory]. A directory the demo wrote before is replaced; any
    /// other must be new or empty.
    #[arg(long, value_name = "DIR")]
    pub dashboard: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// The file that marks a dashboard directory as the demo's own (so a
/// later run may replace it).
const DASHBOARD_MARK: &str = ".tessera-demo-dashboard";

/// 2026-03-16 09:00 UTC: two days after Анна's birthday.
const OPENING: u32 = 1_773_651_600;

/// The campaigns the demo's back office publishes (the documented example).
const CAMPAIGNS: &str = include_str!("../../tessera-rules/campaigns.example.toml");

enum Step {
    /// A purchase: amount in cents, categories.
    Buy(usize, u64, &'static [&'static str]),
    /// A redemption.
    Redeem(usize, u32),
    /// A purchase during which the customer pulls the card away.
    BuyPulled(usize, u64, &'static [&'static str]),
    /// A tap to see the balance and offers.
    Read(usize),
    /// A refund of the card's transaction with this counter.
    Refund(usize, u32),
    /// A purchase the till refers (above its offline limit), resolved
    /// online with the office, the card in the field.
    BuyOnline(usize, u64, &'static [&'static str]),
    /// The same at a till whose link is down: resolved by telephone, the
    /// clerk reading the reference and typing the office's answer code.
    BuyVoice(usize, u64, &'static [&'static str]),
}

fn customers() -> Vec<(Profile, &'static str)> {
    let d = |y, m, day| Date { year: y, month: m, day };
    let p = |name: &str, born, city: &str, prefs: &[&str], tier| Profile {
        card_id: [0; 8],
        version: 1,
        name: name.into(),
        birth_date: born,
        home_city: city.into(),
        household: [0; 8],
        preferences: prefs.iter().map(|s| (*s).to_owned()).collect(),
        tier,
        valid_from: d(2026, 1, 1),
        valid_until: d(2030, 12, 31),
    };
    vec![
        (
            p(
                "Анна Петрова",
                d(1990, 3, 14),
                "Нижний Новгород",
                &["coffee", "bakery"],
                1,
            ),
            "7E57000000000001",
        ),
        (
            p("Jean Dupont", d(1975, 7, 2), "Lyon", &["wine"], 0),
            "7E57000000000002",
        ),
        (
            p("佐藤 花子", d(2001, 11, 30), "大阪", &["tea", "books"], 2),
            "7E57000000000003",
        ),
    ]
}

/// How cards reach the tills.
enum Stack {
    /// The simulator in process.
    InProcess,
    /// Virtual cards behind the real pcscd: till `i` is reader `readers[i]`,
    /// fed by the vpcd port `i`.
    Pcsc { readers: [String; 2] },
}

/// Uses the real PC/SC stack when pcscd runs with two vpcd readers.
fn detect_stack(force_in_process: bool) -> Stack {
    if force_in_process {
        return Stack::InProcess;
    }
    let Ok(list) = tessera_pcsc::list_readers() else {
        return Stack::InProcess;
    };
    let find = |suffix: &str| {
        list.iter()
            .find(|r| r.starts_with("Virtual PCD") && r.ends_with(suffix))
            .cloned()
    };
    match (find("00 00"), find("00 01")) {
        (Some(a), Some(b)) => Stack::Pcsc { readers: [a, b] },
        _ => Stack::InProcess,
    }
}

/// Presents `card` at till `till` and runs `f` with the till's transport:
/// in process, the card itself; over PC/SC, the card is put into the
/// till's virtual reader for the duration of `f` and taken out after.
fn present<R>(
    stack: &Stack,
    till: usize,
    card: &mut SimCard,
    f: impl FnOnce(&mut dyn Transport) -> R,
) -> Result<R, Failure> {
    card.insert()?;
    let Stack::Pcsc { readers } = stack else {
        return Ok(f(card));
    };
    let reader = &readers[till];
    let stop = AtomicBool::new(false);
    let opts = ServeOptions {
        addr: vpcd::reader_addr(till as u16),
        ..ServeOptions::default()
    };
    let wait = Duration::from_secs(10);
    let pcsc_err = |e: tessera_pcsc::PcscError| Failure::new(EXIT_CARD, format!("reader {reader}: {e}"));
    std::thread::scope(|s| {
        let server = s.spawn(|| vpcd::serve(card, &opts, &stop));
        let result = (|| {
            tessera_pcsc::wait_for_card(reader, true, wait).map_err(pcsc_err)?;
            let mut transport = tessera_pcsc::PcscTransport::connect(reader).map_err(pcsc_err)?;
            Ok(f(&mut transport))
        })();
        stop.store(true, Ordering::SeqCst);
        let served = server.join();
        // The card has left the field: wait until the reader has noticed.
        let _ = tessera_pcsc::wait_for_card(reader, false, wait);
        match served {
            Ok(Ok(_)) => result,
            Ok(Err(e)) => Err(Failure::new(EXIT_CARD, format!("virtual reader {reader}: {e}"))),
            Err(_) => Err(Failure::new(EXIT_CARD, "virtual card thread failed")),
        }
    })
}

/// The demo's clock: the day advances step by step.
#[derive(Clone)]
struct DemoClock(Arc<AtomicU32>);

impl Clock for DemoClock {
    fn now(&self) -> u32 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Runs the demo.
pub fn run(a: DemoArgs) -> Result<(), Failure> {
    let json = a.output.json;
    day(a).map_err(|f| f.json(json))
}

fn rng(seed: Option<u64>, k: u64) -> Rng {
    seed.map_or(Rng::Os, |s| Rng::seeded(s.wrapping_mul(1000).wrapping_add(k)))
}

fn money(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

fn till_err(e: TillError) -> String {
    match e {
        TillError::Terminal(t) => Failure::from(t).message,
        other => other.to_string(),
    }
}

fn day(a: DemoArgs) -> Result<(), Failure> {
    let keys = IssuerKeys::test().map_err(|e| Failure::new(EXIT_FILE, format!("test key store unusable: {e}")))?;
    let json = a.output.json;
    let stack = detect_stack(a.in_process);
    let work = std::env::temp_dir().join(format!("tessera-demo-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| Failure::new(EXIT_FILE, format!("{}: {e}", work.display())))?;
    let out = dashboard_dir(&a)?;
    let result = run_day(&a, &keys, &stack, &work).and_then(|day| Ok((day, history(&a, &keys, &work, &out)?)));
    let _ = std::fs::remove_dir_all(&work);
    let ((events, summary), analytics) = result?;
    if json {
        print_json(json!({"events": events, "back_office": summary, "analytics": analytics}));
    }
    if summary["reconciled"] != json!(true) {
        return Err(Failure::new(EXIT_CARD, "demo reconciliation failed"));
    }
    Ok(())
}

/// The analyst's view: six months of a chain's history, generated
/// (`tessera_synth::demo_spec`, seeded) and settled through real batches
/// into a ledger of its own, summarised, and the dashboard written.
/// Where the dashboard goes: refused before any work unless it is new,
/// empty, or written by the demo before.
fn dashboard_dir(a: &DemoArgs) -> Result<std::path::PathBuf, Failure> {
    let out = a
        .dashboard
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("tessera-demo-dashboard"));
    let ours = out.join(DASHBOARD_MARK).exists();
    let empty = std::fs::read_dir(&out).map_or(true, |mut d| d.next().is_none());
    if !ours && !empty {
        return Err(Failure::new(
            EXIT_FILE,
            format!(
                "{} exists, is not empty and was not written by the demo: name another with --dashboard DIR",
                out.display()
            ),
        ));
    }
    Ok(out)
}

fn history(
    a: &DemoArgs,
    keys: &IssuerKeys,
    work: &std::path::Path,
    out: &std::path::Path,
) -> Result<serde_json::Value, Failure> {
    let json = a.output.json;
    let spec = tessera_synth::demo_spec();
    let file_err = |e: String| Failure::new(EXIT_FILE, e);
    let office_err = |e: tessera_ledger::LedgerError| Failure::new(EXIT_FILE, format!("history ledger: {e}"));
    if out.join(DASHBOARD_MARK).exists() {
        std::fs::remove_dir_all(out).map_err(|e| file_err(format!("{}: {e}", out.display())))?;
    }
    if !json {
        println!();
        println!(
            "The office's analyst: {} months of a chain's history ({} stores, {} customers, {} purchases; \
             generated with seed {}, settled in real batches to a ledger of its own)…",
            spec.days / 30,
            spec.stores,
            tessera_office::reports::group(u64::from(spec.customers)),
            tessera_office::reports::group(spec.purchases),
            spec.seed
        );
    }
    let path = work.join("history.sqlite");
    let mut ledger = Ledger::open(&path, tessera_ledger::LedgerKeys::from_issuer(keys)).map_err(office_err)?;
    let now = spec.start_unix().saturating_add(spec.days.saturating_mul(86_400));
    let generated =
        tessera_synth::generate_into(&spec, &mut ledger, keys, now).map_err(|e| file_err(format!("history: {e}")))?;
    let summary = tessera_office::analytics::summary(&ledger, now).map_err(office_err)?;
    let zone = tessera_office::dashboard::Zone::utc();
    let currency = tessera_office::dashboard::Currency::office();
    let data = tessera_office::dashboard::collect(&ledger, now, &zone, &currency).map_err(office_err)?;
    let files = tessera_office::dashboard::export(&data, &zone, out).map_err(|e| file_err(e.to_string()))?;
    std::fs::write(out.join(DASHBOARD_MARK), b"written by tessera demo\n")
        .map_err(|e| file_err(format!("{}: {e}", out.display())))?;
    let index = out.join("index.html");
    if !json {
        let view = tessera_office::reports::View {
            tz: zone.clone(),
            ..tessera_office::reports::View::local()
        };
        for line in tessera_office::analytics::summary_lines(&summary, &view) {
            println!("  {line}");
        }
        println!(
            "  (The campaign's true effect in the generator: {}% more visits for treated customers.)",
            tessera_synth::MODEL.campaign_lift_percent
        );
        println!("Dashboard: {} pages written. Open {}", files.len(), index.display());
    }
    Ok(json!({
        "generated": {
            "seed": spec.seed,
            "customers": generated.customers,
            "purchases": generated.purchases,
            "spend_minor": generated.spend_minor,
            "stores": generated.stores,
        },
        "summary": serde_json::to_value(&summary).unwrap_or_default(),
        "dashboard": index.display().to_string(),
    }))
}

type Outcome = (Vec<serde_json::Value>, serde_json::Value);

fn run_day(a: &DemoArgs, keys: &IssuerKeys, stack: &Stack, work: &std::path::Path) -> Result<Outcome, Failure> {
    let json = a.output.json;
    if !json {
        match stack {
            Stack::InProcess => println!(
                "Tessera demo — simulated cards in process (no pcscd with virtual readers found: \
                 ./scripts/demo.sh starts one), test keys (never for real cards)"
            ),
            Stack::Pcsc { readers } => println!(
                "Tessera demo — virtual cards behind the real PC/SC daemon, tills on readers \"{}\" and \"{}\", \
                 test keys (never for real cards)",
                readers[0], readers[1]
            ),
        }
        println!();
    }

    // Back office: issue the cards, publish signed campaigns.
    let mut cards = Vec::new();
    for (i, (profile, id_hex)) in customers().into_iter().enumerate() {
        let mut id = [0u8; 8];
        hex::decode_to_slice(id_hex, &mut id).map_err(|_| Failure::usage("bad demo card id"))?;
        let mut card = SimCard::manufacture(id, &keys.card_perso_key(&id), rng(a.seed, i as u64))?;
        let signed = personalize(&mut card, keys, profile, &IssueParams::default())?;
        if !json {
            println!(
                "Issued card {id_hex} to {} ({})",
                signed.profile.name, signed.profile.home_city
            );
        }
        cards.push(card);
    }
    let sig = sign_campaigns(CAMPAIGNS.as_bytes(), &keys.issuer).map_err(|e| Failure::new(EXIT_FILE, e.to_string()))?;
    let campaigns = CampaignSet::load_signed(CAMPAIGNS.as_bytes(), &sig, &keys.issuer.public())
        .map_err(|e| Failure::new(EXIT_FILE, format!("campaigns: {e}")))?;
    if !json {
        println!(
            "Published {} signed campaigns (version {})",
            campaigns.campaigns.len(),
            campaigns.version
        );
    }

    let script = [
        Step::Read(0),
        Step::Buy(0, 1250, &["coffee"]),
        Step::Buy(1, 8_990, &["wine"]),
        Step::Buy(2, 2_400, &["books"]),
        Step::Redeem(1, 500),
        Step::BuyPulled(2, 640, &["tea"]),
        Step::Buy(1, 4_500, &[]),
        Step::Read(2),
        Step::Redeem(0, 30),
        Step::Refund(1, 2),
        Step::Buy(0, 1250, &["coffee"]),
        Step::BuyOnline(2, 1_240_000, &["books"]),
        Step::BuyVoice(1, 1_150_000, &["wine"]),
    ];
    // The office's books know the customers and their cards, and its
    // server runs all day on loopback (a fresh certificate the tills'
    // bundles pin): tills ask it online, and settle with it at night.
    let ledger_path = work.join("ledger.sqlite");
    let office_err = |e: tessera_ledger::LedgerError| Failure::new(EXIT_FILE, format!("ledger: {e}"));
    let now = OPENING + 420 * script.len() as u32 + 3_600;
    {
        let mut ledger = Ledger::open(&ledger_path, LedgerKeys::from_issuer(keys)).map_err(office_err)?;
        // The campaigns the office signed this morning: purchases are
        // recomputed under them.
        ledger.register_campaigns(CAMPAIGNS, 0).map_err(office_err)?;
        // Every till is registered before any settles (as `office
        // export-terminal` does): a copy one till recovers names the other.
        for id in [101, 102] {
            ledger.register_terminal(id, OPENING).map_err(office_err)?;
        }
        for card in &cards {
            let st = card.state()?;
            let p = tessera_protocol::profile::SignedProfile::parse(&st.profile)
                .map_err(|e| Failure::new(EXIT_FILE, format!("demo profile: {e}")))?
                .profile;
            let customer = ledger
                .register_customer(&tessera_ledger::NewCustomer {
                    name: p.name.clone(),
                    birth_date: p.birth_date,
                    home_city: p.home_city.clone(),
                    household: p.household,
                    preferences: p.preferences.clone(),
                    tier: p.tier,
                })
                .map_err(office_err)?;
            ledger
                .register_card(st.card_id, customer, st.key_version, OPENING)
                .map_err(office_err)?;
        }
    }
    let net_err = |e: String| Failure::new(EXIT_FILE, format!("office: {e}"));
    let identity = tessera_office::OfficeIdentity::generate(&[]).map_err(|e| net_err(e.to_string()))?;
    let pin = identity.cert_sha256();
    let mut config = tessera_office::ServerConfig::new(tessera_office::Transport::Tls(
        identity.server_config().map_err(|e| net_err(e.to_string()))?,
    ));
    config.request_log = false;
    config.fixed_now = Some(now);
    let server_keys = IssuerKeys::from_json(&keys.to_json()).map_err(|e| net_err(e.to_string()))?;
    let server = tessera_office::spawn(
        Ledger::open(&ledger_path, LedgerKeys::from_issuer(keys)).map_err(office_err)?,
        server_keys,
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        config,
    )
    .map_err(|e| net_err(e.to_string()))?;
    let url = format!("https://{}", server.addr());
    let bundle_of = |id: u32| keys.terminal_bundle(id, tessera_crypto::keys::OfficeLink::Pinned { cert_sha256: pin });

    // Two tills, each with its own journal.
    let clock = DemoClock(Arc::new(AtomicU32::new(OPENING)));
    let mut tills = Vec::new();
    for t in 0..2u32 {
        let id = 101 + t;
        let journal = Journal::open(&work.join(format!("till-{id}.sqlite")), id)
            .map_err(|e| Failure::new(EXIT_FILE, format!("journal: {e}")))?;
        let terminal = Terminal::new(SoftwareSam::new(keys.terminal_keys()), clock.clone(), id)
            .with_store(t + 1)
            .with_rng(rng(a.seed, 100 + u64::from(t)));
        let config = TillConfig {
            policy: Policy::default_policy(),
            hotlist: Hotlist::empty(),
            campaigns: campaigns.clone(),
            online: Default::default(),
        };
        tills.push(Till::new(terminal, journal, config).map_err(|e| Failure::new(EXIT_FILE, e.to_string()))?);
    }

    let mut events = Vec::new();
    let mut phone: Vec<String> = Vec::new();
    if !json {
        println!();
        println!(
            "{:<5} {:<5} {:<14} {:>5}  what the clerk sees",
            "time", "till", "customer", "APDUs"
        );
    }
    for (n, step) in script.iter().enumerate() {
        let t = n % 2;
        clock.0.store(OPENING + 420 * n as u32, Ordering::SeqCst);
        let now = clock.0.load(Ordering::SeqCst);
        let hhmm = format!("{:02}:{:02}", now % 86_400 / 3600, now % 3600 / 60);
        let (c, pulled) = match step {
            Step::Buy(c, ..)
            | Step::Redeem(c, _)
            | Step::Read(c)
            | Step::Refund(c, _)
            | Step::BuyOnline(c, ..)
            | Step::BuyVoice(c, ..) => (*c, false),
            Step::BuyPulled(c, ..) => (*c, true),
        };
        let card = &mut cards[c];
        let till = &mut tills[t];
        if pulled {
            // The card leaves the field right after it processed the EARN:
            // its answer is lost. The EARN is APDU 3 when the till has the
            // customer's profile cached, 4 otherwise.
            let digest = tessera_crypto::sign::profile_digest(&card.state()?.profile);
            let cached = till
                .terminal_mut()
                .cache_mut()
                .get(&digest, &keys.issuer.public())
                .is_some();
            let at = if cached { 3 } else { 4 };
            card.set_faults(Faults {
                lose_response_of_apdu: Some(at),
                ..Faults::default()
            });
        }
        till.terminal_mut().take_trace();
        let mut customer = String::from("-");
        let mut lines: Vec<String> = Vec::new();
        let till_id = 101 + t as u32;
        let mut online = tessera_client::OfficeAuthorizer {
            base_url: url.clone(),
            bundle: bundle_of(till_id),
        };
        // The telephone: the clerk reads the reference, the office operator
        // decides it in the office's books and reads back the answer code.
        phone.clear();
        let office_keys = keys;
        let mut voice = tessera_terminal::till::VoiceAuthorizer {
            terminal_id: till_id,
            ask: |p: &tessera_terminal::till::VoicePrompt, _why: Option<&str>| -> Option<String> {
                phone.push(format!(
                    "clerk calls the office: card {}, {} of {} points, reference {}",
                    out::card_id(&p.card_id),
                    p.kind.name(),
                    p.points,
                    p.reference
                ));
                let reference = tessera_crypto::voice::VoiceReference::parse(&p.reference).ok()?;
                let mut ledger = Ledger::open(&ledger_path, LedgerKeys::from_issuer(office_keys)).ok()?;
                let (verdict, _, answer) = tessera_office::authorization::decide_by_voice(
                    &mut ledger,
                    office_keys,
                    p.terminal_id,
                    p.card_id,
                    &reference,
                    p.kind,
                    p.points,
                    p.original,
                    "demo operator",
                    &tessera_ledger::OnlinePolicy::default(),
                    now,
                )
                .ok()?;
                let Some(answer) = answer else {
                    phone.push(format!("office: {} {}", verdict.code, verdict.message));
                    return None;
                };
                let code = answer.to_code();
                phone.push(format!("office reads back the answer code {code}; the clerk types it"));
                Some(code)
            },
        };
        let done = present(stack, t, card, |tr| -> Result<(), TillError> {
            let mut tap = till.tap(tr)?;
            match step {
                Step::BuyOnline(..) => tap.use_online(&mut online),
                Step::BuyVoice(..) => tap.use_online(&mut voice),
                _ => {}
            }
            customer = tap.card().profile.name.clone();
            let outcome = match step {
                Step::Read(_) => {
                    lines.push(format!(
                        "Hello {customer}! Tier {} · Balance {}",
                        tap.card().profile.tier,
                        tap.card().balance
                    ));
                    lines.extend(tap.offers().into_iter().map(|o| format!("  offer: {o}")));
                    None
                }
                Step::Buy(_, cents, cats)
                | Step::BuyPulled(_, cents, cats)
                | Step::BuyOnline(_, cents, cats)
                | Step::BuyVoice(_, cents, cats) => {
                    let cats: Vec<String> = cats.iter().map(|s| (*s).to_owned()).collect();
                    let how = match step {
                        Step::BuyOnline(..) => " (above the offline limit: asked online)",
                        Step::BuyVoice(..) => " (above the offline limit, link down: by telephone)",
                        _ => "",
                    };
                    let what = if cats.is_empty() {
                        format!("purchase {}{how}", money(*cents))
                    } else {
                        format!("purchase {} {}{how}", money(*cents), cats.join(","))
                    };
                    Some((what, tap.purchase(*cents, &cats)?))
                }
                Step::Redeem(_, p) => Some((format!("redeem {p}"), tap.redeem(*p)?)),
                Step::Refund(_, counter) => Some((format!("refund of #{counter}"), tap.refund(*counter)?)),
            };
            if let Some((what, o)) = outcome {
                lines.push(match o {
                    TillOutcome::Approved { receipt, quote, .. } => {
                        let r = &receipt.record;
                        let sign = if r.kind.is_credit() { '+' } else { '-' };
                        let detail = quote
                            .map(|q| {
                                let mut parts = vec![format!("base {}", q.base)];
                                parts.extend(q.lines.iter().map(|l| format!("{} {:+}", l.label, l.points)));
                                format!(" ({})", parts.join(", "))
                            })
                            .unwrap_or_default();
                        let online = if r.online {
                            ", authorized by the office, certified by the card"
                        } else {
                            ""
                        };
                        format!(
                            "APPROVED {what}: {sign}{} → balance {}{detail}{online}",
                            r.amount, r.balance_after
                        )
                    }
                    TillOutcome::Refused { decision, .. } => {
                        format!("{} {what}: {}", decision.code(), decision.message())
                    }
                    TillOutcome::AlreadyDone { .. } => format!("ALREADY DONE {what}: nothing charged twice"),
                    TillOutcome::ApprovedNoPoints { .. } => format!("APPROVED {what}: 0 points, card untouched"),
                });
            }
            Ok(())
        })?;
        // The telephone's closure borrowed the call's lines until here.
        let _ = voice;
        if !phone.is_empty() {
            let approved_at = lines.len().saturating_sub(1);
            for (k, l) in phone.drain(..).enumerate() {
                lines.insert(approved_at + k, l);
            }
        }
        let mut apdus = till.terminal_mut().take_trace().commands();
        if let Err(e) = done {
            let pending = match &e {
                TillError::Terminal(tessera_terminal::TerminalError::Interrupted(p)) => Some(p.terminal_seq),
                _ => None,
            };
            lines.push(till_err(e));
            if pulled {
                // The customer taps again at the same till: the card's own
                // log tells whether the purchase went through.
                card.set_faults(Faults::default());
                let again = present(stack, t, card, |tr| -> Result<Vec<String>, TillError> {
                    let mut tap = till.tap(tr)?;
                    let mine = |origin: Option<u32>, terminal: Option<u32>| {
                        pending.is_some() && origin == pending && terminal.is_none_or(|x| x == till_id)
                    };
                    let mut l: Vec<String> = tap
                        .recovered
                        .iter()
                        .filter(|r| mine(r.entry.origin_seq, r.entry.origin_terminal))
                        .filter_map(|r| r.entry.card_record())
                        .map(|rec| {
                            format!(
                                "re-tap: the card shows it went through (#{}, +{} → balance {}) — journaled, not repeated",
                                rec.counter, rec.amount, rec.balance_after
                            )
                        })
                        .collect();
                    l.extend(
                        tap.voided
                            .iter()
                            .filter(|r| mine(r.entry.origin_seq, None))
                            .map(|_| "re-tap: the card shows it did not happen — purchase again".to_owned()),
                    );
                    if l.is_empty() {
                        l.push("re-tap: nothing had reached the card — purchase again".to_owned());
                    }
                    // The hurried clerk simply runs the same purchase again:
                    // the till never charges it twice.
                    if let Step::BuyPulled(_, cents, cats) = step {
                        let cats: Vec<String> = cats.iter().map(|s| (*s).to_owned()).collect();
                        l.push(match tap.purchase(*cents, &cats)? {
                            TillOutcome::AlreadyDone { .. } => {
                                "clerk repeats the purchase: ALREADY DONE — nothing charged twice".to_owned()
                            }
                            TillOutcome::Approved { receipt, .. } => format!(
                                "clerk repeats the purchase: APPROVED +{} → balance {}",
                                receipt.record.amount, receipt.record.balance_after
                            ),
                            TillOutcome::Refused { decision, .. } => {
                                format!("clerk repeats the purchase: {} {}", decision.code(), decision.message())
                            }
                            TillOutcome::ApprovedNoPoints { .. } => {
                                "clerk repeats the purchase: APPROVED, 0 points".to_owned()
                            }
                        });
                    }
                    Ok(l)
                })?;
                lines.extend(again.map_err(|e| Failure::new(EXIT_CARD, till_err(e)))?);
                apdus += till.terminal_mut().take_trace().commands();
            }
        }
        if json {
            events.push(json!({"time": hhmm, "till": 101 + t, "customer": customer, "lines": lines, "apdus": apdus}));
        } else {
            let name: String = customer.chars().take(14).collect();
            for (k, l) in lines.iter().enumerate() {
                if k == 0 {
                    println!("{hhmm:<5} {:<5} {name:<14} {apdus:>5}  {l}", 101 + t);
                } else {
                    println!("{:<33}  {l}", "");
                }
            }
        }
    }

    // Evening: each till seals its journal into a batch and settles it
    // over HTTPS to the office (on loopback, its certificate pinned in the
    // tills' bundles); the ledger verifies (batch MAC, hash chain, every
    // certificate) and posts it.
    let mut chains_ok = true;
    let mut records = 0;
    if !json {
        println!();
    }
    let mut settled = Vec::new();
    for t in tills.iter_mut() {
        let id = t.journal().terminal_id();
        chains_ok &= t.journal().verify_chain().is_ok();
        records += t.journal().len();
        let bundle = bundle_of(id);
        // The client checks each acknowledgement's MAC and that it names
        // this terminal's batch before the till marks anything settled.
        let report = tessera_client::settle(
            t.journal_mut(),
            &bundle,
            &url,
            &tessera_client::RetryPolicy::default(),
            now,
            |_| {},
        )
        .map_err(|e| Failure::new(EXIT_CARD, e.to_string()))?;
        let ack = report
            .acks
            .last()
            .ok_or_else(|| Failure::new(EXIT_FILE, "settlement: nothing was sealed"))?;
        settled.push((id, ack.batch_no));
    }
    server.stop().map_err(|e| net_err(e.to_string()))?;
    let ledger = Ledger::open(&ledger_path, LedgerKeys::from_issuer(keys)).map_err(office_err)?;
    let mut posted = 0;
    for (id, batch_no) in settled {
        let rows = ledger
            .reconciliation(None, Some(id), &tessera_terminal::display::Zone::utc())
            .map_err(office_err)?
            .rows;
        let (n, p, d) = rows
            .iter()
            .fold((0, 0, 0), |(n, p, d), r| (n + r.records, p + r.posted, d + r.copies));
        posted += p;
        if !json {
            println!(
                "Till {id} settled over HTTPS (the office's certificate pinned): batch {batch_no} with {n} records, \
                 {p} card transactions posted, {d} copies recognised"
            );
        }
    }
    let exceptions = ledger.exceptions().map_err(office_err)?;
    let mut balances = Vec::new();
    for card in &cards {
        let st = card.state()?;
        let shadow = ledger
            .card(st.card_id)
            .map_err(office_err)?
            .map_or(0, |b| b.shadow_balance);
        balances.push((out::card_id(&st.card_id), st.balance, shadow, st.counter));
    }
    let mut authorizations = Vec::new();
    for card in &cards {
        authorizations.extend(
            ledger
                .online_authorizations(card.state()?.card_id)
                .map_err(office_err)?,
        );
    }
    let liability = ledger.liability(1).map_err(office_err)?;
    let proof = ledger.explanation().map_err(office_err)?;
    let reconciled = chains_ok
        && proof.explained
        && exceptions.is_empty()
        && authorizations.iter().all(|a| a.state == "posted")
        && balances.iter().all(|(_, b, shadow, _)| i64::from(*b) == *shadow);
    if !json {
        println!();
        println!(
            "Back office: {records} journal records, chains {}; {posted} card transactions posted, every certificate \
             verified; {} exceptions.",
            if chains_ok { "intact" } else { "BROKEN" },
            exceptions.len()
        );
        for (id, b, shadow, n) in &balances {
            println!("  card {id}: {b} points on the card after {n} transactions, {shadow} in the ledger");
        }
        println!(
            "  Points outstanding: {}; {} of {} card transactions matched to the decision that allowed them",
            liability.points_outstanding,
            proof.matched_records,
            proof.matched_records + proof.awaiting_records + proof.orphan_records
        );
        println!(
            "  Authorized by the office: {} ({} online, {} by telephone), {} matched to the card's certified record at settlement",
            authorizations.len(),
            authorizations.iter().filter(|a| a.delivery == "online").count(),
            authorizations.iter().filter(|a| a.delivery == "voice").count(),
            authorizations.iter().filter(|a| a.state == "posted").count()
        );
        for p in &proof.problems {
            println!("  not explained: {p}");
        }
        for e in &exceptions {
            println!("  exception {} (card counter {:?}): {}", e.class, e.counter, e.evidence);
        }
        println!(
            "{}",
            if reconciled {
                "Every point is explained."
            } else {
                "RECONCILIATION FAILED"
            }
        );
    }
    let summary = json!({
        "journal_records": records,
        "chains_intact": chains_ok,
        "card_transactions_posted": posted,
        "exceptions": exceptions.len(),
        "points_outstanding": liability.points_outstanding,
        "office_authorizations": authorizations,
        "cards": balances.iter().map(|(id, b, shadow, n)| json!({"card_id": id, "balance": b, "counter": n, "ledger_balance": shadow})).collect::<Vec<_>>(),
        "explanation": serde_json::to_value(&proof).unwrap_or_default(),
        "reconciled": reconciled,
    });
    Ok((events, summary))
}
