//! What every entry point does at the boundary: panics caught, pointers
//! and strings checked, results written back, the thread's last error
//! kept.

#![allow(unsafe_code)]

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use serde_json::{json, Map, Value};

use crate::codes::*;
use crate::failure::Failure;

thread_local! {
    /// The error document of this thread's last failed call.
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

/// What an entry point answers: its code and, when there is one, its
/// document.
pub(crate) struct Reply {
    pub code: i32,
    pub doc: Option<Value>,
}

impl Reply {
    pub fn ok() -> Self {
        Self {
            code: TESSERA_OK,
            doc: None,
        }
    }

    pub fn doc(code: i32, doc: Value) -> Self {
        Self { code, doc: Some(doc) }
    }
}

impl From<Failure> for Reply {
    fn from(f: Failure) -> Self {
        Self::doc(f.code, f.to_json())
    }
}

fn to_cstring(v: &Value) -> CString {
    // serde_json escapes U+0000, so a document never holds a NUL byte.
    CString::new(v.to_string()).unwrap_or_default()
}

fn set_last_error(doc: Option<&Value>, code: i32) {
    let err = match doc {
        Some(Value::Object(m)) => {
            let mut e = Map::new();
            e.insert("v".into(), json!(TESSERA_JSON_VERSION));
            for k in ["ok", "code", "code_name", "error", "kind", "pending", "reason"] {
                if let Some(v) = m.get(k) {
                    e.insert(k.into(), v.clone());
                }
            }
            e.entry("code").or_insert(json!(code));
            e.entry("code_name").or_insert(json!(code_name(code)));
            e.entry("ok").or_insert(json!(false));
            Value::Object(e)
        }
        _ => json!({"v": TESSERA_JSON_VERSION, "ok": false, "code": code, "code_name": code_name(code)}),
    };
    LAST_ERROR.with(|l| *l.borrow_mut() = Some(to_cstring(&err)));
}

fn clear_last_error() {
    LAST_ERROR.with(|l| *l.borrow_mut() = None);
}

/// Runs an entry point: no panic leaves it, `*out_json` (when the caller
/// gave one) is null or the answer, and the thread's last error is set or
/// cleared.
pub(crate) fn guard(out_json: *mut *mut c_char, f: impl FnOnce() -> Result<Reply, Failure>) -> i32 {
    if !out_json.is_null() {
        // SAFETY: the caller promises that a non-null `out_json` points to
        // writable storage for one pointer (documented on every function).
        unsafe { out_json.write(std::ptr::null_mut()) };
    }
    let reply = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(r)) => r,
        Ok(Err(failure)) => Reply::from(failure),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".into());
            Reply::from(Failure::internal(format!("internal error: {what}")))
        }
    };
    if reply.code == TESSERA_OK {
        clear_last_error();
    } else {
        set_last_error(reply.doc.as_ref(), reply.code);
    }
    if let (false, Some(doc)) = (out_json.is_null(), &reply.doc) {
        // SAFETY: as above; the string is handed over to the caller, who
        // frees it with `tessera_string_free`.
        unsafe { out_json.write(to_cstring(doc).into_raw()) };
    }
    reply.code
}

/// A required UTF-8 string argument.
///
/// # Safety
/// `p` is null or points to a NUL-terminated string valid for the call.
pub(crate) unsafe fn str_arg<'a>(p: *const c_char, what: &str) -> Result<&'a str, Failure> {
    // SAFETY: forwarded from this function's contract.
    unsafe { opt_str_arg(p, what) }?.ok_or_else(|| Failure::invalid(format!("{what} is a null pointer")))
}

/// An optional UTF-8 string argument (null: absent).
///
/// # Safety
/// `p` is null or points to a NUL-terminated string valid for the call.
pub(crate) unsafe fn opt_str_arg<'a>(p: *const c_char, what: &str) -> Result<Option<&'a str>, Failure> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: non-null, and NUL-terminated and alive by the contract.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str()
        .map(Some)
        .map_err(|_| Failure::invalid(format!("{what} is not UTF-8")))
}

/// Writes a handle to an out-parameter, or frees it when there is none.
///
/// # Safety
/// `out` is null or points to writable storage for one pointer.
pub(crate) unsafe fn put_handle<T>(out: *mut *mut T, handle: Box<T>) -> Result<Reply, Failure> {
    if out.is_null() {
        return Err(Failure::invalid("the handle out-pointer is null"));
    }
    // SAFETY: non-null and writable by the contract; ownership of the box
    // goes to the caller (freed by the matching close function).
    unsafe { out.write(Box::into_raw(handle)) };
    Ok(Reply::ok())
}

/// Frees a string returned by this library (`out_json` of any function).
/// Null is accepted and ignored.
///
/// # Safety
/// `s` is null or a string this library returned that was not freed yet.
#[no_mangle]
pub unsafe extern "C" fn tessera_string_free(s: *mut c_char) {
    if s.is_null() {
        return;
    }
    let _ = catch_unwind(|| {
        // SAFETY: by the contract, `s` came from `CString::into_raw` in
        // `guard` and is freed once.
        drop(unsafe { CString::from_raw(s) });
    });
}

/// Copies this thread's last error document (`{"v":1,"ok":false,"code":…,
/// "code_name":…,"error":…,"kind":…}`) into `buf` (at most `cap` bytes,
/// always NUL-terminated when `cap > 0`) and returns its length without
/// the NUL: when that is `cap` or more, the copy was truncated; call again
/// with a larger buffer. Returns 0 when the thread's last call succeeded.
/// `buf` may be null with `cap == 0` to ask for the length.
///
/// # Safety
/// `buf` is null or points to `cap` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn tessera_last_error(buf: *mut c_char, cap: usize) -> usize {
    catch_unwind(|| {
        LAST_ERROR.with(|l| {
            let l = l.borrow();
            let Some(err) = l.as_ref() else {
                if !buf.is_null() && cap > 0 {
                    // SAFETY: `buf` has `cap > 0` writable bytes.
                    unsafe { buf.write(0) };
                }
                return 0;
            };
            let bytes = err.as_bytes();
            if !buf.is_null() && cap > 0 {
                let n = bytes.len().min(cap - 1);
                // SAFETY: `n < cap` bytes are written to `buf`, which has
                // `cap` writable bytes, from `bytes`, which has at least `n`;
                // the two cannot overlap (`bytes` is this library's own).
                unsafe {
                    std::ptr::copy_nonoverlapping(bytes.as_ptr().cast::<c_char>(), buf, n);
                    buf.add(n).write(0);
                }
            }
            bytes.len()
        })
    })
    .unwrap_or(0)
}

/// The short name of a code (`"ok"`, `"declined"`, `"card-removed"`…), a
/// static string; `"unknown"` for a code this version does not know.
#[no_mangle]
pub extern "C" fn tessera_code_name(code: i32) -> *const c_char {
    let name: &'static CStr = match code_name(code) {
        "ok" => c"ok",
        "declined" => c"declined",
        "invalid-argument" => c"invalid-argument",
        "card-error" => c"card-error",
        "io" => c"io",
        "referred" => c"referred",
        "office-unreachable" => c"office-unreachable",
        "already-done" => c"already-done",
        "card-removed" => c"card-removed",
        "interrupted" => c"interrupted",
        "keys" => c"keys",
        "buffer-too-small" => c"buffer-too-small",
        "busy" => c"busy",
        "reader-error" => c"reader-error",
        "internal" => c"internal",
        _ => c"unknown",
    };
    name.as_ptr()
}

/// The library's version (`"0.1.0"`), a static string.
#[no_mangle]
pub extern "C" fn tessera_version() -> *const c_char {
    const VERSION: &CStr = match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(v) => v,
        Err(_) => c"unknown",
    };
    VERSION.as_ptr()
}
