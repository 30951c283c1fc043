//! Shared strings for the few names every transaction repeats (routes, hosts, endpoints),
//! so the packet path hands out reference counts instead of allocating, and the detect
//! thread frees nothing a worker allocated per transaction.
//!
//! Bounded: hostile traffic can mint any number of distinct routes, so at the cap the table
//! starts over (the strings already handed out stay valid; they are just no longer shared).

use std::collections::HashMap;
use std::sync::Arc;

/// Names kept at most before the table starts over.
const MAX_NAMES: usize = 8192;

type Names = HashMap<Arc<str>, Arc<str>, foldhash::fast::RandomState>;
/// Per route: `(method, "METHOD /route")`.
type Endpoints = HashMap<Arc<str>, Vec<(Arc<str>, Arc<str>)>, foldhash::fast::RandomState>;

#[derive(Default)]
pub struct Interner {
    names: Names,
    endpoints: Endpoints,
}

impl Interner {
    /// The shared copy of `s`.
    pub fn name(&mut self, s: &str) -> Arc<str> {
        self.mapped(s, str::to_owned)
    }

    /// The shared copy of `f(s)`, computed once per distinct `s`.
    pub fn mapped(&mut self, s: &str, f: impl FnOnce(&str) -> String) -> Arc<str> {
        if let Some(a) = self.names.get(s) {
            return a.clone();
        }
        if self.names.len() >= MAX_NAMES {
            self.names.clear();
        }
        let a: Arc<str> = Arc::from(f(s));
        self.names.insert(Arc::from(s), a.clone());
        a
    }

    /// The shared `METHOD /route` string.
    pub fn endpoint(&mut self, method: &str, route: &str) -> Arc<str> {
        if let Some(e) = self
            .endpoints
            .get(route)
            .and_then(|v| v.iter().find(|(m, _)| **m == *method))
        {
            return e.1.clone();
        }
        if self.endpoints.len() >= MAX_NAMES {
            self.endpoints.clear();
        }
        let e: Arc<str> = Arc::from(format!("{method} {route}"));
        let per_route = self.endpoints.entry(Arc::from(route)).or_default();
        // Methods are few; a route answering many made-up ones keeps only the latest.
        if per_route.len() >= 16 {
            per_route.clear();
        }
        per_route.push((Arc::from(method), e.clone()));
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_and_stays_bounded() {
        let mut i = Interner::default();
        let a = i.name("/api/v1/users/{id}");
        let b = i.name("/api/v1/users/{id}");
        assert!(Arc::ptr_eq(&a, &b));
        let e1 = i.endpoint("GET", "/api/v1/users/{id}");
        let e2 = i.endpoint("GET", "/api/v1/users/{id}");
        let p = i.endpoint("POST", "/api/v1/users/{id}");
        assert_eq!(&*e1, "GET /api/v1/users/{id}");
        assert_eq!(&*p, "POST /api/v1/users/{id}");
        assert!(Arc::ptr_eq(&e1, &e2));
        for n in 0..3 * MAX_NAMES {
            let s = format!("/r/{n}x");
            assert_eq!(&*i.name(&s), s);
            assert_eq!(&*i.endpoint("GET", &s), format!("GET {s}"));
        }
        assert!(i.names.len() <= MAX_NAMES);
        assert!(i.endpoints.len() <= MAX_NAMES);
        for n in 0..40 {
            let m = format!("M{n}");
            assert_eq!(&*i.endpoint(&m, "/x"), format!("M{n} /x"));
        }
        assert!(i.endpoints.get("/x").is_some_and(|v| v.len() <= 16));
    }
}
