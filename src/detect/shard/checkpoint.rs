//! Checkpoints of a shard's state, so a correlator that stops (or another that takes its
//! partitions over) resumes where the checkpoint was taken and emits exactly the alerts an
//! uninterrupted run would.
//!
//! A checkpoint holds everything of the state that affects later output: per rule (by id,
//! with a digest of its fingerprint) every key with its state (windows, distinct sets,
//! cadence and walk trackers, the episode building towards an alert with its evidence, the
//! open follow-up aggregate and the suppression deadline, the key's weight for the budget),
//! the learned baselines (each histogram's bucket counts and range), and the shard's packet
//! time, stream position, sweep count and counters (which continue, not restart). Maps are
//! saved sorted, so the same state always saves to the same bytes. The key and baseline byte
//! accounting is not saved: it is the sum of what is (each key's weight, each histogram's
//! size) and is summed again on restore, to the same figures.
//!
//! Layout: the format version ([`CHECKPOINT_VERSION`], u16 little-endian), the state in
//! postcard (varints), then the first 8 bytes of the SHA-256 of everything before. Restore
//! refuses another version (there is no migration: the caller then starts empty or
//! replays the stream), bytes whose digest does not
//! match (truncated, corrupted), and state that contradicts the rule it is saved for. The
//! digest catches corruption, not forgery: whoever can write the checkpoint store can blind
//! the correlator anyway. Any change to a saved type (`KeyState`, `Episode`, `KeyValue`,
//! `DetectStats`, ...) must bump the version: postcard is positional, so an added field
//! reads back wrong rather than failing.
//!
//! Rules are matched by id and fingerprint: state of a rule absent from the given set or
//! whose definition changed is dropped (as a rule swap does; its open aggregates are lost
//! and counted in the [`RestoreNote`]), rules new in the set start empty.
//!
//! Determinism after restore: the restored maps iterate in another order (random seeds),
//! and nothing emitted depends on it (sweeps, flushes and evictions sort by time and key).
//! One thing does differ: a key's weight for the memory budget counts its buffers'
//! capacities, and restored buffers are allocated to fit, so as its keys are weighed again
//! (at their next request or sweep) a restored shard weighs them a little lighter than the
//! uninterrupted one; only under memory-budget pressure (the keys at their share) can that
//! change which keys are evicted, and so the alerts.

use std::sync::Arc;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::{Baseline, RuleState, Shard, ShardConfig, baseline_bytes};
use crate::capture::Timestamp;
use crate::detect::window::KeyState;
use crate::detect::{DetectStats, KeyValue};
use crate::rules::{Rule, RuleSet};

/// Version of the checkpoint format: restore refuses any other. 2: an episode keeps what
/// its detector measured in one optional part (`Measured`). 3: an episode's endpoints are
/// their `METHOD /route` texts. 4: a concurrent detector's key remembers the alternation
/// under way (`linger_secs`).
pub const CHECKPOINT_VERSION: u16 = 4;

/// Bytes of the version before the state and of the digest after it.
const VERSION_BYTES: usize = 2;
const DIGEST_BYTES: usize = 8;

/// The most a saved key may weigh (its charged bytes): far above any real key (keys
/// weigh kilobytes), low enough that sums over millions of keys cannot overflow.
const MAX_KEY_WEIGHT: usize = 1 << 30;

/// Why a checkpoint was not restored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    #[error("checkpoint of {len} bytes is shorter than its version and digest")]
    Truncated { len: usize },
    #[error("checkpoint format version {found}, this build reads version {expected}")]
    Version { found: u16, expected: u16 },
    #[error("checkpoint digest does not match its bytes: truncated or corrupted")]
    Digest,
    #[error("checkpoint state does not decode: {0}")]
    Decode(#[from] postcard::Error),
    #[error("checkpoint has {extra} bytes after its state")]
    Trailing { extra: usize },
    #[error("checkpoint state of rule {rule:?} is invalid: {reason}")]
    Invalid { rule: String, reason: &'static str },
}

/// What a restore kept and dropped of the saved rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreNote {
    /// The index of the shard the checkpoint was taken on.
    pub saved_shard: u32,
    /// Rules whose state was restored.
    pub kept: usize,
    /// Rules saved but absent from the rule set now: their state was dropped.
    pub removed: Vec<String>,
    /// Rules whose definition changed since: they start empty.
    pub changed: Vec<String>,
    /// Rules of the set with no saved state: they start empty.
    pub fresh: Vec<String>,
    /// Of removed and changed rules: the keys dropped, and their open aggregates (requests
    /// folded while suppressed, whose follow-up alerts will not be sent).
    pub dropped_keys: u64,
    pub dropped_aggregates: u64,
}

/// A learned baseline: the histogram's range and its (value, count) buckets, which rebuild
/// it exactly (same counts, same size, same quantiles).
#[derive(Serialize, Deserialize)]
struct SavedHistogram {
    high: u64,
    counts: Vec<(u64, u64)>,
}

impl SavedHistogram {
    fn of(h: &Histogram<u64>) -> SavedHistogram {
        SavedHistogram {
            high: h.high(),
            counts: h
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
        }
    }

    /// The histogram, as [`super::learn`] makes them (2 significant digits, auto-resizing);
    /// `None` when the range or a value is not one `learn` can have made.
    fn histogram(&self) -> Option<Histogram<u64>> {
        // `learn` records at most u32::MAX (body sizes).
        if self.high > u64::from(u32::MAX) {
            return None;
        }
        let mut h = Histogram::new_with_bounds(1, self.high.max(2), 2).ok()?;
        // Without auto-resize while filling: a value outside the saved range is refused
        // rather than growing the histogram past what was saved.
        h.auto(false);
        for &(v, n) in &self.counts {
            h.record_n(v, n).ok()?;
        }
        h.auto(true);
        Some(h)
    }
}

#[derive(Serialize)]
struct SavedRef<'a> {
    shard: u32,
    now: Timestamp,
    done: u64,
    sweeps: u64,
    stats: &'a DetectStats,
    rules: Vec<RuleRef<'a>>,
}

#[derive(Serialize)]
struct RuleRef<'a> {
    id: &'a str,
    fingerprint: [u8; 16],
    keys: Vec<(&'a KeyValue, &'a KeyState)>,
    baselines: Vec<(&'a KeyValue, SavedHistogram)>,
}

/// [`SavedRef`] as read back.
#[derive(Deserialize)]
struct Saved {
    shard: u32,
    now: Timestamp,
    done: u64,
    sweeps: u64,
    stats: DetectStats,
    rules: Vec<SavedRule>,
}

#[derive(Deserialize)]
struct SavedRule {
    id: String,
    fingerprint: [u8; 16],
    keys: Vec<(KeyValue, KeyState)>,
    baselines: Vec<(KeyValue, SavedHistogram)>,
}

/// A rule's fingerprint (its definition, tens to hundreds of bytes) as a digest: equal
/// fingerprints, equal digests; the same in every process and build.
fn fingerprint_digest(rule: &Rule) -> [u8; 16] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, rule.fingerprint.as_bytes());
    let mut out = [0; 16];
    out.copy_from_slice(&d.as_ref()[..16]);
    out
}

fn digest(bytes: &[u8]) -> [u8; DIGEST_BYTES] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut out = [0; DIGEST_BYTES];
    out.copy_from_slice(&d.as_ref()[..DIGEST_BYTES]);
    out
}

/// Appends the digest of `bytes` (version and state) to them.
fn seal(mut bytes: Vec<u8>) -> Vec<u8> {
    let d = digest(&bytes);
    bytes.extend_from_slice(&d);
    bytes
}

impl Shard {
    /// The shard's state as bytes, to [`Shard::restore`] later (see the module doc for
    /// what it holds and its format).
    pub fn checkpoint(&self) -> Vec<u8> {
        let rules = self
            .rules
            .iter()
            .map(|st| {
                let mut keys: Vec<(&KeyValue, &KeyState)> =
                    st.keys.iter().map(|(k, v)| (k, &**v)).collect();
                keys.sort_unstable_by(|a, b| a.0.cmp(b.0));
                let mut baselines: Vec<(&KeyValue, &Histogram<u64>)> =
                    st.baselines.iter().map(|(k, b)| (k, &b.hist)).collect();
                baselines.sort_unstable_by(|a, b| a.0.cmp(b.0));
                RuleRef {
                    id: st.rule.id.as_str(),
                    fingerprint: fingerprint_digest(&st.rule),
                    keys,
                    baselines: baselines
                        .into_iter()
                        .map(|(k, h)| (k, SavedHistogram::of(h)))
                        .collect(),
                }
            })
            .collect();
        let saved = SavedRef {
            shard: self.cfg.index,
            now: self.now,
            done: self.done,
            sweeps: self.sweeps,
            stats: &self.stats,
            rules,
        };
        let out = CHECKPOINT_VERSION.to_le_bytes().to_vec();
        // Writing to a Vec fails only if a type refuses to serialize; none of the saved
        // ones does (no maps of unknown length, no `serialize_any`).
        let out = match postcard::to_extend(&saved, out) {
            Ok(v) => v,
            Err(e) => unreachable!("shard state serializes to postcard: {e}"),
        };
        seal(out)
    }

    /// A shard with the state saved in `bytes` for the rules of `set` (in `set`'s order);
    /// see the module doc for what is kept and dropped.
    pub fn restore(
        cfg: ShardConfig,
        set: &RuleSet,
        bytes: &[u8],
    ) -> Result<Shard, CheckpointError> {
        Shard::restore_noted(cfg, set, bytes).map(|(s, _)| s)
    }

    /// [`Shard::restore`], also saying which rules' state was kept, dropped or started
    /// empty.
    pub fn restore_noted(
        cfg: ShardConfig,
        set: &RuleSet,
        bytes: &[u8],
    ) -> Result<(Shard, RestoreNote), CheckpointError> {
        if bytes.len() < VERSION_BYTES + DIGEST_BYTES {
            return Err(CheckpointError::Truncated { len: bytes.len() });
        }
        let (sealed, tail) = bytes.split_at(bytes.len() - DIGEST_BYTES);
        let (version, body) = sealed.split_at(VERSION_BYTES);
        let found = u16::from_le_bytes([version[0], version[1]]);
        if found != CHECKPOINT_VERSION {
            return Err(CheckpointError::Version {
                found,
                expected: CHECKPOINT_VERSION,
            });
        }
        if digest(sealed) != tail {
            return Err(CheckpointError::Digest);
        }
        let (saved, rest) = postcard::take_from_bytes::<Saved>(body)?;
        if !rest.is_empty() {
            return Err(CheckpointError::Trailing { extra: rest.len() });
        }
        let mut note = RestoreNote {
            saved_shard: saved.shard,
            ..RestoreNote::default()
        };
        let mut by_id: std::collections::HashMap<String, SavedRule> =
            std::collections::HashMap::with_capacity(saved.rules.len());
        for r in saved.rules {
            if by_id.contains_key(&r.id) {
                return Err(invalid(&r.id, "saved twice"));
            }
            by_id.insert(r.id.clone(), r);
        }
        let mut rules = Vec::with_capacity(set.rules.len());
        for rule in &set.rules {
            let st = match by_id.remove(rule.id.as_str()) {
                Some(r) if r.fingerprint == fingerprint_digest(rule) => {
                    note.kept += 1;
                    rule_state(rule, r)?
                }
                Some(r) => {
                    note.changed.push(r.id.clone());
                    note.dropped(&r);
                    RuleState::new(rule.clone())
                }
                None => {
                    note.fresh.push(rule.id.as_str().to_string());
                    RuleState::new(rule.clone())
                }
            };
            rules.push(st);
        }
        let mut removed: Vec<SavedRule> = by_id.into_values().collect();
        removed.sort_by(|a, b| a.id.cmp(&b.id));
        for r in removed {
            note.dropped(&r);
            note.removed.push(r.id);
        }
        let shard = Shard {
            cfg,
            rules,
            stats: saved.stats,
            now: saved.now,
            done: saved.done,
            sweeps: saved.sweeps,
        };
        Ok((shard, note))
    }
}

impl RestoreNote {
    fn dropped(&mut self, r: &SavedRule) {
        self.dropped_keys += r.keys.len() as u64;
        self.dropped_aggregates += r.keys.iter().filter(|(_, ks)| ks.has_pending()).count() as u64;
    }
}

fn invalid(rule: &str, reason: &'static str) -> CheckpointError {
    CheckpointError::Invalid {
        rule: rule.to_string(),
        reason,
    }
}

/// A saved rule's state, checked against the rule, with its byte accounting summed again.
fn rule_state(rule: &Arc<Rule>, saved: SavedRule) -> Result<RuleState, CheckpointError> {
    let id = rule.id.as_str();
    let mut st = RuleState::new(rule.clone());
    st.keys.reserve(saved.keys.len());
    for (k, ks) in saved.keys {
        if !ks.restored(&rule.detector) {
            return Err(invalid(
                id,
                "a key's state is not of the rule's detector kind",
            ));
        }
        if ks.charged > MAX_KEY_WEIGHT {
            return Err(invalid(id, "a key weighs more than any key can"));
        }
        st.heap = st.heap.saturating_add(ks.charged);
        if st.keys.insert(k, Box::new(ks)).is_some() {
            return Err(invalid(id, "a key is saved twice"));
        }
    }
    st.baselines.reserve(saved.baselines.len());
    for (k, h) in saved.baselines {
        let Some(h) = h.histogram() else {
            return Err(invalid(
                id,
                "a baseline's range or values are out of bounds",
            ));
        };
        st.baseline_bytes = st.baseline_bytes.saturating_add(baseline_bytes(&h));
        if st.baselines.insert(k, Baseline::new(h)).is_some() {
            return Err(invalid(id, "a baseline is saved twice"));
        }
    }
    st.file_all();
    Ok(st)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::{LocalShards, ShardHost, ShardMsg, Tagged, configs};
    use super::*;
    use crate::actor::Actor;
    use crate::budget::{Table, Usage};
    use crate::detect::{DetectConfig, Engine, Event, ObjectRef, exposure, write_alert};
    use crate::redact::TokenHash;
    use crate::token::Verdict;

    fn ev(secs: f64, ip: &str, route: &str) -> Event {
        Event {
            actor: Actor {
                ip: ip.parse().expect("test address"),
                device: None,
                user: None,
            },
            host: Some("api.example.com".into()),
            route: Some(route.into()),
            object: Some(route.into()),
            family: None,
            verdict: Verdict::Missing,
            ..crate::detect::tests::ev(secs, ip)
        }
    }

    /// An attested request of a genuine device.
    fn genuine(secs: f64, ip: &str, device: &str, user: &str, token: &str, id: u64) -> Event {
        let mut e = ev(secs, ip, "/api/v1/orders/{id}");
        e.actor.device = Some(device.into());
        e.actor.user = Some(user.into());
        e.family = Some("approov".into());
        e.verdict = Verdict::Valid;
        e.token = Some(TokenHash::of(token));
        e.object = Some(format!("/api/v1/orders/{id}").into());
        e.number = Some(id);
        e.objects = thin_vec::thin_vec![ObjectRef {
            collection: "orders".into(),
            id: id.to_string().into(),
        }];
        e
    }

    /// Fifteen minutes of an API's traffic that gives every detector kind of the built-in
    /// rules state to carry: genuine devices (device baselines), a device farm above them,
    /// light unattested clients (address baselines, ratio, cadence) and a scraper walking
    /// pages above them, a token forger (follow-ups all along), a credential stuffer, a
    /// token copied to four addresses (concurrent, distinct), a user shared with a script
    /// (mixed), report responses (outlier levels) then two bulk ones, and an unattested
    /// client reading users' emails (exposure evidence).
    fn stream() -> Vec<Event> {
        let mut out = Vec::new();
        for d in 0..30u64 {
            for k in 0..300u64 {
                let t = k as f64 * 3.0 + d as f64 * 0.1;
                out.push(genuine(
                    t,
                    &format!("10.1.0.{}", d + 1),
                    &format!("device-{d}"),
                    &format!("user-{d}"),
                    &format!("tok-{d}-{}", k / 100),
                    1000 + d * 10 + k % 10,
                ));
            }
        }
        for k in 0..300u64 {
            out.push(genuine(
                600.0 + k as f64 * 0.2,
                "10.1.0.99",
                "device-farm",
                "user-farm",
                "tok-farm",
                2000 + k,
            ));
        }
        for u in 0..20u64 {
            for k in 0..75u64 {
                let mut e = ev(
                    k as f64 * 12.0 + u as f64 * 0.3,
                    &format!("10.2.0.{}", u + 1),
                    "/api/v1/catalog",
                );
                e.number = Some(1 + k % 3);
                out.push(e);
            }
        }
        for k in 0..480u64 {
            let mut e = ev(400.0 + k as f64 * 0.25, "203.0.113.7", "/api/v1/catalog");
            e.number = Some(1 + k);
            e.object = Some(format!("/api/v1/catalog?page={}", 1 + k).into());
            out.push(e);
        }
        for k in 0..45u64 {
            let mut e = ev(k as f64 * 20.0 + 1.5, "198.51.100.3", "/api/v1/orders/{id}");
            e.verdict = Verdict::BadSignature;
            e.family = Some("approov".into());
            e.token = Some(TokenHash::of(&format!("forged-{k}")));
            out.push(e);
        }
        for k in 0..150u64 {
            let mut e = ev(100.0 + k as f64 * 2.0, "198.51.100.4", "/api/v1/login");
            e.method = Some("POST".into());
            e.login = true;
            e.username = Some(format!("victim{}@example.com", k % 50).into());
            e.status = Some(if k % 5 == 0 { 200 } else { 401 });
            out.push(e);
        }
        for k in 0..60u64 {
            let mut e = genuine(
                200.0 + k as f64 * 5.0,
                &format!("192.0.2.{}", 10 + k % 4),
                "device-copied",
                "user-copied",
                "tok-copied",
                3000 + k % 5,
            );
            e.family = Some("approov".into());
            out.push(e);
        }
        for k in 0..6u64 {
            let mut e = ev(
                300.0 + k as f64 * 10.0,
                "198.51.100.9",
                "/api/v1/orders/{id}",
            );
            e.actor.user = Some("user-3".into());
            out.push(e);
        }
        let report = |secs: f64, ip: &str, records: u32, bytes: u32| {
            let mut e = ev(secs, ip, "/api/v1/reports");
            e.exposure = Some(Arc::new(exposure::Scan {
                records,
                ..Default::default()
            }));
            e.body_bytes = Some(bytes);
            e
        };
        for k in 0..60u32 {
            out.push(report(
                50.0 + f64::from(k) * 2.0,
                &format!("10.3.0.{}", k % 50 + 1),
                20,
                4_000 + k,
            ));
        }
        out.push(report(700.0, "203.0.113.50", 5_000, 8 << 20));
        out.push(report(710.0, "203.0.113.50", 4_000, 6 << 20));
        let hdr =
            crate::http::Headers::from_iter([("Content-Type", b"application/json".as_slice())]);
        for k in 0..27u64 {
            let body = format!(r#"{{"id":{k},"email":"jo{k}@example.com","name":"Jo"}}"#);
            let mut e = ev(
                100.0 + k as f64 * 30.0,
                "198.51.100.20",
                "/api/v1/users/{id}",
            );
            e.object = Some(format!("/api/v1/users/{k}").into());
            e.exposure = Some(Arc::new(exposure::scan(&hdr, body.as_bytes())));
            out.push(e);
        }
        out.sort_by_key(|e| e.ts);
        out
    }

    /// In-thread shards that also keep every message each was sent.
    struct Recorder {
        inner: LocalShards,
        sent: Vec<(usize, ShardMsg)>,
        shards: usize,
    }

    impl ShardHost for Recorder {
        fn count(&self) -> usize {
            self.inner.count()
        }
        fn inline(&self) -> bool {
            true
        }
        fn send(&mut self, shard: usize, msg: ShardMsg) {
            self.sent.push((shard, msg.clone()));
            self.inner.send(shard, msg);
        }
        fn flush(&mut self, seq: u64) {
            for s in 0..self.shards {
                self.sent.push((s, ShardMsg::Mark { seq }));
            }
            self.inner.flush(seq);
        }
        fn poll(&mut self, until: Option<u64>, out: &mut Vec<Tagged>, done: &mut [u64]) {
            self.inner.poll(until, out, done);
        }
        fn stats(&self) -> DetectStats {
            self.inner.stats()
        }
        fn memory(&self) -> Vec<(Table, Usage)> {
            self.inner.memory()
        }
        fn tracked_keys(&self) -> (usize, usize) {
            self.inner.tracked_keys()
        }
    }

    struct Recorded {
        rules: RuleSet,
        cfgs: Vec<ShardConfig>,
        /// Per shard, the messages it was sent, in order.
        msgs: Vec<Vec<ShardMsg>>,
    }

    /// The messages two shards are sent for [`stream`] with the built-in rules.
    fn recorded() -> Recorded {
        let rules = crate::rules::builtin().expect("built-in rules");
        let cfg = DetectConfig::default();
        let cfgs = configs(&cfg, 2);
        let shards = cfgs.iter().map(|c| Shard::new(*c, &rules)).collect();
        let (tx, rx) = std::sync::mpsc::channel();
        struct Keep(Recorder, std::sync::mpsc::Sender<Vec<(usize, ShardMsg)>>);
        impl Drop for Keep {
            fn drop(&mut self) {
                let _ = self.1.send(std::mem::take(&mut self.0.sent));
            }
        }
        impl ShardHost for Keep {
            fn count(&self) -> usize {
                self.0.count()
            }
            fn inline(&self) -> bool {
                true
            }
            fn send(&mut self, shard: usize, msg: ShardMsg) {
                self.0.send(shard, msg)
            }
            fn flush(&mut self, seq: u64) {
                self.0.flush(seq)
            }
            fn poll(&mut self, until: Option<u64>, out: &mut Vec<Tagged>, done: &mut [u64]) {
                self.0.poll(until, out, done)
            }
            fn stats(&self) -> DetectStats {
                self.0.stats()
            }
            fn memory(&self) -> Vec<(Table, Usage)> {
                self.0.memory()
            }
            fn tracked_keys(&self) -> (usize, usize) {
                self.0.tracked_keys()
            }
        }
        let host = Keep(
            Recorder {
                inner: LocalShards::new(shards),
                sent: Vec::new(),
                shards: cfgs.len(),
            },
            tx,
        );
        let mut engine = Engine::with_shards(cfg, &rules, Box::new(host));
        let mut alerts = Vec::new();
        for e in stream() {
            engine.observe_owned(e, &mut alerts);
        }
        engine.finish(&mut alerts);
        drop(engine);
        let sent = rx.recv().expect("the recorder hands its messages over");
        let mut msgs = vec![Vec::new(); cfgs.len()];
        for (s, m) in sent {
            msgs[s].push(m);
        }
        Recorded { rules, cfgs, msgs }
    }

    /// Alerts as compared: merge position and the whole JSON record.
    fn shown(tagged: &[Tagged]) -> Vec<String> {
        tagged
            .iter()
            .map(|t| {
                let mut v = Vec::new();
                write_alert(&mut v, &t.alert).expect("write");
                format!("{:?} {}", t.key, String::from_utf8(v).expect("utf-8"))
            })
            .collect()
    }

    fn feed(shard: &mut Shard, msgs: &[ShardMsg]) -> Vec<Tagged> {
        let mut out = Vec::new();
        for m in msgs {
            shard.handle(m.clone(), &mut out);
        }
        out
    }

    fn stats_json(s: &Shard) -> String {
        serde_json::to_string(s.stats()).expect("stats serialize")
    }

    /// What the shard holds: keys with an episode of two or more requests, keys with an
    /// open aggregate, and baselines learned past 50 samples.
    fn holds(s: &Shard) -> (usize, usize, usize) {
        let mut r = (0, 0, 0);
        for st in &s.rules {
            for ks in st.keys.values() {
                let (episode, pending) = ks.open();
                r.0 += usize::from(episode.is_some_and(|n| n >= 2));
                r.1 += usize::from(pending.is_some());
            }
            r.2 += st.baselines.values().filter(|b| b.hist.len() >= 50).count();
        }
        r
    }

    /// Cut points of one shard's messages: inside the first open episodes and aggregates,
    /// just after a baseline is learned, later with everything
    /// learned and open, and just before the end.
    fn cuts(rec: &Recorded, shard: usize) -> Vec<usize> {
        let msgs = &rec.msgs[shard];
        let mut s = Shard::new(rec.cfgs[shard], &rec.rules);
        let mut out = Vec::new();
        let (mut open, mut learned, mut all) = (None, None, None);
        for (i, m) in msgs.iter().enumerate() {
            s.handle(m.clone(), &mut out);
            let (episodes, pending, baselines) = holds(&s);
            if open.is_none() && episodes > 0 && pending > 0 {
                open = Some(i + 1);
            }
            if learned.is_none() && baselines > 0 {
                learned = Some(i + 1);
            }
            if all.is_none() && i > msgs.len() / 2 && episodes > 0 && pending > 0 && baselines > 0 {
                all = Some(i + 1);
            }
        }
        let end = msgs
            .iter()
            .position(|m| matches!(m, ShardMsg::Finish))
            .expect("the end of input is sent");
        vec![
            open.expect("an open episode and aggregate"),
            learned.expect("a baseline is learned"),
            all.expect("open episodes with learned baselines"),
            end,
        ]
    }

    #[test]
    fn a_restored_shard_continues_exactly_as_the_uninterrupted_one() {
        let rec = recorded();
        for shard in 0..rec.cfgs.len() {
            let msgs = &rec.msgs[shard];
            let cfg = rec.cfgs[shard];
            for cut in cuts(&rec, shard) {
                let (head, tail) = msgs.split_at(cut);
                let mut x = Shard::new(cfg, &rec.rules);
                feed(&mut x, head);
                let bytes = x.checkpoint();
                let (keys, held) = (x.tracked_keys().0, holds(&x));
                let (mut y, note) =
                    Shard::restore_noted(cfg, &rec.rules, &bytes).expect("restores");
                assert_eq!(note.kept, rec.rules.rules.len());
                assert!(note.removed.is_empty() && note.changed.is_empty());
                assert!(note.fresh.is_empty());
                assert_eq!(note.saved_shard, cfg.index);
                // The same state, to the byte, and the same accounting.
                assert_eq!(y.checkpoint(), bytes, "shard {shard} cut {cut}");
                assert_eq!(y.memory(), x.memory());
                assert_eq!(y.tracked_keys(), x.tracked_keys());
                assert_eq!(y.done(), x.done());
                assert_eq!(stats_json(&y), stats_json(&x));
                let want = shown(&feed(&mut x, tail));
                let got = shown(&feed(&mut y, tail));
                assert!(
                    !want.is_empty(),
                    "shard {shard} cut {cut}: alerts after the cut"
                );
                assert_eq!(got, want, "shard {shard} cut {cut}");
                assert_eq!(stats_json(&y), stats_json(&x), "shard {shard} cut {cut}");
                // The state carried matters: a shard starting empty at the cut differs.
                let mut fresh = Shard::new(cfg, &rec.rules);
                assert_ne!(
                    shown(&feed(&mut fresh, tail)),
                    want,
                    "shard {shard} cut {cut}"
                );
                eprintln!(
                    "shard {shard} cut {cut}/{}: checkpoint {} bytes, {keys} keys, \
                     (episodes, aggregates, baselines) {held:?}, {} alerts after",
                    msgs.len(),
                    bytes.len(),
                    want.len()
                );
            }
        }
    }

    /// Alerts of one rule, as compared across rule sets: without the rule's index (its place
    /// in the set) or the shard's emission counter (which counts other rules' alerts in
    /// the same sweep).
    fn of_rule(tagged: &[Tagged], id: &str) -> Vec<String> {
        tagged
            .iter()
            .filter(|t| t.alert.rule.as_str() == id)
            .map(|t| {
                let mut v = Vec::new();
                write_alert(&mut v, &t.alert).expect("write");
                let k = &t.key;
                format!(
                    "{} {:?} {:?} {:?} {}",
                    k.seq,
                    k.phase,
                    k.first,
                    k.key,
                    String::from_utf8(v).expect("utf-8")
                )
            })
            .collect()
    }

    #[test]
    fn restore_drops_the_state_of_removed_and_changed_rules_only() {
        let rec = recorded();
        let (msgs, cfg) = (&rec.msgs[0], rec.cfgs[0]);
        let (head, tail) = msgs.split_at(msgs.len() / 2);
        let mut x = Shard::new(cfg, &rec.rules);
        feed(&mut x, head);
        let bytes = x.checkpoint();
        let held: Vec<(usize, usize)> = x
            .rules
            .iter()
            .map(|st| {
                let pending = st.keys.values().filter(|ks| ks.has_pending()).count();
                (st.keys.len(), pending)
            })
            .collect();
        let want = feed(&mut x, tail);
        // A rule with keys at the cut and alerts after it changes; another with keys and an
        // open aggregate goes.
        let ids: Vec<&str> = rec.rules.rules.iter().map(|r| r.id.as_str()).collect();
        let changed = (0..ids.len())
            .find(|&i| held[i].0 > 0 && !of_rule(&want, ids[i]).is_empty())
            .expect("a rule with state and later alerts");
        let removed = (0..ids.len())
            .find(|&i| i != changed && held[i].1 > 0)
            .expect("another rule with an open aggregate");
        let mut set = rec.rules.clone();
        let mut r = (*set.rules[changed]).clone();
        r.fingerprint.push_str("|threshold changed");
        set.rules[changed] = Arc::new(r);
        set.rules.remove(removed);
        // The engine numbers rules by their place in the set.
        let tail: Vec<ShardMsg> = tail
            .iter()
            .map(|m| match m {
                ShardMsg::Event { seq, event, rules } => ShardMsg::Event {
                    seq: *seq,
                    event: event.clone(),
                    rules: rules
                        .iter()
                        .filter(|&&i| usize::from(i) != removed)
                        .map(|&i| if usize::from(i) > removed { i - 1 } else { i })
                        .collect(),
                },
                m => m.clone(),
            })
            .collect();
        let (mut y, note) = Shard::restore_noted(cfg, &set, &bytes).expect("restores");
        assert_eq!(note.changed, vec![ids[changed].to_string()]);
        assert_eq!(note.removed, vec![ids[removed].to_string()]);
        assert_eq!(note.kept, ids.len() - 2);
        assert!(note.fresh.is_empty());
        assert_eq!(
            note.dropped_keys,
            (held[changed].0 + held[removed].0) as u64
        );
        assert_eq!(
            note.dropped_aggregates,
            (held[changed].1 + held[removed].1) as u64
        );
        let at = |id: &str| {
            y.rules
                .iter()
                .position(|st| st.rule.id.as_str() == id)
                .expect("rule")
        };
        let now_changed = at(ids[changed]);
        assert!(y.rules[now_changed].keys.is_empty());
        assert!(y.rules[now_changed].baselines.is_empty());
        assert_eq!(y.rules[now_changed].heap, 0);
        let got = feed(&mut y, &tail);
        // Kept rules go on as if nothing happened.
        let mut kept_alerts = 0;
        for (i, id) in ids.iter().enumerate() {
            if i == changed || i == removed {
                continue;
            }
            assert_eq!(of_rule(&got, id), of_rule(&want, id), "{id}");
            kept_alerts += of_rule(&want, id).len();
        }
        assert!(kept_alerts > 0);
        // The changed rule starts empty at the cut, like a shard that starts there.
        let mut z = Shard::new(cfg, &set);
        let from_empty = feed(&mut z, &tail);
        assert_eq!(
            of_rule(&got, ids[changed]),
            of_rule(&from_empty, ids[changed])
        );
        assert_ne!(of_rule(&got, ids[changed]), of_rule(&want, ids[changed]));
        assert!(of_rule(&got, ids[removed]).is_empty());
    }

    fn restore(rec: &Recorded, bytes: &[u8]) -> Result<Shard, CheckpointError> {
        Shard::restore(rec.cfgs[0], &rec.rules, bytes)
    }

    /// Version and state with a correct digest after them, as a corrupting writer that
    /// also recomputed the digest would leave them.
    fn resealed(version_and_state: &[u8]) -> Vec<u8> {
        seal(version_and_state.to_vec())
    }

    /// A real checkpoint of shard 0, `n` messages into [`stream`].
    fn real_checkpoint(rec: &Recorded, n: usize) -> Vec<u8> {
        let mut x = Shard::new(rec.cfgs[0], &rec.rules);
        feed(&mut x, &rec.msgs[0][..n]);
        x.checkpoint()
    }

    #[test]
    fn damaged_checkpoints_are_refused() {
        let rec = recorded();
        let bytes = real_checkpoint(&rec, rec.msgs[0].len() / 2);
        assert!(restore(&rec, &bytes).is_ok());
        let mut other = bytes.clone();
        let older = CHECKPOINT_VERSION - 1;
        other[..2].copy_from_slice(&older.to_le_bytes());
        assert!(matches!(
            restore(&rec, &other),
            Err(CheckpointError::Version {
                found,
                expected: CHECKPOINT_VERSION
            }) if found == older
        ));
        // Truncated anywhere: every short prefix, then a sample through the whole.
        let step = (bytes.len() / 500).max(1);
        for n in (0..64).chain((64..bytes.len()).step_by(step)) {
            assert!(restore(&rec, &bytes[..n]).is_err(), "prefix of {n} bytes");
        }
        // Flipped bits anywhere.
        let step = (bytes.len() / 300).max(1);
        for pos in (0..bytes.len())
            .step_by(step)
            .chain(bytes.len() - 16..bytes.len())
        {
            for mask in [0x01u8, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[pos] ^= mask;
                assert!(restore(&rec, &b).is_err(), "byte {pos} ^ {mask:#x}");
            }
        }
        // Bytes after the state.
        let (sealed, _) = bytes.split_at(bytes.len() - DIGEST_BYTES);
        let mut longer = sealed.to_vec();
        longer.push(0);
        assert!(matches!(
            restore(&rec, &resealed(&longer)),
            Err(CheckpointError::Trailing { extra: 1 })
        ));
    }

    #[test]
    fn corrupt_state_under_a_valid_digest_is_refused_or_harmless() {
        let rec = recorded();
        // A small state (60 messages in, already with keys of most rules): prefixes ending
        // at every third byte, and changes at every sixth (every byte takes a minute in a
        // debug build).
        let n = 60;
        let bytes = real_checkpoint(&rec, n);
        let (sealed, _) = bytes.split_at(bytes.len() - DIGEST_BYTES);
        for len in (VERSION_BYTES..sealed.len()).step_by(3) {
            assert!(
                matches!(
                    restore(&rec, &resealed(&sealed[..len])),
                    Err(CheckpointError::Decode(_))
                ),
                "state cut to {len} bytes"
            );
        }
        // Any byte changed: refused, or a shard that goes on handling messages.
        let rest = &rec.msgs[0][n..n + 100];
        let (mut refused, mut accepted) = (0, 0);
        for pos in (VERSION_BYTES..sealed.len()).step_by(6) {
            for mask in [0x01u8, 0x80] {
                let mut b = sealed.to_vec();
                b[pos] ^= mask;
                match restore(&rec, &resealed(&b)) {
                    Err(_) => refused += 1,
                    Ok(mut s) => {
                        accepted += 1;
                        let mut out = Vec::new();
                        for m in rest {
                            s.handle(m.clone(), &mut out);
                        }
                        s.handle(ShardMsg::Finish, &mut out);
                        for t in &out {
                            write_alert(&mut Vec::new(), &t.alert).expect("write");
                        }
                    }
                }
            }
        }
        eprintln!(
            "{} bytes of state: {refused} changes refused, {accepted} accepted",
            sealed.len()
        );
        assert!(refused > 0 && accepted > 0);
    }

    #[test]
    fn keys_cannot_nest_tuples() {
        let flat = KeyValue::Tuple(Arc::from(vec![
            KeyValue::Ip("192.0.2.1".parse().expect("address")),
            KeyValue::Str("GET /x".into()),
            KeyValue::Username("jo@example.com".into()),
            KeyValue::Token(TokenHash::of("t")),
        ]));
        let b = postcard::to_stdvec(&flat).expect("serialize");
        assert_eq!(postcard::from_bytes::<KeyValue>(&b).expect("reads"), flat);
        let nested = KeyValue::Tuple(Arc::from(vec![flat]));
        let b = postcard::to_stdvec(&nested).expect("serialize");
        assert!(postcard::from_bytes::<KeyValue>(&b).is_err());
        // Deep nesting is refused at the second level, not recursed into.
        let deep: Vec<u8> = std::iter::repeat_n([4u8, 1], 100_000).flatten().collect();
        assert!(postcard::from_bytes::<KeyValue>(&deep).is_err());
    }

    #[test]
    fn baselines_read_back_exactly() {
        // As `learn` makes them: auto-resizing from 2 significant digits; counts, and body
        // sizes that grew the range.
        let mut small = Histogram::<u64>::new(2).expect("histogram");
        for v in [3u64, 3, 7, 20, 20, 20, 31, 200] {
            small.saturating_record(v);
        }
        let mut grown = Histogram::<u64>::new(2).expect("histogram");
        for v in [4_000u64, 4_100, 4_000, 8 << 20, 1, 77] {
            grown.record(v).expect("auto-resizes");
        }
        for h in [small, grown, Histogram::<u64>::new(2).expect("histogram")] {
            let saved = SavedHistogram::of(&h);
            let b = postcard::to_stdvec(&saved).expect("serialize");
            let back = postcard::from_bytes::<SavedHistogram>(&b)
                .expect("reads")
                .histogram()
                .expect("valid");
            assert!(back == h);
            assert_eq!(back.high(), h.high());
            assert_eq!(back.distinct_values(), h.distinct_values());
            assert_eq!(baseline_bytes(&back), baseline_bytes(&h));
            assert_eq!(back.len(), h.len());
            for q in [0.0, 0.5, 0.9, 0.99, 1.0] {
                assert_eq!(back.value_at_quantile(q), h.value_at_quantile(q));
            }
            // It goes on growing as the original would.
            let (mut a, mut b) = (back, h);
            a.record(1 << 30).expect("auto-resizes");
            b.record(1 << 30).expect("auto-resizes");
            assert!(a == b && a.distinct_values() == b.distinct_values());
        }
        // Out of range: refused.
        let wide = SavedHistogram {
            high: u64::MAX,
            counts: vec![(1, 1)],
        };
        assert!(wide.histogram().is_none());
        let outside = SavedHistogram {
            high: 2,
            counts: vec![(1 << 20, 1)],
        };
        assert!(outside.histogram().is_none());
    }
}
