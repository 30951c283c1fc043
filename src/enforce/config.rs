//! `[enforce]`: the check endpoint's policies, the decisions' store and ban policies, the
//! bouncers' keys. Raw (unknown keys rejected) then validated; errors name the key.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use regex::RegexSet;
use serde::Deserialize;

use crate::rules::{BanKey, BanSpec, MAX_BAN_SECS, Severity, pattern_regex};
use crate::token::{Cidr, Verdict};

/// Default listen address of the check endpoint and decisions API.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9478";

/// `[enforce]` as written.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct RawEnforce {
    /// Check endpoint, bouncer API and admin API (default `127.0.0.1:9478`).
    listen: Option<String>,
    /// Policy of requests no `[[enforce.route]]` matches: `monitor` (default),
    /// `enforce-decisions` or `require-attestation`.
    default_policy: Option<String>,
    /// Verdicts that deny under `require-attestation` (default: every verdict but `valid`).
    deny_verdicts: Option<Vec<String>>,
    /// Status of a verdict denial (default 401).
    deny_status: Option<u16>,
    /// Headers naming the client, set by the gateway (default `X-Real-IP`,
    /// `X-Forwarded-For`); the right-most entry that is not a trusted proxy.
    client_ip_headers: Option<Vec<String>>,
    /// Proxies in front of the gateway (CIDRs), skipped in `X-Forwarded-For`.
    trusted_proxies: Option<Vec<String>>,
    /// Checks in progress at once; past it a check is shed with 503 (default 512).
    max_in_flight: Option<usize>,
    /// Open connections; past it new ones are closed at once (default 4096).
    max_connections: Option<usize>,
    /// Threads answering (default 2).
    threads: Option<usize>,
    /// Seconds a client may take to send a request head (default 5).
    header_read_timeout_secs: Option<f64>,
    /// Where decisions are kept across restarts (default: memory only).
    state_file: Option<String>,
    /// Active decisions at most (default 100000).
    max_decisions: Option<usize>,
    /// Make decisions from alerts (default true).
    decisions_from_alerts: Option<bool>,
    /// Key for the admin API (`shieldtap decisions`); without one, only loopback clients
    /// may use it.
    admin_key: Option<String>,
    admin_key_file: Option<String>,
    admin_key_env: Option<String>,
    /// Never banned: networks, devices, users.
    allow_networks: Option<Vec<String>>,
    allow_devices: Option<Vec<String>>,
    allow_users: Option<Vec<String>>,
    /// `shieldtap enforce`: the daemon whose decisions to follow (`http://host:9478`).
    follow: Option<String>,
    follow_key: Option<String>,
    follow_key_file: Option<String>,
    follow_key_env: Option<String>,
    /// Seconds between two pulls of the followed stream (default 1).
    follow_interval_secs: Option<f64>,
    #[serde(default)]
    route: Vec<RawRoute>,
    #[serde(default)]
    ban: Vec<RawBan>,
    #[serde(default)]
    bouncer: Vec<RawBouncer>,
}

/// `[[enforce.route]]`
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    /// Label of the policy in metrics and the `X-Shieldtap-Policy` header.
    name: Option<String>,
    /// Path globs (`/api/**`, `/api/v1/users/*`) or regexes prefixed `re:`.
    routes: Vec<String>,
    methods: Option<Vec<String>>,
    hosts: Option<Vec<String>>,
    policy: String,
    deny_verdicts: Option<Vec<String>>,
    deny_status: Option<u16>,
}

/// `[[enforce.ban]]`
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawBan {
    /// Rule id globs (`scraping.*`); default every rule.
    rules: Option<Vec<String>>,
    /// Least severity that bans (default `high`).
    min_severity: Option<Severity>,
    /// `auto` (default), `device`, `token`, `user` or `ip`.
    key: Option<String>,
    /// Default 3600.
    duration_secs: Option<f64>,
    /// `false`: alerts matching this entry never ban (exceptions before broader entries).
    ban: Option<bool>,
}

/// `[[enforce.bouncer]]`
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawBouncer {
    name: String,
    api_key: Option<String>,
    api_key_file: Option<String>,
    api_key_env: Option<String>,
}

/// What a route's requests get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Always allow; count what would have been denied.
    Monitor,
    /// Deny active decisions only.
    EnforceDecisions,
    /// Deny active decisions, and deny unless the attestation verdict is allowed.
    RequireAttestation,
}

impl Mode {
    pub fn from_name(s: &str) -> Option<Mode> {
        Some(match s {
            "monitor" => Mode::Monitor,
            "enforce-decisions" => Mode::EnforceDecisions,
            "require-attestation" => Mode::RequireAttestation,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Monitor => "monitor",
            Mode::EnforceDecisions => "enforce-decisions",
            Mode::RequireAttestation => "require-attestation",
        }
    }
}

/// A policy.
#[derive(Clone, Debug)]
pub struct Policy {
    pub name: String,
    pub mode: Mode,
    /// Indexed like [`Verdict::ALL`].
    pub deny_verdicts: [bool; Verdict::ALL.len()],
    pub deny_status: u16,
}

impl Policy {
    pub fn denies(&self, v: Verdict) -> bool {
        Verdict::ALL
            .iter()
            .position(|x| *x == v)
            .is_some_and(|i| self.deny_verdicts[i])
    }
}

/// A route-scoped policy.
#[derive(Clone, Debug)]
pub struct RoutePolicy {
    pub paths: RegexSet,
    /// Upper-case; empty: any.
    pub methods: Vec<String>,
    pub hosts: Option<RegexSet>,
    pub policy: Policy,
}

/// A ban policy entry.
#[derive(Clone, Debug)]
pub struct BanPolicy {
    pub rules: Option<RegexSet>,
    pub min_severity: Severity,
    /// `None`: matching alerts never ban.
    pub ban: Option<BanSpec>,
}

/// Never banned.
#[derive(Clone, Debug, Default)]
pub struct AllowList {
    pub networks: Vec<Cidr>,
    pub devices: HashSet<String>,
    pub users: HashSet<String>,
}

impl AllowList {
    pub fn ip(&self, ip: std::net::IpAddr) -> bool {
        self.networks.iter().any(|c| c.contains(ip))
    }
}

/// Following a remote daemon (`shieldtap enforce`).
#[derive(Clone, Debug)]
pub struct FollowConfig {
    pub url: String,
    pub key: String,
    pub interval: Duration,
}

/// `[enforce]`, validated.
#[derive(Clone, Debug)]
pub struct EnforceConfig {
    pub listen: SocketAddr,
    pub default_policy: Policy,
    pub routes: Vec<RoutePolicy>,
    pub client_ip_headers: Vec<String>,
    pub trusted_proxies: Vec<Cidr>,
    pub max_in_flight: usize,
    pub max_connections: usize,
    pub threads: usize,
    pub header_read_timeout: Duration,
    pub state_file: Option<PathBuf>,
    pub max_decisions: usize,
    pub decisions_from_alerts: bool,
    pub admin_key: Option<String>,
    pub allow: AllowList,
    pub bans: Vec<BanPolicy>,
    /// (name, key)
    pub bouncers: Vec<(String, String)>,
    pub follow: Option<FollowConfig>,
}

impl Default for EnforceConfig {
    fn default() -> Self {
        // The defaults read no file or variable.
        EnforceConfig::from_raw(&RawEnforce::default())
            .unwrap_or_else(|e| unreachable!("enforce defaults: {e:?}"))
    }
}

/// (key, message)
pub type KeyError = (String, String);

fn key_err(k: &str, m: impl Into<String>) -> KeyError {
    (format!("enforce.{k}"), m.into())
}

fn secret(
    k: &str,
    inline: &Option<String>,
    file: &Option<String>,
    env: &Option<String>,
) -> Result<Option<String>, KeyError> {
    let Some(bytes) = crate::secret::read(k, inline.as_deref(), file.as_deref(), env.as_deref())
        .map_err(|e| key_err(&e.key, e.message))?
    else {
        return Ok(None);
    };
    let Ok(v) = String::from_utf8(bytes) else {
        return Err(key_err(k, "expected text"));
    };
    if v.len() < 16 || v.chars().any(|c| c.is_control() || c == ' ') {
        return Err(key_err(
            k,
            "expected at least 16 printable characters, no spaces",
        ));
    }
    Ok(Some(v))
}

fn verdicts(k: &str, v: &Option<Vec<String>>) -> Result<[bool; Verdict::ALL.len()], KeyError> {
    let mut out = [true; Verdict::ALL.len()];
    out[0] = false; // valid
    if let Some(names) = v {
        out = [false; Verdict::ALL.len()];
        for n in names {
            let verdict = Verdict::from_name(n).ok_or_else(|| {
                key_err(
                    k,
                    format!(
                        "`{n}` is not a verdict (valid, missing, malformed, bad-signature, ...)"
                    ),
                )
            })?;
            if let Some(i) = Verdict::ALL.iter().position(|x| *x == verdict) {
                out[i] = true;
            }
        }
    }
    Ok(out)
}

fn status(k: &str, v: Option<u16>, default: u16) -> Result<u16, KeyError> {
    match v {
        None => Ok(default),
        Some(s) if (400..=599).contains(&s) => Ok(s),
        Some(_) => Err(key_err(k, "expected a 4xx or 5xx status")),
    }
}

fn globs(k: &str, v: &[String], sep: char) -> Result<RegexSet, KeyError> {
    if v.is_empty() {
        return Err(key_err(k, "an empty list matches nothing"));
    }
    RegexSet::new(v.iter().map(|g| pattern_regex(g, sep, false)))
        .map_err(|e| key_err(k, format!("bad pattern: {e}")))
}

fn cidrs(k: &str, v: &Option<Vec<String>>) -> Result<Vec<Cidr>, KeyError> {
    v.iter()
        .flatten()
        .map(|s| s.parse::<Cidr>().map_err(|e| key_err(k, e)))
        .collect()
}

impl EnforceConfig {
    pub fn from_raw(r: &RawEnforce) -> Result<EnforceConfig, KeyError> {
        let listen = r
            .listen
            .as_deref()
            .unwrap_or(DEFAULT_LISTEN)
            .parse::<SocketAddr>()
            .map_err(|_| key_err("listen", "expected ADDRESS:PORT"))?;
        let default_mode = match &r.default_policy {
            None => Mode::Monitor,
            Some(m) => Mode::from_name(m).ok_or_else(|| {
                key_err(
                    "default_policy",
                    "expected monitor, enforce-decisions or require-attestation",
                )
            })?,
        };
        let default_policy = Policy {
            name: "default".into(),
            mode: default_mode,
            deny_verdicts: verdicts("deny_verdicts", &r.deny_verdicts)?,
            deny_status: status("deny_status", r.deny_status, 401)?,
        };
        let mut routes = Vec::new();
        let mut names = HashSet::from(["default".to_string()]);
        for (i, rr) in r.route.iter().enumerate() {
            let k = |x: &str| format!("route[{i}].{x}");
            let name = rr.name.clone().unwrap_or_else(|| format!("route-{i}"));
            if name.is_empty()
                || name.len() > 64
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(key_err(
                    &k("name"),
                    "expected letters, digits, `-`, `_` or `.`",
                ));
            }
            if !names.insert(name.clone()) {
                return Err(key_err(&k("name"), format!("`{name}` is used twice")));
            }
            let mode = Mode::from_name(&rr.policy).ok_or_else(|| {
                key_err(
                    &k("policy"),
                    "expected monitor, enforce-decisions or require-attestation",
                )
            })?;
            routes.push(RoutePolicy {
                paths: globs(&k("routes"), &rr.routes, '/')?,
                methods: rr
                    .methods
                    .iter()
                    .flatten()
                    .map(|m| m.to_ascii_uppercase())
                    .collect(),
                hosts: match &rr.hosts {
                    None => None,
                    Some(h) => Some(globs(&k("hosts"), h, '.')?),
                },
                policy: Policy {
                    name,
                    mode,
                    deny_verdicts: match &rr.deny_verdicts {
                        None => default_policy.deny_verdicts,
                        Some(_) => verdicts(&k("deny_verdicts"), &rr.deny_verdicts)?,
                    },
                    deny_status: status(
                        &k("deny_status"),
                        rr.deny_status,
                        default_policy.deny_status,
                    )?,
                },
            });
        }
        let positive = |k: &str, v: Option<usize>, d: usize, max: usize| match v {
            None => Ok(d),
            Some(n) if (1..=max).contains(&n) => Ok(n),
            Some(_) => Err(key_err(k, format!("expected 1 to {max}"))),
        };
        let mut bans = Vec::new();
        for (i, b) in r.ban.iter().enumerate() {
            let k = |x: &str| format!("ban[{i}].{x}");
            let key = match b.key.as_deref() {
                None => BanKey::Auto,
                Some(s) => BanKey::from_name(s).ok_or_else(|| {
                    key_err(&k("key"), "expected auto, device, token, user or ip")
                })?,
            };
            let duration = match b.duration_secs {
                None => Duration::from_secs(3600),
                Some(s) if s.is_finite() && (1.0..=MAX_BAN_SECS).contains(&s) => {
                    Duration::from_secs_f64(s)
                }
                Some(_) => {
                    return Err(key_err(
                        &k("duration_secs"),
                        format!("expected 1 to {MAX_BAN_SECS} seconds"),
                    ));
                }
            };
            bans.push(BanPolicy {
                rules: match &b.rules {
                    None => None,
                    Some(r) => Some(globs(&k("rules"), r, '.')?),
                },
                min_severity: b.min_severity.unwrap_or(Severity::High),
                ban: b.ban.unwrap_or(true).then_some(BanSpec { key, duration }),
            });
        }
        let mut bouncers: Vec<(String, String)> = Vec::new();
        for (i, b) in r.bouncer.iter().enumerate() {
            let k = format!("bouncer[{i}].api_key");
            let key = secret(&k, &b.api_key, &b.api_key_file, &b.api_key_env)?
                .ok_or_else(|| key_err(&k, "a bouncer needs a key"))?;
            if bouncers.iter().any(|(n, kk)| *n == b.name || *kk == key) {
                return Err(key_err(
                    &format!("bouncer[{i}].name"),
                    "names and keys must differ between bouncers",
                ));
            }
            bouncers.push((b.name.clone(), key));
        }
        let follow = match &r.follow {
            None => None,
            Some(url) => {
                let lower = url.to_ascii_lowercase();
                if !(lower.starts_with("http://") || lower.starts_with("https://")) {
                    return Err(key_err("follow", "expected an http:// or https:// URL"));
                }
                Some(FollowConfig {
                    url: url.trim_end_matches('/').to_string(),
                    key: secret(
                        "follow_key",
                        &r.follow_key,
                        &r.follow_key_file,
                        &r.follow_key_env,
                    )?
                    .ok_or_else(|| {
                        key_err(
                            "follow_key",
                            "following needs the bouncer key the daemon knows",
                        )
                    })?,
                    interval: match r.follow_interval_secs {
                        None => Duration::from_secs(1),
                        Some(s) if s.is_finite() && (0.05..=3600.0).contains(&s) => {
                            Duration::from_secs_f64(s)
                        }
                        Some(_) => {
                            return Err(key_err("follow_interval_secs", "expected 0.05 to 3600"));
                        }
                    },
                })
            }
        };
        Ok(EnforceConfig {
            listen,
            default_policy,
            routes,
            client_ip_headers: r
                .client_ip_headers
                .clone()
                .unwrap_or_else(|| vec!["X-Real-IP".into(), "X-Forwarded-For".into()])
                .into_iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            trusted_proxies: cidrs("trusted_proxies", &r.trusted_proxies)?,
            max_in_flight: positive("max_in_flight", r.max_in_flight, 512, 1 << 20)?,
            max_connections: positive("max_connections", r.max_connections, 4096, 1 << 20)?,
            threads: positive("threads", r.threads, 2, 256)?,
            header_read_timeout: match r.header_read_timeout_secs {
                None => Duration::from_secs(5),
                Some(s) if s.is_finite() && (0.01..=600.0).contains(&s) => {
                    Duration::from_secs_f64(s)
                }
                Some(_) => {
                    return Err(key_err("header_read_timeout_secs", "expected 0.01 to 600"));
                }
            },
            state_file: r.state_file.as_ref().map(PathBuf::from),
            max_decisions: positive("max_decisions", r.max_decisions, 100_000, 10_000_000)?,
            decisions_from_alerts: r.decisions_from_alerts.unwrap_or(true),
            admin_key: secret(
                "admin_key",
                &r.admin_key,
                &r.admin_key_file,
                &r.admin_key_env,
            )?,
            allow: AllowList {
                networks: cidrs("allow_networks", &r.allow_networks)?,
                devices: r.allow_devices.iter().flatten().cloned().collect(),
                users: r.allow_users.iter().flatten().cloned().collect(),
            },
            bans,
            bouncers,
            follow,
        })
    }

    /// The policy of a request.
    pub fn policy(&self, method: &str, path: &str, host: Option<&str>) -> &Policy {
        self.routes
            .iter()
            .find(|r| {
                r.paths.is_match(path)
                    && (r.methods.is_empty() || r.methods.iter().any(|m| m == method))
                    && r.hosts.as_ref().is_none_or(|h| {
                        host.is_some_and(|host| {
                            let host = host.rsplit_once(':').map_or(host, |(h, p)| {
                                if p.bytes().all(|b| b.is_ascii_digit()) {
                                    h
                                } else {
                                    host
                                }
                            });
                            h.is_match(&host.to_ascii_lowercase())
                        })
                    })
            })
            .map_or(&self.default_policy, |r| &r.policy)
    }

    /// Every policy name (metric labels from zero).
    pub fn policy_names(&self) -> Vec<&str> {
        std::iter::once(self.default_policy.name.as_str())
            .chain(self.routes.iter().map(|r| r.policy.name.as_str()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<EnforceConfig, KeyError> {
        let raw: RawEnforce = toml::from_str(text).map_err(|e| ("toml".into(), e.to_string()))?;
        EnforceConfig::from_raw(&raw)
    }

    #[test]
    fn routes_choose_their_policy_and_the_rest_takes_the_default() {
        let c = parse(
            r#"
            default_policy = "enforce-decisions"
            [[route]]
            name = "first-start"
            routes = ["/api/v1/login", "/api/v1/register"]
            methods = ["post"]
            policy = "monitor"
            [[route]]
            name = "api"
            routes = ["/api/**"]
            hosts = ["api.example.test"]
            policy = "require-attestation"
            deny_verdicts = ["missing", "bad-signature"]
            deny_status = 403
            "#,
        )
        .unwrap();
        assert_eq!(c.policy("POST", "/api/v1/login", None).name, "first-start");
        assert_eq!(
            c.policy("GET", "/api/v1/login", Some("api.example.test"))
                .name,
            "api"
        );
        let api = c.policy("GET", "/api/v1/users/42", Some("API.example.test:443"));
        assert_eq!(api.mode, Mode::RequireAttestation);
        assert!(api.denies(Verdict::Missing) && !api.denies(Verdict::Expired));
        assert_eq!(api.deny_status, 403);
        assert_eq!(
            c.policy("GET", "/api/v1/users/42", Some("other.test")).name,
            "default"
        );
        assert_eq!(
            c.policy("GET", "/health", None).mode,
            Mode::EnforceDecisions
        );
        let d = &c.default_policy;
        assert!(
            !d.denies(Verdict::Valid) && d.denies(Verdict::Missing) && d.denies(Verdict::Expired)
        );
        assert_eq!(d.deny_status, 401);
    }

    #[test]
    fn mistakes_name_their_key() {
        let bad = [
            ("default_policy = \"block\"", "enforce.default_policy"),
            ("deny_verdicts = [\"nope\"]", "enforce.deny_verdicts"),
            ("deny_status = 200", "enforce.deny_status"),
            ("listen = \"localhost\"", "enforce.listen"),
            (
                "allow_networks = [\"10.0.0.0/40\"]",
                "enforce.allow_networks",
            ),
            ("[[ban]]\nkey = \"house\"", "enforce.ban[0].key"),
            (
                "[[bouncer]]\nname = \"fw\"\napi_key = \"short\"",
                "enforce.bouncer[0].api_key",
            ),
            (
                "[[route]]\nroutes = []\npolicy = \"monitor\"",
                "enforce.route[0].routes",
            ),
            ("follow = \"ftp://x\"", "enforce.follow"),
        ];
        for (text, key) in bad {
            let e = parse(text).unwrap_err();
            assert_eq!(e.0, key, "{text}: {e:?}");
        }
    }
}
