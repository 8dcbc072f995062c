//! Log files the operator names (`weir agent --log-file`): syslog text files and systemd
//! journals, kept as `log` records beside the OTLP ones (source `syslog` or `journald`).
//!
//! - [`LogSource`] is the port an adapter implements (the `weir-logs` crate follows a text
//!   file across rotation, and reads a journal through `journalctl`): each poll hands over
//!   what is new since the last one, and a position to persist so a restart resumes there.
//! - [`parse_syslog`] reads one line of RFC 3164 (`<PRI>Mmm dd hh:mm:ss host app[pid]: msg`,
//!   the PRI optional as files written by rsyslog have none) or RFC 5424
//!   (`<PRI>1 2026-12-04T10:00:00.123Z host app pid msgid [sd] msg`), or an ISO-timestamped
//!   line (`2026-12-04T10:00:00Z host app[pid]: msg`, rsyslog's high-precision format). A line
//!   that fits none is kept whole, at the time it was read.
//! - [`parse_journal`] reads one entry of `journalctl -o json`.

use super::{DecodeError, LogLine};

/// A followed log: what is new since the last poll.
pub trait LogSource: Send {
    /// What the operator named (the path), for labels and status.
    fn name(&self) -> &str;
    /// `syslog` or `journald`: the records' source.
    fn kind(&self) -> &'static str;
    /// The lines added since the last poll (at most `max`), read no earlier than `since_ms`
    /// on a first read with no saved position.
    fn poll(&mut self, max: usize, since_ms: u64) -> Result<Vec<LogLine>, LogSourceError>;
    /// Where the next poll starts, to persist (a file's inode and offset, a journal cursor).
    fn position(&self) -> serde_json::Value;
}

/// A log source that cannot be read now (it says why; the agent retries).
#[derive(Debug, thiserror::Error)]
#[error("{source_name}: {message}")]
pub struct LogSourceError {
    pub source_name: String,
    pub message: String,
}

/// OTLP's severity number for a syslog severity (0 emerg .. 7 debug).
pub fn severity_number(syslog: u8) -> i32 {
    match syslog {
        0 | 1 => 21, // emerg, alert: fatal
        2 => 18,     // crit
        3 => 17,     // err
        4 => 13,     // warning
        5 => 10,     // notice
        6 => 9,      // info
        _ => 5,      // debug
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Days from 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn year_of(ms: u64) -> i64 {
    // Good enough to pick the year an RFC 3164 stamp (which has none) belongs to.
    let days = (ms / 86_400_000) as i64;
    let mut y = 1970 + days / 366;
    while days_from_civil(y + 1, 1, 1) <= days {
        y += 1;
    }
    y
}

/// `hh:mm:ss` as seconds of the day.
fn clock(s: &str) -> Option<u64> {
    let mut it = s.split(':');
    let h: u64 = it.next()?.parse().ok()?;
    let m: u64 = it.next()?.parse().ok()?;
    let sec: u64 = it.next()?.parse().ok()?;
    (it.next().is_none() && h < 24 && m < 60 && sec < 61).then_some(h * 3600 + m * 60 + sec)
}

/// An RFC 3339 time (`2026-12-04T10:00:00.123+01:00`, `Z`) as Unix ms.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let (date, rest) = s.split_once('T')?;
    let mut d = date.split('-');
    let y: i64 = d.next()?.parse().ok()?;
    let mo: u32 = d.next()?.parse().ok()?;
    let day: u32 = d.next()?.parse().ok()?;
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&mo) || !(1..=31).contains(&day) {
        return None;
    }
    let tz_at = rest.find(['Z', 'z', '+', '-'])?;
    let (time, tz) = rest.split_at(tz_at);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let secs = clock(hms)?;
    let mut ms = 0u64;
    for (i, c) in frac.chars().take(3).enumerate() {
        ms += u64::from(c.to_digit(10)?) * [100, 10, 1][i];
    }
    let offset_s: i64 = match tz {
        "Z" | "z" => 0,
        _ => {
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            let (h, m) = tz.get(1..)?.split_once(':')?;
            let (h, m) = (h.parse::<i64>().ok()?, m.parse::<i64>().ok()?);
            if !(0..=23).contains(&h) || !(0..=59).contains(&m) {
                return None;
            }
            sign * (h * 3600 + m * 60)
        }
    };
    let t = days_from_civil(y, mo, day) * 86_400 + secs as i64 - offset_s;
    u64::try_from(t).ok().map(|t| t * 1000 + ms)
}

/// `app[pid]:` or `app:` at the start of `s`: (app, pid, the rest).
fn tag(s: &str) -> Option<(&str, Option<&str>, &str)> {
    let end = s.find(": ")?;
    let t = &s[..end];
    if t.is_empty() || t.contains(' ') {
        return None;
    }
    let rest = &s[end + 2..];
    match t.split_once('[') {
        Some((app, pid)) => Some((app, pid.strip_suffix(']'), rest)),
        None => Some((t, None, rest)),
    }
}

fn line(
    time_ms: u64,
    sev: Option<u8>,
    host: &str,
    app: &str,
    pid: Option<&str>,
    msg: &str,
    file: &str,
) -> LogLine {
    let mut attributes = vec![("log.file.path".to_string(), file.to_string())];
    if !host.is_empty() && host != "-" {
        attributes.push(("host.name".into(), host.into()));
    }
    if let Some(p) = pid.filter(|p| !p.is_empty() && *p != "-") {
        attributes.push(("process.pid".into(), p.into()));
    }
    LogLine {
        time_ns: time_ms.saturating_mul(1_000_000),
        severity_number: sev.map(severity_number).unwrap_or(0),
        severity_text: String::new(),
        body: msg.to_string(),
        service: if app == "-" {
            String::new()
        } else {
            app.to_string()
        },
        trace_id: None,
        span_id: None,
        attributes,
    }
}

/// One syslog line of `file`, read at `now_ms` (the year of an RFC 3164 stamp is the one that
/// puts it closest before now).
pub fn parse_syslog(text: &str, file: &str, now_ms: u64) -> LogLine {
    let text = text.trim_end_matches(['\r', '\n']);
    let (pri, rest) = match text.strip_prefix('<').and_then(|r| r.split_once('>')) {
        Some((p, r)) if p.len() <= 3 => match p.parse::<u16>() {
            Ok(v) if v < 192 => (Some(v), r),
            _ => (None, text),
        },
        _ => (None, text),
    };
    let sev = pri.map(|p| (p % 8) as u8);
    // RFC 5424: VERSION TIMESTAMP HOST APP PROCID MSGID SD MSG.
    if let Some(r) = rest.strip_prefix("1 ") {
        let f: Vec<&str> = r.splitn(6, ' ').collect();
        if f.len() == 6
            && let Some(t) = parse_rfc3339(f[0]).or((f[0] == "-").then_some(now_ms))
        {
            let sd_msg = f[5];
            // Structured data: `-` or one or more `[...]` elements.
            let msg = if let Some(m) = sd_msg.strip_prefix("- ") {
                m
            } else if sd_msg == "-" {
                ""
            } else {
                let (mut depth, mut quoted, mut escaped) = (0, false, false);
                let mut end = sd_msg.len();
                for (i, c) in sd_msg.char_indices() {
                    if quoted {
                        match (escaped, c) {
                            (true, _) => escaped = false,
                            (false, '\\') => escaped = true,
                            (false, '"') => quoted = false,
                            _ => {}
                        }
                        continue;
                    }
                    match c {
                        '"' => quoted = true,
                        '[' => depth += 1,
                        ']' => {
                            depth -= 1;
                            if depth == 0 && !sd_msg[i + 1..].starts_with('[') {
                                end = i + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                sd_msg[end..].trim_start()
            };
            let msg = msg.strip_prefix('\u{feff}').unwrap_or(msg);
            return line(t, sev, f[1], f[2], Some(f[3]), msg, file);
        }
    }
    // ISO stamp then `host tag: msg` (rsyslog's RSYSLOG_FileFormat).
    if let Some((stamp, r)) = rest.split_once(' ')
        && let Some(t) = parse_rfc3339(stamp)
        && let Some((host, r)) = r.split_once(' ')
        && let Some((app, pid, msg)) = tag(r)
    {
        return line(t, sev, host, app, pid, msg, file);
    }
    // RFC 3164: `Mmm dd hh:mm:ss host tag: msg` (day padded with a space).
    if rest.len() > 16
        && rest.as_bytes()[..16].is_ascii()
        && let Some(mon) = MONTHS.iter().position(|m| rest.starts_with(m))
        && let Ok(day) = rest[4..6].trim().parse::<u32>()
        && let Some(secs) = clock(&rest[7..15])
        && rest.as_bytes()[15] == b' '
        && let Some((host, r)) = rest[16..].split_once(' ')
        && let Some((app, pid, msg)) = tag(r)
    {
        let this_year = year_of(now_ms);
        let at = |y: i64| {
            (days_from_civil(y, mon as u32 + 1, day) * 86_400 + secs as i64).max(0) as u64 * 1000
        };
        // A December line read in January belongs to last year.
        let mut t = at(this_year);
        if t > now_ms + 86_400_000 {
            t = at(this_year - 1);
        }
        return line(t, sev, host, app, pid, msg, file);
    }
    line(now_ms, sev, "", "", None, rest, file)
}

/// One entry of `journalctl -o json` from the journal `file`.
pub fn parse_journal(v: &serde_json::Value, file: &str) -> Result<LogLine, DecodeError> {
    let field = |k: &str| -> Option<String> {
        match &v[k] {
            serde_json::Value::String(s) => Some(s.clone()),
            // Binary-safe fields come as byte arrays.
            serde_json::Value::Array(a) => Some(
                String::from_utf8_lossy(
                    &a.iter()
                        .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                        .collect::<Vec<u8>>(),
                )
                .into_owned(),
            ),
            _ => None,
        }
    };
    let us: u64 = field("__REALTIME_TIMESTAMP")
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| DecodeError {
            at: "__REALTIME_TIMESTAMP".into(),
            problem: "missing or not a number of microseconds".into(),
        })?;
    let sev = field("PRIORITY").and_then(|p| p.parse::<u8>().ok());
    let app = field("SYSLOG_IDENTIFIER")
        .or_else(|| field("_COMM"))
        .unwrap_or_default();
    let host = field("_HOSTNAME").unwrap_or_default();
    let pid = field("_PID").or_else(|| field("SYSLOG_PID"));
    let msg = field("MESSAGE").unwrap_or_default();
    let mut l = line(us / 1000, sev, &host, &app, pid.as_deref(), &msg, file);
    if let Some(u) = field("_SYSTEMD_UNIT") {
        l.attributes.push(("systemd.unit".into(), u));
    }
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_796_400_000_000; // 2026-12-04T16:00:00Z

    fn attr<'a>(l: &'a LogLine, k: &str) -> Option<&'a str> {
        l.attributes
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn the_three_syslog_shapes_and_a_stray_line() {
        let l = parse_syslog(
            "<11>Dec  4 15:59:58 node-a shop[42]: payment backend unreachable",
            "f",
            NOW,
        );
        assert_eq!(l.time_ns / 1_000_000, NOW - 2000);
        assert_eq!(
            (l.severity(), l.service.as_str(), l.body.as_str()),
            ("error".into(), "shop", "payment backend unreachable")
        );
        assert_eq!(attr(&l, "host.name"), Some("node-a"));
        assert_eq!(attr(&l, "process.pid"), Some("42"));

        let l = parse_syslog("Dec  4 15:59:58 node-a kernel: eth0: link down", "f", NOW);
        assert_eq!(
            (l.severity_number, l.service.as_str(), l.body.as_str()),
            (0, "kernel", "eth0: link down")
        );

        let l = parse_syslog(
            "<165>1 2026-12-04T16:59:59.250+01:00 node-b api 7 ID47 [exampleSDID@32473 iut=\"3\"][x@1 a=\"\\]\"] \u{feff}slow upstream",
            "f",
            NOW,
        );
        assert_eq!(l.time_ns / 1_000_000, NOW - 750);
        assert_eq!(
            (l.severity(), l.service.as_str(), l.body.as_str()),
            ("info".into(), "api", "slow upstream")
        );

        let l = parse_syslog("2026-12-04T15:59:57.5Z node-c db[9]: checkpoint", "f", NOW);
        assert_eq!(l.time_ns / 1_000_000, NOW - 2500);
        assert_eq!(l.service, "db");

        // Multi-byte text where a stamp would be, and absurd stamps: kept whole, no panic.
        for odd in [
            "Junção de rede caiu",
            "Dec  4 15:59:5ç h a: x",
            "<1>1 99999999-01-01T00:00:00+99:00 h a - - - x",
        ] {
            assert_eq!(
                parse_syslog(odd, "f", NOW).time_ns / 1_000_000,
                NOW,
                "{odd}"
            );
        }
        let l = parse_syslog("just some words", "f", NOW);
        assert_eq!(
            (l.time_ns / 1_000_000, l.body.as_str()),
            (NOW, "just some words")
        );
    }

    #[test]
    fn a_december_line_read_in_january_is_last_year() {
        let jan2 = (days_from_civil(2027, 1, 2) * 86_400_000) as u64;
        let l = parse_syslog("Dec 31 23:59:59 h a: x", "f", jan2);
        assert_eq!(
            l.time_ns / 1_000_000,
            (days_from_civil(2027, 1, 1) * 86_400_000) as u64 - 1000
        );
    }

    #[test]
    fn journal_entries_with_text_or_byte_messages() {
        let v = serde_json::json!({"__REALTIME_TIMESTAMP": "1796399999000123", "PRIORITY": "4",
            "SYSLOG_IDENTIFIER": "shop", "_PID": "42", "_HOSTNAME": "node-a",
            "_SYSTEMD_UNIT": "shop.service", "MESSAGE": [104, 105]});
        let l = parse_journal(&v, "j").expect("entry");
        assert_eq!(l.time_ns, 1_796_399_999_000_000_000);
        assert_eq!(
            (l.severity(), l.service.as_str(), l.body.as_str()),
            ("warn".into(), "shop", "hi")
        );
        assert_eq!(attr(&l, "systemd.unit"), Some("shop.service"));
        assert!(parse_journal(&serde_json::json!({"MESSAGE": "x"}), "j").is_err());
    }
}
