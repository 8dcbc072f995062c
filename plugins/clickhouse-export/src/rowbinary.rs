//! ClickHouse's RowBinary input, written from a batch's columns: each insert is its own
//! format clause (` (`a`, `b`) FORMAT RowBinary` and a newline, which ClickHouse appends to
//! the URL's `INSERT INTO ... flows_ingest`), then one row per flow with only the columns some
//! flow of the insert fills (addresses always); the table gives the others their defaults (0,
//! empty). Numbers are
//! UInt64 little-endian, texts and addresses (as text, IPv4 mapped: the ingest table's
//! addresses are `String`, turned into `FixedString(16)` by its view) a LEB128 length and the
//! bytes.

use std::borrow::Cow;

/// One column as RowBinary reads it, kept from the batch's own values (texts once per distinct
/// value, encoded ahead).
pub enum Cells<'a> {
    /// UInt64 values, one per flow.
    Numbers(&'a [u64]),
    /// Each distinct value encoded (length and bytes), and per flow an index into them (the
    /// batch's own, or made here: `Node`, the flow's own or the fallback).
    Texts {
        encoded: Vec<Vec<u8>>,
        index: Cow<'a, [u32]>,
    },
    /// Addresses as 128-bit numbers, written as IPv6 text.
    Addrs(Vec<u128>),
    /// The same encoded text on every row (`Node` from config).
    Same(Vec<u8>),
}

/// A text as RowBinary's `String`: LEB128 length, then the bytes.
pub fn encode_text(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() + 2);
    let mut n = s.len();
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    out.extend_from_slice(s.as_bytes());
    out
}

impl Cells<'_> {
    /// Whether some flow of `rows` has a value other than 0 or empty (addresses: always).
    pub fn filled(&self, rows: std::ops::Range<usize>) -> bool {
        match self {
            Cells::Numbers(v) => v.get(rows).is_some_and(|v| v.iter().any(|&x| x != 0)),
            Cells::Texts { encoded, index } => index.get(rows).is_some_and(|ix| {
                ix.iter()
                    .any(|&k| encoded.get(k as usize).is_some_and(|e| e.len() > 1))
            }),
            // Always sent, `::` too: the table's default for a missing address is '', which
            // current ClickHouse refuses to turn into an address (18.16 took it as `::`).
            Cells::Addrs(v) => !v.is_empty() && v.get(rows).is_some(),
            Cells::Same(e) => e.len() > 1,
        }
    }

    /// Appends row `i`'s value.
    pub fn put(&self, out: &mut Vec<u8>, i: usize) {
        match self {
            Cells::Numbers(v) => {
                out.extend_from_slice(&v.get(i).copied().unwrap_or(0).to_le_bytes())
            }
            Cells::Texts { encoded, index } => {
                match index.get(i).and_then(|&k| encoded.get(k as usize)) {
                    Some(e) => out.extend_from_slice(e),
                    None => out.push(0),
                }
            }
            Cells::Addrs(v) => {
                let a = std::net::Ipv6Addr::from(v.get(i).copied().unwrap_or(0));
                let mut buf = [0u8; 48];
                let n = {
                    use std::io::Write;
                    let mut w = &mut buf[1..];
                    let before = w.len();
                    let _ = write!(w, "{a}");
                    before - w.len()
                };
                buf[0] = n as u8;
                out.extend_from_slice(&buf[..=n]);
            }
            Cells::Same(e) => out.extend_from_slice(e),
        }
    }
}

/// The format clause that starts each insert: the columns written, in order.
pub fn clause(names: &[&str]) -> Vec<u8> {
    let mut s = String::from(" (");
    for (k, n) in names.iter().enumerate() {
        if k > 0 {
            s.push_str(", ");
        }
        s.push('`');
        s.push_str(n);
        s.push('`');
    }
    s.push_str(") FORMAT RowBinary\n");
    s.into_bytes()
}

/// Rows `rows` of the filled columns in payloads of at most `max` bytes (a row longer than
/// that goes alone), each starting with its format clause; `send` is given each payload.
pub fn payloads<E>(
    names: &[&str],
    cols: &[&Cells],
    rows: std::ops::Range<usize>,
    max: usize,
    mut send: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), E> {
    let keep: Vec<usize> = (0..cols.len())
        .filter(|&c| cols[c].filled(rows.clone()))
        .collect();
    let kept: Vec<&str> = keep.iter().filter_map(|&c| names.get(c).copied()).collect();
    let head = clause(&kept);
    let mut buf = Vec::with_capacity(max.min(1 << 22));
    buf.extend_from_slice(&head);
    let mut row = Vec::new();
    for i in rows {
        row.clear();
        for &c in &keep {
            cols[c].put(&mut row, i);
        }
        if buf.len() > head.len() && buf.len() + row.len() > max {
            send(&buf)?;
            buf.truncate(head.len());
        }
        buf.extend_from_slice(&row);
    }
    if buf.len() > head.len() {
        send(&buf)?;
    }
    Ok(())
}

/// The column ClickHouse named in a refusal for a column its table lacks (`No such column X
/// in table ...`, 18.16 and current releases), if that is the refusal.
pub fn unknown_column(error: &str) -> Option<&str> {
    let rest = error.split("No such column ").nth(1)?;
    let name = rest.split(|c: char| c.is_whitespace() || c == ',').next()?;
    let name = name.trim_matches('`');
    (!name.is_empty()).then_some(name)
}

/// Whether the refusal is ClickHouse's JSON reader meeting this insert's column list: the
/// sink's URL still ends in `FORMAT JSONEachRow` (18.16 says `expected { before: (`...`,
/// current releases quote both sides; the URL itself is redacted in errors).
pub fn json_url(error: &str) -> bool {
    error.contains("JSONEachRow")
        || (error.contains("Cannot parse input: expected")
            && error.contains('{')
            && error.contains("(`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads RowBinary back: the numbers and texts of each row, by the clause's columns and
    /// the kinds given.
    fn read(payload: &[u8], numeric: &[bool]) -> (Vec<String>, Vec<Vec<String>>) {
        let nl = payload.iter().position(|&b| b == b'\n').expect("clause");
        let clause = std::str::from_utf8(&payload[..nl]).expect("utf8");
        let inner = clause
            .trim()
            .strip_prefix('(')
            .and_then(|c| c.strip_suffix(") FORMAT RowBinary"))
            .expect("clause form");
        let names: Vec<String> = inner
            .split(", ")
            .map(|n| n.trim_matches('`').to_string())
            .collect();
        let mut rows = Vec::new();
        let mut p = &payload[nl + 1..];
        while !p.is_empty() {
            let mut row = Vec::new();
            for &is_number in numeric.iter().take(names.len()) {
                if is_number {
                    let (v, rest) = p.split_at(8);
                    row.push(u64::from_le_bytes(v.try_into().expect("8")).to_string());
                    p = rest;
                } else {
                    let (mut n, mut shift, mut used) = (0usize, 0, 0);
                    loop {
                        let b = p[used];
                        used += 1;
                        n |= usize::from(b & 0x7f) << shift;
                        shift += 7;
                        if b & 0x80 == 0 {
                            break;
                        }
                    }
                    row.push(String::from_utf8(p[used..used + n].to_vec()).expect("utf8"));
                    p = &p[used + n..];
                }
            }
            rows.push(row);
        }
        (names, rows)
    }

    #[test]
    fn rows_hold_only_filled_columns_and_read_back() {
        let bytes = [10u64, 0, 300];
        let zeros = [0u64; 3];
        let long = "x".repeat(200);
        let cols = [
            Cells::Numbers(&bytes),
            Cells::Numbers(&zeros),
            Cells::Texts {
                encoded: vec![encode_text(""), encode_text("ns"), encode_text(&long)],
                index: Cow::Borrowed(&[1, 0, 2]),
            },
            Cells::Addrs(vec![
                u128::from(std::net::Ipv6Addr::from([
                    0, 0, 0, 0, 0, 0xffff, 0x0a00, 0x0001,
                ])),
                0,
                u128::from("2001:db8::1".parse::<std::net::Ipv6Addr>().expect("ip")),
            ]),
            Cells::Texts {
                encoded: vec![encode_text("")],
                index: Cow::Borrowed(&[0, 0, 0]),
            },
            Cells::Same(encode_text("node-a")),
        ];
        let cols: Vec<&Cells> = cols.iter().collect();
        let names = ["Bytes", "Packets", "Ns", "SrcAddr", "DnsName", "Node"];
        let mut sent = Vec::new();
        payloads::<()>(&names, &cols, 0..3, 1 << 20, |p| {
            sent.push(p.to_vec());
            Ok(())
        })
        .expect("sent");
        assert_eq!(sent.len(), 1);
        let (got, rows) = read(&sent[0], &[true, false, false, false]);
        assert_eq!(got, ["Bytes", "Ns", "SrcAddr", "Node"]);
        assert_eq!(
            rows,
            [
                vec!["10", "ns", "::ffff:10.0.0.1", "node-a"],
                vec!["0", "", "::", "node-a"],
                vec!["300", long.as_str(), "2001:db8::1", "node-a"],
            ]
        );

        // Cut at rows: every payload starts with the clause and holds whole rows.
        let mut cut = Vec::new();
        payloads::<()>(&names, &cols, 0..3, 60, |p| {
            cut.push(p.to_vec());
            Ok(())
        })
        .expect("sent");
        assert_eq!(cut.len(), 3, "{cut:?}");
        let all: Vec<Vec<String>> = cut
            .iter()
            .flat_map(|p| read(p, &[true, false, false, false]).1)
            .collect();
        assert_eq!(all, rows);
        // Only some rows: the filled columns are those rows' own.
        let mut part = Vec::new();
        payloads::<()>(&names, &cols, 1..2, 1 << 20, |p| {
            part.push(p.to_vec());
            Ok(())
        })
        .expect("sent");
        // (Addresses always: a missing one would be '' in the table.)
        assert_eq!(read(&part[0], &[false, false]).0, ["SrcAddr", "Node"]);
    }

    #[test]
    fn lengths_over_127_take_two_bytes() {
        assert_eq!(encode_text("ab"), b"\x02ab");
        let e = encode_text(&"y".repeat(300));
        assert_eq!(&e[..2], &[0xac, 0x02]);
        assert_eq!(e.len(), 302);
    }

    #[test]
    fn a_missing_column_is_named_from_the_refusal() {
        assert_eq!(
            unknown_column(
                "sink clickhouse: POST http://h/?query=...: answered 500: Code: 16, e.displayText() = DB::Exception: No such column Bogus in table flows_ingest, e.what() = DB::Exception"
            ),
            Some("Bogus")
        );
        assert_eq!(
            unknown_column(
                "Code: 16. DB::Exception: No such column `DnsName` in table weir.flows_ingest (abc). (NO_SUCH_COLUMN_IN_TABLE)"
            ),
            Some("DnsName")
        );
        assert_eq!(unknown_column("answered 503"), None);
    }

    #[test]
    fn a_json_url_is_told_from_the_refusal() {
        assert!(json_url(
            "answered 500: Code: 27, e.displayText() = DB::Exception: Cannot parse input: expected { before: (`Node`, `Bytes`: (at row 1)"
        ));
        assert!(json_url(
            "Code: 27. DB::Exception: Cannot parse input: expected '{' before: ' (`Node`, `Bytes`'"
        ));
        assert!(json_url(
            "Code: 27. DB::Exception: Cannot parse input: expected '{' before: '(`Node`, `Bytes`'"
        ));
        assert!(!json_url(
            "Code: 33. DB::Exception: Cannot read all data. Bytes read: 3. Bytes expected: 8."
        ));
    }
}
