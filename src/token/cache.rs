//! The verified-token cache: a token's signature is checked once, not once per request.
//!
//! Input: the SHA-256 digest of a token and its [`Inspected`] facts. Output: those facts on
//! later requests carrying the same token. Owned by one family, shared by every worker
//! (moka: concurrent, bounded by entry count, TinyLFU admission so a flood of one-off forged
//! tokens does not push out the tokens real devices keep sending). Keys are digests of
//! traffic, hashed with a per-process seed. An entry lives until its token's `exp` (measured
//! from the packet time it was stored at, at least [`MIN_TTL`] so a stream of expired tokens
//! still hits, at most [`MAX_TTL`]). Entries carry the key-set generation they were judged
//! with; after a JWKS change they are judged again. Hits, misses and evictions are counted.
//!
//! In front of the shared cache each thread keeps a small direct-mapped table of the
//! tokens it used last ([`NEAR_SLOTS`]), found by their exact bytes: a device's token
//! arrives every few requests, and a hit there costs one probe, with neither a SHA-256 of
//! the token nor the shared cache's bookkeeping. The facts
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

/// Entries each thread keeps in front of the shared cache (a power of two).
const NEAR_SLOTS: usize = 1024;
/// Longest token kept in a near table (longer ones go straight to the shared cache).
const NEAR_MAX_TOKEN: usize = 2048;

/// One recently used token: found by its bytes, so its digest is not computed again.
struct NearEntry {
    /// The cache it came from.
    cache: u64,
    token: Box<[u8]>,
    digest: Digest,
    entry: Arc<Entry>,
}

/// One thread's recently used tokens. Slots are picked by a seeded hash of the token
/// (per thread, random): crafted tokens can at worst evict each other, and a hit needs
/// the exact bytes.
struct Near {
    slots: Vec<Option<NearEntry>>,
    hasher: foldhash::fast::RandomState,
}

thread_local! {
    static NEAR: RefCell<Near> = RefCell::new(Near {
        slots: std::iter::repeat_with(|| None).take(NEAR_SLOTS).collect(),
        hasher: foldhash::fast::RandomState::default(),
    });
}

/// Caches are told apart in the near tables by a process-unique id.
static NEXT_CACHE_ID: AtomicU64 = AtomicU64::new(1);

impl Near {
    fn slot(&self, token: &[u8]) -> usize {
        use std::hash::BuildHasher;
        (self.hasher.hash_one(token) as usize) & (NEAR_SLOTS - 1)
    }
}

fn near_get(cache: u64, token: &[u8]) -> Option<(Digest, Arc<Entry>)> {
    NEAR.with(|n| {
        let n = n.borrow();
        match &n.slots[n.slot(token)] {
            Some(e) if e.cache == cache && *e.token == *token => {
                Some((e.digest, Arc::clone(&e.entry)))
            }
            _ => None,
        }
    })
}

fn near_put(cache: u64, token: &[u8], digest: &Digest, entry: &Arc<Entry>) {
    if token.len() > NEAR_MAX_TOKEN {
        return;
    }
    NEAR.with(|n| {
        let mut n = n.borrow_mut();
        let i = n.slot(token);
        n.slots[i] = Some(NearEntry {
            cache,
            token: token.into(),
            digest: *digest,
            entry: Arc::clone(entry),
        });
    });
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

/// Bounded token cache for one family (capacity 0: no caching).
pub struct VerdictCache {
    inner: Option<Cache<Digest, Arc<Entry>, foldhash::fast::RandomState>>,
    pub counters: Arc<CacheCounters>,
    /// This cache's tag in the threads' near tables.
    id: u64,
}

impl VerdictCache {
    pub fn new(capacity: u64) -> VerdictCache {
        let counters = Arc::new(CacheCounters::default());
        let inner = (capacity > 0).then(|| {
            let c = Arc::clone(&counters);
            Cache::builder()
                .max_capacity(capacity)
                .expire_after(Ttl)
                .eviction_listener(move |_k, _v, cause| {
                    if cause == RemovalCause::Size {
                        c.evictions.fetch_add(1, Ordering::Relaxed);
                    }
                })
                .build_with_hasher(foldhash::fast::RandomState::default())
        });
        VerdictCache {
            inner,
            counters,
            id: NEXT_CACHE_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The digest of `token`, and its entry if present and judged with key generation
    /// `generation`. A token this thread used lately is found by its bytes, without
    /// hashing it again.
    pub fn lookup(&self, token: &[u8], generation: u64) -> (Digest, Option<Arc<Entry>>) {
        let near = self.inner.as_ref().and_then(|_| near_get(self.id, token));
        let (digest, hit) = match near {
            Some((digest, e)) => (digest, Some(e)),
            None => {
                let digest = super::sha256(token);
                let e = self.inner.as_ref().and_then(|c| c.get(&digest));
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
        let entry = Arc::new(Entry {
            facts,
            generation,
            ttl,
        });
        if let Some(c) = &self.inner {
            c.insert(digest, Arc::clone(&entry));
            near_put(self.id, token, &digest, &entry);
        }
        entry
    }

    pub fn entry_count(&self) -> u64 {
        self.inner.as_ref().map_or(0, |c| {
            c.run_pending_tasks();
            c.entry_count()
        })
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
        let cache = VerdictCache::new(100);
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
        let a = VerdictCache::new(100);
        let b = VerdictCache::new(100);
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

    #[test]
    fn zero_capacity_caches_nothing() {
        let cache = VerdictCache::new(0);
        put(&cache, b"t", 2000.0);
        assert!(cache.lookup(b"t", 0).1.is_none());
        assert_eq!(cache.entry_count(), 0);
    }
}
