//! Per-key detector state: a bucketed sliding window (or a distinct-value set), the episode
//! being accumulated towards an alert, and the suppression that aggregates what follows.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

use thin_vec::ThinVec;

use super::{DetectStats, Event, KeyValue, ObjectRef};
use crate::capture::Timestamp;
use crate::exposure_class::Class;
use crate::rules::{Detector, DetectorKind, EvidenceField, Measure, Rule};
use crate::token::{TokenHash, Verdict};

/// Buckets per window: counts are exact to 1/128 of the window.
const BUCKETS: u64 = 128;
/// Distinct values listed in evidence.
const MAX_LISTED: usize = 16;
/// Slots of an evidence list a restarted episode keeps (most keys list one or two values).
const KEPT_SLOTS: usize = 4;
/// Endpoints listed in evidence (the rest are counted as `other`).
const MAX_ENDPOINTS: usize = 8;

/// A value that is either unset, the same for every event so far, or mixed.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
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

    /// [`Same::add`] that clones only the first value (shared strings are counted
    /// references another thread also touches: no needless increments).
    fn add_ref<Q>(&mut self, v: &Q)
    where
        T: std::borrow::Borrow<Q>,
        Q: PartialEq + ToOwned<Owned = T> + ?Sized,
    {
        match self {
            Same::Unset => *self = Same::One(v.to_owned()),
            Same::One(x) if x.borrow() == v => {}
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

/// The requests an alert stands for, summarised with bounded memory. Every key of every
/// rule holds one while its window is open, and a rule lists only a few kinds of
/// evidence: the lists are thin (one pointer each while empty, where a `Vec` is three
/// words), which is a quarter of a typical key's bytes. The five kinds most rules show
/// (endpoints, addresses, devices, users, statuses) keep their first value inline
/// ([`Listing`]).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct Episode {
    pub count: u64,
    pub first: Timestamp,
    pub last: Timestamp,
    pub verdicts: [u32; Verdict::ALL.len()],
    /// Requests by `METHOD /route` (the engine's shared text).
    pub endpoints: Listing<(Arc<str>, u32)>,
    pub endpoints_other: u32,
    pub addresses: Listing<IpAddr>,
    pub devices: Listing<Arc<str>>,
    pub users: Listing<Arc<str>>,
    pub tokens: ThinVec<TokenHash>,
    pub families: ThinVec<(Arc<str>, u32)>,
    pub statuses: Listing<(u16, u32)>,
    /// More distinct values were seen than listed, per list.
    pub truncated: bool,
    pub ip: Same<IpAddr>,
    pub device: Same<Option<Arc<str>>>,
    pub user: Same<Option<Arc<str>>>,
    /// `METHOD /route` (the engine's shared text): one reference where a pair of them
    /// made the episode a size class larger.
    pub endpoint: Same<Option<Arc<str>>>,
    pub objects: ThinVec<Arc<str>>,
    pub usernames: ThinVec<Arc<str>>,
    /// Requests by ownership of their objects, and the other principals' objects touched.
    pub ownership: [u32; 6],
    pub foreign_ids: ThinVec<ObjectRef>,
    /// Distinct TLS fingerprints (JA4).
    pub ja4s: ThinVec<Arc<str>>,
    pub succeeded: u32,
    /// Sensitive fields exposed: (path, class, a masked sample).
    pub exposed: ThinVec<(Arc<str>, Class, Arc<str>)>,
    pub records_max: u32,
    /// What the detector measured, and expiry: most episodes (threshold and baseline
    /// detectors of tokens that are valid) never set any of it.
    pub measured: Option<Box<Measured>>,
    /// Requests that carried the genuine app's attestation.
    pub attested: u32,
    /// The most attested devices seen behind the client address (shared addresses).
    pub shared_devices: u32,
    /// Bytes of the lists' heap buffers, kept as they change (not saved).
    #[serde(skip)]
    lists: ListBytes,
}

/// An episode's lists' heap bytes, kept as the lists change so that weighing a key (after
/// each request it observes and each sweep that walks it) reads none of its lists: a thin
/// list's capacity is in its heap buffer, a cache line to miss per list of each key
/// (about 3 of the 58 last-level misses per transaction went to it on the realistic
/// capture). Unknown, and counted from the lists, for an episode restored from a
/// checkpoint or cloned (a clone's buffers need not have the same capacity) until its next
/// restart. Two bytes, which the episode's layout had spare (lists past 64 KiB, far beyond
/// their caps, would count as unknown).
#[derive(Debug)]
struct ListBytes(u16);

impl ListBytes {
    const UNKNOWN: u16 = u16::MAX;

    fn known(bytes: usize) -> ListBytes {
        ListBytes(u16::try_from(bytes).unwrap_or(Self::UNKNOWN))
    }

    fn get(&self) -> Option<usize> {
        (self.0 != Self::UNKNOWN).then_some(self.0 as usize)
    }

    fn grow(&mut self, by: isize) {
        if let Some(n) = self.get() {
            *self = ListBytes::known(n.saturating_add_signed(by));
        }
    }
}

impl Default for ListBytes {
    fn default() -> ListBytes {
        ListBytes(Self::UNKNOWN)
    }
}

impl Clone for ListBytes {
    fn clone(&self) -> ListBytes {
        ListBytes::default()
    }
}

/// The heap buffer of an evidence list: its header (length and capacity) and its slots;
/// nothing while empty (an empty list is one pointer to a shared header).
fn listed<T>(v: &ThinVec<T>) -> usize {
    match v.capacity() {
        0 => 0,
        n => 2 * std::mem::size_of::<usize>() + n * std::mem::size_of::<T>(),
    }
}

/// The part of an [`Episode`] only some detectors or requests set.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct Measured {
    /// Distinct values counted when a distinct detector fired.
    pub distinct: Option<usize>,
    /// Ratio and mixed detectors: requests meeting `when`, and all requests, in the window.
    pub share: Option<(u64, u64)>,
    /// Cadence detectors: mean gap (seconds) and coefficient of variation over `n` gaps.
    pub cadence: Option<(f64, f64, usize)>,
    /// Sequence detectors: the first and last object numbers of the walk.
    pub run: Option<(u64, u64)>,
    /// Baseline detectors: the learned level and the key's count in its window.
    pub baseline: Option<(f64, u32)>,
    /// Concurrent detectors: returns (interleavings) counted in the window.
    pub returns: Option<usize>,
    /// Concurrent detectors over addresses: where the key was first seen (the genuine
    /// holder, whose token it is), and the one other address all its other requests came
    /// from (the copy), if just one.
    pub origin: Option<IpAddr>,
    pub copy: Same<IpAddr>,
    /// Longest time past `exp` of the expired tokens among the requests.
    pub expired_for_max: Option<f64>,
}

/// What an episode that measured nothing reads.
static NOTHING_MEASURED: Measured = Measured {
    distinct: None,
    share: None,
    cadence: None,
    run: None,
    baseline: None,
    returns: None,
    origin: None,
    copy: Same::Unset,
    expired_for_max: None,
};

/// Appends to an evidence list that starts at one slot and doubles: most keys list one
/// address, one device, one user (a `Vec` or `ThinVec` would start at four).
fn grow_push<T>(v: &mut ThinVec<T>, x: T) {
    if v.len() == v.capacity() {
        v.reserve_exact(v.len().max(1));
    }
    v.push(x);
}

/// A value an evidence list holds: compared as `==` does, with a cheaper first test
/// where one tells most different values apart.
trait Listed: Clone {
    fn same(&self, other: &Self) -> bool;
}

/// Shared strings (devices, users, objects, endpoints): the same text is nearly always
/// the same allocation, and different ids of one length nearly always differ in their
/// last byte, so a list is scanned without a `memcmp` call per entry (3% of the detect
/// thread's instructions when each compare called it).
impl Listed for Arc<str> {
    fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(self, other)
            || (self.len() == other.len()
                && self.as_bytes().last() == other.as_bytes().last()
                && **self == **other)
    }
}

macro_rules! listed_by_eq {
    ($($t:ty),*) => {
        $(impl Listed for $t {
            fn same(&self, other: &Self) -> bool {
                self == other
            }
        })*
    };
}
listed_by_eq!(IpAddr, TokenHash, ObjectRef, u16);

/// What [`push_distinct`] and [`bump`] list into: a thin list, or a [`Listing`] that holds
/// its first value inline.
trait List<T> {
    fn len(&self) -> usize;
    fn iter(&self) -> std::slice::Iter<'_, T>;
    fn iter_mut(&mut self) -> std::slice::IterMut<'_, T>;
    fn push(&mut self, x: T);
    /// Bytes of its heap buffer (read from the buffer's header for a thin list).
    fn heap_bytes(&self) -> usize;
}

impl<T> List<T> for ThinVec<T> {
    fn len(&self) -> usize {
        self.as_slice().len()
    }
    fn iter(&self) -> std::slice::Iter<'_, T> {
        self.as_slice().iter()
    }
    fn iter_mut(&mut self) -> std::slice::IterMut<'_, T> {
        self.as_mut_slice().iter_mut()
    }
    fn push(&mut self, x: T) {
        grow_push(self, x);
    }
    fn heap_bytes(&self) -> usize {
        listed(self)
    }
}

/// An evidence list of the kinds nearly every episode fills (its client addresses,
/// devices, users, endpoints and statuses), which for most keys hold one value: that value
/// inline in the episode, the list on the heap from the second. A request adds to the
/// lists its rule shows, and each list on the heap was a cache line of its own to miss
/// (every list left out, the realistic capture used 4 to 7% less CPU). Saved as the list
/// of its values, as a thin list is.
#[derive(Clone, Debug, Default)]
pub(super) enum Listing<T> {
    #[default]
    Empty,
    One(T),
    Many(ThinVec<T>),
}

impl<T> Listing<T> {
    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        match self {
            Listing::Empty => [].iter(),
            Listing::One(x) => std::slice::from_ref(x).iter(),
            Listing::Many(v) => v.iter(),
        }
    }

    /// Bytes on the heap (none while it holds one value or none).
    fn heap_bytes(&self) -> usize {
        match self {
            Listing::Many(v) => listed(v),
            _ => 0,
        }
    }

    /// Empties it for a restarted episode: a heap buffer of up to [`KEPT_SLOTS`] is kept.
    /// Returns the bytes it still holds.
    fn emptied(&mut self) -> usize {
        match self {
            Listing::Many(v) if v.capacity() <= KEPT_SLOTS => {
                v.clear();
                listed(v)
            }
            _ => {
                *self = Listing::Empty;
                0
            }
        }
    }
}

impl<T> List<T> for Listing<T> {
    fn len(&self) -> usize {
        match self {
            Listing::Empty => 0,
            Listing::One(_) => 1,
            Listing::Many(v) => v.len(),
        }
    }
    fn iter(&self) -> std::slice::Iter<'_, T> {
        Listing::iter(self)
    }
    fn iter_mut(&mut self) -> std::slice::IterMut<'_, T> {
        match self {
            Listing::Empty => [].iter_mut(),
            Listing::One(x) => std::slice::from_mut(x).iter_mut(),
            Listing::Many(v) => v.iter_mut(),
        }
    }
    fn push(&mut self, x: T) {
        match std::mem::take(self) {
            Listing::Empty => *self = Listing::One(x),
            Listing::One(first) => {
                let mut v = ThinVec::with_capacity(2);
                v.push(first);
                v.push(x);
                *self = Listing::Many(v);
            }
            Listing::Many(mut v) => {
                grow_push(&mut v, x);
                *self = Listing::Many(v);
            }
        }
    }
    fn heap_bytes(&self) -> usize {
        Listing::heap_bytes(self)
    }
}

impl<T: serde::Serialize> serde::Serialize for Listing<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Listing<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut v: ThinVec<T> = serde::Deserialize::deserialize(d)?;
        Ok(match v.len() {
            0 => Listing::Empty,
            1 => v.pop().map_or(Listing::Empty, Listing::One),
            _ => Listing::Many(v),
        })
    }
}

/// Lists `x` (cloned only when new) unless listed; past the cap, notes truncation.
/// Returns how many bytes the list's heap buffer grew by.
fn push_distinct<T: Listed>(v: &mut impl List<T>, x: &T, truncated: &mut bool) -> isize {
    // A full list of an episode already marked truncated has nothing left to learn: a busy
    // key skips the scan.
    if *truncated && v.len() >= MAX_LISTED {
        return 0;
    }
    if !v.iter().any(|y| y.same(x)) {
        if v.len() < MAX_LISTED {
            return pushed(v, x.clone());
        }
        *truncated = true;
    }
    0
}

/// Pushes `x`; returns how many bytes the list's heap buffer grew by (its header is in
/// cache here, where a weighing of the key would miss on it).
fn pushed<T>(v: &mut impl List<T>, x: T) -> isize {
    let before = v.heap_bytes();
    v.push(x);
    v.heap_bytes() as isize - before as isize
}

/// Counts `k` (cloned only when new); `false` when it is new and the list is full. The
/// bytes the list's heap buffer grew by are added to `grew`.
fn bump<K: Listed>(v: &mut impl List<(K, u32)>, k: &K, cap: usize, grew: &mut isize) -> bool {
    if let Some(e) = v.iter_mut().find(|(x, _)| x.same(k)) {
        e.1 += 1;
        true
    } else if v.len() < cap {
        *grew += pushed(v, (k.clone(), 1));
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
            verdicts: [0; Verdict::ALL.len()],
            endpoints: Listing::Empty,
            endpoints_other: 0,
            addresses: Listing::Empty,
            devices: Listing::Empty,
            users: Listing::Empty,
            tokens: ThinVec::new(),
            families: ThinVec::new(),
            statuses: Listing::Empty,
            truncated: false,
            ip: Same::Unset,
            device: Same::Unset,
            user: Same::Unset,
            endpoint: Same::Unset,
            objects: ThinVec::new(),
            usernames: ThinVec::new(),
            ownership: [0; 6],
            foreign_ids: ThinVec::new(),
            ja4s: ThinVec::new(),
            succeeded: 0,
            exposed: ThinVec::new(),
            records_max: 0,
            measured: None,
            attested: 0,
            shared_devices: 0,
            lists: ListBytes(0),
        }
    }

    /// Empties the episode in place, as [`Episode::new`] would make it (its first request
    /// sets its times): a key whose window emptied keeps what it measured (reset, in its
    /// box) and its lists' buffers of up to [`KEPT_SLOTS`] slots, instead of freeing them to
    /// allocate them again on its next request (over a million times on the realistic
    /// capture).
    fn restart(&mut self) {
        /// Returns the bytes the list still holds.
        fn emptied<T>(v: &mut ThinVec<T>) -> usize {
            if v.capacity() <= KEPT_SLOTS {
                v.clear();
            } else {
                *v = ThinVec::new();
            }
            listed(v)
        }
        // Every field named: a new one must say how it restarts.
        let Episode {
            count,
            first: _,
            last: _,
            verdicts,
            endpoints,
            endpoints_other,
            addresses,
            devices,
            users,
            tokens,
            families,
            statuses,
            truncated,
            ip,
            device,
            user,
            endpoint,
            objects,
            usernames,
            ownership,
            foreign_ids,
            ja4s,
            succeeded,
            exposed,
            records_max,
            measured,
            attested,
            shared_devices,
            lists,
        } = self;
        *count = 0;
        *verdicts = [0; Verdict::ALL.len()];
        let mut kept = endpoints.emptied();
        *endpoints_other = 0;
        kept += addresses.emptied();
        kept += devices.emptied();
        kept += users.emptied();
        kept += emptied(tokens);
        kept += emptied(families);
        kept += statuses.emptied();
        *truncated = false;
        *ip = Same::Unset;
        *device = Same::Unset;
        *user = Same::Unset;
        *endpoint = Same::Unset;
        kept += emptied(objects);
        kept += emptied(usernames);
        *ownership = [0; 6];
        kept += emptied(foreign_ids);
        kept += emptied(ja4s);
        *succeeded = 0;
        kept += emptied(exposed);
        *records_max = 0;
        if let Some(m) = measured {
            **m = Measured::default();
        }
        *attested = 0;
        *shared_devices = 0;
        // Counted afresh (known from here on, for a restored episode too).
        *lists = ListBytes::known(kept);
    }

    /// Bytes held (inline and the lists' buffers; shared strings are not counted).
    fn bytes(&self) -> usize {
        std::mem::size_of::<Episode>()
            + self
                .measured
                .as_ref()
                .map_or(0, |_| std::mem::size_of::<Measured>())
            + self.lists.get().unwrap_or_else(|| self.count_lists())
    }

    /// Bytes of the lists' heap buffers, counted from the lists.
    fn count_lists(&self) -> usize {
        self.endpoints.heap_bytes()
            + self.addresses.heap_bytes()
            + self.devices.heap_bytes()
            + self.users.heap_bytes()
            + listed(&self.objects)
            + listed(&self.usernames)
            + listed(&self.tokens)
            + listed(&self.families)
            + self.statuses.heap_bytes()
            + listed(&self.foreign_ids)
            + listed(&self.ja4s)
            + listed(&self.exposed)
    }

    /// What the detector measured (nothing, for most).
    pub fn measured(&self) -> &Measured {
        self.measured.as_deref().unwrap_or(&NOTHING_MEASURED)
    }

    fn measured_mut(&mut self) -> &mut Measured {
        self.measured.get_or_insert_with(Box::default)
    }

    /// Adds a request; lists the rule's evidence does not show are not kept (this runs for
    /// every rule a request matches).
    /// `mask`: the rule's evidence fields, one bit each (`Rule::evidence_mask`): this runs
    /// for every matching rule of every request, and a mask is one test where the list is
    /// a scan.
    fn add(&mut self, ev: &Event, mask: u32) {
        let wants = |f: EvidenceField| mask & f.bit() != 0;
        if self.count == 0 {
            // A new or restarted episode starts at its first request.
            self.first = ev.ts;
            self.last = ev.ts;
        }
        self.count += 1;
        if ev.attested {
            self.attested += 1;
        }
        self.shared_devices = self.shared_devices.max(ev.shared_devices);
        self.first = self.first.min(ev.ts);
        self.last = self.last.max(ev.ts);
        if let Some(c) = self.verdicts.get_mut(ev.verdict as usize) {
            *c += 1;
        }
        // The engine's shared `METHOD /route` (made here only for an event it did not
        // enrich); `Arc<str>`'s `==` compares pointers first.
        let made;
        let endpoint = match &ev.endpoint {
            Some(_) => &ev.endpoint,
            None => {
                made = ev.endpoint().map(Arc::<str>::from);
                &made
            }
        };
        // Bytes the lists' heap buffers grow by.
        let mut grew = 0;
        if wants(EvidenceField::Endpoints)
            && let Some(e) = endpoint
            && !bump(&mut self.endpoints, e, MAX_ENDPOINTS, &mut grew)
        {
            self.endpoints_other += 1;
        }
        let t = &mut self.truncated;
        if wants(EvidenceField::Addresses) {
            grew += push_distinct(&mut self.addresses, &ev.actor.ip, t);
        }
        if wants(EvidenceField::Devices)
            && let Some(d) = &ev.actor.device
        {
            grew += push_distinct(&mut self.devices, d, t);
        }
        if wants(EvidenceField::Users)
            && let Some(u) = &ev.actor.user
        {
            grew += push_distinct(&mut self.users, u, t);
        }
        if wants(EvidenceField::Tokens)
            && let Some(tok) = &ev.token
        {
            grew += push_distinct(&mut self.tokens, tok, t);
        }
        if wants(EvidenceField::Objects)
            && let Some(o) = &ev.object
        {
            grew += push_distinct(&mut self.objects, o, t);
        }
        if wants(EvidenceField::Usernames)
            && let Some(u) = &ev.username
        {
            grew += push_distinct(&mut self.usernames, u, t);
        }
        if let Some(o) = ev.ownership {
            if let Some(c) = self.ownership.get_mut(o as usize) {
                *c += 1;
            }
            if wants(EvidenceField::ForeignObjects) {
                for x in &ev.foreign {
                    grew += push_distinct(&mut self.foreign_ids, x, t);
                }
            }
        }
        if wants(EvidenceField::Fingerprints)
            && let Some(j) = &ev.ja4
        {
            grew += push_distinct(&mut self.ja4s, j, t);
        }
        if ev.status.is_some_and(|s| (200..300).contains(&s)) {
            self.succeeded += 1;
        }
        for f in ev
            .exposed
            .iter()
            .filter(|_| wants(EvidenceField::ExposedFields))
        {
            if !self
                .exposed
                .iter()
                .any(|(p, c, _)| *p == f.path && *c == f.class)
            {
                if self.exposed.len() < 64 {
                    let before = listed(&self.exposed);
                    self.exposed
                        .push((f.path.clone(), f.class, f.masked.clone()));
                    grew += listed(&self.exposed) as isize - before as isize;
                } else {
                    self.truncated = true;
                }
            }
        }
        if let Some(s) = &ev.exposure {
            self.records_max = self.records_max.max(s.records);
        }
        if wants(EvidenceField::Families)
            && let Some(f) = &ev.family
            && !bump(&mut self.families, f, 4, &mut grew)
        {
            self.truncated = true;
        }
        if wants(EvidenceField::Statuses)
            && let Some(s) = ev.status
            && !bump(&mut self.statuses, &s, MAX_LISTED, &mut grew)
        {
            self.truncated = true;
        }
        if let Some(e) = ev.expired_for {
            let m = self.measured_mut();
            m.expired_for_max = Some(m.expired_for_max.map_or(e, |m| m.max(e)));
        }
        self.ip.add(ev.actor.ip);
        self.device.add_ref(&ev.actor.device);
        self.user.add_ref(&ev.actor.user);
        self.endpoint.add_ref(endpoint);
        if grew != 0 {
            self.lists.grow(grew);
        }
    }
}

/// A key's window emptied: its episode starts again (in place, see [`Episode::restart`]).
fn restart(episode: &mut Option<Episode>) {
    if let Some(e) = episode {
        e.restart();
    }
}

/// (bucket index, requests), oldest first.
type Buckets = VecDeque<(u64, u32)>;

/// What a key's detector keeps, by kind; each bounded (see the module doc).
#[derive(serde::Serialize, serde::Deserialize)]
enum Track {
    /// Threshold detectors.
    Count(Buckets),
    /// All requests and those meeting `when`, as buckets: ratio and mixed detectors.
    /// Boxed, like the other kinds a few rules use: every key's inline state is as large
    /// as its largest kind, and threshold keys are most of the table.
    Two(Box<(Buckets, Buckets)>),
    /// Value → last bucket index: distinct detectors (at most `threshold` entries).
    Distinct(
        #[serde(serialize_with = "sorted", deserialize_with = "from_pairs")]
        HashMap<KeyValue, u64, foldhash::fast::RandomState>,
    ),
    /// The last `threshold` gaps (seconds) and the last request time.
    Cadence(Box<Cadence>),
    /// The walk so far: last number and time, its length, its first number and direction.
    Sequence {
        last: Option<(u64, Timestamp)>,
        run: u32,
        start: u64,
        up: bool,
    },
    /// Requests in the current tumbling window, and whether it already fired.
    Tumble { index: u64, count: u32, fired: bool },
    /// Nothing per key: each response is judged on its own against the endpoint's level.
    Outlier,
    /// The values (addresses) the key was last seen from, with when (at most
    /// `MAX_ALTERNATES`), the value of its latest request, and the times of returns
    /// within the window (at most `threshold`).
    Concurrent(Box<Concurrent>),
}

/// See [`Track::Cadence`].
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Cadence {
    gaps: VecDeque<f64>,
    last: Option<Timestamp>,
}

/// See [`Track::Concurrent`].
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Concurrent {
    /// (value, last seen, first seen).
    seen: Vec<(KeyValue, Timestamp, Timestamp)>,
    last: Option<KeyValue>,
    returns: VecDeque<Timestamp>,
    /// The alternation under way: (its first return, its latest return).
    alternating: Option<(Timestamp, Timestamp)>,
}

/// A detector's bucket and window widths in ns, never zero.
fn spans(det: &Detector) -> (u64, u64) {
    let window_ns = u64::try_from(det.window.as_nanos()).unwrap_or(u64::MAX);
    ((window_ns / BUCKETS).max(1), window_ns.max(1))
}

/// Saves a distinct set in value order, so the same state saves to the same bytes whatever
/// the hash seed.
fn sorted<S: serde::Serializer>(
    m: &HashMap<KeyValue, u64, foldhash::fast::RandomState>,
    s: S,
) -> Result<S::Ok, S::Error> {
    let mut v: Vec<(&KeyValue, &u64)> = m.iter().collect();
    v.sort_unstable();
    s.collect_seq(v)
}

fn from_pairs<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<HashMap<KeyValue, u64, foldhash::fast::RandomState>, D::Error> {
    let v: Vec<(KeyValue, u64)> = serde::Deserialize::deserialize(d)?;
    Ok(v.into_iter().collect())
}

/// Adds a request to an episode. Concurrent detectors over addresses also note the address
/// the key was first seen at among those seen since `since` (ns), and the one other
/// address its requests came from, so the episode can tell the holder from a copy.
fn record(ep: &mut Episode, track: &Track, since: u64, ev: &Event, evidence: u32) {
    ep.add(ev, evidence);
    // Only concurrent tracks have an origin: other episodes never read their `measured`
    // box here (a cache miss per request when it was read for every episode).
    if !matches!(track, Track::Concurrent(_)) {
        return;
    }
    if let Some(origin) = track.origin(since) {
        ep.measured_mut().origin = Some(origin);
    }
    if let Some(m) = &mut ep.measured
        && m.origin.is_some_and(|o| o != ev.actor.ip)
    {
        m.copy.add(ev.actor.ip);
    }
}

impl Track {
    /// Concurrent detectors over addresses: the address the key was first seen at among
    /// those seen since `since` (ns): the genuine holder's, the copies came later.
    fn origin(&self, since: u64) -> Option<IpAddr> {
        let Track::Concurrent(c) = self else {
            return None;
        };
        match c
            .seen
            .iter()
            .filter(|(_, last, _)| last.0 >= since)
            .min_by_key(|(_, _, first)| *first)
        {
            Some((KeyValue::Ip(ip), _, _)) => Some(*ip),
            _ => None,
        }
    }
}

/// Values a concurrent detector remembers per key: a token in use from more places than
/// this is caught by counting distinct addresses anyway.
const MAX_ALTERNATES: usize = 8;

/// A closed baseline window: `count` requests of a key whose endpoint is `endpoint` (or,
/// for an `outlier` detector, one response's records or bytes).
pub(super) struct Sample {
    pub endpoint: KeyValue,
    pub count: u32,
    /// Body sizes: learned over a wider range than request counts.
    pub wide: bool,
}

/// An outlier detector's judgement of one response.
pub(super) struct Outlier {
    /// What it measures: records listed, or body bytes.
    pub size: u32,
    /// Measures body bytes (learned over a wider range than counts).
    pub wide: bool,
    /// The endpoint's level, when the response stands out against it.
    pub stands_out: Option<f64>,
}

impl Outlier {
    /// The sample a response that did not stand out teaches its endpoint's baseline.
    pub fn sample(&self, endpoint: KeyValue) -> Sample {
        Sample {
            endpoint,
            count: self.size,
            wide: self.wide,
        }
    }
}

/// Judges one response for an outlier detector against its endpoint's `level` (`None`
/// while the baseline is still learning); `None` for other detectors. A key's state needs
/// no more than this: the shard judges responses of keys it does not hold without one.
pub(super) fn outlier(det: &Detector, ev: &Event, level: Option<f64>) -> Option<Outlier> {
    let DetectorKind::Outlier {
        factor, measure, ..
    } = &det.kind
    else {
        return None;
    };
    let size = match measure {
        Measure::Records => ev.exposure.as_ref().map_or(0, |s| s.records),
        Measure::Bytes => ev.body_bytes.unwrap_or(0),
    };
    let stands_out = level.filter(|l| size >= det.threshold && f64::from(size) > factor * l);
    Some(Outlier {
        size,
        wide: *measure == Measure::Bytes,
        stands_out,
    })
}

/// State of one key under one rule. Serializable for shard checkpoints; the window sizes
/// are the rule's ([`spans`]), never kept per key.
///
/// A key table holds it boxed (see the shard's `RuleState`), so its size costs one
/// allocation per key, not a slot of every empty bucket too.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct KeyState {
    track: Track,
    /// Baseline detectors: the endpoint part of the key, to learn per endpoint.
    endpoint: Option<KeyValue>,
    /// Inline, next to the window it counts: nearly every key held has one (each request
    /// a key observes adds to it), and a box of its own was one more cache line to miss on
    /// every request of every rule (saved the same way: serde writes a box as its value).
    episode: Option<Episode>,
    suppressed_until: Option<Timestamp>,
    pending: Option<Box<Episode>>,
    last_seen: Timestamp,
    /// Bytes the key table charged this key (beyond its slot) when it last weighed it.
    pub charged: usize,
    /// The sweep (second of packet time) under which the key table's sweep schedule files
    /// the key ([`UNFILED`] while it is filed nowhere). Made again from the state, never
    /// saved: a restored rule files its keys anew.
    #[serde(skip, default = "unfiled")]
    pub filed: u64,
}

/// [`KeyState::filed`] of a key filed under no sweep yet.
pub(super) const UNFILED: u64 = u64::MAX;

fn unfiled() -> u64 {
    UNFILED
}

fn prune(b: &mut Buckets, horizon: u64) {
    while b.front().is_some_and(|(i, _)| *i < horizon) {
        b.pop_front();
    }
}

fn add(b: &mut Buckets, cur: u64) {
    match b.back_mut() {
        // Events older than the newest bucket (out of order) count in it.
        Some((i, n)) if *i >= cur => *n += 1,
        _ => b.push_back((cur, 1)),
    }
}

fn total(b: &Buckets) -> u64 {
    b.iter().map(|(_, n)| u64::from(*n)).sum()
}

/// Detector figures an episode records for its alert.
enum Extra {
    Nothing,
    Share(u64, u64),
    Distinct(usize),
    Cadence(f64, f64, usize),
    Run(u64, u64),
    Baseline(f64, u32),
    Concurrent(usize, usize),
}

/// Inputs to one observation that the engine works out.
pub(super) struct Observed<'a> {
    pub ev: &'a Event,
    /// Distinct detectors: the counted value.
    pub distinct: Option<KeyValue>,
    /// Ratio and mixed detectors: whether the event meets `when`.
    pub when: bool,
    /// Baseline detectors: the learned level of the event's endpoint, once learned.
    pub level: Option<f64>,
}

impl KeyState {
    pub fn new(det: &Detector, endpoint: Option<KeyValue>) -> KeyState {
        let track = match &det.kind {
            DetectorKind::Threshold => Track::Count(VecDeque::new()),
            DetectorKind::Ratio { .. } | DetectorKind::Mixed { .. } => Track::Two(Box::default()),
            DetectorKind::Distinct(_) => Track::Distinct(HashMap::default()),
            DetectorKind::Cadence { .. } => Track::Cadence(Box::default()),
            DetectorKind::Sequence => Track::Sequence {
                last: None,
                run: 0,
                start: 0,
                up: true,
            },
            DetectorKind::Outlier { .. } => Track::Outlier,
            DetectorKind::Concurrent { .. } => Track::Concurrent(Box::default()),
            DetectorKind::Baseline { .. } => Track::Tumble {
                index: 0,
                count: 0,
                fired: false,
            },
        };
        KeyState {
            track,
            endpoint,
            episode: None,
            suppressed_until: None,
            pending: None,
            last_seen: Timestamp::ZERO,
            charged: 0,
            filed: UNFILED,
        }
    }

    /// Checks a key read back from a checkpoint (its window sizes are always the rule's
    /// detector's, never the bytes'): `false` when the state kept is not the kind the
    /// detector keeps (the bytes are not this rule's).
    pub fn restored(&self, det: &Detector) -> bool {
        let fresh = KeyState::new(det, None);
        std::mem::discriminant(&self.track) == std::mem::discriminant(&fresh.track)
    }

    /// The episode building towards an alert.
    #[cfg(test)]
    pub fn episode(&self) -> Option<&Episode> {
        self.episode.as_ref()
    }

    /// Whether the key has an episode building towards an alert, and an open aggregate
    /// (requests folded while suppressed), with their request counts.
    #[cfg(test)]
    pub fn open(&self) -> (Option<u64>, Option<u64>) {
        (
            self.episode.as_ref().map(|e| e.count),
            self.pending.as_ref().map(|e| e.count),
        )
    }

    /// Oldest bucket index still inside the window ending at bucket `cur`.
    fn horizon(cur: u64) -> u64 {
        cur.saturating_sub(BUCKETS - 1)
    }

    /// Takes one matching event; `Some` when the detector fires (the episode to alert on,
    /// moved into a box: returned by value, the few hundred bytes of an `Option<Episode>`
    /// were copied through each caller for every event, fired or not).
    /// The sample to learn, when a baseline window closed or an outlier did not stand out,
    /// is left in `learn` (one at most: a key's track is one kind or the other).
    pub fn observe(
        &mut self,
        rule: &Rule,
        o: Observed<'_>,
        stats: &mut DetectStats,
        learn: &mut Option<Sample>,
    ) -> Option<Box<Episode>> {
        let ev = o.ev;
        let (bucket_ns, window_ns) = spans(&rule.detector);
        self.last_seen = self.last_seen.max(ev.ts);
        // A baseline window closes whatever the suppression state.
        if let Track::Tumble {
            index,
            count,
            fired,
        } = &mut self.track
        {
            let cur = ev.ts.0 / window_ns;
            if cur != *index {
                if *count > 0
                    && !*fired
                    && let Some(e) = &self.endpoint
                {
                    *learn = Some(Sample {
                        endpoint: e.clone(),
                        count: *count,
                        wide: false,
                    });
                }
                *index = cur;
                *count = 0;
                *fired = false;
                restart(&mut self.episode);
            }
        }
        if let Some(until) = self.suppressed_until
            && ev.ts < until
        {
            if let Track::Tumble { count, fired, .. } = &mut self.track {
                *count += 1;
                *fired = true;
            }
            // A ratio or mixed rule's follow-up reports the requests its condition picks
            // (an account's unattested use), not the key's others (the genuine app's).
            if matches!(
                rule.detector.kind,
                DetectorKind::Ratio { .. } | DetectorKind::Mixed { .. }
            ) && !o.when
            {
                return None;
            }
            let pending = self
                .pending
                .get_or_insert_with(|| Box::new(Episode::new(ev.ts)));
            // The track is not updated while suppressed: the addresses it knew when it
            // fired all count, however long ago, so the holder is still the address first
            // seen. (Only those within the window counted before, and once suppression
            // outlasted the window the follow-up knew no holder: it named no copy, and an
            // `auto` ban fell back to the token, the genuine holder's.)
            record(pending, &self.track, 0, ev, rule.evidence_mask);
            stats.aggregated_events += 1;
            return None;
        }
        let det = &rule.detector;
        let threshold = det.threshold;
        let cur = ev.ts.0 / bucket_ns;
        let horizon = Self::horizon(cur);
        let mut fired = false;
        let mut extra = Extra::Nothing;
        match (&det.kind, &mut self.track) {
            (DetectorKind::Threshold, Track::Count(b)) => {
                prune(b, horizon);
                if b.is_empty() {
                    restart(&mut self.episode);
                }
                add(b, cur);
                fired = total(b) >= u64::from(threshold);
            }
            (kind @ (DetectorKind::Ratio { .. } | DetectorKind::Mixed { .. }), Track::Two(two)) => {
                let (all, hits) = &mut **two;
                prune(all, horizon);
                prune(hits, horizon);
                if all.is_empty() {
                    restart(&mut self.episode);
                }
                add(all, cur);
                if o.when {
                    add(hits, cur);
                }
                let (n, h) = (total(all), total(hits));
                let t = u64::from(threshold);
                fired = match kind {
                    DetectorKind::Ratio { ratio, .. } => n >= t && h as f64 >= ratio * n as f64,
                    // Mixed: enough of each population.
                    _ => h >= t && n - h >= t,
                };
                extra = Extra::Share(h, n);
            }
            (DetectorKind::Distinct(_), Track::Distinct(map)) => {
                // The engine skips distinct rules for events without the counted value.
                let value = o.distinct?;
                // One probe for a value already counted (a set is never empty then).
                if let Some(slot) = map.get_mut(&value) {
                    *slot = (*slot).max(cur);
                } else {
                    if map.len() + 1 >= threshold as usize {
                        map.retain(|_, i| *i >= horizon);
                    }
                    if map.is_empty() {
                        restart(&mut self.episode);
                    }
                    map.insert(value, cur);
                }
                fired = map.len() >= threshold as usize;
                extra = Extra::Distinct(map.len());
            }
            (
                DetectorKind::Cadence {
                    max_cv,
                    min_mean_gap,
                },
                Track::Cadence(c),
            ) => {
                let Cadence { gaps, last } = &mut **c;
                if let Some(prev) = *last {
                    let gap = ev.ts.0.saturating_sub(prev.0);
                    if gap > window_ns {
                        // A pause longer than the window starts a new session.
                        gaps.clear();
                        restart(&mut self.episode);
                    } else {
                        gaps.push_back(gap as f64 / 1e9);
                        while gaps.len() > threshold as usize {
                            gaps.pop_front();
                        }
                    }
                } else {
                    restart(&mut self.episode);
                }
                *last = Some(last.map_or(ev.ts, |l| l.max(ev.ts)));
                if gaps.len() >= threshold as usize {
                    let n = gaps.len() as f64;
                    let mean = gaps.iter().sum::<f64>() / n;
                    let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / n;
                    let cv = if mean > 0.0 { var.sqrt() / mean } else { 0.0 };
                    let regular = max_cv.is_some_and(|m| cv < m);
                    let fast = min_mean_gap.is_some_and(|m| mean < m.as_secs_f64());
                    fired = regular || fast;
                    extra = Extra::Cadence(mean, cv, gaps.len());
                    if fired {
                        gaps.clear();
                    }
                }
            }
            (
                DetectorKind::Sequence,
                Track::Sequence {
                    last,
                    run,
                    start,
                    up,
                },
            ) => {
                let n = ev.number?;
                match *last {
                    Some((prev, at))
                        if ev.ts.0.saturating_sub(at.0) <= window_ns
                            && (n == prev + 1 || n + 1 == prev) =>
                    {
                        let dir = n > prev;
                        if *run >= 2 && dir != *up {
                            *run = 1;
                            *start = prev;
                            restart(&mut self.episode);
                        }
                        *up = dir;
                        *run += 1;
                    }
                    // The same object again: neither extends nor breaks the walk.
                    Some((prev, at)) if n == prev && ev.ts.0.saturating_sub(at.0) <= window_ns => {}
                    _ => {
                        *run = 1;
                        *start = n;
                        restart(&mut self.episode);
                    }
                }
                *last = Some((n, ev.ts));
                fired = *run >= threshold;
                extra = Extra::Run(*start, n);
                if fired {
                    *run = 0;
                    *last = None;
                }
            }
            (
                DetectorKind::Baseline { factor, .. },
                Track::Tumble {
                    count, fired: f, ..
                },
            ) => {
                *count += 1;
                if !*f
                    && *count >= threshold
                    && let Some(level) = o.level
                    && f64::from(*count) > factor * level
                {
                    *f = true;
                    fired = true;
                    extra = Extra::Baseline(level, *count);
                }
            }
            (DetectorKind::Outlier { .. }, Track::Outlier) => {
                restart(&mut self.episode);
                match outlier(det, ev, o.level) {
                    Some(Outlier {
                        size,
                        stands_out: Some(level),
                        ..
                    }) => {
                        fired = true;
                        extra = Extra::Baseline(level, size);
                    }
                    judged => {
                        // Learned from what did not stand out; no episode is kept for it.
                        if let (Some(e), Some(j)) = (&self.endpoint, judged) {
                            *learn = Some(j.sample(e.clone()));
                        }
                        return None;
                    }
                }
            }
            (
                DetectorKind::Concurrent {
                    overlap, linger, ..
                },
                Track::Concurrent(c),
            ) => {
                let Concurrent {
                    seen,
                    last,
                    returns,
                    alternating,
                } = &mut **c;
                // The engine skips concurrent rules for events without the value.
                let value = o.distinct?;
                let overlap_ns = u64::try_from(overlap.as_nanos()).unwrap_or(u64::MAX);
                let linger_ns = u64::try_from(linger.as_nanos()).unwrap_or(u64::MAX);
                let window_start = ev.ts.0.saturating_sub(window_ns);
                while returns.front().is_some_and(|t| t.0 < window_start) {
                    returns.pop_front();
                }
                if returns.is_empty() {
                    restart(&mut self.episode);
                }
                let moved = last.as_ref().is_some_and(|l| *l != value);
                let full = seen.len() >= MAX_ALTERNATES;
                let entry = seen.iter_mut().find(|(v, _, _)| *v == value);
                // Back at a value the key left only moments ago: two places at once.
                let back = moved
                    && entry
                        .as_ref()
                        .is_some_and(|(_, at, _)| ev.ts.0.saturating_sub(at.0) <= overlap_ns);
                match entry {
                    Some(e) => e.1 = e.1.max(ev.ts),
                    None if !full => seen.push((value.clone(), ev.ts, ev.ts)),
                    None => {
                        if let Some(oldest) = seen.iter_mut().min_by_key(|(_, at, _)| *at) {
                            *oldest = (value.clone(), ev.ts, ev.ts);
                        }
                    }
                }
                *last = Some(value);
                if back {
                    // Returns at most `overlap` or `linger` apart (the longer) are one
                    // alternation; they count once it has lasted `linger` (a handover's
                    // interleaving ends sooner).
                    let since = match alternating {
                        Some((first, latest))
                            if ev.ts.0.saturating_sub(latest.0) <= overlap_ns.max(linger_ns) =>
                        {
                            *latest = (*latest).max(ev.ts);
                            *first
                        }
                        _ => {
                            *alternating = Some((ev.ts, ev.ts));
                            ev.ts
                        }
                    };
                    if ev.ts.0.saturating_sub(since.0) >= linger_ns {
                        returns.push_back(ev.ts);
                        while returns.len() > threshold as usize {
                            returns.pop_front();
                        }
                    }
                }
                fired = returns.len() >= threshold as usize;
                let recent = seen
                    .iter()
                    .filter(|(_, at, _)| at.0 >= window_start)
                    .count();
                extra = Extra::Concurrent(recent, returns.len());
                if fired {
                    returns.clear();
                }
            }
            // Kinds and tracks are built together; a mismatch cannot happen.
            _ => return None,
        }
        let episode = self.episode.get_or_insert_with(|| Episode::new(ev.ts));
        let since = ev.ts.0.saturating_sub(window_ns);
        record(episode, &self.track, since, ev, rule.evidence_mask);
        if !fired {
            return None;
        }
        // What the detector measured is read by the alert alone, so it is written when the
        // detector fires. Written on every request, it was a store to the episode's boxed
        // `measured` (one more cache line per request of every ratio, mixed, distinct and
        // concurrent rule) and kept that box for every such key.
        match extra {
            Extra::Nothing => {}
            Extra::Share(h, n) => episode.measured_mut().share = Some((h, n)),
            Extra::Distinct(n) => episode.measured_mut().distinct = Some(n),
            Extra::Cadence(m, cv, k) => episode.measured_mut().cadence = Some((m, cv, k)),
            Extra::Run(a, b) => episode.measured_mut().run = Some((a, b)),
            Extra::Baseline(l, c) => episode.measured_mut().baseline = Some((l, c)),
            Extra::Concurrent(values, returns) => {
                let m = episode.measured_mut();
                m.distinct = Some(values);
                m.returns = Some(returns);
            }
        }
        let episode = Box::new(self.episode.take()?);
        match &mut self.track {
            Track::Count(b) => b.clear(),
            Track::Two(two) => {
                two.0.clear();
                two.1.clear();
            }
            Track::Distinct(m) => m.clear(),
            _ => {}
        }
        self.pending = None;
        self.suppressed_until =
            (!rule.suppress.is_zero()).then(|| ev.ts.saturating_add(rule.suppress));
        Some(episode)
    }

    /// A baseline window that has ended by `now` with no event since: its sample (a
    /// window's request count, learned for the key's endpoint).
    pub fn closed_sample(&mut self, now: Timestamp, det: &Detector) -> Option<(&KeyValue, u32)> {
        let (_, window_ns) = spans(det);
        let Track::Tumble {
            index,
            count,
            fired,
        } = &mut self.track
        else {
            return None;
        };
        if now.0 / window_ns == *index || *count == 0 {
            return None;
        }
        let sample = match (&self.endpoint, *fired) {
            (Some(e), false) => Some((e, *count)),
            _ => None,
        };
        *count = 0;
        *fired = false;
        sample
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
                Some(*e)
            }
            None => {
                self.suppressed_until = None;
                None
            }
        }
    }

    pub fn last_seen(&self) -> Timestamp {
        self.last_seen
    }

    /// Whether requests folded while suppressed await their follow-up alert.
    pub fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// The open aggregate, at the end of input.
    pub fn take_pending(&mut self) -> Option<Episode> {
        self.pending.take().map(|e| *e)
    }

    /// Bytes this key's state holds (inline and on the heap, approximately), for the
    /// memory budget.
    pub fn bytes(&self) -> usize {
        use std::mem::size_of;
        let track = match &self.track {
            Track::Count(b) => b.capacity() * size_of::<(u64, u32)>(),
            Track::Two(two) => {
                size_of::<(Buckets, Buckets)>()
                    + (two.0.capacity() + two.1.capacity()) * size_of::<(u64, u32)>()
            }
            // A hash table entry: the pair plus a control byte, at 7/8 load at most.
            Track::Distinct(m) => m.capacity() * (size_of::<(KeyValue, u64)>() + 1) * 8 / 7,
            Track::Cadence(c) => size_of::<Cadence>() + c.gaps.capacity() * size_of::<f64>(),
            Track::Concurrent(c) => {
                size_of::<Concurrent>()
                    + c.seen.capacity() * size_of::<(KeyValue, Timestamp, Timestamp)>()
                    + c.returns.capacity() * size_of::<Timestamp>()
            }
            Track::Sequence { .. } | Track::Tumble { .. } | Track::Outlier => 0,
        };
        size_of::<KeyState>()
            + track
            // The episode's own bytes are inline (in `KeyState`): its lists' buffers.
            + self
                .episode
                .as_ref()
                .map_or(0, |e| e.bytes() - size_of::<Episode>())
            + self.pending.as_deref().map_or(0, Episode::bytes)
    }

    /// The packet time before which a sweep leaves this key as it is: its follow-up is
    /// not due ([`Self::due_follow_up`]), its baseline window not closed
    /// ([`Self::closed_sample`]), and it is not idle ([`Self::idle`]). Between sweeps only
    /// an event of the key changes what this returns (its times only move later, its
    /// suppression starts or moves on), so the least over a rule's keys stays a bound
    /// when the shard lowers it by each key an event reached.
    pub fn quiet_until(&self, rule: &Rule) -> Timestamp {
        // Idle once `last_seen + window < now`: a nanosecond past that sum.
        let idle = Timestamp(
            self.last_seen
                .saturating_add(rule.detector.window)
                .0
                .saturating_add(1),
        );
        let due = self.suppressed_until.unwrap_or(Timestamp(u64::MAX));
        let closes = match self.track {
            // Closed by the first sweep in a later window (`index` is never ahead of the
            // shard's time: it is an event's).
            Track::Tumble { index, count, .. } if count > 0 => {
                let (_, window_ns) = spans(&rule.detector);
                Timestamp(index.saturating_add(1).saturating_mul(window_ns))
            }
            _ => Timestamp(u64::MAX),
        };
        idle.min(due).min(closes)
    }

    /// Nothing pending or suppressed, and no event inside the window: safe to forget.
    pub fn idle(&self, now: Timestamp, window: std::time::Duration) -> bool {
        self.pending.is_none()
            && self.suppressed_until.is_none_or(|u| u <= now)
            && self.last_seen.saturating_add(window) < now
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The lists' bytes an episode keeps as they change are what counting its lists
        /// gives, through adds of every kind of evidence (lists growing past their inline
        /// value and their buffers doubling), restarts that keep small buffers and drop
        /// large ones, a clone and a checkpoint's restore (unknown until the next restart,
        /// weighed by counting meanwhile).
        #[test]
        fn an_episode_keeps_its_lists_bytes_as_counting_them_gives(
            steps in prop::collection::vec(
                prop_oneof![
                    9 => (0u8..40, 0u8..6, 0u8..3, any::<bool>()).prop_map(Some),
                    1 => Just(None),
                ],
                1..160,
            ),
        ) {
            let mut e = Episode::new(Timestamp(0));
            for (i, step) in steps.into_iter().enumerate() {
                match step {
                    Some((v, w, k, mask_all)) => {
                        let mut ev = crate::detect::tests::ev(i as f64, &format!("10.0.{w}.{v}"));
                        let name = |p: &str| -> Option<Arc<str>> { Some(format!("{p}{v}").into()) };
                        ev.actor.device = name("d");
                        ev.actor.user = name("u");
                        ev.object = name("/o/");
                        ev.username = name("n");
                        ev.ja4 = name("t13d");
                        ev.endpoint = Some(format!("GET /e{w}").into());
                        ev.family = Some(format!("f{k}").into());
                        ev.status = Some(200 + u16::from(v % 7));
                        ev.token = Some(TokenHash::of_digest(&[v; 32]));
                        ev.ownership = Some(crate::object::Ownership::Own);
                        ev.foreign = (0..k)
                            .map(|j| ObjectRef { collection: "users".into(), id: format!("{v}-{j}").into() })
                            .collect();
                        ev.exposed = (0..k)
                            .map(|j| crate::detect::exposure::Finding {
                                path: format!("$.a{v}.b{j}").into(),
                                class: Class::Email,
                                masked: "j***@x".into(),
                                digests: Default::default(),
                            })
                            .collect();
                        let mask = if mask_all { u32::MAX } else { 1 << (v % 12) };
                        e.add(&ev, mask);
                    }
                    None => e.restart(),
                }
                prop_assert_eq!(e.lists.get(), Some(e.count_lists()));
            }
            let exact = e.count_lists();
            let copy = e.clone();
            prop_assert_eq!(copy.lists.get(), None);
            prop_assert_eq!(copy.bytes(), std::mem::size_of::<Episode>()
                + copy.measured.as_ref().map_or(0, |_| std::mem::size_of::<Measured>())
                + copy.count_lists());
            let saved = postcard::to_allocvec(&e).unwrap_or_default();
            let mut back: Episode = postcard::from_bytes(&saved).map_err(|x| TestCaseError::fail(x.to_string()))?;
            prop_assert_eq!(back.lists.get(), None);
            prop_assert_eq!(back.bytes() - std::mem::size_of::<Episode>(), e.bytes() - std::mem::size_of::<Episode>() - exact + back.count_lists());
            back.restart();
            prop_assert_eq!(back.lists.get(), Some(back.count_lists()));
        }
    }

    /// A key's state is one allocation (its table holds it boxed) of at most 512 bytes,
    /// a size class of the allocator's: the next is 640, and a state 24 bytes over the
    /// line (the ratio detectors' buckets inline) took the realistic capture's peak RSS
    /// from 146 to 154 MiB. Grow it past 512 only for a measured gain.
    #[test]
    fn a_key_state_fits_its_allocation_class() {
        let size = std::mem::size_of::<KeyState>();
        assert!(size <= 512, "KeyState is {size} bytes");
    }

    /// A listing holds its first value inline and the rest on the heap, lists and counts
    /// as a thin list does, restarts as one does, and saves to the same bytes as the thin
    /// list of its values (a checkpoint's format does not change).
    #[test]
    fn listing_holds_one_value_inline_and_saves_as_a_list() {
        let mut listing: Listing<Arc<str>> = Listing::Empty;
        let mut thin: ThinVec<Arc<str>> = ThinVec::new();
        let (mut t1, mut t2) = (false, false);
        let save = |l: &Listing<Arc<str>>, t: &ThinVec<Arc<str>>| {
            let a = postcard::to_allocvec(l).unwrap_or_default();
            let b = postcard::to_allocvec(t).unwrap_or_default();
            assert_eq!(a, b);
            let back: Listing<Arc<str>> = postcard::from_bytes(&a).unwrap_or_default();
            assert_eq!(
                back.iter().collect::<Vec<_>>(),
                l.iter().collect::<Vec<_>>()
            );
            back
        };
        assert!(matches!(save(&listing, &thin), Listing::Empty));
        for (i, u) in ["u1", "u1", "u2", "u1", "u3"].into_iter().enumerate() {
            let u: Arc<str> = Arc::from(u);
            push_distinct(&mut listing, &u, &mut t1);
            push_distinct(&mut thin, &u, &mut t2);
            assert_eq!(
                listing.iter().collect::<Vec<_>>(),
                thin.iter().collect::<Vec<_>>()
            );
            match i {
                0 | 1 => {
                    assert!(matches!(listing, Listing::One(_)));
                    assert_eq!(listing.heap_bytes(), 0);
                    assert!(matches!(save(&listing, &thin), Listing::One(_)));
                }
                _ => {
                    assert!(matches!(listing, Listing::Many(_)));
                    assert!(listing.heap_bytes() > 0);
                    assert!(matches!(save(&listing, &thin), Listing::Many(_)));
                }
            }
        }
        // Past the cap, truncated as a thin list is.
        for i in 0..MAX_LISTED + 2 {
            let u: Arc<str> = Arc::from(format!("x{i}"));
            push_distinct(&mut listing, &u, &mut t1);
            push_distinct(&mut thin, &u, &mut t2);
        }
        assert_eq!(listing.iter().count(), MAX_LISTED);
        assert!(t1 && t2);
        // A restart keeps no inline value; a small heap buffer is kept, emptied.
        let mut one: Listing<u16> = Listing::One(7);
        one.emptied();
        assert!(matches!(one, Listing::Empty));
        let mut small: Listing<u16> = Listing::Empty;
        for v in [1, 2, 3] {
            List::push(&mut small, v);
        }
        small.emptied();
        assert!(matches!(&small, Listing::Many(v) if v.is_empty()));
        listing.emptied();
        assert!(matches!(listing, Listing::Empty));
        // Counted values: the first inline, then on the heap, in first-seen order.
        let mut counts: Listing<(u16, u32)> = Listing::Empty;
        for s in [200, 200, 404, 200] {
            assert!(bump(&mut counts, &s, 4, &mut 0));
        }
        assert_eq!(
            counts.iter().copied().collect::<Vec<_>>(),
            [(200, 3), (404, 1)]
        );
    }

    /// Evidence lists compare shared strings as `==` does: by text, whichever allocation
    /// holds it, and whatever byte two texts of one length differ in.
    #[test]
    fn listed_strings_compare_by_text() {
        let a: Arc<str> = Arc::from("device-0001");
        let texts = [
            "device-0001",
            "device-0002",
            "xevice-0001",
            "device-000",
            "",
            "device-00011",
        ];
        for t in texts {
            let b: Arc<str> = Arc::from(t);
            assert_eq!(a.same(&b), *a == *b, "{t}");
            assert_eq!(b.same(&a), *a == *b, "{t}");
        }
        assert!(a.same(&Arc::clone(&a)));
        let mut list = ThinVec::new();
        let mut truncated = false;
        for t in ["u1", "u2", "u1", "v2", "u2"] {
            push_distinct(&mut list, &Arc::<str>::from(t), &mut truncated);
        }
        let listed: Vec<&str> = list.iter().map(|s| &**s).collect();
        assert_eq!(listed, ["u1", "u2", "v2"]);
        let mut counts: ThinVec<(Arc<str>, u32)> = ThinVec::new();
        for t in ["GET /a", "GET /b", "GET /a"] {
            assert!(bump(&mut counts, &Arc::<str>::from(t), 4, &mut 0));
        }
        assert_eq!(counts.iter().map(|(_, n)| *n).collect::<Vec<_>>(), [2, 1]);
    }
}
