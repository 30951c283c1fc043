//! HTTP/2 connection tests on hand-built frames: the edge cases real peers do not produce
//! on demand (padding, CONTINUATION, resets, floods, hostile lengths, arbitrary splits).
//! Header blocks come from loona-hpack's encoder, an independent implementation.
//! Recordings of real clients and servers are exercised in `tests/h2.rs`.

use super::*;
use crate::http::{Dir, HttpConfig, HttpConn, HttpStats, Transaction, header};
use proptest::prelude::*;

fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, ty, flags];
    f.extend(stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn settings() -> Vec<u8> {
    frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100])
}

struct Peer {
    enc: loona_hpack::Encoder<'static>,
}

impl Peer {
    fn new() -> Peer {
        Peer {
            enc: loona_hpack::Encoder::new(),
        }
    }
    fn block(&mut self, fields: &[(&str, &str)]) -> Vec<u8> {
        self.enc
            .encode(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
    }
}

fn request_fields(path: &str) -> Vec<(&'static str, String)> {
    vec![
        (":method", "GET".into()),
        (":scheme", "http".into()),
        (":authority", "api.example.com".into()),
        (":path", path.into()),
        ("approov-token", "eyJhbGciOiJIUzI1NiJ9.e30.sig".into()),
        ("user-agent", "okhttp/4.12.0".into()),
    ]
}

/// A whole connection: client bytes and server bytes, `n` streams of GET + JSON answer.
fn conversation(n: u32) -> (Vec<u8>, Vec<u8>) {
    let mut c = PREFACE.to_vec();
    c.extend(settings());
    let mut s = settings();
    let (mut cp, mut sp) = (Peer::new(), Peer::new());
    for i in 0..n {
        let id = 1 + 2 * i;
        let path = format!("/api/v1/items/{i}");
        let f = request_fields(&path);
        let f: Vec<(&str, &str)> = f.iter().map(|(a, b)| (*a, b.as_str())).collect();
        c.extend(frame(HEADERS, END_HEADERS | END_STREAM, id, &cp.block(&f)));
        s.extend(frame(
            HEADERS,
            END_HEADERS,
            id,
            &sp.block(&[(":status", "200"), ("content-type", "application/json")]),
        ));
        let body = format!("{{\"id\":{i},\"name\":\"item\"}}");
        s.extend(frame(DATA, END_STREAM, id, body.as_bytes()));
    }
    (c, s)
}

fn run(parts: &[(Dir, Vec<u8>)]) -> (Vec<Transaction>, HttpStats) {
    let cfg = HttpConfig::default();
    let mut conn = HttpConn::new();
    let mut out = Vec::new();
    let mut stats = HttpStats::default();
    for (i, (dir, bytes)) in parts.iter().enumerate() {
        let ts = Timestamp::from_secs_nanos(1, i as u64);
        conn.data(&cfg, *dir, bytes, ts, &mut out, &mut stats);
    }
    conn.close(&cfg, Timestamp::from_secs_nanos(9, 0), &mut out, &mut stats);
    (out, stats)
}

fn summary(txs: &[Transaction]) -> Vec<(u32, String, String, u16, Vec<u8>)> {
    let mut v: Vec<_> = txs
        .iter()
        .map(|t| {
            (
                t.h2.map_or(0, |h| h.stream_id),
                t.request
                    .as_ref()
                    .map_or(String::new(), |r| r.method.to_string()),
                t.request
                    .as_ref()
                    .map_or(String::new(), |r| r.target.to_string()),
                t.response.as_ref().map_or(0, |r| r.status),
                t.response
                    .as_ref()
                    .map_or(Vec::new(), |r| r.body.data.clone()),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn prior_knowledge_streams_become_transactions() {
    let (c, s) = conversation(5);
    let (txs, stats) = run(&[(Dir::ToServer, c), (Dir::ToClient, s)]);
    assert_eq!(txs.len(), 5);
    assert_eq!(stats.h2_connections.get("prior-knowledge"), Some(&1));
    for t in &txs {
        assert!(t.paired(), "{t:?}");
        assert!(t.anomalies.is_empty(), "{:?}", t.anomalies);
        let r = t.request.as_ref().unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(header(&r.headers, "host"), Some(&b"api.example.com"[..]));
        assert!(header(&r.headers, "approov-token").is_some());
        assert!(
            !r.headers
                .iter()
                .any(|h| h.name.as_bytes().starts_with(b":"))
        );
    }
    let s = summary(&txs);
    assert_eq!(s[2].0, 5);
    assert_eq!(s[2].2, "/api/v1/items/2");
    assert_eq!(s[2].4, b"{\"id\":2,\"name\":\"item\"}");
}

/// A gRPC server sends its SETTINGS as soon as it accepts, before the client's preface.
#[test]
fn server_speaking_first_is_still_prior_knowledge() {
    let (c, s) = conversation(3);
    let (server_settings, rest) = s.split_at(9 + 6);
    let (txs, stats) = run(&[
        (Dir::ToClient, server_settings.to_vec()),
        (Dir::ToServer, c),
        (Dir::ToClient, rest.to_vec()),
    ]);
    assert_eq!(
        stats.h2_connections.get("prior-knowledge"),
        Some(&1),
        "{stats:?}"
    );
    assert_eq!(txs.iter().filter(|t| t.paired()).count(), 3);
    assert!(stats.h2_events.is_empty(), "{:?}", stats.h2_events);
}

#[test]
fn padding_priority_and_continuation() {
    let mut c = PREFACE.to_vec();
    let mut p = Peer::new();
    let f = request_fields("/padded");
    let f: Vec<(&str, &str)> = f.iter().map(|(a, b)| (*a, b.as_str())).collect();
    let block = p.block(&f);
    // HEADERS padded with priority, the block split over two CONTINUATIONs.
    let (a, rest) = block.split_at(5);
    let (b, d) = rest.split_at(rest.len() / 2);
    let mut payload = vec![3u8];
    payload.extend([0, 0, 0, 0, 16]);
    payload.extend_from_slice(a);
    payload.extend([0, 0, 0]);
    c.extend(frame(HEADERS, PADDED | PRIORITY_FLAG, 1, &payload));
    c.extend(frame(CONTINUATION, 0, 1, b));
    c.extend(frame(CONTINUATION, END_HEADERS, 1, d));
    let mut body = vec![4u8];
    body.extend_from_slice(b"{\"a\":1}");
    body.extend([0; 4]);
    c.extend(frame(DATA, PADDED | END_STREAM, 1, &body));
    let mut sp = Peer::new();
    let mut s = frame(HEADERS, END_HEADERS, 1, &sp.block(&[(":status", "201")]));
    s.extend(frame(DATA, 0, 1, b"ok"));
    s.extend(frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &sp.block(&[("grpc-status", "0")]),
    ));
    let (txs, stats) = run(&[(Dir::ToServer, c), (Dir::ToClient, s)]);
    assert_eq!(txs.len(), 1, "{stats:?}");
    let t = &txs[0];
    let req = t.request.as_ref().unwrap();
    assert_eq!(req.target, "/padded");
    assert_eq!(req.body.data, b"{\"a\":1}");
    let resp = t.response.as_ref().unwrap();
    assert_eq!(resp.status, 201);
    assert_eq!(resp.body.data, b"ok");
    assert_eq!(header(&resp.body.trailers, "grpc-status"), Some(&b"0"[..]));
    assert!(stats.h2_events.is_empty(), "{:?}", stats.h2_events);
}

/// However the bytes are cut into segments, the same transactions come out.
#[test]
fn any_split_gives_the_same_transactions() {
    let (c, s) = conversation(4);
    let (whole, _) = run(&[(Dir::ToServer, c.clone()), (Dir::ToClient, s.clone())]);
    let want = summary(&whole);
    proptest!(ProptestConfig::with_cases(64), |(cuts in prop::collection::vec(1usize..40, 1..60))| {
        // The client's preface and first frame go first (servers answer it), cut anyhow.
        let mut parts = Vec::new();
        let (mut i, mut j, mut k) = (0, 0, 0);
        while i < PREFACE.len() + 9 {
            let e = (i + cuts[k % cuts.len()]).min(c.len());
            k += 1;
            parts.push((Dir::ToServer, c[i..e].to_vec()));
            i = e;
        }
        while i < c.len() || j < s.len() {
            let n = cuts[k % cuts.len()];
            k += 1;
            if i < c.len() {
                let e = (i + n).min(c.len());
                parts.push((Dir::ToServer, c[i..e].to_vec()));
                i = e;
            }
            if j < s.len() {
                let e = (j + n).min(s.len());
                parts.push((Dir::ToClient, s[j..e].to_vec()));
                j = e;
            }
        }
        let (got, _) = run(&parts);
        prop_assert_eq!(summary(&got), want.clone());
    });
}

#[test]
fn resets_and_a_rapid_reset_flood() {
    let mut c = PREFACE.to_vec();
    let mut p = Peer::new();
    for i in 0..150u32 {
        let id = 1 + 2 * i;
        let f = request_fields("/slow");
        let f: Vec<(&str, &str)> = f.iter().map(|(a, b)| (*a, b.as_str())).collect();
        c.extend(frame(HEADERS, END_HEADERS | END_STREAM, id, &p.block(&f)));
        c.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
    }
    let (txs, stats) = run(&[(Dir::ToServer, c)]);
    assert_eq!(txs.len(), 150);
    assert!(
        txs.iter()
            .all(|t| t.anomalies.contains(Anomaly::StreamReset))
    );
    assert_eq!(stats.h2_events.get("rapid-reset-flood"), Some(&1));
    assert_eq!(stats.h2_events.get("rst-stream"), Some(&150));
}

/// Thousands of streams opened and never finished: the connection keeps at most
/// MAX_STREAMS and its memory stays bounded.
#[test]
fn stream_flood_is_bounded() {
    let cfg = HttpConfig::default();
    let mut conn = HttpConn::new();
    let mut out = Vec::new();
    let mut stats = HttpStats::default();
    let ts = Timestamp::from_secs_nanos(0, 1);
    conn.data(&cfg, Dir::ToServer, PREFACE, ts, &mut out, &mut stats);
    let mut p = Peer::new();
    let mut peak = 0;
    for i in 0..5000u32 {
        let f = request_fields("/x");
        let f: Vec<(&str, &str)> = f.iter().map(|(a, b)| (*a, b.as_str())).collect();
        let bytes = frame(HEADERS, END_HEADERS, 1 + 2 * i, &p.block(&f));
        conn.data(&cfg, Dir::ToServer, &bytes, ts, &mut out, &mut stats);
        peak = peak.max(conn.held_bytes());
        out.clear();
    }
    assert!(peak < 1024 * 1024, "{peak}");
    assert_eq!(
        stats.cap_hits.get("h2_streams"),
        Some(&(5000 - MAX_STREAMS as u64))
    );
}

#[test]
fn hostile_frames_are_counted_not_fatal() {
    let mut c = PREFACE.to_vec();
    c.extend(frame(SETTINGS, 0, 0, &[1, 2, 3])); // not a multiple of 6
    c.extend(frame(PING, 0, 3, &[0; 8])); // on a stream
    c.extend(frame(CONTINUATION, END_HEADERS, 1, &[0x82])); // no block open
    c.extend(frame(HEADERS, END_HEADERS, 0, &[0x82])); // stream 0
    c.extend(frame(HEADERS, END_HEADERS | PADDED, 1, &[200, 0x82])); // pad > payload
    c.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, &[0x80])); // HPACK index 0
    c.extend(frame(0xfa, 0, 0, b"unknown type"));
    let (_, stats) = run(&[(Dir::ToServer, c)]);
    let e = &stats.h2_events;
    assert_eq!(e.get("malformed-frame"), Some(&3), "{e:?}");
    assert_eq!(e.get("protocol-error"), Some(&2), "{e:?}");
    assert_eq!(e.get("hpack-zero-index"), Some(&1), "{e:?}");
    assert_eq!(e.get("unknown-frame-type"), Some(&1), "{e:?}");
}

/// Joined late: the capture starts in the middle of a frame, after the tables filled.
#[test]
fn mid_stream_pickup_with_unknown_table_entries() {
    let (c, s) = conversation(6);
    // Cut both directions in the middle of stream 3's frames.
    let cut_c = c.len() / 2 + 3;
    let cut_s = s.len() / 2 + 5;
    let (txs, stats) = run(&[
        (Dir::ToServer, c[cut_c..].to_vec()),
        (Dir::ToClient, s[cut_s..].to_vec()),
    ]);
    assert_eq!(
        stats.h2_connections.get("mid-stream"),
        Some(&1),
        "{stats:?}"
    );
    let got = summary(&txs);
    // The last streams come out whole where both halves were seen.
    let whole: Vec<_> = txs.iter().filter(|t| t.paired()).collect();
    assert!(whole.len() >= 2, "{got:?}");
    let last = got.last().unwrap();
    assert_eq!(last.0, 11);
    assert_eq!(last.2, "/api/v1/items/5");
    assert_eq!(last.4, b"{\"id\":5,\"name\":\"item\"}");
    // Fields indexed before the cut are unknown and marked.
    assert!(
        txs.iter()
            .any(|t| t.anomalies.contains(Anomaly::H2UnknownFields))
    );
    assert!(
        stats
            .h2_events
            .get("hpack-unknown-entry")
            .copied()
            .unwrap_or(0)
            > 0
    );
}

#[test]
fn a_gap_resyncs_at_the_next_frames() {
    let (c, s) = conversation(6);
    let cfg = HttpConfig::default();
    let mut conn = HttpConn::new();
    let mut out = Vec::new();
    let mut stats = HttpStats::default();
    let ts = Timestamp::from_secs_nanos(0, 5);
    let half = s.len() / 2;
    conn.data(&cfg, Dir::ToServer, &c, ts, &mut out, &mut stats);
    conn.data(&cfg, Dir::ToClient, &s[..half], ts, &mut out, &mut stats);
    conn.gap(&cfg, Dir::ToClient, 7, ts, &mut out, &mut stats);
    conn.data(
        &cfg,
        Dir::ToClient,
        &s[half + 7..],
        ts,
        &mut out,
        &mut stats,
    );
    conn.close(&cfg, ts, &mut out, &mut stats);
    assert_eq!(out.len(), 6);
    assert_eq!(stats.h2_events.get("resynced"), Some(&1), "{stats:?}");
    assert!(out.iter().filter(|t| t.paired()).count() >= 4);
    assert!(out.iter().any(|t| t.anomalies.contains(Anomaly::Gap)));
}

/// Joined late behind 128 KiB of bytes that are not frames, fed a byte at a time: the hunt
/// for frames stays linear (held bytes are searched again only every 512 new ones) and
/// finds the frames after them.
#[test]
fn a_long_hunt_one_byte_at_a_time_finds_the_frames() {
    let cfg = HttpConfig::default();
    let mut conn = HttpConn::new();
    let mut out = Vec::new();
    let mut stats = HttpStats::default();
    let ts = Timestamp::from_secs_nanos(0, 1);
    let (c, s) = conversation(3);
    // Joined after the SETTINGS: the server's answers first, then the client's bytes.
    conn.data(&cfg, Dir::ToClient, &s[15..], ts, &mut out, &mut stats);
    assert_eq!(
        stats.h2_connections.get("mid-stream"),
        Some(&1),
        "{stats:?}"
    );
    let junk: Vec<u8> = (0..128 * 1024u32).map(|i| b'a' + (i % 26) as u8).collect();
    for b in junk.iter().chain(&c[PREFACE.len()..]) {
        conn.data(
            &cfg,
            Dir::ToServer,
            std::slice::from_ref(b),
            ts,
            &mut out,
            &mut stats,
        );
    }
    conn.close(&cfg, ts, &mut out, &mut stats);
    assert!(
        stats.h2_events.get("resynced").copied().unwrap_or(0) >= 1,
        "{stats:?}"
    );
    assert_eq!(out.iter().filter(|t| t.paired()).count(), 3, "{out:?}");
}

/// Frames that arrive while a hunt waits for more bytes are still found when the
/// connection closes.
#[test]
fn frames_held_at_close_are_read() {
    let cfg = HttpConfig::default();
    let mut conn = HttpConn::new();
    let mut out = Vec::new();
    let mut stats = HttpStats::default();
    let ts = Timestamp::from_secs_nanos(0, 1);
    let (c, s) = conversation(2);
    conn.data(&cfg, Dir::ToClient, &s[15..], ts, &mut out, &mut stats);
    let junk: Vec<u8> = (0..700u32).map(|i| b'a' + (i % 26) as u8).collect();
    for b in junk.iter().chain(&c[PREFACE.len()..]) {
        conn.data(
            &cfg,
            Dir::ToServer,
            std::slice::from_ref(b),
            ts,
            &mut out,
            &mut stats,
        );
    }
    assert!(out.is_empty());
    conn.close(&cfg, ts, &mut out, &mut stats);
    assert_eq!(out.iter().filter(|t| t.paired()).count(), 2, "{out:?}");
}

proptest! {
    /// Arbitrary bytes after the preface, or joined late, never panic and never hold
    /// more than the caps allow.
    #[test]
    fn random_bytes_are_survived(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..20),
        preface in any::<bool>(),
    ) {
        let cfg = HttpConfig::default();
        let mut conn = HttpConn::new();
        let mut out = Vec::new();
        let mut stats = HttpStats::default();
        let ts = Timestamp::from_secs_nanos(0, 1);
        if preface {
            conn.data(&cfg, Dir::ToServer, PREFACE, ts, &mut out, &mut stats);
        }
        for (i, ch) in chunks.iter().enumerate() {
            let dir = if i % 2 == 0 { Dir::ToServer } else { Dir::ToClient };
            conn.data(&cfg, dir, ch, ts, &mut out, &mut stats);
            prop_assert!(conn.held_bytes() < 4 * 1024 * 1024);
        }
        conn.close(&cfg, ts, &mut out, &mut stats);
    }
}
