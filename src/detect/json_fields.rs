//! Top-level fields of a JSON request body, read without building its tree.
//!
//! Input: a body and which field names are wanted. Output: the wanted fields' names and
//! scalar values in document order (every occurrence), or `None` when the body is not one
//! valid JSON object. Used for the object ids and the login username a request names.
//! Values of the other fields are only checked for syntax, iteratively and at any depth:
//! a parsed `serde_json::Value` stops at 128 levels, so a client could hide its fields by
//! padding its body with deep nesting that its server accepts.

use std::borrow::Cow;

use serde::de::{DeserializeSeed, Deserializer, Error, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// A field's value, as far as a wanted field needs it.
#[derive(Debug, PartialEq)]
pub(super) enum Scalar<'de> {
    Str(Cow<'de, str>),
    Num(serde_json::Number),
    /// `null`, a boolean, an array or an object.
    Other,
}

/// Wanted fields as read: inline up to four (a request names an object or a username in
/// one or two), so reading them allocates nothing.
pub(super) type Named<'de> = smallvec::SmallVec<[(Cow<'de, str>, Scalar<'de>); 4]>;

/// The wanted fields of the JSON object `body` in document order; `None` when it is not
/// one valid JSON object.
pub(super) fn top_level<'de>(body: &'de [u8], wanted: impl Fn(&str) -> bool) -> Option<Named<'de>> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let fields = Fields(&wanted).deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(fields)
}

struct Fields<'w, W>(&'w W);

impl<'de, W: Fn(&str) -> bool> DeserializeSeed<'de> for Fields<'_, W> {
    type Value = Named<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, W: Fn(&str) -> bool> Visitor<'de> for Fields<'_, W> {
    type Value = Named<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Named::new();
        // A key is read as a value would be: JSON keys are strings, borrowed from the body
        // unless they hold escapes.
        while let Some(k) = map.next_key::<Scalar<'de>>()? {
            let Scalar::Str(k) = k else {
                return Err(A::Error::custom("a field name that is not a string"));
            };
            if (self.0)(&k) {
                let v: Scalar<'de> = map.next_value()?;
                out.push((k, v));
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(out)
    }
}

impl<'de> serde::Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Scalar<'de>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_borrowed_str<E: Error>(self, s: &'de str) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Str(Cow::Borrowed(s)))
            }
            fn visit_str<E: Error>(self, s: &str) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Str(Cow::Owned(s.to_owned())))
            }
            fn visit_u64<E: Error>(self, n: u64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Num(n.into()))
            }
            fn visit_i64<E: Error>(self, n: i64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Num(n.into()))
            }
            fn visit_f64<E: Error>(self, n: f64) -> Result<Scalar<'de>, E> {
                // As a parsed `Value` holds it (a float JSON cannot hold is `null`).
                Ok(serde_json::Number::from_f64(n).map_or(Scalar::Other, Scalar::Num))
            }
            fn visit_bool<E: Error>(self, _: bool) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Other)
            }
            fn visit_unit<E: Error>(self) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Scalar<'de>, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Scalar<'de>, A::Error> {
                while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// Of fields read in document order, each name's last value (as a parsed map holds
/// them), in name order.
pub(super) fn last_of_each(mut fields: Named<'_>) -> Named<'_> {
    fields.reverse();
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    fields.dedup_by(|later, first| later.0 == first.0);
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Scalar<'_> {
        Scalar::Str(Cow::Borrowed(x))
    }

    #[test]
    fn wanted_fields_in_document_order_and_nothing_else() {
        let body = br#"{"b":1,"a":"x","skip":{"a":2},"a":[1],"c":true,"b":1.5,"d":null}"#;
        let got = top_level(body, |k| k != "skip").expect("an object");
        assert_eq!(
            got[..],
            vec![
                ("b".into(), Scalar::Num(1u64.into())),
                ("a".into(), s("x")),
                ("a".into(), Scalar::Other),
                ("c".into(), Scalar::Other),
                (
                    "b".into(),
                    Scalar::Num(serde_json::Number::from_f64(1.5).expect("finite"))
                ),
                ("d".into(), Scalar::Other),
            ]
        );
        let last: Vec<_> = last_of_each(got).into_iter().map(|(k, _)| k).collect();
        assert_eq!(last, ["a", "b", "c", "d"]);
        assert_eq!(
            last_of_each(top_level(body, |_| true).expect("an object"))[0],
            ("a".into(), Scalar::Other),
            "a repeated name's last value"
        );
        // Escaped names and values are unescaped.
        assert_eq!(
            top_level(br#"{"us\u0065r":"b\u00e9"}"#, |_| true).map(|f| f.into_vec()),
            Some(vec![("user".into(), Scalar::Str(Cow::Owned("bé".into())))])
        );
        // Not one valid JSON object.
        for bad in [
            &br#"[{"a":1}]"#[..],
            br#"{"a":1} {}"#,
            br#"{"a":1,}"#,
            br#"{"a":"\ud800"}"#,
            b"",
            b"{",
        ] {
            assert_eq!(top_level(bad, |_| true), None, "{bad:?}");
        }
        // Deep nesting beside a field does not hide it.
        let deep = format!(
            r#"{{"a":"x","pad":{}{}}}"#,
            "[".repeat(5000),
            "]".repeat(5000)
        );
        assert_eq!(
            top_level(deep.as_bytes(), |k| k == "a").map(|f| f.into_vec()),
            Some(vec![("a".into(), s("x"))])
        );
    }
}
