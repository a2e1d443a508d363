//! `tessera demo`: a short day at two tills with simulated cards.

use clap::Args;
use serde_json::json;
use tessera_crypto::keys::IssuerKeys;
use tessera_crypto::rng::Rng;
use tessera_protocol::profile::{Date, Profile};
use tessera_simulator::{Faults, SimCard};
use tessera_terminal::issuer::{personalize, IssueParams};
use tessera_terminal::{FixedClock, Receipt, Resolution, SoftwareSam, Terminal, TerminalError};

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tessera_simulator::vpcd::{self, ServeOptions};
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
    #[command(flatten)]
    pub output: OutputArgs,
}

/// 2026-11-27 09:00 UTC.
const OPENING: u32 = 1_795_770_000;

enum Step {
    Earn(usize, u32),
    Redeem(usize, u32),
    /// An earn during which the customer pulls the card away.
    EarnPulled(usize, u32),
    Read(usize),
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

/// Runs the demo.
pub fn run(a: DemoArgs) -> Result<(), Failure> {
    let json = a.output.json;
    day(a).map_err(|f| f.json(json))
}

fn rng(seed: Option<u64>, k: u64) -> Rng {
    seed.map_or(Rng::Os, |s| Rng::seeded(s.wrapping_mul(1000).wrapping_add(k)))
}

fn day(a: DemoArgs) -> Result<(), Failure> {
    let keys = IssuerKeys::test().map_err(|e| Failure::new(EXIT_FILE, format!("test key store unusable: {e}")))?;
    let json = a.output.json;
    let mut events = Vec::new();
    let stack = detect_stack(a.in_process);
    if !json {
        match &stack {
            Stack::InProcess => println!(
                "Tessera demo — simulated cards in process (no pcscd with virtual readers found: \
                 ./scripts/pcscd-up.sh starts one), test keys (never for real cards)"
            ),
            Stack::Pcsc { readers } => println!(
                "Tessera demo — virtual cards behind the real PC/SC daemon, tills on readers \"{}\" and \"{}\", \
                 test keys (never for real cards)",
                readers[0], readers[1]
            ),
        }
        println!();
    }

    // Issuance at the back office.
    let mut cards = Vec::new();
    for (i, (profile, id_hex)) in customers().into_iter().enumerate() {
        let mut id = [0u8; 8];
        hex::decode_to_slice(id_hex, &mut id).map_err(|_| Failure::usage("bad demo card id"))?;
        let mut card = SimCard::manufacture(id, &keys.card_perso_key(&id), rng(a.seed, i as u64))?;
        let signed = personalize(&mut card, &keys, profile, &IssueParams::default())?;
        if !json {
            println!(
                "Issued card {} to {} ({})",
                id_hex, signed.profile.name, signed.profile.home_city
            );
        }
        cards.push(card);
    }

    let mut tills: Vec<_> = (0..2u32)
        .map(|t| {
            Terminal::new(SoftwareSam::new(keys.terminal_keys()), FixedClock(OPENING), 101 + t)
                .with_rng(rng(a.seed, 100 + u64::from(t)))
        })
        .collect();
    let script = [
        Step::Earn(0, 120),
        Step::Earn(1, 300),
        Step::Redeem(0, 50),
        Step::Earn(2, 80),
        Step::Redeem(1, 500),
        Step::EarnPulled(2, 40),
        Step::Read(2),
        Step::Redeem(1, 250),
        Step::Earn(0, 35),
    ];
    let mut receipts: Vec<Receipt> = Vec::new();
    if !json {
        println!();
        println!(
            "{:<5} {:<5} {:<14} {:>5}  what the clerk sees",
            "time", "till", "customer", "APDUs"
        );
    }
    for (n, step) in script.iter().enumerate() {
        let till_ix = n % 2;
        let till = &mut tills[till_ix];
        let minute = 9 * 60 + 7 * n as u32;
        let clock = format!("{:02}:{:02}", minute / 60, minute % 60);
        let (card_ix, what) = match step {
            Step::Earn(c, p) | Step::EarnPulled(c, p) => (*c, ("earn", *p)),
            Step::Redeem(c, p) => (*c, ("redeem", *p)),
            Step::Read(c) => (*c, ("read", 0)),
        };
        let card = &mut cards[card_ix];
        if matches!(step, Step::EarnPulled(..)) {
            // The card leaves the field right after the card processed the
            // 3rd APDU (the EARN, profile cached): its answer is lost.
            card.set_faults(Faults {
                lose_response_of_apdu: Some(3),
                ..Faults::default()
            });
        }
        till.take_trace();
        let mut customer = String::from("-");
        let outcome: Result<(String, Option<Receipt>), TerminalError> = present(&stack, till_ix, card, |t| {
            let mut s = till.tap(t)?;
            customer = s.card().profile.name.clone();
            match what {
                ("earn", p) => {
                    let r = s.earn(p)?;
                    Ok((
                        format!("APPROVED earn +{p} → balance {}", r.record.balance_after),
                        Some(r),
                    ))
                }
                ("redeem", p) => {
                    let r = s.redeem(p)?;
                    Ok((
                        format!("APPROVED redeem -{p} → balance {}", r.record.balance_after),
                        Some(r),
                    ))
                }
                _ => Ok((format!("Hello {customer}! Balance {}", s.card().balance), None)),
            }
        })?;
        let trace = till.take_trace();
        let (line, ok) = match outcome {
            Ok((line, r)) => {
                receipts.extend(r);
                (line, true)
            }
            Err(TerminalError::Interrupted(pending)) => {
                // Next tap, same till: the card tells whether it happened.
                card.set_faults(Faults::default());
                let res = present(&stack, till_ix, card, |t| {
                    till.tap(t).and_then(|mut s| s.resolve(&pending))
                })??;
                let line = match res {
                    Resolution::Completed(rec) => {
                        let balance = rec.balance_after;
                        receipts.push(Receipt {
                            card_id: pending.card_id,
                            key_version: 1,
                            record: rec,
                        });
                        format!("card pulled mid-earn; re-tap shows it went through: balance {balance}")
                    }
                    Resolution::NotDone => "card pulled mid-earn; re-tap shows it did not happen".into(),
                };
                till.take_trace();
                (line, true)
            }
            Err(e) => (format!("DECLINED {}", Failure::from(e).message), false),
        };
        let name = customer;
        if json {
            events.push(json!({"time": clock, "till": 101 + till_ix, "customer": name, "result": line, "approved": ok, "apdus": trace.commands(), "bytes": trace.bytes()}));
        } else {
            let name: String = name.chars().take(14).collect();
            println!(
                "{clock:<5} {:<5} {name:<14} {:>5}  {line}",
                101 + till_ix,
                trace.commands()
            );
        }
    }

    // Back office: every certificate verifies, and the receipts explain every balance.
    let verifier = keys.certificate_verifier();
    let verified = receipts
        .iter()
        .filter(|r| verifier.verify(&r.card_id, r.key_version, &r.record).is_ok())
        .count();
    let mut balances = Vec::new();
    for card in &cards {
        let st = card.state()?;
        let explained: i64 = receipts
            .iter()
            .filter(|r| r.card_id == st.card_id)
            .map(|r| r.record.kind.delta(r.record.amount))
            .sum();
        balances.push((out::card_id(&st.card_id), st.balance, explained));
    }
    let reconciled = balances.iter().all(|(_, b, e)| i64::from(*b) == *e);
    if json {
        print_json(json!({
            "events": events,
            "certificates": {"total": receipts.len(), "verified": verified},
            "cards": balances.iter().map(|(id, b, e)| json!({"card_id": id, "balance": b, "explained_by_receipts": e})).collect::<Vec<_>>(),
            "reconciled": reconciled,
        }));
    } else {
        println!();
        println!(
            "Back office: {verified}/{} certificates verified with the certificate master key.",
            receipts.len()
        );
        for (id, b, e) in &balances {
            println!("  card {id}: balance {b} points, explained by receipts: {e}");
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
    if verified != receipts.len() || !reconciled {
        return Err(Failure::new(crate::fail::EXIT_CARD, "demo reconciliation failed"));
    }
    Ok(())
}
