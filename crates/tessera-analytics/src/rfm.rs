//! RFM: recency, frequency and money, each scored 1 (worst) to 5 (best) by
//! quintiles of the population, and the named segment of each customer.
//!
//! **Scores.** For one measure, a customer's *mid-rank share* is
//! `(worse + equal / 2) / n`, where `worse` is the number of customers
//! strictly worse on that measure, `equal` the number with exactly the same
//! value (the customer included) and `n` the population. The score is
//! `ceil(5 × share)`, kept within 1..=5. Worse means a longer recency (days
//! since the last visit), fewer visits, less spend.
//!
//! * Ties: equal values always get equal scores, the score of the middle of
//!   their block of ranks.
//! * Small populations: with `n` distinct values the scores are the
//!   quintiles of the ranks (n = 5: 1, 2, 3, 4, 5; n = 10: two of each);
//!   a single customer, or a population where everybody has the same
//!   value, scores 3 (the middle) rather than 1 or 5.
//!
//! **Segments** are rules on the three scores, tried in the order of
//! [`legend`]; the first that matches names the segment. Every combination
//! of scores matches exactly one segment.

use serde::Serialize;

/// One customer's measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RfmInput {
    /// Days since the last visit (0 = today).
    pub recency_days: u32,
    /// Visits in the period.
    pub visits: u32,
    /// Money spent in the period, in minor units (cents); may be negative
    /// after refunds.
    pub spend_minor: i64,
}

/// A named segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Segment {
    /// Recent, frequent, high spend.
    Champions,
    /// Frequent and not lapsed.
    Loyal,
    /// Used to be frequent and high spend, now lapsed.
    CannotLoseThem,
    /// Used to be frequent, now lapsed.
    AtRisk,
    /// Recent, a few visits.
    PotentialLoyalists,
    /// Very recent, first visit only.
    New,
    /// Recent, one visit.
    Promising,
    /// Middling recency, not frequent.
    NeedAttention,
    /// Lapsed, rare.
    Hibernating,
    /// Long lapsed, rare.
    Lost,
}

impl Segment {
    /// Every segment, in rule order.
    pub const ALL: [Segment; 10] = [
        Segment::Champions,
        Segment::Loyal,
        Segment::CannotLoseThem,
        Segment::AtRisk,
        Segment::PotentialLoyalists,
        Segment::New,
        Segment::Promising,
        Segment::NeedAttention,
        Segment::Hibernating,
        Segment::Lost,
    ];

    /// The segment of scores `(r, f, m)` (each 1..=5; values outside are
    /// clamped): the first rule of [`legend`] that matches.
    pub fn of(r: u8, f: u8, m: u8) -> Segment {
        let (r, f, m) = (r.clamp(1, 5), f.clamp(1, 5), m.clamp(1, 5));
        match () {
            _ if r >= 4 && f >= 4 && m >= 4 => Segment::Champions,
            _ if r >= 3 && f >= 4 => Segment::Loyal,
            _ if r <= 2 && f >= 4 && m >= 4 => Segment::CannotLoseThem,
            _ if r <= 2 && f >= 3 => Segment::AtRisk,
            _ if r >= 4 && f >= 2 => Segment::PotentialLoyalists,
            _ if r == 5 => Segment::New,
            _ if r == 4 => Segment::Promising,
            _ if r == 3 => Segment::NeedAttention,
            _ if r == 2 => Segment::Hibernating,
            _ => Segment::Lost,
        }
    }

    /// The segment's display name, as in [`legend`].
    pub fn name(self) -> &'static str {
        self.legend().name
    }

    /// The segment's legend entry.
    pub fn legend(self) -> &'static SegmentLegend {
        // LEGEND is in the order of ALL, and ALL lists every variant.
        let i = Segment::ALL.iter().position(|s| *s == self).unwrap_or(0);
        &LEGEND[i]
    }
}

/// What a segment means and what to do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SegmentLegend {
    /// The segment.
    pub segment: Segment,
    /// Display name.
    pub name: &'static str,
    /// The rule on the scores R, F, M (tried in legend order).
    pub rule: &'static str,
    /// What the customers in it have in common.
    pub meaning: &'static str,
    /// The suggested action.
    pub action: &'static str,
}

static LEGEND: [SegmentLegend; 10] = [
    SegmentLegend {
        segment: Segment::Champions,
        name: "Champions",
        rule: "R >= 4 and F >= 4 and M >= 4",
        meaning: "visited recently, visit often and spend the most",
        action: "reward them; early access and recognition rather than discounts",
    },
    SegmentLegend {
        segment: Segment::Loyal,
        name: "Loyal",
        rule: "R >= 3 and F >= 4",
        meaning: "visit often and have not lapsed",
        action: "raise spend: cross-sell categories they do not yet buy",
    },
    SegmentLegend {
        segment: Segment::CannotLoseThem,
        name: "Cannot lose them",
        rule: "R <= 2 and F >= 4 and M >= 4",
        meaning: "used to visit often and spend the most, but not lately",
        action: "win them back personally, with a strong offer",
    },
    SegmentLegend {
        segment: Segment::AtRisk,
        name: "At risk",
        rule: "R <= 2 and F >= 3",
        meaning: "used to visit regularly, but not lately",
        action: "reactivation offer before they are lost",
    },
    SegmentLegend {
        segment: Segment::PotentialLoyalists,
        name: "Potential loyalists",
        rule: "R >= 4 and F >= 2",
        meaning: "recent customers with a few visits",
        action: "membership benefits and a reason to come back soon",
    },
    SegmentLegend {
        segment: Segment::New,
        name: "New",
        rule: "R = 5 (and F = 1)",
        meaning: "first visit, very recently",
        action: "welcome them; make the second visit easy",
    },
    SegmentLegend {
        segment: Segment::Promising,
        name: "Promising",
        rule: "R = 4 (and F = 1)",
        meaning: "one visit, fairly recently",
        action: "a first-repeat offer",
    },
    SegmentLegend {
        segment: Segment::NeedAttention,
        name: "Need attention",
        rule: "R = 3 (and F <= 3)",
        meaning: "middling recency, not frequent",
        action: "a limited-time offer based on what they bought",
    },
    SegmentLegend {
        segment: Segment::Hibernating,
        name: "Hibernating",
        rule: "R = 2 (and F <= 2)",
        meaning: "lapsed and rarely visited",
        action: "low-cost reminders; do not overspend",
    },
    SegmentLegend {
        segment: Segment::Lost,
        name: "Lost",
        rule: "R = 1 (and F <= 2)",
        meaning: "long lapsed and rarely visited",
        action: "ignore, or one last low-cost win-back",
    },
];

/// The segment legend, in rule order. The parenthesised parts of a rule
/// are implied by the earlier rules not having matched.
pub fn legend() -> &'static [SegmentLegend] {
    &LEGEND
}

/// One customer's scores and segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RfmScore {
    /// Recency score 1..=5 (5 = most recent).
    pub r: u8,
    /// Frequency score 1..=5 (5 = most visits).
    pub f: u8,
    /// Money score 1..=5 (5 = most spend).
    pub m: u8,
    /// The segment of `(r, f, m)`.
    pub segment: Segment,
}

/// Scores of one measure, `key` ordered so that larger is better.
fn quintile_scores<K: Ord + Copy>(keys: &[K]) -> Vec<u8> {
    let n = keys.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| keys[i]);
    let mut scores = vec![3u8; n];
    let mut start = 0;
    while start < n {
        let mut end = start + 1;
        while end < n && keys[order[end]] == keys[order[start]] {
            end += 1;
        }
        // worse = start, equal = end − start; ceil(5 (2 worse + equal) / 2n).
        let (worse, equal, n2) = (start as u128, (end - start) as u128, 2 * n as u128);
        let s = (5 * (2 * worse + equal)).div_ceil(n2).clamp(1, 5) as u8;
        for &i in &order[start..end] {
            scores[i] = s;
        }
        start = end;
    }
    scores
}

/// Scores and segments of a population, in input order (empty in, empty
/// out).
pub fn score(population: &[RfmInput]) -> Vec<RfmScore> {
    // Recency: fewer days is better, so order by the negated value.
    let r = quintile_scores(
        &population
            .iter()
            .map(|c| std::cmp::Reverse(c.recency_days))
            .collect::<Vec<_>>(),
    );
    let f = quintile_scores(&population.iter().map(|c| c.visits).collect::<Vec<_>>());
    let m = quintile_scores(&population.iter().map(|c| c.spend_minor).collect::<Vec<_>>());
    (0..population.len())
        .map(|i| RfmScore {
            r: r[i],
            f: f[i],
            m: m[i],
            segment: Segment::of(r[i], f[i], m[i]),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(recency_days: u32, visits: u32, spend_minor: i64) -> RfmInput {
        RfmInput {
            recency_days,
            visits,
            spend_minor,
        }
    }

    #[test]
    fn ten_distinct_customers_get_two_of_each_score() {
        // Visits 1..=10: shares (k − 0.5)/10 = 0.05, 0.15, …, 0.95;
        // 5 × share = 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.25, 3.75, 4.25,
        // 4.75; ceil: 1 1 2 2 3 3 4 4 5 5.
        let pop: Vec<_> = (1..=10).map(|v| c(10 - v, v, 100 * i64::from(v))).collect();
        let s = score(&pop);
        let fs: Vec<u8> = s.iter().map(|x| x.f).collect();
        assert_eq!(fs, [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]);
        // Recency 9 − v + 1 … : the customer with 10 visits was here today.
        let rs: Vec<u8> = s.iter().map(|x| x.r).collect();
        assert_eq!(rs, [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]);
        assert_eq!(s[9].segment, Segment::Champions);
        assert_eq!(s[0].segment, Segment::Lost);
    }

    #[test]
    fn ties_share_the_middle_score() {
        // Spend 0, 0, 0, 10: the three zeros have worse 0, equal 3:
        // share 1.5/4 = 0.375, 5 × 0.375 = 1.875 → 2. The 10: worse 3,
        // equal 1: share 3.5/4 = 0.875 → 4.375 → 5.
        let s = score(&[c(1, 1, 0), c(1, 1, 0), c(1, 1, 0), c(1, 1, 10)]);
        let ms: Vec<u8> = s.iter().map(|x| x.m).collect();
        assert_eq!(ms, [2, 2, 2, 5]);
        // Everybody tied on recency and visits: share 0.5 → 2.5 → 3.
        assert!(s.iter().all(|x| x.r == 3 && x.f == 3));
    }

    #[test]
    fn small_populations() {
        assert!(score(&[]).is_empty());
        // One customer: share 0.5 → 3 on every measure: Need attention.
        let one = score(&[c(400, 1, 5)]);
        assert_eq!((one[0].r, one[0].f, one[0].m), (3, 3, 3));
        assert_eq!(one[0].segment, Segment::NeedAttention);
        // Two distinct: shares 0.25 and 0.75 → 1.25 → 2 and 3.75 → 4.
        let two = score(&[c(1, 1, -500), c(2, 2, 500)]);
        assert_eq!((two[0].r, two[0].f, two[0].m), (4, 2, 2));
        assert_eq!((two[1].r, two[1].f, two[1].m), (2, 4, 4));
        // Extreme values do not overflow.
        let ext = score(&[c(u32::MAX, u32::MAX, i64::MIN), c(0, 0, i64::MAX)]);
        assert_eq!((ext[0].r, ext[0].f, ext[0].m), (2, 4, 2));
    }

    #[test]
    fn every_score_combination_has_exactly_its_first_matching_rule() {
        // The rules as predicates, in legend order, without the implied parts.
        let rules: [fn(u8, u8, u8) -> bool; 10] = [
            |r, f, m| r >= 4 && f >= 4 && m >= 4,
            |r, f, _| r >= 3 && f >= 4,
            |r, f, m| r <= 2 && f >= 4 && m >= 4,
            |r, f, _| r <= 2 && f >= 3,
            |r, f, _| r >= 4 && f >= 2,
            |r, _, _| r == 5,
            |r, _, _| r == 4,
            |r, _, _| r == 3,
            |r, _, _| r == 2,
            |r, _, _| r == 1,
        ];
        let mut seen = std::collections::BTreeSet::new();
        for r in 1..=5 {
            for f in 1..=5 {
                for m in 1..=5 {
                    let first = rules.iter().position(|p| p(r, f, m)).unwrap();
                    let seg = Segment::of(r, f, m);
                    assert_eq!(seg, Segment::ALL[first], "({r},{f},{m})");
                    assert_eq!(legend()[first].segment, seg);
                    seen.insert(seg);
                }
            }
        }
        assert_eq!(seen.len(), 10, "every segment is reachable");
        // The implied parts of the legend's rules hold where they apply.
        assert_eq!(Segment::of(5, 1, 5), Segment::New);
        assert_eq!(Segment::of(3, 3, 5), Segment::NeedAttention);
        assert_eq!(Segment::of(1, 2, 5), Segment::Lost);
    }

    #[test]
    fn legend_is_complete_and_in_order() {
        assert_eq!(legend().len(), Segment::ALL.len());
        for (l, s) in legend().iter().zip(Segment::ALL) {
            assert_eq!(l.segment, s);
            assert_eq!(s.name(), l.name);
            assert!(!l.rule.is_empty() && !l.meaning.is_empty() && !l.action.is_empty());
        }
        assert_eq!(Segment::CannotLoseThem.name(), "Cannot lose them");
    }
}
