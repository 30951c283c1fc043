//! The messages on the events stream: one envelope per (sensor, partition, flush), holding
//! the detect-shard messages the sensor's front routed to that partition, in its packet-time
//! order, and the sensor's watermark.
//!
//! Encoding: postcard (serde). The first two bytes (a little-endian-free postcard `u16`
//! varint) are [`VERSION`]: a reader decodes the version alone first and refuses any other,
//! so a mixed deployment fails loudly, not with garbage. The shard messages inside keep the
//! shard interface's own version ([`crate::detect::shard::PROTOCOL`]) and the digest of the
//! rule set they were routed with: rule indexes only mean something under the same rules.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::capture::Timestamp;
use crate::detect::{Event, StreamOrder};
use crate::rules::RuleSet;

/// Version of the envelope.
pub const VERSION: u16 = 1;

/// One detect-shard message as it travels: the sensor's stream positions are not carried
/// (a correlator numbers what it merges itself).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Msg {
    /// The sensor swept at packet time `now` (a whole-second boundary was reached), just
    /// before the event at `order`.
    Sweep { order: StreamOrder, now: Timestamp },
    /// An enriched event and the indexes of the matched rules whose key this partition
    /// owns.
    Event {
        order: StreamOrder,
        event: Arc<Event>,
        rules: crate::detect::shard::RuleList,
    },
}

impl Msg {
    /// Where the message stands in the merged order: a sweep just before the event that
    /// triggered it.
    pub fn key(&self) -> (StreamOrder, u8) {
        match self {
            Msg::Sweep { order, .. } => (*order, 0),
            Msg::Event { order, .. } => (*order, 1),
        }
    }
}

/// One message on the events stream.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Envelope {
    pub version: u16,
    /// [`crate::detect::shard::PROTOCOL`] of the sensor.
    pub protocol: u16,
    /// [`rules_digest`] of the sensor's rule set.
    pub rules: u64,
    pub sensor: String,
    /// The sensor process's run (its start, in nanoseconds of wall time): batch numbers
    /// start again with every run.
    pub run: u64,
    /// Per (sensor run, partition): 1, 2, 3, ...
    pub batch: u64,
    pub partition: u32,
    pub partitions: u32,
    /// The sensor's watermark: it sends nothing for this partition stamped before it.
    pub clock: Timestamp,
    /// The sensor's input ended (replay): nothing more comes from this run.
    pub finished: bool,
    pub msgs: Vec<Msg>,
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("envelope version {0}, this build reads version {VERSION}")]
    Version(u16),
    #[error("shard protocol {0}, this build speaks {proto}", proto = crate::detect::shard::PROTOCOL)]
    Protocol(u16),
    #[error("undecodable envelope: {0}")]
    Decode(postcard::Error),
}

impl WireError {
    /// Short reason for counters.
    pub fn reason(&self) -> &'static str {
        match self {
            WireError::Version(_) => "version",
            WireError::Protocol(_) => "protocol",
            WireError::Decode(_) => "decode",
        }
    }
}

impl Envelope {
    pub fn encode(&self) -> Result<Vec<u8>, postcard::Error> {
        postcard::to_stdvec(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Envelope, WireError> {
        let (version, _) = postcard::take_from_bytes::<u16>(bytes).map_err(WireError::Decode)?;
        if version != VERSION {
            return Err(WireError::Version(version));
        }
        let e: Envelope = postcard::from_bytes(bytes).map_err(WireError::Decode)?;
        if e.protocol != crate::detect::shard::PROTOCOL {
            return Err(WireError::Protocol(e.protocol));
        }
        Ok(e)
    }
}

/// A digest of the rule set (rule ids and definitions, in order): sensors and correlators
/// must run the same rules, since events name matched rules by index.
pub fn rules_digest(set: &RuleSet) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = foldhash::fast::FixedState::with_seed(0x0072_756c_6573).build_hasher();
    for r in &set.rules {
        h.write(r.id.as_str().as_bytes());
        h.write_u8(0);
        h.write(r.fingerprint.as_bytes());
        h.write_u8(0);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope() -> Envelope {
        let order = StreamOrder {
            at: Timestamp(5_000_000_000),
            ts: Timestamp(4_900_000_000),
            client: std::net::SocketAddr::from(([10, 0, 0, 1], 40000)),
            server: std::net::SocketAddr::from(([10, 0, 0, 2], 443)),
            seq: 3,
        };
        Envelope {
            version: VERSION,
            protocol: crate::detect::shard::PROTOCOL,
            rules: 42,
            sensor: "zone-a".into(),
            run: 7,
            batch: 9,
            partition: 1,
            partitions: 4,
            clock: order.at,
            finished: false,
            msgs: vec![
                Msg::Sweep {
                    order,
                    now: order.at,
                },
                Msg::Sweep {
                    order,
                    now: Timestamp(6_000_000_000),
                },
            ],
        }
    }

    #[test]
    fn envelopes_round_trip_and_broken_ones_are_refused_without_panic() {
        let bytes = envelope().encode().unwrap();
        let back = Envelope::decode(&bytes).unwrap();
        assert_eq!(back.sensor, "zone-a");
        assert_eq!(back.msgs.len(), 2);
        assert_eq!(back.msgs[1].key().0.seq, 3);
        // Every prefix and every flipped byte: an error or a decoded envelope, never a
        // panic or an unbounded allocation.
        for n in 0..bytes.len() {
            assert!(Envelope::decode(&bytes[..n]).is_err(), "prefix {n}");
        }
        for i in 0..bytes.len() {
            for bit in [0x01u8, 0x80] {
                let mut b = bytes.clone();
                b[i] ^= bit;
                let _ = Envelope::decode(&b);
            }
        }
        // A length prefix claiming far more than there is.
        let mut huge = bytes.clone();
        huge.extend_from_slice(&[0xff; 16]);
        let _ = Envelope::decode(&huge);
        // Another version or shard protocol is named, not misread.
        let mut other = envelope();
        other.version = VERSION + 1;
        let e = Envelope::decode(&other.encode().unwrap()).unwrap_err();
        assert_eq!(e.reason(), "version");
        let mut other = envelope();
        other.protocol += 1;
        let e = Envelope::decode(&other.encode().unwrap()).unwrap_err();
        assert_eq!(e.reason(), "protocol");
    }
}
