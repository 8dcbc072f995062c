//! Spikes and quiet gaps in the flow volume, and the job that runs correlators around each one
//! by itself (`weir agent --on-spike what-changed`).
//!
//! [`find`] judges a byte series per bucket against its own median: a bucket far above it
//! (more than `factor` times the median and `mads` robust deviations above it, and at least
//! `min_bytes`) is part of a spike; two or more buckets in a row far below an active median
//! (under `gap_fraction` of it) are a quiet gap. Neighbouring buckets merge into one.
//! The timeline draws them as its `spikes` lane ([`crate::timeline`]).
//!
//! [`SpikeWatch`] looks at the last 20 minutes of the store at each call; once a spike (or
//! gap) has as much quiet after it as the correlators need, it runs each named correlator over
//! the stretch around it (the spike given to it as an event) and has the host keep their
//! annotations in the records store under the plugin's name (a run's `keep`), labelled
//! `trigger=spike` and with the spike's start, so they show on the timeline beside it. Each spike is handed to each plugin once
//! (one overlapping a spike handed already is the same one); a spike still running when it
//! reaches the window's start (longer than about 15 minutes: a change of level) is not.

use crate::plugins::{PluginRunner, RunError};
use crate::query::{Expr, TimeRange, human_bytes};
use crate::store::Store;
use crate::timeline::{TimelineError, TimelineRequest};
use serde::Serialize;
use serde_json::json;

/// The shortest bucket spikes are judged in: flows reach the store once per active timeout
/// (5 s by default), so shorter buckets are mostly empty and each eviction would look like a
/// spike. The timeline has no `spikes` lane below it; `--on-spike` uses at least it.
pub const MIN_STEP_MS: u64 = 5_000;

/// How far from the median a bucket must be.
#[derive(Debug, Clone)]
pub struct SpikeOptions {
    /// A spike is more than this many times the median...
    pub factor: f64,
    /// ...and this many robust standard deviations (1.4826 x the median absolute deviation)
    /// above it...
    pub mads: f64,
    /// ...and at least this many bytes in its bucket.
    pub min_bytes: u64,
    /// A gap is under this fraction of the median, for at least `gap_buckets` buckets, while
    /// the median is at least `min_bytes`.
    pub gap_fraction: f64,
    pub gap_buckets: usize,
    /// Fewer buckets than this are not judged.
    pub min_buckets: usize,
}

impl Default for SpikeOptions {
    fn default() -> Self {
        SpikeOptions {
            factor: 3.0,
            mads: 6.0,
            min_bytes: 64 * 1024,
            gap_fraction: 0.1,
            gap_buckets: 2,
            min_buckets: 10,
        }
    }
}

/// Above or below.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Spike,
    Gap,
}

/// One spike or gap.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Spike {
    pub change: Change,
    pub from_ms: u64,
    pub to_ms: u64,
    /// The largest bucket of a spike, the smallest of a gap (bytes).
    pub bytes: u64,
    /// The series' median bucket (bytes).
    pub median: u64,
    pub step_ms: u64,
}

impl Spike {
    /// `volume spike: 41.2x the median (11.8 MiB vs 292.9 KiB per 5 s), 10 s`.
    pub fn text(&self) -> String {
        let per = format!("{} s", self.step_ms as f64 / 1000.0);
        let dur = format!("{} s", (self.to_ms - self.from_ms) as f64 / 1000.0);
        match self.change {
            Change::Spike if self.median == 0 => format!(
                "volume spike: {} per {per} over an idle median, {dur}",
                human_bytes(self.bytes)
            ),
            Change::Spike => format!(
                "volume spike: {:.1}x the median ({} vs {} per {per}), {dur}",
                self.bytes as f64 / self.median as f64,
                human_bytes(self.bytes),
                human_bytes(self.median)
            ),
            Change::Gap => format!(
                "quiet gap: {} against a median of {} per {per}, {dur}",
                human_bytes(self.bytes),
                human_bytes(self.median)
            ),
        }
    }

    /// `warning` for a spike or gap (both are worth a look; neither is an outage by itself).
    pub fn severity(&self) -> &'static str {
        "warning"
    }
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// The spikes and gaps of `series` (bytes per bucket, the first starting at `from_ms`). A gap
/// never touches the last bucket (it may still be filling).
pub fn find(series: &[u64], from_ms: u64, step_ms: u64, opt: &SpikeOptions) -> Vec<Spike> {
    let n = series.len();
    if n < opt.min_buckets.max(3) || step_ms == 0 {
        return vec![];
    }
    let mut v: Vec<f64> = series.iter().map(|&b| b as f64).collect();
    let med = median(&mut v);
    let mut dev: Vec<f64> = series.iter().map(|&b| (b as f64 - med).abs()).collect();
    let sigma = 1.4826 * median(&mut dev);
    let high = (med * opt.factor)
        .max(med + opt.mads * sigma)
        .max(opt.min_bytes as f64);
    let active = med >= opt.min_bytes as f64;
    let low = med * opt.gap_fraction;
    let flag = |i: usize| -> Option<Change> {
        let b = series[i] as f64;
        if b > high {
            Some(Change::Spike)
        } else if active && b < low && i + 1 < n {
            Some(Change::Gap)
        } else {
            None
        }
    };
    let mut out = vec![];
    let mut i = 0;
    while i < n {
        let Some(c) = flag(i) else {
            i += 1;
            continue;
        };
        let mut j = i;
        while j + 1 < n && flag(j + 1) == Some(c) {
            j += 1;
        }
        let run = &series[i..=j];
        if c == Change::Spike || run.len() >= opt.gap_buckets {
            out.push(Spike {
                change: c,
                from_ms: from_ms + i as u64 * step_ms,
                to_ms: from_ms + (j as u64 + 1) * step_ms,
                bytes: match c {
                    Change::Spike => run.iter().copied().max().unwrap_or(0),
                    Change::Gap => run.iter().copied().min().unwrap_or(0),
                },
                median: med.round() as u64,
                step_ms,
            });
        }
        i = j + 1;
    }
    out
}

/// What [`SpikeWatch`] watches and runs.
#[derive(Debug, Clone)]
pub struct SpikeWatchConfig {
    /// Correlators run around each spike (installed plugins' names).
    pub plugins: Vec<String>,
    /// How far back each look goes.
    pub lookback_ms: u64,
    /// The volume's bucket (at least the capture's active timeout).
    pub step_ms: u64,
    pub options: SpikeOptions,
}

impl Default for SpikeWatchConfig {
    fn default() -> Self {
        SpikeWatchConfig {
            plugins: vec![],
            lookback_ms: 20 * 60_000,
            step_ms: MIN_STEP_MS,
            options: SpikeOptions::default(),
        }
    }
}

/// What one look did with one spike and one plugin.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Ran; this many annotations kept.
    Ran {
        plugin: String,
        spike: Spike,
        annotations: usize,
    },
    /// The plugin is not installed (or not loaded yet): tried again at the next look.
    NotLoaded { plugin: String },
    /// The plugin failed on it (not tried again).
    Failed {
        plugin: String,
        spike: Spike,
        error: String,
    },
}

/// Finds spikes in the store's recent volume and runs correlators around each once.
pub struct SpikeWatch {
    cfg: SpikeWatchConfig,
    /// (plugin, spike start, spike end) handed over already: a spike overlapping one of its
    /// plugin's is the same spike (its edges move a little as the median does).
    done: Vec<(String, u64, u64)>,
}

/// The stretch a correlator gets around a spike: twice its length on each side, at
/// least 15 s and at most 5 min.
pub fn context_ms(s: &Spike) -> u64 {
    ((s.to_ms - s.from_ms) * 2).clamp(15_000, 300_000)
}

impl SpikeWatch {
    pub fn new(cfg: SpikeWatchConfig) -> SpikeWatch {
        SpikeWatch { cfg, done: vec![] }
    }

    /// The spikes of the last `lookback_ms` before `now_ms` (every flow counted; the
    /// bucket still filling left out).
    pub fn spikes(&self, store: &Store, now_ms: u64) -> Result<Vec<Spike>, TimelineError> {
        let step = self.cfg.step_ms.max(1);
        let to = now_ms - now_ms % step;
        let from = to.saturating_sub(self.cfg.lookback_ms);
        let t = crate::timeline::build(
            store,
            None,
            &[],
            &TimelineRequest {
                range: TimeRange {
                    from_ms: from,
                    to_ms: to.saturating_sub(1),
                },
                step_ms: step,
                filter: Expr::All,
                max_items: 0,
            },
        )?;
        Ok(find(&t.volume.bytes, from, step, &self.cfg.options))
    }

    /// One look: every spike with its context behind it, not yet handed to a plugin, run.
    pub fn look(
        &mut self,
        store: &Store,
        runner: &dyn PluginRunner,
        now_ms: u64,
    ) -> Result<Vec<Outcome>, TimelineError> {
        let mut out = vec![];
        let horizon = now_ms.saturating_sub(self.cfg.lookback_ms + 300_000);
        self.done.retain(|(_, _, to)| *to >= horizon);
        let step = self.cfg.step_ms.max(1);
        let first = (now_ms - now_ms % step).saturating_sub(self.cfg.lookback_ms);
        for s in self.spikes(store, now_ms)? {
            // One cut by the window's start began before it: handed when it was whole, or
            // too long to be a spike.
            if s.from_ms <= first {
                continue;
            }
            let pad = context_ms(&s);
            // The quiet after it is needed too (and a step for the last flows to arrive).
            if s.to_ms + pad + self.cfg.step_ms > now_ms {
                continue;
            }
            for p in &self.cfg.plugins {
                if self
                    .done
                    .iter()
                    .any(|(q, f, t)| q == p && *f < s.to_ms && s.from_ms < *t)
                {
                    continue;
                }
                let request = json!({
                    "from_ms": s.from_ms.saturating_sub(pad),
                    "to_ms": s.to_ms + pad,
                    "events": [{
                        "time_ms": s.from_ms,
                        "source": "weir",
                        "text": s.text(),
                        "labels": {
                            "kind": match s.change { Change::Spike => "spike", Change::Gap => "gap" },
                            "spike_to_ms": s.to_ms.to_string(),
                        },
                    }],
                    "keep": true,
                    "keep_labels": {"trigger": "spike", "spike_from_ms": s.from_ms.to_string()},
                });
                match runner.run(p, &request) {
                    Ok(v) => {
                        self.done.push((p.clone(), s.from_ms, s.to_ms));
                        out.push(Outcome::Ran {
                            plugin: p.clone(),
                            spike: s.clone(),
                            annotations: v["result"]["kept"].as_u64().unwrap_or(0) as usize,
                        });
                    }
                    Err(RunError::NotFound(_)) => {
                        out.push(Outcome::NotLoaded { plugin: p.clone() })
                    }
                    // Busy: the next look tries again.
                    Err(RunError::Busy(_)) => {}
                    Err(e) => {
                        self.done.push((p.clone(), s.from_ms, s.to_ms));
                        out.push(Outcome::Failed {
                            plugin: p.clone(),
                            spike: s.clone(),
                            error: e.to_string(),
                        });
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn a_burst_is_one_spike_and_a_lull_a_gap_judged_against_the_median() {
        let o = SpikeOptions::default();
        // Background 100 KB per bucket with some wobble, a 3-bucket burst, a 3-bucket lull.
        let mut s: Vec<u64> = (0..40).map(|i| 100_000 + (i % 5) * 4_000).collect();
        s[10] = 2_000_000;
        s[11] = 5_000_000;
        s[12] = 900_000;
        s[25] = 1_000;
        s[26] = 0;
        s[27] = 5_000;
        let found = find(&s, 1_000_000, 5_000, &o);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].change, Change::Spike);
        assert_eq!(
            (found[0].from_ms, found[0].to_ms),
            (1_000_000 + 50_000, 1_000_000 + 65_000)
        );
        assert_eq!(found[0].bytes, 5_000_000);
        assert_eq!(found[1].change, Change::Gap);
        assert_eq!(
            (found[1].from_ms, found[1].to_ms),
            (1_000_000 + 125_000, 1_000_000 + 140_000)
        );
        assert_eq!(found[1].bytes, 0);
        assert!(
            found[0].text().starts_with("volume spike: 4"),
            "{}",
            found[0].text()
        );
        assert!(
            found[1].text().starts_with("quiet gap: 0 B"),
            "{}",
            found[1].text()
        );
    }

    #[test]
    fn wobble_small_traffic_a_single_low_bucket_and_the_last_bucket_are_not_flagged() {
        let o = SpikeOptions::default();
        // Twice the median is not three times it.
        let mut s: Vec<u64> = vec![100_000; 30];
        s[5] = 250_000;
        // One low bucket is not a gap; a low last bucket is still filling.
        s[12] = 0;
        s[29] = 0;
        s[28] = 0;
        assert_eq!(find(&s, 0, 1_000, &o), vec![]);
        // An idle series (pings) with a small rise stays under min_bytes.
        let mut idle: Vec<u64> = vec![400; 30];
        idle[7] = 40_000;
        assert_eq!(find(&idle, 0, 1_000, &o), vec![]);
        // ...and with a real burst is a spike; idle series have no gaps.
        idle[8] = 30_000_000;
        idle[20] = 0;
        idle[21] = 0;
        let f = find(&idle, 0, 1_000, &o);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!((f[0].from_ms, f[0].to_ms), (8_000, 9_000));
        // Too few buckets: nothing.
        assert_eq!(find(&idle[..5], 0, 1_000, &o), vec![]);
    }

    #[test]
    fn the_context_is_two_lengths_each_side_within_bounds() {
        let s = |ms: u64| Spike {
            change: Change::Spike,
            from_ms: 0,
            to_ms: ms,
            bytes: 0,
            median: 0,
            step_ms: 1_000,
        };
        assert_eq!(context_ms(&s(1_000)), 15_000);
        assert_eq!(context_ms(&s(10_000)), 20_000);
        assert_eq!(context_ms(&s(600_000)), 300_000);
    }

    /// Answers every run with one annotation, kept when the run asks (the host's keeping is
    /// the e2e test's, with the real what-changed); this checks the watch's bookkeeping.
    struct Counting(std::sync::Mutex<Vec<Value>>);

    impl PluginRunner for Counting {
        fn run(&self, name: &str, request: &Value) -> Result<Value, RunError> {
            if name != "corr" {
                return Err(RunError::NotFound(format!("no loaded plugin {name}")));
            }
            let mut runs = self.0.lock().unwrap();
            runs.push(request.clone());
            let kept = u64::from(request["keep"] == true);
            Ok(
                json!({"result": {"kept": kept, "annotations": [{"time_ms": request["from_ms"],
                "text": "moved", "labels": {"series": "x"}, "flow_filter": null}]}}),
            )
        }

        fn summary_snapshot(&self, name: &str) -> Result<Vec<u8>, RunError> {
            Err(RunError::BadRequest(format!("{name} is no summarizer")))
        }

        fn merge_summary(&self, name: &str, _: &[u8]) -> Result<(), RunError> {
            Err(RunError::BadRequest(format!("{name} is no summarizer")))
        }
    }

    #[test]
    fn the_watch_hands_each_spike_once_after_its_context_and_has_the_annotations_kept() {
        use crate::flow::Flow;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(crate::store::StoreConfig::new(dir.path().join("flows"))).unwrap();
        let t0 = 1_700_000_000_000u64; // a multiple of the 5 s step
        // 10 minutes of 10 KB per second, and 20 s of 10 MB per second from t0 + 300 s.
        let mut flows = vec![];
        for sec in 0..600u64 {
            let mut f = Flow::empty();
            f.time_flow_start_ms = t0 + sec * 1000;
            f.time_flow_end_ms = t0 + sec * 1000 + 500;
            f.time_received = f.time_flow_end_ms;
            f.bytes = if (300..320).contains(&sec) {
                10_000_000
            } else {
                10_000
            };
            f.packets = 1;
            flows.push(f);
        }
        store.append(&flows).unwrap();
        store.flush().unwrap();
        let runner = Counting(std::sync::Mutex::new(vec![]));
        let mut w = SpikeWatch::new(SpikeWatchConfig {
            plugins: vec!["corr".into(), "absent".into()],
            ..Default::default()
        });
        let (from, to) = (t0 + 300_000, t0 + 320_000);
        // Not before its context (40 s) and a step have passed after it.
        let out = w.look(&store, &runner, to + 30_000).unwrap();
        assert_eq!(out, vec![]);
        let out = w.look(&store, &runner, to + 46_000).unwrap();
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(
            matches!(&out[0], Outcome::Ran { plugin, spike, annotations: 1 }
            if plugin == "corr" && (spike.from_ms, spike.to_ms) == (from, to)),
            "{out:?}"
        );
        assert_eq!(
            out[1],
            Outcome::NotLoaded {
                plugin: "absent".into()
            }
        );
        let req = runner.0.lock().unwrap()[0].clone();
        assert_eq!(req["from_ms"], from - 40_000);
        assert_eq!(req["to_ms"], to + 40_000);
        assert_eq!(req["events"][0]["labels"]["kind"], "spike");
        // Later looks, the window sliding past it until its start scrolls out: never again.
        for later in [60_000, 300_000, 1_150_000, 1_190_000, 1_200_000, 1_260_000] {
            let out = w.look(&store, &runner, to + later).unwrap();
            assert!(
                out.iter().all(|o| matches!(o, Outcome::NotLoaded { .. })),
                "{later}: {out:?}"
            );
        }
        assert_eq!(runner.0.lock().unwrap().len(), 1);
        // The host is asked to keep the annotations with the trigger and the spike.
        assert_eq!(req["keep"], true);
        assert_eq!(
            req["keep_labels"],
            json!({"trigger": "spike", "spike_from_ms": from.to_string()})
        );
    }
}
