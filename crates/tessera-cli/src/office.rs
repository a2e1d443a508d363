//! `tessera office`: the back office.
//!
//! The office directory (`--dir`) holds:
//!
//! | file | what |
//! |---|---|
//! | `issuer-keys.json` | the key store (`0600`, directory `0700`), made by `office init` |
//! | `ledger.sqlite` | the ledger |
//! | `campaigns.toml`, `campaigns.toml.sig` | the published campaign file (`office sign-campaigns --dir`), sent to terminals by sync |

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde_json::json;
use tessera_crypto::keys::IssuerKeys;
use tessera_crypto::rng::Rng;
use tessera_ledger::LedgerError;
use tessera_office::dir::{sign_campaign_file, sign_policy_file, OfficeDir, OfficeDirError};
use tessera_simulator::SimCard;
use tessera_terminal::batch::AckStatus;
use tessera_terminal::issuer::{personalize, IssueParams};
use tessera_terminal::Clock;

use crate::args::{card_id_or_random, hex8, profile_from, refuse_existing_card, ProfileArgs};
use crate::fail::{Failure, EXIT_DECLINED, EXIT_FILE};
use crate::out::{self, print_json};
use crate::pos::clock;
use crate::OutputArgs;

/// Exit code of a batch the ledger refused (as `pos settle`'s office refusals).
const EXIT_REFUSED: u8 = crate::settle::EXIT_OFFICE;

/// `tessera office …`
#[derive(Subcommand)]
pub enum OfficeCmd {
    /// Key ceremony: fresh issuer keys, the office's TLS certificate and key,
    /// and an empty ledger in a new office directory.
    Init(InitArgs),
    /// Make the office's TLS certificate and key in an office directory that
    /// has none (one made before TLS); never overwrites them.
    TlsCert(InitArgs),
    /// Write a terminal's key bundle and register the terminal with the ledger.
    ExportTerminal(ExportArgs),
    /// Issue a card with the office's keys and register customer and card.
    Issue(IssueArgs),
    /// The card factory's step: a blank simulated card holding the transport
    /// key derived from this office's personalization master.
    Manufacture(ManufactureArgs),
    /// Run the back-office HTTP server (settlement and sync) until SIGINT/SIGTERM.
    Serve(ServeArgs),
    /// Ingest a batch file written by `tessera pos settle --out`; prints the acknowledgement.
    Import(ImportArgs),
    /// Reports: reconciliation, liability, exceptions, explained, customers
    /// (a table that fits the screen, `--json`, `--csv`).
    #[command(subcommand)]
    Report(crate::office_report::ReportCmd),
    /// Checks the whole ledger: storage integrity, and the books against
    /// the postings (exit 0 sound, 1 otherwise).
    Verify(DirArgs),
    /// Daily operations: hotlist, stores, terminals, customers, audit log.
    #[command(flatten)]
    Ops(crate::office_ops::OpsCmd),
    /// Queue a new signed profile version for a card (delivered through sync).
    UpdateProfile(UpdateProfileArgs),
    /// Queue an issuer UNBLOCK for a card locked by failed authentications
    /// (delivered through sync: the card opens again at its next tap).
    Unblock(UnblockArgs),
    /// Key rotation: a new key version (fresh authentication, certificate
    /// and issuer masters; the old ones are kept). Re-export the terminal
    /// bundles, then every issued card moves at its next tap after sync.
    RotateKeys(DirArgs),
    /// Copy the ledger into a PostgreSQL database (new, or with an empty
    /// ledger) and prove the copy, table by table, before it commits; with
    /// --verify, only compare the two.
    #[command(
        after_help = "Examples:\n  tessera office migrate --dir office --to postgres://tessera@127.0.0.1:5432/tessera\n  tessera office migrate --dir office --to postgres://tessera@127.0.0.1:5432/tessera --verify"
    )]
    Migrate(MigrateArgs),
    /// Check a campaign file and sign it (writes FILE.sig); with --dir, with
    /// the office's key, publishing it in the office directory.
    SignCampaigns(SignArgs),
    /// Signs a till policy file (TOML) with the issuer key, next to it as
    /// FILE.sig, and registers it in the ledger: tills decide only under a
    /// signed policy, and the ledger recomputes their points under it.
    SignPolicy(SignArgs),
    #[command(flatten)]
    Cards(crate::office_cards::CardsCmd),
    /// Referral approval: a code for the clerk to type at the till that
    /// referred an operation (`approve list`: the issued approvals).
    Approve(crate::office_approve::ApproveArgs),
    #[command(flatten)]
    Dashboard(crate::office_dashboard::DashboardCmd),
}

/// Arguments of `office manufacture`.
#[derive(Args)]
pub struct ManufactureArgs {
    #[command(flatten)]
    pub office: DirArgs,
    /// Blank card image file to create (must not exist).
    #[arg(long, value_name = "FILE")]
    pub card: PathBuf,
    /// Card id, 16 hex digits [default: random].
    #[arg(long, value_name = "HEX")]
    pub card_id: Option<String>,
}

/// The office directory.
#[derive(Args)]
pub struct DirArgs {
    /// The office directory.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    #[command(flatten)]
    pub who: crate::office_ops::OperatorArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Arguments of `office migrate`.
#[derive(Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub office: DirArgs,
    /// The PostgreSQL database, `postgres://USER@HOST:PORT/DB`.
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// Only compare the ledger with the database (exit 1 when they differ).
    #[arg(long)]
    pub verify: bool,
}

/// Arguments of `office init`.
#[derive(Args)]
pub struct InitArgs {
    #[command(flatten)]
    pub office: DirArgs,
    /// A host name the office's certificate names besides localhost and
    /// the loopback addresses (informative: tills recognize the office by
    /// its pinned certificate). Repeatable.
    #[arg(long = "tls-name", value_name = "NAME")]
    pub tls_names: Vec<String>,
}

/// Arguments of `office export-terminal`.
#[derive(Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub office: DirArgs,
    /// The terminal's id.
    #[arg(long)]
    pub terminal_id: u32,
    /// A bundle for plain HTTP to an office on the same machine (loopback
    /// only, `office serve --plain-http`) instead of one pinning the
    /// office's TLS certificate.
    #[arg(long)]
    pub plain_http: bool,
    /// The bundle file to write (must not exist).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Load the authentication masters into the PKCS#11 token of this
    /// module (shared library) as non-extractable keys, and write a bundle
    /// without them. The PIN comes from --pin-file or $TESSERA_PKCS11_PIN.
    #[arg(long, value_name = "PATH", requires = "token_label")]
    pub pkcs11_module: Option<PathBuf>,
    /// The label of the token to load (with --pkcs11-module).
    #[arg(long, value_name = "LABEL", requires = "pkcs11_module")]
    pub token_label: Option<String>,
    /// A file whose first line is the token's user PIN [default:
    /// $TESSERA_PKCS11_PIN]. Never give the PIN on the command line.
    #[arg(long, value_name = "FILE", requires = "pkcs11_module")]
    pub pin_file: Option<PathBuf>,
}

/// Arguments of `office issue`.
#[derive(Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["card", "reader"])))]
pub struct IssueArgs {
    #[command(flatten)]
    pub office: DirArgs,
    /// Card image file to create (must not exist).
    #[arg(long, value_name = "FILE")]
    pub card: Option<PathBuf>,
    /// Or: personalize the blank card presented to this PC/SC reader (see
    /// `office manufacture` and `card serve`).
    #[arg(long, value_name = "NAME", conflicts_with = "card_id")]
    pub reader: Option<String>,
    /// Seconds to wait for a card on the reader.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub wait: u64,
    #[command(flatten)]
    pub profile: ProfileArgs,
    /// Card id, 16 hex digits [default: random].
    #[arg(long, value_name = "HEX")]
    pub card_id: Option<String>,
    /// Largest earn per transaction, in points.
    #[arg(long, default_value_t = 100_000)]
    pub earn_cap: u32,
    /// Largest redemption per transaction, in points.
    #[arg(long, default_value_t = 100_000)]
    pub redeem_cap: u32,
}

/// Arguments of `office serve`.
#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub office: DirArgs,
    /// Address to listen on (port 0: any free port; the first line printed
    /// is `listening on ADDR`).
    #[arg(long, value_name = "ADDR", default_value = tessera_office::DEFAULT_ADDR)]
    pub listen: std::net::SocketAddr,
    /// Serve plain HTTP instead of HTTPS: on a loopback address only (a
    /// till on the office machine, tests).
    #[arg(long)]
    pub plain_http: bool,
    /// Longest one upload may take, head to last byte (one deadline, not
    /// an idle timeout).
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    pub upload_deadline: u64,
    /// Uploads spooled or ingested at once (more are answered 503).
    #[arg(long, value_name = "N", default_value_t = tessera_office::server::DEFAULT_MAX_UPLOADS)]
    pub max_uploads: usize,
    /// Online authorizations the office approves per card and UTC day
    /// (more are declined O08).
    #[arg(long, value_name = "N", default_value_t = tessera_ledger::OnlinePolicy::default().max_operations_per_day)]
    pub online_max_operations: u32,
    /// Points of online-approved debits (redemptions, refunds of earns) per
    /// card and UTC day (more are declined O08).
    #[arg(long, value_name = "POINTS", default_value_t = tessera_ledger::OnlinePolicy::default().max_debit_points_per_day)]
    pub online_max_debit_points: u64,
    /// Serve the books from PostgreSQL, refusing to start unless they
    /// moved there (`office migrate`, which writes `books.toml`). Without
    /// it the books are served from wherever they are.
    #[arg(long)]
    pub postgres: bool,
    /// Connections this server opens to PostgreSQL at most (requests
    /// beyond wait for one).
    #[arg(long, value_name = "N", default_value_t = tessera_office::server::DEFAULT_PG_CONNECTIONS)]
    pub postgres_connections: usize,
}

/// Arguments of `office import`.
#[derive(Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub office: DirArgs,
    /// The batch file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Also write the acknowledgement to this file (for `pos settle --ack-file`).
    #[arg(long, value_name = "FILE")]
    pub ack_out: Option<PathBuf>,
}

/// Arguments of `office update-profile`.
#[derive(Args)]
pub struct UpdateProfileArgs {
    #[command(flatten)]
    pub office: DirArgs,
    /// The card, 16 hex digits.
    #[arg(long, value_name = "ID")]
    pub card: String,
    #[command(flatten)]
    pub profile: ProfileArgs,
    /// Profile version [default: one above the newest queued, at least 2].
    #[arg(long)]
    pub profile_version: Option<u16>,
}

/// Arguments of `office sign-campaigns` and `office sign-policy`.
#[derive(Args)]
pub struct SignArgs {
    /// The campaign or policy file (TOML).
    #[arg(long, value_name = "FILE")]
    pub file: PathBuf,
    /// Sign with this office's key and register the file in its ledger
    /// (campaigns: also publish it as DIR/campaigns.toml).
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "test_keys",
        conflicts_with = "test_keys"
    )]
    pub dir: Option<PathBuf>,
    /// Sign with the published TEST issuer key (training only).
    #[arg(long)]
    pub test_keys: bool,
    #[command(flatten)]
    pub who: crate::office_ops::OperatorArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Arguments of `office unblock`.
#[derive(Args)]
pub struct UnblockArgs {
    #[command(flatten)]
    pub office: DirArgs,
    /// The card whose authentication is locked, 16 hex digits.
    #[arg(long, value_name = "ID")]
    pub card: String,
}

/// Runs an `office` subcommand.
pub fn run(cmd: OfficeCmd) -> Result<(), Failure> {
    match cmd {
        OfficeCmd::Init(a) => init(&a).map_err(|f| f.json(a.office.output.json)),
        OfficeCmd::TlsCert(a) => tls_cert(&a).map_err(|f| f.json(a.office.output.json)),
        OfficeCmd::ExportTerminal(a) => export(&a).map_err(|f| f.json(a.office.output.json)),
        OfficeCmd::Issue(a) => issue(&a).map_err(|f| f.json(a.office.output.json)),
        OfficeCmd::Manufacture(a) => manufacture(&a).map_err(|f| f.json(a.office.output.json)),
        OfficeCmd::Serve(a) => serve(&a).map_err(|f| f.json(a.office.output.json)),
        OfficeCmd::Import(a) => import(&a).map_err(|f| f.json(a.office.output.json)),
        OfficeCmd::Report(a) => crate::office_report::run(&a).map_err(|f| f.json(a.json())),
        OfficeCmd::Verify(a) => verify(&a).map_err(|f| f.json(a.output.json)),
        OfficeCmd::Ops(c) => crate::office_ops::run(c),
        OfficeCmd::UpdateProfile(a) => update_profile(&a).map_err(|f| f.json(a.office.output.json)),
        OfficeCmd::Unblock(a) => unblock(&a).map_err(|f| f.json(a.office.output.json)),
        OfficeCmd::RotateKeys(a) => rotate_keys(&a).map_err(|f| f.json(a.output.json)),
        OfficeCmd::Migrate(a) => migrate(&a).map_err(|f| f.json(a.office.output.json)),
        OfficeCmd::SignCampaigns(a) => {
            let json = a.output.json;
            sign(a).map_err(|f| f.json(json))
        }
        OfficeCmd::SignPolicy(a) => {
            let json = a.output.json;
            sign_policy(a).map_err(|f| f.json(json))
        }
        OfficeCmd::Cards(c) => crate::office_cards::run(c),
        OfficeCmd::Approve(a) => crate::office_approve::run(a),
        OfficeCmd::Dashboard(c) => crate::office_dashboard::run(&c).map_err(|f| f.json(c.json())),
    }
}

use tessera_office::dir::{KEYS_FILE, LEDGER_FILE};

fn file_err(what: &str, e: impl std::fmt::Display) -> Failure {
    Failure::new(EXIT_FILE, format!("{what}: {e}"))
}

pub(crate) fn ledger_err(e: LedgerError) -> Failure {
    let status = e.http_status();
    let code = if (400..500).contains(&status) {
        EXIT_REFUSED
    } else {
        EXIT_FILE
    };
    Failure::new(code, format!("ledger: {e}"))
}

impl From<OfficeDirError> for Failure {
    fn from(e: OfficeDirError) -> Self {
        office_err(e)
    }
}

/// A key module's failure: a missing PIN is the caller's to give.
pub(crate) fn token_failure(e: tessera_pkcs11::Pkcs11Error) -> Failure {
    match e {
        tessera_pkcs11::Pkcs11Error::PinMissing | tessera_pkcs11::Pkcs11Error::NotATokenBundle => {
            Failure::usage(e.to_string())
        }
        e => Failure::new(EXIT_FILE, e.to_string()),
    }
}

pub(crate) fn office_err(e: OfficeDirError) -> Failure {
    match e {
        OfficeDirError::Ledger(l) => ledger_err(l),
        e @ OfficeDirError::Exists(_) => Failure::new(EXIT_DECLINED, e.to_string()),
        e @ OfficeDirError::Exhausted(_) => Failure::usage(e.to_string()),
        OfficeDirError::Audit(a) => crate::office_ops::audit_failure(a),
        e => Failure::new(EXIT_FILE, e.to_string()),
    }
}

fn load_keys(dir: &Path) -> Result<IssuerKeys, Failure> {
    OfficeDir::new(dir).load_keys().map_err(office_err)
}

/// The warehouse of the office's books, on SQLite or PostgreSQL.
pub(crate) fn open_warehouse(dir: &Path) -> Result<Box<dyn tessera_ledger::Warehouse>, Failure> {
    OfficeDir::new(dir).open_warehouse().map_err(office_err)
}

/// The office's books for their reports, on SQLite (gaps aged first at
/// `age_gaps_at`) or PostgreSQL.
pub(crate) fn open_books_reports(
    dir: &Path,
    age_gaps_at: Option<u32>,
) -> Result<Box<dyn tessera_ledger::Warehouse>, Failure> {
    OfficeDir::new(dir).open_books_reports(age_gaps_at).map_err(office_err)
}

pub(crate) fn now() -> Result<u32, Failure> {
    Ok(clock()?.now())
}

fn init(a: &InitArgs) -> Result<(), Failure> {
    let dir = &a.office.dir;
    let made = a.office.office().init(&a.tls_names).map_err(office_err)?;
    let pin = hex::encode(made.tls_cert_sha256);
    if a.office.output.json {
        print_json(
            json!({"dir": dir.display().to_string(), "issuer_id": hex::encode_upper(made.issuer_id), "key_version": made.key_version, "issuer_public_key": made.issuer_public_key, "tls_cert_sha256": pin}),
        );
    } else {
        println!(
            "Office created in {}: issuer {}, fresh keys (version {}) in {KEYS_FILE}, TLS certificate {} (SHA-256 {pin}), empty ledger {LEDGER_FILE}. Keep the directory private and backed up.",
            dir.display(),
            hex::encode_upper(made.issuer_id),
            made.key_version,
            tessera_office::tls::CERT_FILE,
        );
    }
    Ok(())
}

fn tls_cert(a: &InitArgs) -> Result<(), Failure> {
    let dir = &a.office.dir;
    let identity = a.office.office().new_tls_identity(&a.tls_names).map_err(office_err)?;
    let pin = hex::encode(identity.cert_sha256());
    if a.office.output.json {
        print_json(json!({"dir": dir.display().to_string(), "tls_cert_sha256": pin}));
    } else {
        println!(
            "TLS certificate {} (SHA-256 {pin}) and key {} made in {}: export the terminals' bundles again to pin it.",
            tessera_office::tls::CERT_FILE,
            tessera_office::tls::KEY_FILE,
            dir.display()
        );
    }
    Ok(())
}

fn export(a: &ExportArgs) -> Result<(), Failure> {
    // With a token, the masters go into it (never into the bundle) before
    // the terminal is registered.
    let mut token = None;
    a.office
        .office()
        .export_terminal_with(a.terminal_id, &a.out, a.plain_http, now()?, |keys, link| {
            match (&a.pkcs11_module, &a.token_label) {
                (Some(module), Some(label)) => {
                    let config = tessera_pkcs11::TokenConfig {
                        module: module.clone(),
                        token_label: label.clone(),
                        pin: tessera_pkcs11::Pin::from_file_or_env(a.pin_file.as_deref()).map_err(token_failure)?,
                    };
                    let done = tessera_pkcs11::provision(&config, keys, a.terminal_id, link).map_err(token_failure)?;
                    token = Some((done.imported, done.already_present));
                    Ok::<_, Failure>(done.bundle)
                }
                _ => Ok(keys.terminal_bundle(a.terminal_id, link)),
            }
        })?;
    if a.office.output.json {
        let mut v = json!({"terminal_id": a.terminal_id, "bundle": a.out.display().to_string()});
        if let (Some((imported, already_present)), Some(label)) = (&token, &a.token_label) {
            v["pkcs11"] = json!({"token_label": label, "imported": imported, "already_present": already_present});
        }
        print_json(v);
    } else if let (Some((imported, already_present)), Some(label), Some(module)) =
        (&token, &a.token_label, &a.pkcs11_module)
    {
        println!(
            "Terminal {} registered; authentication masters of key versions {:?} loaded into token {label:?} ({} already there), not extractable; its bundle (no masters) → {} (`tessera pos … --keys {} --pkcs11-module {}`)",
            a.terminal_id,
            imported,
            already_present.len(),
            a.out.display(),
            a.out.display(),
            module.display(),
        );
    } else {
        println!(
            "Terminal {} registered; its keys → {} (give it to that terminal only: `tessera pos … --keys {}`)",
            a.terminal_id,
            a.out.display(),
            a.out.display()
        );
    }
    Ok(())
}

fn issue(a: &IssueArgs) -> Result<(), Failure> {
    let id = card_id_or_random(a.card_id.as_deref())?;
    let profile = profile_from(&a.profile, id, 1)?;
    if a.earn_cap == 0 || a.redeem_cap == 0 {
        return Err(Failure::usage("caps must be at least 1 point"));
    }
    if let Some(path) = &a.card {
        refuse_existing_card(path)?;
    }
    let office = a.office.office();
    // The books may be on SQLite or PostgreSQL: the card is registered
    // wherever they are, once it is personalized.
    office.audit_ready().map_err(office_err)?;
    let keys = office.load_keys().map_err(office_err)?;
    let params = IssueParams {
        earn_cap: a.earn_cap,
        redeem_cap: a.redeem_cap,
        ..IssueParams::default()
    };
    // A simulated card is made in memory, registered, then written: a card
    // file exists only for a card the ledger knows. A card in a reader is
    // personalized first (its id comes from the card), then registered.
    let (signed, mut made) = match &a.card {
        Some(_) => {
            let mut card = SimCard::manufacture(id, &keys.card_perso_key(&id), Rng::Os)?;
            let signed = personalize(&mut card, &keys, profile, &params).map_err(Failure::from)?;
            (signed, Some(card))
        }
        None => {
            let wanted = a.reader.as_deref().unwrap_or_default();
            let reader = tessera_pcsc::find_reader(wanted).map_err(reader_err)?;
            if tessera_pcsc::wait_for_card(&reader, true, std::time::Duration::ZERO).is_err() {
                eprintln!("Waiting for a blank card on {reader}… (up to {} s)", a.wait);
                tessera_pcsc::wait_for_card(&reader, true, std::time::Duration::from_secs(a.wait))
                    .map_err(reader_err)?;
            }
            let mut transport = tessera_pcsc::PcscTransport::connect(&reader).map_err(reader_err)?;
            (
                personalize(&mut transport, &keys, profile, &params).map_err(Failure::from)?,
                None,
            )
        }
    };
    let id = signed.profile.card_id;
    let p = &signed.profile;
    let customer = office
        .register_issued_card(keys.key_version, &signed, now()?)
        .map_err(office_err)?;
    if let (Some(card), Some(path)) = (made.as_mut(), a.card.as_ref()) {
        card.save_as(path)
            .map_err(|e| Failure::new(EXIT_FILE, format!("cannot write the card file: {e}")))?;
    }
    let target = match (&a.card, &a.reader) {
        (Some(path), _) => path.display().to_string(),
        (None, Some(r)) => format!("the card in reader {r}"),
        _ => String::new(),
    };
    if a.office.output.json {
        print_json(json!({
            "card_file": a.card.as_ref().map(|p| p.display().to_string()),
            "card_id": out::card_id(&id),
            "customer_id": customer,
            "profile": out::profile_json(p),
        }));
    } else {
        println!(
            "Issued card {} to {} (customer {customer}, {}) → {}",
            out::card_id(&id),
            p.name,
            if p.home_city.is_empty() {
                "no city"
            } else {
                &p.home_city
            },
            target
        );
    }
    Ok(())
}

fn reader_err(e: tessera_pcsc::PcscError) -> Failure {
    let code = match e {
        tessera_pcsc::PcscError::ReaderNotFound { .. } | tessera_pcsc::PcscError::AmbiguousReader { .. } => {
            crate::fail::EXIT_USAGE
        }
        _ => crate::fail::EXIT_CARD,
    };
    Failure::new(code, format!("Card reader: {e}"))
}

fn manufacture(a: &ManufactureArgs) -> Result<(), Failure> {
    let id = card_id_or_random(a.card_id.as_deref())?;
    refuse_existing_card(&a.card)?;
    let (keys, _) = OfficeDir::new(&a.office.dir).open_office_books().map_err(office_err)?;
    let mut card = SimCard::manufacture(id, &keys.card_perso_key(&id), Rng::Os)?;
    card.save_as(&a.card)
        .map_err(|e| Failure::new(EXIT_FILE, format!("cannot write the card file: {e}")))?;
    if a.office.output.json {
        print_json(
            json!({"card_file": a.card.display().to_string(), "card_id": out::card_id(&id), "lifecycle": "blank"}),
        );
    } else {
        println!("Manufactured blank card {} → {}", out::card_id(&id), a.card.display());
    }
    Ok(())
}

fn serve(a: &ServeArgs) -> Result<(), Failure> {
    let dir = &a.office.dir;
    let office = OfficeDir::new(dir);
    if a.postgres_connections == 0 {
        return Err(Failure::usage("--postgres-connections is at least 1"));
    }
    let (keys, books) = office
        .open_books(a.postgres, a.postgres_connections)
        .map_err(office_err)?;
    let transport = if a.plain_http {
        if !a.listen.ip().is_loopback() {
            return Err(Failure::usage(format!(
                "--plain-http serves loopback only, not {}: serve HTTPS",
                a.listen
            )));
        }
        tessera_office::Transport::PlainLoopback
    } else {
        let identity = OfficeDir::new(dir).identity().map_err(office_err)?;
        tessera_office::Transport::Tls(identity.server_config().map_err(|e| file_err("TLS", e))?)
    };
    if a.upload_deadline == 0 || a.max_uploads == 0 {
        return Err(Failure::usage("--upload-deadline and --max-uploads are at least 1"));
    }
    let mut config = tessera_office::ServerConfig {
        office_dir: Some(dir.clone()),
        upload_deadline: Duration::from_secs(a.upload_deadline),
        max_concurrent_uploads: a.max_uploads,
        online_policy: tessera_ledger::OnlinePolicy {
            max_operations_per_day: a.online_max_operations,
            max_debit_points_per_day: a.online_max_debit_points,
        },
        ..tessera_office::ServerConfig::new(transport)
    };
    if let Ok(v) = std::env::var("TESSERA_MAX_BATCH_BYTES") {
        config.max_batch_bytes = v
            .trim()
            .parse()
            .map_err(|_| Failure::usage(format!("TESSERA_MAX_BATCH_BYTES={v:?} is not a number")))?;
    }
    if let Ok(v) = std::env::var("TESSERA_NOW") {
        config.fixed_now = Some(
            v.trim()
                .parse()
                .map_err(|_| Failure::usage(format!("TESSERA_NOW={v:?} is not a Unix time")))?,
        );
    }
    let json = a.office.output.json;
    tessera_office::serve(books, keys, a.listen, config, |addr| {
        if json {
            print_json(json!({"listening": addr.to_string()}));
        } else {
            println!("listening on {addr}");
        }
        let _ = std::io::stdout().flush();
    })
    .map_err(|e| Failure::new(EXIT_FILE, e.to_string()))?;
    if !json {
        eprintln!("Stopped.");
    }
    Ok(())
}

fn import(a: &ImportArgs) -> Result<(), Failure> {
    // Progress on stderr every second once the import takes longer.
    let (start, mut last, mut shown) = (Instant::now(), Instant::now(), false);
    let tty = std::io::stderr().is_terminal();
    let result = OfficeDir::new(&a.office.dir).import_batch_file(&a.file, now()?, |done, total| {
        if last.elapsed() < Duration::from_secs(1) {
            return;
        }
        last = Instant::now();
        shown = true;
        let pct = done.saturating_mul(100).checked_div(total).unwrap_or(100);
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let line = format!(
            "importing: {pct:>3}% ({:.1} of {:.1} MiB, {:.0} s)",
            mib(done),
            mib(total),
            start.elapsed().as_secs_f64()
        );
        if tty {
            eprint!("\r{line}");
        } else {
            eprintln!("{line}");
        }
    });
    if shown && tty {
        eprintln!();
    }
    let outcome = result.map_err(|e| match e {
        e @ OfficeDirError::BatchRefused(_) => Failure::new(EXIT_REFUSED, e.to_string()),
        e => office_err(e),
    })?;
    let ack = &outcome.ack;
    let ack_value = serde_json::to_value(ack).unwrap_or_default();
    if let Some(path) = &a.ack_out {
        tessera_crypto::files::write_atomic(path, format!("{ack_value:#}\n").as_bytes())
            .map_err(|e| file_err(&format!("ack file {}", path.display()), e))?;
    }
    let status = match ack.status {
        AckStatus::Posted => "posted",
        AckStatus::Duplicate => "duplicate (already posted, nothing changed)",
        AckStatus::Held => "held (waiting for an earlier batch of the terminal)",
    };
    if a.office.output.json {
        print_json(json!({
            "ack": ack_value,
            "report": serde_json::to_value(&outcome.report).unwrap_or_default(),
        }));
    } else {
        println!("Terminal {} batch {}: {status}.", ack.terminal_id, ack.batch_no);
        println!("Acknowledgement (for `tessera pos settle --ack-file`):");
        println!("{ack_value}");
    }
    Ok(())
}

fn migrate(a: &MigrateArgs) -> Result<(), Failure> {
    let office = OfficeDir::new(&a.office.dir);
    let result = if a.verify {
        office.compare_with_postgres(&a.to)
    } else {
        office.migrate_to_postgres(&a.to)
    };
    let tables = result.map_err(|e| match e {
        e @ OfficeDirError::Postgres(
            tessera_ledger_pg::PgError::NotEmpty(_) | tessera_ledger_pg::PgError::CopyMismatch(_),
        ) => Failure::new(EXIT_DECLINED, e.to_string()),
        e => office_err(e),
    })?;
    let rows: u64 = tables.iter().map(|t| t.sqlite_rows).sum();
    let differing: Vec<&str> = tables.iter().filter(|t| !t.equal()).map(|t| t.table.as_str()).collect();
    if a.office.output.json {
        print_json(json!({
            "copied": !a.verify,
            "equal": differing.is_empty(),
            "tables": tables.iter().map(|t| json!({
                "table": t.table, "sqlite_rows": t.sqlite_rows, "postgres_rows": t.postgres_rows,
                "sqlite_digest": t.sqlite_digest, "postgres_digest": t.postgres_digest, "equal": t.equal(),
            })).collect::<Vec<_>>(),
        }));
    } else {
        for t in &tables {
            println!(
                "  {:<24} {:>9} rows  {}",
                t.table,
                t.postgres_rows,
                if t.equal() {
                    "equal".to_owned()
                } else {
                    format!("DIFFERS (SQLite {} rows)", t.sqlite_rows)
                }
            );
        }
        if differing.is_empty() {
            println!(
                "{} {} tables, {rows} rows: the PostgreSQL ledger equals this one, row for row.",
                if a.verify { "Compared" } else { "Copied and verified" },
                tables.len()
            );
        }
    }
    if differing.is_empty() {
        Ok(())
    } else {
        Err(Failure::new(
            EXIT_DECLINED,
            format!("the PostgreSQL ledger differs in {}", differing.join(", ")),
        )
        .printed(a.office.output.json))
    }
}

fn verify(a: &DirArgs) -> Result<(), Failure> {
    let s = a.office().soundness().map_err(office_err)?;
    let problems = s.problems;
    if a.output.json {
        print_json(json!({"sound": problems.is_empty(), "storage_checked": s.storage_checked, "problems": problems}));
    } else if problems.is_empty() && s.storage_checked {
        println!("The ledger is sound: storage intact, every card's books agree with its postings.");
    } else if problems.is_empty() {
        println!(
            "The ledger is sound: every card's books agree with its postings (its storage is the PostgreSQL server's to check)."
        );
    } else {
        println!("THE LEDGER IS NOT SOUND:");
        for p in &problems {
            println!("  {p}");
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Failure::new(
            1,
            format!(
                "{} problems in the ledger: restore it from a backup or call the office's administrator",
                problems.len()
            ),
        ))
    }
}

fn rotate_keys(a: &DirArgs) -> Result<(), Failure> {
    let (from, to) = a.office().rotate_keys().map_err(office_err)?;
    if a.output.json {
        print_json(json!({"from_key_version": from, "key_version": to}));
    } else {
        println!(
            "Keys rotated: version {from} → {to}. Export every terminal's bundle again (office export-terminal), then sync the tills: each issued card moves to version {to} at its next tap."
        );
    }
    Ok(())
}

fn unblock(a: &UnblockArgs) -> Result<(), Failure> {
    let card = hex8(&a.card, "card id")?;
    let seq = a.office.office().queue_unblock(card, now()?).map_err(office_err)?;
    if a.office.output.json {
        print_json(json!({"card_id": out::card_id(&card), "issuer_seq": seq}));
    } else {
        println!(
            "Unblock {seq} queued for card {}: it opens again at its next tap at a till after `pos sync`.",
            out::card_id(&card)
        );
    }
    Ok(())
}

fn update_profile(a: &UpdateProfileArgs) -> Result<(), Failure> {
    let card = hex8(&a.card, "card id")?;
    let profile = profile_from(&a.profile, card, 1)?;
    let signed = a
        .office
        .office()
        .queue_profile_update(profile, a.profile_version, now()?)
        .map_err(office_err)?;
    let version = signed.profile.version;
    if a.office.output.json {
        print_json(json!({"card_id": out::card_id(&card), "profile": out::profile_json(&signed.profile)}));
    } else {
        println!(
            "Profile version {version} for card {} ({}) queued: terminals receive it at their next `pos sync`.",
            out::card_id(&card),
            signed.profile.name
        );
    }
    Ok(())
}

/// The issuer keys to sign with: the office's (`--dir`) or the TEST key.
fn signing_keys(dir: Option<&Path>) -> Result<(IssuerKeys, &'static str), Failure> {
    match dir {
        Some(dir) => Ok((load_keys(dir)?, "the office's issuer key")),
        None => {
            eprintln!("{}", crate::pos::TEST_KEYS_WARNING);
            Ok((
                IssuerKeys::test().map_err(|e| Failure::new(EXIT_FILE, format!("issuer key store: {e}")))?,
                "the TEST issuer key",
            ))
        }
    }
}

fn sign(a: SignArgs) -> Result<(), Failure> {
    let (signed, which) = match &a.dir {
        Some(dir) => (
            OfficeDir::new(dir)
                .with_operator(a.who.operator.clone())
                .sign_campaigns(&a.file, now()?)
                .map_err(office_err)?,
            "the office's issuer key",
        ),
        None => {
            let (keys, which) = signing_keys(None)?;
            (sign_campaign_file(&a.file, &keys).map_err(office_err)?, which)
        }
    };
    let (sig_path, published) = (&signed.signature_file, &signed.published);
    if a.output.json {
        print_json(json!({
            "file": a.file.display().to_string(),
            "signature_file": sig_path.display().to_string(),
            "version": signed.version,
            "campaigns": signed.campaigns,
            "published": published.as_ref().map(|p| p.display().to_string()),
        }));
    } else {
        println!(
            "Signed {} (version {}, {} campaigns) with {which} → {}",
            a.file.display(),
            signed.version,
            signed.campaigns,
            sig_path.display()
        );
        if let Some(p) = published {
            println!(
                "Published as {}: terminals receive it at their next `pos sync`.",
                p.display()
            );
        }
    }
    Ok(())
}

fn sign_policy(a: SignArgs) -> Result<(), Failure> {
    let signed = match &a.dir {
        Some(dir) => OfficeDir::new(dir)
            .with_operator(a.who.operator.clone())
            .sign_policy(&a.file, now()?)
            .map_err(office_err)?,
        None => {
            let (keys, _) = signing_keys(None)?;
            sign_policy_file(&a.file, &keys).map_err(office_err)?
        }
    };
    let sig_path = &signed.signature_file;
    let digest = hex::encode(signed.digest);
    if a.output.json {
        print_json(json!({
            "file": a.file.display().to_string(),
            "signature_file": sig_path.display().to_string(),
            "version": signed.version,
            "digest": digest,
        }));
    } else {
        println!(
            "Signed policy {} (version {}, SHA-256 {digest}) → {}. Put both files in the till's directory as \
             policy.toml and policy.toml.sig.",
            a.file.display(),
            signed.version,
            sig_path.display()
        );
    }
    Ok(())
}
