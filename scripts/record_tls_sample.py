#!/usr/bin/env python3
"""Records samples/tls-fingerprints: TLS client stacks seen at the edge, joined with attestation.

Usage:
    python3 scripts/record_tls_sample.py record [--speed X]     (as root: tcpdump on loopback)

`record` runs, with real components on loopback:

- the API: `MobileApiHandler` of scripts/record_mobile_sample.py (a Python `ThreadingHTTPServer`,
  HTTP/1.1 keep-alive JSON, user JWTs checked, attestation never enforced) on 127.0.0.1:18099;
- the edge: Debian nginx terminating TLS (a self-signed ECDSA certificate for api.shopco.test
  made here with the `openssl` CLI) on 127.0.0.2:18443, HTTP/1.1 only, proxying to the API
  over upstream keep-alive from its own address 127.0.0.3 (`proxy_bind`) and adding, per
  request, `CloudFront-Viewer-Address: $remote_addr:$remote_port` (the viewer's address AND
  port, as CloudFront names it) and `X-Forwarded-For: $remote_addr`;
- clients, each bound to its own source address in 127.0.0.0/8, all through the edge with SNI
  api.shopco.test:
  * 24 genuine app devices: `http.client` over the app's `ssl.SSLContext` ("app-r1": TLS 1.2-1.3,
    a fixed ECDHE cipher list, ALPN h2+http/1.1, P-256 only); valid Approov-style tokens;
  * 14 of them upgrade mid-recording to release 2 ("app-r2": another cipher list, ALPN
    http/1.1 only, X25519 only): the app restarts, a new connection, a new token;
  * a lifted-token script: `curl` (its own defaults: the "curl" stack), from its own address,
    replaying device-03's current `Approov-Token` and `Authorization` (`-H @file`, a file the
    genuine device-03 client rewrites on each request), interleaved with device-03 for ~60 s,
    walking the catalogue;
  * a re-signed app: the app-r1 context, its own account, no Approov token at all;
  * a plain script: Python's default `ssl.create_default_context()`, no token.

tcpdump on `lo` captures both legs (`tcp port 18443 or tcp port 18099`): each client's TLS
connection to the edge (the ClientHello in clear, the rest encrypted) and the edge's cleartext
requests to the API, where the client is only in `X-Forwarded-For` and
`CloudFront-Viewer-Address`. A TLS connection and the requests it carried join on the viewer
address and port.

Tokens are made with PyJWT as in the mobile-network sample (same test secrets): user tokens
HS256 (`sub`), Approov-style HS256 with `exp`, `did` and `pay` = base64(SHA-256(Authorization))
once logged in.

After recording, the script checks its own capture with tshark (`tls.handshake.type == 1`,
`http.request`, tshark's JA3): every connection a client opened has exactly one ClientHello
from its address and port, every ClientHello belongs to a connection a client opened, each
stack has one JA3 and the four stacks differ, every request on the API leg carries a viewer
address that matches a ClientHello, and the request count equals the clients' own count. It
also writes each stack's JA4 (computed here from tshark's ClientHello fields per FoxIO's JA4
specification, checked against the specification's published examples) to truth.json.

Writes, into samples/tls-fingerprints/: capture.pcap, truth.json (actors, stacks with JA3/JA4,
every TLS connection with its client address, port, stack and request count), expected.jsonl
(the clients' own record of every transaction, for tests/samples.rs), shieldtap.toml and
README.md. `--speed X` runs the clients X times faster and stretches the capture's
timestamps back (token `exp`, `Date` headers and the pcap share one virtual clock); the
TLS handshakes' own timing is then compressed by X, which no detector here depends on.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import random
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path

import jwt  # PyJWT

sys.path.insert(0, str(Path(__file__).resolve().parent))
import record_mobile_sample as ms  # noqa: E402  (the API handler, accounts, token minting, clock)
import record_samples as rs  # noqa: E402  (Tcpdump, Nginx, ports)

REPO = Path(__file__).resolve().parent.parent
DEST = REPO / "samples" / "tls-fingerprints"
ATTEMPTS = 3

API_HOST = "127.0.0.1"
EDGE_LISTEN = "127.0.0.2"
EDGE_UPSTREAM_ADDR = "127.0.0.3"  # nginx's source address towards the API (`proxy_bind`)
SNI = "api.shopco.test"
DURATION = 180.0  # seconds of packet time the clients span

N_DEVICES = 24
UPGRADED = 14  # devices that move to release 2 mid-recording
VICTIM = 3  # device-03: its token is lifted
UPGRADE_WINDOW = (75.0, 115.0)  # when the upgraded devices restart on release 2
LIFT_START_AFTER_LOGIN = 30.0
LIFT_SECS = 60.0

UA_R1 = "ShopCo/5.2.1 (Android 14; okhttp/4.12.0)"
UA_R2 = "ShopCo/5.3.0 (Android 14; okhttp/4.12.0)"

# The app's TLS stacks. Cipher strings are OpenSSL's names for the TLS 1.2 suites; TLS 1.3
# suites are OpenSSL's defaults (Python has no setter for them).
STACKS = {
    "app-r1": {
        "what": f"the app, release 1: Python ssl.SSLContext(PROTOCOL_TLS_CLIENT) ({ssl.OPENSSL_VERSION}), TLS 1.2-1.3, "
                "ECDHE AES-GCM + CHACHA20 suites, ALPN h2,http/1.1, group P-256 only",
        "ciphers": "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
                   "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305",
        "alpn": ["h2", "http/1.1"],
        "curve": "prime256v1",
    },
    "app-r2": {
        "what": "the app, release 2: another cipher list (AES-256 first, CBC fallbacks, no CHACHA20), "
                "ALPN http/1.1 only, group X25519 only",
        "ciphers": "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256:"
                   "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA",
        "alpn": ["http/1.1"],
        "curve": "X25519",
    },
    "curl": {"what": f"curl's defaults ({'{curl}'}): its own cipher list, ALPN h2,http/1.1"},
    "python-default": {"what": f"Python's ssl.create_default_context() ({ssl.OPENSSL_VERSION}): its default cipher "
                              "list, no ALPN"},
}


def app_context(stack: str, cafile: Path) -> ssl.SSLContext:
    spec = STACKS[stack]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_ciphers(spec["ciphers"])
    ctx.set_alpn_protocols(spec["alpn"])
    ctx.set_ecdh_curve(spec["curve"])
    ctx.load_verify_locations(cafile)
    return ctx


def contexts(cafile: Path) -> dict[str, ssl.SSLContext]:
    out = {s: app_context(s, cafile) for s in ("app-r1", "app-r2")}
    out["python-default"] = ssl.create_default_context(cafile=str(cafile))
    return out


# --------------------------------------------------------------------------------------
# JA4 (FoxIO's specification, TLS over TCP only) from tshark's ClientHello fields

GREASE = {0x0A0A + 0x1010 * k for k in range(16)}


def ja4(version: int, sni: bool, ciphers: list[int], exts: list[int], alpn: str | None,
        sigalgs: list[int]) -> tuple[str, str]:
    """(JA4, JA4_r). `version`: the highest of supported_versions (else the hello's)."""
    ciphers = [c for c in ciphers if c not in GREASE]
    exts = [e for e in exts if e not in GREASE]
    ver = {0x0304: "13", 0x0303: "12", 0x0302: "11", 0x0301: "10", 0x0300: "s3"}.get(version, "00")
    a_alpn = (alpn[0] + alpn[-1]) if alpn else "00"
    a = f"t{ver}{'d' if sni else 'i'}{min(len(ciphers), 99):02d}{min(len(exts), 99):02d}{a_alpn}"
    b_raw = ",".join(f"{c:04x}" for c in sorted(ciphers))
    c_raw = ",".join(f"{e:04x}" for e in sorted(exts) if e not in (0x0000, 0x0010))
    sig = ",".join(f"{s:04x}" for s in sigalgs if s not in GREASE)
    if sig:
        c_raw += "_" + sig
    return f"{a}_{ja4_hash(b_raw)}_{ja4_hash(c_raw)}", f"{a}_{b_raw}_{c_raw}"


def ja4_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()[:12] if raw else "000000000000"


def ja4_from_raw(raw: str) -> str:
    a, b, c = raw.split("_", 2)
    return f"{a}_{ja4_hash(b)}_{ja4_hash(c)}"


def check_ja4_examples() -> None:
    """The hashing half of ja4() against JA4_r/JA4 pairs published with the specification's
    tooling (a Chrome hello; a fixed client profile)."""
    examples = [
        ("t13d1516h2_002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9_0005,000a,"
         "000b,000d,0012,0017,001b,0023,002b,002d,0033,44cd,fe0d,ff01_0403,0804,0401,0503,0805,0501,0806,0601",
         "t13d1516h2_8daaf6152771_d8a2da3f94cd"),
        ("t13d181000_002f,0035,009c,009d,1301,1302,1303,c009,c00a,c013,c014,c027,c02b,c02c,c02f,c030,cca8,cca9_"
         "000a,000b,000d,0017,0023,002b,002d,0033,ff01_0403,0804,0401,0503,0805,0501,0806,0601,0201",
         "t13d181000_5d04281c6031_78e6aca7449b"),
    ]
    for raw, want in examples:
        got = ja4_from_raw(raw)
        if got != want:
            raise RuntimeError(f"JA4 self-check: {got} != {want}")


# --------------------------------------------------------------------------------------
# clients


@dataclass
class Conn:
    """One TLS connection a client opened to the edge (what the join must find)."""

    actor: str
    stack: str
    address: str
    port: int
    opened_at: float  # seconds of packet time since the start
    alpn: str | None = None
    tls_version: str | None = None
    requests: int = 0


CONNS: list[Conn] = []
CONNS_LOCK = threading.Lock()


class Ports:
    api = 0
    edge = 0


def new_conn(actor: str, stack: str, address: str, port: int, alpn: str | None, version: str | None) -> Conn:
    c = Conn(actor, stack, address, port, round(ms.CLOCK.elapsed(), 3), alpn, version)
    with CONNS_LOCK:
        CONNS.append(c)
    return c


class EdgeConnection(http.client.HTTPSConnection):
    """HTTPS to the edge's address with SNI and Host api.shopco.test (no DNS on loopback)."""

    def __init__(self, *, context: ssl.SSLContext, src: str, actor: str, stack: str) -> None:
        super().__init__(SNI, Ports.edge, timeout=20, context=context, source_address=(src, 0))
        self.actor, self.stack, self.record = actor, stack, None

    def connect(self) -> None:
        sock = socket.create_connection((EDGE_LISTEN, Ports.edge), self.timeout, self.source_address)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = self._context.wrap_socket(sock, server_hostname=SNI)
        addr, port = self.sock.getsockname()[:2]
        self.record = new_conn(self.actor, self.stack, addr, port, self.sock.selected_alpn_protocol(),
                               self.sock.version())


class TlsClient(ms.Client):
    """ms.Client over TLS to the edge with a given SSLContext (the client's stack)."""

    def __init__(self, actor: ms.Actor, ua: str, ctx: ssl.SSLContext, stack: str) -> None:
        super().__init__(actor, ua)
        self.ctx, self.stack = ctx, stack
        self.via = "edge"

    def use(self, ctx: ssl.SSLContext, stack: str, ua: str) -> None:
        """A new release of the app: the process restarts, so the connection does too."""
        self.close()
        self.ctx, self.stack, self.ua = ctx, stack, ua

    def _conn(self) -> http.client.HTTPConnection:
        if self.conn is None:
            assert self.src is not None
            self.conn = EdgeConnection(context=self.ctx, src=self.src, actor=self.actor.name, stack=self.stack)
            self.conn.connect()
        return self.conn

    def send(self, method: str, target: str, **kw) -> tuple[int, bytes]:
        out = super().send(method, target, **kw)
        if self.conn is not None and self.conn.record is not None:
            self.conn.record.requests += 1
        return out


@dataclass
class Extra:
    """What truth.json says about an actor beyond ms.Actor.truth()."""

    stacks: list[str] = field(default_factory=list)
    expected: str = "not-flagged"  # not-flagged | flagged | either
    upgraded_at: float | None = None
    requests_by_stack: Counter = field(default_factory=Counter)


EXTRA: dict[str, Extra] = defaultdict(Extra)


def track(app: ms.App, client: TlsClient) -> None:
    """Counts the actor's requests per stack (wraps the client's send)."""
    orig = client.send

    def send(method: str, target: str, **kw):
        out = orig(method, target, **kw)
        EXTRA[app.actor.name].requests_by_stack[client.stack] += 1
        return out

    client.send = send  # type: ignore[method-assign]


# ---- populations


def device(actor: ms.Actor, i: int, acct: ms.Account, ctxs: dict, upgrade_at: float | None, lift: dict) -> None:
    victim = i == VICTIM
    app = ms.App(actor, f"device-{i:02d}", acct, lifetime=300 if victim else random.Random(actor.seed).choice([120, 180]),
                 race=False, ua=UA_R1)
    app.client = TlsClient(actor, UA_R1, ctxs["app-r1"], "app-r1")
    track(app, app.client)
    EXTRA[actor.name].stacks.append("app-r1")
    app.client.move(f"127.20.0.{10 + i}", "edge")
    rng = app.rng
    end = DURATION - rng.uniform(3, 12)
    try:
        sleep_until(rng.uniform(0, 10) if victim else rng.uniform(0, 30))
        ms.session(app, steps=0)
        if victim:
            lift["app"] = app
            lift["login_at"] = ms.CLOCK.elapsed()
            lift["ready"].set()
        while ms.CLOCK.elapsed() < end:
            if upgrade_at is not None and ms.CLOCK.elapsed() >= upgrade_at and app.client.stack == "app-r1":
                # The store updated the app: it restarts on release 2, a new connection and a new token.
                app.client.use(ctxs["app-r2"], "app-r2", UA_R2)
                app.tokens.token = None
                EXTRA[actor.name].stacks.append("app-r2")
                EXTRA[actor.name].upgraded_at = round(ms.CLOCK.elapsed(), 1)
                app.req("GET", "/api/v1/app-config")
            if rng.random() < 0.08:
                # backgrounded for a while: the OS drops the connection, the app reconnects later
                app.client.close()
                app.think(8.0, 20.0)
            app.browse(1, lo=2.0, hi=6.0 if not victim else 4.0, stores=0.1)
            if victim:
                write_lifted(lift, app)
    finally:
        app.client.close()


def write_lifted(lift: dict, app: ms.App) -> None:
    """What malware on device-03 exfiltrates: its current headers, as a curl header file."""
    tmp = lift["file"].with_suffix(".tmp")
    tmp.write_text(f"Authorization: {app.auth}\nApproov-Token: {app.tokens.token}\n")
    tmp.replace(lift["file"])


def sleep_until(t: float) -> None:
    ms.CLOCK.sleep_until(t)  # ms.CLOCK is replaced per recording: look it up at call time


def lifted(actor: ms.Actor, lift: dict, cafile: Path) -> None:
    """A script replaying device-03's live token with curl, walking the catalogue."""
    if not lift["ready"].wait(60 / ms.CLOCK.speed + 30):
        raise RuntimeError("lifted: device-03 never logged in")
    victim: ms.App = lift["app"]
    actor.devices.append(victim.did)
    actor.users.append(str(victim.account.uid))
    src = "127.66.0.10"
    actor.addresses.append(src)
    EXTRA[actor.name].stacks.append("curl")
    rng = random.Random(actor.seed)
    start = lift["login_at"] + LIFT_START_AFTER_LOGIN
    sleep_until(start)
    pid = 1200
    while ms.CLOCK.elapsed() < start + LIFT_SECS:
        n = rng.randint(2, 4)
        urls = [f"https://{SNI}:{Ports.edge}/api/v1/products/{pid + k}" for k in range(n)]
        pid += n
        cmd = ["curl", "-sS", "--max-time", "20", "--interface", src,
               "--resolve", f"{SNI}:{Ports.edge}:{EDGE_LISTEN}", "--cacert", str(cafile),
               "-A", UA_R1, "-H", "Accept: application/json", "-H", f"@{lift['file']}",
               "-w", "%{http_code} %{local_ip} %{local_port} %{num_connects} %{size_download}\\n"]
        for u in urls:
            cmd += ["-o", "/dev/null", u]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            raise RuntimeError(f"curl: exit {p.returncode}: {p.stderr}")
        conn: Conn | None = None
        for url, line in zip(urls, p.stdout.splitlines(), strict=True):
            code, ip, port, connects, size = line.split()
            if int(connects):
                conn = new_conn(actor.name, "curl", ip, int(port), None, None)
            if conn is None or int(code) != 200:
                raise RuntimeError(f"curl: {line!r}")
            conn.requests += 1
            actor.counts["copied"] += 1
            EXTRA[actor.name].requests_by_stack["curl"] += 1
            actor.lines.append({"method": "GET", "path": url.split(str(Ports.edge), 1)[1], "status": int(code),
                                "request_body_bytes": 0, "response_body_bytes": int(size)})
        sleep(rng.uniform(2.5, 6.0))


def sleep(secs: float) -> None:
    ms.CLOCK.sleep(secs)


def resigned(actor: ms.Actor, acct: ms.Account, ctxs: dict) -> None:
    """The app repackaged and re-signed: the app's own TLS stack, but attestation fails, so the
    SDK has no token to add (its user still logs in and shops)."""
    app = ms.App(actor, "resigned-phone", acct, lifetime=300, race=False, ua=UA_R1, attest_from_start=False)
    app.client = TlsClient(actor, UA_R1, ctxs["app-r1"], "app-r1")
    track(app, app.client)
    EXTRA[actor.name].stacks.append("app-r1")
    app.client.move("127.71.0.10", "edge")
    try:
        sleep_until(40)
        ms.session(app, steps=17, stores=0.1)
    finally:
        app.client.close()


def plain(actor: ms.Actor, ctxs: dict) -> None:
    """A plain Python script: default TLS context, no attestation, reads products."""
    c = TlsClient(actor, "Python-urllib/3.11", ctxs["python-default"], "python-default")
    EXTRA[actor.name].stacks.append("python-default")
    c.move("127.88.0.10", "edge")
    rng = random.Random(actor.seed)
    sleep_until(70)
    try:
        actor.counts["missing"] += 1
        c.send("GET", "/api/v1/app-config")
        for _ in range(14):
            sleep(rng.uniform(1.0, 3.0))
            actor.counts["missing"] += 1
            c.send("GET", f"/api/v1/products/{rng.randint(1, ms.N_PRODUCTS)}")
        EXTRA[actor.name].requests_by_stack["python-default"] += len(actor.lines)
    finally:
        c.close()


def build_actors(ctxs: dict, cafile: Path, lift: dict) -> tuple[list[ms.Actor], list]:
    actors: list[ms.Actor] = []
    jobs: list = []

    def add(a: ms.Actor, fn, expected: str) -> None:
        actors.append(a)
        jobs.append((a, fn))
        EXTRA[a.name].expected = expected

    order = random.Random(21).sample([i for i in range(N_DEVICES) if i != VICTIM], UPGRADED)
    urng = random.Random(22)
    upgrades = {i: round(urng.uniform(*UPGRADE_WINDOW), 1) for i in order}
    for i in range(N_DEVICES):
        up = upgrades.get(i)
        what = ("genuine app device; release 1, then upgraded to release 2 mid-recording (restart, new connection, "
                "new token)" if up is not None else "genuine app device on release 1 throughout")
        if i == VICTIM:
            what = ("genuine app device on release 1; malware on it exfiltrates its Authorization and current "
                    "Approov token (the lifted-token script replays them)")
        pop = "app-upgraded" if up is not None else "app-r1"
        add(ms.Actor(f"device-{i:02d}", pop, "genuine", what, 8000 + i, via="edge"),
            lambda a, i=i, up=up, c=ms.DATA.account(f"dev{i:02d}", orders=2 + i % 3): device(a, i, c, ctxs, up, lift),
            "not-flagged")
    add(ms.Actor("lifted-token", "lifted-token", "attacker",
                 "curl on its own address replaying device-03's current Authorization and Approov token "
                 "(re-read before each run), the app's User-Agent, walking /api/v1/products/1200.. for ~60 s, "
                 "interleaved with device-03 itself", 8101, via="edge", shares_identity_with="device-03"),
        lambda a: lifted(a, lift, cafile), "flagged")
    add(ms.Actor("resigned-app", "resigned-app", "attacker",
                 "the app repackaged and re-signed: release 1's TLS stack, its own account, no Approov token",
                 8102, via="edge", attested=False),
        lambda a, c=ms.DATA.account("resigned", orders=2): resigned(a, c, ctxs), "flagged")
    add(ms.Actor("plain-script", "plain-script", "attacker",
                 "a Python script with the default TLS context, no token, reads 14 random products", 8103,
                 via="edge", attested=False),
        lambda a: plain(a, ctxs), "either")
    for a in actors:
        if a.name == f"device-{VICTIM:02d}":
            a.shares_identity_with = "lifted-token"
    return actors, jobs


# --------------------------------------------------------------------------------------
# recording


def make_cert(work: Path) -> tuple[Path, Path]:
    cert, key = work / "edge.crt", work / "edge.key"
    rs.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={SNI}",
            "-addext", f"subjectAltName=DNS:{SNI}"])
    return cert, key


def nginx_conf(work: Path, cert: Path, key: Path) -> str:
    return "# TLS edge for the tls-fingerprints sample (scripts/record_tls_sample.py)\n" + rs.nginx_conf_head(
        work, 1, 1024
    ) + f"""    server_tokens off;
    keepalive_timeout 75s;
    keepalive_requests 10000;
    upstream api {{
        server {API_HOST}:{Ports.api};
        keepalive 16;
        keepalive_timeout 30s;
        keepalive_requests 10000;
    }}
    server {{
        listen {EDGE_LISTEN}:{Ports.edge} ssl;
        server_name {SNI};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_tickets off;
        location / {{
            proxy_pass http://api;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host {SNI};
            proxy_set_header CloudFront-Viewer-Address $remote_addr:$remote_port;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto https;
            proxy_bind {EDGE_UPSTREAM_ADDR};
        }}
    }}
}}
"""


def run_actors(jobs: list) -> None:
    errors: list[BaseException] = []

    def wrap(a: ms.Actor, fn) -> None:
        try:
            fn(a)
        except BaseException as e:  # noqa: BLE001 (re-raised in the main thread)
            errors.append(RuntimeError(f"{a.name}: {e!r}"))

    threads = [threading.Thread(target=wrap, args=(a, fn), name=a.name, daemon=True) for a, fn in jobs]
    for t in threads:
        t.start()
    deadline = time.monotonic() + (DURATION + 60) / ms.CLOCK.speed + 60
    for t in threads:
        t.join(max(1.0, deadline - time.monotonic()))
        if t.is_alive():
            errors.append(RuntimeError(f"{t.name}: still running"))
    if errors:
        raise errors[0]


def tshark(path: Path, display: str, fields: list[str], aggregator: str = ",") -> list[list[str]]:
    cmd = ["tshark", "-r", str(path), "-d", f"tcp.port=={Ports.api},http", "-Y", display, "-T", "fields",
           "-E", "separator=/t", "-E", "occurrence=a", "-E", f"aggregator={aggregator}"]
    for f in fields:
        cmd += ["-e", f]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise RuntimeError(f"tshark: {p.stderr}")
    return [line.split("\t") for line in p.stdout.splitlines() if line]


def ints(s: str) -> list[int]:
    return [int(x, 0) for x in s.split(",") if x]


def verify(path: Path, actors: list[ms.Actor]) -> dict:
    """Checks the capture against the clients' record; returns the stacks' fingerprints."""
    hellos = tshark(path, "tls.handshake.type == 1", [
        "ip.src", "tcp.srcport", "tls.handshake.ja3", "tls.handshake.ja3_full", "tls.handshake.version",
        "tls.handshake.extensions.supported_version", "tls.handshake.extensions_server_name",
        "tls.handshake.ciphersuite", "tls.handshake.extension.type", "tls.handshake.extensions_alpn_str",
        "tls.handshake.sig_hash_alg"])
    by_key = {(c.address, c.port): c for c in CONNS}
    if len(by_key) != len(CONNS):
        raise RuntimeError("two client connections share an address and port")
    seen: Counter = Counter()
    stacks: dict[str, dict] = {}
    for (ip, port, j3, j3full, hver, supv, sni, ciphers, exts, alpn, sigs) in hellos:
        conn = by_key.get((ip, int(port)))
        if conn is None:
            raise RuntimeError(f"ClientHello from {ip}:{port}: no client opened that connection")
        seen[(ip, int(port))] += 1
        version = max([v for v in (ints(supv) or ints(hver)) if v not in GREASE], default=0)
        alpn_first = alpn.split(",")[0] if alpn else None
        fp, fp_raw = ja4(version, bool(sni), ints(ciphers), ints(exts), alpn_first, ints(sigs))
        entry = {"ja3": j3, "ja3_full": j3full, "ja4": fp, "ja4_r": fp_raw, "sni": sni,
                 "alpn": alpn.split(",") if alpn else []}
        prev = stacks.setdefault(conn.stack, entry)
        if prev != entry:
            raise RuntimeError(f"stack {conn.stack}: two fingerprints: {prev} / {entry}")
    missing = [c for c in CONNS if seen[(c.address, c.port)] != 1]
    if missing:
        raise RuntimeError(f"{len(missing)} connections without exactly one ClientHello, e.g. {missing[0]}")
    for key in ("ja3", "ja4"):
        vals = [s[key] for s in stacks.values()]
        if len(set(vals)) != len(vals):
            raise RuntimeError(f"stacks share a {key}: {stacks}")
    reqs = tshark(path, f"http.request and tcp.dstport == {Ports.api}",
                  ["ip.src", "http.request.method", "http.request.uri", "http.x_forwarded_for",
                   "http.request.line"], aggregator="|")
    total = sum(len(a.lines) for a in actors)
    if len(reqs) != total:
        raise RuntimeError(f"{len(reqs)} requests on the API leg, the clients sent {total}")
    viewer = Counter()
    for ip, method, uri, xff, lines in reqs:
        if ip != EDGE_UPSTREAM_ADDR:
            raise RuntimeError(f"request from {ip} on the API leg")
        va = [l.split(":", 1)[1].strip() for l in lines.split("|") if l.lower().startswith("cloudfront-viewer-address:")]
        if len(va) != 1:
            raise RuntimeError(f"{method} {uri}: CloudFront-Viewer-Address {va}")
        vip, vport = va[0].replace("\\r\\n", "").strip().rsplit(":", 1)
        conn = by_key.get((vip, int(vport)))
        if conn is None or vip != xff:
            raise RuntimeError(f"{method} {uri}: viewer {va[0]} (XFF {xff}) matches no ClientHello")
        viewer[(vip, int(vport))] += 1
    for c in CONNS:
        if viewer[(c.address, c.port)] != c.requests:
            raise RuntimeError(f"{c}: {viewer[(c.address, c.port)]} requests on the API leg")
    return {"hellos": len(hellos), "requests": len(reqs), "stacks": stacks}


def record(work: Path, speed: float) -> None:
    ms.DATA = ms.Data()
    CONNS.clear()
    EXTRA.clear()
    Ports.api = rs.pick_port(18099)
    Ports.edge = rs.pick_port(18443, host=EDGE_LISTEN)
    (work / "tmp").mkdir()
    out = work / "capture.pcap"
    cert, key = make_cert(work)
    ctxs = contexts(cert)
    lift = {"ready": threading.Event(), "file": work / "device-03.headers"}
    actors, jobs = build_actors(ctxs, cert, lift)
    server = ThreadingHTTPServer((API_HOST, Ports.api), ms.MobileApiHandler)
    server.daemon_threads = True
    nginx = rs.Nginx(work, nginx_conf(work, cert, key), [(EDGE_LISTEN, Ports.edge)])
    bpf = f"tcp port {Ports.edge} or tcp port {Ports.api}"
    with rs.ServerThread(server), nginx, rs.Tcpdump("lo", out, bpf) as dump:
        ms.CLOCK = ms.Clock(speed)
        run_actors(jobs)
        took = time.time() - ms.CLOCK.t0
        dump.stop()
    ms.rewrite_times(out, ms.CLOCK.t0, speed)
    checked = verify(out, actors)
    size = out.stat().st_size
    DEST.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out, DEST / "capture.pcap")
    (DEST / "expected.jsonl").write_text("".join(
        json.dumps({k: l[k] for k in ("method", "path", "status", "request_body_bytes", "response_body_bytes")}) + "\n"
        for a in actors for l in a.lines))
    for name, spec in STACKS.items():
        checked["stacks"][name]["what"] = spec["what"].replace("{curl}", curl_version())
    truth = {
        "about": "Ground truth of samples/tls-fingerprints (scripts/record_tls_sample.py). `addresses` are the "
                 "client addresses (X-Forwarded-For and CloudFront-Viewer-Address on the API leg, the source "
                 "address on the TLS leg); `stacks` the TLS client stacks an actor used, in order; `connections` "
                 "every TLS connection a client opened: address and port (= the ClientHello's source and the "
                 "CloudFront-Viewer-Address of the requests it carried), stack, requests. Stack fingerprints: "
                 "`ja3` from tshark, `ja4` computed by the script from tshark's ClientHello fields.",
        "edge": {"listen": f"{EDGE_LISTEN}:{Ports.edge}", "upstream_address": EDGE_UPSTREAM_ADDR, "sni": SNI,
                 "adds": ["CloudFront-Viewer-Address: $remote_addr:$remote_port", "X-Forwarded-For: $remote_addr"]},
        "api": f"{API_HOST}:{Ports.api}",
        "capture": {"packets": dump.captured, "bytes": size, "client_hellos": checked["hellos"],
                    "api_requests": checked["requests"], "packet_time_secs": round(DURATION),
                    "recorded_at_speed": speed},
        "stacks": {k: checked["stacks"][k] for k in STACKS},
        "actors": [dict(a.truth(), expected=EXTRA[a.name].expected, stacks=EXTRA[a.name].stacks,
                        requests_by_stack=dict(EXTRA[a.name].requests_by_stack),
                        **({"upgraded_at_secs": EXTRA[a.name].upgraded_at} if EXTRA[a.name].upgraded_at else {}))
                   for a in actors],
        "connections": [{"actor": c.actor, "stack": c.stack, "address": c.address, "port": c.port,
                         "opened_at_secs": c.opened_at, "requests": c.requests,
                         **({"alpn": c.alpn} if c.alpn else {}), **({"tls": c.tls_version} if c.tls_version else {})}
                        for c in sorted(CONNS, key=lambda c: c.opened_at)],
    }
    (DEST / "truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    (DEST / "shieldtap.toml").write_text(
        "# The sample's test secrets (not real ones), base64 as Approov's CLI prints them.\n"
        "[[attestation]]\n"
        'name = "approov"\n'
        'header = "Approov-Token"\n'
        'algorithms = ["HS256"]\n'
        f'secret_base64 = "{ms.b64(ms.SECRET)}"\n'
        'binding_headers = ["Authorization"]\n'
        'missing_binding = "accept"\n'
        "\n"
        "# User JWTs (Authorization: Bearer ...) are HS256 with this secret: user ids are verified.\n"
        f"# The API sits behind a TLS-terminating nginx ({EDGE_UPSTREAM_ADDR} towards the API), which adds\n"
        "# X-Forwarded-For and CloudFront-Viewer-Address.\n"
        "[identity]\n"
        'user_header = "Authorization"\n'
        'user_claim = "sub"\n'
        f'user_secret_base64 = "{ms.b64(ms.USER_SECRET)}"\n'
        'client_ip_headers = ["X-Forwarded-For"]\n'
        f'trusted_proxies = ["{EDGE_UPSTREAM_ADDR}/32"]\n'
        "\n"
        "# Issue 21: join each client's TLS handshake (the edge's port) with the requests the edge\n"
        "# forwarded for that connection, on the viewer address and port the edge adds. Enabled by\n"
        "# the lead once shieldtap has the [tls] section.\n"
        "# [tls]\n"
        '# viewer_address_header = "CloudFront-Viewer-Address"\n'
    )
    write_readme(actors, truth, dump, took, speed)
    rs.log(f"wrote {DEST} ({checked['requests']} requests, {checked['hellos']} ClientHellos, {dump.captured} "
           f"packets, {size} bytes, {took:.0f} s wall)")


def curl_version() -> str:
    p = subprocess.run(["curl", "--version"], capture_output=True, text=True, timeout=30)
    return " ".join(w for w in p.stdout.split("\n")[0].split() if w.startswith(("curl", "libcurl", "OpenSSL")))


def write_readme(actors: list[ms.Actor], truth: dict, dump, took: float, speed: float) -> None:
    conns = truth["connections"]
    stacks = truth["stacks"]
    rows = []
    pops: dict[tuple[str, str], list[ms.Actor]] = defaultdict(list)
    for a in actors:
        pops[(a.role, a.population)].append(a)
    for (role, pop), group in pops.items():
        addrs = sorted({x for a in group for x in a.addresses})
        shown = ", ".join(addrs[:2]) + (f" ... ({len(addrs)})" if len(addrs) > 2 else "")
        names = {a.name for a in group}
        by_stack = Counter()
        for a in group:
            by_stack.update(EXTRA[a.name].requests_by_stack)
        nconn = Counter(c["stack"] for c in conns if c["actor"] in names)
        tok = Counter()
        for a in group:
            tok.update(a.counts)
        stack_s = ", ".join(f"{s}: {by_stack[s]} req / {nconn[s]} conn" for s in STACKS if by_stack[s] or nconn[s])
        rows.append(f"| {pop} | {role} | {len(group)} | {shown} | {stack_s} | {tok['valid'] + tok['copied']} "
                    f"| {tok['missing']} | {EXTRA[group[0].name].expected} |")
    stack_rows = "\n".join(
        f"| {name} | `{s['ja4']}` | `{s['ja3']}` | {', '.join(s['alpn']) or '-'} | {s['what']} |"
        for name, s in sorted(stacks.items(), key=lambda kv: list(STACKS).index(kv[0])))
    ups = sorted(EXTRA[a.name].upgraded_at for a in actors if EXTRA[a.name].upgraded_at)
    lift = next(a for a in actors if a.name == "lifted-token")
    lift_conns = [c for c in conns if c["actor"] == "lifted-token"]
    c0, c1 = lift_conns[0]["opened_at_secs"], lift_conns[-1]["opened_at_secs"]
    text = f"""# tls-fingerprints

Who is really talking (issue 21): the same mobile shopping API as `samples/mobile-network`,
now behind a TLS-terminating edge, with both legs on the wire: each client's TLS handshake
with the edge and the edge's cleartext requests to the API. Genuine app devices use the app's
TLS stack with valid Approov-style tokens, and half of them upgrade to a new app release with
a new TLS stack mid-recording; a script replays a device's lifted token with curl; a re-signed
app has the app's TLS stack and no token; a plain Python script has neither.

Made by `scripts/record_tls_sample.py record` (see its docstring), with real components on
loopback:

- the API: `MobileApiHandler` from `scripts/record_mobile_sample.py` (Python `http.server`,
  HTTP/1.1 keep-alive JSON; `/api/v1/me`, `/api/v1/products/{{id}}`, `/api/v1/orders/{{id}}`,
  `/api/v1/users/{{id}}/orders`, `/api/v1/feed`, `/api/v1/stores`, `POST /api/v1/login`,
  `POST /api/v1/orders`) on {truth['api']};
- the edge: nginx {rs.nginx_version()} terminating TLS on {truth['edge']['listen']} (HTTP/1.1 only,
  a self-signed ECDSA P-256 certificate for `{SNI}` made by the script, session tickets
  off), proxying to the API with upstream keep-alive from {EDGE_UPSTREAM_ADDR} (`proxy_bind`) and
  adding to every request `CloudFront-Viewer-Address: $remote_addr:$remote_port` (the
  client's address and port, as CloudFront names its viewer) and `X-Forwarded-For:
  $remote_addr`;
- {len(actors)} clients, each bound to its own source address in 127.0.0.0/8, all to the edge
  with SNI `{SNI}`.

Captured with `{dump.display_cmd('capture.pcap')}` ({dump.captured} packets, 0 dropped,
{truth['capture']['bytes']} bytes): {truth['capture']['client_hellos']} TLS connections to the edge
(ClientHello in clear, the rest encrypted) and {truth['capture']['api_requests']} cleartext requests
from {EDGE_UPSTREAM_ADDR} to the API, the clients active for {round(DURATION)} s of packet time (recorded in {took:.0f} s at
speed {speed:g}). A TLS connection and the requests it carried join on the client address and
port: the ClientHello's source address and port equal the request's
`CloudFront-Viewer-Address`. The script checked the capture with tshark before writing it:
every connection a client opened has exactly one ClientHello, each stack has a single JA3,
the stacks' JA3 and JA4 all differ, and every request on the API leg carries the viewer
address of one of those ClientHellos (and as many requests per connection as the client sent).

Tokens (PyJWT, the test secrets in `shieldtap.toml`, the same as the mobile-network sample):
user tokens HS256 (`sub` = numeric user id); Approov-style tokens HS256 with `exp`, `did`
(base64 of 16 bytes) and `pay` = base64(SHA-256(Authorization)) once logged in. The server
checks user tokens, never attestation.

## TLS stacks

| stack | JA4 | JA3 (tshark) | ALPN offered | what |
|---|---|---|---|---|
{stack_rows}

JA3 is tshark {subprocess.run(['tshark', '--version'], capture_output=True, text=True).stdout.split()[2]}'s
`tls.handshake.ja3`; JA4 was computed by the script from tshark's ClientHello fields
(supported_versions, SNI, cipher suites, extension types, first ALPN value, signature
algorithms; GREASE removed) per FoxIO's JA4 specification, its hashing checked against
published JA4_r/JA4 pairs; `truth.json` has the raw `ja4_r` and `ja3_full` strings too. All
stacks negotiate TLS 1.3 with nginx (so certificate and application data are encrypted).

## Populations

| population | role | actors | addresses | stacks (requests / TLS connections) | requests with a valid token | requests without token | a correct detector |
|---|---|---|---|---|---|---|---|
""" + "\n".join(rows) + f"""

- **app-r1 / app-upgraded** (device-00..23, 127.20.0.10-33): ordinary sessions (app config,
  login, profile, feed, products, own orders, store locator) over 2-3 minutes, a keep-alive
  connection that the app sometimes drops when backgrounded. {len(ups)} devices restart on
  release 2 between {ups[0]:.0f} s and {ups[-1]:.0f} s (a new connection with the app-r2 stack, a new
  token, the new User-Agent) and go on with valid tokens: a new fingerprint arriving with
  valid tokens from {len(ups)} devices is an app release, to be learned, not flagged.
- **lifted-token** (127.66.0.10): malware on device-03 writes the device's current
  `Authorization` and `Approov-Token` to a file after every request; a script runs `curl -H
  @file` (curl's own TLS stack, the app's User-Agent) {len(lift_conns)} times from {c0:.0f} s to {c1:.0f} s,
  2-4 products per run over one connection, walking `/api/v1/products/1200..` ({len(lift.lines)}
  requests), while device-03 keeps using the app from 127.20.0.13. Every one of its tokens
  is valid and bound to the Authorization it arrives with.
- **resigned-app** (127.71.0.10): the app's release-1 TLS stack, its own account and
  login, no `Approov-Token` on any request (attestation fails for a re-signed app).
- **plain-script** (127.88.0.10): Python's default TLS context, no token, 15 requests.

`truth.json`: `stacks` (JA3, JA4, raw strings, SNI, ALPN), `actors` (name, role,
population, addresses, devices (`did`), users (`sub`), stacks in the order used,
`upgraded_at_secs`, requests per stack, token counts by kind: `valid`, `copied`, `missing`,
`minted`; `expected`: flagged / not-flagged / either), and `connections`: every TLS
connection a client opened, with its address, port, stack, requests and the time it opened
(seconds since the start). The lifted-token script carries device-03's device id and user
(`shares_identity_with` on both).

## What a correct detector says

With the `[tls]` section enabled (commented out in `shieldtap.toml` until shieldtap has it),
every request on the API leg carries the JA4 of the ClientHello of its connection.

Must name:
- **lifted-token** (127.66.0.10): valid tokens of the app arriving with a fingerprint never
  seen with the app's valid tokens (curl's), and device-03's tokens arriving with two
  fingerprints from two addresses within seconds.
- **resigned-app** (127.71.0.10): unattested traffic whose fingerprint is the app's (a
  modified or re-signed app rather than a script).

Must not name:
- any of the 24 genuine devices, including device-03 itself (the lifted copy carries its
  device id and user: a finding names the copy's address, not the device's), and including
  the {len(ups)} devices after their upgrade to release 2 (a new fingerprint with valid tokens
  from many devices within a minute: learned, not flagged).

Either way: **plain-script** (no token, a scripting library's fingerprint, 15 reads).

`expected.jsonl` is the clients' own record of every transaction (method, target, status,
body sizes as sent and received; gzip bodies compressed), for `tests/samples.rs`: the TLS
leg yields no HTTP transaction, the API leg exactly these.
"""
    (DEST / "README.md").write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record", help="record the capture and write the sample folder")
    r.add_argument("--speed", type=float, default=1.0, help="clients run this many times faster than packet time")
    args = ap.parse_args()
    if not 0.25 <= args.speed <= 10:
        ap.error("--speed: 0.25 to 10")
    check_ja4_examples()
    rs.with_attempts("shieldtap-tls-", ATTEMPTS, lambda work: record(work, args.speed))


if __name__ == "__main__":
    main()
