//! The memos of recent response scans and content decodings change nothing detection sees.
//!
//! Recorded samples (real clients and servers: `samples/mobile-network`, `bola`,
//! `data-exposure`) go through the workers' packet path (`runtime::PacketPath`: decode,
//! reassembly, HTTP, tokens, response scans, event building) twice: once as a worker runs
//! it, with the memos answering the bodies they have seen, and once with the memos emptied
//! after every frame, so that every body is decoded and scanned afresh. The events,
//! serialized as the detect thread and its shards receive them, must be identical, and the
//! first run must have answered some scans and decodings from the memos.

use std::path::Path;
use std::sync::Arc;

use shieldtap::capture::{self, CaptureStats, Frame, Progress};
use shieldtap::config::Config;
use shieldtap::runtime::{PacketPath, Shared};
use shieldtap::telemetry::metrics::Hub;

/// Feeds every frame of a capture to the callback it is given.
type Frames<'a> = dyn FnMut(&mut dyn FnMut(Frame<'_>)) + 'a;

/// The frames of `dir`'s recorded capture.
fn sample(dir: &Path) -> impl FnMut(&mut dyn FnMut(Frame<'_>)) + '_ {
    move |each: &mut dyn FnMut(Frame<'_>)| {
        let mut stats = CaptureStats::default();
        capture::read_file(
            &dir.join("capture.pcap"),
            &Progress::default(),
            &mut stats,
            &mut |f: Frame<'_>| each(f),
        )
        .expect("the sample capture reads");
    }
}

/// Frames through a fresh packet path (`eager`: the parser decodes every body as its
/// message completes, else responses stay coded until their scan; `forget`: the memos are
/// emptied after every frame): the events as JSON lines, and the path for its counts.
fn run(
    cfg: &Config,
    frames: &mut Frames<'_>,
    eager: bool,
    forget: bool,
) -> (Vec<String>, PacketPath) {
    let rules = shieldtap::rules::builtin().expect("built-in rules");
    let shared = Shared::new(cfg, rules, Arc::new(Hub::default())).expect("judges");
    let mut path = PacketPath::new(cfg, shared);
    if eager {
        path.decode_in_parser();
    }
    let mut out = Vec::new();
    let mut last = None;
    frames(&mut |f: Frame<'_>| {
        last = Some(f.ts);
        path.frame(f);
        if forget {
            path.forget_scans();
        }
        out.extend(path.events());
    });
    // Connections still open are flushed as the end of a capture flushes them.
    if let Some(ts) = last {
        path.advance(shieldtap::capture::Timestamp(ts.0 + 3_600_000_000_000));
    }
    out.extend(path.events());
    let lines = out
        .iter()
        .map(|e| serde_json::to_string(e).expect("events serialize"))
        .collect();
    (lines, path)
}

/// Every frame of `dir`'s capture through a fresh packet path; the events as JSON lines,
/// the (scans, memoized) and (decodes, memoized) counts.
fn events(dir: &Path, memo: bool) -> (Vec<String>, (u64, u64), (u64, u64)) {
    let cfg = Config::load(&dir.join("shieldtap.toml")).expect("sample config");
    let (lines, path) = run(&cfg, &mut sample(dir), false, !memo);
    (lines, path.response_scans(), path.body_decodes())
}

#[test]
fn the_memo_changes_no_event() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples");
    let mut memoized_total = 0;
    let mut decodes_memoized_total = 0;
    for name in ["mobile-network", "bola", "data-exposure"] {
        let dir = root.join(name);
        let (with, (scans, memoized), (decodes, decodes_memoized)) = events(&dir, true);
        let (without, (scans_fresh, memoized_fresh), (decodes_fresh, decodes_memoized_fresh)) =
            events(&dir, false);
        assert!(!with.is_empty(), "{name}: events");
        assert_eq!(scans, scans_fresh, "{name}: the same responses are scanned");
        assert_eq!(memoized_fresh, 0, "{name}: an emptied memo answers nothing");
        assert_eq!(
            decodes, decodes_fresh,
            "{name}: the same bodies are decoded"
        );
        assert_eq!(
            decodes_memoized_fresh, 0,
            "{name}: an emptied memo decodes nothing"
        );
        assert_eq!(with.len(), without.len(), "{name}: as many events");
        for (i, (a, b)) in with.iter().zip(&without).enumerate() {
            assert_eq!(a, b, "{name}: event {i} differs with the memo");
        }
        eprintln!(
            "{name}: {} events, {scans} response scans, {memoized} from the memo, \
             {decodes} bodies decoded, {decodes_memoized} from the memo",
            with.len()
        );
        memoized_total += memoized;
        decodes_memoized_total += decodes_memoized;
    }
    assert!(
        memoized_total > 100,
        "the samples repeat bodies: {memoized_total} from the memo"
    );
    assert!(
        decodes_memoized_total > 0,
        "the samples repeat compressed bodies: {decodes_memoized_total} from the memo"
    );
}

/// [`run`] compared across `eager`: the events as JSON lines and the HTTP counters as
/// JSON, without the counts of answers from the memos (which are what differs), and those
/// counts (decodings, scans).
fn through(
    cfg: &Config,
    frames: &mut Frames<'_>,
    eager: bool,
) -> (Vec<String>, serde_json::Value, (u64, u64)) {
    let (lines, path) = run(cfg, frames, eager, false);
    let mut stats = serde_json::to_value(path.http_stats()).expect("stats serialize");
    let memoized = (
        stats["body_decodes_memoized"].as_u64().unwrap_or(0),
        stats["response_scans_memoized"].as_u64().unwrap_or(0),
    );
    for k in ["body_decodes_memoized", "response_scans_memoized"] {
        stats.as_object_mut().map(|o| o.remove(k));
    }
    (lines, stats, memoized)
}

/// Recorded samples: responses left coded for their scan give the events and counts
/// (decodings, bytes decoded, caps, anomalies) of bodies decoded by the parser, and some
/// coded bodies are answered by the scan memo without being decoded.
#[test]
fn responses_left_coded_give_what_decoding_in_the_parser_gives() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples");
    let mut extra = 0;
    for name in [
        "mobile-network",
        "data-exposure",
        "bola",
        "grpc",
        "token-abuse",
    ] {
        let dir = root.join(name);
        let cfg = Config::load(&dir.join("shieldtap.toml")).expect("sample config");
        let mut frames = sample(&dir);
        let (coded, coded_stats, coded_memo) = through(&cfg, &mut frames, false);
        let (eager, eager_stats, eager_memo) = through(&cfg, &mut frames, true);
        assert_eq!(coded_stats, eager_stats, "{name}: the same counts");
        assert_eq!(coded.len(), eager.len(), "{name}: as many events");
        for (i, (a, b)) in coded.iter().zip(&eager).enumerate() {
            assert_eq!(a, b, "{name}: event {i} differs when left coded");
        }
        extra += coded_memo.0.saturating_sub(eager_memo.0);
    }
    assert!(extra > 0, "coded bodies answered without decoding: {extra}");
}

/// One keep-alive connection of hand-made answers (the cases recorded samples lack):
/// gzip bodies met again, one that does not inflate, one past the decoded-size cap, one
/// cut short by the capture's end, an empty one, and an answer with no request before it.
/// Left coded or decoded by the parser, the events and counts are the same, including
/// the anomalies and cap hits each decoding records, whether decoded or answered by the
/// memo.
#[test]
fn coded_edge_cases_give_what_decoding_in_the_parser_gives() {
    use std::io::Write;
    let gzip = |data: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        e.write_all(data).expect("gzip");
        e.finish().expect("gzip")
    };
    let profile = br#"{"id":"u-1","email":"ann.lee@example.com","phone":"+44 7700 900123"}"#;
    let big = format!(
        r#"{{"items":[{}]}}"#,
        vec![r#"{"id":1,"e":"a@b.co"}"#; 4000].join(",")
    );
    let mut corrupt = gzip(profile);
    let mid = corrupt.len() / 2;
    corrupt[mid] ^= 0xff;
    let empty = gzip(b"");
    let answer = |body: &[u8]| {
        let mut r = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    };
    let request =
        |path: &str| format!("GET {path} HTTP/1.1\r\nHost: api.example\r\n\r\n").into_bytes();
    // (client to server, bytes), in order.
    let mut talk: Vec<(bool, Vec<u8>)> = vec![(false, answer(&gzip(b"{\"early\":true}")))];
    for i in 0..4 {
        talk.push((true, request(&format!("/api/v1/users/{}", 100 + i))));
        talk.push((false, answer(&gzip(profile))));
    }
    for body in [
        corrupt.clone(),
        gzip(big.as_bytes()),
        empty.clone(),
        corrupt,
        gzip(big.as_bytes()),
    ] {
        talk.push((true, request("/api/v1/orders")));
        talk.push((false, answer(&body)));
    }
    // The last answer is cut: its head promises more than the capture holds.
    let cut = gzip(big.as_bytes());
    let mut last = answer(&cut);
    last.truncate(last.len() - cut.len() / 2);
    talk.push((true, request("/api/v1/feed")));
    talk.push((false, last));

    let mut cfg = Config::default();
    cfg.http.max_decoded_bytes = 16 * 1024;
    let mut frames = |each: &mut dyn FnMut(Frame<'_>)| {
        let (client, server) = ([10, 0, 0, 1], [10, 0, 0, 2]);
        let mut seq = [1000u32, 5000u32];
        let mut ts = 1_767_225_600_000_000_000u64;
        let mut send =
            |to_server: bool, flags: &str, payload: &[u8], each: &mut dyn FnMut(Frame<'_>)| {
                let (src, dst, sport, dport, me, peer) = if to_server {
                    (client, server, 40000, 80, 0, 1)
                } else {
                    (server, client, 80, 40000, 1, 0)
                };
                let mut b =
                    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
                        .ipv4(src, dst, 64)
                        .tcp(sport, dport, seq[me], 65535);
                if flags.contains('S') {
                    b = b.syn();
                }
                if flags.contains('A') {
                    b = b.ack(seq[peer]);
                }
                let mut frame = Vec::new();
                b.write(&mut frame, payload).expect("frame");
                seq[me] =
                    seq[me].wrapping_add(payload.len() as u32 + u32::from(flags.contains('S')));
                ts += 1_000_000;
                each(Frame {
                    ts: shieldtap::capture::Timestamp(ts),
                    linktype: 1,
                    data: &frame,
                    wire_len: frame.len() as u32,
                });
            };
        send(true, "S", b"", each);
        send(false, "SA", b"", each);
        send(true, "A", b"", each);
        for (to_server, bytes) in &talk {
            for part in bytes.chunks(1400) {
                send(*to_server, "A", part, each);
            }
        }
    };
    let (coded, coded_stats, coded_memo) = through(&cfg, &mut frames, false);
    let (eager, eager_stats, eager_memo) = through(&cfg, &mut frames, true);
    assert_eq!(coded_stats, eager_stats, "the same counts");
    for kind in [
        "content-decoding-failed",
        "content-decoding-cap",
        "truncated-body",
    ] {
        assert!(
            eager_stats["anomalies_by_kind"][kind].as_u64() > Some(0),
            "{kind}: {eager_stats}"
        );
    }
    assert!(
        eager_stats["body_decodes"].as_u64() >= Some(11),
        "{eager_stats}"
    );
    assert_eq!(coded, eager);
    assert!(coded.len() >= 10, "{} events", coded.len());
    assert!(
        coded_memo.0 > eager_memo.0,
        "met again, coded bodies are answered without decoding: {coded_memo:?} {eager_memo:?}"
    );
}
