//! Rendering for clerks (text) and scripts (versioned JSON).

use serde_json::{json, Value};
use tessera_protocol::messages::LogRecord;
use tessera_terminal::AuditTrace;

/// Version of the JSON output layout.
pub const JSON_VERSION: u32 = 1;

pub use tessera_terminal::json::{card_id, card_json, profile_json, record_json};

/// Trace statistics and every exchange as JSON.
pub fn trace_json(t: &AuditTrace) -> Value {
    let mut v = tessera_terminal::json::trace_json(t);
    if let Value::Object(m) = &mut v {
        m.insert("exchanges".into(), tessera_terminal::json::trace_exchanges_json(t));
    }
    v
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
