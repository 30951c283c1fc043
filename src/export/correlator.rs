//! `shieldtap correlate`: consumes partitions of the events stream, merges the sensors'
//! messages in packet-time order, runs each partition's detect shard and sends its alerts
//! to the alerts stream and the local outputs.
//!
//! **Merge.** Each sensor's envelopes are numbered per partition; out-of-order ones (a
//! republish after a broker outage) wait for the gap to fill, repeats are skipped
//! (`redelivered`). A sensor's messages are already in its packet-time order; across sensors
//! a message is released when no sensor that could still send something earlier is waited
//! for: a sensor with queued messages, a finished one, or one silent for longer than
//! `[correlate] max_wait_secs` (counted) is not. The merged stream is numbered afresh and
//! fed to the shard; a sensor's sweep is applied only when it crosses the correlator's own
//! next whole-second boundary, so the shard sweeps where one process reading every sensor's
//! traffic would.
//!
//! **Checkpoints.** Every `checkpoint_interval_secs` (and at the end) the partition's state
//! is written to the object store as `p<N>`: the shard's state, the merge's queues and
//! positions, and the stream sequence it covers. A correlator that starts (after a crash, or
//! taking over the partition) restores it and consumes from the next sequence.
//!
//! **Alerts exactly once.** Each alert's id is a hash of its record, so the same alert
//! derived twice has the same id. Alerts go to `<prefix>.alerts.p<N>` with the id as the
//! message id (the broker drops repeats within an hour), acknowledged before they reach the
//! local outputs; after a restore, the ids published after the checkpoint are read back and
//! those alerts are not sent again (`alerts_suppressed`). The alerts stream is the
//! deployment's record; a crash between the broker's acknowledgement and the local write
//! can leave one alert out of the local JSON lines.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use super::config::{CorrelateConfig, NatsConfig};
use super::stats::{PartitionStats, ScaleStats};
use super::wire::{Envelope, Msg, rules_digest};
use crate::capture::Timestamp;
use crate::detect::shard::{Shard, ShardConfig};
use crate::detect::{Alert, DetectConfig, ShardMsg, StreamOrder, Tagged, write_alert};
use crate::output::webhook::Webhooks;
use crate::rules::RuleSet;

/// Version of the checkpoint layout (2: the batches given up as missing are kept).
const CHECKPOINT_VERSION: u16 = 2;
/// Out-of-order envelopes held per sensor before the gap is given up.
const MAX_EARLY: usize = 4096;
/// Batch numbers given up as missing that a sensor's merge remembers (the latest), so that
/// one arriving after all is applied rather than taken for a repeat.
const MAX_SKIPPED: u64 = 4096;
/// Messages a partition's merge holds at most while it waits for a lagging sensor; past it
/// the oldest go on without waiting (counted `merge_forced`).
const MAX_QUEUED: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum CorrelateError {
    #[error(transparent)]
    Connect(#[from] super::connect::ConnectError),
    #[error("partition {partition}: {message}")]
    Partition { partition: u32, message: String },
    #[error("cannot start a partition thread: {0}")]
    Io(#[from] std::io::Error),
}

/// What a correlator runs.
pub struct Setup<'a> {
    pub nats: &'a NatsConfig,
    pub correlate: &'a CorrelateConfig,
    pub detect: &'a DetectConfig,
    /// The sensors' rules.
    pub rules: RuleSet,
    /// Stop once every partition's sensors have finished (replayed captures).
    pub until_finished: bool,
}

/// Where the alerts go besides the alerts stream.
pub struct Sinks {
    pub alerts: Option<Box<dyn Write + Send>>,
    pub hooks: Option<Arc<Webhooks>>,
}

/// What a correlator did, per partition.
#[derive(Debug, Default, Serialize)]
pub struct CorrelateReport {
    pub partitions: BTreeMap<u32, PartitionStats>,
    pub alerts_written: u64,
}

/// One sensor's side of a partition's merge.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct SensorQ {
    run: u64,
    next_batch: u64,
    early: BTreeMap<u64, Envelope>,
    /// Batch numbers of this run given up as missing and not come since.
    skipped: std::collections::BTreeSet<u64>,
    queue: VecDeque<Msg>,
    clock: Timestamp,
    finished: bool,
    /// Not waited for (silent too long) until it speaks again.
    expired: bool,
    #[serde(skip)]
    heard: Option<Instant>,
    #[serde(skip)]
    gap_since: Option<Instant>,
}

impl SensorQ {
    /// Moves the envelopes next in numbering from `early` into the queue (their clock and
    /// finish taken); returns how many were refused for being routed under other rules.
    fn drain_early(&mut self, rules: u64) -> u64 {
        let mut rejected = 0;
        while let Some(e) = self.early.remove(&self.next_batch) {
            self.next_batch += 1;
            rejected += u64::from(!self.admit(e, rules, false));
        }
        rejected
    }

    /// Takes an envelope's watermark and finish and queues its messages: behind what is
    /// queued, or `ahead` of it (a batch given up as missing that came after all precedes
    /// what was queued since). `false` when it was routed under other rules: refused.
    fn admit(&mut self, e: Envelope, rules: u64, ahead: bool) -> bool {
        self.clock = self.clock.max(e.clock);
        self.finished |= e.finished;
        if e.rules != rules {
            return false;
        }
        if ahead {
            for m in e.msgs.into_iter().rev() {
                self.queue.push_front(m);
            }
        } else {
            self.queue.extend(e.msgs);
        }
        true
    }
}

/// What a checkpoint holds besides the shard.
#[derive(Serialize, Deserialize)]
struct Checkpoint {
    version: u16,
    partition: u32,
    partitions: u32,
    rules: u64,
    /// Every message up to this stream sequence is covered.
    stream_seq: u64,
    /// The alerts stream's sequence of the last alert published before the checkpoint.
    alerts_seq: u64,
    seq: u64,
    now: Timestamp,
    next_sweep: Timestamp,
    released: Option<(StreamOrder, u8)>,
    finished: bool,
    sensors: BTreeMap<String, SensorQ>,
    stats: PartitionStats,
    shard: Vec<u8>,
}

/// One partition's merge and shard.
struct Part {
    p: u32,
    shard: Shard,
    sensors: BTreeMap<String, SensorQ>,
    seq: u64,
    now: Timestamp,
    next_sweep: Timestamp,
    released: Option<(StreamOrder, u8)>,
    finished: bool,
    stream_seq: u64,
    alerts_seq: u64,
    stats: PartitionStats,
    rules: u64,
}

impl Part {
    fn fresh(p: u32, shard: Shard, rules: u64) -> Part {
        Part {
            p,
            shard,
            sensors: BTreeMap::new(),
            seq: 0,
            now: Timestamp::ZERO,
            next_sweep: Timestamp::ZERO,
            released: None,
            finished: false,
            stream_seq: 0,
            alerts_seq: 0,
            stats: PartitionStats::default(),
            rules,
        }
    }

    fn checkpoint(&self, partitions: u32) -> Result<Vec<u8>, postcard::Error> {
        postcard::to_stdvec(&Checkpoint {
            version: CHECKPOINT_VERSION,
            partition: self.p,
            partitions,
            rules: self.rules,
            stream_seq: self.stream_seq,
            alerts_seq: self.alerts_seq,
            seq: self.seq,
            now: self.now,
            next_sweep: self.next_sweep,
            released: self.released,
            finished: self.finished,
            sensors: self.sensors.clone(),
            stats: self.stats.clone(),
            shard: self.shard.checkpoint(),
        })
    }

    fn restore(
        bytes: &[u8],
        p: u32,
        partitions: u32,
        cfg: ShardConfig,
        set: &RuleSet,
    ) -> Result<Part, String> {
        let (version, _) =
            postcard::take_from_bytes::<u16>(bytes).map_err(|e| format!("undecodable: {e}"))?;
        if version != CHECKPOINT_VERSION {
            return Err(format!(
                "checkpoint version {version}, this build reads {CHECKPOINT_VERSION}"
            ));
        }
        let c: Checkpoint = postcard::from_bytes(bytes).map_err(|e| format!("undecodable: {e}"))?;
        if c.partition != p || c.partitions != partitions {
            return Err(format!(
                "checkpoint of partition {} of {}, not {p} of {partitions}",
                c.partition, c.partitions
            ));
        }
        let rules = rules_digest(set);
        if c.rules != rules {
            return Err("checkpoint made under other rules".into());
        }
        let (shard, note) = Shard::restore_noted(cfg, set, &c.shard).map_err(|e| e.to_string())?;
        if note.saved_shard != p {
            return Err(format!(
                "shard state of partition {}, not {p}",
                note.saved_shard
            ));
        }
        let now = Instant::now();
        let mut sensors = c.sensors;
        for s in sensors.values_mut() {
            s.heard = Some(now);
        }
        Ok(Part {
            p,
            shard,
            sensors,
            seq: c.seq,
            now: c.now,
            next_sweep: c.next_sweep,
            released: c.released,
            finished: c.finished,
            stream_seq: c.stream_seq,
            alerts_seq: c.alerts_seq,
            stats: PartitionStats {
                restored: true,
                ..c.stats
            },
            rules,
        })
    }

    /// Takes one envelope into its sensor's queue (in numbering order).
    fn take(&mut self, env: Envelope, now: Instant) {
        self.stats.envelopes += 1;
        let s = self.sensors.entry(env.sensor.clone()).or_default();
        s.heard = Some(now);
        s.expired = false;
        if env.run < s.run {
            self.stats.redelivered += 1;
            return;
        }
        if env.run > s.run {
            // A new run of the sensor: what the old one queued still goes out; numbering
            // starts again.
            s.run = env.run;
            s.next_batch = 1;
            s.early.clear();
            s.skipped.clear();
            s.finished = false;
            s.gap_since = None;
        }
        if s.skipped.remove(&env.batch) {
            // Given up as missing and come after all (a publish the broker lost was sent
            // again): applied now, ahead of what this sensor has queued since (its messages
            // precede them), so they count as late rather than being dropped as a repeat.
            self.stats.batches_recovered += 1;
            let name = env.sensor.clone();
            let rejected = u64::from(!s.admit(env, self.rules, true));
            self.note_rejected(&name, rejected);
            return;
        }
        if env.batch < s.next_batch || s.early.contains_key(&env.batch) {
            self.stats.redelivered += 1;
            return;
        }
        if s.early.len() >= MAX_EARLY {
            self.stats.batches_missing += 1;
            Self::skip_gap(s);
        }
        let name = env.sensor.clone();
        s.early.insert(env.batch, env);
        let rejected = s.drain_early(self.rules);
        s.gap_since = if s.early.is_empty() {
            None
        } else {
            s.gap_since.or(Some(now))
        };
        self.note_rejected(&name, rejected);
    }

    fn note_rejected(&mut self, sensor: &str, rejected: u64) {
        if rejected > 0 {
            *self.stats.rejected.entry("rules".into()).or_default() += rejected;
            tracing::error!(
                partition = self.p,
                sensor,
                "envelopes routed under other rules than this correlator's: dropped (run the same rules everywhere)"
            );
        }
    }

    /// Gives up waiting for the missing envelopes: jumps to the first held one, remembering
    /// the numbers skipped (the latest `MAX_SKIPPED`).
    fn skip_gap(s: &mut SensorQ) {
        if let Some((&first, _)) = s.early.iter().next() {
            let from = s.next_batch.max(first.saturating_sub(MAX_SKIPPED));
            s.skipped.extend(from..first);
            while s.skipped.len() as u64 > MAX_SKIPPED {
                s.skipped.pop_first();
            }
            s.next_batch = first;
        }
        s.gap_since = None;
    }

    /// Expires silent sensors and long gaps (wall time).
    fn tick(&mut self, expected: &[String], max_wait: Duration, now: Instant, started: Instant) {
        for name in expected {
            self.sensors.entry(name.clone()).or_insert_with(|| SensorQ {
                heard: Some(started),
                ..SensorQ::default()
            });
        }
        let mut rejected = Vec::new();
        for (name, s) in self.sensors.iter_mut() {
            if let Some(g) = s.gap_since
                && now.duration_since(g) >= max_wait
            {
                self.stats.batches_missing += 1;
                Self::skip_gap(s);
                rejected.push((name.clone(), s.drain_early(self.rules)));
            }
            let silent = s.heard.is_none_or(|h| now.duration_since(h) >= max_wait);
            if silent && !s.finished && !s.expired && s.queue.is_empty() {
                s.expired = true;
                self.stats.waits_expired += 1;
            }
        }
        for (name, n) in rejected {
            self.note_rejected(&name, n);
        }
    }

    /// Releases every message no waited-for sensor can still precede; alerts to `out`.
    fn release(&mut self, out: &mut Vec<Tagged>) {
        while let Some((name, key)) = self
            .sensors
            .iter()
            .filter_map(|(n, s)| s.queue.front().map(|m| (n, m.key())))
            .min_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(b.0)))
            .map(|(n, k)| (n.clone(), k))
        {
            // Sensors with nothing queued may still send something at their clock or later.
            let blocked = self.sensors.iter().any(|(n, s)| {
                *n != name && s.queue.is_empty() && !s.finished && !s.expired && s.clock <= key.0.at
            });
            if blocked {
                let queued: usize = self.sensors.values().map(|s| s.queue.len()).sum();
                if queued <= MAX_QUEUED {
                    break;
                }
                self.stats.merge_forced += 1;
            }
            let Some(m) = self
                .sensors
                .get_mut(&name)
                .and_then(|s| s.queue.pop_front())
            else {
                break;
            };
            if self.released.is_some_and(|r| key < r) {
                self.stats.late += 1;
            } else {
                self.released = Some(key);
            }
            self.apply(m, out);
        }
        if !self.finished
            && !self.sensors.is_empty()
            && self
                .sensors
                .values()
                .all(|s| s.finished && s.queue.is_empty() && s.early.is_empty())
        {
            self.finished = true;
            self.shard.handle(ShardMsg::Finish, out);
        }
    }

    fn apply(&mut self, m: Msg, out: &mut Vec<Tagged>) {
        match m {
            Msg::Sweep { now, .. } => {
                if now >= self.next_sweep {
                    self.now = self.now.max(now);
                    self.next_sweep = crate::detect::next_sweep_after(self.now);
                    self.seq += 1;
                    self.stats.sweeps += 1;
                    self.shard.handle(
                        ShardMsg::Sweep {
                            seq: self.seq,
                            now: self.now,
                        },
                        out,
                    );
                }
            }
            Msg::Event { event, rules, .. } => {
                self.now = self.now.max(event.ts);
                self.seq += 1;
                self.stats.events += 1;
                self.shard.handle(
                    ShardMsg::Event {
                        seq: self.seq,
                        event,
                        rules,
                    },
                    out,
                );
            }
        }
    }
}

/// The alert's record (one JSON line, newline included) with its id first.
fn record(a: &Alert) -> (String, Vec<u8>) {
    let mut line = Vec::with_capacity(512);
    // Writing into a Vec cannot fail.
    let _ = write_alert(&mut line, a);
    // The id webhooks give the same alert.
    let id = crate::output::webhook::alert_id(
        &serde_json::to_value(a)
            .unwrap_or(serde_json::Value::Null)
            .to_string(),
    );
    let mut with = Vec::with_capacity(line.len() + 44);
    with.extend_from_slice(b"{\"id\":\"");
    with.extend_from_slice(id.as_bytes());
    with.extend_from_slice(b"\",");
    with.extend_from_slice(line.get(1..).unwrap_or_default());
    (id, with)
}

/// Shared by the partition threads.
struct Ctx {
    nats: NatsConfig,
    correlate: CorrelateConfig,
    detect: DetectConfig,
    rules: RuleSet,
    stats: Arc<ScaleStats>,
    stop: Arc<AtomicBool>,
    until_finished: bool,
    out: Mutex<Sinks>,
    written: std::sync::atomic::AtomicU64,
}

/// Runs the correlator until `stop` is set (or, with `until_finished`, until every
/// partition's sensors have finished).
pub fn correlate(
    setup: Setup<'_>,
    sinks: Sinks,
    stats: Arc<ScaleStats>,
    stop: Arc<AtomicBool>,
) -> Result<CorrelateReport, CorrelateError> {
    let Setup {
        nats,
        correlate,
        detect,
        rules,
        until_finished,
    } = setup;
    let partitions: Vec<u32> = if correlate.partitions.is_empty() {
        (0..nats.partitions).collect()
    } else {
        correlate.partitions.clone()
    };
    let ctx = Arc::new(Ctx {
        nats: nats.clone(),
        correlate: correlate.clone(),
        detect: detect.clone(),
        rules,
        stats: stats.clone(),
        stop,
        until_finished,
        out: Mutex::new(sinks),
        written: Default::default(),
    });
    tracing::info!(partitions = ?partitions, sensors = ?correlate.sensors, "correlating");
    let mut handles = Vec::new();
    for p in partitions {
        let ctx = ctx.clone();
        handles.push((
            p,
            std::thread::Builder::new()
                .name(format!("shieldtap-part-{p}"))
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| CorrelateError::Partition {
                            partition: p,
                            message: e.to_string(),
                        })?;
                    rt.block_on(partition(ctx, p))
                })?,
        ));
    }
    let mut first_err = None;
    for (p, h) in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(partition = p, error = %e, "partition stopped");
                first_err.get_or_insert(e);
            }
            Err(_) => {
                first_err.get_or_insert(CorrelateError::Partition {
                    partition: p,
                    message: "thread panicked".into(),
                });
            }
        }
    }
    if let Ok(mut o) = ctx.out.lock()
        && let Some(w) = &mut o.alerts
    {
        let _ = w.flush();
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(CorrelateReport {
            partitions: stats.partitions(),
            alerts_written: ctx.written.load(Ordering::Relaxed),
        }),
    }
}

fn perr(p: u32, e: impl std::fmt::Display) -> CorrelateError {
    CorrelateError::Partition {
        partition: p,
        message: e.to_string(),
    }
}

async fn partition(ctx: Arc<Ctx>, p: u32) -> Result<(), CorrelateError> {
    let client = super::connect::connect(&ctx.nats, &format!("shieldtap-correlator-p{p}")).await?;
    let js = jetstream::new(client);
    let n = ctx.nats.partitions;
    let cfg = crate::detect::shard::configs(&ctx.detect, n as usize)
        .into_iter()
        .nth(p as usize)
        .ok_or_else(|| perr(p, "no such partition"))?;
    let name = format!("p{p}");
    // A cluster electing a leader, or a node just lost, answers with timeouts for a while:
    // keep trying (never start afresh because a checkpoint could not be read).
    let mut wait = Duration::from_millis(200);
    let (store, mut part, mut sent) = loop {
        match start(&ctx, &js, p, cfg, &name).await {
            Ok(x) => break x,
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "cannot start the partition yet; retrying");
                if ctx.stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    };
    if part.finished && ctx.until_finished {
        ctx.stats.update(p, |s| *s = part.stats.clone());
        return Ok(());
    }
    let mut messages = subscribe(&js, &ctx.nats, p, part.stream_seq).await;
    let started = Instant::now();
    part.tick(
        &ctx.correlate.sensors,
        ctx.correlate.max_wait,
        started,
        started,
    );
    let mut last_checkpoint = Instant::now();
    let mut last_detect = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut tagged = Vec::new();
    loop {
        tokio::select! {
            m = messages.next() => {
                match m {
                    Some(Ok(m)) => {
                        if let Ok(info) = m.info() {
                            part.stream_seq = part.stream_seq.max(info.stream_sequence);
                            part.stats.lag = info.pending;
                        }
                        match Envelope::decode(&m.payload) {
                            Ok(env) if env.partition == p && env.partitions == n => {
                                part.take(env, Instant::now());
                            }
                            Ok(_) => {
                                *part.stats.rejected.entry("partitioning".into()).or_default() += 1;
                            }
                            Err(e) => {
                                *part.stats.rejected.entry(e.reason().into()).or_default() += 1;
                                tracing::warn!(partition = p, error = %e, "envelope skipped");
                            }
                        }
                    }
                    Some(Err(e)) => {
                        // The broker restarted or the consumer's node went away: consume
                        // again from the position reached.
                        tracing::warn!(partition = p, error = %e, "events consumer lost; resubscribing");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        messages = subscribe(&js, &ctx.nats, p, part.stream_seq).await;
                    }
                    None => {
                        tracing::warn!(partition = p, "events consumer ended; resubscribing");
                        messages = subscribe(&js, &ctx.nats, p, part.stream_seq).await;
                    }
                }
            }
            _ = tick.tick() => {
                part.tick(&ctx.correlate.sensors, ctx.correlate.max_wait, Instant::now(), started);
            }
        }
        part.release(&mut tagged);
        if !tagged.is_empty() {
            tagged.sort();
            if !emit(&ctx, &js, &mut part, &mut sent, &mut tagged).await {
                // Stopped while the broker was away: no checkpoint past unsent alerts (the
                // next start derives them again from the last checkpoint).
                return Ok(());
            }
        }
        let due = last_checkpoint.elapsed() >= ctx.correlate.checkpoint_interval;
        let stopping = ctx.stop.load(Ordering::Relaxed);
        if due || part.finished || stopping {
            save(&store, &name, &mut part, n).await;
            last_checkpoint = Instant::now();
        }
        ctx.stats.update(p, |s| *s = part.stats.clone());
        if last_detect.elapsed() >= Duration::from_millis(250) || part.finished || stopping {
            last_detect = Instant::now();
            ctx.stats.set_detect(p, part.shard.stats());
        }
        if stopping || (part.finished && ctx.until_finished) {
            return Ok(());
        }
    }
}

/// The streams and the store, the partition's state (restored from its checkpoint when there
/// is one) and the ids of the alerts published since that checkpoint.
async fn start(
    ctx: &Ctx,
    js: &jetstream::Context,
    p: u32,
    cfg: ShardConfig,
    name: &str,
) -> Result<(jetstream::object_store::ObjectStore, Part, HashSet<String>), String> {
    let n = ctx.nats.partitions;
    super::connect::events_stream(js, &ctx.nats)
        .await
        .map_err(|e| e.to_string())?;
    super::connect::alerts_stream(js, &ctx.nats)
        .await
        .map_err(|e| e.to_string())?;
    let store = super::connect::checkpoint_store(js, &ctx.nats)
        .await
        .map_err(|e| e.to_string())?;
    let digest = rules_digest(&ctx.rules);
    let part = match load(&store, name).await? {
        Some(bytes) => match Part::restore(&bytes, p, n, cfg, &ctx.rules) {
            Ok(part) => {
                tracing::info!(
                    partition = p,
                    stream_seq = part.stream_seq,
                    "checkpoint restored"
                );
                part
            }
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "checkpoint not usable: starting from the stream's start");
                Part::fresh(p, Shard::new(cfg, &ctx.rules), digest)
            }
        },
        None => Part::fresh(p, Shard::new(cfg, &ctx.rules), digest),
    };
    let sent = published_since(js, &ctx.nats, p, part.alerts_seq).await?;
    if !sent.is_empty() {
        tracing::info!(
            partition = p,
            alerts = sent.len(),
            "alerts already published after the checkpoint: not sent again"
        );
    }
    Ok((store, part, sent))
}

/// The longest pull request the correlator's consumers make. async-nats sets the idle
/// heartbeat to half of it (at most 15 s by default) and recreates an ordered consumer after
/// two heartbeat periods without one, twice: with the defaults a consumer whose node died
/// (it is one ephemeral replica on one node) stalled for a minute, past `max_wait_secs`, and
/// the merge released other sensors' messages ahead of the stalled ones. At 2 s the stall
/// lasts about 4 s, at the cost of one pull request per 2 s on an idle partition.
const CONSUMER_MAX_EXPIRES: Duration = Duration::from_secs(2);

/// An ordered consumer of the partition's subject from the message after `after` (retried
/// until the broker answers).
async fn subscribe(
    js: &jetstream::Context,
    nats: &NatsConfig,
    p: u32,
    after: u64,
) -> consumer::pull::Ordered {
    let mut wait = Duration::from_millis(100);
    loop {
        let deliver = if after == 0 {
            consumer::DeliverPolicy::All
        } else {
            consumer::DeliverPolicy::ByStartSequence {
                start_sequence: after + 1,
            }
        };
        let r = async {
            let stream = js
                .get_stream(&nats.stream)
                .await
                .map_err(|e| e.to_string())?;
            let c = stream
                .create_consumer(consumer::pull::OrderedConfig {
                    filter_subject: nats.events_subject(p),
                    deliver_policy: deliver,
                    max_expires: CONSUMER_MAX_EXPIRES,
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?;
            c.messages().await.map_err(|e| e.to_string())
        }
        .await;
        match r {
            Ok(m) => return m,
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "cannot consume the events stream yet; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Publishes the alerts (acknowledged, with their ids), then hands them to the outputs;
/// false when asked to stop while the broker would not take them.
async fn emit(
    ctx: &Ctx,
    js: &jetstream::Context,
    part: &mut Part,
    sent: &mut HashSet<String>,
    tagged: &mut Vec<Tagged>,
) -> bool {
    let subject = ctx.nats.alerts_subject(part.p);
    let mut local: Vec<(Alert, Vec<u8>)> = Vec::new();
    for t in tagged.drain(..) {
        let (id, line) = record(&t.alert);
        if sent.remove(&id) {
            part.stats.alerts_suppressed += 1;
            continue;
        }
        let mut wait = Duration::from_millis(50);
        loop {
            let mut h = async_nats::HeaderMap::new();
            h.insert("Nats-Msg-Id", id.as_str());
            let body = bytes::Bytes::copy_from_slice(line.trim_ascii_end());
            match js.publish_with_headers(subject.clone(), h, body).await {
                Ok(ack) => match ack.await {
                    Ok(a) => {
                        part.alerts_seq = part.alerts_seq.max(a.sequence);
                        break;
                    }
                    Err(e) => tracing::debug!(error = %e, "alert not acknowledged; retrying"),
                },
                Err(e) => tracing::debug!(error = %e, "alert publish failed; retrying"),
            }
            if ctx.stop.load(Ordering::Relaxed) {
                // Dropping the drain drops the alerts not sent.
                return false;
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(1));
        }
        part.stats.alerts += 1;
        local.push((t.alert, line));
    }
    if local.is_empty() {
        return true;
    }
    if let Ok(mut o) = ctx.out.lock() {
        if let Some(w) = &mut o.alerts {
            for (_, line) in &local {
                if let Err(e) = w.write_all(line) {
                    tracing::error!(error = %e, "cannot write alerts");
                }
            }
            let _ = w.flush();
        }
        ctx.written.fetch_add(local.len() as u64, Ordering::Relaxed);
        if let Some(h) = &o.hooks {
            let alerts: Vec<Alert> = local.into_iter().map(|(a, _)| a).collect();
            h.submit(&alerts);
        }
    }
    true
}

/// The checkpoint `name`; `None` when there is none (an error when it cannot be read).
async fn load(
    store: &jetstream::object_store::ObjectStore,
    name: &str,
) -> Result<Option<Vec<u8>>, String> {
    let mut obj = match store.get(name).await {
        Ok(o) => o,
        Err(e) if e.kind() == jetstream::object_store::GetErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("checkpoint {name}: {e}")),
    };
    let mut buf = Vec::new();
    obj.read_to_end(&mut buf)
        .await
        .map_err(|e| format!("checkpoint {name}: {e}"))?;
    Ok(Some(buf))
}

async fn save(
    store: &jetstream::object_store::ObjectStore,
    name: &str,
    part: &mut Part,
    partitions: u32,
) {
    let bytes = match part.checkpoint(partitions) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(partition = part.p, error = %e, "cannot encode checkpoint");
            return;
        }
    };
    let len = bytes.len() as u64;
    let mut r = bytes.as_slice();
    match store.put(name, &mut r).await {
        Ok(_) => {
            part.stats.checkpoints += 1;
            part.stats.checkpoint_bytes = len;
            part.stats.checkpoint_unix = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
        }
        Err(e) => {
            tracing::warn!(partition = part.p, error = %e, "checkpoint not written; retried at the next")
        }
    }
}

/// Ids of the alerts published on the partition's subject after `after`.
async fn published_since(
    js: &jetstream::Context,
    nats: &NatsConfig,
    p: u32,
    after: u64,
) -> Result<HashSet<String>, String> {
    let subject = nats.alerts_subject(p);
    let stream = js
        .get_stream(&nats.alerts_stream)
        .await
        .map_err(|e| e.to_string())?;
    let last = match stream.get_last_raw_message_by_subject(&subject).await {
        Ok(m) => m.sequence,
        Err(e)
            if matches!(
                e.kind(),
                jetstream::stream::LastRawMessageErrorKind::NoMessageFound
            ) =>
        {
            return Ok(HashSet::new());
        }
        Err(e) => return Err(format!("alerts published on {subject}: {e}")),
    };
    let mut ids = HashSet::new();
    if last <= after {
        return Ok(ids);
    }
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: subject,
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: after + 1,
            },
            max_expires: CONSUMER_MAX_EXPIRES,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut msgs = consumer.messages().await.map_err(|e| e.to_string())?;
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(10), msgs.next()).await {
        let m = m.map_err(|e| e.to_string())?;
        if let Some(id) = m.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id")) {
            ids.insert(id.to_string());
        }
        let seq = m.info().map(|i| i.stream_sequence).unwrap_or(u64::MAX);
        if seq >= last {
            break;
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::wire::VERSION;

    fn order(secs: u64) -> StreamOrder {
        StreamOrder {
            at: Timestamp(secs * 1_000_000_000),
            ts: Timestamp(secs * 1_000_000_000),
            client: std::net::SocketAddr::from(([10, 0, 0, 1], 40000)),
            server: std::net::SocketAddr::from(([10, 0, 0, 2], 443)),
            seq: 0,
        }
    }

    fn env(sensor: &str, batch: u64, sweeps: &[u64], finished: bool, rules: u64) -> Envelope {
        Envelope {
            version: VERSION,
            protocol: crate::detect::shard::PROTOCOL,
            rules,
            sensor: sensor.into(),
            run: 1,
            batch,
            partition: 0,
            partitions: 1,
            clock: order(*sweeps.last().unwrap_or(&0)).at,
            finished,
            msgs: sweeps
                .iter()
                .map(|s| Msg::Sweep {
                    order: order(*s),
                    now: order(*s).at,
                })
                .collect(),
        }
    }

    /// A fresh partition 0 of 1 under the built-in rules, with the rules, shard config and
    /// rules digest that envelopes and a restore need.
    fn fresh() -> (Part, RuleSet, ShardConfig, u64) {
        let set = crate::rules::builtin().unwrap();
        let cfg = crate::detect::shard::configs(&DetectConfig::default(), 1)[0];
        let digest = rules_digest(&set);
        (
            Part::fresh(0, Shard::new(cfg, &set), digest),
            set,
            cfg,
            digest,
        )
    }

    #[test]
    fn sensors_merge_in_packet_time_whatever_the_arrival_order() {
        let (mut part, set, cfg, digest) = fresh();
        let now = Instant::now();
        let expected = ["a".to_string(), "b".to_string()];
        part.tick(&expected, Duration::from_secs(60), now, now);
        let mut out = Vec::new();
        // a's second envelope first: held until its first arrives.
        part.take(env("a", 2, &[5], false, digest), now);
        part.release(&mut out);
        assert_eq!(part.stats.sweeps, 0);
        part.take(env("b", 1, &[2, 4], false, digest), now);
        part.take(env("a", 1, &[1, 3], false, digest), now);
        part.take(env("a", 1, &[1, 3], false, digest), now);
        assert_eq!(part.stats.redelivered, 1);
        part.release(&mut out);
        // 1, 2, 3, 4 cross a boundary each, in order; 5 waits for b (its clock is 4).
        assert_eq!(part.stats.sweeps, 4);
        assert_eq!(part.stats.late, 0);
        assert!(!part.finished);
        // Another rule set's envelope is refused (counted), its watermark still taken.
        part.take(env("b", 2, &[6], false, digest ^ 1), now);
        assert_eq!(part.stats.rejected.get("rules"), Some(&1));
        part.release(&mut out);
        assert_eq!(part.stats.sweeps, 5);
        part.take(env("b", 3, &[], true, digest), now);
        part.take(env("a", 3, &[7], true, digest), now);
        part.release(&mut out);
        assert_eq!(part.stats.sweeps, 6);
        assert!(part.finished);
        // A checkpoint restores the same merge state.
        let bytes = part.checkpoint(1).unwrap();
        let back = Part::restore(&bytes, 0, 1, cfg, &set).unwrap();
        assert_eq!(back.seq, part.seq);
        assert!(back.finished && back.stats.restored);
        assert!(Part::restore(&bytes, 1, 1, cfg, &set).is_err());
        assert!(Part::restore(&bytes[..bytes.len() / 2], 0, 1, cfg, &set).is_err());
    }

    #[test]
    fn a_batch_given_up_as_missing_is_applied_late_when_it_comes_not_dropped() {
        let (mut part, set, cfg, digest) = fresh();
        let start = Instant::now();
        let expected = ["a".to_string()];
        let wait = Duration::from_secs(5);
        part.tick(&expected, wait, start, start);
        let mut out = Vec::new();
        // Batch 1 is lost for now; 2 is held for it.
        part.take(env("a", 2, &[3, 4], false, digest), start);
        part.release(&mut out);
        assert_eq!(part.stats.sweeps, 0);
        // Past max_wait the gap is given up and 2 goes on.
        part.tick(&expected, wait, start + Duration::from_secs(6), start);
        part.release(&mut out);
        assert_eq!(part.stats.batches_missing, 1);
        assert_eq!(part.stats.sweeps, 2);
        // The checkpoint keeps what was skipped.
        let bytes = part.checkpoint(1).unwrap();
        let mut part = Part::restore(&bytes, 0, 1, cfg, &set).unwrap();
        // 1 comes after all: applied (behind the release point: late), not a repeat.
        part.take(env("a", 1, &[1, 2], false, digest), start);
        part.release(&mut out);
        assert_eq!(part.stats.batches_recovered, 1);
        assert_eq!(part.stats.redelivered, 0);
        assert_eq!(part.stats.late, 2);
        // Once more it is a repeat.
        part.take(env("a", 1, &[1, 2], false, digest), start);
        assert_eq!(part.stats.redelivered, 1);
        assert_eq!(part.stats.batches_recovered, 1);
        // A new run of the sensor forgets the old run's numbers.
        let mut next = env("a", 3, &[9], false, digest);
        next.run = 2;
        part.take(next, start);
        assert!(part.sensors["a"].skipped.is_empty());
    }

    #[test]
    fn a_silent_sensor_stops_holding_the_merge_after_max_wait() {
        let (mut part, _, _, digest) = fresh();
        let start = Instant::now();
        let expected = ["a".to_string(), "b".to_string()];
        part.tick(&expected, Duration::from_secs(5), start, start);
        let mut out = Vec::new();
        part.take(env("a", 1, &[1, 2], false, digest), start);
        part.release(&mut out);
        assert_eq!(part.stats.sweeps, 0, "b has not spoken");
        part.tick(
            &expected,
            Duration::from_secs(5),
            start + Duration::from_secs(6),
            start,
        );
        part.release(&mut out);
        assert_eq!(part.stats.waits_expired, 1);
        assert_eq!(part.stats.sweeps, 2);
    }
}
