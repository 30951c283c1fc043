#!/usr/bin/env python3
"""Remove the bytes of one HTTP/1.x response from a capture, as a mirror port that lost the
TCP segments carrying it would show it.

Usage:

    python3 scripts/drop_response.py IN.pcap OUT.pcap --index 500 [--server-port PORT]

    # the gapped pipelining fixture:
    python3 scripts/drop_response.py tests/fixtures/pipelining/capture.pcap \\
        tests/fixtures/pipelining/capture-gap.pcap --index 500

Standard library only. Reads a classic pcap (Ethernet, IPv4, TCP; micro- or nanosecond
timestamps) holding one connection, rebuilds the server-to-client byte stream (first copy
of every byte wins, as a receiver sees it), walks it response by response (Content-Length
or chunked framing) to find response number ``--index`` (0-based), and writes the capture
again with exactly that response's bytes missing: server segments wholly inside it are
dropped; a segment that also carries a neighbour's bytes keeps only those (trimmed, or split
in two with the sequence numbers of the parts it keeps), so nothing but that one response
is lost. IP lengths and checksums and TCP checksums are recomputed; every other packet is
copied unchanged. Prints the dropped byte range and the response's first line.
"""

from __future__ import annotations

import argparse
import struct
import sys
from pathlib import Path

PCAP_MAGICS = {0xA1B2C3D4: "<", 0xD4C3B2A1: ">", 0xA1B23C4D: "<", 0x4D3CB2A1: ">"}
LINKTYPE_ETHERNET = 1
ETH_LEN = 14


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


class Packet:
    def __init__(self, rec_hdr: bytes, frame: bytes, endian: str) -> None:
        self.rec_hdr = rec_hdr
        self.frame = frame
        self.endian = endian
        self.tcp = None  # (ip_off, ihl, tcp_off, thl, sport, dport, seq, flags, payload)
        if len(frame) < ETH_LEN + 20 or frame[12:14] != b"\x08\x00":
            return
        ip = ETH_LEN
        ihl = (frame[ip] & 0x0F) * 4
        total = struct.unpack("!H", frame[ip + 2 : ip + 4])[0]
        if frame[ip + 9] != 6:
            return
        t = ip + ihl
        sport, dport, seq = struct.unpack("!HHI", frame[t : t + 8])
        thl = (frame[t + 12] >> 4) * 4
        flags = frame[t + 13]
        payload = frame[t + thl : ip + total]
        self.tcp = (ip, ihl, t, thl, sport, dport, seq, flags, payload)

    def with_payload(self, seq: int, payload: bytes) -> bytes:
        """This packet's record (header and frame) carrying `payload` at `seq` instead."""
        ip, ihl, t, thl, *_ = self.tcp
        ip_hdr = bytearray(self.frame[ip : ip + ihl])
        tcp_hdr = bytearray(self.frame[t : t + thl])
        struct.pack_into("!H", ip_hdr, 2, ihl + thl + len(payload))
        struct.pack_into("!H", ip_hdr, 10, 0)
        struct.pack_into("!H", ip_hdr, 10, checksum(bytes(ip_hdr)))
        struct.pack_into("!I", tcp_hdr, 4, seq)
        struct.pack_into("!H", tcp_hdr, 16, 0)
        pseudo = bytes(ip_hdr[12:20]) + struct.pack("!BBH", 0, 6, thl + len(payload))
        struct.pack_into("!H", tcp_hdr, 16, checksum(pseudo + bytes(tcp_hdr) + payload))
        frame = self.frame[:ip] + bytes(ip_hdr) + bytes(tcp_hdr) + payload
        ts_sec, ts_frac, _, _ = struct.unpack(self.endian + "IIII", self.rec_hdr)
        rec = struct.pack(self.endian + "IIII", ts_sec, ts_frac, len(frame), len(frame))
        return rec + frame


def read_pcap(path: Path) -> tuple[bytes, str, list[Packet]]:
    data = path.read_bytes()
    magic = struct.unpack("<I", data[:4])[0]
    if magic not in PCAP_MAGICS:
        sys.exit(f"{path}: not a classic pcap file (pcapng: convert with editcap -F pcap)")
    endian = PCAP_MAGICS[magic]
    header = data[:24]
    if struct.unpack(endian + "I", header[20:24])[0] != LINKTYPE_ETHERNET:
        sys.exit(f"{path}: only Ethernet captures are handled")
    pkts, off = [], 24
    while off + 16 <= len(data):
        rec = data[off : off + 16]
        incl = struct.unpack(endian + "I", rec[8:12])[0]
        pkts.append(Packet(rec, data[off + 16 : off + 16 + incl], endian))
        off += 16 + incl
    return header, endian, pkts


def response_spans(stream: bytes) -> list[tuple[int, int]]:
    """(start, end) of each complete response in a server byte stream."""
    spans, pos = [], 0
    while True:
        end = stream.find(b"\r\n\r\n", pos)
        if end < 0:
            return spans
        head = stream[pos:end].decode("latin-1").split("\r\n")
        fields = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
        body = end + 4
        if "chunked" in fields.get("transfer-encoding", "").lower():
            while True:
                nl = stream.find(b"\r\n", body)
                if nl < 0:
                    return spans
                size = int(stream[body:nl].split(b";")[0], 16)
                body = nl + 2 + size + 2
                if size == 0:
                    break
        else:
            body += int(fields.get("content-length", "0"))
        if body > len(stream):
            return spans
        spans.append((pos, body))
        pos = body


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input", type=Path)
    ap.add_argument("output", type=Path)
    ap.add_argument("--index", type=int, required=True, help="0-based number of the response to remove")
    ap.add_argument("--server-port", type=int, help="default: the port that answered the SYN")
    args = ap.parse_args()

    header, _, pkts = read_pcap(args.input)
    port, isn = args.server_port, None
    for p in pkts:
        if p.tcp and p.tcp[7] & 0x12 == 0x12 and (port is None or p.tcp[4] == port):
            port, isn = p.tcp[4], p.tcp[6]
            break
    if isn is None:
        sys.exit("no SYN-ACK from the server in the capture")
    base = (isn + 1) & 0xFFFFFFFF

    def offset(p: Packet) -> int:
        return (p.tcp[6] - base) & 0xFFFFFFFF

    server = [p for p in pkts if p.tcp and p.tcp[4] == port and p.tcp[8]]
    stream = bytearray()
    for p in server:
        off, payload = offset(p), p.tcp[8]
        if off + len(payload) > len(stream):
            stream += b"\0" * (off + len(payload) - len(stream))
        stream[off : off + len(payload)] = payload
    spans = response_spans(bytes(stream))
    if not 0 <= args.index < len(spans):
        sys.exit(f"the capture has {len(spans)} complete responses; --index {args.index} is out of range")
    lo, hi = spans[args.index]

    out = bytearray(header)
    for p in pkts:
        if not (p.tcp and p.tcp[4] == port and p.tcp[8]):
            out += p.rec_hdr + p.frame
            continue
        off, payload = offset(p), p.tcp[8]
        end = off + len(payload)
        if end <= lo or off >= hi:
            out += p.rec_hdr + p.frame
            continue
        if off < lo:
            out += p.with_payload(p.tcp[6], payload[: lo - off])
        if end > hi:
            out += p.with_payload((base + hi) & 0xFFFFFFFF, payload[hi - off :])
    args.output.write_bytes(bytes(out))
    first = " / ".join(bytes(stream[lo:hi]).split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n"))
    print(f"removed response {args.index} ({first!r}): stream bytes {lo}..{hi} ({hi - lo} bytes)")


if __name__ == "__main__":
    main()
