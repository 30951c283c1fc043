//! Token stage: attestation and user tokens in request headers to verdicts.
//!
//! Input: one request's headers and target (from [`crate::http`]) and its packet time. Output:
//! an [`Attestation`] (family, verdict, device, binding state, short token hash) and, from the
//! `Authorization: Bearer` JWT, a [`UserId`]. A [`Verifier`] is built once from a validated
//! [`TokenConfig`] and shared by every worker (`Arc`, `&self` methods only); it owns a bounded
//! verdict cache per family (a token's signature is checked once, expiry and binding on every
//! request against packet time), per-family verdict counters (atomics) and, when a family
//! names a `jwks_url`, a background thread that refreshes keys and keeps the last good set.
//! Limits: token size (`max_token_bytes`), claims size (`max_claims_bytes`), cache entries
//! (`cache_entries`), JWKS size and key count (1 MiB, 64 keys). Failure modes are
//! verdicts, never errors or panics: traffic cannot make this stage fail. Tokens leave the
//! stage only as a 12-hex-digit SHA-256 prefix; secrets never leave it. JWS checks use
//! `jsonwebtoken` on aws-lc-rs; hashes and constant-time comparison use aws-lc-rs.

mod cache;
mod config;
mod jwks;
mod jws;
mod keys;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_lc_rs::digest;
use serde::Serialize;
use serde::ser::SerializeStruct;
use serde_json::{Value, json};

use crate::http::{Headers, header};

pub use config::{
    APPROOV_STATUS_VALUES, Cidr, FamilyConfig, IdentityConfig, MissingBinding, OneOrMany,
    RawAttestation, RawIdentity, Secret, TokenConfig, decode_base64_any,
};

use cache::VerdictCache;
use jwks::{FetchedKeys, Fetcher, JwksCounters, Target};
use jws::{Decoded, Inspected, Pay};

/// How long [`Verifier::new`] waits for the first JWKS fetch.
const FIRST_FETCH_WAIT: Duration = Duration::from_secs(15);
/// How long [`Verifier::refresh_jwks_now`] waits.
const REFRESH_NOW_WAIT: Duration = Duration::from_secs(30);

/// The judgement on one token. The strings are part of the interface (INTERFACE.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    Valid,
    Missing,
    Malformed,
    BadSignature,
    AlgNotAllowed,
    Expired,
    NotYetValid,
    BindingMismatch,
    BindingAbsent,
    UnknownKey,
    StatusValue,
    Unverified,
}

impl Verdict {
    pub const ALL: [Verdict; 12] = [
        Verdict::Valid,
        Verdict::Missing,
        Verdict::Malformed,
        Verdict::BadSignature,
        Verdict::AlgNotAllowed,
        Verdict::Expired,
        Verdict::NotYetValid,
        Verdict::BindingMismatch,
        Verdict::BindingAbsent,
        Verdict::UnknownKey,
        Verdict::StatusValue,
        Verdict::Unverified,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Valid => "valid",
            Verdict::Missing => "missing",
            Verdict::Malformed => "malformed",
            Verdict::BadSignature => "bad-signature",
            Verdict::AlgNotAllowed => "alg-not-allowed",
            Verdict::Expired => "expired",
            Verdict::NotYetValid => "not-yet-valid",
            Verdict::BindingMismatch => "binding-mismatch",
            Verdict::BindingAbsent => "binding-absent",
            Verdict::UnknownKey => "unknown-key",
            Verdict::StatusValue => "status-value",
            Verdict::Unverified => "unverified",
        }
    }

    pub fn from_name(name: &str) -> Option<Verdict> {
        Verdict::ALL.into_iter().find(|v| v.as_str() == name)
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Verdict {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Verdict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Verdict, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Verdict::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown verdict {s:?}")))
    }
}

/// Whether the token was tied to the request by its `pay` claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindingState {
    /// The family has no `binding_headers`.
    NotConfigured,
    /// Binding is configured but the token has no `pay` (or there is no token).
    Absent,
    /// `pay` was compared with the request; the verdict says whether it matched.
    Checked,
    /// `pay` is present but the verdict was decided before binding (e.g. `expired`).
    Unchecked,
}

impl BindingState {
    pub fn as_str(self) -> &'static str {
        match self {
            BindingState::NotConfigured => "not-configured",
            BindingState::Absent => "absent",
            BindingState::Checked => "checked",
            BindingState::Unchecked => "unchecked",
        }
    }
}

impl Serialize for BindingState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

pub use crate::redact::TokenHash;

/// The attestation judgement on one request.
#[derive(Clone, Debug, PartialEq)]
pub struct Attestation {
    pub family: Arc<str>,
    pub verdict: Verdict,
    /// The device claim (`did` by default), only when the token's claims can be believed:
    /// signature valid, or no key configured (`unverified`). Forged tokens name no device.
    pub device: Option<Arc<str>>,
    pub binding: BindingState,
    /// Short hash of the token; `None` when there was no token (or only a status value).
    pub token_hash: Option<TokenHash>,
    /// The SDK status string, for `status-value` (a client condition, not a secret).
    pub status_value: Option<Arc<str>>,
    /// The token's `ip` claim (the address the attester saw), under the same condition as
    /// `device`.
    pub ip: Option<Arc<str>>,
    /// The token's `exp` (Unix seconds), under the same condition as `device`: detectors
    /// measure how long after expiry a token is still used.
    pub exp: Option<f64>,
}

impl Serialize for Attestation {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Attestation", 7)?;
        st.serialize_field("family", &*self.family)?;
        st.serialize_field("verdict", &self.verdict)?;
        st.serialize_field("device", &self.device.as_deref())?;
        st.serialize_field("binding", &self.binding)?;
        st.serialize_field("token", &self.token_hash)?;
        st.serialize_field("status_value", &self.status_value.as_deref())?;
        st.serialize_field("ip", &self.ip.as_deref())?;
        st.end()
    }
}

/// The user a request acts for, from the identity JWT.
#[derive(Clone, Debug, PartialEq)]
pub struct UserId {
    pub id: Arc<str>,
    /// The token's signature was checked with a configured key (verdict `valid`).
    pub verified: bool,
    /// `valid`, `unverified` (no key configured) or why it could not be believed
    /// (`bad-signature`, `expired`, ...). Attribute to the user only on the first two.
    pub verdict: Verdict,
}

impl Serialize for UserId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("UserId", 3)?;
        st.serialize_field("id", &*self.id)?;
        st.serialize_field("verified", &self.verified)?;
        st.serialize_field("verdict", &self.verdict)?;
        st.end()
    }
}

/// Counters, read at any time (metrics, summaries).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct TokenStats {
    /// family → verdict → requests.
    pub verdicts: BTreeMap<String, BTreeMap<&'static str, u64>>,
    /// Identity (user token) verdicts, for requests carrying a JWT in the user header.
    pub identity_verdicts: BTreeMap<&'static str, u64>,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub cache_evictions: u64,
    pub cache_entries: u64,
    /// Bytes the caches hold now, and their limit (the memory budget's `tokens` share, or
    /// `cache_entries` entries, whichever is less).
    pub cache_bytes: u64,
    pub cache_limit_bytes: u64,
    /// Tokens over `max_token_bytes` (judged `malformed` unread).
    pub oversize_tokens: u64,
    pub jwks_refresh_ok: u64,
    pub jwks_refresh_failed: u64,
}

impl TokenStats {
    /// The token caches as the memory budget reports them.
    pub fn cache_usage(&self) -> crate::budget::Usage {
        crate::budget::Usage {
            bytes: self.cache_bytes,
            limit: self.cache_limit_bytes,
            entries: self.cache_entries,
            evictions: self.cache_evictions,
        }
    }
}

/// Why a [`Verifier`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    #[error("token config: {0}")]
    Config(String),
    #[error("token family `{family}`: JWKS: {message}")]
    Jwks { family: String, message: String },
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn trim(b: &[u8]) -> &[u8] {
    b.trim_ascii()
}

/// The outcome of judging one token, before it is shaped for callers.
struct Judgement {
    verdict: Verdict,
    binding: BindingState,
    facts: Option<Arc<cache::Entry>>,
    token_hash: Option<TokenHash>,
    status_value: Option<Arc<str>>,
}

impl Judgement {
    fn bare(verdict: Verdict, binding: BindingState) -> Judgement {
        Judgement {
            verdict,
            binding,
            facts: None,
            token_hash: None,
            status_value: None,
        }
    }

    /// Claims are believed when the signature checked out, or when no key exists to check.
    fn believed(&self) -> Option<&Inspected> {
        self.facts
            .as_ref()
            .map(|e| &e.facts)
            .filter(|f| matches!(f.verdict, Verdict::Valid | Verdict::Unverified))
    }
}

/// One family at run time: its settings, keys, cache and counters.
struct Family {
    cfg: FamilyConfig,
    fetched: Option<Arc<FetchedKeys>>,
    cache: VerdictCache,
    verdicts: [AtomicU64; 12],
    oversize: AtomicU64,
}

impl Family {
    fn new(cfg: FamilyConfig, cache_bytes: u64, targets: &mut Vec<Target>) -> Family {
        let fetched = cfg.jwks_url.as_ref().map(|url| {
            let store = Arc::new(FetchedKeys::default());
            targets.push(Target {
                family: Arc::clone(&cfg.name),
                url: url.clone(),
                ca_file: cfg.jwks_ca_file.clone(),
                algorithms: cfg.algorithms.clone(),
                refresh: cfg.jwks_refresh,
                store: Arc::clone(&store),
            });
            store
        });
        let cache = VerdictCache::new(cfg.cache_entries, cache_bytes);
        Family {
            cfg,
            fetched,
            cache,
            verdicts: Default::default(),
            oversize: AtomicU64::new(0),
        }
    }

    fn count(&self, v: Verdict) {
        self.verdicts[v.index()].fetch_add(1, Ordering::Relaxed);
    }

    fn binding_shape(&self, pay: Option<Pay>) -> BindingState {
        match pay {
            _ if self.cfg.binding_headers.is_empty() => BindingState::NotConfigured,
            None | Some(Pay::Absent) => BindingState::Absent,
            Some(_) => BindingState::Unchecked,
        }
    }

    /// Where this family's token is in the request, if anywhere: `(bytes, from_header)`.
    fn source<'a>(&self, headers: &'a Headers, target: &'a str) -> Option<(Cow<'a, [u8]>, bool)> {
        if let Some(name) = &self.cfg.header
            && let Some(v) = header(headers, name)
            && !trim(v).is_empty()
        {
            return Some((Cow::Borrowed(v), true));
        }
        if let Some(name) = &self.cfg.query_param
            && let Some(v) = query_value(target, name)
            && !trim(&v).is_empty()
        {
            return Some((v, false));
        }
        None
    }

    /// Strips the header prefix (`Bearer `): `Err` is the verdict when that fails.
    fn token_text<'a>(&self, raw: &'a [u8], from_header: bool) -> Result<&'a [u8], Verdict> {
        let raw = trim(raw);
        let prefix = self.cfg.prefix.as_bytes();
        let rest = if from_header && !prefix.is_empty() {
            match raw.get(..prefix.len()) {
                Some(p) if p.eq_ignore_ascii_case(prefix) => {
                    raw.get(prefix.len()..).unwrap_or_default()
                }
                // `Bearer` alone (the prefix less its trailing space) carries no token.
                _ if raw.eq_ignore_ascii_case(prefix.trim_ascii()) => return Err(Verdict::Missing),
                _ => return Err(Verdict::Malformed),
            }
        } else {
            raw
        };
        let token = trim(rest);
        if token.is_empty() {
            Err(Verdict::Missing)
        } else {
            Ok(token)
        }
    }

    fn generation(&self) -> u64 {
        self.fetched.as_ref().map_or(0, |f| f.generation())
    }

    /// Judges the token itself (prefix already stripped). With `decoded`, the cache is
    /// bypassed and the header and claims are returned too.
    fn judge_token(
        &self,
        token: &[u8],
        headers: &Headers,
        now: f64,
        decoded: Option<&mut Decoded>,
    ) -> Judgement {
        let near = match decoded {
            None => self.cache.near(token),
            Some(_) => None,
        };
        self.judge_token_near(token, headers, now, decoded, near)
    }

    /// [`Self::judge_token`], given what the cache's near table holds for `token`
    /// ([`VerdictCache::near`]; `None` with `decoded`). A token found there that answers
    /// for the current keys was judged before, its form checked then: nearly every request
    /// goes straight to the per-request checks, skipping the UTF-8 and status-value tests
    /// of the token's few hundred bytes.
    fn judge_token_near(
        &self,
        token: &[u8],
        headers: &Headers,
        now: f64,
        decoded: Option<&mut Decoded>,
        near: Option<cache::NearHit>,
    ) -> Judgement {
        if token.len() > self.cfg.max_token_bytes {
            self.oversize.fetch_add(1, Ordering::Relaxed);
            return Judgement::bare(Verdict::Malformed, self.binding_shape(None));
        }
        let generation = self.generation();
        let near = match near {
            Some(n) if decoded.is_none() && n.answers(generation) => {
                let (digest, entry) = self.cache.near_hit(n);
                return self.judged(entry, digest, headers, now);
            }
            other => other,
        };
        let Ok(text) = simdutf8::basic::from_utf8(token) else {
            return Judgement::bare(Verdict::Malformed, self.binding_shape(None));
        };
        // A status value holds no `.`; most deployments list none, and then a token is not
        // searched for one.
        if !self.cfg.status_values.is_empty()
            && !text.contains('.')
            && let Some(status) = self.cfg.status_values.iter().find(|s| ***s == *text)
        {
            let mut j = Judgement::bare(Verdict::StatusValue, self.binding_shape(None));
            j.status_value = Some(Arc::clone(status));
            return j;
        }
        let (digest, hit) = match &decoded {
            // Decoding for display bypasses the cache.
            Some(_) => (sha256(token), None),
            None => self.cache.lookup_from(token, generation, near),
        };
        let entry = match (&decoded, hit) {
            (None, Some(hit)) => hit,
            _ => {
                let fetched = self.fetched.as_ref().map(|f| f.current());
                let mut sets = vec![&self.cfg.static_keys];
                if let Some(f) = &fetched {
                    sets.push(f);
                }
                let facts = jws::inspect(text, &self.cfg, &sets, decoded);
                self.cache
                    .insert(token, digest, facts, generation, now, self.cfg.leeway_secs)
            }
        };
        self.judged(entry, digest, headers, now)
    }

    /// The judgement of a token whose facts are `entry`: its validity at `now` and its
    /// binding to this request's `headers`.
    fn judged(
        &self,
        entry: Arc<cache::Entry>,
        digest: cache::Digest,
        headers: &Headers,
        now: f64,
    ) -> Judgement {
        let (verdict, binding) = self.evaluate(&entry.facts, headers, now);
        Judgement {
            verdict,
            binding,
            facts: Some(entry),
            token_hash: Some(TokenHash::of_digest(&digest)),
            status_value: None,
        }
    }

    /// The per-request part: validity window on packet time, then binding.
    fn evaluate(&self, facts: &Inspected, headers: &Headers, now: f64) -> (Verdict, BindingState) {
        let shape = self.binding_shape(Some(facts.pay));
        if !matches!(facts.verdict, Verdict::Valid | Verdict::Unverified) {
            return (facts.verdict, shape);
        }
        let leeway = self.cfg.leeway_secs;
        if let Some(nbf) = facts.nbf
            && now + leeway < nbf
        {
            return (Verdict::NotYetValid, shape);
        }
        if now >= facts.exp + leeway {
            return (Verdict::Expired, shape);
        }
        if self.cfg.binding_headers.is_empty() {
            return (facts.verdict, BindingState::NotConfigured);
        }
        match facts.pay {
            Pay::Absent => match self.cfg.missing_binding {
                MissingBinding::Accept => (facts.verdict, BindingState::Absent),
                MissingBinding::Reject => (Verdict::BindingAbsent, BindingState::Absent),
            },
            Pay::Invalid => (Verdict::BindingMismatch, BindingState::Checked),
            Pay::Digest(want) => {
                let got = binding_digest(headers, &self.cfg.binding_headers);
                // Constant-time in the contents: a timing oracle on `pay` must not exist.
                let same = aws_lc_rs::constant_time::verify_slices_are_equal(&got, &want).is_ok();
                if same {
                    (facts.verdict, BindingState::Checked)
                } else {
                    (Verdict::BindingMismatch, BindingState::Checked)
                }
            }
        }
    }

    fn shape(&self, j: Judgement) -> Attestation {
        let believed = j.believed();
        Attestation {
            family: Arc::clone(&self.cfg.name),
            verdict: j.verdict,
            device: believed.and_then(|f| f.subject.clone()),
            binding: j.binding,
            token_hash: j.token_hash,
            status_value: j.status_value.clone(),
            ip: believed.and_then(|f| f.ip.clone()),
            exp: believed.map(|f| f.exp).filter(|e| e.is_finite()),
        }
    }
}

/// Binding values (one header's) whose digests each thread keeps (a power of two), two per
/// set: a device sends the same `Authorization` for many requests, and a hit costs a
/// comparison of the value instead of a SHA-256 over it. A busy API has a few thousand
/// users' tokens in use at once: on the realistic capture 1,024 direct-mapped slots missed
/// 45,587 of 351,748 lookups, these 5,276. A value's set is picked as a token's near slots
/// are ([`cache::slot_part`]): by its length and its last bytes, where a bearer token's
/// signature is, not by a hash of all its bytes (about 200 instructions per request for a
/// KiB of JWT); a hit still needs the exact bytes.
const BINDING_SLOTS: usize = 4096;
/// Longest value whose digest is kept (a JWT is rarely over a KiB), so the slots hold at
/// most 8 MiB per thread however long the values sent.
const BINDING_MAX_VALUE: usize = 2048;

type BindingSlots = Vec<Option<(Box<[u8]>, [u8; 32])>>;

thread_local! {
    static BINDINGS: std::cell::RefCell<(BindingSlots, foldhash::fast::RandomState)> =
        std::cell::RefCell::new((
            std::iter::repeat_with(|| None).take(BINDING_SLOTS).collect(),
            foldhash::fast::RandomState::default(),
        ));
}

/// [`binding_digest_of`], remembered per thread for single-header bindings (found by the
/// value's exact bytes). A set's first slot holds the value used last: a hit in the second
/// swaps them, and a new value goes first, pushing the first into the second.
fn binding_digest(headers: &Headers, names: &[String]) -> [u8; 32] {
    let [name] = names else {
        return binding_digest_of(headers, names);
    };
    let value = header(headers, name).unwrap_or_default();
    if value.len() > BINDING_MAX_VALUE {
        return binding_digest_of(headers, names);
    }
    BINDINGS.with(|b| {
        use std::hash::BuildHasher;
        let (slots, hasher) = &mut *b.borrow_mut();
        let set =
            &mut slots[crate::memo::pair(BINDING_SLOTS, hasher.hash_one(cache::slot_part(value)))];
        let held = set.iter().enumerate().find_map(|(i, slot)| match slot {
            Some((v, d)) if **v == *value => Some((i, *d)),
            _ => None,
        });
        if let Some((i, d)) = held {
            set.swap(0, i);
            return d;
        }
        let d = binding_digest_of(headers, names);
        set.rotate_right(1);
        set[0] = Some((value.into(), d));
        d
    })
}

/// SHA-256 over the binding headers' values in order, without separators; a header that is
/// absent contributes nothing. Streamed, so no buffer is built per request.
fn binding_digest_of(headers: &Headers, names: &[String]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for name in names {
        if let Some(v) = header(headers, name) {
            ctx.update(v);
        }
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The value of query parameter `name` in a request target, percent-decoded.
fn query_value<'a>(target: &'a str, name: &str) -> Option<Cow<'a, [u8]>> {
    let query = target.split_once('?')?.1;
    let query = query.split_once('#').map_or(query, |(q, _)| q);
    let value = query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })?;
    Some(percent_decode(value.as_bytes()))
}

fn percent_decode(v: &[u8]) -> Cow<'_, [u8]> {
    if !v.contains(&b'%') {
        return Cow::Borrowed(v);
    }
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        let decoded = (v[i] == b'%')
            .then(|| Some(hex(*v.get(i + 1)?)? << 4 | hex(*v.get(i + 2)?)?))
            .flatten();
        match decoded {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(v[i]);
                i += 1;
            }
        }
    }
    Cow::Owned(out)
}

/// Verifies attestation and user tokens; built once, shared by all workers.
pub struct Verifier {
    families: Vec<Family>,
    identity: Option<Family>,
    fetcher: Option<Fetcher>,
    jwks: Arc<JwksCounters>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("families", &self.family_names())
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Builds the verifier. With any `jwks_url`, starts the refresh thread and waits up to
    /// 15 s for the first fetch (a failure is logged; those families start without keys).
    pub fn new(cfg: TokenConfig) -> Result<Verifier, TokenError> {
        Verifier::with_cache_bytes(cfg, u64::MAX)
    }

    /// A verifier whose caches hold at most `cache_bytes` in all (the memory budget's
    /// `tokens` share), split evenly between the families.
    pub fn with_cache_bytes(cfg: TokenConfig, cache_bytes: u64) -> Result<Verifier, TokenError> {
        if cfg.families.is_empty() {
            return Err(TokenError::Config("no token family".into()));
        }
        let caches = (cfg.families.len() + usize::from(cfg.identity.is_some())) as u64;
        let each = cache_bytes / caches.max(1);
        let mut targets = Vec::new();
        let families: Vec<Family> = cfg
            .families
            .into_iter()
            .map(|f| Family::new(f, each, &mut targets))
            .collect();
        let identity = cfg
            .identity
            .map(|id| Family::new(id.user, each, &mut targets));
        let jwks = Arc::new(JwksCounters::default());
        let fetcher = if targets.is_empty() {
            None
        } else {
            Some(Fetcher::start(
                targets,
                Arc::clone(&jwks),
                FIRST_FETCH_WAIT,
            )?)
        };
        Ok(Verifier {
            families,
            identity,
            fetcher,
            jwks,
        })
    }

    pub fn family_names(&self) -> Vec<&str> {
        self.families.iter().map(|f| &*f.cfg.name).collect()
    }

    /// Judges one request: the first family (in config order) whose header or query
    /// parameter is present decides; with none present the verdict is `missing` for the
    /// first family. `now_unix_secs` is packet time.
    pub fn attest(&self, headers: &Headers, target: &str, now_unix_secs: f64) -> Attestation {
        for fam in &self.families {
            if let Some((raw, from_header)) = fam.source(headers, target) {
                let j = match fam.token_text(&raw, from_header) {
                    Ok(token) => fam.judge_token(token, headers, now_unix_secs, None),
                    Err(v) => Judgement::bare(v, fam.binding_shape(None)),
                };
                fam.count(j.verdict);
                return fam.shape(j);
            }
        }
        // `new` refuses an empty family list.
        let fam = &self.families[0];
        fam.count(Verdict::Missing);
        fam.shape(Judgement::bare(Verdict::Missing, fam.binding_shape(None)))
    }

    /// The user behind the request, from a JWT in the identity header. `None` when there is
    /// none, when the bearer token is opaque (not a JWT), or when the claim is absent.
    pub fn identify(&self, headers: &Headers, now_unix_secs: f64) -> Option<UserId> {
        let fam = self.identity.as_ref()?;
        let raw = header(headers, fam.cfg.header.as_deref()?)?;
        let token = fam.token_text(raw, true).ok()?;
        // Opaque bearer tokens are common and carry no user id: not judged, not counted.
        // Two dots, counted no further than a third (a token is several hundred bytes);
        // a token this thread judged lately had them.
        let near = fam.cache.near(token);
        if near.is_none() && memchr::memchr_iter(b'.', token).take(3).count() != 2 {
            return None;
        }
        let j = fam.judge_token_near(token, headers, now_unix_secs, None, near);
        fam.count(j.verdict);
        let id = j.facts.as_ref()?.facts.subject.clone()?;
        Some(UserId {
            id,
            verified: j.verdict == Verdict::Valid,
            verdict: j.verdict,
        })
    }

    /// Fetches every JWKS now and waits (up to 30 s). `Err` names the families that failed;
    /// they keep their previous keys.
    pub fn refresh_jwks_now(&self) -> Result<(), String> {
        match &self.fetcher {
            Some(f) => f.refresh_now(REFRESH_NOW_WAIT),
            None => Ok(()),
        }
    }

    pub fn stats(&self) -> TokenStats {
        let counts = |f: &Family| -> BTreeMap<&'static str, u64> {
            Verdict::ALL
                .iter()
                .map(|v| (v.as_str(), f.verdicts[v.index()].load(Ordering::Relaxed)))
                .collect()
        };
        let mut s = TokenStats::default();
        for f in self.families.iter().chain(self.identity.iter()) {
            let c = &f.cache.counters;
            s.cache_hits += c.hits.load(Ordering::Relaxed);
            s.cache_misses += c.misses.load(Ordering::Relaxed);
            s.cache_evictions += c.evictions.load(Ordering::Relaxed);
            s.cache_entries += f.cache.entry_count();
            let (held, limit) = f.cache.bytes();
            s.cache_bytes += held;
            s.cache_limit_bytes += limit;
            s.oversize_tokens += f.oversize.load(Ordering::Relaxed);
        }
        s.verdicts = self
            .families
            .iter()
            .map(|f| (f.cfg.name.to_string(), counts(f)))
            .collect();
        s.identity_verdicts = self.identity.as_ref().map(counts).unwrap_or_default();
        s.jwks_refresh_ok = self.jwks.refresh_ok.load(Ordering::Relaxed);
        s.jwks_refresh_failed = self.jwks.refresh_failed.load(Ordering::Relaxed);
        s
    }
}

/// `shieldtap token verify`: judges `token` against every family and reports the most
/// telling one: the first `valid`, else the first whose keys and algorithms accepted the
/// token's form (its verdict is about the token, not about the family), else the first.
/// Returns the JSON to print and the exit status (0 valid, 1 any other verdict, 2 config).
/// `headers` are the request's other headers (for binding); `now` defaults to the clock.
pub fn verify_command(
    cfg: TokenConfig,
    token: &str,
    headers: &[(String, String)],
    now: Option<f64>,
) -> (Value, i32) {
    let now = now.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    });
    let verifier = match Verifier::new(cfg) {
        Ok(v) => v,
        Err(e) => return (json!({ "error": e.to_string() }), 2),
    };
    let headers: Headers = headers.iter().map(|(n, v)| (n.trim(), v.trim())).collect();
    let token = token.trim().as_bytes();
    let results: Vec<(&Family, Judgement, Decoded)> = verifier
        .families
        .iter()
        .map(|fam| {
            let mut decoded = Decoded::default();
            let j = if token.is_empty() {
                Judgement::bare(Verdict::Missing, fam.binding_shape(None))
            } else {
                fam.judge_token(token, &headers, now, Some(&mut decoded))
            };
            (fam, j, decoded)
        })
        .collect();
    let not_for_family = |v: Verdict| {
        matches!(
            v,
            Verdict::AlgNotAllowed | Verdict::UnknownKey | Verdict::BadSignature
        )
    };
    let chosen = results
        .iter()
        .position(|r| r.1.verdict == Verdict::Valid)
        .or_else(|| results.iter().position(|r| !not_for_family(r.1.verdict)))
        .unwrap_or(0);
    let families: Vec<Value> = results
        .iter()
        .map(|(f, j, _)| json!({ "family": &*f.cfg.name, "verdict": j.verdict }))
        .collect();
    let Some((fam, j, decoded)) = results.into_iter().nth(chosen) else {
        return (json!({ "error": "no token family" }), 2);
    };
    let verdict = j.verdict;
    let att = fam.shape(j);
    let out = json!({
        "family": &*att.family,
        "verdict": att.verdict,
        "device": att.device.as_deref(),
        "binding": att.binding,
        "token": att.token_hash,
        "status_value": att.status_value.as_deref(),
        "header": decoded.header.unwrap_or(Value::Null),
        "claims": decoded.claims.unwrap_or_else(|| json!({})),
        "now": now,
        "families": families,
    });
    (out, if verdict == Verdict::Valid { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: f64 = 1_795_000_000.0;

    fn hs256(header: &str, claims: &str, secret: &[u8]) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
        format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(aws_lc_rs::hmac::sign(&key, input.as_bytes()).as_ref())
        )
    }

    fn verifier(extra: &str) -> Verifier {
        let text = format!(
            "[[attestation]]\nsecret_base64 = \"{}\"\n{extra}",
            STANDARD.encode(SECRET)
        );
        #[derive(serde::Deserialize)]
        struct Doc {
            attestation: Vec<RawAttestation>,
        }
        let doc: Doc = toml::from_str(&text).unwrap();
        Verifier::new(TokenConfig::from_raw_with_env(&doc.attestation, None, &|_| None).unwrap())
            .unwrap()
    }

    /// The per-thread binding digests give what hashing the headers gives, whichever
    /// values share a slot, for absent headers, and for bindings over two headers.
    #[test]
    fn remembered_binding_digests_equal_fresh_ones() {
        let one = vec!["Authorization".to_string()];
        let two = vec!["Authorization".to_string(), "X-Session".to_string()];
        for round in 0..2 {
            for i in 0..(3 * BINDING_SLOTS) {
                let hs = crate::http::Headers::from_iter([
                    ("Authorization", &format!("Bearer user-{i}")),
                    ("X-Session", &format!("s{}", i % 7)),
                ]);
                assert_eq!(
                    binding_digest(&hs, &one),
                    binding_digest_of(&hs, &one),
                    "round {round}, value {i}"
                );
                assert_eq!(binding_digest(&hs, &two), binding_digest_of(&hs, &two));
            }
        }
        // Values of one length and one ending share a set (it is picked by the ending, as
        // a token's near slots are): told apart by their bytes, each gets its own digest,
        // however they take turns.
        let tail = "x".repeat(40);
        for round in 0..3 {
            for i in 0..5 {
                let hs = crate::http::Headers::from_iter([(
                    "Authorization",
                    format!("Bearer {i:04}.{tail}"),
                )]);
                assert_eq!(
                    binding_digest(&hs, &one),
                    binding_digest_of(&hs, &one),
                    "round {round}, value {i}"
                );
            }
        }
        let absent = crate::http::Headers::from_iter([("X-Other", "1")]);
        assert_eq!(
            binding_digest(&absent, &one),
            binding_digest_of(&absent, &one)
        );
        assert_eq!(binding_digest(&absent, &one), {
            let d = digest::digest(&digest::SHA256, b"");
            let mut out = [0u8; 32];
            out.copy_from_slice(d.as_ref());
            out
        });
    }

    #[test]
    fn verdict_strings_are_the_interface() {
        let names: Vec<&str> = Verdict::ALL.iter().map(|v| v.as_str()).collect();
        assert_eq!(
            names,
            [
                "valid",
                "missing",
                "malformed",
                "bad-signature",
                "alg-not-allowed",
                "expired",
                "not-yet-valid",
                "binding-mismatch",
                "binding-absent",
                "unknown-key",
                "status-value",
                "unverified"
            ]
        );
        for v in Verdict::ALL {
            assert_eq!(Verdict::from_name(v.as_str()), Some(v));
            assert_eq!(Verdict::ALL[v.index()], v);
        }
    }

    #[test]
    fn valid_then_cached_then_expired_on_packet_time() {
        let v = verifier("");
        let t = hs256(
            r#"{"alg":"HS256"}"#,
            &format!(r#"{{"exp":{},"did":"d1"}}"#, NOW + 60.0),
            SECRET,
        );
        let hdrs = crate::http::Headers::from_iter([("approov-token", &t)]);
        let a = v.attest(&hdrs, "/", NOW);
        assert_eq!(a.verdict, Verdict::Valid);
        assert_eq!(a.device.as_deref(), Some("d1"));
        assert_eq!(a.binding, BindingState::NotConfigured);
        assert_eq!(
            a.token_hash.unwrap().to_string(),
            TokenHash::of(&t).to_string()
        );
        assert_eq!(a.token_hash.unwrap().to_string().len(), 12);
        assert_eq!(v.attest(&hdrs, "/", NOW + 59.5).verdict, Verdict::Valid);
        assert_eq!(v.attest(&hdrs, "/", NOW + 60.0).verdict, Verdict::Expired);
        let s = v.stats();
        assert_eq!((s.cache_misses, s.cache_hits), (1, 2));
        assert_eq!(s.verdicts["approov"]["valid"], 2);
        assert_eq!(s.verdicts["approov"]["expired"], 1);
        // The output never carries the token.
        let json = serde_json::to_string(&a).unwrap();
        assert!(!json.contains(&t[..20]), "{json}");
    }

    #[test]
    fn binding_with_bearer_prefix_hashed_whole() {
        let v = verifier("binding_headers = [\"Authorization\"]\nmissing_binding = \"reject\"");
        let auth = "Bearer user-token";
        let pay = STANDARD.encode(sha256(auth.as_bytes()));
        let bound = hs256(
            r#"{"alg":"HS256"}"#,
            &format!(r#"{{"exp":{},"pay":"{pay}"}}"#, NOW + 60.0),
            SECRET,
        );
        let a = v.attest(
            &crate::http::Headers::from_iter([
                ("Approov-Token", bound.as_str()),
                ("Authorization", auth),
            ]),
            "/",
            NOW,
        );
        assert_eq!(
            (a.verdict, a.binding),
            (Verdict::Valid, BindingState::Checked)
        );
        let a = v.attest(
            &crate::http::Headers::from_iter([
                ("Approov-Token", bound.as_str()),
                ("Authorization", "Bearer other"),
            ]),
            "/",
            NOW,
        );
        assert_eq!(
            (a.verdict, a.binding),
            (Verdict::BindingMismatch, BindingState::Checked)
        );
        let unbound = hs256(
            r#"{"alg":"HS256"}"#,
            &format!(r#"{{"exp":{}}}"#, NOW + 60.0),
            SECRET,
        );
        let a = v.attest(
            &crate::http::Headers::from_iter([("Approov-Token", &unbound)]),
            "/",
            NOW,
        );
        assert_eq!(
            (a.verdict, a.binding),
            (Verdict::BindingAbsent, BindingState::Absent)
        );
    }

    #[test]
    fn sources_prefixes_and_status_values() {
        let v =
            verifier("header = \"Authorization\"\nprefix = \"Bearer \"\nquery_param = \"token\"");
        let t = hs256(
            r#"{"alg":"HS256"}"#,
            &format!(r#"{{"exp":{}}}"#, NOW + 60.0),
            SECRET,
        );
        assert_eq!(
            v.attest(
                &crate::http::Headers::from_iter([("authorization", &format!("bearer {t}"))]),
                "/",
                NOW
            )
            .verdict,
            Verdict::Valid
        );
        assert_eq!(
            v.attest(
                &crate::http::Headers::from_iter([("Authorization", &format!("Basic {t}"))]),
                "/",
                NOW
            )
            .verdict,
            Verdict::Malformed
        );
        assert_eq!(
            v.attest(
                &crate::http::Headers::from_iter([("Authorization", "Bearer")]),
                "/",
                NOW
            )
            .verdict,
            Verdict::Missing
        );
        assert_eq!(
            v.attest(
                &crate::http::Headers::new(),
                &format!("/ws?x=1&token={t}"),
                NOW
            )
            .verdict,
            Verdict::Valid
        );
        assert_eq!(
            v.attest(&crate::http::Headers::new(), "/ws?x=1", NOW)
                .verdict,
            Verdict::Missing
        );
        let a = v.attest(
            &crate::http::Headers::from_iter([("Authorization", "Bearer NO_NETWORK")]),
            "/",
            NOW,
        );
        assert_eq!(
            (a.verdict, a.status_value.as_deref(), a.token_hash),
            (Verdict::StatusValue, Some("NO_NETWORK"), None)
        );
        let a = v.attest(
            &crate::http::Headers::from_iter([("Authorization", "Bearer SOMETHING_ELSE")]),
            "/",
            NOW,
        );
        assert_eq!((a.verdict, a.status_value), (Verdict::Malformed, None));
        let big = "a".repeat(9000);
        assert_eq!(
            v.attest(
                &crate::http::Headers::from_iter([("Authorization", &format!("Bearer {big}"))]),
                "/",
                NOW
            )
            .verdict,
            Verdict::Malformed
        );
        assert_eq!(v.stats().oversize_tokens, 1);
    }

    #[test]
    fn first_present_family_decides() {
        let text = format!(
            "[[attestation]]\nname = \"a\"\nheader = \"X-A\"\nsecret_base64 = \"{0}\"\n[[attestation]]\nname = \"b\"\nheader = \"X-B\"\nsecret_base64 = \"{0}\"",
            STANDARD.encode(SECRET)
        );
        #[derive(serde::Deserialize)]
        struct Doc {
            attestation: Vec<RawAttestation>,
        }
        let doc: Doc = toml::from_str(&text).unwrap();
        let v = Verifier::new(TokenConfig::from_raw(&doc.attestation, None).unwrap()).unwrap();
        let t = hs256(
            r#"{"alg":"HS256"}"#,
            &format!(r#"{{"exp":{}}}"#, NOW + 60.0),
            SECRET,
        );
        let a = v.attest(&crate::http::Headers::from_iter([("X-B", &t)]), "/", NOW);
        assert_eq!((&*a.family, a.verdict), ("b", Verdict::Valid));
        let a = v.attest(&crate::http::Headers::new(), "/", NOW);
        assert_eq!(
            (&*a.family, a.verdict, a.binding),
            ("a", Verdict::Missing, BindingState::NotConfigured)
        );
    }

    /// A user token for `sub`, valid for a minute from `NOW`, under a key the default
    /// identity family does not hold (so judged `unverified`).
    fn unkeyed_user_token(sub: &str) -> String {
        hs256(
            r#"{"alg":"HS256"}"#,
            &format!(r#"{{"exp":{},"sub":"{sub}"}}"#, NOW + 60.0),
            b"whatever",
        )
    }

    #[test]
    fn identity_verified_and_unverified() {
        let v = Verifier::new(TokenConfig::default()).unwrap();
        let user = unkeyed_user_token("u-42");
        let u = v
            .identify(
                &crate::http::Headers::from_iter([("Authorization", &format!("Bearer {user}"))]),
                NOW,
            )
            .unwrap();
        assert_eq!(
            (&*u.id, u.verified, u.verdict),
            ("u-42", false, Verdict::Unverified)
        );
        assert!(
            v.identify(
                &crate::http::Headers::from_iter([("Authorization", "Bearer opaque-token")]),
                NOW
            )
            .is_none()
        );
        // Not three parts (one dot, or five parts like a JWE's): not judged, not counted.
        for not_jws in ["Bearer a.b", &format!("Bearer {user}.x.y")] {
            assert!(
                v.identify(
                    &crate::http::Headers::from_iter([("Authorization", not_jws)]),
                    NOW
                )
                .is_none()
            );
        }
        let judged: u64 = v.stats().identity_verdicts.values().sum();
        assert_eq!(judged, 1, "only the JWT was judged");
        assert!(v.identify(&crate::http::Headers::new(), NOW).is_none());
        // Default family without key: unverified, but expiry still judged.
        let t = hs256(
            r#"{"alg":"HS256"}"#,
            &format!(r#"{{"exp":{}}}"#, NOW - 1.0),
            b"x",
        );
        assert_eq!(
            v.attest(
                &crate::http::Headers::from_iter([("Approov-Token", &t)]),
                "/",
                NOW
            )
            .verdict,
            Verdict::Expired
        );
        let t = hs256(
            r#"{"alg":"HS256"}"#,
            &format!(r#"{{"exp":{},"did":"d"}}"#, NOW + 1.0),
            b"x",
        );
        let a = v.attest(
            &crate::http::Headers::from_iter([("Approov-Token", &t)]),
            "/",
            NOW,
        );
        assert_eq!(
            (a.verdict, a.device.as_deref()),
            (Verdict::Unverified, Some("d"))
        );
        assert_eq!(v.stats().identity_verdicts["unverified"], 1);
    }

    /// A user token met again is found by its bytes and skips the form checks, never the
    /// per-request ones: the same user and verdict, counted as cache hits; expiry still
    /// on packet time. Opaque tokens stay unjudged and uncounted however often they come.
    #[test]
    fn identity_repeats_are_near_hits_judged_per_request() {
        let v = Verifier::new(TokenConfig::default()).unwrap();
        let user = unkeyed_user_token("u-7");
        let hdrs = crate::http::Headers::from_iter([("Authorization", &format!("Bearer {user}"))]);
        let opaque = crate::http::Headers::from_iter([("Authorization", "Bearer opaque-token")]);
        for _ in 0..3 {
            let u = v.identify(&hdrs, NOW).unwrap();
            assert_eq!((&*u.id, u.verdict), ("u-7", Verdict::Unverified));
            assert!(v.identify(&opaque, NOW).is_none());
        }
        assert_eq!(
            v.identify(&hdrs, NOW + 61.0).unwrap().verdict,
            Verdict::Expired
        );
        let s = v.stats();
        assert_eq!((s.cache_misses, s.cache_hits), (1, 3));
        assert_eq!(s.identity_verdicts["unverified"], 3);
        assert_eq!(s.identity_verdicts["expired"], 1);
        assert_eq!(s.identity_verdicts.values().sum::<u64>(), 4);
    }

    #[test]
    fn verify_command_reports_claims_and_exit_status() {
        let cfg = TokenConfig::from_raw(
            &[RawAttestation {
                secret_base64: Some(STANDARD.encode(SECRET)),
                ..Default::default()
            }],
            None,
        )
        .unwrap();
        let t = hs256(
            r#"{"alg":"HS256","kid":null}"#,
            &format!(r#"{{"exp":{},"did":"d9"}}"#, NOW + 60.0),
            SECRET,
        );
        let (out, code) = verify_command(cfg.clone(), &t, &[], Some(NOW));
        assert_eq!(code, 0, "{out}");
        assert_eq!(out["verdict"], "valid");
        assert_eq!(out["family"], "approov");
        assert_eq!(out["claims"]["did"], "d9");
        let (out, code) = verify_command(cfg, &t, &[], Some(NOW + 3600.0));
        assert_eq!((code, out["verdict"].as_str()), (1, Some("expired")));
        assert!(!out.to_string().contains(&t), "token echoed");
    }

    #[test]
    fn verifier_is_shared_across_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<Verifier>();
        shared::<Attestation>();
    }

    proptest::proptest! {
        #[test]
        fn traffic_never_panics(value in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
                                parts in proptest::collection::vec("[A-Za-z0-9_-]{0,80}", 0..7)) {
            let v = verifier("binding_headers = [\"X-B\"]\nquery_param = \"t\"");
            let joined = parts.join(".");
            for hdrs in [
                crate::http::Headers::from_iter([("Approov-Token", value.as_slice())]),
                crate::http::Headers::from_iter([("Approov-Token", joined.as_bytes()), ("X-B", value.as_slice())]),
                crate::http::Headers::from_iter([("Authorization", &format!("Bearer {joined}"))]),
            ] {
                let a = v.attest(&hdrs, &format!("/?t={joined}"), NOW);
                proptest::prop_assert!(a.verdict != Verdict::Valid);
                let _ = v.identify(&hdrs, NOW);
            }
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(&*percent_decode(b"a%2Eb%zz%4"), b"a.b%zz%4");
        assert_eq!(
            query_value("/p?a=1&t=x%2Ey#frag", "t").as_deref(),
            Some(&b"x.y"[..])
        );
        assert!(query_value("/p", "t").is_none());
    }
}
