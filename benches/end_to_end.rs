//! End to end: a generated capture replayed through capture → decode → reassembly → http
//! with one worker. Prints packets/s, Mbit/s and transactions/s from the run's summary,
//! then lets criterion time repeated runs.
//!
//! The capture is synthesised here (keep-alive connections, JSON API requests with
//! attestation and bearer headers, Content-Length and chunked responses) so the bench needs
//! no external file; `benches/compare_tshark.sh` compares against tshark on a capture
//! recorded from real clients and servers.

use std::io::Write;
use std::net::Ipv4Addr;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use etherparse::PacketBuilder;
use shieldtap::capture::Progress;
use shieldtap::config::Config;
use shieldtap::runtime::{self, Outputs};

/// The allocator the shipped binary uses (see `src/main.rs`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CONNECTIONS: u32 = 200;
const REQUESTS_PER_CONNECTION: u32 = 250;
/// Packet time between packets: the capture spans 30 s, ten times the detect thread's
/// ordering lateness (3 s), so the pipeline runs in steady state as on a live port rather
/// than holding every event until the end of a capture shorter than the lateness.
const PACKET_GAP_NANOS: u64 = 300_000;

/// CPU seconds this process has used (all threads, live and finished), from
/// `/proc/self/stat` (user + system clock ticks, 100 per second on Linux).
fn cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at state (field 3).
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn record(out: &mut Vec<u8>, ts_us: u64, frame: &[u8]) {
    out.extend_from_slice(&((ts_us / 1_000_000) as u32).to_le_bytes());
    out.extend_from_slice(&((ts_us % 1_000_000) as u32).to_le_bytes());
    out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    out.extend_from_slice(frame);
}

/// A pcap of `CONNECTIONS` keep-alive connections, interleaved, one request/response
/// exchange per step. Returns the file bytes and the number of transactions.
fn synth_capture() -> (Vec<u8>, u64) {
    let mut out = Vec::new();
    for v in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 262_144, 1] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    // Header is magic, version (2 u16 = one u32), thiszone, sigfigs, snaplen, linktype.
    let server = Ipv4Addr::new(10, 1, 0, 10);
    let mut seqs: Vec<(u32, u32)> = (0..CONNECTIONS).map(|_| (1, 1)).collect();
    let mut ts = 1_795_000_000_000_000u64;
    let mut frame = Vec::with_capacity(2048);
    let mut txns = 0;
    for r in 0..REQUESTS_PER_CONNECTION {
        for c in 0..CONNECTIONS {
            let client = Ipv4Addr::new(10, 0, (c >> 8) as u8, c as u8);
            let cport = 40000 + (c % 20000) as u16;
            let (cs, ss) = seqs[c as usize];
            let req = format!(
                "GET /api/v1/users/{c}/orders?page={r} HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: okhttp/4.12.0\r\nAccept: application/json\r\nAuthorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyLXtjfSJ9.c2lnbmF0dXJl\r\nApproov-Token: eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjE3OTUwMDAzMDAsImRpZCI6ImRldmljZSJ9.c2ln\r\nAccept-Encoding: gzip\r\n\r\n"
            );
            let body = format!(
                "{{\"orders\":[{{\"id\":{r}1,\"total\":12.5,\"items\":3}},{{\"id\":{r}2,\"total\":7.25,\"items\":1}}],\"page\":{r},\"user\":{c}}}"
            );
            let resp = if r.is_multiple_of(4) {
                format!(
                    "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
                    body.len()
                )
            } else {
                format!(
                    "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n{body}",
                    body.len()
                )
            };
            ts += PACKET_GAP_NANOS;
            frame.clear();
            PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
                .ipv4(client.octets(), server.octets(), 64)
                .tcp(cport, 80, cs, 65535)
                .ack(ss)
                .write(&mut frame, req.as_bytes())
                .expect("frame builds");
            record(&mut out, ts / 1000, &frame);
            ts += PACKET_GAP_NANOS;
            frame.clear();
            PacketBuilder::ethernet2([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1])
                .ipv4(server.octets(), client.octets(), 64)
                .tcp(80, cport, ss, 65535)
                .ack(cs + req.len() as u32)
                .write(&mut frame, resp.as_bytes())
                .expect("frame builds");
            record(&mut out, ts / 1000, &frame);
            seqs[c as usize] = (cs + req.len() as u32, ss + resp.len() as u32);
            txns += 1;
        }
    }
    (out, txns)
}

fn bench(c: &mut Criterion) {
    let (bytes, txns) = synth_capture();
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(&bytes).expect("write capture");
    let path = file.path().to_path_buf();
    let cfg = Config::default();

    // The built-in rule pack runs, as in `shieldtap replay` without `--rules`.
    let rules = shieldtap::rules::builtin().expect("built-in rules");
    let cpu_before = cpu_secs();
    let summary = runtime::replay(
        &cfg,
        rules.clone(),
        std::slice::from_ref(&path),
        1,
        Outputs::default(),
        &Progress::default(),
    )
    .expect("replay");
    assert_eq!(
        summary.http.paired, txns,
        "every generated transaction is found"
    );
    let secs = summary.elapsed_secs;
    let cpu = cpu_secs().zip(cpu_before).map(|(a, b)| a - b);
    eprintln!(
        "end_to_end (1 worker): {} packets, {} transactions in {:.3}s: {:.0} packets/s, {:.0} Mbit/s, {:.0} transactions/s",
        summary.capture.frames,
        summary.http.transactions,
        secs,
        summary.capture.frames as f64 / secs,
        summary.capture.bytes as f64 * 8.0 / secs / 1e6,
        summary.http.transactions as f64 / secs
    );
    if let Some(cpu) = cpu.filter(|c| *c > 0.0) {
        eprintln!(
            "end_to_end (1 worker): {cpu:.2} CPU seconds over all threads ({:.2} cores busy): {:.0} transactions per CPU second",
            cpu / secs,
            summary.http.transactions as f64 / cpu
        );
    }

    let mut g = c.benchmark_group("end_to_end");
    g.sample_size(10);
    g.throughput(Throughput::Elements(txns));
    g.bench_function("replay_1_worker_transactions", |b| {
        b.iter(|| {
            runtime::replay(
                &cfg,
                rules.clone(),
                std::slice::from_ref(&path),
                1,
                Outputs::default(),
                &Progress::default(),
            )
            .expect("replay")
            .http
            .transactions
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
