//! Finding the C library for the tests that load it from outside Rust.

use std::path::PathBuf;
use std::process::Command;

/// Builds the cdylib and staticlib of this crate (`cargo test` builds only
/// the rlib) into the target directory of this test run, and returns the
/// path of `libtessera_ffi.so`.
pub fn built_library() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    // target/<profile>/deps/<test>-<hash>
    let profile_dir = exe.parent().and_then(|d| d.parent()).expect("target dir").to_owned();
    let target_dir = profile_dir.parent().expect("target dir").to_owned();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", "tessera-ffi", "--lib"])
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("cargo could not run");
    assert!(status.success(), "cargo build -p tessera-ffi failed");
    let lib = profile_dir.join("libtessera_ffi.so");
    assert!(lib.exists(), "{} missing after the build", lib.display());
    lib
}
