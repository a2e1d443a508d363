//! The C example (`examples/c/till.c`) compiled with the system C compiler
//! against the library cargo built for this test run, and run twice:
//! natively, and under valgrind with leak checking (any memory error or
//! leak fails the test). `scripts/install-deps.sh` installs gcc and
//! valgrind.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

fn lib_dir() -> PathBuf {
    common::built_library().parent().unwrap().to_owned()
}

fn compile(out: &Path) {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = lib_dir();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-g"])
        .arg("-I")
        .arg(crate_dir.join("include"))
        .arg(crate_dir.join("examples/c/till.c"))
        .arg("-L")
        .arg(&lib)
        .arg("-ltessera_ffi")
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-o")
        .arg(out)
        .status()
        .unwrap_or_else(|e| panic!("{cc} could not run ({e}): run scripts/install-deps.sh"));
    assert!(status.success(), "the C example did not compile");
}

fn run(prefix: &[&str], exe: &Path) {
    let work = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(prefix.first().map_or(exe.as_os_str(), |p| p.as_ref()));
    cmd.args(prefix.iter().skip(1))
        .args(prefix.first().map(|_| exe))
        .arg(work.path());
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{prefix:?} could not run ({e}): run scripts/install-deps.sh"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}");
    assert!(
        out.status.success(),
        "{prefix:?} the C example failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("1 passed, 0 failed"), "{stdout}");
}

#[test]
fn c_example_runs_natively_and_clean_under_valgrind() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("till");
    compile(&exe);
    run(&[], &exe);
    run(
        &[
            "valgrind",
            "-q",
            "--error-exitcode=1",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite,possible",
        ],
        &exe,
    );
}
