//! Rules end to end through the command line: `rules check` on the built-in pack and on
//! broken fixtures, a failing rule test, `--rules` replacing the pack, and the token-abuse
//! sample (real clients) giving exactly its expected alerts whatever the worker count.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn shieldtap(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shieldtap"))
        .args(args)
        .current_dir(ROOT)
        .output()
        .expect("runs")
}

/// No alert names any of the genuine clients (addresses, devices) in its actor.
fn assert_no_genuine_actor(alerts: &[Value], genuine: &[&str]) {
    for a in alerts {
        let actor = a["actor"].to_string();
        for g in genuine {
            assert!(!actor.contains(g), "genuine client flagged: {a}");
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn builtin_pack_checks_clean_and_runs_its_capture_test() {
    let o = shieldtap(&["rules", "check"]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}{}", text(&o.stderr));
    let last = out.lines().last().unwrap_or_default();
    assert!(last.starts_with("built-in: "), "{last}");
    assert!(last.ends_with(" 0 failed, 0 skipped"), "{last}");
    assert!(
        out.contains("token-abuse sample capture"),
        "the capture test ran: {out}"
    );
    // The folder form on the same files agrees.
    let o = shieldtap(&["rules", "check", "rules"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));
}

#[test]
fn broken_rule_files_are_reported_with_exact_positions() {
    let o = shieldtap(&["rules", "check", "tests/fixtures/rules-broken"]);
    assert_eq!(o.status.code(), Some(2));
    let want = std::fs::read_to_string(
        Path::new(ROOT).join("tests/fixtures/rules-broken/expected-errors.txt"),
    )
    .expect("expected-errors.txt");
    assert_eq!(text(&o.stdout), want);
    // One line per kind of mistake kept in the folder.
    for needle in [
        "bad-regex.yaml:7:27: routes: bad regex",
        "duplicate-id.yaml:2:9: duplicate rule id `forged.tokens`",
        "impossible-window.yaml:14:20: window_secs",
        "unknown-detector.yaml:7:13: unknown detector `thresold`",
        "unknown-key.yaml:10:7: unknown field `window_sec`",
        "unknown-verdict.yaml:7:33: verdicts: unknown verdict `forged`",
        "bad-yaml.yaml:3:18: ",
        // Negative seconds are refused, not turned into a duration (which panicked).
        "wrong-params.yaml:54:21: overlap_secs: expected more than 0",
        "wrong-params.yaml:55:20: linger_secs: expected more than 0",
    ] {
        assert!(want.contains(needle), "fixture lacks {needle}");
    }
}

fn write_rules(dir: &Path, name: &str, yaml: &str) {
    std::fs::write(dir.join(name), yaml).expect("write rule file");
}

const VALID_ONLY: &str = r#"rules:
  - id: test.valid-tokens
    description: Every request with a valid token (a rule no real pack would have).
    category: bot
    severity: info
    match:
      verdicts: [valid]
    detector: {kind: threshold, group_by: device, threshold: 1, window_secs: 60}
    suppress_secs: 0
    summary: "{device} sent a valid token"
tests:
  - name: fires per request
    transactions:
      - {at: 0, ip: 192.0.2.1, verdict: valid, device: d}
      - {at: 1, ip: 192.0.2.1, verdict: valid, device: d}
    expect:
      - {rule: test.valid-tokens, actor: {device: d}, count: 1}
      - {rule: test.valid-tokens, actor: {device: d}, count: 1}
"#;

#[test]
fn a_failing_rule_test_exits_1_and_says_why() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_rules(
        dir.path(),
        "r.yaml",
        &VALID_ONLY.replace(
            "      - {rule: test.valid-tokens, actor: {device: d}, count: 1}\n      - ",
            "      - ",
        ),
    );
    let o = shieldtap(&["rules", "check", dir.path().to_str().expect("utf-8")]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("FAIL  "), "{out}");
    assert!(out.contains("raised, not expected: {"), "{out}");
    // The good version passes.
    write_rules(dir.path(), "r.yaml", VALID_ONLY);
    let o = shieldtap(&["rules", "check", dir.path().to_str().expect("utf-8")]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));
}

fn replay_alerts(extra: &[&str], workers: &str) -> Vec<Value> {
    let mut args = vec![
        "replay",
        "samples/token-abuse/capture.pcap",
        "--config",
        "samples/token-abuse/shieldtap.toml",
        "--workers",
        workers,
    ];
    args.extend_from_slice(extra);
    let o = shieldtap(&args);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(!out.contains("eyJ"), "a token leaked into alerts: {out}");
    out.lines()
        .map(|l| serde_json::from_str(l).expect("alert is JSON"))
        .collect()
}

#[test]
fn token_abuse_sample_gives_exactly_its_alerts_with_any_worker_count() {
    let golden: Vec<Value> =
        std::fs::read_to_string(Path::new(ROOT).join("samples/token-abuse/alerts.jsonl"))
            .expect("alerts.jsonl")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
    for workers in ["1", "2", "4"] {
        let got = replay_alerts(&[], workers);
        assert_eq!(got, golden, "with {workers} workers");
    }
    // The token-abuse rules: 12 alerts. (The sample API's user route also returns e-mail
    // addresses, which the data-exposure rules report about the route.)
    let token_alerts: Vec<&Value> = golden
        .iter()
        .filter(|a| {
            a["category"]
                .as_str()
                .is_some_and(|c| c.starts_with("token-"))
        })
        .collect();
    assert_eq!(token_alerts.len(), 12);
    // Attribution: the abusive actors of the sample's README, and none of the genuine ones.
    let flagged: BTreeSet<(String, String)> = token_alerts
        .iter()
        .map(|a| {
            (
                a["rule"].as_str().unwrap_or_default().to_string(),
                a["actor"]["ip"]
                    .as_str()
                    .or(a["actor"]["device"].as_str())
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    let want: BTreeSet<(String, String)> = [
        ("token.forged", "127.0.0.20"),
        ("token.expired-replay", "127.0.0.50"),
        ("token.shared-across-addresses", "device-r"),
        // The follow-up folds one request, from the fifth address.
        ("token.shared-across-addresses", "127.0.0.34"),
        ("device.shared-across-addresses", "device-r"),
        ("device.shared-across-addresses", "127.0.0.34"),
        ("device.shared-across-addresses", "device-s"),
        ("device.shared-across-addresses", "127.0.0.44"),
        ("token.binding-mismatch", "127.0.0.60"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(flagged, want);
    for a in &golden {
        let actor = a["actor"].to_string();
        for genuine in [
            "127.0.0.10",
            "127.0.0.11",
            "127.0.0.12",
            "127.0.0.13",
            "device-a",
            "device-b",
            "device-c",
        ] {
            assert!(!actor.contains(genuine), "genuine client flagged: {a}");
        }
        assert!(a["summary"].as_str().is_some_and(|s| s.len() > 20));
        assert!(a["count"].as_u64().is_some_and(|c| c >= 1));
        assert!(a["first_seen"].as_str() <= a["last_seen"].as_str());
    }
}

#[test]
fn rules_flag_replaces_the_builtin_pack() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_rules(dir.path(), "only.yaml", VALID_ONLY);
    let alerts = replay_alerts(&["--rules", dir.path().to_str().expect("utf-8")], "2");
    assert!(!alerts.is_empty());
    assert!(
        alerts.iter().all(|a| a["rule"] == "test.valid-tokens"),
        "only the folder's rule runs"
    );
    // One alert per request with a valid token (suppression off): 24 in the sample's
    // expected.jsonl.
    assert_eq!(alerts.len(), 24);
}

#[test]
fn a_broken_rules_folder_stops_replay_with_exit_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_rules(
        dir.path(),
        "bad.yaml",
        &VALID_ONLY.replace("kind: threshold", "kind: thresold"),
    );
    let o = shieldtap(&[
        "replay",
        "samples/token-abuse/capture.pcap",
        "--rules",
        dir.path().to_str().expect("utf-8"),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    assert!(
        err.contains("bad.yaml:8:22: unknown detector `thresold`"),
        "{err}"
    );
}

fn replay_sample(name: &str, workers: &str, summary: Option<&Path>) -> Vec<Value> {
    let capture = format!("samples/{name}/capture.pcap");
    let config = format!("samples/{name}/shieldtap.toml");
    let mut args = vec![
        "replay",
        capture.as_str(),
        "--config",
        config.as_str(),
        "--workers",
        workers,
    ];
    let summary_arg;
    if let Some(s) = summary {
        summary_arg = s.to_str().expect("utf-8").to_string();
        args.extend_from_slice(&["--summary-json", summary_arg.as_str()]);
    }
    let o = shieldtap(&args);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(!out.contains("eyJ"), "a token leaked into alerts");
    for secret in ["victim01@example.com", "alice@example.com", "Winter2026"] {
        assert!(!out.contains(secret), "personal data in clear: {secret}");
    }
    out.lines()
        .map(|l| serde_json::from_str(l).expect("alert is JSON"))
        .collect()
}

/// samples/bots-and-stuffing: genuine apps with human think times, a scraper with a stolen
/// login and no attestation, a credential stuffer, a distributed stuffer over ten
/// addresses, and a cadence bot with an expired token; all recorded from real clients.
#[test]
fn bots_and_stuffing_sample_flags_every_attacker_and_no_genuine_device() {
    let golden: Vec<Value> =
        std::fs::read_to_string(Path::new(ROOT).join("samples/bots-and-stuffing/alerts.jsonl"))
            .expect("alerts.jsonl")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let summary = dir.path().join("summary.json");
    for workers in ["1", "2", "4"] {
        let got = replay_sample("bots-and-stuffing", workers, Some(&summary));
        assert_eq!(got, golden, "with {workers} workers");
    }
    // Categories per attacker (by address, or by the account or endpoint keyed on).
    let categories = |pick: &dyn Fn(&Value) -> bool| -> BTreeSet<String> {
        golden
            .iter()
            .filter(|a| pick(a))
            .map(|a| a["category"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let set = |v: &[&str]| -> BTreeSet<String> { v.iter().map(|s| s.to_string()).collect() };
    let ip_is = |ip: &'static str| move |a: &Value| a["actor"]["ip"] == ip;
    // The scraper walks other users' records with alice's stolen login (bola) and gets
    // their e-mail addresses without attestation (data-exposure).
    assert_eq!(
        categories(&ip_is("127.0.0.30")),
        set(&["bola", "bot", "data-exposure", "scraping"])
    );
    assert_eq!(
        categories(&ip_is("127.0.0.40")),
        set(&["bot", "credential-stuffing"])
    );
    assert_eq!(
        categories(&ip_is("127.0.0.60")),
        set(&["bot", "token-replay"])
    );
    // The stolen account, and the login endpoint sprayed from ten addresses.
    assert!(golden.iter().any(|a| a["rule"] == "bot.credential-misuse"
        && a["actor"]["user"] == "a***@example.com"
        && a["actor"]["ip"].is_null()));
    let distributed: Vec<&Value> = golden
        .iter()
        .filter(|a| a["rule"] == "stuffing.distributed" && a["follow_up"] == false)
        .collect();
    assert_eq!(distributed.len(), 1);
    assert_eq!(distributed[0]["endpoint"], "POST /api/v1/login");
    assert!(
        distributed[0]["evidence"]["addresses"]
            .as_array()
            .is_some_and(|v| v.len() >= 8)
    );
    // No genuine device, address or login is named at medium or above (here: at all).
    assert_no_genuine_actor(
        &golden,
        &[
            "127.0.0.10",
            "127.0.0.11",
            "127.0.0.12",
            "device-a",
            "device-b",
            "device-c",
        ],
    );
    for a in &golden {
        assert_ne!(a["actor"]["user"], "b***@example.com");
        assert_ne!(a["actor"]["user"], "c***@example.com");
    }
    // The risk summary ranks attackers, names no genuine device, and masks users.
    let s: Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).expect("summary")).expect("json");
    let top = s["actors"]["top"].as_array().expect("top actors");
    assert!(!top.is_empty());
    assert!(top.iter().all(|a| a["risk"].as_u64() > Some(0)));
    let ids: Vec<&str> = top.iter().filter_map(|a| a["id"].as_str()).collect();
    assert!(
        ids.contains(&"127.0.0.40") && ids.contains(&"127.0.0.30"),
        "{ids:?}"
    );
    assert!(ids.contains(&"a***@example.com"), "{ids:?}");
    for genuine in [
        "127.0.0.10",
        "127.0.0.11",
        "127.0.0.12",
        "device-a",
        "device-b",
    ] {
        assert!(!ids.contains(&genuine), "{ids:?}");
    }
    assert_eq!(s["actors"]["addresses"], 16);
    assert_eq!(s["actors"]["evicted"], 0);
}

/// samples/bola: a vulnerable API (no object-level checks); genuine users read their own
/// profile and orders, orders they created, /me and shared catalogue items; mallory, with a
/// valid attestation, walks other users' profiles and orders.
#[test]
fn bola_sample_flags_the_prober_with_evidence_and_no_genuine_user() {
    let golden: Vec<Value> =
        std::fs::read_to_string(Path::new(ROOT).join("samples/bola/alerts.jsonl"))
            .expect("alerts.jsonl")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
    for workers in ["1", "3"] {
        assert_eq!(
            replay_sample("bola", workers, None),
            golden,
            "with {workers} workers"
        );
    }
    assert!(!golden.is_empty());
    // Every alert that names a client names mallory (route-level exposure alerts name none).
    for a in golden.iter().filter(|a| !a["actor"]["ip"].is_null()) {
        assert_eq!(a["actor"]["user"], "1004", "only mallory: {a}");
        assert_eq!(a["actor"]["device"], "device-mallory");
    }
    for a in golden.iter().filter(|a| a["category"] == "bola") {
        assert_eq!(a["actor"]["user"], "1004", "only mallory: {a}");
        // Sample objects appear as hashes (a sequence alert states the walk's bounds).
        let text = a["evidence"]["foreign_objects"].to_string();
        for id in ["1001", "5001"] {
            assert!(!text.contains(id), "object ids appear only hashed: {text}");
        }
        assert!(!a.to_string().contains("@example.com"), "{a}");
    }
    let first = |rule: &str| {
        golden
            .iter()
            .find(|a| a["rule"] == rule && a["follow_up"] == false)
            .unwrap_or_else(|| panic!("no {rule} alert"))
    };
    let cross = first("bola.cross-user-access");
    assert_eq!(cross["severity"], "high");
    assert_eq!(cross["evidence"]["ownership"]["other"], 1);
    assert!(
        cross["evidence"]["foreign_objects"][0]
            .as_str()
            .is_some_and(|s| s.starts_with("user:"))
    );
    let users = golden
        .iter()
        .find(|a| a["rule"] == "bola.enumeration" && a["endpoint"] == "GET /api/v1/users/{id}")
        .expect("enumeration of users");
    assert_eq!(users["evidence"]["distinct_object"], 8);
    assert!(users["evidence"]["statuses"]["404"].as_u64() >= Some(1));
    assert!(golden.iter().any(|a| a["rule"] == "bola.enumeration"
        && a["endpoint"] == "GET /api/v1/orders/{id}"
        && a["evidence"]["ownership"]["other"] == 8));
    assert!(golden.iter().any(|a| a["rule"] == "bola.not-found-probing"));
    assert!(golden.iter().any(|a| a["rule"] == "bola.sequential-ids"));
}

/// samples/mobile-network: a mobile API behind nginx (clients known only by
/// X-Forwarded-For) with 77 genuine devices (40 behind one carrier-NAT address, roaming
/// phones, background sync, power users browsing a public catalogue and a store locator,
/// apps calling before their first token, tokens a few seconds past `exp`) and five
/// attackers: a token copier, a distributed credential stuffer (partly behind the same
/// NAT), a scraper, a BOLA prober and a device farm. `truth.json` lists every actor.
#[test]
fn mobile_network_sample_names_every_attacker_and_no_genuine_device() {
    let dir = Path::new(ROOT).join("samples/mobile-network");
    let golden: Vec<Value> = std::fs::read_to_string(dir.join("alerts.jsonl"))
        .expect("alerts.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    for workers in ["1", "2", "4"] {
        let got = replay_sample("mobile-network", workers, None);
        assert_eq!(got, golden, "with {workers} workers");
    }
    let truth: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("truth.json")).expect("truth"))
            .expect("truth.json");
    let shared: BTreeSet<String> = truth["shared_addresses"]
        .as_object()
        .expect("shared_addresses")
        .keys()
        .cloned()
        .collect();
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let serious =
        |a: &&Value| matches!(a["severity"].as_str(), Some("medium" | "high" | "critical"));
    // Whom an alert's actor names: its device or user, or its address when the address is
    // one client's (an address many phones share names none of them).
    let names = |a: &Value, actor: &Value| -> bool {
        let act = &a["actor"];
        let any = |field: &str, list: &str| {
            act[field]
                .as_str()
                .is_some_and(|v| strs(&actor[list]).iter().any(|x| x == v))
        };
        any("device", "devices")
            || any("user", "users")
            || (act["ip"].as_str().is_some_and(|ip| !shared.contains(ip)) && any("ip", "addresses"))
    };
    let actors = truth["actors"].as_array().expect("actors");
    let mut genuine = 0;
    for actor in actors {
        let name = actor["name"].as_str().unwrap_or_default();
        let hits: Vec<&Value> = golden
            .iter()
            .filter(serious)
            .filter(|a| names(a, actor))
            .collect();
        if actor["role"] == "genuine" {
            genuine += 1;
            assert!(hits.is_empty(), "genuine {name} named: {hits:?}");
        } else {
            // A distributed stuffer is named by the endpoint alert listing its addresses.
            let listed = golden.iter().filter(serious).any(|a| {
                strs(&a["evidence"]["addresses"])
                    .iter()
                    .any(|ip| !shared.contains(ip) && strs(&actor["addresses"]).contains(ip))
                    && a["rule"]
                        .as_str()
                        .is_some_and(|r| r.starts_with("stuffing."))
            });
            assert!(!hits.is_empty() || listed, "attacker {name} not named");
        }
    }
    assert_eq!(genuine, 77, "truth.json lists 77 genuine devices");
    // Alerts keyed by a shared address say so, and name no device or user behind it.
    for a in golden.iter().filter(|a| {
        a["actor"]["ip"]
            .as_str()
            .is_some_and(|ip| shared.contains(ip))
    }) {
        assert!(
            a["actor"]["device"].is_null() && a["actor"]["user"].is_null(),
            "{a}"
        );
        if !a["follow_up"].as_bool().unwrap_or(true) {
            assert!(
                a["evidence"]["shared_address"]["attested_devices"].as_u64() >= Some(5),
                "{a}"
            );
        }
    }
    // The store locator's and the catalogue's public data is not personal-data exposure.
    assert!(
        !golden.iter().any(|a| a["category"] == "data-exposure"),
        "public routes reported as exposure"
    );
}

/// Detect shards spread the rules' key state by key over threads; the merge puts their
/// alerts back in the order one engine emits them. Every sample with golden alerts gives
/// exactly those with 1, 2 and 4 shards, with 1 and 2 workers.
#[test]
fn golden_samples_give_their_alerts_with_any_shard_count() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for name in [
        "bola",
        "bots-and-stuffing",
        "data-exposure",
        "mobile-network",
        "token-abuse",
    ] {
        let dir = Path::new(ROOT).join("samples").join(name);
        let golden: Vec<Value> = std::fs::read_to_string(dir.join("alerts.jsonl"))
            .expect("alerts.jsonl")
            .lines()
            .map(|l| serde_json::from_str(l).expect("golden alert is JSON"))
            .collect();
        assert!(!golden.is_empty(), "{name}: no golden alerts");
        let base = std::fs::read_to_string(dir.join("shieldtap.toml")).expect("config");
        for shards in [1, 2, 4] {
            let config = tmp.path().join(format!("{name}-{shards}.toml"));
            std::fs::write(
                &config,
                format!("{base}\n[runtime]\ndetect_shards = {shards}\n"),
            )
            .expect("write config");
            let capture = dir.join("capture.pcap");
            for workers in ["1", "2"] {
                let o = shieldtap(&[
                    "replay",
                    capture.to_str().expect("utf-8"),
                    "--config",
                    config.to_str().expect("utf-8"),
                    "--workers",
                    workers,
                ]);
                assert!(o.status.success(), "{}", text(&o.stderr));
                let got: Vec<Value> = text(&o.stdout)
                    .lines()
                    .map(|l| serde_json::from_str(l).expect("alert is JSON"))
                    .collect();
                assert_eq!(
                    got, golden,
                    "{name} with {shards} shards and {workers} workers"
                );
            }
        }
    }
}

/// samples/grpc: a grpcio shop API over HTTP/2 (gzip messages, server streaming,
/// trailers-only errors) with four genuine app users, a GetProfile scraper with a stolen
/// login and no attestation, and a Login stuffer; recorded from real clients. The built-in
/// rules work on gRPC unchanged: objects come from the request messages, failed logins
/// from `grpc-status` 16, usernames and exposed fields from the protobuf messages, named
/// by the sample's descriptor set.
#[test]
fn grpc_sample_flags_the_scraper_and_the_stuffer_and_no_genuine_user() {
    let golden: Vec<Value> =
        std::fs::read_to_string(Path::new(ROOT).join("samples/grpc/alerts.jsonl"))
            .expect("alerts.jsonl")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
    for workers in ["1", "2", "4"] {
        let got = replay_sample("grpc", workers, None);
        assert_eq!(got, golden, "with {workers} workers");
    }
    let categories = |ip: &str| -> BTreeSet<String> {
        golden
            .iter()
            .filter(|a| a["actor"]["ip"] == ip)
            .map(|a| a["category"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let set = |v: &[&str]| -> BTreeSet<String> { v.iter().map(|s| s.to_string()).collect() };
    assert_eq!(
        categories("127.0.0.30"),
        set(&["bola", "bot", "data-exposure", "scraping"])
    );
    assert_eq!(
        categories("127.0.0.40"),
        set(&["bot", "credential-stuffing"])
    );
    let rules = |ip: &str| -> BTreeSet<String> {
        golden
            .iter()
            .filter(|a| a["actor"]["ip"] == ip)
            .map(|a| a["rule"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    for r in [
        "scraping.breadth",
        "scraping.sequential-walk",
        "exposure.unattested-client",
    ] {
        assert!(rules("127.0.0.30").contains(r), "{r}");
    }
    for r in ["stuffing.failed-logins", "stuffing.many-usernames"] {
        assert!(rules("127.0.0.40").contains(r), "{r}");
    }
    // No genuine address or device is named at all.
    assert_no_genuine_actor(
        &golden,
        &[
            "127.0.0.10",
            "127.0.0.11",
            "127.0.0.12",
            "127.0.0.13",
            "device-a",
            "device-b",
            "device-c",
            "device-d",
        ],
    );
    // The exposure scan names the personal fields of the protobuf Profile by name.
    let exposed = |alerts: &[Value]| -> BTreeSet<(String, String)> {
        alerts
            .iter()
            .filter(|a| a["rule"] == "exposure.unattested-client")
            .flat_map(|a| {
                a["evidence"]["exposed_fields"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .map(|f| {
                (
                    f["path"].as_str().unwrap_or_default().to_string(),
                    f["class"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    };
    let pairs = |v: &[(&str, &str)]| -> BTreeSet<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    assert_eq!(
        exposed(&golden),
        pairs(&[
            ("$.address.street", "street-address"),
            ("$.email", "email"),
            ("$.phone", "phone")
        ])
    );
    // The stuffer's usernames come from the Login messages (masked).
    assert!(golden.iter().any(|a| a["rule"] == "stuffing.many-usernames"
        && a["evidence"].to_string().contains("v***@example.com")));
    // Without the descriptor set the same fields are found by their values' shapes, named
    // by field number.
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = std::fs::read_to_string(Path::new(ROOT).join("samples/grpc/shieldtap.toml"))
        .expect("config");
    let cfg = cfg.split("[grpc]").next().expect("config head");
    let plain = dir.path().join("plain.toml");
    std::fs::write(&plain, cfg).expect("write config");
    let o = shieldtap(&[
        "replay",
        "samples/grpc/capture.pcap",
        "--config",
        plain.to_str().expect("utf-8"),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let schemaless: Vec<Value> = text(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("alert is JSON"))
        .collect();
    assert_eq!(
        exposed(&schemaless),
        pairs(&[("$.3", "email"), ("$.4", "phone")])
    );
    assert_eq!(
        categories("127.0.0.30"),
        schemaless
            .iter()
            .filter(|a| a["actor"]["ip"] == "127.0.0.30")
            .map(|a| a["category"].as_str().unwrap_or_default().to_string())
            .collect::<BTreeSet<_>>()
    );
}
