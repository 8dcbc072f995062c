//! Capture control: plugins changing in-kernel filter rules and sampling, with the host
//! guarding it. [`GuardedCapture`] wraps the running capture (any [`CaptureSource`]) and is
//! what the API and the plugins see:
//!
//! - the operator's rules (`--filter`, `PUT /api/v1/capture/filters`) always come first; each
//!   controlling plugin's rules follow, in plugin-name order (the first matching rule decides,
//!   so the operator's win); `sample` rules, which decide nothing (see
//!   [`FilterAction::Sample`]), go before all others, the operator's first (the first that
//!   matches gives the rate), so plugins' apply under an operator's allow-list too;
//! - a plugin acts only within the bounds of its grant ([`Bounds`]: how many rules, which
//!   actions, inside which networks, which sampling range), and at most [`BURST`] changes at
//!   once, then one every [`REFILL`];
//! - sampling in force is the highest 1-in-N any controlling plugin asks (within its bounds),
//!   or the operator's when none asks;
//! - when a plugin stops controlling (disabled, removed, its grant revoked) its rules and
//!   sampling are withdrawn and the operator's restored;
//! - every change is logged, kept in the status (the last [`KEEP_CHANGES`]) and, when a
//!   records store is given, written there as kind `capture-change`.

use crate::capture::{CaptureSource, CaptureStatus, FilterAction, FilterRule, MAX_FILTER_RULES};
use crate::records::{Entry, RecordStore};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Changes a plugin may make at once.
pub const BURST: f64 = 5.0;
/// Time that earns one more change.
pub const REFILL: Duration = Duration::from_secs(2);
/// Changes kept for the status.
pub const KEEP_CHANGES: usize = 50;

/// What a grant of `capture-control` allows, from its scope entries: `rules=N` (at most N
/// rules; none without it), `action=accept` / `action=reject` / `action=sample` (the actions
/// allowed; all without any), `cidr=NET` (every rule's `cidr` inside one of them; any without any),
/// `sampling=MIN-MAX` (the 1-in-N range; no sampling changes without it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bounds {
    pub rules: usize,
    pub actions: Vec<FilterAction>,
    pub cidrs: Vec<(u128, u32)>,
    pub sampling: Option<(u32, u32)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// Outside the grant's bounds; the message names the bound.
    #[error("capture-control: {0}")]
    Bounds(String),
    /// Too many changes too fast.
    #[error(
        "capture-control: rate limit: at most {burst} changes at once, then one every {refill_s} s; retry in {retry_ms} ms"
    )]
    RateLimited {
        burst: u32,
        refill_s: u64,
        retry_ms: u64,
    },
    /// A rule that does not parse or compile, or the capture refused the change.
    #[error("capture-control: {0}")]
    Invalid(String),
}

impl Bounds {
    /// Parses a scope; the error names the entry.
    pub fn parse(scope: &[String]) -> Result<Bounds, String> {
        let mut b = Bounds::default();
        for e in scope {
            b.add(e)?;
        }
        Ok(b)
    }

    /// Checks one scope entry (as a grant is given).
    pub fn check_entry(entry: &str) -> Result<(), String> {
        Bounds::default().add(entry)
    }

    fn add(&mut self, entry: &str) -> Result<(), String> {
        let bad = |why: &str| {
            Err(format!(
                "scope entry {:?}: {why} (write rules=N, action=accept|reject|sample, cidr=NET or sampling=MIN-MAX)",
                entry.chars().take(100).collect::<String>()
            ))
        };
        let Some((k, v)) = entry.split_once('=') else {
            return bad("no '='");
        };
        match k.trim() {
            "rules" => match v.trim().parse::<usize>() {
                Ok(n) if n <= MAX_FILTER_RULES => self.rules = self.rules.max(n),
                _ => return bad(&format!("rules must be 0-{MAX_FILTER_RULES}")),
            },
            "action" => match v.trim() {
                "accept" => self.actions.push(FilterAction::Accept),
                "reject" => self.actions.push(FilterAction::Reject),
                "sample" => self.actions.push(FilterAction::Sample),
                _ => return bad("action must be accept, reject or sample"),
            },
            "cidr" => match crate::schema::parse_network(v.trim()) {
                Ok(n) => self.cidrs.push(n),
                Err(e) => return bad(&e),
            },
            "sampling" => {
                let range = v.split_once('-').and_then(|(a, b)| {
                    Some((a.trim().parse::<u32>().ok()?, b.trim().parse::<u32>().ok()?))
                });
                match range {
                    Some((lo, hi)) if lo >= 1 && lo <= hi => self.sampling = Some((lo, hi)),
                    _ => return bad("sampling must be MIN-MAX with 1 <= MIN <= MAX"),
                }
            }
            _ => return bad("unknown bound"),
        }
        Ok(())
    }

    fn within_cidrs(&self, rule: &FilterRule) -> bool {
        if self.cidrs.is_empty() {
            return true;
        }
        let Some(Ok((net, bits))) = rule.cidr.as_deref().map(crate::schema::parse_network) else {
            return false;
        };
        self.cidrs
            .iter()
            .any(|(bn, bb)| bits >= *bb && net & crate::schema::prefix_mask(*bb) == *bn)
    }

    /// Whether `rules` keep within these bounds; the refusal names the rule and the bound.
    pub fn check_rules(&self, rules: &[FilterRule]) -> Result<(), String> {
        if rules.len() > self.rules {
            return Err(format!(
                "{} rules asked, this plugin's grant allows {} (rules={})",
                rules.len(),
                self.rules,
                self.rules
            ));
        }
        for (i, r) in rules.iter().enumerate() {
            let n = i + 1;
            if !self.actions.is_empty() && !self.actions.contains(&r.action) {
                return Err(format!(
                    "rule {n} ({}): action {:?} is outside the grant's bounds (action={})",
                    r.text(),
                    r.action,
                    self.actions
                        .iter()
                        .map(|a| format!("{a:?}").to_lowercase())
                        .collect::<Vec<_>>()
                        .join(", action=")
                ));
            }
            if !self.within_cidrs(r) {
                return Err(format!(
                    "rule {n} ({}): its cidr must lie inside the grant's networks",
                    r.text()
                ));
            }
            if r.sampling > 1 {
                self.check_sampling(r.sampling)
                    .map_err(|e| format!("rule {n} ({}): {e}", r.text()))?;
            }
        }
        Ok(())
    }

    /// Whether 1-in-`one_in` sampling is within these bounds.
    pub fn check_sampling(&self, one_in: u32) -> Result<(), String> {
        match self.sampling {
            Some((lo, hi)) if (lo..=hi).contains(&one_in.max(1)) => Ok(()),
            Some((lo, hi)) => Err(format!(
                "sampling 1 in {one_in} is outside the grant's bounds (sampling={lo}-{hi})"
            )),
            None => {
                Err("this plugin's grant allows no sampling changes (no sampling= bound)".into())
            }
        }
    }
}

/// One plugin's hold on the capture.
#[derive(Debug, Clone, Serialize)]
pub struct Controller {
    pub plugin: String,
    /// Its rules, in force after the operator's.
    pub rules: Vec<String>,
    /// The 1-in-N it asks, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sampling: Option<u32>,
    pub changes: u64,
    pub refused: u64,
}

/// One change made through capture control.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub time_ms: u64,
    /// The plugin, or `operator`.
    pub by: String,
    pub what: String,
}

/// What `weir status` shows of capture control.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ControlStatus {
    /// The operator's rules and sampling, restored when no plugin controls.
    pub operator_rules: Vec<String>,
    pub operator_sampling: u32,
    pub controllers: Vec<Controller>,
    pub changes: Vec<Change>,
}

struct Hold {
    rules: Vec<FilterRule>,
    sampling: Option<u32>,
    limit: RateLimit,
    changes: u64,
    refused: u64,
}

impl Hold {
    fn new() -> Hold {
        Hold {
            rules: Vec::new(),
            sampling: None,
            limit: RateLimit::new(),
            changes: 0,
            refused: 0,
        }
    }

    fn take(&mut self) -> Result<(), ControlError> {
        self.limit.take()
    }
}

/// A plugin's changes: [`BURST`] at once, then one every [`REFILL`] (a token bucket).
#[derive(Debug, Clone)]
pub struct RateLimit {
    tokens: f64,
    topped: Instant,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit::new()
    }
}

impl RateLimit {
    pub fn new() -> RateLimit {
        RateLimit {
            tokens: BURST,
            topped: Instant::now(),
        }
    }

    /// Takes one change from the bucket, or says when one will be there.
    pub fn take(&mut self) -> Result<(), ControlError> {
        let now = Instant::now();
        let earned = now.duration_since(self.topped).as_secs_f64() / REFILL.as_secs_f64();
        self.tokens = (self.tokens + earned).min(BURST);
        self.topped = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        Err(ControlError::RateLimited {
            burst: BURST as u32,
            refill_s: REFILL.as_secs(),
            retry_ms: ((1.0 - self.tokens) * REFILL.as_secs_f64() * 1000.0).ceil() as u64,
        })
    }
}

struct State {
    operator_rules: Vec<FilterRule>,
    operator_sampling: u32,
    holds: BTreeMap<String, Hold>,
    changes: VecDeque<Change>,
}

impl State {
    /// The `sample` rules first: the operator's, then the plugins'; then the operator's
    /// other rules, then the plugins' others. Sample rules decide nothing and the first that
    /// matches gives the rate, so this order keeps the operator's deciding and their rates
    /// first, and lets plugins' sample rules apply under an operator's allow-list.
    fn rules_in_force(&self) -> Vec<FilterRule> {
        let sample = |r: &&FilterRule| r.action == FilterAction::Sample;
        let other = |r: &&FilterRule| r.action != FilterAction::Sample;
        let plugins = || self.holds.values().flat_map(|h| h.rules.iter());
        let mut all: Vec<FilterRule> = self.operator_rules.iter().filter(sample).cloned().collect();
        all.extend(plugins().filter(sample).cloned());
        all.extend(self.operator_rules.iter().filter(other).cloned());
        all.extend(plugins().filter(other).cloned());
        all
    }

    fn sampling_in_force(&self) -> u32 {
        self.holds
            .values()
            .filter_map(|h| h.sampling)
            .max()
            .unwrap_or(self.operator_sampling)
    }
}

/// The running capture behind the guard: see the module docs.
pub struct GuardedCapture {
    inner: Arc<dyn CaptureSource>,
    records: Option<Arc<RecordStore>>,
    state: Mutex<State>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl GuardedCapture {
    /// Guards `inner`, taking its current rules and sampling as the operator's.
    pub fn new(inner: Arc<dyn CaptureSource>, records: Option<Arc<RecordStore>>) -> Self {
        let st = inner.status();
        GuardedCapture {
            state: Mutex::new(State {
                operator_rules: inner.filters(),
                operator_sampling: st.sampling,
                holds: BTreeMap::new(),
                changes: VecDeque::new(),
            }),
            inner,
            records,
        }
    }

    /// Applies the composed rules and sampling; on error nothing changes.
    fn apply(&self, st: &State, rules_changed: bool, sampling_changed: bool) -> Result<(), String> {
        if rules_changed {
            let all = st.rules_in_force();
            if all.len() > MAX_FILTER_RULES {
                return Err(format!(
                    "{} rules would be in force (the operator's {} and the plugins'); the kernel holds at most {MAX_FILTER_RULES}",
                    all.len(),
                    st.operator_rules.len()
                ));
            }
            self.inner.set_filters(all)?;
        }
        if sampling_changed {
            self.inner.set_sampling(st.sampling_in_force())?;
        }
        Ok(())
    }

    fn note(&self, st: &mut State, by: &str, what: String) {
        tracing::info!(by, what = %what, "capture changed");
        let time_ms = crate::query::now_ms();
        if let Some(r) = &self.records {
            let entry = Entry {
                time_ms,
                end_ms: None,
                kind: "capture-change".into(),
                text: what.chars().take(4000).collect(),
                labels: vec![("by".into(), by.to_string())],
                flow_filter: None,
            };
            if let Err(e) = r.write("agent", vec![entry]) {
                tracing::warn!(error = %e, "capture change not recorded");
            }
        }
        st.changes.push_back(Change {
            time_ms,
            by: by.to_string(),
            what,
        });
        while st.changes.len() > KEEP_CHANGES {
            st.changes.pop_front();
        }
    }

    /// Replaces `plugin`'s rules within `bounds`. Rate-limited; the operator's stay first.
    pub fn set_plugin_rules(
        &self,
        plugin: &str,
        rules: Vec<FilterRule>,
        bounds: &Bounds,
    ) -> Result<(), ControlError> {
        let mut st = lock(&self.state);
        let operator_allows = st
            .operator_rules
            .iter()
            .any(|r| r.action == FilterAction::Accept);
        let hold = st.holds.entry(plugin.to_string()).or_insert_with(Hold::new);
        if let Err(e) = bounds.check_rules(&rules) {
            hold.refused += 1;
            return Err(ControlError::Bounds(e));
        }
        // With any accept rule the kernel keeps only what some rule accepts: a plugin's accept
        // rule would turn the whole capture into its allow-list. Only an operator who made the
        // capture an allow-list already lets plugins widen it.
        if !operator_allows
            && let Some((i, r)) = rules
                .iter()
                .enumerate()
                .find(|(_, r)| r.action == FilterAction::Accept)
        {
            hold.refused += 1;
            return Err(ControlError::Bounds(format!(
                "rule {} ({}): an accept rule would make the capture an allow-list of the plugin's; plugins may add accept rules only when the operator's rules are an allow-list already (they have none)",
                i + 1,
                r.text()
            )));
        }
        hold.take()?;
        let before = std::mem::replace(&mut hold.rules, rules.clone());
        if let Err(e) = self.apply(&st, true, false) {
            if let Some(h) = st.holds.get_mut(plugin) {
                h.rules = before;
                h.refused += 1;
            }
            return Err(ControlError::Invalid(e));
        }
        if let Some(h) = st.holds.get_mut(plugin) {
            h.changes += 1;
        }
        let text: Vec<String> = rules.iter().map(FilterRule::text).collect();
        self.note(&mut st, plugin, format!("rules: [{}]", text.join("; ")));
        Ok(())
    }

    /// Asks 1-in-`one_in` sampling for `plugin` within `bounds` (0: withdraws its ask).
    pub fn set_plugin_sampling(
        &self,
        plugin: &str,
        one_in: u32,
        bounds: &Bounds,
    ) -> Result<(), ControlError> {
        let mut st = lock(&self.state);
        let hold = st.holds.entry(plugin.to_string()).or_insert_with(Hold::new);
        if one_in != 0
            && let Err(e) = bounds.check_sampling(one_in)
        {
            hold.refused += 1;
            return Err(ControlError::Bounds(e));
        }
        hold.take()?;
        let before = std::mem::replace(&mut hold.sampling, (one_in != 0).then_some(one_in));
        if let Err(e) = self.apply(&st, false, true) {
            if let Some(h) = st.holds.get_mut(plugin) {
                h.sampling = before;
            }
            return Err(ControlError::Invalid(e));
        }
        if let Some(h) = st.holds.get_mut(plugin) {
            h.changes += 1;
        }
        let in_force = st.sampling_in_force();
        self.note(
            &mut st,
            plugin,
            format!("sampling: asks 1 in {one_in}; 1 in {in_force} in force"),
        );
        Ok(())
    }

    /// The rules and sampling in force, as text, and `plugin`'s own.
    pub fn rules_text(&self) -> Vec<String> {
        lock(&self.state)
            .rules_in_force()
            .iter()
            .map(FilterRule::text)
            .collect()
    }

    pub fn sampling(&self) -> u32 {
        lock(&self.state).sampling_in_force()
    }

    /// Withdraws every plugin not in `controlling` (disabled, removed, its grant revoked),
    /// restoring what was in force without it.
    /// `controlling` gives each plugin's current bounds, or None when it no longer controls
    /// (disabled, removed, unhealthy, grant revoked); a plugin whose changes are now outside
    /// its (narrowed) bounds is withdrawn too.
    pub fn retain(&self, controlling: &dyn Fn(&str) -> Option<Bounds>) {
        let mut st = lock(&self.state);
        let gone: Vec<String> = st
            .holds
            .iter()
            .filter(|(p, h)| match controlling(p) {
                None => true,
                Some(b) => {
                    b.check_rules(&h.rules).is_err()
                        || h.sampling.is_some_and(|n| b.check_sampling(n).is_err())
                }
            })
            .map(|(p, _)| p.clone())
            .collect();
        for p in gone {
            let Some(h) = st.holds.remove(&p) else {
                continue;
            };
            let (rules, sampling) = (!h.rules.is_empty(), h.sampling.is_some());
            if !rules && !sampling {
                continue;
            }
            if let Err(e) = self.apply(&st, rules, sampling) {
                tracing::warn!(plugin = %p, error = %e, "restoring the capture after a plugin failed");
            }
            self.note(
                &mut st,
                &p,
                "withdrawn (no longer controlling, or outside its narrowed bounds): its rules and sampling removed".into(),
            );
        }
    }
}

impl CaptureSource for GuardedCapture {
    fn status(&self) -> CaptureStatus {
        let mut s = self.inner.status();
        let st = lock(&self.state);
        s.control = Some(ControlStatus {
            operator_rules: st.operator_rules.iter().map(FilterRule::text).collect(),
            operator_sampling: st.operator_sampling,
            controllers: st
                .holds
                .iter()
                .map(|(p, h)| Controller {
                    plugin: p.clone(),
                    rules: h.rules.iter().map(FilterRule::text).collect(),
                    sampling: h.sampling,
                    changes: h.changes,
                    refused: h.refused,
                })
                .collect(),
            changes: st.changes.iter().cloned().collect(),
        });
        s
    }

    fn flush(&self) {
        self.inner.flush()
    }

    /// The operator's rules (what `set_filters` replaces); the status lists all in force.
    fn filters(&self) -> Vec<FilterRule> {
        lock(&self.state).operator_rules.clone()
    }

    /// The operator's rules: replaced, then the plugins' appended again. When they no longer
    /// fit beside the operator's (the kernel holds [`MAX_FILTER_RULES`]), or when the
    /// operator's are no longer an allow-list that plugin accept rules may widen, the plugins'
    /// rules are withdrawn: the operator's always win.
    fn set_filters(&self, rules: Vec<FilterRule>) -> Result<(), String> {
        crate::capture::compile_rules(&rules)?;
        let mut st = lock(&self.state);
        let allows = rules.iter().any(|r| r.action == FilterAction::Accept);
        let plugin_rules: usize = st.holds.values().map(|h| h.rules.len()).sum();
        let plugin_accepts = st
            .holds
            .values()
            .any(|h| h.rules.iter().any(|r| r.action == FilterAction::Accept));
        let mut evicted = Vec::new();
        if rules.len() + plugin_rules > MAX_FILTER_RULES || (plugin_accepts && !allows) {
            for (name, h) in st.holds.iter_mut() {
                if !h.rules.is_empty() {
                    h.rules.clear();
                    evicted.push(name.clone());
                }
            }
        }
        let before = std::mem::replace(&mut st.operator_rules, rules.clone());
        if let Err(e) = self.apply(&st, true, false) {
            st.operator_rules = before;
            return Err(e);
        }
        let text: Vec<String> = rules.iter().map(FilterRule::text).collect();
        self.note(&mut st, "operator", format!("rules: [{}]", text.join("; ")));
        for name in evicted {
            self.note(
                &mut st,
                &name,
                "rules withdrawn: the operator's new rules need the room or are not an allow-list"
                    .into(),
            );
        }
        Ok(())
    }

    /// The operator's sampling, in force while no plugin asks one (a plugin's ask wins).
    fn set_sampling(&self, one_in: u32) -> Result<(), String> {
        let mut st = lock(&self.state);
        let before = std::mem::replace(&mut st.operator_sampling, one_in);
        if let Err(e) = self.apply(&st, false, true) {
            st.operator_sampling = before;
            return Err(e);
        }
        self.note(&mut st, "operator", format!("sampling: 1 in {one_in}"));
        Ok(())
    }

    fn link_speed(&self, netns: &str, name: &str) -> Option<u64> {
        self.inner.link_speed(netns, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A capture that only records what it is told (the e2e test drives the real one).
    #[derive(Default)]
    struct Recorder {
        rules: Mutex<Vec<FilterRule>>,
        sampling: Mutex<u32>,
    }

    impl CaptureSource for Recorder {
        fn status(&self) -> CaptureStatus {
            CaptureStatus {
                sampling: *lock(&self.sampling),
                filters: lock(&self.rules).clone(),
                ..Default::default()
            }
        }
        fn flush(&self) {}
        fn filters(&self) -> Vec<FilterRule> {
            lock(&self.rules).clone()
        }
        fn set_filters(&self, rules: Vec<FilterRule>) -> Result<(), String> {
            crate::capture::compile_rules(&rules)?;
            *lock(&self.rules) = rules;
            Ok(())
        }
        fn set_sampling(&self, one_in: u32) -> Result<(), String> {
            *lock(&self.sampling) = one_in;
            Ok(())
        }
    }

    fn texts(c: &Recorder) -> Vec<String> {
        lock(&c.rules).iter().map(FilterRule::text).collect()
    }

    #[test]
    fn the_guard_keeps_the_operator_first_and_plugins_within_bounds() {
        let cap = Arc::new(Recorder::default());
        let g = GuardedCapture::new(cap.clone(), None);
        let wide = Bounds::parse(&["rules=16", "sampling=1-1000"].map(String::from)).unwrap();
        // An accept rule from a plugin would make everything else invisible: refused while
        // the operator's rules are no allow-list.
        let e = g
            .set_plugin_rules("p", rules(&["accept cidr=10.0.0.0/8"]), &wide)
            .unwrap_err();
        assert!(e.to_string().contains("allow-list"), "{e}");
        assert!(lock(&cap.rules).is_empty());
        g.set_plugin_rules("p", rules(&["reject ports=22"]), &wide)
            .unwrap();
        g.set_filters(rules(&["reject ports=9"])).unwrap();
        assert_eq!(texts(&cap), ["reject ports=9", "reject ports=22"]);
        assert_eq!(
            g.filters().iter().map(FilterRule::text).collect::<Vec<_>>(),
            ["reject ports=9"],
            "the API's rules are the operator's"
        );
        // The operator needs the room: the plugins' rules go.
        let many: Vec<String> = (1..=16).map(|p| format!("reject ports={p}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        g.set_filters(rules(&many)).unwrap();
        assert_eq!(lock(&cap.rules).len(), 16);
        assert!(texts(&cap).iter().all(|t| t != "reject ports=22"));
        g.set_filters(rules(&["accept cidr=10.0.0.0/8"])).unwrap();
        g.set_plugin_rules("p", rules(&["accept cidr=10.1.0.0/16"]), &wide)
            .unwrap();
        // A narrowed grant withdraws what no longer fits; a plugin gone withdraws all.
        g.set_plugin_sampling("p", 100, &wide).unwrap();
        assert_eq!(*lock(&cap.sampling), 100);
        let narrow = Bounds::parse(&["rules=1", "sampling=1-10"].map(String::from)).unwrap();
        g.retain(&|_| Some(narrow.clone()));
        assert_eq!(*lock(&cap.sampling), 0, "the operator's again");
        assert_eq!(texts(&cap), ["accept cidr=10.0.0.0/8"]);
        let st = g.status().control.unwrap();
        assert!(st.controllers.is_empty());
        assert!(st.changes.last().unwrap().what.contains("withdrawn"));
        // The rate limit: 5 at once, then one every 2 s.
        for _ in 0..5 {
            g.set_plugin_rules("q", rules(&["reject ports=1"]), &wide)
                .unwrap();
        }
        let e = g
            .set_plugin_rules("q", rules(&["reject ports=1"]), &wide)
            .unwrap_err();
        assert!(matches!(e, ControlError::RateLimited { .. }), "{e}");
    }

    #[test]
    fn sample_rules_go_first_and_never_make_an_allow_list() {
        let cap = Arc::new(Recorder::default());
        let g = GuardedCapture::new(cap.clone(), None);
        let b = Bounds::parse(&["rules=3", "action=sample", "sampling=2-100"].map(String::from))
            .unwrap();
        // Beside an operator's allow-list: the sample rules go before it (they decide
        // nothing), the operator's rules still decide what is kept.
        g.set_filters(rules(&["accept cidr=10.0.0.0/8"])).unwrap();
        g.set_plugin_rules(
            "ctl",
            rules(&[
                "sample proto=tcp ports=5201 tcp_flags=SYN,RST",
                "sample proto=tcp ports=5201 sampling=7",
            ]),
            &b,
        )
        .unwrap();
        assert_eq!(
            texts(&cap),
            [
                "sample proto=tcp ports=5201 tcp_flags=SYN,RST",
                "sample proto=tcp ports=5201 sampling=7",
                "accept cidr=10.0.0.0/8"
            ]
        );
        // Without an operator allow-list a sample rule is no accept rule: allowed. The
        // operator's own sample rules stay before the plugins' (the first that matches gives
        // the rate: a plugin cannot exempt what the operator samples).
        g.set_filters(rules(&["reject ports=22", "sample proto=tcp sampling=50"]))
            .unwrap();
        assert_eq!(
            texts(&cap),
            [
                "sample proto=tcp sampling=50",
                "sample proto=tcp ports=5201 tcp_flags=SYN,RST",
                "sample proto=tcp ports=5201 sampling=7",
                "reject ports=22"
            ]
        );
        // The grant's bounds hold: its action, its sampling range.
        let e = g
            .set_plugin_rules("ctl", rules(&["reject ports=9"]), &b)
            .unwrap_err();
        assert!(e.to_string().contains("action=sample"), "{e}");
        let e = g
            .set_plugin_rules("ctl", rules(&["sample ports=9 sampling=1000"]), &b)
            .unwrap_err();
        assert!(e.to_string().contains("sampling=2-100"), "{e}");
        assert!(Bounds::check_entry("action=sometimes").is_err());
    }

    fn rules(texts: &[&str]) -> Vec<FilterRule> {
        texts
            .iter()
            .map(|t| FilterRule::parse(t).unwrap())
            .collect()
    }

    #[test]
    fn bounds_parse_and_hold() {
        let b = Bounds::parse(
            &[
                "rules=2",
                "action=reject",
                "cidr=10.0.0.0/8",
                "sampling=1-100",
            ]
            .map(String::from),
        )
        .unwrap();
        assert!(
            b.check_rules(&rules(&["reject cidr=10.1.0.0/16 ports=22"]))
                .is_ok()
        );
        let e = b
            .check_rules(&rules(&["accept cidr=10.1.0.0/16"]))
            .unwrap_err();
        assert!(
            e.contains("action Accept is outside") && e.contains("action=reject"),
            "{e}"
        );
        let e = b
            .check_rules(&rules(&["reject cidr=192.168.0.0/16"]))
            .unwrap_err();
        assert!(e.contains("inside the grant's networks"), "{e}");
        let e = b.check_rules(&rules(&["reject ports=22"])).unwrap_err();
        assert!(e.contains("rule 1 (reject ports=22)"), "no cidr: {e}");
        let e = b
            .check_rules(&rules(&[
                "reject cidr=10.0.0.1",
                "reject cidr=10.0.0.2",
                "reject cidr=10.0.0.3",
            ]))
            .unwrap_err();
        assert!(e.contains("3 rules asked") && e.contains("rules=2"), "{e}");
        assert!(b.check_sampling(50).is_ok());
        let e = b.check_sampling(500).unwrap_err();
        assert!(e.contains("sampling=1-100"), "{e}");
        assert!(
            Bounds::default()
                .check_sampling(2)
                .unwrap_err()
                .contains("no sampling")
        );
        assert!(
            Bounds::default()
                .check_rules(&rules(&["reject ports=1"]))
                .is_err()
        );
        for bad in [
            "rules=17",
            "rules",
            "action=drop",
            "cidr=x",
            "sampling=5-2",
            "sampling=0-3",
            "colour=red",
        ] {
            assert!(Bounds::check_entry(bad).is_err(), "{bad}");
        }
    }
}
