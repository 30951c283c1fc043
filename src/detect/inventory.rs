//! The field inventory: which field paths each route returns, their classes, how often.
//! Bounded (routes and fields per route are capped; what does not fit is counted), and
//! holding only paths and class names, never values. Written with `--inventory-out`.

use std::sync::Arc;

use serde_json::{Value, json};

use super::exposure::Scan;
use crate::exposure_class::Class;

/// Hash maps (one probe per route and per path; these run for every response scanned),
/// ordered when written out.
type Map<V> = hashbrown::HashMap<Arc<str>, V, foldhash::fast::RandomState>;

/// Routes (`METHOD /template`) inventoried at most.
const MAX_ROUTES: usize = 2048;
/// Field paths per route at most.
const MAX_FIELDS: usize = 512;

#[derive(Default)]
struct Field {
    seen: u64,
    /// Findings by class ([`Class`]'s order).
    classes: [u64; Class::ALL.len()],
}

#[derive(Default)]
struct Route {
    responses: u64,
    /// Field path → its place in `stats`.
    fields: Map<usize>,
    stats: Vec<Field>,
    fields_over_cap: u64,
    /// The field lists of the latest responses ([`SHAPES_KEPT`] at most, the latest
    /// first), each with the places of those of its paths that are held: an endpoint
    /// answers with the same few shapes, response after response, and a repeat then costs
    /// a pointer comparison (workers share one copy per shape, and `Arc<str>`'s `==`
    /// compares pointers first) and one count, not a map probe per path: the shape counts
    /// its repeats, and they reach its paths' counts when it is given up or the inventory
    /// is read.
    shapes: Vec<Shape>,
}

/// A field list met, the places of its held paths, and how many of its paths the caps
/// refused.
struct Shape {
    fields: Arc<str>,
    /// Places in the route's `stats` (under [`MAX_FIELDS`]).
    held: Vec<u16>,
    refused: u64,
    /// Repeats of this shape not yet in its paths' `seen` nor the route's
    /// `fields_over_cap` (a count per held path per response was a cache miss each, on
    /// every response scanned).
    repeats: u64,
}

impl Shape {
    /// Bytes it holds (its field list is charged here though the workers share it).
    fn bytes(&self) -> usize {
        std::mem::size_of::<Shape>() + self.fields.len() + self.held.capacity() * 2
    }
}

impl Shape {
    fn empty() -> Shape {
        Shape {
            fields: Arc::from(""),
            held: Vec::new(),
            refused: 0,
            repeats: 0,
        }
    }

    /// Its repeats, counted into `stats` and `over_cap` (and no longer its own).
    fn settle(&mut self, stats: &mut [Field], over_cap: &mut u64) {
        let n = std::mem::take(&mut self.repeats);
        if n == 0 {
            return;
        }
        for &i in &self.held {
            if let Some(f) = stats.get_mut(usize::from(i)) {
                f.seen += n;
            }
        }
        *over_cap += self.refused * n;
    }
}

impl Route {
    /// Every path's `seen` (by place in `stats`), with the repeats its remembered shapes
    /// hold: one pass over the shapes, not one per path.
    fn seen(&self) -> Vec<u64> {
        let mut seen: Vec<u64> = self.stats.iter().map(|f| f.seen).collect();
        for s in &self.shapes {
            for &i in &s.held {
                if let Some(n) = seen.get_mut(usize::from(i)) {
                    *n += s.repeats;
                }
            }
        }
        seen
    }

    /// Paths the caps refused, with the repeats its remembered shapes hold.
    fn over_cap(&self) -> u64 {
        self.fields_over_cap
            + self
                .shapes
                .iter()
                .map(|s| s.refused * s.repeats)
                .sum::<u64>()
    }
}

/// Shapes a route remembers: one was too few where a route alternates between shapes (a
/// product with or without a discount): on the realistic capture, 208,010 of 387,797
/// responses then probed every path.
const SHAPES_KEPT: usize = 4;
/// Longest field list remembered (longer ones are looked up path by path every time):
/// with [`SHAPES_KEPT`] per route, a route holds at most 16 KiB of them.
const MAX_SHAPE_BYTES: usize = 4096;

/// Bytes one field path costs (its tree node, path text and class counts, typically).
pub const FIELD_BYTES: usize = 160;

/// The inventory of every route seen.
pub struct Inventory {
    routes: Map<Route>,
    routes_over_cap: u64,
    /// Field paths held over all routes, and the most allowed (the memory budget).
    fields: usize,
    max_fields: usize,
    /// Bytes of the shapes the routes remember.
    shape_bytes: usize,
}

impl Default for Inventory {
    fn default() -> Self {
        Inventory::with_limit(MAX_ROUTES * MAX_FIELDS)
    }
}

impl Inventory {
    /// At most `max_fields` field paths over all routes.
    pub fn with_limit(max_fields: usize) -> Inventory {
        Inventory {
            routes: Map::default(),
            routes_over_cap: 0,
            fields: 0,
            max_fields: max_fields.max(1),
            shape_bytes: 0,
        }
    }

    /// (bytes held, field paths held).
    pub fn usage(&self) -> (usize, usize) {
        (
            self.routes.len() * FIELD_BYTES + self.fields * FIELD_BYTES + self.shape_bytes,
            self.fields,
        )
    }

    /// Counts one response of `endpoint` (`METHOD /route`, the engine's shared text).
    pub fn add(&mut self, endpoint: &Arc<str>, scan: &Scan) {
        // One probe finds it (every response but a route's first) or its slot.
        let held = self.routes.len();
        let r = match self.routes.entry_ref(&**endpoint) {
            hashbrown::hash_map::EntryRef::Occupied(o) => o.into_mut(),
            hashbrown::hash_map::EntryRef::Vacant(_) if held >= MAX_ROUTES => {
                self.routes_over_cap += 1;
                return;
            }
            hashbrown::hash_map::EntryRef::Vacant(v) => {
                v.insert_with_key(Arc::clone(endpoint), Route::default())
            }
        };
        r.responses += 1;
        // Paths held stay held, and paths refused stay refused (the caps only fill), so a
        // shape met before counts as it did then.
        if let Some(at) = r.shapes.iter().position(|s| s.fields == scan.fields) {
            r.shapes[at].repeats += 1;
            if at > 0 {
                r.shapes[..=at].rotate_right(1);
            }
        } else if !scan.fields.is_empty() {
            // The least recently met gives up its place (and its buffer).
            let mut shape = match r.shapes.len() {
                n if n >= SHAPES_KEPT => r.shapes.pop(),
                _ => None,
            }
            .map_or_else(Shape::empty, |mut old| {
                old.settle(&mut r.stats, &mut r.fields_over_cap);
                self.shape_bytes = self.shape_bytes.saturating_sub(old.bytes());
                old
            });
            shape.held.clear();
            shape.refused = 0;
            for f in scan.fields.split('\n').filter(|f| !f.is_empty()) {
                let i = match r.fields.get(f) {
                    Some(&i) => i,
                    None if r.fields.len() >= MAX_FIELDS || self.fields >= self.max_fields => {
                        r.fields_over_cap += 1;
                        shape.refused += 1;
                        continue;
                    }
                    None => {
                        self.fields += 1;
                        r.stats.push(Field::default());
                        r.fields.insert(Arc::from(f), r.stats.len() - 1);
                        r.stats.len() - 1
                    }
                };
                r.stats[i].seen += 1;
                shape.held.extend(u16::try_from(i).ok());
            }
            if scan.fields.len() <= MAX_SHAPE_BYTES {
                shape.fields = scan.fields.clone();
                self.shape_bytes += shape.bytes();
                r.shapes.insert(0, shape);
            }
        }
        for fi in &scan.findings {
            let i = match r.fields.get(&*fi.path) {
                Some(&i) => i,
                None if r.fields.len() < MAX_FIELDS && self.fields < self.max_fields => {
                    self.fields += 1;
                    r.stats.push(Field {
                        seen: 1,
                        ..Field::default()
                    });
                    r.fields.insert(Arc::clone(&fi.path), r.stats.len() - 1);
                    r.stats.len() - 1
                }
                None => continue,
            };
            r.stats[i].classes[fi.class as usize] += 1;
        }
    }

    /// `{"routes": {"GET /x": {"responses": n, "fields": {"$.a": {"seen": n, "classes": {..}}}}}}`.
    /// (`serde_json`'s maps keep their keys sorted.)
    pub fn to_json(&self) -> Value {
        let routes: serde_json::Map<String, Value> = self
            .routes
            .iter()
            .map(|(k, r)| {
                let seen = r.seen();
                let fields: serde_json::Map<String, Value> = r
                    .fields
                    .iter()
                    .map(|(p, &i)| {
                        let classes: serde_json::Map<String, Value> = Class::ALL
                            .iter()
                            .zip(r.stats.get(i).map_or([0; Class::ALL.len()], |f| f.classes))
                            .filter(|(_, n)| *n > 0)
                            .map(|(c, n)| (c.as_str().to_string(), n.into()))
                            .collect();
                        let seen = seen.get(i).copied().unwrap_or(0);
                        (p.to_string(), json!({"seen": seen, "classes": classes}))
                    })
                    .collect();
                (
                    k.to_string(),
                    json!({"responses": r.responses, "fields": fields, "fields_over_cap": r.over_cap()}),
                )
            })
            .collect();
        json!({"routes": routes, "routes_over_cap": self.routes_over_cap})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::exposure::{Class, Finding};
    use std::sync::Arc;

    fn scan(fields: &[&str], found: &[(&str, Class)]) -> Scan {
        Scan {
            fields: fields.join("\n").into(),
            findings: found
                .iter()
                .map(|(p, c)| Finding {
                    path: Arc::from(*p),
                    class: *c,
                    masked: Arc::from("x***"),
                    digests: smallvec::smallvec![1],
                })
                .collect(),
            ..Scan::default()
        }
    }

    fn field(inv: &Inventory, route: &str, path: &str) -> Value {
        inv.to_json()["routes"][route]["fields"][path].clone()
    }

    /// Repeated shapes (served from the memo), alternating shapes and a cap that fills
    /// midway all count as if every path were looked up on its own.
    #[test]
    fn counts_hold_across_repeated_and_alternating_shapes_and_caps() {
        let mut inv = Inventory::with_limit(3);
        let users: Arc<str> = Arc::from("GET /users/{id}");
        let orders: Arc<str> = Arc::from("GET /orders");
        let a = scan(&["$.id", "$.email"], &[("$.email", Class::Email)]);
        let b = scan(&["$.id", "$.name", "$.phone"], &[]);
        for _ in 0..3 {
            inv.add(&users, &a);
        }
        // `$.phone` does not fit: three paths are the limit.
        inv.add(&users, &b);
        inv.add(&users, &b);
        inv.add(&users, &a);
        let j = inv.to_json();
        let r = &j["routes"]["GET /users/{id}"];
        assert_eq!(r["responses"], 6);
        assert_eq!(r["fields_over_cap"], 2);
        assert_eq!(field(&inv, "GET /users/{id}", "$.id")["seen"], 6);
        assert_eq!(field(&inv, "GET /users/{id}", "$.email")["seen"], 4);
        assert_eq!(
            field(&inv, "GET /users/{id}", "$.email")["classes"]["email"],
            4
        );
        assert_eq!(field(&inv, "GET /users/{id}", "$.name")["seen"], 2);
        assert!(field(&inv, "GET /users/{id}", "$.phone").is_null());
        assert_eq!(inv.usage().1, 3);
        // Another route starts full: everything it lists is over the cap.
        inv.add(&orders, &b);
        inv.add(&orders, &b);
        assert_eq!(inv.to_json()["routes"]["GET /orders"]["fields_over_cap"], 6);
    }

    /// Classes are counted in [`Class`]'s order and written by name; routes, paths and
    /// classes come out sorted, whatever order the maps hold them in.
    #[test]
    fn written_sorted_with_classes_by_name() {
        for (i, c) in Class::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i, "{c:?}");
        }
        let mut inv = Inventory::default();
        let found = scan(
            &["$.z", "$.a", "$.m"],
            &[
                ("$.z", Class::Phone),
                ("$.a", Class::Email),
                ("$.m", Class::Secret),
            ],
        );
        let phone_again = scan(&["$.z"], &[("$.z", Class::Phone), ("$.z", Class::Email)]);
        for route in ["POST /z", "GET /a", "GET /m"] {
            inv.add(&Arc::from(route), &found);
        }
        inv.add(&Arc::from("GET /a"), &phone_again);
        let text = inv.to_json().to_string();
        let at = |needle: &str| {
            text.find(needle)
                .unwrap_or_else(|| panic!("{needle} in {text}"))
        };
        assert!(
            at("GET /a") < at("GET /m") && at("GET /m") < at("POST /z"),
            "{text}"
        );
        let a = &inv.to_json()["routes"]["GET /a"]["fields"];
        assert_eq!(a["$.z"]["classes"], json!({"email": 1, "phone": 2}));
        assert_eq!(a["$.a"]["classes"], json!({"email": 1}));
        assert_eq!(a["$.m"]["classes"], json!({"secret": 1}));
        let fields = a
            .as_object()
            .expect("object")
            .keys()
            .cloned()
            .collect::<Vec<_>>();
        assert_eq!(fields, ["$.a", "$.m", "$.z"]);
    }

    /// The inventory as counted path by path, with no shapes remembered: what
    /// [`Inventory::add`] must give, whatever shapes it remembers.
    fn reference(limit: usize, responses: &[(usize, Scan)]) -> Value {
        /// Per route: responses, (path, seen) in order of first sight, paths refused.
        type Counted = (u64, Vec<(String, u64)>, u64);
        let mut routes: std::collections::BTreeMap<usize, Counted> = Default::default();
        let mut held = 0;
        for (route, scan) in responses {
            if !routes.contains_key(route) && routes.len() >= MAX_ROUTES {
                continue;
            }
            let r = routes.entry(*route).or_default();
            r.0 += 1;
            for f in scan.fields.split('\n').filter(|f| !f.is_empty()) {
                let full = r.1.len() >= MAX_FIELDS || held >= limit;
                match r.1.iter_mut().find(|(p, _)| p == f) {
                    Some((_, n)) => *n += 1,
                    None if full => r.2 += 1,
                    None => {
                        held += 1;
                        r.1.push((f.to_string(), 1));
                    }
                }
            }
        }
        let routes: serde_json::Map<String, Value> = routes
            .into_iter()
            .map(|(k, (responses, fields, over))| {
                let fields: serde_json::Map<String, Value> = fields
                    .into_iter()
                    .map(|(p, n)| (p, json!({"seen": n, "classes": {}})))
                    .collect();
                (
                    format!("GET /r{k}"),
                    json!({"responses": responses, "fields": fields, "fields_over_cap": over}),
                )
            })
            .collect();
        json!({"routes": routes, "routes_over_cap": 0})
    }

    proptest::proptest! {
        /// Routes answering with up to eight shapes in any order (more than a route
        /// remembers), equal shapes in separate copies, field lists too long to remember
        /// and caps that fill midway: the counts are those of a lookup per path.
        #[test]
        fn remembered_shapes_count_as_paths_looked_up_one_by_one(
            limit in 1usize..40,
            picks in proptest::collection::vec((0usize..3, 0usize..8, proptest::bool::ANY), 1..120),
        ) {
            let long: Vec<String> = (0..400).map(|i| format!("$.long_field_{i}")).collect();
            let shapes: Vec<Vec<String>> = (0..8)
                .map(|k| match k {
                    7 => long.clone(),
                    _ => (0..(k * 3 + 1)).map(|i| format!("$.f{}", (i * 7 + k) % 23)).collect(),
                })
                .collect();
            // One shared copy per shape (as the workers hand them out); the flag asks for
            // a copy of its own.
            let shared: Vec<Arc<str>> = shapes.iter().map(|s| Arc::from(s.join("\n"))).collect();
            let mut inv = Inventory::with_limit(limit);
            let mut seen = Vec::new();
            for (route, k, own) in picks {
                let sc = Scan {
                    fields: if own { Arc::from(&*shared[k]) } else { shared[k].clone() },
                    ..Scan::default()
                };
                inv.add(&Arc::from(format!("GET /r{route}")), &sc);
                seen.push((route, sc));
            }
            proptest::prop_assert_eq!(inv.to_json(), reference(limit, &seen));
            let remembered: usize = inv.routes.values().flat_map(|r| &r.shapes).map(Shape::bytes).sum();
            proptest::prop_assert_eq!(inv.shape_bytes, remembered);
            proptest::prop_assert!(inv.routes.values().all(|r| r.shapes.len() <= SHAPES_KEPT
                && r.shapes.iter().all(|s| s.fields.len() <= MAX_SHAPE_BYTES)));
        }
    }
}
