//! Shared addresses: client addresses that many attested devices use at once.
//!
//! Mobile carriers put hundreds or thousands of phones behind one public address
//! (carrier-grade NAT), and companies put their staff behind one proxy. Such an address is
//! not an actor: counting its requests, usernames or failures names every phone behind it.
//! The engine learns, per address, the distinct attested devices seen within a window; an
//! address with at least `min_devices` of them is *shared* for a window after the last
//! time it had that many. Rules then key attested traffic by device and user and keep
//! address keys for unattested traffic, and alerts keyed by a shared address say so in
//! their evidence and never name the attested devices behind it.
//!
//! Input: (time, address, device, attested) per event, in packet-time order. Output: the
//! number of attested devices recently behind the address when it is shared, else 0.
//! Bounded: at most `max_addresses` addresses (the least recently seen tenth is evicted at
//! the cap, counted) and `MAX_DEVICES` device entries per address (the oldest replaced), so
//! a flood of spoofed addresses or invented device ids cannot grow it. Device ids are kept
//! as keyed hashes only.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::time::Duration;

use crate::capture::Timestamp;

/// Devices remembered per address: enough to tell a shared address and show how crowded
/// it is ("64 or more").
const MAX_DEVICES: usize = 64;

/// Shared-address learning (config section `[detect]`).
#[derive(Clone, Debug)]
pub struct SharedConfig {
    /// Distinct attested devices behind one address within `window` that make it shared
    /// (`shared_address_devices`).
    pub min_devices: u32,
    /// How far back devices count, and how long an address stays shared after it last had
    /// `min_devices` (`shared_address_window_secs`).
    pub window: Duration,
    /// Addresses tracked (`max_actors`).
    pub max_addresses: usize,
}

impl Default for SharedConfig {
    fn default() -> Self {
        SharedConfig {
            min_devices: 5,
            window: Duration::from_secs(600),
            max_addresses: 100_000,
        }
    }
}

/// Bytes one address costs, typically: its slot and a few devices.
pub const ADDRESS_BYTES: usize =
    std::mem::size_of::<(IpAddr, Address)>() + 1 + 4 * std::mem::size_of::<(u64, Timestamp)>();

#[derive(Default)]
struct Address {
    /// (keyed hash of the device id, last seen), at most `MAX_DEVICES`.
    devices: Vec<(u64, Timestamp)>,
    /// Shared until this time (packet time), if ever.
    shared_until: Option<Timestamp>,
    last: Timestamp,
}

/// Counters of the shared-address table.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SharedStats {
    /// Addresses with attested devices tracked now.
    pub addresses: usize,
    /// Of those, addresses shared now.
    pub shared: usize,
    /// Addresses that became shared (each time an address turns shared).
    pub learned: u64,
    /// Addresses evicted at the cap.
    pub evicted: u64,
}

/// Attested devices per client address.
pub struct SharedAddresses {
    cfg: SharedConfig,
    map: HashMap<IpAddr, Address, foldhash::fast::RandomState>,
    hasher: foldhash::fast::RandomState,
    learned: u64,
    evicted: u64,
}

impl SharedAddresses {
    pub fn new(cfg: SharedConfig) -> SharedAddresses {
        SharedAddresses {
            cfg,
            map: HashMap::default(),
            hasher: foldhash::fast::RandomState::default(),
            learned: 0,
            evicted: 0,
        }
    }

    /// Takes one request; returns the attested devices recently behind `ip` when the
    /// address is shared at `ts`, else 0.
    pub fn observe(
        &mut self,
        ts: Timestamp,
        ip: IpAddr,
        device: Option<&str>,
        attested: bool,
    ) -> u32 {
        let horizon = Timestamp(ts.0.saturating_sub(nanos(self.cfg.window)));
        if let (true, Some(d)) = (attested, device) {
            if self.map.len() >= self.cfg.max_addresses && !self.map.contains_key(&ip) {
                self.evict();
            }
            let h = self.hasher.hash_one(d);
            let a = self.map.entry(ip).or_default();
            a.last = a.last.max(ts);
            a.devices.retain(|(_, seen)| *seen >= horizon);
            let full = a.devices.len() >= MAX_DEVICES;
            match a.devices.iter_mut().find(|(x, _)| *x == h) {
                Some(e) => e.1 = e.1.max(ts),
                None if !full => a.devices.push((h, ts)),
                None => {
                    if let Some(oldest) = a.devices.iter_mut().min_by_key(|(_, seen)| *seen) {
                        *oldest = (h, ts);
                    }
                }
            }
            if a.devices.len() >= self.cfg.min_devices as usize {
                if a.shared_until.is_none_or(|u| u < ts) {
                    self.learned += 1;
                }
                a.shared_until = Some(ts.saturating_add(self.cfg.window));
            }
            // Its window was just pruned: what follows would find the same entry.
            return if a.shared_until.is_some_and(|u| ts <= u) {
                (a.devices.len() as u32).max(1)
            } else {
                0
            };
        }
        match self.map.get_mut(&ip) {
            Some(a) if a.shared_until.is_some_and(|u| ts <= u) => {
                a.devices.retain(|(_, seen)| *seen >= horizon);
                (a.devices.len() as u32).max(1)
            }
            _ => 0,
        }
    }

    /// Forgets addresses with nothing in the window that are no longer shared.
    pub fn sweep(&mut self, now: Timestamp) {
        let horizon = Timestamp(now.0.saturating_sub(nanos(self.cfg.window)));
        self.map
            .retain(|_, a| a.last >= horizon || a.shared_until.is_some_and(|u| u >= now));
    }

    fn evict(&mut self) {
        let ages = self.map.iter().map(|(ip, a)| (a.last, *ip)).collect();
        for ip in crate::actor::registry::oldest_tenth(ages) {
            if self.map.remove(&ip).is_some() {
                self.evicted += 1;
            }
        }
    }

    pub fn stats(&self, now: Timestamp) -> SharedStats {
        SharedStats {
            shared: self
                .map
                .values()
                .filter(|a| a.shared_until.is_some_and(|u| now <= u))
                .count(),
            ..self.counts()
        }
    }

    /// The counters without walking the addresses (`shared` is 0): for the memory report.
    pub fn counts(&self) -> SharedStats {
        SharedStats {
            addresses: self.map.len(),
            shared: 0,
            learned: self.learned,
            evicted: self.evicted,
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> Timestamp {
        Timestamp(secs * 1_000_000_000)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn many_attested_devices_make_an_address_shared() {
        let mut s = SharedAddresses::new(SharedConfig::default());
        let nat = ip("100.64.0.1");
        for i in 0..4 {
            assert_eq!(s.observe(t(i), nat, Some(&format!("d{i}")), true), 0);
        }
        assert_eq!(s.observe(t(5), nat, Some("d4"), true), 5);
        // Unattested traffic from the same address learns nothing but sees it shared.
        assert_eq!(s.observe(t(6), nat, None, false), 5);
        // A home address with two phones never is.
        let home = ip("192.0.2.7");
        for i in 0..50 {
            assert_eq!(
                s.observe(t(i), home, Some(["a", "b"][i as usize % 2]), true),
                0
            );
        }
        assert_eq!(s.stats(t(6)).shared, 1);
        assert_eq!(s.stats(t(6)).learned, 1);
        // The counts without the walk agree, but for `shared`.
        let (c, full) = (s.counts(), s.stats(t(6)));
        assert_eq!(
            (c.addresses, c.shared, c.learned, c.evicted),
            (full.addresses, 0, full.learned, full.evicted)
        );
    }

    #[test]
    fn unattested_device_claims_teach_nothing() {
        let mut s = SharedAddresses::new(SharedConfig::default());
        let a = ip("198.51.100.9");
        for i in 0..100 {
            assert_eq!(s.observe(t(i), a, Some(&format!("fake{i}")), false), 0);
        }
        assert_eq!(s.stats(t(100)).addresses, 0);
    }

    #[test]
    fn sharing_ends_a_window_after_the_crowd_leaves() {
        let mut s = SharedAddresses::new(SharedConfig::default());
        let nat = ip("100.64.0.2");
        for i in 0..5 {
            s.observe(t(i), nat, Some(&format!("d{i}")), true);
        }
        assert!(s.observe(t(500), nat, None, false) > 0);
        assert_eq!(s.observe(t(700), nat, None, false), 0);
        s.sweep(t(1300));
        assert_eq!(s.stats(t(1300)).addresses, 0);
    }

    #[test]
    fn bounded_under_a_flood_of_addresses_and_devices() {
        let cfg = SharedConfig {
            max_addresses: 1000,
            ..SharedConfig::default()
        };
        let mut s = SharedAddresses::new(cfg);
        for i in 0..20_000u32 {
            let a = IpAddr::from(i.to_be_bytes());
            s.observe(t(u64::from(i)), a, Some("d"), true);
        }
        assert!(s.stats(t(20_000)).addresses <= 1000);
        assert!(s.stats(t(20_000)).evicted >= 19_000);
        let one = ip("100.64.0.3");
        for i in 0..10_000u32 {
            s.observe(t(20_000), one, Some(&i.to_string()), true);
        }
        assert_eq!(s.observe(t(20_000), one, None, false), MAX_DEVICES as u32);
    }
}
