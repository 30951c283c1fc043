//! End to end at scale: `scripts/gen_capture.py` records 100,000 HTTP transactions from
//! real clients (pipelining, keep-alive, http.client; IPv4 and IPv6) against nginx on
//! loopback, and writes a manifest of what the clients sent and received. Replaying the
//! capture must account for every one of them: the same number of transactions and of
//! paired transactions, the same counts by method and by status, the same body byte
//! totals and IPv4/IPv6 split, no anomalies, and the same output with one worker as with
//! two.
//!
//! Runs only when `SHIELDTAP_LARGE=1` or `CI` is set (it needs root for tcpdump, nginx and
//! python3, and takes about a minute); otherwise it prints a note and passes.
//! `SHIELDTAP_LARGE_TRANSACTIONS=N` records N transactions instead of 100,000.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn enabled() -> bool {
    std::env::var_os("SHIELDTAP_LARGE").is_some_and(|v| !v.is_empty() && v != "0")
        || std::env::var_os("CI").is_some()
}

fn replay(cap: &Path, workers: usize, dir: &Path) -> (String, Value) {
    let tx = dir.join(format!("tx-{workers}.jsonl"));
    let summary = dir.join(format!("summary-{workers}.json"));
    let o = Command::new(env!("CARGO_BIN_EXE_shieldtap"))
        .arg("replay")
        .arg(cap)
        .arg("--transactions-out")
        .arg(&tx)
        .arg("--summary-json")
        .arg(&summary)
        .args(["--workers", &workers.to_string()])
        .output()
        .expect("runs shieldtap");
    assert!(
        o.status.success(),
        "shieldtap replay --workers {workers} exited {:?}:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    eprint!("{}", String::from_utf8_lossy(&o.stderr));
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).expect("summary written"))
            .expect("summary is JSON");
    (
        std::fs::read_to_string(&tx).expect("transactions written"),
        summary,
    )
}

#[derive(Default, Debug)]
struct Counts {
    transactions: u64,
    paired: u64,
    by_method: BTreeMap<String, u64>,
    by_status: BTreeMap<String, u64>,
    request_body_bytes: u64,
    response_body_bytes: u64,
    ipv4: u64,
    ipv6: u64,
    anomalies: BTreeMap<String, u64>,
}

fn count(text: &str) -> Counts {
    let mut c = Counts::default();
    for line in text.lines() {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("bad line {line}: {e}"));
        c.transactions += 1;
        let method = v["method"].as_str();
        let status = v["status"].as_u64();
        if method.is_some() && status.is_some() {
            c.paired += 1;
        }
        if let Some(m) = method {
            *c.by_method.entry(m.to_string()).or_default() += 1;
        }
        if let Some(s) = status {
            *c.by_status.entry(s.to_string()).or_default() += 1;
        }
        c.request_body_bytes += v["request_body_bytes"].as_u64().unwrap_or(0);
        c.response_body_bytes += v["response_body_bytes"].as_u64().unwrap_or(0);
        if v["client"]["ip"]
            .as_str()
            .is_some_and(|ip| ip.contains(':'))
        {
            c.ipv6 += 1;
        } else {
            c.ipv4 += 1;
        }
        for a in v["anomalies"].as_array().into_iter().flatten() {
            *c.anomalies
                .entry(a.as_str().unwrap_or("?").to_string())
                .or_default() += 1;
        }
    }
    c
}

fn counts_map(v: &Value) -> BTreeMap<String, u64> {
    v.as_object()
        .expect("manifest map")
        .iter()
        .map(|(k, n)| (k.clone(), n.as_u64().expect("manifest count")))
        .collect()
}

#[test]
fn large_capture_matches_the_clients_manifest() {
    if !enabled() {
        eprintln!(
            "note: skipping the 100,000 transaction capture; set SHIELDTAP_LARGE=1 to run it (CI always does)"
        );
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let transactions =
        std::env::var("SHIELDTAP_LARGE_TRANSACTIONS").unwrap_or_else(|_| "100000".into());
    let dir = tempfile::tempdir().expect("temp dir");
    let cap = dir.path().join("large.pcap");
    let manifest_path = dir.path().join("manifest.json");
    let o = Command::new("python3")
        .arg(root.join("scripts/gen_capture.py"))
        .args(["--transactions", &transactions])
        .arg("--out")
        .arg(&cap)
        .arg("--manifest")
        .arg(&manifest_path)
        .output()
        .expect("runs python3 scripts/gen_capture.py");
    eprint!("{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        o.status.success(),
        "gen_capture.py exited {:?}",
        o.status.code()
    );
    let m: Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).expect("manifest"))
            .expect("JSON");
    assert_eq!(m["kernel_dropped"], 0, "tcpdump dropped packets");

    let (two, summary) = replay(&cap, 2, dir.path());
    let c = count(&two);
    eprintln!("shieldtap: {c:?}");
    let want = |k: &str| {
        m[k].as_u64()
            .unwrap_or_else(|| panic!("manifest has no {k}"))
    };
    assert_eq!(
        c.transactions,
        want("transactions"),
        "transactions: none lost, none invented"
    );
    assert_eq!(c.paired, want("paired"), "paired transactions");
    assert_eq!(
        c.by_method,
        counts_map(&m["by_method"]),
        "transactions by method"
    );
    assert_eq!(
        c.by_status,
        counts_map(&m["by_status"]),
        "transactions by status"
    );
    assert_eq!(
        c.request_body_bytes,
        want("request_body_bytes"),
        "request body bytes (after de-chunking)"
    );
    assert_eq!(
        c.response_body_bytes,
        want("response_body_bytes"),
        "response body bytes (after de-chunking)"
    );
    assert_eq!(
        (c.ipv4, c.ipv6),
        (want("ipv4_transactions"), want("ipv6_transactions")),
        "IPv4/IPv6 split"
    );
    assert!(
        c.anomalies.is_empty(),
        "a clean loopback capture has no anomalies: {:?}",
        c.anomalies
    );

    assert_eq!(
        summary["transactions_written"].as_u64(),
        Some(c.transactions),
        "summary transactions_written"
    );
    for (key, n) in [
        ("transactions", want("transactions")),
        ("paired", want("paired")),
    ] {
        if let Some(v) = summary["http"][key].as_u64() {
            assert_eq!(v, n, "summary http.{key}");
        }
    }

    let (one, _) = replay(&cap, 1, dir.path());
    let mut a: Vec<&str> = one.lines().collect();
    let mut b: Vec<&str> = two.lines().collect();
    a.sort_unstable();
    b.sort_unstable();
    if a != b {
        let first = a
            .iter()
            .zip(&b)
            .position(|(x, y)| x != y)
            .unwrap_or(a.len().min(b.len()));
        panic!(
            "--workers 1 ({} lines) and --workers 2 ({} lines) differ; first difference in sorted order:\n  {:?}\n  {:?}",
            a.len(),
            b.len(),
            a.get(first),
            b.get(first)
        );
    }
}
