//! The summary's sketches and their snapshot: one container of named Apache DataSketches
//! images, so any DataSketches library (Python, Java, C++) reads each sketch as it is.
//!
//! Container (all integers little-endian): `WSK1`, the sketch count (u32), then per sketch its
//! family (u8: 1 frequent items of strings, 2 CPC, 3 KLL of doubles), its name length (u16)
//! and name (UTF-8), its image length (u32) and the image: exactly what `serialize()` of the
//! family gives, which Python's `frequent_strings_sketch`, `cpc_sketch` and
//! `kll_doubles_sketch` `.deserialize()` read.
//!
//! Frequent items are strings (an address as text, `a <-> b`, `tcp/443`, `ns/owner`, a DNS
//! name). Distinct-count items are bytes: an address is its 16 bytes (IPv4 as IPv4-mapped
//! IPv6), a conversation the two addresses (lower first), a port the protocol number and the
//! port (big-endian): a sketch another library updates with the same bytes unions with these.
//!
//! Names: `top/DIMENSION/METRIC` (frequent items), `distinct/WHAT` (CPC),
//! `spread/peers/ADDRESS` and `spread/ports/ADDRESS` (CPC per key), `quantile/METRIC` and
//! `quantile/METRIC/GROUP` (KLL; GROUP is `if=NAME` or `wl=NAMESPACE/OWNER`).

use datasketches::cpc::{CpcSketch, CpcUnion};
use datasketches::frequencies::{ErrorType, FrequentItemsSketch, Row};
use datasketches::hash::value::raw_bytes;
use datasketches::kll::{KllFloat, KllSketch};
use std::collections::BTreeMap;

/// Frequent-items map size: an item's count is off by at most 3.5/1024 of the total weight.
pub const TOP_MAP: usize = 1024;
/// CPC precision of the whole-summary cardinalities (about 1.1 % relative standard error).
pub const CPC_LG_K: u8 = 11;
/// CPC precision per key (peers per source, ports per destination: about 4.6 %).
pub const SPREAD_LG_K: u8 = 8;
/// Most keys each spread map keeps; past it the key with the smallest count is dropped.
pub const SPREAD_KEYS: usize = 256;
/// KLL accuracy parameter (normalized rank error about 1.65 %).
pub const KLL_K: u16 = 200;
/// Most groups (interfaces, workloads) with quantiles of their own.
pub const GROUPS: usize = 32;

pub const DIMENSIONS: [&str; 5] = ["talkers", "conversations", "ports", "workloads", "dns"];
pub const METRICS: [&str; 3] = ["bytes", "packets", "flows"];
pub const DISTINCT: [&str; 4] = ["sources", "destinations", "conversations", "ports"];
pub const QUANTILES: [&str; 4] = ["rtt_us", "dns_latency_us", "flow_bytes", "duration_ms"];
/// Quantiles also kept per group.
pub const GROUPED: [&str; 2] = ["rtt_us", "flow_bytes"];

const MAGIC: &[u8; 4] = b"WSK1";
const FREQUENT: u8 = 1;
const CPC: u8 = 2;
const KLL: u8 = 3;

pub type Kll = KllSketch<KllFloat<f64>>;

/// Every sketch of one summary.
pub struct Summary {
    /// `[dimension][metric]`.
    pub top: Vec<Vec<FrequentItemsSketch<String>>>,
    pub distinct: Vec<CpcSketch>,
    /// Distinct peers per source address, distinct destination ports per destination.
    pub peers: BTreeMap<String, CpcSketch>,
    pub ports: BTreeMap<String, CpcSketch>,
    pub quantiles: Vec<Kll>,
    /// `quantile/METRIC/GROUP` name to sketch, for the grouped metrics.
    pub grouped: BTreeMap<String, Kll>,
    /// The smallest estimate each full spread map kept at its last trim: a new key enters
    /// a full map only with more distinct items in one batch than this.
    pub peers_floor: f64,
    pub ports_floor: f64,
}

/// A snapshot that cannot be read, with the place.
#[derive(Debug)]
pub struct BadSnapshot(pub String);

fn frequent() -> FrequentItemsSketch<String> {
    FrequentItemsSketch::new(TOP_MAP).expect("a power of two map size")
}

pub fn cpc(lg_k: u8) -> CpcSketch {
    CpcSketch::new(lg_k).expect("lg_k within 4..=26")
}

pub fn kll() -> Kll {
    KllSketch::new(KLL_K).expect("k within 8..=65535")
}

/// Adds `value` to `sketch` (NaN is never given: the values are counts).
pub fn add(sketch: &mut Kll, value: f64) {
    if let Ok(v) = KllFloat::<f64>::new(value) {
        sketch.update(v);
    }
}

/// Adds an item (its raw bytes, hashed as every DataSketches library hashes a byte array).
pub fn add_distinct(sketch: &mut CpcSketch, item: &[u8]) {
    sketch.update(raw_bytes::from_slice(item));
}

impl Summary {
    pub fn new() -> Summary {
        Summary {
            top: DIMENSIONS
                .iter()
                .map(|_| METRICS.iter().map(|_| frequent()).collect())
                .collect(),
            distinct: DISTINCT.iter().map(|_| cpc(CPC_LG_K)).collect(),
            peers: BTreeMap::new(),
            ports: BTreeMap::new(),
            quantiles: QUANTILES.iter().map(|_| kll()).collect(),
            grouped: BTreeMap::new(),
            peers_floor: 0.0,
            ports_floor: 0.0,
        }
    }

    /// The serialized container (see the module doc).
    pub fn snapshot(&self) -> Vec<u8> {
        let mut entries: Vec<(u8, String, Vec<u8>)> = Vec::new();
        for (d, dim) in DIMENSIONS.iter().enumerate() {
            for (m, metric) in METRICS.iter().enumerate() {
                let s = &self.top[d][m];
                if !s.is_empty() {
                    entries.push((FREQUENT, format!("top/{dim}/{metric}"), s.serialize()));
                }
            }
        }
        for (i, what) in DISTINCT.iter().enumerate() {
            if !self.distinct[i].is_empty() {
                entries.push((
                    CPC,
                    format!("distinct/{what}"),
                    self.distinct[i].serialize(),
                ));
            }
        }
        for (kind, map) in [("peers", &self.peers), ("ports", &self.ports)] {
            for (key, s) in map {
                entries.push((CPC, format!("spread/{kind}/{key}"), s.serialize()));
            }
        }
        for (i, metric) in QUANTILES.iter().enumerate() {
            if !self.quantiles[i].is_empty() {
                entries.push((
                    KLL,
                    format!("quantile/{metric}"),
                    self.quantiles[i].serialize(),
                ));
            }
        }
        for (name, s) in &self.grouped {
            entries.push((KLL, name.clone(), s.serialize()));
        }
        let mut out = Vec::with_capacity(
            8 + entries
                .iter()
                .map(|(_, n, b)| 7 + n.len() + b.len())
                .sum::<usize>(),
        );
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        for (family, name, bytes) in entries {
            out.push(family);
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(&bytes);
        }
        out
    }

    /// Merges a snapshot in. Every sketch is read before any is merged, so a snapshot that
    /// fails half-way changes nothing.
    pub fn merge(&mut self, bytes: &[u8]) -> Result<(), BadSnapshot> {
        let parts = parse(bytes)?;
        enum Read {
            Top(usize, usize, FrequentItemsSketch<String>),
            Distinct(usize, CpcSketch),
            Spread(bool, String, CpcSketch),
            Quantile(usize, Kll),
            Grouped(String, Kll),
        }
        let mut read = Vec::with_capacity(parts.len());
        for (i, (family, name, image)) in parts.into_iter().enumerate() {
            let at = |e: &dyn std::fmt::Display| {
                BadSnapshot(format!("sketch {} ('{name}'): {e}", i + 1))
            };
            let mut path = name.splitn(3, '/');
            let (a, b, c) = (path.next(), path.next(), path.next());
            let r = match (family, a, b, c) {
                (FREQUENT, Some("top"), Some(dim), Some(metric)) => {
                    let d = pos(&DIMENSIONS, dim).ok_or_else(|| at(&"unknown dimension"))?;
                    let m = pos(&METRICS, metric).ok_or_else(|| at(&"unknown metric"))?;
                    let s =
                        FrequentItemsSketch::<String>::deserialize(image).map_err(|e| at(&e))?;
                    Read::Top(d, m, s)
                }
                (CPC, Some("distinct"), Some(what), None) => {
                    let i = pos(&DISTINCT, what).ok_or_else(|| at(&"unknown cardinality"))?;
                    Read::Distinct(i, CpcSketch::deserialize(image).map_err(|e| at(&e))?)
                }
                (CPC, Some("spread"), Some(kind @ ("peers" | "ports")), Some(key)) => Read::Spread(
                    kind == "peers",
                    key.to_string(),
                    CpcSketch::deserialize(image).map_err(|e| at(&e))?,
                ),
                (KLL, Some("quantile"), Some(metric), group) => {
                    let q =
                        pos(&QUANTILES, metric).ok_or_else(|| at(&"unknown quantile metric"))?;
                    let s = Kll::deserialize(image).map_err(|e| at(&e))?;
                    match group {
                        None => Read::Quantile(q, s),
                        Some(_) => Read::Grouped(name.to_string(), s),
                    }
                }
                _ => {
                    return Err(at(
                        &"not a sketch of this summary (family and name disagree)",
                    ));
                }
            };
            read.push(r);
        }
        for r in read {
            match r {
                // Into an empty sketch the other is taken whole (the same answers after a
                // restore); otherwise merged.
                Read::Top(d, m, s) if self.top[d][m].is_empty() => self.top[d][m] = s,
                Read::Top(d, m, s) => self.top[d][m].merge(&s),
                Read::Distinct(i, s) => union_into(&mut self.distinct[i], &s, CPC_LG_K),
                Read::Spread(peers, key, s) => {
                    let map = if peers {
                        &mut self.peers
                    } else {
                        &mut self.ports
                    };
                    match map.get_mut(&key) {
                        Some(mine) => union_into(mine, &s, SPREAD_LG_K),
                        None => {
                            map.insert(key, s);
                            bound(map);
                        }
                    }
                }
                Read::Quantile(q, s) if self.quantiles[q].is_empty() => self.quantiles[q] = s,
                Read::Quantile(q, s) => {
                    // Same k on both sides (checked by the library): cannot fail here.
                    let _ = self.quantiles[q].merge(&s);
                }
                Read::Grouped(name, s) => {
                    let room = self.grouped.len() < GROUPS * GROUPED.len() * 2;
                    match self.grouped.get_mut(&name) {
                        Some(mine) => {
                            let _ = mine.merge(&s);
                        }
                        None if room => {
                            self.grouped.insert(name, s);
                        }
                        None => {}
                    }
                }
            }
        }
        Ok(())
    }
}

fn pos(list: &[&str], x: &str) -> Option<usize> {
    list.iter().position(|y| *y == x)
}

/// `mine` becomes the union of `mine` and `other`.
pub fn union_into(mine: &mut CpcSketch, other: &CpcSketch, lg_k: u8) {
    // Into an empty sketch the other is taken whole: a union's result keeps no HIP estimate,
    // so restoring a single window this way answers exactly as the stored sketch does.
    if mine.is_empty() {
        *mine = other.clone();
        return;
    }
    let Ok(mut u) = CpcUnion::new(lg_k) else {
        return;
    };
    if u.update(mine).is_ok() && u.update(other).is_ok() {
        *mine = u.to_sketch();
    }
}

/// A frequent-items sketch's rows that have no false negatives, largest estimate first and
/// equal estimates in item order (the sketch's own order among ties follows its hash table,
/// so a 10th row could otherwise differ between two readers of one snapshot).
pub fn ranked(sk: &FrequentItemsSketch<String>) -> Vec<Row<String>> {
    let mut items = sk.frequent_items_with_threshold(ErrorType::NoFalseNegatives, 0);
    items.sort_by(|a, b| {
        b.estimate()
            .cmp(&a.estimate())
            .then_with(|| a.item().cmp(b.item()))
    });
    items
}

/// Adds one batch's distinct items per key to a spread map: keys already kept take theirs;
/// a new key enters while the map has room, or with more items than `floor` (the smallest
/// estimate kept at the last trim). Returns the new floor.
pub fn spread<T: AsRef<[u8]>>(
    map: &mut BTreeMap<String, CpcSketch>,
    floor: f64,
    groups: Vec<(String, Vec<T>)>,
) -> f64 {
    for (key, items) in groups {
        let room = map.len() < SPREAD_KEYS || items.len() as f64 > floor;
        if !room && !map.contains_key(&key) {
            continue;
        }
        let sk = map.entry(key).or_insert_with(|| cpc(SPREAD_LG_K));
        for it in &items {
            add_distinct(sk, it.as_ref());
        }
    }
    bound(map).unwrap_or(floor)
}

/// Keeps a spread map within [`SPREAD_KEYS`]: the keys with the largest estimates stay.
/// Returns the smallest estimate kept when it trimmed.
pub fn bound(map: &mut BTreeMap<String, CpcSketch>) -> Option<f64> {
    if map.len() <= SPREAD_KEYS {
        return None;
    }
    let mut est: Vec<(f64, String)> = map.iter().map(|(k, c)| (c.estimate(), k.clone())).collect();
    est.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    for (_, k) in est.drain(SPREAD_KEYS..) {
        map.remove(&k);
    }
    est.last().map(|e| e.0)
}

/// One entry of the container: family, name, image.
pub type Part<'a> = (u8, &'a str, &'a [u8]);

pub fn parse(bytes: &[u8]) -> Result<Vec<Part<'_>>, BadSnapshot> {
    let bad = |at: usize, what: &str| BadSnapshot(format!("byte {at}: {what}"));
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Err(bad(
            0,
            "not an edge-summary snapshot (it starts with WSK1: a snapshot of this plugin's, from GET /api/v1/plugins/NAME/snapshot)",
        ));
    }
    let count = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
    let mut at = 8;
    let mut out = Vec::with_capacity(count.min(4096));
    for i in 0..count {
        let head = bytes.get(at..at + 3).ok_or_else(|| {
            bad(
                at,
                &format!("truncated: sketch {} of {count} missing", i + 1),
            )
        })?;
        let family = head[0];
        let name_len = u16::from_le_bytes([head[1], head[2]]) as usize;
        let name = bytes
            .get(at + 3..at + 3 + name_len)
            .and_then(|n| std::str::from_utf8(n).ok())
            .ok_or_else(|| bad(at + 3, "sketch name truncated or not UTF-8"))?;
        at += 3 + name_len;
        let len = bytes
            .get(at..at + 4)
            .map(|l| u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize)
            .ok_or_else(|| bad(at, &format!("sketch '{name}': length truncated")))?;
        let image = bytes.get(at + 4..at + 4 + len).ok_or_else(|| {
            bad(
                at + 4,
                &format!("sketch '{name}': {len} bytes announced, fewer there"),
            )
        })?;
        at += 4 + len;
        out.push((family, name, image));
    }
    if at != bytes.len() {
        return Err(bad(at, "bytes after the last sketch"));
    }
    Ok(out)
}
