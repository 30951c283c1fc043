//! Public fields: sensitive-looking values a route serves identically to many principals.
//!
//! A store locator returns shops' street addresses, phone numbers and coordinates; a
//! catalogue returns a vendor's contact e-mail. These look like personal data to the
//! classifiers, but personal data goes to its owner (and, through BOLA, to an attacker),
//! while public data goes to everyone. Per (route, field path, class) the engine keeps, for
//! the first values seen (as keyed digests, never values), which principals received each;
//! a value received by [`PUBLIC_VALUE_READERS`] principals is public, and a field with
//! [`PUBLIC_FIELD_VALUES`] public values is a public field of the route, no longer reported
//! as exposure (classes the rules deny everywhere always are). Only answers that took
//! nobody else's objects teach it, so a BOLA scraper cannot make a field public, and a
//! single prober reading the records their owners read gives each value two readers, not
//! three. Bounded: [`MAX_FIELDS`] fields and [`MAX_VALUES`] values per field.

use std::collections::HashMap;
use std::sync::Arc;

use super::exposure::{Class, Finding};

/// Principals that must receive one value for it to be public.
pub const PUBLIC_VALUE_READERS: usize = 3;
/// Public values that make the field public.
pub const PUBLIC_FIELD_VALUES: u32 = 3;
/// Fields (route, path, class) tracked; new ones past it are not learned.
const MAX_FIELDS: usize = 8192;
/// Values remembered per field (the oldest slot is reused past it).
const MAX_VALUES: usize = 64;

#[derive(Default)]
struct Field {
    /// (value digest, principals that received it), at most `MAX_VALUES`.
    values: Vec<(u64, smallvec::SmallVec<[u64; PUBLIC_VALUE_READERS]>)>,
    /// Next slot to reuse when full.
    next: usize,
    public_values: u32,
}

type Key = (Arc<str>, Arc<str>, Class);

/// Bytes one field may hold at most: its slot and a full list of values.
pub const FIELD_BYTES: usize = std::mem::size_of::<(Key, Field)>()
    + 1
    + MAX_VALUES * std::mem::size_of::<(u64, smallvec::SmallVec<[u64; PUBLIC_VALUE_READERS]>)>();

/// Fields learned public per route.
pub struct PublicFields {
    fields: HashMap<Key, Field, foldhash::fast::RandomState>,
    max_fields: usize,
}

impl Default for PublicFields {
    fn default() -> Self {
        PublicFields::with_limit(MAX_FIELDS)
    }
}

impl PublicFields {
    /// At most `max_fields` fields (and never more than [`MAX_FIELDS`]).
    pub fn with_limit(max_fields: usize) -> PublicFields {
        PublicFields {
            fields: HashMap::default(),
            max_fields: max_fields.clamp(1, MAX_FIELDS),
        }
    }

    /// (bytes held, fields tracked).
    pub fn usage(&self) -> (usize, usize) {
        let per = std::mem::size_of::<(Key, Field)>() + 1;
        let values = std::mem::size_of::<(u64, smallvec::SmallVec<[u64; PUBLIC_VALUE_READERS]>)>();
        let bytes = self
            .fields
            .values()
            .map(|f| per + f.values.capacity() * values)
            .sum();
        (bytes, self.fields.len())
    }

    /// Whether the route serves this field to everyone.
    pub fn is_public(&self, route: &Arc<str>, f: &Finding) -> bool {
        self.fields
            .get(&(route.clone(), f.path.clone(), f.class))
            .is_some_and(|x| x.public_values >= PUBLIC_FIELD_VALUES)
    }

    /// Learns from one answer given to `principal` (a keyed hash).
    pub fn learn(&mut self, route: &Arc<str>, principal: u64, findings: &[Finding]) {
        for f in findings {
            let key = (route.clone(), f.path.clone(), f.class);
            if !self.fields.contains_key(&key) && self.fields.len() >= self.max_fields {
                continue;
            }
            let field = self.fields.entry(key).or_default();
            if field.public_values >= PUBLIC_FIELD_VALUES {
                continue;
            }
            for d in &f.digests {
                let slot = match field.values.iter().position(|(x, _)| x == d) {
                    Some(i) => i,
                    None if field.values.len() < MAX_VALUES => {
                        field.values.push((*d, smallvec::SmallVec::new()));
                        field.values.len() - 1
                    }
                    None => {
                        let i = field.next % MAX_VALUES;
                        field.next = field.next.wrapping_add(1);
                        if let Some(v) = field.values.get_mut(i) {
                            *v = (*d, smallvec::SmallVec::new());
                        }
                        i
                    }
                };
                let Some((_, readers)) = field.values.get_mut(slot) else {
                    continue;
                };
                if readers.len() < PUBLIC_VALUE_READERS && !readers.contains(&principal) {
                    readers.push(principal);
                    if readers.len() == PUBLIC_VALUE_READERS {
                        field.public_values += 1;
                    }
                }
            }
        }
    }

    /// Fields learned public.
    pub fn public_count(&self) -> usize {
        self.fields
            .values()
            .filter(|f| f.public_values >= PUBLIC_FIELD_VALUES)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(path: &str, class: Class, digests: &[u64]) -> Finding {
        Finding {
            path: path.into(),
            class,
            masked: "x***".into(),
            digests: digests.iter().copied().collect(),
        }
    }

    #[test]
    fn values_many_principals_receive_make_a_public_field() {
        let mut p = PublicFields::default();
        let route: Arc<str> = "/api/v1/stores".into();
        let shops = finding("$.stores[].address", Class::StreetAddress, &[1, 2, 3, 4]);
        p.learn(&route, 10, std::slice::from_ref(&shops));
        p.learn(&route, 11, std::slice::from_ref(&shops));
        assert!(!p.is_public(&route, &shops));
        // The same principal again adds nothing.
        p.learn(&route, 11, std::slice::from_ref(&shops));
        assert!(!p.is_public(&route, &shops));
        p.learn(&route, 12, std::slice::from_ref(&shops));
        assert!(p.is_public(&route, &shops));
        assert_eq!(p.public_count(), 1);
        // Another route serving the same path is judged on its own.
        assert!(!p.is_public(&"/api/v1/me".into(), &shops));
    }

    #[test]
    fn personal_data_each_owner_receives_stays_personal() {
        let mut p = PublicFields::default();
        let route: Arc<str> = "/api/v1/me".into();
        for user in 0..500u64 {
            // Each user gets their own e-mail; a prober also reads a few of them.
            let mine = finding("$.email", Class::Email, &[1000 + user]);
            p.learn(&route, user, std::slice::from_ref(&mine));
            if user % 10 == 0 {
                p.learn(&route, 9999, std::slice::from_ref(&mine));
            }
        }
        assert!(!p.is_public(&route, &finding("$.email", Class::Email, &[1000])));
    }
}
