//! Storage sampling: which flows the store keeps, after every flow has been offered to the
//! summarizers. The "sample" stage of the pipeline (`crate::ingest`), between enrichment and
//! the store; the kernel's own sampling (`--sampling`, capture control) is the other place,
//! kept apart.
//!
//! - Guards first: a flow with drops, a TCP SYN without an answer, an RST, a DNS error, a new
//!   talker (a source not seen lately), a new service port (the lower port of the flow on its
//!   address, not seen lately) or a match of the operator's `--keep-flows` filters is always
//!   kept.
//! - Then the controlling plugins' rules (`storage-sampling` capability), in plugin-name
//!   order, first match: keep 1 in N, or by size ("smart sampling": a flow of B bytes is kept
//!   1 in floor(threshold / B), so large flows always are). Unmatched flows are kept.
//! - A kept flow's `Sampling` is multiplied by its N, so sums (bytes, packets) scale back as
//!   they do for kernel sampling; the estimate is unbiased (each flow stands for 1/p).
//! - Shadow rules are evaluated beside, with their own dice, and only counted: what they
//!   would keep and the bytes that would scale back, against what was offered.
//! - Every change is rate-limited like capture control, logged, kept for the status and
//!   written to the records store as kind `sampling-change` (the timeline shows it), with
//!   the plugin's reason; a plugin that stops controlling is withdrawn.

use crate::control::{ControlError, RateLimit};
use crate::flow::Flow;
use crate::query::Expr;
use crate::records::{Entry, RecordStore};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most rules one plugin may set.
pub const MAX_RULES: usize = 32;
/// Largest 1-in-N a rule may ask, or a size rule may reach.
pub const MAX_ONE_IN: u32 = 100_000;
/// Changes kept for the status.
pub const KEEP_CHANGES: usize = 50;
/// Entries of one generation of a seen-set (talkers, service ports).
const SEEN_GENERATION: usize = 1 << 18;
/// Age of a seen-set generation before it is dropped: "not seen lately".
const SEEN_AGE: Duration = Duration::from_secs(600);

const TCP_SYN: u16 = 0x02;
const TCP_RST: u16 = 0x04;
const TCP_ACK: u16 = 0x10;
/// NetObserv's extra flags: SYN+ACK, FIN+ACK, RST+ACK seen in one packet.
const TCP_SYN_ACK: u16 = 0x100;
const TCP_RST_ACK: u16 = 0x400;

/// The guards' classes, in the order they are checked.
pub const GUARDS: [&str; 7] = [
    "keep:drops",
    "keep:syn-only",
    "keep:rst",
    "keep:dns-error",
    "keep:operator",
    "keep:new-talker",
    "keep:new-port",
];

#[derive(Debug, thiserror::Error)]
pub enum SamplingError {
    /// A rule that does not check (its number and why).
    #[error("storage-sampling: {0}")]
    Invalid(String),
    #[error(transparent)]
    Limited(#[from] ControlError),
}

/// One rule as a plugin gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleSpec {
    pub class: String,
    pub filter: String,
    pub one_in: u32,
    pub threshold_bytes: u64,
}

impl RuleSpec {
    /// The rule as one line (status, timeline).
    pub fn text(&self) -> String {
        let how = if self.threshold_bytes > 0 {
            format!("by size, threshold {} B", self.threshold_bytes)
        } else {
            format!("1 in {}", self.one_in)
        };
        let filter = if self.filter.is_empty() {
            "all".to_string()
        } else {
            self.filter.clone()
        };
        format!("{}: {filter}: {how}", self.class)
    }
}

struct Rule {
    spec: RuleSpec,
    expr: Expr,
    /// `spec.class`, shared: the sample stage counts per class without allocating per flow.
    class: Arc<str>,
}

/// The class a flow was counted under, cheap to copy per flow; named once per batch.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
enum ClassKey {
    Guard(usize),
    Rule(Arc<str>),
    Other,
}

impl ClassKey {
    fn name(&self) -> String {
        match self {
            ClassKey::Guard(g) => GUARDS[*g].to_string(),
            ClassKey::Rule(c) => c.to_string(),
            ClassKey::Other => "other".to_string(),
        }
    }
}

impl Rule {
    fn check(i: usize, spec: RuleSpec) -> Result<Rule, SamplingError> {
        let bad =
            |m: String| SamplingError::Invalid(format!("rule {} ({}): {m}", i + 1, spec.class));
        if spec.class.is_empty() || spec.class.len() > 64 || spec.class.starts_with("keep:") {
            return Err(bad(
                "the class needs a name of 1-64 bytes, not starting with keep:".into(),
            ));
        }
        if spec.threshold_bytes == 0 && !(1..=MAX_ONE_IN).contains(&spec.one_in) {
            return Err(bad(format!(
                "one-in {} is outside 1-{MAX_ONE_IN}",
                spec.one_in
            )));
        }
        let expr = crate::query::parse(&spec.filter).map_err(|e| bad(format!("filter: {e}")))?;
        let class = Arc::from(spec.class.as_str());
        Ok(Rule { spec, expr, class })
    }

    /// The 1-in-N for a flow of `bytes` (scaled by the kernel's sampling).
    fn one_in(&self, bytes: u64) -> u32 {
        if self.spec.threshold_bytes > 0 {
            (self.spec.threshold_bytes / bytes.max(1)).clamp(1, u64::from(MAX_ONE_IN)) as u32
        } else {
            self.spec.one_in
        }
    }
}

/// Counters of one class.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Counters {
    pub offered_flows: u64,
    pub offered_bytes: u64,
    pub kept_flows: u64,
    pub kept_scaled_bytes: u64,
}

impl Counters {
    /// One flow of `bytes` offered, kept 1 in `n` (or not).
    fn add(&mut self, bytes: u64, n: u32, kept: bool) {
        self.offered_flows += 1;
        self.offered_bytes += bytes;
        if kept {
            self.kept_flows += 1;
            self.kept_scaled_bytes += bytes.saturating_mul(u64::from(n));
        }
    }
}

/// A class's counters as `stats` gives them.
#[derive(Debug, Clone, Serialize)]
pub struct ClassStats {
    pub class: String,
    pub shadow: bool,
    #[serde(flatten)]
    pub counters: Counters,
}

/// One change to the rules.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub time_ms: u64,
    pub by: String,
    pub shadow: bool,
    pub rules: Vec<String>,
    pub reason: String,
}

/// What `weir status` shows of storage sampling.
#[derive(Debug, Clone, Serialize)]
pub struct SamplingStatus {
    /// Flows offered to the store and flows kept, since the agent started.
    pub offered: u64,
    pub kept: u64,
    pub operator_keep: Vec<String>,
    pub controllers: Vec<Controller>,
    pub classes: Vec<ClassStats>,
    pub changes: Vec<Change>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Controller {
    pub plugin: String,
    pub rules: Vec<String>,
    pub shadow_rules: Vec<String>,
    pub changes: u64,
    pub refused: u64,
}

#[derive(Default)]
struct Hold {
    rules: Vec<Rule>,
    shadow: Vec<Rule>,
    limit: RateLimit,
    changes: u64,
    refused: u64,
}

/// Keys seen lately: two generations, the older dropped when the newer fills or ages.
struct Seen<K> {
    new: HashSet<K>,
    old: HashSet<K>,
    started: Instant,
}

impl<K: std::hash::Hash + Eq + Copy> Seen<K> {
    fn new() -> Self {
        Seen {
            new: HashSet::new(),
            old: HashSet::new(),
            started: Instant::now(),
        }
    }

    /// Whether `k` is new (not seen lately); remembers it either way.
    fn first(&mut self, k: K) -> bool {
        if self.new.contains(&k) {
            return false;
        }
        let seen = self.old.contains(&k);
        if self.new.len() >= SEEN_GENERATION || self.started.elapsed() >= SEEN_AGE {
            self.old = std::mem::take(&mut self.new);
            self.started = Instant::now();
        }
        self.new.insert(k);
        !seen
    }
}

struct State {
    operator_keep: Vec<(String, Expr)>,
    holds: BTreeMap<String, Hold>,
    talkers: Seen<u128>,
    ports: Seen<(u128, u8, u16)>,
    /// (shadow, class) -> counters.
    stats: BTreeMap<(bool, String), Counters>,
    offered: u64,
    kept: u64,
    changes: VecDeque<Change>,
    dice: u64,
}

impl State {
    /// A plugin controls (it set rules, maybe none yet): flows are counted per class.
    fn counting(&self) -> bool {
        !self.holds.is_empty()
    }

    /// Some rule is in force: flows may be dropped.
    fn applying(&self) -> bool {
        self.holds.values().any(|h| !h.rules.is_empty())
    }

    fn class_stats(&self) -> Vec<ClassStats> {
        self.stats
            .iter()
            .map(|((shadow, class), c)| ClassStats {
                class: class.clone(),
                shadow: *shadow,
                counters: *c,
            })
            .collect()
    }

    /// Whether a flow kept 1 in `n` is kept this time.
    fn roll_keeps(&mut self, n: u32) -> bool {
        n <= 1 || self.roll().is_multiple_of(u64::from(n))
    }

    fn roll(&mut self) -> u64 {
        // xorshift64*: the dice only need to be fair, not secret.
        let mut x = self.dice;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.dice = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// The storage sampler: see the module docs.
pub struct StorageSampler {
    state: Mutex<State>,
    records: Option<Arc<RecordStore>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn addr_key(a: std::net::IpAddr) -> u128 {
    match a {
        std::net::IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        std::net::IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The guard that keeps `f`, if any (the seen-sets learn `f` either way).
fn guard(st: &mut State, f: &Flow) -> Option<usize> {
    let new_talker = st.talkers.first(addr_key(f.src_addr));
    // The service side: the lower port, on its address.
    let service = if f.dst_port <= f.src_port {
        (addr_key(f.dst_addr), f.proto, f.dst_port)
    } else {
        (addr_key(f.src_addr), f.proto, f.src_port)
    };
    let new_port = matches!(f.proto, 6 | 17 | 132) && st.ports.first(service);
    if f.pkt_drop_packets > 0 {
        return Some(0);
    }
    if f.proto == 6 {
        if f.flags & TCP_SYN != 0 && f.flags & (TCP_ACK | TCP_SYN_ACK) == 0 {
            return Some(1);
        }
        if f.flags & (TCP_RST | TCP_RST_ACK) != 0 {
            return Some(2);
        }
    }
    if !f.dns_flags_response_code.is_empty() && f.dns_flags_response_code != "NoError" {
        return Some(3);
    }
    if st.operator_keep.iter().any(|(_, e)| e.matches(f)) {
        return Some(4);
    }
    if new_talker {
        return Some(5);
    }
    if new_port {
        return Some(6);
    }
    None
}

/// A flow's class and the 1-in-N it is kept at: its guard's (1), else the first matching
/// rule's (active or shadow), else `other` (1).
fn decide(
    holds: &BTreeMap<String, Hold>,
    shadow: bool,
    guarded: Option<usize>,
    f: &Flow,
    bytes: u64,
) -> (ClassKey, u32) {
    if let Some(g) = guarded {
        return (ClassKey::Guard(g), 1);
    }
    match first_match(holds, shadow, f) {
        Some(r) => (ClassKey::Rule(r.class.clone()), r.one_in(bytes)),
        None => (ClassKey::Other, 1),
    }
}

/// The first rule of `holds` (active or shadow) matching `f`.
fn first_match<'a>(holds: &'a BTreeMap<String, Hold>, shadow: bool, f: &Flow) -> Option<&'a Rule> {
    holds
        .values()
        .flat_map(|h| if shadow { &h.shadow } else { &h.rules })
        .find(|r| r.expr.matches(f))
}

impl StorageSampler {
    /// A sampler keeping everything until a plugin sets rules; `keep` are the operator's
    /// filters of flows always kept (refused, naming the filter, when one does not parse).
    pub fn new(
        keep: &[String],
        records: Option<Arc<RecordStore>>,
    ) -> Result<StorageSampler, SamplingError> {
        let operator_keep = keep
            .iter()
            .enumerate()
            .map(|(i, k)| {
                crate::query::parse(k)
                    .map(|e| (k.clone(), e))
                    .map_err(|e| SamplingError::Invalid(format!("--keep-flows {}: {e}", i + 1)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(StorageSampler {
            state: Mutex::new(State {
                operator_keep,
                holds: BTreeMap::new(),
                talkers: Seen::new(),
                ports: Seen::new(),
                stats: BTreeMap::new(),
                offered: 0,
                kept: 0,
                changes: VecDeque::new(),
                dice: 0x9e37_79b9_7f4a_7c15 ^ crate::query::now_ms(),
            }),
            records,
        })
    }

    /// Whether a rule is in force (flows may be dropped).
    pub fn active(&self) -> bool {
        lock(&self.state).applying()
    }

    /// Samples one batch: the flows to store (each kept one's `Sampling` multiplied by the
    /// 1-in-N it was kept at). `None`: every flow is kept unchanged (no rule in force). While a
    /// plugin controls, every flow is counted in its class (guards, rules, shadow rules), so
    /// the plugin sees the offered rate before it sets any rule.
    pub fn sample(&self, flows: &[Flow]) -> Option<Vec<Flow>> {
        let mut st = lock(&self.state);
        st.offered += flows.len() as u64;
        if !st.counting() {
            st.kept += flows.len() as u64;
            return None;
        }
        let applying = st.applying();
        let has_shadow = st.holds.values().any(|h| !h.shadow.is_empty());
        let mut out = Vec::with_capacity(if applying { flows.len() } else { 0 });
        // Counted per batch, then added: one map update per class and batch.
        let mut batch: BTreeMap<(bool, ClassKey), Counters> = BTreeMap::new();
        for f in flows {
            let scale = f.scale();
            let bytes = f.bytes.saturating_mul(scale);
            let guarded = guard(&mut st, f);
            let (class, n) = decide(&st.holds, false, guarded, f, bytes);
            let keep = st.roll_keeps(n);
            batch.entry((false, class)).or_default().add(bytes, n, keep);
            if keep && applying {
                let mut k = f.clone();
                k.sampling = u32::try_from(scale.saturating_mul(u64::from(n))).unwrap_or(u32::MAX);
                out.push(k);
            }
            if has_shadow {
                let (class, n) = decide(&st.holds, true, guarded, f, bytes);
                let keep = st.roll_keeps(n);
                batch.entry((true, class)).or_default().add(bytes, n, keep);
            }
        }
        st.kept += if applying {
            out.len() as u64
        } else {
            flows.len() as u64
        };
        for ((shadow, class), c) in batch {
            let t = st.stats.entry((shadow, class.name())).or_default();
            t.offered_flows += c.offered_flows;
            t.offered_bytes += c.offered_bytes;
            t.kept_flows += c.kept_flows;
            t.kept_scaled_bytes += c.kept_scaled_bytes;
        }
        applying.then_some(out)
    }

    /// Replaces `plugin`'s rules (or its shadow rules); nothing changes on error.
    pub fn set_plugin_rules(
        &self,
        plugin: &str,
        specs: Vec<RuleSpec>,
        shadow: bool,
        reason: &str,
    ) -> Result<(), SamplingError> {
        let checked = if specs.len() > MAX_RULES {
            Err(SamplingError::Invalid(format!(
                "{} rules, at most {MAX_RULES}",
                specs.len()
            )))
        } else {
            specs
                .into_iter()
                .enumerate()
                .map(|(i, s)| Rule::check(i, s))
                .collect::<Result<Vec<_>, _>>()
        };
        let mut st = lock(&self.state);
        let hold = st.holds.entry(plugin.to_string()).or_default();
        let rules = match checked {
            Ok(r) => r,
            Err(e) => {
                hold.refused += 1;
                return Err(e);
            }
        };
        if let Err(e) = hold.limit.take() {
            hold.refused += 1;
            return Err(e.into());
        }
        let text: Vec<String> = rules.iter().map(|r| r.spec.text()).collect();
        if shadow {
            hold.shadow = rules;
        } else {
            hold.rules = rules;
        }
        hold.changes += 1;
        self.note(&mut st, plugin, shadow, text, reason);
        Ok(())
    }

    /// The rules in force (or the shadow rules), every plugin's in name order.
    pub fn rules(&self, shadow: bool) -> Vec<RuleSpec> {
        let st = lock(&self.state);
        st.holds
            .values()
            .flat_map(|h| if shadow { &h.shadow } else { &h.rules })
            .map(|r| r.spec.clone())
            .collect()
    }

    /// Counters per class since the agent started.
    pub fn stats(&self) -> Vec<ClassStats> {
        lock(&self.state).class_stats()
    }

    /// Withdraws every plugin `controlling` no longer names (disabled, removed, grant revoked).
    pub fn retain(&self, controlling: &dyn Fn(&str) -> bool) {
        let mut st = lock(&self.state);
        let gone: Vec<String> = st
            .holds
            .keys()
            .filter(|p| !controlling(p))
            .cloned()
            .collect();
        for p in gone {
            if let Some(h) = st.holds.remove(&p)
                && (!h.rules.is_empty() || !h.shadow.is_empty())
            {
                self.note(
                    &mut st,
                    &p,
                    false,
                    Vec::new(),
                    "withdrawn: the plugin no longer controls storage sampling",
                );
            }
        }
    }

    pub fn status(&self) -> SamplingStatus {
        let st = lock(&self.state);
        SamplingStatus {
            offered: st.offered,
            kept: st.kept,
            operator_keep: st.operator_keep.iter().map(|(k, _)| k.clone()).collect(),
            controllers: st
                .holds
                .iter()
                .map(|(p, h)| Controller {
                    plugin: p.clone(),
                    rules: h.rules.iter().map(|r| r.spec.text()).collect(),
                    shadow_rules: h.shadow.iter().map(|r| r.spec.text()).collect(),
                    changes: h.changes,
                    refused: h.refused,
                })
                .collect(),
            classes: st.class_stats(),
            changes: st.changes.iter().cloned().collect(),
        }
    }

    fn note(&self, st: &mut State, by: &str, shadow: bool, rules: Vec<String>, reason: &str) {
        let what = if rules.is_empty() {
            "no rules: every flow kept".to_string()
        } else {
            rules.join("; ")
        };
        let reason: String = reason.chars().take(1000).collect();
        tracing::info!(by, shadow, rules = %what, reason = %reason, "storage sampling changed");
        let time_ms = crate::query::now_ms();
        if let Some(r) = &self.records {
            let mut text = format!(
                "{}{what}",
                if shadow { "shadow rules: " } else { "rules: " }
            );
            if !reason.is_empty() {
                text.push_str(" (");
                text.push_str(&reason);
                text.push(')');
            }
            let entry = Entry {
                time_ms,
                end_ms: None,
                kind: "sampling-change".into(),
                text: text.chars().take(4000).collect(),
                labels: vec![
                    ("by".into(), by.to_string()),
                    ("shadow".into(), shadow.to_string()),
                ],
                flow_filter: None,
            };
            if let Err(e) = r.write("agent", vec![entry]) {
                tracing::warn!(error = %e, "sampling change not recorded");
            }
        }
        st.changes.push_back(Change {
            time_ms,
            by: by.to_string(),
            shadow,
            rules,
            reason,
        });
        while st.changes.len() > KEEP_CHANGES {
            st.changes.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(src: &str, dst: &str, proto: u8, sport: u16, dport: u16, bytes: u64) -> Flow {
        let mut f = Flow::empty();
        f.src_addr = src.parse().expect("ip");
        f.dst_addr = dst.parse().expect("ip");
        f.proto = proto;
        f.src_port = sport;
        f.dst_port = dport;
        f.bytes = bytes;
        f.packets = 1 + bytes / 1000;
        f.flags = if proto == 6 { TCP_SYN | TCP_ACK } else { 0 };
        f
    }

    fn rule(class: &str, filter: &str, one_in: u32, threshold: u64) -> RuleSpec {
        RuleSpec {
            class: class.into(),
            filter: filter.into(),
            one_in,
            threshold_bytes: threshold,
        }
    }

    #[test]
    fn without_rules_every_flow_is_kept_unchanged() {
        let s = StorageSampler::new(&[], None).expect("sampler");
        let flows = vec![flow("10.0.0.1", "10.0.0.2", 17, 4000, 5201, 100); 10];
        assert!(s.sample(&flows).is_none());
        assert_eq!(s.status().kept, 10);
    }

    #[test]
    fn sampled_sums_scale_back_and_guards_are_always_kept() {
        let s = StorageSampler::new(&["DstPort=9999".into()], None).expect("sampler");
        s.set_plugin_rules("ctl", vec![rule("udp", "Proto=17", 20, 0)], false, "test")
            .expect("rules");
        // Warm the seen-sets so the bulk is not "new".
        let warm: Vec<Flow> = (0..50)
            .map(|i| flow(&format!("10.0.0.{i}"), "10.0.1.1", 17, 40000, 5201, 100))
            .collect();
        s.sample(&warm);
        let mut flows: Vec<Flow> = (0..200_000)
            .map(|i| {
                flow(
                    &format!("10.0.0.{}", i % 50),
                    "10.0.1.1",
                    17,
                    40000,
                    5201,
                    100 + (i % 7) as u64,
                )
            })
            .collect();
        let mut dropped = flow("10.0.0.1", "10.0.1.1", 17, 40000, 5201, 100);
        dropped.pkt_drop_packets = 1;
        let mut rst = flow("10.0.0.1", "10.0.1.1", 6, 40000, 443, 100);
        rst.flags = TCP_RST;
        let mut syn = flow("10.0.0.1", "10.0.1.1", 6, 40001, 443, 60);
        syn.flags = TCP_SYN;
        let mut dns = flow("10.0.0.1", "10.0.1.1", 17, 40002, 53, 80);
        dns.dns_flags_response_code = "NXDomain".into();
        let op = flow("10.0.0.1", "10.0.1.1", 17, 40003, 9999, 80);
        let newbie = flow("10.9.9.9", "10.0.1.1", 17, 40000, 5201, 80);
        for f in [&dropped, &rst, &syn, &dns, &op, &newbie] {
            flows.push((*f).clone());
        }
        let kept = s.sample(&flows).expect("active");
        let total: u64 = flows.iter().map(|f| f.bytes).sum();
        let est: u64 = kept.iter().map(|f| f.bytes * f.scale()).sum();
        let err = (est as f64 - total as f64).abs() / total as f64;
        // 1 in 20 of 200 000 like-sized flows: the kept count's relative standard error is
        // sqrt(19 / 200 000) ~ 1 %; the dice are seeded by the clock, so bound at 4 of them.
        let se = (19.0f64 / 200_000.0).sqrt();
        assert!(
            err < 4.0 * se,
            "estimate {est} vs {total}: {err:.4} over 4 standard errors"
        );
        assert!(kept.len() < 200_000 / 10, "kept {}", kept.len());
        for special in [&dropped, &rst, &syn, &dns, &op, &newbie] {
            assert!(
                kept.iter().any(|k| k.src_addr == special.src_addr
                    && k.src_port == special.src_port
                    && k.dst_port == special.dst_port
                    && k.flags == special.flags
                    && k.pkt_drop_packets == special.pkt_drop_packets
                    && k.sampling <= 1),
                "not kept 1:1: {special:?}"
            );
        }
        assert!(kept.iter().any(|f| f.src_addr.to_string() == "10.9.9.9"));
        let stats = s.stats();
        for g in [
            "keep:drops",
            "keep:rst",
            "keep:syn-only",
            "keep:dns-error",
            "keep:operator",
            "keep:new-talker",
        ] {
            assert!(
                stats
                    .iter()
                    .any(|c| c.class == g && c.counters.kept_flows >= 1),
                "{g}: {stats:?}"
            );
        }
    }

    #[test]
    fn size_rules_keep_large_flows_and_shadow_rules_drop_nothing() {
        let s = StorageSampler::new(&[], None).expect("sampler");
        s.set_plugin_rules("ctl", vec![rule("all", "", 1, 10_000)], true, "shadow test")
            .expect("rules");
        let flows: Vec<Flow> = (0..20_000)
            .map(|i| {
                flow(
                    "10.0.0.1",
                    "10.0.1.1",
                    17,
                    40000,
                    5201,
                    if i % 100 == 0 { 50_000 } else { 100 },
                )
            })
            .collect();
        assert!(s.sample(&flows).is_none(), "shadow rules keep everything");
        let shadow = s
            .stats()
            .into_iter()
            .find(|c| c.shadow && c.class == "all")
            .expect("shadow stats");
        assert!(shadow.counters.kept_flows < 2_000, "{shadow:?}");
        let err = (shadow.counters.kept_scaled_bytes as f64 - shadow.counters.offered_bytes as f64)
            .abs()
            / shadow.counters.offered_bytes as f64;
        assert!(err < 0.05, "{shadow:?}");
        // Active size rule: every large flow is kept, unscaled.
        s.set_plugin_rules("ctl", vec![rule("all", "", 1, 10_000)], false, "on")
            .expect("rules");
        let kept = s.sample(&flows).expect("active");
        assert_eq!(
            kept.iter()
                .filter(|f| f.bytes == 50_000 && f.sampling <= 1)
                .count(),
            200
        );
    }

    #[test]
    fn bad_rules_are_refused_naming_the_rule_and_changes_are_rate_limited() {
        let s = StorageSampler::new(&[], None).expect("sampler");
        let e = s
            .set_plugin_rules(
                "ctl",
                vec![rule("ok", "", 2, 0), rule("bad", "Proto==", 2, 0)],
                false,
                "",
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("rule 2 (bad): filter"), "{e}");
        let e = s
            .set_plugin_rules("ctl", vec![rule("zero", "", 0, 0)], false, "")
            .unwrap_err()
            .to_string();
        assert!(e.contains("one-in 0 is outside"), "{e}");
        assert!(s.rules(false).is_empty());
        for _ in 0..5 {
            s.set_plugin_rules("ctl", vec![rule("a", "", 2, 0)], false, "")
                .expect("within the burst");
        }
        let e = s
            .set_plugin_rules("ctl", vec![rule("a", "", 3, 0)], false, "")
            .unwrap_err()
            .to_string();
        assert!(e.contains("rate limit"), "{e}");
        assert_eq!(s.rules(false)[0].one_in, 2);
        s.retain(&|_| false);
        assert!(s.rules(false).is_empty());
        assert!(!s.active());
        assert!(
            s.sample(&[flow("10.0.0.1", "10.0.0.2", 17, 1, 2, 3)])
                .is_none()
        );
        let e = StorageSampler::new(&["Nope=1".into()], None)
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("--keep-flows 1")));
    }
}
