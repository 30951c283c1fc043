//! Actor: who made a request.
//!
//! Input: a transaction's connection, request headers and token judgements. Output: an
//! [`Actor`]: the client address (the connection's, or the original client's from a
//! forwarding header when the connection comes from a trusted proxy), the attested device
//! id, and the user id when the identity token can be believed. Only believed values are
//! used: a forged token names no device, an unverifiable user token no user. Attribution
//! never depends on seeing every flow of an actor: each request carries its own.

pub mod registry;

use std::net::IpAddr;
use std::sync::Arc;

use crate::http::Headers;
use crate::token::{Attestation, Cidr, UserId, Verdict};

/// Most addresses read from one forwarding header: an attacker controls its length.
const MAX_FORWARDED_HOPS: usize = 32;

/// The client as attributed.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Actor {
    pub ip: IpAddr,
    pub device: Option<Arc<str>>,
    pub user: Option<Arc<str>>,
}

/// How client addresses are attributed (from `[identity]`).
#[derive(Clone, Debug, Default)]
pub struct Attribution {
    /// Headers carrying the original client (`X-Forwarded-For`), lower-case.
    pub client_ip_headers: Vec<String>,
    pub trusted_proxies: Vec<Cidr>,
}

impl Attribution {
    /// The client address: the connection's peer, unless it is a trusted proxy, in which
    /// case the right-most address of the first forwarding header that is not itself a
    /// trusted proxy (the left part of the header is client-controlled and ignored).
    pub fn client_ip(&self, peer: IpAddr, headers: &Headers) -> IpAddr {
        if self.trusted_proxies.is_empty() || !self.is_trusted(peer) {
            return peer;
        }
        self.forwarded_client(peer, headers)
    }

    /// The client a proxy (`peer`, trusted by the caller) names: the right-most address of
    /// the first forwarding header present that is not a trusted proxy; `peer` when there
    /// is none or the chain is malformed.
    pub fn forwarded_client(&self, peer: IpAddr, headers: &Headers) -> IpAddr {
        for name in &self.client_ip_headers {
            let Some(value) = headers.get(name) else {
                continue;
            };
            let Ok(text) = std::str::from_utf8(value) else {
                return peer;
            };
            let forwarded = name.eq_ignore_ascii_case("forwarded");
            for hop in text.rsplit(',').take(MAX_FORWARDED_HOPS) {
                let hop = if forwarded {
                    // RFC 7239: `for=192.0.2.60;proto=https`, `for="[2001:db8::1]:4711"`.
                    match forwarded_for(hop) {
                        Some(f) => f,
                        None => return peer,
                    }
                } else {
                    hop.trim()
                };
                let Some(ip) = parse_hop(hop) else {
                    // A malformed entry ends the trusted chain: what lies left of it is
                    // not believable.
                    return peer;
                };
                if !self.is_trusted(ip) {
                    return ip;
                }
            }
            return peer;
        }
        peer
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|c| c.contains(ip))
    }
}

/// The `for=` parameter of one `Forwarded` element, unquoted.
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("for")
            .then(|| v.trim().trim_matches('"'))
    })
}

/// An address as forwarding headers write it: `1.2.3.4`, `1.2.3.4:5678`, `[::1]:80`, `::1`.
fn parse_hop(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
        return Some(sa.ip());
    }
    s.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse().ok())
}

/// Builds the actor of one request.
pub fn actor(
    attribution: &Attribution,
    peer: IpAddr,
    headers: &Headers,
    attestation: Option<&Attestation>,
    user: Option<&UserId>,
) -> Actor {
    Actor {
        ip: attribution.client_ip(peer, headers),
        device: attestation.and_then(|a| a.device.clone()),
        user: user
            .filter(|u| matches!(u.verdict, Verdict::Valid | Verdict::Unverified))
            .map(|u| u.id.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attribution(proxies: &[&str]) -> Attribution {
        Attribution {
            client_ip_headers: vec!["x-forwarded-for".into()],
            trusted_proxies: proxies.iter().map(|p| p.parse().unwrap()).collect(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peers_are_the_client_whatever_they_claim() {
        let a = attribution(&["10.0.0.0/8"]);
        let h = crate::http::Headers::from_iter([("X-Forwarded-For", "1.1.1.1")]);
        assert_eq!(a.client_ip(ip("192.0.2.7"), &h), ip("192.0.2.7"));
        // No proxies configured: headers are never read.
        assert_eq!(
            attribution(&[]).client_ip(ip("10.0.0.1"), &h),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn trusted_proxy_chain_is_walked_from_the_right() {
        let a = attribution(&["10.0.0.0/8"]);
        // The client forged the left-most entry; the proxies appended the rest.
        let h = crate::http::Headers::from_iter([(
            "x-forwarded-for",
            "6.6.6.6, 203.0.113.9, 10.1.1.1",
        )]);
        assert_eq!(a.client_ip(ip("10.2.2.2"), &h), ip("203.0.113.9"));
        let h = crate::http::Headers::from_iter([("X-Forwarded-For", "[2001:db8::1]:443")]);
        assert_eq!(a.client_ip(ip("10.2.2.2"), &h), ip("2001:db8::1"));
    }

    #[test]
    fn forwarded_and_x_real_ip_are_understood() {
        let a = Attribution {
            client_ip_headers: vec!["Forwarded".into(), "X-Real-IP".into()],
            trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
        };
        let h = crate::http::Headers::from_iter([(
            "Forwarded",
            "for=6.6.6.6, for=\"[2001:db8::7]:4711\";proto=https, for=10.1.1.1",
        )]);
        assert_eq!(a.client_ip(ip("10.2.2.2"), &h), ip("2001:db8::7"));
        let h = crate::http::Headers::from_iter([("X-Real-IP", "198.51.100.4")]);
        assert_eq!(a.client_ip(ip("10.2.2.2"), &h), ip("198.51.100.4"));
        // Obfuscated identifiers (`for=_hidden`) are not addresses: the chain ends there.
        let h = crate::http::Headers::from_iter([("Forwarded", "for=_hidden")]);
        assert_eq!(a.client_ip(ip("10.2.2.2"), &h), ip("10.2.2.2"));
    }

    #[test]
    fn malformed_or_missing_headers_fall_back_to_the_peer() {
        let a = attribution(&["10.0.0.0/8"]);
        let h = crate::http::Headers::from_iter([("X-Forwarded-For", "203.0.113.9, not-an-ip")]);
        assert_eq!(a.client_ip(ip("10.2.2.2"), &h), ip("10.2.2.2"));
        assert_eq!(
            a.client_ip(ip("10.2.2.2"), &crate::http::Headers::new()),
            ip("10.2.2.2")
        );
        let h = crate::http::Headers::from_iter([("X-Forwarded-For", "10.3.3.3")]);
        assert_eq!(a.client_ip(ip("10.2.2.2"), &h), ip("10.2.2.2"));
    }
}
