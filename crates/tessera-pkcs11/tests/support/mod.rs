//! Each test on its own SoftHSM2 token, in its own process.
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` once, when a process first initializes
//! it, so tests that share a process would share one token directory. So a
//! test re-runs itself as a child process of this test binary (only that
//! test, `--exact`), with `SOFTHSM2_CONF` naming a configuration and token
//! directory made for it alone: tests run in parallel without seeing each
//! other's tokens. SoftHSM2 missing is a failure, not a skip.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

use tessera_pkcs11::softhsm::SoftHsmToken;
use tessera_pkcs11::{Pin, TokenConfig};

/// The variable that tells a child which token directory is its own.
const CHILD: &str = "TESSERA_PKCS11_TEST_TOKEN_DIR";
pub const LABEL: &str = "tessera-test-till";
pub const SO_PIN: &str = "87654321";
pub const USER_PIN: &str = "123456";

/// Runs `body` with a fresh token of its own. `test` is the test's name as
/// the harness knows it (the function name in these files).
pub fn with_token(test: &str, body: impl FnOnce(&SoftHsmToken)) {
    if let Some(dir) = std::env::var_os(CHILD) {
        let dir = PathBuf::from(dir);
        let token = SoftHsmToken {
            conf: dir.join("softhsm2.conf"),
            module: tessera_pkcs11::softhsm::module_path().expect("SoftHSM2 module"),
            label: LABEL.into(),
            user_pin: USER_PIN.into(),
            so_pin: SO_PIN.into(),
        };
        assert_eq!(
            std::env::var_os("SOFTHSM2_CONF").map(PathBuf::from),
            Some(token.conf.clone())
        );
        body(&token);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let token = SoftHsmToken::create(dir.path(), LABEL, SO_PIN, USER_PIN)
        .unwrap_or_else(|e| panic!("SoftHSM2 is needed for this test: {e}"));
    let out = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, dir.path())
        .env("SOFTHSM2_CONF", &token.conf)
        .env_remove(tessera_pkcs11::PIN_ENV)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{test} on its own token failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("1 passed"),
        "{test}: the child ran no test (wrong name?):\n{stdout}"
    );
    eprint!("{stderr}");
}

/// The token's configuration for the library.
pub fn config(token: &SoftHsmToken) -> TokenConfig {
    TokenConfig {
        module: token.module.clone(),
        token_label: token.label.clone(),
        pin: Pin::new(token.user_pin.clone()),
    }
}
