#!/usr/bin/env python3
"""Record the realistic benchmark capture: a mobile API's traffic from real clients and servers.

Usage (as root: it creates a network namespace and runs tcpdump in it):

    python3 scripts/gen_realistic.py --out-dir /var/tmp/shieldtap-bench/1x
    python3 scripts/gen_realistic.py --out-dir /var/tmp/shieldtap-bench/3x --scale 3
    python3 scripts/gen_realistic.py --out-dir /tmp/small --transactions 20000 --span-secs 10

Needs Python 3.11, PyJWT 2.x and cryptography, iproute2, tcpdump and nginx (Debian:
`apt-get install -y iproute2 tcpdump nginx-light python3-jwt python3-cryptography`).
Exit status: 0 on success, 1 when anything went wrong (tcpdump dropped packets or the
clients ran late on every attempt, a client failed, a status differed from the planned
one), 2 for bad arguments.

Writes into --out-dir:
- capture.pcap: what tcpdump saw on the namespace's loopback (MTU 1500, one segment per
  packet), filtered to the API's port 80: client <-> nginx only;
- shieldtap.toml: the Approov secret, the user tokens' HS256 secret (kid hs-1) and
  user_jwks.json (the RS256 and ES256 public keys, kids rs-1 and es-1), so every token
  in the capture is verified;
- manifest.json: what the clients sent and received (transactions by method, status and
  route, client addresses, devices and users, gzip/chunked/IPv6 shares, decoded body
  sizes, token shares, bots), tcpdump's packet and drop counts, the packet-time span.

How: a private network namespace whose loopback has MTU 1500, gso_max_segs 1 (so the capture
holds wire-sized segments) and "AnyIP" local routes for 198.18.0.0/15 (home and bot
addresses), 100.64.0.0/10 (carrier-NAT addresses) and 2001:db8::/32, so each client binds its
own source address. nginx (2 workers; gzip on for JSON: larger answers are gzip+chunked;
gzip_static precompressed catalogue pages and search results: gzip with Content-Length;
ETags, so conditional GETs give 304) serves the static part (profiles, orders, products,
carts, notifications) on 192.0.2.10:80 and [2001:db8:53::10]:80 and proxies the dynamic part
(login, order creation, profile updates, chunked live search and recommendations) to a
Python API (`--serve-api`, 2 processes sharing 127.0.0.1:8081 with SO_REUSEPORT) over
upstream keep-alive. Client processes (asyncio, one coroutine per TCP connection) replay a
plan: the app's devices (Android/iOS, some behind carrier NAT, some roaming between
networks), web users without Approov, and a few bots (a catalogue scraper rotating through
proxy addresses, a credential stuffer, an Approov token forger, an order enumerator, a
stolen-token replayer, a device with a broken clock). Each app request carries an Approov
token (HS256: exp, did, pay = base64(SHA-256(Authorization)), refreshed every 4 minutes per
device) and a user JWT (RS256, ES256 or HS256 with kid; sub = the user) in
`Authorization: Bearer`. Requests keep-alive; about a tenth of the connections pipeline
their bursts. Requests are paced on the wall clock so that `--transactions` span
`--span-secs` (default 66 s x --scale); on a busy machine they run late and the capture
spans longer: a capture more than --max-overrun (10%) longer than planned is recorded
again, up to --attempts times, then the run fails (a sparser capture than planned would
make the 3x/1x comparison measure density instead of duration).

The plan (clients, their addresses, sessions, requests) is deterministic for a --seed and
--scale; keys, token bytes, packet timing and client ports are not. --scale multiplies the
transactions and the span with the same population.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gzip
import hashlib
import hmac
import json
import multiprocessing
import os
import random
import resource
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record_samples import (  # noqa: E402  (the helpers live beside this script)
    FIXED_MTIME,
    DroppedPackets,
    Nginx,
    Tcpdump,
    nginx_conf_head,
    nginx_version,
    wait_for_port,
)

# --------------------------------------------------------------------------------------
# Constants of the world

APPROOV_SECRET = b"shieldtap-bench-approov-account-secret-0123456789"
USER_HS_SECRET = b"shieldtap-bench-user-hs256-secret-abcdef-0123456"
FORGED_SECRET = b"not-the-account-secret-just-a-guess-0000000000"
HOST = "api.shop.example"
SERVER_V4 = "192.0.2.10"
SERVER_V6 = "2001:db8:53::10"
API_PORT = 80
BACKEND_PORT = 8081
ANYIP_ROUTES = ["198.18.0.0/15", "100.64.0.0/10"]
ANYIP6_ROUTE = "2001:db8::/32"

N_USERS = 1600
N_DEVICES = 2600
N_WEB = 400  # browser sessions: users without Approov
N_NAT = 40  # carrier-NAT addresses
N_PRODUCTS = 5000
N_CATALOGUE_PAGES = 250
APPROOV_REFRESH_SECS = 240  # a device fetches a new token this often
APPROOV_LIFETIME_SECS = 300
CLIENT_DEADLINE_SECS = 3600
MAX_OPEN = 1500  # connections open at once per client process
SESSION_SLACK_SECS = 2.0  # sessions end this long before the planned span's end

SEARCH_TERMS = [
    f"{a}-{b}"
    for a in ["red", "blue", "black", "white", "green", "grey", "pink", "navy", "gold", "silver"]
    for b in ["shoes", "jacket", "lamp", "chair", "mug", "phone-case", "backpack", "watch", "kettle", "towel",
              "scarf", "desk", "sofa", "bike", "helmet", "tent", "rug", "pillow", "blender", "speaker"]
]
FIRST = ["amir", "bea", "chen", "dana", "eli", "fatou", "gus", "hana", "ivo", "jun", "kai", "lea", "milo",
         "nora", "omar", "pia", "quinn", "rosa", "sami", "tess", "uma", "vik", "wen", "xena", "yuri", "zoe"]
LAST = ["smith", "jones", "khan", "garcia", "muller", "rossi", "dubois", "novak", "silva", "tanaka", "okafor",
        "larsen", "ivanova", "cohen", "murphy", "nguyen"]
STREETS = ["High Street", "Mill Lane", "Station Road", "Church Street", "Park Avenue", "Harbour Way", "Elm Close"]
CITIES = [("Leeds", "LS1"), ("York", "YO1"), ("Bristol", "BS1"), ("Bath", "BA1"), ("Derby", "DE1"),
          ("Hull", "HU1"), ("Exeter", "EX1"), ("Norwich", "NR1")]
BRANDS = ["Acme", "Northwind", "Contoso", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay"]
ANDROID_UA = ["okhttp/4.12.0", "ShopApp/7.3.0 (Android 14; Pixel 8)", "ShopApp/7.2.4 (Android 13; SM-S911B)"]
IOS_UA = ["ShopApp/7.3.0 (iOS 17.5; iPhone15,2) CFNetwork/1494.0.7 Darwin/23.4.0",
          "ShopApp/7.2.9 (iOS 16.7; iPhone12,1) CFNetwork/1410.0.3 Darwin/22.6.0"]
WEB_UA = ["Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/125.0 Safari/537.36",
          "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15"]

# Bots: (name, share of all transactions, description).
BOTS = [
    ("scraper", 0.011, "catalogue scraper: no Approov, no user token, a new proxy address per connection"),
    ("stuffer", 0.004, "credential stuffing on /api/v1/auth/login, no tokens, 24 addresses (some carrier NAT)"),
    ("forger", 0.003, "Approov tokens signed with a guessed secret and a forged HS256 user token"),
    ("enumerator", 0.003, "a real device and user reading other users' orders by id (BOLA)"),
    ("replayer", 0.002, "one device's Approov token replayed from 40 addresses with other user tokens"),
    ("bad-clock", 0.001, "an app device whose Approov tokens are always expired"),
]


T_LOG = time.monotonic()


def log(msg: str) -> None:
    print(f"[gen_realistic {time.monotonic() - T_LOG:6.1f}s] {msg}", file=sys.stderr, flush=True)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256(claims: dict, secret: bytes, kid: str | None = None) -> str:
    """An HS256 JWT (the same bytes PyJWT makes, minted here per request fast)."""
    head = {"alg": "HS256", "typ": "JWT"}
    if kid is not None:
        head["kid"] = kid
    signing = b64url(json.dumps(head, separators=(",", ":")).encode()) + "." + b64url(
        json.dumps(claims, separators=(",", ":")).encode()
    )
    sig = hmac.new(secret, signing.encode(), hashlib.sha256).digest()
    return signing + "." + b64url(sig)


def pay_claim(authorization: str) -> str:
    return base64.b64encode(hashlib.sha256(authorization.encode()).digest()).decode()


def did_of(device: int) -> str:
    return base64.b64encode(hashlib.sha256(f"bench-device-{device}".encode()).digest()[:16]).decode()


def password_of(uid: int) -> str:
    return "pw-" + hashlib.sha256(f"bench-user-{uid}".encode()).hexdigest()[:10]


def username_of(uid: int) -> str:
    return f"{FIRST[uid % 26]}.{LAST[(uid // 26) % 16]}{uid % 1000}@mail.example"


# --------------------------------------------------------------------------------------
# The API's data (docroot for nginx)


def person(uid: int) -> dict:
    city, pc = CITIES[uid % len(CITIES)]
    return {
        "name": f"{FIRST[uid % 26].title()} {LAST[(uid // 26) % 16].title()}",
        "email": username_of(uid),
        "phone": f"+44 7700 9{uid % 100000:05d}",
        "address": {"line1": f"{1 + uid % 180} {STREETS[uid % len(STREETS)]}", "city": city,
                    "postcode": f"{pc} {1 + uid % 9}{'ABDEFGHJ'[uid % 8]}{'LNPQRSTU'[(uid // 8) % 8]}",
                    "country": "GB"},
    }


def product(pid: int) -> dict:
    rng = random.Random(pid * 7919)
    brand = BRANDS[pid % len(BRANDS)]
    words = SEARCH_TERMS[pid % len(SEARCH_TERMS)].replace("-", " ")
    doc = {
        "id": pid, "sku": f"SKU-{pid:06d}", "title": f"{brand} {words} {pid % 97}", "brand": brand,
        "price": {"amount": 199 + (pid * 37) % 20000, "currency": "GBP"},
        "rating": round(3 + rng.random() * 2, 1), "reviews": rng.randint(0, 900),
        "in_stock": rng.random() < 0.9,
        "images": [f"https://cdn.shop.example/p/{pid}/{i}.jpg" for i in range(rng.randint(1, 3))],
    }
    doc["category"] = ["home", "outdoor", "fashion", "kitchen", "tech"][pid % 5]
    doc["delivery"] = {"standard_days": 2 + pid % 4, "express": pid % 3 == 0, "free_over": 3000}
    if rng.random() < 0.7:
        doc["description"] = " ".join(
            rng.choice(["Durable.", "Ships in 24h.", "Recycled materials.", "Two-year warranty.",
                        "Machine washable.", "Designed in Leeds.", "Award winning.", "Fits most sizes."])
            for _ in range(rng.randint(1, 20))
        )
    if rng.random() < 0.35:
        doc["variants"] = [{"sku": f"SKU-{pid:06d}-{v}", "colour": c, "stock": rng.randint(0, 40)}
                           for v, c in enumerate(["red", "green", "blue", "black", "white"][: rng.randint(2, 5)])]
    return doc


@dataclass
class World:
    """Static data: which orders belong to whom, ETags of the files clients revalidate."""

    orders_of: dict[int, list[int]]
    n_orders: int
    etags: dict[str, str]


def json_bytes(doc: object) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def build_world(seed: int) -> tuple[World, dict[str, bytes]]:
    rng = random.Random(seed * 1_000_003 + 11)
    files: dict[str, bytes] = {}
    orders_of: dict[int, list[int]] = {}
    oid = 500_000

    def item(sku: int, qty: int) -> dict:
        return {"sku": f"SKU-{sku:06d}", "title": f"{BRANDS[sku % 8]} {SEARCH_TERMS[sku % 200].replace('-', ' ')}",
                "qty": qty, "unit_price": {"amount": 199 + (sku * 37) % 20000, "currency": "GBP"},
                "image": f"https://cdn.shop.example/p/{sku}/t.jpg"}

    for u in range(N_USERS):
        uid = 100_001 + u
        p = person(uid)
        work = person(uid + 7)["address"]
        files[f"users/{uid}/profile.json"] = json_bytes(
            {"id": uid, **p, "addresses": [{"label": "home", **p["address"]}, {"label": "work", **work}],
             "tier": ["bronze", "silver", "gold"][uid % 3], "points": (uid * 37) % 9000,
             "marketing_opt_in": uid % 4 == 0, "language": "en-GB", "currency": "GBP",
             "avatar": f"https://cdn.shop.example/u/{uid}/avatar.jpg",
             "created_at": f"20{18 + uid % 7}-0{1 + uid % 9}-1{uid % 10}T10:00:00Z"})
        mine = []
        for _ in range(rng.randint(1, 12)):
            oid += rng.randint(1, 3)
            items = [item((oid * 31 + k) % N_PRODUCTS + 1, rng.randint(1, 3)) for k in range(rng.randint(1, 5))]
            total = sum(i["unit_price"]["amount"] * i["qty"] for i in items)
            files[f"orders/{oid}.json"] = json_bytes(
                {"id": oid, "user_id": uid, "state": rng.choice(["placed", "packed", "shipped", "delivered"]),
                 "placed_at": f"2026-0{1 + oid % 6}-{10 + oid % 18}T{oid % 24:02d}:1{oid % 10}:00Z",
                 "items": items, "total": {"amount": total, "currency": "GBP"},
                 "payment": {"method": "card", "brand": ["visa", "mastercard", "amex"][oid % 3],
                             "last4": f"{oid % 10000:04d}"},
                 "shipping": {"name": p["name"], **p["address"], "phone": p["phone"],
                              "carrier": ["DPD", "Royal Mail", "Evri"][oid % 3], "tracking": f"TRK{oid * 7919:012d}"},
                 "email": p["email"]})
            mine.append(oid)
        orders_of[uid] = mine
        files[f"users/{uid}/orders.json"] = json_bytes(
            {"orders": [{"id": o, "state": "delivered", "placed_at": f"2026-0{1 + o % 6}-{10 + o % 18}T09:00:00Z",
                         "total": {"amount": 1000 + o % 9000, "currency": "GBP"}, "items": 1 + o % 4,
                         "thumb": f"https://cdn.shop.example/p/{o % N_PRODUCTS + 1}/t.jpg"} for o in mine[-8:]],
             "next": None, "count": len(mine)})
        cart = [item(rng.randint(1, N_PRODUCTS), rng.randint(1, 2)) for _ in range(rng.randint(0, 5))]
        files[f"users/{uid}/cart.json"] = json_bytes({"user_id": uid, "items": cart, "currency": "GBP",
                                                      "voucher": None, "updated_at": "2026-06-01T12:00:00Z"})
        files[f"users/{uid}/notifications.json"] = json_bytes(
            {"unread": rng.randint(0, 5), "items": [
                {"id": uid * 10 + k, "kind": rng.choice(["order", "promo", "price-drop"]),
                 "title": "Your order is on its way" if k % 2 else "Prices dropped on items you viewed",
                 "body": "Tap to see the details and track your parcel." if k % 2 else
                 "Three items on your wishlist are cheaper today.", "created_at": "2026-06-01T08:00:00Z",
                 "link": f"shopapp://orders/{uid}"} for k in range(rng.randint(0, 5))]})
    for pid in range(1, N_PRODUCTS + 1):
        files[f"products/{pid}.json"] = json_bytes(product(pid))
    for page in range(1, N_CATALOGUE_PAGES + 1):
        per_page = 12 + (page * 7) % 37
        items = [{"id": pid, "title": f"{BRANDS[pid % 8]} {SEARCH_TERMS[pid % 200].replace('-', ' ')} {pid % 97}",
                  "price": {"amount": 199 + (pid * 37) % 20000, "currency": "GBP"},
                  "thumb": f"https://cdn.shop.example/p/{pid}/t.jpg", "rating": 3 + pid % 20 / 10,
                  "badges": ["new"] if pid % 5 == 0 else []}
                 for pid in range(page * 20 - 19, page * 20 - 19 + per_page)]
        files[f"catalogue/{page}.json"] = json_bytes({"page": page, "pages": N_CATALOGUE_PAGES, "items": items})
    for t, term in enumerate(SEARCH_TERMS):
        hits = [{"id": (t * 13 + k * 97) % N_PRODUCTS + 1, "title": f"{BRANDS[k % 8]} {term.replace('-', ' ')} {k}",
                 "price": {"amount": 500 + (t * k * 31) % 9000, "currency": "GBP"}, "score": round(1 - k / 40, 3),
                 "thumb": f"https://cdn.shop.example/p/{(t * 13 + k * 97) % N_PRODUCTS + 1}/t.jpg"}
                for k in range(2 + t % 10)]
        files[f"search/{term}.json"] = json_bytes({"q": term, "results": hits, "total": len(hits) * 7,
                                                   "facets": {"brand": BRANDS[: 2 + t % 6]}})
    files["search/_empty.json"] = json_bytes({"q": None, "results": [], "total": 0,
                                              "suggestions": SEARCH_TERMS[:12]})
    files["app-config.json"] = json_bytes(
        {"min_version": "7.0.0", "latest_version": "7.3.0",
         "features": {"wishlist": True, "chat": False, "klarna": True, "apple_pay": True, "google_pay": True},
         "cdn": "https://cdn.shop.example", "support_phone": "+44 113 496 0000", "ttl": 600,
         "endpoints": {"search": "/api/v1/search", "events": "/api/v1/events", "orders": "/api/v1/orders"},
         "banner": {"text": "Free delivery over \u00a330 this week", "until": "2026-07-01T00:00:00Z"}})
    etags = {}
    for name in ("app-config.json",):
        etags[name] = f'"{FIXED_MTIME:x}-{len(files[name]):x}"'
    return World(orders_of, oid, etags), files


def write_docroot(www: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        p = www / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        os.utime(p, (FIXED_MTIME, FIXED_MTIME))
        if name.startswith(("catalogue/", "search/")):
            gz = www / (name + ".gz")
            gz.write_bytes(gzip.compress(data, 6, mtime=0))
            os.utime(gz, (FIXED_MTIME, FIXED_MTIME))


def nginx_conf(work: Path) -> str:
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]  # the hard limit: workers cannot go past it
    return f"worker_rlimit_nofile {nofile};\n" + nginx_conf_head(work, 2, min(65536, nofile // 2)) + f"""    keepalive_timeout 300s;
    send_timeout 300s;  # clients starved of CPU on a busy machine read late: never cut them off
    client_header_timeout 300s;
    client_body_timeout 300s;
    keepalive_requests 100000;
    sendfile on;
    tcp_nopush on;  # head and file in one segment, as production configs do
    tcp_nodelay on;
    server_tokens off;
    gzip on;
    gzip_types application/json;
    gzip_min_length 700;
    gzip_comp_level 1;
    gzip_vary on;
    gzip_proxied any;
    upstream api {{ server 127.0.0.1:{BACKEND_PORT}; keepalive 64; }}
    server {{
        listen {SERVER_V4}:{API_PORT} backlog=4096 reuseport;
        listen [{SERVER_V6}]:{API_PORT} backlog=4096 reuseport;
        server_name {HOST};
        root {work}/www;
        location = /api/v1/app-config {{ try_files /app-config.json =404; }}
        location = /api/v1/catalogue {{ gzip_static on; try_files /catalogue/$arg_page.json =404; }}
        location = /api/v1/search {{ gzip_static on; try_files /search/$arg_q.json /search/_empty.json =404; }}
        location ~ ^/api/v1/products/([0-9]+)$ {{ try_files /products/$1.json =404; }}
        location ~ ^/api/v1/orders/([0-9]+)$ {{ try_files /orders/$1.json =404; }}
        location ~ ^/api/v1/users/([0-9]+)/(profile|orders|cart|notifications)$ {{
            try_files /users/$1/$2.json =404;
        }}
        location = /api/v1/events {{ return 202 '{{"accepted":true}}'; }}
        location /api/v1/admin/ {{ return 403 '{{"error":"forbidden"}}'; }}
        location / {{
            proxy_pass http://api;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
        }}
    }}
}}
"""


# --------------------------------------------------------------------------------------
# The dynamic API (Python, behind nginx)


class ApiHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # head and body are two writes: no 40 ms delayed-ACK stall
    server_version = "shop-api/3.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def user_from_token(self) -> int:
        auth = self.headers.get("Authorization", "")
        try:
            payload = auth.split(".")[1]
            return int(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"])
        except Exception:
            return 0

    def send_json(self, status: int, doc: object, chunked: bool = False) -> None:
        body = json_bytes(doc)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-store")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            step = max(1, len(body) // 3)
            out = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in
                           (body[i : i + step] for i in range(0, len(body), step)))
            self.wfile.write(out + b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        uid = self.user_from_token()
        if path == "/api/v1/search/live":
            q = query.split("q=", 1)[-1].split("&", 1)[0]
            n = 3 + len(q) % 17
            hits = [{"id": (len(q) * 31 + k * 7) % N_PRODUCTS + 1, "title": f"{q.replace('-', ' ')} result {k}",
                     "price": 300 + k * 111, "available": k % 5 != 0} for k in range(n)]
            self.send_json(200, {"q": q, "results": hits, "took_ms": 4 + n}, chunked=True)
        elif path == "/api/v1/recommendations":
            recs = [{"id": (uid * 7 + k * 131) % N_PRODUCTS + 1, "reason": "viewed-similar"} for k in range(4 + uid % 9)]
            self.send_json(200, {"user_id": uid, "items": recs}, chunked=True)
        else:
            self.send_json(404, {"error": "not_found", "path": path})

    def do_POST(self) -> None:
        body = self.body()
        if self.path == "/api/v1/auth/login":
            try:
                form = json.loads(body)
                user, pw = str(form["username"]), str(form["password"])
            except Exception:
                self.send_json(400, {"error": "bad_request"})
                return
            uid = int(user.rsplit("#", 1)[-1]) if "#" in user else 0
            if uid and pw == password_of(uid):
                self.send_json(200, {"user": {"id": uid, "email": username_of(uid)}, "expires_in": 3600,
                                     "refresh_token": hashlib.sha256(pw.encode()).hexdigest()})
            else:
                self.send_json(401, {"error": "invalid_credentials"})
        elif self.path == "/api/v1/orders":
            uid = self.user_from_token()
            n = len(body)
            p = person(uid)
            self.send_json(201, {"id": 900_000 + n * 7 + uid % 1000, "state": "created", "user_id": uid,
                                 "shipping": {"name": p["name"], **p["address"]}, "eta_days": 2 + n % 3})
        else:
            self.send_json(404, {"error": "not_found"})

    def do_PUT(self) -> None:
        self.body()
        if self.path == "/api/v1/me/profile":
            uid = self.user_from_token()
            self.send_json(200, {"id": uid, **person(uid), "updated": True})
        else:
            self.send_json(404, {"error": "not_found"})


class ReusePortServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


def serve_api(port: int) -> int:
    ReusePortServer(("127.0.0.1", port), ApiHandler).serve_forever()
    return 0


# --------------------------------------------------------------------------------------
# The plan: clients and sessions


@dataclass
class Client:
    cid: int
    kind: str  # app | web | bot name
    addrs: list[str]  # addresses in order of use (roaming: home then cellular)
    switch_at: float  # fraction of the span at which a roamer changes network
    device: int | None  # app install (Approov did) or None
    uid: int | None
    ua: str
    gzip: bool
    pipeline: bool
    weight: float


@dataclass
class Session:
    cid: int
    start: float  # seconds after the start
    bursts: list[int]  # requests per burst
    gaps: list[float]  # think time before each burst after the first
    seed: int
    close: bool  # the last request says Connection: close


def v4(prefix_rng: random.Random, used: set[str], base: str) -> str:
    a, b = (int(x) for x in base.split(".")[:2])
    while True:
        if base.startswith("100.64"):
            ip = f"100.{64 + prefix_rng.randrange(64)}.{prefix_rng.randrange(256)}.{1 + prefix_rng.randrange(254)}"
        else:
            ip = f"{a}.{b + prefix_rng.randrange(2)}.{prefix_rng.randrange(256)}.{1 + prefix_rng.randrange(254)}"
        if ip not in used:
            used.add(ip)
            return ip


def v6(rng: random.Random, used: set[str]) -> str:
    while True:
        ip = f"2001:db8:{0x1000 + rng.randrange(0x4000):x}:{rng.randrange(0x10000):x}::{1 + rng.randrange(0xfff):x}"
        if ip not in used:
            used.add(ip)
            return ip


def plan_clients(seed: int) -> list[Client]:
    rng = random.Random(seed)
    used: set[str] = {SERVER_V4}
    nats = [v4(rng, used, "100.64.0.0") for _ in range(N_NAT)]
    clients: list[Client] = []
    # Devices: each user has one; 1,000 more go to users with several devices.
    owners = list(range(N_USERS)) + [rng.randrange(N_USERS) for _ in range(N_DEVICES - N_USERS)]
    for d, u in enumerate(owners):
        r = rng.random()
        home = v6(rng, used) if rng.random() < 0.28 else v4(rng, used, "198.18.0.0")
        if r < 0.62:
            addrs = [home]
        elif r < 0.82:
            addrs = [rng.choice(nats)]
        else:  # roams between wifi at home and the carrier (NAT or its own IPv6)
            addrs = [home, rng.choice(nats) if rng.random() < 0.6 else v6(rng, used)]
        android = rng.random() < 0.6
        ua = rng.choice(ANDROID_UA if android else IOS_UA)
        activity = min(12.0, rng.lognormvariate(0, 0.9))  # power users send far more
        clients.append(Client(len(clients), "app", addrs, rng.uniform(0.3, 0.7), d, 100_001 + u, ua,
                              rng.random() < 0.8, rng.random() < 0.1, activity))
    for _ in range(N_WEB):
        u = rng.randrange(N_USERS)
        addr = v6(rng, used) if rng.random() < 0.2 else v4(rng, used, "198.18.0.0")
        clients.append(Client(len(clients), "web", [addr], 1.0, None, 100_001 + u, rng.choice(WEB_UA),
                              True, False, 0.75 * min(12.0, rng.lognormvariate(0, 0.9))))
    bot_addrs = {
        "scraper": [v4(rng, used, "198.18.0.0") for _ in range(500)],
        "stuffer": [v4(rng, used, "198.18.0.0") for _ in range(20)] + nats[:4],
        "forger": [v4(rng, used, "198.18.0.0") for _ in range(2)],
        "enumerator": [v4(rng, used, "198.18.0.0")],
        "replayer": [v4(rng, used, "198.18.0.0") for _ in range(40)],
        "bad-clock": [rng.choice(nats)],
    }
    for name, _share, _ in BOTS:
        device = N_DEVICES + len(clients) if name in ("forger", "enumerator", "replayer", "bad-clock") else None
        if name == "replayer":
            device = 0  # the token stolen from device 0
        uid = 100_001 + rng.randrange(N_USERS) if name in ("enumerator", "bad-clock", "forger", "replayer") else None
        ua = "python-requests/2.31.0" if name in ("scraper", "stuffer") else "okhttp/4.12.0"
        clients.append(Client(len(clients), name, bot_addrs[name], 1.0, device, uid, ua, name != "stuffer",
                              name == "scraper", 0.0))
    return clients


def plan_sessions(clients: list[Client], total: int, span: float, seed: int) -> list[Session]:
    """Sessions (TCP connections) adding up to exactly `total` requests, within `span` seconds."""
    rng = random.Random(seed * 31 + 7)
    sessions: list[Session] = []

    def add(c: Client, n: int, burst_max: int, gap: tuple[float, float], close_p: float) -> None:
        bursts = []
        left = n
        while left > 0:
            b = min(left, rng.randint(1, burst_max))
            bursts.append(b)
            left -= b
        gaps = [rng.uniform(*gap) for _ in bursts[1:]]
        dur = sum(gaps)
        longest = 0.5 * (span - SESSION_SLACK_SECS)  # a long session thinks faster, within the span
        if dur > longest:
            gaps = [g * longest / dur for g in gaps]
            dur = longest
        start = rng.uniform(0, max(0.0, span - SESSION_SLACK_SECS - dur))
        sessions.append(Session(c.cid, round(start, 3), bursts, [round(g, 3) for g in gaps], rng.randrange(2**32),
                                rng.random() < close_p))

    bot_total = 0
    by_kind = {c.kind: c for c in clients if c.kind not in ("app", "web")}
    for name, share, _ in BOTS:
        c = by_kind[name]
        want = int(total * share)
        bot_total += want
        while want > 0:
            if name == "scraper":
                n, bm, gap = rng.randint(8, 20), 8, (0.05, 0.2)
            elif name == "stuffer":
                n, bm, gap = rng.randint(5, 20), 1, (0.1, 0.4)
            else:
                n, bm, gap = rng.randint(10, 40), 2, (0.1, 0.6)
            n = min(n, want)
            want -= n
            add(c, n, bm, gap, 0.3)
    humans = [c for c in clients if c.kind in ("app", "web")]
    weights = [c.weight for c in humans]
    left = total - bot_total
    first = list(humans)  # every device and web user opens the app at least once
    while left > 0:
        c = first.pop() if first else rng.choices(humans, weights)[0]
        n = min(left, 150, max(2, int(rng.lognormvariate(2.7, 0.7))))  # median 15 requests per connection
        left -= n
        add(c, n, 6, (0.3, 2.5), 0.1)
    sessions.sort(key=lambda s: s.start)
    return sessions


# --------------------------------------------------------------------------------------
# Requests


@dataclass
class Req:
    method: str
    target: str
    route: str  # for the manifest: the templated route
    headers: list[tuple[str, str]]
    body: bytes | None
    expect: int
    chunked_body: bool = False


APP_MIX = [
    # (weight, kind)
    (5, "app-config"), (8, "profile"), (28, "product"), (2.5, "catalogue"), (6, "search"), (5, "orders"),
    (6, "order"), (8, "cart"), (8, "notifications"), (11, "events"), (3, "recommendations"), (2.5, "live-search"),
    (1.5, "post-order"), (0.5, "put-profile"), (0.3, "admin"), (0.6, "missing"),
]
MIX_KINDS = [k for _, k in APP_MIX]
MIX_WEIGHTS = [w for w, _ in APP_MIX]


def human_request(rng: random.Random, c: Client, world: World, product_of: list[int]) -> Req:
    kind = rng.choices(MIX_KINDS, MIX_WEIGHTS)[0]
    uid = c.uid or 0
    if kind == "app-config":
        h = [("If-None-Match", world.etags["app-config.json"])] if rng.random() < 0.6 else []
        return Req("GET", "/api/v1/app-config", "GET /api/v1/app-config", h, None, 304 if h else 200)
    if kind in ("profile", "orders", "cart", "notifications"):
        return Req("GET", f"/api/v1/users/{uid}/{kind}", f"GET /api/v1/users/{{id}}/{kind}", [], None, 200)
    if kind == "product":
        pid = rng.choice(product_of) if rng.random() < 0.7 else rng.randint(1, N_PRODUCTS)
        return Req("GET", f"/api/v1/products/{pid}", "GET /api/v1/products/{id}", [], None, 200)
    if kind == "catalogue":
        page = min(N_CATALOGUE_PAGES, 1 + int(rng.expovariate(0.15)))
        return Req("GET", f"/api/v1/catalogue?page={page}&sort=popular", "GET /api/v1/catalogue", [], None, 200)
    if kind == "search":
        q = rng.choice(SEARCH_TERMS) if rng.random() < 0.95 else f"zz-{rng.randrange(10**6)}"
        return Req("GET", f"/api/v1/search?q={q}&limit=20", "GET /api/v1/search", [], None, 200)
    if kind == "order":
        mine = world.orders_of.get(uid) or [500_001]
        return Req("GET", f"/api/v1/orders/{rng.choice(mine)}", "GET /api/v1/orders/{id}", [], None, 200)
    if kind == "events":
        evs = [{"e": rng.choice(["view", "tap", "scroll", "add_to_cart"]), "p": rng.randint(1, N_PRODUCTS),
                "t": rng.randrange(10**6)} for _ in range(rng.randint(1, 8))]
        if c.kind == "app" and rng.random() < 0.3:  # the analytics SDK streams batches
            pieces = [json_bytes(e) + b"\n" for e in evs]
            body = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in pieces) + b"0\r\n\r\n"
            hdrs = [("Content-Type", "application/x-ndjson"), ("Transfer-Encoding", "chunked")]
            return Req("POST", "/api/v1/events", "POST /api/v1/events", hdrs, body, 202, chunked_body=True)
        return Req("POST", "/api/v1/events", "POST /api/v1/events", [("Content-Type", "application/json")],
                   json_bytes({"events": evs}), 202)
    if kind == "recommendations":
        return Req("GET", "/api/v1/recommendations?slot=home", "GET /api/v1/recommendations", [], None, 200)
    if kind == "live-search":
        q = rng.choice(SEARCH_TERMS)[: rng.randint(2, 9)]
        return Req("GET", f"/api/v1/search/live?q={q}&sort=price", "GET /api/v1/search/live", [], None, 200)
    if kind == "post-order":
        items = [{"sku": f"SKU-{rng.randint(1, N_PRODUCTS):06d}", "qty": rng.randint(1, 3)} for _ in range(rng.randint(1, 4))]
        body = json_bytes({"items": items, "payment": {"method": "card", "token": f"tok_{rng.randrange(10**12)}"},
                           "shipping": "default"})
        return Req("POST", "/api/v1/orders", "POST /api/v1/orders", [("Content-Type", "application/json")], body, 201)
    if kind == "put-profile":
        body = json_bytes({"phone": f"+44 7700 9{rng.randrange(100000):05d}", "marketing_opt_in": rng.random() < 0.5})
        return Req("PUT", "/api/v1/me/profile", "PUT /api/v1/me/profile", [("Content-Type", "application/json")], body, 200)
    if kind == "admin":
        return Req("GET", "/api/v1/admin/users?limit=50", "GET /api/v1/admin/users", [], None, 403)
    return Req("GET", f"/api/v1/products/{N_PRODUCTS + rng.randint(1, 5000)}", "GET /api/v1/products/{id}", [], None, 404)


def login_request(uid: int, ok: bool, rng: random.Random) -> Req:
    user = f"{username_of(uid)}#{uid}" if ok else f"{rng.choice(FIRST)}{rng.randrange(10**5)}@mail.example"
    pw = password_of(uid) if ok else rng.choice(["123456", "password", "qwerty", "letmein", "Summer2024!"])
    body = json_bytes({"username": user, "password": pw})
    return Req("POST", "/api/v1/auth/login", "POST /api/v1/auth/login", [("Content-Type", "application/json")],
               body, 200 if ok else 401)


def bot_request(rng: random.Random, c: Client, world: World, state: dict) -> Req:
    if c.kind == "scraper":
        if rng.random() < 0.15:
            page = state.setdefault("page", 0) % N_CATALOGUE_PAGES + 1
            state["page"] = page
            return Req("GET", f"/api/v1/catalogue?page={page}", "GET /api/v1/catalogue", [], None, 200)
        pid = state.setdefault("pid", 0) + 1
        state["pid"] = pid
        pid = (pid * 7) % (N_PRODUCTS + 300) + 1  # walks past the catalogue's end: 404s
        return Req("GET", f"/api/v1/products/{pid}", "GET /api/v1/products/{id}", [], None,
                   200 if pid <= N_PRODUCTS else 404)
    if c.kind == "stuffer":
        ok = rng.random() < 0.01
        return login_request(100_001 + rng.randrange(N_USERS), ok, rng)
    if c.kind == "enumerator":
        oid = state.setdefault("oid", 500_001 + rng.randrange(2000))
        while True:
            oid += 1
            if oid > world.n_orders:
                oid = 500_001
            if oid in state["valid_orders"]:
                break
        state["oid"] = oid
        return Req("GET", f"/api/v1/orders/{oid}", "GET /api/v1/orders/{id}", [], None, 200)
    return human_request(rng, c, world, state["products"])


# --------------------------------------------------------------------------------------
# Clients (asyncio, in worker processes)


@dataclass
class Stats:
    requests: int = 0
    responses: int = 0
    connections: int = 0
    failures: Counter = field(default_factory=Counter)
    by_method: Counter = field(default_factory=Counter)
    by_status: Counter = field(default_factory=Counter)
    by_route: Counter = field(default_factory=Counter)
    by_kind: Counter = field(default_factory=Counter)  # transactions per client kind
    by_family: Counter = field(default_factory=Counter)
    connections_by_family: Counter = field(default_factory=Counter)
    user_token_algs: Counter = field(default_factory=Counter)
    gzip_responses: int = 0
    chunked_responses: int = 0
    chunked_requests: int = 0
    pipelined_bursts: int = 0
    pipelined_requests: int = 0
    with_approov: int = 0
    with_authorization: int = 0
    approov_tokens: int = 0
    request_body_bytes: int = 0
    response_wire_body_bytes: int = 0  # after de-chunking, before gzip decoding
    response_decoded_body_bytes: int = 0
    decoded_bodies: int = 0  # responses with a body
    decoded_min: int = 1 << 30
    decoded_max: int = 0
    server_closed: int = 0
    unexpected: Counter = field(default_factory=Counter)
    addresses: set = field(default_factory=set)
    devices: set = field(default_factory=set)
    users: set = field(default_factory=set)
    first_send: float = 1e100
    last_recv: float = 0.0
    max_late_secs: float = 0.0

    def merge(self, o: Stats) -> None:
        for k, v in vars(o).items():
            mine = getattr(self, k)
            if isinstance(v, (Counter, set)):
                mine.update(v)
            elif k in ("decoded_min", "first_send"):
                setattr(self, k, min(mine, v))
            elif k in ("decoded_max", "last_recv", "max_late_secs"):
                setattr(self, k, max(mine, v))
            else:
                setattr(self, k, mine + v)


class Tokens:
    """Per-process token state: user JWTs minted by the parent, Approov tokens minted lazily."""

    def __init__(self, user_tokens: dict[int, tuple[str, str]], t0: float) -> None:
        self.user_tokens = user_tokens
        self.t0 = t0
        self.approov: dict[tuple, str] = {}

    def approov_for(self, c: Client, auth: str | None, st: Stats) -> str:
        assert c.device is not None
        phase = (c.device * 7919) % APPROOV_REFRESH_SECS
        epoch = int((time.time() - self.t0 + phase) // APPROOV_REFRESH_SECS)
        key = (c.cid, epoch, auth)
        tok = self.approov.get(key)
        if tok is None:
            now = int(time.time())
            exp = now + APPROOV_LIFETIME_SECS if c.kind != "bad-clock" else now - 900
            claims: dict = {"exp": exp, "did": did_of(c.device)}
            if auth is not None:
                claims["pay"] = pay_claim(auth)
            tok = hs256(claims, FORGED_SECRET if c.kind == "forger" else APPROOV_SECRET)
            if c.kind == "replayer":
                # the stolen token: bound to the victim's own Authorization, whatever this sends
                victim = "Bearer " + self.user_tokens[100_001][0]
                tok = self.approov.setdefault(("stolen",), hs256({"exp": now + 3600, "did": did_of(0),
                                                                    "pay": pay_claim(victim)}, APPROOV_SECRET))
            self.approov[key] = tok
            st.approov_tokens += 1
        return tok


def build(method: str, target: str, headers: list[tuple[str, str]], body: bytes | None, chunked: bool) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {HOST}"] + [f"{k}: {v}" for k, v in headers]
    if body is not None and not chunked:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


async def read_response(reader: asyncio.StreamReader, method: str) -> tuple[int, bytes, bool, bool, bool]:
    """(status, body after de-chunking, chunked, gzip, connection close)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    cl = None
    chunked = gz = close = False
    for line in lines[1:]:
        k, _, v = line.partition(":")
        k = k.strip().lower()
        if k == "content-length":
            cl = int(v)
        elif k == "transfer-encoding":
            chunked = "chunked" in v.lower()
        elif k == "content-encoding":
            gz = v.strip().lower() == "gzip"
        elif k == "connection":
            close = v.strip().lower() == "close"
    if method == "HEAD" or status in (204, 304) or status < 200:
        return status, b"", False, gz, close
    if chunked:
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                break
            parts.append((await reader.readexactly(size + 2))[:-2])
        return status, b"".join(parts), True, gz, close
    if cl is not None:
        return status, await reader.readexactly(cl), False, gz, close
    return status, await reader.read(), False, gz, True


class Runner:
    def __init__(self, clients: list[Client], world: World, tokens: Tokens, t0: float) -> None:
        self.clients = clients
        self.world = world
        self.tokens = tokens
        self.t0 = t0
        self.st = Stats()
        self.bot_state: dict[int, dict] = {}
        rng = random.Random(5)
        self.favourites = {c.cid: [rng.randint(1, N_PRODUCTS) for _ in range(30)] for c in clients}
        self.valid_orders = {o for os_ in world.orders_of.values() for o in os_}

    def headers_for(self, c: Client, rng: random.Random) -> tuple[list[tuple[str, str]], str | None, int | None]:
        """Common headers, the Authorization value and the user whose genuine token it holds."""
        h = [("User-Agent", c.ua), ("Accept", "application/json")]
        if c.gzip:
            h.append(("Accept-Encoding", "gzip, deflate, br" if c.kind == "web" or "iPhone" in c.ua else "gzip"))
        h.append(("Accept-Language", "en-GB"))
        auth = None
        if c.kind in ("scraper", "stuffer"):
            return h, None, None
        if c.kind == "forger":
            return h, "Bearer " + hs256({"sub": str(c.uid), "exp": int(time.time()) + 3600}, FORGED_SECRET, "hs-1"), None
        uid = 100_001 + rng.randrange(N_USERS) if c.kind == "replayer" else c.uid
        if uid is None:
            return h, None, None
        return h, "Bearer " + self.tokens.user_tokens[uid][0], uid

    async def session(self, s: Session) -> None:
        delay = self.t0 + s.start - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        # When the machine cannot keep up, sessions pile up: at most MAX_OPEN at once per process.
        async with self.open_slots:
            await self.session_inner(s)

    async def session_inner(self, s: Session) -> None:
        c = self.clients[s.cid]
        st = self.st
        rng = random.Random(s.seed)
        if c.kind in ("scraper", "stuffer", "replayer"):  # a proxy pool: any address per connection
            addr = c.addrs[rng.randrange(len(c.addrs))]
        elif len(c.addrs) == 2:  # a roaming phone: home network, then the carrier's
            addr = c.addrs[0] if s.start < c.switch_at * self.span else c.addrs[1]
        else:
            addr = c.addrs[0]
        v6 = ":" in addr
        base = self.t0 + s.start  # a late session keeps its own think times, shifted
        if time.time() > base:
            st.max_late_secs = max(st.max_late_secs, time.time() - base)
            base = time.time()
        n = sum(s.bursts)
        state = self.bot_state.setdefault(c.cid, {"products": self.favourites[c.cid], "valid_orders": self.valid_orders})
        reqs: list[Req] = []
        if c.kind == "app" and rng.random() < 0.03:  # a fresh sign-in opens the session
            reqs.append(login_request(c.uid or 0, True, rng))
        while len(reqs) < n:
            if c.kind in ("app", "web"):
                reqs.append(human_request(rng, c, self.world, self.favourites[c.cid]))
            else:
                reqs.append(bot_request(rng, c, self.world, state))
        if s.close:
            reqs[-1].headers = reqs[-1].headers + [("Connection", "close")]
        try:
            reader, writer = await asyncio.open_connection(
                SERVER_V6 if v6 else SERVER_V4, API_PORT, local_addr=(addr, 0),
                family=socket.AF_INET6 if v6 else socket.AF_INET, limit=1 << 20)
        except OSError as e:
            st.failures[f"connect: {e}"] += 1
            return
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        st.connections += 1
        st.connections_by_family["ipv6" if v6 else "ipv4"] += 1
        st.addresses.add(addr)
        if c.device is not None and c.kind != "forger":
            st.devices.add(c.device)
        try:
            i = 0
            for b, burst_n in enumerate(s.bursts):
                if b > 0:
                    due = base + sum(s.gaps[:b])
                    delay = due - time.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                burst = reqs[i : i + burst_n]
                i += burst_n
                if c.pipeline and len(burst) > 1:
                    await self.send(writer, c, burst, st, rng)
                    st.pipelined_bursts += 1
                    st.pipelined_requests += len(burst)
                    for r in burst:
                        await self.receive(reader, c, r, v6, st)
                else:
                    for r in burst:
                        await self.send(writer, c, [r], st, rng)
                        await self.receive(reader, c, r, v6, st)
            if s.close:
                if await reader.read(1):
                    raise RuntimeError("data after the Connection: close response")
                st.server_closed += 1
        except (OSError, EOFError, asyncio.IncompleteReadError, ValueError, RuntimeError) as e:
            st.failures[f"{type(e).__name__}: {e}"[:160]] += 1
        finally:
            writer.close()

    async def send(self, writer: asyncio.StreamWriter, c: Client, burst: list[Req], st: Stats,
                   rng: random.Random) -> None:
        out = []
        for r in burst:
            h, auth, uid = self.headers_for(c, rng)
            if r.route == "POST /api/v1/auth/login":
                auth = uid = None
            if auth is not None:
                h.append(("Authorization", auth))
                st.with_authorization += 1
                if uid is not None:
                    st.users.add(uid)
                    st.user_token_algs[self.tokens.user_tokens[uid][1]] += 1
                else:
                    st.user_token_algs["HS256 (forged)"] += 1
            if c.device is not None:
                h.append(("Approov-Token", self.tokens.approov_for(c, auth, st)))
                st.with_approov += 1
            if rng.random() < 0.5:
                h.append(("X-Request-ID", f"{rng.getrandbits(64):016x}"))
            out.append(build(r.method, r.target, h + r.headers, r.body, r.chunked_body))
            st.requests += 1
            st.chunked_requests += r.chunked_body
            st.request_body_bytes += len(r.body or b"")
        if st.first_send > 1e99:
            st.first_send = time.time()
        writer.write(b"".join(out))
        await writer.drain()

    async def receive(self, reader: asyncio.StreamReader, c: Client, r: Req, v6: bool, st: Stats) -> None:
        status, body, chunked, gz, _close = await read_response(reader, r.method)
        st.last_recv = time.time()
        st.responses += 1
        st.by_method[r.method] += 1
        st.by_status[str(status)] += 1
        st.by_route[r.route] += 1
        st.by_kind[c.kind] += 1
        st.by_family["ipv6" if v6 else "ipv4"] += 1
        st.gzip_responses += gz
        st.chunked_responses += chunked
        st.response_wire_body_bytes += len(body)
        if body:
            decoded = len(zlib.decompress(body, 31)) if gz else len(body)
            st.response_decoded_body_bytes += decoded
            st.decoded_bodies += 1
            st.decoded_min = min(st.decoded_min, decoded)
            st.decoded_max = max(st.decoded_max, decoded)
        if status != r.expect:
            st.unexpected[f"{r.method} {r.route} -> {status} (planned {r.expect})"] += 1

    async def run(self, sessions: list[Session], span: float) -> Stats:
        self.span = span
        self.open_slots = asyncio.Semaphore(MAX_OPEN)
        await asyncio.gather(*(self.session(s) for s in sessions))
        return self.st


# Filled by the parent before the worker processes fork (inherited, not pickled).
SHARED: dict = {}


def run_process(index: int, t0: float) -> Stats:
    os.nice(5)
    sessions = SHARED["per_proc"][index]
    runner = Runner(SHARED["clients"], SHARED["world"], Tokens(SHARED["user_tokens"], t0), t0)
    st = asyncio.run(runner.run(sessions, SHARED["span"]))
    return st


# --------------------------------------------------------------------------------------
# Keys and config


def make_user_keys(out_dir: Path) -> tuple[object, object]:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    import jwt  # PyJWT

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    keys = []
    for key, kid, alg in ((rsa_key, "rs-1", "RS256"), (ec_key, "es-1", "ES256")):
        jwk = json.loads(jwt.get_algorithm_by_name(alg).to_jwk(key.public_key()))
        jwk.update({"kid": kid, "alg": alg, "use": "sig"})
        keys.append(jwk)
    (out_dir / "user_jwks.json").write_text(json.dumps({"keys": keys}, indent=2) + "\n")
    return rsa_key, ec_key


def mint_user_tokens(rsa_key, ec_key, hours: float) -> dict[int, tuple[str, str]]:
    import jwt  # PyJWT

    now = int(time.time())
    out = {}
    for u in range(N_USERS):
        uid = 100_001 + u
        claims = {"sub": str(uid), "iat": now, "exp": now + int(hours * 3600), "iss": "https://id.shop.example",
                  "scope": "shop"}
        r = (uid * 2654435761) % 100
        if r < 45:
            tok, alg = jwt.encode(claims, rsa_key, "RS256", headers={"kid": "rs-1"}), "RS256"
        elif r < 80:
            tok, alg = jwt.encode(claims, ec_key, "ES256", headers={"kid": "es-1"}), "ES256"
        else:
            tok, alg = jwt.encode(claims, USER_HS_SECRET, "HS256", headers={"kid": "hs-1"}), "HS256"
        out[uid] = (tok, alg)
    return out


def write_config(out_dir: Path) -> None:
    (out_dir / "shieldtap.toml").write_text(f"""# Written by scripts/gen_realistic.py for {out_dir / 'capture.pcap'} (benchmark secrets, not real ones).
[[attestation]]
name = "approov"
header = "Approov-Token"
algorithms = ["HS256"]
secret_base64 = "{base64.b64encode(APPROOV_SECRET).decode()}"
binding_headers = ["Authorization"]
missing_binding = "accept"

# User JWTs: HS256 (kid hs-1) with this secret, RS256 (kid rs-1) and ES256 (kid es-1) with the
# public keys in user_jwks.json.
[identity]
user_header = "Authorization"
user_claim = "sub"
user_algorithms = ["HS256", "RS256", "ES256"]
user_secret_base64 = "{base64.b64encode(USER_HS_SECRET).decode()}"
user_secret_kid = "hs-1"
user_jwks_file = "{out_dir.resolve() / 'user_jwks.json'}"
""")


# --------------------------------------------------------------------------------------
# Namespace and recording


def pcap_span(path: Path) -> tuple[int, float, float]:
    """(packets, first and last packet time) of a classic pcap file."""
    with open(path, "rb") as f:
        head = f.read(24)
        magic = head[:4]
        if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
            endian = "<"
        elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
            endian = ">"
        else:
            raise RuntimeError(f"{path}: not a classic pcap file")
        div = 1e9 if magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d") else 1e6
        rec = struct.Struct(endian + "IIII")
        n, first, last = 0, 0.0, 0.0
        while True:
            h = f.read(16)
            if len(h) < 16:
                break
            sec, frac, incl, _ = rec.unpack(h)
            t = sec + frac / div
            if n == 0:
                first = t
            last = t
            n += 1
            f.seek(incl, 1)
    return n, first, last


def setup_namespace() -> None:
    """Runs inside the fresh namespace: loopback as a 1500-byte wire, AnyIP client ranges."""
    cmds = [
        ["ip", "link", "set", "lo", "mtu", "1500"],
        ["ip", "link", "set", "lo", "gso_max_segs", "1"],
        ["ip", "link", "set", "lo", "gso_max_size", "1500"],
        ["ip", "link", "set", "lo", "up"],
        ["ip", "addr", "add", f"{SERVER_V4}/32", "dev", "lo"],
        ["ip", "-6", "addr", "add", f"{SERVER_V6}/128", "dev", "lo", "nodad"],
        ["ip", "-6", "route", "add", "local", ANYIP6_ROUTE, "dev", "lo"],
        ["sysctl", "-qw", "net.ipv6.ip_nonlocal_bind=1", "net.ipv4.ip_nonlocal_bind=1",
         "net.ipv4.tcp_tw_reuse=1", "net.core.somaxconn=8192"],
    ] + [["ip", "route", "add", "local", r, "dev", "lo"] for r in ANYIP_ROUTES]
    for cmd in cmds:
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {p.stderr.strip()}")


def record_once(args: argparse.Namespace, out_dir: Path, cap: Path) -> tuple[Stats, float, int, int]:
    # tmpfs when there is one: 40,000 small files are slow to write and remove on a busy disk
    shm = Path("/dev/shm")
    work = Path(tempfile.mkdtemp(prefix="shieldtap-realistic-", dir=shm if shm.is_dir() else None))
    (work / "tmp").mkdir()
    write_docroot(work / "www", SHARED["files"])
    cap.unlink(missing_ok=True)
    pool = multiprocessing.get_context("fork").Pool(args.procs)
    apis: list[subprocess.Popen] = []
    ngx: Nginx | None = None
    td: Tcpdump | None = None
    try:
        for _ in range(2):
            apis.append(subprocess.Popen(["nice", "-n", "5", sys.executable, __file__, "--serve-api",
                                          str(BACKEND_PORT)], stdin=subprocess.DEVNULL))
        wait_for_port("127.0.0.1", BACKEND_PORT)
        ngx = Nginx(work, nginx_conf(work), [(SERVER_V4, API_PORT), (SERVER_V6, API_PORT)]).start()
        td = Tcpdump("lo", cap, f"tcp port {API_PORT}", buffer_kib=262144, packet_buffered=False)
        td.start()
        t0 = time.time() + 1.0
        log(f"recording: {args.transactions} transactions planned over {args.span_secs:.0f} s, "
            f"{args.procs} client processes, nginx {nginx_version()}")
        started = time.monotonic()
        results = pool.starmap_async(run_process, [(i, t0) for i in range(args.procs)]).get(CLIENT_DEADLINE_SECS)
        clients_secs = time.monotonic() - started
        log(f"clients done in {clients_secs:.1f} s")
        td.stop(settle=2.0, timeout=300)
        st = Stats()
        for r in results:
            st.merge(r)
        return st, clients_secs, td.captured or 0, td.dropped or 0
    finally:
        log("stopping")
        pool.terminate()
        pool.join()
        log("pool stopped")
        if td is not None:
            td.kill()
        if ngx is not None:
            ngx.stop()
        for p in apis:
            p.terminate()
        for p in apis:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        log("servers stopped")
        err = work / "error.log"
        if err.is_file() and err.stat().st_size:
            shutil.copy(err, out_dir / "nginx-error.log")
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)


def inside(args: argparse.Namespace) -> int:
    """Everything that runs in the namespace: plan, servers, tcpdump, clients, manifest."""
    t_start = time.monotonic()
    setup_namespace()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    out_dir: Path = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    cap = out_dir / "capture.pcap"

    clients = plan_clients(args.seed)
    sessions = plan_sessions(clients, args.transactions, args.span_secs, args.seed)
    world, files = build_world(args.seed)
    per_proc: list[list[Session]] = [[] for _ in range(args.procs)]
    for s in sessions:  # all of a client's connections in one process: one token cache per device
        per_proc[s.cid % args.procs].append(s)
    log("plan made")
    rsa_key, ec_key = make_user_keys(out_dir)
    user_tokens = mint_user_tokens(rsa_key, ec_key, hours=6 + args.span_secs / 3600)
    write_config(out_dir)
    SHARED.update(clients=clients, world=world, files=files, per_proc=per_proc, user_tokens=user_tokens,
                  span=args.span_secs)
    log(f"plan: {len(clients)} clients, {len(sessions)} connections, {sum(map(len, [s.bursts for s in sessions]))} bursts")

    st = None
    longest = args.span_secs * (1 + args.max_overrun)
    for attempt in range(1, args.attempts + 1):
        try:
            st, clients_secs, packets, dropped = record_once(args, out_dir, cap)
        except DroppedPackets as e:
            log(f"attempt {attempt} of {args.attempts}: {e}")
            continue
        # Clients that fell behind the plan stretch the same transactions over more packet
        # time: a sparser capture than planned, whose memory and rates say little about
        # the 1x/3x comparison it is for.
        n_packets, first, last = pcap_span(cap)
        if last - first > longest:
            log(f"attempt {attempt} of {args.attempts}: the clients ran late (up to {st.max_late_secs:.1f} s): "
                f"{last - first:.1f} s of packet time, planned {args.span_secs:.0f} s (at most {longest:.1f})")
            st = None
            continue
        break
    if st is None:
        log("FAILED: tcpdump dropped packets or the clients ran late on every attempt "
            "(a quieter machine, or a longer --span-secs, keeps the pace)")
        return 1
    if st.failures:
        log(f"FAILED: {sum(st.failures.values())} connections failed: {dict(st.failures.most_common(5))}")
        return 1
    if st.unexpected:
        log(f"FAILED: statuses differ from the plan: {dict(st.unexpected.most_common(10))}")
        return 1
    if st.responses != args.transactions or st.requests != args.transactions:
        log(f"FAILED: sent {st.requests} requests, got {st.responses} responses, wanted {args.transactions}")
        return 1
    tx = st.responses

    def share(n: int) -> float:
        return round(n / tx, 4)

    manifest = {
        "generator": "scripts/gen_realistic.py",
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "inside"},
        "capture": str(cap),
        "capture_bytes": cap.stat().st_size,
        "packets": n_packets,
        "tcpdump_captured": packets,
        "kernel_dropped": dropped,
        "packet_time": {"first": first, "last": last, "span_secs": round(last - first, 3)},
        "server": f"nginx/{nginx_version()} + Python {sys.version.split()[0]} http.server (dynamic routes)",
        "transactions": tx,
        "by_method": dict(sorted(st.by_method.items())),
        "by_status": dict(sorted(st.by_status.items())),
        "by_route": dict(st.by_route.most_common()),
        "by_client_kind": dict(st.by_kind.most_common()),
        "client_addresses": len(st.addresses),
        "devices": len(st.devices),
        "users": len(st.users),
        "connections": st.connections,
        "connections_by_family": dict(st.connections_by_family),
        "transactions_by_family": dict(st.by_family),
        "ipv6_share": share(st.by_family["ipv6"]),
        "gzip_share": share(st.gzip_responses),
        "chunked_share": share(st.chunked_responses),
        "chunked_requests": st.chunked_requests,
        "pipelined_bursts": st.pipelined_bursts,
        "pipelined_requests": st.pipelined_requests,
        "server_closed_connections": st.server_closed,
        "approov_share": share(st.with_approov),
        "approov_tokens_minted": st.approov_tokens,
        "authorization_share": share(st.with_authorization),
        "user_token_algorithms": dict(st.user_token_algs),
        "request_body_bytes": st.request_body_bytes,
        "response_body_bytes": st.response_wire_body_bytes,
        "decoded_response_bodies": {
            "count": st.decoded_bodies,
            "mean_bytes": round(st.response_decoded_body_bytes / max(1, st.decoded_bodies)),
            "min_bytes": st.decoded_min if st.decoded_bodies else 0,
            "max_bytes": st.decoded_max,
        },
        "bots": {name: {"transactions": st.by_kind[name], "what": what} for name, _, what in BOTS},
        "clients_wall_secs": round(clients_secs, 2),
        "clients_max_late_secs": round(st.max_late_secs, 2),
        "generation_secs": round(time.monotonic() - t_start, 1),
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    log(f"done: {tx} transactions, {n_packets} packets ({manifest['capture_bytes'] / 1e6:.0f} MB) over "
        f"{last - first:.1f} s of packet time, 0 dropped; {len(st.addresses)} addresses, {len(st.devices)} devices, "
        f"{len(st.users)} users; gzip {share(st.gzip_responses):.1%}, chunked {share(st.chunked_responses):.1%}, "
        f"IPv6 {share(st.by_family['ipv6']):.1%}; decoded bodies mean {manifest['decoded_response_bodies']['mean_bytes']} B; "
        f"{manifest['generation_secs']} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", type=Path, help="directory for capture.pcap, shieldtap.toml, manifest.json")
    ap.add_argument("--scale", type=int, default=1, help="multiplies transactions and span (default 1)")
    ap.add_argument("--transactions", type=int, help="transactions (default 400000 x scale)")
    ap.add_argument("--span-secs", type=float, help="planned packet-time span (default 66 x scale)")
    ap.add_argument("--seed", type=int, default=1, help="plan seed (default 1)")
    ap.add_argument("--procs", type=int, default=3, help="client processes (default 3)")
    ap.add_argument("--attempts", type=int, default=2, help="recordings tried if tcpdump drops packets or the clients run late (default 2)")
    ap.add_argument("--max-overrun", type=float, default=0.1,
                    help="share by which the packet-time span may exceed the planned span; a recording "
                         "whose clients ran later is tried again (default 0.1)")
    ap.add_argument("--keep-work", action="store_true", help="keep the nginx scratch directory")
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--serve-api", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve_api:
        return serve_api(args.serve_api)
    if args.out_dir is None:
        ap.error("--out-dir is required")
    if args.scale < 1 or args.procs < 1 or args.attempts < 1:
        ap.error("--scale, --procs and --attempts must be positive")
    if not args.max_overrun >= 0:
        ap.error("--max-overrun must be a share of at least 0")
    args.transactions = args.transactions or 400_000 * args.scale
    args.span_secs = args.span_secs or 66.0 * args.scale
    if args.transactions < 1000 or args.span_secs < 5:
        ap.error("--transactions must be at least 1000 and --span-secs at least 5")
    if args.inside:
        return inside(args)

    for tool in ("ip", "tcpdump", "nginx", "sysctl"):
        if shutil.which(tool) is None:
            log(f"missing {tool}: apt-get install -y iproute2 procps tcpdump nginx-light")
            return 1
    try:
        import cryptography  # noqa: F401
        import jwt  # noqa: F401
    except ImportError as e:
        log(f"missing Python package for {sys.executable}: {e.name} "
            "(apt-get install -y python3-jwt python3-cryptography, and run /usr/bin/python3)")
        return 1
    if os.geteuid() != 0:
        log("needs root: it creates a network namespace and captures in it")
        return 1
    ns = f"stbench-{os.getpid()}"
    p = subprocess.run(["ip", "netns", "add", ns], capture_output=True, text=True)
    if p.returncode != 0:
        log(f"cannot create network namespace {ns}: {p.stderr.strip()}")
        return 1
    try:
        cmd = ["ip", "netns", "exec", ns, sys.executable, str(Path(__file__).resolve()), "--inside",
               "--out-dir", str(args.out_dir.resolve()), "--transactions", str(args.transactions),
               "--span-secs", str(args.span_secs), "--seed", str(args.seed), "--procs", str(args.procs),
               "--attempts", str(args.attempts), "--scale", str(args.scale),
               "--max-overrun", str(args.max_overrun)]
        if args.keep_work:
            cmd.append("--keep-work")
        return subprocess.run(cmd).returncode
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


if __name__ == "__main__":
    sys.exit(main())
