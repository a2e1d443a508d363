//! The simulated card: the applet in a card body.

use std::path::{Path, PathBuf};

use tessera_card::{Applet, CardError, CardState};
use tessera_crypto::Key;
use tessera_protocol::apdu::{Command, Response};
use tessera_protocol::StatusWord;
use tessera_transport::{Transport, TransportError};

use crate::eeprom::{Eeprom, PowerCut};
use crate::image::{self, ImageError};
use crate::vpcd::VirtualCard;
use tessera_crypto::rng::Rng as SimRng;

/// The simulator's answer to reset (spec §2): T=1, historical bytes
/// "TESSERA-01".
pub const ATR: [u8; 15] = [
    0x3B, 0x8A, 0x80, 0x01, 0x54, 0x45, 0x53, 0x53, 0x45, 0x52, 0x41, 0x2D, 0x30, 0x31, 0x60,
];

/// Fault hooks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Cut power before the N-th persistent write (counted from when the
    /// hook is set). The command in flight answers nothing and the card
    /// leaves the field.
    pub power_cut: Option<PowerCut>,
    /// Lose the response of the N-th APDU (1-based, counted from when the
    /// hook is set) after the card processed it: the card is pulled away.
    pub lose_response_of_apdu: Option<u64>,
    /// Act as a relay in the field that forges one answer: the first
    /// command with this INS is executed by the card, and its answer is
    /// replaced by the status word alone (for attack tests).
    pub relay_rewrite: Option<RelayRewrite>,
}

/// One forged answer (see [`Faults::relay_rewrite`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayRewrite {
    /// INS of the command whose answer is replaced.
    pub ins: u8,
    /// The status word sent instead of the card's answer.
    pub sw: u16,
}

enum Body {
    On(Box<Applet<Eeprom, SimRng>>),
    Off(Eeprom, SimRng),
    /// Transitional state, never observable between calls.
    Gone,
}

/// A simulated Tessera card.
pub struct SimCard {
    body: Body,
    path: Option<PathBuf>,
    saved_generation: u64,
    pending: Vec<u8>,
    pending_sw: StatusWord,
    apdus: u64,
    lose_response_of_apdu: Option<u64>,
    relay_rewrite: Option<RelayRewrite>,
}

/// Errors of the simulator itself.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The card image could not be read or written.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The card memory does not hold a valid card.
    #[error(transparent)]
    Card(#[from] CardError),
}

impl SimCard {
    /// Manufactures a blank card in memory (life-cycle personalization),
    /// powered on.
    ///
    /// # Errors
    /// Only on an internal storage failure.
    pub fn manufacture(card_id: [u8; 8], perso_key: &Key, rng: SimRng) -> Result<Self, SimError> {
        let mut e = Eeprom::new();
        Applet::<Eeprom, SimRng>::manufacture(&mut e, card_id, perso_key)?;
        Self::from_eeprom(e, rng)
    }

    /// A powered card over existing memory.
    ///
    /// # Errors
    /// [`SimError::Card`] when the memory is not a valid card.
    pub fn from_eeprom(eeprom: Eeprom, rng: SimRng) -> Result<Self, SimError> {
        let mut card = Self {
            body: Body::Off(eeprom, rng),
            path: None,
            saved_generation: 0,
            pending: Vec::new(),
            pending_sw: StatusWord::Ok,
            apdus: 0,
            lose_response_of_apdu: None,
            relay_rewrite: None,
        };
        card.power_on_checked()?;
        Ok(card)
    }

    /// Opens a card image file; the card persists itself to that file
    /// after every command that changed its memory.
    ///
    /// # Errors
    /// [`SimError`] for a missing, unreadable or corrupt image.
    pub fn open(path: &Path, rng: SimRng) -> Result<Self, SimError> {
        let e = image::load(path)?;
        let torn = e.has_journal();
        let mut card = Self::from_eeprom(e, rng)?;
        card.path = Some(path.to_owned());
        card.saved_generation = card.eeprom().map(Eeprom::generation).unwrap_or(0);
        if torn {
            // Recovery at power-up resolved a torn commit: persist the result.
            card.saved_generation = u64::MAX;
            card.persist()?;
        }
        Ok(card)
    }

    /// Binds the card to a file and writes it now.
    ///
    /// # Errors
    /// [`ImageError`] on I/O failure.
    pub fn save_as(&mut self, path: &Path) -> Result<(), ImageError> {
        self.path = Some(path.to_owned());
        self.saved_generation = u64::MAX;
        self.persist()
    }

    fn eeprom(&self) -> Option<&Eeprom> {
        match &self.body {
            Body::On(a) => Some(a.storage()),
            Body::Off(e, _) => Some(e),
            Body::Gone => None,
        }
    }

    fn persist(&mut self) -> Result<(), ImageError> {
        let Some(path) = self.path.clone() else { return Ok(()) };
        let Some(e) = self.eeprom() else { return Ok(()) };
        let generation = e.generation();
        if generation != self.saved_generation {
            image::save(&path, e)?;
            self.saved_generation = generation;
        }
        Ok(())
    }

    fn power_on_checked(&mut self) -> Result<(), SimError> {
        if let Body::Off(..) = self.body {
            let Body::Off(mut e, rng) = std::mem::replace(&mut self.body, Body::Gone) else {
                return Ok(());
            };
            e.recover();
            match Applet::new(e.clone(), rng) {
                Ok(a) => self.body = Body::On(Box::new(a)),
                Err(err) => {
                    // Keep the memory so the caller can inspect or save it.
                    self.body = Body::Off(e, SimRng::Os);
                    return Err(err.into());
                }
            }
        }
        self.pending.clear();
        Ok(())
    }

    /// Puts the card into the field (power on, recovery). A no-op when it
    /// is already powered.
    ///
    /// # Errors
    /// [`SimError`] when the memory is corrupt or cannot be saved.
    pub fn insert(&mut self) -> Result<(), SimError> {
        self.power_on_checked()?;
        self.persist()?;
        Ok(())
    }

    /// Takes the card out of the field (power off): the session is lost.
    pub fn remove(&mut self) {
        if let Body::On(_) = self.body {
            if let Body::On(a) = std::mem::replace(&mut self.body, Body::Gone) {
                let (e, rng) = a.into_parts();
                self.body = Body::Off(e, rng);
            }
        }
        self.pending.clear();
    }

    /// Whether the card is in the field and powered.
    pub fn is_present(&self) -> bool {
        matches!(self.body, Body::On(_))
    }

    /// Arms fault hooks; counts restart from zero.
    pub fn set_faults(&mut self, faults: Faults) {
        self.apdus = 0;
        self.lose_response_of_apdu = faults.lose_response_of_apdu;
        self.relay_rewrite = faults.relay_rewrite;
        match &mut self.body {
            Body::On(a) => a_storage_mut(a).set_power_cut(faults.power_cut),
            Body::Off(e, _) => e.set_power_cut(faults.power_cut),
            Body::Gone => {}
        }
    }

    /// The card's committed state (after recovery if it is powered off).
    ///
    /// # Errors
    /// [`SimError::Card`] when the memory is corrupt.
    pub fn state(&self) -> Result<CardState, SimError> {
        let mut e = self.eeprom().cloned().unwrap_or_default();
        e.recover();
        Ok(CardState::load(&e)?)
    }

    /// A copy of the memory after recovery, for byte comparisons.
    pub fn memory(&self) -> Eeprom {
        let mut e = self.eeprom().cloned().unwrap_or_default();
        e.recover();
        e
    }

    /// Persistent writes since the fault hooks were last set.
    pub fn writes(&self) -> u64 {
        self.eeprom().map(Eeprom::writes).unwrap_or(0)
    }

    /// The answer to reset.
    pub fn atr(&self) -> &'static [u8] {
        &ATR
    }

    /// One APDU through the card operating system: `61xx` chaining with
    /// GET RESPONSE for answers longer than Ne, then the applet.
    fn process(&mut self, apdu: &[u8]) -> Vec<u8> {
        let Body::On(applet) = &mut self.body else {
            return Response::status(StatusWord::ConditionsNotSatisfied).to_bytes();
        };
        let cmd = Command::parse(apdu).ok();
        if let Some(c) = cmd.as_ref().filter(|c| c.cla == 0x00 && c.ins == 0xC0) {
            if self.pending.is_empty() {
                return Response::status(StatusWord::ConditionsNotSatisfied).to_bytes();
            }
            if (c.p1, c.p2) != (0, 0) || !c.data.is_empty() {
                return Response::status(StatusWord::WrongP1P2).to_bytes();
            }
            let ne = c.le.unwrap_or(256);
            return self.chunk(ne);
        }
        self.pending.clear();
        let resp = applet.handle(apdu);
        let ne = cmd.and_then(|c| c.le).unwrap_or(256);
        if resp.len() - 2 <= ne {
            return resp;
        }
        let Ok(r) = Response::parse(&resp) else { return resp };
        self.pending = r.data;
        self.pending_sw = r.sw;
        self.chunk(ne)
    }

    fn chunk(&mut self, ne: usize) -> Vec<u8> {
        let n = ne.min(self.pending.len());
        let mut out: Vec<u8> = self.pending.drain(..n).collect();
        if self.pending.is_empty() {
            out.extend_from_slice(&self.pending_sw.to_bytes());
        } else {
            out.extend_from_slice(&StatusWord::MoreData(self.pending.len().min(255) as u8).to_bytes());
        }
        out
    }
}

fn a_storage_mut(a: &mut Applet<Eeprom, SimRng>) -> &mut Eeprom {
    a.storage_mut()
}

impl Transport for SimCard {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
        if !self.is_present() {
            return Err(TransportError::CardRemoved);
        }
        self.apdus += 1;
        let resp = self.process(command);
        let tearing = matches!(&self.body, Body::On(a) if a.is_powered_off());
        if tearing {
            // Power was cut inside a commit: the card leaves the field with
            // its memory exactly as the cut left it.
            self.remove();
            self.persist().map_err(|e| TransportError::Io(e.to_string()))?;
            return Err(TransportError::CardRemoved);
        }
        if let Err(e) = self.persist() {
            self.remove();
            return Err(TransportError::Io(e.to_string()));
        }
        if self.lose_response_of_apdu == Some(self.apdus) {
            self.remove();
            return Err(TransportError::CardRemoved);
        }
        if let Some(r) = self.relay_rewrite.filter(|r| command.get(1) == Some(&r.ins)) {
            self.relay_rewrite = None;
            return Ok(r.sw.to_be_bytes().to_vec());
        }
        Ok(resp)
    }
}

impl VirtualCard for SimCard {
    fn atr(&self) -> Vec<u8> {
        ATR.to_vec()
    }

    fn power_on(&mut self) {
        let _ = self.insert();
    }

    fn power_off(&mut self) {
        self.remove();
    }

    fn reset(&mut self) {
        if let Body::On(a) = &mut self.body {
            a.reset();
        }
        self.pending.clear();
    }

    fn transmit(&mut self, apdu: &[u8]) -> Vec<u8> {
        Transport::transmit(self, apdu).unwrap_or_default()
    }
}
