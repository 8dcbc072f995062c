//! The tick clock: jiffies mapped onto CLOCK_MONOTONIC, so the TC programs stamp a flow's
//! later packets with one cheap helper (`bpf_jiffies64`, a load of one word) and a multiply,
//! instead of the coarse clock's call into the timekeeper (~23 ns a packet more here).
//!
//! The kernel advances jiffies by one every `TICK_NSEC` of CLOCK_MONOTONIC, counted from a
//! fixed start (`last_jiffies_update += TICK_NSEC` per jiffy), so the start of the current
//! jiffy is `base + jiffies * TICK_NSEC` for a `base` fixed since boot. Neither number is
//! exported, so [`calibrate`] measures them: it runs the never-attached `weir_clock` program
//! (`BPF_PROG_TEST_RUN`, which returns jiffies) back to back between two reads of
//! CLOCK_MONOTONIC, finds the moments jiffies moves on, and takes `HZ` from their spacing and
//! `base` from their phase. A packet's stamp is then the start of its tick, as the coarse
//! clock's is: never later than the time it was read by more than the tick interrupt's
//! latency during calibration (a fit any move strays from by more than `SLACK_NS` is
//! refused).

use crate::records::clock_ns;
use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use std::sync::OnceLock;
use std::time::Duration;

/// `base + jiffies * tick_ns` is CLOCK_MONOTONIC at the start of the current jiffy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TickClock {
    pub(super) tick_ns: u64,
    pub(super) base_ns: u64,
    /// The kernel's `HZ` the spacing of ticks gave.
    pub(super) hz: u64,
}

/// Why the tick clock could not be calibrated (the programs then read the coarse clock).
#[derive(Debug, Clone, thiserror::Error)]
pub(super) enum ClockError {
    #[error("running weir_clock (BPF_PROG_TEST_RUN): {0}")]
    Run(String),
    #[error("jiffies did not move on {wanted} times within {waited:?}")]
    TooFewTicks { wanted: usize, waited: Duration },
    #[error("ticks {spacing_ns} ns apart are no kernel's HZ (nearest {hz})")]
    Implausible { spacing_ns: u64, hz: u64 },
    #[error("jiffies moved {off_ns} ns away from where HZ {hz} puts the tick: not a fixed tick")]
    Inconsistent { hz: u64, off_ns: u64 },
    #[error("drifted from CLOCK_MONOTONIC since calibrated (stamp {off_ns} ns off)")]
    Drifted { off_ns: i64 },
}

/// The one calibration of the process: the relation is the kernel's, the same in every
/// namespace, so the first namespace loaded measures it for all.
static CALIBRATED: OnceLock<Result<TickClock, ClockError>> = OnceLock::new();

/// Set once a check found the tick clock off CLOCK_MONOTONIC (a kernel whose jiffies do not
/// follow it, such as one ticking periodically from a hardware timer): the programs read the
/// coarse clock from then on, in every namespace.
static DRIFTED: OnceLock<ClockError> = OnceLock::new();

/// The calibration made already, if any (an error once the clock drifted).
pub(super) fn calibrated() -> Option<Result<TickClock, ClockError>> {
    if let Some(e) = DRIFTED.get() {
        return Some(Err(e.clone()));
    }
    CALIBRATED.get().cloned()
}

/// The tick clock, calibrated with `prog` the first time it is asked for.
pub(super) fn tick_clock(prog: &SchedClassifier) -> Result<TickClock, ClockError> {
    calibrated().unwrap_or_else(|| CALIBRATED.get_or_init(|| calibrate(prog)).clone())
}

/// Why the tick clock was turned off after calibration, if it was.
pub(super) fn drifted() -> Option<ClockError> {
    DRIFTED.get().cloned()
}

/// What the programs read once the tick clock is off (said in the log and the status).
pub(super) const AFTER_DRIFT: &str = "packets read the coarse clock (the precise one before 5.11)";

/// A stamp may lie this far after its reading before a check calls it off: twice what a
/// calibration lets the base be late, and a window's width.
const LATE_LIMIT_NS: u64 = 2 * SLACK_NS + TIGHT_NS;
/// Ticks a stamp may lie before its reading: jiffies can go stale for a few ticks (a late
/// tick interrupt; on a VM, the timekeeping vCPU descheduled), which the coarse clock
/// suffers alike. Drift that matters grows past this.
const EARLY_TICKS: u64 = 5;

/// How far (ns) the stamp of reading `r` lies outside what the tick clock promises: not later
/// than the reading (by more than [`LATE_LIMIT_NS`]), not more than [`EARLY_TICKS`] ticks
/// and 1 ms before it. Positive: late; negative: early; 0: within.
fn stamp_off(t: &TickClock, r: &Reading) -> i64 {
    let stamp = t.base_ns.wrapping_add(r.jiffies.wrapping_mul(t.tick_ns)) as i64;
    let late = stamp.wrapping_sub(r.after_ns as i64);
    let early = (r.before_ns as i64).wrapping_sub(stamp);
    if late > LATE_LIMIT_NS as i64 {
        late
    } else if early > (EARLY_TICKS * t.tick_ns + 1_000_000) as i64 {
        -early
    } else {
        0
    }
}

/// Checks the tick clock against CLOCK_MONOTONIC with `prog`: how far off a reading's stamp
/// is (0: within; see [`stamp_off`]). The caller decides, over several checks, whether it
/// drifted ([`mark_drifted`]).
pub(super) fn stamp_off_now(prog: &SchedClassifier, t: &TickClock) -> Result<i64, ClockError> {
    Ok(stamp_off(t, &read(prog)?))
}

/// Records that the tick clock drifted, for every later caller (the programs then read the
/// coarse clock), and says why.
pub(super) fn mark_drifted(off_ns: i64) -> ClockError {
    DRIFTED
        .get_or_init(|| ClockError::Drifted { off_ns })
        .clone()
}

/// One reading of jiffies: the 64-bit value and the CLOCK_MONOTONIC times just before and
/// just after the program read its low half.
#[derive(Debug, Clone, Copy)]
struct Reading {
    jiffies: u64,
    before_ns: u64,
    after_ns: u64,
}

fn run(prog: &SchedClassifier, high: bool) -> Result<u32, ClockError> {
    // A 14-byte packet (an Ethernet header, the least a TC test run takes) asks for the low
    // half, a 15-byte one for the high half.
    let packet = [0u8; 15];
    let len = if high { 15 } else { 14 };
    let opts = TestRunOptions {
        data_in: Some(&packet[..len]),
        ..TestRunOptions::new()
    };
    prog.test_run(opts)
        .map(|r| r.return_value)
        .map_err(|e| ClockError::Run(e.to_string()))
}

fn read(prog: &SchedClassifier) -> Result<Reading, ClockError> {
    loop {
        let high = run(prog, true)?;
        let before_ns = clock_ns(libc::CLOCK_MONOTONIC);
        let low = run(prog, false)?;
        let after_ns = clock_ns(libc::CLOCK_MONOTONIC);
        // The high half changes once every 2^32 ticks; read again across the change.
        if run(prog, true)? == high {
            return Ok(Reading {
                jiffies: (u64::from(high) << 32) | u64::from(low),
                before_ns,
                after_ns,
            });
        }
    }
}

/// Ticks to see move on, and the least time they must span (HZ within 0.1 % at HZ=1000).
const TRANSITIONS: usize = 4;
const MIN_SPAN: Duration = Duration::from_millis(30);
const GIVE_UP: Duration = Duration::from_secs(2);
/// Two readings further apart than this (the thread was preempted or interrupted between
/// them) date no move: back to back they are a few test runs, microseconds, apart.
const TIGHT_NS: u64 = 50_000;
/// A move may come this long after where the fitted tick puts it (the tick interrupt's
/// latency) before the fit is refused.
const SLACK_NS: u64 = 100_000;
/// Every `CONFIG_HZ` a Linux architecture offers.
const KNOWN_HZ: [u64; 15] = [
    24, 32, 48, 64, 100, 128, 200, 250, 256, 300, 500, 512, 1000, 1024, 1200,
];

/// The move of jiffies two consecutive readings date, `(jiffies, not before, not after)`:
/// only one of exactly one tick, between readings close enough to date it.
fn dated_move(prev: &Reading, r: &Reading) -> Option<(u64, u64, u64)> {
    (r.jiffies == prev.jiffies.wrapping_add(1)
        && r.after_ns.saturating_sub(prev.before_ns) <= TIGHT_NS)
        .then_some((r.jiffies, prev.before_ns, r.after_ns))
}

/// Measures the tick clock (30-40 ms of back-to-back test runs at HZ=250), up to three
/// times: a move dated late (the tick's interrupt held up, say by the hypervisor) makes a
/// fit that [`fit`] refuses, and the next measurement does without it.
fn calibrate(prog: &SchedClassifier) -> Result<TickClock, ClockError> {
    let mut last = measure(prog);
    for _ in 1..3 {
        // Only a fit refused is worth measuring again: no tight move at all (a machine too
        // slow or too busy) or a program that cannot run would fail alike.
        if !matches!(
            last,
            Err(ClockError::Implausible { .. } | ClockError::Inconsistent { .. })
        ) {
            break;
        }
        last = measure(prog);
    }
    last
}

/// One measurement of the tick clock.
fn measure(prog: &SchedClassifier) -> Result<TickClock, ClockError> {
    let start = clock_ns(libc::CLOCK_MONOTONIC);
    let mut prev = read(prog)?;
    // (jiffies, earliest and latest time it can have moved on to this value)
    let mut moves: Vec<(u64, u64, u64)> = Vec::new();
    loop {
        let r = read(prog)?;
        // jiffies starts at 2^32 - 300 HZ: 0 is a program that could not read it.
        if r.jiffies == 0 {
            return Err(ClockError::Run("weir_clock read jiffies as 0".into()));
        }
        moves.extend(dated_move(&prev, &r));
        prev = r;
        let spanned = match (moves.first(), moves.last()) {
            (Some(a), Some(b)) => b.2.saturating_sub(a.2),
            _ => 0,
        };
        if moves.len() >= TRANSITIONS && spanned >= MIN_SPAN.as_nanos() as u64 {
            break;
        }
        let waited = clock_ns(libc::CLOCK_MONOTONIC).saturating_sub(start);
        if waited > GIVE_UP.as_nanos() as u64 {
            return Err(ClockError::TooFewTicks {
                wanted: TRANSITIONS,
                waited: Duration::from_nanos(waited),
            });
        }
    }
    fit(&moves)
}

/// HZ and the base from the moments jiffies moved on: `(jiffies, not before, not after)`.
fn fit(moves: &[(u64, u64, u64)]) -> Result<TickClock, ClockError> {
    let (Some(first), Some(last)) = (moves.first(), moves.last()) else {
        return Err(ClockError::TooFewTicks {
            wanted: TRANSITIONS,
            waited: Duration::ZERO,
        });
    };
    let ticks = last.0.saturating_sub(first.0).max(1);
    let mid = |m: &(u64, u64, u64)| m.1 / 2 + m.2 / 2;
    let spacing_ns = mid(last).saturating_sub(mid(first)) / ticks;
    let measured = 1e9 / spacing_ns.max(1) as f64;
    // The nearest HZ a kernel can have, within 1 %.
    let hz = KNOWN_HZ
        .iter()
        .copied()
        .min_by(|a, b| {
            (*a as f64 - measured)
                .abs()
                .total_cmp(&(*b as f64 - measured).abs())
        })
        .unwrap_or(250);
    if (hz as f64 - measured).abs() > hz as f64 / 100.0 {
        return Err(ClockError::Implausible { spacing_ns, hz });
    }
    // The kernel's TICK_NSEC.
    let tick_ns = (1_000_000_000 + hz / 2) / hz;
    // Each move happened after its tick started, so `not before - jiffies * tick` is at most
    // the base; the latest of those bounds is the closest. (The base is CLOCK_MONOTONIC at
    // jiffy 0, long before boot: a negative number, kept in wrapping u64 arithmetic.)
    let start_of = |base: u64, j: u64| base.wrapping_add(j.wrapping_mul(tick_ns));
    let base_ns = moves
        .iter()
        .map(|m| m.1.wrapping_sub(m.0.wrapping_mul(tick_ns)))
        .max_by_key(|b| *b as i64)
        .unwrap_or(0);
    // Every move must fall where the fit puts its tick: a wrong HZ drifts off across the
    // span, either way, and some move then lies before its fitted tick. (None lies after:
    // the base is the latest of the moves' lower bounds.)
    for m in moves {
        let tick_start = start_of(base_ns, m.0) as i64;
        let late = tick_start.wrapping_sub(m.2 as i64);
        if late > SLACK_NS as i64 {
            return Err(ClockError::Inconsistent {
                hz,
                off_ns: late.unsigned_abs(),
            });
        }
    }
    Ok(TickClock {
        tick_ns,
        base_ns,
        hz,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_finds_hz_and_base_from_moves() {
        // HZ=250 (4 ms ticks), base 7 000 000 + jiffies 4 294 967 296 + k: each move seen
        // 3 µs after its tick started, in a window of 2 µs.
        let tick = 4_000_000u64;
        let base = 7_000_000u64;
        let j0 = 1u64 << 32;
        let moves: Vec<_> = (0..10)
            .map(|k| {
                let start = base.wrapping_add((j0 + k).wrapping_mul(tick));
                (j0 + k, start + 1_000, start + 3_000)
            })
            .collect();
        let c = fit(&moves).expect("fits");
        assert_eq!(c.hz, 250);
        assert_eq!(c.tick_ns, tick);
        assert_eq!(c.base_ns, base + 1_000);
        // HZ=300: TICK_NSEC rounds to 3 333 333.
        let tick = 3_333_333u64;
        let moves: Vec<_> = (0..12)
            .map(|k| {
                let start = base.wrapping_add((j0 + k).wrapping_mul(tick));
                (j0 + k, start, start + 2_000)
            })
            .collect();
        assert_eq!(fit(&moves).expect("fits").hz, 300);
        // One tick a minute is no kernel's.
        let moves = [(10, 0, 1), (11, 60_000_000_000, 60_000_000_001)];
        assert!(matches!(fit(&moves), Err(ClockError::Implausible { .. })));
        // Ticks 4.02 ms apart snap to HZ=250 (0.5 % off) but drift 20 µs a tick from its
        // 4 ms: over 40 ticks, 0.8 ms off at the end.
        let moves: Vec<_> = (0..40)
            .map(|k| {
                let start = base.wrapping_add(j0.wrapping_mul(4_000_000)) + k * 4_020_000;
                (j0 + k, start, start + 2_000)
            })
            .collect();
        assert!(matches!(
            fit(&moves),
            Err(ClockError::Inconsistent { hz: 250, .. })
        ));
    }

    #[test]
    fn a_stamp_off_its_tick_is_told() {
        let t = TickClock {
            tick_ns: 4_000_000,
            base_ns: 0u64.wrapping_sub(17_179_869_184_000_000),
            hz: 250,
        };
        let j = 4_294_967_296u64 + 1_000;
        let start = t.base_ns.wrapping_add(j * t.tick_ns);
        let at = |before_ns: u64| Reading {
            jiffies: j,
            before_ns,
            after_ns: before_ns + 3_000,
        };
        // Read 1 ms into the tick, just as it started, or with jiffies 3 ticks stale: within.
        assert_eq!(stamp_off(&t, &at(start + 1_000_000)), 0);
        assert_eq!(stamp_off(&t, &at(start - 2_000)), 0);
        assert_eq!(stamp_off(&t, &at(start + 13_000_000)), 0);
        // The stamp 1 ms after the reading, or the reading 30 ms past the tick's start.
        assert_eq!(stamp_off(&t, &at(start - 1_003_000)), 1_000_000);
        assert_eq!(stamp_off(&t, &at(start + 30_000_000)), -30_000_000);
    }

    #[test]
    fn only_close_readings_of_one_tick_date_a_move() {
        let at = |jiffies, before_ns, after_ns| Reading {
            jiffies,
            before_ns,
            after_ns,
        };
        let prev = at(100, 1_000_000, 1_003_000);
        assert_eq!(
            dated_move(&prev, &at(101, 1_010_000, 1_012_000)),
            Some((101, 1_000_000, 1_012_000))
        );
        // The same tick, two ticks, or readings 5 ms apart (preempted between): none.
        assert_eq!(dated_move(&prev, &at(100, 1_010_000, 1_012_000)), None);
        assert_eq!(dated_move(&prev, &at(102, 1_010_000, 1_012_000)), None);
        assert_eq!(dated_move(&prev, &at(101, 6_000_000, 6_002_000)), None);
    }
}
