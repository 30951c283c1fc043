//! Objects and who owns them, for broken object level authorization (BOLA).
//!
//! Workers extract object references from each transaction ([`request_objects`]: id-shaped
//! path segments, `id`/`*_id` query parameters and JSON body fields; [`returned_objects`]:
//! ids in a JSON response). An object is a (collection, id) pair; the collection is the
//! literal path segment before the id, or the field name, singular and lower-case, so
//! `/users/1001/orders` listing `{"orders":[{"id":5001}]}` and `/orders/5001` name the same
//! order. The detect thread keeps the [`Owners`] map: who owns an object (the principal it was
//! listed to in their own scope, who created it, a user's own user record, or a rule's
//! declaration) and which objects many principals read (public). Each request is judged
//! own / public / other / unknown before the rules run. Bounded: at most `max_objects`
//! objects; at the cap the least recently seen tenth is evicted and counted.

use std::collections::HashMap;
use std::sync::Arc;
use thin_vec::ThinVec;

use super::json_fields::{self, Scalar};
use crate::capture::Timestamp;
use crate::http::{Headers, header};
use crate::route::IdSegments;

/// Most object references taken from one request or response.
const MAX_REFS: usize = 64;
/// Largest JSON body parsed for ids.
const MAX_JSON_BYTES: usize = 256 * 1024;
use crate::object::USER_COLLECTIONS;
pub use crate::object::{ObjectRef, collection, is_user_collection};

fn is_json(headers: &Headers, body: &[u8]) -> bool {
    header(headers, "content-type").is_some_and(crate::http::mentions_json)
        || matches!(body.first(), Some(b'{' | b'['))
}

/// The non-empty segments of a path, each with whether it is id-shaped (as `ids`, the
/// route's judgement of this path, says when given), in order.
fn segments(path: &str, ids: Option<IdSegments>) -> impl Iterator<Item = (&str, bool)> {
    crate::route::segments(path)
        .enumerate()
        .filter(|(_, s)| !s.is_empty())
        .map(move |(i, s)| {
            let id = match ids {
                Some(m) => m.is_id(i, s),
                None => crate::route::is_id_segment(s),
            };
            (s, id)
        })
}

/// Objects a request names: id segments of its path (collection: the literal before),
/// `id` / `*_id` query parameters, and `id` / `*_id` fields of a JSON body.
pub fn request_objects(target: &str, headers: &Headers, body: &[u8]) -> ThinVec<ObjectRef> {
    request_objects_judged(target, None, headers, body)
}

/// [`request_objects`] with the id segments the request's route found (a worker templated
/// the route first): used when they are of this target's path.
pub fn request_objects_judged(
    target: &str,
    ids: Option<IdSegments>,
    headers: &Headers,
    body: &[u8],
) -> ThinVec<ObjectRef> {
    let (path, query) = crate::route::split_query(target);
    let ids = ids.and_then(|m| m.of_len(path));
    let mut out = ThinVec::new();
    let mut last_literal: Option<&str> = None;
    for (s, is_id) in segments(path, ids) {
        if is_id {
            if let Some(c) = last_literal {
                out.push(ObjectRef {
                    collection: collection(c),
                    id: Arc::from(s),
                });
            }
        } else {
            last_literal = Some(s);
        }
    }
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        // `id`, or `*_id` with something before the suffix.
        if !(k.eq_ignore_ascii_case("id") || (k.len() > 3 && names_id(&k))) {
            continue;
        }
        let lk = k.to_ascii_lowercase();
        if !v.is_empty() && v.len() <= 128 {
            let c = if lk == "id" {
                last_literal.map_or_else(|| collection("item"), collection)
            } else {
                collection(&lk)
            };
            out.push(ObjectRef {
                collection: c,
                id: Arc::from(v.as_ref()),
            });
        }
    }
    if !body.is_empty()
        && body.len() <= MAX_JSON_BYTES
        && is_json(headers, body)
        && let Some(fields) = json_fields::top_level(body, names_id)
    {
        // As a parsed object holds them: by name, each name's last value.
        for (k, v) in json_fields::last_of_each(fields) {
            let id: Arc<str> = match v {
                Scalar::Num(n) => Arc::from(n.to_string()),
                Scalar::Str(s) if !s.is_empty() && s.len() <= 128 => Arc::from(&*s),
                _ => continue,
            };
            out.push(ObjectRef {
                collection: collection(&k.to_ascii_lowercase()),
                id,
            });
        }
    }
    out.truncate(MAX_REFS);
    out
}

/// A JSON body field that names an object: `*_id`, in any case.
fn names_id(k: &str) -> bool {
    let b = k.as_bytes();
    b.len() >= 3 && b[b.len() - 3..].eq_ignore_ascii_case(b"_id")
}

/// Ids a JSON response returns: its own `id`, and the `id`s of objects in its arrays
/// (collection: the array's field name, or the path's last literal segment).
pub fn returned_objects(target: &str, headers: &Headers, body: &[u8]) -> ThinVec<ObjectRef> {
    if body.is_empty() || body.len() > MAX_JSON_BYTES || !is_json(headers, body) {
        return ThinVec::new();
    }
    returned_from_scan(target, &super::exposure::scan(headers, body))
}

/// The returned objects of a body already scanned (the worker scans each body once).
pub fn returned_from_scan(target: &str, scan: &super::exposure::Scan) -> ThinVec<ObjectRef> {
    // Most answers return no ids: the path is read only for those that do.
    if scan.ids.is_empty() {
        return ThinVec::new();
    }
    let (path, _) = crate::route::split_query(target);
    let last = crate::route::segments_from_end(path)
        .find(|s| !s.is_empty() && !crate::route::is_id_segment(s))
        .unwrap_or("item");
    // Lists repeat one field name: its collection is made once.
    let mut named: Option<(&str, Arc<str>)> = None;
    scan.ids
        .iter()
        .map(|(field, id)| {
            let f = field.as_deref().unwrap_or(last);
            let c = match &named {
                Some((n, c)) if *n == f => c.clone(),
                _ => {
                    let c = collection(f);
                    named = Some((f, c.clone()));
                    c
                }
            };
            ObjectRef {
                collection: c,
                id: id.clone(),
            }
        })
        .collect()
}

pub use crate::object::Ownership;

struct Entry {
    owner: Option<Arc<str>>,
    /// Distinct principals (as hashes) that read it without it being someone else's; at
    /// `public_readers` it is public.
    readers: Vec<u64>,
    public: bool,
    last: Timestamp,
}

/// Bytes one object costs, typically: its slot, a few readers, the id text.
pub const ENTRY_BYTES: usize =
    std::mem::size_of::<(ObjectRef, Entry)>() + 1 + 3 * std::mem::size_of::<u64>() + 40;

/// Ownership settings (`[detect]`).
#[derive(Clone, Debug)]
pub struct OwnersConfig {
    pub max_objects: usize,
    pub public_readers: usize,
    /// Distinct principals reading a never-owned collection's objects that, with
    /// [`PUBLIC_COLLECTION_OBJECTS`] of its objects public, make the whole collection public.
    pub public_collection_readers: usize,
}

/// Objects of a never-owned collection that must have been learned public (each read by
/// `public_readers` principals) before the collection is. One prober reading the objects
/// their owners also read gives them two readers, never three.
pub const PUBLIC_COLLECTION_OBJECTS: u32 = 3;
/// Collections tracked (the API's nouns; the cap holds against invented path segments).
const MAX_COLLECTIONS: usize = 4096;

/// What is known of a collection as a whole.
#[derive(Default)]
struct Collection {
    /// Some object of it was owned: listed to a principal in its own scope, created, a
    /// user's own record, or declared.
    claimed: bool,
    /// Distinct principals (hashes) that read its objects, up to the configured count.
    readers: Vec<u64>,
    /// Its objects learned public.
    public_objects: u32,
}

impl Collection {
    fn public(&self, cfg: &OwnersConfig) -> bool {
        !self.claimed
            && self.readers.len() >= cfg.public_collection_readers
            && self.public_objects >= PUBLIC_COLLECTION_OBJECTS
    }
}

impl Default for OwnersConfig {
    fn default() -> Self {
        OwnersConfig {
            max_objects: 1_000_000,
            public_readers: 3,
            public_collection_readers: 10,
        }
    }
}

/// The verdict on one request.
#[derive(Clone, Debug, Default)]
pub struct Judged {
    /// The worst relation among its objects (other > unknown > public > own).
    pub ownership: Option<Ownership>,
    /// A 2xx answer carried an object owned by someone else.
    pub cross_user: bool,
    /// The objects judged `other`, for evidence.
    pub foreign: ThinVec<ObjectRef>,
}

/// Who owns what.
pub struct Owners {
    cfg: OwnersConfig,
    map: HashMap<ObjectRef, Entry, foldhash::fast::RandomState>,
    /// User-record collections seen to share the user ids' space: some principal fetched
    /// its own record there (id equal to its user id). Only in those is a record with a
    /// different id someone else's; where users are `alice@example.com` and records are
    /// numbered, nothing can be said.
    user_id_space: Vec<Arc<str>>,
    collections: HashMap<Arc<str>, Collection, foldhash::fast::RandomState>,
    pub evicted: u64,
}

pub(super) fn principal_hash(p: &str) -> u64 {
    use std::hash::BuildHasher;
    // Fixed seed: equality is all that matters and results must not vary between runs.
    foldhash::fast::FixedState::with_seed(0x6f77_6e65_7273).hash_one(p)
}

impl Owners {
    pub fn new(cfg: OwnersConfig) -> Owners {
        Owners {
            cfg,
            map: HashMap::default(),
            user_id_space: Vec::new(),
            collections: HashMap::default(),
            evicted: 0,
        }
    }

    /// Collections learned public (many readers, no owner ever).
    pub fn public_collections(&self) -> usize {
        self.collections
            .values()
            .filter(|c| c.public(&self.cfg))
            .count()
    }

    fn collection(&mut self, name: &Arc<str>) -> Option<&mut Collection> {
        if !self.collections.contains_key(name) && self.collections.len() >= MAX_COLLECTIONS {
            return None;
        }
        Some(self.collections.entry(name.clone()).or_default())
    }

    fn claim(&mut self, name: &Arc<str>) {
        if let Some(c) = self.collection(name) {
            c.claimed = true;
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Makes room for `o` when it would be a new entry at the cap: the least recently seen
    /// tenth goes. Below the cap (nearly always) `o` is not looked up.
    fn room_for(&mut self, o: &ObjectRef) {
        if self.map.len() < self.cfg.max_objects || self.map.contains_key(o) {
            return;
        }
        let ages = self.map.iter().map(|(k, e)| (e.last, k.clone())).collect();
        for k in crate::actor::registry::oldest_tenth(ages) {
            self.map.remove(&k);
            self.evicted += 1;
        }
    }

    /// Judges a request by `principal` (`user:…`, `device:…` or `ip:…`; `user_id` when the
    /// user is known), then learns from it. `response_owner`: the owner field of the JSON
    /// object answered (`user_id`, ...): a request naming one object whose successful
    /// answer names the requester as its owner reads its own object, even one never seen
    /// before (an old order missing from the user's list). Only ever to the requester's
    /// favour: an answer naming someone else accuses nobody (a public review names its
    /// author too), and nothing is learned from it.
    #[allow(clippy::too_many_arguments)]
    pub fn judge(
        &mut self,
        ts: Timestamp,
        principal: &str,
        user_id: Option<&str>,
        objects: &[ObjectRef],
        returned: &[ObjectRef],
        response_owner: Option<&str>,
        method: Option<&str>,
        status: Option<u16>,
        declared_public: &dyn Fn(&ObjectRef) -> bool,
        declared_user_record: &dyn Fn(&ObjectRef) -> bool,
    ) -> Judged {
        let ok = status.is_some_and(|s| (200..300).contains(&s));
        let answered_as_own =
            ok && objects.len() == 1 && user_id.is_some() && response_owner == user_id;
        let mut j = Judged::default();
        // Inline: a request names a handful of objects at most, and an allocation per
        // judged request was one of the detect thread's most frequent.
        let mut classes: smallvec::SmallVec<[Ownership; 4]> = smallvec::SmallVec::new();
        for o in objects {
            let declared = declared_user_record(o);
            let user_record = USER_COLLECTIONS.contains(&&*o.collection) || declared;
            if user_record {
                self.claim(&o.collection);
            }
            let class = if declared_public(o) {
                Ownership::Public
            } else if user_record && user_id.is_some_and(|u| u == &*o.id) {
                if !declared
                    && !self.user_id_space.contains(&o.collection)
                    && self.user_id_space.len() < USER_COLLECTIONS.len() * 4
                {
                    self.user_id_space.push(o.collection.clone());
                }
                Ownership::Own
            } else {
                // A user's record belongs to that user, whether or not they were seen, where
                // records are known to be keyed by user id.
                let keyed_by_user = declared || self.user_id_space.contains(&o.collection);
                // Objects in use stay: eviction takes the least recently seen. One look-up
                // marks the entry and reads it.
                let held = self.map.get_mut(o).map(|e| {
                    e.last = e.last.max(ts);
                    &*e
                });
                match held {
                    Some(e) if e.public => Ownership::Public,
                    Some(e) if e.owner.as_deref() == Some(principal) => Ownership::Own,
                    Some(Entry { owner: Some(_), .. }) => Ownership::Other,
                    _ if answered_as_own => Ownership::Own,
                    _ if user_record && keyed_by_user && ok && user_id.is_some() => {
                        Ownership::Other
                    }
                    _ => match self.collections.get(&o.collection) {
                        Some(c) if c.public(&self.cfg) => Ownership::Public,
                        Some(c) if c.claimed => Ownership::Unknown,
                        _ if user_record => Ownership::Unknown,
                        _ => Ownership::Unclaimed,
                    },
                }
            };
            if class == Ownership::Other {
                j.foreign.push(o.clone());
            }
            classes.push(class);
        }
        j.ownership = classes.iter().copied().max().or(Some(Ownership::None));
        j.cross_user = ok && classes.contains(&Ownership::Other);
        if !ok || j.cross_user {
            return j;
        }
        // Learn, from answers that took nobody else's data.
        let ph = principal_hash(principal);
        for (o, class) in objects.iter().zip(&classes) {
            if !matches!(class, Ownership::Unknown | Ownership::Unclaimed) {
                continue;
            }
            let max_readers = self.cfg.public_collection_readers;
            if let Some(c) = self.collection(&o.collection)
                && c.readers.len() < max_readers
                && !c.readers.contains(&ph)
            {
                c.readers.push(ph);
            }
            self.room_for(o);
            let public_readers = self.cfg.public_readers;
            let e = self.map.entry(o.clone()).or_insert_with(|| Entry {
                owner: None,
                readers: Vec::new(),
                public: false,
                last: ts,
            });
            e.last = e.last.max(ts);
            if !e.readers.contains(&ph) {
                e.readers.push(ph);
            }
            if e.readers.len() >= public_readers {
                e.public = true;
                e.readers.clear();
                if let Some(c) = self.collection(&o.collection) {
                    c.public_objects = c.public_objects.saturating_add(1);
                }
            }
        }
        // Objects it created (POST), or listed in its own scope (the request named one of
        // its own objects: `/users/{me}/orders`), are its own.
        let created = method == Some("POST");
        let own_scope = classes.contains(&Ownership::Own);
        if created || own_scope {
            for o in returned {
                if objects.contains(o) {
                    continue;
                }
                self.room_for(o);
                let e = self.map.entry(o.clone()).or_insert_with(|| Entry {
                    owner: None,
                    readers: Vec::new(),
                    public: false,
                    last: ts,
                });
                e.last = e.last.max(ts);
                if e.owner.is_none() && !e.public {
                    e.owner = Some(Arc::from(principal));
                    self.claim(&o.collection);
                }
            }
        }
        j
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Objects named with the route's judgement of the path are the objects named by
        /// judging every segment again, whatever the target: ids of every shape, more
        /// than 64 segments, queries, fragments (where the route's path is cut shorter).
        #[test]
        fn the_routes_judgement_names_the_same_objects(
            segs in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just(String::new()),
                    "[0-9]{1,6}",
                    "(users|orders|items)",
                    "[0-9a-f]{16}",
                    "[a-z]{1,5}@[a-z]{2,4}\\.com",
                ],
                0..70,
            ),
            tail in proptest::option::of("[#?](id|user_id|x)=[0-9]{1,3}"),
        ) {
            let mut target = format!("/{}", segs.join("/"));
            if let Some(t) = &tail {
                target.push_str(t);
            }
            let mut route = String::new();
            let ids = crate::route::route_into(crate::route::path_of(&target), &mut route);
            proptest::prop_assert_eq!(
                request_objects_judged(&target, Some(ids), &crate::http::Headers::new(), b""),
                request_objects(&target, &crate::http::Headers::new(), b"")
            );
        }
    }

    fn json_hdr() -> Headers {
        crate::http::Headers::from_iter([("Content-Type", b"application/json".as_slice())])
    }

    fn r(c: &str, id: &str) -> ObjectRef {
        ObjectRef {
            collection: c.into(),
            id: id.into(),
        }
    }

    /// The body's ids as read before `json_fields`: from a parsed `Value::Object`.
    fn body_ids_from_value(body: &[u8]) -> Vec<ObjectRef> {
        use serde_json::Value;
        let Ok(Value::Object(o)) = serde_json::from_slice::<Value>(body) else {
            return Vec::new();
        };
        o.iter()
            .filter_map(|(k, v)| {
                let lk = k.to_ascii_lowercase();
                let id: Arc<str> = match v {
                    _ if !lk.ends_with("_id") => return None,
                    Value::Number(n) => Arc::from(n.to_string()),
                    Value::String(s) if !s.is_empty() && s.len() <= 128 => Arc::from(s.as_str()),
                    _ => return None,
                };
                Some(ObjectRef {
                    collection: collection(&lk),
                    id,
                })
            })
            .collect()
    }

    fn body_ids(body: &[u8]) -> Vec<ObjectRef> {
        request_objects("/api/v1/transfers", &json_hdr(), body).to_vec()
    }

    /// Reading the ids without building the body's tree gives what the tree gave: key
    /// order, a repeated key's last value, escaped and non-ASCII names, every number form,
    /// ids too long or not scalars, and bodies that are not one valid JSON object.
    #[test]
    fn body_ids_as_a_parsed_object_gives_them() {
        let deep = format!(
            "{{\"a_id\":1,\"x\":{}1{}}}",
            "[".repeat(200),
            "]".repeat(200)
        );
        let long = format!(
            r#"{{"a_id":"{}","b_id":"{}"}}"#,
            "x".repeat(128),
            "y".repeat(129)
        );
        let bodies: Vec<&[u8]> = vec![
            br#"{"to_account_id":"AC-9","from_account_id":12,"amount":5}"#,
            br#"{"order_id":1,"Order_Id":2,"order_id":3}"#,
            br#"{"order_id":1,"order_id":{"id":2}}"#,
            br#"{"order_id":{"id":2},"order_id":"7"}"#,
            br#"{"order\u005fid":"esc","\u00e9_id":"e","\u00e9":"no","_id":"bare","ID":"up","x_ID":5}"#,
            "{\"caf\u{e9}_id\":\"k\",\"\u{e9}\":1,\"\u{e9}d\":2}".as_bytes(),
            br#"{"a_id":1.5,"b_id":1e2,"c_id":-0,"d_id":-12,"e_id":18446744073709551615,"f_id":-9223372036854775808,"g_id":2.0}"#,
            br#"{"a_id":"","b_id":null,"c_id":true,"d_id":[1],"e_id":{},"f_id":" "}"#,
            long.as_bytes(),
            br#"{"nested":{"user_id":1},"list":[{"order_id":2}],"card_id":3}"#,
            br#"{"a_id":1,}"#,
            br#"{"a_id":1} x"#,
            br#"{"a_id":1e400}"#,
            br#"[{"a_id":1}]"#,
            br#""a_id""#,
            br#"{"a_id":"\ud800"}"#,
            br#"{"a_id":"tab\there"}"#,
            b"{}",
        ];
        for body in bodies {
            assert_eq!(
                body_ids(body),
                body_ids_from_value(body),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(
            body_ids(br#"{"order_id":1,"Order_Id":2,"order_id":3}"#),
            vec![r("order", "2"), r("order", "3")]
        );
        // Where they differ: fields nested deeper than serde_json builds a tree (128
        // levels) no longer hide the ids beside them.
        assert_eq!(body_ids_from_value(deep.as_bytes()), vec![]);
        assert_eq!(body_ids(deep.as_bytes()), vec![r("a", "1")]);
    }

    proptest::proptest! {
        /// Any object of scalars, arrays and objects, with `*_id` names among others.
        #[test]
        fn body_ids_match_the_parsed_object(body in json_object()) {
            let bytes = body.as_bytes();
            proptest::prop_assert_eq!(body_ids(bytes), body_ids_from_value(bytes));
        }
    }

    /// JSON text of an object whose fields may repeat (which a `Value` cannot hold).
    fn json_object() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just("null".to_string()),
            any::<bool>().prop_map(|b| b.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| format!("{f:e}")),
            "[a-zA-Z0-9 _\\-]{0,140}".prop_map(|s| format!("{s:?}")),
        ];
        let value = leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                proptest::collection::vec(("[a-z]{1,3}(_id|_ID|Id)?", inner), 0..4)
                    .prop_map(object_text),
            ]
        });
        proptest::collection::vec(("(order|user|a|b)(_id|_ID|_Id|Id|)", value), 0..8)
            .prop_map(object_text)
    }

    /// `{"name":value,...}` of fields given as names and JSON texts.
    fn object_text(fields: Vec<(String, String)>) -> String {
        let fields: Vec<String> = fields
            .into_iter()
            .map(|(k, x)| format!("{k:?}:{x}"))
            .collect();
        format!("{{{}}}", fields.join(","))
    }

    #[test]
    fn request_objects_from_path_query_and_body() {
        assert_eq!(
            request_objects(
                "/api/v1/users/1001/orders/5001?page=2",
                &crate::http::Headers::new(),
                b""
            ),
            vec![r("user", "1001"), r("order", "5001")]
        );
        assert_eq!(
            request_objects(
                "/api/v2/accounts/3f2b8c1e-9d4a-4b5e-8f6a-1c2d3e4f5a6b/cards?card_id=77",
                &crate::http::Headers::new(),
                b""
            ),
            vec![
                r("account", "3f2b8c1e-9d4a-4b5e-8f6a-1c2d3e4f5a6b"),
                r("card", "77")
            ]
        );
        assert_eq!(
            request_objects(
                "/api/v1/transfers",
                &json_hdr(),
                br#"{"from_account_id": 12, "to_account_id": "AC-9", "amount": 5}"#
            ),
            vec![r("from_account", "12"), r("to_account", "AC-9")]
        );
    }

    #[test]
    fn returned_ids_from_objects_and_lists() {
        assert_eq!(
            returned_objects(
                "/api/v1/users/1001/orders",
                &json_hdr(),
                br#"{"orders":[{"id":5001,"total":1},{"id":5002}]}"#
            ),
            vec![r("order", "5001"), r("order", "5002")]
        );
        assert_eq!(
            returned_objects(
                "/api/v1/orders",
                &json_hdr(),
                br#"{"id": 6001, "user_id": 1}"#
            ),
            vec![r("order", "6001")]
        );
        assert_eq!(
            returned_objects("/api/v1/items", &json_hdr(), br#"[{"id":"a"},{"id":"b"}]"#),
            vec![r("item", "a"), r("item", "b")]
        );
        assert!(returned_objects("/x", &json_hdr(), b"not json").is_empty());
    }

    fn judge(
        o: &mut Owners,
        who: &str,
        uid: Option<&str>,
        objs: &[ObjectRef],
        ret: &[ObjectRef],
        method: &str,
        status: u16,
    ) -> Judged {
        o.judge(
            Timestamp(1),
            who,
            uid,
            objs,
            ret,
            None,
            Some(method),
            Some(status),
            &|_| false,
            &|_| false,
        )
    }

    #[test]
    fn an_answer_naming_the_requester_as_owner_is_their_own_object_and_accuses_nobody() {
        let mut o = Owners::new(OwnersConfig::default());
        let order = || r("order", "500123");
        let read = |o: &mut Owners, who: &str, uid: &str, owner: Option<&str>, status: u16| {
            o.judge(
                Timestamp(1),
                who,
                Some(uid),
                &[order()],
                &[],
                owner,
                Some("GET"),
                Some(status),
                &|_| false,
                &|_| false,
            )
        };
        // Orders have owners: user 5 lists theirs (`/users/5/orders`).
        o.judge(
            Timestamp(1),
            "user:5",
            Some("5"),
            &[r("user", "5")],
            &[r("order", "400001")],
            None,
            Some("GET"),
            Some(200),
            &|_| false,
            &|_| false,
        );
        // Never listed nor created in sight: unknown, unless the answer says whose it is.
        assert_eq!(
            read(&mut o, "user:7", "7", None, 200).ownership,
            Some(Ownership::Unknown)
        );
        let j = read(&mut o, "user:7", "7", Some("7"), 200);
        assert_eq!(j.ownership, Some(Ownership::Own));
        assert!(!j.cross_user);
        // Someone else named as owner: no accusation (a public review names its author).
        let j = read(&mut o, "user:8", "8", Some("7"), 200);
        assert_eq!(j.ownership, Some(Ownership::Unknown));
        assert!(!j.cross_user);
        // A refused answer proves nothing; nothing was learned from the owner field either.
        assert_eq!(
            read(&mut o, "user:8", "8", Some("8"), 404).ownership,
            Some(Ownership::Unknown)
        );
        assert_eq!(
            read(&mut o, "user:9", "9", None, 200).ownership,
            Some(Ownership::Unknown)
        );
    }

    #[test]
    fn ownership_is_learned_each_way() {
        let mut o = Owners::new(OwnersConfig::default());
        // Their own user record.
        let j = judge(
            &mut o,
            "user:1001",
            Some("1001"),
            &[r("user", "1001")],
            &[],
            "GET",
            200,
        );
        assert_eq!(j.ownership, Some(Ownership::Own));
        // Someone else's user record is someone else's even before they are seen, once user
        // records are known to be keyed by user id (1001 fetched its own above).
        let j = judge(
            &mut o,
            "user:1004",
            Some("1004"),
            &[r("user", "1001")],
            &[],
            "GET",
            200,
        );
        assert_eq!(j.ownership, Some(Ownership::Other));
        assert!(j.cross_user);
        // Listed in their own scope: their orders.
        judge(
            &mut o,
            "user:1001",
            Some("1001"),
            &[r("user", "1001")],
            &[r("order", "5001")],
            "GET",
            200,
        );
        let j = judge(
            &mut o,
            "user:1004",
            Some("1004"),
            &[r("order", "5001")],
            &[],
            "GET",
            200,
        );
        assert!(j.cross_user, "{j:?}");
        assert_eq!(j.foreign, vec![r("order", "5001")]);
        // Lists fetched in someone else's scope teach nothing.
        judge(
            &mut o,
            "user:1004",
            Some("1004"),
            &[r("user", "1002")],
            &[r("order", "5004")],
            "GET",
            200,
        );
        let j = judge(
            &mut o,
            "user:1002",
            Some("1002"),
            &[r("order", "5004")],
            &[],
            "GET",
            200,
        );
        assert_eq!(j.ownership, Some(Ownership::Unknown));
        // Created by them.
        judge(
            &mut o,
            "user:1002",
            Some("1002"),
            &[],
            &[r("order", "6001")],
            "POST",
            201,
        );
        let j = judge(
            &mut o,
            "user:1002",
            Some("1002"),
            &[r("order", "6001")],
            &[],
            "GET",
            200,
        );
        assert_eq!(j.ownership, Some(Ownership::Own));
        // A failed probe is not an access.
        let j = judge(
            &mut o,
            "user:1004",
            Some("1004"),
            &[r("order", "6001")],
            &[],
            "GET",
            404,
        );
        assert_eq!(j.ownership, Some(Ownership::Other));
        assert!(!j.cross_user);
    }

    #[test]
    fn user_records_in_another_id_space_are_nobodys() {
        // Users are e-mail addresses, records are numbered: no record can be called theirs
        // or someone else's.
        let mut o = Owners::new(OwnersConfig::default());
        let j = judge(
            &mut o,
            "user:carol@example.com",
            Some("carol@example.com"),
            &[r("user", "3")],
            &[],
            "GET",
            200,
        );
        assert_eq!(j.ownership, Some(Ownership::Unknown));
        assert!(!j.cross_user);
    }

    #[test]
    fn objects_read_by_many_become_public() {
        let mut o = Owners::new(OwnersConfig::default());
        for who in ["user:1", "user:2", "user:3"] {
            judge(
                &mut o,
                who,
                Some(&who[5..]),
                &[r("item", "7")],
                &[],
                "GET",
                200,
            );
        }
        let j = judge(
            &mut o,
            "user:4",
            Some("4"),
            &[r("item", "7")],
            &[],
            "GET",
            200,
        );
        assert_eq!(j.ownership, Some(Ownership::Public));
        // Declared public by a rule.
        let j = o.judge(
            Timestamp(2),
            "user:9",
            Some("9"),
            &[r("item", "8")],
            &[],
            None,
            Some("GET"),
            Some(200),
            &|x| &*x.collection == "item",
            &|_| false,
        );
        assert_eq!(j.ownership, Some(Ownership::Public));
    }

    #[test]
    fn never_owned_collections_are_unclaimed_then_public_once_many_read_them() {
        let mut o = Owners::new(OwnersConfig::default());
        // A store locator: nobody ever lists, creates or owns a store.
        let j = judge(
            &mut o,
            "user:1",
            Some("1"),
            &[r("store", "1")],
            &[],
            "GET",
            200,
        );
        assert_eq!(j.ownership, Some(Ownership::Unclaimed));
        // Ten users each browse the same three stores and a few of their own picking.
        for u in 1..=10u32 {
            let who = format!("user:{u}");
            for s in [1, 2, 3, u + 100] {
                judge(
                    &mut o,
                    &who,
                    Some(&u.to_string()),
                    &[r("store", &s.to_string())],
                    &[],
                    "GET",
                    200,
                );
            }
        }
        // Now any store, even one nobody read yet, is public: the collection is a catalogue.
        let j = judge(
            &mut o,
            "user:77",
            Some("77"),
            &[r("store", "999")],
            &[],
            "GET",
            200,
        );
        assert_eq!(j.ownership, Some(Ownership::Public));
        assert!(!j.cross_user);
    }

    #[test]
    fn a_collection_with_one_owned_object_is_never_a_catalogue() {
        let mut o = Owners::new(OwnersConfig::default());
        // One order created by its owner: orders have owners.
        judge(
            &mut o,
            "user:1",
            Some("1"),
            &[],
            &[r("order", "1")],
            "POST",
            201,
        );
        // A prober reading many other orders with many fake principals teaches nothing
        // public about the collection: unknown orders stay unknown, not unclaimed.
        for u in 2..=20u32 {
            let j = judge(
                &mut o,
                &format!("user:{u}"),
                Some(&u.to_string()),
                &[r("order", &(u + 50).to_string())],
                &[],
                "GET",
                200,
            );
            assert_eq!(j.ownership, Some(Ownership::Unknown));
        }
        let j = judge(
            &mut o,
            "user:2",
            Some("2"),
            &[r("order", "1")],
            &[],
            "GET",
            200,
        );
        assert_eq!(j.ownership, Some(Ownership::Other));
    }

    #[test]
    fn one_prober_with_the_owners_never_makes_an_object_public() {
        // Three readers make an object public; an owner and one prober are two.
        let mut o = Owners::new(OwnersConfig::default());
        for s in 1..=5u32 {
            judge(
                &mut o,
                "user:1",
                Some("1"),
                &[r("store", &s.to_string())],
                &[],
                "GET",
                200,
            );
            let j = judge(
                &mut o,
                "user:2",
                Some("2"),
                &[r("store", &s.to_string())],
                &[],
                "GET",
                200,
            );
            assert_eq!(j.ownership, Some(Ownership::Unclaimed));
        }
    }

    #[test]
    fn the_map_is_bounded() {
        let mut o = Owners::new(OwnersConfig {
            max_objects: 100,
            public_readers: 3,
            public_collection_readers: 10,
        });
        for i in 0..1000 {
            judge(
                &mut o,
                "user:1",
                Some("1"),
                &[],
                &[r("order", &i.to_string())],
                "POST",
                201,
            );
        }
        assert!(o.len() <= 100);
        assert!(o.evicted >= 900);
    }
}
