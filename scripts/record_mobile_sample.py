#!/usr/bin/env python3
"""Records samples/mobile-network: a mobile API's everyday populations and its attackers.

Usage:
    python3 scripts/record_mobile_sample.py record [--speed X]     (as root: tcpdump on loopback)
    python3 scripts/record_mobile_sample.py check --bin target/debug/shieldtap [--workers 1,2,4]
                                                  [--rules DIR] [--strict]

`record` runs a real HTTP/1.1 JSON API (`MobileApiHandler`, a Python `ThreadingHTTPServer` on
127.0.0.1) and a real nginx reverse proxy in front of it (upstream keep-alive, adds
`X-Forwarded-For: <client address>`, connects to the API from its own address 127.0.0.3),
and ~90 Python `http.client` clients in threads, each bound to its own source address(es) in
127.0.0.0/8 (Linux loopback accepts any 127.x source; clients behind one carrier-NAT address
all bind that address, with different ports). Part of the clients talk to nginx, the rest to
the API directly; tcpdump on `lo` records only the API's port, so the capture holds the
direct connections and the proxy-to-API leg (where the peer is the proxy and the client is
known only through `X-Forwarded-For`).

Tokens are made here with PyJWT (independent of shieldtap): user tokens HS256 with the user
secret (claims `sub` = the numeric user id, `exp`), issued by the API's login; Approov-style
attestation tokens HS256 with the account secret (claims `exp`, `did`, and `pay` =
base64(SHA-256(Authorization value)) once the app has a session; a login's token has no
`pay`). The server enforces user tokens on private routes and never enforces attestation
(a monitored, not yet shielded API), so unattested clients are answered too.

Populations, actors and what each does are in POPULATIONS below and in the README this
writes; the randomness (start times, think times, browsing) comes from `random.Random`
seeded per actor, so the structure is the same on every run; only times, token `exp`
values, client ports and Date headers differ. `--speed X` (default 1) runs the clients X
times faster than packet time and rewrites the capture's timestamps (and the server's Date
headers and every token's `exp` use the same virtual clock), so the capture always spans
about 3.5 minutes of packet time.

Writes, into samples/mobile-network/: capture.pcap, truth.json (every actor: role,
population, addresses, device ids, user ids, usernames, requests), expected.jsonl (the
clients' own record of every transaction: method, path, status, body sizes),
shieldtap.toml and README.md.

`check` replays the capture with the given shieldtap binary (once per worker count), checks
that the alerts are identical for every worker count, and prints per population how many
genuine actors alerts name at each severity, which attackers are named or missed, the
alerts per rule, and API-level alerts on routes that serve public data. How an alert names
an actor is in `attribute()`.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import http.client
import json
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jwt  # PyJWT

sys.path.insert(0, str(Path(__file__).resolve().parent))
import record_samples as rs  # noqa: E402  (shared capture helpers: Tcpdump, Nginx, ports)

REPO = Path(__file__).resolve().parent.parent
DEST = REPO / "samples" / "mobile-network"
SECRET = b"shieldtap-sample-account-secret-0123456789"  # same test account as the other samples
USER_SECRET = b"shieldtap-sample-user-secret-abcdef-456789"
ATTEMPTS = 3  # recordings tried when tcpdump drops packets

API_HOST = "127.0.0.1"
PROXY_LISTEN = "127.0.0.2"
PROXY_ADDR = "127.0.0.3"  # nginx's source address towards the API (`proxy_bind`)
CGNAT_A = "127.100.64.1"  # carrier A's NAT address: 40 phones (+2 sync) and 4 stuffing bots
CARRIER_B = "127.100.65.1"  # carriers the roaming phones move to
CARRIER_C = "127.100.66.1"
SHARED = {CGNAT_A: "carrier A NAT", CARRIER_B: "carrier B NAT", CARRIER_C: "carrier C NAT"}

DURATION = 210.0  # seconds of packet time the recording spans (last requests end before)
APP_UA = "okhttp/4.12.0"
N_PRODUCTS = 5000  # public catalogue: /api/v1/products/1..5000
N_STORES = 60
PUBLIC_ROUTES = [  # routes whose data is public by design (for `check`)
    "GET /api/v1/products/{id}",
    "GET /api/v1/stores",
    "GET /api/v1/feed",
    "GET /api/v1/app-config",
]

# --------------------------------------------------------------------------------------
# virtual clock (packet time)


class Clock:
    """Packet time: starts at the wall clock and runs `speed` times faster."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self.t0 = time.time()

    def now(self) -> float:
        return self.t0 + (time.time() - self.t0) * self.speed

    def elapsed(self) -> float:
        return self.now() - self.t0

    def sleep(self, secs: float) -> None:
        if secs > 0:
            time.sleep(secs / self.speed)

    def sleep_until(self, offset: float) -> None:
        self.sleep(offset - self.elapsed())


CLOCK = Clock(1.0)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def pay(auth: str) -> str:
    return b64(hashlib.sha256(auth.encode()).digest())


def device_id(name: str) -> str:
    """An Approov-like device id: base64 of 16 bytes."""
    return b64(hashlib.sha256(b"shieldtap-mobile-sample/" + name.encode()).digest()[:16])


def mint(did: str, auth: str | None, exp: int) -> str:
    claims: dict = {"exp": exp, "did": did}
    if auth is not None:
        claims["pay"] = pay(auth)
    return jwt.encode(claims, SECRET, "HS256")


# --------------------------------------------------------------------------------------
# the API's data


DOMAINS = ["example.com", "example.org", "mail.example.com", "example.co.uk", "post.example.org"]
FIRST = ["amir", "bea", "chen", "dana", "eli", "fatou", "gus", "hana", "ivo", "jun", "kai", "lea", "milo",
         "nora", "omar", "pia", "quinn", "rosa", "sami", "tess", "uma", "vik", "wen", "xena", "yuri", "zoe"]


@dataclass
class Account:
    uid: int
    username: str
    password: str
    name: str
    orders: list[int] = field(default_factory=list)


class Data:
    """Users, orders, products and stores; built deterministically."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.accounts: dict[str, Account] = {}
        self.by_uid: dict[int, Account] = {}
        self.orders: dict[int, dict] = {}
        self.next_uid = 20001
        self.next_order = 3_100_000
        rng = random.Random(15)
        self.order_rng = rng
        self.stores = [
            {
                "id": 100 + i,
                "name": f"ShopCo {['Central', 'Riverside', 'Station', 'Market', 'Harbour', 'Park'][i % 6]} {i + 1}",
                "address": f"{10 + i} {['High Street', 'Mill Lane', 'Station Road', 'Church Street'][i % 4]}, "
                f"{['Leeds', 'York', 'Bristol', 'Bath', 'Derby'][i % 5]}",
                "phone": f"+44 113 496 0{100 + i:03d}",
                "lat": round(53.0 + 0.013 * i, 5),
                "lon": round(-1.5 + 0.011 * i, 5),
                "opens": "08:00",
                "closes": "21:00",
            }
            for i in range(N_STORES)
        ]

    def account(self, label: str, *, orders: int) -> Account:
        """A new account named after `label`, with `orders` seed orders."""
        uid = self.next_uid
        self.next_uid += 1
        # First letter and domain differ for every account, so the masked form shieldtap shows
        # (`a***@example.org`) still tells accounts apart when `check` reads alert evidence.
        k = uid - 20001
        first = FIRST[k % len(FIRST)]
        domain = DOMAINS[(k // len(FIRST)) % len(DOMAINS)]
        a = Account(uid, f"{first}.{label}@{domain}", f"pw-{uid}-{label}", f"{first.title()} {label.title()}")
        self.accounts[a.username] = a
        self.by_uid[uid] = a
        for _ in range(orders):
            self.new_order(a, [self.order_rng.randint(1, N_PRODUCTS)])
        return a

    def new_order(self, a: Account, items: list[int]) -> dict:
        with self.lock:
            # Ids are allocated across all customers in order, with gaps (cancelled checkouts).
            self.next_order += 1 + (1 if self.order_rng.random() < 0.15 else 0)
            oid = self.next_order
            o = {
                "id": oid,
                "user_id": a.uid,
                "items": [{"product_id": p, "qty": 1} for p in items],
                "total_cents": sum(199 + (p * 37) % 5000 for p in items),
                "state": "shipped",
            }
            self.orders[oid] = o
            a.orders.append(oid)
            return o


DATA = Data()


def product(pid: int) -> dict:
    return {
        "id": pid,
        "name": f"Product {pid}",
        "category": pid // 100,
        "price_cents": 199 + (pid * 37) % 5000,
        "in_stock": pid % 7 != 0,
    }


def user_jwt(uid: int) -> str:
    return jwt.encode({"sub": str(uid), "exp": int(CLOCK.now()) + 3600}, USER_SECRET, "HS256")


# --------------------------------------------------------------------------------------
# server


class MobileApiHandler(BaseHTTPRequestHandler):
    """The mobile app's HTTP/1.1 keep-alive JSON API.

    Public: GET /api/v1/app-config, /api/v1/feed?page=N, /api/v1/products/{id} (1..5000),
    /api/v1/stores?lat=&lon= (the 5 nearest stores, with street address and phone).
    Login: POST /api/v1/login {"username","password"} -> 200 {"access_token","user_id"} | 401.
    Private (user JWT required, else 401): GET /api/v1/me, /api/v1/users/{id}/orders (any
    user's list: vulnerable), /api/v1/orders/{id} (any order: vulnerable), /api/v1/sync,
    POST /api/v1/orders.
    """

    protocol_version = "HTTP/1.1"
    server_version = "SampleApi/1.0"
    sys_version = ""
    wbufsize = 1 << 16
    timeout = 300  # longer than nginx's upstream keepalive_timeout: nginx closes first

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        pass

    def date_time_string(self, timestamp=None) -> str:
        return formatdate(CLOCK.now(), usegmt=True)

    def _send(self, status: int, obj: object, extra=()) -> None:
        body = rs.compact_json(obj)
        gz = len(body) > 400 and "gzip" in (self.headers.get("Accept-Encoding") or "")
        if gz:
            body = gzip.compress(body, compresslevel=6, mtime=0)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if gz:
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Vary", "Accept-Encoding")
        for k, v in extra:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _caller(self) -> Account | None:
        auth = self.headers.get("Authorization") or ""
        if not auth.startswith("Bearer "):
            return None
        try:
            claims = jwt.decode(auth[7:], USER_SECRET, algorithms=["HS256"], options={"verify_exp": False})
        except jwt.InvalidTokenError:
            return None
        return DATA.by_uid.get(int(claims.get("sub", "0")))

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        p = [s for s in url.path.split("/") if s][2:] if url.path.startswith("/api/v1/") else None
        if p == ["app-config"]:
            return self._send(200, {"min_version": "5.2.0", "features": {"wallet": True, "chat": False}},
                              [("Cache-Control", "public, max-age=300")])
        if p == ["feed"]:
            page = int(q.get("page", "1")) if q.get("page", "1").isdigit() else 1
            start = (page * 7919) % (N_PRODUCTS - 8) + 1
            return self._send(200, {"page": page, "items": [product(start + i) for i in range(8)]})
        if p and len(p) == 2 and p[0] == "products":
            pid = int(p[1]) if p[1].isdigit() else 0
            if 1 <= pid <= N_PRODUCTS:
                return self._send(200, product(pid), [("Cache-Control", "public, max-age=60")])
            return self._send(404, {"error": "not_found"})
        if p == ["stores"]:
            try:
                lat, lon = float(q.get("lat", "53.1")), float(q.get("lon", "-1.4"))
            except ValueError:
                return self._send(400, {"error": "bad_request"})
            near = sorted(DATA.stores, key=lambda s: (s["lat"] - lat) ** 2 + (s["lon"] - lon) ** 2)[:5]
            return self._send(200, {"stores": near}, [("Cache-Control", "public, max-age=600")])
        caller = self._caller()
        if caller is None:
            return self._send(401, {"error": "unauthorized"})
        if p == ["me"]:
            return self._send(200, {"id": caller.uid, "name": caller.name, "email": caller.username})
        if p == ["sync"]:
            cursor = int(q.get("cursor", "0")) if q.get("cursor", "0").isdigit() else 0
            return self._send(200, {"cursor": cursor + 1, "changes": []})
        if p and len(p) == 3 and p[0] == "users" and p[2] == "orders":
            a = DATA.by_uid.get(int(p[1])) if p[1].isdigit() else None
            if a is None:
                return self._send(404, {"error": "not_found"})
            return self._send(200, {"orders": [
                {"id": o, "total_cents": DATA.orders[o]["total_cents"], "state": "shipped"} for o in a.orders[-30:]
            ]})
        if p and len(p) == 2 and p[0] == "orders":
            o = DATA.orders.get(int(p[1])) if p[1].isdigit() else None
            if o is None:
                return self._send(404, {"error": "not_found"})
            return self._send(200, o)
        return self._send(404, {"error": "not_found"})

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        try:
            req = json.loads(body) if body else {}
        except ValueError:
            return self._send(400, {"error": "bad_request"})
        if url.path == "/api/v1/login":
            a = DATA.accounts.get(str(req.get("username")))
            if a is not None and req.get("password") == a.password:
                return self._send(200, {"access_token": user_jwt(a.uid), "token_type": "Bearer",
                                        "expires_in": 3600, "user_id": a.uid}, [("Cache-Control", "no-store")])
            return self._send(401, {"error": "invalid_credentials"}, [("Cache-Control", "no-store")])
        caller = self._caller()
        if caller is None:
            return self._send(401, {"error": "unauthorized"})
        if url.path == "/api/v1/orders":
            items = [int(i.get("product_id", 0)) for i in req.get("items", []) if isinstance(i, dict)]
            o = DATA.new_order(caller, items or [1])
            return self._send(201, {"id": o["id"], "user_id": caller.uid, "state": "created"})
        return self._send(404, {"error": "not_found"})


# --------------------------------------------------------------------------------------
# clients


@dataclass
class Actor:
    name: str
    population: str
    role: str  # genuine | attacker
    what: str
    seed: int
    via: str = "direct"  # direct | proxy | mixed
    addresses: list[str] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)
    device_names: list[str] = field(default_factory=list)
    users: list[str] = field(default_factory=list)  # user ids (JWT `sub`) its requests carry
    usernames: list[str] = field(default_factory=list)  # usernames it tried at login
    attested: bool = True  # sends valid attestation (at least after start-up)
    expect_named: bool = False  # attackers: a correct detector names it
    counts: Counter = field(default_factory=Counter)
    lines: list[dict] = field(default_factory=list)
    shares_identity_with: str | None = None

    def truth(self) -> dict:
        return {
            "name": self.name,
            "role": self.role,
            "population": self.population,
            "what": self.what,
            "via": self.via,
            "addresses": sorted(set(self.addresses)),
            "devices": sorted(set(self.devices)),
            "users": sorted(set(self.users), key=lambda u: (len(u), u)),
            "usernames": sorted(set(self.usernames)),
            "attested": self.attested,
            "requests": len(self.lines),
            "statuses": dict(sorted(Counter(str(l["status"]) for l in self.lines).items())),
            "tokens": dict(sorted(self.counts.items())),
            **({"shares_identity_with": self.shares_identity_with} if self.shares_identity_with else {}),
        }


class Ports:
    api = 0
    proxy = 0


class TokenSource:
    """A genuine app's attestation: a token per binding, refreshed when it expires.

    `race`: when the token expired 0-3 s ago, the app sends it once more before refreshing
    (the SDK's refresh racing the request): a token arriving a second or two after its `exp`.
    """

    def __init__(self, actor: Actor, did: str, lifetime: float, race: bool) -> None:
        self.actor, self.did, self.lifetime, self.race = actor, did, lifetime, race
        self.token: str | None = None
        self.bound: str | None = None
        self.exp = 0
        self.raced = False
        self.minted = 0

    def get(self, auth: str | None) -> str:
        now = CLOCK.now()
        if self.token is not None and auth == self.bound:
            if now < self.exp:
                self.actor.counts["valid"] += 1
                return self.token
            if self.race and not self.raced and now - self.exp <= 3.0:
                self.raced = True
                self.actor.counts["expired-by-seconds"] += 1
                return self.token
        self.exp = int(now + self.lifetime) + self.minted % 2  # tokens minted together still differ
        self.minted += 1
        self.token, self.bound, self.raced = mint(self.did, auth, self.exp), auth, False
        self.actor.counts["valid"] += 1
        self.actor.counts["minted"] += 1
        return self.token


class Client:
    """One app instance (or script): one keep-alive connection at a time, from one address."""

    def __init__(self, actor: Actor, ua: str = APP_UA) -> None:
        self.actor = actor
        self.ua = ua
        self.conn: http.client.HTTPConnection | None = None
        self.src: str | None = None
        self.via = "direct"

    def move(self, src: str, via: str) -> None:
        """Switches network: the old connection ends before the new one opens."""
        self.close()
        self.src, self.via = src, via
        self.actor.addresses.append(src)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _conn(self) -> http.client.HTTPConnection:
        if self.conn is None:
            assert self.src is not None
            host, port = (PROXY_LISTEN, Ports.proxy) if self.via == "proxy" else (API_HOST, Ports.api)
            self.conn = http.client.HTTPConnection(host, port, timeout=20, source_address=(self.src, 0))
            self.conn.connect()
        return self.conn

    def send(
        self,
        method: str,
        target: str,
        *,
        body: dict | None = None,
        auth: str | None = None,
        token: str | None = None,
        expect: int | tuple[int, ...] = 200,
    ) -> tuple[int, bytes]:
        headers = {"Accept": "application/json", "Accept-Encoding": "gzip", "User-Agent": self.ua}
        if auth is not None:
            headers["Authorization"] = auth
        if token is not None:
            headers["Approov-Token"] = token
        raw = None
        if body is not None:
            raw = json.dumps(body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        for attempt in range(2):
            conn = self._conn()
            try:
                conn.request(method, target, body=raw, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # the server closed an idle connection: the app reconnects, as okhttp does
                self.close()
                if attempt:
                    raise
        expects = (expect,) if isinstance(expect, int) else expect
        if resp.status not in expects:
            raise RuntimeError(f"{self.actor.name} {method} {target}: status {resp.status}, expected {expects}")
        self.actor.lines.append({
            "method": method,
            "path": target,
            "status": resp.status,
            "request_body_bytes": len(raw or b""),
            "response_body_bytes": len(data),
        })
        if resp.getheader("Content-Encoding") == "gzip":
            data = gzip.decompress(data)
        return resp.status, data


class App:
    """The genuine app: a device, a session, attestation tokens."""

    def __init__(self, actor: Actor, dname: str, account: Account | None, *, lifetime: float,
                 race: bool, ua: str = APP_UA, attest_from_start: bool = True) -> None:
        self.actor = actor
        self.did = device_id(dname)
        actor.devices.append(self.did)
        actor.device_names.append(dname)
        self.account = account
        self.client = Client(actor, ua)
        self.tokens = TokenSource(actor, self.did, lifetime, race)
        self.auth: str | None = None
        self.attesting = attest_from_start
        self.rng = random.Random(actor.seed)

    def req(self, method: str, target: str, **kw) -> tuple[int, bytes]:
        token = self.tokens.get(self.auth) if self.attesting else None
        if not self.attesting:
            self.actor.counts["missing"] += 1
        return self.client.send(method, target, auth=self.auth, token=token, **kw)

    def login(self, password: str | None = None, expect: int = 200) -> None:
        assert self.account is not None
        self.actor.usernames.append(self.account.username)
        self.auth = None
        _, data = self.req("POST", "/api/v1/login", body={
            "username": self.account.username, "password": password or self.account.password,
        }, expect=expect)
        if expect == 200:
            self.auth = "Bearer " + json.loads(data)["access_token"]
            self.actor.users.append(str(self.account.uid))

    def resume(self) -> None:
        """A session from before the recording: the app already holds a user token."""
        assert self.account is not None
        self.auth = "Bearer " + user_jwt(self.account.uid)
        self.actor.users.append(str(self.account.uid))

    def think(self, lo: float, hi: float) -> None:
        CLOCK.sleep(self.rng.uniform(lo, hi))

    def browse(self, steps: int, lo: float = 1.0, hi: float = 6.0, stores: float = 0.2) -> None:
        """Ordinary app use: feed, products, own orders, sometimes the store locator or an order."""
        uid = self.account.uid if self.account else 0
        for _ in range(steps):
            self.think(lo, hi)
            r = self.rng.random()
            if r < 0.25:
                self.req("GET", f"/api/v1/feed?page={self.rng.randint(1, 4)}")
            elif r < 0.55:
                pid = self.rng.choice(POPULAR) if self.rng.random() < 0.6 else self.rng.randint(1, N_PRODUCTS)
                self.req("GET", f"/api/v1/products/{pid}")
            elif r < 0.55 + stores:
                lat, lon = 53.0 + self.rng.uniform(0, 0.7), -1.5 + self.rng.uniform(0, 0.6)
                self.req("GET", f"/api/v1/stores?lat={lat:.3f}&lon={lon:.3f}")
            elif r < 0.85 and self.auth:
                _, data = self.req("GET", f"/api/v1/users/{uid}/orders")
                own = [o["id"] for o in json.loads(data)["orders"]]
                if own:
                    self.think(0.8, 3.0)
                    self.req("GET", f"/api/v1/orders/{self.rng.choice(own)}")
            elif r < 0.92 and self.auth:
                self.req("GET", "/api/v1/me")
            elif self.auth:
                self.req("POST", "/api/v1/orders", body={"items": [{"product_id": self.rng.choice(POPULAR), "qty": 1}]},
                         expect=201)


POPULAR = [random.Random(7).randint(1, N_PRODUCTS) for _ in range(40)]


def session(app: App, *, steps: int, typo: bool = False, stores: float = 0.2) -> None:
    app.req("GET", "/api/v1/app-config")
    app.think(0.5, 2.0)
    if typo:
        app.login(password=app.account.password[::-1], expect=401)
        app.think(3.0, 7.0)  # retypes the password
    app.login()
    app.think(0.3, 1.0)
    app.req("GET", "/api/v1/me")
    app.browse(steps, stores=stores)


# ---- genuine populations


def cgnat(actor: Actor, i: int, acct: Account) -> None:
    app = App(actor, f"cgnat-{i:02d}", acct, lifetime=random.Random(actor.seed).choice([120, 180, 300]),
              race=i % 3 == 0)
    app.client.move(CGNAT_A, "proxy")
    CLOCK.sleep_until(app.rng.uniform(0, 140))
    try:
        session(app, steps=app.rng.randint(10, 22), typo=i in (3, 11, 24, 37))
    finally:
        app.client.close()


def home(actor: Actor, i: int, acct: Account, victim_share: dict | None = None) -> None:
    app = App(actor, f"home-{i:02d}", acct, lifetime=300 if victim_share is not None else 180, race=i % 4 == 1)
    app.client.move(f"127.20.0.{10 + i}", "proxy" if i % 2 else "direct")
    try:
        if victim_share is not None:
            # The copier's victim: a long session; its token stays valid throughout.
            CLOCK.sleep_until(20)
            app.req("GET", "/api/v1/app-config")
            app.login()
            victim_share["app"] = app
            victim_share["ready"].set()
            end = 20 + 180
            while CLOCK.elapsed() < end:
                app.browse(1, lo=2.0, hi=6.0, stores=0.1)
            return
        CLOCK.sleep_until(app.rng.uniform(0, 90))
        session(app, steps=app.rng.randint(15, 30), typo=i == 6)
    finally:
        app.client.close()


def roamer(actor: Actor, i: int, acct: Account) -> None:
    back = i >= 6  # commutes back: Wi-Fi -> carrier B -> the same Wi-Fi, minutes later
    app = App(actor, f"roamer-{i}", acct, lifetime=200 if back else 90, race=i % 2 == 0)
    rng = app.rng
    wifi = (f"127.30.0.{10 + i}", "direct")
    legs = [wifi, (CARRIER_B, "proxy"), wifi if back else (CARRIER_C, "proxy")]
    switch = [rng.uniform(0, 15), rng.uniform(60, 80), rng.uniform(125, 145), rng.uniform(195, 205)]
    try:
        CLOCK.sleep_until(switch[0])
        app.client.move(*legs[0])
        app.resume()
        app.req("GET", "/api/v1/me")
        for leg in range(3):
            if leg:
                app.client.move(*legs[leg])  # a new network: the token is carried over
            while CLOCK.elapsed() < switch[leg + 1] - 6:
                app.browse(1, lo=2.5, hi=6.0)
    finally:
        app.client.close()


def power(actor: Actor, i: int, acct: Account) -> None:
    app = App(actor, f"power-{i}", acct, lifetime=240, race=False)
    app.client.move(f"127.40.0.{10 + i}", "direct")
    rng = app.rng
    try:
        CLOCK.sleep_until(rng.uniform(0, 50))
        app.req("GET", "/api/v1/app-config")
        app.login()
        app.req("GET", "/api/v1/me")
        if i in (0, 1, 4):  # goes through the order history
            _, data = app.req("GET", f"/api/v1/users/{acct.uid}/orders")
            for oid in [o["id"] for o in json.loads(data)["orders"]][: 14 + 2 * i]:
                app.think(0.4, 1.2)
                app.req("GET", f"/api/v1/orders/{oid}")
        if i == 2:  # pages a category: consecutive ids, one after another
            base = 2101
            for k in range(45):
                app.think(0.5, 1.5)
                app.req("GET", f"/api/v1/products/{base + k}")
        else:
            for _ in range(35 + 3 * i):
                app.think(0.4, 1.6)
                if i == 3 and rng.random() < 0.3:  # plans a trip: store locator along the way
                    lat, lon = 53.0 + rng.uniform(0, 0.8), -1.5 + rng.uniform(0, 0.7)
                    app.req("GET", f"/api/v1/stores?lat={lat:.3f}&lon={lon:.3f}")
                else:
                    app.req("GET", f"/api/v1/products/{rng.randint(1, N_PRODUCTS)}")
        app.req("POST", "/api/v1/orders", body={"items": [{"product_id": rng.choice(POPULAR), "qty": 2}]}, expect=201)
    finally:
        app.client.close()


def sync(actor: Actor, i: int, acct: Account) -> None:
    app = App(actor, f"sync-{i}", acct, lifetime=60, race=True)
    app.client.move(CGNAT_A if i >= 4 else f"127.50.0.{10 + i}", "proxy" if i >= 4 else "direct")
    every = 5.0 if i < 3 else 10.0
    app.resume()
    cursor = 1000 * i
    try:
        t = 1.0 + i * 0.7
        while t < DURATION - 5:
            CLOCK.sleep_until(t)  # absolute deadlines: a fixed interval
            app.req("GET", f"/api/v1/sync?cursor={cursor}")
            cursor += 1
            t += every
    finally:
        app.client.close()


def late(actor: Actor, i: int, acct: Account) -> None:
    app = App(actor, f"late-{i}", acct, lifetime=180, race=False, attest_from_start=False)
    app.client.move(f"127.60.0.{10 + i}", "direct")
    try:
        CLOCK.sleep_until(app.rng.uniform(10, 120))
        app.req("GET", "/api/v1/app-config")  # before the SDK has fetched its first token
        if i == 1:
            app.req("GET", "/api/v1/feed?page=1")
        app.think(0.5, 1.5)
        app.attesting = True
        app.login()
        app.req("GET", "/api/v1/me")
        app.browse(app.rng.randint(10, 16))
    finally:
        app.client.close()


# ---- attackers


def copier(actor: Actor, share: dict) -> None:
    """Malware relaying the victim's live Authorization and Approov token to a second client."""
    if not share["ready"].wait(120 / CLOCK.speed + 30):
        raise RuntimeError("copier: the victim never logged in")
    victim: App = share["app"]
    actor.devices.append(victim.did)
    actor.users.append(str(victim.account.uid))
    c = Client(actor)
    c.move("127.66.0.10", "direct")
    rng = random.Random(actor.seed)
    start = CLOCK.elapsed() + 60
    CLOCK.sleep_until(start)
    uid = victim.account.uid
    try:
        while CLOCK.elapsed() < start + 90:
            auth, token = victim.auth, victim.tokens.token
            actor.counts["copied"] += 1
            r = rng.random()
            if r < 0.3:
                _, data = c.send("GET", f"/api/v1/users/{uid}/orders", auth=auth, token=token)
            elif r < 0.55:
                c.send("GET", "/api/v1/me", auth=auth, token=token)
            elif r < 0.8:
                c.send("GET", f"/api/v1/orders/{rng.choice(victim.account.orders)}", auth=auth, token=token)
            else:
                c.send("POST", "/api/v1/orders", body={"items": [{"product_id": rng.randint(1, N_PRODUCTS), "qty": 3}]},
                       auth=auth, token=token, expect=201)
            CLOCK.sleep(rng.uniform(1.5, 4.0))
    finally:
        c.close()


STUFF_LIST: list[tuple[str, str]] = []  # (username, password) the stuffer tries, in order


def stuffer(actor: Actor) -> None:
    """A credential-stuffing botnet: 24 bots, 20 on addresses of their own, 4 behind carrier A's NAT."""
    rng = random.Random(actor.seed)
    bots = [(f"127.77.{k // 10}.{10 + k % 10}", "proxy" if k % 3 == 0 else "direct") for k in range(20)]
    bots += [(CGNAT_A, "proxy")] * 4
    plan = list(STUFF_LIST)
    errors: list[BaseException] = []

    def bot(k: int, src: str, via: str, creds: list[tuple[str, str]]) -> None:
        brng = random.Random(actor.seed * 100 + k)
        c = Client(actor, "okhttp/4.9.3")
        c.move(src, via)
        try:
            CLOCK.sleep_until(brng.uniform(40, 150))
            for user, pw in creds:
                actor.usernames.append(user)
                actor.counts["missing"] += 1
                c.send("POST", "/api/v1/login", body={"username": user, "password": pw}, expect=(200, 401))
                CLOCK.sleep(brng.uniform(2.0, 6.0))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
        finally:
            c.close()

    threads = []
    pos = 0
    for k, (src, via) in enumerate(bots):
        n = 3 + rng.randint(0, 1)
        creds, pos = plan[pos: pos + n], pos + n
        threads.append(threading.Thread(target=bot, args=(k, src, via, creds)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def scraper(actor: Actor) -> None:
    """A catalogue scraper without attestation, walking product ids at machine pace."""
    rng = random.Random(actor.seed)
    c = Client(actor, "okhttp/4.12.0")
    c.move("127.88.0.10", "proxy")
    CLOCK.sleep_until(50)
    try:
        for pid in range(1000, 1400):
            actor.counts["missing"] += 1
            c.send("GET", f"/api/v1/products/{pid}")
            CLOCK.sleep(rng.uniform(0.15, 0.35))
    finally:
        c.close()


def bola(actor: Actor, acct: Account) -> None:
    """An attested app under a hooking framework, walking other customers' order ids."""
    app = App(actor, "prober", acct, lifetime=300, race=False)
    app.client.move("127.99.0.10", "direct")
    CLOCK.sleep_until(80)
    try:
        app.req("GET", "/api/v1/app-config")
        app.login()
        app.req("GET", "/api/v1/me")
        _, data = app.req("GET", f"/api/v1/users/{acct.uid}/orders")
        own = [o["id"] for o in json.loads(data)["orders"]]
        app.req("GET", f"/api/v1/orders/{own[0]}")
        for oid in range(own[0] - 40, own[0] - 2):
            app.think(0.5, 1.1)
            app.req("GET", f"/api/v1/orders/{oid}", expect=(200, 404))
    finally:
        app.client.close()


FARM_ACCOUNTS: list[tuple[str, str]] = []  # (username, password): bought, some wrong


def farm(actor: Actor) -> None:
    """A device farm: one attested device id signing in as many different users."""
    app = App(actor, "farm-phone", None, lifetime=300, race=False)
    app.client.move("127.98.0.10", "direct")
    CLOCK.sleep_until(60)
    try:
        for username, password in FARM_ACCOUNTS:
            a = DATA.accounts.get(username)
            ok = a is not None and a.password == password
            app.account = a or Account(0, username, password, "")
            app.actor.usernames.append(username)
            app.auth = None
            _, data = app.req("POST", "/api/v1/login", body={"username": username, "password": password},
                              expect=200 if ok else 401)
            if ok:
                app.auth = "Bearer " + json.loads(data)["access_token"]
                actor.users.append(str(a.uid))
                app.think(0.5, 1.5)
                app.req("GET", "/api/v1/me")
                app.think(0.5, 1.5)
                app.req("GET", f"/api/v1/users/{a.uid}/orders")
            app.think(2.0, 5.0)
    finally:
        app.client.close()


# --------------------------------------------------------------------------------------
# populations


def build_actors() -> tuple[list[Actor], list[tuple[Actor, callable]]]:
    actors: list[Actor] = []
    jobs: list[tuple[Actor, callable]] = []

    def add(a: Actor, fn) -> Actor:
        actors.append(a)
        jobs.append((a, fn))
        return a

    share = {"ready": threading.Event()}
    for i in range(40):
        add(Actor(f"cgnat-{i:02d}", "cgnat", "genuine",
                  "phone on carrier A behind one NAT address: login (a few mistype first), profile, feed, "
                  "products, own orders, store locator", 1000 + i, via="proxy"), lambda a, i=i, c=DATA.account(f"cg{i:02d}", orders=2 + i % 4): cgnat(a, i, c))
    for i in range(15):
        victim = i == 7
        add(Actor(f"home-{i:02d}", "home", "genuine",
                  "phone on its own home address; victim of the token copier (its token and session are "
                  "copied)" if victim else "phone on its own home address: ordinary session", 2000 + i,
                  via="proxy" if i % 2 else "direct"),
            lambda a, i=i, v=victim, c=DATA.account(f"home{i:02d}", orders=3 + i % 3): home(a, i, c, share if v else None))
    for i in range(8):
        add(Actor(f"roamer-{i}", "roaming", "genuine",
                  "Wi-Fi (own address) -> carrier B -> carrier C mid-session, token carried across, "
                  "refreshed every 90 s" if i < 6 else
                  "Wi-Fi (own address) -> carrier B -> back on the same Wi-Fi about a minute later, one "
                  "token (200 s) across the moves", 3000 + i, via="mixed"), lambda a, i=i, c=DATA.account(f"roam{i}", orders=3): roamer(a, i, c))
    for i in range(5):
        add(Actor(f"power-{i}", "power", "genuine",
                  ["reads 14 of its own orders quickly, then ~35 random catalogue products",
                   "reads 16 of its own orders quickly, then ~38 random catalogue products",
                   "pages a catalogue category: products 2101..2145 in order",
                   "~44 random catalogue products and the store locator along a trip",
                   "reads 22 of its own orders quickly, then ~47 random catalogue products"][i],
                  4000 + i), lambda a, i=i, c=DATA.account(f"power{i}", orders=22 + 2 * i): power(a, i, c))
    for i in range(6):
        add(Actor(f"sync-{i}", "background-sync", "genuine",
                  f"background sync: GET /api/v1/sync every {5 if i < 3 else 10} s for the whole recording"
                  + (" (behind carrier A's NAT)" if i >= 4 else ""), 5000 + i,
                  via="proxy" if i >= 4 else "direct"), lambda a, i=i, c=DATA.account(f"sync{i}", orders=2): sync(a, i, c))
    for i in range(3):
        add(Actor(f"late-{i}", "late-token", "genuine",
                  "first request(s) before the SDK has a token (no Approov-Token), then attested", 6000 + i),
            lambda a, i=i, c=DATA.account(f"late{i}", orders=2): late(a, i, c))
    add(Actor("token-copier", "token-copier", "attacker",
              "replays home-07's live Authorization and Approov token from a second address, interleaved "
              "with the device itself, from 60 s to 150 s after the victim logged in", 7001,
              expect_named=True, shares_identity_with="home-07"), lambda a: copier(a, share))
    add(Actor("credential-stuffer", "credential-stuffing", "attacker",
              "24 bots, 20 on addresses of their own and 4 behind carrier A's NAT address, 3-4 "
              "username/password pairs each against POST /api/v1/login, no attestation", 7002, via="mixed", attested=False, expect_named=True), stuffer)
    add(Actor("catalogue-scraper", "scraper", "attacker",
              "no attestation, GET /api/v1/products/1000..1399 every 0.15-0.35 s", 7003, via="proxy",
              attested=False, expect_named=True), scraper)
    add(Actor("bola-prober", "bola", "attacker",
              "valid attestation and its own login, walks 38 other customers' order ids", 7004,
              expect_named=True), lambda a, c=DATA.account("prober", orders=2): bola(a, c))
    add(Actor("device-farm", "device-farm", "attacker",
              "one attested device id signing in as 14 different users (10 bought credentials that work, "
              "4 that do not)", 7005, expect_named=True), farm)
    for a in actors:
        if a.name == "home-07":
            a.shares_identity_with = "token-copier"
    return actors, jobs


def prepare_credentials() -> None:
    """Accounts the attackers use: stuffing list (mostly unknown) and the farm's bought ones."""
    rng = random.Random(99)
    STUFF_LIST.clear()
    dormant = DATA.account("dormant", orders=1)  # exists; its owner is not in the recording
    for k in range(110):
        STUFF_LIST.append((f"{rng.choice(FIRST)}{rng.randint(1950, 2005)}.{k}@example.net", f"Summer{2000 + k}!"))
    STUFF_LIST[37] = (dormant.username, dormant.password)  # the one hit of the campaign
    FARM_ACCOUNTS.clear()
    for k in range(14):
        a = DATA.account(f"farm{k:02d}", orders=1)
        FARM_ACCOUNTS.append((a.username, a.password if k % 4 != 3 else "letmein1"))


def run_actors(jobs: list[tuple[Actor, callable]]) -> None:
    errors: list[BaseException] = []

    def wrap(a: Actor, fn) -> None:
        try:
            fn(a)
        except BaseException as e:  # noqa: BLE001 (re-raised in the main thread)
            errors.append(RuntimeError(f"{a.name}: {e!r}"))

    threads = [threading.Thread(target=wrap, args=(a, fn), name=a.name, daemon=True) for a, fn in jobs]
    for t in threads:
        t.start()
    deadline = time.monotonic() + (DURATION + 60) / CLOCK.speed + 60
    for t in threads:
        t.join(max(1.0, deadline - time.monotonic()))
        if t.is_alive():
            errors.append(RuntimeError(f"{t.name}: still running"))
    if errors:
        raise errors[0]


# --------------------------------------------------------------------------------------
# recording


def nginx_conf(work: Path, api_port: int, proxy_port: int) -> str:
    return "# reverse proxy for the mobile-network sample (scripts/record_mobile_sample.py)\n" + rs.nginx_conf_head(
        work, 1, 1024
    ) + f"""    server_tokens off;
    keepalive_timeout 75s;
    keepalive_requests 10000;
    upstream api {{
        server {API_HOST}:{api_port};
        keepalive 16;
        keepalive_timeout 30s;
        keepalive_requests 10000;
    }}
    server {{
        listen {PROXY_LISTEN}:{proxy_port};
        server_name api.shopco.test;
        location / {{
            proxy_pass http://api;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host api.shopco.test;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto https;
            proxy_bind {PROXY_ADDR};
        }}
    }}
}}
"""


def rewrite_times(path: Path, t0: float, speed: float) -> None:
    """Stretches pcap timestamps around t0 by `speed` (packet time = the clients' clock)."""
    if speed == 1.0:
        return
    raw = bytearray(path.read_bytes())
    magic = raw[:4]
    if magic == b"\xd4\xc3\xb2\xa1":
        end, frac = "<", 1e6
    elif magic == b"\x4d\x3c\xb2\xa1":
        end, frac = "<", 1e9
    elif magic == b"\xa1\xb2\xc3\xd4":
        end, frac = ">", 1e6
    elif magic == b"\xa1\xb2\x3c\x4d":
        end, frac = ">", 1e9
    else:
        raise RuntimeError(f"{path}: not a pcap file")
    pos = 24
    hdr = struct.Struct(end + "IIII")
    while pos + 16 <= len(raw):
        sec, sub, incl, orig = hdr.unpack_from(raw, pos)
        ts = sec + sub / frac
        nts = t0 + (ts - t0) * speed
        nsec = int(nts)
        nsub = min(int(round((nts - nsec) * frac)), int(frac) - 1)
        hdr.pack_into(raw, pos, nsec, nsub, incl, orig)
        pos += 16 + incl
    path.write_bytes(bytes(raw))


def record(work: Path, speed: float) -> None:
    global CLOCK, DATA
    DATA = Data()
    api_port = rs.pick_port(18097)
    proxy_port = rs.pick_port(18098, host=PROXY_LISTEN)
    Ports.api, Ports.proxy = api_port, proxy_port
    (work / "tmp").mkdir()
    out = work / "capture.pcap"
    actors, jobs = build_actors()
    prepare_credentials()
    server = ThreadingHTTPServer((API_HOST, api_port), MobileApiHandler)
    server.daemon_threads = True
    nginx = rs.Nginx(work, nginx_conf(work, api_port, proxy_port), [(PROXY_LISTEN, proxy_port)])
    with rs.ServerThread(server), nginx, rs.Tcpdump("lo", out, f"tcp port {api_port}") as dump:
        CLOCK = Clock(speed)
        run_actors(jobs)
        took = time.time() - CLOCK.t0
        dump.stop()
    rewrite_times(out, CLOCK.t0, speed)
    size = out.stat().st_size
    DEST.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out, DEST / "capture.pcap")
    lines = [dict(l, actor=a.name) for a in actors for l in a.lines]
    (DEST / "expected.jsonl").write_text("".join(
        json.dumps({k: l[k] for k in ("method", "path", "status", "request_body_bytes", "response_body_bytes")}) + "\n"
        for l in lines))
    truth = {
        "about": "Ground truth of samples/mobile-network (scripts/record_mobile_sample.py). Addresses are the "
                 "client addresses shieldtap should attribute (X-Forwarded-For on the proxy leg); `users` are "
                 "the user ids (JWT `sub`) the actor's requests carry; `devices` the attested device ids (`did`).",
        "proxy": {"address": PROXY_ADDR, "adds": "X-Forwarded-For"},
        "shared_addresses": {addr: {"what": what, "actors": sorted({a.name for a in actors if addr in a.addresses})}
                             for addr, what in SHARED.items()},
        "public_routes": PUBLIC_ROUTES,
        "capture": {"packets": dump.captured, "bytes": size, "transactions": len(lines),
                    "packet_time_secs": round(DURATION), "recorded_at_speed": speed},
        "actors": [a.truth() for a in actors],
    }
    (DEST / "truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    (DEST / "shieldtap.toml").write_text(
        "# The sample's test secrets (not real ones), base64 as Approov's CLI prints them.\n"
        "[[attestation]]\n"
        'name = "approov"\n'
        'header = "Approov-Token"\n'
        'algorithms = ["HS256"]\n'
        f'secret_base64 = "{b64(SECRET)}"\n'
        'binding_headers = ["Authorization"]\n'
        'missing_binding = "accept"\n'
        "\n"
        "# User JWTs (Authorization: Bearer ...) are HS256 with this secret: user ids are verified.\n"
        "# The API sits behind nginx (127.0.0.3 towards the API), which adds X-Forwarded-For.\n"
        "[identity]\n"
        'user_header = "Authorization"\n'
        'user_claim = "sub"\n'
        f'user_secret_base64 = "{b64(USER_SECRET)}"\n'
        'client_ip_headers = ["X-Forwarded-For"]\n'
        f'trusted_proxies = ["{PROXY_ADDR}/32"]\n'
    )
    write_readme(actors, truth, dump, took, speed, api_port, proxy_port)
    rs.log(f"wrote {DEST} ({len(lines)} transactions, {dump.captured} packets, {size} bytes, {took:.0f} s wall)")


def write_readme(actors: list[Actor], truth: dict, dump, took: float, speed: float, api_port: int,
                 proxy_port: int) -> None:
    pops: dict[str, list[Actor]] = defaultdict(list)
    for a in actors:
        pops[(a.role, a.population)].append(a)
    rows = []
    for (role, pop), group in pops.items():
        addrs = sorted({x for a in group for x in a.addresses})
        shown = ", ".join(addrs[:3]) + (f" ... ({len(addrs)})" if len(addrs) > 3 else "")
        whats = "; ".join(dict.fromkeys(a.what for a in group))
        tok = Counter()
        for a in group:
            tok.update(a.counts)
        rows.append(
            f"| {pop} | {role} | {len(group)} | {shown} | {group[0].via if len({a.via for a in group}) == 1 else 'mixed'} "
            f"| {sum(len(a.lines) for a in group)} | {tok['expired-by-seconds']} | {tok['missing']} | {whats} |"
        )
    total = truth["capture"]["transactions"]
    text = f"""# mobile-network

A mobile shopping app's API on an ordinary few minutes: phones behind a carrier's NAT,
phones roaming between networks, power users, background sync, apps that call before their
first attestation token, households on their own addresses; and among them a token copier, a
distributed credential stuffer, a catalogue scraper, a BOLA prober and a device farm. Issue
15 ("the address is not the actor"): a detector must name every attacker and none of the
genuine actors at medium severity or above.

Made by `scripts/record_mobile_sample.py record` (see its docstring), with real components on
loopback: the API is a Python `http.server` (`MobileApiHandler`, HTTP/1.1 keep-alive, JSON,
gzip when the client accepts it and the body is over 400 bytes) on {API_HOST}:{api_port}; nginx
{rs.nginx_version()} in front of it on {PROXY_LISTEN}:{proxy_port} as a reverse proxy (upstream
keep-alive, `proxy_bind {PROXY_ADDR}`, `X-Forwarded-For: $proxy_add_x_forwarded_for`); ~{len(actors)}
actors are Python `http.client` clients in threads, each bound to its own source address in
127.0.0.0/8, some through nginx, some directly. Captured with
`{dump.display_cmd('capture.pcap')}` ({dump.captured} packets, 0 dropped): the direct
connections and the proxy-to-API leg, where the peer is always {PROXY_ADDR} and the client only
appears in `X-Forwarded-For`. `shieldtap.toml` trusts that proxy (`trusted_proxies`).
{total} transactions over {round(DURATION)} s of packet time (recorded in {took:.0f} s at speed
{speed:g}: timestamps, `Date` headers and token `exp` all follow the same clock).

## The API

| route | answer |
|---|---|
| `GET /api/v1/app-config` | public app settings |
| `GET /api/v1/feed?page=N` | public: 8 catalogue products |
| `GET /api/v1/products/{{id}}` | public catalogue, ids 1..{N_PRODUCTS}: read by everyone, owned by nobody |
| `GET /api/v1/stores?lat=&lon=` | public store locator: the 5 nearest stores with street address, phone and coordinates |
| `POST /api/v1/login` | `{{"username","password"}}` -> 200 `{{"access_token": <user JWT>, "user_id"}}` or 401 |
| `GET /api/v1/me` | (user token) the caller's profile `{{id, name, email}}` |
| `GET /api/v1/users/{{id}}/orders` | (user token) that user's order list (any user's: vulnerable) |
| `GET /api/v1/orders/{{id}}` | (user token) that order `{{id, user_id, items, total_cents, state}}` (any order: vulnerable) |
| `POST /api/v1/orders` | (user token) 201, a new order of the caller |
| `GET /api/v1/sync?cursor=N` | (user token) background sync, `{{"cursor", "changes": []}}` |

Order ids are allocated across all customers in sequence with gaps, so walking them from
one's own order id down hits other customers' orders and some 404s. The server checks user
tokens, never attestation (it is monitored, not shielded yet).

Tokens (PyJWT, secrets in `shieldtap.toml`): user tokens HS256, `sub` = the numeric user id;
Approov-style tokens HS256 with `exp`, `did` (base64 of 16 bytes) and `pay` = base64(SHA-256
(Authorization)) once the app is logged in (a login's token has no `pay`). Each app keeps a
token until it expires (lifetimes 60-300 s by population); apps marked "race" send an expired
token once more when it expired 0-3 s earlier (the SDK's refresh racing a request: tokens
arriving a second after they expire, within shieldtap's `refresh_grace_secs`).

## Populations

Shared addresses: `{CGNAT_A}` carrier A's NAT ({len(truth['shared_addresses'][CGNAT_A]['actors'])} actors: 40 phones,
2 sync devices and the stuffer's 4 bots there), `{CARRIER_B}` and `{CARRIER_C}` (the roaming phones' carriers).

| population | role | actors | addresses | via | requests | tokens 0-3 s past exp | requests without token | what they do |
|---|---|---|---|---|---|---|---|---|
""" + "\n".join(rows) + f"""

`truth.json` lists every actor: `role` (genuine/attacker), `population`, `addresses` (client
addresses as shieldtap should attribute them), `devices` (`did`), `users` (`sub`),
`usernames` tried at login, request and status counts, and `tokens`: attestation tokens
sent by kind (`valid`, `expired-by-seconds`, `missing`, `copied`; `minted` counts new ones).
The token copier carries home-07's
device id and user (it replays that phone's tokens): `shares_identity_with` says so on both.

## What a correct detector says

Must name (any severity; the rule that fits in brackets):
- **token-copier** (127.66.0.10): the same valid token in use from two addresses at once,
  interleaved within seconds (`token.concurrent-use`). Two addresses only, so a sharing
  threshold of three or four never fires.
- **credential-stuffer**: failed unattested logins from 21 addresses
  (`stuffing.distributed`) and, at carrier A's NAT address, 12+ different unattested usernames
  (`stuffing.many-usernames` on {CGNAT_A}, without naming the attested phones there).
- **catalogue-scraper** (127.88.0.10): 400 unattested catalogue reads in sequence
  (`scraping.*`, `bot.*`).
- **bola-prober** (127.99.0.10): reads other customers' orders (`bola.*`), attested or not.
- **device-farm** (127.98.0.10): one device id, 14 usernames (`stuffing.device-many-usernames`).

Must not name at medium or above:
- carrier A's 40 phones and 2 sync devices (each attested, each its own user, 4 with a
  mistyped password) however the address adds up;
- roaming phones (one token across two or three addresses in sequence; two come back to
  their Wi-Fi address a minute or more after leaving it, never within seconds);
- power users (many of their own orders; dozens of public products, one a consecutive run
  of ids; the store locator);
- background sync (machine-regular, but attested);
- late-token apps (one or two requests without a token, then attested);
- home-07 itself, except as the device whose token was copied (the copier's alerts carry its
  device id and user: they are findings about the copy).
And the public routes (products, store locator, feed, app config) are not personal-data
exposure or BOLA: the store locator's addresses and phones are the stores'.

## Checking a binary

`python3 scripts/record_mobile_sample.py check --bin target/debug/shieldtap --workers 1,2,4`
replays the capture with this folder's `shieldtap.toml`, checks that every worker count gives
the same alerts, and prints per population the genuine actors named at each severity, the
attackers named or missed, alerts per rule and API-level alerts on public routes (`--strict`:
exit 1 when a genuine actor is named at medium+ or an attacker is missed). How an alert names
an actor: see `attribute()` in the script.

`expected.jsonl` is the clients' own record of every transaction (method, target, status,
body sizes as sent and received, gzip bodies compressed), for `tests/samples.rs`.
"""
    (DEST / "README.md").write_text(text)


# --------------------------------------------------------------------------------------
# check

SEVERITIES = ["info", "low", "medium", "high", "critical"]


def mask(user: str) -> str:
    """How shieldtap shows an e-mail user id (numeric ids are shown as they are)."""
    if "@" in user:
        local, dom = user.rsplit("@", 1)
        return f"{local[:1]}***@{dom}"
    return user


def identity(a: dict) -> set[str]:
    """An actor's device ids, user ids and usernames as shieldtap shows them."""
    return set(a["devices"]) | {mask(u) for u in a["users"]} | {mask(u) for u in a["usernames"]}


def attribute(alert: dict, actors: list[dict]) -> tuple[set[str], str]:
    """The truth actors an alert names, and how (`actor`, `address` or `evidence`).

    - `actor`: the alert names a device or user (`actor.device`/`actor.user`, maybe with an
      ip). It names every truth actor whose addresses, devices and users hold each field it
      gives; when those include an attacker, only the attackers (a genuine actor there only
      shares the attacker's address or copied identity: the token copier carries home-07's
      device and user).
    - `address`: the alert names only an address. At an address of one actor, that actor.
      At an address several actors share (carrier NAT), the actors whose own traffic the
      alert counted: whose device, user or username is in its evidence, and the unattested
      attackers there when its evidence counts verdicts other than `valid`, and every
      attested actor there when it counts `valid` ones but its lists are truncated; when
      the evidence says nothing about who was counted, everyone at the address.
    - `evidence`: the alert names no client (keyed by route: about the API). It names the
      attackers whose own (not shared) addresses its evidence lists, never a genuine actor.
    """
    act = alert.get("actor") or {}
    ip, dev, user = act.get("ip"), act.get("device"), act.get("user")
    ev = alert.get("evidence") or {}
    if not (ip or dev or user):
        shared = {x for a in actors for x in a["addresses"]
                  if sum(x in b["addresses"] for b in actors) > 1}
        addrs = set(ev.get("addresses") or [])
        named = {a["name"] for a in actors if a["role"] == "attacker" and (set(a["addresses"]) - shared) & addrs}
        return named, "evidence"
    cands = [
        a for a in actors
        if (ip is None or ip in a["addresses"])
        and (dev is None or dev in a["devices"])
        and (user is None or user in {mask(u) for u in a["users"]})
    ]
    if dev or user:
        attackers = {a["name"] for a in cands if a["role"] == "attacker"}
        return attackers or {a["name"] for a in cands}, "actor"
    if len(cands) <= 1:
        return {a["name"] for a in cands}, "address"
    seen = set(ev.get("devices") or []) | set(ev.get("users") or []) | set(ev.get("usernames") or [])
    verdicts = ev.get("verdicts") or {}
    named = {a["name"] for a in cands if seen & identity(a)}
    if any(v != "valid" for v in verdicts):
        named |= {a["name"] for a in cands if a["role"] == "attacker" and not a["attested"]}
    if verdicts.get("valid") and ev.get("lists_truncated"):
        # it counted attested traffic there and lists only part of who sent it: everyone attested
        named |= {a["name"] for a in cands if a["attested"]}
    if not seen and not verdicts:
        named = {a["name"] for a in cands}
    return named, "address"


def replay(binary: str, workers: int, rules: str | None, out: Path) -> list[dict]:
    cmd = [binary, "replay", str(DEST / "capture.pcap"), "--config", str(DEST / "shieldtap.toml"),
           "--alerts-out", str(out), "--workers", str(workers), "--no-progress", "--log-level", "warn"]
    if rules:
        cmd += ["--rules", rules]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: exit {p.returncode}\n{p.stderr}")
    return [json.loads(l) for l in out.read_text().splitlines() if l.strip()]


def check(args: argparse.Namespace) -> int:
    truth = json.loads((DEST / "truth.json").read_text())
    actors = truth["actors"]
    workers = [int(w) for w in args.workers.split(",")]
    runs: dict[int, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for w in workers:
            t = time.monotonic()
            runs[w] = replay(args.bin, w, args.rules, Path(tmp) / f"alerts-{w}.jsonl")
            print(f"replay --workers {w}: {len(runs[w])} alerts in {time.monotonic() - t:.1f} s")
    base = runs[workers[0]]
    canon = lambda alerts: sorted(json.dumps(a, sort_keys=True) for a in alerts)  # noqa: E731
    same = all(canon(runs[w]) == canon(base) for w in workers)
    print(f"alerts identical across --workers {args.workers}: {'yes' if same else 'NO'}")

    named: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))  # actor -> sev -> rules
    per_rule: Counter = Counter()
    api_public: Counter = Counter()
    api_other: Counter = Counter()
    unattributed: Counter = Counter()
    at_shared: Counter = Counter()
    for al in base:
        sev = al["severity"]
        per_rule[(al["rule"], sev)] += 1
        names, how = attribute(al, actors)
        ip = (al.get("actor") or {}).get("ip")
        if how == "address" and ip in truth["shared_addresses"]:
            genuine = sum(1 for a in actors if a["name"] in names and a["role"] == "genuine")
            at_shared[(al["rule"], sev, ip, "shared_address" in (al.get("evidence") or {}), genuine)] += 1
        if how == "evidence":
            (api_public if al.get("endpoint") in truth["public_routes"] else api_other)[
                (al["rule"], sev, al.get("endpoint"))] += 1
        elif not names:
            unattributed[(al["rule"], sev, json.dumps(al["actor"]))] += 1
        for n in names:
            named[n][sev].add(al["rule"])

    by_pop: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for a in actors:
        by_pop[(a["role"], a["population"])].append(a)
    bad = 0
    print("\nGenuine actors named by alerts (actors named at least once at that severity):")
    print(f"{'population':<18}{'actors':>7}{'low':>6}{'medium':>8}{'high':>6}{'critical':>10}{'medium+':>9}")
    tot = Counter()
    for (role, pop), group in by_pop.items():
        if role != "genuine":
            continue
        row = Counter()
        for a in group:
            sevs = named.get(a["name"], {})
            for s in ("low", "medium", "high", "critical"):
                row[s] += bool(sevs.get(s))
            row["medium+"] += any(sevs.get(s) for s in ("medium", "high", "critical"))
        tot.update(row)
        tot["actors"] += len(group)
        print(f"{pop:<18}{len(group):>7}{row['low']:>6}{row['medium']:>8}{row['high']:>6}{row['critical']:>10}"
              f"{row['medium+']:>9}")
    print(f"{'all genuine':<18}{tot['actors']:>7}{tot['low']:>6}{tot['medium']:>8}{tot['high']:>6}"
          f"{tot['critical']:>10}{tot['medium+']:>9}")
    bad += tot["medium+"]
    for a in actors:
        sevs = named.get(a["name"])
        if a["role"] == "genuine" and sevs and any(sevs.get(s) for s in ("medium", "high", "critical")):
            rules = sorted({f"{r} ({s})" for s in ("medium", "high", "critical") for r in sevs.get(s, ())})
            print(f"  {a['name']:<14} {', '.join(rules)}")

    print("\nAttackers:")
    missed = 0
    for a in actors:
        if a["role"] != "attacker":
            continue
        sevs = named.get(a["name"], {})
        if not sevs:
            missed += 1
            print(f"  {a['name']:<20} MISSED")
            continue
        top = max(sevs, key=SEVERITIES.index)
        rules = sorted({r for rs_ in sevs.values() for r in rs_})
        print(f"  {a['name']:<20} named (highest {top}): {', '.join(rules)}")
    bad += missed

    print("\nAlerts per rule:")
    for (rule, sev), n in sorted(per_rule.items()):
        print(f"  {rule:<40} {sev:<9} {n}")
    if api_public:
        print("\nAPI-level alerts on public routes (public data reported as a finding):")
        for (rule, sev, ep), n in sorted(api_public.items()):
            print(f"  {rule:<40} {sev:<9} {ep}: {n}")
        bad += sum(n for (_, s, _), n in api_public.items() if s in ("medium", "high", "critical"))
    if api_other:
        print("\nAPI-level alerts on other routes:")
        for (rule, sev, ep), n in sorted(api_other.items()):
            print(f"  {rule:<40} {sev:<9} {ep}: {n}")
    if at_shared:
        print("\nAlerts naming only a shared address (carrier NAT):")
        for (rule, sev, ip, flagged, genuine), n in sorted(at_shared.items()):
            print(f"  {rule:<40} {sev:<9} {ip} (evidence shared_address: {'yes' if flagged else 'no'}; "
                  f"genuine actors counted: {genuine}): {n}")
    if unattributed:
        print("\nAlerts naming no actor of the truth (wrong attribution?):")
        for (rule, sev, act), n in sorted(unattributed.items()):
            print(f"  {rule:<40} {sev:<9} {act}: {n}")
    print(f"\nsummary: genuine named at medium+ {tot['medium+']} of {tot['actors']}, attackers missed {missed} of "
          f"{sum(1 for a in actors if a['role'] == 'attacker')}, public-route findings at medium+ "
          f"{sum(n for (_, s, _), n in api_public.items() if s in ('medium', 'high', 'critical'))}, "
          f"workers identical: {'yes' if same else 'no'}")
    if not same:
        bad += 1
    return 1 if (args.strict and bad) else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record", help="record the capture and write the sample folder")
    r.add_argument("--speed", type=float, default=1.0, help="clients run this many times faster than packet time")
    c = sub.add_parser("check", help="replay the capture with a shieldtap binary and score its alerts")
    c.add_argument("--bin", required=True)
    c.add_argument("--workers", default="1,2,4")
    c.add_argument("--rules", default=None)
    c.add_argument("--strict", action="store_true", help="exit 1 on a genuine actor at medium+ or a missed attacker")
    args = ap.parse_args()
    if args.cmd == "check":
        sys.exit(check(args))
    if not 0.25 <= args.speed <= 10:
        ap.error("--speed: 0.25 to 10")
    rs.with_attempts("shieldtap-mobile-", ATTEMPTS, lambda work: record(work, args.speed))


if __name__ == "__main__":
    main()
