//! Which part of an aggregation the rollups answer (`flows_1h`, `flows_1m`) and which part the
//! flows themselves: the plan, as intervals of flow end times.
//!
//! A flow counts in a range when it overlaps it. Every flow whose end lies in a whole hour (or
//! minute) inside the range overlaps it, so that unit's rows of sums stand for exactly the
//! flows ending in it. With time buckets, a flow's bucket is the one its end falls in, so a
//! unit is used only when no bucket boundary cuts it: all its flows then share the bucket of
//! the unit's start. The plan takes whole hours first, then whole minutes outside those hours,
//! each only from the time its rollup holds every flow (its mark in `weir_rollups`); the flows
//! ending anywhere else are read from `flows`.

use weir_core::query::TimeRange;
use weir_core::store::Buckets;

/// A minute in ms.
pub const MINUTE: u64 = 60_000;
/// An hour in ms.
pub const HOUR: u64 = 3_600_000;

/// Most intervals one tier writes into a query (each is a condition); a tier that would need
/// more (short buckets with an origin off the unit) is left to the finer tier or the flows.
const MAX_INTERVALS: usize = 500;

/// From when each rollup holds every flow, in ms (`u64::MAX`: not usable).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Marks {
    pub hour: u64,
    pub minute: u64,
}

impl Marks {
    /// Neither rollup usable.
    pub const NONE: Marks = Marks {
        hour: u64::MAX,
        minute: u64::MAX,
    };
}

/// Half-open intervals `[a, b)` of end times in ms, sorted and disjoint.
pub type Intervals = Vec<(u64, u64)>;

/// What each rollup answers: the end times whose flows it stands for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Whole hours read from `flows_1h`.
    pub hours: Intervals,
    /// Whole minutes read from `flows_1m` (none inside `hours`).
    pub minutes: Intervals,
}

impl Plan {
    /// Whether the flows answer alone.
    pub fn is_empty(&self) -> bool {
        self.hours.is_empty() && self.minutes.is_empty()
    }

    /// The end times the flows answer for: every time outside `hours` and `minutes`.
    pub fn rest(&self) -> Intervals {
        let mut covered: Intervals = self
            .hours
            .iter()
            .chain(self.minutes.iter())
            .copied()
            .collect();
        covered.sort_unstable();
        let mut out = Vec::with_capacity(covered.len() + 1);
        let mut at = 0;
        for (a, b) in covered {
            if a > at {
                out.push((at, a));
            }
            at = at.max(b);
        }
        if at < u64::MAX {
            out.push((at, u64::MAX));
        }
        out
    }
}

/// The plan for an aggregation over `range`, bucketed or not.
pub fn plan(range: &TimeRange, buckets: Option<Buckets>, marks: Marks) -> Plan {
    let hours = units(HOUR, range, buckets, marks.hour);
    let minutes = subtract(&units(MINUTE, range, buckets, marks.minute), &hours);
    let minutes = if minutes.len() > MAX_INTERVALS {
        Vec::new()
    } else {
        minutes
    };
    Plan { hours, minutes }
}

/// The whole units of `unit` ms inside `range`, from `mark`, that no bucket boundary cuts.
fn units(unit: u64, range: &TimeRange, buckets: Option<Buckets>, mark: u64) -> Intervals {
    if mark == u64::MAX {
        return Vec::new();
    }
    let origin = buckets.map_or(0, |b| b.origin_ms);
    let t0 = range
        .from_ms
        .max(mark)
        .max(origin)
        .div_ceil(unit)
        .saturating_mul(unit);
    let t1 = range.to_ms.saturating_add(1) / unit * unit;
    if t1 <= t0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut at = t0;
    if let Some(b) = buckets {
        let step = b.step_ms.max(1);
        if step < unit {
            return Vec::new();
        }
        // Boundaries strictly inside [t0, t1): each off the unit cuts the unit it falls in
        // (one at most per unit, the step being no shorter). On whole units all of them,
        // none (not looked at: the range may be all time); otherwise most boundaries cut, and
        // past MAX_INTERVALS cuts (or 64 times as many boundaries looked at) the tier is
        // not used.
        let aligned = origin.is_multiple_of(unit) && step.is_multiple_of(unit);
        let mut edge = origin.saturating_add(((t0 - origin) / step + 1).saturating_mul(step));
        let mut looked = 0usize;
        while !aligned && edge < t1 {
            looked += 1;
            if looked > MAX_INTERVALS * 64 {
                return Vec::new();
            }
            if !edge.is_multiple_of(unit) {
                let cut = edge / unit * unit;
                if cut > at {
                    out.push((at, cut));
                }
                at = cut + unit;
                if out.len() > MAX_INTERVALS {
                    return Vec::new();
                }
            }
            edge = edge.saturating_add(step);
        }
    }
    if at < t1 {
        out.push((at, t1));
    }
    out
}

/// `a` without `b` (both sorted and disjoint).
fn subtract(a: &Intervals, b: &Intervals) -> Intervals {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let mut j = 0;
    for &(mut s, e) in a {
        while j < b.len() && b[j].1 <= s {
            j += 1;
        }
        let mut k = j;
        while k < b.len() && b[k].0 < e {
            if b[k].0 > s {
                out.push((s, b[k].0));
            }
            s = s.max(b[k].1);
            k += 1;
        }
        if s < e {
            out.push((s, e));
        }
    }
    out
}

/// `column` within `intervals`, as SQL (`0` for none: nothing is).
pub fn within(column: &str, intervals: &Intervals) -> String {
    if intervals.is_empty() {
        return "0".into();
    }
    let terms: Vec<String> = intervals
        .iter()
        .map(|&(a, b)| match (a, b) {
            (0, u64::MAX) => "1".to_string(),
            (0, b) => format!("{column} < {b}"),
            (a, u64::MAX) => format!("{column} >= {a}"),
            (a, b) => format!("({column} >= {a} AND {column} < {b})"),
        })
        .collect();
    format!("({})", terms.join(" OR "))
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

    const ALL: Marks = Marks { hour: 0, minute: 0 };

    /// The bucket of an end time, as the store and the flows' SQL compute it.
    fn bucket(b: Buckets, e: u64) -> u64 {
        b.origin_ms + e.saturating_sub(b.origin_ms) / b.step_ms * b.step_ms
    }

    /// Every unit a plan uses lies inside the range, after its mark, and in one bucket;
    /// no time is in two tiers; and the rest is exactly what no tier covers.
    fn check(r: &TimeRange, b: Option<Buckets>, m: Marks, p: &Plan) {
        for (tier, unit, mark) in [(&p.hours, HOUR, m.hour), (&p.minutes, MINUTE, m.minute)] {
            for &(a, e) in tier {
                assert!(
                    a < e && a.is_multiple_of(unit) && e.is_multiple_of(unit),
                    "{a}..{e} whole units"
                );
                assert!(
                    a >= r.from_ms && e - 1 <= r.to_ms && a >= mark,
                    "{a}..{e} in range"
                );
                if let Some(b) = b {
                    let mut u = a;
                    while u < e {
                        assert_eq!(bucket(b, u), bucket(b, u + unit - 1), "unit {u} cut");
                        u += unit;
                    }
                }
            }
        }
        for &(a, e) in &p.minutes {
            for &(x, y) in &p.hours {
                assert!(e <= x || a >= y, "minutes {a}..{e} inside hours {x}..{y}");
            }
        }
        let rest = p.rest();
        for probe in [
            0,
            r.from_ms,
            r.to_ms,
            T + 59_999,
            T + HOUR + 1,
            u64::MAX - 1,
        ] {
            let covered = p
                .hours
                .iter()
                .chain(&p.minutes)
                .any(|&(a, e)| probe >= a && probe < e);
            let in_rest = rest.iter().any(|&(a, e)| probe >= a && probe < e);
            assert_ne!(covered, in_rest, "{probe}: covered or rest, not both");
        }
    }

    #[test]
    fn whole_hours_then_whole_minutes_then_the_flows() {
        // 10:00:30 to 13:20:10: hours 11-13, minutes 10:01-11:00 and 13:00-13:20.
        let r = range(T + 30_000, T + 3 * HOUR + 20 * MINUTE + 10_000);
        let p = plan(&r, None, ALL);
        assert_eq!(p.hours, vec![(T + HOUR, T + 3 * HOUR)]);
        assert_eq!(
            p.minutes,
            vec![
                (T + MINUTE, T + HOUR),
                (T + 3 * HOUR, T + 3 * HOUR + 20 * MINUTE)
            ]
        );
        check(&r, None, ALL, &p);
        assert_eq!(
            p.rest(),
            vec![(0, T + MINUTE), (T + 3 * HOUR + 20 * MINUTE, u64::MAX)]
        );
        // A range ending on a unit's last ms takes that unit; one ms short, not.
        let p = plan(&range(T, T + HOUR - 1), None, ALL);
        assert_eq!(p.hours, vec![(T, T + HOUR)]);
        let p = plan(&range(T, T + HOUR - 2), None, ALL);
        assert!(p.hours.is_empty());
        assert_eq!(p.minutes, vec![(T, T + HOUR - MINUTE)]);
    }

    #[test]
    fn marks_hold_each_tier_back() {
        let r = range(T, T + 4 * HOUR - 1);
        let m = Marks {
            hour: T + 2 * HOUR + 1,
            minute: T + 30 * MINUTE,
        };
        let p = plan(&r, None, m);
        assert_eq!(p.hours, vec![(T + 3 * HOUR, T + 4 * HOUR)]);
        assert_eq!(p.minutes, vec![(T + 30 * MINUTE, T + 3 * HOUR)]);
        check(&r, None, m, &p);
        assert!(plan(&r, None, Marks::NONE).is_empty());
        assert_eq!(Plan::default().rest(), vec![(0, u64::MAX)]);
    }

    #[test]
    fn bucket_boundaries_cut_units_out() {
        // Hourly buckets from 10:20: every hour is cut (at :20), so only minutes serve, all
        // but the three minutes holding a boundary.
        let r = range(T + 20 * MINUTE, T + 3 * HOUR + 20 * MINUTE - 1);
        let b = Buckets {
            origin_ms: r.from_ms,
            step_ms: HOUR,
        };
        let p = plan(&r, Some(b), ALL);
        assert!(p.hours.is_empty());
        assert_eq!(
            p.minutes.len(),
            1,
            "boundaries on whole minutes cut nothing"
        );
        check(&r, Some(b), ALL, &p);
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
            vec![
                (T + 21 * MINUTE, T + HOUR + 20 * MINUTE),
                (T + HOUR + 21 * MINUTE, T + 2 * HOUR + 20 * MINUTE),
                (T + 2 * HOUR + 21 * MINUTE, T + 3 * HOUR + 20 * MINUTE),
            ]
        );
        check(&r, Some(b), ALL, &p);
        // Buckets on whole hours: hours serve.
        let r = range(T, T + 6 * HOUR - 1);
        for step in [HOUR, 2 * HOUR, 3 * HOUR] {
            let b = Buckets {
                origin_ms: T,
                step_ms: step,
            };
            let p = plan(&r, Some(b), ALL);
            assert_eq!(p.hours, vec![(T, T + 6 * HOUR)], "step {step}");
            check(&r, Some(b), ALL, &p);
        }
        // All time, on whole hours and off them: answered at once.
        let all = range(0, u64::MAX);
        let b = Buckets {
            origin_ms: T,
            step_ms: HOUR,
        };
        assert_eq!(
            plan(&all, Some(b), ALL).hours,
            vec![(T, u64::MAX / HOUR * HOUR)]
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
        check(&r, Some(b), ALL, &p);
        assert_eq!(p.minutes.len(), 24, "{:?}", p.minutes);
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
        for _ in 0..2000 {
            let from = T + next(3 * HOUR);
            let r = range(from, from + next(10 * HOUR));
            let m = Marks {
                hour: [0, T + next(5 * HOUR), u64::MAX][next(3) as usize],
                minute: [0, T + next(5 * HOUR), u64::MAX][next(3) as usize],
            };
            let b = [
                None,
                Some(Buckets {
                    origin_ms: from,
                    step_ms: [30_000, MINUTE, 5 * MINUTE, 7 * MINUTE + 3, HOUR, 2 * HOUR]
                        [next(6) as usize],
                }),
            ][next(2) as usize];
            check(&r, b, m, &plan(&r, b, m));
        }
    }

    #[test]
    fn intervals_as_sql() {
        assert_eq!(within("Hour", &vec![]), "0");
        assert_eq!(
            within("E", &vec![(0, 5), (7, 9), (11, u64::MAX)]),
            "(E < 5 OR (E >= 7 AND E < 9) OR E >= 11)"
        );
        assert_eq!(within("E", &vec![(0, u64::MAX)]), "(1)");
    }
}
