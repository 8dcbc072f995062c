//! Parsing durations and sizes given on the command line.

/// `5s`, `500ms`, `1h`, `7d`.
pub fn duration(s: &str) -> Result<std::time::Duration, String> {
    weir_core::query::parse_duration_ms(s)
        .map(std::time::Duration::from_millis)
        .ok_or_else(|| format!("'{s}' is not a duration (use e.g. 500ms, 5s, 1m, 1h, 7d)"))
}

/// `10GiB`, `500MB`, `1048576`, `0` (no limit).
pub fn size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size (use e.g. 500MiB, 10GiB, 0 for no limit)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        other => return Err(format!("unknown size unit '{other}' in '{s}'")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size '{s}' is too large"))
}

/// Human form of a byte count (`1.5 MiB`).
pub use weir_core::query::human_bytes;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(size("10GiB"), Ok(10 << 30));
        assert_eq!(size("0"), Ok(0));
        assert!(size("10 parsecs").is_err());
        assert_eq!(duration("5s"), Ok(std::time::Duration::from_secs(5)));
        assert!(duration("5").is_err());
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
