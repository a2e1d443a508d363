//! A private PostgreSQL cluster for tests, benchmarks and trials: the
//! workspace's `scripts/pg-up.sh` (Debian's postgresql installed when
//! missing, `initdb` as an unprivileged user, a free loopback port, a
//! directory of its own) and `scripts/pg-down.sh` (stopped by the PID it
//! recorded), wrapped so that a dropped [`Cluster`] is stopped and removed.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::PgError;

/// The workspace's scripts directory (where `pg-up.sh` is).
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts")
}

/// A running private cluster; stopped, and its data removed, when dropped.
pub struct Cluster {
    dir: tempfile::TempDir,
    url: String,
}

fn script(name: &str, args: &[&str]) -> Result<String, PgError> {
    let out = Command::new("bash")
        .arg(scripts_dir().join(name))
        .args(args)
        .output()
        .map_err(|e| PgError::Copy(format!("{name}: {e}")))?;
    if !out.status.success() {
        return Err(PgError::Copy(format!(
            "{name} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

impl Cluster {
    /// Starts one in a new temporary directory.
    ///
    /// # Errors
    /// [`PgError::Copy`] with the script's message when it cannot start.
    pub fn start() -> Result<Self, PgError> {
        let dir = tempfile::tempdir().map_err(|e| PgError::Copy(e.to_string()))?;
        let url = script("pg-up.sh", &["--dir", &dir.path().display().to_string()])?;
        Ok(Self { dir, url })
    }

    /// Its URL (the `tessera` database).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Its directory (data, log, PID).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A new, empty database `name` (letters, digits, `_`) and its URL.
    ///
    /// # Errors
    /// [`PgError`] when the server refuses.
    pub fn database(&self, name: &str) -> Result<String, PgError> {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(PgError::Copy(format!("{name:?} is not a database name")));
        }
        let mut admin = postgres::Client::connect(&self.url, postgres::NoTls)?;
        admin.batch_execute(&format!("CREATE DATABASE {name}"))?;
        let base = self.url.rsplit_once('/').map_or(self.url.as_str(), |(b, _)| b);
        Ok(format!("{base}/{name}"))
    }

    /// Stops the server as a crash would (immediate shutdown), then starts
    /// it again on the same data and port: recovery from the WAL.
    ///
    /// # Errors
    /// [`PgError::Copy`] with the script's message.
    pub fn crash_and_restart(&self) -> Result<(), PgError> {
        self.crash()?;
        std::thread::sleep(std::time::Duration::from_millis(300));
        self.restart()
    }

    /// Stops the server as a crash would (immediate shutdown: no
    /// checkpoint, connections cut); [`Cluster::restart`] starts it again.
    ///
    /// # Errors
    /// [`PgError::Copy`] with the script's message.
    pub fn crash(&self) -> Result<(), PgError> {
        script(
            "pg-down.sh",
            &["--dir", &self.dir.path().display().to_string(), "--crash"],
        )?;
        Ok(())
    }

    /// Starts the stopped server again on the same data and port
    /// (recovery from the WAL after [`Cluster::crash`]).
    ///
    /// # Errors
    /// [`PgError::Copy`] with the script's message.
    pub fn restart(&self) -> Result<(), PgError> {
        script(
            "pg-up.sh",
            &["--dir", &self.dir.path().display().to_string(), "--restart"],
        )?;
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = script("pg-down.sh", &["--dir", &self.dir.path().display().to_string()]);
    }
}
