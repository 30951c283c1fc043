//! The actor registry: what each client address, device and user has done, the links
//! between them (one user on several devices, one device on several addresses), and a risk
//! score from the alerts they drew.
//!
//! Owned by the detect thread, which sees every worker's requests, so an actor's state is
//! keyed by actor, never by flow. Bounded: each kind holds at most `max_actors` profiles of
//! bounded size (links are capped lists), and at the cap the least recently seen tenth is
//! evicted and counted, so a flood of spoofed addresses or invented device ids ages out
//! only the quietest state. Times are packet times.

use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;

use crate::capture::Timestamp;
use crate::redact;
use crate::severity::{Category, Severity};

/// Links kept per profile and kind (addresses of a device, devices of a user...).
const MAX_LINKS: usize = 8;
/// Alert categories, in the order of [`Category`]'s declaration.
const CATEGORIES: usize = 9;

/// A bounded list of distinct linked values, with a count of those that did not fit.
#[derive(Clone, Debug)]
struct Links<T> {
    items: Vec<T>,
    more: u32,
}

impl<T> Default for Links<T> {
    fn default() -> Self {
        Links {
            items: Vec::new(),
            more: 0,
        }
    }
}

impl<T: PartialEq + Clone> Links<T> {
    /// Cloned only when listed: ids are shared strings another thread also counts.
    fn add(&mut self, v: &T) {
        if !self.items.contains(v) {
            if self.items.len() < MAX_LINKS {
                self.items.push(v.clone());
            } else {
                self.more = self.more.saturating_add(1);
            }
        }
    }
}

/// One actor's record.
#[derive(Clone, Debug, Default)]
struct Profile {
    first: Timestamp,
    last: Timestamp,
    requests: u64,
    /// Requests with a `valid` attestation.
    attested: u64,
    addresses: Links<IpAddr>,
    devices: Links<Arc<str>>,
    users: Links<Arc<str>>,
    risk: u64,
    alerts: [u32; CATEGORIES],
}

impl Profile {
    fn touch(&mut self, ts: Timestamp, attested: bool) {
        if self.requests == 0 {
            self.first = ts;
        }
        self.first = self.first.min(ts);
        self.last = self.last.max(ts);
        self.requests += 1;
        if attested {
            self.attested += 1;
        }
    }
}

/// Registry counters.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RegistryStats {
    pub addresses: usize,
    pub devices: usize,
    pub users: usize,
    /// Profiles evicted at the cap (least recently seen first).
    pub evicted: u64,
    /// Approximate memory the profiles hold.
    pub approx_bytes: usize,
}

/// One actor in the risk summary.
#[derive(Clone, Debug, Serialize)]
pub struct ActorRisk {
    /// `ip`, `device` or `user`.
    pub kind: &'static str,
    /// The address, device id, or user id (masked when it is personal data).
    pub id: String,
    pub risk: u64,
    /// Alerts drawn, by category.
    pub alerts: std::collections::BTreeMap<&'static str, u32>,
    pub requests: u64,
    /// Share of its requests with a `valid` attestation.
    pub attested_share: f64,
    pub addresses: Vec<String>,
    pub devices: Vec<String>,
    pub users: Vec<String>,
    pub first_seen: String,
    pub last_seen: String,
}

/// The risk summary: registry counters and the riskiest actors.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ActorSummary {
    #[serde(flatten)]
    pub stats: RegistryStats,
    pub top: Vec<ActorRisk>,
}

type Map<K> = hashbrown::HashMap<K, Profile, foldhash::fast::RandomState>;

/// Profiles of addresses, devices and users.
pub struct Registry {
    max: usize,
    ips: Map<IpAddr>,
    devices: Map<Arc<str>>,
    users: Map<Arc<str>>,
    evicted: u64,
}

fn weight(s: Severity) -> u64 {
    match s {
        Severity::Info => 0,
        Severity::Low => 1,
        Severity::Medium => 3,
        Severity::High => 7,
        Severity::Critical => 15,
    }
}

fn category_index(c: Category) -> usize {
    c as usize
}

const CATEGORY_LIST: [Category; CATEGORIES] = [
    Category::Bot,
    Category::Scraping,
    Category::TokenForgery,
    Category::TokenReplay,
    Category::TokenBinding,
    Category::CredentialStuffing,
    Category::Bola,
    Category::DataExposure,
    Category::ProtocolAnomaly,
];

/// Makes room in a map at its cap: the least recently seen tenth goes.
fn make_room<K: Clone + Ord + std::hash::Hash + Eq>(m: &mut Map<K>, max: usize) -> u64 {
    if m.len() < max {
        return 0;
    }
    let victims = oldest_tenth(m.iter().map(|(k, p)| (p.last, k.clone())).collect());
    for k in &victims {
        m.remove(k);
    }
    victims.len() as u64
}

/// The profile of `k`: found with one probe, or made (room first, at the cap) with a
/// clone of the key. Ids are shared strings a worker also counts: cloning them for every
/// request only to drop the copy moved their counts between cores.
fn profile<'m, K: Clone + Ord + std::hash::Hash + Eq>(
    m: &'m mut Map<K>,
    k: &K,
    max: usize,
    evicted: &mut u64,
) -> &'m mut Profile {
    if m.len() >= max && !m.contains_key(k) {
        *evicted += make_room(m, max);
    }
    match m.entry_ref(k) {
        hashbrown::hash_map::EntryRef::Occupied(o) => o.into_mut(),
        hashbrown::hash_map::EntryRef::Vacant(v) => {
            v.insert_with_key(k.clone(), Profile::default())
        }
    }
}

/// The least recently seen tenth (at least one) of `(last seen, key)` pairs, oldest first:
/// what every bounded map of traffic-made keys evicts at its cap (actor profiles, detector
/// keys, the ownership map). Linear time; ties are broken by key, so the choice does not
/// depend on hash order.
pub(crate) fn oldest_tenth<K: Ord>(mut ages: Vec<(Timestamp, K)>) -> Vec<K> {
    if ages.is_empty() {
        return Vec::new();
    }
    let n = (ages.len() / 10).max(1);
    ages.select_nth_unstable(n - 1);
    ages.truncate(n);
    ages.sort();
    ages.into_iter().map(|(_, k)| k).collect()
}

impl Registry {
    /// Bytes one profile costs, typically: its table slot, links half full, and the id
    /// string (devices and users).
    pub const PROFILE_BYTES: usize = std::mem::size_of::<(Arc<str>, Profile)>()
        + 1
        + MAX_LINKS / 2 * (std::mem::size_of::<IpAddr>() + 2 * std::mem::size_of::<Arc<str>>())
        + 48;

    pub fn new(max_actors: usize) -> Registry {
        Registry {
            max: max_actors.max(1),
            ips: Map::default(),
            devices: Map::default(),
            users: Map::default(),
            evicted: 0,
        }
    }

    /// Records one request.
    pub fn observe(
        &mut self,
        ts: Timestamp,
        ip: IpAddr,
        device: Option<&Arc<str>>,
        user: Option<&Arc<str>>,
        attested: bool,
    ) {
        let (max, evicted) = (self.max, &mut self.evicted);
        let p = profile(&mut self.ips, &ip, max, evicted);
        p.touch(ts, attested);
        if let Some(d) = device {
            p.devices.add(d);
        }
        if let Some(u) = user {
            p.users.add(u);
        }
        if let Some(d) = device {
            let p = profile(&mut self.devices, d, max, evicted);
            p.touch(ts, attested);
            p.addresses.add(&ip);
            if let Some(u) = user {
                p.users.add(u);
            }
        }
        if let Some(u) = user {
            let p = profile(&mut self.users, u, max, evicted);
            p.touch(ts, attested);
            p.addresses.add(&ip);
            if let Some(d) = device {
                p.devices.add(d);
            }
        }
    }

    /// Adds an alert's weight to the actors it names.
    pub fn note_alert(
        &mut self,
        ip: Option<IpAddr>,
        device: Option<&Arc<str>>,
        user: Option<&Arc<str>>,
        category: Category,
        severity: Severity,
    ) {
        let bump = |p: Option<&mut Profile>| {
            if let Some(p) = p {
                p.risk += weight(severity);
                if let Some(c) = p.alerts.get_mut(category_index(category)) {
                    *c = c.saturating_add(1);
                }
            }
        };
        if let Some(ip) = ip {
            bump(self.ips.get_mut(&ip));
        }
        if let Some(d) = device {
            bump(self.devices.get_mut(d));
        }
        if let Some(u) = user {
            bump(self.users.get_mut(u));
        }
    }

    /// The counters without walking the profiles (`approx_bytes` is 0): for what runs
    /// several times a second (metrics, the memory report), where a walk over a full
    /// registry's 100,000 actors per table would cost a cache miss per profile.
    pub fn counts(&self) -> RegistryStats {
        RegistryStats {
            addresses: self.ips.len(),
            devices: self.devices.len(),
            users: self.users.len(),
            evicted: self.evicted,
            approx_bytes: 0,
        }
    }

    /// [`Registry::counts`] and the memory the profiles hold (a walk over them all).
    pub fn stats(&self) -> RegistryStats {
        let links = |p: &Profile| {
            p.addresses.items.len() * std::mem::size_of::<IpAddr>()
                + (p.devices.items.len() + p.users.items.len()) * std::mem::size_of::<Arc<str>>()
        };
        let entry = std::mem::size_of::<Profile>() + 16;
        let bytes = self
            .ips
            .values()
            .map(|p| entry + links(p))
            .chain(
                self.devices
                    .iter()
                    .chain(self.users.iter())
                    .map(|(k, p)| entry + k.len() + links(p)),
            )
            .sum();
        RegistryStats {
            approx_bytes: bytes,
            ..self.counts()
        }
    }

    /// The `n` riskiest actors (risk, then requests, then id: a fixed order).
    pub fn summary(&self, n: usize) -> ActorSummary {
        let mut all: Vec<ActorRisk> = Vec::new();
        let view = |kind: &'static str, id: String, p: &Profile| ActorRisk {
            kind,
            id,
            risk: p.risk,
            alerts: CATEGORY_LIST
                .iter()
                .zip(p.alerts.iter())
                .filter(|(_, n)| **n > 0)
                .map(|(c, n)| (c.as_str(), *n))
                .collect(),
            requests: p.requests,
            attested_share: if p.requests == 0 {
                0.0
            } else {
                (p.attested as f64 / p.requests as f64 * 1000.0).round() / 1000.0
            },
            addresses: p.addresses.items.iter().map(ToString::to_string).collect(),
            devices: p.devices.items.iter().map(|d| d.to_string()).collect(),
            users: p
                .users
                .items
                .iter()
                .map(|u| redact::identifier(u))
                .collect(),
            first_seen: p.first.rfc3339(),
            last_seen: p.last.rfc3339(),
        };
        all.extend(
            self.ips
                .iter()
                .filter(|(_, p)| p.risk > 0)
                .map(|(k, p)| view("ip", k.to_string(), p)),
        );
        all.extend(
            self.devices
                .iter()
                .filter(|(_, p)| p.risk > 0)
                .map(|(k, p)| view("device", k.to_string(), p)),
        );
        all.extend(
            self.users
                .iter()
                .filter(|(_, p)| p.risk > 0)
                .map(|(k, p)| view("user", redact::identifier(k), p)),
        );
        all.sort_by(|a, b| {
            b.risk
                .cmp(&a.risk)
                .then(b.requests.cmp(&a.requests))
                .then(a.kind.cmp(b.kind))
                .then(a.id.cmp(&b.id))
        });
        all.truncate(n);
        ActorSummary {
            stats: self.stats(),
            top: all,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> Timestamp {
        Timestamp(s * 1_000_000_000)
    }

    #[test]
    fn links_and_risk_are_kept_per_actor() {
        let mut r = Registry::new(100);
        let d: Arc<str> = "dev-1".into();
        let u: Arc<str> = "alice@example.com".into();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        r.observe(t(1), a, Some(&d), Some(&u), true);
        r.observe(t(2), b, Some(&d), Some(&u), false);
        r.note_alert(Some(b), None, Some(&u), Category::Bot, Severity::High);
        let s = r.summary(10);
        assert_eq!(s.stats.addresses, 2);
        assert_eq!(s.top.len(), 2);
        let user = s.top.iter().find(|x| x.kind == "user").unwrap();
        assert_eq!(user.id, "a***@example.com");
        assert_eq!(user.risk, 7);
        assert_eq!(user.devices, vec!["dev-1"]);
        assert_eq!(user.addresses, vec!["10.0.0.1", "10.0.0.2"]);
        assert_eq!(user.attested_share, 0.5);
        assert_eq!(user.alerts.get("bot"), Some(&1));
    }

    #[test]
    fn a_spoofed_flood_stays_within_the_cap() {
        let mut r = Registry::new(1000);
        for i in 0..50_000u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            let dev: Arc<str> = format!("forged-device-{i}").into();
            r.observe(t(u64::from(i)), ip, Some(&dev), None, false);
        }
        let s = r.stats();
        let c = r.counts();
        assert_eq!(
            (c.addresses, c.devices, c.users, c.evicted, c.approx_bytes),
            (s.addresses, s.devices, s.users, s.evicted, 0)
        );
        assert!(s.addresses <= 1000 && s.devices <= 1000, "{s:?}");
        assert!(s.evicted >= 2 * (50_000 - 1000), "{s:?}");
        assert!(s.approx_bytes < 2000 * 512, "{s:?}");
        // The newest actors are the ones kept.
        assert!(r.ips.contains_key(&IpAddr::from(49_999u32.to_be_bytes())));
    }
}
