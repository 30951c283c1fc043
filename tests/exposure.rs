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
