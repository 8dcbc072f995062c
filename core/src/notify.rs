//! Alert evaluation and notification: every interval the enabled alert-rule plugins are run
//! over their window, their alerts go through the [`AlertStore`] lifecycle, and queued
//! notifications are delivered to the sinks (Prometheus Alertmanager's v2 API, a generic JSON
//! webhook) with retries. Firing alerts are re-sent to Alertmanager every minute, as it
//! expects from a client.

use crate::alerts::{Alert, AlertState, AlertStore, Observed};
use crate::plugins::PluginAdmin;
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

/// Parses a rule's alert list as a run returns it (`{"result": {"alerts": [...]}}`, or the
/// bare `{"alerts": [...]}`).
pub fn observed_of(result: &Value) -> Vec<Observed> {
    let alerts = if result["result"].is_object() {
        &result["result"]["alerts"]
    } else {
        &result["alerts"]
    };
    alerts
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| Observed {
            name: a["name"].as_str().unwrap_or("alert").to_string(),
            severity: a["severity"].as_str().unwrap_or("warning").to_string(),
            summary: a["summary"].as_str().unwrap_or("").to_string(),
            labels: a["labels"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect()
}

fn duration_of(entry: &Value, key: &str, default: Duration) -> Duration {
    entry["installed"]["config"][key]
        .as_str()
        .and_then(crate::query::parse_duration_ms)
        .map(Duration::from_millis)
        .unwrap_or(default)
}

/// Runs every enabled alert-rule plugin once; returns the state changes.
pub fn evaluate_all(
    plugins: &dyn PluginAdmin,
    store: &AlertStore,
    cfg: &AlertingConfig,
) -> Vec<Alert> {
    let mut changed = Vec::new();
    let list = plugins.list();
    // Entries as `GET /api/v1/plugins` lists them: installed (manifest, enabled, config) and
    // loaded (state, calls, ...).
    for entry in list.as_array().into_iter().flatten() {
        let manifest = &entry["installed"]["manifest"];
        if manifest["kind"] != "alert-rule"
            || entry["installed"]["enabled"] != true
            || entry["loaded"]["state"]["state"] != "enabled"
        {
            continue;
        }
        let Some(name) = manifest["name"].as_str() else {
            continue;
        };
        let window = duration_of(entry, "window", cfg.window);
        let for_ = duration_of(entry, "for", cfg.for_);
        let to = now_ms();
        let req = json!({"from_ms": to.saturating_sub(window.as_millis() as u64), "to_ms": to});
        match plugins.run(name, &req) {
            Ok(result) => {
                let observed = observed_of(&result);
                match store.evaluate(name, &observed, for_.as_millis() as u64, now_ms()) {
                    Ok(c) => {
                        for a in &c {
                            tracing::info!(rule = name, alert = %a.name, state = ?a.state, silenced = a.silenced, labels = ?a.labels, "alert state changed");
                        }
                        changed.extend(c);
                    }
                    Err(e) => tracing::error!(rule = name, error = %e, "alert store failed"),
                }
            }
            // A failing rule keeps its alerts as they are (no flapping to resolved).
            Err(e) => tracing::warn!(rule = name, error = %e, "alert rule failed"),
        }
    }
    changed
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

fn post(url: &str, body: &Value) -> Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    let resp = agent
        .post(url)
        .header("content-type", "application/json")
        .send(serde_json::to_vec(body).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("{url} answered {}", resp.status()))
    }
}

fn deliver(sink: &Sink, a: &Alert, generator: &str) -> Result<(), String> {
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
                tracing::warn!(sink = %n.sink, attempts = n.attempts + 1, error = %e, "notification failed, will retry");
                if let Err(e) = store.failed(seq, n, now) {
                    tracing::error!(error = %e, "cannot requeue a notification");
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
        };
        let b = alertmanager_body(&a, "http://x");
        assert_eq!(b[0]["labels"]["alertname"], "PacketDrops");
        assert_eq!(b[0]["labels"]["interface"], "eth0");
        assert_eq!(b[0]["startsAt"], "1970-01-01T00:00:02.000Z");
        assert_eq!(b[0]["endsAt"], "1970-01-01T00:00:03.000Z");
        let o = observed_of(
            &json!({"alerts": [{"name": "n", "severity": "info", "summary": "x", "labels": {"a": "b"}}]}),
        );
        assert_eq!(o[0].labels["a"], "b");
        // As the plugin runner answers: wrapped in "result".
        let w = observed_of(
            &json!({"plugin": "p", "kind": "alert-rule", "result": {"alerts": [{"name": "m"}]}}),
        );
        assert_eq!(
            (w.len(), w[0].name.as_str(), w[0].severity.as_str()),
            (1, "m", "warning")
        );
    }
}
