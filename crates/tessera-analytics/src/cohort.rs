//! Cohorts by the month of the first visit, and their retention.
//!
//! A customer belongs to the cohort of the calendar month of their first
//! visit. `retention[k]` of a cohort is the share of its customers who
//! visited at least once in the k-th month after it (`k = 0` is the cohort
//! month itself, 100 % by definition), for every k up to the last month
//! observed.

use crate::{invalid, AnalyticsError};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// The longest a table may run, from its oldest cohort to its last month:
/// 100 years, far beyond any loyalty programme, and a bound on memory.
pub const MAX_MONTHS: i64 = 1200;

/// A calendar month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct YearMonth {
    /// Year, e.g. 2026.
    pub year: i32,
    /// Month 1..=12.
    pub month: u8,
}

impl YearMonth {
    /// Months since year 0 (January of year 0 is 0); `None` for a month
    /// outside 1..=12.
    pub fn index(self) -> Option<i64> {
        (1..=12)
            .contains(&self.month)
            .then(|| i64::from(self.year) * 12 + i64::from(self.month) - 1)
    }
}

impl std::fmt::Display for YearMonth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// One customer's activity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CohortCustomer {
    /// The month of the first visit.
    pub first: YearMonth,
    /// Months with at least one visit (any order, repeats allowed; the
    /// first month need not be listed).
    pub active: Vec<YearMonth>,
}

/// One cohort's row of the retention table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CohortRow {
    /// The cohort's month.
    pub cohort: YearMonth,
    /// Customers whose first visit was in that month.
    pub size: u64,
    /// `active[k]`: customers of the cohort who visited in month `k` after
    /// it; `active[0] == size`.
    pub active: Vec<u64>,
    /// `retention[k] = active[k] / size`, a share in `[0, 1]`.
    pub retention: Vec<f64>,
}

/// The retention table through month `through` (inclusive), one row per
/// cohort in month order; cohorts after `through` cannot exist.
///
/// # Errors
/// [`AnalyticsError::InvalidInput`] for a month outside 1..=12, an active
/// month before the customer's first month or after `through`, a first
/// month after `through`, or a cohort more than [`MAX_MONTHS`] before
/// `through`.
pub fn retention_table(customers: &[CohortCustomer], through: YearMonth) -> Result<Vec<CohortRow>, AnalyticsError> {
    let end = through
        .index()
        .ok_or(invalid(0, "the last month is not a month 1..=12"))?;
    // cohort index → (size, offset k → active count)
    let mut cohorts: BTreeMap<i64, (u64, BTreeMap<i64, u64>)> = BTreeMap::new();
    for (i, c) in customers.iter().enumerate() {
        let first = c
            .first
            .index()
            .ok_or(invalid(i, "the first month is not a month 1..=12"))?;
        if first > end {
            return Err(invalid(i, "the first visit is after the last month of the table"));
        }
        if end - first >= MAX_MONTHS {
            return Err(invalid(i, "the table would span more than 1,200 months"));
        }
        let mut ks = BTreeSet::from([0i64]);
        for m in &c.active {
            let m = m.index().ok_or(invalid(i, "an active month is not a month 1..=12"))?;
            if m < first {
                return Err(invalid(i, "an active month is before the first visit"));
            }
            if m > end {
                return Err(invalid(i, "an active month is after the last month of the table"));
            }
            ks.insert(m - first);
        }
        let entry = cohorts.entry(first).or_default();
        entry.0 += 1;
        for k in ks {
            *entry.1.entry(k).or_insert(0) += 1;
        }
    }
    Ok(cohorts
        .into_iter()
        .map(|(first, (size, counts))| {
            let months = (end - first + 1) as usize;
            let mut active = vec![0u64; months];
            for (k, n) in counts {
                if let Some(slot) = active.get_mut(k as usize) {
                    *slot = n;
                }
            }
            let retention = active.iter().map(|&a| a as f64 / size as f64).collect();
            let cohort = YearMonth {
                year: first.div_euclid(12) as i32,
                month: (first.rem_euclid(12) + 1) as u8,
            };
            CohortRow {
                cohort,
                size,
                active,
                retention,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ym(year: i32, month: u8) -> YearMonth {
        YearMonth { year, month }
    }

    #[test]
    fn table_by_hand() {
        // Cohort 2026-01: A active Jan, Feb, Apr; B active Jan, Mar; C Jan only.
        // Cohort 2026-03: D active Mar, Apr; E active Mar.
        // Through 2026-04:
        // 2026-01 size 3: k0 3/3, k1 (Feb) A = 1/3, k2 (Mar) B = 1/3, k3 (Apr) A = 1/3.
        // 2026-03 size 2: k0 2/2, k1 (Apr) D = 1/2.
        let cs = vec![
            CohortCustomer {
                first: ym(2026, 1),
                active: vec![ym(2026, 2), ym(2026, 4), ym(2026, 2)],
            },
            CohortCustomer {
                first: ym(2026, 1),
                active: vec![ym(2026, 1), ym(2026, 3)],
            },
            CohortCustomer {
                first: ym(2026, 1),
                active: vec![],
            },
            CohortCustomer {
                first: ym(2026, 3),
                active: vec![ym(2026, 4)],
            },
            CohortCustomer {
                first: ym(2026, 3),
                active: vec![ym(2026, 3)],
            },
        ];
        let t = retention_table(&cs, ym(2026, 4)).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].cohort, ym(2026, 1));
        assert_eq!(t[0].size, 3);
        assert_eq!(t[0].active, [3, 1, 1, 1]);
        assert_eq!(t[0].retention, [1.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0]);
        assert_eq!(t[1].cohort, ym(2026, 3));
        assert_eq!(t[1].active, [2, 1]);
        assert_eq!(t[1].retention, [1.0, 0.5]);
    }

    #[test]
    fn year_boundaries() {
        // First visit December 2025, back in January 2026: k = 1.
        let cs = vec![CohortCustomer {
            first: ym(2025, 12),
            active: vec![ym(2026, 1)],
        }];
        let t = retention_table(&cs, ym(2026, 2)).unwrap();
        assert_eq!(t[0].active, [1, 1, 0]);
        assert_eq!(t[0].cohort.to_string(), "2025-12");
        // Years before 0 do not break the month arithmetic.
        let cs = vec![CohortCustomer {
            first: ym(-1, 12),
            active: vec![],
        }];
        assert_eq!(retention_table(&cs, ym(0, 1)).unwrap()[0].cohort, ym(-1, 12));
    }

    #[test]
    fn bad_input_is_a_typed_error() {
        let bad = |c: CohortCustomer, through| retention_table(&[c], through).is_err();
        assert!(bad(
            CohortCustomer {
                first: ym(2026, 13),
                active: vec![]
            },
            ym(2026, 12)
        ));
        assert!(bad(
            CohortCustomer {
                first: ym(2026, 2),
                active: vec![ym(2026, 1)]
            },
            ym(2026, 12)
        ));
        assert!(bad(
            CohortCustomer {
                first: ym(2026, 2),
                active: vec![ym(2027, 1)]
            },
            ym(2026, 12)
        ));
        assert!(bad(
            CohortCustomer {
                first: ym(2027, 2),
                active: vec![]
            },
            ym(2026, 12)
        ));
        assert!(bad(
            CohortCustomer {
                first: ym(2026, 2),
                active: vec![ym(2026, 0)]
            },
            ym(2026, 12)
        ));
        assert!(retention_table(&[], ym(2026, 0)).is_err());
        // 1,200 months back is refused, 1,199 is fine.
        assert!(bad(
            CohortCustomer {
                first: ym(1926, 12),
                active: vec![]
            },
            ym(2026, 12)
        ));
        let t = retention_table(
            &[CohortCustomer {
                first: ym(1927, 1),
                active: vec![],
            }],
            ym(2026, 12),
        )
        .unwrap();
        assert_eq!(t[0].active.len(), 1200);
        // Extreme years are refused, not allocated.
        assert!(bad(
            CohortCustomer {
                first: ym(i32::MIN, 1),
                active: vec![]
            },
            ym(i32::MAX, 12)
        ));
        assert!(retention_table(&[], ym(2026, 1)).unwrap().is_empty());
    }
}
