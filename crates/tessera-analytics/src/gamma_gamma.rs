//! The Gamma-Gamma model of spend per visit: Fader & Hardie (2013), "The
//! Gamma-Gamma Model of Monetary Value" (technical note), after Colombo &
//! Jiang (1999), "A stochastic RFM model", *Journal of Interactive
//! Marketing* 13(3), 2–12.
//!
//! Each customer is described by `(x, m̄)`: `x ≥ 1` repeat visits and `m̄`
//! the mean spend of those visits, in any money unit (the scale `gamma` and
//! every expected spend are in that unit). The spend of one visit is
//! gamma(p, ν); ν is gamma(q, γ) across customers; the model assumes spend
//! independent of visit frequency.

use crate::optimize::{nelder_mead, Tolerance};
use crate::special::ln_gamma;
use crate::{invalid, AnalyticsError};
use serde::Serialize;

/// The three Gamma-Gamma parameters; all must be finite and > 0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GammaGammaParams {
    /// Shape of the gamma distribution of one visit's spend.
    pub p: f64,
    /// Shape of the gamma distribution of ν across customers.
    pub q: f64,
    /// Rate of the gamma distribution of ν across customers; since ν is a
    /// rate per money unit, γ is in money units (it scales spend).
    pub gamma: f64,
}

impl GammaGammaParams {
    fn check(&self) -> Result<(), AnalyticsError> {
        crate::check_positive(&[
            (self.p, "p must be finite and > 0"),
            (self.q, "q must be finite and > 0"),
            (self.gamma, "gamma must be finite and > 0"),
        ])
    }

    /// The population mean spend per visit, `p γ / (q − 1)`; `None` when
    /// `q ≤ 1` (the mean is then infinite).
    pub fn population_mean_spend(&self) -> Option<f64> {
        (self.q > 1.0 && self.check().is_ok()).then(|| self.p * self.gamma / (self.q - 1.0))
    }
}

/// A maximum-likelihood fit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GammaGammaFit {
    /// The estimates.
    pub params: GammaGammaParams,
    /// The sample log-likelihood at the estimates.
    pub log_likelihood: f64,
    /// Customers used (rows with `x ≥ 1`).
    pub customers: usize,
    /// Rows ignored because `x = 0` (no repeat spend to learn from).
    pub ignored_non_repeaters: usize,
    /// Whether the best start met the tolerance.
    pub converged: bool,
    /// Log-likelihood evaluations over all starts.
    pub evaluations: usize,
}

fn check_row(i: usize, &(x, m): &(u32, f64)) -> Result<bool, AnalyticsError> {
    if x == 0 {
        return Ok(false);
    }
    if !(m.is_finite() && m > 0.0) {
        return Err(invalid(i, "the mean spend of a repeat customer must be finite and > 0"));
    }
    Ok(true)
}

fn ll_row(p: &GammaGammaParams, x: u32, m: f64) -> f64 {
    // ln f(m̄ | p, q, γ; x) = ln Γ(px+q) − ln Γ(px) − ln Γ(q) + q ln γ
    //   + (px − 1) ln m̄ + px ln x − (px + q) ln(γ + m̄ x)
    let xf = x as f64;
    let px = p.p * xf;
    ln_gamma(px + p.q) - ln_gamma(px) - ln_gamma(p.q) + p.q * p.gamma.ln() + (px - 1.0) * m.ln() + px * xf.ln()
        - (px + p.q) * (p.gamma + m * xf).ln()
}

/// The sample log-likelihood (Fader & Hardie 2013), summed over the
/// rows with `x ≥ 1`; rows with `x = 0` are skipped:
///
/// `f(m̄ | p, q, γ; x) = Γ(px+q) / (Γ(px) Γ(q)) · γ^q m̄^(px−1) x^(px) / (γ + m̄x)^(px+q)`
///
/// # Errors
/// [`AnalyticsError::InvalidParameter`] for a parameter not finite and
/// positive; [`AnalyticsError::InvalidInput`] for a repeat customer whose
/// mean spend is not finite and > 0.
pub fn log_likelihood(params: &GammaGammaParams, data: &[(u32, f64)]) -> Result<f64, AnalyticsError> {
    params.check()?;
    let mut ll = 0.0;
    for (i, row) in data.iter().enumerate() {
        if check_row(i, row)? {
            ll += ll_row(params, row.0, row.1);
        }
    }
    Ok(ll)
}

/// Maximum-likelihood fit of `(p, q, gamma)` on the rows with `x ≥ 1`:
/// Nelder–Mead on the logarithms of the parameters from three starts, each
/// converged to 1e-8 relative; the best is returned.
///
/// # Errors
/// [`AnalyticsError::NotEnoughData`] with fewer than 2 repeat customers;
/// [`AnalyticsError::InvalidInput`] as [`log_likelihood`];
/// [`AnalyticsError::NoFit`] if no start reached a finite likelihood.
pub fn fit(data: &[(u32, f64)]) -> Result<GammaGammaFit, AnalyticsError> {
    let mut rows = Vec::with_capacity(data.len());
    for (i, row) in data.iter().enumerate() {
        if check_row(i, row)? {
            rows.push(*row);
        }
    }
    if rows.len() < 2 {
        return Err(AnalyticsError::NotEnoughData {
            needed: 2,
            got: rows.len(),
        });
    }
    let n = rows.len() as f64;
    let mean_m = rows.iter().map(|r| r.1).sum::<f64>() / n;
    // The terms that depend on x alone are computed once per distinct x and
    // evaluation; ln m̄ once per row.
    let mut xs: Vec<u32> = rows.iter().map(|r| r.0).collect();
    xs.sort_unstable();
    xs.dedup();
    let prepared: Vec<(usize, f64, f64, f64)> = rows
        .iter()
        .map(|&(x, m)| (xs.binary_search(&x).unwrap_or(0), f64::from(x), m, m.ln()))
        .collect();
    let mut per_x: Vec<f64> = Vec::with_capacity(xs.len());
    let mut objective = |th: &[f64]| {
        if th.iter().any(|v| v.abs() > 50.0) {
            return f64::INFINITY;
        }
        let (p, q, g) = (th[0].exp(), th[1].exp(), th[2].exp());
        let (lg_q, ln_g) = (ln_gamma(q), g.ln());
        per_x.clear();
        per_x.extend(xs.iter().map(|&x| {
            let xf = f64::from(x);
            let px = p * xf;
            ln_gamma(px + q) - ln_gamma(px) - lg_q + q * ln_g + px * xf.ln()
        }));
        let mut ll = 0.0;
        for &(xi, xf, m, ln_m) in &prepared {
            let px = p * xf;
            ll += per_x[xi] + (px - 1.0) * ln_m - (px + q) * (g + m * xf).ln();
        }
        -ll / n
    };
    // Starts with the population mean p γ / (q − 1) at the sample mean.
    let starts = [(1.0, 2.0), (5.0, 4.0), (0.5, 10.0)];
    let mut best: Option<crate::optimize::Minimum> = None;
    let mut evaluations = 0;
    for &(p0, q0) in &starts {
        let g0 = (mean_m * (q0 - 1.0) / p0).clamp(1e-9, 1e12);
        let m = nelder_mead(
            &mut objective,
            &[f64::ln(p0), f64::ln(q0), g0.ln()],
            0.5,
            Tolerance::default(),
        );
        evaluations += m.evaluations;
        if m.value.is_finite() && !matches!(&best, Some(b) if b.value <= m.value) {
            best = Some(m);
        }
    }
    let m = best.ok_or(AnalyticsError::NoFit)?;
    Ok(GammaGammaFit {
        params: GammaGammaParams {
            p: m.x[0].exp(),
            q: m.x[1].exp(),
            gamma: m.x[2].exp(),
        },
        log_likelihood: -m.value * n,
        customers: rows.len(),
        ignored_non_repeaters: data.len() - rows.len(),
        converged: m.converged,
        evaluations,
    })
}

/// E[M | p, q, γ, m̄, x]: the expected spend per visit of a customer with
/// `x` repeat visits of mean spend `m̄` (Fader & Hardie 2013):
///
/// `p (γ + x m̄) / (p x + q − 1)`
///
/// a weighted mean of the population mean `pγ/(q−1)` (weight
/// `(q−1)/(px+q−1)`) and the customer's own `m̄` (weight `px/(px+q−1)`).
/// For `x = 0` it is the population mean and `m̄` is not used.
///
/// # Errors
/// [`AnalyticsError::InvalidParameter`] for a bad parameter, or when
/// `p x + q ≤ 1` (the expectation is infinite: for `x = 0` this is `q ≤ 1`);
/// [`AnalyticsError::InvalidInput`] for `x ≥ 1` with a mean spend not
/// finite and > 0.
pub fn conditional_expected_average_spend(
    params: &GammaGammaParams,
    x: u32,
    mean_spend: f64,
) -> Result<f64, AnalyticsError> {
    params.check()?;
    let m = if check_row(0, &(x, mean_spend))? {
        mean_spend
    } else {
        0.0
    };
    let xf = x as f64;
    let den = params.p * xf + params.q - 1.0;
    if den <= 0.0 {
        return Err(AnalyticsError::InvalidParameter(
            "p x + q must exceed 1 for a finite expected spend",
        ));
    }
    Ok(params.p * (params.gamma + xf * m) / den)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * (1.0 + b.abs())
    }

    #[test]
    fn likelihood_by_hand() {
        // p = 1, q = 2, γ = 1, x = 1, m̄ = 1:
        // Γ(3)/(Γ(1)Γ(2)) = 2; γ^q = 1; m̄^(px−1) = 1; x^(px) = 1;
        // (γ + m̄x)^(px+q) = 2^3 = 8. f = 2/8 = 1/4, ln f = −ln 4.
        let p = GammaGammaParams {
            p: 1.0,
            q: 2.0,
            gamma: 1.0,
        };
        let ll = log_likelihood(&p, &[(1, 1.0), (0, 0.0)]).unwrap();
        assert!(close(ll, -(4f64.ln()), 1e-12), "{ll}");
        // x = 2, m̄ = 0.5: Γ(4)/(Γ(2)Γ(2)) = 6; m̄^(1) = 0.5; x^2 = 4;
        // (1 + 1)^4 = 16. f = 6 · 0.5 · 4 / 16 = 0.75.
        let ll = log_likelihood(&p, &[(2, 0.5)]).unwrap();
        assert!(close(ll, 0.75f64.ln(), 1e-12), "{ll}");
    }

    #[test]
    fn conditional_spend_by_hand() {
        // p = 2, q = 3, γ = 10: population mean pγ/(q−1) = 20/2 = 10.
        let p = GammaGammaParams {
            p: 2.0,
            q: 3.0,
            gamma: 10.0,
        };
        assert_eq!(p.population_mean_spend(), Some(10.0));
        assert!(close(
            conditional_expected_average_spend(&p, 0, 0.0).unwrap(),
            10.0,
            1e-12
        ));
        // x = 4, m̄ = 25: p(γ + x m̄)/(px + q − 1) = 2 (10 + 100) / (8 + 2) = 22.
        assert!(close(
            conditional_expected_average_spend(&p, 4, 25.0).unwrap(),
            22.0,
            1e-12
        ));
        let heavy = GammaGammaParams { q: 0.5, ..p };
        assert_eq!(heavy.population_mean_spend(), None);
        assert!(conditional_expected_average_spend(&heavy, 0, 0.0).is_err());
    }

    #[test]
    fn bad_input_is_a_typed_error() {
        let p = GammaGammaParams {
            p: 1.0,
            q: 2.0,
            gamma: 1.0,
        };
        assert!(matches!(
            log_likelihood(&p, &[(1, 0.0)]),
            Err(AnalyticsError::InvalidInput { .. })
        ));
        assert!(matches!(
            log_likelihood(&p, &[(1, f64::NAN)]),
            Err(AnalyticsError::InvalidInput { .. })
        ));
        assert!(matches!(
            fit(&[(1, 5.0), (0, 0.0)]),
            Err(AnalyticsError::NotEnoughData { got: 1, .. })
        ));
        assert!(matches!(fit(&[]), Err(AnalyticsError::NotEnoughData { got: 0, .. })));
        assert!(fit(&[(1, 5.0), (2, -1.0)]).is_err());
        // Identical spends: a degenerate but valid sample gets an answer.
        assert!(fit(&[(1, 5.0), (1, 5.0), (2, 5.0)]).is_ok());
    }
}
