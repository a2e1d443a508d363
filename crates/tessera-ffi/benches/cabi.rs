//! Benchmark: a cached-profile earn at the till through the C ABI and
//! through the Rust API, same setup: a simulated card image and a till
//! directory on tmpfs (`/dev/shm` when there is one), test keys, fixed
//! clock, profile cached by a first tap. One run; prints both figures and
//! the ratio. `cargo bench -p tessera-ffi --bench cabi`.

#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::ffi::{c_char, CString};
use std::path::Path;
use std::time::Instant;

use cpu_time::ProcessTime;

use tessera_crypto::keys::IssuerKeys;
use tessera_crypto::rng::Rng;
use tessera_ffi::*;
use tessera_simulator::SimCard;
use tessera_terminal::dir::TerminalDir;
use tessera_terminal::{FixedClock, SoftwareSam};

const NOW: u32 = 1_795_780_800;

fn issue(path: &Path, id: &str) {
    let p = CString::new(path.to_str().unwrap()).unwrap();
    let req = CString::new(format!(
        r#"{{"v":1,"card_id":"{id}","name":"Anna","birth_date":"1990-03-14","preferences":["coffee"]}}"#
    ))
    .unwrap();
    // SAFETY: both strings are NUL-terminated and outlive the call; no out_json.
    let rc = unsafe { tessera_sim_issue(p.as_ptr(), req.as_ptr(), std::ptr::null_mut()) };
    assert_eq!(rc, TESSERA_OK);
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n: u32 = if full { 2_000 } else { 50 };
    let base = if Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    };
    let tmp = tempfile::tempdir_in(base).unwrap();

    // C ABI.
    let card = tmp.path().join("ffi.card");
    issue(&card, "7E57000000000F01");
    let card_c = CString::new(card.to_str().unwrap()).unwrap();
    let dir_c = CString::new(tmp.path().join("ffi-till").to_str().unwrap()).unwrap();
    let opts = CString::new(format!(r#"{{"v":1,"test_keys":true,"terminal_id":3,"now":{NOW}}}"#)).unwrap();
    let mut transport = std::ptr::null_mut();
    let mut till = std::ptr::null_mut();
    // SAFETY: NUL-terminated strings alive for the calls; out-pointers to locals.
    unsafe {
        assert_eq!(tessera_transport_sim(card_c.as_ptr(), &mut transport), TESSERA_OK);
        assert_eq!(
            tessera_till_open(dir_c.as_ptr(), std::ptr::null(), opts.as_ptr(), &mut till),
            TESSERA_OK
        );
    }
    let earn = || {
        let mut out: *mut c_char = std::ptr::null_mut();
        // SAFETY: live handles; `out` is a local, freed right after.
        unsafe {
            assert_eq!(
                tessera_till_purchase(till, transport, 100, std::ptr::null(), 0, &mut out),
                TESSERA_OK
            );
            tessera_string_free(out);
        }
    };
    earn();
    let (t, cpu) = (Instant::now(), ProcessTime::now());
    for _ in 0..n {
        earn();
    }
    let (ffi, ffi_cpu) = (t.elapsed() / n, cpu.elapsed() / n);
    // SAFETY: live handles, not used afterwards.
    unsafe {
        tessera_till_close(till);
        tessera_transport_free(transport);
    }

    // Rust API, the same till and simulator.
    let card = tmp.path().join("rust.card");
    issue(&card, "7E57000000000F02");
    let mut sim = SimCard::open(&card, Rng::Os).unwrap();
    let keys = IssuerKeys::test().unwrap().terminal_keys();
    let issuer = keys.issuer_public.clone();
    let mut till = TerminalDir::new(tmp.path().join("rust-till"))
        .open_till(SoftwareSam::new(keys), &issuer, FixedClock(NOW), 4, None, 1)
        .unwrap();
    let mut earn = || {
        till.tap(&mut sim).unwrap().purchase(100, &[]).unwrap();
        let _ = till.terminal_mut().take_trace();
    };
    earn();
    let (t, cpu) = (Instant::now(), ProcessTime::now());
    for _ in 0..n {
        earn();
    }
    let (rust, rust_cpu) = (t.elapsed() / n, cpu.elapsed() / n);

    println!("Tessera till earn, C ABI vs Rust API ({n} cached-profile earns each, journal and card image on {base})");
    let us = |d: std::time::Duration| d.as_secs_f64() * 1e6;
    println!("                                               wall / earn   host CPU / earn");
    println!(
        "  C ABI  (tessera_till_purchase, JSON answer) : {:>8.1} µs   {:>8.1} µs",
        us(ffi),
        us(ffi_cpu)
    );
    println!(
        "  Rust   (Till::tap + TillTap::purchase)     : {:>8.1} µs   {:>8.1} µs",
        us(rust),
        us(rust_cpu)
    );
    println!(
        "  ratio C ABI / Rust                          : {:>8.2}      {:>8.2}",
        ffi.as_secs_f64() / rust.as_secs_f64(),
        ffi_cpu.as_secs_f64() / rust_cpu.as_secs_f64()
    );
}
