//! Every token fixture (made by PyJWT, `scripts/make_token_fixtures.py`) through the library:
//! `Verifier::attest`, `Verifier::identify` and `token::verify_command`.

use serde::Deserialize;
use shieldtap::config::Config;
use shieldtap::http::Headers;
use shieldtap::token::{TokenConfig, TokenHash, Verdict, Verifier, verify_command};

#[derive(Deserialize)]
struct Fixtures {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    config: String,
    target: String,
    headers: Vec<(String, String)>,
    now: f64,
    expect: Expect,
    user: Option<ExpectUser>,
    verify: Option<ExpectVerify>,
}

#[derive(Deserialize, Debug, PartialEq)]
struct Expect {
    family: String,
    verdict: String,
    device: Option<String>,
    binding: String,
    status_value: Option<String>,
}

#[derive(Deserialize, Debug, PartialEq)]
struct ExpectUser {
    id: String,
    verified: bool,
    verdict: String,
}

#[derive(Deserialize)]
struct ExpectVerify {
    token: String,
    headers: Vec<(String, String)>,
    verdict: String,
}

fn load() -> Fixtures {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/tokens/cases.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixtures present"))
        .expect("fixtures parse")
}

/// The case's config through the same parser `--config` uses.
fn config(case: &Case) -> TokenConfig {
    Config::parse(&case.config, &case.name)
        .unwrap_or_else(|e| panic!("{}: {e}", case.name))
        .token
}

fn headers(pairs: &[(String, String)]) -> Headers {
    pairs.iter().map(|(n, v)| (n, v)).collect()
}

#[test]
fn every_fixture_gets_its_verdict() {
    // Cargo runs integration tests from the crate root, where the configs' paths start.
    std::env::set_current_dir(env!("CARGO_MANIFEST_DIR")).expect("crate root");
    let fixtures = load();
    assert!(fixtures.cases.len() >= 60, "{} cases", fixtures.cases.len());
    let mut failures = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for case in &fixtures.cases {
        let verifier = Verifier::new(config(case)).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let hdrs = headers(&case.headers);
        let a = verifier.attest(&hdrs, &case.target, case.now);
        let got = Expect {
            family: a.family.to_string(),
            verdict: a.verdict.as_str().to_owned(),
            device: a.device.as_deref().map(str::to_owned),
            binding: a.binding.as_str().to_owned(),
            status_value: a.status_value.as_deref().map(str::to_owned),
        };
        if got != case.expect {
            failures.push(format!(
                "{}: attest: expected {:?}, got {:?}",
                case.name, case.expect, got
            ));
        }
        seen.insert(a.verdict);

        // Tokens leave the stage only as a short hash.
        let json = serde_json::to_string(&a).expect("serializes");
        for (_, v) in &case.headers {
            if v.len() > 24 && json.contains(v.as_str()) {
                failures.push(format!("{}: token echoed in {json}", case.name));
            }
        }
        if let Some(h) = a.token_hash {
            assert_eq!(h.to_string().len(), 12);
        }

        // The verdict was counted for its family.
        let stats = verifier.stats();
        if stats.verdicts[&got.family][a.verdict.as_str()] != 1 {
            failures.push(format!("{}: not counted: {:?}", case.name, stats.verdicts));
        }

        let user = verifier.identify(&hdrs, case.now).map(|u| ExpectUser {
            id: u.id.to_string(),
            verified: u.verified,
            verdict: u.verdict.as_str().to_owned(),
        });
        if user != case.user {
            failures.push(format!(
                "{}: identify: expected {:?}, got {:?}",
                case.name, case.user, user
            ));
        }

        if let Some(v) = &case.verify {
            let (out, code) = verify_command(config(case), &v.token, &v.headers, Some(case.now));
            let want_code = if v.verdict == "valid" { 0 } else { 1 };
            if out["verdict"].as_str() != Some(v.verdict.as_str()) || code != want_code {
                failures.push(format!(
                    "{}: verify: expected {} ({want_code}), got {out} ({code})",
                    case.name, v.verdict
                ));
            }
            if v.token.len() > 24 && out.to_string().contains(&v.token) {
                failures.push(format!("{}: verify echoed the token", case.name));
            }
            if !out["claims"].is_object() {
                failures.push(format!(
                    "{}: verify: claims not an object: {out}",
                    case.name
                ));
            }
            if let Some(t) = out["token"].as_str() {
                assert_eq!(t, TokenHash::of(&v.token).to_string());
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        fixtures.cases.len(),
        failures.join("\n")
    );
    let missing: Vec<&str> = Verdict::ALL
        .iter()
        .filter(|v| !seen.contains(v))
        .map(|v| v.as_str())
        .collect();
    assert!(missing.is_empty(), "no fixture produces {missing:?}");
}

#[test]
fn cached_verdicts_match_fresh_ones() {
    std::env::set_current_dir(env!("CARGO_MANIFEST_DIR")).expect("crate root");
    for case in load().cases {
        let verifier = Verifier::new(config(&case)).expect("config");
        let hdrs = headers(&case.headers);
        let first = verifier.attest(&hdrs, &case.target, case.now);
        let second = verifier.attest(&hdrs, &case.target, case.now);
        assert_eq!(first, second, "{}", case.name);
    }
}
