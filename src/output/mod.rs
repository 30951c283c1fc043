//! Output: transaction records (JSON lines), redaction, and the end-of-run summary.
//!
//! Input: transactions with their connection, from the workers; stage counters at the end.
//! Output: one JSON object per transaction (fields in INTERFACE.md) written by a single
//! writer thread from line buffers the workers fill, and the [`Summary`] as JSON or as a
//! human report. The transaction record never carries header values, bodies or the query
//! string (tokens travel there); only the path, method, status, sizes and anomalies.

pub use crate::redact;
pub mod webhook;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;

use serde::Serialize;

use crate::capture::{CaptureStats, Timestamp};
use crate::decode::DecodeStats;
use crate::detect::DetectStats;
use crate::http::{HttpStats, Transaction, header};
use crate::reassembly::{ConnInfo, ReassemblyStats};
use crate::token::{Attestation, TokenStats, UserId, Verdict};

#[derive(Serialize)]
struct Endpoint {
    ip: String,
    port: u16,
}

impl From<SocketAddr> for Endpoint {
    fn from(a: SocketAddr) -> Self {
        Endpoint {
            ip: a.ip().to_string(),
            port: a.port(),
        }
    }
}

#[derive(Serialize)]
struct TxRecord<'a> {
    ts: String,
    /// The client's TLS fingerprint as the edge forwarded it (`[tls] ja4_headers`).
    #[serde(skip_serializing_if = "Option::is_none")]
    ja4: Option<&'a str>,
    client: Endpoint,
    server: Endpoint,
    method: Option<&'a str>,
    host: Option<String>,
    path: Option<std::borrow::Cow<'a, str>>,
    route: Option<String>,
    status: Option<u16>,
    request_body_bytes: Option<u64>,
    response_body_bytes: Option<u64>,
    attestation: Option<&'a Attestation>,
    /// The user id, when the identity token can be believed (`valid` or `unverified`).
    user: Option<String>,
    /// Verdict on the identity token, when there was one.
    user_verdict: Option<&'static str>,
    anomalies: Vec<&'static str>,
    /// Packet time of the response head, when there is one.
    response_ts: Option<String>,
    /// Folded tunnel id (VNI etc.), 0 when not tunnelled.
    tunnel: u64,
    /// Connection id within its worker (stable per replay and worker count).
    #[serde(skip_serializing_if = "Option::is_none")]
    content_type: Option<String>,
    /// `1.0`, `1.1` or `2`.
    http_version: &'static str,
    /// HTTP/2: the stream the transaction came on.
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_id: Option<u32>,
    /// HTTP/2: header fields lost to HPACK table entries never seen (joined late).
    #[serde(skip_serializing_if = "is_zero")]
    unknown_header_fields: u16,
    /// gRPC calls: outcome and message counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    grpc: Option<GrpcRecord>,
}

/// A gRPC call's outcome in its transaction record (`grpc-message` is left out: free text
/// a server may fill with personal data).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct GrpcRecord {
    /// `grpc-status`, when the answer carried one.
    pub status: Option<u32>,
    pub status_name: Option<&'static str>,
    pub request_messages: u32,
    pub response_messages: u32,
}

fn is_zero(n: &u16) -> bool {
    *n == 0
}

/// The HTTP version a transaction was spoken in.
pub fn http_version(tx: &Transaction) -> &'static str {
    if tx.h2.is_some() {
        return "2";
    }
    match tx
        .request
        .as_ref()
        .map(|r| r.version)
        .or(tx.response.as_ref().map(|r| r.version))
    {
        Some(0) => "1.0",
        _ => "1.1",
    }
}

pub use crate::route::{path_of, route_of};

fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

/// Appends one transaction record line to `out`.
#[allow(clippy::too_many_arguments)]
pub fn write_transaction(
    out: &mut Vec<u8>,
    conn: &ConnInfo,
    swapped: bool,
    tx: &Transaction,
    attestation: Option<&Attestation>,
    user: Option<&UserId>,
    route: Option<&str>,
    ja4: Option<&str>,
    grpc: Option<GrpcRecord>,
) {
    let (client, server) = if swapped {
        (conn.server, conn.client)
    } else {
        (conn.client, conn.server)
    };
    let req = tx.request.as_ref();
    let resp = tx.response.as_ref();
    let ts: Timestamp = req
        .map(|r| r.ts)
        .or(resp.map(|r| r.ts))
        .unwrap_or(conn.start);
    let path = req.map(|r| path_of(&r.target));
    let rec = TxRecord {
        ts: ts.rfc3339(),
        ja4,
        client: client.into(),
        server: server.into(),
        method: req.map(|r| r.method.as_str()),
        host: req.and_then(|r| header(&r.headers, "host")).map(text),
        path: path.map(redact::path),
        route: route.map(str::to_string),
        status: resp.map(|r| r.status),
        request_body_bytes: req.map(|r| r.body.wire_len),
        response_body_bytes: resp.map(|r| r.body.wire_len),
        attestation,
        user: user
            .filter(|u| matches!(u.verdict, Verdict::Valid | Verdict::Unverified))
            .map(|u| redact::identifier(&u.id)),
        user_verdict: user.map(|u| u.verdict.as_str()),
        anomalies: tx.anomalies.iter().map(|a| a.as_str()).collect(),
        response_ts: resp.map(|r| r.ts.rfc3339()),
        tunnel: conn.tunnel.0,
        content_type: resp
            .and_then(|r| header(&r.headers, "content-type"))
            .map(text),
        http_version: http_version(tx),
        stream_id: tx.h2.map(|h| h.stream_id),
        unknown_header_fields: tx.h2.map_or(0, |h| h.unknown_fields),
        grpc,
    };
    // Serialising plain owned data into a Vec cannot fail.
    if serde_json::to_writer(&mut *out, &rec).is_ok() {
        out.push(b'\n');
    }
}

/// Pipeline totals at the end of a run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub workers: usize,
    /// Wall-clock seconds the run took (informational; results depend on packet time only).
    pub elapsed_secs: f64,
    pub first_packet: Option<String>,
    pub last_packet: Option<String>,
    pub capture: CaptureStats,
    pub decode: DecodeStats,
    pub reassembly: ReassemblyStats,
    /// Split taps (`run` on several interfaces): the merge of their inputs by packet time.
    pub split: crate::capture::SplitStats,
    pub http: HttpStats,
    pub token: TokenStats,
    pub queue: QueueStats,
    pub transactions_written: u64,
    pub detect: DetectStats,
    /// The actors registry and the riskiest actors (address, device, user).
    pub actors: crate::actor::registry::ActorSummary,
    /// Alerts written (after aggregation).
    pub alerts_written: u64,
    /// Where the rules came from (`built-in` or the folder) and how many are enabled.
    pub rules_source: String,
    pub rules_enabled: usize,
    pub reloads: ReloadStats,
    /// Webhook receivers: queued, delivered, retried, failed, still spooled.
    pub webhooks: Vec<webhook::WebhookSnapshot>,
    /// The memory budget: bytes accounted and evictions per table.
    pub memory: crate::budget::MemoryReport,
    /// What the run cost: CPU seconds over all threads and by thread, transactions per CPU
    /// second, peak RSS (informational, like `elapsed_secs`).
    pub resources: Resources,
    /// The field inventory per route (written with `--inventory-out`, not in the summary).
    #[serde(skip)]
    pub inventory: serde_json::Value,
    /// Sensors of a scale-out deployment (`[export]`): what was published to NATS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export: Option<serde_json::Value>,
}

/// What a run cost the host ([`crate::resources`]).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Resources {
    /// User and system CPU seconds over all threads.
    pub cpu_secs: f64,
    pub user_secs: f64,
    pub system_secs: f64,
    /// CPU seconds by thread: `capture` (in `replay`, the main thread: reading the file, and
    /// the run's set-up), `workers`, `detect`, `shards`, `writer`, `other`.
    pub cpu_secs_by_thread: BTreeMap<&'static str, f64>,
    /// Transactions (paired or not) per CPU second over all threads: this project's
    /// measure of speed (`benches/realistic.sh`).
    pub transactions_per_cpu_sec: f64,
    /// Peak resident set of the process, in bytes (`VmHWM`).
    pub peak_rss_bytes: u64,
}

impl Resources {
    pub fn of(u: &crate::resources::Usage, summary: &Summary) -> Resources {
        use crate::resources::Role;
        let cpu = u.cpu().as_secs_f64();
        Resources {
            cpu_secs: cpu,
            user_secs: u.user.as_secs_f64(),
            system_secs: u.system.as_secs_f64(),
            cpu_secs_by_thread: Role::ALL
                .iter()
                .map(|r| (r.label(), u.role(*r).as_secs_f64()))
                .collect(),
            transactions_per_cpu_sec: if cpu > 0.0 {
                summary.http.transactions as f64 / cpu
            } else {
                0.0
            },
            peak_rss_bytes: u.peak_rss_bytes,
        }
    }

    /// `  cpu 6.93 s (user 6.54, system 0.39): capture 0.45, workers 3.31, detect 2.92,
    /// other 0.25; 57700 transactions per CPU second; peak RSS 142 MiB`: roles that took
    /// no time are left out.
    fn human(&self) -> String {
        let threads: Vec<String> = crate::resources::Role::ALL
            .iter()
            .filter_map(|r| {
                let secs = self.cpu_secs_by_thread.get(r.label()).copied()?;
                (secs >= 0.005).then(|| format!("{} {secs:.2}", r.label()))
            })
            .collect();
        format!(
            "  cpu {:.2} s (user {:.2}, system {:.2}): {}; {:.0} transactions per CPU second; \
             peak RSS {} MiB\n",
            self.cpu_secs,
            self.user_secs,
            self.system_secs,
            threads.join(", "),
            self.transactions_per_cpu_sec,
            self.peak_rss_bytes >> 20
        )
    }
}

/// Reloads of config and rules (`run`: SIGHUP or a change in the rules folder).
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReloadStats {
    pub rules_ok: u64,
    pub rules_failed: u64,
    pub config_ok: u64,
    pub config_failed: u64,
}

/// Hand-off between the capture thread and the workers.
#[derive(Clone, Debug, Default, Serialize)]
pub struct QueueStats {
    pub batches: u64,
    /// Times the capture thread found a worker queue full and waited (replay).
    pub full_waits: u64,
    /// Batches dropped because a worker queue was full (live capture never blocks; since
    /// load is shed by flow, only at shutdown with a worker gone).
    pub dropped_batches: u64,
    pub dropped_segments: u64,
    /// Live capture, worker queue full: connections shed whole (every segment from the
    /// moment they were shed), so the connections analysed stay complete.
    pub shed_flows: u64,
    /// Segments of shed connections, not analysed.
    pub shed_packets: u64,
    /// Transactions the shed segments probably carried (at the analysed traffic's
    /// segments per transaction).
    pub shed_transactions_estimate: u64,
    /// Share of the flow-hash space shed now (0 to 1; the highest over workers and
    /// capture threads), and the highest it reached.
    pub shed_level: f64,
    pub shed_level_peak: f64,
    /// Times the held backlog reached its cap and connections already analysed were cut
    /// (their transactions then end with a gap); 0 when shedding new connections sufficed.
    pub shed_cuts: u64,
}

impl QueueStats {
    /// Adds another capture thread's counters (levels: the highest).
    pub fn merge(&mut self, o: &QueueStats) {
        self.batches += o.batches;
        self.full_waits += o.full_waits;
        self.dropped_batches += o.dropped_batches;
        self.dropped_segments += o.dropped_segments;
        self.shed_flows += o.shed_flows;
        self.shed_packets += o.shed_packets;
        self.shed_transactions_estimate += o.shed_transactions_estimate;
        self.shed_level = self.shed_level.max(o.shed_level);
        self.shed_level_peak = self.shed_level_peak.max(o.shed_level_peak);
        self.shed_cuts += o.shed_cuts;
    }
}

impl Summary {
    /// A short human report for stderr.
    pub fn human(&self) -> String {
        let mut s = String::new();
        let c = &self.capture;
        let h = &self.http;
        let r = &self.reassembly;
        let rate = |n: u64| {
            if self.elapsed_secs > 0.0 {
                n as f64 / self.elapsed_secs
            } else {
                0.0
            }
        };
        s.push_str(&format!(
            "shieldtap: {} frames ({:.1} MB) in {:.2}s ({:.0} packets/s), {} workers\n",
            c.frames,
            c.bytes as f64 / 1e6,
            self.elapsed_secs,
            rate(c.frames),
            self.workers
        ));
        s.push_str(&format!(
            "  flows {} (mid-stream {}), gaps {} ({} bytes), out-of-order {}, retransmissions {}\n",
            r.flows_created,
            r.flows_midstream,
            r.gaps,
            r.gap_bytes,
            r.ooo_segments,
            r.retransmissions
        ));
        s.push_str(&format!(
            "  transactions {} ({} paired, {:.0}/s), requests {}, responses {}\n",
            h.transactions,
            h.paired,
            rate(h.transactions),
            h.requests,
            h.responses
        ));
        if self.resources.cpu_secs > 0.0 {
            s.push_str(&self.resources.human());
        }
        if !h.h2_connections.is_empty() {
            let how: Vec<String> = h
                .h2_connections
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let odd: Vec<String> = h
                .h2_events
                .iter()
                .filter(|(k, _)| !matches!(**k, "rst-stream" | "goaway" | "resynced"))
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            s.push_str(&format!(
                "  http/2: {} connections ({}){}\n",
                h.h2_connections.values().sum::<u64>(),
                how.join(", "),
                if odd.is_empty() {
                    String::new()
                } else {
                    format!(", {}", odd.join(", "))
                }
            ));
        }
        if h.tls_connections > 0 || self.detect.tls_fingerprinted_events > 0 {
            let unreadable: u64 = h.tls_errors.values().sum();
            s.push_str(&format!(
                "  tls: {} handshakes fingerprinted ({} unreadable), {} requests with a fingerprint ({} joined through the edge), {} app fingerprints learned\n",
                h.tls_hellos,
                unreadable,
                self.detect.tls_fingerprinted_events,
                self.detect.tls_joined,
                self.detect.tls_fingerprints_learned
            ));
        }
        let anomalies: u64 = h.anomalies_by_kind.values().sum();
        if anomalies > 0 {
            let kinds: Vec<String> = h
                .anomalies_by_kind
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            s.push_str(&format!("  http anomalies: {}\n", kinds.join(" ")));
        }
        let errs: u64 = self.decode.errors_by_layer.values().sum();
        if errs > 0 {
            let kinds: Vec<String> = self
                .decode
                .errors_by_layer
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            s.push_str(&format!("  decode errors: {}\n", kinds.join(" ")));
        }
        let d = &self.detect;
        s.push_str(&format!(
            "  rules {} ({}), alerts {} ({} follow-ups, {} requests aggregated)\n",
            self.rules_enabled,
            self.rules_source,
            self.alerts_written,
            d.follow_up_alerts,
            d.aggregated_events
        ));
        let a = &self.actors;
        s.push_str(&format!(
            "  actors: {} addresses, {} devices, {} users ({} evicted)\n",
            a.stats.addresses, a.stats.devices, a.stats.users, a.stats.evicted
        ));
        for r in a.top.iter().take(5) {
            let cats: Vec<String> = r.alerts.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push_str(&format!(
                "    risk {:>4}  {} {}  {} requests, {:.0}% attested  {}\n",
                r.risk,
                r.kind,
                r.id,
                r.requests,
                r.attested_share * 100.0,
                cats.join(" ")
            ));
        }
        if !d.alerts_by_rule.is_empty() {
            let by: Vec<String> = d
                .alerts_by_rule
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            s.push_str(&format!("  alerts by rule: {}\n", by.join(" ")));
        }
        if c.truncated_files + c.corrupt_files > 0 {
            s.push_str(&format!(
                "  capture files truncated {}, corrupt {}\n",
                c.truncated_files, c.corrupt_files
            ));
        }
        if c.kernel_received > 0 || c.kernel_dropped > 0 {
            s.push_str(&format!(
                "  kernel received {}, dropped {}, interface dropped {}\n",
                c.kernel_received, c.kernel_dropped, c.interface_dropped
            ));
        }
        if self.queue.shed_flows > 0 {
            s.push_str(&format!(
                "  load shed: {} connections, {} segments, ~{} transactions (peak level {:.2})\n",
                self.queue.shed_flows,
                self.queue.shed_packets,
                self.queue.shed_transactions_estimate,
                self.queue.shed_level_peak
            ));
        }
        if !r.cap_hits.is_empty() || !h.cap_hits.is_empty() || self.queue.dropped_batches > 0 {
            s.push_str(&format!(
                "  caps hit: reassembly {:?}, http {:?}; queue drops {} batches\n",
                r.cap_hits, h.cap_hits, self.queue.dropped_batches
            ));
        }
        s
    }

    pub fn write_json(&self, w: &mut dyn Write) -> std::io::Result<()> {
        serde_json::to_writer_pretty(&mut *w, self)?;
        w.write_all(b"\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_drops_query_and_fragment() {
        assert_eq!(path_of("/a/b?token=secret"), "/a/b");
        assert_eq!(path_of("/a#frag"), "/a");
        assert_eq!(path_of("/plain"), "/plain");
    }

    #[test]
    fn route_templates_ids() {
        assert_eq!(
            route_of("/api/v1/users/123/orders"),
            "/api/v1/users/{id}/orders"
        );
        assert_eq!(
            route_of("/o/3f2b8c1e-9d4a-4b5e-8f6a-1c2d3e4f5a6b"),
            "/o/{id}"
        );
        assert_eq!(route_of("/h/deadbeefdeadbeef00"), "/h/{id}");
        assert_eq!(route_of("/api/v1/catalogue"), "/api/v1/catalogue");
        assert_eq!(route_of("/"), "/");
        assert_eq!(
            route_of("/users/jane@example.com/cards/4111111111111111"),
            "/users/{id}/cards/{id}"
        );
        // Several ids, mid-path, in mixed formats.
        assert_eq!(
            route_of(
                "/api/v2/accounts/3f2b8c1e-9d4a-4b5e-8f6a-1c2d3e4f5a6b/orders/5001/items/deadbeefcafef00d1234"
            ),
            "/api/v2/accounts/{id}/orders/{id}/items/{id}"
        );
        assert_eq!(
            route_of("/files/dGhpc2lzYXRva2VuMTIzNDU2/v2/download"),
            "/files/{id}/v2/download"
        );
        // Words, versions and short codes stay literal.
        assert_eq!(
            route_of("/api/v1/users/me/settings"),
            "/api/v1/users/me/settings"
        );
        assert_eq!(
            route_of("/api/v1/regions/eu-west-1"),
            "/api/v1/regions/eu-west-1"
        );
    }
}
