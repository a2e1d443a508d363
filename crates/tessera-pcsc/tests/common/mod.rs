//! Support shared by this crate's tests through the real `pcscd`: the
//! daemon started by `scripts/pcscd-up.sh` and stopped by PID, a card
//! served into a vpcd reader on a thread, and a watchdog that stops the
//! daemon and aborts when a test hangs.

// Test support: failing loudly at the first surprise is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use tessera_simulator::vpcd::{self, ServeOptions, ServeStats, VirtualCard};

/// The workspace's `scripts/` directory.
pub fn scripts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts")
}

/// Whether to skip (`TESSERA_NO_PCSCD=1`), saying so.
pub fn skip(test: &str) -> bool {
    let skip = std::env::var("TESSERA_NO_PCSCD").as_deref() == Ok("1");
    if skip {
        eprintln!("{test}: SKIPPED because TESSERA_NO_PCSCD=1 (no pcscd on this machine)");
    }
    skip
}

/// pcscd started by `scripts/pcscd-up.sh` in its state directory, stopped
/// by PID (`scripts/pcscd-down.sh`, then `SIGKILL`) on drop.
pub struct Pcscd {
    pid: u32,
    dir: Option<PathBuf>,
}

impl Pcscd {
    /// Starts pcscd with 2 readers in the scripts' default directory.
    pub fn start() -> Self {
        Self::start_in(None, 2)
    }

    /// Starts pcscd with `readers` virtual readers in `dir` (the scripts'
    /// default when `None`).
    pub fn start_in(dir: Option<&Path>, readers: usize) -> Self {
        let mut cmd = Command::new("bash");
        cmd.arg(scripts().join("pcscd-up.sh"))
            .args(["--readers", &readers.to_string(), "--timeout", "20"]);
        if let Some(dir) = dir {
            cmd.arg("--dir").arg(dir);
        }
        let out = cmd.output().expect("run scripts/pcscd-up.sh");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "pcscd-up.sh failed: {stderr}");
        let pid = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("PID on stdout");
        eprintln!("{}", stderr.trim());
        Self {
            pid,
            dir: dir.map(Path::to_path_buf),
        }
    }

    /// The daemon's PID (0 once stopped).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The state directory given to the scripts.
    pub fn dir(&self) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| PathBuf::from("/tmp/tessera-pcscd"))
    }

    /// Stops the daemon by its PID file, then makes sure the PID is gone.
    pub fn stop(&mut self) {
        if self.pid == 0 {
            return;
        }
        let mut cmd = Command::new("bash");
        cmd.arg(scripts().join("pcscd-down.sh"));
        if let Some(dir) = &self.dir {
            cmd.arg("--dir").arg(dir);
        }
        let _ = cmd.status();
        // Whatever the script did, this PID must be gone.
        self.signal("KILL");
        self.pid = 0;
    }

    /// Sends signal `name` (`KILL`, `USR1`, ...) to the daemon by PID;
    /// after `KILL` the PID file is stale and [`Pcscd::stop`] only cleans
    /// up.
    pub fn signal(&self, name: &str) -> bool {
        if self.pid == 0 {
            return false;
        }
        Command::new("kill")
            .args(["-s", name, &self.pid.to_string()])
            .output()
            .is_ok_and(|o| o.status.success())
    }
}

impl Pcscd {
    /// Waits (up to 10 s) until the daemon's process is gone after a
    /// signal: a killed process closes its listening socket only as it is
    /// torn down, and a client may still connect until then. Gone means
    /// reaped, or a zombie with no thread left: pcscd is multi-threaded,
    /// and its main thread shows as a zombie while the others still hold
    /// the socket. Returns whether it is gone.
    pub fn wait_gone(&self) -> bool {
        let proc_dir = PathBuf::from(format!("/proc/{}", self.pid));
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < until {
            let zombie = std::fs::read_to_string(proc_dir.join("stat"))
                .map(|s| {
                    s.rsplit_once(')')
                        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
                })
                .unwrap_or(true);
            let threads = std::fs::read_dir(proc_dir.join("task")).map_or(0, Iterator::count);
            if zombie && threads <= 1 {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        false
    }
}

impl Drop for Pcscd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A card served on a thread; stopped and joined on drop.
pub struct Served {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<ServeStats>>,
}

impl Served {
    /// Serves `card` with `opts` until [`Served::finish`] or drop.
    pub fn start<C: VirtualCard + Send + 'static>(mut card: C, opts: ServeOptions) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let handle = thread::spawn(move || vpcd::serve(&mut card, &opts, &stop2).expect("serve"));
        Self {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops serving (the card leaves the reader) and returns the stats.
    pub fn finish(mut self) -> ServeStats {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().expect("handle").join().expect("serve thread")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Aborts the process (after stopping pcscd in `dir`, the scripts' default
/// when `None`) if the returned sender is not dropped within `limit`.
pub fn watchdog(name: &'static str, limit: Duration, dir: Option<PathBuf>) -> mpsc::Sender<()> {
    let (tx, rx) = mpsc::channel::<()>();
    thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
            eprintln!("{name}: watchdog fired after {limit:?}; stopping pcscd");
            let mut cmd = Command::new("bash");
            cmd.arg(scripts().join("pcscd-down.sh"));
            if let Some(dir) = &dir {
                cmd.arg("--dir").arg(dir);
            }
            let _ = cmd.status();
            std::process::abort();
        }
    });
    tx
}
