//! Arbitrary bytes of both directions, cut into arbitrary chunks with occasional gaps, into
//! one `HttpConn`: must never panic, and what it holds must stay within the configured caps.
//! The harness and the input layout are in `fuzz/harness/http_conn.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../harness/http_conn.rs"]
mod harness;

fuzz_target!(|data: &[u8]| harness::run(data, false));
