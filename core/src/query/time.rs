//! Time ranges: absolute Unix milliseconds, RFC 3339-like UTC stamps, or relative to now.

use super::QueryError;
use std::time::{SystemTime, UNIX_EPOCH};

/// A closed time range in Unix milliseconds. A flow is in range when its
/// [TimeFlowStartMs, TimeFlowEndMs] overlaps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub from_ms: u64,
    pub to_ms: u64,
}

impl TimeRange {
    /// Everything.
    pub const ALL: TimeRange = TimeRange {
        from_ms: 0,
        to_ms: u64::MAX,
    };

    /// Builds a range from optional user texts (`from` defaults to the beginning, `to` to now),
    /// refusing reversed ranges.
    pub fn parse(from: Option<&str>, to: Option<&str>, now_ms: u64) -> Result<Self, QueryError> {
        let from_ms = match from {
            Some(t) => {
                parse_time(t, now_ms).map_err(|m| QueryError::new(0, format!("from: {m}")))?
            }
            None => 0,
        };
        let to_ms = match to {
            Some(t) => parse_time(t, now_ms).map_err(|m| QueryError::new(0, format!("to: {m}")))?,
            None => u64::MAX,
        };
        if from_ms > to_ms {
            return Err(QueryError::new(
                0,
                format!("reversed time range: from ({from_ms}) is after to ({to_ms})"),
            ));
        }
        Ok(TimeRange { from_ms, to_ms })
    }

    /// Whether a flow spanning [start, end] overlaps the range.
    pub fn overlaps(&self, start_ms: u64, end_ms: u64) -> bool {
        start_ms <= self.to_ms && end_ms >= self.from_ms
    }
}

static PINNED_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Stops the clock at `ms` for the whole process (`weir incident open`: the replay's "now"
/// is the incident's end, so default windows, plugins' clocks and views see the incident's
/// time). 0 lets it run again.
pub fn pin_now(ms: u64) {
    PINNED_MS.store(ms, std::sync::atomic::Ordering::Relaxed);
}

/// The clock pinned by [`pin_now`], if any.
pub fn pinned_ms() -> Option<u64> {
    match PINNED_MS.load(std::sync::atomic::Ordering::Relaxed) {
        0 => None,
        ms => Some(ms),
    }
}

/// Milliseconds since the Unix epoch: now (the pinned time when [`pin_now`] set one).
pub fn now_ms() -> u64 {
    let pinned = PINNED_MS.load(std::sync::atomic::Ordering::Relaxed);
    if pinned != 0 {
        return pinned;
    }
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Parses `now`, `-5m` / `5m` (ago; units ms s m h d w), a Unix time in ms (13+ digits) or s,
/// or `YYYY-MM-DDTHH:MM:SS[.mmm]Z`.
pub fn parse_time(text: &str, now_ms: u64) -> Result<u64, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("now") {
        return Ok(now_ms);
    }
    if let Ok(n) = t.parse::<u64>() {
        return Ok(if t.len() >= 12 {
            n
        } else {
            n.saturating_mul(1000)
        });
    }
    let rel = t.strip_prefix('-').unwrap_or(t);
    if let Some(ms) = parse_duration_ms(rel) {
        return Ok(now_ms.saturating_sub(ms));
    }
    parse_rfc3339(t).ok_or_else(|| {
        format!("cannot read time '{t}': use now, -15m, 2h, a Unix time, or 2026-01-31T12:00:00Z")
    })
}

/// Parses `500ms`, `10s`, `5m`, `2h`, `7d`, `1w`.
pub fn parse_duration_ms(t: &str) -> Option<u64> {
    let split = t.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 604_800_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn parse_rfc3339(t: &str) -> Option<u64> {
    let t = t.strip_suffix('Z').or_else(|| t.strip_suffix("+00:00"))?;
    let (date, time) = t.split_once(['T', ' '])?;
    let mut d = date.split('-');
    let (y, mo, da): (i64, u32, u32) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let (hms, frac) = match time.split_once('.') {
        Some((a, b)) => (a, b),
        None => (time, "0"),
    };
    let mut h = hms.split(':');
    let (hh, mm, ss): (u64, u64, u64) = (
        h.next()?.parse().ok()?,
        h.next()?.parse().ok()?,
        h.next().unwrap_or("0").parse().ok()?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Digits only, so that slicing the first three is on character boundaries (a fuzzer's
    // `.\u{b0}2Z` once panicked here) and `.5x` is not read as `.5`.
    if frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ms: u64 = format!("{:0<3}", &frac[..frac.len().min(3)]).parse().ok()?;
    let days = days_from_civil(y, mo, da);
    if days < 0 {
        return None;
    }
    Some(((days as u64 * 86_400) + hh * 3600 + mm * 60 + ss) * 1000 + ms)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Human form of a byte count (`1.5 MiB`; powers of 1024).
pub fn human_bytes(n: u64) -> String {
    const U: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

/// Formats Unix milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_forms() {
        let now = 1_800_000_000_000;
        assert_eq!(parse_time("now", now), Ok(now));
        assert_eq!(parse_time("-5m", now), Ok(now - 300_000));
        assert_eq!(parse_time("2h", now), Ok(now - 7_200_000));
        assert_eq!(parse_time("1700000000", now), Ok(1_700_000_000_000));
        assert_eq!(parse_time("1700000000123", now), Ok(1_700_000_000_123));
        assert_eq!(
            parse_time("2026-01-31T12:00:00Z", now),
            Ok(1_769_860_800_000)
        );
        assert!(parse_time("yesterday", now).is_err());
        assert!(parse_time("2026-13-01T00:00:00Z", now).is_err());
    }

    /// Found by the `args` fuzz target: a fraction of seconds with a character wider than a
    /// byte in its first three panicked (a `from=` could fail the request's task).
    #[test]
    fn a_fraction_of_seconds_is_digits_only() {
        let now = 1_800_000_000_000;
        let finding = include_bytes!("../../../fuzz/regressions/args/rfc3339-fraction-not-ascii");
        for line in String::from_utf8_lossy(finding).split('\n') {
            let _ = parse_time(line, now);
        }
        for bad in [
            "2026-12-05T10:00:00.\u{b0}02Z",
            "2026-12-05T10:00:00.5xZ",
            "2026-12-05T10:00:00.Z",
        ] {
            let e = parse_time(bad, now).expect_err(bad);
            assert!(e.contains("cannot read time"), "{bad}: {e}");
        }
        assert_eq!(
            parse_time("2026-12-05T10:00:00.5Z", now),
            Ok(1_796_464_800_500)
        );
        assert_eq!(
            parse_time("2026-12-05T10:00:00.123456Z", now),
            Ok(1_796_464_800_123)
        );
    }

    #[test]
    fn formats_round_trip() {
        let ms = 1_769_860_800_123;
        assert_eq!(format_ms(ms), "2026-01-31T12:00:00.123Z");
        assert_eq!(parse_time(&format_ms(ms), 0), Ok(ms));
    }

    #[test]
    fn reversed_range_is_refused() {
        let e = TimeRange::parse(Some("-1m"), Some("-5m"), 10_000_000).unwrap_err();
        assert!(e.message.contains("reversed"), "{e}");
    }
}
