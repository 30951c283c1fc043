//! Runtime: threads, sharding, bounded queues, packet clock, shutdown.
//!
//! The only module that wires stages together. A capture thread per input (the files in
//! order, or one per live interface) reads frames and decodes them, then shards TCP segments
//! over the workers by a symmetric flow hash (both directions of a connection, and all its
//! IPv4 fragments once reassembled, land on one worker), copying each payload once into a
//! batch. Workers own their flow table and HTTP state and run reassembly → http inline,
//! filling line buffers that one writer thread writes. Every queue is bounded: in replay a
//! full queue makes the capture thread wait (nothing is lost); in live capture the batch is
//! kept and load is shed by whole connections (a flow-hash range per worker, raised while
//! its queue is full and lowered after calm; counted), so a slow worker never stalls the
//! kernel ring and the connections analysed stay complete. Workers' flow tables are bounded
//! by their shares of the memory budget. Time is packet time:
//! batches carry the capture clock so idle workers still expire flows. With several live
//! interfaces (split taps, one direction each) a worker merges its inputs by packet time
//! (`merge`), bounded by `[capture] split_window_ms` and `split_hold_max_mib`.

mod check;
mod grpc;
mod merge;
mod ordering;
mod reload;
mod shards;

pub use check::{CheckReport, check_rules};
pub use reload::ReloadSources;

use std::hash::BuildHasher;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hdrhistogram::Histogram;
use thin_vec::ThinVec;

use crate::actor::{self, Attribution};
use crate::budget::{Table, Usage};
use crate::capture::{
    self, CaptureError, CaptureStats, FileEnd, Frame, Progress, SplitStats, Timestamp,
};
use crate::config::Config;
use crate::decode::{Decoded, Decoder, LinkType, TcpFlags, TcpSegment, TunnelId};
use crate::detect::{
    Alert, Event, LoginConfig, login_route_username, object_number, request_objects_judged,
    returned_from_scan,
};
use crate::http::{Dir, HttpConfig, HttpConn, HttpStats, Transaction, header};
use crate::output::webhook::Webhooks;
use crate::output::{QueueStats, ReloadStats, Resources, Summary, path_of, write_transaction};
use crate::reassembly::{
    CloseReason, ConnInfo, Direction, FlowBudget, FlowKey, FlowTable, ReassemblyStats,
    StreamHandler,
};
use crate::resources::{Role, ThreadCpu, Usage as ProcessUsage};
use crate::rules::RuleSet;
use crate::telemetry::metrics::{
    CaptureSnapshot, Hub, MemorySource, PUBLISH_EVERY, WorkerSnapshot,
};
use crate::token::{Attestation, UserId, Verdict, Verifier};

/// Segments per batch handed to a worker.
const BATCH_SEGMENTS: usize = 512;
/// Payload bytes per batch before it is sent early.
const BATCH_BYTES: usize = 512 * 1024;
/// Packet time between heartbeats: every worker is sent its batch, full or not, with the
/// capture clock at least this often, so that on a quiet port a transaction, and every
/// worker's watermark, reach the detect thread within it. It was 1 s, which a live alert
/// waited on top of the ordering lateness (1.9 s from an alert's last request to its
/// decision in `tests/enforce_nginx.rs`, against 1.0 s with this).
const HEARTBEAT_NANOS: u64 = 250_000_000;
/// Transaction line buffer size at which a worker hands it to the writer.
const LINES_FLUSH_BYTES: usize = 256 * 1024;

/// Load shedding (live capture): the flow-hash space is cut into this many buckets; a
/// worker's shed level is how many of them it sheds.
const SHED_STEPS: u8 = 64;
/// Most a worker's batch may grow while its queue is full (segments, payload bytes) before
/// connections already analysed are shed too.
const BACKLOG_SEGMENTS: usize = 8 * BATCH_SEGMENTS;
const BACKLOG_BYTES: usize = 8 * BATCH_BYTES;
/// Least wall time between two raises of a worker's shed level.
const SHED_RAISE_EVERY: Duration = Duration::from_millis(5);
/// Wall time a worker's queue must have had room before its level is lowered a step (and
/// between two steps down): levels fall from full shedding to none in about 6 s.
const SHED_CALM: Duration = Duration::from_millis(100);
/// Shed connections a capture thread remembers (16 bytes each and the table's slack);
/// past it, shedding falls back to the hash range alone.
const SHED_FLOWS_MAX: usize = 1 << 18;

/// Where results go.
#[derive(Default)]
pub struct Outputs {
    pub transactions: Option<Box<dyn Write + Send>>,
    pub alerts: AlertSink,
    /// Where threads publish their counters for `/metrics`.
    pub metrics: Arc<Hub>,
    /// Alert receivers (`[[webhook]]`); started and finished by the caller.
    pub webhooks: Option<Arc<Webhooks>>,
    /// Alerts become decisions (`run` with `[enforce]`; `replay --decisions-out`).
    pub decisions: Option<DecisionSink>,
    /// A sensor (`[export]`): the detect shards are partitions of a NATS JetStream stream
    /// (alerts come from the correlators).
    pub export: Option<Box<dyn crate::detect::ShardHost>>,
}

/// Where alerts become decisions, and where each decision made is written (JSON lines).
pub struct DecisionSink {
    pub decider: Arc<crate::enforce::Decider>,
    pub log: Option<Box<dyn Write + Send>>,
}

impl DecisionSink {
    /// Decides on `alerts`: live at wall time, in replay at each alert's packet time (so a
    /// replay gives the same decisions on any machine).
    pub(crate) fn observe(&mut self, alerts: &[Alert], live: bool) -> std::io::Result<()> {
        let made = self.decider.observe_all(alerts, |a| {
            if live {
                crate::enforce::unix_now()
            } else {
                a.ts.0 / 1_000_000_000
            }
        });
        if let Some(w) = &mut self.log
            && !made.is_empty()
        {
            for d in &made {
                serde_json::to_writer(&mut *w, &crate::enforce::decisions::Shown(d))?;
                w.write_all(b"\n")?;
            }
            w.flush()?;
        }
        Ok(())
    }
}

/// Where alerts go.
#[derive(Default)]
pub enum AlertSink {
    /// Not written (detection still runs and is counted).
    #[default]
    Discard,
    /// JSON lines.
    Writer(Box<dyn Write + Send>),
    /// Kept in memory (rule tests).
    Collect(Arc<Mutex<Vec<Alert>>>),
}

/// What judges each request; swapped whole when the config is reloaded.
pub struct Judges {
    pub verifier: Arc<Verifier>,
    pub attribution: Attribution,
}

impl Judges {
    pub fn new(cfg: &Config) -> Result<Judges, RunError> {
        let attribution = cfg
            .token
            .identity
            .as_ref()
            .map(|id| Attribution {
                client_ip_headers: id.client_ip_headers.clone(),
                trusted_proxies: id.trusted_proxies.clone(),
            })
            .unwrap_or_default();
        let cache_bytes = cfg.runtime.budget.share(Table::Tokens) as u64;
        Ok(Judges {
            verifier: Arc::new(Verifier::with_cache_bytes(cfg.token.clone(), cache_bytes)?),
            attribution,
        })
    }
}

/// State shared by every thread of a run and replaced by reloads.
pub struct Shared {
    pub judges: ArcSwap<Judges>,
    pub rules: ArcSwap<RuleSet>,
    pub reloads: Mutex<ReloadStats>,
    pub hub: Arc<Hub>,
}

impl Shared {
    pub fn new(cfg: &Config, rules: RuleSet, hub: Arc<Hub>) -> Result<Arc<Shared>, RunError> {
        let shared = Arc::new(Shared {
            judges: ArcSwap::from_pointee(Judges::new(cfg)?),
            rules: ArcSwap::from_pointee(rules),
            reloads: Mutex::new(ReloadStats::default()),
            hub,
        });
        // Weak: the hub outlives a run (`replay --hold-metrics`) without keeping it alive.
        let weak = Arc::downgrade(&shared);
        shared.hub.set_token_source(Box::new(move || {
            weak.upgrade()
                .map(|s| s.judges.load().verifier.stats())
                .unwrap_or_default()
        }));
        let weak = Arc::downgrade(&shared);
        shared.hub.set_reload_source(Box::new(move || {
            weak.upgrade()
                .and_then(|s| s.reloads.lock().ok().map(|r| r.clone()))
                .unwrap_or_default()
        }));
        Ok(shared)
    }
}

/// A segment's header fields; its payload lives in the batch arena.
#[derive(Clone, Copy)]
struct SegMeta {
    ts: Timestamp,
    tunnel: TunnelId,
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    ack: u32,
    flags: TcpFlags,
    window: u16,
    wire_payload_len: u32,
    start: u32,
    len: u32,
    /// Not a segment: load shedding cut this connection here (live capture), and the
    /// worker ends its analysis ([`FlowTable::cut`]).
    cut: bool,
}

#[derive(Default)]
struct Batch {
    segs: Vec<SegMeta>,
    arena: Vec<u8>,
    /// Capture clock when the batch was sent.
    now: Timestamp,
    /// Wall clock when its first segment arrived: the start of processing latency.
    created: Option<Instant>,
    /// Which capture thread filled it (split taps merge them by packet time).
    source: usize,
}

/// Processed batches handed back from workers to capture threads, so the arena and segment
/// buffers are reused rather than allocated (and their pages faulted in) per batch. Bounded:
/// past the cap a returned batch is simply freed.
#[derive(Default)]
struct BatchPool {
    free: std::sync::Mutex<Vec<Batch>>,
}

/// Batches kept for reuse at most (each holds up to `BATCH_BYTES` of arena).
const POOL_BATCHES: usize = 16;

impl BatchPool {
    fn take(&self) -> Batch {
        self.free
            .lock()
            .ok()
            .and_then(|mut f| f.pop())
            .unwrap_or_default()
    }

    fn give(&self, mut b: Batch) {
        b.segs.clear();
        b.arena.clear();
        b.created = None;
        if let Ok(mut f) = self.free.lock()
            && f.len() < POOL_BATCHES
        {
            f.push(b);
        }
    }
}

/// Fatal run errors (config or inputs); traffic problems are counted, never errors.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
    #[error("token verifier: {0}")]
    Token(#[from] crate::token::TokenError),
    #[error("a worker thread failed: {0}")]
    Worker(String),
    #[error("enforcement endpoint {addr}: {source}")]
    Enforce {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// What the capture side did.
#[derive(Default)]
struct CaptureSide {
    capture: CaptureStats,
    decode: crate::decode::DecodeStats,
    queue: QueueStats,
    first: Option<Timestamp>,
    last: Option<Timestamp>,
}

/// Shards segments over workers; one per capture thread.
struct Dispatcher {
    decoder: Decoder,
    hasher: foldhash::fast::FixedState,
    batches: Vec<Batch>,
    senders: Vec<SyncSender<Batch>>,
    /// Where workers return processed batches for reuse.
    pool: Arc<BatchPool>,
    /// Live capture drops a batch instead of blocking.
    lossy: bool,
    /// Which capture thread this is, for metrics.
    index: usize,
    hub: Arc<Hub>,
    progress: Progress,
    last_publish: Instant,
    frames_since_check: u32,
    now: Timestamp,
    last_heartbeat: Timestamp,
    /// Packet time between clock heartbeats: `HEARTBEAT_NANOS`, shorter with split taps so
    /// workers learn every input's clock well within the merge window.
    heartbeat_nanos: u64,
    /// Live capture: the wall-clock instant the last packet arrived, so an idle port's
    /// clock still moves (held events and follow-up alerts fall due); replay never uses it.
    last_arrival: Option<(Timestamp, Instant)>,
    /// How long the kernel may hold a packet before handing it over (a ring block's
    /// timeout): an idle input's clock stays that far behind the wall clock, so packets
    /// still in a partly filled block are not behind the clock it reported.
    idle_lag: Duration,
    /// Live capture: load shedding by connection.
    shedding: Shedding,
    side: CaptureSide,
}

/// Load shedding of one capture thread (live capture; replay waits instead).
struct Shedding {
    /// Per worker.
    shed: Vec<Shedder>,
    /// Connections being shed (by flow hash), with the packet time last seen: every later
    /// segment of theirs is shed too, so they leave whole and the others stay whole.
    flows: std::collections::HashMap<u64, Timestamp, foldhash::fast::RandomState>,
    /// A shed connection unseen this long is forgotten (`[reassembly] idle_timeout`).
    idle: Duration,
}

impl Shedding {
    /// Whether this segment of worker `w` is shed: its connection is being shed, or it
    /// opens (or belongs to) one in the worker's shed range. Counted in `q`.
    fn segment(
        &mut self,
        w: usize,
        h: u64,
        flags: TcpFlags,
        ts: Timestamp,
        q: &mut QueueStats,
    ) -> Shed {
        let Some(s) = self.shed.get(w).copied() else {
            return Shed::No;
        };
        if s.level == 0 && self.flows.is_empty() {
            return Shed::No;
        }
        let bucket = shed_bucket(h);
        // A SYN opens a connection (or reuses the addresses of an old one): judged anew.
        let opens = flags.has(TcpFlags::SYN);
        if let Some(last) = self.flows.get_mut(&h) {
            if !(opens && bucket >= s.level) {
                *last = ts;
                q.shed_packets += 1;
                return Shed::Yes;
            }
            self.flows.remove(&h);
        }
        let remembered = self.flows.len() < SHED_FLOWS_MAX;
        // Without room to remember shed connections, the range alone decides.
        let cut = if remembered { s.cut } else { s.level };
        if bucket < cut || (opens && bucket < s.level) {
            q.shed_packets += 1;
            if remembered {
                self.flows.insert(h, ts);
                q.shed_flows += 1;
                // A connection shed past its opening may be under analysis: its worker
                // is told to end it there, so it reports no half transactions.
                if !opens {
                    return Shed::Cut;
                }
            } else if opens {
                q.shed_flows += 1;
            }
            return Shed::Yes;
        }
        Shed::No
    }

    /// Lowers levels after calm; forgets shed connections unseen for the idle timeout.
    fn relax(&mut self, now: Timestamp) {
        for s in &mut self.shed {
            s.relax();
        }
        let idle = self.idle;
        if !self.flows.is_empty() {
            self.flows.retain(|_, last| last.saturating_add(idle) > now);
        }
    }

    /// Highest current and peak level over the workers, as shares of the hash space.
    fn levels(&self) -> (f64, f64) {
        let top = |f: fn(&Shedder) -> u8| {
            f64::from(self.shed.iter().map(f).max().unwrap_or(0)) / f64::from(SHED_STEPS)
        };
        (top(|s| s.level), top(|s| s.peak))
    }
}

/// What load shedding does with a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shed {
    /// Analysed.
    No,
    /// Shed.
    Yes,
    /// Shed, and the first shed of a connection that was not opening: its worker gets a
    /// cut marker in the segment's place.
    Cut,
}

/// One worker's load shedding, driven by its queue: raised while the queue refuses
/// batches, lowered step by step once it has had room for a while.
#[derive(Clone, Copy, Debug)]
struct Shedder {
    /// New connections (a SYN) hashing into buckets below it are shed.
    level: u8,
    /// Every segment hashing below it is shed, connections already analysed included
    /// (raised only when the held batch reaches the backlog cap); at most `level`.
    cut: u8,
    peak: u8,
    /// When the queue last refused a batch.
    last_full: Option<Instant>,
    /// When a level last changed.
    last_change: Instant,
}

impl Shedder {
    fn new() -> Shedder {
        Shedder {
            level: 0,
            cut: 0,
            peak: 0,
            last_full: None,
            last_change: Instant::now(),
        }
    }

    fn raise(&mut self) {
        if self.level < SHED_STEPS && self.last_change.elapsed() >= SHED_RAISE_EVERY {
            self.level += 1;
            self.peak = self.peak.max(self.level);
            self.last_change = Instant::now();
        }
    }

    /// One step down after `SHED_CALM` with room in the queue.
    fn relax(&mut self) {
        if self.level > 0
            && self.last_full.is_none_or(|t| t.elapsed() >= SHED_CALM)
            && self.last_change.elapsed() >= SHED_CALM
        {
            self.level -= 1;
            self.cut = self.cut.min(self.level);
            self.last_change = Instant::now();
        }
    }
}

/// The bucket of a flow hash in the shed range (high bits: the worker comes from the
/// hash modulo the worker count).
fn shed_bucket(h: u64) -> u8 {
    ((h >> 40) % u64::from(SHED_STEPS)) as u8
}

impl Dispatcher {
    fn new(
        cfg: &Config,
        senders: Vec<SyncSender<Batch>>,
        pool: Arc<BatchPool>,
        lossy: bool,
        index: usize,
        hub: Arc<Hub>,
        progress: Progress,
    ) -> Self {
        let n = senders.len();
        Dispatcher {
            decoder: Decoder::new(cfg.decode.clone()),
            // A fixed seed keeps worker assignment, and so per-worker connection ids,
            // identical between runs; flow tables inside workers use random seeds.
            hasher: foldhash::fast::FixedState::with_seed(SHARD_SEED),
            batches: (0..n).map(|_| Batch::default()).collect(),
            senders,
            pool,
            lossy,
            index,
            hub,
            progress,
            last_publish: Instant::now(),
            frames_since_check: 0,
            now: Timestamp::ZERO,
            last_heartbeat: Timestamp::ZERO,
            heartbeat_nanos: HEARTBEAT_NANOS,
            last_arrival: None,
            idle_lag: Duration::ZERO,
            shedding: Shedding {
                shed: vec![Shedder::new(); n],
                flows: Default::default(),
                idle: cfg.reassembly.idle_timeout,
            },
            side: CaptureSide::default(),
        }
    }

    /// The flow hash of a held segment (as `frame` computed it).
    fn hash_of(&self, m: &SegMeta) -> u64 {
        self.hasher.hash_one(FlowKey::new(m.tunnel, m.src, m.dst))
    }

    /// Worker `w`'s queue refused its batch, which is kept (and keeps growing). Past a
    /// full batch its shed level rises; at the backlog cap connections already analysed
    /// are cut too, from the top of the shed range, and their held segments dropped, until
    /// the backlog is back to half the cap.
    fn overloaded(&mut self, w: usize) {
        let Some(s) = self.shedding.shed.get_mut(w) else {
            return;
        };
        s.last_full = Some(Instant::now());
        let b = &self.batches[w];
        if b.segs.len() < BATCH_SEGMENTS && b.arena.len() < BATCH_BYTES {
            // A heartbeat or a partial batch: it waits for room.
            return;
        }
        s.raise();
        let over = |b: &Batch| b.segs.len() >= BACKLOG_SEGMENTS || b.arena.len() >= BACKLOG_BYTES;
        let half =
            |b: &Batch| b.segs.len() <= BACKLOG_SEGMENTS / 2 && b.arena.len() <= BACKLOG_BYTES / 2;
        if !over(b) {
            return;
        }
        while !half(&self.batches[w]) {
            let Some(s) = self.shedding.shed.get_mut(w).filter(|s| s.cut < SHED_STEPS) else {
                break;
            };
            s.cut += 1;
            self.side.queue.shed_cuts += 1;
            let Some(s) = self.shedding.shed.get_mut(w) else {
                break;
            };
            s.level = s.level.max(s.cut);
            s.peak = s.peak.max(s.level);
            s.last_change = Instant::now();
            self.compact(w);
        }
    }

    /// Drops the held segments of worker `w` that are now shed, remembering their
    /// connections; the rest keep their order.
    fn compact(&mut self, w: usize) {
        let mut b = std::mem::take(&mut self.batches[w]);
        let mut kept = 0;
        let mut write = 0usize;
        for i in 0..b.segs.len() {
            let m = b.segs[i];
            // A cut marker, already or made now, keeps its place and carries no bytes.
            let cut = m.cut || {
                let h = self.hash_of(&m);
                match self
                    .shedding
                    .segment(w, h, m.flags, m.ts, &mut self.side.queue)
                {
                    Shed::No => false,
                    Shed::Yes => continue,
                    Shed::Cut => true,
                }
            };
            let start = m.start as usize;
            let len = if cut { 0 } else { m.len as usize };
            b.arena.copy_within(start..start + len, write);
            b.segs[kept] = SegMeta {
                start: write as u32,
                len: len as u32,
                cut,
                ..m
            };
            write += len;
            kept += 1;
        }
        b.segs.truncate(kept);
        b.arena.truncate(write);
        self.batches[w] = b;
    }

    fn frame(&mut self, f: Frame<'_>) {
        let Some(link) = LinkType::from_linktype(f.linktype) else {
            self.side.capture.unsupported_linktype_frames += 1;
            return;
        };
        if f.ts > self.now {
            self.now = f.ts;
        }
        if self.lossy {
            self.last_arrival = Some((self.now, Instant::now()));
        }
        self.side.first.get_or_insert(f.ts);
        self.side.last = Some(self.now);
        let Dispatcher {
            decoder,
            hasher,
            batches,
            lossy,
            shedding,
            side,
            ..
        } = self;
        let full = match decoder.decode(link, f.data, f.ts) {
            Ok(Decoded::Tcp(seg)) => 'seg: {
                // The flow's hash picks its worker and, under overload, whether it is
                // shed; one worker and no shedding need none (a hash a packet).
                let h = if batches.len() > 1 || *lossy {
                    hasher.hash_one(FlowKey::new(seg.tunnel, seg.src, seg.dst))
                } else {
                    0
                };
                let w = (h % batches.len() as u64) as usize;
                let shed = if *lossy {
                    shedding.segment(w, h, seg.flags, f.ts, &mut side.queue)
                } else {
                    Shed::No
                };
                if shed == Shed::Yes {
                    break 'seg None;
                }
                let b = &mut batches[w];
                if b.segs.is_empty() {
                    b.created = Some(Instant::now());
                }
                let start = b.arena.len() as u32;
                let cut = shed == Shed::Cut;
                if !cut {
                    b.arena.extend_from_slice(seg.payload);
                }
                b.segs.push(SegMeta {
                    start,
                    len: if cut { 0 } else { seg.payload.len() as u32 },
                    cut,
                    ..copy_meta(&seg, f.ts)
                });
                (b.segs.len() >= BATCH_SEGMENTS || b.arena.len() >= BATCH_BYTES).then_some(w)
            }
            Ok(_) | Err(_) => None,
        };
        if let Some(w) = full {
            self.send(w);
        }
        self.maybe_heartbeat();
        self.maybe_publish(false);
    }

    /// Split taps: this capture thread's clock starts from the wall clock (the kernel
    /// stamps live packets with it), so until its port delivers a first packet its idle
    /// clock already follows the wall clock, less the delivery lag. The workers' merge
    /// then waits for a port that has been silent so far as for one that has gone idle:
    /// at most the delivery lag. Without it a silent port was not waited for at all, and
    /// the first response it carried (a SYN-ACK in a block the kernel hands over after its
    /// twin's) arrived behind requests already released.
    fn start_clock_at_wall(&mut self) {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        // `idle` moves an arrival's clock by the time since, less the lag, but never back
        // behind the arrival itself (its packet was delivered). No packet was: the lag is
        // taken off here, with the instant moved back to match, so the clock is the wall
        // clock less the lag from the start.
        let wall = wall.saturating_sub(self.idle_lag);
        let ts = Timestamp::from_secs_nanos(wall.as_secs(), u64::from(wall.subsec_nanos()));
        let now = Instant::now();
        self.last_arrival = Some(match now.checked_sub(self.idle_lag) {
            Some(then) => (ts, then),
            None => (ts, now),
        });
    }

    /// Live capture with no packets: packet time follows the wall clock from the last
    /// kernel timestamp, so idle workers expire flows and held events are released.
    fn idle(&mut self) {
        if let Some((ts, at)) = self.last_arrival {
            let moved = ts.saturating_add(at.elapsed().saturating_sub(self.idle_lag));
            if moved > self.now {
                self.now = moved;
            }
        }
        if self.lossy {
            self.relax();
        }
        self.maybe_heartbeat();
    }

    /// Copies this thread's counters to the metrics hub, at most every `PUBLISH_EVERY`.
    fn maybe_publish(&mut self, force: bool) {
        self.frames_since_check += 1;
        if self.lossy && self.frames_since_check.is_multiple_of(64) {
            self.relax();
        }
        if !force && self.frames_since_check < 1024 {
            return;
        }
        self.frames_since_check = 0;
        if force || self.last_publish.elapsed() >= PUBLISH_EVERY {
            self.last_publish = Instant::now();
            // Files and interfaces merge their counters when they end; until then the
            // shared progress counters are the live figures.
            let mut capture = self.side.capture.clone();
            let p = &self.progress;
            let live = |a: &AtomicU64, merged: u64| a.load(Ordering::Relaxed).max(merged);
            capture.frames = live(&p.frames, capture.frames);
            capture.bytes = live(&p.frame_bytes, capture.bytes);
            capture.kernel_received = live(&p.kernel_received, capture.kernel_received);
            capture.kernel_dropped = live(&p.kernel_dropped, capture.kernel_dropped);
            capture.interface_dropped = live(&p.interface_dropped, capture.interface_dropped);
            self.hub.publish_capture(
                self.index,
                &CaptureSnapshot {
                    capture,
                    decode: self.decoder.stats().clone(),
                    queue: self.side.queue.clone(),
                },
            );
        }
    }

    fn maybe_heartbeat(&mut self) {
        if self.now.0.saturating_sub(self.last_heartbeat.0) >= self.heartbeat_nanos {
            self.last_heartbeat = self.now;
            for w in 0..self.batches.len() {
                self.send(w);
            }
        }
    }

    fn send(&mut self, w: usize) {
        if self.lossy {
            self.offer(w);
            return;
        }
        let mut batch = std::mem::replace(&mut self.batches[w], self.pool.take());
        batch.now = self.now;
        batch.source = self.index;
        self.batches[w].segs.reserve(BATCH_SEGMENTS);
        self.side.queue.batches += 1;
        match self.senders[w].try_send(batch) {
            Ok(()) => {}
            Err(TrySendError::Full(b)) => {
                self.side.queue.full_waits += 1;
                let _ = self.senders[w].send(b);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Live capture: offers worker `w` its batch without waiting. A full queue keeps the
    /// batch (it goes first when there is room, so no segment is lost or reordered) and
    /// sheds load by connection ([`Dispatcher::overloaded`]); a slow worker never stalls
    /// the kernel ring.
    fn offer(&mut self, w: usize) {
        let Some(slot) = self.batches.get_mut(w) else {
            return;
        };
        let mut batch = std::mem::take(slot);
        batch.now = self.now;
        batch.source = self.index;
        match self.senders[w].try_send(batch) {
            Ok(()) => {
                self.side.queue.batches += 1;
                let fresh = &mut self.batches[w];
                *fresh = self.pool.take();
                fresh.segs.reserve(BATCH_SEGMENTS);
            }
            Err(TrySendError::Full(b)) => {
                self.batches[w] = b;
                self.overloaded(w);
            }
            Err(TrySendError::Disconnected(b)) => {
                // The worker is gone (shutdown): what it would have had is counted.
                self.side.queue.dropped_batches += 1;
                self.side.queue.dropped_segments += b.segs.len() as u64;
                self.pool.give(b);
            }
        }
    }

    /// Live capture, now and then: retries batches a full queue refused, lowers shed levels
    /// after calm, forgets idle shed connections.
    fn relax(&mut self) {
        for w in 0..self.batches.len() {
            let refused = self.shedding.shed[w].last_full.is_some()
                && (self.batches[w].segs.len() >= BATCH_SEGMENTS
                    || self.batches[w].arena.len() >= BATCH_BYTES);
            if refused {
                self.offer(w);
            }
        }
        self.shedding.relax(self.now);
        let (level, peak) = self.shedding.levels();
        self.side.queue.shed_level = level;
        self.side.queue.shed_level_peak = peak;
    }

    fn finish(mut self) -> CaptureSide {
        if self.lossy {
            self.relax();
        }
        // The end: what is held goes to the workers whatever the wait (they drain).
        for w in 0..self.batches.len() {
            let mut batch = std::mem::take(&mut self.batches[w]);
            batch.now = self.now;
            batch.source = self.index;
            self.side.queue.batches += 1;
            if let Err(e) = self.senders[w].send(batch) {
                self.side.queue.dropped_batches += 1;
                self.side.queue.dropped_segments += e.0.segs.len() as u64;
            }
        }
        self.maybe_publish(true);
        self.side.decode = self.decoder.stats().clone();
        self.side
    }
}

/// Seed for shard assignment. Fixed so a replay assigns connections to the same workers
/// every run; an attacker gains nothing from it (a worker's own table uses a random seed).
const SHARD_SEED: u64 = 0x5eed_5eed_5eed_5eed;

fn copy_meta(seg: &TcpSegment<'_>, ts: Timestamp) -> SegMeta {
    SegMeta {
        ts,
        tunnel: seg.tunnel,
        src: seg.src,
        dst: seg.dst,
        seq: seg.seq,
        ack: seg.ack,
        flags: seg.flags,
        window: seg.window,
        wire_payload_len: seg.wire_payload_len,
        start: 0,
        len: 0,
        cut: false,
    }
}

/// Per-connection state: the HTTP parser and how many transactions it has produced (the
/// per-connection sequence number orders events of pipelined requests).
struct ConnState {
    http: HttpConn,
    seq: u64,
    tls: TlsProbe,
}

/// Whether a connection is TLS, learnt from its first bytes.
enum TlsProbe {
    /// No byte seen yet.
    Unknown,
    /// A handshake being read (the first direction's bytes, up to `tls::MAX_HELLO_BYTES`).
    Reading(Direction, Vec<u8>),
    /// TLS: encrypted from here on, nothing for HTTP.
    Tls,
    /// Not TLS (or TLS reading is off): HTTP.
    Plain,
}

/// The per-worker end of the pipeline: reassembled streams → HTTP → token → records and
/// detection events.
struct HttpHandler {
    cfg: HttpConfig,
    shared: Arc<Shared>,
    txs: Vec<Transaction>,
    stats: HttpStats,
    lines: Vec<u8>,
    written: u64,
    write_lines: bool,
    events: Vec<ordering::Ordered>,
    login: LoginConfig,
    scan_responses: bool,
    /// Response scans by body: a body met again is not scanned again.
    scans: crate::detect::scan_memo::ScanMemo,
    /// Edge headers naming the client's TLS fingerprint and viewer address (`[tls]`).
    tls: Arc<crate::detect::fingerprint::TlsConfig>,
    /// When the batch being processed started its way through the pipeline.
    batch_created: Option<Instant>,
    /// Packet-to-transaction latency, microseconds.
    latency_us: Option<Histogram<u64>>,
    /// Routes and hosts, shared rather than allocated per transaction.
    names: crate::intern::Interner,
    /// Templated routes seen, with whether each is a login route.
    routes: RouteNames,
    /// The route being templated.
    route_buf: String,
    /// gRPC message caps and descriptor sets (`[grpc]`).
    grpc: crate::grpc::GrpcConfig,
}

impl HttpHandler {
    /// `scans`: its use of the memo of response scans; `decodes`: the memo of content
    /// decodings the calling thread uses (the handler runs on the thread that makes it),
    /// and whether this thread reports its usage.
    fn new(
        cfg: &Config,
        shared: Arc<Shared>,
        write_lines: bool,
        scans: crate::detect::scan_memo::ScanMemo,
        decodes: (Arc<crate::http::DecodeMemo>, bool),
    ) -> HttpHandler {
        crate::http::set_decode_memo(decodes.0, decodes.1);
        HttpHandler {
            // Responses scanned through the memo keep their coded bytes until the scan: a
            // body met before is then neither decoded nor scanned again.
            cfg: HttpConfig {
                defer_response_decoding: cfg.detect.scan_responses,
                ..cfg.http.clone()
            },
            shared,
            txs: Vec::new(),
            stats: HttpStats::default(),
            lines: Vec::with_capacity(LINES_FLUSH_BYTES + 4096),
            written: 0,
            write_lines,
            events: Vec::new(),
            login: cfg.detect.login.clone(),
            scan_responses: cfg.detect.scan_responses,
            scans,
            tls: Arc::new(cfg.detect.tls.clone()),
            batch_created: None,
            // 1 µs to 60 s at 2 significant digits.
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 2).ok(),
            names: Default::default(),
            routes: RouteNames::default(),
            route_buf: String::new(),
            grpc: cfg.grpc.clone(),
        }
    }

    /// TLS detection on a connection's first bytes; true when the bytes were TLS (and
    /// must not reach the HTTP parser).
    fn tls_probe(
        &mut self,
        st: &mut ConnState,
        conn: &ConnInfo,
        dir: Direction,
        bytes: &[u8],
        ts: Timestamp,
    ) -> bool {
        if matches!(st.tls, TlsProbe::Unknown) {
            if bytes.is_empty() {
                return false;
            }
            if !crate::tls::looks_like_tls(bytes) {
                st.tls = TlsProbe::Plain;
                return false;
            }
            self.stats.tls_connections += 1;
            st.tls = TlsProbe::Reading(dir, Vec::new());
        }
        let TlsProbe::Reading(first, buf) = &mut st.tls else {
            return matches!(st.tls, TlsProbe::Tls);
        };
        if *first != dir {
            // The other side answered before the hello was whole: it never will be.
            *self.stats.tls_errors.entry("truncated").or_default() += 1;
            st.tls = TlsProbe::Tls;
            return true;
        }
        let room = crate::tls::MAX_HELLO_BYTES.saturating_sub(buf.len());
        buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
        let from_client = *first == Direction::ClientToServer;
        match crate::tls::client_hello(buf) {
            Ok(None) if buf.len() < crate::tls::MAX_HELLO_BYTES => return true,
            Ok(None) => {
                *self.stats.tls_errors.entry("too_large").or_default() += 1;
            }
            Err(e) => {
                *self.stats.tls_errors.entry(e.as_str()).or_default() += 1;
            }
            Ok(Some(h)) => {
                self.stats.tls_hellos += 1;
                let (client, server) = if from_client {
                    (conn.client, conn.server)
                } else {
                    (conn.server, conn.client)
                };
                let ja4 = crate::tls::ja4(&h);
                if self.write_lines {
                    let (ja3, ja3_hash) = crate::tls::ja3(&h);
                    let rec = serde_json::json!({
                        "ts": ts.rfc3339(),
                        "record": "tls",
                        "client": {"ip": client.ip().to_string(), "port": client.port()},
                        "server": {"ip": server.ip().to_string(), "port": server.port()},
                        "sni": h.sni,
                        "alpn": h.alpn,
                        "ja4": ja4,
                        "ja3": ja3,
                        "ja3_hash": ja3_hash,
                    });
                    if serde_json::to_writer(&mut self.lines, &rec).is_ok() {
                        self.lines.push(b'\n');
                    }
                }
                st.seq += 1;
                self.events.push(ordering::Ordered {
                    at: ts,
                    ts,
                    client,
                    server,
                    seq: st.seq,
                    bytes: 64 + ja4.len(),
                    worker: 0,
                    item: ordering::Item::Hello(Arc::from(ja4)),
                });
            }
        }
        st.tls = TlsProbe::Tls;
        true
    }

    fn drain(&mut self, st: &mut ConnState, conn: &ConnInfo, at: Timestamp) {
        let swapped = st.http.swapped();
        let judges = self.shared.judges.load();
        let rules = self.shared.rules.load();
        let latency = self.batch_created.map(|c| c.elapsed().as_micros() as u64);
        // Routes are templated into one buffer, reused (interned where an event keeps one).
        let mut route_buf = std::mem::take(&mut self.route_buf);
        let mut txs = std::mem::take(&mut self.txs);
        // By reference, cleared after: a transaction is some 400 bytes, and moving each out
        // of the list was a copy of it per request.
        for tx in txs.iter_mut() {
            self.written += 1;
            let call = grpc::call(tx, &self.cfg, &self.grpc, &mut self.stats);
            st.seq += 1;
            if let (Some(us), Some(h)) = (latency, self.latency_us.as_mut()) {
                h.saturating_record(us.max(1));
            }
            // Every request is judged by its token, on packet time.
            let (att, user) = match &tx.request {
                Some(req) => {
                    let now = req.ts.as_secs_f64();
                    let mut att = judges.verifier.attest(&req.headers, &req.target, now);
                    // HTTP/2 joined late: the token may be one of the header fields that were
                    // HPACK entries this monitor never saw. Not seeing it is not its absence:
                    // `unverified`, which no rule counts as unattested.
                    if att.verdict == Verdict::Missing
                        && tx.h2.is_some_and(|h| h.unknown_fields > 0)
                    {
                        att.verdict = Verdict::Unverified;
                    }
                    (Some(att), judges.verifier.identify(&req.headers, now))
                }
                None => (None, None),
            };
            let (client, server) = if swapped {
                (conn.server, conn.client)
            } else {
                (conn.client, conn.server)
            };
            // The route, templated once; a template pinned by the rules names it and its
            // parameters.
            let path = tx.request.as_ref().map(|r| path_of(&r.target));
            let ids = path.map(|p| crate::route::route_into(p, &mut route_buf));
            let route = path.map(|_| route_buf.as_str());
            let names = &mut self.names;
            let pinned: Option<Arc<str>> = path.and_then(|path| {
                rules
                    .routes
                    .iter()
                    .find(|p| p.is_match(path))
                    .map(|p| names.name(&p.template))
            });
            // The edge's JA4, read once: the event and the record both carry it.
            let mut ja4 = None;
            let seen = self
                .routes
                .get(names, &self.login, route.unwrap_or_default());
            let ev = event(
                names,
                &judges.attribution,
                &self.login,
                self.scan_responses.then_some(&mut self.scans),
                (&self.cfg, &mut self.stats),
                &self.tls,
                client,
                tx,
                (seen, ids),
                att.as_ref(),
                user.as_ref(),
                call.as_ref(),
            );
            // A coded response the event did not scan (no request) is decoded as the
            // parser would have, for its record and counts.
            if tx.response.as_ref().is_some_and(|r| r.body.coded.is_some()) {
                let before = tx.anomalies;
                tx.decode_deferred(&self.cfg, &mut self.stats);
                count_new_anomalies(before, tx.anomalies, &mut self.stats);
            }
            if let Some(mut ev) = ev {
                if let Some(p) = &pinned {
                    ev.route = Some(p.clone());
                }
                ja4 = ev.ja4.clone();
                self.events.push(ordering::Ordered {
                    at,
                    ts: ev.ts,
                    client,
                    server,
                    seq: st.seq,
                    bytes: ev.bytes(),
                    worker: 0,
                    item: ordering::Item::Event(Arc::new(ev)),
                });
            }
            if self.write_lines {
                write_transaction(
                    &mut self.lines,
                    conn,
                    swapped,
                    tx,
                    att.as_ref(),
                    user.as_ref(),
                    pinned.as_deref().or(route),
                    ja4.as_deref(),
                    call.as_ref().map(|c| crate::output::GrpcRecord {
                        status: c.status,
                        status_name: c.status.map(crate::grpc::status_name),
                        request_messages: c.request_messages,
                        response_messages: c.response_messages,
                    }),
                );
            }
            crate::http::recycle(tx);
        }
        txs.clear();
        self.txs = txs;
        self.route_buf = route_buf;
        self.stats.response_scans = self.scans.hits() + self.scans.misses();
        self.stats.response_scans_memoized = self.scans.hits();
    }
}

fn http_dir(d: Direction) -> Dir {
    match d {
        Direction::ClientToServer => Dir::ToServer,
        Direction::ServerToClient => Dir::ToClient,
    }
}

/// Routes a handler remembers before it starts over.
const MAX_ROUTES: usize = 8192;

/// The templated routes a handler has seen: each one's shared name and whether the login
/// globs (`[detect] login_routes`, a regex set) match it, worked out once per route rather
/// than per transaction. The login configuration is the handler's for its lifetime.
/// Bounded: past [`MAX_ROUTES`] it starts over.
#[derive(Default)]
struct RouteNames {
    seen: std::collections::HashMap<Arc<str>, bool, foldhash::fast::RandomState>,
}

impl RouteNames {
    /// `route`'s shared name and whether it is a login route.
    fn get(
        &mut self,
        names: &mut crate::intern::Interner,
        login: &LoginConfig,
        route: &str,
    ) -> (Arc<str>, bool) {
        if let Some((name, is_login)) = self.seen.get_key_value(route) {
            return (Arc::clone(name), *is_login);
        }
        if self.seen.len() >= MAX_ROUTES {
            self.seen.clear();
        }
        let name = names.name(route);
        let is_login = login.routes.is_match(route);
        self.seen.insert(Arc::clone(&name), is_login);
        (name, is_login)
    }
}

/// A response body's scan through the memo. A body the parser left coded
/// ([`crate::http::Body::coded`]) is looked up by its bytes as sent: met before, it is
/// neither decoded nor scanned, and the decoding's outcome (flags, counts) is recorded as
/// decoding it would have; else it is decoded here (through the memo of decodings), then
/// scanned. `None` when the decoded body is empty, as for an empty body.
fn scan_response(
    memo: &mut crate::detect::scan_memo::ScanMemo,
    r: &mut crate::http::Response,
    anomalies: &mut crate::http::AnomalySet,
    want_ids: bool,
    http: &HttpConfig,
    stats: &mut HttpStats,
) -> Option<Arc<crate::detect::exposure::Scan>> {
    let Some(codings) = r.body.coded.take() else {
        return Some(memo.scan(&r.headers, &r.body.data, want_ids));
    };
    let before = *anomalies;
    let head = crate::http::decode_key_head(&codings, http, r.body.truncated);
    let scan = match memo.lookup_coded(&r.headers, &r.body.data, &head, want_ids) {
        Ok((scan, summary)) => {
            crate::http::apply_decoded(summary, true, &mut r.body, anomalies, stats);
            Some(scan)
        }
        Err(miss) => {
            let (decoded, memoized) =
                crate::http::decode_memoized(&r.body.data, &codings, http, r.body.truncated);
            let summary = crate::http::DecodedSummary::of(&decoded);
            let bytes: &[u8] = match &decoded {
                Ok(d) => &d.data,
                Err(_) => &r.body.data,
            };
            let scan = (!bytes.is_empty()).then(|| {
                memo.scan_coded(
                    miss,
                    &r.headers,
                    &r.body.data,
                    &head,
                    bytes,
                    want_ids,
                    summary,
                )
            });
            crate::http::settle_decoded(&mut r.body, decoded, memoized, anomalies, stats);
            scan
        }
    };
    count_new_anomalies(before, *anomalies, stats);
    scan
}

/// Counts the anomalies `after` has and `before` had not: a transaction's are counted as
/// the parser hands it over, and a deferred decoding adds its own later.
fn count_new_anomalies(
    before: crate::http::AnomalySet,
    after: crate::http::AnomalySet,
    stats: &mut HttpStats,
) {
    for a in after.iter().filter(|a| !before.contains(*a)) {
        *stats.anomalies_by_kind.entry(a.as_str()).or_default() += 1;
    }
}

/// What detection sees of a transaction that has a request.
#[allow(clippy::too_many_arguments)]
fn event(
    names: &mut crate::intern::Interner,
    attribution: &Attribution,
    login: &LoginConfig,
    scans: Option<&mut crate::detect::scan_memo::ScanMemo>,
    (http, stats): (&HttpConfig, &mut HttpStats),
    tls: &crate::detect::fingerprint::TlsConfig,
    client: SocketAddr,
    tx: &mut Transaction,
    ((route_name, login_route), ids): ((Arc<str>, bool), Option<crate::route::IdSegments>),
    att: Option<&Attestation>,
    user: Option<&UserId>,
    call: Option<&grpc::Call>,
) -> Option<Event> {
    let Transaction {
        request,
        response,
        anomalies,
        ..
    } = tx;
    let req = request.as_ref()?;
    let path = path_of(&req.target);
    // A gRPC call names its object in the request message, not the path.
    let grpc_object = call.and_then(|c| grpc::object(path, &req.body.data, c));
    let objects = match (&grpc_object, call) {
        (Some((o, _)), _) => thin_vec::thin_vec![o.clone()],
        (None, Some(_)) => ThinVec::new(),
        (None, None) => request_objects_judged(&req.target, ids, &req.headers, &req.body.data),
    };
    let want_ids = req.method == "POST" || !objects.is_empty();
    // Every response body is scanned once: for exposure, the inventory, and returned ids.
    // A body scanned before (the same product page for every shopper) is not scanned again.
    let scan = match (response.as_mut(), scans) {
        (Some(r), Some(memo)) if !r.body.data.is_empty() => match call {
            Some(c) => Some(Arc::new(crate::detect::exposure::scan_grpc(
                &r.headers,
                &r.body.data,
                c.output.as_ref(),
                want_ids,
            ))),
            None => scan_response(memo, r, anomalies, want_ids, http, stats),
        },
        _ => None,
    };
    let response = response.as_ref();
    let route: &str = &route_name;
    // Login methods are named in CamelCase (`/auth.v1.Auth/Login`).
    let login_route =
        login_route || (call.is_some() && login.routes.is_match(&route.to_ascii_lowercase()));
    // Keyed by the header as sent: a host seen before costs a lookup, not two copies.
    let host = header(&req.headers, "host").map(|h| match std::str::from_utf8(h) {
        Ok(raw) => names.mapped(raw, |raw| host_name(raw.as_bytes())),
        Err(_) => names.name(&host_name(h)),
    });
    let now = req.ts.as_secs_f64();
    Some(Event {
        ts: req.ts,
        actor: actor::actor(attribution, client.ip(), &req.headers, att, user),
        method: Some(method_name(&req.method)),
        host,
        status: match call {
            Some(c) => grpc::status(c, response.map(|r| r.status)),
            None => response.map(|r| r.status),
        },
        family: att.map(|a| a.family.clone()),
        verdict: att.map_or(Verdict::Missing, |a| a.verdict),
        token: att.and_then(|a| a.token_hash),
        expired_for: att
            .filter(|a| a.verdict == Verdict::Expired)
            .and_then(|a| a.exp)
            .map(|exp| (now - exp).max(0.0)),
        object: Some(match &grpc_object {
            Some((o, _)) => Arc::from(&*crate::redact::path(&format!("{path}/{}", o.id))),
            None => Arc::from(&*crate::redact::path(path)),
        }),
        number: match (&grpc_object, call) {
            (Some((_, n)), _) => *n,
            (None, Some(_)) => None,
            (None, None) => object_number(&req.target),
        },
        username: match call {
            Some(c) if login_route => grpc::username(&req.body.data, c, &login.fields),
            Some(_) => None,
            None if login_route => login_route_username(login, &req.headers, &req.body.data),
            None => None,
        },
        login: login_route,
        objects,
        returned: scan
            .as_ref()
            .map(|s| returned_from_scan(&req.target, s))
            .unwrap_or_default(),
        ownership: None,
        cross_user: false,
        exposure: scan,
        exposed: ThinVec::new(),
        field_set: None,
        denied: false,
        foreign: ThinVec::new(),
        attested: false,
        shared_devices: 0,
        route: Some(Arc::clone(&route_name)),
        endpoint: None,
        principal_key: None,
        body_bytes: response.map(|r| u32::try_from(r.body.wire_len).unwrap_or(u32::MAX)),
        ja4: edge_ja4(tls, &req.headers),
        viewer: tls
            .viewer_address_header
            .as_deref()
            .and_then(|h| header(&req.headers, h))
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse().ok().map(Box::new)),
        fingerprint: 0,
    })
}

/// The client's JA4 as a TLS-terminating edge forwards it (`[tls] ja4_headers`): 36
/// characters of the JA4 alphabet, else ignored.
pub(crate) fn edge_ja4(
    tls: &crate::detect::fingerprint::TlsConfig,
    headers: &crate::http::Headers,
) -> Option<Arc<str>> {
    tls.ja4_headers.iter().find_map(|h| {
        let v = std::str::from_utf8(header(headers, h)?).ok()?.trim();
        (v.len() == 36 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
            .then(|| Arc::from(v))
    })
}

/// A Host header as rules match it: lower case, without port or IPv6 brackets.
pub(crate) fn host_name(raw: &[u8]) -> String {
    let h = String::from_utf8_lossy(raw).trim().to_ascii_lowercase();
    let name = if let Some(rest) = h.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else if h.matches(':').count() == 1 {
        h.split(':').next().unwrap_or_default()
    } else {
        &h
    };
    name.to_string()
}

/// Methods as shared strings: the common ones are allocated once per thread.
fn method_name(m: &str) -> Arc<str> {
    thread_local! {
        static COMMON: Vec<Arc<str>> = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
            .into_iter()
            .map(Arc::from)
            .collect();
    }
    COMMON
        .with(|c| c.iter().find(|x| ***x == *m).cloned())
        .unwrap_or_else(|| Arc::from(m))
}

impl StreamHandler for HttpHandler {
    type State = ConnState;

    fn open(&mut self, _conn: &ConnInfo) -> ConnState {
        ConnState {
            http: HttpConn::new(),
            seq: 0,
            tls: if self.tls.enabled {
                TlsProbe::Unknown
            } else {
                TlsProbe::Plain
            },
        }
    }

    fn data(
        &mut self,
        st: &mut ConnState,
        conn: &ConnInfo,
        dir: Direction,
        bytes: &[u8],
        ts: Timestamp,
    ) {
        if !matches!(st.tls, TlsProbe::Plain) && self.tls_probe(st, conn, dir, bytes, ts) {
            return;
        }
        if st.http.opaque() {
            return;
        }
        st.http.data(
            &self.cfg,
            http_dir(dir),
            bytes,
            ts,
            &mut self.txs,
            &mut self.stats,
        );
        if !self.txs.is_empty() {
            self.drain(st, conn, ts);
        }
    }

    fn gap(
        &mut self,
        st: &mut ConnState,
        conn: &ConnInfo,
        dir: Direction,
        len: u64,
        ts: Timestamp,
    ) {
        if matches!(st.tls, TlsProbe::Tls | TlsProbe::Reading(..)) {
            // A hole in a handshake: the hello cannot be read whole.
            if matches!(st.tls, TlsProbe::Reading(..)) {
                *self.stats.tls_errors.entry("gap").or_default() += 1;
                st.tls = TlsProbe::Tls;
            }
            return;
        }
        st.tls = TlsProbe::Plain;
        if st.http.opaque() {
            return;
        }
        st.http.gap(
            &self.cfg,
            http_dir(dir),
            len,
            ts,
            &mut self.txs,
            &mut self.stats,
        );
        if !self.txs.is_empty() {
            self.drain(st, conn, ts);
        }
    }

    fn held_bytes(&self, st: &ConnState) -> usize {
        let tls = match &st.tls {
            TlsProbe::Reading(_, b) => b.capacity(),
            _ => 0,
        };
        st.http.held_bytes() + tls
    }

    fn close(&mut self, mut st: ConnState, conn: &ConnInfo, reason: CloseReason, ts: Timestamp) {
        if reason == CloseReason::Shed {
            st.http
                .abandon(&self.cfg, ts, &mut self.txs, &mut self.stats);
        } else {
            st.http.close(&self.cfg, ts, &mut self.txs, &mut self.stats);
        }
        if !self.txs.is_empty() {
            self.drain(&mut st, conn, ts);
        }
    }
}

/// One worker's packet path run in the calling thread: decode → reassembly → HTTP →
/// token → event building, as `worker` runs it, without queues, threads or detection.
/// For tests and benches that count what a transaction costs (`tests/alloc.rs`).
#[doc(hidden)]
pub struct PacketPath {
    decoder: Decoder,
    table: FlowTable<HttpHandler>,
    handler: HttpHandler,
}

impl PacketPath {
    pub fn new(cfg: &Config, shared: Arc<Shared>) -> PacketPath {
        PacketPath {
            decoder: Decoder::new(cfg.decode.clone()),
            table: FlowTable::new(cfg.reassembly.clone()),
            handler: HttpHandler::new(
                cfg,
                shared,
                false,
                crate::detect::scan_memo::ScanMemo::new(cfg.runtime.budget.share(Table::Scans)),
                (
                    crate::http::decode_memo(cfg.runtime.budget.share(Table::Decodes), 1),
                    true,
                ),
            ),
        }
    }

    /// One captured frame through the path (TCP only, as the capture thread shards).
    pub fn frame(&mut self, f: Frame<'_>) {
        let Some(link) = LinkType::from_linktype(f.linktype) else {
            return;
        };
        if let Ok(Decoded::Tcp(seg)) = self.decoder.decode(link, f.data, f.ts) {
            self.table.process(&seg, f.ts, &mut self.handler);
        }
    }

    /// Has the parser undo every body's content codings as its message completes, rather
    /// than leave a response's for its scan to find by the bytes as sent (the two must
    /// give the same events and counts).
    pub fn decode_in_parser(&mut self) {
        self.handler.cfg.defer_response_decoding = false;
    }

    /// The HTTP counters so far.
    pub fn http_stats(&self) -> &HttpStats {
        &self.handler.stats
    }

    /// Forgets the response scans and content decodings made so far (the memos start
    /// empty, as in a new run).
    pub fn forget_scans(&mut self) {
        self.handler.scans.clear();
        crate::http::forget_decodes();
    }

    /// Bodies content-decoded and answered by the memo of recent decodings, so far.
    pub fn body_decodes(&self) -> (u64, u64) {
        (
            self.handler.stats.body_decodes,
            self.handler.stats.body_decodes_memoized,
        )
    }

    /// Packet time moves on: idle flows expire.
    pub fn advance(&mut self, now: Timestamp) {
        self.table.advance(now, &mut self.handler);
    }

    /// Drops the events built since the last call (as the detect thread would take them)
    /// and says how many there were.
    pub fn take_events(&mut self) -> usize {
        let n = self.handler.events.len();
        self.handler.events.clear();
        n
    }

    /// Transactions produced so far.
    pub fn transactions(&self) -> u64 {
        self.handler.written
    }

    /// Takes the transactions' events built since the last call, as the detect thread
    /// would receive them (TLS hellos left out).
    pub fn events(&mut self) -> Vec<crate::detect::Event> {
        self.handler
            .events
            .drain(..)
            .filter_map(|o| match o.item {
                ordering::Item::Event(e) => Some(Arc::unwrap_or_clone(e)),
                ordering::Item::Hello(_) => None,
            })
            .collect()
    }

    /// Response scans made and answered by the memo of recent scans, so far.
    pub fn response_scans(&self) -> (u64, u64) {
        (
            self.handler.stats.response_scans,
            self.handler.stats.response_scans_memoized,
        )
    }
}

/// The tables a worker owns: its flow table's, its memo of response scans and (on the
/// worker's thread) its memo of content decodings.
fn worker_usage(table: &FlowTable<HttpHandler>, handler: &HttpHandler) -> [(Table, Usage); 5] {
    let [flows, streams, http] = table.usage();
    [
        flows,
        streams,
        http,
        handler.scans.usage(),
        (Table::Decodes, crate::http::decode_memo_usage()),
    ]
}

struct WorkerResult {
    /// The worker's tables at the end of the capture, before the final flush.
    memory: [(Table, Usage); 5],
    split: SplitStats,
    reassembly: ReassemblyStats,
    http: HttpStats,
    written: u64,
}

/// A worker's ends of the run.
struct WorkerIo {
    index: usize,
    rx: Receiver<Batch>,
    pool: Arc<BatchPool>,
    lines_tx: Option<SyncSender<Vec<u8>>>,
    events_tx: SyncSender<ordering::EventBatch>,
    /// Capture threads feeding this worker; with more than one their segments are merged
    /// by packet time (split taps).
    inputs: usize,
    /// Its shares of the memory budget.
    budget: FlowBudget,
    /// The memos of response scans and of content decodings, shared by the workers.
    scans: Arc<crate::detect::scan_memo::Scans>,
    decodes: Arc<crate::http::DecodeMemo>,
    /// Events detection is done with, for this worker to drop ([`ordering::Returns`]).
    spent: Receiver<Vec<Arc<crate::detect::Event>>>,
}

fn worker(cfg: Config, shared: Arc<Shared>, per_worker_flows: usize, io: WorkerIo) -> WorkerResult {
    let WorkerIo {
        index,
        rx,
        pool,
        lines_tx,
        events_tx,
        inputs,
        budget,
        scans,
        decodes,
        spent,
    } = io;
    let mut merger = (inputs > 1).then(|| {
        merge::Merger::new(
            inputs,
            cfg.capture.split_window,
            cfg.capture.split_hold_max_bytes,
        )
    });
    let mut rcfg = cfg.reassembly.clone();
    rcfg.max_flows = per_worker_flows;
    rcfg.budget = budget;
    let mut table: FlowTable<HttpHandler> = FlowTable::new(rcfg);
    // The first worker reports the shared memos' usage.
    let scans = crate::detect::scan_memo::ScanMemo::shared(scans, index == 0);
    let decodes = (decodes, index == 0);
    let mut handler = HttpHandler::new(&cfg, shared, lines_tx.is_some(), scans, decodes);
    let hub = handler.shared.hub.clone();
    let mut last_publish = Instant::now();
    let publish =
        |handler: &HttpHandler, table: &FlowTable<HttpHandler>, merger: &Option<merge::Merger>| {
            hub.publish_worker(
                index,
                &WorkerSnapshot {
                    reassembly: table.stats(),
                    http: handler.stats.clone(),
                    split: merger.as_ref().map(|m| m.stats.clone()).unwrap_or_default(),
                    active_flows: table.active_flows() as u64,
                    latency_us: handler.latency_us.clone(),
                },
            );
            hub.publish_memory(MemorySource::Worker(index), &worker_usage(table, handler));
        };
    let flush = |handler: &mut HttpHandler, force: bool| {
        if let Some(tx) = &lines_tx
            && (force || handler.lines.len() >= LINES_FLUSH_BYTES)
            && !handler.lines.is_empty()
        {
            let buf = std::mem::replace(
                &mut handler.lines,
                Vec::with_capacity(LINES_FLUSH_BYTES + 4096),
            );
            let _ = tx.send(buf);
        }
    };
    // One segment through reassembly → http.
    let segment = |table: &mut FlowTable<HttpHandler>,
                   handler: &mut HttpHandler,
                   m: &SegMeta,
                   arena: &[u8]| {
        if m.cut {
            table.cut(&FlowKey::new(m.tunnel, m.src, m.dst), handler);
            return;
        }
        let start = m.start as usize;
        let payload = arena.get(start..start + m.len as usize).unwrap_or(&[]);
        let seg = TcpSegment {
            tunnel: m.tunnel,
            src: m.src,
            dst: m.dst,
            seq: m.seq,
            ack: m.ack,
            flags: m.flags,
            window: m.window,
            payload,
            wire_payload_len: m.wire_payload_len,
        };
        table.process(&seg, m.ts, handler);
    };
    loop {
        let batch = rx.recv();
        // The events detection has finished with go here, where their memory and shared
        // counts were last touched.
        spent.try_iter().for_each(drop);
        let done = batch.is_err();
        let now = match (&mut merger, batch) {
            (None, Ok(batch)) => {
                handler.batch_created = batch.created;
                for m in &batch.segs {
                    segment(&mut table, &mut handler, m, &batch.arena);
                }
                let now = batch.now;
                pool.give(batch);
                now
            }
            (None, Err(_)) => break,
            (Some(merger), batch) => {
                if let Ok(batch) = batch {
                    merger.push(batch);
                }
                merger.release(done, &pool, &mut |m, batch| {
                    handler.batch_created = batch.created;
                    segment(&mut table, &mut handler, m, &batch.arena);
                });
                merger.clock()
            }
        };
        table.advance(now, &mut handler);
        flush(&mut handler, false);
        // Every event this worker emits from now on is at or after its table's last
        // timeout sweep (connections closed by later sweeps are stamped with deadlines
        // after it; data with its segment's time): the detect thread may release events up
        // to it, give or take the ordering lateness (capture timestamps that step back).
        // The sweep, not `now`: a connection timed out is stamped with its deadline, up to
        // a sweep interval (`close_linger`, or a heartbeat) behind the clock. The next
        // batch's list starts at this one's size: grown from empty, each batch's list was
        // reallocated and copied about five times.
        let n = handler.events.len();
        let _ = events_tx.send(ordering::EventBatch {
            worker: index,
            events: std::mem::replace(&mut handler.events, Vec::with_capacity(n)),
            watermark: now.min(table.swept()),
        });
        if last_publish.elapsed() >= PUBLISH_EVERY {
            last_publish = Instant::now();
            publish(&handler, &table, &merger);
        }
        if done {
            break;
        }
    }
    handler.batch_created = None;
    let memory = worker_usage(&table, &handler);
    table.flush_all(&mut handler);
    publish(&handler, &table, &merger);
    flush(&mut handler, true);
    let _ = events_tx.send(ordering::EventBatch {
        worker: index,
        events: std::mem::take(&mut handler.events),
        watermark: Timestamp(u64::MAX),
    });
    WorkerResult {
        memory,
        split: merger.map(|m| m.stats).unwrap_or_default(),
        reassembly: table.stats(),
        http: handler.stats,
        written: handler.written,
    }
}

/// Worker threads, the detect thread and the writer, started before capture and joined
/// after it.
struct Pipeline {
    shared: Arc<Shared>,
    senders: Vec<SyncSender<Batch>>,
    pool: Arc<BatchPool>,
    workers: Vec<thread::JoinHandle<WorkerResult>>,
    detect: Option<thread::JoinHandle<std::io::Result<ordering::DetectResult>>>,
    writer: Option<thread::JoinHandle<std::io::Result<()>>>,
}

impl Pipeline {
    fn start(
        cfg: &Config,
        shared: Arc<Shared>,
        workers: usize,
        mut outputs: Outputs,
        live: bool,
        inputs: usize,
    ) -> Pipeline {
        let (lines_tx, writer) = match outputs.transactions.take() {
            Some(mut w) => {
                let (tx, rx) = sync_channel::<Vec<u8>>(64);
                let h = thread::Builder::new()
                    .name("shieldtap-writer".into())
                    .spawn(move || -> std::io::Result<()> {
                        let _cpu = ThreadCpu::start(Role::Writer);
                        while let Ok(buf) = rx.recv() {
                            w.write_all(&buf)?;
                        }
                        w.flush()
                    })
                    .ok();
                (Some(tx), h)
            }
            None => (None, None),
        };
        let (events_tx, events_rx) = sync_channel::<ordering::EventBatch>(workers * 16);
        let (returns, spent): (Vec<_>, Vec<_>) = (0..workers)
            .map(|_| sync_channel(ordering::RETURN_BATCHES))
            .unzip();
        let returns = ordering::Returns::new(returns);
        let detect = {
            let shared = shared.clone();
            let cfg = cfg.detect.clone();
            let sink = std::mem::take(&mut outputs.alerts);
            let hooks = outputs.webhooks.clone();
            let decisions = outputs.decisions.take();
            let export = outputs.export.take();
            thread::Builder::new()
                .name("shieldtap-detect".into())
                .spawn(move || {
                    let _cpu = ThreadCpu::start(Role::Detect);
                    let to = ordering::AlertOutputs {
                        sink,
                        hooks,
                        decisions,
                        export,
                    };
                    ordering::run(cfg, shared, workers, events_rx, to, live, returns)
                })
                .map_err(|e| tracing::error!(error = %e, "cannot start detect thread"))
                .ok()
        };
        let per_worker_flows = (cfg.runtime.max_flows / workers).max(1);
        let b = cfg.runtime.budget;
        let budget = FlowBudget {
            flows: b.share_of(Table::Flows, workers),
            streams: b.share_of(Table::Streams, workers),
            http: b.share_of(Table::Http, workers),
        };
        let scans = crate::detect::scan_memo::scans(b.share(Table::Scans), workers);
        let decodes = crate::http::decode_memo(b.share(Table::Decodes), workers);
        let mut senders = Vec::new();
        let pool = Arc::new(BatchPool::default());
        let mut handles = Vec::new();
        for (i, spent) in spent.into_iter().enumerate() {
            let (tx, rx) = sync_channel::<Batch>(cfg.runtime.queue_batches(live));
            senders.push(tx);
            let cfg = cfg.clone();
            let io = WorkerIo {
                index: i,
                rx,
                pool: pool.clone(),
                lines_tx: lines_tx.clone(),
                events_tx: events_tx.clone(),
                inputs,
                budget,
                scans: Arc::clone(&scans),
                decodes: Arc::clone(&decodes),
                spent,
            };
            let shared = shared.clone();
            let h = thread::Builder::new()
                .name(format!("shieldtap-worker-{i}"))
                .spawn(move || {
                    let _cpu = ThreadCpu::start(Role::Worker);
                    worker(cfg, shared, per_worker_flows, io)
                });
            match h {
                Ok(h) => handles.push(h),
                Err(e) => tracing::error!(error = %e, "cannot start worker thread"),
            }
        }
        drop(lines_tx);
        drop(events_tx);
        Pipeline {
            shared,
            senders,
            pool,
            workers: handles,
            detect,
            writer,
        }
    }

    fn join(self, summary: &mut Summary) -> Result<(), RunError> {
        drop(self.senders);
        for h in self.workers {
            let r = h
                .join()
                .map_err(|_| RunError::Worker("worker panicked".into()))?;
            summary.reassembly.merge(&r.reassembly);
            for (t, u) in &r.memory {
                summary.memory.add(*t, u);
            }
            summary.split.merge(&r.split);
            summary.http.merge(&r.http);
            summary.transactions_written += r.written;
        }
        if let Some(d) = self.detect {
            let r = d
                .join()
                .map_err(|_| RunError::Worker("detect thread panicked".into()))??;
            summary.detect = r.stats;
            summary.alerts_written = r.written;
            summary.actors = r.actors;
            summary.inventory = r.inventory;
            for (t, u) in &r.memory {
                summary.memory.add(*t, u);
            }
        }
        if let Some(w) = self.writer {
            w.join()
                .map_err(|_| RunError::Worker("writer panicked".into()))??;
        }
        summary.token = self.shared.judges.load().verifier.stats();
        summary
            .memory
            .add(Table::Tokens, &summary.token.cache_usage());
        // Shed segments carried transactions at about the analysed traffic's rate.
        if summary.reassembly.segments > 0 {
            let est = u128::from(summary.queue.shed_packets)
                * u128::from(summary.http.transactions)
                / u128::from(summary.reassembly.segments);
            summary.queue.shed_transactions_estimate = u64::try_from(est).unwrap_or(u64::MAX);
        }
        let rules = self.shared.rules.load();
        summary.rules_source = rules.source.clone();
        summary.rules_enabled = rules.rules.len();
        if let Ok(r) = self.shared.reloads.lock() {
            summary.reloads = r.clone();
        }
        // The run's state goes away with it; `/metrics` (kept by `--hold-metrics`) keeps
        // showing its final token and reload counters.
        let (token, reloads) = (summary.token.clone(), summary.reloads.clone());
        self.shared
            .hub
            .set_token_source(Box::new(move || token.clone()));
        self.shared
            .hub
            .set_reload_source(Box::new(move || reloads.clone()));
        Ok(())
    }
}

fn finish_summary(summary: &mut Summary, side: CaptureSide) {
    summary.capture.merge(&side.capture);
    summary.decode.merge(&side.decode);
    summary.queue.merge(&side.queue);
    if let Some(f) = side.first {
        summary.first_packet = Some(f.rfc3339());
    }
    if let Some(l) = side.last {
        summary.last_packet = Some(l.rfc3339());
    }
}

/// Resolves the worker count: flag, then config, then the number of cores.
pub fn worker_count(cfg: &Config, flag: Option<usize>) -> usize {
    flag.or(cfg.runtime.workers)
        .unwrap_or_else(|| thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, 256)
}

/// Replays capture files in order through the pipeline.
pub fn replay(
    cfg: &Config,
    rules: RuleSet,
    files: &[PathBuf],
    workers: usize,
    outputs: Outputs,
    progress: &Progress,
) -> Result<Summary, RunError> {
    let started = Instant::now();
    // The binary replays on its main thread, which reads the capture (its CPU time in the
    // summary and the metrics is the capture's).
    crate::resources::main_thread_is(Role::Capture);
    let shared = Shared::new(cfg, rules, outputs.metrics.clone())?;
    let hub = outputs.metrics.clone();
    let pipeline = Pipeline::start(cfg, shared, workers, outputs, false, 1);
    let mut dispatcher = Dispatcher::new(
        cfg,
        pipeline.senders.clone(),
        pipeline.pool.clone(),
        false,
        0,
        hub,
        progress.clone(),
    );
    let mut first_error = None;
    for path in files {
        let mut stats = CaptureStats::default();
        let r = capture::read_file(path, progress, &mut stats, &mut |f| dispatcher.frame(f));
        dispatcher.side.capture.merge(&stats);
        match r {
            Ok(FileEnd::Complete) => {}
            Ok(FileEnd::Truncated) => {
                tracing::warn!(file = %path.display(), "capture ends inside a record (truncated); processed what it holds")
            }
            Ok(FileEnd::Corrupt(reason)) => {
                tracing::warn!(file = %path.display(), %reason, "capture corrupt; stopped reading this file")
            }
            Err(e) => {
                first_error = Some(e);
                break;
            }
        }
    }
    let side = dispatcher.finish();
    let mut summary = Summary {
        workers,
        memory: crate::budget::MemoryReport::new(cfg.runtime.budget),
        ..Summary::default()
    };
    pipeline.join(&mut summary)?;
    finish_summary(&mut summary, side);
    summary.elapsed_secs = started.elapsed().as_secs_f64();
    summary.resources = Resources::of(&ProcessUsage::now(), &summary);
    match first_error {
        Some(e) => Err(e.into()),
        None => Ok(summary),
    }
}

/// Captures live from interfaces until `stop` is set, then drains and returns the summary.
/// Config and rules are reloaded from `reload` on SIGHUP and when the rules folder changes.
pub fn run_live(
    cfg: &Config,
    rules: RuleSet,
    interfaces: &[String],
    workers: usize,
    outputs: Outputs,
    stop: Arc<AtomicBool>,
    reload: ReloadSources,
) -> Result<Summary, RunError> {
    let started = Instant::now();
    let shared = Shared::new(cfg, rules, outputs.metrics.clone())?;
    let hub = outputs.metrics.clone();
    // The check endpoint shares the pipeline's verifier (and its cache, swapped on reload)
    // and the decider's store; it never waits on the detect path.
    let enforcer = match (&cfg.enforce, &outputs.decisions) {
        (Some(e), Some(d)) => {
            let judges = shared.clone();
            let checker = Arc::new(crate::enforce::check::Checker::new(
                Arc::new(e.clone()),
                d.decider.store().clone(),
                Arc::new(move || judges.judges.load().verifier.clone()),
            ));
            hub.set_enforce_source(checker.clone());
            Some(
                crate::enforce::server::EnforceServer::start(checker, None).map_err(|source| {
                    RunError::Enforce {
                        addr: e.listen,
                        source,
                    }
                })?,
            )
        }
        _ => None,
    };
    let reloader = reload::start(reload, shared.clone(), stop.clone());
    let pipeline = Pipeline::start(cfg, shared, workers, outputs, true, interfaces.len());
    // Split taps: workers merge the inputs by packet time up to the clock every input has
    // passed, so each capture thread reports its clock several times per merge window.
    let split = interfaces.len() > 1;
    let heartbeat_nanos = if split {
        let window = u64::try_from(cfg.capture.split_window.as_nanos()).unwrap_or(u64::MAX);
        (window / 4).clamp(10_000_000, HEARTBEAT_NANOS)
    } else {
        HEARTBEAT_NANOS
    };
    let mut captures = Vec::new();
    for (index, iface) in interfaces.iter().enumerate() {
        let senders = pipeline.senders.clone();
        let pool = pipeline.pool.clone();
        let hub = hub.clone();
        let cfg = cfg.clone();
        let iface = iface.clone();
        let stop = stop.clone();
        let h = thread::Builder::new()
            .name(format!("shieldtap-capture-{iface}"))
            .spawn(move || -> (CaptureSide, Result<(), CaptureError>) {
                let _cpu = ThreadCpu::start(Role::Capture);
                let progress = Progress::default();
                let mut d =
                    Dispatcher::new(&cfg, senders, pool, true, index, hub, progress.clone());
                d.heartbeat_nanos = heartbeat_nanos;
                d.idle_lag = capture::delivery_lag(&cfg.capture);
                if split {
                    d.start_clock_at_wall();
                }
                let mut stats = CaptureStats::default();
                let r = {
                    // Both callbacks need the dispatcher; they never run at the same time.
                    let d = std::cell::RefCell::new(&mut d);
                    capture::capture_live(
                        &iface,
                        &cfg.capture,
                        &stop,
                        &mut stats,
                        &progress,
                        &mut |f| d.borrow_mut().frame(f),
                        &mut || d.borrow_mut().idle(),
                    )
                };
                if r.is_err() {
                    stop.store(true, Ordering::Relaxed);
                }
                d.side.capture.merge(&stats);
                (d.finish(), r)
            });
        match h {
            Ok(h) => captures.push(h),
            Err(e) => tracing::error!(error = %e, "cannot start capture thread"),
        }
    }
    let mut summary = Summary {
        workers,
        memory: crate::budget::MemoryReport::new(cfg.runtime.budget),
        ..Summary::default()
    };
    let mut first_error = None;
    for h in captures {
        match h.join() {
            Ok((side, r)) => {
                finish_summary(&mut summary, side);
                if let Err(e) = r {
                    first_error.get_or_insert(e);
                }
            }
            Err(_) => {
                first_error = first_error.or(Some(CaptureError::Live {
                    interface: "?".into(),
                    reason: "capture thread panicked".into(),
                    permission: false,
                }))
            }
        }
    }
    if let Some(r) = reloader {
        r.stop();
    }
    pipeline.join(&mut summary)?;
    if let Some(e) = enforcer {
        e.stop();
    }
    summary.elapsed_secs = started.elapsed().as_secs_f64();
    summary.resources = Resources::of(&ProcessUsage::now(), &summary);
    match first_error {
        Some(e) => Err(e.into()),
        None => Ok(summary),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Load shedding tells a connection it cuts past its opening apart from the rest: the
    /// first of its shed segments becomes a cut marker for its worker (it may be under
    /// analysis), later ones are shed silently; a connection shed at its SYN never
    /// reached the worker and gets no marker; below the shed range nothing is shed.
    #[test]
    fn a_connection_cut_past_its_opening_is_marked_once() {
        let mut shedder = Shedder::new();
        shedder.level = SHED_STEPS / 2;
        shedder.cut = SHED_STEPS / 2;
        let mut sh = Shedding {
            shed: vec![shedder],
            flows: Default::default(),
            idle: Duration::from_secs(60),
        };
        let mut q = QueueStats::default();
        // Hashes whose bucket (bits 40 and up, modulo the steps) is inside and outside
        // the shed range.
        let inside = |i: u64| (i << 40) | 7;
        let outside = |i: u64| ((u64::from(SHED_STEPS) / 2 + i) << 40) | 7;
        let (ack, syn) = (TcpFlags(TcpFlags::ACK), TcpFlags(TcpFlags::SYN));
        let t = Timestamp(1_000_000_000);
        assert_eq!(sh.segment(0, inside(1), ack, t, &mut q), Shed::Cut);
        assert_eq!(sh.segment(0, inside(1), ack, t, &mut q), Shed::Yes);
        assert_eq!(sh.segment(0, inside(2), syn, t, &mut q), Shed::Yes);
        assert_eq!(sh.segment(0, inside(2), ack, t, &mut q), Shed::Yes);
        assert_eq!(sh.segment(0, outside(1), ack, t, &mut q), Shed::No);
        assert_eq!(sh.segment(0, outside(1), syn, t, &mut q), Shed::No);
        assert_eq!((q.shed_flows, q.shed_packets), (2, 4));
        // Back to no shedding: remembered connections stay shed until they go idle,
        // then a later segment of theirs is analysed again.
        sh.shed[0].level = 0;
        sh.shed[0].cut = 0;
        assert_eq!(sh.segment(0, inside(1), ack, t, &mut q), Shed::Yes);
        sh.relax(Timestamp(t.0 + 61_000_000_000));
        assert_eq!(sh.segment(0, inside(1), ack, t, &mut q), Shed::No);
    }

    /// Split taps: a capture thread whose port has delivered nothing yet still reports a
    /// clock, the wall clock less the delivery lag, so the workers' merge waits for it;
    /// without the wall-clock start it reports none and the merge does not wait.
    #[test]
    fn a_silent_split_tap_port_reports_the_wall_clock_less_the_lag() {
        let wall = || {
            let d = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock after 1970");
            Timestamp::from_secs_nanos(d.as_secs(), u64::from(d.subsec_nanos()))
        };
        let lag = Duration::from_millis(150);
        let dispatcher = |tx| {
            let mut d = Dispatcher::new(
                &Config::default(),
                vec![tx],
                Arc::new(BatchPool::default()),
                true,
                1,
                Arc::new(Hub::default()),
                Progress::default(),
            );
            d.idle_lag = lag;
            d.heartbeat_nanos = 10_000_000;
            d
        };
        let (tx, rx) = sync_channel(4);
        let mut silent = dispatcher(tx);
        silent.idle();
        assert!(
            rx.try_recv().is_err(),
            "no clock to report without the start"
        );
        let (tx, rx) = sync_channel(4);
        let mut silent = dispatcher(tx);
        let before = wall();
        silent.start_clock_at_wall();
        std::thread::sleep(Duration::from_millis(20));
        silent.idle();
        let after = wall();
        let beat = rx.try_recv().expect("a heartbeat");
        assert!(beat.segs.is_empty());
        assert_eq!(beat.source, 1);
        assert!(
            beat.now.0 >= before.0 + 20_000_000 - 150_000_000
                && beat.now.0 <= after.0 - 150_000_000,
            "{:?} within [{before:?}, {after:?}] less the lag",
            beat.now
        );
        // The merge holds a segment of the other port that is newer than that clock.
        let mut m = merge::Merger::new(2, Duration::from_secs(1), 1 << 20);
        m.push(beat);
        let after_ms = after.0.div_ceil(1_000_000);
        m.push(merge::tests::batch(0, after_ms, &[(after_ms, b'x')]));
        let mut released = 0;
        m.release(false, &BatchPool::default(), &mut |_, _| released += 1);
        assert_eq!(released, 0, "held until the silent port's clock passes it");
    }

    /// The edge's JA4 header is taken when it is a JA4 (36 characters of its alphabet), in
    /// the configured order, whatever the header's case; anything else is ignored.
    #[test]
    fn the_edge_ja4_header_is_read_and_checked() {
        let tls = crate::detect::fingerprint::TlsConfig::default();
        let ja4 = "t13d1516h2_8daaf6152771_e5627efa2ab1";
        let got = edge_ja4(
            &tls,
            &crate::http::Headers::from_iter([("cloudfront-viewer-ja4-fingerprint", ja4)]),
        );
        assert_eq!(got.as_deref(), Some(ja4));
        let got = edge_ja4(
            &tls,
            &crate::http::Headers::from_iter([("X-JA4", &format!(" {ja4} "))]),
        );
        assert_eq!(got.as_deref(), Some(ja4));
        for bad in [
            "",
            "t13d",
            "t13d1516h2_8daaf6152771_e5627efa2ab1x",
            "<script>alert(1)</script>.......",
        ] {
            assert_eq!(
                edge_ja4(&tls, &crate::http::Headers::from_iter([("X-JA4", bad)])),
                None,
                "{bad:?}"
            );
        }
        assert_eq!(
            edge_ja4(&tls, &crate::http::Headers::from_iter([("X-Other", ja4)])),
            None
        );
    }

    /// A route's login flag is the login globs' answer, worked out once: the default globs
    /// and configured ones, the same shared name as the interner's on every call, and a
    /// bounded table that starts over and still answers right.
    #[test]
    fn route_names_remember_login_routes() {
        let mut names = crate::intern::Interner::default();
        let mut routes = RouteNames::default();
        let login = LoginConfig::default();
        for (route, want) in [
            ("/api/v1/login", true),
            ("/oauth/token", true),
            ("/api/v1/sessions", true),
            ("/api/v1/orders/{id}", false),
            ("/api/v1/login/help", false),
        ] {
            let (first, is_login) = routes.get(&mut names, &login, route);
            assert_eq!(is_login, want, "{route}");
            assert_eq!(&*first, route);
            let (again, is_login) = routes.get(&mut names, &login, route);
            assert_eq!(is_login, want, "{route} again");
            assert!(Arc::ptr_eq(&first, &again), "{route}: one shared name");
            assert!(
                Arc::ptr_eq(&first, &names.name(route)),
                "{route}: the interner's"
            );
        }
        let custom = LoginConfig {
            routes: regex::RegexSet::new([r"^/v2/auth/[^/]*$"]).expect("pattern"),
            ..LoginConfig::default()
        };
        let mut other = RouteNames::default();
        assert!(other.get(&mut names, &custom, "/v2/auth/password").1);
        assert!(!other.get(&mut names, &custom, "/api/v1/login").1);
        for n in 0..2 * MAX_ROUTES {
            let r = format!("/r/{n}/login");
            assert!(routes.get(&mut names, &login, &r).1, "{r}");
            assert!(routes.seen.len() <= MAX_ROUTES);
        }
        assert!(!routes.get(&mut names, &login, "/api/v1/orders/{id}").1);
    }
}
