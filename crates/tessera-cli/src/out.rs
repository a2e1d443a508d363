//! Rendering for clerks (text) and scripts (versioned JSON).

use serde_json::{json, Value};
use tessera_protocol::messages::LogRecord;
use tessera_protocol::profile::Profile;
use tessera_terminal::{AuditTrace, CardInfo, Receipt};

/// Version of the JSON output layout.
pub const JSON_VERSION: u32 = 1;

/// A card id as printed: 16 upper-case hex digits.
pub fn card_id(id: &[u8; 8]) -> String {
    hex::encode_upper(id)
}

/// A profile as JSON.
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

/// A log record as JSON.
pub fn record_json(r: &LogRecord) -> Value {
    json!({
        "counter": r.counter,
        "type": r.kind.name(),
        "points": r.amount,
        "balance_after": r.balance_after,
        "terminal_id": r.terminal_id,
        "terminal_seq": r.terminal_seq,
        "time": r.time,
        "certificate": hex::encode_upper(r.certificate),
    })
}

/// A log record as one line of text.
pub fn record_line(r: &LogRecord) -> String {
    let sign = if r.kind.is_credit() { '+' } else { '-' };
    format!(
        "#{:<5} {:<6} {sign}{:<8} balance {:<8} terminal {} seq {}",
        r.counter,
        r.kind.name(),
        r.amount,
        r.balance_after,
        r.terminal_id,
        r.terminal_seq
    )
}

/// Trace statistics as JSON.
pub fn trace_json(t: &AuditTrace) -> Value {
    json!({
        "apdus": t.commands(),
        "bytes": t.bytes(),
        "card_time_us": t.duration().as_micros() as u64,
        "exchanges": t.entries.iter().map(|e| json!({
            "label": e.label,
            "command": hex::encode_upper(&e.command),
            "response": e.response.as_ref().map(hex::encode_upper),
            "duration_us": e.duration.as_micros() as u64,
        })).collect::<Vec<_>>(),
    })
}

/// The session's card as JSON.
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

/// A receipt as JSON.
pub fn receipt_json(r: &Receipt) -> Value {
    json!({
        "card_id": card_id(&r.card_id),
        "key_version": r.key_version,
        "record": record_json(&r.record),
    })
}

/// Prints a JSON document with the version field first.
pub fn print_json(mut v: Value) {
    if let Value::Object(map) = &mut v {
        let mut out = serde_json::Map::new();
        out.insert("version".into(), json!(JSON_VERSION));
        out.insert("ok".into(), json!(true));
        out.extend(std::mem::take(map));
        v = Value::Object(out);
    }
    println!("{v}");
}
