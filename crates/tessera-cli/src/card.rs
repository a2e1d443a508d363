//! `tessera card`: issue and inspect simulated cards.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::json;
use tessera_crypto::keys::IssuerKeys;
use tessera_crypto::rng::Rng;
use tessera_crypto::sign::profile_digest;
use tessera_protocol::profile::SignedProfile;
use tessera_simulator::{image, SimCard};
use tessera_terminal::issuer::{personalize, IssueParams};

use crate::args::{card_id_or_random, profile_from, refuse_existing_card, ProfileArgs};
use crate::fail::{Failure, EXIT_FILE};
use crate::out::{self, print_json};
use crate::OutputArgs;

/// `tessera card …`
#[derive(Subcommand)]
pub enum CardCmd {
    /// Manufacture a simulated card and personalize it with the test issuer.
    Issue(IssueArgs),
    /// Show what a simulated card image holds (offline inspection).
    Show(ShowArgs),
    /// Put a simulated card into a virtual reader of a running pcscd (vpcd).
    ///
    /// The card answers through the real PC/SC daemon and persists its image
    /// after every change. SIGUSR1 takes the card out of the field and puts
    /// it back; SIGINT or SIGTERM stop serving.
    Serve(ServeArgs),
}

/// Arguments of `card serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// Card image file.
    #[arg(long, value_name = "FILE")]
    pub card: PathBuf,
    /// Address of the vpcd driver [default: the first virtual reader, 127.0.0.1:35963].
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "reader_index")]
    pub vpcd: Option<String>,
    /// Virtual reader number (0 = 127.0.0.1:35963, 1 = :35964, …).
    #[arg(long, value_name = "N")]
    pub reader_index: Option<u16>,
    /// Leave the field when APDU N+1 arrives, without answering it.
    #[arg(long, value_name = "N")]
    pub remove_after: Option<u64>,
    /// With --remove-after: the card executes APDU N+1 before leaving (its
    /// answer is lost), as when a card is pulled at the last moment.
    #[arg(long, requires = "remove_after")]
    pub execute_before_removal: bool,
    /// With --remove-after: stay out of the field instead of coming back.
    #[arg(long, requires = "remove_after")]
    pub no_reinsert: bool,
    /// Attack test: act as a relay in the field that replaces the card's
    /// answer to the first command with instruction INS by the status word
    /// SW (both hex), e.g. 30:6C10; the card executes the command.
    #[arg(long, value_name = "INS:SW")]
    pub relay_rewrite: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Arguments of `card issue`.
#[derive(Args)]
pub struct IssueArgs {
    /// Card image file to create (must not exist).
    #[arg(long, value_name = "FILE")]
    pub card: PathBuf,
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
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Arguments of `card show`.
#[derive(Args)]
pub struct ShowArgs {
    /// Card image file.
    #[arg(long, value_name = "FILE")]
    pub card: PathBuf,
    /// Terminal bundle whose issuer public key checks the profile [default:
    /// the test issuer, for a card of the test issuer only; any other
    /// card's signature is then reported unchecked].
    #[arg(long, value_name = "BUNDLE")]
    pub keys: Option<PathBuf>,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Runs a `card` subcommand.
pub fn run(cmd: CardCmd) -> Result<(), Failure> {
    match cmd {
        CardCmd::Issue(a) => {
            let json = a.output.json;
            issue(a).map_err(|f| f.json(json))
        }
        CardCmd::Show(a) => {
            let json = a.output.json;
            show(a).map_err(|f| f.json(json))
        }
        CardCmd::Serve(a) => {
            let json = a.output.json;
            serve(a).map_err(|f| f.json(json))
        }
    }
}

fn test_keys() -> Result<IssuerKeys, Failure> {
    IssuerKeys::test().map_err(|e| Failure::new(EXIT_FILE, format!("test key store unusable: {e}")))
}

fn issue(a: IssueArgs) -> Result<(), Failure> {
    let profile = profile_from(&a.profile, [0; 8], 1)?;
    if a.earn_cap == 0 || a.redeem_cap == 0 {
        return Err(Failure::usage("caps must be at least 1 point"));
    }
    let id = card_id_or_random(a.card_id.as_deref())?;
    refuse_existing_card(&a.card)?;
    let keys = test_keys()?;
    let mut card = SimCard::manufacture(id, &keys.card_perso_key(&id), Rng::Os)?;
    let params = IssueParams {
        earn_cap: a.earn_cap,
        redeem_cap: a.redeem_cap,
        ..IssueParams::default()
    };
    let signed = personalize(&mut card, &keys, profile, &params)?;
    card.save_as(&a.card)
        .map_err(|e| Failure::new(EXIT_FILE, format!("cannot write the card file: {e}")))?;
    if a.output.json {
        print_json(
            json!({"card_file": a.card.display().to_string(), "card_id": out::card_id(&id), "profile": out::profile_json(&signed.profile)}),
        );
    } else {
        println!(
            "Issued card {} to {} ({}) → {}",
            out::card_id(&id),
            signed.profile.name,
            if signed.profile.home_city.is_empty() {
                "no city"
            } else {
                &signed.profile.home_city
            },
            a.card.display()
        );
    }
    Ok(())
}

fn show(a: ShowArgs) -> Result<(), Failure> {
    let e = image::load(&a.card).map_err(|e| Failure::from(tessera_simulator::SimError::from(e)))?;
    let card = SimCard::from_eeprom(e, Rng::Os)?;
    let st = card.state()?;
    let issuer = match &a.keys {
        Some(path) => Some(crate::settle::load_bundle(path)?.keys.issuer_public),
        // Never a silent default: the test issuer checks only its own cards.
        None if st.issuer_id == Some(tessera_protocol::messages::TEST_ISSUER_ID) => Some(test_keys()?.issuer.public()),
        None => None,
    };
    let signed = (!st.profile.is_empty()).then(|| SignedProfile::parse(&st.profile));
    // `None`: not checked (no issuer key for this card's issuer).
    let (profile, signature_ok) = match &signed {
        Some(Ok(sp)) => (Some(&sp.profile), issuer.as_ref().map(|i| i.verify(sp).is_ok())),
        _ => (None, Some(false)),
    };
    let lifecycle = match st.lifecycle {
        tessera_protocol::messages::Lifecycle::Personalization => "blank",
        tessera_protocol::messages::Lifecycle::Active => "active",
        tessera_protocol::messages::Lifecycle::Blocked => "blocked",
    };
    let records: Vec<_> = st.records().cloned().collect();
    if a.output.json {
        print_json(json!({
            "card_id": out::card_id(&st.card_id),
            "lifecycle": lifecycle,
            "key_version": st.key_version,
            "issuer_id": st.issuer_id.map(hex::encode_upper),
            "balance": st.balance,
            "counter": st.counter,
            "earn_cap": st.earn_cap,
            "redeem_cap": st.redeem_cap,
            "auth_failures": st.auth_failures,
            "auth_limit": st.auth_limit,
            "profile": profile.map(out::profile_json),
            "profile_digest": (!st.profile.is_empty()).then(|| hex::encode_upper(profile_digest(&st.profile))),
            "profile_signature_valid": signature_ok,
            "log": records.iter().map(out::record_json).collect::<Vec<_>>(),
        }));
    } else {
        println!(
            "Card {} — {lifecycle}, issuer {}, key version {}",
            out::card_id(&st.card_id),
            st.issuer_id.map_or("- (application v1)".to_owned(), hex::encode_upper),
            st.key_version
        );
        if let Some(p) = profile {
            println!(
                "  {} · born {} · {} · tier {} · prefers {} · signature {}",
                p.name,
                p.birth_date,
                if p.home_city.is_empty() { "-" } else { &p.home_city },
                p.tier,
                if p.preferences.is_empty() {
                    "-".to_owned()
                } else {
                    p.preferences.join(", ")
                },
                match signature_ok {
                    Some(true) => "valid",
                    Some(false) => "INVALID",
                    None => "not checked (give --keys)",
                }
            );
        }
        println!(
            "  Balance {} points after {} transactions (caps: earn {}, redeem {})",
            st.balance, st.counter, st.earn_cap, st.redeem_cap
        );
        for r in &records {
            println!("  {}", out::record_line(r));
        }
    }
    Ok(())
}

fn serve(a: ServeArgs) -> Result<(), Failure> {
    use tessera_simulator::vpcd::{self, ServeOptions};
    let mut card = SimCard::open(&a.card, Rng::Os)?;
    if let Some(r) = &a.relay_rewrite {
        let bad = || {
            Failure::usage(format!(
                "invalid --relay-rewrite {r:?}: give INS:SW in hex, e.g. 30:6C10"
            ))
        };
        let (ins, sw) = r.split_once(':').ok_or_else(bad)?;
        let ins = u8::from_str_radix(ins, 16).map_err(|_| bad())?;
        let sw = u16::from_str_radix(sw, 16).map_err(|_| bad())?;
        card.set_faults(tessera_simulator::Faults {
            relay_rewrite: Some(tessera_simulator::RelayRewrite { ins, sw }),
            ..Default::default()
        });
    }
    let addr = match (&a.vpcd, a.reader_index) {
        (Some(addr), _) => addr.clone(),
        (None, Some(i)) => vpcd::reader_addr(i),
        (None, None) => vpcd::DEFAULT_ADDR.to_owned(),
    };
    let stop = vpcd::stop_on_signals().map_err(|e| Failure::new(EXIT_FILE, e.to_string()))?;
    let remove = vpcd::remove_on_sigusr1().map_err(|e| Failure::new(EXIT_FILE, e.to_string()))?;
    let opts = ServeOptions {
        addr: addr.clone(),
        remove_after: a.remove_after,
        execute_before_removal: a.execute_before_removal,
        reinsert: !a.no_reinsert,
        remove_flag: Some(remove),
        ..ServeOptions::default()
    };
    let id = card.state().map(|s| out::card_id(&s.card_id)).unwrap_or_default();
    if !a.output.json {
        eprintln!(
            "Serving card {id} ({}) on vpcd {addr} — Ctrl-C to stop",
            a.card.display()
        );
    }
    let stats = vpcd::serve(&mut card, &opts, &stop)
        .map_err(|e| Failure::new(crate::fail::EXIT_CARD, format!("virtual reader {addr}: {e}")))?;
    if a.output.json {
        print_json(json!({
            "card_id": id,
            "connections": stats.connections,
            "apdus": stats.apdus,
            "removals": stats.removals,
            "end": format!("{:?}", stats.end),
        }));
    } else {
        eprintln!(
            "Stopped: {} APDUs over {} connections, {} removals",
            stats.apdus, stats.connections, stats.removals
        );
    }
    Ok(())
}
