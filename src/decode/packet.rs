//! The frame walker: link layer, VLANs, tunnels and IP down to a TCP segment, and the IPv4
//! fragment pool. IP, IPv6 extension headers and TCP are sliced by etherparse (lax, so a
//! snaplen-cut frame still yields its headers); link headers (Cisco HDLC), PPPoE sessions
//! (RFC 2516, with PPP's protocol field, RFC 1661; etherparse 0.21 has no PPPoE) and tunnel
//! headers (VXLAN RFC 7348, GENEVE RFC 8926, GRE RFC 2784/2890, ERSPAN II/III) are a few
//! fixed fields each and are read here with bounds checks on every access.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};

use etherparse::{LaxIpSlice, LenSource, TcpSlice};

use super::{
    CHECKSUM_PROBE, Checksums, DecodeConfig, DecodeError, Decoded, Layer, LinkType, TcpFlags,
    TcpSegment, TunnelId,
};
use crate::capture::Timestamp;

/// Decoder counters (summary JSON and metrics).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct DecodeStats {
    pub frames: u64,
    pub tcp_segments: u64,
    pub not_tcp: u64,
    pub errors_by_layer: BTreeMap<&'static str, u64>,
    pub vlan_tags: u64,
    /// Frames carried in a PPPoE session (any PPP protocol).
    pub pppoe_sessions: u64,
    pub tunnels_vxlan: u64,
    pub tunnels_geneve: u64,
    pub tunnels_gre: u64,
    pub tunnels_erspan2: u64,
    pub tunnels_erspan3: u64,
    pub ipv6_ext_headers: u64,
    pub ipv4_fragments: u64,
    pub ipv4_reassembled: u64,
    pub frag_dropped_cap: u64,
    pub frag_expired: u64,
    pub frag_overlaps: u64,
    /// Fragmented datagrams that complete but carry a tunnel (not followed).
    /// Fragmented datagrams found inside a reassembled fragmented carrier (not followed).
    pub frag_nested_unsupported: u64,
    /// Fragments of protocols other than TCP (not held).
    pub frag_not_tcp: u64,
    /// Fragments held in the pool awaiting the rest of their datagram.
    pub fragments_held: u64,
    pub ipv6_fragments: u64,
    pub bad_ipv4_checksum: u64,
    pub bad_tcp_checksum: u64,
    /// TCP segments whose checksum was not verified: `verify_checksums = false`, or
    /// `"auto"` found the capture's checksums offloaded (left unfilled by the sender).
    pub tcp_checksums_unverified: u64,
    pub snaplen_cut: u64,
}

impl DecodeStats {
    pub fn merge(&mut self, o: &DecodeStats) {
        self.frames += o.frames;
        self.tcp_segments += o.tcp_segments;
        self.not_tcp += o.not_tcp;
        for (k, v) in &o.errors_by_layer {
            *self.errors_by_layer.entry(k).or_default() += v;
        }
        self.vlan_tags += o.vlan_tags;
        self.pppoe_sessions += o.pppoe_sessions;
        self.tunnels_vxlan += o.tunnels_vxlan;
        self.tunnels_geneve += o.tunnels_geneve;
        self.tunnels_gre += o.tunnels_gre;
        self.tunnels_erspan2 += o.tunnels_erspan2;
        self.tunnels_erspan3 += o.tunnels_erspan3;
        self.ipv6_ext_headers += o.ipv6_ext_headers;
        self.ipv4_fragments += o.ipv4_fragments;
        self.ipv4_reassembled += o.ipv4_reassembled;
        self.frag_dropped_cap += o.frag_dropped_cap;
        self.frag_expired += o.frag_expired;
        self.frag_overlaps += o.frag_overlaps;
        self.frag_nested_unsupported += o.frag_nested_unsupported;
        self.frag_not_tcp += o.frag_not_tcp;
        self.fragments_held += o.fragments_held;
        self.ipv6_fragments += o.ipv6_fragments;
        self.bad_ipv4_checksum += o.bad_ipv4_checksum;
        self.bad_tcp_checksum += o.bad_tcp_checksum;
        self.tcp_checksums_unverified += o.tcp_checksums_unverified;
        self.snaplen_cut += o.snaplen_cut;
    }
}

const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const ETH_TEB: u16 = 0x6558;
const ETH_ERSPAN2: u16 = 0x88be;
const ETH_ERSPAN3: u16 = 0x22eb;
const ETH_PPPOE_SESSION: u16 = 0x8864;
const PPP_IPV4: u16 = 0x0021;
const PPP_IPV6: u16 = 0x0057;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_GRE: u8 = 47;
/// More VLAN tags than this is not a real frame.
const MAX_VLAN_TAGS: usize = 4;

#[derive(Clone, Copy)]
#[repr(u8)]
enum TunnelKind {
    Vxlan = 1,
    Geneve = 2,
    Gre = 3,
    Erspan2 = 4,
    Erspan3 = 5,
}

fn fold(id: TunnelId, kind: TunnelKind, vni: u32) -> TunnelId {
    TunnelId(id.0.rotate_left(17) ^ (((kind as u64) << 56) | u64::from(vni)) | 1 << 63)
}

fn be16(d: &[u8], at: usize, layer: Layer) -> Result<u16, DecodeError> {
    match d.get(at..at + 2) {
        Some(b) => Ok(u16::from_be_bytes([b[0], b[1]])),
        None => Err(DecodeError::Truncated {
            layer,
            offset: at,
            need: at + 2,
            have: d.len(),
        }),
    }
}

fn be32(d: &[u8], at: usize, layer: Layer) -> Result<u32, DecodeError> {
    match d.get(at..at + 4) {
        Some(b) => Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        None => Err(DecodeError::Truncated {
            layer,
            offset: at,
            need: at + 4,
            have: d.len(),
        }),
    }
}

/// The first `n` bytes of `d`: a header of that size, or truncated.
fn head(d: &[u8], n: usize, layer: Layer) -> Result<&[u8], DecodeError> {
    d.get(..n).ok_or(DecodeError::Truncated {
        layer,
        offset: 0,
        need: n,
        have: d.len(),
    })
}

fn tail(d: &[u8], from: usize, layer: Layer) -> Result<&[u8], DecodeError> {
    d.get(from..).ok_or(DecodeError::Truncated {
        layer,
        offset: from,
        need: from,
        have: d.len(),
    })
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct FragKey {
    tunnel: TunnelId,
    src: [u8; 4],
    dst: [u8; 4],
    id: u16,
    proto: u8,
}

/// What walking a frame produced: a result borrowing the frame, or a completed IPv4
/// datagram waiting in the walker's `done` buffer (kept apart so the walk never borrows
/// the decoder for the frame's lifetime).
enum Step<'a> {
    Done(Decoded<'a>),
    Reassembled {
        src: IpAddr,
        dst: IpAddr,
        tunnel: TunnelId,
        proto: u8,
        depth: usize,
    },
}

struct Datagram {
    first_ts: Timestamp,
    data: Vec<u8>,
    /// Covered byte ranges, sorted and merged.
    covered: Vec<(usize, usize)>,
    total: Option<usize>,
}

impl Datagram {
    fn complete(&self) -> bool {
        matches!((self.total, self.covered.as_slice()), (Some(t), [(0, e)]) if *e == t)
    }
}

/// Frame decoder with its IPv4 fragment pool; one per capture thread.
pub struct Decoder {
    walker: Walker,
    /// The last reassembled datagram, which a returned segment may borrow.
    reassembled: Vec<u8>,
}

/// Everything the walk over one frame needs besides the frame: settings, counters and the
/// fragment pool. Separate from [`Decoder::reassembled`] so a reassembled datagram can be
/// walked (tunnel carriers) while the walker stays mutable.
struct Walker {
    cfg: DecodeConfig,
    stats: DecodeStats,
    frags: HashMap<FragKey, Datagram, foldhash::fast::RandomState>,
    frag_bytes: usize,
    last_expiry: Timestamp,
    /// A datagram completed by the last fragment, handed to the decoder.
    done: Vec<u8>,
    tcp_checks: TcpChecks,
}

/// Whether TCP checksums are verified now: [`Checksums::Auto`] decides after a probe.
struct TcpChecks {
    verify: bool,
    /// `Auto` still probing: segments verified and failed so far.
    probe: Option<(u32, u32)>,
}

impl TcpChecks {
    fn new(mode: Checksums) -> TcpChecks {
        TcpChecks {
            verify: mode != Checksums::Never,
            probe: (mode == Checksums::Auto).then_some((0, 0)),
        }
    }

    /// Notes a verified segment; at the end of the probe, stops verifying if a tenth or
    /// more failed.
    fn note(&mut self, bad: bool) {
        let Some((n, failed)) = &mut self.probe else {
            return;
        };
        *n += 1;
        *failed += u32::from(bad);
        if *n < CHECKSUM_PROBE {
            return;
        }
        if *failed * 10 >= *n {
            self.verify = false;
            tracing::info!(
                "TCP checksums fail on {failed} of the first {n} segments: checksum offload \
                 on the capturing host left them unfilled; they are no longer verified \
                 (decode.verify_checksums = true verifies every segment)"
            );
        }
        self.probe = None;
    }
}

impl Decoder {
    pub fn new(cfg: DecodeConfig) -> Self {
        Decoder {
            walker: Walker {
                tcp_checks: TcpChecks::new(cfg.checksums),
                cfg,
                stats: DecodeStats::default(),
                frags: HashMap::with_hasher(foldhash::fast::RandomState::default()),
                frag_bytes: 0,
                last_expiry: Timestamp::ZERO,
                done: Vec::new(),
            },
            reassembled: Vec::new(),
        }
    }

    pub fn stats(&self) -> &DecodeStats {
        &self.walker.stats
    }

    /// Decodes one frame captured on a `link` interface at packet time `ts`.
    pub fn decode<'a>(
        &'a mut self,
        link: LinkType,
        frame: &'a [u8],
        ts: Timestamp,
    ) -> Result<Decoded<'a>, DecodeError> {
        let Decoder {
            walker,
            reassembled,
        } = self;
        walker.stats.frames += 1;
        let step = match walker.link(link, frame, ts) {
            Ok(Step::Reassembled {
                src,
                dst,
                tunnel,
                proto,
                depth,
            }) => {
                std::mem::swap(reassembled, &mut walker.done);
                let data: &'a Vec<u8> = reassembled;
                match proto {
                    IPPROTO_TCP => {
                        let (stats, checks) = (&mut walker.stats, &mut walker.tcp_checks);
                        tcp_segment(stats, checks, data, Some(data.len()), src, dst, tunnel)
                            .map(Step::Done)
                    }
                    IPPROTO_UDP => walker.udp(data, tunnel, depth, ts),
                    IPPROTO_GRE => walker.gre(data, tunnel, depth, ts),
                    _ => Ok(Step::Done(Decoded::NotTcp)),
                }
            }
            other => other,
        };
        let r = match step {
            Ok(Step::Done(d)) => Ok(d),
            // A fragmented datagram inside a reassembled fragmented carrier: one level of
            // reassembly is followed, a second is counted and dropped.
            Ok(Step::Reassembled { .. }) => {
                walker.stats.frag_nested_unsupported += 1;
                Ok(Decoded::NotTcp)
            }
            Err(e) => Err(e),
        };
        let stats = &mut walker.stats;
        match &r {
            Ok(Decoded::Tcp(_)) => stats.tcp_segments += 1,
            Ok(Decoded::NotTcp) => stats.not_tcp += 1,
            Ok(Decoded::FragmentHeld) => stats.fragments_held += 1,
            Err(e) => *stats.errors_by_layer.entry(e.layer().as_str()).or_default() += 1,
        }
        r
    }
}

impl Walker {
    fn link<'a>(
        &mut self,
        link: LinkType,
        d: &'a [u8],
        ts: Timestamp,
    ) -> Result<Step<'a>, DecodeError> {
        let t = TunnelId(0);
        match link {
            LinkType::Ethernet => self.ethernet(d, t, 0, ts),
            LinkType::LinuxSll => {
                let proto = be16(d, 14, Layer::Link)?;
                self.ethertype(proto, tail(d, 16, Layer::Link)?, t, 0, ts)
            }
            LinkType::LinuxSll2 => {
                let proto = be16(d, 0, Layer::Link)?;
                head(d, 20, Layer::Link)?;
                self.ethertype(proto, tail(d, 20, Layer::Link)?, t, 0, ts)
            }
            LinkType::RawIp => self.ip(d, t, 0, ts),
            LinkType::Null | LinkType::Loop => {
                let b = head(d, 4, Layer::Link)?;
                let be = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                let le = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                // AF_INET is 2 everywhere; AF_INET6 is 24 (NetBSD/OpenBSD), 28 (FreeBSD),
                // 30 (macOS). Null uses the capturing host's byte order, so accept both.
                let fam = if link == LinkType::Loop {
                    be
                } else if matches!(le, 2 | 24 | 28 | 30) {
                    le
                } else {
                    be
                };
                match fam {
                    2 | 24 | 28 | 30 => self.ip(tail(d, 4, Layer::Link)?, t, 0, ts),
                    _ => Ok(Step::Done(Decoded::NotTcp)),
                }
            }
            LinkType::CiscoHdlc => {
                // Address 0x0F (unicast) or 0x8F (broadcast), control 0, then an ethertype
                // (IP, or SLARP keepalives and CDP, which are not TCP).
                let proto = be16(d, 2, Layer::Link)?;
                if !matches!(d.first(), Some(0x0f | 0x8f)) {
                    return Err(DecodeError::Malformed {
                        layer: Layer::Link,
                        reason: "Cisco HDLC address is not 0x0F or 0x8F",
                    });
                }
                self.ethertype(proto, tail(d, 4, Layer::Link)?, t, 0, ts)
            }
        }
    }

    fn ethernet<'a>(
        &mut self,
        d: &'a [u8],
        t: TunnelId,
        depth: usize,
        ts: Timestamp,
    ) -> Result<Step<'a>, DecodeError> {
        let et = be16(d, 12, Layer::Link)?;
        self.ethertype(et, tail(d, 14, Layer::Link)?, t, depth, ts)
    }

    fn ethertype<'a>(
        &mut self,
        mut et: u16,
        mut d: &'a [u8],
        t: TunnelId,
        depth: usize,
        ts: Timestamp,
    ) -> Result<Step<'a>, DecodeError> {
        let mut tags = 0;
        while matches!(et, 0x8100 | 0x88a8 | 0x9100) {
            tags += 1;
            if tags > MAX_VLAN_TAGS {
                return Err(DecodeError::Malformed {
                    layer: Layer::Vlan,
                    reason: "more than 4 VLAN tags",
                });
            }
            self.stats.vlan_tags += 1;
            et = be16(d, 2, Layer::Vlan)?;
            d = tail(d, 4, Layer::Vlan)?;
        }
        match et {
            ETH_IPV4 | ETH_IPV6 => self.ip(d, t, depth, ts),
            ETH_PPPOE_SESSION => self.pppoe(d, t, depth, ts),
            _ => Ok(Step::Done(Decoded::NotTcp)),
        }
    }

    /// A PPPoE session frame (RFC 2516): version/type 0x11, code 0, session id, length,
    /// then PPP's protocol field (two bytes; one when protocol-field compression sent an
    /// odd first byte, RFC 1661 6.5). IPv4 and IPv6 are followed; LCP, IPCP and the rest
    /// are not TCP. The session id is not part of the flow key (like a VLAN tag: both
    /// directions of a subscriber's connection carry the same one). Discovery frames
    /// (0x8863) never reach here: they carry no data.
    fn pppoe<'a>(
        &mut self,
        d: &'a [u8],
        t: TunnelId,
        depth: usize,
        ts: Timestamp,
    ) -> Result<Step<'a>, DecodeError> {
        let h = head(d, 6, Layer::Pppoe)?;
        if h[0] != 0x11 || h[1] != 0 {
            return Err(DecodeError::Malformed {
                layer: Layer::Pppoe,
                reason: "PPPoE session header is not version 1, type 1, code 0",
            });
        }
        // The length counts the PPP frame; whatever follows it is Ethernet padding. A
        // length past the captured bytes is a snaplen cut: IP's own length says the rest.
        let len = usize::from(u16::from_be_bytes([h[4], h[5]]));
        let ppp = tail(d, 6, Layer::Pppoe)?;
        let ppp = ppp.get(..len).unwrap_or(ppp);
        let (proto, at) = match ppp.first() {
            Some(b) if b & 1 == 1 => (u16::from(*b), 1),
            _ => (be16(ppp, 0, Layer::Pppoe)?, 2),
        };
        self.stats.pppoe_sessions += 1;
        match proto {
            PPP_IPV4 | PPP_IPV6 => self.ip(tail(ppp, at, Layer::Pppoe)?, t, depth, ts),
            _ => Ok(Step::Done(Decoded::NotTcp)),
        }
    }

    fn ip<'a>(
        &mut self,
        d: &'a [u8],
        t: TunnelId,
        depth: usize,
        ts: Timestamp,
    ) -> Result<Step<'a>, DecodeError> {
        let layer = match d.first().map(|b| b >> 4) {
            Some(6) => Layer::Ipv6,
            _ => Layer::Ipv4,
        };
        let (ip, ext_err) = LaxIpSlice::from_slice(d).map_err(|e| match e {
            etherparse::err::ip::LaxHeaderSliceError::Len(l) => DecodeError::Truncated {
                layer,
                offset: 0,
                need: l.required_len,
                have: l.len,
            },
            etherparse::err::ip::LaxHeaderSliceError::Content(_) => DecodeError::Malformed {
                layer,
                reason: "IP header invalid",
            },
        })?;
        if ext_err.is_some() {
            // Lax slicing stops at a broken extension header; what follows is unknown.
            return Err(DecodeError::Malformed {
                layer: Layer::Ipv6,
                reason: "extension header invalid",
            });
        }
        let src = ip.source_addr();
        let dst = ip.destination_addr();
        let pl = ip.payload();
        let proto = pl.ip_number.0;
        // The IP payload length on the wire, when the header says it.
        let wire_ip_payload = match &ip {
            LaxIpSlice::Ipv4(v4) => {
                let h = v4.header();
                // Summed over the header's bytes as sent, its checksum field included: a
                // correct header sums to all ones. (Rebuilding the header to recompute the
                // field cost a copy of it per packet, and dropped the reserved flag bit.)
                if self.cfg.checksums != Checksums::Never
                    && etherparse::checksum::Sum16BitWords::new()
                        .add_slice(h.slice())
                        .ones_complement()
                        != 0
                {
                    self.stats.bad_ipv4_checksum += 1;
                }
                if v4.is_payload_fragmented() {
                    self.stats.ipv4_fragments += 1;
                    if !matches!(proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_GRE) {
                        // Only TCP and possible tunnel carriers (VXLAN/GENEVE over UDP,
                        // GRE/ERSPAN, fragmented when the mirror's MTU is too small) are
                        // followed: holding others would crowd them out of the pool.
                        self.stats.frag_not_tcp += 1;
                        return Ok(Step::Done(Decoded::NotTcp));
                    }
                    let key = FragKey {
                        tunnel: t,
                        src: h.source(),
                        dst: h.destination(),
                        id: h.identification(),
                        proto,
                    };
                    let offset = usize::from(h.fragments_offset().value()) * 8;
                    if pl.incomplete {
                        return Err(DecodeError::Malformed {
                            layer: Layer::Fragment,
                            reason: "fragment cut by snaplen",
                        });
                    }
                    return self.fragment(key, offset, h.more_fragments(), pl.payload, depth, ts);
                }
                (usize::from(h.total_len())).checked_sub(usize::from(h.ihl()) * 4)
            }
            LaxIpSlice::Ipv6(v6) => {
                let ext = v6.extensions().slice().len();
                if ext > 0 {
                    self.stats.ipv6_ext_headers += 1;
                }
                if v6.is_payload_fragmented() {
                    self.stats.ipv6_fragments += 1;
                    return Ok(Step::Done(Decoded::NotTcp));
                }
                match v6.header().payload_length() {
                    0 => None,
                    n => usize::from(n).checked_sub(ext),
                }
            }
        };
        let wire_ip_payload = match pl.len_source {
            LenSource::Slice if !pl.incomplete => Some(pl.payload.len()),
            _ => wire_ip_payload,
        };
        match proto {
            IPPROTO_TCP => tcp_segment(
                &mut self.stats,
                &mut self.tcp_checks,
                pl.payload,
                wire_ip_payload,
                src,
                dst,
                t,
            )
            .map(Step::Done),
            IPPROTO_UDP => {
                if pl.incomplete && pl.payload.len() < 8 {
                    return Err(DecodeError::Truncated {
                        layer: Layer::Udp,
                        offset: 0,
                        need: 8,
                        have: pl.payload.len(),
                    });
                }
                self.udp(pl.payload, t, depth, ts)
            }
            IPPROTO_GRE => self.gre(pl.payload, t, depth, ts),
            _ => Ok(Step::Done(Decoded::NotTcp)),
        }
    }
}

/// Slices the TCP header and payload out of an IP payload.
fn tcp_segment<'a>(
    stats: &mut DecodeStats,
    checks: &mut TcpChecks,
    d: &'a [u8],
    wire_ip_payload: Option<usize>,
    src: IpAddr,
    dst: IpAddr,
    tunnel: TunnelId,
) -> Result<Decoded<'a>, DecodeError> {
    let tcp = TcpSlice::from_slice(d).map_err(|e| match e {
        etherparse::err::tcp::HeaderSliceError::Len(l) => DecodeError::Truncated {
            layer: Layer::Tcp,
            offset: 0,
            need: l.required_len,
            have: l.len,
        },
        etherparse::err::tcp::HeaderSliceError::Content(_) => DecodeError::Malformed {
            layer: Layer::Tcp,
            reason: "TCP header invalid",
        },
    })?;
    let hl = usize::from(tcp.data_offset()) * 4;
    let captured = tcp.payload();
    let wire = wire_ip_payload.map_or(captured.len(), |w| w.saturating_sub(hl));
    let payload = &captured[..captured.len().min(wire)];
    if wire > payload.len() {
        stats.snaplen_cut += 1;
    } else if checks.verify {
        let sum = match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => tcp.calc_checksum_ipv4(s.octets(), d.octets()).ok(),
            (IpAddr::V6(s), IpAddr::V6(d)) => tcp.calc_checksum_ipv6(s.octets(), d.octets()).ok(),
            _ => None,
        };
        let bad = sum.is_some_and(|s| s != tcp.checksum());
        if bad {
            stats.bad_tcp_checksum += 1;
        }
        checks.note(bad);
    } else {
        stats.tcp_checksums_unverified += 1;
    }
    let mut flags = 0;
    for (on, bit) in [
        (tcp.fin(), TcpFlags::FIN),
        (tcp.syn(), TcpFlags::SYN),
        (tcp.rst(), TcpFlags::RST),
        (tcp.psh(), TcpFlags::PSH),
        (tcp.ack(), TcpFlags::ACK),
        (tcp.urg(), TcpFlags::URG),
    ] {
        if on {
            flags |= bit;
        }
    }
    Ok(Decoded::Tcp(TcpSegment {
        tunnel,
        src: SocketAddr::new(src, tcp.source_port()),
        dst: SocketAddr::new(dst, tcp.destination_port()),
        seq: tcp.sequence_number(),
        ack: tcp.acknowledgment_number(),
        flags: TcpFlags(flags),
        window: tcp.window_size(),
        payload,
        wire_payload_len: u32::try_from(wire).unwrap_or(u32::MAX),
    }))
}

impl Walker {
    fn enter(&self, depth: usize) -> Result<usize, DecodeError> {
        if depth >= self.cfg.max_tunnel_depth {
            return Err(DecodeError::TunnelTooDeep {
                max: self.cfg.max_tunnel_depth,
            });
        }
        Ok(depth + 1)
    }

    fn udp<'a>(
        &mut self,
        d: &'a [u8],
        t: TunnelId,
        depth: usize,
        ts: Timestamp,
    ) -> Result<Step<'a>, DecodeError> {
        let dport = be16(d, 2, Layer::Udp)?;
        let body = tail(d, 8, Layer::Udp)?;
        if self.cfg.vxlan_ports.contains(&dport) {
            let depth = self.enter(depth)?;
            let flags = *body.first().ok_or(DecodeError::Truncated {
                layer: Layer::Tunnel,
                offset: 0,
                need: 8,
                have: 0,
            })?;
            if flags & 0x08 == 0 {
                return Err(DecodeError::Malformed {
                    layer: Layer::Tunnel,
                    reason: "VXLAN header without the I flag",
                });
            }
            let vni = be32(body, 4, Layer::Tunnel)? >> 8;
            self.stats.tunnels_vxlan += 1;
            return self.ethernet(
                tail(body, 8, Layer::Tunnel)?,
                fold(t, TunnelKind::Vxlan, vni),
                depth,
                ts,
            );
        }
        if self.cfg.geneve_ports.contains(&dport) {
            let depth = self.enter(depth)?;
            let b0 = *body.first().ok_or(DecodeError::Truncated {
                layer: Layer::Tunnel,
                offset: 0,
                need: 8,
                have: 0,
            })?;
            if b0 >> 6 != 0 {
                return Err(DecodeError::Malformed {
                    layer: Layer::Tunnel,
                    reason: "GENEVE version is not 0",
                });
            }
            let opt_len = usize::from(b0 & 0x3f) * 4;
            let proto = be16(body, 2, Layer::Tunnel)?;
            let vni = be32(body, 4, Layer::Tunnel)? >> 8;
            let inner = tail(body, 8 + opt_len, Layer::Tunnel)?;
            self.stats.tunnels_geneve += 1;
            let t = fold(t, TunnelKind::Geneve, vni);
            return match proto {
                ETH_TEB => self.ethernet(inner, t, depth, ts),
                ETH_IPV4 | ETH_IPV6 => self.ip(inner, t, depth, ts),
                _ => Ok(Step::Done(Decoded::NotTcp)),
            };
        }
        Ok(Step::Done(Decoded::NotTcp))
    }

    fn gre<'a>(
        &mut self,
        d: &'a [u8],
        t: TunnelId,
        depth: usize,
        ts: Timestamp,
    ) -> Result<Step<'a>, DecodeError> {
        let flags = be16(d, 0, Layer::Tunnel)?;
        let proto = be16(d, 2, Layer::Tunnel)?;
        if flags & 0x7 != 0 {
            // Version 1 is PPTP's enhanced GRE: not a mirror encapsulation.
            return Ok(Step::Done(Decoded::NotTcp));
        }
        let depth = self.enter(depth)?;
        let (c, k, s) = (
            flags & 0x8000 != 0,
            flags & 0x2000 != 0,
            flags & 0x1000 != 0,
        );
        let mut at = 4;
        if c {
            at += 4;
        }
        let key = if k {
            let key = be32(d, at, Layer::Tunnel)?;
            at += 4;
            key
        } else {
            0
        };
        if s {
            at += 4;
        }
        let body = tail(d, at, Layer::Tunnel)?;
        match proto {
            ETH_ERSPAN2 if s => {
                let ver = body.first().map(|b| b >> 4);
                if ver != Some(1) {
                    return Err(DecodeError::Malformed {
                        layer: Layer::Tunnel,
                        reason: "ERSPAN II version is not 1",
                    });
                }
                let session = u32::from(be16(body, 2, Layer::Tunnel)? & 0x3ff);
                self.stats.tunnels_erspan2 += 1;
                self.ethernet(
                    tail(body, 8, Layer::Tunnel)?,
                    fold(t, TunnelKind::Erspan2, session),
                    depth,
                    ts,
                )
            }
            // ERSPAN type I: no sequence number, no ERSPAN header.
            ETH_ERSPAN2 => {
                self.stats.tunnels_erspan2 += 1;
                self.ethernet(body, fold(t, TunnelKind::Erspan2, key), depth, ts)
            }
            ETH_ERSPAN3 => {
                let ver = body.first().map(|b| b >> 4);
                if ver != Some(2) {
                    return Err(DecodeError::Malformed {
                        layer: Layer::Tunnel,
                        reason: "ERSPAN III version is not 2",
                    });
                }
                let session = u32::from(be16(body, 2, Layer::Tunnel)? & 0x3ff);
                let o = body.get(11).ok_or(DecodeError::Truncated {
                    layer: Layer::Tunnel,
                    offset: 11,
                    need: 12,
                    have: body.len(),
                })? & 1;
                let hdr = if o == 1 { 20 } else { 12 };
                self.stats.tunnels_erspan3 += 1;
                self.ethernet(
                    tail(body, hdr, Layer::Tunnel)?,
                    fold(t, TunnelKind::Erspan3, session),
                    depth,
                    ts,
                )
            }
            ETH_TEB => {
                self.stats.tunnels_gre += 1;
                self.ethernet(body, fold(t, TunnelKind::Gre, key), depth, ts)
            }
            ETH_IPV4 | ETH_IPV6 => {
                self.stats.tunnels_gre += 1;
                self.ip(body, fold(t, TunnelKind::Gre, key), depth, ts)
            }
            _ => Ok(Step::Done(Decoded::NotTcp)),
        }
    }

    /// Adds a fragment to the pool; when its datagram completes, decodes the TCP in it.
    fn fragment<'a>(
        &mut self,
        key: FragKey,
        offset: usize,
        more: bool,
        data: &'a [u8],
        depth: usize,
        ts: Timestamp,
    ) -> Result<Step<'a>, DecodeError> {
        self.expire(ts);
        let end = offset + data.len();
        if end > 65_535 {
            return Err(DecodeError::Malformed {
                layer: Layer::Fragment,
                reason: "fragment beyond 65535 bytes",
            });
        }
        // The buffer grows to the fragment's end, so that growth is what the cap must admit.
        let grows = end.saturating_sub(self.frags.get(&key).map_or(0, |d| d.data.len()));
        let pool_full =
            !self.frags.contains_key(&key) && self.frags.len() >= self.cfg.frag_max_datagrams;
        if pool_full || self.frag_bytes + grows > self.cfg.frag_max_bytes {
            self.stats.frag_dropped_cap += 1;
            return Err(DecodeError::Malformed {
                layer: Layer::Fragment,
                reason: "fragment pool full (ip_fragment_max_datagrams or ip_fragment_max_bytes)",
            });
        }
        let dg = self.frags.entry(key).or_insert_with(|| Datagram {
            first_ts: ts,
            data: Vec::new(),
            covered: Vec::new(),
            total: None,
        });
        if !more {
            dg.total = Some(end);
        }
        if dg.data.len() < end {
            self.frag_bytes += end - dg.data.len();
            dg.data.resize(end, 0);
        }
        // First data wins: copy only into the gaps between covered ranges.
        let mut cursor = offset;
        let mut overlapped = false;
        for &(s, e) in &dg.covered {
            if e <= cursor || s >= end {
                continue;
            }
            overlapped = true;
            if s > cursor {
                dg.data[cursor..s].copy_from_slice(&data[cursor - offset..s - offset]);
            }
            cursor = cursor.max(e);
        }
        if cursor < end {
            dg.data[cursor..end].copy_from_slice(&data[cursor - offset..]);
        }
        if overlapped {
            self.stats.frag_overlaps += 1;
        }
        dg.covered.push((offset, end));
        dg.covered.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(dg.covered.len());
        for &(s, e) in &dg.covered {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        dg.covered = merged;
        if !dg.complete() {
            return Ok(Step::Done(Decoded::FragmentHeld));
        }
        let Some(dg) = self.frags.remove(&key) else {
            return Ok(Step::Done(Decoded::FragmentHeld));
        };
        self.frag_bytes = self.frag_bytes.saturating_sub(dg.data.len());
        self.stats.ipv4_reassembled += 1;
        self.done = dg.data;
        Ok(Step::Reassembled {
            src: IpAddr::from(key.src),
            dst: IpAddr::from(key.dst),
            tunnel: key.tunnel,
            proto: key.proto,
            depth,
        })
    }

    /// Drops datagrams whose fragments did not all arrive in time (packet time).
    fn expire(&mut self, now: Timestamp) {
        if self.frags.is_empty()
            || now.saturating_since(self.last_expiry) < std::time::Duration::from_secs(1)
        {
            return;
        }
        self.last_expiry = now;
        let timeout = self.cfg.frag_timeout;
        let before = self.frags.len();
        let mut freed = 0;
        self.frags.retain(|_, d| {
            let keep = now.saturating_since(d.first_ts) < timeout;
            if !keep {
                freed += d.data.len();
            }
            keep
        });
        self.frag_bytes = self.frag_bytes.saturating_sub(freed);
        self.stats.frag_expired += (before - self.frags.len()) as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    const C4: [u8; 4] = [10, 0, 0, 1];
    const S4: [u8; 4] = [10, 0, 0, 2];

    /// An Ethernet/IPv4/TCP frame built by etherparse (an independent writer).
    fn eth_tcp(payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4(C4, S4, 64)
            .tcp(40000, 80, 7, 1000)
            .ack(9)
            .write(&mut v, payload)
            .expect("builds");
        v
    }

    fn ipv4_tcp(payload: &[u8]) -> Vec<u8> {
        eth_tcp(payload)[14..].to_vec()
    }

    fn tcp_of(
        d: &mut Decoder,
        link: LinkType,
        f: &[u8],
    ) -> (TunnelId, SocketAddr, SocketAddr, Vec<u8>, u32) {
        match d.decode(link, f, Timestamp(1)) {
            Ok(Decoded::Tcp(s)) => (
                s.tunnel,
                s.src,
                s.dst,
                s.payload.to_vec(),
                s.wire_payload_len,
            ),
            other => panic!("expected a TCP segment, got {other:?}"),
        }
    }

    fn dec() -> Decoder {
        Decoder::new(DecodeConfig::default())
    }

    #[test]
    fn ethernet_ipv4_tcp() {
        let mut d = dec();
        let (t, src, dst, p, wire) =
            tcp_of(&mut d, LinkType::Ethernet, &eth_tcp(b"GET / HTTP/1.1\r\n"));
        assert_eq!(t, TunnelId(0));
        assert_eq!(src, "10.0.0.1:40000".parse().expect("addr"));
        assert_eq!(dst, "10.0.0.2:80".parse().expect("addr"));
        assert_eq!(p, b"GET / HTTP/1.1\r\n");
        assert_eq!(wire, 16);
        assert_eq!(d.stats().tcp_segments, 1);
        assert_eq!(d.stats().bad_tcp_checksum, 0);
        assert_eq!(d.stats().bad_ipv4_checksum, 0);
    }

    #[test]
    fn ethernet_padding_is_not_payload() {
        let mut f = eth_tcp(b"");
        f.extend_from_slice(&[0u8; 6]);
        let (_, _, _, p, wire) = tcp_of(&mut dec(), LinkType::Ethernet, &f);
        assert!(p.is_empty());
        assert_eq!(wire, 0);
    }

    #[test]
    fn ipv6_with_hop_by_hop_extension() {
        let mut v = Vec::new();
        PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv6([0xfd; 16], [0xfe; 16], 64)
            .tcp(1234, 443, 1, 1000)
            .write(&mut v, b"abc")
            .expect("builds");
        // Splice a hop-by-hop header (8 bytes: next header TCP, len 0, PadN) after IPv6.
        let ip = 14;
        let mut f = v[..ip + 40].to_vec();
        f[ip + 6] = 0; // next header: hop-by-hop
        let plen = u16::from_be_bytes([f[ip + 4], f[ip + 5]]) + 8;
        f[ip + 4..ip + 6].copy_from_slice(&plen.to_be_bytes());
        f.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]);
        f.extend_from_slice(&v[ip + 40..]);
        let mut d = dec();
        let (_, src, _, p, _) = tcp_of(&mut d, LinkType::Ethernet, &f);
        assert_eq!(src.port(), 1234);
        assert_eq!(p, b"abc");
        assert_eq!(d.stats().ipv6_ext_headers, 1);
    }

    #[test]
    fn vlan_and_qinq() {
        let base = eth_tcp(b"x");
        for tags in [vec![0x8100u16], vec![0x88a8, 0x8100]] {
            let mut f = base[..12].to_vec();
            for tpid in &tags {
                f.extend_from_slice(&tpid.to_be_bytes());
                f.extend_from_slice(&[0x00, 0x64]);
            }
            f.extend_from_slice(&base[12..]);
            let mut d = dec();
            let (_, _, _, p, _) = tcp_of(&mut d, LinkType::Ethernet, &f);
            assert_eq!(p, b"x");
            assert_eq!(d.stats().vlan_tags, tags.len() as u64);
        }
    }

    #[test]
    fn linux_cooked_v1_and_v2_raw_ip_and_loopback() {
        let ip = ipv4_tcp(b"sll");
        let mut sll = vec![0, 0, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0, 0x08, 0x00];
        sll.extend_from_slice(&ip);
        let mut sll2 = vec![
            0x08, 0x00, 0, 0, 0, 0, 0, 1, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0,
        ];
        sll2.extend_from_slice(&ip);
        let mut null_le = 2u32.to_le_bytes().to_vec();
        null_le.extend_from_slice(&ip);
        let mut null_be = 2u32.to_be_bytes().to_vec();
        null_be.extend_from_slice(&ip);
        let mut lo = 2u32.to_be_bytes().to_vec();
        lo.extend_from_slice(&ip);
        for (link, f) in [
            (LinkType::LinuxSll, sll),
            (LinkType::LinuxSll2, sll2),
            (LinkType::RawIp, ip.clone()),
            (LinkType::Null, null_le),
            (LinkType::Null, null_be),
            (LinkType::Loop, lo),
        ] {
            let (_, _, _, p, _) = tcp_of(&mut dec(), link, &f);
            assert_eq!(p, b"sll", "{link:?}");
        }
    }

    /// Ethernet (with `tags` VLAN TPIDs) / PPPoE session / PPP `proto` / `inner`.
    fn pppoe_frame(tags: &[u16], proto: &[u8], inner: &[u8]) -> Vec<u8> {
        let mut f = vec![2u8; 6];
        f.extend_from_slice(&[1u8; 6]);
        for tpid in tags {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&[0x00, 0x2a]);
        }
        f.extend_from_slice(&[0x88, 0x64, 0x11, 0x00, 0x2a, 0x17]);
        let len = (proto.len() + inner.len()) as u16;
        f.extend_from_slice(&len.to_be_bytes());
        f.extend_from_slice(proto);
        f.extend_from_slice(inner);
        f
    }

    #[test]
    fn pppoe_session_ipv4_ipv6_and_inside_qinq() {
        let mut v6 = Vec::new();
        PacketBuilder::ipv6([0xfd; 16], [0xfe; 16], 64)
            .tcp(1234, 80, 1, 1000)
            .write(&mut v6, b"six")
            .expect("builds");
        let mut d = dec();
        let (t, src, _, p, _) = tcp_of(
            &mut d,
            LinkType::Ethernet,
            &pppoe_frame(&[], &[0x00, 0x21], &ipv4_tcp(b"ppp")),
        );
        assert_eq!((t, p.as_slice()), (TunnelId(0), b"ppp".as_slice()));
        assert_eq!(src, "10.0.0.1:40000".parse().expect("addr"));
        let (_, _, _, p, _) = tcp_of(
            &mut d,
            LinkType::Ethernet,
            &pppoe_frame(&[0x88a8, 0x8100], &[0x00, 0x57], &v6),
        );
        assert_eq!(p, b"six");
        // Protocol-field compression: one odd byte.
        let (_, _, _, p, _) = tcp_of(
            &mut d,
            LinkType::Ethernet,
            &pppoe_frame(&[0x8100], &[0x21], &ipv4_tcp(b"pfc")),
        );
        assert_eq!(p, b"pfc");
        // Ethernet padding after the PPPoE length is not payload.
        let mut padded = pppoe_frame(&[], &[0x00, 0x21], &ipv4_tcp(b""));
        padded.extend_from_slice(&[0u8; 6]);
        let (_, _, _, p, _) = tcp_of(&mut d, LinkType::Ethernet, &padded);
        assert!(p.is_empty());
        assert_eq!(d.stats().pppoe_sessions, 4);
        assert_eq!(d.stats().vlan_tags, 3);
        // LCP (0xc021) is PPP but not IP.
        let lcp = pppoe_frame(&[], &[0xc0, 0x21], &[9, 1, 0, 8, 0, 0, 0x12, 0x34]);
        assert!(matches!(
            d.decode(LinkType::Ethernet, &lcp, Timestamp(1)),
            Ok(Decoded::NotTcp)
        ));
        assert_eq!(d.stats().pppoe_sessions, 5);
    }

    #[test]
    fn pppoe_malformed_and_truncated_are_pppoe_errors() {
        let good = pppoe_frame(&[], &[0x00, 0x21], &ipv4_tcp(b"x"));
        let mut d = dec();
        let mut bad_version = good.clone();
        bad_version[14] = 0x21;
        let r = d.decode(LinkType::Ethernet, &bad_version, Timestamp(1));
        assert!(
            matches!(
                r,
                Err(DecodeError::Malformed {
                    layer: Layer::Pppoe,
                    ..
                })
            ),
            "{r:?}"
        );
        for cut in [14 + 3, 14 + 6, 14 + 7] {
            let r = d.decode(LinkType::Ethernet, &good[..cut], Timestamp(1));
            assert!(
                matches!(
                    r,
                    Err(DecodeError::Truncated {
                        layer: Layer::Pppoe,
                        ..
                    })
                ),
                "cut at {cut}: {r:?}"
            );
        }
        assert_eq!(d.stats().errors_by_layer.get("pppoe"), Some(&4));
    }

    #[test]
    fn cisco_hdlc_ipv4_and_keepalives() {
        let mut f = vec![0x0f, 0x00, 0x08, 0x00];
        f.extend_from_slice(&ipv4_tcp(b"hdlc"));
        let mut d = dec();
        let (t, _, dst, p, _) = tcp_of(&mut d, LinkType::CiscoHdlc, &f);
        assert_eq!((t, p.as_slice()), (TunnelId(0), b"hdlc".as_slice()));
        assert_eq!(dst, "10.0.0.2:80".parse().expect("addr"));
        // SLARP keepalive (0x8035), broadcast address: not TCP.
        let slarp = [0x8f, 0x00, 0x80, 0x35, 0, 0, 0, 2, 0, 0, 0, 1];
        assert!(matches!(
            d.decode(LinkType::CiscoHdlc, &slarp, Timestamp(1)),
            Ok(Decoded::NotTcp)
        ));
        f[0] = 0xff;
        assert!(matches!(
            d.decode(LinkType::CiscoHdlc, &f, Timestamp(1)),
            Err(DecodeError::Malformed {
                layer: Layer::Link,
                ..
            })
        ));
        assert!(matches!(
            d.decode(LinkType::CiscoHdlc, &f[..3], Timestamp(1)),
            Err(DecodeError::Truncated {
                layer: Layer::Link,
                ..
            })
        ));
        assert_eq!(LinkType::from_linktype(104), Some(LinkType::CiscoHdlc));
    }

    fn udp(dport: u16, body: &[u8], outer_src: [u8; 4]) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ethernet2([9; 6], [8; 6])
            .ipv4(outer_src, [192, 168, 0, 9], 64)
            .udp(55555, dport)
            .write(&mut v, body)
            .expect("builds");
        v
    }

    fn vxlan(vni: u32, inner: &[u8]) -> Vec<u8> {
        let mut b = vec![0x08, 0, 0, 0];
        b.extend_from_slice(&(vni << 8).to_be_bytes());
        b.extend_from_slice(inner);
        b
    }

    #[test]
    fn vxlan_vni_separates_identical_inner_flows() {
        let inner = eth_tcp(b"hello");
        let mut d = dec();
        let (t1, s1, _, p, _) = tcp_of(
            &mut d,
            LinkType::Ethernet,
            &udp(4789, &vxlan(100, &inner), [1, 1, 1, 1]),
        );
        let (t2, s2, _, _, _) = tcp_of(
            &mut d,
            LinkType::Ethernet,
            &udp(4789, &vxlan(200, &inner), [1, 1, 1, 1]),
        );
        // Same VNI from another outer address (the other direction's mirror source).
        let (t3, _, _, _, _) = tcp_of(
            &mut d,
            LinkType::Ethernet,
            &udp(4789, &vxlan(100, &inner), [2, 2, 2, 2]),
        );
        assert_eq!(p, b"hello");
        assert_eq!(s1, s2);
        assert_ne!(t1, t2);
        assert_ne!(t1, TunnelId(0));
        assert_eq!(t1, t3);
        assert_eq!(d.stats().tunnels_vxlan, 3);
        // Without the I flag it is malformed, counted at the tunnel layer.
        let mut bad = vxlan(100, &inner);
        bad[0] = 0;
        assert!(
            d.decode(
                LinkType::Ethernet,
                &udp(4789, &bad, [1, 1, 1, 1]),
                Timestamp(1)
            )
            .is_err()
        );
        assert_eq!(d.stats().errors_by_layer.get("tunnel"), Some(&1));
        // Other UDP ports are not tunnels.
        assert!(matches!(
            d.decode(
                LinkType::Ethernet,
                &udp(53, b"dns", [1, 1, 1, 1]),
                Timestamp(1)
            ),
            Ok(Decoded::NotTcp)
        ));
    }

    #[test]
    fn geneve_with_options() {
        let inner = eth_tcp(b"gnv");
        // Version 0, 8 bytes of options (opt len 2 words), protocol TEB, VNI 7.
        let mut b = vec![0x02, 0x00, 0x65, 0x58, 0, 0, 7, 0];
        b.extend_from_slice(&[0x01, 0x02, 0x03, 0x01, 0xaa, 0xbb, 0xcc, 0xdd]);
        b.extend_from_slice(&inner);
        let mut d = dec();
        let (t, _, _, p, _) = tcp_of(&mut d, LinkType::Ethernet, &udp(6081, &b, [1, 1, 1, 1]));
        assert_eq!(p, b"gnv");
        assert_ne!(t, TunnelId(0));
        assert_eq!(d.stats().tunnels_geneve, 1);
    }

    fn gre_frame(gre: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ethernet2([9; 6], [8; 6])
            .ipv4([1, 1, 1, 1], [2, 2, 2, 2], 64)
            .write(&mut v, etherparse::IpNumber(47), gre)
            .expect("builds");
        v
    }

    #[test]
    fn gre_keyed_and_plain() {
        let inner = eth_tcp(b"gre");
        let mut keyed = vec![0x20, 0x00, 0x65, 0x58, 0, 0, 0, 42];
        keyed.extend_from_slice(&inner);
        let mut keyed2 = vec![0x20, 0x00, 0x65, 0x58, 0, 0, 0, 43];
        keyed2.extend_from_slice(&inner);
        let mut ip_in_gre = vec![0x00, 0x00, 0x08, 0x00];
        ip_in_gre.extend_from_slice(&ipv4_tcp(b"gre"));
        let mut d = dec();
        let (t1, _, _, p, _) = tcp_of(&mut d, LinkType::Ethernet, &gre_frame(&keyed));
        let (t2, _, _, _, _) = tcp_of(&mut d, LinkType::Ethernet, &gre_frame(&keyed2));
        let (_, _, _, p3, _) = tcp_of(&mut d, LinkType::Ethernet, &gre_frame(&ip_in_gre));
        assert_eq!(p, b"gre");
        assert_eq!(p3, b"gre");
        assert_ne!(t1, t2);
        assert_eq!(d.stats().tunnels_gre, 3);
    }

    #[test]
    fn erspan_ii_and_iii() {
        let inner = eth_tcp(b"span");
        // GRE with sequence number, protocol ERSPAN II; ERSPAN header version 1, session 5.
        let mut e2 = vec![0x10, 0x00, 0x88, 0xbe, 0, 0, 0, 1];
        e2.extend_from_slice(&[0x10, 0x00, 0x00, 0x05, 0, 0, 0, 0]);
        e2.extend_from_slice(&inner);
        // ERSPAN III: version 2, session 6, O flag set so an 8-byte subheader follows.
        let mut e3 = vec![0x10, 0x00, 0x22, 0xeb, 0, 0, 0, 1];
        e3.extend_from_slice(&[0x20, 0x00, 0x00, 0x06, 0, 0, 0, 0, 0, 0, 0, 0x01]);
        e3.extend_from_slice(&[0u8; 8]);
        e3.extend_from_slice(&inner);
        let mut d = dec();
        let (t2, _, _, p2, _) = tcp_of(&mut d, LinkType::Ethernet, &gre_frame(&e2));
        let (t3, _, _, p3, _) = tcp_of(&mut d, LinkType::Ethernet, &gre_frame(&e3));
        assert_eq!(p2, b"span");
        assert_eq!(p3, b"span");
        assert_ne!(t2, t3);
        assert_eq!(d.stats().tunnels_erspan2, 1);
        assert_eq!(d.stats().tunnels_erspan3, 1);
    }

    #[test]
    fn nested_tunnels_and_depth_cap() {
        let mut frame = eth_tcp(b"deep");
        for _ in 0..2 {
            let mut g = vec![0x20, 0x00, 0x65, 0x58, 0, 0, 0, 1];
            g.extend_from_slice(&udp(4789, &vxlan(9, &frame), [3, 3, 3, 3]));
            frame = gre_frame(&g);
        }
        let mut d = dec();
        let (_, _, _, p, _) = tcp_of(&mut d, LinkType::Ethernet, &frame);
        assert_eq!(p, b"deep");
        let mut shallow = Decoder::new(DecodeConfig {
            max_tunnel_depth: 3,
            ..Default::default()
        });
        let r = shallow.decode(LinkType::Ethernet, &frame, Timestamp(1));
        assert!(
            matches!(r, Err(DecodeError::TunnelTooDeep { max: 3 })),
            "{r:?}"
        );
    }

    /// IPv4 fragments of a TCP segment, built from an etherparse IPv4 packet.
    fn fragments(payload: &[u8], id: u16, cut: &[usize]) -> Vec<Vec<u8>> {
        let whole = ipv4_tcp(payload);
        let transport = &whole[20..];
        let mut out = Vec::new();
        let mut bounds = vec![0];
        bounds.extend_from_slice(cut);
        bounds.push(transport.len());
        for w in bounds.windows(2) {
            let (a, b) = (w[0], w[1]);
            let more = b < transport.len();
            let mut h =
                etherparse::Ipv4Header::new((b - a) as u16, 64, etherparse::IpNumber(6), C4, S4)
                    .expect("header");
            h.identification = id;
            h.more_fragments = more;
            h.fragment_offset = etherparse::IpFragOffset::try_new((a / 8) as u16).expect("offset");
            h.header_checksum = h.calc_header_checksum();
            let mut f = Vec::new();
            h.write(&mut f).expect("write");
            f.extend_from_slice(&transport[a..b]);
            out.push(f);
        }
        out
    }

    #[test]
    fn ipv4_fragments_in_order_out_of_order_and_overlapping() {
        let payload: Vec<u8> = (0..100u8).collect();
        let frags = fragments(&payload, 1, &[24, 64]);
        for order in [[0usize, 1, 2], [2, 0, 1], [1, 2, 0]] {
            let mut d = dec();
            for (n, i) in order.iter().enumerate() {
                let r = d.decode(LinkType::RawIp, &frags[*i], Timestamp(1));
                if n < 2 {
                    assert!(matches!(r, Ok(Decoded::FragmentHeld)), "{r:?}");
                } else {
                    match r {
                        Ok(Decoded::Tcp(s)) => assert_eq!(s.payload, payload.as_slice()),
                        other => panic!("{other:?}"),
                    }
                }
            }
            assert_eq!(d.stats().ipv4_reassembled, 1);
        }
        // A duplicate (overlapping) fragment is counted; the datagram still completes.
        let mut d = dec();
        for i in [0usize, 0, 1, 2] {
            let _ = d.decode(LinkType::RawIp, &frags[i], Timestamp(1));
        }
        assert_eq!(d.stats().frag_overlaps, 1);
        assert_eq!(d.stats().ipv4_reassembled, 1);
    }

    #[test]
    fn fragment_pool_cap_and_expiry() {
        let payload = [7u8; 64];
        let cfg = DecodeConfig {
            frag_max_datagrams: 2,
            ..Default::default()
        };
        let mut d = Decoder::new(cfg);
        for id in 0..3u16 {
            let f = fragments(&payload, id, &[32]);
            let _ = d.decode(LinkType::RawIp, &f[0], Timestamp(1));
        }
        assert_eq!(d.stats().frag_dropped_cap, 1);
        assert_eq!(d.stats().errors_by_layer.get("fragment"), Some(&1));
        assert_eq!(d.stats().fragments_held, 2);
        // Thirty seconds of packet time later the held datagrams expire.
        let late = fragments(&payload, 9, &[32]);
        let _ = d.decode(LinkType::RawIp, &late[0], Timestamp(40_000_000_000));
        assert_eq!(d.stats().frag_expired, 2);
    }

    #[test]
    fn non_tcp_fragments_do_not_occupy_the_pool() {
        let cfg = DecodeConfig {
            frag_max_datagrams: 1,
            ..Default::default()
        };
        let mut d = Decoder::new(cfg);
        let mut h =
            etherparse::Ipv4Header::new(16, 64, etherparse::IpNumber(1), C4, S4).expect("header");
        h.more_fragments = true;
        h.header_checksum = h.calc_header_checksum();
        let mut icmp = Vec::new();
        h.write(&mut icmp).expect("write");
        icmp.extend_from_slice(&[0u8; 16]);
        for _ in 0..3 {
            assert!(matches!(
                d.decode(LinkType::RawIp, &icmp, Timestamp(1)),
                Ok(Decoded::NotTcp)
            ));
        }
        let f = fragments(&[1u8; 40], 5, &[24]);
        assert!(matches!(
            d.decode(LinkType::RawIp, &f[0], Timestamp(1)),
            Ok(Decoded::FragmentHeld)
        ));
        assert!(matches!(
            d.decode(LinkType::RawIp, &f[1], Timestamp(1)),
            Ok(Decoded::Tcp(_))
        ));
        assert_eq!(d.stats().frag_not_tcp, 3);
    }

    #[test]
    fn fragmented_vxlan_carrier_is_reassembled_and_followed() {
        // A 400-byte inner request in VXLAN, the outer UDP datagram cut in two fragments.
        let inner = eth_tcp(&[b'q'; 400]);
        let outer = udp(4789, &vxlan(77, &inner), [1, 1, 1, 1]);
        let ip = &outer[14..];
        let transport = &ip[20..];
        let mut frames = Vec::new();
        for (a, b) in [(0usize, 256usize), (256, transport.len())] {
            let mut h = etherparse::Ipv4Header::new(
                (b - a) as u16,
                64,
                etherparse::IpNumber(17),
                [1, 1, 1, 1],
                [192, 168, 0, 9],
            )
            .expect("header");
            h.identification = 4242;
            h.more_fragments = b < transport.len();
            h.fragment_offset = etherparse::IpFragOffset::try_new((a / 8) as u16).expect("offset");
            h.header_checksum = h.calc_header_checksum();
            let mut f = outer[..14].to_vec();
            h.write(&mut f).expect("write");
            f.extend_from_slice(&transport[a..b]);
            frames.push(f);
        }
        let mut d = dec();
        assert!(matches!(
            d.decode(LinkType::Ethernet, &frames[1], Timestamp(1)),
            Ok(Decoded::FragmentHeld)
        ));
        let (t, _, _, p, _) = tcp_of(&mut d, LinkType::Ethernet, &frames[0]);
        assert_eq!(p, vec![b'q'; 400]);
        assert_ne!(t, TunnelId(0));
        assert_eq!(d.stats().tunnels_vxlan, 1);
        assert_eq!(d.stats().ipv4_reassembled, 1);
    }

    #[test]
    fn truncated_headers_are_truncated_errors() {
        let f = eth_tcp(b"");
        let mut d = dec();
        let r = d.decode(LinkType::Ethernet, &f[..14 + 10], Timestamp(1));
        assert!(
            matches!(
                r,
                Err(DecodeError::Truncated {
                    layer: Layer::Ipv4,
                    ..
                })
            ),
            "{r:?}"
        );
        let r = d.decode(LinkType::Ethernet, &f[..14 + 20 + 10], Timestamp(1));
        assert!(
            matches!(
                r,
                Err(DecodeError::Truncated {
                    layer: Layer::Tcp,
                    ..
                })
            ),
            "{r:?}"
        );
    }

    #[test]
    fn snaplen_cut_frame_reports_wire_length() {
        let f = eth_tcp(&[b'a'; 200]);
        let cut = &f[..f.len() - 150];
        let mut d = dec();
        let (_, _, _, p, wire) = tcp_of(&mut d, LinkType::Ethernet, cut);
        assert_eq!(p.len(), 50);
        assert_eq!(wire, 200);
        assert_eq!(d.stats().snaplen_cut, 1);
    }

    #[test]
    fn bad_checksums_are_counted_not_dropped() {
        let mut f = eth_tcp(b"offload");
        let tcp_checksum_at = 14 + 20 + 16;
        f[tcp_checksum_at] ^= 0xff;
        f[14 + 10] ^= 0xff;
        let mut d = dec();
        let (_, _, _, p, _) = tcp_of(&mut d, LinkType::Ethernet, &f);
        assert_eq!(p, b"offload");
        assert_eq!(d.stats().bad_tcp_checksum, 1);
        assert_eq!(d.stats().bad_ipv4_checksum, 1);
    }

    /// RFC 1071's checksum, word by word: the test's own oracle.
    fn rfc1071(header: &[u8]) -> u16 {
        let mut sum: u32 = header
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[test]
    fn ipv4_checksum_covers_options_and_every_flag_as_sent() {
        // A 24-byte header (one option word: three NOPs and an end) with the reserved
        // flag bit set, checksummed over its bytes as they are on the wire.
        let plain = eth_tcp(b"opts");
        let mut f = plain[..14 + 20].to_vec();
        f.extend_from_slice(&[1, 1, 1, 0]);
        f.extend_from_slice(&plain[14 + 20..]);
        f[14] = 0x46;
        let total = u16::from_be_bytes([f[16], f[17]]) + 4;
        f[16..18].copy_from_slice(&total.to_be_bytes());
        f[14 + 6] |= 0x80;
        f[14 + 10..14 + 12].copy_from_slice(&[0, 0]);
        let sum = rfc1071(&f[14..14 + 24]);
        f[14 + 10..14 + 12].copy_from_slice(&sum.to_be_bytes());
        let mut d = dec();
        let (_, _, _, p, _) = tcp_of(&mut d, LinkType::Ethernet, &f);
        assert_eq!(p, b"opts");
        assert_eq!(d.stats().bad_ipv4_checksum, 0);
        // A byte of the option changed: the sum no longer holds.
        f[14 + 21] = 0x02;
        tcp_of(&mut d, LinkType::Ethernet, &f);
        assert_eq!(d.stats().bad_ipv4_checksum, 1);
    }

    /// A frame whose TCP checksum is wrong (as a sender offloading checksums leaves it),
    /// or right.
    fn checksummed(bad: bool) -> Vec<u8> {
        let mut f = eth_tcp(b"GET / HTTP/1.1\r\n");
        if bad {
            f[14 + 20 + 16] ^= 0xff;
        }
        f
    }

    fn decode_all(d: &mut Decoder, frames: impl IntoIterator<Item = Vec<u8>>) {
        for f in frames {
            tcp_of(d, LinkType::Ethernet, &f);
        }
    }

    #[test]
    fn auto_checksums_stop_after_a_probe_of_offloaded_segments() {
        let probe = CHECKSUM_PROBE as u64;
        let mut d = dec();
        decode_all(&mut d, (0..probe + 500).map(|_| checksummed(true)));
        let st = d.stats();
        assert_eq!(st.bad_tcp_checksum, probe);
        assert_eq!(st.tcp_checksums_unverified, 500);
        // IPv4 header checksums are still verified.
        let mut f = checksummed(false);
        f[14 + 10] ^= 0xff;
        tcp_of(&mut d, LinkType::Ethernet, &f);
        assert_eq!(d.stats().bad_ipv4_checksum, 1);
    }

    #[test]
    fn auto_checksums_go_on_below_a_tenth_failed() {
        let probe = CHECKSUM_PROBE as u64;
        // One segment in eleven fails: under a tenth, so every segment is verified after
        // the probe too (a mirror port's rare corrupt packet is still counted).
        let mut d = dec();
        decode_all(&mut d, (0..probe + 1100).map(|i| checksummed(i % 11 == 0)));
        assert_eq!(d.stats().bad_tcp_checksum, (probe + 1100).div_ceil(11));
        assert_eq!(d.stats().tcp_checksums_unverified, 0);
        // Exactly a tenth is offload.
        let mut d = dec();
        decode_all(&mut d, (0..probe + 10).map(|i| checksummed(i % 10 == 0)));
        assert_eq!(d.stats().bad_tcp_checksum, probe / 10);
        assert_eq!(d.stats().tcp_checksums_unverified, 10);
    }

    #[test]
    fn checksums_always_and_never() {
        let n = u64::from(CHECKSUM_PROBE) * 2;
        let mut always = Decoder::new(DecodeConfig {
            checksums: Checksums::Always,
            ..DecodeConfig::default()
        });
        decode_all(&mut always, (0..n).map(|_| checksummed(true)));
        assert_eq!(always.stats().bad_tcp_checksum, n);
        assert_eq!(always.stats().tcp_checksums_unverified, 0);
        let mut never = Decoder::new(DecodeConfig {
            checksums: Checksums::Never,
            ..DecodeConfig::default()
        });
        let mut f = checksummed(true);
        f[14 + 10] ^= 0xff;
        decode_all(&mut never, (0..3).map(|_| f.clone()));
        assert_eq!(never.stats().bad_tcp_checksum, 0);
        assert_eq!(never.stats().bad_ipv4_checksum, 0);
        assert_eq!(never.stats().tcp_checksums_unverified, 3);
    }

    proptest::proptest! {
        /// Random bytes and random truncations or corruptions of valid frames never panic.
        #[test]
        fn never_panics(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
            cut in 0usize..200,
            flip in 0usize..200,
        ) {
            let mut d = dec();
            let mut g = gre_frame(&[0x20, 0x00, 0x65, 0x58, 0, 0, 0, 1]);
            g.extend_from_slice(&udp(4789, &vxlan(1, &eth_tcp(&bytes)), [1, 1, 1, 1]));
            for link in LinkType::ALL {
                let _ = d.decode(link, &bytes, Timestamp(1));
                for base in [eth_tcp(&bytes), g.clone(), udp(6081, &bytes, [1, 1, 1, 1]), pppoe_frame(&[0x8100], &[0x00, 0x21], &ipv4_tcp(&bytes))] {
                    let mut f = base[..base.len().saturating_sub(cut)].to_vec();
                    if let Some(b) = f.get_mut(flip) {
                        *b ^= 0x5a;
                    }
                    let _ = d.decode(link, &f, Timestamp(1));
                }
            }
        }
    }
}
