#!/usr/bin/env python3
"""Writes tests/fixtures/encap/: real loopback-recorded HTTP traffic re-encapsulated in PPPoE
and Cisco HDLC, for tests/encapsulation.rs (the transactions must come out identical to the
plain captures').

Usage: pip install scapy
       python3 scripts/make_encap_captures.py

Sources (recorded by real clients and servers, see their READMEs):
  - samples/curl-keepalive/capture.pcap: curl against nginx on IPv4 loopback (Ethernet).
  - samples/httpclient-ipv6-any/capture.pcapng: Python http.client against http.server on
    IPv6 loopback, captured on `any` (Linux SLL2, nanosecond timestamps).

Each IP packet is taken as captured (bytes and timestamp unchanged) and wrapped by scapy
(an independent writer) in:
  - pppoe.pcap / pppoe-ipv6.pcap: Ethernet / PPPoE session (0x8864, session 0x2a17) / PPP
    (0x0021 IPv4, 0x0057 IPv6), MAC addresses kept (IPv4) or made up per direction (IPv6).
  - pppoe-qinq.pcap: the same inside 802.1ad S-tag 300 and 802.1Q C-tag 42 (a BNG's QinQ
    access port).
  - chdlc.pcap / chdlc-ipv6.pcap: link type 104 (LINKTYPE_C_HDLC), address 0x0F, control 0,
    protocol = the ethertype.
Each PPPoE file starts with a PPPoE discovery exchange (PADI, PADO, PADR, PADS) and an
LCP echo request/reply in the session; each C-HDLC file with a SLARP keepalive and a CDP
frame: traffic that is not IP and must not change the transactions.
Written with nanosecond timestamps, so packet times are exact.
"""

import os

from scapy.all import (PPP, PPPoE, PPPoED, Dot1AD, Dot1Q, Ether, PcapWriter, Raw,
                       load_contrib, rdpcap)
from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import CookedLinuxV2
from scapy.layers.ppp import PPP_LCP_Echo

load_contrib("chdlc")
from scapy.contrib.chdlc import CHDLC, SLARP  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "encap")
SESSION = 0x2A17
AC_MAC = "02:00:5e:00:53:01"  # access concentrator (documentation range)
HOST_MAC = "02:00:5e:00:53:02"


def ip_packets(path):
    """(timestamp, IP layer, Ethernet source, Ethernet destination) per IP packet."""
    out = []
    for p in rdpcap(path):
        if p.haslayer(IP):
            ip = p[IP]
        elif p.haslayer(IPv6):
            ip = p[IPv6]
        else:
            continue
        if Ether in p:
            src, dst = p[Ether].src, p[Ether].dst
        else:
            # SLL2 has one address; the direction decides which side is which.
            sport = ip.payload.sport if hasattr(ip.payload, "sport") else 0
            src, dst = (HOST_MAC, AC_MAC) if sport != 18082 else (AC_MAC, HOST_MAC)
        out.append((p.time, ip, src, dst))
    return out


def write(name, linktype, frames):
    path = os.path.join(OUT, name)
    w = PcapWriter(path, linktype=linktype, nano=True, sync=True)
    for ts, frame in frames:
        frame.time = ts
        w.write(frame)
    w.close()
    print(f"{len(frames)} frames -> tests/fixtures/encap/{name} ({os.path.getsize(path)} bytes)")


def pppoe_frames(packets, qinq):
    def l2(src, dst, ethertype_layer):
        e = Ether(src=src, dst=dst)
        if qinq:
            return e / Dot1AD(vlan=300) / Dot1Q(vlan=42) / ethertype_layer
        return e / ethertype_layer

    t0 = packets[0][0]
    frames = []
    # Discovery (0x8863) and LCP (PPP 0xc021): not IP, must be ignored.
    for i, code in enumerate([0x09, 0x07, 0x19, 0x65]):
        sid = SESSION if code == 0x65 else 0
        src, dst = (HOST_MAC, "ff:ff:ff:ff:ff:ff") if code == 0x09 else (AC_MAC, HOST_MAC)
        frames.append((t0 - 1 + i * 0.001,
                       l2(src, dst, PPPoED(code=code, sessionid=sid) / Raw(b"\x01\x01\x00\x00"))))
    frames.append((t0 - 0.5, l2(AC_MAC, HOST_MAC, PPPoE(sessionid=SESSION) / PPP(proto=0xC021)
                                / PPP_LCP_Echo(code=9, id=1, magic_number=0x1234))))
    frames.append((t0 - 0.49, l2(HOST_MAC, AC_MAC, PPPoE(sessionid=SESSION) / PPP(proto=0xC021)
                                 / PPP_LCP_Echo(code=10, id=1, magic_number=0x5678))))
    for ts, ip, src, dst in packets:
        proto = 0x0021 if ip.version == 4 else 0x0057
        frames.append((ts, l2(src, dst, PPPoE(sessionid=SESSION) / PPP(proto=proto)
                              / Raw(bytes(ip)))))
    return frames


def chdlc_frames(packets):
    t0 = packets[0][0]
    frames = [
        (t0 - 1, CHDLC(address=0x8F, proto=0x8035) / SLARP(type=2, mysequence=1, yoursequence=0)),
        (t0 - 0.5, CHDLC(address=0x8F, proto=0x2000) / Raw(b"\x02\xb4\x00\x00")),
    ]
    for ts, ip, _, _ in packets:
        proto = 0x0800 if ip.version == 4 else 0x86DD
        frames.append((ts, CHDLC(address=0x0F, control=0, proto=proto) / Raw(bytes(ip))))
    return frames


def main():
    os.makedirs(OUT, exist_ok=True)
    v4 = ip_packets(os.path.join(ROOT, "samples/curl-keepalive/capture.pcap"))
    v6 = ip_packets(os.path.join(ROOT, "samples/httpclient-ipv6-any/capture.pcapng"))
    assert v4 and v6
    write("pppoe.pcap", 1, pppoe_frames(v4, qinq=False))
    write("pppoe-qinq.pcap", 1, pppoe_frames(v4, qinq=True))
    write("pppoe-ipv6.pcap", 1, pppoe_frames(v6, qinq=False))
    write("chdlc.pcap", 104, chdlc_frames(v4))
    write("chdlc-ipv6.pcap", 104, chdlc_frames(v6))


if __name__ == "__main__":
    main()
