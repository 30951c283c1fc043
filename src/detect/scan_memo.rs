//! The workers' memo of recent response scans.
//!
//! An API sends the same bytes to many clients: a product page, a catalogue page or a
//! search result to every shopper, and the same profile or cart to a phone that polls it in
//! the background. On the realistic bench capture, 387,797 response scans are of 26,544
//! distinct bodies. A scan is a pure function of the body, its `Content-Type`,
//! whether the response may be served from a shared cache and whether returned ids are
//! wanted ([`exposure::scan_with`]), so a body met again gets the [`Scan`] made the first
//! time (one `Arc`, shared with the events that carry it) instead of being walked,
//! classified and allocated again.
//!
//! A compressed answer is found by its bytes as sent: the parser leaves an HTTP/1.x
//! response's content codings for its scan ([`crate::http::HttpConfig::defer_response_decoding`]),
//! and the key holds the codings, the decode limits and whether the body was cut besides
//! the coded bytes ([`ScanMemo::lookup_coded`]); the entry keeps what decoding gave (its
//! length, the cap that stopped it, or its failure), so a body met again is neither
//! inflated nor scanned, and is counted and flagged as decoding it would be. A miss is
//! decoded (through the memo of decodings), scanned and offered ([`ScanMemo::scan_coded`]).
//! The same answer sent plain to one client and compressed to another is two entries.
//!
//! Kept in a [`Memo`](crate::memo::Memo) (entries told apart by a keyed 128-bit digest of
//! the body, never by a copy of it; two-way; a body kept the second time it is met; CLOCK
//! eviction), bounded by the memory budget's share (table `scans`), one for all the workers
//! ([`Scans`]: in parts, each behind its own lock, when there are several workers). Bodies
//! over [`MAX_BODY`] are scanned every time and never kept. A hit never changes a result;
//! with several workers which of them makes a scan depends on timing, so the summary's
//! memoized count may differ between replays, the alerts never.
//!
//! On the realistic capture, with the default budget (7 % for scans, a fifth of it the
//! memo's window for bodies met once, and 1 % for decodings): 33,502 bodies are scanned
//! and 11,308 decoded of 387,797 responses and 108,155 compressed ones with one worker
//! (91.4% of scans answered, 27,846 entries). With 6 %, 36,310 and 12,563 (90.6%, 23,663
//! entries). With 4.5 % for scans, 46,931 and 14,627
//! (87.9%, 21,360 entries, the share full). With the scans keyed by decoded bytes (4 %
//! and 1.5 %), 42,203 were scanned and 34,680 decoded: 89.1% of scans were answered
//! (19,882 entries) and 89.0% with two workers.
//! Before the window, 84.6% (17,455 entries, the share never full) and 84.4%: every body
//! was scanned twice before the memo answered it. Before that:
//! with a 2 % share, 77.3% with one worker (11,216 entries); with a memo per worker (half
//! the share each), 61.7% with two; and when entries kept a copy of the body (about a KiB
//! of an entry's 1.4), the 2 % share held 5,002 entries and answered 58.7% and 45.0%.

use std::mem::size_of;
use std::sync::Arc;

use crate::budget::{Table, Usage};
use crate::detect::exposure::{self, Finding, Scan};
use crate::http::{Headers, header};
use crate::memo::{Identity, Key, Shared};

/// Largest body kept (a large body is rarely repeated and would crowd out many small ones).
pub const MAX_BODY: usize = 16 * 1024;
/// Bytes of the memo's share per slot: an entry, told apart by digest, holds about 370
/// bytes on the realistic capture (its scan and its slot's part), so the share's slots
/// fill before its bytes run out while each slot still costs a fifth of an entry.
const BYTES_PER_SLOT: usize = 384;
/// Placement seed (fixed: see [`crate::memo`]).
const SEED: u64 = 0x7363_616e_6d65_6d6f;
/// The share of the memo's bytes that keeps bodies met once (see [`crate::memo`]).
const WINDOW_PERMILLE: usize = 200;
/// The flag of a key made from a body's coded bytes.
const CODED: u8 = 4;

/// Bytes a scan holds (its findings, their masked samples and the returned ids; the field
/// list is shared per response shape and not counted here).
fn scan_bytes(s: &Scan) -> usize {
    size_of::<Scan>()
        + s.findings.capacity() * size_of::<Finding>()
        + s.findings.iter().map(|f| f.masked.len()).sum::<usize>()
        + s.ids.capacity() * size_of::<(Option<Arc<str>>, Arc<str>)>()
        + s.ids.iter().map(|(_, id)| id.len() + 16).sum::<usize>()
}

/// Recent scans, one memo for all the workers of a pipeline: with a memo each (half the
/// share apiece) two workers scanned 148,549 bodies of the realistic capture where one
/// scanned 87,865.
pub type Scans = Shared<Memoized>;

/// A memo entry: the scan, and for a body found by its coded bytes, what decoding it gave
/// (to settle the body as decoding it would).
#[derive(Clone)]
pub struct Memoized {
    scan: Arc<Scan>,
    decoded: Option<crate::http::DecodedSummary>,
}

/// A lookup of a coded body that found nothing: decode it, then hand the decoded bytes to
/// [`ScanMemo::scan_coded`].
#[must_use]
pub(crate) struct CodedMiss(crate::memo::Miss);

/// The memo of scans for `workers` workers, holding at most `limit` bytes (none when 0).
pub fn scans(limit: usize, workers: usize) -> Arc<Scans> {
    Arc::new(Shared::new(
        workers,
        limit,
        BYTES_PER_SLOT,
        MAX_BODY,
        SEED,
        Identity::Digest,
        WINDOW_PERMILLE,
    ))
}

/// One worker's use of the recent scans. See the module documentation.
pub struct ScanMemo {
    scans: Arc<Scans>,
    /// The key's head: the flags byte, then the `Content-Type` value (reused).
    head: Vec<u8>,
    /// This worker's scans answered from the memo, and made.
    hits: u64,
    misses: u64,
    /// This worker reports the memo's usage (one of those sharing it does).
    reports: bool,
}

impl ScanMemo {
    /// A memo of its own holding at most `limit` bytes (none at all when 0).
    pub fn new(limit: usize) -> ScanMemo {
        ScanMemo::shared(scans(limit, 1), true)
    }

    /// A worker's use of `scans`; `reports`: its usage is reported as this worker's (by
    /// exactly one of the workers sharing it).
    pub fn shared(scans: Arc<Scans>, reports: bool) -> ScanMemo {
        ScanMemo {
            scans,
            head: Vec::new(),
            hits: 0,
            misses: 0,
            reports,
        }
    }

    /// Forgets every scan kept (as in a new run); the counts carry on.
    pub fn clear(&mut self) {
        self.scans.clear();
    }

    /// Scans this worker had answered from the memo.
    pub fn hits(&self) -> u64 {
        self.hits
    }

    /// Scans this worker made (kept or not).
    pub fn misses(&self) -> u64 {
        self.misses
    }

    /// The scan of a response body: the one made before for the same bytes, headers that
    /// matter and `want_ids`, else a new one (kept for next time).
    pub fn scan(&mut self, headers: &Headers, body: &[u8], want_ids: bool) -> Arc<Scan> {
        let (ctype, shared) = self.make_head(headers, want_ids, None);
        let k = Key {
            head: &self.head,
            body,
        };
        // The memo's lock is not held while scanning: a worker that misses the same body
        // meanwhile scans it too, and the memo keeps one of the two.
        match self.scans.get_with(k, |m| Arc::clone(&m.scan)) {
            Ok(scan) => {
                self.hits += 1;
                scan
            }
            Err(miss) => {
                self.misses += 1;
                let scan = Arc::new(exposure::scan_typed(ctype, shared, body, want_ids));
                self.scans.offer(miss, k, scan_bytes(&scan), || Memoized {
                    scan: Arc::clone(&scan),
                    decoded: None,
                });
                scan
            }
        }
    }

    /// Writes the key's head into `self.head`: the flags, the `Content-Type` value and, for
    /// a response body still coded ([`crate::http::Body::coded`]), the coded flag and what
    /// decoding depends on ([`crate::http::decode_key_head`], fixed length, so heads never
    /// run into each other). Returns the `Content-Type` value and whether a shared cache
    /// may serve the response, which the scan takes too.
    fn make_head<'h>(
        &mut self,
        headers: &'h Headers,
        want_ids: bool,
        decode_head: Option<&[u8]>,
    ) -> (&'h [u8], bool) {
        let ctype = header(headers, "content-type").unwrap_or_default();
        let shared = exposure::shared_cacheable(headers);
        let coded = if decode_head.is_some() { CODED } else { 0 };
        self.head.clear();
        self.head
            .push(u8::from(want_ids) | u8::from(shared) << 1 | coded);
        self.head.extend_from_slice(ctype);
        self.head.extend_from_slice(decode_head.unwrap_or_default());
        (ctype, shared)
    }

    /// The scan of a response body found by its bytes as sent (`coded`, still holding its
    /// content codings) and what decoding them gave, made before for the same bytes,
    /// headers that matter, decoding and `want_ids`; else a miss: decode, then
    /// [`ScanMemo::scan_coded`]. A hit needs neither decoding nor scanning.
    pub(crate) fn lookup_coded(
        &mut self,
        headers: &Headers,
        coded: &[u8],
        decode_head: &[u8],
        want_ids: bool,
    ) -> Result<(Arc<Scan>, crate::http::DecodedSummary), CodedMiss> {
        self.make_head(headers, want_ids, Some(decode_head));
        let k = Key {
            head: &self.head,
            body: coded,
        };
        let found = self
            .scans
            .get_with(k, |m| m.decoded.map(|d| (Arc::clone(&m.scan), d)));
        match found {
            Ok(Some(hit)) => {
                self.hits += 1;
                Ok(hit)
            }
            // Coded keys always keep what decoding gave (see `scan_coded`).
            Ok(None) => Err(CodedMiss(crate::memo::Miss::never())),
            Err(miss) => Err(CodedMiss(miss)),
        }
    }

    /// After [`ScanMemo::lookup_coded`] missed: the scan of `decoded` (the body's bytes
    /// after decoding, or as sent when decoding failed; not empty), offered with `summary`
    /// under the coded bytes' key.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn scan_coded(
        &mut self,
        miss: CodedMiss,
        headers: &Headers,
        coded: &[u8],
        decode_head: &[u8],
        decoded: &[u8],
        want_ids: bool,
        summary: crate::http::DecodedSummary,
    ) -> Arc<Scan> {
        self.misses += 1;
        let (ctype, shared) = self.make_head(headers, want_ids, Some(decode_head));
        let scan = Arc::new(exposure::scan_typed(ctype, shared, decoded, want_ids));
        let k = Key {
            head: &self.head,
            body: coded,
        };
        self.scans.offer(miss.0, k, scan_bytes(&scan), || Memoized {
            scan: Arc::clone(&scan),
            decoded: Some(summary),
        });
        scan
    }

    /// What the memo holds now and has evicted (table `scans`), from the worker that
    /// reports it; nothing from the others sharing it.
    pub fn usage(&self) -> (Table, Usage) {
        let u = if self.reports {
            self.scans.usage()
        } else {
            Usage::default()
        };
        (Table::Scans, u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json() -> Headers {
        crate::http::Headers::from_iter([("Content-Type", "application/json")])
    }

    const PROFILE: &[u8] =
        br#"{"id":"u-1","email":"ann.lee@example.com","phone":"+44 7700 900123","name":"Ann"}"#;

    /// A body met again gets the first scan (the same `Arc`), which is what scanning it
    /// again would give; a different body, content type, cache policy or `want_ids` is
    /// scanned on its own.
    #[test]
    fn a_repeated_body_gets_the_scan_made_first() {
        let mut m = ScanMemo::new(1 << 20);
        let first = m.scan(&json(), PROFILE, true);
        assert!(!first.findings.is_empty(), "the profile has personal data");
        // Met once, it waits in the window; met again, it is answered (and kept on).
        assert_eq!(m.usage().1.entries, 1);
        let again = m.scan(&json(), PROFILE, true);
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(*again, exposure::scan_with(&json(), PROFILE, true));
        assert_eq!(m.usage().1.entries, 1);
        assert!(Arc::ptr_eq(&first, &m.scan(&json(), PROFILE, true)));
        assert_eq!((m.hits(), m.misses()), (2, 1));

        let other =
            br#"{"id":"u-2","email":"bo.kim@example.com","phone":"+44 7700 900124","name":"Bo"}"#;
        let b = m.scan(&json(), other, true);
        assert!(!Arc::ptr_eq(&first, &b));
        assert_eq!(*b, exposure::scan_with(&json(), other, true));

        let no_ids = m.scan(&json(), PROFILE, false);
        assert!(!Arc::ptr_eq(&first, &no_ids));
        assert_eq!(*no_ids, exposure::scan_with(&json(), PROFILE, false));

        let public = crate::http::Headers::from_iter([
            ("Content-Type", "application/json"),
            ("Cache-Control", "public, max-age=60"),
        ]);
        let p = m.scan(&public, PROFILE, true);
        assert!(p.shared_cache && !first.shared_cache);
        assert_eq!(*p, exposure::scan_with(&public, PROFILE, true));

        // The same bytes as text are not walked as JSON's fields.
        let text = crate::http::Headers::from_iter([("Content-Type", "text/plain")]);
        let t = m.scan(
            &text,
            b"call +44 7700 900123 or mail ann.lee@example.com",
            true,
        );
        assert_eq!(
            *t,
            exposure::scan_with(
                &text,
                b"call +44 7700 900123 or mail ann.lee@example.com",
                true
            )
        );
        assert_eq!(m.hits(), 2, "{} hits", m.hits());
    }

    /// Bodies that share a slot replace each other and are told apart by their bytes.
    #[test]
    fn bodies_sharing_a_slot_are_told_apart() {
        let mut m = ScanMemo::new(64 * 1024);
        let slots = m.scans.slots();
        let bodies: Vec<Vec<u8>> = (0..slots * 4)
            .map(|i| format!(r#"{{"id":{i},"email":"user{i}@example.com"}}"#).into_bytes())
            .collect();
        for _ in 0..2 {
            for b in &bodies {
                let s = m.scan(&json(), b, true);
                assert_eq!(*s, exposure::scan_with(&json(), b, true));
            }
        }
        assert!(
            m.hits() < bodies.len() as u64,
            "four bodies a slot cannot all stay"
        );
        assert_eq!(m.hits() + m.misses(), 2 * bodies.len() as u64);
    }

    /// Bodies met again and again stay while a stream of others passes through: bodies
    /// met once only pass through the window, and those kept but not used since go first.
    #[test]
    fn bodies_in_use_outlast_the_passing_ones() {
        let mut m = ScanMemo::new(256 * 1024);
        let popular: Vec<Vec<u8>> = (0..8)
            .map(|i| format!(r#"{{"product":{i},"name":"lamp {i}","price":{i}9}}"#).into_bytes())
            .collect();
        let mut passing = 0u32;
        let mut popular_hits = 0;
        for round in 0..200 {
            let hits = m.hits();
            for b in &popular {
                m.scan(&json(), b, false);
            }
            if round >= 2 {
                popular_hits += m.hits() - hits;
            }
            // Between two visits to the catalogue: 20 one-off carts, and 5 pages of 24
            // items met twice in a row (kept, then never used; their ids make their scans
            // a KiB or more).
            for _ in 0..20 {
                passing += 1;
                let cart = format!(r#"{{"cart":{passing},"email":"u{passing}@example.com"}}"#);
                m.scan(&json(), cart.as_bytes(), true);
            }
            for _ in 0..5 {
                passing += 1;
                let items: Vec<String> = (0..24)
                    .map(|j| format!(r#"{{"id":"item-{passing}-{j}","title":"lamp"}}"#))
                    .collect();
                let page = format!(r#"{{"page":{passing},"items":[{}]}}"#, items.join(","));
                let first = m.scan(&json(), page.as_bytes(), true);
                assert_eq!(first.ids.len(), 24);
                m.scan(&json(), page.as_bytes(), true);
            }
        }
        assert!(
            m.usage().1.evictions > 0,
            "the passing bodies overflow the share"
        );
        assert_eq!(popular_hits, 198 * popular.len() as u64);
    }

    /// The memo stays within its share, counting what it gave up; a body over the size
    /// bound, or over a sixteenth of the share, is scanned and never kept.
    #[test]
    fn it_stays_within_its_share() {
        let limit = 64 * 1024;
        let mut m = ScanMemo::new(limit);
        for i in 0..5_000 {
            let b = format!(
                r#"{{"id":{i},"email":"user{i}@example.com","n":"{}"}}"#,
                "x".repeat(1000 + i % 2000)
            );
            // Met twice, so that it is kept.
            for _ in 0..2 {
                m.scan(&json(), b.as_bytes(), i % 2 == 0);
                assert!(m.usage().1.bytes <= limit as u64, "{:?}", m.usage());
            }
        }
        let (t, u) = m.usage();
        assert_eq!(t, Table::Scans);
        assert!(u.evictions > 0, "{u:?}");
        assert!(u.entries > 0 && u.entries <= m.scans.slots() as u64);

        let big = format!(r#"{{"blob":"{}"}}"#, "y".repeat(MAX_BODY));
        let held = m.usage().1.entries;
        let s = m.scan(&json(), big.as_bytes(), true);
        assert_eq!(*s, exposure::scan_with(&json(), big.as_bytes(), true));
        m.scan(&json(), big.as_bytes(), true);
        assert!(m.usage().1.entries <= held);

        let mut off = ScanMemo::new(0);
        let a = off.scan(&json(), PROFILE, true);
        let b = off.scan(&json(), PROFILE, true);
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(off.usage().1.entries, 0);
    }

    /// Workers sharing the memo: a body one worker kept answers the other's scans, each
    /// worker counts its own, every answer is what a scan of its own would give, the
    /// parts stay within the share together, and one worker reports the usage.
    #[test]
    fn workers_share_the_scans_they_keep() {
        // Room for far more than 300 bodies in each part: none is pushed out.
        let limit = 4 << 20;
        let scans = scans(limit, 2);
        assert!(scans.parts() > 1);
        let bodies: Vec<Vec<u8>> = (0..300)
            .map(|i| format!(r#"{{"id":{i},"email":"user{i}@example.com"}}"#).into_bytes())
            .collect();
        // The first worker meets every body twice (answered the second time from the
        // window, and kept), on its own thread.
        let first = {
            let scans = Arc::clone(&scans);
            let bodies = bodies.clone();
            std::thread::spawn(move || {
                let mut m = ScanMemo::shared(scans, true);
                for b in bodies.iter().chain(&bodies) {
                    assert_eq!(
                        *m.scan(&json(), b, true),
                        exposure::scan_with(&json(), b, true)
                    );
                }
                m
            })
            .join()
            .expect("the first worker finishes")
        };
        assert_eq!((first.hits(), first.misses()), (300, 300));
        let mut second = ScanMemo::shared(Arc::clone(&scans), false);
        for b in &bodies {
            assert_eq!(
                *second.scan(&json(), b, true),
                exposure::scan_with(&json(), b, true)
            );
        }
        assert!(second.hits() >= 295, "{} of 300 answered", second.hits());
        assert_eq!(second.hits() + second.misses(), 300);
        let (_, u) = first.usage();
        assert!(u.entries >= 295 && u.bytes <= limit as u64, "{u:?}");
        assert_eq!(u.limit, (limit / scans.parts() * scans.parts()) as u64);
        assert_eq!(second.usage().1, Usage::default());
        // Both threads scanning the same bodies at once get the same answers.
        let together: Vec<_> = (0..2)
            .map(|i| {
                let scans = Arc::clone(&scans);
                let bodies = bodies.clone();
                std::thread::spawn(move || {
                    let mut m = ScanMemo::shared(scans, i == 0);
                    bodies.iter().all(|b| {
                        *m.scan(&json(), b, false) == exposure::scan_with(&json(), b, false)
                    })
                })
            })
            .collect();
        for t in together {
            assert!(t.join().expect("a worker finishes"));
        }
        scans.clear();
        assert_eq!(scans.usage().entries, 0);
    }
}
