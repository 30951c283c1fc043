//! The detect engine alone: events per second through the built-in rule pack, for traffic
//! of many actors with a realistic mix of verdicts (mostly valid, some forged, expired and
//! mismatched), so windows, distinct sets, suppression and evidence all do work.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use shieldtap::actor::Actor;
use shieldtap::capture::Timestamp;
use shieldtap::detect::{DetectConfig, Engine, Event};
use shieldtap::rules;
use shieldtap::token::{TokenHash, Verdict};

const EVENTS: usize = 100_000;

fn events() -> Vec<Event> {
    let get: Arc<str> = Arc::from("GET");
    let route: Arc<str> = Arc::from("/api/v1/users/{id}");
    let family: Arc<str> = Arc::from("approov");
    let devices: Vec<Arc<str>> = (0..5000)
        .map(|i| Arc::from(format!("device-{i}")))
        .collect();
    let users: Vec<Arc<str>> = (0..5000).map(|i| Arc::from(format!("user-{i}"))).collect();
    (0..EVENTS)
        .map(|i| {
            let actor = i % 5000;
            let verdict = match i % 50 {
                0 => Verdict::BadSignature,
                1 => Verdict::Expired,
                2 => Verdict::BindingMismatch,
                3 => Verdict::Missing,
                _ => Verdict::Valid,
            };
            Event {
                // 10,000 requests per second of packet time.
                ts: Timestamp(1_767_225_600_000_000_000 + i as u64 * 100_000),
                actor: Actor {
                    ip: std::net::IpAddr::from([10, 0, (actor / 256) as u8, (actor % 256) as u8]),
                    device: Some(devices[actor].clone()),
                    user: Some(users[actor].clone()),
                },
                method: Some(get.clone()),
                host: None,
                route: Some(route.clone()),
                endpoint: None,
                principal_key: None,
                body_bytes: None,
                status: Some(200),
                family: Some(family.clone()),
                verdict,
                token: Some(TokenHash::of(&format!("token-{actor}-{}", i / 20_000))),
                expired_for: (verdict == Verdict::Expired).then_some(120.0),
                object: Some(Arc::from(format!("/api/v1/users/{}", i % 300))),
                number: Some((i % 300) as u64),
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
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let set = rules::builtin().expect("built-in rules");
    let evs = events();
    let mut g = c.benchmark_group("detect");
    g.throughput(Throughput::Elements(EVENTS as u64));
    g.sample_size(10);
    g.bench_function("builtin_pack_5000_actors", |b| {
        b.iter(|| {
            let mut engine = Engine::new(DetectConfig::default(), &set);
            let mut out = Vec::new();
            for e in &evs {
                engine.observe(e, &mut out);
            }
            engine.finish(&mut out);
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
