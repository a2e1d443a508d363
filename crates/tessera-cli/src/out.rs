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

static STDOUT_CLOSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static STDERR_CLOSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn write_to(w: &mut dyn std::io::Write, closed: &std::sync::atomic::AtomicBool, args: std::fmt::Arguments<'_>) {
    use std::sync::atomic::Ordering;
    if closed.load(Ordering::Relaxed) {
        return;
    }
    if w.write_fmt(args).and_then(|()| w.flush()).is_err() {
        // Closed (EPIPE) or failing: the reader went away; what the command
        // did stands, and its exit code is still given.
        closed.store(true, Ordering::Relaxed);
    }
}

/// Writes to standard output; a closed pipe is not an error (see the
/// `println!` of `main.rs`).
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    write_to(&mut std::io::stdout().lock(), &STDOUT_CLOSED, args);
}

/// Writes to standard error; a closed pipe is not an error.
pub fn write_stderr(args: std::fmt::Arguments<'_>) {
    write_to(&mut std::io::stderr().lock(), &STDERR_CLOSED, args);
}

/// Whether verdicts are coloured: standard output is a terminal, `NO_COLOR`
/// is unset or empty (<https://no-color.org>), `TERM` is not `dumb`, and
/// the output is not JSON.
pub fn colour(json: bool) -> bool {
    use std::io::IsTerminal;
    !json
        && std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var("TERM").map_or(true, |t| t != "dumb")
}

/// A verdict word (`APPROVED`, `DECLINED`, `REFERRED`, …) in bold colour
/// when `colour`: green, red, yellow.
pub fn verdict(word: &str, colour: bool) -> String {
    if !colour {
        return word.to_owned();
    }
    let code = match word {
        "APPROVED" => "1;32",
        "DECLINED" | "BLOCKED" => "1;31",
        _ => "1;33",
    };
    format!("\x1b[{code}m{word}\x1b[0m")
}

/// Writes one man page per command and subcommand of `cmd` into `dir`.
pub fn man_pages(cmd: clap::Command, dir: &std::path::Path) -> Result<(), crate::fail::Failure> {
    let fail = |e: std::io::Error| crate::fail::Failure::new(crate::fail::EXIT_FILE, format!("man pages: {e}"));
    let mut pages = Vec::new();
    let mut stack = vec![(cmd.get_name().to_owned(), cmd)];
    while let Some((name, c)) = stack.pop() {
        for sub in c.get_subcommands().filter(|s| s.get_name() != "help") {
            stack.push((format!("{name}-{}", sub.get_name()), sub.clone()));
        }
        let mut buf = Vec::new();
        clap_mangen::Man::new(c)
            .title(name.to_uppercase())
            .render(&mut buf)
            .map_err(fail)?;
        pages.push((format!("{name}.1"), buf));
    }
    let n = tessera_terminal::dir::write_documents(dir, &pages).map_err(crate::pos::dir_failure)?;
    println!("Wrote {n} man pages to {}.", dir.display());
    Ok(())
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
