//! Card memory with a commit journal (spec §6.4).
//!
//! A commit of `n` fields performs `2n + 2` persistent writes, in this
//! order: the `n` new values into the journal, the journal's commit flag,
//! the `n` values into their cells, and the clearing of the journal. Power
//! may fail before any of these writes. At power-up, [`Eeprom::recover`]
//! rolls a flagged journal forward and drops an unflagged one, so every
//! field of the commit holds either its old or its new value.

use std::collections::BTreeMap;

use tessera_card::{Field, Storage, StorageError};

/// Where to cut power: before the persistent write with this index
/// (counted from 0 since the hook was armed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PowerCut {
    /// Index of the write that never happens.
    pub at_write: u64,
}

/// The simulated card memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Eeprom {
    pub(crate) cells: BTreeMap<Field, Vec<u8>>,
    pub(crate) journal: Vec<(Field, Vec<u8>)>,
    pub(crate) journal_committed: bool,
    writes: u64,
    cut: Option<PowerCut>,
    dead: bool,
    generation: u64,
}

impl Eeprom {
    /// An empty memory.
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn from_parts(
        cells: BTreeMap<Field, Vec<u8>>,
        journal: Vec<(Field, Vec<u8>)>,
        journal_committed: bool,
    ) -> Self {
        Self {
            cells,
            journal,
            journal_committed,
            ..Self::default()
        }
    }

    /// Arms (or disarms) the power-cut hook and resets the write count.
    pub fn set_power_cut(&mut self, cut: Option<PowerCut>) {
        self.cut = cut;
        self.writes = 0;
    }

    /// Persistent writes performed since the hook was last armed.
    pub fn writes(&self) -> u64 {
        self.writes
    }

    /// Total persistent writes ever performed by this instance (never
    /// reset): a change marker for persistence.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether power was cut; the memory then refuses writes until
    /// [`Eeprom::recover`].
    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// Power-up recovery: completes a flagged journal, discards an
    /// unflagged one. Returns whether a commit was rolled forward.
    pub fn recover(&mut self) -> bool {
        self.dead = false;
        self.generation += 1;
        let rolled = self.journal_committed;
        if rolled {
            for (f, v) in std::mem::take(&mut self.journal) {
                self.cells.insert(f, v);
            }
        }
        self.journal.clear();
        self.journal_committed = false;
        rolled
    }

    /// Whether a journal is pending (the image was saved mid-commit).
    pub fn has_journal(&self) -> bool {
        self.journal_committed || !self.journal.is_empty()
    }

    /// The committed cells (after recovery, the card's state).
    pub fn cells(&self) -> &BTreeMap<Field, Vec<u8>> {
        &self.cells
    }

    fn write(&mut self, op: impl FnOnce(&mut Self)) -> Result<(), StorageError> {
        if self.dead {
            return Err(StorageError::PowerLost);
        }
        if self.cut.is_some_and(|c| c.at_write == self.writes) {
            self.dead = true;
            self.cut = None;
            return Err(StorageError::PowerLost);
        }
        self.writes += 1;
        self.generation += 1;
        op(self);
        Ok(())
    }
}

impl Storage for Eeprom {
    fn read(&self, field: Field) -> Option<Vec<u8>> {
        self.cells.get(&field).cloned()
    }

    fn commit(&mut self, writes: &[(Field, Vec<u8>)]) -> Result<(), StorageError> {
        for (f, v) in writes {
            self.write(|e| e.journal.push((*f, v.clone())))?;
        }
        self.write(|e| e.journal_committed = true)?;
        for (f, v) in writes {
            self.write(|e| {
                e.cells.insert(*f, v.clone());
            })?;
        }
        self.write(|e| {
            e.journal.clear();
            e.journal_committed = false;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cut_point_is_old_or_new() {
        let mut base = Eeprom::new();
        base.commit(&[(Field::Balance, vec![0; 4]), (Field::Counter, vec![0; 4])])
            .unwrap();
        let writes = [(Field::Balance, vec![0, 0, 0, 5]), (Field::Counter, vec![0, 0, 0, 1])];
        let mut new = base.clone();
        new.commit(&writes).unwrap();
        for n in 0..=(2 * writes.len() as u64 + 2) {
            let mut e = base.clone();
            e.set_power_cut(Some(PowerCut { at_write: n }));
            let r = e.commit(&writes);
            e.recover();
            let ok = e.cells == base.cells || e.cells == new.cells;
            assert!(ok, "cut at {n}: {:?}", e.cells);
            if r.is_ok() {
                assert_eq!(e.cells, new.cells);
            }
        }
    }
}
