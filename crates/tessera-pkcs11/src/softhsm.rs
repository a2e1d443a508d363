//! A private SoftHSM2 token for tests, benchmarks and trials: the same
//! steps as `scripts/softhsm-init.sh`.
//!
//! SoftHSM2 finds its tokens through the configuration file named by
//! `SOFTHSM2_CONF`, read when the module is initialized. Each token made
//! here gets its own configuration and token directory, so processes using
//! different tokens never see each other's. A process initializes the
//! module once, so one process works with one such configuration: set
//! `SOFTHSM2_CONF` (see [`SoftHsmToken::conf`]) before the first use of
//! the module, or in the environment of a child process.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where Debian and other distributions install the SoftHSM2 module.
pub const MODULE_CANDIDATES: &[&str] = &[
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
];

/// Why a SoftHSM2 token could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SoftHsmError {
    /// SoftHSM2 is not installed.
    #[error("SoftHSM2 is not installed ({0} not found): run scripts/install-deps.sh (Debian package softhsm2)")]
    NotInstalled(String),
    /// `softhsm2-util --init-token` failed.
    #[error("softhsm2-util --init-token failed ({status}): {stderr}")]
    InitFailed {
        /// Its exit status.
        status: String,
        /// What it printed on standard error.
        stderr: String,
    },
    /// The configuration or token directory could not be written.
    #[error("SoftHSM2 token directory: {0}")]
    Io(#[from] std::io::Error),
}

/// The SoftHSM2 module: `$SOFTHSM2_MODULE` if set, else the first of
/// [`MODULE_CANDIDATES`] that exists.
///
/// # Errors
/// [`SoftHsmError::NotInstalled`].
pub fn module_path() -> Result<PathBuf, SoftHsmError> {
    if let Some(p) = std::env::var_os("SOFTHSM2_MODULE").map(PathBuf::from) {
        if p.is_file() {
            return Ok(p);
        }
    }
    MODULE_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| SoftHsmError::NotInstalled("libsofthsm2.so".into()))
}

/// A SoftHSM2 token of its own, in a directory of its own.
#[derive(Debug, Clone)]
pub struct SoftHsmToken {
    /// The configuration file: give it to the module's users as
    /// `SOFTHSM2_CONF`.
    pub conf: PathBuf,
    /// The module.
    pub module: PathBuf,
    /// The token's label.
    pub label: String,
    /// The user PIN.
    pub user_pin: String,
    /// The security officer's PIN.
    pub so_pin: String,
}

impl SoftHsmToken {
    /// Writes `dir/softhsm2.conf` with token directory `dir/tokens` and
    /// initializes a token there with `softhsm2-util --init-token --free`.
    ///
    /// # Errors
    /// [`SoftHsmError::NotInstalled`] without the module or
    /// `softhsm2-util`; [`SoftHsmError::InitFailed`]; [`SoftHsmError::Io`].
    pub fn create(dir: &Path, label: &str, so_pin: &str, user_pin: &str) -> Result<Self, SoftHsmError> {
        let module = module_path()?;
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens)?;
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                tokens.display()
            ),
        )?;
        let out = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &conf)
            .args([
                "--init-token",
                "--free",
                "--label",
                label,
                "--so-pin",
                so_pin,
                "--pin",
                user_pin,
            ])
            .output()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => SoftHsmError::NotInstalled("softhsm2-util".into()),
                _ => SoftHsmError::Io(e),
            })?;
        if !out.status.success() {
            return Err(SoftHsmError::InitFailed {
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(Self {
            conf,
            module,
            label: label.to_owned(),
            user_pin: user_pin.to_owned(),
            so_pin: so_pin.to_owned(),
        })
    }
}
