//! The body of a version 5 record block: the block's flows stored column by column, each
//! column named after its field in [`FIELDS`] and packed the cheapest of a few ways.
//!
//! ```text
//! varint  flows in the block (n)
//! numbers the n sequence numbers
//! varint  columns that follow
//! per column: varint name length, name, kind (0 number, 1 address, 2 text), values
//! ```
//! - A column whose every value is the empty flow's ([`Flow::empty`]) is not written: most
//!   flows carry no drops, DNS or Kubernetes names.
//! - Numbers are packed at the fewest bits per value of three encodings, chosen per column:
//!   offsets from the column's minimum, differences from the previous value (times, sequence
//!   numbers), or indexes into the column's sorted distinct values (ports, protocols).
//! - Addresses: all-IPv4 columns as 32-bit numbers, others as three number columns (family,
//!   high and low 64 bits).
//! - Text: the column's distinct strings once, then an index per flow.
//!
//! Columns go by name, so a field added to [`FIELDS`] needs nothing here: blocks written
//! before it lack its column and read back as the empty value, and a column this build does
//! not know (a newer build wrote it) is read past. A renamed field would lose its history:
//! keep the old name as the field's name, or read the old column here.

use super::StoreError;
use crate::flow::Flow;
use crate::schema::{FIELDS, FieldDef, Reader, Writer};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The most flows one block may say it holds (a corrupted count must not allocate much).
pub const MAX_FLOWS: usize = 4096;

const NUMBER: u8 = 0;
const ADDR: u8 = 1;
const TEXT: u8 = 2;

/// Offsets from the minimum.
const FRAME: u8 = 0;
/// The first value, then differences (zigzag) as offsets from their minimum.
const DELTA: u8 = 1;
/// Sorted distinct values, then an index per value.
const DICT: u8 = 2;

/// All addresses IPv4: one number column of 32-bit values.
const ADDR_V4: u8 = 0;
/// Mixed or IPv6: family (4 or 6), high and low 64 bits as three number columns.
const ADDR_ANY: u8 = 1;

fn bad(m: impl Into<String>) -> StoreError {
    StoreError::Codec(format!("record block: {}", m.into()))
}

/// Encodes `(seq, flow)` pairs (seq ascending) as a column body.
pub fn encode(items: &[(u64, &Flow)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + items.len() * 24);
    put_varint(&mut out, items.len() as u64);
    let seqs: Vec<u64> = items.iter().map(|(s, _)| *s).collect();
    put_numbers(&mut out, &seqs);
    let empty = Flow::empty();
    let mut columns = Vec::new();
    let mut count = 0u64;
    for def in FIELDS {
        if put_column(&mut columns, def, items, &empty) {
            count += 1;
        }
    }
    put_varint(&mut out, count);
    out.extend_from_slice(&columns);
    out
}

/// Writes one field's column unless every value is the empty flow's; true when written.
fn put_column(out: &mut Vec<u8>, def: &FieldDef, items: &[(u64, &Flow)], empty: &Flow) -> bool {
    let head = |out: &mut Vec<u8>, kind: u8| {
        put_varint(out, def.name.len() as u64);
        out.extend_from_slice(def.name.as_bytes());
        out.push(kind);
    };
    match def.read {
        Reader::Number(get) => {
            let nothing = get(empty);
            if items.iter().all(|(_, f)| get(f) == nothing) {
                return false;
            }
            head(out, NUMBER);
            let v: Vec<u64> = items.iter().map(|(_, f)| get(f)).collect();
            put_numbers(out, &v);
        }
        Reader::Addr(get) => {
            let nothing = get(empty);
            if items.iter().all(|(_, f)| get(f) == nothing) {
                return false;
            }
            head(out, ADDR);
            let v4: Option<Vec<u64>> = items
                .iter()
                .map(|(_, f)| match get(f) {
                    IpAddr::V4(a) => Some(u64::from(u32::from(a))),
                    IpAddr::V6(_) => None,
                })
                .collect();
            match v4 {
                Some(v) => {
                    out.push(ADDR_V4);
                    put_numbers(out, &v);
                }
                None => {
                    out.push(ADDR_ANY);
                    let wide: Vec<(u64, u128)> = items
                        .iter()
                        .map(|(_, f)| match get(f) {
                            IpAddr::V4(a) => (4, u128::from(u32::from(a))),
                            IpAddr::V6(a) => (6, u128::from(a)),
                        })
                        .collect();
                    let family: Vec<u64> = wide.iter().map(|w| w.0).collect();
                    let high: Vec<u64> = wide.iter().map(|w| (w.1 >> 64) as u64).collect();
                    let low: Vec<u64> = wide.iter().map(|w| w.1 as u64).collect();
                    put_numbers(out, &family);
                    put_numbers(out, &high);
                    put_numbers(out, &low);
                }
            }
        }
        Reader::Text(get) => {
            if items.iter().all(|(_, f)| get(f).is_empty()) {
                return false;
            }
            head(out, TEXT);
            let mut dict: Vec<&str> = Vec::new();
            let mut index: Vec<u64> = Vec::with_capacity(items.len());
            let mut seen: std::collections::HashMap<&str, u64> = Default::default();
            for (_, f) in items {
                let s = get(f);
                let i = *seen.entry(s).or_insert_with(|| {
                    dict.push(s);
                    (dict.len() - 1) as u64
                });
                index.push(i);
            }
            put_varint(out, dict.len() as u64);
            for s in &dict {
                put_varint(out, s.len() as u64);
                out.extend_from_slice(s.as_bytes());
            }
            put_packed(out, &index, 0, bits(dict.len().saturating_sub(1) as u64));
        }
    }
    true
}

/// Decodes a column body into `(seq, flow)` pairs, building at most `max_text` bytes of text.
pub fn decode(body: &[u8], max_text: usize) -> Result<Vec<(u64, Flow)>, StoreError> {
    decode_where(body, &mut |_| true, max_text)
}

/// Decodes the flows whose sequence number `keep` accepts (it is offered every one, in
/// order). Columns are read whole but only kept rows are built: fetching a few records from
/// a block costs little more than finding them. A text column stores each distinct string
/// once, so a small corrupted body could ask for gigabytes of copies: at most `max_text`
/// bytes of text are built.
pub fn decode_where(
    body: &[u8],
    keep: &mut dyn FnMut(u64) -> bool,
    max_text: usize,
) -> Result<Vec<(u64, Flow)>, StoreError> {
    let mut text_left = max_text;
    let mut r = Bytes { rest: body };
    let n = r.varint()?;
    if n > MAX_FLOWS as u64 {
        return Err(bad(format!(
            "says it holds {n} flows (at most {MAX_FLOWS})"
        )));
    }
    let n = n as usize;
    let seqs = r.numbers(n)?;
    let rows: Vec<usize> = (0..n).filter(|&i| keep(seqs[i])).collect();
    let mut flows = vec![Flow::empty(); rows.len()];
    let columns = r.varint()?;
    for _ in 0..columns {
        let len = r.varint()?;
        let name = r.take(len)?;
        let name = std::str::from_utf8(name).map_err(|_| bad("a column name is not UTF-8"))?;
        let def = FIELDS.iter().find(|d| d.name == name);
        let kind = r.byte()?;
        match kind {
            NUMBER => {
                let v = r.numbers(n)?;
                if let Some(Writer::Number(set)) = def.map(|d| d.write) {
                    for (f, &row) in flows.iter_mut().zip(&rows) {
                        if !set(f, v[row]) {
                            return Err(bad(format!("{name}: {} does not fit the field", v[row])));
                        }
                    }
                }
            }
            ADDR => {
                let v = r.addrs(n)?;
                if let Some(Writer::Addr(set)) = def.map(|d| d.write) {
                    for (f, &row) in flows.iter_mut().zip(&rows) {
                        set(f, v[row]);
                    }
                }
            }
            TEXT => {
                let (dict, index) = r.texts(n)?;
                if let Some(Writer::Text(set)) = def.map(|d| d.write) {
                    for (f, &row) in flows.iter_mut().zip(&rows) {
                        // Indexes were checked against the dictionary as they were read.
                        let text = dict.get(index[row]).copied().unwrap_or_default();
                        text_left = text_left.checked_sub(text.len()).ok_or_else(|| {
                            bad(format!("its text would take more than {max_text} bytes"))
                        })?;
                        set(f, text.to_owned());
                    }
                }
            }
            k => return Err(bad(format!("column {name} has unknown kind {k}"))),
        }
    }
    if !r.rest.is_empty() {
        return Err(bad(format!("{} bytes after the last column", r.rest.len())));
    }
    Ok(rows.into_iter().map(|i| seqs[i]).zip(flows).collect())
}

/// Bits needed to write `x` (0 for 0).
fn bits(x: u64) -> u32 {
    64 - x.leading_zeros()
}

fn varint_len(x: u64) -> u64 {
    u64::from(bits(x).max(1).div_ceil(7))
}

fn put_varint(out: &mut Vec<u8>, mut x: u64) {
    while x >= 0x80 {
        out.push((x as u8) | 0x80);
        x >>= 7;
    }
    out.push(x as u8);
}

fn zigzag(d: u64) -> u64 {
    let d = d as i64;
    ((d << 1) ^ (d >> 63)) as u64
}

fn unzigzag(z: u64) -> u64 {
    (z >> 1) ^ (z & 1).wrapping_neg()
}

/// Writes `values - base`, `width` bits each, little-endian bit order.
fn put_packed(out: &mut Vec<u8>, values: &[u64], base: u64, width: u32) {
    if width == 0 {
        return;
    }
    let mut acc: u128 = 0;
    let mut have = 0u32;
    for v in values {
        acc |= u128::from(v.wrapping_sub(base)) << have;
        have += width;
        while have >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            have -= 8;
        }
    }
    if have > 0 {
        out.push(acc as u8);
    }
}

/// Writes a number column in its cheapest encoding.
fn put_numbers(out: &mut Vec<u8>, v: &[u64]) {
    let n = v.len() as u64;
    let (Some(&min), Some(&max)) = (v.iter().min(), v.iter().max()) else {
        return;
    };
    let frame_w = bits(max - min);
    let frame = 8 * (varint_len(min) + 1) + n * u64::from(frame_w);

    let deltas: Vec<u64> = v
        .windows(2)
        .map(|w| zigzag(w[1].wrapping_sub(w[0])))
        .collect();
    let (dmin, dmax) = (
        deltas.iter().copied().min().unwrap_or(0),
        deltas.iter().copied().max().unwrap_or(0),
    );
    let delta_w = bits(dmax - dmin);
    let delta = 8 * (varint_len(v[0]) + varint_len(dmin) + 1) + (n - 1) * u64::from(delta_w);

    let mut distinct = v.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    let k = distinct.len() as u64;
    let dict_w = bits(k - 1);
    let dict = 8
        * (varint_len(k)
            + distinct
                .iter()
                .scan(0u64, |prev, &d| {
                    let l = varint_len(d - *prev);
                    *prev = d;
                    Some(l)
                })
                .sum::<u64>())
        + n * u64::from(dict_w);

    if dict < frame && dict < delta {
        out.push(DICT);
        put_varint(out, k);
        let mut prev = 0;
        for &d in &distinct {
            put_varint(out, d - prev);
            prev = d;
        }
        let index: Vec<u64> = v
            .iter()
            .map(|x| distinct.partition_point(|d| d < x) as u64)
            .collect();
        put_packed(out, &index, 0, dict_w);
    } else if delta < frame {
        out.push(DELTA);
        put_varint(out, v[0]);
        put_varint(out, dmin);
        out.push(delta_w as u8);
        put_packed(out, &deltas, dmin, delta_w);
    } else {
        out.push(FRAME);
        put_varint(out, min);
        out.push(frame_w as u8);
        put_packed(out, v, min, frame_w);
    }
}

/// A reader over a column body; every read checks what is left.
struct Bytes<'a> {
    rest: &'a [u8],
}

impl<'a> Bytes<'a> {
    fn take(&mut self, len: u64) -> Result<&'a [u8], StoreError> {
        let len = usize::try_from(len).map_err(|_| bad("a length beyond memory"))?;
        if len > self.rest.len() {
            return Err(bad(format!(
                "wants {len} bytes where {} are left (truncated?)",
                self.rest.len()
            )));
        }
        let (head, tail) = self.rest.split_at(len);
        self.rest = tail;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }

    fn varint(&mut self) -> Result<u64, StoreError> {
        let mut x = 0u64;
        for i in 0..10 {
            let b = self.byte()?;
            let part = u64::from(b & 0x7f);
            if i == 9 && part > 1 {
                return Err(bad("a number longer than 64 bits"));
            }
            x |= part << (7 * i);
            if b & 0x80 == 0 {
                return Ok(x);
            }
        }
        Err(bad("a number longer than 64 bits"))
    }

    fn width(&mut self) -> Result<u32, StoreError> {
        match self.byte()? {
            w @ 0..=64 => Ok(u32::from(w)),
            w => Err(bad(format!("{w} bits per value (at most 64)"))),
        }
    }

    /// `n` values of `width` bits, each plus `base`.
    fn packed(&mut self, n: usize, base: u64, width: u32) -> Result<Vec<u64>, StoreError> {
        if width == 0 {
            return Ok(vec![base; n]);
        }
        let bytes = (n as u64 * u64::from(width)).div_ceil(8);
        let data = self.take(bytes)?;
        let mask = if width == 64 {
            u64::MAX
        } else {
            (1u64 << width) - 1
        };
        let mut out = Vec::with_capacity(n);
        let mut acc: u128 = 0;
        let mut have = 0u32;
        let mut next = data.iter();
        for _ in 0..n {
            while have < width {
                let b = next.next().copied().unwrap_or(0);
                acc |= u128::from(b) << have;
                have += 8;
            }
            out.push(base.wrapping_add(acc as u64 & mask));
            acc >>= width;
            have -= width;
        }
        Ok(out)
    }

    fn numbers(&mut self, n: usize) -> Result<Vec<u64>, StoreError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        match self.byte()? {
            FRAME => {
                let min = self.varint()?;
                let w = self.width()?;
                self.packed(n, min, w)
            }
            DELTA => {
                let first = self.varint()?;
                let dmin = self.varint()?;
                let w = self.width()?;
                let deltas = self.packed(n - 1, dmin, w)?;
                let mut out = Vec::with_capacity(n);
                out.push(first);
                let mut prev = first;
                for z in deltas {
                    prev = prev.wrapping_add(unzigzag(z));
                    out.push(prev);
                }
                Ok(out)
            }
            DICT => {
                let k = self.varint()?;
                if k == 0 || k > n as u64 {
                    return Err(bad(format!("{k} distinct values for {n} flows")));
                }
                let mut distinct = Vec::with_capacity(k as usize);
                let mut prev = 0u64;
                for _ in 0..k {
                    prev = prev.wrapping_add(self.varint()?);
                    distinct.push(prev);
                }
                let index = self.packed(n, 0, bits(k - 1))?;
                index
                    .into_iter()
                    .map(|i| {
                        distinct
                            .get(i as usize)
                            .copied()
                            .ok_or_else(|| bad(format!("index {i} past {k} distinct values")))
                    })
                    .collect()
            }
            e => Err(bad(format!("unknown number encoding {e}"))),
        }
    }

    fn addrs(&mut self, n: usize) -> Result<Vec<IpAddr>, StoreError> {
        match self.byte()? {
            ADDR_V4 => self
                .numbers(n)?
                .into_iter()
                .map(|x| {
                    u32::try_from(x)
                        .map(|a| IpAddr::V4(Ipv4Addr::from(a)))
                        .map_err(|_| bad(format!("{x} is not an IPv4 address")))
                })
                .collect(),
            ADDR_ANY => {
                let family = self.numbers(n)?;
                let high = self.numbers(n)?;
                let low = self.numbers(n)?;
                family
                    .into_iter()
                    .zip(high.into_iter().zip(low))
                    .map(|(f, (h, l))| {
                        let wide = (u128::from(h) << 64) | u128::from(l);
                        match f {
                            4 => u32::try_from(wide)
                                .map(|a| IpAddr::V4(Ipv4Addr::from(a)))
                                .map_err(|_| bad(format!("{wide} is not an IPv4 address"))),
                            6 => Ok(IpAddr::V6(Ipv6Addr::from(wide))),
                            f => Err(bad(format!("address family {f}"))),
                        }
                    })
                    .collect()
            }
            e => Err(bad(format!("unknown address encoding {e}"))),
        }
    }

    /// The column's distinct strings and each flow's index into them (checked).
    fn texts(&mut self, n: usize) -> Result<(Vec<&'a str>, Vec<usize>), StoreError> {
        let k = self.varint()?;
        if k > n as u64 || (k == 0 && n > 0) {
            return Err(bad(format!("{k} distinct strings for {n} flows")));
        }
        let mut dict = Vec::with_capacity(k as usize);
        for _ in 0..k {
            let len = self.varint()?;
            let s = std::str::from_utf8(self.take(len)?).map_err(|_| bad("a string not UTF-8"))?;
            dict.push(s);
        }
        let index = self.packed(n, 0, bits(k.saturating_sub(1)))?;
        let index = index
            .into_iter()
            .map(|i| {
                if i < k {
                    Ok(i as usize)
                } else {
                    Err(bad(format!("index {i} past {k} distinct strings")))
                }
            })
            .collect::<Result<Vec<usize>, StoreError>>()?;
        Ok((dict, index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body by hand: two flows, seqs 5 and 6, then the given columns.
    fn body(columns: &[(&str, u8, &[u8])]) -> Vec<u8> {
        let mut b = Vec::new();
        put_varint(&mut b, 2);
        put_numbers(&mut b, &[5, 6]);
        put_varint(&mut b, columns.len() as u64);
        for (name, kind, values) in columns {
            put_varint(&mut b, name.len() as u64);
            b.extend_from_slice(name.as_bytes());
            b.push(*kind);
            b.extend_from_slice(values);
        }
        b
    }

    fn numbers(v: &[u64]) -> Vec<u8> {
        let mut b = Vec::new();
        put_numbers(&mut b, v);
        b
    }

    #[test]
    fn a_column_this_build_does_not_know_is_read_past() {
        let ports = numbers(&[443, 53]);
        let b = body(&[
            ("FromANewerBuild", NUMBER, &numbers(&[1, u64::MAX])),
            ("DstPort", NUMBER, &ports),
        ]);
        let got = decode(&b, 1 << 20).unwrap();
        assert_eq!(
            got.iter()
                .map(|(s, f)| (*s, f.dst_port))
                .collect::<Vec<_>>(),
            [(5, 443), (6, 53)]
        );
        // The same columns without the unknown one give the same flows.
        assert_eq!(
            decode(&body(&[("DstPort", NUMBER, &ports)]), 1 << 20).unwrap(),
            got
        );
    }

    #[test]
    fn bad_bodies_are_refused_by_what_is_wrong() {
        let err = |b: &[u8]| decode(b, 1 << 20).unwrap_err().to_string();
        // A value wider than its field (DstPort is 16 bits).
        let wide = body(&[("DstPort", NUMBER, &numbers(&[70_000, 1]))]);
        assert!(
            err(&wide).contains("DstPort: 70000 does not fit"),
            "{}",
            err(&wide)
        );
        let mut more = Vec::new();
        put_varint(&mut more, MAX_FLOWS as u64 + 1);
        assert!(err(&more).contains("says it holds 4097 flows"));
        let truncated = body(&[("DstPort", NUMBER, &numbers(&[80, 443]))]);
        assert!(err(&truncated[..truncated.len() - 1]).contains("truncated"));
        let mut trailing = truncated.clone();
        trailing.push(0);
        assert!(err(&trailing).contains("1 bytes after the last column"));
        assert!(err(&body(&[("DstPort", 9, &[])])).contains("unknown kind 9"));
        assert!(err(&body(&[("DstPort", NUMBER, &[FRAME, 0, 65])])).contains("65 bits per value"));
        // A dictionary of more values than flows.
        let dict = [DICT, 3, 1, 1, 1, 0b1111];
        assert!(err(&body(&[("DstPort", NUMBER, &dict)])).contains("3 distinct values for 2"));
        assert!(err(&body(&[("Interface", TEXT, &[1, 1, 0xff])])).contains("not UTF-8"));
        assert!(
            err(&body(&[(
                "SrcAddr",
                ADDR,
                &[ADDR_V4, FRAME, 0, 33, 0, 0, 0, 0, 1, 0, 0, 0, 0]
            )]))
            .contains("is not an IPv4 address")
        );
    }

    #[test]
    fn text_stored_once_is_not_built_past_the_limit() {
        // Three flows share one 100-byte string: 300 bytes to build from ~110 stored.
        let mut text = vec![1u8, 100];
        text.extend_from_slice(&[b'a'; 100]);
        let mut b = Vec::new();
        put_varint(&mut b, 3);
        put_numbers(&mut b, &[1, 2, 3]);
        put_varint(&mut b, 1);
        put_varint(&mut b, 9);
        b.extend_from_slice(b"Interface");
        b.push(TEXT);
        b.extend_from_slice(&text);
        let e = decode(&b, 250).unwrap_err().to_string();
        assert!(e.contains("more than 250 bytes"), "{e}");
        let got = decode(&b, 300).unwrap();
        assert!(got.iter().all(|(_, f)| f.interface.len() == 100));
        // Flows not kept build nothing.
        assert_eq!(decode_where(&b, &mut |s| s == 2, 100).unwrap().len(), 1);
    }

    #[test]
    fn each_number_encoding_is_chosen_where_it_is_smallest() {
        let encoding = |v: &[u64]| numbers(v)[0];
        // Close values: offsets from the minimum.
        assert_eq!(
            encoding(&[1_000_000, 1_000_007, 1_000_003, 1_000_001]),
            FRAME
        );
        // Far apart but steady: differences.
        let times: Vec<u64> = (0..64).map(|i| 1_800_000_000_000 + i * 37).collect();
        assert_eq!(encoding(&times), DELTA);
        // Few distinct, far apart: a dictionary.
        let ports: Vec<u64> = (0..64).map(|i| [80, 443, 9090][i % 3]).collect();
        assert_eq!(encoding(&ports), DICT);
        for v in [&times, &ports, &vec![u64::MAX, 0, 1, u64::MAX - 1]] {
            let b = numbers(v);
            assert_eq!(&Bytes { rest: &b }.numbers(v.len()).unwrap(), v);
        }
    }
}
