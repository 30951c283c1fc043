//! The harness of the `http` and `h2` fuzz targets: arbitrary bytes of both directions, cut
//! into arbitrary chunks with occasional gaps, into one `HttpConn`: must never panic, and
//! what it holds must stay within the configured caps (HTTP/1.x's, or HTTP/2's once the
//! connection is HTTP/2).
//!
//! Input layout: byte 0 picks how many control bytes follow (1..=16), whether bodies are
//! decoded (bit 7 clear) and whether responses are left coded for the caller (bit 6 set,
//! decoded by `Transaction::decode_deferred` as a scan would); the control bytes are
//! used in turn, one per call (bit 7: direction; low 7 bits: 0..=119 feed that many bytes
//! plus one, 120..=127 report a gap of 16..=128 bytes); the rest is the stream payload.

use shieldtap::capture::Timestamp;
use shieldtap::http::{Dir, HttpConfig, HttpConn, HttpStats, h2};

const MAX_HEAD: usize = 512;
const MAX_BODY: usize = 256;
const MAX_HEADERS: usize = 8;
const MAX_PENDING: usize = 4;
/// Small enough that a few kept bodies reach it.
const MAX_PENDING_BYTES: usize = 2048;
/// Per direction a buffer of at most the head cap (head, chunk-size line, trailers or a
/// resync line) and a body in flight; the pending queue (cap, plus one being answered and
/// one arriving) with a request and a response body each; the first bytes held while the
/// orientation is undecided.
const BOUND: usize = 2 * (MAX_HEAD + MAX_BODY) + (MAX_PENDING + 2) * 2 * MAX_BODY + 8;
/// Once the bytes turned out to be HTTP/2: per direction the resync hold, a header block,
/// a control frame and the HPACK table; per open stream two bodies and their fields.
const H2_BOUND: usize = 2
    * (h2::MAX_RESYNC_BYTES
        + MAX_HEAD
        + h2::MAX_CONTROL_PAYLOAD
        + h2::hpack::MAX_TABLE_BYTES as usize)
    + h2::MAX_STREAMS * (2 * MAX_BODY + 2 * 64 * (MAX_HEADERS + 1) + 512);

/// Runs one input through one connection; `preface` first sends an HTTP/2 client
/// preface, so that the rest is read as HTTP/2 frames.
pub fn run(data: &[u8], preface: bool) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(first % 16) + 1;
    let Some((controls, payload)) = rest.split_at_checked(n) else {
        return;
    };
    let cfg = HttpConfig {
        max_head_bytes: MAX_HEAD,
        max_headers: MAX_HEADERS,
        max_body_bytes: MAX_BODY,
        max_decoded_bytes: 4096,
        max_decompression_ratio: 50,
        max_pending_requests: MAX_PENDING,
        max_pending_bytes: MAX_PENDING_BYTES,
        decode_bodies: first & 0x80 == 0,
        defer_response_decoding: first & 0x40 != 0,
    };
    let mut conn = HttpConn::new();
    let mut out = Vec::new();
    let mut stats = HttpStats::default();
    if preface {
        conn.data(
            &cfg,
            Dir::ToServer,
            h2::PREFACE,
            Timestamp(0),
            &mut out,
            &mut stats,
        );
        assert!(conn.h2().is_some());
    }
    let mut pos = 0;
    // Bounded even when every control byte is a gap.
    for (step, &c) in controls
        .iter()
        .cycle()
        .enumerate()
        .take(payload.len() + 4 * n)
    {
        if pos >= payload.len() {
            break;
        }
        let dir = if c & 0x80 == 0 {
            Dir::ToServer
        } else {
            Dir::ToClient
        };
        let ts = Timestamp(step as u64 * 1_000);
        let v = usize::from(c & 0x7f);
        if v >= 120 {
            conn.gap(&cfg, dir, (v as u64 - 119) * 16, ts, &mut out, &mut stats);
        } else {
            let end = (pos + v + 1).min(payload.len());
            conn.data(&cfg, dir, &payload[pos..end], ts, &mut out, &mut stats);
            pos = end;
        }
        let bound = if conn.h2().is_some() { H2_BOUND } else { BOUND };
        assert!(
            conn.buffered_bytes() <= bound,
            "{} > {bound}",
            conn.buffered_bytes()
        );
        check(&cfg, &mut out, &mut stats);
        out.clear();
    }
    conn.close(&cfg, Timestamp(u64::MAX), &mut out, &mut stats);
    check(&cfg, &mut out, &mut stats);
    assert_eq!(conn.buffered_bytes(), 0);
    assert!(conn.opaque() || stats.transactions >= out.len() as u64);
}

/// Settles any response left coded (as a scan would), then checks the caps.
fn check(cfg: &HttpConfig, out: &mut [shieldtap::http::Transaction], stats: &mut HttpStats) {
    for t in out {
        t.decode_deferred(cfg, stats);
        for body in [
            t.request.as_ref().map(|r| &r.body),
            t.response.as_ref().map(|r| &r.body),
        ]
        .into_iter()
        .flatten()
        {
            assert!(body.data.len() <= MAX_BODY);
            assert!(body.trailers.len() <= MAX_HEADERS);
        }
        for headers in [
            t.request.as_ref().map(|r| &r.headers),
            t.response.as_ref().map(|r| &r.headers),
        ]
        .into_iter()
        .flatten()
        {
            assert!(headers.len() <= MAX_HEADERS);
        }
    }
}
