//! Loading an office's authentication masters into a till's token.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use cryptoki::session::Session;
use tessera_crypto::keys::{IssuerKeys, OfficeLink, TerminalBundle};
use tessera_crypto::Key;
use zeroize::Zeroize;

use crate::sam::find_masters;
use crate::{master_label, open_session, token_err, Pkcs11Error, TokenConfig};

/// The message whose CMAC compares a master already in the token with the
/// office's (a key check value: it tells nothing of the key).
const CHECK_INPUT: &[u8] = b"tessera pkcs11 key check";

/// What [`provision`] did.
pub struct Provisioned {
    /// The terminal bundle to give the till: no master, the token named.
    pub bundle: TerminalBundle,
    /// Key versions whose masters were imported now.
    pub imported: Vec<u8>,
    /// Key versions whose (same) masters the token held already.
    pub already_present: Vec<u8>,
}

/// Imports the authentication master of every key version of `keys` into
/// the token as a sensitive, non-extractable, signing-only AES key
/// (`CKA_TOKEN`, `CKA_PRIVATE`, label [`master_label`], `CKA_ID` = key
/// version), and returns the bundle of terminal `terminal_id` that names
/// the token instead of carrying the masters.
///
/// Running it again on the same token is harmless: a master already there
/// is compared with the office's through a key check value and kept.
///
/// # Errors
/// Those of opening the token (see [`crate::Pkcs11Sam::open`]);
/// [`Pkcs11Error::MasterConflict`] when the token holds a different key
/// under a key version's label; [`Pkcs11Error::Token`] when the token
/// refuses the import.
pub fn provision(
    token: &TokenConfig,
    keys: &IssuerKeys,
    terminal_id: u32,
    office: OfficeLink,
) -> Result<Provisioned, Pkcs11Error> {
    let label = token.token_label.as_str();
    let session = open_session(token, true)?;
    let present = find_masters(&session, label)?;
    let (mut imported, mut already_present) = (Vec::new(), Vec::new());
    for (key_version, master) in &keys.terminal_keys().auth_masters {
        if let Some(&handle) = present.get(key_version) {
            let theirs = session
                .sign(&Mechanism::AesCMac, handle, CHECK_INPUT)
                .map_err(token_err(label))?;
            if !tessera_crypto::ct_eq(&theirs, &tessera_crypto::cmac(master, CHECK_INPUT)) {
                return Err(Pkcs11Error::MasterConflict {
                    label: label.to_owned(),
                    key_version: *key_version,
                });
            }
            already_present.push(*key_version);
        } else {
            import(&session, label, *key_version, master)?;
            imported.push(*key_version);
        }
    }
    // Read back: every master must now be there and pass the checks.
    let now = find_masters(&session, label)?;
    let bundle = keys.terminal_bundle_in_token(terminal_id, office, label);
    if let Some(t) = &bundle.token {
        if let Some(&key_version) = t.key_versions.iter().find(|v| !now.contains_key(v)) {
            return Err(Pkcs11Error::MissingMaster {
                label: label.to_owned(),
                key_version,
            });
        }
    }
    Ok(Provisioned {
        bundle,
        imported,
        already_present,
    })
}

fn import(session: &Session, label: &str, key_version: u8, master: &Key) -> Result<(), Pkcs11Error> {
    let mut template = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Verify(false),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
        Attribute::Modifiable(false),
        Attribute::Label(master_label(key_version).into_bytes()),
        Attribute::Id(vec![key_version]),
        Attribute::Value(master.bytes().to_vec()),
    ];
    let created = session.create_object(&template);
    for a in &mut template {
        if let Attribute::Value(v) = a {
            v.zeroize();
        }
    }
    created.map(drop).map_err(token_err(label))
}
