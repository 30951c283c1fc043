//! Counters of the scale-out pieces, read by `/metrics` and the summaries.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// What a sensor's publisher did.
#[derive(Debug, Default)]
pub struct SensorStats {
    pub envelopes: AtomicU64,
    pub events: AtomicU64,
    pub bytes: AtomicU64,
    /// Publishes retried after a failed or missing acknowledgement.
    pub retries: AtomicU64,
    /// Live capture only: envelopes (and the events in them) dropped because the publish
    /// queue was full while the broker was slow or away.
    pub dropped_envelopes: AtomicU64,
    pub dropped_events: AtomicU64,
    /// Envelopes waiting to be published.
    pub queued: AtomicU64,
}

impl SensorStats {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "envelopes_published": self.envelopes.load(Relaxed),
            "events_published": self.events.load(Relaxed),
            "bytes_published": self.bytes.load(Relaxed),
            "publish_retries": self.retries.load(Relaxed),
            "envelopes_dropped": self.dropped_envelopes.load(Relaxed),
            "events_dropped": self.dropped_events.load(Relaxed),
        })
    }
}

/// What a correlator did for one partition.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct PartitionStats {
    pub envelopes: u64,
    pub events: u64,
    pub sweeps: u64,
    /// Envelopes seen again (a consumer reset, a restart or a republish) and skipped.
    pub redelivered: u64,
    /// Messages that arrived behind the merge's release point (applied at once).
    pub late: u64,
    /// Envelopes that could not be used, by reason (`version`, `decode`, `rules`, ...).
    pub rejected: BTreeMap<String, u64>,
    /// Times a silent sensor stopped being waited for.
    pub waits_expired: u64,
    /// Batches given up as missing (a gap in a sensor's numbering that did not fill within
    /// `max_wait_secs`).
    pub batches_missing: u64,
    /// Batches given up as missing that came after all: applied then (their messages
    /// counted `late`), not dropped.
    pub batches_recovered: u64,
    /// Messages released without waiting for a lagging sensor: the merge held too many.
    pub merge_forced: u64,
    pub alerts: u64,
    /// Alerts re-derived after a restart that had already been published: not sent again.
    pub alerts_suppressed: u64,
    pub checkpoints: u64,
    pub checkpoint_bytes: u64,
    /// Wall time of the last checkpoint (Unix seconds), for its age.
    pub checkpoint_unix: f64,
    /// Messages on the partition's subject not yet consumed.
    pub lag: u64,
    /// Restored from a checkpoint at start.
    pub restored: bool,
}

/// Counters of every scale-out piece in this process (exported at zero when unused).
#[derive(Debug, Default)]
pub struct ScaleStats {
    pub sensor: SensorStats,
    pub partitions: Mutex<BTreeMap<u32, PartitionStats>>,
    /// A correlator's shards' own counters (alerts per rule, keys), per partition: the usual
    /// detect metrics of a process that runs shards fed over NATS.
    pub detect: Mutex<BTreeMap<u32, crate::detect::DetectStats>>,
}

impl ScaleStats {
    pub fn update(&self, p: u32, f: impl FnOnce(&mut PartitionStats)) {
        if let Ok(mut m) = self.partitions.lock() {
            f(m.entry(p).or_default());
        }
    }

    pub fn set_detect(&self, p: u32, s: &crate::detect::DetectStats) {
        if let Ok(mut m) = self.detect.lock() {
            m.insert(p, s.clone());
        }
    }

    /// The shards' counters summed over partitions.
    pub fn detect(&self) -> crate::detect::DetectStats {
        let mut out = crate::detect::DetectStats::default();
        if let Ok(m) = self.detect.lock() {
            for s in m.values() {
                out.merge(s);
            }
        }
        out
    }

    pub fn partitions(&self) -> BTreeMap<u32, PartitionStats> {
        self.partitions
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }
}
