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
        VerdictCache { inner, counters }
    }

    /// The entry for `digest` if present and judged with key generation `generation`.
    pub fn get(&self, digest: &Digest, generation: u64) -> Option<Arc<Entry>> {
        let hit = self
            .inner
            .as_ref()
            .and_then(|c| c.get(digest))
            .filter(|e| e.generation == generation);
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
    fn zero_capacity_caches_nothing() {
        let cache = VerdictCache::new(0);
        cache.insert([1; 32], facts(2000.0), 0, 1000.0, 0.0);
        assert!(cache.get(&[1; 32], 0).is_none());
        assert_eq!(cache.entry_count(), 0);
    }
}
