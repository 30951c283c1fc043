//! Deep pipelining on one keep-alive connection, recorded from real peers: a Python raw
//! socket client sends 1,000 `GET /item/N` before reading anything, nginx answers each with
//! `X-Item: N` and body `N\n` (`scripts/record_pipelining.py`). `capture-gap.pcap` is the
//! same capture without the bytes of response 500, as a mirror that lost its segments shows
//! it (`scripts/drop_response.py --index 500`).
//!
//! Every response must pair with the request it answers: nothing is given up on the full
//! capture; on the gapped one exactly request 500 is given up (counted) and the 999 others
//! pair correctly; a small pending byte cap gives up old requests but never shifts pairs.

#[path = "common/pcap_http.rs"]
mod pcap_http;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use shieldtap::http::{Anomaly, HttpConfig, Transaction, header};

/// The response `drop_response.py` removed from `capture-gap.pcap`.
const DROPPED: u64 = 500;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pipelining")
        .join(name)
}

/// The item number a request asks for.
fn asked(t: &Transaction) -> Option<u64> {
    t.request
        .as_ref()?
        .target
        .strip_prefix("/item/")?
        .parse()
        .ok()
}

/// The item number a response answers, from its header and its body (which must agree).
fn answered(t: &Transaction) -> Option<u64> {
    let r = t.response.as_ref()?;
    let hdr: u64 = std::str::from_utf8(header(&r.headers, "X-Item")?)
        .ok()?
        .parse()
        .ok()?;
    assert_eq!(r.body.data, format!("{hdr}\n").as_bytes(), "body vs X-Item");
    Some(hdr)
}

/// The client's own record: the paths it asked for, in order.
fn expected_paths() -> Vec<String> {
    std::fs::read_to_string(fixture("expected.jsonl"))
        .expect("expected.jsonl")
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("json line");
            assert_eq!(v["item"].as_str(), v["path"].as_str().map(|p| &p[6..]));
            v["path"].as_str().expect("path").to_owned()
        })
        .collect()
}

/// Checks every paired transaction pairs a request with its own answer; returns the items
/// whose requests came out unanswered, and those of answers that came out without a
/// request (only ever answers owed to requests given up at a queue cap).
fn check_pairs(txs: &[Transaction]) -> (Vec<u64>, Vec<u64>) {
    let (mut unanswered, mut orphans) = (Vec::new(), Vec::new());
    for t in txs {
        match (asked(t), answered(t)) {
            (Some(q), Some(a)) => assert_eq!(q, a, "request /item/{q} paired with answer {a}"),
            (Some(q), None) => unanswered.push(q),
            (None, Some(a)) => {
                assert!(
                    t.anomalies.contains(Anomaly::PendingCap),
                    "answer {a} unpaired"
                );
                orphans.push(a);
            }
            (None, None) => panic!("an empty transaction: {t:?}"),
        }
    }
    (unanswered, orphans)
}

#[test]
fn full_capture_pairs_all_thousand() {
    let (txs, stats) = pcap_http::transactions(&fixture("capture.pcap"), HttpConfig::default());
    let paths: Vec<String> = txs
        .iter()
        .filter_map(|t| t.request.as_ref().map(|r| r.target.to_string()))
        .collect();
    assert_eq!(paths, expected_paths());
    assert_eq!(check_pairs(&txs), (vec![], vec![]));
    assert_eq!(stats.paired, 1000);
    assert!(txs.iter().all(|t| t.anomalies.is_empty()));
    assert!(stats.cap_hits.is_empty(), "{:?}", stats.cap_hits);
}

#[test]
fn gapped_capture_gives_up_only_the_lost_answer() {
    let (txs, stats) = pcap_http::transactions(&fixture("capture-gap.pcap"), HttpConfig::default());
    assert_eq!(txs.len(), 1000);
    assert_eq!(check_pairs(&txs), (vec![DROPPED], vec![]));
    assert_eq!(stats.paired, 999);
    assert_eq!(stats.gap_unanswered, 1);
    let lost = txs
        .iter()
        .find(|t| asked(t) == Some(DROPPED))
        .expect("request 500");
    assert!(lost.anomalies.contains(Anomaly::Gap));
    assert!(lost.anomalies.contains(Anomaly::RequestWithoutResponse));
    assert_eq!(
        txs.iter().filter(|t| !t.anomalies.is_empty()).count(),
        1,
        "only the lost answer's request is flagged"
    );
}

#[test]
fn pending_byte_cap_gives_up_old_requests_without_shifting_pairs() {
    // About 40 requests' worth: the client runs hundreds ahead of the answers.
    let cfg = HttpConfig {
        max_pending_bytes: 16 * 1024,
        ..HttpConfig::default()
    };
    for name in ["capture.pcap", "capture-gap.pcap"] {
        let (txs, stats) = pcap_http::transactions(&fixture(name), cfg.clone());
        let (mut unanswered, orphans) = check_pairs(&txs);
        let capped = stats.cap_hits.get("pending-bytes").copied().unwrap_or(0);
        assert!(capped > 100, "{name}: the cap bit only {capped} times");
        let flagged = txs
            .iter()
            .filter(|t| t.anomalies.contains(Anomaly::PendingCap) && t.request.is_some())
            .count() as u64;
        assert_eq!(flagged, capped, "{name}");
        // Exactly the given-up requests' answers come out alone (the lost one never does,
        // whether its request was given up at the cap or after the gap).
        assert_eq!(stats.paired + unanswered.len() as u64, 1000, "{name}");
        if name.contains("gap") {
            assert!(unanswered.contains(&DROPPED));
            unanswered.retain(|&n| n != DROPPED);
        }
        assert_eq!(unanswered, orphans, "{name}");
    }
}

fn replay_summary(cap: &Path, workers: usize) -> (Value, String) {
    let dir = std::env::temp_dir().join(format!(
        "shieldtap-pipelining-{}-{workers}-{}",
        std::process::id(),
        cap.file_stem().and_then(|s| s.to_str()).unwrap_or("cap")
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (tx, summary) = (dir.join("tx.jsonl"), dir.join("summary.json"));
    let o = Command::new(env!("CARGO_BIN_EXE_shieldtap"))
        .arg("replay")
        .arg(cap)
        .arg("--transactions-out")
        .arg(&tx)
        .arg("--summary-json")
        .arg(&summary)
        .args(["--alerts-out", "-", "--workers", &workers.to_string()])
        .output()
        .expect("runs shieldtap");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s: Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).expect("summary")).expect("json");
    let t = std::fs::read_to_string(&tx).expect("transactions");
    let _ = std::fs::remove_dir_all(&dir);
    (s, t)
}

#[test]
fn replay_cli_counts_and_worker_independence() {
    for (name, paired) in [("capture.pcap", 1000), ("capture-gap.pcap", 999)] {
        let (one, tx_one) = replay_summary(&fixture(name), 1);
        let (two, tx_two) = replay_summary(&fixture(name), 2);
        assert_eq!(one["http"]["paired"], paired, "{name}");
        assert_eq!(one["http"]["transactions"], 1000, "{name}");
        assert_eq!(tx_one, tx_two, "{name}: output differs with 2 workers");
        assert_eq!(one["http"], two["http"]);
        // Each record names the path; unpaired ones have a null status.
        let unpaired: BTreeMap<String, Value> = tx_one
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("record"))
            .filter(|r| r["status"].is_null())
            .map(|r| {
                (
                    r["path"].as_str().unwrap_or_default().to_owned(),
                    r["anomalies"].clone(),
                )
            })
            .collect();
        assert_eq!(unpaired.len(), 1000 - paired as usize, "{name}");
        if paired == 999 {
            assert_eq!(
                unpaired.get(&format!("/item/{DROPPED}")),
                Some(&serde_json::json!(["request-without-response", "gap"]))
            );
        }
    }
}
