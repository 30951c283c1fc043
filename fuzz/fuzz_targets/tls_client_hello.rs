//! Arbitrary bytes as the start of a client's stream into `tls::client_hello`: must never
//! panic; every prefix must wait (`Ok(None)`) or decide, and decide once the cap is reached;
//! a decided hello must not change when more bytes follow it; its fingerprints must be
//! well formed.
//!
//! Input layout: the whole input is the stream; byte 0 (when present) also picks a cut
//! point, so a prefix is checked against the whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shieldtap::tls::{self, MAX_HELLO_BYTES};

fuzz_target!(|data: &[u8]| {
    let whole = tls::client_hello(data);
    if data.len() >= MAX_HELLO_BYTES {
        assert_ne!(whole, Ok(None), "undecided at the cap");
    }
    if let Ok(Some(h)) = &whole {
        let (ja3, md5) = tls::ja3(h);
        assert_eq!(md5.len(), 32);
        assert_eq!(ja3.matches(',').count(), 4);
        let ja4 = tls::ja4(h);
        assert_eq!(ja4.len(), 36, "{ja4}");
    }
    let Some(&first) = data.first() else {
        return;
    };
    let cut = usize::from(first) * data.len() / 256;
    // A prefix that already decided on a hello decides the same on the whole stream.
    if let Ok(Some(h)) = tls::client_hello(&data[..cut]) {
        assert_eq!(whole, Ok(Some(h)));
    }
});
