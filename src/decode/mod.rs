//! Decode: link layer to TCP segment.
//!
//! Input: one captured frame (link type, bytes, packet timestamp). Output: a borrowed
//! [`TcpSegment`] (or a reason it is not one). Owns the IPv4 fragment pool, which is bounded
//! in datagrams and bytes and expired on packet time. Handles VLAN/QinQ, PPPoE sessions
//! (also inside VLAN/QinQ), Linux SLL/SLL2, Cisco HDLC, raw IP, BSD null/loopback, IPv4 (fragments reassembled under a cap), IPv6 with extension
//! headers, and mirror tunnels (VXLAN, GENEVE, GRE incl. keyed, ERSPAN II/III), nested up to
//! a depth cap; the tunnel ids fold into [`TunnelId`], part of the flow key, so identical
//! inner addresses from two VPCs never mix. Parsing is lax for snaplen-cut frames: the
//! segment says how many payload bytes the wire carried beyond those captured. Bad
//! checksums are counted, never dropped (checksum offload leaves them unfilled). Malformed
//! input yields a [`DecodeError`] naming the layer; it never panics.

use std::net::SocketAddr;
use std::time::Duration;

/// Link types we decode, from the pcap `LINKTYPE_*` registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinkType {
    Ethernet,
    /// Linux cooked capture v1 (`any` device).
    LinuxSll,
    /// Linux cooked capture v2.
    LinuxSll2,
    /// Raw IPv4 or IPv6, version from the first nibble.
    RawIp,
    /// BSD loopback: 4-byte address family in host byte order.
    Null,
    /// OpenBSD loopback: 4-byte address family in network byte order.
    Loop,
    /// Cisco HDLC (`LINKTYPE_C_HDLC`): address, control, then an ethertype.
    CiscoHdlc,
}

impl LinkType {
    /// Every link type decoded.
    pub const ALL: [LinkType; 7] = [
        LinkType::Ethernet,
        LinkType::LinuxSll,
        LinkType::LinuxSll2,
        LinkType::RawIp,
        LinkType::Null,
        LinkType::Loop,
        LinkType::CiscoHdlc,
    ];

    /// Maps a pcap/pcapng link type number; `None` for unsupported types.
    pub fn from_linktype(n: u32) -> Option<Self> {
        match n {
            1 => Some(LinkType::Ethernet),
            113 => Some(LinkType::LinuxSll),
            276 => Some(LinkType::LinuxSll2),
            12 | 14 | 101 | 228 | 229 => Some(LinkType::RawIp),
            0 => Some(LinkType::Null),
            108 => Some(LinkType::Loop),
            104 => Some(LinkType::CiscoHdlc),
            _ => None,
        }
    }
}

/// Decoder settings (config section `[decode]`).
#[derive(Clone, Debug)]
pub struct DecodeConfig {
    /// UDP destination ports carrying VXLAN.
    pub vxlan_ports: Vec<u16>,
    /// UDP destination ports carrying GENEVE.
    pub geneve_ports: Vec<u16>,
    /// Maximum nesting of tunnels; deeper packets are an error (`tunnel` layer).
    pub max_tunnel_depth: usize,
    /// IPv4 datagrams being reassembled at once; new fragments past it are dropped (counted).
    pub frag_max_datagrams: usize,
    /// Bytes held by the fragment pool at once.
    pub frag_max_bytes: usize,
    /// A datagram whose fragments do not complete within this packet time is discarded.
    pub frag_timeout: Duration,
    /// Which checksums to verify (mismatches are only counted, never dropped).
    pub checksums: Checksums,
}

/// `[decode] verify_checksums`: `true`, `false` or `"auto"` (the default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Checksums {
    /// IPv4 header and TCP checksums, every packet.
    Always,
    /// None.
    Never,
    /// IPv4 header checksums always; TCP checksums of the first [`CHECKSUM_PROBE`]
    /// segments, and of the rest only if fewer than a tenth of those failed. A capture
    /// made on a host that offloads checksums to its NIC (loopback, a container, the API
    /// server itself) fails nearly all of them, and verifying every segment would only
    /// count that again at the cost of a pass over every payload; a mirror port's packets
    /// crossed a wire and carry real checksums. The way Suricata's `checksum-validation:
    /// auto` decides.
    #[default]
    Auto,
}

/// TCP segments whose checksums [`Checksums::Auto`] verifies before deciding.
pub const CHECKSUM_PROBE: u32 = 1000;

impl Default for DecodeConfig {
    fn default() -> Self {
        DecodeConfig {
            vxlan_ports: vec![4789],
            geneve_ports: vec![6081],
            max_tunnel_depth: 4,
            frag_max_datagrams: 1024,
            frag_max_bytes: 4 << 20,
            frag_timeout: Duration::from_secs(30),
            checksums: Checksums::Auto,
        }
    }
}

/// Folded identity of the tunnels a packet arrived in (0: not tunnelled).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TunnelId(pub u64);

/// TCP flag bits as on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;

    pub fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }
}

/// One TCP segment, borrowing its payload from the frame (or the fragment pool).
#[derive(Clone, Copy, Debug)]
pub struct TcpSegment<'a> {
    pub tunnel: TunnelId,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub ack: u32,
    pub flags: TcpFlags,
    pub window: u16,
    /// Captured payload bytes.
    pub payload: &'a [u8],
    /// Payload length on the wire (from the IP length); larger than `payload.len()` when
    /// the capture's snaplen cut the frame.
    pub wire_payload_len: u32,
}

/// What a frame turned out to be.
#[derive(Debug)]
pub enum Decoded<'a> {
    Tcp(TcpSegment<'a>),
    /// A well-formed packet that is not TCP (UDP, ICMP, ARP, ...): counted, ignored.
    NotTcp,
    /// An IPv4 fragment held in the pool until its datagram completes.
    FragmentHeld,
}

/// The protocol layer at which decoding failed (a bounded metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Layer {
    Link,
    Vlan,
    /// PPPoE session header or the PPP protocol field after it.
    Pppoe,
    Ipv4,
    Ipv6,
    Fragment,
    Tcp,
    Udp,
    Tunnel,
}

impl Layer {
    /// Every layer: the label values of the decode error counters, exported from zero.
    pub const ALL: [Layer; 9] = [
        Layer::Link,
        Layer::Vlan,
        Layer::Pppoe,
        Layer::Ipv4,
        Layer::Ipv6,
        Layer::Fragment,
        Layer::Tcp,
        Layer::Udp,
        Layer::Tunnel,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Link => "link",
            Layer::Vlan => "vlan",
            Layer::Pppoe => "pppoe",
            Layer::Ipv4 => "ipv4",
            Layer::Ipv6 => "ipv6",
            Layer::Fragment => "fragment",
            Layer::Tcp => "tcp",
            Layer::Udp => "udp",
            Layer::Tunnel => "tunnel",
        }
    }
}

/// Why a frame could not be decoded. Plain data; never stops the pipeline.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("{layer:?} header truncated at offset {offset}: need {need} bytes, have {have}")]
    Truncated {
        layer: Layer,
        offset: usize,
        need: usize,
        have: usize,
    },
    #[error("{layer:?} header malformed: {reason}")]
    Malformed { layer: Layer, reason: &'static str },
    #[error("tunnels nested deeper than {max}")]
    TunnelTooDeep { max: usize },
}

impl DecodeError {
    pub fn layer(&self) -> Layer {
        match self {
            DecodeError::Truncated { layer, .. } | DecodeError::Malformed { layer, .. } => *layer,
            DecodeError::TunnelTooDeep { .. } => Layer::Tunnel,
        }
    }
}

mod packet;

pub use packet::{DecodeStats, Decoder};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_list_is_complete_and_labels_distinct() {
        let labels: std::collections::BTreeSet<&str> =
            Layer::ALL.iter().map(|l| l.as_str()).collect();
        assert_eq!(labels.len(), Layer::ALL.len());
        // A new variant missing from ALL fails to compile here (exhaustive match).
        for l in Layer::ALL {
            match l {
                Layer::Link
                | Layer::Vlan
                | Layer::Pppoe
                | Layer::Ipv4
                | Layer::Ipv6
                | Layer::Fragment
                | Layer::Tcp
                | Layer::Udp
                | Layer::Tunnel => {}
            }
        }
        assert!(labels.contains("pppoe"));
    }
}
