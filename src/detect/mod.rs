//! Detect: compiled rules run over the requests of every actor, on packet time.
//!
//! Input: [`Event`]s (one per transaction: actor, endpoint, status, token verdict) in packet
//! time order. Output: [`Alert`]s, already aggregated: per (rule, key) the first alert goes
//! out when the detector fires, then further matching requests of that key are counted
//! into one follow-up alert per suppression window instead of alerting again.
//! Owns per-rule, per-key windows. Limits: windows are kept as 128 buckets (so a count is
//! exact to 1/128 of the window), distinct sets hold at most the threshold, keys per rule
//! are capped (`[detect] max_keys_per_rule`), idle keys are swept and counted; at the cap
//! the least recently seen tenth is evicted (counted), so spoofed actors cannot exhaust
//! memory and new actors are always tracked.
//! Determinism: given the same event order, the same alerts; keys are hashed with a random
//! seed but nothing is emitted in hash order.

mod alert;
pub mod exposure;
mod extract;
pub use crate::intern;
mod inventory;
mod objects;
mod publicity;
pub mod shared;
mod window;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::actor::Actor;
use crate::actor::registry::{ActorSummary, Registry};
use crate::budget::{Budget, Table, Usage};
use crate::capture::Timestamp;
use crate::rules::{DetectorKind, KeyField, Matcher, Rule, RuleId, RuleSet};
use crate::token::{TokenHash, Verdict};

pub use alert::{Alert, AlertActor, write_alert};
pub use extract::{LoginConfig, login_username, object_number};
use hdrhistogram::Histogram;
pub use objects::{
    ObjectRef, OwnersConfig, Ownership, collection as objects_collection, request_objects,
    returned_from_scan, returned_objects,
};
use window::{Episode, KeyState, Observed, Sample};

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
    /// Set by the engine: `METHOD /route`, shared across events.
    pub endpoint: Option<Arc<str>>,
    /// Set by the engine: [`Event::principal`], made once for every rule keyed by it.
    pub principal_key: Option<Arc<str>>,
    /// Response body bytes on the wire (after de-chunking, before content decoding).
    pub body_bytes: Option<u64>,
    pub status: Option<u16>,
    pub family: Option<Arc<str>>,
    pub verdict: Verdict,
    pub token: Option<TokenHash>,
    /// Seconds the token was past its `exp` at `ts` (expired tokens with believable claims).
    pub expired_for: Option<f64>,
    /// The concrete path (redacted): the object the request fetched.
    pub object: Option<Arc<str>>,
    /// The object's number: the last numeric path segment, else the first numeric `page`,
    /// `offset`, `id`, `start` or `p` query parameter.
    pub number: Option<u64>,
    /// Login routes: the username tried (from the JSON or form body); outputs show it
    /// masked.
    pub username: Option<Arc<str>>,
    /// The route is a login route (`[detect] login_routes`).
    pub login: bool,
    /// Objects the request names (path ids, `*_id` parameters and body fields).
    pub objects: Vec<ObjectRef>,
    /// Objects its JSON response returned.
    pub returned: Vec<ObjectRef>,
    /// Set by the engine: how the objects relate to the principal, and whether a 2xx
    /// answer carried someone else's.
    pub ownership: Option<Ownership>,
    pub cross_user: bool,
    /// What the response body gave away (sensitive field paths and classes, masked).
    pub exposure: Option<Arc<exposure::Scan>>,
    /// Set by the engine: the findings the route's `expose_only` does not allow.
    pub exposed: Vec<exposure::Finding>,
    /// Set by the engine: some exposed finding is of a class the rules deny everywhere.
    pub denied: bool,
    /// Set by the engine: the objects judged someone else's.
    pub foreign: Vec<ObjectRef>,
    /// Set by the engine: the request carries the genuine app's attestation: a `valid`
    /// token, or one that expired no more than `[detect] refresh_grace_secs` earlier (the
    /// SDK refreshes a little late on a slow network).
    pub attested: bool,
    /// Set by the engine: attested devices recently seen behind the client address when it
    /// is a shared address (carrier NAT, corporate proxy), else 0.
    pub shared_devices: u32,
}

impl Event {
    /// Bytes the event holds (inline and what it alone owns on the heap, approximately):
    /// what the ordering buffer charges to the memory budget while it waits.
    pub fn bytes(&self) -> usize {
        use std::mem::size_of;
        let scan = self.exposure.as_deref().map_or(0, |s| {
            size_of::<exposure::Scan>()
                + s.findings.capacity() * size_of::<exposure::Finding>()
                + s.fields.capacity()
        });
        size_of::<Event>()
            + (self.objects.capacity() + self.returned.capacity() + self.foreign.capacity())
                * size_of::<ObjectRef>()
            + self.exposed.capacity() * size_of::<exposure::Finding>()
            + scan
    }

    /// Who acts: the user when known, else the device, else the address.
    pub fn principal(&self) -> String {
        match (&self.actor.user, &self.actor.device) {
            (Some(u), _) => format!("user:{u}"),
            (None, Some(d)) => format!("device:{d}"),
            (None, None) => format!("ip:{}", self.actor.ip),
        }
    }
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
            KeyField::Endpoint => self
                .endpoint
                .clone()
                .or_else(|| self.endpoint().map(Arc::from))
                .map(KeyValue::Str),
            KeyField::Object => self.object.clone().map(KeyValue::Str),
            KeyField::Username => self.username.clone().map(KeyValue::Username),
            KeyField::Principal => Some(KeyValue::Str(
                self.principal_key
                    .clone()
                    .unwrap_or_else(|| self.principal().into()),
            )),
            KeyField::FieldSet => (!self.exposed.is_empty()).then(|| {
                let mut v: Vec<String> = self
                    .exposed
                    .iter()
                    .map(|f| format!("{}={}", f.path, f.class.as_str()))
                    .collect();
                v.sort();
                v.dedup();
                KeyValue::Str(v.join(",").into())
            }),
        }
    }

    /// The key of a rule (one field, or a tuple of several, all present) as looked up in
    /// its key table: built without allocating (a tuple's parts stay inline); the owned
    /// key is made only for a new key.
    fn lookup_key(&self, fields: &[KeyField]) -> Option<Lookup> {
        match fields {
            [one] => self.key(*one).map(Lookup::One),
            many => many
                .iter()
                .map(|f| self.key(*f))
                .collect::<Option<smallvec::SmallVec<_>>>()
                .map(Lookup::Many),
        }
    }
}

/// A rule's key before it is stored: one value, or a tuple's parts inline. Hashes and
/// compares exactly as the [`KeyValue`] it stands for.
enum Lookup {
    One(KeyValue),
    Many(smallvec::SmallVec<[KeyValue; 3]>),
}

impl std::hash::Hash for Lookup {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        match self {
            Lookup::One(k) => k.hash(h),
            Lookup::Many(parts) => hash_tuple(parts, h),
        }
    }
}

impl hashbrown::Equivalent<KeyValue> for Lookup {
    fn equivalent(&self, key: &KeyValue) -> bool {
        match (self, key) {
            (Lookup::One(a), b) => a == b,
            (Lookup::Many(parts), KeyValue::Tuple(t)) => parts[..] == t[..],
            (Lookup::Many(_), _) => false,
        }
    }
}

impl From<&Lookup> for KeyValue {
    fn from(l: &Lookup) -> KeyValue {
        match l {
            Lookup::One(k) => k.clone(),
            Lookup::Many(parts) => KeyValue::Tuple(parts.iter().cloned().collect()),
        }
    }
}

fn hash_tuple<H: std::hash::Hasher>(parts: &[KeyValue], h: &mut H) {
    use std::hash::Hash;
    4u8.hash(h);
    parts.len().hash(h);
    for p in parts {
        p.hash(h);
    }
}

/// A value rules group by or count.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeyValue {
    Ip(IpAddr),
    Str(Arc<str>),
    Token(TokenHash),
    /// A username tried on a login route: kept in memory to tell usernames apart, always
    /// shown masked.
    Username(Arc<str>),
    /// Several fields (`group_by: [ip, endpoint]`), in the rule's order.
    Tuple(Arc<[KeyValue]>),
}

// By hand, so a [`Lookup`] can hash the same way without building the tuple.
impl std::hash::Hash for KeyValue {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        match self {
            KeyValue::Ip(ip) => {
                0u8.hash(h);
                ip.hash(h);
            }
            KeyValue::Str(s) => {
                1u8.hash(h);
                s.hash(h);
            }
            KeyValue::Token(t) => {
                2u8.hash(h);
                t.hash(h);
            }
            KeyValue::Username(u) => {
                3u8.hash(h);
                u.hash(h);
            }
            KeyValue::Tuple(parts) => hash_tuple(parts, h),
        }
    }
}

impl KeyValue {
    /// As outputs may show it: users through the redaction utility, tokens as hashes.
    fn shown(&self, field: KeyField) -> String {
        match self {
            KeyValue::Ip(ip) => ip.to_string(),
            KeyValue::Token(t) => t.to_string(),
            KeyValue::Str(s) if field == KeyField::User => crate::redact::identifier(s),
            KeyValue::Str(s) if field == KeyField::Object => crate::redact::path(s).into_owned(),
            KeyValue::Str(s) if field == KeyField::Principal => match s.split_once(':') {
                Some(("user", u)) => format!("user:{}", crate::redact::identifier(u)),
                _ => s.to_string(),
            },
            KeyValue::Str(s) => s.to_string(),
            KeyValue::Username(u) => crate::redact::mask(u),
            // Callers show tuples part by part (`parts`), each with its own field; this
            // fallback redacts every part as the strictest field would.
            KeyValue::Tuple(v) => v
                .iter()
                .map(|x| x.shown(KeyField::User))
                .collect::<Vec<_>>()
                .join(" "),
        }
    }

    /// The parts of a key with the fields they stand for.
    pub(crate) fn parts<'a>(&'a self, fields: &'a [KeyField]) -> Vec<(KeyField, &'a KeyValue)> {
        match self {
            KeyValue::Tuple(v) => fields.iter().copied().zip(v.iter()).collect(),
            one => fields.first().map(|f| vec![(*f, one)]).unwrap_or_default(),
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
    /// Of `keys_evicted`, keys evicted (least recently seen first) because a rule reached
    /// `max_keys_per_rule` or the keys reached their share of the memory budget; the rest
    /// were idle.
    pub keys_evicted_full: u64,
    /// Times the keys reached their share of the memory budget (the largest rule then
    /// gave up its least recently seen tenth).
    pub keys_over_budget: u64,
    /// Times a rule reached `max_keys_per_rule` and its least recently seen tenth of keys
    /// was evicted to make room (counted in `keys_evicted`).
    pub keys_over_cap: u64,
    /// Baseline detectors: closed windows learned from.
    pub baseline_samples: u64,
    /// Objects in the ownership map now, and evicted from it at its cap.
    pub objects_tracked: u64,
    pub objects_evicted: u64,
    /// Collections learned public (many readers, never anyone's).
    pub public_collections: u64,
    /// Response fields learned public per route (the same values served to many).
    pub public_fields: u64,
    /// Baseline detectors: endpoints not learned because a rule had `MAX_BASELINES`.
    pub baselines_over_cap: u64,
    /// Events that reached detection after later events (ordering lateness exceeded).
    pub late_events: u64,
    /// Shared addresses (carrier NAT, proxies): addresses with attested devices tracked,
    /// those shared now, times an address became shared, and addresses evicted at the cap.
    pub shared_addresses_tracked: u64,
    pub shared_addresses: u64,
    pub shared_addresses_learned: u64,
    pub shared_addresses_evicted: u64,
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
        self.keys_evicted_full += o.keys_evicted_full;
        self.keys_over_cap += o.keys_over_cap;
        self.keys_over_budget += o.keys_over_budget;
        self.baseline_samples += o.baseline_samples;
        self.objects_tracked += o.objects_tracked;
        self.objects_evicted += o.objects_evicted;
        self.public_collections += o.public_collections;
        self.public_fields += o.public_fields;
        self.baselines_over_cap += o.baselines_over_cap;
        self.late_events += o.late_events;
        self.shared_addresses_tracked += o.shared_addresses_tracked;
        self.shared_addresses += o.shared_addresses;
        self.shared_addresses_learned += o.shared_addresses_learned;
        self.shared_addresses_evicted += o.shared_addresses_evicted;
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
    /// Login endpoints and username fields (credential stuffing).
    pub login: LoginConfig,
    /// Actors (addresses, devices, users) profiled.
    pub max_actors: usize,
    /// The object ownership map (BOLA).
    pub owners: OwnersConfig,
    /// Scan response bodies for sensitive data (data exposure, the inventory, returned
    /// ids). The costliest stage per transaction; off trades those for throughput.
    pub scan_responses: bool,
    /// An expired token this close past its `exp` still counts as attested (`attested`
    /// matcher): the SDK's refresh racing a slow network, not a replay.
    pub refresh_grace: Duration,
    /// Shared addresses: how many attested devices behind one address make it shared,
    /// over what window, and how many addresses are tracked.
    pub shared: shared::SharedConfig,
    /// The memory budget (`[runtime] memory_budget_mib`): keys, actors, objects, baselines,
    /// the inventory and shared addresses each stay within their share.
    pub budget: Budget,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            max_keys_per_rule: 100_000,
            login: LoginConfig::default(),
            max_actors: 100_000,
            owners: OwnersConfig::default(),
            scan_responses: true,
            refresh_grace: Duration::from_secs(60),
            shared: shared::SharedConfig::default(),
            budget: Budget::default(),
        }
    }
}

struct RuleState {
    rule: Arc<Rule>,
    keys: hashbrown::HashMap<KeyValue, KeyState, foldhash::fast::RandomState>,
    /// Bytes the keys hold beyond their table slots (tuples, windows, episodes).
    heap: usize,
    /// Baseline detectors: per endpoint, the per-key request counts of closed windows.
    baselines: Baselines,
    /// Bytes the baselines hold.
    baseline_bytes: usize,
}

/// A key table slot: the key and its state inline, a control byte, at 7/8 load.
const KEY_SLOT_BYTES: usize = (std::mem::size_of::<(KeyValue, KeyState)>() + 1) * 8 / 7;

/// What a key owns beyond its slot: a tuple's parts (strings are shared, not counted).
fn key_heap(k: &KeyValue) -> usize {
    match k {
        KeyValue::Tuple(parts) => 16 + parts.len() * std::mem::size_of::<KeyValue>(),
        _ => 0,
    }
}

/// What one key costs beyond its slot.
fn key_extra(k: &KeyValue, ks: &KeyState) -> usize {
    key_heap(k) + ks.bytes() - std::mem::size_of::<KeyState>()
}

/// Bytes of one learned baseline: its slot and the histogram's counts.
fn baseline_bytes(h: &Histogram<u64>) -> usize {
    std::mem::size_of::<(KeyValue, Histogram<u64>)>() + 1 + h.distinct_values() * 8
}

type Baselines = HashMap<KeyValue, Histogram<u64>, foldhash::fast::RandomState>;

impl RuleState {
    fn new(rule: Arc<Rule>) -> RuleState {
        RuleState {
            rule,
            keys: hashbrown::HashMap::default(),
            heap: 0,
            baselines: HashMap::default(),
            baseline_bytes: 0,
        }
    }

    fn bytes(&self) -> usize {
        self.keys.len() * KEY_SLOT_BYTES + self.heap
    }
}

/// Endpoints a baseline rule learns at most (routes are templated, so real APIs have far
/// fewer; the cap holds against route-explosion traffic).
const MAX_BASELINES: usize = 4096;

/// Learns a closed window's sample. New endpoints are refused (counted) at the rule's cap
/// or when baselines reach `room` bytes: routes are templated, so the endpoints learned
/// first are the API's, and a later flood of invented ones must not push them out.
fn learn(
    baselines: &mut Baselines,
    bytes: &mut usize,
    room: bool,
    s: Sample,
    stats: &mut DetectStats,
) {
    if !baselines.contains_key(&s.endpoint) && (baselines.len() >= MAX_BASELINES || !room) {
        stats.baselines_over_cap += 1;
        return;
    }
    let mut fresh = false;
    let h = match baselines.entry(s.endpoint) {
        std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
        std::collections::hash_map::Entry::Vacant(v) => {
            // Auto-resizing at 2 significant digits: memory follows the largest value
            // learned (well under a KiB for typical counts), not the whole range, since a
            // rule may learn thousands of endpoints.
            match Histogram::new(2) {
                Ok(h) => {
                    fresh = true;
                    v.insert(h)
                }
                Err(_) => return,
            }
        }
    };
    let before = if fresh { 0 } else { baseline_bytes(h) };
    // Counts up to a million per window; body sizes up to 4 GiB.
    let high = if s.wide {
        u64::from(u32::MAX)
    } else {
        1_000_000
    };
    h.saturating_record(u64::from(s.count).min(high));
    *bytes = (*bytes + baseline_bytes(h)).saturating_sub(before);
    stats.baseline_samples += 1;
}

/// Runs a rule set over events.
pub struct Engine {
    cfg: DetectConfig,
    registry: Registry,
    owners: objects::Owners,
    shared: shared::SharedAddresses,
    public_fields: publicity::PublicFields,
    routes: Vec<crate::rules::PinnedRoute>,
    inventory: inventory::Inventory,
    /// Endpoint and route strings shared across events.
    names: intern::Interner,
    /// Classes that are exposure wherever they appear (`deny_classes`).
    deny: Vec<exposure::Class>,
    rules: Vec<RuleState>,
    stats: DetectStats,
    next_sweep: Timestamp,
    now: Timestamp,
    /// Shares of the memory budget: per-rule keys together, baselines together.
    keys_limit: usize,
    baselines_limit: usize,
}

impl Engine {
    pub fn new(cfg: DetectConfig, set: &RuleSet) -> Engine {
        let b = cfg.budget;
        // Tables of fixed-size entries hold at most their share's worth of entries.
        let fits = |t: Table, entry: usize| (b.share(t) / entry.max(1)).max(1);
        let mut e = Engine {
            // Addresses, devices and users: a third of the share each.
            registry: Registry::new(
                cfg.max_actors
                    .min(fits(Table::Actors, 3 * Registry::PROFILE_BYTES)),
            ),
            owners: objects::Owners::new(OwnersConfig {
                max_objects: cfg
                    .owners
                    .max_objects
                    .min(fits(Table::Objects, objects::ENTRY_BYTES)),
                ..cfg.owners.clone()
            }),
            shared: shared::SharedAddresses::new(shared::SharedConfig {
                max_addresses: cfg
                    .max_actors
                    .min(fits(Table::Shared, shared::ADDRESS_BYTES)),
                ..cfg.shared.clone()
            }),
            keys_limit: b.share(Table::Keys),
            baselines_limit: b.share(Table::Baselines),
            // The inventory's share: half the route inventory, half public-field learning.
            public_fields: publicity::PublicFields::with_limit(
                b.share(Table::Inventory) / 2 / publicity::FIELD_BYTES,
            ),
            routes: Vec::new(),
            inventory: inventory::Inventory::with_limit(
                b.share(Table::Inventory) / 2 / inventory::FIELD_BYTES,
            ),
            names: intern::Interner::default(),
            deny: Vec::new(),
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
        self.routes = set.routes.clone();
        self.deny = set.denied();
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
                    self.rules.push(RuleState::new(r.clone()));
                }
                None => self.rules.push(RuleState::new(r.clone())),
            }
        }
        let mut removed: Vec<RuleState> = old.into_values().collect();
        removed.sort_by(|a, b| a.rule.id.cmp(&b.rule.id));
        for mut st in removed {
            flush_rule(&mut st, &mut self.stats, out);
        }
    }

    pub fn stats(&self) -> DetectStats {
        let mut s = self.stats.clone();
        let sh = self.shared.stats(self.now);
        s.shared_addresses_tracked = sh.addresses as u64;
        s.shared_addresses = sh.shared as u64;
        s.shared_addresses_learned = sh.learned;
        s.shared_addresses_evicted = sh.evicted;
        s.public_fields = self.public_fields.public_count() as u64;
        s
    }

    pub fn note_late(&mut self, n: u64) {
        self.stats.late_events += n;
    }

    /// Runs every rule over one event; alerts are appended to `out`.
    pub fn observe(&mut self, ev: &Event, out: &mut Vec<Alert>) {
        self.observe_owned(ev.clone(), out);
    }

    /// [`Engine::observe`] for an event the caller gives up (no copy is made).
    pub fn observe_owned(&mut self, mut ev: Event, out: &mut Vec<Alert>) {
        let start = out.len();
        ev.attested = match ev.verdict {
            Verdict::Valid => true,
            Verdict::Expired => ev
                .expired_for
                .is_some_and(|e| e <= self.cfg.refresh_grace.as_secs_f64()),
            _ => false,
        };
        ev.shared_devices =
            self.shared
                .observe(ev.ts, ev.actor.ip, ev.actor.device.as_deref(), ev.attested);
        self.registry.observe(
            ev.ts,
            ev.actor.ip,
            ev.actor.device.as_ref(),
            ev.actor.user.as_ref(),
            ev.verdict == Verdict::Valid,
        );
        let judged = self.judge_objects(ev);
        self.rules_over(&judged, out);
        self.note_risk(&out[start..]);
    }

    /// Applies pinned route templates and ownership to the event.
    fn judge_objects(&mut self, mut e: Event) -> Event {
        let pinned = e.object.as_deref().and_then(|p| {
            self.routes
                .iter()
                .enumerate()
                .find_map(|(i, r)| r.matches(p).map(|m| (i, r, m)))
        });
        let mut declared_users: Vec<ObjectRef> = Vec::new();
        let mut public = false;
        let mut pinned_at = None;
        if let Some((i, r, m)) = pinned {
            if e.route.as_deref() != Some(r.template.as_str()) {
                e.route = Some(self.names.name(&r.template));
            }
            public = r.public;
            pinned_at = Some(i);
            if let Some(o) = m.owner {
                declared_users.push(o);
            }
        }
        if let (Some(m), Some(r)) = (&e.method, &e.route) {
            e.endpoint = Some(self.names.endpoint(m, r));
        }
        let principal: Arc<str> = e.principal().into();
        e.principal_key = Some(principal.clone());
        if !(e.objects.is_empty() && e.returned.is_empty()) {
            self.judge_ownership(&mut e, &principal, public, &declared_users);
        }
        if let Some(scan) = e.exposure.clone() {
            let route = e.route.clone();
            // Learned first, so the answer that shows a value is everyone's is not itself
            // reported. Only answers that took nobody else's objects teach, and never
            // answers about people (user records): a profile that shows every caller its
            // owner's e-mail is exposure, however many callers there are.
            let nobodys = !e.cross_user
                && matches!(
                    e.ownership,
                    None | Some(Ownership::None | Ownership::Public | Ownership::Unclaimed)
                )
                && !e
                    .objects
                    .iter()
                    .chain(&e.returned)
                    .any(|o| objects::is_user_collection(&o.collection));
            if nobodys && let Some(route) = &route {
                self.public_fields.learn(
                    route,
                    objects::principal_hash(&principal),
                    &scan.findings,
                );
            }
            let public_fields = &self.public_fields;
            let deny = &self.deny;
            let allowed = pinned_at
                .and_then(|i| self.routes.get(i))
                .and_then(|r| r.expose_only.as_deref());
            // A response any cache may serve to anyone is nobody's personal data.
            let shared_cache = scan.shared_cache;
            e.exposed = scan
                .findings
                .iter()
                .filter(|f| {
                    deny.contains(&f.class)
                        || (!shared_cache
                            && !allowed.is_some_and(|a| a.iter().any(|p| **p == *f.path))
                            && !route
                                .as_ref()
                                .is_some_and(|r| public_fields.is_public(r, f)))
                })
                .cloned()
                .collect();
            e.denied = e.exposed.iter().any(|f| self.deny.contains(&f.class));
            if let (Some(route), Some(m)) = (&e.route, &e.method) {
                self.inventory.add(m, route, &scan);
            }
        }
        e
    }

    /// Judges the objects of a request against the ownership map.
    fn judge_ownership(
        &mut self,
        e: &mut Event,
        principal: &str,
        public: bool,
        declared_users: &[ObjectRef],
    ) {
        let j = self.owners.judge(
            e.ts,
            principal,
            e.actor.user.as_deref(),
            &e.objects,
            &e.returned,
            e.method.as_deref(),
            e.status,
            &|_| public,
            &|o| declared_users.contains(o),
        );
        self.stats.objects_evicted = self.owners.evicted;
        self.stats.objects_tracked = self.owners.len() as u64;
        self.stats.public_collections = self.owners.public_collections() as u64;
        e.ownership = j.ownership;
        e.cross_user = j.cross_user;
        e.foreign = j.foreign;
    }

    /// The actors' risk summary: the `n` riskiest, and the registry's counters.
    pub fn actors(&self, n: usize) -> ActorSummary {
        self.registry.summary(n)
    }

    /// What each route returned: field paths, their classes, how often.
    pub fn inventory(&self) -> serde_json::Value {
        self.inventory.to_json()
    }

    /// The actor registry's counters.
    pub fn actor_stats(&self) -> crate::actor::registry::RegistryStats {
        self.registry.stats()
    }

    /// Keys held across rules, and the most any one rule holds.
    pub fn tracked_keys(&self) -> (usize, usize) {
        let sizes = self.rules.iter().map(|r| r.keys.len());
        (sizes.clone().sum(), sizes.max().unwrap_or(0))
    }

    /// Bytes the rules' keys hold.
    fn keys_bytes(&self) -> usize {
        self.rules.iter().map(RuleState::bytes).sum()
    }

    /// Baselines may learn new endpoints: they are within their share.
    fn baseline_room(&self) -> bool {
        self.rules.iter().map(|r| r.baseline_bytes).sum::<usize>() < self.baselines_limit
    }

    /// At the keys' share of the budget, the rule holding the most gives up its least
    /// recently seen tenth (open aggregates are emitted first), until they fit.
    fn keys_within_budget(&mut self, out: &mut Vec<Alert>) {
        for _ in 0..16 {
            if self.keys_bytes() < self.keys_limit {
                return;
            }
            let Some(st) = self
                .rules
                .iter_mut()
                .filter(|r| !r.keys.is_empty())
                .max_by_key(|r| r.bytes())
            else {
                return;
            };
            self.stats.keys_over_budget += 1;
            evict_oldest(st, &mut self.stats, out);
        }
    }

    /// What each table of the detect stage holds, for the memory budget's report.
    pub fn memory(&self) -> Vec<(Table, Usage)> {
        let b = self.cfg.budget;
        let keys = Usage {
            bytes: self.keys_bytes() as u64,
            limit: self.keys_limit as u64,
            entries: self.rules.iter().map(|r| r.keys.len() as u64).sum(),
            evictions: self.stats.keys_evicted_full,
        };
        let baselines = Usage {
            bytes: self.rules.iter().map(|r| r.baseline_bytes as u64).sum(),
            limit: self.baselines_limit as u64,
            entries: self.rules.iter().map(|r| r.baselines.len() as u64).sum(),
            evictions: 0,
        };
        let a = self.registry.stats();
        let actors = Usage {
            bytes: ((a.addresses + a.devices + a.users) * Registry::PROFILE_BYTES) as u64,
            limit: b.share(Table::Actors) as u64,
            entries: (a.addresses + a.devices + a.users) as u64,
            evictions: a.evicted,
        };
        let objects = Usage {
            bytes: (self.owners.len() * objects::ENTRY_BYTES) as u64,
            limit: b.share(Table::Objects) as u64,
            entries: self.owners.len() as u64,
            evictions: self.owners.evicted,
        };
        let sh = self.shared.stats(self.now);
        let shared = Usage {
            bytes: (sh.addresses * shared::ADDRESS_BYTES) as u64,
            limit: b.share(Table::Shared) as u64,
            entries: sh.addresses as u64,
            evictions: sh.evicted,
        };
        let (inv_bytes, inv_entries) = self.inventory.usage();
        let (pub_bytes, pub_entries) = self.public_fields.usage();
        let inventory = Usage {
            bytes: (inv_bytes + pub_bytes) as u64,
            limit: b.share(Table::Inventory) as u64,
            entries: (inv_entries + pub_entries) as u64,
            evictions: 0,
        };
        vec![
            (Table::Keys, keys),
            (Table::Baselines, baselines),
            (Table::Actors, actors),
            (Table::Objects, objects),
            (Table::Shared, shared),
            (Table::Inventory, inventory),
        ]
    }

    fn note_risk(&mut self, alerts: &[Alert]) {
        for a in alerts {
            let s = &a.subjects;
            self.registry.note_alert(
                s.ip,
                s.device.as_ref(),
                s.user.as_ref(),
                a.category,
                a.severity,
            );
        }
    }

    fn rules_over(&mut self, ev: &Event, out: &mut Vec<Alert>) {
        if ev.ts > self.now {
            self.now = ev.ts;
        }
        if self.now >= self.next_sweep {
            self.sweep_all(self.now, out);
        }
        self.stats.events += 1;
        self.keys_within_budget(out);
        let room = self.baseline_room();
        let mut matched = false;
        let cap = self.cfg.max_keys_per_rule;
        for st in &mut self.rules {
            if !matcher_matches(&st.rule.matcher, ev) {
                continue;
            }
            matched = true;
            let rule = st.rule.clone();
            let det = &rule.detector;
            let Some(key) = ev.lookup_key(&det.group_by) else {
                continue;
            };
            let mut o = Observed {
                ev,
                distinct: None,
                when: false,
                level: None,
            };
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
                    o.level = ev
                        .key(KeyField::Endpoint)
                        .and_then(|e| st.baselines.get(&e))
                        .filter(|h| h.len() >= u64::from(*learn_min))
                        .map(|h| h.value_at_quantile(*quantile) as f64);
                }
                _ => {}
            }
            if st.keys.len() >= cap && !st.keys.contains_key(&key) {
                sweep_rule(st, self.now, room, &mut self.stats, out);
                if st.keys.len() >= cap {
                    self.stats.keys_over_cap += 1;
                    evict_oldest(st, &mut self.stats, out);
                }
            }
            let RuleState {
                keys,
                heap,
                baselines,
                baseline_bytes,
                ..
            } = st;
            let (ks, before) = match keys.get_mut(&key) {
                Some(ks) => {
                    let b = ks.bytes();
                    (ks, b)
                }
                None => {
                    let endpoint = matches!(
                        det.kind,
                        DetectorKind::Baseline { .. } | DetectorKind::Outlier { .. }
                    )
                    .then(|| ev.key(KeyField::Endpoint))
                    .flatten();
                    let k = KeyValue::from(&key);
                    *heap += key_heap(&k);
                    let ks = keys.entry(k).or_insert(KeyState::new(det, endpoint));
                    (ks, std::mem::size_of::<KeyState>())
                }
            };
            if let Some(episode) = ks.due_follow_up(ev.ts, &rule) {
                emit(&rule, &(&key).into(), episode, true, &mut self.stats, out);
            }
            let stats = &mut self.stats;
            let mut samples = Vec::new();
            let fired = ks.observe(&rule, o, stats, &mut |s| samples.push(s));
            for s in samples {
                learn(baselines, baseline_bytes, room, s, stats);
            }
            *heap = (*heap + ks.bytes()).saturating_sub(before);
            if let Some(episode) = fired {
                emit(&rule, &(&key).into(), episode, false, stats, out);
            }
        }
        if matched {
            self.stats.matched += 1;
        }
    }

    /// Emits follow-ups that are due and evicts idle keys, at packet time `now`.
    pub fn sweep(&mut self, now: Timestamp, out: &mut Vec<Alert>) {
        let start = out.len();
        self.sweep_all(now, out);
        self.note_risk(&out[start..]);
    }

    fn sweep_all(&mut self, now: Timestamp, out: &mut Vec<Alert>) {
        if now > self.now {
            self.now = now;
        }
        self.next_sweep = Timestamp(self.now.0.saturating_add(SWEEP_NANOS));
        let room = self.baseline_room();
        for st in &mut self.rules {
            sweep_rule(st, self.now, room, &mut self.stats, out);
        }
        self.shared.sweep(self.now);
    }

    /// End of input: every open aggregate is emitted.
    pub fn finish(&mut self, out: &mut Vec<Alert>) {
        let start = out.len();
        for st in &mut self.rules {
            flush_rule(st, &mut self.stats, out);
        }
        self.note_risk(&out[start..]);
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
    st.heap = 0;
}

fn sweep_rule(
    st: &mut RuleState,
    now: Timestamp,
    room: bool,
    stats: &mut DetectStats,
    out: &mut Vec<Alert>,
) {
    let window = st.rule.detector.window;
    let rule = &st.rule;
    let mut due: Vec<(KeyValue, Episode)> = Vec::new();
    let mut samples = Vec::new();
    // The keys' bytes are counted afresh as they are visited.
    let mut heap = 0;
    st.keys.retain(|k, ks| {
        if let Some(e) = ks.due_follow_up(now, rule) {
            due.push((k.clone(), e));
        }
        if let Some(s) = ks.closed_sample(now) {
            samples.push((k.clone(), s));
        }
        let keep = !ks.idle(now, window);
        if keep {
            heap += key_extra(k, ks);
        } else {
            stats.keys_evicted += 1;
        }
        keep
    });
    st.heap = heap;
    // Learned in key order, so nothing depends on hash order.
    samples.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, s) in samples {
        learn(&mut st.baselines, &mut st.baseline_bytes, room, s, stats);
    }
    due.sort_by(|a, b| (a.1.first, &a.0).cmp(&(b.1.first, &b.0)));
    for (k, e) in due {
        emit(&st.rule, &k, e, true, stats, out);
    }
}

/// At the key cap with nothing idle: the least recently seen tenth of the keys goes (their
/// open aggregates are emitted first), so new actors are always tracked and a flood of
/// spoofed ones only ages out the quietest state.
fn evict_oldest(st: &mut RuleState, stats: &mut DetectStats, out: &mut Vec<Alert>) {
    let ages = st
        .keys
        .iter()
        .map(|(k, ks)| (ks.last_seen(), k.clone()))
        .collect();
    for k in crate::actor::registry::oldest_tenth(ages) {
        if let Some(mut ks) = st.keys.remove(&k) {
            st.heap = st.heap.saturating_sub(key_extra(&k, &ks));
            stats.keys_evicted += 1;
            stats.keys_evicted_full += 1;
            if let Some(e) = ks.take_pending() {
                emit(&st.rule, &k, e, true, stats, out);
            }
        }
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

fn matcher_matches(m: &Matcher, ev: &Event) -> bool {
    if m.attested.is_some_and(|a| a != ev.attested) {
        return false;
    }
    if m.shared_address
        .is_some_and(|s| s != (ev.shared_devices > 0))
    {
        return false;
    }
    if let Some(cs) = &m.exposed_classes
        && !ev.exposed.iter().any(|f| cs.contains(&f.class))
    {
        return false;
    }
    if let Some(d) = m.denied
        && d != ev.denied
    {
        return false;
    }
    if let Some(n) = m.min_records
        && ev.exposure.as_ref().is_none_or(|s| s.records < n)
    {
        return false;
    }
    if let Some(c) = m.cross_user
        && c != ev.cross_user
    {
        return false;
    }
    if let Some(os) = &m.ownership {
        match ev.ownership {
            Some(o) if os.contains(&o) => {}
            _ => return false,
        }
    }
    if m.login.is_some_and(|l| l != ev.login) {
        return false;
    }
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
