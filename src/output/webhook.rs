//! Webhooks: alerts delivered to HTTP receivers without losing any.
//!
//! Input: alerts from the detect thread. Each receiver (`[[webhook]]`) filters them by
//! severity and rule, appends them to its on-disk spool (append-only JSON lines, fsynced per
//! batch) and wakes its delivery thread, which posts them in order, in batches, in the
//! receiver's format (`json`, `slack`, `alertmanager`), signed with HMAC-SHA256 when a secret
//! is set, over rustls. A delivered batch advances the spool's cursor (written atomically);
//! a failed one is retried with exponential backoff and jitter; what is still spooled at
//! exit is sent after the next start. Every alert carries an id (a hash of its record), so
//! receivers can drop the duplicates a crash between delivery and cursor write can cause.
//! Limits: the spool has a byte cap (alerts past it are counted as dropped), a batch has at
//! most `batch_max` alerts, a request has a timeout, and shutdown waits at most `drain`.
//! A receiver answering 4xx (other than 408 and 429) rejected the batch for good: it is
//! counted as failed and skipped, so one bad batch cannot block the queue.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use regex::RegexSet;
use serde_json::{Value, json};

use crate::detect::Alert;
use crate::rules::Severity;

/// One webhook receiver's counters (the output stage owns them; telemetry reads them).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct WebhookSnapshot {
    pub receiver: String,
    pub queued: u64,
    pub delivered: u64,
    pub retried: u64,
    pub failed: u64,
    pub spool_depth: u64,
}

/// Most bytes read from the spool for one batch.
const MAX_BATCH_READ: u64 = 4 << 20;
/// Backoff bounds between failed attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Receiver message formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// A JSON array of alert records, each with its `id`.
    Json,
    /// A Slack incoming-webhook message.
    Slack,
    /// Alertmanager API v2 (`POST /api/v2/alerts`).
    Alertmanager,
}

/// One `[[webhook]]`, validated.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    /// Receiver name (metric label, spool folder).
    pub name: String,
    pub url: String,
    pub format: Format,
    /// HMAC-SHA256 key for `X-Shieldtap-Signature`.
    pub secret: Option<Vec<u8>>,
    pub min_severity: Severity,
    /// Rule id globs; `None`: every rule.
    pub rules: Option<RegexSet>,
    /// Extra trust anchors (PEM) besides the system roots.
    pub ca_file: Option<PathBuf>,
    pub spool_dir: PathBuf,
    pub spool_max_bytes: u64,
    pub batch_max: usize,
    pub timeout: Duration,
    /// How long shutdown waits for the spool to empty.
    pub drain: Duration,
    /// Alertmanager: `endsAt` is this long after delivery.
    pub resolve_after: Duration,
}

/// Why webhooks could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook `{name}`: spool {dir}: {source}")]
    Spool {
        name: String,
        dir: String,
        source: std::io::Error,
    },
    #[error("webhook `{name}`: {message}")]
    Client { name: String, message: String },
}

#[derive(Default)]
struct Counters {
    queued: AtomicU64,
    delivered: AtomicU64,
    retried: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

/// The on-disk queue of one receiver: `queue.jsonl` (one record per line) and `cursor`
/// (byte offset of the first record not yet delivered).
struct Spool {
    dir: PathBuf,
    inner: Mutex<SpoolInner>,
}

struct SpoolInner {
    file: File,
    len: u64,
    cursor: u64,
    pending: u64,
    max_bytes: u64,
}

impl Spool {
    fn open(dir: &Path, max_bytes: u64) -> std::io::Result<Spool> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("queue.jsonl");
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)?;
        let mut len = file.metadata()?.len();
        // A crash mid-append leaves a partial last line: cut back to the last newline.
        if len > 0 {
            let mut text = Vec::new();
            file.seek(SeekFrom::Start(0))?;
            file.read_to_end(&mut text)?;
            let keep = text
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |i| i as u64 + 1);
            if keep != len {
                file.set_len(keep)?;
                len = keep;
            }
        }
        let cursor = std::fs::read_to_string(dir.join("cursor"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0)
            .min(len);
        let mut pending = 0;
        file.seek(SeekFrom::Start(cursor))?;
        for line in BufReader::new(&file).split(b'\n') {
            line?;
            pending += 1;
        }
        Ok(Spool {
            dir: dir.to_path_buf(),
            inner: Mutex::new(SpoolInner {
                file,
                len,
                cursor,
                pending,
                max_bytes,
            }),
        })
    }

    /// Appends records and syncs them to disk; returns how many did not fit under the cap.
    fn append(&self, lines: &[String]) -> std::io::Result<u64> {
        let Ok(mut s) = self.inner.lock() else {
            return Ok(lines.len() as u64);
        };
        let mut buf = Vec::new();
        let mut dropped = 0;
        let mut added = 0;
        for l in lines {
            if s.len + (buf.len() + l.len() + 1) as u64 > s.max_bytes {
                dropped += 1;
                continue;
            }
            buf.extend_from_slice(l.as_bytes());
            buf.push(b'\n');
            added += 1;
        }
        if !buf.is_empty() {
            s.file.write_all(&buf)?;
            s.file.sync_data()?;
            s.len += buf.len() as u64;
            s.pending += added;
        }
        Ok(dropped)
    }

    /// Up to `max` records from the cursor, and the offset just past the last one.
    fn read_batch(&self, max: usize) -> std::io::Result<(Vec<String>, u64)> {
        let Ok(mut s) = self.inner.lock() else {
            return Ok((Vec::new(), 0));
        };
        let start = s.cursor;
        if start >= s.len {
            return Ok((Vec::new(), start));
        }
        s.file.seek(SeekFrom::Start(start))?;
        let mut reader = BufReader::new((&s.file).take(MAX_BATCH_READ));
        let mut out = Vec::new();
        let mut end = start;
        let mut line = Vec::new();
        while out.len() < max {
            line.clear();
            let n = reader.read_until(b'\n', &mut line)?;
            if n == 0 || line.last() != Some(&b'\n') {
                break;
            }
            end += n as u64;
            out.push(String::from_utf8_lossy(&line[..n - 1]).into_owned());
        }
        Ok((out, end))
    }

    /// Marks records up to `end` delivered; empties the files once everything is.
    fn ack(&self, end: u64, n: u64) -> std::io::Result<()> {
        let Ok(mut s) = self.inner.lock() else {
            return Ok(());
        };
        s.cursor = end.min(s.len);
        s.pending = s.pending.saturating_sub(n);
        if s.cursor == s.len {
            s.file.set_len(0)?;
            s.len = 0;
            s.cursor = 0;
            s.pending = 0;
        }
        // Written to a temporary file and renamed: a crash leaves the old or the new cursor.
        let tmp = self.dir.join("cursor.tmp");
        std::fs::write(&tmp, s.cursor.to_string())?;
        std::fs::rename(&tmp, self.dir.join("cursor"))?;
        Ok(())
    }

    fn pending(&self) -> u64 {
        self.inner.lock().map(|s| s.pending).unwrap_or(0)
    }
}

struct Receiver {
    cfg: Arc<WebhookConfig>,
    spool: Arc<Spool>,
    counters: Arc<Counters>,
    wake: Arc<tokio::sync::Notify>,
    thread: Mutex<Option<thread::JoinHandle<()>>>,
}

/// The webhook receivers of a run.
pub struct Webhooks {
    receivers: Vec<Receiver>,
    /// Set at shutdown: deliver what is spooled until this instant, then stop.
    drain_until: Arc<Mutex<Option<Instant>>>,
    stopping: Arc<AtomicBool>,
}

/// An alert's stable id: a hash of its record (the same alert always has the same id).
pub fn alert_id(record: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, record.as_bytes());
    d.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `sha256=<hex>` of HMAC-SHA256 over `<timestamp>.<body>`.
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let mut ctx = aws_lc_rs::hmac::Context::with_key(&key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let tag = ctx.sign();
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

fn client(cfg: &WebhookConfig) -> Result<reqwest::Client, WebhookError> {
    let err = |message: String| WebhookError::Client {
        name: cfg.name.clone(),
        message,
    };
    let base = || {
        reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("shieldtap/", env!("CARGO_PKG_VERSION")))
    };
    let Some(path) = &cfg.ca_file else {
        return base().build().map_err(|e| err(e.to_string()));
    };
    let pem = std::fs::read(path).map_err(|e| err(format!("ca_file {}: {e}", path.display())))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| err(format!("ca_file {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(err(format!(
            "ca_file {}: no PEM certificate",
            path.display()
        )));
    }
    base()
        .tls_certs_merge(certs.clone())
        .build()
        .or_else(|_| base().tls_certs_only(certs).build())
        .map_err(|e| err(e.to_string()))
}

impl Webhooks {
    /// Opens every receiver's spool (anything left from an earlier run is sent first) and
    /// starts its delivery thread.
    pub fn start(cfgs: &[WebhookConfig]) -> Result<Webhooks, WebhookError> {
        let drain_until = Arc::new(Mutex::new(None));
        let stopping = Arc::new(AtomicBool::new(false));
        let mut receivers = Vec::new();
        for cfg in cfgs {
            let dir = cfg.spool_dir.join(&cfg.name);
            let spool =
                Spool::open(&dir, cfg.spool_max_bytes).map_err(|source| WebhookError::Spool {
                    name: cfg.name.clone(),
                    dir: dir.display().to_string(),
                    source,
                })?;
            let http = client(cfg)?;
            let cfg = Arc::new(cfg.clone());
            let spool = Arc::new(spool);
            let counters = Arc::new(Counters::default());
            let wake = Arc::new(tokio::sync::Notify::new());
            if spool.pending() > 0 {
                tracing::info!(receiver = %cfg.name, pending = spool.pending(), "webhook: resending alerts spooled by an earlier run");
            }
            let name = cfg.name.clone();
            let thread = {
                let (cfg, spool, counters, wake) =
                    (cfg.clone(), spool.clone(), counters.clone(), wake.clone());
                let (drain_until, stopping) = (drain_until.clone(), stopping.clone());
                thread::Builder::new()
                    .name(format!("shieldtap-webhook-{}", cfg.name))
                    .spawn(move || {
                        deliver_loop(
                            &cfg,
                            &spool,
                            &counters,
                            &wake,
                            &http,
                            &drain_until,
                            &stopping,
                        )
                    })
                    .map_err(|e| WebhookError::Client {
                        name,
                        message: format!("cannot start thread: {e}"),
                    })?
            };
            receivers.push(Receiver {
                cfg,
                spool,
                counters,
                wake,
                thread: Mutex::new(Some(thread)),
            });
        }
        Ok(Webhooks {
            receivers,
            drain_until,
            stopping,
        })
    }

    /// Spools the alerts each receiver wants and wakes its delivery.
    pub fn submit(&self, alerts: &[Alert]) {
        if alerts.is_empty() {
            return;
        }
        let records: Vec<(String, &Alert)> = alerts
            .iter()
            .map(|a| {
                let alert = serde_json::to_value(a).unwrap_or(Value::Null);
                let id = alert_id(&alert.to_string());
                (json!({"id": id, "alert": alert}).to_string(), a)
            })
            .collect();
        for r in &self.receivers {
            let lines: Vec<String> = records
                .iter()
                .filter(|(_, a)| {
                    a.severity >= r.cfg.min_severity
                        && r.cfg
                            .rules
                            .as_ref()
                            .is_none_or(|set| set.is_match(a.rule.as_str()))
                })
                .map(|(l, _)| l.clone())
                .collect();
            if lines.is_empty() {
                continue;
            }
            match r.spool.append(&lines) {
                Ok(dropped) => {
                    r.counters
                        .queued
                        .fetch_add(lines.len() as u64 - dropped, Ordering::Relaxed);
                    if dropped > 0 {
                        r.counters.dropped.fetch_add(dropped, Ordering::Relaxed);
                        r.counters.failed.fetch_add(dropped, Ordering::Relaxed);
                        tracing::error!(receiver = %r.cfg.name, dropped, "webhook spool full; alerts dropped");
                    }
                }
                Err(e) => {
                    r.counters
                        .failed
                        .fetch_add(lines.len() as u64, Ordering::Relaxed);
                    tracing::error!(receiver = %r.cfg.name, error = %e, "webhook spool write failed; alerts not queued");
                }
            }
            r.wake.notify_one();
        }
    }

    /// Counters per receiver, for metrics and the summary.
    pub fn snapshots(&self) -> Vec<WebhookSnapshot> {
        self.receivers
            .iter()
            .map(|r| WebhookSnapshot {
                receiver: r.cfg.name.clone(),
                queued: r.counters.queued.load(Ordering::Relaxed),
                delivered: r.counters.delivered.load(Ordering::Relaxed),
                retried: r.counters.retried.load(Ordering::Relaxed),
                failed: r.counters.failed.load(Ordering::Relaxed),
                spool_depth: r.spool.pending(),
            })
            .collect()
    }

    /// Delivers what is spooled for at most each receiver's `drain`, then stops; the rest
    /// stays spooled for the next start.
    pub fn finish(&self) -> Vec<WebhookSnapshot> {
        let longest = self
            .receivers
            .iter()
            .map(|r| r.cfg.drain)
            .max()
            .unwrap_or_default();
        if let Ok(mut d) = self.drain_until.lock() {
            *d = Some(Instant::now() + longest);
        }
        self.stopping.store(true, Ordering::Relaxed);
        for r in &self.receivers {
            r.wake.notify_one();
            let t = r.thread.lock().ok().and_then(|mut t| t.take());
            if let Some(t) = t {
                let _ = t.join();
            }
        }
        let snaps = self.snapshots();
        for s in &snaps {
            if s.spool_depth > 0 {
                tracing::warn!(receiver = %s.receiver, pending = s.spool_depth, "webhook: alerts left in the spool; they are sent after the next start");
            }
        }
        snaps
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn rfc3339_now_plus(d: Duration) -> String {
    let t = SystemTime::now() + d;
    let ns = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    crate::capture::Timestamp(ns).rfc3339()
}

/// The request body for a batch of spooled records (`{"id", "alert"}` lines).
pub fn body(cfg: &WebhookConfig, records: &[String]) -> Vec<u8> {
    let parsed: Vec<(String, Value)> = records
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| {
            (
                v["id"].as_str().unwrap_or_default().to_string(),
                v["alert"].clone(),
            )
        })
        .collect();
    let v = match cfg.format {
        Format::Json => Value::Array(
            parsed
                .into_iter()
                .map(|(id, mut a)| {
                    if let Some(o) = a.as_object_mut() {
                        o.insert("id".into(), json!(id));
                    }
                    a
                })
                .collect(),
        ),
        Format::Slack => {
            let lines: Vec<String> = parsed
                .iter()
                .map(|(_, a)| {
                    format!(
                        "*[{}] {}* ({}): {}",
                        a["severity"].as_str().unwrap_or("").to_ascii_uppercase(),
                        a["rule"].as_str().unwrap_or(""),
                        a["category"].as_str().unwrap_or(""),
                        a["summary"].as_str().unwrap_or("")
                    )
                })
                .collect();
            let blocks: Vec<Value> = lines
                .iter()
                .map(|l| json!({"type": "section", "text": {"type": "mrkdwn", "text": l}}))
                .collect();
            json!({"text": lines.join("\n"), "blocks": blocks})
        }
        Format::Alertmanager => {
            let ends = rfc3339_now_plus(cfg.resolve_after);
            Value::Array(
                parsed
                    .into_iter()
                    .map(|(id, a)| {
                        let mut labels = serde_json::Map::new();
                        labels.insert("alertname".into(), a["rule"].clone());
                        labels.insert("category".into(), a["category"].clone());
                        labels.insert("severity".into(), a["severity"].clone());
                        labels.insert("source".into(), json!("shieldtap"));
                        for k in ["ip", "device", "user"] {
                            if let Some(v) = a["actor"][k].as_str() {
                                labels.insert(format!("actor_{k}"), json!(v));
                            }
                        }
                        if let Some(e) = a["endpoint"].as_str() {
                            labels.insert("endpoint".into(), json!(e));
                        }
                        json!({
                            "labels": labels,
                            "annotations": {
                                "summary": a["summary"],
                                "evidence": a["evidence"].to_string(),
                                "count": a["count"].to_string(),
                                "first_seen": a["first_seen"],
                                "last_seen": a["last_seen"],
                                "id": id,
                            },
                            "startsAt": a["first_seen"],
                            "endsAt": ends,
                        })
                    })
                    .collect(),
            )
        }
    };
    v.to_string().into_bytes()
}

enum Outcome {
    Delivered,
    Rejected(String),
    Retry(String),
}

async fn post(http: &reqwest::Client, cfg: &WebhookConfig, records: &[String]) -> Outcome {
    let body = body(cfg, records);
    let ids: Vec<String> = records
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["id"].as_str().map(str::to_string))
        .collect();
    let mut req = http
        .post(&cfg.url)
        .header("Content-Type", "application/json")
        .header("Idempotency-Key", alert_id(&ids.join(",")));
    if let Some(secret) = &cfg.secret {
        let ts = now_unix();
        req = req
            .header("X-Shieldtap-Timestamp", ts.to_string())
            .header("X-Shieldtap-Signature", signature(secret, ts, &body));
    }
    match req.body(body).send().await {
        Ok(resp) => {
            let status = resp.status();
            if status.is_success() {
                Outcome::Delivered
            } else if status.is_client_error() && status.as_u16() != 408 && status.as_u16() != 429 {
                Outcome::Rejected(format!("HTTP {status}"))
            } else {
                Outcome::Retry(format!("HTTP {status}"))
            }
        }
        Err(e) => {
            let mut s = e.to_string();
            let mut cur = std::error::Error::source(&e);
            while let Some(c) = cur {
                s.push_str(": ");
                s.push_str(&c.to_string());
                cur = c.source();
            }
            Outcome::Retry(s)
        }
    }
}

/// Jitter in [0.8, 1.2) from the clock's nanoseconds (no need for a random generator).
fn jitter(d: Duration) -> Duration {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    d.mul_f64(0.8 + f64::from(n % 400) / 1000.0)
}

fn deliver_loop(
    cfg: &WebhookConfig,
    spool: &Spool,
    counters: &Counters,
    wake: &tokio::sync::Notify,
    http: &reqwest::Client,
    drain_until: &Mutex<Option<Instant>>,
    stopping: &AtomicBool,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(receiver = %cfg.name, error = %e, "webhook: no runtime");
            return;
        }
    };
    let deadline = || drain_until.lock().ok().and_then(|d| *d);
    let mut backoff = BACKOFF_MIN;
    let mut last_error_log: Option<Instant> = None;
    rt.block_on(async {
        loop {
            let stop = stopping.load(Ordering::Relaxed);
            if stop && deadline().is_some_and(|d| Instant::now() >= d) {
                break;
            }
            let (batch, end) = match spool.read_batch(cfg.batch_max) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(receiver = %cfg.name, error = %e, "webhook spool read failed");
                    tokio::time::sleep(BACKOFF_MAX).await;
                    continue;
                }
            };
            if batch.is_empty() {
                if stop {
                    break;
                }
                let _ = tokio::time::timeout(Duration::from_millis(500), wake.notified()).await;
                continue;
            }
            let n = batch.len() as u64;
            match post(http, cfg, &batch).await {
                Outcome::Delivered => {
                    counters.delivered.fetch_add(n, Ordering::Relaxed);
                    backoff = BACKOFF_MIN;
                    if let Err(e) = spool.ack(end, n) {
                        tracing::error!(receiver = %cfg.name, error = %e, "webhook spool cursor write failed");
                    }
                }
                Outcome::Rejected(why) => {
                    counters.failed.fetch_add(n, Ordering::Relaxed);
                    tracing::error!(receiver = %cfg.name, alerts = n, %why, "webhook receiver rejected a batch; skipped");
                    let _ = spool.ack(end, n);
                }
                Outcome::Retry(why) => {
                    counters.retried.fetch_add(1, Ordering::Relaxed);
                    // Rate-limited: a receiver down for an hour logs once a minute.
                    if last_error_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                        last_error_log = Some(Instant::now());
                        tracing::warn!(receiver = %cfg.name, %why, pending = spool.pending(), "webhook delivery failed; retrying");
                    }
                    let mut wait = jitter(backoff);
                    if let Some(d) = deadline() {
                        wait = wait.min(d.saturating_duration_since(Instant::now()));
                    }
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_over_timestamp_and_body() {
        // Expected value from Python's hmac module over b"1700000000.{}" with key "Jefe".
        let s = signature(b"Jefe", 1_700_000_000, b"{}");
        assert_eq!(
            s,
            "sha256=d3793e2b4103edfbd98cc19591832f5fad701d413db9fcae0ae7dab8184ed207"
        );
        assert_ne!(s, signature(b"Jefe", 1_700_000_001, b"{}"));
        assert_ne!(s, signature(b"Jefe", 1_700_000_000, b"[]"));
    }

    #[test]
    fn spool_survives_reopen_and_partial_lines() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(s.append(&["a".into(), "b".into(), "c".into()]).unwrap(), 0);
        let (batch, end) = s.read_batch(2).unwrap();
        assert_eq!(batch, vec!["a", "b"]);
        s.ack(end, 2).unwrap();
        drop(s);
        // A crash mid-append leaves half a record.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join("queue.jsonl"))
            .unwrap();
        f.write_all(b"half-writ").unwrap();
        let s = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(s.pending(), 1);
        let (batch, end) = s.read_batch(10).unwrap();
        assert_eq!(batch, vec!["c"]);
        s.ack(end, 1).unwrap();
        assert_eq!(s.pending(), 0);
        assert_eq!(
            std::fs::metadata(dir.path().join("queue.jsonl"))
                .unwrap()
                .len(),
            0,
            "an empty queue is compacted"
        );
    }

    fn cfg(format: Format) -> WebhookConfig {
        WebhookConfig {
            name: "t".into(),
            url: "https://x/".into(),
            format,
            secret: None,
            min_severity: Severity::Info,
            rules: None,
            ca_file: None,
            spool_dir: PathBuf::from("."),
            spool_max_bytes: 1 << 20,
            batch_max: 10,
            timeout: Duration::from_secs(1),
            drain: Duration::from_secs(1),
            resolve_after: Duration::from_secs(60),
        }
    }

    fn record() -> String {
        json!({"id": "abc", "alert": {
            "ts": "2026-11-30T03:44:48.456Z", "rule": "token.forged", "category": "token-forgery",
            "severity": "high", "actor": {"ip": "192.0.2.1", "device": null, "user": "u***@example.com"},
            "endpoint": "GET /api/v1/users/{id}", "summary": "192.0.2.1 sent 3 forged tokens",
            "evidence": {"verdicts": {"bad-signature": 3}}, "count": 3,
            "first_seen": "2026-11-30T03:44:40Z", "last_seen": "2026-11-30T03:44:48Z", "follow_up": false}})
        .to_string()
    }

    #[test]
    fn json_body_is_the_records_with_ids() {
        let v: Value = serde_json::from_slice(&body(&cfg(Format::Json), &[record()])).unwrap();
        assert_eq!(v[0]["id"], "abc");
        assert_eq!(v[0]["rule"], "token.forged");
        assert_eq!(v[0]["count"], 3);
    }

    #[test]
    fn slack_body_is_an_incoming_webhook_message() {
        let v: Value = serde_json::from_slice(&body(&cfg(Format::Slack), &[record()])).unwrap();
        let text = v["text"].as_str().unwrap();
        assert!(
            text.starts_with("*[HIGH] token.forged* (token-forgery): 192.0.2.1 sent"),
            "{text}"
        );
        assert_eq!(v["blocks"][0]["type"], "section");
        assert_eq!(v["blocks"][0]["text"]["type"], "mrkdwn");
    }

    #[test]
    fn alertmanager_body_has_labels_annotations_and_times() {
        let v: Value =
            serde_json::from_slice(&body(&cfg(Format::Alertmanager), &[record()])).unwrap();
        let a = &v[0];
        assert_eq!(a["labels"]["alertname"], "token.forged");
        assert_eq!(a["labels"]["severity"], "high");
        assert_eq!(a["labels"]["actor_ip"], "192.0.2.1");
        assert_eq!(a["labels"]["actor_user"], "u***@example.com");
        assert!(a["labels"].get("actor_device").is_none());
        assert_eq!(a["startsAt"], "2026-11-30T03:44:40Z");
        assert!(a["endsAt"].as_str().unwrap() > "2026-11-30T04");
        assert_eq!(a["annotations"]["id"], "abc");
    }

    #[test]
    fn spool_cap_drops_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path(), 10).unwrap();
        assert_eq!(s.append(&["12345".into(), "67890".into()]).unwrap(), 1);
        assert_eq!(s.pending(), 1);
    }
}
