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
pub mod fingerprint;
pub use crate::intern;
mod inventory;
mod json_fields;
mod objects;
mod publicity;
pub mod scan_memo;
pub mod shard;
pub mod shared;
mod window;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::actor::Actor;
use crate::actor::registry::{ActorSummary, Registry};
use crate::budget::{Budget, Table, Usage};
use crate::capture::Timestamp;
use crate::rules::{KeyField, Matcher, Rule, RuleSet};
use crate::token::{TokenHash, Verdict};
use thin_vec::ThinVec;

pub use alert::{Alert, AlertActor, write_alert};
pub use extract::{LoginConfig, login_route_username, login_username, object_number};
pub use objects::{
    ObjectRef, OwnersConfig, Ownership, collection as objects_collection, request_objects,
    request_objects_judged, returned_from_scan, returned_objects,
};
pub use shard::{ShardHost, ShardMsg, Tagged};

/// How often (packet time) idle keys are swept and due follow-up alerts emitted.
const SWEEP_NANOS: u64 = 1_000_000_000;

/// The sweep boundary after `now`: the next whole second of packet time. Boundaries fall
/// on the packet clock alone, not on when the last sweep happened, so every sensor of a
/// scale-out deployment sweeps at the same boundaries and a correlator merging their
/// streams sweeps where one process reading all the traffic would.
pub(crate) fn next_sweep_after(now: Timestamp) -> Timestamp {
    Timestamp(
        (now.0 / SWEEP_NANOS)
            .saturating_add(1)
            .saturating_mul(SWEEP_NANOS),
    )
}

/// Where an event stands in the detect stage's packet-time order: the ordering buffer's
/// key (completion time, request time, client, server, per-connection sequence). Sensors of
/// a scale-out deployment carry it with each event, so a correlator merging several
/// sensors' streams puts their events in the order one process would.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct StreamOrder {
    pub at: Timestamp,
    pub ts: Timestamp,
    pub client: std::net::SocketAddr,
    pub server: std::net::SocketAddr,
    pub seq: u64,
}

/// What the detectors see of one transaction (and, enriched, what a detect shard is sent).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
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
    /// Saturated at `u32::MAX` (4 GiB): the outlier detectors learn sizes up to there, and
    /// the event is a size class smaller than with a `u64`.
    pub body_bytes: Option<u32>,
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
    pub objects: ThinVec<ObjectRef>,
    /// Objects its JSON response returned.
    pub returned: ThinVec<ObjectRef>,
    /// Set by the engine: how the objects relate to the principal, and whether a 2xx
    /// answer carried someone else's.
    pub ownership: Option<Ownership>,
    pub cross_user: bool,
    /// What the response body gave away (sensitive field paths and classes, masked).
    pub exposure: Option<Arc<exposure::Scan>>,
    /// Set by the engine: the findings the route's `expose_only` does not allow.
    pub exposed: ThinVec<exposure::Finding>,
    /// Set by the engine: the `field_set` key of `exposed` (made once, shared across
    /// events with the same set, rather than once for every rule keyed by it). Not sent
    /// to a shard in another process, which makes it from `exposed` (the wire format
    /// stays as it was).
    #[serde(skip)]
    pub field_set: Option<Arc<str>>,
    /// Set by the engine: some exposed finding is of a class the rules deny everywhere.
    pub denied: bool,
    /// Set by the engine: the objects judged someone else's.
    pub foreign: ThinVec<ObjectRef>,
    /// Set by the engine: the request carries the genuine app's attestation: a `valid`
    /// token, or one that expired no more than `[detect] refresh_grace_secs` earlier (the
    /// SDK refreshes a little late on a slow network).
    pub attested: bool,
    /// Set by the engine: attested devices recently seen behind the client address when it
    /// is a shared address (carrier NAT, corporate proxy), else 0.
    pub shared_devices: u32,
    /// The client's TLS fingerprint (JA4): from the edge's header, or (set by the engine)
    /// joined from the handshake the viewer made.
    #[serde(default)]
    pub ja4: Option<Arc<str>>,
    /// The edge's viewer (`CloudFront-Viewer-Address`), to join with its handshake (boxed:
    /// rare, and every event waiting in the ordering buffer would carry its 32 bytes).
    #[serde(default)]
    pub viewer: Option<Box<std::net::SocketAddr>>,
    /// Set by the engine: the fingerprint's marks (`fingerprint::APP`, ...).
    #[serde(default)]
    pub fingerprint: u8,
}

/// The `field_set` key of exposed findings: `path=class` of each, sorted, without
/// repeats, joined by commas; `None` when nothing is exposed.
fn field_set(exposed: &[exposure::Finding]) -> Option<String> {
    let mut s = String::new();
    write_field_set(exposed, &mut s);
    (!s.is_empty()).then_some(s)
}

/// [`field_set`] written into `out` (emptied first; left empty when nothing is exposed),
/// without a string per finding: the findings are sorted as their `path=class` texts
/// would be, byte by byte.
fn write_field_set(exposed: &[exposure::Finding], out: &mut String) {
    out.clear();
    fn text(f: &exposure::Finding) -> impl Iterator<Item = u8> + '_ {
        f.path
            .bytes()
            .chain(std::iter::once(b'='))
            .chain(f.class.as_str().bytes())
    }
    let mut v: smallvec::SmallVec<[&exposure::Finding; 8]> = exposed.iter().collect();
    v.sort_by(|a, b| text(a).cmp(text(b)));
    // Class names hold no `=`: equal texts are equal (path, class) pairs.
    v.dedup_by(|a, b| a.path == b.path && a.class == b.class);
    for (i, f) in v.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&f.path);
        out.push('=');
        out.push_str(f.class.as_str());
    }
}

impl Event {
    /// Bytes the event holds (inline and what it alone owns on the heap, approximately):
    /// what the ordering buffer charges to the memory budget while it waits.
    pub fn bytes(&self) -> usize {
        use std::mem::size_of;
        let scan = self.exposure.as_deref().map_or(0, |s| {
            size_of::<exposure::Scan>() + s.findings.capacity() * size_of::<exposure::Finding>()
        });
        size_of::<Event>()
            + (self.objects.capacity() + self.returned.capacity() + self.foreign.capacity())
                * size_of::<ObjectRef>()
            + self.exposed.capacity() * size_of::<exposure::Finding>()
            + scan
    }

    /// Drops what the engine made for the event from its own tables: the shared endpoint,
    /// principal and field-set keys, and the judged lists (exposed findings, others'
    /// objects). What the worker made, and the engine's flags and counts, stay.
    pub fn shed_enrichment(&mut self) {
        self.endpoint = None;
        self.principal_key = None;
        self.field_set = None;
        self.exposed = ThinVec::new();
        self.foreign = ThinVec::new();
    }

    /// Who acts: the user when known, else the device, else the address.
    pub fn principal(&self) -> String {
        let mut s = String::new();
        self.write_principal(&mut s);
        s
    }

    /// [`Self::principal`] appended to `out`.
    pub fn write_principal(&self, out: &mut String) {
        use std::fmt::Write;
        match (&self.actor.user, &self.actor.device) {
            (Some(u), _) => {
                out.push_str("user:");
                out.push_str(u);
            }
            (None, Some(d)) => {
                out.push_str("device:");
                out.push_str(d);
            }
            (None, None) => {
                let _ = write!(out, "ip:{}", self.actor.ip);
            }
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
            KeyField::Ja4 => self.ja4.clone().map(KeyValue::Str),
            KeyField::FieldSet => self
                .field_set
                .clone()
                .or_else(|| field_set(&self.exposed).map(Arc::from))
                .map(KeyValue::Str),
        }
    }

    /// A field's value borrowed from the event where it is held, made only when it is
    /// derived (a field set, an endpoint or principal the engine did not set).
    fn key_ref(&self, f: KeyField) -> Option<KeyRef<'_>> {
        fn str_of(s: &Option<Arc<str>>) -> Option<KeyRef<'_>> {
            s.as_ref().map(KeyRef::Str)
        }
        match f {
            KeyField::Ip => Some(KeyRef::Ip(self.actor.ip)),
            KeyField::Device => str_of(&self.actor.device),
            KeyField::User => str_of(&self.actor.user),
            KeyField::Token => self.token.map(KeyRef::Token),
            KeyField::Endpoint if self.endpoint.is_some() => str_of(&self.endpoint),
            KeyField::Principal if self.principal_key.is_some() => str_of(&self.principal_key),
            KeyField::FieldSet if self.field_set.is_some() => str_of(&self.field_set),
            KeyField::Object => str_of(&self.object),
            KeyField::Username => self.username.as_ref().map(KeyRef::Username),
            KeyField::Ja4 => str_of(&self.ja4),
            KeyField::Endpoint | KeyField::Principal | KeyField::FieldSet => {
                self.key(f).map(KeyRef::Owned)
            }
        }
    }

    /// The key of a rule (one field, or a tuple of several, all present) as looked up in
    /// its key table: built without allocating or counting references (its values are
    /// borrowed from the event, a tuple's parts stay inline); the owned key is made only
    /// for a new key.
    fn lookup_key(&self, fields: &[KeyField]) -> Option<Lookup<'_>> {
        match fields {
            [one] => self.key_ref(*one).map(Lookup::One),
            [a, b] => Some(Lookup::Two(self.key_ref(*a)?, self.key_ref(*b)?)),
            many => many
                .iter()
                .map(|f| self.key_ref(*f))
                .collect::<Option<smallvec::SmallVec<_>>>()
                .map(Lookup::Many),
        }
    }
}

/// A [`KeyValue`] borrowed from an event: hashes and compares exactly as the value it
/// stands for.
enum KeyRef<'a> {
    Ip(IpAddr),
    Str(&'a Arc<str>),
    Token(TokenHash),
    Username(&'a Arc<str>),
    /// A value derived for the lookup.
    Owned(KeyValue),
}

impl std::hash::Hash for KeyRef<'_> {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        match self {
            KeyRef::Ip(ip) => hash_ip(ip, h),
            KeyRef::Str(s) => hash_str(1, s, h),
            KeyRef::Token(t) => hash_token(t, h),
            KeyRef::Username(u) => hash_str(3, u, h),
            KeyRef::Owned(k) => k.hash(h),
        }
    }
}

impl hashbrown::Equivalent<KeyValue> for KeyRef<'_> {
    fn equivalent(&self, key: &KeyValue) -> bool {
        match (self, key) {
            (KeyRef::Ip(a), KeyValue::Ip(b)) => a == b,
            (KeyRef::Str(a), KeyValue::Str(b)) | (KeyRef::Username(a), KeyValue::Username(b)) => {
                Arc::ptr_eq(a, b) || ***a == **b
            }
            (KeyRef::Token(a), KeyValue::Token(b)) => a == b,
            (KeyRef::Owned(a), b) => a == b,
            _ => false,
        }
    }
}

impl From<&KeyRef<'_>> for KeyValue {
    fn from(k: &KeyRef<'_>) -> KeyValue {
        match k {
            KeyRef::Ip(ip) => KeyValue::Ip(*ip),
            KeyRef::Str(s) => KeyValue::Str(Arc::clone(s)),
            KeyRef::Token(t) => KeyValue::Token(*t),
            KeyRef::Username(u) => KeyValue::Username(Arc::clone(u)),
            KeyRef::Owned(k) => k.clone(),
        }
    }
}

/// A rule's key before it is stored: one value, or a tuple's parts inline. Hashes and
/// compares exactly as the [`KeyValue`] it stands for.
enum Lookup<'a> {
    One(KeyRef<'a>),
    /// A pair (every tuple the built-in rules group by): built and dropped without the
    /// length and spill checks of a small vector, for each of a few million lookups.
    Two(KeyRef<'a>, KeyRef<'a>),
    Many(smallvec::SmallVec<[KeyRef<'a>; 3]>),
}

impl std::hash::Hash for Lookup<'_> {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        match self {
            Lookup::One(k) => k.hash(h),
            Lookup::Two(a, b) => hash_tuple(&[a, b], h),
            Lookup::Many(parts) => hash_tuple(parts, h),
        }
    }
}

impl hashbrown::Equivalent<KeyValue> for Lookup<'_> {
    fn equivalent(&self, key: &KeyValue) -> bool {
        match (self, key) {
            (Lookup::One(a), b) => a.equivalent(b),
            (Lookup::Two(a, b), KeyValue::Tuple(t)) => match &t[..] {
                [x, y] => a.equivalent(x) && b.equivalent(y),
                _ => false,
            },
            (Lookup::Two(..), _) => false,
            (Lookup::Many(parts), KeyValue::Tuple(t)) => {
                parts.len() == t.len() && parts.iter().zip(t.iter()).all(|(a, b)| a.equivalent(b))
            }
            (Lookup::Many(_), _) => false,
        }
    }
}

impl From<&Lookup<'_>> for KeyValue {
    fn from(l: &Lookup<'_>) -> KeyValue {
        match l {
            Lookup::One(k) => k.into(),
            Lookup::Two(a, b) => KeyValue::Tuple(Arc::from([a.into(), b.into()])),
            Lookup::Many(parts) => KeyValue::Tuple(parts.iter().map(KeyValue::from).collect()),
        }
    }
}

// Key hashes are made of as few writes as tell keys apart: every event hashes a key for
// each rule it reaches. With the derived hashes of a tag, an address (its variant, its
// length, its bytes) or a string (its bytes and a terminator), hashing keys took 317 M
// instructions on the realistic capture, 228 M this way. The variant goes in with the
// value; a string's length is part of foldhash's byte hash. Collisions cost a compare,
// never a wrong key: tables compare keys whole.

fn hash_ip<H: std::hash::Hasher>(ip: &IpAddr, h: &mut H) {
    match ip {
        IpAddr::V4(v4) => h.write_u64(u64::from(v4.to_bits()) | 1 << 32),
        IpAddr::V6(v6) => {
            h.write_u128(v6.to_bits());
            h.write_u8(6);
        }
    }
}

fn hash_str<H: std::hash::Hasher>(tag: u8, s: &str, h: &mut H) {
    h.write(s.as_bytes());
    h.write_u8(tag);
}

fn hash_token<H: std::hash::Hasher>(t: &TokenHash, h: &mut H) {
    h.write_u64(t.as_u64() | 2 << 56);
}

fn hash_tuple<T: std::hash::Hash, H: std::hash::Hasher>(parts: &[T], h: &mut H) {
    h.write_u8(4);
    for p in parts {
        p.hash(h);
    }
}

/// A value rules group by or count. Serializable for shard checkpoints; read back through
/// [`SavedKey`], whose tuples hold single values only.
#[derive(Clone, Debug, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(from = "SavedKey")]
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

/// A [`KeyValue`] as read back: a tuple's parts are single values (rules group by a flat
/// list of fields), so bytes nesting tuples in tuples are refused instead of recursing as
/// deep as they nest. Variants in [`KeyValue`]'s order (serde numbers them).
#[derive(serde::Deserialize)]
enum SavedKey {
    Ip(IpAddr),
    Str(Arc<str>),
    Token(TokenHash),
    Username(Arc<str>),
    Tuple(Vec<SavedPart>),
}

#[derive(serde::Deserialize)]
enum SavedPart {
    Ip(IpAddr),
    Str(Arc<str>),
    Token(TokenHash),
    Username(Arc<str>),
}

impl From<SavedPart> for KeyValue {
    fn from(p: SavedPart) -> KeyValue {
        match p {
            SavedPart::Ip(ip) => KeyValue::Ip(ip),
            SavedPart::Str(s) => KeyValue::Str(s),
            SavedPart::Token(t) => KeyValue::Token(t),
            SavedPart::Username(u) => KeyValue::Username(u),
        }
    }
}

impl From<SavedKey> for KeyValue {
    fn from(k: SavedKey) -> KeyValue {
        match k {
            SavedKey::Ip(ip) => KeyValue::Ip(ip),
            SavedKey::Str(s) => KeyValue::Str(s),
            SavedKey::Token(t) => KeyValue::Token(t),
            SavedKey::Username(u) => KeyValue::Username(u),
            SavedKey::Tuple(parts) => KeyValue::Tuple(parts.into_iter().map(Into::into).collect()),
        }
    }
}

// By hand: strings are mostly the same shared (interned) string, compared by address first.
impl PartialEq for KeyValue {
    fn eq(&self, o: &Self) -> bool {
        match (self, o) {
            (KeyValue::Ip(a), KeyValue::Ip(b)) => a == b,
            (KeyValue::Str(a), KeyValue::Str(b))
            | (KeyValue::Username(a), KeyValue::Username(b)) => Arc::ptr_eq(a, b) || a == b,
            (KeyValue::Token(a), KeyValue::Token(b)) => a == b,
            (KeyValue::Tuple(a), KeyValue::Tuple(b)) => Arc::ptr_eq(a, b) || a[..] == b[..],
            _ => false,
        }
    }
}

// By hand, so a [`Lookup`] can hash the same way without building the tuple.
impl std::hash::Hash for KeyValue {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        match self {
            KeyValue::Ip(ip) => hash_ip(ip, h),
            KeyValue::Str(s) => hash_str(1, s, h),
            KeyValue::Token(t) => hash_token(t, h),
            KeyValue::Username(u) => hash_str(3, u, h),
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

/// Detection counters (also saved in shard checkpoints: a change of fields changes the
/// checkpoint format).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
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
    /// TLS fingerprints: learned as an app's (all apps), events carrying one, handshakes
    /// noted and transactions that took a handshake's fingerprint through the edge.
    pub tls_fingerprints_learned: u64,
    pub tls_fingerprinted_events: u64,
    pub tls_hellos_noted: u64,
    pub tls_joined: u64,
    /// Fingerprints learned per app (attestation family).
    pub tls_learned_by_app: BTreeMap<String, u64>,
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
        self.tls_fingerprints_learned += o.tls_fingerprints_learned;
        self.tls_fingerprinted_events += o.tls_fingerprinted_events;
        self.tls_hellos_noted += o.tls_hellos_noted;
        self.tls_joined += o.tls_joined;
        for (k, v) in &o.tls_learned_by_app {
            *self.tls_learned_by_app.entry(k.clone()).or_default() += v;
        }
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
    /// Detect shards (`[runtime] detect_shards`): threads the per-rule key state is spread
    /// over by key. The alerts do not depend on it.
    pub shards: usize,
    /// TLS fingerprints (`[tls]`): learning the app's, joining handshakes.
    pub tls: fingerprint::TlsConfig,
    /// Packet time an event may trail the workers' watermark and still reach detection in
    /// order (`[runtime] ordering_lateness_ms`). A worker's watermark is its last timeout
    /// sweep, so connections it closes by timeout are never behind it; what this allows
    /// for is capture timestamps that step back (a multi-queue NIC, a mirror that
    /// reorders). Events wait about this plus a sweep interval (`close_linger_secs`) before
    /// the rules see them; one later than that is handled out of order and counted
    /// (`late_events`).
    pub ordering_lateness: Duration,
}

/// [`DetectConfig::ordering_lateness`] by default. It was 3 s while the watermark was the
/// workers' clock (allowing for deadlines up to a heartbeat behind it): three seconds of
/// events held 14 MB on the realistic capture, cold in cache by the time detection read
/// them, and delayed every live alert by as much.
pub const DEFAULT_ORDERING_LATENESS: Duration = Duration::from_millis(500);

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
            shards: 1,
            tls: fingerprint::TlsConfig::default(),
            ordering_lateness: DEFAULT_ORDERING_LATENESS,
        }
    }
}

/// Runs a rule set over events.
pub struct Engine {
    cfg: DetectConfig,
    registry: Registry,
    owners: objects::Owners,
    shared: shared::SharedAddresses,
    /// TLS fingerprints learned per app and device, and handshakes waiting to be joined.
    prints: fingerprint::Fingerprints,
    public_fields: publicity::PublicFields,
    routes: Vec<crate::rules::PinnedRoute>,
    inventory: inventory::Inventory,
    /// Endpoint and route strings shared across events.
    names: intern::Interner,
    /// Principals (`user:…`, `device:…`, `ip:…`) shared across their requests, and the
    /// buffer one is spelled in: an actor's requests cost a lookup, not an allocation.
    principals: intern::Interner,
    /// Shared `field_set` keys (an endpoint exposes the same few sets).
    field_sets: intern::Interner,
    /// Where the keys made for each event (its principal, its field set) are written
    /// before they are interned.
    scratch: String,
    /// Classes that are exposure wherever they appear (`deny_classes`).
    deny: Vec<exposure::Class>,
    /// The rules (their matchers run here), how their keys spread over shards, and the
    /// gate each event passes before its matcher runs.
    rules: Vec<(Arc<Rule>, shard::Spread, Gate)>,
    /// What the front counts (events, matches, ownership, shared addresses); shards count
    /// alerts and keys.
    stats: DetectStats,
    next_sweep: Timestamp,
    now: Timestamp,
    /// Stream position of the last message to the shards.
    seq: u64,
    shards: Box<dyn ShardHost>,
    /// Alerts from the shards, released in merge order once every shard is past them.
    merge: std::collections::BinaryHeap<std::cmp::Reverse<Tagged>>,
    done: Vec<u64>,
    tagged: Vec<Tagged>,
    /// Per shard: the matched rules it owns the key of, for the event at hand.
    routed: Vec<shard::RuleList>,
}

impl Engine {
    /// An engine whose rules run in this thread, on one shard.
    pub fn new(cfg: DetectConfig, set: &RuleSet) -> Engine {
        Engine::with_local_shards(cfg, set, 1)
    }

    /// An engine whose rules run in this thread over `n` shards (as the threaded runtime
    /// spreads them; the alerts are the same for any `n`).
    pub fn with_local_shards(cfg: DetectConfig, set: &RuleSet, n: usize) -> Engine {
        let shards = shard::configs(&cfg, n)
            .into_iter()
            .map(|c| shard::Shard::new(c, set))
            .collect();
        Engine::with_shards(cfg, set, Box::new(shard::LocalShards::new(shards)))
    }

    /// An engine whose rules run on the given shards (built from [`shard::configs`] and
    /// the same rule set).
    pub fn with_shards(cfg: DetectConfig, set: &RuleSet, shards: Box<dyn ShardHost>) -> Engine {
        let b = cfg.budget;
        let n = shards.count().max(1);
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
            prints: fingerprint::Fingerprints::new(cfg.tls.clone()),
            seq: 0,
            shards,
            merge: std::collections::BinaryHeap::new(),
            done: vec![0; n],
            tagged: Vec::new(),
            routed: vec![smallvec::SmallVec::new(); n],
            // The inventory's share: half the route inventory, half public-field learning.
            public_fields: publicity::PublicFields::with_limit(
                b.share(Table::Inventory) / 2 / publicity::FIELD_BYTES,
            ),
            routes: Vec::new(),
            inventory: inventory::Inventory::with_limit(
                b.share(Table::Inventory) / 2 / inventory::FIELD_BYTES,
            ),
            names: intern::Interner::default(),
            principals: intern::Interner::default(),
            field_sets: intern::Interner::default(),
            scratch: String::new(),
            deny: Vec::new(),
            cfg,
            rules: Vec::new(),
            stats: DetectStats::default(),
            next_sweep: Timestamp::ZERO,
            now: Timestamp::ZERO,
        };
        // The shards were built with the same set.
        e.set_rules(set);
        e
    }

    fn set_rules(&mut self, set: &RuleSet) {
        self.routes = set.routes.clone();
        self.deny = set.denied();
        self.rules = set
            .rules
            .iter()
            .map(|r| (r.clone(), shard::Spread::of(r), Gate::of(&r.matcher)))
            .collect();
    }

    /// Swaps in a new rule set. Rules whose definition is unchanged keep their windows and
    /// open aggregates; new or changed rules start empty; removed or changed rules first
    /// emit their open aggregates (follow-ups), so no folded request goes unreported.
    pub fn replace_rules(&mut self, set: &RuleSet, out: &mut Vec<Alert>) {
        self.set_rules(set);
        let set = Arc::new(set.clone());
        self.seq += 1;
        for i in 0..self.shards.count() {
            self.shards.send(
                i,
                ShardMsg::Rules {
                    seq: self.seq,
                    set: set.clone(),
                },
            );
        }
        self.settle(out);
    }

    pub fn stats(&self) -> DetectStats {
        let mut s = self.stats.clone();
        s.merge(&self.shards.stats());
        let sh = self.shared.stats(self.now);
        s.shared_addresses_tracked = sh.addresses as u64;
        s.shared_addresses = sh.shared as u64;
        s.shared_addresses_learned = sh.learned;
        s.shared_addresses_evicted = sh.evicted;
        s.public_fields = self.public_fields.public_count() as u64;
        let p = self.prints.stats;
        s.tls_fingerprints_learned = p.learned;
        s.tls_fingerprinted_events = p.events;
        s.tls_hellos_noted = p.hellos;
        s.tls_joined = p.joined;
        s.tls_learned_by_app = self
            .prints
            .learned()
            .into_iter()
            .map(|(f, n)| (f, n as u64))
            .collect();
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
    pub fn observe_owned(&mut self, ev: Event, out: &mut Vec<Alert>) {
        self.observe_shared(Arc::new(ev), out);
    }

    /// [`Engine::observe_owned`] for an event already in the `Arc` the shards are sent:
    /// the engine enriches it in place (it is not shared yet, so nothing is copied).
    pub fn observe_shared(&mut self, shared: Arc<Event>, out: &mut Vec<Alert>) {
        drop(self.observe_returning(shared, out));
    }

    /// [`Engine::observe_shared`] that gives the event back once the engine and its shards
    /// are done with it (`None` while a shard in another thread still holds it), without
    /// what the engine set on it ([`Event::shed_enrichment`]: those were dropped here). The
    /// pipeline hands it back to the worker that made it, so that the worker, not this
    /// thread, drops the rest: the reference counts of the strings, scans and objects it
    /// shares across its events, and the event's own memory, stay in its core's cache.
    /// Dropped here, every count went back and forth between the two cores on each event
    /// (the worker's next copy of the same scan or route waited for the line).
    pub fn observe_returning(
        &mut self,
        mut shared: Arc<Event>,
        out: &mut Vec<Alert>,
    ) -> Option<Arc<Event>> {
        let ev = Arc::make_mut(&mut shared);
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
        if ev.ja4.is_none()
            && let Some(v) = ev.viewer.as_deref().copied()
        {
            ev.ja4 = self.prints.joined(v, ev.ts);
        }
        if let Some(j) = &ev.ja4 {
            ev.fingerprint = self.prints.observe(
                ev.family.as_ref(),
                j,
                ev.verdict,
                ev.actor.device.as_ref(),
                ev.actor.ip,
                ev.ts,
            );
        }
        self.registry.observe(
            ev.ts,
            ev.actor.ip,
            ev.actor.device.as_ref(),
            ev.actor.user.as_ref(),
            ev.verdict == Verdict::Valid,
        );
        self.judge_objects(ev);
        self.route(&shared);
        if self.shards.inline() {
            self.settle(out);
        }
        Arc::get_mut(&mut shared)?.shed_enrichment();
        Some(shared)
    }

    /// The place of the next event in the packet-time order (shard hosts that carry events
    /// elsewhere keep it with them).
    pub fn note_order(&mut self, o: &StreamOrder) {
        self.shards.note_order(o);
    }

    /// A TLS handshake seen on the mirror: `client` sent fingerprint `ja4` at `ts`.
    /// Transactions behind an edge naming that viewer take it.
    pub fn hello(&mut self, client: std::net::SocketAddr, ja4: Arc<str>, ts: Timestamp) {
        self.prints.hello(client, ja4, ts);
    }

    /// The TLS fingerprints learned, to keep across restarts (`[tls] state_file`).
    pub fn save_fingerprints(&self) -> serde_json::Value {
        self.prints.save()
    }

    /// Restores fingerprints learned before a restart.
    pub fn restore_fingerprints(&mut self, saved: &serde_json::Value) -> Result<usize, String> {
        self.prints.restore(saved)
    }

    /// TLS fingerprint learning's counters and the fingerprints learned per app.
    pub fn fingerprints(&self) -> (fingerprint::FingerprintStats, Vec<(String, usize)>) {
        (self.prints.stats, self.prints.learned())
    }

    /// Sends the event to the shards owning the keys of the rules it matched (after a
    /// sweep, when one is due).
    fn route(&mut self, ev: &Arc<Event>) {
        if ev.ts > self.now {
            self.now = ev.ts;
        }
        if self.now >= self.next_sweep {
            self.sweep_all(self.now);
        }
        self.stats.events += 1;
        self.seq += 1;
        let n = self.shards.count();
        let mut matched = false;
        let facts = Facts::of(ev);
        for (i, (rule, spread, gate)) in self.rules.iter().enumerate() {
            if !gate.matches(facts, &rule.matcher, ev) {
                continue;
            }
            matched = true;
            if let Some(s) = shard::shard_of(*spread, rule, ev, n)
                && let Some(list) = self.routed.get_mut(s)
            {
                list.push(i as u16);
            }
        }
        if matched {
            self.stats.matched += 1;
        }
        for (s, list) in self.routed.iter_mut().enumerate() {
            if !list.is_empty() {
                self.shards.send(
                    s,
                    ShardMsg::Event {
                        seq: self.seq,
                        event: ev.clone(),
                        rules: std::mem::take(list),
                    },
                );
            }
        }
    }

    /// Hands what is queued to the shards and releases the alerts every shard is past (in
    /// merge order). Called after each batch of events; shards running in this thread
    /// settle after every event.
    pub fn settle(&mut self, out: &mut Vec<Alert>) {
        self.shards.flush(self.seq);
        self.collect(None, out);
    }

    /// Moves the shards' alerts into the merge, then releases those every shard is past
    /// (waiting, with `until`, for every shard to get there).
    fn collect(&mut self, until: Option<u64>, out: &mut Vec<Alert>) {
        let start = out.len();
        self.shards.poll(until, &mut self.tagged, &mut self.done);
        self.merge
            .extend(self.tagged.drain(..).map(std::cmp::Reverse));
        let low = self.done.iter().copied().min().unwrap_or(u64::MAX);
        while let Some(std::cmp::Reverse(top)) = self.merge.peek() {
            if top.key.seq > low {
                break;
            }
            if let Some(std::cmp::Reverse(t)) = self.merge.pop() {
                out.push(t.alert);
            }
        }
        self.note_risk(&out[start..]);
    }

    /// Applies pinned route templates and ownership to the event.
    fn judge_objects(&mut self, e: &mut Event) {
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
        self.scratch.clear();
        e.write_principal(&mut self.scratch);
        let principal = self.principals.name(&self.scratch);
        e.principal_key = Some(principal.clone());
        if !(e.objects.is_empty() && e.returned.is_empty()) {
            self.judge_ownership(e, &principal, public, &declared_users);
        }
        // Taken out and put back rather than cloned: the scan may be shared with a
        // workers' memo, and a count change on its `Arc` would bounce between cores.
        if let Some(scan) = e.exposure.take() {
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
            write_field_set(&e.exposed, &mut self.scratch);
            e.field_set = (!self.scratch.is_empty()).then(|| self.field_sets.name(&self.scratch));
            if let Some(endpoint) = &e.endpoint {
                self.inventory.add(endpoint, &scan);
            }
            e.exposure = Some(scan);
        }
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
            e.exposure.as_ref().and_then(|s| s.owner.as_deref()),
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

    /// The actor registry's counters, without its memory estimate (published several
    /// times a second; the summary's [`Engine::actors`] has the estimate).
    pub fn actor_stats(&self) -> crate::actor::registry::RegistryStats {
        self.registry.counts()
    }

    /// Keys held across rules, and the most any one rule holds (over all shards).
    pub fn tracked_keys(&self) -> (usize, usize) {
        self.shards.tracked_keys()
    }

    /// What each table of the detect stage holds, for the memory budget's report.
    pub fn memory(&self) -> Vec<(Table, Usage)> {
        let b = self.cfg.budget;
        let a = self.registry.counts();
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
        let sh = self.shared.counts();
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
        let mut v = self.shards.memory();
        v.extend([
            (Table::Actors, actors),
            (Table::Objects, objects),
            (Table::Shared, shared),
            (Table::Inventory, inventory),
        ]);
        v
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

    /// Emits follow-ups that are due and evicts idle keys, at packet time `now` (live:
    /// the clock moves on when actors fall silent), once `now` reaches the next sweep
    /// boundary.
    pub fn sweep(&mut self, now: Timestamp, out: &mut Vec<Alert>) {
        if now >= self.next_sweep {
            self.sweep_all(now);
        }
        if self.shards.inline() {
            self.settle(out);
        }
    }

    fn sweep_all(&mut self, now: Timestamp) {
        if now > self.now {
            self.now = now;
        }
        self.next_sweep = next_sweep_after(self.now);
        self.seq += 1;
        for i in 0..self.shards.count() {
            self.shards.send(
                i,
                ShardMsg::Sweep {
                    seq: self.seq,
                    now: self.now,
                },
            );
        }
        self.shared.sweep(self.now);
    }

    /// End of input: every open aggregate is emitted, and every alert released.
    pub fn finish(&mut self, out: &mut Vec<Alert>) {
        for i in 0..self.shards.count() {
            self.shards.send(i, ShardMsg::Finish);
        }
        self.shards.flush(u64::MAX);
        self.collect(Some(u64::MAX), out);
    }
}

/// What an event is, as bits a [`Gate`] tests (see [`Facts::of`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Facts {
    /// `fact::*` bits.
    bits: u32,
    /// The verdict's bit ([`crate::rules::verdict_bit`]).
    verdict: u32,
    /// The fingerprint's marks.
    fingerprint: u8,
}

/// Bits of [`Facts::bits`].
mod fact {
    pub const ATTESTED: u32 = 1;
    pub const SHARED_ADDRESS: u32 = 1 << 1;
    pub const DENIED: u32 = 1 << 2;
    pub const CROSS_USER: u32 = 1 << 3;
    pub const LOGIN: u32 = 1 << 4;
    pub const EXPOSED: u32 = 1 << 5;
    pub const EXPOSURE: u32 = 1 << 6;
    pub const OWNERSHIP: u32 = 1 << 7;
    pub const METHOD: u32 = 1 << 8;
    pub const STATUS: u32 = 1 << 9;
    pub const FAMILY: u32 = 1 << 10;
    pub const EXPIRED_FOR: u32 = 1 << 11;
    pub const ROUTE: u32 = 1 << 12;
    pub const HOST: u32 = 1 << 13;
}

impl Facts {
    pub(crate) fn of(ev: &Event) -> Facts {
        let flags = [
            (ev.attested, fact::ATTESTED),
            (ev.shared_devices > 0, fact::SHARED_ADDRESS),
            (ev.denied, fact::DENIED),
            (ev.cross_user, fact::CROSS_USER),
            (ev.login, fact::LOGIN),
            (!ev.exposed.is_empty(), fact::EXPOSED),
            (ev.exposure.is_some(), fact::EXPOSURE),
            (ev.ownership.is_some(), fact::OWNERSHIP),
            (ev.method.is_some(), fact::METHOD),
            (ev.status.is_some(), fact::STATUS),
            (ev.family.is_some(), fact::FAMILY),
            (ev.expired_for.is_some(), fact::EXPIRED_FOR),
            (ev.route.is_some(), fact::ROUTE),
            (ev.host.is_some(), fact::HOST),
        ];
        Facts {
            bits: flags
                .iter()
                .filter(|(on, _)| *on)
                .fold(0, |b, (_, f)| b | f),
            verdict: crate::rules::verdict_bit(ev.verdict),
            fingerprint: ev.fingerprint,
        }
    }
}

/// What a matcher asks of an event's [`Facts`]: its flags as they must be, the fields it
/// needs present, its verdicts and fingerprint marks. Passing the gate is necessary for
/// [`matcher_matches`], and sufficient for a matcher that asks nothing else (see
/// `complete`): the engine tests the gate first, in a few instructions, and runs the
/// matcher only for events it admits (most rules ask for a verdict, a login route or an
/// exposure most events are not) and only when the gate cannot decide alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Gate {
    mask: u32,
    want: u32,
    verdicts: u32,
    fingerprint: u8,
    /// The matcher asks nothing the gate does not test exactly (flags, verdicts,
    /// fingerprint marks): the gate's answer is the matcher's, which is not run. Most of
    /// the built-in rules' matchers are of this kind, and running them read a few cache
    /// lines of each rule for each request.
    complete: bool,
}

impl Gate {
    pub(crate) fn of(m: &Matcher) -> Gate {
        // Every condition named, so that one added to `Matcher` is weighed here.
        let Matcher {
            methods,
            routes,
            hosts,
            status,
            verdicts,
            families,
            expired_beyond_secs,
            login,
            ownership,
            cross_user,
            exposed_classes,
            min_records,
            denied,
            attested,
            shared_address,
            fingerprint,
        } = m;
        let mut g = Gate {
            mask: 0,
            want: 0,
            verdicts: verdicts.unwrap_or(u32::MAX),
            fingerprint: fingerprint.unwrap_or(0),
            complete: false,
        };
        let flags = [
            (*attested, fact::ATTESTED),
            (*shared_address, fact::SHARED_ADDRESS),
            (*denied, fact::DENIED),
            (*cross_user, fact::CROSS_USER),
            (*login, fact::LOGIN),
        ];
        for (want, bit) in flags {
            if let Some(on) = want {
                g.mask |= bit;
                g.want |= if on { bit } else { 0 };
            }
        }
        // Conditions the gate tests only for presence: the matcher reads their values.
        let present = [
            (exposed_classes.is_some(), fact::EXPOSED),
            (min_records.is_some(), fact::EXPOSURE),
            (ownership.is_some(), fact::OWNERSHIP),
            (methods.is_some(), fact::METHOD),
            (status.is_some(), fact::STATUS),
            (families.is_some(), fact::FAMILY),
            (expired_beyond_secs.is_some(), fact::EXPIRED_FOR),
            (routes.is_some(), fact::ROUTE),
            (hosts.is_some(), fact::HOST),
        ];
        for (needed, bit) in present {
            if needed {
                g.mask |= bit;
                g.want |= bit;
            }
        }
        // None of those, and marks (if any) that are some: the gate reads no marks as
        // "any", where the matcher would refuse every event.
        g.complete = present.iter().all(|(needed, _)| !needed) && *fingerprint != Some(0);
        g
    }

    /// Whether `ev` (whose facts are `f`) meets matcher `m` (this gate's): the gate, then
    /// the matcher unless the gate decides alone.
    pub(crate) fn matches(&self, f: Facts, m: &Matcher, ev: &Event) -> bool {
        self.admits(f) && (self.complete || matcher_matches(m, ev))
    }

    /// Whether an event with these facts may match (false: it cannot).
    pub(crate) fn admits(&self, f: Facts) -> bool {
        f.bits & self.mask == self.want
            && f.verdict & self.verdicts != 0
            && (self.fingerprint == 0 || f.fingerprint & self.fingerprint != 0)
    }
}

pub(crate) fn matcher_matches(m: &Matcher, ev: &Event) -> bool {
    if m.attested.is_some_and(|a| a != ev.attested) {
        return false;
    }
    if m.fingerprint.is_some_and(|bits| bits & ev.fingerprint == 0) {
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
pub(crate) mod tests;
