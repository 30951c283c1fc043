//! The sensor side: a [`ShardHost`] that publishes what the front routes to each detect
//! shard (partition) to the events stream instead of running the shards.
//!
//! The detect thread hands each partition's messages, batched, to a publisher thread over a
//! bounded queue (replay waits when it is full; live capture drops the batch and counts it).
//! The publisher numbers each partition's envelopes, encodes them (split when one would be
//! near the broker's message size cap), publishes with a message id (JetStream drops a
//! republished copy) and keeps up to `max_in_flight` acknowledgements pending, awaiting
//! them when the window is full or the publisher has had nothing to send for 50 ms. A
//! publish that fails or is not acknowledged (the broker is away) is retried until it is;
//! retries can reorder envelopes, which the correlator puts back in order by their
//! numbers (it holds the partition for a missing one up to `max_wait_secs`). At the
//! end of a replay the sensor publishes a finished envelope to every partition and waits
//! for every acknowledgement.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;

use super::config::{ExportConfig, NatsConfig};
use super::stats::ScaleStats;
use super::wire::{Envelope, Msg, VERSION, rules_digest};
use crate::budget::{Table, Usage};
use crate::capture::Timestamp;
use crate::detect::shard::PROTOCOL;
use crate::detect::{DetectStats, ShardHost, ShardMsg, StreamOrder, Tagged};
use crate::rules::RuleSet;

/// Messages queued for a partition before they are handed over without waiting for a
/// flush (a few hundred kilobytes encoded).
const BATCH: usize = 256;
/// Encoded envelopes larger than this are split (NATS' default message cap is 1 MiB).
const SPLIT_BYTES: usize = 768 * 1024;
/// An idle partition still gets the sensor's watermark this often (packet time).
const HEARTBEAT_NANOS: u64 = 200_000_000;

enum Job {
    Batch {
        partition: u32,
        clock: Timestamp,
        finished: bool,
        rules: u64,
        msgs: Vec<Msg>,
    },
    /// Reply once everything before has been acknowledged.
    Drain(std::sync::mpsc::Sender<()>),
}

/// A detect-shard host that publishes to NATS JetStream.
pub struct NatsShards {
    parts: u32,
    pending: Vec<Vec<Msg>>,
    /// Watermark last sent to each partition.
    sent_clock: Vec<Timestamp>,
    clock: Timestamp,
    order: Option<StreamOrder>,
    /// The noted order was taken by an event (a sweep after it is a live clock sweep).
    order_used: bool,
    rules: u64,
    finished: bool,
    live: bool,
    tx: tokio::sync::mpsc::Sender<Job>,
    stats: Arc<ScaleStats>,
    publisher: Option<std::thread::JoinHandle<()>>,
    /// Live capture at shutdown: stop retrying what the broker has not acknowledged.
    abandon: Arc<AtomicBool>,
}

/// Live capture at shutdown: how long the last envelopes may wait for the broker.
const LIVE_DRAIN: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum SensorError {
    #[error(transparent)]
    Connect(#[from] super::connect::ConnectError),
    #[error("cannot start the publisher: {0}")]
    Io(#[from] std::io::Error),
}

impl NatsShards {
    /// Connects, makes sure the events stream exists and starts the publisher thread.
    pub fn start(
        nats: &NatsConfig,
        export: &ExportConfig,
        set: &RuleSet,
        live: bool,
        stats: Arc<ScaleStats>,
    ) -> Result<NatsShards, SensorError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let js = rt.block_on(async {
            let client =
                super::connect::connect(nats, &format!("shieldtap-sensor-{}", export.sensor))
                    .await?;
            let js = jetstream::new(client);
            super::connect::events_stream(&js, nats).await?;
            Ok::<_, super::connect::ConnectError>(js)
        })?;
        let (tx, rx) = tokio::sync::mpsc::channel(export.queue_batches);
        let run = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let abandon = Arc::new(AtomicBool::new(false));
        let p = Publisher {
            abandon: abandon.clone(),
            js,
            nats: nats.clone(),
            sensor: export.sensor.clone(),
            run,
            next: vec![1; nats.partitions as usize],
            max_in_flight: export.max_in_flight,
            stats: stats.clone(),
            in_flight: VecDeque::new(),
        };
        let publisher = std::thread::Builder::new()
            .name("shieldtap-export".into())
            .spawn(move || rt.block_on(p.run(rx)))?;
        tracing::info!(sensor = %export.sensor, partitions = nats.partitions, stream = %nats.stream, "publishing detect events to NATS JetStream");
        Ok(NatsShards {
            parts: nats.partitions,
            pending: (0..nats.partitions).map(|_| Vec::new()).collect(),
            sent_clock: vec![Timestamp::ZERO; nats.partitions as usize],
            clock: Timestamp::ZERO,
            order: None,
            order_used: true,
            rules: rules_digest(set),
            finished: false,
            live,
            tx,
            stats,
            publisher: Some(publisher),
            abandon,
        })
    }

    fn hand_over(&mut self, partition: usize) {
        let Some(p) = self.pending.get_mut(partition) else {
            return;
        };
        let msgs = std::mem::take(p);
        let events = event_count(&msgs);
        if let Some(c) = self.sent_clock.get_mut(partition) {
            *c = self.clock;
        }
        let job = Job::Batch {
            partition: partition as u32,
            clock: self.clock,
            finished: self.finished,
            rules: self.rules,
            msgs,
        };
        self.stats.sensor.queued.fetch_add(1, Relaxed);
        let sent = if self.live {
            self.tx.try_send(job).is_ok()
        } else {
            self.tx.blocking_send(job).is_ok()
        };
        if !sent {
            self.stats.sensor.queued.fetch_sub(1, Relaxed);
            self.stats.sensor.dropped_envelopes.fetch_add(1, Relaxed);
            self.stats.sensor.dropped_events.fetch_add(events, Relaxed);
        }
    }

    fn push(&mut self, partition: usize, m: Msg) {
        let at = m.key().0.at;
        if at > self.clock {
            self.clock = at;
        }
        let full = match self.pending.get_mut(partition) {
            Some(p) => {
                p.push(m);
                p.len() >= BATCH
            }
            None => false,
        };
        if full {
            self.hand_over(partition);
        }
    }
}

/// The place of a message that follows no event (a live clock sweep, or an event without
/// a noted order): its own time.
fn order_at(ts: Timestamp) -> StreamOrder {
    let none = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
    StreamOrder {
        at: ts,
        ts,
        client: none,
        server: none,
        seq: 0,
    }
}

/// Events among the messages (each counted once per partition it goes to).
fn event_count(msgs: &[Msg]) -> u64 {
    msgs.iter()
        .filter(|m| matches!(m, Msg::Event { .. }))
        .count() as u64
}

impl ShardHost for NatsShards {
    fn count(&self) -> usize {
        self.parts as usize
    }

    fn inline(&self) -> bool {
        false
    }

    fn note_order(&mut self, order: &StreamOrder) {
        self.order = Some(*order);
        self.order_used = false;
    }

    fn send(&mut self, shard: usize, msg: ShardMsg) {
        match msg {
            ShardMsg::Event { event, rules, .. } => {
                let order = self.order.unwrap_or_else(|| order_at(event.ts));
                self.order_used = true;
                let event = super::pseudonymize(event);
                self.push(
                    shard,
                    Msg::Event {
                        order,
                        event,
                        rules,
                    },
                );
            }
            ShardMsg::Sweep { now, .. } => {
                // A sweep triggered by the event about to be routed stands just before it;
                // a live clock sweep stands at its own time.
                let order = match self.order {
                    Some(o) if !self.order_used => o,
                    _ => order_at(now),
                };
                self.push(shard, Msg::Sweep { order, now });
            }
            ShardMsg::Rules { set, .. } => {
                // Correlators load the same rule files; the digest tells them apart.
                for i in 0..self.pending.len() {
                    if !self.pending[i].is_empty() {
                        self.hand_over(i);
                    }
                }
                self.rules = rules_digest(&set);
            }
            ShardMsg::Mark { .. } => {}
            ShardMsg::Finish => self.finished = true,
        }
    }

    fn flush(&mut self, _seq: u64) {
        for i in 0..self.pending.len() {
            let idle = self
                .sent_clock
                .get(i)
                .is_some_and(|c| self.clock.0.saturating_sub(c.0) >= HEARTBEAT_NANOS);
            if !self.pending[i].is_empty() || idle || self.finished {
                self.hand_over(i);
            }
        }
    }

    fn poll(&mut self, until: Option<u64>, _out: &mut Vec<Tagged>, done: &mut [u64]) {
        if until == Some(u64::MAX) {
            // The end: wait until the broker has acknowledged everything (live capture: for
            // a few seconds at most; what is still unacknowledged then is counted dropped).
            let (tx, rx) = std::sync::mpsc::channel();
            if !self.live {
                if self.tx.blocking_send(Job::Drain(tx)).is_ok() {
                    let _ = rx.recv();
                }
            } else {
                let deadline = std::time::Instant::now() + LIVE_DRAIN;
                let mut job = Job::Drain(tx);
                let sent = loop {
                    match self.tx.try_send(job) {
                        Ok(()) => break true,
                        Err(tokio::sync::mpsc::error::TrySendError::Full(j))
                            if std::time::Instant::now() < deadline =>
                        {
                            job = j;
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Err(_) => break false,
                    }
                };
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if !sent || rx.recv_timeout(left).is_err() {
                    tracing::warn!(
                        "the broker did not acknowledge the last envelopes; counted dropped"
                    );
                    self.abandon.store(true, Relaxed);
                }
            }
        }
        done.iter_mut().for_each(|d| *d = u64::MAX);
    }

    fn stats(&self) -> DetectStats {
        DetectStats::default()
    }

    fn memory(&self) -> Vec<(Table, Usage)> {
        Vec::new()
    }

    fn tracked_keys(&self) -> (usize, usize) {
        (0, 0)
    }
}

impl Drop for NatsShards {
    fn drop(&mut self) {
        // Closing the queue ends the publisher once it has published what it holds (live
        // capture: without retrying what the broker refuses; that is counted dropped).
        if self.live {
            self.abandon.store(true, Relaxed);
        }
        let (tx, _) = tokio::sync::mpsc::channel(1);
        drop(std::mem::replace(&mut self.tx, tx));
        if let Some(h) = self.publisher.take() {
            let _ = h.join();
        }
    }
}

struct Outgoing {
    subject: String,
    id: String,
    payload: Bytes,
    events: u64,
}

/// How long the publisher waits for another batch before it awaits the acknowledgements
/// pending (see [`Publisher::run`]).
const SETTLE_WHEN_IDLE: Duration = Duration::from_millis(50);

struct Publisher {
    abandon: Arc<AtomicBool>,
    js: jetstream::Context,
    nats: NatsConfig,
    sensor: String,
    run: u64,
    next: Vec<u64>,
    max_in_flight: usize,
    stats: Arc<ScaleStats>,
    in_flight: VecDeque<(Outgoing, jetstream::context::PublishAckFuture)>,
}

impl Publisher {
    async fn run(mut self, mut rx: tokio::sync::mpsc::Receiver<Job>) {
        loop {
            // Acknowledgements are awaited when the window is full, or once no batch has
            // come for `SETTLE_WHEN_IDLE`: a publish the broker never acknowledged (one
            // sent as a route or a node went away) is then retried within the
            // acknowledgement timeout. Awaited only when the window filled, it waited for
            // `max_in_flight` more envelopes (at a quiet sensor, the end of the run) while
            // the correlator held the partition for it and then skipped it as missing.
            let job = if self.in_flight.is_empty() {
                rx.recv().await
            } else {
                match tokio::time::timeout(SETTLE_WHEN_IDLE, rx.recv()).await {
                    Ok(job) => job,
                    Err(_) => {
                        self.settle(0).await;
                        continue;
                    }
                }
            };
            let Some(job) = job else { break };
            match job {
                Job::Batch {
                    partition,
                    clock,
                    finished,
                    rules,
                    msgs,
                } => {
                    self.stats.sensor.queued.fetch_sub(1, Relaxed);
                    let mut out = Vec::new();
                    self.encode(partition, clock, finished, rules, msgs, &mut out);
                    for o in out {
                        self.publish(o).await;
                    }
                }
                Job::Drain(reply) => {
                    self.settle(0).await;
                    let _ = reply.send(());
                }
            }
        }
        self.settle(0).await;
    }

    /// Encodes one partition's messages as one envelope, or several when too large.
    fn encode(
        &mut self,
        partition: u32,
        clock: Timestamp,
        finished: bool,
        rules: u64,
        msgs: Vec<Msg>,
        out: &mut Vec<Outgoing>,
    ) {
        let Some(next) = self.next.get_mut(partition as usize) else {
            return;
        };
        let events = event_count(&msgs);
        let mut env = Envelope {
            version: VERSION,
            protocol: PROTOCOL,
            rules,
            sensor: self.sensor.clone(),
            run: self.run,
            batch: *next,
            partition,
            partitions: self.nats.partitions,
            clock,
            finished,
            msgs,
        };
        match env.encode() {
            Ok(b) if b.len() <= SPLIT_BYTES || env.msgs.len() <= 1 => {
                *next += 1;
                out.push(Outgoing {
                    subject: self.nats.events_subject(partition),
                    id: format!("{}.{}.p{}.{}", self.sensor, self.run, partition, env.batch),
                    payload: Bytes::from(b),
                    events,
                });
            }
            Ok(_) => {
                let tail = env.msgs.split_off(env.msgs.len() / 2);
                let head = std::mem::take(&mut env.msgs);
                // The first half is not the last word of this flush: no finish yet.
                let first_clock = head.last().map_or(clock, |m| m.key().0.at);
                self.encode(partition, first_clock, false, rules, head, out);
                self.encode(partition, clock, finished, rules, tail, out);
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot encode an envelope; its events are lost");
                self.stats.sensor.dropped_envelopes.fetch_add(1, Relaxed);
                self.stats.sensor.dropped_events.fetch_add(events, Relaxed);
            }
        }
    }

    async fn publish(&mut self, o: Outgoing) {
        if self.abandon.load(Relaxed) {
            self.stats.sensor.dropped_envelopes.fetch_add(1, Relaxed);
            self.stats
                .sensor
                .dropped_events
                .fetch_add(o.events, Relaxed);
            return;
        }
        self.settle(self.max_in_flight.saturating_sub(1)).await;
        match self.send(&o).await {
            Some(ack) => self.in_flight.push_back((o, ack)),
            None => self.until_acked(o).await,
        }
    }

    async fn send(&self, o: &Outgoing) -> Option<jetstream::context::PublishAckFuture> {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", o.id.as_str());
        self.js
            .publish_with_headers(o.subject.clone(), h, o.payload.clone())
            .await
            .ok()
    }

    /// Waits for acknowledgements until at most `keep` are pending.
    async fn settle(&mut self, keep: usize) {
        while self.in_flight.len() > keep {
            let Some((o, ack)) = self.in_flight.pop_front() else {
                break;
            };
            match ack.await {
                Ok(_) => self.count(&o),
                Err(e) => {
                    tracing::debug!(error = %e, "publish not acknowledged; retrying");
                    self.until_acked(o).await;
                }
            }
        }
    }

    /// Publishes one envelope again and again until the broker acknowledges it (or, live at
    /// shutdown, until told to give up: then it is counted dropped).
    async fn until_acked(&mut self, o: Outgoing) {
        let mut wait = Duration::from_millis(50);
        let mut warned = std::time::Instant::now();
        loop {
            if self.abandon.load(Relaxed) {
                self.stats.sensor.dropped_envelopes.fetch_add(1, Relaxed);
                self.stats
                    .sensor
                    .dropped_events
                    .fetch_add(o.events, Relaxed);
                return;
            }
            if warned.elapsed() >= Duration::from_secs(10) {
                warned = std::time::Instant::now();
                tracing::warn!(subject = %o.subject, "the broker has not acknowledged for 10 s; still retrying");
            }
            self.stats.sensor.retries.fetch_add(1, Relaxed);
            if let Some(ack) = self.send(&o).await
                && ack.await.is_ok()
            {
                self.count(&o);
                return;
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(1));
        }
    }

    fn count(&self, o: &Outgoing) {
        let s = &self.stats.sensor;
        s.envelopes.fetch_add(1, Relaxed);
        s.events.fetch_add(o.events, Relaxed);
        s.bytes.fetch_add(o.payload.len() as u64, Relaxed);
    }
}
