//! A minimal till over the card simulator: open a till directory, serve
//! a customer, survive a card pulled mid-transaction, print the shift.
//!
//! ```text
//! cargo run --example sim_till [TILL_DIR]
//! ```
//!
//! Runs on the published TEST keys: training only, never for real cards.
//! Without `TILL_DIR` the till lives in a temporary directory.

use std::error::Error;

use tessera_crypto::keys::IssuerKeys;
use tessera_crypto::rng::Rng;
use tessera_protocol::profile::{Date, Profile};
use tessera_simulator::SimCard;
use tessera_terminal::dir::TerminalDir;
use tessera_terminal::issuer::{personalize, IssueParams};
use tessera_terminal::station::{self, DirTill, Operation};
use tessera_terminal::till::{TillError, TillOutcome};
use tessera_terminal::{SoftwareSam, SystemClock, TerminalError};
use tessera_transport::{Transport, TransportError};

/// A reader whose card is pulled right after the card has executed the
/// first EARN: the till never sees the answer (what a hurried customer
/// does at a real till).
struct PulledAfterEarn<'a> {
    card: &'a mut SimCard,
    pulled: bool,
}

impl Transport for PulledAfterEarn<'_> {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
        if self.pulled {
            return Err(TransportError::CardRemoved);
        }
        let answer = self.card.transmit(command)?;
        if command.get(1) == Some(&0x30) {
            self.pulled = true;
            return Err(TransportError::CardRemoved);
        }
        Ok(answer)
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let tmp = tempfile::tempdir()?;
    let dir = std::env::args_os()
        .nth(1)
        .map_or_else(|| tmp.path().join("till"), std::path::PathBuf::from);

    // The back office issues a card (here: in memory, on the test keys).
    let keys = IssuerKeys::test()?;
    let card_id = *b"\x7E\x57\x00\x00\x00\x00\x00\x01";
    let mut card = SimCard::manufacture(card_id, &keys.card_perso_key(&card_id), Rng::Os)?;
    let profile = Profile {
        card_id,
        version: 1,
        name: "Ada Lovelace".into(),
        birth_date: Date::new(1990, 12, 10)?,
        home_city: "London".into(),
        household: [0; 8],
        preferences: vec!["coffee".into()],
        tier: 1,
        valid_from: Date::new(2026, 1, 1)?,
        valid_until: Date::new(2035, 12, 31)?,
    };
    personalize(&mut card, &keys, profile, &IssueParams::default())?;

    // The till: its directory, its key module, its clock.
    let terminal_keys = keys.terminal_keys();
    let issuer = terminal_keys.issuer_public.clone();
    let mut till = DirTill::open(
        TerminalDir::new(&dir),
        SoftwareSam::new(terminal_keys),
        &issuer,
        SystemClock,
        42,
        None,
        1,
    )?;

    let tap = till.operate(&mut card, Operation::Read, false)?;
    println!("Hello {}! Balance {} points.", tap.card.profile.name, tap.card.balance);

    let coffee = Operation::Purchase {
        amount_minor: 1250,
        categories: vec!["coffee".into()],
    };
    match till.operate(&mut card, coffee.clone(), false)?.outcome {
        Some(TillOutcome::Approved { receipt, .. }) => println!(
            "APPROVED: +{} points, balance {}",
            receipt.record.amount, receipt.record.balance_after
        ),
        other => return Err(format!("expected an approval, got {other:?}").into()),
    }

    // The card is pulled while it commits the next earn: the till cannot
    // know whether it happened.
    let pulled = till.operate(
        PulledAfterEarn {
            card: &mut card,
            pulled: false,
        },
        coffee.clone(),
        false,
    );
    match pulled {
        Err(TillError::Terminal(TerminalError::Interrupted(p))) => {
            println!(
                "Card pulled: the earn of {} points is pending until the card comes back",
                p.amount
            );
        }
        other => return Err(format!("expected a pending earn, got {other:?}").into()),
    }

    // The customer taps again and asks for the same coffee: the till finds
    // the earn went through and charges nothing twice.
    let again = till.operate(&mut card, coffee, false)?;
    let resolved = again.recovered.len();
    match again.outcome {
        Some(TillOutcome::AlreadyDone { .. }) => {
            println!("Resolved at the next tap ({resolved} record recovered): already done, nothing charged twice");
        }
        other => return Err(format!("expected already-done, got {other:?}").into()),
    }
    println!("Balance now {} points.", again.card.balance);

    let start_of_day = u32::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
            / 86_400
            * 86_400,
    )?;
    let shift = station::totals(till.journal(), start_of_day)?;
    for (kind, t) in &shift.transactions {
        println!("Shift: {kind} × {} = {} points", t.count, t.points);
    }
    let earns = shift.transactions.get("earn").map_or(0, |t| t.count);
    if earns != 2 {
        return Err(format!("expected 2 earns in the shift, found {earns}").into());
    }
    Ok(())
}
