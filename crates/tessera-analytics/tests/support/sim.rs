//! A seeded simulator of the BG/NBD story, for the recovery test and the
//! benchmark: visit rates λ ~ gamma(r, rate α), drop-out p ~ beta(a, b);
//! first visit on a uniform day of the first 12 weeks, observation to the
//! end of week 39, times rounded down to whole days and given in weeks (as
//! in the CDNOW sample).

/// SplitMix64 (Steele, Lea & Flood 2014): small, seeded, good enough here.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform on (0, 1).
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
    /// Gamma(shape, scale 1) by Marsaglia & Tsang (2000), boosted below 1.
    pub fn gamma(&mut self, shape: f64) -> f64 {
        if shape < 1.0 {
            return self.gamma(shape + 1.0) * self.uniform().powf(1.0 / shape);
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = (1.0 + c * x).powi(3);
            if v <= 0.0 {
                continue;
            }
            let u = self.uniform();
            if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v;
            }
        }
    }
    pub fn beta(&mut self, a: f64, b: f64) -> f64 {
        let x = self.gamma(a);
        x / (x + self.gamma(b))
    }
}

/// `n` customers `(x, t_x, T)` in weeks from BG/NBD parameters.
pub fn simulate(n: usize, r: f64, alpha: f64, a: f64, b: f64, seed: u64) -> Vec<(u32, f64, f64)> {
    let mut rng = Rng::new(seed);
    let end_day = 39 * 7;
    (0..n)
        .map(|_| {
            let first_day = (rng.uniform() * 84.0) as u32;
            let t_days = end_day - first_day;
            let t = f64::from(t_days) / 7.0;
            let lambda = rng.gamma(r) / alpha;
            let p = rng.beta(a, b);
            let (mut now, mut x, mut last) = (0.0f64, 0u32, 0.0f64);
            loop {
                now += -rng.uniform().ln() / lambda;
                if now > t {
                    break;
                }
                x += 1;
                last = now;
                if rng.uniform() < p {
                    break;
                }
            }
            // Whole days, never after T.
            let t_x = if x == 0 {
                0.0
            } else {
                ((last * 7.0).floor() / 7.0).min(t)
            };
            (x, t_x, t)
        })
        .collect()
}

/// Mean spend of each customer's `x` repeat visits from Gamma-Gamma
/// parameters: ν ~ gamma(q, rate γ) per customer, each visit's spend
/// ~ gamma(p, rate ν); 0 for `x = 0`.
#[allow(dead_code)]
pub fn simulate_spend(visits: &[(u32, f64, f64)], p: f64, q: f64, gamma: f64, seed: u64) -> Vec<(u32, f64)> {
    let mut rng = Rng::new(seed);
    visits
        .iter()
        .map(|&(x, _, _)| {
            if x == 0 {
                return (0, 0.0);
            }
            let nu = rng.gamma(q) / gamma;
            let total: f64 = (0..x).map(|_| rng.gamma(p) / nu).sum();
            (x, total / f64::from(x))
        })
        .collect()
}
