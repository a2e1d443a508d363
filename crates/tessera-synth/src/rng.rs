//! The generator's own pseudo-random numbers: xoshiro256** seeded through
//! SplitMix64, and the distributions the behaviour model draws from.
//!
//! Written out here rather than taken from a crate so that a seed gives
//! the same history forever, whatever the versions of the dependencies.

/// SplitMix64 (Steele, Lea, Flood 2014): one step.
pub(crate) fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// xoshiro256** (Blackman, Vigna 2018).
#[derive(Debug, Clone)]
pub(crate) struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A stream for `(seed, stream, index)`: independent streams for each
    /// customer and purpose.
    pub(crate) fn new(seed: u64, stream: u64, index: u64) -> Self {
        let mut st = seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ index.wrapping_mul(0x8CB9_2BA7_2F3D_8DD7);
        let s = [
            splitmix64(&mut st),
            splitmix64(&mut st),
            splitmix64(&mut st),
            splitmix64(&mut st),
        ];
        Self { s }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub(crate) fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in (0, 1].
    fn open01(&mut self) -> f64 {
        1.0 - self.f64()
    }

    /// Uniform integer in `0..n` (`n` ≥ 1).
    pub(crate) fn below(&mut self, n: u32) -> u32 {
        // Multiply-shift: bias below 2^-32, irrelevant here.
        u32::try_from((u64::from(n) * (self.next_u64() >> 32)) >> 32).unwrap_or(0)
    }

    /// True with probability `p`.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }

    /// Exponential with mean 1.
    pub(crate) fn exp1(&mut self) -> f64 {
        -self.open01().ln()
    }

    /// Standard normal (Box–Muller, one of the pair).
    fn normal(&mut self) -> f64 {
        let u = self.open01();
        let v = self.f64();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// Gamma with `shape` and scale 1 (Marsaglia–Tsang 2000; shape < 1
    /// by the boost `G(a) = G(a + 1) · U^(1/a)`).
    pub(crate) fn gamma(&mut self, shape: f64) -> f64 {
        if shape < 1.0 {
            let u = self.open01();
            return self.gamma(shape + 1.0) * u.powf(1.0 / shape);
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = 1.0 + c * x;
            if v <= 0.0 {
                continue;
            }
            let v = v * v * v;
            let u = self.open01();
            if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v;
            }
        }
    }

    /// Beta(a, b), from two gammas.
    pub(crate) fn beta(&mut self, a: f64, b: f64) -> f64 {
        let x = self.gamma(a);
        let y = self.gamma(b);
        x / (x + y)
    }

    /// An index drawn with the given weights (not all zero).
    pub(crate) fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u32 = weights.iter().sum();
        let mut r = self.below(total.max(1));
        for (i, w) in weights.iter().enumerate() {
            if r < *w {
                return i;
            }
            r -= w;
        }
        weights.len().saturating_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..4).map(|_| Rng::new(7, 1, 2).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(Rng::new(7, 1, 2).next_u64(), Rng::new(7, 1, 3).next_u64());
        assert_ne!(Rng::new(7, 1, 2).next_u64(), Rng::new(8, 1, 2).next_u64());
    }

    #[test]
    fn moments_match_the_distributions() {
        let mut r = Rng::new(1, 2, 3);
        let n = 200_000;
        let mean = |f: &mut dyn FnMut() -> f64| (0..n).map(|_| f()).sum::<f64>() / f64::from(n);
        let g = mean(&mut || r.gamma(2.5));
        assert!((g - 2.5).abs() < 0.03, "gamma mean {g}");
        let g = mean(&mut || r.gamma(0.4));
        assert!((g - 0.4).abs() < 0.01, "gamma mean {g}");
        let b = mean(&mut || r.beta(2.0, 30.0));
        assert!((b - 2.0 / 32.0).abs() < 0.002, "beta mean {b}");
        let e = mean(&mut || r.exp1());
        assert!((e - 1.0).abs() < 0.01, "exp mean {e}");
    }
}
