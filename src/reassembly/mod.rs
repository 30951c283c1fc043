//! Reassembly: TCP segments to ordered byte streams per connection.
//!
//! Input: decoded [`TcpSegment`]s with packet timestamps, for the flows one worker owns
//! (the runtime shards by a symmetric flow hash, so both directions of a connection arrive
//! here). Output: calls on a [`StreamHandler`]: `open`, in-order `data` per direction, `gap`
//! when bytes are known lost, and `close`. Owns the worker's flow table; each flow carries the
//! handler's per-connection state (the HTTP parser), so the per-packet path takes no lock.
//!
//! Per direction: ordered delivery with a bounded out-of-order buffer; retransmissions are
//! dropped; overlaps keep the first data seen (a conflicting overlap is counted as an
//! anomaly); a connection seen mid-stream is picked up at the first data segment; an ACK seen
//! before the data it acknowledges does not lose the data (mirrors reorder): a hole is
//! declared a gap only once the peer has acknowledged past it and the reorder window has
//! passed, after `gap_timeout` of packet time, under buffer pressure, or at close.
//! FIN/RST close, idle flows time out on packet time. Port reuse: a SYN with a new sequence
//! number on a closing or lingering connection starts a new one (the old closes as
//! `reused`); on a live connection it is held until the peer's SYN-ACK confirms it, so a
//! forged SYN cannot desynchronise a connection; a retransmitted SYN changes nothing. Caps: flows per worker (least recently
//! active flows evicted in batches), out-of-order bytes and segments per direction, buffered
//! bytes per worker; every cap hit is counted. The worker's shares of the memory budget
//! ([`FlowBudget`]: flow entries, out-of-order bytes, and what the handler holds per
//! connection) bound the totals: over a share the least recently active flows holding it
//! are closed as `evicted` (their partial transactions flushed as for any close) and the
//! evictions counted per table. There is no per-flow depth limit: a long keep-alive
//! connection is followed to its end.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use crate::budget::{Table, Usage};
use crate::capture::Timestamp;
use crate::decode::{TcpFlags, TcpSegment, TunnelId};

/// Bytes charged per flow beyond its entry: the hash table's control byte, and the slack
/// of a table kept below its load factor.
const ENTRY_SLOT_OVERHEAD: usize = 16;

/// Reassembly limits (config section `[reassembly]`).
#[derive(Clone, Debug)]
pub struct ReassemblyConfig {
    /// Connections tracked by one worker; past it the least recently active are evicted.
    pub max_flows: usize,
    /// Out-of-order bytes buffered per direction of a connection.
    pub max_ooo_bytes_per_direction: usize,
    /// Out-of-order segments buffered per direction of a connection.
    pub max_ooo_segments_per_direction: usize,
    /// Out-of-order bytes buffered by one worker across all its connections.
    pub max_buffered_bytes: usize,
    /// A connection with no packet for this long (packet time) is closed.
    pub idle_timeout: Duration,
    /// A connection whose both sides sent FIN, or that was reset, lingers this long for
    /// late (mirror-reordered) segments before it is closed.
    pub close_linger: Duration,
    /// A hole the peer has acknowledged is declared a gap after this much packet time.
    pub reorder_window: Duration,
    /// Any hole is declared a gap after this much packet time.
    pub gap_timeout: Duration,
    /// This worker's shares of the memory budget (flow entries, stream buffers, HTTP
    /// state); over a share the least recently active flows holding it are evicted.
    pub budget: FlowBudget,
}

/// A worker's byte limits for the tables its flow table owns (`[runtime]
/// memory_budget_mib`, split per worker; unlimited by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowBudget {
    /// Flow entries, at a fixed size each (key, TCP state, the handler's inline state).
    pub flows: usize,
    /// Out-of-order bytes held by reassembly.
    pub streams: usize,
    /// What handlers hold per connection ([`StreamHandler::held_bytes`]).
    pub http: usize,
}

impl Default for FlowBudget {
    fn default() -> Self {
        FlowBudget {
            flows: usize::MAX,
            streams: usize::MAX,
            http: usize::MAX,
        }
    }
}

impl Default for ReassemblyConfig {
    fn default() -> Self {
        ReassemblyConfig {
            max_flows: 500_000,
            max_ooo_bytes_per_direction: 1 << 20,
            max_ooo_segments_per_direction: 512,
            max_buffered_bytes: 256 << 20,
            idle_timeout: Duration::from_secs(120),
            close_linger: Duration::from_millis(500),
            reorder_window: Duration::from_millis(100),
            gap_timeout: Duration::from_secs(5),
            budget: FlowBudget::default(),
        }
    }
}

/// The direction of bytes on a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    ClientToServer,
    ServerToClient,
}

impl Direction {
    fn index(self) -> usize {
        match self {
            Direction::ClientToServer => 0,
            Direction::ServerToClient => 1,
        }
    }
}

/// A connection as the reassembler sees it. Client and server are a guess for connections
/// picked up mid-stream (the HTTP layer may find them inverted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnInfo {
    /// Per-worker sequence number of the connection.
    pub id: u64,
    pub tunnel: TunnelId,
    pub client: SocketAddr,
    pub server: SocketAddr,
    /// Packet time of the first segment seen.
    pub start: Timestamp,
    /// The handshake was seen (client and server are known, not guessed).
    pub saw_syn: bool,
}

/// Why a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    Fin,
    Rst,
    IdleTimeout,
    Evicted,
    EndOfCapture,
    /// A new connection (a SYN with a new sequence number) took over its addresses and ports.
    Reused,
    /// Load shedding cut it while it was being analysed (live capture): its later segments
    /// are not analysed.
    Shed,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Fin => "fin",
            CloseReason::Rst => "rst",
            CloseReason::IdleTimeout => "idle-timeout",
            CloseReason::Evicted => "evicted",
            CloseReason::EndOfCapture => "end-of-capture",
            CloseReason::Reused => "reused",
            CloseReason::Shed => "shed",
        }
    }
}

/// Consumer of reassembled streams; owns nothing of the flow table but its per-connection
/// state, which the table stores beside each flow.
pub trait StreamHandler {
    type State;
    fn open(&mut self, conn: &ConnInfo) -> Self::State;
    fn data(
        &mut self,
        state: &mut Self::State,
        conn: &ConnInfo,
        dir: Direction,
        bytes: &[u8],
        ts: Timestamp,
    );
    fn gap(
        &mut self,
        state: &mut Self::State,
        conn: &ConnInfo,
        dir: Direction,
        len: u64,
        ts: Timestamp,
    );
    fn close(&mut self, state: Self::State, conn: &ConnInfo, reason: CloseReason, ts: Timestamp);
    /// Heap bytes a connection's state holds now (pending messages, bodies being read),
    /// charged to the `http` budget; asked after every segment of the connection.
    fn held_bytes(&self, _state: &Self::State) -> usize {
        0
    }
}

/// Reassembly counters, per worker, merged for the summary and metrics.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ReassemblyStats {
    pub segments: u64,
    pub flows_created: u64,
    pub flows_midstream: u64,
    /// Connections that started on the addresses and ports of one still tracked (closing,
    /// lingering, or confirmed by the SYN-ACK): port reuse by clients, NATs, balancers.
    pub flows_reused: u64,
    /// SYNs with a new sequence number on a live connection, held until a SYN-ACK confirms
    /// them (a desync attempt is never confirmed).
    pub reuse_syns_held: u64,
    pub flows_closed: std::collections::BTreeMap<&'static str, u64>,
    pub active_flows: u64,
    pub bytes_delivered: u64,
    pub retransmissions: u64,
    pub ooo_segments: u64,
    pub overlaps: u64,
    pub overlap_conflicts: u64,
    pub gaps: u64,
    pub gap_bytes: u64,
    pub cap_hits: std::collections::BTreeMap<&'static str, u64>,
    pub buffered_bytes_peak: u64,
}

impl ReassemblyStats {
    pub fn merge(&mut self, o: &ReassemblyStats) {
        self.segments += o.segments;
        self.flows_created += o.flows_created;
        self.flows_midstream += o.flows_midstream;
        self.flows_reused += o.flows_reused;
        self.reuse_syns_held += o.reuse_syns_held;
        for (k, v) in &o.flows_closed {
            *self.flows_closed.entry(k).or_default() += v;
        }
        self.active_flows += o.active_flows;
        self.bytes_delivered += o.bytes_delivered;
        self.retransmissions += o.retransmissions;
        self.ooo_segments += o.ooo_segments;
        self.overlaps += o.overlaps;
        self.overlap_conflicts += o.overlap_conflicts;
        self.gaps += o.gaps;
        self.gap_bytes += o.gap_bytes;
        for (k, v) in &o.cap_hits {
            *self.cap_hits.entry(k).or_default() += v;
        }
        self.buffered_bytes_peak = self.buffered_bytes_peak.max(o.buffered_bytes_peak);
    }

    fn cap_hit(&mut self, cap: &'static str) {
        *self.cap_hits.entry(cap).or_default() += 1;
    }
}

/// Both directions of a connection: the tunnel and the two endpoints in canonical order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FlowKey {
    pub tunnel: TunnelId,
    pub lo: SocketAddr,
    pub hi: SocketAddr,
}

/// Hashed as four words (each address as 128 bits, the ports and families, the tunnel): a
/// key is hashed for every packet, and `SocketAddr`'s own hash is a write per field
/// (family, address, port, and IPv6's flow label and scope). Equal keys hash alike, as they
/// must: the words are a function of the fields.
impl std::hash::Hash for FlowKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        fn ip(a: &SocketAddr) -> u128 {
            match a {
                SocketAddr::V4(v4) => u128::from(v4.ip().to_bits()),
                SocketAddr::V6(v6) => v6.ip().to_bits(),
            }
        }
        state.write_u128(ip(&self.lo));
        state.write_u128(ip(&self.hi));
        // The families too: 10.0.0.1 and ::a00:1 are the same 128 bits.
        state.write_u64(
            u64::from(self.lo.port()) << 16
                | u64::from(self.hi.port())
                | u64::from(self.lo.is_ipv4()) << 32
                | u64::from(self.hi.is_ipv4()) << 33,
        );
        state.write_u64(self.tunnel.0);
    }
}

impl FlowKey {
    pub fn new(tunnel: TunnelId, a: SocketAddr, b: SocketAddr) -> Self {
        if a <= b {
            FlowKey {
                tunnel,
                lo: a,
                hi: b,
            }
        } else {
            FlowKey {
                tunnel,
                lo: b,
                hi: a,
            }
        }
    }
}

/// `a` comes before `b` in sequence space (RFC 1982 serial arithmetic).
fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// A buffered out-of-order piece: `len` bytes of sequence space starting at stream offset
/// `off`, of which the first `data.len()` were captured (snaplen may cut the rest).
struct Piece {
    off: u64,
    len: u64,
    data: Vec<u8>,
}

impl Piece {
    fn end(&self) -> u64 {
        self.off + self.len
    }
}

enum Ev<'a> {
    Data(&'a [u8]),
    Gap(u64),
}

/// One direction of a connection.
#[derive(Default)]
struct Half {
    /// Sequence tracking has started (SYN seen or first data picked up).
    started: bool,
    /// Sequence number of stream offset `next_off`.
    next_seq: u32,
    /// Stream offset of the next byte to deliver.
    next_off: u64,
    /// Out-of-order pieces sorted by `off`, non-overlapping.
    ooo: VecDeque<Piece>,
    ooo_bytes: usize,
    /// Packet time when the current hole (the first out-of-order piece) appeared.
    hole_since: Option<Timestamp>,
    /// Stream offset of the FIN, when seen.
    fin_off: Option<u64>,
    finished: bool,
    /// Highest acknowledgement the peer sent for this direction's bytes.
    peer_ack: Option<u32>,
    /// Sequence number of this side's SYN (or SYN-ACK), when seen: a SYN carrying another
    /// one is a new connection on the same addresses and ports, not a retransmission.
    syn_seq: Option<u32>,
}

impl Half {
    /// Stream offset of sequence number `seq` relative to the delivery point.
    fn offset_of(&self, seq: u32) -> i128 {
        self.next_off as i128 + seq.wrapping_sub(self.next_seq) as i32 as i128
    }

    fn advance(&mut self, n: u64) {
        self.next_off += n;
        self.next_seq = self.next_seq.wrapping_add(n as u32);
    }

    fn peer_acked_hole(&self) -> bool {
        self.peer_ack.is_some_and(|a| seq_lt(self.next_seq, a))
    }

    /// Delivers contiguous buffered pieces that now start at or before `next_off`.
    fn drain(&mut self, ts: Timestamp, buffered: &mut usize, emit: &mut dyn FnMut(Ev<'_>)) {
        while let Some(first) = self.ooo.front() {
            if first.off > self.next_off {
                break;
            }
            let Some(p) = self.ooo.pop_front() else {
                break;
            };
            self.ooo_bytes -= p.data.len();
            *buffered -= p.data.len();
            if p.end() <= self.next_off {
                continue;
            }
            let skip = self.next_off - p.off;
            let captured = p.data.len() as u64;
            if skip < captured {
                emit(Ev::Data(&p.data[skip as usize..]));
            }
            let missing = p.len - captured.max(skip);
            if missing > 0 {
                emit(Ev::Gap(missing));
            }
            self.advance(p.len - skip);
        }
        self.hole_since = if self.ooo.is_empty() {
            None
        } else {
            self.hole_since.or(Some(ts))
        };
        if self.fin_off.is_some_and(|f| self.next_off >= f) && self.ooo.is_empty() {
            self.finished = true;
        }
    }

    /// Declares the hole before the first buffered piece lost, then delivers what follows.
    fn skip_hole(&mut self, ts: Timestamp, buffered: &mut usize, emit: &mut dyn FnMut(Ev<'_>)) {
        if let Some(first) = self.ooo.front() {
            let hole = first.off.saturating_sub(self.next_off);
            if hole > 0 {
                emit(Ev::Gap(hole));
                self.advance(hole);
            }
            self.hole_since = None;
            self.drain(ts, buffered, emit);
        }
    }

    /// Everything still buffered, holes reported as gaps (close, eviction, end of capture).
    fn flush(&mut self, ts: Timestamp, buffered: &mut usize, emit: &mut dyn FnMut(Ev<'_>)) {
        while !self.ooo.is_empty() {
            self.skip_hole(ts, buffered, emit);
        }
        if let Some(fin) = self.fin_off
            && fin > self.next_off
        {
            emit(Ev::Gap(fin - self.next_off));
            self.advance(fin - self.next_off);
        }
    }
}

struct Flow<S> {
    info: ConnInfo,
    halves: [Half; 2],
    last_ts: Timestamp,
    /// Packet time after which a finished or reset connection is closed.
    closing_at: Option<(Timestamp, CloseReason)>,
    /// A SYN with a new sequence number seen while this connection was live: held, not
    /// applied, until the peer's SYN-ACK confirms it (then this connection closes as
    /// `reused`). A forged or desynchronising SYN that is never confirmed changes nothing.
    held_syn: Option<HeldSyn>,
    /// What the handler's state held after the last segment (charged to the table).
    held: usize,
    state: S,
}

impl<S> Flow<S> {
    /// Either direction holds out-of-order bytes (charged to table `streams`).
    fn holds_ooo(&self) -> bool {
        self.halves.iter().any(|h| h.ooo_bytes > 0)
    }
}

/// A held SYN (see [`Flow::held_syn`]); it carries no payload (TCP Fast Open data on a
/// reused port is not followed).
#[derive(Clone, Copy, Debug)]
struct HeldSyn {
    src: SocketAddr,
    seq: u32,
    window: u16,
    ts: Timestamp,
}

/// What a SYN or SYN-ACK means for the connection already tracked on its addresses.
enum Reuse {
    /// Part of this connection (a retransmission, or its handshake).
    No,
    /// A new sequence number on a live connection: held until confirmed.
    Hold,
    /// A new connection replacing a closing, closed or lingering one.
    Now,
    /// The SYN-ACK confirming a held SYN: the new connection starts with that SYN.
    Confirmed(HeldSyn),
}

/// Port reuse: load balancers and NATs open a new connection on the same 4-tuple moments
/// after the last one closed (or, with a lost FIN, while it still looks live).
fn reuse_of<S>(flow: &mut Flow<S>, seg: &TcpSegment<'_>, ts: Timestamp) -> Reuse {
    let ack = seg.flags.has(TcpFlags::ACK);
    let sender = if seg.src == flow.info.client {
        Direction::ClientToServer
    } else {
        Direction::ServerToClient
    };
    let half = &flow.halves[sender.index()];
    if half.syn_seq == Some(seg.seq) {
        return Reuse::No;
    }
    if ack
        && let Some(held) = flow.held_syn
        && held.src == seg.dst
        && held.seq.wrapping_add(1) == seg.ack
    {
        flow.held_syn = None;
        return Reuse::Confirmed(held);
    }
    let closing = flow.closing_at.is_some() || flow.halves.iter().any(|h| h.fin_off.is_some());
    if closing {
        return Reuse::Now;
    }
    if !ack && half.started {
        // The latest unconfirmed SYN wins: a client retrying after a lost SYN-ACK sends the
        // same number again, and one slot per flow bounds what a SYN flood can hold.
        flow.held_syn = Some(HeldSyn {
            src: seg.src,
            seq: seg.seq,
            window: seg.window,
            ts,
        });
        return Reuse::Hold;
    }
    Reuse::No
}

/// The flow table of one worker.
pub struct FlowTable<H: StreamHandler> {
    cfg: ReassemblyConfig,
    flows: HashMap<FlowKey, Flow<H::State>, foldhash::fast::RandomState>,
    stats: ReassemblyStats,
    buffered: usize,
    /// Sum of the flows' `held` bytes.
    held: usize,
    /// Flows holding out-of-order bytes in either direction, and flows whose handler
    /// state holds bytes: counted as they change, so that the memory report (published
    /// several times a second) does not walk the table.
    holding_ooo: usize,
    holding_http: usize,
    /// Flows evicted because a table was over its budget: flows, streams, http.
    evictions: [u64; 3],
    next_id: u64,
    now: Timestamp,
    next_sweep: Timestamp,
    /// Packet time of the last timeout sweep ([`FlowTable::swept`]).
    swept: Timestamp,
}

/// Well-known service ports: the side holding one is the server when no SYN was seen.
fn looks_like_server_port(p: u16) -> bool {
    matches!(
        p,
        80 | 443 | 8000 | 8008 | 8080 | 8443 | 8888 | 3000 | 5000 | 9000
    ) || p < 1024
}

impl<H: StreamHandler> FlowTable<H> {
    pub fn new(cfg: ReassemblyConfig) -> Self {
        FlowTable {
            cfg,
            flows: HashMap::with_hasher(foldhash::fast::RandomState::default()),
            stats: ReassemblyStats::default(),
            buffered: 0,
            held: 0,
            holding_ooo: 0,
            holding_http: 0,
            evictions: [0; 3],
            next_id: 0,
            now: Timestamp::ZERO,
            next_sweep: Timestamp::ZERO,
            swept: Timestamp::ZERO,
        }
    }

    pub fn stats(&self) -> ReassemblyStats {
        let mut s = self.stats.clone();
        s.active_flows = self.flows.len() as u64;
        s
    }

    pub fn active_flows(&self) -> usize {
        self.flows.len()
    }

    /// Bytes currently held in out-of-order buffers.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    /// Bytes one flow entry is charged (fixed: the entry's inline size and its slot).
    pub fn entry_bytes() -> usize {
        size_of::<(FlowKey, Flow<H::State>)>() + ENTRY_SLOT_OVERHEAD
    }

    /// What the tables this flow table owns hold now, and what they evicted.
    pub fn usage(&self) -> [(Table, Usage); 3] {
        let b = &self.cfg.budget;
        let limit = |l: usize| u64::try_from(l).unwrap_or(u64::MAX);
        let entries = self.flows.len() as u64;
        [
            (
                Table::Flows,
                Usage {
                    bytes: (self.flows.len() * Self::entry_bytes()) as u64,
                    limit: limit(b.flows),
                    entries,
                    evictions: self.evictions[0],
                },
            ),
            (
                Table::Streams,
                Usage {
                    bytes: self.buffered as u64,
                    limit: limit(b.streams),
                    entries: self.holding_ooo as u64,
                    evictions: self.evictions[1],
                },
            ),
            (
                Table::Http,
                Usage {
                    bytes: self.held as u64,
                    limit: limit(b.http),
                    entries: self.holding_http as u64,
                    evictions: self.evictions[2],
                },
            ),
        ]
    }

    /// Feeds one segment at packet time `ts`.
    pub fn process(&mut self, seg: &TcpSegment<'_>, ts: Timestamp, handler: &mut H) {
        self.stats.segments += 1;
        if ts > self.now {
            self.now = ts;
        }
        if self.now >= self.next_sweep {
            self.sweep(handler);
        }
        self.apply(seg, ts, handler);
        self.enforce_budget(handler);
    }

    /// Over a table's share, closes the least recently active flows holding bytes of it
    /// (reason `evicted`) until the table is back under 15/16 of its share, so the scan
    /// that picks them runs once per sixteenth of the share, not once per segment.
    fn enforce_budget(&mut self, handler: &mut H) {
        let b = self.cfg.budget;
        let entry = Self::entry_bytes();
        if self.flows.len().saturating_mul(entry) > b.flows {
            self.evict_over(0, handler, |t| t.flows.len() * entry, b.flows, |_| true);
        }
        if self.buffered > b.streams {
            self.evict_over(1, handler, |t| t.buffered, b.streams, Flow::holds_ooo);
        }
        if self.held > b.http {
            self.evict_over(2, handler, |t| t.held, b.http, |f| f.held > 0);
        }
    }

    fn evict_over(
        &mut self,
        table: usize,
        handler: &mut H,
        used: impl Fn(&Self) -> usize,
        share: usize,
        holds: impl Fn(&Flow<H::State>) -> bool,
    ) {
        let target = share - share / 16;
        let mut by_age: Vec<(Timestamp, u64, FlowKey)> = self
            .flows
            .iter()
            .filter(|(_, f)| holds(f))
            .map(|(k, f)| (f.last_ts, f.info.id, *k))
            .collect();
        by_age.sort_unstable_by_key(|e| (e.0, e.1));
        for (_, _, key) in by_age {
            if used(self) <= target {
                break;
            }
            self.evictions[table] += 1;
            self.close_flow(&key, CloseReason::Evicted, handler);
        }
    }

    /// Applies one segment: port reuse first, then the flow's own reassembly.
    fn apply(&mut self, seg: &TcpSegment<'_>, ts: Timestamp, handler: &mut H) {
        let key = FlowKey::new(seg.tunnel, seg.src, seg.dst);
        if seg.flags.has(TcpFlags::SYN)
            && let Some(flow) = self.flows.get_mut(&key)
        {
            match reuse_of(flow, seg, ts) {
                Reuse::No => {}
                Reuse::Hold => {
                    self.stats.reuse_syns_held += 1;
                    return;
                }
                Reuse::Now => {
                    self.stats.flows_reused += 1;
                    self.close_flow(&key, CloseReason::Reused, handler);
                }
                Reuse::Confirmed(held) => {
                    self.stats.flows_reused += 1;
                    self.close_flow(&key, CloseReason::Reused, handler);
                    let syn = TcpSegment {
                        tunnel: seg.tunnel,
                        src: held.src,
                        dst: seg.src,
                        seq: held.seq,
                        ack: 0,
                        flags: TcpFlags(TcpFlags::SYN),
                        window: held.window,
                        payload: &[],
                        wire_payload_len: 0,
                    };
                    self.apply(&syn, held.ts, handler);
                }
            }
        }
        // One probe for a known flow (nearly every segment).
        let flow = match self.flows.get_mut(&key) {
            Some(flow) => flow,
            None => {
                if seg.flags.has(TcpFlags::RST) {
                    // A reset for a connection we do not track carries nothing to reassemble.
                    return;
                }
                if self.flows.len() >= self.cfg.max_flows {
                    self.stats.cap_hit("flows");
                    self.evict_least_recent(handler);
                }
                let info = self.new_conn(seg, ts);
                let state = handler.open(&info);
                self.flows.entry(key).or_insert(Flow {
                    info,
                    halves: [Half::default(), Half::default()],
                    last_ts: ts,
                    closing_at: None,
                    held_syn: None,
                    held: 0,
                    state,
                })
            }
        };
        flow.last_ts = ts;
        let dir = if seg.src == flow.info.client {
            Direction::ClientToServer
        } else {
            Direction::ServerToClient
        };
        // Only a segment changes what a flow holds: the table's counts follow it here.
        let held_ooo = flow.holds_ooo();
        let outcome = process_segment(
            &self.cfg,
            &mut self.stats,
            &mut self.buffered,
            flow,
            dir,
            seg,
            ts,
            handler,
        );
        let held = handler.held_bytes(&flow.state);
        self.held = self.held - flow.held + held;
        self.holding_http = self.holding_http + usize::from(held > 0) - usize::from(flow.held > 0);
        flow.held = held;
        self.holding_ooo = self.holding_ooo + usize::from(flow.holds_ooo()) - usize::from(held_ooo);
        self.stats.buffered_bytes_peak = self.stats.buffered_bytes_peak.max(self.buffered as u64);
        if let Some(reason) = outcome {
            flow.closing_at
                .get_or_insert((ts.saturating_add(self.cfg.close_linger), reason));
        }
    }

    fn new_conn(&mut self, seg: &TcpSegment<'_>, ts: Timestamp) -> ConnInfo {
        self.stats.flows_created += 1;
        self.next_id += 1;
        let syn = seg.flags.has(TcpFlags::SYN);
        let ack = seg.flags.has(TcpFlags::ACK);
        let (client, server, saw_syn) = if syn && !ack {
            (seg.src, seg.dst, true)
        } else if syn && ack {
            (seg.dst, seg.src, true)
        } else {
            self.stats.flows_midstream += 1;
            let (s, d) = (seg.src.port(), seg.dst.port());
            if looks_like_server_port(s) && !looks_like_server_port(d) {
                (seg.dst, seg.src, false)
            } else {
                (seg.src, seg.dst, false)
            }
        };
        ConnInfo {
            id: self.next_id,
            tunnel: seg.tunnel,
            client,
            server,
            start: ts,
            saw_syn,
        }
    }

    /// Closes connections idle past the timeout or finished past their linger.
    fn sweep(&mut self, handler: &mut H) {
        let now = self.now;
        let idle = self.cfg.idle_timeout;
        let mut expired: Vec<(Timestamp, u64, FlowKey, CloseReason)> = self
            .flows
            .iter()
            .filter_map(|(k, f)| match f.closing_at {
                Some((at, reason)) if at <= now => Some((f.last_ts, f.info.id, *k, reason)),
                _ if f.last_ts.saturating_add(idle) <= now => {
                    Some((f.last_ts, f.info.id, *k, CloseReason::IdleTimeout))
                }
                _ => None,
            })
            .collect();
        // Close in a deterministic order whatever the hash map's iteration order.
        expired.sort_unstable_by_key(|e| (e.0, e.1));
        for (_, _, key, reason) in expired {
            self.close_flow(&key, reason, handler);
        }
        let step = (self.cfg.close_linger).max(Duration::from_millis(100));
        self.next_sweep = now.saturating_add(step);
        self.swept = now;
    }

    /// Packet time of the last timeout sweep: the low watermark of what this table hands
    /// its handler from now on. A connection closed by a later sweep (idle, or lingering
    /// after its FIN) or evicted is stamped no earlier than its deadline, which is after
    /// this sweep (else this sweep would have closed it), and data is stamped with its
    /// segment's time, at or after the table's clock (captures whose timestamps step back
    /// aside). Zero before the first sweep.
    pub fn swept(&self) -> Timestamp {
        self.swept
    }

    /// Evicts the least recently active sixteenth of the table (at least one flow), so a
    /// flood of new connections costs O(1) amortised and never evicts busy connections first.
    fn evict_least_recent(&mut self, handler: &mut H) {
        let mut by_age: Vec<(Timestamp, u64, FlowKey)> = self
            .flows
            .iter()
            .map(|(k, f)| (f.last_ts, f.info.id, *k))
            .collect();
        let n = (by_age.len() / 16).max(1).min(by_age.len());
        if n == 0 {
            return;
        }
        by_age.select_nth_unstable_by_key(n - 1, |e| (e.0, e.1));
        let mut victims: Vec<_> = by_age[..n].to_vec();
        victims.sort_unstable_by_key(|e| (e.0, e.1));
        for (_, _, key) in victims {
            self.close_flow(&key, CloseReason::Evicted, handler);
        }
    }

    fn close_flow(&mut self, key: &FlowKey, reason: CloseReason, handler: &mut H) {
        let Some(mut flow) = self.flows.remove(key) else {
            return;
        };
        self.held -= flow.held;
        self.holding_http -= usize::from(flow.held > 0);
        self.holding_ooo -= usize::from(flow.holds_ooo());
        let ts = flow.last_ts.max(
            self.now
                .min(flow.last_ts.saturating_add(self.cfg.idle_timeout)),
        );
        for dir in [Direction::ClientToServer, Direction::ServerToClient] {
            let Flow {
                info,
                halves,
                state,
                ..
            } = &mut flow;
            let half = &mut halves[dir.index()];
            let stats = &mut self.stats;
            half.flush(ts, &mut self.buffered, &mut |ev| {
                emit(handler, state, info, dir, ev, ts, stats)
            });
        }
        *self.stats.flows_closed.entry(reason.as_str()).or_default() += 1;
        handler.close(flow.state, &flow.info, reason, ts);
    }

    /// Load shedding cut the connection of `key` (if tracked): what is buffered in order
    /// is handed over, then the handler closes it with [`CloseReason::Shed`].
    pub fn cut(&mut self, key: &FlowKey, handler: &mut H) {
        self.close_flow(key, CloseReason::Shed, handler);
    }

    /// Packet time advanced without a segment for this worker (a heartbeat from the
    /// capture thread): run timeouts.
    pub fn advance(&mut self, now: Timestamp, handler: &mut H) {
        if now > self.now {
            self.now = now;
        }
        if self.now >= self.next_sweep {
            self.sweep(handler);
        }
    }

    /// Closes every connection (end of capture or shutdown), in a deterministic order.
    pub fn flush_all(&mut self, handler: &mut H) {
        let mut keys: Vec<(Timestamp, u64, FlowKey)> = self
            .flows
            .iter()
            .map(|(k, f)| (f.last_ts, f.info.id, *k))
            .collect();
        keys.sort_unstable_by_key(|e| (e.0, e.1));
        for (_, _, key) in keys {
            let reason = match self.flows.get(&key).and_then(|f| f.closing_at) {
                Some((_, r)) => r,
                None => CloseReason::EndOfCapture,
            };
            self.close_flow(&key, reason, handler);
        }
    }
}

fn emit<H: StreamHandler>(
    handler: &mut H,
    state: &mut H::State,
    info: &ConnInfo,
    dir: Direction,
    ev: Ev<'_>,
    ts: Timestamp,
    stats: &mut ReassemblyStats,
) {
    match ev {
        Ev::Data(b) => {
            stats.bytes_delivered += b.len() as u64;
            handler.data(state, info, dir, b, ts);
        }
        Ev::Gap(n) => {
            stats.gaps += 1;
            stats.gap_bytes += n;
            handler.gap(state, info, dir, n, ts);
        }
    }
}

/// Applies one segment to its flow; returns a close reason when the connection ended.
#[allow(clippy::too_many_arguments)]
fn process_segment<H: StreamHandler>(
    cfg: &ReassemblyConfig,
    stats: &mut ReassemblyStats,
    buffered: &mut usize,
    flow: &mut Flow<H::State>,
    dir: Direction,
    seg: &TcpSegment<'_>,
    ts: Timestamp,
    handler: &mut H,
) -> Option<CloseReason> {
    let Flow {
        info,
        halves,
        state,
        ..
    } = flow;
    let [c2s, s2c] = halves;
    let (half, peer) = match dir {
        Direction::ClientToServer => (c2s, s2c),
        Direction::ServerToClient => (s2c, c2s),
    };
    // The closure borrows `stats` mutably for delivery counters, so the rest of this
    // function counts into `local`, merged at the end.
    let mut out = |ev: Ev<'_>| emit(handler, state, info, dir, ev, ts, stats);
    let mut local = Local::default();

    if seg.flags.has(TcpFlags::ACK) && peer.started {
        let a = seg.ack;
        if peer.peer_ack.is_none_or(|p| seq_lt(p, a)) {
            peer.peer_ack = Some(a);
        }
    }

    let syn = seg.flags.has(TcpFlags::SYN);
    let wire_len = u64::from(seg.wire_payload_len.max(seg.payload.len() as u32));
    if syn {
        // Before any data a SYN (re)anchors the direction, unless this side's SYN was seen
        // already: another number then is a forged or stale SYN, not this connection's.
        if !half.started || (half.next_off == 0 && half.syn_seq.is_none()) {
            half.syn_seq = Some(seg.seq);
            half.started = true;
            half.next_seq = seg.seq.wrapping_add(1);
            half.next_off = 0;
        }
    } else if !half.started {
        if wire_len == 0 && !seg.flags.has(TcpFlags::FIN) {
            // A bare ACK tells us nothing about where this side's data starts.
            finish_local(stats, local);
            return None;
        }
        half.started = true;
        half.next_seq = seg.seq;
    }
    let data_seq = if syn {
        seg.seq.wrapping_add(1)
    } else {
        seg.seq
    };

    if wire_len > 0 && !half.finished {
        let off = half.offset_of(data_seq);
        let end = off + wire_len as i128;
        let next = half.next_off as i128;
        if end <= next {
            local.retransmissions += 1;
        } else if off <= next {
            // In order (possibly overlapping what we delivered): deliver directly, no copy.
            let skip = (next - off) as u64;
            if skip > 0 {
                local.overlaps += 1;
            }
            let captured = seg.payload.len() as u64;
            if skip < captured {
                out(Ev::Data(&seg.payload[skip as usize..]));
            }
            let missing = wire_len - captured.max(skip);
            if missing > 0 {
                out(Ev::Gap(missing));
            }
            half.advance(wire_len - skip);
            half.drain(ts, buffered, &mut out);
        } else {
            local.ooo_segments += 1;
            insert_ooo(
                cfg,
                &mut local,
                buffered,
                half,
                off as u64,
                wire_len,
                seg.payload,
                ts,
                &mut out,
            );
        }
    }

    if seg.flags.has(TcpFlags::FIN) && half.started {
        let fin = half.offset_of(data_seq) + wire_len as i128;
        if fin >= half.next_off as i128 && half.fin_off.is_none() {
            half.fin_off = Some(fin as u64);
        }
        if half.fin_off.is_some_and(|f| half.next_off >= f) && half.ooo.is_empty() {
            half.finished = true;
        }
    }

    // Holes: a gap once the peer acknowledged past it and reordering had its chance, or
    // after the gap timeout whatever the acknowledgements say.
    if hole_due(cfg, half, ts) {
        half.skip_hole(ts, buffered, &mut out);
    }
    if hole_due(cfg, peer, ts) {
        let back = match dir {
            Direction::ClientToServer => Direction::ServerToClient,
            Direction::ServerToClient => Direction::ClientToServer,
        };
        peer.skip_hole(ts, buffered, &mut |ev| {
            emit(handler, state, info, back, ev, ts, stats)
        });
    }
    finish_local(stats, local);

    if seg.flags.has(TcpFlags::RST) {
        return Some(CloseReason::Rst);
    }
    if half.finished && peer.finished {
        return Some(CloseReason::Fin);
    }
    None
}

#[derive(Default)]
struct Local {
    retransmissions: u64,
    ooo_segments: u64,
    overlaps: u64,
    overlap_conflicts: u64,
    caps: Vec<&'static str>,
}

fn finish_local(stats: &mut ReassemblyStats, l: Local) {
    stats.retransmissions += l.retransmissions;
    stats.ooo_segments += l.ooo_segments;
    stats.overlaps += l.overlaps;
    stats.overlap_conflicts += l.overlap_conflicts;
    for c in l.caps {
        stats.cap_hit(c);
    }
}

fn hole_due(cfg: &ReassemblyConfig, h: &Half, ts: Timestamp) -> bool {
    h.hole_since.is_some_and(|since| {
        let age = ts.saturating_since(since);
        (h.peer_acked_hole() && age >= cfg.reorder_window) || age >= cfg.gap_timeout
    })
}

/// Buffers an out-of-order segment, keeping data already buffered where they overlap.
#[allow(clippy::too_many_arguments)]
fn insert_ooo(
    cfg: &ReassemblyConfig,
    local: &mut Local,
    buffered: &mut usize,
    half: &mut Half,
    off: u64,
    len: u64,
    payload: &[u8],
    ts: Timestamp,
    out: &mut dyn FnMut(Ev<'_>),
) {
    let captured_end = off + payload.len() as u64;
    // Make room first: per-direction caps, then the worker-wide cap.
    while !half.ooo.is_empty()
        && (half.ooo_bytes + payload.len() > cfg.max_ooo_bytes_per_direction
            || half.ooo.len() >= cfg.max_ooo_segments_per_direction
            || *buffered + payload.len() > cfg.max_buffered_bytes)
    {
        local
            .caps
            .push(if *buffered + payload.len() > cfg.max_buffered_bytes {
                "buffered-bytes"
            } else {
                "ooo-per-direction"
            });
        half.skip_hole(ts, buffered, out);
    }
    // Skipping holes may have brought the delivery point up to (or past) this segment.
    let next = half.next_off;
    if off <= next {
        if off + len <= next {
            local.retransmissions += 1;
            return;
        }
        let skip = next - off;
        if skip < payload.len() as u64 {
            out(Ev::Data(&payload[skip as usize..]));
        }
        let missing = len - (payload.len() as u64).max(skip);
        if missing > 0 {
            out(Ev::Gap(missing));
        }
        half.advance(len - skip);
        half.drain(ts, buffered, out);
        return;
    }
    if payload.len() > cfg.max_ooo_bytes_per_direction || payload.len() > cfg.max_buffered_bytes {
        local.caps.push("ooo-per-direction");
        return;
    }
    let end = off + len;
    let mut cursor = off;
    let mut new_pieces: Vec<Piece> = Vec::new();
    for p in half.ooo.iter() {
        if p.end() <= cursor {
            continue;
        }
        if p.off >= end {
            break;
        }
        if p.off > cursor {
            new_pieces.push(slice_piece(cursor, p.off, off, payload));
        }
        // Overlap [max(cursor, p.off), min(end, p.end())): first data wins; compare.
        let ov_start = cursor.max(p.off);
        let ov_end = end.min(p.end());
        local.overlaps += 1;
        let a_end = ov_end.min(captured_end).min(p.off + p.data.len() as u64);
        if a_end > ov_start {
            let new = &payload[(ov_start - off) as usize..(a_end - off) as usize];
            let old = &p.data[(ov_start - p.off) as usize..(a_end - p.off) as usize];
            if new != old {
                local.overlap_conflicts += 1;
            }
        }
        cursor = cursor.max(p.end());
    }
    if cursor < end {
        new_pieces.push(slice_piece(cursor, end, off, payload));
    }
    for piece in new_pieces {
        if piece.len == 0 {
            continue;
        }
        *buffered += piece.data.len();
        half.ooo_bytes += piece.data.len();
        let pos = half.ooo.partition_point(|p| p.off < piece.off);
        half.ooo.insert(pos, piece);
    }
    if half.hole_since.is_none() {
        half.hole_since = Some(ts);
    }
}

/// The part `[from, to)` of a segment starting at `seg_off`, copying its captured bytes.
fn slice_piece(from: u64, to: u64, seg_off: u64, payload: &[u8]) -> Piece {
    let cap_end = seg_off + payload.len() as u64;
    let data = if from < cap_end {
        payload[(from - seg_off) as usize..(to.min(cap_end) - seg_off) as usize].to_vec()
    } else {
        Vec::new()
    };
    Piece {
        off: from,
        len: to - from,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    /// A flow's key is the same both ways and hashes alike; changing any one field (either
    /// address, either port, the tunnel, the family) changes the hash.
    #[test]
    fn flow_keys_hash_by_every_field_and_both_directions_alike() {
        use std::hash::BuildHasher;
        let h = |k: FlowKey| foldhash::fast::FixedState::with_seed(1).hash_one(k);
        let a: SocketAddr = "10.0.0.1:40000".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:443".parse().unwrap();
        let base = FlowKey::new(TunnelId(0), a, b);
        assert_eq!(base, FlowKey::new(TunnelId(0), b, a));
        assert_eq!(h(base), h(FlowKey::new(TunnelId(0), b, a)));
        let others = [
            FlowKey::new(TunnelId(7), a, b),
            FlowKey::new(TunnelId(0), "10.0.0.3:40000".parse().unwrap(), b),
            FlowKey::new(TunnelId(0), a, "10.0.0.4:443".parse().unwrap()),
            FlowKey::new(TunnelId(0), "10.0.0.1:40001".parse().unwrap(), b),
            FlowKey::new(TunnelId(0), a, "10.0.0.2:444".parse().unwrap()),
            // The ports swapped between the same two addresses.
            FlowKey::new(
                TunnelId(0),
                "10.0.0.1:443".parse().unwrap(),
                "10.0.0.2:40000".parse().unwrap(),
            ),
            FlowKey::new(
                TunnelId(0),
                "[::a00:1]:40000".parse().unwrap(),
                "[::a00:2]:443".parse().unwrap(),
            ),
        ];
        for k in others {
            assert_ne!(k, base);
            assert_ne!(h(k), h(base), "{k:?}");
        }
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Event {
        Open(SocketAddr, SocketAddr),
        Data(Direction, Vec<u8>),
        Gap(Direction, u64),
        Close(CloseReason),
    }

    #[derive(Default)]
    struct Recorder {
        events: Vec<Event>,
    }

    impl Recorder {
        /// Bytes per direction with gaps as `?` markers, merged across data events.
        fn stream(&self, dir: Direction) -> Vec<u8> {
            let mut v = Vec::new();
            for e in &self.events {
                match e {
                    Event::Data(d, b) if *d == dir => v.extend_from_slice(b),
                    Event::Gap(d, n) if *d == dir => {
                        v.extend(std::iter::repeat_n(b'?', *n as usize))
                    }
                    _ => {}
                }
            }
            v
        }
        fn closes(&self) -> Vec<CloseReason> {
            self.events
                .iter()
                .filter_map(|e| {
                    if let Event::Close(r) = e {
                        Some(*r)
                    } else {
                        None
                    }
                })
                .collect()
        }
    }

    impl StreamHandler for Recorder {
        type State = ();
        fn open(&mut self, conn: &ConnInfo) {
            self.events.push(Event::Open(conn.client, conn.server));
        }
        fn data(&mut self, _: &mut (), _: &ConnInfo, dir: Direction, bytes: &[u8], _: Timestamp) {
            self.events.push(Event::Data(dir, bytes.to_vec()));
        }
        fn gap(&mut self, _: &mut (), _: &ConnInfo, dir: Direction, len: u64, _: Timestamp) {
            self.events.push(Event::Gap(dir, len));
        }
        fn close(&mut self, _: (), _: &ConnInfo, reason: CloseReason, _: Timestamp) {
            self.events.push(Event::Close(reason));
        }
    }

    const C: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 40000);
    const S: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 80);

    fn seg(
        src: SocketAddr,
        dst: SocketAddr,
        seq: u32,
        ack: u32,
        flags: u8,
        payload: &[u8],
    ) -> TcpSegment<'_> {
        TcpSegment {
            tunnel: TunnelId(0),
            src,
            dst,
            seq,
            ack,
            flags: TcpFlags(flags),
            window: 1000,
            payload,
            wire_payload_len: payload.len() as u32,
        }
    }

    const A: u8 = TcpFlags::ACK;
    const ISN_C: u32 = 1000;
    const ISN_S: u32 = 5000;

    fn ms(n: u64) -> Timestamp {
        Timestamp(n * 1_000_000)
    }

    fn handshake(t: &mut FlowTable<Recorder>, r: &mut Recorder, isn_c: u32, isn_s: u32) {
        t.process(&seg(C, S, isn_c, 0, TcpFlags::SYN, b""), ms(0), r);
        t.process(
            &seg(S, C, isn_s, isn_c.wrapping_add(1), TcpFlags::SYN | A, b""),
            ms(1),
            r,
        );
        t.process(
            &seg(C, S, isn_c.wrapping_add(1), isn_s.wrapping_add(1), A, b""),
            ms(2),
            r,
        );
    }

    /// A connection cut by load shedding hands over what it holds in order, closes with
    /// reason `shed` (counted) and is forgotten: its later segments start a mid-stream
    /// connection of their own. A cut of a connection not tracked does nothing.
    #[test]
    fn a_cut_closes_the_connection_as_shed() {
        let mut t = FlowTable::new(ReassemblyConfig::default());
        let mut r = Recorder::default();
        handshake(&mut t, &mut r, ISN_C, ISN_S);
        t.process(
            &seg(C, S, ISN_C + 1, ISN_S + 1, A, b"GET /1 "),
            ms(3),
            &mut r,
        );
        // Out of order: held until the hole before it fills, handed over at the cut.
        t.process(
            &seg(C, S, ISN_C + 12, ISN_S + 1, A, b"\r\n\r\n"),
            ms(4),
            &mut r,
        );
        t.cut(&FlowKey::new(TunnelId(0), S, C), &mut r);
        assert_eq!(r.closes(), vec![CloseReason::Shed]);
        assert_eq!(r.stream(Direction::ClientToServer), b"GET /1 ????\r\n\r\n");
        assert_eq!(t.active_flows(), 0);
        assert_eq!(t.stats().flows_closed.get("shed"), Some(&1));
        t.cut(&FlowKey::new(TunnelId(0), C, S), &mut r);
        let other: SocketAddr = "10.0.0.9:40001".parse().unwrap();
        t.cut(&FlowKey::new(TunnelId(0), other, S), &mut r);
        assert_eq!(r.closes(), vec![CloseReason::Shed]);
        assert_eq!(t.stats().flows_closed.get("shed"), Some(&1));
    }

    #[test]
    fn in_order_both_directions_then_fin() {
        let mut t = FlowTable::new(ReassemblyConfig::default());
        let mut r = Recorder::default();
        handshake(&mut t, &mut r, ISN_C, ISN_S);
        t.process(
            &seg(C, S, ISN_C + 1, ISN_S + 1, A, b"GET / HTTP/1.1\r\n\r\n"),
            ms(3),
            &mut r,
        );
        t.process(
            &seg(S, C, ISN_S + 1, ISN_C + 19, A, b"HTTP/1.1 200 OK\r\n"),
            ms(4),
            &mut r,
        );
        t.process(
            &seg(S, C, ISN_S + 18, ISN_C + 19, A | TcpFlags::FIN, b"\r\n"),
            ms(5),
            &mut r,
        );
        t.process(
            &seg(C, S, ISN_C + 19, ISN_S + 21, A | TcpFlags::FIN, b""),
            ms(6),
            &mut r,
        );
        assert_eq!(r.events[0], Event::Open(C, S));
        assert_eq!(
            r.stream(Direction::ClientToServer),
            b"GET / HTTP/1.1\r\n\r\n"
        );
        assert_eq!(
            r.stream(Direction::ServerToClient),
            b"HTTP/1.1 200 OK\r\n\r\n"
        );
        // Closed after the linger, on packet time.
        assert!(r.closes().is_empty());
        t.advance(ms(2000), &mut r);
        assert_eq!(r.closes(), vec![CloseReason::Fin]);
        assert_eq!(t.active_flows(), 0);
    }

    #[test]
    fn out_of_order_and_retransmission() {
        let mut t = FlowTable::new(ReassemblyConfig::default());
        let mut r = Recorder::default();
        handshake(&mut t, &mut r, ISN_C, ISN_S);
        t.process(&seg(C, S, ISN_C + 6, ISN_S + 1, A, b"world"), ms(3), &mut r);
        t.process(&seg(C, S, ISN_C + 1, ISN_S + 1, A, b"hello"), ms(4), &mut r);
        t.process(&seg(C, S, ISN_C + 1, ISN_S + 1, A, b"hello"), ms(5), &mut r);
        t.process(&seg(C, S, ISN_C + 11, ISN_S + 1, A, b"!"), ms(6), &mut r);
        assert_eq!(r.stream(Direction::ClientToServer), b"helloworld!");
        let s = t.stats();
        assert_eq!(s.retransmissions, 1);
        assert_eq!(s.ooo_segments, 1);
        assert_eq!(s.gaps, 0);
    }

    #[test]
    fn conflicting_overlap_keeps_first_data_and_counts() {
        let mut t = FlowTable::new(ReassemblyConfig::default());
        let mut r = Recorder::default();
        handshake(&mut t, &mut r, ISN_C, ISN_S);
        t.process(&seg(C, S, ISN_C + 4, ISN_S + 1, A, b"defgh"), ms(3), &mut r);
        t.process(&seg(C, S, ISN_C + 6, ISN_S + 1, A, b"XYhij"), ms(4), &mut r);
        t.process(&seg(C, S, ISN_C + 1, ISN_S + 1, A, b"abc"), ms(5), &mut r);
        assert_eq!(r.stream(Direction::ClientToServer), b"abcdefghij");
        let s = t.stats();
        assert_eq!(s.overlap_conflicts, 1);
        assert!(s.overlaps >= 1);
    }

    #[test]
    fn ack_before_data_does_not_lose_data() {
        // The mirror delivers the server's ACK of the request before the request itself.
        let mut t = FlowTable::new(ReassemblyConfig::default());
        let mut r = Recorder::default();
        handshake(&mut t, &mut r, ISN_C, ISN_S);
        t.process(&seg(S, C, ISN_S + 1, ISN_C + 11, A, b""), ms(3), &mut r);
        t.process(&seg(C, S, ISN_C + 6, ISN_S + 1, A, b"world"), ms(4), &mut r);
        t.process(&seg(C, S, ISN_C + 1, ISN_S + 1, A, b"hello"), ms(5), &mut r);
        assert_eq!(r.stream(Direction::ClientToServer), b"helloworld");
        assert_eq!(t.stats().gaps, 0);
    }

    #[test]
    fn acknowledged_hole_becomes_gap_after_reorder_window() {
        let mut t = FlowTable::new(ReassemblyConfig::default());
        let mut r = Recorder::default();
        handshake(&mut t, &mut r, ISN_C, ISN_S);
        // "hello" never reaches the mirror; the server acknowledges it anyway.
        t.process(
            &seg(C, S, ISN_C + 6, ISN_S + 1, A, b"world"),
            ms(10),
            &mut r,
        );
        t.process(&seg(S, C, ISN_S + 1, ISN_C + 11, A, b""), ms(20), &mut r);
        assert_eq!(r.stream(Direction::ClientToServer), b"");
        t.process(
            &seg(S, C, ISN_S + 1, ISN_C + 11, A, b"HTTP"),
            ms(200),
            &mut r,
        );
        assert_eq!(r.stream(Direction::ClientToServer), b"?????world");
        assert_eq!(r.stream(Direction::ServerToClient), b"HTTP");
        assert_eq!(t.stats().gaps, 1);
        assert_eq!(t.stats().gap_bytes, 5);
    }

    #[test]
    fn unacknowledged_hole_waits_for_gap_timeout() {
        let mut t = FlowTable::new(ReassemblyConfig::default());
        let mut r = Recorder::default();
        handshake(&mut t, &mut r, ISN_C, ISN_S);
        t.process(
            &seg(C, S, ISN_C + 6, ISN_S + 1, A, b"world"),
            ms(10),
            &mut r,
        );
        t.process(&seg(C, S, ISN_C + 11, ISN_S + 1, A, b"!"), ms(1000), &mut r);
        assert_eq!(r.stream(Direction::ClientToServer), b"");
        t.process(&seg(C, S, ISN_C + 12, ISN_S + 1, A, b"?"), ms(6000), &mut r);
        assert_eq!(r.stream(Direction::ClientToServer), b"?????world!?");
    }

    #[test]
    fn midstream_pickup_guesses_server_by_port() {
        let mut t = FlowTable::new(ReassemblyConfig::default());
        let mut r = Recorder::default();
        // First packet seen is the server's response.
        t.process(
            &seg(S, C, 777, 333, A, b"HTTP/1.1 200 OK\r\n"),
            ms(1),
            &mut r,
        );
        t.process(&seg(C, S, 333, 794, A, b"GET /next"), ms(2), &mut r);
        assert_eq!(r.events[0], Event::Open(C, S));
        assert_eq!(r.stream(Direction::ServerToClient), b"HTTP/1.1 200 OK\r\n");
        assert_eq!(r.stream(Direction::ClientToServer), b"GET /next");
        assert_eq!(t.stats().flows_midstream, 1);
    }

    #[test]
    fn sequence_wraparound() {
        let mut t = FlowTable::new(ReassemblyConfig::default());
        let mut r = Recorder::default();
        let isn = u32::MAX - 3;
        handshake(&mut t, &mut r, isn, ISN_S);
        let s1 = isn.wrapping_add(1);
        t.process(
            &seg(C, S, s1.wrapping_add(4), ISN_S + 1, A, b"5678"),
            ms(3),
            &mut r,
        );
        t.process(&seg(C, S, s1, ISN_S + 1, A, b"1234"), ms(4), &mut r);
        t.process(
            &seg(C, S, s1.wrapping_add(8), ISN_S + 1, A, b"9"),
            ms(5),
            &mut r,
        );
        assert_eq!(r.stream(Direction::ClientToServer), b"123456789");
    }

    #[test]
    fn snaplen_cut_segment_reports_gap_for_missing_bytes() {
        let mut t = FlowTable::new(ReassemblyConfig::default());
        let mut r = Recorder::default();
        handshake(&mut t, &mut r, ISN_C, ISN_S);
        let mut s = seg(C, S, ISN_C + 1, ISN_S + 1, A, b"abc");
        s.wire_payload_len = 10;
        t.process(&s, ms(3), &mut r);
        t.process(&seg(C, S, ISN_C + 11, ISN_S + 1, A, b"k"), ms(4), &mut r);
        assert_eq!(r.stream(Direction::ClientToServer), b"abc???????k");
    }

    #[test]
    fn rst_closes_and_flushes_buffered_data_with_gap() {
        let mut t = FlowTable::new(ReassemblyConfig::default());
        let mut r = Recorder::default();
        handshake(&mut t, &mut r, ISN_C, ISN_S);
        t.process(&seg(C, S, ISN_C + 3, ISN_S + 1, A, b"cd"), ms(3), &mut r);
        t.process(
            &seg(S, C, ISN_S + 1, ISN_C + 1, TcpFlags::RST, b""),
            ms(4),
            &mut r,
        );
        t.advance(ms(1000), &mut r);
        assert_eq!(r.closes(), vec![CloseReason::Rst]);
        assert_eq!(r.stream(Direction::ClientToServer), b"??cd");
    }

    #[test]
    fn idle_timeout_on_packet_time() {
        let cfg = ReassemblyConfig {
            idle_timeout: Duration::from_secs(10),
            ..Default::default()
        };
        let mut t = FlowTable::new(cfg);
        let mut r = Recorder::default();
        handshake(&mut t, &mut r, ISN_C, ISN_S);
        t.advance(ms(9_000), &mut r);
        assert!(r.closes().is_empty());
        t.advance(ms(10_100), &mut r);
        assert_eq!(r.closes(), vec![CloseReason::IdleTimeout]);
    }

    #[test]
    fn flow_cap_evicts_least_recently_active() {
        let cfg = ReassemblyConfig {
            max_flows: 16,
            ..Default::default()
        };
        let mut t = FlowTable::new(cfg);
        let mut r = Recorder::default();
        let ip = |i: u8| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 1, 0, i)), 40000);
        for i in 0..16u8 {
            t.process(
                &seg(ip(i), S, 1, 0, TcpFlags::SYN, b""),
                ms(u64::from(i) + 1),
                &mut r,
            );
        }
        // Flow 0 stays busy, so flow 1 is the least recently active.
        t.process(&seg(ip(0), S, 2, 0, A, b"x"), ms(100), &mut r);
        t.process(&seg(ip(200), S, 1, 0, TcpFlags::SYN, b""), ms(101), &mut r);
        assert_eq!(t.active_flows(), 16);
        assert_eq!(r.closes(), vec![CloseReason::Evicted]);
        assert_eq!(t.stats().cap_hits.get("flows"), Some(&1));
        assert!(t.flows.contains_key(&FlowKey::new(TunnelId(0), ip(0), S)));
        assert!(!t.flows.contains_key(&FlowKey::new(TunnelId(0), ip(1), S)));
    }

    #[test]
    fn ooo_cap_forces_gap_and_bounds_memory() {
        let cfg = ReassemblyConfig {
            max_ooo_bytes_per_direction: 100,
            ..Default::default()
        };
        let mut t = FlowTable::new(cfg);
        let mut r = Recorder::default();
        handshake(&mut t, &mut r, ISN_C, ISN_S);
        let chunk = [b'x'; 40];
        // Byte 0 is missing; 40-byte segments pile up behind it.
        for i in 0..10u32 {
            t.process(
                &seg(C, S, ISN_C + 2 + i * 40, ISN_S + 1, A, &chunk),
                ms(3 + u64::from(i)),
                &mut r,
            );
            assert!(t.buffered_bytes() <= 100);
        }
        let s = r.stream(Direction::ClientToServer);
        assert_eq!(s[0], b'?');
        assert!(
            t.stats()
                .cap_hits
                .get("ooo-per-direction")
                .copied()
                .unwrap_or(0)
                >= 1
        );
        t.flush_all(&mut r);
        assert_eq!(r.stream(Direction::ClientToServer).len(), 401);
        assert_eq!(t.buffered_bytes(), 0);
    }

    /// A handler holding every byte it is given until the connection closes (as an HTTP
    /// parser holds a body being read), and recording which connections closed how.
    #[derive(Default)]
    struct Holder {
        closed: Vec<(SocketAddr, CloseReason)>,
    }

    impl StreamHandler for Holder {
        type State = usize;
        fn open(&mut self, _: &ConnInfo) -> usize {
            0
        }
        fn data(&mut self, st: &mut usize, _: &ConnInfo, _: Direction, b: &[u8], _: Timestamp) {
            *st += b.len();
        }
        fn gap(&mut self, _: &mut usize, _: &ConnInfo, _: Direction, _: u64, _: Timestamp) {}
        fn close(&mut self, _: usize, c: &ConnInfo, reason: CloseReason, _: Timestamp) {
            self.closed.push((c.client, reason));
        }
        fn held_bytes(&self, st: &usize) -> usize {
            *st
        }
    }

    fn client(i: u16) -> SocketAddr {
        SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(10, 2, (i >> 8) as u8, i as u8)),
            40000,
        )
    }

    fn usage(t: &FlowTable<Holder>, table: Table) -> Usage {
        t.usage()
            .into_iter()
            .find(|(x, _)| *x == table)
            .map(|(_, u)| u)
            .unwrap_or_default()
    }

    /// The memory report's counts of flows holding out-of-order and handler bytes, kept
    /// as segments come, equal a walk over the table after every segment: reordered,
    /// resent and in-order data on many connections, some reset, some evicted over the
    /// streams share, then all flushed.
    #[test]
    fn holding_counts_follow_the_table() {
        let cfg = ReassemblyConfig {
            budget: FlowBudget {
                streams: 3000,
                ..Default::default()
            },
            ..Default::default()
        };
        let mut t = FlowTable::new(cfg);
        let mut h = Holder::default();
        let walked = |t: &FlowTable<Holder>| {
            let ooo = t.flows.values().filter(|f| f.holds_ooo()).count();
            let held = t.flows.values().filter(|f| f.held > 0).count();
            (ooo as u64, held as u64)
        };
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut seen_ooo = false;
        for step in 0..4000u64 {
            let r = next();
            let c = client((r % 40) as u16);
            // Offsets 0..8 pieces of 100 bytes ahead of the start: many arrive early.
            let off = ((r >> 8) % 8) as u32 * 100;
            let flags = if (r >> 16) % 97 == 0 {
                TcpFlags::RST
            } else {
                A
            };
            t.process(
                &seg(c, S, 1 + off, 0, flags, &[b'x'; 100]),
                ms(step),
                &mut h,
            );
            let u = t.usage();
            assert_eq!((u[1].1.entries, u[2].1.entries), walked(&t), "step {step}");
            seen_ooo |= u[1].1.entries > 0;
        }
        assert!(seen_ooo, "some flows held out-of-order bytes");
        assert!(t.usage()[2].1.entries > 0);
        t.flush_all(&mut h);
        let u = t.usage();
        assert_eq!((u[1].1.entries, u[2].1.entries), (0, 0));
    }

    #[test]
    fn flows_budget_evicts_least_recently_active_flows() {
        let entry = FlowTable::<Holder>::entry_bytes();
        let cfg = ReassemblyConfig {
            budget: FlowBudget {
                flows: 32 * entry,
                ..Default::default()
            },
            ..Default::default()
        };
        let mut t = FlowTable::new(cfg);
        let mut h = Holder::default();
        for i in 0..32u16 {
            t.process(
                &seg(client(i), S, 1, 0, TcpFlags::SYN, b""),
                ms(u64::from(i) + 1),
                &mut h,
            );
        }
        // Flow 0 stays busy: the next least recently active are 1, 2, ...
        t.process(&seg(client(0), S, 2, 0, A, b"x"), ms(100), &mut h);
        assert!(h.closed.is_empty());
        assert_eq!(usage(&t, Table::Flows).bytes, (32 * entry) as u64);
        t.process(
            &seg(client(40), S, 1, 0, TcpFlags::SYN, b""),
            ms(101),
            &mut h,
        );
        let u = usage(&t, Table::Flows);
        // Back under 15/16 of the share: 30 flows, 3 evicted, the oldest idle ones.
        assert_eq!(u.entries, 30, "{u:?}");
        assert_eq!(u.evictions, 3);
        assert_eq!(u.limit, (32 * entry) as u64);
        assert!(u.bytes <= u.limit);
        let evicted: Vec<_> = h.closed.iter().map(|c| c.0).collect();
        assert_eq!(evicted, vec![client(1), client(2), client(3)]);
        assert!(h.closed.iter().all(|c| c.1 == CloseReason::Evicted));
        assert_eq!(t.stats().flows_closed.get("evicted"), Some(&3));
        for kept in [client(0), client(4), client(31), client(40)] {
            assert!(t.flows.contains_key(&FlowKey::new(TunnelId(0), kept, S)));
        }
    }

    #[test]
    fn streams_budget_evicts_least_recent_flows_holding_buffers() {
        let cfg = ReassemblyConfig {
            budget: FlowBudget {
                streams: 1000,
                ..Default::default()
            },
            ..Default::default()
        };
        let mut t = FlowTable::new(cfg);
        let mut h = Holder::default();
        // An idle flow holding no buffer is never evicted for the streams table.
        t.process(&seg(client(99), S, 1, 0, TcpFlags::SYN, b""), ms(1), &mut h);
        // Four flows each buffer 300 bytes behind a one-byte hole.
        for i in 0..4u16 {
            let at = 10 + u64::from(i);
            t.process(
                &seg(client(i), S, 1000, 0, TcpFlags::SYN, b""),
                ms(at),
                &mut h,
            );
            t.process(&seg(client(i), S, 1002, 0, A, &[b'y'; 300]), ms(at), &mut h);
        }
        let u = usage(&t, Table::Streams);
        // The fourth pushed it over 1000: the oldest holder went.
        assert_eq!(u.evictions, 1, "{u:?}");
        assert_eq!(u.bytes, 900);
        assert_eq!(u.entries, 3);
        assert_eq!(h.closed, vec![(client(0), CloseReason::Evicted)]);
        assert!(
            t.flows
                .contains_key(&FlowKey::new(TunnelId(0), client(99), S))
        );
        assert_eq!(t.buffered_bytes(), 900);
    }

    #[test]
    fn http_budget_evicts_least_recent_flows_holding_handler_bytes() {
        let cfg = ReassemblyConfig {
            budget: FlowBudget {
                http: 1000,
                ..Default::default()
            },
            ..Default::default()
        };
        let mut t = FlowTable::new(cfg);
        let mut h = Holder::default();
        for i in 0..3u16 {
            t.process(
                &seg(client(i), S, 1000, 0, TcpFlags::SYN, b""),
                ms(1),
                &mut h,
            );
        }
        // Flows 0 and 1 each hold 400 bytes; flow 2 holds nothing.
        t.process(&seg(client(0), S, 1001, 0, A, &[b'a'; 400]), ms(2), &mut h);
        t.process(&seg(client(1), S, 1001, 0, A, &[b'b'; 400]), ms(3), &mut h);
        assert_eq!(usage(&t, Table::Http).bytes, 800);
        assert!(h.closed.is_empty());
        // Flow 1 grows past the share: flow 0, the least recently active holder, goes.
        t.process(&seg(client(1), S, 1401, 0, A, &[b'b'; 300]), ms(4), &mut h);
        let u = usage(&t, Table::Http);
        assert_eq!((u.bytes, u.entries, u.evictions), (700, 1, 1), "{u:?}");
        assert_eq!(h.closed, vec![(client(0), CloseReason::Evicted)]);
        assert_eq!(t.active_flows(), 2);
        // Closing returns the bytes.
        t.flush_all(&mut h);
        assert_eq!(usage(&t, Table::Http).bytes, 0);
    }

    /// One request and response on a handshaken connection, then FIN both ways.
    fn exchange(t: &mut FlowTable<Recorder>, r: &mut Recorder, isn_c: u32, isn_s: u32, at: u64) {
        let (c1, s1) = (isn_c.wrapping_add(1), isn_s.wrapping_add(1));
        t.process(&seg(C, S, c1, s1, A, b"GET /a"), ms(at), r);
        t.process(
            &seg(S, C, s1, c1.wrapping_add(6), A, b"200 a"),
            ms(at + 1),
            r,
        );
        let fin = A | TcpFlags::FIN;
        t.process(
            &seg(S, C, s1.wrapping_add(5), c1.wrapping_add(6), fin, b""),
            ms(at + 2),
            r,
        );
        t.process(
            &seg(C, S, c1.wrapping_add(6), s1.wrapping_add(6), fin, b""),
            ms(at + 3),
            r,
        );
    }

    #[test]
    fn new_syn_on_a_closing_flow_starts_a_new_connection() {
        let mut t = FlowTable::new(ReassemblyConfig::default());
        let mut r = Recorder::default();
        handshake(&mut t, &mut r, ISN_C, ISN_S);
        exchange(&mut t, &mut r, ISN_C, ISN_S, 3);
        // Same ports 1 ms later, well inside the close linger, with new sequence numbers.
        let (c2, s2) = (ISN_C + 77_777, ISN_S + 99_999);
        t.process(&seg(C, S, c2, 0, TcpFlags::SYN, b""), ms(7), &mut r);
        // The old connection's last ACK arrives after the new SYN.
        t.process(&seg(S, C, ISN_S + 7, ISN_C + 8, A, b""), ms(7), &mut r);
        t.process(
            &seg(S, C, s2, c2 + 1, TcpFlags::SYN | A, b""),
            ms(8),
            &mut r,
        );
        t.process(&seg(C, S, c2 + 1, s2 + 1, A, b"GET /b"), ms(9), &mut r);
        t.process(&seg(S, C, s2 + 1, c2 + 7, A, b"200 b"), ms(10), &mut r);
        assert_eq!(r.closes(), vec![CloseReason::Reused]);
        assert_eq!(r.stream(Direction::ClientToServer), b"GET /aGET /b");
        assert_eq!(r.stream(Direction::ServerToClient), b"200 a200 b");
        let opens = r
            .events
            .iter()
            .filter(|e| matches!(e, Event::Open(..)))
            .count();
        assert_eq!(opens, 2);
        let s = t.stats();
        assert_eq!((s.flows_created, s.flows_reused, s.gaps), (2, 1, 0));
    }

    #[test]
    fn syn_retransmission_is_not_a_new_connection() {
        let mut t = FlowTable::new(ReassemblyConfig::default());
        let mut r = Recorder::default();
        handshake(&mut t, &mut r, ISN_C, ISN_S);
        t.process(&seg(C, S, ISN_C, 0, TcpFlags::SYN, b""), ms(3), &mut r);
        t.process(&seg(C, S, ISN_C + 1, ISN_S + 1, A, b"hi"), ms(4), &mut r);
        exchange(&mut t, &mut r, ISN_C + 2, ISN_S, 5);
        // A late duplicate of the SYN while the connection lingers.
        t.process(&seg(C, S, ISN_C, 0, TcpFlags::SYN, b""), ms(10), &mut r);
        t.advance(ms(2000), &mut r);
        assert_eq!(r.closes(), vec![CloseReason::Fin]);
        assert_eq!(r.stream(Direction::ClientToServer), b"hiGET /a");
        let s = t.stats();
        assert_eq!(
            (s.flows_created, s.flows_reused, s.reuse_syns_held),
            (1, 0, 0)
        );
    }

    #[test]
    fn new_syn_on_a_live_flow_waits_for_the_syn_ack() {
        let mut t = FlowTable::new(ReassemblyConfig::default());
        let mut r = Recorder::default();
        handshake(&mut t, &mut r, ISN_C, ISN_S);
        t.process(&seg(C, S, ISN_C + 1, ISN_S + 1, A, b"abc"), ms(3), &mut r);
        // A new-ISN SYN while the connection is live (its FIN never reached the mirror,
        // or an attacker tries to desynchronise us): nothing changes yet.
        let c2 = 0x4000_0000;
        t.process(&seg(C, S, c2, 0, TcpFlags::SYN, b""), ms(4), &mut r);
        t.process(&seg(C, S, ISN_C + 4, ISN_S + 1, A, b"def"), ms(5), &mut r);
        assert!(r.closes().is_empty());
        assert_eq!(r.stream(Direction::ClientToServer), b"abcdef");
        // The server answers the new SYN: the old connection is over.
        let s2 = 0x7000_0000;
        t.process(
            &seg(S, C, s2, c2 + 1, TcpFlags::SYN | A, b""),
            ms(6),
            &mut r,
        );
        assert_eq!(r.closes(), vec![CloseReason::Reused]);
        t.process(&seg(C, S, c2 + 1, s2 + 1, A, b"NEW"), ms(7), &mut r);
        assert_eq!(r.stream(Direction::ClientToServer), b"abcdefNEW");
        assert_eq!(
            r.events.last(),
            Some(&Event::Data(Direction::ClientToServer, b"NEW".to_vec()))
        );
        let s = t.stats();
        assert_eq!(
            (s.flows_created, s.flows_reused, s.reuse_syns_held),
            (2, 1, 1)
        );
    }

    #[test]
    fn unconfirmed_syn_on_a_live_flow_changes_nothing() {
        let mut t = FlowTable::new(ReassemblyConfig::default());
        let mut r = Recorder::default();
        handshake(&mut t, &mut r, ISN_C, ISN_S);
        for i in 0..10u32 {
            // Forged SYNs with arbitrary numbers, and a SYN-ACK acknowledging none of them.
            t.process(
                &seg(C, S, 0x1234_0000 + i, 0, TcpFlags::SYN, b""),
                ms(3),
                &mut r,
            );
        }
        t.process(
            &seg(S, C, 0x5555, 0x9999, TcpFlags::SYN | A, b""),
            ms(4),
            &mut r,
        );
        exchange(&mut t, &mut r, ISN_C, ISN_S, 5);
        t.advance(ms(2000), &mut r);
        assert_eq!(r.closes(), vec![CloseReason::Fin]);
        assert_eq!(r.stream(Direction::ClientToServer), b"GET /a");
        assert_eq!(r.stream(Direction::ServerToClient), b"200 a");
        let s = t.stats();
        assert_eq!(
            (s.flows_created, s.flows_reused, s.reuse_syns_held),
            (1, 0, 10)
        );
    }

    proptest::proptest! {
        /// Any delivery order of a stream's segments (each possibly duplicated) reassembles
        /// to the original bytes when nothing is lost.
        #[test]
        fn reorder_and_duplicates_reassemble(
            data in proptest::collection::vec(proptest::num::u8::ANY, 1..2000),
            cuts in proptest::collection::vec(1usize..200, 1..40),
            order_seed in proptest::num::u64::ANY,
            isn in proptest::num::u32::ANY,
        ) {
            let mut segs = Vec::new();
            let mut pos = 0;
            for c in cuts.iter().cycle() {
                if pos >= data.len() { break; }
                let end = (pos + c).min(data.len());
                segs.push((pos, end));
                pos = end;
            }
            // Deterministic shuffle with duplicates.
            let mut rng = order_seed;
            let mut order: Vec<(usize, usize)> = segs.clone();
            for i in (1..order.len()).rev() {
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                order.swap(i, (rng >> 33) as usize % (i + 1));
            }
            if let Some(d) = segs.first() { order.push(*d); }
            // Room for every segment: hitting the per-direction segment cap (2000 one-byte
            // segments can) rightly declares a hole lost, which is not what this tests.
            let mut t = FlowTable::new(ReassemblyConfig {
                max_ooo_segments_per_direction: 4096,
                ..ReassemblyConfig::default()
            });
            let mut r = Recorder::default();
            handshake(&mut t, &mut r, isn, ISN_S);
            for (i, (a, b)) in order.iter().enumerate() {
                let s = seg(C, S, isn.wrapping_add(1).wrapping_add(*a as u32), ISN_S + 1, A, &data[*a..*b]);
                t.process(&s, ms(3 + i as u64 / 100), &mut r);
            }
            t.flush_all(&mut r);
            proptest::prop_assert_eq!(r.stream(Direction::ClientToServer), data);
        }

        /// Arbitrary segments never panic and never exceed the buffer cap.
        #[test]
        fn arbitrary_segments_are_safe(
            segs in proptest::collection::vec(
                (proptest::num::u32::ANY, proptest::num::u32::ANY, proptest::num::u8::ANY,
                 proptest::collection::vec(proptest::num::u8::ANY, 0..64), proptest::bool::ANY, 0u32..100),
                1..60),
        ) {
            let cfg = ReassemblyConfig { max_buffered_bytes: 512, max_ooo_bytes_per_direction: 256, ..Default::default() };
            let mut t = FlowTable::new(cfg);
            let mut r = Recorder::default();
            for (i, (seq, ack, flags, payload, fwd, extra)) in segs.iter().enumerate() {
                let (a, b) = if *fwd { (C, S) } else { (S, C) };
                let mut s = seg(a, b, *seq, *ack, *flags, payload);
                s.wire_payload_len = payload.len() as u32 + extra;
                t.process(&s, ms(i as u64 * 50), &mut r);
                proptest::prop_assert!(t.buffered_bytes() <= 512);
            }
            t.flush_all(&mut r);
            proptest::prop_assert_eq!(t.buffered_bytes(), 0);
        }
    }
}
