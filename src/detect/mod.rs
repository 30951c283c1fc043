//! Detect: compiled rules run over the requests of every actor, on packet time.
//!
//! Input: [`Event`]s (one per transaction: actor, endpoint, status, token verdict) in packet
//! time order. Output: [`Alert`]s, already aggregated: per (rule, key) the first alert goes
//! out when the detector fires, then further matching requests of that key are counted
//! into one follow-up alert per suppression window instead of alerting again.
//! Owns per-rule, per-key windows. Limits: windows are kept as 128 buckets (so a count is
//! exact to 1/128 of the window), distinct sets hold at most the threshold, keys per rule
//! are capped (`[detect] max_keys_per_rule`), idle keys are swept and counted; at the cap a
//! new key is not tracked and is counted, so spoofed actors cannot exhaust memory.
//! Determinism: given the same event order, the same alerts; keys are hashed with a random
//! seed but nothing is emitted in hash order.

mod alert;
mod window;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::actor::Actor;
use crate::capture::Timestamp;
use crate::rules::{Detector, KeyField, Rule, RuleId, RuleSet};
use crate::token::{TokenHash, Verdict};

pub use alert::{Alert, AlertActor, write_alert};
use window::{Episode, KeyState};

/// How often (packet time) idle keys are swept and due follow-up alerts emitted.
const SWEEP_NANOS: u64 = 1_000_000_000;

/// What the detectors see of one transaction.
#[derive(Clone, Debug)]
pub struct Event {
    /// Packet time of the request.
    pub ts: Timestamp,
    pub actor: Actor,
    /// Upper-case method; `None` for a response without a request.
    pub method: Option<Arc<str>>,
    /// Lower-case host without port.
    pub host: Option<Arc<str>>,
    /// Templated route (`/api/v1/users/{id}`).
    pub route: Option<Arc<str>>,
    pub status: Option<u16>,
    pub family: Option<Arc<str>>,
    pub verdict: Verdict,
    pub token: Option<TokenHash>,
    /// Seconds the token was past its `exp` at `ts` (expired tokens with believable claims).
    pub expired_for: Option<f64>,
}

impl Event {
    /// `METHOD /route`.
    pub fn endpoint(&self) -> Option<String> {
        match (&self.method, &self.route) {
            (Some(m), Some(r)) => Some(format!("{m} {r}")),
            _ => None,
        }
    }

    fn key(&self, f: KeyField) -> Option<KeyValue> {
        match f {
            KeyField::Ip => Some(KeyValue::Ip(self.actor.ip)),
            KeyField::Device => self.actor.device.clone().map(KeyValue::Str),
            KeyField::User => self.actor.user.clone().map(KeyValue::Str),
            KeyField::Token => self.token.map(KeyValue::Token),
            KeyField::Endpoint => self.endpoint().map(|e| KeyValue::Str(e.into())),
        }
    }
}

/// A value rules group by or count.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyValue {
    Ip(IpAddr),
    Str(Arc<str>),
    Token(TokenHash),
}

impl KeyValue {
    /// As outputs may show it: users through the redaction utility, tokens as hashes.
    fn shown(&self, field: KeyField) -> String {
        match self {
            KeyValue::Ip(ip) => ip.to_string(),
            KeyValue::Token(t) => t.to_string(),
            KeyValue::Str(s) if field == KeyField::User => crate::output::redact::identifier(s),
            KeyValue::Str(s) => s.to_string(),
        }
    }
}

/// Detection counters.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct DetectStats {
    pub events: u64,
    /// Events that matched at least one rule's conditions.
    pub matched: u64,
    pub alerts: u64,
    /// Of `alerts`, follow-ups aggregating requests seen while suppressed.
    pub follow_up_alerts: u64,
    /// Matching requests folded into an open aggregate instead of alerting.
    pub aggregated_events: u64,
    pub keys_evicted: u64,
    /// New keys not tracked because a rule was at `max_keys_per_rule`.
    pub keys_over_cap: u64,
    /// Events that reached detection after later events (ordering lateness exceeded).
    pub late_events: u64,
    pub alerts_by_rule: BTreeMap<String, u64>,
}

impl DetectStats {
    pub fn merge(&mut self, o: &DetectStats) {
        self.events += o.events;
        self.matched += o.matched;
        self.alerts += o.alerts;
        self.follow_up_alerts += o.follow_up_alerts;
        self.aggregated_events += o.aggregated_events;
        self.keys_evicted += o.keys_evicted;
        self.keys_over_cap += o.keys_over_cap;
        self.late_events += o.late_events;
        for (k, v) in &o.alerts_by_rule {
            *self.alerts_by_rule.entry(k.clone()).or_default() += v;
        }
    }
}

/// Detection settings (config section `[detect]`).
#[derive(Clone, Debug)]
pub struct DetectConfig {
    /// Keys (actors, devices, tokens...) tracked per rule.
    pub max_keys_per_rule: usize,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            max_keys_per_rule: 100_000,
        }
    }
}

struct RuleState {
    rule: Arc<Rule>,
    keys: HashMap<KeyValue, KeyState, foldhash::fast::RandomState>,
}

/// Runs a rule set over events.
pub struct Engine {
    cfg: DetectConfig,
    rules: Vec<RuleState>,
    stats: DetectStats,
    next_sweep: Timestamp,
    now: Timestamp,
}

impl Engine {
    pub fn new(cfg: DetectConfig, set: &RuleSet) -> Engine {
        let mut e = Engine {
            cfg,
            rules: Vec::new(),
            stats: DetectStats::default(),
            next_sweep: Timestamp::ZERO,
            now: Timestamp::ZERO,
        };
        e.replace_rules(set, &mut Vec::new());
        e
    }

    /// Swaps in a new rule set. Rules whose definition is unchanged keep their windows and
    /// open aggregates; new or changed rules start empty; removed or changed rules first
    /// emit their open aggregates (follow-ups), so no folded request goes unreported.
    pub fn replace_rules(&mut self, set: &RuleSet, out: &mut Vec<Alert>) {
        let mut old: HashMap<RuleId, RuleState> = self
            .rules
            .drain(..)
            .map(|s| (s.rule.id.clone(), s))
            .collect();
        for r in &set.rules {
            match old.remove(&r.id) {
                Some(mut st) if st.rule.fingerprint == r.fingerprint => {
                    st.rule = r.clone();
                    self.rules.push(st);
                }
                Some(mut st) => {
                    flush_rule(&mut st, &mut self.stats, out);
                    self.rules.push(RuleState {
                        rule: r.clone(),
                        keys: HashMap::default(),
                    });
                }
                None => self.rules.push(RuleState {
                    rule: r.clone(),
                    keys: HashMap::default(),
                }),
            }
        }
        let mut removed: Vec<RuleState> = old.into_values().collect();
        removed.sort_by(|a, b| a.rule.id.cmp(&b.rule.id));
        for mut st in removed {
            flush_rule(&mut st, &mut self.stats, out);
        }
    }

    pub fn stats(&self) -> DetectStats {
        self.stats.clone()
    }

    pub fn note_late(&mut self, n: u64) {
        self.stats.late_events += n;
    }

    /// Runs every rule over one event; alerts are appended to `out`.
    pub fn observe(&mut self, ev: &Event, out: &mut Vec<Alert>) {
        if ev.ts > self.now {
            self.now = ev.ts;
        }
        if self.now >= self.next_sweep {
            self.sweep(self.now, out);
        }
        self.stats.events += 1;
        let mut matched = false;
        let cap = self.cfg.max_keys_per_rule;
        for st in &mut self.rules {
            if !matches(&st.rule, ev) {
                continue;
            }
            matched = true;
            let rule = st.rule.clone();
            let det = &rule.detector;
            let Some(key) = ev.key(det.group_by()) else {
                continue;
            };
            let distinct = match det {
                Detector::Distinct { distinct, .. } => match ev.key(*distinct) {
                    Some(v) => Some(v),
                    // Nothing to count distinct values of.
                    None => continue,
                },
                Detector::Threshold { .. } => None,
            };
            if !st.keys.contains_key(&key) && st.keys.len() >= cap {
                sweep_rule(st, self.now, &mut self.stats, out);
                if st.keys.len() >= cap {
                    self.stats.keys_over_cap += 1;
                    continue;
                }
            }
            let ks = st
                .keys
                .entry(key.clone())
                .or_insert_with(|| KeyState::new(det));
            if let Some(episode) = ks.due_follow_up(ev.ts, &st.rule) {
                emit(&st.rule, &key, episode, true, &mut self.stats, out);
            }
            if let Some(episode) = ks.observe(&st.rule, ev, distinct, &mut self.stats) {
                emit(&st.rule, &key, episode, false, &mut self.stats, out);
            }
        }
        if matched {
            self.stats.matched += 1;
        }
    }

    /// Emits follow-ups that are due and evicts idle keys, at packet time `now`.
    pub fn sweep(&mut self, now: Timestamp, out: &mut Vec<Alert>) {
        if now > self.now {
            self.now = now;
        }
        self.next_sweep = Timestamp(self.now.0.saturating_add(SWEEP_NANOS));
        for st in &mut self.rules {
            sweep_rule(st, self.now, &mut self.stats, out);
        }
    }

    /// End of input: every open aggregate is emitted.
    pub fn finish(&mut self, out: &mut Vec<Alert>) {
        for st in &mut self.rules {
            flush_rule(st, &mut self.stats, out);
        }
    }
}

/// Emits every open aggregate of a rule (in a fixed order) and forgets its keys.
fn flush_rule(st: &mut RuleState, stats: &mut DetectStats, out: &mut Vec<Alert>) {
    let mut due: Vec<(KeyValue, Episode)> = st
        .keys
        .iter_mut()
        .filter_map(|(k, ks)| ks.take_pending().map(|e| (k.clone(), e)))
        .collect();
    due.sort_by(|a, b| (a.1.first, &a.0).cmp(&(b.1.first, &b.0)));
    for (k, e) in due {
        emit(&st.rule, &k, e, true, stats, out);
    }
    st.keys.clear();
}

fn sweep_rule(st: &mut RuleState, now: Timestamp, stats: &mut DetectStats, out: &mut Vec<Alert>) {
    let window = st.rule.detector.window();
    let rule = &st.rule;
    let mut due: Vec<(KeyValue, Episode)> = Vec::new();
    st.keys.retain(|k, ks| {
        if let Some(e) = ks.due_follow_up(now, rule) {
            due.push((k.clone(), e));
        }
        let keep = !ks.idle(now, window);
        if !keep {
            stats.keys_evicted += 1;
        }
        keep
    });
    due.sort_by(|a, b| (a.1.first, &a.0).cmp(&(b.1.first, &b.0)));
    for (k, e) in due {
        emit(&st.rule, &k, e, true, stats, out);
    }
}

fn emit(
    rule: &Rule,
    key: &KeyValue,
    episode: Episode,
    follow_up: bool,
    stats: &mut DetectStats,
    out: &mut Vec<Alert>,
) {
    stats.alerts += 1;
    if follow_up {
        stats.follow_up_alerts += 1;
    }
    *stats
        .alerts_by_rule
        .entry(rule.id.as_str().to_string())
        .or_default() += 1;
    out.push(alert::build(rule, key, episode, follow_up));
}

fn matches(rule: &Rule, ev: &Event) -> bool {
    let m = &rule.matcher;
    if !m.verdict_allowed(ev.verdict) {
        return false;
    }
    if let Some(ms) = &m.methods {
        match &ev.method {
            Some(meth) if ms.iter().any(|x| **x == **meth) => {}
            _ => return false,
        }
    }
    if let Some(ss) = &m.status {
        match ev.status {
            Some(s) if ss.iter().any(|x| x.matches(s)) => {}
            _ => return false,
        }
    }
    if let Some(fs) = &m.families {
        match &ev.family {
            Some(f) if fs.iter().any(|x| **x == **f) => {}
            _ => return false,
        }
    }
    if let Some(min) = m.expired_beyond_secs {
        match ev.expired_for {
            Some(e) if e > min => {}
            _ => return false,
        }
    }
    if let Some(rs) = &m.routes {
        match &ev.route {
            Some(r) if rs.is_match(r) => {}
            _ => return false,
        }
    }
    if let Some(hs) = &m.hosts {
        match &ev.host {
            Some(h) if hs.is_match(h) => {}
            _ => return false,
        }
    }
    true
}

/// Whole seconds, for summaries.
fn secs_text(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{}s", s as u64)
    } else {
        format!("{s:.1}s")
    }
}

#[cfg(test)]
mod tests;
