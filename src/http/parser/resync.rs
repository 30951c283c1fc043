//! Finding message starts: probes of whether bytes look like a request or status line,
//! the search for the next start line after damage or mid-stream pickup, and which way a
//! connection's first bytes travel.

use super::*;

/// Methods a resync accepts as a message start. Normal parsing accepts any token.
pub(super) const RESYNC_METHODS: &[&[u8]] = &[
    b"GET ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"PATCH ",
    b"HEAD ",
    b"OPTIONS ",
    b"CONNECT ",
    b"TRACE ",
];

/// A byte search over a haystack (memchr family).
pub(super) type Finder = fn(&[u8]) -> Option<usize>;

/// Whether bytes look like the start of a message head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Probe {
    Yes,
    No,
    NeedMore,
}

pub(super) fn probe_resync_method(b: &[u8]) -> Probe {
    let mut need_more = false;
    for m in RESYNC_METHODS {
        if b.starts_with(m) {
            return Probe::Yes;
        }
        need_more |= b.len() < m.len() && m.starts_with(b);
    }
    if need_more {
        Probe::NeedMore
    } else {
        Probe::No
    }
}

pub(super) fn is_method_char(c: u8) -> bool {
    c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'-' || c == b'_'
}

/// A known method, alone (`GET` then a line break: servers answer such a line too).
pub(super) fn is_known_method(m: &[u8]) -> bool {
    RESYNC_METHODS
        .iter()
        .any(|k| k.strip_suffix(b" ") == Some(m))
}

/// Any plausible method token (upper-case letters, digits, `-`, `_`) then a space, or a
/// known method then a line break.
pub(super) fn probe_method_token(b: &[u8]) -> Probe {
    for (i, &c) in b.iter().enumerate().take(PROBE_LEN) {
        if c == b' ' {
            return if i == 0 { Probe::No } else { Probe::Yes };
        }
        if c == b'\r' || c == b'\n' {
            return match b.get(..i) {
                Some(m) if is_known_method(m) => Probe::Yes,
                _ => Probe::No,
            };
        }
        if !is_method_char(c) {
            return Probe::No;
        }
    }
    if b.len() >= PROBE_LEN {
        Probe::No
    } else {
        Probe::NeedMore
    }
}

pub(super) fn probe_status_line(b: &[u8]) -> Probe {
    if b.starts_with(STATUS_LINE_PREFIX) {
        Probe::Yes
    } else if STATUS_LINE_PREFIX.starts_with(b) {
        Probe::NeedMore
    } else {
        Probe::No
    }
}

/// Which way a connection's first bytes, seen travelling in `dir`, really go. `None`:
/// too few bytes to tell.
pub(super) fn orientation_of(dir: Dir, b: &[u8]) -> Option<Orientation> {
    let request = probe_resync_method(b);
    let response = probe_status_line(b);
    let (expected, inverted) = match dir {
        Dir::ToServer => (request, response),
        Dir::ToClient => (response, request),
    };
    match (expected, inverted) {
        (_, Probe::Yes) => Some(Orientation::Swapped),
        (Probe::Yes, _) => Some(Orientation::AsGiven),
        (Probe::NeedMore, _) | (_, Probe::NeedMore) => None,
        _ => Some(Orientation::AsGiven),
    }
}

/// Next position in `hay` that could start a message head for `role`: a first byte of a
/// known method, or the `H` of `HTTP/1.`.
pub(super) fn next_candidate(role: Role, hay: &[u8]) -> Option<usize> {
    match role {
        Role::Response => memchr(b'H', hay),
        Role::Request => {
            // First letters of RESYNC_METHODS. Each search stops at the best hit so far,
            // so the scan stays linear.
            let finders: [Finder; 3] = [
                |h| memchr3(b'G', b'P', b'D', h),
                |h| memchr3(b'H', b'O', b'C', h),
                |h| memchr(b'T', h),
            ];
            let mut best = None;
            let mut end = hay.len();
            for find in finders {
                if let Some(i) = hay.get(..end).and_then(find) {
                    best = Some(i);
                    end = i;
                }
            }
            best
        }
    }
}

/// Where in `line` (ending with its line break) a start line for `role` begins, if any:
/// the first candidate that looks like a head, is at most `line_cap` long and parses.
pub(super) fn find_start_line(role: Role, line: &[u8], line_cap: usize) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = line.get(from..).and_then(|s| next_candidate(role, s)) {
        let c = from + i;
        let rest = line.get(c..).unwrap_or_default();
        let looks = match role {
            Role::Request => probe_resync_method(rest),
            Role::Response => probe_status_line(rest),
        };
        if rest.len() <= line_cap
            && looks == Probe::Yes
            && judge_start_line(role, rest, 0, false) == Some(LineVerdict::Strict)
        {
            return Some(c);
        }
        from = c + 1;
    }
    None
}
