//! The decision store: time-limited bans on a key, bounded, persisted, and followed by
//! bouncers.
//!
//! A decision bans one value of one scope (an address, an address range, a device id, an
//! attestation token by hash, a user id) until a Unix time. The store keeps one active
//! decision per value: a new decision on a value already banned replaces it when it lasts
//! longer, and is dropped otherwise. Every change gets a sequence number, so a bouncer
//! pulling the CrowdSec-style stream gets what was added and removed since its last pull.
//! A removal is only reported while no other decision covers the value (a replaced decision
//! is never reported as deleted: the bouncer would lift a ban that still holds).
//!
//! Bounded: at `max` active decisions the one that expires soonest makes room (counted);
//! the log of removals keeps as many entries. Lookups on the check path take a read lock
//! and allocate nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::token::Cidr;

/// What a decision bans.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// One client address.
    Ip,
    /// An address block (`203.0.113.0/24`).
    Range,
    /// An attested device id (the token's `did`).
    Device,
    /// An attestation token, by its 12-hex-digit hash.
    Token,
    /// A user id (the identity token's subject).
    User,
}

impl Scope {
    pub const ALL: [Scope; 5] = [
        Scope::Ip,
        Scope::Range,
        Scope::Device,
        Scope::Token,
        Scope::User,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ip => "ip",
            Scope::Range => "range",
            Scope::Device => "device",
            Scope::Token => "token",
            Scope::User => "user",
        }
    }

    /// The scope's name in the CrowdSec API (`Ip`, `Range`; the others are shieldtap's).
    pub fn crowdsec(self) -> &'static str {
        match self {
            Scope::Ip => "Ip",
            Scope::Range => "Range",
            Scope::Device => "Device",
            Scope::Token => "Token",
            Scope::User => "User",
        }
    }

    pub fn from_name(s: &str) -> Option<Scope> {
        Scope::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s))
    }
}

/// One decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub id: u64,
    pub scope: Scope,
    /// The address, block, device id, token hash or user id, in canonical form.
    pub value: String,
    /// Who made it: `shieldtap` (from an alert), `manual` (an operator), or the remote
    /// daemon's origin for a follower.
    pub origin: String,
    /// The rule that fired, or `manual`.
    pub scenario: String,
    /// Why, in a sentence (the alert's summary: redacted like every alert).
    pub reason: String,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds; the decision ends there.
    pub until: u64,
}

/// A decision as written to logs and `--decisions-out`: a user id is masked when it is
/// personal data (an e-mail address, a phone number), like in alerts.
pub struct Shown<'a>(pub &'a Decision);

impl Serialize for Shown<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let d = self.0;
        let mut st = s.serialize_struct("Decision", 8)?;
        st.serialize_field("id", &d.id)?;
        st.serialize_field("scope", &d.scope)?;
        let value = match d.scope {
            Scope::User => crate::redact::identifier(&d.value),
            _ => d.value.clone(),
        };
        st.serialize_field("value", &value)?;
        st.serialize_field("origin", &d.origin)?;
        st.serialize_field("scenario", &d.scenario)?;
        st.serialize_field("reason", &d.reason)?;
        st.serialize_field("created", &rfc3339(d.created))?;
        st.serialize_field("until", &rfc3339(d.until))?;
        st.end()
    }
}

/// RFC 3339 UTC of Unix seconds.
pub fn rfc3339(secs: u64) -> String {
    crate::capture::Timestamp(secs.saturating_mul(1_000_000_000)).rfc3339()
}

/// Why a value cannot be banned, or a decision not found.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecisionError {
    #[error("`{0}` is not a valid {1} value")]
    BadValue(String, &'static str),
    #[error("{0} is on the allow-list and is never banned")]
    AllowListed(String),
    #[error("the decision ends in the past")]
    Expired,
    #[error("no decision {0}")]
    NotFound(u64),
}

/// Checks and canonicalises a value for a scope.
pub fn canonical(scope: Scope, value: &str) -> Result<String, DecisionError> {
    let v = value.trim();
    let bad = || DecisionError::BadValue(value.chars().take(64).collect(), scope.as_str());
    match scope {
        Scope::Ip => v
            .parse::<IpAddr>()
            .map(|ip| ip.to_string())
            .map_err(|_| bad()),
        Scope::Range => {
            if !v.contains('/') {
                return Err(bad());
            }
            v.parse::<Cidr>().map(|c| c.to_string()).map_err(|_| bad())
        }
        Scope::Token => {
            if v.len() == 12 && v.bytes().all(|b| b.is_ascii_hexdigit()) {
                Ok(v.to_ascii_lowercase())
            } else {
                Err(bad())
            }
        }
        Scope::Device | Scope::User => {
            if v.is_empty() || v.len() > 256 || v.chars().any(char::is_control) {
                Err(bad())
            } else {
                Ok(v.to_string())
            }
        }
    }
}

/// Counters, read by metrics and the summary.
#[derive(Debug, Default)]
pub struct StoreCounters {
    /// Per scope (in [`Scope::ALL`] order) and origin kind: from alerts, by hand, followed.
    pub added: [[AtomicU64; 3]; 5],
    pub expired: [AtomicU64; 5],
    pub deleted: [AtomicU64; 5],
    /// Made room for a newer decision at the cap.
    pub evicted: AtomicU64,
    /// A decision on a value already banned for longer (dropped) or for less (replaced).
    pub extended: AtomicU64,
    pub persist_failures: AtomicU64,
}

/// Origin kinds counted apart.
pub const ORIGIN_KINDS: [&str; 3] = ["alert", "manual", "followed"];

fn origin_kind(origin: &str) -> usize {
    match origin {
        "shieldtap" => 0,
        "manual" => 1,
        _ => 2,
    }
}

fn scope_index(s: Scope) -> usize {
    Scope::ALL.iter().position(|k| *k == s).unwrap_or(0)
}

#[derive(Default)]
struct Inner {
    active: BTreeMap<u64, Decision>,
    /// id → the sequence number of its addition.
    added_at: HashMap<u64, u64>,
    ips: HashMap<IpAddr, u64>,
    ranges: Vec<(Cidr, u64)>,
    /// Device, token and user values.
    names: [HashMap<String, u64>; 3],
    /// (until, id): what expires next.
    expiry: BTreeSet<(u64, u64)>,
    /// (sequence, decision) of removals, oldest first.
    removed: VecDeque<(u64, Decision)>,
    seq: u64,
    next_id: u64,
    /// Bouncer → the sequence number it has seen.
    cursors: HashMap<String, u64>,
}

fn name_slot(scope: Scope) -> Option<usize> {
    match scope {
        Scope::Device => Some(0),
        Scope::Token => Some(1),
        Scope::User => Some(2),
        _ => None,
    }
}

impl Inner {
    fn current(&self, scope: Scope, value: &str) -> Option<u64> {
        match scope {
            Scope::Ip => value.parse().ok().and_then(|ip| self.ips.get(&ip).copied()),
            Scope::Range => self
                .ranges
                .iter()
                .find(|(c, _)| c.to_string() == value)
                .map(|(_, id)| *id),
            _ => name_slot(scope).and_then(|i| self.names[i].get(value).copied()),
        }
    }

    fn index(&mut self, d: &Decision) {
        match d.scope {
            Scope::Ip => {
                if let Ok(ip) = d.value.parse() {
                    self.ips.insert(ip, d.id);
                }
            }
            Scope::Range => {
                if let Ok(c) = d.value.parse() {
                    self.ranges.push((c, d.id));
                }
            }
            s => {
                if let Some(i) = name_slot(s) {
                    self.names[i].insert(d.value.clone(), d.id);
                }
            }
        }
        self.expiry.insert((d.until, d.id));
    }

    /// Takes a decision out of the active set (not logged).
    fn unindex(&mut self, id: u64) -> Option<Decision> {
        let d = self.active.remove(&id)?;
        self.added_at.remove(&id);
        self.expiry.remove(&(d.until, d.id));
        match d.scope {
            Scope::Ip => {
                if let Ok(ip) = d.value.parse::<IpAddr>()
                    && self.ips.get(&ip) == Some(&id)
                {
                    self.ips.remove(&ip);
                }
            }
            Scope::Range => self.ranges.retain(|(_, i)| *i != id),
            s => {
                if let Some(i) = name_slot(s)
                    && self.names[i].get(&d.value) == Some(&id)
                {
                    self.names[i].remove(&d.value);
                }
            }
        }
        Some(d)
    }

    fn log_removal(&mut self, d: Decision, cap: usize) {
        self.seq += 1;
        self.removed.push_back((self.seq, d));
        while self.removed.len() > cap {
            self.removed.pop_front();
        }
    }
}

/// Active decisions, bounded and optionally persisted.
pub struct Store {
    inner: RwLock<Inner>,
    max: usize,
    path: Option<PathBuf>,
    dirty: AtomicBool,
    pub counters: StoreCounters,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("max", &self.max)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// A decision to add.
pub struct Ban<'a> {
    pub scope: Scope,
    /// Canonical ([`canonical`]).
    pub value: String,
    pub origin: &'a str,
    pub scenario: &'a str,
    pub reason: &'a str,
    /// Unix seconds.
    pub now: u64,
    pub until: u64,
}

/// A lookup's hit: the decision that applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit {
    pub id: u64,
    pub scope: Scope,
}

/// What a bouncer is told.
#[derive(Debug, Default, PartialEq)]
pub struct StreamDelta {
    pub new: Vec<Decision>,
    pub deleted: Vec<Decision>,
}

/// The persisted form.
#[derive(Serialize, Deserialize)]
struct Saved {
    version: u32,
    next_id: u64,
    decisions: Vec<Decision>,
}

const SAVED_VERSION: u32 = 1;

impl Store {
    /// An empty store of at most `max` decisions, saved to `path` when given.
    pub fn new(max: usize, path: Option<PathBuf>) -> Store {
        Store {
            inner: RwLock::new(Inner {
                next_id: 1,
                ..Inner::default()
            }),
            max: max.max(1),
            path,
            dirty: AtomicBool::new(false),
            counters: StoreCounters::default(),
        }
    }

    /// Opens the store: loads `path` when it exists, keeping the decisions still active at
    /// `now`. A file that cannot be read or parsed is an error (nothing is overwritten).
    pub fn open(max: usize, path: Option<PathBuf>, now: u64) -> Result<Store, String> {
        let store = Store::new(max, path.clone());
        let Some(p) = path else { return Ok(store) };
        let text = match std::fs::read(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(store),
            Err(e) => return Err(format!("{}: cannot read: {e}", p.display())),
        };
        let saved: Saved = serde_json::from_slice(&text)
            .map_err(|e| format!("{}: not a decisions file: {e}", p.display()))?;
        if saved.version != SAVED_VERSION {
            return Err(format!(
                "{}: decisions file version {} (expected {SAVED_VERSION})",
                p.display(),
                saved.version
            ));
        }
        {
            let mut g = store.write();
            g.next_id = saved.next_id.max(1);
            for d in saved.decisions {
                if d.until <= now || canonical(d.scope, &d.value).ok().as_ref() != Some(&d.value) {
                    continue;
                }
                g.next_id = g.next_id.max(d.id + 1);
                if g.current(d.scope, &d.value).is_some() {
                    continue;
                }
                g.seq += 1;
                let seq = g.seq;
                g.added_at.insert(d.id, seq);
                g.index(&d);
                g.active.insert(d.id, d);
            }
            while g.active.len() > store.max {
                let Some(&(_, id)) = g.expiry.iter().next() else {
                    break;
                };
                g.unindex(id);
            }
        }
        Ok(store)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a decision on `value` (canonical) until `until`. On a value already banned, the
    /// longer ban holds: a longer new one replaces the old (new id, so bouncers see the new
    /// duration), a shorter one is dropped. `None` when dropped.
    pub fn add(&self, ban: Ban<'_>) -> Option<Decision> {
        let Ban {
            scope,
            value,
            origin,
            scenario,
            reason,
            now,
            until,
        } = ban;
        if until <= now {
            return None;
        }
        let mut g = self.write();
        if let Some(old) = g.current(scope, &value) {
            let old_until = g.active.get(&old).map(|d| d.until).unwrap_or(0);
            self.counters.extended.fetch_add(1, Ordering::Relaxed);
            if old_until >= until {
                return None;
            }
            // Replaced, not removed: the value stays banned, so no bouncer is told to lift it.
            g.unindex(old);
        }
        while g.active.len() >= self.max {
            let Some(&(_, id)) = g.expiry.iter().next() else {
                break;
            };
            if let Some(d) = g.unindex(id) {
                self.counters.evicted.fetch_add(1, Ordering::Relaxed);
                g.log_removal(d, self.max);
            }
        }
        let d = Decision {
            id: g.next_id,
            scope,
            value,
            origin: origin.to_string(),
            scenario: scenario.to_string(),
            reason: reason.chars().take(512).collect(),
            created: now,
            until,
        };
        g.next_id += 1;
        g.seq += 1;
        let seq = g.seq;
        g.added_at.insert(d.id, seq);
        g.index(&d);
        g.active.insert(d.id, d.clone());
        self.counters.added[scope_index(scope)][origin_kind(origin)]
            .fetch_add(1, Ordering::Relaxed);
        self.dirty.store(true, Ordering::Relaxed);
        Some(d)
    }

    /// Removes decision `id` (by hand).
    pub fn delete(&self, id: u64) -> Result<Decision, DecisionError> {
        let mut g = self.write();
        let d = g.unindex(id).ok_or(DecisionError::NotFound(id))?;
        self.counters.deleted[scope_index(d.scope)].fetch_add(1, Ordering::Relaxed);
        g.log_removal(d.clone(), self.max);
        self.dirty.store(true, Ordering::Relaxed);
        Ok(d)
    }

    /// Removes the decision on `value`, if any.
    pub fn delete_value(&self, scope: Scope, value: &str) -> Result<Decision, DecisionError> {
        let id = self
            .read()
            .current(scope, value)
            .ok_or(DecisionError::NotFound(0))?;
        self.delete(id)
    }

    /// Ends every decision whose time has come. Returns how many ended.
    pub fn expire(&self, now: u64) -> usize {
        if self
            .read()
            .expiry
            .iter()
            .next()
            .is_none_or(|(until, _)| *until > now)
        {
            return 0;
        }
        let mut g = self.write();
        let mut n = 0;
        while let Some(&(until, id)) = g.expiry.iter().next() {
            if until > now {
                break;
            }
            if let Some(d) = g.unindex(id) {
                self.counters.expired[scope_index(d.scope)].fetch_add(1, Ordering::Relaxed);
                g.log_removal(d, self.max);
                n += 1;
            }
        }
        if n > 0 {
            self.dirty.store(true, Ordering::Relaxed);
        }
        n
    }

    /// The decision that applies to a request from `ip` carrying `device`, `token` (hash)
    /// and `user`, at `now`. Device first, then token, user, address and ranges.
    pub fn find(
        &self,
        ip: Option<IpAddr>,
        device: Option<&str>,
        token: Option<&str>,
        user: Option<&str>,
        now: u64,
    ) -> Option<Hit> {
        let g = self.read();
        if g.active.is_empty() {
            return None;
        }
        let live = |id: &u64| g.active.get(id).is_some_and(|d| d.until > now);
        let named = [
            (Scope::Device, device),
            (Scope::Token, token),
            (Scope::User, user),
        ];
        for (i, (scope, v)) in named.into_iter().enumerate() {
            if let Some(v) = v
                && let Some(id) = g.names[i].get(v)
                && live(id)
            {
                return Some(Hit { id: *id, scope });
            }
        }
        let ip = ip?;
        if let Some(id) = g.ips.get(&ip)
            && live(id)
        {
            return Some(Hit {
                id: *id,
                scope: Scope::Ip,
            });
        }
        g.ranges
            .iter()
            .find(|(c, id)| c.contains(ip) && live(id))
            .map(|(_, id)| Hit {
                id: *id,
                scope: Scope::Range,
            })
    }

    pub fn get(&self, id: u64) -> Option<Decision> {
        self.read().active.get(&id).cloned()
    }

    /// Every active decision, oldest first.
    pub fn list(&self) -> Vec<Decision> {
        self.read().active.values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.read().active.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Active decisions per scope.
    pub fn active_by_scope(&self) -> [u64; 5] {
        let mut out = [0; 5];
        for d in self.read().active.values() {
            out[scope_index(d.scope)] += 1;
        }
        out
    }

    /// What `bouncer` has not seen yet, among `scopes`. `startup` (or a bouncer never seen)
    /// gets every active decision and no deletions. Moves the bouncer's cursor.
    pub fn stream(&self, bouncer: &str, startup: bool, scopes: &[Scope]) -> StreamDelta {
        let mut g = self.write();
        let seen = if startup {
            None
        } else {
            g.cursors.get(bouncer).copied()
        };
        let wanted = |d: &Decision| scopes.contains(&d.scope);
        let mut out = StreamDelta::default();
        match seen {
            None => {
                out.new = g.active.values().filter(|d| wanted(d)).cloned().collect();
            }
            Some(seen) => {
                out.new = g
                    .active
                    .values()
                    .filter(|d| wanted(d) && g.added_at.get(&d.id).is_some_and(|s| *s > seen))
                    .cloned()
                    .collect();
                out.deleted = g
                    .removed
                    .iter()
                    .filter(|(s, d)| {
                        *s > seen && wanted(d) && g.current(d.scope, &d.value).is_none()
                    })
                    .map(|(_, d)| d.clone())
                    .collect();
            }
        }
        let seq = g.seq;
        // Bounded: bouncers are configured, but a key's name is its cursor's only key.
        if g.cursors.len() < 1024 || g.cursors.contains_key(bouncer) {
            g.cursors.insert(bouncer.to_string(), seq);
        }
        out
    }

    /// Writes the active decisions to the store's file if anything changed since the last
    /// save (a temporary file renamed over it: a crash leaves the old or the new one).
    pub fn save_if_dirty(&self) -> std::io::Result<bool> {
        let Some(path) = &self.path else {
            return Ok(false);
        };
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return Ok(false);
        }
        let saved = {
            let g = self.read();
            Saved {
                version: SAVED_VERSION,
                next_id: g.next_id,
                decisions: g.active.values().cloned().collect(),
            }
        };
        let r = write_atomically(path, &saved);
        if r.is_err() {
            self.dirty.store(true, Ordering::Relaxed);
            self.counters
                .persist_failures
                .fetch_add(1, Ordering::Relaxed);
        }
        r.map(|()| true)
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
}

fn write_atomically(path: &Path, saved: &Saved) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(d) = dir {
        std::fs::create_dir_all(d)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let body = serde_json::to_vec_pretty(saved).map_err(std::io::Error::other)?;
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// A Go duration (`3h59m58s`), as CrowdSec bouncers parse it.
pub fn go_duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(s: &Store, scope: Scope, v: &str, now: u64, until: u64) -> Option<Decision> {
        s.add(Ban {
            scope,
            value: canonical(scope, v).unwrap(),
            origin: "shieldtap",
            scenario: "r",
            reason: "why",
            now,
            until,
        })
    }

    #[test]
    fn values_are_checked_and_canonical() {
        assert_eq!(
            canonical(Scope::Ip, " 2001:DB8::1 ").unwrap(),
            "2001:db8::1"
        );
        assert!(canonical(Scope::Ip, "300.1.1.1").is_err());
        assert_eq!(canonical(Scope::Range, "10.0.0.0/8").unwrap(), "10.0.0.0/8");
        assert!(canonical(Scope::Range, "10.0.0.1").is_err());
        assert!(canonical(Scope::Range, "10.0.0.0/33").is_err());
        assert_eq!(
            canonical(Scope::Token, "ABCDEF012345").unwrap(),
            "abcdef012345"
        );
        assert!(canonical(Scope::Token, "abc").is_err());
        assert!(canonical(Scope::Device, "").is_err());
        assert!(canonical(Scope::User, "a\nb").is_err());
    }

    #[test]
    fn lookups_find_each_scope_until_expiry() {
        let s = Store::new(100, None);
        add(&s, Scope::Device, "dev-1", 100, 200).unwrap();
        add(&s, Scope::Token, "0123456789ab", 100, 200).unwrap();
        add(&s, Scope::User, "mallory", 100, 200).unwrap();
        add(&s, Scope::Ip, "198.51.100.7", 100, 200).unwrap();
        add(&s, Scope::Range, "203.0.113.0/24", 100, 300).unwrap();
        let ip = |t: &str| Some(t.parse().unwrap());
        let f = |ip, d, t, u, now| s.find(ip, d, t, u, now).map(|h| h.scope);
        assert_eq!(f(None, Some("dev-1"), None, None, 150), Some(Scope::Device));
        assert_eq!(f(None, Some("dev-2"), None, None, 150), None);
        assert_eq!(
            f(None, None, Some("0123456789ab"), None, 150),
            Some(Scope::Token)
        );
        assert_eq!(f(None, None, None, Some("mallory"), 150), Some(Scope::User));
        assert_eq!(
            f(ip("198.51.100.7"), None, None, None, 150),
            Some(Scope::Ip)
        );
        assert_eq!(f(ip("198.51.100.8"), None, None, None, 150), None);
        assert_eq!(
            f(ip("203.0.113.99"), None, None, None, 150),
            Some(Scope::Range)
        );
        // Past `until` a decision no longer applies, even before `expire` ran.
        assert_eq!(f(None, Some("dev-1"), None, None, 200), None);
        assert_eq!(s.expire(250), 4);
        assert_eq!(s.len(), 1);
        assert_eq!(
            f(ip("203.0.113.99"), None, None, None, 250),
            Some(Scope::Range)
        );
    }

    #[test]
    fn the_longer_ban_holds_and_the_store_is_bounded() {
        let s = Store::new(3, None);
        let first = add(&s, Scope::Ip, "192.0.2.1", 0, 100).unwrap();
        assert!(add(&s, Scope::Ip, "192.0.2.1", 10, 50).is_none());
        let longer = add(&s, Scope::Ip, "192.0.2.1", 10, 500).unwrap();
        assert_ne!(first.id, longer.id);
        assert_eq!(s.len(), 1);
        add(&s, Scope::Ip, "192.0.2.2", 10, 200).unwrap();
        add(&s, Scope::Ip, "192.0.2.3", 10, 300).unwrap();
        // Full: the one expiring soonest (192.0.2.2) makes room.
        add(&s, Scope::Ip, "192.0.2.4", 10, 400).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s.counters.evicted.load(Ordering::Relaxed), 1);
        assert!(
            s.find(Some("192.0.2.2".parse().unwrap()), None, None, None, 20)
                .is_none()
        );
        assert!(
            s.find(Some("192.0.2.4".parse().unwrap()), None, None, None, 20)
                .is_some()
        );
    }

    #[test]
    fn bouncers_get_what_changed_since_their_last_pull() {
        let s = Store::new(100, None);
        let a = add(&s, Scope::Ip, "192.0.2.1", 0, 100).unwrap();
        add(&s, Scope::Device, "dev", 0, 100).unwrap();
        let ips = [Scope::Ip, Scope::Range];
        let start = s.stream("fw", true, &ips);
        assert_eq!(start.new, vec![a.clone()]);
        assert!(start.deleted.is_empty());
        assert_eq!(s.stream("fw", false, &ips), StreamDelta::default());
        let b = add(&s, Scope::Range, "198.51.100.0/24", 10, 100).unwrap();
        // Replacing a ban with a longer one is news, never a deletion.
        let a2 = add(&s, Scope::Ip, "192.0.2.1", 10, 900).unwrap();
        let d = s.stream("fw", false, &ips);
        assert_eq!(d.new, vec![b.clone(), a2]);
        assert!(d.deleted.is_empty());
        s.delete(b.id).unwrap();
        s.expire(1000);
        let d = s.stream("fw", false, &ips);
        assert!(d.new.is_empty());
        assert_eq!(d.deleted.len(), 2);
        // Another bouncer never seen gets the start state.
        assert!(s.stream("other", false, &ips).new.is_empty());
    }

    #[test]
    fn decisions_survive_a_restart_and_expired_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/decisions.json");
        let s = Store::new(10, Some(path.clone()));
        add(&s, Scope::Device, "dev-9", 100, 1_000).unwrap();
        add(&s, Scope::Ip, "192.0.2.9", 100, 150).unwrap();
        assert!(s.save_if_dirty().unwrap());
        assert!(!s.save_if_dirty().unwrap());
        let back = Store::open(10, Some(path.clone()), 200).unwrap();
        assert_eq!(back.len(), 1);
        assert!(back.find(None, Some("dev-9"), None, None, 200).is_some());
        let next = add(&back, Scope::User, "u", 200, 300).unwrap();
        assert!(next.id > 2, "ids are not reused after a restart");
        std::fs::write(&path, b"{not json").unwrap();
        assert!(
            Store::open(10, Some(path), 200)
                .unwrap_err()
                .contains("not a decisions file")
        );
    }

    #[test]
    fn go_durations_parse_back() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(59), "59s");
        assert_eq!(go_duration(61), "1m1s");
        assert_eq!(go_duration(4 * 3600), "4h0m0s");
    }
}
