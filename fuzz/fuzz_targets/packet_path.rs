//! Attacker-written HTTP/1.x conversations through the worker's whole packet path and the
//! detect engine: Ethernet/IPv4/TCP frames (real checksums) around fuzzed stream bytes,
//! decoded, reassembled, parsed, paired, bodies decoded and scanned, tokens judged, objects
//! and usernames read, events built (`runtime::PacketPath`, the code the workers run), then
//! every event into an engine with the built-in rules. Must never panic; builds no more
//! events than transactions; and no alert carries a token written in the input as an
//! `Authorization` or `Approov-Token` value (secrets reach alerts hashed or masked only).
//!
//! The config is `samples/mobile-network`'s (Approov and user-token secrets, 127.0.0.3 a
//! trusted proxy adding `X-Forwarded-For`), so seeds cut from that sample's streams carry
//! tokens that verify (`scripts/fuzz_packet_path_seeds.py` writes them).
//!
//! Input layout: steps, each a control byte (bit 7: direction, client to server when clear;
//! low 7 bits: 0..=119 send the next that many bytes plus one as one segment, 120..=123 let
//! 1, 10, 100 or 1,000 s of packet time pass, 124 closes the connection (FIN both ways) and
//! opens the next from the next client address, 125 drops the next segment of that
//! direction (a capture gap), 126 sends its next segment twice (a retransmission), 127 a
//! reset). A conversation is written as it went: request bytes, response bytes, in turns.
#![no_main]

use std::path::Path;
use std::sync::{Arc, OnceLock};

use etherparse::PacketBuilder;
use libfuzzer_sys::fuzz_target;
use shieldtap::capture::{Frame, Timestamp};
use shieldtap::config::Config;
use shieldtap::detect::{DetectConfig, Engine, write_alert};
use shieldtap::runtime::{PacketPath, Shared};
use shieldtap::telemetry::metrics::Hub;

#[path = "../harness/jws.rs"]
mod jws;

const CLIENTS: [[u8; 4]; 3] = [[10, 0, 0, 1], [10, 0, 0, 2], [127, 0, 0, 3]];
const SERVER: [u8; 4] = [127, 0, 0, 9];
/// Ethernet linktype.
const EN10MB: u32 = 1;
/// Shortest token checked for being echoed (shorter ones may match by chance).
const MIN_ECHO_CHECK: usize = 32;

fn setup() -> &'static (Config, Arc<Shared>) {
    static SETUP: OnceLock<(Config, Arc<Shared>)> = OnceLock::new();
    SETUP.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/mobile-network");
        let mut cfg = Config::load(&dir.join("shieldtap.toml"))
            .unwrap_or_else(|e| panic!("sample config: {e}"));
        cfg.reassembly.max_flows = 16;
        let rules = shieldtap::rules::builtin().unwrap_or_else(|e| panic!("rules: {e}"));
        let shared = Shared::new(&cfg, rules, Arc::new(Hub::default()))
            .unwrap_or_else(|e| panic!("judges: {e}"));
        (cfg, shared)
    })
}

/// One TCP connection's state as the frames are written.
struct Conn {
    client: [u8; 4],
    port: u16,
    /// Next sequence number per direction (0: client to server).
    seq: [u32; 2],
}

struct Wire {
    path: PacketPath,
    ts: u64,
    buf: Vec<u8>,
}

impl Wire {
    /// One segment of `conn` in direction `dir` (0: from the client), payload `data`.
    fn send(&mut self, conn: &Conn, dir: usize, flags: u8, data: &[u8]) {
        let (src, dst, sport, dport) = if dir == 0 {
            (conn.client, SERVER, conn.port, 80)
        } else {
            (SERVER, conn.client, 80, conn.port)
        };
        let mut tcp = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(src, dst, 64)
            .tcp(sport, dport, conn.seq[dir], 65535);
        if flags & 1 != 0 {
            tcp = tcp.syn();
        }
        if flags & 2 != 0 {
            tcp = tcp.fin();
        }
        if flags & 4 != 0 {
            tcp = tcp.rst();
        }
        // The handshake's first segment acknowledges nothing.
        if !(flags & 1 != 0 && dir == 0) {
            tcp = tcp.ack(conn.seq[1 - dir]);
        }
        self.buf.clear();
        if tcp.write(&mut self.buf, data).is_err() {
            return;
        }
        self.ts += 1_000_000;
        self.path.frame(Frame {
            ts: Timestamp(self.ts),
            linktype: EN10MB,
            data: &self.buf,
            wire_len: self.buf.len() as u32,
        });
    }

    fn open(&mut self, conn: &mut Conn) {
        self.send(conn, 0, 1, &[]);
        conn.seq[0] = conn.seq[0].wrapping_add(1);
        self.send(conn, 1, 1, &[]);
        conn.seq[1] = conn.seq[1].wrapping_add(1);
        self.send(conn, 0, 0, &[]);
    }

    fn close(&mut self, conn: &mut Conn) {
        for dir in [0, 1] {
            self.send(conn, dir, 2, &[]);
            conn.seq[dir] = conn.seq[dir].wrapping_add(1);
        }
    }
}

/// The value of a `name: value` line, trimmed.
fn header_value<'a>(line: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let colon = line.iter().position(|b| *b == b':')?;
    line[..colon]
        .trim_ascii()
        .eq_ignore_ascii_case(name)
        .then(|| line[colon + 1..].trim_ascii())
}

/// The values of `name` headers written in the stream bytes (`Bearer ` cut), token-shaped
/// (`jws_shaped`), that appear nowhere else in them: a value also written as a path or a
/// body field may be shown as that.
fn secrets_in(payload: &[u8], name: &[u8]) -> Vec<Vec<u8>> {
    let (secret_lines, others): (Vec<&[u8]>, Vec<&[u8]>) = payload
        .split(|b| *b == b'\n')
        .partition(|line| header_value(line, name).is_some());
    secret_lines
        .into_iter()
        .filter_map(|line| header_value(line, name))
        .map(|v| v.strip_prefix(b"Bearer ").unwrap_or(v).to_vec())
        .filter(|v| v.len() >= MIN_ECHO_CHECK && jws::jws_shaped(v))
        .filter(|v| {
            !others
                .iter()
                .any(|o| o.windows(v.len()).any(|w| w == v.as_slice()))
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let (cfg, shared) = setup();
    let mut wire = Wire {
        path: PacketPath::new(cfg, shared.clone()),
        ts: 1_795_000_000 * 1_000_000_000,
        buf: Vec::new(),
    };
    let mut next_client = 0usize;
    let mut conn = Conn {
        client: CLIENTS[0],
        port: 40000,
        seq: [1_000, 900_000],
    };
    wire.open(&mut conn);
    let mut at = 0usize;
    let mut skip = [false; 2];
    let mut again = [false; 2];
    let mut payload = Vec::new();
    while let Some(&c) = data.get(at) {
        at += 1;
        let dir = usize::from(c >> 7);
        match c & 0x7f {
            len @ 0..=119 => {
                let end = (at + usize::from(len) + 1).min(data.len());
                let chunk = &data[at..end];
                at = end;
                payload.extend_from_slice(chunk);
                if std::mem::take(&mut skip[dir]) {
                    // A gap: these bytes never reach the capture.
                } else {
                    wire.send(&conn, dir, 0, chunk);
                    if std::mem::take(&mut again[dir]) {
                        wire.send(&conn, dir, 0, chunk);
                    }
                }
                conn.seq[dir] = conn.seq[dir].wrapping_add(chunk.len() as u32);
            }
            pause @ 120..=123 => wire.ts += 10u64.pow(u32::from(pause - 120)) * 1_000_000_000,
            124 => {
                wire.close(&mut conn);
                next_client += 1;
                conn = Conn {
                    client: CLIENTS[next_client % CLIENTS.len()],
                    port: 40000 + (next_client % 1000) as u16,
                    seq: [1_000 + next_client as u32, 900_000],
                };
                wire.open(&mut conn);
            }
            125 => skip[dir] = true,
            126 => again[dir] = true,
            _ => wire.send(&conn, dir, 4, &[]),
        }
    }
    wire.close(&mut conn);
    // Idle flows expire and half-answered requests are let go.
    wire.path
        .advance(Timestamp(wire.ts + 3_600 * 1_000_000_000));
    let transactions = wire.path.transactions();
    let events = wire.path.events();
    assert!(
        events.len() as u64 <= transactions,
        "{} events from {transactions} transactions",
        events.len()
    );
    let mut engine = Engine::new(
        DetectConfig {
            max_keys_per_rule: 64,
            ..DetectConfig::default()
        },
        &shared.rules.load_full(),
    );
    let mut alerts = Vec::new();
    for ev in &events {
        engine.observe(ev, &mut alerts);
    }
    engine.finish(&mut alerts);
    let mut text = Vec::new();
    for a in &alerts {
        write_alert(&mut text, a).unwrap_or_else(|e| panic!("alert to JSON: {e}"));
    }
    for name in [&b"authorization"[..], b"approov-token"] {
        for secret in secrets_in(&payload, name) {
            if let Some(at) = text
                .windows(secret.len())
                .position(|w| w == secret.as_slice())
            {
                let line_start = text[..at]
                    .iter()
                    .rposition(|b| *b == b'\n')
                    .map_or(0, |i| i + 1);
                let line_end = text[at..]
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(text.len(), |i| at + i);
                panic!(
                    "an alert shows a {} value in clear: {:?} in {}",
                    String::from_utf8_lossy(name),
                    String::from_utf8_lossy(&secret),
                    String::from_utf8_lossy(&text[line_start..line_end])
                );
            }
        }
    }
});
