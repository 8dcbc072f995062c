//! Alert evaluation and notification: every interval the enabled alert-rule plugins are run
//! over their window, their alerts go through the [`AlertStore`] lifecycle, and queued
//! notifications are delivered to the sinks (Prometheus Alertmanager's v2 API, a generic JSON
//! webhook) with retries. Firing alerts are re-sent to Alertmanager every minute, as it
//! expects from a client.

use crate::alerts::{Alert, AlertState, AlertStore, Observed};
use crate::plugins::{PluginAdmin, RuleEvaluator};
use crate::query::format_ms;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Where notifications go.
#[derive(Debug, Clone)]
pub enum Sink {
    /// Base URL of an Alertmanager (`http://127.0.0.1:9093`).
    Alertmanager(String),
    /// A URL that gets one JSON document per notification.
    Webhook(String),
}

impl Sink {
    /// The name notifications are queued under.
    pub fn name(&self) -> String {
        match self {
            Sink::Alertmanager(u) => format!("alertmanager:{u}"),
            Sink::Webhook(u) => format!("webhook:{u}"),
        }
    }
}

/// Alerting settings.
#[derive(Debug, Clone)]
pub struct AlertingConfig {
    /// How often rules are evaluated.
    pub interval: Duration,
    /// Default window a rule looks at (a rule's `window` config overrides it).
    pub window: Duration,
    /// Default `for` (a rule's `for` config overrides it).
    pub for_: Duration,
    pub sinks: Vec<Sink>,
    /// Link put in notifications (the agent's UI).
    pub generator_url: String,
}

fn now_ms() -> u64 {
    crate::query::now_ms()
}

/// Rules evaluated at once (each a worker thread); rules reach the store through the host's
/// few query workers, so more would only wait there.
pub const MAX_PARALLEL_RULES: usize = 4;

/// A rule's `window` or `for` config (a bare `0` allowed), or the default; a value that does
/// not parse is an error naming the key.
fn duration_of(
    config: &std::collections::BTreeMap<String, String>,
    key: &str,
    default: Duration,
) -> Result<Duration, String> {
    match config.get(key) {
        None => Ok(default),
        Some(raw) if raw.trim() == "0" => Ok(Duration::ZERO),
        Some(raw) => crate::query::parse_duration_ms(raw.trim())
            .map(Duration::from_millis)
            .ok_or_else(|| {
                format!("config {key}: expected a duration such as 30s, 5m or 1h, got {raw:?}")
            }),
    }
}

/// Runs every enabled alert-rule plugin once; returns the state changes. Alerts of rules
/// that were removed or disabled resolve; a rule that fails keeps its alerts as they are (no
/// flapping to resolved) and its error is kept for the alerts API.
pub fn evaluate_all(
    plugins: &dyn RuleEvaluator,
    store: &AlertStore,
    cfg: &AlertingConfig,
) -> Vec<Alert> {
    let mut changed = Vec::new();
    let mut installed = std::collections::BTreeSet::new();
    // (rule, window, for) of the rules that can run now.
    let mut ready = Vec::new();
    for rule in plugins.alert_rules() {
        let name = rule.name.as_str();
        installed.insert(rule.name.clone());
        if let Some(why) = rule.unavailable {
            store.set_rule_error(name, Some(why));
            continue;
        }
        let durations = duration_of(&rule.config, "window", cfg.window)
            .and_then(|w| Ok((w, duration_of(&rule.config, "for", cfg.for_)?)));
        match durations {
            Ok((window, for_)) => ready.push((rule.name, window, for_)),
            Err(e) => {
                tracing::warn!(rule = name, error = %e, "alert rule skipped");
                store.set_rule_error(name, Some(e));
            }
        }
    }
    // Rules side by side on a few workers, each rule's alerts applied as soon as it answers:
    // a rule that runs to its deadline holds one worker, not the other rules. A rule that
    // panics is a failed evaluation, never a stuck loop.
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..ready.len().min(MAX_PARALLEL_RULES) {
            let (tx, ready, next) = (tx.clone(), &ready, &next);
            scope.spawn(move || {
                while let Some((name, window, for_)) =
                    ready.get(next.fetch_add(1, Ordering::SeqCst))
                {
                    let to = now_ms();
                    let from = to.saturating_sub(window.as_millis() as u64);
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        plugins.evaluate_rule(name, from, to)
                    }))
                    .unwrap_or_else(|_| {
                        Err(crate::plugins::RunError::Failed(format!(
                            "evaluating rule {name} panicked in the host"
                        )))
                    });
                    if tx.send((name, *for_, result)).is_err() {
                        return;
                    }
                }
            });
        }
        // Every worker holds a sender; when all are done, the loop ends.
        drop(tx);
        for (name, for_, result) in rx {
            match result {
                Ok(observed) => {
                    store.set_rule_error(name, None);
                    changed.extend(apply(store, name, &observed, for_.as_millis() as u64));
                }
                Err(e) => {
                    tracing::warn!(rule = %name, error = %e, "alert rule failed");
                    store.set_rule_error(name, Some(e.to_string()));
                }
            }
        }
    });
    // Rules removed or disabled: nothing will report their alerts again.
    for rule in store.rules() {
        if !installed.contains(&rule) {
            tracing::info!(rule = %rule, "alerts of a removed or disabled rule resolved");
            store.set_rule_error(&rule, None);
            changed.extend(apply(store, &rule, &[], 0));
        }
    }
    let now = now_ms();
    if let Err(e) = store.reconcile_silences(now) {
        tracing::error!(error = %e, "alert store failed applying silences");
    }
    match store.prune(now) {
        Ok((0, 0)) => {}
        Ok((silences, history)) => {
            tracing::info!(
                silences,
                history,
                "ended silences and old alert history pruned"
            )
        }
        Err(e) => tracing::error!(error = %e, "alert store failed pruning"),
    }
    changed
}

/// One rule's evaluation into the store; returns the state changes, logged.
fn apply(store: &AlertStore, rule: &str, observed: &[Observed], for_ms: u64) -> Vec<Alert> {
    match store.evaluate(rule, observed, for_ms, now_ms()) {
        Ok(c) => {
            for a in &c {
                tracing::info!(rule, alert = %a.name, state = ?a.state, silenced = a.silenced, labels = ?a.labels, "alert state changed");
            }
            c
        }
        Err(e) => {
            tracing::error!(rule, error = %e, "alert store failed");
            Vec::new()
        }
    }
}

fn alertmanager_body(a: &Alert, generator: &str) -> Value {
    let mut labels = serde_json::Map::new();
    for (k, v) in &a.labels {
        labels.insert(k.clone(), Value::from(v.clone()));
    }
    labels.insert("alertname".into(), Value::from(a.name.clone()));
    labels.insert("severity".into(), Value::from(a.severity.clone()));
    labels.insert("weir_rule".into(), Value::from(a.rule.clone()));
    let mut alert = json!({
        "labels": labels,
        "annotations": {"summary": a.summary},
        "startsAt": format_ms(if a.fired_ms > 0 { a.fired_ms } else { a.since_ms }),
        "generatorURL": generator,
    });
    if a.state == AlertState::Resolved {
        alert["endsAt"] = Value::from(format_ms(a.resolved_ms));
    }
    json!([alert])
}

/// Why a delivery failed.
#[derive(Debug)]
struct DeliveryError {
    /// The sink answered that it will not take it (4xx other than 408 and 429).
    refused: bool,
    message: String,
}

impl std::fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn unreachable(e: impl std::fmt::Display) -> DeliveryError {
    DeliveryError {
        refused: false,
        message: e.to_string(),
    }
}

fn post(url: &str, body: &Value) -> Result<(), DeliveryError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    let resp = agent
        .post(url)
        .header("content-type", "application/json")
        .send(serde_json::to_vec(body).map_err(unreachable)?)
        .map_err(unreachable)?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let code = status.as_u16();
    let detail = resp
        .into_body()
        .read_to_string()
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect::<String>();
    Err(DeliveryError {
        refused: (400..500).contains(&code) && code != 408 && code != 429,
        message: format!("{url} answered {status}: {}", detail.trim()),
    })
}

fn deliver(sink: &Sink, a: &Alert, generator: &str) -> Result<(), DeliveryError> {
    match sink {
        Sink::Alertmanager(base) => post(
            &format!("{}/api/v2/alerts", base.trim_end_matches('/')),
            &alertmanager_body(a, generator),
        ),
        Sink::Webhook(url) => post(
            url,
            &json!({
                "version": "1",
                "status": match a.state { AlertState::Resolved => "resolved", AlertState::Firing => "firing", AlertState::Pending => "pending" },
                "alert": a,
                "generatorURL": generator,
            }),
        ),
    }
}

/// Delivers what is due in the outbox; failures wait for their backoff.
pub fn deliver_due(store: &AlertStore, cfg: &AlertingConfig) {
    let now = now_ms();
    for (seq, n) in store.due(now, 256) {
        let Some(sink) = cfg.sinks.iter().find(|s| s.name() == n.sink) else {
            // A sink no longer configured: nothing can take it.
            tracing::warn!(sink = %n.sink, "notification for a sink that is gone, dropped");
            let _ = store.delivered(seq);
            continue;
        };
        match deliver(sink, &n.alert, &cfg.generator_url) {
            Ok(()) => {
                tracing::info!(sink = %n.sink, alert = %n.alert.name, state = ?n.alert.state, "notification delivered");
                if let Err(e) = store.delivered(seq) {
                    tracing::error!(error = %e, "cannot remove a delivered notification");
                }
            }
            Err(e) => {
                let (sink, alert, attempts) =
                    (n.sink.clone(), n.alert.name.clone(), n.attempts + 1);
                match store.failed(seq, n, now, e.refused) {
                    Ok(true) => {
                        tracing::error!(sink = %sink, alert = %alert, attempts, error = %e, "notification given up")
                    }
                    Ok(false) => {
                        tracing::warn!(sink = %sink, alert = %alert, attempts, error = %e, "notification failed, will retry")
                    }
                    Err(e) => tracing::error!(error = %e, "cannot requeue a notification"),
                }
            }
        }
    }
}

/// Re-sends every firing, unsilenced alert to the Alertmanager sinks (they resolve alerts a
/// client stops sending).
pub fn refresh_alertmanagers(store: &AlertStore, cfg: &AlertingConfig) {
    for a in store.active() {
        if a.state != AlertState::Firing || a.silenced {
            continue;
        }
        for s in &cfg.sinks {
            if let Sink::Alertmanager(_) = s
                && let Err(e) = deliver(s, &a, &cfg.generator_url)
            {
                tracing::debug!(error = %e, "alertmanager refresh failed");
            }
        }
    }
}

/// Runs evaluation and delivery until `stop`: rules every interval, deliveries every second.
pub fn run(
    plugins: Arc<dyn PluginAdmin>,
    store: Arc<AlertStore>,
    cfg: AlertingConfig,
    stop: Arc<AtomicBool>,
) {
    let mut next_eval = std::time::Instant::now();
    let mut next_refresh = std::time::Instant::now() + Duration::from_secs(60);
    while !stop.load(Ordering::SeqCst) {
        let now = std::time::Instant::now();
        if now >= next_eval {
            evaluate_all(plugins.as_ref(), &store, &cfg);
            next_eval = now + cfg.interval;
        }
        deliver_due(&store, &cfg);
        if now >= next_refresh {
            refresh_alertmanagers(&store, &cfg);
            next_refresh = now + Duration::from_secs(60);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::Observed;
    use crate::plugins::{RuleInfo, RunError};

    /// Rules named `slow-*` answer after 1 s, the others at once; each reports one alert.
    struct Rules(Vec<&'static str>);

    impl RuleEvaluator for Rules {
        fn alert_rules(&self) -> Vec<RuleInfo> {
            self.0
                .iter()
                .map(|n| RuleInfo {
                    name: n.to_string(),
                    config: [("for".to_string(), "0".to_string())].into(),
                    unavailable: None,
                })
                .collect()
        }

        fn evaluate_rule(&self, name: &str, _: u64, _: u64) -> Result<Vec<Observed>, RunError> {
            if name.starts_with("slow") {
                std::thread::sleep(Duration::from_secs(1));
            }
            if name == "panics" {
                panic!("a rule adapter bug");
            }
            Ok(vec![Observed {
                name: format!("{name}-alert"),
                severity: "warning".into(),
                summary: String::new(),
                labels: Default::default(),
            }])
        }
    }

    #[test]
    fn rules_are_evaluated_side_by_side_so_a_slow_one_delays_no_other() {
        let dir = tempfile::tempdir().unwrap();
        let store = AlertStore::open(dir.path(), Vec::new()).unwrap();
        let cfg = AlertingConfig {
            interval: Duration::from_secs(10),
            window: Duration::from_secs(60),
            for_: Duration::ZERO,
            sinks: Vec::new(),
            generator_url: String::new(),
        };
        let rules = Rules(vec![
            "slow-a", "slow-b", "slow-c", "fast", "panics", "fast-2",
        ]);
        let t = std::time::Instant::now();
        let changed = evaluate_all(&rules, &store, &cfg);
        let took = t.elapsed();
        // One after another this took over 3 s; side by side, about the slowest one.
        assert!(took < Duration::from_millis(1900), "{took:?}");
        assert_eq!(changed.len(), 5, "{changed:?}");
        // The fast rules' alerts were applied first, not after the slow ones.
        let first: Vec<&str> = changed[..2].iter().map(|a| a.rule.as_str()).collect();
        assert!(
            first.contains(&"fast") && first.contains(&"fast-2"),
            "{changed:?}"
        );
        // A panicking rule is a failed evaluation with its error kept, and the loop went on.
        assert!(
            store.rule_errors()["panics"].contains("panicked"),
            "{:?}",
            store.rule_errors()
        );
    }

    #[test]
    fn alertmanager_body_has_labels_and_times() {
        let a = Alert {
            fingerprint: "r/x/".into(),
            rule: "drops".into(),
            name: "PacketDrops".into(),
            severity: "critical".into(),
            summary: "s".into(),
            labels: [("interface".to_string(), "eth0".to_string())].into(),
            state: AlertState::Resolved,
            since_ms: 1_000,
            fired_ms: 2_000,
            resolved_ms: 3_000,
            seen_ms: 2_000,
            silenced: false,
            notified: true,
        };
        let b = alertmanager_body(&a, "http://x");
        assert_eq!(b[0]["labels"]["alertname"], "PacketDrops");
        assert_eq!(b[0]["labels"]["interface"], "eth0");
        assert_eq!(b[0]["startsAt"], "1970-01-01T00:00:02.000Z");
        assert_eq!(b[0]["endsAt"], "1970-01-01T00:00:03.000Z");
    }
}
