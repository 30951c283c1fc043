//! Replaying samples/approov-tokens with its config gives each request the verdict PyJWT's
//! token was made for; `token verify` judges the same tokens the same way. The same requests
//! with a `kid` in every token (samples/approov-tokens-kid, as Approov sends after
//! `approov secret -setKeyID`) get the same verdicts from the unnamed or the named secret.

use std::process::Command;

use serde_json::Value;

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/samples/approov-tokens");
const KID_SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/samples/approov-tokens-kid");

fn jsonl(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

fn replay(workers: &str) -> Vec<Value> {
    replay_with(SAMPLE, "shieldtap.toml", workers).0
}

/// Transactions in packet-time order, and alerts.
fn replay_with(sample: &str, config: &str, workers: &str) -> (Vec<Value>, Vec<Value>) {
    let alerts = tempfile::NamedTempFile::new().expect("temp file");
    let o = Command::new(env!("CARGO_BIN_EXE_shieldtap"))
        .args([
            "replay",
            &format!("{sample}/capture.pcap"),
            "--config",
            &format!("{sample}/{config}"),
            "--transactions-out",
            "-",
            "--alerts-out",
            &alerts.path().display().to_string(),
            "--workers",
            workers,
        ])
        .output()
        .expect("runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut v = jsonl(&String::from_utf8_lossy(&o.stdout));
    v.sort_by(|a, b| a["ts"].as_str().cmp(&b["ts"].as_str()));
    let alerts = jsonl(&std::fs::read_to_string(alerts.path()).expect("alerts"));
    (v, alerts)
}

fn expected(sample: &str) -> Vec<Value> {
    jsonl(&std::fs::read_to_string(format!("{sample}/expected.jsonl")).expect("expected.jsonl"))
}

/// Addresses named by `bot.unattested-traffic` alerts.
fn unattested_addresses(alerts: &[Value]) -> std::collections::BTreeSet<String> {
    alerts
        .iter()
        .filter(|a| a["rule"] == "bot.unattested-traffic")
        .filter_map(|a| a["actor"]["ip"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn tokens_with_a_kid_get_the_verdicts_they_get_without_it() {
    let without_kid = expected(SAMPLE);
    let want = expected(KID_SAMPLE);
    // The kid sample repeats the plain sample's cases, then adds genuine devices.
    let cases = &want[..without_kid.len()];
    for (w, p) in cases.iter().zip(&without_kid) {
        assert_eq!((&w["case"], &w["verdict"]), (&p["case"], &p["verdict"]));
    }
    let devices: std::collections::BTreeSet<&str> = want[without_kid.len()..]
        .iter()
        .filter_map(|e| e["client"].as_str())
        .collect();
    assert!(
        devices.len() >= 2,
        "the kid sample needs its genuine devices"
    );
    let plain: Vec<Value> = replay("2")
        .iter()
        .map(|t| t["attestation"]["verdict"].clone())
        .collect();

    for config in ["shieldtap.toml", "shieldtap-named.toml"] {
        for workers in ["1", "2"] {
            let (got, alerts) = replay_with(KID_SAMPLE, config, workers);
            assert_eq!(got.len(), want.len(), "{config}");
            for (g, e) in got.iter().zip(&want) {
                let a = &g["attestation"];
                let what = format!("{config}, case {}", e["case"]);
                assert_eq!(a["verdict"], e["verdict"], "{what}");
                assert_eq!(a["binding"], e["binding"], "{what}");
                assert_eq!(g["client"]["ip"], e["client"], "{what}");
                // User tokens carry the kid too and verify against the user secret.
                assert_eq!(g["user_verdict"], "valid", "{what}");
            }
            let got_cases: Vec<&Value> = got[..plain.len()]
                .iter()
                .map(|t| &t["attestation"]["verdict"])
                .collect();
            assert_eq!(got_cases, plain.iter().collect::<Vec<_>>(), "{config}");
            let flagged = unattested_addresses(&alerts);
            assert!(
                devices.iter().all(|d| !flagged.contains(*d)),
                "{config}: genuine devices flagged as unattested: {flagged:?}"
            );
        }
    }

    // The same secrets under another key id: the kid names no key and no secret is
    // unnamed, so every signed token is unknown-key and the devices look unattested.
    let (got, alerts) = replay_with(KID_SAMPLE, "shieldtap-wrong-named.toml", "2");
    for (g, e) in got.iter().zip(&want) {
        let keeps = ["missing", "status-value", "alg-not-allowed"];
        let verdict = e["verdict"].as_str().expect("verdict");
        let wanted = if keeps.contains(&verdict) {
            verdict
        } else {
            "unknown-key"
        };
        assert_eq!(g["attestation"]["verdict"], wanted, "case {}", e["case"]);
        assert_eq!(g["user_verdict"], "unknown-key", "case {}", e["case"]);
    }
    let flagged = unattested_addresses(&alerts);
    assert!(
        devices.iter().all(|d| flagged.contains(*d)),
        "{flagged:?} should name every device of {devices:?}"
    );
}

#[test]
fn every_request_gets_its_expected_verdict() {
    let expected = expected(SAMPLE);
    for workers in ["1", "2"] {
        let got = replay(workers);
        assert_eq!(got.len(), expected.len());
        for (g, e) in got.iter().zip(&expected) {
            let a = &g["attestation"];
            assert_eq!(a["verdict"], e["verdict"], "case {}", e["case"]);
            assert_eq!(a["binding"], e["binding"], "case {}", e["case"]);
            assert_eq!(a["family"], "approov");
            // Tokens appear only as a short hash, never in clear.
            let line = g.to_string();
            assert!(!line.contains("eyJ"), "token leaked: {line}");
            if e["verdict"] == "valid" {
                assert!(
                    a["device"]
                        .as_str()
                        .is_some_and(|d| d.starts_with("device-genuine"))
                );
                assert_eq!(a["token"].as_str().map(str::len), Some(12));
            }
            if e["verdict"] == "bad-signature" {
                assert!(a["device"].is_null(), "a forged token names no device");
            }
            if e["verdict"] == "status-value" {
                assert_eq!(a["status_value"], "NO_NETWORK");
            }
            assert_eq!(g["user"], "user-123");
        }
    }
}

#[test]
fn token_verify_command_matches_pyjwt_fixtures() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tokens");
    let cases: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{dir}/cases.json")).expect("cases"))
            .expect("json");
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut checked = 0;
    for case in cases["cases"].as_array().expect("cases array") {
        let config = case["config"].as_str().expect("config");
        if config.contains("jwks_url") {
            continue; // needs a live HTTPS server: tests/token_jwks_https.rs covers it
        }
        let cfg = tmp
            .path()
            .join(format!("{}.toml", case["name"].as_str().expect("name")));
        std::fs::write(&cfg, config).expect("write config");
        let verify = &case["verify"];
        let Some(token) = verify["token"].as_str() else {
            continue; // cases without a token (missing header) have nothing to verify
        };
        let mut args = vec![
            "token".to_string(),
            "verify".into(),
            "--config".into(),
            cfg.display().to_string(),
            "--token".into(),
            token.to_string(),
            "--now".into(),
            case["now"].to_string(),
        ];
        for h in verify["headers"].as_array().expect("headers") {
            args.push("--header".into());
            args.push(format!(
                "{}: {}",
                h[0].as_str().expect("name"),
                h[1].as_str().expect("value")
            ));
        }
        let o = Command::new(env!("CARGO_BIN_EXE_shieldtap"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(&args)
            .output()
            .expect("runs");
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
            panic!(
                "{}: {e}: {}",
                case["name"],
                String::from_utf8_lossy(&o.stderr)
            )
        });
        assert_eq!(v["verdict"], verify["verdict"], "case {}", case["name"]);
        let want = if verify["verdict"] == "valid" { 0 } else { 1 };
        assert_eq!(o.status.code(), Some(want), "case {}", case["name"]);
        checked += 1;
    }
    assert!(checked >= 40, "only {checked} cases ran");
}

#[test]
fn token_verify_usage_errors_exit_2() {
    let o = Command::new(env!("CARGO_BIN_EXE_shieldtap"))
        .args(["token", "verify", "--token", "x", "--header", "no-colon"])
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(2));
    let o = Command::new(env!("CARGO_BIN_EXE_shieldtap"))
        .args([
            "token",
            "verify",
            "--token",
            "x",
            "--config",
            "/nonexistent.toml",
        ])
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(2));
}
