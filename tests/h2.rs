//! HTTP/2 in clear on real recordings (`tests/fixtures/h2`, made by
//! `scripts/record_h2.py`): Debian nginx 1.22.1 with `listen ... http2` answering hyper-h2,
//! nghttp and curl with prior knowledge (49 streams on 5 connections, gzip bodies, POSTs,
//! 404s, interleaved concurrent streams), and Hypercorn answering `Upgrade: h2c` from curl
//! and nghttp (12 streams on 2 connections).
//!
//! Checked against what the clients themselves recorded (`<name>.expected.json`: per
//! connection and stream the method, path, status, content coding, body sizes, token
//! verdict), against tshark's dissection of the same capture, and cut: the recordings with
//! their first packets removed still give the later streams (joined mid-connection), with
//! header fields the monitor could not know marked.

#[path = "common/pcap_http.rs"]
mod pcap_http;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use pcap_http::transactions_with_ports;
use serde_json::Value;
use shieldtap::http::{Anomaly, HttpConfig, Transaction, header};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/h2")
        .join(name)
}

fn load(name: &str) -> Value {
    let p = fixture(name);
    serde_json::from_slice(&std::fs::read(&p).expect("fixture exists")).expect("fixture is JSON")
}

/// (client port, stream id) → what the client recorded of that request.
fn client_records(name: &str) -> BTreeMap<(u16, u32), Value> {
    let mut out = BTreeMap::new();
    for c in load(&format!("{name}.expected.json"))["connections"]
        .as_array()
        .expect("connections")
    {
        for r in c["requests"].as_array().expect("requests") {
            let port = r["client_port"].as_u64().expect("client_port") as u16;
            let stream = r["stream_id"].as_u64().expect("stream_id") as u32;
            out.insert((port, stream), r.clone());
        }
    }
    out
}

fn by_stream(txs: &[(u16, Transaction)]) -> BTreeMap<(u16, u32), &Transaction> {
    txs.iter()
        .map(|(p, t)| ((*p, t.h2.expect("an HTTP/2 transaction").stream_id), t))
        .collect()
}

fn path_without_query(target: &str) -> &str {
    target.split('?').next().unwrap_or_default()
}

/// Every stream the clients made, with their method, path, status, coding and sizes.
fn check_against_clients(name: &str) {
    let (txs, stats) =
        transactions_with_ports(&fixture(&format!("{name}.pcap")), HttpConfig::default());
    let want = client_records(name);
    let got = by_stream(&txs);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "streams differ from the clients' record"
    );
    for (k, w) in &want {
        let t = got[k];
        let req = t
            .request
            .as_ref()
            .unwrap_or_else(|| panic!("{k:?}: no request"));
        let resp = t
            .response
            .as_ref()
            .unwrap_or_else(|| panic!("{k:?}: no response"));
        assert!(
            t.anomalies.is_empty(),
            "{k:?}: {:?}",
            t.anomalies.iter().collect::<Vec<_>>()
        );
        assert_eq!(req.method, w["method"].as_str().unwrap(), "{k:?}");
        assert_eq!(
            path_without_query(&req.target),
            path_without_query(w["path"].as_str().unwrap()),
            "{k:?}"
        );
        assert_eq!(
            u64::from(resp.status),
            w["status"].as_u64().unwrap(),
            "{k:?}"
        );
        assert_eq!(
            header(&req.headers, "host").map(|h| String::from_utf8_lossy(h).into_owned()),
            w["authority"].as_str().map(str::to_string),
            "{k:?}: :authority stands in for Host"
        );
        assert_eq!(
            header(&resp.headers, "content-encoding")
                .map(|h| String::from_utf8_lossy(h).into_owned()),
            w["content_encoding"].as_str().map(str::to_string),
            "{k:?}"
        );
        assert_eq!(
            resp.body.wire_len,
            w["body_bytes"].as_u64().unwrap(),
            "{k:?}"
        );
        if let Some(decoded) = w["decoded_body_bytes"].as_u64() {
            assert_eq!(resp.body.data.len() as u64, decoded, "{k:?}: decoded body");
        }
        if w["content_encoding"].as_str() == Some("gzip") {
            assert!(resp.body.decoded, "{k:?}");
        }
        assert_eq!(
            req.body.wire_len,
            w["request_body_bytes"].as_u64().unwrap_or(0),
            "{k:?}"
        );
        assert!(
            !req.headers
                .iter()
                .any(|h| h.name.as_bytes().starts_with(b":"))
        );
    }
    assert_eq!(stats.paired, want.len() as u64);
    let odd: u64 = stats
        .h2_events
        .iter()
        .filter(|(k, _)| !matches!(**k, "goaway" | "rst-stream"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(odd, 0, "{:?}", stats.h2_events);
}

#[test]
fn prior_knowledge_streams_are_the_clients_requests() {
    check_against_clients("prior-knowledge");
    let (_, stats) =
        transactions_with_ports(&fixture("prior-knowledge.pcap"), HttpConfig::default());
    assert_eq!(stats.h2_connections.get("prior-knowledge"), Some(&5));
}

#[test]
fn h2c_upgrade_streams_are_the_clients_requests() {
    check_against_clients("upgrade");
    let (txs, stats) = transactions_with_ports(&fixture("upgrade.pcap"), HttpConfig::default());
    assert_eq!(stats.h2_connections.get("upgrade"), Some(&2));
    // The HTTP/1.1 upgrade request is stream 1, answered in HTTP/2.
    let ones: Vec<_> = txs
        .iter()
        .filter(|(_, t)| t.h2.unwrap().stream_id == 1)
        .collect();
    assert_eq!(ones.len(), 2);
    for (_, t) in ones {
        assert_eq!(t.request.as_ref().unwrap().version, 1);
        assert!(header(&t.request.as_ref().unwrap().headers, "http2-settings").is_some());
        assert_eq!(t.response.as_ref().unwrap().version, 2);
    }
}

/// The CLI's records: tokens verified from HTTP/2 headers like HTTP/1.x's, http_version
/// and stream_id on every line.
#[test]
fn records_carry_verdicts_version_and_stream() {
    for name in ["prior-knowledge", "upgrade"] {
        let want = client_records(name);
        let out = Command::new(env!("CARGO_BIN_EXE_shieldtap"))
            .args(["replay"])
            .arg(fixture(&format!("{name}.pcap")))
            .arg("--config")
            .arg(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("samples/bots-and-stuffing/shieldtap.toml"),
            )
            .args(["--transactions-out", "-", "--alerts-out", "/dev/null"])
            .output()
            .expect("runs shieldtap");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut seen = 0;
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            if v.get("record").is_some() || v.get("rule").is_some() {
                continue;
            }
            assert_eq!(v["http_version"], "2", "{line}");
            let k = (
                v["client"]["port"].as_u64().unwrap() as u16,
                v["stream_id"].as_u64().unwrap() as u32,
            );
            let w = &want[&k];
            assert_eq!(v["attestation"]["verdict"], w["verdict"], "{k:?}");
            let user_valid = v["user_verdict"] == "valid";
            assert_eq!(user_valid, w["user"].is_string(), "{k:?}: {line}");
            // Tokens never appear in clear.
            assert!(!line.contains("eyJ"), "{line}");
            seen += 1;
        }
        assert_eq!(seen, want.len(), "{name}");
    }
}

fn tshark_available() -> bool {
    Command::new("tshark")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// tshark 4.0's HTTP/2 dissector on the same captures: the same streams, methods, paths
/// and statuses.
#[test]
fn tshark_sees_the_same_streams() {
    if !tshark_available() {
        assert!(std::env::var_os("CI").is_none(), "CI installs tshark");
        eprintln!("skipped: tshark not installed");
        return;
    }
    for (name, port, proto) in [
        ("prior-knowledge", 18310, "http2"),
        ("upgrade", 18311, "http"),
    ] {
        let pcap = fixture(&format!("{name}.pcap"));
        let o = Command::new("tshark")
            .arg("-r")
            .arg(&pcap)
            .args(["-d", &format!("tcp.port=={port},{proto}")])
            .args(["-Y", "http2.type==1 || http.request", "-T", "json"])
            .args(["-e", "tcp.srcport", "-e", "tcp.dstport", "-e", "http2.type"])
            .args(["-e", "http2.streamid", "-e", "http2.header.count"])
            .args(["-e", "http2.header.name", "-e", "http2.header.value"])
            .args(["-e", "http.request.method", "-e", "http.request.uri"])
            .output()
            .expect("runs tshark");
        assert!(o.status.success());
        let frames: Value = serde_json::from_slice(&o.stdout).expect("tshark JSON");
        // (client port, stream) -> (method, path, status) from tshark's header fields.
        let mut theirs: BTreeMap<(u16, u32), (String, String, String)> = BTreeMap::new();
        for f in frames.as_array().unwrap() {
            let l = &f["_source"]["layers"];
            let s = |k: &str| -> Vec<String> {
                l[k].as_array()
                    .map(|a| {
                        a.iter()
                            .map(|v| v.as_str().unwrap_or("").to_string())
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let src: u16 = s("tcp.srcport")[0].parse().unwrap();
            let dst: u16 = s("tcp.dstport")[0].parse().unwrap();
            let client = if dst == port { src } else { dst };
            if let Some(m) = s("http.request.method").first() {
                // The HTTP/1.1 upgrade request is stream 1 (RFC 7540 section 3.2).
                let e = theirs.entry((client, 1)).or_default();
                e.0 = m.clone();
                e.1 = path_without_query(&s("http.request.uri")[0]).to_string();
                continue;
            }
            // A packet may carry several frames: the header counts split the fields among
            // its HEADERS frames, in frame order.
            let types = s("http2.type");
            let ids = s("http2.streamid");
            let headers_frames: Vec<u32> = types
                .iter()
                .zip(&ids)
                .filter(|(t, _)| *t == "1")
                .map(|(_, id)| id.parse().unwrap())
                .collect();
            let (names, values) = (s("http2.header.name"), s("http2.header.value"));
            let mut at = 0;
            for (id, count) in headers_frames.iter().zip(s("http2.header.count")) {
                let n: usize = count.parse().unwrap();
                let e = theirs.entry((client, *id)).or_default();
                let end = (at + n).min(names.len()).min(values.len());
                for (k, v) in names[at.min(end)..end]
                    .iter()
                    .zip(&values[at.min(end)..end])
                {
                    match k.as_str() {
                        ":method" => e.0 = v.clone(),
                        ":path" => e.1 = path_without_query(v).to_string(),
                        ":status" if e.2.is_empty() => e.2 = v.clone(),
                        _ => {}
                    }
                }
                at += n;
            }
        }
        let (txs, _) = transactions_with_ports(&pcap, HttpConfig::default());
        let ours: BTreeMap<(u16, u32), (String, String, String)> = txs
            .iter()
            .map(|(p, t)| {
                let r = t.request.as_ref().unwrap();
                (
                    (*p, t.h2.unwrap().stream_id),
                    (
                        r.method.to_string(),
                        path_without_query(&r.target).to_string(),
                        t.response.as_ref().unwrap().status.to_string(),
                    ),
                )
            })
            .collect();
        assert_eq!(ours.len(), theirs.len(), "{name}: stream counts");
        assert_eq!(ours, theirs, "{name}: shieldtap and tshark differ");
    }
}

/// `editcap` keeps packets `from..`: the capture as a monitor started late sees it.
fn cut(pcap: &Path, from: usize, out: &Path) {
    let o = Command::new("editcap")
        .arg("-r")
        .arg(pcap)
        .arg(out)
        .arg(format!("{from}-1000000"))
        .output()
        .expect("runs editcap");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Joined mid-connection: every stream that begins after the cut comes out with its
/// status; its method and path too unless they were HPACK entries indexed before the cut,
/// in which case the transaction says so (`hpack-unknown-fields`).
#[test]
fn mid_stream_pickup_gives_the_later_streams() {
    if editcap_missing() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for name in ["prior-knowledge", "upgrade"] {
        let pcap = fixture(&format!("{name}.pcap"));
        let (full, _) = transactions_with_ports(&pcap, HttpConfig::default());
        let packets = load(&format!("{name}.expected.json"))["packets"]
            .as_u64()
            .unwrap() as usize;
        for from in [6, 15, 30, packets / 3, packets / 2] {
            let out = dir.path().join(format!("{name}-{from}.pcap"));
            let label = format!("{name} cut at {from}");
            let (later, stats) = later_streams(&pcap, &full, from, &out, &label);
            for (k, t, g) in &later {
                let (req, gr) = (t.request.as_ref().unwrap(), g.request.as_ref().unwrap());
                assert_eq!(
                    g.response.as_ref().map(|r| r.status),
                    t.response.as_ref().map(|r| r.status),
                    "{label}: {k:?}"
                );
                if gr.method != req.method || gr.target != req.target {
                    assert!(
                        g.anomalies.contains(Anomaly::H2UnknownFields),
                        "{label}: {k:?} differs unmarked: {} {} vs {} {}",
                        gr.method,
                        gr.target,
                        req.method,
                        req.target
                    );
                    assert!(g.h2.unwrap().unknown_fields > 0);
                }
            }
            assert!(!later.is_empty(), "{label}: nothing after the cut");
            // A token that may have been an HPACK entry from before the cut is not judged
            // missing (that would make the genuine app look unattested).
            let o = Command::new(env!("CARGO_BIN_EXE_shieldtap"))
                .arg("replay")
                .arg(&out)
                .arg("--config")
                .arg(
                    Path::new(env!("CARGO_MANIFEST_DIR"))
                        .join("samples/bots-and-stuffing/shieldtap.toml"),
                )
                .args(["--transactions-out", "-", "--alerts-out", "/dev/null"])
                .output()
                .expect("runs shieldtap");
            assert!(o.status.success());
            for line in String::from_utf8(o.stdout).unwrap().lines() {
                let v: Value = serde_json::from_str(line).unwrap();
                if v["unknown_header_fields"].as_u64().unwrap_or(0) > 0 {
                    assert_ne!(v["attestation"]["verdict"], "missing", "{line}");
                }
            }
            let recognised: u64 = stats.h2_connections.values().sum();
            assert!(recognised > 0, "{label}: {stats:?}");
        }
    }
}

/// Skips (with a note) when editcap is not installed; CI installs it with tshark.
fn editcap_missing() -> bool {
    if tshark_available() {
        return false;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI installs tshark (editcap)"
    );
    eprintln!("skipped: editcap not installed");
    true
}

/// A stream of the whole capture and the same stream in the cut one.
type LaterStream = ((u16, u32), Transaction, Transaction);

/// `pcap` cut at packet `from` (written to `out`): each transaction of the whole capture
/// (`full`) whose request begins after the cut's first packet, with the cut capture's
/// transaction of the same stream (a missing one fails the test), and the cut's counters.
fn later_streams(
    pcap: &Path,
    full: &[(u16, Transaction)],
    from: usize,
    out: &Path,
    label: &str,
) -> (Vec<LaterStream>, shieldtap::http::HttpStats) {
    cut(pcap, from, out);
    let (txs, stats) = transactions_with_ports(out, HttpConfig::default());
    let first_ts = first_packet_time(out);
    let got = by_stream(&txs);
    let later = full
        .iter()
        .filter(|(_, t)| t.request.as_ref().unwrap().ts.as_secs_f64() > first_ts + 0.002)
        .map(|(p, t)| {
            let k = (*p, t.h2.unwrap().stream_id);
            let g = got
                .get(&k)
                .unwrap_or_else(|| panic!("{label}: stream {k:?} missing"));
            assert!(g.request.is_some(), "{label}: {k:?} has no request");
            (k, t.clone(), (*g).clone())
        })
        .collect();
    (later, stats)
}

fn first_packet_time(pcap: &Path) -> f64 {
    let mut first = None;
    let mut stats = shieldtap::capture::CaptureStats::default();
    shieldtap::capture::read_file(
        pcap,
        &shieldtap::capture::Progress::default(),
        &mut stats,
        &mut |f| {
            first.get_or_insert(f.ts.as_secs_f64());
        },
    )
    .unwrap();
    first.unwrap()
}

/// samples/grpc: every call the clients made (grpcio 1.51, unary and server-streaming,
/// gzip messages, trailers-only failures) with its grpc-status and the number of response
/// messages the client received.
#[test]
fn grpc_calls_have_the_clients_status_and_messages() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/grpc");
    let mut want: Vec<(String, String, u64, u64)> =
        std::fs::read_to_string(root.join("expected.jsonl"))
            .expect("expected.jsonl")
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                (
                    v["client_ip"].as_str().unwrap().to_string(),
                    v["path"].as_str().unwrap().to_string(),
                    v["grpc_status"].as_u64().unwrap(),
                    v["response_messages"].as_u64().unwrap(),
                )
            })
            .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_shieldtap"))
        .arg("replay")
        .arg(root.join("capture.pcap"))
        .arg("--config")
        .arg(root.join("shieldtap.toml"))
        .args(["--transactions-out", "-", "--alerts-out", "/dev/null"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("runs shieldtap");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut got: Vec<(String, String, u64, u64)> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v.get("grpc").is_some())
        .map(|v| {
            (
                v["client"]["ip"].as_str().unwrap().to_string(),
                v["path"].as_str().unwrap().to_string(),
                v["grpc"]["status"].as_u64().unwrap(),
                v["grpc"]["response_messages"].as_u64().unwrap(),
            )
        })
        .collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);
    // Neither tokens, passwords nor the stuffer's usernames appear in the records.
    for secret in ["eyJ", "Winter2026", "victim01@example.com", "correct-horse"] {
        assert!(!text.contains(secret), "{secret} in clear");
    }
}

/// The gRPC recording joined late: grpc-core sends tokens as literals and indexes paths
/// and statuses after first use, so every call that begins after the cut comes out, with
/// its path and grpc-status or the mark that a field was an entry from before the cut.
#[test]
fn grpc_mid_stream_pickup_gives_the_later_calls() {
    if editcap_missing() {
        return;
    }
    let pcap = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/grpc/capture.pcap");
    let (full, _) = transactions_with_ports(&pcap, HttpConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let grpc_status = |t: &Transaction| {
        t.response
            .as_ref()
            .and_then(|r| {
                header(&r.body.trailers, "grpc-status").or(header(&r.headers, "grpc-status"))
            })
            .map(<[u8]>::to_vec)
    };
    for from in [40, 200, 450] {
        let out = dir.path().join(format!("grpc-{from}.pcap"));
        let label = format!("grpc cut at {from}");
        let (later, stats) = later_streams(&pcap, &full, from, &out, &label);
        for (k, t, g) in &later {
            // grpc-core indexes grpc-status: an entry from before the cut is unknown, and
            // the transaction says so.
            assert!(
                grpc_status(g) == grpc_status(t) || g.anomalies.contains(Anomaly::H2UnknownFields),
                "{label}: {k:?}"
            );
            let (req, gr) = (t.request.as_ref().unwrap(), g.request.as_ref().unwrap());
            assert!(
                gr.target == req.target || g.anomalies.contains(Anomaly::H2UnknownFields),
                "{label}: {k:?}"
            );
        }
        assert!(
            later.len() > 10,
            "{label}: {} calls after the cut",
            later.len()
        );
        assert!(stats.h2_connections.values().sum::<u64>() > 0);
    }
}
