//! `[nats]`, `[export]` and `[correlate]`: where the broker is, how to log in, and what a
//! sensor publishes and a correlator consumes.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// A config error: the key to blame (with its section) and what is wrong.
pub type KeyError = (String, String);

fn key_err(section: &str, k: &str, m: impl Into<String>) -> KeyError {
    (format!("{section}.{k}"), m.into())
}

/// `[nats]`
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawNats {
    servers: Option<Vec<String>>,
    user: Option<String>,
    password: Option<String>,
    password_file: Option<String>,
    password_env: Option<String>,
    nkey_seed: Option<String>,
    nkey_seed_file: Option<String>,
    nkey_seed_env: Option<String>,
    tls_ca: Option<String>,
    tls_cert: Option<String>,
    tls_key: Option<String>,
    require_tls: Option<bool>,
    stream: Option<String>,
    alerts_stream: Option<String>,
    subject_prefix: Option<String>,
    checkpoint_bucket: Option<String>,
    replicas: Option<usize>,
    partitions: Option<u32>,
    max_stream_mib: Option<u64>,
    connect_timeout_secs: Option<f64>,
}

/// `[export]`
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawExport {
    sensor: Option<String>,
    queue_batches: Option<usize>,
    max_in_flight: Option<usize>,
}

/// `[correlate]`
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawCorrelate {
    partitions: Option<Vec<u32>>,
    sensors: Option<Vec<String>>,
    checkpoint_interval_secs: Option<f64>,
    max_wait_secs: Option<f64>,
}

/// How to log in to the broker.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    None,
    UserPassword { user: String, password: String },
    NKey { seed: String },
}

impl std::fmt::Debug for Auth {
    // Never the password or the seed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::UserPassword { user, .. } => write!(f, "UserPassword({user})"),
            Auth::NKey { .. } => f.write_str("NKey"),
        }
    }
}

/// The broker and the names of what shieldtap keeps there.
#[derive(Clone, Debug)]
pub struct NatsConfig {
    pub servers: Vec<String>,
    pub auth: Auth,
    pub tls_ca: Option<PathBuf>,
    pub tls_client: Option<(PathBuf, PathBuf)>,
    pub require_tls: bool,
    /// Stream of detect-shard messages (subjects `<prefix>.events.p<N>`).
    pub stream: String,
    /// Stream of alerts (subjects `<prefix>.alerts.p<N>`): one alert stream per deployment.
    pub alerts_stream: String,
    pub subject_prefix: String,
    /// Key-value bucket of correlator checkpoints (key `p<N>`).
    pub checkpoint_bucket: String,
    pub replicas: usize,
    /// Partitions of the deployment: the detect shards the rules' keys are spread over.
    /// Every sensor and correlator must agree.
    pub partitions: u32,
    pub max_stream_bytes: i64,
    pub connect_timeout: Duration,
}

impl NatsConfig {
    pub fn events_subject(&self, partition: u32) -> String {
        format!("{}.events.p{partition}", self.subject_prefix)
    }

    pub fn alerts_subject(&self, partition: u32) -> String {
        format!("{}.alerts.p{partition}", self.subject_prefix)
    }
}

/// What a sensor (`run`/`replay` with `[export]`) publishes.
#[derive(Clone, Debug)]
pub struct ExportConfig {
    /// This sensor's name, carried in every message (its watermark is kept per name).
    pub sensor: String,
    /// Messages waiting to be published at most; past it replay waits and live capture
    /// drops (counted).
    pub queue_batches: usize,
    /// Publishes awaiting the broker's acknowledgement at most.
    pub max_in_flight: usize,
}

/// What a correlator consumes.
#[derive(Clone, Debug)]
pub struct CorrelateConfig {
    /// Partitions this correlator runs; empty means all of them.
    pub partitions: Vec<u32>,
    /// Sensors whose watermarks the merge waits for; empty means every sensor that has
    /// spoken on the partition.
    pub sensors: Vec<String>,
    pub checkpoint_interval: Duration,
    /// Longest a sensor that has gone quiet holds the merge back (wall time) before its
    /// watermark is no longer waited for (counted).
    pub max_wait: Duration,
}

fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn secs(section: &str, k: &str, v: Option<f64>, default: f64) -> Result<Duration, KeyError> {
    let v = v.unwrap_or(default);
    if !(v > 0.0 && v <= 86_400.0) {
        return Err(key_err(section, k, "expected seconds between 0 and 86400"));
    }
    Ok(Duration::from_secs_f64(v))
}

fn secret(
    k: &str,
    inline: &Option<String>,
    file: &Option<String>,
    env: &Option<String>,
) -> Result<Option<String>, KeyError> {
    let Some(b) = crate::secret::read(k, inline.as_deref(), file.as_deref(), env.as_deref())
        .map_err(|e| key_err("nats", &e.key, e.message))?
    else {
        return Ok(None);
    };
    String::from_utf8(b)
        .map(Some)
        .map_err(|_| key_err("nats", k, "expected text"))
}

impl NatsConfig {
    pub fn from_raw(r: &RawNats) -> Result<NatsConfig, KeyError> {
        let s = "nats";
        let servers = r.servers.clone().unwrap_or_default();
        if servers.is_empty() {
            return Err(key_err(
                s,
                "servers",
                "expected at least one nats:// or tls:// URL",
            ));
        }
        for (i, u) in servers.iter().enumerate() {
            if !(u.starts_with("nats://") || u.starts_with("tls://"))
                || u.parse::<async_nats::ServerAddr>().is_err()
            {
                return Err(key_err(
                    s,
                    &format!("servers[{i}]"),
                    "expected nats://HOST:PORT or tls://HOST:PORT",
                ));
            }
        }
        let password = secret("password", &r.password, &r.password_file, &r.password_env)?;
        let seed = secret(
            "nkey_seed",
            &r.nkey_seed,
            &r.nkey_seed_file,
            &r.nkey_seed_env,
        )?;
        let auth = match (&r.user, password, seed) {
            (None, None, None) => Auth::None,
            (Some(u), Some(p), None) => Auth::UserPassword {
                user: u.clone(),
                password: p,
            },
            (None, None, Some(seed)) => {
                if nkeys::KeyPair::from_seed(seed.trim()).is_err() {
                    return Err(key_err(s, "nkey_seed", "not a valid NKey seed (SU...)"));
                }
                Auth::NKey {
                    seed: seed.trim().to_string(),
                }
            }
            (Some(_), None, None) => return Err(key_err(s, "password", "user without password")),
            (None, Some(_), None) => return Err(key_err(s, "user", "password without user")),
            _ => {
                return Err(key_err(
                    s,
                    "nkey_seed",
                    "give either user and password or an NKey seed",
                ));
            }
        };
        let tls_client = match (&r.tls_cert, &r.tls_key) {
            (None, None) => None,
            (Some(c), Some(k)) => Some((PathBuf::from(c), PathBuf::from(k))),
            _ => return Err(key_err(s, "tls_cert", "give both tls_cert and tls_key")),
        };
        let tls_ca = r.tls_ca.as_ref().map(PathBuf::from);
        for (k, p) in [("tls_ca", tls_ca.as_ref())].into_iter().chain(
            tls_client
                .iter()
                .flat_map(|(c, k)| [("tls_cert", Some(c)), ("tls_key", Some(k))]),
        ) {
            if let Some(p) = p
                && let Err(e) = std::fs::metadata(p)
            {
                return Err(key_err(s, k, format!("{}: {e}", p.display())));
            }
        }
        let require_tls = r
            .require_tls
            .unwrap_or(tls_ca.is_some() || servers.iter().any(|u| u.starts_with("tls://")));
        let name = |k: &str, v: &Option<String>, d: &str| -> Result<String, KeyError> {
            let v = v.clone().unwrap_or_else(|| d.to_string());
            if name_ok(&v) {
                Ok(v)
            } else {
                Err(key_err(s, k, "expected 1 to 64 letters, digits, - or _"))
            }
        };
        let replicas = r.replicas.unwrap_or(1);
        if !(1..=5).contains(&replicas) {
            return Err(key_err(s, "replicas", "expected 1 to 5"));
        }
        let partitions = r.partitions.unwrap_or(4);
        if !(1..=64).contains(&partitions) {
            return Err(key_err(s, "partitions", "expected 1 to 64"));
        }
        let prefix = r
            .subject_prefix
            .clone()
            .unwrap_or_else(|| "shieldtap".into());
        if prefix.is_empty() || !prefix.split('.').all(|t| !t.is_empty() && name_ok(t)) {
            return Err(key_err(
                s,
                "subject_prefix",
                "expected NATS subject tokens (a.b)",
            ));
        }
        let max_mib = r.max_stream_mib.unwrap_or(4096);
        if max_mib == 0 || max_mib > 1 << 30 {
            return Err(key_err(
                s,
                "max_stream_mib",
                "expected a positive size in MiB",
            ));
        }
        Ok(NatsConfig {
            servers,
            auth,
            tls_ca,
            tls_client,
            require_tls,
            stream: name("stream", &r.stream, "SHIELDTAP_EVENTS")?,
            alerts_stream: name("alerts_stream", &r.alerts_stream, "SHIELDTAP_ALERTS")?,
            subject_prefix: prefix,
            checkpoint_bucket: name(
                "checkpoint_bucket",
                &r.checkpoint_bucket,
                "shieldtap-checkpoints",
            )?,
            replicas,
            partitions,
            max_stream_bytes: i64::try_from(max_mib.saturating_mul(1 << 20)).unwrap_or(i64::MAX),
            connect_timeout: secs(s, "connect_timeout_secs", r.connect_timeout_secs, 5.0)?,
        })
    }
}

impl ExportConfig {
    pub fn from_raw(r: &RawExport) -> Result<ExportConfig, KeyError> {
        let s = "export";
        let sensor = match &r.sensor {
            Some(v) => v.clone(),
            None => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().replace('.', "-"))
                .unwrap_or_else(|_| "sensor".into()),
        };
        if !name_ok(&sensor) {
            return Err(key_err(
                s,
                "sensor",
                "expected 1 to 64 letters, digits, - or _",
            ));
        }
        let queue_batches = r.queue_batches.unwrap_or(1024);
        if !(1..=1 << 20).contains(&queue_batches) {
            return Err(key_err(s, "queue_batches", "expected 1 to 1048576"));
        }
        let max_in_flight = r.max_in_flight.unwrap_or(256);
        if !(1..=65_536).contains(&max_in_flight) {
            return Err(key_err(s, "max_in_flight", "expected 1 to 65536"));
        }
        Ok(ExportConfig {
            sensor,
            queue_batches,
            max_in_flight,
        })
    }
}

impl CorrelateConfig {
    pub fn from_raw(r: &RawCorrelate, partitions: u32) -> Result<CorrelateConfig, KeyError> {
        let s = "correlate";
        let mut ps = r.partitions.clone().unwrap_or_default();
        ps.sort_unstable();
        ps.dedup();
        if let Some(p) = ps.iter().find(|p| **p >= partitions) {
            return Err(key_err(
                s,
                "partitions",
                format!("partition {p} is not below nats.partitions ({partitions})"),
            ));
        }
        let sensors = r.sensors.clone().unwrap_or_default();
        if let Some(bad) = sensors.iter().find(|x| !name_ok(x)) {
            return Err(key_err(s, "sensors", format!("bad sensor name {bad:?}")));
        }
        Ok(CorrelateConfig {
            partitions: ps,
            sensors,
            checkpoint_interval: secs(
                s,
                "checkpoint_interval_secs",
                r.checkpoint_interval_secs,
                5.0,
            )?,
            max_wait: secs(s, "max_wait_secs", r.max_wait_secs, 10.0)?,
        })
    }
}
