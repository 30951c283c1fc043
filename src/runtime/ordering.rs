//! The detect thread: merges the workers' events into one packet-time order, runs the
//! rules, writes alerts.
//!
//! Workers emit events in their own order; how connections are spread over workers must not
//! change the alerts, so events are held (in a few sorted runs, [`Held`]) and released in
//! (emission time, request time, client, server, per-connection sequence) order once every
//! worker has reported a watermark ([`EventBatch::watermark`]) past them by the ordering
//! lateness ([`DetectConfig::ordering_lateness`]). The buffer is capped; beyond it the
//! oldest events are released early and counted as late.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, VecDeque};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender};

use super::{AlertSink, Shared};
use crate::budget::{Table, Usage};
use crate::capture::Timestamp;
use crate::detect::{Alert, DetectConfig, DetectStats, Engine, Event, write_alert};
use crate::output::webhook::Webhooks;
use crate::rules::RuleSet;
use crate::telemetry::metrics::{DetectSnapshot, MemorySource, PUBLISH_EVERY};

/// Events held for ordering at most (about a second of a very busy port).
const MAX_HELD: usize = 1_000_000;

/// One event with its ordering key.
pub(super) struct Ordered {
    /// Packet time at which the transaction was complete (the segment or timeout that ended it).
    pub at: Timestamp,
    pub ts: Timestamp,
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub seq: u64,
    /// What the event holds ([`Event::bytes`]), charged to the ordering buffer.
    pub bytes: usize,
    /// The worker that sent it (set by the detect thread on arrival), which the event goes
    /// back to once detection is done with it ([`Returns`]).
    pub worker: u16,
    /// Behind a pointer: the buffer moves entries on every push and pop (and the spill
    /// heap on every sift step), and an event is several hundred bytes (a busy port holds
    /// seconds of them).
    pub item: Item,
}

/// What a worker hands to detection, in packet-time order.
pub(super) enum Item {
    /// A transaction, in the `Arc` the detect shards are sent (made once, by the worker).
    Event(Arc<Event>),
    /// A TLS ClientHello: the client sent this JA4 fingerprint (joined with transactions
    /// behind an edge that names the client's address and port).
    Hello(Arc<str>),
}

/// Events detection is done with, on their way back to the workers that made them, which
/// drop them (see [`Engine::observe_returning`] for why). Sent once per batch of events
/// taken in. Bounded like every other queue of the pipeline: a worker's queue holds
/// [`RETURN_BATCHES`] batches of at most [`RETURN_BATCH_BYTES`] of events
/// ([`Event::bytes`]), 4 MiB a worker, so a burst released from the ordering buffer at once
/// is not held twice. What does not fit (past a batch's bytes, or a worker whose queue is
/// full because it is busy, or gone because it has finished) is dropped here, as every
/// event was before.
pub(super) struct Returns {
    to: Vec<SyncSender<Vec<Arc<Event>>>>,
    /// Per worker: the events held for it, and their bytes.
    held: Vec<(Vec<Arc<Event>>, usize)>,
}

/// Batches of spent events a worker's return queue holds: a worker drains it before each
/// batch of packets, so more would only wait there.
pub(super) const RETURN_BATCHES: usize = 4;

/// Event bytes one batch of spent events holds at most: a packet batch's events are tens
/// of KiB on the realistic capture.
pub(super) const RETURN_BATCH_BYTES: usize = 1 << 20;

impl Returns {
    pub fn new(to: Vec<SyncSender<Vec<Arc<Event>>>>) -> Returns {
        let held = to.iter().map(|_| (Vec::new(), 0)).collect();
        Returns { to, held }
    }

    /// Holds `ev` (of `bytes`) for its worker; dropped here when the worker's batch is full
    /// or the worker is not one of this run's.
    fn keep(&mut self, worker: u16, ev: Arc<Event>, bytes: usize) {
        if let Some((events, held)) = self.held.get_mut(usize::from(worker))
            && *held + bytes <= RETURN_BATCH_BYTES
        {
            events.push(ev);
            *held += bytes;
        }
    }

    /// Sends each worker what is held for it.
    fn send(&mut self) {
        for (tx, (events, bytes)) in self.to.iter().zip(&mut self.held) {
            if !events.is_empty() {
                *bytes = 0;
                // The next batch's list starts at this one's size (not grown from empty).
                let n = events.len();
                // A full or closed queue hands the batch back in the error: dropped here.
                let _ = tx.try_send(std::mem::replace(events, Vec::with_capacity(n)));
            }
        }
    }
}

/// The full ordering key: completion time, request time, client, server, sequence.
type Key = (Timestamp, Timestamp, SocketAddr, SocketAddr, u64);

impl Ordered {
    fn key(&self) -> Key {
        (self.at, self.ts, self.client, self.server, self.seq)
    }
}

impl PartialEq for Ordered {
    fn eq(&self, o: &Self) -> bool {
        self.key() == o.key()
    }
}
impl Eq for Ordered {}
impl PartialOrd for Ordered {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Ordered {
    fn cmp(&self, o: &Self) -> Ordering {
        self.key().cmp(&o.key())
    }
}

/// Sorted runs a buffer keeps at most before arrivals that fit none go to the spill heap.
const MAX_RUNS: usize = 8;

/// Events waiting for packet-time order. Each worker sends its events nearly in order
/// (a connection closed by a timeout is stamped a little behind), so they are kept in a
/// few sorted runs: an arrival joins the run whose last event is the latest not after it,
/// and the least held event is the least of the runs' first events. Pushing and popping
/// cost a look at each run (one per worker, nearly always) instead of a heap's sift over
/// everything held. An arrival that fits no run once [`MAX_RUNS`] exist goes to a heap:
/// rare with up to 8 workers; past them, the streams beyond the first runs' pay a heap's
/// sift again, as before the runs. Release order is exactly [`Ordered`]'s.
#[derive(Default)]
struct Held {
    runs: Vec<VecDeque<Ordered>>,
    spill: BinaryHeap<Reverse<Ordered>>,
}

/// Where the least held event is.
#[derive(Clone, Copy)]
enum Least {
    Run(usize),
    Spill,
}

impl Held {
    fn len(&self) -> usize {
        self.runs.iter().map(VecDeque::len).sum::<usize>() + self.spill.len()
    }

    fn push(&mut self, o: Ordered) {
        let k = o.key();
        let mut fit: Option<(usize, Key)> = None;
        let mut empty = None;
        for (i, r) in self.runs.iter().enumerate() {
            match r.back() {
                Some(last) => {
                    let lk = last.key();
                    if lk <= k && fit.as_ref().is_none_or(|(_, f)| lk > *f) {
                        fit = Some((i, lk));
                    }
                }
                None => empty = empty.or(Some(i)),
            }
        }
        match (fit, empty) {
            (Some((i, _)), _) | (None, Some(i)) => self.runs[i].push_back(o),
            (None, None) if self.runs.len() < MAX_RUNS => self.runs.push(VecDeque::from([o])),
            (None, None) => self.spill.push(Reverse(o)),
        }
    }

    /// Where the least held event is, and its key.
    fn least(&self) -> Option<(Least, Key)> {
        let mut best: Option<(Least, Key)> = None;
        for (i, r) in self.runs.iter().enumerate() {
            if let Some(f) = r.front() {
                let fk = f.key();
                if best.as_ref().is_none_or(|(_, b)| fk < *b) {
                    best = Some((Least::Run(i), fk));
                }
            }
        }
        if let Some(Reverse(s)) = self.spill.peek() {
            let sk = s.key();
            if best.as_ref().is_none_or(|(_, b)| sk < *b) {
                best = Some((Least::Spill, sk));
            }
        }
        best
    }

    /// Takes the event [`Held::least`] found.
    fn take(&mut self, at: Least) -> Option<Ordered> {
        match at {
            Least::Run(i) => self.runs.get_mut(i)?.pop_front(),
            Least::Spill => self.spill.pop().map(|Reverse(o)| o),
        }
    }

    fn pop(&mut self) -> Option<Ordered> {
        let (at, _) = self.least()?;
        self.take(at)
    }
}

/// What a worker sends after each batch it processed.
pub(super) struct EventBatch {
    pub worker: usize,
    pub events: Vec<Ordered>,
    /// The worker's low watermark: no event it sends later is stamped before it (its
    /// table's last timeout sweep; capture timestamps that step back aside). `u64::MAX`
    /// when it has finished.
    pub watermark: Timestamp,
}

pub(super) struct DetectResult {
    pub stats: DetectStats,
    /// The detect stage's tables at the end of input (before open aggregates are flushed),
    /// and the ordering buffer at its fullest.
    pub memory: Vec<(Table, Usage)>,
    pub written: u64,
    pub actors: crate::actor::registry::ActorSummary,
    pub inventory: serde_json::Value,
}

/// Actors listed in the summary's risk table.
const TOP_ACTORS: usize = 20;

struct Writer {
    sink: AlertSink,
    written: u64,
}

impl Writer {
    fn write(&mut self, alerts: &mut Vec<Alert>) -> std::io::Result<()> {
        if alerts.is_empty() {
            return Ok(());
        }
        self.written += alerts.len() as u64;
        match &mut self.sink {
            AlertSink::Discard => alerts.clear(),
            AlertSink::Writer(w) => {
                for a in alerts.drain(..) {
                    write_alert(w, &a)?;
                }
                w.flush()?;
            }
            AlertSink::Collect(v) => {
                if let Ok(mut v) = v.lock() {
                    v.append(alerts);
                }
                alerts.clear();
            }
        }
        Ok(())
    }
}

/// Where the detect stage's alerts go.
pub(super) struct AlertOutputs {
    pub sink: AlertSink,
    pub hooks: Option<Arc<Webhooks>>,
    pub decisions: Option<super::DecisionSink>,
    /// A sensor's shards: partitions of the events stream.
    pub export: Option<Box<dyn crate::detect::ShardHost>>,
}

pub(super) fn run(
    cfg: DetectConfig,
    shared: Arc<Shared>,
    workers: usize,
    rx: Receiver<EventBatch>,
    to: AlertOutputs,
    live: bool,
    mut returns: Returns,
) -> std::io::Result<DetectResult> {
    let AlertOutputs {
        sink,
        hooks,
        mut decisions,
        export,
    } = to;
    let mut rules = shared.rules.load_full();
    let held_limit = cfg.budget.share(Table::Ordering);
    let lateness = u64::try_from(cfg.ordering_lateness.as_nanos()).unwrap_or(u64::MAX);
    // Live: the TLS fingerprints learned before a restart (replay always starts afresh,
    // so a replay's alerts depend on the capture alone).
    let fingerprints_file = cfg.tls.state_file.clone().filter(|_| live);
    let mut engine = if let Some(host) = export {
        Engine::with_shards(cfg, &rules, host)
    } else if cfg.shards > 1 {
        let configs = crate::detect::shard::configs(&cfg, cfg.shards);
        let threads = super::shards::ShardThreads::spawn(configs, &rules)?;
        Engine::with_shards(cfg, &rules, Box::new(threads))
    } else {
        Engine::new(cfg, &rules)
    };
    if let Some(p) = &fingerprints_file {
        match std::fs::read(p) {
            Ok(b) => match serde_json::from_slice(&b)
                .map_err(|e| e.to_string())
                .and_then(|v| engine.restore_fingerprints(&v))
            {
                Ok(n) => {
                    tracing::info!(file = %p.display(), fingerprints = n, "TLS fingerprints restored")
                }
                Err(e) => {
                    tracing::warn!(file = %p.display(), error = %e, "TLS fingerprints not restored")
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(file = %p.display(), error = %e, "TLS fingerprints not restored")
            }
        }
    }
    let mut waiting = Held::default();
    // Bytes of the events held (charged to the ordering buffer's share), the most held,
    // and events released early because the buffer was full.
    let mut held = 0usize;
    let mut ordering = Usage {
        limit: held_limit as u64,
        ..Usage::default()
    };
    let mut marks = vec![Timestamp::ZERO; workers];
    let mut last: Option<(Timestamp, Timestamp, SocketAddr, SocketAddr, u64)> = None;
    let mut alerts = Vec::new();
    let mut out = Writer { sink, written: 0 };
    let mut failed: Option<std::io::Error> = None;
    let mut last_publish = std::time::Instant::now();
    let publish = |engine: &Engine, rules: &RuleSet, ordering: &Usage| {
        let mut memory = engine.memory();
        memory.push((Table::Ordering, *ordering));
        shared.hub.publish_memory(MemorySource::Detect(0), &memory);
        shared.hub.publish_detect(DetectSnapshot {
            stats: engine.stats(),
            actors: engine.actor_stats(),
            rules: crate::telemetry::metrics::rule_labels(rules),
        });
    };
    publish(&engine, &rules, &ordering);
    let release = |o: Ordered,
                   engine: &mut Engine,
                   last: &mut Option<_>,
                   alerts: &mut Vec<Alert>,
                   returns: &mut Returns| {
        let k = o.key();
        if last.as_ref().is_some_and(|l| k < *l) {
            engine.note_late(1);
        } else {
            *last = Some(k);
        }
        match o.item {
            Item::Event(ev) => {
                engine.note_order(&crate::detect::StreamOrder {
                    at: o.at,
                    ts: o.ts,
                    client: o.client,
                    server: o.server,
                    seq: o.seq,
                });
                if let Some(ev) = engine.observe_returning(ev, alerts) {
                    returns.keep(o.worker, ev, o.bytes);
                }
            }
            Item::Hello(ja4) => engine.hello(o.client, ja4, o.ts),
        }
    };
    while let Ok(batch) = rx.recv() {
        let current = shared.rules.load_full();
        if !Arc::ptr_eq(&current, &rules) {
            engine.replace_rules(&current, &mut alerts);
            rules = current;
        }
        if let Some(m) = marks.get_mut(batch.worker) {
            *m = (*m).max(batch.watermark);
        }
        let worker = u16::try_from(batch.worker).unwrap_or(u16::MAX);
        for mut o in batch.events {
            o.worker = worker;
            held += o.bytes;
            waiting.push(o);
        }
        if held as u64 > ordering.bytes {
            ordering.bytes = held as u64;
            ordering.entries = waiting.len() as u64;
        }
        let low = marks.iter().copied().min().unwrap_or_default();
        let ready = Timestamp(low.0.saturating_sub(lateness));
        while let Some((least, (top_at, ..))) = waiting.least() {
            let full = waiting.len() > MAX_HELD || held > held_limit;
            if top_at > ready && !full {
                break;
            }
            if top_at > ready {
                ordering.evictions += 1;
            }
            let Some(o) = waiting.take(least) else { break };
            held = held.saturating_sub(o.bytes);
            release(o, &mut engine, &mut last, &mut alerts, &mut returns);
        }
        // Live: follow-up alerts fall due with the clock even when an actor falls silent.
        // Replay sweeps only on event time, so the result never depends on batching.
        if live && low.0 != u64::MAX {
            engine.sweep(ready, &mut alerts);
        }
        engine.settle(&mut alerts);
        returns.send();
        if let Some(h) = &hooks {
            h.submit(&alerts);
        }
        if let Some(d) = &mut decisions
            && let Err(e) = d.observe(&alerts, live)
        {
            failed.get_or_insert(e);
        }
        if failed.is_none()
            && let Err(e) = out.write(&mut alerts)
        {
            failed = Some(e);
        }
        alerts.clear();
        if last_publish.elapsed() >= PUBLISH_EVERY {
            last_publish = std::time::Instant::now();
            publish(&engine, &rules, &ordering);
        }
    }
    while let Some(o) = waiting.pop() {
        release(o, &mut engine, &mut last, &mut alerts, &mut returns);
    }
    // The workers have finished: what is left is dropped here.
    drop(returns);
    if let Some(p) = &fingerprints_file {
        let body = engine.save_fingerprints().to_string();
        let tmp = p.with_extension("tmp");
        if let Err(e) = std::fs::write(&tmp, body).and_then(|()| std::fs::rename(&tmp, p)) {
            tracing::warn!(file = %p.display(), error = %e, "TLS fingerprints not saved");
        }
    }
    let mut memory = engine.memory();
    memory.push((Table::Ordering, ordering));
    engine.finish(&mut alerts);
    publish(&engine, &rules, &ordering);
    if let Some(h) = &hooks {
        h.submit(&alerts);
    }
    if let Some(d) = &mut decisions
        && let Err(e) = d.observe(&alerts, live)
    {
        failed.get_or_insert(e);
    }
    if failed.is_none()
        && let Err(e) = out.write(&mut alerts)
    {
        failed = Some(e);
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(DetectResult {
            stats: engine.stats(),
            memory,
            written: out.written,
            actors: engine.actors(TOP_ACTORS),
            inventory: engine.inventory(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(at: u64, ts: u64, port: u16, seq: u64) -> Ordered {
        Ordered {
            at: Timestamp(at),
            ts: Timestamp(ts),
            client: SocketAddr::from(([10, 0, 0, 1], port)),
            server: SocketAddr::from(([10, 0, 0, 2], 443)),
            seq,
            bytes: 0,
            worker: 0,
            item: Item::Hello(Arc::from("t")),
        }
    }

    proptest! {
        /// Pushes and pops in any interleaving, with many equal packet times (ties) and
        /// late events: the buffer releases exactly what a heap of whole entries would.
        #[test]
        fn held_releases_in_full_key_order(
            ops in prop::collection::vec(
                prop_oneof![
                    (0u64..6, 0u64..3, 0u16..4, 0u64..3).prop_map(Some),
                    Just(None),
                ],
                0..200,
            ),
        ) {
            let mut held = Held::default();
            let mut reference: BinaryHeap<Reverse<Ordered>> = BinaryHeap::new();
            for op in ops {
                match op {
                    Some((at, ts, port, seq)) => {
                        held.push(entry(at, ts, port, seq));
                        reference.push(Reverse(entry(at, ts, port, seq)));
                    }
                    None => {
                        prop_assert_eq!(
                            held.least().map(|(_, k)| k.0),
                            reference.peek().map(|Reverse(o)| o.at)
                        );
                        let (a, b) = (held.pop(), reference.pop().map(|Reverse(o)| o));
                        prop_assert_eq!(a.map(|o| o.key()), b.map(|o| o.key()));
                    }
                }
                prop_assert_eq!(held.len(), reference.len());
            }
            while let Some(Reverse(o)) = reference.pop() {
                prop_assert_eq!(held.pop().map(|o| o.key()), Some(o.key()));
            }
            prop_assert!(held.pop().is_none());
        }
    }

    /// Two workers' streams, each in order but for a connection closed by a timeout and
    /// stamped behind: they keep to a few runs, nothing spills, and the merge is in order.
    #[test]
    fn nearly_ordered_streams_keep_to_few_runs() {
        let mut held = Held::default();
        for i in 0..1000u64 {
            held.push(entry(10 * i, 10 * i, 1, i));
            held.push(entry(10 * i + 5, 10 * i, 2, i));
            if i % 100 == 50 {
                held.push(entry(10 * i - 300, 10 * i - 400, 3, i));
            }
        }
        assert!(held.runs.len() <= 3, "{} runs", held.runs.len());
        assert!(held.spill.is_empty());
        assert_eq!(held.len(), 2010);
        let mut last = None;
        while let Some(o) = held.pop() {
            assert!(last.is_none_or(|l| l <= o.key()));
            last = Some(o.key());
        }
        assert_eq!(held.len(), 0);
    }

    /// Spent events go to the worker that sent them, a batch per send; a worker whose
    /// queue is full or gone gets nothing (its events are dropped here) and nothing waits.
    #[test]
    fn spent_events_go_back_to_their_worker() {
        let (to, from): (Vec<_>, Vec<_>) = (0..3).map(|_| std::sync::mpsc::sync_channel(1)).unzip();
        let mut returns = Returns::new(to);
        let ev = |secs: f64| Arc::new(crate::detect::tests::ev(secs, "10.0.0.1"));
        let (a, b) = (ev(1.0), ev(2.0));
        returns.keep(0, Arc::clone(&a), 100);
        returns.keep(1, Arc::clone(&b), 100);
        returns.keep(0, ev(3.0), 100);
        // Not a worker of this run: dropped at once.
        returns.keep(7, ev(4.0), 100);
        returns.send();
        let got = from[0].try_recv().unwrap();
        assert_eq!(got.len(), 2);
        assert!(Arc::ptr_eq(&got[0], &a));
        drop(got);
        assert!(Arc::ptr_eq(&from[1].try_recv().unwrap()[0], &b));
        // Nothing held for the third worker: no empty batch is sent.
        assert!(from[2].try_recv().is_err());
        // Worker 1's queue is full (one batch not taken), so the next is dropped here.
        returns.keep(0, ev(5.0), 100);
        returns.keep(1, Arc::clone(&b), 100);
        returns.send();
        returns.keep(1, Arc::clone(&b), 100);
        returns.send();
        assert_eq!(Arc::strong_count(&b), 2, "one sent, one dropped, ours");
        assert_eq!(from[1].try_recv().unwrap().len(), 1);
        assert!(from[1].try_recv().is_err());
        // A batch holds at most RETURN_BATCH_BYTES of events: past them, dropped here; a
        // sent batch starts the count again.
        let half = RETURN_BATCH_BYTES / 2;
        returns.keep(1, Arc::clone(&b), half);
        returns.keep(1, Arc::clone(&b), half);
        returns.keep(1, Arc::clone(&b), 1);
        assert_eq!(Arc::strong_count(&b), 3, "two held, one dropped, ours");
        returns.send();
        assert_eq!(from[1].try_recv().unwrap().len(), 2);
        returns.keep(1, Arc::clone(&b), half);
        returns.send();
        assert_eq!(from[1].try_recv().unwrap().len(), 1);
        // A worker that has finished: its events are dropped, not kept.
        drop(from);
        returns.keep(0, Arc::clone(&a), 100);
        returns.send();
        assert_eq!(Arc::strong_count(&a), 1);
    }

    #[test]
    fn held_entries_stay_small() {
        // What the ordering buffer moves per push, pop and sift step.
        assert!(std::mem::size_of::<super::Ordered>() <= 128);
    }
}
