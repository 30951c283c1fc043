//! Alerts → decisions.
//!
//! The first `[[enforce.ban]]` entry matching an alert's rule and severity decides (an
//! entry with `ban = false` is an exception: no ban); without a matching entry, the rule's
//! own `ban:` applies; without either, nothing is banned. The key (`auto` by default):
//!
//! - a device-keyed rule bans the device; a user-keyed rule the user;
//! - a token-keyed rule bans the token, or, when the alert names the address of a copy of
//!   the token used beside its genuine holder, that address (banning the token would
//!   block the victim);
//! - a principal-keyed rule bans the user, else the device, else the address;
//! - an address-keyed rule bans the address.
//!
//! Never: an address for an alert about a device or a token (`auto`), an address many
//! attested devices share (carrier NAT, a proxy: thousands of genuine phones behind it),
//! anything on the allow-list, or any key of an alert about the API itself (keyed by route).

use std::sync::Arc;

use super::config::EnforceConfig;
use super::decisions::{Ban, Decision, Scope, Store, canonical};
use crate::detect::Alert;
use crate::rules::{BanKey, BanSpec};

/// Turns alerts into decisions in a store.
pub struct Decider {
    cfg: Arc<EnforceConfig>,
    store: Arc<Store>,
}

/// Why an alert banned nothing (for tests and the debug log).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoBan {
    /// No ban policy matches.
    NoPolicy,
    /// The alert is about the API, or names no key of the kind asked for.
    NoKey,
    /// The address is shared by many attested devices.
    SharedAddress,
    AllowListed,
    /// A ban at least as long holds already.
    AlreadyBanned,
}

impl Decider {
    pub fn new(cfg: Arc<EnforceConfig>, store: Arc<Store>) -> Decider {
        Decider { cfg, store }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The ban an alert asks for, by config then by rule.
    fn spec(&self, a: &Alert) -> Option<BanSpec> {
        if !self.cfg.decisions_from_alerts {
            return None;
        }
        for p in &self.cfg.bans {
            let rule_ok = p.rules.as_ref().is_none_or(|r| r.is_match(a.rule.as_str()));
            if rule_ok && a.severity >= p.min_severity {
                return p.ban;
            }
        }
        a.rule_ban()
    }

    /// What `spec` bans for alert `a`.
    fn target(&self, a: &Alert, spec: BanSpec) -> Result<(Scope, String), NoBan> {
        let s = &a.subjects;
        let k = s.keyed;
        let ip = |shared_ok: bool| -> Result<(Scope, String), NoBan> {
            let ip = s.ip.ok_or(NoBan::NoKey)?;
            if s.shared_address && !shared_ok {
                return Err(NoBan::SharedAddress);
            }
            if self.cfg.allow.ip(ip) {
                return Err(NoBan::AllowListed);
            }
            Ok((Scope::Ip, ip.to_string()))
        };
        let device = || -> Result<(Scope, String), NoBan> {
            let d = s.device.as_deref().ok_or(NoBan::NoKey)?;
            if self.cfg.allow.devices.contains(d) {
                return Err(NoBan::AllowListed);
            }
            Ok((Scope::Device, d.to_string()))
        };
        let user = || -> Result<(Scope, String), NoBan> {
            let u = s.user.as_deref().ok_or(NoBan::NoKey)?;
            if self.cfg.allow.users.contains(u) {
                return Err(NoBan::AllowListed);
            }
            Ok((Scope::User, u.to_string()))
        };
        let token = || -> Result<(Scope, String), NoBan> {
            let t = s.token.ok_or(NoBan::NoKey)?;
            Ok((Scope::Token, t.to_string()))
        };
        let about_client = k.ip || k.device || k.user || k.token || k.principal;
        if !about_client {
            return Err(NoBan::NoKey);
        }
        match spec.key {
            BanKey::Device => device(),
            BanKey::User => user(),
            BanKey::Token => token(),
            BanKey::Ip => ip(false),
            BanKey::Auto => {
                if k.device && s.device.is_some() {
                    device()
                } else if k.token {
                    if s.copy { ip(false) } else { token() }
                } else if k.user && s.user.is_some() {
                    user()
                } else if k.principal {
                    if s.user.is_some() {
                        user()
                    } else if s.device.is_some() {
                        device()
                    } else {
                        ip(false)
                    }
                } else if k.ip {
                    ip(false)
                } else {
                    Err(NoBan::NoKey)
                }
            }
        }
    }

    /// Bans what alert `a` asks for, `now` being Unix seconds (wall time live, the
    /// alert's packet time in replay).
    pub fn observe(&self, a: &Alert, now: u64) -> Result<Decision, NoBan> {
        let spec = self.spec(a).ok_or(NoBan::NoPolicy)?;
        let (scope, value) = self.target(a, spec)?;
        let value = canonical(scope, &value).map_err(|_| NoBan::NoKey)?;
        let until = now.saturating_add(spec.duration.as_secs().max(1));
        let d = self
            .store
            .add(Ban {
                scope,
                value,
                origin: "shieldtap",
                scenario: a.rule.as_str(),
                reason: &a.summary,
                now,
                until,
            })
            .ok_or(NoBan::AlreadyBanned)?;
        tracing::info!(
            id = d.id,
            scope = scope.as_str(),
            rule = %a.rule,
            until = d.until,
            "decision added"
        );
        Ok(d)
    }

    /// [`Decider::observe`] for each alert; the decisions made.
    pub fn observe_all(&self, alerts: &[Alert], now: impl Fn(&Alert) -> u64) -> Vec<Decision> {
        alerts
            .iter()
            .filter_map(|a| self.observe(a, now(a)).ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A copy of a genuine device's token in use beside its holder: the `auto` ban of
    /// `token.concurrent-use` is the copy's address, for the alert and for every
    /// follow-up, never the token (the holder's).
    #[test]
    fn concurrent_use_bans_the_copy_never_the_holders_token() {
        let alerts = crate::detect::tests::concurrent_use_alerts();
        assert!(
            alerts.iter().filter(|a| a.follow_up).count() >= 2,
            "{alerts:#?}"
        );
        let decider = Decider::new(
            Arc::new(EnforceConfig::default()),
            Arc::new(Store::new(100, None)),
        );
        for a in &alerts {
            let d = decider.observe(a, a.ts.0 / 1_000_000_000).expect("a ban");
            assert_eq!(
                (d.scope, d.value.as_str()),
                (Scope::Ip, "10.0.0.2"),
                "{a:#?}"
            );
        }
    }
}
