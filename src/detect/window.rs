//! Per-key detector state: a bucketed sliding window (or a distinct-value set), the episode
//! being accumulated towards an alert, and the suppression that aggregates what follows.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

use super::{DetectStats, Event, KeyValue};
use crate::capture::Timestamp;
use crate::rules::{Detector, Rule};
use crate::token::{TokenHash, Verdict};

/// Buckets per window: counts are exact to 1/128 of the window.
const BUCKETS: u64 = 128;
/// Distinct values listed in evidence.
const MAX_LISTED: usize = 16;
/// Endpoints listed in evidence (the rest are counted as `other`).
const MAX_ENDPOINTS: usize = 8;

/// A value that is either unset, the same for every event so far, or mixed.
#[derive(Clone, Debug, Default)]
pub(super) enum Same<T> {
    #[default]
    Unset,
    One(T),
    Mixed,
}

impl<T: PartialEq> Same<T> {
    fn add(&mut self, v: T) {
        match self {
            Same::Unset => *self = Same::One(v),
            Same::One(x) if *x == v => {}
            Same::One(_) => *self = Same::Mixed,
            Same::Mixed => {}
        }
    }

    pub fn one(&self) -> Option<&T> {
        match self {
            Same::One(x) => Some(x),
            _ => None,
        }
    }
}

/// `(method, route)` of a request.
pub(super) type EndpointKey = (Arc<str>, Arc<str>);

/// The requests an alert stands for, summarised with bounded memory.
#[derive(Clone, Debug)]
pub(super) struct Episode {
    pub count: u64,
    pub first: Timestamp,
    pub last: Timestamp,
    /// Distinct values counted when a distinct detector fired.
    pub distinct: Option<usize>,
    pub verdicts: [u32; Verdict::ALL.len()],
    pub endpoints: Vec<(EndpointKey, u32)>,
    pub endpoints_other: u32,
    pub addresses: Vec<IpAddr>,
    pub devices: Vec<Arc<str>>,
    pub users: Vec<Arc<str>>,
    pub tokens: Vec<TokenHash>,
    pub families: Vec<(Arc<str>, u32)>,
    pub statuses: Vec<(u16, u32)>,
    /// More distinct values were seen than listed, per list.
    pub truncated: bool,
    pub expired_for_max: Option<f64>,
    pub ip: Same<IpAddr>,
    pub device: Same<Option<Arc<str>>>,
    pub user: Same<Option<Arc<str>>>,
    pub endpoint: Same<Option<EndpointKey>>,
}

fn push_distinct<T: PartialEq>(v: &mut Vec<T>, x: T, truncated: &mut bool) {
    if !v.contains(&x) {
        if v.len() < MAX_LISTED {
            v.push(x);
        } else {
            *truncated = true;
        }
    }
}

fn bump<K: PartialEq>(v: &mut Vec<(K, u32)>, k: K, cap: usize) -> bool {
    if let Some(e) = v.iter_mut().find(|(x, _)| *x == k) {
        e.1 += 1;
        true
    } else if v.len() < cap {
        v.push((k, 1));
        true
    } else {
        false
    }
}

impl Episode {
    fn new(ts: Timestamp) -> Episode {
        Episode {
            count: 0,
            first: ts,
            last: ts,
            distinct: None,
            verdicts: [0; Verdict::ALL.len()],
            endpoints: Vec::new(),
            endpoints_other: 0,
            addresses: Vec::new(),
            devices: Vec::new(),
            users: Vec::new(),
            tokens: Vec::new(),
            families: Vec::new(),
            statuses: Vec::new(),
            truncated: false,
            expired_for_max: None,
            ip: Same::Unset,
            device: Same::Unset,
            user: Same::Unset,
            endpoint: Same::Unset,
        }
    }

    fn add(&mut self, ev: &Event) {
        self.count += 1;
        self.first = self.first.min(ev.ts);
        self.last = self.last.max(ev.ts);
        if let Some(c) = self.verdicts.get_mut(ev.verdict as usize) {
            *c += 1;
        }
        let ep = ev.method.clone().zip(ev.route.clone());
        if let Some(e) = &ep
            && !bump(&mut self.endpoints, e.clone(), MAX_ENDPOINTS)
        {
            self.endpoints_other += 1;
        }
        let t = &mut self.truncated;
        push_distinct(&mut self.addresses, ev.actor.ip, t);
        if let Some(d) = &ev.actor.device {
            push_distinct(&mut self.devices, d.clone(), t);
        }
        if let Some(u) = &ev.actor.user {
            push_distinct(&mut self.users, u.clone(), t);
        }
        if let Some(tok) = ev.token {
            push_distinct(&mut self.tokens, tok, t);
        }
        if let Some(f) = &ev.family
            && !bump(&mut self.families, f.clone(), 4)
        {
            self.truncated = true;
        }
        if let Some(s) = ev.status
            && !bump(&mut self.statuses, s, MAX_LISTED)
        {
            self.truncated = true;
        }
        if let Some(e) = ev.expired_for {
            self.expired_for_max = Some(self.expired_for_max.map_or(e, |m| m.max(e)));
        }
        self.ip.add(ev.actor.ip);
        self.device.add(ev.actor.device.clone());
        self.user.add(ev.actor.user.clone());
        self.endpoint.add(ep);
    }
}

/// State of one key under one rule.
pub(super) struct KeyState {
    bucket_ns: u64,
    /// (bucket index, events) for count detectors, oldest first.
    buckets: VecDeque<(u64, u32)>,
    /// Value → last bucket index seen, for distinct detectors.
    distinct: HashMap<KeyValue, u64, foldhash::fast::RandomState>,
    episode: Option<Episode>,
    suppressed_until: Option<Timestamp>,
    pending: Option<Episode>,
    last_seen: Timestamp,
}

impl KeyState {
    pub fn new(det: &Detector) -> KeyState {
        let window_ns = u64::try_from(det.window().as_nanos()).unwrap_or(u64::MAX);
        KeyState {
            bucket_ns: (window_ns / BUCKETS).max(1),
            buckets: VecDeque::new(),
            distinct: HashMap::default(),
            episode: None,
            suppressed_until: None,
            pending: None,
            last_seen: Timestamp::ZERO,
        }
    }

    /// Oldest bucket index still inside the window ending at bucket `cur`.
    fn horizon(cur: u64) -> u64 {
        cur.saturating_sub(BUCKETS - 1)
    }

    /// Takes one matching event; `Some` when the detector fires (the episode to alert on).
    pub fn observe(
        &mut self,
        rule: &Rule,
        ev: &Event,
        distinct: Option<KeyValue>,
        stats: &mut DetectStats,
    ) -> Option<Episode> {
        self.last_seen = self.last_seen.max(ev.ts);
        if let Some(until) = self.suppressed_until
            && ev.ts < until
        {
            self.pending
                .get_or_insert_with(|| Episode::new(ev.ts))
                .add(ev);
            stats.aggregated_events += 1;
            return None;
        }
        let cur = ev.ts.0 / self.bucket_ns;
        let horizon = Self::horizon(cur);
        let fired = match (&rule.detector, distinct) {
            (Detector::Threshold { threshold, .. }, _) => {
                while self.buckets.front().is_some_and(|(i, _)| *i < horizon) {
                    self.buckets.pop_front();
                }
                if self.buckets.is_empty() {
                    self.episode = None;
                }
                match self.buckets.back_mut() {
                    Some((i, n)) if *i == cur => *n += 1,
                    // Out-of-order events older than the newest bucket count in it.
                    Some((i, n)) if *i > cur => *n += 1,
                    _ => self.buckets.push_back((cur, 1)),
                }
                let total: u64 = self.buckets.iter().map(|(_, n)| u64::from(*n)).sum();
                total >= u64::from(*threshold)
            }
            (Detector::Distinct { threshold, .. }, Some(value)) => {
                let fresh = !self.distinct.contains_key(&value);
                if fresh && self.distinct.len() + 1 >= *threshold as usize {
                    self.distinct.retain(|_, i| *i >= horizon);
                }
                if self.distinct.is_empty() {
                    self.episode = None;
                }
                let slot = self.distinct.entry(value).or_insert(cur);
                *slot = (*slot).max(cur);
                self.distinct.len() >= *threshold as usize
            }
            // The engine skips distinct rules for events without the counted value.
            (Detector::Distinct { .. }, None) => false,
        };
        self.episode
            .get_or_insert_with(|| Episode::new(ev.ts))
            .add(ev);
        if !fired {
            return None;
        }
        let mut episode = self.episode.take()?;
        if matches!(rule.detector, Detector::Distinct { .. }) {
            episode.distinct = Some(self.distinct.len());
        }
        self.buckets.clear();
        self.distinct.clear();
        self.pending = None;
        self.suppressed_until =
            (!rule.suppress.is_zero()).then(|| ev.ts.saturating_add(rule.suppress));
        Some(episode)
    }

    /// At packet time `now`: when the suppression window has ended, the aggregate of what
    /// came during it (if anything came; suppression then continues for another window),
    /// else the key returns to detection.
    pub fn due_follow_up(&mut self, now: Timestamp, rule: &Rule) -> Option<Episode> {
        let until = self.suppressed_until?;
        if now < until {
            return None;
        }
        match self.pending.take() {
            Some(e) => {
                self.suppressed_until = Some(until.saturating_add(rule.suppress));
                Some(e)
            }
            None => {
                self.suppressed_until = None;
                None
            }
        }
    }

    /// The open aggregate, at the end of input.
    pub fn take_pending(&mut self) -> Option<Episode> {
        self.pending.take()
    }

    /// Nothing pending or suppressed, and no event inside the window: safe to forget.
    pub fn idle(&self, now: Timestamp, window: std::time::Duration) -> bool {
        self.pending.is_none()
            && self.suppressed_until.is_none_or(|u| u <= now)
            && self.last_seen.saturating_add(window) < now
    }
}
