//! Metrics: every stage's counters in the Prometheus text format.
//!
//! The packet path never touches a shared counter: each capture thread, worker and the
//! detect thread keep their own plain counters (the stage `*Stats` structs) and publish a
//! copy here a few times a second ([`PUBLISH_EVERY`]). A scrape sums the latest copies and
//! encodes them with `prometheus-client` (a [`Collector`] run per scrape). Every name is in
//! [`NAMES`], starts with `shieldtap_`, and carries only bounded labels: stage, layer, kind,
//! reason, cap, verdict, token family, rule id, category, severity, receiver, result; never
//! an address, path, user or token. A family whose label values are known in advance is
//! exported from zero at startup (decode layers, HTTP anomaly kinds, method and status
//! classes, from the stages' own lists; webhook families per configured receiver), so
//! `rate()` and `absent()` work from the first scrape.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::actor::registry::RegistryStats;
use crate::budget::{Table, Usage};
use crate::capture::CaptureStats;
use crate::decode::{DecodeStats, Layer};
use crate::detect::DetectStats;
use crate::http::{Anomaly, HttpStats, METHOD_CLASSES, STATUS_CLASSES};
use crate::output::{QueueStats, ReloadStats};
use crate::reassembly::ReassemblyStats;
use crate::token::TokenStats;

/// How often a thread copies its counters here.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(250);

/// Every metric name (without the `shieldtap_` prefix and the counters' `_total` suffix
/// that the encoder adds), for the dashboards test and the README.
pub const NAMES: &[&str] = &[
    "build_info",
    "capture_packets",
    "capture_bytes",
    "capture_drops",
    "capture_file_problems",
    "queue_batches",
    "decode_errors",
    "decode_tunnels",
    "decode_ip_fragments",
    "flows_active",
    "flows",
    "flows_reused",
    "split_window_exceeded",
    "reassembly_gaps",
    "reassembly_gap_bytes",
    "reassembly_anomalies",
    "cap_hits",
    "http_requests",
    "http_responses",
    "http_transactions",
    "http_anomalies",
    "http2_connections",
    "http2_events",
    "grpc_calls",
    "grpc_message_errors",
    "tls_connections",
    "tls_hellos",
    "tls_errors",
    "tls_fingerprints_learned",
    "tls_fingerprinted_requests",
    "token_verdicts",
    "identity_verdicts",
    "token_cache_lookups",
    "actors_tracked",
    "actors_evicted",
    "detect_events",
    "detect_late_events",
    "detect_keys_evicted",
    "objects_tracked",
    "objects_evicted",
    "shared_addresses",
    "public_collections",
    "public_fields",
    "alerts",
    "alerts_aggregated_requests",
    "webhook_deliveries",
    "webhook_spool_depth",
    "reloads",
    "processing_latency_seconds",
    "memory_bytes",
    "memory_limit_bytes",
    "memory_entries",
    "memory_evictions",
    "process_cpu_seconds",
    "process_resident_memory_bytes",
    "process_resident_memory_peak_bytes",
    "shed_flows",
    "shed_packets",
    "shed_level",
    "shed_unanswered",
    "response_scans",
    "response_scans_memoized",
    "body_decodes",
    "body_decodes_memoized",
    "enforce_checks",
    "enforce_check_reasons",
    "enforce_check_verdicts",
    "enforce_check_duration_seconds",
    "enforce_connections_refused",
    "enforce_checks_without_uri",
    "bouncer_pulls",
    "bouncer_unauthorized",
    "follow_failures",
    "decisions_active",
    "decisions_added",
    "decisions_expired",
    "decisions_deleted",
    "decisions_evicted",
    "decisions_persist_failures",
    "export_envelopes",
    "export_events",
    "export_bytes",
    "export_retries",
    "export_dropped",
    "export_queue_envelopes",
    "correlator_events",
    "correlator_envelopes",
    "correlator_lag_messages",
    "correlator_checkpoint_age_seconds",
    "correlator_checkpoint_bytes",
    "correlator_checkpoints",
    "correlator_redeliveries",
    "correlator_late",
    "correlator_alerts",
    "correlator_alerts_suppressed",
    "correlator_rejected",
    "correlator_waits_expired",
    "correlator_batches_missing",
    "correlator_batches_recovered",
    "correlator_merge_forced",
];

/// Latency histogram bucket bounds, in seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A worker's counters.
#[derive(Clone, Debug, Default)]
pub struct WorkerSnapshot {
    pub reassembly: ReassemblyStats,
    pub http: HttpStats,
    /// Split taps: the merge of several capture threads by packet time.
    pub split: crate::capture::SplitStats,
    pub active_flows: u64,
    /// Packet-to-transaction processing latency, microseconds.
    pub latency_us: Option<Histogram<u64>>,
}

/// A capture thread's counters.
#[derive(Clone, Debug, Default)]
pub struct CaptureSnapshot {
    pub capture: CaptureStats,
    pub decode: DecodeStats,
    pub queue: QueueStats,
}

/// The detect thread's counters.
#[derive(Clone, Debug, Default)]
pub struct DetectSnapshot {
    pub stats: DetectStats,
    pub actors: RegistryStats,
    /// Rule id → (category, severity), for the alert labels.
    pub rules: Vec<(String, &'static str, &'static str)>,
}

pub use crate::output::webhook::WebhookSnapshot;

/// Each rule's id, category and severity: the labels of its alert counters.
pub fn rule_labels(set: &crate::rules::RuleSet) -> Vec<(String, &'static str, &'static str)> {
    set.rules
        .iter()
        .map(|r| {
            (
                r.id.as_str().to_string(),
                r.category.as_str(),
                r.severity.as_str(),
            )
        })
        .collect()
}

type Source<T> = Box<dyn Fn() -> T + Send + Sync>;

/// Who owns a table's share: a worker (flows, streams, HTTP) or a detect shard (keys,
/// actors, objects...). The token cache is shared and read from the token stats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MemorySource {
    Worker(usize),
    Detect(usize),
}

/// Where every thread publishes and every scrape reads.
#[derive(Default)]
pub struct Hub {
    workers: Mutex<Vec<WorkerSnapshot>>,
    captures: Mutex<Vec<CaptureSnapshot>>,
    detect: Mutex<DetectSnapshot>,
    token: Mutex<Option<Source<TokenStats>>>,
    reloads: Mutex<Option<Source<ReloadStats>>>,
    webhooks: Mutex<Option<Source<Vec<WebhookSnapshot>>>>,
    /// The latest usage each owner published, per table.
    memory: Mutex<BTreeMap<MemorySource, Vec<(Table, Usage)>>>,
    /// The check endpoint and its decisions, when enforcement runs.
    enforce: Mutex<Option<std::sync::Arc<crate::enforce::check::Checker>>>,
    /// A sensor's publisher or a correlator's partitions (scale-out over NATS).
    scale: Mutex<Option<std::sync::Arc<crate::export::ScaleStats>>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hub")
    }
}

fn put<T: Clone + Default>(slots: &Mutex<Vec<T>>, i: usize, v: &T) {
    if let Ok(mut s) = slots.lock() {
        if s.len() <= i {
            s.resize(i + 1, T::default());
        }
        s[i] = v.clone();
    }
}

impl Hub {
    pub fn publish_worker(&self, i: usize, s: &WorkerSnapshot) {
        put(&self.workers, i, s);
    }

    pub fn publish_capture(&self, i: usize, s: &CaptureSnapshot) {
        put(&self.captures, i, s);
    }

    pub fn publish_detect(&self, s: DetectSnapshot) {
        if let Ok(mut d) = self.detect.lock() {
            *d = s;
        }
    }

    /// Replaces what `source` last published of its tables (a worker's flows, streams and
    /// HTTP; a detect shard's tables). A scrape sums the owners per table.
    pub fn publish_memory(&self, source: MemorySource, usages: &[(Table, Usage)]) {
        if let Ok(mut m) = self.memory.lock() {
            m.insert(source, usages.to_vec());
        }
    }

    /// Every table's usage summed over its owners (the token cache from the token stats).
    fn memory_usage(&self, token: &TokenStats) -> BTreeMap<Table, Usage> {
        let mut out: BTreeMap<Table, Usage> =
            Table::ALL.iter().map(|t| (*t, Usage::default())).collect();
        if let Ok(m) = self.memory.lock() {
            for (t, u) in m.values().flatten() {
                out.entry(*t).or_default().add(u);
            }
        }
        out.entry(Table::Tokens)
            .or_default()
            .add(&token.cache_usage());
        out
    }

    pub fn set_token_source(&self, f: Source<TokenStats>) {
        if let Ok(mut t) = self.token.lock() {
            *t = Some(f);
        }
    }

    pub fn set_reload_source(&self, f: Source<ReloadStats>) {
        if let Ok(mut t) = self.reloads.lock() {
            *t = Some(f);
        }
    }

    pub fn set_enforce_source(&self, c: std::sync::Arc<crate::enforce::check::Checker>) {
        if let Ok(mut t) = self.enforce.lock() {
            *t = Some(c);
        }
    }

    pub fn set_scale_source(&self, s: std::sync::Arc<crate::export::ScaleStats>) {
        if let Ok(mut t) = self.scale.lock() {
            *t = Some(s);
        }
    }

    pub fn set_webhook_source(&self, f: Source<Vec<WebhookSnapshot>>) {
        if let Ok(mut t) = self.webhooks.lock() {
            *t = Some(f);
        }
    }

    /// The exposition text of one scrape.
    pub fn render(self: &std::sync::Arc<Self>) -> String {
        let mut registry = Registry::with_prefix("shieldtap");
        registry.register_collector(Box::new(self.clone()));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
        out
    }
}

/// Encodes one family with labels.
struct Enc<'a, 'b> {
    e: &'a mut DescriptorEncoder<'b>,
}

impl Enc<'_, '_> {
    fn counter(&mut self, name: &str, help: &str, v: u64) -> Result<(), std::fmt::Error> {
        let c = ConstCounter::new(v);
        let m = self
            .e
            .encode_descriptor(name, help, None, c.metric_type())?;
        c.encode(m)
    }

    fn gauge(&mut self, name: &str, help: &str, v: i64) -> Result<(), std::fmt::Error> {
        let g = ConstGauge::new(v);
        let m = self
            .e
            .encode_descriptor(name, help, None, g.metric_type())?;
        g.encode(m)
    }

    fn labelled<'l>(
        &mut self,
        name: &str,
        help: &str,
        ty: MetricType,
        rows: impl IntoIterator<Item = (Vec<(&'l str, String)>, u64)>,
    ) -> Result<(), std::fmt::Error> {
        let mut m = self.e.encode_descriptor(name, help, None, ty)?;
        for (labels, v) in rows {
            let fam = m.encode_family(&labels)?;
            match ty {
                MetricType::Gauge => ConstGauge::new(v as i64).encode(fam)?,
                _ => ConstCounter::new(v).encode(fam)?,
            }
        }
        Ok(())
    }
}

fn one<'l>(k: &'l str, v: &str) -> Vec<(&'l str, String)> {
    vec![(k, v.to_string())]
}

/// Rows of a one-label family from zero: every value a stage can count (its own list),
/// then any counted value missing from that list (never dropped).
fn from_zero<'m>(
    key: &'static str,
    known: impl IntoIterator<Item = &'static str>,
    counted: &'m BTreeMap<&'static str, u64>,
) -> impl Iterator<Item = (Vec<(&'static str, String)>, u64)> + 'm {
    let known: Vec<&'static str> = known.into_iter().collect();
    let extra: Vec<(&'static str, u64)> = counted
        .iter()
        .filter(|(k, _)| !known.contains(*k))
        .map(|(k, v)| (*k, *v))
        .collect();
    known
        .into_iter()
        .map(|k| (k, counted.get(k).copied().unwrap_or(0)))
        .chain(extra)
        .map(move |(k, v)| (one(key, k), v))
}

impl Collector for Hub {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut w = WorkerSnapshot::default();
        let mut latency: Option<Histogram<u64>> = None;
        if let Ok(ws) = self.workers.lock() {
            for s in ws.iter() {
                w.reassembly.merge(&s.reassembly);
                w.split.merge(&s.split);
                w.http.merge(&s.http);
                w.active_flows += s.active_flows;
                if let Some(h) = &s.latency_us {
                    match &mut latency {
                        Some(l) => {
                            let _ = l.add(h);
                        }
                        None => latency = Some(h.clone()),
                    }
                }
            }
        }
        let mut c = CaptureSnapshot::default();
        if let Ok(cs) = self.captures.lock() {
            for s in cs.iter() {
                c.capture.merge(&s.capture);
                c.decode.merge(&s.decode);
                c.queue.merge(&s.queue);
            }
        }
        let d = self.detect.lock().map(|d| d.clone()).unwrap_or_default();
        let token = self
            .token
            .lock()
            .ok()
            .and_then(|t| t.as_ref().map(|f| f()))
            .unwrap_or_default();
        let reloads = self
            .reloads
            .lock()
            .ok()
            .and_then(|t| t.as_ref().map(|f| f()))
            .unwrap_or_default();
        let hooks = self
            .webhooks
            .lock()
            .ok()
            .and_then(|t| t.as_ref().map(|f| f()))
            .unwrap_or_default();

        let mut e = Enc { e: &mut encoder };
        {
            let m = e.e.encode_descriptor(
                "build_info",
                "Build information; the value is always 1.",
                None,
                MetricType::Gauge,
            )?;
            let mut m = m;
            let labels = one("version", env!("CARGO_PKG_VERSION"));
            ConstGauge::new(1i64).encode(m.encode_family(&labels)?)?;
        }
        let cap = &c.capture;
        e.counter(
            "capture_packets",
            "Frames read from captures and interfaces.",
            cap.frames,
        )?;
        e.counter("capture_bytes", "Bytes of frames read.", cap.bytes)?;
        e.labelled(
            "capture_drops",
            "Packets or segments lost before processing, by reason.",
            MetricType::Counter,
            [
                (one("reason", "kernel"), cap.kernel_dropped),
                (one("reason", "interface"), cap.interface_dropped),
                (one("reason", "queue"), c.queue.dropped_segments),
            ],
        )?;
        e.labelled(
            "capture_file_problems",
            "Capture files that ended early, by kind.",
            MetricType::Counter,
            [
                (one("kind", "truncated"), cap.truncated_files),
                (one("kind", "corrupt"), cap.corrupt_files),
                (
                    one("kind", "unsupported-linktype"),
                    cap.unsupported_linktype_frames,
                ),
            ],
        )?;
        e.labelled(
            "queue_batches",
            "Batches handed from capture to workers, and how each went.",
            MetricType::Counter,
            [
                (one("result", "sent"), c.queue.batches),
                (one("result", "waited"), c.queue.full_waits),
                (one("result", "dropped"), c.queue.dropped_batches),
            ],
        )?;
        e.counter(
            "shed_flows",
            "Connections shed whole because a worker queue was full (live capture).",
            c.queue.shed_flows,
        )?;
        e.counter(
            "shed_packets",
            "Segments of shed connections not analysed.",
            c.queue.shed_packets,
        )?;
        {
            let g = ConstGauge::new(c.queue.shed_level);
            let m = e.e.encode_descriptor(
                "shed_level",
                "Share of the flow-hash space new connections are shed from now (0 to 1; the highest over workers).",
                None,
                g.metric_type(),
            )?;
            g.encode(m)?;
        }
        let dec = &c.decode;
        e.labelled(
            "decode_errors",
            "Frames that could not be decoded, by layer.",
            MetricType::Counter,
            from_zero("layer", Layer::ALL.map(Layer::as_str), &dec.errors_by_layer),
        )?;
        e.labelled(
            "decode_tunnels",
            "Tunnel headers decoded, by kind.",
            MetricType::Counter,
            [
                (one("kind", "vlan"), dec.vlan_tags),
                (one("kind", "pppoe"), dec.pppoe_sessions),
                (one("kind", "vxlan"), dec.tunnels_vxlan),
                (one("kind", "geneve"), dec.tunnels_geneve),
                (one("kind", "gre"), dec.tunnels_gre),
                (one("kind", "erspan2"), dec.tunnels_erspan2),
                (one("kind", "erspan3"), dec.tunnels_erspan3),
            ],
        )?;
        e.labelled(
            "decode_ip_fragments",
            "IP fragments, by outcome.",
            MetricType::Counter,
            [
                (one("result", "ipv4-seen"), dec.ipv4_fragments),
                (one("result", "ipv4-reassembled"), dec.ipv4_reassembled),
                (one("result", "expired"), dec.frag_expired),
                (one("result", "overlap"), dec.frag_overlaps),
                (one("result", "ipv6-seen"), dec.ipv6_fragments),
            ],
        )?;
        e.labelled(
            "decode_checksums",
            "Checksums that failed to verify (counted, never dropped), and TCP segments not verified (decode.verify_checksums = false, or \"auto\" found them offloaded).",
            MetricType::Counter,
            [
                (one("result", "bad-ipv4"), dec.bad_ipv4_checksum),
                (one("result", "bad-tcp"), dec.bad_tcp_checksum),
                (one("result", "tcp-unverified"), dec.tcp_checksums_unverified),
            ],
        )?;
        let r = &w.reassembly;
        e.gauge(
            "flows_active",
            "TCP connections tracked now.",
            w.active_flows as i64,
        )?;
        e.counter(
            "flows",
            "TCP connections tracked since start.",
            r.flows_created,
        )?;
        e.counter(
            "flows_reused",
            "TCP connections that took over the addresses and ports of one still tracked (port reuse).",
            r.flows_reused,
        )?;
        e.labelled(
            "split_window_exceeded",
            "Split taps (one direction per interface): segments put out of packet-time order because an input lagged more than capture.split_window_ms, by kind.",
            MetricType::Counter,
            [
                (one("kind", "held-too-long"), w.split.held_too_long),
                (one("kind", "arrived-late"), w.split.arrived_late),
            ],
        )?;
        e.counter(
            "reassembly_gaps",
            "Holes in TCP streams declared lost.",
            r.gaps,
        )?;
        e.counter(
            "reassembly_gap_bytes",
            "Bytes lost in those holes.",
            r.gap_bytes,
        )?;
        e.labelled(
            "reassembly_anomalies",
            "Out-of-order, retransmitted and overlapping segments.",
            MetricType::Counter,
            [
                (one("kind", "out-of-order"), r.ooo_segments),
                (one("kind", "retransmission"), r.retransmissions),
                (one("kind", "overlap"), r.overlaps),
                (one("kind", "overlap-conflict"), r.overlap_conflicts),
            ],
        )?;
        let caps = r
            .cap_hits
            .iter()
            .map(|(k, v)| {
                (
                    vec![("stage", "reassembly".to_string()), ("cap", k.to_string())],
                    *v,
                )
            })
            .chain(w.http.cap_hits.iter().map(|(k, v)| {
                (
                    vec![("stage", "http".to_string()), ("cap", k.to_string())],
                    *v,
                )
            }))
            .chain([
                (
                    vec![
                        ("stage", "capture".to_string()),
                        ("cap", "split-hold-bytes".to_string()),
                    ],
                    w.split.hold_cap_hits,
                ),
                (
                    vec![
                        ("stage", "decode".to_string()),
                        ("cap", "ip-fragments".to_string()),
                    ],
                    dec.frag_dropped_cap,
                ),
                (
                    vec![
                        ("stage", "detect".to_string()),
                        ("cap", "keys-per-rule".to_string()),
                    ],
                    d.stats.keys_over_cap,
                ),
                (
                    vec![
                        ("stage", "detect".to_string()),
                        ("cap", "baselines".to_string()),
                    ],
                    d.stats.baselines_over_cap,
                ),
            ]);
        e.labelled(
            "cap_hits",
            "Times a named limit was reached, by stage and cap.",
            MetricType::Counter,
            caps,
        )?;
        let h = &w.http;
        e.labelled(
            "http_requests",
            "HTTP requests parsed, by method class.",
            MetricType::Counter,
            from_zero("method", METHOD_CLASSES, &h.by_method_class),
        )?;
        e.labelled(
            "http_responses",
            "HTTP responses parsed, by status class.",
            MetricType::Counter,
            from_zero("status_class", STATUS_CLASSES, &h.by_status_class),
        )?;
        e.counter(
            "http_transactions",
            "HTTP transactions (request and response) completed.",
            h.transactions,
        )?;
        e.counter(
            "shed_unanswered",
            "Requests of connections load shedding cut while they were analysed, counted instead of reported (live capture).",
            h.shed_unanswered,
        )?;
        e.counter(
            "response_scans",
            "Response bodies scanned for personal data, returned ids and the field inventory.",
            h.response_scans,
        )?;
        e.counter(
            "response_scans_memoized",
            "Response scans answered by the workers' memo of recent scans (the same bytes scanned before).",
            h.response_scans_memoized,
        )?;
        e.counter(
            "body_decodes",
            "Message bodies content-decoded (gzip, deflate, br).",
            h.body_decodes,
        )?;
        e.counter(
            "body_decodes_memoized",
            "Content decodings answered by the workers' memo of recent decodings (the same bytes decoded before).",
            h.body_decodes_memoized,
        )?;
        e.labelled(
            "http2_connections",
            "Connections found to be HTTP/2 in clear, by how they were recognised.",
            MetricType::Counter,
            from_zero(
                "how",
                crate::http::h2::Start::LABELS.iter().copied(),
                &h.h2_connections,
            ),
        )?;
        e.labelled(
            "http2_events",
            "HTTP/2 frames and header blocks that were odd, malformed or hostile, by kind.",
            MetricType::Counter,
            from_zero(
                "kind",
                crate::http::h2::EVENTS.iter().copied(),
                &h.h2_events,
            ),
        )?;
        e.labelled(
            "grpc_calls",
            "gRPC calls, by grpc-status name (none: no status seen).",
            MetricType::Counter,
            from_zero(
                "status",
                crate::grpc::STATUS_NAMES.iter().copied().chain(["none"]),
                &h.grpc_calls,
            ),
        )?;
        e.labelled(
            "grpc_message_errors",
            "gRPC bodies whose length-prefixed messages were not all decoded, by reason.",
            MetricType::Counter,
            from_zero(
                "reason",
                crate::grpc::GrpcError::ALL.iter().map(|e| e.as_str()),
                &h.grpc_errors,
            ),
        )?;
        e.counter(
            "tls_connections",
            "Connections that began with a TLS handshake (fingerprinted, not parsed as HTTP).",
            h.tls_connections,
        )?;
        e.counter(
            "tls_hellos",
            "TLS ClientHellos fingerprinted (JA4, JA3).",
            h.tls_hellos,
        )?;
        e.labelled(
            "tls_errors",
            "TLS handshakes whose ClientHello could not be read, by reason.",
            MetricType::Counter,
            from_zero(
                "reason",
                crate::tls::TlsError::LABELS
                    .iter()
                    .copied()
                    .chain(["truncated", "gap"]),
                &h.tls_errors,
            ),
        )?;
        e.labelled(
            "http_anomalies",
            "HTTP protocol anomalies, by kind.",
            MetricType::Counter,
            from_zero(
                "kind",
                Anomaly::ALL.iter().map(|a| a.as_str()),
                &h.anomalies_by_kind,
            ),
        )?;
        e.labelled(
            "token_verdicts",
            "Attestation token verdicts, by family and verdict.",
            MetricType::Counter,
            token.verdicts.iter().flat_map(|(fam, vs)| {
                vs.iter().map(move |(v, n)| {
                    (
                        vec![("family", fam.clone()), ("verdict", v.to_string())],
                        *n,
                    )
                })
            }),
        )?;
        e.labelled(
            "identity_verdicts",
            "User (identity) token verdicts.",
            MetricType::Counter,
            token
                .identity_verdicts
                .iter()
                .map(|(k, v)| (one("verdict", k), *v)),
        )?;
        e.labelled(
            "token_cache_lookups",
            "Verified-token cache lookups, by result.",
            MetricType::Counter,
            [
                (one("result", "hit"), token.cache_hits),
                (one("result", "miss"), token.cache_misses),
            ],
        )?;
        e.labelled(
            "actors_tracked",
            "Actors profiled now, by kind.",
            MetricType::Gauge,
            [
                (one("kind", "address"), d.actors.addresses as u64),
                (one("kind", "device"), d.actors.devices as u64),
                (one("kind", "user"), d.actors.users as u64),
            ],
        )?;
        e.counter(
            "actors_evicted",
            "Actor profiles evicted at the cap.",
            d.actors.evicted,
        )?;
        e.counter(
            "detect_events",
            "Transactions the rules ran over.",
            d.stats.events,
        )?;
        e.counter(
            "detect_late_events",
            "Transactions that reached detection after later ones.",
            d.stats.late_events,
        )?;
        e.counter(
            "detect_keys_evicted",
            "Detector keys evicted (idle, or at the per-rule cap).",
            d.stats.keys_evicted,
        )?;
        e.gauge(
            "objects_tracked",
            "Objects in the ownership map (BOLA).",
            d.stats.objects_tracked as i64,
        )?;
        e.counter(
            "objects_evicted",
            "Objects evicted from the ownership map at its cap.",
            d.stats.objects_evicted,
        )?;
        // From zero for every configured family (the token stage names them).
        let families: Vec<String> = token.verdicts.keys().cloned().collect();
        e.labelled(
            "tls_fingerprints_learned",
            "TLS fingerprints learned as each app's (seen with its valid tokens from many devices), by token family.",
            MetricType::Gauge,
            families
                .iter()
                .map(|f| {
                    let n = d.stats.tls_learned_by_app.get(f.as_str()).copied().unwrap_or(0);
                    (one("family", f), n)
                })
                .chain(
                    d.stats
                        .tls_learned_by_app
                        .iter()
                        .filter(|(f, _)| !families.contains(*f))
                        .map(|(f, n)| (one("family", f), *n)),
                ),
        )?;
        e.counter(
            "tls_fingerprinted_requests",
            "Requests carrying the client's TLS fingerprint (from the edge or a joined handshake).",
            d.stats.tls_fingerprinted_events,
        )?;
        e.gauge(
            "shared_addresses",
            "Client addresses with many attested devices behind them (carrier NAT, offices).",
            d.stats.shared_addresses as i64,
        )?;
        e.gauge(
            "public_collections",
            "Never-owned collections learned public from many readers (catalogues).",
            d.stats.public_collections as i64,
        )?;
        e.gauge(
            "public_fields",
            "Response fields learned public (served identically to many principals).",
            d.stats.public_fields as i64,
        )?;
        let alert_rows = d.rules.iter().map(|(id, cat, sev)| {
            (
                vec![
                    ("rule", id.clone()),
                    ("category", cat.to_string()),
                    ("severity", sev.to_string()),
                ],
                d.stats.alerts_by_rule.get(id).copied().unwrap_or(0),
            )
        });
        e.labelled(
            "alerts",
            "Alerts raised (after aggregation), by rule, category and severity.",
            MetricType::Counter,
            alert_rows,
        )?;
        e.counter(
            "alerts_aggregated_requests",
            "Matching requests folded into follow-up alerts.",
            d.stats.aggregated_events,
        )?;
        e.labelled(
            "webhook_deliveries",
            "Alerts handed to webhook receivers, by receiver and result.",
            MetricType::Counter,
            hooks.iter().flat_map(|x| {
                [
                    ("queued", x.queued),
                    ("delivered", x.delivered),
                    ("retried", x.retried),
                    ("failed", x.failed),
                ]
                .map(|(r, n)| {
                    (
                        vec![("receiver", x.receiver.clone()), ("result", r.to_string())],
                        n,
                    )
                })
            }),
        )?;
        e.labelled(
            "webhook_spool_depth",
            "Alerts waiting in a receiver's spool.",
            MetricType::Gauge,
            hooks
                .iter()
                .map(|x| (one("receiver", &x.receiver), x.spool_depth)),
        )?;
        e.labelled(
            "reloads",
            "Reloads of rules and config, by kind and result.",
            MetricType::Counter,
            [
                (
                    vec![("kind", "rules".into()), ("result", "ok".into())],
                    reloads.rules_ok,
                ),
                (
                    vec![("kind", "rules".into()), ("result", "error".into())],
                    reloads.rules_failed,
                ),
                (
                    vec![("kind", "config".into()), ("result", "ok".into())],
                    reloads.config_ok,
                ),
                (
                    vec![("kind", "config".into()), ("result", "error".into())],
                    reloads.config_failed,
                ),
            ],
        )?;
        let memory = self.memory_usage(&token);
        let rows = |f: fn(&Usage) -> u64| {
            memory
                .iter()
                .map(move |(t, u)| (one("table", t.as_str()), f(u)))
                .collect::<Vec<_>>()
        };
        e.labelled(
            "memory_bytes",
            "Bytes accounted to each table of the memory budget now.",
            MetricType::Gauge,
            rows(|u| u.bytes),
        )?;
        e.labelled(
            "memory_limit_bytes",
            "Each table's share of the memory budget (runtime.memory_budget_mib).",
            MetricType::Gauge,
            rows(|u| u.limit),
        )?;
        e.labelled(
            "memory_entries",
            "Entries each table of the memory budget holds now.",
            MetricType::Gauge,
            rows(|u| u.entries),
        )?;
        e.labelled(
            "memory_evictions",
            "Entries evicted because their table reached its share of the memory budget.",
            MetricType::Counter,
            rows(|u| u.evictions),
        )?;
        // The process itself: CPU by thread and resident memory, to set against the
        // budget's accounted bytes above.
        let p = crate::resources::Usage::now();
        {
            let mut m = e.e.encode_descriptor(
                "process_cpu_seconds",
                "CPU seconds (user and system) of the process, by thread: capture, workers, \
                 detect, shards, writer, other.",
                None,
                MetricType::Counter,
            )?;
            for r in crate::resources::Role::ALL {
                let labels = one("thread", r.label());
                ConstCounter::new(p.role(r).as_secs_f64()).encode(m.encode_family(&labels)?)?;
            }
        }
        e.gauge(
            "process_resident_memory_bytes",
            "Resident set of the process now, in bytes.",
            i64::try_from(p.rss_bytes).unwrap_or(i64::MAX),
        )?;
        e.gauge(
            "process_resident_memory_peak_bytes",
            "Highest resident set of the process so far, in bytes.",
            i64::try_from(p.peak_rss_bytes).unwrap_or(i64::MAX),
        )?;
        // Packet to transaction: from a segment's arrival at the capture thread to the
        // transaction it completed leaving the worker (wall clock).
        let (sum, count, buckets) = match &latency {
            Some(l) => {
                // The encoder accumulates: each bucket gets the values above the previous
                // bound; values above the last bound count only towards `+Inf`.
                let mut buckets: Vec<(f64, u64)> =
                    LATENCY_BUCKETS.iter().map(|b| (*b, 0)).collect();
                for v in l.iter_recorded() {
                    let secs = v.value_iterated_to() as f64 / 1e6;
                    if let Some(b) = buckets.iter_mut().find(|(bound, _)| secs <= *bound) {
                        b.1 += v.count_at_value();
                    }
                }
                let sum: f64 = l
                    .iter_recorded()
                    .map(|v| v.value_iterated_to() as f64 * v.count_at_value() as f64 / 1e6)
                    .sum();
                (sum, l.len(), buckets)
            }
            None => (0.0, 0, LATENCY_BUCKETS.iter().map(|b| (*b, 0)).collect()),
        };
        let m = e.e.encode_descriptor(
            "processing_latency_seconds",
            "Wall time from a segment reaching the capture thread to its transaction leaving the worker.",
            None,
            MetricType::Histogram,
        )?;
        let mut m = m;
        m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, &buckets, None)?;
        // Without enforcement the families are exported at zero (default policy, every
        // result, reason, verdict and scope), so dashboards and alerts on them still work.
        let enforce = self.enforce.lock().ok().and_then(|c| c.clone());
        match enforce {
            Some(c) => encode_enforce(&mut e, &c.stats, &c.store)?,
            None => encode_enforce(
                &mut e,
                &crate::enforce::stats::EnforceStats::new(vec!["default".into()]),
                &crate::enforce::Store::new(1, None),
            )?,
        }
        // Scale-out families, at zero in a process that neither publishes nor correlates.
        let scale = self.scale.lock().ok().and_then(|c| c.clone());
        encode_scale(&mut e, &scale.unwrap_or_default())?;
        Ok(())
    }
}

/// A sensor's publishing and a correlator's partitions.
fn encode_scale(
    e: &mut Enc<'_, '_>,
    st: &crate::export::ScaleStats,
) -> Result<(), std::fmt::Error> {
    use std::sync::atomic::Ordering::Relaxed;
    let s = &st.sensor;
    e.counter(
        "export_envelopes",
        "Envelopes (batches of detect events for one partition) a sensor published to NATS and had acknowledged.",
        s.envelopes.load(Relaxed),
    )?;
    e.counter(
        "export_events",
        "Detect events a sensor published to NATS and had acknowledged (one per partition an event went to).",
        s.events.load(Relaxed),
    )?;
    e.counter(
        "export_bytes",
        "Bytes of envelopes a sensor published to NATS.",
        s.bytes.load(Relaxed),
    )?;
    e.counter(
        "export_retries",
        "Publishes a sensor retried (no acknowledgement: the broker slow or away).",
        s.retries.load(Relaxed),
    )?;
    e.labelled(
        "export_dropped",
        "Live capture: envelopes and the events in them dropped at a full publish queue.",
        MetricType::Counter,
        [
            (one("what", "envelopes"), s.dropped_envelopes.load(Relaxed)),
            (one("what", "events"), s.dropped_events.load(Relaxed)),
        ],
    )?;
    e.gauge(
        "export_queue_envelopes",
        "Envelopes waiting to be published.",
        i64::try_from(s.queued.load(Relaxed)).unwrap_or(i64::MAX),
    )?;
    let parts = st.partitions();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    // A process that correlates nothing exports one `partition="none"` sample at zero, so
    // dashboards and alerts on these families work before a correlator runs.
    let per = |f: &dyn Fn(&crate::export::stats::PartitionStats) -> u64| {
        if parts.is_empty() {
            return vec![(one("partition", "none"), 0)];
        }
        parts
            .iter()
            .map(|(p, s)| (one("partition", &p.to_string()), f(s)))
            .collect::<Vec<_>>()
    };
    e.labelled(
        "correlator_events",
        "Detect events a correlator fed to a partition's shard.",
        MetricType::Counter,
        per(&|s| s.events),
    )?;
    e.labelled(
        "correlator_envelopes",
        "Envelopes a correlator consumed, per partition.",
        MetricType::Counter,
        per(&|s| s.envelopes),
    )?;
    e.labelled(
        "correlator_lag_messages",
        "Messages on a partition's subject not yet consumed.",
        MetricType::Gauge,
        per(&|s| s.lag),
    )?;
    e.labelled(
        "correlator_checkpoint_age_seconds",
        "Seconds since a partition's state was last checkpointed.",
        MetricType::Gauge,
        per(&|s| {
            if s.checkpoint_unix > 0.0 {
                (now - s.checkpoint_unix).max(0.0) as u64
            } else {
                0
            }
        }),
    )?;
    e.labelled(
        "correlator_checkpoint_bytes",
        "Size of a partition's last checkpoint.",
        MetricType::Gauge,
        per(&|s| s.checkpoint_bytes),
    )?;
    e.labelled(
        "correlator_checkpoints",
        "Checkpoints written, per partition.",
        MetricType::Counter,
        per(&|s| s.checkpoints),
    )?;
    e.labelled(
        "correlator_redeliveries",
        "Envelopes seen again (a consumer reset, a restart, a republish) and skipped.",
        MetricType::Counter,
        per(&|s| s.redelivered),
    )?;
    e.labelled(
        "correlator_late",
        "Messages that arrived behind a partition's merge (applied at once).",
        MetricType::Counter,
        per(&|s| s.late),
    )?;
    e.labelled(
        "correlator_alerts",
        "Alerts a correlator published to the alerts stream, per partition.",
        MetricType::Counter,
        per(&|s| s.alerts),
    )?;
    e.labelled(
        "correlator_alerts_suppressed",
        "Alerts re-derived after a restore that had already been published (not sent again).",
        MetricType::Counter,
        per(&|s| s.alerts_suppressed),
    )?;
    let mut rejected: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut waits = 0;
    let mut missing = 0;
    let mut recovered = 0;
    let mut forced = 0;
    for s in parts.values() {
        for (r, n) in &s.rejected {
            let k = ["version", "protocol", "decode", "rules", "partitioning"]
                .into_iter()
                .find(|k| k == r)
                .unwrap_or("other");
            *rejected.entry(k).or_default() += n;
        }
        waits += s.waits_expired;
        missing += s.batches_missing;
        recovered += s.batches_recovered;
        forced += s.merge_forced;
    }
    e.labelled(
        "correlator_rejected",
        "Envelopes a correlator could not use, by reason.",
        MetricType::Counter,
        from_zero(
            "reason",
            ["version", "protocol", "decode", "rules", "partitioning"],
            &rejected,
        ),
    )?;
    e.counter(
        "correlator_waits_expired",
        "Times a silent sensor stopped holding a partition's merge back (max_wait_secs).",
        waits,
    )?;
    e.counter(
        "correlator_batches_missing",
        "Gaps in a sensor's envelope numbering given up after max_wait_secs.",
        missing,
    )?;
    e.counter(
        "correlator_batches_recovered",
        "Batches given up as missing that came later and were applied then (late), not dropped.",
        recovered,
    )?;
    e.counter(
        "correlator_merge_forced",
        "Messages a correlator released without waiting for a lagging sensor (its merge held over a million).",
        forced,
    )?;
    Ok(())
}

/// One sample per decision scope, in `Scope::ALL` order.
fn by_scope(
    values: impl IntoIterator<Item = u64>,
) -> impl Iterator<Item = (Vec<(&'static str, String)>, u64)> {
    crate::enforce::decisions::Scope::ALL
        .iter()
        .zip(values)
        .map(|(s, n)| (one("scope", s.as_str()), n))
}

/// The check endpoint's and the decisions' families (only when enforcement runs).
fn encode_enforce(
    e: &mut Enc<'_, '_>,
    st: &crate::enforce::stats::EnforceStats,
    store: &crate::enforce::Store,
) -> Result<(), std::fmt::Error> {
    use crate::enforce::decisions::{ORIGIN_KINDS, Scope};
    use std::sync::atomic::Ordering::Relaxed;
    e.labelled(
        "enforce_checks",
        "Gateway checks answered, by policy and result (allow, deny, would-deny, shed).",
        MetricType::Counter,
        st.checks()
            .into_iter()
            .map(|(p, r, n)| (vec![("policy", p), ("result", r.to_string())], n)),
    )?;
    e.labelled(
        "enforce_check_reasons",
        "Gateway checks by the reason of their answer.",
        MetricType::Counter,
        st.reasons().into_iter().map(|(r, n)| (one("reason", r), n)),
    )?;
    e.labelled(
        "enforce_check_verdicts",
        "Attestation verdicts of gateway checks.",
        MetricType::Counter,
        st.verdicts()
            .into_iter()
            .map(|(v, n)| (one("verdict", v), n)),
    )?;
    let (sum, count, buckets) = st.latency();
    let mut m = e.e.encode_descriptor(
        "enforce_check_duration_seconds",
        "Time to judge one gateway check (tokens, policy, decisions), in the endpoint.",
        None,
        MetricType::Histogram,
    )?;
    m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, &buckets, None)?;
    e.counter(
        "enforce_connections_refused",
        "Connections closed at once because max_connections were open.",
        st.connections_refused.load(Relaxed),
    )?;
    e.counter(
        "enforce_checks_without_uri",
        "Checks whose request named no original URI (judged under the default policy).",
        st.no_uri.load(Relaxed),
    )?;
    e.counter(
        "bouncer_pulls",
        "Decision stream pulls by bouncers.",
        st.bouncer_pulls.load(Relaxed),
    )?;
    e.counter(
        "bouncer_unauthorized",
        "Bouncer API calls refused for a missing or unknown X-Api-Key.",
        st.bouncer_unauthorized.load(Relaxed),
    )?;
    e.counter(
        "follow_failures",
        "Pulls of a followed daemon's decisions that failed.",
        st.follow_failures.load(Relaxed),
    )?;
    let active = store.active_by_scope();
    e.labelled(
        "decisions_active",
        "Decisions in force, by scope.",
        MetricType::Gauge,
        by_scope(active),
    )?;
    let k = &store.counters;
    let mut added = Vec::new();
    for (i, s) in Scope::ALL.iter().enumerate() {
        for (j, o) in ORIGIN_KINDS.iter().enumerate() {
            added.push((
                vec![("scope", s.as_str().to_string()), ("origin", o.to_string())],
                k.added[i][j].load(Relaxed),
            ));
        }
    }
    e.labelled(
        "decisions_added",
        "Decisions made, by scope and origin (alert, manual, followed).",
        MetricType::Counter,
        added,
    )?;
    e.labelled(
        "decisions_expired",
        "Decisions that ran out, by scope.",
        MetricType::Counter,
        by_scope(k.expired.iter().map(|n| n.load(Relaxed))),
    )?;
    e.labelled(
        "decisions_deleted",
        "Decisions lifted by hand, by scope.",
        MetricType::Counter,
        by_scope(k.deleted.iter().map(|n| n.load(Relaxed))),
    )?;
    e.counter(
        "decisions_evicted",
        "Decisions dropped to make room at max_decisions (the soonest to expire first).",
        k.evicted.load(Relaxed),
    )?;
    e.counter(
        "decisions_persist_failures",
        "Failed saves of the decisions file.",
        k.persist_failures.load(Relaxed),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A sensor's and a correlator's counters as they are scraped: per partition, and at
    /// `partition="none"` in a process that correlates nothing.
    #[test]
    fn scale_out_counters_are_exported_per_partition() {
        use std::sync::atomic::Ordering::Relaxed;
        let hub = Arc::new(Hub::default());
        assert!(
            hub.render()
                .contains("shieldtap_correlator_lag_messages{partition=\"none\"} 0")
        );
        let st = Arc::new(crate::export::ScaleStats::default());
        st.sensor.events.store(1234, Relaxed);
        st.sensor.dropped_events.store(7, Relaxed);
        st.update(2, |p| {
            p.lag = 5;
            p.redelivered = 3;
            p.events = 99;
            p.rejected.insert("rules".into(), 4);
            p.checkpoint_unix = 1.0;
        });
        hub.set_scale_source(st);
        let text = hub.render();
        for want in [
            "shieldtap_export_events_total 1234",
            "shieldtap_export_dropped_total{what=\"events\"} 7",
            "shieldtap_correlator_lag_messages{partition=\"2\"} 5",
            "shieldtap_correlator_redeliveries_total{partition=\"2\"} 3",
            "shieldtap_correlator_events_total{partition=\"2\"} 99",
            "shieldtap_correlator_rejected_total{reason=\"rules\"} 4",
            "shieldtap_correlator_rejected_total{reason=\"version\"} 0",
        ] {
            assert!(text.contains(want), "{want} not in:\n{text}");
        }
        // A checkpoint written at Unix second 1 is decades old.
        let age = text
            .lines()
            .find(|l| l.starts_with("shieldtap_correlator_checkpoint_age_seconds{partition=\"2\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap();
        assert!(age > 1e9, "{age}");
        assert!(!text.contains("partition=\"none\""));
    }

    /// Families whose label values are known are exported at 0 before anything happened:
    /// every decode layer, HTTP anomaly kind, method and status class, and per receiver.
    #[test]
    fn idle_hub_exports_known_label_values_from_zero() {
        let hub = Arc::new(Hub::default());
        hub.set_webhook_source(Box::new(|| {
            vec![WebhookSnapshot {
                receiver: "ops".into(),
                ..Default::default()
            }]
        }));
        let text = hub.render();
        let mut want: Vec<String> = Layer::ALL
            .iter()
            .map(|l| {
                format!(
                    "shieldtap_decode_errors_total{{layer=\"{}\"}} 0",
                    l.as_str()
                )
            })
            .collect();
        want.extend(Anomaly::ALL.iter().map(|a| {
            format!(
                "shieldtap_http_anomalies_total{{kind=\"{}\"}} 0",
                a.as_str()
            )
        }));
        want.extend(
            METHOD_CLASSES
                .iter()
                .map(|m| format!("shieldtap_http_requests_total{{method=\"{m}\"}} 0")),
        );
        want.extend(
            STATUS_CLASSES
                .iter()
                .map(|c| format!("shieldtap_http_responses_total{{status_class=\"{c}\"}} 0")),
        );
        want.push("shieldtap_webhook_spool_depth{receiver=\"ops\"} 0".into());
        for r in ["queued", "delivered", "retried", "failed"] {
            want.push(format!(
                "shieldtap_webhook_deliveries_total{{receiver=\"ops\",result=\"{r}\"}} 0"
            ));
        }
        want.push("shieldtap_decode_errors_total{layer=\"pppoe\"} 0".into());
        for line in &want {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        // A counted value outside the stage's list is still exported.
        let mut c = CaptureSnapshot::default();
        c.decode.errors_by_layer.insert("future-layer", 3);
        c.decode.errors_by_layer.insert("tcp", 2);
        hub.publish_capture(0, &c);
        let text = hub.render();
        for line in [
            "shieldtap_decode_errors_total{layer=\"future-layer\"} 3",
            "shieldtap_decode_errors_total{layer=\"tcp\"} 2",
            "shieldtap_decode_errors_total{layer=\"udp\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }

    /// Every table of the budget is exported from zero; owners' usages add up per table,
    /// and an owner's new publication replaces its last one.
    #[test]
    fn memory_families_from_zero_and_summed_over_owners() {
        let hub = Arc::new(Hub::default());
        let text = hub.render();
        for t in Table::ALL {
            for fam in ["memory_bytes", "memory_limit_bytes", "memory_entries"] {
                let line = format!("shieldtap_{fam}{{table=\"{}\"}} 0", t.as_str());
                assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
            }
            let line = format!(
                "shieldtap_memory_evictions_total{{table=\"{}\"}} 0",
                t.as_str()
            );
            assert!(text.lines().any(|l| l == line), "{line} missing");
        }
        let u = |bytes, evictions| Usage {
            bytes,
            limit: 1000,
            entries: 1,
            evictions,
        };
        hub.publish_memory(MemorySource::Worker(0), &[(Table::Flows, u(100, 1))]);
        hub.publish_memory(MemorySource::Worker(1), &[(Table::Flows, u(50, 2))]);
        hub.publish_memory(MemorySource::Detect(0), &[(Table::Keys, u(7, 0))]);
        hub.publish_memory(MemorySource::Worker(0), &[(Table::Flows, u(300, 4))]);
        let text = hub.render();
        for line in [
            "shieldtap_memory_bytes{table=\"flows\"} 350",
            "shieldtap_memory_limit_bytes{table=\"flows\"} 2000",
            "shieldtap_memory_evictions_total{table=\"flows\"} 6",
            "shieldtap_memory_bytes{table=\"keys\"} 7",
            "shieldtap_shed_level 0.0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }

    #[test]
    fn every_name_is_rendered_with_bounded_labels() {
        let hub = Arc::new(Hub::default());
        let mut w = WorkerSnapshot::default();
        w.http.transactions = 7;
        let mut h = Histogram::new_with_bounds(1, 60_000_000, 2).unwrap();
        h.record(300).unwrap();
        h.record(3_000).unwrap();
        w.latency_us = Some(h);
        hub.publish_worker(1, &w);
        hub.publish_worker(0, &w);
        hub.publish_detect(DetectSnapshot {
            rules: vec![("token.forged".into(), "token-forgery", "high")],
            ..Default::default()
        });
        let text = hub.render();
        for name in NAMES {
            let full = format!("shieldtap_{name}");
            assert!(
                text.lines()
                    .any(|l| l.starts_with("# TYPE ") && l.contains(&full)),
                "{full} missing:\n{text}"
            );
        }
        assert!(
            text.contains("shieldtap_http_transactions_total 14"),
            "{text}"
        );
        assert!(
            text.contains("shieldtap_processing_latency_seconds_count 4"),
            "{text}"
        );
        assert!(
            text.contains("shieldtap_processing_latency_seconds_bucket{le=\"10.0\"} 4")
                || text.contains("shieldtap_processing_latency_seconds_bucket{le=\"10\"} 4"),
            "{text}"
        );
        assert!(
            text.contains("shieldtap_processing_latency_seconds_bucket{le=\"0.0005\"} 2"),
            "{text}"
        );
        assert!(text.contains(
            "shieldtap_alerts_total{rule=\"token.forged\",category=\"token-forgery\",severity=\"high\"} 0"
        ));
    }
}
