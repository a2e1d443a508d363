//! The whole PC/SC path with no hardware: a test card served by
//! `tessera_simulator::vpcd::serve` into a vpcd virtual reader of a real
//! `pcscd` (started by `scripts/pcscd-up.sh`), and `PcscTransport` talking to
//! it through that daemon.
//!
//! Covers plain exchanges, `61xx` chaining, `6Cxx` retries, extended APDUs,
//! card removal (→ `CardRemoved`, then a new tap works), `pcscd` restart
//! (→ recovered on the next call), an independent PC/SC client
//! (`opensc-tool`) and the round-trip latency (printed, not asserted).
//!
//! Needs `pcscd` and the vpcd driver (the scripts install them when
//! missing). `TESSERA_NO_PCSCD=1` skips the test with a message; without it,
//! a `pcscd` that cannot be started is a failure.

// A test: failing loudly at the first surprise is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{watchdog, Pcscd, Served};

use tessera_pcsc::{find_reader, list_readers, wait_for_card, CardProtocol, PcscError, PcscTransport};
use tessera_protocol::AID;
use tessera_simulator::vpcd::{self, ServeEnd, ServeOptions, VirtualCard};
use tessera_transport::{Transport, TransportError};

const READER: &str = "Virtual PCD 00 00";
const WAIT: Duration = Duration::from_secs(10);
/// The whole test must end well within this, or the watchdog aborts it
/// (after stopping pcscd).
const WATCHDOG: Duration = Duration::from_secs(180);

const INS_ECHO: u8 = 0x01;
const INS_LONG: u8 = 0xCA;
const INS_EXACT: u8 = 0xB0;
const LONG_LEN: usize = 700;
const EXACT_LEN: u8 = 8;

/// A card exercising the transport rules: SELECT by AID, echo, a long
/// answer given in `61xx` parts, and an answer that insists on Le = 8.
#[derive(Default)]
struct TestCard {
    powered: bool,
    selected: bool,
    pending: Vec<u8>,
}

impl TestCard {
    fn long_payload() -> Vec<u8> {
        (0..LONG_LEN).map(|i| (i % 251) as u8).collect()
    }

    /// Hands out up to `max` pending bytes, with `61xx` when more remain.
    fn next_part(&mut self, max: usize) -> Vec<u8> {
        let n = max.min(self.pending.len());
        let mut out: Vec<u8> = self.pending.drain(..n).collect();
        match self.pending.len() {
            0 => out.extend([0x90, 0x00]),
            left => out.extend([0x61, left.min(256) as u8]),
        }
        out
    }
}

impl VirtualCard for TestCard {
    fn atr(&self) -> Vec<u8> {
        // The PC/SC contactless shape: TS 3B, T0 80 (TD1 follows), TD1 80
        // (TD2 follows), TD2 01 (T=1), then TCK.
        let mut atr = vec![0x3B, 0x80, 0x80, 0x01];
        let tck = atr[1..].iter().fold(0, |a, b| a ^ b);
        atr.push(tck);
        atr
    }
    fn power_on(&mut self) {
        self.powered = true;
        self.selected = false;
    }
    fn power_off(&mut self) {
        self.powered = false;
        self.selected = false;
    }
    fn reset(&mut self) {
        self.selected = false;
        self.pending.clear();
    }
    fn transmit(&mut self, apdu: &[u8]) -> Vec<u8> {
        if !self.powered {
            return vec![0x6F, 0x00];
        }
        let Ok(cmd) = tessera_protocol::Command::parse(apdu) else {
            return vec![0x67, 0x00];
        };
        match (cmd.cla, cmd.ins) {
            (0x00, 0xA4) if cmd.p1 == 0x04 && cmd.data == AID => {
                self.selected = true;
                vec![0x6F, 0x03, 0x84, 0x01, 0x01, 0x90, 0x00]
            }
            (0x00, 0xA4) => vec![0x6A, 0x82],
            (0x00, 0xC0) if !self.pending.is_empty() => self.next_part(cmd.le.unwrap_or(256)),
            _ if !self.selected => vec![0x69, 0x85],
            (0x80, INS_ECHO) => {
                let mut r = cmd.data.clone();
                r.extend([0x90, 0x00]);
                r
            }
            (0x80, INS_LONG) => {
                self.pending = Self::long_payload();
                // The first part is shorter than a GET RESPONSE part, as
                // T=0 cards often do.
                self.next_part(100)
            }
            (0x80, INS_EXACT) => match cmd.le {
                Some(le) if le == usize::from(EXACT_LEN) => {
                    let mut r = vec![0xEE; usize::from(EXACT_LEN)];
                    r.extend([0x90, 0x00]);
                    r
                }
                _ => vec![0x6C, EXACT_LEN],
            },
            _ => vec![0x6D, 0x00],
        }
    }
}

fn serve_options() -> ServeOptions {
    ServeOptions {
        addr: vpcd::reader_addr(0),
        reinsert_delay: Duration::from_millis(1500),
        ..ServeOptions::default()
    }
}

fn select() -> Vec<u8> {
    let mut c = vec![0x00, 0xA4, 0x04, 0x00, AID.len() as u8];
    c.extend_from_slice(&AID);
    c.push(0x00);
    c
}

fn sw(r: &[u8]) -> u16 {
    u16::from_be_bytes([r[r.len() - 2], r[r.len() - 1]])
}

fn step(name: &str) {
    eprintln!("vpcd_loop: {name}");
}

#[test]
fn vpcd_loop() {
    if common::skip("vpcd_loop") {
        return;
    }
    let _watchdog = watchdog("vpcd_loop", WATCHDOG, None);
    let mut pcscd = Pcscd::start();

    step("readers");
    let readers = list_readers().unwrap();
    assert!(readers.iter().any(|r| r == READER), "{readers:?}");
    assert_eq!(find_reader("00 00").unwrap(), READER);
    assert!(matches!(PcscTransport::connect(READER), Err(PcscError::NoCard(_))));
    let short = Duration::from_millis(300);
    assert!(matches!(wait_for_card(READER, true, short), Err(PcscError::Timeout(_))));
    wait_for_card(READER, false, short).unwrap();
    assert!(matches!(
        wait_for_card("No Such Reader", true, short),
        Err(PcscError::ReaderNotFound { .. })
    ));

    step("insert the card");
    let served = Served::start(TestCard::default(), serve_options());
    wait_for_card(READER, true, WAIT).unwrap();

    step("transmit through pcscd");
    let mut t = PcscTransport::connect(READER).unwrap();
    assert_eq!(t.protocol(), Some(CardProtocol::T1));
    assert_eq!(t.atr(), TestCard::default().atr());
    let r = t.transmit(&select()).unwrap();
    assert_eq!(r, [0x6F, 0x03, 0x84, 0x01, 0x01, 0x90, 0x00]);
    let r = t.transmit(&[0x80, INS_ECHO, 0, 0, 3, 1, 2, 3, 0]).unwrap();
    assert_eq!(r, [1, 2, 3, 0x90, 0x00]);

    step("61xx chaining");
    let r = t.transmit(&[0x80, INS_LONG, 0, 0, 0]).unwrap();
    assert_eq!(sw(&r), 0x9000);
    assert_eq!(&r[..r.len() - 2], TestCard::long_payload());

    step("6Cxx retry");
    let r = t.transmit(&[0x80, INS_EXACT, 0, 0, 0]).unwrap();
    assert_eq!(r.len(), usize::from(EXACT_LEN) + 2);
    assert_eq!(sw(&r), 0x9000);

    step("extended length");
    let data = vec![0x5A; 1000];
    let cmd = tessera_protocol::Command {
        cla: 0x80,
        ins: INS_ECHO,
        p1: 0,
        p2: 0,
        data: data.clone(),
        le: Some(65_536),
    };
    match t.transmit(&cmd.to_bytes()) {
        Ok(r) => {
            assert_eq!(sw(&r), 0x9000);
            assert_eq!(&r[..r.len() - 2], data);
        }
        Err(e) => panic!("extended APDU through pcscd/vpcd failed: {e}"),
    }

    step("round-trip latency");
    let echo = [0x80, INS_ECHO, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0];
    let mut times = Vec::new();
    for _ in 0..300 {
        let start = Instant::now();
        let r = t.transmit(&echo).unwrap();
        times.push(start.elapsed());
        assert_eq!(sw(&r), 0x9000);
    }
    times.sort();
    eprintln!(
        "vpcd_loop: round trip through pcscd+vpcd over {} APDUs: median {:?}, p90 {:?}, max {:?}",
        times.len(),
        times[times.len() / 2],
        times[times.len() * 9 / 10],
        times[times.len() - 1]
    );

    step("independent client: opensc-tool");
    let hex: Vec<String> = select().iter().map(|b| format!("{b:02X}")).collect();
    let out = Command::new("opensc-tool")
        .args(["--reader", READER, "--send-apdu", &hex.join(":")])
        .output()
        .expect("opensc-tool (installed by scripts/install-deps.sh)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("SW1=0x90, SW2=0x00"), "opensc-tool said: {text}");
    // opensc-tool may let go of the card with a reset: our session may be
    // gone, and a SELECT starts a new one.
    let r = t.transmit(&select()).unwrap();
    assert_eq!(sw(&r), 0x9000);

    let stats = served.finish();
    assert_eq!(stats.end, ServeEnd::Stopped);
    eprintln!("vpcd_loop: first card: {stats:?}");
    wait_for_card(READER, false, WAIT).unwrap();

    step("card removal during a command");
    let served = Served::start(
        TestCard::default(),
        ServeOptions {
            remove_after: Some(2),
            reinsert: true,
            ..serve_options()
        },
    );
    wait_for_card(READER, true, WAIT).unwrap();
    let r = t.transmit(&select()).unwrap();
    assert_eq!(sw(&r), 0x9000);
    let r = t.transmit(&[0x80, INS_ECHO, 0, 0, 1, 9, 0]).unwrap();
    assert_eq!(r, [9, 0x90, 0x00]);
    let r = t.transmit(&[0x80, INS_ECHO, 0, 0, 1, 9, 0]);
    assert!(matches!(r, Err(TransportError::CardRemoved)), "{r:?}");
    wait_for_card(READER, false, WAIT).unwrap();
    step("new tap after the removal");
    wait_for_card(READER, true, WAIT).unwrap();
    let r = t.transmit(&select()).unwrap();
    assert_eq!(sw(&r), 0x9000);
    let r = t.transmit(&[0x80, INS_ECHO, 0, 0, 1, 7, 0]).unwrap();
    assert_eq!(r, [7, 0x90, 0x00]);
    let r = t.reconnect().unwrap();
    assert_eq!(sw(&r), 0x9000, "reconnect() re-selects");

    step("pcscd restart while the terminal is idle");
    pcscd.stop();
    let mut pcscd = Pcscd::start();
    wait_for_card(READER, true, WAIT).unwrap();
    let r = t.transmit(&select()).expect("first SELECT after the restart");
    assert_eq!(sw(&r), 0x9000);
    let r = t.transmit(&[0x80, INS_ECHO, 0, 0, 1, 5, 0]).unwrap();
    assert_eq!(r, [5, 0x90, 0x00]);

    step("pcscd restart in the middle of a session");
    pcscd.stop();
    let r = t.transmit(&[0x80, INS_ECHO, 0, 0, 1, 5, 0]);
    assert!(matches!(r, Err(TransportError::CardRemoved)), "{r:?}");
    let _pcscd = Pcscd::start();
    wait_for_card(READER, true, WAIT).unwrap();
    let r = t.transmit(&select()).unwrap();
    assert_eq!(sw(&r), 0x9000);

    step("no pcscd at all");
    drop(_pcscd);
    assert!(matches!(list_readers(), Err(PcscError::NoService)));
    let r = t.transmit(&[0x80, INS_ECHO, 0, 0, 1, 5, 0]);
    assert!(matches!(r, Err(TransportError::CardRemoved)), "in flight: {r:?}");
    let r = t.transmit(&select());
    assert!(matches!(r, Err(TransportError::Io(_))), "no service: {r:?}");

    let stats = served.finish();
    eprintln!("vpcd_loop: second card: {stats:?}");
    assert_eq!(stats.removals, 1);
    assert!(stats.connections >= 4, "{stats:?}");
}
