//! Arbitrary text as a rule file: validation must never panic or hang, and a set that
//! compiles must run over a few events without panicking (templates, matchers, windows).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use shieldtap::actor::Actor;
use shieldtap::capture::Timestamp;
use shieldtap::detect::{DetectConfig, Engine, Event};
use shieldtap::rules;
use shieldtap::token::{TokenHash, Verdict};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let files = [("f.yaml".to_string(), text.to_string())];
    let Ok(set) = rules::compile(&files, Path::new("."), "fuzz") else {
        return;
    };
    let mut engine = Engine::new(
        DetectConfig {
            max_keys_per_rule: 4,
            ..DetectConfig::default()
        },
        &set,
    );
    let mut out = Vec::new();
    for (i, verdict) in Verdict::ALL.iter().enumerate() {
        let ev = Event {
            ts: Timestamp(1_000_000_000 * i as u64),
            actor: Actor {
                ip: std::net::IpAddr::from([10, 0, 0, (i % 3) as u8]),
                device: Some("d".into()),
                user: Some("jane@example.com".into()),
            },
            method: Some("GET".into()),
            host: Some("api.example.com".into()),
            route: Some("/api/v1/users/{id}".into()),
            endpoint: None,
            principal_key: None,
            body_bytes: None,
            status: Some(200),
            family: Some("approov".into()),
            verdict: *verdict,
            token: Some(TokenHash::of("t")),
            expired_for: Some(i as f64 * 30.0),
            object: Some("/api/v1/users/7".into()),
            number: Some(i as u64),
            username: Some("jane@example.com".into()),
            login: i % 2 == 0,
            objects: shieldtap::detect::request_objects("/api/v1/users/7", &shieldtap::http::Headers::new(), b""),
            returned: Default::default(),
            ownership: None,
            cross_user: false,
            exposure: None,
            exposed: Default::default(),
            field_set: None,
            denied: false,
            foreign: Default::default(),
            attested: false,
            shared_devices: 0,
            ja4: None,
            viewer: None,
            fingerprint: 0,
        };
        engine.observe(&ev, &mut out);
    }
    engine.finish(&mut out);
});
