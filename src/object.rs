//! Objects and how they relate to whoever asks for them: an object reference
//! (collection and id), the ownership vocabulary rules match (`ownership:`), and how
//! collection names are normalised (`users`, `user_id` → `user`).

use std::sync::Arc;

/// Collections that hold user records: their ids are user ids.
pub const USER_COLLECTIONS: &[&str] = &["user", "account", "profile", "customer", "member"];

/// An object: its collection and id.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct ObjectRef {
    pub collection: Arc<str>,
    pub id: Arc<str>,
}

/// Whether a collection holds user records (`users`, `accounts`, `profiles`...): what it
/// returns is about a person even when everyone may read it.
pub fn is_user_collection(c: &str) -> bool {
    USER_COLLECTIONS.contains(&c)
}

/// A collection name: lower case, without an `_id` suffix or plural `s`.
pub fn collection(name: &str) -> Arc<str> {
    // Collections are few (the API's nouns): each thread keeps the ones it has seen, bounded.
    thread_local! {
        static SEEN: std::cell::RefCell<crate::intern::Interner> =
            Default::default();
    }
    SEEN.with(|s| s.borrow_mut().mapped(name, collection_name))
}

fn collection_name(name: &str) -> String {
    let l = name.to_ascii_lowercase();
    let l = l
        .strip_suffix("_id")
        .or_else(|| l.strip_suffix("id").filter(|s| !s.is_empty()))
        .unwrap_or(&l)
        .trim_end_matches(['_', '-']);
    l.strip_suffix('s').unwrap_or(l).to_string()
}

/// How a request's objects relate to the principal making it.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Ownership {
    /// No object named.
    None,
    /// Theirs.
    Own,
    /// Shared (read by many principals, or declared public), or of a public collection:
    /// many principals read its objects and none was ever anyone's (a catalogue).
    Public,
    /// Of a collection no object of which was ever seen owned by anyone (nobody's list,
    /// nobody's creation, not user records): most likely shared data not yet learned public.
    /// Walking it is scraping, not BOLA.
    Unclaimed,
    /// Nobody's yet, as far as was seen, in a collection whose objects do have owners.
    Unknown,
    /// Someone else's.
    Other,
}

impl Ownership {
    pub fn as_str(self) -> &'static str {
        match self {
            Ownership::None => "none",
            Ownership::Own => "own",
            Ownership::Public => "public",
            Ownership::Unclaimed => "unclaimed",
            Ownership::Unknown => "unknown",
            Ownership::Other => "other",
        }
    }

    pub fn from_name(s: &str) -> Option<Ownership> {
        [
            Ownership::None,
            Ownership::Own,
            Ownership::Public,
            Ownership::Unclaimed,
            Ownership::Unknown,
            Ownership::Other,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }
}
