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
//! name). Inside the plugin, talkers, conversations and ports are kept as integers ([`Addr`],
//! [`Conv`], [`Port`]) that are written as exactly those strings and read back from them: the
//! image is a frequent-strings image, and no string is made or compared per update.
//! Distinct-count items are bytes: an address is its 16 bytes (IPv4 as IPv4-mapped IPv6), a
//! conversation the two addresses (lower first), a port the protocol number and the port
//! (big-endian): a sketch another library updates with the same bytes unions with these.
//!
//! Names: `top/DIMENSION/METRIC` (frequent items), `distinct/WHAT` (CPC),
//! `spread/peers/ADDRESS` and `spread/ports/ADDRESS` (CPC per key), `quantile/METRIC` and
//! `quantile/METRIC/GROUP` (KLL; GROUP is `if=NAME` or `wl=NAMESPACE/OWNER`).

use datasketches::codec::{SketchBytes, SketchSlice};
use datasketches::cpc::{CpcSketch, CpcUnion};
use datasketches::error::{Error, ErrorKind};
use datasketches::frequencies::{ErrorType, FrequentItemValue, FrequentItemsSketch};
use datasketches::hash::value::raw_bytes;
use datasketches::kll::{KllFloat, KllSketch};
use std::collections::BTreeMap;
use std::fmt;

/// Frequent-items map size: an item's count is off by at most 3.5/1024 of the total weight.
pub const TOP_MAP: usize = 1024;
/// CPC precision of the whole-summary cardinalities (about 1.1 % relative standard error).
pub const CPC_LG_K: u8 = 11;
/// CPC precision per key (peers per source, ports per destination: about 4.6 %).
pub const SPREAD_LG_K: u8 = 8;
/// Most keys each spread map keeps; past it the key with the smallest count is dropped.
pub const SPREAD_KEYS: usize = 256;
/// KLL accuracy parameter (normalized rank error about 1.33 %; 1.65 % for a PMF).
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

/// An address (IPv4 as IPv4-mapped IPv6) as a frequent item, written as its text.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub struct Addr(pub u128);

/// A conversation (the lower address first) as a frequent item, written `a <-> b`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Conv(pub u128, pub u128);

/// Folds 128-bit halves into one word for the sketch's hash (MurmurHash3 of 8 bytes instead
/// of 16 or 32 per update). Two items folding alike only share a probe sequence: the map
/// still compares the items themselves.
fn fold(x: u128) -> u64 {
    ((x >> 64) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ x as u64
}

impl std::hash::Hash for Addr {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(fold(self.0));
    }
}

impl std::hash::Hash for Conv {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(fold(self.0).rotate_left(29) ^ fold(self.1));
    }
}

/// A protocol and destination port as a frequent item, written `tcp/443`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Port(pub u8, pub u16);

// Written with std alone (as the SDK's `ip` and `proto_name` write them): this file is also
// compiled into the fuzz target, which has no SDK.
impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v6 = std::net::Ipv6Addr::from(self.0);
        match v6.to_ipv4_mapped() {
            Some(v4) => fmt::Display::fmt(&v4, f),
            None => fmt::Display::fmt(&v6, f),
        }
    }
}

impl fmt::Display for Conv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} <-> {}", Addr(self.0), Addr(self.1))
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            6 => write!(f, "tcp/{}", self.1),
            17 => write!(f, "udp/{}", self.1),
            132 => write!(f, "sctp/{}", self.1),
            n => write!(f, "ip{n}/{}", self.1),
        }
    }
}

/// An item read back from its text. Only the exact text the item writes is taken (so items
/// and strings correspond one to one, as a string sketch's items do).
pub trait TextItem: fmt::Display + Sized {
    /// What the text should be, for the error.
    const WHAT: &'static str;
    fn read(text: &str) -> Option<Self>;
    fn parse(text: &str) -> Option<Self> {
        Self::read(text).filter(|v| v.to_string() == text)
    }
}

impl TextItem for Addr {
    const WHAT: &'static str = "an address";
    fn read(text: &str) -> Option<Addr> {
        let v6 = match text.parse::<std::net::IpAddr>().ok()? {
            std::net::IpAddr::V4(a) => a.to_ipv6_mapped(),
            std::net::IpAddr::V6(a) => a,
        };
        Some(Addr(u128::from(v6)))
    }
}

impl TextItem for Conv {
    const WHAT: &'static str = "a conversation ('a <-> b', the lower address first)";
    fn read(text: &str) -> Option<Conv> {
        let (a, b) = text.split_once(" <-> ")?;
        let (a, b) = (Addr::parse(a)?, Addr::parse(b)?);
        (a <= b).then_some(Conv(a.0, b.0))
    }
}

impl TextItem for Port {
    const WHAT: &'static str = "a port ('tcp/443')";
    fn read(text: &str) -> Option<Port> {
        let (proto, port) = text.split_once('/')?;
        let p = match proto {
            "tcp" => 6,
            "udp" => 17,
            "sctp" => 132,
            other => other.strip_prefix("ip")?.parse().ok()?,
        };
        Some(Port(p, port.parse().ok()?))
    }
}

macro_rules! text_item {
    ($t:ty) => {
        impl FrequentItemValue for $t {
            fn serialize_size(item: &Self) -> usize {
                4 + item.to_string().len()
            }
            fn serialize_value(&self, bytes: &mut SketchBytes) {
                self.to_string().serialize_value(bytes)
            }
            fn deserialize_value(cursor: &mut SketchSlice<'_>) -> Result<Self, Error> {
                let text = String::deserialize_value(cursor)?;
                <$t as TextItem>::parse(&text).ok_or_else(|| {
                    Error::new(
                        ErrorKind::InvalidData,
                        format!("item '{text}' is not {}", <$t as TextItem>::WHAT),
                    )
                })
            }
        }
    };
}
text_item!(Addr);
text_item!(Conv);
text_item!(Port);

/// One dimension's frequent-items sketch, its items typed by dimension.
#[derive(Clone)]
pub enum Top {
    Talkers(FrequentItemsSketch<Addr>),
    Conversations(FrequentItemsSketch<Conv>),
    Ports(FrequentItemsSketch<Port>),
    /// Workloads and DNS names: few distinct per batch, kept as strings.
    Texts(FrequentItemsSketch<String>),
}

macro_rules! each {
    ($top:expr, $s:ident => $e:expr) => {
        match $top {
            Top::Talkers($s) => $e,
            Top::Conversations($s) => $e,
            Top::Ports($s) => $e,
            Top::Texts($s) => $e,
        }
    };
}

/// A ranked row of a frequent-items sketch, its item as text.
pub struct Ranked {
    pub item: String,
    pub estimate: u64,
    pub lower: u64,
    pub upper: u64,
}

impl Top {
    /// The empty sketch of dimension `d` (an index of [`DIMENSIONS`]).
    pub fn new(d: usize) -> Top {
        match d {
            0 => Top::Talkers(frequent()),
            1 => Top::Conversations(frequent()),
            2 => Top::Ports(frequent()),
            _ => Top::Texts(frequent()),
        }
    }

    pub fn is_empty(&self) -> bool {
        each!(self, s => s.is_empty())
    }

    pub fn total_weight(&self) -> u64 {
        each!(self, s => s.total_weight())
    }

    pub fn serialize(&self) -> Vec<u8> {
        each!(self, s => s.serialize())
    }

    /// Reads an image as dimension `d`'s sketch.
    pub fn deserialize(d: usize, image: &[u8]) -> Result<Top, Error> {
        Ok(match d {
            0 => Top::Talkers(FrequentItemsSketch::deserialize(image)?),
            1 => Top::Conversations(FrequentItemsSketch::deserialize(image)?),
            2 => Top::Ports(FrequentItemsSketch::deserialize(image)?),
            _ => Top::Texts(FrequentItemsSketch::deserialize(image)?),
        })
    }

    /// Merges a sketch of the same dimension in (one of another dimension is not merged).
    pub fn merge(&mut self, other: &Top) {
        match (self, other) {
            (Top::Talkers(a), Top::Talkers(b)) => a.merge(b),
            (Top::Conversations(a), Top::Conversations(b)) => a.merge(b),
            (Top::Ports(a), Top::Ports(b)) => a.merge(b),
            (Top::Texts(a), Top::Texts(b)) => a.merge(b),
            _ => {}
        }
    }

    /// The rows that have no false negatives, largest estimate first and equal estimates in
    /// item (text) order (the sketch's own order among ties follows its hash table, so a 10th
    /// row could otherwise differ between two readers of one snapshot).
    pub fn ranked(&self) -> Vec<Ranked> {
        let mut rows: Vec<Ranked> = each!(self, s => s
            .frequent_items_with_threshold(ErrorType::NoFalseNegatives, 0)
            .into_iter()
            .map(|r| Ranked {
                item: r.item().to_string(),
                estimate: r.estimate(),
                lower: r.lower_bound(),
                upper: r.upper_bound(),
            })
            .collect());
        rows.sort_by(|a, b| {
            b.estimate
                .cmp(&a.estimate)
                .then_with(|| a.item.cmp(&b.item))
        });
        rows
    }
}

/// Every sketch of one summary.
pub struct Summary {
    /// `[dimension][metric]`.
    pub top: Vec<Vec<Top>>,
    pub distinct: Vec<CpcSketch>,
    /// Distinct peers per source address, distinct destination ports per destination.
    pub peers: BTreeMap<Addr, CpcSketch>,
    pub ports: BTreeMap<Addr, CpcSketch>,
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

fn frequent<T: std::hash::Hash + Eq>() -> FrequentItemsSketch<T> {
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

/// Most items of one batch a frequent-items sketch takes per metric (see [`feed`]): as many
/// as its map holds before it purges (3/4 of its size), so a batch that fits is exact.
pub const BATCH_ITEMS: usize = TOP_MAP * 3 / 4;

/// Feeds one batch's exact counts of distinct items to a frequent-items sketch, the batch
/// first reduced as the sketch's own purge reduces its map (Misra-Gries): `t`, the count of
/// the (`BATCH_ITEMS` + 1)-th largest item, comes off every count, the items left with
/// nothing are dropped, and `t` is added to the sketch's maximum error (its offset) through
/// an image with no items. Every bound the sketch reports stays a bound (an item's upper
/// bound is at least its true count, its lower bound at most), `t` is at most the batch's
/// weight / (`BATCH_ITEMS` + 1) (under half the error the sketch's own purges allow), and the
/// stream weight is the batch's whole weight. What it saves: a batch of thousands of
/// distinct conversations costs at most `BATCH_ITEMS` updates and a purge or two, not one
/// update per item and a purge every few hundred.
///
/// `counts` is scratch space (kept between calls to keep its allocation).
pub fn feed<T, Q>(
    sketch: &mut FrequentItemsSketch<T>,
    items: &[Q],
    count: impl Fn(&Q) -> u64,
    counts: &mut Vec<u64>,
    each: impl Fn(&mut FrequentItemsSketch<T>, &Q, u64),
) where
    T: std::hash::Hash + Eq + Clone + FrequentItemValue,
{
    counts.clear();
    counts.extend(items.iter().map(&count));
    let weight: u64 = counts.iter().sum();
    if weight == 0 {
        return;
    }
    let t = if items.len() > BATCH_ITEMS {
        let (_, nth, _) = counts.select_nth_unstable_by(BATCH_ITEMS, |a, b| b.cmp(a));
        *nth
    } else {
        0
    };
    let mut kept = 0u64;
    for item in items {
        let c = count(item);
        if c > t {
            each(sketch, item, c - t);
            kept += c - t;
        }
    }
    if t > 0 {
        // `kept` < `weight`: the (BATCH_ITEMS + 1)-th item lost all of its count, t > 0.
        let image = offset_image(sketch.lg_max_map_size(), weight - kept, t);
        match FrequentItemsSketch::<T>::deserialize(&image) {
            Ok(rest) => sketch.merge(&rest),
            // Cannot happen (the image is well formed); were it refused, the error bound
            // would be too small by t, so it is not hidden in a debug build.
            Err(e) => debug_assert!(false, "offset image refused: {e}"),
        }
    }
}

/// A frequent-items image holding no item: only a stream weight and a maximum error
/// (merging it adds both to a sketch).
fn offset_image(lg_max: u8, weight: u64, offset: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(32);
    // Preamble longs (4: not empty), serial version 1, family 10 (frequent items), the map
    // sizes (the current one the smallest), no flags, unused.
    b.extend_from_slice(&[4, 1, 10, lg_max, 3, 0, 0, 0]);
    b.extend_from_slice(&0u32.to_le_bytes()); // active items
    b.extend_from_slice(&0u32.to_le_bytes()); // unused
    b.extend_from_slice(&weight.to_le_bytes());
    b.extend_from_slice(&offset.to_le_bytes());
    b
}

/// Shortest run [`add_run`] makes an image of (shorter runs are updates, one per value).
const RUN_MIN: usize = 2 * KLL_K as usize;

thread_local! {
    /// The coin of [`add_run`]'s compactions (xorshift64), seeded differently in each process
    /// (from the standard library's random hash seed), so that the compaction errors of
    /// several agents' sketches average out when they are merged instead of lining up.
    static COIN: std::cell::Cell<u64> = std::cell::Cell::new({
        use std::hash::BuildHasher;
        std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64) | 1
    });
}

fn coin() -> bool {
    COIN.with(|c| {
        let mut x = c.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.set(x);
        x >> 63 == 1
    })
}

/// A batch's values for one KLL sketch, kept as keys that sort as the values do (integers
/// sort several times faster than floats by `total_cmp` in the sandbox).
#[derive(Default)]
pub struct Run(Vec<u64>);

impl Run {
    /// Adds a value (NaN is never given: the values are counts and times).
    pub fn push(&mut self, v: f64) {
        let b = v.to_bits();
        self.0.push(if b >> 63 == 1 { !b } else { b | 1 << 63 });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }

    fn value(key: u64) -> f64 {
        f64::from_bits(if key >> 63 == 1 {
            key & !(1 << 63)
        } else {
            !key
        })
    }
}

/// Adds a batch's values to a KLL sketch at once: they are sorted once and halved level by
/// level as KLL's own compactions halve a full level (an odd level keeps its smallest item,
/// then every other item from a random start goes up a level at twice the weight) until the
/// top level holds at most k; that is written as a KLL image, read back (the library checks
/// it) and merged. A value's rank moves by less than the sum of the compacted levels'
/// weights (2^h for h levels: under 2/k of the run, 1 % at k = 200): compactions of the
/// kind a stream of updates makes, one per level instead of many smaller ones, at the cost
/// of one sort instead of an update and its share of level sorts and merges per value. Short runs are updates. `run`
/// is left empty (its allocation kept).
pub fn add_run(sketch: &mut Kll, run: &mut Run) {
    if run.0.len() < RUN_MIN {
        for key in run.0.drain(..) {
            add(sketch, Run::value(key));
        }
        return;
    }
    let image = run_image(&mut run.0, sketch.k());
    run.clear();
    match Kll::deserialize(&image) {
        Ok(run) => {
            if sketch.merge(&run).is_err() {
                debug_assert!(false, "merging a run overflowed the stream weight");
            }
        }
        Err(e) => debug_assert!(false, "run image refused: {e}"),
    }
}

/// The KLL image of a run's keys (at least [`RUN_MIN`] of them), sorting them in place.
fn run_image(keys: &mut [u64], k: u16) -> Vec<u8> {
    keys.sort_unstable();
    let n = keys.len();
    let (min, max) = (Run::value(keys[0]), Run::value(keys[n - 1]));
    // The single items left at each lower level, then the top level in keys[..len].
    let mut low: Vec<Option<u64>> = Vec::new();
    let mut len = n;
    while len > k as usize {
        let odd = len % 2;
        low.push((odd == 1).then(|| keys[0]));
        let from = odd + usize::from(coin());
        let half = (len - odd) / 2;
        for i in 0..half {
            keys[i] = keys[from + 2 * i];
        }
        len = half;
    }
    let levels = low.len() + 1;
    // The image's level offsets index a buffer of the sketch's whole capacity, the items
    // packed at its end (as the library's own images are).
    let capacity: u32 = (0..levels)
        .map(|l| kll_level_capacity(k, levels - l - 1))
        .sum();
    let retained = (low.iter().flatten().count() + len) as u32;
    let mut b = Vec::with_capacity(20 + 4 * levels + 8 * (retained as usize + 2));
    // Preamble ints 5, serial version 1, family 15 (KLL), flags: level zero sorted; k, m 8.
    b.extend_from_slice(&[5, 1, 15, 2]);
    b.extend_from_slice(&k.to_le_bytes());
    b.extend_from_slice(&[8, 0]);
    b.extend_from_slice(&(n as u64).to_le_bytes());
    b.extend_from_slice(&k.to_le_bytes()); // min k
    b.extend_from_slice(&[levels as u8, 0]);
    let mut offset = capacity - retained;
    for item in &low {
        b.extend_from_slice(&offset.to_le_bytes());
        offset += u32::from(item.is_some());
    }
    b.extend_from_slice(&offset.to_le_bytes());
    b.extend_from_slice(&min.to_le_bytes());
    b.extend_from_slice(&max.to_le_bytes());
    for key in low.iter().flatten().chain(&keys[..len]) {
        b.extend_from_slice(&Run::value(*key).to_le_bytes());
    }
    b
}

/// A KLL level's capacity at `depth` below the top (DataSketches' formula: k (2/3)^depth,
/// rounded, at least m = 8).
fn kll_level_capacity(k: u16, depth: usize) -> u32 {
    let c = if depth <= 30 {
        (((u64::from(k) << (depth + 1)) / 3u64.pow(depth as u32)) + 1) >> 1
    } else {
        0
    };
    (c as u32).max(8)
}

/// Adds an item (its raw bytes, hashed as every DataSketches library hashes a byte array).
pub fn add_distinct(sketch: &mut CpcSketch, item: &[u8]) {
    sketch.update(raw_bytes::from_slice(item));
}

impl Summary {
    pub fn new() -> Summary {
        Summary {
            top: (0..DIMENSIONS.len())
                .map(|d| METRICS.iter().map(|_| Top::new(d)).collect())
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
            Top(usize, usize, Top),
            Distinct(usize, CpcSketch),
            Spread(bool, Addr, CpcSketch),
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
                    Read::Top(d, m, Top::deserialize(d, image).map_err(|e| at(&e))?)
                }
                (CPC, Some("distinct"), Some(what), None) => {
                    let i = pos(&DISTINCT, what).ok_or_else(|| at(&"unknown cardinality"))?;
                    Read::Distinct(i, CpcSketch::deserialize(image).map_err(|e| at(&e))?)
                }
                (CPC, Some("spread"), Some(kind @ ("peers" | "ports")), Some(key)) => Read::Spread(
                    kind == "peers",
                    Addr::parse(key).ok_or_else(|| at(&"the key is not an address"))?,
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

/// Adds one batch's distinct items per key to a spread map: keys already kept take theirs;
/// a new key enters while the map has room, or with more items than `floor` (the smallest
/// estimate kept at the last trim). `items` are (key, item) pairs, distinct, in any order
/// (they are sorted here to group them by key). Returns the new floor.
pub fn spread<T: AsRef<[u8]> + Copy>(
    map: &mut BTreeMap<Addr, CpcSketch>,
    floor: f64,
    items: &mut [(u128, T)],
) -> f64 {
    items.sort_unstable_by_key(|(k, _)| *k);
    for group in items.chunk_by(|x, y| x.0 == y.0) {
        let key = Addr(group[0].0);
        let room = map.len() < SPREAD_KEYS || group.len() as f64 > floor;
        if !room && !map.contains_key(&key) {
            continue;
        }
        let sk = map.entry(key).or_insert_with(|| cpc(SPREAD_LG_K));
        for (_, it) in group {
            add_distinct(sk, it.as_ref());
        }
    }
    bound(map).unwrap_or(floor)
}

/// Keeps a spread map within [`SPREAD_KEYS`]: the keys with the largest estimates stay.
/// Returns the smallest estimate kept when it trimmed.
pub fn bound(map: &mut BTreeMap<Addr, CpcSketch>) -> Option<f64> {
    if map.len() <= SPREAD_KEYS {
        return None;
    }
    let mut est: Vec<(f64, Addr)> = map.iter().map(|(k, c)| (c.estimate(), *k)).collect();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> u128 {
        match Addr::parse(s) {
            Some(a) => a.0,
            None => panic!("{s} is an address"),
        }
    }

    #[test]
    fn items_are_written_and_read_as_their_strings() {
        let (a, b) = (v4("10.0.0.1"), v4("2001:db8::7"));
        assert_eq!(Addr(a).to_string(), "10.0.0.1");
        assert_eq!(Conv(a, b).to_string(), "10.0.0.1 <-> 2001:db8::7");
        assert_eq!(Port(6, 443).to_string(), "tcp/443");
        assert_eq!(Port(47, 0).to_string(), "ip47/0");
        for text in ["10.0.0.1", "2001:db8::7", "::1"] {
            assert_eq!(
                Addr::parse(text).map(|a| a.to_string()).as_deref(),
                Some(text)
            );
        }
        assert_eq!(Conv::parse("10.0.0.1 <-> 2001:db8::7"), Some(Conv(a, b)));
        for (text, port) in [
            ("udp/53", Port(17, 53)),
            ("sctp/9", Port(132, 9)),
            ("ip47/0", Port(47, 0)),
        ] {
            assert_eq!(Port::parse(text), Some(port));
        }
        // Only the exact text an item writes is read (items and strings one to one).
        for bad in ["010.0.0.1", "::ffff:10.0.0.1", "2001:DB8::7", "x"] {
            assert_eq!(Addr::parse(bad), None, "{bad}");
        }
        for bad in [
            "2001:db8::7 <-> 10.0.0.1",
            "10.0.0.1<->10.0.0.2",
            "10.0.0.1 <-> ",
        ] {
            assert_eq!(Conv::parse(bad), None, "{bad}");
        }
        for bad in ["tcp/0443", "ip6/1", "tcp/70000", "TCP/1", "tcp"] {
            assert_eq!(Port::parse(bad), None, "{bad}");
        }
    }

    /// A pseudo-random stream (xorshift), the same in every run.
    fn stream(seed: u64) -> impl FnMut() -> u64 {
        let mut x = seed | 1;
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    /// The largest distance, over the percentiles, between the rank the sketch gives a
    /// percentile's value and its true rank among `exact` (sorted), as a fraction.
    fn worst_rank_error(k: &Kll, exact: &[f64]) -> f64 {
        let n = exact.len() as f64;
        (1..100)
            .map(|p| {
                let q = p as f64 / 100.0;
                let v = k
                    .quantile(q, SearchCriteria::Inclusive)
                    .ok()
                    .flatten()
                    .map(|v| v.into_inner())
                    .unwrap_or(f64::NAN);
                // True rank range of v: values below it, values at most it.
                let below = exact.partition_point(|x| *x < v) as f64 / n;
                let upto = exact.partition_point(|x| *x <= v) as f64 / n;
                if q < below {
                    below - q
                } else if q > upto {
                    q - upto
                } else {
                    0.0
                }
            })
            .fold(0.0, f64::max)
    }

    use datasketches::common::SearchCriteria;

    #[test]
    fn runs_make_a_sketch_as_accurate_as_updates() {
        let mut next = stream(7);
        let bound = kll().normalized_rank_error();
        // The compactions' coin comes up both ways (a stuck coin biases every run's ranks
        // by up to 1 %, inside the bound below).
        let flips: Vec<bool> = (0..64).map(|_| coin()).collect();
        assert!(flips.contains(&true) && flips.contains(&false), "{flips:?}");
        // Short runs (updates), runs just long enough for an image, long ones; random
        // values, many equal values, values already in order, and negative ones.
        for (n, shape) in [
            (RUN_MIN - 1, 0),
            (RUN_MIN, 0),
            (1_001, 1),
            (10_000, 0),
            (10_000, 2),
            (100_001, 0),
            (5_000, 3),
        ] {
            let mut values: Vec<f64> = (0..n)
                .map(|i| match shape {
                    0 => (next() % 1_000_000) as f64 / 7.0,
                    1 => (next() % 5) as f64,
                    2 => i as f64,
                    _ => (next() % 2_000) as f64 - 1_000.5,
                })
                .collect();
            let mut run = Run::default();
            values.iter().for_each(|v| run.push(*v));
            let mut k = kll();
            add_run(&mut k, &mut run);
            assert!(run.is_empty(), "the run is left empty");
            values.sort_by(f64::total_cmp);
            assert_eq!(k.n(), n as u64, "n {n} shape {shape}: every value counted");
            assert_eq!(
                k.min_item().map(|v| v.into_inner()),
                values.first().copied()
            );
            assert_eq!(k.max_item().map(|v| v.into_inner()), values.last().copied());
            let err = worst_rank_error(&k, &values);
            assert!(
                err <= bound,
                "n {n} shape {shape}: rank error {err} > {bound}"
            );
            // The image is one any DataSketches library reads: it survives a round trip.
            let back = Kll::deserialize(&k.serialize()).expect("round trip");
            assert_eq!(back.n(), k.n());
        }

        // A hundred runs of 10,000 into one sketch, against the same values as updates.
        let (mut by_runs, mut by_updates) = (kll(), kll());
        let mut all = Vec::new();
        for _ in 0..100 {
            let mut run = Run::default();
            for _ in 0..10_000 {
                let v = (next() % 50_000) as f64 + 0.25;
                run.push(v);
                add(&mut by_updates, v);
                all.push(v);
            }
            add_run(&mut by_runs, &mut run);
        }
        all.sort_by(f64::total_cmp);
        assert_eq!(by_runs.n(), by_updates.n());
        let (e_runs, e_updates) = (
            worst_rank_error(&by_runs, &all),
            worst_rank_error(&by_updates, &all),
        );
        assert!(
            e_runs <= bound,
            "runs: rank error {e_runs} > {bound} (updates: {e_updates})"
        );
        // Merged with a sketch made by updates, as another agent's would be.
        by_runs.merge(&by_updates).expect("merge");
        assert_eq!(by_runs.n(), 2_000_000);
    }

    #[test]
    fn a_batch_fed_by_its_heaviest_items_keeps_every_bound() {
        let mut next = stream(11);
        let mut sketch = frequent::<Addr>();
        let mut truth: std::collections::HashMap<u128, u64> = Default::default();
        let mut counts = Vec::new();
        let mut total = 0u64;
        for batch in 0..30 {
            // 9,000 distinct items a batch (as a batch's conversations): twenty heavy ones in
            // every batch, the light ones partly new each batch, some with nothing (a count
            // of 0) and many tied.
            let items: Vec<(u128, u64)> = (0..9_000u128)
                .map(|i| {
                    if i < 20 {
                        (i, 100_000 / (i as u64 + 1))
                    } else {
                        let id = i + (batch % 3) as u128 * 4_000;
                        (
                            id,
                            [0, 7, 7, 7][(i % 4) as usize] + next() % 300 * (i % 2) as u64,
                        )
                    }
                })
                .collect();
            for (id, c) in &items {
                *truth.entry(*id).or_default() += c;
                total += c;
            }
            feed(
                &mut sketch,
                &items,
                |x| x.1,
                &mut counts,
                |t, x, c| t.update_with_count(Addr(x.0), c),
            );
        }
        assert_eq!(sketch.total_weight(), total, "every batch's whole weight");
        let err = sketch.maximum_error();
        assert!(err > 0, "the batches were reduced");
        assert!(
            err as f64 <= 3.5 / TOP_MAP as f64 * total as f64,
            "offset {err} within the sketch's a-priori error of {total}"
        );
        for (id, c) in &truth {
            let (lo, hi) = (
                sketch.lower_bound(&Addr(*id)),
                sketch.upper_bound(&Addr(*id)),
            );
            assert!(lo <= *c && *c <= hi, "item {id}: {c} outside [{lo}, {hi}]");
        }
        // The heaviest ten (far apart) are the ten the sketch ranks first.
        let mut exact: Vec<(u64, u128)> = truth.iter().map(|(id, c)| (*c, *id)).collect();
        exact.sort_by(|a, b| b.cmp(a));
        let mut top: Vec<u128> = Top::Talkers(sketch)
            .ranked()
            .iter()
            .take(10)
            .filter_map(|r| Addr::parse(&r.item).map(|a| a.0))
            .collect();
        let mut want: Vec<u128> = exact.iter().take(10).map(|e| e.1).collect();
        top.sort();
        want.sort();
        assert_eq!(top, want);
    }

    /// Feeds ports to a fresh sketch; returns it and the updates it took.
    fn fed_ports(items: &[((u8, u16), u64)]) -> (FrequentItemsSketch<Port>, usize) {
        let mut sketch = frequent::<Port>();
        let updates = std::cell::Cell::new(0);
        feed(
            &mut sketch,
            items,
            |x| x.1,
            &mut Vec::new(),
            |t, x, c| {
                updates.set(updates.get() + 1);
                t.update_with_count(Port(x.0.0, x.0.1), c)
            },
        );
        (sketch, updates.get())
    }

    #[test]
    fn a_batch_the_map_holds_is_taken_whole_and_exactly() {
        let items: Vec<((u8, u16), u64)> = (0..BATCH_ITEMS as u16)
            .map(|p| ((6, p), 1 + u64::from(p % 5)))
            .collect();
        let (sketch, updates) = fed_ports(&items);
        assert_eq!(updates, BATCH_ITEMS, "every item, once");
        assert_eq!(sketch.maximum_error(), 0, "no error added");
        for ((p, port), c) in &items {
            assert_eq!(sketch.estimate(&Port(*p, *port)), *c);
        }
        // One item more than the map holds: at most BATCH_ITEMS updates, the rest an offset.
        let items: Vec<((u8, u16), u64)> = (0..=BATCH_ITEMS as u16)
            .map(|p| ((17, p), 10 + u64::from(p)))
            .collect();
        let (sketch, updates) = fed_ports(&items);
        assert!(updates <= BATCH_ITEMS, "{updates} updates");
        assert_eq!(
            sketch.maximum_error(),
            10,
            "the smallest count, taken off every item"
        );
        assert_eq!(
            sketch.total_weight(),
            items.iter().map(|x| x.1).sum::<u64>()
        );
    }

    #[test]
    fn a_summary_survives_its_snapshot_and_refuses_foreign_items() {
        let mut s = Summary::new();
        let (a, b) = (v4("10.0.0.1"), v4("10.0.0.2"));
        if let Top::Conversations(t) = &mut s.top[1][0] {
            t.update_with_count(Conv(a, b), 500);
        }
        if let Top::Talkers(t) = &mut s.top[0][0] {
            t.update_with_count(Addr(a), 500);
        }
        let mut cpc = cpc(SPREAD_LG_K);
        add_distinct(&mut cpc, &b.to_be_bytes());
        s.peers.insert(Addr(a), cpc);
        let snap = s.snapshot();
        let mut back = Summary::new();
        back.merge(&snap).expect("merge");
        assert_eq!(back.snapshot(), snap, "the same bytes after a round trip");
        let top = back.top[1][0].ranked();
        assert_eq!(
            (top[0].item.as_str(), top[0].estimate),
            ("10.0.0.1 <-> 10.0.0.2", 500)
        );
        assert_eq!(back.peers.len(), 1);

        // A frequent-strings image whose item is not a conversation is refused, naming it.
        let mut foreign = FrequentItemsSketch::<String>::new(TOP_MAP).expect("sketch");
        foreign.update_with_count("x-y".to_string(), 3);
        let image = foreign.serialize();
        let name = "top/conversations/bytes";
        let mut bytes = Vec::new();
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.push(FREQUENT);
        bytes.extend_from_slice(&(name.len() as u16).to_le_bytes());
        bytes.extend_from_slice(name.as_bytes());
        bytes.extend_from_slice(&(image.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&image);
        let err = back.merge(&bytes).expect_err("refused");
        assert!(
            err.0.contains("'top/conversations/bytes'")
                && err.0.contains("item 'x-y' is not a conversation"),
            "{}",
            err.0
        );
        assert_eq!(back.snapshot(), snap, "nothing merged");
    }
}
