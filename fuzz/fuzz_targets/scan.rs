//! Response bodies into the exposure scanner, against the serde walker it replaced: the
//! hand-written JSON walker must never panic, and must give exactly the oracle's [`Scan`]
//! (findings with their masks, fields, ids, records, the truncated and capped flags) for any
//! bytes, JSON or not.
//!
//! Input layout: byte 0 picks the response headers (low 3 bits: the `Content-Type`, of
//! `CTYPES`, none past its end; bit 3: ids wanted; bit 4: `Cache-Control: public`); the
//! rest is the decoded body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shieldtap::detect::exposure::{oracle, scan_with};
use shieldtap::http::Headers;

const CTYPES: [&str; 6] = [
    "application/json",
    "application/problem+json; charset=utf-8",
    "text/plain",
    "application/octet-stream",
    "text/html; charset=utf-8",
    "APPLICATION/JSON",
];

fuzz_target!(|data: &[u8]| {
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let mut headers = Headers::new();
    if let Some(ct) = CTYPES.get(usize::from(first & 7)) {
        headers.push("Content-Type", ct.as_bytes());
    }
    if first & 0x10 != 0 {
        headers.push("Cache-Control", b"public, max-age=60");
    }
    let want_ids = first & 0x08 != 0;
    let walked = scan_with(&headers, body, want_ids);
    let oracle = oracle::scan_with(&headers, body, want_ids);
    assert_eq!(
        walked,
        oracle,
        "body {:?}, headers {headers:?}, ids wanted {want_ids}",
        String::from_utf8_lossy(body)
    );
});
