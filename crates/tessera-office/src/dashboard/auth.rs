//! Who may read the dashboard: office staff holding the staff token.
//!
//! * `tessera office dashboard-token --dir D` makes a fresh random token
//!   (32 bytes, printed once as 64 hex digits) and a fresh session key,
//!   and keeps them in [`STAFF_FILE`] (`0600`): the token only as its
//!   SHA-256, the session key as it is. A new token replaces the old one
//!   and ends every session made with it.
//! * `POST /dashboard/login` with the token (a form field `token`) checks
//!   its SHA-256 in constant time and answers a session cookie
//!   ([`SESSION_COOKIE`]: `HttpOnly; Secure; SameSite=Strict;
//!   Path=/dashboard/`, [`SESSION_SECS`] long), whose value is
//!   `v1.<expiry>.<nonce>.<HMAC-SHA256(session key, "tessera dashboard session v1" ‖ expiry ‖ nonce)>`,
//!   checked in constant time on every request.
//! * Wrong tokens are rate-limited ([`LoginLimiter`]): after
//!   [`MAX_FAILURES`] within [`FAILURE_WINDOW`], every login is answered
//!   `429` until the window has passed, the right token included.
//! * A terminal's batch key or any other credential opens nothing here:
//!   the session cookie is the only way in.

use std::path::Path;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The file in the office directory that holds the staff token's hash and
/// the session key (`0600`).
pub const STAFF_FILE: &str = "dashboard-staff.json";
/// The session cookie's name.
pub const SESSION_COOKIE: &str = "tessera_dashboard";
/// How long a session lasts: one working day.
pub const SESSION_SECS: u32 = 8 * 3600;
/// Wrong tokens accepted within [`FAILURE_WINDOW`] before logins are refused.
pub const MAX_FAILURES: usize = 5;
/// The window of [`MAX_FAILURES`].
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
const FORMAT: &str = "tessera-dashboard-staff-1";
const SESSION_CONTEXT: &[u8] = b"tessera dashboard session v1";

/// Errors reading or writing the staff file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StaffError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a staff file.
    #[error("{0} is damaged: make a new token with `tessera office dashboard-token`")]
    Damaged(std::path::PathBuf),
}

#[derive(Serialize, Deserialize)]
struct StaffFile {
    format: String,
    token_sha256: String,
    session_key: String,
    created: u32,
}

/// The staff credentials of one office: the token's hash and the session key.
#[derive(Clone)]
pub struct Staff {
    token_sha256: [u8; 32],
    session_key: zeroize::Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Staff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Staff(..)")
    }
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok().map(|()| out)
}

impl Staff {
    /// Makes a new staff token for the office in `dir` and writes
    /// [`STAFF_FILE`] there (`0600`, replacing any earlier one, which ends
    /// its sessions). Returns the token, to be shown once.
    ///
    /// # Errors
    /// [`StaffError::Io`].
    pub fn create(dir: &Path, now: u32) -> Result<String, StaffError> {
        let mut token = zeroize::Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(&mut *token);
        let mut key = zeroize::Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(&mut *key);
        let token_hex = hex::encode(*token);
        let file = StaffFile {
            format: FORMAT.into(),
            token_sha256: hex::encode(Sha256::digest(token_hex.as_bytes())),
            session_key: hex::encode(*key),
            created: now,
        };
        let path = dir.join(STAFF_FILE);
        let json = serde_json::to_vec_pretty(&file).map_err(|e| StaffError::Io {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        tessera_crypto::files::write_atomic(&path, &json).map_err(|source| StaffError::Io { path, source })?;
        Ok(token_hex)
    }

    /// The staff credentials of the office in `dir`; `None` when no token
    /// was made yet.
    ///
    /// # Errors
    /// [`StaffError::Io`], [`StaffError::Damaged`].
    pub fn load(dir: &Path) -> Result<Option<Staff>, StaffError> {
        let path = dir.join(STAFF_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StaffError::Io { path, source }),
        };
        let file: StaffFile = serde_json::from_slice(&bytes).map_err(|_| StaffError::Damaged(path.clone()))?;
        if file.format != FORMAT {
            return Err(StaffError::Damaged(path));
        }
        match (hex32(&file.token_sha256), hex32(&file.session_key)) {
            (Some(token_sha256), Some(key)) => Ok(Some(Staff {
                token_sha256,
                session_key: zeroize::Zeroizing::new(key),
            })),
            _ => Err(StaffError::Damaged(path)),
        }
    }

    /// Whether `token` is the staff token (constant time).
    pub fn token_matches(&self, token: &str) -> bool {
        let given: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        tessera_crypto::ct_eq(&given, &self.token_sha256)
    }

    fn mac(&self, expiry: u32, nonce: &[u8]) -> [u8; 32] {
        // HMAC takes a key of any length: this cannot fail.
        let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(&*self.session_key) {
            Ok(m) => m,
            Err(_) => return [0u8; 32],
        };
        mac.update(SESSION_CONTEXT);
        mac.update(&expiry.to_be_bytes());
        mac.update(nonce);
        mac.finalize().into_bytes().into()
    }

    /// A new session's cookie value, valid until `now + SESSION_SECS`.
    pub fn new_session(&self, now: u32) -> String {
        let expiry = now.saturating_add(SESSION_SECS);
        let mut nonce = [0u8; 16];
        OsRng.fill_bytes(&mut nonce);
        format!(
            "v1.{expiry}.{}.{}",
            hex::encode(nonce),
            hex::encode(self.mac(expiry, &nonce))
        )
    }

    /// Whether a cookie value is a session of this office that has not
    /// expired at `now` (its MAC compared in constant time).
    pub fn session_valid(&self, value: &str, now: u32) -> bool {
        let mut parts = value.split('.');
        let (Some("v1"), Some(expiry), Some(nonce), Some(mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let Ok(expiry) = expiry.parse::<u32>() else {
            return false;
        };
        let mut n = [0u8; 16];
        let mut m = [0u8; 32];
        if hex::decode_to_slice(nonce, &mut n).is_err() || hex::decode_to_slice(mac, &mut m).is_err() {
            return false;
        }
        let good = tessera_crypto::ct_eq(&self.mac(expiry, &n), &m);
        good && now < expiry && expiry <= now.saturating_add(SESSION_SECS)
    }
}

/// The `Set-Cookie` value of a new session.
pub fn session_cookie(value: &str) -> String {
    format!("{SESSION_COOKIE}={value}; Path=/dashboard/; Max-Age={SESSION_SECS}; HttpOnly; Secure; SameSite=Strict")
}

/// The `Set-Cookie` value that ends a session.
pub fn cleared_cookie() -> String {
    format!("{SESSION_COOKIE}=; Path=/dashboard/; Max-Age=0; HttpOnly; Secure; SameSite=Strict")
}

/// The session cookie's value in a `Cookie` request header, if any.
pub fn session_from_cookies(header: &str) -> Option<&str> {
    header.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        (name == SESSION_COOKIE).then_some(value)
    })
}

/// Counts wrong tokens: after [`MAX_FAILURES`] within [`FAILURE_WINDOW`],
/// logins are refused until the oldest of them has left the window.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    failures: std::collections::VecDeque<Instant>,
}

impl LoginLimiter {
    /// `Err(seconds to wait)` while logins are refused at `now`.
    ///
    /// # Errors
    /// The seconds until the next login is heard.
    pub fn check(&mut self, now: Instant) -> Result<(), u64> {
        while self
            .failures
            .front()
            .is_some_and(|t| now.duration_since(*t) >= FAILURE_WINDOW)
        {
            self.failures.pop_front();
        }
        match self.failures.front() {
            Some(oldest) if self.failures.len() >= MAX_FAILURES => {
                Err((FAILURE_WINDOW - now.duration_since(*oldest)).as_secs().max(1))
            }
            _ => Ok(()),
        }
    }

    /// Records a wrong token at `now`.
    pub fn failed(&mut self, now: Instant) {
        self.failures.push_back(now);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn dashboard_token_is_stored_hashed_and_private() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Staff::load(dir.path()).unwrap().is_none());
        let token = Staff::create(dir.path(), 1000).unwrap();
        assert_eq!(token.len(), 64);
        let text = std::fs::read_to_string(dir.path().join(STAFF_FILE)).unwrap();
        assert!(!text.contains(&token), "the token itself is not stored");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(STAFF_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let staff = Staff::load(dir.path()).unwrap().unwrap();
        assert!(staff.token_matches(&token));
        assert!(!staff.token_matches(&token[..63]));
        assert!(!staff.token_matches(""));
        // A new token ends the old one and its sessions.
        let session = staff.new_session(1000);
        assert!(staff.session_valid(&session, 1001));
        Staff::create(dir.path(), 1002).unwrap();
        let renewed = Staff::load(dir.path()).unwrap().unwrap();
        assert!(!renewed.token_matches(&token));
        assert!(!renewed.session_valid(&session, 1003));
        std::fs::write(dir.path().join(STAFF_FILE), "{}").unwrap();
        assert!(matches!(Staff::load(dir.path()), Err(StaffError::Damaged(_))));
    }

    #[test]
    fn dashboard_sessions_expire_and_cannot_be_forged() {
        let dir = tempfile::tempdir().unwrap();
        Staff::create(dir.path(), 0).unwrap();
        let staff = Staff::load(dir.path()).unwrap().unwrap();
        let s = staff.new_session(1000);
        assert!(staff.session_valid(&s, 1000));
        assert!(!staff.session_valid(&s, 1000 + SESSION_SECS), "expired");
        // A longer expiry with the same MAC does not verify.
        let parts: Vec<&str> = s.split('.').collect();
        let longer = format!("v1.{}.{}.{}", 1000 + 2 * SESSION_SECS, parts[2], parts[3]);
        assert!(!staff.session_valid(&longer, 1001));
        let mut flipped = s.clone();
        let last = flipped.pop().unwrap();
        flipped.push(if last == '0' { '1' } else { '0' });
        assert!(!staff.session_valid(&flipped, 1001));
        for junk in ["", "v1", "v1.x.y.z", "v2.1.2.3", &format!("{s}.extra")] {
            assert!(!staff.session_valid(junk, 1001), "{junk}");
        }
        assert_eq!(
            session_from_cookies(&format!("a=b; {SESSION_COOKIE}={s}; c=d")),
            Some(s.as_str())
        );
        assert!(session_cookie(&s).contains("HttpOnly; Secure; SameSite=Strict"));
    }

    #[test]
    fn dashboard_wrong_tokens_are_rate_limited() {
        let mut l = LoginLimiter::default();
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES {
            assert!(l.check(t0).is_ok());
            l.failed(t0);
        }
        assert!(l.check(t0 + Duration::from_secs(1)).is_err());
        assert!(l.check(t0 + FAILURE_WINDOW).is_ok());
    }
}
