//! Which part of an aggregation the rollups answer (`flows_1h`, `flows_1m`) and which part the
//! flows themselves: the plan, as the units of end times each rollup reads.
//!
//! A flow counts in a range when it overlaps it. Every flow whose end lies in a whole hour (or
//! minute) inside the range overlaps it, so that unit's rows of sums stand for exactly the
//! flows ending in it. With time buckets, a flow's bucket is the one its end falls in, so a
//! unit is used only when no bucket boundary cuts it: all its flows then share the bucket of
//! the unit's start. The plan takes whole hours first, then whole minutes outside those hours,
//! each only from the time its rollup holds every flow (its mark in `weir_rollups`); the flows
//! ending anywhere else are read from `flows`.
//!
//! (A flow recorded as starting after it ends, which no agent writes, would be counted by a
//! unit holding its end while the flows' own range test leaves it out.)

use weir_core::query::TimeRange;
use weir_core::store::Buckets;

/// A minute in ms.
pub const MINUTE: u64 = 60_000;
/// An hour in ms.
pub const HOUR: u64 = 3_600_000;

/// Most units a bucket boundary may cut out of one tier (each is an element of a `NOT IN`
/// set); a tier that would lose more (short buckets with an origin off the unit) is left to
/// the finer tier or the flows.
const MAX_GAPS: usize = 2_000;

/// From when each rollup holds every flow, in ms (`u64::MAX`: not usable).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Marks {
    pub hour: u64,
    pub minute: u64,
    /// From when `flows_addr` (not a rollup: the flows by address) holds every flow.
    pub addresses: u64,
    /// From when `flows_span` (the longest flow per day) holds every flow.
    pub spans: u64,
}

impl Marks {
    /// Neither rollup usable.
    pub const NONE: Marks = Marks {
        hour: u64::MAX,
        minute: u64::MAX,
        addresses: u64::MAX,
        spans: u64::MAX,
    };
}

/// The units of one rollup a plan reads: those in `[lo, hi)` but the `gaps` (starts of units a
/// bucket boundary cuts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tier {
    pub unit: u64,
    pub lo: u64,
    pub hi: u64,
    /// Ascending.
    pub gaps: Vec<u64>,
}

impl Tier {
    /// Whether `column` (an end time, or a unit's start) lies in a unit this rollup answers
    /// for, as SQL: a few comparisons and a set lookup per row, however many gaps.
    pub fn sql(&self, column: &str) -> String {
        self.condition(column, (">=", "<", "AND", "NOT IN"))
    }

    /// Not [`Self::sql`] of `column`, in the positive form ClickHouse prunes
    /// granules by (the flows' sort key starts with `intDiv(TimeFlowEndMs, 60000)`).
    pub fn sql_not(&self, column: &str) -> String {
        self.condition(column, ("<", ">=", "OR", "IN"))
    }

    /// `(column LO lo JOIN column HI hi [JOIN intDiv(column, unit) SET (gaps)])`.
    fn condition(&self, column: &str, (lo, hi, join, set): (&str, &str, &str, &str)) -> String {
        let mut s = format!(
            "({column} {lo} {} {join} {column} {hi} {}",
            self.lo, self.hi
        );
        if !self.gaps.is_empty() {
            s.push_str(&format!(
                " {join} intDiv({column}, {}) {set} ({})",
                self.unit,
                self.numbers()
            ));
        }
        s.push(')');
        s
    }

    /// The gaps as unit numbers, comma-separated.
    fn numbers(&self) -> String {
        self.gaps
            .iter()
            .map(|g| (g / self.unit).to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What each rollup answers: the flows ending in the units it holds. A minute inside an
/// hour the hours hold is read from the hours.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Whole hours read from `flows_1h`.
    pub hours: Option<Tier>,
    /// Whole minutes read from `flows_1m`.
    pub minutes: Option<Tier>,
}

impl Plan {
    /// Whether the flows answer alone.
    pub fn is_empty(&self) -> bool {
        self.hours.is_none() && self.minutes.is_none()
    }
}

/// The plan for an aggregation over `range`, bucketed or not.
pub fn plan(range: &TimeRange, buckets: Option<Buckets>, marks: Marks) -> Plan {
    let hours = tier(HOUR, range, buckets, marks.hour);
    let minutes = tier(MINUTE, range, buckets, marks.minute);
    // Minutes only where some minute is left outside the hours.
    let minutes = minutes.filter(|m| match &hours {
        Some(h) => !h.gaps.is_empty() || m.lo < h.lo || m.hi > h.hi,
        None => true,
    });
    Plan { hours, minutes }
}

/// The whole units of `unit` ms inside `range`, from `mark`, less those a bucket boundary
/// cuts.
fn tier(unit: u64, range: &TimeRange, buckets: Option<Buckets>, mark: u64) -> Option<Tier> {
    if mark == u64::MAX {
        return None;
    }
    let origin = buckets.map_or(0, |b| b.origin_ms);
    let lo = range
        .from_ms
        .max(mark)
        .max(origin)
        .div_ceil(unit)
        .saturating_mul(unit);
    let hi = range.to_ms.saturating_add(1) / unit * unit;
    if hi <= lo {
        return None;
    }
    let mut gaps = Vec::new();
    if let Some(b) = buckets {
        let step = b.step_ms.max(1);
        if step < unit {
            return None;
        }
        // Boundaries strictly inside [lo, hi): each off the unit cuts the unit it falls in
        // (one at most per unit, the step being no shorter). On whole units all of them,
        // none (not looked at: the range may be all time); otherwise most boundaries cut,
        // and past MAX_GAPS cuts (or 64 times as many boundaries looked at) the tier is not
        // used.
        let aligned = origin.is_multiple_of(unit) && step.is_multiple_of(unit);
        let mut edge = origin.saturating_add(((lo - origin) / step + 1).saturating_mul(step));
        let mut looked = 0usize;
        while !aligned && edge < hi {
            looked += 1;
            if looked > MAX_GAPS * 64 {
                return None;
            }
            if !edge.is_multiple_of(unit) {
                gaps.push(edge / unit * unit);
                if gaps.len() > MAX_GAPS {
                    return None;
                }
            }
            edge = edge.saturating_add(step);
        }
    }
    // Every unit cut: nothing left to read.
    if gaps.len() as u64 >= (hi - lo) / unit {
        return None;
    }
    Some(Tier { unit, lo, hi, gaps })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_700_000_000_000 / HOUR * HOUR;

    fn range(from: u64, to: u64) -> TimeRange {
        TimeRange {
            from_ms: from,
            to_ms: to,
        }
    }

    const ALL: Marks = Marks {
        hour: 0,
        minute: 0,
        addresses: 0,
        spans: 0,
    };

    // What the SQL of `Tier::sql` and `ClickHouse::source` computes, in Rust: the reference
    // the plans are checked against.
    impl Tier {
        fn holds(&self, t: u64) -> bool {
            t >= self.lo
                && t < self.hi
                && self
                    .gaps
                    .binary_search(&(t / self.unit * self.unit))
                    .is_err()
        }
    }

    impl Plan {
        /// The unit whose rollup answers for the flows ending at `t` (None: the flows do).
        fn unit_of(&self, t: u64) -> Option<u64> {
            [&self.hours, &self.minutes]
                .into_iter()
                .flatten()
                .find(|tier| tier.holds(t))
                .map(|tier| tier.unit)
        }
    }

    /// The bucket of an end time, as the store and the flows' SQL compute it.
    fn bucket(b: Buckets, e: u64) -> u64 {
        b.origin_ms + e.saturating_sub(b.origin_ms) / b.step_ms * b.step_ms
    }

    fn tier(unit: u64, lo: u64, hi: u64, gaps: &[u64]) -> Option<Tier> {
        Some(Tier {
            unit,
            lo,
            hi,
            gaps: gaps.to_vec(),
        })
    }

    /// Every end time a rollup answers for lies in a whole unit inside the range, after that
    /// rollup's mark, and in one bucket: probed every `every` ms around the range.
    fn check(r: &TimeRange, b: Option<Buckets>, m: Marks, p: &Plan, every: u64) {
        let mut t = r.from_ms.saturating_sub(2 * HOUR);
        let end = r.to_ms.saturating_add(2 * HOUR);
        while t < end {
            if let Some(unit) = p.unit_of(t) {
                let u = t / unit * unit;
                let mark = if unit == HOUR { m.hour } else { m.minute };
                assert!(
                    u >= r.from_ms && u + unit - 1 <= r.to_ms,
                    "{t}: unit in range"
                );
                assert!(u >= mark, "{t}: unit after the mark");
                if let Some(b) = b {
                    assert_eq!(bucket(b, u), bucket(b, u + unit - 1), "{t}: unit cut");
                }
            }
            t += every;
        }
    }

    #[test]
    fn whole_hours_then_whole_minutes_then_the_flows() {
        // 10:00:30 to 13:20:10: hours 11-13, minutes 10:01-13:20 outside them.
        let r = range(T + 30_000, T + 3 * HOUR + 20 * MINUTE + 10_000);
        let p = plan(&r, None, ALL);
        assert_eq!(p.hours, tier(HOUR, T + HOUR, T + 3 * HOUR, &[]));
        assert_eq!(
            p.minutes,
            tier(MINUTE, T + MINUTE, T + 3 * HOUR + 20 * MINUTE, &[])
        );
        for (t, unit) in [
            (T + 59_999, None),
            (T + MINUTE, Some(MINUTE)),
            (T + HOUR - 1, Some(MINUTE)),
            (T + HOUR, Some(HOUR)),
            (T + 3 * HOUR - 1, Some(HOUR)),
            (T + 3 * HOUR, Some(MINUTE)),
            (T + 3 * HOUR + 20 * MINUTE - 1, Some(MINUTE)),
            (T + 3 * HOUR + 20 * MINUTE, None),
        ] {
            assert_eq!(p.unit_of(t), unit, "{t}");
        }
        check(&r, None, ALL, &p, 997);
        // A range ending on a unit's last ms takes that unit; one ms short, not (and then
        // minutes serve what the hours do not).
        let p = plan(&range(T, T + HOUR - 1), None, ALL);
        assert_eq!(p.hours, tier(HOUR, T, T + HOUR, &[]));
        assert_eq!(p.minutes, None, "every minute inside the hours");
        let p = plan(&range(T, T + HOUR - 2), None, ALL);
        assert_eq!(p.hours, None);
        assert_eq!(p.minutes, tier(MINUTE, T, T + HOUR - MINUTE, &[]));
    }

    #[test]
    fn marks_hold_each_tier_back() {
        let r = range(T, T + 4 * HOUR - 1);
        let m = Marks {
            hour: T + 2 * HOUR + 1,
            minute: T + 30 * MINUTE,
            addresses: u64::MAX,
            spans: u64::MAX,
        };
        let p = plan(&r, None, m);
        assert_eq!(p.hours, tier(HOUR, T + 3 * HOUR, T + 4 * HOUR, &[]));
        assert_eq!(p.minutes, tier(MINUTE, T + 30 * MINUTE, T + 4 * HOUR, &[]));
        assert_eq!(p.unit_of(T + 29 * MINUTE), None);
        assert_eq!(p.unit_of(T + 3 * HOUR), Some(HOUR));
        check(&r, None, m, &p, 997);
        assert!(plan(&r, None, Marks::NONE).is_empty());
    }

    #[test]
    fn bucket_boundaries_cut_units_out() {
        // Hourly buckets from 10:20: every hour is cut (at :20), so only minutes serve,
        // every one of them (boundaries on whole minutes cut none).
        let r = range(T + 20 * MINUTE, T + 3 * HOUR + 20 * MINUTE - 1);
        let b = Buckets {
            origin_ms: r.from_ms,
            step_ms: HOUR,
        };
        let p = plan(&r, Some(b), ALL);
        assert_eq!(p.hours, None);
        assert_eq!(
            p.minutes,
            tier(MINUTE, T + 20 * MINUTE, T + 3 * HOUR + 20 * MINUTE, &[])
        );
        check(&r, Some(b), ALL, &p, 997);
        // The same from 10:20:30: the minutes holding 11:20:30 and 12:20:30 are cut.
        let r = range(
            T + 20 * MINUTE + 30_000,
            T + 3 * HOUR + 20 * MINUTE + 29_999,
        );
        let b = Buckets {
            origin_ms: r.from_ms,
            step_ms: HOUR,
        };
        let p = plan(&r, Some(b), ALL);
        assert_eq!(
            p.minutes,
            tier(
                MINUTE,
                T + 21 * MINUTE,
                T + 3 * HOUR + 20 * MINUTE,
                &[T + HOUR + 20 * MINUTE, T + 2 * HOUR + 20 * MINUTE]
            )
        );
        assert_eq!(p.unit_of(T + HOUR + 20 * MINUTE + 5), None);
        check(&r, Some(b), ALL, &p, 997);
        // Buckets on whole hours: hours serve.
        let r = range(T, T + 6 * HOUR - 1);
        for step in [HOUR, 2 * HOUR, 3 * HOUR] {
            let b = Buckets {
                origin_ms: T,
                step_ms: step,
            };
            let p = plan(&r, Some(b), ALL);
            assert_eq!(p.hours, tier(HOUR, T, T + 6 * HOUR, &[]), "step {step}");
            check(&r, Some(b), ALL, &p, 997);
        }
        // All time, on whole hours and off them: answered at once.
        let all = range(0, u64::MAX);
        let b = Buckets {
            origin_ms: T,
            step_ms: HOUR,
        };
        assert_eq!(
            plan(&all, Some(b), ALL).hours,
            tier(HOUR, T, u64::MAX / HOUR * HOUR, &[])
        );
        let b = Buckets {
            origin_ms: T + 1,
            step_ms: HOUR,
        };
        assert!(plan(&all, Some(b), ALL).is_empty());
        // Buckets shorter than a minute: the flows alone.
        let b = Buckets {
            origin_ms: T,
            step_ms: 30_000,
        };
        assert!(plan(&r, Some(b), ALL).is_empty());
        // Five-minute buckets off the minute: a cut minute every five.
        let b = Buckets {
            origin_ms: T + 1,
            step_ms: 5 * MINUTE,
        };
        let r = range(T + 1, T + 2 * HOUR);
        let p = plan(&r, Some(b), ALL);
        check(&r, Some(b), ALL, &p, 997);
        assert_eq!(p.minutes.as_ref().map(|m| m.gaps.len()), Some(23));
    }

    #[test]
    fn plans_hold_over_many_ranges_steps_and_marks() {
        let mut x = 7u64;
        let mut next = move |m: u64| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) % m
        };
        for _ in 0..1000 {
            let from = T + next(3 * HOUR);
            let r = range(from, from + next(10 * HOUR));
            let m = Marks {
                hour: [0, T + next(5 * HOUR), u64::MAX][next(3) as usize],
                minute: [0, T + next(5 * HOUR), u64::MAX][next(3) as usize],
                addresses: u64::MAX,
                spans: u64::MAX,
            };
            let b = [
                None,
                Some(Buckets {
                    origin_ms: from,
                    step_ms: [30_000, MINUTE, 5 * MINUTE, 7 * MINUTE + 3, HOUR, 2 * HOUR]
                        [next(6) as usize],
                }),
            ][next(2) as usize];
            check(&r, b, m, &plan(&r, b, m), 7_919);
        }
    }

    #[test]
    fn tiers_as_sql() {
        let t = Tier {
            unit: MINUTE,
            lo: 120_000,
            hi: 600_000,
            gaps: vec![180_000, 300_000],
        };
        assert_eq!(
            t.sql("Minute"),
            "(Minute >= 120000 AND Minute < 600000 AND intDiv(Minute, 60000) NOT IN (3, 5))"
        );
        assert_eq!(
            t.sql_not("E"),
            "(E < 120000 OR E >= 600000 OR intDiv(E, 60000) IN (3, 5))"
        );
        let t = Tier { gaps: vec![], ..t };
        assert_eq!(t.sql("H"), "(H >= 120000 AND H < 600000)");
        assert_eq!(t.sql_not("E"), "(E < 120000 OR E >= 600000)");
    }
}
