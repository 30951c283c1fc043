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

/// (client address, client port, whether the server sent it, TCP payload bytes) of an
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

/// Writes `samples/mobile-network/capture.pcap` again as `dir/name`, each record with the
/// header `edit` gives it (`None` leaves the record out); returns the path.
fn rewrite_sample(
    dir: &Path,
    name: &str,
    mut edit: impl FnMut(&Record) -> Option<[u8; 16]>,
) -> PathBuf {
    let (global, records) = read_pcap(&Path::new(ROOT).join("samples/mobile-network/capture.pcap"));
    let mut out = global.to_vec();
    for r in &records {
        if let Some(header) = edit(r) {
            out.extend_from_slice(&header);
            out.extend_from_slice(&r.data);
        }
    }
    let path = dir.join(name);
    std::fs::write(&path, out).expect("write capture");
    path
}

/// Writes the sample with every connection of the `127.40.0.x` phones cut dead right after
/// its third request; returns the path and how many connections were cut.
fn cut_capture(dir: &Path) -> (PathBuf, usize) {
    let mut requests: std::collections::HashMap<u16, usize> = Default::default();
    let mut cut: std::collections::HashMap<u16, f64> = Default::default();
    let mut last = 0.0f64;
    let path = rewrite_sample(dir, "cut.pcap", |r| {
        last = last.max(r.secs);
        if let Some((client, port, from_server, payload)) = tcp_of(&r.data)
            && client[..3] == [127, 40, 0]
        {
            if cut.get(&port).is_some_and(|at| r.secs > *at) {
                return None;
            }
            if !from_server && payload > 0 {
                let n = requests.entry(port).or_default();
                *n += 1;
                if *n == 3 {
                    cut.insert(port, r.secs);
                }
            }
        }
        Some(r.header)
    });
    // The cuts leave traffic behind them: the other connections go on for minutes.
    assert!(
        cut.values().all(|at| last - at > 30.0),
        "cut well before the end: {cut:?}"
    );
    (path, cut.len())
}

/// Writes the sample with the packets of one phone's connection stamped `back` seconds
/// earlier than recorded (file order unchanged), as a tap that merges queues or interfaces
/// with skewed clocks shows them; returns the path.
fn skewed_capture(dir: &Path, back: f64) -> PathBuf {
    let mut skewed_port = None;
    let mut skewed = 0;
    let path = rewrite_sample(dir, &format!("skewed-{back}.pcap"), |r| {
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
        Some(header)
    });
    assert!(skewed > 100, "a busy connection skewed: {skewed} packets");
    path
}

/// Writes the sample's config with `extra` appended as `dir/name`; returns the path.
fn sample_config(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let toml =
        std::fs::read_to_string(Path::new(ROOT).join("samples/mobile-network/shieldtap.toml"))
            .expect("sample config");
    let path = dir.join(name);
    std::fs::write(&path, format!("{toml}\n{extra}")).expect("write config");
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

/// Replays `capture` with 1, 2 and 4 workers: no event reaches detection after a later
/// one, and the alerts (flagging the sample's attackers) are the same with each. Returns
/// the summaries, by worker count.
fn in_order_with_any_worker_count(
    capture: &Path,
    config: &Path,
    dir: &Path,
) -> Vec<(&'static str, Value)> {
    let mut first: Option<String> = None;
    let mut summaries = Vec::new();
    for workers in ["1", "2", "4"] {
        let (alerts, summary) = replay(capture, config, workers, dir);
        assert_eq!(
            summary["detect"]["late_events"], 0,
            "{workers} workers: events reached detection after later ones: {}",
            summary["detect"]
        );
        assert!(
            !alerts.is_empty(),
            "the sample's attackers are still flagged"
        );
        match &first {
            None => first = Some(alerts),
            Some(one) => assert_eq!(&alerts, one, "alerts with {workers} workers"),
        }
        summaries.push((workers, summary));
    }
    summaries
}

#[test]
fn timeouts_far_behind_the_clock_are_never_late() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (capture, cut) = cut_capture(dir.path());
    assert!(cut >= 5, "connections cut: {cut}");
    // Connections idle for 2 s time out, swept every 10 s: a timeout is stamped up to 10 s
    // behind the clock of the worker that sweeps it.
    let config = sample_config(
        dir.path(),
        "shieldtap.toml",
        "[reassembly]\nidle_timeout_secs = 2\nclose_linger_secs = 10\n",
    );
    for (workers, summary) in in_order_with_any_worker_count(&capture, &config, dir.path()) {
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
    }
}

/// `[runtime] ordering_lateness_ms` is what lets timestamps that step back reach detection
/// in order: a connection stamped 1.5 s behind the rest comes in late with the default
/// (0.5 s), counted, and in order with 3 s.
#[test]
fn a_longer_ordering_lateness_takes_in_timestamps_that_step_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let capture = skewed_capture(dir.path(), 1.5);
    let default = sample_config(dir.path(), "default.toml", "");
    let (_, summary) = replay(&capture, &default, "1", dir.path());
    let late = summary["detect"]["late_events"].as_u64().unwrap_or(0);
    assert!(late > 0, "with the default lateness: {}", summary["detect"]);
    let longer = sample_config(
        dir.path(),
        "longer.toml",
        "[runtime]\nordering_lateness_ms = 3000\n",
    );
    in_order_with_any_worker_count(&capture, &longer, dir.path());
}
