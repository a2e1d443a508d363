//! The stable result codes (one table in `docs/ffi.md`). Codes 0–7 are
//! the `tessera` command's exit codes where they mean the same thing.

/// Done.
pub const TESSERA_OK: i32 = 0;
/// Declined by the card or the rules (not enough points, above a cap,
/// card blocked or hotlisted, expired…); the decline code is in the JSON.
pub const TESSERA_DECLINED: i32 = 1;
/// The caller passed a null pointer, a string that is not UTF-8, malformed
/// JSON, an unknown flag, a zero amount, the wrong card for a refund…
pub const TESSERA_INVALID_ARGUMENT: i32 = 2;
/// The card could not be used: not genuine, not a Tessera card, this till
/// not set up for its issuer or key version, a protocol error.
pub const TESSERA_CARD_ERROR: i32 = 3;
/// A file could not be read or written: the journal, a signed policy,
/// hotlist or campaign file refused, a card image.
pub const TESSERA_IO: i32 = 4;
/// Referred: the operation needs the back office.
pub const TESSERA_REFERRED: i32 = 5;
/// The back office refused the request or could not be reached.
pub const TESSERA_OFFICE_UNREACHABLE: i32 = 6;
/// Nothing new was done: this tap found that an earlier interrupted
/// operation of this till on this card went through. Pass
/// [`TESSERA_FLAG_ALLOW_REPEAT`] for a genuinely new one.
pub const TESSERA_ALREADY_DONE: i32 = 7;
/// The card left the field (or was never there) before the operation was
/// sent to it: nothing happened, tap again.
pub const TESSERA_CARD_REMOVED: i32 = 8;
/// The card left the field while it was transacting: the outcome is
/// unknown until the same card is tapped again at this till, which
/// resolves it (the JSON's `pending` tells what was asked).
pub const TESSERA_INTERRUPTED: i32 = 9;
/// The till has no usable keys: the bundle is missing, unreadable or not a
/// terminal bundle, or both or neither of a bundle and the test keys were
/// given.
pub const TESSERA_KEYS: i32 = 10;
/// The caller's buffer is too small; the needed size was written back.
pub const TESSERA_BUFFER_TOO_SMALL: i32 = 11;
/// The handle is in use by another call (another thread, or a transport
/// callback calling back into the same handle).
pub const TESSERA_BUSY: i32 = 12;
/// The reader or the link to it failed (the transmit callback reported an
/// I/O error, `pcscd` is not running, a malformed response).
pub const TESSERA_READER_ERROR: i32 = 13;
/// A bug in the library (a caught panic) or a handle left unusable by one.
pub const TESSERA_INTERNAL: i32 = 99;

/// Operation flag: go ahead even when this tap finds that an earlier
/// interrupted operation went through (the clerk confirmed the customer
/// wants another one). Without it such a tap answers
/// [`TESSERA_ALREADY_DONE`].
pub const TESSERA_FLAG_ALLOW_REPEAT: u32 = 1;

/// Transmit callback result: the response is in the buffer.
pub const TESSERA_TRANSMIT_OK: i32 = 0;
/// Transmit callback result: the card left the field; whether it executed
/// the command is unknown.
pub const TESSERA_TRANSMIT_CARD_REMOVED: i32 = 1;
/// Transmit callback result: no answer in time. Any other non-zero value
/// is a reader I/O error.
pub const TESSERA_TRANSMIT_TIMEOUT: i32 = 2;

/// The version of the JSON documents (`"v"`).
pub const TESSERA_JSON_VERSION: u32 = 1;

/// The short name of a code, as in the JSON's `code_name`.
pub(crate) fn code_name(code: i32) -> &'static str {
    match code {
        TESSERA_OK => "ok",
        TESSERA_DECLINED => "declined",
        TESSERA_INVALID_ARGUMENT => "invalid-argument",
        TESSERA_CARD_ERROR => "card-error",
        TESSERA_IO => "io",
        TESSERA_REFERRED => "referred",
        TESSERA_OFFICE_UNREACHABLE => "office-unreachable",
        TESSERA_ALREADY_DONE => "already-done",
        TESSERA_CARD_REMOVED => "card-removed",
        TESSERA_INTERRUPTED => "interrupted",
        TESSERA_KEYS => "keys",
        TESSERA_BUFFER_TOO_SMALL => "buffer-too-small",
        TESSERA_BUSY => "busy",
        TESSERA_READER_ERROR => "reader-error",
        TESSERA_INTERNAL => "internal",
        _ => "unknown",
    }
}
