//! HPACK (RFC 7541) header block decoding for a passive observer: one decoder per
//! direction, its dynamic table following the connection.
//!
//! A monitor that joins a connection late, or loses bytes, does not know the entries the
//! encoder inserted before: strict decoders fail the whole block at the first reference to
//! one. This decoder walks every representation instead: a field whose index it does not
//! know is reported as unknown (name, value or both) and decoding goes on, and every
//! literal with incremental indexing is inserted (with an unknown name when its name was
//! an unknown index) so that later indices stay aligned with the encoder's table. As new
//! literals arrive the table fills with known entries and the block decodes whole again.
//! Entries the encoder evicted are never referenced, so keeping more than the encoder has
//! is harmless; the table is capped at [`MAX_TABLE_BYTES`] whatever the peer asks.
//!
//! The static table, the dynamic table's eviction rule and Huffman decoding come from
//! `httlib-hpack` / `httlib-huffman`; integers and the representation walk are here.
//! Bounds: decoded names and values of one block past `max_list_bytes` are not reported
//! (a block that references a large entry many times: an HPACK bomb), but the block is
//! still walked to the end so that the table stays in step. Linear in the block's bytes.

use httlib_hpack::table::Table;
use httlib_huffman::DecoderSpeed;

/// Largest dynamic table kept per direction, whatever size the encoder signals.
pub const MAX_TABLE_BYTES: u32 = 64 * 1024;
/// The dynamic table size both ends start with (SETTINGS_HEADER_TABLE_SIZE default).
pub const DEFAULT_TABLE_BYTES: u32 = 4096;

/// Why a header block could not be decoded to its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HpackError {
    /// The block ends inside a representation.
    Truncated,
    /// An integer longer than 32 bits.
    Overflow,
    /// A Huffman string that does not decode.
    Huffman,
    /// Index 0, which no representation may use.
    ZeroIndex,
}

impl HpackError {
    pub fn as_str(self) -> &'static str {
        match self {
            HpackError::Truncated => "hpack-truncated",
            HpackError::Overflow => "hpack-integer-overflow",
            HpackError::Huffman => "hpack-bad-huffman",
            HpackError::ZeroIndex => "hpack-zero-index",
        }
    }
}

/// What decoding one block found, besides its fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockOutcome {
    /// Fields whose name or value refer to a table entry this decoder does not know.
    pub unknown: u16,
    /// Bytes of names and values not reported past the list cap.
    pub capped: bool,
    /// Decoding stopped early.
    pub error: Option<HpackError>,
}

/// One decoded field; `None` where the table entry was unknown.
pub type Field<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// A marker name for entries inserted with a name that was an unknown index (HTTP/2 field
/// names are never empty).
const UNKNOWN_NAME: &[u8] = b"";

/// Huffman-coded literals remembered per direction: clients send some long values as
/// literals on every request (`authorization` never indexed, tokens without indexing), and
/// comparing bytes costs far less than decoding them again.
const HUFFMAN_CACHE: usize = 4;
/// Shortest and longest encoded literal worth remembering.
const HUFFMAN_CACHE_MIN: usize = 24;
const HUFFMAN_CACHE_MAX: usize = 4096;

/// The HPACK decoder of one direction.
pub struct Decoder {
    table: Table<'static>,
    /// Scratch for literal names and values.
    name: Vec<u8>,
    value: Vec<u8>,
    /// Recent long Huffman literals: (encoded, decoded), replaced round robin.
    huffman: Vec<(Vec<u8>, Vec<u8>)>,
    huffman_next: usize,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("entries", &self.table.dynamic_len())
            .field("bytes", &self.table.dynamic_size())
            .finish()
    }
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder {
            table: Table::with_dynamic_size(DEFAULT_TABLE_BYTES),
            name: Vec::new(),
            value: Vec::new(),
            huffman: Vec::new(),
            huffman_next: 0,
        }
    }

    /// Forgets every dynamic entry (after lost bytes the table can no longer be trusted:
    /// later literals rebuild it).
    pub fn forget(&mut self) {
        let max = self.table.max_dynamic_size();
        self.table = Table::with_dynamic_size(max);
    }

    /// Heap bytes the table holds (its RFC 7541 size: names, values, 32 per entry).
    pub fn held_bytes(&self) -> usize {
        self.table.dynamic_size() as usize
            + self
                .huffman
                .iter()
                .map(|(e, d)| e.capacity() + d.capacity())
                .sum::<usize>()
    }

    /// Entries in the dynamic table.
    pub fn entries(&self) -> usize {
        self.table.dynamic_len()
    }

    /// Decodes one complete header block, reporting each field to `visit` in order while
    /// the names and values reported stay within `max_list_bytes`.
    pub fn decode(
        &mut self,
        block: &[u8],
        max_list_bytes: usize,
        visit: &mut impl FnMut(Field<'_>),
    ) -> BlockOutcome {
        let mut out = BlockOutcome::default();
        let mut pos = 0;
        let mut listed = 0usize;
        while pos < block.len() {
            if let Err(e) = self.one(
                block,
                &mut pos,
                max_list_bytes,
                &mut listed,
                &mut out,
                visit,
            ) {
                out.error = Some(e);
                break;
            }
        }
        out
    }

    /// One representation at `pos`.
    fn one(
        &mut self,
        block: &[u8],
        pos: &mut usize,
        max_list_bytes: usize,
        listed: &mut usize,
        out: &mut BlockOutcome,
        visit: &mut impl FnMut(Field<'_>),
    ) -> Result<(), HpackError> {
        let first = *block.get(*pos).ok_or(HpackError::Truncated)?;
        let mut report = |name: Option<&[u8]>, value: Option<&[u8]>, out: &mut BlockOutcome| {
            if name.is_none() || value.is_none() {
                out.unknown = out.unknown.saturating_add(1);
            }
            let n = name.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len) + 32;
            if *listed + n > max_list_bytes {
                out.capped = true;
                return;
            }
            *listed += n;
            visit((name, value));
        };
        if first & 0x80 != 0 {
            // Indexed field (§6.1).
            let index = integer(block, pos, 7)?;
            if index == 0 {
                return Err(HpackError::ZeroIndex);
            }
            match self.table.get(index) {
                Some((n, v)) => report(known(n), Some(v), out),
                None => report(None, None, out),
            }
            return Ok(());
        }
        if first & 0xe0 == 0x20 {
            // Dynamic table size update (§6.3): never more than we keep.
            let size = integer(block, pos, 5)?;
            self.table
                .update_max_dynamic_size(size.min(MAX_TABLE_BYTES));
            return Ok(());
        }
        // Literals: with incremental indexing (§6.2.1, 6-bit index), without indexing and
        // never indexed (§6.2.2-3, 4-bit index).
        let indexing = first & 0xc0 == 0x40;
        let index = integer(block, pos, if indexing { 6 } else { 4 })?;
        let mut name_known = true;
        self.name.clear();
        if index == 0 {
            self.string(block, pos, true)?;
        } else {
            match self.table.get(index).and_then(|(n, _)| known(n)) {
                Some(n) => self.name.extend_from_slice(n),
                None => name_known = false,
            }
        }
        self.value.clear();
        self.string(block, pos, false)?;
        let name = name_known.then_some(self.name.as_slice());
        report(name, Some(self.value.as_slice()), out);
        if indexing {
            let name = if name_known {
                self.name.clone()
            } else {
                UNKNOWN_NAME.to_vec()
            };
            self.table.insert(name, self.value.clone());
        }
        Ok(())
    }
}

impl Decoder {
    /// A string literal (RFC 7541 §5.2) into the name or value scratch, Huffman-decoded
    /// when flagged (long ones through the cache).
    fn string(&mut self, buf: &[u8], pos: &mut usize, name: bool) -> Result<(), HpackError> {
        let huffman = buf.get(*pos).ok_or(HpackError::Truncated)? & 0x80 != 0;
        let len = integer(buf, pos, 7)? as usize;
        let raw = buf
            .get(*pos..pos.saturating_add(len))
            .ok_or(HpackError::Truncated)?;
        *pos += len;
        let dst = if name {
            &mut self.name
        } else {
            &mut self.value
        };
        if !huffman {
            dst.extend_from_slice(raw);
            return Ok(());
        }
        if !(HUFFMAN_CACHE_MIN..=HUFFMAN_CACHE_MAX).contains(&raw.len()) {
            return httlib_huffman::decode(raw, dst, DecoderSpeed::FiveBits)
                .map_err(|_| HpackError::Huffman);
        }
        if let Some((_, decoded)) = self.huffman.iter().find(|(e, _)| e.as_slice() == raw) {
            dst.extend_from_slice(decoded);
            return Ok(());
        }
        let start = dst.len();
        httlib_huffman::decode(raw, dst, DecoderSpeed::FiveBits)
            .map_err(|_| HpackError::Huffman)?;
        let entry = (raw.to_vec(), dst[start..].to_vec());
        if self.huffman.len() < HUFFMAN_CACHE {
            self.huffman.push(entry);
        } else {
            self.huffman[self.huffman_next] = entry;
            self.huffman_next = (self.huffman_next + 1) % HUFFMAN_CACHE;
        }
        Ok(())
    }
}

/// A table entry's name, unless it is the unknown-name marker.
fn known(name: &[u8]) -> Option<&[u8]> {
    (name != UNKNOWN_NAME).then_some(name)
}

/// An integer with an N-bit prefix (RFC 7541 §5.1), at most 32 bits.
fn integer(buf: &[u8], pos: &mut usize, prefix: u8) -> Result<u32, HpackError> {
    let mask = (1u32 << prefix) - 1;
    let first = u32::from(*buf.get(*pos).ok_or(HpackError::Truncated)?) & mask;
    *pos += 1;
    if first < mask {
        return Ok(first);
    }
    let mut value = u64::from(mask);
    let mut shift = 0u32;
    loop {
        let b = *buf.get(*pos).ok_or(HpackError::Truncated)?;
        *pos += 1;
        value += u64::from(b & 0x7f) << shift;
        if value > u64::from(u32::MAX) {
            return Err(HpackError::Overflow);
        }
        if b & 0x80 == 0 {
            return Ok(value as u32);
        }
        shift += 7;
        if shift > 28 {
            return Err(HpackError::Overflow);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Owned = Vec<(Option<Vec<u8>>, Option<Vec<u8>>)>;

    fn decode(d: &mut Decoder, block: &[u8]) -> (Owned, BlockOutcome) {
        let mut fields = Vec::new();
        let out = d.decode(block, 1 << 20, &mut |(n, v)| {
            fields.push((n.map(<[u8]>::to_vec), v.map(<[u8]>::to_vec)))
        });
        (fields, out)
    }

    fn known_fields(list: &[(Vec<u8>, Vec<u8>)]) -> Owned {
        list.iter()
            .map(|(n, v)| (Some(n.clone()), Some(v.clone())))
            .collect()
    }

    /// RFC 7541 Appendix C.4: three requests with Huffman coding, one decoder.
    #[test]
    fn rfc7541_c4_requests_with_huffman() {
        let hex = |s: &str| -> Vec<u8> {
            let s: String = s.split_whitespace().collect();
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect()
        };
        let mut d = Decoder::new();
        let (f, o) = decode(&mut d, &hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"));
        assert_eq!(o, BlockOutcome::default());
        assert_eq!(
            f,
            known_fields(&[
                (b":method".to_vec(), b"GET".to_vec()),
                (b":scheme".to_vec(), b"http".to_vec()),
                (b":path".to_vec(), b"/".to_vec()),
                (b":authority".to_vec(), b"www.example.com".to_vec()),
            ])
        );
        let (f, _) = decode(&mut d, &hex("8286 84be 5886 a8eb 1064 9cbf"));
        assert_eq!(
            f[3],
            (
                Some(b":authority".to_vec()),
                Some(b"www.example.com".to_vec())
            )
        );
        assert_eq!(
            f[4],
            (Some(b"cache-control".to_vec()), Some(b"no-cache".to_vec()))
        );
        let (f, o) = decode(
            &mut d,
            &hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"),
        );
        assert_eq!(o.unknown, 0);
        assert_eq!(
            f[2],
            (Some(b":path".to_vec()), Some(b"/index.html".to_vec()))
        );
        assert_eq!(
            f[4],
            (Some(b"custom-key".to_vec()), Some(b"custom-value".to_vec()))
        );
        assert_eq!(d.held_bytes(), 164);
    }

    /// Joined after the encoder filled its table: references to entries from before are
    /// unknown, fields sent as literals decode, and the table recovers as they arrive.
    #[test]
    fn joins_mid_connection_and_recovers() {
        let mut enc = loona_hpack::Encoder::new();
        let early: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"GET"),
            (b":path", b"/api/v1/profile"),
            (b"approov-token", b"eyJhbGciOiJIUzI1NiJ9.early.sig"),
            (b"x-app", b"shop/1.2"),
        ];
        let _ = enc.encode(early.iter().copied());
        // A new name and value: a literal the late decoder can read (and index).
        let second: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"GET"),
            (b":path", b"/api/v1/profile"),
            (b"x-request-id", b"42"),
            (b"x-app", b"shop/1.2"),
        ];
        let block = enc.encode(second.iter().copied());
        let mut late = Decoder::new();
        let (f, o) = decode(&mut late, &block);
        // Static-table names decode; x-request-id is a new literal (and is indexed).
        assert_eq!(f[0], (Some(b":method".to_vec()), Some(b"GET".to_vec())));
        assert_eq!(
            f[1],
            (Some(b":path".to_vec()), Some(b"/api/v1/profile".to_vec()))
        );
        assert_eq!(f[2], (Some(b"x-request-id".to_vec()), Some(b"42".to_vec())));
        // x-app is the early block's entry: unknown here.
        assert_eq!(f[3], (None, None));
        assert_eq!(o.unknown, 1);
        assert_eq!(o.error, None);
        // The same fields again: x-request-id is now an entry the late decoder has.
        let block = enc.encode(second.iter().copied());
        let (f, o) = decode(&mut late, &block);
        assert_eq!(f[2], (Some(b"x-request-id".to_vec()), Some(b"42".to_vec())));
        assert_eq!(o.unknown, 1);
        // A new value under the unknown entry's name: the value is read, the name not.
        let block = enc.encode([(&b"x-app"[..], &b"shop/1.3"[..])]);
        let (f, o) = decode(&mut late, &block);
        assert_eq!(f, vec![(None, Some(b"shop/1.3".to_vec()))]);
        assert_eq!(o.unknown, 1);
    }

    #[test]
    fn hostile_blocks_end_in_errors_not_panics() {
        let mut d = Decoder::new();
        assert_eq!(decode(&mut d, &[0x80]).1.error, Some(HpackError::ZeroIndex));
        assert_eq!(
            decode(&mut d, &[0x40, 0x05, b'a']).1.error,
            Some(HpackError::Truncated)
        );
        assert_eq!(
            decode(&mut d, &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f])
                .1
                .error,
            Some(HpackError::Overflow)
        );
        // A size update far beyond the cap is held to it.
        let mut big = vec![0x3f];
        big.extend([0xe1, 0xff, 0xff, 0x0f]);
        assert_eq!(decode(&mut d, &big).1.error, None);
        for i in 0..10_000u32 {
            let mut enc = loona_hpack::Encoder::new();
            let v = vec![b'x'; 1000];
            let name = format!("h{i}");
            let b = enc.encode([(name.as_bytes(), v.as_slice())]);
            let _ = decode(&mut d, &b);
        }
        assert!(d.held_bytes() <= MAX_TABLE_BYTES as usize);
    }

    /// A block that references one large entry thousands of times is walked but its list
    /// is capped.
    #[test]
    fn hpack_bomb_is_capped() {
        let mut d = Decoder::new();
        let mut block = vec![0x40, 0x01, b'b', 0x7f, 0xa1, 0x1e]; // value of 4000 bytes
        block.extend(std::iter::repeat_n(b'v', 4000));
        block.extend(std::iter::repeat_n(0xbe, 10_000)); // index 62, 10,000 times
        let mut n = 0usize;
        let mut bytes = 0usize;
        let out = d.decode(&block, 64 * 1024, &mut |(_, v)| {
            n += 1;
            bytes += v.map_or(0, <[u8]>::len);
        });
        assert!(out.capped);
        assert!(out.error.is_none());
        assert!(bytes <= 64 * 1024, "{bytes}");
        assert!(n > 1 && n < 20, "{n}");
    }

    /// `authorization` (static index 23) as a literal never indexed, Huffman-coded, as
    /// nghttp2 sends it.
    fn huffman_authorization(value: &str) -> Vec<u8> {
        let mut coded = Vec::new();
        httlib_huffman::encode(value.as_bytes(), &mut coded).unwrap();
        // Index 23 with a 4-bit prefix: 15, then 8.
        let mut b = vec![0x1f, 23 - 15];
        assert!((127..127 + 128).contains(&coded.len()));
        b.extend([0xff, (coded.len() - 127) as u8]);
        b.extend(coded);
        b
    }

    /// Long Huffman literals repeated on every request decode the same from the cache, and
    /// a different literal of the same length is not mistaken for a remembered one.
    #[test]
    fn repeated_huffman_literals_decode_alike() {
        let mut d = Decoder::new();
        let a = format!("Bearer eyJhbGciOiJIUzI1NiJ9.{}.sig", "a".repeat(200));
        let b = format!("Bearer eyJhbGciOiJIUzI1NiJ9.{}.sig", "b".repeat(200));
        for v in [&a, &a, &b, &a, &b] {
            let (f, o) = decode(&mut d, &huffman_authorization(v));
            assert_eq!(o, BlockOutcome::default());
            assert_eq!(
                f,
                vec![(Some(b"authorization".to_vec()), Some(v.as_bytes().to_vec()))]
            );
        }
        assert_eq!(d.huffman.len(), 2);
    }

    proptest! {
        /// Whatever loona-hpack's encoder makes of random header lists (Huffman or not,
        /// indexed or not), this decoder reads back exactly the list.
        #[test]
        fn decodes_what_an_independent_encoder_encodes(
            lists in prop::collection::vec(
                prop::collection::vec(
                    ("[a-z][a-z0-9-]{0,12}", prop::collection::vec(any::<u8>(), 0..64)),
                    0..12,
                ),
                1..6,
            )
        ) {
            let mut enc = loona_hpack::Encoder::new();
            let mut d = Decoder::new();
            for list in &lists {
                let block = enc.encode(list.iter().map(|(n, v)| (n.as_bytes(), v.as_slice())));
                let (got, out) = decode(&mut d, &block);
                prop_assert_eq!(out, BlockOutcome::default());
                let want: Vec<_> = list
                    .iter()
                    .map(|(n, v)| (n.as_bytes().to_vec(), v.clone()))
                    .collect();
                prop_assert_eq!(got, known_fields(&want));
            }
        }

        #[test]
        fn random_blocks_never_panic(
            blocks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 1..8)
        ) {
            let mut d = Decoder::new();
            for b in &blocks {
                let _ = decode(&mut d, b);
                prop_assert!(d.held_bytes() <= MAX_TABLE_BYTES as usize);
            }
        }
    }
}
