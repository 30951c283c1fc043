//! The memory budget holds on the detect stage: a flood of far more actors, keys and
//! objects than a small budget holds keeps the process's peak RSS (from /proc) under the
//! budget plus a fixed overhead, evictions are counted per table, and an attacker who
//! arrives after the flood is still caught.
//!
//! One test in its own binary, so the process's RSS is this test's.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use shieldtap::actor::Actor;
use shieldtap::budget::{Budget, Table};
use shieldtap::capture::Timestamp;
use shieldtap::detect::{DetectConfig, Engine, Event, ObjectRef};
use shieldtap::token::Verdict;

const BUDGET_MIB: usize = 32;
/// What the process holds besides the budgeted tables: code, the allocator's free pages
/// and fragmentation, thread stacks, the rule set.
const OVERHEAD_MIB: usize = 40;

fn status_kib(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn event(i: u64, ts: Timestamp, verdict: Verdict) -> Event {
    let ip = IpAddr::V6(Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(i)));
    let collection: Arc<str> = "orders".into();
    Event {
        ts,
        actor: Actor {
            ip,
            device: Some(format!("device-{i:012}").into()),
            user: Some(format!("user-{i:012}").into()),
        },
        method: Some("GET".into()),
        host: Some("api.example.com".into()),
        route: Some("/api/v1/orders/{id}".into()),
        endpoint: None,
        principal_key: None,
        body_bytes: Some(900),
        status: Some(200),
        family: Some("approov".into()),
        verdict,
        token: None,
        expired_for: None,
        object: Some(format!("/api/v1/orders/{}", 10_000_000 + i).into()),
        number: Some(10_000_000 + i),
        username: None,
        login: false,
        objects: thin_vec::thin_vec![ObjectRef {
            collection: collection.clone(),
            id: (10_000_000 + i).to_string().into(),
        }],
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

#[test]
fn a_flood_of_actors_stays_within_the_budget_and_a_late_attacker_is_caught() {
    let rules = shieldtap::rules::builtin().expect("built-in rules");
    let cfg = DetectConfig {
        budget: Budget::mib(BUDGET_MIB),
        ..DetectConfig::default()
    };
    let mut engine = Engine::new(cfg, &rules);
    let mut alerts = Vec::new();
    // 400,000 distinct addresses, devices, users and objects within 4 s of packet
    // time: every detector window is still open, so nothing idles out; without a budget
    // the keys alone take gigabytes.
    const FLOOD: u64 = 400_000;
    let start = 1_700_000_000_000_000_000u64;
    for i in 0..FLOOD {
        let ts = Timestamp(start + i * 10_000);
        engine.observe_owned(event(i, ts, Verdict::Valid), &mut alerts);
        // Alerts are written out as they come in a real run.
        alerts.clear();
    }
    let mem = engine.memory();
    let usage = |t: Table| {
        mem.iter()
            .find(|(x, _)| *x == t)
            .map(|(_, u)| *u)
            .unwrap_or_else(|| panic!("no {t:?} in the report"))
    };
    for t in [Table::Keys, Table::Actors, Table::Objects, Table::Shared] {
        let u = usage(t);
        assert!(u.evictions > 0, "{t:?}: nothing evicted: {u:?}");
        assert!(
            u.bytes <= u.limit + u.limit / 10,
            "{t:?} holds more than its share: {u:?}"
        );
    }
    let accounted: u64 = mem.iter().map(|(_, u)| u.bytes).sum();
    assert!(accounted <= (BUDGET_MIB as u64) << 20, "{accounted}");

    // The attacker: one new address, no attestation, 40 requests over 20 s.
    let attacker = FLOOD + 7;
    let after = start + FLOOD * 10_000;
    let mut caught = Vec::new();
    for k in 0..40u64 {
        let ts = Timestamp(after + k * 500_000_000);
        engine.observe_owned(event(attacker, ts, Verdict::Missing), &mut caught);
    }
    let mut end = Vec::new();
    engine.finish(&mut end);
    caught.extend(end);
    let ip = event(attacker, Timestamp(after), Verdict::Missing).actor.ip;
    assert!(
        caught
            .iter()
            .any(|a| a.rule.as_str() == "bot.unattested-traffic"
                && a.actor.ip == Some(ip.to_string())),
        "the late attacker went unseen: {:?}",
        caught.iter().map(|a| &a.rule).collect::<Vec<_>>()
    );

    let peak = status_kib("VmHWM:").expect("VmHWM in /proc/self/status");
    let limit_kib = ((BUDGET_MIB + OVERHEAD_MIB) as u64) << 10;
    eprintln!("peak RSS {peak} KiB, limit {limit_kib} KiB; detect tables: {mem:?}");
    assert!(
        peak <= limit_kib,
        "peak RSS {peak} KiB over the budget plus overhead ({limit_kib} KiB)"
    );
}
