#!/usr/bin/env python3
"""Writes the seed corpus of the `packet_path` fuzz target (fuzz/fuzz_targets/packet_path.rs).

Usage:
    python3 scripts/fuzz_packet_path_seeds.py [--out fuzz/corpus/packet_path] [--per-sample 6]
    cd fuzz && cargo +nightly fuzz run -O packet_path -- -max_len=20000 -max_total_time=600

Reads the sample captures (samples/*/capture.pcap: pcap, Ethernet or Linux cooked, IPv4 or
IPv6) and cuts the first TCP conversations of each into the target's input layout: one
control byte before each segment of at most 120 bytes (bit 7: the direction, 0 from the
client, which is the side that sent a request line first; low 7 bits: the length less one),
in capture order, up to about 16 KB a seed. The target writes them as frames of its own
addresses, so the samples' addresses do not matter; `samples/mobile-network`'s tokens
verify under the target's config (that sample's).
"""

from __future__ import annotations

import argparse
import struct
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = [
    "mobile-network",
    "bola",
    "token-abuse",
    "data-exposure",
    "nginx-pipelined",
    "bots-and-stuffing",
]
METHODS = (b"GET ", b"POST", b"PUT ", b"DELE", b"PATC", b"HEAD", b"OPTI")
MAX_SEED = 16_000


def frames(path: Path):
    data = path.read_bytes()
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    i = 24
    while i + 16 <= len(data):
        _, _, caplen, _ = struct.unpack(endian + "IIII", data[i : i + 16])
        i += 16
        yield linktype, data[i : i + caplen]
        i += caplen


def tcp_payload(linktype: int, f: bytes):
    """((src, sport), (dst, dport), payload) of a TCP frame, or None."""
    if linktype == 1:
        ethertype, p = struct.unpack(">H", f[12:14])[0], f[14:]
    elif linktype == 113:
        ethertype, p = struct.unpack(">H", f[14:16])[0], f[16:]
    else:
        return None
    if ethertype == 0x0800 and len(p) >= 20 and p[9] == 6:
        ihl = (p[0] & 15) * 4
        total = struct.unpack(">H", p[2:4])[0]
        src, dst, t = p[12:16], p[16:20], p[ihl:total]
    elif ethertype == 0x86DD and len(p) >= 40 and p[6] == 6:
        src, dst, t = p[8:24], p[24:40], p[40:]
    else:
        return None
    if len(t) < 20:
        return None
    sport, dport = struct.unpack(">HH", t[:4])
    return (src, sport), (dst, dport), t[(t[12] >> 4) * 4 :]


def seeds(capture: Path, limit: int):
    convs: dict = {}
    for linktype, f in frames(capture):
        seg = tcp_payload(linktype, f)
        if not seg or not seg[2]:
            continue
        a, b, payload = seg
        conv = convs.setdefault(tuple(sorted([a, b])), {"client": None, "steps": []})
        if conv["client"] is None:
            conv["client"] = a if payload.startswith(METHODS) else b
        conv["steps"].append((0 if a == conv["client"] else 1, payload))
    made = 0
    for conv in convs.values():
        out = bytearray()
        for direction, payload in conv["steps"]:
            for j in range(0, len(payload), 120):
                chunk = payload[j : j + 120]
                out.append((direction << 7) | (len(chunk) - 1))
                out += chunk
            if len(out) > MAX_SEED:
                break
        if len(out) < 64:
            continue
        yield bytes(out)
        made += 1
        if made >= limit:
            return


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "fuzz/corpus/packet_path")
    ap.add_argument("--per-sample", type=int, default=6)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    n = 0
    for sample in SAMPLES:
        capture = ROOT / "samples" / sample / "capture.pcap"
        if not capture.exists():
            continue
        for k, seed in enumerate(seeds(capture, args.per_sample)):
            (args.out / f"{sample}-{k}").write_bytes(seed)
            n += 1
    print(f"{n} seeds in {args.out}")


if __name__ == "__main__":
    main()
