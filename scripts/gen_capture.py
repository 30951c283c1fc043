#!/usr/bin/env python3
"""Record a large HTTP/1.1 capture from real clients and nginx on loopback.

Usage (as root, or with CAP_NET_RAW for tcpdump):

    python3 scripts/gen_capture.py --out big.pcap --manifest big.json
    python3 scripts/gen_capture.py --transactions 20000 --out /tmp/c.pcap --manifest /tmp/c.json \\
        --procs 2 --threads 4 --seed 7

Needs Python 3.11 (standard library only), tcpdump and nginx (Debian:
`apt-get install -y tcpdump nginx-light`). Exit status: 0 on success, 1 when anything
went wrong (tcpdump dropped packets, a client failed, a status differed from the planned
one), 2 for bad arguments.

What it does:

1. writes an nginx config and a docroot (static JSON files with fixed mtimes) into a
   scratch directory and starts nginx on 127.0.0.1 and [::1] (a free high port):
   `gzip on` for JSON, so larger responses are chunked+gzip; `return` locations for
   201/202/204/403; missing files for 404; `If-None-Match` for 304;
2. starts `tcpdump -i lo -s 0 -B 65536 -w OUT 'tcp port PORT'`;
3. runs the clients: ``--procs`` processes with ``--threads`` threads each, so that many
   connections are open at once. Each connection ("session") is one of
   - ``pipeline``: a raw socket sending bursts of 4-16 requests in one send, then reading
     the responses (about half the transactions);
   - ``keepalive``: a raw socket, one request at a time on a keep-alive connection;
   - ``httpclient``: Python's ``http.client`` on a keep-alive connection;
   about a fifth of the connections go to [::1]. Requests: GET of static JSON (gzip or
   not), conditional GETs (304), HEAD, POST with a Content-Length or a chunked body, PUT,
   DELETE, 403 and 404. Half the sessions end with ``Connection: close`` from the client
   (nginx closes), the others by the client closing after its last response;
4. stops tcpdump with SIGINT and checks it reports 0 packets dropped by kernel (if it
   dropped any, the whole recording is made again, up to ``--attempts`` times), stops
   nginx, and writes the MANIFEST: what the clients actually sent and received (requests,
   responses, by method, by status, connections, IPv4/IPv6 split, body byte totals, ...).

The plan (which requests, on which connections) is deterministic for a given
``--transactions``, ``--seed``, ``--procs`` and ``--threads``; packet timing is not.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import multiprocessing
import os
import random
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record_samples import (  # noqa: E402  (the helpers live beside this script)
    APPROOV_TOKEN,
    BEARER,
    FIXED_MTIME,
    SOCKET_TIMEOUT,
    DroppedPackets,
    Nginx,
    RawHttpClient,
    Tcpdump,
    build_request,
    chunk_encode,
    nginx_conf_head,
    nginx_version,
    pick_port,
    port_is_free,
)

#: Wall-clock budget for all clients together; past it the run fails.
CLIENT_DEADLINE_SECS = 900
N_USERS = 200
N_PRODUCTS = 60
USER_AGENTS = [
    "ShopApp/5.2.1 (Android 14; Pixel 8)",
    "ShopApp/5.2.0 (iOS 17.4; iPhone15,2)",
    "ShopApp/5.1.9 (Android 13; SM-S911B)",
    "okhttp/4.12.0",
]


def log(msg: str) -> None:
    print(f"[gen_capture] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# Server side: docroot and nginx config


def user_doc(i: int) -> bytes:
    # Sizes straddle gzip_min_length (256): some answers are gzip+chunked, some plain.
    doc = {"id": i, "name": f"User {i}", "email": f"user{i}@example.test", "plan": ["free", "pro"][i % 2]}
    doc["bio"] = "enjoys widgets " * (i % 24)
    return json.dumps(doc, separators=(",", ":")).encode()


def product_doc(i: int) -> bytes:
    doc = {
        "id": i,
        "title": f"Widget model {i}",
        "price_cents": 499 + 13 * i,
        "variants": [{"sku": f"P{i:04d}-{v}", "color": c} for v, c in enumerate(["red", "green", "blue", "black"])],
        "description": "A sturdy widget. " * (4 + i % 9),
    }
    return json.dumps(doc, indent=1).encode()


def catalog_doc() -> bytes:
    items = [{"id": i, "title": f"Widget model {i}", "price_cents": 499 + 13 * i} for i in range(N_PRODUCTS)]
    return json.dumps({"items": items, "currency": "EUR"}, indent=1).encode()


def write_docroot(www: Path) -> dict[str, str]:
    """Writes the static files; returns their strong ETags (nginx: "mtime-size" in hex)."""
    files = {"/api/catalog.json": catalog_doc()}
    files.update({f"/api/users/{i}.json": user_doc(i) for i in range(1, N_USERS + 1)})
    files.update({f"/api/products/{i}.json": product_doc(i) for i in range(1, N_PRODUCTS + 1)})
    etags = {}
    for uri, data in files.items():
        p = www / uri.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        os.utime(p, (FIXED_MTIME, FIXED_MTIME))
        etags[uri] = f'"{FIXED_MTIME:x}-{len(data):x}"'
    return etags


def nginx_conf(work: Path, port: int, workers: int) -> str:
    return nginx_conf_head(work, workers, 4096) + f"""    keepalive_timeout 120s;
    keepalive_requests 1000000;
    gzip on;
    gzip_types application/json;
    gzip_min_length 256;
    gzip_comp_level 1;
    server {{
        listen 127.0.0.1:{port};
        listen [::1]:{port};
        server_name api.example.test;
        root {work}/www;
        location /api/ {{ }}
        location = /api/ok {{ return 200 '{{"ok":true}}\\n'; }}
        location = /api/search {{
            return 200 '{{"results":[{{"id":1,"title":"Widget model 1","score":0.98}},{{"id":2,"title":"Widget model 2","score":0.91}},{{"id":3,"title":"Widget model 3","score":0.87}},{{"id":4,"title":"Widget model 4","score":0.80}},{{"id":5,"title":"Widget model 5","score":0.77}}],"total":5}}\\n';
        }}
        location = /api/orders {{ return 201 '{{"id":1001,"state":"created"}}\\n'; }}
        location ~ ^/api/orders/[0-9]+$ {{
            if ($request_method = DELETE) {{ return 204; }}
            return 200 '{{"id":7,"state":"shipped"}}\\n';
        }}
        location = /api/events {{ return 202 '{{"accepted":true}}\\n'; }}
        location = /api/profile {{ return 200 '{{"updated":true}}\\n'; }}
        location = /api/admin {{ return 403; }}
    }}
}}
"""


# --------------------------------------------------------------------------------------
# The plan


@dataclass
class Req:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes | None  # raw bytes on the wire (already chunk-encoded when chunked)
    body_len: int  # body bytes after de-chunking
    expect_status: int
    chunked: bool = False


@dataclass
class Session:
    index: int
    kind: str  # pipeline | keepalive | httpclient
    family: str  # ipv4 | ipv6
    n_requests: int
    seed: int
    server_close: bool  # the last request says Connection: close


REQUEST_KINDS = [
    # (weight, name)
    (26, "get_user"),
    (10, "get_user_304"),
    (7, "get_catalog"),
    (10, "get_product"),
    (7, "get_search"),
    (6, "get_ok"),
    (4, "head"),
    (8, "post_order"),
    (4, "post_events_chunked"),
    (3, "put_profile"),
    (3, "delete_order"),
    (2, "get_admin"),
    (4, "get_missing"),
]


def make_request(rng: random.Random, etags: dict[str, str], allow_chunked: bool) -> Req:
    kinds = [k for _, k in REQUEST_KINDS]
    weights = [w for w, _ in REQUEST_KINDS]
    kind = rng.choices(kinds, weights)[0]
    if kind == "post_events_chunked" and not allow_chunked:
        kind = "post_order"
    uid = rng.randint(1, N_USERS)
    pid = rng.randint(1, N_PRODUCTS)
    h: list[tuple[str, str]] = []
    if kind == "get_user":
        return Req("GET", f"/api/users/{uid}.json", h, None, 0, 200)
    if kind == "get_user_304":
        uri = f"/api/users/{uid}.json"
        return Req("GET", uri, [("If-None-Match", etags[uri])], None, 0, 304)
    if kind == "get_catalog":
        return Req("GET", f"/api/catalog.json?page={rng.randint(1, 9)}", h, None, 0, 200)
    if kind == "get_product":
        return Req("GET", f"/api/products/{pid}.json?fields=title,price&lang=en", h, None, 0, 200)
    if kind == "get_search":
        return Req("GET", f"/api/search?q=widget+{rng.randint(1, 999)}&limit=5", h, None, 0, 200)
    if kind == "get_ok":
        return Req("GET", f"/api/ok?t={rng.randint(0, 10**9)}", h, None, 0, 200)
    if kind == "head":
        uri = rng.choice(["/api/catalog.json", f"/api/users/{uid}.json", f"/api/products/{pid}.json"])
        return Req("HEAD", uri, h, None, 0, 200)
    if kind == "post_order":
        items = [f"P{rng.randint(1, N_PRODUCTS):04d}-{rng.randint(0, 3)}" for _ in range(rng.randint(1, 6))]
        body = json.dumps({"items": items, "user": uid, "coupon": None}).encode()
        return Req("POST", "/api/orders", [("Content-Type", "application/json")], body, len(body), 201)
    if kind == "post_events_chunked":
        pieces = [
            json.dumps({"event": rng.choice(["view", "tap", "scroll"]), "product": rng.randint(1, N_PRODUCTS)}).encode()
            + b"\n"
            for _ in range(rng.randint(1, 5))
        ]
        hdrs = [("Content-Type", "application/x-ndjson"), ("Transfer-Encoding", "chunked")]
        return Req("POST", "/api/events", hdrs, chunk_encode(pieces), sum(map(len, pieces)), 202, chunked=True)
    if kind == "put_profile":
        body = json.dumps({"name": f"User {uid}", "newsletter": bool(uid % 2)}).encode()
        return Req("PUT", "/api/profile", [("Content-Type", "application/json")], body, len(body), 200)
    if kind == "delete_order":
        return Req("DELETE", f"/api/orders/{rng.randint(1000, 99999)}", h, None, 0, 204)
    if kind == "get_admin":
        return Req("GET", "/api/admin?view=all", h, None, 0, 403)
    return Req("GET", f"/api/missing/{rng.randint(1, 10**6)}.json", h, None, 0, 404)


def session_headers(rng: random.Random) -> list[tuple[str, str]]:
    h = [("User-Agent", rng.choice(USER_AGENTS)), ("Accept", "application/json")]
    if rng.random() < 0.85:
        h.append(("Accept-Encoding", "gzip"))
    h.append(("Authorization", BEARER))
    if rng.random() < 0.6:
        h.append(("Approov-Token", APPROOV_TOKEN))
    return h


def plan_sessions(total: int, seed: int) -> list[Session]:
    """Connections adding up to exactly `total` requests (so `total` transactions)."""
    rng = random.Random(seed)
    sessions: list[Session] = []
    left = total
    while left > 0:
        r = rng.random()
        if r < 0.5:
            kind, n = "pipeline", rng.randint(60, 400)
        elif r < 0.8:
            kind, n = "keepalive", rng.randint(40, 300)
        else:
            kind, n = "httpclient", rng.randint(30, 200)
        n = min(n, left)
        left -= n
        family = "ipv6" if rng.random() < 0.2 else "ipv4"
        sessions.append(Session(len(sessions), kind, family, n, rng.randrange(2**32), rng.random() < 0.5))
    return sessions


# --------------------------------------------------------------------------------------
# Clients


@dataclass
class Stats:
    requests: int = 0
    responses: int = 0
    connections: int = 0
    by_method: Counter = field(default_factory=Counter)
    by_status: Counter = field(default_factory=Counter)
    by_family: Counter = field(default_factory=Counter)  # transactions per family
    connections_by_family: Counter = field(default_factory=Counter)
    connections_by_kind: Counter = field(default_factory=Counter)
    requests_by_kind: Counter = field(default_factory=Counter)
    pipelined_bursts: int = 0
    pipelined_requests: int = 0
    chunked_requests: int = 0
    chunked_responses: int = 0
    gzip_responses: int = 0
    request_body_bytes: int = 0
    response_body_bytes: int = 0
    server_closed: int = 0
    unexpected_status: Counter = field(default_factory=Counter)

    def merge(self, o: Stats) -> None:
        for k, v in vars(o).items():
            if isinstance(v, Counter):
                getattr(self, k).update(v)
            else:
                setattr(self, k, getattr(self, k) + v)

    def record(self, s: Session, req: Req, status: int, body_len: int, chunked: bool, gz: bool) -> None:
        self.responses += 1
        self.by_method[req.method] += 1
        self.by_status[str(status)] += 1
        self.by_family[s.family] += 1
        self.requests_by_kind[s.kind] += 1
        self.request_body_bytes += req.body_len
        self.response_body_bytes += body_len
        self.chunked_responses += chunked
        self.gzip_responses += gz
        if status != req.expect_status:
            self.unexpected_status[f"{req.method} {req.target} -> {status} (planned {req.expect_status})"] += 1


def plan_requests(s: Session, etags: dict[str, str]) -> tuple[list[tuple[str, str]], list[Req]]:
    rng = random.Random(s.seed)
    common = session_headers(rng)
    reqs = [make_request(rng, etags, allow_chunked=s.kind != "httpclient") for _ in range(s.n_requests)]
    if s.server_close:
        reqs[-1].headers = reqs[-1].headers + [("Connection", "close")]
    return common, reqs


def host_of(s: Session) -> str:
    return "::1" if s.family == "ipv6" else "127.0.0.1"


def run_raw(s: Session, port: int, etags: dict[str, str], st: Stats) -> None:
    common, reqs = plan_requests(s, etags)
    rng = random.Random(s.seed ^ 0x5EED)
    authority = f"api.example.test:{port}"
    with RawHttpClient(host_of(s), port) as c:
        st.connections += 1
        st.connections_by_family[s.family] += 1
        st.connections_by_kind[s.kind] += 1
        i = 0
        while i < len(reqs):
            n = rng.randint(4, 16) if s.kind == "pipeline" else 1
            burst = reqs[i : i + n]
            i += n
            c.send(b"".join(build_request(r.method, r.target, authority, common + r.headers, r.body) for r in burst))
            st.requests += len(burst)
            st.chunked_requests += sum(r.chunked for r in burst)
            if len(burst) > 1:
                st.pipelined_bursts += 1
                st.pipelined_requests += len(burst)
            for r in burst:
                resp = c.read_response(r.method)
                gz = resp.header("Content-Encoding") == "gzip"
                if gz and resp.body and st.responses % 101 == 0:
                    gzip.decompress(resp.body)  # spot check: whole gzip streams arrive
                st.record(s, r, resp.status, len(resp.body), resp.chunked, gz)
        if s.server_close:
            c.sock.settimeout(SOCKET_TIMEOUT)
            if c.sock.recv(1):
                raise RuntimeError("data after the Connection: close response")
            st.server_closed += 1


def run_httpclient(s: Session, port: int, etags: dict[str, str], st: Stats) -> None:
    common, reqs = plan_requests(s, etags)
    conn = http.client.HTTPConnection(host_of(s), port, timeout=SOCKET_TIMEOUT)
    try:
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        first = conn.sock.getsockname()[1]
        st.connections += 1
        st.connections_by_family[s.family] += 1
        st.connections_by_kind[s.kind] += 1
        for r in reqs:
            headers = dict(common + r.headers)
            headers["Host"] = f"api.example.test:{port}"
            conn.request(r.method, r.target, body=r.body, headers=headers)
            if conn.sock is None or conn.sock.getsockname()[1] != first:
                raise RuntimeError("http.client reconnected: the keep-alive connection was lost")
            st.requests += 1
            resp = conn.getresponse()
            data = resp.read()
            te = (resp.getheader("Transfer-Encoding") or "").lower()
            st.record(s, r, resp.status, len(data), "chunked" in te, resp.getheader("Content-Encoding") == "gzip")
        if s.server_close:
            st.server_closed += 1
    finally:
        conn.close()


def run_lane(sessions: list[Session], port: int, etags: dict[str, str]) -> Stats:
    st = Stats()
    for s in sessions:
        (run_httpclient if s.kind == "httpclient" else run_raw)(s, port, etags, st)
    return st


def run_process(lanes: list[list[Session]], port: int, etags: dict[str, str]) -> Stats:
    """One client process: one thread per lane, each running its sessions in turn."""
    results: list[Stats | BaseException] = [Stats() for _ in lanes]

    def work(ix: int) -> None:
        try:
            results[ix] = run_lane(lanes[ix], port, etags)
        except BaseException as e:  # reported to the parent below
            results[ix] = e

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(len(lanes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(CLIENT_DEADLINE_SECS)
        if t.is_alive():
            raise RuntimeError("a client thread did not finish in time")
    total = Stats()
    for r in results:
        if isinstance(r, BaseException):
            raise RuntimeError(f"client failed: {r!r}") from r
        total.merge(r)
    return total


# --------------------------------------------------------------------------------------


def server_port() -> int:
    """A free port below Linux's ephemeral range (32768-60999), so that no client port can
    equal it, free on both 127.0.0.1 and ::1."""
    rng = random.SystemRandom()
    for _ in range(100):
        port = rng.randint(20000, 32000)
        if port_is_free(port, socket.AF_INET, "127.0.0.1") and port_is_free(port, socket.AF_INET6, "::1"):
            return port
    return pick_port(0)


def record_once(
    args: argparse.Namespace, per_proc: list[list[list[Session]]], n_sessions: int
) -> tuple[list[Stats], float, int, int, int]:
    """One recording: nginx, tcpdump and the clients. Returns the clients' stats, their
    wall-clock seconds, tcpdump's packet and drop counts and the server port."""
    work = Path(tempfile.mkdtemp(prefix="shieldtap-gen-"))
    (work / "tmp").mkdir()
    etags = write_docroot(work / "www")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.unlink(missing_ok=True)
    # Fork the client processes before this process starts any thread (tcpdump's reader).
    pool = multiprocessing.get_context("fork").Pool(args.procs)
    ngx: Nginx | None = None
    td: Tcpdump | None = None
    try:
        port = args.port or server_port()
        for host, fam in (("127.0.0.1", socket.AF_INET), ("::1", socket.AF_INET6)):
            if args.port and not port_is_free(port, fam, host):
                raise RuntimeError(f"port {port} is busy on {host}")
        ngx = Nginx(work, nginx_conf(work, port, args.nginx_workers), [("127.0.0.1", port), ("::1", port)]).start()
        td = Tcpdump("lo", args.out, f"tcp port {port}", buffer_kib=65536, packet_buffered=False, immediate=False)
        td.start()
        log(
            f"{args.transactions} transactions on {n_sessions} connections, "
            f"{args.procs}x{args.threads} concurrent, nginx {nginx_version()} on port {port}"
        )
        t_clients = time.monotonic()
        pending = pool.starmap_async(run_process, [(lanes_p, port, etags) for lanes_p in per_proc])
        results = pending.get(CLIENT_DEADLINE_SECS)
        clients_secs = time.monotonic() - t_clients
        td.stop()
        return results, clients_secs, td.captured or 0, td.dropped or 0, port
    finally:
        pool.terminate()
        pool.join()
        if td is not None:
            td.kill()
        if ngx is not None:
            ngx.stop()
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--transactions", type=int, default=100_000, help="HTTP transactions to generate (default 100000)")
    ap.add_argument("--out", type=Path, required=True, help="capture file to write (pcap)")
    ap.add_argument("--manifest", type=Path, required=True, help="JSON manifest of what the clients did")
    ap.add_argument("--procs", type=int, default=3, help="client processes (default 3)")
    ap.add_argument("--threads", type=int, default=4, help="connections at once per process (default 4)")
    ap.add_argument("--seed", type=int, default=1, help="plan seed (default 1)")
    ap.add_argument("--nginx-workers", type=int, default=1, help="nginx worker processes (default 1)")
    ap.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    ap.add_argument("--keep-work", action="store_true", help="keep the nginx scratch directory")
    ap.add_argument("--attempts", type=int, default=3, help="recordings to try if tcpdump drops packets (default 3)")
    args = ap.parse_args(argv)
    if min(args.transactions, args.procs, args.threads, args.attempts) < 1:
        ap.error("--transactions, --procs, --threads and --attempts must be positive")
    for tool in ("tcpdump", "nginx"):
        if shutil.which(tool) is None:
            log(f"missing {tool}: apt-get install -y tcpdump nginx-light")
            return 1

    t0 = time.monotonic()
    sessions = plan_sessions(args.transactions, args.seed)
    n_lanes = args.procs * args.threads
    lanes: list[list[Session]] = [[] for _ in range(n_lanes)]
    load = [0] * n_lanes
    for s in sessions:  # balance requests over lanes, deterministically
        ix = min(range(n_lanes), key=lambda i: (load[i], i))
        lanes[ix].append(s)
        load[ix] += s.n_requests
    per_proc = [lanes[p * args.threads : (p + 1) * args.threads] for p in range(args.procs)]

    results = None
    for attempt in range(1, args.attempts + 1):
        try:
            results, clients_secs, packets, dropped, port = record_once(args, per_proc, len(sessions))
            break
        except DroppedPackets as e:
            # A busy machine can starve tcpdump: record the whole capture again.
            log(f"attempt {attempt} of {args.attempts}: {e}")
        except Exception as e:
            log(f"FAILED: {e}")
            return 1
    if results is None:
        log("FAILED: tcpdump dropped packets on every attempt")
        return 1

    st = Stats()
    for r in results:
        st.merge(r)
    if st.unexpected_status:
        log(f"FAILED: statuses differ from the plan: {dict(st.unexpected_status.most_common(10))}")
        return 1
    if st.requests != args.transactions or st.responses != args.transactions:
        log(f"FAILED: sent {st.requests} requests, got {st.responses} responses, wanted {args.transactions}")
        return 1
    manifest = {
        "generator": "scripts/gen_capture.py",
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "capture": str(args.out),
        "capture_bytes": args.out.stat().st_size,
        "packets": packets,
        "kernel_dropped": dropped,
        "server": f"nginx/{nginx_version()}",
        "server_port": port,
        "transactions": st.responses,
        "paired": st.responses,
        "requests": st.requests,
        "responses": st.responses,
        "interim_responses": 0,
        "by_method": dict(sorted(st.by_method.items())),
        "by_status": dict(sorted(st.by_status.items())),
        "connections": st.connections,
        "ipv4_connections": st.connections_by_family["ipv4"],
        "ipv6_connections": st.connections_by_family["ipv6"],
        "ipv4_transactions": st.by_family["ipv4"],
        "ipv6_transactions": st.by_family["ipv6"],
        "connections_by_client": dict(sorted(st.connections_by_kind.items())),
        "transactions_by_client": dict(sorted(st.requests_by_kind.items())),
        "server_closed_connections": st.server_closed,
        "pipelined_bursts": st.pipelined_bursts,
        "pipelined_requests": st.pipelined_requests,
        "chunked_requests": st.chunked_requests,
        "chunked_responses": st.chunked_responses,
        "gzip_responses": st.gzip_responses,
        "request_body_bytes": st.request_body_bytes,
        "response_body_bytes": st.response_body_bytes,
        "concurrent_connections": n_lanes,
        "clients_secs": round(clients_secs, 2),
        "total_secs": round(time.monotonic() - t0, 2),
    }
    args.manifest.parent.mkdir(parents=True, exist_ok=True)
    args.manifest.write_text(json.dumps(manifest, indent=2) + "\n")
    log(
        f"done: {st.responses} transactions, {st.connections} connections, {packets} packets "
        f"({manifest['capture_bytes'] / 1e6:.1f} MB), 0 dropped; clients {clients_secs:.1f}s, "
        f"total {manifest['total_secs']:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
