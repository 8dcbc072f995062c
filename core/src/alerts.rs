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
    /// Whether a silence covers it (checked at each state change, and whenever silences
    /// change or an evaluation pass ends).
    pub silenced: bool,
    /// Whether its firing was notified: then its resolve is notified too, silenced or not,
    /// so a receiver that saw it fire sees it end.
    #[serde(default)]
    pub notified: bool,
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
    /// When it was queued (0 in records written before this field existed).
    #[serde(default)]
    pub queued_ms: u64,
}

/// Most history entries kept; older ones are dropped first.
pub const HISTORY_MAX: usize = 10_000;
/// A notification still undelivered this long after it was queued is given up.
pub const GIVE_UP_AFTER_MS: u64 = 24 * 3_600_000;
/// Attempts after which a notification the sink refuses outright (a 4xx) is given up.
pub const GIVE_UP_REFUSED_AFTER: u32 = 5;

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
    /// Notifications given up (too old, or refused again and again).
    given_up: std::sync::atomic::AtomicU64,
    /// The last error of each rule that failed at its last evaluation.
    rule_errors: std::sync::Mutex<BTreeMap<String, String>>,
    /// Added to every id handed out: above the silences restored from an incident (0
    /// otherwise).
    id_floor: std::sync::atomic::AtomicU64,
}

/// Where a restored store keeps its id floor (in the default tree).
const ID_FLOOR_KEY: &[u8] = b"restored-id-floor";

fn fingerprint(rule: &str, o: &Observed) -> String {
    let labels: Vec<String> = o.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{rule}/{}/{}", o.name, labels.join(","))
}

impl AlertStore {
    /// Opens (or creates) the alert store in `dir`.
    /// A store still held by a process or handle on its way out (its lock not yet released)
    /// is waited for, up to two seconds.
    pub fn open(dir: &Path, sinks: Vec<String>) -> Result<Self, AlertError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let db = loop {
            match sled::Config::new().path(dir).open() {
                // sled wraps the lock's EWOULDBLOCK as ErrorKind::Other with this text.
                Err(sled::Error::Io(e))
                    if (e.kind() == std::io::ErrorKind::WouldBlock
                        || e.to_string().contains("could not acquire lock"))
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => break other?,
            }
        };
        let id_floor = db
            .get(ID_FLOOR_KEY)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0);
        Ok(AlertStore {
            id_floor: id_floor.into(),
            active: db.open_tree("active")?,
            history: db.open_tree("history")?,
            silences: db.open_tree("silences")?,
            outbox: db.open_tree("outbox")?,
            db,
            sinks,
            given_up: Default::default(),
            rule_errors: Default::default(),
        })
    }

    /// Records how a rule's last evaluation went (`None`: fine).
    pub fn set_rule_error(&self, rule: &str, error: Option<String>) {
        let mut m = self.rule_errors.lock().unwrap_or_else(|p| p.into_inner());
        match error {
            Some(e) => {
                m.insert(rule.to_string(), e);
            }
            None => {
                m.remove(rule);
            }
        }
    }

    /// Rules whose last evaluation failed, with the error.
    pub fn rule_errors(&self) -> BTreeMap<String, String> {
        self.rule_errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts back alerts and silences as an incident carried them (`weir incident open`):
    /// active alerts by fingerprint, history in the order given (oldest first), silences
    /// with their ids. Nothing is queued for notification.
    pub fn restore(
        &self,
        active: &[Alert],
        history: &[Alert],
        silences: &[Silence],
    ) -> Result<(), AlertError> {
        for a in active {
            self.active
                .insert(a.fingerprint.as_bytes(), serde_json::to_vec(a)?)?;
        }
        for a in history {
            self.record(a)?;
        }
        for s in silences {
            self.silences
                .insert(s.id.to_be_bytes(), serde_json::to_vec(s)?)?;
        }
        // Ids handed out later start above the restored silences' (whatever their size).
        let top = silences.iter().map(|s| s.id).max().unwrap_or(0);
        let floor = top.saturating_add(1);
        self.db.insert(ID_FLOOR_KEY, &floor.to_be_bytes())?;
        self.id_floor
            .store(floor, std::sync::atomic::Ordering::Relaxed);
        self.db.flush()?;
        Ok(())
    }

    /// Notifications given up since the agent started.
    pub fn given_up(&self) -> u64 {
        self.given_up.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A new id: sled's counter, above a restored store's floor.
    fn next_id(&self) -> Result<u64, AlertError> {
        Ok(self
            .db
            .generate_id()?
            .saturating_add(self.id_floor.load(std::sync::atomic::Ordering::Relaxed)))
    }

    fn record(&self, a: &Alert) -> Result<(), AlertError> {
        let seq = self.next_id()?;
        self.history
            .insert(seq.to_be_bytes(), serde_json::to_vec(a)?)?;
        Ok(())
    }

    fn notify(&self, a: &Alert, now_ms: u64) -> Result<(), AlertError> {
        for sink in &self.sinks {
            let seq = self.next_id()?;
            let n = Notification {
                sink: sink.clone(),
                alert: a.clone(),
                attempts: 0,
                due_ms: now_ms,
                queued_ms: now_ms,
            };
            self.outbox
                .insert(seq.to_be_bytes(), serde_json::to_vec(&n)?)?;
        }
        Ok(())
    }

    /// Whether a silence covers `a` now.
    pub fn silenced(&self, a: &Alert, now_ms: u64) -> bool {
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
                notified: false,
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
                if a.state == AlertState::Firing && !a.silenced {
                    a.notified = true;
                    self.notify(&a, now_ms)?;
                }
                self.record(&a)?;
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
                if a.notified {
                    self.notify(&a, now_ms)?;
                }
                changed.push(a);
            }
        }
        self.db.flush()?;
        Ok(changed)
    }

    /// Brings active alerts in line with the silences in force: a firing alert no silence
    /// covers any more, whose firing was never notified, is notified now. Run after silences
    /// change and at the end of every evaluation pass (silences also expire).
    pub fn reconcile_silences(&self, now_ms: u64) -> Result<(), AlertError> {
        let silences = self.silences();
        for mut a in self.active() {
            let silenced = silences.iter().any(|s| s.covers(&a, now_ms));
            let notify = a.state == AlertState::Firing && !silenced && !a.notified;
            if silenced == a.silenced && !notify {
                continue;
            }
            a.silenced = silenced;
            if notify {
                a.notified = true;
                self.notify(&a, now_ms)?;
            }
            self.active
                .insert(a.fingerprint.as_bytes(), serde_json::to_vec(&a)?)?;
        }
        self.db.flush()?;
        Ok(())
    }

    /// Drops silences that have ended and history beyond [`HISTORY_MAX`] entries. Returns
    /// (silences, history entries) removed.
    pub fn prune(&self, now_ms: u64) -> Result<(usize, usize), AlertError> {
        let mut silences = 0;
        for s in self.silences() {
            if s.ends_ms <= now_ms && self.silences.remove(s.id.to_be_bytes())?.is_some() {
                silences += 1;
            }
        }
        let over = self.history.len().saturating_sub(HISTORY_MAX);
        let mut history = 0;
        for item in self.history.iter().take(over) {
            let (k, _) = item?;
            self.history.remove(k)?;
            history += 1;
        }
        if silences + history > 0 {
            self.db.flush()?;
        }
        Ok((silences, history))
    }

    /// The rules that have active alerts.
    pub fn rules(&self) -> std::collections::BTreeSet<String> {
        self.active().into_iter().map(|a| a.rule).collect()
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
            id: self.next_id()?,
            matchers,
            starts_ms,
            ends_ms,
            comment,
        };
        self.silences
            .insert(s.id.to_be_bytes(), serde_json::to_vec(&s)?)?;
        self.reconcile_silences(crate::query::now_ms())?;
        Ok(s)
    }

    /// Removes a silence; false when there was none with that id.
    pub fn unsilence(&self, id: u64) -> Result<bool, AlertError> {
        let had = self.silences.remove(id.to_be_bytes())?.is_some();
        self.reconcile_silences(crate::query::now_ms())?;
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

    /// A delivery failed: retried with exponential backoff (2 s doubling, at most 5 min),
    /// unless it is given up: queued more than [`GIVE_UP_AFTER_MS`] ago, or `refused` (the
    /// sink answered 4xx) for the [`GIVE_UP_REFUSED_AFTER`]th time. Returns whether it was
    /// given up (then it left the outbox).
    pub fn failed(
        &self,
        seq: u64,
        mut n: Notification,
        now_ms: u64,
        refused: bool,
    ) -> Result<bool, AlertError> {
        n.attempts += 1;
        if n.queued_ms == 0 {
            n.queued_ms = now_ms;
        }
        let too_old = now_ms.saturating_sub(n.queued_ms) > GIVE_UP_AFTER_MS;
        if too_old || (refused && n.attempts >= GIVE_UP_REFUSED_AFTER) {
            self.outbox.remove(seq.to_be_bytes())?;
            self.db.flush()?;
            self.given_up
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(true);
        }
        let backoff = 1000u64 << n.attempts.min(9);
        n.due_ms = now_ms + backoff.min(300_000);
        self.outbox
            .insert(seq.to_be_bytes(), serde_json::to_vec(&n)?)?;
        self.db.flush()?;
        Ok(false)
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
        assert!(!s.failed(seq, n, 2_000, false).unwrap());
        assert_eq!(
            s.due(2_500, 10).len(),
            1,
            "the failed one waits for its backoff"
        );
        assert_eq!(s.due(10_000, 10).len(), 2);
        s.delivered(seq).unwrap();
        assert_eq!(s.queued(), 1);
    }

    #[test]
    fn silences_follow_firing_alerts_and_receivers_always_see_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let s = AlertStore::open(dir.path(), vec!["hook".into()]).unwrap();
        let now = crate::query::now_ms();
        let drain = |s: &AlertStore| -> Vec<(String, AlertState)> {
            s.due(u64::MAX, 100)
                .into_iter()
                .map(|(seq, n)| {
                    s.delivered(seq).unwrap();
                    (n.alert.labels["host"].clone(), n.alert.state)
                })
                .collect()
        };
        // a fires and is notified, then a silence covers it: its resolve is still sent.
        s.evaluate("r", &[obs("a")], 0, now).unwrap();
        assert_eq!(drain(&s), vec![("a".into(), AlertState::Firing)]);
        let m = BTreeMap::from([("host".to_string(), "a".to_string())]);
        let sil = s
            .silence(m, now - 1, now + 3_600_000, String::new())
            .unwrap();
        assert!(
            s.active()[0].silenced,
            "a silence added later covers it at once"
        );
        s.evaluate("r", &[], 0, now + 1).unwrap();
        assert_eq!(drain(&s), vec![("a".into(), AlertState::Resolved)]);
        // a fires again under the silence: nothing sent; the silence is lifted: sent then.
        s.evaluate("r", &[obs("a")], 0, now + 2).unwrap();
        assert!(drain(&s).is_empty());
        assert!(s.unsilence(sil.id).unwrap());
        assert_eq!(drain(&s), vec![("a".into(), AlertState::Firing)]);
        assert!(!s.active()[0].silenced);
        // Never notified as firing: its resolve is not sent either.
        let m = BTreeMap::from([("host".to_string(), "b".to_string())]);
        s.silence(m, now - 1, now + 3_600_000, String::new())
            .unwrap();
        s.evaluate("r", &[obs("a"), obs("b")], 0, now + 3).unwrap();
        s.evaluate("r", &[obs("a")], 0, now + 4).unwrap();
        assert!(
            drain(&s).is_empty(),
            "b fired and resolved under its silence"
        );
    }

    #[test]
    fn refused_or_stale_notifications_are_given_up_and_history_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let s = AlertStore::open(dir.path(), vec!["hook".into()]).unwrap();
        s.evaluate("r", &[obs("a")], 0, 1_000).unwrap();
        let (seq, mut n) = s.due(1_000, 1)[0].clone();
        for i in 1..GIVE_UP_REFUSED_AFTER {
            assert!(
                !s.failed(seq, n.clone(), 1_000, true).unwrap(),
                "attempt {i}"
            );
            n.attempts += 1;
        }
        assert!(s.failed(seq, n, 1_000, true).unwrap(), "refused 5 times");
        assert_eq!((s.queued(), s.given_up()), (0, 1));
        // A sink that is down (not refusing) is retried for a day.
        s.evaluate("r", &[], 0, 2_000).unwrap();
        let (seq, n) = s.due(2_000, 1)[0].clone();
        assert!(
            !s.failed(seq, n.clone(), 2_000 + GIVE_UP_AFTER_MS, false)
                .unwrap()
        );
        assert!(s.failed(seq, n, 3_000 + GIVE_UP_AFTER_MS, false).unwrap());
        assert_eq!((s.queued(), s.given_up()), (0, 2));
        // Ended silences and history past the cap are pruned, oldest first.
        let m = BTreeMap::from([("host".to_string(), "x".to_string())]);
        s.silence(m, 0, 10, String::new()).unwrap();
        let mut a = s.history(1)[0].clone();
        for i in 0..HISTORY_MAX as u64 + 5 {
            a.resolved_ms = i;
            s.record(&a).unwrap();
        }
        let before = s.history.len();
        assert_eq!(s.prune(100).unwrap(), (1, before - HISTORY_MAX));
        assert_eq!(s.history.len(), HISTORY_MAX);
        assert!(s.silences().is_empty());
        let newest = &s.history(1)[0];
        assert_eq!(newest.resolved_ms, HISTORY_MAX as u64 + 4);
    }

    #[test]
    fn reopening_waits_for_a_lock_still_held() {
        let dir = tempfile::tempdir().unwrap();
        let first = AlertStore::open(dir.path(), vec![]).unwrap();
        let holder = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(first);
        });
        let second = AlertStore::open(dir.path(), vec![]);
        holder.join().unwrap();
        assert!(second.is_ok(), "{:?}", second.err());
    }

    #[test]
    fn restored_silences_keep_their_ids_and_new_ids_go_above_even_huge_ones() {
        let dir = tempfile::tempdir().unwrap();
        let s = AlertStore::open(dir.path(), vec![]).unwrap();
        let big = Silence {
            id: u64::MAX - 10,
            matchers: BTreeMap::from([("rule".into(), "r".into())]),
            starts_ms: 1,
            ends_ms: 2,
            comment: "from an incident".into(),
        };
        let t = std::time::Instant::now();
        s.restore(&[], &[], std::slice::from_ref(&big)).unwrap();
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
        drop(s);
        let s = AlertStore::open(dir.path(), vec![]).unwrap();
        assert_eq!(s.silences(), vec![big.clone()]);
        let new = s
            .silence(
                BTreeMap::from([("rule".into(), "x".into())]),
                1,
                2,
                String::new(),
            )
            .unwrap();
        assert!(new.id > big.id, "{} <= {}", new.id, big.id);
    }
}
