//! TLS ClientHellos: the first bytes a client sent on a connection to its JA4 and JA3
//! fingerprints.
//!
//! Input: the start of the client-to-server byte stream of one TCP connection (any port),
//! as reassembled by [`crate::reassembly`] and buffered by the caller. Output: a
//! [`ClientHello`] (legacy version, cipher suites and extension types in wire order, SNI,
//! ALPN, signature algorithms, supported versions, groups, point formats), from which
//! [`ja4`] (FoxIO's JA4, TLS over TCP) and [`ja3`] (Salesforce's JA3 string and MD5) are
//! computed. Records, the handshake message and each extension are decoded by rusticata's
//! `tls-parser`; this module reassembles the ClientHello across TLS records (a client may
//! fragment it, and TCP may cut it anywhere) and owns nothing between calls: the caller
//! keeps the bytes and calls again with more. Limits: the ClientHello must end within the
//! first [`MAX_HELLO_BYTES`] bytes of the stream (record headers included), so a caller never
//! buffers more than that per connection; plaintext records are at most 2^14 bytes
//! (RFC 8446 5.1). Failure modes: [`client_hello`] answers `Ok(None)` while more bytes are
//! needed and a [`TlsError`] (with a stable metric label) when the stream is not TLS, does
//! not start with a ClientHello, is malformed, or would not end within the cap; hostile
//! input never panics and is never buffered beyond the cap.

use std::borrow::Cow;

use tls_parser::{
    TlsExtension, TlsRecordType, parse_tls_client_hello_extension, parse_tls_extension_unknown,
    parse_tls_handshake_client_hello, parse_tls_raw_record,
};

/// Cap on the stream bytes (TLS record headers included) a ClientHello must end within: a
/// caller buffers at most this much per connection before [`client_hello`] decides. Real
/// hellos are 200 bytes to 2 KiB (post-quantum key shares included); 16 KiB is one full
/// TLS record.
pub const MAX_HELLO_BYTES: usize = 16 * 1024;

/// Largest plaintext record fragment (RFC 8446 5.1: 2^14 bytes).
const MAX_RECORD_PAYLOAD: usize = 1 << 14;
/// TLS record header: type, version (2), length (2).
const RECORD_HEADER: usize = 5;
/// Handshake message header: type, length (3).
const HANDSHAKE_HEADER: usize = 4;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;

const EXT_SERVER_NAME: u16 = 0x0000;
const EXT_SUPPORTED_GROUPS: u16 = 0x000a;
const EXT_EC_POINT_FORMATS: u16 = 0x000b;
const EXT_SIGNATURE_ALGORITHMS: u16 = 0x000d;
const EXT_ALPN: u16 = 0x0010;
const EXT_SUPPORTED_VERSIONS: u16 = 0x002b;

/// The first bytes a client sent on a connection look like a TLS handshake record (0x16,
/// 0x03, 0x00..=0x04). Needs at least these three bytes: shorter input answers `false`.
pub fn looks_like_tls(first: &[u8]) -> bool {
    matches!(first, [0x16, 0x03, 0x00..=0x04, ..])
}

/// A ClientHello's fields that fingerprints and records use. Lists keep the client's order
/// and its GREASE values (RFC 8701); the fingerprints drop GREASE.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// `legacy_version` of the ClientHello (0x0303 for TLS 1.2 and 1.3 clients).
    pub version: u16,
    pub ciphers: Vec<u16>,
    /// Extension types in wire order.
    pub extensions: Vec<u16>,
    /// The first host name of the server_name extension (lossy UTF-8: host names are ASCII).
    pub sni: Option<String>,
    /// ALPN protocol names in the client's order (lossy UTF-8).
    pub alpn: Vec<String>,
    pub signature_algorithms: Vec<u16>,
    pub supported_versions: Vec<u16>,
    /// supported_groups (named curves).
    pub groups: Vec<u16>,
    pub ec_point_formats: Vec<u8>,
    /// The first ALPN protocol name as sent: JA4 reads its first and last bytes, which the
    /// lossy text in `alpn` may have replaced. Empty without ALPN.
    pub alpn_first_raw: Vec<u8>,
}

/// Why a stream's first bytes gave no ClientHello. Plain data; [`TlsError::as_str`] is a
/// stable, bounded metric label.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsError {
    /// The stream does not start with a TLS handshake record.
    #[error("not TLS: the stream does not start with a handshake record")]
    NotTls,
    /// The first handshake message is not a ClientHello (type 1).
    #[error("the first handshake message has type {0}, not ClientHello")]
    NotClientHello(u8),
    /// A record of another content type arrived before the ClientHello was complete.
    #[error("record of content type {0} before the ClientHello was complete")]
    UnexpectedRecord(u8),
    /// A record longer than a plaintext record may be (2^14 bytes).
    #[error("record of {0} bytes, more than a plaintext record may hold")]
    RecordTooLong(usize),
    /// The ClientHello would not end within [`MAX_HELLO_BYTES`] of the stream.
    #[error("ClientHello does not end within {MAX_HELLO_BYTES} bytes (needs {0})")]
    TooLarge(usize),
    /// A length or field does not add up; names the part that failed.
    #[error("malformed ClientHello: {0}")]
    Malformed(&'static str),
}

impl TlsError {
    /// Stable label for metrics and anomaly counters.
    pub fn as_str(&self) -> &'static str {
        match self {
            TlsError::NotTls => "not_tls",
            TlsError::NotClientHello(_) => "not_client_hello",
            TlsError::UnexpectedRecord(_) => "unexpected_record",
            TlsError::RecordTooLong(_) => "record_too_long",
            TlsError::TooLarge(_) => "too_large",
            TlsError::Malformed(_) => "malformed",
        }
    }

    /// Every label [`TlsError::as_str`] can return (metric families exported from zero).
    pub const LABELS: &'static [&'static str] = &[
        "not_tls",
        "not_client_hello",
        "unexpected_record",
        "record_too_long",
        "too_large",
        "malformed",
    ];
}

/// Parses the ClientHello from the start of the client's byte stream (it may span several
/// TLS records and TCP segments: the handshake message is reassembled across records up to
/// [`MAX_HELLO_BYTES`]). `Ok(None)`: more bytes needed (never once `stream_start` holds
/// `MAX_HELLO_BYTES` or more). `Err`: not a ClientHello, malformed or too large.
pub fn client_hello(stream_start: &[u8]) -> Result<Option<ClientHello>, TlsError> {
    // Fewer than 3 bytes: decide on what is there.
    if stream_start.len() < 3 {
        let prefix_ok = match stream_start {
            [] => true,
            [a] => *a == 0x16,
            [a, b, ..] => *a == 0x16 && *b == 0x03,
        };
        return if prefix_ok {
            Ok(None)
        } else {
            Err(TlsError::NotTls)
        };
    }
    if !looks_like_tls(stream_start) {
        return Err(TlsError::NotTls);
    }
    // Bytes past the cap are never looked at: the hello must end within it.
    let window = &stream_start[..stream_start.len().min(MAX_HELLO_BYTES)];
    let mut rest = window;
    let mut message: Cow<'_, [u8]> = Cow::Borrowed(&[]);
    loop {
        let (after, record) = match parse_tls_raw_record(rest) {
            Ok(ok) => ok,
            Err(tls_parser::Err::Incomplete(_)) => break,
            // The record parser refuses only lengths above 2^14 + 256.
            Err(_) => return Err(TlsError::RecordTooLong(record_len(rest))),
        };
        if record.hdr.record_type != TlsRecordType::Handshake {
            return Err(TlsError::UnexpectedRecord(record.hdr.record_type.0));
        }
        if record.hdr.version.0 >> 8 != 0x03 {
            return Err(TlsError::Malformed("record version"));
        }
        if record.data.len() > MAX_RECORD_PAYLOAD {
            return Err(TlsError::RecordTooLong(record.data.len()));
        }
        // RFC 8446 5.1: handshake records are never empty; refusing them also bounds the
        // loop by the window's length.
        if record.data.is_empty() {
            return Err(TlsError::Malformed("empty handshake record"));
        }
        message = if message.is_empty() {
            Cow::Borrowed(record.data)
        } else {
            let mut joined = message.into_owned();
            joined.extend_from_slice(record.data);
            Cow::Owned(joined)
        };
        rest = after;
        if let Some(body) = hello_body(&message)? {
            return parse_hello(body).map(Some);
        }
    }
    // The next record is not complete yet: refuse what its header and the bytes so far
    // already rule out (another content type, an impossible length, another handshake
    // message, a hello too large for the cap), then ask for more or give up at the cap.
    if let Some(&kind) = rest.first()
        && kind != 0x16
    {
        return Err(TlsError::UnexpectedRecord(kind));
    }
    if let Some(&major) = rest.get(1)
        && major != 0x03
    {
        return Err(TlsError::Malformed("record version"));
    }
    if rest.len() >= RECORD_HEADER && record_len(rest) > MAX_RECORD_PAYLOAD {
        return Err(TlsError::RecordTooLong(record_len(rest)));
    }
    let partial = rest.get(RECORD_HEADER..).unwrap_or_default();
    let mut head = [0u8; HANDSHAKE_HEADER];
    let known = message.iter().chain(partial).take(HANDSHAKE_HEADER);
    let mut n = 0;
    for (slot, b) in head.iter_mut().zip(known) {
        *slot = *b;
        n += 1;
    }
    hello_body(&head[..n])?;
    if stream_start.len() >= MAX_HELLO_BYTES {
        return Err(TlsError::TooLarge(stream_start.len()));
    }
    Ok(None)
}

/// The declared length of the record at the start of `rest` (for the error).
fn record_len(rest: &[u8]) -> usize {
    match rest {
        [_, _, _, hi, lo, ..] => usize::from(u16::from_be_bytes([*hi, *lo])),
        _ => 0,
    }
}

/// The ClientHello body once the reassembled handshake bytes hold all of it; `None` while
/// more are needed. Refuses other handshake types and hellos that cannot end within the cap.
fn hello_body(message: &[u8]) -> Result<Option<&[u8]>, TlsError> {
    let Some(&kind) = message.first() else {
        return Ok(None);
    };
    if kind != HANDSHAKE_CLIENT_HELLO {
        return Err(TlsError::NotClientHello(kind));
    }
    let Some(&[_, a, b, c]) = message.first_chunk::<HANDSHAKE_HEADER>() else {
        return Ok(None);
    };
    let len = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
    // The fewest stream bytes that could carry it: one record header and the message.
    let needed = RECORD_HEADER + HANDSHAKE_HEADER + len;
    if needed > MAX_HELLO_BYTES {
        return Err(TlsError::TooLarge(needed));
    }
    Ok(message.get(HANDSHAKE_HEADER..HANDSHAKE_HEADER + len))
}

/// Decodes a complete ClientHello body (after the handshake header).
fn parse_hello(body: &[u8]) -> Result<ClientHello, TlsError> {
    let (rest, hello) =
        parse_tls_handshake_client_hello(body).map_err(|_| TlsError::Malformed("client hello"))?;
    // The extensions block is optional; a length that overruns the message leaves bytes
    // behind instead of an error in the crate.
    if !rest.is_empty() {
        return Err(TlsError::Malformed("extensions length"));
    }
    let mut out = ClientHello {
        version: hello.version.0,
        ciphers: hello.ciphers.iter().map(|c| c.0).collect(),
        ..ClientHello::default()
    };
    let mut rest = hello.ext.unwrap_or_default();
    while !rest.is_empty() {
        let (after, ext) =
            parse_tls_extension_unknown(rest).map_err(|_| TlsError::Malformed("extension"))?;
        let TlsExtension::Unknown(kind, _) = ext else {
            return Err(TlsError::Malformed("extension"));
        };
        let kind = kind.0;
        let raw = &rest[..rest.len() - after.len()];
        rest = after;
        let first = !out.extensions.contains(&kind);
        out.extensions.push(kind);
        if first {
            read_extension(kind, raw, &mut out)?;
        }
    }
    Ok(out)
}

/// Fills the fields of the extensions fingerprints read (the first of each type counts).
fn read_extension(kind: u16, raw: &[u8], out: &mut ClientHello) -> Result<(), TlsError> {
    let label = match kind {
        EXT_SERVER_NAME => "server_name",
        EXT_SUPPORTED_GROUPS => "supported_groups",
        EXT_EC_POINT_FORMATS => "ec_point_formats",
        EXT_SIGNATURE_ALGORITHMS => "signature_algorithms",
        EXT_ALPN => "alpn",
        EXT_SUPPORTED_VERSIONS => "supported_versions",
        _ => return Ok(()),
    };
    let (_, ext) = parse_tls_client_hello_extension(raw).map_err(|_| TlsError::Malformed(label))?;
    match ext {
        TlsExtension::SNI(names) => {
            out.sni = names
                .iter()
                .find(|(t, _)| t.0 == 0)
                .map(|(_, name)| String::from_utf8_lossy(name).into_owned());
        }
        TlsExtension::EllipticCurves(groups) => out.groups = groups.iter().map(|g| g.0).collect(),
        TlsExtension::EcPointFormats(formats) => out.ec_point_formats = formats.to_vec(),
        TlsExtension::SignatureAlgorithms(algs) => out.signature_algorithms = algs,
        TlsExtension::ALPN(names) => {
            out.alpn_first_raw = names.first().map(|n| n.to_vec()).unwrap_or_default();
            out.alpn = names
                .iter()
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .collect();
        }
        TlsExtension::SupportedVersions(versions) => {
            out.supported_versions = versions.iter().map(|v| v.0).collect();
        }
        _ => return Err(TlsError::Malformed(label)),
    }
    Ok(())
}

/// GREASE values (RFC 8701): 0x0A0A, 0x1A1A, ..., 0xFAFA.
pub fn is_grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && v >> 8 == v & 0xff
}

fn non_grease(values: &[u16]) -> impl Iterator<Item = u16> + '_ {
    values.iter().copied().filter(|v| !is_grease(*v))
}

/// JA4 (TLS over TCP), per FoxIO's technical_details/JA4.md: `t`, version, `d`/`i` for SNI,
/// cipher and extension counts, ALPN's first and last characters, then the truncated
/// SHA-256 of the sorted ciphers and of the sorted extensions (without SNI and ALPN) with
/// the signature algorithms in wire order. GREASE values are ignored everywhere.
pub fn ja4(h: &ClientHello) -> String {
    let version = non_grease(&h.supported_versions).max().unwrap_or(h.version);
    let version = match version {
        0x0304 => "13",
        0x0303 => "12",
        0x0302 => "11",
        0x0301 => "10",
        0x0300 => "s3",
        0x0002 => "s2",
        0xfeff => "d1",
        0xfefd => "d2",
        0xfefc => "d3",
        _ => "00",
    };
    let mut ciphers: Vec<u16> = non_grease(&h.ciphers).collect();
    let mut extensions: Vec<u16> = non_grease(&h.extensions).collect();
    let sni = if extensions.contains(&EXT_SERVER_NAME) {
        'd'
    } else {
        'i'
    };
    let (a, z) = alpn_ends(&h.alpn_first_raw);
    let mut out = format!(
        "t{version}{sni}{:02}{:02}{a}{z}_",
        ciphers.len().min(99),
        extensions.len().min(99)
    );
    ciphers.sort_unstable();
    out.push_str(&truncated_sha256(&hex_list(&ciphers)));
    out.push('_');
    extensions.retain(|e| *e != EXT_SERVER_NAME && *e != EXT_ALPN);
    extensions.sort_unstable();
    let mut text = hex_list(&extensions);
    let algs: Vec<u16> = non_grease(&h.signature_algorithms).collect();
    if !text.is_empty() && !algs.is_empty() {
        text.push('_');
        text.push_str(&hex_list(&algs));
    }
    out.push_str(&truncated_sha256(&text));
    out
}

/// ALPN's part of JA4: first and last byte of the first protocol name when both are ASCII
/// alphanumerics, else the first and last digit of its hex form; "00" when absent or empty.
fn alpn_ends(first: &[u8]) -> (char, char) {
    let (Some(&a), Some(&z)) = (first.first(), first.last()) else {
        return ('0', '0');
    };
    if a.is_ascii_alphanumeric() && z.is_ascii_alphanumeric() {
        (char::from(a), char::from(z))
    } else {
        (hex_digit(a >> 4), hex_digit(z & 0x0f))
    }
}

fn hex_digit(nibble: u8) -> char {
    char::from_digit(u32::from(nibble), 16).unwrap_or('0')
}

/// `0a0a,1301,...`: four lower-case hex digits each, comma separated.
fn hex_list(values: &[u16]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(values.len() * 5);
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        // Writing to a String cannot fail.
        let _ = write!(s, "{v:04x}");
    }
    s
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(hex_digit(b >> 4));
        s.push(hex_digit(b & 0x0f));
    }
    s
}

/// First 12 hex digits of SHA-256, or twelve zeros for an empty list (JA4's marker for "no
/// values", instead of the hash of nothing).
fn truncated_sha256(text: &str) -> String {
    if text.is_empty() {
        return "000000000000".to_owned();
    }
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    hex(digest.as_ref().get(..6).unwrap_or_default())
}

/// JA3: the string `version,ciphers,extensions,groups,point_formats` (decimal values joined
/// by `-`, GREASE removed) and its MD5 in lower-case hex.
pub fn ja3(h: &ClientHello) -> (String, String) {
    use md5::Digest as _;
    use std::fmt::Write as _;
    let mut s = String::with_capacity(256);
    let _ = write!(s, "{},", h.version);
    let join = |s: &mut String, values: &mut dyn Iterator<Item = u16>| {
        for (i, v) in values.enumerate() {
            if i > 0 {
                s.push('-');
            }
            let _ = write!(s, "{v}");
        }
    };
    join(&mut s, &mut non_grease(&h.ciphers));
    s.push(',');
    join(&mut s, &mut non_grease(&h.extensions));
    s.push(',');
    join(&mut s, &mut non_grease(&h.groups));
    s.push(',');
    join(
        &mut s,
        &mut h.ec_point_formats.iter().map(|&f| u16::from(f)),
    );
    let digest = md5::Md5::digest(s.as_bytes());
    let md5 = hex(&digest);
    (s, md5)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of FoxIO's JA4.md ("Example" and "Cipher hash"/"Extension hash"),
    /// with GREASE values added where Chrome puts them.
    fn spec_example() -> ClientHello {
        ClientHello {
            version: 0x0303,
            ciphers: vec![
                0x0a0a, 0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8,
                0xc013, 0xc014, 0x009c, 0x009d, 0x002f, 0x0035,
            ],
            extensions: vec![
                0x2a2a, 0x001b, 0x0000, 0x0033, 0x0010, 0x4469, 0x0017, 0x002d, 0x000d, 0x0005,
                0x0023, 0x0012, 0x002b, 0xff01, 0x000b, 0x000a, 0x0015, 0xfafa,
            ],
            sni: Some("example.com".into()),
            alpn: vec!["h2".into(), "http/1.1".into()],
            alpn_first_raw: b"h2".to_vec(),
            signature_algorithms: vec![
                0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601,
            ],
            supported_versions: vec![0x7a7a, 0x0304, 0x0303],
            groups: vec![0x4a4a, 0x001d, 0x0017, 0x0018],
            ec_point_formats: vec![0],
        }
    }

    #[test]
    fn spec_example_fingerprint() {
        assert_eq!(ja4(&spec_example()), "t13d1516h2_8daaf6152771_e5627efa2ab1");
    }

    #[test]
    fn spec_example_without_signature_algorithms() {
        let mut h = spec_example();
        h.signature_algorithms.clear();
        assert!(ja4(&h).ends_with("_6d807ffa2a79"), "{}", ja4(&h));
    }

    #[test]
    fn empty_lists_give_zeros() {
        let h = ClientHello {
            version: 0x0301,
            ..ClientHello::default()
        };
        assert_eq!(ja4(&h), "t10i000000_000000000000_000000000000");
        // Only SNI and ALPN: the sorted list is empty, signature algorithms or not.
        let h = ClientHello {
            version: 0x0303,
            ciphers: vec![0x002f],
            extensions: vec![0x0000, 0x0010],
            ..ClientHello::default()
        };
        assert!(ja4(&h).starts_with("t12d010200_"));
        assert!(ja4(&h).ends_with("_000000000000"));
    }

    #[test]
    fn alpn_characters_follow_the_spec_examples() {
        assert_eq!(alpn_ends(b""), ('0', '0'));
        assert_eq!(alpn_ends(b"h2"), ('h', '2'));
        assert_eq!(alpn_ends(b"http/1.1"), ('h', '1'));
        assert_eq!(alpn_ends(b"x"), ('x', 'x'));
        assert_eq!(alpn_ends(&[0xab]), ('a', 'b'));
        assert_eq!(alpn_ends(&[0xab, 0xcd]), ('a', 'd'));
        assert_eq!(alpn_ends(&[0x30, 0xab]), ('3', 'b'));
        assert_eq!(alpn_ends(&[0x30, 0x31, 0xab, 0xcd]), ('3', 'd'));
        assert_eq!(alpn_ends(&[0x30, 0xab, 0xcd, 0x31]), ('0', '1'));
    }

    #[test]
    fn counts_cap_at_99_and_unknown_versions_are_00() {
        let h = ClientHello {
            version: 0x7f1c,
            ciphers: (1..=150).collect(),
            extensions: (0x100..0x200).collect(),
            ..ClientHello::default()
        };
        assert!(ja4(&h).starts_with("t00i9999"), "{}", ja4(&h));
    }

    #[test]
    fn grease_is_exactly_rfc_8701() {
        let grease: Vec<u16> = (0..=0xffff).filter(|&v| is_grease(v)).collect();
        assert_eq!(grease.len(), 16);
        assert!(
            grease
                .iter()
                .all(|v| v & 0xff == 0x0a || v & 0xff == 0x1a || v & 0x0f == 0x0a)
        );
        assert!(!is_grease(0x1a2a));
    }

    #[test]
    fn ja3_drops_grease() {
        let (s, md5) = ja3(&spec_example());
        assert_eq!(
            s,
            "771,4865-4866-4867-49195-49199-49196-49200-52393-52392-49171-49172-156-157-47-53,\
             27-0-51-16-17513-23-45-13-5-35-18-43-65281-11-10-21,29-23-24,0"
        );
        assert_eq!(md5.len(), 32);
        assert!(
            md5.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
    }

    #[test]
    fn looks_like_tls_needs_a_handshake_record_header() {
        assert!(looks_like_tls(&[0x16, 0x03, 0x01, 0x02, 0x00]));
        assert!(looks_like_tls(&[0x16, 0x03, 0x04]));
        assert!(!looks_like_tls(&[0x16, 0x03, 0x05]));
        assert!(!looks_like_tls(&[0x17, 0x03, 0x03]));
        assert!(!looks_like_tls(b"GET / HTTP/1.1\r\n"));
        assert!(!looks_like_tls(&[0x16, 0x03]));
    }

    #[test]
    fn short_prefixes_wait_or_refuse() {
        assert_eq!(client_hello(&[]), Ok(None));
        assert_eq!(client_hello(&[0x16]), Ok(None));
        assert_eq!(client_hello(&[0x16, 0x03]), Ok(None));
        assert_eq!(client_hello(b"G"), Err(TlsError::NotTls));
        assert_eq!(client_hello(b"GET / HTTP/1.1\r\n"), Err(TlsError::NotTls));
        // A server's first flight is not a client hello.
        assert_eq!(
            client_hello(&[0x16, 0x03, 0x03, 0x00, 0x04, 0x02, 0x00, 0x00, 0x00]),
            Err(TlsError::NotClientHello(2))
        );
    }

    #[test]
    fn labels_cover_every_error() {
        for e in [
            TlsError::NotTls,
            TlsError::NotClientHello(2),
            TlsError::UnexpectedRecord(0x17),
            TlsError::RecordTooLong(20_000),
            TlsError::TooLarge(20_000),
            TlsError::Malformed("x"),
        ] {
            assert!(TlsError::LABELS.contains(&e.as_str()));
        }
    }
}
