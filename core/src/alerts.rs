//! Alert state: what alert-rule plugins report is turned into alerts with a lifecycle
//! (pending -> firing -> resolved, with a `for` duration), deduplicated by rule, name and
//! labels, muted by silences, kept in a history, and queued for notification in a durable
//! outbox (sled), so a notification survives an agent restart until a sink took it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error("alert store: {0}")]
    Store(#[from] sled::Error),
    #[error("alert store record: {0}")]
    Codec(#[from] serde_json::Error),
    #[error("{0}")]
    BadRequest(String),
}

/// What a rule reported in one evaluation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    pub name: String,
    /// info, warning or critical.
    pub severity: String,
    pub summary: String,
    pub labels: BTreeMap<String, String>,
}

/// Where an alert is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Pending,
    Firing,
    Resolved,
}

/// An alert the engine tracks (pending or firing), or a history entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Stable identity: rule, name and labels.
    pub fingerprint: String,
    /// The alert-rule plugin that reported it.
    pub rule: String,
    pub name: String,
    pub severity: String,
    pub summary: String,
    pub labels: BTreeMap<String, String>,
    pub state: AlertState,
    /// When the rule first reported it (this time round), Unix ms.
    pub since_ms: u64,
    /// When it started firing; 0 while pending.
    pub fired_ms: u64,
    /// When it resolved; 0 while active.
    pub resolved_ms: u64,
    /// Last evaluation that reported it.
    pub seen_ms: u64,
    /// Whether a silence covered it when it changed state.
    pub silenced: bool,
}

/// A silence: alerts whose labels (and `alertname`, `rule`, `severity`) include every
/// matcher are not notified while it lasts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Silence {
    pub id: u64,
    pub matchers: BTreeMap<String, String>,
    pub starts_ms: u64,
    pub ends_ms: u64,
    pub comment: String,
}

impl Silence {
    fn covers(&self, a: &Alert, now_ms: u64) -> bool {
        now_ms >= self.starts_ms
            && now_ms < self.ends_ms
            && self.matchers.iter().all(|(k, v)| match k.as_str() {
                "alertname" => &a.name == v,
                "rule" => &a.rule == v,
                "severity" => &a.severity == v,
                _ => a.labels.get(k) == Some(v),
            })
    }
}

/// A queued notification for one sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub sink: String,
    pub alert: Alert,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// Not before this time (backoff), Unix ms.
    pub due_ms: u64,
}

/// Alert state on disk: `active` (fingerprint -> Alert), `history` (seq -> Alert),
/// `silences` (id -> Silence), `outbox` (seq -> Notification).
pub struct AlertStore {
    db: sled::Db,
    active: sled::Tree,
    history: sled::Tree,
    silences: sled::Tree,
    outbox: sled::Tree,
    /// Sinks notifications are queued for (their names).
    sinks: Vec<String>,
}

fn fingerprint(rule: &str, o: &Observed) -> String {
    let labels: Vec<String> = o.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{rule}/{}/{}", o.name, labels.join(","))
}

impl AlertStore {
    /// Opens (or creates) the alert store in `dir`.
    pub fn open(dir: &Path, sinks: Vec<String>) -> Result<Self, AlertError> {
        let db = sled::Config::new().path(dir).open()?;
        Ok(AlertStore {
            active: db.open_tree("active")?,
            history: db.open_tree("history")?,
            silences: db.open_tree("silences")?,
            outbox: db.open_tree("outbox")?,
            db,
            sinks,
        })
    }

    fn record(&self, a: &Alert) -> Result<(), AlertError> {
        let seq = self.db.generate_id()?;
        self.history
            .insert(seq.to_be_bytes(), serde_json::to_vec(a)?)?;
        Ok(())
    }

    fn notify(&self, a: &Alert, now_ms: u64) -> Result<(), AlertError> {
        for sink in &self.sinks {
            let seq = self.db.generate_id()?;
            let n = Notification {
                sink: sink.clone(),
                alert: a.clone(),
                attempts: 0,
                due_ms: now_ms,
            };
            self.outbox
                .insert(seq.to_be_bytes(), serde_json::to_vec(&n)?)?;
        }
        Ok(())
    }

    fn silenced(&self, a: &Alert, now_ms: u64) -> bool {
        self.silences().iter().any(|s| s.covers(a, now_ms))
    }

    /// Applies one evaluation of `rule`: new alerts become pending (firing at once when
    /// `for_ms` is 0), pending ones fire once they were reported for `for_ms`, and active
    /// ones the rule no longer reports resolve (pending ones are just dropped). Returns the
    /// alerts that changed state.
    pub fn evaluate(
        &self,
        rule: &str,
        observed: &[Observed],
        for_ms: u64,
        now_ms: u64,
    ) -> Result<Vec<Alert>, AlertError> {
        let mut changed = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for o in observed {
            let fp = fingerprint(rule, o);
            if !seen.insert(fp.clone()) {
                continue; // the same alert twice in one evaluation
            }
            let prev: Option<Alert> = match self.active.get(fp.as_bytes())? {
                Some(v) => Some(serde_json::from_slice(&v)?),
                None => None,
            };
            let mut a = prev.clone().unwrap_or(Alert {
                fingerprint: fp.clone(),
                rule: rule.to_string(),
                name: o.name.clone(),
                severity: o.severity.clone(),
                summary: o.summary.clone(),
                labels: o.labels.clone(),
                state: AlertState::Pending,
                since_ms: now_ms,
                fired_ms: 0,
                resolved_ms: 0,
                seen_ms: now_ms,
                silenced: false,
            });
            a.seen_ms = now_ms;
            a.severity = o.severity.clone();
            a.summary = o.summary.clone();
            let was = prev.as_ref().map(|p| p.state);
            if a.state == AlertState::Pending && now_ms.saturating_sub(a.since_ms) >= for_ms {
                a.state = AlertState::Firing;
                a.fired_ms = now_ms;
            }
            if was != Some(a.state) {
                a.silenced = self.silenced(&a, now_ms);
                self.record(&a)?;
                if a.state == AlertState::Firing && !a.silenced {
                    self.notify(&a, now_ms)?;
                }
                changed.push(a.clone());
            }
            self.active.insert(fp.as_bytes(), serde_json::to_vec(&a)?)?;
        }
        for item in self.active.iter() {
            let (k, v) = item?;
            let mut a: Alert = serde_json::from_slice(&v)?;
            if a.rule != rule || seen.contains(&a.fingerprint) {
                continue;
            }
            self.active.remove(k)?;
            if a.state == AlertState::Firing {
                a.state = AlertState::Resolved;
                a.resolved_ms = now_ms;
                a.silenced = self.silenced(&a, now_ms);
                self.record(&a)?;
                if !a.silenced {
                    self.notify(&a, now_ms)?;
                }
                changed.push(a);
            }
        }
        self.db.flush()?;
        Ok(changed)
    }

    /// Alerts pending or firing.
    pub fn active(&self) -> Vec<Alert> {
        self.active
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect()
    }

    /// State changes, newest first.
    pub fn history(&self, limit: usize) -> Vec<Alert> {
        self.history
            .iter()
            .rev()
            .filter_map(Result::ok)
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .take(limit)
            .collect()
    }

    /// Silences, expired ones included until removed.
    pub fn silences(&self) -> Vec<Silence> {
        self.silences
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect()
    }

    /// Adds a silence; at least one matcher and a positive duration are required.
    pub fn silence(
        &self,
        matchers: BTreeMap<String, String>,
        starts_ms: u64,
        ends_ms: u64,
        comment: String,
    ) -> Result<Silence, AlertError> {
        if matchers.is_empty() {
            return Err(AlertError::BadRequest(
                "a silence needs at least one matcher (label=value)".into(),
            ));
        }
        if ends_ms <= starts_ms {
            return Err(AlertError::BadRequest(
                "a silence must end after it starts".into(),
            ));
        }
        let s = Silence {
            id: self.db.generate_id()?,
            matchers,
            starts_ms,
            ends_ms,
            comment,
        };
        self.silences
            .insert(s.id.to_be_bytes(), serde_json::to_vec(&s)?)?;
        self.db.flush()?;
        Ok(s)
    }

    /// Removes a silence; false when there was none with that id.
    pub fn unsilence(&self, id: u64) -> Result<bool, AlertError> {
        let had = self.silences.remove(id.to_be_bytes())?.is_some();
        self.db.flush()?;
        Ok(had)
    }

    /// Notifications due for delivery, oldest first, with their outbox keys.
    pub fn due(&self, now_ms: u64, max: usize) -> Vec<(u64, Notification)> {
        self.outbox
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(k, v)| {
                let seq = u64::from_be_bytes(k.as_ref().try_into().ok()?);
                let n: Notification = serde_json::from_slice(&v).ok()?;
                (n.due_ms <= now_ms).then_some((seq, n))
            })
            .take(max)
            .collect()
    }

    /// A delivery succeeded: the notification leaves the outbox.
    pub fn delivered(&self, seq: u64) -> Result<(), AlertError> {
        self.outbox.remove(seq.to_be_bytes())?;
        self.db.flush()?;
        Ok(())
    }

    /// A delivery failed: retried with exponential backoff (1 s doubling, at most 5 min).
    pub fn failed(&self, seq: u64, mut n: Notification, now_ms: u64) -> Result<(), AlertError> {
        n.attempts += 1;
        let backoff = 1000u64 << n.attempts.min(9);
        n.due_ms = now_ms + backoff.min(300_000);
        self.outbox
            .insert(seq.to_be_bytes(), serde_json::to_vec(&n)?)?;
        self.db.flush()?;
        Ok(())
    }

    /// Notifications waiting for delivery.
    pub fn queued(&self) -> usize {
        self.outbox.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(host: &str) -> Observed {
        Observed {
            name: "drops".into(),
            severity: "warning".into(),
            summary: format!("drops on {host}"),
            labels: BTreeMap::from([("host".to_string(), host.to_string())]),
        }
    }

    #[test]
    fn pending_firing_resolved_with_for_and_dedup() {
        let dir = tempfile::tempdir().unwrap();
        let s = AlertStore::open(dir.path(), vec!["webhook".into()]).unwrap();
        // Reported twice in one evaluation: one alert.
        let c = s
            .evaluate("r", &[obs("a"), obs("a")], 60_000, 1_000)
            .unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].state, AlertState::Pending);
        assert_eq!(s.queued(), 0, "pending alerts are not notified");
        let c = s.evaluate("r", &[obs("a")], 60_000, 30_000).unwrap();
        assert!(c.is_empty(), "still pending");
        let c = s.evaluate("r", &[obs("a")], 60_000, 61_000).unwrap();
        assert_eq!(c[0].state, AlertState::Firing);
        assert_eq!(s.queued(), 1);
        let c = s.evaluate("r", &[], 60_000, 90_000).unwrap();
        assert_eq!(c[0].state, AlertState::Resolved);
        assert_eq!(s.queued(), 2);
        assert!(s.active().is_empty());
        let h = s.history(10);
        let states: Vec<AlertState> = h.iter().map(|a| a.state).collect();
        assert_eq!(
            states,
            vec![
                AlertState::Resolved,
                AlertState::Firing,
                AlertState::Pending
            ]
        );
        // Another rule's alerts are left alone.
        s.evaluate("other", &[obs("b")], 0, 100_000).unwrap();
        s.evaluate("r", &[], 0, 101_000).unwrap();
        assert_eq!(s.active().len(), 1);
    }

    #[test]
    fn silences_mute_notifications_and_the_outbox_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = AlertStore::open(dir.path(), vec!["am".into(), "hook".into()]).unwrap();
            let m = BTreeMap::from([("host".to_string(), "a".to_string())]);
            s.silence(m, 0, 50_000, "maintenance".into()).unwrap();
            let c = s.evaluate("r", &[obs("a"), obs("b")], 0, 1_000).unwrap();
            assert_eq!(c.len(), 2);
            assert!(c.iter().any(|a| a.silenced));
            assert_eq!(s.queued(), 2, "only host b, for both sinks");
            assert!(s.silence(BTreeMap::new(), 0, 1, String::new()).is_err());
        }
        let s = AlertStore::open(dir.path(), vec!["am".into(), "hook".into()]).unwrap();
        let due = s.due(2_000, 10);
        assert_eq!(due.len(), 2);
        let (seq, n) = due[0].clone();
        s.failed(seq, n, 2_000).unwrap();
        assert_eq!(
            s.due(2_500, 10).len(),
            1,
            "the failed one waits for its backoff"
        );
        assert_eq!(s.due(10_000, 10).len(), 2);
        s.delivered(seq).unwrap();
        assert_eq!(s.queued(), 1);
    }
}
