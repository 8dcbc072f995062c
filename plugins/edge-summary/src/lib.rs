//! weir's bundled edge summarizer: Apache DataSketches over every flow, pktvisor-style.
//!
//! - top-N (frequent items, weighted) by bytes, packets and flows of talkers (source
//!   address), conversations (the two addresses, lower first), ports (`tcp/443`), workloads
//!   (`namespace/owner` of the source) and DNS names;
//! - cardinalities (CPC): distinct sources, destinations, conversations and ports, and per
//!   key the distinct peers of each source and ports of each destination (scan and spread);
//! - quantiles (KLL): RTT (µs), DNS latency (µs), flow size (bytes) and duration (ms), and RTT
//!   and size per interface and per workload.
//!
//! Bytes and packets are scaled back by each flow's sampling. The host keeps one snapshot per
//! time window (`[summarizer]` in plugin.toml) and merges windows for queries; the snapshot
//! is the container of `sketches.rs`, readable by any DataSketches library.
//!
//! Queries (`weir summary edge-summary QUERY`, the Summary page):
//! `overview` (the default), `top DIMENSION METRIC [N]`, `distinct`, `spread peers|ports [N]`,
//! `quantiles METRIC [GROUP]`, `groups`, `sketches`.

mod sketches;

use datasketches::common::{NumStdDev, SearchCriteria};
use sketches::*;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use weir_plugin_sdk::summarizer::{
    self, Batch, Column, FlowBatch, Guest, IpAddr, PluginError, Table, TextColumn, View,
};

/// A fast hasher for the batch's own maps (keys are addresses and small ids, never input an
/// attacker picks per bucket: the maps live for one batch).
#[derive(Default, Clone, Copy)]
struct Fast(u64);

impl std::hash::Hasher for Fast {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u8(&mut self, v: u8) {
        self.write_u64(u64::from(v));
    }
    fn write_u16(&mut self, v: u16) {
        self.write_u64(u64::from(v));
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u128(&mut self, v: u128) {
        self.write_u64(v as u64);
        self.write_u64((v >> 64) as u64);
    }
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
}

type Map<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<Fast>>;
type Set<K> = HashSet<K, std::hash::BuildHasherDefault<Fast>>;

thread_local! {
    static STATE: RefCell<Option<Summary>> = const { RefCell::new(None) };
    /// The per-batch maps, emptied after each batch but kept allocated (a batch's maps hold
    /// thousands of keys; growing them anew for every batch cost more than filling them).
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

fn with<R>(f: impl FnOnce(&mut Summary) -> R) -> R {
    STATE.with_borrow_mut(|s| f(s.get_or_insert_with(Summary::new)))
}

/// One batch's totals and distinct items, by integer keys.
#[derive(Default)]
struct Scratch {
    talkers: Map<u128, Sums>,
    /// Conversation (lower address first) to its sums and the directions seen: bit 0 lower
    /// to higher, bit 1 higher to lower (so the source-to-peer pairs need no set of their own).
    convs: Map<(u128, u128), (Sums, u8)>,
    ports: Map<(u8, u16), Sums>,
    /// (namespace, owner) text indexes to the sums and the workload's group slot.
    workloads: Map<(u32, u32), (Sums, Option<usize>)>,
    dns: Map<u32, Sums>,
    dsts: Set<u128>,
    /// (destination, protocol, port)
    dst_ports: Set<(u128, u8, u16)>,
    /// Interface index to its group slot (None inside: the interface has no name).
    if_slots: Vec<Option<Option<usize>>>,
    /// (source, peer) and (destination, port item), sorted to group them by key.
    by_src: Vec<(u128, [u8; 16])>,
    by_dst: Vec<(u128, [u8; 3])>,
    /// The batch's values of each of [`QUANTILES`], added to their sketches as runs.
    runs: [Run; 4],
    /// Scratch counts of [`feed`].
    counts: Vec<u64>,
}

impl Scratch {
    fn clear(&mut self) {
        self.talkers.clear();
        self.convs.clear();
        self.ports.clear();
        self.workloads.clear();
        self.dns.clear();
        self.dsts.clear();
        self.dst_ports.clear();
        self.if_slots.clear();
        self.by_src.clear();
        self.by_dst.clear();
        self.runs.iter_mut().for_each(Run::clear);
        // One huge batch does not keep its memory for the instance's life.
        if self.convs.capacity() > 1 << 18 {
            *self = Scratch::default();
        }
    }
}

/// Totals of one key within a batch.
#[derive(Default, Clone, Copy)]
struct Sums {
    bytes: u64,
    packets: u64,
    flows: u64,
}

impl Sums {
    fn add(&mut self, bytes: u64, packets: u64) {
        self.bytes += bytes;
        self.packets += packets;
        self.flows += 1;
    }
}

/// A text column of the batch, or None when the field cannot be read (no grant).
fn texts(batch: &Batch, name: &str) -> Option<TextColumn> {
    match batch.field(name).ok()? {
        Column::Texts(t) => Some(t),
        _ => None,
    }
}

fn numbers(batch: &Batch, name: &str) -> Option<Vec<u64>> {
    match batch.field(name).ok()? {
        Column::Numbers(v) => Some(v),
        _ => None,
    }
}

fn update(s: &mut Summary, raw: &FlowBatch) {
    SCRATCH.with_borrow_mut(|scratch| {
        update_with(s, raw, scratch);
        scratch.clear();
    })
}

fn update_with(s: &mut Summary, raw: &FlowBatch, scratch: &mut Scratch) {
    let batch = Batch::new(raw);
    let n = batch.len();
    if n == 0 {
        return;
    }
    let (src, dst) = (batch.src_addr(), batch.dst_addr());
    let (dport, proto) = (batch.dst_port(), batch.proto());
    let (bytes, packets, sampling) = (batch.bytes(), batch.packets(), batch.sampling());
    let (start, end) = (batch.time_flow_start_ms(), batch.time_flow_end_ms());
    let ifaces = batch.interface();
    let names = batch.names();
    let rtt = numbers(&batch, "TimeFlowRttNs");
    let dns_lat = numbers(&batch, "DnsLatencyUs");
    let dns_name = texts(&batch, "DnsName");
    let ns = texts(&batch, "SrcK8S_Namespace");
    let owner = texts(&batch, "SrcK8S_OwnerName");

    // Aggregated within the batch first: each distinct key costs one sketch update, and no
    // string is made per flow.
    let key = |a: &IpAddr| (u128::from(a.hi) << 64) | u128::from(a.lo);
    let Scratch {
        talkers,
        convs,
        ports,
        workloads,
        dns,
        dsts,
        dst_ports,
        if_slots,
        by_src,
        by_dst,
        runs,
        counts,
    } = scratch;
    // Per-group values (interface, source workload), gathered per group, added once per
    // group's sketch: (group, flow sizes, RTTs).
    let mut slots: Vec<(String, Run, Run)> = Vec::new();
    let idx = |c: &Option<TextColumn>, i: usize| c.as_ref().and_then(|t| t.index.get(i).copied());
    for i in 0..n {
        let scale = u64::from(sampling[i].max(1));
        let (b, p) = (bytes[i] * scale, packets[i] * scale);
        let (a, z) = (key(&src[i]), key(&dst[i]));
        talkers.entry(a).or_default().add(b, p);
        let conv = convs.entry((a.min(z), a.max(z))).or_default();
        conv.0.add(b, p);
        conv.1 |= if a <= z { 1 } else { 2 };
        dsts.insert(z);
        if matches!(proto[i], 6 | 17 | 132) {
            ports.entry((proto[i], dport[i])).or_default().add(b, p);
            dst_ports.insert((z, proto[i], dport[i]));
        }
        // Groups: the flow's interface and its source workload.
        let fi = ifaces[i] as usize;
        if if_slots.len() <= fi {
            if_slots.resize(fi + 1, None);
        }
        let if_at = *if_slots[fi].get_or_insert_with(|| {
            let n = names.get(fi).filter(|n| !n.is_empty())?;
            slots.push((format!("if={n}"), Run::default(), Run::default()));
            Some(slots.len() - 1)
        });
        let wl_at = match (idx(&ns, i), idx(&owner, i)) {
            (Some(ni), Some(oi)) => {
                let (sums, at) = workloads.entry((ni, oi)).or_insert_with(|| {
                    let o = text_at(&owner, oi);
                    let at = (!o.is_empty()).then(|| {
                        let g = format!("wl={}/{o}", text_at(&ns, ni));
                        slots.push((g, Run::default(), Run::default()));
                        slots.len() - 1
                    });
                    (Sums::default(), at)
                });
                sums.add(b, p);
                *at
            }
            _ => None,
        };
        if let Some(di) = idx(&dns_name, i) {
            dns.entry(di).or_default().add(b, p);
        }
        let r = rtt
            .as_ref()
            .map(|r| r[i])
            .filter(|r| *r > 0)
            .map(|r| r as f64 / 1000.0);
        runs[2].push(b as f64);
        runs[3].push(end[i].saturating_sub(start[i]) as f64);
        if let Some(r) = r {
            runs[0].push(r);
        }
        if let Some(l) = dns_lat.as_ref().map(|l| l[i]).filter(|l| *l > 0) {
            runs[1].push(l as f64);
        }
        for at in [if_at, wl_at].into_iter().flatten() {
            slots[at].1.push(b as f64);
            if let Some(r) = r {
                slots[at].2.push(r);
            }
        }
    }
    for (k, run) in s.quantiles.iter_mut().zip(runs.iter_mut()) {
        add_run(k, run);
    }
    for (g, sizes, rtts) in slots {
        for (metric, mut values) in [("flow_bytes", sizes), ("rtt_us", rtts)] {
            if values.is_empty() {
                continue;
            }
            let name = format!("quantile/{metric}/{g}");
            if !s.grouped.contains_key(&name) && s.grouped.len() >= GROUPS * GROUPED.len() * 2 {
                continue;
            }
            add_run(s.grouped.entry(name).or_insert_with(kll), &mut values);
        }
    }

    // Workloads by name, once (each name goes to three sketches).
    let workload_names: Vec<(String, Sums)> = workloads
        .iter()
        .filter_map(|(&(ni, oi), &(sums, _))| {
            let o = text_at(&owner, oi);
            (!o.is_empty()).then(|| (format!("{}/{o}", text_at(&ns, ni)), sums))
        })
        .collect();
    let dns_names: Vec<(&str, Sums)> = dns
        .iter()
        .map(|(di, sums)| (text_at(&dns_name, *di), *sums))
        .filter(|(name, _)| !name.is_empty())
        .collect();
    let talker_sums: Vec<(u128, Sums)> = talkers.iter().map(|(k, v)| (*k, *v)).collect();
    let conv_sums: Vec<((u128, u128), Sums)> = convs.iter().map(|(k, v)| (*k, v.0)).collect();
    let port_sums: Vec<((u8, u16), Sums)> = ports.iter().map(|(k, v)| (*k, *v)).collect();
    // Each dimension's sketches (one per metric) take the batch's sums, items as integers,
    // the batch reduced to its heaviest items first (see `feed`).
    for (d, row) in s.top.iter_mut().enumerate() {
        for (m, top) in row.iter_mut().enumerate() {
            let pick = |sums: &Sums| [sums.bytes, sums.packets, sums.flows][m];
            match (d, top) {
                (0, Top::Talkers(t)) => feed(
                    t,
                    &talker_sums,
                    |x| pick(&x.1),
                    counts,
                    |t, x, c| t.update_with_count(Addr(x.0), c),
                ),
                (1, Top::Conversations(t)) => feed(
                    t,
                    &conv_sums,
                    |x| pick(&x.1),
                    counts,
                    |t, x, c| t.update_with_count(Conv(x.0.0, x.0.1), c),
                ),
                (2, Top::Ports(t)) => feed(
                    t,
                    &port_sums,
                    |x| pick(&x.1),
                    counts,
                    |t, x, c| t.update_with_count(Port(x.0.0, x.0.1), c),
                ),
                (3, Top::Texts(t)) => feed(
                    t,
                    &workload_names,
                    |x| pick(&x.1),
                    counts,
                    |t, x, c| t.update_with_count_ref(x.0.as_str(), c),
                ),
                (4, Top::Texts(t)) => feed(
                    t,
                    &dns_names,
                    |x| pick(&x.1),
                    counts,
                    |t, x, c| t.update_with_count_ref(x.0, c),
                ),
                _ => {}
            }
        }
    }
    for (k, _) in &talker_sums {
        add_distinct(&mut s.distinct[0], &k.to_be_bytes());
    }
    for ((a, z), _) in &conv_sums {
        let mut pair = [0u8; 32];
        pair[..16].copy_from_slice(&a.to_be_bytes());
        pair[16..].copy_from_slice(&z.to_be_bytes());
        add_distinct(&mut s.distinct[2], &pair);
    }
    for (p, port) in ports.keys() {
        add_distinct(&mut s.distinct[3], &port_item(*p, *port));
    }
    for z in dsts.iter() {
        add_distinct(&mut s.distinct[1], &z.to_be_bytes());
    }
    // Spread: distinct peers per source, distinct ports per destination.
    for (&(lo, hi), &(_, seen)) in convs.iter() {
        if seen & 1 != 0 {
            by_src.push((lo, hi.to_be_bytes()));
        }
        if seen & 2 != 0 {
            by_src.push((hi, lo.to_be_bytes()));
        }
    }
    s.peers_floor = spread(&mut s.peers, s.peers_floor, by_src);
    by_dst.extend(
        dst_ports
            .iter()
            .map(|&(z, p, port)| (z, port_item(p, port))),
    );
    s.ports_floor = spread(&mut s.ports, s.ports_floor, by_dst);
}

/// A port as a distinct-count item: the protocol number and the port (big-endian).
fn port_item(proto: u8, port: u16) -> [u8; 3] {
    let p = port.to_be_bytes();
    [proto, p[0], p[1]]
}

fn text_at(c: &Option<TextColumn>, idx: u32) -> &str {
    c.as_ref()
        .and_then(|t| t.values.get(idx as usize))
        .map(String::as_str)
        .unwrap_or("")
}

fn table(columns: &[&str], rows: Vec<Vec<String>>) -> View {
    View::Table(Table {
        columns: columns.iter().map(|c| c.to_string()).collect(),
        rows,
    })
}

fn round(v: f64) -> String {
    if v.fract() == 0.0 || v.abs() >= 100.0 {
        format!("{:.0}", v)
    } else {
        format!("{v:.2}")
    }
}

fn count_of(words: &[&str], at: usize, default: usize) -> Result<usize, PluginError> {
    match words.get(at) {
        None => Ok(default),
        Some(w) => w
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| {
                PluginError::InvalidInput(format!(
                    "word {}: '{w}' is not a count from 1 to 1000",
                    at + 1
                ))
            }),
    }
}

fn one_of(words: &[&str], at: usize, what: &str, list: &[&str]) -> Result<usize, PluginError> {
    let w = words.get(at).copied().unwrap_or("");
    list.iter().position(|x| *x == w).ok_or_else(|| {
        PluginError::InvalidInput(format!(
            "word {}: {what} '{w}' is not one of {}",
            at + 1,
            list.join(", ")
        ))
    })
}

const QS: [f64; 5] = [0.5, 0.9, 0.95, 0.99, 1.0];

fn quantile_rows(k: &Kll) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for q in QS {
        // The maximum is the one the sketch saw (the rank-1.0 quantile is the largest item it
        // retained).
        let v = if q == 1.0 {
            k.max_item().map(|v| v.into_inner())
        } else {
            k.quantile(q, SearchCriteria::Inclusive)
                .ok()
                .flatten()
                .map(|v| v.into_inner())
        };
        let label = if q == 1.0 {
            "max".to_string()
        } else {
            format!("p{}", (q * 100.0).round())
        };
        rows.push(vec![
            label,
            v.map(round).unwrap_or_default(),
            k.n().to_string(),
        ]);
    }
    rows
}

fn query(s: &Summary, request: &str) -> Result<View, PluginError> {
    let words: Vec<&str> = request.split_whitespace().collect();
    match words.first().copied().unwrap_or("overview") {
        "overview" => {
            let mut rows = Vec::new();
            let flows = s.top[0][2].total_weight();
            rows.push(vec!["flows".into(), flows.to_string()]);
            rows.push(vec!["bytes".into(), s.top[0][0].total_weight().to_string()]);
            rows.push(vec![
                "packets".into(),
                s.top[0][1].total_weight().to_string(),
            ]);
            for (i, what) in DISTINCT.iter().enumerate() {
                rows.push(vec![
                    format!("distinct {what}"),
                    round(s.distinct[i].estimate()),
                ]);
            }
            for (i, metric) in QUANTILES.iter().enumerate() {
                for (q, label) in [(0.5, "p50"), (0.99, "p99")] {
                    if let Ok(Some(v)) = s.quantiles[i].quantile(q, SearchCriteria::Inclusive) {
                        rows.push(vec![format!("{metric} {label}"), round(v.into_inner())]);
                    }
                }
            }
            for (d, dim) in DIMENSIONS.iter().enumerate() {
                if let Some(r) = s.top[d][0].ranked().into_iter().next() {
                    rows.push(vec![format!("top {dim} by bytes"), r.item]);
                }
            }
            Ok(table(&["Measure", "Value"], rows))
        }
        "top" => {
            let d = one_of(&words, 1, "dimension", &DIMENSIONS)?;
            let m = one_of(&words, 2, "metric", &METRICS)?;
            let n = count_of(&words, 3, 10)?;
            let rows = s.top[d][m]
                .ranked()
                .into_iter()
                .take(n)
                .enumerate()
                .map(|(i, r)| {
                    vec![
                        (i + 1).to_string(),
                        r.item,
                        r.estimate.to_string(),
                        r.lower.to_string(),
                        r.upper.to_string(),
                    ]
                })
                .collect();
            Ok(table(
                &["Rank", DIMENSIONS[d], "Estimate", "Lower", "Upper"],
                rows,
            ))
        }
        "distinct" => {
            let rows = DISTINCT
                .iter()
                .enumerate()
                .map(|(i, what)| {
                    let c = &s.distinct[i];
                    vec![
                        what.to_string(),
                        round(c.estimate()),
                        round(c.lower_bound(NumStdDev::Two)),
                        round(c.upper_bound(NumStdDev::Two)),
                    ]
                })
                .collect();
            Ok(table(&["Distinct", "Estimate", "Lower95", "Upper95"], rows))
        }
        "spread" => {
            let kind = one_of(&words, 1, "spread", &["peers", "ports"])?;
            let n = count_of(&words, 2, 10)?;
            let map = if kind == 0 { &s.peers } else { &s.ports };
            let mut all: Vec<(&Addr, f64)> = map.iter().map(|(k, c)| (k, c.estimate())).collect();
            all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
            let rows = all
                .into_iter()
                .take(n)
                .map(|(k, e)| {
                    let c = &map[k];
                    vec![
                        k.to_string(),
                        round(e),
                        round(c.lower_bound(NumStdDev::Two)),
                        round(c.upper_bound(NumStdDev::Two)),
                    ]
                })
                .collect();
            let key = if kind == 0 { "Source" } else { "Destination" };
            let what = if kind == 0 { "Peers" } else { "Ports" };
            Ok(table(&[key, what, "Lower95", "Upper95"], rows))
        }
        "quantiles" => {
            let q = one_of(&words, 1, "metric", &QUANTILES)?;
            let k = match words.get(2) {
                None => &s.quantiles[q],
                Some(g) => {
                    let name = format!("quantile/{}/{g}", QUANTILES[q]);
                    s.grouped.get(&name).ok_or_else(|| {
                        PluginError::InvalidInput(format!(
                            "word 3: no group '{g}' for {} (query 'groups' lists them)",
                            QUANTILES[q]
                        ))
                    })?
                }
            };
            Ok(table(&["Quantile", QUANTILES[q], "N"], quantile_rows(k)))
        }
        "groups" => {
            let rows = s
                .grouped
                .iter()
                .map(|(name, k)| {
                    let mut p = name.splitn(3, '/').skip(1);
                    let metric = p.next().unwrap_or("").to_string();
                    let group = p.next().unwrap_or("").to_string();
                    vec![group, metric, k.n().to_string()]
                })
                .collect();
            Ok(table(&["Group", "Metric", "N"], rows))
        }
        "sketches" => {
            let snap = s.snapshot();
            let rows = parse(&snap)
                .map_err(|e| PluginError::Failed(e.0))?
                .into_iter()
                .map(|(family, name, image)| {
                    let family = match family {
                        1 => "frequent_strings",
                        2 => "cpc",
                        _ => "kll_doubles",
                    };
                    vec![
                        name.to_string(),
                        family.to_string(),
                        image.len().to_string(),
                    ]
                })
                .collect();
            Ok(table(&["Sketch", "Family", "Bytes"], rows))
        }
        other => Err(PluginError::InvalidInput(format!(
            "word 1: unknown query '{other}': use overview, top DIMENSION METRIC [N], distinct, spread peers|ports [N], quantiles METRIC [GROUP], groups or sketches"
        ))),
    }
}

struct Plugin;

impl Guest for Plugin {
    fn update(batch: &FlowBatch) -> Result<(), PluginError> {
        with(|s| update(s, batch));
        Ok(())
    }

    fn snapshot() -> Vec<u8> {
        with(|s| s.snapshot())
    }

    fn merge(snapshot: Vec<u8>) -> Result<(), PluginError> {
        if snapshot.is_empty() {
            return Ok(());
        }
        with(|s| s.merge(&snapshot))
            .map_err(|e| PluginError::InvalidInput(format!("snapshot: {}", e.0)))
    }

    fn query(request: String) -> Result<View, PluginError> {
        with(|s| query(s, &request))
    }
}

summarizer::export!(Plugin);
