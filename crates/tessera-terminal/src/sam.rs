//! The secure access module: the terminal's key holder (spec §5.1).

use tessera_crypto::channel::SessionKeys;
use tessera_crypto::kdf::{diversify, labels};
use tessera_crypto::keys::TerminalKeys;
use tessera_crypto::sign::IssuerPublicKey;
use tessera_protocol::messages::{CardId, IssuerId};
use tessera_protocol::CHALLENGE_LEN;

use crate::TerminalError;

/// What a terminal needs from its key holder. A hardware module can
/// implement this; card keys never leave it, only session keys do.
pub trait Sam {
    /// Session keys for a card, from its id, key version and both
    /// challenges.
    ///
    /// # Errors
    /// [`TerminalError::UnknownKeyVersion`]; [`TerminalError::KeyModule`]
    /// when a hardware module fails.
    fn session_keys(
        &self,
        card_id: &CardId,
        key_version: u8,
        host_challenge: &[u8; CHALLENGE_LEN],
        card_challenge: &[u8; CHALLENGE_LEN],
    ) -> Result<SessionKeys, TerminalError>;

    /// The issuer public key that verifies profiles.
    fn issuer_public_key(&self) -> &IssuerPublicKey;

    /// The issuer whose cards this module opens.
    fn issuer_id(&self) -> IssuerId;

    /// Whether the module holds the authentication master of a key version.
    fn has_key_version(&self, key_version: u8) -> bool;
}

/// A boxed module is a module, so a till can hold whichever it was given
/// as `Box<dyn Sam>`.
impl<S: Sam + ?Sized> Sam for Box<S> {
    fn session_keys(
        &self,
        card_id: &CardId,
        key_version: u8,
        host_challenge: &[u8; CHALLENGE_LEN],
        card_challenge: &[u8; CHALLENGE_LEN],
    ) -> Result<SessionKeys, TerminalError> {
        (**self).session_keys(card_id, key_version, host_challenge, card_challenge)
    }

    fn issuer_public_key(&self) -> &IssuerPublicKey {
        (**self).issuer_public_key()
    }

    fn issuer_id(&self) -> IssuerId {
        (**self).issuer_id()
    }

    fn has_key_version(&self, key_version: u8) -> bool {
        (**self).has_key_version(key_version)
    }
}

/// A borrowed module is a module (several tills or benches sharing one).
impl<S: Sam + ?Sized> Sam for &S {
    fn session_keys(
        &self,
        card_id: &CardId,
        key_version: u8,
        host_challenge: &[u8; CHALLENGE_LEN],
        card_challenge: &[u8; CHALLENGE_LEN],
    ) -> Result<SessionKeys, TerminalError> {
        (**self).session_keys(card_id, key_version, host_challenge, card_challenge)
    }

    fn issuer_public_key(&self) -> &IssuerPublicKey {
        (**self).issuer_public_key()
    }

    fn issuer_id(&self) -> IssuerId {
        (**self).issuer_id()
    }

    fn has_key_version(&self, key_version: u8) -> bool {
        (**self).has_key_version(key_version)
    }
}

/// A software key store holding the terminal bundle.
pub struct SoftwareSam {
    keys: TerminalKeys,
}

impl SoftwareSam {
    /// A SAM over a terminal key bundle.
    pub fn new(keys: TerminalKeys) -> Self {
        Self { keys }
    }
}

impl Sam for SoftwareSam {
    fn session_keys(
        &self,
        card_id: &CardId,
        key_version: u8,
        host_challenge: &[u8; CHALLENGE_LEN],
        card_challenge: &[u8; CHALLENGE_LEN],
    ) -> Result<SessionKeys, TerminalError> {
        let master = self
            .keys
            .auth_masters
            .get(&key_version)
            .ok_or(TerminalError::UnknownKeyVersion(key_version))?;
        let k_auth = diversify(master, labels::CARD_AUTH, card_id, key_version);
        Ok(SessionKeys::derive(&k_auth, host_challenge, card_challenge))
    }

    fn issuer_public_key(&self) -> &IssuerPublicKey {
        &self.keys.issuer_public
    }

    fn issuer_id(&self) -> IssuerId {
        self.keys.issuer_id
    }

    fn has_key_version(&self, key_version: u8) -> bool {
        self.keys.auth_masters.contains_key(&key_version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_boxed_module_is_a_module() -> Result<(), tessera_crypto::CryptoError> {
        let keys = tessera_crypto::keys::IssuerKeys::test()?;
        let soft = SoftwareSam::new(keys.terminal_keys());
        let id = [0x7E, 0x57, 0, 0, 0, 0, 0, 1];
        let boxed: Box<dyn Sam> = Box::new(SoftwareSam::new(keys.terminal_keys()));
        assert!(boxed.has_key_version(1) && !boxed.has_key_version(9));
        assert_eq!(boxed.issuer_id(), soft.issuer_id());
        let a = boxed
            .session_keys(&id, 1, &[1; 8], &[2; 8])
            .map(|k| k.card_cryptogram());
        let b = <&SoftwareSam as Sam>::session_keys(&&soft, &id, 1, &[1; 8], &[2; 8]).map(|k| k.card_cryptogram());
        assert_eq!(a.ok(), b.ok());
        assert!(matches!(
            boxed.session_keys(&id, 9, &[1; 8], &[2; 8]),
            Err(TerminalError::UnknownKeyVersion(9))
        ));
        Ok(())
    }
}
