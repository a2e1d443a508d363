//! Transports across the boundary: the POS's own reader stack through a
//! callback, a PC/SC reader, or the simulator.

#![allow(unsafe_code)]

use std::ffi::{c_char, c_void};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use serde_json::json;
use tessera_pcsc::PcscTransport;
use tessera_simulator::SimCard;
use tessera_transport::{Transport, TransportError};

use crate::boundary::{guard, put_handle, str_arg, Reply};
use crate::codes::*;
use crate::failure::Failure;

/// The POS's transmit function: sends the command APDU `apdu[0..apdu_len]`
/// to the card and writes the whole response APDU (data, SW1, SW2) into
/// `resp[0..resp_cap]`, its length into `*resp_len`. Returns
/// `TESSERA_TRANSMIT_OK`, `TESSERA_TRANSMIT_CARD_REMOVED` (the card left
/// the field: card pulled), `TESSERA_TRANSMIT_TIMEOUT`, or any other
/// non-zero value for a reader I/O error. `resp_cap` is at least 65,538.
/// The function runs on the thread of the tessera call that uses the
/// transport, and must not call the same till or transport handle.
pub type TesseraTransmitFn = Option<
    unsafe extern "C" fn(
        ctx: *mut c_void,
        apdu: *const u8,
        apdu_len: usize,
        resp: *mut u8,
        resp_cap: usize,
        resp_len: *mut usize,
    ) -> i32,
>;

/// Room for the longest response APDU (extended length: 65,536 data bytes
/// and the status word).
const RESPONSE_CAP: usize = 65_538;

pub(crate) struct CallbackLink {
    transmit: unsafe extern "C" fn(*mut c_void, *const u8, usize, *mut u8, usize, *mut usize) -> i32,
    ctx: *mut c_void,
    buffer: Vec<u8>,
}

impl Transport for CallbackLink {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
        let mut len = 0usize;
        // SAFETY: the POS gave this function and context together
        // (`tessera_transport_callback`), promising the function reads
        // `apdu_len` bytes from `apdu`, writes at most `resp_cap` bytes to
        // `resp` and one `usize` to `resp_len`; all three buffers are
        // valid for those sizes for the duration of the call.
        let rc = unsafe {
            (self.transmit)(
                self.ctx,
                command.as_ptr(),
                command.len(),
                self.buffer.as_mut_ptr(),
                self.buffer.len(),
                &mut len,
            )
        };
        match rc {
            TESSERA_TRANSMIT_OK => {}
            TESSERA_TRANSMIT_CARD_REMOVED => return Err(TransportError::CardRemoved),
            TESSERA_TRANSMIT_TIMEOUT => return Err(TransportError::Timeout(Duration::ZERO)),
            n => return Err(TransportError::Io(format!("the transmit callback reported error {n}"))),
        }
        if len < 2 || len > self.buffer.len() {
            return Err(TransportError::MalformedResponse(format!(
                "the transmit callback gave a response of {len} bytes (2 to {} expected)",
                self.buffer.len()
            )));
        }
        Ok(self.buffer[..len].to_vec())
    }
}

pub(crate) enum Link {
    Callback(CallbackLink),
    Pcsc(Box<PcscTransport>),
    Sim(Box<SimCard>),
}

impl Transport for Link {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
        match self {
            Self::Callback(c) => c.transmit(command),
            Self::Pcsc(p) => p.transmit(command),
            Self::Sim(s) => s.transmit(command),
        }
    }
}

/// A link to one card: a callback, a PC/SC reader or a simulated card.
/// Used by one call at a time (a second concurrent call answers
/// `TESSERA_BUSY`); freed with `tessera_transport_free`.
pub struct TesseraTransport {
    link: Mutex<Link>,
}

impl TesseraTransport {
    pub(crate) fn new(link: Link) -> Box<Self> {
        Box::new(Self { link: Mutex::new(link) })
    }

    pub(crate) fn lock(&self) -> Result<MutexGuard<'_, Link>, Failure> {
        match self.link.try_lock() {
            Ok(l) => Ok(l),
            Err(TryLockError::WouldBlock) => Err(Failure::new(
                TESSERA_BUSY,
                "busy",
                "the transport is in use by another call",
            )),
            Err(TryLockError::Poisoned(_)) => Err(Failure::internal(
                "the transport is unusable after an internal error: free it",
            )),
        }
    }
}

/// The transport handle behind a pointer.
///
/// # Safety
/// `p` is null or a live handle from a `tessera_transport_*` constructor.
pub(crate) unsafe fn transport_ref<'a>(p: *const TesseraTransport) -> Result<&'a TesseraTransport, Failure> {
    // SAFETY: by the contract, a non-null `p` is a live handle.
    unsafe { p.as_ref() }.ok_or_else(|| Failure::invalid("the transport is a null pointer"))
}

/// A transport over the POS's own reader stack: every command APDU goes
/// through `transmit(ctx, …)`. `ctx` is passed back untouched and must
/// stay valid until the transport is freed.
///
/// Returns `TESSERA_INVALID_ARGUMENT` when `transmit` or `out_transport`
/// is null.
///
/// # Safety
/// `transmit` follows the contract of [`TesseraTransmitFn`];
/// `out_transport` points to writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn tessera_transport_callback(
    transmit: TesseraTransmitFn,
    ctx: *mut c_void,
    out_transport: *mut *mut TesseraTransport,
) -> i32 {
    guard(std::ptr::null_mut(), || {
        let transmit = transmit.ok_or_else(|| Failure::invalid("the transmit function is a null pointer"))?;
        let link = Link::Callback(CallbackLink {
            transmit,
            ctx,
            buffer: vec![0; RESPONSE_CAP],
        });
        // SAFETY: forwarded from this function's contract.
        unsafe { put_handle(out_transport, TesseraTransport::new(link)) }
    })
}

/// A transport over the PC/SC reader named exactly `reader` (see
/// `tessera_pcsc_readers`). Nothing is connected yet: each tap connects
/// to the card in the reader, and again after the card was removed; a tap
/// without a card answers `TESSERA_CARD_REMOVED`, without `pcscd`
/// `TESSERA_READER_ERROR`.
///
/// # Safety
/// `reader` is a NUL-terminated string; `out_transport` points to writable
/// storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn tessera_transport_pcsc(
    reader: *const c_char,
    out_transport: *mut *mut TesseraTransport,
) -> i32 {
    guard(std::ptr::null_mut(), || {
        // SAFETY: forwarded from this function's contract.
        let reader = unsafe { str_arg(reader, "reader") }?;
        let link = Link::Pcsc(Box::new(PcscTransport::lazy(reader)?));
        // SAFETY: forwarded from this function's contract.
        unsafe { put_handle(out_transport, TesseraTransport::new(link)) }
    })
}

/// Frees a transport (a PC/SC one lets its card go). Null is ignored. The
/// transport must not be in use by another call.
///
/// # Safety
/// `transport` is null or a live handle, not used again afterwards.
#[no_mangle]
pub unsafe extern "C" fn tessera_transport_free(transport: *mut TesseraTransport) {
    if transport.is_null() {
        return;
    }
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: by the contract, a live handle from `Box::into_raw`,
        // freed once.
        drop(unsafe { Box::from_raw(transport) });
    });
}

/// Sends one command APDU through any transport and copies the response
/// APDU into `resp` (capacity `resp_cap`), its length into `*resp_len`.
/// With `TESSERA_BUFFER_TOO_SMALL`, `*resp_len` is the length needed (the
/// response is lost: the card executed the command). A POS callback can
/// use this to wrap a simulator transport (tests, training), or a tool to
/// talk to a card directly.
///
/// # Safety
/// `transport` is a live handle; `apdu` points to `apdu_len` readable
/// bytes; `resp` to `resp_cap` writable bytes; `resp_len` to a writable
/// `size_t`.
#[no_mangle]
pub unsafe extern "C" fn tessera_transport_transmit(
    transport: *const TesseraTransport,
    apdu: *const u8,
    apdu_len: usize,
    resp: *mut u8,
    resp_cap: usize,
    resp_len: *mut usize,
) -> i32 {
    guard(std::ptr::null_mut(), || {
        // SAFETY: forwarded from this function's contract.
        let transport = unsafe { transport_ref(transport) }?;
        if apdu.is_null() || resp.is_null() || resp_len.is_null() {
            return Err(Failure::invalid("apdu, resp and resp_len must not be null"));
        }
        if !(4..=65_544).contains(&apdu_len) {
            return Err(Failure::invalid(format!(
                "a command APDU has 4 to 65,544 bytes, not {apdu_len}"
            )));
        }
        // SAFETY: non-null, `apdu_len` readable bytes by the contract.
        let command = unsafe { std::slice::from_raw_parts(apdu, apdu_len) };
        let answer = transport.lock()?.transmit(command)?;
        // SAFETY: `resp_len` is non-null and writable by the contract.
        unsafe { resp_len.write(answer.len()) };
        if answer.len() > resp_cap {
            return Err(Failure::new(
                TESSERA_BUFFER_TOO_SMALL,
                "buffer-too-small",
                format!("the response has {} bytes, the buffer {resp_cap}", answer.len()),
            ));
        }
        // SAFETY: `answer.len() <= resp_cap` bytes into `resp`, writable
        // for `resp_cap` bytes; `answer` is our own vector, no overlap.
        unsafe { std::ptr::copy_nonoverlapping(answer.as_ptr(), resp, answer.len()) };
        Ok(Reply::ok())
    })
}

/// The PC/SC readers, as `{"v":1,"ok":true,"readers":["…"]}` in
/// `*out_json` (free with `tessera_string_free`).
///
/// # Safety
/// `out_json` is null or points to writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn tessera_pcsc_readers(out_json: *mut *mut c_char) -> i32 {
    guard(out_json, || {
        let readers = tessera_pcsc::list_readers()?;
        Ok(Reply::doc(
            TESSERA_OK,
            json!({"v": TESSERA_JSON_VERSION, "ok": true, "code": TESSERA_OK, "readers": readers}),
        ))
    })
}

/// Waits up to `timeout_ms` for a card in the reader named exactly
/// `reader`: `TESSERA_OK` when one is there, `TESSERA_CARD_REMOVED` when
/// none came in time.
///
/// # Safety
/// `reader` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn tessera_pcsc_wait_for_card(reader: *const c_char, timeout_ms: u32) -> i32 {
    guard(std::ptr::null_mut(), || {
        // SAFETY: forwarded from this function's contract.
        let reader = unsafe { str_arg(reader, "reader") }?;
        tessera_pcsc::wait_for_card(reader, true, Duration::from_millis(u64::from(timeout_ms)))?;
        Ok(Reply::ok())
    })
}
