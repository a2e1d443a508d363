//! Arbitrary input never panics: every function returns a value or a typed
//! error.

use proptest::prelude::*;
use tessera_analytics::bgnbd::{self, BgNbdParams};
use tessera_analytics::cohort::{retention_table, CohortCustomer, YearMonth};
use tessera_analytics::gamma_gamma::{self, GammaGammaParams};
use tessera_analytics::rfm::{score, RfmInput};
use tessera_analytics::uplift::uplift;

fn any_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        -10.0f64..100.0,
        Just(0.0),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(1.0),
        Just(1e-300),
        Just(1e300),
    ]
}

fn ym() -> impl Strategy<Value = YearMonth> {
    (prop_oneof![1990i32..2030, any::<i32>()], 0u8..14).prop_map(|(year, month)| YearMonth { year, month })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn rfm_scores_are_always_1_to_5(pop in prop::collection::vec((any::<u32>(), any::<u32>(), any::<i64>()), 0..60)) {
        let input: Vec<RfmInput> = pop.iter().map(|&(r, v, s)| RfmInput { recency_days: r, visits: v, spend_minor: s }).collect();
        let out = score(&input);
        prop_assert_eq!(out.len(), input.len());
        for s in &out {
            prop_assert!((1..=5).contains(&s.r) && (1..=5).contains(&s.f) && (1..=5).contains(&s.m));
        }
    }

    #[test]
    fn bgnbd_functions_never_panic(
        p in (any_f64(), any_f64(), any_f64(), any_f64()),
        rows in prop::collection::vec((0u32..50, any_f64(), any_f64()), 0..8),
        h in any_f64(),
    ) {
        let params = BgNbdParams { r: p.0, alpha: p.1, a: p.2, b: p.3 };
        let _ = bgnbd::log_likelihood(&params, &rows);
        for &(x, t_x, t) in &rows {
            let _ = bgnbd::probability_alive(&params, x, t_x, t);
            if let Ok(e) = bgnbd::conditional_expected_transactions(&params, x, t_x, t, h.min(1e6)) {
                prop_assert!(e.is_finite() && e >= 0.0);
            }
        }
    }

    #[test]
    fn bgnbd_fit_never_panics(rows in prop::collection::vec((0u32..20, 0.0f64..50.0, 0.0f64..50.0), 0..12)) {
        // Make rows valid so the fit itself runs: t_x ≤ T, t_x = 0 when x = 0.
        let rows: Vec<_> = rows.into_iter().map(|(x, a, b)| {
            let (t_x, t) = (a.min(b), a.max(b));
            (x, if x == 0 { 0.0 } else { t_x }, t)
        }).collect();
        match bgnbd::fit(&rows) {
            Ok(f) => prop_assert!(f.params.r > 0.0 && f.params.alpha > 0.0),
            Err(e) => prop_assert!(rows.is_empty(), "{e}"),
        }
    }

    #[test]
    fn gamma_gamma_never_panics(
        p in (any_f64(), any_f64(), any_f64()),
        rows in prop::collection::vec((0u32..30, any_f64()), 0..10),
    ) {
        let params = GammaGammaParams { p: p.0, q: p.1, gamma: p.2 };
        let _ = gamma_gamma::log_likelihood(&params, &rows);
        let _ = gamma_gamma::fit(&rows);
        let _ = params.population_mean_spend();
        for &(x, m) in &rows {
            let _ = gamma_gamma::conditional_expected_average_spend(&params, x, m);
        }
    }

    #[test]
    fn cohorts_never_panic(
        cs in prop::collection::vec((ym(), prop::collection::vec(ym(), 0..4)), 0..10),
        through in ym(),
    ) {
        let cs: Vec<CohortCustomer> = cs.into_iter().map(|(first, active)| CohortCustomer { first, active }).collect();
        if let Ok(rows) = retention_table(&cs, through) {
            for r in rows {
                prop_assert_eq!(r.retention.first().copied(), Some(1.0));
                prop_assert!(r.retention.iter().all(|v| (0.0..=1.0).contains(v)));
            }
        }
    }

    #[test]
    fn uplift_never_panics(t in prop::collection::vec(any_f64(), 0..10), c in prop::collection::vec(any_f64(), 0..10)) {
        let _ = uplift(&t, &c);
    }
}
