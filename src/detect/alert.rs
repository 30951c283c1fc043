//! The alert record (INTERFACE.md): built from a rule and the episode it fired on, with
//! every traffic-derived value passed through the redaction utility.

use std::io::Write;

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::window::Episode;
use super::{KeyValue, secs_text};
use crate::capture::Timestamp;
use crate::redact;
use crate::rules::{
    Category, DetectorKind, EvidenceField, KeyField, Piece, Placeholder, Rule, RuleId, Severity,
};
use crate::token::Verdict;

/// Who an alert is about. Fields are set when every request of the alert agrees on them.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct AlertActor {
    pub ip: Option<String>,
    pub device: Option<String>,
    /// Redacted when the id is itself personal data.
    pub user: Option<String>,
}

/// One alert.
#[derive(Clone, Debug)]
pub struct Alert {
    /// Packet time of the last request the alert aggregates.
    pub ts: Timestamp,
    pub rule: RuleId,
    pub category: Category,
    pub severity: Severity,
    pub actor: AlertActor,
    pub endpoint: Option<String>,
    pub summary: String,
    pub evidence: Map<String, Value>,
    pub count: u64,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    /// Aggregates requests that came while the (rule, key) was suppressed.
    pub follow_up: bool,
    /// The actors named, unredacted, for the risk registry; never serialized.
    pub(crate) subjects: Subjects,
}

/// Who an alert names, as the registry keys them.
#[derive(Clone, Debug, Default)]
pub(crate) struct Subjects {
    pub ip: Option<std::net::IpAddr>,
    pub device: Option<std::sync::Arc<str>>,
    pub user: Option<std::sync::Arc<str>>,
    /// The attestation token the rule groups by.
    pub token: Option<crate::token::TokenHash>,
    /// The rule's key fields that name a client (what a ban may fall on).
    pub keyed: Keyed,
    /// The address is shared by many attested devices (carrier NAT, a proxy): never banned.
    pub shared_address: bool,
    /// `ip` is the address of a token's copy, not its holder's.
    pub copy: bool,
    /// The rule's own `ban:`.
    pub ban: Option<crate::rules::BanSpec>,
}

/// Which client fields a rule groups by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Keyed {
    pub ip: bool,
    pub device: bool,
    pub user: bool,
    pub token: bool,
    pub principal: bool,
}

impl Alert {
    /// The rule's own ban (`ban:` in its file).
    pub fn rule_ban(&self) -> Option<crate::rules::BanSpec> {
        self.subjects.ban
    }
}

impl Serialize for Alert {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Alert", 12)?;
        st.serialize_field("ts", &self.ts.rfc3339())?;
        st.serialize_field("rule", self.rule.as_str())?;
        st.serialize_field("category", self.category.as_str())?;
        st.serialize_field("severity", self.severity.as_str())?;
        st.serialize_field("actor", &self.actor)?;
        st.serialize_field("endpoint", &self.endpoint)?;
        st.serialize_field("summary", &self.summary)?;
        st.serialize_field("evidence", &self.evidence)?;
        st.serialize_field("count", &self.count)?;
        st.serialize_field("first_seen", &self.first_seen.rfc3339())?;
        st.serialize_field("last_seen", &self.last_seen.rfc3339())?;
        st.serialize_field("follow_up", &self.follow_up)?;
        st.end()
    }
}

/// Writes one alert as a JSON line.
pub fn write_alert(out: &mut impl Write, a: &Alert) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, a)?;
    out.write_all(b"\n")
}

pub(super) fn build(rule: &Rule, key: &KeyValue, ep: Episode, follow_up: bool) -> Alert {
    let fields = &rule.detector.group_by;
    let mut actor = AlertActor {
        ip: ep.ip.one().map(ToString::to_string),
        device: ep.device.one().cloned().flatten().map(|d| d.to_string()),
        user: ep
            .user
            .one()
            .cloned()
            .flatten()
            .map(|u| redact::identifier(&u)),
    };
    let mut subjects = Subjects {
        ip: ep.ip.one().copied(),
        device: ep.device.one().cloned().flatten(),
        user: ep.user.one().cloned().flatten(),
        ..Subjects::default()
    };
    // A rule keyed by route (or route and field set) is about the API, not a client: the
    // first client to trigger it is not named as the actor; evidence lists who received it.
    let about_a_client = fields.iter().any(|f| {
        matches!(
            f,
            KeyField::Ip
                | KeyField::Device
                | KeyField::User
                | KeyField::Principal
                | KeyField::Token
                | KeyField::Username
        )
    });
    if !about_a_client {
        actor = AlertActor::default();
        subjects = Subjects::default();
    }
    // Keyed by address alone, at an address many attested devices share (carrier NAT, a
    // proxy): the address is not one actor, and the genuine devices behind it must never
    // be named (or blocked) for what another client there did.
    let by_address_alone = fields.contains(&KeyField::Ip)
        && !fields.iter().any(|f| {
            matches!(
                f,
                KeyField::Device | KeyField::User | KeyField::Principal | KeyField::Token
            )
        });
    if by_address_alone && ep.shared_devices > 0 && ep.attested > 0 {
        actor.device = None;
        actor.user = None;
        subjects.device = None;
        subjects.user = None;
    }
    // A copy of a token in use alongside the genuine holder carries the holder's device id
    // and user: naming those would point at (and block) the victim. The actor is the
    // copy's address; the holder's address and identity stay in the evidence.
    if let Some(origin) = ep.measured().origin {
        actor.device = None;
        actor.user = None;
        subjects.device = None;
        subjects.user = None;
        let copy = match ep.measured().copy {
            crate::detect::window::Same::One(ip) if ip != origin => Some(ip),
            _ => None,
        };
        actor.ip = copy.map(|ip| ip.to_string());
        subjects.ip = copy;
        subjects.copy = copy.is_some();
    }
    // A valid token over a script's TLS stack (or beside its device, over another stack)
    // is a lifted token: its device id and user are the victim's, never the actor's.
    if rule
        .matcher
        .fingerprint
        .is_some_and(|b| b & (super::fingerprint::SCRIPTING | super::fingerprint::FOREIGN) != 0)
        && !fields
            .iter()
            .any(|f| matches!(f, KeyField::Device | KeyField::User | KeyField::Principal))
    {
        actor.device = None;
        actor.user = None;
        subjects.device = None;
        subjects.user = None;
    }
    let parts = key.parts(fields);
    for (f, v) in &parts {
        match (f, v) {
            (KeyField::Ip, KeyValue::Ip(ip)) => subjects.ip = Some(*ip),
            (KeyField::Device, KeyValue::Str(d)) => subjects.device = Some(d.clone()),
            (KeyField::User, KeyValue::Str(u)) => subjects.user = Some(u.clone()),
            (KeyField::Token, KeyValue::Token(t)) => subjects.token = Some(*t),
            _ => {}
        }
    }
    subjects.keyed = Keyed {
        ip: fields.contains(&KeyField::Ip),
        device: fields.contains(&KeyField::Device),
        user: fields.contains(&KeyField::User),
        token: fields.contains(&KeyField::Token),
        principal: fields.contains(&KeyField::Principal),
    };
    subjects.shared_address = ep.shared_devices > 0;
    subjects.ban = rule.ban;
    for (f, v) in &parts {
        match f {
            KeyField::Ip => actor.ip = Some(v.shown(*f)),
            KeyField::Device => actor.device = Some(v.shown(*f)),
            KeyField::User => actor.user = Some(v.shown(*f)),
            _ => {}
        }
    }
    let endpoint = ep.endpoint.one().cloned().flatten().map(|e| e.to_string());

    let verdicts: Vec<(&'static str, u32)> = Verdict::ALL
        .iter()
        .zip(ep.verdicts.iter())
        .filter(|(_, n)| **n > 0)
        .map(|(v, n)| (v.as_str(), *n))
        .collect();
    let verdicts_text = verdicts
        .iter()
        .map(|(v, n)| format!("{v} x{n}"))
        .collect::<Vec<_>>()
        .join(", ");

    let mut evidence = Map::new();
    let key_map: Map<String, Value> = parts
        .iter()
        .map(|(f, v)| (f.as_str().to_string(), json!(v.shown(*f))))
        .collect();
    evidence.insert("key".into(), Value::Object(key_map));
    evidence.insert("detector".into(), json!(rule.detector.kind.name()));
    evidence.insert(
        "window_secs".into(),
        json!(rule.detector.window.as_secs_f64()),
    );
    evidence.insert("threshold".into(), json!(rule.detector.threshold));
    if let (DetectorKind::Distinct(distinct), Some(n)) =
        (&rule.detector.kind, ep.measured().distinct)
    {
        evidence.insert(format!("distinct_{}", distinct.as_str()), json!(n));
    }
    if let (
        DetectorKind::Concurrent {
            field,
            overlap,
            linger,
        },
        Some(n),
        Some(r),
    ) = (
        &rule.detector.kind,
        ep.measured().distinct,
        ep.measured().returns,
    ) {
        let mut c = json!({
            format!("distinct_{}", field.as_str()): n,
            "returns": r,
            "overlap_secs": overlap.as_secs_f64(),
        });
        if !linger.is_zero()
            && let Some(c) = c.as_object_mut()
        {
            c.insert("linger_secs".into(), json!(linger.as_secs_f64()));
        }
        evidence.insert("concurrent".into(), c);
    }
    if let (Some(origin), Some(Value::Object(c))) =
        (ep.measured().origin, evidence.get_mut("concurrent"))
    {
        c.insert("first_address".into(), json!(origin.to_string()));
        if let crate::detect::window::Same::One(ip) = ep.measured().copy {
            c.insert("copy_address".into(), json!(ip.to_string()));
        }
    }
    if ep.shared_devices > 0 && fields.contains(&KeyField::Ip) {
        evidence.insert(
            "shared_address".into(),
            json!({"attested_devices": ep.shared_devices}),
        );
    }
    if let Some((hits, all)) = ep.measured().share {
        evidence.insert("requests".into(), json!(all));
        evidence.insert("matching".into(), json!(hits));
        evidence.insert("share".into(), json!(round3(share(hits, all))));
    }
    if let Some((mean, cv, n)) = ep.measured().cadence {
        evidence.insert(
            "cadence".into(),
            json!({"mean_gap_secs": round3(mean), "cv": round3(cv), "gaps": n}),
        );
    }
    if let Some((a, b)) = ep.measured().run {
        evidence.insert("walk".into(), json!({"from": a, "to": b}));
    }
    if let Some((level, count)) = ep.measured().baseline {
        evidence.insert(
            "baseline".into(),
            json!({"learned": round3(level), "count": count}),
        );
    }
    for f in &rule.evidence {
        let (name, value) = match f {
            EvidenceField::Verdicts => (
                "verdicts",
                Value::Object(
                    verdicts
                        .iter()
                        .map(|(v, n)| ((*v).to_string(), json!(n)))
                        .collect(),
                ),
            ),
            EvidenceField::Endpoints => {
                // A list, busiest first (a JSON object's keys would be sorted by name).
                let mut eps: Vec<&(std::sync::Arc<str>, u32)> = ep.endpoints.iter().collect();
                eps.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                let mut v: Vec<Value> = eps
                    .iter()
                    .map(|(e, n)| json!({"endpoint": e, "count": n}))
                    .collect();
                if ep.endpoints_other > 0 {
                    v.push(json!({"endpoint": "other", "count": ep.endpoints_other}));
                }
                ("endpoints", Value::Array(v))
            }
            EvidenceField::Addresses => {
                let mut v: Vec<String> = ep.addresses.iter().map(ToString::to_string).collect();
                v.sort();
                ("addresses", json!(v))
            }
            EvidenceField::Fingerprints => {
                let mut v: Vec<String> = ep.ja4s.iter().map(|d| d.to_string()).collect();
                v.sort();
                ("fingerprints", json!(v))
            }
            EvidenceField::Devices => {
                let mut v: Vec<String> = ep.devices.iter().map(|d| d.to_string()).collect();
                v.sort();
                ("devices", json!(v))
            }
            EvidenceField::Users => {
                let mut v: Vec<String> = ep.users.iter().map(|u| redact::identifier(u)).collect();
                v.sort();
                ("users", json!(v))
            }
            EvidenceField::Tokens => {
                let mut v: Vec<String> = ep.tokens.iter().map(ToString::to_string).collect();
                v.sort();
                ("tokens", json!(v))
            }
            EvidenceField::Families => (
                "families",
                Value::Object(
                    ep.families
                        .iter()
                        .map(|(f, n)| (f.to_string(), json!(n)))
                        .collect(),
                ),
            ),
            EvidenceField::Statuses => (
                "statuses",
                Value::Object(
                    ep.statuses
                        .iter()
                        .map(|(s, n)| (s.to_string(), json!(n)))
                        .collect(),
                ),
            ),
            EvidenceField::Objects => {
                let mut v: Vec<String> = ep.objects.iter().map(|o| o.to_string()).collect();
                v.sort();
                ("objects", json!(v))
            }
            EvidenceField::Usernames => {
                // Masks collide (`v***@example.com`); the distinct count says how many.
                let mut v: Vec<String> = ep.usernames.iter().map(|u| redact::mask(u)).collect();
                v.sort();
                v.dedup();
                ("usernames", json!(v))
            }
            EvidenceField::Ownership => {
                let mut o = json!({
                    "own": ep.ownership[1],
                    "public": ep.ownership[2],
                    "unknown": ep.ownership[4],
                    "other": ep.ownership[5],
                    "succeeded": ep.succeeded,
                });
                // Listed when present: rules that count unclaimed objects are rare.
                if ep.ownership[3] > 0
                    && let Some(m) = o.as_object_mut()
                {
                    m.insert("unclaimed".into(), json!(ep.ownership[3]));
                }
                ("ownership", o)
            }
            EvidenceField::ExposedFields => {
                let v: Vec<Value> = ep
                    .exposed
                    .iter()
                    .map(|(p, c, m)| json!({"path": p.as_ref(), "class": c.as_str(), "sample": m.as_ref()}))
                    .collect();
                ("exposed_fields", Value::Array(v))
            }
            EvidenceField::ForeignObjects => {
                let mut v: Vec<String> = ep
                    .foreign_ids
                    .iter()
                    .map(|o| format!("{}:{}", o.collection, redact::token(&o.id)))
                    .collect();
                v.sort();
                ("foreign_objects", json!(v))
            }
            EvidenceField::ExpiredForSecs => (
                "expired_for_secs",
                json!(
                    ep.measured()
                        .expired_for_max
                        .map(|e| (e * 1000.0).round() / 1000.0)
                ),
            ),
        };
        evidence.insert(name.into(), value);
    }
    if ep.truncated {
        evidence.insert("lists_truncated".into(), json!(true));
    }

    let summary = if follow_up {
        // The rule's template describes the detection; a follow-up only says it goes on.
        format!(
            "Still going: {} more request(s) matching {} from {} since its last alert",
            ep.count,
            rule.id,
            parts
                .iter()
                .map(|(f, v)| format!("{} {}", f.as_str(), v.shown(*f)))
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        render(rule, key, &ep, &actor, endpoint.as_deref(), &verdicts_text)
    };
    Alert {
        ts: ep.last,
        rule: rule.id.clone(),
        category: rule.category,
        severity: rule.severity,
        actor,
        endpoint,
        summary,
        evidence,
        count: ep.count,
        first_seen: ep.first,
        last_seen: ep.last,
        follow_up,
        subjects,
    }
}

fn render(
    rule: &Rule,
    key: &KeyValue,
    ep: &Episode,
    actor: &AlertActor,
    endpoint: Option<&str>,
    verdicts: &str,
) -> String {
    let fields = &rule.detector.group_by;
    let mut summary = String::new();
    for p in &rule.summary {
        match p {
            Piece::Text(t) => summary.push_str(t),
            Piece::Field(f) => summary.push_str(&match f {
                Placeholder::Count => ep.count.to_string(),
                Placeholder::Distinct => ep
                    .measured()
                    .distinct
                    .map_or(ep.count as usize, |d| d)
                    .to_string(),
                Placeholder::Threshold => rule.detector.threshold.to_string(),
                Placeholder::Window => secs_text(rule.detector.window),
                Placeholder::Key => key
                    .parts(fields)
                    .iter()
                    .map(|(f, v)| v.shown(*f))
                    .collect::<Vec<_>>()
                    .join(" "),
                Placeholder::Ip => actor
                    .ip
                    .clone()
                    .unwrap_or_else(|| "several addresses".into()),
                Placeholder::Device => actor.device.clone().unwrap_or_else(|| "-".into()),
                Placeholder::User => actor.user.clone().unwrap_or_else(|| "-".into()),
                Placeholder::Endpoint => endpoint.unwrap_or("several endpoints").to_string(),
                Placeholder::Verdicts => verdicts.to_string(),
                Placeholder::Share => ep.measured().share.map_or_else(
                    || "-".into(),
                    |(h, a)| format!("{:.0}%", share(h, a) * 100.0),
                ),
                Placeholder::MeanGap => ep
                    .measured()
                    .cadence
                    .map_or_else(|| "-".into(), |(m, _, _)| format!("{m:.3}s")),
                Placeholder::Cv => ep
                    .measured()
                    .cadence
                    .map_or_else(|| "-".into(), |(_, cv, _)| format!("{cv:.2}")),
                Placeholder::Run => ep
                    .measured()
                    .run
                    .map_or_else(|| "-".into(), |(a, b)| format!("{a} to {b}")),
                Placeholder::Baseline => ep
                    .measured()
                    .baseline
                    .map_or_else(|| "-".into(), |(l, _)| format!("{l:.0}")),
                Placeholder::ExpiredFor => ep
                    .measured()
                    .expired_for_max
                    .map_or_else(|| "-".into(), |e| format!("{}s", e.round() as u64)),
            }),
        }
    }
    summary
}

fn share(hits: u64, all: u64) -> f64 {
    if all == 0 {
        0.0
    } else {
        hits as f64 / all as f64
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
