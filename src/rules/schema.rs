//! The rule file schema as YAML sees it (raw, position-carrying, unknown keys rejected) and
//! its validation into compiled rules and tests. The doc comments here are the schema's
//! reference; `rules/README.md` explains it for operators.

use std::net::IpAddr;
use std::path::Path;

use regex::RegexSet;
use serde::Deserialize;
use serde_saphyr::Location;

use super::{
    BanKey, BanSpec, Category, DETECTOR_KINDS, Detector, DetectorKind, EvidenceField, KeyField,
    MAX_BAN_SECS, MAX_BYTES_THRESHOLD, MAX_THRESHOLD, MAX_WINDOW_SECS, Matcher, Measure, Rule,
    RuleError, RuleId, RuleTest, S, Severity, StatusMatch, TestInput, parse_template, secs,
};
use crate::token::Verdict;

/// A rule file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    #[serde(default)]
    pub rules: Vec<RawRule>,
    #[serde(default)]
    pub tests: Vec<RawTest>,
    /// Route templates to pin (`/api/v1/users/{user_id}`), with ownership declarations.
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    /// Data classes that must never leave, whatever a route's `expose_only` says.
    pub deny_classes: Option<S<Vec<S<String>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    template: S<String>,
    /// The parameter holding the owning user's id: the object it names belongs to the
    /// user with that id.
    owner: Option<S<String>>,
    /// The route's objects are shared, never owned.
    #[serde(default)]
    public: bool,
    /// Field paths the app uses (`$.email`); sensitive data elsewhere is exposure.
    /// Password hashes and secrets are exposure wherever they are.
    expose_only: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    pub id: S<String>,
    description: S<String>,
    category: Category,
    severity: Severity,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default, rename = "match")]
    matcher: RawMatch,
    detector: RawDetector,
    /// Seconds; default: the detector window.
    suppress_secs: Option<S<f64>>,
    summary: S<String>,
    #[serde(default)]
    evidence: Vec<EvidenceField>,
    /// What enforcement does with the rule's alerts (`run` with `[enforce]`): ban the
    /// actor's key for a while. Config `[[enforce.ban]]` entries take precedence.
    ban: Option<S<RawBan>>,
}

/// `ban:` of a rule.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBan {
    /// `auto` (default), `device`, `token`, `user` or `ip`.
    #[serde(default)]
    key: Option<String>,
    /// How long the ban lasts (default 3600).
    duration_secs: Option<f64>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMatch {
    methods: Option<S<Vec<S<String>>>>,
    /// Route globs over the templated route (`/api/*/users/{id}`, `/api/**`), or regexes
    /// prefixed `re:`.
    routes: Option<S<Vec<S<String>>>>,
    /// Host globs (`*.example.com`), or regexes prefixed `re:`.
    hosts: Option<S<Vec<S<String>>>>,
    /// Status codes (`401`) or classes (`4xx`).
    status: Option<S<Vec<S<String>>>>,
    /// Token verdicts (INTERFACE.md names).
    verdicts: Option<S<Vec<S<String>>>>,
    /// Token family names (`[[attestation]] name`).
    families: Option<S<Vec<String>>>,
    /// Only tokens used more than this many seconds after their `exp`.
    expired_beyond_secs: Option<S<f64>>,
    /// Only requests to (true) or not to (false) login routes (`[detect] login_routes`).
    login: Option<bool>,
    /// Only requests whose objects relate so to the principal: own, public, unknown,
    /// other, none (the worst of its objects).
    ownership: Option<S<Vec<S<String>>>>,
    /// Only requests whose 2xx answer carried someone else's object (true), or not.
    cross_user: Option<bool>,
    /// Only responses exposing one of these classes outside the route's `expose_only`.
    exposed_classes: Option<S<Vec<S<String>>>>,
    /// Only responses carrying at least this many records.
    min_records: Option<u32>,
    /// Only responses exposing (true) or not (false) a class of `deny_classes`.
    denied: Option<bool>,
    /// Only requests carrying (true) or not carrying (false) the genuine app's attestation
    /// (`valid`, or expired within `[detect] refresh_grace_secs`).
    attested: Option<bool>,
    /// Only requests from (true) or not from (false) a shared address (carrier NAT, proxy:
    /// many attested devices behind it).
    shared_address: Option<bool>,
    /// Only requests whose TLS fingerprint (JA4) is marked so: `app` (the app's valid tokens
    /// use it), `scripting` (a known scripting library), `foreign` (a valid token whose
    /// device uses the app's fingerprint elsewhere), `unknown` (not the app's).
    fingerprint: Option<S<Vec<S<String>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDetector {
    /// threshold, distinct, ratio, mixed, cadence, sequence or baseline.
    kind: S<String>,
    /// One field or a list (`[ip, endpoint]`): the key windows are kept per.
    group_by: S<GroupBy>,
    /// `distinct`: what to count distinct values of.
    distinct: Option<S<KeyField>>,
    threshold: S<i64>,
    window_secs: S<f64>,
    /// `ratio`: the least share (0 to 1) of requests meeting `when`.
    ratio: Option<S<f64>>,
    /// `ratio`, `mixed`: which requests are the ones of interest.
    when: Option<S<RawMatch>>,
    /// `cadence`: fire when the gaps' coefficient of variation is below this.
    max_cv: Option<S<f64>>,
    /// `cadence`: fire when the mean gap is below this many seconds.
    min_mean_gap_secs: Option<S<f64>>,
    /// `baseline`: how many times the learned level a key must exceed (default 3).
    factor: Option<S<f64>>,
    /// `baseline`: which quantile of past per-key counts is the learned level (default 0.99).
    quantile: Option<S<f64>>,
    /// `baseline`: windows to learn from before judging (default 50).
    learn_min_windows: Option<S<i64>>,
    /// `outlier`: responses to learn from before judging (default 50).
    learn_min_samples: Option<S<i64>>,
    /// `outlier`: what is compared, `records` (default) or `bytes`.
    measure: Option<S<String>>,
    /// `concurrent`: a key coming back to a value it left at most this many seconds
    /// before counts as concurrent use.
    overlap_secs: Option<S<f64>>,
    /// `concurrent`: returns count only once the key has kept alternating this long (a
    /// handover's old network lingers; default 0, every return counts).
    linger_secs: Option<S<f64>>,
}

/// `group_by: ip` or `group_by: [ip, endpoint]`.
struct GroupBy(Vec<KeyField>);

impl<'de> Deserialize<'de> for GroupBy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(KeyField),
            Many(Vec<KeyField>),
        }
        match OneOrMany::deserialize(d) {
            Ok(OneOrMany::One(k)) => Ok(GroupBy(vec![k])),
            Ok(OneOrMany::Many(v)) => Ok(GroupBy(v)),
            Err(_) => Err(serde::de::Error::custom(
                "group_by: expected one of ip, device, user, token, endpoint, object, username, principal, field_set, or a list of them",
            )),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTest {
    name: S<String>,
    /// Requests fed straight to the detectors, in order.
    transactions: Option<Vec<super::TestTransaction>>,
    /// A capture (relative to the rule file) replayed through the whole pipeline.
    capture: Option<S<String>>,
    /// A config file for the capture (relative to the rule file): token keys etc.
    config: Option<String>,
    #[serde(default)]
    expect: Vec<ExpectedAlert>,
}

/// A request in a test case: what the detectors see of a transaction.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestTransaction {
    /// Seconds after the test's start (2026-01-01T00:00:00Z).
    pub at: f64,
    pub ip: IpAddr,
    #[serde(default = "get")]
    pub method: String,
    #[serde(default = "slash")]
    pub path: String,
    pub host: Option<String>,
    pub status: Option<u16>,
    /// Token verdict; default `missing`.
    pub verdict: Option<String>,
    #[serde(default = "approov")]
    pub family: String,
    pub device: Option<String>,
    /// A label standing for the token; equal labels are the same token.
    pub token: Option<String>,
    pub user: Option<String>,
    /// For expired tokens: seconds past `exp`.
    pub expired_for_secs: Option<f64>,
    /// On login routes: the username tried.
    pub username: Option<String>,
    /// The route is a login route; default: as the default `[detect] login_routes` say.
    pub login: Option<bool>,
    /// Objects its response returned, as `collection:id` (`order:5001`).
    #[serde(default)]
    pub returns: Vec<String>,
    /// The JSON response body, scanned for sensitive data as a real one would be.
    pub body: Option<serde_json::Value>,
    /// The client's TLS fingerprint (JA4), as the edge or the handshake gives it.
    pub ja4: Option<String>,
}

fn get() -> String {
    "GET".into()
}
fn slash() -> String {
    "/".into()
}
fn approov() -> String {
    "approov".into()
}

/// An alert a test expects; fields left out are not compared.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedAlert {
    pub rule: S<String>,
    pub actor: Option<ExpectedActor>,
    pub count: Option<u64>,
    pub severity: Option<Severity>,
    pub endpoint: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedActor {
    pub ip: Option<String>,
    pub device: Option<String>,
    pub user: Option<String>,
}

/// Parses a file's YAML; `Err((line, column, message))`.
pub(super) fn parse_file(text: &str) -> Result<RawFile, (u64, u64, String)> {
    serde_saphyr::from_str::<RawFile>(text).map_err(|e| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        (
            line,
            column,
            strip_location(&e.without_snippet().to_string()),
        )
    })
}

/// serde-saphyr appends " at line N, column M"; the position is printed in front instead.
fn strip_location(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

pub(super) struct Ctx<'a> {
    pub file: &'a str,
    pub errors: &'a mut Vec<RuleError>,
}

impl Ctx<'_> {
    pub fn error(&mut self, at: Location, message: String) {
        self.errors.push(RuleError {
            file: self.file.to_string(),
            line: at.line(),
            column: at.column(),
            message,
        });
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'))
}

/// Validates one rule, recording every problem; `Some((rule, enabled))` when it has none.
pub(super) fn compile_rule(ctx: &mut Ctx<'_>, r: RawRule) -> Option<(Rule, bool)> {
    let before = ctx.errors.len();
    if !valid_id(&r.id.value) {
        ctx.error(
            r.id.referenced,
            format!(
                "id `{}`: expected 1 to 64 lower-case letters, digits, `.`, `-` or `_`, starting with a letter",
                r.id.value
            ),
        );
    }
    if r.description.value.trim().is_empty() {
        ctx.error(
            r.description.referenced,
            "description: must say what the rule finds".into(),
        );
    }
    let matcher = compile_match(ctx, &r.matcher);
    let detector = compile_detector(ctx, &r.detector);
    let suppress = match &r.suppress_secs {
        None => detector.as_ref().map(|d| d.window).unwrap_or_default(),
        Some(s) if s.value.is_finite() && (0.0..=MAX_WINDOW_SECS).contains(&s.value) => {
            secs(s.value)
        }
        Some(s) => {
            ctx.error(
                s.referenced,
                format!(
                    "suppress_secs: expected 0 to {MAX_WINDOW_SECS} seconds, got {}",
                    s.value
                ),
            );
            Default::default()
        }
    };
    let summary = match parse_template(&r.summary.value) {
        Ok(p) => p,
        Err(e) => {
            ctx.error(r.summary.referenced, e);
            Vec::new()
        }
    };
    let ban = r.ban.as_ref().and_then(|b| {
        let key = match b.value.key.as_deref().map(BanKey::from_name) {
            None => Some(BanKey::Auto),
            Some(Some(k)) => Some(k),
            Some(None) => {
                ctx.error(
                    b.referenced,
                    "ban.key: expected auto, device, token, user or ip".into(),
                );
                None
            }
        };
        let secs_ok = |s: f64| s.is_finite() && (1.0..=MAX_BAN_SECS).contains(&s);
        let duration = match b.value.duration_secs {
            None => Some(secs(3600.0)),
            Some(s) if secs_ok(s) => Some(secs(s)),
            Some(s) => {
                ctx.error(
                    b.referenced,
                    format!("ban.duration_secs: expected 1 to {MAX_BAN_SECS} seconds, got {s}"),
                );
                None
            }
        };
        Some(BanSpec {
            key: key?,
            duration: duration?,
        })
    });
    if ctx.errors.len() > before {
        return None;
    }
    let detector = detector?;
    let fingerprint = format!(
        "{:?}|{:?}|{:?}",
        matcher_fingerprint(&r.matcher),
        detector,
        suppress
    );
    Some((
        Rule {
            id: RuleId(r.id.value.as_str().into()),
            description: r.description.value.trim().to_string(),
            category: r.category,
            severity: r.severity,
            matcher,
            detector,
            suppress,
            summary,
            evidence_mask: r.evidence.iter().fold(0, |m, f| m | f.bit()),
            evidence: r.evidence,
            origin: format!("{}:{}", ctx.file, r.id.referenced.line()),
            fingerprint,
            ban,
        },
        r.enabled,
    ))
}

fn matcher_fingerprint(m: &RawMatch) -> String {
    let strs = |v: &Option<S<Vec<S<String>>>>| {
        v.as_ref()
            .map(|v| v.value.iter().map(|s| s.value.clone()).collect::<Vec<_>>())
    };
    format!(
        "{:?}{:?}{:?}{:?}{:?}{:?}{:?}{:?}{:?}{:?}{:?}{:?}{:?}{:?}{:?}{:?}",
        strs(&m.fingerprint),
        strs(&m.methods),
        strs(&m.routes),
        strs(&m.hosts),
        strs(&m.status),
        strs(&m.verdicts),
        m.families.as_ref().map(|f| &f.value),
        m.expired_beyond_secs.as_ref().map(|s| s.value),
        m.login,
        strs(&m.ownership),
        m.cross_user,
        strs(&m.exposed_classes),
        m.min_records,
        m.denied,
        m.attested,
        m.shared_address
    )
}

/// Data class names (`password-hash`); an unknown one is an error at its position.
pub(super) fn classes(
    ctx: &mut Ctx<'_>,
    key: &str,
    names: &[S<String>],
) -> Vec<crate::exposure_class::Class> {
    let mut v = Vec::new();
    for s in names {
        match crate::exposure_class::Class::from_name(&s.value) {
            Some(c) => v.push(c),
            None => ctx.error(
                s.referenced,
                format!(
                    "{key}: unknown class `{}`; expected one of {}",
                    s.value,
                    crate::exposure_class::Class::ALL
                        .map(|c| c.as_str())
                        .join(", ")
                ),
            ),
        }
    }
    v
}

fn compile_patterns(
    ctx: &mut Ctx<'_>,
    key: &str,
    pats: &[S<String>],
    sep: char,
    lower: bool,
) -> Option<RegexSet> {
    let mut res = Vec::new();
    for p in pats {
        let re = super::pattern_regex(&p.value, sep, lower);
        match regex::Regex::new(&re) {
            Ok(_) => res.push(re),
            Err(e) => ctx.error(
                p.referenced,
                format!(
                    "{key}: bad regex `{}`: {}",
                    p.value,
                    first_line(&e.to_string())
                ),
            ),
        }
    }
    if pats.is_empty() {
        ctx.error(
            Location::UNKNOWN,
            format!("{key}: empty list matches nothing"),
        );
    }
    RegexSet::new(&res).ok()
}

fn first_line(s: &str) -> String {
    let line = s
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or(s)
        .trim();
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}

fn compile_match(ctx: &mut Ctx<'_>, m: &RawMatch) -> Matcher {
    let mut out = Matcher::default();
    let mut not_empty = |key: &str, at: Option<(Location, bool)>| {
        if let Some((at, true)) = at {
            ctx.error(
                at,
                format!(
                    "{key}: an empty list matches nothing; leave the key out to match everything"
                ),
            );
        }
    };
    let empty =
        |v: &Option<S<Vec<S<String>>>>| v.as_ref().map(|v| (v.referenced, v.value.is_empty()));
    not_empty("methods", empty(&m.methods));
    not_empty("routes", empty(&m.routes));
    not_empty("hosts", empty(&m.hosts));
    not_empty("status", empty(&m.status));
    not_empty("verdicts", empty(&m.verdicts));
    not_empty("ownership", empty(&m.ownership));
    not_empty("exposed_classes", empty(&m.exposed_classes));
    not_empty(
        "families",
        m.families
            .as_ref()
            .map(|v| (v.referenced, v.value.is_empty())),
    );
    if let Some(ms) = &m.methods {
        let mut v = Vec::new();
        for s in &ms.value {
            let up = s.value.to_ascii_uppercase();
            if up.is_empty() || !up.bytes().all(|b| b.is_ascii_uppercase()) {
                ctx.error(
                    s.referenced,
                    format!("methods: `{}` is not an HTTP method", s.value),
                );
            }
            v.push(up);
        }
        out.methods = Some(v);
    }
    if let Some(rs) = &m.routes {
        out.routes = compile_patterns(ctx, "routes", &rs.value, '/', false)
            .map(|set| super::RoutePatterns::new(set, rs.value.iter().map(|p| p.value.as_str())));
    }
    if let Some(hs) = &m.hosts {
        out.hosts = compile_patterns(ctx, "hosts", &hs.value, '.', true);
    }
    if let Some(ss) = &m.status {
        let mut v = Vec::new();
        for s in &ss.value {
            let t = s.value.trim().to_ascii_lowercase();
            let parsed = if let Some(c) = t.strip_suffix("xx") {
                c.parse::<u16>()
                    .ok()
                    .filter(|c| (1..=5).contains(c))
                    .map(StatusMatch::Class)
            } else {
                t.parse::<u16>()
                    .ok()
                    .filter(|c| (100..=599).contains(c))
                    .map(StatusMatch::Code)
            };
            match parsed {
                Some(p) => v.push(p),
                None => ctx.error(
                    s.referenced,
                    format!(
                        "status: `{}`: expected a code 100-599 or a class 1xx-5xx",
                        s.value
                    ),
                ),
            }
        }
        out.status = Some(v);
    }
    if let Some(vs) = &m.verdicts {
        let mut bits = 0u32;
        for s in &vs.value {
            match Verdict::from_name(&s.value) {
                Some(v) => bits |= super::verdict_bit(v),
                None => ctx.error(
                    s.referenced,
                    format!(
                        "verdicts: unknown verdict `{}`; expected one of {}",
                        s.value,
                        Verdict::ALL.map(Verdict::as_str).join(", ")
                    ),
                ),
            }
        }
        out.verdicts = Some(bits);
    }
    out.families = m.families.as_ref().map(|f| f.value.clone());
    out.login = m.login;
    out.cross_user = m.cross_user;
    out.min_records = m.min_records;
    out.denied = m.denied;
    out.attested = m.attested;
    out.shared_address = m.shared_address;
    if let Some(fp) = &m.fingerprint {
        let mut bits = 0u8;
        for name in &fp.value {
            match super::marks::NAMES.iter().find(|(n, _)| *n == name.value) {
                Some((_, b)) => bits |= b,
                None => ctx.error(
                    name.referenced,
                    format!(
                        "fingerprint: `{}` is not a mark (app, scripting, foreign, unknown)",
                        name.value
                    ),
                ),
            }
        }
        out.fingerprint = Some(bits);
    }
    if let Some(cs) = &m.exposed_classes {
        out.exposed_classes = Some(classes(ctx, "exposed_classes", &cs.value));
    }
    if let Some(os) = &m.ownership {
        let mut v = Vec::new();
        for s in &os.value {
            match crate::object::Ownership::from_name(&s.value) {
                Some(o) => v.push(o),
                None => ctx.error(
                    s.referenced,
                    format!(
                        "ownership: `{}`: expected own, public, unclaimed, unknown, other or none",
                        s.value
                    ),
                ),
            }
        }
        out.ownership = Some(v);
    }
    if let Some(e) = &m.expired_beyond_secs {
        if !(e.value.is_finite() && (0.0..=MAX_WINDOW_SECS).contains(&e.value)) {
            ctx.error(
                e.referenced,
                format!("expired_beyond_secs: expected 0 to {MAX_WINDOW_SECS} seconds"),
            );
        } else if !out.verdict_allowed(Verdict::Expired) {
            ctx.error(
                e.referenced,
                "expired_beyond_secs: can never match, `verdicts` does not include `expired`"
                    .into(),
            );
        }
        out.expired_beyond_secs = Some(e.value);
    }
    out
}

fn compile_detector(ctx: &mut Ctx<'_>, d: &RawDetector) -> Option<Detector> {
    let before = ctx.errors.len();
    let window = d.window_secs.value;
    if !(window.is_finite() && window > 0.0 && window <= MAX_WINDOW_SECS) {
        ctx.error(
            d.window_secs.referenced,
            format!("window_secs: expected more than 0 and at most {MAX_WINDOW_SECS} seconds, got {window}"),
        );
    }
    let kind_name = d.kind.value.as_str();
    let threshold = d.threshold.value;
    let bytes = kind_name == "outlier" && d.measure.as_ref().is_some_and(|m| m.value == "bytes");
    let (min, max) = match kind_name {
        "distinct" | "cadence" | "sequence" | "mixed" => (2, i64::from(MAX_THRESHOLD)),
        "concurrent" => (1, 1000),
        // A body size: up to 1 GiB.
        _ if bytes => (1, i64::from(MAX_BYTES_THRESHOLD)),
        _ => (1, i64::from(MAX_THRESHOLD)),
    };
    let max = if kind_name == "cadence" { 1024 } else { max };
    if !(min..=max).contains(&threshold) {
        ctx.error(
            d.threshold.referenced,
            format!("threshold: expected {min} to {max} for `{kind_name}`, got {threshold}"),
        );
    }
    let group_by = d.group_by.value.0.clone();
    if group_by.is_empty() || group_by.len() > 3 {
        ctx.error(
            d.group_by.referenced,
            "group_by: expected 1 to 3 fields".into(),
        );
    }
    for (i, k) in group_by.iter().enumerate() {
        if group_by[..i].contains(k) {
            ctx.error(
                d.group_by.referenced,
                format!("group_by: `{}` listed twice", k.as_str()),
            );
        }
    }
    // Parameters of other kinds are mistakes, not silently ignored settings.
    let mut only_for = |present: Option<Location>, key: &str, kinds: &[&str]| {
        if let Some(at) = present
            && !kinds.contains(&kind_name)
        {
            ctx.error(
                at,
                format!("{key}: only for `kind: {}`", kinds.join("` or `kind: ")),
            );
        }
    };
    only_for(
        d.distinct.as_ref().map(|x| x.referenced),
        "distinct",
        &["distinct", "concurrent"],
    );
    only_for(
        d.overlap_secs.as_ref().map(|x| x.referenced),
        "overlap_secs",
        &["concurrent"],
    );
    only_for(
        d.linger_secs.as_ref().map(|x| x.referenced),
        "linger_secs",
        &["concurrent"],
    );
    only_for(d.ratio.as_ref().map(|x| x.referenced), "ratio", &["ratio"]);
    only_for(
        d.when.as_ref().map(|x| x.referenced),
        "when",
        &["ratio", "mixed"],
    );
    only_for(
        d.max_cv.as_ref().map(|x| x.referenced),
        "max_cv",
        &["cadence"],
    );
    only_for(
        d.min_mean_gap_secs.as_ref().map(|x| x.referenced),
        "min_mean_gap_secs",
        &["cadence"],
    );
    only_for(
        d.factor.as_ref().map(|x| x.referenced),
        "factor",
        &["baseline", "outlier"],
    );
    only_for(
        d.quantile.as_ref().map(|x| x.referenced),
        "quantile",
        &["baseline", "outlier"],
    );
    only_for(
        d.learn_min_samples.as_ref().map(|x| x.referenced),
        "learn_min_samples",
        &["outlier"],
    );
    only_for(
        d.learn_min_windows.as_ref().map(|x| x.referenced),
        "learn_min_windows",
        &["baseline"],
    );
    only_for(
        d.measure.as_ref().map(|x| x.referenced),
        "measure",
        &["outlier"],
    );
    let when = |ctx: &mut Ctx<'_>| -> Option<Matcher> {
        match &d.when {
            Some(w) => Some(compile_match(ctx, &w.value)),
            None => {
                ctx.error(
                    d.kind.referenced,
                    format!("detector: `kind: {kind_name}` needs `when:` (which requests count)"),
                );
                None
            }
        }
    };
    let in_range = |ctx: &mut Ctx<'_>, v: &Option<S<f64>>, key: &str, lo: f64, hi: f64| {
        if let Some(x) = v
            && !(x.value.is_finite() && x.value > lo && x.value <= hi)
        {
            ctx.error(
                x.referenced,
                format!(
                    "{key}: expected more than {lo} and at most {hi}, got {}",
                    x.value
                ),
            );
        }
        v.as_ref().map(|x| x.value)
    };
    let kind = match kind_name {
        "threshold" => DetectorKind::Threshold,
        "distinct" => {
            let Some(distinct) = &d.distinct else {
                ctx.error(
                    d.kind.referenced,
                    "detector: `kind: distinct` needs `distinct:` (ip, device, user, token, endpoint, object or username)"
                        .into(),
                );
                return None;
            };
            if group_by.contains(&distinct.value) {
                ctx.error(
                    distinct.referenced,
                    format!(
                        "distinct: counting distinct `{}` per key that contains it is always 1",
                        distinct.value.as_str()
                    ),
                );
            }
            DetectorKind::Distinct(distinct.value)
        }
        "ratio" => {
            let Some(ratio) = in_range(ctx, &d.ratio, "ratio", 0.0, 1.0) else {
                ctx.error(
                    d.kind.referenced,
                    "detector: `kind: ratio` needs `ratio:` (0 to 1)".into(),
                );
                return None;
            };
            DetectorKind::Ratio {
                ratio,
                when: when(ctx)?,
            }
        }
        "mixed" => DetectorKind::Mixed { when: when(ctx)? },
        "cadence" => {
            let max_cv = in_range(ctx, &d.max_cv, "max_cv", 0.0, 10.0);
            let gap = in_range(ctx, &d.min_mean_gap_secs, "min_mean_gap_secs", 0.0, 3600.0);
            if max_cv.is_none() && gap.is_none() {
                ctx.error(
                    d.kind.referenced,
                    "detector: `kind: cadence` needs `max_cv:`, `min_mean_gap_secs:` or both"
                        .into(),
                );
            }
            DetectorKind::Cadence {
                max_cv,
                min_mean_gap: gap.map(secs),
            }
        }
        "sequence" => DetectorKind::Sequence,
        "concurrent" => {
            let Some(field) = &d.distinct else {
                ctx.error(
                    d.kind.referenced,
                    "detector: `kind: concurrent` needs `distinct:` (the field that alternates, e.g. ip)"
                        .into(),
                );
                return None;
            };
            if group_by.contains(&field.value) {
                ctx.error(
                    field.referenced,
                    format!(
                        "distinct: a key that contains `{}` never alternates between its values",
                        field.value.as_str()
                    ),
                );
            }
            let Some(overlap) = in_range(ctx, &d.overlap_secs, "overlap_secs", 0.0, 3600.0) else {
                ctx.error(
                    d.kind.referenced,
                    "detector: `kind: concurrent` needs `overlap_secs:` (more than 0, at most 3600)"
                        .into(),
                );
                return None;
            };
            let linger = in_range(ctx, &d.linger_secs, "linger_secs", 0.0, 3600.0);
            DetectorKind::Concurrent {
                field: field.value,
                overlap: secs(overlap),
                linger: linger.map_or(std::time::Duration::ZERO, secs),
            }
        }
        "baseline" => {
            let learn_min = d.learn_min_windows.as_ref().map_or(50, |x| x.value);
            if !(1..=1_000_000).contains(&learn_min)
                && let Some(x) = &d.learn_min_windows
            {
                ctx.error(
                    x.referenced,
                    format!("learn_min_windows: expected 1 to 1000000, got {learn_min}"),
                );
            }
            if !group_by.contains(&KeyField::Endpoint) {
                ctx.error(
                    d.group_by.referenced,
                    "group_by: `kind: baseline` learns per endpoint, so the key must include `endpoint`"
                        .into(),
                );
            }
            DetectorKind::Baseline {
                factor: in_range(ctx, &d.factor, "factor", 0.0, 1000.0).unwrap_or(3.0),
                quantile: in_range(ctx, &d.quantile, "quantile", 0.0, 1.0).unwrap_or(0.99),
                learn_min: learn_min.clamp(1, 1_000_000) as u32,
            }
        }
        "outlier" => {
            let learn_min = d.learn_min_samples.as_ref().map_or(50, |x| x.value);
            if !(1..=1_000_000).contains(&learn_min)
                && let Some(x) = &d.learn_min_samples
            {
                ctx.error(
                    x.referenced,
                    format!("learn_min_samples: expected 1 to 1000000, got {learn_min}"),
                );
            }
            if !group_by.contains(&KeyField::Endpoint) {
                ctx.error(
                    d.group_by.referenced,
                    "group_by: `kind: outlier` learns per endpoint, so the key must include `endpoint`"
                        .into(),
                );
            }
            let measure = match d.measure.as_ref().map(|m| (m.value.as_str(), m.referenced)) {
                None | Some(("records", _)) => Measure::Records,
                Some(("bytes", _)) => Measure::Bytes,
                Some((other, at)) => {
                    ctx.error(
                        at,
                        format!("measure: expected `records` or `bytes`, got `{other}`"),
                    );
                    Measure::Records
                }
            };
            DetectorKind::Outlier {
                factor: in_range(ctx, &d.factor, "factor", 0.0, 1000.0).unwrap_or(10.0),
                quantile: in_range(ctx, &d.quantile, "quantile", 0.0, 1.0).unwrap_or(0.99),
                learn_min: learn_min.clamp(1, 1_000_000) as u32,
                measure,
            }
        }
        other => {
            ctx.error(
                d.kind.referenced,
                format!("unknown detector `{other}`; expected one of {DETECTOR_KINDS}"),
            );
            return None;
        }
    };
    (ctx.errors.len() == before).then(|| Detector {
        kind,
        group_by,
        threshold: threshold.clamp(0, i64::from(MAX_BYTES_THRESHOLD)) as u32,
        window: secs(window.clamp(0.0, MAX_WINDOW_SECS)),
    })
}

pub(super) fn compile_test(
    ctx: &mut Ctx<'_>,
    t: RawTest,
    dir: &Path,
    rules: &[RuleId],
) -> Option<RuleTest> {
    let origin = format!("{}:{}", ctx.file, t.name.referenced.line());
    let input = match (t.transactions, t.capture) {
        (Some(txs), None) => {
            for tx in &txs {
                if let Some(v) = &tx.verdict
                    && Verdict::from_name(v).is_none()
                {
                    ctx.error(
                        t.name.referenced,
                        format!("test `{}`: unknown verdict `{v}`", t.name.value),
                    );
                    return None;
                }
                if !(tx.at.is_finite() && (0.0..1e9).contains(&tx.at)) {
                    ctx.error(
                        t.name.referenced,
                        format!("test `{}`: `at` must be 0 or more seconds", t.name.value),
                    );
                    return None;
                }
            }
            TestInput::Transactions(txs)
        }
        (None, Some(cap)) => TestInput::Capture {
            capture: dir.join(&cap.value),
            config: t.config.map(|c| dir.join(c)),
        },
        _ => {
            ctx.error(
                t.name.referenced,
                format!(
                    "test `{}`: give exactly one of `transactions` or `capture`",
                    t.name.value
                ),
            );
            return None;
        }
    };
    Some(RuleTest {
        name: t.name.value,
        origin,
        input,
        expect: t.expect,
        rules: rules.to_vec(),
    })
}

pub(super) fn compile_route(ctx: &mut Ctx<'_>, r: RawRoute) -> Option<super::PinnedRoute> {
    let t = r.template.value.trim();
    if !t.starts_with('/') {
        ctx.error(
            r.template.referenced,
            "template: expected a path starting with `/`".into(),
        );
        return None;
    }
    let mut segments = Vec::new();
    let mut names = Vec::new();
    for seg in t.split('/').filter(|s| !s.is_empty()) {
        match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(name) if !name.is_empty() => {
                segments.push(None);
                names.push((segments.len() - 1, name.to_string()));
            }
            Some(_) => {
                ctx.error(
                    r.template.referenced,
                    "template: empty `{}` parameter".into(),
                );
                return None;
            }
            None => segments.push(Some(seg.to_string())),
        }
    }
    let owner = match &r.owner {
        None => None,
        Some(o) => match names.iter().find(|(_, n)| *n == o.value) {
            Some((i, name)) => {
                // The collection: the literal before the parameter, else its name.
                let coll = segments[..*i]
                    .iter()
                    .rev()
                    .find_map(|s| s.as_deref())
                    .map_or_else(
                        || crate::object::collection(name),
                        crate::object::collection,
                    );
                Some((*i, coll))
            }
            None => {
                ctx.error(
                    o.referenced,
                    format!("owner: `{}` is not a parameter of `{t}`", o.value),
                );
                return None;
            }
        },
    };
    if r.public && owner.is_some() {
        ctx.error(
            r.template.referenced,
            "a route is either `public` or has an `owner`".into(),
        );
        return None;
    }
    if let Some(paths) = &r.expose_only
        && let Some(bad) = paths.iter().find(|p| !p.starts_with('$'))
    {
        ctx.error(
            r.template.referenced,
            format!("expose_only: `{bad}` is not a field path (`$.name`, `$.items[].id`)"),
        );
        return None;
    }
    Some(super::PinnedRoute::new(
        t.to_string(),
        segments,
        owner,
        r.public,
        r.expose_only,
    ))
}
