#!/usr/bin/python3
"""Records tests/fixtures/h2: cleartext HTTP/2 (h2c) from real clients and servers on loopback.

Usage: /usr/bin/python3 scripts/record_h2.py   (as root: tcpdump on loopback)

Debian's own python3 is needed (the `h2` and `hypercorn` packages live there), plus
(Debian 12): `apt-get install -y --no-install-recommends nghttp2-client python3-h2
python3-hypercorn python3-jwt tcpdump tshark curl nginx-light`.

prior-knowledge.pcap: nginx 1.22 (`listen 127.0.0.1:<port> http2;`, h2c with prior
knowledge only; `gzip on` for application/json) serving a small JSON API: static JSON files
of 0.1-8 KB behind `try_files $uri.json =404` (so a missing id is nginx's 404 page) and
`return 200/201` locations for POST /api/v1/login and POST /api/v1/orders. Clients, each
on its own connection, in this order:

  0  hyper-h2 4.1 (python3-h2, the `H2Client` below): 24 requests one after the other on
     one connection (stream ids 1, 3, ... 47), gzip asked on some (the client decodes it),
     Approov-Token + Authorization on some, a 404, two POSTs with JSON bodies; ends with
     GOAWAY.
  1  nghttp (nghttp2-client 1.52): 22 GETs sent concurrently on one connection (streams
     13, 15, ...; nghttp first sends PRIORITY frames for idle streams 3..11), tokens on
     all, gzip asked on all; nghttp does not decode gzip, so `decoded_body_bytes` is null
     and `files` gives the decoded size of each file served.
  2.. curl 7.88.1 `--http2-prior-knowledge`, one request per invocation (a --compressed
     GET with tokens, a POST with a body, a 404).

  curl 7.88.1 (Debian 12) cannot reuse a prior-knowledge connection: its second transfer
  on it fails with "Error in the HTTP2 framing layer" (curl issue #10634, fixed in 8.0.0
  by PR #10643), and `--parallel` fails the same way. So the many-streams connections come
  from hyper-h2 (sequential) and nghttp (concurrent, interleaved) instead.

upgrade.pcap: Hypercorn 0.13 (python3-hypercorn, the ASGI app `api_app` below; it answers
`Upgrade: h2c` with 101 -- nginx and `nghttpd --no-tls` do not) on 127.0.0.1:<port>:

  0  `curl --http2` (Upgrade: h2c + HTTP2-Settings on the first request, stream 1 after
     the 101; the next transfers reuse the connection, streams 3, 5, ...), 6 requests
     (--compressed on some, tokens on some, a POST and a 404).
  1  `nghttp -u` (upgrade, then 5 more GETs concurrently after it).

For each pcap: `<name>.expected.json` is the clients' own record (curl -w/-v, nghttp's
HAR, the H2Client's events): per connection (client port) the requests in order with
method, path (as sent, query included), `:authority`, status, response content-encoding,
`body_bytes` (DATA payload bytes as received, before content decoding), `decoded_body_bytes`
(when the client decoded the body, else null), `request_body_bytes`, stream id and whether
tokens were sent (`verdict` = "valid" with an Approov token, "missing" without one).
`<name>.tshark.json` is tshark's view (`-d tcp.port==<port>,http2`): per TCP stream and
HTTP/2 stream, the method, path, authority and status from the HEADERS frames.

Tokens are the bots-and-stuffing sample's (same secrets: use
samples/bots-and-stuffing/shieldtap.toml): user JWT for alice@example.com, Approov token
with `did` = device-h2 and `pay` bound to the Authorization value, valid for 24 h from
the recording, so they verify on packet time.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import record_samples as rs  # noqa: E402  (shared capture helpers)
from record_abuse_sample import SECRET, USER_SECRET, jwt, pay  # noqa: E402,F401  (same secrets)

DEST = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "h2"
HOST = "127.0.0.1"
UA = "okhttp/4.12.0"
USER = "alice@example.com"
DEVICE = "device-h2"
ATTEMPTS = 3


def tokens() -> tuple[str, str]:
    """(Authorization value, Approov token bound to it), valid for 24 h."""
    exp = int(time.time()) + 86400
    auth = "Bearer " + jwt.encode({"sub": USER, "exp": exp}, USER_SECRET, "HS256")
    approov = jwt.encode({"exp": exp, "did": DEVICE, "pay": pay(auth)}, SECRET, "HS256")
    return auth, approov


# --------------------------------------------------------------------------------------
# the API's data (nginx serves it as files, Hypercorn from memory)


def api_files() -> dict[str, bytes]:
    """URL path -> JSON body. Sizes from ~100 bytes to ~8 KB, gzip-able."""
    files: dict[str, bytes] = {}
    files["/api/v1/catalog"] = json.dumps(rs.catalog(60), indent=1).encode()  # ~7.6 KB
    files["/api/v1/config"] = json.dumps(
        {"min_version": "5.2.0", "features": {f"flag_{i}": i % 3 == 0 for i in range(30)}}, indent=1
    ).encode()
    for uid in range(1, 6):
        files[f"/api/v1/users/{uid}"] = json.dumps(
            {"id": uid, "name": f"User {uid}", "email": f"user{uid}@example.com", "plan": "pro" if uid % 2 else "free"}
        ).encode()
    files["/api/v1/orders"] = json.dumps(
        [
            {"id": 1000 + i, "total_cents": 1299 + 150 * i, "state": "shipped", "items": [f"SKU-{i:05d}"] * 3}
            for i in range(40)
        ],
        indent=1,
    ).encode()  # ~5 KB
    return files


LOGIN_REPLY = '{"access_token":"see-authorization-header","token_type":"Bearer","expires_in":3600}'
ORDER_REPLY = '{"id":2001,"state":"created"}'


# --------------------------------------------------------------------------------------
# hyper-h2 client: one connection, requests one after the other


class H2Client:
    """An HTTP/2 prior-knowledge client on hyper-h2 (python3-h2): one socket, one request
    at a time, records what it sent and received."""

    def __init__(self, host: str, port: int, authority: str) -> None:
        import h2.config
        import h2.connection

        self.sock = socket.create_connection((host, port), timeout=rs.SOCKET_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.local_port = self.sock.getsockname()[1]
        self.authority = authority
        cfg = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.conn = h2.connection.H2Connection(config=cfg)
        self.conn.initiate_connection()
        self.sock.sendall(self.conn.data_to_send())

    def request(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes | None) -> dict:
        import h2.events

        sid = self.conn.get_next_available_stream_id()
        hdrs = [(":method", method), (":scheme", "http"), (":authority", self.authority), (":path", path)]
        hdrs += [(k.lower(), v) for k, v in headers]
        if body is not None:
            hdrs += [("content-type", "application/json"), ("content-length", str(len(body)))]
        self.conn.send_headers(sid, hdrs, end_stream=body is None)
        if body is not None:
            self.conn.send_data(sid, body, end_stream=True)
        self.sock.sendall(self.conn.data_to_send())
        status, resp_headers, data, done = None, [], bytearray(), False
        while not done:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError(f"h2 client: connection closed during stream {sid}")
            for ev in self.conn.receive_data(chunk):
                if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                    resp_headers = [(k.decode(), v.decode()) for k, v in ev.headers]
                    status = int(dict(resp_headers)[":status"])
                elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid:
                    data += ev.data
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                    done = True
                elif isinstance(ev, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                    raise RuntimeError(f"h2 client: {ev!r}")
            self.sock.sendall(self.conn.data_to_send())
        enc = dict(resp_headers).get("content-encoding")
        decoded = gzip.decompress(bytes(data)) if enc == "gzip" else bytes(data)
        return {
            "stream_id": sid,
            "status": status,
            "content_encoding": enc,
            "body_bytes": len(data),
            "decoded_body_bytes": len(decoded),
        }

    def close(self) -> None:
        self.conn.close_connection()  # GOAWAY
        self.sock.sendall(self.conn.data_to_send())
        self.sock.shutdown(socket.SHUT_WR)
        try:
            while self.sock.recv(65536):
                pass
        except OSError:
            pass
        self.sock.close()


def h2lib_version() -> str:
    import h2

    return h2.__version__


# --------------------------------------------------------------------------------------
# curl and nghttp


CURL_W = (
    "%{local_port}\\t%{http_version}\\t%{response_code}\\t%{size_download}\\t%{size_upload}\\t"
    "%{method}\\t%{url_effective}\\t%header{content-encoding}\\n"
)


def curl_many(
    mode: str, base: str, reqs: list[dict], outdir: Path, tag: str, auth: str, approov: str
) -> tuple[list[dict], str]:
    """One curl invocation, transfers separated by --next (so they share curl's connection
    cache). Each req: method, path, body (str|None), tokens (bool), compressed (bool)."""
    args = ["curl", "-v", "-sS", "--max-time", "10"]
    for i, r in enumerate(reqs):
        if i:
            args.append("--next")
        args += [mode, "-o", str(outdir / f"{tag}-{i}.body"), "-w", CURL_W, "-A", UA, "-H", "Accept: application/json"]
        if r.get("compressed"):
            args.append("--compressed")
        if r.get("tokens"):
            args += ["-H", f"Authorization: {auth}", "-H", f"Approov-Token: {approov}"]
        if r.get("body") is not None:
            args += ["-X", r["method"], "-H", "Content-Type: application/json", "--data-binary", r["body"]]
        args.append(base + r["path"])
    p = rs.run(args)
    lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
    if len(lines) != len(reqs):
        raise RuntimeError(f"curl reported {len(lines)} transfers for {len(reqs)}:\n{p.stdout}\n{p.stderr}")
    # Stream ids, in transfer order: a request sent with `Upgrade: h2c` that got a 101 is
    # stream 1 (RFC 7540 3.2); the others print "Using Stream ID: N".
    sids: list[int] = []
    for ln in p.stderr.splitlines():
        m = re.search(r"Using Stream ID: ([0-9]+) ", ln)  # decimal in curl 7.88
        if m:
            sids.append(int(m.group(1)))
        elif "Received 101" in ln:
            sids.append(1)
    if len(sids) != len(reqs):
        raise RuntimeError(f"curl -v showed {len(sids)} stream ids for {len(reqs)} transfers:\n{p.stderr}")
    out = []
    for i, (r, ln, sid) in enumerate(zip(reqs, lines, sids, strict=True)):
        port, ver, code, size_dl, size_ul, method, url, enc = (ln.split("\t") + [""])[:8]
        if ver != "2":
            raise RuntimeError(f"curl used HTTP/{ver} for {url}")
        body_file = outdir / f"{tag}-{i}.body"
        decoded = body_file.stat().st_size if body_file.exists() else 0
        if enc and not r.get("compressed"):
            raise RuntimeError(f"{url}: {enc} without --compressed")
        out.append(
            {
                "client": "curl",
                "client_port": int(port),
                "stream_id": sid,
                "method": method,
                "path": url[len(base) :],
                "status": int(code),
                "content_encoding": enc or None,
                "body_bytes": int(size_dl),
                "decoded_body_bytes": decoded,
                "request_body_bytes": int(size_ul),
                "verdict": "valid" if r.get("tokens") else "missing",
            }
        )
    shown = rs.shlex.join(args).replace(auth, "$AUTH").replace(approov, "$APPROOV")
    return out, shown.replace(str(outdir), "$TMP")


def nghttp_many(upgrade: bool, base: str, paths: list[str], har: Path, auth: str, approov: str) -> tuple[list[dict], str]:
    args = ["nghttp", "-n", f"--har={har}", "-H", f"user-agent: {UA}", "-H", "accept: application/json"]
    args += ["-H", "accept-encoding: gzip", "-H", f"authorization: {auth}", "-H", f"approov-token: {approov}"]
    if upgrade:
        args.append("-u")
    args += [base + p for p in paths]
    rs.run(args)
    entries = json.loads(har.read_text())["log"]["entries"]
    if len(entries) != len(paths):
        raise RuntimeError(f"nghttp HAR has {len(entries)} entries for {len(paths)} URLs")
    out = []
    for e in entries:
        hdrs = {h["name"]: h["value"] for h in e["response"]["headers"]}
        out.append(
            {
                "client": "nghttp",
                "client_port": None,  # filled from the capture's only nghttp connection
                "stream_id": int(e["connection"]),  # nghttp's HAR puts the stream id here
                "method": e["request"]["method"],
                "path": e["request"]["url"][len(base) :],
                "status": e["response"]["status"],
                "content_encoding": hdrs.get("content-encoding"),
                "body_bytes": e["response"]["content"]["size"],
                "decoded_body_bytes": None if hdrs.get("content-encoding") else e["response"]["content"]["size"],
                "request_body_bytes": 0,
                "verdict": "valid",
            }
        )
    return out, rs.shlex.join(args).replace(auth, "$AUTH").replace(approov, "$APPROOV").replace(str(har), "$TMP/x.har")


def tool_version(cmd: list[str]) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    return (p.stdout or p.stderr).splitlines()[0].strip()


# --------------------------------------------------------------------------------------
# tshark's view


def tshark_cmd(pcap: str, port: int, upgrade: bool) -> list[str]:
    """tshark decoding the server port as HTTP/2 (prior knowledge) or as HTTP/1.1, whose
    dissector follows `Upgrade: h2c` into HTTP/2: HEADERS frames and HTTP/1.1 requests."""
    if upgrade:
        decode, shown = f"tcp.port=={port},http", "http2.type==1 || http.request"
        extra = ["-e", "http.request.method", "-e", "http.request.uri", "-e", "http.host"]
    else:
        decode, shown, extra = f"tcp.port=={port},http2", "http2.type==1", []
    return [
        "tshark", "-r", pcap, "-d", decode, "-Y", shown, "-T", "json", "-e", "tcp.stream", "-e", "tcp.srcport",
        "-e", "http2.type", "-e", "http2.streamid", "-e", "http2.header.name", "-e", "http2.header.value", "-e", "http2.header.count", *extra,
    ]  # fmt: skip


def tshark_streams(pcap: Path, port: int, upgrade: bool) -> list[dict]:
    """Per (tcp.stream, http2 stream id): method, path, authority, status, from tshark's
    decoding of the HEADERS frames (and, for h2c upgrade, of the HTTP/1.1 request that is
    stream 1)."""
    pkts = json.loads(rs.run(tshark_cmd(str(pcap), port, upgrade)).stdout)
    streams: dict[tuple[int, int], dict] = {}
    for p in pkts:
        f = p["_source"]["layers"]
        tcp_stream = int(f["tcp.stream"][0])
        if "http.request.method" in f:  # the upgrade request: stream 1 (RFC 7540 3.2)
            rec = streams.setdefault((tcp_stream, 1), {"tcp_stream": tcp_stream, "stream_id": 1})
            rec.update(method=f["http.request.method"][0], path=f["http.request.uri"][0],
                       authority=f["http.host"][0], client_port=int(f["tcp.srcport"][0]), http1_upgrade=True)
            continue
        # One packet can carry several frames: `http2.header.count` splits the header
        # fields among its HEADERS frames, in frame order.
        types = [int(t) for t in f.get("http2.type", [])]
        sids = [int(s) for s in f.get("http2.streamid", [])]
        names, values = f.get("http2.header.name", []), f.get("http2.header.value", [])
        hframes = [sid for t, sid in zip(types, sids) if t == 1]
        groups, i = [], 0
        for n in (int(c) for c in f.get("http2.header.count", [])):
            groups.append(list(zip(names[i : i + n], values[i : i + n])))
            i += n
        if len(groups) != len(hframes):
            raise RuntimeError(f"tshark: {len(hframes)} HEADERS frames but {len(groups)} header counts: {f}")
        for sid, hs in zip(hframes, groups):
            rec = streams.setdefault((tcp_stream, sid), {"tcp_stream": tcp_stream, "stream_id": sid})
            for n, v in hs:
                key = {":method": "method", ":path": "path", ":authority": "authority", ":status": "status"}.get(n)
                if key and key not in rec:
                    rec[key] = int(v) if key == "status" else v
            if int(f["tcp.srcport"][0]) != port:
                rec.setdefault("client_port", int(f["tcp.srcport"][0]))
    return [streams[k] for k in sorted(streams)]


def hpack_reprs(pcap: Path, port: int, upgrade: bool) -> dict[str, dict[str, int]]:
    """How each side encoded its header fields: tshark's representation per header name."""
    cmd = [
        "tshark", "-r", str(pcap), "-d", f"tcp.port=={port},{'http' if upgrade else 'http2'}", "-Y", "http2.type==1",
        "-T", "fields", "-E", "separator=\t", "-E", "aggregator=\x1f", "-e", "tcp.srcport",
        "-e", "http2.header.name", "-e", "http2.header.repr",
    ]  # fmt: skip
    out: dict[str, dict[str, int]] = {}
    for ln in rs.run(cmd).stdout.splitlines():
        src, names, reprs = (ln.split("\t") + ["", ""])[:3]
        side = "server" if int(src) == port else "client"
        for n, r in zip(names.split("\x1f"), reprs.split("\x1f")):
            if n.lower() in ("authorization", "approov-token", ":path", ":status", "content-encoding", "user-agent"):
                key = f"{side} {n}: {r}"
                out.setdefault(side, {})
                out[side][key] = out[side].get(key, 0) + 1
    return out


# --------------------------------------------------------------------------------------
# prior knowledge: nginx


def nginx_conf(work: Path, port: int, backend: int) -> str:
    return "# nginx for tests/fixtures/h2/prior-knowledge.pcap (scripts/record_h2.py)\n" + rs.nginx_conf_head(
        work, 1, 256
    ) + f"""    gzip on;
    gzip_types application/json;
    gzip_min_length 512;
    gzip_comp_level 6;
    http2_max_concurrent_streams 128;
    server {{
        listen {HOST}:{port} http2;
        server_name api.example.test;
        root {work}/www;
        proxy_http_version 1.1;
        location /api/v1/ {{ try_files $uri.json =404; }}
        # POSTs go through proxy_pass, which reads the whole request body first: a
        # `return` here answers before the body and resets the stream (RST_STREAM
        # NO_ERROR), which curl 7.88 reports as an error.
        location = /api/v1/login {{ proxy_pass http://{HOST}:{backend}; }}
        location = /api/v1/orders/new {{ proxy_pass http://{HOST}:{backend}; }}
    }}
    server {{
        listen {HOST}:{backend};
        location = /api/v1/login {{ return 200 '{LOGIN_REPLY}'; }}
        location = /api/v1/orders/new {{ return 201 '{ORDER_REPLY}'; }}
    }}
}}
"""


def record_prior_knowledge(work: Path) -> dict:
    port = rs.pick_port(18310)
    backend = rs.pick_port(18312)  # the POST handler behind nginx (not captured)
    authority = f"api.example.test:{port}"
    files = api_files()
    for p, data in files.items():
        f = work / "www" / (p.lstrip("/") + ".json")
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data)
        os.utime(f, (rs.FIXED_MTIME, rs.FIXED_MTIME))
    (work / "tmp").mkdir(exist_ok=True)
    auth, approov = tokens()
    pcap = work / "prior-knowledge.pcap"
    base = f"http://{HOST}:{port}"
    conns: list[dict] = []
    cmds: list[str] = []
    login = json.dumps({"username": USER, "password": "correct-horse"})
    order = json.dumps({"items": ["SKU-00003", "SKU-00007"], "qty": 2, "note": "leave at the door"})
    with rs.Nginx(work, nginx_conf(work, port, backend), [(HOST, port), (HOST, backend)]), rs.Tcpdump("lo", pcap, f"tcp port {port}") as td:
        # 0: hyper-h2, sequential
        c = H2Client(HOST, port, authority)
        plan: list[tuple[str, str, bool, bool, bytes | None]] = [  # method, path, gzip, tokens, body
            ("GET", "/api/v1/config", False, False, None),
            ("POST", "/api/v1/login", False, False, login.encode()),
            ("GET", "/api/v1/catalog", True, True, None),
            ("GET", "/api/v1/users/1", True, True, None),
            ("GET", "/api/v1/orders?page=1", True, True, None),
            ("GET", "/api/v1/orders?page=2", False, True, None),
            ("GET", "/api/v1/users/99", True, True, None),  # 404
            ("GET", "/api/v1/catalog", False, True, None),
            ("POST", "/api/v1/orders/new", True, True, order.encode()),
        ]
        plan += [("GET", f"/api/v1/users/{1 + i % 5}", i % 2 == 0, i % 3 != 2, None) for i in range(10)]
        plan += [
            ("GET", "/api/v1/config", True, True, None),
            ("GET", "/api/v1/catalog?lang=de", True, False, None),
            ("GET", "/api/v1/orders?page=3", True, True, None),
            ("GET", "/api/v1/nope", False, True, None),  # 404
            ("GET", "/api/v1/users/2", True, True, None),
        ]
        rows = []
        for method, path, gz, tok, body in plan:
            hdrs = [("user-agent", UA), ("accept", "application/json")]
            if gz:
                hdrs.append(("accept-encoding", "gzip"))
            if tok:
                hdrs += [("authorization", auth), ("approov-token", approov)]
            r = c.request(method, path, hdrs, body)
            rows.append(
                {
                    "client": "hyper-h2",
                    "client_port": c.local_port,
                    "stream_id": r["stream_id"],
                    "method": method,
                    "path": path,
                    "status": r["status"],
                    "content_encoding": r["content_encoding"],
                    "body_bytes": r["body_bytes"],
                    "decoded_body_bytes": r["decoded_body_bytes"],
                    "request_body_bytes": len(body or b""),
                    "verdict": "valid" if tok else "missing",
                }
            )
            time.sleep(0.02)
        c.close()
        conns.append({"client": f"hyper-h2 {h2lib_version()} (scripts/record_h2.py H2Client)", "authority": authority,
                      "client_port": c.local_port, "requests": rows})
        cmds.append(f"H2Client: {len(rows)} requests in sequence on one connection, then GOAWAY")
        # 1: nghttp, concurrent
        paths = ["/api/v1/catalog", "/api/v1/config", "/api/v1/orders?page=1", "/api/v1/orders?page=2"]
        paths += [f"/api/v1/users/{i}" for i in range(1, 6)] + ["/api/v1/users/404"]
        paths += [f"/api/v1/catalog?page={i}" for i in range(1, 7)] + [f"/api/v1/orders?page={i}" for i in range(3, 9)]
        rows, cmd = nghttp_many(False, base, paths, work / "nghttp.har", auth, approov)
        conns.append({"client": tool_version(["nghttp", "--version"]), "authority": f"{HOST}:{port}", "client_port": None,
                      "requests": rows})
        cmds.append(cmd)
        # 2..: curl, one request per connection
        singles = [
            {"method": "GET", "path": "/api/v1/catalog", "compressed": True, "tokens": True},
            {"method": "POST", "path": "/api/v1/login", "body": login},
            {"method": "GET", "path": "/api/v1/users/77", "tokens": True},
        ]
        for i, r in enumerate(singles):
            rows, cmd = curl_many("--http2-prior-knowledge", base, [r], work, f"pk{i}", auth, approov)
            conns.append({"client": f"curl {rs.curl_version()}", "authority": f"{HOST}:{port}", "client_port": rows[0]["client_port"],
                          "requests": rows})
            cmds.append(cmd)
        td.stop()
    return {"pcap": pcap, "port": port, "conns": conns, "cmds": cmds, "tcpdump": td, "files": files,
            "server": f"nginx {rs.nginx_version()}"}


# --------------------------------------------------------------------------------------
# upgrade: Hypercorn


async def api_app(scope, receive, send) -> None:
    """ASGI JSON API for Hypercorn: the same paths as the nginx docroot, login and orders
    POSTs, gzip when asked for bodies of 512 bytes or more, else 404."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    files = api_files()
    path, method = scope["path"], scope["method"]
    headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
    if method == "POST" and path == "/api/v1/login":
        status, data = 200, LOGIN_REPLY.encode()
    elif method == "POST" and path == "/api/v1/orders/new":
        status, data = 201, ORDER_REPLY.encode()
    elif method == "GET" and path in files:
        status, data = 200, files[path]
    else:
        status, data = 404, json.dumps({"error": "not_found", "path": path}).encode()
    out = [(b"content-type", b"application/json")]
    if "gzip" in headers.get("accept-encoding", "") and len(data) >= 512:
        data = gzip.compress(data, mtime=0)
        out.append((b"content-encoding", b"gzip"))
    out.append((b"content-length", str(len(data)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": data})


def serve_hypercorn(port: int) -> None:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    cfg = Config()
    cfg.bind = [f"{HOST}:{port}"]
    cfg.accesslog = None
    asyncio.run(serve(api_app, cfg))


def hypercorn_version() -> str:
    from importlib.metadata import version

    return version("hypercorn")


def record_upgrade(work: Path) -> dict:
    port = rs.pick_port(18311)
    auth, approov = tokens()
    pcap = work / "upgrade.pcap"
    base = f"http://{HOST}:{port}"
    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "serve-hypercorn", str(port)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(work / "hypercorn.log", "w"),
    )  # fmt: skip
    conns: list[dict] = []
    cmds: list[str] = []
    try:
        rs.wait_for_port(HOST, port)
        with rs.Tcpdump("lo", pcap, f"tcp port {port}") as td:
            reqs = [
                {"method": "GET", "path": "/api/v1/config", "compressed": True},
                {"method": "POST", "path": "/api/v1/login",
                 "body": json.dumps({"username": USER, "password": "correct-horse"})},
                {"method": "GET", "path": "/api/v1/catalog", "compressed": True, "tokens": True},
                {"method": "GET", "path": "/api/v1/users/1", "tokens": True},
                {"method": "GET", "path": "/api/v1/orders?page=1", "compressed": True, "tokens": True},
                {"method": "GET", "path": "/api/v1/users/99", "tokens": True},
            ]  # fmt: skip
            rows, cmd = curl_many("--http2", base, reqs, work, "up", auth, approov)
            if len({r["client_port"] for r in rows}) != 1:
                raise RuntimeError(f"curl used several connections: {rows}")
            conns.append({"client": f"curl {rs.curl_version()}", "authority": f"{HOST}:{port}",
                          "client_port": rows[0]["client_port"], "requests": rows})
            cmds.append(cmd)
            paths = ["/api/v1/catalog", "/api/v1/users/2", "/api/v1/users/3", "/api/v1/orders?page=2",
                     "/api/v1/missing", "/api/v1/config"]  # fmt: skip
            rows, cmd = nghttp_many(True, base, paths, work / "nghttp.har", auth, approov)
            conns.append({"client": tool_version(["nghttp", "--version"]), "authority": f"{HOST}:{port}",
                          "client_port": None, "requests": rows})
            cmds.append(cmd)
            td.stop()
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
    return {"pcap": pcap, "port": port, "conns": conns, "cmds": cmds, "tcpdump": td, "files": api_files(),
            "server": f"Hypercorn {hypercorn_version()}"}


# --------------------------------------------------------------------------------------


def tcp_connections(pcap: Path, port: int) -> list[int]:
    """Client ports in SYN order."""
    out = rs.run(["tshark", "-r", str(pcap), "-Y", f"tcp.flags.syn==1 && tcp.flags.ack==0 && tcp.dstport=={port}",
                  "-T", "fields", "-e", "tcp.srcport"]).stdout  # fmt: skip
    return [int(x) for x in out.split()]


def write(name: str, rec: dict) -> None:
    pcap, port = rec["pcap"], rec["port"]
    ports = tcp_connections(pcap, port)
    if len(ports) != len(rec["conns"]):
        raise RuntimeError(f"{name}: {len(ports)} TCP connections for {len(rec['conns'])} clients")
    for c, p in zip(rec["conns"], ports, strict=True):
        for r in c["requests"]:
            r["authority"] = c["authority"]  # what the client sent as :authority (Host: on an upgrade)
            r["user"] = USER if r["verdict"] == "valid" else None
        if c["client_port"] is None:
            c["client_port"] = p
            for r in c["requests"]:
                r["client_port"] = p
        elif c["client_port"] != p:
            raise RuntimeError(f"{name}: client port {c['client_port']} but connection order says {p}")
    upgrade = name == "upgrade"
    ts = tshark_streams(pcap, port, upgrade)
    # tshark must agree with the clients on every stream's method, path and status
    mine = sorted((r["client_port"], r["stream_id"], r["method"], r["path"], r["status"])
                  for c in rec["conns"] for r in c["requests"])  # fmt: skip
    theirs = sorted((t.get("client_port"), t["stream_id"], t.get("method"), t.get("path"), t.get("status")) for t in ts)
    if mine != theirs:
        raise RuntimeError(f"{name}: tshark disagrees with the clients:\n{mine}\n{theirs}")
    td = rec["tcpdump"]
    size = pcap.stat().st_size
    expected = {
        "pcap": f"{name}.pcap",
        "server": rec["server"],
        "server_port": port,
        "tcpdump": td.display_cmd(f"{name}.pcap"),
        "packets": td.captured,
        "dropped_by_kernel": td.dropped,
        "files": {p: len(d) for p, d in rec["files"].items()},
        "commands": rec["cmds"],
        "connections": rec["conns"],
    }
    DEST.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(pcap, DEST / f"{name}.pcap")
    (DEST / f"{name}.expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    (DEST / f"{name}.tshark.json").write_text(
        json.dumps(
            {
                "command": rs.shlex.join(tshark_cmd(f"{name}.pcap", port, upgrade)),
                "tshark": tool_version(["tshark", "--version"]),
                "streams": ts,
                "hpack_representations": hpack_reprs(pcap, port, upgrade),
            },
            indent=1,
        )
        + "\n"
    )
    n = sum(len(c["requests"]) for c in rec["conns"])
    rows = "\n".join(
        f"| {name}.pcap | {i} | {c['client_port']} | {c['client']} | {len(c['requests'])} | "
        f"{', '.join(str(r['stream_id']) for r in c['requests'])} |"
        for i, c in enumerate(rec["conns"])
    )
    (DEST / f"{name}.README.part").write_text(
        f"`{name}.pcap`: {rec['server']} on 127.0.0.1:{port}, {len(ports)} connections, {n} streams, "
        f"{td.captured} packets, {size} bytes, captured with `{td.display_cmd(name + '.pcap')}` (0 dropped by "
        f"kernel).\n\n| capture | connection | client port | client | requests | stream ids |\n"
        f"|---|---|---|---|---|---|\n{rows}\n"
    )
    rs.log(f"{name}: {len(ports)} connections, {n} streams, {td.captured} packets, {size} bytes, 0 dropped")


README_HEAD = """# HTTP/2 cleartext (h2c) recordings

Made by `scripts/record_h2.py` (its docstring says how; re-run it as root with Debian's
`/usr/bin/python3`). Real clients against real servers on loopback:

- `prior-knowledge.pcap`: nginx from Debian (`listen 127.0.0.1:<port> http2;`, gzip on for
  JSON) and, one connection each, a hyper-h2 client sending 24 requests one after the
  other, nghttp sending 22 GETs concurrently (interleaved streams, PRIORITY frames for idle
  streams first), and three single-request `curl --http2-prior-knowledge` runs. curl 7.88.1
  (Debian 12) cannot reuse a prior-knowledge connection ("Error in the HTTP2 framing layer",
  curl issue #10634, fixed in 8.0.0), nor `--parallel` on one: hence hyper-h2 and nghttp for
  the many-streams connections.
- `upgrade.pcap`: Hypercorn (ASGI, answers `Upgrade: h2c` with 101; nginx and `nghttpd
  --no-tls` do not) and `curl --http2` (6 transfers: the first is the HTTP/1.1 upgrade
  request, its response is stream 1; the rest reuse the connection) and `nghttp -u`.

`<name>.expected.json` is the clients' own record (curl's `-w` and `-v`, nghttp's HAR, the
hyper-h2 client's events), per connection in connection order: method, path (query
included), `authority`, status, `content_encoding`, `body_bytes` (DATA bytes before content
decoding), `decoded_body_bytes` (null when the client did not decode: nghttp; `files` has
each served file's size), `request_body_bytes`, `stream_id`, `verdict` and `user` (tokens
sent or not). Tokens are the bots-and-stuffing sample's: replay with
`--config samples/bots-and-stuffing/shieldtap.toml`; they were valid for 24 h from the
recording and shieldtap judges expiry on packet time.

`<name>.tshark.json` is tshark's view of the same streams (the command is in the file); the
script checks that it agrees with the clients on every stream's method, path and status,
and records how each side HPACK-encoded a few header fields (`hpack_representations`).

"""


def main() -> None:
    for name, fn in (("prior-knowledge", record_prior_knowledge), ("upgrade", record_upgrade)):
        write(name, rs.with_attempts(f"shieldtap-h2-{name}-", ATTEMPTS, fn, label=f"{name}: "))
    parts = [DEST / f"{n}.README.part" for n in ("prior-knowledge", "upgrade")]
    (DEST / "README.md").write_text(README_HEAD + "\n".join(p.read_text() for p in parts))
    for p in parts:
        p.unlink()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve-hypercorn":
        serve_hypercorn(int(sys.argv[2]))
    elif len(sys.argv) == 1:
        main()
    else:
        print(__doc__.split("\n\n")[0] + "\nusage: record_h2.py [serve-hypercorn PORT]", file=sys.stderr)
        sys.exit(2)
