//! Enforcement counters: plain atomics on the check path, read per scrape.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::token::Verdict;

/// What a check answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckResult {
    Allow,
    Deny,
    /// Monitor policy: allowed, but the other modes would have denied it.
    WouldDeny,
    /// Refused unjudged: too many checks at once (503).
    Shed,
}

impl CheckResult {
    pub const ALL: [CheckResult; 4] = [
        CheckResult::Allow,
        CheckResult::Deny,
        CheckResult::WouldDeny,
        CheckResult::Shed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CheckResult::Allow => "allow",
            CheckResult::Deny => "deny",
            CheckResult::WouldDeny => "would-deny",
            CheckResult::Shed => "shed",
        }
    }
}

/// Why a check answered so (bounded: a metric label and the `X-Shieldtap-Reason` header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The attestation verdict is not denied by the policy (`valid`, or allowed by config).
    Attested,
    /// The policy does not require attestation.
    NotRequired,
    /// The policy denies the verdict.
    Verdict,
    /// An active decision on the device, token, user or address.
    Decision,
    Overloaded,
}

impl Reason {
    pub const ALL: [Reason; 5] = [
        Reason::Attested,
        Reason::NotRequired,
        Reason::Verdict,
        Reason::Decision,
        Reason::Overloaded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Attested => "attested",
            Reason::NotRequired => "not-required",
            Reason::Verdict => "verdict",
            Reason::Decision => "decision",
            Reason::Overloaded => "overloaded",
        }
    }
}

/// Upper bounds of the check latency histogram, in seconds.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
];

/// Counters of the check endpoint and the bouncer API.
#[derive(Debug)]
pub struct EnforceStats {
    pub policies: Vec<String>,
    /// [policy][result]
    checks: Vec<[AtomicU64; 4]>,
    reasons: [AtomicU64; 5],
    verdicts: [AtomicU64; Verdict::ALL.len()],
    /// Per bucket (non-cumulative), then +Inf.
    latency: [AtomicU64; 13],
    latency_sum_ns: AtomicU64,
    /// Checks whose request named no original URI (policy: the default).
    pub no_uri: AtomicU64,
    /// Connections closed at once at `max_connections`.
    pub connections_refused: AtomicU64,
    /// Bouncer API calls: ok, unauthorized.
    pub bouncer_pulls: AtomicU64,
    pub bouncer_unauthorized: AtomicU64,
    /// Follower: pulls that failed.
    pub follow_failures: AtomicU64,
}

impl EnforceStats {
    pub fn new(policies: Vec<String>) -> EnforceStats {
        let checks = policies.iter().map(|_| Default::default()).collect();
        EnforceStats {
            policies,
            checks,
            reasons: Default::default(),
            verdicts: Default::default(),
            latency: Default::default(),
            latency_sum_ns: AtomicU64::new(0),
            no_uri: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            bouncer_pulls: AtomicU64::new(0),
            bouncer_unauthorized: AtomicU64::new(0),
            follow_failures: AtomicU64::new(0),
        }
    }

    pub fn count(
        &self,
        policy: &str,
        result: CheckResult,
        reason: Reason,
        verdict: Option<Verdict>,
    ) {
        let p = self.policies.iter().position(|n| n == policy).unwrap_or(0);
        let r = CheckResult::ALL
            .iter()
            .position(|x| *x == result)
            .unwrap_or(0);
        if let Some(row) = self.checks.get(p) {
            row[r].fetch_add(1, Ordering::Relaxed);
        }
        let i = Reason::ALL.iter().position(|x| *x == reason).unwrap_or(0);
        self.reasons[i].fetch_add(1, Ordering::Relaxed);
        if let Some(v) = verdict
            && let Some(i) = Verdict::ALL.iter().position(|x| *x == v)
        {
            self.verdicts[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn observe_latency(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.latency[i].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_ns
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    /// (policy, result, checks)
    pub fn checks(&self) -> Vec<(String, &'static str, u64)> {
        let mut out = Vec::new();
        for (p, row) in self.policies.iter().zip(&self.checks) {
            for (r, c) in CheckResult::ALL.iter().zip(row) {
                out.push((p.clone(), r.as_str(), c.load(Ordering::Relaxed)));
            }
        }
        out
    }

    pub fn reasons(&self) -> Vec<(&'static str, u64)> {
        Reason::ALL
            .iter()
            .zip(&self.reasons)
            .map(|(r, c)| (r.as_str(), c.load(Ordering::Relaxed)))
            .collect()
    }

    pub fn verdicts(&self) -> Vec<(&'static str, u64)> {
        Verdict::ALL
            .iter()
            .zip(&self.verdicts)
            .map(|(v, c)| (v.as_str(), c.load(Ordering::Relaxed)))
            .collect()
    }

    /// (sum in seconds, count, [(bound, count in the bucket)]): the encoder accumulates.
    pub fn latency(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let counts: Vec<u64> = self
            .latency
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let buckets = LATENCY_BUCKETS
            .iter()
            .zip(&counts)
            .map(|(b, c)| (*b, *c))
            .collect();
        (
            self.latency_sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
            counts.iter().sum(),
            buckets,
        )
    }
}
