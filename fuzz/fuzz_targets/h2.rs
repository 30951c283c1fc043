//! The `http` target's harness after an HTTP/2 client preface: arbitrary frames of both
//! directions (header blocks through HPACK, streams, resets, gaps) into one connection.
//! Must never panic, and what it holds must stay within the HTTP/2 caps. The harness and
//! the input layout are in `fuzz/harness/http_conn.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../harness/http_conn.rs"]
mod harness;

fuzz_target!(|data: &[u8]| harness::run(data, true));
