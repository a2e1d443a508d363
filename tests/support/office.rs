//! `tessera office serve` as a process, for the suites that talk to a
//! real office over real sockets.

// Test support: a panic is how a failed start is reported.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::pcscd::tessera_bin;

/// `tessera office serve` on a free loopback port, killed (by its PID) on
/// drop.
pub struct Server {
    child: Child,
    /// The address it listens on, `127.0.0.1:PORT`.
    pub addr: String,
}

impl Server {
    /// Starts it on a free loopback port with `extra` arguments and
    /// environment; panics if it does not start within 60 s.
    pub fn start(office: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
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
        .stderr(
            std::fs::File::options()
                .create(true)
                .append(true)
                .open(log_path(office))
                .unwrap(),
        );
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

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its HTTPS base URL.
    pub fn https(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Kills it with SIGKILL (no shutdown: requests in flight are cut)
    /// and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Its plain-HTTP base URL (for `--plain-http`).
    pub fn http(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Where the servers of `office` write their standard error.
pub fn log_path(office: &Path) -> PathBuf {
    office.with_extension("serve.log")
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
