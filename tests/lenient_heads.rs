//! Start lines httparse rejects but real servers and clients accept, recorded against nginx
//! and a lenient raw-socket server (`scripts/record_lenient_heads.py`): a target with
//! spaces, no version (HTTP/0.9, answered without a head), no target, a bare method, and a
//! non-numeric status. Each exchange must come out as one paired transaction with the
//! client's view of it (target, status, body) and exactly the anomalies naming what was
//! odd; the normal requests around them on the same keep-alive connection pair as usual.

#[path = "common/pcap_http.rs"]
mod pcap_http;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use shieldtap::http::{Anomaly, HttpConfig, Transaction};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/lenient-heads")
        .join(name)
}

/// (target, status, body, anomalies) as the client saw and sent it.
type View = (String, u16, Vec<u8>, Vec<String>);

fn expected() -> Vec<(u64, View)> {
    std::fs::read_to_string(fixture("expected.jsonl"))
        .expect("expected.jsonl")
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("json line");
            let words: Vec<&str> = v["request_line"]
                .as_str()
                .expect("line")
                .split(' ')
                .collect();
            let versioned = words.last().is_some_and(|w| w.starts_with("HTTP/1."));
            let target = match versioned {
                true => words[1..words.len() - 1].join(" "),
                false => words[1..].join(" "),
            };
            let mut quirks: Vec<String> = v["quirks"]
                .as_array()
                .expect("quirks")
                .iter()
                .map(|q| q.as_str().expect("quirk").to_owned())
                .collect();
            quirks.sort();
            let view = (
                target,
                v["status"].as_u64().expect("status") as u16,
                v["body"].as_str().expect("body").as_bytes().to_vec(),
                quirks,
            );
            (v["connection"].as_u64().expect("connection"), view)
        })
        .collect()
}

fn view(t: &Transaction) -> View {
    let q = t.request.as_ref().expect("a request");
    let r = t.response.as_ref().expect("a response");
    let mut an: Vec<String> = t.anomalies.iter().map(|a| a.as_str().to_owned()).collect();
    an.sort();
    (q.target.to_string(), r.status, r.body.data.clone(), an)
}

#[test]
fn every_exchange_is_one_paired_transaction_naming_its_quirks() {
    let (txs, stats) = pcap_http::transactions(&fixture("capture.pcap"), HttpConfig::default());
    let want = expected();
    assert_eq!(txs.len(), want.len(), "{txs:#?}");
    assert_eq!(stats.paired as usize, want.len());
    assert_eq!((stats.unparsable_heads, stats.bytes_skipped), (0, 0));
    let mut got: Vec<View> = txs.iter().map(view).collect();
    let mut all: Vec<View> = want.iter().map(|(_, v)| v.clone()).collect();
    got.sort();
    all.sort();
    assert_eq!(got, all);
    // The keep-alive connection's exchanges come out in the order they happened.
    let keep_alive: Vec<&View> = want
        .iter()
        .filter(|(c, _)| want.iter().filter(|(d, _)| d == c).count() > 1)
        .map(|(_, v)| v)
        .collect();
    assert!(keep_alive.len() >= 5);
    let seen: Vec<View> = txs
        .iter()
        .map(view)
        .filter(|v| keep_alive.contains(&v))
        .collect();
    assert_eq!(seen.iter().collect::<Vec<_>>(), keep_alive);
    // Every new kind is exercised by the recording.
    for a in [
        Anomaly::RequestLineSpaceInTarget,
        Anomaly::RequestLineNoVersion,
        Anomaly::RequestLineNoTarget,
        Anomaly::StatusNonNumeric,
        Anomaly::ResponseNoHead,
    ] {
        assert!(
            stats
                .anomalies_by_kind
                .get(a.as_str())
                .is_some_and(|&n| n > 0),
            "{a:?} not in the capture"
        );
    }
}

#[test]
fn replay_cli_records_them_with_status_zero_when_unknown() {
    let dir = std::env::temp_dir().join(format!("shieldtap-lenient-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (tx, summary) = (dir.join("tx.jsonl"), dir.join("summary.json"));
    let o = Command::new(env!("CARGO_BIN_EXE_shieldtap"))
        .arg("replay")
        .arg(fixture("capture.pcap"))
        .arg("--transactions-out")
        .arg(&tx)
        .arg("--summary-json")
        .arg(&summary)
        .args(["--alerts-out", "-"])
        .output()
        .expect("runs shieldtap");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s: Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).expect("summary")).expect("json");
    let records: Vec<Value> = std::fs::read_to_string(&tx)
        .expect("transactions")
        .lines()
        .map(|l| serde_json::from_str(l).expect("record"))
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    let want = expected();
    assert_eq!(s["http"]["paired"], want.len());
    let mut statuses: Vec<u64> = records
        .iter()
        .map(|r| r["status"].as_u64().expect("a status on every record"))
        .collect();
    let mut want_statuses: Vec<u64> = want.iter().map(|(_, v)| u64::from(v.1)).collect();
    statuses.sort();
    want_statuses.sort();
    assert_eq!(statuses, want_statuses);
    assert!(records.iter().any(|r| r["path"] == "/a b c"));
}
