//! The private PostgreSQL cluster of the test scripts (the scale-out
//! issue's harness, `docs/scale.md`): `scripts/pg-up.sh` installs Debian's
//! postgresql when missing, runs `initdb` as an unprivileged user in its
//! own directory, starts the server on a free loopback port and prints its
//! URL; `scripts/pg-down.sh` stops it by the PID it recorded. Two clusters
//! run side by side on different ports; after `pg-down.sh` neither the
//! process nor the port is left.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts").join(name)
}

fn up(dir: &Path) -> String {
    let out = Command::new("bash")
        .arg(script("pg-up.sh"))
        .args(["--dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pg-up.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn down(dir: &Path) {
    let out = Command::new("bash")
        .arg(script("pg-down.sh"))
        .args(["--dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn psql(url: &str, sql: &str) -> Result<String, String> {
    let out = Command::new("psql")
        .args([url, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn alive(pid: &str) -> bool {
    Path::new("/proc").join(pid).exists()
}

#[test]
fn private_clusters_start_on_free_ports_as_an_unprivileged_user_and_stop_by_pid() {
    let work = tempfile::tempdir().unwrap();
    let (a, b) = (work.path().join("a"), work.path().join("b"));
    let url_a = up(&a);
    let url_b = up(&b);
    assert!(url_a.starts_with("postgres://tessera@127.0.0.1:"), "{url_a}");
    assert_ne!(url_a, url_b, "each cluster on its own port");
    assert_eq!(std::fs::read_to_string(a.join("url")).unwrap().trim(), url_a);
    // The server runs, and not as root.
    assert_eq!(psql(&url_a, "SELECT 1").unwrap(), "1");
    let data = psql(&url_b, "SELECT current_setting('data_directory')").unwrap();
    assert_eq!(
        Path::new(&data),
        b.canonicalize().unwrap().join("data"),
        "its own data directory"
    );
    let pid = std::fs::read_to_string(a.join("postgres.pid"))
        .unwrap()
        .trim()
        .to_owned();
    assert!(alive(&pid));
    let status = std::fs::read_to_string(Path::new("/proc").join(&pid).join("status")).unwrap();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|u| u.split_whitespace().next())
        .unwrap()
        .to_owned();
    assert_ne!(uid, "0", "PostgreSQL does not run as root");
    // A transaction on one does not show on the other.
    psql(&url_a, "CREATE TABLE t (x int); INSERT INTO t VALUES (7)").unwrap();
    assert!(psql(&url_b, "SELECT x FROM t").is_err());
    down(&a);
    assert!(!alive(&pid), "stopped by its PID");
    assert!(psql(&url_a, "SELECT 1").is_err(), "nothing listens any more");
    assert!(!a.join("data").exists());
    assert_eq!(psql(&url_b, "SELECT 2").unwrap(), "2", "the other still runs");
    down(&b);
    // Stopping what is already stopped is no error.
    down(&b);
}
