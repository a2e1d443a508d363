//! Reader discovery and card presence.

use std::ffi::CString;
use std::time::{Duration, Instant};

use pcsc::{Context, ReaderState, Scope, State};

use crate::PcscError;

pub(crate) fn establish() -> Result<Context, PcscError> {
    Context::establish(Scope::User).map_err(|e| PcscError::from_pcsc("SCardEstablishContext", e))
}

pub(crate) fn reader_cstring(name: &str) -> Result<CString, PcscError> {
    CString::new(name).map_err(|_| PcscError::InvalidReaderName(name.to_owned()))
}

/// Lists the names of the readers `pcscd` knows, in its order.
///
/// # Errors
/// [`PcscError::NoService`] when `pcscd` is not running; an empty list is
/// not an error.
pub fn list_readers() -> Result<Vec<String>, PcscError> {
    let ctx = establish()?;
    match ctx.list_readers_owned() {
        Ok(names) => Ok(names.into_iter().map(|n| n.to_string_lossy().into_owned()).collect()),
        Err(pcsc::Error::NoReadersAvailable) => Ok(Vec::new()),
        Err(e) => Err(PcscError::from_pcsc("SCardListReaders", e)),
    }
}

/// Chooses a reader among `readers`: the one named exactly `wanted`, or
/// else the only one whose name contains `wanted`, ignoring ASCII case. An
/// empty `wanted` therefore picks the reader when there is exactly one.
///
/// # Errors
/// [`PcscError::NoReaders`] when `readers` is empty,
/// [`PcscError::ReaderNotFound`] when no name matches and
/// [`PcscError::AmbiguousReader`] when several contain `wanted`.
pub fn choose_reader(readers: &[String], wanted: &str) -> Result<String, PcscError> {
    if readers.is_empty() {
        return Err(PcscError::NoReaders);
    }
    if let Some(exact) = readers.iter().find(|r| r.as_str() == wanted) {
        return Ok(exact.clone());
    }
    let needle = wanted.to_ascii_lowercase();
    let matches: Vec<String> = readers
        .iter()
        .filter(|r| r.to_ascii_lowercase().contains(&needle))
        .cloned()
        .collect();
    match matches.as_slice() {
        [] => Err(PcscError::ReaderNotFound {
            wanted: wanted.to_owned(),
            available: readers.to_vec(),
        }),
        [only] => Ok(only.clone()),
        _ => Err(PcscError::AmbiguousReader {
            wanted: wanted.to_owned(),
            matches,
        }),
    }
}

/// [`list_readers`] then [`choose_reader`].
///
/// # Errors
/// Those of both.
pub fn find_reader(wanted: &str) -> Result<String, PcscError> {
    choose_reader(&list_readers()?, wanted)
}

/// Whether a reader state says a card is there and can be talked to.
pub(crate) fn card_present(state: State) -> bool {
    state.contains(State::PRESENT) && !state.contains(State::MUTE)
}

/// Waits until a card is in `reader` (`present == true`) or until the
/// reader is empty (`present == false`), returning at once when that is
/// already so. Waits on PC/SC status changes (`SCardGetStatusChange`), not
/// by polling. `reader` is an exact reader name (see [`find_reader`]). A
/// card that does not answer its reset (PC/SC "mute") counts as absent.
///
/// # Errors
/// [`PcscError::Timeout`] when the state is not reached within `timeout`,
/// [`PcscError::ReaderNotFound`] when the reader does not exist or
/// disappears, [`PcscError::NoService`] when `pcscd` is not running or
/// stops.
pub fn wait_for_card(reader: &str, present: bool, timeout: Duration) -> Result<(), PcscError> {
    let ctx = establish()?;
    let name = reader_cstring(reader)?;
    let deadline = Instant::now() + timeout;
    let mut states = [ReaderState::new(name, State::UNAWARE)];
    loop {
        // The first call (current state UNAWARE) returns at once with the
        // reader's state; later calls block until it changes.
        let remaining = deadline.saturating_duration_since(Instant::now());
        match ctx.get_status_change(remaining, &mut states) {
            Ok(()) => {}
            Err(pcsc::Error::Timeout) => return Err(PcscError::Timeout(timeout)),
            Err(pcsc::Error::UnknownReader) => return Err(not_found(reader)),
            Err(e) => return Err(PcscError::from_pcsc("SCardGetStatusChange", e)),
        }
        let state = states[0].event_state();
        if state.intersects(State::UNKNOWN | State::IGNORE) {
            return Err(not_found(reader));
        }
        if card_present(state) == present {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(PcscError::Timeout(timeout));
        }
        states[0].sync_current_state();
    }
}

fn not_found(reader: &str) -> PcscError {
    PcscError::ReaderNotFound {
        wanted: reader.to_owned(),
        available: list_readers().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readers() -> Vec<String> {
        [
            "Virtual PCD 00 00",
            "Virtual PCD 00 01",
            "ACS ACR122U PICC Interface 00 00",
        ]
        .map(String::from)
        .to_vec()
    }

    #[test]
    fn exact_name_wins() {
        assert_eq!(
            choose_reader(&readers(), "Virtual PCD 00 01").unwrap(),
            "Virtual PCD 00 01"
        );
    }

    #[test]
    fn unique_fragment_any_case() {
        assert_eq!(
            choose_reader(&readers(), "acr122").unwrap(),
            "ACS ACR122U PICC Interface 00 00"
        );
        assert_eq!(choose_reader(&readers(), "00 01").unwrap(), "Virtual PCD 00 01");
    }

    #[test]
    fn ambiguous_fragment() {
        match choose_reader(&readers(), "virtual") {
            Err(PcscError::AmbiguousReader { matches, .. }) => assert_eq!(matches.len(), 2),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn exact_name_that_is_also_a_fragment_of_another() {
        let rs = ["Reader".to_owned(), "Reader 2".to_owned()];
        assert_eq!(choose_reader(&rs, "Reader").unwrap(), "Reader");
    }

    #[test]
    fn empty_fragment_picks_the_only_reader() {
        assert_eq!(choose_reader(&readers()[..1], "").unwrap(), "Virtual PCD 00 00");
        assert!(matches!(
            choose_reader(&readers(), ""),
            Err(PcscError::AmbiguousReader { .. })
        ));
    }

    #[test]
    fn missing_reader() {
        assert!(matches!(
            choose_reader(&readers(), "Omnikey"),
            Err(PcscError::ReaderNotFound { .. })
        ));
        assert!(matches!(choose_reader(&[], "x"), Err(PcscError::NoReaders)));
    }
}
