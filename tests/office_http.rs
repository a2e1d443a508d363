//! The office's HTTP boundary over real sockets: `tessera office serve`
//! as a process, terminals through `tessera_office`'s client or raw
//! TCP/TLS.
//!
//! * TLS: a pinned bundle reaches its office and no other (a server with
//!   another certificate is refused before anything is sent); plain HTTP
//!   only on loopback and only by explicit choice on both sides.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tessera_crypto::keys::{OfficeLink, TerminalBundle};
use tessera_office::{fetch_sync, ClientError, RetryPolicy};
use tessera_suite::pcscd::tessera_bin;

/// `tessera office serve` on a free loopback port, killed (by its PID) on
/// drop.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(office: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(tessera_bin());
        cmd.args([
            "office",
            "serve",
            "--dir",
            office.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(out).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the server did not start");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("server said {line:?}"))
            .to_owned();
        Self { child, addr }
    }

    fn https(&self) -> String {
        format!("https://{}", self.addr)
    }

    fn http(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tessera(args: &[&str]) -> std::process::Output {
    Command::new(tessera_bin()).args(args).output().unwrap()
}

fn tessera_ok(args: &[&str]) {
    let out = tessera(args);
    assert!(
        out.status.success(),
        "tessera {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A new office in `dir/name` with terminals registered; returns its path.
fn office(dir: &Path, name: &str) -> PathBuf {
    let office = dir.join(name);
    tessera_ok(&["office", "init", "--dir", office.to_str().unwrap()]);
    office
}

/// Exports terminal `id`'s bundle (`--plain-http` if `plain`).
fn bundle(office: &Path, id: u32, plain: bool) -> TerminalBundle {
    let out = office.with_file_name(format!(
        "{}-t{id}-{plain}.json",
        office.file_name().unwrap().to_str().unwrap()
    ));
    let id = id.to_string();
    let mut args = vec![
        "office",
        "export-terminal",
        "--dir",
        office.to_str().unwrap(),
        "--terminal-id",
        &id,
        "--out",
        out.to_str().unwrap(),
    ];
    if plain {
        args.push("--plain-http");
    }
    tessera_ok(&args);
    TerminalBundle::from_json(&std::fs::read_to_string(out).unwrap()).unwrap()
}

#[test]
fn a_pinned_bundle_reaches_its_office_only_and_plain_http_stays_on_loopback() {
    let work = tempfile::tempdir().unwrap();
    let ours = office(work.path(), "ours");
    let theirs = office(work.path(), "theirs");
    let pinned = bundle(&ours, 7, false);
    let plain = bundle(&ours, 7, true);
    assert!(matches!(pinned.office, OfficeLink::Pinned { .. }));
    assert_eq!(plain.office, OfficeLink::PlainLoopback);

    let server = Server::start(&ours, &[], &[]);
    let sync = fetch_sync(&server.https(), &pinned, &RetryPolicy::once()).unwrap();
    assert_eq!(sync.terminal_id, 7);
    // Plain HTTP to a TLS office does not even get an answer; a pinned
    // bundle refuses http:// itself, an unpinned one refuses https://.
    assert!(fetch_sync(&server.http(), &plain, &RetryPolicy::once()).is_err());
    assert!(matches!(
        fetch_sync(&server.http(), &pinned, &RetryPolicy::once()),
        Err(ClientError::Insecure(_))
    ));
    assert!(matches!(
        fetch_sync(&server.https(), &plain, &RetryPolicy::once()),
        Err(ClientError::Insecure(_))
    ));

    // Another office (another certificate) on the same address space: the
    // handshake fails on the pin and it is not retried.
    let impostor = Server::start(&theirs, &[], &[]);
    let start = std::time::Instant::now();
    let refused = fetch_sync(&impostor.https(), &pinned, &RetryPolicy::default());
    assert!(matches!(refused, Err(ClientError::Untrusted(_))), "{refused:?}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "a wrong certificate is not retried"
    );

    // Plain HTTP by explicit choice, on loopback only.
    drop(server);
    let server = Server::start(&ours, &["--plain-http"], &[]);
    assert_eq!(
        fetch_sync(&server.http(), &plain, &RetryPolicy::once())
            .unwrap()
            .terminal_id,
        7
    );
    let out = tessera(&[
        "office",
        "serve",
        "--dir",
        ours.to_str().unwrap(),
        "--listen",
        "0.0.0.0:0",
        "--plain-http",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(matches!(
        fetch_sync("http://192.0.2.1:8420", &plain, &RetryPolicy::once()),
        Err(ClientError::Insecure(_))
    ));
}
