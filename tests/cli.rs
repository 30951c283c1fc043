//! The command line's contract: exit statuses and errors for bad input (INTERFACE.md).

use std::io::Write;
use std::process::{Command, Output};

fn shieldtap(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shieldtap"))
        .args(args)
        .output()
        .expect("runs shieldtap")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn temp_with(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    f.write_all(bytes).expect("write");
    f
}

/// A pcap with one complete HTTP exchange on a fresh connection (hand-built with
/// etherparse: the edge cases below need byte-level control over the file).
fn tiny_capture() -> Vec<u8> {
    use etherparse::PacketBuilder;
    let mut out = Vec::new();
    for v in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, 1] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    let c = [10, 0, 0, 1];
    let s = [10, 0, 0, 2];
    let req = b"GET /hello?x=1 HTTP/1.1\r\nHost: a\r\n\r\n".as_slice();
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi".as_slice();
    let mut frames: Vec<Vec<u8>> = Vec::new();
    let mut f = Vec::new();
    PacketBuilder::ethernet2([0; 6], [0; 6])
        .ipv4(c, s, 64)
        .tcp(40000, 80, 100, 1000)
        .syn()
        .write(&mut f, &[])
        .expect("builds");
    frames.push(std::mem::take(&mut f));
    PacketBuilder::ethernet2([0; 6], [0; 6])
        .ipv4(s, c, 64)
        .tcp(80, 40000, 500, 1000)
        .syn()
        .ack(101)
        .write(&mut f, &[])
        .expect("builds");
    frames.push(std::mem::take(&mut f));
    PacketBuilder::ethernet2([0; 6], [0; 6])
        .ipv4(c, s, 64)
        .tcp(40000, 80, 101, 1000)
        .ack(501)
        .write(&mut f, req)
        .expect("builds");
    frames.push(std::mem::take(&mut f));
    PacketBuilder::ethernet2([0; 6], [0; 6])
        .ipv4(s, c, 64)
        .tcp(80, 40000, 501, 1000)
        .ack(101 + req.len() as u32)
        .write(&mut f, resp)
        .expect("builds");
    frames.push(std::mem::take(&mut f));
    for (i, fr) in frames.iter().enumerate() {
        for v in [
            1_795_000_000u32,
            i as u32 * 1000,
            fr.len() as u32,
            fr.len() as u32,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(fr);
    }
    out
}

#[test]
fn replay_writes_transactions_and_summary() {
    let cap = temp_with(&tiny_capture());
    let dir = tempfile::tempdir().expect("temp dir");
    let tx = dir.path().join("tx.jsonl");
    let sum = dir.path().join("summary.json");
    let o = shieldtap(&[
        "replay",
        cap.path().to_str().expect("utf-8"),
        "--transactions-out",
        tx.to_str().expect("utf-8"),
        "--summary-json",
        sum.to_str().expect("utf-8"),
        "--workers",
        "2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&tx)
        .expect("tx written")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 1);
    let t = &lines[0];
    assert_eq!(t["method"], "GET");
    assert_eq!(t["path"], "/hello");
    assert_eq!(t["status"], 200);
    assert_eq!(t["client"]["ip"], "10.0.0.1");
    assert_eq!(t["server"]["port"], 80);
    assert_eq!(t["response_body_bytes"], 2);
    assert_eq!(t["ts"], "2026-11-18T11:06:40.002000Z");
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&sum).expect("summary")).expect("json");
    assert_eq!(s["capture"]["frames"], 4);
    assert_eq!(s["http"]["paired"], 1);
    assert_eq!(s["workers"], 2);
}

#[test]
fn missing_empty_and_garbage_inputs_exit_1_with_a_clear_error() {
    let o = shieldtap(&["replay", "/nonexistent/capture.pcap"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("/nonexistent/capture.pcap"),
        "{}",
        stderr(&o)
    );

    let empty = temp_with(b"");
    let o = shieldtap(&["replay", empty.path().to_str().expect("utf-8")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("empty"), "{}", stderr(&o));

    let garbage = temp_with(b"\x00\x01garbage that is no capture file at all, not even close");
    let o = shieldtap(&["replay", garbage.path().to_str().expect("utf-8")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("not a pcap or pcapng"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn truncated_capture_is_processed_and_counted() {
    let mut bytes = tiny_capture();
    bytes.truncate(bytes.len() - 10);
    let cap = temp_with(&bytes);
    let dir = tempfile::tempdir().expect("temp dir");
    let sum = dir.path().join("summary.json");
    let o = shieldtap(&[
        "replay",
        cap.path().to_str().expect("utf-8"),
        "--summary-json",
        sum.to_str().expect("utf-8"),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&sum).expect("summary")).expect("json");
    assert_eq!(s["capture"]["truncated_files"], 1);
    assert_eq!(s["capture"]["frames"], 3);
    // The request survives; its response was cut off.
    assert_eq!(
        s["http"]["anomalies_by_kind"]["request-without-response"],
        1
    );
}

#[test]
fn stdin_is_a_capture_source() {
    let cap = temp_with(&tiny_capture());
    let o = Command::new(env!("CARGO_BIN_EXE_shieldtap"))
        .args(["replay", "-", "--transactions-out", "-"])
        .stdin(std::fs::File::open(cap.path()).expect("open"))
        .output()
        .expect("runs");
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("\"path\":\"/hello\""), "{out}");
}

#[test]
fn config_and_usage_errors_exit_2() {
    let cap = temp_with(&tiny_capture());
    let cfg = temp_with(b"[reassembly]\nidle_timeout = 5\n");
    let o = shieldtap(&[
        "replay",
        cap.path().to_str().expect("utf-8"),
        "--config",
        cfg.path().to_str().expect("utf-8"),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains(":2:1:") && e.contains("idle_timeout"), "{e}");

    let o = shieldtap(&["replay"]);
    assert_eq!(o.status.code(), Some(2));
    let o = shieldtap(&["replay", "--workers", "many", "x.pcap"]);
    assert_eq!(o.status.code(), Some(2));
}

/// A real capture cut to a 96-byte snaplen (by editcap, Wireshark's tool): heads are lost,
/// so shieldtap must finish, count the cut frames and gaps, and flag the damage.
#[test]
fn snaplen_cut_capture_is_counted_not_fatal() {
    if Command::new("editcap").arg("-h").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI installs tshark (editcap)"
        );
        eprintln!("note: editcap missing, test skipped");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let cut = dir.path().join("cut.pcap");
    let sample = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/samples/curl-keepalive/capture.pcap"
    );
    let st = Command::new("editcap")
        .args(["-s", "96", sample, cut.to_str().expect("utf-8")])
        .status()
        .expect("editcap");
    assert!(st.success());
    let sum = dir.path().join("summary.json");
    let tx = dir.path().join("tx.jsonl");
    let o = shieldtap(&[
        "replay",
        cut.to_str().expect("utf-8"),
        "--summary-json",
        sum.to_str().expect("utf-8"),
        "--transactions-out",
        tx.to_str().expect("utf-8"),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&sum).expect("summary")).expect("json");
    assert!(
        s["capture"]["snaplen_cut_frames"].as_u64().unwrap_or(0) > 0,
        "{s}"
    );
    assert!(
        s["reassembly"]["gap_bytes"].as_u64().unwrap_or(0) > 0,
        "{s}"
    );
    // Every transaction that survives is flagged with what was lost.
    for line in std::fs::read_to_string(&tx).expect("tx").lines() {
        let t: serde_json::Value = serde_json::from_str(line).expect("json");
        assert!(
            !t["anomalies"].as_array().expect("list").is_empty(),
            "{line}"
        );
    }
}

/// Replays `capture` with `config` text (if any) and returns the summary, the
/// transactions written and stderr.
fn replay_summary(capture: &str, config: Option<&str>) -> (serde_json::Value, String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let sum = dir.path().join("summary.json");
    let tx = dir.path().join("tx.jsonl");
    let cfg = dir.path().join("shieldtap.toml");
    let mut args = vec![
        "replay".to_string(),
        capture.to_string(),
        "--summary-json".into(),
        sum.to_str().expect("utf-8").into(),
        "--transactions-out".into(),
        tx.to_str().expect("utf-8").into(),
        "--metrics-listen".into(),
        "off".into(),
    ];
    if let Some(text) = config {
        std::fs::write(&cfg, text).expect("config");
        args.extend(["--config".into(), cfg.to_str().expect("utf-8").into()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = shieldtap(&args);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let s = serde_json::from_str(&std::fs::read_to_string(&sum).expect("summary")).expect("json");
    (s, std::fs::read_to_string(&tx).expect("tx"), stderr(&o))
}

/// The sample was recorded on loopback, where the kernel leaves TCP checksums to an
/// offload that never happens: "auto" verifies the first 1,000 segments, finds them all
/// failing, says so once and verifies no more; `true` verifies (and counts) every one.
/// What is analysed is the same either way.
#[test]
fn offloaded_checksums_are_verified_for_a_probe_only() {
    let sample = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/samples/mobile-network/capture.pcap"
    );
    let (auto, auto_tx, auto_err) = replay_summary(sample, None);
    let d = &auto["decode"];
    let segments = d["tcp_segments"].as_u64().expect("segments");
    assert!(segments > 5_000, "{d}");
    assert_eq!(d["bad_tcp_checksum"], 1000, "{d}");
    assert_eq!(d["tcp_checksums_unverified"], segments - 1000, "{d}");
    assert!(
        auto_err.contains("TCP checksums fail on 1000 of the first 1000 segments"),
        "{auto_err}"
    );
    let (all, all_tx, all_err) =
        replay_summary(sample, Some("[decode]\nverify_checksums = true\n"));
    let d = &all["decode"];
    assert_eq!(d["tcp_checksums_unverified"], 0, "{d}");
    assert!(d["bad_tcp_checksum"].as_u64().expect("count") > 1000, "{d}");
    assert!(!all_err.contains("TCP checksums fail"), "{all_err}");
    // The same transactions (workers write theirs in whatever order they finish).
    let sorted = |t: &str| {
        let mut v: Vec<String> = t.lines().map(str::to_string).collect();
        v.sort();
        v
    };
    assert_eq!(sorted(&auto_tx), sorted(&all_tx));
    assert!(auto_tx.lines().count() > 1000);
}
