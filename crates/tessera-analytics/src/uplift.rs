//! Campaign uplift: the difference in a per-customer measure (visits,
//! spend) between the customers a campaign treated and its held-out
//! control group, with a 95 % confidence interval.
//!
//! Which customers are eligible, treated or held out is decided elsewhere
//! (the campaign's control share and the warehouse); this module is the
//! statistics only. The interval is Welch's (unequal variances) with the
//! normal quantile 1.959964, a large-sample approximation: with fewer than
//! [`LARGE_SAMPLE`] customers in either group the result says so in
//! [`UpliftEstimate::small_sample`], and the Welch–Satterthwaite degrees of
//! freedom are given for a reader who wants Student's t.

use crate::{invalid, AnalyticsError};
use serde::Serialize;

/// The 97.5 % quantile of the standard normal distribution.
pub const Z_975: f64 = 1.959_963_984_540_054;

/// Below this many customers in either group the normal approximation is
/// flagged as rough.
pub const LARGE_SAMPLE: usize = 30;

/// Summary of one group.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GroupSummary {
    /// Customers in the group.
    pub n: usize,
    /// Mean of the measure.
    pub mean: f64,
    /// Sample variance (n − 1 denominator); 0 for a group of one.
    pub variance: f64,
}

/// A difference in means and its interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct UpliftEstimate {
    /// The treated group.
    pub treated: GroupSummary,
    /// The control group.
    pub control: GroupSummary,
    /// `treated.mean − control.mean`.
    pub difference: f64,
    /// Standard error `sqrt(s_t²/n_t + s_c²/n_c)`.
    pub standard_error: f64,
    /// `difference − 1.959964 × standard_error`.
    pub ci95_low: f64,
    /// `difference + 1.959964 × standard_error`.
    pub ci95_high: f64,
    /// `difference / control.mean`; `None` when the control mean is 0.
    pub relative: Option<f64>,
    /// Welch–Satterthwaite degrees of freedom; `None` when both variances
    /// are 0.
    pub welch_df: Option<f64>,
    /// Whether either group has fewer than [`LARGE_SAMPLE`] customers.
    pub small_sample: bool,
}

/// The outcome of [`uplift`]: an estimate, or not enough data for one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum UpliftOutcome {
    /// Both groups have at least 2 customers.
    Estimate(UpliftEstimate),
    /// A group has fewer than 2 customers: no variance, no interval.
    NotEnoughData {
        /// Customers in the treated group.
        treated_n: usize,
        /// Customers in the control group.
        control_n: usize,
    },
}

fn summarise(values: &[f64], which: &'static str) -> Result<GroupSummary, AnalyticsError> {
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(invalid(i, which));
    }
    let n = values.len();
    if n == 0 {
        return Ok(GroupSummary {
            n,
            mean: 0.0,
            variance: 0.0,
        });
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let variance = if n > 1 {
        values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1) as f64
    } else {
        0.0
    };
    Ok(GroupSummary { n, mean, variance })
}

/// Uplift of `treated` over `control`, one value per customer.
///
/// # Errors
/// [`AnalyticsError::InvalidInput`] for a non-finite value (the index is
/// within its group).
pub fn uplift(treated: &[f64], control: &[f64]) -> Result<UpliftOutcome, AnalyticsError> {
    let t = summarise(treated, "a treated value is not finite")?;
    let c = summarise(control, "a control value is not finite")?;
    if t.n < 2 || c.n < 2 {
        return Ok(UpliftOutcome::NotEnoughData {
            treated_n: t.n,
            control_n: c.n,
        });
    }
    let (vt, vc) = (t.variance / t.n as f64, c.variance / c.n as f64);
    let se = (vt + vc).sqrt();
    let difference = t.mean - c.mean;
    let welch_df =
        (vt + vc > 0.0).then(|| (vt + vc).powi(2) / (vt * vt / (t.n - 1) as f64 + vc * vc / (c.n - 1) as f64));
    Ok(UpliftOutcome::Estimate(UpliftEstimate {
        treated: t,
        control: c,
        difference,
        standard_error: se,
        ci95_low: difference - Z_975 * se,
        ci95_high: difference + Z_975 * se,
        relative: (c.mean != 0.0).then(|| difference / c.mean),
        welch_df,
        small_sample: t.n < LARGE_SAMPLE || c.n < LARGE_SAMPLE,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * (1.0 + b.abs())
    }

    #[test]
    fn by_hand() {
        // Treated 2, 4, 6: mean 4, variance ((−2)² + 0 + 2²)/2 = 4.
        // Control 1, 2, 3, 4, 5: mean 3, variance (4+1+0+1+4)/4 = 2.5.
        // SE = sqrt(4/3 + 2.5/5) = sqrt(1.8333…) = 1.3540064007726600.
        // Difference 1; CI = 1 ± 1.959964 × 1.35400640 = 1 ± 2.65380378 = [−1.653804, 3.653804].
        // Relative 1/3. Welch df = 1.8333² / ((4/3)²/2 + 0.5²/4)
        //   = 3.3611111 / (0.8888889 + 0.0625) = 3.5328467.
        let UpliftOutcome::Estimate(u) = uplift(&[2.0, 4.0, 6.0], &[1.0, 2.0, 3.0, 4.0, 5.0]).unwrap() else {
            panic!("expected an estimate");
        };
        assert!(close(u.treated.mean, 4.0) && close(u.treated.variance, 4.0));
        assert!(close(u.control.mean, 3.0) && close(u.control.variance, 2.5));
        assert!(close(u.difference, 1.0));
        let se = (4.0f64 / 3.0 + 0.5).sqrt();
        assert!(close(u.standard_error, se));
        assert!(close(u.ci95_low, 1.0 - Z_975 * se) && close(u.ci95_high, 1.0 + Z_975 * se));
        assert!(
            (u.ci95_low - -1.653_804).abs() < 1e-6 && (u.ci95_high - 3.653_804).abs() < 1e-6,
            "{u:?}"
        );
        assert!(close(u.relative.unwrap(), 1.0 / 3.0));
        let df = (11.0f64 / 6.0).powi(2) / ((16.0 / 9.0) / 2.0 + 0.25 / 4.0);
        assert!(close(u.welch_df.unwrap(), df) && (df - 3.532_846_7).abs() < 1e-6);
        assert!(u.small_sample);
    }

    #[test]
    fn empty_or_single_groups_are_not_enough_data() {
        assert_eq!(
            uplift(&[], &[1.0, 2.0]).unwrap(),
            UpliftOutcome::NotEnoughData {
                treated_n: 0,
                control_n: 2
            }
        );
        assert_eq!(
            uplift(&[1.0, 2.0], &[3.0]).unwrap(),
            UpliftOutcome::NotEnoughData {
                treated_n: 2,
                control_n: 1
            }
        );
    }

    #[test]
    fn zero_control_mean_and_zero_variance() {
        let UpliftOutcome::Estimate(u) = uplift(&[1.0, 1.0], &[0.0, 0.0]).unwrap() else {
            panic!("expected an estimate");
        };
        assert_eq!(u.relative, None);
        assert_eq!(u.welch_df, None);
        assert_eq!((u.ci95_low, u.ci95_high), (1.0, 1.0));
    }

    #[test]
    fn non_finite_values_are_errors() {
        assert!(matches!(
            uplift(&[1.0, f64::NAN], &[1.0, 2.0]),
            Err(AnalyticsError::InvalidInput { index: 1, .. })
        ));
        assert!(uplift(&[1.0, 2.0], &[f64::INFINITY, 2.0]).is_err());
    }

    #[test]
    fn large_groups_are_not_flagged() {
        let t: Vec<f64> = (0..40).map(f64::from).collect();
        let c: Vec<f64> = (0..30).map(f64::from).collect();
        let UpliftOutcome::Estimate(u) = uplift(&t, &c).unwrap() else {
            panic!("expected an estimate")
        };
        assert!(!u.small_sample);
        // Means 19.5 and 14.5.
        assert!(close(u.difference, 5.0));
    }
}
