//! Bridge to the vpcd virtual reader driver (vsmartcard's `libifdvpcd`)
//! inside a running `pcscd`: a software card "inserted" into a virtual
//! reader, reachable by every PC/SC application (the Tessera terminal,
//! `opensc-tool`, `scriptor`).
//!
//! # The vpcd protocol
//! The driver listens on a TCP port (35963 for the first reader, 35964 for
//! the second, ...; see `scripts/pcscd-up.sh`) and the card connects to it:
//! an open connection is a card in the field, a closed one a card removed.
//! Every message, both ways, is a 2-byte big-endian length followed by that
//! many bytes. From the driver:
//!
//! | message | meaning | answer |
//! |---|---|---|
//! | `00` | power off | none |
//! | `01` | power on | none |
//! | `02` | warm reset | none |
//! | `04` | get ATR | the ATR |
//! | anything else | command APDU | response APDU (data + SW1 SW2) |
//!
//! Only those four single bytes are control messages. Any other message,
//! including a single byte such as `03` or `A4`, is a command APDU and goes
//! to the card: a 1-byte APDU is malformed (shorter than the 4-byte
//! header), and the card answers it with a status word (`6700`, wrong
//! length, from the Tessera applet). Swallowing it instead would leave the
//! driver, and with it `pcscd` and the application, waiting for an answer
//! that never comes.
//!
//! The driver checks that the card is still there by asking for the ATR
//! several times a second, so an idle card still sees `04` messages.
//!
//! # Card removal
//! [`ServeOptions::remove_after`] makes the card leave the field in the
//! middle of a command: the card answers the first N command APDUs of the
//! [`serve`] call, and when command N+1 arrives it closes the connection
//! without answering (after executing the command if
//! [`ServeOptions::execute_before_removal`] is set: the "response lost"
//! tearing case). The terminal sees the card vanish during that command.
//! This happens once per `serve` call. Then, if [`ServeOptions::reinsert`]
//! is set, the card comes back (connects again) after
//! [`ServeOptions::reinsert_delay`] and keeps serving; otherwise `serve`
//! returns with [`ServeEnd::Removed`].
//!
//! [`ServeOptions::remove_flag`] removes the card between two messages when
//! the flag is raised (for instance by `SIGUSR1`, see
//! [`remove_on_sigusr1`]), and always re-inserts it after
//! [`ServeOptions::reinsert_delay`]; a test process can so drive removals
//! of a card served by another process with `kill -USR1 <pid>`.
//!
//! A card whose [`VirtualCard::transmit`] answers fewer than two bytes has
//! left the field by itself (the simulator's own fault injection): it is
//! removed and re-inserted the same way.
//!
//! Whenever the connection ends (removal, `pcscd` gone), the card loses
//! power: [`VirtualCard::power_off`] is called.
//!
//! # `pcscd` restarts
//! With [`ServeOptions::reconnect`], a connection that `pcscd` closes, or
//! that cannot be made because `pcscd` is not (yet) running, is retried
//! with a backoff (50 ms doubling up to 1 s) until `stop` is set.
//!
//! Every read has a timeout of [`ServeOptions::poll_interval`], after which
//! `stop` and the removal flag are checked, so `serve` never hangs.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Where the vpcd driver of the first virtual reader listens.
pub const DEFAULT_ADDR: &str = "127.0.0.1:35963";

/// TCP port of the first vpcd reader (`0x8C7B`); reader `i` listens on
/// `DEFAULT_PORT + i` with the configuration of `scripts/pcscd-up.sh`.
pub const DEFAULT_PORT: u16 = 35963;

/// Control message: power the card off.
const CTRL_POWER_OFF: u8 = 0x00;
/// Control message: power the card on.
const CTRL_POWER_ON: u8 = 0x01;
/// Control message: warm reset.
const CTRL_RESET: u8 = 0x02;
/// Control message: send the ATR.
const CTRL_GET_ATR: u8 = 0x04;

/// First and largest pause between connection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// A message whose bytes stop arriving for this long breaks the connection.
const MESSAGE_STALL: Duration = Duration::from_secs(5);
/// Longest a write may block (the driver reads at once).
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// `SW 6F00` ("no precise diagnosis"), sent instead of a response too long
/// for the protocol's 2-byte length.
const SW_NO_PRECISE_DIAGNOSIS: [u8; 2] = [0x6F, 0x00];

/// The address of the vpcd reader with index `reader` (0-based) on this
/// machine: `127.0.0.1:35963` for the first.
pub fn reader_addr(reader: u16) -> String {
    format!("127.0.0.1:{}", DEFAULT_PORT.saturating_add(reader))
}

/// A card that can be inserted into a vpcd reader.
///
/// Implementations must not panic on any input: a malformed APDU gets a
/// status word. Power and reset calls may repeat (a card powered off can be
/// powered off again).
pub trait VirtualCard {
    /// The answer to reset (ISO/IEC 7816-3 §8).
    fn atr(&self) -> Vec<u8>;
    /// The reader powers the card (cold reset).
    fn power_on(&mut self);
    /// The reader cuts power, or the card left the field: volatile state
    /// (selection, secure channel) is lost.
    fn power_off(&mut self);
    /// Warm reset: volatile state is lost, power stays.
    fn reset(&mut self);
    /// Processes one command APDU and returns the response APDU: data
    /// followed by SW1 SW2.
    ///
    /// An answer shorter than two bytes means the card left the field
    /// during the command (a fault the card simulates): [`serve`] then
    /// closes the connection without answering, counts a removal, and
    /// inserts the card again after [`ServeOptions::reinsert_delay`].
    fn transmit(&mut self, apdu: &[u8]) -> Vec<u8>;
}

impl<T: VirtualCard + ?Sized> VirtualCard for &mut T {
    fn atr(&self) -> Vec<u8> {
        (**self).atr()
    }
    fn power_on(&mut self) {
        (**self).power_on();
    }
    fn power_off(&mut self) {
        (**self).power_off();
    }
    fn reset(&mut self) {
        (**self).reset();
    }
    fn transmit(&mut self, apdu: &[u8]) -> Vec<u8> {
        (**self).transmit(apdu)
    }
}

/// How [`serve`] connects and when it simulates removals.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// `host:port` of the vpcd driver; default [`DEFAULT_ADDR`].
    pub addr: String,
    /// Remove the card when command APDU number `n + 1` arrives, that is
    /// after answering `n` APDUs (counted from the start of [`serve`];
    /// `Some(0)` removes it at the first APDU). Once per `serve` call.
    /// Default `None`.
    pub remove_after: Option<u64>,
    /// Whether the card executes the command during which it is removed by
    /// `remove_after` (its response is lost) or not. Default `false`.
    pub execute_before_removal: bool,
    /// After a `remove_after` removal, insert the card again after
    /// `reinsert_delay` (`true`) or stay removed and return (`false`,
    /// the default).
    pub reinsert: bool,
    /// How long a removed card stays out before it is inserted again.
    /// `pcscd` polls the driver for presence every 400 ms, so a shorter
    /// absence may go unnoticed; default 1 s.
    pub reinsert_delay: Duration,
    /// Reconnect when `pcscd` closes the connection or does not listen,
    /// with backoff, until `stop` (`true`); or return at the first
    /// connection failure or loss (`false`). Default `true`.
    pub reconnect: bool,
    /// Timeout of one TCP connection attempt; default 2 s.
    pub connect_timeout: Duration,
    /// Longest time a read blocks before `stop` and `remove_flag` are
    /// checked; default 100 ms.
    pub poll_interval: Duration,
    /// When raised, the card is removed between two messages and inserted
    /// again after `reinsert_delay`; [`serve`] lowers it. Default `None`.
    pub remove_flag: Option<Arc<AtomicBool>>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            addr: DEFAULT_ADDR.to_owned(),
            remove_after: None,
            execute_before_removal: false,
            reinsert: false,
            reinsert_delay: Duration::from_secs(1),
            reconnect: true,
            connect_timeout: Duration::from_secs(2),
            poll_interval: Duration::from_millis(100),
            remove_flag: None,
        }
    }
}

/// Why [`serve`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServeEnd {
    /// `stop` was set.
    #[default]
    Stopped,
    /// The card was removed by `remove_after` and stays removed.
    Removed,
    /// `pcscd` closed the connection and `reconnect` is off.
    Disconnected,
}

/// What happened while serving.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServeStats {
    /// Connections made to the driver (insertions).
    pub connections: u64,
    /// Command APDUs answered.
    pub apdus: u64,
    /// Simulated removals (by count or by flag).
    pub removals: u64,
    /// Power-on messages received.
    pub power_ons: u64,
    /// Power-off messages received.
    pub power_offs: u64,
    /// Warm resets received.
    pub resets: u64,
    /// Why serving ended.
    pub end: ServeEnd,
}

/// Errors of [`serve`] and the signal helpers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VpcdError {
    /// The address does not resolve to a socket address.
    #[error("invalid vpcd address {addr:?}: {reason}")]
    Address {
        /// The address given.
        addr: String,
        /// Why it is not usable.
        reason: String,
    },
    /// No connection to the driver (without [`ServeOptions::reconnect`]).
    #[error("cannot connect to vpcd at {addr}: {source}")]
    Connect {
        /// The address tried.
        addr: String,
        /// The socket error.
        source: io::Error,
    },
    /// A socket could not be created or configured.
    #[error("vpcd socket error: {0}")]
    Socket(#[source] io::Error),
    /// A signal handler could not be registered.
    #[error("cannot register a signal handler: {0}")]
    Signal(#[source] io::Error),
}

/// Registers a `SIGUSR1` handler that raises the returned flag; pass it as
/// [`ServeOptions::remove_flag`] so that `kill -USR1 <pid>` removes and
/// re-inserts the card.
///
/// Unix only in effect: elsewhere (Windows) there is no `SIGUSR1`, and the
/// flag returned is one no signal raises; the card can still be removed by
/// whoever holds the flag, or with [`ServeOptions::remove_after`].
///
/// # Errors
/// [`VpcdError::Signal`] when the handler cannot be installed.
pub fn remove_on_sigusr1() -> Result<Arc<AtomicBool>, VpcdError> {
    let flag = Arc::new(AtomicBool::new(false));
    #[cfg(unix)]
    signal_hook::flag::register(signal_hook::consts::SIGUSR1, Arc::clone(&flag)).map_err(VpcdError::Signal)?;
    Ok(flag)
}

/// Registers `SIGINT` and `SIGTERM` handlers that raise the returned flag,
/// to pass (as `&flag`) as the `stop` of [`serve`]. On Windows the C
/// runtime delivers `SIGINT` for Ctrl+C (and `SIGTERM` only when raised
/// in-process), so Ctrl+C stops serving there too.
///
/// # Errors
/// [`VpcdError::Signal`] when a handler cannot be installed.
pub fn stop_on_signals() -> Result<Arc<AtomicBool>, VpcdError> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&flag)).map_err(VpcdError::Signal)?;
    }
    Ok(flag)
}

/// Inserts `card` into the vpcd reader at `opts.addr` and serves the
/// driver's requests until `stop` is set (checked at least every
/// `opts.poll_interval`), the card is removed for good, or the connection
/// is lost without `opts.reconnect`. See the module documentation for the
/// protocol and the removal rules.
///
/// # Errors
/// [`VpcdError::Address`] for an unusable address; without
/// `opts.reconnect`, [`VpcdError::Connect`] when the first connection
/// fails; [`VpcdError::Socket`] when socket options cannot be set. A
/// connection lost later is not an error: it ends with
/// [`ServeEnd::Disconnected`] or is retried.
pub fn serve(card: &mut dyn VirtualCard, opts: &ServeOptions, stop: &AtomicBool) -> Result<ServeStats, VpcdError> {
    let addrs = resolve(&opts.addr)?;
    let mut stats = ServeStats::default();
    let mut removal_armed = opts.remove_after.is_some();
    let mut backoff = BACKOFF_MIN;
    loop {
        if stop.load(Ordering::Relaxed) {
            stats.end = ServeEnd::Stopped;
            return Ok(stats);
        }
        let socket = match connect(&addrs, opts.connect_timeout) {
            Ok(socket) => socket,
            Err(source) if !opts.reconnect => {
                return Err(VpcdError::Connect {
                    addr: opts.addr.clone(),
                    source,
                })
            }
            Err(_) => {
                sleep_unless_stopped(backoff, stop);
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        configure(&socket, opts.poll_interval).map_err(VpcdError::Socket)?;
        stats.connections += 1;
        let mut session = Session {
            card: &mut *card,
            socket: &socket,
            opts,
            stop,
            stats: &mut stats,
        };
        let end = session.run(&mut removal_armed);
        // Leaving the field, like a dead reader, cuts the card's power.
        card.power_off();
        let _ = socket.shutdown(Shutdown::Both);
        drop(socket);
        match end {
            SessionEnd::Stopped => {
                stats.end = ServeEnd::Stopped;
                return Ok(stats);
            }
            SessionEnd::Removed { reinsert } => {
                stats.removals += 1;
                if !reinsert {
                    stats.end = ServeEnd::Removed;
                    return Ok(stats);
                }
                sleep_unless_stopped(opts.reinsert_delay, stop);
                backoff = BACKOFF_MIN;
            }
            SessionEnd::Closed => {
                if !opts.reconnect {
                    stats.end = ServeEnd::Disconnected;
                    return Ok(stats);
                }
                // pcscd is probably restarting: give it a moment.
                sleep_unless_stopped(BACKOFF_MIN, stop);
                backoff = BACKOFF_MIN;
            }
        }
    }
}

fn resolve(addr: &str) -> Result<Vec<SocketAddr>, VpcdError> {
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| VpcdError::Address {
            addr: addr.to_owned(),
            reason: e.to_string(),
        })?
        .collect();
    if addrs.is_empty() {
        return Err(VpcdError::Address {
            addr: addr.to_owned(),
            reason: "resolves to nothing".into(),
        });
    }
    Ok(addrs)
}

fn connect(addrs: &[SocketAddr], timeout: Duration) -> io::Result<Socket> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for addr in addrs {
        let socket = Socket::new(Domain::for_address(*addr), Type::STREAM, Some(Protocol::TCP))?;
        match socket.connect_timeout(&SockAddr::from(*addr), timeout) {
            Ok(()) => return Ok(socket),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn configure(socket: &Socket, poll_interval: Duration) -> io::Result<()> {
    // Each APDU is one small request and one small answer: never wait for
    // Nagle or delayed ACKs.
    socket.set_nodelay(true)?;
    // A zero read timeout would mean "block forever".
    socket.set_read_timeout(Some(poll_interval.max(Duration::from_millis(1))))?;
    socket.set_write_timeout(Some(WRITE_TIMEOUT))?;
    Ok(())
}

/// Sleeps for `duration` in short steps, returning early when `stop` is set.
fn sleep_unless_stopped(duration: Duration, stop: &AtomicBool) {
    let deadline = Instant::now() + duration;
    loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(20)));
    }
}

/// How one connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SessionEnd {
    Stopped,
    Removed { reinsert: bool },
    Closed,
}

/// What waiting for a message gave.
enum Incoming {
    Message(Vec<u8>),
    Stopped,
    RemoveRequested,
    Closed,
}

/// One connection to the driver: one insertion of the card.
struct Session<'a> {
    card: &'a mut dyn VirtualCard,
    socket: &'a Socket,
    opts: &'a ServeOptions,
    stop: &'a AtomicBool,
    stats: &'a mut ServeStats,
}

impl Session<'_> {
    fn run(&mut self, removal_armed: &mut bool) -> SessionEnd {
        loop {
            let message = match self.receive() {
                Incoming::Message(m) => m,
                Incoming::Stopped => return SessionEnd::Stopped,
                Incoming::RemoveRequested => return SessionEnd::Removed { reinsert: true },
                Incoming::Closed => return SessionEnd::Closed,
            };
            let sent = match message.as_slice() {
                [CTRL_POWER_OFF] => {
                    self.stats.power_offs += 1;
                    self.card.power_off();
                    Ok(())
                }
                [CTRL_POWER_ON] => {
                    self.stats.power_ons += 1;
                    self.card.power_on();
                    Ok(())
                }
                [CTRL_RESET] => {
                    self.stats.resets += 1;
                    self.card.reset();
                    Ok(())
                }
                [CTRL_GET_ATR] => self.send(&self.card.atr()),
                // vpcd defines no other control message: any other single
                // byte is a (malformed) APDU, which the card must answer.
                apdu => {
                    if *removal_armed && self.opts.remove_after.is_some_and(|n| self.stats.apdus >= n) {
                        *removal_armed = false;
                        if self.opts.execute_before_removal {
                            let _lost = self.card.transmit(apdu);
                        }
                        return SessionEnd::Removed {
                            reinsert: self.opts.reinsert,
                        };
                    }
                    let response = self.card.transmit(apdu);
                    if response.len() < 2 {
                        // No status word: the card left the field during
                        // the command (see VirtualCard::transmit).
                        return SessionEnd::Removed { reinsert: true };
                    }
                    self.stats.apdus += 1;
                    self.send(&response)
                }
            };
            if sent.is_err() {
                return SessionEnd::Closed;
            }
        }
    }

    /// Sends one message: length and payload in a single write.
    fn send(&self, payload: &[u8]) -> io::Result<()> {
        let payload = if payload.len() > usize::from(u16::MAX) {
            &SW_NO_PRECISE_DIAGNOSIS[..]
        } else {
            payload
        };
        let mut frame = Vec::with_capacity(2 + payload.len());
        frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        frame.extend_from_slice(payload);
        let mut socket = self.socket;
        socket.write_all(&frame)
    }

    /// Waits for one whole message, checking `stop` (always) and the
    /// removal flag (between messages) at every read timeout.
    fn receive(&mut self) -> Incoming {
        let mut header = [0u8; 2];
        if let Some(end) = self.fill(&mut header, true) {
            return end;
        }
        let mut payload = vec![0u8; usize::from(u16::from_be_bytes(header))];
        match self.fill(&mut payload, false) {
            Some(end) => end,
            None => Incoming::Message(payload),
        }
    }

    /// Fills `buf` from the socket. Returns `None` when it is full, or how
    /// waiting ended otherwise. `at_boundary` says no byte of the message
    /// has been read yet, so a removal can happen now.
    fn fill(&mut self, buf: &mut [u8], at_boundary: bool) -> Option<Incoming> {
        let mut filled = 0;
        let mut last_progress = Instant::now();
        while filled < buf.len() {
            if self.stop.load(Ordering::Relaxed) {
                return Some(Incoming::Stopped);
            }
            if at_boundary && filled == 0 {
                if let Some(flag) = &self.opts.remove_flag {
                    if flag.swap(false, Ordering::Relaxed) {
                        return Some(Incoming::RemoveRequested);
                    }
                }
            } else if last_progress.elapsed() > MESSAGE_STALL {
                return Some(Incoming::Closed);
            }
            // Acknowledge at once: the driver waits for our answer before
            // it sends anything else, so a delayed ACK only adds latency.
            // Linux resets QUICKACK after use, hence before every read.
            #[cfg(target_os = "linux")]
            let _ = self.socket.set_quickack(true);
            let mut socket = self.socket;
            match socket.read(&mut buf[filled..]) {
                Ok(0) => return Some(Incoming::Closed),
                Ok(n) => {
                    filled += n;
                    last_progress = Instant::now();
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => return Some(Incoming::Closed),
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::thread;

    /// Answers every APDU with its own bytes and 9000; records power events.
    #[derive(Default)]
    struct EchoCard {
        powered: bool,
        events: Vec<&'static str>,
    }

    impl VirtualCard for EchoCard {
        fn atr(&self) -> Vec<u8> {
            vec![0x3B, 0x80, 0x80, 0x01, 0x01]
        }
        fn power_on(&mut self) {
            self.powered = true;
            self.events.push("on");
        }
        fn power_off(&mut self) {
            self.powered = false;
            self.events.push("off");
        }
        fn reset(&mut self) {
            self.events.push("reset");
        }
        fn transmit(&mut self, apdu: &[u8]) -> Vec<u8> {
            if apdu == [0xFF, 0xFF, 0xFF, 0xFF] {
                return Vec::new(); // "leaves the field"
            }
            let mut r = apdu.to_vec();
            r.extend_from_slice(&[0x90, 0x00]);
            r
        }
    }

    /// The driver side of the protocol, for tests.
    struct Driver(TcpStream);

    impl Driver {
        fn accept(listener: &TcpListener) -> Self {
            let (stream, _) = listener.accept().unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            Self(stream)
        }
        fn send(&mut self, payload: &[u8]) {
            let mut frame = (payload.len() as u16).to_be_bytes().to_vec();
            frame.extend_from_slice(payload);
            self.0.write_all(&frame).unwrap();
        }
        fn recv(&mut self) -> Option<Vec<u8>> {
            let mut header = [0u8; 2];
            self.0.read_exact(&mut header).ok()?;
            let mut payload = vec![0u8; usize::from(u16::from_be_bytes(header))];
            self.0.read_exact(&mut payload).ok()?;
            Some(payload)
        }
        fn ask(&mut self, payload: &[u8]) -> Option<Vec<u8>> {
            self.send(payload);
            self.recv()
        }
    }

    fn options(listener: &TcpListener) -> ServeOptions {
        ServeOptions {
            addr: listener.local_addr().unwrap().to_string(),
            poll_interval: Duration::from_millis(10),
            reinsert_delay: Duration::from_millis(20),
            ..ServeOptions::default()
        }
    }

    #[test]
    fn answers_control_messages_and_apdus() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let opts = options(&listener);
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let server = thread::spawn(move || {
            let mut card = EchoCard::default();
            let stats = serve(&mut card, &opts, &stop2).unwrap();
            (stats, card.events)
        });
        let mut d = Driver::accept(&listener);
        d.send(&[CTRL_POWER_ON]);
        assert_eq!(d.ask(&[CTRL_GET_ATR]).unwrap(), [0x3B, 0x80, 0x80, 0x01, 0x01]);
        d.send(&[CTRL_RESET]);
        assert_eq!(
            d.ask(&[0x00, 0xA4, 0x04, 0x00]).unwrap(),
            [0x00, 0xA4, 0x04, 0x00, 0x90, 0x00]
        );
        let long = vec![0xAB; 3000];
        assert_eq!(d.ask(&long).unwrap().len(), 3002);
        d.send(&[CTRL_POWER_OFF]);
        assert_eq!(d.ask(&[CTRL_GET_ATR]).unwrap().len(), 5);
        stop.store(true, Ordering::Relaxed);
        let (stats, events) = server.join().unwrap();
        assert_eq!(stats.apdus, 2);
        assert_eq!(stats.connections, 1);
        assert_eq!((stats.power_ons, stats.power_offs, stats.resets), (1, 1, 1));
        assert_eq!(stats.end, ServeEnd::Stopped);
        assert_eq!(events, ["on", "reset", "off", "off"]);
    }

    #[test]
    fn one_byte_messages_other_than_control_codes_are_apdus() {
        // The real simulated card behind the bridge: its APDU parser answers
        // 6700 to anything shorter than the 4-byte header.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let opts = options(&listener);
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let server = thread::spawn(move || {
            let key = tessera_crypto::Key::new([0x11; 16]);
            let mut card =
                crate::SimCard::manufacture([1, 2, 3, 4, 5, 6, 7, 8], &key, crate::SimRng::seeded(7)).unwrap();
            let stats = serve(&mut card, &opts, &stop2).unwrap();
            (stats, card.is_present())
        });
        let atr = crate::ATR.to_vec();
        let wrong_length = [0x67, 0x00];
        let mut d = Driver::accept(&listener);
        d.send(&[CTRL_POWER_ON]);
        // Every control message but GET ATR goes unanswered: were one of
        // them answered, the next answer read would be that one, not the
        // ATR.
        assert_eq!(d.ask(&[CTRL_GET_ATR]).unwrap(), atr);
        for apdu in [0x03, 0xA4, 0x05, 0x80, 0xFF] {
            assert_eq!(d.ask(&[apdu]).unwrap(), wrong_length, "1-byte APDU {apdu:02X}");
        }
        d.send(&[CTRL_RESET]);
        assert_eq!(d.ask(&[CTRL_GET_ATR]).unwrap(), atr);
        assert_eq!(d.ask(&[0xA4]).unwrap(), wrong_length);
        d.send(&[CTRL_POWER_OFF]);
        assert_eq!(d.ask(&[CTRL_GET_ATR]).unwrap(), atr);
        d.send(&[CTRL_POWER_ON]);
        assert_eq!(d.ask(&[CTRL_GET_ATR]).unwrap(), atr);
        assert_eq!(d.ask(&[0x03]).unwrap(), wrong_length, "answered again after power on");
        stop.store(true, Ordering::Relaxed);
        let (stats, present) = server.join().unwrap();
        assert_eq!(stats.apdus, 7);
        assert_eq!((stats.power_ons, stats.power_offs, stats.resets), (2, 1, 1));
        assert_eq!((stats.removals, stats.connections), (0, 1));
        assert!(!present, "the connection's end powers the card off");
    }

    #[test]
    fn removal_after_n_apdus_then_stays_removed() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let opts = ServeOptions {
            remove_after: Some(2),
            ..options(&listener)
        };
        let server = thread::spawn(move || {
            let mut card = EchoCard::default();
            serve(&mut card, &opts, &AtomicBool::new(false)).unwrap()
        });
        let mut d = Driver::accept(&listener);
        assert!(d.ask(&[0, 1, 2, 3]).is_some());
        assert!(d.ask(&[0, 1, 2, 4]).is_some());
        assert_eq!(d.ask(&[0, 1, 2, 5]), None, "the third APDU is not answered");
        let stats = server.join().unwrap();
        assert_eq!((stats.apdus, stats.removals, stats.end), (2, 1, ServeEnd::Removed));
    }

    #[test]
    fn removal_then_reinsertion_keeps_serving() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let opts = ServeOptions {
            remove_after: Some(0),
            reinsert: true,
            ..options(&listener)
        };
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let server = thread::spawn(move || serve(&mut EchoCard::default(), &opts, &stop2).unwrap());
        let mut d = Driver::accept(&listener);
        assert_eq!(d.ask(&[0, 1, 2, 3]), None);
        let mut d = Driver::accept(&listener);
        assert!(d.ask(&[0, 1, 2, 3]).is_some(), "removal happens only once");
        assert!(d.ask(&[0, 1, 2, 3]).is_some());
        stop.store(true, Ordering::Relaxed);
        let stats = server.join().unwrap();
        assert_eq!((stats.apdus, stats.removals, stats.connections), (2, 1, 2));
    }

    #[test]
    fn a_card_answering_nothing_left_the_field() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let opts = options(&listener);
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let server = thread::spawn(move || serve(&mut EchoCard::default(), &opts, &stop2).unwrap());
        let mut d = Driver::accept(&listener);
        assert_eq!(d.ask(&[0xFF, 0xFF, 0xFF, 0xFF]), None);
        let mut d = Driver::accept(&listener);
        assert!(d.ask(&[0, 1, 2, 3]).is_some());
        stop.store(true, Ordering::Relaxed);
        let stats = server.join().unwrap();
        assert_eq!((stats.apdus, stats.removals, stats.connections), (1, 1, 2));
    }

    #[test]
    fn flag_removes_and_reinserts() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let flag = Arc::new(AtomicBool::new(false));
        let opts = ServeOptions {
            remove_flag: Some(Arc::clone(&flag)),
            ..options(&listener)
        };
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let server = thread::spawn(move || serve(&mut EchoCard::default(), &opts, &stop2).unwrap());
        let mut d = Driver::accept(&listener);
        assert!(d.ask(&[0, 1, 2, 3]).is_some());
        flag.store(true, Ordering::Relaxed);
        assert_eq!(d.recv(), None, "connection closed by the removal");
        let mut d = Driver::accept(&listener);
        assert!(d.ask(&[0, 1, 2, 3]).is_some());
        stop.store(true, Ordering::Relaxed);
        let stats = server.join().unwrap();
        assert_eq!((stats.removals, stats.connections), (1, 2));
        assert!(!flag.load(Ordering::Relaxed));
    }

    #[test]
    fn reconnects_when_the_driver_restarts() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let opts = options(&listener);
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let server = thread::spawn(move || serve(&mut EchoCard::default(), &opts, &stop2).unwrap());
        let mut d = Driver::accept(&listener);
        assert!(d.ask(&[0, 1, 2, 3]).is_some());
        // The "daemon" goes away: connection and listener close; nothing
        // listens for a while, then it is back on the same port.
        drop(d);
        drop(listener);
        thread::sleep(Duration::from_millis(200));
        let listener = TcpListener::bind(addr).unwrap();
        let mut d = Driver::accept(&listener);
        assert!(d.ask(&[0, 1, 2, 3]).is_some());
        stop.store(true, Ordering::Relaxed);
        let stats = server.join().unwrap();
        assert_eq!(stats.connections, 2);
    }

    #[test]
    fn without_reconnect_a_lost_connection_ends_serving() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let opts = ServeOptions {
            reconnect: false,
            ..options(&listener)
        };
        let server = thread::spawn(move || serve(&mut EchoCard::default(), &opts, &AtomicBool::new(false)).unwrap());
        drop(Driver::accept(&listener));
        assert_eq!(server.join().unwrap().end, ServeEnd::Disconnected);
    }

    #[test]
    fn without_reconnect_no_listener_is_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let opts = ServeOptions {
            reconnect: false,
            ..options(&listener)
        };
        drop(listener);
        let r = serve(&mut EchoCard::default(), &opts, &AtomicBool::new(false));
        assert!(matches!(r, Err(VpcdError::Connect { .. })));
    }

    #[test]
    fn stop_interrupts_waiting_for_the_driver() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let opts = options(&listener);
        drop(listener);
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let server = thread::spawn(move || serve(&mut EchoCard::default(), &opts, &stop2).unwrap());
        thread::sleep(Duration::from_millis(100));
        stop.store(true, Ordering::Relaxed);
        assert_eq!(server.join().unwrap().connections, 0);
    }

    #[test]
    fn bad_address_is_an_error() {
        let opts = ServeOptions {
            addr: "not an address".into(),
            ..ServeOptions::default()
        };
        let r = serve(&mut EchoCard::default(), &opts, &AtomicBool::new(false));
        assert!(matches!(r, Err(VpcdError::Address { .. })));
    }

    #[cfg(unix)]
    #[test]
    fn sigusr1_raises_the_removal_flag() {
        let flag = remove_on_sigusr1().unwrap();
        assert!(!flag.load(Ordering::Relaxed));
        signal_hook::low_level::raise(signal_hook::consts::SIGUSR1).unwrap();
        assert!(flag.load(Ordering::Relaxed));
    }

    #[test]
    fn reader_addresses() {
        assert_eq!(reader_addr(0), DEFAULT_ADDR);
        assert_eq!(reader_addr(1), "127.0.0.1:35964");
    }
}
