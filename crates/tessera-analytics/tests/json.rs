//! The result types serialise as the reports' `--json` will print them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use tessera_analytics::rfm::{legend, score, RfmInput, Segment};
use tessera_analytics::uplift::{uplift, UpliftOutcome};

#[test]
fn segments_and_scores() {
    assert_eq!(
        serde_json::to_value(Segment::CannotLoseThem).unwrap(),
        json!("cannot_lose_them")
    );
    let s = score(&[RfmInput {
        recency_days: 3,
        visits: 2,
        spend_minor: 1000,
    }]);
    assert_eq!(
        serde_json::to_value(s[0]).unwrap(),
        json!({"r": 3, "f": 3, "m": 3, "segment": "need_attention"})
    );
    let l = serde_json::to_value(legend()[0]).unwrap();
    assert_eq!(l["segment"], json!("champions"));
    assert_eq!(l["name"], json!("Champions"));
    assert_eq!(l["rule"], json!("R >= 4 and F >= 4 and M >= 4"));
}

#[test]
fn uplift_outcomes_are_tagged() {
    let v = serde_json::to_value(uplift(&[], &[1.0]).unwrap()).unwrap();
    assert_eq!(v, json!({"kind": "not_enough_data", "treated_n": 0, "control_n": 1}));
    let u = uplift(&[1.0, 3.0], &[1.0, 1.0]).unwrap();
    assert!(matches!(u, UpliftOutcome::Estimate(_)));
    let v = serde_json::to_value(u).unwrap();
    assert_eq!(v["kind"], json!("estimate"));
    assert_eq!(v["difference"], json!(1.0));
    assert_eq!(v["treated"]["n"], json!(2));
}
