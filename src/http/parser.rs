//! HTTP/1.x connection state: bytes of both directions in, [`Transaction`]s out.
//!
//! Input: in-order bytes per direction, gaps and close, as the reassembler delivers them,
//! in chunks of any size (the same transactions come out however the stream is split).
//! Output: transactions pushed to the caller's vector, counters in [`HttpStats`]. Each
//! direction is a small state machine (head → body → head; or resync after damage) and
//! requests wait in a FIFO for the responses that answer them (keep-alive, pipelining).
//! Heads go through httparse; only a start line httparse rejects goes to a lenient reader
//! of what real servers accept (spaces in the target, no version, no target, a status that
//! is not a number), flagged by what was odd; a resync accepts only what httparse accepts.
//! Limits: each direction buffers at most `max_head_bytes` (a head, chunk-size line,
//! trailer section or resync line) and keeps a body up to `max_body_bytes`; the requests
//! waiting for answers hold at most `max_pending_bytes` (and number `max_pending_requests`);
//! nothing else grows with traffic, and every step is linear in the bytes fed, whatever
//! they are. Failure modes: malformed framing, lost bytes and mid-stream pickup become
//! anomalies plus a resync at the next start line (a known method or `HTTP/1.`, anywhere in
//! a line, that parses); after lost request bytes a response is never paired with a
//! request that arrived after it began; after lost response bytes, at the next response
//! head, as many of the oldest waiting requests are given up as the loss held responses
//! of the connection's typical size (all of them before a size is known); a request given
//! up at a queue cap leaves its answer owed, so it pairs with nothing instead of shifting
//! later pairs.
use std::collections::{BTreeMap, VecDeque};
use std::mem::MaybeUninit;

use memchr::{memchr, memchr_iter, memchr3};

use super::body::{self, Codings, ContentLength, TransferEncoding};
use super::{
    Anomaly, AnomalySet, Body, Dir, Header, HeaderValue, HttpConfig, Request, Response, Transaction,
};
use crate::capture::Timestamp;

/// Header slots kept on the stack for one head parse; a larger `max_headers` uses the heap.
const STACK_HEADER_SLOTS: usize = 256;
/// Longest chunk-size line (size and extensions) buffered before the chunk is judged bad
/// (never more than the head cap).
const MAX_CHUNK_LINE: usize = 4096;
/// Longest method token a message start may have (extension methods included).
const MAX_METHOD_LEN: usize = 20;
/// Bytes that always decide whether a message start looks like a head.
const PROBE_LEN: usize = MAX_METHOD_LEN + 1;
/// Bytes that always decide which way a connection's first bytes travel (`OPTIONS `).
const ORIENT_PROBE_LEN: usize = 8;
/// Floor under `max_head_bytes`, so a tiny configured cap still lets a start line through.
const MIN_HEAD_CAP: usize = 64;
/// Head buffers that grew past this are released after use instead of kept for reuse.
const KEEP_BUF_CAPACITY: usize = 16 * 1024;
/// Longest start line a resync candidate may have (servers reject longer request lines:
/// nginx and Apache at about 8 KiB). Also half the most a resync keeps of a line.
const MAX_RESYNC_START_LINE: usize = 8 * 1024;

/// Methods a resync accepts as a message start. Normal parsing accepts any token.
const RESYNC_METHODS: &[&[u8]] = &[
    b"GET ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"PATCH ",
    b"HEAD ",
    b"OPTIONS ",
    b"CONNECT ",
    b"TRACE ",
];
const STATUS_LINE_PREFIX: &[u8] = b"HTTP/1.";

/// A byte search over a haystack (memchr family).
type Finder = fn(&[u8]) -> Option<usize>;

/// Per-worker HTTP counters (summary JSON `http`).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct HttpStats {
    /// Request heads parsed.
    pub requests: u64,
    /// Final response heads parsed (interim 1xx other than 101 are not counted here).
    pub responses: u64,
    /// Interim responses (100 Continue, 103 Early Hints...) skipped.
    pub interim_responses: u64,
    /// Transactions emitted.
    pub transactions: u64,
    /// Emitted transactions with both a request and a response.
    pub paired: u64,
    /// Every anomaly on every emitted transaction, by [`Anomaly::as_str`].
    pub anomalies_by_kind: BTreeMap<&'static str, u64>,
    /// Emitted transactions with a request, by method (`other` for the rest).
    pub by_method_class: BTreeMap<&'static str, u64>,
    /// Emitted transactions by response status class (`none` when unanswered).
    pub by_status_class: BTreeMap<&'static str, u64>,
    /// Times a direction started hunting for the next message head.
    pub resyncs: u64,
    /// Bytes discarded while hunting for a message head (or left as an unfinished head).
    pub bytes_skipped: u64,
    /// Heads whose start line could not be parsed at all (discarded, not emitted).
    pub unparsable_heads: u64,
    /// Requests given up as answered inside lost response bytes: as many as the lost bytes
    /// hold responses of the connection's typical size (each also flagged `gap` and
    /// `request-without-response`).
    pub gap_unanswered: u64,
    /// Bytes produced by content decoding.
    pub body_bytes_decoded: u64,
    /// Limits reached: head, headers, body, decoded, ratio, pending.
    pub cap_hits: BTreeMap<&'static str, u64>,
}

impl HttpStats {
    pub fn merge(&mut self, other: &HttpStats) {
        self.requests += other.requests;
        self.responses += other.responses;
        self.interim_responses += other.interim_responses;
        self.transactions += other.transactions;
        self.paired += other.paired;
        self.resyncs += other.resyncs;
        self.bytes_skipped += other.bytes_skipped;
        self.unparsable_heads += other.unparsable_heads;
        self.gap_unanswered += other.gap_unanswered;
        self.body_bytes_decoded += other.body_bytes_decoded;
        for (mine, theirs) in [
            (&mut self.anomalies_by_kind, &other.anomalies_by_kind),
            (&mut self.by_method_class, &other.by_method_class),
            (&mut self.by_status_class, &other.by_status_class),
            (&mut self.cap_hits, &other.cap_hits),
        ] {
            for (k, v) in theirs {
                *mine.entry(k).or_insert(0) += v;
            }
        }
    }
}

fn bump(map: &mut BTreeMap<&'static str, u64>, key: &'static str) {
    *map.entry(key).or_insert(0) += 1;
}

/// Every value of [`HttpStats::by_method_class`]: the methods counted by name, then `other`
/// (a bounded label; the metrics export each from zero).
pub const METHOD_CLASSES: [&str; 8] = [
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "other",
];

/// Every value of [`HttpStats::by_status_class`] (`none`: unanswered).
pub const STATUS_CLASSES: [&str; 7] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other", "none"];

fn method_class(method: &str) -> &'static str {
    METHOD_CLASSES
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("other")
}

fn status_class(status: Option<u16>) -> &'static str {
    let i = match status {
        Some(100..=199) => 0,
        Some(200..=299) => 1,
        Some(300..=399) => 2,
        Some(400..=499) => 3,
        Some(500..=599) => 4,
        Some(_) => 5,
        None => 6,
    };
    STATUS_CLASSES[i]
}

/// Which messages a direction carries (after any swap).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Request,
    Response,
}

/// Request methods whose responses are framed differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MethodKind {
    Head,
    Connect,
    Other,
}

impl MethodKind {
    fn of(method: &str) -> MethodKind {
        match method {
            "HEAD" => MethodKind::Head,
            "CONNECT" => MethodKind::Connect,
            _ => MethodKind::Other,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Orientation {
    /// No bytes yet (or too few to tell).
    Unknown,
    AsGiven,
    /// Client bytes arrive as `ToClient`.
    Swapped,
}

/// A request whose head was seen, waiting for (or holding) its response.
#[derive(Debug)]
struct Pending {
    id: u64,
    /// `None` while its body is still arriving.
    request: Option<Request>,
    request_anomalies: AnomalySet,
    method: MethodKind,
    /// A response head was matched to it.
    claimed: bool,
    /// A complete response that arrived before the request finished.
    response: Option<(Response, AnomalySet)>,
    /// First request after lost request bytes: responses that started before it arrived
    /// answer lost requests, not this one.
    after_gap: bool,
    /// Connection event (data or gap call) in which its first byte arrived.
    first_event: u64,
    /// Its request line had no version (HTTP/0.9): the answer may come without a head.
    http09: bool,
    /// Bytes charged to `Shared::pending_bytes` for what it holds.
    weight: usize,
}

/// State both directions share.
#[derive(Debug, Default)]
struct Shared {
    pending: VecDeque<Pending>,
    next_id: u64,
    /// Counts data and gap calls, to order request and response arrivals.
    event: u64,
    /// Request bytes were lost; the next request pushed is tagged `after_gap`.
    request_gap: bool,
    opaque: bool,
    /// Sum of the queue's `Pending::weight` (capped by `max_pending_bytes`).
    pending_bytes: usize,
    /// Requests given up at a queue cap whose answers are still to come: the next this many
    /// responses answer them, so they pair with nothing and later pairs stay right.
    answers_owed: u64,
    /// Wire bytes (head and body) and number of the responses seen whole: their ratio is
    /// the connection's typical response size, used to count responses lost in a gap.
    response_wire_bytes: u64,
    responses_whole: u64,
    /// Response bytes lost and not yet accounted for (boxed: rare).
    hole: Option<Box<Hole>>,
}

/// Response bytes lost since the last response head: settled when the next head is found.
#[derive(Debug)]
struct Hole {
    /// Lost bytes that may hold whole responses, plus the bytes seen of messages the loss
    /// cut (counted in `cut`).
    bytes: u64,
    /// Responses cut by the loss (already emitted; their bytes are in `bytes`).
    cut: u64,
    /// The response side's skipped-bytes count when the loss began: what the resync skipped
    /// since then was part of lost responses too.
    skipped_from: u64,
    /// Connection event of the last loss: only requests that arrived before it can have
    /// been answered in it.
    before_event: u64,
}

/// Per-call context.
struct Ctx<'a> {
    cfg: &'a HttpConfig,
    ts: Timestamp,
    out: &'a mut Vec<Transaction>,
    stats: &'a mut HttpStats,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Expecting (or accumulating in `buf`) a message head.
    Head,
    /// Reading the body of `msg`.
    Body,
    /// Discarding bytes until a line that starts like a message head.
    Resync,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkState {
    /// Reading a chunk-size line (partial line in `buf`).
    Size,
    /// Bytes left in the current chunk.
    Data(u64),
    /// Chunk data done; expecting CRLF (or a bare LF).
    DataEnd,
    /// Got the CR after chunk data; expecting LF.
    DataEndLf,
    /// After the last chunk: trailer fields up to an empty line (in `buf`).
    Trailers,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked(ChunkState),
    UntilClose,
}

#[derive(Debug)]
enum Message {
    Request(Request),
    Response(Response),
}

/// A message whose head is parsed and whose body is being read.
#[derive(Debug)]
struct InFlight {
    msg: Message,
    anomalies: AnomalySet,
    framing: Framing,
    /// Still appending to the body (off once the cap is hit or bytes were lost).
    keeping: bool,
    codings: Codings,
    /// Request: its pending id. Response: the id of the request it answers.
    link: Option<u64>,
    /// CONNECT 2xx or 101: the connection stops being HTTP after this message.
    opaque_after: bool,
    /// Bytes of its head on the wire (0 when it had none or it was cut).
    head_len: usize,
}

impl InFlight {
    fn body_mut(&mut self) -> &mut Body {
        match &mut self.msg {
            Message::Request(r) => &mut r.body,
            Message::Response(r) => &mut r.body,
        }
    }

    fn body(&self) -> &Body {
        match &self.msg {
            Message::Request(r) => &r.body,
            Message::Response(r) => &r.body,
        }
    }

    /// Bytes of this message seen on the wire so far (head and body).
    fn wire_len(&self) -> u64 {
        (self.head_len as u64).saturating_add(self.body().wire_len)
    }

    fn push_body(&mut self, bytes: &[u8], cx: &mut Ctx<'_>) {
        let cap = cx.cfg.max_body_bytes;
        let keeping = self.keeping;
        let body = self.body_mut();
        body.wire_len = body.wire_len.saturating_add(bytes.len() as u64);
        if !keeping {
            return;
        }
        let room = cap.saturating_sub(body.data.len());
        match bytes.get(..room) {
            None => body.data.extend_from_slice(bytes),
            Some(kept) => {
                body.data.extend_from_slice(kept);
                if bytes.len() > room {
                    body.truncated = true;
                    self.keeping = false;
                    self.anomalies.insert(Anomaly::BodyCap);
                    bump(&mut cx.stats.cap_hits, "body");
                }
            }
        }
    }

    /// `len` body bytes were lost: count them, stop keeping (the kept bytes must stay a
    /// contiguous prefix of the body).
    fn hole(&mut self, len: u64) {
        self.keeping = false;
        self.anomalies.insert(Anomaly::Gap);
        self.anomalies.insert(Anomaly::TruncatedBody);
        let body = self.body_mut();
        body.wire_len = body.wire_len.saturating_add(len);
        body.truncated = true;
    }

    fn cut(&mut self, why: Anomaly) {
        self.keeping = false;
        self.anomalies.insert(why);
        self.anomalies.insert(Anomaly::TruncatedBody);
        self.body_mut().truncated = true;
    }
}

/// Bytes a gap took that may have held whole messages.
#[derive(Clone, Copy, Debug)]
struct Lost {
    /// Lost bytes beyond the message in flight, or with the seen bytes of a message the
    /// loss cut (then `cut` is 1).
    bytes: u64,
    cut: u64,
}

/// What a step did with its input.
#[derive(Debug)]
enum Step {
    Consumed(usize),
    /// Consumed this many bytes, and these earlier bytes must be looked at again (in resync
    /// mode) before the rest of the input.
    Replay(usize, Vec<u8>),
}

/// Whether bytes look like the start of a message head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Probe {
    Yes,
    No,
    NeedMore,
}

fn probe_resync_method(b: &[u8]) -> Probe {
    let mut need_more = false;
    for m in RESYNC_METHODS {
        if b.starts_with(m) {
            return Probe::Yes;
        }
        need_more |= b.len() < m.len() && m.starts_with(b);
    }
    if need_more {
        Probe::NeedMore
    } else {
        Probe::No
    }
}

fn is_method_char(c: u8) -> bool {
    c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'-' || c == b'_'
}

/// A known method, alone (`GET` then a line break: servers answer such a line too).
fn is_known_method(m: &[u8]) -> bool {
    RESYNC_METHODS
        .iter()
        .any(|k| k.strip_suffix(b" ") == Some(m))
}

/// Any plausible method token (upper-case letters, digits, `-`, `_`) then a space, or a
/// known method then a line break.
fn probe_method_token(b: &[u8]) -> Probe {
    for (i, &c) in b.iter().enumerate().take(PROBE_LEN) {
        if c == b' ' {
            return if i == 0 { Probe::No } else { Probe::Yes };
        }
        if c == b'\r' || c == b'\n' {
            return match b.get(..i) {
                Some(m) if is_known_method(m) => Probe::Yes,
                _ => Probe::No,
            };
        }
        if !is_method_char(c) {
            return Probe::No;
        }
    }
    if b.len() >= PROBE_LEN {
        Probe::No
    } else {
        Probe::NeedMore
    }
}

fn probe_status_line(b: &[u8]) -> Probe {
    if b.starts_with(STATUS_LINE_PREFIX) {
        Probe::Yes
    } else if STATUS_LINE_PREFIX.starts_with(b) {
        Probe::NeedMore
    } else {
        Probe::No
    }
}

/// Which way a connection's first bytes, seen travelling in `dir`, really go. `None`:
/// too few bytes to tell.
fn orientation_of(dir: Dir, b: &[u8]) -> Option<Orientation> {
    let request = probe_resync_method(b);
    let response = probe_status_line(b);
    let (expected, inverted) = match dir {
        Dir::ToServer => (request, response),
        Dir::ToClient => (response, request),
    };
    match (expected, inverted) {
        (_, Probe::Yes) => Some(Orientation::Swapped),
        (Probe::Yes, _) => Some(Orientation::AsGiven),
        (Probe::NeedMore, _) | (_, Probe::NeedMore) => None,
        _ => Some(Orientation::AsGiven),
    }
}

/// End of a head (index after the empty line) searching line breaks from `from`.
fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let tail = buf.get(from..)?;
    for i in memchr_iter(b'\n', tail) {
        let at = from + i;
        match (buf.get(at + 1), buf.get(at + 2)) {
            (Some(b'\n'), _) => return Some(at + 2),
            (Some(b'\r'), Some(b'\n')) => return Some(at + 3),
            _ => {}
        }
    }
    None
}

/// Copies `a` then `b` into `dst` as far as it fits; returns the length written.
fn fill(dst: &mut [u8], a: &[u8], b: &[u8]) -> usize {
    let mut n = 0;
    for (d, s) in dst.iter_mut().zip(a.iter().chain(b)) {
        *d = *s;
        n += 1;
    }
    n
}

/// One direction's parser.
#[derive(Debug)]
struct Side {
    role: Role,
    phase: Phase,
    /// Partial head, chunk-size line, trailer section, or (resync) the tail of the
    /// current line.
    buf: Vec<u8>,
    /// Where the head-end search resumes in `buf`.
    scan: usize,
    /// The message start was checked to look like a head.
    verified: bool,
    /// The start line was seen whole and parses.
    line_ok: bool,
    head_ts: Timestamp,
    head_event: u64,
    /// Resync: packet time and event of the first byte in `buf`.
    line_ts: Timestamp,
    line_event: u64,
    /// Boxed: most connections sit idle between messages, and flow tables hold many.
    msg: Option<Box<InFlight>>,
    /// Bytes this direction discarded so far (its share of `HttpStats::bytes_skipped`).
    skipped: u64,
}

impl Side {
    fn new(role: Role) -> Side {
        Side {
            role,
            phase: Phase::Head,
            buf: Vec::new(),
            scan: 0,
            verified: false,
            line_ok: false,
            head_ts: Timestamp::ZERO,
            head_event: 0,
            line_ts: Timestamp::ZERO,
            line_event: 0,
            msg: None,
            skipped: 0,
        }
    }

    fn skip(&mut self, n: u64, stats: &mut HttpStats) {
        self.skipped += n;
        stats.bytes_skipped += n;
    }

    fn head_cap(cfg: &HttpConfig) -> usize {
        cfg.max_head_bytes.max(MIN_HEAD_CAP)
    }

    /// Whether a normal message start looks like a head (any method token).
    fn looks_like_head(&self, b: &[u8]) -> Probe {
        match self.role {
            Role::Response => probe_status_line(b),
            Role::Request => probe_method_token(b),
        }
    }

    /// Longest start line a resync accepts; a head longer than the head cap could not be
    /// parsed anyway, and a resync never holds more than the head cap.
    fn resync_line_cap(cfg: &HttpConfig) -> usize {
        MAX_RESYNC_START_LINE.min(Self::head_cap(cfg) / 2)
    }

    fn clear_buf(&mut self) {
        self.buf.clear();
        if self.buf.capacity() > KEEP_BUF_CAPACITY {
            self.buf = Vec::new();
        }
        self.scan = 0;
    }

    /// Gives back a buffer taken with `mem::take`, keeping its allocation when small.
    fn restore_buf(&mut self, mut v: Vec<u8>) {
        if self.buf.is_empty() && v.capacity() <= KEEP_BUF_CAPACITY {
            v.clear();
            self.buf = v;
        }
    }

    fn start_head(&mut self) {
        self.phase = Phase::Head;
        self.verified = false;
        self.line_ok = false;
        self.clear_buf();
    }

    fn enter_resync(&mut self, stats: &mut HttpStats) {
        if self.phase != Phase::Resync {
            stats.resyncs += 1;
        }
        self.phase = Phase::Resync;
        self.clear_buf();
    }

    fn step(&mut self, sh: &mut Shared, src: &[u8], cx: &mut Ctx<'_>) -> Step {
        match self.phase {
            Phase::Resync => Step::Consumed(self.step_resync(sh.event, src, cx)),
            Phase::Head => self.step_head(sh, src, cx),
            Phase::Body => self.step_body(sh, src, cx),
        }
    }

    /// Hunts line by line for a start line: the first position in a line (not only its
    /// start: a body without a final line break is often followed directly by the next
    /// message) where a known method and a space, or `HTTP/1.`, begin a start line that
    /// parses. Candidates are found with memchr and judged in place once their line is
    /// complete, so the hunt costs linear time whatever the bytes; a line that straddles
    /// inputs is kept (its last `resync_line_cap` bytes at most) until its break arrives.
    fn step_resync(&mut self, event: u64, src: &[u8], cx: &mut Ctx<'_>) -> usize {
        let line_cap = Self::resync_line_cap(cx.cfg);
        let Some(nl) = memchr(b'\n', src) else {
            if self.buf.is_empty() {
                self.line_ts = cx.ts;
                self.line_event = event;
            }
            // Bytes more than `line_cap` before the line's end cannot start a start line.
            if src.len() >= line_cap {
                let keep = src.get(src.len() - line_cap..).unwrap_or(src);
                self.skip((self.buf.len() + src.len() - keep.len()) as u64, cx.stats);
                self.buf.clear();
                self.buf.extend_from_slice(keep);
            } else {
                self.buf.extend_from_slice(src);
                if self.buf.len() > 2 * line_cap {
                    let drop = self.buf.len() - line_cap;
                    self.buf.drain(..drop);
                    self.skip(drop as u64, cx.stats);
                }
            }
            return src.len();
        };
        let consumed = nl + 1;
        let line_end = src.get(..consumed).unwrap_or(src);
        if self.buf.is_empty() {
            return match find_start_line(self.role, line_end, line_cap) {
                Some(c) => {
                    // Parse the head from the input itself (first byte arrives now).
                    self.skip(c as u64, cx.stats);
                    self.start_head();
                    self.verified = true;
                    self.line_ok = true;
                    c
                }
                None => {
                    self.skip(consumed as u64, cx.stats);
                    consumed
                }
            };
        }
        self.buf.extend_from_slice(line_end);
        match find_start_line(self.role, &self.buf, line_cap) {
            Some(c) => {
                self.skip(c as u64, cx.stats);
                self.buf.drain(..c);
                self.phase = Phase::Head;
                self.verified = true;
                self.line_ok = true;
                self.scan = 0;
                self.head_ts = self.line_ts;
                self.head_event = self.line_event;
            }
            None => {
                self.skip(self.buf.len() as u64, cx.stats);
                self.clear_buf();
            }
        }
        consumed
    }
}

/// Next position in `hay` that could start a message head for `role`: a first byte of a
/// known method, or the `H` of `HTTP/1.`.
fn next_candidate(role: Role, hay: &[u8]) -> Option<usize> {
    match role {
        Role::Response => memchr(b'H', hay),
        Role::Request => {
            // First letters of RESYNC_METHODS. Each search stops at the best hit so far,
            // so the scan stays linear.
            let finders: [Finder; 3] = [
                |h| memchr3(b'G', b'P', b'D', h),
                |h| memchr3(b'H', b'O', b'C', h),
                |h| memchr(b'T', h),
            ];
            let mut best = None;
            let mut end = hay.len();
            for find in finders {
                if let Some(i) = hay.get(..end).and_then(find) {
                    best = Some(i);
                    end = i;
                }
            }
            best
        }
    }
}

/// Where in `line` (ending with its line break) a start line for `role` begins, if any:
/// the first candidate that looks like a head, is at most `line_cap` long and parses.
fn find_start_line(role: Role, line: &[u8], line_cap: usize) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = line.get(from..).and_then(|s| next_candidate(role, s)) {
        let c = from + i;
        let rest = line.get(c..).unwrap_or_default();
        let looks = match role {
            Role::Request => probe_resync_method(rest),
            Role::Response => probe_status_line(rest),
        };
        if rest.len() <= line_cap
            && looks == Probe::Yes
            && judge_start_line(role, rest, 0, false) == Some(LineVerdict::Strict)
        {
            return Some(c);
        }
        from = c + 1;
    }
    None
}

impl Side {
    fn step_head(&mut self, sh: &mut Shared, src: &[u8], cx: &mut Ctx<'_>) -> Step {
        if self.buf.is_empty() {
            // Empty lines between messages are tolerated (RFC 9112 §2.2).
            let blank = src
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
            if blank > 0 {
                return Step::Consumed(blank);
            }
            self.head_ts = cx.ts;
            self.head_event = sh.event;
        }
        if !self.verified {
            let mut probe = [0u8; PROBE_LEN];
            let n = fill(&mut probe, &self.buf, src);
            match self.looks_like_head(probe.get(..n).unwrap_or_default()) {
                Probe::Yes => self.verified = true,
                Probe::NeedMore if n < PROBE_LEN => {
                    // Everything so far fits in the probe, so this stays tiny.
                    self.buf.extend_from_slice(src);
                    return Step::Consumed(src.len());
                }
                Probe::No | Probe::NeedMore
                    if self.role == Role::Response && next_answers_http09(sh) =>
                {
                    // The answer to an HTTP/0.9 request: no head, a body up to the close.
                    let held = std::mem::take(&mut self.buf);
                    let mut anomalies = AnomalySet::default();
                    anomalies.insert(Anomaly::ResponseNoHead);
                    let head = ParsedHead {
                        line: StartLine::Response {
                            status: 0,
                            version: 0,
                        },
                        headers: Vec::new(),
                        anomalies,
                        len: 0,
                    };
                    let framing = body::framing_headers(&[]);
                    self.begin_message(sh, head, Some(framing), cx);
                    if let Some(m) = self.msg.as_mut() {
                        m.push_body(&held, cx);
                    }
                    self.restore_buf(held);
                    return Step::Consumed(0);
                }
                Probe::No | Probe::NeedMore => {
                    // Not a message start: hunt from the next byte on.
                    self.skip(1, cx.stats);
                    let replay = self.buf.get(1..).map(<[u8]>::to_vec);
                    self.enter_resync(cx.stats);
                    return match replay {
                        Some(bytes) => Step::Replay(0, bytes),
                        None => Step::Consumed(1),
                    };
                }
            }
        }
        let cap = Self::head_cap(cx.cfg);
        if self.buf.is_empty() {
            // Fast path: the whole head is in this input; parse it in place.
            let window = src.get(..cap).unwrap_or(src);
            if let Some(end) = find_head_end(window, 0) {
                let head = window.get(..end).unwrap_or(window);
                return match self.on_head(sh, head, cx) {
                    Ok(used) => Step::Consumed(used),
                    Err(Unparsable) => match self.unparsable(head, cx) {
                        Some(_) => Step::Consumed(1),
                        None => Step::Consumed(end),
                    },
                };
            }
            if !self.line_ok {
                match judge_start_line(self.role, window, 0, true) {
                    Some(LineVerdict::Strict | LineVerdict::Lenient) => self.line_ok = true,
                    Some(LineVerdict::Alone(len)) => {
                        let line = window.get(..len).unwrap_or(window);
                        return match self.on_head(sh, line, cx) {
                            Ok(used) => Step::Consumed(used),
                            Err(Unparsable) => match self.unparsable(line, cx) {
                                Some(_) => Step::Consumed(1),
                                None => Step::Consumed(len),
                            },
                        };
                    }
                    Some(LineVerdict::Bad) => {
                        cx.stats.unparsable_heads += 1;
                        self.skip(1, cx.stats);
                        self.enter_resync(cx.stats);
                        return Step::Consumed(1);
                    }
                    None => {}
                }
            }
            if src.len() >= cap {
                self.head_too_large(sh, window, cx);
                return Step::Consumed(window.len());
            }
            self.buf.extend_from_slice(src);
            self.scan = src.len().saturating_sub(2);
            return Step::Consumed(src.len());
        }
        let old = self.buf.len();
        let take = src.len().min(cap.saturating_sub(old));
        self.buf
            .extend_from_slice(src.get(..take).unwrap_or_default());
        // A request line without a version is a head by itself, whether or not an empty
        // line happens to follow.
        let alone = match self.line_ok {
            true => None,
            false => judge_start_line(self.role, &self.buf, old, true),
        };
        let end = match alone {
            Some(LineVerdict::Alone(len)) => Some(len),
            _ => find_head_end(&self.buf, self.scan),
        };
        if let Some(end) = end {
            self.buf.truncate(end);
            let head = std::mem::take(&mut self.buf);
            let step = match self.on_head(sh, &head, cx) {
                Ok(used) => Step::Consumed(used.saturating_sub(old)),
                Err(Unparsable) => match self.unparsable(&head, cx) {
                    Some(replay) => Step::Replay(end.saturating_sub(old), replay.to_vec()),
                    None => Step::Consumed(end.saturating_sub(old)),
                },
            };
            self.restore_buf(head);
            return step;
        }
        if !self.line_ok {
            match alone {
                Some(LineVerdict::Strict | LineVerdict::Lenient) => self.line_ok = true,
                Some(LineVerdict::Alone(_) | LineVerdict::Bad) => {
                    cx.stats.unparsable_heads += 1;
                    self.skip(1, cx.stats);
                    let replay = self.buf.get(1..).unwrap_or_default().to_vec();
                    self.enter_resync(cx.stats);
                    return Step::Replay(take, replay);
                }
                None => {}
            }
        }
        if self.buf.len() >= cap {
            let head = std::mem::take(&mut self.buf);
            self.head_too_large(sh, &head, cx);
            self.restore_buf(head);
            return Step::Consumed(take);
        }
        self.scan = self.buf.len().saturating_sub(2);
        Step::Consumed(take)
    }

    /// A complete head did not parse. A bad start line means this was no message start:
    /// hunt again from its second byte (returned for another look). A good start line with
    /// headers beyond repair: skip the whole head, so a hostile head costs one parse.
    fn unparsable<'h>(&mut self, head: &'h [u8], cx: &mut Ctx<'_>) -> Option<&'h [u8]> {
        cx.stats.unparsable_heads += 1;
        self.enter_resync(cx.stats);
        if self.line_ok
            || judge_start_line(self.role, head, 0, true).is_some_and(LineVerdict::parses)
        {
            self.skip(head.len() as u64, cx.stats);
            None
        } else {
            self.skip(1, cx.stats);
            Some(head.get(1..).unwrap_or_default())
        }
    }

    /// The head outgrew its cap: keep what the start line tells, flag it, and resync (the
    /// rest of the head, and any body, cannot be framed).
    fn head_too_large(&mut self, sh: &mut Shared, partial: &[u8], cx: &mut Ctx<'_>) {
        bump(&mut cx.stats.cap_hits, "head");
        match start_line_only(self.role, partial) {
            Some((line, mut anomalies)) => {
                anomalies.insert(Anomaly::HeadTooLarge);
                let head = ParsedHead {
                    line,
                    headers: Vec::new(),
                    anomalies,
                    // Cut: not a size to learn typical responses from.
                    len: 0,
                };
                self.begin_message(sh, head, None, cx);
            }
            None => cx.stats.unparsable_heads += 1,
        }
        self.enter_resync(cx.stats);
    }

    /// A complete head: starts its message. Returns the bytes of `head` it used (all of
    /// it, but for a request line without a version, which is a head by itself).
    fn on_head(
        &mut self,
        sh: &mut Shared,
        head: &[u8],
        cx: &mut Ctx<'_>,
    ) -> Result<usize, Unparsable> {
        let mut parsed = parse_head(self.role, head, cx.cfg.max_headers)?;
        if parsed.anomalies.contains(Anomaly::TooManyHeaders) {
            bump(&mut cx.stats.cap_hits, "headers");
        }
        let fh = body::framing_headers(&parsed.headers);
        if fh.codings.unknown {
            parsed.anomalies.insert(Anomaly::UnknownEncoding);
        }
        parsed.len = parsed.len.min(head.len());
        let used = parsed.len;
        self.begin_message(sh, parsed, Some(fh), cx);
        Ok(used)
    }

    /// Sets up the message a head starts: pairing, framing, and either the body phase or
    /// completion. `fh` is `None` when the head was cut (no framing: resync follows).
    fn begin_message(
        &mut self,
        sh: &mut Shared,
        head: ParsedHead,
        fh: Option<body::FramingHeaders>,
        cx: &mut Ctx<'_>,
    ) {
        let ParsedHead {
            line,
            headers,
            mut anomalies,
            len: head_len,
        } = head;
        let ts = self.head_ts;
        let codings = fh.map(|f| f.codings).unwrap_or_default();
        let (msg, framing, link, opaque_after) = match line {
            StartLine::Request {
                method,
                target,
                version,
            } => {
                cx.stats.requests += 1;
                let kind = MethodKind::of(&method);
                let http09 = anomalies.contains(Anomaly::RequestLineNoVersion);
                let id = push_pending(sh, kind, self.head_event, http09, cx);
                let framing = fh.map(|f| request_framing(&f, &mut anomalies));
                let req = Request {
                    method,
                    target,
                    version,
                    headers,
                    body: Body::default(),
                    ts,
                };
                (Message::Request(req), framing, Some(id), false)
            }
            StartLine::Response { status, version } => {
                if (100..200).contains(&status) && status != 101 {
                    // Interim (100 Continue, 103 Early Hints): the final response pairs.
                    cx.stats.interim_responses += 1;
                    self.start_head();
                    return;
                }
                cx.stats.responses += 1;
                settle_hole(sh, self.skipped, cx);
                let claim = match claim(sh, self.head_event) {
                    Claim::Request(id, method) => Some((id, method)),
                    Claim::Owed => {
                        anomalies.insert(Anomaly::PendingCap);
                        None
                    }
                    Claim::Nothing => None,
                };
                let method = claim.map_or(MethodKind::Other, |(_, m)| m);
                let mut opaque = false;
                let framing = fh.map(|f| {
                    if status == 101 {
                        anomalies.insert(Anomaly::Upgrade);
                        opaque = true;
                        Some(Framing::None)
                    } else if method == MethodKind::Connect && (200..300).contains(&status) {
                        anomalies.insert(Anomaly::Connect);
                        opaque = true;
                        Some(Framing::None)
                    } else if method == MethodKind::Head || status == 204 || status == 304 {
                        Some(Framing::None)
                    } else {
                        response_framing(&f, &mut anomalies)
                    }
                });
                let resp = Response {
                    status,
                    version,
                    headers,
                    body: Body::default(),
                    ts,
                };
                (
                    Message::Response(resp),
                    framing,
                    claim.map(|(id, _)| id),
                    opaque,
                )
            }
        };
        let mut m = InFlight {
            msg,
            anomalies,
            framing: Framing::None,
            keeping: true,
            codings,
            link,
            opaque_after,
            head_len,
        };
        match framing {
            Some(Some(Framing::None)) | None => {
                // No body, or a cut head (the caller resyncs).
                finish(sh, cx, m);
                if fh.is_some() {
                    self.start_head();
                }
            }
            Some(Some(Framing::Length(0))) => {
                finish(sh, cx, m);
                self.start_head();
            }
            Some(Some(f)) => {
                if let Framing::Length(n) = f {
                    // Reserve for the declared length, but never trust it beyond a little.
                    let hint = usize::try_from(n)
                        .unwrap_or(usize::MAX)
                        .min(cx.cfg.max_body_bytes)
                        .min(64 * 1024);
                    m.body_mut().data.reserve(hint);
                }
                m.framing = f;
                self.msg = Some(Box::new(m));
                self.phase = Phase::Body;
                self.clear_buf();
            }
            Some(None) => {
                // Malformed framing: emit the head, hunt for the next message.
                finish(sh, cx, m);
                self.enter_resync(cx.stats);
            }
        }
    }

    /// Takes the message in flight to completion and expects the next head.
    fn complete(&mut self, sh: &mut Shared, cx: &mut Ctx<'_>) {
        if let Some(m) = self.msg.take() {
            finish(sh, cx, *m);
        }
        self.start_head();
    }

    fn step_body(&mut self, sh: &mut Shared, src: &[u8], cx: &mut Ctx<'_>) -> Step {
        let Some(m) = self.msg.as_mut() else {
            self.start_head();
            return Step::Consumed(0);
        };
        match m.framing {
            Framing::Length(remaining) => {
                let n = usize::try_from(remaining).map_or(src.len(), |r| r.min(src.len()));
                m.push_body(src.get(..n).unwrap_or(src), cx);
                let left = remaining.saturating_sub(n as u64);
                m.framing = Framing::Length(left);
                if left == 0 {
                    self.complete(sh, cx);
                }
                Step::Consumed(n)
            }
            Framing::UntilClose => {
                m.push_body(src, cx);
                Step::Consumed(src.len())
            }
            Framing::Chunked(state) => self.step_chunked(state, sh, src, cx),
            Framing::None => {
                self.complete(sh, cx);
                Step::Consumed(0)
            }
        }
    }

    fn set_chunk_state(&mut self, state: ChunkState) {
        if let Some(m) = self.msg.as_mut() {
            m.framing = Framing::Chunked(state);
        }
    }

    /// The chunked framing broke: finish the message as cut, and hunt for the next head
    /// starting with `replay` (the broken line so far, if buffered) then the input.
    fn bad_chunk(&mut self, sh: &mut Shared, cx: &mut Ctx<'_>) -> Step {
        if let Some(m) = self.msg.as_mut() {
            m.cut(Anomaly::BadChunk);
        }
        if let Some(m) = self.msg.take() {
            finish(sh, cx, *m);
        }
        let replay = std::mem::take(&mut self.buf);
        self.enter_resync(cx.stats);
        if replay.is_empty() {
            self.restore_buf(replay);
            Step::Consumed(0)
        } else {
            Step::Replay(0, replay)
        }
    }

    fn step_chunked(
        &mut self,
        state: ChunkState,
        sh: &mut Shared,
        src: &[u8],
        cx: &mut Ctx<'_>,
    ) -> Step {
        match state {
            ChunkState::Size => {
                let line_cap = MAX_CHUNK_LINE.min(Self::head_cap(cx.cfg));
                let Some(i) = memchr(b'\n', src) else {
                    if self.buf.len() + src.len() > line_cap {
                        return self.bad_chunk(sh, cx);
                    }
                    self.buf.extend_from_slice(src);
                    return Step::Consumed(src.len());
                };
                let line = src.get(..i).unwrap_or_default();
                let size = if self.buf.is_empty() {
                    body::chunk_size(line)
                } else if self.buf.len() + line.len() > line_cap {
                    None
                } else {
                    let old = self.buf.len();
                    self.buf.extend_from_slice(line);
                    let size = body::chunk_size(&self.buf);
                    self.buf.truncate(old);
                    size
                };
                match size {
                    Some(0) => {
                        // Seed with the size line's break so an immediate CRLF ends the
                        // (empty) trailer section as a head end would.
                        self.clear_buf();
                        self.buf.push(b'\n');
                        self.set_chunk_state(ChunkState::Trailers);
                    }
                    Some(n) => {
                        self.clear_buf();
                        self.set_chunk_state(ChunkState::Data(n));
                    }
                    None => return self.bad_chunk(sh, cx),
                }
                Step::Consumed(i + 1)
            }
            ChunkState::Data(remaining) => {
                let n = usize::try_from(remaining).map_or(src.len(), |r| r.min(src.len()));
                if let Some(m) = self.msg.as_mut() {
                    m.push_body(src.get(..n).unwrap_or(src), cx);
                }
                let left = remaining.saturating_sub(n as u64);
                self.set_chunk_state(if left == 0 {
                    ChunkState::DataEnd
                } else {
                    ChunkState::Data(left)
                });
                Step::Consumed(n)
            }
            ChunkState::DataEnd | ChunkState::DataEndLf => match (state, src.first()) {
                (ChunkState::DataEnd, Some(b'\r')) => {
                    self.set_chunk_state(ChunkState::DataEndLf);
                    Step::Consumed(1)
                }
                (_, Some(b'\n')) => {
                    self.set_chunk_state(ChunkState::Size);
                    Step::Consumed(1)
                }
                (_, None) => Step::Consumed(0),
                _ => self.bad_chunk(sh, cx),
            },
            ChunkState::Trailers => {
                let cap = Self::head_cap(cx.cfg);
                let old = self.buf.len();
                let take = src.len().min(cap.saturating_sub(old));
                self.buf
                    .extend_from_slice(src.get(..take).unwrap_or_default());
                if let Some(end) = find_head_end(&self.buf, self.scan) {
                    let consumed = end.saturating_sub(old);
                    let section = self.buf.get(1..end).unwrap_or_default();
                    let (trailers, anomaly) = parse_trailers(section, cx.cfg.max_headers);
                    if let Some(m) = self.msg.as_mut() {
                        if let Some(a) = anomaly {
                            m.anomalies.insert(a);
                            if a == Anomaly::TooManyHeaders {
                                bump(&mut cx.stats.cap_hits, "headers");
                            }
                        }
                        m.body_mut().trailers = trailers;
                    }
                    self.complete(sh, cx);
                    return Step::Consumed(consumed);
                }
                if self.buf.len() >= cap {
                    bump(&mut cx.stats.cap_hits, "head");
                    if let Some(m) = self.msg.as_mut() {
                        m.anomalies.insert(Anomaly::HeadTooLarge);
                    }
                    if let Some(m) = self.msg.take() {
                        finish(sh, cx, *m);
                    }
                    self.enter_resync(cx.stats);
                    return Step::Consumed(take);
                }
                self.scan = self.buf.len().saturating_sub(2);
                Step::Consumed(take)
            }
        }
    }

    /// `len` bytes of this direction were lost. Returns what was lost when the loss may
    /// have swallowed whole messages (the direction resyncs); `None` when it only cut a
    /// hole in a body of known extent.
    fn on_gap(&mut self, sh: &mut Shared, len: u64, cx: &mut Ctx<'_>) -> Option<Lost> {
        let mut lost = Lost { bytes: len, cut: 0 };
        match self.phase {
            Phase::Body => {
                let Some(m) = self.msg.as_mut() else {
                    self.enter_resync(cx.stats);
                    return Some(lost);
                };
                match m.framing {
                    Framing::Length(remaining) => {
                        // Known length: the loss only cuts a hole in this body.
                        m.hole(len.min(remaining));
                        if len < remaining {
                            m.framing = Framing::Length(remaining - len);
                            return None;
                        }
                        self.complete(sh, cx);
                        if len == remaining {
                            return None;
                        }
                        lost.bytes = len - remaining;
                    }
                    Framing::Chunked(ChunkState::Data(remaining)) if len < remaining => {
                        m.hole(len);
                        m.framing = Framing::Chunked(ChunkState::Data(remaining - len));
                        return None;
                    }
                    Framing::UntilClose => {
                        m.hole(len);
                        return None;
                    }
                    _ => {
                        // Where this message ended in the loss is unknown: count it as one
                        // of the messages lost, with what was seen of it.
                        lost.bytes = len.saturating_add(m.wire_len());
                        lost.cut = 1;
                        m.cut(Anomaly::Gap);
                        if let Some(m) = self.msg.take() {
                            finish(sh, cx, *m);
                        }
                    }
                }
            }
            // A partial head, or the partial line of a hunt: the loss breaks it.
            Phase::Head | Phase::Resync => self.skip(self.buf.len() as u64, cx.stats),
        }
        self.enter_resync(cx.stats);
        self.clear_buf();
        Some(lost)
    }

    /// End of the connection: bodies read until close are complete, others are cut.
    fn on_close(&mut self, sh: &mut Shared, cx: &mut Ctx<'_>) {
        match self.phase {
            Phase::Body => {
                if let Some(m) = self.msg.as_mut()
                    && !matches!(m.framing, Framing::UntilClose | Framing::None)
                {
                    m.cut(Anomaly::TruncatedBody);
                }
                if let Some(m) = self.msg.take() {
                    finish(sh, cx, *m);
                }
            }
            Phase::Head | Phase::Resync => self.skip(self.buf.len() as u64, cx.stats),
        }
        self.phase = Phase::Resync;
        self.buf = Vec::new();
        self.scan = 0;
    }

    fn buffered_bytes(&self) -> usize {
        self.buf.len()
            + self.msg.as_ref().map_or(0, |m| match &m.msg {
                Message::Request(r) => r.body.data.len(),
                Message::Response(r) => r.body.data.len(),
            })
    }
}

/// Framing of a request body (RFC 9112 §6.3). `None`: the length cannot be determined.
fn request_framing(f: &body::FramingHeaders, anomalies: &mut AnomalySet) -> Option<Framing> {
    let cl = f.content_length;
    match f.transfer_encoding {
        TransferEncoding::Chunked => {
            flag_cl_with_te(cl, anomalies);
            Some(Framing::Chunked(ChunkState::Size))
        }
        TransferEncoding::NotChunked => {
            // A request must end in chunked when it has Transfer-Encoding: 400 and close.
            flag_cl_with_te(cl, anomalies);
            anomalies.insert(Anomaly::BadHead);
            None
        }
        TransferEncoding::Absent => length_framing(cl, anomalies, Framing::None),
    }
}

/// Framing of a response body that may have one (RFC 9112 §6.3).
fn response_framing(f: &body::FramingHeaders, anomalies: &mut AnomalySet) -> Option<Framing> {
    let cl = f.content_length;
    match f.transfer_encoding {
        TransferEncoding::Chunked => {
            flag_cl_with_te(cl, anomalies);
            Some(Framing::Chunked(ChunkState::Size))
        }
        TransferEncoding::NotChunked => {
            flag_cl_with_te(cl, anomalies);
            Some(Framing::UntilClose)
        }
        TransferEncoding::Absent => length_framing(cl, anomalies, Framing::UntilClose),
    }
}

fn flag_cl_with_te(cl: ContentLength, anomalies: &mut AnomalySet) {
    match cl {
        ContentLength::Absent => {}
        ContentLength::Valid(_) => anomalies.insert(Anomaly::ClAndTe),
        ContentLength::Differing(_) => {
            anomalies.insert(Anomaly::ClAndTe);
            anomalies.insert(Anomaly::DuplicateContentLength);
        }
        ContentLength::Invalid => {
            anomalies.insert(Anomaly::ClAndTe);
            anomalies.insert(Anomaly::InvalidContentLength);
        }
    }
}

fn length_framing(
    cl: ContentLength,
    anomalies: &mut AnomalySet,
    absent: Framing,
) -> Option<Framing> {
    match cl {
        ContentLength::Absent => Some(absent),
        ContentLength::Valid(n) => Some(Framing::Length(n)),
        ContentLength::Differing(first) => {
            // Ambiguous (a smuggling tell); the first value is what most servers use.
            anomalies.insert(Anomaly::DuplicateContentLength);
            Some(Framing::Length(first))
        }
        ContentLength::Invalid => {
            anomalies.insert(Anomaly::InvalidContentLength);
            None
        }
    }
}

/// Queues a request head for pairing. Over `max_pending_requests`, the oldest unanswered
/// request is given up.
fn push_pending(
    sh: &mut Shared,
    method: MethodKind,
    first_event: u64,
    http09: bool,
    cx: &mut Ctx<'_>,
) -> u64 {
    let max = cx.cfg.max_pending_requests.max(1);
    while sh.pending.len() >= max && evict_oldest(sh, cx, "pending") {}
    let id = sh.next_id;
    sh.next_id += 1;
    let weight = size_of::<Pending>();
    sh.pending_bytes = sh.pending_bytes.saturating_add(weight);
    sh.pending.push_back(Pending {
        id,
        request: None,
        request_anomalies: AnomalySet::default(),
        method,
        claimed: false,
        response: None,
        after_gap: std::mem::take(&mut sh.request_gap),
        first_event,
        http09,
        weight,
    });
    id
}

/// Heap bytes of a header field beyond its inline storage.
fn header_heap_bytes(h: &Header) -> usize {
    let name = if h.name.is_heap_allocated() {
        h.name.capacity()
    } else {
        0
    };
    let value = if h.value.spilled() {
        h.value.capacity()
    } else {
        0
    };
    name + value
}

/// Bytes a kept message holds: head fields, body, trailers.
fn message_weight(headers: &[Header], body: &Body, strings: usize) -> usize {
    let fields = |hs: &[Header]| size_of_val(hs) + hs.iter().map(header_heap_bytes).sum::<usize>();
    strings + fields(headers) + body.data.capacity() + fields(&body.trailers)
}

fn request_weight(r: &Request) -> usize {
    message_weight(
        &r.headers,
        &r.body,
        r.method.capacity() + r.target.capacity(),
    )
}

fn response_weight(r: &Response) -> usize {
    message_weight(&r.headers, &r.body, 0)
}

/// Charges `extra` more bytes to the queue entry at `pos`, then gives up the oldest
/// unanswered requests while the queue holds more than `max_pending_bytes`.
fn charge(sh: &mut Shared, pos: usize, extra: usize, cx: &mut Ctx<'_>) {
    if let Some(p) = sh.pending.get_mut(pos) {
        p.weight = p.weight.saturating_add(extra);
        sh.pending_bytes = sh.pending_bytes.saturating_add(extra);
    }
    while sh.pending_bytes > cx.cfg.max_pending_bytes && evict_oldest(sh, cx, "pending-bytes") {}
}

/// Takes the queue entry at `pos` out, and its bytes off the queue's charge.
fn take_pending(sh: &mut Shared, pos: usize) -> Option<Pending> {
    let p = sh.pending.remove(pos)?;
    sh.pending_bytes = sh.pending_bytes.saturating_sub(p.weight);
    Some(p)
}

/// A queue cap was reached: the oldest request no response has claimed is given up
/// (emitted unanswered, `cap` counted). Its answer is still to come first, so the next
/// response is owed to it and pairs with nothing: later pairs stay right. False when no
/// complete request waits unclaimed.
fn evict_oldest(sh: &mut Shared, cx: &mut Ctx<'_>, cap: &'static str) -> bool {
    let Some(pos) = sh.pending.iter().position(|p| !p.claimed) else {
        return false;
    };
    // Only the newest request can still be arriving; with nothing older to give up, the
    // queue holds one complete request at most.
    if sh.pending.get(pos).is_none_or(|p| p.request.is_none()) {
        return false;
    }
    let Some(p) = take_pending(sh, pos) else {
        return false;
    };
    bump(&mut cx.stats.cap_hits, cap);
    sh.answers_owed += 1;
    let mut an = p.request_anomalies;
    an.insert(Anomaly::PendingCap);
    an.insert(Anomaly::RequestWithoutResponse);
    emit(cx, p.request, None, an);
    true
}

/// What a final response head answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Claim {
    /// The waiting request with this id.
    Request(u64, MethodKind),
    /// A request given up at a queue cap.
    Owed,
    /// Nothing seen: a lost request, or none at all.
    Nothing,
}

/// Matches a final response head (first byte in `event`) with the oldest unanswered
/// request, unless that request arrived after the response began (lost requests), or the
/// answer is owed to a request given up at a cap.
fn claim(sh: &mut Shared, event: u64) -> Claim {
    if sh.answers_owed > 0 {
        sh.answers_owed -= 1;
        return Claim::Owed;
    }
    let Some(p) = sh.pending.iter_mut().find(|p| !p.claimed) else {
        return Claim::Nothing;
    };
    if p.after_gap && event < p.first_event {
        return Claim::Nothing;
    }
    p.claimed = true;
    Claim::Request(p.id, p.method)
}

/// Whether the next response answers an HTTP/0.9 request (and so may come without a head).
fn next_answers_http09(sh: &Shared) -> bool {
    sh.answers_owed == 0
        && sh.hole.is_none()
        && sh
            .pending
            .iter()
            .find(|p| !p.claimed)
            .is_some_and(|p| p.http09)
}

/// How many responses of the connection's typical size `bytes` hold (rounded); `None`
/// before any response was seen whole.
fn typical_count(bytes: u64, wire_bytes: u64, whole: u64) -> Option<u64> {
    if wire_bytes == 0 || whole == 0 {
        return None;
    }
    let n = (u128::from(bytes) * u128::from(whole) + u128::from(wire_bytes) / 2)
        / u128::from(wire_bytes);
    Some(u64::try_from(n).unwrap_or(u64::MAX))
}

/// A response head was found after lost response bytes (`skipped_now`: the response side's
/// skipped bytes so far). The loss held about as many responses as its bytes (with what
/// the resync skipped and what was seen of cut messages) make responses of the
/// connection's typical size; that many of the oldest requests that arrived before the
/// loss are given up as answered in it, so the responses that follow pair with the
/// requests they answer. Before any response was seen whole there is no typical size, and
/// every request that arrived before the loss is given up instead.
fn settle_hole(sh: &mut Shared, skipped_now: u64, cx: &mut Ctx<'_>) {
    let Some(hole) = sh.hole.take() else {
        return;
    };
    let bytes = hole
        .bytes
        .saturating_add(skipped_now.saturating_sub(hole.skipped_from));
    let mut left = typical_count(bytes, sh.response_wire_bytes, sh.responses_whole)
        .map_or(u64::MAX, |n| n.saturating_sub(hole.cut));
    let owed = left.min(sh.answers_owed);
    sh.answers_owed -= owed;
    left -= owed;
    while left > 0 {
        let Some(pos) = sh.pending.iter().position(|p| !p.claimed) else {
            break;
        };
        let answerable = sh
            .pending
            .get(pos)
            .is_some_and(|p| p.request.is_some() && p.first_event < hole.before_event);
        if !answerable {
            break;
        }
        let Some(p) = take_pending(sh, pos) else {
            break;
        };
        left -= 1;
        cx.stats.gap_unanswered += 1;
        let mut an = p.request_anomalies;
        an.insert(Anomaly::Gap);
        an.insert(Anomaly::RequestWithoutResponse);
        emit(cx, p.request, None, an);
    }
}

/// A message is complete (or cut): decode its body and pair or queue it.
fn finish(sh: &mut Shared, cx: &mut Ctx<'_>, mut m: InFlight) {
    decode_body(&mut m, cx);
    let whole_response = matches!(m.msg, Message::Response(_))
        && m.head_len > 0
        && !m.body().truncated
        && ![
            Anomaly::Gap,
            Anomaly::TruncatedBody,
            Anomaly::BadChunk,
            Anomaly::ResponseNoHead,
        ]
        .iter()
        .any(|a| m.anomalies.contains(*a));
    if whole_response {
        sh.response_wire_bytes = sh.response_wire_bytes.saturating_add(m.wire_len());
        sh.responses_whole += 1;
    }
    let InFlight {
        msg,
        anomalies,
        link,
        opaque_after,
        ..
    } = m;
    match msg {
        Message::Request(req) => {
            let pos = link.and_then(|id| sh.pending.iter().rposition(|p| p.id == id));
            match pos.and_then(|pos| sh.pending.get_mut(pos).map(|p| (pos, p))) {
                Some((pos, p)) => {
                    if p.response.is_some() {
                        // Answered before it finished (early response).
                        if let Some(p) = take_pending(sh, pos) {
                            let (resp, resp_an) = p.response.unzip();
                            let an = AnomalySet(anomalies.0 | resp_an.map_or(0, |a| a.0));
                            emit(cx, Some(req), resp, an);
                        }
                    } else {
                        let weight = request_weight(&req);
                        p.request = Some(req);
                        p.request_anomalies = anomalies;
                        charge(sh, pos, weight, cx);
                    }
                }
                None => {
                    let mut an = anomalies;
                    an.insert(Anomaly::RequestWithoutResponse);
                    emit(cx, Some(req), None, an);
                }
            }
        }
        Message::Response(resp) => {
            let pos = link.and_then(|id| sh.pending.iter().position(|p| p.id == id));
            match pos.and_then(|pos| sh.pending.get_mut(pos).map(|p| (pos, p))) {
                Some((pos, p)) => {
                    if p.request.is_some() {
                        if let Some(p) = take_pending(sh, pos) {
                            let an = AnomalySet(anomalies.0 | p.request_anomalies.0);
                            emit(cx, p.request, Some(resp), an);
                        }
                    } else {
                        let weight = response_weight(&resp);
                        p.response = Some((resp, anomalies));
                        charge(sh, pos, weight, cx);
                    }
                }
                None => {
                    let mut an = anomalies;
                    an.insert(Anomaly::ResponseWithoutRequest);
                    emit(cx, None, Some(resp), an);
                }
            }
            if opaque_after {
                sh.opaque = true;
            }
        }
    }
}

/// Undoes content codings on a finished body (kept bytes only), under the decode caps.
fn decode_body(m: &mut InFlight, cx: &mut Ctx<'_>) {
    let codings = m.codings;
    if !cx.cfg.decode_bodies || codings.unknown || codings.is_empty() {
        return;
    }
    let body = match &mut m.msg {
        Message::Request(r) => &mut r.body,
        Message::Response(r) => &mut r.body,
    };
    if body.data.is_empty() {
        return;
    }
    match body::decode(&body.data, &codings, cx.cfg, body.truncated) {
        Ok(d) => {
            cx.stats.body_bytes_decoded += d.data.len() as u64;
            body.data = d.data;
            body.decoded = true;
            if let Some(limit) = d.limit {
                body.truncated = true;
                bump(&mut cx.stats.cap_hits, limit.cap_name());
                m.anomalies.insert(match limit {
                    body::DecodeLimit::Body => Anomaly::BodyCap,
                    body::DecodeLimit::Decoded | body::DecodeLimit::Ratio => Anomaly::DecodeCap,
                });
            }
        }
        Err(body::DecodeFailed) => m.anomalies.insert(Anomaly::DecodeFailed),
    }
}

fn emit(
    cx: &mut Ctx<'_>,
    request: Option<Request>,
    response: Option<Response>,
    anomalies: AnomalySet,
) {
    let s = &mut *cx.stats;
    s.transactions += 1;
    if request.is_some() && response.is_some() {
        s.paired += 1;
    }
    for a in anomalies.iter() {
        bump(&mut s.anomalies_by_kind, a.as_str());
    }
    if let Some(r) = &request {
        bump(&mut s.by_method_class, method_class(&r.method));
    }
    bump(
        &mut s.by_status_class,
        status_class(response.as_ref().map(|r| r.status)),
    );
    cx.out.push(Transaction {
        request,
        response,
        anomalies,
    });
}

/// The start line of a parsed head.
#[derive(Debug)]
enum StartLine {
    Request {
        method: String,
        target: String,
        version: u8,
    },
    Response {
        status: u16,
        version: u8,
    },
}

/// The head could not be parsed even leniently.
#[derive(Debug)]
struct Unparsable;

#[derive(Debug)]
enum HeadError {
    TooManyHeaders,
    Invalid,
}

fn parser_config(lenient: bool) -> httparse::ParserConfig {
    let mut c = httparse::ParserConfig::default();
    if lenient {
        c.allow_spaces_after_header_name_in_responses(true)
            .allow_obsolete_multiline_headers_in_responses(true)
            .allow_multiple_spaces_in_request_line_delimiters(true)
            .allow_multiple_spaces_in_response_status_delimiters(true)
            .allow_space_before_first_header_name(true)
            .ignore_invalid_headers_in_requests(true)
            .ignore_invalid_headers_in_responses(true);
    }
    c
}

/// A head as parsed.
#[derive(Debug)]
struct ParsedHead {
    line: StartLine,
    headers: Vec<Header>,
    anomalies: AnomalySet,
    /// Bytes of the input it spans (less than all for a request line without a version).
    len: usize,
}

/// Parses a complete head with httparse (see [`parse_head_httparse`]); when httparse
/// rejects the start line, with the lenient fallback ([`lenient_start_line`]): the odd line
/// is read leniently, flagged by what was odd, and the header fields after it are parsed
/// by httparse as usual. A request line without a version is the whole head.
fn parse_head(role: Role, head: &[u8], max_headers: usize) -> Result<ParsedHead, Unparsable> {
    if let Ok((line, headers, anomalies)) = parse_head_httparse(role, head, max_headers) {
        return Ok(ParsedHead {
            line,
            headers,
            anomalies,
            len: head.len(),
        });
    }
    let nl = memchr(b'\n', head).ok_or(Unparsable)?;
    let first = head.get(..=nl).ok_or(Unparsable)?;
    let odd = lenient_start_line(role, first).ok_or(Unparsable)?;
    if odd.alone {
        return Ok(ParsedHead {
            line: odd.line,
            headers: Vec::new(),
            anomalies: odd.anomalies,
            len: first.len(),
        });
    }
    // The fields after the odd line, parsed by httparse behind a start line it accepts
    // (copied: this path is rare).
    let stand_in: &[u8] = match role {
        Role::Request => b"GET / HTTP/1.1\r\n",
        Role::Response => b"HTTP/1.1 200 OK\r\n",
    };
    let mut copy = Vec::with_capacity(stand_in.len() + head.len() - first.len());
    copy.extend_from_slice(stand_in);
    copy.extend_from_slice(head.get(first.len()..).unwrap_or_default());
    let (_, headers, mut anomalies) = parse_head_httparse(role, &copy, max_headers)?;
    anomalies.0 |= odd.anomalies.0;
    Ok(ParsedHead {
        line: odd.line,
        headers,
        anomalies,
        len: head.len(),
    })
}

/// Parses a complete head: strictly first; a head only a lenient parser accepts is kept
/// and flagged BadHead; past `max_headers` the first fields are kept (TooManyHeaders).
fn parse_head_httparse(
    role: Role,
    head: &[u8],
    max_headers: usize,
) -> Result<(StartLine, Vec<Header>, AnomalySet), Unparsable> {
    let mut anomalies = AnomalySet::default();
    let mut lenient = false;
    let mut shortened: Option<Vec<u8>> = None;
    for _ in 0..4 {
        let bytes = shortened.as_deref().unwrap_or(head);
        match parse_once(role, bytes, max_headers, lenient) {
            Ok((line, headers)) => return Ok((line, headers, anomalies)),
            Err(HeadError::TooManyHeaders) if shortened.is_none() => {
                anomalies.insert(Anomaly::TooManyHeaders);
                shortened = Some(first_lines(head, max_headers.saturating_add(1)));
            }
            Err(HeadError::Invalid) if !lenient => {
                anomalies.insert(Anomaly::BadHead);
                lenient = true;
            }
            Err(_) => return Err(Unparsable),
        }
    }
    Err(Unparsable)
}

/// The first `lines` lines of a head, closed with an empty line.
fn first_lines(head: &[u8], lines: usize) -> Vec<u8> {
    let end = memchr_iter(b'\n', head)
        .nth(lines.saturating_sub(1))
        .map_or(head.len(), |i| i + 1);
    let mut v = Vec::with_capacity(end + 2);
    v.extend_from_slice(head.get(..end).unwrap_or(head));
    v.extend_from_slice(b"\r\n");
    v
}

fn owned_headers(parsed: &[httparse::Header<'_>]) -> Vec<Header> {
    parsed
        .iter()
        .map(|h| Header {
            name: h.name.into(),
            value: HeaderValue::from_slice(h.value),
        })
        .collect()
}

fn parse_once(
    role: Role,
    head: &[u8],
    max_headers: usize,
    lenient: bool,
) -> Result<(StartLine, Vec<Header>), HeadError> {
    let mut stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_HEADER_SLOTS];
    let mut heap = Vec::new();
    let slots: &mut [MaybeUninit<httparse::Header<'_>>] = if max_headers <= STACK_HEADER_SLOTS {
        stack.get_mut(..max_headers).unwrap_or_default()
    } else {
        heap.resize_with(max_headers, MaybeUninit::uninit);
        &mut heap
    };
    let config = parser_config(lenient);
    let status = match role {
        Role::Request => {
            let mut req = httparse::Request::new(&mut []);
            let status = config.parse_request_with_uninit_headers(&mut req, head, slots);
            if let Ok(httparse::Status::Complete(_)) = status {
                let line = StartLine::Request {
                    method: req.method.unwrap_or_default().to_owned(),
                    target: req.path.unwrap_or_default().to_owned(),
                    version: req.version.unwrap_or(1),
                };
                return Ok((line, owned_headers(req.headers)));
            }
            status
        }
        Role::Response => {
            let mut resp = httparse::Response::new(&mut []);
            let status = config.parse_response_with_uninit_headers(&mut resp, head, slots);
            if let Ok(httparse::Status::Complete(_)) = status {
                let line = StartLine::Response {
                    status: resp.code.unwrap_or(0),
                    version: resp.version.unwrap_or(1),
                };
                return Ok((line, owned_headers(resp.headers)));
            }
            status
        }
    };
    match status {
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooManyHeaders),
        _ => Err(HeadError::Invalid),
    }
}

/// What a complete start line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LineVerdict {
    /// httparse accepts it; the head goes on to an empty line.
    Strict,
    /// Only the lenient fallback reads it (a quirk real servers accept); the head goes on
    /// to an empty line.
    Lenient,
    /// A request line without a version (HTTP/0.9 style): the line is the whole head.
    /// Holds the line's length with its break.
    Alone(usize),
    /// Not a start line.
    Bad,
}

impl LineVerdict {
    fn parses(self) -> bool {
        matches!(self, LineVerdict::Strict | LineVerdict::Lenient)
    }
}

/// Judges the start line of a head being accumulated once its line break is there
/// (`Some`); `None` while it is still incomplete. Without `lenient` (a resync hunting
/// through bytes that may be a body) only what httparse accepts is a start line. Bytes before `new_from` are known to hold
/// no line break. Judging at the first line break drops false starts early instead of
/// after a whole head cap of bytes.
fn judge_start_line(
    role: Role,
    head: &[u8],
    new_from: usize,
    lenient: bool,
) -> Option<LineVerdict> {
    let i = head.get(new_from..).and_then(|s| memchr(b'\n', s))?;
    let line = head.get(..=new_from + i).unwrap_or(head);
    let config = parser_config(true);
    // Zero header slots: a valid start line leaves the parser wanting headers.
    let status = match role {
        Role::Request => config.parse_request(&mut httparse::Request::new(&mut []), line),
        Role::Response => config.parse_response(&mut httparse::Response::new(&mut []), line),
    };
    if matches!(status, Ok(httparse::Status::Partial)) {
        return Some(LineVerdict::Strict);
    }
    if !lenient {
        return Some(LineVerdict::Bad);
    }
    Some(match lenient_start_line(role, line) {
        Some(l) if l.alone => LineVerdict::Alone(line.len()),
        Some(_) => LineVerdict::Lenient,
        None => LineVerdict::Bad,
    })
}

/// A start line httparse rejects but real servers or clients accept, read leniently.
#[derive(Debug)]
struct LenientLine {
    line: StartLine,
    /// What was odd about it.
    anomalies: AnomalySet,
    /// A request line without a version: no header section follows.
    alone: bool,
}

/// The minor version of `HTTP/1.0` or `HTTP/1.1`.
fn http1_minor(word: &[u8]) -> Option<u8> {
    match word {
        b"HTTP/1.0" => Some(0),
        b"HTTP/1.1" => Some(1),
        _ => None,
    }
}

fn trim_spaces(mut b: &[u8]) -> &[u8] {
    while let [b' ', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' '] = b {
        b = rest;
    }
    b
}

/// Reads a start line (with or without its line break) that httparse rejected, the way
/// servers that accept it do: a request target with spaces inside (`GET /a b HTTP/1.1`),
/// no version (`GET /path`, HTTP/0.9), no target (`GET HTTP/1.1`, `GET`); a status line
/// whose status is not three digits (`HTTP/1.1 abc OK`, status 0). `None` for anything
/// else, including control bytes, an unknown protocol word, or a line httparse would
/// accept were it not for other bytes (those stay unparsable).
fn lenient_start_line(role: Role, line: &[u8]) -> Option<LenientLine> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return None;
    }
    let mut anomalies = AnomalySet::default();
    match role {
        Role::Request => {
            let method_len = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
            let method = line.get(..method_len)?;
            if method.is_empty()
                || method.len() > MAX_METHOD_LEN
                || !method.iter().copied().all(is_method_char)
            {
                return None;
            }
            let rest = trim_spaces(line.get(method_len..).unwrap_or_default());
            let last_start = rest.iter().rposition(|&b| b == b' ').map_or(0, |i| i + 1);
            let last = rest.get(last_start..).unwrap_or_default();
            let (target, version) = match http1_minor(last) {
                Some(v) => (
                    trim_spaces(rest.get(..last_start).unwrap_or_default()),
                    Some(v),
                ),
                // Another protocol word (HTTP/2.0, HTTP/1.2): not a line to guess at.
                None if last.starts_with(b"HTTP/") => return None,
                None => (rest, None),
            };
            if target.is_empty() {
                anomalies.insert(Anomaly::RequestLineNoTarget);
            }
            if target.contains(&b' ') {
                anomalies.insert(Anomaly::RequestLineSpaceInTarget);
            }
            if version.is_none() {
                // Without a version only a known method makes a request (a stray word in
                // a request stream must not become one).
                if !is_known_method(method) {
                    return None;
                }
                anomalies.insert(Anomaly::RequestLineNoVersion);
            }
            if anomalies.is_empty() {
                // Method, target and version as httparse wants them: what it rejected is
                // elsewhere (bytes in the target), not a quirk read here.
                return None;
            }
            Some(LenientLine {
                line: StartLine::Request {
                    method: String::from_utf8_lossy(method).into_owned(),
                    target: String::from_utf8_lossy(target).into_owned(),
                    version: version.unwrap_or(0),
                },
                anomalies,
                alone: version.is_none(),
            })
        }
        Role::Response => {
            let rest = line.strip_prefix(STATUS_LINE_PREFIX)?;
            let (&minor, rest) = rest.split_first()?;
            if !minor.is_ascii_digit() || !(rest.is_empty() || rest.starts_with(b" ")) {
                return None;
            }
            let rest = trim_spaces(rest);
            let code_len = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
            let code = rest.get(..code_len).unwrap_or_default();
            if code.len() == 3 && code.iter().all(u8::is_ascii_digit) {
                return None;
            }
            anomalies.insert(Anomaly::StatusNonNumeric);
            Some(LenientLine {
                line: StartLine::Response {
                    status: 0,
                    version: minor - b'0',
                },
                anomalies,
                alone: false,
            })
        }
    }
}

/// The start line of a head cut by the head cap, if that much of it parses.
fn start_line_only(role: Role, partial: &[u8]) -> Option<(StartLine, AnomalySet)> {
    if judge_start_line(role, partial, 0, true) == Some(LineVerdict::Lenient) {
        let line = partial.get(..=memchr(b'\n', partial)?)?;
        return lenient_start_line(role, line).map(|l| (l.line, l.anomalies));
    }
    let config = parser_config(true);
    let line = match role {
        Role::Request => {
            let mut req = httparse::Request::new(&mut []);
            let _ = config.parse_request(&mut req, partial);
            StartLine::Request {
                method: req.method?.to_owned(),
                target: req.path?.to_owned(),
                version: req.version.unwrap_or(1),
            }
        }
        Role::Response => {
            let mut resp = httparse::Response::new(&mut []);
            let _ = config.parse_response(&mut resp, partial);
            StartLine::Response {
                status: resp.code?,
                version: resp.version.unwrap_or(1),
            }
        }
    };
    Some((line, AnomalySet::default()))
}

/// Trailer fields (`section` ends with the empty line). Bad trailers are dropped, flagged.
fn parse_trailers(section: &[u8], max_headers: usize) -> (Vec<Header>, Option<Anomaly>) {
    if section.len() <= 2 {
        return (Vec::new(), None);
    }
    let mut slots = vec![httparse::EMPTY_HEADER; max_headers];
    match httparse::parse_headers(section, &mut slots) {
        Ok(httparse::Status::Complete((_, parsed))) => (owned_headers(parsed), None),
        Err(httparse::Error::TooManyHeaders) => (Vec::new(), Some(Anomaly::TooManyHeaders)),
        _ => (Vec::new(), Some(Anomaly::BadHead)),
    }
}

/// HTTP/1.x parser state of one TCP connection.
#[derive(Debug)]
pub struct HttpConn {
    req: Side,
    resp: Side,
    shared: Shared,
    orientation: Orientation,
    /// First bytes held until they show which way the connection goes.
    stash: [u8; ORIENT_PROBE_LEN],
    stash_len: usize,
    stash_dir: Dir,
    stash_ts: Timestamp,
    closed: bool,
}

impl Default for HttpConn {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpConn {
    pub fn new() -> Self {
        HttpConn {
            req: Side::new(Role::Request),
            resp: Side::new(Role::Response),
            shared: Shared::default(),
            orientation: Orientation::Unknown,
            stash: [0; ORIENT_PROBE_LEN],
            stash_len: 0,
            stash_dir: Dir::ToServer,
            stash_ts: Timestamp::ZERO,
            closed: false,
        }
    }

    /// True once the reassembler's direction guess was found inverted (client bytes
    /// arrived as ToClient); from then on `data` maps directions itself and callers
    /// should report client/server swapped.
    pub fn swapped(&self) -> bool {
        self.orientation == Orientation::Swapped
    }

    /// True after CONNECT 2xx or 101 Upgrade: the rest of the connection is not HTTP;
    /// callers may stop feeding data.
    pub fn opaque(&self) -> bool {
        self.shared.opaque
    }

    /// Bytes this connection holds: partial heads, bodies in flight and queued requests'
    /// bodies. Bounded by the caps in [`HttpConfig`].
    pub fn buffered_bytes(&self) -> usize {
        let queued: usize = self
            .shared
            .pending
            .iter()
            .map(|p| {
                p.request.as_ref().map_or(0, |r| r.body.data.len())
                    + p.response.as_ref().map_or(0, |(r, _)| r.body.data.len())
            })
            .sum();
        self.req.buffered_bytes() + self.resp.buffered_bytes() + queued + self.stash_len
    }

    fn role(&self, dir: Dir) -> Role {
        match (dir, self.orientation == Orientation::Swapped) {
            (Dir::ToServer, false) | (Dir::ToClient, true) => Role::Request,
            (Dir::ToClient, false) | (Dir::ToServer, true) => Role::Response,
        }
    }

    /// In-order bytes travelling in `dir` (as the reassembler judged it), at packet time `ts`.
    pub fn data(
        &mut self,
        cfg: &HttpConfig,
        dir: Dir,
        data: &[u8],
        ts: Timestamp,
        out: &mut Vec<Transaction>,
        stats: &mut HttpStats,
    ) {
        if self.closed || self.shared.opaque || data.is_empty() {
            return;
        }
        let mut cx = Ctx {
            cfg,
            ts,
            out,
            stats,
        };
        if self.orientation == Orientation::Unknown && !self.orient(dir, data, &mut cx) {
            return;
        }
        self.shared.event += 1;
        self.feed(self.role(dir), data, &mut cx);
    }

    /// Decides the orientation from the connection's first bytes, holding them while
    /// there are too few to tell. Returns false when `data` was held.
    fn orient(&mut self, dir: Dir, data: &[u8], cx: &mut Ctx<'_>) -> bool {
        if self.stash_len > 0 && dir != self.stash_dir {
            self.settle(Orientation::AsGiven, cx);
            return true;
        }
        let mut probe = [0u8; ORIENT_PROBE_LEN];
        let n = fill(
            &mut probe,
            self.stash.get(..self.stash_len).unwrap_or_default(),
            data,
        );
        match orientation_of(dir, probe.get(..n).unwrap_or_default()) {
            Some(o) => {
                self.settle(o, cx);
                true
            }
            None if self.stash_len + data.len() <= ORIENT_PROBE_LEN => {
                if self.stash_len == 0 {
                    self.stash_dir = dir;
                    self.stash_ts = cx.ts;
                }
                let start = self.stash_len;
                if let Some(dst) = self.stash.get_mut(start..start + data.len()) {
                    dst.copy_from_slice(data);
                }
                self.stash_len += data.len();
                false
            }
            None => {
                self.settle(Orientation::AsGiven, cx);
                true
            }
        }
    }

    /// Fixes the orientation and parses any held first bytes (at their own packet time).
    fn settle(&mut self, o: Orientation, cx: &mut Ctx<'_>) {
        self.orientation = o;
        if self.stash_len == 0 {
            return;
        }
        let held = self.stash;
        let n = std::mem::take(&mut self.stash_len);
        let now = cx.ts;
        cx.ts = self.stash_ts;
        self.shared.event += 1;
        self.feed(
            self.role(self.stash_dir),
            held.get(..n).unwrap_or_default(),
            cx,
        );
        cx.ts = now;
    }

    /// Runs one direction's state machine over `input` (and any bytes it hands back for
    /// another look after a failed parse).
    fn feed(&mut self, role: Role, input: &[u8], cx: &mut Ctx<'_>) {
        let (side, sh) = match role {
            Role::Request => (&mut self.req, &mut self.shared),
            Role::Response => (&mut self.resp, &mut self.shared),
        };
        let mut input = input;
        let mut replay: Vec<u8> = Vec::new();
        let mut replay_pos = 0;
        let mut idle = 0u32;
        while !sh.opaque {
            let from_replay = replay_pos < replay.len();
            let src = if from_replay {
                replay.get(replay_pos..).unwrap_or_default()
            } else {
                input
            };
            if src.is_empty() {
                break;
            }
            let (n, again) = match side.step(sh, src, cx) {
                Step::Consumed(n) => (n, None),
                Step::Replay(n, bytes) => (n, Some(bytes)),
            };
            let n = n.min(src.len());
            // State changes without consuming happen at most a few times in a row; more
            // would be a bug, and must not hang the worker.
            idle = if n == 0 && again.is_none() {
                idle + 1
            } else {
                0
            };
            if idle > 8 {
                debug_assert!(false, "http parser made no progress");
                break;
            }
            if from_replay {
                replay_pos += n;
            } else {
                input = input.get(n..).unwrap_or_default();
            }
            if let Some(mut bytes) = again {
                if from_replay {
                    bytes.extend_from_slice(replay.get(replay_pos..).unwrap_or_default());
                }
                replay = bytes;
                replay_pos = 0;
            }
        }
        if sh.opaque {
            // The rest of the connection is a tunnel: drop partial HTTP state.
            self.req.clear_buf();
            self.resp.clear_buf();
        }
    }

    /// `len` bytes in `dir` were lost (capture drop or reassembly gap).
    pub fn gap(
        &mut self,
        cfg: &HttpConfig,
        dir: Dir,
        len: u64,
        ts: Timestamp,
        out: &mut Vec<Transaction>,
        stats: &mut HttpStats,
    ) {
        if self.closed || self.shared.opaque || len == 0 {
            return;
        }
        let mut cx = Ctx {
            cfg,
            ts,
            out,
            stats,
        };
        if self.orientation == Orientation::Unknown {
            self.settle(Orientation::AsGiven, &mut cx);
        }
        self.shared.event += 1;
        match self.role(dir) {
            Role::Request => {
                if self.req.on_gap(&mut self.shared, len, &mut cx).is_some() {
                    self.shared.request_gap = true;
                }
            }
            Role::Response => {
                let skipped_from = self.resp.skipped;
                if let Some(lost) = self.resp.on_gap(&mut self.shared, len, &mut cx) {
                    // Settled at the next response head, once the resync has also
                    // skipped the rest of any response the loss began in.
                    let hole = self.shared.hole.get_or_insert_with(|| {
                        Box::new(Hole {
                            bytes: 0,
                            cut: 0,
                            skipped_from,
                            before_event: 0,
                        })
                    });
                    hole.bytes = hole.bytes.saturating_add(lost.bytes);
                    hole.cut += lost.cut;
                    hole.before_event = self.shared.event;
                }
            }
        }
    }

    /// Connection ended (FIN/RST/timeout/end of capture): finish read-until-close bodies,
    /// emit unanswered requests.
    pub fn close(
        &mut self,
        cfg: &HttpConfig,
        ts: Timestamp,
        out: &mut Vec<Transaction>,
        stats: &mut HttpStats,
    ) {
        if self.closed {
            return;
        }
        let mut cx = Ctx {
            cfg,
            ts,
            out,
            stats,
        };
        if self.orientation == Orientation::Unknown {
            self.settle(Orientation::AsGiven, &mut cx);
        }
        self.closed = true;
        self.req.on_close(&mut self.shared, &mut cx);
        self.resp.on_close(&mut self.shared, &mut cx);
        // Response bytes lost since the last response head: what waits from before the
        // loss may have been answered in it.
        let lost_before = self.shared.hole.take().map_or(0, |h| h.before_event);
        while let Some(p) = self.shared.pending.pop_front() {
            let mut an = p.request_anomalies;
            match (p.request, p.response) {
                (Some(req), Some((resp, resp_an))) => {
                    emit(&mut cx, Some(req), Some(resp), AnomalySet(an.0 | resp_an.0))
                }
                (Some(req), None) => {
                    if p.first_event < lost_before {
                        an.insert(Anomaly::Gap);
                    }
                    an.insert(Anomaly::RequestWithoutResponse);
                    emit(&mut cx, Some(req), None, an);
                }
                (None, Some((resp, resp_an))) => {
                    let mut an = resp_an;
                    an.insert(Anomaly::ResponseWithoutRequest);
                    emit(&mut cx, None, Some(resp), an);
                }
                (None, None) => {}
            }
        }
        self.shared.pending = VecDeque::new();
        self.shared.pending_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use proptest::prelude::*;

    use super::*;
    use crate::http::header;

    #[derive(Clone, Debug)]
    enum Ev {
        Data(Dir, Vec<u8>),
        Gap(Dir, u64),
    }

    fn c2s(b: &[u8]) -> Ev {
        Ev::Data(Dir::ToServer, b.to_vec())
    }

    fn s2c(b: &[u8]) -> Ev {
        Ev::Data(Dir::ToClient, b.to_vec())
    }

    fn ts_of(i: usize) -> Timestamp {
        Timestamp(1_000_000_000 + (i as u64 + 1) * 1_000)
    }

    /// Feeds `evs` (each data event cut into pieces by `cut`), then closes.
    fn run_split(
        cfg: &HttpConfig,
        evs: &[Ev],
        cut: &mut dyn FnMut(usize) -> usize,
    ) -> (Vec<Transaction>, HttpStats, HttpConn) {
        let mut conn = HttpConn::new();
        let mut out = Vec::new();
        let mut stats = HttpStats::default();
        for (i, ev) in evs.iter().enumerate() {
            match ev {
                Ev::Data(dir, bytes) => {
                    let mut rest = bytes.as_slice();
                    while !rest.is_empty() {
                        let n = cut(rest.len()).clamp(1, rest.len());
                        let (piece, tail) = rest.split_at(n);
                        conn.data(cfg, *dir, piece, ts_of(i), &mut out, &mut stats);
                        rest = tail;
                    }
                }
                Ev::Gap(dir, len) => conn.gap(cfg, *dir, *len, ts_of(i), &mut out, &mut stats),
            }
        }
        conn.close(cfg, ts_of(evs.len()), &mut out, &mut stats);
        (out, stats, conn)
    }

    fn run_cfg(cfg: &HttpConfig, evs: &[Ev]) -> (Vec<Transaction>, HttpStats) {
        let (whole, stats, _) = run_split(cfg, evs, &mut |n| n);
        // Every scenario must come out the same fed one byte at a time.
        let (bytewise, byte_stats, _) = run_split(cfg, evs, &mut |_| 1);
        assert_eq!(whole, bytewise, "1-byte chunking changed the transactions");
        assert_eq!(stats.transactions, byte_stats.transactions);
        assert_eq!(stats.anomalies_by_kind, byte_stats.anomalies_by_kind);
        assert_eq!(stats.resyncs, byte_stats.resyncs);
        assert_eq!(stats.bytes_skipped, byte_stats.bytes_skipped);
        (whole, stats)
    }

    fn run(evs: &[Ev]) -> (Vec<Transaction>, HttpStats) {
        run_cfg(&HttpConfig::default(), evs)
    }

    fn anomalies(tx: &Transaction) -> Vec<&'static str> {
        tx.anomalies.iter().map(Anomaly::as_str).collect()
    }

    fn req(tx: &Transaction) -> &Request {
        tx.request.as_ref().expect("transaction has a request")
    }

    fn resp(tx: &Transaction) -> &Response {
        tx.response.as_ref().expect("transaction has a response")
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn raw_deflate(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// A JSON listing of 20 users (511 bytes).
    fn users_json() -> Vec<u8> {
        let items: Vec<String> = (0..20)
            .map(|i| format!("{{\"id\":{i},\"name\":\"user{i}\"}}"))
            .collect();
        format!("{{\"users\":[{}]}}", items.join(",")).into_bytes()
    }

    /// `users_json()` compressed by Python's `brotli.compress` (brotli 1.2.1).
    const USERS_BR: &[u8] = b"\x1b\xfe\x01\x68\x9c\x07\x76\x1b\xcb\x47\xa9\xc1\xa0\x23\x6a\xb6\x43\x19\xa1\xd2\x53\x44\x6e\x2f\x75\xc8\xd2\xb2\xaf\x8b\x45\xc5\x43\xf2\xf2\xa0\x39\x7d\xc4\x03\x83\x5d\x9a\x4d\x24\x83\xdb\x39\x16\x5a\x54\xf6\xc8\x1f\xa2\x2e\x74\x48\x28\x7b\xfd\x6f\xf8\xbb\x90\x4f\x6e\x64\x66\xc8\x00\x26\xb4\x90\x8d\x5d\x94\x9b\xf6\x30\x5e\xd6\xc7\xbd\x38\x7f\x03\x27\x2e\x58\x61\xb0\x28\x54\x1c\x2e\x15\x55\x3a\xba\x4c\x4c\xd9\xd8\x72\xe3\xd6\x00";
    /// `brotli.compress(gzip.compress(b'{"ok":true,"items":[1,2,3]}', mtime=0))`: a body
    /// sent with `Content-Encoding: gzip, br`.
    const GZIP_THEN_BR: &[u8] = b"\x0b\x17\x80\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\x03\xab\x56\xca\xcf\x56\xb2\x2a\x29\x2a\x4d\xd5\x51\xca\x2c\x49\xcd\x2d\x56\xb2\x8a\x36\xd4\x31\xd2\x31\x8e\xad\x05\x00\xba\xd8\x8b\xb7\x1b\x00\x00\x00\x03";
    /// `brotli.compress(b'A' * 1_000_000)`: 14 bytes that decode to 1 MB.
    const BR_BOMB: &[u8] = b"\x5b\x3f\x42\x8f\x5f\x22\x28\x1e\x0b\x04\xf2\x73\x1e\x00";

    const CURL_GET: &[u8] = b"GET /api/v1/users/42?fields=name HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n";

    fn curl_get(path: &str) -> Vec<u8> {
        format!("GET {path} HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n").into_bytes()
    }

    fn curl_post(path: &str, body: &[u8]) -> Vec<u8> {
        let mut v = format!(
            "POST {path} HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        v.extend_from_slice(body);
        v
    }

    /// A response in the style of Python's http.server (protocol_version HTTP/1.1).
    fn py_response(status: &str, extra: &str, body: &[u8]) -> Vec<u8> {
        let mut v = format!(
            "HTTP/1.1 {status}\r\nServer: SimpleHTTP/0.6 Python/3.12.3\r\nDate: Sat, 28 Nov 2026 16:08:35 GMT\r\nContent-type: application/json\r\n{extra}Content-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        v.extend_from_slice(body);
        v
    }

    fn ok_json(body: &[u8]) -> Vec<u8> {
        py_response("200 OK", "", body)
    }

    fn chunked(head: &str, chunks: &[&[u8]], trailer: &str) -> Vec<u8> {
        let mut v = head.as_bytes().to_vec();
        for c in chunks {
            v.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            v.extend_from_slice(c);
            v.extend_from_slice(b"\r\n");
        }
        v.extend_from_slice(b"0\r\n");
        v.extend_from_slice(trailer.as_bytes());
        v.extend_from_slice(b"\r\n");
        v
    }

    #[test]
    fn keep_alive_get_and_post() {
        let login = br#"{"user":"alice","password":"hunter2"}"#;
        let evs = [
            c2s(CURL_GET),
            s2c(&ok_json(br#"{"id":42,"name":"alice"}"#)),
            c2s(&curl_post("/api/v1/login", login)),
            s2c(&py_response(
                "401 Unauthorized",
                "WWW-Authenticate: Bearer\r\n",
                br#"{"error":"bad credentials"}"#,
            )),
        ];
        let (txs, stats) = run(&evs);
        assert_eq!(txs.len(), 2);
        let first = &txs[0];
        assert!(first.paired() && first.anomalies.is_empty());
        assert_eq!(req(first).method, "GET");
        assert_eq!(req(first).target, "/api/v1/users/42?fields=name");
        assert_eq!(req(first).version, 1);
        assert_eq!(req(first).ts, ts_of(0));
        assert_eq!(
            header(&req(first).headers, "user-agent"),
            Some(&b"curl/8.5.0"[..])
        );
        assert_eq!(req(first).headers.len(), 3);
        assert_eq!(resp(first).status, 200);
        assert_eq!(resp(first).ts, ts_of(1));
        assert_eq!(resp(first).body.data, br#"{"id":42,"name":"alice"}"#);
        assert_eq!(resp(first).body.wire_len, 24);
        assert!(!resp(first).body.decoded && !resp(first).body.truncated);
        let second = &txs[1];
        assert_eq!(req(second).method, "POST");
        assert_eq!(req(second).body.data, login);
        assert_eq!(resp(second).status, 401);
        assert_eq!(
            header(&resp(second).headers, "www-authenticate"),
            Some(&b"Bearer"[..])
        );
        assert_eq!(
            (
                stats.requests,
                stats.responses,
                stats.transactions,
                stats.paired
            ),
            (2, 2, 2, 2)
        );
        assert_eq!(stats.by_method_class.get("GET"), Some(&1));
        assert_eq!(stats.by_method_class.get("POST"), Some(&1));
        assert_eq!(stats.by_status_class.get("2xx"), Some(&1));
        assert_eq!(stats.by_status_class.get("4xx"), Some(&1));
        assert!(stats.anomalies_by_kind.is_empty());
        assert_eq!(stats.resyncs, 0);
    }

    #[test]
    fn message_ts_is_first_byte_time() {
        let cfg = HttpConfig::default();
        let mut conn = HttpConn::new();
        let (mut out, mut stats) = (Vec::new(), HttpStats::default());
        let (a, b) = CURL_GET.split_at(10);
        conn.data(&cfg, Dir::ToServer, a, Timestamp(100), &mut out, &mut stats);
        conn.data(&cfg, Dir::ToServer, b, Timestamp(200), &mut out, &mut stats);
        let r = ok_json(b"{}");
        let (a, b) = r.split_at(r.len() - 1);
        conn.data(&cfg, Dir::ToClient, a, Timestamp(300), &mut out, &mut stats);
        conn.data(&cfg, Dir::ToClient, b, Timestamp(400), &mut out, &mut stats);
        assert_eq!(out.len(), 1);
        assert_eq!(req(&out[0]).ts, Timestamp(100));
        assert_eq!(resp(&out[0]).ts, Timestamp(300));
    }

    #[test]
    fn pipelined_requests_pair_in_order() {
        let mut reqs = curl_get("/a");
        reqs.extend(curl_post("/b", br#"{"n":2}"#));
        reqs.extend(curl_get("/c"));
        let mut resps = ok_json(b"\"a\"");
        resps.extend(py_response("201 Created", "Location: /b/1\r\n", b"\"b\""));
        resps.extend(py_response("404 Not Found", "", b"\"c\""));
        let (txs, stats) = run(&[c2s(&reqs), s2c(&resps)]);
        let got: Vec<(&str, u16, &[u8])> = txs
            .iter()
            .map(|t| {
                (
                    req(t).target.as_str(),
                    resp(t).status,
                    resp(t).body.data.as_slice(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("/a", 200, &b"\"a\""[..]),
                ("/b", 201, &b"\"b\""[..]),
                ("/c", 404, &b"\"c\""[..])
            ]
        );
        assert!(txs.iter().all(|t| t.anomalies.is_empty()));
        assert_eq!(stats.paired, 3);
        assert_eq!(req(&txs[1]).body.data, br#"{"n":2}"#);
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nTrailer: Server-Timing\r\n\r\n";
        let mut r = head.as_bytes().to_vec();
        r.extend_from_slice(b"7;foo=bar\r\n{\"a\":1,\r\n");
        r.extend_from_slice(b"0000A ; name=\"quoted;value\"\r\n\"b\":[1,2]}\r\n");
        r.extend_from_slice(b"0;last\r\nServer-Timing: db;dur=53\r\nX-Checksum: abc\r\n\r\n");
        let mut req_body =
            b"POST /upload HTTP/1.1\r\nHost: api.example.com\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_vec();
        req_body.extend_from_slice(b"3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n");
        let (txs, _) = run(&[c2s(&req_body), s2c(&r), c2s(CURL_GET), s2c(&ok_json(b"[]"))]);
        assert_eq!(txs.len(), 2);
        assert!(txs[0].anomalies.is_empty(), "{:?}", anomalies(&txs[0]));
        assert_eq!(req(&txs[0]).body.data, b"abcdef");
        assert_eq!(req(&txs[0]).body.wire_len, 6);
        let body = &resp(&txs[0]).body;
        assert_eq!(body.data, b"{\"a\":1,\"b\":[1,2]}");
        assert_eq!(body.wire_len, 17);
        let names: Vec<&str> = body.trailers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, vec!["Server-Timing", "X-Checksum"]);
        assert_eq!(
            header(&body.trailers, "server-timing"),
            Some(&b"db;dur=53"[..])
        );
        assert!(
            header(&resp(&txs[0]).headers, "x-checksum").is_none(),
            "trailers stay apart"
        );
        assert_eq!(resp(&txs[1]).body.data, b"[]");
    }

    #[test]
    fn bare_lf_line_endings() {
        let evs = [
            c2s(b"GET /lf HTTP/1.1\nHost: a\n\n"),
            s2c(b"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n2\nok\n0\n\n"),
        ];
        let (txs, _) = run(&evs);
        assert_eq!(txs.len(), 1);
        assert!(txs[0].anomalies.is_empty());
        assert_eq!(resp(&txs[0]).body.data, b"ok");
    }

    #[test]
    fn gzip_deflate_br_bodies_decoded() {
        let json = users_json();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("gzip", gzip(&json)),
            ("x-gzip", gzip(&json)),
            ("deflate", zlib(&json)),
            ("deflate", raw_deflate(&json)),
            ("br", USERS_BR.to_vec()),
        ];
        for (coding, wire) in cases {
            let evs = [
                c2s(CURL_GET),
                s2c(&py_response(
                    "200 OK",
                    &format!("Content-Encoding: {coding}\r\n"),
                    &wire,
                )),
            ];
            let (txs, stats) = run(&evs);
            let body = &resp(&txs[0]).body;
            assert!(
                txs[0].anomalies.is_empty(),
                "{coding}: {:?}",
                anomalies(&txs[0])
            );
            assert!(body.decoded && !body.truncated, "{coding}");
            assert_eq!(body.data, json, "{coding}");
            assert_eq!(body.wire_len, wire.len() as u64);
            assert_eq!(stats.body_bytes_decoded, json.len() as u64);
        }
    }

    #[test]
    fn gzip_inside_chunked_and_gzip_request_body() {
        let json = users_json();
        let z = gzip(&json);
        let (a, b) = z.split_at(z.len() / 3);
        let r = chunked(
            "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
            &[a, b],
            "",
        );
        let mut q = format!("POST /events HTTP/1.1\r\nHost: a\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n", z.len()).into_bytes();
        q.extend_from_slice(&z);
        let (txs, _) = run(&[c2s(&q), s2c(&r)]);
        assert_eq!(req(&txs[0]).body.data, json);
        assert!(req(&txs[0]).body.decoded);
        assert_eq!(resp(&txs[0]).body.data, json);
    }

    #[test]
    fn stacked_encodings() {
        let evs = [
            c2s(CURL_GET),
            s2c(&py_response(
                "200 OK",
                "Content-Encoding: gzip, br\r\n",
                GZIP_THEN_BR,
            )),
        ];
        let (txs, _) = run(&evs);
        assert!(txs[0].anomalies.is_empty(), "{:?}", anomalies(&txs[0]));
        assert_eq!(resp(&txs[0]).body.data, br#"{"ok":true,"items":[1,2,3]}"#);

        let json = users_json();
        let wire = zlib(&gzip(&json));
        let evs = [
            c2s(CURL_GET),
            s2c(&py_response(
                "200 OK",
                "Content-Encoding: gzip\r\nContent-Encoding: deflate\r\n",
                &wire,
            )),
        ];
        let (txs, _) = run(&evs);
        assert_eq!(resp(&txs[0]).body.data, json);

        // Transfer codings other than chunked are undone too.
        let z = gzip(&json);
        let r = chunked(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            &[&z],
            "",
        );
        let (txs, _) = run(&[c2s(CURL_GET), s2c(&r)]);
        assert_eq!(resp(&txs[0]).body.data, json);
    }

    #[test]
    fn decompression_bombs_hit_the_ratio_cap() {
        let zeros = vec![b'0'; 1 << 20];
        let bomb = gzip(&zeros);
        let evs = [
            c2s(CURL_GET),
            s2c(&py_response("200 OK", "Content-Encoding: gzip\r\n", &bomb)),
        ];
        let (txs, stats) = run(&evs);
        let body = &resp(&txs[0]).body;
        assert!(txs[0].anomalies.contains(Anomaly::DecodeCap));
        assert!(body.decoded && body.truncated);
        assert_eq!(body.data.len(), bomb.len() * 100);
        assert!(body.data.iter().all(|&b| b == b'0'));
        assert_eq!(stats.cap_hits.get("ratio"), Some(&1));

        let evs = [
            c2s(CURL_GET),
            s2c(&py_response("200 OK", "Content-Encoding: br\r\n", BR_BOMB)),
        ];
        let (txs, stats) = run(&evs);
        assert!(txs[0].anomalies.contains(Anomaly::DecodeCap));
        assert_eq!(resp(&txs[0]).body.data.len(), BR_BOMB.len() * 100);
        assert_eq!(stats.cap_hits.get("ratio"), Some(&1));

        // A generous ratio leaves the decoded-size cap to stop it.
        let cfg = HttpConfig {
            max_decompression_ratio: 1_000_000,
            max_decoded_bytes: 10_000,
            ..Default::default()
        };
        let (txs, stats) = run_cfg(&cfg, &evs);
        assert_eq!(resp(&txs[0]).body.data.len(), 10_000);
        assert_eq!(stats.cap_hits.get("decoded"), Some(&1));
    }

    #[test]
    fn decode_can_be_disabled() {
        let cfg = HttpConfig {
            decode_bodies: false,
            ..Default::default()
        };
        let z = gzip(b"{}");
        let (txs, stats) = run_cfg(
            &cfg,
            &[
                c2s(CURL_GET),
                s2c(&py_response("200 OK", "Content-Encoding: gzip\r\n", &z)),
            ],
        );
        assert_eq!(resp(&txs[0]).body.data, z);
        assert!(!resp(&txs[0]).body.decoded);
        assert_eq!(stats.body_bytes_decoded, 0);
    }

    #[test]
    fn bodyless_responses_head_204_304() {
        let mut reqs = b"HEAD /file.bin HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
        reqs.extend(b"DELETE /item/1 HTTP/1.1\r\nHost: a\r\n\r\n");
        reqs.extend(b"GET /etag HTTP/1.1\r\nHost: a\r\nIf-None-Match: \"v1\"\r\n\r\n");
        reqs.extend(curl_get("/after"));
        let mut resps = b"HTTP/1.1 200 OK\r\nContent-Length: 123456\r\nContent-Type: application/octet-stream\r\n\r\n".to_vec();
        resps.extend(b"HTTP/1.1 204 No Content\r\n\r\n");
        resps.extend(b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 999\r\n\r\n");
        resps.extend(ok_json(b"{\"after\":true}"));
        let (txs, stats) = run(&[c2s(&reqs), s2c(&resps)]);
        let got: Vec<(&str, u16, u64)> = txs
            .iter()
            .map(|t| {
                (
                    req(t).method.as_str(),
                    resp(t).status,
                    resp(t).body.wire_len,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("HEAD", 200, 0),
                ("DELETE", 204, 0),
                ("GET", 304, 0),
                ("GET", 200, 14)
            ]
        );
        assert!(txs.iter().all(|t| t.anomalies.is_empty()));
        assert_eq!(stats.by_method_class.get("HEAD"), Some(&1));
        assert_eq!(stats.by_status_class.get("3xx"), Some(&1));
    }

    #[test]
    fn interim_responses_are_skipped() {
        let body = br#"{"file":"large"}"#;
        let evs = [
            c2s(format!("PUT /upload HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes()),
            s2c(b"HTTP/1.1 100 Continue\r\n\r\n"),
            c2s(body),
            s2c(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"),
        ];
        let (txs, stats) = run(&evs);
        assert_eq!(txs.len(), 1);
        assert!(txs[0].anomalies.is_empty());
        assert_eq!(req(&txs[0]).body.data, body);
        assert_eq!(resp(&txs[0]).status, 201);
        assert_eq!(resp(&txs[0]).ts, ts_of(3));
        assert_eq!((stats.responses, stats.interim_responses), (1, 2));
    }

    #[test]
    fn early_response_waits_for_request_body() {
        let evs = [
            c2s(b"POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n01234"),
            s2c(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n"),
            c2s(b"56789"),
        ];
        let (txs, _) = run(&evs);
        assert_eq!(txs.len(), 1);
        assert_eq!(req(&txs[0]).body.data, b"0123456789");
        assert_eq!(resp(&txs[0]).status, 413);
    }

    #[test]
    fn connect_tunnel_becomes_opaque() {
        let evs = [
            c2s(b"CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\nUser-Agent: curl/8.5.0\r\nProxy-Connection: Keep-Alive\r\n\r\n"),
            s2c(b"HTTP/1.1 200 Connection established\r\n\r\n\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
            c2s(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03GET / HTTP/1.1\r\n\r\n"),
            s2c(b"\x17\x03\x03\x00\x20HTTP/1.1 200 OK\r\n"),
        ];
        let (txs, stats) = run(&evs);
        assert_eq!(txs.len(), 1);
        assert_eq!(anomalies(&txs[0]), vec!["connect"]);
        assert_eq!(req(&txs[0]).method, "CONNECT");
        assert_eq!(req(&txs[0]).target, "api.example.com:443");
        assert_eq!((stats.resyncs, stats.bytes_skipped), (0, 0));

        let (_, _, conn) = run_split(&HttpConfig::default(), &evs, &mut |n| n);
        assert!(conn.opaque());
        // A refused CONNECT is an ordinary exchange.
        let evs = [
            c2s(b"CONNECT internal:22 HTTP/1.1\r\nHost: internal:22\r\n\r\n"),
            s2c(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"),
            c2s(CURL_GET),
            s2c(&ok_json(b"1")),
        ];
        let (txs, _) = run(&evs);
        assert_eq!(txs.len(), 2);
        assert!(txs.iter().all(|t| t.anomalies.is_empty()));
    }

    #[test]
    fn websocket_upgrade_becomes_opaque() {
        let evs = [
            c2s(b"GET /chat HTTP/1.1\r\nHost: api.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"),
            s2c(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x05hello"),
            c2s(b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"),
        ];
        let (txs, stats) = run(&evs);
        assert_eq!(txs.len(), 1);
        assert_eq!(anomalies(&txs[0]), vec!["upgrade"]);
        assert_eq!(resp(&txs[0]).status, 101);
        assert_eq!(stats.by_status_class.get("1xx"), Some(&1));
        assert_eq!(stats.resyncs, 0);
    }

    #[test]
    fn read_until_close() {
        let evs = [
            c2s(b"GET /legacy HTTP/1.0\r\nHost: a\r\n\r\n"),
            s2c(b"HTTP/1.0 200 OK\r\nServer: SimpleHTTP/0.6 Python/3.12.3\r\nContent-type: text/plain\r\n\r\nfirst part, "),
            s2c(b"second part"),
        ];
        let (txs, _) = run(&evs);
        assert_eq!(txs.len(), 1);
        assert!(txs[0].anomalies.is_empty());
        assert_eq!(req(&txs[0]).version, 0);
        assert_eq!(resp(&txs[0]).version, 0);
        assert_eq!(resp(&txs[0]).body.data, b"first part, second part");
        assert!(!resp(&txs[0]).body.truncated);
    }

    #[test]
    fn gap_in_content_length_body_still_pairs() {
        let body = br#"{"items":[1,2,3,4,5,6,7,8,9,10]}"#;
        let r = ok_json(body);
        let head_len = r.len() - body.len();
        let evs = [
            c2s(CURL_GET),
            s2c(&r[..head_len + 10]),
            Ev::Gap(Dir::ToClient, 12),
            s2c(&r[head_len + 22..]),
            c2s(&curl_get("/next")),
            s2c(&ok_json(b"2")),
        ];
        let (txs, stats) = run(&evs);
        assert_eq!(txs.len(), 2);
        let b = &resp(&txs[0]).body;
        assert!(txs[0].paired());
        assert!(txs[0].anomalies.contains(Anomaly::TruncatedBody));
        assert!(txs[0].anomalies.contains(Anomaly::Gap));
        assert_eq!(
            b.data,
            &body[..10],
            "only the bytes before the hole are kept"
        );
        assert_eq!(b.wire_len, body.len() as u64);
        assert!(b.truncated);
        assert!(txs[1].paired() && txs[1].anomalies.is_empty());
        assert_eq!(stats.resyncs, 0);
    }

    #[test]
    fn gap_in_chunked_body_then_resync() {
        let r1 = chunked(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            &[b"0123456789", b"abcdefghij"],
            "",
        );
        let evs = [
            c2s(CURL_GET),
            s2c(&r1[..r1.len() - 20]),
            Ev::Gap(Dir::ToClient, 30),
            s2c(b"garbage tail of the lost message\r\n"),
            c2s(&curl_get("/two")),
            s2c(&ok_json(b"\"two\"")),
        ];
        let (txs, stats) = run(&evs);
        assert_eq!(txs.len(), 2);
        assert!(txs[0].paired());
        assert!(txs[0].anomalies.contains(Anomaly::Gap));
        assert!(resp(&txs[0]).body.truncated);
        assert_eq!(req(&txs[1]).target, "/two");
        assert_eq!(resp(&txs[1]).body.data, b"\"two\"");
        assert!(txs[1].anomalies.is_empty());
        assert_eq!(stats.resyncs, 1);
        assert_eq!(stats.bytes_skipped, 34);
    }

    #[test]
    fn lost_response_does_not_shift_pairing() {
        // Three pipelined requests; the first response is lost whole.
        let mut reqs = curl_get("/1");
        reqs.extend(curl_get("/2"));
        reqs.extend(curl_get("/3"));
        let r1 = ok_json(b"1");
        let mut rest = ok_json(b"2");
        rest.extend(ok_json(b"3"));
        let evs = [
            c2s(&reqs),
            Ev::Gap(Dir::ToClient, r1.len() as u64),
            s2c(&rest),
            c2s(&curl_get("/4")),
            s2c(&ok_json(b"4")),
        ];
        let (txs, _) = run(&evs);
        let summary: Vec<(Option<&str>, Option<&[u8]>)> = txs
            .iter()
            .map(|t| {
                (
                    t.request.as_ref().map(|r| r.target.as_str()),
                    t.response.as_ref().map(|r| r.body.data.as_slice()),
                )
            })
            .collect();
        // The requests that might have been answered in the hole are given up rather than
        // paired with the wrong responses, and pairing is right again afterwards.
        assert_eq!(
            summary,
            vec![
                (Some("/1"), None),
                (Some("/2"), None),
                (Some("/3"), None),
                (None, Some(&b"2"[..])),
                (None, Some(&b"3"[..])),
                (Some("/4"), Some(&b"4"[..])),
            ]
        );
        assert!(
            txs[0].anomalies.contains(Anomaly::RequestWithoutResponse)
                && txs[0].anomalies.contains(Anomaly::Gap)
        );
        assert!(txs[3].anomalies.contains(Anomaly::ResponseWithoutRequest));
        assert!(txs[5].anomalies.is_empty());
    }

    #[test]
    fn request_gap_then_resync() {
        let post = curl_post("/upload", &[b'x'; 100]);
        let evs = [
            c2s(CURL_GET),
            s2c(&ok_json(b"1")),
            // A request lost whole (gap at a message boundary), and its response seen.
            Ev::Gap(Dir::ToServer, post.len() as u64),
            s2c(&ok_json(b"lost")),
            // Bytes of a half-lost request, then a new request at a line start.
            c2s(b"rest-of-a-body\r\nGET /after-gap HTTP/1.1\r\nHost: a\r\n\r\n"),
            s2c(&ok_json(b"after")),
        ];
        let (txs, stats) = run(&evs);
        let summary: Vec<(Option<&str>, Option<&[u8]>)> = txs
            .iter()
            .map(|t| {
                (
                    t.request.as_ref().map(|r| r.target.as_str()),
                    t.response.as_ref().map(|r| r.body.data.as_slice()),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (Some("/api/v1/users/42?fields=name"), Some(&b"1"[..])),
                (None, Some(&b"lost"[..])),
                (Some("/after-gap"), Some(&b"after"[..])),
            ]
        );
        assert_eq!(stats.resyncs, 1);
        assert_eq!(stats.bytes_skipped, 16);
    }

    #[test]
    fn response_begun_before_post_gap_request_is_not_paired_with_it() {
        let lost = ok_json(b"\"for the lost request\"");
        let (lost_a, lost_b) = lost.split_at(20);
        let evs = [
            c2s(CURL_GET),
            s2c(&ok_json(b"1")),
            Ev::Gap(Dir::ToServer, 77),
            s2c(lost_a),
            c2s(&curl_get("/after")),
            s2c(lost_b),
            s2c(&ok_json(b"\"after\"")),
        ];
        let (txs, _) = run(&evs);
        assert_eq!(txs.len(), 3);
        assert!(txs[1].request.is_none());
        assert!(txs[1].anomalies.contains(Anomaly::ResponseWithoutRequest));
        assert_eq!(req(&txs[2]).target, "/after");
        assert_eq!(resp(&txs[2]).body.data, b"\"after\"");
    }

    #[test]
    fn mid_stream_pickup() {
        // Capture starts inside a response body and inside a request body.
        let evs = [
            s2c(b"ta\":[1,2,3]}\r\n"),
            c2s(b"\"password\":\"x\"}"),
            c2s(&curl_get("/next")),
            s2c(&ok_json(b"\"next\"")),
        ];
        let (txs, stats) = run(&evs);
        assert_eq!(txs.len(), 1);
        assert_eq!(req(&txs[0]).target, "/next");
        assert!(txs[0].anomalies.is_empty());
        assert_eq!(stats.resyncs, 2);
        assert_eq!(stats.bytes_skipped, 14 + 15);
    }

    #[test]
    fn resync_skips_false_starts_and_finds_mid_line_heads() {
        let evs = [
            c2s(CURL_GET),
            s2c(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Ev::Gap(Dir::ToClient, 100),
            // "HTTP/1." in text that is no status line, then a response right after a
            // JSON body that has no final line break.
            s2c(b"see HTTP/1.1 spec\r\n{\"tail\":true}HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno"),
            c2s(b"Please GET help now\r\nxxPOST /real HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\n!"),
        ];
        let cfg = HttpConfig::default();
        let (txs, stats) = run_cfg(&cfg, &evs);
        // The response found after the gap pairs with nothing (its request was never seen
        // before the gap); the request found after junk is unanswered at close.
        assert_eq!(txs.len(), 3, "{txs:?}");
        assert!(txs[0].anomalies.contains(Anomaly::Gap));
        assert_eq!(resp(&txs[1]).status, 404);
        assert_eq!(resp(&txs[1]).body.data, b"no");
        assert_eq!(req(&txs[2]).target, "/real");
        assert_eq!(req(&txs[2]).body.data, b"!");
        assert_eq!(stats.bytes_skipped, 32 + 23);
    }

    #[test]
    fn hostile_resync_input_costs_linear_time() {
        // After a malformed request: a megabyte of "GET " without a line break, then heads
        // whose start line is fine but whose fields never parse, then a real request.
        let mut stream = b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n".to_vec();
        stream.extend(b"GET ".repeat(250_000));
        stream.extend(b"\r\n");
        stream.extend(b"GET / HTTP/1.1\r\nX: \x00\r\n".repeat(2000));
        stream.extend(b"\r\n");
        stream.extend(curl_get("/real"));
        let start = std::time::Instant::now();
        let (txs, stats) = run(&[c2s(&stream)]);
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "took {:?}",
            start.elapsed()
        );
        let targets: Vec<&str> = txs.iter().map(|t| req(t).target.as_str()).collect();
        assert_eq!(targets, vec!["/", "/real"]);
        assert_eq!(stats.unparsable_heads, 1);
    }

    #[test]
    fn swapped_directions_are_detected() {
        let evs = [
            Ev::Data(Dir::ToClient, CURL_GET.to_vec()),
            Ev::Data(Dir::ToServer, ok_json(b"{}")),
        ];
        let (txs, _, conn) = run_split(&HttpConfig::default(), &evs, &mut |_| 1);
        assert!(conn.swapped());
        assert_eq!(txs.len(), 1);
        assert!(txs[0].paired() && txs[0].anomalies.is_empty());
        assert_eq!(req(&txs[0]).ts, ts_of(0));
        let (txs2, _) = run(&evs);
        assert_eq!(txs, txs2);

        let (_, _, conn) = run_split(
            &HttpConfig::default(),
            &[c2s(CURL_GET), s2c(&ok_json(b"1"))],
            &mut |n| n,
        );
        assert!(!conn.swapped());
    }

    #[test]
    fn response_without_request_and_request_without_response() {
        let (txs, stats) = run(&[s2c(&ok_json(b"orphan")), c2s(CURL_GET)]);
        assert_eq!(txs.len(), 2);
        assert!(txs[0].request.is_none());
        assert_eq!(anomalies(&txs[0]), vec!["response-without-request"]);
        assert!(txs[1].response.is_none());
        assert_eq!(anomalies(&txs[1]), vec!["request-without-response"]);
        assert_eq!(stats.by_status_class.get("none"), Some(&1));
        assert_eq!(stats.paired, 0);
    }

    #[test]
    fn head_too_large_resyncs() {
        let cfg = HttpConfig {
            max_head_bytes: 256,
            ..Default::default()
        };
        let big = format!(
            "GET /big HTTP/1.1\r\nHost: a\r\nCookie: {}\r\n\r\n",
            "c".repeat(1000)
        );
        let mut reqs = big.into_bytes();
        reqs.extend(curl_get("/small"));
        let (txs, stats) = run_cfg(
            &cfg,
            &[c2s(&reqs), s2c(&ok_json(b"1")), s2c(&ok_json(b"2"))],
        );
        assert_eq!(txs.len(), 2);
        assert_eq!(req(&txs[0]).target, "/big");
        assert!(req(&txs[0]).headers.is_empty());
        assert!(txs[0].anomalies.contains(Anomaly::HeadTooLarge));
        assert_eq!(resp(&txs[0]).body.data, b"1");
        assert_eq!(req(&txs[1]).target, "/small");
        assert_eq!(resp(&txs[1]).body.data, b"2");
        assert_eq!(stats.cap_hits.get("head"), Some(&1));
        assert_eq!(stats.resyncs, 1);
    }

    #[test]
    fn too_many_headers_keeps_the_first() {
        let cfg = HttpConfig {
            max_headers: 4,
            ..Default::default()
        };
        let r = b"GET /h HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\nF: 6\r\n\r\n";
        let (txs, stats) = run_cfg(&cfg, &[c2s(r), s2c(&ok_json(b"1"))]);
        assert_eq!(txs.len(), 1);
        let names: Vec<&str> = req(&txs[0])
            .headers
            .iter()
            .map(|h| h.name.as_str())
            .collect();
        assert_eq!(names, vec!["A", "B", "C", "D"]);
        assert!(txs[0].anomalies.contains(Anomaly::TooManyHeaders));
        assert!(txs[0].paired());
        assert_eq!(stats.cap_hits.get("headers"), Some(&1));
    }

    /// (request target, response body) of each transaction.
    fn pairs(txs: &[Transaction]) -> Vec<(Option<&str>, Option<&[u8]>)> {
        txs.iter()
            .map(|t| {
                (
                    t.request.as_ref().map(|r| r.target.as_str()),
                    t.response.as_ref().map(|r| r.body.data.as_slice()),
                )
            })
            .collect()
    }

    #[test]
    fn pending_cap_gives_up_oldest_and_keeps_pairs_right() {
        let cfg = HttpConfig {
            max_pending_requests: 2,
            ..Default::default()
        };
        let reqs: Vec<u8> = (1..=4).flat_map(|i| curl_get(&format!("/{i}"))).collect();
        let answers: Vec<u8> = (1..=4)
            .flat_map(|i| ok_json(format!("{i}").as_bytes()))
            .collect();
        let (txs, stats) = run_cfg(&cfg, &[c2s(&reqs), s2c(&answers)]);
        // The answers to the given-up requests still come first: they pair with nothing,
        // and the later ones with their own requests.
        assert_eq!(
            pairs(&txs),
            vec![
                (Some("/1"), None),
                (Some("/2"), None),
                (None, Some(&b"1"[..])),
                (None, Some(&b"2"[..])),
                (Some("/3"), Some(&b"3"[..])),
                (Some("/4"), Some(&b"4"[..])),
            ]
        );
        for t in &txs[..4] {
            assert!(
                t.anomalies.contains(Anomaly::PendingCap),
                "{:?}",
                t.anomalies
            );
        }
        assert!(txs[4].anomalies.is_empty() && txs[5].anomalies.is_empty());
        assert_eq!(stats.cap_hits.get("pending"), Some(&2));
    }

    #[test]
    fn pending_bytes_cap_counts_kept_heads_and_bodies() {
        // Each request weighs its queue entry, method, target, fields and kept body.
        let post = curl_post("/p", &[b'x'; 3000]);
        let cfg = HttpConfig {
            max_pending_bytes: 8000,
            ..Default::default()
        };
        let reqs: Vec<u8> = (0..4).flat_map(|_| post.clone()).collect();
        let answers: Vec<u8> = (1..=4)
            .flat_map(|i| ok_json(format!("{i}").as_bytes()))
            .collect();
        let (txs, stats) = run_cfg(&cfg, &[c2s(&reqs), s2c(&answers)]);
        let given_up = stats.cap_hits.get("pending-bytes").copied().unwrap_or(0);
        assert_eq!(given_up, 2, "{:?}", stats.cap_hits);
        assert_eq!(stats.paired, 2);
        let answered: Vec<&[u8]> = txs
            .iter()
            .filter(|t| t.paired())
            .map(|t| resp(t).body.data.as_slice())
            .collect();
        assert_eq!(answered, vec![&b"3"[..], &b"4"[..]]);
        // Nothing is left charged once the queue is empty.
        let (_, _, conn) = run_split(&cfg, &[c2s(&reqs), s2c(&answers)], &mut |n| n);
        assert_eq!(conn.shared.pending_bytes, 0);
    }

    #[test]
    fn lost_responses_are_estimated_from_the_typical_size() {
        // Six pipelined requests; answers 3 and 4 are lost whole: the loss is two typical
        // answers long, so /3 and /4 are given up and 5 and 6 pair with /5 and /6.
        let reqs: Vec<u8> = (1..=6).flat_map(|i| curl_get(&format!("/{i}"))).collect();
        let answer = |i: u32| ok_json(format!("{i}").as_bytes());
        let lost = (answer(3).len() + answer(4).len()) as u64;
        let evs = [
            c2s(&reqs),
            s2c(&[answer(1), answer(2)].concat()),
            Ev::Gap(Dir::ToClient, lost),
            s2c(&[answer(5), answer(6)].concat()),
        ];
        let (txs, stats) = run(&evs);
        assert_eq!(
            pairs(&txs),
            vec![
                (Some("/1"), Some(&b"1"[..])),
                (Some("/2"), Some(&b"2"[..])),
                (Some("/3"), None),
                (Some("/4"), None),
                (Some("/5"), Some(&b"5"[..])),
                (Some("/6"), Some(&b"6"[..])),
            ]
        );
        assert!(txs[2].anomalies.contains(Anomaly::Gap));
        assert!(txs[3].anomalies.contains(Anomaly::RequestWithoutResponse));
        assert_eq!(stats.gap_unanswered, 2);
    }

    #[test]
    fn loss_inside_responses_counts_the_cut_ones() {
        // The loss starts inside answer 2's head and ends inside answer 4's body: answer 2
        // was never framed, 3 was lost whole, the rest of 4 is skipped by the resync.
        let reqs: Vec<u8> = (1..=5).flat_map(|i| curl_get(&format!("/{i}"))).collect();
        let answer = |i: u32| ok_json(format!("answer {i}").as_bytes());
        let (a2, a3, a4) = (answer(2), answer(3), answer(4));
        let lost = (a2.len() - 30 + a3.len() + a4.len() - 3) as u64;
        let evs = [
            c2s(&reqs),
            s2c(&answer(1)),
            s2c(&a2[..30]),
            Ev::Gap(Dir::ToClient, lost),
            s2c(&a4[a4.len() - 3..]),
            s2c(&answer(5)),
        ];
        let (txs, _) = run(&evs);
        assert_eq!(
            pairs(&txs),
            vec![
                (Some("/1"), Some(&b"answer 1"[..])),
                (Some("/2"), None),
                (Some("/3"), None),
                (Some("/4"), None),
                (Some("/5"), Some(&b"answer 5"[..])),
            ]
        );
        // A chunked answer cut by the loss counts as one of the lost answers.
        let chunked_answer = |i: u32| {
            chunked(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                &[format!("answer {i}").as_bytes()],
                "",
            )
        };
        let c2 = chunked_answer(2);
        let lost = (c2.len() - 50 + chunked_answer(3).len()) as u64;
        let evs = [
            c2s(&reqs[..reqs.len() / 5 * 4]),
            s2c(&chunked_answer(1)),
            s2c(&c2[..50]),
            Ev::Gap(Dir::ToClient, lost),
            s2c(&chunked_answer(4)),
        ];
        let (txs, _) = run(&evs);
        let summary: Vec<(Option<&str>, bool)> = txs
            .iter()
            .map(|t| {
                (
                    t.request.as_ref().map(|r| r.target.as_str()),
                    t.response.is_some(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (Some("/1"), true),
                (Some("/2"), true),
                (Some("/3"), false),
                (Some("/4"), true),
            ]
        );
        assert!(txs[1].anomalies.contains(Anomaly::TruncatedBody));
        assert_eq!(resp(&txs[3]).body.data, b"answer 4");
    }

    #[test]
    fn lenient_request_lines_still_pair_with_neighbours() {
        let cases: [(&[u8], &str, u8, Anomaly); 3] = [
            (
                b"GET /a b c HTTP/1.1\r\nHost: a\r\n\r\n",
                "/a b c",
                1,
                Anomaly::RequestLineSpaceInTarget,
            ),
            (
                b"GET HTTP/1.1\r\nHost: a\r\n\r\n",
                "",
                1,
                Anomaly::RequestLineNoTarget,
            ),
            (
                b"DELETE  /x  y  HTTP/1.0\n\n",
                "/x  y",
                0,
                Anomaly::RequestLineSpaceInTarget,
            ),
        ];
        for (odd, target, version, anomaly) in cases {
            let evs = [
                c2s(&curl_get("/before")),
                s2c(&ok_json(b"1")),
                c2s(odd),
                s2c(&py_response("400 Bad Request", "", b"2")),
                c2s(&curl_get("/after")),
                s2c(&ok_json(b"3")),
            ];
            let (txs, stats) = run(&evs);
            assert_eq!(txs.len(), 3, "{odd:?}: {txs:?}");
            assert!(txs.iter().all(Transaction::paired));
            let r = req(&txs[1]);
            assert_eq!((r.target.as_str(), r.version), (target, version));
            assert_eq!(anomalies(&txs[1]), vec![anomaly.as_str()]);
            assert_eq!(resp(&txs[1]).status, 400);
            assert!(txs[0].anomalies.is_empty() && txs[2].anomalies.is_empty());
            assert_eq!(req(&txs[2]).target, "/after");
            assert_eq!((stats.resyncs, stats.bytes_skipped), (0, 0));
        }
    }

    #[test]
    fn non_numeric_status_is_status_zero_and_framed() {
        let evs = [
            c2s(&curl_get("/1")),
            s2c(b"HTTP/1.1 abc OK\r\nContent-Length: 5\r\n\r\nhello"),
            c2s(&curl_get("/2")),
            s2c(b"HTTP/1.0 2000\r\nContent-Length: 2\r\n\r\nhi"),
            c2s(&curl_get("/3")),
            s2c(&ok_json(b"3")),
        ];
        let (txs, _) = run(&evs);
        assert_eq!(
            pairs(&txs),
            vec![
                (Some("/1"), Some(&b"hello"[..])),
                (Some("/2"), Some(&b"hi"[..])),
                (Some("/3"), Some(&b"3"[..])),
            ]
        );
        assert_eq!((resp(&txs[0]).status, resp(&txs[1]).status), (0, 0));
        assert_eq!(anomalies(&txs[0]), vec!["status-non-numeric"]);
        assert_eq!(resp(&txs[1]).version, 0);
        assert!(txs[2].anomalies.is_empty());
    }

    #[test]
    fn http09_request_and_headless_answer() {
        for line in [&b"GET /old\r\n"[..], b"GET /old\n", b"GET\r\n"] {
            let evs = [c2s(line), s2c(b"<html>old style</html>\n"), s2c(b"more")];
            let (txs, stats) = run(&evs);
            assert_eq!(txs.len(), 1, "{line:?}: {txs:?}");
            let (q, r) = (req(&txs[0]), resp(&txs[0]));
            assert_eq!(q.version, 0);
            assert!(q.headers.is_empty());
            assert_eq!(
                (r.status, r.body.data.as_slice()),
                (0, &b"<html>old style</html>\nmore"[..])
            );
            let mut want = vec!["request-line-no-version", "response-no-head"];
            if line.starts_with(b"GET\r") {
                assert_eq!(q.target, "");
                want.insert(1, "request-line-no-target");
            } else {
                assert_eq!(q.target, "/old");
            }
            assert_eq!(anomalies(&txs[0]), want);
            assert_eq!(stats.bytes_skipped, 0);
        }
        // A server may answer a version-less line with a head (nginx: 400): normal pairing.
        let (txs, _) = run(&[
            c2s(b"GET /x\r\n"),
            s2c(&py_response("400 Bad Request", "", b"no")),
        ]);
        assert_eq!(resp(&txs[0]).status, 400);
        assert_eq!(anomalies(&txs[0]), vec!["request-line-no-version"]);
    }

    #[test]
    fn lines_that_stay_unparsable() {
        // Unknown methods need a version; other protocol words and control bytes are not
        // guessed at; a status line must start HTTP/1.
        for bytes in [
            &b"FOO /x\r\n\r\n"[..],
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET /a\x01b HTTP/1.1\r\n\r\n",
            b"OK\r\n\r\n",
        ] {
            let (txs, stats) = run(&[c2s(bytes)]);
            assert!(txs.is_empty(), "{bytes:?}: {txs:?}");
            assert!(stats.bytes_skipped > 0);
        }
        let (txs, _) = run(&[c2s(CURL_GET), s2c(b"HTTX/1.1 200 OK\r\n\r\n")]);
        assert_eq!(txs.len(), 1);
        assert!(txs[0].response.is_none());
    }

    #[test]
    fn invalid_content_length_resyncs_to_next_request() {
        let evs = [
            c2s(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 12abc\r\n\r\nsmuggled-body\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n"),
            s2c(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
            s2c(&ok_json(b"n")),
        ];
        let (txs, stats) = run(&evs);
        assert_eq!(txs.len(), 2);
        assert!(txs[0].anomalies.contains(Anomaly::InvalidContentLength));
        assert_eq!(resp(&txs[0]).status, 400);
        assert_eq!(req(&txs[1]).target, "/next");
        assert_eq!(stats.bytes_skipped, 15);
    }

    #[test]
    fn bad_chunk_resyncs_to_next_response() {
        let evs = [
            c2s(&curl_get("/1")),
            c2s(&curl_get("/2")),
            s2c(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nnot-hex\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        ];
        let (txs, _) = run(&evs);
        assert_eq!(txs.len(), 2);
        assert!(txs[0].anomalies.contains(Anomaly::BadChunk));
        assert_eq!(resp(&txs[0]).body.data, b"hello");
        assert!(resp(&txs[0]).body.truncated);
        assert_eq!(req(&txs[1]).target, "/2");
        assert_eq!(resp(&txs[1]).body.data, b"ok");
        assert!(txs[1].anomalies.is_empty());
    }

    #[test]
    fn cl_and_te_chunked_wins() {
        let evs = [
            c2s(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            s2c(&ok_json(b"1")),
        ];
        let (txs, _) = run(&evs);
        assert_eq!(txs.len(), 1);
        assert_eq!(
            anomalies(&txs[0]),
            vec!["content-length-and-transfer-encoding"]
        );
        assert_eq!(req(&txs[0]).body.data, b"hello");
    }

    #[test]
    fn body_cap_keeps_prefix_counts_rest() {
        let cfg = HttpConfig {
            max_body_bytes: 16,
            ..Default::default()
        };
        let body = users_json();
        let (txs, stats) = run_cfg(&cfg, &[c2s(CURL_GET), s2c(&ok_json(&body))]);
        let b = &resp(&txs[0]).body;
        assert_eq!(b.data, &body[..16]);
        assert_eq!(b.wire_len, body.len() as u64);
        assert!(b.truncated);
        assert!(txs[0].anomalies.contains(Anomaly::BodyCap));
        assert_eq!(stats.cap_hits.get("body"), Some(&1));
    }

    /// One stream per anomaly; together they must cover every kind.
    fn anomaly_scenarios() -> Vec<(Anomaly, HttpConfig, Vec<Ev>)> {
        let d = HttpConfig::default;
        let zeros = gzip(&vec![0u8; 1 << 20]);
        vec![
            (
                Anomaly::ClAndTe,
                d(),
                vec![c2s(CURL_GET), s2c(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")],
            ),
            (
                Anomaly::DuplicateContentLength,
                d(),
                vec![c2s(CURL_GET), s2c(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok")],
            ),
            (Anomaly::InvalidContentLength, d(), vec![c2s(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n")]),
            (
                Anomaly::BadChunk,
                d(),
                vec![c2s(CURL_GET), s2c(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXX0\r\n\r\n")],
            ),
            (Anomaly::TruncatedBody, d(), vec![c2s(CURL_GET), s2c(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")]),
            (Anomaly::ResponseWithoutRequest, d(), vec![s2c(&ok_json(b"1"))]),
            (Anomaly::RequestWithoutResponse, d(), vec![c2s(CURL_GET)]),
            (
                Anomaly::Gap,
                d(),
                vec![c2s(CURL_GET), s2c(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"), Ev::Gap(Dir::ToClient, 10)],
            ),
            (
                Anomaly::HeadTooLarge,
                HttpConfig { max_head_bytes: 100, ..d() },
                vec![c2s(format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "y".repeat(200)).as_bytes())],
            ),
            (
                Anomaly::TooManyHeaders,
                HttpConfig { max_headers: 1, ..d() },
                vec![c2s(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n")],
            ),
            (Anomaly::BadHead, d(), vec![c2s(b"GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n")]),
            (
                Anomaly::DecodeFailed,
                d(),
                vec![c2s(CURL_GET), s2c(&py_response("200 OK", "Content-Encoding: gzip\r\n", b"{\"plain\":true}"))],
            ),
            (
                Anomaly::DecodeCap,
                d(),
                vec![c2s(CURL_GET), s2c(&py_response("200 OK", "Content-Encoding: gzip\r\n", &zeros))],
            ),
            (
                Anomaly::BodyCap,
                HttpConfig { max_body_bytes: 4, ..d() },
                vec![c2s(&curl_post("/p", b"0123456789"))],
            ),
            (
                Anomaly::Upgrade,
                d(),
                vec![
                    c2s(b"GET / HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"),
                    s2c(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n\x00\x00\x12\x04\x00"),
                ],
            ),
            (
                Anomaly::Connect,
                d(),
                vec![c2s(b"CONNECT a:443 HTTP/1.1\r\n\r\n"), s2c(b"HTTP/1.0 200 OK\r\n\r\n")],
            ),
            (
                Anomaly::PendingCap,
                HttpConfig { max_pending_requests: 1, ..d() },
                vec![c2s(&[curl_get("/1"), curl_get("/2")].concat())],
            ),
            (
                Anomaly::UnknownEncoding,
                d(),
                vec![c2s(CURL_GET), s2c(&py_response("200 OK", "Content-Encoding: zstd\r\n", b"\x28\xb5\x2f\xfd"))],
            ),
            (Anomaly::RequestLineSpaceInTarget, d(), vec![c2s(b"GET /a b HTTP/1.1\r\n\r\n")]),
            (Anomaly::RequestLineNoVersion, d(), vec![c2s(b"GET /a\r\n")]),
            (Anomaly::RequestLineNoTarget, d(), vec![c2s(b"GET HTTP/1.1\r\n\r\n")]),
            (Anomaly::StatusNonNumeric, d(), vec![c2s(CURL_GET), s2c(b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n")]),
            (Anomaly::ResponseNoHead, d(), vec![c2s(b"GET /a\r\n"), s2c(b"body")]),
        ]
    }

    #[test]
    fn every_anomaly_is_produced() {
        let mut seen = AnomalySet::default();
        for (expected, cfg, evs) in anomaly_scenarios() {
            let (txs, stats) = run_cfg(&cfg, &evs);
            let union = txs.iter().fold(AnomalySet::default(), |acc, t| {
                AnomalySet(acc.0 | t.anomalies.0)
            });
            assert!(
                union.contains(expected),
                "{expected:?} not produced: {txs:?}"
            );
            assert!(
                stats
                    .anomalies_by_kind
                    .get(expected.as_str())
                    .is_some_and(|&n| n > 0)
            );
            seen = AnomalySet(seen.0 | union.0);
        }
        let missing: Vec<Anomaly> = Anomaly::ALL
            .iter()
            .copied()
            .filter(|a| !seen.contains(*a))
            .collect();
        assert!(missing.is_empty(), "no scenario produces {missing:?}");
    }

    #[test]
    fn idle_connection_state_is_small() {
        // Flow tables hold one HttpConn per connection; messages in flight are boxed.
        assert!(size_of::<HttpConn>() <= 320, "{}", size_of::<HttpConn>());
    }

    #[test]
    fn stats_merge_adds_up() {
        let (_, a) = run(&[c2s(CURL_GET), s2c(&ok_json(b"1"))]);
        let (_, b) = run(&[s2c(&ok_json(b"1"))]);
        let mut m = a.clone();
        m.merge(&b);
        assert_eq!(m.transactions, 2);
        assert_eq!(m.by_status_class.get("2xx"), Some(&2));
        assert_eq!(
            m.anomalies_by_kind.get("response-without-request"),
            Some(&1)
        );
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["paired"], 1);
        assert_eq!(json["by_method_class"]["GET"], 1);
    }

    #[test]
    fn memory_stays_bounded_under_floods() {
        let cfg = HttpConfig {
            max_head_bytes: 1024,
            max_body_bytes: 1024,
            max_pending_requests: 4,
            ..Default::default()
        };
        let mut conn = HttpConn::new();
        let (mut out, mut stats) = (Vec::new(), HttpStats::default());
        // Per direction a head-sized buffer and a body; queued requests (cap, one being
        // answered, one arriving) with a request and a response body each.
        let bound = 2 * (1024 + 1024) + 6 * 2 * 1024 + ORIENT_PROBE_LEN;
        let endless_head = b"GET / HTTP/1.1\r\nX: "
            .iter()
            .copied()
            .chain(std::iter::repeat_n(b'a', 100_000))
            .collect::<Vec<_>>();
        let endless_chunk_line = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;"
            .iter()
            .copied()
            .chain(std::iter::repeat_n(b'e', 100_000))
            .collect::<Vec<_>>();
        let many = (0..200)
            .flat_map(|i| curl_get(&format!("/{i}")))
            .collect::<Vec<_>>();
        for (dir, stream) in [
            (Dir::ToServer, &endless_head),
            (Dir::ToClient, &endless_chunk_line),
            (Dir::ToServer, &many),
        ] {
            for piece in stream.chunks(700) {
                conn.data(&cfg, dir, piece, Timestamp(1), &mut out, &mut stats);
                assert!(
                    conn.buffered_bytes() <= bound,
                    "{} > {bound}",
                    conn.buffered_bytes()
                );
            }
        }
        assert!(conn.shared.pending.len() <= 6);
    }

    fn method_strategy() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS",
        ])
    }

    #[derive(Clone, Debug)]
    struct PairSpec {
        method: &'static str,
        req_body: Vec<u8>,
        req_chunk: Option<usize>,
        status: u16,
        resp_body: Vec<u8>,
        resp_chunk: Option<usize>,
        gzip: bool,
    }

    fn pair_strategy() -> impl Strategy<Value = PairSpec> {
        (
            method_strategy(),
            prop::collection::vec(any::<u8>(), 0..300),
            prop::option::of(1usize..64),
            prop::sample::select(vec![200u16, 201, 204, 304, 404, 500]),
            prop::collection::vec(any::<u8>(), 0..600),
            prop::option::of(1usize..128),
            any::<bool>(),
        )
            .prop_map(
                |(method, req_body, req_chunk, status, resp_body, resp_chunk, gzip)| PairSpec {
                    method,
                    req_body,
                    req_chunk,
                    status,
                    resp_body,
                    resp_chunk,
                    gzip,
                },
            )
    }

    fn body_bytes(head: &mut Vec<u8>, body: &[u8], chunk: Option<usize>) {
        match chunk {
            Some(size) => {
                head.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                for c in body.chunks(size) {
                    head.extend_from_slice(format!("{:X};i=1\r\n", c.len()).as_bytes());
                    head.extend_from_slice(c);
                    head.extend_from_slice(b"\r\n");
                }
                head.extend_from_slice(b"0\r\nX-Trailer: t\r\n\r\n");
            }
            None => {
                head.extend_from_slice(
                    format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes(),
                );
                head.extend_from_slice(body);
            }
        }
    }

    fn build(p: &PairSpec) -> (Vec<u8>, Vec<u8>) {
        let mut q = format!(
            "{} /r/{} HTTP/1.1\r\nHost: api.example.com\r\nAccept: */*\r\n",
            p.method,
            p.req_body.len()
        )
        .into_bytes();
        body_bytes(&mut q, &p.req_body, p.req_chunk);
        let mut r = format!("HTTP/1.1 {} X\r\nServer: t\r\n", p.status).into_bytes();
        let bodyless = p.method == "HEAD" || p.status == 204 || p.status == 304;
        if bodyless {
            r.extend_from_slice(b"\r\n");
        } else if p.gzip {
            r.extend_from_slice(b"Content-Encoding: gzip\r\n");
            body_bytes(&mut r, &gzip(&p.resp_body), p.resp_chunk);
        } else {
            body_bytes(&mut r, &p.resp_body, p.resp_chunk);
        }
        (q, r)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

        #[test]
        fn valid_streams_split_anywhere_match_unsplit(
            pairs in prop::collection::vec(pair_strategy(), 1..6),
            pipelined in any::<bool>(),
            cuts in prop::collection::vec(1usize..40, 1..20),
        ) {
            let built: Vec<(Vec<u8>, Vec<u8>)> = pairs.iter().map(build).collect();
            let evs: Vec<Ev> = if pipelined {
                let reqs: Vec<u8> = built.iter().flat_map(|(q, _)| q.clone()).collect();
                let resps: Vec<u8> = built.iter().flat_map(|(_, r)| r.clone()).collect();
                vec![c2s(&reqs), s2c(&resps)]
            } else {
                built.iter().flat_map(|(q, r)| [c2s(q), s2c(r)]).collect()
            };
            let cfg = HttpConfig::default();
            let (whole, _, _) = run_split(&cfg, &evs, &mut |n| n);
            let mut k = 0;
            let (split, _, _) = run_split(&cfg, &evs, &mut |_| { k += 1; cuts[k % cuts.len()] });
            prop_assert_eq!(&whole, &split);
            prop_assert_eq!(whole.len(), pairs.len());
            for (t, p) in whole.iter().zip(&pairs) {
                prop_assert!(t.paired() && t.anomalies.is_empty(), "{:?}", t.anomalies);
                prop_assert_eq!(&req(t).method, p.method);
                prop_assert_eq!(&req(t).body.data, &p.req_body);
                prop_assert_eq!(resp(t).status, p.status);
                let bodyless = p.method == "HEAD" || p.status == 204 || p.status == 304;
                if !bodyless {
                    prop_assert_eq!(&resp(t).body.data, &p.resp_body);
                }
            }
        }

        #[test]
        fn messy_streams_split_anywhere_match_unsplit(
            pieces in prop::collection::vec((0u8..10, any::<bool>(), prop::collection::vec(any::<u8>(), 0..24)), 0..30),
            cuts in prop::collection::vec(1usize..9, 1..10),
        ) {
            // Valid fragments, junk and gaps: whatever the parser makes of it, chunking
            // must not change it.
            const TOKENS: &[&[u8]] = &[
                b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
                b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", b"3;x\r\nabc\r\n0\r\nT: 1\r\n\r\n",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"HTTP/1.0 200 OK\r\n\r\nuntil close",
                b"zz\r\n", b"HEAD /h HTTP/1.1\r\n\r\n",
            ];
            let evs: Vec<Ev> = pieces
                .iter()
                .map(|(kind, to_server, bytes)| {
                    let dir = if *to_server { Dir::ToServer } else { Dir::ToClient };
                    match kind {
                        0 => Ev::Gap(dir, u64::from(bytes.first().copied().unwrap_or(1)) + 1),
                        1 | 2 => Ev::Data(dir, bytes.clone()),
                        _ => {
                            let mut v = TOKENS[usize::from(bytes.first().copied().unwrap_or(0)) % TOKENS.len()].to_vec();
                            v.extend_from_slice(bytes.get(1..3).unwrap_or_default());
                            Ev::Data(dir, v)
                        }
                    }
                })
                .collect();
            let cfg = HttpConfig { max_head_bytes: 128, max_body_bytes: 32, max_pending_requests: 3, ..Default::default() };
            let (whole, ws, _) = run_split(&cfg, &evs, &mut |n| n);
            let (bytewise, bs, _) = run_split(&cfg, &evs, &mut |_| 1);
            let mut k = 0;
            let (split, ss, _) = run_split(&cfg, &evs, &mut |_| { k += 1; cuts[k % cuts.len()] });
            prop_assert_eq!(&whole, &bytewise);
            prop_assert_eq!(&whole, &split);
            prop_assert_eq!(ws.bytes_skipped, bs.bytes_skipped);
            prop_assert_eq!(ws.resyncs, ss.resyncs);
            prop_assert_eq!(&ws.anomalies_by_kind, &ss.anomalies_by_kind);
        }

        #[test]
        fn arbitrary_streams_never_panic(
            pieces in prop::collection::vec((0u8..8, any::<bool>(), prop::collection::vec(any::<u8>(), 0..40)), 0..40),
        ) {
            const TOKENS: &[&[u8]] = &[
                b"GET / HTTP/1.1\r\n", b"HTTP/1.1 200 OK\r\n", b"Content-Length: 5\r\n", b"Transfer-Encoding: chunked\r\n",
                b"\r\n", b"5\r\nhello\r\n0\r\n\r\n", b"HTTP/1.1 101 S\r\n\r\n", b"Content-Encoding: gzip\r\n",
            ];
            let cfg = HttpConfig { max_head_bytes: 200, max_body_bytes: 64, max_pending_requests: 3, max_headers: 4, ..Default::default() };
            let bound = 2 * (200 + 64) + 5 * 2 * 64 + ORIENT_PROBE_LEN;
            let mut conn = HttpConn::new();
            let (mut out, mut stats) = (Vec::new(), HttpStats::default());
            for (i, (kind, to_server, bytes)) in pieces.iter().enumerate() {
                let dir = if *to_server { Dir::ToServer } else { Dir::ToClient };
                let ts = Timestamp(i as u64);
                match kind {
                    0 => conn.gap(&cfg, dir, u64::from(bytes.first().copied().unwrap_or(1)), ts, &mut out, &mut stats),
                    1..=3 => conn.data(&cfg, dir, bytes, ts, &mut out, &mut stats),
                    _ => {
                        let token = TOKENS[usize::from(bytes.first().copied().unwrap_or(0)) % TOKENS.len()];
                        conn.data(&cfg, dir, token, ts, &mut out, &mut stats);
                    }
                }
                prop_assert!(conn.buffered_bytes() <= bound);
            }
            conn.close(&cfg, Timestamp(u64::MAX), &mut out, &mut stats);
            prop_assert_eq!(stats.transactions, out.len() as u64);
            prop_assert_eq!(conn.buffered_bytes(), 0);
        }
    }

    #[test]
    fn method_and_status_classes_come_from_their_lists() {
        for m in ["GET", "OPTIONS", "PROPFIND", "get"] {
            assert!(METHOD_CLASSES.contains(&method_class(m)), "{m}");
        }
        assert_eq!(method_class("PROPFIND"), "other");
        assert_eq!(method_class("get"), "other");
        for s in [
            None,
            Some(101),
            Some(204),
            Some(302),
            Some(404),
            Some(503),
            Some(999),
        ] {
            assert!(STATUS_CLASSES.contains(&status_class(s)), "{s:?}");
        }
        assert_eq!(status_class(Some(999)), "other");
        let distinct: std::collections::BTreeSet<_> = STATUS_CLASSES.iter().collect();
        assert_eq!(distinct.len(), STATUS_CLASSES.len());
    }
}
