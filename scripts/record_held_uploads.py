#!/usr/bin/env python3
"""Record a capture with many connections open at once, each holding an unfinished upload.

Usage (as root, or with CAP_NET_RAW for tcpdump):

    python3 scripts/record_held_uploads.py              # tests/fixtures/held-uploads.pcap
    python3 scripts/record_held_uploads.py --out /tmp/held.pcap --connections 50

What grows with traffic in a monitor is what many clients hold open at once: connections,
and HTTP messages whose bodies are still arriving. Real sockets on loopback:

- a Python ``socketserver.ThreadingTCPServer`` speaking HTTP/1.1: it reads a request head,
  its ``Content-Length`` body, answers ``200`` with a small JSON body, and closes after a
  request that asks ``Connection: close``;
- phase 1: ``--connections`` client sockets connect one after another and each sends a
  ``POST /api/v1/uploads/<n>`` head and the first half of its body, then waits;
- phase 2: once every connection is open and half-way, each sends the rest of its body,
  reads the response, and closes (the request asked ``Connection: close``);
- ``tcpdump -i lo`` on the server port, microsecond pcap, full snaplen.

So at the peak every connection is tracked and every one holds a request with half a body:
a replay with a small ``[runtime] memory_budget_mib`` share must evict the least recently
active ones (`tests/memory_budget.rs`). Standard library only; needs tcpdump.
"""

from __future__ import annotations

import argparse
import socket
import socketserver
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record_samples import REPO, Tcpdump, pick_port  # noqa: E402

#: Body bytes of each upload (half sent in phase 1, half in phase 2).
BODY = 1024


class Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        while True:
            line = self.rfile.readline()
            if not line:
                return
            length, close = 0, False
            while True:
                h = self.rfile.readline()
                if h in (b"\r\n", b"\n", b""):
                    break
                name, _, value = h.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
                if name.strip().lower() == "connection" and value.strip().lower() == "close":
                    close = True
            body = self.rfile.read(length)
            reply = b'{"stored":%d}' % len(body)
            self.wfile.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s"
                % (len(reply), b"Connection: close\r\n" if close else b"", reply)
            )
            self.wfile.flush()
            if close:
                return


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "tests/fixtures/held-uploads.pcap")
    ap.add_argument("--connections", type=int, default=200)
    args = ap.parse_args()
    port = pick_port(18480)
    server = Server(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    body = bytes((b"abcdefghijklmnopqrstuvwxyz0123456789"[i % 36] for i in range(BODY)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with Tcpdump("lo", args.out, f"tcp port {port}") as dump:
        socks = []
        for n in range(args.connections):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            head = (
                f"POST /api/v1/uploads/{n} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Content-Type: application/octet-stream\r\nContent-Length: {BODY}\r\n"
                "Connection: close\r\n\r\n"
            ).encode()
            s.sendall(head + body[: BODY // 2])
            socks.append(s)
            time.sleep(0.002)
        time.sleep(0.2)
        answered = 0
        for s in socks:
            s.sendall(body[BODY // 2 :])
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            answered += data.startswith(b"HTTP/1.1 200")
            s.close()
        dump.stop()
    server.shutdown()
    print(f"{args.out}: {args.connections} connections, {answered} answered", file=sys.stderr)
    if answered != args.connections:
        sys.exit("not every upload was answered")


if __name__ == "__main__":
    main()
