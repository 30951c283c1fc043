//! Token config: the `[[attestation]]` and `[identity]` TOML tables, raw then validated.
//!
//! Input: the raw serde structs the crate config embeds (unknown keys are errors). Output: a
//! [`TokenConfig`] with decoded secrets, parsed algorithm allow-lists, JWKS files already
//! parsed into keys, and real durations and sizes. Secrets are read from inline base64, a file
//! or an environment variable, held in [`Secret`] (whose `Debug` is redacted) and never logged.
//! Every error names the key it is about, e.g. `attestation[0].secret_base64: not valid base64`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use jsonwebtoken::Algorithm;
use serde::Deserialize;

use super::keys::{Key, KeySet};

/// SDK status strings an Approov client sends in place of a token when it could not get one.
/// They name a client condition, not a secret, so the verdict keeps them.
pub const APPROOV_STATUS_VALUES: &[&str] = &[
    "NO_NETWORK",
    "POOR_NETWORK",
    "MITM_DETECTED",
    "NO_APPROOV_SERVICE",
    "BAD_URL",
    "UNKNOWN_URL",
    "UNPROTECTED_URL",
    "NO_NETWORK_PERMISSION",
    "MISSING_LIB_DEPENDENCY",
    "INTERNAL_ERROR",
    "REJECTED",
    "DISABLED",
    "UNKNOWN_KEY",
    "BAD_KEY",
    "BAD_PAYLOAD",
];

/// Largest token accepted by default. Approov tokens are ~300 bytes and Firebase App Check
/// tokens ~1 KiB; traffic controls this length, so anything larger is `malformed` unread.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Largest decoded claims object by default (JSON bytes).
pub const DEFAULT_MAX_CLAIMS_BYTES: usize = 4 * 1024;
/// Verified tokens remembered per family by default.
pub const DEFAULT_CACHE_ENTRIES: u64 = 100_000;
/// JWKS re-fetch interval by default.
pub const DEFAULT_JWKS_REFRESH_SECS: u64 = 900;
/// Upper bounds on configurable limits, so a typo cannot ask for gigabytes.
const MAX_TOKEN_BYTES_LIMIT: usize = 64 * 1024;
const MAX_CACHE_ENTRIES_LIMIT: u64 = 10_000_000;

/// One `[[attestation]]` table: a token family, as written in the config file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAttestation {
    /// Family name used in verdicts and metrics. Default: `approov`.
    pub name: Option<String>,
    /// Header carrying the token, matched case-insensitively. Default `Approov-Token`;
    /// `""` disables the header source (query parameter only).
    pub header: Option<String>,
    /// Text before the token in the header value, matched case-insensitively (`Bearer `).
    pub prefix: Option<String>,
    /// Query parameter carrying the token (WebSocket upgrades), checked after the header.
    pub query_param: Option<String>,
    /// Explicit allow-list, e.g. `["HS256"]` (default) or `["RS256", "ES256"]`.
    pub algorithms: Option<Vec<String>>,
    /// HMAC secret, base64 or base64url, padded or not.
    pub secret_base64: Option<String>,
    /// File holding the base64 HMAC secret.
    pub secret_file: Option<PathBuf>,
    /// Environment variable holding the base64 HMAC secret.
    pub secret_env: Option<String>,
    /// Key id of the `secret_*` secret: only tokens whose `kid` names it, or names no
    /// configured key, are checked with it. Unset (the usual Approov account secret), it
    /// checks tokens without `kid` and tokens whose `kid` names no configured key.
    pub secret_kid: Option<String>,
    /// More HMAC secrets selected by the token's `kid`: `kid = "base64"`.
    pub secrets: Option<BTreeMap<String, String>>,
    /// JWKS file with the public keys (read at startup).
    pub jwks_file: Option<PathBuf>,
    /// HTTPS URL of a JWKS, re-fetched every `jwks_refresh_secs`.
    pub jwks_url: Option<String>,
    /// PEM CA certificates trusted for `jwks_url` in addition to the system roots.
    pub jwks_ca_file: Option<PathBuf>,
    pub jwks_refresh_secs: Option<u64>,
    /// Required `iss` value.
    pub issuer: Option<String>,
    /// Accepted `aud` values (a token passes when any of its audiences is listed).
    pub audience: Option<OneOrMany>,
    /// Headers whose values, concatenated in order, the `pay` claim must hash.
    pub binding_headers: Option<Vec<String>>,
    /// `accept` (default) or `reject` a token without `pay` when binding is configured.
    pub missing_binding: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`. Default 0 (as Approov).
    pub leeway_secs: Option<u64>,
    /// Claim naming the device. Default `did`.
    pub device_claim: Option<String>,
    pub max_token_bytes: Option<usize>,
    pub max_claims_bytes: Option<usize>,
    /// Verified tokens remembered (0 disables the cache).
    pub cache_entries: Option<u64>,
    /// Strings taken as SDK status values instead of tokens. Default: the Approov SDK's.
    pub status_values: Option<Vec<String>>,
}

/// `[identity]`: where the user id comes from, and how client addresses are attributed.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdentity {
    /// `false` turns user identification off. Default `true`.
    pub enabled: Option<bool>,
    /// Default `Authorization`.
    pub user_header: Option<String>,
    /// Default `Bearer `.
    pub user_prefix: Option<String>,
    /// Claim holding the user id. Default `sub`.
    pub user_claim: Option<String>,
    pub user_secret_base64: Option<String>,
    pub user_secret_file: Option<PathBuf>,
    pub user_secret_env: Option<String>,
    /// Key id of the `user_secret_*` secret (as `secret_kid` in `[[attestation]]`).
    pub user_secret_kid: Option<String>,
    /// More HMAC secrets for user tokens, selected by the token's `kid`: `kid = "base64"`.
    pub user_secrets: Option<BTreeMap<String, String>>,
    pub user_jwks_file: Option<PathBuf>,
    pub user_jwks_url: Option<String>,
    pub user_jwks_ca_file: Option<PathBuf>,
    pub user_jwks_refresh_secs: Option<u64>,
    /// Default `["HS256"]` with a secret, `["RS256", "ES256"]` with a JWKS.
    pub user_algorithms: Option<Vec<String>>,
    pub user_issuer: Option<String>,
    pub user_audience: Option<OneOrMany>,
    pub user_leeway_secs: Option<u64>,
    pub cache_entries: Option<u64>,
    /// Headers carrying the original client address, honoured only from `trusted_proxies`.
    pub client_ip_headers: Option<Vec<String>>,
    /// CIDRs of proxies whose `client_ip_headers` are believed.
    pub trusted_proxies: Option<Vec<String>>,
}

/// A TOML value that may be one string or a list of strings.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

pub use super::keys::Secret;

/// What to do with a token that has no `pay` claim while binding is configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MissingBinding {
    /// Keep the verdict (Approov failover tokens carry no `pay`); the binding reads `absent`.
    Accept,
    /// Verdict `binding-absent`.
    Reject,
}

/// One validated token family.
#[derive(Clone, Debug)]
pub struct FamilyConfig {
    pub name: Arc<str>,
    /// `None` when only the query parameter carries tokens.
    pub header: Option<String>,
    pub prefix: String,
    pub query_param: Option<String>,
    pub algorithms: Vec<Algorithm>,
    /// Keys known at startup: HMAC secrets and keys from `jwks_file`.
    pub static_keys: KeySet,
    pub jwks_url: Option<String>,
    pub jwks_ca_file: Option<PathBuf>,
    pub jwks_refresh: Duration,
    pub issuer: Option<String>,
    pub audience: Vec<String>,
    pub binding_headers: Vec<String>,
    pub missing_binding: MissingBinding,
    pub leeway_secs: f64,
    /// Claim copied to the verdict as the device (attestation) or user id (identity).
    pub subject_claim: String,
    pub max_token_bytes: usize,
    pub max_claims_bytes: usize,
    pub cache_entries: u64,
    pub status_values: Vec<Arc<str>>,
}

impl FamilyConfig {
    /// No key at all: tokens are decoded and judged on their claims, never `valid`.
    pub fn unverified(&self) -> bool {
        self.static_keys.is_empty() && self.jwks_url.is_none()
    }
}

/// `[identity]`, validated.
#[derive(Clone, Debug)]
pub struct IdentityConfig {
    /// How user tokens are read and verified; the family name is `identity`.
    pub user: FamilyConfig,
    pub client_ip_headers: Vec<String>,
    pub trusted_proxies: Vec<Cidr>,
}

/// Everything the token stage needs, validated.
#[derive(Clone, Debug)]
pub struct TokenConfig {
    /// Tried in order; never empty.
    pub families: Vec<FamilyConfig>,
    /// `None` when `[identity] enabled = false`.
    pub identity: Option<IdentityConfig>,
}

impl Default for TokenConfig {
    fn default() -> Self {
        // The defaults read no file or variable, so they cannot fail.
        TokenConfig::from_raw(&[], None).unwrap_or_else(|e| unreachable!("defaults: {e}"))
    }
}

/// An address block, e.g. `10.0.0.0/8` or `fd00::/8`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix_len: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    /// The block's network address and length (`10.0.0.0/8`), host bits cleared.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let net: IpAddr = match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        };
        write!(f, "{net}/{}", self.prefix_len)
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not an address or CIDR"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix_len = match len {
            Some(l) => l
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("`{s}`: prefix length must be 0..={max}"))?,
            None => max,
        };
        Ok(Cidr { addr, prefix_len })
    }
}

/// Base64 decoding that accepts both alphabets, padded or not (Approov hands out standard
/// base64, some tools emit base64url).
pub fn decode_base64_any(text: &str) -> Option<Vec<u8>> {
    const CFG: GeneralPurposeConfig = GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(false);
    const STD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, CFG);
    const URL: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, CFG);
    let text = text.trim();
    STD.decode(text).or_else(|_| URL.decode(text)).ok()
}

/// Where a family's settings come from, so one validator serves both tables.
struct FamilyInput<'a> {
    key_prefix: String,
    name: Option<&'a str>,
    default_name: &'a str,
    header: Option<&'a str>,
    default_header: &'a str,
    prefix: Option<&'a str>,
    default_prefix: &'a str,
    query_param: Option<&'a str>,
    algorithms: Option<&'a [String]>,
    algorithms_key: &'a str,
    secret: [(&'a str, Option<&'a str>); 3],
    secret_file: Option<&'a PathBuf>,
    secret_kid: (&'a str, Option<&'a str>),
    secrets: (&'a str, Option<&'a BTreeMap<String, String>>),
    jwks_file: (&'a str, Option<&'a PathBuf>),
    jwks_url: (&'a str, Option<&'a str>),
    jwks_ca_file: (&'a str, Option<&'a PathBuf>),
    jwks_refresh_secs: Option<u64>,
    issuer: Option<&'a str>,
    audience: Option<&'a OneOrMany>,
    binding_headers: Option<&'a [String]>,
    missing_binding: Option<&'a str>,
    leeway_secs: Option<u64>,
    subject_claim: Option<&'a str>,
    default_subject_claim: &'a str,
    max_token_bytes: Option<usize>,
    max_claims_bytes: Option<usize>,
    cache_entries: Option<u64>,
    status_values: Option<&'a [String]>,
    with_status_defaults: bool,
}

impl TokenConfig {
    /// Validates the raw tables. With no `[[attestation]]` one `approov` family applies
    /// (header `Approov-Token`, HS256, no key: tokens are judged `unverified` at best).
    pub fn from_raw(
        att: &[RawAttestation],
        id: Option<&RawIdentity>,
    ) -> Result<TokenConfig, String> {
        Self::from_raw_with_env(att, id, &|name| std::env::var(name).ok())
    }

    /// As [`TokenConfig::from_raw`], reading environment variables through `env`.
    pub fn from_raw_with_env(
        att: &[RawAttestation],
        id: Option<&RawIdentity>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<TokenConfig, String> {
        let default_att = [RawAttestation::default()];
        let att = if att.is_empty() {
            &default_att[..]
        } else {
            att
        };
        let mut families: Vec<FamilyConfig> = Vec::with_capacity(att.len());
        for (i, a) in att.iter().enumerate() {
            let input = FamilyInput {
                key_prefix: format!("attestation[{i}]."),
                name: a.name.as_deref(),
                default_name: "approov",
                header: a.header.as_deref(),
                default_header: "Approov-Token",
                prefix: a.prefix.as_deref(),
                default_prefix: "",
                query_param: a.query_param.as_deref(),
                algorithms: a.algorithms.as_deref(),
                algorithms_key: "algorithms",
                secret: [
                    ("secret_base64", a.secret_base64.as_deref()),
                    (
                        "secret_file",
                        a.secret_file
                            .as_ref()
                            .map(|p| p.to_str().unwrap_or("<path>")),
                    ),
                    ("secret_env", a.secret_env.as_deref()),
                ],
                secret_file: a.secret_file.as_ref(),
                secret_kid: ("secret_kid", a.secret_kid.as_deref()),
                secrets: ("secrets", a.secrets.as_ref()),
                jwks_file: ("jwks_file", a.jwks_file.as_ref()),
                jwks_url: ("jwks_url", a.jwks_url.as_deref()),
                jwks_ca_file: ("jwks_ca_file", a.jwks_ca_file.as_ref()),
                jwks_refresh_secs: a.jwks_refresh_secs,
                issuer: a.issuer.as_deref(),
                audience: a.audience.as_ref(),
                binding_headers: a.binding_headers.as_deref(),
                missing_binding: a.missing_binding.as_deref(),
                leeway_secs: a.leeway_secs,
                subject_claim: a.device_claim.as_deref(),
                default_subject_claim: "did",
                max_token_bytes: a.max_token_bytes,
                max_claims_bytes: a.max_claims_bytes,
                cache_entries: a.cache_entries,
                status_values: a.status_values.as_deref(),
                with_status_defaults: true,
            };
            let fam = family(input, env)?;
            if families.iter().any(|f| f.name == fam.name) {
                return Err(format!(
                    "attestation[{i}].name: `{}` is used by another family",
                    fam.name
                ));
            }
            families.push(fam);
        }

        let default_id = RawIdentity::default();
        let id = id.unwrap_or(&default_id);
        let identity = if id.enabled == Some(false) {
            None
        } else {
            let user = family(
                FamilyInput {
                    key_prefix: "identity.".to_owned(),
                    name: None,
                    default_name: "identity",
                    header: id.user_header.as_deref(),
                    default_header: "Authorization",
                    prefix: id.user_prefix.as_deref(),
                    default_prefix: "Bearer ",
                    query_param: None,
                    algorithms: id.user_algorithms.as_deref(),
                    algorithms_key: "user_algorithms",
                    secret: [
                        ("user_secret_base64", id.user_secret_base64.as_deref()),
                        (
                            "user_secret_file",
                            id.user_secret_file
                                .as_ref()
                                .map(|p| p.to_str().unwrap_or("<path>")),
                        ),
                        ("user_secret_env", id.user_secret_env.as_deref()),
                    ],
                    secret_file: id.user_secret_file.as_ref(),
                    secret_kid: ("user_secret_kid", id.user_secret_kid.as_deref()),
                    secrets: ("user_secrets", id.user_secrets.as_ref()),
                    jwks_file: ("user_jwks_file", id.user_jwks_file.as_ref()),
                    jwks_url: ("user_jwks_url", id.user_jwks_url.as_deref()),
                    jwks_ca_file: ("user_jwks_ca_file", id.user_jwks_ca_file.as_ref()),
                    jwks_refresh_secs: id.user_jwks_refresh_secs,
                    issuer: id.user_issuer.as_deref(),
                    audience: id.user_audience.as_ref(),
                    binding_headers: None,
                    missing_binding: None,
                    leeway_secs: id.user_leeway_secs,
                    subject_claim: id.user_claim.as_deref(),
                    default_subject_claim: "sub",
                    max_token_bytes: None,
                    max_claims_bytes: None,
                    cache_entries: id.cache_entries,
                    status_values: None,
                    with_status_defaults: false,
                },
                env,
            )?;
            if user.header.is_none() {
                return Err("identity.user_header: must name a header".to_owned());
            }
            let trusted_proxies = id
                .trusted_proxies
                .iter()
                .flatten()
                .enumerate()
                .map(|(i, s)| {
                    s.parse::<Cidr>()
                        .map_err(|e| format!("identity.trusted_proxies[{i}]: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Some(IdentityConfig {
                user,
                // Read only when the peer is a trusted proxy, so the defaults are safe.
                client_ip_headers: id.client_ip_headers.clone().unwrap_or_else(|| {
                    ["X-Forwarded-For", "Forwarded", "X-Real-IP"]
                        .map(String::from)
                        .to_vec()
                }),
                trusted_proxies,
            })
        };
        Ok(TokenConfig { families, identity })
    }
}

fn parse_algorithms(key: &str, names: &[String]) -> Result<Vec<Algorithm>, String> {
    if names.is_empty() {
        return Err(format!("{key}: list at least one algorithm"));
    }
    let mut out = Vec::with_capacity(names.len());
    for n in names {
        if n.eq_ignore_ascii_case("none") {
            return Err(format!("{key}: `none` is never allowed"));
        }
        let alg = Algorithm::from_str(n).map_err(|_| {
            format!("{key}: unknown algorithm `{n}` (HS256/384/512, RS256/384/512, PS256/384/512, ES256/384, EdDSA)")
        })?;
        if !out.contains(&alg) {
            out.push(alg);
        }
    }
    Ok(out)
}

/// Longest key id accepted in the config (Approov's are 4 digits, JWKS ids rarely pass 64).
const MAX_KEY_ID_BYTES: usize = 128;

/// A configured key id: matched byte for byte against the token's `kid`, so it must be
/// non-empty and have no surrounding blanks that a token could never carry by mistake.
fn key_id(key: &str, kid: &str) -> Result<String, String> {
    if kid.is_empty() || kid.len() > MAX_KEY_ID_BYTES {
        return Err(format!("{key}: a key id is 1 to {MAX_KEY_ID_BYTES} bytes"));
    }
    if kid.trim() != kid {
        return Err(format!(
            "{key}: key id `{kid}` has leading or trailing blanks"
        ));
    }
    Ok(kid.to_owned())
}

fn is_hmac(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

fn family(
    f: FamilyInput<'_>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<FamilyConfig, String> {
    let k = |name: &str| format!("{}{name}", f.key_prefix);
    let name = f.name.unwrap_or(f.default_name).trim();
    if name.is_empty() || name.len() > 64 {
        return Err(format!("{}: 1 to 64 characters", k("name")));
    }
    let header = match f.header.unwrap_or(f.default_header).trim() {
        "" => None,
        h => Some(h.to_owned()),
    };
    let query_param = f
        .query_param
        .map(str::trim)
        .filter(|q| !q.is_empty())
        .map(str::to_owned);
    if header.is_none() && query_param.is_none() {
        return Err(format!(
            "{}: set a header or a query_param to read tokens from",
            k("header")
        ));
    }

    let has_secret_source = f.secret.iter().any(|(_, v)| v.is_some());
    let has_jwks = f.jwks_file.1.is_some() || f.jwks_url.1.is_some();
    let has_hmac_key = has_secret_source || f.secrets.1.is_some_and(|s| !s.is_empty());
    let default_algs: Vec<String> = if !has_hmac_key && has_jwks {
        vec!["RS256".into(), "ES256".into()]
    } else {
        vec!["HS256".into()]
    };
    let algorithms = parse_algorithms(&k(f.algorithms_key), f.algorithms.unwrap_or(&default_algs))?;

    let mut static_keys = KeySet::default();
    let set: Vec<&str> = f
        .secret
        .iter()
        .filter(|(_, v)| v.is_some())
        .map(|(n, _)| *n)
        .collect();
    if set.len() > 1 {
        return Err(format!("{}: set only one of {}", k(set[0]), set.join(", ")));
    }
    let secret_kid = match f.secret_kid.1 {
        None => None,
        Some(_) if set.is_empty() => {
            return Err(format!(
                "{}: names the key of {}, which is not set",
                k(f.secret_kid.0),
                f.secret.map(|(n, _)| n).join(" / ")
            ));
        }
        Some(kid) => Some(key_id(&k(f.secret_kid.0), kid)?),
    };
    if let (Some(kid), Some(table)) = (&secret_kid, f.secrets.1)
        && table.contains_key(kid)
    {
        return Err(format!(
            "{}.{kid}: key id `{kid}` is also given by {}",
            k(f.secrets.0),
            k(f.secret_kid.0)
        ));
    }
    for (key_name, value) in f.secret {
        let Some(value) = value else { continue };
        let text = if key_name.ends_with("_file") {
            let path = f
                .secret_file
                .map(PathBuf::as_path)
                .unwrap_or(std::path::Path::new(value));
            std::fs::read_to_string(path)
                .map_err(|e| format!("{}: {}: {e}", k(key_name), path.display()))?
        } else if key_name.ends_with("_env") {
            env(value).ok_or_else(|| {
                format!("{}: environment variable `{value}` is not set", k(key_name))
            })?
        } else {
            value.to_owned()
        };
        let secret =
            decode_base64_any(&text).ok_or_else(|| format!("{}: not valid base64", k(key_name)))?;
        let key = Key::hmac(secret_kid.clone(), Secret::new(secret), &algorithms)
            .ok_or_else(|| format!("{}: the secret is empty", k(key_name)))?;
        static_keys.push(key);
    }
    for (kid, b64) in f.secrets.1.into_iter().flatten() {
        let at = format!("{}.{kid}", k(f.secrets.0));
        let kid = key_id(&at, kid)?;
        let secret = decode_base64_any(b64).ok_or_else(|| format!("{at}: not valid base64"))?;
        let key = Key::hmac(Some(kid), Secret::new(secret), &algorithms)
            .ok_or_else(|| format!("{at}: the secret is empty"))?;
        static_keys.push(key);
    }

    if let Some(path) = f.jwks_file.1 {
        let text = std::fs::read(path)
            .map_err(|e| format!("{}: {}: {e}", k(f.jwks_file.0), path.display()))?;
        let parsed = KeySet::from_jwks(&text, &algorithms)
            .map_err(|e| format!("{}: {}: {e}", k(f.jwks_file.0), path.display()))?;
        if parsed.is_empty() {
            return Err(format!(
                "{}: {}: no usable key for {:?}",
                k(f.jwks_file.0),
                path.display(),
                algorithms
            ));
        }
        static_keys.extend(parsed);
    }
    let jwks_url = match f.jwks_url.1.map(str::trim) {
        Some(u) if u.len() > 8 && u[..8].eq_ignore_ascii_case("https://") => Some(u.to_owned()),
        Some(u) => return Err(format!("{}: `{u}` is not an https:// URL", k(f.jwks_url.0))),
        None => None,
    };
    let jwks_ca_file = f.jwks_ca_file.1.cloned();
    if jwks_ca_file.is_some() && jwks_url.is_none() {
        return Err(format!(
            "{}: only used with {}",
            k(f.jwks_ca_file.0),
            k(f.jwks_url.0)
        ));
    }
    if let Some(p) = &jwks_ca_file {
        std::fs::metadata(p)
            .map_err(|e| format!("{}: {}: {e}", k(f.jwks_ca_file.0), p.display()))?;
    }
    let jwks_refresh_secs = f.jwks_refresh_secs.unwrap_or(DEFAULT_JWKS_REFRESH_SECS);
    if !(1..=7 * 86_400).contains(&jwks_refresh_secs) {
        return Err(format!("{}jwks_refresh_secs: 1 to 604800", f.key_prefix));
    }

    // Every allowed algorithm needs a key of its own kind, and a key needs an algorithm:
    // a public key is never offered to an HMAC check, so a config that would need one is
    // refused here rather than judged `unknown-key` forever.
    if has_hmac_key || has_jwks {
        for alg in &algorithms {
            if is_hmac(*alg) && !has_hmac_key {
                return Err(format!(
                    "{}: {alg:?} needs an HMAC secret; a JWKS public key never serves as an HMAC secret",
                    k(f.algorithms_key)
                ));
            }
            if !is_hmac(*alg) && !has_jwks {
                return Err(format!(
                    "{}: {alg:?} needs a JWKS (jwks_file or jwks_url)",
                    k(f.algorithms_key)
                ));
            }
        }
        if has_hmac_key && !algorithms.iter().any(|a| is_hmac(*a)) {
            return Err(format!(
                "{}: an HMAC secret is set but no HS algorithm is allowed",
                k(f.algorithms_key)
            ));
        }
    }

    let missing_binding = match f.missing_binding.unwrap_or("accept") {
        "accept" => MissingBinding::Accept,
        "reject" => MissingBinding::Reject,
        other => {
            return Err(format!(
                "{}: `{other}`: expected `accept` or `reject`",
                k("missing_binding")
            ));
        }
    };
    let binding_headers: Vec<String> = f
        .binding_headers
        .unwrap_or(&[])
        .iter()
        .map(|h| h.trim().to_owned())
        .collect();
    if let Some(i) = binding_headers.iter().position(String::is_empty) {
        return Err(format!(
            "{}binding_headers[{i}]: empty header name",
            f.key_prefix
        ));
    }
    let leeway = f.leeway_secs.unwrap_or(0);
    if leeway > 86_400 {
        return Err(format!("{}: at most 86400", k("leeway_secs")));
    }
    let max_token_bytes = f.max_token_bytes.unwrap_or(DEFAULT_MAX_TOKEN_BYTES);
    if !(64..=MAX_TOKEN_BYTES_LIMIT).contains(&max_token_bytes) {
        return Err(format!(
            "{}: 64 to {MAX_TOKEN_BYTES_LIMIT}",
            k("max_token_bytes")
        ));
    }
    let max_claims_bytes = f.max_claims_bytes.unwrap_or(DEFAULT_MAX_CLAIMS_BYTES);
    if !(64..=MAX_TOKEN_BYTES_LIMIT).contains(&max_claims_bytes) {
        return Err(format!(
            "{}: 64 to {MAX_TOKEN_BYTES_LIMIT}",
            k("max_claims_bytes")
        ));
    }
    let cache_entries = f.cache_entries.unwrap_or(DEFAULT_CACHE_ENTRIES);
    if cache_entries > MAX_CACHE_ENTRIES_LIMIT {
        return Err(format!(
            "{}: at most {MAX_CACHE_ENTRIES_LIMIT}",
            k("cache_entries")
        ));
    }
    let status_values: Vec<Arc<str>> = match f.status_values {
        Some(v) => v.iter().map(|s| Arc::from(s.trim())).collect(),
        None if f.with_status_defaults => APPROOV_STATUS_VALUES
            .iter()
            .map(|s| Arc::from(*s))
            .collect(),
        None => Vec::new(),
    };
    if let Some(bad) = status_values
        .iter()
        .find(|s| s.is_empty() || s.contains('.'))
    {
        return Err(format!(
            "{}: `{bad}` cannot be a status value (empty or contains `.`)",
            k("status_values")
        ));
    }

    Ok(FamilyConfig {
        name: Arc::from(name),
        header,
        prefix: f.prefix.unwrap_or(f.default_prefix).to_owned(),
        query_param,
        algorithms,
        static_keys,
        jwks_url,
        jwks_ca_file,
        jwks_refresh: Duration::from_secs(jwks_refresh_secs),
        issuer: f.issuer.map(str::to_owned),
        audience: f
            .audience
            .cloned()
            .map(OneOrMany::into_vec)
            .unwrap_or_default(),
        binding_headers,
        missing_binding,
        leeway_secs: leeway as f64,
        subject_claim: f
            .subject_claim
            .unwrap_or(f.default_subject_claim)
            .to_owned(),
        max_token_bytes,
        max_claims_bytes,
        cache_entries,
        status_values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(toml_text: &str) -> Result<TokenConfig, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Doc {
            #[serde(default)]
            attestation: Vec<RawAttestation>,
            identity: Option<RawIdentity>,
        }
        let doc: Doc = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        TokenConfig::from_raw_with_env(&doc.attestation, doc.identity.as_ref(), &|v| {
            (v == "TEST_SECRET").then(|| "c2VjcmV0LWtleS1ieXRlcw".to_owned())
        })
    }

    #[test]
    fn defaults_are_one_unverified_approov_family() {
        let cfg = TokenConfig::from_raw_with_env(&[], None, &no_env).unwrap();
        assert_eq!(cfg.families.len(), 1);
        let f = &cfg.families[0];
        assert_eq!(&*f.name, "approov");
        assert_eq!(f.header.as_deref(), Some("Approov-Token"));
        assert_eq!(f.algorithms, vec![Algorithm::HS256]);
        assert!(f.unverified());
        assert_eq!(f.leeway_secs, 0.0);
        assert!(f.status_values.iter().any(|s| &**s == "NO_NETWORK"));
        let id = cfg.identity.unwrap();
        assert_eq!(id.user.header.as_deref(), Some("Authorization"));
        assert_eq!(id.user.prefix, "Bearer ");
        assert_eq!(id.user.subject_claim, "sub");
    }

    #[test]
    fn secrets_in_every_alphabet_decode_to_the_same_bytes() {
        for s in [
            "c2VjcmV0LWtleS1ieXRlcw==",
            "c2VjcmV0LWtleS1ieXRlcw",
            "+/+/",
            "-_-_",
        ] {
            assert!(decode_base64_any(s).is_some(), "{s}");
        }
        assert_eq!(decode_base64_any("+/+/"), decode_base64_any("-_-_"));
        assert!(decode_base64_any("not base64!").is_none());
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse("[[attestation]]\nsecret_base64 = \"%%%\"").unwrap_err();
        assert_eq!(e, "attestation[0].secret_base64: not valid base64");
        let e = parse("[[attestation]]\nalgorithms = [\"none\"]").unwrap_err();
        assert!(e.starts_with("attestation[0].algorithms: `none`"), "{e}");
        let e = parse("[[attestation]]\nsecret_env = \"NOPE\"").unwrap_err();
        assert!(e.starts_with("attestation[0].secret_env:"), "{e}");
        let e = parse("[[attestation]]\nsecret_base64 = \"AAAA\"\nsecret_env = \"TEST_SECRET\"")
            .unwrap_err();
        assert!(e.contains("only one of"), "{e}");
        let e = parse("[[attestation]]\nmissing_binding = \"maybe\"").unwrap_err();
        assert!(e.starts_with("attestation[0].missing_binding"), "{e}");
        let e = parse("[[attestation]]\njwks_url = \"http://keys.example/jwks\"").unwrap_err();
        assert!(e.starts_with("attestation[0].jwks_url"), "{e}");
        let e = parse("[[attestation]]\n[[attestation]]").unwrap_err();
        assert!(e.starts_with("attestation[1].name"), "{e}");
        let e = parse("[[attestation]]\nsecrets = { k1 = \"!!\" }").unwrap_err();
        assert_eq!(e, "attestation[0].secrets.k1: not valid base64");
        let e = parse("[identity]\ntrusted_proxies = [\"10.0.0.0/33\"]").unwrap_err();
        assert!(e.starts_with("identity.trusted_proxies[0]"), "{e}");
        assert!(
            parse("[[attestation]]\nsecret = \"x\"")
                .unwrap_err()
                .contains("unknown field")
        );
    }

    #[test]
    fn an_hmac_algorithm_never_falls_back_to_a_public_key() {
        let e = parse(
            "[[attestation]]\nalgorithms = [\"RS256\", \"HS256\"]\njwks_url = \"https://keys.example/jwks\"",
        )
        .unwrap_err();
        assert!(e.contains("never serves as an HMAC secret"), "{e}");
        let e = parse("[[attestation]]\nalgorithms = [\"RS256\"]\nsecret_base64 = \"AAAA\"")
            .unwrap_err();
        assert!(
            e.contains("needs a JWKS") || e.contains("no HS algorithm"),
            "{e}"
        );
    }

    #[test]
    fn secret_from_env_and_kid_table() {
        let cfg = parse(
            "[[attestation]]\nsecret_env = \"TEST_SECRET\"\nsecrets = { k1 = \"AAAA\", k2 = \"AQID\" }\nbinding_headers = [\"Authorization\"]\nmissing_binding = \"reject\"",
        )
        .unwrap();
        let f = &cfg.families[0];
        assert_eq!(f.static_keys.len(), 3);
        assert_eq!(f.missing_binding, MissingBinding::Reject);
        assert!(!f.unverified());
        // The secret never shows in debug output.
        let dbg = format!("{cfg:?}");
        assert!(
            !dbg.contains("secret-key-bytes") && !dbg.contains("115, 101, 99"),
            "{dbg}"
        );
        assert_eq!(
            format!("{:?}", Secret::new(b"abc".to_vec())),
            "Secret(<3 bytes redacted>)"
        );
    }

    #[test]
    fn secrets_carry_key_ids_in_both_tables() {
        let cfg = parse(
            "[[attestation]]\nsecret_base64 = \"AAAA\"\nsecret_kid = \"0001\"\nsecrets = { \"0002\" = \"AQID\" }\n\
             [identity]\nuser_secret_env = \"TEST_SECRET\"\nuser_secret_kid = \"hs-1\"\nuser_secrets = { hs-2 = \"AQID\", hs-3 = \"AAAA\" }",
        )
        .unwrap();
        let kids = |set: &KeySet| -> Vec<Option<String>> {
            set.keys().iter().map(|k| k.kid.clone()).collect()
        };
        assert_eq!(
            kids(&cfg.families[0].static_keys),
            [Some("0001".into()), Some("0002".into())]
        );
        let id = cfg.identity.unwrap();
        assert_eq!(
            kids(&id.user.static_keys),
            [
                Some("hs-1".into()),
                Some("hs-2".into()),
                Some("hs-3".into())
            ]
        );
        // Named user secrets alone are enough to verify user tokens.
        let cfg = parse("[identity]\nuser_secrets = { hs-2 = \"AQID\" }").unwrap();
        assert!(!cfg.identity.unwrap().user.unverified());
    }

    #[test]
    fn key_id_errors_name_the_key() {
        let e = parse("[[attestation]]\nsecret_kid = \"0001\"").unwrap_err();
        assert!(
            e.starts_with("attestation[0].secret_kid: names the key of secret_base64"),
            "{e}"
        );
        let e = parse("[[attestation]]\nsecret_base64 = \"AAAA\"\nsecret_kid = \"\"").unwrap_err();
        assert!(
            e.starts_with("attestation[0].secret_kid: a key id is 1 to"),
            "{e}"
        );
        let e =
            parse("[[attestation]]\nsecret_base64 = \"AAAA\"\nsecret_kid = \" k\"").unwrap_err();
        assert!(e.contains("leading or trailing blanks"), "{e}");
        let e = parse(
            "[[attestation]]\nsecret_base64 = \"AAAA\"\nsecret_kid = \"k1\"\nsecrets = { k1 = \"AQID\" }",
        )
        .unwrap_err();
        assert!(
            e.starts_with(
                "attestation[0].secrets.k1: key id `k1` is also given by attestation[0].secret_kid"
            ),
            "{e}"
        );
        let e = parse("[identity]\nuser_secrets = { hs-2 = \"!!\" }").unwrap_err();
        assert_eq!(e, "identity.user_secrets.hs-2: not valid base64");
        let e = parse("[identity]\nuser_secret_kid = \"hs-1\"").unwrap_err();
        assert!(
            e.starts_with("identity.user_secret_kid: names the key of user_secret_base64"),
            "{e}"
        );
    }

    #[test]
    fn cidrs() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains("10.1.200.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
        let one: Cidr = "fd00::1".parse().unwrap();
        assert!(
            one.contains("fd00::1".parse().unwrap()) && !one.contains("fd00::2".parse().unwrap())
        );
    }
}
