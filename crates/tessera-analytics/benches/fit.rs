//! Fitting BG/NBD on synthetic customers drawn from the CDNOW estimates,
//! scoring every customer (expected visits in 52 weeks, P(alive)), and
//! fitting Gamma-Gamma on their simulated spend.
//!
//! `cargo bench -p tessera-analytics --bench fit` runs 100,000 customers;
//! without `--bench` (as `cargo test --benches` runs it) 2,000, to check
//! that it works.

#[path = "../tests/support/sim.rs"]
mod sim;

use std::time::Instant;
use tessera_analytics::{bgnbd, gamma_gamma};

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full { 100_000 } else { 2_000 };
    let (r, alpha, a, b) = (0.243, 4.414, 0.793, 2.426);

    let t0 = Instant::now();
    let data = sim::simulate(n, r, alpha, a, b, 42);
    let simulate = t0.elapsed();
    let repeaters = data.iter().filter(|c| c.0 > 0).count();

    let t1 = Instant::now();
    let fit = match bgnbd::fit(&data) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("fit failed: {e}");
            std::process::exit(1);
        }
    };
    let fitting = t1.elapsed();

    let t2 = Instant::now();
    let mut total = 0.0;
    let mut alive = 0.0;
    for &(x, t_x, t) in &data {
        total += bgnbd::conditional_expected_transactions(&fit.params, x, t_x, t, 52.0).unwrap_or(f64::NAN);
        alive += bgnbd::probability_alive(&fit.params, x, t_x, t).unwrap_or(f64::NAN);
    }
    let scoring = t2.elapsed();

    let (gp, gq, gg) = (6.25, 3.74, 15.44);
    let spend = sim::simulate_spend(&data, gp, gq, gg, 43);
    let t3 = Instant::now();
    let gfit = match gamma_gamma::fit(&spend) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("Gamma-Gamma fit failed: {e}");
            std::process::exit(1);
        }
    };
    let gfitting = t3.elapsed();

    println!("bgnbd fit: {n} customers ({repeaters} with repeat visits), seed 42");
    println!("  true      r={r} alpha={alpha} a={a} b={b}");
    let p = fit.params;
    println!(
        "  fitted    r={:.4} alpha={:.4} a={:.4} b={:.4}  LL={:.2}  converged={}",
        p.r, p.alpha, p.a, p.b, fit.log_likelihood, fit.converged
    );
    println!("  simulate  {:>10.3} ms", simulate.as_secs_f64() * 1e3);
    println!(
        "  fit       {:>10.3} ms  ({} log-likelihood evaluations, {:.3} ms each)",
        fitting.as_secs_f64() * 1e3,
        fit.evaluations,
        fitting.as_secs_f64() * 1e3 / fit.evaluations.max(1) as f64
    );
    println!(
        "  score     {:>10.3} ms  (E[visits in 52 weeks] and P(alive) for every customer; mean E = {:.4}, mean P(alive) = {:.4})",
        scoring.as_secs_f64() * 1e3,
        total / n as f64,
        alive / n as f64
    );
    let g = gfit.params;
    println!("gamma-gamma fit: {} repeat customers, seed 43", gfit.customers);
    println!("  true      p={gp} q={gq} gamma={gg}");
    println!(
        "  fitted    p={:.4} q={:.4} gamma={:.4}  LL={:.2}  converged={}",
        g.p, g.q, g.gamma, gfit.log_likelihood, gfit.converged
    );
    println!(
        "  fit       {:>10.3} ms  ({} log-likelihood evaluations)",
        gfitting.as_secs_f64() * 1e3,
        gfit.evaluations
    );
}
