//! Config: the TOML file users write, parsed then validated.
//!
//! Input: TOML text (or nothing: embedded defaults). Output: a validated [`Config`] whose
//! fields are the typed settings of each stage (durations, byte sizes). Raw structs reject
//! unknown keys, so a typo is an error, not a silently ignored setting; errors name the
//! file, line and column, the key and what was expected.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::capture::LiveConfig;
use crate::decode::{Checksums, DecodeConfig};
use crate::detect::DetectConfig;
use crate::http::HttpConfig;
use crate::output::webhook::{Format, WebhookConfig};
use crate::reassembly::ReassemblyConfig;
use crate::rules::Severity;
use crate::token::{RawAttestation, RawIdentity, TokenConfig};

/// Everything the pipeline needs, validated.
#[derive(Clone, Debug, Default)]
pub struct Config {
    pub capture: LiveConfig,
    pub decode: DecodeConfig,
    pub reassembly: ReassemblyConfig,
    pub http: HttpConfig,
    pub token: TokenConfig,
    pub runtime: RuntimeConfig,
    pub detect: DetectConfig,
    pub webhooks: Vec<WebhookConfig>,
    /// `[enforce]`: the check endpoint and decisions; `None` when the section is absent.
    pub enforce: Option<crate::enforce::EnforceConfig>,
    /// `[grpc]`: message caps and descriptor sets (loaded).
    pub grpc: crate::grpc::GrpcConfig,
    /// `[nats]`: the broker of a scale-out deployment; `None` when the section is absent.
    pub nats: Option<crate::export::NatsConfig>,
    /// `[export]`: this process is a sensor (needs `[nats]`).
    pub export: Option<crate::export::ExportConfig>,
    /// `[correlate]`: what `shieldtap correlate` consumes (defaults when absent).
    pub correlate: Option<crate::export::CorrelateConfig>,
}

/// Threads and queues (config section `[runtime]`).
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Worker threads; `None` means one per core.
    pub workers: Option<usize>,
    /// Batches in flight per worker queue; a full queue blocks the capture thread
    /// (replay) or is counted as a queue drop (live). `None`: [`LIVE_QUEUE_BATCHES`]
    /// live, [`REPLAY_QUEUE_BATCHES`] in replay (see [`RuntimeConfig::queue_batches`]).
    pub queue_batches: Option<usize>,
    /// Connections tracked across all workers (split evenly between them).
    pub max_flows: usize,
    /// Memory for everything that grows with traffic (`memory_budget_mib`), split into a
    /// share per table.
    pub budget: crate::budget::Budget,
    /// Detect shards: threads the rules' key state is spread over (`detect_shards`).
    pub detect_shards: usize,
    /// Packet time events wait beyond the workers' watermark for packet-time order
    /// (`ordering_lateness_ms`; see [`crate::detect::DetectConfig::ordering_lateness`]).
    pub ordering_lateness: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            workers: None,
            queue_batches: None,
            max_flows: 1_000_000,
            budget: crate::budget::Budget::default(),
            detect_shards: 1,
            ordering_lateness: crate::detect::DEFAULT_ORDERING_LATENESS,
        }
    }
}

/// The most `[runtime] ordering_lateness_ms` may ask for: events are held (in the
/// ordering buffer's share of the memory budget) and live alerts delayed by as much.
const MAX_ORDERING_LATENESS_MS: u64 = 60_000;

/// Worker queue depth live: a burst on the mirror is absorbed here before load is shed.
pub const LIVE_QUEUE_BATCHES: usize = 64;
/// Worker queue depth in replay: the capture thread waits for a full queue, so a few
/// batches keep the workers busy, and a deeper queue only holds packets in memory (up to
/// half a MiB per batch, per worker): on the realistic capture with 2 workers, 16 held
/// 8 to 11 MiB more at peak than 8, and 8 held 3 to 5 MiB more than 4 (159 to 160 MiB
/// against 155 to 157; 2 held 151 to 153), each replaying as fast. Not 2: one worker
/// slowed by a large body would leave the capture thread waiting on its queue while the
/// others' ran dry.
pub const REPLAY_QUEUE_BATCHES: usize = 4;

impl RuntimeConfig {
    /// Batches in flight per worker queue: `queue_batches` when set, else the default of
    /// the mode.
    pub fn queue_batches(&self, live: bool) -> usize {
        self.queue_batches.unwrap_or(if live {
            LIVE_QUEUE_BATCHES
        } else {
            REPLAY_QUEUE_BATCHES
        })
    }
}

/// A config error: where and what.
/// Displayed as `file:line:col: message` when the position is known, else `file: message`.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{}{message}", match .position { Some((l, c)) => format!("{l}:{c}: "), None => " ".to_string() })]
pub struct ConfigError {
    pub file: String,
    pub position: Option<(usize, usize)>,
    pub message: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    capture: RawCapture,
    #[serde(default)]
    decode: RawDecode,
    #[serde(default)]
    reassembly: RawReassembly,
    #[serde(default)]
    http: RawHttp,
    #[serde(default)]
    runtime: RawRuntime,
    /// `[[attestation]]`: one table per token family (Approov-compatible defaults).
    #[serde(default)]
    attestation: Vec<RawAttestation>,
    /// `[identity]`: the user token and client address attribution.
    identity: Option<RawIdentity>,
    #[serde(default)]
    detect: RawDetect,
    /// `[[webhook]]`: alert receivers.
    #[serde(default)]
    webhook: Vec<RawWebhook>,
    /// `[enforce]`: gateway checks, decisions, bouncers.
    enforce: Option<crate::enforce::RawEnforce>,
    /// `[tls]`: client fingerprints.
    #[serde(default)]
    tls: RawTls,
    /// `[grpc]`: gRPC messages and their schemas.
    #[serde(default)]
    grpc: RawGrpc,
    /// `[nats]`: the broker of a scale-out deployment.
    nats: Option<crate::export::config::RawNats>,
    /// `[export]`: `run`/`replay` publish detect events instead of running the rules.
    export: Option<crate::export::config::RawExport>,
    /// `[correlate]`: what `shieldtap correlate` consumes.
    correlate: Option<crate::export::config::RawCorrelate>,
}

/// `[grpc]`
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGrpc {
    /// `.protoset` files (`protoc --include_imports --descriptor_set_out=FILE`): field
    /// names for the methods they describe. Relative paths are from the working
    /// directory, as every path key here.
    descriptor_sets: Option<Vec<String>>,
    /// Most length-prefixed messages decoded per body (default 4096).
    max_messages: Option<usize>,
}

/// `[tls]`
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTls {
    /// Read ClientHellos on the mirror (default true).
    enabled: Option<bool>,
    /// Request headers carrying the client's JA4 from a TLS-terminating edge (default
    /// `CloudFront-Viewer-JA4-Fingerprint`, `X-JA4`).
    ja4_headers: Option<Vec<String>>,
    /// Request header naming the edge's viewer as `ip:port` (default
    /// `CloudFront-Viewer-Address`); `""` turns the join off.
    viewer_address_header: Option<String>,
    /// Devices with valid tokens that make a fingerprint the app's (default 3).
    learn_devices: Option<usize>,
    /// Fingerprints followed per app (default 64).
    max_fingerprints_per_app: Option<usize>,
    /// Devices remembered (default 100000).
    max_devices: Option<usize>,
    /// How long a device's sighting with the app's fingerprint counts (default 600).
    device_window_secs: Option<f64>,
    /// Known scripting-library JA4 fingerprints.
    scripting_ja4: Option<Vec<String>>,
    /// `run`: the learned fingerprints are kept here across restarts.
    state_file: Option<String>,
}

/// `[[webhook]]`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    /// Receiver name: metric label and spool folder (default `webhook-N`).
    name: Option<String>,
    url: String,
    /// `json` (default), `slack` or `alertmanager`.
    format: Option<String>,
    /// HMAC-SHA256 key for `X-Shieldtap-Signature`: inline, from a file, or from a variable.
    secret: Option<String>,
    secret_file: Option<String>,
    secret_env: Option<String>,
    /// Least severity sent (default `info`: everything).
    min_severity: Option<String>,
    /// Rule id globs (`token.*`); default: every rule.
    rules: Option<Vec<String>>,
    /// PEM trust anchors besides the system roots.
    ca_file: Option<String>,
    /// Spool folder (default `shieldtap-spool`); the receiver's files go in `<spool_dir>/<name>`.
    spool_dir: Option<String>,
    spool_max_mib: Option<u64>,
    batch_max: Option<usize>,
    timeout_secs: Option<f64>,
    /// How long shutdown waits for the spool to empty (default 10).
    drain_secs: Option<f64>,
    /// Alertmanager: `endsAt` this long after delivery (default 3600).
    resolve_after_secs: Option<f64>,
}

/// `[detect]`
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDetect {
    /// Keys (actors, devices, tokens) tracked per rule; at the cap the least recently seen
    /// tenth is evicted (counted).
    max_keys_per_rule: Option<usize>,
    /// Addresses, devices and users profiled (each kind); least recently seen evicted.
    max_actors: Option<usize>,
    /// Globs over templated routes of login endpoints (`**/login`, `/oauth/token`).
    login_routes: Option<Vec<String>>,
    /// JSON or form fields that carry the username on login routes.
    username_fields: Option<Vec<String>>,
    /// Objects in the ownership map (BOLA); least recently seen evicted.
    max_objects: Option<usize>,
    /// Distinct principals reading an object (nobody's) that make it public.
    public_object_readers: Option<usize>,
    /// Distinct principals reading a never-owned collection that make it public.
    public_collection_readers: Option<usize>,
    /// Scan response bodies for sensitive data (default true).
    scan_responses: Option<bool>,
    /// An expired attestation token this many seconds past `exp` still counts as attested
    /// (default 60).
    refresh_grace_secs: Option<f64>,
    /// Attested devices behind one address that make it a shared address (default 5).
    shared_address_devices: Option<u32>,
    /// Window over which they count, and how long the address stays shared (default 600).
    shared_address_window_secs: Option<f64>,
}

/// `[capture]`: live capture options (`run`).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCapture {
    /// Bytes captured per packet.
    snaplen_bytes: Option<u32>,
    /// Kernel ring buffer per interface, in MiB.
    buffer_size_mib: Option<u32>,
    promiscuous: Option<bool>,
    immediate_mode: Option<bool>,
    /// BPF filter, e.g. `tcp or (vlan and tcp)`.
    bpf: Option<String>,
    /// Several interfaces (a split tap: one direction per interface): how far in packet
    /// time one may run ahead of another and still be merged in order (default 1000).
    split_window_ms: Option<u64>,
    /// Payload each worker may hold for that merge, in MiB (default 64).
    split_hold_max_mib: Option<usize>,
    /// Scheduling niceness of the capture threads (-20 to 19; unset leaves it alone).
    nice: Option<i32>,
}

/// `[decode]`
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDecode {
    vxlan_ports: Option<Vec<u16>>,
    geneve_ports: Option<Vec<u16>>,
    max_tunnel_depth: Option<usize>,
    ip_fragment_max_datagrams: Option<usize>,
    ip_fragment_max_bytes: Option<usize>,
    ip_fragment_timeout_secs: Option<f64>,
    verify_checksums: Option<RawChecksums>,
}

/// `decode.verify_checksums`: `true`, `false` or `"auto"`.
struct RawChecksums(Checksums);

impl<'de> Deserialize<'de> for RawChecksums {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = RawChecksums;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("true, false or \"auto\"")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<RawChecksums, E> {
                Ok(RawChecksums(if v {
                    Checksums::Always
                } else {
                    Checksums::Never
                }))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawChecksums, E> {
                match v {
                    "auto" => Ok(RawChecksums(Checksums::Auto)),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// `[reassembly]`
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawReassembly {
    max_ooo_bytes_per_direction: Option<usize>,
    max_ooo_segments_per_direction: Option<usize>,
    max_buffered_bytes_per_worker: Option<usize>,
    idle_timeout_secs: Option<f64>,
    close_linger_secs: Option<f64>,
    reorder_window_secs: Option<f64>,
    gap_timeout_secs: Option<f64>,
}

/// `[http]`
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    max_head_bytes: Option<usize>,
    max_headers: Option<usize>,
    max_body_bytes: Option<usize>,
    max_decoded_body_bytes: Option<usize>,
    max_decompression_ratio: Option<u32>,
    max_pending_requests: Option<usize>,
    max_pending_bytes: Option<usize>,
    decode_bodies: Option<bool>,
}

/// `[runtime]`
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRuntime {
    workers: Option<usize>,
    queue_batches: Option<usize>,
    max_flows: Option<usize>,
    memory_budget_mib: Option<usize>,
    detect_shards: Option<usize>,
    ordering_lateness_ms: Option<u64>,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            position: None,
            message: format!("cannot read: {e}"),
        })?;
        Config::parse(&text, &file)
    }

    /// Parses and validates config text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError {
            file: file.to_string(),
            position: toml_position(text, &e),
            message: e.message().trim().to_string(),
        })?;
        let err = |key: &str, msg: &str| ConfigError {
            file: file.to_string(),
            position: key_position(text, key),
            message: format!("{key}: {msg}"),
        };
        let secs = |key: &str,
                    v: Option<f64>,
                    default: Duration|
         -> Result<Duration, ConfigError> {
            match v {
                None => Ok(default),
                Some(s) if s.is_finite() && s > 0.0 && s < 1e9 => Ok(Duration::from_secs_f64(s)),
                Some(_) => Err(err(key, "expected a positive number of seconds")),
            }
        };
        let positive =
            |key: &str, v: Option<usize>, default: usize| -> Result<usize, ConfigError> {
                match v {
                    None => Ok(default),
                    Some(0) => Err(err(key, "expected a positive number")),
                    Some(n) => Ok(n),
                }
            };
        let mut c = Config::default();

        let rc = &raw.capture;
        if let Some(s) = rc.snaplen_bytes {
            if !(64..=262_144).contains(&s) {
                return Err(err("capture.snaplen_bytes", "expected 64 to 262144"));
            }
            c.capture.snaplen = s as i32;
        }
        if let Some(m) = rc.buffer_size_mib {
            // libpcap takes the size as an i32 of bytes: 2048 MiB would overflow it.
            if !(1..=2047).contains(&m) {
                return Err(err("capture.buffer_size_mib", "expected 1 to 2047"));
            }
            c.capture.buffer_size_bytes = (m as i32) << 20;
        }
        c.capture.promiscuous = rc.promiscuous.unwrap_or(c.capture.promiscuous);
        c.capture.immediate = rc.immediate_mode.unwrap_or(c.capture.immediate);
        c.capture.bpf = rc.bpf.clone();
        if let Some(ms) = rc.split_window_ms {
            if !(1..=60_000).contains(&ms) {
                return Err(err("capture.split_window_ms", "expected 1 to 60000"));
            }
            c.capture.split_window = Duration::from_millis(ms);
        }
        if let Some(m) = rc.split_hold_max_mib {
            if !(1..=65_536).contains(&m) {
                return Err(err("capture.split_hold_max_mib", "expected 1 to 65536"));
            }
            c.capture.split_hold_max_bytes = m << 20;
        }
        if let Some(n) = rc.nice {
            if !(-20..=19).contains(&n) {
                return Err(err("capture.nice", "expected -20 to 19"));
            }
            c.capture.nice = Some(n);
        }

        let d = &raw.decode;
        if let Some(p) = &d.vxlan_ports {
            c.decode.vxlan_ports = p.clone();
        }
        if let Some(p) = &d.geneve_ports {
            c.decode.geneve_ports = p.clone();
        }
        c.decode.max_tunnel_depth = positive(
            "decode.max_tunnel_depth",
            d.max_tunnel_depth,
            c.decode.max_tunnel_depth,
        )?;
        c.decode.frag_max_datagrams = positive(
            "decode.ip_fragment_max_datagrams",
            d.ip_fragment_max_datagrams,
            c.decode.frag_max_datagrams,
        )?;
        c.decode.frag_max_bytes = positive(
            "decode.ip_fragment_max_bytes",
            d.ip_fragment_max_bytes,
            c.decode.frag_max_bytes,
        )?;
        c.decode.frag_timeout = secs(
            "decode.ip_fragment_timeout_secs",
            d.ip_fragment_timeout_secs,
            c.decode.frag_timeout,
        )?;
        if let Some(RawChecksums(v)) = d.verify_checksums {
            c.decode.checksums = v;
        }

        let r = &raw.reassembly;
        let ra = &mut c.reassembly;
        ra.max_ooo_bytes_per_direction = positive(
            "reassembly.max_ooo_bytes_per_direction",
            r.max_ooo_bytes_per_direction,
            ra.max_ooo_bytes_per_direction,
        )?;
        ra.max_ooo_segments_per_direction = positive(
            "reassembly.max_ooo_segments_per_direction",
            r.max_ooo_segments_per_direction,
            ra.max_ooo_segments_per_direction,
        )?;
        ra.max_buffered_bytes = positive(
            "reassembly.max_buffered_bytes_per_worker",
            r.max_buffered_bytes_per_worker,
            ra.max_buffered_bytes,
        )?;
        ra.idle_timeout = secs(
            "reassembly.idle_timeout_secs",
            r.idle_timeout_secs,
            ra.idle_timeout,
        )?;
        ra.close_linger = secs(
            "reassembly.close_linger_secs",
            r.close_linger_secs,
            ra.close_linger,
        )?;
        ra.reorder_window = secs(
            "reassembly.reorder_window_secs",
            r.reorder_window_secs,
            ra.reorder_window,
        )?;
        ra.gap_timeout = secs(
            "reassembly.gap_timeout_secs",
            r.gap_timeout_secs,
            ra.gap_timeout,
        )?;
        if ra.reorder_window > ra.gap_timeout {
            return Err(err(
                "reassembly.reorder_window_secs",
                "must not exceed gap_timeout_secs",
            ));
        }

        let h = &raw.http;
        let hc = &mut c.http;
        hc.max_head_bytes = positive("http.max_head_bytes", h.max_head_bytes, hc.max_head_bytes)?;
        hc.max_headers = positive("http.max_headers", h.max_headers, hc.max_headers)?;
        hc.max_body_bytes = h.max_body_bytes.unwrap_or(hc.max_body_bytes);
        hc.max_decoded_bytes = h.max_decoded_body_bytes.unwrap_or(hc.max_decoded_bytes);
        hc.max_decompression_ratio = match h.max_decompression_ratio {
            Some(0) => {
                return Err(err(
                    "http.max_decompression_ratio",
                    "expected a positive number",
                ));
            }
            Some(n) => n,
            None => hc.max_decompression_ratio,
        };
        hc.max_pending_requests = positive(
            "http.max_pending_requests",
            h.max_pending_requests,
            hc.max_pending_requests,
        )?;
        hc.max_pending_bytes = positive(
            "http.max_pending_bytes",
            h.max_pending_bytes,
            hc.max_pending_bytes,
        )?;
        hc.decode_bodies = h.decode_bodies.unwrap_or(hc.decode_bodies);

        let rt = &raw.runtime;
        if let Some(w) = rt.workers {
            if !(1..=256).contains(&w) {
                return Err(err("runtime.workers", "expected 1 to 256"));
            }
            c.runtime.workers = Some(w);
        }
        if rt.queue_batches.is_some() {
            c.runtime.queue_batches = Some(positive(
                "runtime.queue_batches",
                rt.queue_batches,
                LIVE_QUEUE_BATCHES,
            )?);
        }
        c.runtime.max_flows = positive("runtime.max_flows", rt.max_flows, c.runtime.max_flows)?;
        if let Some(m) = rt.memory_budget_mib {
            if !(crate::budget::MIN_MIB..=1 << 20).contains(&m) {
                return Err(err(
                    "runtime.memory_budget_mib",
                    &format!("expected {} to 1048576", crate::budget::MIN_MIB),
                ));
            }
            c.runtime.budget = crate::budget::Budget::mib(m);
        }
        if let Some(n) = rt.detect_shards {
            if !(1..=64).contains(&n) {
                return Err(err("runtime.detect_shards", "expected 1 to 64"));
            }
            c.runtime.detect_shards = n;
        }
        if let Some(ms) = rt.ordering_lateness_ms {
            if ms > MAX_ORDERING_LATENESS_MS {
                return Err(err(
                    "runtime.ordering_lateness_ms",
                    "expected 0 to 60000 milliseconds",
                ));
            }
            c.runtime.ordering_lateness = Duration::from_millis(ms);
        }

        c.token = TokenConfig::from_raw(&raw.attestation, raw.identity.as_ref()).map_err(|m| {
            // Token messages start with the key path (`attestation[0].secret_base64: ...`).
            let key = m.split(": ").next().unwrap_or_default();
            ConfigError {
                file: file.to_string(),
                position: key_position(text, key),
                message: m,
            }
        })?;

        if let Some(n) = raw.detect.max_keys_per_rule {
            if !(1..=10_000_000).contains(&n) {
                return Err(err("detect.max_keys_per_rule", "expected 1 to 10000000"));
            }
            c.detect.max_keys_per_rule = n;
        }
        if let Some(n) = raw.detect.max_actors {
            if !(1..=100_000_000).contains(&n) {
                return Err(err("detect.max_actors", "expected 1 to 100000000"));
            }
            c.detect.max_actors = n;
        }
        if let Some(globs) = &raw.detect.login_routes {
            if globs.is_empty() {
                return Err(err(
                    "detect.login_routes",
                    "expected at least one route glob",
                ));
            }
            let res: Vec<String> = globs
                .iter()
                .map(|g| crate::rules::glob_to_regex(g, '/'))
                .collect();
            c.detect.login.routes = regex::RegexSet::new(&res)
                .map_err(|e| err("detect.login_routes", &format!("bad pattern: {e}")))?;
        }
        c.detect.scan_responses = raw.detect.scan_responses.unwrap_or(true);
        if let Some(g) = raw.detect.refresh_grace_secs {
            if !(g.is_finite() && (0.0..=3600.0).contains(&g)) {
                return Err(err(
                    "detect.refresh_grace_secs",
                    "expected 0 to 3600 seconds",
                ));
            }
            c.detect.refresh_grace = std::time::Duration::from_secs_f64(g);
        }
        if let Some(n) = raw.detect.shared_address_devices {
            if !(2..=10_000).contains(&n) {
                return Err(err("detect.shared_address_devices", "expected 2 to 10000"));
            }
            c.detect.shared.min_devices = n;
        }
        if let Some(w) = raw.detect.shared_address_window_secs {
            if !(w.is_finite() && w > 0.0 && w <= 86_400.0) {
                return Err(err(
                    "detect.shared_address_window_secs",
                    "expected more than 0 and at most 86400 seconds",
                ));
            }
            c.detect.shared.window = std::time::Duration::from_secs_f64(w);
        }
        if let Some(n) = raw.detect.max_objects {
            if !(1..=100_000_000).contains(&n) {
                return Err(err("detect.max_objects", "expected 1 to 100000000"));
            }
            c.detect.owners.max_objects = n;
        }
        if let Some(n) = raw.detect.public_object_readers {
            if !(2..=1000).contains(&n) {
                return Err(err("detect.public_object_readers", "expected 2 to 1000"));
            }
            c.detect.owners.public_readers = n;
        }
        if let Some(n) = raw.detect.public_collection_readers {
            if !(2..=100_000).contains(&n) {
                return Err(err(
                    "detect.public_collection_readers",
                    "expected 2 to 100000",
                ));
            }
            c.detect.owners.public_collection_readers = n;
        }
        if let Some(f) = &raw.detect.username_fields {
            if f.is_empty() || f.iter().any(String::is_empty) {
                return Err(err(
                    "detect.username_fields",
                    "expected non-empty field names",
                ));
            }
            c.detect.login.fields = f.clone();
        }

        for (i, w) in raw.webhook.iter().enumerate() {
            let key = |k: &str| format!("webhook[{i}].{k}");
            let e = |k: &str, m: &str| err(&key(k), m);
            let name = w.name.clone().unwrap_or_else(|| format!("webhook-{i}"));
            if name.is_empty()
                || !name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
            {
                return Err(e("name", "expected letters, digits, `-`, `_` or `.`"));
            }
            if c.webhooks.iter().any(|x: &WebhookConfig| x.name == name) {
                return Err(e("name", &format!("`{name}` is used twice")));
            }
            let url = w.url.trim().to_string();
            let lower = url.to_ascii_lowercase();
            if !(lower.starts_with("https://") || lower.starts_with("http://")) {
                return Err(e("url", "expected an http:// or https:// URL"));
            }
            let format = match w.format.as_deref().unwrap_or("json") {
                "json" => Format::Json,
                "slack" => Format::Slack,
                "alertmanager" => Format::Alertmanager,
                _ => return Err(e("format", "expected json, slack or alertmanager")),
            };
            let secret = crate::secret::read(
                "secret",
                w.secret.as_deref(),
                w.secret_file.as_deref(),
                w.secret_env.as_deref(),
            )
            .map_err(|se| e(&se.key, &se.message))?;
            if secret.as_ref().is_some_and(|s| s.len() < 16) {
                return Err(e("secret", "expected at least 16 bytes"));
            }
            let min_severity = match w.min_severity.as_deref().unwrap_or("info") {
                "info" => Severity::Info,
                "low" => Severity::Low,
                "medium" => Severity::Medium,
                "high" => Severity::High,
                "critical" => Severity::Critical,
                _ => {
                    return Err(e(
                        "min_severity",
                        "expected info, low, medium, high or critical",
                    ));
                }
            };
            let rules = match &w.rules {
                None => None,
                Some(globs) if globs.is_empty() => {
                    return Err(e(
                        "rules",
                        "an empty list sends nothing; leave it out for all rules",
                    ));
                }
                Some(globs) => Some(
                    regex::RegexSet::new(globs.iter().map(|g| crate::rules::glob_to_regex(g, '.')))
                        .map_err(|er| e("rules", &format!("bad pattern: {er}")))?,
                ),
            };
            let spool_max_mib = w.spool_max_mib.unwrap_or(256);
            if !(1..=1_048_576).contains(&spool_max_mib) {
                return Err(e("spool_max_mib", "expected 1 to 1048576"));
            }
            let batch_max = positive(&key("batch_max"), w.batch_max, 100)?;
            let batch_max = if format == Format::Slack {
                batch_max.min(20)
            } else {
                batch_max
            };
            c.webhooks.push(WebhookConfig {
                name,
                url,
                format,
                secret,
                min_severity,
                rules,
                ca_file: w.ca_file.as_ref().map(std::path::PathBuf::from),
                spool_dir: std::path::PathBuf::from(
                    w.spool_dir.as_deref().unwrap_or("shieldtap-spool"),
                ),
                spool_max_bytes: spool_max_mib << 20,
                batch_max,
                timeout: secs(
                    &key("timeout_secs"),
                    w.timeout_secs,
                    Duration::from_secs(10),
                )?,
                drain: secs(&key("drain_secs"), w.drain_secs, Duration::from_secs(10))?,
                resolve_after: secs(
                    &key("resolve_after_secs"),
                    w.resolve_after_secs,
                    Duration::from_secs(3600),
                )?,
            });
        }
        let t = &raw.tls;
        let tls = &mut c.detect.tls;
        tls.enabled = t.enabled.unwrap_or(true);
        tls.state_file = t.state_file.as_ref().map(std::path::PathBuf::from);
        if let Some(h) = &t.ja4_headers {
            tls.ja4_headers = h.iter().map(|x| x.trim().to_ascii_lowercase()).collect();
        }
        if let Some(h) = &t.viewer_address_header {
            let h = h.trim().to_ascii_lowercase();
            tls.viewer_address_header = (!h.is_empty()).then_some(h);
        }
        tls.learn_devices = positive("tls.learn_devices", t.learn_devices, tls.learn_devices)?;
        tls.max_per_app = positive(
            "tls.max_fingerprints_per_app",
            t.max_fingerprints_per_app,
            tls.max_per_app,
        )?;
        tls.max_devices = positive("tls.max_devices", t.max_devices, tls.max_devices)?;
        tls.device_window = secs(
            "tls.device_window_secs",
            t.device_window_secs,
            tls.device_window,
        )?;
        if let Some(list) = &t.scripting_ja4 {
            for j in list {
                if j.len() != 36 || !j.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    return Err(err(
                        "tls.scripting_ja4",
                        &format!(
                            "`{j}` is not a JA4 fingerprint (36 characters, like t13d1516h2_8daaf6152771_e5627efa2ab1)"
                        ),
                    ));
                }
            }
            tls.scripting = list.iter().cloned().collect();
        }
        let g = &raw.grpc;
        c.grpc.max_messages = positive("grpc.max_messages", g.max_messages, c.grpc.max_messages)?;
        if let Some(sets) = &g.descriptor_sets {
            for (i, p) in sets.iter().enumerate() {
                // Each file on its own first, so the error points at its entry.
                crate::grpc::Descriptors::load(&[p])
                    .map_err(|e| err(&format!("grpc.descriptor_sets[{i}]"), &e.to_string()))?;
            }
            c.grpc.descriptor_sets = sets.iter().map(std::path::PathBuf::from).collect();
            if !sets.is_empty() {
                let d = crate::grpc::Descriptors::load(&c.grpc.descriptor_sets)
                    .map_err(|e| err("grpc.descriptor_sets", &e.to_string()))?;
                c.grpc.descriptors = Some(std::sync::Arc::new(d));
            }
        }
        if let Some(e) = &raw.enforce {
            c.enforce =
                Some(crate::enforce::EnforceConfig::from_raw(e).map_err(|(k, m)| err(&k, &m))?);
        }
        if let Some(n) = &raw.nats {
            c.nats = Some(crate::export::NatsConfig::from_raw(n).map_err(|(k, m)| err(&k, &m))?);
        }
        if let Some(e) = &raw.export {
            if c.nats.is_none() {
                return Err(err("export", "[export] needs a [nats] section (servers)"));
            }
            c.export =
                Some(crate::export::ExportConfig::from_raw(e).map_err(|(k, m)| err(&k, &m))?);
        }
        if let Some(r) = &raw.correlate {
            let Some(n) = &c.nats else {
                return Err(err(
                    "correlate",
                    "[correlate] needs a [nats] section (servers)",
                ));
            };
            c.correlate = Some(
                crate::export::CorrelateConfig::from_raw(r, n.partitions)
                    .map_err(|(k, m)| err(&k, &m))?,
            );
        }
        c.detect.budget = c.runtime.budget;
        c.detect.shards = c.runtime.detect_shards;
        c.detect.ordering_lateness = c.runtime.ordering_lateness;
        Ok(c)
    }
}

/// 1-based line and column of the value of a dotted key path (`reassembly.idle_timeout_secs`,
/// `attestation[1].secret_base64`, `decode.vxlan_ports[0]`), or of the deepest part of the
/// path that exists, so a validation error points where the user must edit.
fn key_position(text: &str, path: &str) -> Option<(usize, usize)> {
    use toml::de::{DeTable, DeValue};
    let root = DeTable::parse(text).ok()?;
    let mut table: &DeTable<'_> = root.get_ref();
    let mut found: Option<std::ops::Range<usize>> = None;
    let mut value: Option<&DeValue<'_>> = None;
    for seg in path.split('.') {
        let (name, index) = match seg.split_once('[') {
            Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (seg, None),
        };
        if let Some(v) = value {
            match v {
                DeValue::Table(t) => table = t,
                _ => break,
            }
        }
        let Some((_, v)) = table.iter().find(|(k, _)| k.get_ref().as_ref() == name) else {
            break;
        };
        found = Some(v.span());
        value = Some(v.get_ref());
        if let Some(i) = index {
            let Some(DeValue::Array(items)) = value else {
                break;
            };
            let Some(item) = items.get(i) else { break };
            found = Some(item.span());
            value = Some(item.get_ref());
        }
    }
    let span = found?;
    Some(line_col(text, span.start))
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    (line, col)
}

/// 1-based line and column of a toml error, so the user can jump to it.
fn toml_position(text: &str, e: &toml::de::Error) -> Option<(usize, usize)> {
    let span = e.span()?;
    let before = text.get(..span.start.min(text.len()))?;
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    Some((line, col))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_gives_defaults() {
        let c = Config::parse("", "x.toml").expect("valid");
        assert_eq!(c.decode.vxlan_ports, vec![4789]);
        assert_eq!(c.reassembly.idle_timeout, Duration::from_secs(120));
    }

    #[test]
    fn queue_depth_defaults_by_mode_and_a_set_value_holds_in_both() {
        let c = Config::parse("", "x.toml").expect("valid");
        assert_eq!(c.runtime.queue_batches(true), LIVE_QUEUE_BATCHES);
        assert_eq!(c.runtime.queue_batches(false), REPLAY_QUEUE_BATCHES);
        let c = Config::parse("[runtime]\nqueue_batches = 3\n", "x.toml").expect("valid");
        assert_eq!(c.runtime.queue_batches(true), 3);
        assert_eq!(c.runtime.queue_batches(false), 3);
        let e = Config::parse("[runtime]\nqueue_batches = 0\n", "x.toml").expect_err("zero");
        assert!(e.to_string().contains("runtime.queue_batches"), "{e}");
    }

    #[test]
    fn ordering_lateness_defaults_to_half_a_second_and_bad_values_are_named() {
        let c = Config::parse("", "x.toml").expect("valid");
        assert_eq!(c.detect.ordering_lateness, Duration::from_millis(500));
        let c = Config::parse("[runtime]\nordering_lateness_ms = 2500\n", "x.toml").expect("valid");
        assert_eq!(c.runtime.ordering_lateness, Duration::from_millis(2500));
        assert_eq!(c.detect.ordering_lateness, Duration::from_millis(2500));
        let c = Config::parse("[runtime]\nordering_lateness_ms = 0\n", "x.toml").expect("valid");
        assert_eq!(c.detect.ordering_lateness, Duration::ZERO);
        let e = Config::parse("[runtime]\nordering_lateness_ms = 60001\n", "x.toml")
            .expect_err("too long");
        assert_eq!(
            e.to_string(),
            "x.toml:2:24: runtime.ordering_lateness_ms: expected 0 to 60000 milliseconds"
        );
        let e = Config::parse("[runtime]\nordering_lateness_ms = -1\n", "x.toml")
            .expect_err("negative");
        assert!(e.to_string().starts_with("x.toml:2:"), "{e}");
    }

    #[test]
    fn grpc_section_loads_descriptor_sets_and_names_bad_ones() {
        let c = Config::parse("", "x.toml").expect("valid");
        assert_eq!(c.grpc.max_messages, 4096);
        assert!(c.grpc.descriptors.is_none());
        // Tests run in the package root; relative paths are from the working directory.
        let c = Config::parse(
            "[grpc]\nmax_messages = 64\ndescriptor_sets = [\"tests/fixtures/grpc/shop.protoset\"]\n",
            "g.toml",
        )
        .expect("valid");
        assert_eq!(c.grpc.max_messages, 64);
        let d = c.grpc.descriptors.as_ref().expect("loaded");
        assert!(d.method("/shop.v1.Shop/Login").is_some());
        let e = Config::parse(
            "[grpc]\ndescriptor_sets = [\"tests/fixtures/grpc/shop.protoset\", \"nope.protoset\"]\n",
            "g.toml",
        )
        .expect_err("missing file");
        assert!(
            e.to_string()
                .starts_with("g.toml:2:57: grpc.descriptor_sets[1]: nope.protoset: cannot read"),
            "{e}"
        );
        let e = Config::parse(
            "[grpc]\ndescriptor_sets = [\"tests/fixtures/grpc/shop.proto\"]\n",
            "g.toml",
        )
        .expect_err("a .proto is not a descriptor set");
        assert!(e.to_string().contains("not a usable descriptor set"), "{e}");
        let e = Config::parse("[grpc]\nmax_messages = 0\n", "g.toml").expect_err("zero");
        assert!(e.to_string().contains("grpc.max_messages"), "{e}");
        assert!(Config::parse("[grpc]\nmax_message = 3\n", "g.toml").is_err());
    }

    #[test]
    fn values_are_typed() {
        let c = Config::parse(
            "[decode]\nvxlan_ports = [4789, 8472]\n[reassembly]\nidle_timeout_secs = 30\n[runtime]\nworkers = 3\n",
            "x.toml",
        )
        .expect("valid");
        assert_eq!(c.decode.vxlan_ports, vec![4789, 8472]);
        assert_eq!(c.reassembly.idle_timeout, Duration::from_secs(30));
        assert_eq!(c.runtime.workers, Some(3));
    }

    #[test]
    fn checksum_verification_is_true_false_or_auto() {
        let c = Config::parse("", "x.toml").expect("valid");
        assert_eq!(c.decode.checksums, Checksums::Auto);
        for (text, want) in [
            ("true", Checksums::Always),
            ("false", Checksums::Never),
            ("\"auto\"", Checksums::Auto),
        ] {
            let c = Config::parse(&format!("[decode]\nverify_checksums = {text}\n"), "x.toml")
                .expect("valid");
            assert_eq!(c.decode.checksums, want, "{text}");
        }
        for bad in ["\"sometimes\"", "1"] {
            let e = Config::parse(&format!("[decode]\nverify_checksums = {bad}\n"), "c.toml")
                .expect_err(bad);
            let e = e.to_string();
            assert!(e.starts_with("c.toml:2:20: "), "{bad}: {e}");
            assert!(
                e.ends_with("expected true, false or \"auto\""),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn split_tap_settings() {
        let c = Config::parse("", "x.toml").expect("valid");
        assert_eq!(c.capture.split_window, Duration::from_secs(1));
        assert_eq!(c.capture.split_hold_max_bytes, 64 << 20);
        let c = Config::parse(
            "[capture]\nsplit_window_ms = 250\nsplit_hold_max_mib = 8\n",
            "x.toml",
        )
        .expect("valid");
        assert_eq!(c.capture.split_window, Duration::from_millis(250));
        assert_eq!(c.capture.split_hold_max_bytes, 8 << 20);
        let e = Config::parse("[capture]\nsplit_window_ms = 0\n", "x.toml").expect_err("zero");
        assert!(e.to_string().contains("capture.split_window_ms"), "{e}");
    }

    #[test]
    fn capture_nice_is_a_niceness() {
        assert_eq!(
            Config::parse("", "x.toml").expect("valid").capture.nice,
            None
        );
        for n in [-20, -10, 0, 19] {
            let c = Config::parse(&format!("[capture]\nnice = {n}\n"), "x.toml").expect("valid");
            assert_eq!(c.capture.nice, Some(n));
        }
        for n in [-21, 20, 100] {
            let e = Config::parse(&format!("[capture]\nnice = {n}\n"), "x.toml")
                .expect_err("out of range");
            assert!(e.to_string().contains("capture.nice"), "{e}");
            assert!(e.to_string().contains("-20 to 19"), "{e}");
        }
    }

    #[test]
    fn unknown_key_names_line_and_column() {
        let e = Config::parse("[http]\nmax_head_bytes = 10\nmax_body = 5\n", "cfg.toml")
            .expect_err("unknown key");
        let s = e.to_string();
        assert!(s.starts_with("cfg.toml:3:1: "), "{s}");
        assert!(s.contains("max_body"), "{s}");
    }

    #[test]
    fn attestation_tables_are_validated() {
        let c = Config::parse(
            "[[attestation]]\nname = \"approov\"\nheader = \"Approov-Token\"\nsecret_base64 = \"c2VjcmV0\"\n",
            "a.toml",
        )
        .expect("valid");
        assert_eq!(c.token.families.len(), 1);
        let e = Config::parse("[[attestation]]\nsecret_base64 = \"***\"\n", "a.toml")
            .expect_err("bad base64");
        assert!(e.to_string().contains("secret_base64"), "{e}");
        let e = Config::parse("[[attestation]]\nheadr = \"x\"\n", "a.toml").expect_err("typo");
        assert!(e.to_string().contains("a.toml:2:1:"), "{e}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = Config::parse("[reassembly]\nidle_timeout_secs = -1\n", "c.toml")
            .expect_err("negative");
        assert!(
            e.to_string().contains("reassembly.idle_timeout_secs"),
            "{e}"
        );
        let e = Config::parse("[runtime]\nworkers = 0\n", "c.toml").expect_err("zero");
        assert!(e.to_string().contains("runtime.workers"), "{e}");
        let e = Config::parse("[decode]\nvxlan_ports = [70000]\n", "c.toml").expect_err("port");
        assert!(e.to_string().starts_with("c.toml:2:"), "{e}");
    }

    #[test]
    fn detect_section_sets_login_routes_and_caps() {
        let c = Config::parse(
            "[detect]\nmax_actors = 500\nlogin_routes = [\"/v2/auth/*\"]\nusername_fields = [\"msisdn\"]\n",
            "d.toml",
        )
        .expect("valid");
        assert_eq!(c.detect.max_actors, 500);
        let o = Config::parse(
            "[detect]\nmax_objects = 10\npublic_object_readers = 5\n",
            "d.toml",
        )
        .expect("valid");
        assert_eq!(o.detect.owners.max_objects, 10);
        assert_eq!(o.detect.owners.public_readers, 5);
        assert!(c.detect.login.routes.is_match("/v2/auth/password"));
        assert!(!c.detect.login.routes.is_match("/api/v1/login"));
        assert_eq!(c.detect.login.fields, vec!["msisdn".to_string()]);
        let e = Config::parse("[detect]\nlogin_routes = []\n", "d.toml").expect_err("empty");
        assert!(
            e.to_string()
                .starts_with("d.toml:2:16: detect.login_routes"),
            "{e}"
        );
    }

    #[test]
    fn validation_errors_point_at_the_value() {
        let e = Config::parse("[reassembly]\n\nidle_timeout_secs = -1\n", "c.toml")
            .expect_err("negative");
        assert!(
            e.to_string()
                .starts_with("c.toml:3:21: reassembly.idle_timeout_secs: "),
            "{e}"
        );
        let e = Config::parse(
            "[[attestation]]\nname = \"a\"\n[[attestation]]\nname = \"b\"\nsecret_base64 = \"***\"\n",
            "c.toml",
        )
        .expect_err("bad base64");
        assert!(
            e.to_string()
                .starts_with("c.toml:5:17: attestation[1].secret_base64"),
            "{e}"
        );
        let e = Config::parse(
            "[identity]\nuser_secret_base64 = \"AAAA\"\nuser_secrets = { hs-1 = \"AAAA\", hs-2 = \"***\" }\n",
            "c.toml",
        )
        .expect_err("bad named secret");
        assert!(
            e.to_string()
                .starts_with("c.toml:3:40: identity.user_secrets.hs-2: not valid base64"),
            "{e}"
        );
        let e = Config::parse("[[attestation]]\nsecret_kid = \"0001\"\n", "c.toml")
            .expect_err("kid without secret");
        assert!(
            e.to_string()
                .starts_with("c.toml:2:14: attestation[0].secret_kid"),
            "{e}"
        );
        let e = Config::parse("[detect]\nmax_keys_per_rule = 0\n", "c.toml").expect_err("zero");
        assert!(
            e.to_string()
                .starts_with("c.toml:2:21: detect.max_keys_per_rule"),
            "{e}"
        );
    }

    mod nats {
        use super::Config;

        fn err(text: &str) -> String {
            Config::parse(text, "s.toml").expect_err(text).to_string()
        }

        #[test]
        fn nats_sections_parse_and_bad_ones_are_named() {
            let c = Config::parse(
                "[nats]\nservers = [\"nats://127.0.0.1:4222\"]\nuser = \"u\"\npassword = \"p-0123456789\"\npartitions = 8\n[export]\nsensor = \"zone-a\"\n[correlate]\npartitions = [7, 1, 1]\nsensors = [\"zone-a\"]\n",
                "s.toml",
            )
            .unwrap();
            let n = c.nats.as_ref().unwrap();
            assert_eq!(n.partitions, 8);
            assert_eq!(n.events_subject(3), "shieldtap.events.p3");
            assert!(!n.require_tls);
            // The password never shows in a debug print.
            assert!(!format!("{:?}", n.auth).contains("p-0123456789"));
            assert_eq!(c.export.as_ref().unwrap().sensor, "zone-a");
            assert_eq!(c.correlate.as_ref().unwrap().partitions, vec![1, 7]);
            let tls = Config::parse("[nats]\nservers = [\"tls://h:4222\"]\n", "s.toml").unwrap();
            assert!(tls.nats.unwrap().require_tls);

            assert!(err("[export]\nsensor = \"a\"\n").contains("needs a [nats] section"));
            assert!(err("[nats]\nservers = []\n").contains("nats.servers"));
            assert!(err("[nats]\nservers = [\"http://h:1\"]\n").contains("nats.servers[0]"));
            assert!(
                err("[nats]\nservers = [\"nats://h:1\"]\nuser = \"u\"\n").contains("nats.password")
            );
            assert!(
                err("[nats]\nservers = [\"nats://h:1\"]\nnkey_seed = \"SUnot-a-seed\"\n")
                    .contains("nats.nkey_seed")
            );
            assert!(
                err("[nats]\nservers = [\"nats://h:1\"]\npartitions = 2\n[correlate]\npartitions = [2]\n")
                    .contains("correlate.partitions")
            );
            assert!(
                err("[nats]\nservers = [\"nats://h:1\"]\n[export]\nsensor = \"a b\"\n")
                    .contains("export.sensor")
            );
            assert!(
                err("[nats]\nservers = [\"nats://h:1\"]\nreplicas = 7\n").contains("nats.replicas")
            );
        }
    }
}
