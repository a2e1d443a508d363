//! The simulator across the boundary: issue a card image with the test
//! issuer, tap it in process, take it out of the field and put it back.
//! For tests and training only.

#![allow(unsafe_code)]

use std::ffi::c_char;
use std::path::Path;

use rand_core::RngCore;
use serde::Deserialize;
use serde_json::json;
use tessera_crypto::keys::IssuerKeys;
use tessera_crypto::rng::Rng;
use tessera_protocol::messages::Lifecycle;
use tessera_protocol::profile::{Date, Profile};
use tessera_simulator::SimCard;
use tessera_terminal::issuer::{personalize, IssueParams};

use crate::boundary::{guard, put_handle, str_arg, Reply};
use crate::codes::*;
use crate::failure::Failure;
use crate::transport::{transport_ref, Link, TesseraTransport};
use tessera_terminal::json;

/// `profile_json` of `tessera_sim_issue`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IssueRequest {
    v: Option<u32>,
    card_id: Option<String>,
    name: String,
    birth_date: String,
    #[serde(default)]
    city: String,
    household: Option<String>,
    #[serde(default)]
    preferences: Vec<String>,
    #[serde(default)]
    tier: u8,
    valid_from: Option<String>,
    valid_until: Option<String>,
    earn_cap: Option<u32>,
    redeem_cap: Option<u32>,
}

fn date(s: &str, what: &str) -> Result<Date, Failure> {
    Date::parse_iso(s).map_err(|_| Failure::invalid(format!("invalid {what} {s:?}: use YYYY-MM-DD")))
}

fn hex8(s: &str, what: &str) -> Result<[u8; 8], Failure> {
    let mut out = [0u8; 8];
    hex::decode_to_slice(s.trim(), &mut out)
        .map_err(|_| Failure::invalid(format!("invalid {what} {s:?}: give 16 hex digits")))?;
    Ok(out)
}

fn issue(path: &str, request: &str) -> Result<Reply, Failure> {
    let r: IssueRequest = serde_json::from_str(request).map_err(|e| Failure::invalid(format!("profile_json: {e}")))?;
    if r.v.is_some_and(|v| v != TESSERA_JSON_VERSION) {
        return Err(Failure::invalid("profile_json: unsupported version"));
    }
    let id = match &r.card_id {
        Some(h) => hex8(h, "card id")?,
        None => {
            let mut id = [0u8; 8];
            Rng::Os.fill_bytes(&mut id);
            id
        }
    };
    let profile = Profile {
        card_id: id,
        version: 1,
        name: r.name.trim().to_owned(),
        birth_date: date(&r.birth_date, "birth date")?,
        home_city: r.city.trim().to_owned(),
        household: r
            .household
            .as_deref()
            .map(|h| hex8(h, "household"))
            .transpose()?
            .unwrap_or([0; 8]),
        preferences: r
            .preferences
            .iter()
            .map(|p| p.trim().to_lowercase())
            .filter(|p| !p.is_empty())
            .collect(),
        tier: r.tier,
        valid_from: date(r.valid_from.as_deref().unwrap_or("2026-01-01"), "valid-from date")?,
        valid_until: date(r.valid_until.as_deref().unwrap_or("2031-12-31"), "valid-until date")?,
    };
    if profile.name.is_empty() {
        return Err(Failure::invalid("the customer's name is empty"));
    }
    if profile.valid_until < profile.valid_from {
        return Err(Failure::invalid("the profile's validity ends before it starts"));
    }
    profile
        .body_bytes()
        .map_err(|_| Failure::invalid("profile too large or malformed"))?;
    let params = IssueParams {
        earn_cap: r.earn_cap.unwrap_or(100_000),
        redeem_cap: r.redeem_cap.unwrap_or(100_000),
        ..IssueParams::default()
    };
    if params.earn_cap == 0 || params.redeem_cap == 0 {
        return Err(Failure::invalid("caps must be at least 1 point"));
    }
    let path = Path::new(path);
    if path.exists() {
        return Err(Failure::new(
            TESSERA_IO,
            "card-image",
            format!("{} already exists: a card file is never overwritten", path.display()),
        ));
    }
    let keys = IssuerKeys::test().map_err(|e| Failure::new(TESSERA_KEYS, "keys", format!("test key store: {e}")))?;
    let mut card = SimCard::manufacture(id, &keys.card_perso_key(&id), Rng::Os)?;
    let signed = personalize(&mut card, &keys, profile, &params)?;
    card.save_as(path)
        .map_err(|e| Failure::new(TESSERA_IO, "card-image", format!("cannot write the card file: {e}")))?;
    Ok(Reply::doc(
        TESSERA_OK,
        json!({
            "v": TESSERA_JSON_VERSION, "ok": true, "code": TESSERA_OK,
            "card_file": path.display().to_string(),
            "card_id": json::card_id(&id),
            "profile": json::profile_json(&signed.profile),
            "warnings": [crate::till::TEST_KEYS_WARNING],
        }),
    ))
}

/// Manufactures a simulated card and personalizes it with the published
/// TEST issuer (training and tests only), saved as the card image file
/// `card_path` (which must not exist). `profile_json`:
/// `{"v":1, "card_id":"7E57000000000001", "name":"Ada",
/// "birth_date":"1990-01-02", "city":"Lyon", "preferences":["coffee"],
/// "tier":0, "valid_from":"2026-01-01", "valid_until":"2031-12-31",
/// "earn_cap":100000, "redeem_cap":100000}` — `name` and `birth_date`
/// required; `card_id` random when absent. Answers `card_id` and `profile`.
///
/// # Safety
/// `card_path` and `profile_json` are NUL-terminated strings; `out_json`
/// is null or points to writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn tessera_sim_issue(
    card_path: *const c_char,
    profile_json: *const c_char,
    out_json: *mut *mut c_char,
) -> i32 {
    guard(out_json, || {
        // SAFETY: forwarded from this function's contract.
        let path = unsafe { str_arg(card_path, "card_path") }?;
        // SAFETY: forwarded from this function's contract.
        let request = unsafe { str_arg(profile_json, "profile_json") }?;
        issue(path, request)
    })
}

/// A transport to the simulated card in the image file `card_path`, in
/// this process. The card saves its image after every command that
/// changed it (a power cut never leaves a torn file).
///
/// # Safety
/// `card_path` is a NUL-terminated string; `out_transport` points to
/// writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn tessera_transport_sim(
    card_path: *const c_char,
    out_transport: *mut *mut TesseraTransport,
) -> i32 {
    guard(std::ptr::null_mut(), || {
        // SAFETY: forwarded from this function's contract.
        let path = unsafe { str_arg(card_path, "card_path") }?;
        let card = SimCard::open(Path::new(path), Rng::Os)?;
        // SAFETY: forwarded from this function's contract.
        unsafe { put_handle(out_transport, TesseraTransport::new(Link::Sim(Box::new(card)))) }
    })
}

fn with_sim<R>(transport: &TesseraTransport, f: impl FnOnce(&mut SimCard) -> Result<R, Failure>) -> Result<R, Failure> {
    let mut link = transport.lock()?;
    match &mut *link {
        Link::Sim(card) => f(card),
        _ => Err(Failure::invalid("this transport is not a simulated card")),
    }
}

/// Takes a simulated card out of the field (`present == 0`: power off, its
/// session is lost, every command answers "card removed") or puts it back
/// (`present != 0`). `TESSERA_INVALID_ARGUMENT` for another transport.
///
/// # Safety
/// `transport` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn tessera_sim_set_present(transport: *const TesseraTransport, present: i32) -> i32 {
    guard(std::ptr::null_mut(), || {
        // SAFETY: forwarded from this function's contract.
        let transport = unsafe { transport_ref(transport) }?;
        with_sim(transport, |card| {
            if present != 0 {
                card.insert()?;
            } else {
                card.remove();
            }
            Ok(Reply::ok())
        })
    })
}

/// What a simulated card holds, read offline: `{"v":1, "ok":true,
/// "card_id", "lifecycle", "present", "balance", "counter", "log":[…]}`.
///
/// # Safety
/// `transport` is a live handle; `out_json` is null or points to writable
/// storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn tessera_sim_state(transport: *const TesseraTransport, out_json: *mut *mut c_char) -> i32 {
    guard(out_json, || {
        // SAFETY: forwarded from this function's contract.
        let transport = unsafe { transport_ref(transport) }?;
        with_sim(transport, |card| {
            let st = card.state()?;
            let lifecycle = match st.lifecycle {
                Lifecycle::Personalization => "blank",
                Lifecycle::Active => "active",
                Lifecycle::Blocked => "blocked",
            };
            Ok(Reply::doc(
                TESSERA_OK,
                json!({
                    "v": TESSERA_JSON_VERSION, "ok": true, "code": TESSERA_OK,
                    "card_id": json::card_id(&st.card_id),
                    "lifecycle": lifecycle,
                    "present": card.is_present(),
                    "balance": st.balance,
                    "counter": st.counter,
                    "log": st.records().map(json::record_json).collect::<Vec<_>>(),
                }),
            ))
        })
    })
}
