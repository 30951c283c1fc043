//! Rules: the declarative detections operators read, tune and add without rebuilding.
//!
//! Input: a folder of YAML files (or the built-in pack embedded from `rules/`), each holding
//! `rules:` and optional `tests:` (schema in `rules/README.md`). Output: a compiled
//! [`RuleSet`] (matchers with compiled regexes, detector parameters as typed values,
//! summary templates) that `detect` runs, plus the test cases `shieldtap rules check` runs.
//! Every problem is reported as `file:line:col: message`, all of them at once, never a
//! panic; a set with any problem is rejected whole, so a reload keeps the old rules.
//! Limits: files are capped in size and count, thresholds and windows in range, so a rule
//! cannot ask for unbounded state.

mod schema;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use regex::RegexSet;
use serde_saphyr::Spanned;

use crate::token::Verdict;

pub use schema::{ExpectedActor, ExpectedAlert, TestTransaction};

impl PinnedRoute {
    pub(crate) fn new(
        template: String,
        segments: Vec<Option<String>>,
        owner: Option<(usize, Arc<str>)>,
        public: bool,
        expose_only: Option<Vec<String>>,
    ) -> PinnedRoute {
        PinnedRoute {
            template,
            segments,
            owner,
            public,
            expose_only,
        }
    }
}

/// The built-in pack: every YAML file of `rules/`, embedded at build time.
/// A unit test checks this list against the folder so no file is forgotten.
const BUILTIN: &[(&str, &str)] = &[
    ("bola.yaml", include_str!("../../rules/bola.yaml")),
    ("bots.yaml", include_str!("../../rules/bots.yaml")),
    (
        "data-exposure.yaml",
        include_str!("../../rules/data-exposure.yaml"),
    ),
    (
        "credential-stuffing.yaml",
        include_str!("../../rules/credential-stuffing.yaml"),
    ),
    ("scraping.yaml", include_str!("../../rules/scraping.yaml")),
    (
        "token-abuse.yaml",
        include_str!("../../rules/token-abuse.yaml"),
    ),
    (
        "tls-fingerprints.yaml",
        include_str!("../../rules/tls-fingerprints.yaml"),
    ),
];

/// Where the built-in pack's test captures are looked up (`rules/` of the source tree);
/// tests that need a capture are skipped with a notice when the binary runs elsewhere.
pub const BUILTIN_SOURCE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/rules");

/// Largest rule file read; a rules folder is configuration, not data.
const MAX_FILE_BYTES: u64 = 1 << 20;
/// Most rule files read from one folder.
const MAX_FILES: usize = 256;
/// Largest count or distinct threshold: detector state per key is bounded by it.
pub const MAX_THRESHOLD: u32 = 10_000;
/// Largest `threshold` of an `outlier` detector measuring `bytes` (1 GiB).
pub const MAX_BYTES_THRESHOLD: u32 = 1 << 30;
/// Longest detection window and suppression window.
const MAX_WINDOW_SECS: f64 = 7.0 * 86_400.0;

/// A rule id, e.g. `token.forged`: lowercase words joined by `.`, `-` or `_`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleId(Arc<str>);

impl RuleId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub use crate::severity::{Category, Severity};

/// A property of a request that rules group by or count distinct values of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyField {
    /// The client address (after trusted-proxy attribution).
    Ip,
    /// The attested device id.
    Device,
    /// The user id from the identity token.
    User,
    /// The attestation token, by hash.
    Token,
    /// `METHOD /route/{template}`.
    Endpoint,
    /// The concrete path (the object fetched), e.g. `/api/v1/users/42`.
    Object,
    /// The username tried on a login route (from a JSON or form body).
    Username,
    /// Who acts: the user when known, else the device, else the address.
    Principal,
    /// The set of sensitive field paths (and classes) a response exposed.
    FieldSet,
    /// The client's TLS fingerprint (JA4), from the handshake or the edge.
    Ja4,
}

impl KeyField {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyField::Ip => "ip",
            KeyField::Device => "device",
            KeyField::User => "user",
            KeyField::Token => "token",
            KeyField::Endpoint => "endpoint",
            KeyField::Object => "object",
            KeyField::Username => "username",
            KeyField::Principal => "principal",
            KeyField::FieldSet => "field_set",
            KeyField::Ja4 => "ja4",
        }
    }
}

/// What an alert's evidence may carry (each bounded, redacted).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceField {
    /// Counts by token verdict.
    Verdicts,
    /// Counts by endpoint (`METHOD /route`), the busiest first.
    Endpoints,
    /// Distinct client addresses.
    Addresses,
    /// Distinct device ids.
    Devices,
    /// Distinct users (masked when the id is personal data).
    Users,
    /// Distinct tokens, as short hashes.
    Tokens,
    /// Counts by token family.
    Families,
    /// Counts by response status.
    Statuses,
    /// The longest time past a token's `exp` seen.
    ExpiredForSecs,
    /// Distinct objects (concrete paths), redacted.
    Objects,
    /// Distinct usernames tried, masked.
    Usernames,
    /// Requests by how their objects relate to the principal (own, public, unknown, other)
    /// and how many were answered 2xx.
    Ownership,
    /// Other principals' objects touched, as `collection` and a short hash of the id.
    ForeignObjects,
    /// Sensitive field paths exposed, with their class and a masked sample.
    ExposedFields,
    /// Distinct TLS client fingerprints (JA4).
    Fingerprints,
}

// `Fingerprints` is the last field.
const _: () = assert!((EvidenceField::Fingerprints as u32) < 32);

impl EvidenceField {
    /// The field's bit in a rule's evidence mask (there are fewer than 32 fields).
    pub fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

/// Response status condition: an exact code or a class (`4xx`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusMatch {
    Code(u16),
    Class(u16),
}

impl StatusMatch {
    pub fn matches(self, status: u16) -> bool {
        match self {
            StatusMatch::Code(c) => c == status,
            StatusMatch::Class(c) => status / 100 == c,
        }
    }
}

/// What a rule looks at. Absent conditions match everything.
#[derive(Clone, Debug, Default)]
pub struct Matcher {
    /// Upper-case methods.
    pub methods: Option<Vec<String>>,
    /// Route globs and regexes, compiled together (a route matching any matches).
    pub routes: Option<RoutePatterns>,
    /// Host globs (lower-case, port stripped).
    pub hosts: Option<RegexSet>,
    pub status: Option<Vec<StatusMatch>>,
    /// Bit `1 << verdict as usize` set for each allowed verdict.
    pub verdicts: Option<u32>,
    pub families: Option<Vec<String>>,
    /// Only tokens used this long after their `exp` (needs verdict `expired`).
    pub expired_beyond_secs: Option<f64>,
    /// Only requests to (or not to) login routes (`[detect] login_routes`).
    pub login: Option<bool>,
    /// Only requests whose objects relate so to the principal (the worst of them).
    pub ownership: Option<Vec<crate::object::Ownership>>,
    /// Only requests whose 2xx answer carried (or did not) someone else's object.
    pub cross_user: Option<bool>,
    /// Only responses exposing (outside the route's `expose_only`) one of these classes.
    pub exposed_classes: Option<Vec<crate::exposure_class::Class>>,
    /// Only responses carrying at least this many records (the longest JSON array).
    pub min_records: Option<u32>,
    /// Only responses exposing (or not) a class the rule files deny everywhere
    /// (`deny_classes`).
    pub denied: Option<bool>,
    /// Only requests carrying (or not) the genuine app's attestation: `valid`, or expired
    /// within `[detect] refresh_grace_secs`.
    pub attested: Option<bool>,
    /// Only requests from (or not from) a shared address (many attested devices behind it).
    pub shared_address: Option<bool>,
    /// Only requests whose TLS fingerprint has one of these marks (`app`, `scripting`,
    /// `foreign`, `unknown`; bits of `detect::fingerprint`).
    pub fingerprint: Option<u8>,
}

impl Matcher {
    pub fn verdict_allowed(&self, v: Verdict) -> bool {
        self.verdicts.is_none_or(|bits| bits & verdict_bit(v) != 0)
    }
}

pub fn verdict_bit(v: Verdict) -> u32 {
    1 << (v as u32)
}

/// How matching requests become a finding: a kind, the key it groups by (one field or
/// several, e.g. `[ip, endpoint]`), a threshold and a window on packet time.
#[derive(Clone, Debug)]
pub struct Detector {
    pub kind: DetectorKind,
    pub group_by: Vec<KeyField>,
    pub threshold: u32,
    pub window: Duration,
}

#[derive(Clone, Debug)]
pub enum DetectorKind {
    /// `threshold` matching requests per key within the window.
    Threshold,
    /// `threshold` distinct values of a field per key within the window.
    Distinct(KeyField),
    /// At least `threshold` requests per key in the window, of which at least `ratio`
    /// also meet `when` (e.g. the share without a valid attestation).
    Ratio { ratio: f64, when: Matcher },
    /// At least `threshold` requests meeting `when` and `threshold` not meeting it from the
    /// same key within the window (e.g. one user both with and without attestation).
    Mixed { when: Matcher },
    /// Over the last `threshold` gaps between a key's requests: a coefficient of variation
    /// below `max_cv` (too regular) or a mean gap below `min_mean_gap` (too fast).
    Cadence {
        max_cv: Option<f64>,
        min_mean_gap: Option<Duration>,
    },
    /// `threshold` consecutive requests whose object number (last numeric path segment, or
    /// `page`/`offset`/`id` query parameter) steps by one, each within the window of the
    /// previous.
    Sequence,
    /// One key (a token, a device) alternating between values of `field` (addresses): a
    /// request from a value the key left at most `overlap` before, after a request from
    /// another, is a *return*; `threshold` returns within the window fire. A phone roaming
    /// Wi-Fi → cellular → Wi-Fi moves in sequence and comes back after minutes; a copy of
    /// its token used elsewhere at the same time interleaves within seconds. With `linger`,
    /// returns count only once the key has kept alternating for that long (returns at most
    /// `overlap` or `linger` apart, whichever is longer, are one alternation): a handover
    /// interleaves only while the old network lingers (Android keeps it 30 s) and the
    /// phone's old connections finish.
    Concurrent {
        field: KeyField,
        overlap: Duration,
        linger: Duration,
    },
    /// Requests per key per (tumbling) window above `factor` times the `quantile` of what
    /// keys of the same endpoint did in past windows, once `learn_min` windows were learned;
    /// and at least `threshold`.
    Baseline {
        factor: f64,
        quantile: f64,
        learn_min: u32,
    },
    /// Responses carrying more records (the longest JSON array), or more body bytes, than
    /// `factor` times the `quantile` of what the endpoint returned before (once `learn_min`
    /// responses were seen), and at least `threshold`: bulk exposure (`?limit=10000`).
    Outlier {
        factor: f64,
        quantile: f64,
        learn_min: u32,
        measure: Measure,
    },
}

/// What an `outlier` detector compares per response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Measure {
    /// Records: the longest JSON array of the body.
    Records,
    /// Body bytes on the wire (after de-chunking, before content decoding).
    Bytes,
}

impl DetectorKind {
    pub fn name(&self) -> &'static str {
        match self {
            DetectorKind::Threshold => "threshold",
            DetectorKind::Distinct(_) => "distinct",
            DetectorKind::Ratio { .. } => "ratio",
            DetectorKind::Mixed { .. } => "mixed",
            DetectorKind::Cadence { .. } => "cadence",
            DetectorKind::Sequence => "sequence",
            DetectorKind::Concurrent { .. } => "concurrent",
            DetectorKind::Baseline { .. } => "baseline",
            DetectorKind::Outlier { .. } => "outlier",
        }
    }
}

/// Detector kinds, for messages.
pub const DETECTOR_KINDS: &str =
    "threshold, distinct, ratio, mixed, cadence, sequence, concurrent, baseline, outlier";

/// A piece of a summary template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Field(Placeholder),
}

/// Values a summary can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placeholder {
    /// Events this alert aggregates.
    Count,
    /// Distinct values counted (distinct detectors), else the count.
    Distinct,
    Threshold,
    /// The window, e.g. `300s`.
    Window,
    /// The group key's value, redacted as outputs show it.
    Key,
    Ip,
    Device,
    User,
    Endpoint,
    /// `bad-signature x3, malformed x1`.
    Verdicts,
    /// Seconds past `exp` (the longest seen).
    ExpiredFor,
    /// Ratio detectors: the share of requests meeting `when`, as a percentage.
    Share,
    /// Cadence detectors: the mean gap between requests.
    MeanGap,
    /// Cadence detectors: the coefficient of variation of the gaps.
    Cv,
    /// Sequence detectors: the first and last object numbers of the walk.
    Run,
    /// Baseline detectors: the learned level the key exceeded.
    Baseline,
}

const PLACEHOLDERS: &[(&str, Placeholder)] = &[
    ("count", Placeholder::Count),
    ("distinct", Placeholder::Distinct),
    ("threshold", Placeholder::Threshold),
    ("window", Placeholder::Window),
    ("key", Placeholder::Key),
    ("ip", Placeholder::Ip),
    ("device", Placeholder::Device),
    ("user", Placeholder::User),
    ("endpoint", Placeholder::Endpoint),
    ("verdicts", Placeholder::Verdicts),
    ("expired_for", Placeholder::ExpiredFor),
    ("share", Placeholder::Share),
    ("mean_gap", Placeholder::MeanGap),
    ("cv", Placeholder::Cv),
    ("run", Placeholder::Run),
    ("baseline", Placeholder::Baseline),
];

/// A compiled rule.
#[derive(Clone, Debug)]
pub struct Rule {
    pub id: RuleId,
    pub description: String,
    pub category: Category,
    pub severity: Severity,
    pub matcher: Matcher,
    pub detector: Detector,
    /// After an alert, further matching requests of the same key are aggregated into one
    /// follow-up alert per this window instead of alerting again.
    pub suppress: Duration,
    pub summary: Vec<Piece>,
    pub evidence: Vec<EvidenceField>,
    /// `evidence` as one bit per field ([`EvidenceField::bit`]): episodes test it for
    /// every request a rule matches.
    pub evidence_mask: u32,
    /// `file:line` where the rule is defined.
    pub origin: String,
    /// Changes when anything that affects detection changes; a reload keeps detector
    /// state of rules whose fingerprint is unchanged.
    pub fingerprint: String,
    /// What enforcement does with the rule's alerts (`ban:`), unless config says otherwise.
    pub ban: Option<BanSpec>,
}

/// Marks of a request's TLS client fingerprint (the `fingerprint:` matcher), as bits; the
/// detect stage sets them (`detect::fingerprint`).
pub mod marks {
    pub const APP: u8 = 1;
    pub const SCRIPTING: u8 = 2;
    pub const FOREIGN: u8 = 4;
    pub const UNKNOWN: u8 = 8;
    /// The matcher's names and bits.
    pub const NAMES: [(&str, u8); 4] = [
        ("app", APP),
        ("scripting", SCRIPTING),
        ("foreign", FOREIGN),
        ("unknown", UNKNOWN),
    ];
}

/// Longest ban a rule may ask for: 30 days.
pub const MAX_BAN_SECS: f64 = 30.0 * 86_400.0;

/// Which key of an alert's actor a ban falls on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BanKey {
    /// The key the rule groups by: the device, the token (or the address of a token's
    /// copy), the user, or the address; never an address for an alert about a device or a
    /// token, and never an address many attested devices share.
    Auto,
    Device,
    Token,
    User,
    Ip,
}

impl BanKey {
    pub fn from_name(s: &str) -> Option<BanKey> {
        Some(match s {
            "auto" => BanKey::Auto,
            "device" => BanKey::Device,
            "token" => BanKey::Token,
            "user" => BanKey::User,
            "ip" => BanKey::Ip,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BanKey::Auto => "auto",
            BanKey::Device => "device",
            BanKey::Token => "token",
            BanKey::User => "user",
            BanKey::Ip => "ip",
        }
    }
}

/// A rule's (or config's) ban: on which key, for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BanSpec {
    pub key: BanKey,
    pub duration: Duration,
}

/// One test case of a rule file.
#[derive(Clone, Debug)]
pub struct RuleTest {
    pub name: String,
    /// `file:line` of the test.
    pub origin: String,
    pub input: TestInput,
    pub expect: Vec<ExpectedAlert>,
    /// The rules of the file the test belongs to; alerts of other rules are not judged.
    pub rules: Vec<RuleId>,
}

#[derive(Clone, Debug)]
pub enum TestInput {
    /// Requests fed straight to the detectors.
    Transactions(Vec<TestTransaction>),
    /// A capture replayed through the whole pipeline, with an optional config file.
    Capture {
        capture: PathBuf,
        config: Option<PathBuf>,
    },
}

/// A route template a rule file pins: `/api/v1/users/{user_id}/orders`. Matching paths
/// take it as their route; `owner` names the parameter holding the owning user's id;
/// `public` marks the route's objects as shared.
#[derive(Clone, Debug)]
pub struct PinnedRoute {
    pub template: String,
    /// Literal segments, `None` for a parameter.
    segments: Vec<Option<String>>,
    /// Index of the owner parameter's segment, and the collection of its object.
    owner: Option<(usize, Arc<str>)>,
    pub public: bool,
    /// The field paths the app uses: sensitive data elsewhere in the body is exposure.
    pub expose_only: Option<Vec<String>>,
}

/// What a pinned route found in a path.
pub struct PinnedMatch {
    /// The object the owner parameter names, whose owner is the user with that id.
    pub owner: Option<crate::object::ObjectRef>,
}

impl PinnedRoute {
    /// Whether `path` is this route (no allocation: workers and the detect thread test
    /// every request). Compared from the last segment: an API's paths share their first
    /// ones (`/api/v1/`), so a path that is not this route is told apart at once, where
    /// from the first it took two or three string compares.
    pub fn is_match(&self, path: &str) -> bool {
        let mut segs = crate::route::segments_from_end(path).filter(|s| !s.is_empty());
        for t in self.segments.iter().rev() {
            match (segs.next(), t) {
                (None, _) => return false,
                (Some(s), Some(lit)) if lit != s => return false,
                _ => {}
            }
        }
        segs.next().is_none()
    }

    pub fn matches(&self, path: &str) -> Option<PinnedMatch> {
        if !self.is_match(path) {
            return None;
        }
        Some(PinnedMatch {
            owner: self.owner.as_ref().and_then(|(i, c)| {
                let id = crate::route::segments(path)
                    .filter(|s| !s.is_empty())
                    .nth(*i)?;
                Some(crate::object::ObjectRef {
                    collection: c.clone(),
                    id: Arc::from(id),
                })
            }),
        })
    }
}

/// A validated, compiled set of rules (only enabled rules) and the tests that go with it.
#[derive(Clone, Debug, Default)]
pub struct RuleSet {
    pub rules: Vec<Arc<Rule>>,
    /// Route templates pinned by the rule files, in file order.
    pub routes: Vec<PinnedRoute>,
    /// Data classes declared (`deny_classes`, across files) never to leave; `None` when no
    /// file declares any (see [`RuleSet::denied`]).
    pub deny_classes: Option<Vec<crate::exposure_class::Class>>,
    pub disabled: Vec<RuleId>,
    pub tests: Vec<RuleTest>,
    /// Where the set came from: `built-in` or the folder.
    pub source: String,
    pub files: usize,
}

impl RuleSet {
    /// Classes that are exposure wherever they appear, even in fields a route's
    /// `expose_only` lists: the declared `deny_classes`, else password hashes and secrets.
    pub fn denied(&self) -> Vec<crate::exposure_class::Class> {
        use crate::exposure_class::Class;
        self.deny_classes
            .clone()
            .unwrap_or_else(|| vec![Class::PasswordHash, Class::Secret])
    }
}

/// One problem in a rule file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleError {
    pub file: String,
    pub line: u64,
    pub column: u64,
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )
        } else {
            write!(f, "{}: {}", self.file, self.message)
        }
    }
}

/// All problems found in a rules folder.
#[derive(Debug)]
pub struct RuleErrors(pub Vec<RuleError>);

impl fmt::Display for RuleErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RuleErrors {}

/// The built-in pack.
pub fn builtin() -> Result<RuleSet, RuleErrors> {
    let files: Vec<(String, String)> = BUILTIN
        .iter()
        .map(|(name, text)| (format!("rules/{name}"), (*text).to_string()))
        .collect();
    compile(&files, Path::new(BUILTIN_SOURCE_DIR), "built-in")
}

/// Loads every `*.yaml` / `*.yml` file of `dir` (not recursive), in name order.
pub fn load_dir(dir: &Path) -> Result<RuleSet, RuleErrors> {
    let shown = dir.display().to_string();
    let one = |message: String| {
        RuleErrors(vec![RuleError {
            file: shown.clone(),
            line: 0,
            column: 0,
            message,
        }])
    };
    let entries = std::fs::read_dir(dir).map_err(|e| one(format!("cannot read folder: {e}")))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension().is_some_and(|x| {
                    x.eq_ignore_ascii_case("yaml") || x.eq_ignore_ascii_case("yml")
                })
        })
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(one("no rule files (*.yaml) in the folder".into()));
    }
    if paths.len() > MAX_FILES {
        return Err(one(format!(
            "{} rule files; at most {MAX_FILES} are read",
            paths.len()
        )));
    }
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        let name = p.display().to_string();
        match std::fs::metadata(&p) {
            Ok(m) if m.len() > MAX_FILE_BYTES => errors.push(RuleError {
                file: name,
                line: 0,
                column: 0,
                message: format!(
                    "{} bytes; a rule file may hold at most {MAX_FILE_BYTES}",
                    m.len()
                ),
            }),
            _ => match std::fs::read_to_string(&p) {
                Ok(text) => files.push((name, text)),
                Err(e) => errors.push(RuleError {
                    file: name,
                    line: 0,
                    column: 0,
                    message: format!("cannot read: {e}"),
                }),
            },
        }
    }
    if !errors.is_empty() {
        return Err(RuleErrors(errors));
    }
    compile(&files, dir, &shown)
}

/// Validates and compiles rule files given as (name, text); `base` resolves test paths.
pub fn compile(
    files: &[(String, String)],
    base: &Path,
    source: &str,
) -> Result<RuleSet, RuleErrors> {
    let mut errors = Vec::new();
    let mut set = RuleSet {
        source: source.to_string(),
        files: files.len(),
        ..RuleSet::default()
    };
    let mut seen: HashMap<String, String> = HashMap::new();
    for (file, text) in files {
        let raw = match schema::parse_file(text) {
            Ok(raw) => raw,
            Err((line, column, message)) => {
                errors.push(RuleError {
                    file: file.clone(),
                    line,
                    column,
                    message,
                });
                continue;
            }
        };
        let mut ctx = schema::Ctx {
            file,
            errors: &mut errors,
        };
        let mut file_rules = Vec::new();
        // Every id the file defines, compiled or not: tests may expect only these (a rule
        // that failed to compile is already reported; its tests add no derived error).
        let mut file_ids: Vec<String> = Vec::new();
        for r in raw.rules {
            let id_pos = r.id.referenced;
            let id_text = r.id.value.clone();
            file_ids.push(id_text);
            let Some((rule, enabled)) = schema::compile_rule(&mut ctx, r) else {
                continue;
            };
            let here = format!("{file}:{}", id_pos.line());
            if let Some(first) = seen.get(rule.id.as_str()) {
                ctx.error(
                    id_pos,
                    format!("duplicate rule id `{}` (first defined at {first})", rule.id),
                );
                continue;
            }
            seen.insert(rule.id.as_str().to_string(), here);
            file_rules.push(rule.id.clone());
            if enabled {
                set.rules.push(Arc::new(rule));
            } else {
                set.disabled.push(rule.id);
            }
        }
        for r in raw.routes {
            if let Some(p) = schema::compile_route(&mut ctx, r) {
                set.routes.push(p);
            }
        }
        if let Some(d) = &raw.deny_classes {
            if d.value.is_empty() {
                ctx.error(
                    d.referenced,
                    "deny_classes: an empty list denies nothing; leave the key out for the default (password-hash, secret)"
                        .into(),
                );
            }
            let declared = set.deny_classes.get_or_insert_with(Vec::new);
            for c in schema::classes(&mut ctx, "deny_classes", &d.value) {
                if !declared.contains(&c) {
                    declared.push(c);
                }
            }
        }
        let dir = Path::new(file)
            .parent()
            .filter(|_| source != "built-in")
            .unwrap_or(base);
        for t in raw.tests {
            if let Some(test) = schema::compile_test(&mut ctx, t, dir, &file_rules) {
                // A test judges only its own file's rules, so it may expect only those.
                for e in &test.expect {
                    if !file_ids.contains(&e.rule.value) {
                        ctx.error(
                            e.rule.referenced,
                            format!(
                                "test `{}` expects an alert of rule `{}`, which this file does not define (a test judges its own file's rules)",
                                test.name, e.rule.value
                            ),
                        );
                    }
                }
                set.tests.push(test);
            }
        }
    }
    if errors.is_empty() {
        Ok(set)
    } else {
        errors.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
        Err(RuleErrors(errors))
    }
}

/// A rule's route patterns: the compiled set, and when every pattern is a glob that is a
/// literal prefix followed by `**` (`/**`, `/api/v1/**`), those prefixes. A route matches
/// such a glob exactly when it starts with the prefix and the rest holds no line feed
/// (the `.*` the glob compiles to stops at one), which answers without running the set:
/// a rule over every route (`bot.unattested-traffic`) ran it for every request, about
/// 400 instructions each.
#[derive(Clone, Debug)]
pub struct RoutePatterns {
    set: RegexSet,
    prefixes: Option<Vec<String>>,
}

impl RoutePatterns {
    /// `set` compiled from `patterns` (globs, or regexes written `re:...`), in order.
    pub fn new<'a>(set: RegexSet, patterns: impl IntoIterator<Item = &'a str>) -> RoutePatterns {
        let prefixes = patterns
            .into_iter()
            .map(|p| {
                let prefix = p.strip_suffix("**")?;
                (!p.starts_with("re:") && !prefix.contains('*')).then(|| prefix.to_string())
            })
            .collect::<Option<Vec<_>>>()
            .filter(|v| v.len() == set.len());
        RoutePatterns { set, prefixes }
    }

    pub fn is_match(&self, route: &str) -> bool {
        match &self.prefixes {
            Some(ps) => ps.iter().any(|p| {
                route
                    .strip_prefix(p.as_str())
                    .is_some_and(|rest| memchr::memchr(b'\n', rest.as_bytes()).is_none())
            }),
            None => self.set.is_match(route),
        }
    }
}

/// The regex a pattern of a rule or the enforce config stands for: `re:...` as written,
/// else a glob ([`glob_to_regex`]), in ASCII lower case first with `lower` (host globs).
pub fn pattern_regex(pattern: &str, segment_sep: char, lower: bool) -> String {
    match pattern.strip_prefix("re:") {
        Some(re) => re.to_string(),
        None if lower => glob_to_regex(&pattern.to_ascii_lowercase(), segment_sep),
        None => glob_to_regex(pattern, segment_sep),
    }
}

/// Compiles a route glob: `*` matches one path segment, `**` any number of segments,
/// `{id}` matches itself (routes are templated before matching).
pub fn glob_to_regex(glob: &str, segment_sep: char) -> String {
    let mut re = String::from("^");
    let mut chars = glob.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '*' {
            if chars.peek() == Some(&'*') {
                chars.next();
                re.push_str(".*");
            } else {
                re.push_str(&format!("[^{}]*", regex::escape(&segment_sep.to_string())));
            }
        } else {
            re.push_str(&regex::escape(&c.to_string()));
        }
    }
    re.push('$');
    re
}

fn lookup_placeholder(name: &str) -> Option<Placeholder> {
    PLACEHOLDERS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, p)| *p)
}

fn placeholder_names() -> String {
    PLACEHOLDERS
        .iter()
        .map(|(n, _)| format!("{{{n}}}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses a summary template; `Err` names the problem.
fn parse_template(text: &str) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            out.push(Piece::Text(rest[..open].to_string()));
        }
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err("summary: `{` without a closing `}`".into());
        };
        let name = &after[..close];
        match lookup_placeholder(name) {
            Some(p) => out.push(Piece::Field(p)),
            None => {
                return Err(format!(
                    "summary: unknown placeholder `{{{name}}}`; expected one of {}",
                    placeholder_names()
                ));
            }
        }
        rest = &after[close + 1..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest.to_string()));
    }
    Ok(out)
}

/// Seconds as a duration; zero for what no duration can be (negative, NaN, too large),
/// which the schema has already reported as an error by then (a rule file saying
/// `overlap_secs: -5` is refused, not a panic).
fn secs(v: f64) -> Duration {
    Duration::try_from_secs_f64(v).unwrap_or(Duration::ZERO)
}

/// Shared by the schema: a position-carrying value.
type S<T> = Spanned<T>;

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// A pinned route compared from its last segment matches exactly the paths it
        /// matches compared from its first (empty segments skipped either way).
        #[test]
        fn pinned_routes_match_as_compared_from_the_start(
            template in proptest::collection::vec(proptest::option::of("[ab]{1,2}"), 0..5),
            path in proptest::collection::vec("[ab]{0,2}", 0..6),
            slash in proptest::bool::ANY,
        ) {
            let route = PinnedRoute::new(String::new(), template.clone(), None, false, None);
            let path = format!("/{}{}", path.join("/"), if slash { "/" } else { "" });
            let forward = {
                let mut segs = crate::route::segments(&path).filter(|s| !s.is_empty());
                template.iter().all(|t| match (segs.next(), t) {
                    (None, _) => false,
                    (Some(s), Some(lit)) => lit == s,
                    (Some(_), None) => true,
                }) && segs.next().is_none()
            };
            proptest::prop_assert_eq!(route.is_match(&path), forward, "{:?} {}", template, path);
        }
    }

    fn one(yaml: &str) -> Result<RuleSet, RuleErrors> {
        compile(
            &[("t.yaml".to_string(), yaml.to_string())],
            Path::new("."),
            "test",
        )
    }

    const GOOD: &str = r#"rules:
  - id: token.forged
    description: Forged attestation tokens.
    category: token-forgery
    severity: high
    match:
      verdicts: [bad-signature, malformed]
      routes: ["/api/**"]
    detector:
      kind: threshold
      group_by: ip
      threshold: 2
      window_secs: 60
    suppress_secs: 300
    summary: "{ip} sent {count} forged tokens ({verdicts})"
    evidence: [verdicts, endpoints]
"#;

    #[test]
    fn builtin_pack_compiles_and_lists_every_file() {
        let set = builtin().unwrap_or_else(|e| panic!("{e}"));
        assert!(!set.rules.is_empty());
        let mut on_disk: Vec<String> = std::fs::read_dir(BUILTIN_SOURCE_DIR)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = BUILTIN.iter().map(|(n, _)| n.to_string()).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded, "rules/ and the BUILTIN list differ");
    }

    #[test]
    fn good_rule_compiles_to_typed_values() {
        let set = one(GOOD).unwrap_or_else(|e| panic!("{e}"));
        let r = &set.rules[0];
        assert_eq!(r.id.as_str(), "token.forged");
        assert_eq!(r.category, Category::TokenForgery);
        assert_eq!(r.severity, Severity::High);
        assert!(matches!(r.detector.kind, DetectorKind::Threshold));
        assert_eq!(r.detector.group_by, vec![KeyField::Ip]);
        assert_eq!(r.detector.threshold, 2);
        assert_eq!(r.detector.window, Duration::from_secs(60));
        assert_eq!(r.suppress, Duration::from_secs(300));
        assert!(r.matcher.verdict_allowed(Verdict::Malformed));
        assert!(!r.matcher.verdict_allowed(Verdict::Valid));
        let routes = r.matcher.routes.as_ref().unwrap();
        assert!(routes.is_match("/api/v1/users/{id}"));
        assert!(!routes.is_match("/health"));
        assert_eq!(r.origin, "t.yaml:2");
    }

    fn first_error(yaml: &str) -> String {
        match one(yaml) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.0[0].to_string(),
        }
    }

    #[test]
    fn errors_carry_file_line_and_column() {
        let e = first_error(&GOOD.replace("kind: threshold", "kind: thresold"));
        assert!(e.starts_with("t.yaml:10:13: "), "{e}");
        assert!(e.contains("unknown detector `thresold`"), "{e}");

        let e = first_error(&GOOD.replace("window_secs: 60", "window_secs: 0"));
        assert!(e.starts_with("t.yaml:13:20: "), "{e}");

        let e = first_error(&GOOD.replace("\"/api/**\"", "\"re:/api/(\""));
        assert!(e.starts_with("t.yaml:8:16: "), "{e}");
        assert!(e.contains("regex"), "{e}");

        let e = first_error(&GOOD.replace("severity: high", "severity: urgent"));
        assert!(e.starts_with("t.yaml:5:15: "), "{e}");

        let e = first_error(&GOOD.replace("{count}", "{cnt}"));
        assert!(e.contains("unknown placeholder `{cnt}`"), "{e}");
        assert!(e.starts_with("t.yaml:15:14: "), "{e}");
    }

    #[test]
    fn duplicate_ids_across_files_are_reported_at_the_second() {
        let files = vec![
            ("a.yaml".to_string(), GOOD.to_string()),
            ("b.yaml".to_string(), GOOD.to_string()),
        ];
        let e = compile(&files, Path::new("."), "test").unwrap_err();
        assert_eq!(e.0.len(), 1);
        assert_eq!(
            e.0[0].to_string(),
            "b.yaml:2:9: duplicate rule id `token.forged` (first defined at a.yaml:2)"
        );
    }

    #[test]
    fn all_problems_of_a_file_are_reported() {
        let bad = GOOD.replace("threshold: 2", "threshold: 0").replace(
            "category: token-forgery",
            "category: token-forgery\n    severity2: x",
        );
        let e = one(&bad).unwrap_err();
        // Unknown keys stop parsing of the file (schema error), so one error here...
        assert_eq!(e.0.len(), 1, "{e}");
        // ...but semantic problems are all collected.
        let bad = GOOD
            .replace("threshold: 2", "threshold: 0")
            .replace("window_secs: 60", "window_secs: -1");
        let e = one(&bad).unwrap_err();
        assert_eq!(e.0.len(), 2, "{e}");
    }

    #[test]
    fn alias_bombs_and_garbage_are_errors_not_hangs() {
        // "Billion laughs": 9 levels of 9 aliases would expand to 387 million strings.
        let mut bomb =
            String::from("a: &a [\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\"]\n");
        for (prev, cur) in ["a", "b", "c", "d", "e", "f", "g", "h"]
            .iter()
            .zip(["b", "c", "d", "e", "f", "g", "h", "i"])
        {
            bomb.push_str(&format!(
                "{cur}: &{cur} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
            ));
        }
        bomb.push_str("rules: *i\n");
        let started = std::time::Instant::now();
        assert!(one(&bomb).is_err());
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        for junk in ["", "rules: 3", "- - -", "rules:\n  - id: [", "\u{0}\u{1}"] {
            let _ = one(junk);
        }
    }

    /// The sets of `RoutePatterns` answer as their compiled regexes do, whether they take
    /// the prefix path (every pattern `<literal>**`) or not: routes with line feeds,
    /// non-ASCII text and the prefix's neighbours included.
    fn route_patterns_agree(
        patterns: &[String],
        route: &str,
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        let res: Vec<String> = patterns
            .iter()
            .map(|p| pattern_regex(p, '/', false))
            .collect();
        let set = RegexSet::new(&res).unwrap();
        let fast = RoutePatterns::new(set.clone(), patterns.iter().map(String::as_str));
        proptest::prop_assert_eq!(
            fast.is_match(route),
            set.is_match(route),
            "{:?} on {:?}",
            patterns,
            route
        );
        Ok(())
    }

    proptest::proptest! {
        #[test]
        fn route_patterns_answer_as_the_regex_set(
            patterns in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::string::string_regex("/[a-c/{}.]{0,6}\\*\\*").unwrap(),
                    proptest::string::string_regex("/[a-c/*]{0,6}").unwrap(),
                    proptest::strategy::Just("**".to_string()),
                    proptest::strategy::Just("re:^/a".to_string()),
                ],
                1..4,
            ),
            route in proptest::string::string_regex("/?[a-c/{}.\\n\\r\u{e9}*]{0,10}").unwrap(),
        ) {
            route_patterns_agree(&patterns, &route)?;
        }
    }

    #[test]
    fn prefix_route_patterns_skip_the_set_and_still_stop_at_a_line_feed() {
        let p = |ps: &[&str]| {
            let set = RegexSet::new(ps.iter().map(|g| glob_to_regex(g, '/'))).unwrap();
            RoutePatterns::new(set, ps.iter().copied())
        };
        let all = p(&["/**"]);
        assert!(all.prefixes.is_some());
        assert!(all.is_match("/api/v1/orders/{id}"));
        assert!(all.is_match("/"));
        assert!(!all.is_match("api"));
        assert!(!all.is_match("/a\nb"));
        let api = p(&["/api/**", "/v2/**"]);
        assert!(api.is_match("/v2/x") && api.is_match("/api/") && !api.is_match("/apix"));
        // A pattern with a wildcard before `**` keeps the whole set on the regexes.
        assert!(p(&["/api/*/x/**"]).prefixes.is_none());
        assert!(p(&["/**", "/health"]).prefixes.is_none());
    }

    #[test]
    fn globs_match_segments() {
        let re = regex::Regex::new(&glob_to_regex("/api/*/users/{id}", '/')).unwrap();
        assert!(re.is_match("/api/v1/users/{id}"));
        assert!(!re.is_match("/api/v1/x/users/{id}"));
        let re = regex::Regex::new(&glob_to_regex("*.example.com", '.')).unwrap();
        assert!(re.is_match("api.example.com"));
        assert!(!re.is_match("a.b.example.com"));
    }

    #[test]
    fn templates_parse() {
        assert_eq!(
            parse_template("{count} from {ip}").unwrap(),
            vec![
                Piece::Field(Placeholder::Count),
                Piece::Text(" from ".into()),
                Piece::Field(Placeholder::Ip)
            ]
        );
        assert!(parse_template("{count").is_err());
    }
}
