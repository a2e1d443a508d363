//! Settlement and sync through the C ABI, against a real office server on
//! loopback: a till opened with its bundle earns, settles (the ledger then
//! holds the card's balance), syncs; a till on the test keys is refused
//! settlement; an unreachable office is `TESSERA_OFFICE_UNREACHABLE`.

#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used)]

use std::ffi::{c_char, CStr, CString};
use std::ptr;
use tessera_ledger::books::OfficeBooks;

use tessera_crypto::keys::{IssuerKeys, OfficeLink};
use tessera_crypto::rng::Rng;
use tessera_ffi::*;
use tessera_ledger::{Ledger, LedgerKeys};
use tessera_office::{ServerConfig, Transport};
use tessera_protocol::profile::{Date, Profile};
use tessera_simulator::SimCard;
use tessera_terminal::issuer::{personalize, IssueParams};

fn take(p: *mut c_char) -> serde_json::Value {
    assert!(!p.is_null(), "no answer document");
    // SAFETY: a string this library returned, freed once below.
    let text = unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_owned();
    // SAFETY: as above.
    unsafe { tessera_string_free(p) };
    serde_json::from_str(&text).unwrap()
}

fn c(s: &str) -> CString {
    CString::new(s).unwrap()
}

#[test]
fn a_till_settles_and_syncs_through_the_c_abi() {
    let dir = tempfile::tempdir().unwrap();
    // Production keys: a bundle of the published test keys is refused.
    let keys = IssuerKeys::generate(2).unwrap();
    let ledger_path = dir.path().join("ledger.sqlite");
    let mut ledger = Ledger::open(&ledger_path, LedgerKeys::from_issuer(&keys)).unwrap();
    ledger.register_terminal(42, 0).unwrap();
    let mut config = ServerConfig::new(Transport::PlainLoopback);
    config.request_log = false;
    let office = tessera_office::spawn(
        ledger,
        IssuerKeys::from_json(&keys.to_json()).unwrap(),
        "127.0.0.1:0".parse().unwrap(),
        config,
    )
    .unwrap();
    let url = c(&format!("http://{}", office.addr()));
    let bundle_path = dir.path().join("till-42.json");
    std::fs::write(
        &bundle_path,
        keys.terminal_bundle(42, OfficeLink::PlainLoopback).to_json().as_bytes(),
    )
    .unwrap();

    let card_path = dir.path().join("anna.card");
    let card_id = [0x7E, 0x57, 0, 0, 0, 0, 0, 0x42];
    let mut sim = SimCard::manufacture(card_id, &keys.card_perso_key(&card_id), Rng::Os).unwrap();
    let profile = Profile {
        card_id,
        version: 1,
        name: "Ada".into(),
        birth_date: Date::new(1990, 1, 2).unwrap(),
        home_city: "Lyon".into(),
        household: [0; 8],
        preferences: vec![],
        tier: 0,
        valid_from: Date::new(2026, 1, 1).unwrap(),
        valid_until: Date::new(2035, 12, 31).unwrap(),
    };
    personalize(&mut sim, &keys, profile, &IssueParams::default()).unwrap();
    sim.save_as(&card_path).unwrap();
    let card = c(card_path.to_str().unwrap());
    let mut out = ptr::null_mut();
    // SAFETY: valid strings and out-pointers for every call below.
    unsafe {
        let mut transport = ptr::null_mut();
        assert_eq!(tessera_transport_sim(card.as_ptr(), &mut transport), TESSERA_OK);
        let till_dir = c(dir.path().join("till").to_str().unwrap());
        let bundle = c(bundle_path.to_str().unwrap());
        let mut till = ptr::null_mut();
        assert_eq!(
            tessera_till_open(till_dir.as_ptr(), bundle.as_ptr(), ptr::null(), &mut till),
            TESSERA_OK
        );
        let code = tessera_till_purchase(till, transport, 2000, ptr::null(), 0, &mut out);
        let doc = take(out);
        assert_eq!(code, TESSERA_OK, "{doc}");
        let balance = doc["outcome"]["receipt"]["record"]["balance_after"]
            .as_i64()
            .unwrap_or_else(|| panic!("no receipt: {doc}"));

        let code = tessera_till_settle(till, url.as_ptr(), &mut out);
        let doc = take(out);
        assert_eq!(code, TESSERA_OK, "{doc}");
        assert_eq!(doc["acks"][0]["status"], "posted", "{doc}");
        assert_eq!(doc["settled_up_to"], doc["records"], "{doc}");
        // Again: nothing left to settle.
        assert_eq!(tessera_till_settle(till, url.as_ptr(), &mut out), TESSERA_OK);
        assert_eq!(take(out)["acks"].as_array().map(Vec::len), Some(0));

        let code = tessera_till_sync(till, url.as_ptr(), &mut out);
        let doc = take(out);
        assert_eq!(code, TESSERA_OK, "{doc}");
        assert_eq!(
            doc["settled_cards"], 1,
            "the office confirms the card's counter as settled: {doc}"
        );

        let nowhere = c("http://127.0.0.1:9");
        let code = tessera_till_settle(till, nowhere.as_ptr(), &mut out);
        take(out);
        // Nothing is left to send, so nothing to reach: still done.
        assert_eq!(code, TESSERA_OK);
        let code = tessera_till_sync(till, nowhere.as_ptr(), &mut out);
        let doc = take(out);
        assert_eq!(code, TESSERA_OFFICE_UNREACHABLE, "{doc}");
        tessera_till_close(till);

        // A till on the test keys has no bundle to settle with.
        let training = c(dir.path().join("training").to_str().unwrap());
        let opts = c(r#"{"v":1,"test_keys":true}"#);
        let mut till = ptr::null_mut();
        assert_eq!(
            tessera_till_open(training.as_ptr(), ptr::null(), opts.as_ptr(), &mut till),
            TESSERA_OK
        );
        assert_eq!(tessera_till_settle(till, url.as_ptr(), &mut out), TESSERA_KEYS);
        take(out);
        tessera_till_close(till);
        tessera_transport_free(transport);

        office.stop().unwrap();
        let ledger = Ledger::open_existing(&ledger_path, LedgerKeys::from_issuer(&keys)).unwrap();
        let book = ledger.card(card_id).unwrap();
        let book = book.expect("the ledger knows the card");
        assert_eq!(book.card_balance, balance);
        assert_eq!(book.discrepancy, 0);
    }
}

#[test]
fn a_referral_is_approved_online_through_the_c_abi() {
    let dir = tempfile::tempdir().unwrap();
    let keys = IssuerKeys::generate(2).unwrap();
    let card_id = [0x7E, 0x57, 0, 0, 0, 0, 0, 0x43];
    let ledger_path = dir.path().join("ledger.sqlite");
    let mut ledger = Ledger::open(&ledger_path, LedgerKeys::from_issuer(&keys)).unwrap();
    ledger.register_terminal(42, 0).unwrap();
    let customer = ledger
        .register_customer(&tessera_ledger::NewCustomer {
            name: "Ada".into(),
            birth_date: Date::new(1990, 1, 2).unwrap(),
            home_city: "Lyon".into(),
            household: [0; 8],
            preferences: vec![],
            tier: 0,
        })
        .unwrap();
    ledger.register_card(card_id, customer, 2, 0).unwrap();
    let mut config = ServerConfig::new(Transport::PlainLoopback);
    config.request_log = false;
    let office = tessera_office::spawn(
        ledger,
        IssuerKeys::from_json(&keys.to_json()).unwrap(),
        "127.0.0.1:0".parse().unwrap(),
        config,
    )
    .unwrap();
    let url = c(&format!("http://{}", office.addr()));
    let bundle_path = dir.path().join("till-42.json");
    std::fs::write(
        &bundle_path,
        keys.terminal_bundle(42, OfficeLink::PlainLoopback).to_json().as_bytes(),
    )
    .unwrap();
    let card_path = dir.path().join("ada.card");
    let mut sim = SimCard::manufacture(card_id, &keys.card_perso_key(&card_id), Rng::Os).unwrap();
    let profile = Profile {
        card_id,
        version: 1,
        name: "Ada".into(),
        birth_date: Date::new(1990, 1, 2).unwrap(),
        home_city: "Lyon".into(),
        household: [0; 8],
        preferences: vec![],
        tier: 0,
        valid_from: Date::new(2026, 1, 1).unwrap(),
        valid_until: Date::new(2035, 12, 31).unwrap(),
    };
    personalize(&mut sim, &keys, profile, &IssueParams::default()).unwrap();
    sim.save_as(&card_path).unwrap();
    let card = c(card_path.to_str().unwrap());
    let mut out = ptr::null_mut();
    // SAFETY: valid strings and out-pointers for every call below.
    unsafe {
        let mut transport = ptr::null_mut();
        assert_eq!(tessera_transport_sim(card.as_ptr(), &mut transport), TESSERA_OK);
        let till_dir = c(dir.path().join("till").to_str().unwrap());
        let bundle = c(bundle_path.to_str().unwrap());
        let mut till = ptr::null_mut();
        assert_eq!(
            tessera_till_open(till_dir.as_ptr(), bundle.as_ptr(), ptr::null(), &mut till),
            TESSERA_OK
        );
        // Offline, a purchase above the limit is referred.
        let code = tessera_till_purchase(till, transport, 1_200_000, ptr::null(), 0, &mut out);
        let doc = take(out);
        assert_eq!(code, TESSERA_REFERRED, "{doc}");
        // Online: the office approves, the card checks its answer.
        assert_eq!(tessera_till_set_online(till, url.as_ptr()), TESSERA_OK);
        let code = tessera_till_purchase(till, transport, 1_200_000, ptr::null(), 0, &mut out);
        let doc = take(out);
        assert_eq!(code, TESSERA_OK, "{doc}");
        assert_eq!(doc["outcome"]["receipt"]["record"]["online"], true, "{doc}");
        // Stopped asking: referred again.
        assert_eq!(tessera_till_set_online(till, ptr::null()), TESSERA_OK);
        let code = tessera_till_purchase(till, transport, 1_200_000, ptr::null(), 0, &mut out);
        take(out);
        assert_eq!(code, TESSERA_REFERRED);
        // The office unreachable: the referral stands.
        let nowhere = c("http://127.0.0.1:9");
        assert_eq!(tessera_till_set_online(till, nowhere.as_ptr()), TESSERA_OK);
        let code = tessera_till_purchase(till, transport, 1_200_000, ptr::null(), 0, &mut out);
        take(out);
        assert_eq!(code, TESSERA_REFERRED);
        tessera_till_close(till);
        // A till on the test keys cannot ask the office.
        let training = c(dir.path().join("training").to_str().unwrap());
        let opts = c(r#"{"v":1,"test_keys":true}"#);
        let mut till = ptr::null_mut();
        assert_eq!(
            tessera_till_open(training.as_ptr(), ptr::null(), opts.as_ptr(), &mut till),
            TESSERA_OK
        );
        assert_eq!(tessera_till_set_online(till, url.as_ptr()), TESSERA_KEYS);
        tessera_till_close(till);
        tessera_transport_free(transport);
    }
    office.stop().unwrap();
    let ledger = Ledger::open_existing(&ledger_path, LedgerKeys::from_issuer(&keys)).unwrap();
    let auths = ledger.online_authorizations(card_id).unwrap();
    assert_eq!(auths.len(), 1);
    assert_eq!(auths[0].code, "A00");
}
