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
//!
//! Layout: this file has the public API, the types both directions share and the
//! per-direction state machine (`Side`) with the connection that drives it
//! ([`HttpConn`]); `head` parses heads and trailers, `framing` delimits bodies and decodes
//! them, `pairing` queues requests and pairs them with responses, `resync` finds message
//! starts after damage, and `tests` exercises it all.
use std::collections::{BTreeMap, VecDeque};
use std::mem::MaybeUninit;

use memchr::{memchr, memchr_iter, memchr3};

use super::body::{self, Codings, ContentLength, TransferEncoding};
use super::h2::{self, H2Conn};
use super::{Anomaly, AnomalySet, Body, Dir, Headers, HttpConfig, Request, Response, Transaction};
use crate::capture::Timestamp;

mod framing;
mod head;
mod pairing;
mod resync;
#[cfg(test)]
mod tests;

pub(in crate::http) use framing::decode_kept;
use framing::*;
use head::*;
pub(in crate::http) use pairing::emit_h2;
use pairing::*;
use resync::*;

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
const STATUS_LINE_PREFIX: &[u8] = b"HTTP/1.";

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
    /// Requests of connections cut by load shedding while they were being analysed
    /// (live capture, backlog at its cap) that were not emitted: their answer, or the
    /// rest of their own body, was shed, not lost. Counted in `requests`, never in
    /// `transactions`.
    #[serde(default)]
    pub shed_unanswered: u64,
    /// Bytes produced by content decoding.
    pub body_bytes_decoded: u64,
    /// Bodies content-decoded, and how many of them the thread's memo of recent decodings
    /// answered (the same bytes decoded before).
    #[serde(default)]
    pub body_decodes: u64,
    #[serde(default)]
    pub body_decodes_memoized: u64,
    /// Response bodies scanned for personal data and the inventory, and how many of them
    /// were answered by the workers' memo of recent scans (the same bytes scanned before).
    #[serde(default)]
    pub response_scans: u64,
    #[serde(default)]
    pub response_scans_memoized: u64,
    /// Connections that began with a TLS handshake (not parsed as HTTP), their
    /// ClientHellos fingerprinted, and hellos that could not be read (by reason).
    #[serde(default)]
    pub tls_connections: u64,
    #[serde(default)]
    pub tls_hellos: u64,
    #[serde(default)]
    pub tls_errors: BTreeMap<&'static str, u64>,
    /// Limits reached: head, headers, body, decoded, ratio, pending, h2_streams.
    pub cap_hits: BTreeMap<&'static str, u64>,
    /// HTTP/2 connections by how they were recognised (`prior-knowledge`, `upgrade`,
    /// `mid-stream`).
    #[serde(default)]
    pub h2_connections: BTreeMap<&'static str, u64>,
    /// HTTP/2 frames and header blocks that were odd, malformed or hostile, by kind
    /// (`malformed-frame`, `protocol-error`, `hpack-unknown-entry`, `rapid-reset-flood`...).
    #[serde(default)]
    pub h2_events: BTreeMap<&'static str, u64>,
    /// gRPC calls by outcome (`grpc-status` name, `none` without one).
    #[serde(default)]
    pub grpc_calls: BTreeMap<&'static str, u64>,
    /// gRPC bodies whose messages were not all decoded, by reason.
    #[serde(default)]
    pub grpc_errors: BTreeMap<&'static str, u64>,
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
        self.shed_unanswered += other.shed_unanswered;
        self.body_bytes_decoded += other.body_bytes_decoded;
        self.body_decodes += other.body_decodes;
        self.body_decodes_memoized += other.body_decodes_memoized;
        self.response_scans += other.response_scans;
        self.response_scans_memoized += other.response_scans_memoized;
        self.tls_connections += other.tls_connections;
        self.tls_hellos += other.tls_hellos;
        for (k, v) in &other.tls_errors {
            *self.tls_errors.entry(k).or_default() += v;
        }
        for (mine, theirs) in [
            (&mut self.anomalies_by_kind, &other.anomalies_by_kind),
            (&mut self.by_method_class, &other.by_method_class),
            (&mut self.by_status_class, &other.by_status_class),
            (&mut self.cap_hits, &other.cap_hits),
            (&mut self.h2_connections, &other.h2_connections),
            (&mut self.h2_events, &other.h2_events),
            (&mut self.grpc_calls, &other.grpc_calls),
            (&mut self.grpc_errors, &other.grpc_errors),
        ] {
            for (k, v) in theirs {
                *mine.entry(k).or_insert(0) += v;
            }
        }
    }
}

pub(in crate::http) fn bump(map: &mut BTreeMap<&'static str, u64>, key: &'static str) {
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

/// Per-call context.
pub(in crate::http) struct Ctx<'a> {
    pub(in crate::http) cfg: &'a HttpConfig,
    pub(in crate::http) ts: Timestamp,
    pub(in crate::http) out: &'a mut Vec<Transaction>,
    pub(in crate::http) stats: &'a mut HttpStats,
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
    /// Bytes its parsed head holds (fields, method, target), for memory accounting.
    head_weight: usize,
}

/// An emptied message: what a parked box holds between two messages ([`pairing::park`]).
impl Default for InFlight {
    fn default() -> InFlight {
        InFlight {
            msg: Message::Request(Request::default()),
            anomalies: AnomalySet::default(),
            framing: Framing::None,
            keeping: true,
            codings: Codings::default(),
            link: None,
            opaque_after: false,
            head_len: 0,
            head_weight: 0,
        }
    }
}

// A message reading its body waits boxed in its side (a side is small while it reads
// heads); the boxes are reused per thread, as the pairing queue's are: one allocation per
// message with a body was 1.1 per transaction on the realistic capture.
thread_local! {
    #[allow(clippy::vec_box)]
    static PARKED_IN_FLIGHT: std::cell::RefCell<Vec<Box<InFlight>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

impl Parkable for InFlight {
    fn spare() -> &'static std::thread::LocalKey<std::cell::RefCell<Vec<Box<Self>>>> {
        &PARKED_IN_FLIGHT
    }
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
        if body.data.capacity() == 0 && room > 0 && !bytes.is_empty() {
            body.data = crate::http::body_buffer();
        }
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

/// End of a head (index after the empty line): the first line break from `from` that is
/// followed by another (`\n\n` or `\n\r\n`).
///
/// Searched for as those two strings rather than line by line: a search per line (nine
/// of them for a typical request head) was 1.8% of the pipeline's instructions. `\n\r\n`
/// ends nearly every head; `\n\n` (bare line feeds) is then looked for only before it.
fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    static CRLF: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\n\r\n"));
    static LF: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\n\n"));
    let tail = buf.get(from..)?;
    let crlf = CRLF.find(tail);
    // A `\n\n` ending the head earlier starts before the `\n\r\n`'s `\r`.
    let before = match crlf {
        Some(i) => tail.get(..=i).unwrap_or(tail),
        None => tail,
    };
    match (LF.find(before), crlf) {
        (Some(j), _) => Some(from + j + 2),
        (None, Some(i)) => Some(from + i + 3),
        (None, None) => None,
    }
}

/// Copies `a` then `b` into `dst` as far as it fits; returns the length written. Two
/// slice copies: a byte loop over the chained pair ran at every message start.
fn fill(dst: &mut [u8], a: &[u8], b: &[u8]) -> usize {
    let na = a.len().min(dst.len());
    let (head, rest) = dst.split_at_mut(na);
    head.copy_from_slice(&a[..na]);
    let nb = b.len().min(rest.len());
    rest[..nb].copy_from_slice(&b[..nb]);
    na + nb
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
                        headers: Headers::new(),
                        anomalies,
                        len: 0,
                    };
                    let framing = body::framing_headers(&Headers::new());
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
            // Fast path: the whole head is in this input; parse it in place, in one pass
            // when httparse takes it as it is.
            let window = src.get(..cap).unwrap_or(src);
            if let Some(parsed) = parse_whole_head(self.role, window, cx.cfg.max_headers) {
                return Step::Consumed(self.on_parsed(sh, parsed, cx));
            }
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
                    headers: Headers::new(),
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
        parsed.len = parsed.len.min(head.len());
        Ok(self.on_parsed(sh, parsed, cx))
    }

    /// A head parsed: starts its message. Returns the bytes it spans.
    fn on_parsed(&mut self, sh: &mut Shared, mut parsed: ParsedHead, cx: &mut Ctx<'_>) -> usize {
        if parsed.anomalies.contains(Anomaly::TooManyHeaders) {
            bump(&mut cx.stats.cap_hits, "headers");
        }
        let fh = body::framing_headers(&parsed.headers);
        if fh.codings.unknown {
            parsed.anomalies.insert(Anomaly::UnknownEncoding);
        }
        let used = parsed.len;
        self.begin_message(sh, parsed, Some(fh), cx);
        used
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
        let head_weight = match &msg {
            Message::Request(r) => request_weight(r),
            Message::Response(r) => response_weight(r),
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
            head_weight,
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
                    let data = &mut m.body_mut().data;
                    if data.capacity() == 0 && hint > 0 {
                        *data = crate::http::body_buffer();
                    }
                    data.reserve(hint);
                }
                m.framing = f;
                self.msg = Some(park(m));
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
            finish(sh, cx, unpark(m));
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
            finish(sh, cx, unpark(m));
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
                        finish(sh, cx, unpark(m));
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
                            finish(sh, cx, unpark(m));
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
                    finish(sh, cx, unpark(m));
                }
            }
            Phase::Head | Phase::Resync => self.skip(self.buf.len() as u64, cx.stats),
        }
        self.phase = Phase::Resync;
        self.buf = Vec::new();
        self.scan = 0;
    }

    /// Forgets the message being read and the bytes buffered, without finishing them
    /// (the connection was cut by load shedding).
    fn drop_partial(&mut self) {
        if let Some(m) = self.msg.take() {
            drop(unpark(m));
        }
        self.phase = Phase::Resync;
        self.buf = Vec::new();
        self.scan = 0;
    }

    /// Heap bytes this direction holds: its line buffer and the message being read.
    fn held_bytes(&self) -> usize {
        self.buf.capacity()
            + self.msg.as_ref().map_or(0, |m| {
                size_of::<InFlight>() + m.head_weight + m.body().data.capacity()
            })
    }

    fn buffered_bytes(&self) -> usize {
        self.buf.len()
            + self.msg.as_ref().map_or(0, |m| match &m.msg {
                Message::Request(r) => r.body.data.len(),
                Message::Response(r) => r.body.data.len(),
            })
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
    /// The connection turned out to be HTTP/2: everything goes there.
    h2: Option<Box<H2Conn>>,
    /// An HTTP/1.x head was parsed: the connection is not HTTP/2 joined late.
    h1_heads: bool,
    /// Bytes looked at for HTTP/2 frames before any HTTP/1.x head.
    h2_probed: u32,
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
            h2: None,
            h1_heads: false,
            h2_probed: 0,
        }
    }

    /// How the connection was found to be HTTP/2, if it is.
    pub fn h2(&self) -> Option<h2::Start> {
        self.h2.as_ref().map(|h| h.start())
    }

    fn end(&self, dir: Dir) -> h2::End {
        match self.role(dir) {
            Role::Request => h2::End::Client,
            Role::Response => h2::End::Server,
        }
    }

    /// Switches to HTTP/2 (counted by how it was recognised).
    fn start_h2(&mut self, conn: H2Conn, stats: &mut HttpStats) -> &mut H2Conn {
        bump(&mut stats.h2_connections, conn.start().as_str());
        self.req.clear_buf();
        self.resp.clear_buf();
        self.h2.insert(Box::new(conn))
    }

    /// Looks at bytes of a connection that has shown no HTTP/1.x head for the client
    /// preface (its first bytes, however cut) or a run of HTTP/2 frames (joined late).
    fn probe_h2(&mut self, dir: Dir, data: &[u8], cx: &mut Ctx<'_>) -> H2Probe {
        if self.h1_heads || self.h2_probed as usize >= h2::MAX_RESYNC_BYTES {
            return H2Probe::No;
        }
        self.h2_probed = self
            .h2_probed
            .saturating_add(u32::try_from(data.len()).unwrap_or(u32::MAX));
        if self.shared.event == 0 && (self.stash_len == 0 || self.stash_dir == dir) {
            // The connection's first bytes, with any held so far.
            let mut first = [0u8; ORIENT_PROBE_LEN];
            let n = fill(
                &mut first,
                self.stash.get(..self.stash_len).unwrap_or_default(),
                data,
            );
            let first = first.get(..n).unwrap_or_default();
            if h2::is_preface_start(first) {
                if n < 3 {
                    // "P" or "PR": too few to tell from PUT or POST; held.
                    self.hold(dir, data, cx.ts);
                    return H2Probe::Held;
                }
                if self.orientation == Orientation::Unknown {
                    self.orientation = match dir {
                        Dir::ToServer => Orientation::AsGiven,
                        Dir::ToClient => Orientation::Swapped,
                    };
                }
                let held = self.stash;
                let n = std::mem::take(&mut self.stash_len);
                let end = self.end(dir);
                let h2 = self.start_h2(H2Conn::prior_knowledge(), cx.stats);
                h2.data(end, held.get(..n).unwrap_or_default(), cx);
                return H2Probe::H2;
            }
        }
        if self.shared.event == 0 && self.stash_len == 0 && h2::is_server_preface(data) {
            // An HTTP/2-only server (gRPC) speaks first: its SETTINGS, before the client's
            // preface arrives.
            if self.orientation == Orientation::Unknown {
                self.orientation = match dir {
                    Dir::ToClient => Orientation::AsGiven,
                    Dir::ToServer => Orientation::Swapped,
                };
            }
            self.start_h2(H2Conn::prior_knowledge(), cx.stats);
            return H2Probe::H2;
        }
        if looks_like_h1_start(data) || h2::find_frames(data).is_none() {
            return H2Probe::No;
        }
        if self.orientation == Orientation::Unknown {
            self.orientation = Orientation::AsGiven;
            self.stash_len = 0;
        }
        self.start_h2(H2Conn::mid_stream(), cx.stats);
        H2Probe::H2
    }

    /// True once the reassembler's direction guess was found inverted (client bytes
    /// arrived as ToClient); from then on `data` maps directions itself and callers
    /// should report client/server swapped.
    pub fn swapped(&self) -> bool {
        (self.orientation == Orientation::Swapped) ^ self.h2.as_ref().is_some_and(|h| h.swapped())
    }

    /// True after CONNECT 2xx or 101 Upgrade (other than to HTTP/2): the rest of the
    /// connection is not HTTP; callers may stop feeding data.
    pub fn opaque(&self) -> bool {
        self.shared.opaque && self.h2.is_none()
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
                    + p.response.as_ref().map_or(0, |r| r.0.body.data.len())
            })
            .sum();
        self.req.buffered_bytes()
            + self.resp.buffered_bytes()
            + queued
            + self.stash_len
            + self.h2.as_ref().map_or(0, |h| h.held_bytes())
    }

    /// Heap bytes this connection holds now, as the memory budget charges them: both
    /// directions' buffers and messages being read, and the requests waiting for answers
    /// (their accounted weight). Cheap: no walk over the queue.
    pub fn held_bytes(&self) -> usize {
        self.req.held_bytes()
            + self.resp.held_bytes()
            + self.shared.pending_bytes
            + self.h2.as_ref().map_or(0, |h| h.held_bytes())
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
        if self.closed || data.is_empty() || (self.shared.opaque && self.h2.is_none()) {
            return;
        }
        let mut cx = Ctx {
            cfg,
            ts,
            out,
            stats,
        };
        if self.h2.is_none() && self.probe_h2(dir, data, &mut cx) == H2Probe::Held {
            return;
        }
        if self.h2.is_some() {
            let end = self.end(dir);
            if let Some(h2) = self.h2.as_mut() {
                h2.data(end, data, &mut cx);
            }
            return;
        }
        if self.orientation == Orientation::Unknown && !self.orient(dir, data, &mut cx) {
            return;
        }
        self.shared.event += 1;
        let heads = cx.stats.requests + cx.stats.responses;
        self.feed(self.role(dir), data, &mut cx);
        if cx.stats.requests + cx.stats.responses != heads {
            self.h1_heads = true;
        }
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
                self.hold(dir, data, cx.ts);
                false
            }
            None => {
                self.settle(Orientation::AsGiven, cx);
                true
            }
        }
    }

    /// Holds a connection's first bytes (they fit: at most `ORIENT_PROBE_LEN` in all) until
    /// they can be told apart; the first held bytes' direction and time are kept.
    fn hold(&mut self, dir: Dir, data: &[u8], ts: Timestamp) {
        if self.stash_len == 0 {
            self.stash_dir = dir;
            self.stash_ts = ts;
        }
        let start = self.stash_len;
        if let Some(dst) = self.stash.get_mut(start..start + data.len()) {
            dst.copy_from_slice(data);
            self.stash_len += data.len();
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
            if let Some(up) = sh.h2c.take() {
                let (req, an) = *up;
                // `Upgrade: h2c` answered by 101: HTTP/2 from the next byte, the upgrade
                // request being stream 1.
                let mut rest = replay.get(replay_pos..).unwrap_or_default().to_vec();
                rest.extend_from_slice(input);
                let h2 = self.start_h2(H2Conn::upgraded(req, an), cx.stats);
                h2.data(h2::End::Server, &rest, cx);
            }
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
        if self.closed || len == 0 {
            return;
        }
        let mut cx = Ctx {
            cfg,
            ts,
            out,
            stats,
        };
        if self.h2.is_some() {
            let end = self.end(dir);
            if let Some(h2) = self.h2.as_mut() {
                h2.gap(end, len, &mut cx);
            }
            return;
        }
        if self.shared.opaque {
            return;
        }
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
        self.finish_connection(cfg, ts, out, stats, false);
    }

    /// The connection was cut by load shedding: its later bytes are not analysed. What is
    /// complete (requests with their responses) is emitted as on [`HttpConn::close`]; a
    /// message still being read is dropped, and a request still waiting for its response
    /// (or for the rest of its body) is counted in `shed_unanswered` instead of being
    /// emitted as unanswered: under overload the transactions shieldtap reports stay
    /// whole, and what it shed is counted. HTTP/2 connections close as usual.
    pub fn abandon(
        &mut self,
        cfg: &HttpConfig,
        ts: Timestamp,
        out: &mut Vec<Transaction>,
        stats: &mut HttpStats,
    ) {
        self.finish_connection(cfg, ts, out, stats, true);
    }

    fn finish_connection(
        &mut self,
        cfg: &HttpConfig,
        ts: Timestamp,
        out: &mut Vec<Transaction>,
        stats: &mut HttpStats,
        shed: bool,
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
        if let Some(h2) = self.h2.as_mut() {
            self.closed = true;
            h2.close(&mut cx);
            return;
        }
        if self.orientation == Orientation::Unknown {
            self.settle(Orientation::AsGiven, &mut cx);
        }
        self.closed = true;
        if shed {
            self.req.drop_partial();
            self.resp.drop_partial();
        } else {
            self.req.on_close(&mut self.shared, &mut cx);
            self.resp.on_close(&mut self.shared, &mut cx);
        }
        // Response bytes lost since the last response head: what waits from before the
        // loss may have been answered in it.
        let lost_before = self.shared.hole.take().map_or(0, |h| h.before_event);
        while let Some(p) = self.shared.pending.pop_front() {
            let mut an = p.request_anomalies;
            match (p.request.map(unpark), p.response.map(unpark)) {
                (Some(req), Some((resp, resp_an))) => {
                    emit(&mut cx, Some(req), Some(resp), AnomalySet(an.0 | resp_an.0))
                }
                // Not whole: the rest was shed.
                _ if shed => cx.stats.shed_unanswered += 1,
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

/// What a look for HTTP/2 found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum H2Probe {
    No,
    /// The bytes were held (too few to tell).
    Held,
    /// HTTP/2 from here on.
    H2,
}

/// Whether bytes could begin an HTTP/1.x message (a method token or `HTTP/`): letters,
/// where an HTTP/2 frame header begins with its length's high byte.
fn looks_like_h1_start(b: &[u8]) -> bool {
    b.first().is_some_and(u8::is_ascii_alphabetic)
}
