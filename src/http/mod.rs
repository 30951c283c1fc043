//! HTTP/1.x: reassembled byte streams to transactions.
//!
//! Input: ordered bytes per direction of one TCP connection, gaps and close from
//! [`crate::reassembly`]. Output: [`Transaction`]s (request paired with response) pushed to
//! a caller's vector. Owns one [`HttpConn`] per connection: partial message state, the queue
//! of requests awaiting responses (pipelining), and bounded body buffers. Heads are parsed by
//! `httparse`; bodies by Content-Length, chunked (with trailers) or read-until-close; bodies
//! are kept up to `max_body_bytes` and decoded (gzip, deflate, br) under a decoded-size and
//! ratio cap. Caps on head size, header count and the bytes of requests awaiting answers.
//! Start lines httparse rejects but servers accept (HTTP/0.9, spaces in the target, no
//! target, non-numeric status) are read by a lenient fallback and flagged. Malformed or
//! hostile input becomes an [`Anomaly`] on the transaction and a counter, and the parser
//! resyncs on the next message head (also after a gap); it never panics and never buffers
//! beyond its caps.

mod body;
pub mod h2;
mod headers;
mod parser;

pub(crate) use body::{
    DecodeMemo, DecodedSummary, apply_decoded, decode_key_head, decode_memo, decode_memoized,
    set_decode_memo, settle_decoded,
};
pub use body::{decode_memo_usage, forget_decodes};
pub use headers::{Header, Headers, Name as HeaderName};
pub use parser::{HttpConn, HttpStats, METHOD_CLASSES, STATUS_CLASSES};

use crate::capture::Timestamp;

/// Which way bytes travel on the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dir {
    ToServer,
    ToClient,
}

impl Dir {
    pub fn flip(self) -> Dir {
        match self {
            Dir::ToServer => Dir::ToClient,
            Dir::ToClient => Dir::ToServer,
        }
    }
}

/// HTTP parser limits (config section `[http]`).
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Largest request or response head (start line + headers) buffered while incomplete.
    pub max_head_bytes: usize,
    /// Most header fields parsed in one head.
    pub max_headers: usize,
    /// Body bytes kept per message for detectors (after decoding); the rest is counted.
    pub max_body_bytes: usize,
    /// Most bytes a compressed body may decode to.
    pub max_decoded_bytes: usize,
    /// Most decoded/encoded ratio before decoding stops (decompression bombs).
    pub max_decompression_ratio: u32,
    /// Requests waiting for responses per connection (pipelining depth). A safety net: the
    /// queue is bounded mainly by `max_pending_bytes`.
    pub max_pending_requests: usize,
    /// Bytes of requests (heads, kept bodies) and early responses waiting in one
    /// connection's pairing queue. A client may pipeline thousands of small requests before
    /// the first answer is seen; the queue gives up its oldest requests only past this.
    pub max_pending_bytes: usize,
    /// Decode gzip / deflate / br bodies.
    pub decode_bodies: bool,
    /// HTTP/1.x responses keep their coded bytes ([`Body::coded`]) for the reader to
    /// decode: a worker that answers a body met before from its memo of response scans
    /// (keyed by the bytes as sent) then neither decodes nor scans it. Set by the runtime
    /// (not a config key); the parser's own default decodes as a message completes.
    pub defer_response_decoding: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_head_bytes: 64 * 1024,
            max_headers: 128,
            max_body_bytes: 256 * 1024,
            max_decoded_bytes: 1024 * 1024,
            max_decompression_ratio: 100,
            max_pending_requests: 4096,
            max_pending_bytes: 4 * 1024 * 1024,
            decode_bodies: true,
            defer_response_decoding: false,
        }
    }
}

/// A message body as kept for detectors.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Body {
    /// Body bytes after transfer decoding and (if enabled) content decoding, up to the cap.
    pub data: Vec<u8>,
    /// Bytes of body on the wire (after de-chunking, before content decoding).
    pub wire_len: u64,
    /// `data` holds the content-decoded form.
    pub decoded: bool,
    /// `data` stops short of the full body (a cap was hit or the body was cut).
    pub truncated: bool,
    /// Trailer fields after a chunked body. Kept apart from the head's fields: a trailer
    /// must not be able to override a header a detector trusts (RFC 9110 §6.5.1).
    pub trailers: Headers,
    /// The content codings `data` still holds, when the parser left undoing them to the
    /// one who reads the body ([`HttpConfig::defer_response_decoding`]): `data` is then
    /// as sent, and [`Transaction::decode_deferred`] or a memo of what was made from these bytes
    /// settles the body as decoding it in the parser would have.
    pub(crate) coded: Option<body::Codings>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    /// Inline (no allocation), as is a target of up to 24 bytes.
    pub method: compact_str::CompactString,
    /// Request target exactly as sent (path and query); empty when the request line had
    /// none (`request-line-no-target`), spaces kept when it had some inside
    /// (`request-line-space-in-target`).
    pub target: compact_str::CompactString,
    /// Minor version: 0 for HTTP/1.0 and for a request line without a version (HTTP/0.9
    /// style, flagged `request-line-no-version`), 1 for HTTP/1.1.
    pub version: u8,
    pub headers: Headers,
    pub body: Body,
    /// Packet time of the first byte of the request.
    pub ts: Timestamp,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Response {
    /// 0 when the status line had no numeric status (`status-non-numeric`) or there was no
    /// head at all (`response-no-head`).
    pub status: u16,
    pub version: u8,
    pub headers: Headers,
    pub body: Body,
    /// Packet time of the first byte of the response head.
    pub ts: Timestamp,
}

/// A request and its response; either may be missing (anomaly says why).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    pub request: Option<Request>,
    pub response: Option<Response>,
    pub anomalies: AnomalySet,
    /// HTTP/2: the stream it came on (`None` for HTTP/1.x).
    pub h2: Option<h2::H2Info>,
}

impl Transaction {
    pub fn paired(&self) -> bool {
        self.request.is_some() && self.response.is_some()
    }

    /// Decodes a response body the parser left coded
    /// ([`HttpConfig::defer_response_decoding`]) as the parser would have: the decoded
    /// bytes replace the coded ones, and the outcome lands on the body, the transaction's
    /// anomalies and `stats`. Nothing to do for any other transaction.
    pub fn decode_deferred(&mut self, cfg: &HttpConfig, stats: &mut HttpStats) {
        if let Some(r) = self.response.as_mut() {
            body::decode_deferred(&mut r.body, &mut self.anomalies, cfg, stats);
        }
    }
}

/// Header buffers handed back by transactions that are done with (see [`recycle`]),
/// for the next heads parsed on this thread: each message allocated them.
const RECYCLED_KEPT: usize = 64;
/// Buffers grown past this many fields or bytes (a hostile head) are freed, not kept: at
/// most about 1 MiB per thread, about 100 KiB on an API's traffic.
const RECYCLED_MAX_FIELDS: usize = 64;
const RECYCLED_MAX_BYTES: usize = 16 * 1024;

/// Body buffers of transactions done with, kept per thread for the next bodies kept or
/// decoded (a body grown segment by segment reallocated several times), at most this
/// many...
const RECYCLED_BODIES_KEPT: usize = 16;
/// ...and none larger than this: at most 256 KiB per thread.
const RECYCLED_BODY_MAX_CAPACITY: usize = 16 * 1024;

/// One thread's pool of buffers given back for reuse.
type Pool<T> = std::thread::LocalKey<std::cell::RefCell<Vec<T>>>;

thread_local! {
    static RECYCLED_BODIES: std::cell::RefCell<Vec<Vec<u8>>> =
        const { std::cell::RefCell::new(Vec::new()) };
    static RECYCLED: std::cell::RefCell<Vec<Headers>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// The buffer this thread gave `pool` last, else a new one (also while the thread's
/// locals are being torn down).
fn take_pooled<T: Default>(pool: &'static Pool<T>) -> T {
    pool.try_with(|r| r.try_borrow_mut().ok().and_then(|mut r| r.pop()))
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Gives `buf` to this thread's `pool`, or drops it when the pool holds `kept` already.
fn give_pooled<T>(pool: &'static Pool<T>, buf: T, kept: usize) {
    let _ = pool.try_with(|r| {
        if let Ok(mut r) = r.try_borrow_mut()
            && r.len() < kept
        {
            r.push(buf);
        }
    });
}

/// An empty buffer for a body, one a transaction done with gave back when this thread has
/// one.
pub(crate) fn body_buffer() -> Vec<u8> {
    take_pooled(&RECYCLED_BODIES)
}

/// Keeps a body's buffer for [`body_buffer`] (freed when there are enough, or it is large).
pub(crate) fn recycle_body(mut buf: Vec<u8>) {
    if buf.capacity() == 0 || buf.capacity() > RECYCLED_BODY_MAX_CAPACITY {
        return;
    }
    buf.clear();
    give_pooled(&RECYCLED_BODIES, buf, RECYCLED_BODIES_KEPT);
}

/// Empty header buffers, reused when this thread has some.
pub(crate) fn recycled_headers() -> Headers {
    take_pooled(&RECYCLED)
}

/// Takes back the header buffers of a transaction that is done with (kept per thread, at
/// most [`RECYCLED_KEPT`], emptied) and its bodies' buffers (at most
/// [`RECYCLED_BODIES_KEPT`]), for the next messages parsed on this thread.
pub fn recycle(tx: &mut Transaction) {
    let parts = [
        tx.request.as_mut().map(|r| (&mut r.headers, &mut r.body)),
        tx.response.as_mut().map(|r| (&mut r.headers, &mut r.body)),
    ];
    for (headers, body) in parts.into_iter().flatten() {
        recycle_body(std::mem::take(&mut body.data));
        let mut v = std::mem::take(headers);
        let (fields, bytes) = v.capacity();
        if fields == 0 || fields > RECYCLED_MAX_FIELDS || bytes > RECYCLED_MAX_BYTES {
            continue;
        }
        v.clear();
        give_pooled(&RECYCLED, v, RECYCLED_KEPT);
    }
}

/// The value of the first header field named `name` (in any case).
pub fn header<'h>(headers: &'h Headers, name: &str) -> Option<&'h [u8]> {
    headers.get(name)
}

/// `a` and `b` are equal but for ASCII case ([`<[u8]>::eq_ignore_ascii_case`]), compared
/// eight bytes at a time: every request's headers are searched by name several times (the
/// tokens, the binding, the host), and byte by byte that was 1% of the whole pipeline.
///
/// The lengths are compared inline: most names a lookup passes differ in length.
#[inline]
pub fn same_name(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && same_len_name(a, b)
}

/// [`same_name`] of two names of the same length: eight bytes at a time, the last word
/// read where it ends the name (overlapping the one before: a byte folds the same wherever
/// it is read), and a name under eight bytes as one word. Byte by byte, the tail of a
/// name past its last whole word cost a header lookup about 120 instructions.
fn same_len_name(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().min(b.len());
    if n < 8 {
        return fold(short(a)) == fold(short(b));
    }
    let mut at = 0;
    while at + 8 < n {
        if fold(word(a, at)) != fold(word(b, at)) {
            return false;
        }
        at += 8;
    }
    fold(word(a, n - 8)) == fold(word(b, n - 8))
}

/// The eight bytes of `s` from `at`, read little-endian (zero past the end).
fn word(s: &[u8], at: usize) -> u64 {
    s.get(at..at + 8)
        .and_then(|w| w.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// Fewer than eight bytes as one word: from four on, the first four and the last four
/// (overlapping when under eight); below, byte by byte, padded with zeros.
fn short(s: &[u8]) -> u64 {
    let four = |w: Option<&[u8]>| {
        w.and_then(|w| w.try_into().ok())
            .map_or(0, |w| u64::from(u32::from_le_bytes(w)))
    };
    if s.len() >= 4 {
        four(s.get(..4)) | (four(s.get(s.len() - 4..)) << 32)
    } else {
        s.iter()
            .rev()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
    }
}

/// Eight bytes (read little-endian) with `A`..=`Z` made lower case and every other byte
/// (including those over 0x7f) as it was.
fn fold(x: u64) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let low = x & LOW7;
    // A byte's high bit: at least `A` (0x41), past `Z` (0x5a), and not over 0x7f. Adding
    // to seven bits never carries into the next byte.
    let from_a = low + 0x3f3f_3f3f_3f3f_3f3f;
    let past_z = low + 0x2525_2525_2525_2525;
    let upper = from_a & !past_z & !x & HIGH;
    x | (upper >> 2)
}

/// A content type naming JSON (`application/json`, `application/problem+json`), in any case.
pub fn mentions_json(content_type: &[u8]) -> bool {
    mentions(content_type, b"json")
}

/// `content_type` holds `word` (lower case) in any case, without a lower-cased copy; an
/// empty `word` is in every content type (as `str::contains` has it).
pub fn mentions(content_type: &[u8], word: &[u8]) -> bool {
    word.is_empty()
        || content_type
            .windows(word.len())
            .any(|w| w.eq_ignore_ascii_case(word))
}

macro_rules! anomalies {
    ($($variant:ident = $bit:expr, $name:literal;)*) => {
        /// Something wrong or notable about a transaction (a bounded metric label).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum Anomaly { $($variant = $bit,)* }

        impl Anomaly {
            pub const ALL: &'static [Anomaly] = &[$(Anomaly::$variant,)*];
            pub fn as_str(self) -> &'static str {
                match self { $(Anomaly::$variant => $name,)* }
            }
        }
    };
}

anomalies! {
    ClAndTe = 0, "content-length-and-transfer-encoding";
    DuplicateContentLength = 1, "duplicate-content-length";
    InvalidContentLength = 2, "invalid-content-length";
    BadChunk = 3, "bad-chunk";
    TruncatedBody = 4, "truncated-body";
    ResponseWithoutRequest = 5, "response-without-request";
    RequestWithoutResponse = 6, "request-without-response";
    Gap = 7, "gap";
    HeadTooLarge = 8, "head-too-large";
    TooManyHeaders = 9, "too-many-headers";
    BadHead = 10, "bad-head";
    DecodeFailed = 11, "content-decoding-failed";
    DecodeCap = 12, "content-decoding-cap";
    BodyCap = 13, "body-cap";
    Upgrade = 14, "upgrade";
    Connect = 15, "connect";
    PendingCap = 16, "pending-requests-cap";
    UnknownEncoding = 17, "unknown-content-encoding";
    RequestLineSpaceInTarget = 18, "request-line-space-in-target";
    RequestLineNoVersion = 19, "request-line-no-version";
    RequestLineNoTarget = 20, "request-line-no-target";
    StatusNonNumeric = 21, "status-non-numeric";
    ResponseNoHead = 22, "response-no-head";
    StreamReset = 23, "stream-reset";
    H2UnknownFields = 24, "hpack-unknown-fields";
    StreamCap = 25, "h2-stream-cap";
}

/// A set of [`Anomaly`] values, as bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AnomalySet(pub u32);

impl AnomalySet {
    pub fn insert(&mut self, a: Anomaly) {
        self.0 |= 1 << (a as u8);
    }
    pub fn contains(self, a: Anomaly) -> bool {
        self.0 & (1 << (a as u8)) != 0
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn iter(self) -> impl Iterator<Item = Anomaly> {
        Anomaly::ALL
            .iter()
            .copied()
            .filter(move |a| self.contains(*a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Names compared a word at a time agree with the standard library on any bytes:
        /// the same name in another case, a byte changed, every byte value (the letters'
        /// neighbours `@`, `[`, `` ` ``, `{` and bytes over 0x7f among them).
        #[test]
        fn same_name_is_eq_ignore_ascii_case(
            a in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
            flips in proptest::collection::vec(0u8..4, 40),
            other in proptest::prelude::any::<u8>(),
        ) {
            let b: Vec<u8> = a
                .iter()
                .zip(&flips)
                .map(|(&c, &f)| match f {
                    0 => c.to_ascii_uppercase(),
                    1 => c.to_ascii_lowercase(),
                    2 => c ^ 0x20,
                    _ if c % 7 == 0 => other,
                    _ => c,
                })
                .collect();
            proptest::prop_assert_eq!(same_name(&a, &b), a.eq_ignore_ascii_case(&b));
            proptest::prop_assert_eq!(same_name(&b, &a), b.eq_ignore_ascii_case(&a));
            proptest::prop_assert!(same_name(&a, &a.to_ascii_uppercase()));
        }
    }

    #[test]
    fn same_name_folds_only_letters() {
        assert!(same_name(b"Approov-Token", b"approov-token"));
        assert!(same_name(b"AUTHORIZATION", b"authorization"));
        assert!(!same_name(b"Approov-Token", b"Approov-Tokens"));
        // `@` and `` ` ``, `[` and `{` differ by the case bit but are not letters.
        assert!(!same_name(b"abcdefg@", b"abcdefg`"));
        assert!(!same_name(b"abcdefg[", b"abcdefg{"));
        assert!(!same_name(
            b"x-\xc3\x89tat-xx".as_slice(),
            b"x-\xe3\xa9tat-xx".as_slice()
        ));
    }

    fn tx(headers: usize) -> Transaction {
        let h = |i: usize| (format!("x-h{i}"), "v");
        Transaction {
            request: Some(Request {
                method: "GET".into(),
                target: "/".into(),
                version: 1,
                headers: (0..headers).map(h).collect(),
                body: Body::default(),
                ts: Timestamp(0),
            }),
            response: None,
            anomalies: AnomalySet::default(),
            h2: None,
        }
    }

    #[test]
    fn header_vectors_come_back_empty_and_the_pool_stays_bounded() {
        // Each test runs on its own thread: the pool starts empty.
        assert_eq!(recycled_headers().capacity(), (0, 0));
        let mut t = tx(5);
        recycle(&mut t);
        assert!(t.request.as_ref().is_some_and(|r| r.headers.is_empty()));
        let v = recycled_headers();
        assert!(
            v.is_empty() && v.capacity().0 >= 5,
            "reused, emptied: {v:?}"
        );
        // Buffers grown past the caps are freed, not kept.
        recycle(&mut tx(RECYCLED_MAX_FIELDS + 1));
        assert_eq!(recycled_headers().capacity(), (0, 0));
        recycle(&mut tx_with(&[&vec![b'h'; RECYCLED_MAX_BYTES + 1]]));
        assert_eq!(recycled_headers().capacity(), (0, 0));
        for _ in 0..RECYCLED_KEPT + 10 {
            recycle(&mut tx(3));
        }
        let kept = RECYCLED.with(|r| r.borrow().len());
        assert_eq!(kept, RECYCLED_KEPT);
    }

    /// A transaction with these header values (in buffers of their own).
    fn tx_with(values: &[&[u8]]) -> Transaction {
        let mut t = tx(0);
        if let Some(r) = t.request.as_mut() {
            r.headers = values.iter().map(|v| ("x-v", v)).collect();
        }
        t
    }

    #[test]
    fn body_buffers_of_done_transactions_carry_the_next_bodies() {
        let pooled = || RECYCLED_BODIES.with(|r| r.borrow().len());
        let with_body = |len: usize| {
            let mut t = tx(0);
            if let Some(r) = t.request.as_mut() {
                r.body.data = vec![b'{'; len];
            }
            t
        };
        let mut t = with_body(600);
        let first = t.request.as_ref().map(|r| r.body.data.as_ptr());
        recycle(&mut t);
        assert!(t.request.as_ref().is_some_and(|r| r.body.data.is_empty()));
        let b = body_buffer();
        assert_eq!(Some(b.as_ptr()), first, "the same buffer");
        assert!(b.is_empty() && b.capacity() >= 600);
        assert_eq!(pooled(), 0);
        assert_eq!(body_buffer().capacity(), 0, "none left: a new, empty one");
        // A large body's buffer is freed, not kept; the pool stays bounded.
        recycle(&mut with_body(RECYCLED_BODY_MAX_CAPACITY + 1));
        assert_eq!(pooled(), 0);
        for _ in 0..RECYCLED_BODIES_KEPT + 5 {
            recycle(&mut with_body(100));
        }
        assert_eq!(pooled(), RECYCLED_BODIES_KEPT);
    }
}
