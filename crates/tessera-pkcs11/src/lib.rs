//! A terminal key module (SAM, spec §5.1) whose authentication masters live
//! in a PKCS#11 token.
//!
//! The masters (one per key version) are AES-128 secret keys in the token,
//! sensitive and not extractable, labelled `tessera-auth-master-v<N>` with
//! `CKA_ID` = the key version ([`master_label`]). A card's authentication
//! key is derived inside the token: the SP 800-108 counter-mode KDF of spec
//! §5.2 produces a 128-bit key in one block, which is exactly one
//! `CKM_AES_CMAC` over the fixed input `[1]8 ‖ "tessera card auth" ‖ 00 ‖
//! card id ‖ [key version]8 ‖ [128]16` ([`card_key_input`]). Only that
//! card key comes out of the token; the session keys are then derived in
//! software ([`SessionKeys::derive`](tessera_crypto::channel::SessionKeys::derive))
//! and the card key is wiped.
//!
//! * [`Pkcs11Sam`] implements [`tessera_terminal::Sam`] for a till;
//! * [`provision`] loads an office's masters into a token and makes the
//!   terminal bundle that names the token instead of carrying them;
//! * [`Pin`] reads the user PIN from a file or `TESSERA_PKCS11_PIN`, never
//!   from the command line;
//! * [`softhsm`] makes a private SoftHSM2 token for tests and trials.
//!
//! A process loads each PKCS#11 module once ([`cryptoki::context::Pkcs11`]
//! is initialized once per module path and shared), as the PKCS#11 standard
//! asks of an application.

mod provision;
mod sam;
pub mod softhsm;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use tessera_crypto::kdf::labels;
use tessera_protocol::messages::CardId;
use zeroize::Zeroizing;

pub use provision::{provision, Provisioned};
pub use sam::Pkcs11Sam;

/// The environment variable holding the token's user PIN when no PIN file
/// is given.
pub const PIN_ENV: &str = "TESSERA_PKCS11_PIN";

/// The label of the authentication master of a key version in the token.
pub fn master_label(key_version: u8) -> String {
    format!("tessera-auth-master-v{key_version}")
}

/// The SP 800-108 input whose AES-CMAC under the authentication master is
/// the card's authentication key: counter 1, label, separator, context
/// (card id ‖ key version), and the output length in bits, as
/// [`tessera_crypto::kdf::derive`] lays it out (spec §5.2). One block is
/// enough for a 128-bit key, so the KDF is exactly this one MAC.
pub fn card_key_input(card_id: &CardId, key_version: u8) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + labels::CARD_AUTH.len() + 1 + 9 + 2);
    v.push(0x01);
    v.extend_from_slice(labels::CARD_AUTH);
    v.push(0x00);
    v.extend_from_slice(card_id);
    v.push(key_version);
    v.extend_from_slice(&128u16.to_be_bytes());
    v
}

/// Errors of this crate, each saying what the caller should do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Pkcs11Error {
    /// The PKCS#11 module (a shared library) could not be loaded.
    #[error("PKCS#11 module {path} could not be loaded ({reason}): check the path given with --pkcs11-module and that the vendor's library is installed")]
    ModuleNotLoaded {
        /// The module path.
        path: PathBuf,
        /// Why the loader refused it.
        reason: String,
    },
    /// No initialized token has this label.
    #[error("no PKCS#11 token labelled {label:?} (tokens present: {}): check --token-label and that the token is inserted", if .present.is_empty() { "none".to_owned() } else { .present.join(", ") })]
    TokenNotFound {
        /// The label asked for.
        label: String,
        /// Labels of the initialized tokens that are present.
        present: Vec<String>,
    },
    /// No PIN was given.
    #[error("no PIN for the PKCS#11 token: give --pin-file FILE or set {PIN_ENV}")]
    PinMissing,
    /// The PIN file could not be read.
    #[error("PIN file {path}: {source}")]
    PinFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The token refused the PIN.
    #[error("the PKCS#11 token {label:?} refused the PIN: check the PIN (repeated failures lock the token)")]
    WrongPin {
        /// The token's label.
        label: String,
    },
    /// The token's user PIN is locked (too many wrong PINs) or was never set.
    #[error(
        "the user PIN of PKCS#11 token {label:?} is locked or not initialized: the security officer must reset it"
    )]
    PinLocked {
        /// The token's label.
        label: String,
    },
    /// The token lacks the master of a key version the bundle needs.
    #[error("PKCS#11 token {label:?} holds no authentication master for key version {key_version}: provision it again with `tessera office export-terminal --pkcs11-module …`")]
    MissingMaster {
        /// The token's label.
        label: String,
        /// The key version.
        key_version: u8,
    },
    /// A master in the token could be read out, or is not a signing AES
    /// key: it is refused rather than used.
    #[error("the authentication master of key version {key_version} in PKCS#11 token {label:?} is not a sensitive, non-extractable AES signing key: remove it and provision the token again")]
    UnsafeMaster {
        /// The token's label.
        label: String,
        /// The key version.
        key_version: u8,
    },
    /// Two objects in the token claim the master of one key version.
    #[error(
        "PKCS#11 token {label:?} holds two authentication masters for key version {key_version}: remove the wrong one"
    )]
    DuplicateMaster {
        /// The token's label.
        label: String,
        /// The key version.
        key_version: u8,
    },
    /// The token already holds a different master under this key version's
    /// label: provisioning it would leave the till with the wrong key.
    #[error("PKCS#11 token {label:?} already holds a different authentication master for key version {key_version}: use a fresh token, or remove that key first")]
    MasterConflict {
        /// The token's label.
        label: String,
        /// The key version.
        key_version: u8,
    },
    /// The token does not offer AES-CMAC signing.
    #[error("PKCS#11 token {label:?} cannot compute CKM_AES_CMAC: use a token that supports it")]
    NoCmac {
        /// The token's label.
        label: String,
    },
    /// The bundle does not keep its masters in a token.
    #[error(
        "this bundle carries its masters itself: use it without --pkcs11-module, or export one with --pkcs11-module"
    )]
    NotATokenBundle,
    /// A PKCS#11 call failed.
    #[error("PKCS#11 token {label:?}: {source}")]
    Token {
        /// The token's label (empty before a token was chosen).
        label: String,
        /// The module's error.
        #[source]
        source: CkError,
    },
}

/// A token's user PIN, wiped from memory on drop.
pub struct Pin(Zeroizing<String>);

impl Pin {
    /// A PIN given directly (tests, or a caller that read it itself).
    pub fn new(pin: impl Into<String>) -> Self {
        Self(Zeroizing::new(pin.into()))
    }

    /// The PIN from `file` (first line, surrounding whitespace removed),
    /// else from [`PIN_ENV`].
    ///
    /// # Errors
    /// [`Pkcs11Error::PinFile`] when the file cannot be read,
    /// [`Pkcs11Error::PinMissing`] when neither gives a PIN.
    pub fn from_file_or_env(file: Option<&Path>) -> Result<Self, Pkcs11Error> {
        if let Some(path) = file {
            let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|source| Pkcs11Error::PinFile {
                path: path.to_owned(),
                source,
            })?);
            let pin = text.lines().next().unwrap_or_default().trim();
            if pin.is_empty() {
                return Err(Pkcs11Error::PinMissing);
            }
            return Ok(Self::new(pin));
        }
        match std::env::var(PIN_ENV) {
            Ok(v) if !v.trim().is_empty() => Ok(Self::new(Zeroizing::new(v).trim())),
            _ => Err(Pkcs11Error::PinMissing),
        }
    }

    fn auth(&self) -> AuthPin {
        AuthPin::from(self.0.as_str())
    }
}

impl core::fmt::Debug for Pin {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Pin(..)")
    }
}

/// Which token to use: the module, the token's label and its user PIN.
#[derive(Debug)]
pub struct TokenConfig {
    /// Path of the PKCS#11 module (shared library), e.g.
    /// `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    /// The token's label.
    pub token_label: String,
    /// The user PIN.
    pub pin: Pin,
}

/// The process's contexts, one per module path: PKCS#11 allows a module to
/// be initialized once per process, and a finalize would end every other
/// user's sessions, so they are kept until the process ends.
fn context(module: &Path) -> Result<Pkcs11, Pkcs11Error> {
    static CONTEXTS: OnceLock<Mutex<Vec<(PathBuf, Pkcs11)>>> = OnceLock::new();
    let mut all = CONTEXTS
        .get_or_init(|| Mutex::new(Vec::new()))
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some((_, ctx)) = all.iter().find(|(p, _)| p == module) {
        return Ok(ctx.clone());
    }
    let not_loaded = |reason: String| Pkcs11Error::ModuleNotLoaded {
        path: module.to_owned(),
        reason,
    };
    if !module.is_file() {
        return Err(not_loaded("no such file".into()));
    }
    let ctx = Pkcs11::new(module).map_err(|e| not_loaded(e.to_string()))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(not_loaded(e.to_string())),
    }
    all.push((module.to_owned(), ctx.clone()));
    Ok(ctx)
}

fn token_err(label: &str) -> impl Fn(CkError) -> Pkcs11Error + '_ {
    move |source| Pkcs11Error::Token {
        label: label.to_owned(),
        source,
    }
}

/// The slot of the initialized token labelled `label`.
fn find_slot(ctx: &Pkcs11, label: &str) -> Result<Slot, Pkcs11Error> {
    let mut present = Vec::new();
    for slot in ctx.get_slots_with_initialized_token().map_err(token_err(""))? {
        let info = ctx.get_token_info(slot).map_err(token_err(""))?;
        let l = info.label().trim_end().to_owned();
        if l == label {
            return Ok(slot);
        }
        present.push(l);
    }
    Err(Pkcs11Error::TokenNotFound {
        label: label.to_owned(),
        present,
    })
}

/// Opens a session on the token and logs the user in.
fn open_session(token: &TokenConfig, read_write: bool) -> Result<Session, Pkcs11Error> {
    let ctx = context(&token.module)?;
    let label = token.token_label.as_str();
    let slot = find_slot(&ctx, label)?;
    let mechanisms = ctx.get_mechanism_list(slot).map_err(token_err(label))?;
    if !mechanisms.contains(&cryptoki::mechanism::MechanismType::AES_CMAC) {
        return Err(Pkcs11Error::NoCmac { label: label.into() });
    }
    let session = if read_write {
        ctx.open_rw_session(slot)
    } else {
        ctx.open_ro_session(slot)
    }
    .map_err(token_err(label))?;
    match session.login(UserType::User, Some(&token.pin.auth())) {
        // Another session of this process logged the user in already.
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
        Err(CkError::Pkcs11(RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange, _)) => {
            Err(Pkcs11Error::WrongPin { label: label.into() })
        }
        Err(CkError::Pkcs11(RvError::PinLocked | RvError::UserPinNotInitialized, _)) => {
            Err(Pkcs11Error::PinLocked { label: label.into() })
        }
        Err(e) => Err(token_err(label)(e)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tessera_crypto::{cmac, Key};

    /// The one-MAC form is the KDF of spec §5.2, byte for byte.
    #[test]
    fn one_cmac_over_the_fixed_input_is_the_card_key() {
        for (id, kv) in [([0x7E, 0x57, 0, 0, 0, 0, 0, 1], 1u8), ([0xA5; 8], 2), ([0; 8], 255)] {
            let master = Key::new([kv; 16]);
            let want = tessera_crypto::kdf::diversify(&master, labels::CARD_AUTH, &id, kv);
            assert_eq!(&cmac(&master, &card_key_input(&id, kv)), want.bytes());
        }
    }

    #[test]
    fn the_pin_comes_from_a_file_first_line() {
        let dir = std::env::temp_dir().join(format!("tessera-pin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pin");
        std::fs::write(&f, "  4321 \nignored\n").unwrap();
        assert_eq!(Pin::from_file_or_env(Some(&f)).unwrap().0.as_str(), "4321");
        std::fs::write(&f, "\n").unwrap();
        assert!(matches!(Pin::from_file_or_env(Some(&f)), Err(Pkcs11Error::PinMissing)));
        assert!(matches!(
            Pin::from_file_or_env(Some(&dir.join("none"))),
            Err(Pkcs11Error::PinFile { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(format!("{:?}", Pin::new("1234")), "Pin(..)");
    }

    #[test]
    fn a_missing_module_is_a_typed_error() {
        let e = context(Path::new("/nonexistent/libnothing.so")).err().unwrap();
        assert!(matches!(e, Pkcs11Error::ModuleNotLoaded { .. }), "{e}");
        assert!(e.to_string().contains("--pkcs11-module"));
    }
}
