//! gRPC on HTTP/2: routes, statuses, length-prefixed messages and protobuf without a schema.
//!
//! Input: what the HTTP/2 stage hands over for one stream: the `:path`, the `content-type`,
//! `grpc-encoding` and `grpc-status` header values, and the raw DATA bytes of one direction
//! (possibly cut short by the body cap). Output: the route (`/package.Service/Method` →
//! service and method), the status with its name and the HTTP status rules see
//! ([`http_status`]: a failed login is a 401 whether it came over REST or gRPC), the
//! messages decompressed into one normalised buffer ([`decode_messages`]), and a walk of
//! each protobuf message ([`walk`]) that hands every scalar to a visitor under a field path:
//! field numbers (`5.2`) without a schema, field names (`address.city`, `orders[].id`) with a
//! descriptor set loaded from config ([`Descriptors`]). Owns nothing between calls; pure
//! functions, no I/O except [`Descriptors::load`] at config load.
//!
//! Limits: messages per body (`[grpc] max_messages`), decompressed bytes per body (`[http]
//! max_decoded_body_bytes`) and the decompression ratio (`max_decompression_ratio`), as for
//! HTTP bodies, bound [`decode_messages`]; [`MAX_DEPTH`] nesting and a node budget bound [`walk`],
//! which reads each byte a bounded number of times (linear in the message, however it nests
//! or whatever lengths it claims). Failure modes: a cut body keeps its complete messages and
//! the part of the last one that arrived (`truncated`); a bad prefix, an unknown encoding, a
//! failed decompression or a cap ends in one [`GrpcError`] of a bounded label set; bytes that
//! are not protobuf end the walk with `malformed` and keep what was visited. Nothing panics.

mod messages;
mod schema;
mod wire;

use std::path::PathBuf;
use std::sync::Arc;

pub use messages::{Caps, GrpcError, Messages, decode_messages, messages};
pub use schema::{DescriptorError, Descriptors};
pub use wire::{Limits, MAX_DEPTH, MAX_NODES, Scalar, WalkStats, string_field, walk, walk_with};

/// The `[grpc]` config section, validated.
#[derive(Clone, Debug)]
pub struct GrpcConfig {
    /// Most length-prefixed messages decoded per body (`max_messages`); the rest of the
    /// body is counted as cut (`too-many-messages`).
    pub max_messages: usize,
    /// `.protoset` files (`protoc --include_imports --descriptor_set_out`) as configured.
    pub descriptor_sets: Vec<PathBuf>,
    /// The loaded descriptor sets: field names for the methods they describe. `None`
    /// without `descriptor_sets` (field numbers only).
    pub descriptors: Option<Arc<Descriptors>>,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            max_messages: messages::DEFAULT_MAX_MESSAGES,
            descriptor_sets: Vec::new(),
            descriptors: None,
        }
    }
}

impl GrpcConfig {
    /// The caps of [`decode_messages`]: bytes and ratio as the HTTP stage's
    /// (`[http] max_decoded_body_bytes`, `max_decompression_ratio`), messages from here.
    pub fn caps(&self, max_decoded_bytes: usize, max_decompression_ratio: u32) -> Caps {
        Caps {
            max_decoded_bytes,
            max_decompression_ratio,
            max_messages: self.max_messages,
        }
    }
}

/// Status names by code (`google.rpc.Code`), 0 to 16.
pub const STATUS_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// HTTP statuses by gRPC code, as google.rpc.Code documents them and grpc-gateway maps
/// them (CANCELLED is nginx's 499 "client closed request").
const HTTP_STATUSES: [u16; 17] = [
    200, 499, 500, 400, 504, 404, 409, 403, 429, 400, 409, 400, 501, 500, 503, 500, 401,
];

/// The `grpc-status` trailer's code: ASCII decimal digits (surrounding blanks allowed).
/// `None` for anything else, so a garbled trailer is not read as some other status.
pub fn grpc_status(value: &[u8]) -> Option<u32> {
    let v = value.trim_ascii();
    // u32::MAX has 10 digits; longer is garbage, and `parse` would also say so.
    if v.is_empty() || v.len() > 10 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// The code's name (`UNAUTHENTICATED`); codes past 16 are `UNKNOWN`, as gRPC reads them.
pub fn status_name(code: u32) -> &'static str {
    usize::try_from(code)
        .ok()
        .and_then(|i| STATUS_NAMES.get(i))
        .copied()
        .unwrap_or("UNKNOWN")
}

/// The HTTP status a REST API would answer for the code, so rules written on HTTP
/// statuses (failed logins are 401s) judge gRPC calls unchanged; unknown codes are 500.
pub fn http_status(code: u32) -> u16 {
    usize::try_from(code)
        .ok()
        .and_then(|i| HTTP_STATUSES.get(i))
        .copied()
        .unwrap_or(500)
}

/// What follows `application/grpc` in a content type: `None` when it is not gRPC.
fn grpc_subtype(content_type: &[u8]) -> Option<&[u8]> {
    const PREFIX: &[u8] = b"application/grpc";
    let ct = content_type.trim_ascii_start();
    let head = ct.get(..PREFIX.len())?;
    if !head.eq_ignore_ascii_case(PREFIX) {
        return None;
    }
    let rest = &ct[PREFIX.len()..];
    let media_end = rest.iter().position(|b| *b == b';').unwrap_or(rest.len());
    let subtype = rest[..media_end].trim_ascii();
    match subtype.first() {
        None => Some(b""),
        // `application/grpc-web` and the like are other protocols.
        Some(b'+') => Some(&subtype[1..]),
        Some(_) => None,
    }
}

/// Whether a content type is gRPC's: `application/grpc`, optionally `+proto`, `+json` or
/// another codec, any case, parameters allowed. gRPC-Web is not.
pub fn is_grpc(content_type: &[u8]) -> bool {
    grpc_subtype(content_type).is_some()
}

/// Whether gRPC messages of this content type are protobuf (`application/grpc` or
/// `application/grpc+proto`), so [`walk`] applies; `+json` messages are JSON.
pub fn is_grpc_protobuf(content_type: &[u8]) -> bool {
    grpc_subtype(content_type).is_some_and(|s| s.is_empty() || s.eq_ignore_ascii_case(b"proto"))
}

/// The service and method of a gRPC path (`/shop.v1.Shop/Login` → `shop.v1.Shop`,
/// `Login`); `None` unless the path is exactly two non-empty segments.
pub fn route(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix('/')?;
    let (service, method) = rest.split_once('/')?;
    if service.is_empty() || method.is_empty() || method.contains(['/', '?']) {
        return None;
    }
    Some((service, method))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_parses_digits_only() {
        assert_eq!(grpc_status(b"0"), Some(0));
        assert_eq!(grpc_status(b" 16 "), Some(16));
        assert_eq!(grpc_status(b"4294967295"), Some(u32::MAX));
        for bad in [
            &b""[..],
            b"-1",
            b"1a",
            b"4294967296",
            b"99999999999",
            b"+3",
            b"0x10",
        ] {
            assert_eq!(grpc_status(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn names_and_http_statuses_follow_google_rpc_code() {
        let want = [
            (0, "OK", 200),
            (1, "CANCELLED", 499),
            (2, "UNKNOWN", 500),
            (3, "INVALID_ARGUMENT", 400),
            (4, "DEADLINE_EXCEEDED", 504),
            (5, "NOT_FOUND", 404),
            (6, "ALREADY_EXISTS", 409),
            (7, "PERMISSION_DENIED", 403),
            (8, "RESOURCE_EXHAUSTED", 429),
            (9, "FAILED_PRECONDITION", 400),
            (10, "ABORTED", 409),
            (11, "OUT_OF_RANGE", 400),
            (12, "UNIMPLEMENTED", 501),
            (13, "INTERNAL", 500),
            (14, "UNAVAILABLE", 503),
            (15, "DATA_LOSS", 500),
            (16, "UNAUTHENTICATED", 401),
            (17, "UNKNOWN", 500),
            (u32::MAX, "UNKNOWN", 500),
        ];
        for (code, name, http) in want {
            assert_eq!(
                (status_name(code), http_status(code)),
                (name, http),
                "{code}"
            );
        }
    }

    #[test]
    fn content_types() {
        for yes in [
            &b"application/grpc"[..],
            b"Application/GRPC",
            b"application/grpc+proto",
            b"application/grpc; charset=utf-8",
            b"application/grpc+PROTO;x=1",
        ] {
            assert!(is_grpc(yes) && is_grpc_protobuf(yes), "{yes:?}");
        }
        assert!(is_grpc(b"application/grpc+json"));
        assert!(!is_grpc_protobuf(b"application/grpc+json"));
        for no in [
            &b"application/grpc-web"[..],
            b"application/grpc-web+proto",
            b"application/json",
            b"application/grp",
            b"",
        ] {
            assert!(!is_grpc(no) && !is_grpc_protobuf(no), "{no:?}");
        }
    }

    #[test]
    fn routes() {
        assert_eq!(
            route("/shop.v1.Shop/Login"),
            Some(("shop.v1.Shop", "Login"))
        );
        assert_eq!(route("/Greeter/SayHello"), Some(("Greeter", "SayHello")));
        for bad in ["", "/", "//M", "/S/", "/S", "S/M", "/a/b/c", "/a/b?x=1"] {
            assert_eq!(route(bad), None, "{bad}");
        }
    }
}
