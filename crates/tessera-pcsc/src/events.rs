//! Reader and card events: [`ReaderWatcher`] reports readers that come and
//! go and cards that are tapped and taken away, so a till waits for a tap
//! without polling.
//!
//! The watcher owns a PC/SC context on a thread of its own, blocked in
//! `SCardGetStatusChange` over every reader it watches plus the
//! `\\?PnP?\Notification` pseudo-reader (PC/SC part 5 §3.1.4; pcsc-lite and
//! Windows both support it), which wakes it when the reader list changes.
//! Events arrive through a [`std::sync::mpsc`] channel in the order they
//! happened. [`ReaderWatcher::stop`], or dropping the watcher, interrupts
//! the blocked call with `SCardCancel` and joins the thread.
//!
//! # When `pcscd` goes away
//! The thread ends with a last event, [`ReaderEvent::Failed`] with
//! [`PcscError::NoService`], and the channel closes. Nothing about the
//! readers is known any more: treat every card as removed, drop the watcher,
//! and start a new one (retrying [`ReaderWatcher::start`], which fails with
//! [`PcscError::NoService`] while the daemon is down, with a pause of a
//! second or so). The new watcher reports the readers and cards present when
//! it starts, so nothing needs to be remembered across the restart.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use pcsc::{Context, ReaderState, State, PNP_NOTIFICATION};

use crate::readers::{card_present, establish};
use crate::PcscError;

/// How long one `SCardGetStatusChange` may block before the watcher lists
/// the readers again anyway: a safety net against a missed notification,
/// and the polling period for the reader list where the service has no
/// `\\?PnP?\Notification` pseudo-reader.
const RELIST_PERIOD: Duration = Duration::from_secs(2);

/// How long [`ReaderWatcher::stop`] keeps cancelling the blocked call before
/// it joins the thread come what may.
const STOP_PATIENCE: Duration = Duration::from_secs(3);

/// Which readers a [`ReaderWatcher`] reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReaderFilter {
    /// Every reader.
    #[default]
    Any,
    /// The reader named exactly so.
    Exact(String),
    /// Readers whose name contains this fragment, ignoring ASCII case (as
    /// [`choose_reader`](crate::choose_reader) matches fragments).
    Contains(String),
}

impl ReaderFilter {
    /// Whether the reader named `reader` is one to report.
    pub fn matches(&self, reader: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(name) => name == reader,
            Self::Contains(fragment) => reader.to_ascii_lowercase().contains(&fragment.to_ascii_lowercase()),
        }
    }
}

/// Something that happened to the watched readers.
#[derive(Debug)]
#[non_exhaustive]
pub enum ReaderEvent {
    /// A reader appeared (or was there when the watcher started).
    ReaderAdded {
        /// Its name.
        reader: String,
    },
    /// A reader disappeared; a card that was in it is reported removed
    /// first.
    ReaderRemoved {
        /// Its name.
        reader: String,
    },
    /// A card that answers its reset is in the reader (tapped, or there
    /// when the watcher started).
    CardInserted {
        /// The reader's name.
        reader: String,
        /// The card's answer to reset.
        atr: Vec<u8>,
    },
    /// The card left the reader (or stopped answering: a mute card counts
    /// as absent). A card taken away and tapped again between two wake-ups
    /// of the watcher is reported as removed then inserted.
    CardRemoved {
        /// The reader's name.
        reader: String,
    },
    /// The watcher stopped because PC/SC failed; this is the last event.
    /// [`PcscError::NoService`] means `pcscd` went away: see
    /// [`ReaderWatcher`] for what to do.
    Failed(PcscError),
}

/// A card found by [`wait_for_tap`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tap {
    /// The reader holding it.
    pub reader: String,
    /// Its answer to reset.
    pub atr: Vec<u8>,
}

/// Watches readers on a thread of its own and reports [`ReaderEvent`]s.
///
/// The first events describe the state when the watcher started: a
/// [`ReaderEvent::ReaderAdded`] for every matching reader, followed by a
/// [`ReaderEvent::CardInserted`] when it holds a card. After that, each
/// event is a change.
///
/// Dropping the watcher stops it, as [`ReaderWatcher::stop`] does.
///
/// # When `pcscd` goes away
/// The watcher's last event is [`ReaderEvent::Failed`] with
/// [`PcscError::NoService`] ([`ReaderWatcher::recv_timeout`] returns it as
/// that error), then the channel closes. Nothing about the readers is known
/// any more: treat every card as removed, drop the watcher, and start a new
/// one, retrying [`ReaderWatcher::start`] (which fails with `NoService`
/// while the daemon is down) every second or so. The new watcher reports
/// the readers and cards present when it starts.
pub struct ReaderWatcher {
    context: Context,
    stop: Arc<AtomicBool>,
    events: Receiver<ReaderEvent>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ReaderWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReaderWatcher")
            .field("running", &self.thread.as_ref().is_some_and(|t| !t.is_finished()))
            .finish_non_exhaustive()
    }
}

impl ReaderWatcher {
    /// Starts watching the readers that match `filter`.
    ///
    /// # Errors
    /// [`PcscError::NoService`] when `pcscd` is not running, and
    /// [`PcscError::Pcsc`] when the watcher's thread cannot be started.
    pub fn start(filter: ReaderFilter) -> Result<Self, PcscError> {
        let context = establish()?;
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, events) = mpsc::channel();
        let watch = Watch {
            context: context.clone(),
            filter,
            stop: Arc::clone(&stop),
            tx,
            readers: Vec::new(),
            pnp: true,
        };
        let thread = thread::Builder::new()
            .name("tessera-pcsc-events".into())
            .spawn(move || watch.run())
            .map_err(|e| PcscError::Pcsc {
                operation: "spawning the reader watcher",
                code: 0,
                message: e.to_string(),
            })?;
        Ok(Self {
            context,
            stop,
            events,
            thread: Some(thread),
        })
    }

    /// The channel the events arrive on, for `recv`, `try_recv`, `iter` or
    /// `select`-like loops. It closes after [`ReaderEvent::Failed`] or when
    /// the watcher stops.
    pub fn events(&self) -> &Receiver<ReaderEvent> {
        &self.events
    }

    /// Waits up to `timeout` for the next event.
    ///
    /// # Errors
    /// [`PcscError::Timeout`] when nothing happened in time; the error of a
    /// [`ReaderEvent::Failed`] (`NoService` when `pcscd` went away), which
    /// this returns as an error instead of an event; and
    /// [`PcscError::WatcherStopped`] once the watcher's thread has ended.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<ReaderEvent, PcscError> {
        match self.events.recv_timeout(timeout) {
            Ok(ReaderEvent::Failed(e)) => Err(e),
            Ok(event) => Ok(event),
            Err(RecvTimeoutError::Timeout) => Err(PcscError::Timeout(timeout)),
            Err(RecvTimeoutError::Disconnected) => Err(PcscError::WatcherStopped),
        }
    }

    /// Stops the watcher: interrupts its blocked PC/SC call and joins its
    /// thread. Returns within a few milliseconds in practice; events not
    /// yet received are dropped.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(thread) = self.thread.take() else { return };
        self.stop.store(true, Ordering::SeqCst);
        // SCardCancel only interrupts a call in progress: the thread may be
        // between two calls, so cancel until it has noticed the flag.
        let deadline = Instant::now() + STOP_PATIENCE;
        while !thread.is_finished() && Instant::now() < deadline {
            // Fails when the daemon is gone, and then the thread is ending
            // by itself.
            let _ = self.context.cancel();
            thread::sleep(Duration::from_millis(2));
        }
        // The thread never panics (no unwrap in it); a join error would
        // only repeat a panic already printed.
        let _ = thread.join();
    }
}

impl Drop for ReaderWatcher {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Waits up to `timeout` for a card in a reader matching `filter` and
/// returns the reader and the card's ATR; a card already there counts.
/// Waits on PC/SC events (a [`ReaderWatcher`]), not by polling, and notices
/// readers plugged in while waiting. For one reader known by its exact name,
/// [`wait_for_card`](crate::wait_for_card) does the same without a thread.
///
/// # Errors
/// [`PcscError::Timeout`] when no card came in time,
/// [`PcscError::NoService`] when `pcscd` is not running or stops.
pub fn wait_for_tap(filter: ReaderFilter, timeout: Duration) -> Result<Tap, PcscError> {
    let watcher = ReaderWatcher::start(filter)?;
    let deadline = Instant::now() + timeout;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match watcher.recv_timeout(remaining) {
            Ok(ReaderEvent::CardInserted { reader, atr }) => return Ok(Tap { reader, atr }),
            Ok(_) => {}
            Err(PcscError::Timeout(_)) => return Err(PcscError::Timeout(timeout)),
            Err(e) => return Err(e),
        }
    }
}

/// One watched reader as the watcher last saw it.
struct Watched {
    state: ReaderState,
    name: String,
    card: bool,
    event_count: u32,
}

/// The watcher's thread.
struct Watch {
    context: Context,
    filter: ReaderFilter,
    stop: Arc<AtomicBool>,
    tx: Sender<ReaderEvent>,
    readers: Vec<Watched>,
    /// Whether the service knows the PnP pseudo-reader.
    pnp: bool,
}

/// Why the watch loop ended.
enum End {
    /// Stopped by its owner, or nobody listens any more.
    Stopped,
    /// PC/SC failed.
    Failed(PcscError),
}

impl Watch {
    fn run(mut self) {
        if let End::Failed(e) = self.watch() {
            let _ = self.tx.send(ReaderEvent::Failed(e));
        }
    }

    fn watch(&mut self) -> End {
        let mut pnp = ReaderState::new(PNP_NOTIFICATION(), State::UNAWARE);
        let mut first = true;
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return End::Stopped;
            }
            if let Err(end) = self.refresh_readers() {
                return end;
            }
            // One array for the call: the PnP pseudo-reader first, then the
            // readers (ReaderState is not Clone: move them in and out).
            let mut states = Vec::with_capacity(self.readers.len() + 1);
            if self.pnp {
                pnp.sync_current_state();
                states.push(std::mem::replace(
                    &mut pnp,
                    ReaderState::new(PNP_NOTIFICATION(), State::UNAWARE),
                ));
            }
            for r in &mut self.readers {
                r.state.sync_current_state();
                states.push(std::mem::replace(&mut r.state, ReaderState::new(c"", State::UNAWARE)));
            }
            // The first call, with every state UNAWARE, returns at once.
            let timeout = if first { Duration::ZERO } else { RELIST_PERIOD };
            first = false;
            let result = self.context.get_status_change(timeout, &mut states);
            let mut states = states.into_iter();
            if self.pnp {
                if let Some(s) = states.next() {
                    pnp = s;
                }
            }
            for (r, s) in self.readers.iter_mut().zip(states) {
                r.state = s;
            }
            match result {
                Ok(()) | Err(pcsc::Error::Timeout) => {}
                Err(pcsc::Error::Cancelled) => continue,
                // A reader vanished between the listing and the call: list
                // again, after a pause so that a reader the service lists
                // but refuses to watch cannot make this loop spin.
                Err(pcsc::Error::UnknownReader) => {
                    thread::sleep(Duration::from_millis(50));
                    continue;
                }
                Err(e) => return End::Failed(service_error("SCardGetStatusChange", e)),
            }
            if self.pnp && pnp.event_state().contains(State::UNKNOWN) {
                // No PnP notifications here: list the readers every period.
                self.pnp = false;
            }
            if let Err(end) = self.card_changes() {
                return end;
            }
        }
    }

    fn send(&self, event: ReaderEvent) -> Result<(), End> {
        self.tx.send(event).map_err(|_| End::Stopped)
    }

    /// Reports readers that left and readers that came.
    fn refresh_readers(&mut self) -> Result<(), End> {
        let names: Vec<String> = match self.context.list_readers_owned() {
            Ok(names) => names.into_iter().map(|n| n.to_string_lossy().into_owned()).collect(),
            Err(pcsc::Error::NoReadersAvailable) => Vec::new(),
            Err(e) => return Err(End::Failed(service_error("SCardListReaders", e))),
        };
        let mut i = 0;
        while i < self.readers.len() {
            let gone = !names.contains(&self.readers[i].name)
                || self.readers[i]
                    .state
                    .event_state()
                    .intersects(State::UNKNOWN | State::IGNORE);
            if gone {
                let r = self.readers.remove(i);
                if r.card {
                    self.send(ReaderEvent::CardRemoved { reader: r.name.clone() })?;
                }
                self.send(ReaderEvent::ReaderRemoved { reader: r.name })?;
            } else {
                i += 1;
            }
        }
        for name in names {
            if self.filter.matches(&name) && !self.readers.iter().any(|r| r.name == name) {
                let Ok(c_name) = crate::readers::reader_cstring(&name) else {
                    continue;
                };
                self.send(ReaderEvent::ReaderAdded { reader: name.clone() })?;
                self.readers.push(Watched {
                    state: ReaderState::new(c_name, State::UNAWARE),
                    name,
                    card: false,
                    event_count: 0,
                });
            }
        }
        Ok(())
    }

    /// Reports cards that came and went since the last call.
    fn card_changes(&mut self) -> Result<(), End> {
        let mut events = Vec::new();
        for r in &mut self.readers {
            let state = r.state.event_state();
            if state.intersects(State::UNKNOWN | State::IGNORE) {
                // The reader is gone; refresh_readers reports it.
                continue;
            }
            let present = card_present(state);
            let count = r.state.event_count();
            // pcsc-lite counts insertions and removals in the upper half of
            // the event state; a changed count with the card still there is
            // a new card (or the same one tapped again).
            let retapped = r.card && present && count != r.event_count && r.event_count != 0 && count != 0;
            if r.card && (!present || retapped) {
                events.push(ReaderEvent::CardRemoved { reader: r.name.clone() });
            }
            if present && (!r.card || retapped) {
                events.push(ReaderEvent::CardInserted {
                    reader: r.name.clone(),
                    atr: r.state.atr().to_vec(),
                });
            }
            r.card = present;
            r.event_count = count;
        }
        for e in events {
            self.send(e)?;
        }
        Ok(())
    }
}

/// A PC/SC failure of the watcher: the ways pcsc-lite says its daemon went
/// away all become [`PcscError::NoService`].
fn service_error(operation: &'static str, err: pcsc::Error) -> PcscError {
    match err {
        pcsc::Error::CommError | pcsc::Error::InvalidHandle | pcsc::Error::Shutdown => PcscError::NoService,
        other => PcscError::from_pcsc(operation, other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        assert!(ReaderFilter::Any.matches("Virtual PCD 00 00"));
        assert!(ReaderFilter::Exact("Virtual PCD 00 00".into()).matches("Virtual PCD 00 00"));
        assert!(!ReaderFilter::Exact("Virtual PCD 00".into()).matches("Virtual PCD 00 00"));
        assert!(ReaderFilter::Contains("pcd 00 01".into()).matches("Virtual PCD 00 01"));
        assert!(!ReaderFilter::Contains("acr122".into()).matches("Virtual PCD 00 01"));
        assert_eq!(ReaderFilter::default(), ReaderFilter::Any);
    }

    #[test]
    fn daemon_failures_are_no_service() {
        for e in [
            pcsc::Error::NoService,
            pcsc::Error::ServiceStopped,
            pcsc::Error::CommError,
            pcsc::Error::InvalidHandle,
        ] {
            assert!(matches!(service_error("x", e), PcscError::NoService), "{e:?}");
        }
        assert!(matches!(
            service_error("x", pcsc::Error::InsufficientBuffer),
            PcscError::Pcsc { .. }
        ));
    }
}
