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

/// Every frame of `dir`'s capture through a fresh packet path; the events as JSON lines,
/// the (scans, memoized) and (decodes, memoized) counts.
fn events(dir: &Path, memo: bool) -> (Vec<String>, (u64, u64), (u64, u64)) {
    let cfg = Config::load(&dir.join("shieldtap.toml")).expect("sample config");
    let rules = shieldtap::rules::builtin().expect("built-in rules");
    let shared = Shared::new(&cfg, rules, Arc::new(Hub::default())).expect("judges");
    let mut path = PacketPath::new(&cfg, shared);
    let mut out = Vec::new();
    let mut stats = CaptureStats::default();
    let mut last = None;
    capture::read_file(
        &dir.join("capture.pcap"),
        &Progress::default(),
        &mut stats,
        &mut |f: Frame<'_>| {
            last = Some(f.ts);
            path.frame(f);
            if !memo {
                path.forget_scans();
            }
            out.extend(path.events());
        },
    )
    .expect("the sample capture reads");
    // Connections still open are flushed as the end of a capture flushes them.
    if let Some(ts) = last {
        path.advance(shieldtap::capture::Timestamp(ts.0 + 3_600_000_000_000));
    }
    out.extend(path.events());
    let lines = out
        .iter()
        .map(|e| serde_json::to_string(e).expect("events serialize"))
        .collect();
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
