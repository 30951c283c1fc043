//! A second opinion on the bundled samples: tshark, which also reassembles TCP and parses
//! HTTP, must find the same requests (method, path without query) and the same final
//! response statuses as shieldtap. 1xx interim responses (`100 Continue`) are HTTP
//! messages to tshark but not transactions to shieldtap, so they are left out.
//!
//! Needs `tshark` (Debian: `apt-get install -y tshark`). Without it the test fails when
//! `CI` is set and is skipped with a note otherwise.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn tshark_available() -> bool {
    Command::new("tshark")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn sample_captures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples");
    let mut caps: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("samples/ exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|d| d.join("expected.jsonl").is_file())
        .filter_map(|d| {
            ["capture.pcap", "capture.pcapng"]
                .iter()
                .map(|n| d.join(n))
                .find(|p| p.is_file())
        })
        .collect();
    caps.sort();
    caps
}

fn tshark(args: &[&str]) -> String {
    let o = Command::new("tshark")
        .args(args)
        .output()
        .expect("runs tshark");
    assert!(
        o.status.success(),
        "tshark {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).expect("tshark prints UTF-8")
}

fn strip_query(target: &str) -> String {
    let end = target.find(['?', '#']).unwrap_or(target.len());
    target[..end].to_string()
}

/// Requests and final statuses as tshark dissects them.
fn tshark_view(cap: &str) -> (Vec<(String, String)>, Vec<u64>) {
    // tshark dissects HTTP only on well-known ports: add the servers' ports (destinations
    // of connection-opening SYNs) as HTTP.
    let ports: BTreeSet<String> = tshark(&[
        "-r",
        cap,
        "-Y",
        "tcp.flags.syn == 1 && tcp.flags.ack == 0",
        "-T",
        "fields",
        "-e",
        "tcp.dstport",
    ])
    .lines()
    .map(str::trim)
    .filter(|l| !l.is_empty())
    .map(str::to_string)
    .collect();
    let decode_as: Vec<String> = ports
        .iter()
        .map(|p| format!("tcp.port=={p},http"))
        .collect();
    let mut args = vec![
        "-r",
        cap,
        "-o",
        "tcp.desegment_tcp_streams:TRUE",
        "-o",
        "http.desegment_headers:TRUE",
        "-o",
        "http.desegment_body:TRUE",
    ];
    for d in &decode_as {
        args.extend(["-d", d.as_str()]);
    }
    // One line per frame; a frame holding several messages (pipelining) lists each field's
    // values in order, separated by the aggregator (a space: never inside a method or URI).
    args.extend([
        "-Y",
        "http || http2",
        "-T",
        "fields",
        "-E",
        "separator=/t",
        "-E",
        "aggregator=/s",
        "-e",
        "http.request.method",
        "-e",
        "http.request.uri",
        "-e",
        "http.response.code",
        // HTTP/2 (h2c, gRPC): tshark's HTTP dissector hands a connection that starts with
        // the preface to its HTTP/2 dissector.
        "-e",
        "http2.headers.method",
        "-e",
        "http2.headers.path",
        "-e",
        "http2.headers.status",
    ]);
    let out = tshark(&args);
    let mut requests = Vec::new();
    let mut statuses = Vec::new();
    for line in out.lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        let field = |i: usize| {
            cols.get(i)
                .map(|c| c.split_whitespace().collect::<Vec<_>>())
                .unwrap_or_default()
        };
        for (mi, ui, ci) in [(0, 1, 2), (3, 4, 5)] {
            let (methods, uris, codes) = (field(mi), field(ui), field(ci));
            assert_eq!(
                methods.len(),
                uris.len(),
                "{cap}: tshark line {line:?} pairs methods and URIs unevenly"
            );
            for (m, u) in methods.iter().zip(&uris) {
                requests.push((m.to_string(), strip_query(u)));
            }
            statuses.extend(final_statuses(cap, line, &codes));
        }
    }
    requests.sort();
    statuses.sort_unstable();
    (requests, statuses)
}

/// The final (non-1xx) status codes among `codes`.
fn final_statuses(cap: &str, line: &str, codes: &[&str]) -> Vec<u64> {
    let mut statuses = Vec::new();
    {
        for c in codes {
            let code: u64 = c
                .parse()
                .unwrap_or_else(|_| panic!("{cap}: bad status {c:?} in {line:?}"));
            if !(100..200).contains(&code) {
                statuses.push(code);
            }
        }
    }
    statuses
}

/// Requests and statuses as shieldtap reports them.
fn shieldtap_view(cap: &Path) -> (Vec<(String, String)>, Vec<u64>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("tx.jsonl");
    let o = Command::new(env!("CARGO_BIN_EXE_shieldtap"))
        .arg("replay")
        .arg(cap)
        .arg("--transactions-out")
        .arg(&out)
        .args(["--workers", "2"])
        .output()
        .expect("runs shieldtap");
    assert!(
        o.status.success(),
        "shieldtap replay {}: {}",
        cap.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    let mut requests = Vec::new();
    let mut statuses = Vec::new();
    for line in std::fs::read_to_string(&out)
        .expect("transactions written")
        .lines()
    {
        let v: Value = serde_json::from_str(line).expect("JSON line");
        if let Some(m) = v["method"].as_str() {
            requests.push((
                m.to_string(),
                v["path"].as_str().unwrap_or_default().to_string(),
            ));
        }
        if let Some(s) = v["status"].as_u64() {
            statuses.push(s);
        }
    }
    requests.sort();
    statuses.sort_unstable();
    (requests, statuses)
}

#[test]
fn tshark_agrees_on_requests_and_statuses() {
    if !tshark_available() {
        assert!(
            std::env::var_os("CI").is_none(),
            "tshark is required in CI (apt-get install -y tshark)"
        );
        eprintln!("note: tshark is not installed; skipping the comparison with tshark");
        return;
    }
    let caps = sample_captures();
    assert!(!caps.is_empty(), "no sample captures under samples/");
    let mut failures = Vec::new();
    for cap in &caps {
        let (t_req, t_status) = tshark_view(cap.to_str().expect("UTF-8 path"));
        let (s_req, s_status) = shieldtap_view(cap);
        if t_req.is_empty() {
            failures.push(format!("{}: tshark found no HTTP request", cap.display()));
        }
        if t_req != s_req {
            failures.push(format!(
                "{}: requests differ\n  tshark:    {t_req:?}\n  shieldtap: {s_req:?}",
                cap.display()
            ));
        }
        if t_status != s_status {
            failures.push(format!(
                "{}: statuses differ\n  tshark:    {t_status:?}\n  shieldtap: {s_status:?}",
                cap.display()
            ));
        }
        eprintln!(
            "{}: {} requests, {} responses",
            cap.display(),
            t_req.len(),
            t_status.len()
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
