#!/usr/bin/env python3
"""Record request and status lines that httparse rejects but real servers and clients
accept, answered by real servers on loopback.

Usage (as root, or with CAP_NET_RAW for tcpdump):

    python3 scripts/record_lenient_heads.py            # into tests/fixtures/lenient-heads/
    python3 scripts/record_lenient_heads.py --out-dir /tmp/lenient

Needs Python 3.11 (standard library only), tcpdump and nginx (Debian: `apt-get install -y
tcpdump nginx-light`). Reuses the helpers of ``scripts/record_samples.py``.

Two servers, one raw-socket client (``http.client`` cannot send such lines):

- nginx (1.22 here) answers an HTTP/0.9 line ``GET /index.html`` with the file and no head,
  and ``GET /a b c HTTP/1.1``, ``GET HTTP/1.1`` and a bare ``GET`` with ``400 Bad Request``
  (with a head) and a close: one connection each.
- A lenient raw-socket Python server, written here, reads request lines the way lenient
  servers do (Apache's ``HttpProtocolOptions Unsafe``, old nginx, embedded stacks): the
  version is the last word if it is ``HTTP/1.x``, the target is everything between; without
  a version it answers HTTP/0.9 style (a body, no head, then close). On one keep-alive
  connection the client sends, waiting for each answer: a normal GET, ``GET /a b c
  HTTP/1.1``, a normal GET, ``GET HTTP/1.1``, ``GET /odd-status`` (answered ``HTTP/1.1
  abc OK``, which clients such as curl accept), and a normal GET; then ``GET /old`` on a
  connection of its own (HTTP/0.9).

Written to ``<out-dir>/``: ``capture.pcap`` (``tcpdump -i lo`` on both ports),
``expected.jsonl`` (one line per exchange, from the client's own record: server,
connection, the request line sent, the status it read (0 when none could be read: no head
or a non-numeric status), the body it read, and the quirks of what it sent and got) and
``README.md``.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record_samples import (  # noqa: E402  (the helpers live beside this script)
    REPO,
    SOCKET_TIMEOUT,
    Nginx,
    Tcpdump,
    log,
    nginx_version,
    pick_port,
)

NGINX_CONF = """\
worker_processes 1;
pid {work}/nginx.pid;
events {{ worker_connections 16; }}
http {{
    access_log off;
    server_tokens off;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {work}/html;
    }}
}}
"""


class LenientServer:
    """A raw-socket HTTP/1 server that accepts what lenient servers accept."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_server(("127.0.0.1", port))
        self.sock.settimeout(SOCKET_TIMEOUT)
        self.stop = False
        self.thread = threading.Thread(target=self.serve, daemon=True)

    def __enter__(self) -> LenientServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop = True
        self.sock.close()
        self.thread.join(SOCKET_TIMEOUT)

    def serve(self) -> None:
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def handle(self, conn: socket.socket) -> None:
        conn.settimeout(SOCKET_TIMEOUT)
        f = conn.makefile("rb")
        try:
            while True:
                line = f.readline(8192)
                if not line:
                    return
                words = line.decode("latin-1").strip().split()
                if not words:
                    continue
                method, rest = words[0], words[1:]
                if rest and rest[-1] in ("HTTP/1.0", "HTTP/1.1"):
                    target = " ".join(rest[:-1])
                    while f.readline(8192) not in (b"\r\n", b"\n", b""):
                        pass  # header fields: this server needs none
                    body = f"{method} [{target}]\n".encode()
                    if target == "/odd-status":
                        status = "abc OK"
                    elif target == "":
                        status, body = "400 Bad Request", b"no target\n"
                    else:
                        status = "200 OK"
                    conn.sendall(
                        f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                        + body
                    )
                else:
                    # HTTP/0.9: the body alone, then close.
                    conn.sendall(f"old style answer to [{' '.join(rest)}]\n".encode())
                    return
        finally:
            f.close()
            conn.close()


class Client:
    """One raw connection; reads an answer by Content-Length, or to the close."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT)
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def _more(self) -> bool:
        d = self.sock.recv(65536)
        self.buf += d
        return bool(d)

    def exchange(self, request: bytes) -> tuple[int, bytes, bool]:
        """Sends `request`; returns (status, body, had_head). Status 0 when it is not a number."""
        self.sock.sendall(request)
        while not self.buf.startswith(b"HTTP/") and len(self.buf) < 5 and self._more():
            pass
        if not self.buf.startswith(b"HTTP/"):
            while self._more():
                pass
            body, self.buf = self.buf, b""
            return 0, body, False
        while b"\r\n\r\n" not in self.buf:
            if not self._more():
                raise EOFError("closed inside a head")
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        code = lines[0].split(" ")[1] if " " in lines[0] else ""
        status = int(code) if code.isdigit() and len(code) == 3 else 0
        fields = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
        n = int(fields.get("content-length", "0"))
        while len(self.buf) < n:
            if not self._more():
                raise EOFError("closed inside a body")
        body, self.buf = self.buf[:n], self.buf[n:]
        return status, body, True


def quirks(line: bytes, status_word: str | None, had_head: bool) -> list[str]:
    """What is odd about an exchange, from what the client sent and read."""
    words = line.decode().split()
    out = []
    has_version = words[-1].startswith("HTTP/1.")
    target = words[1:-1] if has_version else words[1:]
    if len(target) > 1:
        out.append("request-line-space-in-target")
    if not has_version:
        out.append("request-line-no-version")
    if not target:
        out.append("request-line-no-target")
    if status_word is not None and not (status_word.isdigit() and len(status_word) == 3):
        out.append("status-non-numeric")
    if not had_head:
        out.append("response-no-head")
    return out


def record(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    nginx_port, lenient_port = pick_port(18095), pick_port(18096)
    rows = []
    conn_no = 0

    def run_conn(server: str, port: int, lines: list[bytes], host: bool = True) -> None:
        nonlocal conn_no
        c = Client(port)
        try:
            for line in lines:
                has_version = line.split()[-1].startswith(b"HTTP/1.")
                req = line + b"\r\n"
                if has_version:
                    req += (f"Host: 127.0.0.1:{port}\r\n" if host else "").encode() + b"\r\n"
                status, body, had_head = c.exchange(req)
                word = None
                if had_head:
                    word = "abc" if line.endswith(b"/odd-status HTTP/1.1") else str(status)
                rows.append(
                    {
                        "server": server,
                        "connection": conn_no,
                        "request_line": line.decode(),
                        "status": status,
                        "body": body.decode("latin-1"),
                        "quirks": quirks(line, word, had_head),
                    }
                )
        finally:
            c.close()
            conn_no += 1

    with tempfile.TemporaryDirectory(prefix="shieldtap-lenient-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)  # nginx workers run as an unprivileged user
        (work / "html").mkdir()
        (work / "html" / "index.html").write_text("hello from nginx\n")
        cap = work / "capture.pcap"
        conf = NGINX_CONF.format(work=work, port=nginx_port)
        with Nginx(work, conf, [("127.0.0.1", nginx_port)]), LenientServer(lenient_port):
            dump = Tcpdump("lo", cap, f"tcp port {nginx_port} or tcp port {lenient_port}")
            with dump.start():
                run_conn("nginx", nginx_port, [b"GET /index.html"])
                run_conn("nginx", nginx_port, [b"GET /a b c HTTP/1.1"])
                run_conn("nginx", nginx_port, [b"GET HTTP/1.1"])
                run_conn("nginx", nginx_port, [b"GET"])
                run_conn(
                    "lenient",
                    lenient_port,
                    [
                        b"GET /before HTTP/1.1",
                        b"GET /a b c HTTP/1.1",
                        b"GET /middle HTTP/1.1",
                        b"GET HTTP/1.1",
                        b"GET /odd-status HTTP/1.1",
                        b"GET /after HTTP/1.1",
                    ],
                )
                run_conn("lenient", lenient_port, [b"GET /old"])
                dump.stop()
        (out_dir / "capture.pcap").write_bytes(cap.read_bytes())
    with open(out_dir / "expected.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps(row, sort_keys=True) + "\n")
    table = "\n".join(
        f"| {r['connection']} | {r['server']} | `{r['request_line']}` | {r['status']} | {', '.join(r['quirks']) or '-'} |"
        for r in rows
    )
    (out_dir / "README.md").write_text(
        f"""# Lenient heads: start lines httparse rejects, answered by real servers

Recorded by `scripts/record_lenient_heads.py`: a raw-socket Python client against nginx
{nginx_version()} (127.0.0.1:{nginx_port}) and the script's lenient raw-socket Python server
(127.0.0.1:{lenient_port}), captured with `tcpdump -i lo -s 0 -U 'tcp port {nginx_port} or tcp
port {lenient_port}'`. `expected.jsonl` is the client's record (status 0: no head, or a status
that is not a number).

| conn | server | request line | status | quirks |
|---|---|---|---|---|
{table}
"""
    )
    log(f"wrote {out_dir} ({(out_dir / 'capture.pcap').stat().st_size} bytes of capture)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", type=Path, default=REPO / "tests" / "fixtures" / "lenient-heads")
    record(ap.parse_args().out_dir)


if __name__ == "__main__":
    main()
