//! The CLI holds no business logic: it parses arguments, makes one
//! library call per verb, and prints. Everything a till or an office does
//! — which files it keeps, how they are loaded and checked, how a batch
//! is sealed, settled and acknowledged — is in the library crates, where
//! POS integrators (and the examples, and the C ABI) get the same rules.
//!
//! This test reads the CLI's sources and fails on the marks of such logic:
//! file system access, file names of the till's or office's directory,
//! hand-made verification and settlement steps. The demo (`demo.rs`)
//! stages a whole chain in one process, as the examples do, and is checked
//! by running it instead.

use std::path::Path;

/// Marks of logic that belongs in a library, and why.
const FORBIDDEN: &[(&str, &str)] = &[
    ("std::fs", "file handling belongs to TerminalDir / OfficeDir"),
    ("File::open", "file handling belongs to TerminalDir / OfficeDir"),
    ("OpenOptions", "file handling belongs to TerminalDir / OfficeDir"),
    ("set_permissions", "file modes are the library's"),
    ("rusqlite", "storage is the journal's and the ledger's"),
    ("journal.sqlite", "the till directory's layout is TerminalDir's"),
    ("hotlist.toml", "the till directory's layout is TerminalDir's"),
    ("campaigns.toml", "the directories' layout is the library's"),
    ("unblocks.json", "the till directory's layout is TerminalDir's"),
    ("settled.json", "the till directory's layout is TerminalDir's"),
    ("profile-updates", "the till directory's layout is TerminalDir's"),
    ("issuer-keys.json", "the office directory's layout is OfficeDir's"),
    ("load_signed(", "verifying signed files is TerminalDir::load_config's"),
    ("from_json(", "reading key files is dir::load_bundle / OfficeDir's"),
    (
        ".acknowledge(",
        "settlement is tessera_client::settle / settlement::apply_ack",
    ),
    (
        "write_batch(",
        "sealing is tessera_client::settle / settlement::seal_for_transfer",
    ),
    (
        "write_range(",
        "sealing is tessera_client::settle / settlement::seal_for_transfer",
    ),
    (
        "seal_next(",
        "sealing is tessera_client::settle / settlement::seal_for_transfer",
    ),
    ("split_unacknowledged(", "re-sealing is tessera_client::settle's"),
    ("register_customer(", "issuance is tessera_office::dir::register_issued"),
    ("register_card(", "issuance is tessera_office::dir::register_issued"),
    (
        "register_terminal(",
        "terminals are registered by OfficeDir::export_terminal",
    ),
    ("self_check(", "refusing unsound books is OfficeDir::open_for_serving's"),
    (
        "= sign_campaigns(",
        "signing is OfficeDir::sign_campaigns / sign_campaign_file",
    ),
];

/// Uses that are one library call whose result is printed, each named.
const ALLOWED: &[(&str, &str)] = &[
    // `card show` prints whether the card's profile signature verifies:
    // one call of the issuer key's own check.
    ("card.rs", "issuer.as_ref().map(|i| i.verify(sp).is_ok())"),
];

#[test]
fn the_cli_only_parses_calls_and_prints() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    let mut files = 0;
    for entry in std::fs::read_dir(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display())) {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        if !name.ends_with(".rs") || name == "demo.rs" {
            continue;
        }
        files += 1;
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for (n, line) in code.lines().enumerate() {
            let trimmed = line.trim_start();
            if trimmed.starts_with("//") {
                continue;
            }
            if ALLOWED.iter().any(|(f, l)| *f == name && line.contains(l)) {
                continue;
            }
            for (mark, why) in FORBIDDEN {
                if line.contains(mark) {
                    found.push(format!("{name}:{}: `{mark}` — {why}\n    {}", n + 1, line.trim()));
                }
            }
        }
    }
    assert!(files >= 8, "the CLI's sources were not found in {}", src.display());
    assert!(found.is_empty(), "business logic in the CLI:\n{}", found.join("\n"));
}

#[test]
fn the_check_sees_what_it_forbids() {
    // The check itself can fail: a line with a mark is found.
    let line = "    let text = std::fs::read_to_string(dir.join(\"hotlist.toml\"))?;";
    let hits: Vec<_> = FORBIDDEN.iter().filter(|(m, _)| line.contains(m)).collect();
    assert_eq!(hits.len(), 2);
}
