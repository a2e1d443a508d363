//! The till's key module over a PKCS#11 token.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use tessera_crypto::channel::SessionKeys;
use tessera_crypto::keys::TerminalBundle;
use tessera_crypto::sign::IssuerPublicKey;
use tessera_crypto::Key;
use tessera_protocol::messages::{CardId, IssuerId};
use tessera_protocol::CHALLENGE_LEN;
use tessera_terminal::{Sam, TerminalError};
use zeroize::{Zeroize, Zeroizing};

use crate::{card_key_input, open_session, token_err, Pin, Pkcs11Error, TokenConfig};

const LABEL_PREFIX: &str = "tessera-auth-master-v";

/// A key module whose authentication masters stay in a PKCS#11 token.
///
/// One session is opened and logged in when the module is opened and used
/// for every card (behind a mutex: the [`Sam`] methods take `&self`). The
/// issuer id and public key are public data from the till's bundle.
///
/// The session is not reopened behind the caller's back (that would mean
/// keeping the PIN): if the token is removed or the session closes,
/// [`Sam::session_keys`] fails with [`TerminalError::KeyModule`] and
/// nothing is sent to the card; open the module again.
pub struct Pkcs11Sam {
    session: Mutex<Session>,
    masters: BTreeMap<u8, ObjectHandle>,
    token_label: String,
    issuer_id: IssuerId,
    issuer_public: IssuerPublicKey,
}

impl core::fmt::Debug for Pkcs11Sam {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Pkcs11Sam")
            .field("token_label", &self.token_label)
            .field("key_versions", &self.key_versions())
            .finish_non_exhaustive()
    }
}

impl Pkcs11Sam {
    /// Opens the token named by a bundle made by [`crate::provision`]
    /// (`bundle.token`), with the given module and PIN, and checks that the
    /// token holds a master for every key version the bundle lists.
    ///
    /// # Errors
    /// [`Pkcs11Error::NotATokenBundle`] for a bundle that carries its
    /// masters; those of [`Pkcs11Sam::open`];
    /// [`Pkcs11Error::MissingMaster`] for a listed key version the token
    /// lacks.
    pub fn from_bundle(bundle: &TerminalBundle, module: &std::path::Path, pin: Pin) -> Result<Self, Pkcs11Error> {
        Self::from_bundle_labelled(bundle, module, None, pin)
    }

    /// As [`Pkcs11Sam::from_bundle`], in the token labelled `label` when
    /// given (a token relabelled or replaced at the till) instead of the
    /// one the bundle names.
    ///
    /// # Errors
    /// As [`Pkcs11Sam::from_bundle`].
    pub fn from_bundle_labelled(
        bundle: &TerminalBundle,
        module: &std::path::Path,
        label: Option<&str>,
        pin: Pin,
    ) -> Result<Self, Pkcs11Error> {
        let token = bundle.token.as_ref().ok_or(Pkcs11Error::NotATokenBundle)?;
        let sam = Self::open(
            &TokenConfig {
                module: module.to_owned(),
                token_label: label.map_or_else(|| token.token_label.clone(), str::to_owned),
                pin,
            },
            bundle.keys.issuer_id,
            bundle.keys.issuer_public.clone(),
        )?;
        if let Some(&key_version) = token.key_versions.iter().find(|v| !sam.masters.contains_key(v)) {
            return Err(Pkcs11Error::MissingMaster {
                label: sam.token_label.clone(),
                key_version,
            });
        }
        Ok(sam)
    }

    /// Opens the token, logs in, and finds its authentication masters.
    ///
    /// # Errors
    /// [`Pkcs11Error::ModuleNotLoaded`], [`Pkcs11Error::TokenNotFound`],
    /// [`Pkcs11Error::WrongPin`], [`Pkcs11Error::PinLocked`];
    /// [`Pkcs11Error::UnsafeMaster`] for a master that is extractable, not
    /// sensitive or not a signing AES key; [`Pkcs11Error::DuplicateMaster`];
    /// [`Pkcs11Error::NoCmac`]; [`Pkcs11Error::Token`] for any other
    /// failure of the module.
    pub fn open(token: &TokenConfig, issuer_id: IssuerId, issuer_public: IssuerPublicKey) -> Result<Self, Pkcs11Error> {
        let session = open_session(token, false)?;
        let label = token.token_label.clone();
        let masters = find_masters(&session, &label)?;
        Ok(Self {
            session: Mutex::new(session),
            masters,
            token_label: label,
            issuer_id,
            issuer_public,
        })
    }

    /// The key versions whose masters the token holds.
    pub fn key_versions(&self) -> Vec<u8> {
        self.masters.keys().copied().collect()
    }

    /// The token's label.
    pub fn token_label(&self) -> &str {
        &self.token_label
    }

    /// The card's authentication key, derived in the token (module docs).
    fn card_key(&self, card_id: &CardId, key_version: u8) -> Result<Key, TerminalError> {
        let handle = *self
            .masters
            .get(&key_version)
            .ok_or(TerminalError::UnknownKeyVersion(key_version))?;
        let input = card_key_input(card_id, key_version);
        let mac = {
            // A panic elsewhere cannot leave a single-part C_Sign half done.
            let session = self.session.lock().unwrap_or_else(PoisonError::into_inner);
            Zeroizing::new(
                session
                    .sign(&Mechanism::AesCMac, handle, &input)
                    .map_err(|e| TerminalError::KeyModule(Box::new(token_err(&self.token_label)(e))))?,
            )
        };
        let mut k: [u8; 16] = mac.as_slice().try_into().map_err(|_| {
            TerminalError::KeyModule(format!("token {:?} gave a CMAC of {} bytes", self.token_label, mac.len()).into())
        })?;
        let key = Key::new(k);
        k.zeroize();
        Ok(key)
    }
}

impl Sam for Pkcs11Sam {
    fn session_keys(
        &self,
        card_id: &CardId,
        key_version: u8,
        host_challenge: &[u8; CHALLENGE_LEN],
        card_challenge: &[u8; CHALLENGE_LEN],
    ) -> Result<SessionKeys, TerminalError> {
        // The card key is wiped when it drops at the end of this call.
        let k_auth = self.card_key(card_id, key_version)?;
        Ok(SessionKeys::derive(&k_auth, host_challenge, card_challenge))
    }

    fn issuer_public_key(&self) -> &IssuerPublicKey {
        &self.issuer_public
    }

    fn issuer_id(&self) -> IssuerId {
        self.issuer_id
    }

    fn has_key_version(&self, key_version: u8) -> bool {
        self.masters.contains_key(&key_version)
    }
}

/// The key version an object's label and id name, when they agree.
fn version_of(attrs: &[Attribute]) -> Option<u8> {
    let mut label = None;
    let mut id = None;
    for a in attrs {
        match a {
            Attribute::Label(l) => label = std::str::from_utf8(l).ok(),
            Attribute::Id(i) => id = Some(i.as_slice()),
            _ => {}
        }
    }
    let v: u8 = label?.strip_prefix(LABEL_PREFIX)?.parse().ok()?;
    (id? == [v]).then_some(v)
}

/// Every authentication master in the token, by key version, each checked
/// to be a sensitive, non-extractable AES key that may sign.
pub(crate) fn find_masters(session: &Session, label: &str) -> Result<BTreeMap<u8, ObjectHandle>, Pkcs11Error> {
    let err = token_err(label);
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
    ];
    let mut masters = BTreeMap::new();
    for handle in session.find_objects(&template).map_err(&err)? {
        let attrs = session
            .get_attributes(handle, &[AttributeType::Label, AttributeType::Id])
            .map_err(&err)?;
        let Some(key_version) = version_of(&attrs) else {
            continue;
        };
        let unsafe_master = || Pkcs11Error::UnsafeMaster {
            label: label.to_owned(),
            key_version,
        };
        let flags = session
            .get_attributes(
                handle,
                &[
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::Sign,
                ],
            )
            .map_err(&err)?;
        let safe = flags.len() == 3
            && flags.iter().all(|a| {
                matches!(
                    a,
                    Attribute::Sensitive(true) | Attribute::Extractable(false) | Attribute::Sign(true)
                )
            });
        let value_hidden = matches!(
            session
                .get_attribute_info(handle, &[AttributeType::Value])
                .map_err(&err)?
                .first(),
            Some(AttributeInfo::Sensitive)
        );
        if !safe || !value_hidden {
            return Err(unsafe_master());
        }
        if masters.insert(key_version, handle).is_some() {
            return Err(Pkcs11Error::DuplicateMaster {
                label: label.to_owned(),
                key_version,
            });
        }
    }
    Ok(masters)
}
