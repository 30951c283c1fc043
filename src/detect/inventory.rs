//! The field inventory: which field paths each route returns, their classes, how often.
//! Bounded (routes and fields per route are capped; what does not fit is counted), and
//! holding only paths and class names, never values. Written with `--inventory-out`.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::exposure::Scan;

/// Routes (`METHOD /template`) inventoried at most.
const MAX_ROUTES: usize = 2048;
/// Field paths per route at most.
const MAX_FIELDS: usize = 512;

#[derive(Default)]
struct Field {
    seen: u64,
    classes: BTreeMap<&'static str, u64>,
}

#[derive(Default)]
struct Route {
    responses: u64,
    fields: BTreeMap<String, Field>,
    fields_over_cap: u64,
}

/// Bytes one field path costs (its tree node, path text and class counts, typically).
pub const FIELD_BYTES: usize = 160;

/// The inventory of every route seen.
pub struct Inventory {
    routes: BTreeMap<String, Route>,
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
            routes: BTreeMap::new(),
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

    pub fn add(&mut self, method: &str, route: &str, scan: &Scan) {
        let key = format!("{method} {route}");
        if !self.routes.contains_key(&key) && self.routes.len() >= MAX_ROUTES {
            self.routes_over_cap += 1;
            return;
        }
        let r = self.routes.entry(key).or_default();
        r.responses += 1;
        for f in scan.fields.split('\n').filter(|f| !f.is_empty()) {
            if let Some(x) = r.fields.get_mut(f) {
                x.seen += 1;
            } else if r.fields.len() >= MAX_FIELDS || self.fields >= self.max_fields {
                r.fields_over_cap += 1;
            } else {
                self.fields += 1;
                r.fields.entry(f.to_string()).or_default().seen += 1;
            }
        }
        for fi in &scan.findings {
            if let Some(field) = r.fields.get_mut(&*fi.path) {
                *field.classes.entry(fi.class.as_str()).or_default() += 1;
            } else if r.fields.len() < MAX_FIELDS && self.fields < self.max_fields {
                self.fields += 1;
                let field = r.fields.entry(fi.path.to_string()).or_default();
                field.seen += 1;
                *field.classes.entry(fi.class.as_str()).or_default() += 1;
            }
        }
    }

    /// `{"routes": {"GET /x": {"responses": n, "fields": {"$.a": {"seen": n, "classes": {..}}}}}}`.
    pub fn to_json(&self) -> Value {
        let routes: serde_json::Map<String, Value> = self
            .routes
            .iter()
            .map(|(k, r)| {
                let fields: serde_json::Map<String, Value> = r
                    .fields
                    .iter()
                    .map(|(p, f)| (p.clone(), json!({"seen": f.seen, "classes": f.classes})))
                    .collect();
                (
                    k.clone(),
                    json!({"responses": r.responses, "fields": fields, "fields_over_cap": r.fields_over_cap}),
                )
            })
            .collect();
        json!({"routes": routes, "routes_over_cap": self.routes_over_cap})
    }
}
