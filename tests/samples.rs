//! The bundled samples: replaying `samples/<name>/capture.pcap[ng]` yields exactly the
//! transactions in its `expected.jsonl`, which `scripts/record_samples.py` took from the
//! client's own record of what it sent and received, with one worker and with two.
//!
//! An `expected.jsonl` line has `method`, `path` (the request target as sent; its query
//! string is ignored), `status`, and optionally `response_body_bytes`,
//! `request_body_bytes` (checked when present), `connection` (the client's connection
//! index: each connection's transactions must come out in the client's order) and
//! `anomalies` (the anomalies that transaction must have; absent means none).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// (method, path without query, status)
type Key = (Option<String>, Option<String>, Option<u64>);
/// (client ip, client port, server ip, server port)
type ConnId = (String, u64, String, u64);

#[derive(Debug)]
struct Expected {
    line: usize,
    key: Key,
    response_body_bytes: Option<u64>,
    request_body_bytes: Option<u64>,
    anomalies: Vec<String>,
    connection: Option<u64>,
}

#[derive(Debug)]
struct Actual {
    key: Key,
    conn: ConnId,
    response_body_bytes: Option<u64>,
    request_body_bytes: Option<u64>,
    anomalies: Vec<String>,
}

fn samples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("samples")
}

/// Sample folders that have an `expected.jsonl`, sorted by name.
fn sample_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(samples_dir())
        .expect("samples/ exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.join("expected.jsonl").is_file())
        .collect();
    dirs.sort();
    dirs
}

fn capture_in(dir: &Path) -> PathBuf {
    ["capture.pcap", "capture.pcapng"]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{}: no capture.pcap or capture.pcapng", dir.display()))
}

fn strip_query(target: &str) -> String {
    let end = target.find(['?', '#']).unwrap_or(target.len());
    target[..end].to_string()
}

fn opt_str(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

fn sorted_strings(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn parse_expected(dir: &Path) -> Vec<Expected> {
    let path = dir.join("expected.jsonl");
    let text = std::fs::read_to_string(&path).expect("read expected.jsonl");
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}:{}: {e}", path.display(), i + 1));
            Expected {
                line: i + 1,
                key: (
                    opt_str(&v["method"]),
                    v["path"].as_str().map(strip_query),
                    v["status"].as_u64(),
                ),
                response_body_bytes: v["response_body_bytes"].as_u64(),
                request_body_bytes: v["request_body_bytes"].as_u64(),
                anomalies: sorted_strings(&v["anomalies"]),
                connection: v["connection"].as_u64(),
            }
        })
        .collect()
}

fn parse_actual(text: &str) -> Vec<Actual> {
    text.lines()
        .map(|l| {
            let v: Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad transaction line {l}: {e}"));
            Actual {
                key: (
                    opt_str(&v["method"]),
                    opt_str(&v["path"]),
                    v["status"].as_u64(),
                ),
                conn: (
                    opt_str(&v["client"]["ip"]).unwrap_or_default(),
                    v["client"]["port"].as_u64().unwrap_or_default(),
                    opt_str(&v["server"]["ip"]).unwrap_or_default(),
                    v["server"]["port"].as_u64().unwrap_or_default(),
                ),
                response_body_bytes: v["response_body_bytes"].as_u64(),
                request_body_bytes: v["request_body_bytes"].as_u64(),
                anomalies: sorted_strings(&v["anomalies"]),
            }
        })
        .collect()
}

/// Runs `shieldtap replay` and returns the transaction lines as written.
fn replay(capture: &Path, workers: usize) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("tx.jsonl");
    let o = Command::new(env!("CARGO_BIN_EXE_shieldtap"))
        .arg("replay")
        .arg(capture)
        .arg("--transactions-out")
        .arg(&out)
        .args(["--workers", &workers.to_string()])
        .output()
        .expect("runs shieldtap");
    assert!(
        o.status.success(),
        "shieldtap replay {} --workers {workers} exited {:?}:\n{}",
        capture.display(),
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    // TLS handshake records (`"record":"tls"`) are not transactions.
    std::fs::read_to_string(&out)
        .expect("transactions written")
        .lines()
        .filter(|l| !l.contains("\"record\":\"tls\""))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn show(k: &Key) -> String {
    let s = |o: &Option<String>| o.clone().unwrap_or_else(|| "null".into());
    format!(
        "{} {} {}",
        s(&k.0),
        s(&k.1),
        k.2.map_or("null".into(), |v| v.to_string())
    )
}

fn matches(e: &Expected, a: &Actual) -> bool {
    e.key == a.key
        && e.response_body_bytes
            .is_none_or(|b| a.response_body_bytes == Some(b))
        && e.request_body_bytes
            .is_none_or(|b| a.request_body_bytes == Some(b))
        && e.anomalies == a.anomalies
}

fn describe_actual(a: &Actual) -> String {
    format!(
        "{} (request body {:?}, response body {:?}, anomalies {:?})",
        show(&a.key),
        a.request_body_bytes,
        a.response_body_bytes,
        a.anomalies
    )
}

fn describe_expected(e: &Expected) -> String {
    format!(
        "line {}: {} (request body {:?}, response body {:?}, anomalies {:?})",
        e.line,
        show(&e.key),
        e.request_body_bytes,
        e.response_body_bytes,
        e.anomalies
    )
}

/// Everything wrong with `actual` against `expected`, as readable lines.
fn compare(expected: &[Expected], actual: &[Actual]) -> Vec<String> {
    let mut problems = Vec::new();

    // 1. The (method, path, status) multiset.
    let mut counts: BTreeMap<&Key, i64> = BTreeMap::new();
    for e in expected {
        *counts.entry(&e.key).or_default() += 1;
    }
    for a in actual {
        *counts.entry(&a.key).or_default() -= 1;
    }
    for (k, n) in &counts {
        if *n > 0 {
            problems.push(format!("missing {n}x {}", show(k)));
        } else if *n < 0 {
            problems.push(format!("unexpected {}x {}", -n, show(k)));
        }
    }
    if !problems.is_empty() {
        return problems;
    }

    // 2. Per connection, in order (when the client recorded connections), with body sizes
    //    and anomalies; otherwise each expected line matched with a distinct transaction.
    if !expected.is_empty() && expected.iter().all(|e| e.connection.is_some()) {
        let mut exp_conns: BTreeMap<u64, Vec<&Expected>> = BTreeMap::new();
        for e in expected {
            exp_conns
                .entry(e.connection.unwrap_or_default())
                .or_default()
                .push(e);
        }
        let mut act_conns: Vec<(&ConnId, Vec<&Actual>)> = Vec::new();
        for a in actual {
            match act_conns.iter_mut().find(|(c, _)| *c == &a.conn) {
                Some((_, v)) => v.push(a),
                None => act_conns.push((&a.conn, vec![a])),
            }
        }
        if exp_conns.len() != act_conns.len() {
            problems.push(format!(
                "the client used {} connections, shieldtap reports {}",
                exp_conns.len(),
                act_conns.len()
            ));
        }
        let mut used = vec![false; act_conns.len()];
        for (ix, exp) in &exp_conns {
            let found = act_conns.iter().enumerate().position(|(j, (_, act))| {
                !used[j]
                    && act.len() == exp.len()
                    && exp.iter().zip(act).all(|(e, a)| matches(e, a))
            });
            match found {
                Some(j) => used[j] = true,
                None => {
                    let mut msg = format!(
                        "no connection carries client connection {ix} in order:\n  expected:"
                    );
                    for e in exp {
                        msg.push_str(&format!("\n    {}", describe_expected(e)));
                    }
                    for (c, act) in &act_conns {
                        msg.push_str(&format!(
                            "\n  shieldtap connection {}:{} -> {}:{}:",
                            c.0, c.1, c.2, c.3
                        ));
                        let first_diff = (0..act.len().max(exp.len()))
                            .find(|&i| !matches!((exp.get(i), act.get(i)), (Some(e), Some(a)) if matches(e, a)));
                        for (i, a) in act.iter().enumerate() {
                            let mark = if first_diff == Some(i) {
                                "  <-- first difference"
                            } else {
                                ""
                            };
                            msg.push_str(&format!("\n    {}{mark}", describe_actual(a)));
                        }
                    }
                    problems.push(msg);
                }
            }
        }
    } else {
        let mut used = vec![false; actual.len()];
        for e in expected {
            match actual
                .iter()
                .enumerate()
                .position(|(j, a)| !used[j] && matches(e, a))
            {
                Some(j) => used[j] = true,
                None => problems.push(format!("no transaction matches {}", describe_expected(e))),
            }
        }
        for (a, u) in actual.iter().zip(&used) {
            if !u {
                problems.push(format!("unmatched transaction {}", describe_actual(a)));
            }
        }
    }
    problems
}

fn sorted_lines(text: &str) -> Vec<&str> {
    let mut v: Vec<&str> = text.lines().collect();
    v.sort_unstable();
    v
}

#[test]
fn samples_yield_the_clients_transactions() {
    let dirs = sample_dirs();
    assert!(
        !dirs.is_empty(),
        "no samples/*/expected.jsonl found under {}",
        samples_dir().display()
    );
    let mut failures = Vec::new();
    for dir in &dirs {
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("?")
            .to_string();
        let capture = capture_in(dir);
        let expected = parse_expected(dir);
        let one = replay(&capture, 1);
        let two = replay(&capture, 2);
        if sorted_lines(&one) != sorted_lines(&two) {
            failures.push(format!(
                "{name}: --workers 1 and --workers 2 differ:\n{one}\n---\n{two}"
            ));
        }
        for (workers, text) in [(1, &one), (2, &two)] {
            for p in compare(&expected, &parse_actual(text)) {
                failures.push(format!("{name} (--workers {workers}): {p}"));
            }
        }
        eprintln!("{name}: {} transactions checked", expected.len());
    }
    assert!(
        failures.is_empty(),
        "{} problem(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn samples_are_complete() {
    for dir in sample_dirs() {
        let capture = capture_in(&dir);
        let size = std::fs::metadata(&capture).expect("capture metadata").len();
        // mobile-network is minutes of a whole mobile API's populations (issue 15), and
        // tls-fingerprints minutes of an app's devices through a TLS edge, both legs (21).
        let limit = if dir.ends_with("mobile-network") || dir.ends_with("tls-fingerprints") {
            4_000_000
        } else {
            256_000
        };
        assert!(
            size < limit,
            "{} is {size} bytes: samples stay under {limit} bytes",
            capture.display()
        );
        assert!(
            dir.join("README.md").is_file(),
            "{}: no README.md",
            dir.display()
        );
        assert!(
            !parse_expected(&dir).is_empty(),
            "{}: empty expected.jsonl",
            dir.display()
        );
    }
}
