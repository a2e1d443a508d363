//! A till over a PC/SC reader: wait for a card on the reader, greet the
//! customer, earn points for a purchase, show the new balance.
//!
//! ```text
//! cargo run --example pcsc_till -- READER TILL_DIR [AMOUNT_MINOR]
//! ```
//!
//! `READER` is a part of a reader's name (`tessera pos
//! readers` lists them). A simulated card can be put into a virtual reader
//! with `tessera card serve` (see the README's PC/SC section).
//!
//! Runs on the published TEST keys: training only, never for real cards.

use std::error::Error;
use std::time::Duration;

use tessera_crypto::keys::IssuerKeys;
use tessera_pcsc::{wait_for_tap, PcscTransport, ReaderFilter};
use tessera_terminal::dir::TerminalDir;
use tessera_terminal::station::{DirTill, Operation};
use tessera_terminal::till::TillOutcome;
use tessera_terminal::{SoftwareSam, SystemClock};

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(wanted), Some(dir)) = (args.next(), args.next()) else {
        return Err("usage: pcsc_till READER TILL_DIR [AMOUNT_MINOR]".into());
    };
    let amount_minor: u64 = args.next().map_or(Ok(1250), |a| a.parse())?;

    let keys = IssuerKeys::test()?.terminal_keys();
    let issuer = keys.issuer_public.clone();
    let mut till = DirTill::open(
        TerminalDir::new(dir),
        SoftwareSam::new(keys),
        &issuer,
        SystemClock,
        77,
        None,
        1,
    )?;

    // The reader events API: PC/SC watches the readers on its own thread,
    // and the till sleeps until a card is in a reader matching `wanted`.
    println!("Waiting for a card on a reader matching {wanted:?}…");
    let tap = wait_for_tap(ReaderFilter::Contains(wanted), Duration::from_secs(30))?;
    println!("Card on {} (ATR {})", tap.reader, hex::encode_upper(&tap.atr));
    let mut card = PcscTransport::connect(&tap.reader)?;

    let read = till.operate(&mut card, Operation::Read, false)?;
    println!(
        "Hello {}! Balance {} points.",
        read.card.profile.name, read.card.balance
    );

    let purchase = Operation::Purchase {
        amount_minor,
        categories: vec![],
    };
    let tap = till.operate(&mut card, purchase, false)?;
    match tap.outcome {
        Some(TillOutcome::Approved { receipt, .. }) => {
            println!(
                "APPROVED: +{} points, new balance {} (card #{}, {} APDUs)",
                receipt.record.amount,
                receipt.record.balance_after,
                receipt.record.counter,
                tap.trace.commands()
            );
            Ok(())
        }
        Some(TillOutcome::Refused { decision, .. }) => Err(format!("DECLINED: {}", decision.message()).into()),
        other => Err(format!("unexpected outcome {other:?}").into()),
    }
}
