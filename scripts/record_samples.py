#!/usr/bin/env python3
"""Record shieldtap's bundled sample captures from real clients and servers on loopback.

Usage (as root, or with CAP_NET_RAW for tcpdump):

    python3 scripts/record_samples.py                     # all samples into samples/
    python3 scripts/record_samples.py --only nginx-pipelined --out-dir /tmp/samples
    python3 scripts/record_samples.py --list

Needs Python 3.11 (standard library only) and the binaries tcpdump, editcap (from
tshark/wireshark-common), curl and nginx (Debian: `apt-get install -y tcpdump tshark
curl nginx-light`).

Each sample is written to ``<out-dir>/<name>/``:

- ``capture.pcap`` or ``capture.pcapng``: what tcpdump saw on the loopback interface,
  filtered to the sample server's port;
- ``expected.jsonl``: the HTTP transactions the capture must yield, one JSON object per
  line in the order the client issued them, taken from the *client's* own record of what
  it sent and received (never from shieldtap): ``method``, ``path`` (the request target as
  sent, query string included), ``status`` (final status; 1xx interim responses are not
  transactions), ``response_body_bytes`` (body bytes after de-chunking, before content
  decoding), ``request_body_bytes`` and ``connection`` (index of the client's TCP
  connection, in the order the client opened them);
- ``README.md``: exactly how the capture was made.

Samples:

- ``curl-keepalive``: curl (two invocations, several URLs each over one keep-alive
  connection) against a Python ``http.server`` HTTP/1.1 JSON API; ``tcpdump -i lo``
  (Ethernet link type, microsecond pcap).
- ``httpclient-ipv6-any``: Python ``http.client`` over ``[::1]`` (keep-alive, a chunked
  request body) against an ``http.server`` sending chunked responses with trailers;
  ``tcpdump -i any`` (Linux SLL2 link type, nanosecond timestamps) saved as pcapng by
  ``editcap -F pcapng``.
- ``nginx-pipelined``: a raw-socket Python client pipelining several requests in one send
  to nginx (gzip on for JSON, so responses are chunked+gzip), plus a PUT with
  ``Expect: 100-continue``; ``tcpdump -i lo``.

The script is re-runnable and deterministic in content: fixed server ports (another free
port is used if one is busy), fixed request sequences, fixed file modification times and
gzip headers; only timestamps, client ports and ``Date`` headers differ between runs.
``scripts/gen_capture.py`` reuses the helpers defined here (Tcpdump, Nginx, RawHttpClient).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import http.client
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent
#: Upper bound for any helper subprocess (curl, editcap, nginx -t, ...).
SUBPROCESS_TIMEOUT = 60
#: Socket timeout for every client and server socket.
SOCKET_TIMEOUT = 10.0
#: Fixed modification time of files nginx serves (stable ETag / Last-Modified).
FIXED_MTIME = 1_767_225_600  # 2026-01-01T00:00:00Z

# Dummy credentials: realistic shapes, no real secrets.
BEARER = (
    "Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiJ1c2VyLTEyMyIsImV4cCI6NDEwMjQ0NDgwMH0.ZHVtbXktc2lnbmF0dXJlLW5vdC1yZWFs"
)
APPROOV_TOKEN = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJleHAiOjQxMDI0NDQ4MDAsImlwIjoiMTI3LjAuMC4xIiwiZGlkIjoic2FtcGxlLWRldmljZSJ9."
    "c2FtcGxlLWFwcHJvb3YtdG9rZW4tZHVtbXk"
)
APP_UA = "ShopApp/5.2.1 (Android 14; Pixel 8)"


def log(msg: str) -> None:
    print(f"[record] {msg}", file=sys.stderr, flush=True)


def compact_json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def port_is_free(port: int, family: socket.AddressFamily, host: str) -> bool:
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is fine
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def pick_port(preferred: int, family: socket.AddressFamily = socket.AF_INET, host: str = "127.0.0.1") -> int:
    """`preferred` if it is free on `host`, else a free ephemeral port."""
    if preferred and port_is_free(preferred, family, host):
        return preferred
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    """Blocks until a TCP connect to (host, port) succeeds."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError as e:
            last = e
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host}:{port} after {timeout}s: {last}")


def run(cmd: list[str], timeout: float = SUBPROCESS_TIMEOUT, **kw) -> subprocess.CompletedProcess:
    """subprocess.run with a timeout, captured output and a readable error."""
    try:
        p = subprocess.run(cmd, timeout=timeout, capture_output=True, text=True, **kw)
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"timed out after {timeout}s: {shlex.join(cmd)}") from e
    if p.returncode != 0:
        raise RuntimeError(f"exit {p.returncode}: {shlex.join(cmd)}\n{p.stdout}\n{p.stderr}")
    return p


# --------------------------------------------------------------------------------------
# tcpdump


class DroppedPackets(RuntimeError):
    """tcpdump reported packets dropped by the kernel: the capture is incomplete."""


def with_attempts(prefix: str, attempts: int, fn: Callable[[Path], object], label: str = "") -> object:
    """Runs ``fn(work)`` in a fresh scratch directory until it records without dropped
    packets, at most ``attempts`` times (the last DroppedPackets is re-raised); returns what
    it returns. The scratch directory is removed after each try, copied first to
    ``$KEEP_WORK/<its name>`` when KEEP_WORK is set (debugging)."""
    for attempt in range(1, attempts + 1):
        work = Path(tempfile.mkdtemp(prefix=prefix))
        try:
            return fn(work)
        except DroppedPackets as e:
            log(f"{label}attempt {attempt} of {attempts}: {e}")
            if attempt == attempts:
                raise
        finally:
            if os.environ.get("KEEP_WORK"):
                shutil.copytree(work, Path(os.environ["KEEP_WORK"]) / work.name, dirs_exist_ok=True)
            shutil.rmtree(work, ignore_errors=True)
    raise AssertionError("attempts must be at least 1")


class Tcpdump:
    """Runs tcpdump writing a capture file; ``stop()`` checks no packet was dropped.

    Use as a context manager: the process is always ended (SIGINT, then SIGKILL).
    """

    def __init__(
        self,
        interface: str,
        out: Path,
        bpf: str,
        *,
        buffer_kib: int = 65536,
        packet_buffered: bool = True,
        immediate: bool = False,
        extra: Iterable[str] = (),
    ) -> None:
        self.cmd = ["tcpdump", "-i", interface, "-n", "-s", "0", "-B", str(buffer_kib)]
        if packet_buffered:
            self.cmd.append("-U")
        if immediate:
            self.cmd.append("--immediate-mode")
        self.cmd += [*extra, "-w", str(out), bpf]
        self.out = out
        self.proc: subprocess.Popen | None = None
        self._lines: list[str] = []
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None
        self.captured: int | None = None
        self.received: int | None = None
        self.dropped: int | None = None

    def display_cmd(self, out_name: str | None = None) -> str:
        cmd = list(self.cmd)
        if out_name is not None:
            cmd[cmd.index("-w") + 1] = out_name
        return shlex.join(cmd)

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self._lines.append(line.rstrip("\n"))
            if "listening on" in line:
                self._ready.set()
        self._ready.set()

    def start(self, timeout: float = 10.0) -> Tcpdump:
        if shutil.which("tcpdump") is None:
            raise RuntimeError("tcpdump is not installed (apt-get install -y tcpdump)")
        self.proc = subprocess.Popen(
            self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        if not self._ready.wait(timeout) or self.proc.poll() is not None:
            self.kill()
            raise RuntimeError(f"tcpdump did not start: {shlex.join(self.cmd)}\n" + "\n".join(self._lines))
        time.sleep(0.3)  # the ring is live once "listening on" is printed; a little margin
        return self

    def stop(self, settle: float = 1.5, timeout: float = 60.0) -> None:
        """Lets in-flight packets land, stops tcpdump with SIGINT and checks its counters.

        Without immediate mode libpcap hands packets over in ring blocks that the kernel
        retires after a timeout (1 s in tcpdump): `settle` must outlast it, or the last
        packets are counted as received but never written.
        """
        if self.proc is None:
            return
        time.sleep(settle)
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired as e:
            self.kill()
            raise RuntimeError("tcpdump did not stop on SIGINT") from e
        if self._reader is not None:
            self._reader.join(5)
        text = "\n".join(self._lines)
        nums = {}
        for key, pat in [
            ("captured", r"(\d+) packets? captured"),
            ("received", r"(\d+) packets? received by filter"),
            ("dropped", r"(\d+) packets? dropped by kernel"),
        ]:
            m = re.search(pat, text)
            nums[key] = int(m.group(1)) if m else None
        self.captured, self.received, self.dropped = nums["captured"], nums["received"], nums["dropped"]
        if self.dropped is None or self.captured is None:
            raise RuntimeError(f"cannot read tcpdump's statistics:\n{text}")
        if self.dropped != 0:
            raise DroppedPackets(f"tcpdump dropped {self.dropped} packets:\n{text}")
        if self.captured == 0:
            raise RuntimeError(f"tcpdump captured nothing:\n{text}")
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self.proc = None

    def __enter__(self) -> Tcpdump:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill()


# --------------------------------------------------------------------------------------
# nginx


class Nginx:
    """nginx in the foreground (``daemon off``) with a config and prefix in ``workdir``."""

    def __init__(self, workdir: Path, conf_text: str, ready: list[tuple[str, int]]) -> None:
        self.workdir = workdir
        self.conf = workdir / "nginx.conf"
        self.conf_text = conf_text
        self.ready = ready
        self.proc: subprocess.Popen | None = None

    def base_cmd(self) -> list[str]:
        return ["nginx", "-p", str(self.workdir), "-c", str(self.conf), "-e", str(self.workdir / "error.log")]

    def start(self) -> Nginx:
        if shutil.which("nginx") is None:
            raise RuntimeError("nginx is not installed (apt-get install -y nginx-light)")
        self.conf.write_text(self.conf_text)
        run([*self.base_cmd(), "-t", "-q"])
        with open(self.workdir / "nginx.stderr", "w") as err:
            self.proc = subprocess.Popen(
                self.base_cmd(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,  # its own process group: stop() can end master and workers
            )
        try:
            for host, port in self.ready:
                wait_for_port(host, port)
        except Exception:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        pgid = self.proc.pid
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: workers finish, master exits
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(pgid, signal.SIGKILL)  # leftovers of the group this script started
        except ProcessLookupError:
            pass
        if self.proc.poll() is None:
            self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def nginx_version() -> str:
    p = subprocess.run(["nginx", "-v"], capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    return (p.stderr or p.stdout).strip().replace("nginx version: ", "").replace("nginx/", "")


# --------------------------------------------------------------------------------------
# A minimal raw-socket HTTP/1.1 client (pipelining needs one: http.client cannot do it)


@dataclass
class RawResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes  # after de-chunking, before content decoding
    chunked: bool = False
    trailers: list[tuple[str, str]] = field(default_factory=list)
    interim: list[int] = field(default_factory=list)  # 1xx statuses seen before this one

    def header(self, name: str) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None


class RawHttpClient:
    """One TCP connection; sends raw bytes and parses responses (Content-Length, chunked,
    read-until-close; no body for HEAD, 1xx, 204, 304)."""

    def __init__(self, host: str, port: int, timeout: float = SOCKET_TIMEOUT, nodelay: bool = True) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        if nodelay:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.local_port = self.sock.getsockname()[1]
        self.family = self.sock.family
        self.buf = bytearray()
        self.pos = 0
        self.eof = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> RawHttpClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _fill(self) -> bool:
        if self.eof:
            return False
        data = self.sock.recv(262144)
        if not data:
            self.eof = True
            return False
        if self.pos > 65536 and self.pos * 2 > len(self.buf):
            del self.buf[: self.pos]
            self.pos = 0
        self.buf += data
        return True

    def _readline(self) -> bytes:
        while True:
            i = self.buf.find(b"\r\n", self.pos)
            if i >= 0:
                line = bytes(self.buf[self.pos : i])
                self.pos = i + 2
                return line
            if not self._fill():
                raise EOFError("connection closed mid-line")

    def _read_exact(self, n: int) -> bytes:
        while len(self.buf) - self.pos < n:
            if not self._fill():
                raise EOFError(f"connection closed: wanted {n} bytes")
        out = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return out

    def _read_to_close(self) -> bytes:
        while self._fill():
            pass
        out = bytes(self.buf[self.pos :])
        self.pos = len(self.buf)
        return out

    def _read_headers(self) -> list[tuple[str, str]]:
        headers = []
        while True:
            line = self._readline()
            if not line:
                return headers
            k, _, v = line.decode("latin-1").partition(":")
            headers.append((k.strip(), v.strip()))

    def read_head(self) -> tuple[int, str, list[tuple[str, str]]]:
        line = self._readline().decode("latin-1")
        parts = line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            raise ValueError(f"bad status line {line!r}")
        return int(parts[1]), (parts[2] if len(parts) > 2 else ""), self._read_headers()

    def read_response(self, method: str, interim: list[int] | None = None) -> RawResponse:
        """Reads the final response to a `method` request (1xx interim ones are skipped and
        listed in ``interim``)."""
        interim = list(interim or [])
        while True:
            status, reason, headers = self.read_head()
            if 100 <= status < 200 and status != 101:
                interim.append(status)
                continue
            break
        resp = RawResponse(status, reason, headers, b"", interim=interim)
        te = (resp.header("Transfer-Encoding") or "").lower()
        cl = resp.header("Content-Length")
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return resp
        if "chunked" in te:
            resp.chunked = True
            parts = []
            while True:
                size = int(self._readline().split(b";", 1)[0].strip(), 16)
                if size == 0:
                    resp.trailers = self._read_headers()
                    break
                parts.append(self._read_exact(size))
                if self._read_exact(2) != b"\r\n":
                    raise ValueError("chunk not followed by CRLF")
            resp.body = b"".join(parts)
        elif cl is not None:
            resp.body = self._read_exact(int(cl))
        else:
            resp.body = self._read_to_close()
        return resp


def build_request(
    method: str, target: str, host: str, headers: Iterable[tuple[str, str]] = (), body: bytes | None = None
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers]
    if body is not None and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in headers):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def chunk_encode(pieces: Iterable[bytes]) -> bytes:
    out = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p)
    return out + b"0\r\n\r\n"


# --------------------------------------------------------------------------------------
# Common sample bookkeeping


@dataclass
class Tx:
    """One transaction as the client recorded it."""

    connection: int
    method: str
    target: str
    status: int
    response_body_bytes: int
    request_body_bytes: int
    note: str = ""
    interim: list[int] = field(default_factory=list)

    def expected_line(self) -> str:
        return json.dumps(
            {
                "connection": self.connection,
                "method": self.method,
                "path": self.target,
                "status": self.status,
                "request_body_bytes": self.request_body_bytes,
                "response_body_bytes": self.response_body_bytes,
            }
        )


def tx_table(txs: list[Tx]) -> str:
    rows = [
        "| # | conn | method | target | status | req body | resp body | notes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, t in enumerate(txs, 1):
        note = t.note + (f" (interim {', '.join(map(str, t.interim))} first)" if t.interim else "")
        rows.append(
            f"| {i} | {t.connection} | {t.method} | `{t.target}` | {t.status} | "
            f"{t.request_body_bytes} | {t.response_body_bytes} | {note} |"
        )
    return "\n".join(rows)


def write_sample(dest: Path, capture_src: Path, capture_name: str, txs: list[Tx], readme: str) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for old in ("capture.pcap", "capture.pcapng"):
        (dest / old).unlink(missing_ok=True)
    shutil.copyfile(capture_src, dest / capture_name)
    (dest / "expected.jsonl").write_text("".join(t.expected_line() + "\n" for t in txs))
    (dest / "README.md").write_text(readme)
    size = (dest / capture_name).stat().st_size
    if size >= 200_000:
        raise RuntimeError(f"{dest / capture_name} is {size} bytes, over the 200 KB budget")


def capinfo(path: Path) -> str:
    """Link type and packet count, from tcpdump's own reading of the file."""
    p = subprocess.run(["tcpdump", "-r", str(path), "-n", "-c", "1"], capture_output=True, text=True, timeout=60)
    m = re.search(r"link-type (\S+)", p.stderr)
    return m.group(1) if m else "unknown"


# --------------------------------------------------------------------------------------
# Sample 1: curl-keepalive


USERS = {
    123: {"id": 123, "name": "Ada Lovelace", "email": "ada@example.test", "plan": "pro", "roles": ["buyer"]},
    456: {"id": 456, "name": "Alan Turing", "email": "alan@example.test", "plan": "free", "roles": ["buyer", "seller"]},
}


def catalog(n: int) -> dict:
    return {
        "items": [
            {"sku": f"SKU-{i:05d}", "name": f"Widget {i}", "price_cents": 199 + 37 * i, "tags": ["blue", "small"]}
            for i in range(n)
        ],
        "currency": "EUR",
    }


class ApiHandler(BaseHTTPRequestHandler):
    """A small HTTP/1.1 keep-alive JSON API (sample ``curl-keepalive``)."""

    protocol_version = "HTTP/1.1"
    server_version = "SampleApi/1.0"
    sys_version = ""
    wbufsize = 1 << 16  # headers and body leave in one write (flushed per response)
    timeout = SOCKET_TIMEOUT

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (stdlib's name)
        pass

    def _read_body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status: int, body: bytes = b"", *, ctype: str | None = "application/json", extra=(), head=False):
        self.send_response(status)
        if ctype and status not in (204, 304):
            self.send_header("Content-Type", ctype)
        for k, v in extra:
            self.send_header(k, v)
        if status not in (204, 304):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and not head and status not in (204, 304):
            self.wfile.write(body)

    def _route(self, method: str) -> None:
        url = urlsplit(self.path)
        parts = [p for p in url.path.split("/") if p]
        body = self._read_body() if method in ("POST", "PUT", "PATCH") else b""
        head = method == "HEAD"
        if parts[:3] == ["api", "v1", "users"] and len(parts) == 4 and method in ("GET", "HEAD"):
            user = USERS.get(int(parts[3])) if parts[3].isdigit() else None
            if user is None:
                return self._send(404, compact_json({"error": "not_found", "path": url.path}), head=head)
            etag = f'"user-{user["id"]}-v3"'
            if self.headers.get("If-None-Match") == etag:
                return self._send(304, extra=[("ETag", etag), ("Cache-Control", "private, max-age=60")])
            return self._send(
                200, compact_json(user), extra=[("ETag", etag), ("Cache-Control", "private, max-age=60")], head=head
            )
        if url.path == "/api/v1/orders" and method == "GET":
            page = int(dict(p.split("=", 1) for p in url.query.split("&") if "=" in p).get("page", "1"))
            orders = [{"id": 1000 + 10 * page + i, "total_cents": 1299 + i, "state": "shipped"} for i in range(5)]
            return self._send(200, compact_json({"page": page, "orders": orders, "next": page + 1}))
        if url.path == "/api/v1/orders" and method == "POST":
            req = json.loads(body)
            order = {"id": 77, "items": req.get("items", []), "state": "created"}
            return self._send(201, compact_json(order), extra=[("Location", "/api/v1/orders/77")])
        if parts[:3] == ["api", "v1", "orders"] and len(parts) == 4:
            if method == "GET":
                return self._send(200, compact_json({"id": int(parts[3]), "state": "created", "items": ["SKU-00001"]}))
            if method == "DELETE":
                return self._send(204)
        if url.path == "/api/v1/login" and method == "POST":
            creds = json.loads(body)
            token = {"access_token": "dummy-access-" + creds["username"], "token_type": "Bearer", "expires_in": 3600}
            return self._send(200, compact_json(token), extra=[("Cache-Control", "no-store")])
        if url.path == "/api/v1/catalog" and method == "GET":
            raw = compact_json(catalog(30))
            if "gzip" in (self.headers.get("Accept-Encoding") or ""):
                return self._send(
                    200,
                    gzip.compress(raw, compresslevel=6, mtime=0),
                    extra=[("Content-Encoding", "gzip"), ("Vary", "Accept-Encoding")],
                )
            return self._send(200, raw)
        if url.path == "/api/v1/feed" and method == "GET":
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(4):
                line = compact_json({"event": "price_drop", "sku": f"SKU-{i:05d}", "seq": i}) + b"\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                self.wfile.flush()  # each chunk its own segment, as a streaming server would
            self.wfile.write(b"0\r\n\r\n")
            return None
        if url.path == "/api/v1/admin/stats":
            return self._send(403, compact_json({"error": "forbidden"}))
        if parts[:3] == ["api", "v1", "users"] and len(parts) == 5 and parts[4] == "profile" and method == "PUT":
            return self._send(200, compact_json({"updated": True, "bytes": len(body)}))
        return self._send(404, compact_json({"error": "not_found", "path": url.path}), head=head)

    def do_GET(self) -> None:
        self._route("GET")

    def do_HEAD(self) -> None:
        self._route("HEAD")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PUT(self) -> None:
        self._route("PUT")

    def do_DELETE(self) -> None:
        self._route("DELETE")


class ServerThread:
    """Runs a ThreadingHTTPServer in a thread; always shut down on exit."""

    def __init__(self, server: ThreadingHTTPServer) -> None:
        self.server = server
        self.thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    def __enter__(self) -> ThreadingHTTPServer:
        self.thread.start()
        return self.server

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@dataclass
class CurlReq:
    method: str
    target: str
    headers: list[str] = field(default_factory=list)
    data: str | None = None
    note: str = ""


CURL_WRITE_OUT = (
    "%{local_port}\\t%{method}\\t%{response_code}\\t%{size_download}\\t"
    "%{size_upload}\\t%{num_connects}\\t%{url_effective}\\n"
)


def curl_args(reqs: list[CurlReq], base: str, outdir: Path, tag: str) -> list[str]:
    """One curl invocation fetching all `reqs` (``--next`` between them: per-URL options,
    one connection cache, so curl reuses the keep-alive connection)."""
    args = ["curl"]
    for i, r in enumerate(reqs):
        if i:
            args.append("--next")
        args += ["--http1.1", "-sS", "--max-time", "10", "-o", str(outdir / f"{tag}-{i}.body"), "-w", CURL_WRITE_OUT]
        args += ["-A", APP_UA, "-H", f"Authorization: {BEARER}", "-H", f"Approov-Token: {APPROOV_TOKEN}"]
        args += ["-H", "Accept: application/json"]
        for h in r.headers:
            args += ["-H", h]
        if r.method == "HEAD":
            args.append("--head")
        elif r.data is not None:
            args += ["-X", r.method, "--data-binary", r.data]
        elif r.method != "GET":
            args += ["-X", r.method]
        args.append(base + r.target)
    return args


def run_curl(reqs: list[CurlReq], base: str, outdir: Path, tag: str, conn_base: int) -> tuple[list[Tx], list[str]]:
    args = curl_args(reqs, base, outdir, tag)
    out = run(args).stdout
    lines = [ln for ln in out.splitlines() if ln.strip()]
    if len(lines) != len(reqs):
        raise RuntimeError(f"curl reported {len(lines)} transfers for {len(reqs)} URLs:\n{out}")
    txs = []
    ports: list[str] = []
    for i, (r, ln) in enumerate(zip(reqs, lines, strict=True)):
        local_port, method, code, size_dl, size_ul, connects, url = ln.split("\t")
        if local_port not in ports:
            ports.append(local_port)
        if method != r.method:
            raise RuntimeError(f"curl used {method} for {r.method} {url}")
        size_dl_i = int(size_dl)
        body_file = outdir / f"{tag}-{i}.body"
        if r.method != "HEAD" and body_file.exists() and body_file.stat().st_size != size_dl_i:
            raise RuntimeError(f"curl size_download {size_dl_i} but wrote {body_file.stat().st_size} bytes")
        target = url[len(base) :]
        txs.append(Tx(conn_base + ports.index(local_port), method, target, int(code), size_dl_i, int(size_ul), r.note))
        if i > 0 and connects != "0":
            log(f"warning: curl opened a new connection for {url}")
    return txs, [display_curl(args, outdir)]


CURL_VARS = {
    CURL_WRITE_OUT: '"$W"',
    APP_UA: '"$UA"',
    f"Authorization: {BEARER}": '"Authorization: $BEARER"',
    f"Approov-Token: {APPROOV_TOKEN}": '"Approov-Token: $APPROOV_TOKEN"',
}


def curl_vars_block() -> str:
    return "\n".join(
        [
            f"W={shlex.quote(CURL_WRITE_OUT)}",
            f"UA={shlex.quote(APP_UA)}",
            f"BEARER={shlex.quote(BEARER)}",
            f"APPROOV_TOKEN={shlex.quote(APPROOV_TOKEN)}",
        ]
    )


def display_curl(args: list[str], outdir: Path) -> str:
    """The exact command, readable: shell variables for the long repeated values, one
    line per URL, `$TMP` for the scratch directory."""
    words = []
    for a in args:
        if a == "--next":
            words.append("\\\n  --next")
        elif a in CURL_VARS:
            words.append(CURL_VARS[a])
        elif a.startswith(str(outdir)):
            words.append('"$TMP' + a[len(str(outdir)) :] + '"')
        else:
            words.append(shlex.quote(a))
    return " ".join(words)


def record_curl_keepalive(dest: Path, work: Path) -> None:
    port = pick_port(18081)
    host = "127.0.0.1"
    base = f"http://{host}:{port}"
    pcap = work / "capture.pcap"
    server = ThreadingHTTPServer((host, port), ApiHandler)
    server.daemon_threads = True
    run1 = [
        CurlReq("GET", "/api/v1/users/123", note="JSON, Content-Length"),
        CurlReq("GET", "/api/v1/orders?page=2", note="query string"),
        CurlReq(
            "POST",
            "/api/v1/login",
            ["Content-Type: application/json"],
            '{"username":"ada","password":"correct-horse-battery-staple","device_id":"sample-device"}',
            note="JSON request body",
        ),
        CurlReq("GET", "/api/v1/catalog", ["Accept-Encoding: gzip"], note="gzip-encoded JSON (not decoded by curl)"),
        CurlReq("GET", "/api/v1/feed", note="chunked response, 4 chunks"),
        CurlReq("GET", "/api/v1/users/999", note="404"),
        CurlReq("GET", "/api/v1/users/123", ['If-None-Match: "user-123-v3"'], note="304 Not Modified"),
        CurlReq("HEAD", "/api/v1/users/123", note="HEAD: Content-Length but no body"),
    ]
    run2 = [
        CurlReq(
            "POST",
            "/api/v1/orders",
            ["Content-Type: application/json"],
            '{"items":["SKU-00001","SKU-00007"],"coupon":"WELCOME10"}',
            note="201 Created",
        ),
        CurlReq("GET", "/api/v1/orders/77?expand=items", note="query string"),
        CurlReq(
            "PUT",
            "/api/v1/users/123/profile",
            ["Content-Type: application/json"],
            '{"name":"Ada King","newsletter":false}',
        ),
        CurlReq("GET", "/api/v1/admin/stats", note="403"),
        CurlReq("DELETE", "/api/v1/orders/77", note="204 No Content"),
    ]
    td = Tcpdump("lo", pcap, f"tcp port {port}")
    cmds: list[str] = []
    with ServerThread(server), td:
        t1, c1 = run_curl(run1, base, work, "run1", 0)
        t2, c2 = run_curl(run2, base, work, "run2", 1 + max(t.connection for t in t1))
        cmds = c1 + c2
        td.stop()
    txs = t1 + t2
    packets = td.captured
    linktype = capinfo(pcap)
    readme = f"""# curl-keepalive

curl against a Python `http.server` HTTP/1.1 keep-alive JSON API on `127.0.0.1:{port}`,
captured on the loopback interface. Recorded by `scripts/record_samples.py` (re-run it to
re-record; only timestamps, client ports and `Date` headers change).

- **File**: `capture.pcap` (pcap, microsecond timestamps), link type `{linktype}` (Ethernet).
- **Server**: `ApiHandler` in `scripts/record_samples.py`: `ThreadingHTTPServer`,
  `protocol_version = "HTTP/1.1"` (keep-alive), JSON with `Content-Length`, a gzip-encoded
  JSON response (`Content-Encoding: gzip`, gzip mtime 0), a chunked NDJSON stream, 404,
  304 for a matching `If-None-Match`, HEAD, 201 with `Location`, 204, 403.
- **Client**: curl {curl_version()} in two invocations; each fetches several URLs over one
  connection (`--next` separates per-URL options; curl keeps one connection cache, so the
  connection is reused). Every request carries `User-Agent: {APP_UA}`,
  `Authorization: Bearer <dummy JWT>` and `Approov-Token: <dummy JWT-shaped string>`.
  `Accept-Encoding: gzip` is sent by hand (no `--compressed`), so curl keeps the body as
  it came: `size_download` is the body after de-chunking, before content decoding.
- **Capture**: started before the clients and stopped with SIGINT after them (tcpdump
  reported 0 packets dropped by kernel):

  ```sh
  {td.display_cmd("capture.pcap")}
  ```

- **Client commands** (`$TMP` is a scratch directory for the bodies):

```sh
{curl_vars_block()}
{chr(10).join(cmds)}
```

## Transactions

`expected.jsonl` lists them in the order curl issued them, from curl's `--write-out`
record (`%{{method}}`, `%{{response_code}}`, `%{{size_download}}`, `%{{size_upload}}`,
`%{{local_port}}` for the connection, `%{{url_effective}}` for the target):

{tx_table(txs)}
"""
    write_sample(dest, pcap, "capture.pcap", txs, readme)
    log(f"curl-keepalive: {packets} packets, {len(txs)} transactions, link type {linktype}")


def curl_version() -> str:
    p = subprocess.run(["curl", "--version"], capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    return p.stdout.split()[1] if p.stdout else "?"


# --------------------------------------------------------------------------------------
# Sample 2: httpclient-ipv6-any


class V6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True


class ChunkedHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 API answering in chunked encoding with trailers; accepts chunked request
    bodies (sample ``httpclient-ipv6-any``)."""

    protocol_version = "HTTP/1.1"
    server_version = "ChunkedApi/2.0"
    sys_version = ""
    wbufsize = 1 << 16
    timeout = SOCKET_TIMEOUT

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        pass

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            data = bytearray()
            while True:
                size = int(self.rfile.readline(65537).split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailer section
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.read(2)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send_chunked(self, status: int, pieces: list[bytes], extra=(), ctype="application/json") -> None:
        body = b"".join(pieces)
        trailers = [
            ("X-Checksum", "sha256:" + hashlib.sha256(body).hexdigest()[:32]),
            ("X-Piece-Count", str(len(pieces))),
        ]
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        for k, v in extra:
            self.send_header(k, v)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Trailer", ", ".join(k for k, _ in trailers))
        self.end_headers()
        for p in pieces:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(p), p))
            self.wfile.flush()
        self.wfile.write(b"0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in trailers).encode() + b"\r\n")

    def _send_plain(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        if status != 204:
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if status != 204:
            self.wfile.write(body)

    def _route(self, method: str) -> None:
        url = urlsplit(self.path)
        parts = [p for p in url.path.split("/") if p]
        body = self._read_body() if method in ("POST", "PUT") else b""
        if url.path == "/v2/items" and method == "GET":
            items = [compact_json({"id": i, "title": f"Item {i}", "stock": 3 * i}) for i in range(1, 7)]
            pieces = [b"[" + items[0]] + [b"," + it for it in items[1:]] + [b"]"]
            return self._send_chunked(200, pieces)
        if parts[:2] == ["v2", "items"] and len(parts) == 3 and parts[2].isdigit():
            if method == "DELETE":
                return self._send_plain(204, b"")
            doc = compact_json({"id": int(parts[2]), "title": f"Item {parts[2]}", "description": "x" * 400})
            if "gzip" in (self.headers.get("Accept-Encoding") or ""):
                z = gzip.compress(doc, compresslevel=6, mtime=0)
                mid = len(z) // 2
                return self._send_chunked(200, [z[:mid], z[mid:]], extra=[("Content-Encoding", "gzip")])
            third = len(doc) // 3
            return self._send_chunked(200, [doc[:third], doc[third : 2 * third], doc[2 * third :]])
        if url.path == "/v2/upload" and method == "POST":
            resp = compact_json({"received_bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()})
            return self._send_chunked(201, [resp], extra=[("Location", "/v2/uploads/1")])
        if url.path == "/v2/health" and method == "GET":
            return self._send_plain(200, b'{"status":"ok"}')
        return self._send_plain(404, compact_json({"error": "not_found", "path": url.path}))

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_DELETE(self) -> None:
        self._route("DELETE")


def record_httpclient_ipv6(dest: Path, work: Path) -> None:
    host = "::1"
    port = pick_port(18082, socket.AF_INET6, host)
    raw = work / "capture-nano.pcap"
    pcapng = work / "capture.pcapng"
    server = V6Server((host, port), ChunkedHandler)
    txs: list[Tx] = []
    ports: list[int] = []
    common = {"User-Agent": "inventory-sync/3.1 (python http.client)", "Authorization": BEARER}

    def exchange(conn: http.client.HTTPConnection, method: str, target: str, note: str = "", **kw) -> None:
        chunks = kw.pop("chunks", None)
        body = kw.pop("body", None)
        headers = {**common, **kw.pop("headers", {})}
        sent = 0
        if chunks is not None:
            sent = sum(len(c) for c in chunks)
            conn.request(method, target, body=iter(chunks), headers=headers, encode_chunked=True)
        else:
            sent = len(body or b"")
            conn.request(method, target, body=body, headers=headers)
        assert conn.sock is not None
        local = conn.sock.getsockname()[1]
        if local not in ports:
            ports.append(local)
        resp = conn.getresponse()
        data = resp.read()  # de-chunked by http.client, not content-decoded
        txs.append(Tx(ports.index(local), method, target, resp.status, len(data), sent, note))

    td = Tcpdump("any", raw, f"tcp port {port}", extra=["--time-stamp-precision=nano"])
    with ServerThread(server), td:
        conn = http.client.HTTPConnection(host, port, timeout=SOCKET_TIMEOUT)
        try:
            exchange(conn, "GET", "/v2/items", "chunked, 8 chunks, trailers X-Checksum, X-Piece-Count")
            exchange(conn, "GET", "/v2/items/7?fields=title,description", "chunked, 3 chunks, trailers")
            upload = [compact_json({"sku": f"SKU-{i:05d}", "qty": i}) + b"\n" for i in range(5)]
            exchange(
                conn,
                "POST",
                "/v2/upload",
                "chunked REQUEST body (5 chunks, encode_chunked=True); chunked 201 response",
                chunks=upload,
                headers={"Content-Type": "application/x-ndjson", "Approov-Token": APPROOV_TOKEN},
            )
            exchange(conn, "GET", "/v2/items/8", "gzip + chunked + trailers", headers={"Accept-Encoding": "gzip"})
            exchange(conn, "GET", "/v2/missing", "404 with Content-Length")
            exchange(conn, "DELETE", "/v2/items/7", "204")
        finally:
            conn.close()
        conn = http.client.HTTPConnection(host, port, timeout=SOCKET_TIMEOUT)
        try:
            exchange(conn, "GET", "/v2/health", "second connection, Connection: close", headers={"Connection": "close"})
        finally:
            conn.close()
        td.stop()
    run(["editcap", "-F", "pcapng", str(raw), str(pcapng)])
    linktype = capinfo(pcapng)
    readme = f"""# httpclient-ipv6-any

Python `http.client` against a Python `http.server` over IPv6 loopback (`[::1]:{port}`),
captured on the `any` pseudo-interface. Recorded by `scripts/record_samples.py`.

- **File**: `capture.pcapng` (pcapng, nanosecond timestamps: `if_tsresol` 9), link type
  `{linktype}` (Linux cooked capture v2, SLL2), IPv6.
- **Server**: `ChunkedHandler` in `scripts/record_samples.py`: `ThreadingHTTPServer` on
  `AF_INET6`, HTTP/1.1 keep-alive; answers with `Transfer-Encoding: chunked` and a
  trailer section (`Trailer: X-Checksum, X-Piece-Count`), one flush per chunk; decodes
  chunked request bodies; a gzip body sent in two chunks; 404 and 204 without chunking.
- **Client**: Python {sys.version.split()[0]} `http.client.HTTPConnection("::1", {port})`, one
  keep-alive connection for six requests (the POST body is an iterator sent with
  `encode_chunked=True`), then a second connection with `Connection: close`. Requests
  carry `Authorization: Bearer <dummy JWT>`; the POST also `Approov-Token: <dummy>`.
- **Capture**: tcpdump with nanosecond timestamps, stopped with SIGINT (0 packets dropped
  by kernel), then converted to pcapng:

  ```sh
  {td.display_cmd("capture-nano.pcap")}
  editcap -F pcapng capture-nano.pcap capture.pcapng
  ```

## Transactions

`expected.jsonl` is the client's record: `resp.status`, `len(resp.read())` (http.client
de-chunks and does not decode gzip), bytes it sent as body, and the local port of
`conn.sock` for the connection:

{tx_table(txs)}
"""
    write_sample(dest, pcapng, "capture.pcapng", txs, readme)
    log(f"httpclient-ipv6-any: {td.captured} packets, {len(txs)} transactions, link type {linktype}")


# --------------------------------------------------------------------------------------
# Sample 3: nginx-pipelined


def nginx_conf_head(work: Path, workers: int, connections: int) -> str:
    """The part of an nginx config every recording shares: a foreground server that keeps
    all its files under `work`, opening the `http {` block (callers add settings, servers
    and the closing brace)."""
    return f"""daemon off;
master_process on;
worker_processes {workers};
user root;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections {connections}; }}
http {{
    access_log off;
    client_body_temp_path {work}/tmp/body;
    proxy_temp_path {work}/tmp/proxy;
    fastcgi_temp_path {work}/tmp/fastcgi;
    uwsgi_temp_path {work}/tmp/uwsgi;
    scgi_temp_path {work}/tmp/scgi;
    types {{ application/json json; text/html html; }}
    default_type application/json;
"""


def nginx_sample_conf(work: Path, port: int) -> str:
    return "# nginx config for the nginx-pipelined sample (scripts/record_samples.py)\n" + nginx_conf_head(
        work, 1, 256
    ) + f"""    server_tokens on;
    keepalive_timeout 30s;
    keepalive_requests 1000;
    gzip on;
    gzip_types application/json;
    gzip_min_length 1;
    gzip_comp_level 6;
    server {{
        listen 127.0.0.1:{port};
        server_name api.example.test;
        root {work}/www;
        location /api/ {{ }}
        location = /api/ok {{ return 200 '{{"ok":true,"service":"catalog"}}\\n'; }}
        location = /api/forbidden {{ return 403; }}
        location = /api/orders {{ return 201 '{{"id":1001,"state":"created"}}\\n'; }}
        location = /api/login {{ return 200 '{{"access_token":"dummy-access-token","expires_in":3600}}\\n'; }}
        location /upload/ {{
            root {work}/dav;
            dav_methods PUT DELETE;
            create_full_put_path on;
            client_max_body_size 1m;
        }}
    }}
}}
"""


def prepare_nginx_docroot(work: Path) -> None:
    for d in ("www/api/users", "dav", "tmp"):
        (work / d).mkdir(parents=True, exist_ok=True)
    files = {
        "www/api/catalog.json": json.dumps(catalog(40), indent=1).encode(),
        "www/api/users/42.json": json.dumps({**USERS[123], "id": 42, "bio": "likes widgets " * 12}, indent=1).encode(),
    }
    for rel, data in files.items():
        p = work / rel
        p.write_bytes(data)
        os.utime(p, (FIXED_MTIME, FIXED_MTIME))


def record_nginx_pipelined(dest: Path, work: Path) -> None:
    host = "127.0.0.1"
    port = pick_port(18083)
    authority = f"api.example.test:{port}"
    prepare_nginx_docroot(work)
    pcap = work / "capture.pcap"
    conf = nginx_sample_conf(work, port)
    common = [
        ("User-Agent", APP_UA),
        ("Accept", "application/json"),
        ("Accept-Encoding", "gzip"),
        ("Authorization", BEARER),
        ("Approov-Token", APPROOV_TOKEN),
    ]
    txs: list[Tx] = []
    steps: list[str] = []

    def record(conn_ix: int, method: str, target: str, body: bytes | None, r: RawResponse, note: str) -> None:
        enc = []
        if r.chunked:
            enc.append("chunked")
        if r.header("Content-Encoding"):
            enc.append(r.header("Content-Encoding") or "")
        if r.header("Content-Encoding") == "gzip":
            gzip.decompress(r.body)  # sanity: the client got a whole gzip stream
        full = note + (f" [{'+'.join(enc)}]" if enc else "")
        txs.append(Tx(conn_ix, method, target, r.status, len(r.body), len(body or b""), full, r.interim))

    def pipeline(
        c: RawHttpClient, conn_ix: int, reqs: list[tuple[str, str, list, bytes | None, str]]
    ) -> list[RawResponse]:
        data = b"".join(build_request(m, t, authority, common + h, b) for m, t, h, b, _ in reqs)
        c.send(data)  # every request in one send: one TCP segment on loopback
        out = []
        for m, t, _, b, note in reqs:
            out.append(c.read_response(m))
            record(conn_ix, m, t, b, out[-1], note)
        return out

    with Nginx(work, conf, [(host, port)]) as _ngx, Tcpdump("lo", pcap, f"tcp port {port}") as td:
        with RawHttpClient(host, port) as c:
            steps.append("connection 0: GET /api/catalog.json alone, to learn its ETag")
            first = [("GET", "/api/catalog.json", [], None, "static JSON")]
            # nginx weakens the ETag when it gzips (W/"..."); If-None-Match compares weakly.
            etag = pipeline(c, 0, first)[0].header("ETag")
            if not etag:
                raise RuntimeError("nginx sent no ETag for a static file")
            burst = [
                ("GET", "/api/ok?debug=1&trace=abc", [], None, "return 200"),
                ("GET", "/api/forbidden", [], None, "return 403 (nginx error page)"),
                ("GET", "/api/nope.json", [], None, "missing file (nginx error page)"),
                (
                    "POST",
                    "/api/orders",
                    [("Content-Type", "application/json")],
                    b'{"items":["SKU-00003"],"qty":2}',
                    "POST with Content-Length body; return 201",
                ),
                ("GET", "/api/catalog.json", [("If-None-Match", etag)], None, "If-None-Match: 304"),
                ("GET", "/api/users/42.json", [], None, "static JSON"),
            ]
            steps.append(f"connection 0: {len(burst)} requests PIPELINED in one send, then all responses read")
            pipeline(c, 0, burst)
            # Expect: 100-continue: headers first, body only after the interim response.
            body = bytes(range(256)) * 12
            head = build_request(
                "PUT",
                "/upload/avatar-42.bin",
                authority,
                common
                + [
                    ("Content-Type", "application/octet-stream"),
                    ("Content-Length", str(len(body))),
                    ("Expect", "100-continue"),
                ],
            )
            c.send(head)
            st, _, _ = c.read_head()
            if st != 100:
                raise RuntimeError(f"expected 100 Continue from nginx, got {st}")
            c.send(body)
            record(
                0,
                "PUT",
                "/upload/avatar-42.bin",
                body,
                c.read_response("PUT", [100]),
                "Expect: 100-continue; WebDAV PUT",
            )
            steps.append(
                "connection 0: PUT with `Expect: 100-continue`: headers, wait for `100 Continue`, body, final response"
            )
            pipeline(c, 0, [("DELETE", "/upload/avatar-42.bin", [], None, "WebDAV DELETE")])
            steps.append("connection 0: DELETE of the uploaded file; the client closes the connection")
        with RawHttpClient(host, port) as c:
            burst2 = [
                ("GET", "/api/ok", [], None, "return 200"),
                (
                    "POST",
                    "/api/login",
                    [("Content-Type", "application/json")],
                    b'{"username":"grace","password":"hunter2-but-longer"}',
                    "POST login; return 200",
                ),
                ("GET", "/api/users/42.json?fields=name", [], None, "static JSON"),
                ("GET", "/api/catalog.json", [], None, "static JSON"),
                (
                    "HEAD",
                    "/api/catalog.json",
                    [("Connection", "close")],
                    None,
                    "HEAD: gzip headers, neither Content-Length nor chunked; Connection: close",
                ),
            ]
            pipeline(c, 1, burst2)
            steps.append(
                f"connection 1: {len(burst2)} requests pipelined in one send, the last a HEAD with "
                "`Connection: close` (nginx answers it without Content-Length or chunking, then closes)"
            )
            c._read_to_close()
        td.stop()
    linktype = capinfo(pcap)
    conf_shown = conf.replace(str(work), "$WORK")
    readme = f"""# nginx-pipelined

A raw-socket Python client PIPELINING requests to nginx {nginx_version()} on `127.0.0.1:{port}`,
captured on the loopback interface. Recorded by `scripts/record_samples.py`.

- **File**: `capture.pcap` (pcap, microsecond timestamps), link type `{linktype}` (Ethernet).
- **Server**: nginx (Debian package), `gzip on` for `application/json` and (always)
  `text/html`, so most responses are `Transfer-Encoding: chunked` + `Content-Encoding:
  gzip`; a static JSON file (fixed mtime, so a fixed ETag), `return 200/201/403` locations,
  a missing file (404), and WebDAV PUT/DELETE, which reads the request body and therefore
  answers `Expect: 100-continue` with `100 Continue`. Served files, written by the script
  with mtime 2026-01-01T00:00:00Z: `www/api/catalog.json` (40 catalog items, indented
  JSON) and `www/api/users/42.json`.
- **Client**: `RawHttpClient` in `scripts/record_samples.py` (a socket plus a small
  HTTP/1.1 response parser: Content-Length, chunked with trailers, none for HEAD, 1xx,
  204, 304). Requests carry `Authorization: Bearer <dummy JWT>`, `Approov-Token: <dummy>`
  and `Accept-Encoding: gzip`. Steps:
{chr(10).join("  - " + s for s in steps)}
- **Capture**: started once nginx listened and before the client connected, stopped with
  SIGINT after it was done (0 packets dropped by kernel):

  ```sh
  {td.display_cmd("capture.pcap")}
  ```

- **nginx** ran as `nginx -p $WORK -c $WORK/nginx.conf -e $WORK/error.log` with:

  ```nginx
{chr(10).join(("  " + ln) if ln else "" for ln in conf_shown.splitlines())}
  ```

## Transactions

`expected.jsonl` is the client's record (status line it parsed, body bytes after
de-chunking, before gzip decoding, bytes it sent as body). The `100 Continue` interim
response is not a transaction: the PUT's status is the final `201`.

{tx_table(txs)}
"""
    write_sample(dest, pcap, "capture.pcap", txs, readme)
    log(f"nginx-pipelined: {td.captured} packets, {len(txs)} transactions, link type {linktype}")


# --------------------------------------------------------------------------------------

SAMPLES: dict[str, Callable[[Path, Path], None]] = {
    "curl-keepalive": record_curl_keepalive,
    "httpclient-ipv6-any": record_httpclient_ipv6,
    "nginx-pipelined": record_nginx_pipelined,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--out-dir", type=Path, default=REPO / "samples", help="where sample folders go (default: samples/)"
    )
    ap.add_argument("--only", action="append", choices=sorted(SAMPLES), help="record only this sample (repeatable)")
    ap.add_argument("--list", action="store_true", help="list the samples and exit")
    ap.add_argument("--keep-work", action="store_true", help="keep the scratch directories")
    ap.add_argument("--attempts", type=int, default=3, help="tries per sample when tcpdump drops packets (default 3)")
    args = ap.parse_args(argv)
    if args.attempts < 1:
        ap.error("--attempts must be positive")
    if args.list:
        print("\n".join(SAMPLES))
        return 0
    for tool in ("tcpdump", "curl", "nginx", "editcap"):
        if shutil.which(tool) is None:
            log(f"missing {tool}: apt-get install -y tcpdump tshark curl nginx-light")
            return 1
    for name in args.only or list(SAMPLES):
        for attempt in range(1, args.attempts + 1):
            work = Path(tempfile.mkdtemp(prefix=f"shieldtap-{name}-"))
            try:
                log(f"recording {name} (scratch {work})")
                SAMPLES[name](args.out_dir / name, work)
                break
            except DroppedPackets as e:
                # A busy machine can starve tcpdump; the sample is written only on success.
                log(f"{name}: attempt {attempt} of {args.attempts}: {e}")
                if attempt == args.attempts:
                    return 1
            except Exception as e:
                log(f"{name}: FAILED: {e}")
                return 1
            finally:
                if not args.keep_work:
                    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
