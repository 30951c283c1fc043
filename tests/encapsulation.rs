//! PPPoE and Cisco HDLC on real traffic: the loopback captures of samples/curl-keepalive
//! (curl and nginx, IPv4, Ethernet) and samples/httpclient-ipv6-any (Python http.client and
//! http.server, IPv6, Linux SLL2) re-encapsulated packet for packet, timestamps unchanged, by
//! `scripts/make_encap_captures.py` (scapy) into tests/fixtures/encap/: PPPoE sessions (also
//! inside QinQ) and link type 104, each with non-IP frames (PPPoE discovery and LCP, SLARP
//! and CDP). Replaying one must give exactly the transactions the plain capture gives, with
//! one worker (in order) and two (as a set), and the decode counters must account for every frame.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// (encapsulated capture, plain capture, VLAN tags per frame, non-IP frames in the file).
const CASES: &[(&str, &str, u64, u64)] = &[
    ("pppoe.pcap", "samples/curl-keepalive/capture.pcap", 0, 6),
    (
        "pppoe-qinq.pcap",
        "samples/curl-keepalive/capture.pcap",
        2,
        6,
    ),
    (
        "pppoe-ipv6.pcap",
        "samples/httpclient-ipv6-any/capture.pcapng",
        0,
        6,
    ),
    ("chdlc.pcap", "samples/curl-keepalive/capture.pcap", 0, 2),
    (
        "chdlc-ipv6.pcap",
        "samples/httpclient-ipv6-any/capture.pcapng",
        0,
        2,
    ),
];

/// Replays `capture`: (transaction records, summary).
fn replay(capture: &str, workers: &str) -> (Vec<Value>, Value) {
    let dir = tempfile::tempdir().expect("temp dir");
    let tx = dir.path().join("tx.jsonl");
    let summary = dir.path().join("summary.json");
    let o = Command::new(env!("CARGO_BIN_EXE_shieldtap"))
        .args([
            "replay",
            capture,
            "--workers",
            workers,
            "--alerts-out",
            "/dev/null",
        ])
        .arg("--transactions-out")
        .arg(&tx)
        .arg("--summary-json")
        .arg(&summary)
        .current_dir(ROOT)
        .output()
        .expect("runs shieldtap");
    assert!(
        o.status.success(),
        "{capture}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let records = std::fs::read_to_string(&tx)
        .expect("transactions")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let summary = serde_json::from_str(&std::fs::read_to_string(&summary).expect("summary"))
        .expect("summary json");
    (records, summary)
}

fn sorted(records: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = records.iter().map(Value::to_string).collect();
    v.sort_unstable();
    v
}

#[test]
fn encapsulated_captures_give_the_plain_captures_transactions() {
    let mut report = Vec::new();
    for (file, plain, tags, non_ip) in CASES {
        let encap = format!("tests/fixtures/encap/{file}");
        assert!(
            Path::new(ROOT).join(&encap).is_file(),
            "{encap} missing: run scripts/make_encap_captures.py"
        );
        let (want, plain_summary) = replay(plain, "1");
        assert!(want.len() >= 7, "{plain}: {} transactions", want.len());
        for workers in ["1", "2"] {
            let (got, summary) = replay(&encap, workers);
            if workers == "1" {
                assert_eq!(got, want, "{file} with one worker");
            } else {
                // Workers write their transactions as they finish: the same set.
                assert_eq!(sorted(&got), sorted(&want), "{file} with {workers} workers");
            }
            let dec = &summary["decode"];
            let ip_frames = plain_summary["decode"]["tcp_segments"]
                .as_u64()
                .expect("plain tcp_segments");
            assert_eq!(dec["tcp_segments"], ip_frames, "{file}: {dec}");
            assert_eq!(dec["not_tcp"], *non_ip, "{file}: {dec}");
            assert_eq!(dec["frames"], ip_frames + non_ip, "{file}: {dec}");
            assert_eq!(
                dec["errors_by_layer"].as_object().map(|m| m.len()),
                Some(0),
                "{file}: {dec}"
            );
            if file.starts_with("pppoe") {
                // Every IP frame and both LCP frames rode the session; discovery did not.
                assert_eq!(dec["pppoe_sessions"], ip_frames + 2, "{file}: {dec}");
            } else {
                assert_eq!(dec["pppoe_sessions"], 0, "{file}: {dec}");
            }
            assert_eq!(
                dec["vlan_tags"],
                tags * (ip_frames + non_ip),
                "{file}: {dec}"
            );
        }
        report.push(format!("{file} {}", want.len()));
    }
    println!(
        "transactions per encapsulated capture: {}",
        report.join(", ")
    );
}
