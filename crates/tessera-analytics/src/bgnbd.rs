//! The BG/NBD model of repeat visits: Fader, Hardie & Lee (2005),
//! "«Counting Your Customers» the Easy Way: An Alternative to the
//! Pareto/NBD Model", *Marketing Science* 24(2), 275–284.
//!
//! Each customer is described by `(x, t_x, T)`: `x` repeat visits (visits
//! after the first) in the observation window `(0, T]`, where 0 is the
//! first visit, the last repeat visit at `t_x` (0 when `x = 0`), and `T`
//! the time from the first visit to the end of observation. Time is in any
//! unit the caller chooses (days, weeks); the scale parameter `alpha` and
//! every horizon are in that unit.
//!
//! While active, a customer visits as a Poisson process of rate λ, with λ
//! gamma-distributed across customers (shape `r`, rate `alpha`); after each
//! repeat visit they become inactive with probability p, with p
//! beta-distributed across customers (`a`, `b`).

use crate::optimize::{nelder_mead, Tolerance};
use crate::special::{hyp2f1, ln_gamma};
use crate::{invalid, AnalyticsError};
use serde::Serialize;
use std::collections::BTreeMap;

/// The four BG/NBD parameters; all must be finite and > 0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BgNbdParams {
    /// Shape of the gamma distribution of visit rates.
    pub r: f64,
    /// Rate (inverse scale) of the gamma distribution of visit rates, in
    /// the caller's time unit.
    pub alpha: f64,
    /// First shape of the beta distribution of the drop-out probability.
    pub a: f64,
    /// Second shape of the beta distribution of the drop-out probability.
    pub b: f64,
}

impl BgNbdParams {
    fn check(&self) -> Result<(), AnalyticsError> {
        crate::check_positive(&[
            (self.r, "r must be finite and > 0"),
            (self.alpha, "alpha must be finite and > 0"),
            (self.a, "a must be finite and > 0"),
            (self.b, "b must be finite and > 0"),
        ])
    }
}

/// A maximum-likelihood fit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BgNbdFit {
    /// The estimates.
    pub params: BgNbdParams,
    /// The sample log-likelihood at the estimates (natural log, summed over
    /// customers).
    pub log_likelihood: f64,
    /// Customers in the sample.
    pub customers: usize,
    /// Whether the best start met the tolerance (relative 1e-8 on the
    /// objective and on the parameters) within its evaluation budget. A
    /// population that never returns (every `x = 0`) has no interior
    /// maximum, and is reported here as not converged.
    pub converged: bool,
    /// Log-likelihood evaluations over all starts.
    pub evaluations: usize,
}

/// Checks one row. `t_x` must be 0 when `x` is 0: a last repeat visit
/// without any repeat visit is a contradiction in the caller's data.
fn check_row(i: usize, &(x, t_x, t): &(u32, f64, f64)) -> Result<(), AnalyticsError> {
    if !(t_x.is_finite() && t.is_finite()) {
        return Err(invalid(i, "t_x and T must be finite"));
    }
    if t_x < 0.0 || t < 0.0 {
        return Err(invalid(i, "t_x and T must not be negative"));
    }
    if t_x > t {
        return Err(invalid(
            i,
            "the last repeat visit t_x is after the end of observation T",
        ));
    }
    if x == 0 && t_x != 0.0 {
        return Err(invalid(i, "t_x must be 0 for a customer with no repeat visit"));
    }
    Ok(())
}

/// The sample, compressed to distinct `(x, t_x, T)` with their counts,
/// with the distinct `x` values (the gamma-function terms depend on `x`
/// alone) and the distinct times (`ln(α + τ)` is computed once per time
/// value and evaluation: visit data in days have few distinct times).
struct Sample {
    /// Distinct x values, ascending.
    xs: Vec<u32>,
    /// Distinct t_x and T values, ascending.
    times: Vec<f64>,
    /// Per row: index into `xs`, index of t_x and of T into `times`, count.
    rows: Vec<(usize, usize, usize, f64)>,
    customers: usize,
    mean_x: f64,
    mean_t: f64,
}

/// Per-evaluation scratch space of [`Sample::log_likelihood`].
#[derive(Default)]
struct Scratch {
    per_x: Vec<[f64; 3]>,
    ln_times: Vec<f64>,
}

impl Sample {
    fn new(data: &[(u32, f64, f64)]) -> Result<Sample, AnalyticsError> {
        let mut groups: BTreeMap<(u32, u64, u64), u64> = BTreeMap::new();
        let mut times: BTreeMap<u64, usize> = BTreeMap::new();
        let (mut sx, mut st) = (0.0, 0.0);
        for (i, row) in data.iter().enumerate() {
            check_row(i, row)?;
            let (x, t_x, t) = *row;
            // +0.0 and -0.0 compare equal; normalise so they share a key.
            let key = (x, (t_x + 0.0).to_bits(), (t + 0.0).to_bits());
            *groups.entry(key).or_insert(0) += 1;
            times.insert(key.1, 0);
            times.insert(key.2, 0);
            sx += x as f64;
            st += t;
        }
        // Non-negative floats order as their bit patterns do.
        for (i, slot) in times.values_mut().enumerate() {
            *slot = i;
        }
        let mut xs: Vec<u32> = groups.keys().map(|k| k.0).collect();
        xs.dedup();
        let rows = groups
            .iter()
            .map(|(&(x, tx, t), &n)| {
                let xi = xs.binary_search(&x).unwrap_or(0);
                let txi = times.get(&tx).copied().unwrap_or(0);
                let ti = times.get(&t).copied().unwrap_or(0);
                (xi, txi, ti, n as f64)
            })
            .collect();
        let times = times.keys().map(|&b| f64::from_bits(b)).collect();
        let n = data.len().max(1) as f64;
        Ok(Sample {
            xs,
            times,
            rows,
            customers: data.len(),
            mean_x: sx / n,
            mean_t: st / n,
        })
    }

    fn log_likelihood(&self, p: &BgNbdParams, scratch: &mut Scratch) -> f64 {
        let BgNbdParams { r, alpha, a, b } = *p;
        let (ln_alpha, lg_r, lg_b, lg_ab) = (alpha.ln(), ln_gamma(r), ln_gamma(b), ln_gamma(a + b));
        let ln_a = a.ln();
        scratch.per_x.clear();
        for &x in &self.xs {
            let xf = x as f64;
            // ln[Γ(r+x) α^r / Γ(r)] + ln[B(a, b+x) / B(a, b)]
            let g = ln_gamma(r + xf) - lg_r + r * ln_alpha + lg_ab + ln_gamma(b + xf) - lg_b - ln_gamma(a + b + xf);
            // ln[a / (b + x − 1)], the ratio B(a+1, b+x−1) / B(a, b+x).
            let q = if x > 0 {
                ln_a - (b + xf - 1.0).ln()
            } else {
                f64::NEG_INFINITY
            };
            scratch.per_x.push([g, q, r + xf]);
        }
        scratch.ln_times.clear();
        scratch.ln_times.extend(self.times.iter().map(|t| (alpha + t).ln()));
        let (per_x, ln_t) = (&scratch.per_x, &scratch.ln_times);
        let mut ll = 0.0;
        for &(xi, txi, ti, n) in &self.rows {
            let [g, q, rx] = per_x[xi];
            let a3 = -rx * ln_t[ti];
            let term = if q == f64::NEG_INFINITY {
                a3
            } else {
                let a4 = q - rx * ln_t[txi];
                let (hi, lo) = if a3 >= a4 { (a3, a4) } else { (a4, a3) };
                hi + (lo - hi).exp().ln_1p()
            };
            ll += n * (g + term);
        }
        ll
    }
}

/// The sample log-likelihood of the BG/NBD model (FHL 2005), summed over
/// customers:
///
/// ```text
/// L = B(a, b+x)/B(a, b) · Γ(r+x) α^r / (Γ(r) (α+T)^(r+x))
///   + [x > 0] B(a+1, b+x−1)/B(a, b) · Γ(r+x) α^r / (Γ(r) (α+t_x)^(r+x))
/// ```
///
/// computed in logarithms (log-sum-exp for the two terms).
///
/// # Errors
/// [`AnalyticsError::InvalidParameter`] for a parameter not finite and
/// positive; [`AnalyticsError::InvalidInput`] for a row with non-finite or
/// negative times, `t_x > T`, or `t_x ≠ 0` with `x = 0`.
pub fn log_likelihood(params: &BgNbdParams, data: &[(u32, f64, f64)]) -> Result<f64, AnalyticsError> {
    params.check()?;
    let sample = Sample::new(data)?;
    Ok(sample.log_likelihood(params, &mut Scratch::default()))
}

/// Largest |ln θ| the fit explores: parameters stay within e^±50.
const LOG_BOUND: f64 = 50.0;

/// Maximum-likelihood fit of `(r, alpha, a, b)`: Nelder–Mead on the
/// logarithms of the parameters from three starts (see `docs/analytics.md`),
/// each to a coarse tolerance (1e-5 on −LL/N, 1e-3 on the log parameters);
/// the best is then polished to [`Tolerance::default`], 1e-8 relative on
/// −LL/N and on the parameters.
///
/// # Errors
/// [`AnalyticsError::NotEnoughData`] for an empty sample;
/// [`AnalyticsError::InvalidInput`] for a bad row (see [`log_likelihood`]);
/// [`AnalyticsError::NoFit`] if no start reached a finite likelihood.
pub fn fit(data: &[(u32, f64, f64)]) -> Result<BgNbdFit, AnalyticsError> {
    fit_with(data, Tolerance::default())
}

/// [`fit`] with an explicit tolerance.
///
/// # Errors
/// As [`fit`].
pub fn fit_with(data: &[(u32, f64, f64)], tol: Tolerance) -> Result<BgNbdFit, AnalyticsError> {
    let sample = Sample::new(data)?;
    if sample.customers == 0 {
        return Err(AnalyticsError::NotEnoughData { needed: 1, got: 0 });
    }
    let n = sample.customers as f64;
    let mut scratch = Scratch::default();
    let mut objective = |th: &[f64]| {
        if th.iter().any(|v| v.abs() > LOG_BOUND) {
            return f64::INFINITY;
        }
        let p = BgNbdParams {
            r: th[0].exp(),
            alpha: th[1].exp(),
            a: th[2].exp(),
            b: th[3].exp(),
        };
        -sample.log_likelihood(&p, &mut scratch) / n
    };
    // Starts: r0 × mean(T) / mean(x) puts the NBD mean rate r/α at the
    // sample's visits per unit time, for three spreads of r, a and b.
    let rate_t = sample.mean_t.max(1e-6) / sample.mean_x.max(1e-3);
    let starts: [(f64, f64, f64); 3] = [(1.0, 1.0, 1.0), (0.3, 0.5, 2.0), (3.0, 2.0, 8.0)];
    // Each start is run to a coarse tolerance; the best is then polished
    // to the full one.
    let coarse = Tolerance {
        f_rel: tol.f_rel.max(1e-5),
        x_abs: tol.x_abs.max(1e-3),
        ..tol
    };
    let mut best: Option<crate::optimize::Minimum> = None;
    let mut evaluations = 0;
    for &(r0, a0, b0) in &starts {
        let alpha0 = (r0 * rate_t).clamp(1e-6, 1e6);
        let m = nelder_mead(&mut objective, &[r0.ln(), alpha0.ln(), a0.ln(), b0.ln()], 0.5, coarse);
        evaluations += m.evaluations;
        if m.value.is_finite() && !matches!(&best, Some(b) if b.value <= m.value) {
            best = Some(m);
        }
    }
    let start = best.ok_or(AnalyticsError::NoFit)?;
    let polished = nelder_mead(&mut objective, &start.x, 0.05, tol);
    evaluations += polished.evaluations;
    let m = if polished.value <= start.value {
        polished
    } else {
        crate::optimize::Minimum {
            converged: false,
            ..start
        }
    };
    let params = BgNbdParams {
        r: m.x[0].exp(),
        alpha: m.x[1].exp(),
        a: m.x[2].exp(),
        b: m.x[3].exp(),
    };
    Ok(BgNbdFit {
        params,
        log_likelihood: -m.value * n,
        customers: sample.customers,
        converged: m.converged,
        evaluations,
    })
}

/// ln of the odds term `[x > 0] · a/(b+x−1) · ((α+T)/(α+t_x))^(r+x)` shared
/// by P(alive) and the conditional expectation.
fn ln_dead_odds(p: &BgNbdParams, x: u32, t_x: f64, t: f64) -> f64 {
    if x == 0 {
        return f64::NEG_INFINITY;
    }
    let xf = x as f64;
    p.a.ln() - (p.b + xf - 1.0).ln() + (p.r + xf) * ((p.alpha + t).ln() - (p.alpha + t_x).ln())
}

/// P(alive | x, t_x, T): the probability that the customer is still active
/// at `T`, from the two terms of the likelihood (FHL 2005):
///
/// `1 / (1 + [x > 0] · a/(b+x−1) · ((α+T)/(α+t_x))^(r+x))`
///
/// It is 1 for a customer with no repeat visit (the model lets a customer
/// drop out only after a repeat visit).
///
/// # Errors
/// As [`log_likelihood`] for the parameters and the row.
pub fn probability_alive(p: &BgNbdParams, x: u32, t_x: f64, t: f64) -> Result<f64, AnalyticsError> {
    p.check()?;
    check_row(0, &(x, t_x, t))?;
    let lo = ln_dead_odds(p, x, t_x, t);
    Ok(1.0 / (1.0 + lo.exp()))
}

/// E[Y(t) | x, t_x, T]: the expected number of visits in the next `horizon`
/// time units of a customer with history `(x, t_x, T)` (FHL 2005):
///
/// ```text
///   (a+b+x−1)/(a−1) · [1 − ((α+T)/(α+T+t))^(r+x) ₂F₁(r+x, b+x; a+b+x−1; t/(α+T+t))]
/// / (1 + [x > 0] · a/(b+x−1) · ((α+T)/(α+t_x))^(r+x))
/// ```
///
/// At `a = 1` the expression has a removable singularity; within 1e-6 of it
/// the value is the mean of the values at `a = 1 ± 1e-6`.
///
/// # Errors
/// As [`log_likelihood`] for the parameters and the row;
/// [`AnalyticsError::InvalidInput`] for a negative or non-finite horizon, or
/// one so long against `α + T` that the hypergeometric series does not
/// converge.
pub fn conditional_expected_transactions(
    p: &BgNbdParams,
    x: u32,
    t_x: f64,
    t: f64,
    horizon: f64,
) -> Result<f64, AnalyticsError> {
    p.check()?;
    check_row(0, &(x, t_x, t))?;
    if !(horizon.is_finite() && horizon >= 0.0) {
        return Err(invalid(0, "the horizon must be finite and not negative"));
    }
    if horizon == 0.0 {
        return Ok(0.0);
    }
    let v = if (p.a - 1.0).abs() < 1e-6 {
        let lo = BgNbdParams { a: 1.0 - 1e-6, ..*p };
        let hi = BgNbdParams { a: 1.0 + 1e-6, ..*p };
        0.5 * (cond_exp(&lo, x, t_x, t, horizon) + cond_exp(&hi, x, t_x, t, horizon))
    } else {
        cond_exp(p, x, t_x, t, horizon)
    };
    if v.is_finite() {
        Ok(v.max(0.0))
    } else {
        Err(invalid(0, "the horizon is too long against alpha + T for the series"))
    }
}

fn cond_exp(p: &BgNbdParams, x: u32, t_x: f64, t: f64, h: f64) -> f64 {
    let BgNbdParams { r, alpha, a, b } = *p;
    let xf = x as f64;
    let z = h / (alpha + t + h);
    let f = hyp2f1(r + xf, b + xf, a + b + xf - 1.0, z);
    let lead = (a + b + xf - 1.0) / (a - 1.0);
    let pow = ((r + xf) * ((alpha + t).ln() - (alpha + t + h).ln())).exp();
    let num = lead * (1.0 - pow * f);
    num / (1.0 + ln_dead_odds(p, x, t_x, t).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: BgNbdParams = BgNbdParams {
        r: 0.243,
        alpha: 4.414,
        a: 0.793,
        b: 2.426,
    };

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * (1.0 + b.abs())
    }

    #[test]
    fn likelihood_of_a_non_repeater_by_hand() {
        // x = 0: L = (α/(α+T))^r. r = 1, α = 1, T = 3: L = 1/4, ln L = −ln 4.
        let p = BgNbdParams {
            r: 1.0,
            alpha: 1.0,
            a: 1.0,
            b: 1.0,
        };
        let ll = log_likelihood(&p, &[(0, 0.0, 3.0)]).unwrap();
        assert!(close(ll, -(4f64.ln()), 1e-12), "{ll}");
    }

    #[test]
    fn likelihood_of_a_repeater_by_hand() {
        // r = α = a = b = 1, x = 1, t_x = 1, T = 3.
        // B(1, 2)/B(1, 1) = (1/2)/1 = 1/2; Γ(2) α^1 / Γ(1) = 1.
        // First term: 1/2 · 1 / (1+3)^2 = 1/32.
        // Second: B(2, 1)/B(1, 1) = 1/2; 1/2 · 1 / (1+1)^2 = 1/8.
        // L = 1/32 + 4/32 = 5/32, ln L = ln 5 − ln 32.
        let p = BgNbdParams {
            r: 1.0,
            alpha: 1.0,
            a: 1.0,
            b: 1.0,
        };
        let ll = log_likelihood(&p, &[(1, 1.0, 3.0)]).unwrap();
        assert!(close(ll, 5f64.ln() - 32f64.ln(), 1e-12), "{ll}");
        // The sample log-likelihood is the sum over rows.
        let ll2 = log_likelihood(&p, &[(1, 1.0, 3.0), (0, 0.0, 3.0), (1, 1.0, 3.0)]).unwrap();
        assert!(close(ll2, 2.0 * (5f64.ln() - 32f64.ln()) - 4f64.ln(), 1e-12));
    }

    #[test]
    fn p_alive_by_hand() {
        // No repeat visit: 1.
        assert_eq!(probability_alive(&P, 0, 0.0, 10.0).unwrap(), 1.0);
        // r = α = a = b = 1, x = 1, t_x = 1, T = 3:
        // odds = a/(b+x−1) · ((α+T)/(α+t_x))^(r+x) = 1/1 · (4/2)^2 = 4;
        // P(alive) = 1/(1+4) = 0.2.
        let p = BgNbdParams {
            r: 1.0,
            alpha: 1.0,
            a: 1.0,
            b: 1.0,
        };
        assert!(close(probability_alive(&p, 1, 1.0, 3.0).unwrap(), 0.2, 1e-12));
        // A last visit at T: odds = 1 · (4/4)^2 = 1, P = 0.5.
        assert!(close(probability_alive(&p, 1, 3.0, 3.0).unwrap(), 0.5, 1e-12));
    }

    #[test]
    fn conditional_expectation_by_hand() {
        // r = 1, α = 1, a = 2, b = 1, x = 0, T = 1, horizon t = 2.
        // z = t/(α+T+t) = 2/4 = 1/2; lead = (a+b+x−1)/(a−1) = 2/1 = 2.
        // ((α+T)/(α+T+t))^(r+x) = (2/4)^1 = 1/2.
        // ₂F₁(r+x, b+x; a+b+x−1; z) = ₂F₁(1, 1; 2; 1/2) = −ln(1/2)/(1/2) = 2 ln 2.
        // E = 2 · (1 − 1/2 · 2 ln 2) / 1 = 2 (1 − ln 2) = 0.6137056388801094.
        let p = BgNbdParams {
            r: 1.0,
            alpha: 1.0,
            a: 2.0,
            b: 1.0,
        };
        let e = conditional_expected_transactions(&p, 0, 0.0, 1.0, 2.0).unwrap();
        assert!(close(e, 2.0 * (1.0 - 2f64.ln()), 1e-12), "{e}");
        assert_eq!(conditional_expected_transactions(&p, 0, 0.0, 1.0, 0.0).unwrap(), 0.0);
    }

    #[test]
    fn conditional_expectation_is_continuous_through_a_equal_one() {
        let at = |a: f64| {
            let p = BgNbdParams { a, ..P };
            conditional_expected_transactions(&p, 3, 20.0, 30.0, 10.0).unwrap()
        };
        let (below, one, above) = (at(0.999), at(1.0), at(1.001));
        assert!(one.is_finite() && one > 0.0);
        assert!(
            (below - one).abs() < 1e-3 && (above - one).abs() < 1e-3,
            "{below} {one} {above}"
        );
    }

    #[test]
    fn bad_rows_and_parameters_are_typed_errors() {
        assert!(matches!(
            log_likelihood(&P, &[(1, 5.0, 4.0)]),
            Err(AnalyticsError::InvalidInput { .. })
        ));
        assert!(matches!(
            log_likelihood(&P, &[(0, 1.0, 4.0)]),
            Err(AnalyticsError::InvalidInput { .. })
        ));
        assert!(matches!(
            log_likelihood(&P, &[(0, 0.0, 1.0), (1, f64::NAN, 4.0)]),
            Err(AnalyticsError::InvalidInput { index: 1, .. })
        ));
        assert!(matches!(
            log_likelihood(&P, &[(1, -1.0, 4.0)]),
            Err(AnalyticsError::InvalidInput { .. })
        ));
        let bad = BgNbdParams { r: 0.0, ..P };
        assert!(matches!(
            log_likelihood(&bad, &[]),
            Err(AnalyticsError::InvalidParameter(_))
        ));
        let bad = BgNbdParams {
            alpha: f64::INFINITY,
            ..P
        };
        assert!(probability_alive(&bad, 0, 0.0, 1.0).is_err());
        assert!(conditional_expected_transactions(&P, 0, 0.0, 1.0, -1.0).is_err());
        assert!(conditional_expected_transactions(&P, 0, 0.0, 1.0, f64::NAN).is_err());
        assert!(matches!(fit(&[]), Err(AnalyticsError::NotEnoughData { .. })));
    }

    #[test]
    fn degenerate_samples_do_not_panic() {
        // Nobody returns: no interior maximum, but an answer, not a panic.
        let none: Vec<_> = (0..50).map(|i| (0, 0.0, 10.0 + i as f64)).collect();
        let f = fit(&none).unwrap();
        assert!(f.log_likelihood.is_finite());
        // All observed for zero time.
        let f = fit(&[(0, 0.0, 0.0), (0, 0.0, 0.0)]).unwrap();
        assert!(f.log_likelihood.is_finite());
        // A single customer.
        assert!(fit(&[(3, 2.0, 5.0)]).is_ok());
    }
}
