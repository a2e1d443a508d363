//! `tessera office`: back-office tools.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::json;
use tessera_crypto::keys::IssuerKeys;
use tessera_terminal::offers::{sign_campaigns, signature_path, CampaignSet};

use crate::fail::{Failure, EXIT_FILE};
use crate::out::print_json;
use crate::OutputArgs;

/// `tessera office …`
#[derive(Subcommand)]
pub enum OfficeCmd {
    /// Check a campaign file and sign it with the issuer key (writes FILE.sig).
    SignCampaigns(SignArgs),
}

/// Arguments of `office sign-campaigns`.
#[derive(Args)]
pub struct SignArgs {
    /// The campaign file (TOML).
    #[arg(long, value_name = "FILE")]
    pub file: PathBuf,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Runs an `office` subcommand.
pub fn run(cmd: OfficeCmd) -> Result<(), Failure> {
    match cmd {
        OfficeCmd::SignCampaigns(a) => {
            let json = a.output.json;
            sign(a).map_err(|f| f.json(json))
        }
    }
}

fn sign(a: SignArgs) -> Result<(), Failure> {
    let body = std::fs::read(&a.file)
        .map_err(|e| Failure::new(EXIT_FILE, format!("campaign file {}: {e}", a.file.display())))?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| Failure::new(EXIT_FILE, format!("campaign file {} is not UTF-8", a.file.display())))?;
    // Never sign what tills would refuse to read.
    let set = CampaignSet::from_toml(text)
        .map_err(|e| Failure::new(EXIT_FILE, format!("campaign file {}: {e}", a.file.display())))?;
    // The test issuer key: the back office's key store arrives with the
    // key ceremony; until then only test keys exist.
    let keys = IssuerKeys::test().map_err(|e| Failure::new(EXIT_FILE, format!("issuer key store: {e}")))?;
    let sig = sign_campaigns(&body, &keys.issuer).map_err(|e| Failure::new(EXIT_FILE, e.to_string()))?;
    let sig_path = signature_path(&a.file);
    tessera_simulator::image::write_atomic(&sig_path, format!("{sig}\n").as_bytes())
        .map_err(|e| Failure::new(EXIT_FILE, e.to_string()))?;
    if a.output.json {
        print_json(
            json!({"file": a.file.display().to_string(), "signature_file": sig_path.display().to_string(), "version": set.version, "campaigns": set.campaigns.len()}),
        );
    } else {
        println!(
            "Signed {} (version {}, {} campaigns) with the TEST issuer key → {}",
            a.file.display(),
            set.version,
            set.campaigns.len(),
            sig_path.display()
        );
    }
    Ok(())
}
