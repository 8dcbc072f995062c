//! Bundled correlator "what changed": for the flows of a window, the Prometheus series that
//! moved with them.
//!
//! The flows' bytes are summed per step (by each flow's end, scaled by its sampling). Each
//! configured PromQL query is asked of Prometheus over the same window and step
//! (`/api/v1/query_range`, through the `outbound-http` capability); a counter (a series whose
//! values never fall, or named `_total`, `_count`, `_sum`, `_bucket`) is read as its increase
//! per step, a gauge as its value at each step's end. A series moved with the flows when the
//! Pearson correlation of the two, over the steps both have (the series shifted by up to
//! `max_lag` steps), is at least `threshold` in absolute value; a series that never changed in
//! the window did not move. Series are read at whole seconds inside each step (as many as fit
//! in Prometheus' 11,000 points a series), so a metric half a step late is shifted by half a
//! step rather than judged against steps it straddles. Each is an
//! annotation at the step where it strayed furthest from its mean, with the correlation and
//! the series named. The events given to the run that fall in the window are annotations too.
//!
//! Config:
//! - `prometheus`: the server's base URL (required), e.g. `http://127.0.0.1:9090`; grant
//!   `outbound-http` for its `host:port`;
//! - `queries`: PromQL selectors or expressions, separated by `;` (default `{__name__=~".+"}`,
//!   every series);
//! - `step`: seconds per step (default: the window over 120, at least 1);
//! - `threshold`: the least |r| reported (default 0.7); `top`: most series reported (default 10);
//! - `min_points`: the least steps a series needs (default 5);
//! - `max_lag`: how many steps a series may trail the flows (default 2: scrapes and ingest
//!   make metrics late); the best lag is kept and reported;
//! - `filter`: the flow filter put on the annotations (what the window's flows were).

use serde_json::Value;
use weir_plugin_sdk::correlator::{
    self, Annotation, Batch, Event, FlowBatch, Guest, PluginError, config, log, outbound_http,
};

struct Plugin;

fn cfg(key: &str) -> Option<String> {
    config::get(key).filter(|v| !v.trim().is_empty())
}

fn num(key: &str, default: f64) -> Result<f64, PluginError> {
    match cfg(key) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| PluginError::InvalidInput(format!("config {key}: '{v}' is not a number"))),
    }
}

/// Percent-encodes a query parameter value.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One series as Prometheus returned it.
pub struct Series {
    /// `name{label="value",...}`.
    pub name: String,
    /// Values at `from + k * step / sub` (None where Prometheus had none): `sub` readings a
    /// step.
    pub values: Vec<Option<f64>>,
}

/// A series judged against the flows.
#[derive(Debug, Clone, PartialEq)]
pub struct Moved {
    pub name: String,
    pub r: f64,
    pub counter: bool,
    /// The step where it strayed furthest from its mean.
    pub step: usize,
    /// How many readings (steps over `sub`) behind the flows it moved.
    pub lag: usize,
}

fn selector(metric: &serde_json::Map<String, Value>) -> String {
    let name = metric
        .get("__name__")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let labels: Vec<String> = metric
        .iter()
        .filter(|(k, _)| *k != "__name__")
        .map(|(k, v)| format!("{k}=\"{}\"", v.as_str().unwrap_or("")))
        .collect();
    if labels.is_empty() {
        name
    } else {
        format!("{name}{{{}}}", labels.join(","))
    }
}

/// A `query_range` answer to series aligned on `from_s + k * step_s`, `points` of them.
/// A series without a name (the result of an expression) is named by its query.
pub fn parse_matrix(
    body: &[u8],
    query: &str,
    from_s: f64,
    step_s: f64,
    points: usize,
) -> Result<Vec<Series>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    if v["status"] != "success" {
        return Err(format!(
            "{}: {}",
            v["errorType"].as_str().unwrap_or("error"),
            v["error"].as_str().unwrap_or("no error message")
        ));
    }
    let mut out = Vec::new();
    for s in v["data"]["result"].as_array().into_iter().flatten() {
        let mut values = vec![None; points];
        for p in s["values"].as_array().into_iter().flatten() {
            let (Some(t), Some(x)) = (
                p[0].as_f64(),
                p[1].as_str().and_then(|x| x.parse::<f64>().ok()),
            ) else {
                continue;
            };
            let k = ((t - from_s) / step_s).round();
            if k >= 0.0 && (k as usize) < points && x.is_finite() {
                values[k as usize] = Some(x);
            }
        }
        let empty = serde_json::Map::new();
        let name = selector(s["metric"].as_object().unwrap_or(&empty));
        out.push(Series {
            name: if name.is_empty() {
                query.to_string()
            } else {
                name
            },
            values,
        });
    }
    Ok(out)
}

fn pearson(a: &[f64], b: &[f64]) -> Option<f64> {
    let n = a.len() as f64;
    if a.len() < 2 {
        return None;
    }
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    (saa > 0.0 && sbb > 0.0).then(|| sab / (saa * sbb).sqrt())
}

/// The most points Prometheus answers for one series of a `query_range` (11,000), with room.
pub const MAX_POINTS: usize = 10_000;

/// Readings a step: the most whole seconds dividing `step_s` with the window's readings
/// (`steps` of them plus `max_lag` late) within [`MAX_POINTS`] (1 when even whole steps do
/// not fit: the caller refuses that window).
pub fn readings_per_step(step_s: u64, steps: usize, max_lag: usize) -> usize {
    let room = MAX_POINTS / (steps + max_lag + 1).max(1);
    (1..=step_s.min(room as u64).max(1))
        .rev()
        .find(|d| step_s.is_multiple_of(*d))
        .unwrap_or(1) as usize
}

/// Judges one series against the flows' bytes per step (`flows[k]` covers step k, between
/// readings `k * sub` and `(k + 1) * sub`); lags are tried reading by reading, up to
/// `max_lag` steps.
pub fn judge(
    s: &Series,
    flows: &[f64],
    threshold: f64,
    min_points: usize,
    max_lag: usize,
    sub: usize,
) -> Option<Moved> {
    let sub = sub.max(1);
    let known: Vec<f64> = s.values.iter().flatten().copied().collect();
    let never_falls = known.windows(2).all(|w| w[1] >= w[0]);
    let base = s.name.split('{').next().unwrap_or("");
    let counter = ["_total", "_count", "_sum", "_bucket"]
        .iter()
        .any(|x| base.ends_with(x))
        || (never_falls && known.len() >= 2);
    // The series' reading for step k, `lag` readings late: a counter's increase over it, a
    // gauge's value at its end.
    let at = |k: usize, lag: usize| -> Option<f64> {
        let (a, b) = (k * sub + lag, (k + 1) * sub + lag);
        if counter {
            match (
                s.values.get(a).copied().flatten(),
                s.values.get(b).copied().flatten(),
            ) {
                // A reset counts from zero.
                (Some(a), Some(b)) => Some(if b >= a { b - a } else { b }),
                _ => None,
            }
        } else {
            s.values.get(b).copied().flatten()
        }
    };
    let mut best: Option<Moved> = None;
    // A metric shows traffic up to `max_lag` steps late (scrape interval, ingest delay).
    for lag in 0..=max_lag * sub {
        let (mut xs, mut fs, mut steps) = (vec![], vec![], vec![]);
        for (k, f) in flows.iter().enumerate() {
            if let Some(x) = at(k, lag) {
                xs.push(x);
                fs.push(*f);
                steps.push(k + lag / sub);
            }
        }
        if xs.len() < min_points {
            continue;
        }
        let Some(r) = pearson(&fs, &xs) else {
            continue;
        };
        if r.abs() < threshold || best.as_ref().is_some_and(|b| b.r.abs() >= r.abs()) {
            continue;
        }
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let far = xs
            .iter()
            .enumerate()
            .max_by(|a, b| (a.1 - mean).abs().total_cmp(&(b.1 - mean).abs()))
            .map(|(i, _)| steps[i])
            .unwrap_or(0);
        best = Some(Moved {
            name: s.name.clone(),
            r,
            counter,
            step: far,
            lag,
        });
    }
    best
}

/// Prometheus' own clock (`time()`), whole seconds; None when it does not say.
fn prometheus_now(base: &str) -> Option<u64> {
    let url = format!("{}/api/v1/query?query=time()", base.trim_end_matches('/'));
    let resp = outbound_http::send(
        &outbound_http::Request {
            method: "GET".into(),
            url,
            headers: vec![("accept".into(), "application/json".into())],
            body: vec![],
        },
        10_000,
    )
    .ok()?;
    let v: Value = serde_json::from_slice(&resp.body).ok()?;
    let t: f64 = v["data"]["result"][1].as_str()?.parse().ok()?;
    (t.is_finite() && t >= 0.0).then_some(t as u64)
}

fn query_range(
    base: &str,
    q: &str,
    from_s: u64,
    to_s: u64,
    step_s: u64,
) -> Result<Vec<u8>, PluginError> {
    let url = format!(
        "{}/api/v1/query_range?query={}&start={from_s}&end={to_s}&step={step_s}",
        base.trim_end_matches('/'),
        encode(q)
    );
    let resp = outbound_http::send(
        &outbound_http::Request {
            method: "GET".into(),
            url: url.clone(),
            headers: vec![("accept".into(), "application/json".into())],
            body: vec![],
        },
        10_000,
    )
    .map_err(|e| PluginError::Failed(format!("asking Prometheus ({url}): {e}")))?;
    if resp.status != 200 && resp.status != 400 && resp.status != 422 {
        return Err(PluginError::Failed(format!(
            "Prometheus answered {} for {q}: {}",
            resp.status,
            String::from_utf8_lossy(&resp.body)
                .chars()
                .take(300)
                .collect::<String>()
        )));
    }
    Ok(resp.body)
}

impl Guest for Plugin {
    fn correlate(batch: &FlowBatch, events: Vec<Event>) -> Result<Vec<Annotation>, PluginError> {
        let b = Batch::new(batch);
        if b.is_empty() {
            return Ok(vec![]);
        }
        let base = cfg("prometheus").ok_or_else(|| {
            PluginError::InvalidInput(
                "config prometheus is not set: the server's base URL, e.g. http://127.0.0.1:9090"
                    .into(),
            )
        })?;
        let threshold = num("threshold", 0.7)?;
        let top = num("top", 10.0)? as usize;
        let min_points = num("min_points", 5.0)? as usize;
        let max_lag = num("max_lag", 2.0)?.clamp(0.0, 1000.0) as usize;
        let filter = cfg("filter");
        let ends = b.time_flow_end_ms();
        let from_ms = b.time_flow_start_ms().iter().copied().min().unwrap_or(0);
        let to_ms = ends.iter().copied().max().unwrap_or(from_ms);
        // Whole seconds: the window's first second to the one after its last.
        let from_s = from_ms / 1000;
        let to_s = to_ms.div_ceil(1000).max(from_s + 1);
        let step_s = match cfg("step") {
            Some(_) => num("step", 1.0)?.max(1.0) as u64,
            None => ((to_s - from_s) / 120).max(1),
        };
        let steps = ((to_s - from_s).div_ceil(step_s)) as usize;
        let mut flows = vec![0f64; steps];
        for (i, end) in ends.iter().enumerate() {
            let k = ((end / 1000).saturating_sub(from_s) / step_s) as usize;
            if let Some(f) = flows.get_mut(k.min(steps - 1)) {
                *f += (b.bytes()[i] * b.scale(i)) as f64;
            }
        }
        // A metric cannot trail the flows by more than the window.
        let max_lag = max_lag.min(steps);
        if steps + max_lag + 1 > MAX_POINTS {
            return Err(PluginError::InvalidInput(format!(
                "{steps} steps of {step_s} s (plus max_lag {max_lag}) are more than the \
                 {MAX_POINTS} points Prometheus answers for a series: raise step"
            )));
        }
        let sub = readings_per_step(step_s, steps, max_lag);
        let read_s = step_s / sub as u64;
        let queries = cfg("queries").unwrap_or_else(|| "{__name__=~\".+\"}".into());
        let mut moved = vec![];
        let mut series_seen = 0;
        // Not past Prometheus' now: it repeats a series' last sample for minutes ahead,
        // which would read as a flat counter where there is no data yet.
        let now_s = prometheus_now(&base).unwrap_or(u64::MAX);
        for q in queries.split(';').map(str::trim).filter(|q| !q.is_empty()) {
            let readings = (steps + max_lag) * sub + 1;
            let last = ((readings as u64 - 1) * read_s)
                .min(now_s.saturating_sub(from_s) / read_s * read_s);
            let to = from_s + last;
            let body = query_range(&base, q, from_s, to, read_s)?;
            let list = parse_matrix(&body, q, from_s as f64, read_s as f64, readings)
                .map_err(|e| PluginError::InvalidInput(format!("query {q}: {e}")))?;
            series_seen += list.len();
            moved.extend(
                list.iter()
                    .filter_map(|s| judge(s, &flows, threshold, min_points, max_lag, sub)),
            );
        }
        moved.sort_by(|a, b| b.r.abs().total_cmp(&a.r.abs()).then(a.name.cmp(&b.name)));
        moved.truncate(top);
        log::log(
            log::Level::Info,
            &format!(
                "{} of {series_seen} series moved with the flows over {steps} steps of {step_s} s",
                moved.len()
            ),
        );
        let mut out: Vec<Annotation> = moved
            .into_iter()
            .map(|m| Annotation {
                time_ms: (from_s + (m.step as u64 + 1) * step_s) * 1000,
                text: format!(
                    "{} moved with the flows (r = {:.2}{}{})",
                    m.name,
                    m.r,
                    if m.counter {
                        ", its increase per step"
                    } else {
                        ""
                    },
                    match m.lag {
                        0 => String::new(),
                        l => format!(", {} s behind", l as u64 * read_s),
                    }
                ),
                labels: vec![
                    ("series".into(), m.name.clone()),
                    ("r".into(), format!("{:.3}", m.r)),
                    (
                        "kind".into(),
                        if m.counter { "counter" } else { "gauge" }.into(),
                    ),
                    ("lag_s".into(), (m.lag as u64 * read_s).to_string()),
                    ("correlator".into(), "what-changed".into()),
                ],
                flow_filter: filter.clone(),
            })
            .collect();
        out.extend(
            events
                .into_iter()
                .filter(|e| {
                    e.time_ms + step_s * 1000 >= from_ms && e.time_ms <= to_ms + step_s * 1000
                })
                .map(|e| Annotation {
                    time_ms: e.time_ms,
                    text: format!("{} near the change: {}", e.source, e.text),
                    labels: e.labels,
                    flow_filter: filter.clone(),
                }),
        );
        Ok(out)
    }
}

correlator::export!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, v: &[f64]) -> Series {
        Series {
            name: name.into(),
            values: v.iter().map(|x| Some(*x)).collect(),
        }
    }

    #[test]
    fn counters_that_grow_with_the_flows_move_and_flat_or_unrelated_series_do_not() {
        let flows = [0.0, 0.0, 100.0, 900.0, 1000.0, 50.0, 0.0, 0.0];
        // Counter: its increases follow the flows.
        let c = series(
            "rx_bytes_total",
            &[
                10.0, 10.0, 10.0, 120.0, 1000.0, 2010.0, 2060.0, 2060.0, 2060.0,
            ],
        );
        let m = judge(&c, &flows, 0.7, 5, 0, 1).expect("moved");
        assert!(m.counter && m.r > 0.99, "{m:?}");
        assert_eq!(m.step, 4);
        // Flat gauge: never changed, never moved.
        assert!(judge(&series("config_version", &[3.0; 9]), &flows, 0.7, 5, 2, 1).is_none());
        // A gauge going its own way.
        let g = series(
            "temperature",
            &[5.0, 6.0, 5.0, 4.0, 5.0, 6.0, 5.0, 4.0, 6.0],
        );
        assert!(judge(&g, &flows, 0.7, 5, 2, 1).is_none());
        // A gauge that drops while traffic rises moves too (negatively).
        let q = series(
            "free_buffers",
            &[100.0, 100.0, 100.0, 90.0, 10.0, 0.0, 95.0, 100.0, 100.0],
        );
        assert!(judge(&q, &flows, 0.7, 5, 0, 1).expect("moved").r < -0.9);
        // Too few points.
        assert!(judge(&series("x_total", &[1.0, 2.0]), &flows, 0.7, 5, 2, 1).is_none());
    }

    #[test]
    fn a_series_a_step_late_is_found_at_its_lag() {
        let flows = [0.0, 0.0, 100.0, 900.0, 1000.0, 50.0, 0.0, 0.0];
        // The same increases as the flows, one step later.
        let c = series(
            "scraped_bytes_total",
            &[0.0, 0.0, 0.0, 0.0, 100.0, 1000.0, 2000.0, 2050.0, 2050.0],
        );
        assert!(judge(&c, &flows, 0.95, 5, 0, 1).is_none());
        let m = judge(&c, &flows, 0.95, 5, 2, 1).expect("moved at lag 1");
        assert_eq!(m.lag, 1);
        assert!(m.r > 0.99, "{m:?}");
    }

    #[test]
    fn a_series_half_a_step_late_is_read_at_whole_seconds_and_found_at_its_lag() {
        // 2 s steps; the counter takes each step's bytes evenly over its two seconds, one
        // second (half a step) after the flows.
        let flows = [0.0, 0.0, 100.0, 900.0, 1000.0, 50.0, 0.0, 0.0, 0.0, 0.0];
        let mut per_second = vec![0.0];
        per_second.extend(flows.iter().flat_map(|f| [f / 2.0, f / 2.0]));
        per_second.extend([0.0; 4]);
        let mut total = 0.0;
        let readings: Vec<f64> = std::iter::once(0.0)
            .chain(per_second.iter().map(|x| {
                total += x;
                total
            }))
            .collect();
        let fine = series("late_bytes_total", &readings);
        let m = judge(&fine, &flows, 0.5, 5, 2, 2).expect("moved");
        assert_eq!(m.lag, 1, "one reading (1 s) late: {m:?}");
        assert!(m.r > 0.99, "{m:?}");
        // Read only at whole steps, the same counter straddles them and correlates less.
        let coarse = series(
            "late_bytes_total",
            &readings.iter().step_by(2).copied().collect::<Vec<_>>(),
        );
        let c = judge(&coarse, &flows, 0.5, 5, 2, 1).expect("moved");
        assert!(c.r < m.r - 0.05, "whole steps {c:?}, seconds {m:?}");
        // Readings a step: whole seconds within Prometheus' points.
        assert_eq!(readings_per_step(2, 10, 2), 2);
        assert_eq!(readings_per_step(1, 10, 2), 1);
        assert_eq!(readings_per_step(720, 120, 2), 80);
        assert!((120 + 2) * readings_per_step(720, 120, 2) < 11_000);
        assert_eq!(readings_per_step(7, 5000, 2), 1);
    }

    #[test]
    fn matrices_align_on_the_step_and_errors_are_named() {
        let body = br#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"__name__":"up","job":"weir"},"values":[[100,"1"],[102,"1"],[103,"NaN"]]}]}}"#;
        let s = parse_matrix(body, "up", 100.0, 1.0, 4).unwrap();
        assert_eq!(s[0].name, "up{job=\"weir\"}");
        assert_eq!(s[0].values, vec![Some(1.0), None, Some(1.0), None]);
        let e = parse_matrix(
            br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#,
            "x",
            0.0,
            1.0,
            1,
        )
        .err()
        .unwrap();
        assert_eq!(e, "bad_data: parse error");
        assert_eq!(encode("{a=~\".+\"}"), "%7Ba%3D~%22.%2B%22%7D");
        let body =
            br#"{"status":"success","data":{"result":[{"metric":{},"values":[[100,"5"]]}]}}"#;
        assert_eq!(
            parse_matrix(body, "sum(x)", 100.0, 1.0, 1).unwrap()[0].name,
            "sum(x)"
        );
    }
}
