//! The till across the boundary: open, one tap per operation, close.

#![allow(unsafe_code)]

use std::ffi::c_char;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, TryLockError};

use serde::Deserialize;
use serde_json::{json, Map, Value};
use tessera_crypto::keys::{IssuerKeys, TerminalBundle, TerminalKeys};
use tessera_terminal::dir::load_bundle;
use tessera_terminal::dir::TerminalDir;
use tessera_terminal::policy::Decision;
use tessera_terminal::till::{Till, TillOutcome};
use tessera_terminal::{Clock, FixedClock, SoftwareSam, SystemClock, Unblock};

use crate::boundary::{guard, opt_str_arg, put_handle, str_arg, Reply};
use crate::codes::*;
use crate::failure::Failure;
use crate::transport::{transport_ref, TesseraTransport};
use tessera_terminal::json;

/// The warning every answer of a till on the test keys carries.
pub(crate) const TEST_KEYS_WARNING: &str = "using the published TEST keys: training only, never for real cards";

/// The till's clock: the system's, or a fixed time from the options
/// (training, tests).
#[derive(Clone, Copy)]
pub(crate) enum FfiClock {
    System,
    Fixed(u32),
}

impl Clock for FfiClock {
    fn now(&self) -> u32 {
        match self {
            Self::System => SystemClock.now(),
            Self::Fixed(t) => FixedClock(*t).now(),
        }
    }
}

/// `options_json` of `tessera_till_open`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TillOptions {
    v: Option<u32>,
    terminal_id: Option<u32>,
    store: Option<u32>,
    #[serde(default)]
    test_keys: bool,
    now: Option<u32>,
}

pub(crate) type FfiTill = Till<SoftwareSam, FfiClock>;

pub(crate) struct TillState {
    pub till: FfiTill,
    dir: PathBuf,
    test_keys: bool,
    /// The bundle's path, for settlement and sync (none on the test keys).
    bundle: Option<PathBuf>,
    /// The till's clock, for the seals.
    clock: FfiClock,
    /// The office to ask online (card application 2.2), when set
    /// (`tessera_till_set_online`).
    online: Option<tessera_client::OfficeAuthorizer>,
}

/// An open till: its journal, keys, signed rules and the issuer decisions
/// waiting for cards. One call at a time (a concurrent call answers
/// `TESSERA_BUSY`); closed with `tessera_till_close`.
pub struct TesseraTill {
    state: Mutex<TillState>,
}

impl TesseraTill {
    fn lock(&self) -> Result<MutexGuard<'_, TillState>, Failure> {
        match self.state.try_lock() {
            Ok(s) => Ok(s),
            Err(TryLockError::WouldBlock) => {
                Err(Failure::new(TESSERA_BUSY, "busy", "the till is in use by another call"))
            }
            Err(TryLockError::Poisoned(_)) => Err(Failure::internal(
                "the till is unusable after an internal error: close it and open it again",
            )),
        }
    }
}

fn keys_failure(message: impl Into<String>) -> Failure {
    Failure::new(TESSERA_KEYS, "keys", message)
}

fn load_keys(bundle: Option<&str>, test_keys: bool) -> Result<(TerminalKeys, Option<u32>), Failure> {
    match (bundle, test_keys) {
        (Some(_), true) => Err(keys_failure(
            "give a key bundle or the test keys, not both",
        )),
        (Some(path), false) => {
            let b = load_bundle(Path::new(path)).map_err(|e| keys_failure(e.to_string()))?;
            let id = b.terminal_id;
            // A bundle whose masters are in a PKCS#11 token is refused, never
            // run in software with no masters.
            let keys = b.into_software_keys().map_err(|e| keys_failure(format!("keys {path}: {e}")))?;
            Ok((keys, Some(id)))
        }
        (None, true) => {
            let keys = IssuerKeys::test().map_err(|e| keys_failure(format!("test key store: {e}")))?;
            Ok((keys.terminal_keys(), None))
        }
        (None, false) => Err(keys_failure(
            "this till has no keys: give a key bundle (from `tessera office export-terminal`), or {\"test_keys\": true} for training",
        )),
    }
}

/// Opens the till kept in directory `dir` (created `0700` when new), with
/// the terminal key bundle at `keys_bundle_path`, and writes its handle to
/// `*out_till`.
///
/// `options_json` may be null, or `{"v":1, "terminal_id":1, "store":1,
/// "test_keys":false, "now":null}` (every member optional):
/// `terminal_id` is the id of a new journal when there is no bundle
/// (a bundle's id wins, and a journal of another terminal is refused);
/// `store` the store the till stands in; `test_keys: true` uses the
/// published test keys instead of a bundle (training only:
/// `keys_bundle_path` must then be null, and every answer carries a
/// warning); `now` a fixed Unix time for the till's clock (training,
/// tests).
///
/// Codes: `TESSERA_KEYS` (no, both, or an unreadable bundle),
/// `TESSERA_IO` (journal, or a signed file refused),
/// `TESSERA_INVALID_ARGUMENT`.
///
/// # Safety
/// `dir` and a non-null `keys_bundle_path` and `options_json` are
/// NUL-terminated strings; `out_till` points to writable storage for one
/// pointer.
#[no_mangle]
pub unsafe extern "C" fn tessera_till_open(
    dir: *const c_char,
    keys_bundle_path: *const c_char,
    options_json: *const c_char,
    out_till: *mut *mut TesseraTill,
) -> i32 {
    guard(std::ptr::null_mut(), || {
        if out_till.is_null() {
            return Err(Failure::invalid("out_till is a null pointer"));
        }
        // SAFETY: forwarded from this function's contract.
        let dir = unsafe { str_arg(dir, "dir") }?;
        // SAFETY: forwarded from this function's contract.
        let bundle = unsafe { opt_str_arg(keys_bundle_path, "keys_bundle_path") }?;
        // SAFETY: forwarded from this function's contract.
        let options = match unsafe { opt_str_arg(options_json, "options_json") }? {
            Some(text) => {
                serde_json::from_str::<TillOptions>(text).map_err(|e| Failure::invalid(format!("options_json: {e}")))?
            }
            None => TillOptions::default(),
        };
        if options.v.is_some_and(|v| v != TESSERA_JSON_VERSION) {
            return Err(Failure::invalid(format!(
                "options_json: version {} is not supported (this library reads version {TESSERA_JSON_VERSION})",
                options.v.unwrap_or(0)
            )));
        }
        if dir.is_empty() {
            return Err(Failure::invalid("dir is empty"));
        }
        let (keys, bundle_id) = load_keys(bundle, options.test_keys)?;
        let issuer = keys.issuer_public.clone();
        let clock = options.now.map_or(FfiClock::System, FfiClock::Fixed);
        let till = TerminalDir::new(dir).open_till(
            SoftwareSam::new(keys),
            &issuer,
            clock,
            options.terminal_id.unwrap_or(1),
            bundle_id,
            options.store.unwrap_or(1),
        )?;
        let handle = Box::new(TesseraTill {
            state: Mutex::new(TillState {
                till,
                dir: PathBuf::from(dir),
                test_keys: options.test_keys,
                bundle: bundle.map(PathBuf::from),
                clock,
                online: None,
            }),
        });
        // SAFETY: forwarded from this function's contract.
        unsafe { put_handle(out_till, handle) }
    })
}

/// Closes a till (its journal is durable at every step: nothing is lost).
/// Null is ignored. The till must not be in use by another call.
///
/// # Safety
/// `till` is null or a live handle, not used again afterwards.
#[no_mangle]
pub unsafe extern "C" fn tessera_till_close(till: *mut TesseraTill) {
    if till.is_null() {
        return;
    }
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: by the contract, a live handle from `Box::into_raw`,
        // freed once.
        drop(unsafe { Box::from_raw(till) });
    });
}

/// What one tap does after authentication and recovery.
pub(crate) enum Op {
    Read,
    Quote(u64, Vec<String>),
    Purchase(u64, Vec<String>),
    Redeem(u32),
    Refund([u8; 8], u32),
}

fn decision_code(d: &Decision) -> (i32, &'static str) {
    if matches!(d, Decision::Refer(_)) {
        (TESSERA_REFERRED, "referred")
    } else {
        (TESSERA_DECLINED, "declined")
    }
}

/// One tap and its operation; the whole answer document and its code.
pub(crate) fn run_op(state: &mut TillState, link: &mut dyn tessera_transport::Transport, op: Op, flags: u32) -> Reply {
    let mut doc = Map::new();
    doc.insert("v".into(), json!(TESSERA_JSON_VERSION));
    let mut warnings: Vec<String> = Vec::new();
    if state.test_keys {
        warnings.push(TEST_KEYS_WARNING.into());
    }
    let unblocks_before = state.till.terminal_mut().unblocks().count();
    let mut delivered_profile: Option<[u8; 8]> = None;
    let result = (|| -> Result<(), Failure> {
        let mut t = state.till.tap(&mut *link)?;
        if flags & TESSERA_FLAG_ALLOW_REPEAT != 0 {
            t.allow_repeat();
        }
        if let Some(o) = state.online.as_mut() {
            t.use_online(o);
        }
        let info = t.card().clone();
        if t.profile_updated.is_some() {
            delivered_profile = Some(info.card_id);
        }
        doc.insert("card".into(), json::card_json(&info));
        doc.insert("offers".into(), json!(t.offers()));
        doc.insert(
            "recovered".into(),
            json!(t.recovered.iter().map(json::journaled_json).collect::<Vec<_>>()),
        );
        let mut resolved: Vec<Value> = t
            .completed_earlier
            .iter()
            .map(|r| {
                let mut v = json::journaled_json(r);
                if let Value::Object(m) = &mut v {
                    m.insert("result".into(), json!("completed"));
                    m.insert("decision_seq".into(), json!(r.entry.origin_seq));
                }
                v
            })
            .collect();
        resolved.extend(t.voided.iter().map(|r| {
            let mut v = json::journaled_json(r);
            if let Value::Object(m) = &mut v {
                m.insert("result".into(), json!("void"));
                m.insert("decision_seq".into(), json!(r.entry.origin_seq));
            }
            v
        }));
        doc.insert("resolved".into(), json!(resolved));
        doc.insert("profile_updated".into(), json!(t.profile_updated));
        doc.insert("settlement_acknowledged".into(), json!(t.settlement_acknowledged));
        doc.insert("keys_updated".into(), json!(t.keys_updated));
        let outcome = match op {
            Op::Read => None,
            Op::Quote(minor, cats) => {
                doc.insert("quote".into(), json::quote_json(&t.quote(minor, &cats)));
                None
            }
            Op::Purchase(minor, cats) => Some(t.purchase(minor, &cats)?),
            Op::Redeem(points) => Some(t.redeem(points)?),
            Op::Refund(card, counter) => {
                if card != info.card_id {
                    return Err(Failure::invalid(format!(
                        "this is card {}, not {}: present the card of the original transaction",
                        json::card_id(&info.card_id),
                        json::card_id(&card)
                    )));
                }
                Some(t.refund(counter)?)
            }
        };
        doc.insert(
            "outcome".into(),
            outcome.as_ref().map_or(Value::Null, json::outcome_json),
        );
        let refusal = match &outcome {
            Some(TillOutcome::Refused { decision, .. }) => {
                let (code, kind) = decision_code(decision);
                Some(
                    Failure::new(code, kind, format!("{} ({})", decision.message(), decision.code()))
                        .with("reason", json!(decision.code())),
                )
            }
            Some(TillOutcome::AlreadyDone { .. }) => Some(Failure::new(
                TESSERA_ALREADY_DONE,
                "already-done",
                "an operation interrupted here earlier went through; nothing new was charged (TESSERA_FLAG_ALLOW_REPEAT for another one)",
            )),
            _ => None,
        };
        refusal.map_or(Ok(()), Err)
    })();
    // Housekeeping of the directory, as `tessera pos` does it: a delivered
    // profile update is removed, confirmed unblocks leave `unblocks.json`.
    if let Some(id) = delivered_profile {
        let path = state
            .dir
            .join("profile-updates")
            .join(format!("{}.json", json::card_id(&id)));
        let _ = std::fs::remove_file(path);
    }
    let unblocks: Vec<([u8; 8], Unblock)> = state.till.terminal_mut().unblocks().map(|(c, u)| (*c, *u)).collect();
    if unblocks.len() != unblocks_before {
        if let Err(e) = TerminalDir::new(&state.dir).write_unblocks(&unblocks) {
            warnings.push(format!("unblocks.json could not be rewritten: {e}"));
        }
    }
    doc.insert(
        "trace".into(),
        json::trace_json(&state.till.terminal_mut().take_trace()),
    );
    doc.insert("warnings".into(), json!(warnings));
    match result {
        Ok(()) => {
            doc.insert("ok".into(), json!(true));
            doc.insert("code".into(), json!(TESSERA_OK));
            doc.insert("code_name".into(), json!(code_name(TESSERA_OK)));
            Reply::doc(TESSERA_OK, Value::Object(doc))
        }
        Err(f) => {
            f.fill(&mut doc);
            Reply::doc(f.code, Value::Object(doc))
        }
    }
}

/// The common part of every operation: handles checked and locked, the
/// operation built from the arguments, the tap run.
///
/// # Safety
/// `till` and `transport` are null or live handles.
unsafe fn tap_with(
    till: *const TesseraTill,
    transport: *const TesseraTransport,
    flags: u32,
    op: impl FnOnce() -> Result<Op, Failure>,
) -> Result<Reply, Failure> {
    // SAFETY: by the contract, a non-null `till` is a live handle.
    let till = unsafe { till.as_ref() }.ok_or_else(|| Failure::invalid("the till is a null pointer"))?;
    // SAFETY: forwarded from this function's contract.
    let transport = unsafe { transport_ref(transport) }?;
    if flags & !TESSERA_FLAG_ALLOW_REPEAT != 0 {
        return Err(Failure::invalid(format!("unknown flags 0x{flags:X}")));
    }
    let op = op()?;
    let mut state = till.lock()?;
    let mut link = transport.lock()?;
    Ok(run_op(&mut state, &mut *link, op, flags))
}

/// Categories from a JSON array of strings (null: none), normalized as
/// the CLI does (trimmed, lower case, empty ones dropped).
///
/// # Safety
/// `p` is null or a NUL-terminated string.
unsafe fn categories_arg(p: *const c_char) -> Result<Vec<String>, Failure> {
    // SAFETY: forwarded from this function's contract.
    let Some(text) = (unsafe { opt_str_arg(p, "categories_json") })? else {
        return Ok(Vec::new());
    };
    let cats: Vec<String> = serde_json::from_str(text)
        .map_err(|e| Failure::invalid(format!("categories_json must be an array of strings: {e}")))?;
    Ok(cats
        .iter()
        .map(|c| c.trim().to_lowercase())
        .filter(|c| !c.is_empty())
        .collect())
}

fn amount_arg(amount_minor: u64) -> Result<u64, Failure> {
    if amount_minor == 0 {
        return Err(Failure::invalid("the amount must be more than zero"));
    }
    Ok(amount_minor)
}

/// Taps the card: authenticates it, resolves this till's pending
/// operations on it (`resolved`), journals what it finds, delivers issuer
/// decisions waiting for it, and answers the tap document (`card`,
/// `offers`…) in `*out_json`. A hotlisted card is blocked and answers
/// `TESSERA_DECLINED`.
///
/// # Safety
/// `till` and `transport` are live handles; `out_json` is null or points
/// to writable storage for one pointer (the answer, to free with
/// `tessera_string_free`).
#[no_mangle]
pub unsafe extern "C" fn tessera_till_read(
    till: *const TesseraTill,
    transport: *const TesseraTransport,
    out_json: *mut *mut c_char,
) -> i32 {
    // SAFETY: forwarded from this function's contract.
    guard(out_json, || unsafe { tap_with(till, transport, 0, || Ok(Op::Read)) })
}

/// Taps the card and quotes the points a purchase of `amount_minor` (in
/// minor units: cents) in the categories `categories_json` (a JSON array
/// of strings, or null) would earn today (`quote`); nothing is charged.
///
/// # Safety
/// As `tessera_till_read`; `categories_json` is null or a NUL-terminated
/// string.
#[no_mangle]
pub unsafe extern "C" fn tessera_till_quote(
    till: *const TesseraTill,
    transport: *const TesseraTransport,
    amount_minor: u64,
    categories_json: *const c_char,
    out_json: *mut *mut c_char,
) -> i32 {
    guard(out_json, || {
        // SAFETY: forwarded from this function's contract.
        unsafe {
            tap_with(till, transport, 0, || {
                // SAFETY: forwarded from this function's contract.
                Ok(Op::Quote(amount_arg(amount_minor)?, categories_arg(categories_json)?))
            })
        }
    })
}

/// Taps the card and earns the points of a purchase of `amount_minor`
/// (minor units) in the categories `categories_json` (JSON array, or
/// null): the policy and today's campaigns decide, the decision is
/// journaled before the card is touched, the card's certified record
/// after. `flags`: 0 or `TESSERA_FLAG_ALLOW_REPEAT`.
///
/// Codes: `TESSERA_OK` (approved: `outcome.receipt`), `TESSERA_DECLINED`,
/// `TESSERA_REFERRED` (`outcome.reason`), `TESSERA_ALREADY_DONE`,
/// `TESSERA_INTERRUPTED` (card pulled during the earn: tap the same card
/// again), `TESSERA_CARD_REMOVED`, and the others of the table.
///
/// # Safety
/// As `tessera_till_quote`.
#[no_mangle]
pub unsafe extern "C" fn tessera_till_purchase(
    till: *const TesseraTill,
    transport: *const TesseraTransport,
    amount_minor: u64,
    categories_json: *const c_char,
    flags: u32,
    out_json: *mut *mut c_char,
) -> i32 {
    guard(out_json, || {
        // SAFETY: forwarded from this function's contract.
        unsafe {
            tap_with(till, transport, flags, || {
                // SAFETY: forwarded from this function's contract.
                Ok(Op::Purchase(
                    amount_arg(amount_minor)?,
                    categories_arg(categories_json)?,
                ))
            })
        }
    })
}

/// Taps the card and redeems `points` (from 1). Codes as
/// `tessera_till_purchase`.
///
/// # Safety
/// As `tessera_till_read`.
#[no_mangle]
pub unsafe extern "C" fn tessera_till_redeem(
    till: *const TesseraTill,
    transport: *const TesseraTransport,
    points: u32,
    flags: u32,
    out_json: *mut *mut c_char,
) -> i32 {
    guard(out_json, || {
        // SAFETY: forwarded from this function's contract.
        unsafe {
            tap_with(till, transport, flags, || {
                if points == 0 {
                    return Err(Failure::invalid("give at least 1 point"));
                }
                Ok(Op::Redeem(points))
            })
        }
    })
}

/// Taps the card and reverses its transaction number `original_counter`
/// (the `counter` of its receipt's record); `original_card_id` is that
/// card's id (16 hex digits): another card presented answers
/// `TESSERA_INVALID_ARGUMENT`. Codes as `tessera_till_purchase`.
///
/// # Safety
/// As `tessera_till_read`; `original_card_id` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn tessera_till_refund(
    till: *const TesseraTill,
    transport: *const TesseraTransport,
    original_card_id: *const c_char,
    original_counter: u32,
    flags: u32,
    out_json: *mut *mut c_char,
) -> i32 {
    guard(out_json, || {
        // SAFETY: forwarded from this function's contract.
        unsafe {
            tap_with(till, transport, flags, || {
                // SAFETY: forwarded from this function's contract.
                let id = str_arg(original_card_id, "original_card_id")?;
                let mut card = [0u8; 8];
                hex::decode_to_slice(id.trim(), &mut card)
                    .map_err(|_| Failure::invalid(format!("invalid card id {id:?}: give 16 hex digits")))?;
                if original_counter == 0 {
                    return Err(Failure::invalid("card transactions are numbered from 1"));
                }
                Ok(Op::Refund(card, original_counter))
            })
        }
    })
}

/// The till's bundle, for settlement and sync.
fn settlement_bundle(state: &TillState) -> Result<TerminalBundle, Failure> {
    let path = state.bundle.as_deref().ok_or_else(|| {
        keys_failure("settlement needs this terminal's key bundle: a till on the test keys does not settle")
    })?;
    load_bundle(path).map_err(|e| keys_failure(e.to_string()))
}

fn settle_failure(e: tessera_client::SettleError) -> Failure {
    use tessera_client::SettleError as S;
    let code = match &e {
        S::Office(_) | S::RecordTooLarge { .. } | S::UnknownBatch(_) | S::Ack(_) => TESSERA_OFFICE_UNREACHABLE,
        _ => TESSERA_IO,
    };
    Failure::new(code, code_name(code), e.to_string())
}

/// Settles the till's journal with the office at `server_url` (e.g.
/// `https://office:8420`; the bundle pins its certificate): every
/// unacknowledged batch is re-sent unchanged, every new record sealed and
/// sent, each marked settled only on a genuine acknowledgement, until
/// nothing is left. Writes `{"v":1,"ok":true,"acks":[{"batch_no",
/// "status"}],"settled_up_to","records"}`.
///
/// Codes: `TESSERA_OFFICE_UNREACHABLE` (the office refused or could not be
/// reached after retries; acknowledgements received before stay),
/// `TESSERA_KEYS` (no bundle: a till on the test keys), `TESSERA_IO`.
///
/// # Safety
/// `till` is a live handle; `server_url` a NUL-terminated string;
/// `out_json` null or writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn tessera_till_settle(
    till: *const TesseraTill,
    server_url: *const c_char,
    out_json: *mut *mut c_char,
) -> i32 {
    guard(out_json, || {
        // SAFETY: by the contract, a non-null `till` is a live handle.
        let till = unsafe { till.as_ref() }.ok_or_else(|| Failure::invalid("the till is a null pointer"))?;
        // SAFETY: forwarded from this function's contract.
        let url = unsafe { str_arg(server_url, "server_url") }?;
        let mut state = till.lock()?;
        let bundle = settlement_bundle(&state)?;
        let now = state.clock.now();
        let report = tessera_client::settle(
            state.till.journal_mut(),
            &bundle,
            url,
            &tessera_client::RetryPolicy::default(),
            now,
            |_| {},
        )
        .map_err(settle_failure)?;
        Ok(Reply::doc(
            TESSERA_OK,
            json!({
                "v": TESSERA_JSON_VERSION, "ok": true, "code": TESSERA_OK, "code_name": code_name(TESSERA_OK),
                "acks": report.acks.iter().map(|a| json!({"batch_no": a.batch_no, "status": tessera_client::status_name(a.status)})).collect::<Vec<_>>(),
                "settled_up_to": report.settled_up_to,
                "records": report.records,
            }),
        ))
    })
}

/// Lets the till ask the office at `server_url` online (card application
/// 2.2; e.g. `https://office:8420`, the bundle pins its certificate), with
/// the card on the reader, for what only the office can lift: offline
/// referrals (velocity, the purchase limit, the earn cap), the redemption
/// cap, and refunds or amounts the card itself refuses (its log window, its
/// caps). The card checks the office's answer itself. Without an answer
/// within 5 s the referral stands (`REFERRED`, call the office). Null
/// `server_url` stops asking. Applies to every following operation of this
/// handle; the decision's document then carries the office's code
/// (`A00`, `O01`…`O09`, `D01`, `D08`) as any other.
///
/// Codes: `TESSERA_KEYS` (a till on the test keys: no bundle to
/// authenticate to the office), `TESSERA_INVALID_ARGUMENT`.
///
/// # Safety
/// `till` is a live handle; `server_url` null or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn tessera_till_set_online(till: *const TesseraTill, server_url: *const c_char) -> i32 {
    guard(std::ptr::null_mut(), || {
        // SAFETY: by the contract, a non-null `till` is a live handle.
        let till = unsafe { till.as_ref() }.ok_or_else(|| Failure::invalid("the till is a null pointer"))?;
        // SAFETY: forwarded from this function's contract.
        let url = unsafe { opt_str_arg(server_url, "server_url") }?;
        let mut state = till.lock()?;
        state.online = match url {
            None => None,
            Some("") => return Err(Failure::invalid("server_url is empty")),
            Some(u) => Some(tessera_client::OfficeAuthorizer {
                base_url: u.to_owned(),
                bundle: settlement_bundle(&state)?,
            }),
        };
        Ok(Reply::ok())
    })
}

/// Fetches the office's news for this till (hotlist, campaigns, profile
/// updates, settled counters, unblocks, key updates), checks and writes
/// them into the till's directory, and tells the office. The open till
/// takes them at its next `tessera_till_open`: close and reopen it after a
/// sync. Writes `{"v":1,"ok":true,"hotlist_version","hotlist_written",
/// "campaigns_version","profile_updates","settled_cards","unblocks",
/// "key_updates","acknowledged","notes":[...]}`.
///
/// Codes: as `tessera_till_settle`.
///
/// # Safety
/// As `tessera_till_settle`.
#[no_mangle]
pub unsafe extern "C" fn tessera_till_sync(
    till: *const TesseraTill,
    server_url: *const c_char,
    out_json: *mut *mut c_char,
) -> i32 {
    guard(out_json, || {
        // SAFETY: by the contract, a non-null `till` is a live handle.
        let till = unsafe { till.as_ref() }.ok_or_else(|| Failure::invalid("the till is a null pointer"))?;
        // SAFETY: forwarded from this function's contract.
        let url = unsafe { str_arg(server_url, "server_url") }?;
        let state = till.lock()?;
        let bundle = settlement_bundle(&state)?;
        let r = tessera_client::sync(
            &TerminalDir::new(&state.dir),
            &bundle,
            url,
            &tessera_client::RetryPolicy::default(),
        )
        .map_err(settle_failure)?;
        Ok(Reply::doc(
            TESSERA_OK,
            json!({
                "v": TESSERA_JSON_VERSION, "ok": true, "code": TESSERA_OK, "code_name": code_name(TESSERA_OK),
                "hotlist_version": r.hotlist_version,
                "hotlist_written": r.applied.hotlist_written,
                "campaigns_version": r.applied.campaigns_version,
                "profile_updates": r.applied.profiles.len(),
                "settled_cards": r.settled_cards,
                "unblocks": r.unblocks,
                "key_updates": r.key_updates,
                "acknowledged": r.acknowledged,
                "notes": r.applied.notes,
            }),
        ))
    })
}
