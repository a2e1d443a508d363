//! Customer lifetime value over a horizon, from a BG/NBD fit (visits) and a
//! Gamma-Gamma fit (spend per visit).
//!
//! With `E(s)` the BG/NBD conditional expected visits in the next `s`
//! time units, `u` time units per month, `H` months, margin `g` and monthly
//! discount rate `d`:
//!
//! `CLV = g · E[M] · Σ_{i=1..H} (E(i·u) − E((i−1)·u)) / (1 + d)^i`
//!
//! Each month's expected visits are discounted at the month's end. With
//! `d = 0` the sum telescopes to `g · E[M] · E(H·u)`: expected visits in
//! the horizon times expected spend per visit times margin.

use crate::bgnbd::{self, BgNbdParams};
use crate::gamma_gamma::{self, GammaGammaParams};
use crate::{invalid, AnalyticsError};
use serde::Serialize;

/// Weeks per month in the Gregorian calendar's average: 365.2425 / 12 / 7.
pub const WEEKS_PER_MONTH: f64 = 365.2425 / 12.0 / 7.0;
/// Days per month in the Gregorian calendar's average: 365.2425 / 12.
pub const DAYS_PER_MONTH: f64 = 365.2425 / 12.0;

/// The horizon, the time unit and the money adjustments of a CLV figure.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClvOptions {
    /// Months ahead (1 to 1200).
    pub horizon_months: u32,
    /// The BG/NBD model's time units per month ([`DAYS_PER_MONTH`] for a
    /// model fitted in days, [`WEEKS_PER_MONTH`] in weeks).
    pub periods_per_month: f64,
    /// Share of spend that is margin, in `[0, 1]` (1 for revenue).
    pub margin: f64,
    /// Monthly discount rate, `>= 0` (0 for none; 0.01 ≈ 12.7 % a year).
    pub monthly_discount_rate: f64,
}

impl ClvOptions {
    fn check(&self) -> Result<(), AnalyticsError> {
        if self.horizon_months == 0 || self.horizon_months > 1200 {
            return Err(invalid(0, "the horizon must be 1 to 1200 months"));
        }
        if !(self.periods_per_month.is_finite() && self.periods_per_month > 0.0) {
            return Err(invalid(0, "periods per month must be finite and > 0"));
        }
        if !(self.margin.is_finite() && (0.0..=1.0).contains(&self.margin)) {
            return Err(invalid(0, "the margin must be within 0 and 1"));
        }
        if !(self.monthly_discount_rate.is_finite() && self.monthly_discount_rate >= 0.0) {
            return Err(invalid(0, "the discount rate must be finite and not negative"));
        }
        Ok(())
    }
}

/// One customer's lifetime value and its parts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Clv {
    /// Expected visits in the horizon (undiscounted).
    pub expected_visits: f64,
    /// Expected spend per visit (Gamma-Gamma), in the spend's money unit.
    pub expected_spend_per_visit: f64,
    /// The value by the formula of this module, in the same money unit.
    pub value: f64,
}

/// The lifetime value of a customer with BG/NBD history `(x, t_x, T)` and
/// mean repeat spend `mean_spend` (ignored when `x = 0`).
///
/// # Errors
/// [`AnalyticsError::InvalidInput`] for options out of range or a bad
/// history; the errors of [`bgnbd::conditional_expected_transactions`] and
/// [`gamma_gamma::conditional_expected_average_spend`].
pub fn customer_value(
    visits: &BgNbdParams,
    spend: &GammaGammaParams,
    (x, t_x, t): (u32, f64, f64),
    mean_spend: f64,
    opts: &ClvOptions,
) -> Result<Clv, AnalyticsError> {
    opts.check()?;
    let m = gamma_gamma::conditional_expected_average_spend(spend, x, mean_spend)?;
    let mut discounted = 0.0;
    let mut prev = 0.0;
    let mut factor = 1.0;
    for i in 1..=opts.horizon_months {
        let e = bgnbd::conditional_expected_transactions(visits, x, t_x, t, f64::from(i) * opts.periods_per_month)?;
        factor /= 1.0 + opts.monthly_discount_rate;
        discounted += (e - prev) * factor;
        prev = e;
    }
    Ok(Clv {
        expected_visits: prev,
        expected_spend_per_visit: m,
        value: opts.margin * m * discounted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * (1.0 + b.abs())
    }

    // BG/NBD r = 1, α = 1, a = 2, b = 1; a customer with x = 0, T = 1.
    // E(s) = 2 (1 − (2/(2+s)) ₂F₁(1, 1; 2; s/(2+s))), and ₂F₁(1, 1; 2; z) =
    // −ln(1−z)/z, so with z = s/(2+s), 1 − z = 2/(2+s):
    // E(s) = 2 (1 − (2/(2+s)) · ln((2+s)/2) · (2+s)/s) = 2 (1 − (2/s) ln(1 + s/2)).
    const BG: BgNbdParams = BgNbdParams {
        r: 1.0,
        alpha: 1.0,
        a: 2.0,
        b: 1.0,
    };
    // Gamma-Gamma p = 2, q = 3, γ = 10: E[M] for x = 0 is pγ/(q−1) = 10.
    const GG: GammaGammaParams = GammaGammaParams {
        p: 2.0,
        q: 3.0,
        gamma: 10.0,
    };

    fn e(s: f64) -> f64 {
        2.0 * (1.0 - (2.0 / s) * (1.0 + s / 2.0).ln())
    }

    #[test]
    fn undiscounted_value_is_visits_times_spend_times_margin() {
        // 2 months of 2 periods: E(4) = 2 (1 − 0.5 ln 3) = 0.9013877113318902.
        // CLV = 0.25 × 10 × E(4) = 2.2534692783297255.
        let opts = ClvOptions {
            horizon_months: 2,
            periods_per_month: 2.0,
            margin: 0.25,
            monthly_discount_rate: 0.0,
        };
        let v = customer_value(&BG, &GG, (0, 0.0, 1.0), 0.0, &opts).unwrap();
        assert!(close(v.expected_visits, e(4.0), 1e-12));
        assert!(close(v.expected_visits, 2.0 * (1.0 - 0.5 * 3f64.ln()), 1e-12));
        assert!(close(v.value, 0.25 * 10.0 * e(4.0), 1e-12), "{v:?}");
    }

    #[test]
    fn discounting_by_hand() {
        // d = 0.1: month 1 visits E(2) = 2 (1 − ln 2) = 0.6137056388801094,
        // month 2 visits E(4) − E(2) = 0.2876820724517808.
        // CLV = 10 × (0.61370564/1.1 + 0.28768207/1.21) = 7.95667996.
        let opts = ClvOptions {
            horizon_months: 2,
            periods_per_month: 2.0,
            margin: 1.0,
            monthly_discount_rate: 0.1,
        };
        let v = customer_value(&BG, &GG, (0, 0.0, 1.0), 0.0, &opts).unwrap();
        let want = 10.0 * (e(2.0) / 1.1 + (e(4.0) - e(2.0)) / 1.21);
        assert!(close(v.value, want, 1e-12), "{v:?} {want}");
        assert!(close(e(2.0), 2.0 * (1.0 - 2f64.ln()), 1e-12));
    }

    #[test]
    fn bad_options_are_typed_errors() {
        let ok = ClvOptions {
            horizon_months: 12,
            periods_per_month: WEEKS_PER_MONTH,
            margin: 1.0,
            monthly_discount_rate: 0.0,
        };
        for bad in [
            ClvOptions {
                horizon_months: 0,
                ..ok
            },
            ClvOptions {
                periods_per_month: 0.0,
                ..ok
            },
            ClvOptions { margin: 1.5, ..ok },
            ClvOptions { margin: f64::NAN, ..ok },
            ClvOptions {
                monthly_discount_rate: -0.1,
                ..ok
            },
        ] {
            assert!(customer_value(&BG, &GG, (0, 0.0, 1.0), 0.0, &bad).is_err(), "{bad:?}");
        }
        assert!(customer_value(&BG, &GG, (2, 0.5, 1.0), 0.0, &ok).is_err());
        assert!(customer_value(&BG, &GG, (2, 0.5, 1.0), 3.0, &ok).is_ok());
    }
}
