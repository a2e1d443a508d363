//! The till's results as JSON: what `tessera pos --json` prints and what
//! the C ABI answers (schemas in `docs/ffi.md`), for any integrator that
//! stores or forwards receipts and outcomes. Card ids are 16 upper-case
//! hex digits, dates ISO 8601, certificates upper-case hex.

use crate::journal::JournalRecord;
use crate::offers::Quote;
use crate::policy::Decision;
use crate::till::TillOutcome;
use crate::{AuditTrace, CardInfo, Receipt};
use serde_json::{json, Value};
use tessera_protocol::messages::LogRecord;
use tessera_protocol::profile::Profile;

/// A card id: 16 upper-case hex digits.
pub fn card_id(id: &[u8; 8]) -> String {
    hex::encode_upper(id)
}

/// A customer profile.
pub fn profile_json(p: &Profile) -> Value {
    json!({
        "card_id": card_id(&p.card_id),
        "version": p.version,
        "name": p.name,
        "birth_date": p.birth_date.to_string(),
        "home_city": p.home_city,
        "household": hex::encode_upper(p.household),
        "preferences": p.preferences,
        "tier": p.tier,
        "valid_from": p.valid_from.to_string(),
        "valid_until": p.valid_until.to_string(),
    })
}

/// A card log record (a transaction with its certificate).
pub fn record_json(r: &LogRecord) -> Value {
    json!({
        "counter": r.counter,
        "type": r.kind.name(),
        "points": r.amount,
        "balance_after": r.balance_after,
        "terminal_id": r.terminal_id,
        "terminal_seq": r.terminal_seq,
        "time": r.time,
        "reference": r.reference,
        "online": r.online,
        "certificate": hex::encode_upper(r.certificate),
    })
}

/// The card as the till read it in the authenticated session.
pub fn card_json(c: &CardInfo) -> Value {
    json!({
        "card_id": card_id(&c.card_id),
        "key_version": c.key_version,
        "balance": c.balance,
        "counter": c.counter,
        "profile": profile_json(&c.profile),
        "profile_cached": c.profile_cached,
        "last_record": c.last_record.as_ref().map(record_json),
    })
}

/// A receipt: the card's certified record of a transaction, and its short
/// reference for the printed receipt (`receipt_ref`, `0C01-0003`: see
/// [`crate::station::ReceiptRef`]).
pub fn receipt_json(r: &Receipt) -> Value {
    json!({
        "receipt_ref": crate::station::ReceiptRef::for_record(&r.card_id, r.record.counter).to_string(),
        "card_id": card_id(&r.card_id),
        "key_version": r.key_version,
        "record": record_json(&r.record),
    })
}

/// A points quote: base points and each campaign's lines.
pub fn quote_json(q: &Quote) -> Value {
    json!({
        "base": q.base,
        "total": q.total,
        "lines": q.lines.iter().map(|l| json!({"campaign": l.campaign_id, "label": l.label, "points": l.points})).collect::<Vec<_>>(),
    })
}

/// A journal record of a card transaction (`recovered`, `resolved`).
pub fn journaled_json(r: &JournalRecord) -> Value {
    let e = &r.entry;
    json!({
        "journal_seq": r.seq,
        "type": e.tx_type,
        "points": e.points,
        "card_counter": e.card_counter,
        "balance_after": e.balance_after,
        "origin_terminal": e.origin_terminal,
        "origin_seq": e.origin_seq,
    })
}

/// What became of an operation: approved (with receipt and quote),
/// declined or referred (with the reason code), or already done.
pub fn outcome_json(o: &TillOutcome) -> Value {
    match o {
        TillOutcome::Approved {
            receipt,
            quote,
            decision_seq,
        } => json!({
            "decision": "approve",
            "decision_seq": decision_seq,
            "receipt": receipt_json(receipt),
            "quote": quote.as_ref().map(quote_json),
        }),
        TillOutcome::ApprovedNoPoints { quote, decision_seq } => json!({
            "decision": "approve",
            "decision_seq": decision_seq,
            "receipt": null,
            "card_touched": false,
            "points": 0,
            "quote": quote_json(quote),
        }),
        TillOutcome::Refused { decision, decision_seq } => json!({
            "decision": if matches!(decision, Decision::Refer(_)) { "refer" } else { "decline" },
            "decision_seq": decision_seq,
            "reason": decision.code(),
            "message": decision.message(),
        }),
        TillOutcome::AlreadyDone { earlier } => json!({
            "decision": "already-done",
            "earlier": earlier.iter().map(journaled_json).collect::<Vec<_>>(),
        }),
    }
}

/// An audit trace's totals: APDUs, bytes, time at the card.
pub fn trace_json(t: &AuditTrace) -> Value {
    json!({
        "apdus": t.commands(),
        "bytes": t.bytes(),
        "card_time_us": u64::try_from(t.duration().as_micros()).unwrap_or(u64::MAX),
    })
}

/// An audit trace's exchanges, one by one: label, command, response (hex),
/// duration.
pub fn trace_exchanges_json(t: &AuditTrace) -> Value {
    json!(t
        .entries
        .iter()
        .map(|e| json!({
            "label": e.label,
            "command": hex::encode_upper(&e.command),
            "response": e.response.as_ref().map(hex::encode_upper),
            "duration_us": u64::try_from(e.duration.as_micros()).unwrap_or(u64::MAX),
        }))
        .collect::<Vec<_>>())
}
