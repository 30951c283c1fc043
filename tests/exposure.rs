//! Excessive data exposure on samples/data-exposure (real clients; an API whose profile
//! route returns e-mail, phone, home location, date of birth, a card number and a password
//! hash next to the name and avatar the app shows): the alerts name the route and each
//! sensitive field with its class, `/me` (allowed by a rule) raises nothing, and none of the
//! personal values the server sent appears in any output shieldtap writes.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const SAMPLE: &str = "samples/data-exposure";

fn jsonl(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

#[test]
fn profile_route_exposure_is_named_field_by_field_and_me_is_allowed() {
    let golden = jsonl(
        &std::fs::read_to_string(Path::new(ROOT).join(SAMPLE).join("alerts.jsonl"))
            .expect("alerts.jsonl"),
    );
    for workers in ["1", "2"] {
        let o = Command::new(env!("CARGO_BIN_EXE_shieldtap"))
            .args(["replay", &format!("{SAMPLE}/capture.pcap"), "--config"])
            .arg(format!("{SAMPLE}/shieldtap.toml"))
            .args(["--workers", workers])
            .current_dir(ROOT)
            .output()
            .expect("runs");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(
            jsonl(&String::from_utf8_lossy(&o.stdout)),
            golden,
            "{workers} workers"
        );
    }
    let first = golden
        .iter()
        .find(|a| a["rule"] == "exposure.sensitive-fields" && a["follow_up"] == false)
        .expect("one exposure alert for the route");
    assert_eq!(first["endpoint"], "GET /api/v1/users/{id}/profile");
    let fields: BTreeSet<(String, String)> = first["evidence"]["exposed_fields"]
        .as_array()
        .expect("fields")
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap_or_default().to_string(),
                f["class"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let want: BTreeSet<(String, String)> = [
        ("$.email", "email"),
        ("$.phone", "phone"),
        ("$.home.lat", "geolocation"),
        ("$.home.lon", "geolocation"),
        ("$.home.street", "street-address"),
        ("$.date_of_birth", "date-of-birth"),
        ("$.payment.card_number", "payment-card"),
        ("$.password_hash", "password-hash"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(fields, want);
    // One alert per route and field set: the follow-up counts the other six responses.
    let per_route: Vec<&Value> = golden
        .iter()
        .filter(|a| a["rule"] == "exposure.sensitive-fields")
        .collect();
    assert_eq!(
        per_route
            .iter()
            .map(|a| a["count"].as_u64().unwrap_or(0))
            .sum::<u64>(),
        7
    );
    // `/me` returns the caller's own e-mail: allowed, nothing raised about it.
    assert!(!golden.iter().any(|a| a["endpoint"] == "GET /api/v1/me"));
    // Someone else's data (carol viewing alice; the script) and unattested receipt: high.
    let high: BTreeSet<(String, String)> = golden
        .iter()
        .filter(|a| a["severity"] == "high" && a["category"] == "data-exposure")
        .filter_map(|a| {
            Some((
                a["rule"].as_str()?.to_string(),
                a["actor"]["ip"].as_str()?.to_string(),
            ))
        })
        .collect();
    for (rule, ip) in [
        ("exposure.other-users-data", "127.0.0.12"),
        ("exposure.other-users-data", "127.0.0.50"),
        ("exposure.unattested-client", "127.0.0.50"),
    ] {
        assert!(
            high.contains(&(rule.to_string(), ip.to_string())),
            "{rule} {ip}: {high:?}"
        );
    }
}

#[test]
fn no_planted_value_reaches_any_output() {
    let planted: Vec<String> = serde_json::from_str(
        &std::fs::read_to_string(Path::new(ROOT).join(SAMPLE).join("planted.json"))
            .expect("planted.json"),
    )
    .expect("json");
    assert!(planted.len() >= 20);
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = dir.path().join("cfg.toml");
    std::fs::write(
        &cfg,
        format!(
            "{}\n[[webhook]]\nname = \"down\"\nurl = \"http://127.0.0.1:9/hook\"\nspool_dir = \"{}\"\ndrain_secs = 1\n",
            std::fs::read_to_string(Path::new(ROOT).join(SAMPLE).join("shieldtap.toml"))
                .expect("config"),
            dir.path().join("spool").display()
        ),
    )
    .expect("config");
    let out = |name: &str| dir.path().join(name);
    let o = Command::new(env!("CARGO_BIN_EXE_shieldtap"))
        .args([
            "--log-level",
            "debug",
            "replay",
            &format!("{SAMPLE}/capture.pcap"),
            "--config",
        ])
        .arg(&cfg)
        .arg("--alerts-out")
        .arg(out("alerts.jsonl"))
        .arg("--transactions-out")
        .arg(out("tx.jsonl"))
        .arg("--summary-json")
        .arg(out("summary.json"))
        .arg("--inventory-out")
        .arg(out("inventory.json"))
        .current_dir(ROOT)
        .output()
        .expect("runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::write(out("stderr.log"), &o.stderr).expect("log");
    let mut files = vec![
        out("alerts.jsonl"),
        out("tx.jsonl"),
        out("summary.json"),
        out("inventory.json"),
        out("stderr.log"),
    ];
    files.push(dir.path().join("spool/down/queue.jsonl"));
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert!(!text.is_empty(), "{} is empty", f.display());
        for v in &planted {
            assert!(
                !text.contains(v.as_str()),
                "{v} leaked into {}",
                f.display()
            );
        }
    }
    // The inventory knows every field and class of the profile route, and no value.
    let inv: Value =
        serde_json::from_str(&std::fs::read_to_string(out("inventory.json")).expect("inv"))
            .expect("json");
    let profile = &inv["routes"]["GET /api/v1/users/{id}/profile"];
    assert_eq!(profile["responses"], 7);
    assert_eq!(
        profile["fields"]["$.payment.card_number"]["classes"]["payment-card"],
        7
    );
    assert_eq!(profile["fields"]["$.name"]["seen"], 7);
    assert!(
        profile["fields"]["$.name"]["classes"]
            .as_object()
            .is_some_and(|c| c.is_empty())
    );
}

/// The password hash vectors (`scripts/make_password_hash_vectors.py`: Django, argon2-cffi,
/// bcrypt, passlib, crypt(3) and published layouts): (format, field, value).
fn password_hash_vectors() -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(
        Path::new(ROOT).join("tests/fixtures/password-hashes/vectors.jsonl"),
    )
    .expect("vectors.jsonl");
    jsonl(&text)
        .into_iter()
        .map(|v| {
            let s = |k: &str| v[k].as_str().expect(k).to_string();
            (s("format"), s("field"), s("value"))
        })
        .collect()
}

fn json_headers() -> shieldtap::http::Headers {
    [("Content-Type", "application/json")].into_iter().collect()
}

/// The classes `scan` names in a JSON body, by field path.
fn scanned(body: &Value) -> BTreeSet<(String, String)> {
    let body = serde_json::to_vec(body).expect("json");
    shieldtap::detect::exposure::scan(&json_headers(), &body)
        .findings
        .iter()
        .map(|f| (f.path.to_string(), f.class.as_str().to_string()))
        .collect()
}

#[test]
fn password_hashes_in_every_usual_format_are_named() {
    use shieldtap::detect::exposure::{Class, classify};
    let vectors = password_hash_vectors();
    assert!(vectors.len() >= 40, "{} vectors", vectors.len());
    let mut missed = Vec::new();
    for (format, field, value) in &vectors {
        // A format vector is a hash by its shape alone: under a neutral name and inside a
        // profile under a name that says nothing. A field vector only under its field.
        let (name, key) = if field.is_empty() {
            ("value".to_string(), "credential")
        } else {
            (field.to_ascii_lowercase(), field.as_str())
        };
        let by_value = classify(&name, value);
        let body = serde_json::json!({"id": 2001, "name": "Alice", "profile": {key: value}});
        let path = format!("$.profile.{key}");
        let in_body = scanned(&body).contains(&(path, "password-hash".to_string()));
        if by_value != Some(Class::PasswordHash) || !in_body {
            missed.push(format!(
                "{format} under {name:?}: classify {by_value:?}, in a body {in_body}"
            ));
        }
    }
    println!(
        "password hash vectors named: {} of {}",
        vectors.len() - missed.len(),
        vectors.len()
    );
    assert!(missed.is_empty(), "not named:\n{}", missed.join("\n"));
}

#[test]
fn dollar_values_and_password_settings_are_not_password_hashes() {
    use shieldtap::detect::exposure::{Class, classify};
    let near_misses = [
        ("price", "$1,299.00"),
        ("price", "$5"),
        ("banner", "$6 off your next order"),
        ("label", "$1$ shipping"),
        ("template", "${user.name} joined"),
        ("pattern", "^\\$[0-9]+\\$$"),
        ("replacement", "$1$2"),
        ("shell", "$y$ echo"),
        ("password_policy", "min 12 characters, one digit"),
        ("password_min_length", "12"),
        ("password_changed_at", "2024-05-01T10:00:00Z"),
        ("password_expires_in_days", "90"),
        ("password_reset_url", "https://example.com/reset"),
        ("forgot_password_link", "/account/forgot"),
        ("password_strength", "strong"),
        ("passwordless", "enabled"),
        ("passport_number", "X1234567"),
        ("pass_rate", "0.93"),
        ("bypass", "true"),
        ("compass", "NNE"),
        ("password", "********"),
        ("password", "[REDACTED]"),
        ("password", "   "),
        ("etag", "5f4dcc3b5aa765d61d8327deb882cf99"),
        (
            "checksum",
            "c4bbcb1fbec99d65bf59d85c8cb62ee2db963f0fe106f483d9afa73bd4e39a8a",
        ),
        ("note", "md5 of the file"),
        ("mode", "{SHA}"),
        ("rating", "*****"),
    ];
    let mut wrong = Vec::new();
    for (name, value) in near_misses {
        if classify(name, value) == Some(Class::PasswordHash) {
            wrong.push(format!("{name}: {value:?}"));
        }
    }
    // Settings about passwords, in a body: booleans, numbers, objects, null.
    let body = serde_json::json!({
        "id": 2001,
        "has_password": true,
        "password_set": true,
        "password": null,
        "password_min_length": 12,
        "password_policy": {"min_length": 12, "require_digit": true},
        "passwordless": false,
        "price": "$1,299.00",
        "total": {"amount": "$5.00", "currency": "USD"},
    });
    let found = scanned(&body);
    if !found.is_empty() {
        wrong.push(format!("in a body: {found:?}"));
    }
    println!(
        "near misses named as password hashes: {} of {}",
        wrong.len(),
        near_misses.len() + 1
    );
    assert!(
        wrong.is_empty(),
        "named as password hashes:\n{}",
        wrong.join("\n")
    );
}
