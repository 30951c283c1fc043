//! HTTP/2 in clear (h2c) on a mirror: both directions' frames to one transaction per stream.
//!
//! Input: in-order bytes per direction of a connection that [`super::HttpConn`] found to
//! be HTTP/2 (the client's connection preface, an `Upgrade: h2c` answered by 101, or frames
//! recognised mid-stream), gaps and close. Output: [`super::Transaction`]s like HTTP/1.x's (pseudo
//! headers become method, target and status; `:authority` stands in for a missing `Host`),
//! each with its stream id in [`super::Transaction::h2`], pushed when both ends of the stream
//! have ended (or it was reset, or the connection closed). Bodies are kept and decoded
//! under the same caps as HTTP/1.x's; trailers (gRPC status) go to `Body::trailers`.
//!
//! Frames of every type are read (RFC 9113): DATA and HEADERS with padding and priority,
//! CONTINUATION, RST_STREAM, SETTINGS (header table size and frame size are followed),
//! PUSH_PROMISE (its header block keeps the server's table in step), GOAWAY, PING,
//! WINDOW_UPDATE and PRIORITY checked and skipped; flow control is not modelled. Header
//! blocks go to one HPACK decoder per direction ([`hpack`]), which keeps decoding where it
//! meets table entries it has not seen (after joining late or a gap): such fields are
//! dropped from the message, counted, and flagged `hpack-unknown-fields`.
//!
//! Limits: a frame's payload is buffered only for control frames and header blocks (at
//! most `max_head_bytes` for a header block, [`MAX_CONTROL_PAYLOAD`] for others; DATA is
//! streamed into the body under `max_body_bytes`); at most [`MAX_STREAMS`] streams are
//! open per connection (the oldest is given up beyond); a direction that lost frame
//! boundaries holds at most [`MAX_RESYNC_BYTES`] while it looks for frames again. Failure
//! modes become counters in `HttpStats::h2_events` and anomalies on the transactions:
//! malformed frames, protocol violations (frames on the wrong stream, an interrupted
//! header block), HPACK errors, rapid reset floods (client resets before any response,
//! CVE-2023-44487), stream and header block caps.

pub mod hpack;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;

use super::parser::{Ctx, decode_kept, emit_h2};
use super::{Anomaly, AnomalySet, Body, Headers, Request, Response};
use crate::capture::Timestamp;

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Open streams kept per connection.
pub const MAX_STREAMS: usize = 256;
/// Bytes a direction holds while it looks for a frame boundary.
pub const MAX_RESYNC_BYTES: usize = 64 * 1024;
/// New bytes a held resync buffer needs before it is searched again.
const RESCAN_STEP: usize = 512;
/// Largest payload buffered for a control frame (SETTINGS, GOAWAY with debug data...).
pub const MAX_CONTROL_PAYLOAD: usize = 16 * 1024;
/// Client resets of streams not yet answered before the connection counts as a rapid
/// reset flood.
pub const RAPID_RESET_THRESHOLD: u32 = 100;
/// Largest frame the protocol allows (2^24 - 1).
const MAX_FRAME_LEN: u32 = (1 << 24) - 1;

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const PRIORITY: u8 = 2;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PUSH_PROMISE: u8 = 5;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const WINDOW_UPDATE: u8 = 8;
const CONTINUATION: u8 = 9;

const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY_FLAG: u8 = 0x20;

/// How a connection was found to be HTTP/2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The client's connection preface first (prior knowledge).
    PriorKnowledge,
    /// An HTTP/1.1 request with `Upgrade: h2c` answered by 101.
    Upgrade,
    /// Frames recognised in a connection joined late.
    MidStream,
}

impl Start {
    /// Every value of [`Start::as_str`] (a bounded metric label).
    pub const LABELS: &'static [&'static str] = &["prior-knowledge", "upgrade", "mid-stream"];

    pub fn as_str(self) -> &'static str {
        match self {
            Start::PriorKnowledge => "prior-knowledge",
            Start::Upgrade => "upgrade",
            Start::MidStream => "mid-stream",
        }
    }
}

/// Every kind counted in `HttpStats::h2_events` (a bounded metric label).
pub const EVENTS: &[&str] = &[
    "malformed-frame",
    "protocol-error",
    "unknown-frame-type",
    "frame-over-cap",
    "interrupted-header-block",
    "header-block-over-cap",
    "header-list-over-cap",
    "table-size-over-cap",
    "hpack-truncated",
    "hpack-integer-overflow",
    "hpack-bad-huffman",
    "hpack-zero-index",
    "hpack-unknown-entry",
    "hpack-bad-index",
    "data-unknown-stream",
    "bad-preface",
    "rst-stream",
    "rapid-reset-flood",
    "goaway",
    "gap",
    "resynced",
    "ends-swapped",
];

/// What an HTTP/2 transaction carries besides the HTTP/1.x fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct H2Info {
    pub stream_id: u32,
    /// Header fields that referred to HPACK table entries this monitor never saw.
    pub unknown_fields: u16,
}

/// Which end of the connection sent the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    Client,
    Server,
}

/// A frame being read.
#[derive(Debug)]
struct Frame {
    ty: u8,
    flags: u8,
    stream: u32,
    /// Payload bytes not yet read.
    left: u32,
    /// DATA: the pad length once read (padding is the payload's last bytes).
    pad: Option<u8>,
    /// Non-DATA payload kept (`None`: over its cap, skipped).
    buf: Option<Vec<u8>>,
}

/// A header block waiting for its CONTINUATION frames.
#[derive(Debug)]
struct Block {
    stream: u32,
    /// The stream a PUSH_PROMISE promises (the block is its request).
    promised: Option<u32>,
    end_stream: bool,
    buf: Vec<u8>,
    /// Over the header block cap: decoded anyway for the table, the fields not used.
    over: bool,
}

/// One direction's reader.
#[derive(Debug)]
struct Side {
    /// Bytes of the client preface still expected.
    preface: usize,
    /// Frame boundaries are known.
    synced: bool,
    /// Bytes held while looking for a boundary.
    resync: Vec<u8>,
    /// `resync.len()` at its last search: held bytes are searched again only after
    /// [`RESCAN_STEP`] more arrived (tiny segments cannot make the hunt quadratic).
    resync_searched: usize,
    head: [u8; 9],
    head_len: usize,
    frame: Option<Frame>,
    block: Option<Block>,
    hpack: hpack::Decoder,
    /// The table entries from before this monitor joined are unknown.
    joined_late: bool,
}

impl Side {
    fn new(preface: bool, synced: bool) -> Side {
        Side {
            preface: if preface { PREFACE.len() } else { 0 },
            synced,
            resync: Vec::new(),
            resync_searched: 0,
            head: [0; 9],
            head_len: 0,
            frame: None,
            block: None,
            hpack: hpack::Decoder::new(),
            joined_late: !synced,
        }
    }

    fn held_bytes(&self) -> usize {
        self.resync.capacity()
            + self
                .frame
                .as_ref()
                .and_then(|f| f.buf.as_ref())
                .map_or(0, Vec::capacity)
            + self.block.as_ref().map_or(0, |b| b.buf.capacity())
            + self.hpack.held_bytes()
    }
}

/// One stream: the request and response as they build up.
#[derive(Debug)]
struct Stream {
    id: u32,
    request: Option<Request>,
    response: Option<Response>,
    request_ended: bool,
    response_ended: bool,
    anomalies: AnomalySet,
    unknown_fields: u16,
}

impl Stream {
    fn new(id: u32) -> Stream {
        Stream {
            id,
            request: None,
            response: None,
            request_ended: false,
            response_ended: false,
            anomalies: AnomalySet::default(),
            unknown_fields: 0,
        }
    }

    /// What a header block of this stream said about itself.
    fn note(&mut self, fields: &Fields) {
        self.unknown_fields = self.unknown_fields.saturating_add(fields.unknown);
        if fields.unknown > 0 {
            self.anomalies.insert(Anomaly::H2UnknownFields);
        }
        if fields.too_many {
            self.anomalies.insert(Anomaly::TooManyHeaders);
        }
    }

    fn held_bytes(&self) -> usize {
        self.request
            .as_ref()
            .map_or(0, |r| r.body.data.capacity() + 64 * r.headers.len())
            + self
                .response
                .as_ref()
                .map_or(0, |r| r.body.data.capacity() + 64 * r.headers.len())
    }
}

/// HTTP/2 state of one connection.
#[derive(Debug)]
pub struct H2Conn {
    client: Side,
    server: Side,
    /// Open streams, oldest first.
    streams: VecDeque<Stream>,
    /// Highest client stream id seen: a HEADERS on a lower, unknown id is a closed stream.
    last_client_stream: u32,
    /// Client resets of streams with no response yet.
    early_resets: u32,
    flood_counted: bool,
    closed: bool,
    start: Start,
    /// Joined late: which end is the client is not known until a header block shows a
    /// request (`:method`) or a response (`:status`).
    roles_known: bool,
    /// The ends were found the other way round from what the caller said.
    ends_swapped: bool,
}

/// Fields of a decoded header block, with its pseudo-headers apart.
#[derive(Debug, Default)]
struct Fields {
    method: Option<String>,
    path: Option<String>,
    authority: Option<Vec<u8>>,
    status: Option<u16>,
    headers: Headers,
    unknown: u16,
    /// Most regular fields kept (`max_headers`); the rest are dropped and flagged.
    max: usize,
    too_many: bool,
}

impl H2Conn {
    /// A connection whose client sent (or is sending) the preface.
    pub fn prior_knowledge() -> H2Conn {
        H2Conn::new(
            Start::PriorKnowledge,
            Side::new(true, true),
            Side::new(false, true),
        )
    }

    /// A connection upgraded from HTTP/1.1 (RFC 7540 §3.2): the upgrade request is stream
    /// 1, answered in HTTP/2; the client sends the preface next.
    pub fn upgraded(request: Option<Request>, anomalies: AnomalySet) -> H2Conn {
        let mut c = H2Conn::new(
            Start::Upgrade,
            Side::new(true, true),
            Side::new(false, true),
        );
        c.last_client_stream = 1;
        if let Some(request) = request {
            let mut s = Stream::new(1);
            s.request = Some(request);
            s.request_ended = true;
            s.anomalies = anomalies;
            c.streams.push_back(s);
        }
        c
    }

    /// A connection joined late: neither direction's frame boundaries nor tables known.
    pub fn mid_stream() -> H2Conn {
        H2Conn::new(
            Start::MidStream,
            Side::new(false, false),
            Side::new(false, false),
        )
    }

    fn new(start: Start, client: Side, server: Side) -> H2Conn {
        H2Conn {
            client,
            server,
            streams: VecDeque::new(),
            last_client_stream: 0,
            early_resets: 0,
            flood_counted: false,
            closed: false,
            start,
            roles_known: start != Start::MidStream,
            ends_swapped: false,
        }
    }

    /// True when the bytes the caller called the client's turned out to be the server's
    /// (learnt from the first header block of a connection joined late).
    pub fn swapped(&self) -> bool {
        self.ends_swapped
    }

    fn map(&self, end: End) -> End {
        match (end, self.ends_swapped) {
            (e, false) => e,
            (End::Client, true) => End::Server,
            (End::Server, true) => End::Client,
        }
    }

    pub fn start(&self) -> Start {
        self.start
    }

    /// Heap bytes held: buffers, tables and the streams' messages.
    pub fn held_bytes(&self) -> usize {
        self.client.held_bytes()
            + self.server.held_bytes()
            + self.streams.iter().map(Stream::held_bytes).sum::<usize>()
            + self.streams.capacity() * std::mem::size_of::<Stream>()
    }

    /// In-order bytes from one end.
    pub(in crate::http) fn data(&mut self, caller: End, mut data: &[u8], cx: &mut Ctx<'_>) {
        if self.closed {
            return;
        }
        let end = self.map(caller);
        let side = self.side_mut(end);
        if side.preface > 0 {
            let done = PREFACE.len() - side.preface;
            let n = side.preface.min(data.len());
            if data[..n] != PREFACE[done..done + n] {
                bump(cx, "bad-preface");
                side.preface = 0;
                side.synced = false;
            } else {
                side.preface -= n;
                data = &data[n..];
            }
        }
        self.read(caller, data, cx);
    }

    /// Frames from one end (its preface done).
    fn read(&mut self, caller: End, mut data: &[u8], cx: &mut Ctx<'_>) {
        while !data.is_empty() {
            // Mapped anew each time: a header block may have shown the ends swapped.
            let end = self.map(caller);
            if self.side_mut(end).synced {
                let n = self.step(end, data, cx);
                data = &data[n..];
            } else {
                let (found, rest) = self.resync(end, data, cx);
                if let Some(held) = found {
                    // Held bytes from the boundary found on: frames now.
                    self.read(caller, &held, cx);
                }
                data = rest;
            }
        }
    }

    /// `len` bytes from one end were lost: frame boundaries and the table are gone until
    /// frames are found again; streams receiving from that end are cut.
    pub(in crate::http) fn gap(&mut self, end: End, len: u64, cx: &mut Ctx<'_>) {
        if self.closed || len == 0 {
            return;
        }
        let end = self.map(end);
        bump(cx, "gap");
        let side = self.side_mut(end);
        side.synced = false;
        side.preface = 0;
        side.frame = None;
        side.block = None;
        side.head_len = 0;
        side.resync.clear();
        side.resync_searched = 0;
        side.hpack.forget();
        side.joined_late = true;
        for s in &mut self.streams {
            let ended = match end {
                End::Client => s.request_ended,
                End::Server => s.response_ended,
            };
            if !ended {
                s.anomalies.insert(Anomaly::Gap);
            }
        }
    }

    /// The connection ended: every open stream is emitted as it is.
    pub(in crate::http) fn close(&mut self, cx: &mut Ctx<'_>) {
        if self.closed {
            return;
        }
        // Bytes still held by a hunt that was waiting for more: one last search.
        for end in [End::Client, End::Server] {
            let side = self.side_mut(end);
            if side.synced || side.resync.is_empty() {
                continue;
            }
            let held = std::mem::take(&mut side.resync);
            if let Some(at) = find_frames(&held) {
                side.synced = true;
                cx.stats.bytes_skipped += at as u64;
                bump(cx, "resynced");
                // `read` takes the caller's end: the mapping is its own inverse.
                let caller = self.map(end);
                self.read(caller, &held[at..], cx);
            }
        }
        self.closed = true;
        while let Some(s) = self.streams.pop_front() {
            finish(s, cx);
        }
        self.streams = VecDeque::new();
        self.client = Side::new(false, false);
        self.server = Side::new(false, false);
    }

    fn side_mut(&mut self, end: End) -> &mut Side {
        match end {
            End::Client => &mut self.client,
            End::Server => &mut self.server,
        }
    }

    /// Reads from a synced side; returns the bytes consumed (at least one).
    fn step(&mut self, end: End, data: &[u8], cx: &mut Ctx<'_>) -> usize {
        let side = self.side_mut(end);
        if side.frame.is_none() {
            let n = (9 - side.head_len).min(data.len());
            side.head[side.head_len..side.head_len + n].copy_from_slice(&data[..n]);
            side.head_len += n;
            if side.head_len < 9 {
                return n;
            }
            side.head_len = 0;
            let h = parse_head(&side.head);
            let buffered = h.ty != DATA;
            let cap = match h.ty {
                HEADERS | CONTINUATION | PUSH_PROMISE => cx.cfg.max_head_bytes,
                _ => MAX_CONTROL_PAYLOAD,
            };
            side.frame = Some(Frame {
                ty: h.ty,
                flags: h.flags,
                stream: h.stream,
                left: h.len,
                pad: None,
                buf: (buffered && (h.len as usize) <= cap)
                    .then(|| Vec::with_capacity(h.len as usize)),
            });
            if buffered && h.len as usize > cap {
                bump(cx, "frame-over-cap");
            }
            if h.ty == DATA {
                self.data_start(h.stream, cx);
            }
            if h.len == 0 {
                self.frame_done(end, cx);
            }
            return n;
        }
        let side = self.side_mut(end);
        let Some(f) = side.frame.as_mut() else {
            return data.len();
        };
        let n = (f.left as usize).min(data.len());
        let chunk = &data[..n];
        f.left -= n as u32;
        if f.ty == DATA {
            let (stream, flags, left) = (f.stream, f.flags, f.left);
            let mut chunk = chunk;
            if flags & PADDED != 0 && f.pad.is_none() {
                f.pad = chunk.first().copied();
                chunk = chunk.get(1..).unwrap_or_default();
            }
            let pad = u32::from(f.pad.unwrap_or(0));
            // The bytes of this chunk that are data, not trailing padding.
            let data_end =
                (chunk.len() as u32).min((left + chunk.len() as u32).saturating_sub(pad));
            let payload = &chunk[..data_end as usize];
            self.data_bytes(end, stream, payload, cx);
        } else if let Some(buf) = f.buf.as_mut() {
            buf.extend_from_slice(chunk);
        }
        let side = self.side_mut(end);
        if side.frame.as_ref().is_some_and(|f| f.left == 0) {
            self.frame_done(end, cx);
        }
        n
    }

    /// A DATA frame begins: the stream must be open on this side.
    fn data_start(&mut self, stream: u32, cx: &mut Ctx<'_>) {
        if stream == 0 {
            bump(cx, "protocol-error");
            return;
        }
        if self.stream_pos(stream).is_none() {
            bump(cx, "data-unknown-stream");
        }
    }

    /// Payload bytes of a DATA frame (padding removed) into the stream's body.
    fn data_bytes(&mut self, end: End, stream: u32, bytes: &[u8], cx: &mut Ctx<'_>) {
        if bytes.is_empty() {
            return;
        }
        let Some(pos) = self.stream_pos(stream) else {
            return;
        };
        let s = &mut self.streams[pos];
        let body = match end {
            End::Client => s.request.as_mut().map(|r| &mut r.body),
            End::Server => s.response.as_mut().map(|r| &mut r.body),
        };
        let Some(body) = body else {
            // Data before the head that would hold it (joined late, or a protocol error).
            return;
        };
        body.wire_len += bytes.len() as u64;
        let room = cx.cfg.max_body_bytes.saturating_sub(body.data.len());
        if bytes.len() > room {
            if !body.truncated {
                bump_cap(cx, "body");
                s.anomalies.insert(Anomaly::BodyCap);
            }
            body.truncated = true;
        }
        body.data.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    /// A frame's payload is complete (or skipped).
    fn frame_done(&mut self, end: End, cx: &mut Ctx<'_>) {
        let side = self.side_mut(end);
        let Some(f) = side.frame.take() else {
            return;
        };
        // A header block interrupted by any other frame is a connection error.
        if side.block.is_some() && f.ty != CONTINUATION {
            bump(cx, "interrupted-header-block");
            side.block = None;
        }
        match f.ty {
            DATA => {
                if f.flags & END_STREAM != 0 {
                    self.end_stream(end, f.stream, cx);
                }
            }
            HEADERS | PUSH_PROMISE => self.headers_frame(end, f, cx),
            CONTINUATION => {
                let side = self.side_mut(end);
                let Some(mut block) = side.block.take() else {
                    bump(cx, "protocol-error");
                    return;
                };
                if block.stream != f.stream {
                    bump(cx, "protocol-error");
                    return;
                }
                match f.buf {
                    Some(b) if block.buf.len() + b.len() <= cx.cfg.max_head_bytes => {
                        block.buf.extend_from_slice(&b)
                    }
                    _ => {
                        if !block.over {
                            bump(cx, "header-block-over-cap");
                        }
                        block.over = true;
                    }
                }
                if f.flags & END_HEADERS != 0 {
                    self.block_done(end, block, cx);
                } else {
                    self.side_mut(end).block = Some(block);
                }
            }
            RST_STREAM => {
                if f.stream == 0 || f.buf.as_ref().is_none_or(|b| b.len() != 4) {
                    bump(cx, "malformed-frame");
                    return;
                }
                bump(cx, "rst-stream");
                self.reset(end, f.stream, cx);
            }
            SETTINGS => {
                let Some(b) = f.buf else { return };
                if f.stream != 0 || b.len() % 6 != 0 || (f.flags & 1 != 0 && !b.is_empty()) {
                    bump(cx, "malformed-frame");
                    return;
                }
                for s in b.chunks_exact(6) {
                    let id = u16::from_be_bytes([s[0], s[1]]);
                    let v = u32::from_be_bytes([s[2], s[3], s[4], s[5]]);
                    // SETTINGS_HEADER_TABLE_SIZE bounds the table of the sender's decoder:
                    // the other end's encoder signals sizes up to it (held to our cap).
                    if id == 1 && v > hpack::MAX_TABLE_BYTES {
                        bump(cx, "table-size-over-cap");
                    }
                }
            }
            PRIORITY => {
                if f.stream == 0 || f.buf.as_ref().is_none_or(|b| b.len() != 5) {
                    bump(cx, "malformed-frame");
                }
            }
            PING => {
                if f.stream != 0 || f.buf.as_ref().is_none_or(|b| b.len() != 8) {
                    bump(cx, "malformed-frame");
                }
            }
            GOAWAY => {
                if f.stream != 0 || f.buf.as_ref().is_some_and(|b| b.len() < 8) {
                    bump(cx, "malformed-frame");
                } else {
                    bump(cx, "goaway");
                }
            }
            WINDOW_UPDATE => {
                if f.buf.as_ref().is_none_or(|b| b.len() != 4) {
                    bump(cx, "malformed-frame");
                }
            }
            _ => bump(cx, "unknown-frame-type"),
        }
    }

    /// A HEADERS or PUSH_PROMISE frame: the start of a header block.
    fn headers_frame(&mut self, end: End, f: Frame, cx: &mut Ctx<'_>) {
        if f.stream == 0 {
            bump(cx, "protocol-error");
            return;
        }
        let Some(payload) = f.buf else {
            // Over the cap: the table can no longer be trusted.
            let side = self.side_mut(end);
            side.hpack.forget();
            side.joined_late = true;
            if f.flags & END_STREAM != 0 {
                self.end_stream(end, f.stream, cx);
            }
            return;
        };
        let mut p = payload.as_slice();
        let mut pad = 0usize;
        if f.flags & PADDED != 0 {
            let Some((&n, rest)) = p.split_first() else {
                bump(cx, "malformed-frame");
                return;
            };
            pad = usize::from(n);
            p = rest;
        }
        let mut promised = None;
        if f.ty == PUSH_PROMISE {
            if end != End::Server || p.len() < 4 {
                bump(cx, "protocol-error");
                return;
            }
            promised = Some(u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff);
            p = &p[4..];
        } else if f.flags & PRIORITY_FLAG != 0 {
            if p.len() < 5 {
                bump(cx, "malformed-frame");
                return;
            }
            p = &p[5..];
        }
        if pad > p.len() {
            bump(cx, "malformed-frame");
            return;
        }
        let block = Block {
            stream: f.stream,
            promised,
            end_stream: f.ty == HEADERS && f.flags & END_STREAM != 0,
            buf: p[..p.len() - pad].to_vec(),
            over: false,
        };
        if f.flags & END_HEADERS != 0 {
            self.block_done(end, block, cx);
        } else {
            self.side_mut(end).block = Some(block);
        }
    }

    /// A whole header block: decode it (always, for the table) and apply it.
    fn block_done(&mut self, end: End, block: Block, cx: &mut Ctx<'_>) {
        let mut end = end;
        let side = self.side_mut(end);
        let joined_late = side.joined_late;
        let mut fields = Fields {
            max: cx.cfg.max_headers,
            ..Fields::default()
        };
        let outcome = side
            .hpack
            .decode(&block.buf, cx.cfg.max_head_bytes, &mut |(n, v)| {
                fields.add(n, v)
            });
        if let Some(e) = outcome.error {
            bump(cx, e.as_str());
        }
        if outcome.unknown > 0 {
            fields.unknown = outcome.unknown;
            let kind = if joined_late {
                "hpack-unknown-entry"
            } else {
                "hpack-bad-index"
            };
            bump_by(cx, kind, u64::from(outcome.unknown));
        }
        if outcome.capped {
            bump(cx, "header-list-over-cap");
        }
        if block.over {
            return;
        }
        if !self.roles_known && (fields.method.is_some() || fields.status.is_some()) {
            self.roles_known = true;
            let backwards = match end {
                End::Client => fields.status.is_some() && fields.method.is_none(),
                End::Server => fields.method.is_some() && fields.status.is_none(),
            };
            if backwards {
                // Joined late with the ends guessed wrong: swap the readers, forget the
                // streams built from the wrong side (data and blocks without a request
                // or response head: nothing of value).
                std::mem::swap(&mut self.client, &mut self.server);
                self.ends_swapped = !self.ends_swapped;
                self.streams.clear();
                self.last_client_stream = 0;
                end = match end {
                    End::Client => End::Server,
                    End::Server => End::Client,
                };
                bump(cx, "ends-swapped");
            }
        }
        if let Some(id) = block.promised {
            // A pushed response's request, made up by the server.
            let pos = self.open(id, cx);
            let s = &mut self.streams[pos];
            s.unknown_fields = s.unknown_fields.saturating_add(fields.unknown);
            s.request = Some(fields.request(cx.ts));
            s.request_ended = true;
            return;
        }
        match end {
            End::Client => self.client_headers(block.stream, fields, block.end_stream, cx),
            End::Server => self.server_headers(block.stream, fields, block.end_stream, cx),
        }
    }

    fn client_headers(&mut self, id: u32, fields: Fields, end_stream: bool, cx: &mut Ctx<'_>) {
        let pos = match self.stream_pos(id) {
            Some(p) => p,
            None => {
                if id.is_multiple_of(2)
                    || (id <= self.last_client_stream && self.start != Start::MidStream)
                {
                    bump(cx, "protocol-error");
                }
                self.last_client_stream = self.last_client_stream.max(id);
                self.open(id, cx)
            }
        };
        let s = &mut self.streams[pos];
        s.note(&fields);
        match &mut s.request {
            None => {
                cx.stats.requests += 1;
                s.request = Some(fields.request(cx.ts));
            }
            Some(r) => {
                // Trailers after the body.
                let room = cx.cfg.max_headers.saturating_sub(r.body.trailers.len());
                r.body.trailers.extend(fields.headers.iter().take(room));
            }
        }
        if end_stream {
            self.end_stream(End::Client, id, cx);
        }
    }

    fn server_headers(&mut self, id: u32, fields: Fields, end_stream: bool, cx: &mut Ctx<'_>) {
        let pos = match self.stream_pos(id) {
            Some(p) => p,
            None => self.open(id, cx),
        };
        let s = &mut self.streams[pos];
        s.note(&fields);
        match &mut s.response {
            None => {
                if let Some(st @ 100..=199) = fields.status
                    && st != 101
                {
                    cx.stats.interim_responses += 1;
                    return;
                }
                cx.stats.responses += 1;
                if fields.status.is_none() && fields.unknown == 0 {
                    s.anomalies.insert(Anomaly::StatusNonNumeric);
                }
                s.response = Some(Response {
                    status: fields.status.unwrap_or(0),
                    version: 2,
                    headers: fields.headers,
                    body: Body::default(),
                    ts: cx.ts,
                });
            }
            Some(r) => {
                let room = cx.cfg.max_headers.saturating_sub(r.body.trailers.len());
                r.body.trailers.extend(fields.headers.iter().take(room));
            }
        }
        if end_stream {
            self.end_stream(End::Server, id, cx);
        }
    }

    /// One end finished its half of a stream; emit it when both have.
    fn end_stream(&mut self, end: End, id: u32, cx: &mut Ctx<'_>) {
        let Some(pos) = self.stream_pos(id) else {
            return;
        };
        let s = &mut self.streams[pos];
        match end {
            End::Client => s.request_ended = true,
            End::Server => s.response_ended = true,
        }
        if s.request_ended
            && s.response_ended
            && let Some(s) = self.streams.remove(pos)
        {
            finish(s, cx);
        }
    }

    fn reset(&mut self, end: End, id: u32, cx: &mut Ctx<'_>) {
        let Some(pos) = self.stream_pos(id) else {
            return;
        };
        let Some(mut s) = self.streams.remove(pos) else {
            return;
        };
        if end == End::Client && s.response.is_none() {
            self.early_resets += 1;
            if self.early_resets > RAPID_RESET_THRESHOLD && !self.flood_counted {
                self.flood_counted = true;
                bump(cx, "rapid-reset-flood");
            }
        }
        s.anomalies.insert(Anomaly::StreamReset);
        finish(s, cx);
    }

    fn stream_pos(&self, id: u32) -> Option<usize> {
        // Streams are few and the newest are busiest.
        self.streams.iter().rposition(|s| s.id == id)
    }

    /// Opens a stream, giving up the oldest beyond the cap.
    fn open(&mut self, id: u32, cx: &mut Ctx<'_>) -> usize {
        if self.streams.len() >= MAX_STREAMS {
            bump_cap(cx, "h2_streams");
            if let Some(mut old) = self.streams.pop_front() {
                old.anomalies.insert(Anomaly::StreamCap);
                finish(old, cx);
            }
        }
        self.streams.push_back(Stream::new(id));
        self.streams.len() - 1
    }

    /// A direction without frame boundaries: hold bytes until a run of plausible frames
    /// starts somewhere in them. Returns what is left to read from the boundary on.
    fn resync<'d>(
        &mut self,
        end: End,
        data: &'d [u8],
        cx: &mut Ctx<'_>,
    ) -> (Option<Vec<u8>>, &'d [u8]) {
        let side = self.side_mut(end);
        if side.resync.is_empty()
            && let Some(at) = find_frames(data)
        {
            cx.stats.bytes_skipped += at as u64;
            side.synced = true;
            bump(cx, "resynced");
            return (None, &data[at..]);
        }
        let take = data.len().min(MAX_RESYNC_BYTES);
        side.resync.extend_from_slice(&data[..take]);
        let rest = &data[take..];
        // Searched every time while small, then every RESCAN_STEP new bytes: linear
        // overall however the bytes are cut.
        if side.resync.len() > RESCAN_STEP
            && side.resync.len() < side.resync_searched + RESCAN_STEP
            && side.resync.len() <= MAX_RESYNC_BYTES
        {
            return (None, rest);
        }
        side.resync_searched = side.resync.len();
        let held = std::mem::take(&mut side.resync);
        match find_frames(&held) {
            Some(at) => {
                cx.stats.bytes_skipped += at as u64;
                side.synced = true;
                side.resync_searched = 0;
                bump(cx, "resynced");
                (Some(held[at..].to_vec()), rest)
            }
            None => {
                if held.len() > MAX_RESYNC_BYTES {
                    // Keep the last frame header's worth: a boundary may straddle.
                    let drop = held.len() - 9;
                    cx.stats.bytes_skipped += drop as u64;
                    side.resync = held[drop..].to_vec();
                    side.resync_searched = 0;
                } else {
                    side.resync = held;
                }
                (None, rest)
            }
        }
    }
}

/// Emits a stream as a transaction: bodies decoded, anomalies for what is missing.
fn finish(s: Stream, cx: &mut Ctx<'_>) {
    let Stream {
        id,
        mut request,
        mut response,
        request_ended,
        response_ended,
        mut anomalies,
        unknown_fields,
    } = s;
    if let Some(r) = request.as_mut() {
        if !request_ended {
            r.body.truncated = true;
        }
        decode_body(&r.headers, &mut r.body, &mut anomalies, cx);
    }
    if let Some(r) = response.as_mut() {
        if !response_ended {
            r.body.truncated = true;
            if !anomalies.contains(Anomaly::StreamReset) {
                anomalies.insert(Anomaly::TruncatedBody);
            }
        }
        decode_body(&r.headers, &mut r.body, &mut anomalies, cx);
    }
    match (&request, &response) {
        (Some(_), None) => anomalies.insert(Anomaly::RequestWithoutResponse),
        (None, Some(_)) => anomalies.insert(Anomaly::ResponseWithoutRequest),
        (None, None) => return,
        _ => {}
    }
    emit_h2(
        cx,
        request,
        response,
        anomalies,
        H2Info {
            stream_id: id,
            unknown_fields,
        },
    );
}

/// Undoes content codings on a finished body under the HTTP/1.x caps.
fn decode_body(headers: &Headers, body: &mut Body, anomalies: &mut AnomalySet, cx: &mut Ctx<'_>) {
    let codings = super::body::framing_headers(headers).codings;
    if codings.unknown && cx.cfg.decode_bodies && !body.data.is_empty() {
        anomalies.insert(Anomaly::UnknownEncoding);
    }
    decode_kept(body, &codings, anomalies, cx);
}

impl Fields {
    fn add(&mut self, name: Option<&[u8]>, value: Option<&[u8]>) {
        let (Some(name), Some(value)) = (name, value) else {
            return;
        };
        match name {
            b":method" => self.method = Some(String::from_utf8_lossy(value).into_owned()),
            b":path" => self.path = Some(String::from_utf8_lossy(value).into_owned()),
            b":authority" => self.authority = Some(value.to_vec()),
            b":status" => {
                self.status = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok())
            }
            b":scheme" | b":protocol" => {}
            // Pseudo-headers HTTP/2 does not define, and names that are not text, are
            // dropped.
            _ if name.first() == Some(&b':') => {}
            _ if self.headers.len() >= self.max => self.too_many = true,
            _ => {
                let Ok(n) = std::str::from_utf8(name) else {
                    return;
                };
                self.headers.push(n, value);
            }
        }
    }

    /// The request a client's (or a promise's) header block makes.
    fn request(self, ts: Timestamp) -> Request {
        let mut headers = self.headers;
        if let Some(a) = self.authority
            && !headers.iter().any(|h| h.name.is("host"))
        {
            let mut with_host = crate::http::recycled_headers();
            with_host.push("host", &a);
            // Host counts against the field cap like any other field.
            let room = self.max.saturating_sub(1);
            with_host.extend(headers.iter().take(room));
            headers = with_host;
        }
        Request {
            method: self.method.unwrap_or_default().into(),
            target: self.path.unwrap_or_default().into(),
            version: 2,
            headers,
            body: Body::default(),
            ts,
        }
    }
}

struct FrameHead {
    len: u32,
    ty: u8,
    flags: u8,
    stream: u32,
}

fn parse_head(h: &[u8; 9]) -> FrameHead {
    FrameHead {
        len: u32::from_be_bytes([0, h[0], h[1], h[2]]),
        ty: h[3],
        flags: h[4],
        stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
    }
}

/// Whether 9 bytes read as a frame header a real peer would send: a known type, flags
/// that type defines, the stream it must (or must not) be on, a length within what peers
/// use and the reserved bit clear.
fn plausible(h: &[u8]) -> Option<FrameHead> {
    let h: &[u8; 9] = h.get(..9)?.try_into().ok()?;
    if h[5] & 0x80 != 0 {
        return None;
    }
    let f = parse_head(h);
    if f.len > MAX_FRAME_LEN || f.len > 1 << 20 {
        return None;
    }
    let ok = match f.ty {
        DATA => f.stream != 0 && f.flags & !(END_STREAM | PADDED) == 0,
        HEADERS => {
            f.stream != 0 && f.flags & !(END_STREAM | END_HEADERS | PADDED | PRIORITY_FLAG) == 0
        }
        PRIORITY => f.stream != 0 && f.len == 5 && f.flags == 0,
        RST_STREAM => f.stream != 0 && f.len == 4 && f.flags == 0,
        SETTINGS => f.stream == 0 && f.len.is_multiple_of(6) && f.flags & !1 == 0,
        PUSH_PROMISE => f.stream != 0 && f.flags & !(END_HEADERS | PADDED) == 0,
        PING => f.stream == 0 && f.len == 8 && f.flags & !1 == 0,
        GOAWAY => f.stream == 0 && f.len >= 8 && f.flags == 0,
        WINDOW_UPDATE => f.len == 4 && f.flags == 0,
        CONTINUATION => f.stream != 0 && f.flags & !END_HEADERS == 0,
        _ => false,
    };
    ok.then_some(f)
}

/// Where a run of frames starts in bytes joined mid-connection: two plausible frame
/// headers back to back, or one whose frame ends exactly at the end of the bytes (a
/// sender writes whole frames, so a segment often ends at one's end).
pub fn find_frames(buf: &[u8]) -> Option<usize> {
    (0..buf.len().saturating_sub(8)).find(|&at| {
        let Some(f) = plausible(&buf[at..]) else {
            return false;
        };
        let next = at + 9 + f.len as usize;
        if next == buf.len() {
            return f.len > 0;
        }
        buf.get(next..)
            .is_some_and(|rest| plausible(rest).is_some())
    })
}

/// Whether a connection's first bytes from the server are its preface: a SETTINGS frame
/// (not an acknowledgement) on stream 0, whole.
pub fn is_server_preface(data: &[u8]) -> bool {
    plausible(data)
        .is_some_and(|f| f.ty == SETTINGS && f.flags == 0 && data.len() >= 9 + f.len as usize)
}

/// Whether a connection's first bytes are (the start of) the client preface.
pub fn is_preface_start(data: &[u8]) -> bool {
    let n = data.len().min(PREFACE.len());
    n > 0 && data[..n] == PREFACE[..n]
}

fn bump(cx: &mut Ctx<'_>, kind: &'static str) {
    bump_by(cx, kind, 1);
}

fn bump_by(cx: &mut Ctx<'_>, kind: &'static str, n: u64) {
    debug_assert!(EVENTS.contains(&kind), "{kind}");
    *cx.stats.h2_events.entry(kind).or_insert(0) += n;
}

fn bump_cap(cx: &mut Ctx<'_>, cap: &'static str) {
    super::parser::bump(&mut cx.stats.cap_hits, cap);
}
