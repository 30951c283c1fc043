//! TLS client fingerprints (JA4) correlated with attestation.
//!
//! A valid attestation token proves the genuine app made it, not that the genuine app
//! sends it: a lifted token replayed by a script arrives over the script's TLS stack. Per
//! attestation family (the app) this learns the JA4 fingerprints its valid tokens arrive
//! with: a fingerprint seen with valid tokens of `learn_devices` distinct devices is the
//! app's (a new app release, arriving on many devices, is learned, not flagged). Per device,
//! it remembers the address and time its tokens last came with one of the app's
//! fingerprints. Each event is then marked:
//!
//! - `app`: its fingerprint is one the app's valid tokens use;
//! - `scripting`: a known scripting-library fingerprint (`[tls] scripting_ja4`);
//! - `foreign`: a valid token whose device was seen with an app fingerprint from another
//!   address within `device_window_secs`, now with a fingerprint that is not the app's:
//!   a lifted token used alongside the real device;
//! - `unknown`: a fingerprint that is not (yet) the app's.
//!
//! Handshakes seen on the mirror reach the engine as hellos keyed by the client's address
//! and port; a transaction behind a TLS-terminating edge that names its viewer
//! (`CloudFront-Viewer-Address: ip:port`) takes the fingerprint of that handshake.
//! Everything is bounded: prints per app, devices, pending hellos.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::capture::Timestamp;
use crate::token::Verdict;

/// Marks on an event (bit set), as the rules' `fingerprint:` matcher names them.
pub use crate::rules::marks::{APP, FOREIGN, NAMES as MARKS, SCRIPTING, UNKNOWN};

/// Scripting-library fingerprints recorded from Debian 12's clients (`scripts/record_tls.py`,
/// `tests/fixtures/tls/`): curl 7.88, Python 3.11's default `ssl` context, OpenSSL 3.0's
/// `s_client` (TLS 1.3, and TLS 1.2 without SNI).
pub const DEFAULT_SCRIPTING: &[&str] = &[
    "t13d3112h2_e8f1e7e78f70_b26ce05bbdd6",
    "t13d181100_85036bcba153_d41ae481755e",
    "t13d311000_e8f1e7e78f70_1f22a2ca17c4",
    "t12i280600_d943125447b4_e7e480e5a997",
];

/// `[tls]`
#[derive(Clone, Debug)]
pub struct TlsConfig {
    /// Read ClientHellos on the mirror.
    pub enabled: bool,
    /// Request headers carrying the client's JA4 from a TLS-terminating edge (lower case).
    pub ja4_headers: Vec<String>,
    /// Request header naming the edge's viewer as `ip:port` (lower case), to join a
    /// transaction with the handshake seen on the mirror.
    pub viewer_address_header: Option<String>,
    /// Distinct devices with valid tokens that make a fingerprint the app's.
    pub learn_devices: usize,
    /// Fingerprints followed per app (learned or learning); past it new ones are not
    /// followed (counted).
    pub max_per_app: usize,
    /// Devices remembered; the least recently seen make room.
    pub max_devices: usize,
    /// How long a device's sighting with an app fingerprint counts for `foreign`.
    pub device_window: Duration,
    /// Known scripting-library fingerprints.
    pub scripting: HashSet<String>,
    /// Handshakes waiting to be joined with a transaction (by client address and port).
    pub max_hellos: usize,
    /// `run`: where the learned fingerprints are kept across restarts.
    pub state_file: Option<std::path::PathBuf>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            enabled: true,
            ja4_headers: vec!["cloudfront-viewer-ja4-fingerprint".into(), "x-ja4".into()],
            viewer_address_header: Some("cloudfront-viewer-address".into()),
            learn_devices: 3,
            max_per_app: 64,
            max_devices: 100_000,
            device_window: Duration::from_secs(600),
            scripting: DEFAULT_SCRIPTING.iter().map(|s| s.to_string()).collect(),
            max_hellos: 65_536,
            state_file: None,
        }
    }
}

#[derive(Default)]
struct Print {
    /// Devices seen with it (up to `learn_devices`).
    devices: Vec<Arc<str>>,
    learned: bool,
}

struct Sighting {
    ip: IpAddr,
    at: Timestamp,
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, PartialEq)]
pub struct FingerprintStats {
    /// Fingerprints learned as an app's.
    pub learned: u64,
    /// Fingerprints followed now (all apps).
    pub followed: u64,
    /// New fingerprints not followed: an app was at `max_per_app`.
    pub refused: u64,
    /// Handshakes noted, and transactions that took their fingerprint.
    pub hellos: u64,
    pub joined: u64,
    /// Events carrying a fingerprint (from the edge or joined).
    pub events: u64,
}

/// The learning state.
pub struct Fingerprints {
    cfg: TlsConfig,
    apps: HashMap<Arc<str>, HashMap<Arc<str>, Print>>,
    devices: HashMap<Arc<str>, Sighting>,
    device_order: VecDeque<Arc<str>>,
    hellos: HashMap<SocketAddr, (Arc<str>, Timestamp)>,
    hello_order: VecDeque<SocketAddr>,
    pub stats: FingerprintStats,
}

impl Fingerprints {
    pub fn new(cfg: TlsConfig) -> Fingerprints {
        Fingerprints {
            cfg,
            apps: HashMap::new(),
            devices: HashMap::new(),
            device_order: VecDeque::new(),
            hellos: HashMap::new(),
            hello_order: VecDeque::new(),
            stats: FingerprintStats::default(),
        }
    }

    /// A handshake from `client` at `ts` with fingerprint `ja4`.
    pub fn hello(&mut self, client: SocketAddr, ja4: Arc<str>, ts: Timestamp) {
        self.stats.hellos += 1;
        if self.hellos.insert(client, (ja4, ts)).is_none() {
            self.hello_order.push_back(client);
        }
        while self.hellos.len() > self.cfg.max_hellos {
            match self.hello_order.pop_front() {
                Some(old) => {
                    self.hellos.remove(&old);
                }
                None => break,
            }
        }
    }

    /// The fingerprint of the handshake `viewer` made before `ts`.
    pub fn joined(&mut self, viewer: SocketAddr, ts: Timestamp) -> Option<Arc<str>> {
        let (ja4, at) = self.hellos.get(&viewer)?;
        (*at <= ts).then(|| {
            self.stats.joined += 1;
            ja4.clone()
        })
    }

    /// Learns from a request and returns its marks.
    pub fn observe(
        &mut self,
        family: Option<&Arc<str>>,
        ja4: &Arc<str>,
        verdict: Verdict,
        device: Option<&Arc<str>>,
        ip: IpAddr,
        ts: Timestamp,
    ) -> u8 {
        self.stats.events += 1;
        let mut marks = 0;
        if self.cfg.scripting.contains(&**ja4) {
            marks |= SCRIPTING;
        }
        let Some(family) = family else {
            // No family named (no token at all): the app's if any app's valid tokens use it.
            let app = self
                .apps
                .values()
                .any(|a| a.get(ja4).is_some_and(|p| p.learned));
            return marks | if app { APP } else { UNKNOWN };
        };
        let valid_device = device.filter(|_| verdict == Verdict::Valid);
        let app = self.apps.entry(family.clone()).or_default();
        let learned = match app.get_mut(ja4) {
            Some(p) => {
                if !p.learned
                    && let Some(d) = valid_device
                    && !p.devices.iter().any(|x| x == d)
                {
                    p.devices.push(d.clone());
                    if p.devices.len() >= self.cfg.learn_devices {
                        p.learned = true;
                        p.devices = Vec::new();
                        self.stats.learned += 1;
                    }
                }
                p.learned
            }
            None => match valid_device {
                Some(d) if app.len() < self.cfg.max_per_app => {
                    let learned = self.cfg.learn_devices <= 1;
                    if learned {
                        self.stats.learned += 1;
                    }
                    app.insert(
                        ja4.clone(),
                        Print {
                            devices: if learned { Vec::new() } else { vec![d.clone()] },
                            learned,
                        },
                    );
                    self.stats.followed += 1;
                    learned
                }
                Some(_) => {
                    self.stats.refused += 1;
                    false
                }
                None => false,
            },
        };
        if learned {
            marks |= APP;
        } else {
            marks |= UNKNOWN;
        }
        if let Some(d) = valid_device {
            if learned {
                self.sighted(d, ip, ts);
            } else if let Some(s) = self.devices.get(d)
                && s.ip != ip
                && ts.0.saturating_sub(s.at.0) <= self.cfg.device_window.as_nanos() as u64
            {
                marks |= FOREIGN;
            }
        }
        marks
    }

    fn sighted(&mut self, device: &Arc<str>, ip: IpAddr, at: Timestamp) {
        if self
            .devices
            .insert(device.clone(), Sighting { ip, at })
            .is_none()
        {
            self.device_order.push_back(device.clone());
            while self.devices.len() > self.cfg.max_devices {
                match self.device_order.pop_front() {
                    Some(old) => {
                        self.devices.remove(&old);
                    }
                    None => break,
                }
            }
        }
    }

    /// The learned fingerprints, per app, as saved across restarts.
    pub fn save(&self) -> serde_json::Value {
        let apps: std::collections::BTreeMap<String, Vec<String>> = self
            .apps
            .iter()
            .map(|(f, p)| {
                let mut v: Vec<String> = p
                    .iter()
                    .filter(|(_, x)| x.learned)
                    .map(|(j, _)| j.to_string())
                    .collect();
                v.sort();
                (f.to_string(), v)
            })
            .collect();
        serde_json::json!({"version": 1, "learned": apps})
    }

    /// Restores what [`Fingerprints::save`] wrote (at most `max_per_app` per app). Returns
    /// how many fingerprints were restored.
    pub fn restore(&mut self, saved: &serde_json::Value) -> Result<usize, String> {
        if saved["version"] != 1 {
            return Err("not a version 1 fingerprints file".into());
        }
        let apps = saved["learned"].as_object().ok_or("no `learned` object")?;
        let mut n = 0;
        for (family, list) in apps {
            let app = self.apps.entry(Arc::from(family.as_str())).or_default();
            for j in list
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|j| j.as_str())
            {
                if app.len() >= self.cfg.max_per_app {
                    break;
                }
                app.insert(
                    Arc::from(j),
                    Print {
                        devices: Vec::new(),
                        learned: true,
                    },
                );
                n += 1;
            }
        }
        Ok(n)
    }

    /// Fingerprints learned per app (the summary's `fingerprints`).
    pub fn learned(&self) -> Vec<(String, usize)> {
        let mut v: Vec<(String, usize)> = self
            .apps
            .iter()
            .map(|(f, p)| (f.to_string(), p.values().filter(|x| x.learned).count()))
            .collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> Timestamp {
        Timestamp(s * 1_000_000_000)
    }

    #[test]
    fn a_release_is_learned_and_a_lifted_token_is_foreign() {
        let mut f = Fingerprints::new(TlsConfig::default());
        let app: Arc<str> = "approov".into();
        let (r1, r2, curl): (Arc<str>, Arc<str>, Arc<str>) =
            ("r1".into(), "r2".into(), "curl".into());
        let dev = |i: u32| -> Arc<str> { format!("dev-{i}").into() };
        let ip = |i: u8| IpAddr::from([10, 0, 0, i]);
        // Three devices make r1 the app's.
        for i in 0..3 {
            let m = f.observe(
                Some(&app),
                &r1,
                Verdict::Valid,
                Some(&dev(i)),
                ip(i as u8),
                t(1),
            );
            assert_eq!(m & APP, if i < 2 { 0 } else { APP });
        }
        assert_eq!(
            f.observe(Some(&app), &r1, Verdict::Valid, Some(&dev(0)), ip(0), t(2)),
            APP
        );
        // A new release from the devices' own addresses: unknown, never foreign, then learned.
        for i in 3..6 {
            f.observe(
                Some(&app),
                &r1,
                Verdict::Valid,
                Some(&dev(i)),
                ip(i as u8),
                t(3),
            );
        }
        for i in 3..6 {
            let m = f.observe(
                Some(&app),
                &r2,
                Verdict::Valid,
                Some(&dev(i)),
                ip(i as u8),
                t(4),
            );
            assert_eq!(m & FOREIGN, 0, "an upgrade is not a lifted token");
        }
        assert_eq!(
            f.observe(Some(&app), &r2, Verdict::Valid, Some(&dev(9)), ip(9), t(5)),
            APP
        );
        // dev-0's token from another address with curl's stack: foreign.
        let m = f.observe(
            Some(&app),
            &curl,
            Verdict::Valid,
            Some(&dev(0)),
            ip(66),
            t(6),
        );
        assert_eq!(m, UNKNOWN | FOREIGN);
        // Unattested traffic with the app's fingerprint is marked app.
        assert_eq!(
            f.observe(Some(&app), &r1, Verdict::Missing, None, ip(77), t(7)),
            APP
        );
        assert_eq!(f.learned(), vec![("approov".to_string(), 2)]);
    }

    #[test]
    fn learned_fingerprints_survive_a_restart() {
        let mut f = Fingerprints::new(TlsConfig::default());
        let app: Arc<str> = "approov".into();
        let r1: Arc<str> = "r1".into();
        for i in 0..3u8 {
            let d: Arc<str> = format!("d{i}").into();
            f.observe(
                Some(&app),
                &r1,
                Verdict::Valid,
                Some(&d),
                IpAddr::from([10, 0, 0, i]),
                t(1),
            );
        }
        let saved = f.save();
        let mut g = Fingerprints::new(TlsConfig::default());
        assert_eq!(g.restore(&saved), Ok(1));
        let d: Arc<str> = "new".into();
        let m = g.observe(
            Some(&app),
            &r1,
            Verdict::Valid,
            Some(&d),
            IpAddr::from([10, 0, 0, 9]),
            t(2),
        );
        assert_eq!(m, APP, "known at once after the restart");
        assert!(g.restore(&serde_json::json!({"version": 2})).is_err());
    }

    #[test]
    fn hellos_join_by_viewer_address_and_are_bounded() {
        let mut f = Fingerprints::new(TlsConfig {
            max_hellos: 2,
            ..TlsConfig::default()
        });
        let a: SocketAddr = "192.0.2.1:50000".parse().unwrap();
        let b: SocketAddr = "192.0.2.1:50001".parse().unwrap();
        let c: SocketAddr = "192.0.2.2:40000".parse().unwrap();
        f.hello(a, "x".into(), t(1));
        assert_eq!(
            f.joined(a, t(0)),
            None,
            "a handshake after the request is not its own"
        );
        assert_eq!(f.joined(a, t(2)).as_deref(), Some("x"));
        f.hello(b, "y".into(), t(2));
        f.hello(c, "z".into(), t(3));
        assert_eq!(f.joined(a, t(4)), None, "the oldest made room");
        assert_eq!(f.joined(c, t(4)).as_deref(), Some("z"));
    }
}
