//! Randomness for cards and terminals: the OS, or a seeded generator for
//! reproducible traces (spec §5.3: production challenges come from the OS).

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, OsRng, RngCore};

/// A random source: the OS by default, ChaCha20 for reproducible runs.
pub enum Rng {
    /// Operating-system randomness (the default).
    Os,
    /// ChaCha20 seeded from a number: deterministic challenges.
    Seeded(Box<ChaCha20Rng>),
}

impl Rng {
    /// A deterministic generator.
    pub fn seeded(seed: u64) -> Self {
        Self::Seeded(Box::new(ChaCha20Rng::seed_from_u64(seed)))
    }
}

impl RngCore for Rng {
    fn next_u32(&mut self) -> u32 {
        match self {
            Self::Os => OsRng.next_u32(),
            Self::Seeded(r) => r.next_u32(),
        }
    }
    fn next_u64(&mut self) -> u64 {
        match self {
            Self::Os => OsRng.next_u64(),
            Self::Seeded(r) => r.next_u64(),
        }
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        match self {
            Self::Os => OsRng.fill_bytes(dest),
            Self::Seeded(r) => r.fill_bytes(dest),
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for Rng {}
