//! Body framing: how a request or response body is delimited (length, chunked, until
//! close; RFC 9112 §6.3), the chunked-body reader's states, and undoing content codings on
//! a finished body.

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ChunkState {
    /// Reading a chunk-size line (partial line in `buf`).
    Size,
    /// Bytes left in the current chunk.
    Data(u64),
    /// Chunk data done; expecting CRLF (or a bare LF).
    DataEnd,
    /// Got the CR after chunk data; expecting LF.
    DataEndLf,
    /// After the last chunk: trailer fields up to an empty line (in `buf`).
    Trailers,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Framing {
    None,
    Length(u64),
    Chunked(ChunkState),
    UntilClose,
}

/// Framing of a request body (RFC 9112 §6.3). `None`: the length cannot be determined.
pub(super) fn request_framing(
    f: &body::FramingHeaders,
    anomalies: &mut AnomalySet,
) -> Option<Framing> {
    let cl = f.content_length;
    match f.transfer_encoding {
        TransferEncoding::Chunked => {
            flag_cl_with_te(cl, anomalies);
            Some(Framing::Chunked(ChunkState::Size))
        }
        TransferEncoding::NotChunked => {
            // A request must end in chunked when it has Transfer-Encoding: 400 and close.
            flag_cl_with_te(cl, anomalies);
            anomalies.insert(Anomaly::BadHead);
            None
        }
        TransferEncoding::Absent => length_framing(cl, anomalies, Framing::None),
    }
}

/// Framing of a response body that may have one (RFC 9112 §6.3).
pub(super) fn response_framing(
    f: &body::FramingHeaders,
    anomalies: &mut AnomalySet,
) -> Option<Framing> {
    let cl = f.content_length;
    match f.transfer_encoding {
        TransferEncoding::Chunked => {
            flag_cl_with_te(cl, anomalies);
            Some(Framing::Chunked(ChunkState::Size))
        }
        TransferEncoding::NotChunked => {
            flag_cl_with_te(cl, anomalies);
            Some(Framing::UntilClose)
        }
        TransferEncoding::Absent => length_framing(cl, anomalies, Framing::UntilClose),
    }
}

pub(super) fn flag_cl_with_te(cl: ContentLength, anomalies: &mut AnomalySet) {
    match cl {
        ContentLength::Absent => {}
        ContentLength::Valid(_) => anomalies.insert(Anomaly::ClAndTe),
        ContentLength::Differing(_) => {
            anomalies.insert(Anomaly::ClAndTe);
            anomalies.insert(Anomaly::DuplicateContentLength);
        }
        ContentLength::Invalid => {
            anomalies.insert(Anomaly::ClAndTe);
            anomalies.insert(Anomaly::InvalidContentLength);
        }
    }
}

pub(super) fn length_framing(
    cl: ContentLength,
    anomalies: &mut AnomalySet,
    absent: Framing,
) -> Option<Framing> {
    match cl {
        ContentLength::Absent => Some(absent),
        ContentLength::Valid(n) => Some(Framing::Length(n)),
        ContentLength::Differing(first) => {
            // Ambiguous (a smuggling tell); the first value is what most servers use.
            anomalies.insert(Anomaly::DuplicateContentLength);
            Some(Framing::Length(first))
        }
        ContentLength::Invalid => {
            anomalies.insert(Anomaly::InvalidContentLength);
            None
        }
    }
}

/// Undoes content codings on a finished body (kept bytes only), under the decode caps; an
/// HTTP/1.x response's are left for the reader when the runtime asks
/// ([`HttpConfig::defer_response_decoding`](crate::http::HttpConfig)).
pub(super) fn decode_body(m: &mut InFlight, cx: &mut Ctx<'_>) {
    let InFlight {
        msg,
        anomalies,
        codings,
        ..
    } = m;
    let (body, response) = match msg {
        Message::Request(r) => (&mut r.body, false),
        Message::Response(r) => (&mut r.body, true),
    };
    if response && cx.cfg.defer_response_decoding {
        if decodes(body, codings, cx) {
            body.coded = Some(*codings);
        }
        return;
    }
    decode_kept(body, codings, anomalies, cx);
}

/// Whether the body has codings to undo (and decoding is on).
fn decodes(body: &Body, codings: &Codings, cx: &Ctx<'_>) -> bool {
    cx.cfg.decode_bodies && !codings.unknown && !codings.is_empty() && !body.data.is_empty()
}

/// Undoes `codings` on a body's kept bytes under the decode caps (HTTP/1.x and HTTP/2):
/// the decoded bytes replace them; caps reached and failures are flagged and counted.
pub(in crate::http) fn decode_kept(
    body: &mut Body,
    codings: &Codings,
    anomalies: &mut AnomalySet,
    cx: &mut Ctx<'_>,
) {
    if decodes(body, codings, cx) {
        crate::http::body::decode_into(body, codings, anomalies, cx.cfg, cx.stats);
    }
}
