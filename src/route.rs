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

/// Route template of a path: numeric, UUID, long hex and long base64-ish segments become
/// `{id}` (a placeholder until route learning lands).
pub fn route_of(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    route_into(path, &mut out);
    out
}

/// [`route_of`] written into `out` (cleared first): a reused buffer, no allocation.
pub fn route_into(path: &str, out: &mut String) {
    out.clear();
    // `split('/')` by byte search: `str::split` runs a char searcher per segment, a
    // measurable share of every request on short paths.
    let mut start = 0;
    let ends = memchr::memchr_iter(b'/', path.as_bytes()).chain(std::iter::once(path.len()));
    for (i, end) in ends.enumerate() {
        // `/` is ASCII: both ends are character boundaries.
        let seg = path.get(start..end).unwrap_or_default();
        start = end + 1;
        if i > 0 {
            out.push('/');
        }
        if is_id_segment(seg) {
            out.push_str("{id}");
        } else {
            out.push_str(seg);
        }
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
            route_into(&path, &mut out);
            prop_assert_eq!(&out, &route_by_split(&path));
            prop_assert_eq!(route_of(&path), out);
        }
    }
}
