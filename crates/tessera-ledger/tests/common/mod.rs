//! Shared test support: a shop of real tills over simulated cards, and
//! journals built record by record with real certificates.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use tessera_crypto::cert::certificate;
use tessera_crypto::keys::IssuerKeys;
use tessera_crypto::rng::Rng;
use tessera_ledger::{Ledger, LedgerKeys};
use tessera_protocol::messages::{LogRecord, TxKind};
use tessera_protocol::profile::{Date, Profile};
use tessera_simulator::SimCard;
use tessera_terminal::batch::{write_batch, Ack};
use tessera_terminal::issuer::{personalize, IssueParams};
use tessera_terminal::journal::{Entry, EntryKind, Journal};
use tessera_terminal::offers::CampaignSet;
use tessera_terminal::policy::{Hotlist, Policy};
use tessera_terminal::till::{Till, TillConfig, TillOutcome};
use tessera_terminal::{Clock, SoftwareSam, Terminal};

/// 2026-11-27 12:00 UTC.
pub const T0: u32 = 1_795_780_800;

/// A clock the tills share, advanced by the test.
#[derive(Clone)]
pub struct SharedClock(pub Arc<AtomicU32>);

impl Clock for SharedClock {
    fn now(&self) -> u32 {
        self.0.load(Ordering::SeqCst)
    }
}

pub fn keys() -> IssuerKeys {
    IssuerKeys::test().unwrap()
}

pub fn card_id(n: u32) -> [u8; 8] {
    let mut id = [0x7E, 0x57, 0, 0, 0, 0, 0, 0];
    id[4..].copy_from_slice(&n.to_be_bytes());
    id
}

pub fn profile() -> Profile {
    Profile {
        card_id: [0; 8],
        version: 1,
        name: "Анна Петрова".into(),
        birth_date: Date {
            year: 1990,
            month: 3,
            day: 14,
        },
        home_city: "Нижний Новгород".into(),
        household: *b"HH000042",
        preferences: vec!["coffee".into()],
        tier: 1,
        valid_from: Date {
            year: 2026,
            month: 1,
            day: 1,
        },
        valid_until: Date {
            year: 2030,
            month: 12,
            day: 31,
        },
    }
}

/// A card manufactured and personalized with the test keys.
pub fn issued_card(n: u32) -> SimCard {
    let keys = keys();
    let id = card_id(n);
    let mut card = SimCard::manufacture(id, &keys.card_perso_key(&id), Rng::seeded(u64::from(n) + 1000)).unwrap();
    personalize(&mut card, &keys, profile(), &IssueParams::default()).unwrap();
    card
}

/// Temp directory, shared clock, tills and a ledger.
pub struct Shop {
    pub dir: tempfile::TempDir,
    pub clock: SharedClock,
}

impl Shop {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            clock: SharedClock(Arc::new(AtomicU32::new(T0))),
        }
    }

    pub fn now(&self) -> u32 {
        self.clock.now()
    }

    pub fn advance(&self, secs: u32) {
        self.clock.0.fetch_add(secs, Ordering::SeqCst);
    }

    pub fn journal_path(&self, id: u32) -> PathBuf {
        self.dir.path().join(format!("till-{id}.sqlite"))
    }

    pub fn ledger_path(&self) -> PathBuf {
        self.dir.path().join("ledger.sqlite")
    }

    pub fn ledger(&self) -> Ledger {
        Ledger::open(&self.ledger_path(), LedgerKeys::from_issuer(&keys())).unwrap()
    }

    pub fn till(&self, id: u32) -> Till<SoftwareSam, SharedClock> {
        self.till_with(id, Policy::default_policy(), CampaignSet::empty())
    }

    /// A till deciding under `policy` and `campaigns` (velocity limits
    /// lifted, which do not change points).
    pub fn till_with(&self, id: u32, mut policy: Policy, campaigns: CampaignSet) -> Till<SoftwareSam, SharedClock> {
        policy.velocity.max_offline_redeems = u32::MAX;
        policy.velocity.max_offline_points = u32::MAX;
        let journal = Journal::open(&self.journal_path(id), id).unwrap();
        let terminal = Terminal::new(SoftwareSam::new(keys().terminal_keys()), self.clock.clone(), id)
            .with_store(id)
            .with_rng(Rng::seeded(u64::from(id)));
        let config = TillConfig {
            policy,
            hotlist: Hotlist::empty(),
            campaigns,
            online: Default::default(),
        };
        Till::new(terminal, journal, config).unwrap()
    }

    /// Seals the till's journal (a second handle on its file) into a batch.
    pub fn settle(&self, id: u32) -> Vec<u8> {
        settle_journal(&self.journal_path(id), id, self.now())
    }
}

/// Seals a journal file into a batch, signed with the terminal's real key.
pub fn settle_journal(path: &Path, id: u32, now: u32) -> Vec<u8> {
    let mut journal = Journal::open(path, id).unwrap();
    let mut out = Vec::new();
    write_batch(&mut journal, &keys().terminal_batch_key(id), now, &mut out)
        .unwrap()
        .expect("something to settle");
    out
}

/// Marks a batch acknowledged in the terminal's journal (as `pos settle`
/// does on a genuine ack), so that the next seal makes the next batch.
pub fn acknowledge(path: &Path, id: u32, ack: &Ack, now: u32) {
    assert!(ack.verify(&keys().terminal_batch_key(id)), "ack MAC");
    let mut head = [0u8; 32];
    hex::decode_to_slice(&ack.head, &mut head).unwrap();
    Journal::open(path, id)
        .unwrap()
        .acknowledge(ack.batch_no, &head, now)
        .unwrap();
}

/// The header's batch number and head of a batch.
pub fn header_of(batch: &[u8]) -> serde_json::Value {
    let first = batch.split(|b| *b == b'\n').next().unwrap();
    serde_json::from_slice(first).unwrap()
}

/// Marks batch `batch_no` of a journal acknowledged locally (without the
/// ledger), to produce later batches.
pub fn ack_locally(path: &Path, id: u32, batch: &[u8], now: u32) {
    let h = header_of(batch);
    let mut head = [0u8; 32];
    hex::decode_to_slice(h["head"].as_str().unwrap(), &mut head).unwrap();
    let n = u32::try_from(h["batch_no"].as_u64().unwrap()).unwrap();
    Journal::open(path, id).unwrap().acknowledge(n, &head, now).unwrap();
}

/// One purchase at a till; returns whether it was approved.
pub fn purchase(till: &mut Till<SoftwareSam, SharedClock>, card: &mut SimCard, minor: u64) -> bool {
    card.insert().unwrap();
    let mut tap = till.tap(&mut *card).unwrap();
    matches!(tap.purchase(minor, &[]).unwrap(), TillOutcome::Approved { .. })
}

/// One redemption at a till; returns whether it was approved.
pub fn redeem(till: &mut Till<SoftwareSam, SharedClock>, card: &mut SimCard, points: u32) -> bool {
    card.insert().unwrap();
    let mut tap = till.tap(&mut *card).unwrap();
    matches!(tap.redeem(points).unwrap(), TillOutcome::Approved { .. })
}

/// A card record with a genuine certificate (made with the card's
/// certificate key, as the card would), as a journal entry.
#[allow(clippy::too_many_arguments)]
pub fn certified(
    kind: EntryKind,
    card: u32,
    counter: u32,
    tx: TxKind,
    amount: u32,
    balance_after: u32,
    terminal_id: u32,
    terminal_seq: u32,
    time: u32,
) -> Entry {
    certified_record(
        kind,
        card,
        counter,
        tx,
        amount,
        balance_after,
        0,
        terminal_id,
        terminal_seq,
        time,
    )
}

/// An approve decision of a till for a card's next transaction.
pub fn approved(card: u32, counter: u32, tx: TxKind, points: u32, time: u32) -> Entry {
    let mut d = Entry::new(EntryKind::Decision, time);
    d.card_id = Some(hex::encode_upper(card_id(card)));
    d.card_counter = Some(counter);
    d.tx_type = Some(tx.name().to_owned());
    d.points = Some(points);
    d.verdict = Some(tessera_terminal::journal::Verdict::Approve);
    d
}

/// Appends entries to a terminal's journal file (record by record, with
/// the real journal) and seals them into a batch.
///
/// Like a real till, each genuine completion of this till is preceded by
/// its approve decision, and the card's record names that decision's
/// sequence number (the record is certified again for it). A completion
/// whose certificate does not verify is appended as it is.
pub fn journal_batch(path: &Path, id: u32, entries: Vec<Entry>, now: u32) -> Vec<u8> {
    {
        let mut j = Journal::open(path, id).unwrap();
        // A completion given twice stays one record (one decision).
        let mut seen: std::collections::HashMap<Option<String>, Entry> = std::collections::HashMap::new();
        for e in entries {
            let e = match seen.get(&e.certificate) {
                Some(done) if e.kind == EntryKind::Completion => done.clone(),
                _ => {
                    let cert = e.certificate.clone();
                    let done = decided(&mut j, id, e);
                    if cert.is_some() {
                        seen.insert(cert, done.clone());
                    }
                    done
                }
            };
            j.append(e).unwrap();
        }
    }
    settle_journal(path, id, now)
}

/// Appends the approve decision a completion of till `id` acts on and
/// returns the completion naming it.
fn decided(j: &mut Journal, id: u32, mut e: Entry) -> Entry {
    let Some(mut rec) = e.card_record() else { return e };
    let card: [u8; 8] = {
        let mut c = [0u8; 8];
        hex::decode_to_slice(e.card_id.as_deref().unwrap_or(""), &mut c).unwrap();
        c
    };
    let key = keys().card_cert_key(&card);
    if e.kind != EntryKind::Completion || rec.terminal_id != id || certificate(&key, &card, &rec) != rec.certificate {
        return e;
    }
    let mut d = Entry::new(EntryKind::Decision, e.time);
    d.card_id.clone_from(&e.card_id);
    d.card_counter = Some(rec.counter);
    d.tx_type.clone_from(&e.tx_type);
    d.points = e.points;
    d.reference = e.reference;
    d.purchase_minor = e.purchase_minor;
    d.categories.clone_from(&e.categories);
    d.basket = std::mem::take(&mut e.basket);
    d.verdict = Some(tessera_terminal::journal::Verdict::Approve);
    let seq = j.append(d).unwrap().seq;
    rec.terminal_seq = seq;
    rec.certificate = certificate(&key, &card, &rec);
    let mut c = Entry::from_card_record(EntryKind::Completion, e.time, &card, &rec);
    c.purchase_minor = e.purchase_minor;
    c.categories = std::mem::take(&mut e.categories);
    c
}

/// A genuinely certified refund record naming `reference`, as a journal
/// entry (as [`certified`]).
#[allow(clippy::too_many_arguments)]
pub fn certified_refund(
    card: u32,
    counter: u32,
    tx: TxKind,
    amount: u32,
    balance_after: u32,
    reference: u32,
    terminal_id: u32,
    terminal_seq: u32,
    time: u32,
) -> Entry {
    certified_record(
        EntryKind::Completion,
        card,
        counter,
        tx,
        amount,
        balance_after,
        reference,
        terminal_id,
        terminal_seq,
        time,
    )
}

#[allow(clippy::too_many_arguments)]
fn certified_record(
    kind: EntryKind,
    card: u32,
    counter: u32,
    tx: TxKind,
    amount: u32,
    balance_after: u32,
    reference: u32,
    terminal_id: u32,
    terminal_seq: u32,
    time: u32,
) -> Entry {
    let keys = keys();
    let id = card_id(card);
    let mut rec = LogRecord {
        counter,
        kind: tx,
        amount,
        balance_after,
        terminal_id,
        terminal_seq,
        time,
        reference,
        online: false,
        certificate: [0; 16],
    };
    rec.certificate = certificate(&keys.card_cert_key(&id), &id, &rec);
    Entry::from_card_record(kind, time, &id, &rec)
}
