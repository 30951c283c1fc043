//! Length-prefixed messages (gRPC over HTTP/2, "Length-Prefixed-Message"): a flag byte
//! (bit 0: compressed with the stream's `grpc-encoding`), a 4-byte big-endian length, the
//! payload. Decoded into one normalised buffer of uncompressed messages.

use std::io::Read;

/// Default of `[grpc] max_messages`.
pub(super) const DEFAULT_MAX_MESSAGES: usize = 4096;

/// Bytes of a message's prefix.
const PREFIX: usize = 5;

/// The caps of one body's decoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    /// Most decoded (decompressed) payload bytes kept per body, as `[http]
    /// max_decoded_body_bytes`.
    pub max_decoded_bytes: usize,
    /// Most decoded bytes per byte of body, as `[http] max_decompression_ratio`: a small
    /// compressed body can only cost this many times its size.
    pub max_decompression_ratio: u32,
    /// Most messages decoded per body.
    pub max_messages: usize,
}

impl Default for Caps {
    fn default() -> Self {
        Caps {
            max_decoded_bytes: 1024 * 1024,
            max_decompression_ratio: 100,
            max_messages: DEFAULT_MAX_MESSAGES,
        }
    }
}

/// Why a body's messages were not all decoded (a bounded label set for counters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum GrpcError {
    /// A flag byte other than 0 or 1: not gRPC framing (or lost sync); the rest is left.
    BadPrefix,
    /// A compressed message with no `grpc-encoding`, or one this module cannot undo
    /// (snappy, zstd...): the message is skipped.
    UnknownEncoding,
    /// A compressed message that does not decompress: skipped.
    DecompressionFailed,
    /// Decompressing reached `max_decoded_bytes` or `max_decompression_ratio`: the output
    /// stops there.
    DecompressionCap,
    /// More than `max_messages` messages: the rest of the body is left.
    TooManyMessages,
}

impl GrpcError {
    /// Every label, for registering counters.
    pub const ALL: [GrpcError; 5] = [
        GrpcError::BadPrefix,
        GrpcError::UnknownEncoding,
        GrpcError::DecompressionFailed,
        GrpcError::DecompressionCap,
        GrpcError::TooManyMessages,
    ];

    /// The counter label.
    pub fn as_str(self) -> &'static str {
        match self {
            GrpcError::BadPrefix => "bad-prefix",
            GrpcError::UnknownEncoding => "unknown-encoding",
            GrpcError::DecompressionFailed => "decompression-failed",
            GrpcError::DecompressionCap => "decompression-cap",
            GrpcError::TooManyMessages => "too-many-messages",
        }
    }
}

impl std::fmt::Display for GrpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The messages of one body, normalised.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Messages {
    /// Each message as flag 0, its u32 big-endian length and its decompressed payload (a
    /// message cut by the end of the body or a cap: the part that arrived): one format
    /// for consumers, walked by [`messages`].
    pub data: Vec<u8>,
    /// Messages in `data`.
    pub count: u32,
    /// Of those, how many arrived compressed.
    pub compressed: u32,
    /// Messages left out (unknown encoding, failed decompression).
    pub skipped: u32,
    /// The body ended inside a message or its prefix, or a cap stopped decoding.
    pub truncated: bool,
    /// The first thing that went wrong, if any.
    pub error: Option<GrpcError>,
}

/// The codings a compressed message can carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
    /// gRPC's `deflate` is zlib-wrapped (as Java's Deflater writes it); raw deflate is
    /// accepted too, as for HTTP bodies.
    Deflate,
}

fn encoding(value: Option<&[u8]>) -> Option<Encoding> {
    let v = value?.trim_ascii();
    if v.eq_ignore_ascii_case(b"gzip") {
        Some(Encoding::Gzip)
    } else if v.eq_ignore_ascii_case(b"deflate") {
        Some(Encoding::Deflate)
    } else if v.eq_ignore_ascii_case(b"identity") {
        Some(Encoding::Identity)
    } else {
        None
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

/// Decompresses `input` onto `out`, reading at most `limit + 1` bytes so a cap hit is
/// seen. `Err` when nothing sensible came out; bytes before a mid-stream error are kept.
fn inflate(enc: Encoding, input: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), ()> {
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    let start = out.len();
    let result = match enc {
        Encoding::Identity => {
            let n = input.len().min(limit.saturating_add(1));
            out.extend_from_slice(&input[..n]);
            Ok(n)
        }
        Encoding::Gzip => flate2::bufread::MultiGzDecoder::new(input)
            .take(cap)
            .read_to_end(out),
        Encoding::Deflate if zlib_header(input) => flate2::bufread::ZlibDecoder::new(input)
            .take(cap)
            .read_to_end(out),
        Encoding::Deflate => flate2::bufread::DeflateDecoder::new(input)
            .take(cap)
            .read_to_end(out),
    };
    match result {
        Ok(_) => Ok(()),
        Err(_) if out.len() > start => Ok(()),
        Err(_) => Err(()),
    }
}

/// Decodes the length-prefixed messages of one direction of a gRPC stream. `body` is the
/// stream's DATA bytes as kept (a cut body is fine: its last message is kept as far as it
/// arrived), `grpc_encoding` the stream's `grpc-encoding` header value.
pub fn decode_messages(body: &[u8], grpc_encoding: Option<&[u8]>, caps: &Caps) -> Messages {
    let mut out = Messages::default();
    let enc = encoding(grpc_encoding);
    let ratio_budget = body
        .len()
        .saturating_mul(usize::try_from(caps.max_decompression_ratio).unwrap_or(usize::MAX));
    // Decoded payload bytes allowed in all: the smaller cap wins, as for HTTP bodies.
    let budget = caps.max_decoded_bytes.min(ratio_budget);
    let mut decoded = 0usize;
    let mut rest = body;
    while !rest.is_empty() {
        let Some((head, after)) = rest.split_first_chunk::<PREFIX>() else {
            out.truncated = true;
            break;
        };
        let [flag, l0, l1, l2, l3] = *head;
        if flag > 1 {
            out.error.get_or_insert(GrpcError::BadPrefix);
            out.truncated = true;
            break;
        }
        if usize::try_from(out.count.saturating_add(out.skipped)).unwrap_or(usize::MAX)
            >= caps.max_messages
        {
            out.error.get_or_insert(GrpcError::TooManyMessages);
            out.truncated = true;
            break;
        }
        let len = usize::try_from(u32::from_be_bytes([l0, l1, l2, l3])).unwrap_or(usize::MAX);
        let (payload, next) = if len <= after.len() {
            after.split_at(len)
        } else {
            out.truncated = true;
            (after, &after[after.len()..])
        };
        rest = next;
        let left = budget - decoded;
        let at = out.data.len();
        out.data.extend_from_slice(&[0; PREFIX]);
        if flag == 0 {
            let n = payload.len().min(left);
            out.data.extend_from_slice(&payload[..n]);
            if n < payload.len() {
                out.truncated = true;
            }
        } else {
            let Some(enc) = enc else {
                out.data.truncate(at);
                out.error.get_or_insert(GrpcError::UnknownEncoding);
                out.skipped = out.skipped.saturating_add(1);
                continue;
            };
            if inflate(enc, payload, left, &mut out.data).is_err() {
                out.data.truncate(at);
                out.error.get_or_insert(GrpcError::DecompressionFailed);
                out.skipped = out.skipped.saturating_add(1);
                continue;
            }
            out.compressed += 1;
            if out.data.len() - at - PREFIX > left {
                out.data.truncate(at + PREFIX + left);
                out.error.get_or_insert(GrpcError::DecompressionCap);
                out.truncated = true;
            }
        }
        let n = out.data.len() - at - PREFIX;
        decoded += n;
        // `n` ≤ a u32 length or ≤ `budget`; a budget past 4 GiB is cut to fit the prefix.
        let n32 = u32::try_from(n).unwrap_or(u32::MAX);
        out.data.truncate(at + PREFIX + n32 as usize);
        out.data[at + 1..at + PREFIX].copy_from_slice(&n32.to_be_bytes());
        out.count = out.count.saturating_add(1);
        if decoded >= budget && !rest.is_empty() {
            // Nothing more can be kept: the rest of the body is not decoded.
            out.truncated = true;
            if flag == 1 {
                out.error.get_or_insert(GrpcError::DecompressionCap);
            }
            break;
        }
    }
    out
}

/// The payloads of a normalised buffer ([`Messages::data`]), in order. Stops at the first
/// prefix that does not fit, so any bytes are safe to pass.
pub fn messages(data: &[u8]) -> impl Iterator<Item = &[u8]> + '_ {
    let mut rest = data;
    std::iter::from_fn(move || {
        let (head, after) = rest.split_first_chunk::<PREFIX>()?;
        let [_, l0, l1, l2, l3] = *head;
        let len = usize::try_from(u32::from_be_bytes([l0, l1, l2, l3])).ok()?;
        if len > after.len() {
            rest = &[];
            return None;
        }
        let (payload, next) = after.split_at(len);
        rest = next;
        Some(payload)
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn frame(flag: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![flag];
        v.extend_from_slice(&u32::try_from(payload.len()).expect("small").to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    fn gzip(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b).expect("in memory");
        e.finish().expect("in memory")
    }

    #[test]
    fn plain_messages_pass_through_and_iterate() {
        let mut body = frame(0, b"one");
        body.extend(frame(0, b""));
        body.extend(frame(0, b"three"));
        let m = decode_messages(&body, None, &Caps::default());
        assert_eq!(m.data, body);
        assert_eq!(
            (m.count, m.compressed, m.truncated, m.error),
            (3, 0, false, None)
        );
        assert_eq!(
            messages(&m.data).collect::<Vec<_>>(),
            [&b"one"[..], b"", b"three"]
        );
    }

    #[test]
    fn cut_body_keeps_the_part_that_arrived() {
        let mut body = frame(0, b"whole");
        body.extend(frame(0, b"partial message"));
        let cut = &body[..body.len() - 8];
        let m = decode_messages(cut, None, &Caps::default());
        assert!(m.truncated);
        assert_eq!(m.error, None);
        assert_eq!(
            messages(&m.data).collect::<Vec<_>>(),
            [&b"whole"[..], b"partial"]
        );
        // Cut inside the next prefix: the complete messages stand.
        let m = decode_messages(
            &body[..frame(0, b"whole").len() + 3],
            None,
            &Caps::default(),
        );
        assert!(m.truncated);
        assert_eq!(m.count, 1);
    }

    #[test]
    fn compressed_messages_are_decompressed_and_unknown_ones_skipped() {
        let body = [frame(1, &gzip(b"hello")), frame(0, b"plain")].concat();
        let m = decode_messages(&body, Some(b"gzip"), &Caps::default());
        assert_eq!(
            messages(&m.data).collect::<Vec<_>>(),
            [&b"hello"[..], b"plain"]
        );
        assert_eq!((m.count, m.compressed, m.error), (2, 1, None));

        let m = decode_messages(&body, Some(b"snappy"), &Caps::default());
        assert_eq!(messages(&m.data).collect::<Vec<_>>(), [&b"plain"[..]]);
        assert_eq!((m.skipped, m.error), (1, Some(GrpcError::UnknownEncoding)));
        let m = decode_messages(&body, None, &Caps::default());
        assert_eq!(m.error, Some(GrpcError::UnknownEncoding));

        let bad = [frame(1, b"not gzip at all"), frame(0, b"after")].concat();
        let m = decode_messages(&bad, Some(b"gzip"), &Caps::default());
        assert_eq!(messages(&m.data).collect::<Vec<_>>(), [&b"after"[..]]);
        assert_eq!(m.error, Some(GrpcError::DecompressionFailed));

        let m = decode_messages(&frame(1, b"as is"), Some(b"identity"), &Caps::default());
        assert_eq!(messages(&m.data).collect::<Vec<_>>(), [&b"as is"[..]]);
    }

    #[test]
    fn bad_flag_and_message_cap() {
        let body = [frame(0, b"a"), frame(2, b"b"), frame(0, b"c")].concat();
        let m = decode_messages(&body, None, &Caps::default());
        assert_eq!((m.count, m.error), (1, Some(GrpcError::BadPrefix)));
        let body: Vec<u8> = (0..10).flat_map(|_| frame(0, b"x")).collect();
        let caps = Caps {
            max_messages: 4,
            ..Caps::default()
        };
        let m = decode_messages(&body, None, &caps);
        assert_eq!((m.count, m.error), (4, Some(GrpcError::TooManyMessages)));
        assert!(m.truncated);
    }

    #[test]
    fn decoded_bytes_are_capped() {
        let body = frame(1, &gzip(&[b'z'; 100_000]));
        let caps = Caps {
            max_decoded_bytes: 1000,
            max_decompression_ratio: 1_000_000,
            ..Caps::default()
        };
        let m = decode_messages(&body, Some(b"gzip"), &caps);
        assert_eq!(m.error, Some(GrpcError::DecompressionCap));
        assert_eq!(
            messages(&m.data).map(<[u8]>::len).collect::<Vec<_>>(),
            [1000]
        );
        // The ratio: 100 × a ~150-byte body.
        let m = decode_messages(&body, Some(b"gzip"), &Caps::default());
        assert_eq!(m.error, Some(GrpcError::DecompressionCap));
        assert_eq!(m.data.len() - PREFIX, body.len() * 100);
    }

    fn fixture(name: &str) -> Vec<u8> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/grpc")
            .join(name);
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn framed_fixtures_decode_to_the_payloads_the_script_framed() {
        let exp: serde_json::Value =
            serde_json::from_slice(&fixture("expected.json")).expect("json");
        let framed = exp["framed"].as_array().expect("framed");
        assert!(framed.iter().any(|f| f["encoding"] == "gzip"));
        assert!(framed.iter().any(|f| f["encoding"] == "deflate"));
        for f in framed {
            let file = f["file"].as_str().expect("file");
            let body = fixture(file);
            let enc = f["encoding"].as_str().map(str::as_bytes);
            let m = decode_messages(&body, enc, &Caps::default());
            let want: Vec<Vec<u8>> = f["payloads"]
                .as_array()
                .expect("payloads")
                .iter()
                .map(|p| fixture(p.as_str().expect("name")))
                .collect();
            assert_eq!(messages(&m.data).collect::<Vec<_>>(), want, "{file}");
            assert_eq!(u64::from(m.count), want.len() as u64, "{file}");
            assert_eq!(
                Some(u64::from(m.compressed)),
                f["compressed"].as_u64(),
                "{file}"
            );
            assert_eq!((m.truncated, m.error), (false, None), "{file}");
        }
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_cap_with_bounded_output() {
        let exp: serde_json::Value =
            serde_json::from_slice(&fixture("expected.json")).expect("json");
        let body = fixture(exp["bomb"]["file"].as_str().expect("file"));
        let inflated = exp["bomb"]["decompressed_bytes"].as_u64().expect("size");
        assert!(inflated > 1000 * body.len() as u64);
        let caps = Caps::default();
        let started = std::time::Instant::now();
        let m = decode_messages(&body, Some(b"gzip"), &caps);
        assert_eq!(m.error, Some(GrpcError::DecompressionCap));
        assert!(m.truncated);
        // The smaller of 1 MiB and 100 × the ~16 KiB body.
        let cap = caps
            .max_decoded_bytes
            .min(body.len() * caps.max_decompression_ratio as usize);
        assert_eq!(m.data.len(), PREFIX + cap);
        assert!(
            m.data.capacity() <= 2 * (PREFIX + cap) + 64 * 1024,
            "{}",
            m.data.capacity()
        );
        assert!(started.elapsed().as_secs() < 5);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
        #[test]
        fn arbitrary_bodies_decode_within_caps(
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..400),
            enc in proptest::sample::select(vec![None, Some("gzip"), Some("deflate"), Some("identity"), Some("zstd")]),
            max_messages in 1usize..8,
        ) {
            let caps = Caps { max_decoded_bytes: 256, max_decompression_ratio: 4, max_messages };
            let m = decode_messages(&body, enc.map(str::as_bytes), &caps);
            let payloads: Vec<&[u8]> = messages(&m.data).collect();
            proptest::prop_assert_eq!(payloads.len(), m.count as usize);
            proptest::prop_assert!(payloads.len() <= max_messages);
            let total: usize = payloads.iter().map(|p| p.len()).sum();
            proptest::prop_assert!(total <= 256 && total <= 4 * body.len());
            proptest::prop_assert_eq!(m.data.len(), total + PREFIX * payloads.len());
        }
    }
}
