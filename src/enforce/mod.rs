//! Enforcement ("shield right"): findings become decisions, and the gateway asks before
//! each request.
//!
//! ```text
//! alerts ─► Decider ─► Store ◄─ admin API (`shieldtap decisions`), follower
//!                        │
//!   gateway ─► check ────┤ (same token verifier and cache as the pipeline, wall time)
//!   bouncer ─► /v1/decisions/stream (CrowdSec LAPI shape, address decisions)
//! ```
//!
//! - [`decisions`]: the bounded, persisted store of time-limited bans on a key.
//! - [`decider`]: which alerts ban whom, for how long (config `[[enforce.ban]]`, a rule's
//!   `ban:`), never an address many attested devices share, never the allow-list.
//! - [`check`]: the per-request judgement: route policy, token verdicts, decisions.
//! - [`server`]: the HTTP side (check endpoints for nginx, Traefik and Envoy, the bouncer
//!   API, the admin API), bounded in connections and in-flight checks; past them it sheds
//!   with 503 at once instead of queueing.
//! - [`follow`]: a check endpoint in its own process following a daemon's decisions.
//!
//! The check path never waits on the detect path: it reads the store under a read lock.

pub mod check;
pub mod config;
pub mod decider;
pub mod decisions;
pub mod follow;
pub mod server;
pub mod stats;

pub use config::{EnforceConfig, Mode, Policy, RawEnforce};
pub use decider::Decider;
pub use decisions::{Decision, Scope, Store};

/// Unix seconds now (wall clock): the check endpoint, the store's expiry and live decisions.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
