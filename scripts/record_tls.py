#!/usr/bin/env python3
"""Record real TLS ClientHellos and their reference fingerprints for tests/tls_fingerprints.rs.

Usage (as root: it creates a network namespace and runs tcpdump in it):

    python3 scripts/record_tls.py                      # into tests/fixtures/tls/
    python3 scripts/record_tls.py --out-dir /tmp/tls
    python3 scripts/record_tls.py --seeds-only         # fuzz seeds from the committed captures

Needs Python 3.11 (standard library only), openssl, curl, tcpdump and tshark (Debian:
``apt-get install -y openssl curl tcpdump tshark``).

Inside a fresh network namespace (loopback only) the script makes a throwaway self-signed
P-256 certificate, starts ``openssl s_server -www`` on it and connects one client at a time,
each captured by its own ``tcpdump -i lo`` into ``<out-dir>/<client>.pcap`` (one connection:
the handshake, a request and the close, a few kilobytes):

- ``openssl_tls13``: ``openssl s_client`` with its defaults (TLS 1.3) and SNI ``localhost``;
- ``openssl_tls12``: ``openssl s_client -tls1_2 -noservername`` (TLS 1.2, no SNI: JA4 "i");
- ``curl``: ``curl -k https://localhost:PORT/`` (ALPN h2, http/1.1);
- ``python_default``: Python's ``ssl.create_default_context()`` (verification off);
- ``python_custom``: Python ``ssl`` with ``set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20")`` and
  ALPN ``["h2", "http/1.1"]``.

``<out-dir>/expected.json`` holds, per capture, the references the Rust test compares to:

- ``ja3_full`` / ``ja3``: tshark's own ``tls.handshake.ja3_full`` / ``tls.handshake.ja3``;
- ``ja4``: JA4 computed a second time, here in Python, from tshark's dissection of the
  ClientHello (cipher suites, extension types, signature algorithms, SNI, ALPN, supported
  versions), following FoxIO's technical_details/JA4.md independently of the Rust code;
- ``sni``, ``alpn``: as tshark dissects them;
- ``tshark``: the tshark version that produced them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record_samples import REPO, SUBPROCESS_TIMEOUT, Tcpdump, log, wait_for_port  # noqa: E402

PORT = 8443
CLIENTS = ["openssl_tls13", "openssl_tls12", "curl", "python_default", "python_custom"]


# --------------------------------------------------------------------------------------
# clients


def run_client(name: str, work: Path) -> None:
    url_host = "localhost"
    if name == "openssl_tls13":
        cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{PORT}", "-servername", url_host, "-quiet"]
        subprocess.run(cmd, input=b"GET / HTTP/1.0\r\n\r\n", capture_output=True, timeout=SUBPROCESS_TIMEOUT)
    elif name == "openssl_tls12":
        cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{PORT}", "-tls1_2", "-noservername", "-quiet"]
        subprocess.run(cmd, input=b"GET / HTTP/1.0\r\n\r\n", capture_output=True, timeout=SUBPROCESS_TIMEOUT)
    elif name == "curl":
        cmd = ["curl", "-sk", "--max-time", "10", "-o", "/dev/null", f"https://{url_host}:{PORT}/"]
        subprocess.run(cmd, check=True, timeout=SUBPROCESS_TIMEOUT)
    elif name in ("python_default", "python_custom"):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if name == "python_custom":
            ctx.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20")
            ctx.set_alpn_protocols(["h2", "http/1.1"])
        with socket.create_connection(("127.0.0.1", PORT), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname=url_host) as tls:
                tls.sendall(b"GET / HTTP/1.0\r\n\r\n")
                while tls.recv(4096):
                    pass
    else:
        raise ValueError(name)


# --------------------------------------------------------------------------------------
# references from tshark


def tshark_version() -> str:
    out = subprocess.run(["tshark", "--version"], capture_output=True, text=True, check=True, timeout=60).stdout
    return out.splitlines()[0]


def client_hello_tree(pcap: Path) -> dict:
    """The `tls` layer of the capture's one ClientHello, as tshark's JSON tree."""
    out = subprocess.run(
        ["tshark", "-r", str(pcap), "-d", f"tcp.port=={PORT},tls", "-Y", "tls.handshake.type == 1",
         "-T", "json", "--no-duplicate-keys", "-J", "tls"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout
    packets = json.loads(out)
    if len(packets) != 1:
        raise RuntimeError(f"{pcap}: {len(packets)} ClientHello packets, expected 1")
    return packets[0]["_source"]["layers"]["tls"]


def walk(node, key: str):
    """Every value stored under `key` anywhere below `node`, in document order."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield from (v if isinstance(v, list) else [v])
            else:
                yield from walk(v, key)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v, key)


def handshake(tls: dict) -> dict:
    record = tls["tls.record"]
    if isinstance(record, list):
        record = record[0]
    return record["tls.handshake"]


def extensions(hs: dict) -> list[dict]:
    """The ClientHello's extension subtrees in wire order (tshark keys them by a label)."""
    return [v for k, v in hs.items() if k.startswith("Extension: ")]


def is_grease(v: int) -> bool:
    return (v & 0x0F0F) == 0x0A0A and (v >> 8) == (v & 0xFF)


def sha12(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12] if text else "000000000000"


JA4_VERSIONS = {0x0304: "13", 0x0303: "12", 0x0302: "11", 0x0301: "10", 0x0300: "s3", 0x0002: "s2",
                0xFEFF: "d1", 0xFEFD: "d2", 0xFEFC: "d3"}


def ja4_reference(tls: dict) -> dict:
    hs = handshake(tls)
    ciphers = [int(c, 16) for c in walk(hs.get("tls.handshake.ciphersuites", {}), "tls.handshake.ciphersuite")]
    exts = extensions(hs)
    ext_types = [int(e["tls.handshake.extension.type"]) for e in exts]
    sigalgs: list[int] = []
    versions: list[int] = []
    sni = None
    alpn: list[str] = []
    for e in exts:
        t = int(e["tls.handshake.extension.type"])
        if t == 13:  # signature_algorithms (not 50, signature_algorithms_cert)
            sigalgs = [int(v, 16) for v in walk(e, "tls.handshake.sig_hash_alg")]
        elif t == 43:
            versions = [int(v, 16) for v in walk(e, "tls.handshake.extensions.supported_version")]
        elif t == 0:
            names = list(walk(e, "tls.handshake.extensions_server_name"))
            sni = names[0] if names else ""
        elif t == 16:
            alpn = list(walk(e, "tls.handshake.extensions_alpn_str"))
    ciphers = [c for c in ciphers if not is_grease(c)]
    ext_types = [t for t in ext_types if not is_grease(t)]
    sigalgs = [s for s in sigalgs if not is_grease(s)]
    versions = [v for v in versions if not is_grease(v)]
    legacy = int(hs["tls.handshake.version"], 16)
    version = JA4_VERSIONS.get(max(versions) if versions else legacy, "00")
    if alpn and alpn[0]:
        first = alpn[0]
        a, z = first[0], first[-1]
        if not (a.isascii() and a.isalnum() and z.isascii() and z.isalnum()):
            h = first.encode().hex()
            a, z = h[0], h[-1]
        alpn_part = a + z
    else:
        alpn_part = "00"
    a_part = f"t{version}{'d' if 0 in ext_types else 'i'}{min(len(ciphers), 99):02d}{min(len(ext_types), 99):02d}{alpn_part}"
    b_part = sha12(",".join(f"{c:04x}" for c in sorted(ciphers)))
    sorted_exts = ",".join(f"{t:04x}" for t in sorted(ext_types) if t not in (0x0000, 0x0010))
    c_text = sorted_exts
    if sorted_exts and sigalgs:
        c_text += "_" + ",".join(f"{s:04x}" for s in sigalgs)
    c_part = sha12(c_text) if sorted_exts else "000000000000"
    ja3_full = next(walk(hs, "tls.handshake.ja3_full"))
    ja3 = next(walk(hs, "tls.handshake.ja3"))
    return {
        "ja4": f"{a_part}_{b_part}_{c_part}",
        "ja3_full": ja3_full,
        "ja3": ja3,
        "sni": sni,
        "alpn": alpn,
    }


# --------------------------------------------------------------------------------------


def record(out_dir: Path) -> None:
    for tool in ("openssl", "curl", "tcpdump", "tshark"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed")
    out_dir.mkdir(parents=True, exist_ok=True)
    expected: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="shieldtap-tls-") as tmp:
        work = Path(tmp)
        key, cert = work / "key.pem", work / "cert.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-subj", "/CN=localhost", "-days", "2", "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True, timeout=SUBPROCESS_TIMEOUT,
        )
        server = subprocess.Popen(
            ["openssl", "s_server", "-accept", str(PORT), "-cert", str(cert), "-key", str(key), "-www", "-quiet"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port("127.0.0.1", PORT)
            time.sleep(0.2)
            for name in CLIENTS:
                pcap = out_dir / f"{name}.pcap"
                with Tcpdump("lo", pcap, f"tcp port {PORT}") as dump:
                    run_client(name, work)
                    dump.stop(settle=1.2)
                log(f"{name}: {pcap.stat().st_size} bytes")
        finally:
            server.terminate()
            server.wait(10)
    version = tshark_version()
    for name in CLIENTS:
        ref = ja4_reference(client_hello_tree(out_dir / f"{name}.pcap"))
        ref["tshark"] = version
        expected[name] = ref
        log(f"{name}: {ref['ja4']} {ref['ja3']}")
    (out_dir / "expected.json").write_text(json.dumps(expected, indent=2, sort_keys=True) + "\n")
    (out_dir / "README.md").write_text(
        f"""# TLS ClientHellos of real clients

Recorded by `scripts/record_tls.py` in a network namespace: each client connects once to
`openssl s_server -www` (self-signed P-256 certificate) on 127.0.0.1:{PORT}, captured with
`tcpdump -i lo -s 0 -U 'tcp port {PORT}'`; one capture per client.

| capture | client |
|---|---|
| `openssl_tls13.pcap` | `openssl s_client -servername localhost` (TLS 1.3 default) |
| `openssl_tls12.pcap` | `openssl s_client -tls1_2 -noservername` |
| `curl.pcap` | `curl -k https://localhost:{PORT}/` |
| `python_default.pcap` | Python `ssl.create_default_context()` |
| `python_custom.pcap` | Python `ssl`, ciphers `ECDHE+AESGCM:ECDHE+CHACHA20`, ALPN h2, http/1.1 |

`expected.json`: tshark's JA3 (`tls.handshake.ja3_full`, `tls.handshake.ja3`) and a JA4
computed by the script's own Python implementation from tshark's dissection ({version}).
"""
    )


def write_seeds(fixtures: Path, out_dir: Path) -> None:
    """The client's first payload (the ClientHello record) of each capture, as fuzz seeds."""
    import struct

    out_dir.mkdir(parents=True, exist_ok=True)
    for pcap in sorted(fixtures.glob("*.pcap")):
        data = pcap.read_bytes()
        linktype = struct.unpack("<I", data[20:24])[0]
        l2 = {1: 14, 113: 16, 276: 20}[linktype]
        off = 24
        while off < len(data):
            incl = struct.unpack("<I", data[off + 8 : off + 12])[0]
            frame = data[off + 16 : off + 16 + incl]
            off += 16 + incl
            ip = frame[l2:]
            tcp = ip[(ip[0] & 0x0F) * 4 :]
            payload = tcp[(tcp[12] >> 4) * 4 :]
            if payload[:1] == b"\x16" and payload[5:6] == b"\x01":
                (out_dir / f"{pcap.stem}.bin").write_bytes(payload)
                log(f"seed {pcap.stem}: {len(payload)} bytes")
                break


def in_netns(argv: list[str]) -> None:
    """Re-runs this script with `argv` inside a fresh namespace (removed afterwards)."""
    ns = f"shieldtap-tls-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=30)
    try:
        ns_run = ["ip", "netns", "exec", ns]
        subprocess.run([*ns_run, "ip", "link", "set", "lo", "up"], check=True, timeout=30)
        subprocess.run([*ns_run, sys.executable, __file__, *argv, "--inside-netns"], check=True, timeout=600)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False, timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", type=Path, default=REPO / "tests" / "fixtures" / "tls")
    ap.add_argument("--seeds-only", action="store_true",
                    help="only write the recorded hellos to fuzz/corpus/tls_client_hello (no recording)")
    ap.add_argument("--inside-netns", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.seeds_only:
        write_seeds(args.out_dir, REPO / "fuzz" / "corpus" / "tls_client_hello")
    elif args.inside_netns:
        record(args.out_dir)
    else:
        in_netns(["--out-dir", str(args.out_dir.resolve())])


if __name__ == "__main__":
    main()
