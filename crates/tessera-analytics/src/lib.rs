//! The mathematics of Tessera's customer analytics, as plain functions over
//! plain inputs: no database, no I/O, no clock.
//!
//! * [`rfm`]: recency, frequency and money scores 1–5 by quintiles of the
//!   population, named segments and their [`rfm::legend`];
//! * [`cohort`]: the retention table of customers grouped by the month of
//!   their first visit;
//! * [`bgnbd`]: the BG/NBD model of repeat visits (Fader, Hardie & Lee 2005),
//!   its log-likelihood, maximum-likelihood fit, conditional expected
//!   visits and the probability that a customer is still active;
//! * [`gamma_gamma`]: the Gamma-Gamma model of spend per visit (Fader &
//!   Hardie 2013; Colombo & Jiang 1999), fit and conditional expected
//!   average spend;
//! * [`clv`]: customer lifetime value over a horizon from the two models;
//! * [`uplift`]: treated against control difference in means with a 95 %
//!   confidence interval.
//!
//! Every definition is written out in `docs/analytics.md`. Bad input (a
//! non-finite number, a last visit after the end of observation, ...) gets
//! an [`AnalyticsError`]; no function panics.
//!
//! ```
//! use tessera_analytics::bgnbd::{self, BgNbdParams};
//!
//! // The published CDNOW estimates (Fader, Hardie & Lee 2005).
//! let p = BgNbdParams { r: 0.243, alpha: 4.414, a: 0.793, b: 2.426 };
//! // A customer with 2 repeat visits, the last in week 30.43, observed
//! // for 38.86 weeks: expected visits in the next 39 weeks.
//! let e = bgnbd::conditional_expected_transactions(&p, 2, 30.43, 38.86, 39.0)?;
//! assert!(e > 0.5 && e < 2.0);
//! # Ok::<(), tessera_analytics::AnalyticsError>(())
//! ```
#![forbid(unsafe_code)]

pub mod bgnbd;
pub mod clv;
pub mod cohort;
pub mod gamma_gamma;
pub mod optimize;
pub mod rfm;
pub mod special;
pub mod uplift;

/// What can go wrong in this crate: the input does not describe a valid
/// population, or a fit did not converge.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AnalyticsError {
    /// An input value is out of its domain (not finite, negative where it
    /// must not be, inconsistent with another field).
    #[error("invalid input at row {index}: {reason}")]
    InvalidInput {
        /// Position of the offending row in the caller's slice (0 for a
        /// scalar argument).
        index: usize,
        /// What is wrong, in one line.
        reason: &'static str,
    },
    /// A model parameter is out of its domain (all must be finite and > 0).
    #[error("invalid model parameter: {0}")]
    InvalidParameter(&'static str),
    /// Too few usable rows to estimate anything.
    #[error("not enough data: {needed} usable rows needed, {got} given")]
    NotEnoughData {
        /// Rows needed.
        needed: usize,
        /// Usable rows given.
        got: usize,
    },
    /// The optimiser found no finite log-likelihood from any start.
    #[error("the maximum-likelihood fit found no finite likelihood")]
    NoFit,
}

/// Checks that every model parameter is finite and > 0; the message of the
/// first that is not is the error.
pub(crate) fn check_positive(params: &[(f64, &'static str)]) -> Result<(), AnalyticsError> {
    match params.iter().find(|(v, _)| !(v.is_finite() && *v > 0.0)) {
        Some(&(_, name)) => Err(AnalyticsError::InvalidParameter(name)),
        None => Ok(()),
    }
}

/// Shorthand for a row error.
pub(crate) fn invalid(index: usize, reason: &'static str) -> AnalyticsError {
    AnalyticsError::InvalidInput { index, reason }
}
