//! TLS ClientHello fingerprints of real clients (`openssl s_client` TLS 1.3 and TLS 1.2,
//! curl, Python `ssl` with its defaults and with custom ciphers and ALPN), recorded by
//! `scripts/record_tls.py` into `tests/fixtures/tls/`: each capture goes through the crate's
//! own capture reader, decoder and TCP reassembly, and the client's first bytes through
//! `tls::client_hello`. JA3 must equal tshark's (`tls.handshake.ja3_full`,
//! `tls.handshake.ja3`: run here when tshark is installed, as required under `CI`; else the
//! values the script stored); JA4 must equal the script's independent Python JA4 computed
//! from tshark's dissection. Then partial input (every prefix of a real hello, the hello cut
//! into records of any size), hand-built edge cases real tools do not send (GREASE, the
//! JA4 spec's example, sent through tshark too), and hostile input (mutated real hellos,
//! arbitrary bytes, oversized lengths) that must end in `Err` within the cap, never a panic.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use proptest::prelude::*;
use serde_json::Value;
use shieldtap::capture::{self, Progress, Timestamp};
use shieldtap::decode::{DecodeConfig, Decoded, Decoder, LinkType};
use shieldtap::reassembly::{
    CloseReason, ConnInfo, Direction, FlowTable, ReassemblyConfig, StreamHandler,
};
use shieldtap::tls::{self, ClientHello, MAX_HELLO_BYTES, TlsError};

const CLIENTS: &[&str] = &[
    "openssl_tls13",
    "openssl_tls12",
    "curl",
    "python_default",
    "python_custom",
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls")
}

fn expected() -> BTreeMap<String, Value> {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).expect("expected.json");
    serde_json::from_str(&text).expect("expected.json is JSON")
}

/// Client-to-server bytes of each connection, in the chunks reassembly delivered them.
#[derive(Default)]
struct ClientBytes {
    conns: Vec<Vec<Vec<u8>>>,
}

impl StreamHandler for ClientBytes {
    type State = Vec<Vec<u8>>;

    fn open(&mut self, _: &ConnInfo) -> Self::State {
        Vec::new()
    }

    fn data(&mut self, s: &mut Self::State, _: &ConnInfo, d: Direction, b: &[u8], _: Timestamp) {
        if d == Direction::ClientToServer {
            s.push(b.to_vec());
        }
    }

    fn gap(&mut self, _: &mut Self::State, _: &ConnInfo, _: Direction, _: u64, _: Timestamp) {
        panic!("no gaps in the recorded TLS captures");
    }

    fn close(&mut self, s: Self::State, _: &ConnInfo, _: CloseReason, _: Timestamp) {
        self.conns.push(s);
    }
}

/// The client's byte stream of the capture's one connection, as reassembly delivers it.
fn client_chunks(name: &str) -> Vec<Vec<u8>> {
    let path = fixtures().join(format!("{name}.pcap"));
    let mut decoder = Decoder::new(DecodeConfig::default());
    let mut table: FlowTable<ClientBytes> = FlowTable::new(ReassemblyConfig::default());
    let mut handler = ClientBytes::default();
    let mut stats = capture::CaptureStats::default();
    capture::read_file(&path, &Progress::default(), &mut stats, &mut |f| {
        let Some(link) = LinkType::from_linktype(f.linktype) else {
            return;
        };
        if let Ok(Decoded::Tcp(seg)) = decoder.decode(link, f.data, f.ts) {
            table.process(&seg, f.ts, &mut handler);
        }
        table.advance(f.ts, &mut handler);
    })
    .unwrap_or_else(|e| panic!("reads {}: {e}", path.display()));
    table.flush_all(&mut handler);
    assert_eq!(handler.conns.len(), 1, "{name}: one connection");
    handler.conns.remove(0)
}

fn client_stream(name: &str) -> Vec<u8> {
    client_chunks(name).concat()
}

/// Feeds the stream chunk by chunk as a caller would (appending to its buffer) and returns
/// the first decision.
fn hello_of(name: &str) -> ClientHello {
    let mut buf = Vec::new();
    for chunk in client_chunks(name) {
        buf.extend_from_slice(&chunk);
        match tls::client_hello(&buf) {
            Ok(Some(h)) => return h,
            Ok(None) => {}
            Err(e) => panic!("{name}: {e}"),
        }
    }
    panic!("{name}: the stream ended before the ClientHello did");
}

/// Stream bytes up to the end of the ClientHello record(s) (each real hello is one record).
fn hello_record_len(stream: &[u8]) -> usize {
    5 + usize::from(u16::from_be_bytes([stream[3], stream[4]]))
}

fn tshark_available() -> bool {
    Command::new("tshark")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn need_tshark() -> bool {
    if tshark_available() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "tshark is required in CI (apt-get install -y tshark)"
    );
    eprintln!("note: tshark is not installed; comparing with the values stored by the script");
    false
}

/// tshark's JA3 (full string, MD5) of every ClientHello in `pcap`.
fn tshark_ja3(pcap: &Path, port: u16) -> Vec<(String, String)> {
    let o = Command::new("tshark")
        .args(["-r"])
        .arg(pcap)
        .args([
            "-d",
            &format!("tcp.port=={port},tls"),
            "-Y",
            "tls.handshake.type == 1",
            "-T",
            "fields",
            "-E",
            "separator=|",
            "-e",
            "tls.handshake.ja3_full",
            "-e",
            "tls.handshake.ja3",
        ])
        .output()
        .expect("runs tshark");
    assert!(
        o.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout)
        .expect("UTF-8")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (full, md5) = l.split_once('|').expect("two fields");
            (full.to_owned(), md5.to_owned())
        })
        .collect()
}

#[test]
fn real_clients_match_tshark_ja3_and_reference_ja4() {
    let expected = expected();
    let live = need_tshark();
    let mut ja3s = BTreeSet::new();
    let mut ja4s = BTreeSet::new();
    for &name in CLIENTS {
        let exp = &expected[name];
        let h = hello_of(name);
        let (ja3_full, ja3_md5) = tls::ja3(&h);
        let ja4 = tls::ja4(&h);
        let (ref_full, ref_md5) = if live {
            let mut v = tshark_ja3(&fixtures().join(format!("{name}.pcap")), 8443);
            assert_eq!(v.len(), 1, "{name}: tshark finds one ClientHello");
            v.remove(0)
        } else {
            (
                exp["ja3_full"].as_str().expect("ja3_full").to_owned(),
                exp["ja3"].as_str().expect("ja3").to_owned(),
            )
        };
        assert_eq!(ja3_full, ref_full, "{name}: JA3 string");
        assert_eq!(ja3_md5, ref_md5, "{name}: JA3 MD5");
        assert_eq!(ja4, exp["ja4"].as_str().expect("ja4"), "{name}: JA4");
        assert_eq!(h.sni.as_deref(), exp["sni"].as_str(), "{name}: SNI");
        let alpn: Vec<&str> = exp["alpn"]
            .as_array()
            .expect("alpn")
            .iter()
            .map(|v| v.as_str().expect("string"))
            .collect();
        assert_eq!(h.alpn, alpn, "{name}: ALPN");
        ja3s.insert(ja3_md5);
        ja4s.insert(ja4);
    }
    // Five client stacks, five fingerprints each way.
    assert_eq!(ja3s.len(), CLIENTS.len(), "{ja3s:?}");
    assert_eq!(ja4s.len(), CLIENTS.len(), "{ja4s:?}");
}

#[test]
fn every_prefix_of_a_real_hello_waits_then_gives_the_same_hello() {
    for &name in CLIENTS {
        let stream = client_stream(name);
        let whole = hello_of(name);
        let end = hello_record_len(&stream);
        assert!(end <= stream.len() && end < MAX_HELLO_BYTES);
        for cut in 0..end {
            assert_eq!(
                tls::client_hello(&stream[..cut]),
                Ok(None),
                "{name}: prefix of {cut} bytes"
            );
        }
        for cut in [end, end + 1, stream.len()] {
            let cut = cut.min(stream.len());
            assert_eq!(
                tls::client_hello(&stream[..cut]),
                Ok(Some(whole.clone())),
                "{name}: prefix of {cut} bytes"
            );
        }
    }
}

/// The handshake message of a real hello (record payload), to re-frame.
fn handshake_message(name: &str) -> Vec<u8> {
    let stream = client_stream(name);
    stream[5..hello_record_len(&stream)].to_vec()
}

/// `message` cut into handshake records of `size` bytes (the last one shorter).
fn records(message: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for part in message.chunks(size) {
        out.extend_from_slice(&[0x16, 0x03, 0x01]);
        out.extend_from_slice(&(part.len() as u16).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

#[test]
fn hello_fragmented_across_records_is_reassembled() {
    for &name in CLIENTS {
        let whole = hello_of(name);
        let message = handshake_message(name);
        for size in [1, 2, 3, 4, 5, 7, 64, 100, message.len() - 1] {
            let stream = records(&message, size);
            for cut in 0..stream.len() {
                assert_eq!(
                    tls::client_hello(&stream[..cut]),
                    Ok(None),
                    "{name}: records of {size}, prefix {cut}"
                );
            }
            assert_eq!(
                tls::client_hello(&stream),
                Ok(Some(whole.clone())),
                "{name}: records of {size}"
            );
        }
    }
}

#[test]
fn other_records_and_messages_before_the_hello_are_refused() {
    let message = handshake_message("curl");
    let mut stream = records(&message[..10], 10);
    // A ChangeCipherSpec record in the middle of the hello.
    let mut ccs = stream.clone();
    ccs.extend_from_slice(&[0x14, 0x03, 0x03, 0x00, 0x01, 0x01]);
    assert_eq!(
        tls::client_hello(&ccs),
        Err(TlsError::UnexpectedRecord(0x14))
    );
    // Its first byte is enough.
    stream.push(0x17);
    assert_eq!(
        tls::client_hello(&stream),
        Err(TlsError::UnexpectedRecord(0x17))
    );
    // An empty handshake record.
    let empty = [0x16, 0x03, 0x01, 0x00, 0x00, 0x16, 0x03, 0x01];
    assert_eq!(
        tls::client_hello(&empty),
        Err(TlsError::Malformed("empty handshake record"))
    );
    // A server hello, and a record longer than TLS allows.
    let mut server = records(&message, 4000);
    server[5] = 2;
    assert_eq!(tls::client_hello(&server), Err(TlsError::NotClientHello(2)));
    let long = [0x16, 0x03, 0x01, 0x48, 0x01, 0x01];
    assert!(matches!(
        tls::client_hello(&long),
        Err(TlsError::RecordTooLong(0x4801))
    ));
    // An HTTP request is not TLS.
    assert_eq!(
        tls::client_hello(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
        Err(TlsError::NotTls)
    );
}

#[test]
fn oversized_hellos_are_refused_at_the_cap() {
    // A declared length that cannot end within the cap: refused from its header on.
    let header = [0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00, 0x40, 0x00];
    assert!(matches!(
        tls::client_hello(&header),
        Err(TlsError::TooLarge(_))
    ));
    // A hello that fits one record but, cut into 1-byte records, needs six times the
    // stream bytes: waits until the cap, then refuses.
    let mut message = vec![0x01, 0x00, 0x0f, 0x00];
    message.resize(4 + 0x0f00, 0);
    let stream = records(&message, 1);
    assert!(stream.len() > MAX_HELLO_BYTES);
    assert_eq!(tls::client_hello(&stream[..MAX_HELLO_BYTES - 1]), Ok(None));
    assert!(matches!(
        tls::client_hello(&stream[..MAX_HELLO_BYTES]),
        Err(TlsError::TooLarge(_))
    ));
    assert!(matches!(
        tls::client_hello(&stream),
        Err(TlsError::TooLarge(_))
    ));
}

// ----------------------------------------------------------------------------------------
// Hand-built hellos: what real tools here do not send (GREASE, the spec's example).

struct Spec<'a> {
    ciphers: &'a [u16],
    extensions: &'a [u16],
    sni: &'a str,
    alpn: &'a [&'a [u8]],
    sigalgs: &'a [u16],
    versions: &'a [u16],
    groups: &'a [u16],
}

fn u16s(values: &[u16]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}

fn with_len16(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

fn with_len8(body: &[u8]) -> Vec<u8> {
    let mut v = vec![body.len() as u8];
    v.extend_from_slice(body);
    v
}

/// A ClientHello handshake message (header included) carrying `s`'s lists.
fn build_hello(s: &Spec) -> Vec<u8> {
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[0x42; 32]); // random
    body.extend_from_slice(&with_len8(&[0x17; 32])); // session id
    body.extend_from_slice(&with_len16(&u16s(s.ciphers)));
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    let mut exts = Vec::new();
    for &t in s.extensions {
        let data = match t {
            0x0000 => {
                let mut name = vec![0x00];
                name.extend_from_slice(&with_len16(s.sni.as_bytes()));
                with_len16(&name)
            }
            0x0010 => {
                let list: Vec<u8> = s.alpn.iter().flat_map(|p| with_len8(p)).collect();
                with_len16(&list)
            }
            0x000d => with_len16(&u16s(s.sigalgs)),
            0x002b => with_len8(&u16s(s.versions)),
            0x000a => with_len16(&u16s(s.groups)),
            0x000b => vec![0x01, 0x00],
            0x0033 => {
                let mut share = vec![0x00, 0x1d, 0x00, 0x20];
                share.extend_from_slice(&[7; 32]);
                with_len16(&share)
            }
            0x002d => vec![0x01, 0x01],
            0x0005 => vec![0x01, 0x00, 0x00, 0x00, 0x00],
            0x001b => vec![0x02, 0x00, 0x02],
            0x4469 => with_len16(&with_len8(b"h2")),
            0xff01 => vec![0x00],
            0x0015 => vec![0; 16],
            _ if tls::is_grease(t) => Vec::new(),
            _ => Vec::new(),
        };
        exts.extend_from_slice(&t.to_be_bytes());
        exts.extend_from_slice(&with_len16(&data));
    }
    body.extend_from_slice(&with_len16(&exts));
    let mut msg = vec![0x01];
    msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    msg.extend_from_slice(&body);
    msg
}

/// FoxIO JA4.md's example hello (its ciphers, extensions and signature algorithms in the
/// order given there), with GREASE where Chrome puts it.
fn spec_hello() -> Vec<u8> {
    build_hello(&Spec {
        ciphers: &[
            0x8a8a, 0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013,
            0xc014, 0x009c, 0x009d, 0x002f, 0x0035,
        ],
        extensions: &[
            0x3a3a, 0x001b, 0x0000, 0x0033, 0x0010, 0x4469, 0x0017, 0x002d, 0x000d, 0x0005, 0x0023,
            0x0012, 0x002b, 0xff01, 0x000b, 0x000a, 0x0015, 0xdada,
        ],
        sni: "example.com",
        alpn: &[b"h2", b"http/1.1"],
        sigalgs: &[
            0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601,
        ],
        versions: &[0xeaea, 0x0304, 0x0303],
        groups: &[0x6a6a, 0x001d, 0x0017, 0x0018],
    })
}

#[test]
fn spec_example_through_the_parser() {
    let h = tls::client_hello(&records(&spec_hello(), 16_000))
        .expect("parses")
        .expect("complete");
    assert_eq!(tls::ja4(&h), "t13d1516h2_8daaf6152771_e5627efa2ab1");
    assert_eq!(h.sni.as_deref(), Some("example.com"));
    assert_eq!(h.alpn, ["h2", "http/1.1"]);
    assert_eq!(h.supported_versions, [0xeaea, 0x0304, 0x0303]);
    assert_eq!(h.groups, [0x6a6a, 0x001d, 0x0017, 0x0018]);
    assert_eq!(h.ec_point_formats, [0]);
    assert_eq!(h.extensions.len(), 18);
}

#[test]
fn alpn_hex_rule_on_the_wire() {
    for (alpn, part) in [
        (&[0xab_u8][..], "ab"),
        (&[0xab, 0xcd], "ad"),
        (&[0x30, 0xab], "3b"),
        (&[0x30, 0x31, 0xab, 0xcd], "3d"),
        (&[0x30, 0xab, 0xcd, 0x31], "01"),
        (b"", "00"),
    ] {
        let msg = build_hello(&Spec {
            ciphers: &[0x1301],
            extensions: &[0x0010],
            sni: "",
            alpn: &[alpn],
            sigalgs: &[],
            versions: &[],
            groups: &[],
        });
        let h = tls::client_hello(&records(&msg, 500))
            .expect("parses")
            .expect("complete");
        assert_eq!(&tls::ja4(&h)[8..10], part, "{alpn:02x?}");
    }
}

/// One Ethernet/IPv4/TCP frame per payload (client 10.0.0.1:40000 → 10.0.0.2:443), as a
/// classic pcap file.
fn pcap_of(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4_u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes()); // Ethernet
    let builder = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .tcp(40000, 443, 1000, 65535)
        .psh()
        .ack(1);
    let mut frame = Vec::new();
    builder.write(&mut frame, payload).expect("frame");
    out.extend_from_slice(&1_767_225_600u32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    out.extend_from_slice(&frame);
    out
}

#[test]
fn grease_hello_matches_tshark_ja3() {
    let stream = records(&spec_hello(), 16_000);
    let h = tls::client_hello(&stream)
        .expect("parses")
        .expect("complete");
    let (full, md5) = tls::ja3(&h);
    // GREASE gone from ciphers, extensions and groups; everything else in wire order.
    assert_eq!(
        full,
        "771,4865-4866-4867-49195-49199-49196-49200-52393-52392-49171-49172-156-157-47-53,\
         27-0-51-16-17513-23-45-13-5-35-18-43-65281-11-10-21,29-23-24,0"
    );
    if !need_tshark() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pcap = dir.path().join("grease.pcap");
    std::fs::write(&pcap, pcap_of(&stream)).expect("write pcap");
    assert_eq!(tshark_ja3(&pcap, 443), vec![(full, md5)]);
}

// ----------------------------------------------------------------------------------------
// Hostile input.

/// Every real hello's stream start, for mutation (read once).
fn real_streams() -> &'static [Vec<u8>] {
    static STREAMS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    STREAMS.get_or_init(|| {
        CLIENTS
            .iter()
            .map(|n| {
                let s = client_stream(n);
                s[..hello_record_len(&s)].to_vec()
            })
            .collect()
    })
}

fn check_bounded(input: &[u8]) {
    let r = tls::client_hello(input);
    if input.len() >= MAX_HELLO_BYTES {
        assert_ne!(r, Ok(None), "must decide once the cap is reached");
    }
    if let Ok(Some(h)) = r {
        let (_, md5) = tls::ja3(&h);
        assert_eq!(md5.len(), 32);
        assert_eq!(tls::ja4(&h).len(), 36);
    }
}

#[test]
fn every_length_field_of_a_real_hello_truncated_or_inflated() {
    // Overwrite each 1- and 2-byte position of each real hello with lengths that
    // undercount, overcount and overflow: never a panic, always a decision or a wait.
    for stream in real_streams() {
        let stream = stream.clone();
        for pos in 0..stream.len() {
            for v in [0x00u8, 0x01, 0x02, 0x7f, 0x80, 0xfe, 0xff] {
                let mut m = stream.clone();
                m[pos] = v;
                check_bounded(&m);
                if pos + 1 < m.len() {
                    m[pos + 1] = v;
                    check_bounded(&m);
                }
            }
            check_bounded(&stream[..pos]);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_after_a_record_header(
        version in 0u8..=4,
        len in any::<u16>(),
        body in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let mut input = vec![0x16, 0x03, version];
        input.extend_from_slice(&len.to_be_bytes());
        input.extend_from_slice(&body);
        check_bounded(&input);
    }

    #[test]
    fn arbitrary_bytes(input in proptest::collection::vec(any::<u8>(), 0..512)) {
        check_bounded(&input);
    }

    #[test]
    fn mutated_real_hellos(
        which in 0usize..5,
        edits in proptest::collection::vec((any::<u16>(), any::<u8>()), 1..8),
        cut in any::<u16>(),
    ) {
        let streams = real_streams();
        let mut m = streams[which % streams.len()].clone();
        for (pos, v) in edits {
            let n = m.len();
            m[usize::from(pos) % n] = v;
        }
        let cut = usize::from(cut) % (m.len() + 1);
        check_bounded(&m[..cut]);
        check_bounded(&m);
    }

    #[test]
    fn big_streams_decide_at_the_cap(
        filler in any::<u8>(),
        extra in 0usize..4096,
    ) {
        // One record header claiming a near-full record, then filler past the cap.
        let mut input = vec![0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00, 0x3f, 0xf0];
        input.resize(MAX_HELLO_BYTES + extra, filler);
        check_bounded(&input);
    }
}
