//! Support for tests through the real PC/SC stack: a private `pcscd` with
//! vpcd virtual readers ([`Pcscd`]), simulated cards served into them by
//! the `tessera card serve` binary ([`ServedCard`]), the binary itself
//! ([`tessera_bin`]), and the safety nets that keep a failing test from
//! hanging CI or leaking processes ([`exclusive`], [`Watchdog`],
//! [`run_with_timeout`]).
//!
//! # Ownership of the daemon
//! There is one `pcscd` per machine (its socket is `/run/pcscd/pcscd.comm`,
//! its readers listen on fixed TCP ports), so at most one test may own it
//! at a time. Cargo runs test binaries one after another; inside a binary,
//! tests run on parallel threads and must hold [`exclusive`] while they own
//! the daemon. Every test starts its own [`Pcscd`] in [`SUITE_DIR`] (never
//! the scripts' default directory, which other tests use) and stops it when
//! the guard drops, panic or not.
//!
//! # Processes
//! Every process started here is stopped by its PID: `pcscd` by
//! `scripts/pcscd-down.sh` (which reads the PID file) and then `SIGKILL` to
//! the PID it reported; `tessera card serve` by `SIGTERM`, then `SIGKILL`
//! after [`STOP_GRACE`]. Nothing is ever killed by name.
//!
//! # Skipping
//! `TESSERA_NO_PCSCD=1` makes [`skip`] return `true` with a message, for
//! machines without pcscd; without it, a daemon that cannot start is a
//! test failure.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{mpsc, Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use tessera_card::CardState;
use tessera_pcsc::{wait_for_card, PcscError};

/// The state directory of the suite's `pcscd` (generated reader
/// configuration, driver copies, `pcscd.pid`, `pcscd.log`); distinct from
/// the scripts' default `/tmp/tessera-pcscd`.
pub const SUITE_DIR: &str = "/tmp/tessera-pcscd-suite";

/// How long a test waits for a card to arrive or leave, or for a process to
/// become ready, before failing.
pub const WAIT: Duration = Duration::from_secs(15);

/// How long a stopped `tessera card serve` gets to exit after `SIGTERM`
/// before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// PIDs of the `tessera card serve` processes alive in this test process,
/// for the watchdog to kill when a test hangs.
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// State directories of the daemons started by [`Pcscd`] in this test
/// process, for the watchdog to stop.
static DAEMON_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Whether the PC/SC tests must be skipped (`TESSERA_NO_PCSCD=1`); prints
/// why, naming `test`, when so.
pub fn skip(test: &str) -> bool {
    let skip = std::env::var("TESSERA_NO_PCSCD").as_deref() == Ok("1");
    if skip {
        eprintln!("{test}: SKIPPED because TESSERA_NO_PCSCD=1 (no pcscd on this machine)");
    }
    skip
}

/// Serializes the tests of one binary that own the daemon: hold the guard
/// for the whole test. A test that panicked while holding it does not stop
/// the others (the poison is ignored; the panicking test's guards have
/// stopped its processes).
pub fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The workspace's `scripts/` directory.
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts")
}

/// The name pcscd gives to virtual reader `index` (0-based) with the
/// configuration of `scripts/pcscd-up.sh`: `Virtual PCD 00 00`,
/// `Virtual PCD 00 01`, `Virtual PCD 1 00 00`, `Virtual PCD 1 00 01`, …
/// Its card connects to `127.0.0.1:35963 + index`.
pub fn reader_name(index: usize) -> String {
    let entry = index / 2;
    let slot = index % 2;
    if entry == 0 {
        format!("Virtual PCD 00 {slot:02}")
    } else {
        format!("Virtual PCD {entry} 00 {slot:02}")
    }
}

/// A private `pcscd` started by `scripts/pcscd-up.sh`; stopped by PID when
/// dropped.
#[derive(Debug)]
pub struct Pcscd {
    pid: Option<u32>,
    readers: usize,
    dir: PathBuf,
}

impl Pcscd {
    /// Starts `pcscd` with `readers` virtual readers in `dir` (see
    /// [`SUITE_DIR`]), replacing an earlier instance of ours in that
    /// directory; returns once its socket and reader ports are ready.
    ///
    /// # Panics
    /// When the script fails (pcscd missing and not installable, another
    /// pcscd running, ports taken, not ready in time): a test failure, with
    /// the script's diagnostics.
    pub fn start(readers: usize, dir: &Path) -> Self {
        let mut pcscd = Self {
            pid: None,
            readers,
            dir: dir.to_owned(),
        };
        pcscd.up();
        pcscd
    }

    /// [`Pcscd::start`] in [`SUITE_DIR`].
    ///
    /// # Panics
    /// As [`Pcscd::start`].
    pub fn start_suite(readers: usize) -> Self {
        Self::start(readers, Path::new(SUITE_DIR))
    }

    fn up(&mut self) {
        let out = run_with_timeout(
            Command::new("bash")
                .arg(scripts_dir().join("pcscd-up.sh"))
                .args(["--readers", &self.readers.to_string(), "--timeout", "20", "--dir"])
                .arg(&self.dir),
            Duration::from_secs(60),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "scripts/pcscd-up.sh failed ({}): {stderr}",
            out.status
        );
        let pid: u32 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("pcscd-up.sh printed no PID: {stderr}"));
        self.pid = Some(pid);
        let mut dirs = lock(&DAEMON_DIRS);
        if !dirs.contains(&self.dir) {
            dirs.push(self.dir.clone());
        }
    }

    /// The PID of the running daemon, `None` after [`Pcscd::stop`].
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The number of virtual readers asked for.
    pub fn readers(&self) -> usize {
        self.readers
    }

    /// The name of virtual reader `index`, as [`reader_name`].
    pub fn reader_name(&self, index: usize) -> String {
        reader_name(index)
    }

    /// The daemon's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("pcscd.log")
    }

    /// Stops the daemon (`scripts/pcscd-down.sh`, then `SIGKILL` to its
    /// PID in case it is still there). Does nothing when already stopped.
    pub fn stop(&mut self) {
        let Some(pid) = self.pid.take() else { return };
        let _ = run_with_timeout(
            Command::new("bash")
                .arg(scripts_dir().join("pcscd-down.sh"))
                .args(["--quiet", "--timeout", "5", "--dir"])
                .arg(&self.dir),
            Duration::from_secs(20),
        );
        if is_pcscd(pid) {
            signal(pid, "KILL");
        }
    }

    /// Stops the daemon and starts it again with the same readers.
    ///
    /// # Panics
    /// As [`Pcscd::start`].
    pub fn restart(&mut self) {
        self.stop();
        self.up();
    }
}

impl Drop for Pcscd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether `pid` is a live `pcscd` (the PID may have been reused).
fn is_pcscd(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "pcscd")
}

/// Sends signal `name` (`TERM`, `USR1`, `KILL`) to `pid` with the shell's
/// `kill` builtin (no dependency on procps).
fn signal(pid: u32, name: &str) -> bool {
    Command::new("sh")
        .args(["-c", "kill -s \"$1\" \"$2\" 2>/dev/null", "sh", name, &pid.to_string()])
        .stdin(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The `tessera` binary of this build.
///
/// Found, in this order:
/// 1. `$TESSERA_BIN` when set (nothing is built then);
/// 2. in the target profile directory of the running executable (a test
///    binary lives in `target/<profile>/deps/`, the CLI in
///    `target/<profile>/tessera`), after running
///    `cargo build -p tessera-cli` for that profile (`--release` when the
///    directory is `release`) and that target directory, so that it is
///    never stale: a no-op taking a fraction of a second when up to date,
///    and the only way for `cargo test --test pcsc_stack` to see CLI
///    changes, since `CARGO_BIN_EXE_tessera` exists only for tessera-cli's
///    own tests. Cargo holds no lock on the target directory while tests
///    run, so this does not deadlock.
///
/// When the build fails but a binary is there, that binary is used (with a
/// warning); otherwise this panics. Runs cargo at most once per process.
///
/// # Panics
/// When there is no binary and it cannot be built.
pub fn tessera_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(find_or_build_tessera).clone()
}

fn find_or_build_tessera() -> PathBuf {
    if let Some(bin) = std::env::var_os("TESSERA_BIN") {
        return PathBuf::from(bin);
    }
    let name = format!("tessera{}", std::env::consts::EXE_SUFFIX);
    build_in_target(&["-p", "tessera-cli", "--bin", "tessera"], Path::new(&name))
}

/// The binary of one of the workspace's examples (`examples/NAME.rs`),
/// built by cargo when needed, as [`tessera_bin`] builds the CLI.
///
/// # Panics
/// When there is no binary and it cannot be built.
pub fn example_bin(name: &str) -> PathBuf {
    let file = format!("{name}{}", std::env::consts::EXE_SUFFIX);
    build_in_target(
        &["-p", "tessera-suite", "--example", name],
        &Path::new("examples").join(file),
    )
}

/// Runs `cargo build <what>` into this test's target directory and
/// profile, and returns `relative` under the profile directory.
fn build_in_target(what: &[&str], relative: &Path) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    // target/<profile>/deps/<test> or target/<profile>/<bench or example>.
    let mut profile_dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if profile_dir.file_name().is_some_and(|n| n == "deps" || n == "examples") {
        profile_dir.pop();
    }
    let bin = profile_dir.join(relative);
    let target_dir = profile_dir.parent().map(Path::to_path_buf).unwrap_or_default();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet"])
        .args(what)
        .arg("--manifest-path")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target_dir);
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(other) => {
            cmd.args(["--profile", other]);
        }
        None => {}
    }
    let out = run_with_timeout(&mut cmd, Duration::from_secs(600));
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr);
        assert!(
            bin.exists(),
            "no {} and `cargo build {}` failed: {why}",
            bin.display(),
            what.join(" ")
        );
        eprintln!(
            "warning: `cargo build {}` failed, using the existing {}: {why}",
            what.join(" "),
            bin.display()
        );
    }
    assert!(bin.exists(), "cargo built no {}", bin.display());
    bin
}

/// Runs `tessera` with `args` (at most `timeout`), capturing its output.
pub fn run_tessera(args: &[&str], timeout: Duration) -> Output {
    run_with_timeout(Command::new(tessera_bin()).args(args), timeout)
}

/// Runs `cmd` to completion with its output captured, killing it (by PID)
/// if it is still running after `timeout`; the output then holds what it
/// printed so far and the status says it was killed.
///
/// # Panics
/// When the program cannot be started.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    // Read both pipes on threads so a chatty child never blocks on a full
    // pipe while we wait for it.
    let readers = [
        child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
        child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .map(|pipe| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    });
    let status = wait_or_kill(&mut child, timeout);
    let [out, err] = readers.map(|r| r.join().unwrap_or_default());
    Output {
        status,
        stdout: out,
        stderr: err,
    }
}

/// Waits for `child` up to `timeout`, then kills it; returns its status.
fn wait_or_kill(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            _ => {
                eprintln!("killing pid {} after {timeout:?}", child.id());
                let _ = child.kill();
                return child
                    .wait()
                    .unwrap_or_else(|e| panic!("wait for pid {}: {e}", child.id()));
            }
        }
    }
}

/// A simulated card served into a virtual reader by a `tessera card serve`
/// child process; the process is stopped by PID when the guard drops.
#[derive(Debug)]
pub struct ServedCard {
    child: Option<Child>,
    reader: String,
    card: PathBuf,
    log: PathBuf,
}

impl ServedCard {
    /// Runs `tessera card serve --card <card> --reader-index <reader>
    /// <extra…>` and waits (up to [`WAIT`]) until pcscd sees the card in
    /// the reader. The process's output goes to `<card>.serve.log`.
    ///
    /// # Panics
    /// When the process cannot start, exits, or the card does not appear.
    pub fn start(card: &Path, reader: usize, extra: &[&str]) -> Self {
        let served = Self::spawn(card, reader, extra);
        served.wait_present(WAIT);
        served
    }

    /// As [`ServedCard::start`] without waiting for the card.
    ///
    /// # Panics
    /// When the process cannot start.
    pub fn spawn(card: &Path, reader: usize, extra: &[&str]) -> Self {
        let mut log = card.as_os_str().to_owned();
        log.push(".serve.log");
        let log = PathBuf::from(log);
        let out = File::create(&log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let err = out.try_clone().unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let child = Command::new(tessera_bin())
            .args(["card", "serve", "--card"])
            .arg(card)
            .args(["--reader-index", &reader.to_string()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start tessera card serve: {e}"));
        lock_children().push(child.id());
        Self {
            child: Some(child),
            reader: reader_name(reader),
            card: card.to_owned(),
            log,
        }
    }

    /// The serving process's PID (0 once stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The reader's name.
    pub fn reader(&self) -> &str {
        &self.reader
    }

    /// The card image file.
    pub fn card_path(&self) -> &Path {
        &self.card
    }

    /// What the process printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `SIGUSR1`: the card leaves the field between two messages and
    /// comes back after the serve process's re-insertion delay (1 s).
    ///
    /// # Panics
    /// When the process is gone.
    pub fn remove_and_reinsert(&mut self) {
        self.assert_running();
        assert!(signal(self.pid(), "USR1"), "kill -USR1 {} failed", self.pid());
    }

    /// Panics, with the process's output, if it has exited.
    ///
    /// # Panics
    /// As said.
    pub fn assert_running(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("tessera card serve exited ({status}): {}", self.log());
            }
        }
    }

    /// Waits until pcscd sees the card in the reader.
    ///
    /// # Panics
    /// When it does not within `timeout` (with the process's output).
    pub fn wait_present(&self, timeout: Duration) {
        if let Err(e) = wait_for_card(&self.reader, true, timeout) {
            panic!("card not present in {:?}: {e}; serve log: {}", self.reader, self.log());
        }
    }

    /// Waits until pcscd sees the reader empty.
    ///
    /// # Errors
    /// Those of [`wait_for_card`] ([`PcscError::Timeout`] …).
    pub fn wait_absent(&self, timeout: Duration) -> Result<(), PcscError> {
        wait_for_card(&self.reader, false, timeout)
    }

    /// Stops the process (`SIGTERM`, then `SIGKILL` after [`STOP_GRACE`]),
    /// waits (up to [`WAIT`]) until pcscd shows the reader empty, so that
    /// the next card served there is not mistaken for this one, and returns
    /// the exit status (`None` if it was already stopped) and output.
    pub fn stop(&mut self) -> (Option<ExitStatus>, String) {
        let Some(mut child) = self.child.take() else {
            return (None, self.log());
        };
        let pid = child.id();
        let status = match child.try_wait() {
            Ok(Some(status)) => status,
            _ => {
                signal(pid, "TERM");
                wait_or_kill(&mut child, STOP_GRACE)
            }
        };
        lock_children().retain(|p| *p != pid);
        // pcscd notices the card's absence at its next poll (400 ms); a card
        // served next into this reader must not be mistaken for this one.
        if let Err(e) = wait_for_card(&self.reader, false, WAIT) {
            eprintln!(
                "{} still shows a card after its serve process stopped: {e}",
                self.reader
            );
        }
        (Some(status), self.log())
    }
}

impl Drop for ServedCard {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lock_children() -> MutexGuard<'static, Vec<u32>> {
    lock(&CHILDREN)
}

fn lock<T>(m: &'static Mutex<T>) -> MutexGuard<'static, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Aborts the whole test process if it is not dropped within its limit,
/// after stopping every `pcscd` started by [`Pcscd`] (by the PID files in
/// their directories) and killing every `tessera card serve` started by [`ServedCard`]: a
/// hanging test fails fast instead of eating the CI budget.
#[derive(Debug)]
pub struct Watchdog {
    _disarm: mpsc::Sender<()>,
}

impl Watchdog {
    /// Arms the watchdog for `limit`; `name` is printed when it fires.
    pub fn arm(name: &'static str, limit: Duration) -> Self {
        let (tx, rx) = mpsc::channel::<()>();
        thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                eprintln!("{name}: watchdog fired after {limit:?}; stopping pcscd and served cards");
                for pid in lock_children().drain(..) {
                    signal(pid, "KILL");
                }
                for dir in lock(&DAEMON_DIRS).iter() {
                    let _ = Command::new("bash")
                        .arg(scripts_dir().join("pcscd-down.sh"))
                        .args(["--timeout", "2", "--dir"])
                        .arg(dir)
                        .status();
                }
                std::process::abort();
            }
        });
        Self { _disarm: tx }
    }
}

/// The committed state of a card image file, read while it may be served
/// (the serving process replaces the file atomically after every change).
///
/// # Panics
/// When the file cannot be read or holds no valid card.
pub fn card_file_state(path: &Path) -> CardState {
    let eeprom = tessera_simulator::image::load(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    CardState::load(&eeprom).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
