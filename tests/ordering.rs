//! Events reach detection in packet-time order even when connections are closed by timeouts
//! far behind the workers' clocks.
//!
//! A connection closed by a timeout sweep is stamped with its deadline (its last packet
//! plus `idle_timeout_secs`), which can be a whole sweep interval (`close_linger_secs`)
//! behind the worker's clock by the time the sweep runs. Workers report the time of their
//! last sweep as their watermark, so the detect thread never releases an event that such a
//! close could precede. Here the recorded `samples/mobile-network` capture is cut so that
//! several connections stop dead right after a request (a server that hung, or a tap that
//! lost the rest): each such request is answered by nobody and comes out when its
//! connection times out, stamped seconds behind the clock of a worker that sweeps every
//! 10 s, while the other connections' traffic goes on. Before the watermark was the sweep's
//! (it was the worker's clock, with 3 s of lateness), this replay handed detection 4, 2
//! and 3 late events with 1, 2 and 4 workers.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const SERVER_PORT: u16 = 18097;

struct Record {
    header: [u8; 16],
    data: Vec<u8>,
    secs: f64,
}

/// A classic little-endian pcap's records (the sample is one, microsecond timestamps).
fn read_pcap(path: &Path) -> ([u8; 24], Vec<Record>) {
    let bytes = std::fs::read(path).expect("sample capture");
    let global: [u8; 24] = bytes[..24].try_into().expect("global header");
    assert_eq!(
        u32::from_le_bytes(global[..4].try_into().expect("magic")),
        0xa1b2_c3d4,
        "a little-endian microsecond pcap"
    );
    let mut records = Vec::new();
    let mut at = 24;
    while at + 16 <= bytes.len() {
        let header: [u8; 16] = bytes[at..at + 16].try_into().expect("record header");
        let word = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().expect("word"));
        let len = word(8) as usize;
        let data = bytes[at + 16..at + 16 + len].to_vec();
        records.push(Record {
            header,
            data,
            secs: f64::from(word(0)) + f64::from(word(4)) / 1e6,
        });
        at += 16 + len;
    }
    assert_eq!(at, bytes.len(), "the capture ends on a record");
    (global, records)
}

/// (client address, client port, server side's payload bytes, client's payload bytes) of an
/// Ethernet/IPv4/TCP frame to or from the sample's API port.
fn tcp_of(frame: &[u8]) -> Option<([u8; 4], u16, bool, usize)> {
    let ip = frame.get(14..)?;
    if frame.get(12..14)? != [0x08, 0x00] || ip.first()? >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let tcp = ip.get(ihl..)?;
    let (src, dst) = (
        u16::from_be_bytes([tcp[0], tcp[1]]),
        u16::from_be_bytes([tcp[2], tcp[3]]),
    );
    let payload = total - ihl - usize::from(tcp[12] >> 4) * 4;
    if dst == SERVER_PORT {
        Some((ip[12..16].try_into().ok()?, src, false, payload))
    } else if src == SERVER_PORT {
        Some((ip[16..20].try_into().ok()?, dst, true, payload))
    } else {
        None
    }
}

/// Writes the sample with every connection of the `127.40.0.x` phones cut dead right after
/// its third request; returns the path and how many connections were cut.
fn cut_capture(dir: &Path) -> (PathBuf, usize) {
    let (global, records) = read_pcap(&Path::new(ROOT).join("samples/mobile-network/capture.pcap"));
    let mut requests: std::collections::HashMap<u16, usize> = Default::default();
    let mut cut: std::collections::HashMap<u16, f64> = Default::default();
    let mut out = global.to_vec();
    let mut last = 0.0f64;
    for r in &records {
        last = last.max(r.secs);
        if let Some((client, port, from_server, payload)) = tcp_of(&r.data)
            && client[..3] == [127, 40, 0]
        {
            if cut.get(&port).is_some_and(|at| r.secs > *at) {
                continue;
            }
            if !from_server && payload > 0 {
                let n = requests.entry(port).or_default();
                *n += 1;
                if *n == 3 {
                    cut.insert(port, r.secs);
                }
            }
        }
        out.extend_from_slice(&r.header);
        out.extend_from_slice(&r.data);
    }
    // The cuts leave traffic behind them: the other connections go on for minutes.
    assert!(
        cut.values().all(|at| last - at > 30.0),
        "cut well before the end: {cut:?}"
    );
    let path = dir.join("cut.pcap");
    std::fs::write(&path, out).expect("write capture");
    (path, cut.len())
}

/// Writes the sample with the packets of one phone's connection stamped `back` seconds
/// earlier than recorded (file order unchanged), as a tap that merges queues or interfaces
/// with skewed clocks shows them; returns the path.
fn skewed_capture(dir: &Path, back: f64) -> PathBuf {
    let (global, records) = read_pcap(&Path::new(ROOT).join("samples/mobile-network/capture.pcap"));
    let mut skewed_port = None;
    let mut skewed = 0;
    let mut out = global.to_vec();
    for r in &records {
        let mut header = r.header;
        if let Some((client, port, _, _)) = tcp_of(&r.data)
            && client[..3] == [127, 40, 0]
            && *skewed_port.get_or_insert(port) == port
        {
            let micros = (r.secs * 1e6).round() as u64 - (back * 1e6) as u64;
            header[..4].copy_from_slice(
                &u32::try_from(micros / 1_000_000)
                    .expect("secs")
                    .to_le_bytes(),
            );
            header[4..8].copy_from_slice(
                &u32::try_from(micros % 1_000_000)
                    .expect("micros")
                    .to_le_bytes(),
            );
            skewed += 1;
        }
        out.extend_from_slice(&header);
        out.extend_from_slice(&r.data);
    }
    assert!(skewed > 100, "a busy connection skewed: {skewed} packets");
    let path = dir.join(format!("skewed-{back}.pcap"));
    std::fs::write(&path, out).expect("write capture");
    path
}

fn replay(capture: &Path, config: &Path, workers: &str, dir: &Path) -> (String, Value) {
    let summary = dir.join(format!("summary-{workers}.json"));
    let o = Command::new(env!("CARGO_BIN_EXE_shieldtap"))
        .args(["replay"])
        .arg(capture)
        .arg("--config")
        .arg(config)
        .args([
            "--workers",
            workers,
            "--no-progress",
            "--metrics-listen",
            "off",
        ])
        .arg("--summary-json")
        .arg(&summary)
        .output()
        .expect("run shieldtap");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: Value =
        serde_json::from_slice(&std::fs::read(&summary).expect("summary")).expect("json");
    (String::from_utf8(o.stdout).expect("utf-8"), summary)
}

#[test]
fn timeouts_far_behind_the_clock_are_never_late() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (capture, cut) = cut_capture(dir.path());
    assert!(cut >= 5, "connections cut: {cut}");
    // Connections idle for 2 s time out, swept every 10 s: a timeout is stamped up to 10 s
    // behind the clock of the worker that sweeps it.
    let config = dir.path().join("shieldtap.toml");
    let mut toml =
        std::fs::read_to_string(Path::new(ROOT).join("samples/mobile-network/shieldtap.toml"))
            .expect("sample config");
    toml.push_str("\n[reassembly]\nidle_timeout_secs = 2\nclose_linger_secs = 10\n");
    std::fs::write(&config, toml).expect("write config");
    let mut first: Option<String> = None;
    for workers in ["1", "2", "4"] {
        let (alerts, summary) = replay(&capture, &config, workers, dir.path());
        assert_eq!(
            summary["detect"]["late_events"], 0,
            "{workers} workers: events reached detection after later ones: {}",
            summary["detect"]
        );
        let timed_out = summary["reassembly"]["flows_closed"]["idle-timeout"]
            .as_u64()
            .unwrap_or(0);
        assert!(
            timed_out >= cut as u64,
            "{workers} workers: the cut connections time out ({timed_out})"
        );
        // The cut requests are answered by nobody: each comes out, unpaired, as its
        // connection times out.
        let http = &summary["http"];
        let unanswered =
            http["transactions"].as_u64().unwrap_or(0) - http["paired"].as_u64().unwrap_or(0);
        assert_eq!(unanswered, cut as u64, "{workers} workers: {http}");
        assert!(
            !alerts.is_empty(),
            "the sample's attackers are still flagged"
        );
        match &first {
            None => first = Some(alerts),
            Some(one) => assert_eq!(&alerts, one, "alerts with {workers} workers"),
        }
    }
}

/// `[runtime] ordering_lateness_ms` is what lets timestamps that step back reach detection
/// in order: a connection stamped 1.5 s behind the rest comes in late with the default
/// (0.5 s), counted, and in order with 3 s.
#[test]
fn a_longer_ordering_lateness_takes_in_timestamps_that_step_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let capture = skewed_capture(dir.path(), 1.5);
    let sample =
        std::fs::read_to_string(Path::new(ROOT).join("samples/mobile-network/shieldtap.toml"))
            .expect("sample config");
    let default = dir.path().join("default.toml");
    std::fs::write(&default, &sample).expect("write config");
    let (_, summary) = replay(&capture, &default, "1", dir.path());
    let late = summary["detect"]["late_events"].as_u64().unwrap_or(0);
    assert!(late > 0, "with the default lateness: {}", summary["detect"]);
    let longer = dir.path().join("longer.toml");
    std::fs::write(
        &longer,
        format!("{sample}\n[runtime]\nordering_lateness_ms = 3000\n"),
    )
    .expect("write config");
    let mut first: Option<String> = None;
    for workers in ["1", "2", "4"] {
        let (alerts, summary) = replay(&capture, &longer, workers, dir.path());
        assert_eq!(
            summary["detect"]["late_events"], 0,
            "{workers} workers, 3 s of lateness: {}",
            summary["detect"]
        );
        match &first {
            None => first = Some(alerts),
            Some(one) => assert_eq!(&alerts, one, "alerts with {workers} workers"),
        }
    }
}
