use std::path::Path;

use super::*;
use crate::rules;

const SEC: u64 = 1_000_000_000;

fn set(yaml: &str) -> RuleSet {
    rules::compile(
        &[("t.yaml".to_string(), yaml.to_string())],
        Path::new("."),
        "test",
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn rule(kind: &str, extra: &str, threshold: u32, window: u32, suppress: u32) -> String {
    format!(
        "rules:\n  - id: r\n    description: d\n    category: bot\n    severity: low\n    detector:\n      kind: {kind}\n      group_by: ip\n{extra}      threshold: {threshold}\n      window_secs: {window}\n    suppress_secs: {suppress}\n    summary: \"{{ip}} x{{count}}\"\n    evidence: [users, addresses]\n"
    )
}

/// A valid request of device `dev`, user `u` at `secs` after the epoch's 1000th second
/// (the checkpoint tests build theirs from it).
pub(crate) fn ev(secs: f64, ip: &str) -> Event {
    Event {
        ts: Timestamp((secs * 1e9) as u64 + 1_000 * SEC),
        actor: Actor {
            ip: ip.parse().unwrap(),
            device: Some("dev".into()),
            user: Some("u".into()),
        },
        method: Some("GET".into()),
        host: None,
        route: Some("/x".into()),
        endpoint: None,
        principal_key: None,
        body_bytes: None,
        status: Some(200),
        family: Some("approov".into()),
        verdict: Verdict::Valid,
        token: None,
        expired_for: None,
        object: Some("/x".into()),
        number: None,
        username: None,
        login: false,
        objects: thin_vec::ThinVec::new(),
        returned: thin_vec::ThinVec::new(),
        ownership: None,
        cross_user: false,
        exposure: None,
        exposed: thin_vec::ThinVec::new(),
        field_set: None,
        denied: false,
        foreign: thin_vec::ThinVec::new(),
        attested: false,
        shared_devices: 0,
        ja4: None,
        viewer: None,
        fingerprint: 0,
    }
}

fn run(engine: &mut Engine, events: &[Event]) -> Vec<Alert> {
    let mut out = Vec::new();
    for e in events {
        engine.observe(e, &mut out);
    }
    out
}

#[test]
fn threshold_fires_only_within_the_window() {
    let s = set(&rule("threshold", "", 3, 10, 0));
    let mut e = Engine::new(DetectConfig::default(), &s);
    // Three events spread over 25 s never fit a 10 s window.
    let a = run(
        &mut e,
        &[
            ev(0.0, "10.0.0.1"),
            ev(12.0, "10.0.0.1"),
            ev(24.0, "10.0.0.1"),
        ],
    );
    assert!(a.is_empty(), "{a:?}");
    // Three within 10 s do.
    let a = run(
        &mut e,
        &[
            ev(30.0, "10.0.0.1"),
            ev(31.0, "10.0.0.1"),
            ev(32.0, "10.0.0.1"),
        ],
    );
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].count, 3);
    assert_eq!(a[0].actor.ip.as_deref(), Some("10.0.0.1"));
    assert_eq!(a[0].summary, "10.0.0.1 x3");
    assert!(!a[0].follow_up);
    // Another actor is counted on its own.
    let a = run(&mut e, &[ev(33.0, "10.0.0.2"), ev(33.5, "10.0.0.2")]);
    assert!(a.is_empty());
}

/// A key whose window emptied starts its episode afresh (restarted in place): the alert
/// counts, times and lists only the requests of the window that fired, whether the old
/// episode's lists were small (kept and emptied) or large (given back), truncated or not.
#[test]
fn an_emptied_window_restarts_the_episode() {
    let s = set(&rule("threshold", "", 20, 10, 0));
    for before in [2u32, 5, 19] {
        let mut e = Engine::new(DetectConfig::default(), &s);
        // `before` requests of as many users within 10 s: under the threshold.
        let old: Vec<Event> = (0..before)
            .map(|i| {
                let mut x = ev(f64::from(i) * 0.5, "10.0.0.1");
                x.actor.user = Some(format!("old{i}").into());
                x
            })
            .collect();
        assert!(run(&mut e, &old).is_empty(), "{before}");
        // A minute later, 20 requests of three users within 10 s.
        let new: Vec<Event> = (0..20)
            .map(|i| {
                let mut x = ev(100.0 + f64::from(i) * 0.25, "10.0.0.1");
                x.actor.user = Some(format!("new{}", i % 3).into());
                x
            })
            .collect();
        let a = run(&mut e, &new);
        assert_eq!(a.len(), 1, "{before}: {a:?}");
        assert_eq!(a[0].count, 20, "{before}");
        assert_eq!(a[0].first_seen, new[0].ts, "{before}");
        assert_eq!(a[0].last_seen, new[19].ts, "{before}");
        assert_eq!(
            a[0].evidence.get("users"),
            Some(&serde_json::json!(["new0", "new1", "new2"])),
            "{before}"
        );
        assert_eq!(
            a[0].evidence.get("lists_truncated"),
            None,
            "{before}: {:?}",
            a[0].evidence
        );
    }
}

#[test]
fn suppression_aggregates_into_follow_ups() {
    let s = set(&rule("threshold", "", 1, 60, 100));
    let mut e = Engine::new(DetectConfig::default(), &s);
    let mut a = run(
        &mut e,
        &[
            ev(0.0, "10.0.0.1"),
            ev(10.0, "10.0.0.1"),
            ev(20.0, "10.0.0.1"),
        ],
    );
    assert_eq!(a.len(), 1, "one alert, the rest aggregated");
    // The suppression window ends at 100 s: the next event emits the aggregate of the two
    // suppressed ones, and itself opens a new aggregate (activity goes on).
    a.extend(run(&mut e, &[ev(150.0, "10.0.0.1")]));
    assert_eq!(a.len(), 2);
    assert!(a[1].follow_up);
    assert_eq!(a[1].count, 2);
    assert_eq!(a[1].first_seen, ev(10.0, "10.0.0.1").ts);
    assert_eq!(a[1].last_seen, ev(20.0, "10.0.0.1").ts);
    // End of input flushes what is pending.
    let mut rest = Vec::new();
    e.finish(&mut rest);
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].count, 1);
    let st = e.stats();
    assert_eq!(st.alerts, 3);
    assert_eq!(st.follow_up_alerts, 2);
    assert_eq!(st.aggregated_events, 3);
    assert_eq!(st.alerts_by_rule.get("r"), Some(&3));
}

#[test]
fn quiet_after_suppression_returns_to_detection() {
    let s = set(&rule("threshold", "", 2, 10, 30));
    let mut e = Engine::new(DetectConfig::default(), &s);
    let a = run(&mut e, &[ev(0.0, "10.0.0.1"), ev(1.0, "10.0.0.1")]);
    assert_eq!(a.len(), 1);
    // Nothing during suppression; after it a single event is below threshold again.
    let a = run(&mut e, &[ev(100.0, "10.0.0.1")]);
    assert!(a.is_empty(), "{a:?}");
    let a = run(&mut e, &[ev(101.0, "10.0.0.1")]);
    assert_eq!(a.len(), 1);
    assert!(!a[0].follow_up);
}

#[test]
fn distinct_counts_values_not_events() {
    let s = set(&rule("distinct", "      distinct: user\n", 3, 60, 0));
    let mut e = Engine::new(DetectConfig::default(), &s);
    let mut events = Vec::new();
    for (i, user) in ["a", "a", "b", "b", "c"].iter().enumerate() {
        let mut x = ev(i as f64, "10.0.0.9");
        x.actor.user = Some((*user).into());
        events.push(x);
    }
    // An event with no user has nothing to count and is ignored.
    let mut none = ev(2.5, "10.0.0.9");
    none.actor.user = None;
    events.insert(3, none);
    let a = run(&mut e, &events);
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(
        a[0].evidence.get("distinct_user"),
        Some(&serde_json::json!(3))
    );
    assert_eq!(a[0].count, 5);
    assert_eq!(
        a[0].evidence.get("users"),
        Some(&serde_json::json!(["a", "b", "c"]))
    );
}

#[test]
fn personal_user_ids_are_masked_in_alerts() {
    let s = set(&rule("threshold", "", 1, 60, 0));
    let mut e = Engine::new(DetectConfig::default(), &s);
    let mut x = ev(0.0, "10.0.0.1");
    x.actor.user = Some("jane.doe@example.com".into());
    let a = run(&mut e, &[x]);
    assert_eq!(a[0].actor.user.as_deref(), Some("j***@example.com"));
    let line = serde_json::to_string(&a[0]).unwrap();
    assert!(!line.contains("jane.doe"), "{line}");
}

#[test]
fn key_cap_evicts_the_quietest_and_idle_keys_are_swept() {
    let s = set(&rule("threshold", "", 5, 10, 0));
    let mut e = Engine::new(
        DetectConfig {
            max_keys_per_rule: 2,
            ..DetectConfig::default()
        },
        &s,
    );
    run(
        &mut e,
        &[
            ev(0.0, "10.0.0.1"),
            ev(0.1, "10.0.0.2"),
            ev(0.2, "10.0.0.3"),
        ],
    );
    // At the cap the least recently seen key made room for the new one.
    let st = e.stats();
    assert_eq!((st.keys_over_cap, st.keys_evicted), (1, 1));
    assert_eq!(e.tracked_keys(), (2, 2));
    // Once idle past their window the rest are swept.
    run(&mut e, &[ev(30.0, "10.0.0.4")]);
    assert_eq!(e.stats().keys_evicted, 3);
    assert_eq!(e.tracked_keys(), (1, 1));
}

#[test]
fn a_spoofed_address_flood_stays_within_the_caps() {
    let s = rules::builtin().unwrap();
    let cfg = DetectConfig {
        max_keys_per_rule: 1_000,
        max_actors: 2_000,
        ..DetectConfig::default()
    };
    let mut e = Engine::new(cfg, &s);
    let mut out = Vec::new();
    for i in 0..100_000u32 {
        let mut x = ev(f64::from(i) * 0.001, "10.0.0.1");
        x.actor.ip = std::net::IpAddr::from((0x0a00_0000 + i).to_be_bytes());
        x.actor.device = Some(format!("spoofed-{i}").into());
        x.verdict = if i % 2 == 0 {
            Verdict::Missing
        } else {
            Verdict::BadSignature
        };
        x.token = Some(TokenHash::of(&i.to_string()));
        e.observe(&x, &mut out);
    }
    let (_, most) = e.tracked_keys();
    assert!(most <= 1_000, "a rule holds {most} keys");
    let st = e.stats();
    assert!(st.keys_evicted > 90_000, "{st:?}");
    let a = e.actors(5).stats;
    assert!(a.addresses <= 2_000 && a.devices <= 2_000, "{a:?}");
    assert!(a.evicted > 190_000, "{a:?}");
    assert!(a.approx_bytes < 4_000 * 1024, "{a:?}");
}

#[test]
fn reload_keeps_state_of_unchanged_rules_only() {
    let s = set(&rule("threshold", "", 2, 60, 0));
    let mut e = Engine::new(DetectConfig::default(), &s);
    run(&mut e, &[ev(0.0, "10.0.0.1")]);
    // Same rule again: the first event still counts.
    e.replace_rules(&set(&rule("threshold", "", 2, 60, 0)), &mut Vec::new());
    assert_eq!(run(&mut e, &[ev(1.0, "10.0.0.1")]).len(), 1);
    run(&mut e, &[ev(2.0, "10.0.0.1")]);
    // Changed threshold: state starts over, so one more event is not enough.
    e.replace_rules(&set(&rule("threshold", "", 3, 60, 0)), &mut Vec::new());
    assert!(run(&mut e, &[ev(3.0, "10.0.0.1")]).is_empty());
}

#[test]
fn matchers_filter_by_verdict_route_status_and_expiry() {
    let yaml = "rules:\n  - id: m\n    description: d\n    category: token-replay\n    severity: low\n    match:\n      verdicts: [expired]\n      expired_beyond_secs: 30\n      routes: [\"/api/**\"]\n      status: [2xx]\n      methods: [get]\n    detector: {kind: threshold, group_by: ip, threshold: 1, window_secs: 10}\n    suppress_secs: 0\n    summary: s\n";
    let s = set(yaml);
    let mut e = Engine::new(DetectConfig::default(), &s);
    let base = |f: &dyn Fn(&mut Event)| {
        let mut x = ev(0.0, "10.0.0.1");
        x.verdict = Verdict::Expired;
        x.expired_for = Some(31.0);
        x.route = Some("/api/v1/a".into());
        f(&mut x);
        x
    };
    assert_eq!(run(&mut e, &[base(&|_| {})]).len(), 1);
    assert!(run(&mut e, &[base(&|x| x.expired_for = Some(29.0))]).is_empty());
    assert!(run(&mut e, &[base(&|x| x.verdict = Verdict::Valid)]).is_empty());
    assert!(run(&mut e, &[base(&|x| x.route = Some("/health".into()))]).is_empty());
    assert!(run(&mut e, &[base(&|x| x.status = Some(404))]).is_empty());
    assert!(run(&mut e, &[base(&|x| x.method = Some("POST".into()))]).is_empty());
}

#[test]
fn reload_reports_what_a_changed_rule_had_aggregated() {
    let s = set(&rule("threshold", "", 1, 60, 600));
    let mut e = Engine::new(DetectConfig::default(), &s);
    let a = run(
        &mut e,
        &[
            ev(0.0, "10.0.0.1"),
            ev(1.0, "10.0.0.1"),
            ev(2.0, "10.0.0.1"),
        ],
    );
    assert_eq!(a.len(), 1);
    let mut out = Vec::new();
    e.replace_rules(&set(&rule("threshold", "", 2, 60, 600)), &mut out);
    assert_eq!(out.len(), 1, "the two folded requests are reported");
    assert!(out[0].follow_up);
    assert_eq!(out[0].count, 2);
}

#[test]
fn baseline_learns_per_endpoint_then_flags_only_far_above_it() {
    let s = rules::builtin().unwrap();
    let mut e = Engine::new(DetectConfig::default(), &s);
    let mut out = Vec::new();
    let req = |secs: f64, ip: String| {
        let mut x = ev(secs, "10.0.0.1");
        x.actor.ip = ip.parse().unwrap();
        x.actor.device = Some(format!("dev-{ip}").into());
        x.route = Some("/api/v1/orders".into());
        x
    };
    // Before anything is learned, even a heavy attested client is not judged.
    for i in 0..100 {
        e.observe(&req(f64::from(i) * 0.5, "10.9.9.9".into()), &mut out);
    }
    // An hour of 20 attested clients making 2 to 6 requests a minute each.
    for minute in 1..62u32 {
        for c in 0..20u32 {
            let n = 2 + (minute + c) % 5;
            for k in 0..n {
                let t = f64::from(minute) * 60.0 + f64::from(c) + f64::from(k) * 0.7;
                e.observe(&req(t, format!("10.0.1.{c}")), &mut out);
            }
        }
    }
    let baseline = |out: &[Alert]| -> Vec<Alert> {
        out.iter()
            .filter(|a| a.rule.as_str().contains("volume-above-baseline"))
            .cloned()
            .collect()
    };
    assert!(baseline(&out).is_empty(), "{:?}", baseline(&out));
    // Minute 62: one client a bit above its peers (fine), one attested device far above.
    for k in 0..9 {
        e.observe(
            &req(62.0 * 60.0 + f64::from(k), "10.0.1.3".into()),
            &mut out,
        );
    }
    for k in 0..80 {
        e.observe(
            &req(62.0 * 60.0 + f64::from(k) * 0.25, "10.0.2.1".into()),
            &mut out,
        );
    }
    let hits = baseline(&out);
    // Attested traffic is judged per device, never per address.
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(
        hits[0].rule.as_str(),
        "scraping.device-volume-above-baseline"
    );
    assert_eq!(hits[0].actor.device.as_deref(), Some("dev-10.0.2.1"));
    let learned = hits[0].evidence["baseline"]["learned"].as_f64().unwrap();
    assert!((5.0..=7.0).contains(&learned), "learned {learned}");
    assert_eq!(hits[0].evidence["baseline"]["count"], 60);
    assert!(e.stats().baseline_samples > 1000);
}

fn bola_event(secs: f64, user: &str, path: &str, status: u16) -> Event {
    let mut x = ev(secs, "10.0.0.40");
    x.actor.user = Some(user.into());
    x.actor.device = None;
    x.route = Some(crate::route::route_of(path).into());
    x.object = Some(path.into());
    x.objects = crate::detect::request_objects(path, &crate::http::Headers::new(), b"");
    x.status = Some(status);
    x
}

const CROSS_USER: &str = "rules:\n  - id: x\n    description: d\n    category: bola\n    severity: high\n    match: {cross_user: true}\n    detector: {kind: threshold, group_by: principal, threshold: 1, window_secs: 60}\n    suppress_secs: 0\n    summary: \"{key} {endpoint}\"\n    evidence: [foreign_objects]\n";

#[test]
fn pinned_routes_name_parameters_and_declare_owners() {
    let yaml = format!(
        "{CROSS_USER}routes:\n  - template: /api/v1/wallets/{{wallet_owner}}/cards\n    owner: wallet_owner\n  - template: /api/v1/stores/{{store}}\n    public: true\n"
    );
    let s = set(&yaml);
    assert_eq!(s.routes.len(), 2);
    let mut e = Engine::new(DetectConfig::default(), &s);
    // `wallets` is no user collection by name; the rule declares its id is the owner's.
    let own = run(
        &mut e,
        &[bola_event(0.0, "77", "/api/v1/wallets/77/cards", 200)],
    );
    assert!(own.is_empty(), "{own:?}");
    let other = run(
        &mut e,
        &[bola_event(1.0, "77", "/api/v1/wallets/78/cards", 200)],
    );
    assert_eq!(other.len(), 1);
    assert_eq!(
        other[0].endpoint.as_deref(),
        Some("GET /api/v1/wallets/{wallet_owner}/cards")
    );
    assert_eq!(
        other[0].summary,
        "user:77 GET /api/v1/wallets/{wallet_owner}/cards"
    );
    // A public route's objects are nobody's: reading them is never cross-user, even when
    // another principal's list returned them.
    let mut created = bola_event(2.0, "78", "/api/v1/stores", 201);
    created.method = Some("POST".into());
    created.returned = thin_vec::thin_vec![crate::detect::ObjectRef {
        collection: "store".into(),
        id: "9".into(),
    }];
    run(&mut e, &[created]);
    let public = run(&mut e, &[bola_event(3.0, "77", "/api/v1/stores/9", 200)]);
    assert!(public.is_empty(), "{public:?}");
}

#[test]
fn principals_are_shown_redacted() {
    let s = set(&format!(
        "{CROSS_USER}routes:\n  - template: /api/v1/users/{{user_id}}\n    owner: user_id\n"
    ));
    let mut e = Engine::new(DetectConfig::default(), &s);
    let a = run(
        &mut e,
        &[bola_event(
            0.0,
            "jane@example.com",
            "/api/v1/users/1001",
            200,
        )],
    );
    assert_eq!(a.len(), 1);
    assert!(
        a[0].summary.starts_with("user:j***@example.com "),
        "{}",
        a[0].summary
    );
    assert!(!serde_json::to_string(&a[0]).unwrap().contains("jane@"));
}

#[test]
fn looked_up_keys_hash_and_compare_as_stored_keys() {
    use std::hash::BuildHasher;
    let state = foldhash::fast::RandomState::default();
    let mut e = ev(1.0, "10.0.0.7");
    e.actor.user = Some("alice".into());
    e.endpoint = Some("GET /x".into());
    let mut table: hashbrown::HashMap<KeyValue, u32, _> = hashbrown::HashMap::with_hasher(state);
    let shapes: [&[KeyField]; 4] = [
        &[KeyField::Ip],
        &[KeyField::Ip, KeyField::Endpoint],
        &[KeyField::Endpoint, KeyField::Ip],
        &[KeyField::Principal, KeyField::Endpoint, KeyField::User],
    ];
    for (i, fields) in shapes.iter().enumerate() {
        let look = e.lookup_key(fields).unwrap();
        let owned = KeyValue::from(&look);
        assert_eq!(
            table.hasher().hash_one(&look),
            table.hasher().hash_one(&owned)
        );
        table.insert(owned, i as u32);
    }
    // Each shape finds its own key, and only its own: order of the parts matters.
    for (i, fields) in shapes.iter().enumerate() {
        let look = e.lookup_key(fields).unwrap();
        assert_eq!(table.get(&look), Some(&(i as u32)));
    }
    assert_eq!(table.len(), 4);
    // A tuple of one field's value is not that value.
    let single = Lookup::Many(
        [KeyRef::Ip("10.0.0.7".parse().unwrap())]
            .into_iter()
            .collect(),
    );
    assert_eq!(table.get(&single), None);
    // A pair is looked up inline (`Lookup::Two`): it hashes and finds exactly as the same
    // pair in the general form does, and a longer tuple it begins is another key.
    let pair = e.lookup_key(&[KeyField::Ip, KeyField::Endpoint]).unwrap();
    assert!(matches!(pair, Lookup::Two(..)));
    let general = Lookup::Many(
        [
            KeyRef::Ip("10.0.0.7".parse().unwrap()),
            KeyRef::Str(e.endpoint.as_ref().unwrap()),
        ]
        .into_iter()
        .collect(),
    );
    assert_eq!(
        table.hasher().hash_one(&pair),
        table.hasher().hash_one(&general)
    );
    assert_eq!(table.get(&general), Some(&1));
    let longer = KeyValue::from(
        &e.lookup_key(&[KeyField::Ip, KeyField::Endpoint, KeyField::User])
            .unwrap(),
    );
    table.insert(longer, 9);
    assert_eq!(table.get(&pair), Some(&1));
    table.remove(&pair);
    assert_eq!(table.get(&pair), None, "the triple is not the pair");
    drop((pair, general));
    // A missing field gives no key.
    e.actor.device = None;
    assert!(e.lookup_key(&[KeyField::Ip, KeyField::Device]).is_none());
    assert!(e.lookup_key(&[KeyField::Device, KeyField::Ip]).is_none());
}

/// Every field a rule can group by, alone and in tuples, looked up from an event whose
/// strings are other allocations than the stored keys' (the usual case: a device's next
/// token brings its id in a new string) finds the stored key, by content; derived values
/// (an endpoint or principal the engine did not set, a field set) too; and a username is
/// never the same key as an equal string of another field.
#[test]
fn borrowed_lookups_find_keys_stored_from_other_allocations() {
    use std::hash::BuildHasher;
    let all = [
        KeyField::Ip,
        KeyField::Device,
        KeyField::User,
        KeyField::Token,
        KeyField::Endpoint,
        KeyField::Object,
        KeyField::Username,
        KeyField::Principal,
        KeyField::FieldSet,
        KeyField::Ja4,
    ];
    let event = || {
        let mut e = ev(1.0, "2001:db8::7");
        e.actor.device = Some(String::from("dev-1").into());
        e.actor.user = Some(String::from("alice").into());
        e.token = Some(crate::token::TokenHash::of("a.b.c"));
        e.username = Some(String::from("alice").into());
        e.ja4 = Some(String::from("t13d1516h2_8daaf6152771_b0da82dd1658").into());
        e.exposed.push(exposure::Finding {
            path: String::from("$.email").into(),
            class: crate::exposure_class::Class::Email,
            masked: String::from("a***@example.com").into(),
            digests: Default::default(),
        });
        e
    };
    let (stored, fresh) = (event(), event());
    let state = foldhash::fast::RandomState::default();
    let mut table: hashbrown::HashMap<KeyValue, usize, _> = hashbrown::HashMap::with_hasher(state);
    let mut shapes: Vec<Vec<KeyField>> = all.iter().map(|f| vec![*f]).collect();
    shapes.extend(all.windows(2).map(<[KeyField]>::to_vec));
    shapes.push(vec![
        KeyField::Principal,
        KeyField::Endpoint,
        KeyField::Username,
    ]);
    for (i, fields) in shapes.iter().enumerate() {
        let look = stored.lookup_key(fields).unwrap();
        let owned = KeyValue::from(&look);
        assert_eq!(
            table.hasher().hash_one(&look),
            table.hasher().hash_one(&owned),
            "{fields:?}"
        );
        assert!(
            table.insert(owned, i).is_none(),
            "{fields:?} is another shape's key"
        );
    }
    for (i, fields) in shapes.iter().enumerate() {
        let look = fresh.lookup_key(fields).unwrap();
        assert_eq!(table.get(&look), Some(&i), "{fields:?}");
    }
    // The user "alice" and the username "alice" are different keys.
    let user = stored.lookup_key(&[KeyField::User]).unwrap();
    let username = KeyValue::from(&stored.lookup_key(&[KeyField::Username]).unwrap());
    assert!(!hashbrown::Equivalent::equivalent(&user, &username));
    // Another value of any one field is another key.
    let mut other = event();
    other.actor.device = Some("dev-2".into());
    assert_eq!(
        table.get(&other.lookup_key(&[KeyField::Device]).unwrap()),
        None
    );
}

/// A response to `route` from `ip` carrying `records` records in `bytes` body bytes.
fn response(secs: f64, ip: &str, route: &str, records: u32, bytes: u32) -> Event {
    let mut e = ev(secs, ip);
    e.route = Some(route.into());
    e.object = Some(route.into());
    e.exposure = Some(Arc::new(exposure::Scan {
        records,
        ..Default::default()
    }));
    e.body_bytes = Some(bytes);
    e
}

#[test]
fn bulk_exposure_by_records_and_by_bytes_against_the_learned_level() {
    let set = crate::rules::builtin().unwrap();
    let mut engine = Engine::new(DetectConfig::default(), &set);
    let bulk = |alerts: &[Alert]| -> Vec<(String, Option<String>)> {
        alerts
            .iter()
            .filter(|a| a.rule.as_str().starts_with("exposure.bulk-"))
            .map(|a| (a.rule.as_str().to_string(), a.actor.ip.clone()))
            .collect()
    };
    let mut events = Vec::new();
    // An endpoint that has not been learned yet stays quiet, however large the response.
    for i in 0..10 {
        events.push(response(
            f64::from(i),
            "192.0.2.200",
            "/api/v1/export",
            5,
            2_000,
        ));
    }
    events.push(response(
        11.0,
        "192.0.2.201",
        "/api/v1/export",
        50_000,
        80 << 20,
    ));
    // The orders endpoint learns its level: 20 records, about 4 KB per page.
    for i in 0..60u32 {
        let ip = format!("192.0.2.{}", 1 + i % 50);
        events.push(response(
            20.0 + f64::from(i),
            &ip,
            "/api/v1/orders",
            20,
            4_000 + i,
        ));
    }
    // Above 10 times the level but under the thresholds (100 records, 1 MiB): quiet (and
    // learned, as everything that does not stand out is).
    events.push(response(
        90.0,
        "198.51.100.7",
        "/api/v1/orders",
        99,
        500_000,
    ));
    assert_eq!(bulk(&run(&mut engine, &events)), vec![]);
    // A page size left out: 5,000 records in 8 MiB. Both measures fire, naming the client.
    let big = [response(
        91.0,
        "198.51.100.9",
        "/api/v1/orders",
        5_000,
        8 << 20,
    )];
    let mut got = bulk(&run(&mut engine, &big));
    got.sort();
    assert_eq!(
        got,
        vec![
            (
                "exposure.bulk-bytes".to_string(),
                Some("198.51.100.9".to_string())
            ),
            (
                "exposure.bulk-records".to_string(),
                Some("198.51.100.9".to_string())
            ),
        ]
    );
    // A large body that is not a list (an export of one object) is caught by bytes alone.
    let blob = [response(
        92.0,
        "198.51.100.10",
        "/api/v1/orders",
        1,
        6 << 20,
    )];
    assert_eq!(
        bulk(&run(&mut engine, &blob)),
        vec![(
            "exposure.bulk-bytes".to_string(),
            Some("198.51.100.10".to_string())
        )]
    );
}

/// An outlier detector holds a key only from the response that stands out (for its
/// suppression): the thousands of (endpoint, client) pairs that only teach the level are
/// never stored, and the one that fired is suppressed, with a follow-up of its later
/// bulk responses.
#[test]
fn outlier_keys_are_held_only_once_they_fire() {
    let set = set("rules:
  - id: bulk
    description: d
    category: data-exposure
    severity: medium
    detector:
      kind: outlier
      group_by: [endpoint, ip]
      threshold: 100
      window_secs: 3600
      factor: 10
      quantile: 0.99
      learn_min_samples: 50
    suppress_secs: 60
    summary: \"{endpoint} {ip}\"
    evidence: [statuses]
");
    let mut engine = Engine::new(DetectConfig::default(), &set);
    let mut events = Vec::new();
    for i in 0..2_000u32 {
        let ip = format!("10.{}.{}.{}", i / 65_536, (i / 256) % 256, i % 256);
        events.push(response(
            f64::from(i) * 0.01,
            &ip,
            "/api/v1/orders",
            20,
            4_000,
        ));
    }
    assert!(run(&mut engine, &events).is_empty());
    assert_eq!(
        engine.tracked_keys(),
        (0, 0),
        "learning responses hold no key"
    );
    let big = [
        response(30.0, "198.51.100.9", "/api/v1/orders", 5_000, 8 << 20),
        response(31.0, "198.51.100.9", "/api/v1/orders", 6_000, 9 << 20),
        response(32.0, "198.51.100.9", "/api/v1/orders", 20, 4_000),
    ];
    let alerts = run(&mut engine, &big);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].actor.ip.as_deref(), Some("198.51.100.9"));
    assert_eq!(engine.tracked_keys(), (1, 1), "the key that fired is held");
    // Past the suppression, the follow-up reports what was held back.
    let later = [response(100.0, "192.0.2.1", "/api/v1/orders", 20, 4_000)];
    let follow = run(&mut engine, &later);
    assert_eq!(follow.len(), 1, "{follow:?}");
    assert_eq!(follow[0].actor.ip.as_deref(), Some("198.51.100.9"));
    assert_eq!(engine.tracked_keys(), (1, 1));
}

#[test]
fn body_size_levels_are_learned_past_the_histograms_first_range() {
    // An export endpoint whose normal responses are 2 MiB: its level is 2 MiB, so a 3 MiB
    // response is normal (under 10 times it) and a 40 MiB one stands out. Levels were once
    // clamped to the histogram's first range (a few bytes), flagging every large response.
    let set = crate::rules::builtin().unwrap();
    let mut engine = Engine::new(DetectConfig::default(), &set);
    let mut events: Vec<Event> = (0..60u32)
        .map(|i| {
            let ip = format!("192.0.2.{}", 1 + i % 50);
            response(f64::from(i), &ip, "/api/v1/exports", 10, 2 << 20)
        })
        .collect();
    events.push(response(
        70.0,
        "198.51.100.7",
        "/api/v1/exports",
        10,
        3 << 20,
    ));
    events.push(response(
        80.0,
        "198.51.100.8",
        "/api/v1/exports",
        10,
        40 << 20,
    ));
    let bytes: Vec<Option<String>> = run(&mut engine, &events)
        .into_iter()
        .filter(|a| a.rule.as_str() == "exposure.bulk-bytes")
        .map(|a| a.actor.ip)
        .collect();
    assert_eq!(bytes, vec![Some("198.51.100.8".to_string())]);
}

#[test]
fn deny_classes_override_expose_only_and_drive_denied_rules() {
    // The route lists `$.ssn` as used by the app; the rules deny national ids everywhere.
    let rules = |deny: &str| {
        set(&format!(
            "{deny}routes:\n  - template: /api/v1/tax/{{id}}\n    expose_only: [\"$.ssn\", \"$.email\"]\nrules:\n  - id: never\n    description: d\n    category: data-exposure\n    severity: high\n    match:\n      denied: true\n    detector:\n      kind: threshold\n      group_by: endpoint\n      threshold: 1\n      window_secs: 60\n    summary: \"{{endpoint}}\"\n"
        ))
    };
    let body = br#"{"ssn":"219-09-9999","email":"jo@example.com"}"#;
    let hdr = crate::http::Headers::from_iter([("Content-Type", b"application/json".as_slice())]);
    let resp = |secs: f64| {
        let mut e = ev(secs, "192.0.2.1");
        e.route = Some("/api/v1/tax/{id}".into());
        e.object = Some("/api/v1/tax/42".into());
        e.exposure = Some(Arc::new(exposure::scan(&hdr, body)));
        e
    };
    // Default deny list (hashes, secrets): the listed fields are allowed, nothing fires.
    let mut plain = Engine::new(DetectConfig::default(), &rules(""));
    assert!(run(&mut plain, &[resp(1.0)]).is_empty());
    // With national ids denied, `$.ssn` is exposure despite `expose_only`; `$.email` is not.
    let denying = rules("deny_classes: [national-id]\n");
    assert_eq!(denying.denied(), vec![exposure::Class::NationalId]);
    let mut strict = Engine::new(DetectConfig::default(), &denying);
    let alerts = run(&mut strict, &[resp(1.0)]);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].rule.as_str(), "never");
    // Unknown classes and empty lists are errors with positions.
    let bad = rules::compile(
        &[(
            "t.yaml".to_string(),
            "deny_classes: [national-id, passport]\n".to_string(),
        )],
        Path::new("."),
        "test",
    )
    .unwrap_err()
    .to_string();
    assert!(
        bad.contains("t.yaml:1:29: deny_classes: unknown class `passport`"),
        "{bad}"
    );
    let empty = rules::compile(
        &[("t.yaml".to_string(), "deny_classes: []\n".to_string())],
        Path::new("."),
        "test",
    )
    .unwrap_err()
    .to_string();
    assert!(
        empty.contains("t.yaml:1:15: deny_classes: an empty list denies nothing"),
        "{empty}"
    );
}

/// Shards that receive every message as it would cross a process boundary: serialized to
/// JSON in an envelope with the protocol version, read back, then handled.
struct WireShards {
    inner: shard::LocalShards,
    bytes: usize,
}

impl ShardHost for WireShards {
    fn count(&self) -> usize {
        self.inner.count()
    }
    fn inline(&self) -> bool {
        true
    }
    fn send(&mut self, shard: usize, msg: ShardMsg) {
        let msg = match msg {
            // Rule sets are not sent over the wire: every shard loads the same rules.
            m @ ShardMsg::Rules { .. } => m,
            m => {
                let text = serde_json::to_string(&(shard::PROTOCOL, &m)).expect("serialize");
                self.bytes += text.len();
                let (v, back): (u16, ShardMsg) = serde_json::from_str(&text).expect("read back");
                assert_eq!(v, shard::PROTOCOL);
                back
            }
        };
        self.inner.send(shard, msg);
    }
    fn flush(&mut self, seq: u64) {
        self.inner.flush(seq);
    }
    fn poll(&mut self, until: Option<u64>, out: &mut Vec<Tagged>, done: &mut [u64]) {
        self.inner.poll(until, out, done);
    }
    fn stats(&self) -> DetectStats {
        self.inner.stats()
    }
    fn memory(&self) -> Vec<(Table, Usage)> {
        self.inner.memory()
    }
    fn tracked_keys(&self) -> (usize, usize) {
        self.inner.tracked_keys()
    }
}

/// A mixed stream for the built-in rules: genuine devices, an unattested scraper walking
/// ids, a token forger, a BOLA prober reading others' orders, a stuffer.
fn mixed_stream() -> Vec<Event> {
    let mut out = Vec::new();
    for i in 0..6000u64 {
        let actor = i % 40;
        let mut e = ev(
            i as f64 * 0.05,
            &format!("10.0.{}.{}", actor / 10, actor % 10 + 1),
        );
        e.actor.device = Some(format!("device-{actor}").into());
        e.actor.user = Some(format!("user-{}", actor % 25).into());
        e.route = Some("/api/v1/orders/{id}".into());
        let id = 1000 + (i * 7 + actor * 13) % 500;
        e.object = Some(format!("/api/v1/orders/{id}").into());
        e.number = Some(id);
        e.objects = thin_vec::thin_vec![ObjectRef {
            collection: "orders".into(),
            id: id.to_string().into(),
        }];
        e.token = Some(TokenHash::of(&format!("token-{actor}-{}", i / 400)));
        match actor {
            0..=2 => {
                // Unattested scraper walking ids.
                e.verdict = Verdict::Missing;
                e.token = None;
                e.number = Some(5000 + i);
                e.object = Some(format!("/api/v1/orders/{}", 5000 + i).into());
            }
            3 => e.verdict = Verdict::BadSignature,
            4 => {
                e.route = Some("/api/v1/login".into());
                e.method = Some("POST".into());
                e.login = true;
                e.username = Some(format!("victim{}@example.com", i % 97).into());
                e.status = Some(if i % 5 == 0 { 200 } else { 401 });
            }
            5 => e.status = Some(404),
            _ => {}
        }
        out.push(e);
    }
    out
}

#[test]
fn shards_give_the_same_alerts_as_one_engine_even_over_the_wire() {
    let rules = crate::rules::builtin().expect("built-in rules");
    let stream = mixed_stream();
    let alerts_of = |mut e: Engine| {
        let mut out = Vec::new();
        for x in &stream {
            e.observe(x, &mut out);
        }
        e.finish(&mut out);
        out.iter()
            .map(|a| {
                let mut v = Vec::new();
                write_alert(&mut v, a).expect("write");
                String::from_utf8(v).expect("utf-8")
            })
            .collect::<Vec<_>>()
    };
    let one = alerts_of(Engine::new(DetectConfig::default(), &rules));
    assert!(one.len() >= 5, "the stream should draw alerts: {one:?}");
    for n in [2, 3, 5] {
        let local = alerts_of(Engine::with_local_shards(
            DetectConfig::default(),
            &rules,
            n,
        ));
        assert_eq!(local, one, "{n} local shards");
        let cfg = DetectConfig::default();
        let shards = shard::configs(&cfg, n)
            .into_iter()
            .map(|c| shard::Shard::new(c, &rules))
            .collect();
        let wire = WireShards {
            inner: shard::LocalShards::new(shards),
            bytes: 0,
        };
        let wired = alerts_of(Engine::with_shards(cfg, &rules, Box::new(wire)));
        assert_eq!(wired, one, "{n} shards over the wire");
    }
}

/// A token replayed from a second address while its holder keeps using it (the holder
/// first, then both alternating every 5 s for 25 minutes): the built-in
/// `token.concurrent-use` alerts, and follows up while the copying goes on.
pub(crate) fn concurrent_use_alerts() -> Vec<Alert> {
    let s = rules::builtin().unwrap();
    let mut e = Engine::new(DetectConfig::default(), &s);
    let token = TokenHash::of("shared");
    let mut out = Vec::new();
    for i in 0..300u32 {
        let ip = if i % 2 == 0 { "10.0.0.1" } else { "10.0.0.2" };
        let mut x = ev(f64::from(i) * 5.0, ip);
        x.token = Some(token);
        e.observe(&x, &mut out);
    }
    out.retain(|a| a.rule.as_str() == "token.concurrent-use");
    out
}

/// The copy's address is the actor, never the holder's device or user (naming those would
/// block the victim), in the alert and in the follow-ups (suppression outlasts the rule's
/// window). The copy is learnt from the requests the episodes add. (The bans these make:
/// `enforce::decider`'s tests.)
#[test]
fn concurrent_use_names_the_copy_not_the_holder() {
    let concurrent = concurrent_use_alerts();
    assert!(concurrent.iter().any(|a| !a.follow_up), "{concurrent:#?}");
    assert!(
        concurrent.iter().filter(|a| a.follow_up).count() >= 2,
        "{concurrent:#?}"
    );
    for a in &concurrent {
        assert_eq!(a.actor.ip.as_deref(), Some("10.0.0.2"), "{a:#?}");
        assert_eq!(a.actor.device, None, "{a:#?}");
        assert_eq!(a.actor.user, None, "{a:#?}");
        assert!(a.subjects.copy, "{a:#?}");
        if !a.follow_up {
            assert_eq!(
                a.evidence["concurrent"]["first_address"],
                serde_json::json!("10.0.0.1"),
                "{a:#?}"
            );
        }
    }
}

/// Events with every fact a gate tests, in every combination proptest finds, against the
/// built-in rules and matchers that ask for each condition: an event whose matcher matches
/// always passes the gate (the gate only ever saves running a matcher that would say no).
mod gates {
    use super::*;
    use crate::exposure_class::Class;
    use crate::object::Ownership;
    use proptest::prelude::*;

    /// Compiled once: every case tests them all.
    static MATCHERS: std::sync::LazyLock<Vec<Matcher>> = std::sync::LazyLock::new(matchers);

    fn matchers() -> Vec<Matcher> {
        let mut ms: Vec<Matcher> = rules::builtin()
            .unwrap()
            .rules
            .iter()
            .map(|r| r.matcher.clone())
            .collect();
        let yaml = "rules:\n  - id: every-condition\n    description: d\n    category: bot\n    severity: low\n    match:\n      methods: [GET]\n      routes: [\"/x\"]\n      hosts: [\"api.example\"]\n      status: [200]\n      verdicts: [expired]\n      families: [approov]\n      expired_beyond_secs: 5\n      login: false\n      ownership: [other]\n      cross_user: true\n      exposed_classes: [email]\n      min_records: 2\n      denied: false\n      attested: false\n      shared_address: true\n      fingerprint: [scripting]\n    detector:\n      kind: threshold\n      group_by: ip\n      threshold: 1\n      window_secs: 60\n    summary: s\n";
        ms.push(set(yaml).rules[0].matcher.clone());
        ms
    }

    fn finding(class: Class) -> exposure::Finding {
        exposure::Finding {
            path: "$.a".into(),
            class,
            masked: "*".into(),
            digests: Default::default(),
        }
    }

    #[test]
    fn a_login_rule_gate_turns_away_other_requests() {
        let set = rules::builtin().unwrap();
        let login = set
            .rules
            .iter()
            .find(|r| r.id.as_str() == "stuffing.failed-logins")
            .unwrap();
        let gate = Gate::of(&login.matcher);
        let mut e = ev(0.0, "10.0.0.1");
        assert!(!gate.admits(Facts::of(&e)));
        e.login = true;
        e.method = Some("POST".into());
        e.status = Some(401);
        assert!(gate.admits(Facts::of(&e)));
        assert!(matcher_matches(&login.matcher, &e));
    }

    /// The matcher asking for every condition: an event meeting them all passes it and its
    /// gate; taking away any one fact the gate tests makes both refuse.
    #[test]
    fn each_fact_the_gate_tests_can_close_it() {
        let m = MATCHERS.last().unwrap();
        let gate = Gate::of(m);
        let mut e = ev(0.0, "10.0.0.1");
        e.host = Some("api.example".into());
        e.verdict = Verdict::Expired;
        e.expired_for = Some(6.0);
        e.ownership = Some(Ownership::Other);
        e.cross_user = true;
        e.exposed.push(finding(Class::Email));
        e.exposure = Some(Arc::new(exposure::Scan {
            records: 2,
            ..Default::default()
        }));
        e.shared_devices = 2;
        e.fingerprint = fingerprint::SCRIPTING;
        assert!(matcher_matches(m, &e));
        assert!(gate.admits(Facts::of(&e)));
        type Change = Box<dyn Fn(&mut Event)>;
        let changes: Vec<(&str, Change)> = vec![
            ("attested", Box::new(|e| e.attested = true)),
            ("shared", Box::new(|e| e.shared_devices = 0)),
            ("denied", Box::new(|e| e.denied = true)),
            ("cross_user", Box::new(|e| e.cross_user = false)),
            ("login", Box::new(|e| e.login = true)),
            ("exposed", Box::new(|e| e.exposed.clear())),
            ("exposure", Box::new(|e| e.exposure = None)),
            ("ownership", Box::new(|e| e.ownership = None)),
            ("method", Box::new(|e| e.method = None)),
            ("status", Box::new(|e| e.status = None)),
            ("family", Box::new(|e| e.family = None)),
            ("expired_for", Box::new(|e| e.expired_for = None)),
            ("route", Box::new(|e| e.route = None)),
            ("host", Box::new(|e| e.host = None)),
            ("verdict", Box::new(|e| e.verdict = Verdict::Valid)),
            (
                "fingerprint",
                Box::new(|e| e.fingerprint = fingerprint::APP),
            ),
        ];
        for (what, change) in changes {
            let mut x = e.clone();
            change(&mut x);
            assert!(!matcher_matches(m, &x), "{what}");
            assert!(!gate.admits(Facts::of(&x)), "{what}");
        }
    }

    proptest! {
        /// The field set written without a string per finding is the text the sorted,
        /// deduplicated `path=class` strings make (paths with the bytes that sort around
        /// `=`: `.`, `[`, digits, letters).
        #[test]
        fn field_sets_sort_as_their_texts(
            found in proptest::collection::vec(("[a-c.=\\[0-9]{0,4}", 0..Class::ALL.len()), 0..8)
        ) {
            let exposed: Vec<exposure::Finding> = found
                .iter()
                .map(|(p, c)| exposure::Finding { path: format!("$.{p}").into(), ..finding(Class::ALL[*c]) })
                .collect();
            let mut texts: Vec<String> = exposed
                .iter()
                .map(|f| format!("{}={}", f.path, f.class.as_str()))
                .collect();
            texts.sort();
            texts.dedup();
            let want = (!texts.is_empty()).then(|| texts.join(","));
            prop_assert_eq!(field_set(&exposed), want);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn a_matching_event_always_passes_the_gate(
            flags in proptest::collection::vec(any::<bool>(), 14),
            verdict in 0..Verdict::ALL.len(),
            status in prop_oneof![Just(None), Just(Some(200u16)), Just(Some(401)), Just(Some(404))],
            class in 0..Class::ALL.len(),
            records in 0u32..4,
            ownership in 0..4usize,
            expired in 0.0f64..20.0,
            fingerprint in 0u8..16,
        ) {
            let mut e = ev(0.0, "10.0.0.1");
            let f = |i: usize| flags[i];
            e.attested = f(0);
            e.shared_devices = u32::from(f(1)) * 3;
            e.denied = f(2);
            e.cross_user = f(3);
            e.login = f(4);
            if f(5) {
                e.exposed.push(finding(Class::ALL[class]));
            }
            if f(6) {
                e.exposure = Some(Arc::new(exposure::Scan { records, ..Default::default() }));
            }
            e.ownership = f(7).then(|| {
                [Ownership::None, Ownership::Own, Ownership::Public, Ownership::Other][ownership]
            });
            e.method = if f(8) { Some("GET".into()) } else { None };
            e.status = status;
            e.family = if f(9) { Some("approov".into()) } else { None };
            e.expired_for = f(10).then_some(expired);
            e.route = if f(11) { Some("/x".into()) } else { None };
            e.host = if f(12) { Some("api.example".into()) } else { None };
            e.verdict = Verdict::ALL[verdict];
            e.fingerprint = if f(13) { fingerprint } else { 0 };
            let facts = Facts::of(&e);
            for m in MATCHERS.iter() {
                let gate = Gate::of(m);
                let matches = matcher_matches(m, &e);
                if matches {
                    prop_assert!(gate.admits(facts), "{m:?} matches {e:?} but its gate refuses");
                }
                // What the engine decides is the matcher's answer, whether or not it ran.
                prop_assert_eq!(gate.matches(facts, m, &e), matches, "{:?} on {:?}", m, e);
            }
        }
    }
}

/// An event comes back from the engine once its shards are done with it, without what the
/// engine made for it from its own tables (dropped on the detect thread) but with what the
/// worker made and the engine's judgement; alerts are the same as when the engine drops
/// it.
#[test]
fn a_spent_event_comes_back_without_the_engines_keys() {
    let s = set(&rule("threshold", "", 2, 10, 0));
    let mut returning = Engine::new(DetectConfig::default(), &s);
    let mut dropping = Engine::new(DetectConfig::default(), &s);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let mut back = Vec::new();
    for t in [0.0, 1.0, 2.0] {
        let e = ev(t, "10.0.0.1");
        dropping.observe(&e, &mut b);
        back.push(returning.observe_returning(Arc::new(e), &mut a));
    }
    assert_eq!(a.len(), 1);
    assert_eq!(
        serde_json::to_value(&a).unwrap(),
        serde_json::to_value(&b).unwrap()
    );
    for e in back {
        let e = e.expect("the engine was the only holder");
        // Enriched while observed (every event gets its endpoint and principal keys), shed
        // before it came back.
        assert_eq!(e.endpoint, None);
        assert_eq!(e.principal_key, None);
        assert!(e.exposed.is_empty() && e.foreign.is_empty());
        // The worker's fields and the engine's verdict stay.
        assert_eq!(e.route.as_deref(), Some("/x"));
        assert_eq!(e.actor.user.as_deref(), Some("u"));
        assert!(e.attested);
    }
    // An event someone else holds is copied before it is enriched: the copy comes back,
    // and theirs is as it was.
    let held = Arc::new(ev(3.0, "10.0.0.1"));
    let copy = returning
        .observe_returning(Arc::clone(&held), &mut a)
        .expect("the engine's own copy");
    assert!(!Arc::ptr_eq(&copy, &held));
    assert!(copy.attested && !held.attested);
}

/// A distinct or ratio key keeps what its detector measured only once it fires: below its
/// threshold the episode has no `measured` box (no store to it on each request, no bytes
/// for it on each key), and the alert still reports the measure at the request that fired.
#[test]
fn what_a_detector_measured_is_kept_when_it_fires() {
    let events: Vec<Event> = ["a", "b", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, user)| {
            let mut x = ev(i as f64, "10.0.0.9");
            x.actor.user = Some((*user).into());
            x
        })
        .collect();
    for (kind, extra, evidence) in [
        ("distinct", "      distinct: user\n", "distinct_user"),
        (
            "ratio",
            "      ratio: 0.5\n      when: {verdicts: [valid]}\n",
            "share",
        ),
    ] {
        let s = set(&rule(kind, extra, 3, 60, 0));
        let r = &s.rules[0];
        let when = match &r.detector.kind {
            crate::rules::DetectorKind::Ratio { when, .. } => Some(when),
            _ => None,
        };
        let mut ks = window::KeyState::new(&r.detector, None);
        let mut stats = DetectStats::default();
        let mut fired = None;
        for x in &events {
            let o = window::Observed {
                ev: x,
                distinct: x.key(KeyField::User),
                when: when.is_some_and(|w| matcher_matches(w, x)),
                level: None,
            };
            fired = ks.observe(r, o, &mut stats, &mut None);
            if fired.is_some() {
                break;
            }
            let ep = ks.episode().expect("an episode builds");
            assert!(
                ep.measured.is_none(),
                "{kind}: measured kept below the threshold"
            );
        }
        let ep = fired.unwrap_or_else(|| panic!("{kind} did not fire"));
        match kind {
            "distinct" => assert_eq!(ep.measured().distinct, Some(3)),
            _ => assert_eq!(ep.measured().share, Some((3, 3))),
        }
        let alerts = run(&mut Engine::new(DetectConfig::default(), &s), &events);
        assert_eq!(alerts.len(), 1, "{kind}");
        assert!(
            alerts[0].evidence.contains_key(evidence),
            "{kind}: {alerts:?}"
        );
    }
}

/// The shards events' keys go to, for keys of one, two and three fields and by endpoint, on
/// 3 and 8 shards: what each process of a scale-out computes alike (a fixed seed over the
/// key, never a per-process seed). Pinned: a change here moves keys between the partitions
/// of a running scale-out, whose correlators then hold the state of keys they no longer
/// get.
fn placements() -> Vec<usize> {
    let yaml = |group_by: &str, kind: &str, extra: &str| {
        format!(
            "  - id: r-{kind}-{}\n    description: d\n    category: bot\n    severity: low\n    detector:\n      kind: {kind}\n      group_by: {group_by}\n{extra}      threshold: 5\n      window_secs: 60\n    suppress_secs: 60\n    summary: \"s\"\n",
            group_by.replace(['[', ']', ',', ' '], "")
        )
    };
    let mut text = String::from("rules:\n");
    for g in [
        "ip",
        "device",
        "user",
        "[ip, endpoint]",
        "[device, endpoint, user]",
    ] {
        text.push_str(&yaml(g, "threshold", ""));
    }
    text.push_str(&yaml(
        "[ip, endpoint]",
        "baseline",
        "      quantile: 0.99\n      factor: 3\n      learn_min_windows: 10\n",
    ));
    let set = set(&text);
    let mut out = Vec::new();
    for (i, ip) in ["10.0.0.7", "2001:db8::9", "192.0.2.200"]
        .iter()
        .enumerate()
    {
        let mut e = ev(1.0, ip);
        e.actor.device = Some(format!("device-{i}").into());
        e.actor.user = Some(format!("user-{i}").into());
        e.route = Some(format!("/v1/items/{i}").into());
        for r in &set.rules {
            for n in [3, 8] {
                out.extend(shard::shard_of(shard::Spread::of(r), r, &e, n));
            }
        }
    }
    out
}

#[test]
fn keys_go_to_the_same_shards_in_every_process() {
    // As every process of this and earlier releases computes them.
    assert_eq!(
        placements(),
        [
            2, 2, 1, 4, 0, 6, 1, 0, 1, 7, 1, 3, 2, 7, 1, 2, 2, 4, 2, 6, 1, 6, 1, 1, 2, 2, 0, 1, 2,
            2, 2, 6, 2, 3, 1, 2
        ]
    );
}
