//! The Python ctypes smoke test (`examples/python/smoke.py`) against the
//! library cargo built for this test run.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::process::Command;

mod common;

#[test]
fn python_ctypes_smoke_test() {
    let lib = common::built_library();
    let work = tempfile::tempdir().unwrap();
    let out = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python/smoke.py"))
        .arg(&lib)
        .arg(work.path())
        .output()
        .unwrap_or_else(|e| panic!("python3 could not run ({e}): run scripts/install-deps.sh"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}");
    assert!(out.status.success(), "smoke.py failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed, 0 failed"), "{stdout}");
}
