//! Message bodies: framing headers, chunk-size lines and content decoding.
//!
//! Input: the header fields of a parsed head, chunk-size lines as they arrive, and a
//! complete (or cut) body as kept by the parser. Output: the framing the head asks for
//! (Content-Length, Transfer-Encoding), the content codings to undo, and decoded bytes.
//! Owns nothing between calls. Limits: at most [`MAX_CODINGS`] stacked codings are undone;
//! decoding stops at the smallest of `max_body_bytes`, `max_decoded_bytes` and
//! `max_decompression_ratio` × input length, whichever the body reaches first, so a
//! decompression bomb costs at most that much memory and work. Failure modes: malformed
//! lengths and chunk lines are reported to the caller (which flags and resyncs); a body
//! that does not decode is reported as failed and the caller keeps the raw bytes.
//!
//! The workers share a memo of recent decodings ([`decode_memoized`], a [`Shared`] memo
//! made by [`decode_memo`] and handed to each worker's thread by [`set_decode_memo`]): an
//! API compresses the same page the same way for every client, so
//! a body met again, byte for byte with the same codings, cut and limits, gets the bytes
//! decoded the first time instead of being inflated again. Decoding is a pure function of
//! those, so nothing downstream changes. On the realistic bench capture, 89.7% of the
//! first 100,000 bodies decoded are bytes decoded before (10,324 distinct), and inflating
//! was 7% of all cycles.
//!
//! The workers that scan responses have the parser leave an HTTP/1.x response's codings
//! ([`super::Body::coded`], [`super::HttpConfig::defer_response_decoding`]): the memo of
//! response scans finds a compressed answer by its bytes as sent, and only the bodies it
//! has not met are decoded ([`decode_deferred`], or by the scan on a miss), with the same
//! outcome recorded ([`apply_decoded`]) as when the parser decodes.

use std::borrow::Cow;
use std::cell::RefCell;
use std::io::Read;
use std::sync::Arc;

use super::{Headers, HttpConfig};
use crate::budget::Usage;
use crate::memo::{Identity, Key, Shared};

/// Most content codings undone on one body (`gzip, br` is two). Deeper stacks are only
/// seen from attackers multiplying decode work, so they count as unknown.
pub(crate) const MAX_CODINGS: usize = 4;

/// Most significant hex digits in a chunk size (u64).
const MAX_CHUNK_DIGITS: usize = 16;

/// Input buffer of the brotli reader (its window buffer is sized by the stream itself).
const BROTLI_BUFFER: usize = 4096;

/// A content (or non-chunked transfer) coding this module can undo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Coding {
    Gzip,
    Deflate,
    Br,
}

/// The codings applied to a body, in the order they were applied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Codings {
    list: [Option<Coding>; MAX_CODINGS],
    len: usize,
    /// A coding we cannot undo (or too many) was listed: the body stays as sent.
    pub unknown: bool,
}

impl Codings {
    fn push(&mut self, c: Coding) {
        match self.list.get_mut(self.len) {
            Some(slot) => {
                *slot = Some(c);
                self.len += 1;
            }
            None => self.unknown = true,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0 && !self.unknown
    }

    /// Codings in application order (undo from the back).
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = Coding> + '_ {
        self.list.iter().take(self.len).flatten().copied()
    }

    /// Adds a comma-separated coding list (`gzip, br`); `identity` is a no-op.
    fn add_list(&mut self, value: &[u8]) {
        for token in value.split(|&b| b == b',') {
            let token = token.trim_ascii();
            if token.is_empty() || token.eq_ignore_ascii_case(b"identity") {
                continue;
            }
            if token.eq_ignore_ascii_case(b"gzip") || token.eq_ignore_ascii_case(b"x-gzip") {
                self.push(Coding::Gzip);
            } else if token.eq_ignore_ascii_case(b"deflate") {
                self.push(Coding::Deflate);
            } else if token.eq_ignore_ascii_case(b"br") {
                self.push(Coding::Br);
            } else {
                self.unknown = true;
            }
        }
    }
}

/// What the Content-Length fields of a head say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ContentLength {
    Absent,
    Valid(u64),
    /// Several values that disagree; the first one is kept.
    Differing(u64),
    /// Not a decimal number that fits in u64.
    Invalid,
}

/// What the Transfer-Encoding fields of a head say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TransferEncoding {
    Absent,
    /// `chunked` is the final coding.
    Chunked,
    /// Present, but `chunked` is not the final coding: the length is unknown.
    NotChunked,
}

/// Framing-relevant header fields of one head.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FramingHeaders {
    pub content_length: ContentLength,
    pub transfer_encoding: TransferEncoding,
    /// Content-Encoding codings, then non-chunked transfer codings.
    pub codings: Codings,
}

/// Reads Content-Length, Transfer-Encoding and Content-Encoding from `headers`.
pub(crate) fn framing_headers(headers: &Headers) -> FramingHeaders {
    let mut cl = ContentLength::Absent;
    let mut content = Codings::default();
    let mut transfer = Codings::default();
    let mut te_seen = false;
    let mut te_last_chunked = false;
    for h in headers {
        // Told apart by length first: most headers are none of the three.
        let name = h.name;
        if !matches!(name.len(), 14 | 16 | 17) {
            continue;
        }
        if name.is("content-length") {
            for part in h.value.split(|&b| b == b',') {
                cl = merge_length(cl, parse_decimal(part.trim_ascii()));
            }
        } else if name.is("transfer-encoding") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.is_empty() {
                    continue;
                }
                if te_seen && te_last_chunked {
                    // Something after `chunked`: chunked was applied and then more, or twice.
                    transfer.unknown = true;
                }
                te_seen = true;
                te_last_chunked = token.eq_ignore_ascii_case(b"chunked");
                if !te_last_chunked {
                    transfer.add_list(token);
                }
            }
        } else if name.is("content-encoding") {
            content.add_list(h.value);
        }
    }
    for c in transfer.iter() {
        content.push(c);
    }
    content.unknown |= transfer.unknown;
    let transfer_encoding = match (te_seen, te_last_chunked) {
        (false, _) => TransferEncoding::Absent,
        (true, true) => TransferEncoding::Chunked,
        (true, false) => TransferEncoding::NotChunked,
    };
    FramingHeaders {
        content_length: cl,
        transfer_encoding,
        codings: content,
    }
}

fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

fn merge_length(so_far: ContentLength, next: Option<u64>) -> ContentLength {
    match (so_far, next) {
        (ContentLength::Invalid, _) | (_, None) => ContentLength::Invalid,
        (ContentLength::Absent, Some(n)) => ContentLength::Valid(n),
        (ContentLength::Valid(a), Some(b)) if a == b => ContentLength::Valid(a),
        (ContentLength::Valid(a) | ContentLength::Differing(a), Some(_)) => {
            ContentLength::Differing(a)
        }
    }
}

/// Size from a chunk-size line (without its `\n`; a trailing `\r` is allowed): hex digits,
/// optional spaces or tabs, then nothing or `;` and extensions. `None` when malformed.
pub(crate) fn chunk_size(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let (hex, rest) = line.split_at_checked(digits)?;
    // Leading zeros are legal; only significant digits can overflow.
    let significant = hex.iter().skip_while(|&&b| b == b'0').count();
    if hex.is_empty() || significant > MAX_CHUNK_DIGITS {
        return None;
    }
    let size = hex.iter().try_fold(0u64, |acc, &b| {
        let v = char::from(b).to_digit(16)?;
        acc.checked_mul(16)?.checked_add(u64::from(v))
    })?;
    let rest = rest.trim_ascii_start();
    match rest.first() {
        None | Some(b';') => Some(size),
        Some(_) => None,
    }
}

/// Which limit stopped decoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DecodeLimit {
    /// `max_body_bytes`: kept data is full.
    Body,
    /// `max_decoded_bytes`.
    Decoded,
    /// `max_decompression_ratio` × input length.
    Ratio,
}

impl DecodeLimit {
    /// Name in `HttpStats::cap_hits`.
    pub fn cap_name(self) -> &'static str {
        match self {
            DecodeLimit::Body => "body",
            DecodeLimit::Decoded => "decoded",
            DecodeLimit::Ratio => "ratio",
        }
    }
}

/// A decoded body, possibly cut short by a limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Decoded {
    pub data: Vec<u8>,
    pub limit: Option<DecodeLimit>,
}

/// The body did not decode (corrupt, or wrong coding named).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DecodeFailed;

/// What undoing a body's codings gave, without the bytes: the decoded length and the limit
/// that stopped it, or the failure. What a memo of work done on the decoded bytes keeps,
/// to settle a body met again as decoding it would ([`apply_decoded`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DecodedSummary(Result<(usize, Option<DecodeLimit>), DecodeFailed>);

impl DecodedSummary {
    pub(crate) fn of(outcome: &Result<Decoded, DecodeFailed>) -> DecodedSummary {
        DecodedSummary(
            outcome
                .as_ref()
                .map(|d| (d.data.len(), d.limit))
                .map_err(|e| *e),
        )
    }
}

/// Records a decoding's outcome on its body, its transaction's anomalies and the stats,
/// as the parser does for a body it decodes (the body's bytes are the caller's to swap).
pub(crate) fn apply_decoded(
    s: DecodedSummary,
    memoized: bool,
    body: &mut super::Body,
    anomalies: &mut super::AnomalySet,
    stats: &mut super::HttpStats,
) {
    use super::Anomaly;
    stats.body_decodes += 1;
    stats.body_decodes_memoized += u64::from(memoized);
    match s.0 {
        Ok((len, limit)) => {
            stats.body_bytes_decoded += len as u64;
            body.decoded = true;
            if let Some(limit) = limit {
                body.truncated = true;
                *stats.cap_hits.entry(limit.cap_name()).or_default() += 1;
                anomalies.insert(match limit {
                    DecodeLimit::Body => Anomaly::BodyCap,
                    DecodeLimit::Decoded | DecodeLimit::Ratio => Anomaly::DecodeCap,
                });
            }
        }
        Err(DecodeFailed) => anomalies.insert(Anomaly::DecodeFailed),
    }
}

/// Undoes `codings` on a body's kept bytes (through this thread's memo): the decoded
/// bytes replace them, and the outcome is recorded ([`apply_decoded`]).
pub(crate) fn decode_into(
    body: &mut super::Body,
    codings: &Codings,
    anomalies: &mut super::AnomalySet,
    cfg: &HttpConfig,
    stats: &mut super::HttpStats,
) {
    let (decoded, memoized) = decode_memoized(&body.data, codings, cfg, body.truncated);
    settle_decoded(body, decoded, memoized, anomalies, stats);
}

/// Puts a decoding of the body's kept bytes on the body: the decoded bytes replace them
/// (kept as sent when decoding failed), and the outcome is recorded ([`apply_decoded`]).
pub(crate) fn settle_decoded(
    body: &mut super::Body,
    decoded: Result<Decoded, DecodeFailed>,
    memoized: bool,
    anomalies: &mut super::AnomalySet,
    stats: &mut super::HttpStats,
) {
    let summary = DecodedSummary::of(&decoded);
    if let Ok(d) = decoded {
        crate::http::recycle_body(std::mem::replace(&mut body.data, d.data));
    }
    apply_decoded(summary, memoized, body, anomalies, stats);
}

/// Settles a body whose decoding the parser deferred ([`super::Body::coded`]): decodes it
/// now, as the parser would have. Nothing to do for other bodies.
pub(crate) fn decode_deferred(
    body: &mut super::Body,
    anomalies: &mut super::AnomalySet,
    cfg: &HttpConfig,
    stats: &mut super::HttpStats,
) {
    if let Some(c) = body.coded.take() {
        decode_into(body, &c, anomalies, cfg, stats);
    }
}

/// Largest encoded body the memo keeps.
const MEMO_MAX_BODY: usize = 16 * 1024;
/// Bytes of the memo's limit per slot (an encoded body and what it decodes to).
const MEMO_BYTES_PER_SLOT: usize = 1024;
/// Placement seed (fixed: see [`crate::memo`]).
const MEMO_SEED: u64 = 0x6465_636f_6465_6d6f;
/// Entries told apart by a keyed digest (see [`crate::memo`]) rather than a copy of the
/// encoded body: a quarter of an entry's bytes on the realistic capture, where the share
/// then holds 3,582 decodings rather than 2,599 and 73,475 of 108,155 decodings are
/// answered from it rather than 69,880.
const MEMO_IDENTITY: Identity = Identity::Digest;
/// The share of the memo's bytes that keeps bodies met once (see [`crate::memo`]).
const MEMO_WINDOW_PERMILLE: usize = 0;

/// A memo of decodings, shared by the workers of a pipeline.
pub(crate) type DecodeMemo = Shared<Result<Decoded, DecodeFailed>>;

/// This thread's memo of decodings, and whether the thread reports its usage.
struct ThreadMemo {
    memo: Arc<DecodeMemo>,
    reports: bool,
}

thread_local! {
    /// This thread's memo of decodings (none until [`set_decode_memo`]).
    static MEMO: RefCell<ThreadMemo> = RefCell::new(ThreadMemo {
        memo: decode_memo(0, 1),
        reports: true,
    });
}

/// A memo of decodings for `threads` threads holding at most `limit` bytes in all (none
/// at all when 0).
pub(crate) fn decode_memo(limit: usize, threads: usize) -> Arc<DecodeMemo> {
    Arc::new(Shared::new(
        threads,
        limit,
        MEMO_BYTES_PER_SLOT,
        MEMO_MAX_BODY,
        MEMO_SEED,
        MEMO_IDENTITY,
        MEMO_WINDOW_PERMILLE,
    ))
}

/// Gives this thread `memo` to answer its decodings from (a worker, as it starts: each
/// worker of a pipeline gets the same one); `reports`: [`decode_memo_usage`] on this
/// thread gives its usage (one of the threads sharing it does), else nothing.
pub(crate) fn set_decode_memo(memo: Arc<DecodeMemo>, reports: bool) {
    MEMO.with(|m| *m.borrow_mut() = ThreadMemo { memo, reports });
}

/// Forgets the decodings this thread's memo keeps (as in a new run).
pub fn forget_decodes() {
    MEMO.with(|m| m.borrow().memo.clear());
}

/// What this thread's memo of decodings holds now and has given up, if this thread
/// reports it.
pub fn decode_memo_usage() -> Usage {
    MEMO.with(|m| {
        let m = m.borrow();
        if m.reports {
            m.memo.usage()
        } else {
            Usage::default()
        }
    })
}

/// What a decoding depends on besides the input (the codings, the cut and the limits), as
/// bytes: the head of a memo key for work done on the decoded bytes.
pub(crate) type DecodeHead = [u8; 2 + MAX_CODINGS + 4 + 8 + 8];

/// The [`DecodeHead`] of a decoding.
pub(crate) fn decode_key_head(codings: &Codings, cfg: &HttpConfig, input_cut: bool) -> DecodeHead {
    let mut head = [0u8; 2 + MAX_CODINGS + 4 + 8 + 8];
    head[0] = u8::from(input_cut);
    head[1] = codings.len as u8;
    for (slot, c) in head[2..2 + MAX_CODINGS].iter_mut().zip(codings.iter()) {
        *slot = c as u8 + 1;
    }
    let limits = &mut head[2 + MAX_CODINGS..];
    limits[..4].copy_from_slice(&cfg.max_decompression_ratio.to_le_bytes());
    limits[4..12].copy_from_slice(&(cfg.max_decoded_bytes as u64).to_le_bytes());
    limits[12..].copy_from_slice(&(cfg.max_body_bytes as u64).to_le_bytes());
    head
}

/// [`decode`], answered from this thread's memo when the same input was decoded before
/// with the same codings, cut and limits; true when it was.
pub(crate) fn decode_memoized(
    input: &[u8],
    codings: &Codings,
    cfg: &HttpConfig,
    input_cut: bool,
) -> (Result<Decoded, DecodeFailed>, bool) {
    let head = decode_key_head(codings, cfg, input_cut);
    let k = Key {
        head: &head,
        body: input,
    };
    // A hit is copied into a body buffer this thread used before.
    let copy = |kept: &Result<Decoded, DecodeFailed>| match kept {
        Ok(d) => {
            let mut data = crate::http::body_buffer();
            data.extend_from_slice(&d.data);
            Ok(Decoded {
                data,
                limit: d.limit,
            })
        }
        Err(e) => Err(*e),
    };
    let miss = match MEMO.with(|m| m.borrow().memo.get_with(k, copy)) {
        Ok(hit) => return (hit, true),
        Err(miss) => miss,
    };
    let outcome = decode(input, codings, cfg, input_cut);
    // A copy is kept (allocated to its length: decoding grows its buffer by doubling).
    let bytes = outcome.as_ref().map_or(0, |d| d.data.len());
    MEMO.with(|m| m.borrow().memo.offer(miss, k, bytes, || outcome.clone()));
    (outcome, false)
}

/// Undoes `codings` (listed in application order) on `input`. `input_cut` says the body
/// is known to be incomplete, so running out of input mid-stream is expected: the bytes
/// decoded up to there are kept.
pub(crate) fn decode(
    input: &[u8],
    codings: &Codings,
    cfg: &HttpConfig,
    input_cut: bool,
) -> Result<Decoded, DecodeFailed> {
    let ratio_budget = u64::try_from(input.len())
        .unwrap_or(u64::MAX)
        .saturating_mul(u64::from(cfg.max_decompression_ratio));
    let limits = [
        (ratio_budget, DecodeLimit::Ratio),
        (
            u64::try_from(cfg.max_decoded_bytes).unwrap_or(u64::MAX),
            DecodeLimit::Decoded,
        ),
        (
            u64::try_from(cfg.max_body_bytes).unwrap_or(u64::MAX),
            DecodeLimit::Body,
        ),
    ];
    let (limit, limit_kind) = limits
        .into_iter()
        .min_by_key(|(n, _)| *n)
        .unwrap_or((0, DecodeLimit::Body));
    let mut current: Cow<'_, [u8]> = Cow::Borrowed(input);
    let mut cut = input_cut;
    let mut hit = None;
    for coding in codings.iter().rev() {
        let (mut out, result) = run(coding, &current, limit);
        if u64::try_from(out.len()).unwrap_or(u64::MAX) > limit {
            out.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            hit = Some(limit_kind);
            cut = true;
        } else if result.is_err() && (!cut || out.is_empty()) {
            // A cut body may end mid-stream; anything else must decode cleanly.
            return Err(DecodeFailed);
        }
        current = Cow::Owned(out);
    }
    Ok(Decoded {
        data: current.into_owned(),
        limit: hit,
    })
}

/// One decoding stage, reading at most `limit + 1` bytes so the caller can tell the
/// limit was reached. Bytes decoded before an error are returned with it.
fn run(coding: Coding, input: &[u8], limit: u64) -> (Vec<u8>, std::io::Result<usize>) {
    let cap = limit.saturating_add(1);
    let mut out = Vec::with_capacity(
        input
            .len()
            .saturating_mul(4)
            .min(usize::try_from(cap).unwrap_or(usize::MAX)),
    );
    let result = match coding {
        Coding::Gzip => gunzip(input, cap, &mut out),
        Coding::Deflate => {
            // "deflate" should be zlib-wrapped (RFC 9110), but servers also send raw
            // deflate; try zlib when the header checks out and fall back to raw.
            let zlib = zlib_header(input).then(|| {
                flate2::bufread::ZlibDecoder::new(input)
                    .take(cap)
                    .read_to_end(&mut out)
            });
            match zlib {
                Some(Ok(n)) => Ok(n),
                Some(Err(e)) if !out.is_empty() => Err(e),
                _ => {
                    out.clear();
                    flate2::bufread::DeflateDecoder::new(input)
                        .take(cap)
                        .read_to_end(&mut out)
                }
            }
        }
        Coding::Br => brotli_decompressor::Decompressor::new(input, BROTLI_BUFFER)
            .take(cap)
            .read_to_end(&mut out),
    };
    (out, result)
}

/// A gzip decoder over an owned copy of its input, kept per thread.
type Gunzip = flate2::bufread::GzDecoder<std::io::Cursor<Vec<u8>>>;

/// Input kept in a thread's [`Gunzip`] between bodies (a larger one is let go).
const GUNZIP_KEEP: usize = 64 * 1024;

thread_local! {
    /// This thread's gzip decoder, reset for each body: making one zero-fills its inflate
    /// state (about 15,000 instructions, more than inflating a typical response), a reset
    /// clears a few fields.
    static GUNZIP: RefCell<Option<Gunzip>> = const { RefCell::new(None) };
}

/// What `MultiGzDecoder::new(input).take(cap).read_to_end(out)` gives (the bytes, and an
/// error after them), from this thread's reused decoder (see [`Members`]).
fn gunzip(input: &[u8], cap: u64, out: &mut Vec<u8>) -> std::io::Result<usize> {
    use std::io::Cursor;
    GUNZIP.with(|cell| {
        let Ok(mut slot) = cell.try_borrow_mut() else {
            return flate2::bufread::MultiGzDecoder::new(input)
                .take(cap)
                .read_to_end(out);
        };
        let dec =
            slot.get_or_insert_with(|| flate2::bufread::GzDecoder::new(Cursor::new(Vec::new())));
        // The last body's copy, refilled with this one.
        let mut copy = dec.reset(Cursor::new(Vec::new())).into_inner();
        copy.clear();
        copy.extend_from_slice(input);
        dec.reset(Cursor::new(copy));
        let result = Members(&mut *dec).take(cap).read_to_end(out);
        if dec.get_ref().get_ref().capacity() > GUNZIP_KEEP {
            dec.reset(Cursor::new(Vec::new()));
        }
        result
    })
}

/// The members of a gzip body read one after another, as `MultiGzDecoder` reads them: when
/// a member ends and input remains, the decoder is reset onto the rest for the next one,
/// within the same read (so a caller's reads split the output where they did before).
struct Members<'a>(&'a mut Gunzip);

impl Read for Members<'_> {
    fn read(&mut self, into: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let n = self.0.read(into)?;
            if n > 0 || into.is_empty() {
                return Ok(n);
            }
            let rest = self.0.get_ref();
            if rest.position() >= rest.get_ref().len() as u64 {
                return Ok(0);
            }
            let rest = self.0.reset(std::io::Cursor::new(Vec::new()));
            self.0.reset(rest);
        }
    }
}

/// A zlib header: deflate method, window ≤ 32 KiB, and the check bits (RFC 1950).
fn zlib_header(b: &[u8]) -> bool {
    match b {
        [cmf, flg, ..] => {
            cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn header(name: &str, value: &str) -> (String, String) {
        (name.to_owned(), value.to_owned())
    }

    fn codings(list: &[Coding]) -> Codings {
        let mut c = Codings::default();
        for &x in list {
            c.push(x);
        }
        c
    }

    pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    const JSON: &[u8] = br#"{"id":42,"name":"alice","roles":["admin","dev"],"active":true}"#;

    #[test]
    fn chunk_size_lines() {
        assert_eq!(chunk_size(b"1a\r"), Some(26));
        assert_eq!(chunk_size(b"1A"), Some(26));
        assert_eq!(chunk_size(b"0\r"), Some(0));
        assert_eq!(chunk_size(b"10;name=value;x\r"), Some(16));
        assert_eq!(chunk_size(b"10 ;ext\r"), Some(16));
        assert_eq!(chunk_size(b"0000000000000000000ff\r"), Some(255));
        assert_eq!(chunk_size(b"ffffffffffffffff\r"), Some(u64::MAX));
        assert_eq!(chunk_size(b"10000000000000000\r"), None);
        assert_eq!(chunk_size(b"\r"), None);
        assert_eq!(chunk_size(b"zz\r"), None);
        assert_eq!(chunk_size(b"12 34\r"), None);
        assert_eq!(chunk_size(b"GET / HTTP/1.1\r"), None);
        assert_eq!(chunk_size(b"-1\r"), None);
    }

    #[test]
    fn content_length_forms() {
        let f = |vals: &[&str]| {
            let hs: Headers = vals.iter().map(|v| header("Content-Length", v)).collect();
            framing_headers(&hs).content_length
        };
        assert_eq!(f(&[]), ContentLength::Absent);
        assert_eq!(f(&["42"]), ContentLength::Valid(42));
        assert_eq!(f(&["42", "42"]), ContentLength::Valid(42));
        assert_eq!(f(&["42, 42"]), ContentLength::Valid(42));
        assert_eq!(f(&["42", "43"]), ContentLength::Differing(42));
        assert_eq!(f(&["+42"]), ContentLength::Invalid);
        assert_eq!(f(&["4 2"]), ContentLength::Invalid);
        assert_eq!(f(&[""]), ContentLength::Invalid);
        assert_eq!(f(&["99999999999999999999999"]), ContentLength::Invalid);
        assert_eq!(f(&["42", "x"]), ContentLength::Invalid);
    }

    #[test]
    fn transfer_and_content_codings() {
        let fh = framing_headers(&crate::http::Headers::from_iter([(
            "Transfer-Encoding",
            "chunked",
        )]));
        assert_eq!(fh.transfer_encoding, TransferEncoding::Chunked);
        assert!(fh.codings.is_empty());

        let fh = framing_headers(&crate::http::Headers::from_iter([(
            "transfer-encoding",
            "gzip, Chunked",
        )]));
        assert_eq!(fh.transfer_encoding, TransferEncoding::Chunked);
        assert_eq!(fh.codings.iter().collect::<Vec<_>>(), vec![Coding::Gzip]);

        let fh = framing_headers(&crate::http::Headers::from_iter([(
            "Transfer-Encoding",
            "chunked, gzip",
        )]));
        assert_eq!(fh.transfer_encoding, TransferEncoding::NotChunked);
        assert!(fh.codings.unknown);

        let fh = framing_headers(&crate::http::Headers::from_iter([
            ("Content-Encoding", "gzip, br"),
            ("Content-Encoding", "identity"),
        ]));
        assert_eq!(fh.transfer_encoding, TransferEncoding::Absent);
        assert_eq!(
            fh.codings.iter().collect::<Vec<_>>(),
            vec![Coding::Gzip, Coding::Br]
        );
        assert!(!fh.codings.unknown);

        let fh = framing_headers(&crate::http::Headers::from_iter([(
            "Content-Encoding",
            "zstd",
        )]));
        assert!(fh.codings.unknown);
        let fh = framing_headers(&crate::http::Headers::from_iter([(
            "Content-Encoding",
            "gzip,gzip,gzip,gzip,gzip",
        )]));
        assert!(fh.codings.unknown, "more than MAX_CODINGS stacked");
    }

    /// `MultiGzDecoder` on a fresh decoder, as bodies were decoded before the reused one.
    fn gunzip_fresh(input: &[u8], cap: u64) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        let r = flate2::bufread::MultiGzDecoder::new(input)
            .take(cap)
            .read_to_end(&mut out);
        (out, r.is_err())
    }

    fn gunzip_reused(input: &[u8], cap: u64) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        let r = gunzip(input, cap, &mut out);
        (out, r.is_err())
    }

    fn member(data: &[u8], named: bool) -> Vec<u8> {
        let mut b = flate2::GzBuilder::new();
        if named {
            b = b.filename("body.json").comment("c").extra(vec![1, 2, 3]);
        }
        let mut e = b.write(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    proptest::proptest! {
        /// The reused decoder gives what a fresh `MultiGzDecoder` gave, bytes and failure
        /// alike, for one to three members (with and without optional header fields), cut
        /// short, with a byte changed, with bytes after the last member, under any cap;
        /// and keeps nothing of one body into the next (each case decodes a second body on
        /// the same thread after the first).
        #[test]
        fn reused_gzip_decoder_decodes_as_a_fresh_one(
            parts in proptest::collection::vec(
                (proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3000), proptest::prelude::any::<bool>()),
                1..4,
            ),
            repeat in 0usize..4,
            cut in proptest::option::of(proptest::prelude::any::<proptest::sample::Index>()),
            flip in proptest::option::of(proptest::prelude::any::<(proptest::sample::Index, u8)>()),
            trailer in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3),
            cap in 1u64..10_000,
        ) {
            let mut body = Vec::new();
            for (data, named) in &parts {
                // Repeated text compresses: long matches across the window, as in JSON.
                let data: Vec<u8> = data.iter().copied().cycle().take(data.len() * (repeat + 1)).collect();
                body.extend(member(&data, *named));
            }
            body.extend(&trailer);
            if let Some((at, x)) = flip {
                let i = at.index(body.len());
                body[i] ^= x.max(1);
            }
            if let Some(at) = cut {
                body.truncate(at.index(body.len() + 1));
            }
            let other = member(b"{\"id\":1}", false);
            for input in [&body[..], &other[..], &body[..]] {
                proptest::prop_assert_eq!(gunzip_reused(input, cap), gunzip_fresh(input, cap));
                proptest::prop_assert_eq!(gunzip_reused(input, u64::MAX), gunzip_fresh(input, u64::MAX));
            }
        }
    }

    #[test]
    fn gzip_deflate_raw_deflate_decode() {
        let cfg = HttpConfig::default();
        let d = decode(&gzip(JSON), &codings(&[Coding::Gzip]), &cfg, false).unwrap();
        assert_eq!(d.data, JSON);
        assert_eq!(d.limit, None);

        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(JSON).unwrap();
        let d = decode(
            &z.finish().unwrap(),
            &codings(&[Coding::Deflate]),
            &cfg,
            false,
        )
        .unwrap();
        assert_eq!(d.data, JSON);

        let mut r = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        r.write_all(JSON).unwrap();
        let d = decode(
            &r.finish().unwrap(),
            &codings(&[Coding::Deflate]),
            &cfg,
            false,
        )
        .unwrap();
        assert_eq!(d.data, JSON);
    }

    #[test]
    fn corrupt_and_cut_input() {
        let cfg = HttpConfig::default();
        assert_eq!(
            decode(b"not gzip at all", &codings(&[Coding::Gzip]), &cfg, false).unwrap_err(),
            DecodeFailed
        );
        let big: Vec<u8> = (0..20_000u32)
            .flat_map(|i| i.to_string().into_bytes())
            .collect();
        let z = gzip(&big);
        let half = &z[..z.len() / 2];
        assert!(decode(half, &codings(&[Coding::Gzip]), &cfg, false).is_err());
        let d = decode(half, &codings(&[Coding::Gzip]), &cfg, true).unwrap();
        assert!(!d.data.is_empty() && big.starts_with(&d.data));
    }

    /// The memo gives what decoding gives, for the same bytes, codings, cut and limits
    /// only: a body is kept the second time it is met and answered from the third.
    #[test]
    fn the_memo_gives_what_decoding_gives() {
        set_decode_memo(decode_memo(8 << 20, 1), true);
        let default = HttpConfig::default();
        let ratio = HttpConfig {
            max_decompression_ratio: 10,
            ..Default::default()
        };
        let gz = codings(&[Coding::Gzip]);
        let br_gz = codings(&[Coding::Br, Coding::Gzip]);
        let page = gzip(JSON);
        let mut corrupt = page.clone();
        let mid = corrupt.len() / 2;
        corrupt[mid] ^= 0x5a;
        let bomb = gzip(&vec![0u8; 200_000]);
        let cases: [(&[u8], &Codings, &HttpConfig, bool); 7] = [
            (&page, &gz, &default, false),
            // The same bytes cut, under other limits, or named with other codings.
            (&page, &gz, &default, true),
            (&page, &gz, &ratio, false),
            (&page, &br_gz, &default, false),
            (&page[..page.len() - 12], &gz, &default, true),
            (&corrupt, &gz, &default, false),
            (&bomb, &gz, &ratio, false),
        ];
        for round in 0..3 {
            for (i, (input, c, cfg, cut)) in cases.iter().enumerate() {
                let (got, hit) = decode_memoized(input, c, cfg, *cut);
                assert_eq!(got, decode(input, c, cfg, *cut), "case {i}, round {round}");
                assert_eq!(hit, round == 2, "case {i}, round {round}");
            }
        }
        assert!(decode(&corrupt, &gz, &default, false).is_err());
        assert_eq!(
            decode(&bomb, &gz, &ratio, false).map(|d| d.limit),
            Ok(Some(DecodeLimit::Ratio))
        );
        let u = decode_memo_usage();
        assert_eq!(u.entries, cases.len() as u64, "{u:?}");
        assert!(u.bytes > 200_000 / 10 && u.bytes <= u.limit, "{u:?}");

        forget_decodes();
        assert_eq!(decode_memo_usage().entries, 0);
        assert!(!decode_memoized(&page, &gz, &default, false).1);

        // Off: nothing is kept, and decoding still works.
        set_decode_memo(decode_memo(0, 1), true);
        for _ in 0..3 {
            let (got, hit) = decode_memoized(&page, &gz, &default, false);
            assert!(!hit);
            assert_eq!(got.map(|d| d.data), Ok(JSON.to_vec()));
        }
        assert_eq!(decode_memo_usage(), Usage::default());
    }

    /// Threads sharing a memo (the workers of a pipeline) are answered from what the
    /// others kept, with what decoding gives; one of them reports the usage.
    #[test]
    fn threads_share_a_memo() {
        let memo = decode_memo(8 << 20, 2);
        let gz = codings(&[Coding::Gzip]);
        let cfg = HttpConfig::default();
        let pages: Vec<Vec<u8>> = (0..50)
            .map(|i| gzip(format!(r#"{{"page":{i},"items":["lamp","desk"]}}"#).as_bytes()))
            .collect();
        let first = {
            let (memo, pages) = (Arc::clone(&memo), pages.clone());
            std::thread::spawn(move || {
                set_decode_memo(memo, true);
                // Met twice: kept.
                for p in pages.iter().chain(&pages) {
                    assert!(!decode_memoized(p, &gz, &HttpConfig::default(), false).1);
                }
                decode_memo_usage()
            })
            .join()
            .expect("the first thread finishes")
        };
        assert_eq!(first.entries, 50, "{first:?}");
        set_decode_memo(Arc::clone(&memo), false);
        for p in &pages {
            let (got, hit) = decode_memoized(p, &gz, &cfg, false);
            assert!(hit);
            assert_eq!(got, decode(p, &gz, &cfg, false));
        }
        assert_eq!(
            decode_memo_usage(),
            Usage::default(),
            "not this thread's to report"
        );
        assert_eq!(memo.usage(), first);
        set_decode_memo(decode_memo(0, 1), true);
    }

    #[test]
    fn limits_pick_the_smallest() {
        let zeros = vec![0u8; 200_000];
        let z = gzip(&zeros);
        let cfg = HttpConfig {
            max_decompression_ratio: 10,
            ..Default::default()
        };
        let d = decode(&z, &codings(&[Coding::Gzip]), &cfg, false).unwrap();
        assert_eq!(d.limit, Some(DecodeLimit::Ratio));
        assert_eq!(d.data.len(), z.len() * 10);

        let cfg = HttpConfig {
            max_decompression_ratio: 10_000,
            max_decoded_bytes: 1000,
            ..Default::default()
        };
        let d = decode(&z, &codings(&[Coding::Gzip]), &cfg, false).unwrap();
        assert_eq!(d.limit, Some(DecodeLimit::Decoded));
        assert_eq!(d.data.len(), 1000);

        let cfg = HttpConfig {
            max_decompression_ratio: 10_000,
            max_body_bytes: 500,
            ..Default::default()
        };
        let d = decode(&z, &codings(&[Coding::Gzip]), &cfg, false).unwrap();
        assert_eq!(d.limit, Some(DecodeLimit::Body));
        assert_eq!(d.data.len(), 500);
    }

    #[test]
    fn zlib_header_check() {
        assert!(zlib_header(&[0x78, 0x9c]));
        assert!(zlib_header(&[0x78, 0x01]));
        assert!(!zlib_header(&[0x78, 0x9d]));
        assert!(!zlib_header(&[0x1f, 0x8b]));
        assert!(!zlib_header(&[0x78]));
    }
}
