//! The PKCS#11 key module against the software one, on SoftHSM2 tokens.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use cryptoki::object::{Attribute, AttributeInfo, AttributeType};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use support::{config, with_token};
use tessera_crypto::keys::{IssuerKeys, OfficeLink};
use tessera_pkcs11::{master_label, provision, Pin, Pkcs11Error, Pkcs11Sam, TokenConfig};
use tessera_terminal::{Sam, SoftwareSam, TerminalError};

/// An office that rotated once: masters of key versions 2 and 3.
fn rotated_office() -> IssuerKeys {
    let mut keys = IssuerKeys::generate(2).unwrap();
    keys.rotate().unwrap();
    keys
}

#[test]
fn session_keys_are_those_of_the_software_module() {
    with_token("session_keys_are_those_of_the_software_module", |token| {
        let keys = rotated_office();
        let done = provision(&config(token), &keys, 7, OfficeLink::PlainLoopback).unwrap();
        assert_eq!(done.imported, vec![2, 3]);
        assert!(done.already_present.is_empty());
        let hw = Pkcs11Sam::from_bundle(&done.bundle, &token.module, Pin::new(token.user_pin.clone())).unwrap();
        let sw = SoftwareSam::new(keys.terminal_keys());
        assert_eq!(hw.key_versions(), vec![2, 3]);
        assert_eq!(hw.issuer_id(), sw.issuer_id());
        assert_eq!(hw.issuer_public_key().to_hex(), sw.issuer_public_key().to_hex());
        let cards = [[0x7E, 0x57, 0, 0, 0, 0, 0, 1], [0xA5; 8], [0; 8], [0xFF; 8]];
        let challenges = [([0u8; 8], [0u8; 8]), ([1; 8], [2; 8]), (*b"hostchal", *b"cardchal")];
        for card in &cards {
            for kv in [2u8, 3] {
                assert!(hw.has_key_version(kv));
                for (host, chip) in &challenges {
                    let a = hw.session_keys(card, kv, host, chip).unwrap();
                    let b = sw.session_keys(card, kv, host, chip).unwrap();
                    assert_eq!(a.card_cryptogram(), b.card_cryptogram());
                    assert_eq!(a.host_cryptogram(), b.host_cryptogram());
                    // Byte for byte: the channel keys MAC alike.
                    let mut ca = tessera_crypto::channel::SecureChannel::new(a);
                    let mut cb = tessera_crypto::channel::SecureChannel::new(b);
                    assert_eq!(
                        ca.protect_command(0x84, 0x30, 0, 0, b"earn 1", Some(256)),
                        cb.protect_command(0x84, 0x30, 0, 0, b"earn 1", Some(256))
                    );
                    assert_eq!(ca.encrypt(b"Anna"), cb.encrypt(b"Anna"));
                }
            }
        }
        // An unknown key version is the terminal's usual error.
        assert!(!hw.has_key_version(4));
        assert!(matches!(
            hw.session_keys(&cards[0], 4, &[0; 8], &[0; 8]),
            Err(TerminalError::UnknownKeyVersion(4))
        ));
        // As a boxed module too.
        let boxed: Box<dyn Sam> = Box::new(hw);
        assert!(boxed.session_keys(&cards[0], 3, &[0; 8], &[0; 8]).is_ok());
    });
}

#[test]
fn masters_in_the_token_cannot_be_read_out() {
    with_token("masters_in_the_token_cannot_be_read_out", |token| {
        let keys = rotated_office();
        provision(&config(token), &keys, 7, OfficeLink::PlainLoopback).unwrap();
        let ctx = cryptoki::context::Pkcs11::new(&token.module).unwrap();
        // The library initialized the module in this process already; ask
        // again on our own context.
        let _ = ctx.initialize(cryptoki::context::CInitializeArgs::new(
            cryptoki::context::CInitializeFlags::OS_LOCKING_OK,
        ));
        let slot = ctx
            .get_slots_with_initialized_token()
            .unwrap()
            .into_iter()
            .find(|s| ctx.get_token_info(*s).unwrap().label().trim_end() == token.label)
            .unwrap();
        let session = ctx.open_ro_session(slot).unwrap();
        let _ = session.login(UserType::User, Some(&AuthPin::from(token.user_pin.as_str())));
        for kv in [2u8, 3] {
            let found = session
                .find_objects(&[Attribute::Label(master_label(kv).into_bytes())])
                .unwrap();
            assert_eq!(found.len(), 1, "one master for v{kv}");
            let h = found[0];
            assert!(matches!(
                session.get_attribute_info(h, &[AttributeType::Value]).unwrap()[..],
                [AttributeInfo::Sensitive]
            ));
            // CKA_VALUE is not returned, whatever is asked.
            let got = session
                .get_attributes(h, &[AttributeType::Value, AttributeType::Id])
                .unwrap();
            assert!(!got.iter().any(|a| matches!(a, Attribute::Value(_))), "{got:?}");
            assert!(got.contains(&Attribute::Id(vec![kv])));
            let flags = session
                .get_attributes(
                    h,
                    &[
                        AttributeType::Sensitive,
                        AttributeType::Extractable,
                        AttributeType::NeverExtractable,
                        AttributeType::Token,
                        AttributeType::Sign,
                        AttributeType::Encrypt,
                    ],
                )
                .unwrap();
            for want in [
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Token(true),
                Attribute::Sign(true),
                Attribute::Encrypt(false),
            ] {
                assert!(flags.contains(&want), "v{kv}: {want:?} not in {flags:?}");
            }
            // Nor can it be made extractable afterwards.
            assert!(session.update_attributes(h, &[Attribute::Extractable(true)]).is_err());
        }
    });
}

#[test]
fn provisioning_again_keeps_the_same_masters_and_refuses_others() {
    with_token(
        "provisioning_again_keeps_the_same_masters_and_refuses_others",
        |token| {
            let keys = rotated_office();
            provision(&config(token), &keys, 7, OfficeLink::PlainLoopback).unwrap();
            let again = provision(&config(token), &keys, 8, OfficeLink::PlainLoopback).unwrap();
            assert!(again.imported.is_empty());
            assert_eq!(again.already_present, vec![2, 3]);
            assert_eq!(again.bundle.terminal_id, 8);
            // Another office's version 2 is not the one in the token.
            let other = IssuerKeys::generate(2).unwrap();
            let e = provision(&config(token), &other, 7, OfficeLink::PlainLoopback)
                .err()
                .unwrap();
            assert!(matches!(e, Pkcs11Error::MasterConflict { key_version: 2, .. }), "{e}");
            // A bundle naming a version the token lacks is refused on opening.
            let mut bundle = keys.terminal_bundle_in_token(7, OfficeLink::PlainLoopback, &token.label);
            bundle.token.as_mut().unwrap().key_versions.push(4);
            let e = Pkcs11Sam::from_bundle(&bundle, &token.module, Pin::new(token.user_pin.clone()))
                .err()
                .unwrap();
            assert!(matches!(e, Pkcs11Error::MissingMaster { key_version: 4, .. }), "{e}");
            // A software bundle is not a token bundle.
            let e = Pkcs11Sam::from_bundle(
                &keys.terminal_bundle(7, OfficeLink::PlainLoopback),
                &token.module,
                Pin::new(token.user_pin.clone()),
            )
            .err()
            .unwrap();
            assert!(matches!(e, Pkcs11Error::NotATokenBundle), "{e}");
        },
    );
}

#[test]
fn wrong_pin_unknown_token_and_missing_module_are_typed_errors() {
    with_token("wrong_pin_unknown_token_and_missing_module_are_typed_errors", |token| {
        let keys = rotated_office();
        let tk = keys.terminal_keys();
        let open = |cfg: TokenConfig| {
            Pkcs11Sam::open(&cfg, tk.issuer_id, tk.issuer_public.clone())
                .err()
                .unwrap()
        };
        let e = open(TokenConfig {
            pin: Pin::new("000000"),
            ..config(token)
        });
        assert!(matches!(e, Pkcs11Error::WrongPin { .. }), "{e}");
        assert!(e.to_string().contains("refused the PIN"));
        let e = provision(
            &TokenConfig {
                pin: Pin::new("000000"),
                ..config(token)
            },
            &keys,
            7,
            OfficeLink::PlainLoopback,
        )
        .err()
        .unwrap();
        assert!(matches!(e, Pkcs11Error::WrongPin { .. }), "{e}");
        let e = open(TokenConfig {
            token_label: "no-such-till".into(),
            ..config(token)
        });
        match &e {
            Pkcs11Error::TokenNotFound { label, present } => {
                assert_eq!(label, "no-such-till");
                assert_eq!(present, &vec![token.label.clone()]);
            }
            other => panic!("{other}"),
        }
        let e = open(TokenConfig {
            module: "/nonexistent/libpkcs11.so".into(),
            ..config(token)
        });
        assert!(matches!(e, Pkcs11Error::ModuleNotLoaded { .. }), "{e}");
        // A file that is not a PKCS#11 module.
        let e = open(TokenConfig {
            module: std::env::current_exe().unwrap(),
            ..config(token)
        });
        assert!(matches!(e, Pkcs11Error::ModuleNotLoaded { .. }), "{e}");
        // The right PIN still works: the failures did not lock the token.
        assert!(Pkcs11Sam::open(&config(token), tk.issuer_id, tk.issuer_public.clone()).is_ok());
    });
}

#[test]
fn the_pin_comes_from_the_environment_when_no_file_is_given() {
    with_token("the_pin_comes_from_the_environment_when_no_file_is_given", |token| {
        // This child process has its own environment.
        assert!(matches!(Pin::from_file_or_env(None), Err(Pkcs11Error::PinMissing)));
        std::env::set_var(tessera_pkcs11::PIN_ENV, &token.user_pin);
        let pin = Pin::from_file_or_env(None).unwrap();
        let keys = rotated_office();
        let cfg = TokenConfig { pin, ..config(token) };
        provision(&cfg, &keys, 7, OfficeLink::PlainLoopback).unwrap();
    });
}
