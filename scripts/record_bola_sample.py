#!/usr/bin/env python3
"""Records samples/bola: genuine app users and one attested prober of a BOLA-vulnerable API, on loopback.

Usage: python3 scripts/record_bola_sample.py   (as root: tcpdump on loopback)

Python http.client keep-alive connections talk to a deliberately VULNERABLE HTTP/1.1 JSON
API defined here (`BolaApiHandler`, a `ThreadingHTTPServer` on 127.0.0.1). It authenticates
every request by its `Authorization: Bearer <user JWT>` (HS256 with the user secret, claim
`sub` = the user id as a string, e.g. "1001"; missing or bad: 401) but never checks that the
caller owns the object it asks for (broken object level authorization, OWASP API1):

  GET  /api/v1/me                    200 the caller's own profile {id, name, email, phone}
  GET  /api/v1/users/<id>            200 that user's profile for any existing id, else 404
  GET  /api/v1/users/<id>/orders     200 {"orders": [{id, total_cents}, ...]} of that user, else 404
  GET  /api/v1/orders/<order_id>     200 {id, user_id, items, total_cents} for any existing order, else 404
  POST /api/v1/orders                {"items": [{item_id, qty}, ...]} -> 201 {id, user_id}: a new order
                                     of the caller, ids from 6001 up (later GETs of it work)
  GET  /api/v1/catalog/items/<id>    200 a shared catalogue item {id, name, price_cents}, ids 1..20

Users: alice 1001, bob 1002, carol 1003, mallory 1004, dave 1005, erin 1006 (ids 1007 and up
do not exist). Orders: alice 5001-5003, bob 5004-5005, carol 5006-5008, mallory 5009.

Every actor binds its own client address in 127.0.0.0/8 and uses one keep-alive connection.
Every request carries `User-Agent: okhttp/4.12.0`, `Accept: application/json`, the actor's
Authorization and an `Approov-Token` made here with PyJWT (independent of shieldtap): HS256
with the same test account secret as `record_token_abuse.py`, claims `exp` (now + 300 s,
+1 s per earlier token of that actor), `did` and `pay` = base64(SHA-256(Authorization value)).
Each actor mints a fresh token every 5 requests. All tokens are valid: the prober runs the
genuine app (under a hooking framework), so attestation alone cannot tell her apart.
All actors run concurrently, in threads:

  alice    127.0.0.10  device-alice    1001  /me, own profile, own orders, catalogue, one new order
  bob      127.0.0.11  device-bob      1002  the same with his own ids
  carol    127.0.0.12  device-carol    1003  the same with her own ids
  mallory  127.0.0.40  device-mallory  1004  /me, own profile, then users 1001..1012, orders of
                                             1001..1003, orders 5001..5010 every 0.15 s, 2 items
  dave     127.0.0.13  device-dave     1005  /me and 4 catalogue items
  erin     127.0.0.14  device-erin     1006  /me and 4 catalogue items

Genuine think times (0.3-1.5 s) come from `random.Random(<seed>)` per actor, so paths, order
and counts are the same every run; only times, token `exp` values, client ports, Date headers
and (if the POSTs race) which new order id 6001.. each genuine user gets can differ.

Writes capture.pcap, expected.jsonl (the client's own record: one line per request, grouped
by actor in table order, in send order within an actor, with the attestation verdict and the
owner of the object asked for), shieldtap.toml (the secrets, base64) and README.md.
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

import jwt  # PyJWT: an implementation independent of shieldtap, used for recording

sys.path.insert(0, str(Path(__file__).resolve().parent))
import record_samples as rs  # noqa: E402  (shared capture helpers)

SECRET = b"shieldtap-sample-account-secret-0123456789"  # same test account as token-abuse
USER_SECRET = b"shieldtap-sample-user-secret-abcdef-456789"
DEST = Path(__file__).resolve().parent.parent / "samples" / "bola"
UA = "okhttp/4.12.0"
ATTEMPTS = 3  # recordings tried when tcpdump drops packets
PROBE_GAP = 0.15  # seconds between the prober's requests once she starts walking

# --------------------------------------------------------------------------------------
# the API's data

USERS = {
    1001: {"id": 1001, "name": "Alice Liddell", "email": "alice@example.com", "phone": "+44 20 7946 0001"},
    1002: {"id": 1002, "name": "Bob Marsh", "email": "bob@example.com", "phone": "+44 20 7946 0002"},
    1003: {"id": 1003, "name": "Carol Baker", "email": "carol@example.com", "phone": "+44 20 7946 0003"},
    1004: {"id": 1004, "name": "Mallory Knox", "email": "mallory@example.com", "phone": "+44 20 7946 0004"},
    1005: {"id": 1005, "name": "Dave Lister", "email": "dave@example.com", "phone": "+44 20 7946 0005"},
    1006: {"id": 1006, "name": "Erin Hart", "email": "erin@example.com", "phone": "+44 20 7946 0006"},
}

_ITEM_NAMES = (
    "Espresso beans 1kg", "Pour-over kettle", "Ceramic mug", "Hand grinder", "Paper filters x100",
    "Milk frother", "Travel tumbler", "Digital scale", "Cold brew jar", "Tea sampler",
    "Cocoa tin", "Oat milk 6-pack", "Biscotti box", "Cleaning tablets", "Tamper",
    "Knock box", "Dripper stand", "Glass carafe", "Barista apron", "Gift card",
)
CATALOG = {i: {"id": i, "name": n, "price_cents": 399 + 150 * i} for i, n in enumerate(_ITEM_NAMES, 1)}


def _order(oid: int, uid: int, items: list[tuple[int, int]]) -> dict:
    lines = [{"item_id": i, "qty": q} for i, q in items]
    total = sum(CATALOG[i]["price_cents"] * q for i, q in items)
    return {"id": oid, "user_id": uid, "items": lines, "total_cents": total}


SEED_ORDERS = {
    o["id"]: o
    for o in (
        _order(5001, 1001, [(1, 1), (4, 2)]),
        _order(5002, 1001, [(2, 1)]),
        _order(5003, 1001, [(7, 1), (3, 1)]),
        _order(5004, 1002, [(5, 1)]),
        _order(5005, 1002, [(2, 2), (9, 1)]),
        _order(5006, 1003, [(1, 1)]),
        _order(5007, 1003, [(3, 3)]),
        _order(5008, 1003, [(9, 1), (11, 1)]),
        _order(5009, 1004, [(12, 1)]),
    )
}
FIRST_NEW_ORDER = 6001


def pay(auth: str) -> str:
    return base64.b64encode(hashlib.sha256(auth.encode()).digest()).decode()


def user_auth(uid: int) -> str:
    tok = jwt.encode({"sub": str(uid), "exp": int(time.time()) + 3600}, USER_SECRET, "HS256")
    return "Bearer " + tok


def mint(did: str, auth: str, exp: int) -> str:
    """An Approov-style token bound to `auth` by `pay`."""
    return jwt.encode({"exp": exp, "did": did, "pay": pay(auth)}, SECRET, "HS256")


def now() -> int:
    return int(time.time())


# --------------------------------------------------------------------------------------
# server


class BolaApiHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive JSON API: authenticates the caller, never authorizes the object."""

    protocol_version = "HTTP/1.1"
    server_version = "SampleApi/1.0"
    sys_version = ""
    wbufsize = 1 << 16  # headers and body leave in one write (flushed per response)
    timeout = rs.SOCKET_TIMEOUT

    orders: dict[int, dict] = {}  # reset by `fresh_state()`
    next_order = FIRST_NEW_ORDER
    lock = threading.Lock()

    @classmethod
    def fresh_state(cls) -> None:
        cls.orders = {k: json.loads(json.dumps(v)) for k, v in SEED_ORDERS.items()}
        cls.next_order = FIRST_NEW_ORDER

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

    def _not_found(self, path: str) -> None:
        self._send(404, {"error": "not_found", "path": path})

    def _caller(self) -> int | None:
        """The authenticated user id, or None after answering 401."""
        auth = self.headers.get("Authorization") or ""
        if auth.startswith("Bearer "):
            try:
                claims = jwt.decode(auth[7:], USER_SECRET, algorithms=["HS256"])
                uid = int(claims["sub"])
                if uid in USERS:
                    return uid
            except (jwt.InvalidTokenError, KeyError, ValueError, TypeError):
                pass
        self._send(401, {"error": "unauthorized"}, extra=[("WWW-Authenticate", 'Bearer realm="api"')])
        return None

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        parts = [p for p in url.path.split("/") if p]
        if parts[:2] != ["api", "v1"]:
            return self._not_found(url.path)
        rest = parts[2:]
        caller = self._caller()
        if caller is None:
            return
        num = lambda s: int(s) if s.isdigit() else -1  # noqa: E731
        if rest == ["me"]:
            return self._send(200, USERS[caller], extra=[("Cache-Control", "no-store")])
        if len(rest) == 2 and rest[0] == "users":
            user = USERS.get(num(rest[1]))  # BOLA: any caller, any user
            if user is None:
                return self._not_found(url.path)
            return self._send(200, user, extra=[("Cache-Control", "no-store")])
        if len(rest) == 3 and rest[0] == "users" and rest[2] == "orders":
            uid = num(rest[1])
            if uid not in USERS:
                return self._not_found(url.path)
            with self.lock:  # BOLA: any caller, any user's orders
                mine = [{"id": o["id"], "total_cents": o["total_cents"]} for o in self.orders.values() if o["user_id"] == uid]
            return self._send(200, {"orders": sorted(mine, key=lambda o: o["id"])}, extra=[("Cache-Control", "no-store")])
        if len(rest) == 2 and rest[0] == "orders":
            with self.lock:
                order = self.orders.get(num(rest[1]))  # BOLA: any caller, any order
            if order is None:
                return self._not_found(url.path)
            return self._send(200, order, extra=[("Cache-Control", "no-store")])
        if len(rest) == 3 and rest[:2] == ["catalog", "items"]:
            item = CATALOG.get(num(rest[2]))
            if item is None:
                return self._not_found(url.path)
            return self._send(200, item, extra=[("Cache-Control", "public, max-age=300")])
        return self._not_found(url.path)

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        caller = self._caller()
        if caller is None:
            return
        if url.path != "/api/v1/orders":
            return self._not_found(url.path)
        try:
            items = [(int(x["item_id"]), int(x["qty"])) for x in json.loads(body)["items"]]
            if not items or any(i not in CATALOG or q < 1 for i, q in items):
                raise ValueError("bad items")
        except (ValueError, KeyError, TypeError):
            return self._send(400, {"error": "bad_request"})
        with self.lock:
            oid = type(self).next_order
            type(self).next_order += 1
            self.orders[oid] = _order(oid, caller, items)
        self._send(201, {"id": oid, "user_id": caller}, extra=[("Location", f"/api/v1/orders/{oid}")])


# --------------------------------------------------------------------------------------
# clients


class Recorder:
    """Sends requests and keeps the client's own record of each, per actor."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.lines: dict[str, list[dict]] = {}
        self.conns: Counter[str] = Counter()
        self.lock = threading.Lock()

    def connect(self, actor: str, src: str) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10, source_address=(src, 0))
        conn.connect()
        with self.lock:
            self.conns[actor] += 1
        return conn


class Session:
    """One actor: one keep-alive connection, its Authorization, and its attestation tokens."""

    def __init__(self, r: Recorder, actor: str, src: str, did: str, uid: int, every: int = 5) -> None:
        self.r, self.actor, self.src, self.did, self.uid = r, actor, src, did, uid
        self.auth = user_auth(uid)
        self.every = every
        self.minted = 0
        self.uses = 0
        self.token = ""
        self.conn = r.connect(actor, src)

    def close(self) -> None:
        self.conn.close()

    def _token(self) -> str:
        if not self.token or self.uses >= self.every:
            self.token = mint(self.did, self.auth, now() + 300 + self.minted)
            self.minted += 1
            self.uses = 0
        self.uses += 1
        return self.token

    def send(self, method: str, path: str, *, expect: int, body: dict | None = None) -> dict:
        headers = {
            "User-Agent": UA,
            "Accept": "application/json",
            "Authorization": self.auth,
            "Approov-Token": self._token(),
        }
        raw = None
        if body is not None:
            raw = json.dumps(body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        self.conn.request(method, path, body=raw, headers=headers)
        resp = self.conn.getresponse()
        data = json.loads(resp.read())
        if resp.status != expect:
            raise RuntimeError(f"{self.actor} {method} {path}: status {resp.status}, expected {expect}")
        line = {
            "actor": self.actor,
            "client_ip": self.src,
            "method": method,
            "path": path,
            "status": resp.status,
            "user": str(self.uid),
            "device": self.did,
            "verdict": "valid",
            "owner": owner_of(method, path, resp.status, data),
        }
        with self.r.lock:
            self.r.lines.setdefault(self.actor, []).append(line)
        return data


def owner_of(method: str, path: str, status: int, data: dict) -> str | None:
    """The user id (as the `sub` string) owning the object a request names; None when none.

    /me and catalogue items name no user's object; a 404 names an object that does not exist.
    A POST /api/v1/orders creates an order owned by the caller (the response's user_id).
    """
    parts = [p for p in path.split("/") if p][2:]
    if status >= 400 or parts[:1] in (["me"], ["catalog"]):
        return None
    if parts[0] == "users":
        owner = parts[1]
        if len(parts) == 2 and str(data["id"]) != owner:
            raise RuntimeError(f"{path}: profile of {data['id']}")
        return owner
    if parts[0] == "orders":
        if len(parts) == 2:
            order = SEED_ORDERS.get(int(parts[1]))
            if order is not None and order["user_id"] != data["user_id"]:
                raise RuntimeError(f"{path}: order of {data['user_id']}, not {order['user_id']}")
        return str(data["user_id"])
    raise RuntimeError(f"no owner rule for {method} {path}")


GENUINE = {
    # actor: (source, device, user id, seed, own orders, catalogue items viewed, item bought,
    #         catalogue item viewed after the new order)
    "alice": ("127.0.0.10", "device-alice", 1001, 1101, (5001, 5002), (1, 2, 3), 3, 7),
    "bob": ("127.0.0.11", "device-bob", 1002, 2202, (5004, 5005), (2, 3, 5), 5, None),
    "carol": ("127.0.0.12", "device-carol", 1003, 3303, (5006, 5007, 5008), (1, 3, 9), 9, None),
}

READERS = {
    # actor: (source, device, user id, seed, catalogue items viewed)
    "dave": ("127.0.0.13", "device-dave", 1005, 4404, (1, 2, 3, 5)),
    "erin": ("127.0.0.14", "device-erin", 1006, 5505, (1, 3, 5, 7)),
}


def think(rng: random.Random) -> None:
    time.sleep(rng.uniform(0.3, 1.5))


def genuine(r: Recorder, actor: str) -> None:
    src, did, uid, seed, orders, items, bought, after = GENUINE[actor]
    rng = random.Random(seed)
    s = Session(r, actor, src, did, uid)
    try:
        s.send("GET", "/api/v1/me", expect=200)
        think(rng)
        s.send("GET", f"/api/v1/users/{uid}", expect=200)
        think(rng)
        listed = s.send("GET", f"/api/v1/users/{uid}/orders", expect=200)
        if not {o["id"] for o in listed["orders"]} >= set(orders):
            raise RuntimeError(f"{actor}: own orders {listed}")
        for oid in orders:
            think(rng)
            s.send("GET", f"/api/v1/orders/{oid}", expect=200)
        for item in items:
            think(rng)
            s.send("GET", f"/api/v1/catalog/items/{item}", expect=200)
        think(rng)
        new = s.send("POST", "/api/v1/orders", body={"items": [{"item_id": bought, "qty": 1}]}, expect=201)
        think(rng)
        s.send("GET", f"/api/v1/orders/{new['id']}", expect=200)
        if after is not None:
            think(rng)
            s.send("GET", f"/api/v1/catalog/items/{after}", expect=200)
    finally:
        s.close()


def reader(r: Recorder, actor: str) -> None:
    src, did, uid, seed, items = READERS[actor]
    rng = random.Random(seed)
    time.sleep(rng.uniform(0.5, 3.0))  # opens the app a little later
    s = Session(r, actor, src, did, uid)
    try:
        s.send("GET", "/api/v1/me", expect=200)
        for item in items:
            think(rng)
            s.send("GET", f"/api/v1/catalog/items/{item}", expect=200)
    finally:
        s.close()


def mallory(r: Recorder) -> None:
    actor, src, did, uid = "mallory", "127.0.0.40", "device-mallory", 1004
    rng = random.Random(6606)
    time.sleep(2.0)  # starts while the genuine users are mid-session
    s = Session(r, actor, src, did, uid)
    try:
        s.send("GET", "/api/v1/me", expect=200)
        think(rng)
        s.send("GET", f"/api/v1/users/{uid}", expect=200)
        think(rng)
        probes: list[tuple[str, int]] = []
        probes += [(f"/api/v1/users/{n}", 200 if n in USERS else 404) for n in range(1001, 1013)]
        probes += [(f"/api/v1/users/{n}/orders", 200) for n in (1001, 1002, 1003)]
        probes += [(f"/api/v1/orders/{n}", 200 if n in SEED_ORDERS else 404) for n in range(5001, 5011)]
        probes += [(f"/api/v1/catalog/items/{n}", 200) for n in (1, 2)]
        for i, (path, expect) in enumerate(probes):
            if i:
                time.sleep(PROBE_GAP)
            s.send("GET", path, expect=expect)
    finally:
        s.close()


# name, function, address, device, user id, what it does, what a BOLA detector should conclude
ACTORS = [
    ("alice", lambda r: genuine(r, "alice"), "127.0.0.10", "device-alice", 1001,
     "`/me`, own profile `/users/1001`, own order list, orders 5001 and 5002, catalogue items 1, 2, 3, "
     "POST a new order N, GET `/orders/N`, catalogue item 7",
     "genuine: only her own objects, her new order, `/me` and shared catalogue items: no bola alert"),
    ("bob", lambda r: genuine(r, "bob"), "127.0.0.11", "device-bob", 1002,
     "`/me`, `/users/1002`, own order list, orders 5004 and 5005, catalogue items 2, 3, 5, POST a new "
     "order N, GET `/orders/N`",
     "genuine: no bola alert"),
    ("carol", lambda r: genuine(r, "carol"), "127.0.0.12", "device-carol", 1003,
     "`/me`, `/users/1003`, own order list, orders 5006, 5007, 5008, catalogue items 1, 3, 9, POST a new "
     "order N, GET `/orders/N`",
     "genuine: no bola alert"),
    ("mallory", mallory, "127.0.0.40", "device-mallory", 1004,
     "`/me`, `/users/1004` (human pace), then every 0.15 s: `/users/1001`..`1012` in order (1001-1006 "
     "200, 1007-1012 404), `/users/1001|1002|1003/orders`, `/orders/5001`..`5010` (5010 404), catalogue "
     "items 1 and 2; VALID attestation bound to her own Authorization throughout",
     "**bola**: cross-user 2xx on other users' profiles, order lists and orders, and a sequential id "
     "walk over `/api/v1/users/{id}` with many 404s"),
    ("dave", lambda r: reader(r, "dave"), "127.0.0.13", "device-dave", 1005,
     "`/me`, catalogue items 1, 2, 3, 5",
     "genuine: no bola alert (catalogue items are shared)"),
    ("erin", lambda r: reader(r, "erin"), "127.0.0.14", "device-erin", 1006,
     "`/me`, catalogue items 1, 3, 5, 7",
     "genuine: no bola alert (catalogue items are shared)"),
]


def run_actors(r: Recorder) -> None:
    errors: list[BaseException] = []

    def wrap(name, fn) -> None:
        try:
            fn(r)
        except BaseException as e:  # re-raised in the main thread
            errors.append(RuntimeError(f"{name}: {e!r}"))

    threads = [threading.Thread(target=wrap, args=(name, fn), name=name) for name, fn, *_ in ACTORS]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
        if t.is_alive():
            errors.append(RuntimeError(f"{t.name}: still running after 120 s"))
    if errors:
        raise errors[0]


def main() -> None:
    rs.with_attempts("shieldtap-bola-", ATTEMPTS, record)


def relation(line: dict) -> str:
    if line["owner"] is None:
        return "not found" if line["status"] == 404 else "no owner (`/me`, catalogue)"
    return "own" if line["owner"] == line["user"] else "**other user's**"


def record(work: Path) -> None:
    port = rs.pick_port(18094)
    out = work / "capture.pcap"
    BolaApiHandler.fresh_state()
    server = ThreadingHTTPServer(("127.0.0.1", port), BolaApiHandler)
    with rs.ServerThread(server), rs.Tcpdump("lo", out, f"tcp port {port}") as dump:
        r = Recorder(port)
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
    actor_rows = "\n".join(
        f"| {name} | {src} | {dev} | {uid} | {what} | {r.conns[name]} | {count[name]} | {concl} |"
        for name, _, src, dev, uid, what, concl in ACTORS
    )
    summary = Counter((l["actor"], l["method"], route(l["path"]), l["status"], relation(l)) for l in lines)
    order = {name: i for i, (name, *_) in enumerate(ACTORS)}
    summary_rows = "\n".join(
        f"| {a} | {m} | `{p}` | {s} | {rel} | {n} |"
        for (a, m, p, s, rel), n in sorted(summary.items(), key=lambda kv: (order[kv[0][0]], kv[0][1:]))
    )
    new_orders = ", ".join(
        f"{l['actor']} {l['path'].rsplit('/', 1)[1]}"
        for l in lines
        if l["method"] == "GET" and l["path"].startswith("/api/v1/orders/") and int(l["path"].rsplit("/", 1)[1]) >= FIRST_NEW_ORDER
    )
    mallory_rows = "\n".join(
        f"| {i + 1} | `{l['path']}` | {l['status']} | {l['owner'] or '-'} |"
        for i, l in enumerate(r.lines["mallory"])
    )
    (DEST / "README.md").write_text(
        "# bola\n\n"
        "Broken object level authorization (BOLA, OWASP API1): an attested app user reading other\n"
        "users' objects, next to genuine users who only touch their own.\n\n"
        "Made by `scripts/record_bola_sample.py` (see its docstring): Python `http.client`\n"
        "keep-alive connections, one per actor, each bound to its actor's own source address in\n"
        "127.0.0.0/8 (`source_address=(ip, 0)`), to the script's own deliberately vulnerable HTTP/1.1\n"
        f"JSON API (`BolaApiHandler`, a `ThreadingHTTPServer`) on 127.0.0.1:{port}, captured with\n"
        f"`{dump.display_cmd('capture.pcap')}`\n"
        f"({dump.captured} packets, 0 dropped by kernel). All actors ran concurrently, in threads; the\n"
        f"recording took {took:.0f} s.\n\n"
        "## The API (vulnerable on purpose)\n\n"
        "Every request must carry `Authorization: Bearer <user JWT>` (HS256 with the user secret in\n"
        "`shieldtap.toml`, claim `sub` = the user id as a string, e.g. `\"1001\"`); without a valid one\n"
        "the answer is 401. Beyond that the server checks nothing: any logged-in caller can read any\n"
        "user's profile, order list and orders.\n\n"
        "| route | answer |\n|---|---|\n"
        "| `GET /api/v1/me` | 200, the caller's own profile `{id, name, email, phone}` |\n"
        "| `GET /api/v1/users/{id}` | 200, that user's profile, for ANY existing id (vulnerable); 404 otherwise |\n"
        "| `GET /api/v1/users/{id}/orders` | 200 `{\"orders\": [{id, total_cents}, ...]}` of that user (vulnerable); "
        "404 for an unknown user |\n"
        "| `GET /api/v1/orders/{order_id}` | 200 `{id, user_id, items, total_cents}` for ANY existing order "
        "(vulnerable); 404 otherwise |\n"
        "| `POST /api/v1/orders` | body `{\"items\": [{item_id, qty}, ...]}`: 201 `{id, user_id}`, a new order "
        f"of the caller with ids from {FIRST_NEW_ORDER} up |\n"
        "| `GET /api/v1/catalog/items/{id}` | 200 a shared catalogue item `{id, name, price_cents}`, ids 1..20 "
        "(public objects) |\n\n"
        "Users: alice 1001, bob 1002, carol 1003, mallory 1004, dave 1005, erin 1006; ids 1007 and up do\n"
        "not exist. Orders: alice 5001-5003, bob 5004-5005, carol 5006-5008, mallory 5009. New orders in\n"
        f"this recording: {new_orders}.\n\n"
        "Every request carries `User-Agent: okhttp/4.12.0`, `Accept: application/json` and an\n"
        "`Approov-Token` made by PyJWT (HS256, the account secret in `shieldtap.toml`, the same test\n"
        "account as `samples/token-abuse` and `samples/bots-and-stuffing`) with `exp` (300 s ahead),\n"
        "`did` and `pay` = base64(SHA-256(Authorization value)); each actor mints a fresh token every 5\n"
        "requests. Every token is valid and bound to the sender's own Authorization, mallory's too\n"
        "(she runs the genuine app under a hooking framework): attestation cannot tell her apart,\n"
        "only what she asks for can.\n\n"
        "## Actors\n\n"
        "| actor | source address | device (`did`) | user (`sub`) | does | connections | requests "
        "| what a BOLA detector should conclude |\n"
        "|---|---|---|---|---|---|---|---|\n" + actor_rows + "\n"
        f"| **total** | | | | | {sum(r.conns.values())} | {len(lines)} | |\n\n"
        "Genuine think times are 0.3-1.5 s (seeded `random.Random` per actor); mallory starts 2 s in,\n"
        f"and after her first two requests sends one every {PROBE_GAP} s.\n\n"
        "## What a BOLA detector should conclude\n\n"
        "- **mallory** (1004, 127.0.0.40, device-mallory, valid attestation): **bola**. She read other\n"
        "  users' profiles (`/api/v1/users/1001`, `1002`, `1003`, `1005`, `1006`) and order lists\n"
        "  (`/api/v1/users/1001|1002|1003/orders`) and other users' orders (`/api/v1/orders/5001`..`5008`),\n"
        "  all cross-user 2xx, and enumerated user ids 1001-1012 sequentially with many 404s\n"
        "  (1007-1012), then order ids 5001-5010 (5010: 404).\n"
        "- **alice, bob, carol, dave, erin**: no bola alert. They only touched their own objects, the\n"
        "  orders they created, `/me` and shared catalogue items (items 1, 2, 3, 5 and 7 are read by\n"
        "  several different users: public objects, not one user's).\n\n"
        "The alert expectations for this capture live in the `rules/` test cases and in\n"
        "`samples/bola/alerts.jsonl`.\n\n"
        "## Requests\n\n"
        "`expected.jsonl` is the client's record, one line per request, grouped by actor in the order\n"
        "of the table above and in send order within an actor: `actor`, `client_ip`, `method`, `path`,\n"
        "`status`, `user` (the `sub` of the Authorization JWT), `device` (the `did` of the Approov\n"
        "token), the attestation `verdict` shieldtap must give (always `valid`) and `owner`: the user\n"
        "id (a string, comparable with `user`) owning the object the path names: the id in\n"
        "`/users/{id}` and `/users/{id}/orders`, the order's `user_id` for `/orders/{id}`, the caller\n"
        "for `POST /api/v1/orders` (the order it creates); null for `/me`, catalogue items and 404s\n"
        "(no such object). Replay with `shieldtap replay samples/bola/capture.pcap --config\n"
        "samples/bola/shieldtap.toml --transactions-out -`.\n\n"
        "| actor | method | route | status | object | requests |\n|---|---|---|---|---|---|\n"
        + summary_rows
        + "\n\n"
        "mallory's requests in order:\n\n"
        "| # | path | status | owner |\n|---|---|---|---|\n" + mallory_rows + "\n"
    )
    rs.log(f"wrote {DEST} ({len(lines)} transactions, {sum(r.conns.values())} connections, {dump.captured} packets, {took:.1f} s)")


def route(path: str) -> str:
    parts = path.split("/")
    return "/".join("{id}" if p.isdigit() else p for p in parts)


if __name__ == "__main__":
    if len(sys.argv) != 1:
        print(__doc__.split("\n\n")[0], file=sys.stderr)
        sys.exit(2)
    main()
