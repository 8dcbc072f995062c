//! Bundled flow-processor: keeps the store within a budget of flows per second by sampling at
//! storage (the `storage-sampling` capability), pktvisor-style "edge smart sampling":
//!
//! - every `interval_s` it reads the host's counters: flows offered to the store per second,
//!   of which the host's guards keep (drops, SYN without answer, RST, DNS errors, new
//!   talkers, new service ports, the operator's `--keep-flows`) whatever the rules say;
//! - traffic classes are protocol and service port (the lower port); their shares of the
//!   offered flows come from the batches it is given (each kept flow counts as the N it stands
//!   for);
//! - when the offered rate is over the budget, the budget left after the guards is shared
//!   max-min fairly: every class gets up to a cap L (sum of min(rate, L) = budget), so rare
//!   classes keep every flow and only heavy, steady ones are sampled, each 1 in
//!   ceil(rate / L); a class whose flows differ widely in size is sampled by size instead
//!   (flows of the threshold or more always kept), so its bytes stay exact where they matter;
//! - under the budget again (with 20 % to spare) the rules are withdrawn;
//! - with `shadow=true` nothing changes: the rules go in as shadow rules, counted by the host
//!   as if in force, and the byte error they would cause is emitted as a metric.
//!
//! - with `kernel_pps` above 0 (and `capture-control` granted), a class whose packets cost the
//!   capture more than `kernel_pps` a second (skbs of its stored flows, scaled back: every
//!   interface's sighting without deduplication, one per flow with it) is also sampled in the
//!   kernel, 1 in ceil(rate / kernel_pps), by
//!   a `sample` rule: fewer packets and flows leave the kernel at all. The class's SYN and RST
//!   packets are exempt (a rule before it), so connection attempts and resets are still
//!   seen; its drops are sampled with it and scale back. Withdrawn when the class falls under
//!   80 % of `kernel_pps`.
//!
//! Every change carries its reason (the host shows it in the status and on the timeline).
//! Config: `budget` (stored flows per second, default 1000), `interval_s` (default 5),
//! `shadow` (default false), `kernel_pps` (default 0: never in the kernel).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use weir_plugin_sdk::flow_processor::{
    self, Batch, FlowBatch, Guest, MetricKind, MetricSample, PluginError, Processed,
    capture_control, clock, config, log,
    storage_sampling::{self, Rule},
};

/// Most classes named in rules; the rest share one rule.
const MAX_CLASSES: usize = 24;
/// Most classes sampled in the kernel (each takes two of the kernel's 16 rule slots when TCP).
const MAX_KERNEL_CLASSES: usize = 3;

#[derive(Default, Clone, Copy)]
struct Seen {
    /// Offered flows the batch's flows stand for.
    weight: f64,
    bytes: f64,
    max_bytes: f64,
    /// Skbs the kernel handled for the class, scaled back.
    skbs: f64,
}

#[derive(Default)]
struct State {
    registered: bool,
    last_ms: u64,
    /// Counters at the last tick: offered (all), guarded, kept (all); per active class kept;
    /// shadow offered and scaled bytes.
    offered: u64,
    guarded: u64,
    kept: u64,
    class_kept: BTreeMap<String, u64>,
    shadow_offered_bytes: u64,
    shadow_scaled_bytes: u64,
    classes: HashMap<(u8, u16), Seen>,
    /// The rules last set (class -> rule).
    rules: BTreeMap<String, Rule>,
    /// The classes sampled in the kernel, 1 in N.
    kernel: BTreeMap<(u8, u16), u32>,
    samples: Vec<MetricSample>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

/// Whether two settings differ by more than 30 % of the larger: only then is a rule changed
/// (smaller moves would churn rules on noise).
fn far_apart(a: f64, b: f64) -> bool {
    (a - b).abs() > 0.3 * a.max(b)
}

fn gauge(name: &str, value: f64) -> MetricSample {
    MetricSample {
        name: format!("sampling_controller_{name}"),
        kind: MetricKind::Gauge,
        labels: Vec::new(),
        value,
    }
}

/// The cap L with sum of min(rate, L) = budget (rates sorted descending).
fn water_level(rates: &[f64], budget: f64) -> f64 {
    let (mut lo, mut hi) = (0.0, rates.first().copied().unwrap_or(0.0));
    for _ in 0..60 {
        let mid = (lo + hi) / 2.0;
        let used: f64 = rates.iter().map(|r| r.min(mid)).sum();
        if used > budget {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    lo.max(1e-9)
}

/// Whether two rule sets differ enough to be worth a change (the host rate-limits them).
fn differs(a: &BTreeMap<String, Rule>, b: &BTreeMap<String, Rule>) -> bool {
    if a.len() != b.len() || a.keys().ne(b.keys()) {
        return true;
    }
    a.values().zip(b.values()).any(|(x, y)| {
        let (p, q) = if x.threshold_bytes > 0 || y.threshold_bytes > 0 {
            (x.threshold_bytes as f64, y.threshold_bytes as f64)
        } else {
            (f64::from(x.one_in), f64::from(y.one_in))
        };
        far_apart(p, q)
    })
}

fn tick(st: &mut State, now: u64) -> Result<(), PluginError> {
    let budget = flow_processor::config_u64("budget", 1000)?.max(1) as f64;
    let shadow = config::get("shadow").is_some_and(|v| v.trim() == "true");
    // Shadow mode never touches the kernel (rules set before it are withdrawn).
    let kernel_pps = if shadow {
        0
    } else {
        flow_processor::config_u64("kernel_pps", 0)?
    };
    let dt = (now.saturating_sub(st.last_ms) as f64 / 1000.0).max(0.001);
    let stats = storage_sampling::stats();
    let (mut offered, mut guarded, mut kept) = (0u64, 0u64, 0u64);
    let mut class_kept = BTreeMap::new();
    let (mut sh_off, mut sh_scaled) = (0u64, 0u64);
    for c in &stats {
        if c.shadow {
            sh_off += c.offered_bytes;
            sh_scaled += c.kept_scaled_bytes;
            continue;
        }
        offered += c.offered_flows;
        kept += c.kept_flows;
        if c.class.starts_with("keep:") {
            guarded += c.offered_flows;
        }
        class_kept.insert(c.class.clone(), c.kept_flows);
    }
    let rate = offered.saturating_sub(st.offered) as f64 / dt;
    let guard_rate = guarded.saturating_sub(st.guarded) as f64 / dt;
    let stored_rate = kept.saturating_sub(st.kept) as f64 / dt;
    let samplable = (rate - guard_rate).max(0.0);
    let room = (budget - guard_rate).max(budget / 10.0);

    // The classes' offered rates: their shares of the samplable rate.
    let total_w: f64 = st.classes.values().map(|s| s.weight).sum();
    let mut classes: Vec<((u8, u16), Seen, f64)> = st
        .classes
        .iter()
        .map(|(k, s)| (*k, *s, samplable * s.weight / total_w.max(1e-9)))
        .collect();
    classes.sort_by(|a, b| b.2.total_cmp(&a.2));
    let mut want: BTreeMap<String, Rule> = BTreeMap::new();
    let mut reason = String::new();
    let keep_current = !st.rules.is_empty() && samplable > room * 0.8;
    if samplable > room || keep_current {
        let mut rates: Vec<f64> = classes.iter().take(MAX_CLASSES).map(|c| c.2).collect();
        let rest: f64 = classes.iter().skip(MAX_CLASSES).map(|c| c.2).sum();
        if rest > 0.0 {
            rates.push(rest);
            rates.sort_by(|a, b| b.total_cmp(a));
        }
        let level = water_level(&rates, room);
        let mut parts = Vec::new();
        for ((proto, port), seen, r) in classes.iter().take(MAX_CLASSES) {
            if *r <= level {
                continue;
            }
            let n = (r / level).ceil().clamp(1.0, 100_000.0) as u32;
            if n < 2 {
                continue;
            }
            let class = format!("{}/{port}", weir_plugin_sdk::proto_name(*proto));
            let avg = seen.bytes / seen.weight.max(1e-9);
            // Sizes far apart: sample by size, so the large flows are all kept.
            let mut threshold = if seen.max_bytes > 10.0 * avg {
                (f64::from(n) * avg).ceil() as u64
            } else {
                0
            };
            // A size rule that kept more than its share last time is tightened.
            if threshold > 0
                && let (Some(prev), Some(k)) = (st.rules.get(&class), class_kept.get(&class))
                && prev.threshold_bytes > 0
            {
                let kept_rate =
                    k.saturating_sub(st.class_kept.get(&class).copied().unwrap_or(0)) as f64 / dt;
                let factor = (kept_rate / level).clamp(0.5, 4.0);
                threshold = ((prev.threshold_bytes as f64) * factor).max(threshold as f64) as u64;
            }
            parts.push(if threshold > 0 {
                format!("{class} by size over {threshold} B")
            } else {
                format!("{class} 1 in {n}")
            });
            want.insert(
                class.clone(),
                Rule {
                    class,
                    filter: format!("Proto={proto} and Port={port}"),
                    one_in: n.max(1),
                    threshold_bytes: threshold,
                },
            );
        }
        if rest > level {
            let n = (rest / level).ceil().clamp(1.0, 100_000.0) as u32;
            if n >= 2 {
                parts.push(format!("rest 1 in {n}"));
                want.insert(
                    "~rest".into(),
                    Rule {
                        class: "~rest".into(),
                        filter: String::new(),
                        one_in: n,
                        threshold_bytes: 0,
                    },
                );
            }
        }
        reason = format!(
            "offered {rate:.0} flows/s, budget {budget:.0}/s, guards {guard_rate:.0}/s: {}",
            if parts.is_empty() {
                "no class heavy enough".to_string()
            } else {
                parts.join(", ")
            }
        );
    } else if !st.rules.is_empty() {
        reason = format!(
            "offered {rate:.0} flows/s, within the budget of {budget:.0}/s (guards {guard_rate:.0}/s): every flow kept"
        );
    }
    if differs(&want, &st.rules) {
        // The "rest" rule matches everything: it must come last.
        let mut list: Vec<Rule> = want
            .values()
            .filter(|r| !r.filter.is_empty())
            .cloned()
            .collect();
        list.extend(want.values().filter(|r| r.filter.is_empty()).cloned());
        match storage_sampling::set_rules(&list, shadow, &reason) {
            Ok(()) => {
                log::log(log::Level::Info, &reason);
                st.rules = want;
            }
            // Rate-limited or refused: tried again at the next tick.
            Err(e) => log::log(log::Level::Warn, &format!("rules not set: {e}")),
        }
    }
    kernel_tick(st, dt, kernel_pps as f64);
    let shadow_error = if sh_off > st.shadow_offered_bytes {
        let off = (sh_off - st.shadow_offered_bytes) as f64;
        let est = sh_scaled.saturating_sub(st.shadow_scaled_bytes) as f64;
        (est - off).abs() / off
    } else {
        0.0
    };
    st.samples = vec![
        gauge("offered_flows_per_second", rate),
        gauge("guarded_flows_per_second", guard_rate),
        gauge("stored_flows_per_second", stored_rate),
        gauge("budget_flows_per_second", budget),
        gauge("sampled_classes", st.rules.len() as f64),
        gauge("kernel_sampled_classes", st.kernel.len() as f64),
    ];
    if shadow {
        st.samples
            .push(gauge("shadow_byte_error_ratio", shadow_error));
    }
    st.offered = offered;
    st.guarded = guarded;
    st.kept = kept;
    st.class_kept = class_kept;
    st.shadow_offered_bytes = sh_off;
    st.shadow_scaled_bytes = sh_scaled;
    st.classes.clear();
    st.last_ms = now;
    Ok(())
}

/// The kernel's `sample` rules for `classes` (SYN and RST exempt before each TCP class); a
/// class without ports (ICMP, ...) is its whole protocol.
fn kernel_rules(classes: &BTreeMap<(u8, u16), u32>) -> Vec<String> {
    let mut rules = Vec::new();
    for ((proto, port), n) in classes {
        // As the rule language spells protocols: tcp, udp, or the number.
        let p = match proto {
            6 => "tcp".to_string(),
            17 => "udp".to_string(),
            n => n.to_string(),
        };
        let ports = if *port == 0 {
            String::new()
        } else {
            format!(" ports={port}")
        };
        if *proto == 6 {
            rules.push(format!("sample proto=tcp{ports} tcp_flags=SYN,RST"));
        }
        rules.push(format!("sample proto={p}{ports} sampling={n}"));
    }
    rules
}

/// Puts the classes whose packets cost the capture more than `kernel_pps` under kernel
/// sampling, and takes back those that fell under 80 % of it.
fn kernel_tick(st: &mut State, dt: f64, limit: f64) {
    if limit <= 0.0 && st.kernel.is_empty() {
        return;
    }
    // The operator's new rules may have taken the room of ours: then they are set again.
    if !st.kernel.is_empty() {
        let in_force = capture_control::rules();
        if kernel_rules(&st.kernel)
            .iter()
            .any(|r| !in_force.contains(r))
        {
            log::log(
                log::Level::Warn,
                "the kernel sampling rules were withdrawn by the host; setting them again",
            );
            st.kernel.clear();
        }
    }
    let mut heavy: Vec<((u8, u16), f64)> = st
        .classes
        .iter()
        .map(|(k, s)| (*k, s.skbs / dt))
        .filter(|(k, rate)| {
            limit > 0.0 && (*rate > limit || (st.kernel.contains_key(k) && *rate > 0.8 * limit))
        })
        .collect();
    heavy.sort_by(|a, b| b.1.total_cmp(&a.1));
    heavy.truncate(MAX_KERNEL_CLASSES);
    let want: BTreeMap<(u8, u16), u32> = heavy
        .iter()
        .map(|(k, rate)| (*k, (rate / limit).ceil().clamp(2.0, 100_000.0) as u32))
        .collect();
    let same = want.len() == st.kernel.len()
        && want
            .iter()
            .zip(&st.kernel)
            .all(|((ka, a), (kb, b))| ka == kb && !far_apart(f64::from(*a), f64::from(*b)));
    if same {
        return;
    }
    let parts: Vec<String> = heavy
        .iter()
        .map(|((proto, port), rate)| {
            format!(
                "{}/{port} {rate:.0} packets/s: 1 in {}",
                weir_plugin_sdk::proto_name(*proto),
                want[&(*proto, *port)]
            )
        })
        .collect();
    let reason = if parts.is_empty() {
        format!("in the kernel: every class under {limit:.0} packets/s again, every packet kept")
    } else {
        format!(
            "in the kernel (over {limit:.0} packets/s): {}",
            parts.join(", ")
        )
    };
    match capture_control::set_rules(&kernel_rules(&want)) {
        Ok(()) => {
            log::log(log::Level::Info, &reason);
            st.kernel = want;
        }
        // Not granted, outside the grant or rate-limited: said, and tried at the next tick.
        Err(e) => log::log(log::Level::Warn, &format!("kernel sampling not set: {e}")),
    }
}

struct Controller;

impl Guest for Controller {
    fn process(batch: &FlowBatch) -> Result<Processed, PluginError> {
        let interval_ms = flow_processor::config_u64("interval_s", 5)?.clamp(1, 3600) * 1000;
        let batch = Batch::new(batch);
        let (proto, sport, dport, bytes, skbs, sampling) = (
            batch.proto(),
            batch.src_port(),
            batch.dst_port(),
            batch.bytes(),
            batch.skbs(),
            batch.sampling(),
        );
        STATE.with_borrow_mut(|st| {
            if !st.registered {
                // Controlling from now on: the host counts offered flows per class.
                storage_sampling::set_rules(&[], false, "observing")
                    .map_err(PluginError::Failed)?;
                st.registered = true;
                st.last_ms = clock::now_ms();
            }
            for i in 0..batch.len() {
                let n = f64::from(sampling[i].max(1));
                let port = sport[i].min(dport[i]);
                let key = (proto[i], port);
                // A flow of a class sampled in the kernel stands for one flow at storage: the
                // kernel's 1 in N scales its packets, not the flows.
                let kernel = f64::from(st.kernel.get(&key).copied().unwrap_or(1));
                let s = st.classes.entry(key).or_default();
                let b = bytes[i] as f64;
                s.weight += (n / kernel).max(1.0);
                s.bytes += b * n;
                s.max_bytes = s.max_bytes.max(b);
                s.skbs += skbs[i] as f64 * n;
            }
            let now = clock::now_ms();
            if now.saturating_sub(st.last_ms) >= interval_ms {
                tick(st, now)?;
                return Ok(Processed {
                    samples: std::mem::take(&mut st.samples),
                    annotations: Vec::new(),
                });
            }
            Ok(Processed {
                samples: Vec::new(),
                annotations: Vec::new(),
            })
        })
    }
}

flow_processor::export!(Controller);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_rules_are_spelled_as_the_rule_language_takes_them() {
        let classes: BTreeMap<(u8, u16), u32> =
            [((6, 5201), 2), ((17, 9000), 7), ((1, 0), 3), ((47, 0), 4)]
                .into_iter()
                .collect();
        assert_eq!(
            kernel_rules(&classes),
            [
                "sample proto=1 sampling=3",
                "sample proto=tcp ports=5201 tcp_flags=SYN,RST",
                "sample proto=tcp ports=5201 sampling=2",
                "sample proto=udp ports=9000 sampling=7",
                "sample proto=47 sampling=4",
            ]
        );
    }
}
