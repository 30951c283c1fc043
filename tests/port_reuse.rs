//! Port reuse: a client binds the same source port for back-to-back connections (IPv4 and
//! IPv6, real sockets on loopback, `scripts/record_port_reuse.py`). The next SYN arrives
//! while the previous connection of that 4-tuple still lingers; every transaction of every
//! connection must come out, in the client's order per connection, with one worker and two.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/port-reuse");

fn jsonl(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

/// (method, path without query, status, request body bytes, response body bytes)
type Tx = (String, String, u64, u64, u64);

fn tx_of(v: &Value) -> Tx {
    let path = v["path"].as_str().unwrap_or_default();
    let path = path.split('?').next().unwrap_or_default().to_string();
    (
        v["method"].as_str().unwrap_or_default().to_string(),
        path,
        v["status"].as_u64().unwrap_or_default(),
        v["request_body_bytes"].as_u64().unwrap_or_default(),
        v["response_body_bytes"].as_u64().unwrap_or_default(),
    )
}

fn replay(workers: usize) -> (Vec<Value>, Value) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (tx, summary) = (dir.path().join("tx.jsonl"), dir.path().join("s.json"));
    let o = Command::new(env!("CARGO_BIN_EXE_shieldtap"))
        .arg("replay")
        .arg(Path::new(FIXTURE).join("capture.pcap"))
        .arg("--transactions-out")
        .arg(&tx)
        .arg("--summary-json")
        .arg(&summary)
        .args([
            "--workers",
            &workers.to_string(),
            "--alerts-out",
            "/dev/null",
        ])
        .output()
        .expect("runs shieldtap");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&tx).expect("transactions");
    let s = serde_json::from_str(&std::fs::read_to_string(&summary).expect("summary"))
        .expect("summary json");
    (jsonl(&text), s)
}

#[test]
fn every_connection_on_a_reused_port_comes_out() {
    let expected = jsonl(
        &std::fs::read_to_string(Path::new(FIXTURE).join("expected.jsonl")).expect("expected"),
    );
    // The client's connections, grouped by (family, client port): each group reused one port.
    let mut conns: BTreeMap<u64, Vec<Tx>> = BTreeMap::new();
    let mut ports: BTreeMap<u64, (String, u64)> = BTreeMap::new();
    for e in &expected {
        let c = e["connection"].as_u64().expect("connection");
        conns.entry(c).or_default().push(tx_of(e));
        ports.insert(
            c,
            (
                e["family"].as_str().unwrap_or_default().to_string(),
                e["client_port"].as_u64().unwrap_or_default(),
            ),
        );
    }
    let families: BTreeMap<&String, usize> =
        ports.values().fold(BTreeMap::new(), |mut m, (f, _)| {
            *m.entry(f).or_default() += 1;
            m
        });
    assert_eq!(families.len(), 2, "IPv4 and IPv6: {families:?}");
    assert!(
        families.values().all(|n| *n >= 2),
        "a port reused: {families:?}"
    );

    let mut outputs = Vec::new();
    for workers in [1, 2] {
        let (actual, summary) = replay(workers);
        assert_eq!(
            actual.len(),
            expected.len(),
            "--workers {workers}: transactions out"
        );
        let r = &summary["reassembly"];
        // Each family's later connections replaced a lingering one.
        assert_eq!(
            r["flows_reused"].as_u64(),
            Some(conns.len() as u64 - families.len() as u64),
            "--workers {workers}: {r}"
        );
        assert_eq!(r["flows_created"].as_u64(), Some(conns.len() as u64));
        assert_eq!(r["gaps"], 0, "{r}");
        assert_eq!(
            summary["http"]["paired"].as_u64(),
            Some(expected.len() as u64)
        );
        // Per 4-tuple, the transactions in order are the client's connections one after the
        // other, and none is anomalous.
        let mut by_tuple: BTreeMap<(String, u64), Vec<Tx>> = BTreeMap::new();
        for a in &actual {
            assert_eq!(a["anomalies"], serde_json::json!([]), "{a}");
            let ip = a["client"]["ip"].as_str().unwrap_or_default();
            let family = if ip.contains(':') { "IPv6" } else { "IPv4" };
            let port = a["client"]["port"].as_u64().unwrap_or_default();
            by_tuple
                .entry((family.to_string(), port))
                .or_default()
                .push(tx_of(a));
        }
        for (tuple, got) in &by_tuple {
            let want: Vec<Tx> = conns
                .iter()
                .filter(|(c, _)| ports.get(c) == Some(tuple))
                .flat_map(|(_, t)| t.clone())
                .collect();
            assert_eq!(got, &want, "--workers {workers}: {tuple:?}");
        }
        assert_eq!(by_tuple.len(), families.len());
        let mut lines: Vec<String> = actual.iter().map(Value::to_string).collect();
        lines.sort();
        outputs.push(lines);
    }
    assert_eq!(outputs[0], outputs[1], "--workers 1 and 2 agree");
}
