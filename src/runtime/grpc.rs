//! gRPC calls on HTTP/2 streams, as the worker sees them: the length-prefixed messages of
//! both bodies decoded (under the `[http]` decoding caps and `[grpc] max_messages`), the
//! outcome read from `grpc-status` (trailers, or the headers of a trailers-only answer),
//! and what detection needs from the request message: an object the call names (an `id`
//! or `*_id` field, else a first integer field) and, on login routes, the username.
//! Field names come from the method's descriptor when `[grpc] descriptor_sets` has it,
//! else field numbers and value shapes.

use std::sync::Arc;

use prost_reflect::MessageDescriptor;

use crate::grpc::{self, GrpcConfig, Scalar};
use crate::http::{HttpConfig, HttpStats, Transaction, header};
use crate::object::ObjectRef;

/// A gRPC call's outcome and schema, kept beside its transaction.
#[derive(Clone, Debug, Default)]
pub(super) struct Call {
    /// `grpc-status`, when the answer carried one.
    pub status: Option<u32>,
    pub request_messages: u32,
    pub response_messages: u32,
    /// The method's input and output messages, when a descriptor set names them.
    pub input: Option<MessageDescriptor>,
    pub output: Option<MessageDescriptor>,
}

/// Every value of `HttpStats::grpc_calls` besides the status names: no status at all.
pub(super) const NO_STATUS: &str = "none";

/// Decodes the call's messages in place (bodies become the normalised message form) and
/// reads its outcome. `None` when the transaction is not gRPC.
pub(super) fn call(
    tx: &mut Transaction,
    http: &HttpConfig,
    cfg: &GrpcConfig,
    stats: &mut HttpStats,
) -> Option<Call> {
    tx.h2?;
    let req = tx.request.as_mut()?;
    let ctype = header(&req.headers, "content-type").unwrap_or_default();
    if !grpc::is_grpc_protobuf(ctype) {
        return None;
    }
    let caps = cfg.caps(http.max_decoded_bytes, http.max_decompression_ratio);
    let (input, output) = cfg
        .descriptors
        .as_ref()
        .and_then(|d| d.method(crate::route::path_of(&req.target)))
        .unzip();
    let mut out = Call {
        input,
        output,
        ..Call::default()
    };
    out.request_messages = decode(&mut req.body, &req.headers, &caps, stats);
    if let Some(resp) = tx.response.as_mut() {
        out.response_messages = decode(&mut resp.body, &resp.headers, &caps, stats);
        out.status = header(&resp.body.trailers, "grpc-status")
            .or_else(|| header(&resp.headers, "grpc-status"))
            .and_then(grpc::grpc_status);
    }
    let name = out.status.map_or(NO_STATUS, grpc::status_name);
    *stats.grpc_calls.entry(name).or_insert(0) += 1;
    Some(out)
}

fn decode(
    body: &mut crate::http::Body,
    headers: &crate::http::Headers,
    caps: &grpc::Caps,
    stats: &mut HttpStats,
) -> u32 {
    if body.data.is_empty() {
        return 0;
    }
    let m = grpc::decode_messages(&body.data, header(headers, "grpc-encoding"), caps);
    if let Some(e) = m.error {
        *stats.grpc_errors.entry(e.as_str()).or_insert(0) += 1;
    }
    stats.body_bytes_decoded += if m.compressed > 0 {
        m.data.len() as u64
    } else {
        0
    };
    body.decoded |= m.compressed > 0;
    body.truncated |= m.truncated;
    body.data = m.data;
    m.count
}

/// The status rules and outputs see: the HTTP equivalent of `grpc-status` (failed logins
/// are 401 as in REST), else the HTTP status.
pub(super) fn status(call: &Call, http: Option<u16>) -> Option<u16> {
    call.status.map(grpc::http_status).or(http)
}

/// The object the request names: a top-level `id` / `*_id` field (by name with a
/// descriptor), else the first top-level integer field; in the collection its field
/// names (`user_id` → `user`) or, without a name, the method's noun (`GetProfile` →
/// `profile`).
pub(super) fn object(path: &str, body: &[u8], call: &Call) -> Option<(ObjectRef, Option<u64>)> {
    let first = grpc::messages(body).next()?;
    let mut found: Option<(String, String, Option<u64>)> = None;
    let named = call.input.is_some();
    grpc::walk(first, call.input.as_ref(), &mut |p, v| {
        if found.is_some() {
            return;
        }
        let field = p.trim_start_matches('$').trim_start_matches('.');
        if field.contains('.') || field.contains('[') {
            return;
        }
        let names_id = field.eq_ignore_ascii_case("id") || field.ends_with("_id");
        if named && !names_id {
            return;
        }
        let value = match v {
            Scalar::Uint(n) => Some((n.to_string(), Some(n))),
            Scalar::Int(n) => Some((n.to_string(), u64::try_from(n).ok())),
            Scalar::Str(s) if named && !s.is_empty() && s.len() <= 128 => {
                Some((s.to_string(), s.parse().ok()))
            }
            _ => None,
        };
        if let Some((id, n)) = value {
            found = Some((field.to_string(), id, n));
        }
    });
    let (field, id, number) = found?;
    let collection = match field.strip_suffix("_id") {
        Some(c) if named => c.to_string(),
        _ => noun(path),
    };
    Some((
        ObjectRef {
            collection: Arc::from(collection.as_str()),
            id: Arc::from(id.as_str()),
        },
        number,
    ))
}

/// `/pkg.Service/GetProfile` → `profile`.
fn noun(path: &str) -> String {
    let method = grpc::route(path).map_or(path, |(_, m)| m);
    let rest = ["Get", "List", "Delete", "Update", "Create", "Find", "Fetch"]
        .iter()
        .find_map(|v| method.strip_prefix(v))
        .filter(|r| !r.is_empty())
        .unwrap_or(method);
    let lower = rest.to_ascii_lowercase();
    lower
        .strip_suffix('s')
        .map_or(lower.clone(), str::to_string)
}

/// The username a login call tries: the first of `fields` the message has (by name, with
/// a descriptor), else the first string that looks like one (an e-mail address, or field 1).
pub(super) fn username(body: &[u8], call: &Call, fields: &[String]) -> Option<Arc<str>> {
    let first = grpc::messages(body).next()?;
    let usable = |s: &str| {
        let s = s.trim();
        (!s.is_empty() && s.len() <= 256).then(|| Arc::from(s))
    };
    if let Some(desc) = &call.input {
        return fields
            .iter()
            .find_map(|f| grpc::string_field(first, desc, f).and_then(usable));
    }
    let mut best: Option<(bool, Arc<str>)> = None;
    grpc::walk(first, None, &mut |p, v| {
        let Scalar::Str(s) = v else { return };
        let Some(s) = usable(s) else { return };
        let field = p.trim_start_matches('$').trim_start_matches('.');
        // An e-mail address anywhere wins over a first string field.
        let email = s.contains('@');
        if (email || field == "1") && best.as_ref().is_none_or(|(e, _)| email && !*e) {
            best = Some((email, s));
        }
    });
    best.map(|(_, s)| s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nouns_of_methods() {
        assert_eq!(noun("/shop.v1.Profiles/GetProfile"), "profile");
        assert_eq!(noun("/shop.v1.Orders/ListOrders"), "order");
        assert_eq!(noun("/x.Y/Get"), "get");
    }
}
