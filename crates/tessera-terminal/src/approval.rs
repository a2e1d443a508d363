//! The office's referral approval code at the till
//! (`docs/terminal-policy.md`, "Referral approval codes").
//!
//! The clerk types the code the office read over the phone;
//! [`TillApproval::new`] checks its form and check character at once
//! (before any card is tapped), and the till checks it against the
//! presented card, the operation and the amount before the card is asked
//! to transact ([`crate::station::DirTill::set_approval`]). A code that
//! verifies lets the operation go ahead under
//! [`authorize_approved`](crate::policy::authorize_approved); a code that
//! does not is journaled as a decline (`C01`–`C08`) and the card is not
//! touched.

use tessera_crypto::referral::{CodeFormatError, ReferralCode, ReferralKey};
use tessera_crypto::Key;

pub use tessera_crypto::referral::ReferralKind;

/// Wrong codes (`C01`–`C05`) a till accepts within one hour; the next
/// code is refused (`C08`) until the oldest of them is an hour old. With
/// a 2⁻³² chance per forged code, a clerk trying codes around the clock
/// succeeds with a chance of about 1 in 98 000 a year.
pub const WRONG_CODES_PER_HOUR: u32 = 5;

/// A well-formed approval code and the till's referral key.
#[derive(Debug)]
pub struct TillApproval {
    pub(crate) code: ReferralCode,
    pub(crate) key: ReferralKey,
}

impl TillApproval {
    /// The code typed by the clerk, for the till whose batch key (from its
    /// bundle) and terminal id are given.
    ///
    /// # Errors
    /// [`CodeFormatError`]: not a code, or a mistyped character the check
    /// caught — ask for the code to be read again; nothing was done.
    pub fn new(text: &str, batch_key: &Key, terminal_id: u32) -> Result<Self, CodeFormatError> {
        Ok(Self {
            code: ReferralCode::parse(text)?,
            key: ReferralKey::derive(batch_key, terminal_id),
        })
    }

    /// The code, canonical (`XXXX-XXXX-XXXX-XXXX`).
    pub fn code(&self) -> String {
        self.code.to_string()
    }
}
