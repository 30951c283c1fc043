//! Scale-out over NATS JetStream (floor 4, beside the outputs).
//!
//! A **sensor** (`run` or `replay` with `[export]`) runs capture, workers and the detect
//! front as usual, but its detect shards are partitions of a JetStream stream: what the
//! front routes to shard `p` is published on `<prefix>.events.p<p>` ([`sensor`]). A
//! **correlator** (`shieldtap correlate`) consumes a set of partitions, merges the sensors'
//! messages in packet-time order by their watermarks, runs the detect shard of each
//! partition, and sends the alerts to the usual outputs and to `<prefix>.alerts.p<p>`
//! ([`correlator`]). Correlator state is checkpointed to an object store with the stream
//! position it covers; alerts carry stable ids, so a restarted correlator (or another
//! taking over its partitions) sends no alert twice.
//!
//! What leaves the sensor is the shard interface's versioned event ([`wire`]); personal
//! values in it (login usernames, user ids that are e-mail addresses or phone numbers,
//! object ids of that kind) travel as pseudonyms that outputs show exactly as they would
//! show the value (its mask), and tokens only ever as their short hashes.

pub mod config;
pub mod connect;
pub mod correlator;
pub mod sensor;
pub mod stats;
pub mod wire;

use std::sync::Arc;

pub use config::{CorrelateConfig, ExportConfig, NatsConfig};
pub use sensor::NatsShards;
pub use stats::ScaleStats;

use crate::detect::{Event, ObjectRef};
use crate::redact;

/// The event as it may leave the process: personal values replaced by pseudonyms.
/// Borrowed unchanged (no copy) when it carries none.
pub fn pseudonymize(ev: Arc<Event>) -> Arc<Event> {
    let personal_user = ev
        .actor
        .user
        .as_deref()
        .is_some_and(redact::is_personal_identifier);
    let personal_object = |o: &ObjectRef| {
        matches!(
            redact::kind(&o.id),
            redact::Kind::Email | redact::Kind::Card | redact::Kind::Phone
        ) || o.id.starts_with('\u{1}')
    };
    let objects = ev
        .objects
        .iter()
        .chain(&ev.returned)
        .chain(&ev.foreign)
        .any(personal_object);
    if ev.username.is_none() && !personal_user && !objects {
        return ev;
    }
    let mut e = (*ev).clone();
    if let Some(u) = &e.username {
        e.username = Some(redact::pseudonym(u).into());
    }
    if personal_user && let Some(u) = &e.actor.user {
        e.actor.user = Some(redact::pseudonym(u).into());
        e.principal_key = Some(e.principal().into());
    }
    if objects {
        for o in e
            .objects
            .iter_mut()
            .chain(e.returned.iter_mut())
            .chain(e.foreign.iter_mut())
        {
            if personal_object(o) {
                o.id = redact::pseudonym(&o.id).into();
            }
        }
    }
    Arc::new(e)
}
