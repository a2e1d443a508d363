//! The office's audit log: an append-only, hash-chained record of every
//! office action — what, when, by which operator (`docs/audit.md`).
//!
//! The entries are one JSON object per line in `audit.jsonl` in the office
//! directory (`0600`); the number of entries and the hash of the newest
//! are anchored in the ledger (table `audit_anchor`). The chain finds an
//! entry edited, deleted, inserted or moved; the anchor finds the tail cut
//! off, the file replaced or removed, and a ledger anchor edited on its own.
//! Someone who can rewrite both the file and the ledger, consistently, is
//! not detected: keep a copy of the head (`office audit verify --json`
//! prints it) somewhere else to detect that.
//!
//! Entries name the people and things acted on by id (card, customer,
//! terminal, store), never by personal data, so that erasing a customer
//! leaves nothing personal in a log that is never rewritten.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tessera_ledger::books::OfficeBooks;
use tessera_ledger::AuditAnchor;

/// The audit file's name in the office directory.
pub const AUDIT_FILE: &str = "audit.jsonl";

/// The environment variable naming the operator when `--operator` is not
/// given (then `$USER`, then `$LOGNAME`).
pub const OPERATOR_ENV: &str = "TESSERA_OPERATOR";

/// Longest operator name, in characters.
pub const MAX_OPERATOR_CHARS: usize = 64;

/// The `prev` of the first entry: 32 zero bytes.
pub const GENESIS: [u8; 32] = [0; 32];

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// Its number: 1 for the first, one more for each next.
    pub seq: u64,
    /// When (Unix seconds, the office machine's clock).
    pub time: u64,
    /// Who: the operator's name.
    pub operator: String,
    /// What: the action (`hotlist.add`, `terminal.revoke`, …).
    pub action: String,
    /// The action's details (ids and values, never personal data).
    pub details: Value,
    /// The hash of the entry before, hex (64 zeros for the first).
    pub prev: String,
    /// This entry's hash, hex: [`entry_hash`].
    pub hash: String,
}

/// Why the audit log could not be read, written or trusted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// No operator name: give `--operator NAME` or set `$TESSERA_OPERATOR`.
    #[error("no operator name: give --operator NAME or set $TESSERA_OPERATOR")]
    NoOperator,
    /// The operator name is not one the log accepts.
    #[error("operator name {0:?}: use 1 to 64 printable characters")]
    BadOperator(String),
    /// The log and its anchor in the ledger disagree (edited, cut off or
    /// interrupted): nothing is appended until that is resolved.
    #[error("the audit log does not verify ({0}): `tessera office audit verify` lists the problems; nothing was done")]
    Broken(String),
    /// The ledger failed.
    #[error("ledger: {0}")]
    Ledger(#[from] tessera_ledger::LedgerError),
    /// The audit file could not be read or written.
    #[error("audit log {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditCheck {
    /// Entries in the file (lines that parse as entries).
    pub entries: u64,
    /// The newest entry's hash, hex (64 zeros for an empty log).
    pub head: String,
    /// The entry count anchored in the ledger.
    pub anchored_entries: u64,
    /// Everything wrong, in file order (empty: the log verifies).
    pub problems: Vec<String>,
}

/// The operator's name: `explicit` (`--operator`), else `$TESSERA_OPERATOR`,
/// else the login name: `$USER`, then `$LOGNAME` (`$USERNAME` on Windows),
/// then the name the system's user database (`/etc/passwd`) gives the
/// account the process runs as. Surrounding spaces are dropped.
///
/// # Errors
/// [`AuditError::NoOperator`] when none is set or it is empty,
/// [`AuditError::BadOperator`] for control characters or more than
/// [`MAX_OPERATOR_CHARS`] characters.
pub fn operator(explicit: Option<&str>) -> Result<String, AuditError> {
    let found = match explicit {
        Some(s) => Some(s.to_owned()),
        None => [OPERATOR_ENV, "USER", "LOGNAME", "USERNAME"]
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|s| !s.trim().is_empty()))
            .or_else(account_name),
    };
    let name = found.map(|s| s.trim().to_owned()).unwrap_or_default();
    if name.is_empty() {
        return Err(AuditError::NoOperator);
    }
    if name.chars().count() > MAX_OPERATOR_CHARS || name.chars().any(char::is_control) {
        return Err(AuditError::BadOperator(name));
    }
    Ok(name)
}

/// The account the process runs as, from `/etc/passwd` (Linux: the
/// owner of `/proc/self`).
#[cfg(unix)]
fn account_name() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").ok()?.uid().to_string();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 2 && f[2] == uid).then(|| f[0].to_owned())
    })
}

#[cfg(not(unix))]
fn account_name() -> Option<String> {
    None
}

/// `value` as canonical JSON: compact, object keys sorted by their UTF-8
/// bytes at every level, strings escaped as `serde_json` does.
pub fn canonical_json(value: &Value) -> String {
    match value {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), canonical_json(&m[k])))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(a) => format!("[{}]", a.iter().map(canonical_json).collect::<Vec<_>>().join(",")),
        other => other.to_string(),
    }
}

/// An entry's hash: SHA-256 over the canonical JSON ([`canonical_json`])
/// of the array `[seq, time, operator, action, details, prev]`.
pub fn entry_hash(seq: u64, time: u64, operator: &str, action: &str, details: &Value, prev: &str) -> [u8; 32] {
    let body = canonical_json(&serde_json::json!([seq, time, operator, action, details, prev]));
    Sha256::digest(body.as_bytes()).into()
}

/// The audit file of the office at `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(AUDIT_FILE)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Every line of the file: an entry, or why the line is not one.
fn read_lines(file: &Path) -> Result<Vec<Result<AuditEntry, String>>, AuditError> {
    let text = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(file)(e)),
    };
    let text = String::from_utf8_lossy(&text);
    Ok(text
        .split_terminator('\n')
        .map(|l| serde_json::from_str::<AuditEntry>(l).map_err(|e| e.to_string()))
        .collect())
}

/// The entries of the log, oldest first (lines that are not entries are
/// left out: [`verify`] names them).
///
/// # Errors
/// [`AuditError::Io`].
pub fn entries(dir: &Path) -> Result<Vec<AuditEntry>, AuditError> {
    Ok(read_lines(&path(dir))?.into_iter().filter_map(Result::ok).collect())
}

/// Checks the chain of `lines` against `anchor`.
fn check(lines: &[Result<AuditEntry, String>], anchor: Option<AuditAnchor>, exists: bool) -> AuditCheck {
    let mut problems = Vec::new();
    let mut prev = hex::encode(GENESIS);
    let mut count = 0u64;
    for (i, line) in lines.iter().enumerate() {
        let n = i as u64 + 1;
        match line {
            Err(e) => problems.push(format!("line {n} is not an audit entry ({e})")),
            Ok(e) => {
                count += 1;
                if e.seq != n {
                    problems.push(format!(
                        "line {n} holds entry {} (deleted, inserted or moved entries)",
                        e.seq
                    ));
                }
                if e.prev != prev {
                    problems.push(format!(
                        "entry {} does not follow the entry before it (deleted, inserted or moved entries)",
                        e.seq
                    ));
                }
                let h = hex::encode(entry_hash(e.seq, e.time, &e.operator, &e.action, &e.details, &e.prev));
                if h != e.hash {
                    problems.push(format!(
                        "entry {} was edited: its hash does not match its content",
                        e.seq
                    ));
                }
                prev = e.hash.clone();
            }
        }
    }
    let lines_n = lines.len() as u64;
    let anchored = anchor.map_or(0, |a| a.entries);
    match anchor {
        None if lines_n > 0 => problems.push(format!(
            "the ledger anchors no audit entry but the file holds {lines_n} (the anchor was removed, or the file does not belong to this ledger)"
        )),
        None => {}
        Some(a) if !exists => problems.push(format!(
            "the audit file is missing; the ledger anchors {} entries",
            a.entries
        )),
        Some(a) if a.entries > lines_n => problems.push(format!(
            "the log ends at entry {lines_n} but the ledger anchors {}: entries were cut off the end",
            a.entries
        )),
        Some(a) if a.entries < lines_n => problems.push(format!(
            "the log holds {lines_n} entries but the ledger anchors {}: entries after it were added outside the office, or a command was interrupted",
            a.entries
        )),
        Some(a) if hex::encode(a.head) != prev => problems.push(
            "the newest entry is not the one the ledger anchors (the file or the anchor was rewritten)".into(),
        ),
        Some(_) => {}
    }
    AuditCheck {
        entries: count,
        head: prev,
        anchored_entries: anchored,
        problems,
    }
}

/// Verifies the log of the office at `dir` against the anchor in `ledger`.
///
/// # Errors
/// [`AuditError::Io`], [`AuditError::Ledger`].
pub fn verify(dir: &Path, ledger: &dyn OfficeBooks) -> Result<AuditCheck, AuditError> {
    let file = path(dir);
    let lines = read_lines(&file)?;
    Ok(check(&lines, ledger.audit_anchor()?, file.exists()))
}

/// Fails unless the log verifies: what every office action checks before
/// it changes anything.
///
/// # Errors
/// [`AuditError::Broken`] naming the first problem; as [`verify`].
pub fn ready(dir: &Path, ledger: &dyn OfficeBooks) -> Result<(), AuditError> {
    let c = verify(dir, ledger)?;
    match c.problems.first() {
        Some(p) => Err(AuditError::Broken(p.clone())),
        None => Ok(()),
    }
}

/// Appends an entry: checks the whole log against the anchor, writes the
/// line (`0600`, synced) and moves the anchor, under the ledger's write
/// lock. Returns the entry.
///
/// # Errors
/// [`AuditError::Broken`] when the log does not verify (nothing is
/// written); [`AuditError::BadOperator`], [`AuditError::NoOperator`];
/// [`AuditError::Io`], [`AuditError::Ledger`].
pub fn append(
    dir: &Path,
    ledger: &mut dyn OfficeBooks,
    operator: &str,
    action: &str,
    details: Value,
    time: u64,
) -> Result<AuditEntry, AuditError> {
    let operator = self::operator(Some(operator))?;
    if action.trim().is_empty() || action.chars().any(char::is_control) {
        return Err(AuditError::Broken(format!("action {action:?} is not a name")));
    }
    let file = path(dir);
    let mut written = None;
    // The books' lock is held while the entry is written; an audit error
    // inside it is carried out past the books' error type.
    let mut failed = None;
    let mut write = |anchor: Option<AuditAnchor>| -> Result<AuditAnchor, AuditError> {
        let lines = read_lines(&file)?;
        let c = check(&lines, anchor, file.exists());
        if let Some(p) = c.problems.first() {
            return Err(AuditError::Broken(p.clone()));
        }
        let seq = c.entries + 1;
        let hash = entry_hash(seq, time, &operator, action, &details, &c.head);
        let entry = AuditEntry {
            seq,
            time,
            operator: operator.clone(),
            action: action.to_owned(),
            details: details.clone(),
            prev: c.head.clone(),
            hash: hex::encode(hash),
        };
        let line = serde_json::to_string(&entry).map_err(|e| AuditError::Broken(e.to_string()))? + "\n";
        let mut opts = std::fs::OpenOptions::new();
        opts.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&file).map_err(io(&file))?;
        f.write_all(line.as_bytes()).map_err(io(&file))?;
        f.sync_all().map_err(io(&file))?;
        written = Some(entry);
        Ok(AuditAnchor {
            entries: seq,
            head: hash,
        })
    };
    let moved = ledger.advance_audit_anchor_with(&mut |anchor| {
        write(anchor).map_err(|e| {
            failed = Some(e);
            tessera_ledger::LedgerError::Storage("the audit entry was not written".into())
        })
    });
    if let Some(e) = failed {
        return Err(e);
    }
    moved?;
    written.ok_or_else(|| AuditError::Broken("no entry written".into()))
}

/// Now, in Unix seconds (the audit log's clock: the office machine's).
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let v = json!({"b": 1, "a": {"d": [1, {"z": "é\n", "y": null}], "c": true}});
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"c":true,"d":[1,{"y":null,"z":"é\n"}]},"b":1}"#
        );
    }

    #[test]
    fn the_hash_is_sha256_of_the_documented_array() {
        let prev = hex::encode(GENESIS);
        let body = format!(r#"[1,1796169600,"anna","hotlist.add",{{"card_id":"7E57000000000A01"}},"{prev}"]"#);
        let want: [u8; 32] = Sha256::digest(body.as_bytes()).into();
        assert_eq!(
            entry_hash(
                1,
                1_796_169_600,
                "anna",
                "hotlist.add",
                &json!({"card_id": "7E57000000000A01"}),
                &prev
            ),
            want
        );
    }

    #[test]
    fn operator_names_are_checked() {
        assert_eq!(operator(Some("  Анна ")).unwrap(), "Анна");
        assert!(matches!(operator(Some("  ")), Err(AuditError::NoOperator)));
        assert!(matches!(operator(Some("a\nb")), Err(AuditError::BadOperator(_))));
        assert!(matches!(
            operator(Some(&"x".repeat(65))),
            Err(AuditError::BadOperator(_))
        ));
    }
}
