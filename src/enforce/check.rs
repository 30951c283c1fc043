//! One check: a request's headers in, allow or deny out.
//!
//! The same [`Verifier`] (and verdict cache) as the pipeline judges the attestation and
//! user tokens on wall time; the route's policy says what the verdict means; an active
//! decision on the request's device, token, user or address denies with 403 (except under
//! `monitor`, which only counts what it would have denied).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use super::config::{EnforceConfig, Mode};
use super::decisions::{Hit, Store};
use super::stats::{CheckResult, EnforceStats, Reason};
use crate::http::Headers;
use crate::token::{Verdict, Verifier};

/// Where the check gets the current verifier (swapped on reload).
pub type VerifierSource = Arc<dyn Fn() -> Arc<Verifier> + Send + Sync>;

/// The request as the gateway describes it.
pub struct CheckInput<'a> {
    pub method: &'a str,
    /// The original request target (path and query); `None` when the gateway sent none.
    pub uri: Option<&'a str>,
    pub host: Option<&'a str>,
    /// The gateway's address.
    pub peer: IpAddr,
    pub headers: &'a Headers,
}

/// The answer.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub status: u16,
    pub result: CheckResult,
    pub reason: Reason,
    pub policy: String,
    pub family: Arc<str>,
    pub verdict: Verdict,
    /// The device id of a token whose claims can be believed.
    pub device: Option<Arc<str>>,
    pub decision: Option<Hit>,
    pub client: IpAddr,
}

/// Judges checks.
pub struct Checker {
    pub cfg: Arc<EnforceConfig>,
    /// `client_ip_headers` and `trusted_proxies` of `[enforce]`.
    attribution: crate::actor::Attribution,
    pub store: Arc<Store>,
    pub stats: Arc<EnforceStats>,
    verifier: VerifierSource,
}

impl Checker {
    pub fn new(cfg: Arc<EnforceConfig>, store: Arc<Store>, verifier: VerifierSource) -> Checker {
        let stats = Arc::new(EnforceStats::new(
            cfg.policy_names().into_iter().map(String::from).collect(),
        ));
        Checker {
            attribution: crate::actor::Attribution {
                client_ip_headers: cfg.client_ip_headers.clone(),
                trusted_proxies: cfg.trusted_proxies.clone(),
            },
            cfg,
            store,
            stats,
            verifier,
        }
    }

    /// The client: the right-most address of the first client header present that is not
    /// a trusted proxy; the gateway itself when no header names one.
    /// The gateway is always believed: it is the one asking.
    pub fn client(&self, peer: IpAddr, headers: &Headers) -> IpAddr {
        self.attribution.forwarded_client(peer, headers)
    }

    /// Judges one request at wall time `now` (Unix seconds).
    pub fn check(&self, req: &CheckInput<'_>, now: f64) -> Outcome {
        let started = Instant::now();
        let uri = req.uri.unwrap_or("/");
        if req.uri.is_none() {
            self.stats
                .no_uri
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let path = uri.split(['?', '#']).next().unwrap_or("/");
        let policy = self.cfg.policy(req.method, path, req.host);
        let client = self.client(req.peer, req.headers);
        let verifier = (self.verifier)();
        let att = verifier.attest(req.headers, uri, now);
        let user = verifier
            .identify(req.headers, now)
            .filter(|u| matches!(u.verdict, Verdict::Valid | Verdict::Unverified));
        let allow = &self.cfg.allow;
        let allow_listed = allow.ip(client)
            || att
                .device
                .as_deref()
                .is_some_and(|d| allow.devices.contains(d))
            || user.as_ref().is_some_and(|u| allow.users.contains(&*u.id));
        let token = att.token_hash.map(|t| t.to_string());
        let decision = if allow_listed {
            None
        } else {
            self.store.find(
                Some(client),
                att.device.as_deref(),
                token.as_deref(),
                user.as_ref().map(|u| &*u.id),
                now as u64,
            )
        };
        let verdict_denied = policy.denies(att.verdict);
        let (result, reason, status) = match (policy.mode, decision, verdict_denied) {
            (Mode::Monitor, Some(_), _) => (CheckResult::WouldDeny, Reason::Decision, 200),
            (Mode::Monitor, None, true) => (CheckResult::WouldDeny, Reason::Verdict, 200),
            (_, Some(_), _) => (CheckResult::Deny, Reason::Decision, 403),
            (Mode::RequireAttestation, None, true) => {
                (CheckResult::Deny, Reason::Verdict, policy.deny_status)
            }
            (_, None, false) => (CheckResult::Allow, Reason::Attested, 200),
            (_, None, true) => (CheckResult::Allow, Reason::NotRequired, 200),
        };
        self.stats
            .count(&policy.name, result, reason, Some(att.verdict));
        self.stats.observe_latency(started.elapsed());
        Outcome {
            status,
            result,
            reason,
            policy: policy.name.clone(),
            family: att.family,
            verdict: att.verdict,
            device: att.device,
            decision,
            client,
        }
    }
}
