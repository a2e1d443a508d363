//! Reader and card events through the real `pcscd` with vpcd virtual
//! readers: a card served by `tessera_simulator::vpcd::serve` makes
//! [`ReaderWatcher`] report `CardInserted` with its ATR, and
//! `CardRemoved` when it leaves; the readers there at the start are
//! reported as added; stopping the watcher is prompt; killing `pcscd` while
//! watching ends the watcher with `NoService`, without a hang.
//!
//! Readers added or removed while `pcscd` runs are not tested: vpcd readers
//! come from `reader.conf.d` and exist exactly while the daemon runs, and
//! the Debian pcsc-lite (1.9.9) does not re-read that configuration on
//! `SIGUSR1` / `pcscd --hotplug` (tried: the signal is logged, the reader
//! list stays the same), so vpcd cannot make a reader appear or vanish
//! under a running daemon.
//!
//! Every wait has a timeout and a watchdog aborts the binary (after
//! stopping pcscd) should something hang anyway. `TESSERA_NO_PCSCD=1`
//! skips the test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{watchdog, Pcscd, Served};
use tessera_pcsc::{wait_for_tap, PcscError, ReaderEvent, ReaderFilter, ReaderWatcher};
use tessera_simulator::vpcd::{self, ServeOptions, VirtualCard};

/// A state directory of our own: the other tests of the workspace use the
/// scripts' default and the suite's.
const DIR: &str = "/tmp/tessera-pcscd-events";
const READER0: &str = "Virtual PCD 00 00";
const READER1: &str = "Virtual PCD 00 01";
const WAIT: Duration = Duration::from_secs(10);
/// What "promptly" means for stopping a watcher.
const PROMPT: Duration = Duration::from_secs(1);

/// A card that only has an ATR: T=1 with one historical byte, `n`.
struct AtrCard(u8);

impl AtrCard {
    fn atr_of(n: u8) -> Vec<u8> {
        // TS 3B, T0 81 (TD1 follows, 1 historical byte), TD1 80 (TD2
        // follows, T=0), TD2 01 (T=1), historical byte, TCK.
        let mut atr = vec![0x3B, 0x81, 0x80, 0x01, n];
        let tck = atr[1..].iter().fold(0, |a, b| a ^ b);
        atr.push(tck);
        atr
    }
}

impl VirtualCard for AtrCard {
    fn atr(&self) -> Vec<u8> {
        Self::atr_of(self.0)
    }
    fn power_on(&mut self) {}
    fn power_off(&mut self) {}
    fn reset(&mut self) {}
    fn transmit(&mut self, _apdu: &[u8]) -> Vec<u8> {
        vec![0x90, 0x00]
    }
}

fn serve(n: u8, reader: u16) -> Served {
    Served::start(
        AtrCard(n),
        ServeOptions {
            addr: vpcd::reader_addr(reader),
            ..ServeOptions::default()
        },
    )
}

/// The next event that is not a reader event from the start-up snapshot
/// of a reader we do not care about, or a panic after `WAIT`.
fn next(w: &ReaderWatcher) -> ReaderEvent {
    match w.recv_timeout(WAIT) {
        Ok(e) => {
            eprintln!("events: {e:?}");
            e
        }
        Err(e) => panic!("no event within {WAIT:?}: {e}"),
    }
}

/// Asserts that nothing more arrives for a while.
fn quiet(w: &ReaderWatcher, d: Duration) {
    match w.recv_timeout(d) {
        Err(PcscError::Timeout(_)) => {}
        other => panic!("expected no event, got {other:?}"),
    }
}

#[test]
fn reader_and_card_events() {
    if common::skip("reader_and_card_events") {
        return;
    }
    let _dog = watchdog("reader_and_card_events", Duration::from_secs(150), Some(DIR.into()));
    let mut pcscd = Pcscd::start_in(Some(Path::new(DIR)), 2);

    eprintln!("events: the start-up snapshot names the readers, no card");
    let w = ReaderWatcher::start(ReaderFilter::Any).unwrap();
    let mut seen = Vec::new();
    for _ in 0..2 {
        match next(&w) {
            ReaderEvent::ReaderAdded { reader } => seen.push(reader),
            other => panic!("{other:?}"),
        }
    }
    seen.sort();
    assert_eq!(seen, [READER0, READER1]);
    quiet(&w, Duration::from_millis(500));

    eprintln!("events: a card inserted, then removed");
    let served = serve(0x54, 0);
    match next(&w) {
        ReaderEvent::CardInserted { reader, atr } => {
            assert_eq!(reader, READER0);
            assert_eq!(atr, AtrCard::atr_of(0x54));
        }
        other => panic!("{other:?}"),
    }
    // A card already there counts for wait_for_tap, and a fragment filter
    // finds its reader.
    let tap = wait_for_tap(ReaderFilter::Contains("pcd 00 00".into()), WAIT).unwrap();
    assert_eq!((tap.reader.as_str(), tap.atr.clone()), (READER0, AtrCard::atr_of(0x54)));
    served.finish();
    match next(&w) {
        ReaderEvent::CardRemoved { reader } => assert_eq!(reader, READER0),
        other => panic!("{other:?}"),
    }

    eprintln!("events: a second card in the other reader, seen by a filtered watcher");
    let only1 = ReaderWatcher::start(ReaderFilter::Exact(READER1.into())).unwrap();
    assert!(matches!(next(&only1), ReaderEvent::ReaderAdded { reader } if reader == READER1));
    let served = serve(0x55, 1);
    match next(&only1) {
        ReaderEvent::CardInserted { reader, atr } => {
            assert_eq!(reader, READER1);
            assert_eq!(atr, AtrCard::atr_of(0x55));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(next(&w), ReaderEvent::CardInserted { reader, .. } if reader == READER1));
    drop(served);
    assert!(matches!(next(&only1), ReaderEvent::CardRemoved { reader } if reader == READER1));
    assert!(matches!(next(&w), ReaderEvent::CardRemoved { reader } if reader == READER1));
    let started = Instant::now();
    drop(only1);
    assert!(started.elapsed() < PROMPT, "drop took {:?}", started.elapsed());

    eprintln!("events: stopping a watcher blocked in SCardGetStatusChange is prompt");
    quiet(&w, Duration::from_millis(300));
    let started = Instant::now();
    w.stop();
    assert!(started.elapsed() < PROMPT, "stop took {:?}", started.elapsed());

    eprintln!("events: wait_for_tap times out");
    let started = Instant::now();
    let r = wait_for_tap(ReaderFilter::Any, Duration::from_millis(400));
    assert!(matches!(r, Err(PcscError::Timeout(_))), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());

    eprintln!("events: pcscd killed while watching");
    let w = ReaderWatcher::start(ReaderFilter::Any).unwrap();
    let served = serve(0x57, 0);
    let mut got_card = false;
    while !got_card {
        got_card = matches!(next(&w), ReaderEvent::CardInserted { .. });
    }
    assert!(pcscd.signal("KILL"));
    let started = Instant::now();
    let end = loop {
        match w.recv_timeout(WAIT) {
            Ok(e) => eprintln!("events: before the failure: {e:?}"),
            Err(e) => break e,
        }
    };
    eprintln!("events: after {:?}: {end}", started.elapsed());
    // A daemon killed in the middle of a call sometimes answers that call
    // with "security violation" (0x8010006A) from pcsclite's half-closed
    // socket: NoService once nothing listens on the socket any more (the
    // library checks), that code while the dying daemon still accepts;
    // either way the watcher stops.
    assert!(
        matches!(end, PcscError::NoService) || matches!(&end, PcscError::Pcsc { code, .. } if *code == 0x8010_006A),
        "{end:?}"
    );
    assert!(matches!(w.recv_timeout(WAIT), Err(PcscError::WatcherStopped)));
    let started = Instant::now();
    w.stop();
    assert!(started.elapsed() < PROMPT, "stop took {:?}", started.elapsed());
    // Once the killed daemon is torn down, nobody answers.
    assert!(pcscd.wait_gone(), "the killed pcscd is still there");
    let again = ReaderWatcher::start(ReaderFilter::Any);
    assert!(matches!(again, Err(PcscError::NoService)), "{:?}", again.err());
    assert!(matches!(
        wait_for_tap(ReaderFilter::Any, WAIT),
        Err(PcscError::NoService)
    ));
    drop(served);

    eprintln!("events: a new watcher after the daemon is back reports the state afresh");
    pcscd.stop();
    let mut pcscd = Pcscd::start_in(Some(Path::new(DIR)), 2);
    let served = serve(0x58, 0);
    let tap = wait_for_tap(ReaderFilter::Exact(READER0.into()), WAIT).unwrap();
    assert_eq!(tap.atr, AtrCard::atr_of(0x58));

    eprintln!("events: pcscd stopped in order (SIGTERM) while watching");
    let w = ReaderWatcher::start(ReaderFilter::Exact(READER0.into())).unwrap();
    assert!(matches!(next(&w), ReaderEvent::ReaderAdded { .. }));
    assert!(matches!(next(&w), ReaderEvent::CardInserted { .. }));
    pcscd.stop();
    let end = loop {
        match w.recv_timeout(WAIT) {
            Ok(e) => eprintln!("events: before the failure: {e:?}"),
            Err(e) => break e,
        }
    };
    assert!(matches!(end, PcscError::NoService), "{end:?}");
    drop(w);
    drop(served);
}
