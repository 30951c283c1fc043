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
    /// The field list of the last response, and the places of those of its paths that are
    /// held: an endpoint answers with the same fields response after response, and a
    /// repeat then costs a pointer comparison (workers share one copy per shape, and
    /// `Arc<str>`'s `==` compares pointers first) and a count per field, not a tree search
    /// per path.
    last_shape: Arc<str>,
    last_held: Vec<usize>,
    /// Paths of that shape refused by the caps.
    last_refused: u64,
}

/// Bytes one field path costs (its tree node, path text and class counts, typically).
pub const FIELD_BYTES: usize = 160;

/// The inventory of every route seen.
pub struct Inventory {
    routes: Map<Route>,
    routes_over_cap: u64,
    /// Field paths held over all routes, and the most allowed (the memory budget).
    fields: usize,
    max_fields: usize,
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
        }
    }

    /// (bytes held, field paths held).
    pub fn usage(&self) -> (usize, usize) {
        (
            self.routes.len() * FIELD_BYTES + self.fields * FIELD_BYTES,
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
        if !r.last_shape.is_empty() && r.last_shape == scan.fields {
            // Paths held stay held, and paths refused stay refused (the caps only fill).
            for &i in &r.last_held {
                r.stats[i].seen += 1;
            }
            r.fields_over_cap += r.last_refused;
        } else {
            r.last_held.clear();
            r.last_refused = 0;
            for f in scan.fields.split('\n').filter(|f| !f.is_empty()) {
                let i = match r.fields.get(f) {
                    Some(&i) => i,
                    None if r.fields.len() >= MAX_FIELDS || self.fields >= self.max_fields => {
                        r.fields_over_cap += 1;
                        r.last_refused += 1;
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
                r.last_held.push(i);
            }
            r.last_shape = scan.fields.clone();
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
                let fields: serde_json::Map<String, Value> = r
                    .fields
                    .iter()
                    .map(|(p, &i)| {
                        let f = &r.stats[i];
                        let classes: serde_json::Map<String, Value> = Class::ALL
                            .iter()
                            .zip(f.classes)
                            .filter(|(_, n)| *n > 0)
                            .map(|(c, n)| (c.as_str().to_string(), n.into()))
                            .collect();
                        (p.to_string(), json!({"seen": f.seen, "classes": classes}))
                    })
                    .collect();
                (
                    k.to_string(),
                    json!({"responses": r.responses, "fields": fields, "fields_over_cap": r.fields_over_cap}),
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
}
