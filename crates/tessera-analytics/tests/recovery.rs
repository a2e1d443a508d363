//! The BG/NBD fit recovers the parameters it was simulated from.

mod support {
    pub mod sim;
}

use tessera_analytics::bgnbd;

#[test]
fn fit_recovers_simulated_parameters() {
    // 20,000 customers from the CDNOW estimates. With this many customers
    // the standard errors are about a third of CDNOW's (2,357 customers:
    // se(r) 0.013, se(alpha) 0.38, se(a) 0.19, se(b) 0.71 per the lifetimes
    // documentation), so the tolerances below are about four of them.
    let data = support::sim::simulate(20_000, 0.243, 4.414, 0.793, 2.426, 7);
    let fit = bgnbd::fit(&data).unwrap();
    let p = fit.params;
    eprintln!("{fit:?}");
    assert!(fit.converged);
    assert!((p.r - 0.243).abs() < 0.02, "{p:?}");
    assert!((p.alpha - 4.414).abs() < 0.6, "{p:?}");
    assert!((p.a - 0.793).abs() < 0.3, "{p:?}");
    assert!((p.b - 2.426).abs() < 1.0, "{p:?}");
}
