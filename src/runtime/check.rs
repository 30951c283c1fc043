//! `shieldtap rules check`: runs the test cases carried by rule files.
//!
//! A `transactions` test feeds its requests straight to the detectors; a `capture` test
//! replays the capture through the whole pipeline twice, with one worker and with three,
//! and requires identical alerts (worker count must not change results) as well as the
//! expected ones. Only alerts of the test's own file's rules are judged, and they must be
//! exactly the expected ones: a missing alert and an extra alert both fail.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use thin_vec::ThinVec;

use super::{AlertSink, Outputs, replay};
use crate::actor::Actor;
use crate::capture::{Progress, Timestamp};
use crate::config::Config;
use crate::detect::{Alert, DetectConfig, Engine, Event};
use crate::rules::{ExpectedAlert, RuleSet, RuleTest, TestInput, TestTransaction};
use crate::token::{TokenHash, Verdict};

/// Test time zero: 2026-01-01T00:00:00Z.
const TEST_EPOCH_SECS: u64 = 1_767_225_600;

/// Outcome of every test of a rule set.
#[derive(Debug, Default)]
pub struct CheckReport {
    pub passed: Vec<String>,
    /// (test, why)
    pub failed: Vec<(String, String)>,
    /// (test, why)
    pub skipped: Vec<(String, String)>,
}

/// Runs every test of `set`.
pub fn check_rules(set: &RuleSet) -> CheckReport {
    let mut report = CheckReport::default();
    for t in &set.tests {
        let label = format!("{} `{}`", t.origin, t.name);
        let got = match &t.input {
            TestInput::Transactions(txs) => Ok(run_transactions(set, txs)),
            TestInput::Capture { capture, config } => {
                // The built-in pack's captures live in the source tree, which an installed
                // binary does not have; a folder's own tests must find theirs.
                if !capture.exists() && set.source == "built-in" {
                    report
                        .skipped
                        .push((label, format!("capture {} not found", capture.display())));
                    continue;
                }
                run_capture(set, capture, config.as_ref())
            }
        };
        match got.and_then(|alerts| judge(t, &alerts)) {
            Ok(()) => report.passed.push(label),
            Err(why) => report.failed.push((label, why)),
        }
    }
    report
}

fn test_event(tx: &TestTransaction) -> Event {
    let ts = Timestamp((TEST_EPOCH_SECS as f64 * 1e9 + tx.at * 1e9).round() as u64);
    let verdict = tx
        .verdict
        .as_deref()
        .and_then(Verdict::from_name)
        .unwrap_or(Verdict::Missing);
    Event {
        ts,
        actor: Actor {
            ip: tx.ip,
            device: tx.device.as_deref().map(Arc::from),
            user: tx.user.as_deref().map(Arc::from),
        },
        method: Some(Arc::from(tx.method.to_ascii_uppercase())),
        host: tx
            .host
            .as_deref()
            .map(|h| Arc::from(h.to_ascii_lowercase())),
        route: Some(Arc::from(crate::route::route_of(crate::route::path_of(
            &tx.path,
        )))),
        endpoint: None,
        principal_key: None,
        body_bytes: tx
            .body
            .as_ref()
            .map(|b| u32::try_from(b.to_string().len()).unwrap_or(u32::MAX)),
        status: tx.status,
        family: (verdict != Verdict::Missing).then(|| Arc::from(tx.family.as_str())),
        verdict,
        token: tx.token.as_deref().map(TokenHash::of),
        expired_for: tx.expired_for_secs,
        object: Some(Arc::from(&*crate::redact::path(crate::route::path_of(
            &tx.path,
        )))),
        number: crate::detect::object_number(&tx.path),
        username: tx.username.as_deref().map(Arc::from),
        objects: crate::detect::request_objects(&tx.path, &crate::http::Headers::new(), b""),
        returned: tx
            .returns
            .iter()
            .filter_map(|r| r.split_once(':'))
            .map(|(c, id)| crate::detect::ObjectRef {
                collection: crate::detect::objects_collection(c),
                id: Arc::from(id),
            })
            .collect(),
        ja4: tx.ja4.as_deref().map(Arc::from),
        viewer: None,
        fingerprint: 0,
        ownership: None,
        cross_user: false,
        exposure: tx.body.as_ref().map(|b| {
            let hdr: crate::http::Headers =
                [("Content-Type", "application/json")].into_iter().collect();
            Arc::new(crate::detect::exposure::scan(
                &hdr,
                b.to_string().as_bytes(),
            ))
        }),
        exposed: ThinVec::new(),
        field_set: None,
        denied: false,
        foreign: ThinVec::new(),
        attested: false,
        shared_devices: 0,
        login: tx.login.unwrap_or_else(|| {
            crate::detect::LoginConfig::default()
                .routes
                .is_match(&crate::route::route_of(crate::route::path_of(&tx.path)))
        }),
    }
}

fn run_transactions(set: &RuleSet, txs: &[TestTransaction]) -> Vec<Alert> {
    let mut events: Vec<Event> = txs.iter().map(test_event).collect();
    events.sort_by_key(|e| e.ts);
    let mut engine = Engine::new(DetectConfig::default(), set);
    let mut alerts = Vec::new();
    for e in &events {
        engine.observe(e, &mut alerts);
    }
    engine.finish(&mut alerts);
    alerts
}

fn run_capture(
    set: &RuleSet,
    capture: &PathBuf,
    config: Option<&PathBuf>,
) -> Result<Vec<Alert>, String> {
    let cfg = match config {
        Some(p) => Config::load(p).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    let mut runs = Vec::new();
    for workers in [1, 3] {
        let sink = Arc::new(Mutex::new(Vec::new()));
        let outputs = Outputs {
            transactions: None,
            alerts: AlertSink::Collect(sink.clone()),
            metrics: Default::default(),
            webhooks: None,
            decisions: None,
            export: None,
        };
        replay(
            &cfg,
            set.clone(),
            std::slice::from_ref(capture),
            workers,
            outputs,
            &Progress::default(),
        )
        .map_err(|e| format!("replaying {}: {e}", capture.display()))?;
        let alerts = sink.lock().map(|v| v.clone()).unwrap_or_default();
        runs.push(alerts);
    }
    let lines = |v: &[Alert]| -> Vec<String> {
        v.iter()
            .map(|a| serde_json::to_string(a).unwrap_or_default())
            .collect()
    };
    let (one, three) = (lines(&runs[0]), lines(&runs[1]));
    if one != three {
        return Err(format!(
            "alerts differ between 1 and 3 workers:\n  1 worker:\n    {}\n  3 workers:\n    {}",
            one.join("\n    "),
            three.join("\n    ")
        ));
    }
    Ok(runs.swap_remove(0))
}

fn fits(e: &ExpectedAlert, a: &Alert) -> bool {
    if e.rule.value != a.rule.as_str() {
        return false;
    }
    if let Some(c) = e.count
        && c != a.count
    {
        return false;
    }
    if let Some(s) = e.severity
        && s != a.severity
    {
        return false;
    }
    if let Some(ep) = &e.endpoint
        && a.endpoint.as_deref() != Some(ep.as_str())
    {
        return false;
    }
    if let Some(actor) = &e.actor {
        let same = |want: &Option<String>, got: &Option<String>| {
            want.as_ref()
                .is_none_or(|w| got.as_deref() == Some(w.as_str()))
        };
        if !(same(&actor.ip, &a.actor.ip)
            && same(&actor.device, &a.actor.device)
            && same(&actor.user, &a.actor.user))
        {
            return false;
        }
    }
    true
}

/// Exactly the expected alerts among those of the test's rules.
fn judge(t: &RuleTest, alerts: &[Alert]) -> Result<(), String> {
    let mine: Vec<&Alert> = alerts
        .iter()
        .filter(|a| t.rules.contains(&a.rule))
        .collect();
    let mut used = vec![false; mine.len()];
    let mut missing = Vec::new();
    for e in &t.expect {
        match (0..mine.len()).find(|&i| !used[i] && fits(e, mine[i])) {
            Some(i) => used[i] = true,
            None => missing.push(format!(
                "rule {} actor {:?} count {:?}",
                e.rule.value,
                e.actor.as_ref().map(|a| (&a.ip, &a.device, &a.user)),
                e.count
            )),
        }
    }
    let extra: Vec<String> = mine
        .iter()
        .zip(&used)
        .filter(|(_, u)| !**u)
        .map(|(a, _)| serde_json::to_string(a).unwrap_or_default())
        .collect();
    if missing.is_empty() && extra.is_empty() {
        return Ok(());
    }
    let mut why = String::new();
    for m in &missing {
        why.push_str(&format!("\n  expected, not raised: {m}"));
    }
    for x in &extra {
        why.push_str(&format!("\n  raised, not expected: {x}"));
    }
    Err(why)
}
