//! Detect shards on threads of their own: the detect thread (the engine's front: ordering,
//! enrichment, routing, merging) sends each shard its messages in batches over a bounded
//! queue; each shard thread handles them and reports its alerts, progress, counters and
//! memory over one unbounded report channel (a shard never waits on the front, so the two
//! cannot deadlock; what it reports is bounded by what it was sent).

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender, channel, sync_channel};
use std::thread;
use std::time::Duration;

use crate::budget::{Table, Usage};
use crate::detect::shard::{Shard, ShardConfig, sum_memory};
use crate::detect::{DetectStats, ShardHost, ShardMsg, Tagged};
use crate::resources::{Role, ThreadCpu};
use crate::rules::RuleSet;

/// Messages queued for a shard before they are handed over without waiting for a flush.
const BATCH: usize = 1024;
/// Batches in flight per shard.
const QUEUE: usize = 16;

struct Report {
    shard: usize,
    done: u64,
    alerts: Vec<Tagged>,
    stats: DetectStats,
    memory: [(Table, Usage); 2],
    keys: (usize, usize),
}

pub(super) struct ShardThreads {
    inputs: Vec<SyncSender<Vec<ShardMsg>>>,
    pending: Vec<Vec<ShardMsg>>,
    reports: Receiver<Report>,
    handles: Vec<thread::JoinHandle<()>>,
    done: Vec<u64>,
    stats: Vec<DetectStats>,
    memory: Vec<[(Table, Usage); 2]>,
    keys: Vec<(usize, usize)>,
}

impl ShardThreads {
    pub fn spawn(configs: Vec<ShardConfig>, set: &RuleSet) -> std::io::Result<ShardThreads> {
        let (report_tx, reports) = channel::<Report>();
        let mut t = ShardThreads {
            inputs: Vec::new(),
            pending: Vec::new(),
            reports,
            handles: Vec::new(),
            done: vec![0; configs.len()],
            stats: vec![DetectStats::default(); configs.len()],
            memory: Vec::new(),
            keys: vec![(0, 0); configs.len()],
        };
        for (i, c) in configs.into_iter().enumerate() {
            let (tx, rx) = sync_channel::<Vec<ShardMsg>>(QUEUE);
            let shard = Shard::new(c, set);
            t.memory.push(shard.memory());
            let report = report_tx.clone();
            let h = thread::Builder::new()
                .name(format!("shieldtap-shard-{i}"))
                .spawn(move || {
                    let _cpu = ThreadCpu::start(Role::Shard);
                    run(i, shard, rx, report)
                })?;
            t.inputs.push(tx);
            t.pending.push(Vec::with_capacity(BATCH));
            t.handles.push(h);
        }
        Ok(t)
    }

    fn take(&mut self, r: Report) {
        if let Some(d) = self.done.get_mut(r.shard) {
            *d = (*d).max(r.done);
        }
        if let Some(s) = self.stats.get_mut(r.shard) {
            *s = r.stats;
        }
        if let Some(m) = self.memory.get_mut(r.shard) {
            *m = r.memory;
        }
        if let Some(k) = self.keys.get_mut(r.shard) {
            *k = r.keys;
        }
    }

    fn hand_over(&mut self, shard: usize) {
        let Some(p) = self.pending.get_mut(shard) else {
            return;
        };
        if p.is_empty() {
            return;
        }
        let batch = std::mem::replace(p, Vec::with_capacity(BATCH));
        if let Some(tx) = self.inputs.get(shard)
            && tx.send(batch).is_err()
        {
            tracing::error!(shard, "detect shard thread is gone; its alerts are lost");
            // Nothing more will come from it: do not wait for it.
            if let Some(d) = self.done.get_mut(shard) {
                *d = u64::MAX;
            }
        }
    }
}

fn run(i: usize, mut shard: Shard, rx: Receiver<Vec<ShardMsg>>, report: Sender<Report>) {
    while let Ok(batch) = rx.recv() {
        let mut alerts = Vec::new();
        for m in batch {
            shard.handle(m, &mut alerts);
        }
        let r = Report {
            shard: i,
            done: shard.done(),
            alerts,
            stats: shard.stats().clone(),
            memory: shard.memory(),
            keys: shard.tracked_keys(),
        };
        if report.send(r).is_err() {
            return;
        }
    }
}

impl ShardHost for ShardThreads {
    fn count(&self) -> usize {
        self.inputs.len()
    }

    fn inline(&self) -> bool {
        false
    }

    fn send(&mut self, shard: usize, msg: ShardMsg) {
        let full = match self.pending.get_mut(shard) {
            Some(p) => {
                p.push(msg);
                p.len() >= BATCH
            }
            None => false,
        };
        if full {
            self.hand_over(shard);
        }
    }

    fn flush(&mut self, seq: u64) {
        for i in 0..self.inputs.len() {
            if let Some(p) = self.pending.get_mut(i) {
                p.push(ShardMsg::Mark { seq });
            }
            self.hand_over(i);
        }
    }

    fn poll(&mut self, until: Option<u64>, out: &mut Vec<Tagged>, done: &mut [u64]) {
        loop {
            while let Ok(mut r) = self.reports.try_recv() {
                out.append(&mut r.alerts);
                self.take(r);
            }
            let reached = until.is_none_or(|u| self.done.iter().all(|d| *d >= u));
            if reached {
                break;
            }
            match self.reports.recv_timeout(Duration::from_millis(200)) {
                Ok(mut r) => {
                    out.append(&mut r.alerts);
                    self.take(r);
                }
                Err(RecvTimeoutError::Timeout) => {
                    // A shard that died (a bug) will never report: stop waiting for it.
                    for (d, h) in self.done.iter_mut().zip(&self.handles) {
                        if h.is_finished() && *d < u64::MAX {
                            tracing::error!("detect shard thread ended early");
                            *d = u64::MAX;
                        }
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        for (d, s) in done.iter_mut().zip(&self.done) {
            *d = *s;
        }
    }

    fn stats(&self) -> DetectStats {
        let mut s = DetectStats::default();
        for x in &self.stats {
            s.merge(x);
        }
        s
    }

    fn memory(&self) -> Vec<(Table, Usage)> {
        sum_memory(self.memory.iter().map(|a| &a[..]))
    }

    fn tracked_keys(&self) -> (usize, usize) {
        self.keys
            .iter()
            .fold((0, 0), |(a, b), (x, y)| (a + x, b.max(*y)))
    }
}

impl Drop for ShardThreads {
    fn drop(&mut self) {
        // Closing the queues ends the threads.
        self.inputs.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}
