//! Route templating: a request path becomes the route every stage names it by
//! (`/api/v1/users/1001/orders` → `/api/v1/users/{id}/orders`). Ids, and personal values
//! used as ids, never reach a route, which alerts and metrics show.

use crate::redact;

/// The path part of a request target, without the query string or fragment.
pub fn path_of(target: &str) -> &str {
    // A byte search (vectorised): both are ASCII, so the cut is on a char boundary.
    let end = memchr::memchr2(b'?', b'#', target.as_bytes()).unwrap_or(target.len());
    target.get(..end).unwrap_or(target)
}

/// A request target's path and query: `target.split_once('?')`, else the whole target
/// and no query; found by a byte search (the char searcher `split_once` runs was a
/// measurable share of the requests' cost where every request is cut).
pub fn split_query(target: &str) -> (&str, &str) {
    match memchr::memchr(b'?', target.as_bytes()) {
        // `?` is ASCII: both sides of it are character boundaries.
        Some(i) => (
            target.get(..i).unwrap_or(target),
            target.get(i + 1..).unwrap_or_default(),
        ),
        None => (target, ""),
    }
}

/// The `/`-separated segments of `path`: what `path.split('/')` gives, by a plain byte
/// loop (paths are short: `str::split` runs a char searcher per segment over the standard
/// library's generic `memchr`, and a vectorised search costs more to set up than a path's
/// few dozen bytes take to walk).
pub fn segments(path: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(path);
    std::iter::from_fn(move || {
        let r = rest?;
        match r.bytes().position(|b| b == b'/') {
            // `/` is ASCII: both sides of it are character boundaries.
            Some(i) => {
                rest = r.get(i + 1..);
                r.get(..i)
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

/// The `/`-separated segments of `path`, last first: what `path.rsplit('/')` gives, by a
/// plain byte loop from the end.
pub fn segments_from_end(path: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(path);
    std::iter::from_fn(move || {
        let r = rest?;
        match r.bytes().rposition(|b| b == b'/') {
            Some(i) => {
                rest = r.get(..i);
                r.get(i + 1..)
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

/// Route template of a path: numeric, UUID, long hex and long base64-ish segments become
/// `{id}` (a placeholder until route learning lands).
pub fn route_of(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let _ = route_into(path, &mut out);
    out
}

/// [`route_of`] written into `out` (cleared first): a reused buffer, no allocation. Gives
/// which segments it found to be ids, for [`crate::detect::objects`] to name the objects
/// by without judging every segment again.
pub fn route_into(path: &str, out: &mut String) -> IdSegments {
    out.clear();
    let mut ids = IdSegments {
        bits: 0,
        path_len: path.len(),
    };
    for (i, seg) in segments(path).enumerate() {
        if i > 0 {
            out.push('/');
        }
        if is_id_segment(seg) {
            out.push_str("{id}");
            if i < 64 {
                ids.bits |= 1 << i;
            }
        } else {
            out.push_str(seg);
        }
    }
    ids
}

/// Which segments of a path (as `path.split('/')` numbers them, empty ones counted) are
/// ids, as [`route_into`] judged them: the first 64 remembered, the rest judged again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdSegments {
    bits: u64,
    /// The length of the path judged: a caller holding another cut of the target (one
    /// without its fragment removed) judges its segments itself.
    path_len: usize,
}

impl IdSegments {
    /// Whether segment `i` of the path judged, `seg`, is an id.
    pub fn is_id(&self, i: usize, seg: &str) -> bool {
        match u32::try_from(i) {
            Ok(i) if i < 64 => self.bits >> i & 1 == 1,
            _ => is_id_segment(seg),
        }
    }

    /// These judgements, if they are of a path of `path`'s length: for a `path` cut from
    /// the same target as the path judged (both start where the target starts, so the
    /// same length is the same path).
    pub fn of_len(self, path: &str) -> Option<IdSegments> {
        (self.path_len == path.len()).then_some(self)
    }
}

/// A path segment that names an object rather than a resource: numeric, UUID, long hex,
/// long base64-ish, or personal data (an e-mail address, a card number).
pub fn is_id_segment(s: &str) -> bool {
    if s.is_empty() {
        return false;
    }
    let b = s.as_bytes();
    if b.iter().all(u8::is_ascii_digit) {
        return true;
    }
    // Personal values used as ids (`/users/jane@example.com`) are ids, and must not reach
    // routes, which alerts and metrics show.
    if redact::is_email_or_card(s) {
        return true;
    }
    let is_uuid = b.len() == 36
        && b.iter().enumerate().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                *c == b'-'
            } else {
                c.is_ascii_hexdigit()
            }
        });
    let is_hex = b.len() >= 16 && b.iter().all(u8::is_ascii_hexdigit);
    let is_b64 = b.len() >= 20
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_'))
        && b.iter().any(u8::is_ascii_digit);
    is_uuid || is_hex || is_b64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The route by `str::split`, as it was built before the byte search.
    fn route_by_split(path: &str) -> String {
        path.split('/')
            .map(|seg| if is_id_segment(seg) { "{id}" } else { seg })
            .collect::<Vec<_>>()
            .join("/")
    }

    proptest! {
        /// Paths and queries cut, and segments taken from the end, as `split_once` and
        /// `rsplit` give them, on any text (several `?` and `/`, multi-byte characters).
        #[test]
        fn cuts_match_the_char_searchers(t in "[a-z/?=&é0-9]{0,24}") {
            prop_assert_eq!(split_query(&t), t.split_once('?').unwrap_or((&t, "")));
            let ours: Vec<&str> = segments_from_end(&t).collect();
            let theirs: Vec<&str> = t.rsplit('/').collect();
            prop_assert_eq!(ours, theirs);
            let ours: Vec<&str> = segments(&t).collect();
            let theirs: Vec<&str> = t.split('/').collect();
            prop_assert_eq!(ours, theirs);
        }

        /// Any path (empty segments, leading and trailing slashes, multi-byte characters,
        /// ids of every kind) gets the route `str::split` gives, in a reused buffer.
        #[test]
        fn routes_match_splitting_on_slashes(
            segs in proptest::collection::vec(
                prop_oneof![
                    Just(String::new()),
                    "[0-9]{1,12}",
                    "[a-z]{1,10}",
                    "[0-9a-f]{16,20}",
                    "[a-z0-9._%+-]{1,8}@[a-z]{2,6}\\.com",
                    "\\PC{0,6}",
                ],
                0..8,
            ),
        ) {
            let path = segs.join("/");
            let mut out = String::from("stale");
            let ids = route_into(&path, &mut out);
            prop_assert_eq!(&out, &route_by_split(&path));
            prop_assert_eq!(route_of(&path), out);
            // The ids remembered are the segments judged ids.
            for (i, seg) in path.split('/').enumerate() {
                prop_assert_eq!(ids.is_id(i, seg), is_id_segment(seg));
            }
            prop_assert!(ids.of_len(&path).is_some());
            let longer = format!("{path}#x");
            prop_assert!(ids.of_len(&longer).is_none());
        }
    }
}
