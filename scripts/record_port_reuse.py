#!/usr/bin/env python3
"""Record a capture where a client reuses one source port for back-to-back connections.

Usage (as root, or with CAP_NET_RAW for tcpdump):

    python3 scripts/record_port_reuse.py                      # into tests/fixtures/port-reuse/
    python3 scripts/record_port_reuse.py --out-dir /tmp/port-reuse

Load balancers and NATs reuse source ports all the time on the leg a mirror port sees: a
connection closes (FIN both ways) and a new SYN, with a new initial sequence number, opens
the same 4-tuple a few milliseconds later, while the first connection still lingers in the
reassembler. This script makes that happen with real sockets on loopback:

- a Python ``http.server`` HTTP/1.1 keep-alive JSON API (``ApiHandler`` from
  ``record_samples.py``) listening on 127.0.0.1 and on ::1;
- per address family, a client socket with ``SO_REUSEADDR`` bound to one fixed source
  port, driven by ``http.client.HTTPConnection`` (keep-alive, several requests), whose last
  request asks ``Connection: close`` so the server closes first (no TIME_WAIT on the
  client's side); then a new socket binds the same port and connects again right away;
- ``tcpdump -i lo`` on the server port, microsecond pcap.

Written to ``<out-dir>/``: ``capture.pcap``, ``expected.jsonl`` (the client's own record:
``connection``, ``method``, ``path``, ``status``, ``request_body_bytes``,
``response_body_bytes``, plus ``family`` and ``client_port``) and ``README.md``.
Standard library only; needs tcpdump (``apt-get install -y tcpdump``).
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record_samples import (  # noqa: E402 (the sibling script is the helper library)
    REPO,
    SOCKET_TIMEOUT,
    ApiHandler,
    ServerThread,
    Tcpdump,
    Tx,
    V6Server,
    capinfo,
    pick_port,
)
from http.server import ThreadingHTTPServer  # noqa: E402

#: Connections per address family, all from the same client port.
CONNECTIONS = 3
#: Requests per connection (the last asks the server to close).
REQUESTS = [
    ("GET", "/api/v1/users/123", None),
    ("GET", "/api/v1/orders?page={n}", None),
    ("POST", "/api/v1/orders", b'{"items":["SKU-00001","SKU-00002"]}'),
    ("GET", "/api/v1/catalog", None),
]


class V4Server(ThreadingHTTPServer):
    daemon_threads = True


def free_client_port(family: socket.AddressFamily, host: str) -> int:
    s = socket.socket(family, socket.SOCK_STREAM)
    s.bind((host, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def connect_from(family: socket.AddressFamily, host: str, port: int, client_port: int) -> socket.socket:
    """A socket bound to `client_port` (reused) and connected to the server."""
    for attempt in range(50):
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.settimeout(SOCKET_TIMEOUT)
        try:
            s.bind((host, client_port))
            s.connect((host, port))
            return s
        except OSError:
            s.close()
            # The server's side of the previous connection may still be closing.
            time.sleep(0.01 * (attempt + 1))
    raise RuntimeError(f"cannot reuse client port {client_port} towards {host}:{port}")


def run_family(family: socket.AddressFamily, host: str, port: int, first_conn: int) -> list[Tx]:
    client_port = free_client_port(family, host)
    txs: list[Tx] = []
    for c in range(CONNECTIONS):
        conn_ix = first_conn + c
        sock = connect_from(family, host, port, client_port)
        assert sock.getsockname()[1] == client_port
        h = http.client.HTTPConnection(host, port, timeout=SOCKET_TIMEOUT)
        h.sock = sock  # http.client uses a socket already set instead of connecting
        for i, (method, target, body) in enumerate(REQUESTS):
            target = target.format(n=c + 1)
            headers = {"Host": f"api.example.test:{port}", "Accept": "application/json"}
            if body is not None:
                headers["Content-Type"] = "application/json"
            if i == len(REQUESTS) - 1:
                headers["Connection"] = "close"
            h.request(method, target, body=body, headers=headers)
            r = h.getresponse()
            data = r.read()
            txs.append(
                Tx(
                    connection=conn_ix,
                    method=method,
                    target=target,
                    status=r.status,
                    response_body_bytes=len(data),
                    request_body_bytes=len(body or b""),
                    note=f"{'IPv6' if family == socket.AF_INET6 else 'IPv4'} client port {client_port}",
                )
            )
        # The server closed after `Connection: close`; wait for its FIN, then close ours.
        sock.settimeout(SOCKET_TIMEOUT)
        while sock.recv(4096):
            pass
        h.close()
        sock.close()
    return txs


def record(dest: Path, work: Path) -> None:
    port4 = pick_port(18091)
    port6 = pick_port(18092, socket.AF_INET6, "::1")
    pcap = work / "capture.pcap"
    txs: list[Tx] = []
    v4 = V4Server(("127.0.0.1", port4), ApiHandler)
    v6 = V6Server(("::1", port6), ApiHandler)
    bpf = f"tcp port {port4} or tcp port {port6}"
    with ServerThread(v4), ServerThread(v6):
        with Tcpdump("lo", pcap, bpf) as dump:
            txs += run_family(socket.AF_INET, "127.0.0.1", port4, 0)
            txs += run_family(socket.AF_INET6, "::1", port6, CONNECTIONS)
            dump.stop()
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(pcap, dest / "capture.pcap")
    lines = []
    for t in txs:
        v = json.loads(t.expected_line())
        v["family"], _, v["client_port"] = t.note.partition(" client port ")
        v["client_port"] = int(v["client_port"])
        lines.append(json.dumps(v) + "\n")
    (dest / "expected.jsonl").write_text("".join(lines))
    (dest / "README.md").write_text(
        f"""# port-reuse: one client port, back-to-back connections (IPv4 and IPv6)

Recorded by `python3 scripts/record_port_reuse.py` (re-run it to regenerate this folder).

- **Server**: Python {sys.version.split()[0]} `http.server` (`ApiHandler` of
  `scripts/record_samples.py`, HTTP/1.1 keep-alive) on 127.0.0.1:{port4} and [::1]:{port6}.
- **Client**: per address family, {CONNECTIONS} connections in a row from one source port: a socket with
  `SO_REUSEADDR` bound to the port, driven by `http.client.HTTPConnection`; {len(REQUESTS)} requests
  per connection, the last with `Connection: close`, so the server closes first; the next
  connection binds the same port and connects within milliseconds of the close, while the
  previous connection of that 4-tuple still lingers in the reassembler.
- **Capture**: `{dump.display_cmd("capture.pcap")}` (link type {capinfo(dest / "capture.pcap")}),
  {dump.captured} packets, none dropped.

`expected.jsonl` is the client's own record, one line per transaction in order, with the
connection index (0-{CONNECTIONS - 1} IPv4, {CONNECTIONS}-{2 * CONNECTIONS - 1} IPv6), the address family and the client port.
`tests/port_reuse.rs` checks that replaying the capture yields every transaction of every
connection, with one worker and with two.
"""
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", type=Path, default=REPO / "tests/fixtures/port-reuse")
    args = ap.parse_args(argv)
    if shutil.which("tcpdump") is None:
        print("missing tcpdump: apt-get install -y tcpdump", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="shieldtap-port-reuse-"))
    try:
        record(args.out_dir, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
