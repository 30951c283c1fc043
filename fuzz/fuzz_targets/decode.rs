//! Arbitrary frames of every link type into one long-lived decoder (fragment pool state
//! carries across inputs within a run): must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shieldtap::capture::Timestamp;
use shieldtap::decode::{DecodeConfig, Decoder, LinkType};

const LINKS: [LinkType; LinkType::ALL.len()] = LinkType::ALL;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, frame)) = data.split_first() else {
        return;
    };
    let mut d = Decoder::new(DecodeConfig {
        frag_max_datagrams: 4,
        frag_max_bytes: 16 << 10,
        ..Default::default()
    });
    // Several frames per input: split on a marker so fragments can meet in the pool.
    for (i, part) in frame.split(|b| *b == 0xfe).enumerate() {
        let link = LINKS[usize::from(sel.wrapping_add(i as u8)) % LINKS.len()];
        let _ = d.decode(link, part, Timestamp(i as u64 * 1_000_000_000));
    }
});
