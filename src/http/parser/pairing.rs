//! Pairing of requests with their responses: the queue of requests waiting for answers
//! ([`Pending`], in [`Shared`] state both directions see), its weights and caps (charge,
//! eviction of the oldest unanswered request), claiming a request for a response head,
//! settling the requests a response-side loss answered (holes, typical response size), and
//! finishing a message into a [`Transaction`] (`finish`, `emit`).

use super::*;
use std::cell::RefCell;

/// A request whose head was seen, waiting for (or holding) its response. The messages it
/// holds are parked out of line ([`park`]): an entry is a cache line, where the request
/// and response inline made it 424 bytes, written into each connection's queue (memory no
/// other connection touches, so cold by the connection's next request) for every request.
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) id: u64,
    /// `None` while its body is still arriving.
    pub(super) request: Option<Box<Request>>,
    pub(super) request_anomalies: AnomalySet,
    pub(super) method: MethodKind,
    /// A response head was matched to it.
    pub(super) claimed: bool,
    /// A complete response that arrived before the request finished.
    pub(super) response: Option<Box<(Response, AnomalySet)>>,
    /// First request after lost request bytes: responses that started before it arrived
    /// answer lost requests, not this one.
    pub(super) after_gap: bool,
    /// Connection event (data or gap call) in which its first byte arrived.
    pub(super) first_event: u64,
    /// Its request line had no version (HTTP/0.9): the answer may come without a head.
    pub(super) http09: bool,
    /// Bytes charged to `Shared::pending_bytes` for what it holds.
    pub(super) weight: usize,
}

/// Boxes this thread keeps for parked messages of each kind, once taken out: about as many
/// as its connections have waiting at once (the rest are freed).
pub(super) const PARKED_BOXES: usize = 256;

// The boxes are what is kept (allocations to reuse), not the values: `vec_box` does not apply.
thread_local! {
    #[allow(clippy::vec_box)]
    static PARKED_REQUESTS: RefCell<Vec<Box<Request>>> = const { RefCell::new(Vec::new()) };
    #[allow(clippy::vec_box)]
    static PARKED_RESPONSES: RefCell<Vec<Box<(Response, AnomalySet)>>> =
        const { RefCell::new(Vec::new()) };
}

/// A message that can wait boxed (in the pairing queue, or in its side while its body is
/// read), with its thread's spare boxes.
pub(super) trait Parkable: Default + Sized + 'static {
    fn spare() -> &'static std::thread::LocalKey<RefCell<Vec<Box<Self>>>>;
}

impl Parkable for Request {
    fn spare() -> &'static std::thread::LocalKey<RefCell<Vec<Box<Self>>>> {
        &PARKED_REQUESTS
    }
}

impl Parkable for (Response, AnomalySet) {
    fn spare() -> &'static std::thread::LocalKey<RefCell<Vec<Box<Self>>>> {
        &PARKED_RESPONSES
    }
}

/// Boxes a message that is to wait (a finished one for the queue, or one reading its body
/// in its side), in a box this thread used last when one is spare: a box recently written
/// and emptied is in cache, and no allocation is made per request in steady state.
pub(super) fn park<T: Parkable>(v: T) -> Box<T> {
    match T::spare().try_with(|s| s.borrow_mut().pop()).ok().flatten() {
        Some(mut b) => {
            *b = v;
            b
        }
        None => Box::new(v),
    }
}

/// Takes a parked message out; its emptied box (holding no heap memory) is kept for the
/// next.
pub(super) fn unpark<T: Parkable>(mut b: Box<T>) -> T {
    let v = std::mem::take(&mut *b);
    let _ = T::spare().try_with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < PARKED_BOXES {
            s.push(b);
        }
    });
    v
}

/// State both directions share.
#[derive(Debug, Default)]
pub(super) struct Shared {
    pub(super) pending: VecDeque<Pending>,
    pub(super) next_id: u64,
    /// Counts data and gap calls, to order request and response arrivals.
    pub(super) event: u64,
    /// Request bytes were lost; the next request pushed is tagged `after_gap`.
    pub(super) request_gap: bool,
    pub(super) opaque: bool,
    /// The upgrade request a 101 switched to HTTP/2 (`Upgrade: h2c`), for stream 1.
    pub(super) h2c: Option<Box<(Option<Request>, AnomalySet)>>,
    /// Sum of the queue's `Pending::weight` (capped by `max_pending_bytes`).
    pub(super) pending_bytes: usize,
    /// Requests given up at a queue cap whose answers are still to come: the next this many
    /// responses answer them, so they pair with nothing and later pairs stay right.
    pub(super) answers_owed: u64,
    /// Wire bytes (head and body) and number of the responses seen whole: their ratio is
    /// the connection's typical response size, used to count responses lost in a gap.
    pub(super) response_wire_bytes: u64,
    pub(super) responses_whole: u64,
    /// Response bytes lost and not yet accounted for (boxed: rare).
    pub(super) hole: Option<Box<Hole>>,
}

/// Response bytes lost since the last response head: settled when the next head is found.
#[derive(Debug)]
pub(super) struct Hole {
    /// Lost bytes that may hold whole responses, plus the bytes seen of messages the loss
    /// cut (counted in `cut`).
    pub(super) bytes: u64,
    /// Responses cut by the loss (already emitted; their bytes are in `bytes`).
    pub(super) cut: u64,
    /// The response side's skipped-bytes count when the loss began: what the resync skipped
    /// since then was part of lost responses too.
    pub(super) skipped_from: u64,
    /// Connection event of the last loss: only requests that arrived before it can have
    /// been answered in it.
    pub(super) before_event: u64,
}

/// Queues a request head for pairing. Over `max_pending_requests`, the oldest unanswered
/// request is given up.
pub(super) fn push_pending(
    sh: &mut Shared,
    method: MethodKind,
    first_event: u64,
    http09: bool,
    cx: &mut Ctx<'_>,
) -> u64 {
    let max = cx.cfg.max_pending_requests.max(1);
    while sh.pending.len() >= max && evict_oldest(sh, cx, "pending") {}
    let id = sh.next_id;
    sh.next_id += 1;
    let weight = size_of::<Pending>();
    sh.pending_bytes = sh.pending_bytes.saturating_add(weight);
    sh.pending.push_back(Pending {
        id,
        request: None,
        request_anomalies: AnomalySet::default(),
        method,
        claimed: false,
        response: None,
        after_gap: std::mem::take(&mut sh.request_gap),
        first_event,
        http09,
        weight,
    });
    id
}

/// Bytes a kept message holds: head fields, body, trailers.
pub(super) fn message_weight(headers: &Headers, body: &Body, strings: usize) -> usize {
    let fields = |hs: &Headers| size_of_val(hs) + hs.heap_bytes();
    strings + fields(headers) + body.data.capacity() + fields(&body.trailers)
}

pub(super) fn request_weight(r: &Request) -> usize {
    message_weight(
        &r.headers,
        &r.body,
        r.method.capacity() + r.target.capacity(),
    )
}

pub(super) fn response_weight(r: &Response) -> usize {
    message_weight(&r.headers, &r.body, 0)
}

/// Charges `extra` more bytes to the queue entry at `pos`, then gives up the oldest
/// unanswered requests while the queue holds more than `max_pending_bytes`.
pub(super) fn charge(sh: &mut Shared, pos: usize, extra: usize, cx: &mut Ctx<'_>) {
    if let Some(p) = sh.pending.get_mut(pos) {
        p.weight = p.weight.saturating_add(extra);
        sh.pending_bytes = sh.pending_bytes.saturating_add(extra);
    }
    while sh.pending_bytes > cx.cfg.max_pending_bytes && evict_oldest(sh, cx, "pending-bytes") {}
}

/// Takes the queue entry at `pos` out, and its bytes off the queue's charge.
pub(super) fn take_pending(sh: &mut Shared, pos: usize) -> Option<Pending> {
    let p = sh.pending.remove(pos)?;
    sh.pending_bytes = sh.pending_bytes.saturating_sub(p.weight);
    Some(p)
}

/// A queue cap was reached: the oldest request no response has claimed is given up
/// (emitted unanswered, `cap` counted). Its answer is still to come first, so the next
/// response is owed to it and pairs with nothing: later pairs stay right. False when no
/// complete request waits unclaimed.
pub(super) fn evict_oldest(sh: &mut Shared, cx: &mut Ctx<'_>, cap: &'static str) -> bool {
    let Some(pos) = sh.pending.iter().position(|p| !p.claimed) else {
        return false;
    };
    // Only the newest request can still be arriving; with nothing older to give up, the
    // queue holds one complete request at most.
    if sh.pending.get(pos).is_none_or(|p| p.request.is_none()) {
        return false;
    }
    let Some(p) = take_pending(sh, pos) else {
        return false;
    };
    bump(&mut cx.stats.cap_hits, cap);
    sh.answers_owed += 1;
    let mut an = p.request_anomalies;
    an.insert(Anomaly::PendingCap);
    an.insert(Anomaly::RequestWithoutResponse);
    emit(cx, p.request.map(unpark), None, an);
    true
}

/// What a final response head answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Claim {
    /// The waiting request with this id.
    Request(u64, MethodKind),
    /// A request given up at a queue cap.
    Owed,
    /// Nothing seen: a lost request, or none at all.
    Nothing,
}

/// Matches a final response head (first byte in `event`) with the oldest unanswered
/// request, unless that request arrived after the response began (lost requests), or the
/// answer is owed to a request given up at a cap.
pub(super) fn claim(sh: &mut Shared, event: u64) -> Claim {
    if sh.answers_owed > 0 {
        sh.answers_owed -= 1;
        return Claim::Owed;
    }
    let Some(p) = sh.pending.iter_mut().find(|p| !p.claimed) else {
        return Claim::Nothing;
    };
    if p.after_gap && event < p.first_event {
        return Claim::Nothing;
    }
    p.claimed = true;
    Claim::Request(p.id, p.method)
}

/// Whether the next response answers an HTTP/0.9 request (and so may come without a head).
pub(super) fn next_answers_http09(sh: &Shared) -> bool {
    sh.answers_owed == 0
        && sh.hole.is_none()
        && sh
            .pending
            .iter()
            .find(|p| !p.claimed)
            .is_some_and(|p| p.http09)
}

/// How many responses of the connection's typical size `bytes` hold (rounded); `None`
/// before any response was seen whole.
pub(super) fn typical_count(bytes: u64, wire_bytes: u64, whole: u64) -> Option<u64> {
    if wire_bytes == 0 || whole == 0 {
        return None;
    }
    let n = (u128::from(bytes) * u128::from(whole) + u128::from(wire_bytes) / 2)
        / u128::from(wire_bytes);
    Some(u64::try_from(n).unwrap_or(u64::MAX))
}

/// A response head was found after lost response bytes (`skipped_now`: the response side's
/// skipped bytes so far). The loss held about as many responses as its bytes (with what
/// the resync skipped and what was seen of cut messages) make responses of the
/// connection's typical size; that many of the oldest requests that arrived before the
/// loss are given up as answered in it, so the responses that follow pair with the
/// requests they answer. Before any response was seen whole there is no typical size, and
/// every request that arrived before the loss is given up instead.
pub(super) fn settle_hole(sh: &mut Shared, skipped_now: u64, cx: &mut Ctx<'_>) {
    let Some(hole) = sh.hole.take() else {
        return;
    };
    let bytes = hole
        .bytes
        .saturating_add(skipped_now.saturating_sub(hole.skipped_from));
    let mut left = typical_count(bytes, sh.response_wire_bytes, sh.responses_whole)
        .map_or(u64::MAX, |n| n.saturating_sub(hole.cut));
    let owed = left.min(sh.answers_owed);
    sh.answers_owed -= owed;
    left -= owed;
    while left > 0 {
        let Some(pos) = sh.pending.iter().position(|p| !p.claimed) else {
            break;
        };
        let answerable = sh
            .pending
            .get(pos)
            .is_some_and(|p| p.request.is_some() && p.first_event < hole.before_event);
        if !answerable {
            break;
        }
        let Some(p) = take_pending(sh, pos) else {
            break;
        };
        left -= 1;
        cx.stats.gap_unanswered += 1;
        let mut an = p.request_anomalies;
        an.insert(Anomaly::Gap);
        an.insert(Anomaly::RequestWithoutResponse);
        emit(cx, p.request.map(unpark), None, an);
    }
}

/// A message is complete (or cut): decode its body and pair or queue it.
pub(super) fn finish(sh: &mut Shared, cx: &mut Ctx<'_>, mut m: InFlight) {
    decode_body(&mut m, cx);
    let whole_response = matches!(m.msg, Message::Response(_))
        && m.head_len > 0
        && !m.body().truncated
        && ![
            Anomaly::Gap,
            Anomaly::TruncatedBody,
            Anomaly::BadChunk,
            Anomaly::ResponseNoHead,
        ]
        .iter()
        .any(|a| m.anomalies.contains(*a));
    if whole_response {
        sh.response_wire_bytes = sh.response_wire_bytes.saturating_add(m.wire_len());
        sh.responses_whole += 1;
    }
    let InFlight {
        msg,
        anomalies,
        link,
        opaque_after,
        ..
    } = m;
    match msg {
        Message::Request(req) => {
            let pos = link.and_then(|id| sh.pending.iter().rposition(|p| p.id == id));
            match pos.and_then(|pos| sh.pending.get_mut(pos).map(|p| (pos, p))) {
                Some((pos, p)) => {
                    if p.response.is_some() {
                        // Answered before it finished (early response).
                        if let Some(p) = take_pending(sh, pos) {
                            let (resp, resp_an) = p.response.map(unpark).unzip();
                            let an = AnomalySet(anomalies.0 | resp_an.map_or(0, |a| a.0));
                            emit(cx, Some(req), resp, an);
                        }
                    } else {
                        let weight = request_weight(&req) + size_of::<Request>();
                        p.request = Some(park(req));
                        p.request_anomalies = anomalies;
                        charge(sh, pos, weight, cx);
                    }
                }
                None => {
                    let mut an = anomalies;
                    an.insert(Anomaly::RequestWithoutResponse);
                    emit(cx, Some(req), None, an);
                }
            }
        }
        Message::Response(resp) => {
            let pos = link.and_then(|id| sh.pending.iter().position(|p| p.id == id));
            match pos.and_then(|pos| sh.pending.get_mut(pos).map(|p| (pos, p))) {
                Some((pos, p)) => {
                    if p.request.is_some() {
                        if let Some(p) = take_pending(sh, pos) {
                            let an = AnomalySet(anomalies.0 | p.request_anomalies.0);
                            match p.request.map(unpark) {
                                Some(req) if opaque_after && upgrades_to_h2c(&resp) => {
                                    let mut an = an;
                                    an.0 &= !(1 << (Anomaly::Upgrade as u8));
                                    sh.h2c = Some(Box::new((Some(req), an)));
                                }
                                req => emit(cx, req, Some(resp), an),
                            }
                        }
                    } else {
                        let weight = response_weight(&resp) + size_of::<(Response, AnomalySet)>();
                        p.response = Some(park((resp, anomalies)));
                        charge(sh, pos, weight, cx);
                    }
                }
                None if opaque_after && upgrades_to_h2c(&resp) => {
                    // Joined after the upgrade request: stream 1's answer will come in
                    // HTTP/2 without it.
                    sh.h2c = Some(Box::new((None, anomalies)));
                }
                None => {
                    let mut an = anomalies;
                    an.insert(Anomaly::ResponseWithoutRequest);
                    emit(cx, None, Some(resp), an);
                }
            }
            if opaque_after {
                sh.opaque = true;
            }
        }
    }
}

/// A 101 switching to HTTP/2 in clear.
fn upgrades_to_h2c(resp: &Response) -> bool {
    resp.status == 101
        && crate::http::header(&resp.headers, "upgrade")
            .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"h2c"))
}

pub(super) fn emit(
    cx: &mut Ctx<'_>,
    request: Option<Request>,
    response: Option<Response>,
    anomalies: AnomalySet,
) {
    emit_h2_or_1(cx, request, response, anomalies, None);
}

/// Emits an HTTP/2 stream's transaction (counted like any other).
pub(in crate::http) fn emit_h2(
    cx: &mut Ctx<'_>,
    request: Option<Request>,
    response: Option<Response>,
    anomalies: AnomalySet,
    info: crate::http::h2::H2Info,
) {
    emit_h2_or_1(cx, request, response, anomalies, Some(info));
}

fn emit_h2_or_1(
    cx: &mut Ctx<'_>,
    request: Option<Request>,
    response: Option<Response>,
    anomalies: AnomalySet,
    h2: Option<crate::http::h2::H2Info>,
) {
    let s = &mut *cx.stats;
    s.transactions += 1;
    if request.is_some() && response.is_some() {
        s.paired += 1;
    }
    for a in anomalies.iter() {
        bump(&mut s.anomalies_by_kind, a.as_str());
    }
    if let Some(r) = &request {
        bump(&mut s.by_method_class, method_class(&r.method));
    }
    bump(
        &mut s.by_status_class,
        status_class(response.as_ref().map(|r| r.status)),
    );
    cx.out.push(Transaction {
        request,
        response,
        anomalies,
        h2,
    });
}
