//! A bounded memo of what was computed from a byte string, found again by the same bytes.
//!
//! An API sends the same bytes to many clients: a product page, a catalogue page or a
//! search result to every shopper, compressed the same way each time. Work that is a pure
//! function of those bytes (inflating them, scanning them) is done once and its result
//! handed out again: for response scans ([`crate::detect::scan_memo`]) and for undoing
//! content codings ([`crate::http`]), one memo for all the workers of a pipeline
//! ([`Shared`]: in parts behind their own locks).
//!
//! A key is a short `head` (whatever else the result depends on: a content type, flags,
//! limits) and the `body`. An entry is placed by a fast hash with a fixed seed and told
//! apart from others of its slot by its [`Identity`]: its exact bytes (a copy of the key
//! kept in the entry), or a 128-bit digest of them under a secret key. Never by the
//! placement hash alone: a crafted body cannot borrow another body's result. Two-way (a
//! body may sit in either slot of a pair; a hit only marks its entry used), bounded in
//! bytes. Most bodies are met once (a user's own cart, a search nobody repeats), so what is
//! kept is chosen:
//! - a body is kept in the slots the second time it is met while its hash is remembered
//!   (four per bucket of one word per slot in all), so bodies met once never push out the
//!   ones met again;
//! - a memo may keep a share of its bytes for a window (as W-TinyLFU caches do): a body
//!   met for the first time waits there until newer ones push it out (oldest first,
//!   counted as evictions); met again meanwhile, it is answered from there and joins the
//!   slots as a body met twice does. Without it, every body was made twice before it was
//!   answered: the scans of the realistic capture's 26,544 distinct bodies missed 59,816
//!   times of 387,797 with the slots never full; with a fifth of the share as a window,
//!   42,203 times;
//! - in the slots it takes an empty slot of its pair, else one whose entry went unused since it lost
//!   its mark; when both entries were used, they lose their marks and it is not kept (a
//!   second chance);
//! - past the limit, a clock hand gives up entries not used since it last passed, and
//!   clears the mark of those used (CLOCK), counted as evictions;
//! - an entry over a sixteenth of the limit is never kept (one body cannot flush the
//!   memo), nor is a body over the memo's largest body.
//!
//! The placement hash has a fixed seed: a hit never changes a result, and a fixed placement
//! keeps the counts a summary reports the same from one replay to the next with one
//! worker (with several, which one makes a value depends on timing: see [`Shared`]). A
//! crafted stream of colliding bodies can at worst make the memo miss.
//!
//! ## Digest identity
//! A copy of the key is most of an entry's bytes when the value is small (a response scan:
//! a few hundred bytes against a KiB of body), so a memo told apart by digest holds three
//! to four times the entries in the same share. The digest is SipHash-1-3 with a 128-bit
//! output under a 128-bit key drawn from the operating system's random source when the memo
//! is made (per memo, or part of a shared one, and per run), over the head's length, the
//! head and the body. SipHash is a pseudorandom function: without the key, which never
//! leaves the process (the digests are in no log, alert, metric or summary), two different
//! keys get the same digest with probability 2^-128, so even 2^40 crafted bodies against
//! 2^20 kept ones collide with probability under 2^-68. It is the keyed hash Rust's own
//! hash tables rely on against crafted collisions. The digest is computed only when an
//! entry's placement hash matches (a likely hit) or a body is about to be kept, and costs
//! about 0.25 us per KiB on this project's machines, against the 4 us a scan of that KiB
//! costs. When the random source fails, the memo falls back to exact bytes.

use std::hash::{BuildHasher, Hasher};
use std::mem::size_of;
use std::sync::{Mutex, MutexGuard, PoisonError};

use siphasher::sip128::{Hasher128, SipHasher13};

use crate::budget::Usage;

/// Hashes remembered per bucket of bodies met once.
const SEEN_WAYS: usize = 4;
/// Slot counts, at least and at most (powers of two).
const MIN_SLOTS: usize = 64;
const MAX_SLOTS: usize = 1 << 16;

/// A memo key: what the result depends on besides the body, and the body.
#[derive(Clone, Copy, Debug)]
pub struct Key<'a> {
    pub head: &'a [u8],
    pub body: &'a [u8],
}

/// How entries whose placement hash matches are told apart (see the module
/// documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Identity {
    /// By the exact bytes: an entry keeps a copy of its key.
    Bytes,
    /// By a keyed 128-bit digest of the key: an entry keeps 16 bytes.
    Digest,
}

/// What an entry keeps to tell its key from others of the same placement hash.
enum Check {
    /// The head, then the body.
    Bytes {
        key: Box<[u8]>,
        head_len: usize,
    },
    Digest(u128),
}

/// The keyed digest of `k` (see the module documentation).
fn digest(secret: &Secret, k: Key<'_>) -> u128 {
    let mut h = SipHasher13::new_with_key(secret);
    h.write_u64(k.head.len() as u64);
    h.write(k.head);
    h.write(k.body);
    h.finish128().as_u128()
}

/// The key of [`digest`].
type Secret = [u8; 16];

/// A key for [`digest`] from the operating system's random source (`getrandom(2)`):
/// aws-lc's generator, used before, seeded itself with a jitter-entropy run on first use,
/// about 300 million instructions per replay of the realistic capture for these bytes.
fn secret() -> Option<Secret> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).ok()?;
    Some(b)
}

struct Entry<V> {
    hash: u64,
    check: Check,
    value: V,
    /// What the entry is accounted as.
    bytes: usize,
    /// Answered a lookup since the clock hand (or a newcomer for its slot) last passed it.
    used: bool,
}

impl<V> Entry<V> {
    /// The entry is `k`'s, given its placement hash matched; `d` is `k`'s digest, made
    /// when first needed.
    fn is(&self, k: Key<'_>, d: &mut Option<u128>, secret: Option<&Secret>) -> bool {
        match (&self.check, secret) {
            (Check::Bytes { key, head_len }, _) => {
                *head_len == k.head.len()
                    && key.len() == k.head.len() + k.body.len()
                    && key[..k.head.len()] == *k.head
                    && key[k.head.len()..] == *k.body
            }
            (Check::Digest(x), Some(s)) => *x == *d.get_or_insert_with(|| digest(s, k)),
            (Check::Digest(_), None) => false,
        }
    }
}

/// `k`'s placement hash under `hasher` (a memo's is a fixed seed's: see the module
/// documentation).
fn placement(hasher: &foldhash::fast::FixedState, k: Key<'_>) -> u64 {
    let mut h = hasher.build_hasher();
    h.write(k.head);
    h.write(k.body);
    h.finish()
}

/// A body a memo keeping bodies up to `max_body` bytes could keep.
fn keepable(k: Key<'_>, max_body: usize) -> bool {
    !k.body.is_empty() && k.body.len() <= max_body
}

/// The two of `slots` (a power of two) a body may sit in (one when there is one slot).
pub fn pair(slots: usize, hash: u64) -> std::ops::Range<usize> {
    let first = (hash as usize) & (slots - 1) & !1;
    first..(first + 2).min(slots)
}

/// A memo of values computed from keys. See the module documentation.
pub struct Memo<V> {
    slots: Vec<Option<Entry<V>>>,
    /// Hashes of bodies met once and not kept, four to a bucket picked by the hash's high
    /// half, newest first: two bodies sharing a bucket do not forget each other.
    seen: Vec<[u64; SEEN_WAYS]>,
    hasher: foldhash::fast::FixedState,
    /// The digest's key, when entries are told apart by digest.
    secret: Option<Secret>,
    /// The next slot to give up its entry when the memo is over its limit.
    hand: usize,
    held: usize,
    entries: usize,
    /// The slots' part of the limit (the rest is the window's).
    limit: usize,
    /// Bodies met for the first time, kept for a while (see the module documentation).
    window: Window<V>,
    /// Largest body kept (a large body is rarely repeated and would crowd out many small
    /// ones).
    max_body: usize,
    evictions: u64,
    /// Lookups answered, and lookups not answered (including bodies never kept).
    pub hits: u64,
    pub misses: u64,
}

/// A lookup that found nothing: offer the value made for it with [`Memo::offer`].
#[must_use]
pub struct Miss {
    hash: u64,
    keep: bool,
    /// The key's digest, if the lookup made it.
    digest: Option<u128>,
}

impl Miss {
    /// A miss whose value is not to be kept.
    pub fn never() -> Miss {
        Miss {
            hash: 0,
            keep: false,
            digest: None,
        }
    }
}

impl<V: Clone> Memo<V> {
    /// A memo holding at most `limit` bytes (none at all when 0), with a slot per
    /// `bytes_per_slot` of the limit, keeping bodies up to `max_body` bytes; `seed` picks
    /// the placement (fixed per use, see the module documentation), `identity` how
    /// entries are told apart; `window_permille` of the limit keeps bodies met once (none
    /// when 0).
    pub fn new(
        limit: usize,
        bytes_per_slot: usize,
        max_body: usize,
        seed: u64,
        identity: Identity,
        window_permille: usize,
    ) -> Memo<V> {
        let window_limit = limit / 1000 * window_permille.min(1000);
        let slots = if limit == 0 {
            0
        } else {
            (limit / bytes_per_slot.max(1))
                .clamp(MIN_SLOTS, MAX_SLOTS)
                .next_power_of_two()
        };
        Memo {
            // The slots themselves are held from the start.
            held: slots * (size_of::<Option<Entry<V>>>() + size_of::<u64>()),
            slots: std::iter::repeat_with(|| None).take(slots).collect(),
            seen: vec![[0; SEEN_WAYS]; (slots / SEEN_WAYS).max(1)],
            hasher: foldhash::fast::FixedState::with_seed(seed),
            secret: match identity {
                Identity::Digest if slots > 0 => secret(),
                _ => None,
            },
            hand: 0,
            entries: 0,
            limit: limit - window_limit,
            window: Window::new(window_limit),
            max_body,
            evictions: 0,
            hits: 0,
            misses: 0,
        }
    }

    /// `k`'s placement hash (fixed seed: see the module documentation).
    fn place(&self, k: Key<'_>) -> u64 {
        placement(&self.hasher, k)
    }

    /// The value kept for `k`, else a [`Miss`] to offer the value made.
    pub fn get(&mut self, k: Key<'_>) -> Result<V, Miss> {
        self.get_with(k, V::clone)
    }

    /// [`Memo::get`] that hands the kept value to `copy` (to copy it into memory of the
    /// caller's choosing) rather than cloning it.
    pub fn get_with<R>(&mut self, k: Key<'_>, copy: impl FnOnce(&V) -> R) -> Result<R, Miss> {
        let hash = if self.may_keep(k) { self.place(k) } else { 0 };
        self.get_placed(k, hash, copy)
    }

    /// Whether `k` could be kept at all (the memo has room and the body is within bounds).
    fn may_keep(&self, k: Key<'_>) -> bool {
        !self.slots.is_empty() && keepable(k, self.max_body)
    }

    /// [`Memo::get_with`] for a key whose placement hash the caller made with
    /// [`placement`] and this memo's seed (to pick one of several memos by it first).
    fn get_placed<R>(
        &mut self,
        k: Key<'_>,
        hash: u64,
        copy: impl FnOnce(&V) -> R,
    ) -> Result<R, Miss> {
        if !self.may_keep(k) {
            self.misses += 1;
            return Err(Miss {
                hash: 0,
                keep: false,
                digest: None,
            });
        }
        let pair = pair(self.slots.len(), hash);
        let mut d = None;
        for e in self.slots[pair].iter_mut().flatten() {
            if e.hash == hash && e.is(k, &mut d, self.secret.as_ref()) {
                self.hits += 1;
                e.used = true;
                return Ok(copy(&e.value));
            }
        }
        if let Some(e) = self.window.find(hash, k, &mut d, self.secret.as_ref()) {
            self.hits += 1;
            let answer = copy(&e.value);
            // Met again while in the window: it joins the slots as a body met twice does.
            if let Some(e) = self.window.remove(hash) {
                match self.room(hash, e.bytes) {
                    Some(i) => self.put(i, e),
                    None => self.window.push(hash, e),
                }
            }
            return Ok(answer);
        }
        self.misses += 1;
        Err(Miss {
            hash,
            keep: true,
            digest: d,
        })
    }

    /// Offers the value made for `k` after `miss`, holding `value_bytes` beyond the entry
    /// and the key; kept or not by the policy of the module documentation. `make` gives
    /// the value to keep, and is called only when it is kept.
    pub fn offer(&mut self, miss: Miss, k: Key<'_>, value_bytes: usize, make: impl FnOnce() -> V) {
        if !miss.keep {
            return;
        }
        let hash = miss.hash;
        // Kept since the lookup missed (a memo shared by threads: another made it too).
        let mut d = miss.digest;
        if self.slots[pair(self.slots.len(), hash)]
            .iter()
            .flatten()
            .any(|e| e.hash == hash && e.is(k, &mut d, self.secret.as_ref()))
            || self
                .window
                .find(hash, k, &mut d, self.secret.as_ref())
                .is_some()
        {
            return;
        }
        let copied = match self.secret {
            Some(_) => 0,
            None => k.head.len() + k.body.len(),
        };
        let bytes = size_of::<Entry<V>>() + copied + value_bytes;
        if bytes > (self.limit + self.window.limit) / 16 {
            return;
        }
        let b = ((hash >> 32) as usize) & (self.seen.len() - 1);
        let recent = &mut self.seen[b];
        // Met again: a slot, or nothing. Met once: remembered, and the window.
        let slot = if recent.contains(&hash) {
            match self.room(hash, bytes) {
                Some(i) => Some(i),
                None => return,
            }
        } else {
            recent.rotate_right(1);
            recent[0] = hash;
            if !self.window.admits(bytes) {
                return;
            }
            None
        };
        let check = match self.secret {
            Some(s) => Check::Digest(d.unwrap_or_else(|| digest(&s, k))),
            None => {
                let mut key = Vec::with_capacity(k.head.len() + k.body.len());
                key.extend_from_slice(k.head);
                key.extend_from_slice(k.body);
                Check::Bytes {
                    key: key.into_boxed_slice(),
                    head_len: k.head.len(),
                }
            }
        };
        let e = Entry {
            hash,
            check,
            value: make(),
            bytes,
            used: false,
        };
        match slot {
            Some(i) => self.put(i, e),
            None => self.window.push(hash, e),
        }
    }

    /// A slot of `hash`'s pair for a new entry of `bytes`, with room made for it under the
    /// limit; `None` when the policy keeps it out: it takes an empty slot of its pair, else
    /// one whose entry went unused since it lost its mark; when both entries were used,
    /// they lose their marks (a second chance).
    fn room(&mut self, hash: u64, bytes: usize) -> Option<usize> {
        let pair = pair(self.slots.len(), hash);
        let free = pair.clone().find(|&j| self.slots[j].is_none());
        let unused = || {
            pair.clone()
                .find(|&j| self.slots[j].as_ref().is_some_and(|e| !e.used))
        };
        let Some(i) = free.or_else(unused) else {
            for e in self.slots[pair].iter_mut().flatten() {
                e.used = false;
            }
            return None;
        };
        self.take(i);
        // Over the limit, the clock hand gives up entries unused since it last passed
        // (clearing the mark of those used): nothing is marked meanwhile, so within two
        // turns it has given up every entry.
        while self.held + bytes > self.limit && self.entries > 0 {
            let j = self.hand;
            self.hand = (self.hand + 1) & (self.slots.len() - 1);
            if let Some(e) = &mut self.slots[j]
                && std::mem::take(&mut e.used)
            {
                continue;
            }
            if self.take(j) {
                self.evictions += 1;
            }
        }
        // Still over only when the empty slots alone nearly fill the limit.
        (self.held + bytes <= self.limit).then_some(i)
    }

    /// Puts `e` in the empty slot `i` (from [`Memo::room`]).
    fn put(&mut self, i: usize, mut e: Entry<V>) {
        e.used = false;
        self.held += e.bytes;
        self.entries += 1;
        self.slots[i] = Some(e);
    }

    /// Empties slot `i`; true when it held an entry.
    fn take(&mut self, i: usize) -> bool {
        match self.slots[i].take() {
            Some(e) => {
                self.held -= e.bytes;
                self.entries -= 1;
                true
            }
            None => false,
        }
    }

    /// Forgets every value kept (as in a new run); the counts carry on.
    pub fn clear(&mut self) {
        for i in 0..self.slots.len() {
            self.take(i);
        }
        self.seen.fill([0; SEEN_WAYS]);
        self.hand = 0;
        self.window.clear();
    }

    /// Slots the memo has.
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    /// What the memo holds now and has given up (evictions: entries the clock hand gave
    /// up).
    pub fn usage(&self) -> Usage {
        Usage {
            bytes: (self.held + self.window.held) as u64,
            limit: (self.limit + self.window.limit) as u64,
            entries: (self.entries + self.window.entries.len()) as u64,
            evictions: self.evictions + self.window.evictions,
        }
    }
}

/// Bodies met for the first time, each kept until the window's bytes push it out (oldest
/// first): a body met again meanwhile is answered, and joins the slots.
struct Window<V> {
    /// By placement hash (one entry per hash: a body whose hash another body in the window
    /// has is not kept here), with the place the entry took in `order`.
    entries: std::collections::HashMap<u64, (Entry<V>, u64), foldhash::fast::FixedState>,
    /// Placement hashes oldest first, with their places; a place no longer an entry's
    /// (the entry left) is skipped.
    order: std::collections::VecDeque<(u64, u64)>,
    /// The next place.
    next: u64,
    held: usize,
    limit: usize,
    /// Entries the window pushed out.
    evictions: u64,
}

/// Bytes a window entry costs beyond its own: its share of the map's buckets (at most half
/// full after a growth) and its place in the order.
const WINDOW_OVERHEAD: usize = 16 + 2 * (8 + 8 + 8);

impl<V> Window<V> {
    fn new(limit: usize) -> Window<V> {
        Window {
            entries: Default::default(),
            order: Default::default(),
            next: 0,
            held: 0,
            limit,
            evictions: 0,
        }
    }

    fn cost(bytes: usize) -> usize {
        bytes + WINDOW_OVERHEAD
    }

    /// An entry of `bytes` fits (at most a quarter of the window).
    fn admits(&self, bytes: usize) -> bool {
        Window::<V>::cost(bytes) <= self.limit / 4
    }

    /// `k`'s entry, if the window holds it.
    fn find(
        &self,
        hash: u64,
        k: Key<'_>,
        d: &mut Option<u128>,
        secret: Option<&Secret>,
    ) -> Option<&Entry<V>> {
        self.entries
            .get(&hash)
            .map(|(e, _)| e)
            .filter(|e| e.is(k, d, secret))
    }

    /// Takes the entry of `hash` out (its place in the order is skipped later).
    fn remove(&mut self, hash: u64) -> Option<Entry<V>> {
        let (e, _) = self.entries.remove(&hash)?;
        self.held -= Window::<V>::cost(e.bytes);
        Some(e)
    }

    /// Keeps `e` as the newest entry, pushing out the oldest to make room (none when the
    /// hash is another entry's).
    fn push(&mut self, hash: u64, e: Entry<V>) {
        let cost = Window::<V>::cost(e.bytes);
        if self.entries.contains_key(&hash) || cost > self.limit {
            return;
        }
        while self.held + cost > self.limit {
            let Some((h, place)) = self.order.pop_front() else {
                break;
            };
            if self.entries.get(&h).is_some_and(|(_, p)| *p == place)
                && let Some((old, _)) = self.entries.remove(&h)
            {
                self.held -= Window::<V>::cost(old.bytes);
                self.evictions += 1;
            }
        }
        // Places of entries that left (answered and moved to the slots) are dropped once
        // they are most of the order, so it stays within twice the entries the window can
        // hold (each costs at least `WINDOW_OVERHEAD`).
        if self.order.len() > 2 * self.entries.len() + 64 {
            let entries = &self.entries;
            self.order
                .retain(|(h, place)| entries.get(h).is_some_and(|(_, p)| p == place));
        }
        self.held += cost;
        self.order.push_back((hash, self.next));
        self.entries.insert(hash, (e, self.next));
        self.next += 1;
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
        self.held = 0;
    }
}

/// Parts of a [`Shared`] memo used by several threads (a power of two, at most 64).
const SHARED_PARTS: usize = 16;

/// A [`Memo`] several threads use (the workers of a pipeline: each sees only its own flows,
/// but a catalogue page goes to clients on all of them). In parts, each behind its own lock
/// and picked by the top bits of the placement hash (a part's slots and remembered hashes
/// are picked by the lower ones), so threads seldom wait on each other; one part when one
/// thread uses it. The lock is not held while a value is made after a miss: two threads
/// missing the same key meanwhile both make it, and the memo keeps one. Which thread finds
/// a value kept depends on timing, so hit counts may differ between runs; values never
/// differ from what making them gives.
pub struct Shared<V> {
    parts: Box<[Mutex<Memo<V>>]>,
    hasher: foldhash::fast::FixedState,
    max_body: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A memo has no invariant a panic elsewhere could break halfway: at worst it misses.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<V: Clone> Shared<V> {
    /// A memo for `threads` threads holding at most `limit` bytes in all; the other
    /// arguments as for [`Memo::new`].
    pub fn new(
        threads: usize,
        limit: usize,
        bytes_per_slot: usize,
        max_body: usize,
        seed: u64,
        identity: Identity,
        window_permille: usize,
    ) -> Shared<V> {
        let n = if threads > 1 { SHARED_PARTS } else { 1 };
        Shared {
            parts: (0..n)
                .map(|_| {
                    Mutex::new(Memo::new(
                        limit / n,
                        bytes_per_slot,
                        max_body,
                        seed,
                        identity,
                        window_permille,
                    ))
                })
                .collect(),
            hasher: foldhash::fast::FixedState::with_seed(seed),
            max_body,
        }
    }

    fn part(&self, hash: u64) -> MutexGuard<'_, Memo<V>> {
        lock(&self.parts[(hash >> 58) as usize & (self.parts.len() - 1)])
    }

    /// [`Memo::get_with`].
    pub fn get_with<R>(&self, k: Key<'_>, copy: impl FnOnce(&V) -> R) -> Result<R, Miss> {
        // Bodies never kept are not hashed (their part answers a miss not to offer).
        let hash = if keepable(k, self.max_body) {
            placement(&self.hasher, k)
        } else {
            0
        };
        self.part(hash).get_placed(k, hash, copy)
    }

    /// [`Memo::offer`].
    pub fn offer(&self, miss: Miss, k: Key<'_>, value_bytes: usize, make: impl FnOnce() -> V) {
        if miss.keep {
            self.part(miss.hash).offer(miss, k, value_bytes, make);
        }
    }

    /// Forgets every value kept (as in a new run); the counts carry on.
    pub fn clear(&self) {
        for p in &*self.parts {
            lock(p).clear();
        }
    }

    /// What the memo holds now and has given up, over all its parts.
    pub fn usage(&self) -> Usage {
        self.parts.iter().fold(Usage::default(), |sum, p| {
            let u = lock(p).usage();
            Usage {
                bytes: sum.bytes + u.bytes,
                limit: sum.limit + u.limit,
                entries: sum.entries + u.entries,
                evictions: sum.evictions + u.evictions,
            }
        })
    }

    /// Slots of all its parts.
    #[cfg(test)]
    pub fn slots(&self) -> usize {
        self.parts.iter().map(|p| lock(p).slots()).sum()
    }

    /// Parts it has.
    #[cfg(test)]
    pub fn parts(&self) -> usize {
        self.parts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key<'a>(head: &'a [u8], body: &'a [u8]) -> Key<'a> {
        Key { head, body }
    }

    /// Looks `k` up; on a miss, offers `value`. True on a hit.
    fn visit(m: &mut Memo<u32>, k: Key<'_>, value: u32) -> bool {
        match m.get(k) {
            Ok(v) => {
                assert_eq!(v, value, "a hit gives the value kept for these bytes");
                true
            }
            Err(miss) => {
                m.offer(miss, k, 0, || value);
                false
            }
        }
    }

    /// Kept the second time a body is met; found by head and body, never across the
    /// boundary between them.
    #[test]
    fn kept_when_met_again_and_found_by_exact_bytes() {
        let mut m = Memo::new(1 << 20, 1024, 4096, 1, Identity::Bytes, 0);
        assert!(!visit(&mut m, key(b"a", b"bc"), 1));
        assert_eq!(m.usage().entries, 0, "met once: only remembered");
        assert!(!visit(&mut m, key(b"a", b"bc"), 1));
        assert_eq!(m.usage().entries, 1);
        assert!(visit(&mut m, key(b"a", b"bc"), 1));
        // The same bytes split differently are another key.
        assert!(m.get(key(b"ab", b"c")).is_err());
        assert!(m.get(key(b"a", b"bd")).is_err());
        assert_eq!((m.hits, m.misses), (1, 4));
        m.clear();
        assert_eq!(m.usage().entries, 0);
        assert!(m.get(key(b"a", b"bc")).is_err());
    }

    /// Told apart by digest: found again by head and body, never across the boundary
    /// between them nor by a body of the same placement hash; an entry is accounted
    /// without its body, so the same limit holds more of them.
    #[test]
    fn digest_identity_finds_the_same_bytes_and_holds_more() {
        let mut m = Memo::new(1 << 20, 1024, 4096, 1, Identity::Digest, 0);
        assert!(m.secret.is_some(), "the random source gave a key");
        assert!(!visit(&mut m, key(b"a", b"bc"), 1));
        assert!(!visit(&mut m, key(b"a", b"bc"), 1));
        assert_eq!(m.usage().entries, 1);
        assert!(visit(&mut m, key(b"a", b"bc"), 1));
        assert!(m.get(key(b"ab", b"c")).is_err());
        assert!(m.get(key(b"", b"abc")).is_err());
        assert!(m.get(key(b"a", b"bd")).is_err());

        // An entry whose placement hash is another body's: the digest tells them apart
        // (the hash is forged here; a crafted body cannot forge the digest's key).
        let hash = m.place(key(b"a", b"bc"));
        for e in m.slots.iter_mut().flatten() {
            assert_eq!(e.hash, hash);
            assert!(matches!(e.check, Check::Digest(_)));
        }
        let k = key(b"a", b"xyz");
        let mut d = None;
        let forged = Entry {
            hash,
            check: Check::Digest(digest(&m.secret.unwrap(), key(b"a", b"bc"))),
            value: 7u32,
            bytes: 0,
            used: false,
        };
        assert!(!forged.is(k, &mut d, m.secret.as_ref()));
        assert_eq!(
            d,
            Some(digest(&m.secret.unwrap(), k)),
            "made once, handed back"
        );
        assert!(forged.is(key(b"a", b"bc"), &mut None, m.secret.as_ref()));

        // Another secret gives other digests of the same bytes.
        let (a, b) = (secret().unwrap(), secret().unwrap());
        assert_ne!(a, b);
        assert_ne!(digest(&a, k), digest(&b, k));

        // The same bodies, kept by bytes and by digest in the same limit.
        let limit = 128 * 1024;
        let held = |identity| {
            let mut m = Memo::new(limit, 256, 4096, 4, identity, 0);
            for i in 0..2_000u32 {
                let body = format!("{i:04}{}", "b".repeat(1000));
                visit(&mut m, key(b"h", body.as_bytes()), i);
                visit(&mut m, key(b"h", body.as_bytes()), i);
                assert!(m.usage().bytes <= limit as u64, "{:?}", m.usage());
            }
            let hits = (0..2_000u32)
                .filter(|i| {
                    let body = format!("{i:04}{}", "b".repeat(1000));
                    m.get(key(b"h", body.as_bytes())).ok() == Some(*i)
                })
                .count();
            (m.usage().entries as usize, hits)
        };
        let (by_bytes, by_digest) = (held(Identity::Bytes), held(Identity::Digest));
        assert!(
            by_digest.0 > 4 * by_bytes.0,
            "{by_digest:?} against {by_bytes:?}"
        );
        assert_eq!(by_digest.0, by_digest.1, "every entry kept is found again");
        assert_eq!(by_bytes.0, by_bytes.1);
    }

    /// Bodies met again and again stay while a stream of others passes through, and the
    /// memo stays within its limit, counting what it gave up.
    #[test]
    fn popular_bodies_stay_within_the_limit() {
        let limit = 256 * 1024;
        let mut m = Memo::new(limit, 1024, 4096, 2, Identity::Bytes, 0);
        let popular: Vec<Vec<u8>> = (0..8).map(|i| vec![b'p' ^ i; 700]).collect();
        let mut popular_hits = 0;
        for round in 0..300u32 {
            for (i, b) in popular.iter().enumerate() {
                let hit = visit(&mut m, key(b"", b), i as u32);
                if round >= 2 {
                    popular_hits += u32::from(hit);
                }
            }
            for j in 0..6u32 {
                let page = format!("{round}-{j}-{}", "x".repeat(1900));
                visit(&mut m, key(b"", page.as_bytes()), 0);
                visit(&mut m, key(b"", page.as_bytes()), 0);
                assert!(m.usage().bytes <= limit as u64, "{:?}", m.usage());
            }
        }
        assert!(
            m.usage().evictions > 0,
            "the passing bodies overflow the limit"
        );
        assert_eq!(popular_hits, 298 * 8);
        // Over the largest body, or a sixteenth of the limit: never kept.
        let big = vec![b'b'; 4097];
        for _ in 0..3 {
            assert!(!visit(&mut m, key(b"", &big), 9));
        }
        let mut small = Memo::new(32 * 1024, 1024, 4096, 3, Identity::Bytes, 0);
        let over_a_sixteenth = vec![b's'; 3000];
        for _ in 0..3 {
            assert!(!visit(&mut small, key(b"", &over_a_sixteenth), 9));
        }
        assert_eq!(small.usage().entries, 0);
        let mut off = Memo::<u32>::new(0, 1024, 4096, 3, Identity::Bytes, 0);
        for _ in 0..3 {
            assert!(!visit(&mut off, key(b"", b"x"), 1));
        }
        assert_eq!(off.usage(), Usage::default());
    }

    /// With a window: a body met once is answered when met again while it waits there,
    /// and then sits in the slots; bodies met once push the oldest out of the window
    /// (counted), the memo stays within its limit, and a body pushed out is kept the next
    /// time it is met, as a body met twice always was.
    #[test]
    fn the_window_answers_bodies_met_again_soon() {
        let limit = 64 * 1024;
        let mut m = Memo::new(limit, 256, 4096, 5, Identity::Digest, 250);
        assert_eq!(m.window.limit, limit / 1000 * 250);
        assert!(!visit(&mut m, key(b"h", b"first"), 1));
        assert_eq!((m.window.entries.len(), m.entries), (1, 0));
        assert!(visit(&mut m, key(b"h", b"first"), 1));
        assert_eq!((m.window.entries.len(), m.entries), (0, 1));
        assert!(visit(&mut m, key(b"h", b"first"), 1));
        // A stream of bodies met once: the window keeps the latest, pushes out the rest.
        let body = |i: u32| format!("{i:05}{}", "w".repeat(300));
        for i in 0..400u32 {
            assert!(!visit(&mut m, key(b"h", body(i).as_bytes()), i));
            assert!(m.usage().bytes <= limit as u64, "{:?}", m.usage());
            assert!(m.window.held <= m.window.limit);
            assert!(m.window.order.len() <= 2 * m.window.entries.len() + 65);
        }
        assert!(m.window.evictions > 0 && m.usage().evictions >= m.window.evictions);
        assert!(
            visit(&mut m, key(b"h", body(399).as_bytes()), 399),
            "still waiting"
        );
        assert!(
            !visit(&mut m, key(b"h", body(0).as_bytes()), 0),
            "pushed out"
        );
        assert!(
            visit(&mut m, key(b"h", body(0).as_bytes()), 0),
            "kept when met again"
        );
        assert!(visit(&mut m, key(b"h", b"first"), 1));
        m.clear();
        assert_eq!(m.usage().entries, 0);
        assert_eq!(m.window.held, 0);
        assert!(m.get(key(b"h", body(399).as_bytes())).is_err());
    }

    proptest::proptest! {
        /// Any stream of lookups over few bodies, in few slots (so they share pairs and
        /// the window's hashes), with any window: every answer is the value made for the
        /// key looked up, the bytes stay within the limit, the window's order stays
        /// within twice the entries it can hold, and the same stream gives the same answers and counts
        /// again (fixed placement).
        #[test]
        fn with_any_window_answers_are_the_keys_and_bounds_hold(
            window in 0usize..600,
            limit in 12_000usize..60_000,
            identity in proptest::prop_oneof![
                proptest::strategy::Just(Identity::Bytes),
                proptest::strategy::Just(Identity::Digest)
            ],
            stream in proptest::collection::vec((0u32..40, 0usize..3), 1..400),
        ) {
            let run = || {
                let mut m = Memo::new(limit, 512, 2048, 9, identity, window);
                let mut answers = Vec::new();
                for (body, head) in &stream {
                    let head = [b'a' + *head as u8];
                    let b = format!("{body}{}", "z".repeat(*body as usize * 37 % 900));
                    let value = body * 10 + u32::from(head[0] - b'a');
                    let k = key(&head, b.as_bytes());
                    answers.push(visit(&mut m, k, value));
                    proptest::prop_assert!(m.usage().bytes <= limit as u64, "{:?}", m.usage());
                    proptest::prop_assert!(m.window.held <= m.window.limit);
                    // At most twice the entries the window can hold, whatever left it.
                    proptest::prop_assert!(
                        m.window.order.len() <= 2 * (m.window.limit / WINDOW_OVERHEAD) + 65
                    );
                }
                Ok((answers, m.hits, m.misses, m.usage()))
            };
            let first = run()?;
            proptest::prop_assert_eq!(first, run()?);
        }
    }
}
