//! The verified-token cache: a token's signature is checked once, not once per request.
//!
//! Input: the SHA-256 digest of a token and its [`Inspected`] facts. Output: those facts on
//! later requests carrying the same token. Owned by one family, shared by every worker
//! (moka: concurrent, bounded in bytes, the lesser of `cache_entries` entries and the
//! family's part of the memory budget's `tokens` share, each entry weighed as its fixed
//! size plus the claims it keeps). Tokens that fail verification are kept in their own
//! eighth of the bytes, so a flood of one-off forged tokens never pushes out the verified
//! tokens real devices keep sending; within each part moka's TinyLFU admission favours
//! the tokens read often. Keys are digests of
//! traffic, hashed with a per-process seed. An entry lives until its token's `exp` (measured
//! from the packet time it was stored at, at least [`MIN_TTL`] so a stream of expired tokens
//! still hits, at most [`MAX_TTL`]). Entries carry the key-set generation they were judged
//! with; after a JWKS change they are judged again. Hits, misses and evictions are counted.
//!
//! In front of the shared cache each thread keeps a small two-way table of the tokens it
//! used last ([`NEAR_SLOTS`]), found by their exact bytes: a device's token arrives every
//! few requests, and a hit there costs at most two probes, with neither a SHA-256 of the
//! token nor the shared cache's bookkeeping. A token may sit in either slot of its pair,
//! and a new one replaces the pair's less recently used: with a slot each, two busy
//! devices whose tokens hash alike evicted each other on every request (9.5% of lookups
//! missed on the realistic capture, 5,287 distinct tokens in 4,096 slots). 8,192 slots hold
//! the tokens of a few thousand devices and their users at once (the same capture's
//! devices and users each send one of each): there, with 4,096 slots 41,399 of 745,172
//! lookups missed and hashed their token again, with 8,192 18,541 (2.5%), most of them
//! tokens met for the first time. The facts
//! of a token never change for a key generation (validity is judged per request on packet
//! time), so a near entry that outlives its shared copy gives the same verdicts.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::notification::RemovalCause;
use moka::sync::Cache;

use super::jws::Inspected;

/// Shortest time an entry is kept (expired, malformed and forged tokens alike).
pub const MIN_TTL: Duration = Duration::from_secs(300);
/// Longest time an entry is kept, whatever its `exp` says.
pub const MAX_TTL: Duration = Duration::from_secs(86_400);

/// A token digest.
pub type Digest = [u8; 32];

/// Entries each thread keeps in front of the shared cache (a power of two): about 4 MiB
/// when full of typical tokens (a few hundred bytes each), at most 17 MiB of the longest.
const NEAR_SLOTS: usize = 8192;
/// Longest token kept in a near table (longer ones go straight to the shared cache).
const NEAR_MAX_TOKEN: usize = 2048;

/// One recently used token: found by its bytes, so its digest is not computed again.
struct NearEntry {
    /// The cache it came from.
    cache: u64,
    token: Box<[u8]>,
    digest: Digest,
    entry: Arc<Entry>,
    /// Hits since it was put here.
    hits: u32,
    /// The thread's use count when it was last used: the less recent of a pair goes.
    used: u64,
}

/// One thread's recently used tokens. Slots are picked by a seeded hash of the token
/// (per thread, random): crafted tokens can at worst evict each other, and a hit needs
/// the exact bytes.
struct Near {
    slots: Vec<Option<NearEntry>>,
    hasher: foldhash::fast::RandomState,
    /// Uses so far (hits and puts), the clock of [`NearEntry::used`].
    uses: u64,
}

thread_local! {
    static NEAR: RefCell<Near> = RefCell::new(Near {
        slots: std::iter::repeat_with(|| None).take(NEAR_SLOTS).collect(),
        hasher: foldhash::fast::RandomState::default(),
        uses: 0,
    });
}

/// Caches are told apart in the near tables by a process-unique id.
static NEXT_CACHE_ID: AtomicU64 = AtomicU64::new(1);

impl Near {
    /// A use of `token`'s slots: the two slots it may sit in, and the use's time on this
    /// table's clock ([`NearEntry::used`]).
    fn touch(&mut self, token: &[u8]) -> (std::ops::Range<usize>, u64) {
        use std::hash::BuildHasher;
        self.uses += 1;
        let pair = crate::memo::pair(NEAR_SLOTS, self.hasher.hash_one(slot_part(token)));
        (pair, self.uses)
    }
}

/// Bytes at the end of a token that pick its slots, with its length.
const SLOT_TAIL: usize = 32;

/// What picks a token's slots: its length and its last [`SLOT_TAIL`] bytes, not all of its
/// few hundred. A JWS ends with its signature, where two tokens differ (their headers, and
/// often most of their claims, are alike), so real tokens spread as well as when the whole
/// token was hashed. Crafted tokens sharing an ending share a pair and evict each other;
/// one made to end like a real token can push it out of a near table, sending that token
/// to the shared cache, as a flood of crafted tokens could before. A hit still needs the
/// exact bytes.
pub(crate) fn slot_part(token: &[u8]) -> (usize, &[u8]) {
    (
        token.len(),
        token
            .get(token.len().saturating_sub(SLOT_TAIL)..)
            .unwrap_or(token),
    )
}

impl NearEntry {
    /// Whether this is `token` from cache `cache`.
    fn is(&self, cache: u64, token: &[u8]) -> bool {
        self.cache == cache && *self.token == *token
    }
}

/// Near hits between touches of the shared cache: its admission policy judges entries by
/// how often they are read, and a token served from near tables would otherwise look
/// unused there and lose its place to a flood of one-off tokens. A touch is a read of the
/// shared cache, whose bookkeeping (the read recorded, then replayed into its frequency
/// sketch and queues) made the touches at every 8th hit 2.5% of all cycles on the
/// realistic capture. A device's token is read every few seconds over its few minutes of
/// life, so at every 32nd it still reads several times where a one-off token reads once;
/// forged floods are kept apart whatever the touches (see [`VerdictCache`]).
const TOUCH_EVERY: u32 = 32;

/// A near hit: the digest, the entry, and whether this hit should also be a read of the
/// shared cache (every [`TOUCH_EVERY`]th).
fn near_get(cache: u64, token: &[u8]) -> Option<(Digest, Arc<Entry>, bool)> {
    NEAR.with(|n| {
        let n = &mut *n.borrow_mut();
        let (pair, now) = n.touch(token);
        let e = n.slots[pair]
            .iter_mut()
            .flatten()
            .find(|e| e.is(cache, token))?;
        e.hits = e.hits.wrapping_add(1);
        e.used = now;
        Some((
            e.digest,
            Arc::clone(&e.entry),
            e.hits.is_multiple_of(TOUCH_EVERY),
        ))
    })
}

fn near_put(cache: u64, token: &[u8], digest: &Digest, entry: &Arc<Entry>) {
    if token.len() > NEAR_MAX_TOKEN {
        return;
    }
    NEAR.with(|n| {
        let n = &mut *n.borrow_mut();
        let (pair, used) = n.touch(token);
        // The token's own slot (stored again after a decoding for display), else an empty
        // one, else the less recently used (the first of equals).
        let Some(slot) = n.slots[pair].iter_mut().min_by_key(|s| match s {
            Some(e) if e.is(cache, token) => (0, 0),
            Some(e) => (1, e.used),
            None => (0, 1),
        }) else {
            return;
        };
        *slot = Some(NearEntry {
            cache,
            token: token.into(),
            digest: *digest,
            entry: Arc::clone(entry),
            hits: 0,
            used,
        });
    });
}

/// A token found in this thread's near table ([`VerdictCache::near`]).
pub struct NearHit {
    digest: Digest,
    entry: Arc<Entry>,
    /// This hit should also be a read of the shared cache.
    touch: bool,
}

impl NearHit {
    /// The token was judged with key generation `generation`: the lookup will hit.
    pub fn answers(&self, generation: u64) -> bool {
        self.entry.generation == generation
    }
}

/// What the cache keeps per token.
#[derive(Debug)]
pub struct Entry {
    pub facts: Inspected,
    /// Key-set generation the facts were established with.
    pub generation: u64,
    ttl: Duration,
}

#[derive(Default, Debug)]
pub struct CacheCounters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub evictions: AtomicU64,
}

struct Ttl;

impl moka::Expiry<Digest, Arc<Entry>> for Ttl {
    fn expire_after_create(
        &self,
        _key: &Digest,
        value: &Arc<Entry>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// Bytes charged per entry besides its strings: the digest key, the shared entry and its
/// reference count, and the cache's own bookkeeping per entry (moka keeps a node in its
/// hash table, its access-order deque and its timer wheel: about 150 bytes).
pub const ENTRY_BYTES: u64 = (size_of::<Digest>() + size_of::<Entry>() + 16 + 160) as u64;

/// Bytes one entry is charged: the fixed part and the claims it keeps.
fn weight(e: &Entry) -> u32 {
    let strings = e.facts.subject.as_ref().map_or(0, |s| s.len())
        + e.facts.ip.as_ref().map_or(0, |s| s.len());
    u32::try_from(ENTRY_BYTES as usize + strings).unwrap_or(u32::MAX)
}

/// Share of a family's cache bytes kept for tokens that failed verification (forged,
/// malformed, unknown key): a flood of one-off forged tokens only ever pushes out other
/// failures, never a genuine device's verified token.
const FAILED_SHARE_DIVISOR: u64 = 8;

type Inner = Cache<Digest, Arc<Entry>, foldhash::fast::RandomState>;

fn build(limit_bytes: u64, counters: &Arc<CacheCounters>) -> Option<Inner> {
    (limit_bytes >= ENTRY_BYTES).then(|| {
        let c = Arc::clone(counters);
        Cache::builder()
            .max_capacity(limit_bytes)
            .weigher(|_k, v: &Arc<Entry>| weight(v))
            .expire_after(Ttl)
            .eviction_listener(move |_k, _v, cause| {
                if cause == RemovalCause::Size {
                    c.evictions.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build_with_hasher(foldhash::fast::RandomState::default())
    })
}

/// Bounded token cache for one family (capacity 0: no caching), in two parts: tokens whose
/// signature verified (or could not be checked: no key), and tokens that failed.
pub struct VerdictCache {
    inner: Option<Inner>,
    failed: Option<Inner>,
    pub counters: Arc<CacheCounters>,
    /// This cache's tag in the threads' near tables.
    id: u64,
    /// Bytes it may hold.
    limit_bytes: u64,
}

/// A verdict whose token is kept with the verified ones.
fn trusted(v: crate::token::Verdict) -> bool {
    matches!(
        v,
        crate::token::Verdict::Valid | crate::token::Verdict::Unverified
    )
}

impl VerdictCache {
    /// A cache of at most `capacity` entries (of [`ENTRY_BYTES`] each) and `max_bytes`
    /// bytes in all (its share of the memory budget), whichever is less; an eighth of it
    /// holds failed tokens. Entries are weighed in bytes.
    pub fn new(capacity: u64, max_bytes: u64) -> VerdictCache {
        let counters = Arc::new(CacheCounters::default());
        let mut limit_bytes = capacity.saturating_mul(ENTRY_BYTES).min(max_bytes);
        if limit_bytes < ENTRY_BYTES {
            limit_bytes = 0;
        }
        let failed_bytes = limit_bytes / FAILED_SHARE_DIVISOR;
        let inner = build(limit_bytes - failed_bytes, &counters);
        let failed = build(failed_bytes, &counters);
        VerdictCache {
            inner,
            failed,
            counters,
            id: NEXT_CACHE_ID.fetch_add(1, Ordering::Relaxed),
            limit_bytes,
        }
    }

    /// The digest of `token`, and its entry if present and judged with key generation
    /// `generation`. A token this thread used lately is found by its bytes, without
    /// hashing it again. (The verifier looks at [`Self::near`] first and then calls
    /// [`Self::lookup_from`].)
    #[cfg(test)]
    pub fn lookup(&self, token: &[u8], generation: u64) -> (Digest, Option<Arc<Entry>>) {
        self.lookup_from(token, generation, self.near(token))
    }

    /// `token` as this thread used it lately, found by its bytes: what a lookup looks at
    /// first, for callers that want to know before they look the token up (a token found
    /// here was judged, so its form was checked). Each result is to be passed to
    /// [`Self::lookup_from`], which counts it.
    pub fn near(&self, token: &[u8]) -> Option<NearHit> {
        self.inner
            .as_ref()
            .and_then(|_| near_get(self.id, token))
            .map(|(digest, entry, touch)| NearHit {
                digest,
                entry,
                touch,
            })
    }

    /// What a near hit that answers for the current keys ([`NearHit::answers`]) gives a
    /// lookup: its digest and entry, counted as a hit.
    pub fn near_hit(&self, near: NearHit) -> (Digest, Arc<Entry>) {
        self.touch(&near);
        self.counters.hits.fetch_add(1, Ordering::Relaxed);
        (near.digest, near.entry)
    }

    /// Every [`TOUCH_EVERY`]th near hit is also a read of the shared cache holding it.
    fn touch(&self, near: &NearHit) {
        let part = if trusted(near.entry.facts.verdict) {
            &self.inner
        } else {
            &self.failed
        };
        if near.touch
            && let Some(c) = part
        {
            let _ = c.get(&near.digest);
        }
    }

    /// The digest of `token`, and its entry if present and judged with key generation
    /// `generation`, given what [`Self::near`] found for it (a near hit is not hashed
    /// again).
    pub fn lookup_from(
        &self,
        token: &[u8],
        generation: u64,
        near: Option<NearHit>,
    ) -> (Digest, Option<Arc<Entry>>) {
        let (digest, hit) = match near {
            Some(near) => {
                self.touch(&near);
                (near.digest, Some(near.entry))
            }
            None => {
                let digest = super::sha256(token);
                let e = self
                    .inner
                    .as_ref()
                    .and_then(|c| c.get(&digest))
                    .or_else(|| self.failed.as_ref().and_then(|c| c.get(&digest)));
                if let Some(e) = &e {
                    near_put(self.id, token, &digest, e);
                }
                (digest, e)
            }
        };
        let hit = hit.filter(|e| e.generation == generation);
        let counter = if hit.is_some() {
            &self.counters.hits
        } else {
            &self.counters.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        (digest, hit)
    }

    /// Stores `facts` about `token` (whose digest is `digest`) learnt at packet time `now`
    /// (seconds) and returns the shared entry.
    pub fn insert(
        &self,
        token: &[u8],
        digest: Digest,
        facts: Inspected,
        generation: u64,
        now: f64,
        leeway: f64,
    ) -> Arc<Entry> {
        let remaining = facts.exp + leeway - now;
        let ttl = if remaining.is_finite() && remaining > 0.0 {
            Duration::from_secs_f64(remaining.min(MAX_TTL.as_secs_f64())).max(MIN_TTL)
        } else {
            MIN_TTL
        };
        let part = if trusted(facts.verdict) {
            &self.inner
        } else {
            &self.failed
        };
        let entry = Arc::new(Entry {
            facts,
            generation,
            ttl,
        });
        if let Some(c) = part {
            c.insert(digest, Arc::clone(&entry));
            near_put(self.id, token, &digest, &entry);
        }
        entry
    }

    /// Bytes held now (entries weighed as [`weight`] charges them) and the limit.
    pub fn bytes(&self) -> (u64, u64) {
        let held: u64 = [&self.inner, &self.failed]
            .into_iter()
            .flatten()
            .map(|c| {
                c.run_pending_tasks();
                c.weighted_size()
            })
            .sum();
        (held, self.limit_bytes)
    }

    pub fn entry_count(&self) -> u64 {
        [&self.inner, &self.failed]
            .into_iter()
            .flatten()
            .map(|c| {
                c.run_pending_tasks();
                c.entry_count()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::Verdict;
    use crate::token::jws::Pay;

    fn facts(exp: f64) -> Inspected {
        Inspected {
            verdict: Verdict::Valid,
            exp,
            nbf: None,
            subject: None,
            ip: None,
            pay: Pay::Absent,
        }
    }

    /// Stores facts for `token` as the verifier does.
    fn put(cache: &VerdictCache, token: &[u8], exp: f64) {
        cache.insert(
            token,
            super::super::sha256(token),
            facts(exp),
            0,
            1000.0,
            0.0,
        );
    }

    #[test]
    fn hits_misses_generations_and_bounds() {
        let cache = VerdictCache::new(100, u64::MAX);
        let t = b"eyJ.token.seven";
        let (d, hit) = cache.lookup(t, 0);
        assert!(hit.is_none());
        assert_eq!(d, super::super::sha256(t));
        put(&cache, t, 2000.0);
        assert!(cache.lookup(t, 0).1.is_some());
        // A key-set change makes the entry stale.
        assert!(cache.lookup(t, 1).1.is_none());
        assert_eq!(cache.counters.hits.load(Ordering::Relaxed), 1);
        assert_eq!(cache.counters.misses.load(Ordering::Relaxed), 2);
        for i in 0..2000u32 {
            put(&cache, format!("tok-{i}").as_bytes(), 2000.0);
        }
        assert!(cache.entry_count() <= 100, "{}", cache.entry_count());
        assert!(cache.counters.evictions.load(Ordering::Relaxed) > 0);
    }

    #[test]
    fn near_table_keeps_caches_tokens_and_generations_apart() {
        let a = VerdictCache::new(100, u64::MAX);
        let b = VerdictCache::new(100, u64::MAX);
        let t = b"eyJ.near.one";
        put(&a, t, 2000.0);
        // Same thread, same token, another cache: not a hit.
        assert!(b.lookup(t, 0).1.is_none());
        let (d, hit) = a.lookup(t, 0);
        assert_eq!(d, super::super::sha256(t));
        assert_eq!(hit.map(|e| e.facts.exp), Some(2000.0));
        // A newer key generation judges the token again, near table or not.
        assert!(a.lookup(t, 1).1.is_none());
        // Another thread finds the shared entry (and fills its own near table).
        std::thread::scope(|s| {
            s.spawn(|| assert!(a.lookup(t, 0).1.is_some()));
        });
        // Many tokens: every one still resolves to its own facts and digest, whichever
        // slots they share.
        for i in 0..3000u32 {
            put(&a, format!("tok-{i}").as_bytes(), 3000.0 + f64::from(i));
        }
        for i in (0..3000u32).step_by(7) {
            let tok = format!("tok-{i}");
            let (d, hit) = a.lookup(tok.as_bytes(), 0);
            assert_eq!(d, super::super::sha256(tok.as_bytes()));
            if let Some(e) = hit {
                assert_eq!(e.facts.exp, 3000.0 + f64::from(i));
            }
        }
        // A token that only shares a prefix is another token.
        assert!(a.lookup(b"eyJ.near.on", 0).1.is_none());
        // Over-long tokens are still cached, just not near.
        let long = vec![b'x'; NEAR_MAX_TOKEN + 1];
        put(&a, &long, 4000.0);
        assert_eq!(a.lookup(&long, 0).1.map(|e| e.facts.exp), Some(4000.0));
    }

    /// Tokens whose near-table hashes agree in the bits that pick a slot, on this thread.
    fn colliding(n: usize) -> Vec<String> {
        use std::hash::BuildHasher;
        let low = |t: &str| {
            NEAR.with(|m| m.borrow().hasher.hash_one(slot_part(t.as_bytes()))) as usize
                & (NEAR_SLOTS - 1)
        };
        let first = low("tok-0");
        (0..)
            .map(|i| format!("tok-{i}"))
            .filter(|t| low(t) == first)
            .take(n)
            .collect()
    }

    #[test]
    fn near_table_keeps_two_tokens_of_a_slot_and_drops_the_less_recent() {
        std::thread::scope(|s| {
            // A fresh thread: an empty near table.
            s.spawn(|| {
                let cache = VerdictCache::new(100, u64::MAX);
                let near =
                    |t: &str| near_get(cache.id, t.as_bytes()).map(|(d, e, _)| (d, e.facts.exp));
                let t = colliding(3);
                put(&cache, t[0].as_bytes(), 2000.0);
                put(&cache, t[1].as_bytes(), 2001.0);
                // Two busy tokens of one slot both stay near (one slot each evicted the
                // other on every request).
                assert_eq!(
                    near(&t[0]),
                    Some((super::super::sha256(t[0].as_bytes()), 2000.0))
                );
                assert_eq!(
                    near(&t[1]),
                    Some((super::super::sha256(t[1].as_bytes()), 2001.0))
                );
                // The first is used again; a third token of the slot replaces the second.
                assert!(near(&t[0]).is_some());
                put(&cache, t[2].as_bytes(), 2002.0);
                assert_eq!(near(&t[2]).map(|(_, exp)| exp), Some(2002.0));
                assert_eq!(near(&t[0]).map(|(_, exp)| exp), Some(2000.0));
                assert!(near(&t[1]).is_none());
                // Stored again, a token keeps its own slot instead of taking the other.
                put(&cache, t[0].as_bytes(), 2010.0);
                assert_eq!(near(&t[0]).map(|(_, exp)| exp), Some(2010.0));
                assert_eq!(near(&t[2]).map(|(_, exp)| exp), Some(2002.0));
                // The evicted token is still in the shared cache.
                assert_eq!(
                    cache.lookup(t[1].as_bytes(), 0).1.map(|e| e.facts.exp),
                    Some(2001.0)
                );
            });
        });
    }

    /// Tokens that end alike (a forged payload under a real token's signature) share a
    /// pair of near slots, each is still found only by its exact bytes, and the ones
    /// pushed out are still in the shared cache.
    #[test]
    fn tokens_ending_alike_share_slots_but_never_answers() {
        std::thread::scope(|s| {
            s.spawn(|| {
                let cache = VerdictCache::new(100, u64::MAX);
                let sig = "x".repeat(SLOT_TAIL);
                let t: Vec<String> = (0..3).map(|i| format!("eyJ.payload-{i}.{sig}")).collect();
                let slots = |t: &str| NEAR.with(|n| n.borrow_mut().touch(t.as_bytes()).0);
                assert_eq!(slots(&t[0]), slots(&t[1]));
                assert_eq!(slots(&t[0]), slots(&t[2]));
                // The length picks too: of tokens ending alike but of eight other
                // lengths, some sit elsewhere (all eight agree once in 4,096^8).
                assert!(
                    (10..18)
                        .map(|i| format!("eyJ.payload-{}.{sig}", "y".repeat(i)))
                        .any(|o| slots(&o) != slots(&t[0]))
                );
                let near =
                    |t: &str| near_get(cache.id, t.as_bytes()).map(|(d, e, _)| (d, e.facts.exp));
                for (i, tok) in t.iter().enumerate() {
                    put(&cache, tok.as_bytes(), 2000.0 + i as f64);
                }
                // The pair holds the two latest, each with its own facts and digest.
                assert_eq!(near(&t[0]), None);
                for (i, tok) in t.iter().enumerate().skip(1) {
                    assert_eq!(
                        near(tok),
                        Some((super::super::sha256(tok.as_bytes()), 2000.0 + i as f64))
                    );
                }
                assert_eq!(
                    cache.lookup(t[0].as_bytes(), 0).1.map(|e| e.facts.exp),
                    Some(2000.0)
                );
            });
        });
    }

    /// Stores `verdict` facts for `token` as the verifier does.
    fn put_judged(cache: &VerdictCache, token: &[u8], verdict: Verdict) {
        let mut f = facts(2000.0);
        f.verdict = verdict;
        cache.insert(token, super::super::sha256(token), f, 0, 1000.0, 0.0);
    }

    /// Device tokens looked up from another thread (no near table): how many still hit.
    fn surviving(cache: &VerdictCache, devices: &[String]) -> usize {
        std::thread::scope(|s| {
            s.spawn(|| {
                devices
                    .iter()
                    .filter(|d| cache.lookup(d.as_bytes(), 0).1.is_some())
                    .count()
            })
            .join()
            .unwrap_or(0)
        })
    }

    /// Sixteen devices keep sending their tokens through a flood of 5,000 one-off tokens,
    /// each looked up once (a miss), judged `verdict` and stored.
    fn flood(cache: &VerdictCache, devices: &[String], verdict: Verdict) {
        for i in 0..5000u32 {
            if i % 16 == 0 {
                for d in devices {
                    if cache.lookup(d.as_bytes(), 0).1.is_none() {
                        put(cache, d.as_bytes(), 2000.0);
                    }
                }
            }
            let one_off = format!("one-off-{i}");
            assert!(cache.lookup(one_off.as_bytes(), 0).1.is_none());
            put_judged(cache, one_off.as_bytes(), verdict);
        }
    }

    fn devices() -> Vec<String> {
        (0..16).map(|i| format!("device-token-{i}")).collect()
    }

    /// A flood of forged tokens only ever pushes out other failures: every verified device
    /// token survives it, whatever the admission policy decides (deterministic: failures
    /// are kept apart, in their own eighth of the bytes). The byte share holds and the
    /// forged tokens' evictions are counted.
    #[test]
    fn a_forged_flood_never_pushes_out_verified_tokens() {
        let limit = 64 * ENTRY_BYTES;
        let cache = VerdictCache::new(100_000, limit);
        let devices = devices();
        flood(&cache, &devices, Verdict::BadSignature);
        let (held, lim) = cache.bytes();
        assert_eq!(lim, limit);
        assert!(held <= limit, "{held} > {limit}");
        assert!(cache.entry_count() <= 64, "{}", cache.entry_count());
        assert!(cache.counters.evictions.load(Ordering::Relaxed) > 0);
        assert_eq!(surviving(&cache, &devices), 16);
        // Forged tokens are cached too (in their part): the last one is a hit, here from
        // this thread's near table, which holds only what a part stored.
        assert!(cache.lookup(b"one-off-4999", 0).1.is_some());
    }

    /// The memory budget's share bounds the cache in bytes (below its entry count) when a
    /// flood of one-off tokens all verify too (a device minting tokens); over it entries
    /// are evicted and counted. Which verified tokens stay is then up to moka's TinyLFU
    /// admission, which is probabilistic (seeded hashes, aging, housekeeping timing), so it
    /// is not asserted here.
    #[test]
    fn byte_share_bounds_the_cache_under_a_verified_flood() {
        let limit = 64 * ENTRY_BYTES;
        let cache = VerdictCache::new(100_000, limit);
        flood(&cache, &devices(), Verdict::Valid);
        let (held, lim) = cache.bytes();
        assert_eq!(lim, limit);
        assert!(held <= limit, "{held} > {limit}");
        assert!(cache.entry_count() <= 64, "{}", cache.entry_count());
        assert!(cache.counters.evictions.load(Ordering::Relaxed) > 0);
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let cache = VerdictCache::new(0, u64::MAX);
        put(&cache, b"t", 2000.0);
        assert!(cache.lookup(b"t", 0).1.is_none());
        assert_eq!(cache.entry_count(), 0);
    }
}
