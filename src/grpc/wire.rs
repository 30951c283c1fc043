//! The protobuf wire format walked scalar by scalar, with or without a schema.
//!
//! Keys and varints are read by prost's `encoding` module. Without a descriptor a
//! length-delimited field is a nested message when it parses completely as one with
//! plausible keys (field numbers, wire types 0, 1, 2 or 5, lengths that fit) unless it is
//! printable text; else a string (valid UTF-8) or bytes. Each nested candidate is checked
//! by reading only its own keys (not its children's), so every byte is read a bounded
//! number of times however deep the message nests.

use prost::bytes::Buf;
use prost::encoding::{WireType, decode_key, decode_varint};
use prost_reflect::{Kind, MessageDescriptor};

/// Deepest message nesting walked (as the JSON scanner's [`crate::detect`] cap); deeper
/// messages are skipped and the walk marked truncated.
pub const MAX_DEPTH: usize = 32;
/// Fields visited per walk by default (as the JSON scanner's node cap).
pub const MAX_NODES: u32 = 20_000;

/// One scalar of a message. Varints are unsigned wire values without a schema (a negative
/// `int64` is a large `Uint`); with one they are typed (`Int` for signed kinds and enums,
/// zigzag undone).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scalar<'a> {
    Str(&'a str),
    Bytes(&'a [u8]),
    Int(i64),
    Uint(u64),
    Float(f64),
    Bool(bool),
}

/// The bounds of one walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Deepest nesting walked.
    pub max_depth: usize,
    /// Most fields visited (scalars and messages).
    pub max_nodes: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: MAX_DEPTH,
            max_nodes: MAX_NODES,
        }
    }
}

/// What a walk saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalkStats {
    /// Fields visited (scalars and nested messages).
    pub nodes: u32,
    /// Scalars handed to the visitor.
    pub scalars: u32,
    /// The longest repeated field: with a schema, the element count of the longest list
    /// (packed or not); without one, the longest run of one field number repeated (two or
    /// more; encoders write a list's elements together).
    pub records: u32,
    /// The depth or node cap cut the walk short.
    pub truncated: bool,
    /// Bytes that are not protobuf (or not what the schema says) ended the walk, or part of
    /// it, early; what came before was visited.
    pub malformed: bool,
}

/// Walks a message, handing each scalar to `visit` with its field path, under the default
/// [`Limits`]. Without `desc` paths are field numbers (`5.2`); with it field names, a
/// repeated field's or map's elements marked `[]` (`orders[].id`, `attributes[].key`), and
/// fields the schema does not know by number.
pub fn walk(
    msg: &[u8],
    desc: Option<&MessageDescriptor>,
    visit: &mut impl FnMut(&str, Scalar<'_>),
) -> WalkStats {
    walk_with(msg, desc, Limits::default(), visit)
}

/// [`walk`] under explicit limits.
pub fn walk_with(
    msg: &[u8],
    desc: Option<&MessageDescriptor>,
    limits: Limits,
    visit: &mut impl FnMut(&str, Scalar<'_>),
) -> WalkStats {
    let mut w = Walker {
        visit,
        path: String::new(),
        limits,
        stats: WalkStats::default(),
    };
    let ended = match desc {
        Some(d) => w.typed(msg, d, 0),
        None => w.raw(msg, 0),
    };
    if ended.is_err() {
        w.stats.malformed = true;
    }
    w.stats
}

/// The bytes ended the walk of a message early.
struct Malformed;

impl From<prost::DecodeError> for Malformed {
    fn from(_: prost::DecodeError) -> Self {
        Malformed
    }
}

/// One field's value as the wire holds it.
#[derive(Clone, Copy)]
enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Len(&'a [u8]),
}

/// Reads one field's key and value; `Err` on groups (deprecated, and never seen from a
/// gRPC API), bad keys and lengths that overrun the buffer.
fn field<'a>(buf: &mut &'a [u8]) -> Result<(u32, Value<'a>), Malformed> {
    let (number, wire) = decode_key(buf)?;
    let value = match wire {
        WireType::Varint => Value::Varint(decode_varint(buf)?),
        WireType::SixtyFourBit => {
            let (b, rest) = buf.split_first_chunk::<8>().ok_or(Malformed)?;
            *buf = rest;
            Value::Fixed64(u64::from_le_bytes(*b))
        }
        WireType::ThirtyTwoBit => {
            let (b, rest) = buf.split_first_chunk::<4>().ok_or(Malformed)?;
            *buf = rest;
            Value::Fixed32(u32::from_le_bytes(*b))
        }
        WireType::LengthDelimited => {
            let len = usize::try_from(decode_varint(buf)?).map_err(|_| Malformed)?;
            if len > buf.remaining() {
                return Err(Malformed);
            }
            let (v, rest) = buf.split_at(len);
            *buf = rest;
            Value::Len(v)
        }
        WireType::StartGroup | WireType::EndGroup => return Err(Malformed),
    };
    Ok((number, value))
}

/// The first string of the top-level field `name` of a message (a login request's
/// `username`), by its descriptor; `None` when absent, not a string field, or when the
/// bytes before it are not protobuf. Reads only the message's own keys.
pub fn string_field<'a>(msg: &'a [u8], desc: &MessageDescriptor, name: &str) -> Option<&'a str> {
    let fd = desc.get_field_by_name(name)?;
    if !matches!(fd.kind(), Kind::String) {
        return None;
    }
    let number = fd.number();
    let mut buf = msg;
    while !buf.is_empty() {
        match field(&mut buf).ok()? {
            (n, Value::Len(b)) if n == number => return std::str::from_utf8(b).ok(),
            _ => {}
        }
    }
    None
}

/// Whether `b` parses completely as a message (its own fields; children are checked when
/// walked) and is not text.
fn looks_like_message(b: &[u8]) -> bool {
    let Some(&first) = b.first() else {
        return false;
    };
    // Text rarely starts with a control byte; a message's first key often is one (fields
    // 1 to 3). Printable text that happens to parse (`"hi"` is field 13 = 105) is text.
    if first >= 0x20 && printable(b) {
        return false;
    }
    let mut buf = b;
    while !buf.is_empty() {
        if field(&mut buf).is_err() {
            return false;
        }
    }
    true
}

fn printable(b: &[u8]) -> bool {
    std::str::from_utf8(b).is_ok_and(|s| {
        !s.chars()
            .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    })
}

/// A 64-bit value that reads as an everyday double (a price, a coordinate) rather than
/// an integer's bits: small integers' bits are subnormal doubles.
fn plausible_f64(bits: u64) -> bool {
    let f = f64::from_bits(bits);
    f == 0.0 || (f.is_normal() && (1e-9..=1e15).contains(&f.abs()))
}

fn plausible_f32(bits: u32) -> bool {
    let f = f32::from_bits(bits);
    f == 0.0 || (f.is_normal() && (1e-6..=1e9).contains(&f.abs()))
}

struct Walker<'v, V> {
    visit: &'v mut V,
    /// The path being walked.
    path: String,
    limits: Limits,
    stats: WalkStats,
}

/// Counts runs of one field number (a list's elements).
#[derive(Default)]
struct Run {
    number: u32,
    len: u32,
}

impl Run {
    fn add(&mut self, number: u32, n: u32) -> u32 {
        if self.number == number {
            self.len = self.len.saturating_add(n);
        } else {
            *self = Run { number, len: n };
        }
        self.len
    }
}

impl<'v, V: FnMut(&str, Scalar<'_>)> Walker<'v, V> {
    fn scalar(&mut self, s: Scalar<'_>) {
        self.stats.scalars += 1;
        (self.visit)(&self.path, s);
    }

    /// Enters a field: `false` (and truncated) past the node cap.
    fn node(&mut self) -> bool {
        if self.stats.nodes >= self.limits.max_nodes {
            self.stats.truncated = true;
            return false;
        }
        self.stats.nodes += 1;
        true
    }

    fn push_number(&mut self, number: u32) -> usize {
        let len = self.path.len();
        if len > 0 {
            self.path.push('.');
        }
        self.path.push_str(itoa::Buffer::new().format(number));
        len
    }

    fn push_name(&mut self, name: &str, list: bool) -> usize {
        let len = self.path.len();
        if len > 0 {
            self.path.push('.');
        }
        self.path.push_str(name);
        if list {
            self.path.push_str("[]");
        }
        len
    }

    /// A message without a schema.
    fn raw(&mut self, msg: &[u8], depth: usize) -> Result<(), Malformed> {
        let mut buf = msg;
        let mut run = Run::default();
        while !buf.is_empty() {
            if !self.node() {
                return Ok(());
            }
            let (number, value) = field(&mut buf)?;
            let n = run.add(number, 1);
            if n >= 2 {
                self.stats.records = self.stats.records.max(n);
            }
            let len = self.push_number(number);
            self.raw_value(value, depth);
            self.path.truncate(len);
        }
        Ok(())
    }

    /// A value read without a schema (or under a number the schema does not know).
    fn raw_value(&mut self, value: Value<'_>, depth: usize) {
        match value {
            Value::Varint(v) => self.scalar(Scalar::Uint(v)),
            Value::Fixed64(v) if plausible_f64(v) => self.scalar(Scalar::Float(f64::from_bits(v))),
            Value::Fixed64(v) => self.scalar(Scalar::Uint(v)),
            Value::Fixed32(v) if plausible_f32(v) => {
                self.scalar(Scalar::Float(f64::from(f32::from_bits(v))))
            }
            Value::Fixed32(v) => self.scalar(Scalar::Uint(u64::from(v))),
            Value::Len(b) if looks_like_message(b) => {
                if depth + 1 >= self.limits.max_depth {
                    self.stats.truncated = true;
                } else {
                    // Checked to parse completely: the walk cannot fail inside.
                    let _ = self.raw(b, depth + 1);
                }
            }
            Value::Len(b) => match std::str::from_utf8(b) {
                Ok(s) => self.scalar(Scalar::Str(s)),
                Err(_) => self.scalar(Scalar::Bytes(b)),
            },
        }
    }

    /// A message under its descriptor.
    fn typed(
        &mut self,
        msg: &[u8],
        desc: &MessageDescriptor,
        depth: usize,
    ) -> Result<(), Malformed> {
        let mut buf = msg;
        let mut run = Run::default();
        while !buf.is_empty() {
            if !self.node() {
                return Ok(());
            }
            let before = buf;
            let (number, value) = match field(&mut buf) {
                Ok(f) => f,
                Err(Malformed) => {
                    // A message cut by the end of the body: walk the part of a nested
                    // message that arrived before giving up.
                    self.cut_message(before, desc, depth);
                    return Err(Malformed);
                }
            };
            let Some(fd) = desc.get_field(number) else {
                let len = self.push_number(number);
                self.raw_value(value, depth);
                self.path.truncate(len);
                continue;
            };
            let list = fd.is_list() || fd.is_map();
            let len = self.push_name(fd.name(), list);
            let kind = fd.kind();
            let elements = match (&kind, value) {
                (Kind::Message(m), Value::Len(b)) => {
                    if depth + 1 >= self.limits.max_depth {
                        self.stats.truncated = true;
                    } else if self.typed(b, m, depth + 1).is_err() {
                        // The length was right: the next field is still in step.
                        self.stats.malformed = true;
                    }
                    1
                }
                (Kind::String, Value::Len(b)) => {
                    match std::str::from_utf8(b) {
                        Ok(s) => self.scalar(Scalar::Str(s)),
                        Err(_) => self.scalar(Scalar::Bytes(b)),
                    }
                    1
                }
                (Kind::Bytes, Value::Len(b)) => {
                    self.scalar(Scalar::Bytes(b));
                    1
                }
                (_, Value::Len(b)) if list => self.packed(&kind, b),
                (_, v) => match typed_scalar(&kind, &v) {
                    Some(s) => {
                        self.scalar(s);
                        1
                    }
                    None => {
                        // Not the wire type the schema says: read it as the wire has it.
                        self.stats.malformed = true;
                        self.raw_value(v, depth);
                        0
                    }
                },
            };
            if list {
                self.stats.records = self.stats.records.max(run.add(number, elements));
            }
            self.path.truncate(len);
        }
        Ok(())
    }

    /// The last field of a cut message: when it is a nested message, what arrived of it.
    fn cut_message(&mut self, mut buf: &[u8], desc: &MessageDescriptor, depth: usize) {
        let Ok((number, WireType::LengthDelimited)) = decode_key(&mut buf) else {
            return;
        };
        if decode_varint(&mut buf).is_err() {
            return;
        }
        let Some(fd) = desc.get_field(number) else {
            return;
        };
        if let Kind::Message(m) = fd.kind()
            && depth + 1 < self.limits.max_depth
        {
            let len = self.push_name(fd.name(), fd.is_list() || fd.is_map());
            let _ = self.typed(buf, &m, depth + 1);
            self.path.truncate(len);
        }
    }

    /// A packed repeated numeric field's elements; returns how many.
    fn packed(&mut self, kind: &Kind, mut b: &[u8]) -> u32 {
        let mut n = 0u32;
        while !b.is_empty() {
            if n > 0 && !self.node() {
                break;
            }
            let v = match wire_type(kind) {
                Some(WireType::Varint) => decode_varint(&mut b).ok().map(Value::Varint),
                Some(WireType::SixtyFourBit) => b.split_first_chunk::<8>().map(|(x, rest)| {
                    b = rest;
                    Value::Fixed64(u64::from_le_bytes(*x))
                }),
                Some(WireType::ThirtyTwoBit) => b.split_first_chunk::<4>().map(|(x, rest)| {
                    b = rest;
                    Value::Fixed32(u32::from_le_bytes(*x))
                }),
                _ => None,
            };
            match v.and_then(|v| typed_scalar(kind, &v)) {
                Some(s) => self.scalar(s),
                None => {
                    self.stats.malformed = true;
                    break;
                }
            }
            n += 1;
        }
        n
    }
}

/// The wire type a numeric kind is written with (packed elements have no key).
fn wire_type(kind: &Kind) -> Option<WireType> {
    Some(match kind {
        Kind::Double | Kind::Fixed64 | Kind::Sfixed64 => WireType::SixtyFourBit,
        Kind::Float | Kind::Fixed32 | Kind::Sfixed32 => WireType::ThirtyTwoBit,
        Kind::Int32
        | Kind::Int64
        | Kind::Uint32
        | Kind::Uint64
        | Kind::Sint32
        | Kind::Sint64
        | Kind::Bool
        | Kind::Enum(_) => WireType::Varint,
        Kind::String | Kind::Bytes | Kind::Message(_) => return None,
    })
}

/// A numeric value as its kind types it; `None` when the wire type does not match.
fn typed_scalar(kind: &Kind, v: &Value<'_>) -> Option<Scalar<'static>> {
    Some(match (kind, *v) {
        // int32 and enums are sign-extended to 64 bits on the wire; truncation is the rule.
        (Kind::Int32 | Kind::Enum(_), Value::Varint(x)) => Scalar::Int(i64::from(x as i32)),
        (Kind::Int64, Value::Varint(x)) => Scalar::Int(x as i64),
        (Kind::Uint32, Value::Varint(x)) => Scalar::Uint(u64::from(x as u32)),
        (Kind::Uint64, Value::Varint(x)) => Scalar::Uint(x),
        (Kind::Sint32, Value::Varint(x)) => {
            let x = x as u32;
            Scalar::Int(i64::from((x >> 1) as i32 ^ -((x & 1) as i32)))
        }
        (Kind::Sint64, Value::Varint(x)) => Scalar::Int((x >> 1) as i64 ^ -((x & 1) as i64)),
        (Kind::Bool, Value::Varint(x)) => Scalar::Bool(x != 0),
        (Kind::Fixed64, Value::Fixed64(x)) => Scalar::Uint(x),
        (Kind::Sfixed64, Value::Fixed64(x)) => Scalar::Int(x as i64),
        (Kind::Double, Value::Fixed64(x)) => Scalar::Float(f64::from_bits(x)),
        (Kind::Fixed32, Value::Fixed32(x)) => Scalar::Uint(u64::from(x)),
        (Kind::Sfixed32, Value::Fixed32(x)) => Scalar::Int(i64::from(x as i32)),
        (Kind::Float, Value::Fixed32(x)) => Scalar::Float(f64::from(f32::from_bits(x))),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use serde_json::Value as Json;

    use super::*;
    use crate::grpc::Descriptors;

    fn dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/grpc")
    }

    fn expected() -> Json {
        let text = std::fs::read_to_string(dir().join("expected.json")).expect("expected.json");
        serde_json::from_str(&text).expect("json")
    }

    fn descriptors() -> Descriptors {
        Descriptors::load(&[dir().join("shop.protoset")]).expect("protoset loads")
    }

    /// A walk's scalars as (path, kind, value) lines, sorted: the script's form.
    fn collect(msg: &[u8], desc: Option<&MessageDescriptor>) -> (Vec<String>, WalkStats) {
        let mut out = Vec::new();
        let stats = walk(msg, desc, &mut |path, s| {
            let (kind, v) = match s {
                Scalar::Str(s) => ("str", Json::from(s)),
                Scalar::Bytes(b) => (
                    "bytes",
                    Json::from(b.iter().map(|x| format!("{x:02x}")).collect::<String>()),
                ),
                Scalar::Int(i) => ("int", Json::from(i)),
                Scalar::Uint(u) => ("uint", Json::from(u)),
                Scalar::Float(f) => ("float", Json::from(f)),
                Scalar::Bool(b) => ("bool", Json::from(b)),
            };
            out.push(format!("{path} {kind} {v}"));
        });
        out.sort();
        (out, stats)
    }

    fn script_lines(leaves: &Json) -> Vec<String> {
        let mut v: Vec<String> = leaves
            .as_array()
            .expect("list")
            .iter()
            .map(|l| {
                // Python writes whole floats as `4.5`; serde reads both sides alike.
                format!(
                    "{} {} {}",
                    l["path"].as_str().expect("path"),
                    l["kind"].as_str().expect("kind"),
                    l["value"]
                )
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn walks_match_what_the_script_encoded_with_and_without_the_schema() {
        let exp = expected();
        let d = descriptors();
        let cases = exp["messages"].as_array().expect("messages");
        assert!(cases.len() >= 4);
        for case in cases {
            let name = case["name"].as_str().expect("name");
            let msg = std::fs::read(dir().join(case["file"].as_str().expect("file"))).expect("bin");
            let (raw, stats) = collect(&msg, None);
            assert_eq!(raw, script_lines(&case["numbers"]), "{name} without schema");
            assert!(!stats.malformed && !stats.truncated, "{name}: {stats:?}");
            let md = d
                .message(case["type"].as_str().expect("type"))
                .expect("type known");
            let (named, stats) = collect(&msg, Some(&md));
            assert_eq!(named, script_lines(&case["named"]), "{name} with schema");
            assert!(!stats.malformed && !stats.truncated, "{name}: {stats:?}");
        }
    }

    #[test]
    fn records_count_the_longest_list() {
        let d = descriptors();
        let orders = std::fs::read(dir().join("orders.bin")).expect("orders");
        let md = d.message("shop.v1.OrderList").expect("type");
        assert_eq!(walk(&orders, Some(&md), &mut |_, _| {}).records, 3);
        assert_eq!(walk(&orders, None, &mut |_, _| {}).records, 3);
        // badge_ids: three packed elements; nicknames: two.
        let profile = std::fs::read(dir().join("profile.bin")).expect("profile");
        let md = d.message("shop.v1.Profile").expect("type");
        assert_eq!(walk(&profile, Some(&md), &mut |_, _| {}).records, 3);
    }

    #[test]
    fn methods_are_found_by_grpc_path() {
        let d = descriptors();
        assert_eq!(d.methods(), 4);
        let (input, output) = d.method("/shop.v1.Shop/Login").expect("login");
        assert_eq!(input.full_name(), "shop.v1.LoginRequest");
        assert_eq!(output.full_name(), "shop.v1.LoginReply");
        let (_, out) = d.method("/shop.v1.Shop/StreamOrders").expect("stream");
        assert_eq!(out.full_name(), "shop.v1.Order");
        assert!(d.method("/shop.v1.Shop/Nope").is_none());
        assert!(d.method("shop.v1.Shop/Login").is_none());
    }

    #[test]
    fn bad_descriptor_files_are_named() {
        let missing = dir().join("no-such.protoset");
        let e = Descriptors::load(&[&missing]).expect_err("missing");
        assert!(
            e.to_string().contains("no-such.protoset: cannot read"),
            "{e}"
        );
        // A message that is not a descriptor set (the profile).
        let e = Descriptors::load(&[dir().join("profile.bin")]).expect_err("not a set");
        assert!(
            e.to_string()
                .contains("profile.bin: not a usable descriptor set"),
            "{e}"
        );
    }

    #[test]
    fn a_cut_message_keeps_what_arrived() {
        let d = descriptors();
        let md = d.message("shop.v1.OrderList").expect("type");
        let orders = std::fs::read(dir().join("orders.bin")).expect("orders");
        let (whole, _) = collect(&orders, Some(&md));
        // Cut inside the second order: the first is whole, the second partly there.
        let (cut, stats) = collect(&orders[..130], Some(&md));
        assert!(stats.malformed);
        assert!(cut.len() > 5 && cut.len() < whole.len(), "{cut:?}");
        assert!(cut.iter().all(|l| whole.contains(l)), "{cut:?}");
        assert!(cut.iter().any(|l| l.starts_with("orders[].card_number")));
        let (raw, stats) = collect(&orders[..130], None);
        assert!(stats.malformed);
        assert!(!raw.is_empty());
    }

    #[test]
    fn login_usernames_are_read_by_field_name() {
        let d = descriptors();
        let login = std::fs::read(dir().join("login.bin")).expect("login");
        let md = d.message("shop.v1.LoginRequest").expect("type");
        assert_eq!(
            string_field(&login, &md, "username"),
            Some("jane.roe@example.com")
        );
        assert_eq!(string_field(&login, &md, "email"), None);
        assert_eq!(string_field(&login[..20], &md, "device_id"), None);
        let reply = d.message("shop.v1.LoginReply").expect("type");
        assert_eq!(
            string_field(&login, &reply, "expires_at"),
            None,
            "not a string"
        );
    }

    #[test]
    fn text_that_parses_as_protobuf_stays_text() {
        // "hi" is field 13 = 105 on the wire; printable text wins.
        let msg = [0x0a, 2, b'h', b'i'];
        let (raw, _) = collect(&msg, None);
        assert_eq!(raw, ["1 str \"hi\""]);
        // A nested message that starts with a control byte is a message.
        let msg = [0x0a, 4, 0x0a, 2, b'h', b'i'];
        let (raw, _) = collect(&msg, None);
        assert_eq!(raw, ["1.1 str \"hi\""]);
    }

    /// `depth` messages each wrapping the next in field 1.
    fn nested(depth: usize) -> Vec<u8> {
        let mut m = vec![0x0a, 1, b'x'];
        for _ in 0..depth {
            let mut outer = vec![0x0a];
            let mut len = m.len();
            while len >= 0x80 {
                outer.push((len as u8) | 0x80);
                len >>= 7;
            }
            outer.push(len as u8);
            outer.extend_from_slice(&m);
            m = outer;
        }
        m
    }

    #[test]
    fn hostile_nesting_is_cut_at_the_depth_cap_and_cheap() {
        let msg = nested(20_000);
        assert!(msg.len() < 200_000, "{}", msg.len());
        let started = std::time::Instant::now();
        let (raw, stats) = collect(&msg, None);
        assert!(stats.truncated);
        assert!(raw.is_empty(), "nothing under the cap is a scalar");
        assert!(stats.nodes as usize <= MAX_DEPTH, "{stats:?}");
        // Quadratic work (every level rescanned whole) would be ~10^10 byte reads.
        assert!(started.elapsed().as_secs() < 5, "{:?}", started.elapsed());
        // Shallow enough: the innermost string is found under its full path.
        let (raw, stats) = collect(&nested(3), None);
        assert_eq!(raw, ["1.1.1.1 str \"x\""]);
        assert!(!stats.truncated);
    }

    #[test]
    fn huge_claimed_lengths_end_the_walk() {
        // Field 1, length 2^62: never allocated nor skipped past the buffer.
        let msg = [
            0x0a, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40, 1, 2,
        ];
        let (raw, stats) = collect(&msg, None);
        assert!(raw.is_empty() && stats.malformed);
        let msg = [0x08, 0x96, 0x01, 0x12, 0x7f, b'a'];
        let (raw, stats) = collect(&msg, None);
        assert_eq!(raw, ["1 uint 150"]);
        assert!(stats.malformed);
    }

    #[test]
    fn node_cap_bounds_a_flat_message() {
        let msg: Vec<u8> = (0..50_000).flat_map(|_| [0x08, 0x01]).collect();
        let stats = walk(&msg, None, &mut |_, _| {});
        assert_eq!(stats.nodes, MAX_NODES);
        assert!(stats.truncated);
        assert_eq!(stats.records, MAX_NODES);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
        #[test]
        fn arbitrary_bytes_never_panic_and_stay_bounded(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
            depth in 1usize..8,
            nodes in 1u32..64,
        ) {
            let limits = Limits { max_depth: depth, max_nodes: nodes };
            let mut seen = 0u32;
            let stats = walk_with(&bytes, None, limits, &mut |p, _| {
                seen += 1;
                assert!(p.split('.').count() <= depth, "{p}");
            });
            proptest::prop_assert!(stats.nodes <= nodes);
            proptest::prop_assert_eq!(seen, stats.scalars);
            let d = descriptors();
            for t in ["shop.v1.Profile", "shop.v1.OrderList"] {
                let md = d.message(t).expect("type");
                let stats = walk_with(&bytes, Some(&md), limits, &mut |_, _| {});
                proptest::prop_assert!(stats.nodes <= nodes.saturating_add(1));
            }
        }

        #[test]
        fn mutated_fixtures_never_panic(
            flips in proptest::collection::vec((0usize..280, proptest::num::u8::ANY), 1..6),
            cut in 0usize..300,
        ) {
            let mut msg = std::fs::read(dir().join("profile.bin")).expect("profile");
            for (i, b) in flips {
                if let Some(x) = msg.get_mut(i) {
                    *x = b;
                }
            }
            msg.truncate(cut);
            let d = descriptors();
            let md = d.message("shop.v1.Profile").expect("type");
            let s = walk(&msg, Some(&md), &mut |_, _| {});
            proptest::prop_assert!(s.nodes <= MAX_NODES);
            walk(&msg, None, &mut |_, _| {});
        }
    }
}
