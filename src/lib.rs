//! shieldtap: a passive shield for the APIs behind mobile apps.
//!
//! ```text
//! capture ─► decode ─► reassembly ─► http ─► token ─► actor ─► detect ─► output
//!  pcap/live   L2-L4     TCP streams   txns    verdicts  who     findings  alerts, webhooks,
//!  files       + tunnels per flow                         is it            metrics, txn log
//! ```
//!
//! Modules are declared in flow order; only [`runtime`] wires stages together.
#![forbid(unsafe_code)]

// Ground floor: shared vocabulary every stage may use; imports no stage.
pub mod route;

pub mod redact;

pub mod exposure_class;

pub mod severity;

pub mod object;

pub mod intern;

pub mod budget;

pub mod secret;

pub mod memo;

pub mod resources;

// Flow order (blank lines keep rustfmt from sorting them).
pub mod config;

pub mod capture;

pub mod decode;

pub mod reassembly;

pub mod http;

pub mod tls;

pub mod grpc;

pub mod token;

pub mod actor;

pub mod rules;

pub mod detect;

pub mod output;

pub mod telemetry;

pub mod enforce;
// floor 4: scale-out over NATS JetStream (sensors publish shard messages, correlators run shards)
pub mod export;

pub mod runtime;
