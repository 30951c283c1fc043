#!/usr/bin/env python3
"""Records samples/bots-and-stuffing: genuine app users, a scraper and credential stuffers, on loopback.

Usage: python3 scripts/record_abuse_sample.py   (as root: tcpdump on loopback)

Python http.client keep-alive connections talk to a small HTTP/1.1 JSON API defined here
(`AbuseApiHandler`, a `ThreadingHTTPServer` on 127.0.0.1):

  GET  /api/v1/users/<n>        200 {"id", "name", "email"} for n in 1..100, else 404
  GET  /api/v1/orders?page=<p>  200 a JSON list of 5 orders
  GET  /api/v1/catalog          200 a small catalog
  POST /api/v1/login            200 {"access_token": <user JWT>} for alice/bob/carol@example.com
                                with password "correct-horse", else 401 {"error": "invalid_credentials"}

The access token the server issues is the user JWT the app then sends as
`Authorization: Bearer <JWT>` (HS256 with the user secret, claim `sub` = the username).
Every actor binds its own client address(es) in 127.0.0.0/8 (Linux loopback accepts any
127.x source) and uses one keep-alive connection per address. Every request carries
`User-Agent: okhttp/4.12.0` (the attackers imitate the app) and `Accept: application/json`.
Attestation tokens are made here with PyJWT (independent of shieldtap), HS256 with the same
test account secret as `record_token_abuse.py`, claims `exp`, `did` and
`pay` = base64(SHA-256(the Authorization value)); a token minted for a request without
Authorization (the login) carries no `pay`, as the Approov SDK does before a binding is set.
All actors run concurrently, in threads:

  genuine-a    127.0.0.10      device-a  alice   login, 15 browsing requests, think 0.4-2.5 s
  genuine-b    127.0.0.11      device-b  bob     login typo (401), login, 15 browsing requests
  genuine-c    127.0.0.12      device-c  carol   login, 15 browsing requests
  scraper      127.0.0.30      -         alice   stolen JWT, no Approov token,
                                                 GET /api/v1/users/1..60 every 0.05 s
  stuffer      127.0.0.40      -         -       no Approov token, 25 failed logins
                                                 (victim01..25@example.com) every 0.1 s
  distributed  127.0.0.50-.59  -         -       no Approov token, 3 failed logins per address
                                                 (0.3 s apart), distinct usernames
  cadence-bot  127.0.0.60      device-x  dave    30 x GET /api/v1/catalog every 0.25 s
                                                 (absolute deadlines), ONE token that expired
                                                 an hour before the recording started

Genuine users mint a fresh attestation token at login, again once logged in (the binding
changed) and then every 5 requests; each new token's `exp` is now + 300 s, +1 s per earlier
token of that actor. Think times and the browsing mix come from `random.Random(<seed>)` per
actor, so the request structure (paths, order, counts) is the same every run; only times,
token `exp` values, client ports and Date headers differ.

Writes capture.pcap, expected.jsonl (the client's own record: one line per request, grouped
by actor in table order, in send order within an actor, with the attestation verdict each
request must get), shieldtap.toml (the secrets, base64) and README.md.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

try:
    import jwt  # PyJWT: an implementation independent of shieldtap, used for recording
except ImportError:  # the netns test runs the clients where PyJWT may be missing
    import hmac as _hmac

    class jwt:  # noqa: N801 (stands in for the module)
        """HS256 JWTs from the standard library (`encode` only)."""

        @staticmethod
        def encode(claims: dict, key: bytes, alg: str) -> str:
            assert alg == "HS256"
            b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()  # noqa: E731
            head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
            body = b64(json.dumps(claims, separators=(",", ":")).encode())
            sig = _hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
            return f"{head}.{body}.{b64(sig)}"

sys.path.insert(0, str(Path(__file__).resolve().parent))
import record_samples as rs  # noqa: E402  (shared capture helpers)

SECRET = b"shieldtap-sample-account-secret-0123456789"  # same test account as token-abuse
USER_SECRET = b"shieldtap-sample-user-secret-abcdef-456789"
DEST = Path(__file__).resolve().parent.parent / "samples" / "bots-and-stuffing"
UA = "okhttp/4.12.0"
PASSWORD = "correct-horse"
ACCOUNTS = ("alice@example.com", "bob@example.com", "carol@example.com")
ATTEMPTS = 3  # recordings tried when tcpdump drops packets
SERVER_HOST = "127.0.0.1"  # `clients` mode changes these two
SRC_PREFIX = "127.0.0."


def pay(auth: str) -> str:
    return base64.b64encode(hashlib.sha256(auth.encode()).digest()).decode()


def user_jwt(sub: str) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time()) + 3600}, USER_SECRET, "HS256")


def mint(did: str, auth: str | None, exp: int) -> str:
    """An Approov-style token; `pay` binds `auth`, absent when `auth` is None."""
    claims: dict = {"exp": exp, "did": did}
    if auth is not None:
        claims["pay"] = pay(auth)
    return jwt.encode(claims, SECRET, "HS256")


def now() -> int:
    return int(time.time())


# --------------------------------------------------------------------------------------
# server


class AbuseApiHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive JSON API with users, orders, a catalog and a login."""

    protocol_version = "HTTP/1.1"
    server_version = "SampleApi/1.0"
    sys_version = ""
    wbufsize = 1 << 16  # headers and body leave in one write (flushed per response)
    timeout = rs.SOCKET_TIMEOUT

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (stdlib's name)
        pass

    def _send(self, status: int, obj: object, extra=()) -> None:
        body = rs.compact_json(obj)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        for k, v in extra:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        parts = [p for p in url.path.split("/") if p]
        if parts[:3] == ["api", "v1", "users"] and len(parts) == 4:
            n = int(parts[3]) if parts[3].isdigit() else 0
            if 1 <= n <= 100:
                return self._send(200, {"id": n, "name": f"User {n}", "email": f"user{n}@example.com"})
            return self._send(404, {"error": "not_found", "path": url.path})
        if url.path == "/api/v1/orders":
            q = dict(p.split("=", 1) for p in url.query.split("&") if "=" in p)
            page = int(q["page"]) if q.get("page", "").isdigit() else 1
            orders = [
                {"id": 1000 + 10 * page + i, "total_cents": 1299 + 150 * i, "state": "shipped"} for i in range(5)
            ]
            return self._send(200, orders)
        if url.path == "/api/v1/catalog":
            return self._send(200, rs.catalog(8), extra=[("Cache-Control", "public, max-age=60")])
        return self._send(404, {"error": "not_found", "path": url.path})

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        if url.path != "/api/v1/login":
            return self._send(404, {"error": "not_found", "path": url.path})
        try:
            creds = json.loads(body)
            username, password = str(creds["username"]), str(creds["password"])
        except (ValueError, KeyError, TypeError):
            return self._send(400, {"error": "bad_request"})
        if username in ACCOUNTS and password == PASSWORD:
            token = {"access_token": user_jwt(username), "token_type": "Bearer", "expires_in": 3600}
            return self._send(200, token, extra=[("Cache-Control", "no-store")])
        return self._send(401, {"error": "invalid_credentials"}, extra=[("Cache-Control", "no-store")])


# --------------------------------------------------------------------------------------
# clients


class Recorder:
    """Sends requests and keeps the client's own record of each, per actor."""

    def __init__(self, port: int, start: int) -> None:
        self.port = port
        self.start = start  # wall-clock second the recording started
        self.lines: dict[str, list[dict]] = {}
        self.conns: Counter[str] = Counter()
        self.sent_at: dict[str, list[float]] = {}  # monotonic send times, per actor
        self.lock = threading.Lock()
        self.alice_auth: str | None = None
        self.alice_ready = threading.Event()

    def connect(self, actor: str, src: str) -> http.client.HTTPConnection:
        # `clients` mode (the netns test) maps 127.0.0.N to SRC_PREFIX + N.
        src = SRC_PREFIX + src.rsplit(".", 1)[1]
        conn = http.client.HTTPConnection(SERVER_HOST, self.port, timeout=10, source_address=(src, 0))
        conn.connect()
        with self.lock:
            self.conns[actor] += 1
        return conn

    def send(
        self,
        conn: http.client.HTTPConnection,
        *,
        actor: str,
        src: str,
        method: str,
        path: str,
        query: str | None = None,
        body: dict | None = None,
        auth: str | None = None,
        token: str | None = None,
        device: str | None = None,
        user: str | None = None,
        expect: int,
        verdict: str,
    ) -> bytes:
        headers = {"User-Agent": UA, "Accept": "application/json"}
        if auth is not None:
            headers["Authorization"] = auth
        if token is not None:
            headers["Approov-Token"] = token
        raw = None
        if body is not None:
            raw = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        target = path + ("?" + query if query else "")
        t = time.monotonic()
        conn.request(method, target, body=raw, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != expect:
            raise RuntimeError(f"{actor} {method} {target}: status {resp.status}, expected {expect}")
        with self.lock:
            self.sent_at.setdefault(actor, []).append(t)
            self.lines.setdefault(actor, []).append(
                {
                    "actor": actor,
                    "client_ip": src,
                    "method": method,
                    "path": path,
                    "query": query,
                    "status": resp.status,
                    "device": device,
                    "user": user,
                    "username": body["username"] if body is not None else None,
                    "verdict": verdict,
                }
            )
        return data


class TokenSource:
    """A genuine app's attestation tokens: new on a binding change and every `every` uses."""

    def __init__(self, did: str, every: int = 5) -> None:
        self.did, self.every = did, every
        self.minted = 0
        self.uses = 0
        self.bound: str | None = None
        self.token = ""

    def get(self, auth: str | None) -> str:
        if not self.token or auth != self.bound or self.uses >= self.every:
            self.token = mint(self.did, auth, now() + 300 + self.minted)
            self.minted += 1
            self.bound, self.uses = auth, 0
        self.uses += 1
        return self.token


def browse_plan(rng: random.Random, uid: int, n: int = 15) -> list[tuple[str, str | None]]:
    """A session's browsing: catalog, own profile, and order history paged 1..3."""
    plan: list[tuple[str, str | None]] = []
    while len(plan) < n:
        what = rng.choice(("catalog", "profile", "orders"))
        if what == "catalog":
            plan.append(("/api/v1/catalog", None))
        elif what == "profile":
            plan.append((f"/api/v1/users/{uid}", None))
        else:
            for page in range(1, rng.randint(1, 3) + 1):
                plan.append(("/api/v1/orders", f"page={page}"))
    return plan[:n]


GENUINE = {
    # actor: (source, device, user, own user id, seed, mistypes the password first)
    "genuine-a": ("127.0.0.10", "device-a", "alice@example.com", 1, 1101, False),
    "genuine-b": ("127.0.0.11", "device-b", "bob@example.com", 2, 2202, True),
    "genuine-c": ("127.0.0.12", "device-c", "carol@example.com", 3, 3303, False),
}


def genuine(r: Recorder, actor: str) -> None:
    src, did, user, uid, seed, typo = GENUINE[actor]
    rng = random.Random(seed)
    plan = browse_plan(rng, uid)  # drawn first: the same plan whatever else uses `rng`
    tokens = TokenSource(did)
    conn = r.connect(actor, src)
    kw = dict(actor=actor, src=src, device=did, verdict="valid")
    try:
        if typo:
            r.send(
                conn,
                method="POST",
                path="/api/v1/login",
                body={"username": user, "password": "correct-hrose"},
                token=tokens.get(None),
                expect=401,
                **kw,
            )
            time.sleep(rng.uniform(1.5, 4.0))  # retypes the password
        data = r.send(
            conn,
            method="POST",
            path="/api/v1/login",
            body={"username": user, "password": PASSWORD},
            token=tokens.get(None),
            expect=200,
            **kw,
        )
        auth = "Bearer " + json.loads(data)["access_token"]
        if actor == "genuine-a":
            r.alice_auth = auth  # what the scraper lifts from alice's phone
            r.alice_ready.set()
        for path, query in plan:
            time.sleep(rng.uniform(0.4, 2.5))
            r.send(
                conn, method="GET", path=path, query=query, auth=auth, token=tokens.get(auth), user=user, expect=200, **kw
            )
    finally:
        if actor == "genuine-a":
            r.alice_ready.set()
        conn.close()


def scraper(r: Recorder) -> None:
    actor, src = "scraper", "127.0.0.30"
    if not r.alice_ready.wait(30) or r.alice_auth is None:
        raise RuntimeError("scraper: genuine-a never logged in")
    auth = r.alice_auth
    time.sleep(1.0)
    conn = r.connect(actor, src)
    try:
        for n in range(1, 61):
            r.send(
                conn,
                actor=actor,
                src=src,
                method="GET",
                path=f"/api/v1/users/{n}",
                auth=auth,
                user="alice@example.com",
                expect=200,
                verdict="missing",
            )
            time.sleep(0.05)
    finally:
        conn.close()


def stuffer(r: Recorder) -> None:
    actor, src = "stuffer", "127.0.0.40"
    time.sleep(3.0)
    conn = r.connect(actor, src)
    try:
        for k in range(1, 26):
            body = {"username": f"victim{k:02d}@example.com", "password": "Winter2026!"}
            r.send(
                conn, actor=actor, src=src, method="POST", path="/api/v1/login", body=body, expect=401, verdict="missing"
            )
            time.sleep(0.1)
    finally:
        conn.close()


DISTRIBUTED = [f"127.0.0.{last}" for last in range(50, 60)]


def distributed(r: Recorder) -> None:
    """10 addresses, 3 attempts each 0.3 s apart; address i starts 0.03 s after address i-1."""
    actor = "distributed"
    time.sleep(6.0)
    conns = [r.connect(actor, src) for src in DISTRIBUTED]
    try:
        t0 = time.monotonic()
        for k in range(1, 4):
            for i, (src, conn) in enumerate(zip(DISTRIBUTED, conns)):
                time.sleep(max(0.0, t0 + 0.3 * (k - 1) + 0.03 * i - time.monotonic()))
                body = {"username": f"spray{i}{k}@example.com", "password": "Winter2026!"}
                r.send(
                    conn, actor=actor, src=src, method="POST", path="/api/v1/login", body=body, expect=401, verdict="missing"
                )
    finally:
        for conn in conns:
            conn.close()


def cadence_bot(r: Recorder) -> None:
    actor, src, did, user = "cadence-bot", "127.0.0.60", "device-x", "dave@example.com"
    auth = "Bearer " + user_jwt(user)
    token = mint(did, auth, r.start - 3600)  # lifted once, replayed long after it expired
    time.sleep(9.0)
    conn = r.connect(actor, src)
    try:
        nxt = time.monotonic()
        for _ in range(30):
            time.sleep(max(0.0, nxt - time.monotonic()))
            r.send(
                conn,
                actor=actor,
                src=src,
                method="GET",
                path="/api/v1/catalog",
                auth=auth,
                token=token,
                device=did,
                user=user,
                expect=200,
                verdict="expired",
            )
            nxt += 0.25
    finally:
        conn.close()


# name, function, addresses, device, user, what it does, what a detector should conclude
ACTORS = [
    ("genuine-a", lambda r: genuine(r, "genuine-a"), "127.0.0.10", "device-a", "alice@example.com",
     "logs in, then 15 GETs (catalog, own profile `/api/v1/users/1`, orders paged 1..3) with human think "
     "times (0.4-2.5 s); valid Approov token on every request, refreshed every 5",
     "genuine: no alert at medium or above"),
    ("genuine-b", lambda r: genuine(r, "genuine-b"), "127.0.0.11", "device-b", "bob@example.com",
     "mistypes the password once (401), logs in, then 15 GETs as genuine-a (own profile `/api/v1/users/2`)",
     "genuine: no alert at medium or above (one failed login is normal)"),
    ("genuine-c", lambda r: genuine(r, "genuine-c"), "127.0.0.12", "device-c", "carol@example.com",
     "logs in, then 15 GETs as genuine-a (own profile `/api/v1/users/3`)",
     "genuine: no alert at medium or above"),
    ("scraper", scraper, "127.0.0.30", "-", "alice@example.com (stolen)",
     "alice's Authorization value (lifted after her login), NO Approov token; GET `/api/v1/users/1`..`60` "
     "in order, 0.05 s apart, one connection",
     "scraper: unattested traffic, breadth and sequential walk over `/api/v1/users/{id}`, credential misuse "
     "of alice's account (her user from a second address without attestation)"),
    ("stuffer", stuffer, "127.0.0.40", "-", "-",
     "NO Approov token; 25 POST `/api/v1/login` as `victim01`..`victim25@example.com` / `Winter2026!`, "
     "0.1 s apart, all 401",
     "stuffer: unattested traffic, failed logins, many usernames from one address"),
    ("distributed", distributed, "127.0.0.50 .. .59", "-", "-",
     "NO Approov token; each address 3 POST `/api/v1/login` 0.3 s apart (`spray<i><k>@example.com`, "
     "i = address index 0..9, k = 1..3), addresses staggered by 0.03 s, all 401",
     "distributed: many addresses failing logins on one route (each address alone stays low)"),
    ("cadence-bot", cadence_bot, "127.0.0.60", "device-x", "dave@example.com",
     "30 GET `/api/v1/catalog` exactly every 0.25 s (absolute deadlines), all with ONE validly signed "
     "token whose `exp` is an hour before the recording started",
     "cadence bot: machine-regular timing, expired token replay"),
]


def main() -> None:
    rs.with_attempts("shieldtap-bots-and-stuffing-", ATTEMPTS, record)


def run_actors(r, actors: list | None = None) -> None:
    """Runs each actor (name, fn, ...) of ``actors`` (default: this sample's) as ``fn(r)``
    in its own thread; re-raises the first failure, or an actor still running after 120 s,
    in the calling thread. A failing genuine-a releases the actors waiting for alice."""
    errors: list[BaseException] = []

    def wrap(name, fn) -> None:
        try:
            fn(r)
        except BaseException as e:  # re-raised in the main thread
            errors.append(RuntimeError(f"{name}: {e!r}"))
            if name == "genuine-a":
                r.alice_ready.set()

    threads = [threading.Thread(target=wrap, args=(name, fn), name=name) for name, fn, *_ in (ACTORS if actors is None else actors)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
        if t.is_alive():
            errors.append(RuntimeError(f"{t.name}: still running after 120 s"))
    if errors:
        raise errors[0]


def record(work: Path) -> None:
    port = rs.pick_port(18093)
    out = work / "capture.pcap"
    server = ThreadingHTTPServer(("127.0.0.1", port), AbuseApiHandler)
    with rs.ServerThread(server), rs.Tcpdump("lo", out, f"tcp port {port}") as dump:
        r = Recorder(port, now())
        began = time.monotonic()
        run_actors(r)
        took = time.monotonic() - began
        dump.stop()
    lines = [line for name, *_ in ACTORS for line in r.lines.get(name, [])]
    DEST.mkdir(parents=True, exist_ok=True)
    (DEST / "capture.pcap").write_bytes(out.read_bytes())
    (DEST / "expected.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (DEST / "shieldtap.toml").write_text(
        "# The sample's test secrets (not real ones), base64 as Approov's CLI prints them.\n"
        "[[attestation]]\n"
        'name = "approov"\n'
        'header = "Approov-Token"\n'
        'algorithms = ["HS256"]\n'
        f'secret_base64 = "{base64.b64encode(SECRET).decode()}"\n'
        'binding_headers = ["Authorization"]\n'
        'missing_binding = "accept"\n'
        "\n"
        "# User JWTs (Authorization: Bearer ...) are HS256 with this secret: user ids are verified.\n"
        "[identity]\n"
        'user_header = "Authorization"\n'
        'user_claim = "sub"\n'
        f'user_secret_base64 = "{base64.b64encode(USER_SECRET).decode()}"\n'
    )
    count = {name: len(r.lines.get(name, [])) for name, *_ in ACTORS}
    gaps = [b - a for a, b in zip(r.sent_at["cadence-bot"], r.sent_at["cadence-bot"][1:])]
    actor_rows = "\n".join(
        f"| {name} | {srcs} | {dev} | {user} | {what} | {r.conns[name]} | {count[name]} | {concl} |"
        for name, _, srcs, dev, user, what, concl in ACTORS
    )
    summary = Counter(
        (l["actor"], l["method"], l["path"] if not l["path"].startswith("/api/v1/users/") else "/api/v1/users/{id}",
         l["status"], l["verdict"])
        for l in lines
    )
    order = {name: i for i, (name, *_) in enumerate(ACTORS)}
    summary_rows = "\n".join(
        f"| {a} | {m} | `{p}` | {s} | `{v}` | {n} |"
        for (a, m, p, s, v), n in sorted(summary.items(), key=lambda kv: (order[kv[0][0]], kv[0][1:]))
    )
    (DEST / "README.md").write_text(
        "# bots-and-stuffing\n\n"
        "Made by `scripts/record_abuse_sample.py` (see its docstring): Python `http.client`\n"
        "keep-alive connections, each bound to its actor's own source address in 127.0.0.0/8\n"
        "(`source_address=(ip, 0)`), to the script's own HTTP/1.1 JSON API (`AbuseApiHandler`, a\n"
        f"`ThreadingHTTPServer`) on 127.0.0.1:{port}, captured with\n"
        f"`{dump.display_cmd('capture.pcap')}`\n"
        f"({dump.captured} packets, 0 dropped by kernel). All actors ran concurrently, in threads; the\n"
        f"recording took {took:.0f} s.\n\n"
        "The API: `GET /api/v1/users/<n>` (200 `{id, name, email}` for n in 1..100, else 404),\n"
        "`GET /api/v1/orders?page=<p>` (200, a list of 5 orders), `GET /api/v1/catalog` (200) and\n"
        "`POST /api/v1/login` with a JSON body `{username, password}`: 200 with\n"
        "`{access_token: <user JWT>}` only for alice/bob/carol@example.com with password\n"
        "`correct-horse`, else 401 `{\"error\": \"invalid_credentials\"}`.\n\n"
        "Every request carries `User-Agent: okhttp/4.12.0` (the attackers imitate the app, so the\n"
        "user agent tells nothing apart) and `Accept: application/json`. User JWTs\n"
        "(`Authorization: Bearer ...`) are HS256 with the user secret in `shieldtap.toml`, claim\n"
        "`sub` = the user's email; genuine users get theirs from the login response. Attestation\n"
        "tokens (`Approov-Token`) were made by PyJWT (HS256, the account secret in `shieldtap.toml`,\n"
        "the same test account as `samples/token-abuse`) with `exp`, `did` and `pay` =\n"
        "base64(SHA-256(Authorization value)); tokens sent with a login (no Authorization yet) carry\n"
        "no `pay` (`missing_binding = \"accept\"`). Genuine apps mint a new token at login, once\n"
        "logged in, then every 5 requests, each valid for 300 s. shieldtap judges expiry on packet\n"
        "time, so the verdicts hold whenever the capture is replayed.\n\n"
        "## Actors\n\n"
        "| actor | source address(es) | device (`did`) | user (`sub`) | does | connections | requests "
        "| what a detector should conclude |\n"
        "|---|---|---|---|---|---|---|---|\n" + actor_rows + "\n"
        f"| **total** | | | | | {sum(r.conns.values())} | {len(lines)} | |\n\n"
        f"The cadence bot's requests left the client {min(gaps):.4f} to {max(gaps):.4f} s apart in this\n"
        "recording (client clock).\n\n"
        "## Requests\n\n"
        "`expected.jsonl` is the client's record, one line per request, grouped by actor in the\n"
        "order of the table above and in send order within an actor (the distributed stuffers in\n"
        "their interleaved send order): `actor`, `client_ip`, `method`, `path` (without the query),\n"
        "`query` (null when none), `status`, `device` (the `did` of the token sent, null without a\n"
        "token), `user` (the `sub` of the Authorization JWT, null without one), `username` (login\n"
        "attempts only, else null) and the attestation `verdict` shieldtap must give (`valid`,\n"
        "`missing`, `expired`). Replay with `shieldtap replay samples/bots-and-stuffing/capture.pcap\n"
        "--config samples/bots-and-stuffing/shieldtap.toml --transactions-out -`.\n\n"
        "| actor | method | path | status | verdict | requests |\n|---|---|---|---|---|---|\n"
        + summary_rows
        + "\n\n"
        "The alert expectations for this capture live in the `rules/` test cases and in\n"
        "`samples/bots-and-stuffing/alerts.jsonl`.\n"
    )
    rs.log(
        f"wrote {DEST} ({len(lines)} transactions, {sum(r.conns.values())} connections, {dump.captured} packets, "
        f"{took:.1f} s; cadence gaps {min(gaps):.4f}..{max(gaps):.4f} s)"
    )


def serve(host: str, port: int) -> None:
    """`serve HOST PORT`: only the API server, until killed (the netns test)."""
    server = ThreadingHTTPServer((host, port), AbuseApiHandler)
    rs.log(f"serving on {host}:{port}")
    server.serve_forever()


def clients(host: str, port: int, prefix: str) -> None:
    """`clients HOST PORT SRC_PREFIX`: only the actors, from SRC_PREFIX.N addresses."""
    global SERVER_HOST, SRC_PREFIX
    SERVER_HOST, SRC_PREFIX = host, prefix
    r = Recorder(port, now())
    run_actors(r)
    sent = sum(len(v) for v in r.lines.values())
    rs.log(f"clients done: {sent} requests")
    print(json.dumps({"requests": sent}))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) == 5 and sys.argv[1] == "clients":
        clients(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    elif len(sys.argv) == 1:
        main()
    else:
        print(__doc__.split("\n\n")[0] + "\nusage: record_abuse_sample.py [serve HOST PORT | clients HOST PORT SRC_PREFIX]", file=sys.stderr)
        sys.exit(2)
