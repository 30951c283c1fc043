//! Tests of the HTTP/1.x connection parser: heads, framing, pairing, pipelining, resync
//! and anomalies, driven through [`HttpConn`] on hand-built and property-generated streams.

use std::io::Write;

use proptest::prelude::*;

use super::*;
use crate::http::header;

#[derive(Clone, Debug)]
enum Ev {
    Data(Dir, Vec<u8>),
    Gap(Dir, u64),
}

fn c2s(b: &[u8]) -> Ev {
    Ev::Data(Dir::ToServer, b.to_vec())
}

fn s2c(b: &[u8]) -> Ev {
    Ev::Data(Dir::ToClient, b.to_vec())
}

fn ts_of(i: usize) -> Timestamp {
    Timestamp(1_000_000_000 + (i as u64 + 1) * 1_000)
}

/// Feeds `evs` (each data event cut into pieces by `cut`), then closes.
fn run_split(
    cfg: &HttpConfig,
    evs: &[Ev],
    cut: &mut dyn FnMut(usize) -> usize,
) -> (Vec<Transaction>, HttpStats, HttpConn) {
    let mut conn = HttpConn::new();
    let mut out = Vec::new();
    let mut stats = HttpStats::default();
    for (i, ev) in evs.iter().enumerate() {
        match ev {
            Ev::Data(dir, bytes) => {
                let mut rest = bytes.as_slice();
                while !rest.is_empty() {
                    let n = cut(rest.len()).clamp(1, rest.len());
                    let (piece, tail) = rest.split_at(n);
                    conn.data(cfg, *dir, piece, ts_of(i), &mut out, &mut stats);
                    rest = tail;
                }
            }
            Ev::Gap(dir, len) => conn.gap(cfg, *dir, *len, ts_of(i), &mut out, &mut stats),
        }
    }
    conn.close(cfg, ts_of(evs.len()), &mut out, &mut stats);
    (out, stats, conn)
}

fn run_cfg(cfg: &HttpConfig, evs: &[Ev]) -> (Vec<Transaction>, HttpStats) {
    let (whole, stats, _) = run_split(cfg, evs, &mut |n| n);
    // Every scenario must come out the same fed one byte at a time.
    let (bytewise, byte_stats, _) = run_split(cfg, evs, &mut |_| 1);
    assert_eq!(whole, bytewise, "1-byte chunking changed the transactions");
    assert_eq!(stats.transactions, byte_stats.transactions);
    assert_eq!(stats.anomalies_by_kind, byte_stats.anomalies_by_kind);
    assert_eq!(stats.resyncs, byte_stats.resyncs);
    assert_eq!(stats.bytes_skipped, byte_stats.bytes_skipped);
    (whole, stats)
}

fn run(evs: &[Ev]) -> (Vec<Transaction>, HttpStats) {
    run_cfg(&HttpConfig::default(), evs)
}

fn anomalies(tx: &Transaction) -> Vec<&'static str> {
    tx.anomalies.iter().map(Anomaly::as_str).collect()
}

fn req(tx: &Transaction) -> &Request {
    tx.request.as_ref().expect("transaction has a request")
}

fn resp(tx: &Transaction) -> &Response {
    tx.response.as_ref().expect("transaction has a response")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn raw_deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A JSON listing of 20 users (511 bytes).
fn users_json() -> Vec<u8> {
    let items: Vec<String> = (0..20)
        .map(|i| format!("{{\"id\":{i},\"name\":\"user{i}\"}}"))
        .collect();
    format!("{{\"users\":[{}]}}", items.join(",")).into_bytes()
}

/// `users_json()` compressed by Python's `brotli.compress` (brotli 1.2.1).
const USERS_BR: &[u8] = b"\x1b\xfe\x01\x68\x9c\x07\x76\x1b\xcb\x47\xa9\xc1\xa0\x23\x6a\xb6\x43\x19\xa1\xd2\x53\x44\x6e\x2f\x75\xc8\xd2\xb2\xaf\x8b\x45\xc5\x43\xf2\xf2\xa0\x39\x7d\xc4\x03\x83\x5d\x9a\x4d\x24\x83\xdb\x39\x16\x5a\x54\xf6\xc8\x1f\xa2\x2e\x74\x48\x28\x7b\xfd\x6f\xf8\xbb\x90\x4f\x6e\x64\x66\xc8\x00\x26\xb4\x90\x8d\x5d\x94\x9b\xf6\x30\x5e\xd6\xc7\xbd\x38\x7f\x03\x27\x2e\x58\x61\xb0\x28\x54\x1c\x2e\x15\x55\x3a\xba\x4c\x4c\xd9\xd8\x72\xe3\xd6\x00";
/// `brotli.compress(gzip.compress(b'{"ok":true,"items":[1,2,3]}', mtime=0))`: a body
/// sent with `Content-Encoding: gzip, br`.
const GZIP_THEN_BR: &[u8] = b"\x0b\x17\x80\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\x03\xab\x56\xca\xcf\x56\xb2\x2a\x29\x2a\x4d\xd5\x51\xca\x2c\x49\xcd\x2d\x56\xb2\x8a\x36\xd4\x31\xd2\x31\x8e\xad\x05\x00\xba\xd8\x8b\xb7\x1b\x00\x00\x00\x03";
/// `brotli.compress(b'A' * 1_000_000)`: 14 bytes that decode to 1 MB.
const BR_BOMB: &[u8] = b"\x5b\x3f\x42\x8f\x5f\x22\x28\x1e\x0b\x04\xf2\x73\x1e\x00";

const CURL_GET: &[u8] = b"GET /api/v1/users/42?fields=name HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n";

fn curl_get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n").into_bytes()
}

fn curl_post(path: &str, body: &[u8]) -> Vec<u8> {
    let mut v = format!(
        "POST {path} HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    v.extend_from_slice(body);
    v
}

/// A response in the style of Python's http.server (protocol_version HTTP/1.1).
fn py_response(status: &str, extra: &str, body: &[u8]) -> Vec<u8> {
    let mut v = format!(
        "HTTP/1.1 {status}\r\nServer: SimpleHTTP/0.6 Python/3.12.3\r\nDate: Sat, 28 Nov 2026 16:08:35 GMT\r\nContent-type: application/json\r\n{extra}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    v.extend_from_slice(body);
    v
}

fn ok_json(body: &[u8]) -> Vec<u8> {
    py_response("200 OK", "", body)
}

fn chunked(head: &str, chunks: &[&[u8]], trailer: &str) -> Vec<u8> {
    let mut v = head.as_bytes().to_vec();
    for c in chunks {
        v.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        v.extend_from_slice(c);
        v.extend_from_slice(b"\r\n");
    }
    v.extend_from_slice(b"0\r\n");
    v.extend_from_slice(trailer.as_bytes());
    v.extend_from_slice(b"\r\n");
    v
}

#[test]
fn keep_alive_get_and_post() {
    let login = br#"{"user":"alice","password":"hunter2"}"#;
    let evs = [
        c2s(CURL_GET),
        s2c(&ok_json(br#"{"id":42,"name":"alice"}"#)),
        c2s(&curl_post("/api/v1/login", login)),
        s2c(&py_response(
            "401 Unauthorized",
            "WWW-Authenticate: Bearer\r\n",
            br#"{"error":"bad credentials"}"#,
        )),
    ];
    let (txs, stats) = run(&evs);
    assert_eq!(txs.len(), 2);
    let first = &txs[0];
    assert!(first.paired() && first.anomalies.is_empty());
    assert_eq!(req(first).method, "GET");
    assert_eq!(req(first).target, "/api/v1/users/42?fields=name");
    assert_eq!(req(first).version, 1);
    assert_eq!(req(first).ts, ts_of(0));
    assert_eq!(
        header(&req(first).headers, "user-agent"),
        Some(&b"curl/8.5.0"[..])
    );
    assert_eq!(req(first).headers.len(), 3);
    assert_eq!(resp(first).status, 200);
    assert_eq!(resp(first).ts, ts_of(1));
    assert_eq!(resp(first).body.data, br#"{"id":42,"name":"alice"}"#);
    assert_eq!(resp(first).body.wire_len, 24);
    assert!(!resp(first).body.decoded && !resp(first).body.truncated);
    let second = &txs[1];
    assert_eq!(req(second).method, "POST");
    assert_eq!(req(second).body.data, login);
    assert_eq!(resp(second).status, 401);
    assert_eq!(
        header(&resp(second).headers, "www-authenticate"),
        Some(&b"Bearer"[..])
    );
    assert_eq!(
        (
            stats.requests,
            stats.responses,
            stats.transactions,
            stats.paired
        ),
        (2, 2, 2, 2)
    );
    assert_eq!(stats.by_method_class.get("GET"), Some(&1));
    assert_eq!(stats.by_method_class.get("POST"), Some(&1));
    assert_eq!(stats.by_status_class.get("2xx"), Some(&1));
    assert_eq!(stats.by_status_class.get("4xx"), Some(&1));
    assert!(stats.anomalies_by_kind.is_empty());
    assert_eq!(stats.resyncs, 0);
}

#[test]
fn message_ts_is_first_byte_time() {
    let cfg = HttpConfig::default();
    let mut conn = HttpConn::new();
    let (mut out, mut stats) = (Vec::new(), HttpStats::default());
    let (a, b) = CURL_GET.split_at(10);
    conn.data(&cfg, Dir::ToServer, a, Timestamp(100), &mut out, &mut stats);
    conn.data(&cfg, Dir::ToServer, b, Timestamp(200), &mut out, &mut stats);
    let r = ok_json(b"{}");
    let (a, b) = r.split_at(r.len() - 1);
    conn.data(&cfg, Dir::ToClient, a, Timestamp(300), &mut out, &mut stats);
    conn.data(&cfg, Dir::ToClient, b, Timestamp(400), &mut out, &mut stats);
    assert_eq!(out.len(), 1);
    assert_eq!(req(&out[0]).ts, Timestamp(100));
    assert_eq!(resp(&out[0]).ts, Timestamp(300));
}

#[test]
fn pipelined_requests_pair_in_order() {
    let mut reqs = curl_get("/a");
    reqs.extend(curl_post("/b", br#"{"n":2}"#));
    reqs.extend(curl_get("/c"));
    let mut resps = ok_json(b"\"a\"");
    resps.extend(py_response("201 Created", "Location: /b/1\r\n", b"\"b\""));
    resps.extend(py_response("404 Not Found", "", b"\"c\""));
    let (txs, stats) = run(&[c2s(&reqs), s2c(&resps)]);
    let got: Vec<(&str, u16, &[u8])> = txs
        .iter()
        .map(|t| {
            (
                req(t).target.as_str(),
                resp(t).status,
                resp(t).body.data.as_slice(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("/a", 200, &b"\"a\""[..]),
            ("/b", 201, &b"\"b\""[..]),
            ("/c", 404, &b"\"c\""[..])
        ]
    );
    assert!(txs.iter().all(|t| t.anomalies.is_empty()));
    assert_eq!(stats.paired, 3);
    assert_eq!(req(&txs[1]).body.data, br#"{"n":2}"#);
}

#[test]
fn chunked_with_extensions_and_trailers() {
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nTrailer: Server-Timing\r\n\r\n";
    let mut r = head.as_bytes().to_vec();
    r.extend_from_slice(b"7;foo=bar\r\n{\"a\":1,\r\n");
    r.extend_from_slice(b"0000A ; name=\"quoted;value\"\r\n\"b\":[1,2]}\r\n");
    r.extend_from_slice(b"0;last\r\nServer-Timing: db;dur=53\r\nX-Checksum: abc\r\n\r\n");
    let mut req_body =
        b"POST /upload HTTP/1.1\r\nHost: api.example.com\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    req_body.extend_from_slice(b"3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n");
    let (txs, _) = run(&[c2s(&req_body), s2c(&r), c2s(CURL_GET), s2c(&ok_json(b"[]"))]);
    assert_eq!(txs.len(), 2);
    assert!(txs[0].anomalies.is_empty(), "{:?}", anomalies(&txs[0]));
    assert_eq!(req(&txs[0]).body.data, b"abcdef");
    assert_eq!(req(&txs[0]).body.wire_len, 6);
    let body = &resp(&txs[0]).body;
    assert_eq!(body.data, b"{\"a\":1,\"b\":[1,2]}");
    assert_eq!(body.wire_len, 17);
    let names: Vec<&str> = body.trailers.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, vec!["Server-Timing", "X-Checksum"]);
    assert_eq!(
        header(&body.trailers, "server-timing"),
        Some(&b"db;dur=53"[..])
    );
    assert!(
        header(&resp(&txs[0]).headers, "x-checksum").is_none(),
        "trailers stay apart"
    );
    assert_eq!(resp(&txs[1]).body.data, b"[]");
}

#[test]
fn bare_lf_line_endings() {
    let evs = [
        c2s(b"GET /lf HTTP/1.1\nHost: a\n\n"),
        s2c(b"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n2\nok\n0\n\n"),
    ];
    let (txs, _) = run(&evs);
    assert_eq!(txs.len(), 1);
    assert!(txs[0].anomalies.is_empty());
    assert_eq!(resp(&txs[0]).body.data, b"ok");
}

#[test]
fn gzip_deflate_br_bodies_decoded() {
    let json = users_json();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("gzip", gzip(&json)),
        ("x-gzip", gzip(&json)),
        ("deflate", zlib(&json)),
        ("deflate", raw_deflate(&json)),
        ("br", USERS_BR.to_vec()),
    ];
    for (coding, wire) in cases {
        let evs = [
            c2s(CURL_GET),
            s2c(&py_response(
                "200 OK",
                &format!("Content-Encoding: {coding}\r\n"),
                &wire,
            )),
        ];
        let (txs, stats) = run(&evs);
        let body = &resp(&txs[0]).body;
        assert!(
            txs[0].anomalies.is_empty(),
            "{coding}: {:?}",
            anomalies(&txs[0])
        );
        assert!(body.decoded && !body.truncated, "{coding}");
        assert_eq!(body.data, json, "{coding}");
        assert_eq!(body.wire_len, wire.len() as u64);
        assert_eq!(stats.body_bytes_decoded, json.len() as u64);
    }
}

#[test]
fn gzip_inside_chunked_and_gzip_request_body() {
    let json = users_json();
    let z = gzip(&json);
    let (a, b) = z.split_at(z.len() / 3);
    let r = chunked(
        "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
        &[a, b],
        "",
    );
    let mut q = format!(
        "POST /events HTTP/1.1\r\nHost: a\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
        z.len()
    )
    .into_bytes();
    q.extend_from_slice(&z);
    let (txs, _) = run(&[c2s(&q), s2c(&r)]);
    assert_eq!(req(&txs[0]).body.data, json);
    assert!(req(&txs[0]).body.decoded);
    assert_eq!(resp(&txs[0]).body.data, json);
}

#[test]
fn stacked_encodings() {
    let evs = [
        c2s(CURL_GET),
        s2c(&py_response(
            "200 OK",
            "Content-Encoding: gzip, br\r\n",
            GZIP_THEN_BR,
        )),
    ];
    let (txs, _) = run(&evs);
    assert!(txs[0].anomalies.is_empty(), "{:?}", anomalies(&txs[0]));
    assert_eq!(resp(&txs[0]).body.data, br#"{"ok":true,"items":[1,2,3]}"#);

    let json = users_json();
    let wire = zlib(&gzip(&json));
    let evs = [
        c2s(CURL_GET),
        s2c(&py_response(
            "200 OK",
            "Content-Encoding: gzip\r\nContent-Encoding: deflate\r\n",
            &wire,
        )),
    ];
    let (txs, _) = run(&evs);
    assert_eq!(resp(&txs[0]).body.data, json);

    // Transfer codings other than chunked are undone too.
    let z = gzip(&json);
    let r = chunked(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        &[&z],
        "",
    );
    let (txs, _) = run(&[c2s(CURL_GET), s2c(&r)]);
    assert_eq!(resp(&txs[0]).body.data, json);
}

#[test]
fn decompression_bombs_hit_the_ratio_cap() {
    let zeros = vec![b'0'; 1 << 20];
    let bomb = gzip(&zeros);
    let evs = [
        c2s(CURL_GET),
        s2c(&py_response("200 OK", "Content-Encoding: gzip\r\n", &bomb)),
    ];
    let (txs, stats) = run(&evs);
    let body = &resp(&txs[0]).body;
    assert!(txs[0].anomalies.contains(Anomaly::DecodeCap));
    assert!(body.decoded && body.truncated);
    assert_eq!(body.data.len(), bomb.len() * 100);
    assert!(body.data.iter().all(|&b| b == b'0'));
    assert_eq!(stats.cap_hits.get("ratio"), Some(&1));

    let evs = [
        c2s(CURL_GET),
        s2c(&py_response("200 OK", "Content-Encoding: br\r\n", BR_BOMB)),
    ];
    let (txs, stats) = run(&evs);
    assert!(txs[0].anomalies.contains(Anomaly::DecodeCap));
    assert_eq!(resp(&txs[0]).body.data.len(), BR_BOMB.len() * 100);
    assert_eq!(stats.cap_hits.get("ratio"), Some(&1));

    // A generous ratio leaves the decoded-size cap to stop it.
    let cfg = HttpConfig {
        max_decompression_ratio: 1_000_000,
        max_decoded_bytes: 10_000,
        ..Default::default()
    };
    let (txs, stats) = run_cfg(&cfg, &evs);
    assert_eq!(resp(&txs[0]).body.data.len(), 10_000);
    assert_eq!(stats.cap_hits.get("decoded"), Some(&1));
}

#[test]
fn decode_can_be_disabled() {
    let cfg = HttpConfig {
        decode_bodies: false,
        ..Default::default()
    };
    let z = gzip(b"{}");
    let (txs, stats) = run_cfg(
        &cfg,
        &[
            c2s(CURL_GET),
            s2c(&py_response("200 OK", "Content-Encoding: gzip\r\n", &z)),
        ],
    );
    assert_eq!(resp(&txs[0]).body.data, z);
    assert!(!resp(&txs[0]).body.decoded);
    assert_eq!(stats.body_bytes_decoded, 0);
}

#[test]
fn bodyless_responses_head_204_304() {
    let mut reqs = b"HEAD /file.bin HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
    reqs.extend(b"DELETE /item/1 HTTP/1.1\r\nHost: a\r\n\r\n");
    reqs.extend(b"GET /etag HTTP/1.1\r\nHost: a\r\nIf-None-Match: \"v1\"\r\n\r\n");
    reqs.extend(curl_get("/after"));
    let mut resps = b"HTTP/1.1 200 OK\r\nContent-Length: 123456\r\nContent-Type: application/octet-stream\r\n\r\n".to_vec();
    resps.extend(b"HTTP/1.1 204 No Content\r\n\r\n");
    resps.extend(b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 999\r\n\r\n");
    resps.extend(ok_json(b"{\"after\":true}"));
    let (txs, stats) = run(&[c2s(&reqs), s2c(&resps)]);
    let got: Vec<(&str, u16, u64)> = txs
        .iter()
        .map(|t| {
            (
                req(t).method.as_str(),
                resp(t).status,
                resp(t).body.wire_len,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("HEAD", 200, 0),
            ("DELETE", 204, 0),
            ("GET", 304, 0),
            ("GET", 200, 14)
        ]
    );
    assert!(txs.iter().all(|t| t.anomalies.is_empty()));
    assert_eq!(stats.by_method_class.get("HEAD"), Some(&1));
    assert_eq!(stats.by_status_class.get("3xx"), Some(&1));
}

#[test]
fn interim_responses_are_skipped() {
    let body = br#"{"file":"large"}"#;
    let evs = [
        c2s(format!("PUT /upload HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes()),
        s2c(b"HTTP/1.1 100 Continue\r\n\r\n"),
        c2s(body),
        s2c(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"),
    ];
    let (txs, stats) = run(&evs);
    assert_eq!(txs.len(), 1);
    assert!(txs[0].anomalies.is_empty());
    assert_eq!(req(&txs[0]).body.data, body);
    assert_eq!(resp(&txs[0]).status, 201);
    assert_eq!(resp(&txs[0]).ts, ts_of(3));
    assert_eq!((stats.responses, stats.interim_responses), (1, 2));
}

#[test]
fn early_response_waits_for_request_body() {
    let evs = [
        c2s(b"POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n01234"),
        s2c(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n"),
        c2s(b"56789"),
    ];
    let (txs, _) = run(&evs);
    assert_eq!(txs.len(), 1);
    assert_eq!(req(&txs[0]).body.data, b"0123456789");
    assert_eq!(resp(&txs[0]).status, 413);
}

#[test]
fn connect_tunnel_becomes_opaque() {
    let evs = [
        c2s(b"CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\nUser-Agent: curl/8.5.0\r\nProxy-Connection: Keep-Alive\r\n\r\n"),
        s2c(b"HTTP/1.1 200 Connection established\r\n\r\n\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
        c2s(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03GET / HTTP/1.1\r\n\r\n"),
        s2c(b"\x17\x03\x03\x00\x20HTTP/1.1 200 OK\r\n"),
    ];
    let (txs, stats) = run(&evs);
    assert_eq!(txs.len(), 1);
    assert_eq!(anomalies(&txs[0]), vec!["connect"]);
    assert_eq!(req(&txs[0]).method, "CONNECT");
    assert_eq!(req(&txs[0]).target, "api.example.com:443");
    assert_eq!((stats.resyncs, stats.bytes_skipped), (0, 0));

    let (_, _, conn) = run_split(&HttpConfig::default(), &evs, &mut |n| n);
    assert!(conn.opaque());
    // A refused CONNECT is an ordinary exchange.
    let evs = [
        c2s(b"CONNECT internal:22 HTTP/1.1\r\nHost: internal:22\r\n\r\n"),
        s2c(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"),
        c2s(CURL_GET),
        s2c(&ok_json(b"1")),
    ];
    let (txs, _) = run(&evs);
    assert_eq!(txs.len(), 2);
    assert!(txs.iter().all(|t| t.anomalies.is_empty()));
}

#[test]
fn websocket_upgrade_becomes_opaque() {
    let evs = [
        c2s(b"GET /chat HTTP/1.1\r\nHost: api.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"),
        s2c(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x05hello"),
        c2s(b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"),
    ];
    let (txs, stats) = run(&evs);
    assert_eq!(txs.len(), 1);
    assert_eq!(anomalies(&txs[0]), vec!["upgrade"]);
    assert_eq!(resp(&txs[0]).status, 101);
    assert_eq!(stats.by_status_class.get("1xx"), Some(&1));
    assert_eq!(stats.resyncs, 0);
}

#[test]
fn read_until_close() {
    let evs = [
        c2s(b"GET /legacy HTTP/1.0\r\nHost: a\r\n\r\n"),
        s2c(b"HTTP/1.0 200 OK\r\nServer: SimpleHTTP/0.6 Python/3.12.3\r\nContent-type: text/plain\r\n\r\nfirst part, "),
        s2c(b"second part"),
    ];
    let (txs, _) = run(&evs);
    assert_eq!(txs.len(), 1);
    assert!(txs[0].anomalies.is_empty());
    assert_eq!(req(&txs[0]).version, 0);
    assert_eq!(resp(&txs[0]).version, 0);
    assert_eq!(resp(&txs[0]).body.data, b"first part, second part");
    assert!(!resp(&txs[0]).body.truncated);
}

#[test]
fn gap_in_content_length_body_still_pairs() {
    let body = br#"{"items":[1,2,3,4,5,6,7,8,9,10]}"#;
    let r = ok_json(body);
    let head_len = r.len() - body.len();
    let evs = [
        c2s(CURL_GET),
        s2c(&r[..head_len + 10]),
        Ev::Gap(Dir::ToClient, 12),
        s2c(&r[head_len + 22..]),
        c2s(&curl_get("/next")),
        s2c(&ok_json(b"2")),
    ];
    let (txs, stats) = run(&evs);
    assert_eq!(txs.len(), 2);
    let b = &resp(&txs[0]).body;
    assert!(txs[0].paired());
    assert!(txs[0].anomalies.contains(Anomaly::TruncatedBody));
    assert!(txs[0].anomalies.contains(Anomaly::Gap));
    assert_eq!(
        b.data,
        &body[..10],
        "only the bytes before the hole are kept"
    );
    assert_eq!(b.wire_len, body.len() as u64);
    assert!(b.truncated);
    assert!(txs[1].paired() && txs[1].anomalies.is_empty());
    assert_eq!(stats.resyncs, 0);
}

#[test]
fn gap_in_chunked_body_then_resync() {
    let r1 = chunked(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        &[b"0123456789", b"abcdefghij"],
        "",
    );
    let evs = [
        c2s(CURL_GET),
        s2c(&r1[..r1.len() - 20]),
        Ev::Gap(Dir::ToClient, 30),
        s2c(b"garbage tail of the lost message\r\n"),
        c2s(&curl_get("/two")),
        s2c(&ok_json(b"\"two\"")),
    ];
    let (txs, stats) = run(&evs);
    assert_eq!(txs.len(), 2);
    assert!(txs[0].paired());
    assert!(txs[0].anomalies.contains(Anomaly::Gap));
    assert!(resp(&txs[0]).body.truncated);
    assert_eq!(req(&txs[1]).target, "/two");
    assert_eq!(resp(&txs[1]).body.data, b"\"two\"");
    assert!(txs[1].anomalies.is_empty());
    assert_eq!(stats.resyncs, 1);
    assert_eq!(stats.bytes_skipped, 34);
}

#[test]
fn lost_response_does_not_shift_pairing() {
    // Three pipelined requests; the first response is lost whole.
    let mut reqs = curl_get("/1");
    reqs.extend(curl_get("/2"));
    reqs.extend(curl_get("/3"));
    let r1 = ok_json(b"1");
    let mut rest = ok_json(b"2");
    rest.extend(ok_json(b"3"));
    let evs = [
        c2s(&reqs),
        Ev::Gap(Dir::ToClient, r1.len() as u64),
        s2c(&rest),
        c2s(&curl_get("/4")),
        s2c(&ok_json(b"4")),
    ];
    let (txs, _) = run(&evs);
    let summary: Vec<(Option<&str>, Option<&[u8]>)> = txs
        .iter()
        .map(|t| {
            (
                t.request.as_ref().map(|r| r.target.as_str()),
                t.response.as_ref().map(|r| r.body.data.as_slice()),
            )
        })
        .collect();
    // The requests that might have been answered in the hole are given up rather than
    // paired with the wrong responses, and pairing is right again afterwards.
    assert_eq!(
        summary,
        vec![
            (Some("/1"), None),
            (Some("/2"), None),
            (Some("/3"), None),
            (None, Some(&b"2"[..])),
            (None, Some(&b"3"[..])),
            (Some("/4"), Some(&b"4"[..])),
        ]
    );
    assert!(
        txs[0].anomalies.contains(Anomaly::RequestWithoutResponse)
            && txs[0].anomalies.contains(Anomaly::Gap)
    );
    assert!(txs[3].anomalies.contains(Anomaly::ResponseWithoutRequest));
    assert!(txs[5].anomalies.is_empty());
}

#[test]
fn request_gap_then_resync() {
    let post = curl_post("/upload", &[b'x'; 100]);
    let evs = [
        c2s(CURL_GET),
        s2c(&ok_json(b"1")),
        // A request lost whole (gap at a message boundary), and its response seen.
        Ev::Gap(Dir::ToServer, post.len() as u64),
        s2c(&ok_json(b"lost")),
        // Bytes of a half-lost request, then a new request at a line start.
        c2s(b"rest-of-a-body\r\nGET /after-gap HTTP/1.1\r\nHost: a\r\n\r\n"),
        s2c(&ok_json(b"after")),
    ];
    let (txs, stats) = run(&evs);
    let summary: Vec<(Option<&str>, Option<&[u8]>)> = txs
        .iter()
        .map(|t| {
            (
                t.request.as_ref().map(|r| r.target.as_str()),
                t.response.as_ref().map(|r| r.body.data.as_slice()),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (Some("/api/v1/users/42?fields=name"), Some(&b"1"[..])),
            (None, Some(&b"lost"[..])),
            (Some("/after-gap"), Some(&b"after"[..])),
        ]
    );
    assert_eq!(stats.resyncs, 1);
    assert_eq!(stats.bytes_skipped, 16);
}

#[test]
fn response_begun_before_post_gap_request_is_not_paired_with_it() {
    let lost = ok_json(b"\"for the lost request\"");
    let (lost_a, lost_b) = lost.split_at(20);
    let evs = [
        c2s(CURL_GET),
        s2c(&ok_json(b"1")),
        Ev::Gap(Dir::ToServer, 77),
        s2c(lost_a),
        c2s(&curl_get("/after")),
        s2c(lost_b),
        s2c(&ok_json(b"\"after\"")),
    ];
    let (txs, _) = run(&evs);
    assert_eq!(txs.len(), 3);
    assert!(txs[1].request.is_none());
    assert!(txs[1].anomalies.contains(Anomaly::ResponseWithoutRequest));
    assert_eq!(req(&txs[2]).target, "/after");
    assert_eq!(resp(&txs[2]).body.data, b"\"after\"");
}

#[test]
fn mid_stream_pickup() {
    // Capture starts inside a response body and inside a request body.
    let evs = [
        s2c(b"ta\":[1,2,3]}\r\n"),
        c2s(b"\"password\":\"x\"}"),
        c2s(&curl_get("/next")),
        s2c(&ok_json(b"\"next\"")),
    ];
    let (txs, stats) = run(&evs);
    assert_eq!(txs.len(), 1);
    assert_eq!(req(&txs[0]).target, "/next");
    assert!(txs[0].anomalies.is_empty());
    assert_eq!(stats.resyncs, 2);
    assert_eq!(stats.bytes_skipped, 14 + 15);
}

#[test]
fn resync_skips_false_starts_and_finds_mid_line_heads() {
    let evs = [
        c2s(CURL_GET),
        s2c(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
        Ev::Gap(Dir::ToClient, 100),
        // "HTTP/1." in text that is no status line, then a response right after a
        // JSON body that has no final line break.
        s2c(b"see HTTP/1.1 spec\r\n{\"tail\":true}HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno"),
        c2s(b"Please GET help now\r\nxxPOST /real HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\n!"),
    ];
    let cfg = HttpConfig::default();
    let (txs, stats) = run_cfg(&cfg, &evs);
    // The response found after the gap pairs with nothing (its request was never seen
    // before the gap); the request found after junk is unanswered at close.
    assert_eq!(txs.len(), 3, "{txs:?}");
    assert!(txs[0].anomalies.contains(Anomaly::Gap));
    assert_eq!(resp(&txs[1]).status, 404);
    assert_eq!(resp(&txs[1]).body.data, b"no");
    assert_eq!(req(&txs[2]).target, "/real");
    assert_eq!(req(&txs[2]).body.data, b"!");
    assert_eq!(stats.bytes_skipped, 32 + 23);
}

#[test]
fn hostile_resync_input_costs_linear_time() {
    // After a malformed request: a megabyte of "GET " without a line break, then heads
    // whose start line is fine but whose fields never parse, then a real request.
    let mut stream = b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n".to_vec();
    stream.extend(b"GET ".repeat(250_000));
    stream.extend(b"\r\n");
    stream.extend(b"GET / HTTP/1.1\r\nX: \x00\r\n".repeat(2000));
    stream.extend(b"\r\n");
    stream.extend(curl_get("/real"));
    let start = std::time::Instant::now();
    let (txs, stats) = run(&[c2s(&stream)]);
    assert!(
        start.elapsed() < std::time::Duration::from_secs(20),
        "took {:?}",
        start.elapsed()
    );
    let targets: Vec<&str> = txs.iter().map(|t| req(t).target.as_str()).collect();
    assert_eq!(targets, vec!["/", "/real"]);
    assert_eq!(stats.unparsable_heads, 1);
}

#[test]
fn swapped_directions_are_detected() {
    let evs = [
        Ev::Data(Dir::ToClient, CURL_GET.to_vec()),
        Ev::Data(Dir::ToServer, ok_json(b"{}")),
    ];
    let (txs, _, conn) = run_split(&HttpConfig::default(), &evs, &mut |_| 1);
    assert!(conn.swapped());
    assert_eq!(txs.len(), 1);
    assert!(txs[0].paired() && txs[0].anomalies.is_empty());
    assert_eq!(req(&txs[0]).ts, ts_of(0));
    let (txs2, _) = run(&evs);
    assert_eq!(txs, txs2);

    let (_, _, conn) = run_split(
        &HttpConfig::default(),
        &[c2s(CURL_GET), s2c(&ok_json(b"1"))],
        &mut |n| n,
    );
    assert!(!conn.swapped());
}

#[test]
fn response_without_request_and_request_without_response() {
    let (txs, stats) = run(&[s2c(&ok_json(b"orphan")), c2s(CURL_GET)]);
    assert_eq!(txs.len(), 2);
    assert!(txs[0].request.is_none());
    assert_eq!(anomalies(&txs[0]), vec!["response-without-request"]);
    assert!(txs[1].response.is_none());
    assert_eq!(anomalies(&txs[1]), vec!["request-without-response"]);
    assert_eq!(stats.by_status_class.get("none"), Some(&1));
    assert_eq!(stats.paired, 0);
}

#[test]
fn head_too_large_resyncs() {
    let cfg = HttpConfig {
        max_head_bytes: 256,
        ..Default::default()
    };
    let big = format!(
        "GET /big HTTP/1.1\r\nHost: a\r\nCookie: {}\r\n\r\n",
        "c".repeat(1000)
    );
    let mut reqs = big.into_bytes();
    reqs.extend(curl_get("/small"));
    let (txs, stats) = run_cfg(
        &cfg,
        &[c2s(&reqs), s2c(&ok_json(b"1")), s2c(&ok_json(b"2"))],
    );
    assert_eq!(txs.len(), 2);
    assert_eq!(req(&txs[0]).target, "/big");
    assert!(req(&txs[0]).headers.is_empty());
    assert!(txs[0].anomalies.contains(Anomaly::HeadTooLarge));
    assert_eq!(resp(&txs[0]).body.data, b"1");
    assert_eq!(req(&txs[1]).target, "/small");
    assert_eq!(resp(&txs[1]).body.data, b"2");
    assert_eq!(stats.cap_hits.get("head"), Some(&1));
    assert_eq!(stats.resyncs, 1);
}

#[test]
fn too_many_headers_keeps_the_first() {
    let cfg = HttpConfig {
        max_headers: 4,
        ..Default::default()
    };
    let r = b"GET /h HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\nF: 6\r\n\r\n";
    let (txs, stats) = run_cfg(&cfg, &[c2s(r), s2c(&ok_json(b"1"))]);
    assert_eq!(txs.len(), 1);
    let names: Vec<&str> = req(&txs[0])
        .headers
        .iter()
        .map(|h| h.name.as_str())
        .collect();
    assert_eq!(names, vec!["A", "B", "C", "D"]);
    assert!(txs[0].anomalies.contains(Anomaly::TooManyHeaders));
    assert!(txs[0].paired());
    assert_eq!(stats.cap_hits.get("headers"), Some(&1));
}

/// (request target, response body) of each transaction.
fn pairs(txs: &[Transaction]) -> Vec<(Option<&str>, Option<&[u8]>)> {
    txs.iter()
        .map(|t| {
            (
                t.request.as_ref().map(|r| r.target.as_str()),
                t.response.as_ref().map(|r| r.body.data.as_slice()),
            )
        })
        .collect()
}

#[test]
fn pending_cap_gives_up_oldest_and_keeps_pairs_right() {
    let cfg = HttpConfig {
        max_pending_requests: 2,
        ..Default::default()
    };
    let reqs: Vec<u8> = (1..=4).flat_map(|i| curl_get(&format!("/{i}"))).collect();
    let answers: Vec<u8> = (1..=4)
        .flat_map(|i| ok_json(format!("{i}").as_bytes()))
        .collect();
    let (txs, stats) = run_cfg(&cfg, &[c2s(&reqs), s2c(&answers)]);
    // The answers to the given-up requests still come first: they pair with nothing,
    // and the later ones with their own requests.
    assert_eq!(
        pairs(&txs),
        vec![
            (Some("/1"), None),
            (Some("/2"), None),
            (None, Some(&b"1"[..])),
            (None, Some(&b"2"[..])),
            (Some("/3"), Some(&b"3"[..])),
            (Some("/4"), Some(&b"4"[..])),
        ]
    );
    for t in &txs[..4] {
        assert!(
            t.anomalies.contains(Anomaly::PendingCap),
            "{:?}",
            t.anomalies
        );
    }
    assert!(txs[4].anomalies.is_empty() && txs[5].anomalies.is_empty());
    assert_eq!(stats.cap_hits.get("pending"), Some(&2));
}

#[test]
fn pending_bytes_cap_counts_kept_heads_and_bodies() {
    // Each request weighs its queue entry, method, target, fields and kept body.
    let post = curl_post("/p", &[b'x'; 3000]);
    let cfg = HttpConfig {
        max_pending_bytes: 8000,
        ..Default::default()
    };
    let reqs: Vec<u8> = (0..4).flat_map(|_| post.clone()).collect();
    let answers: Vec<u8> = (1..=4)
        .flat_map(|i| ok_json(format!("{i}").as_bytes()))
        .collect();
    let (txs, stats) = run_cfg(&cfg, &[c2s(&reqs), s2c(&answers)]);
    let given_up = stats.cap_hits.get("pending-bytes").copied().unwrap_or(0);
    assert_eq!(given_up, 2, "{:?}", stats.cap_hits);
    assert_eq!(stats.paired, 2);
    let answered: Vec<&[u8]> = txs
        .iter()
        .filter(|t| t.paired())
        .map(|t| resp(t).body.data.as_slice())
        .collect();
    assert_eq!(answered, vec![&b"3"[..], &b"4"[..]]);
    // Nothing is left charged once the queue is empty.
    let (_, _, conn) = run_split(&cfg, &[c2s(&reqs), s2c(&answers)], &mut |n| n);
    assert_eq!(conn.shared.pending_bytes, 0);
}

#[test]
fn lost_responses_are_estimated_from_the_typical_size() {
    // Six pipelined requests; answers 3 and 4 are lost whole: the loss is two typical
    // answers long, so /3 and /4 are given up and 5 and 6 pair with /5 and /6.
    let reqs: Vec<u8> = (1..=6).flat_map(|i| curl_get(&format!("/{i}"))).collect();
    let answer = |i: u32| ok_json(format!("{i}").as_bytes());
    let lost = (answer(3).len() + answer(4).len()) as u64;
    let evs = [
        c2s(&reqs),
        s2c(&[answer(1), answer(2)].concat()),
        Ev::Gap(Dir::ToClient, lost),
        s2c(&[answer(5), answer(6)].concat()),
    ];
    let (txs, stats) = run(&evs);
    assert_eq!(
        pairs(&txs),
        vec![
            (Some("/1"), Some(&b"1"[..])),
            (Some("/2"), Some(&b"2"[..])),
            (Some("/3"), None),
            (Some("/4"), None),
            (Some("/5"), Some(&b"5"[..])),
            (Some("/6"), Some(&b"6"[..])),
        ]
    );
    assert!(txs[2].anomalies.contains(Anomaly::Gap));
    assert!(txs[3].anomalies.contains(Anomaly::RequestWithoutResponse));
    assert_eq!(stats.gap_unanswered, 2);
}

#[test]
fn loss_inside_responses_counts_the_cut_ones() {
    // The loss starts inside answer 2's head and ends inside answer 4's body: answer 2
    // was never framed, 3 was lost whole, the rest of 4 is skipped by the resync.
    let reqs: Vec<u8> = (1..=5).flat_map(|i| curl_get(&format!("/{i}"))).collect();
    let answer = |i: u32| ok_json(format!("answer {i}").as_bytes());
    let (a2, a3, a4) = (answer(2), answer(3), answer(4));
    let lost = (a2.len() - 30 + a3.len() + a4.len() - 3) as u64;
    let evs = [
        c2s(&reqs),
        s2c(&answer(1)),
        s2c(&a2[..30]),
        Ev::Gap(Dir::ToClient, lost),
        s2c(&a4[a4.len() - 3..]),
        s2c(&answer(5)),
    ];
    let (txs, _) = run(&evs);
    assert_eq!(
        pairs(&txs),
        vec![
            (Some("/1"), Some(&b"answer 1"[..])),
            (Some("/2"), None),
            (Some("/3"), None),
            (Some("/4"), None),
            (Some("/5"), Some(&b"answer 5"[..])),
        ]
    );
    // A chunked answer cut by the loss counts as one of the lost answers.
    let chunked_answer = |i: u32| {
        chunked(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            &[format!("answer {i}").as_bytes()],
            "",
        )
    };
    let c2 = chunked_answer(2);
    let lost = (c2.len() - 50 + chunked_answer(3).len()) as u64;
    let evs = [
        c2s(&reqs[..reqs.len() / 5 * 4]),
        s2c(&chunked_answer(1)),
        s2c(&c2[..50]),
        Ev::Gap(Dir::ToClient, lost),
        s2c(&chunked_answer(4)),
    ];
    let (txs, _) = run(&evs);
    let summary: Vec<(Option<&str>, bool)> = txs
        .iter()
        .map(|t| {
            (
                t.request.as_ref().map(|r| r.target.as_str()),
                t.response.is_some(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (Some("/1"), true),
            (Some("/2"), true),
            (Some("/3"), false),
            (Some("/4"), true),
        ]
    );
    assert!(txs[1].anomalies.contains(Anomaly::TruncatedBody));
    assert_eq!(resp(&txs[3]).body.data, b"answer 4");
}

#[test]
fn lenient_request_lines_still_pair_with_neighbours() {
    let cases: [(&[u8], &str, u8, Anomaly); 3] = [
        (
            b"GET /a b c HTTP/1.1\r\nHost: a\r\n\r\n",
            "/a b c",
            1,
            Anomaly::RequestLineSpaceInTarget,
        ),
        (
            b"GET HTTP/1.1\r\nHost: a\r\n\r\n",
            "",
            1,
            Anomaly::RequestLineNoTarget,
        ),
        (
            b"DELETE  /x  y  HTTP/1.0\n\n",
            "/x  y",
            0,
            Anomaly::RequestLineSpaceInTarget,
        ),
    ];
    for (odd, target, version, anomaly) in cases {
        let evs = [
            c2s(&curl_get("/before")),
            s2c(&ok_json(b"1")),
            c2s(odd),
            s2c(&py_response("400 Bad Request", "", b"2")),
            c2s(&curl_get("/after")),
            s2c(&ok_json(b"3")),
        ];
        let (txs, stats) = run(&evs);
        assert_eq!(txs.len(), 3, "{odd:?}: {txs:?}");
        assert!(txs.iter().all(Transaction::paired));
        let r = req(&txs[1]);
        assert_eq!((r.target.as_str(), r.version), (target, version));
        assert_eq!(anomalies(&txs[1]), vec![anomaly.as_str()]);
        assert_eq!(resp(&txs[1]).status, 400);
        assert!(txs[0].anomalies.is_empty() && txs[2].anomalies.is_empty());
        assert_eq!(req(&txs[2]).target, "/after");
        assert_eq!((stats.resyncs, stats.bytes_skipped), (0, 0));
    }
}

#[test]
fn non_numeric_status_is_status_zero_and_framed() {
    let evs = [
        c2s(&curl_get("/1")),
        s2c(b"HTTP/1.1 abc OK\r\nContent-Length: 5\r\n\r\nhello"),
        c2s(&curl_get("/2")),
        s2c(b"HTTP/1.0 2000\r\nContent-Length: 2\r\n\r\nhi"),
        c2s(&curl_get("/3")),
        s2c(&ok_json(b"3")),
    ];
    let (txs, _) = run(&evs);
    assert_eq!(
        pairs(&txs),
        vec![
            (Some("/1"), Some(&b"hello"[..])),
            (Some("/2"), Some(&b"hi"[..])),
            (Some("/3"), Some(&b"3"[..])),
        ]
    );
    assert_eq!((resp(&txs[0]).status, resp(&txs[1]).status), (0, 0));
    assert_eq!(anomalies(&txs[0]), vec!["status-non-numeric"]);
    assert_eq!(resp(&txs[1]).version, 0);
    assert!(txs[2].anomalies.is_empty());
}

#[test]
fn http09_request_and_headless_answer() {
    for line in [&b"GET /old\r\n"[..], b"GET /old\n", b"GET\r\n"] {
        let evs = [c2s(line), s2c(b"<html>old style</html>\n"), s2c(b"more")];
        let (txs, stats) = run(&evs);
        assert_eq!(txs.len(), 1, "{line:?}: {txs:?}");
        let (q, r) = (req(&txs[0]), resp(&txs[0]));
        assert_eq!(q.version, 0);
        assert!(q.headers.is_empty());
        assert_eq!(
            (r.status, r.body.data.as_slice()),
            (0, &b"<html>old style</html>\nmore"[..])
        );
        let mut want = vec!["request-line-no-version", "response-no-head"];
        if line.starts_with(b"GET\r") {
            assert_eq!(q.target, "");
            want.insert(1, "request-line-no-target");
        } else {
            assert_eq!(q.target, "/old");
        }
        assert_eq!(anomalies(&txs[0]), want);
        assert_eq!(stats.bytes_skipped, 0);
    }
    // A server may answer a version-less line with a head (nginx: 400): normal pairing.
    let (txs, _) = run(&[
        c2s(b"GET /x\r\n"),
        s2c(&py_response("400 Bad Request", "", b"no")),
    ]);
    assert_eq!(resp(&txs[0]).status, 400);
    assert_eq!(anomalies(&txs[0]), vec!["request-line-no-version"]);
}

#[test]
fn lines_that_stay_unparsable() {
    // Unknown methods need a version; other protocol words and control bytes are not
    // guessed at; a status line must start HTTP/1.
    for bytes in [
        &b"FOO /x\r\n\r\n"[..],
        b"GET / HTTP/2.0\r\n\r\n",
        b"GET /a\x01b HTTP/1.1\r\n\r\n",
        b"OK\r\n\r\n",
    ] {
        let (txs, stats) = run(&[c2s(bytes)]);
        assert!(txs.is_empty(), "{bytes:?}: {txs:?}");
        assert!(stats.bytes_skipped > 0);
    }
    let (txs, _) = run(&[c2s(CURL_GET), s2c(b"HTTX/1.1 200 OK\r\n\r\n")]);
    assert_eq!(txs.len(), 1);
    assert!(txs[0].response.is_none());
}

#[test]
fn invalid_content_length_resyncs_to_next_request() {
    let evs = [
        c2s(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 12abc\r\n\r\nsmuggled-body\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n"),
        s2c(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
        s2c(&ok_json(b"n")),
    ];
    let (txs, stats) = run(&evs);
    assert_eq!(txs.len(), 2);
    assert!(txs[0].anomalies.contains(Anomaly::InvalidContentLength));
    assert_eq!(resp(&txs[0]).status, 400);
    assert_eq!(req(&txs[1]).target, "/next");
    assert_eq!(stats.bytes_skipped, 15);
}

#[test]
fn bad_chunk_resyncs_to_next_response() {
    let evs = [
        c2s(&curl_get("/1")),
        c2s(&curl_get("/2")),
        s2c(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nnot-hex\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    ];
    let (txs, _) = run(&evs);
    assert_eq!(txs.len(), 2);
    assert!(txs[0].anomalies.contains(Anomaly::BadChunk));
    assert_eq!(resp(&txs[0]).body.data, b"hello");
    assert!(resp(&txs[0]).body.truncated);
    assert_eq!(req(&txs[1]).target, "/2");
    assert_eq!(resp(&txs[1]).body.data, b"ok");
    assert!(txs[1].anomalies.is_empty());
}

#[test]
fn cl_and_te_chunked_wins() {
    let evs = [
        c2s(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        s2c(&ok_json(b"1")),
    ];
    let (txs, _) = run(&evs);
    assert_eq!(txs.len(), 1);
    assert_eq!(
        anomalies(&txs[0]),
        vec!["content-length-and-transfer-encoding"]
    );
    assert_eq!(req(&txs[0]).body.data, b"hello");
}

#[test]
fn body_cap_keeps_prefix_counts_rest() {
    let cfg = HttpConfig {
        max_body_bytes: 16,
        ..Default::default()
    };
    let body = users_json();
    let (txs, stats) = run_cfg(&cfg, &[c2s(CURL_GET), s2c(&ok_json(&body))]);
    let b = &resp(&txs[0]).body;
    assert_eq!(b.data, &body[..16]);
    assert_eq!(b.wire_len, body.len() as u64);
    assert!(b.truncated);
    assert!(txs[0].anomalies.contains(Anomaly::BodyCap));
    assert_eq!(stats.cap_hits.get("body"), Some(&1));
}

/// One stream per anomaly; together they must cover every kind.
fn anomaly_scenarios() -> Vec<(Anomaly, HttpConfig, Vec<Ev>)> {
    let d = HttpConfig::default;
    let zeros = gzip(&vec![0u8; 1 << 20]);
    vec![
        (
            Anomaly::ClAndTe,
            d(),
            vec![c2s(CURL_GET), s2c(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")],
        ),
        (
            Anomaly::DuplicateContentLength,
            d(),
            vec![c2s(CURL_GET), s2c(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok")],
        ),
        (Anomaly::InvalidContentLength, d(), vec![c2s(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n")]),
        (
            Anomaly::BadChunk,
            d(),
            vec![c2s(CURL_GET), s2c(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXX0\r\n\r\n")],
        ),
        (Anomaly::TruncatedBody, d(), vec![c2s(CURL_GET), s2c(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")]),
        (Anomaly::ResponseWithoutRequest, d(), vec![s2c(&ok_json(b"1"))]),
        (Anomaly::RequestWithoutResponse, d(), vec![c2s(CURL_GET)]),
        (
            Anomaly::Gap,
            d(),
            vec![c2s(CURL_GET), s2c(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"), Ev::Gap(Dir::ToClient, 10)],
        ),
        (
            Anomaly::HeadTooLarge,
            HttpConfig { max_head_bytes: 100, ..d() },
            vec![c2s(format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "y".repeat(200)).as_bytes())],
        ),
        (
            Anomaly::TooManyHeaders,
            HttpConfig { max_headers: 1, ..d() },
            vec![c2s(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n")],
        ),
        (Anomaly::BadHead, d(), vec![c2s(b"GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n")]),
        (
            Anomaly::DecodeFailed,
            d(),
            vec![c2s(CURL_GET), s2c(&py_response("200 OK", "Content-Encoding: gzip\r\n", b"{\"plain\":true}"))],
        ),
        (
            Anomaly::DecodeCap,
            d(),
            vec![c2s(CURL_GET), s2c(&py_response("200 OK", "Content-Encoding: gzip\r\n", &zeros))],
        ),
        (
            Anomaly::BodyCap,
            HttpConfig { max_body_bytes: 4, ..d() },
            vec![c2s(&curl_post("/p", b"0123456789"))],
        ),
        (
            Anomaly::Upgrade,
            d(),
            vec![
                c2s(b"GET /chat HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"),
                s2c(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x05hello"),
            ],
        ),
        (
            Anomaly::Connect,
            d(),
            vec![c2s(b"CONNECT a:443 HTTP/1.1\r\n\r\n"), s2c(b"HTTP/1.0 200 OK\r\n\r\n")],
        ),
        (
            Anomaly::PendingCap,
            HttpConfig { max_pending_requests: 1, ..d() },
            vec![c2s(&[curl_get("/1"), curl_get("/2")].concat())],
        ),
        (
            Anomaly::UnknownEncoding,
            d(),
            vec![c2s(CURL_GET), s2c(&py_response("200 OK", "Content-Encoding: zstd\r\n", b"\x28\xb5\x2f\xfd"))],
        ),
        (Anomaly::RequestLineSpaceInTarget, d(), vec![c2s(b"GET /a b HTTP/1.1\r\n\r\n")]),
        (Anomaly::RequestLineNoVersion, d(), vec![c2s(b"GET /a\r\n")]),
        (Anomaly::RequestLineNoTarget, d(), vec![c2s(b"GET HTTP/1.1\r\n\r\n")]),
        (Anomaly::StatusNonNumeric, d(), vec![c2s(CURL_GET), s2c(b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n")]),
        (Anomaly::ResponseNoHead, d(), vec![c2s(b"GET /a\r\n"), s2c(b"body")]),
        // HTTP/2 (prior knowledge; header blocks of static-table fields: GET http /).
        (
            Anomaly::StreamReset,
            d(),
            vec![c2s(&[crate::http::h2::PREFACE, &h2_frame(1, 5, 1, &[0x82, 0x86, 0x84]), &h2_frame(3, 0, 1, &[0, 0, 0, 8])].concat())],
        ),
        (
            Anomaly::H2UnknownFields,
            d(),
            vec![c2s(&[crate::http::h2::PREFACE, &h2_frame(1, 5, 1, &[0x82, 0x86, 0x84, 0xbe])].concat())],
        ),
        (
            Anomaly::StreamCap,
            d(),
            vec![c2s(&[
                crate::http::h2::PREFACE.to_vec(),
                (0..300u32).flat_map(|i| h2_frame(1, 4, 1 + 2 * i, &[0x82, 0x86, 0x84])).collect(),
            ].concat())],
        ),
    ]
}

/// One HTTP/2 frame: type, flags, stream, payload.
fn h2_frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, ty, flags];
    f.extend(stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

#[test]
fn every_anomaly_is_produced() {
    let mut seen = AnomalySet::default();
    for (expected, cfg, evs) in anomaly_scenarios() {
        let (txs, stats) = run_cfg(&cfg, &evs);
        let union = txs.iter().fold(AnomalySet::default(), |acc, t| {
            AnomalySet(acc.0 | t.anomalies.0)
        });
        assert!(
            union.contains(expected),
            "{expected:?} not produced: {txs:?}"
        );
        assert!(
            stats
                .anomalies_by_kind
                .get(expected.as_str())
                .is_some_and(|&n| n > 0)
        );
        seen = AnomalySet(seen.0 | union.0);
    }
    let missing: Vec<Anomaly> = Anomaly::ALL
        .iter()
        .copied()
        .filter(|a| !seen.contains(*a))
        .collect();
    assert!(missing.is_empty(), "no scenario produces {missing:?}");
}

#[test]
fn idle_connection_state_is_small() {
    // Flow tables hold one HttpConn per connection; messages in flight are boxed.
    assert!(size_of::<HttpConn>() <= 320, "{}", size_of::<HttpConn>());
}

#[test]
fn stats_merge_adds_up() {
    let (_, a) = run(&[c2s(CURL_GET), s2c(&ok_json(b"1"))]);
    let (_, b) = run(&[s2c(&ok_json(b"1"))]);
    let mut m = a.clone();
    m.merge(&b);
    assert_eq!(m.transactions, 2);
    assert_eq!(m.by_status_class.get("2xx"), Some(&2));
    assert_eq!(
        m.anomalies_by_kind.get("response-without-request"),
        Some(&1)
    );
    let json = serde_json::to_value(&m).unwrap();
    assert_eq!(json["paired"], 1);
    assert_eq!(json["by_method_class"]["GET"], 1);
}

#[test]
fn memory_stays_bounded_under_floods() {
    let cfg = HttpConfig {
        max_head_bytes: 1024,
        max_body_bytes: 1024,
        max_pending_requests: 4,
        ..Default::default()
    };
    let mut conn = HttpConn::new();
    let (mut out, mut stats) = (Vec::new(), HttpStats::default());
    // Per direction a head-sized buffer and a body; queued requests (cap, one being
    // answered, one arriving) with a request and a response body each.
    let bound = 2 * (1024 + 1024) + 6 * 2 * 1024 + ORIENT_PROBE_LEN;
    let endless_head = b"GET / HTTP/1.1\r\nX: "
        .iter()
        .copied()
        .chain(std::iter::repeat_n(b'a', 100_000))
        .collect::<Vec<_>>();
    let endless_chunk_line = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;"
        .iter()
        .copied()
        .chain(std::iter::repeat_n(b'e', 100_000))
        .collect::<Vec<_>>();
    let many = (0..200)
        .flat_map(|i| curl_get(&format!("/{i}")))
        .collect::<Vec<_>>();
    for (dir, stream) in [
        (Dir::ToServer, &endless_head),
        (Dir::ToClient, &endless_chunk_line),
        (Dir::ToServer, &many),
    ] {
        for piece in stream.chunks(700) {
            conn.data(&cfg, dir, piece, Timestamp(1), &mut out, &mut stats);
            assert!(
                conn.buffered_bytes() <= bound,
                "{} > {bound}",
                conn.buffered_bytes()
            );
        }
    }
    assert!(conn.shared.pending.len() <= 6);
}

fn method_strategy() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS",
    ])
}

#[derive(Clone, Debug)]
struct PairSpec {
    method: &'static str,
    req_body: Vec<u8>,
    req_chunk: Option<usize>,
    status: u16,
    resp_body: Vec<u8>,
    resp_chunk: Option<usize>,
    gzip: bool,
}

fn pair_strategy() -> impl Strategy<Value = PairSpec> {
    (
        method_strategy(),
        prop::collection::vec(any::<u8>(), 0..300),
        prop::option::of(1usize..64),
        prop::sample::select(vec![200u16, 201, 204, 304, 404, 500]),
        prop::collection::vec(any::<u8>(), 0..600),
        prop::option::of(1usize..128),
        any::<bool>(),
    )
        .prop_map(
            |(method, req_body, req_chunk, status, resp_body, resp_chunk, gzip)| PairSpec {
                method,
                req_body,
                req_chunk,
                status,
                resp_body,
                resp_chunk,
                gzip,
            },
        )
}

fn body_bytes(head: &mut Vec<u8>, body: &[u8], chunk: Option<usize>) {
    match chunk {
        Some(size) => {
            head.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            for c in body.chunks(size) {
                head.extend_from_slice(format!("{:X};i=1\r\n", c.len()).as_bytes());
                head.extend_from_slice(c);
                head.extend_from_slice(b"\r\n");
            }
            head.extend_from_slice(b"0\r\nX-Trailer: t\r\n\r\n");
        }
        None => {
            head.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            head.extend_from_slice(body);
        }
    }
}

fn build(p: &PairSpec) -> (Vec<u8>, Vec<u8>) {
    let mut q = format!(
        "{} /r/{} HTTP/1.1\r\nHost: api.example.com\r\nAccept: */*\r\n",
        p.method,
        p.req_body.len()
    )
    .into_bytes();
    body_bytes(&mut q, &p.req_body, p.req_chunk);
    let mut r = format!("HTTP/1.1 {} X\r\nServer: t\r\n", p.status).into_bytes();
    let bodyless = p.method == "HEAD" || p.status == 204 || p.status == 304;
    if bodyless {
        r.extend_from_slice(b"\r\n");
    } else if p.gzip {
        r.extend_from_slice(b"Content-Encoding: gzip\r\n");
        body_bytes(&mut r, &gzip(&p.resp_body), p.resp_chunk);
    } else {
        body_bytes(&mut r, &p.resp_body, p.resp_chunk);
    }
    (q, r)
}

/// The head end as found line by line: the first `\n` from `from` followed by `\n` or
/// `\r\n` (what `find_head_end` did before it searched for the two strings).
fn head_end_line_by_line(buf: &[u8], from: usize) -> Option<usize> {
    let tail = buf.get(from..)?;
    memchr_iter(b'\n', tail).find_map(|i| {
        let at = from + i;
        match (buf.get(at + 1), buf.get(at + 2)) {
            (Some(b'\n'), _) => Some(at + 2),
            (Some(b'\r'), Some(b'\n')) => Some(at + 3),
            _ => None,
        }
    })
}

#[test]
fn head_ends_at_the_first_empty_line_of_either_kind() {
    let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody\n\n";
    assert_eq!(find_head_end(head, 0), Some(27));
    assert_eq!(
        find_head_end(b"GET / HTTP/1.1\nHost: a\n\n\r\n", 0),
        Some(24)
    );
    // A bare empty line before a CRLF one ends the head first.
    assert_eq!(find_head_end(b"A: b\n\nC: d\r\n\r\n", 0), Some(6));
    assert_eq!(find_head_end(b"A: b\r\n\n", 0), Some(7));
    assert_eq!(find_head_end(b"A: b\r\nC: d\r\n", 0), None);
    assert_eq!(find_head_end(b"\n\r", 0), None);
    assert_eq!(find_head_end(head, head.len() + 1), None);
}

#[test]
fn one_pass_head_takes_whole_heads_and_leaves_the_rest_to_the_search() {
    let head = b"GET /v1/me HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer x\r\n\r\n";
    let mut input = head.to_vec();
    input.extend_from_slice(b"GET /next HTTP/1.1\r\n");
    let one = parse_whole_head(Role::Request, &input, 64).expect("a whole head");
    assert_eq!(one.len, head.len());
    assert_eq!(one.headers.get("authorization"), Some(&b"Bearer x"[..]));
    assert_eq!(
        one.headers,
        parse_head(Role::Request, head, 64).unwrap().headers
    );
    // Cut short, an empty line first, a lenient-only head, too many fields: the search.
    assert!(parse_whole_head(Role::Request, &head[..head.len() - 1], 64).is_none());
    assert!(parse_whole_head(Role::Request, &[b"\r\n", &head[..]].concat(), 64).is_none());
    assert!(
        parse_whole_head(
            Role::Response,
            b"HTTP/1.1 200 OK\r\nBad Name: v\r\n\r\n",
            64
        )
        .is_none()
    );
    assert!(parse_whole_head(Role::Request, head, 1).is_none());
}

proptest! {
    // Cheap cases; about one in eight is a head httparse takes whole.
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    /// A head that strict httparse takes whole in one pass (no search for its end first)
    /// is the head the search for the empty line finds, parsed as that head is: the same
    /// length, start line, fields and anomalies. Heads are built from real lines and
    /// stray bytes, with either line break, a cap on the fields, and bytes after the head.
    #[test]
    fn one_pass_head_is_the_head_the_search_finds(
        first in prop::sample::select(vec![
            "GET /a?b=1 HTTP/1.1", "HTTP/1.1 200 OK", "HTTP/1.0 404 Not Found", "POST / HTTP/1.0",
            "GET  / HTTP/1.1", "HTTP/1.1 200", "get / http/1.1", "", " GET / HTTP/1.1",
        ]),
        lines in prop::collection::vec(prop::sample::select(vec![
            "Host: a", "Content-Length: 3", "X-Y:  b c ", "A:", "Host: a", "User-Agent: okhttp/4.12",
            "Bad Name: v", " folded", ":x",
            "Approov-Token: e30.e30.c2ln", "\tT: v", "K: \u{e9}", "K: a\rb", "",
        ]), 0..6),
        breaks in prop::collection::vec(prop::sample::select(vec!["\r\n", "\r\n", "\n", "\n", "\r", "\n\r"]), 0..12),
        after in prop::sample::select(vec!["", "\r\n", "body", "\n\nx"]),
        swap_role in prop::sample::select(vec![false, false, false, true]),
        max_headers in prop::sample::select(vec![2usize, 64, 64]),
    ) {
        let mut buf = first.as_bytes().to_vec();
        for (i, l) in lines.iter().enumerate() {
            buf.extend_from_slice(breaks.get(i).copied().unwrap_or("\r\n").as_bytes());
            buf.extend_from_slice(l.as_bytes());
        }
        buf.extend_from_slice(b"\r\n\r\n");
        buf.extend_from_slice(after.as_bytes());
        let response = first.starts_with("HTTP") != swap_role;
        let role = if response { Role::Response } else { Role::Request };
        if let Some(one) = parse_whole_head(role, &buf, max_headers) {
            prop_assert_eq!(find_head_end(&buf, 0), Some(one.len));
            let found = parse_head(role, &buf[..one.len], max_headers);
            prop_assert!(found.is_ok());
            prop_assert_eq!(format!("{:?}", Some(one)), format!("{:?}", found.ok()));
        }
    }
}

proptest! {
    /// The search for `\n\r\n` and `\n\n` ends a head exactly where the walk over its
    /// line breaks does, from any resume point, on bytes dense in line breaks.
    #[test]
    fn head_end_search_agrees_with_the_walk_over_line_breaks(
        buf in prop::collection::vec(prop::sample::select(b"ab:\r\n \n\r".to_vec()), 0..64),
        from in 0usize..70,
    ) {
        prop_assert_eq!(find_head_end(&buf, from), head_end_line_by_line(&buf, from));
    }

    /// `fill` writes what the bytes of `a` then `b` give, as far as `dst` holds them.
    #[test]
    fn fill_copies_the_pair_as_far_as_it_fits(
        a in prop::collection::vec(any::<u8>(), 0..30),
        b in prop::collection::vec(any::<u8>(), 0..30),
        room in 0usize..40,
    ) {
        let mut dst = vec![0xAAu8; room];
        let n = fill(&mut dst, &a, &b);
        let want: Vec<u8> = a.iter().chain(&b).copied().take(room).collect();
        prop_assert_eq!(n, want.len());
        prop_assert_eq!(&dst[..n], &want[..]);
        prop_assert!(dst[n..].iter().all(|&x| x == 0xAA));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn valid_streams_split_anywhere_match_unsplit(
        pairs in prop::collection::vec(pair_strategy(), 1..6),
        pipelined in any::<bool>(),
        cuts in prop::collection::vec(1usize..40, 1..20),
    ) {
        let built: Vec<(Vec<u8>, Vec<u8>)> = pairs.iter().map(build).collect();
        let evs: Vec<Ev> = if pipelined {
            let reqs: Vec<u8> = built.iter().flat_map(|(q, _)| q.clone()).collect();
            let resps: Vec<u8> = built.iter().flat_map(|(_, r)| r.clone()).collect();
            vec![c2s(&reqs), s2c(&resps)]
        } else {
            built.iter().flat_map(|(q, r)| [c2s(q), s2c(r)]).collect()
        };
        let cfg = HttpConfig::default();
        let (whole, _, _) = run_split(&cfg, &evs, &mut |n| n);
        let mut k = 0;
        let (split, _, _) = run_split(&cfg, &evs, &mut |_| { k += 1; cuts[k % cuts.len()] });
        prop_assert_eq!(&whole, &split);
        prop_assert_eq!(whole.len(), pairs.len());
        for (t, p) in whole.iter().zip(&pairs) {
            prop_assert!(t.paired() && t.anomalies.is_empty(), "{:?}", t.anomalies);
            prop_assert_eq!(&req(t).method, p.method);
            prop_assert_eq!(&req(t).body.data, &p.req_body);
            prop_assert_eq!(resp(t).status, p.status);
            let bodyless = p.method == "HEAD" || p.status == 204 || p.status == 304;
            if !bodyless {
                prop_assert_eq!(&resp(t).body.data, &p.resp_body);
            }
        }
    }

    #[test]
    fn messy_streams_split_anywhere_match_unsplit(
        pieces in prop::collection::vec((0u8..10, any::<bool>(), prop::collection::vec(any::<u8>(), 0..24)), 0..30),
        cuts in prop::collection::vec(1usize..9, 1..10),
    ) {
        // Valid fragments, junk and gaps: whatever the parser makes of it, chunking
        // must not change it.
        const TOKENS: &[&[u8]] = &[
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
            b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", b"3;x\r\nabc\r\n0\r\nT: 1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"HTTP/1.0 200 OK\r\n\r\nuntil close",
            b"zz\r\n", b"HEAD /h HTTP/1.1\r\n\r\n",
        ];
        let evs: Vec<Ev> = pieces
            .iter()
            .map(|(kind, to_server, bytes)| {
                let dir = if *to_server { Dir::ToServer } else { Dir::ToClient };
                match kind {
                    0 => Ev::Gap(dir, u64::from(bytes.first().copied().unwrap_or(1)) + 1),
                    1 | 2 => Ev::Data(dir, bytes.clone()),
                    _ => {
                        let mut v = TOKENS[usize::from(bytes.first().copied().unwrap_or(0)) % TOKENS.len()].to_vec();
                        v.extend_from_slice(bytes.get(1..3).unwrap_or_default());
                        Ev::Data(dir, v)
                    }
                }
            })
            .collect();
        let cfg = HttpConfig { max_head_bytes: 128, max_body_bytes: 32, max_pending_requests: 3, ..Default::default() };
        let (whole, ws, _) = run_split(&cfg, &evs, &mut |n| n);
        let (bytewise, bs, _) = run_split(&cfg, &evs, &mut |_| 1);
        let mut k = 0;
        let (split, ss, _) = run_split(&cfg, &evs, &mut |_| { k += 1; cuts[k % cuts.len()] });
        prop_assert_eq!(&whole, &bytewise);
        prop_assert_eq!(&whole, &split);
        prop_assert_eq!(ws.bytes_skipped, bs.bytes_skipped);
        prop_assert_eq!(ws.resyncs, ss.resyncs);
        prop_assert_eq!(&ws.anomalies_by_kind, &ss.anomalies_by_kind);
    }

    #[test]
    fn arbitrary_streams_never_panic(
        pieces in prop::collection::vec((0u8..8, any::<bool>(), prop::collection::vec(any::<u8>(), 0..40)), 0..40),
    ) {
        const TOKENS: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\n", b"HTTP/1.1 200 OK\r\n", b"Content-Length: 5\r\n", b"Transfer-Encoding: chunked\r\n",
            b"\r\n", b"5\r\nhello\r\n0\r\n\r\n", b"HTTP/1.1 101 S\r\n\r\n", b"Content-Encoding: gzip\r\n",
        ];
        let cfg = HttpConfig { max_head_bytes: 200, max_body_bytes: 64, max_pending_requests: 3, max_headers: 4, ..Default::default() };
        let bound = 2 * (200 + 64) + 5 * 2 * 64 + ORIENT_PROBE_LEN;
        let mut conn = HttpConn::new();
        let (mut out, mut stats) = (Vec::new(), HttpStats::default());
        for (i, (kind, to_server, bytes)) in pieces.iter().enumerate() {
            let dir = if *to_server { Dir::ToServer } else { Dir::ToClient };
            let ts = Timestamp(i as u64);
            match kind {
                0 => conn.gap(&cfg, dir, u64::from(bytes.first().copied().unwrap_or(1)), ts, &mut out, &mut stats),
                1..=3 => conn.data(&cfg, dir, bytes, ts, &mut out, &mut stats),
                _ => {
                    let token = TOKENS[usize::from(bytes.first().copied().unwrap_or(0)) % TOKENS.len()];
                    conn.data(&cfg, dir, token, ts, &mut out, &mut stats);
                }
            }
            prop_assert!(conn.buffered_bytes() <= bound);
        }
        conn.close(&cfg, Timestamp(u64::MAX), &mut out, &mut stats);
        prop_assert_eq!(stats.transactions, out.len() as u64);
        prop_assert_eq!(conn.buffered_bytes(), 0);
    }
}

#[test]
fn method_and_status_classes_come_from_their_lists() {
    for m in ["GET", "OPTIONS", "PROPFIND", "get"] {
        assert!(METHOD_CLASSES.contains(&method_class(m)), "{m}");
    }
    assert_eq!(method_class("PROPFIND"), "other");
    assert_eq!(method_class("get"), "other");
    for s in [
        None,
        Some(101),
        Some(204),
        Some(302),
        Some(404),
        Some(503),
        Some(999),
    ] {
        assert!(STATUS_CLASSES.contains(&status_class(s)), "{s:?}");
    }
    assert_eq!(status_class(Some(999)), "other");
    let distinct: std::collections::BTreeSet<_> = STATUS_CLASSES.iter().collect();
    assert_eq!(distinct.len(), STATUS_CLASSES.len());
}

/// What a connection holds, as the memory budget charges it: a body being read and the
/// requests waiting for answers; nothing once every transaction is out.
#[test]
fn held_bytes_follow_pending_messages_and_bodies() {
    let cfg = HttpConfig::default();
    let mut conn = HttpConn::new();
    let mut out = Vec::new();
    let mut stats = HttpStats::default();
    let t = ts_of(0);
    assert_eq!(conn.held_bytes(), 0);
    let head = b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 20000\r\n\r\n";
    conn.data(&cfg, Dir::ToServer, head, t, &mut out, &mut stats);
    let after_head = conn.held_bytes();
    assert!(after_head > 0);
    conn.data(
        &cfg,
        Dir::ToServer,
        &[b'x'; 10_000],
        t,
        &mut out,
        &mut stats,
    );
    // The body's buffer is charged as allocated (sized from Content-Length up front).
    let mid_body = conn.held_bytes();
    assert!(
        mid_body >= 10_000 && mid_body >= after_head,
        "{after_head} → {mid_body}"
    );
    conn.data(
        &cfg,
        Dir::ToServer,
        &[b'x'; 10_000],
        t,
        &mut out,
        &mut stats,
    );
    // The request is complete and waits for its answer, body included.
    assert!(conn.held_bytes() >= 20_000, "{}", conn.held_bytes());
    assert!(out.is_empty());
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    conn.data(&cfg, Dir::ToClient, resp, t, &mut out, &mut stats);
    assert_eq!(out.len(), 1);
    // Only reusable line buffers remain.
    assert!(conn.held_bytes() < 1024, "{}", conn.held_bytes());
}

/// A connection cut by load shedding emits what is whole and counts the rest as shed:
/// where closing it would report a request waiting for its answer, one whose answer was
/// cut mid-body and one whose own body was cut, all as unanswered or truncated.
#[test]
fn a_connection_cut_by_shedding_reports_only_whole_transactions() {
    let cfg = HttpConfig::default();
    let post = curl_post("/4", br#"{"item": 42, "qty": 1}"#);
    let mut client: Vec<u8> = (1..=3).flat_map(|i| curl_get(&format!("/{i}"))).collect();
    client.extend_from_slice(&post[..post.len() - 5]);
    let a2 = ok_json(b"answer two, cut in its body");
    let server = [ok_json(b"one"), a2[..a2.len() - 6].to_vec()].concat();
    let feed = |conn: &mut HttpConn, out: &mut Vec<Transaction>, stats: &mut HttpStats| {
        conn.data(&cfg, Dir::ToServer, &client, ts_of(0), out, stats);
        conn.data(&cfg, Dir::ToClient, &server, ts_of(1), out, stats);
    };

    let (mut conn, mut out, mut stats) = (HttpConn::new(), Vec::new(), HttpStats::default());
    feed(&mut conn, &mut out, &mut stats);
    conn.abandon(&cfg, ts_of(2), &mut out, &mut stats);
    assert_eq!(pairs(&out), vec![(Some("/1"), Some(&b"one"[..]))]);
    assert!(out[0].anomalies.is_empty(), "{:?}", anomalies(&out[0]));
    assert_eq!(stats.requests, 4);
    assert_eq!(stats.transactions, 1);
    assert_eq!(stats.paired, 1);
    assert_eq!(stats.shed_unanswered, 3);
    assert!(
        stats.anomalies_by_kind.is_empty(),
        "{:?}",
        stats.anomalies_by_kind
    );
    assert_eq!(conn.shared.pending_bytes, 0);
    // Nothing more once ended, either way.
    conn.close(&cfg, ts_of(3), &mut out, &mut stats);
    conn.abandon(&cfg, ts_of(3), &mut out, &mut stats);
    assert_eq!(out.len(), 1);

    // Closed instead (FIN, timeout): the same bytes give four transactions, three of
    // them incomplete, and nothing counted as shed.
    let (mut conn, mut out, mut stats) = (HttpConn::new(), Vec::new(), HttpStats::default());
    feed(&mut conn, &mut out, &mut stats);
    conn.close(&cfg, ts_of(2), &mut out, &mut stats);
    assert_eq!(out.len(), 4, "{:?}", pairs(&out));
    assert_eq!(stats.shed_unanswered, 0);
    assert!(
        stats
            .anomalies_by_kind
            .contains_key("request-without-response")
    );
    assert!(stats.anomalies_by_kind.contains_key("truncated-body"));
}

/// A message parked in the pairing queue takes the box the last one taken out left, and a
/// thread keeps at most `PARKED_BOXES` spare boxes, emptied.
#[test]
fn a_parked_message_takes_the_box_the_last_one_left() {
    let request = |target: &str| Request {
        method: "GET".into(),
        target: target.into(),
        ..Request::default()
    };
    let a = park(request("/a"));
    let first: *const Request = &*a;
    let back = unpark(a);
    assert_eq!(back.target, "/a");
    assert_eq!(back.method, "GET");
    let b = park(request("/b"));
    assert_eq!(&*b as *const Request, first, "the spare box was reused");
    assert_eq!(b.target, "/b");
    assert_eq!(unpark(b).target, "/b");
    let many: Vec<Box<Request>> = (0..PARKED_BOXES + 10)
        .map(|i| park(request(&format!("/{i}"))))
        .collect();
    for b in many {
        unpark(b);
    }
    let (spare, empty) = <Request as Parkable>::spare().with(|s| {
        let s = s.borrow();
        (s.len(), s.iter().all(|b| **b == Request::default()))
    });
    assert_eq!(spare, PARKED_BOXES);
    assert!(empty, "spare boxes hold no message");
}
