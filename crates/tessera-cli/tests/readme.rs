//! The README's "A day at the till" and "A day in the office" run as
//! written: every `sh` block of those sections, in order, in one shell, in
//! an empty directory, with this build's `tessera` first on `PATH`. A line
//! that ends in `# exit N` must exit with N (a clerk's mistake the README
//! shows being refused); every other command must succeed. The only change
//! made to the text: the office's port 8420 becomes a free one, so that the
//! test runs beside others.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

/// The `sh` blocks of the README section titled `title` (to the next
/// section of the same level).
fn blocks(readme: &str, title: &str) -> Vec<String> {
    let start = readme
        .find(&format!("\n## {title}\n"))
        .unwrap_or_else(|| panic!("README has no section {title:?}"));
    let rest = &readme[start + title.len() + 5..];
    let section = &rest[..rest.find("\n## ").unwrap_or(rest.len())];
    let mut out = Vec::new();
    let mut lines = section.lines();
    while let Some(l) = lines.next() {
        if l.trim() == "```sh" {
            let mut b = String::new();
            for l in lines.by_ref() {
                if l.trim() == "```" {
                    break;
                }
                b.push_str(l);
                b.push('\n');
            }
            out.push(b);
        }
    }
    assert!(!out.is_empty(), "section {title:?} has no sh block");
    out
}

/// A shell script that runs `block`'s commands and checks each one's exit
/// status (continuation lines joined first).
fn checked(block: &str) -> String {
    let mut script = String::new();
    let mut joined = String::new();
    for (n, line) in block.lines().enumerate() {
        if let Some(head) = line.strip_suffix('\\') {
            joined.push_str(head);
            continue;
        }
        joined.push_str(line);
        let cmd = std::mem::take(&mut joined);
        let code = cmd.trim();
        if code.is_empty() || code.starts_with('#') {
            continue;
        }
        let (body, expected) = match code.rsplit_once("# exit ") {
            Some((body, rest)) => {
                let n: i32 = rest
                    .split_whitespace()
                    .next()
                    .and_then(|d| d.trim_end_matches(':').parse().ok())
                    .unwrap_or_else(|| panic!("`# exit N` without a number: {code}"));
                (body.trim().to_owned(), n)
            }
            None => (code.split(" # ").next().unwrap_or(code).trim().to_owned(), 0),
        };
        if body.ends_with('&') {
            script.push_str(&body);
            script.push('\n');
            continue;
        }
        script.push_str(&format!(
            "echo \"\\$ {esc}\"\n{body}\nrc=$?\nif [ $rc -ne {expected} ]; then echo \"README line {line}: exit $rc, expected {expected}: {esc}\" >&2; exit 1; fi\n",
            esc = body.replace('\\', "\\\\").replace('"', "\\\"").replace('$', "\\$").replace('`', "\\`"),
            line = n + 1,
        ));
    }
    script
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run_section(title: &str) {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let port = free_port().to_string();
    let script = blocks(&readme, title)
        .iter()
        .map(|b| checked(b))
        .collect::<String>()
        .replace("8420", &port);
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_tessera"), bin.join("tessera")).unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let full = format!("set -u\ntrap 'kill $(jobs -p) 2>/dev/null' EXIT\n{script}");
    let out = Command::new("bash")
        .arg("-c")
        .arg(&full)
        .current_dir(&work)
        .env("PATH", path)
        .env("HOME", dir.path())
        .env("NO_COLOR", "1")
        .env("TZ", "Europe/Berlin")
        .env_remove("TESSERA_TERMINAL_DIR")
        .env_remove("TESSERA_NOW")
        .output()
        .unwrap();
    // What a reader of the README would see (shown with --nocapture).
    println!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        out.status.success(),
        "README section {title:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_day_at_the_till_runs_as_written() {
    run_section("A day at the till");
}

#[test]
fn a_day_in_the_office_runs_as_written() {
    run_section("A day in the office");
}
