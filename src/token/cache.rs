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
//! entries it used last ([`NEAR_SLOTS`]): a device's token arrives every few requests, and
//! a hit there costs one array probe instead of the shared cache's bookkeeping. The facts
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

/// One thread's recently used entries, tagged with the cache they came from.
struct Near {
    slots: Vec<Option<(u64, Digest, Arc<Entry>)>>,
}

thread_local! {
    static NEAR: RefCell<Near> = RefCell::new(Near { slots: vec![None; NEAR_SLOTS] });
}

/// Caches are told apart in the near tables by a process-unique id.
static NEXT_CACHE_ID: AtomicU64 = AtomicU64::new(1);

fn near_slot(digest: &Digest) -> usize {
    // Digests are SHA-256 outputs: any bytes are uniformly spread.
    (u16::from_le_bytes([digest[0], digest[1]]) as usize) & (NEAR_SLOTS - 1)
}

fn near_get(id: u64, digest: &Digest) -> Option<Arc<Entry>> {
    NEAR.with(|n| match &n.borrow().slots[near_slot(digest)] {
        Some((i, d, e)) if *i == id && d == digest => Some(Arc::clone(e)),
        _ => None,
    })
}

fn near_put(id: u64, digest: &Digest, entry: &Arc<Entry>) {
    NEAR.with(|n| n.borrow_mut().slots[near_slot(digest)] = Some((id, *digest, Arc::clone(entry))));
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

    /// The entry for `digest` if present and judged with key generation `generation`.
    pub fn get(&self, digest: &Digest, generation: u64) -> Option<Arc<Entry>> {
        let hit = self.inner.as_ref().and_then(|c| {
            match near_get(self.id, digest) {
                Some(e) => Some(e),
                None => {
                    let e = c.get(digest)?;
                    near_put(self.id, digest, &e);
                    Some(e)
                }
            }
            .filter(|e| e.generation == generation)
        });
        let counter = if hit.is_some() {
            &self.counters.hits
        } else {
            &self.counters.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        hit
    }

    /// Stores `facts` learnt at packet time `now` (seconds) and returns the shared entry.
    pub fn insert(
        &self,
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
            near_put(self.id, &digest, &entry);
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

    #[test]
    fn hits_misses_generations_and_bounds() {
        let cache = VerdictCache::new(100);
        let d = [7u8; 32];
        assert!(cache.get(&d, 0).is_none());
        cache.insert(d, facts(2000.0), 0, 1000.0, 0.0);
        assert!(cache.get(&d, 0).is_some());
        // A key-set change makes the entry stale.
        assert!(cache.get(&d, 1).is_none());
        assert_eq!(cache.counters.hits.load(Ordering::Relaxed), 1);
        assert_eq!(cache.counters.misses.load(Ordering::Relaxed), 2);
        for i in 0..2000u32 {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&i.to_le_bytes());
            cache.insert(k, facts(2000.0), 0, 1000.0, 0.0);
        }
        assert!(cache.entry_count() <= 100, "{}", cache.entry_count());
        assert!(cache.counters.evictions.load(Ordering::Relaxed) > 0);
    }

    #[test]
    fn near_table_keeps_caches_and_generations_apart() {
        let a = VerdictCache::new(100);
        let b = VerdictCache::new(100);
        let d = [9u8; 32];
        a.insert(d, facts(2000.0), 0, 1000.0, 0.0);
        // Same thread, same digest, another cache: not a hit.
        assert!(b.get(&d, 0).is_none());
        assert!(a.get(&d, 0).is_some());
        // A newer key generation judges the token again, near table or not.
        assert!(a.get(&d, 1).is_none());
        // Another thread sees the shared entry (and fills its own near table).
        std::thread::scope(|s| {
            s.spawn(|| assert!(a.get(&d, 0).is_some()));
        });
        // A digest landing on the same slot replaces the near entry; both still hit.
        let mut e = d;
        e[5] ^= 1;
        a.insert(e, facts(3000.0), 0, 1000.0, 0.0);
        assert_eq!(a.get(&d, 0).map(|x| x.facts.exp), Some(2000.0));
        assert_eq!(a.get(&e, 0).map(|x| x.facts.exp), Some(3000.0));
        assert_eq!(a.counters.hits.load(Ordering::Relaxed), 4);
        assert_eq!(a.counters.misses.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let cache = VerdictCache::new(0);
        cache.insert([1; 32], facts(2000.0), 0, 1000.0, 0.0);
        assert!(cache.get(&[1; 32], 0).is_none());
        assert_eq!(cache.entry_count(), 0);
    }
}
