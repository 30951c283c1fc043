//! The header fields of a message: one buffer of bytes and a span per name and value.
//!
//! A head parsed by httparse is copied once, as it came, and each of its fields is two
//! spans of that copy: nothing is allocated or copied per field. Kept as a list of owned
//! fields (a small string per name, a small vector per value, a pooled buffer for each
//! long one), building them took about 870 instructions per head on the realistic
//! capture, 3% of the pipeline's. Fields built otherwise (HTTP/2, the enforce endpoint,
//! tests) are appended, name and value.

use std::fmt;

/// One header field: its name (case as sent) and its value's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    pub name: Name<'a>,
    pub value: &'a [u8],
}

/// A header field's name: token characters, so ASCII, as sent. Read as bytes (compare
/// them with [`Name::is`]); [`Name::as_str`] checks them, which a lookup never needs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Name<'a>(&'a [u8]);

impl<'a> Name<'a> {
    pub fn as_bytes(self) -> &'a [u8] {
        self.0
    }

    /// The name as text. Names are pushed as `&str`s or parsed by httparse, which takes
    /// only token bytes, so they are always UTF-8 (were one not, it would read as empty).
    pub fn as_str(self) -> &'a str {
        std::str::from_utf8(self.0).unwrap_or_default()
    }

    pub fn len(self) -> usize {
        self.0.len()
    }

    pub fn is_empty(self) -> bool {
        self.0.is_empty()
    }

    /// The name is `name`, in any case.
    pub fn is(self, name: &str) -> bool {
        super::same_name(self.0, name.as_bytes())
    }
}

impl fmt::Debug for Name<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&String::from_utf8_lossy(self.0), f)
    }
}

impl fmt::Display for Name<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.0))
    }
}

/// Where a field's name and value sit in [`Headers::bytes`].
#[derive(Clone, Copy, Debug, Default)]
struct Field {
    name: Span,
    value: Span,
}

#[derive(Clone, Copy, Debug, Default)]
struct Span {
    start: u32,
    len: u32,
}

impl Span {
    fn of(start: usize, len: usize) -> Option<Span> {
        Some(Span {
            start: u32::try_from(start).ok()?,
            len: u32::try_from(len).ok()?,
        })
    }

    fn range(self) -> std::ops::Range<usize> {
        let start = self.start as usize;
        start..start + self.len as usize
    }
}

/// The header fields of a message, in the order sent. See the module documentation.
#[derive(Clone, Default)]
pub struct Headers {
    /// The fields' bytes: a parsed head's, as it came, or names and values pushed.
    bytes: Vec<u8>,
    fields: Vec<Field>,
}

impl Headers {
    pub fn new() -> Headers {
        Headers::default()
    }

    /// Appends a field.
    pub fn push(&mut self, name: &str, value: &[u8]) {
        self.push_bytes(name.as_bytes(), value);
    }

    /// [`Headers::push`] of a name as bytes (another field's).
    fn push_bytes(&mut self, name: &[u8], value: &[u8]) {
        let at = self.bytes.len();
        let (Some(n), Some(v)) = (
            Span::of(at, name.len()),
            Span::of(at + name.len(), value.len()),
        ) else {
            return;
        };
        self.bytes.extend_from_slice(name);
        self.bytes.extend_from_slice(value);
        self.fields.push(Field { name: n, value: v });
    }

    /// Fields httparse parsed from `head`, kept with one copy of `head` (appended to what
    /// `self` holds). A field outside `head` (never, from httparse) is copied on its own.
    pub(crate) fn extend_parsed(&mut self, head: &[u8], parsed: &[httparse::Header<'_>]) {
        let shift = self.bytes.len();
        // Spans are 32-bit: a head (capped far lower) that would not fit is copied field
        // by field, which refuses what does not fit.
        if head.len().saturating_add(shift) > u32::MAX as usize {
            for h in parsed {
                self.push(h.name, h.value);
            }
            return;
        }
        let base = head.as_ptr() as usize;
        // Where `s` starts in `head`, when it lies within it.
        let within = |s: &[u8]| {
            let at = (s.as_ptr() as usize).wrapping_sub(base);
            (at <= head.len() && s.len() <= head.len() - at).then_some(at)
        };
        self.bytes.extend_from_slice(head);
        self.fields.reserve(parsed.len());
        for h in parsed {
            match (within(h.name.as_bytes()), within(h.value)) {
                // In range: `shift + head.len()` fits in 32 bits.
                (Some(n), Some(v)) => self.fields.push(Field {
                    name: Span {
                        start: (shift + n) as u32,
                        len: h.name.len() as u32,
                    },
                    value: Span {
                        start: (shift + v) as u32,
                        len: h.value.len() as u32,
                    },
                }),
                _ => self.push(h.name, h.value),
            }
        }
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    fn field(&self, f: Field) -> Header<'_> {
        Header {
            name: Name(self.bytes.get(f.name.range()).unwrap_or_default()),
            value: self.bytes.get(f.value.range()).unwrap_or_default(),
        }
    }

    /// The fields in order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            headers: self,
            fields: self.fields.iter(),
        }
    }

    /// The value of the first field named `name` (in any case).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|f| {
                super::same_name(
                    self.bytes.get(f.name.range()).unwrap_or_default(),
                    name.as_bytes(),
                )
            })
            .map(|f| self.bytes.get(f.value.range()).unwrap_or_default())
    }

    /// Removes every field, keeping the buffers.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.fields.clear();
    }

    /// Bytes held on the heap.
    pub fn heap_bytes(&self) -> usize {
        self.bytes.capacity() + self.fields.capacity() * std::mem::size_of::<Field>()
    }

    /// Fields the buffers have room for, and their bytes (for pooling).
    pub(crate) fn capacity(&self) -> (usize, usize) {
        (self.fields.capacity(), self.bytes.capacity())
    }
}

/// The fields of [`Headers`] in order.
#[derive(Clone, Debug)]
pub struct Iter<'a> {
    headers: &'a Headers,
    fields: std::slice::Iter<'a, Field>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = Header<'a>;

    fn next(&mut self) -> Option<Header<'a>> {
        self.fields.next().map(|f| self.headers.field(*f))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.fields.size_hint()
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.fields.next_back().map(|f| self.headers.field(*f))
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl<'a> IntoIterator for &'a Headers {
    type Item = Header<'a>;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl<N: AsRef<str>, V: AsRef<[u8]>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(fields: I) -> Headers {
        let mut h = Headers::new();
        for (n, v) in fields {
            h.push(n.as_ref(), v.as_ref());
        }
        h
    }
}

impl<N: AsRef<str>, V: AsRef<[u8]>> Extend<(N, V)> for Headers {
    fn extend<I: IntoIterator<Item = (N, V)>>(&mut self, fields: I) {
        for (n, v) in fields {
            self.push(n.as_ref(), v.as_ref());
        }
    }
}

impl<'a> Extend<Header<'a>> for Headers {
    fn extend<I: IntoIterator<Item = Header<'a>>>(&mut self, fields: I) {
        for h in fields {
            self.push_bytes(h.name.as_bytes(), h.value);
        }
    }
}

/// Equal when the fields are, however their bytes are laid out.
impl PartialEq for Headers {
    fn eq(&self, other: &Headers) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Headers {}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(
                self.iter()
                    .map(|h| (h.name, String::from_utf8_lossy(h.value))),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parsed_head_is_one_copy_and_reads_back_field_by_field() {
        let head =
            b"GET / HTTP/1.1\r\nHost: api.example\r\nX-Empty:\r\nAuthorization: Bearer t\r\n\r\n";
        let mut slots = [httparse::EMPTY_HEADER; 8];
        let mut req = httparse::Request::new(&mut slots);
        assert!(req.parse(head).is_ok_and(|s| s.is_complete()));
        let mut h = Headers::new();
        h.extend_parsed(head, req.headers);
        let got: Vec<(&str, &[u8])> = h.iter().map(|f| (f.name.as_str(), f.value)).collect();
        assert_eq!(
            got,
            [
                ("Host", &b"api.example"[..]),
                ("X-Empty", b""),
                ("Authorization", b"Bearer t"),
            ]
        );
        // One copy of the head.
        assert_eq!(h.bytes, head);
        assert_eq!(h.get("authorization"), Some(&b"Bearer t"[..]));
        assert_eq!(h.get("HOST"), Some(&b"api.example"[..]));
        assert_eq!(h.get("x-empty"), Some(&b""[..]));
        assert_eq!(h.get("x-missing"), None);
        // The same fields pushed one by one are equal, though laid out otherwise.
        let pushed: Headers = [
            ("Host", "api.example"),
            ("X-Empty", ""),
            ("Authorization", "Bearer t"),
        ]
        .into_iter()
        .collect();
        assert_eq!(pushed, h);
        assert_ne!(pushed.bytes, h.bytes);
    }

    #[test]
    fn parsed_fields_append_to_pushed_ones_and_slices_from_elsewhere_are_copied() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n";
        let mut slots = [httparse::EMPTY_HEADER; 4];
        let mut resp = httparse::Response::new(&mut slots);
        assert!(resp.parse(head).is_ok_and(|s| s.is_complete()));
        let mut h: Headers = [("X-First", "1")].into_iter().collect();
        h.extend_parsed(head, resp.headers);
        assert_eq!(h.get("content-type"), Some(&b"application/json"[..]));
        assert_eq!(h.get("x-first"), Some(&b"1"[..]));
        // Fields that are not slices of `head` are copied on their own.
        let elsewhere = [httparse::Header {
            name: "X-Other",
            value: b"v",
        }];
        h.extend_parsed(head, &elsewhere);
        assert_eq!(
            h.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
            ["X-First", "Content-Type", "X-Other"]
        );
        assert_eq!(h.get("x-other"), Some(&b"v"[..]));
        h.clear();
        assert!(h.is_empty() && h.heap_bytes() > 0, "emptied, buffers kept");
    }
}
