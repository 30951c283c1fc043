//! A detect shard: the rule state (per-key windows and episodes, baselines) of the keys it
//! owns.
//!
//! Input: [`ShardMsg`]s in stream order, each numbered by the engine's sequence: an
//! enriched event with the rules it matched that this shard owns the key of, a sweep, a
//! rule set swap, a mark, the end. Output: alerts tagged with a [`MergeKey`] that orders
//! them as one unsharded engine would (stream position, phase, rule, then the key's own
//! order), so the engine's merge gives the same alerts whatever the shard count. Keys of a
//! rule go to the shard of their hash; baseline and outlier rules keyed by endpoint go by the
//! endpoint alone (the endpoint's baseline is learned from all its keys), and other baseline
//! rules stay on shard 0. Limits: the per-rule key cap and the keys' and baselines' shares of
//! the memory budget are split evenly between shards. A shard's state can be saved and
//! restored ([`Shard::checkpoint`], [`Shard::restore`]; see [`checkpoint`]).

use std::sync::Arc;

pub mod checkpoint;
pub use checkpoint::{CHECKPOINT_VERSION, CheckpointError, RestoreNote};

use hdrhistogram::Histogram;
use std::collections::HashMap;

use super::window::{self, Episode, KeyState, Observed, Sample};
use super::{Alert, DetectStats, Event, KeyField, KeyValue, alert, matcher_matches};
use crate::budget::{Table, Usage};
use crate::capture::Timestamp;
use crate::rules::{DetectorKind, Rule, RuleId, RuleSet};

/// Version of the shard messages: a shard refuses messages of another version. 2: an
/// event's `body_bytes` is a `u32` (saturated). 3: a response scan carries its owner field
/// (`Scan::owner`).
pub const PROTOCOL: u16 = 3;

/// The rules of one event a shard runs (indexes into the rule set), inline up to 16: the
/// built-in pack matches 8 to 10 rules for 97% of the realistic capture's requests (19 at
/// most). Serialized as a plain sequence, whatever the inline size.
pub type RuleList = smallvec::SmallVec<[u16; 16]>;

/// One message to a shard. Serializable (with [`PROTOCOL`] as its version) so that a shard
/// can run in another process; a rule set swap is not sent over the wire (every shard
/// loads the same rules), so its variant is skipped.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum ShardMsg {
    /// Swap in a new rule set (unchanged rules keep their state).
    #[serde(skip)]
    Rules { seq: u64, set: Arc<RuleSet> },
    /// Emit due follow-ups and forget idle keys at packet time `now`.
    Sweep { seq: u64, now: Timestamp },
    /// An enriched event and the indexes of the matched rules whose key this shard owns.
    Event {
        seq: u64,
        event: Arc<Event>,
        rules: RuleList,
    },
    /// Everything up to `seq` has been sent.
    Mark { seq: u64 },
    /// End of input: every open aggregate is emitted.
    Finish,
}

/// Where an alert stands in the merged output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Rules,
    Sweep,
    Budget,
    Event,
    Finish,
}

/// Orders alerts from several shards as one engine would emit them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct MergeKey {
    pub seq: u64,
    pub phase: Phase,
    pub rule: u32,
    /// Sweeps and flushes order a rule's alerts by (first request, key) across shards.
    pub first: Timestamp,
    pub key: Option<KeyValue>,
    pub shard: u32,
    /// Emission order within one shard's handling of a (stream position, rule).
    pub sub: u32,
}

/// An alert and its place in the merged output.
#[derive(Debug)]
pub struct Tagged {
    pub key: MergeKey,
    pub alert: Alert,
}

impl PartialEq for Tagged {
    fn eq(&self, o: &Self) -> bool {
        self.key == o.key
    }
}
impl Eq for Tagged {}
impl PartialOrd for Tagged {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Tagged {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.key.cmp(&o.key)
    }
}

/// How a rule's events are spread over shards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Spread {
    /// By the hash of the rule's key.
    Key,
    /// By the endpoint alone: a baseline or outlier rule keyed by endpoint.
    Endpoint,
    /// All on shard 0: a baseline rule whose keys do not include the endpoint.
    First,
}

impl Spread {
    pub fn of(rule: &Rule) -> Spread {
        let d = &rule.detector;
        match d.kind {
            DetectorKind::Baseline { .. } | DetectorKind::Outlier { .. } => {
                if d.group_by.contains(&KeyField::Endpoint) {
                    Spread::Endpoint
                } else {
                    Spread::First
                }
            }
            _ => Spread::Key,
        }
    }
}

/// The shard owning a rule's key for an event, of `n`; `None` when the event lacks the
/// value the rule spreads by (it then has no key for the rule, which ignores it). A shard
/// sent an event without the rule's key skips the rule, as one engine would.
pub(super) fn shard_of(spread: Spread, rule: &Rule, ev: &Event, n: usize) -> Option<usize> {
    use std::hash::BuildHasher;
    if n <= 1 || spread == Spread::First {
        return Some(0);
    }
    let h = foldhash::fast::FixedState::with_seed(0x7368_6172_6473);
    let hash = match spread {
        Spread::Endpoint => h.hash_one(ev.key(KeyField::Endpoint)?),
        _ => h.hash_one(ev.lookup_key(&rule.detector.group_by)?),
    };
    Some((hash % n as u64) as usize)
}

pub(super) struct RuleState {
    pub rule: Arc<Rule>,
    /// Each key's state boxed: a slot is the key and a pointer, so the table's buckets
    /// (empty ones too, at up to half its capacity after it grows) stay small, and the
    /// state a request reads (its window and episode) is one allocation. Inline, the
    /// slots were 144 bytes and peak RSS 5 to 6 MiB higher on the realistic capture.
    keys: KeyTable,
    /// Bytes the keys hold beyond their table slots (tuples, windows, episodes).
    heap: usize,
    /// Baseline detectors: per endpoint, the per-key request counts of closed windows.
    baselines: Baselines,
    /// Bytes the baselines hold.
    baseline_bytes: usize,
    /// The keys a sweep may change, by the second of packet time from which it may (see
    /// [`Schedule`]): a sweep visits those, not every key of the rule.
    schedule: Schedule,
}

/// A rule's keys filed by the sweep that may first change them: the second of packet
/// time of their [`KeyState::quiet_until`] (a suppression ending, a baseline window
/// closing, the key going idle). Before it, a sweep leaves a key as it is (its follow-up
/// is not due, its window is open, it is not idle, and its weight changes only as it
/// observes a request, which weighs it). A sweep takes the buckets that are due and
/// visits only their keys; a key visited files itself again under its next bound.
///
/// A walk of every key of a rule, once any key of it could change, came nearly every
/// second once the tables held minutes of keys (each going idle a window after its last
/// request): on the 3x realistic capture it was 3% of the CPU samples, each key's state a
/// cache miss away. Filed, a key is visited about once per window.
///
/// Filing is lazy: a key observed again whose bound moved later stays where it is filed
/// (a visit that comes early changes nothing, and files it again); one whose bound moved
/// earlier (a suppression starting, a baseline window opening) is filed again, and the
/// entry it had is stale ([`KeyState::filed`] tells the entry that counts). Stale
/// entries and those of keys evicted meanwhile go as their buckets are taken; when they
/// outnumber the keys (a flood of keys evicted at the cap), the schedule is made afresh.
#[derive(Default)]
struct Schedule {
    buckets: std::collections::BTreeMap<u64, Vec<KeyValue>>,
    entries: usize,
}

/// The sweep second a packet time falls in.
fn second(t: Timestamp) -> u64 {
    t.0 / super::SWEEP_NANOS
}

impl Schedule {
    fn file(&mut self, second: u64, k: KeyValue) {
        self.buckets.entry(second).or_default().push(k);
        self.entries += 1;
    }

    /// Whether a sweep at `now` has keys to visit.
    fn due(&self, now: Timestamp) -> bool {
        self.buckets
            .first_key_value()
            .is_some_and(|(s, _)| *s <= second(now))
    }

    /// Takes the buckets due at `now` (in order, earliest first).
    fn take_due(&mut self, now: Timestamp) -> std::collections::BTreeMap<u64, Vec<KeyValue>> {
        let later = match second(now).checked_add(1) {
            Some(next) => self.buckets.split_off(&next),
            None => std::collections::BTreeMap::new(),
        };
        let due = std::mem::replace(&mut self.buckets, later);
        let taken: usize = due.values().map(Vec::len).sum();
        self.entries -= taken;
        due
    }

    fn clear(&mut self) {
        self.buckets.clear();
        self.entries = 0;
    }

    /// Files every key afresh where it is filed (after a restore, or when stale entries
    /// outnumber the keys).
    fn rebuild(&mut self, keys: &KeyTable) {
        self.clear();
        for (k, ks) in keys {
            self.file(ks.filed, k.clone());
        }
    }
}

type KeyTable = hashbrown::HashMap<KeyValue, Box<KeyState>, foldhash::fast::RandomState>;

/// Files a key under the sweep that may first change it, when that is earlier than where
/// it is filed: the second to add its entry under (the caller adds it, with the key).
fn refile(ks: &mut KeyState, rule: &Rule) -> Option<u64> {
    let s = second(ks.quiet_until(rule));
    (s < ks.filed).then(|| {
        ks.filed = s;
        s
    })
}

/// A key table slot (the key and its state's box, a control byte, at 7/8 load), the
/// box's state (its episode inline), and two entries of its rule's [`Schedule`] (each
/// sweep leaves at most two per key and a constant more: see
/// [`RuleState::compact_schedule`]; its buckets, one per second a key is filed under,
/// are not charged). Charged per key, not counted from the schedule, so that a rule's
/// accounting is the same whatever its keys' history (a restored rule's schedule has no
/// stale entries).
const KEY_SLOT_BYTES: usize = (std::mem::size_of::<(KeyValue, Box<KeyState>)>() + 1) * 8 / 7
    + std::mem::size_of::<KeyState>()
    + 2 * std::mem::size_of::<KeyValue>();

/// The endpoint a new key of a baseline or outlier detector learns and reads levels
/// under; `None` for other kinds.
fn baseline_endpoint(det: &crate::rules::Detector, ev: &Event) -> Option<KeyValue> {
    matches!(
        det.kind,
        DetectorKind::Baseline { .. } | DetectorKind::Outlier { .. }
    )
    .then(|| ev.key(KeyField::Endpoint))
    .flatten()
}

/// Weighs a key afresh (`k_heap`: its [`key_heap`]) and moves its rule's `heap` by the
/// change. Keys are weighed where their state changes, while it is in cache: after each
/// request they observe and at each sweep that walks them. An exact weighing of every key
/// of every rule every tenth sweep (a walk of states in no cache, whose lists' capacities
/// sat in their own buffers) took a sixth of the realistic capture's last-level read
/// misses.
fn reweigh(k_heap: usize, ks: &mut KeyState, heap: &mut usize) {
    let w = key_weight(k_heap, ks);
    *heap = heap.saturating_sub(ks.charged).saturating_add(w);
    ks.charged = w;
}

/// What a key costs beyond its slot (`k_heap`: its [`key_heap`]).
fn key_weight(k_heap: usize, ks: &KeyState) -> usize {
    k_heap + ks.bytes() - std::mem::size_of::<KeyState>()
}

/// Makes room for one more key of a rule at its cap: idle keys are swept first, then
/// the least recently seen tenth is evicted.
fn make_room(
    st: &mut RuleState,
    cap: usize,
    now: Timestamp,
    room: bool,
    stats: &mut DetectStats,
    em: &mut Emit<'_>,
) {
    if st.keys.len() >= cap {
        sweep_rule(st, now, room, stats, em);
        if st.keys.len() >= cap {
            stats.keys_over_cap += 1;
            evict_oldest(st, stats, em);
        }
    }
}

/// What a key owns beyond its slot: a tuple's parts (strings are shared, not counted).
fn key_heap(k: &KeyValue) -> usize {
    match k {
        KeyValue::Tuple(parts) => 16 + parts.len() * std::mem::size_of::<KeyValue>(),
        _ => 0,
    }
}

/// Bytes of one learned baseline: its slot and the histogram's counts.
fn baseline_bytes(h: &Histogram<u64>) -> usize {
    std::mem::size_of::<(KeyValue, Baseline)>() + 1 + h.distinct_values() * 8
}

/// One endpoint's learned samples, and its level at the rule's quantile. The level is read
/// for every request of the endpoint and an outlier rule learns a sample from nearly every
/// response, so once read it is kept up to date sample by sample (a step from one bucket
/// to the next at most, nearly always none) instead of walked out of the histogram again
/// after each: that walk was 1.3% of all cycles on the realistic capture.
pub(super) struct Baseline {
    pub hist: Histogram<u64>,
    level: Option<Level>,
}

/// [`Histogram::value_at_quantile`] kept current: the value it returns, and how many
/// samples lie in buckets below that value's bucket. With `target` the rank it looks for
/// (`ceil(q * samples)`, at least 1), `below < target <= below + count_at(value)`.
#[derive(Clone, Copy, Debug)]
struct Level {
    value: u64,
    below: u64,
}

/// The rank [`Histogram::value_at_quantile`] looks for: the same arithmetic.
fn quantile_rank(q: f64, samples: u64) -> u64 {
    ((q.min(1.0) * samples as f64).ceil() as u64).max(1)
}

impl Baseline {
    pub(super) fn new(hist: Histogram<u64>) -> Baseline {
        Baseline { hist, level: None }
    }

    /// The level at quantile `q` (always the same `q`: the rule's).
    fn level(&mut self, q: f64) -> u64 {
        if let Some(l) = self.level {
            return l.value;
        }
        let value = self.hist.value_at_quantile(q);
        // Quantile 0 is the lowest value of its bucket, not the highest: walked each time.
        if q > 0.0 && !self.hist.is_empty() {
            let low = self.hist.lowest_equivalent(value);
            let below = match low.checked_sub(1) {
                Some(top) => self.hist.count_between(0, top),
                None => 0,
            };
            self.level = Some(Level { value, below });
        }
        value
    }

    /// Records sample `v` (at most `high`), keeping the level at quantile `q` current.
    fn record(&mut self, v: u64, high: u64, q: f64) {
        let v = v.min(high);
        // `record` grows the histogram to the value; `saturating_record` never grows it and
        // would clamp anything past its first range (255 at 2 digits) to that range's bound.
        if self.hist.record(v).is_err() {
            self.hist.saturating_record(v);
            // Where the sample landed is not known: walked afresh when next read.
            self.level = None;
            return;
        }
        let Some(mut l) = self.level.take() else {
            return;
        };
        let h = &self.hist;
        if h.lowest_equivalent(v) < h.lowest_equivalent(l.value) {
            l.below += 1;
        }
        let target = quantile_rank(q, h.len());
        // One step nearly always; bounded by the buckets in any case (never a hang, should
        // the counts disagree: then the level is walked afresh).
        for _ in 0..=h.distinct_values() {
            let here = h.count_at(l.value);
            if l.below + here < target {
                l.below += here;
                l.value = h.highest_equivalent(h.next_non_equivalent(l.value));
            } else if l.below >= target {
                let Some(lower) = h.lowest_equivalent(l.value).checked_sub(1) else {
                    return;
                };
                l.value = h.highest_equivalent(lower);
                l.below = l.below.saturating_sub(h.count_at(l.value));
            } else {
                self.level = Some(l);
                return;
            }
        }
    }
}

/// The quantile a baseline or outlier rule's level is read at (0 for other kinds, which
/// learn nothing).
fn rule_quantile(rule: &Rule) -> f64 {
    match rule.detector.kind {
        DetectorKind::Baseline { quantile, .. } | DetectorKind::Outlier { quantile, .. } => {
            quantile
        }
        _ => 0.0,
    }
}

type Baselines = hashbrown::HashMap<KeyValue, Baseline, foldhash::fast::RandomState>;

impl RuleState {
    fn new(rule: Arc<Rule>) -> RuleState {
        RuleState {
            rule,
            keys: hashbrown::HashMap::default(),
            heap: 0,
            baselines: hashbrown::HashMap::default(),
            baseline_bytes: 0,
            schedule: Schedule::default(),
        }
    }

    fn bytes(&self) -> usize {
        self.keys.len() * KEY_SLOT_BYTES + self.heap
    }

    /// Files keys restored from a checkpoint (their filing is not saved).
    pub(super) fn file_all(&mut self) {
        for ks in self.keys.values_mut() {
            ks.filed = second(ks.quiet_until(&self.rule));
        }
        self.schedule.rebuild(&self.keys);
    }

    /// Stale entries (keys filed again earlier, or evicted) outnumbering the keys: the
    /// schedule is made afresh from the keys.
    fn compact_schedule(&mut self) {
        if self.schedule.entries > 2 * self.keys.len() + 1024 {
            self.schedule.rebuild(&self.keys);
        }
    }
}

/// Endpoints a baseline rule learns at most (routes are templated, so real APIs have far
/// fewer; the cap holds against route-explosion traffic).
const MAX_BASELINES: usize = 4096;

/// Runs one event through a key's detector and learns the baseline sample it gave (a
/// closed window, or a response that did not stand out). One at most per event, handed
/// back in an `Option`: outlier rules give one for nearly every response, and a buffer of
/// samples cost its setup and drop on every rule update.
fn observe_learning(
    ks: &mut KeyState,
    rule: &Rule,
    o: Observed<'_>,
    baselines: &mut Baselines,
    baseline_bytes: &mut usize,
    room: bool,
    stats: &mut DetectStats,
) -> Option<Box<Episode>> {
    let mut sample = None;
    let fired = ks.observe(rule, o, stats, &mut sample);
    if let Some(s) = sample {
        learn(
            baselines,
            baseline_bytes,
            room,
            s,
            rule_quantile(rule),
            stats,
        );
    }
    fired
}

/// Learns a closed window's sample. New endpoints are refused (counted) at the rule's cap
/// or when baselines reach `room` bytes: routes are templated, so the endpoints learned
/// first are the API's, and a later flood of invented ones must not push them out.
fn learn(
    baselines: &mut Baselines,
    bytes: &mut usize,
    room: bool,
    s: Sample,
    quantile: f64,
    stats: &mut DetectStats,
) {
    let baselines_len = baselines.len();
    // One probe: a known endpoint (nearly every sample) is found by the entry itself.
    match baselines.entry(s.endpoint) {
        hashbrown::hash_map::Entry::Vacant(_) if baselines_len >= MAX_BASELINES || !room => {
            stats.baselines_over_cap += 1;
        }
        hashbrown::hash_map::Entry::Occupied(o) => {
            record_sample(o.into_mut(), false, bytes, s.count, s.wide, quantile, stats);
        }
        hashbrown::hash_map::Entry::Vacant(v) => {
            // Auto-resizing at 2 significant digits: memory follows the largest value
            // learned (well under a KiB for typical counts), not the whole range, since a
            // rule may learn thousands of endpoints.
            if let Ok(h) = Histogram::new(2) {
                let b = v.insert(Baseline::new(h));
                record_sample(b, true, bytes, s.count, s.wide, quantile, stats);
            }
        }
    }
}

/// [`learn`] for an endpoint already learned: `false`, and nothing learned, for one that
/// is not (its sample may be refused at the cap, which depends on the order samples of new
/// endpoints come in; the samples of known endpoints give the same histograms, levels and
/// bytes in any order).
fn learn_known(
    baselines: &mut Baselines,
    bytes: &mut usize,
    endpoint: &KeyValue,
    count: u32,
    quantile: f64,
    stats: &mut DetectStats,
) -> bool {
    let Some(b) = baselines.get_mut(endpoint) else {
        return false;
    };
    record_sample(b, false, bytes, count, false, quantile, stats);
    true
}

/// Records a sample in an endpoint's baseline (`fresh`: just made, not yet charged) and
/// charges what its histogram grew by.
fn record_sample(
    b: &mut Baseline,
    fresh: bool,
    bytes: &mut usize,
    count: u32,
    wide: bool,
    quantile: f64,
    stats: &mut DetectStats,
) {
    let before = if fresh { 0 } else { baseline_bytes(&b.hist) };
    // Counts up to a million per window; body sizes up to 4 GiB.
    let high = if wide { u64::from(u32::MAX) } else { 1_000_000 };
    b.record(u64::from(count), high, quantile);
    *bytes = (*bytes + baseline_bytes(&b.hist)).saturating_sub(before);
    stats.baseline_samples += 1;
}

/// Where emitted alerts go and how they are keyed.
struct Emit<'a> {
    out: &'a mut Vec<Tagged>,
    seq: u64,
    phase: Phase,
    rule: u32,
    shard: u32,
    sub: u32,
    /// Key alerts by (first, key) rather than by emission order.
    sorted: bool,
}

impl Emit<'_> {
    fn emit(
        &mut self,
        rule: &Rule,
        key: &KeyValue,
        episode: Episode,
        follow_up: bool,
        stats: &mut DetectStats,
    ) {
        stats.alerts += 1;
        if follow_up {
            stats.follow_up_alerts += 1;
        }
        match stats.alerts_by_rule.get_mut(rule.id.as_str()) {
            Some(n) => *n += 1,
            None => {
                stats.alerts_by_rule.insert(rule.id.as_str().to_string(), 1);
            }
        }
        let (first, k) = if self.sorted {
            (episode.first, Some(key.clone()))
        } else {
            (Timestamp::ZERO, None)
        };
        let mk = MergeKey {
            seq: self.seq,
            phase: self.phase,
            rule: self.rule,
            first,
            key: k,
            shard: self.shard,
            sub: self.sub,
        };
        self.sub += 1;
        self.out.push(Tagged {
            key: mk,
            alert: alert::build(rule, key, episode, follow_up),
        });
    }
}

/// Settings of one shard (its part of the engine's).
#[derive(Clone, Copy, Debug)]
pub struct ShardConfig {
    pub index: u32,
    pub max_keys_per_rule: usize,
    pub keys_limit: usize,
    pub baselines_limit: usize,
}

/// One shard's rule state.
pub struct Shard {
    cfg: ShardConfig,
    rules: Vec<RuleState>,
    stats: DetectStats,
    now: Timestamp,
    /// The highest stream position handled.
    done: u64,
    /// Sweeps so far (saved in checkpoints).
    sweeps: u64,
}

impl Shard {
    pub fn new(cfg: ShardConfig, set: &RuleSet) -> Shard {
        Shard {
            cfg,
            rules: set
                .rules
                .iter()
                .map(|r| RuleState::new(r.clone()))
                .collect(),
            stats: DetectStats::default(),
            now: Timestamp::ZERO,
            done: 0,
            sweeps: 0,
        }
    }

    pub fn done(&self) -> u64 {
        self.done
    }

    /// Counters of what this shard emitted and evicted.
    pub fn stats(&self) -> &DetectStats {
        &self.stats
    }

    /// Handles one message; alerts are appended to `out`.
    pub fn handle(&mut self, msg: ShardMsg, out: &mut Vec<Tagged>) {
        match msg {
            ShardMsg::Rules { seq, set } => {
                self.replace_rules(seq, &set, out);
                self.done = self.done.max(seq.saturating_sub(1));
            }
            ShardMsg::Sweep { seq, now } => {
                self.sweep(seq, now, out);
                self.done = self.done.max(seq);
            }
            ShardMsg::Event { seq, event, rules } => {
                self.observe(seq, &event, &rules, out);
                self.done = self.done.max(seq);
            }
            ShardMsg::Mark { seq } => self.done = self.done.max(seq),
            ShardMsg::Finish => {
                self.finish(out);
                self.done = u64::MAX;
            }
        }
    }

    fn emitter<'a>(&self, out: &'a mut Vec<Tagged>, seq: u64, phase: Phase) -> Emit<'a> {
        Emit {
            out,
            seq,
            phase,
            rule: 0,
            shard: self.cfg.index,
            sub: 0,
            sorted: matches!(phase, Phase::Rules | Phase::Sweep | Phase::Finish),
        }
    }

    /// Swaps in a new rule set. Rules whose definition is unchanged keep their windows and
    /// open aggregates; new or changed rules start empty; removed or changed rules first
    /// emit their open aggregates (follow-ups), so no folded request goes unreported.
    fn replace_rules(&mut self, seq: u64, set: &RuleSet, out: &mut Vec<Tagged>) {
        let mut em = self.emitter(out, seq, Phase::Rules);
        let mut old: HashMap<RuleId, RuleState> = self
            .rules
            .drain(..)
            .map(|s| (s.rule.id.clone(), s))
            .collect();
        for (i, r) in set.rules.iter().enumerate() {
            em.rule = i as u32;
            match old.remove(&r.id) {
                Some(mut st) if st.rule.fingerprint == r.fingerprint => {
                    st.rule = r.clone();
                    self.rules.push(st);
                }
                Some(mut st) => {
                    flush_rule(&mut st, &mut self.stats, &mut em);
                    self.rules.push(RuleState::new(r.clone()));
                }
                None => self.rules.push(RuleState::new(r.clone())),
            }
        }
        let mut removed: Vec<RuleState> = old.into_values().collect();
        removed.sort_by(|a, b| a.rule.id.cmp(&b.rule.id));
        for (i, mut st) in removed.into_iter().enumerate() {
            em.rule = (set.rules.len() + i) as u32;
            flush_rule(&mut st, &mut self.stats, &mut em);
        }
    }

    fn keys_bytes(&self) -> usize {
        self.rules.iter().map(RuleState::bytes).sum()
    }

    /// Baselines may learn new endpoints: they are within their share.
    fn baseline_room(&self) -> bool {
        self.rules.iter().map(|r| r.baseline_bytes).sum::<usize>() < self.cfg.baselines_limit
    }

    /// At the keys' share of the budget, the rule holding the most gives up its least
    /// recently seen tenth (open aggregates are emitted first), until they fit.
    fn keys_within_budget(&mut self, seq: u64, out: &mut Vec<Tagged>) {
        let mut em = self.emitter(out, seq, Phase::Budget);
        for _ in 0..16 {
            if self.keys_bytes() < self.cfg.keys_limit {
                return;
            }
            let Some((i, st)) = self
                .rules
                .iter_mut()
                .enumerate()
                .filter(|(_, r)| !r.keys.is_empty())
                .max_by_key(|(_, r)| r.bytes())
            else {
                return;
            };
            self.stats.keys_over_budget += 1;
            em.rule = i as u32;
            evict_oldest(st, &mut self.stats, &mut em);
        }
    }

    /// Runs the given rules (indexes into the rule set) over one event.
    fn observe(&mut self, seq: u64, ev: &Event, rules: &[u16], out: &mut Vec<Tagged>) {
        if ev.ts > self.now {
            self.now = ev.ts;
        }
        self.keys_within_budget(seq, out);
        let room = self.baseline_room();
        let cap = self.cfg.max_keys_per_rule;
        let now = self.now;
        for &i in rules {
            let Some(st) = self.rules.get_mut(usize::from(i)) else {
                continue;
            };
            let mut em = Emit {
                out: &mut *out,
                seq,
                phase: Phase::Event,
                rule: u32::from(i),
                shard: self.cfg.index,
                sub: 0,
                sorted: false,
            };
            // The rule is borrowed from its state, not cloned: an `Arc` count changed for
            // every rule of every event is measurable.
            let det = &st.rule.detector;
            let Some(key) = ev.lookup_key(&det.group_by) else {
                continue;
            };
            let mut o = Observed {
                ev,
                distinct: None,
                when: false,
                level: None,
            };
            // An outlier detector's endpoint baseline, found for its level: a response that
            // does not stand out is learned into it without a second look-up.
            let mut endpoint_baseline = None;
            match &det.kind {
                DetectorKind::Distinct(field) | DetectorKind::Concurrent { field, .. } => {
                    match ev.key(*field) {
                        Some(v) => o.distinct = Some(v),
                        // Nothing to count distinct values of.
                        None => continue,
                    }
                }
                DetectorKind::Ratio { when, .. } | DetectorKind::Mixed { when } => {
                    o.when = matcher_matches(when, ev);
                }
                DetectorKind::Sequence if ev.number.is_none() => continue,
                DetectorKind::Baseline {
                    quantile,
                    learn_min,
                    ..
                }
                | DetectorKind::Outlier {
                    quantile,
                    learn_min,
                    ..
                } => {
                    // Borrowed, as the key itself is: no reference count of the shared
                    // endpoint string changed twice per event.
                    if let Some(b) = ev
                        .key_ref(KeyField::Endpoint)
                        .and_then(|e| st.baselines.get_mut(&e))
                    {
                        o.level = (b.hist.len() >= u64::from(*learn_min))
                            .then(|| b.level(*quantile) as f64);
                        endpoint_baseline = Some(b);
                    }
                }
                _ => {}
            }
            // An outlier detector keeps nothing per key until it fires (each response is
            // judged on its own against its endpoint's level): a key that is not held and
            // does not fire now is judged on a scratch state and never stored, so the
            // table holds only keys under suppression, not every (endpoint, client) seen.
            let fresh_outlier =
                matches!(det.kind, DetectorKind::Outlier { .. }) && !st.keys.contains_key(&key);
            if fresh_outlier {
                // Nearly every response: judged and learned from without a state made and
                // dropped for it (what `observe` would do for a fresh key).
                if let Some(judged) = window::outlier(det, ev, o.level)
                    && judged.stands_out.is_none()
                {
                    if let Some(b) = endpoint_baseline {
                        // What `learn` does for an endpoint it has learned.
                        record_sample(
                            b,
                            false,
                            &mut st.baseline_bytes,
                            judged.size,
                            judged.wide,
                            rule_quantile(&st.rule),
                            &mut self.stats,
                        );
                    } else if let Some(endpoint) = baseline_endpoint(det, ev) {
                        learn(
                            &mut st.baselines,
                            &mut st.baseline_bytes,
                            room,
                            judged.sample(endpoint),
                            rule_quantile(&st.rule),
                            &mut self.stats,
                        );
                    }
                    continue;
                }
                let mut ks = KeyState::new(det, baseline_endpoint(det, ev));
                let fired = observe_learning(
                    &mut ks,
                    &st.rule,
                    o,
                    &mut st.baselines,
                    &mut st.baseline_bytes,
                    room,
                    &mut self.stats,
                );
                let Some(episode) = fired else {
                    continue;
                };
                make_room(st, cap, now, room, &mut self.stats, &mut em);
                let k = KeyValue::from(&key);
                reweigh(key_heap(&k), &mut ks, &mut st.heap);
                if let Some(s) = refile(&mut ks, &st.rule) {
                    st.schedule.file(s, k.clone());
                }
                st.keys.insert(k, Box::new(ks));
                em.emit(&st.rule, &(&key).into(), *episode, false, &mut self.stats);
                continue;
            }
            // Below the cap (nearly always) a new key needs no room made: one probe finds
            // the key or its slot.
            if st.keys.len() >= cap && !st.keys.contains_key(&key) {
                make_room(st, cap, now, room, &mut self.stats, &mut em);
            }
            let RuleState {
                rule,
                keys,
                heap,
                baselines,
                baseline_bytes,
                schedule,
            } = st;
            let det = &rule.detector;
            // A new key's own copy for its schedule entry (an old key's is looked up again
            // in the rare case it is filed earlier).
            let mut new_key = None;
            let (k_heap, ks) = match keys.entry_ref(&key) {
                hashbrown::hash_map::EntryRef::Occupied(o) => (key_heap(o.key()), o.into_mut()),
                hashbrown::hash_map::EntryRef::Vacant(v) => {
                    let k = KeyValue::from(&key);
                    new_key = Some(k.clone());
                    // Weighed (charged) below, once it has observed the request.
                    let ks = KeyState::new(det, baseline_endpoint(det, ev));
                    (key_heap(&k), v.insert_with_key(k, Box::new(ks)))
                }
            };
            let stats = &mut self.stats;
            if let Some(episode) = ks.due_follow_up(ev.ts, rule) {
                em.emit(rule, &(&key).into(), episode, true, stats);
            }
            let fired = observe_learning(ks, rule, o, baselines, baseline_bytes, room, stats);
            reweigh(k_heap, ks, heap);
            if let Some(s) = refile(ks, rule) {
                let k = new_key.or_else(|| keys.get_key_value(&key).map(|(k, _)| k.clone()));
                if let Some(k) = k {
                    schedule.file(s, k);
                }
            }
            if let Some(episode) = fired {
                em.emit(rule, &(&key).into(), *episode, false, stats);
            }
        }
    }

    /// Emits follow-ups that are due and evicts idle keys, at packet time `now`.
    fn sweep(&mut self, seq: u64, now: Timestamp, out: &mut Vec<Tagged>) {
        if now > self.now {
            self.now = now;
        }
        let room = self.baseline_room();
        let now = self.now;
        // Wrapping: a restored count is whatever the checkpoint said.
        self.sweeps = self.sweeps.wrapping_add(1);
        let mut em = self.emitter(out, seq, Phase::Sweep);
        for (i, st) in self.rules.iter_mut().enumerate() {
            if !st.schedule.due(now) {
                continue;
            }
            em.rule = i as u32;
            sweep_rule(st, now, room, &mut self.stats, &mut em);
        }
    }

    /// End of input: every open aggregate is emitted.
    fn finish(&mut self, out: &mut Vec<Tagged>) {
        let mut em = self.emitter(out, u64::MAX, Phase::Finish);
        for (i, st) in self.rules.iter_mut().enumerate() {
            em.rule = i as u32;
            flush_rule(st, &mut self.stats, &mut em);
        }
    }

    /// The keys' and baselines' usage of the memory budget.
    pub fn memory(&self) -> [(Table, Usage); 2] {
        [
            (
                Table::Keys,
                Usage {
                    bytes: self.keys_bytes() as u64,
                    limit: self.cfg.keys_limit as u64,
                    entries: self.rules.iter().map(|r| r.keys.len() as u64).sum(),
                    evictions: self.stats.keys_evicted_full,
                },
            ),
            (
                Table::Baselines,
                Usage {
                    bytes: self.rules.iter().map(|r| r.baseline_bytes as u64).sum(),
                    limit: self.cfg.baselines_limit as u64,
                    entries: self.rules.iter().map(|r| r.baselines.len() as u64).sum(),
                    evictions: 0,
                },
            ),
        ]
    }

    /// Keys held across rules, and the most any one rule holds.
    pub fn tracked_keys(&self) -> (usize, usize) {
        let sizes = self.rules.iter().map(|r| r.keys.len());
        (sizes.clone().sum(), sizes.max().unwrap_or(0))
    }
}

/// Emits every open aggregate of a rule (in a fixed order) and forgets its keys.
fn flush_rule(st: &mut RuleState, stats: &mut DetectStats, em: &mut Emit<'_>) {
    let mut due: Vec<(KeyValue, Episode)> = st
        .keys
        .iter_mut()
        .filter_map(|(k, ks)| ks.take_pending().map(|e| (k.clone(), e)))
        .collect();
    due.sort_by(|a, b| (a.1.first, &a.0).cmp(&(b.1.first, &b.0)));
    for (k, e) in due {
        em.emit(&st.rule, &k, e, true, stats);
    }
    st.keys.clear();
    st.schedule.clear();
    st.heap = 0;
}

/// Emits a rule's due follow-ups, learns closed baseline windows and forgets idle keys:
/// visits the keys its schedule has due at `now` (see [`Schedule`]), weighs those kept
/// afresh and files them under their next bound.
fn sweep_rule(
    st: &mut RuleState,
    now: Timestamp,
    room: bool,
    stats: &mut DetectStats,
    em: &mut Emit<'_>,
) {
    let window = st.rule.detector.window;
    let quantile = rule_quantile(&st.rule);
    let RuleState {
        rule,
        keys,
        heap,
        baselines,
        baseline_bytes,
        schedule,
    } = st;
    let mut due: Vec<(KeyValue, Episode)> = Vec::new();
    // Closed windows of endpoints not learned yet: learned after the others, in key
    // order, so which of them the cap refuses does not depend on the order of visits.
    // The others are learned as they come (the same baselines in any order), their keys
    // neither copied nor sorted.
    let mut fresh = Vec::new();
    for (second_due, filed) in schedule.take_due(now) {
        for k in filed {
            // Gone (evicted since it was filed), or filed again since: nothing to do.
            let Some(ks) = keys.get_mut(&k) else {
                continue;
            };
            if ks.filed != second_due {
                continue;
            }
            if let Some(e) = ks.due_follow_up(now, rule) {
                due.push((k.clone(), e));
            }
            if let Some((endpoint, count)) = ks.closed_sample(now, &rule.detector)
                && !learn_known(baselines, baseline_bytes, endpoint, count, quantile, stats)
            {
                let s = Sample {
                    endpoint: endpoint.clone(),
                    count,
                    wide: false,
                };
                fresh.push((k.clone(), s));
            }
            if ks.idle(now, window) {
                *heap = heap.saturating_sub(ks.charged);
                stats.keys_evicted += 1;
                keys.remove(&k);
            } else {
                reweigh(key_heap(&k), ks, heap);
                ks.filed = second(ks.quiet_until(rule));
                schedule.file(ks.filed, k);
            }
        }
    }
    st.compact_schedule();
    fresh.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, s) in fresh {
        learn(
            &mut st.baselines,
            &mut st.baseline_bytes,
            room,
            s,
            quantile,
            stats,
        );
    }
    due.sort_by(|a, b| (a.1.first, &a.0).cmp(&(b.1.first, &b.0)));
    for (k, e) in due {
        em.emit(&st.rule, &k, e, true, stats);
    }
}

/// At the key cap with nothing idle: the least recently seen tenth of the keys goes (their
/// open aggregates are emitted first), so new actors are always tracked and a flood of
/// spoofed ones only ages out the quietest state.
fn evict_oldest(st: &mut RuleState, stats: &mut DetectStats, em: &mut Emit<'_>) {
    let ages = st
        .keys
        .iter()
        .map(|(k, ks)| (ks.last_seen(), k.clone()))
        .collect();
    for k in crate::actor::registry::oldest_tenth(ages) {
        if let Some(mut ks) = st.keys.remove(&k) {
            st.heap = st.heap.saturating_sub(ks.charged);
            stats.keys_evicted += 1;
            stats.keys_evicted_full += 1;
            if let Some(e) = ks.take_pending() {
                em.emit(&st.rule, &k, e, true, stats);
            }
        }
    }
    st.compact_schedule();
}

/// The settings of each of `n` shards: the per-rule key cap and the keys' and baselines'
/// shares of the memory budget split evenly.
pub fn configs(cfg: &super::DetectConfig, n: usize) -> Vec<ShardConfig> {
    let n = n.max(1);
    (0..n)
        .map(|i| ShardConfig {
            index: i as u32,
            max_keys_per_rule: cfg.max_keys_per_rule.div_ceil(n).max(1),
            keys_limit: cfg.budget.share_of(Table::Keys, n),
            baselines_limit: cfg.budget.share_of(Table::Baselines, n),
        })
        .collect()
}

/// Where the shards run: in the engine's thread ([`LocalShards`]) or on threads of their own
/// (the runtime's), later in other processes.
pub trait ShardHost: Send {
    fn count(&self) -> usize;
    /// Whether messages are handled as they are sent (the engine then settles after each).
    fn inline(&self) -> bool;
    /// Queues a message for a shard.
    fn send(&mut self, shard: usize, msg: ShardMsg);
    /// Hands every queued message over, followed by a mark: everything up to `seq` is sent.
    fn flush(&mut self, seq: u64);
    /// Moves the alerts the shards have emitted into `out` and each shard's progress (the
    /// stream position it has handled everything up to) into `done`; with `until`, first
    /// waits until every shard has got that far.
    fn poll(&mut self, until: Option<u64>, out: &mut Vec<Tagged>, done: &mut [u64]);
    /// The shards' counters, summed.
    fn stats(&self) -> DetectStats;
    /// The shards' keys and baselines, summed per table.
    fn memory(&self) -> Vec<(Table, Usage)>;
    /// Keys held across rules, and the most one rule holds on one shard.
    fn tracked_keys(&self) -> (usize, usize);
    /// The place of the next event in the packet-time order (see [`super::StreamOrder`]).
    fn note_order(&mut self, _order: &super::StreamOrder) {}
}

/// Sums shards' usage per table.
pub fn sum_memory<'a>(each: impl Iterator<Item = &'a [(Table, Usage)]>) -> Vec<(Table, Usage)> {
    let mut v: Vec<(Table, Usage)> = Vec::new();
    for list in each {
        for (t, u) in list {
            match v.iter_mut().find(|(x, _)| x == t) {
                Some((_, acc)) => acc.add(u),
                None => v.push((*t, *u)),
            }
        }
    }
    v
}

/// Shards run in the engine's thread, each message handled as it is sent.
pub struct LocalShards {
    shards: Vec<Shard>,
    out: Vec<Tagged>,
    sent: u64,
}

impl LocalShards {
    pub fn new(shards: Vec<Shard>) -> LocalShards {
        LocalShards {
            shards,
            out: Vec::new(),
            sent: 0,
        }
    }
}

impl ShardHost for LocalShards {
    fn count(&self) -> usize {
        self.shards.len()
    }

    fn inline(&self) -> bool {
        true
    }

    fn send(&mut self, shard: usize, msg: ShardMsg) {
        if let Some(s) = self.shards.get_mut(shard) {
            s.handle(msg, &mut self.out);
        }
    }

    fn flush(&mut self, seq: u64) {
        self.sent = self.sent.max(seq);
    }

    fn poll(&mut self, _until: Option<u64>, out: &mut Vec<Tagged>, done: &mut [u64]) {
        out.append(&mut self.out);
        for (d, s) in done.iter_mut().zip(&self.shards) {
            *d = s.done().max(self.sent);
        }
    }

    fn stats(&self) -> DetectStats {
        let mut s = DetectStats::default();
        for x in &self.shards {
            s.merge(x.stats());
        }
        s
    }

    fn memory(&self) -> Vec<(Table, Usage)> {
        let each: Vec<[(Table, Usage); 2]> = self.shards.iter().map(Shard::memory).collect();
        sum_memory(each.iter().map(|a| &a[..]))
    }

    fn tracked_keys(&self) -> (usize, usize) {
        self.shards
            .iter()
            .map(Shard::tracked_keys)
            .fold((0, 0), |(a, b), (x, y)| (a + x, b.max(y)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn baseline() -> Baseline {
        Baseline::new(Histogram::new(2).expect("histogram"))
    }

    /// The rules of one rule file's text.
    fn rule_set(yaml: &str) -> RuleSet {
        crate::rules::compile(
            &[("t.yaml".to_string(), yaml.to_string())],
            std::path::Path::new("."),
            "test",
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// One shard whose key and baseline tables are never full.
    fn unbounded() -> ShardConfig {
        ShardConfig {
            index: 0,
            max_keys_per_rule: 100_000,
            keys_limit: usize::MAX,
            baselines_limit: usize::MAX,
        }
    }

    #[test]
    fn level_steps_with_each_sample_as_the_walk_gives_it() {
        // Hand-picked: a flat run, a jump into a far bucket, values past the first range
        // (the histogram grows), one past `high` (clamped), and back down.
        let mut b = baseline();
        let q = 0.9;
        let mut levels = Vec::new();
        for v in [
            3, 3, 3, 3, 3, 3, 3, 3, 3, 900, 900, 70_000, 5, 2_000_000, 1, 1, 1, 1, 1, 1,
        ] {
            b.record(v, 1_000_000, q);
            let got = b.level(q);
            assert_eq!(got, b.hist.value_at_quantile(q), "after {v}");
            levels.push(got);
        }
        // The level moved: the test walks more than one bucket.
        levels.dedup();
        assert!(levels.len() >= 3, "{levels:?}");
    }

    proptest::proptest! {
        /// After any samples, the kept level is the one `value_at_quantile` walks out, at
        /// any quantile, whether read after every sample or now and then.
        #[test]
        fn kept_level_matches_the_walk(
            samples in proptest::collection::vec(
                proptest::prop_oneof![0u64..50, 0u64..5_000, 0u64..2_000_000],
                1..400,
            ),
            q in proptest::prop_oneof![
                proptest::strategy::Just(1.0),
                proptest::strategy::Just(0.5),
                proptest::strategy::Just(0.0),
                0.0f64..1.0,
            ],
            every in 1usize..7,
        ) {
            let mut b = baseline();
            for (i, v) in samples.iter().enumerate() {
                b.record(*v, 1_000_000, q);
                if i % every == 0 {
                    proptest::prop_assert_eq!(b.level(q), b.hist.value_at_quantile(q));
                }
            }
            proptest::prop_assert_eq!(b.level(q), b.hist.value_at_quantile(q));
        }
    }

    /// A threshold rule by address, a baseline rule by address and endpoint and a distinct
    /// rule by address (short windows and suppressions, so that keys fire, fold requests
    /// while suppressed, close baseline windows and go idle within minutes), the first and
    /// the last listing the given evidence.
    fn burst_volume_breadth(burst_evidence: &str, breadth_evidence: &str) -> RuleSet {
        rule_set(&format!(
            "rules:
  - id: t.burst
    description: d
    category: scraping
    severity: low
    detector:
      kind: threshold
      group_by: ip
      threshold: 5
      window_secs: 30
    suppress_secs: 20
    summary: s
    evidence: [{burst_evidence}]
  - id: t.volume
    description: d
    category: scraping
    severity: low
    detector:
      kind: baseline
      group_by: [ip, endpoint]
      threshold: 3
      window_secs: 7
      factor: 2
      quantile: 0.9
      learn_min_windows: 5
    suppress_secs: 10
    summary: s
  - id: t.breadth
    description: d
    category: scraping
    severity: low
    detector:
      kind: distinct
      group_by: ip
      distinct: object
      threshold: 4
      window_secs: 20
    suppress_secs: 15
    summary: s
    evidence: [{breadth_evidence}]
"
        ))
    }

    /// A flood of new keys at the cap (each seen once; a tenth evicted at a time) leaves
    /// every rule's schedule bounded: the entries of evicted keys, whose buckets come a
    /// window later, are dropped by rebuilding the schedule once they outnumber the keys.
    #[test]
    fn a_flood_of_keys_at_the_cap_keeps_the_schedules_bounded() {
        let set = burst_volume_breadth("addresses", "");
        let cap = 200;
        let cfg = ShardConfig {
            max_keys_per_rule: cap,
            ..unbounded()
        };
        let mut shard = Shard::new(cfg, &set);
        let mut out = Vec::new();
        let all = RuleList::from_slice(&[0, 1, 2]);
        let mut seq = 0;
        let mut most = 0;
        // 50 s of packet time, 1,000 new addresses a second, windows of 7 to 30 s.
        for i in 0..50_000u32 {
            let mut e = crate::detect::tests::ev(
                f64::from(i) / 1000.0,
                &format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255),
            );
            e.route = Some("/r".into());
            e.object = Some(format!("/o/{i}").into());
            let event = Arc::new(e);
            if i % 1000 == 0 {
                seq += 1;
                shard.handle(ShardMsg::Sweep { seq, now: event.ts }, &mut out);
            }
            seq += 1;
            let rules = all.clone();
            shard.handle(ShardMsg::Event { seq, event, rules }, &mut out);
            for st in &shard.rules {
                assert!(st.keys.len() <= cap);
                most = most.max(st.schedule.entries);
                assert!(
                    st.schedule.entries <= 3 * cap + 1024,
                    "{}: {} schedule entries for {} keys",
                    st.rule.id,
                    st.schedule.entries,
                    st.keys.len()
                );
            }
        }
        assert!(shard.stats.keys_evicted_full > 40_000, "{:?}", shard.stats);
        assert!(most > 2 * cap, "stale entries did pile up: {most}");
    }

    /// A sweep that visits only the keys its schedule has due (those whose
    /// `quiet_until` has come) leaves exactly what a walk of every key leaves: the same
    /// alerts (follow-ups of suppressed keys, baseline windows learned, idle keys
    /// forgotten) and the same saved state after every sweep, over minutes of packet time
    /// with keys going idle, firing, folding requests while suppressed and closing
    /// baseline windows; and it visits far fewer keys.
    #[test]
    fn scheduled_sweeps_leave_what_walking_every_key_leaves() {
        let set = burst_volume_breadth("addresses, statuses", "");
        let cfg = unbounded();
        // 240 s of packet time at 10 requests a second from 12 addresses: each active
        // for its own stretch (then idle), some in bursts that fire and keep coming while
        // suppressed, on a few routes and objects.
        let mut events = Vec::new();
        for tenth in 0..2400u32 {
            let secs = f64::from(tenth) / 10.0;
            let host = tenth.wrapping_mul(7) % 12;
            let active = (host * 20)..(host * 20 + 60 + (host % 3) * 40);
            if !active.contains(&(secs as u32)) {
                continue;
            }
            let mut e = crate::detect::tests::ev(secs, &format!("10.0.0.{host}"));
            e.route = Some(format!("/r/{}", tenth % 3).into());
            e.object = Some(format!("/o/{}", tenth % (2 + host)).into());
            events.push(Arc::new(e));
        }
        let start = events[0].ts;
        let run = |walk_all: bool| {
            let mut shard = Shard::new(cfg, &set);
            let mut out = Vec::new();
            let mut saved = Vec::new();
            let mut visits = 0;
            let mut seq = 0;
            let mut next_sweep = start;
            let all = RuleList::from_slice(&[0, 1, 2]);
            let mut sweep = |shard: &mut Shard, seq: &mut u64, now, out: &mut Vec<Tagged>| {
                *seq += 1;
                if walk_all {
                    for st in &mut shard.rules {
                        for ks in st.keys.values_mut() {
                            ks.filed = 0;
                        }
                        st.schedule.rebuild(&st.keys);
                    }
                }
                visits += shard
                    .rules
                    .iter()
                    .flat_map(|st| st.schedule.buckets.range(..=second(now)))
                    .map(|(_, keys)| keys.len())
                    .sum::<usize>();
                shard.handle(ShardMsg::Sweep { seq: *seq, now }, out);
                shard.checkpoint()
            };
            for event in &events {
                while event.ts >= next_sweep {
                    saved.push(sweep(&mut shard, &mut seq, next_sweep, &mut out));
                    next_sweep = next_sweep.saturating_add(std::time::Duration::from_secs(1));
                }
                seq += 1;
                let msg = ShardMsg::Event {
                    seq,
                    event: Arc::clone(event),
                    rules: all.clone(),
                };
                shard.handle(msg, &mut out);
            }
            for _ in 0..60 {
                saved.push(sweep(&mut shard, &mut seq, next_sweep, &mut out));
                next_sweep = next_sweep.saturating_add(std::time::Duration::from_secs(1));
            }
            let alerts: Vec<(bool, String)> = out
                .iter()
                .map(|t| {
                    (
                        t.alert.follow_up,
                        serde_json::to_string(&t.alert).unwrap_or_default(),
                    )
                })
                .collect();
            (alerts, saved, visits, shard.stats.keys_evicted)
        };
        let (alerts, saved, visits, evicted) = run(false);
        let (walked_alerts, walked_saved, walked_visits, walked_evicted) = run(true);
        // What the comparison covers: follow-ups, fresh alerts and evictions all happen.
        let follow_ups = alerts.iter().filter(|(follow_up, _)| *follow_up).count();
        assert!(follow_ups > 0 && alerts.len() > follow_ups, "{alerts:?}");
        assert!(evicted > 0);
        // A small share of the keys were visited, and the state after each sweep is the
        // same.
        assert!(
            visits * 5 < walked_visits,
            "{visits} keys visited against {walked_visits} walked"
        );
        let first = alerts.iter().zip(&walked_alerts).position(|(a, b)| a != b);
        assert!(
            alerts == walked_alerts,
            "{} alerts against {}, first difference at {first:?}",
            alerts.len(),
            walked_alerts.len()
        );
        assert_eq!(evicted, walked_evicted);
        assert_eq!(saved.len(), walked_saved.len());
        for (i, (a, b)) in saved.iter().zip(&walked_saved).enumerate() {
            assert!(a == b, "state differs after sweep {i}");
        }
    }

    /// A rule's accounted key bytes are what weighing each of its keys gives, after every
    /// request and every sweep: keys are weighed as their state changes (lists growing,
    /// windows filling, episodes folding while suppressed, idle keys forgotten), not at
    /// intervals, so the budget never works from stale weights.
    #[test]
    fn a_rules_key_bytes_are_its_keys_weighed_after_every_request_and_sweep() {
        let set = burst_volume_breadth(
            "addresses, devices, users, statuses, objects, endpoints",
            "objects, users",
        );
        let mut shard = Shard::new(unbounded(), &set);
        let weighed = |shard: &Shard| -> Vec<(usize, usize)> {
            shard
                .rules
                .iter()
                .map(|st| {
                    let exact = st
                        .keys
                        .iter()
                        .map(|(k, ks)| key_weight(key_heap(k), ks))
                        .sum();
                    (st.heap, exact)
                })
                .collect()
        };
        let all = RuleList::from_slice(&[0, 1, 2]);
        let mut out = Vec::new();
        let (mut seq, mut checks, mut grown) = (0, 0, 0);
        let mut next_sweep = Timestamp::ZERO;
        for tenth in 0..1800u32 {
            let secs = f64::from(tenth) / 10.0;
            let host = tenth.wrapping_mul(7) % 9;
            // Each address busy for a stretch, then idle long enough to be forgotten.
            if !(host * 15..host * 15 + 50).contains(&(secs as u32)) {
                continue;
            }
            let mut e = crate::detect::tests::ev(secs, &format!("10.0.0.{host}"));
            e.route = Some(format!("/r/{}", tenth % 4).into());
            e.object = Some(format!("/o/{}", tenth % (3 + host)).into());
            e.actor.user = Some(format!("u{}", tenth % 5).into());
            e.status = Some(200 + (tenth % 3) as u16);
            let ts = e.ts;
            if next_sweep == Timestamp::ZERO {
                next_sweep = ts;
            }
            while ts >= next_sweep {
                seq += 1;
                shard.handle(
                    ShardMsg::Sweep {
                        seq,
                        now: next_sweep,
                    },
                    &mut out,
                );
                next_sweep = next_sweep.saturating_add(std::time::Duration::from_secs(1));
                for (held, exact) in weighed(&shard) {
                    assert_eq!(held, exact, "after the sweep at {secs} s");
                }
            }
            let before = weighed(&shard);
            seq += 1;
            let msg = ShardMsg::Event {
                seq,
                event: Arc::new(e),
                rules: all.clone(),
            };
            shard.handle(msg, &mut out);
            let after = weighed(&shard);
            for (held, exact) in &after {
                assert_eq!(held, exact, "after the request at {secs} s");
            }
            grown += after.iter().zip(&before).filter(|(a, b)| a.1 > b.1).count();
            checks += 1;
        }
        // What the checks covered: keys grew, fired and were forgotten.
        assert!(
            checks >= 400 && grown > 50,
            "{checks} requests, {grown} growths"
        );
        assert!(!out.is_empty());
        assert!(shard.stats.keys_evicted > 0);
    }

    /// A sweep learns the closed windows of known endpoints as it meets them and those of
    /// new endpoints in key order: past the cap, which new endpoints are learned does not
    /// depend on the order the keys came in (or on their tables' hash order), and the
    /// known endpoints learn every window.
    #[test]
    fn sweep_learns_new_endpoints_in_key_order_past_the_cap() {
        use std::time::Duration;
        const KNOWN: usize = 100;
        const NEW: usize = MAX_BASELINES + 900;
        let set = rule_set(
            "rules:\n  - id: b\n    description: d\n    category: scraping\n    severity: low\n    detector:\n      kind: baseline\n      group_by: [ip, endpoint]\n      threshold: 30\n      window_secs: 60\n    suppress_secs: 60\n    summary: s\n",
        );
        let cfg = unbounded();
        let event = |secs: f64, ip: &str, route: String| {
            let mut e = crate::detect::tests::ev(secs, ip);
            e.route = Some(route.into());
            Arc::new(e)
        };
        let known = |i: usize| format!("/known/{i:03}");
        let new = |i: usize| format!("/new/{i:05}");
        // Window 0: the known endpoints; window 1: each known endpoint from two addresses,
        // and the new endpoints from one.
        let mut first = Vec::new();
        for i in 0..KNOWN {
            first.push(event(1.0, "10.0.0.1", known(i)));
        }
        let mut second = Vec::new();
        for i in 0..KNOWN {
            second.push(event(61.0, "10.0.0.1", known(i)));
            second.push(event(61.0, "10.0.0.2", known(i)));
        }
        for i in 0..NEW {
            second.push(event(62.0, "10.0.0.3", new(i)));
        }
        let run = |reverse: bool| {
            let mut shard = Shard::new(cfg, &set);
            let mut out = Vec::new();
            let mut seq = 0;
            let mut feed = |shard: &mut Shard, evs: &[Arc<Event>], out: &mut Vec<Tagged>| {
                let mut evs = evs.to_vec();
                if reverse {
                    evs.reverse();
                }
                for event in evs {
                    seq += 1;
                    let rules = RuleList::from_slice(&[0]);
                    shard.handle(ShardMsg::Event { seq, event, rules }, out);
                }
            };
            let sweep = |shard: &mut Shard, seq: u64, now: Timestamp, out: &mut Vec<Tagged>| {
                shard.handle(ShardMsg::Sweep { seq, now }, out);
            };
            feed(&mut shard, &first, &mut out);
            // Window 0 closed, window 1 not yet.
            let mid = first[0].ts.saturating_add(Duration::from_secs(29));
            sweep(&mut shard, 1_000_000, mid, &mut out);
            feed(&mut shard, &second, &mut out);
            let end = second[0].ts.saturating_add(Duration::from_secs(61));
            sweep(&mut shard, 2_000_000, end, &mut out);
            let st = &shard.rules[0];
            let mut learned: Vec<(String, u64)> = st
                .baselines
                .iter()
                .map(|(k, b)| (k.shown(KeyField::Endpoint), b.hist.len()))
                .collect();
            learned.sort();
            (
                learned,
                shard.stats.baselines_over_cap,
                shard.stats.baseline_samples,
                st.baseline_bytes,
            )
        };
        let (learned, refused, samples, bytes) = run(false);
        let mut want: Vec<(String, u64)> = (0..KNOWN)
            .map(|i| (format!("GET {}", known(i)), 3))
            .chain((0..MAX_BASELINES - KNOWN).map(|i| (format!("GET {}", new(i)), 1)))
            .collect();
        want.sort();
        assert_eq!(learned.len(), MAX_BASELINES);
        // The new endpoints first in key order, every window of the known ones.
        let first_difference = learned.iter().zip(&want).find(|(a, b)| a != b);
        assert!(learned == want, "first difference {first_difference:?}");
        assert_eq!(refused as usize, NEW - (MAX_BASELINES - KNOWN));
        assert_eq!(samples as usize, KNOWN * 3 + MAX_BASELINES - KNOWN);
        let again = run(true);
        assert!(
            again == (learned, refused, samples, bytes),
            "not the same in another order"
        );
    }
}
