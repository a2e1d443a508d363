//! A derivative-free minimiser: Nelder–Mead on an unconstrained space, with
//! restarts. The models minimise the negative log-likelihood over the
//! logarithms of their parameters, so every parameter stays positive.

use serde::Serialize;

/// When a Nelder–Mead run stops.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Tolerance {
    /// Stop when the simplex's highest and lowest values differ by at most
    /// `f_rel × (1 + |lowest|)` (relative for objectives far from zero,
    /// absolute near zero)...
    pub f_rel: f64,
    /// ... and every vertex is within this distance of the best on every
    /// coordinate (the coordinates are logarithms, so this is relative
    /// precision of the parameters).
    pub x_abs: f64,
    /// Give up after this many function evaluations.
    pub max_evaluations: usize,
}

impl Default for Tolerance {
    /// 1e-8 relative on the objective and on the parameters, 20,000
    /// evaluations.
    fn default() -> Self {
        Tolerance {
            f_rel: 1e-8,
            x_abs: 1e-8,
            max_evaluations: 20_000,
        }
    }
}

/// The result of a minimisation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Minimum {
    /// The best point found.
    pub x: Vec<f64>,
    /// The objective there.
    pub value: f64,
    /// Whether the tolerance was met (rather than the evaluation budget
    /// running out).
    pub converged: bool,
    /// Function evaluations used.
    pub evaluations: usize,
}

/// Minimise `f` from `start` with the Nelder–Mead simplex method
/// (reflection 1, expansion 2, contraction ½, shrink ½; Lagarias et al.
/// 1998), initial steps of `step` on each coordinate. After the tolerance is
/// met the search restarts once from the best point with a fresh simplex,
/// and stops only when the restart does not improve the value by more than
/// the tolerance: this guards against a collapsed simplex stopping early.
///
/// A non-finite value of `f` is treated as +∞ (the point is never
/// accepted). An empty `start` returns at once.
pub fn nelder_mead<F: FnMut(&[f64]) -> f64>(mut f: F, start: &[f64], step: f64, tol: Tolerance) -> Minimum {
    let mut eval = |x: &[f64], n: &mut usize| {
        *n += 1;
        let v = f(x);
        if v.is_finite() {
            v
        } else {
            f64::INFINITY
        }
    };
    let mut evaluations = 0usize;
    let mut best_x = start.to_vec();
    let mut best_v = eval(&best_x, &mut evaluations);
    if start.is_empty() {
        return Minimum {
            x: best_x,
            value: best_v,
            converged: true,
            evaluations,
        };
    }
    let mut converged = false;
    for _round in 0..20 {
        let (x, v, ok) = simplex_run(&mut eval, &best_x, best_v, step, tol, &mut evaluations);
        let improved = v < best_v - tol.f_rel * best_v.abs();
        if v <= best_v {
            best_x = x;
            best_v = v;
        }
        if !ok {
            converged = false;
            break;
        }
        converged = true;
        if !improved {
            break;
        }
    }
    Minimum {
        x: best_x,
        value: best_v,
        converged,
        evaluations,
    }
}

fn simplex_run<E: FnMut(&[f64], &mut usize) -> f64>(
    eval: &mut E,
    start: &[f64],
    start_v: f64,
    step: f64,
    tol: Tolerance,
    evaluations: &mut usize,
) -> (Vec<f64>, f64, bool) {
    let n = start.len();
    let mut pts: Vec<Vec<f64>> = Vec::with_capacity(n + 1);
    let mut vals: Vec<f64> = Vec::with_capacity(n + 1);
    pts.push(start.to_vec());
    vals.push(start_v);
    for i in 0..n {
        let mut p = start.to_vec();
        p[i] += step;
        vals.push(eval(&p, evaluations));
        pts.push(p);
    }
    let mut order: Vec<usize> = (0..=n).collect();
    let mut centroid = vec![0.0; n];
    let mut trial = vec![0.0; n];
    let mut trial2 = vec![0.0; n];
    loop {
        order.sort_by(|&i, &j| vals[i].total_cmp(&vals[j]));
        let (lo, hi, second) = (order[0], order[n], order[n - 1]);
        let spread = vals[hi] - vals[lo];
        let f_ok = vals[hi].is_finite() && spread <= tol.f_rel * (1.0 + vals[lo].abs());
        let x_ok = pts
            .iter()
            .all(|p| p.iter().zip(&pts[lo]).all(|(a, b)| (a - b).abs() <= tol.x_abs));
        if f_ok && x_ok {
            return (pts[lo].clone(), vals[lo], true);
        }
        if *evaluations >= tol.max_evaluations {
            return (pts[lo].clone(), vals[lo], false);
        }
        centroid.iter_mut().for_each(|c| *c = 0.0);
        for &i in &order[..n] {
            for (c, x) in centroid.iter_mut().zip(&pts[i]) {
                *c += x / n as f64;
            }
        }
        // Reflect the worst vertex through the centroid of the others.
        for k in 0..n {
            trial[k] = centroid[k] + (centroid[k] - pts[hi][k]);
        }
        let fr = eval(&trial, evaluations);
        if fr < vals[lo] {
            for k in 0..n {
                trial2[k] = centroid[k] + 2.0 * (centroid[k] - pts[hi][k]);
            }
            let fe = eval(&trial2, evaluations);
            if fe < fr {
                pts[hi].copy_from_slice(&trial2);
                vals[hi] = fe;
            } else {
                pts[hi].copy_from_slice(&trial);
                vals[hi] = fr;
            }
            continue;
        }
        if fr < vals[second] {
            pts[hi].copy_from_slice(&trial);
            vals[hi] = fr;
            continue;
        }
        // Contract: outside if the reflection beat the worst, else inside.
        let outside = fr < vals[hi];
        for k in 0..n {
            trial2[k] = if outside {
                centroid[k] + 0.5 * (trial[k] - centroid[k])
            } else {
                centroid[k] + 0.5 * (pts[hi][k] - centroid[k])
            };
        }
        let fc = eval(&trial2, evaluations);
        if (outside && fc <= fr) || (!outside && fc < vals[hi]) {
            pts[hi].copy_from_slice(&trial2);
            vals[hi] = fc;
            continue;
        }
        // Shrink every vertex towards the best.
        let best = pts[lo].clone();
        for i in 0..=n {
            if i == lo {
                continue;
            }
            for k in 0..n {
                pts[i][k] = best[k] + 0.5 * (pts[i][k] - best[k]);
            }
            vals[i] = eval(&pts[i], evaluations);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_rosenbrock_minimum() {
        // f(x, y) = (1 − x)² + 100 (y − x²)², minimum 0 at (1, 1).
        let m = nelder_mead(
            |p| (1.0 - p[0]).powi(2) + 100.0 * (p[1] - p[0] * p[0]).powi(2),
            &[-1.2, 1.0],
            0.5,
            Tolerance {
                f_rel: 1e-12,
                x_abs: 1e-9,
                max_evaluations: 20_000,
            },
        );
        assert!(m.converged);
        assert!((m.x[0] - 1.0).abs() < 1e-6 && (m.x[1] - 1.0).abs() < 1e-6, "{m:?}");
    }

    #[test]
    fn non_finite_values_are_never_accepted() {
        // The objective is NaN for negative x and (x − 2)² elsewhere: the
        // search must settle on 2 without ever accepting a NaN.
        let m = nelder_mead(
            |p| if p[0] < 0.0 { f64::NAN } else { (p[0] - 2.0).powi(2) },
            &[5.0],
            1.0,
            Tolerance::default(),
        );
        assert!(m.value.is_finite() && (m.x[0] - 2.0).abs() < 1e-6, "{m:?}");
    }

    #[test]
    fn empty_start_returns_at_once() {
        let m = nelder_mead(|_| 3.0, &[], 1.0, Tolerance::default());
        assert_eq!(m.evaluations, 1);
        assert!(m.converged);
    }

    #[test]
    fn budget_exhaustion_is_reported() {
        let m = nelder_mead(
            |p| p.iter().map(|x| x * x).sum(),
            &[10.0, 10.0, 10.0],
            1.0,
            Tolerance {
                f_rel: 1e-15,
                x_abs: 1e-15,
                max_evaluations: 10,
            },
        );
        assert!(!m.converged);
    }
}
