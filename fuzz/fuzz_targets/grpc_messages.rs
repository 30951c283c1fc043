//! Arbitrary bytes as one direction of a gRPC stream: `grpc::decode_messages` under small
//! caps, then every message walked as protobuf without and with a schema (the fixtures'
//! shop.protoset), then the exposure scan of the whole body. Must never panic; the
//! normalised output must iterate to exactly `count` messages within the caps, and walks
//! stay within their node budget.
//!
//! Input layout: byte 0 picks the `grpc-encoding` (none, gzip, deflate, identity, zstd) and
//! the message type; the rest is the body.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use shieldtap::detect::exposure::scan_grpc;
use shieldtap::grpc::{self, Caps, Descriptors, Limits};

fn descriptors() -> &'static Descriptors {
    static D: OnceLock<Descriptors> = OnceLock::new();
    D.get_or_init(|| {
        let set = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/grpc/shop.protoset"
        );
        Descriptors::load(&[set]).expect("fixture descriptor set")
    })
}

const TYPES: [&str; 4] = [
    "shop.v1.Profile",
    "shop.v1.OrderList",
    "shop.v1.LoginRequest",
    "shop.v1.Order",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let enc: Option<&[u8]> = match pick % 5 {
        0 => None,
        1 => Some(b"gzip"),
        2 => Some(b"deflate"),
        3 => Some(b"identity"),
        _ => Some(b"zstd"),
    };
    let caps = Caps {
        max_decoded_bytes: 64 * 1024,
        max_decompression_ratio: 100,
        max_messages: 64,
    };
    let m = grpc::decode_messages(body, enc, &caps);
    let all: Vec<&[u8]> = grpc::messages(&m.data).collect();
    assert_eq!(all.len(), m.count as usize);
    assert!(all.len() <= caps.max_messages);
    assert!(all.iter().map(|p| p.len()).sum::<usize>() <= caps.max_decoded_bytes);
    let md = descriptors().message(TYPES[usize::from(pick / 5) % TYPES.len()]);
    let limits = Limits {
        max_depth: 16,
        max_nodes: 2000,
    };
    for msg in &all {
        let s = grpc::walk_with(msg, None, limits, &mut |_, _| {});
        assert!(s.nodes <= limits.max_nodes);
        let s = grpc::walk_with(msg, md.as_ref(), limits, &mut |_, _| {});
        assert!(s.nodes <= limits.max_nodes);
    }
    let _ = scan_grpc(&shieldtap::http::Headers::new(), &m.data, md.as_ref(), true);
    // Arbitrary bytes taken as an already normalised buffer must be safe too.
    let _ = scan_grpc(&shieldtap::http::Headers::new(), body, None, true);
});
