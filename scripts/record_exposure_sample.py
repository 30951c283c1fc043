#!/usr/bin/env python3
"""Records samples/data-exposure: an API that returns far more personal data than its app shows, on loopback.

Usage: python3 scripts/record_exposure_sample.py   (as root: tcpdump on loopback)

Python http.client keep-alive connections talk to a deliberately LEAKY HTTP/1.1 JSON API
defined here (`ExposureApiHandler`, a `ThreadingHTTPServer` on 127.0.0.1). It authenticates
every request by its `Authorization: Bearer <user JWT>` (HS256 with the user secret, claim
`sub` = the user id as a string, e.g. "2001"; missing or bad: 401) and answers:

  GET /api/v1/me                     200 {id, name, email}: the caller's own email, by design
  GET /api/v1/users/<id>/profile     200 for any existing id, else 404. The app shows only `name`
                                     and `avatar_url`, but the API returns the whole user record
                                     (excessive data exposure, OWASP API3:2023):
                                     {id, name, avatar_url, email, phone, home {lat, lon, street},
                                      date_of_birth, payment {card_number, expiry}, password_hash}
  GET /api/v1/catalog/items/<n>      200 {id, name: "Item <n>", price_cents: 1299}, n 1..20

Users: alice 2001, bob 2002, carol 2003 (other ids do not exist). All personal data is made up:
`example.*` e-mail domains, Ofcom drama phone numbers (+44 7700 900xxx), well-known Luhn-valid
TEST card numbers (4111111111111111 Visa, 5500005555555559 Mastercard, 340000000000009 Amex)
and bcrypt-shaped `$2b$12$` strings whose salt and hash are SHA-256 output, not hashes of any
password.

Every actor binds its own client address in 127.0.0.0/8 and uses one keep-alive connection.
The three app users send `User-Agent: okhttp/4.12.0`, `Accept: application/json`, their own
Authorization and an `Approov-Token` made here with PyJWT (independent of shieldtap): HS256
with the same test account secret as `record_bola_sample.py`, claims `exp` (now + 300 s),
`did` and `pay` = base64(SHA-256(Authorization value)); one token per actor (no actor sends
more than 5 requests). The script sends NO Approov-Token, bob's stolen Authorization (the very
string bob sends) and its own User-Agent. All actors run concurrently, in threads:

  alice   127.0.0.10  device-alice  2001  /me, own profile, catalogue items 1 and 2
  bob     127.0.0.11  device-bob    2002  /me, own profile, catalogue item 3
  carol   127.0.0.12  device-carol  2003  /me, own profile, alice's profile (a friend's, in the app)
  script  127.0.0.50  (none)        2002  profiles 2001, 2002, 2003, 0.15 s apart, no attestation

Genuine think times (0.3-1.0 s) come from `random.Random(<seed>)` per actor, so paths, order
and counts are the same every run; only times, token `exp` values, client ports and Date
headers differ.

Writes capture.pcap; expected.jsonl (the client's own record: one line per request, grouped
by actor in table order, in send order within an actor, with the attestation verdict and
`sensitive`: the JSON paths of the response fields holding personal or secret data, in the
order they appear in the response body); planted.json (every personal or secret value the
server sent, as it appears in the JSON text: no shieldtap output may contain any of them);
shieldtap.toml (the secrets, base64) and README.md.
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

SECRET = b"shieldtap-sample-account-secret-0123456789"  # same test account as bola, token-abuse
USER_SECRET = b"shieldtap-sample-user-secret-abcdef-456789"  # same user secret as bola
DEST = Path(__file__).resolve().parent.parent / "samples" / "data-exposure"
UA = "okhttp/4.12.0"
SCRIPT_UA = f"Python/{sys.version_info.major}.{sys.version_info.minor} http.client"
ATTEMPTS = 3  # recordings tried when tcpdump drops packets
SCRIPT_GAP = 0.15  # seconds between the script's requests
SCRIPT_START = 2.0  # seconds after the app users start
MAX_PCAP_BYTES = 200_000

# --------------------------------------------------------------------------------------
# the API's data (all made up)

_BCRYPT_ALPHABET = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_STD_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_TO_BCRYPT = str.maketrans(_STD_ALPHABET, _BCRYPT_ALPHABET)


def _bcrypt_b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode().rstrip("=").translate(_TO_BCRYPT)


def fake_bcrypt(seed: str) -> str:
    """A bcrypt-shaped `$2b$12$` + 22 salt + 31 hash characters (60 in all), from SHA-256 of
    `seed`: the shape of a real hash (16-byte salt, 23-byte hash, bcrypt's base64) without
    being the hash of any password."""
    salt = hashlib.sha256(b"salt:" + seed.encode()).digest()[:16]
    digest = hashlib.sha256(b"hash:" + seed.encode()).digest()[:23]
    out = "$2b$12$" + _bcrypt_b64(salt) + _bcrypt_b64(digest)
    assert len(out) == 60, out
    return out


def luhn_ok(number: str) -> bool:
    digits = [int(c) for c in reversed(number)]
    total = sum(d if i % 2 == 0 else (d * 2 - 9 if d * 2 > 9 else d * 2) for i, d in enumerate(digits))
    return total % 10 == 0


def _user(uid, name, email, phone, lat, lon, street, dob, card, expiry) -> dict:
    return {
        "id": uid,
        "name": name,
        "avatar_url": f"https://cdn.example.com/a/{uid}.png",
        "email": email,
        "phone": phone,
        "home": {"lat": lat, "lon": lon, "street": street},
        "date_of_birth": dob,
        "payment": {"card_number": card, "expiry": expiry},
        "password_hash": fake_bcrypt(f"shieldtap-sample-{uid}"),
    }


USERS = {
    u["id"]: u
    for u in (
        _user(2001, "Alice Liddell", "alice.liddell@example.com", "+44 7700 900123",
              51.501364, -0.141892, "12 Buckingham Palace Road", "1985-04-12", "4111111111111111", "12/29"),
        _user(2002, "Bob Builder", "bob.builder@example.net", "+44 7700 900456",
              51.497713, -0.143851, "47 Buckingham Palace Road", "1979-11-03", "5500005555555559", "08/28"),
        _user(2003, "Carol Danvers", "carol.danvers@example.org", "+44 7700 900789",
              51.495182, -0.146517, "108 Buckingham Palace Road", "1992-07-21", "340000000000009", "03/30"),
    )
}

# JSON path -> class: the fields holding personal or secret data. Everything else the API
# returns (`id`, `name`, `avatar_url`, catalogue fields, `payment.expiry`) is not listed.
SENSITIVE = {
    "$.email": "email",
    "$.phone": "phone",
    "$.home.lat": "geolocation",
    "$.home.lon": "geolocation",
    "$.home.street": "street address",
    "$.date_of_birth": "date of birth",
    "$.payment.card_number": "payment card",
    "$.password_hash": "password hash",
}


def item(n: int) -> dict:
    return {"id": n, "name": f"Item {n}", "price_cents": 1299}


def leaves(obj: object, path: str = "$"):
    """(JSON path, value) of every scalar in `obj`, in document order."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from leaves(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from leaves(v, f"{path}[{i}]")
    else:
        yield path, obj


def json_text(value: object) -> str:
    """How a scalar appears in the JSON body: strings unquoted, numbers as json.dumps writes them."""
    return value if isinstance(value, str) else json.dumps(value)


def planted_values() -> list[str]:
    """Every sensitive value of every user, as it appears in the JSON text, deduplicated."""
    out: list[str] = []
    for user in USERS.values():
        for path, value in leaves(user):
            if path in SENSITIVE and json_text(value) not in out:
                out.append(json_text(value))
    return out


def check_data() -> None:
    for u in USERS.values():
        card = u["payment"]["card_number"]
        if not luhn_ok(card):
            raise RuntimeError(f"card {card} of {u['id']} fails the Luhn check")
    for path in SENSITIVE:
        if not all(path in dict(leaves(u)) for u in USERS.values()):
            raise RuntimeError(f"{path} is not in every user record")
    values = planted_values()
    if len(values) != len(USERS) * len(SENSITIVE):
        raise RuntimeError(f"sensitive values are not all distinct: {values}")


# --------------------------------------------------------------------------------------
# server


class ExposureApiHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive JSON API: authenticates the caller, then returns whole user records."""

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

    def _not_found(self, path: str) -> None:
        self._send(404, {"error": "not_found", "path": path})

    def _caller(self) -> int | None:
        """The authenticated user id, or None after answering 401. Approov tokens are not
        checked here: the server trusts whatever reaches it."""
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
            me = USERS[caller]
            return self._send(200, {"id": me["id"], "name": me["name"], "email": me["email"]},
                              extra=[("Cache-Control", "no-store")])
        if len(rest) == 3 and rest[0] == "users" and rest[2] == "profile":
            user = USERS.get(num(rest[1]))  # the whole record: the app only shows name + avatar
            if user is None:
                return self._not_found(url.path)
            return self._send(200, user, extra=[("Cache-Control", "no-store")])
        if len(rest) == 3 and rest[:2] == ["catalog", "items"] and 1 <= num(rest[2]) <= 20:
            return self._send(200, item(num(rest[2])), extra=[("Cache-Control", "public, max-age=300")])
        return self._not_found(url.path)


# --------------------------------------------------------------------------------------
# clients


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


class Recorder:
    """Sends requests and keeps the client's own record of each, per actor."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.auth = {uid: user_auth(uid) for uid in USERS}  # one login per user; the script reuses bob's
        self.lines: dict[str, list[dict]] = {}
        self.bodies: list[bytes] = []
        self.conns: Counter[str] = Counter()
        self.lock = threading.Lock()

    def connect(self, actor: str, src: str) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10, source_address=(src, 0))
        conn.connect()
        with self.lock:
            self.conns[actor] += 1
        return conn


class Session:
    """One actor: one keep-alive connection, its Authorization and (if `did`) its attestation tokens."""

    def __init__(self, r: Recorder, actor: str, src: str, did: str | None, uid: int, ua: str = UA,
                 every: int = 5) -> None:
        self.r, self.actor, self.src, self.did, self.uid, self.ua = r, actor, src, did, uid, ua
        self.auth = r.auth[uid]
        self.every = every
        self.minted = 0
        self.uses = 0
        self.token = ""
        self.conn = r.connect(actor, src)

    def close(self) -> None:
        self.conn.close()

    def _token(self) -> str:
        assert self.did is not None
        if not self.token or self.uses >= self.every:
            self.token = mint(self.did, self.auth, now() + 300 + self.minted)
            self.minted += 1
            self.uses = 0
        self.uses += 1
        return self.token

    def get(self, path: str, *, expect: int = 200) -> dict:
        headers = {"User-Agent": self.ua, "Accept": "application/json", "Authorization": self.auth}
        if self.did is not None:
            headers["Approov-Token"] = self._token()
        self.conn.request("GET", path, headers=headers)
        resp = self.conn.getresponse()
        raw = resp.read()
        data = json.loads(raw)
        if resp.status != expect:
            raise RuntimeError(f"{self.actor} GET {path}: status {resp.status}, expected {expect}")
        line = {
            "actor": self.actor,
            "client_ip": self.src,
            "method": "GET",
            "path": path,
            "status": resp.status,
            "user": str(self.uid),
            "device": self.did,
            "verdict": "valid" if self.did is not None else "missing",
            "sensitive": sensitive_paths(path, data),
        }
        with self.r.lock:
            self.r.lines.setdefault(self.actor, []).append(line)
            self.r.bodies.append(raw)
        return data


def sensitive_paths(path: str, data: object) -> list[str]:
    """The JSON paths of `data` holding personal or secret data, in document order; checks
    that the classification by path and the planted values agree."""
    planted = set(planted_values())
    found = []
    for p, value in leaves(data):
        by_path = p in SENSITIVE
        by_value = isinstance(value, (str, int, float)) and json_text(value) in planted
        if by_path != by_value:
            raise RuntimeError(f"{path}: {p} = {value!r}: path says {by_path}, value says {by_value}")
        if by_path:
            found.append(p)
    return found


def think(rng: random.Random) -> None:
    time.sleep(rng.uniform(0.3, 1.0))


def app_user(r: Recorder, actor: str, src: str, did: str, uid: int, seed: int, paths: list[str]) -> None:
    rng = random.Random(seed)
    time.sleep(rng.uniform(0.0, 0.6))  # opens the app
    s = Session(r, actor, src, did, uid)
    try:
        for i, path in enumerate(paths):
            if i:
                think(rng)
            s.get(path)
    finally:
        s.close()


def script(r: Recorder) -> None:
    time.sleep(SCRIPT_START)  # while the app users are mid-session
    s = Session(r, "script", "127.0.0.50", None, 2002, ua=SCRIPT_UA)  # bob's stolen JWT, no Approov
    try:
        for i, uid in enumerate(USERS):
            if i:
                time.sleep(SCRIPT_GAP)
            s.get(f"/api/v1/users/{uid}/profile")
    finally:
        s.close()


# name, function, address, device, user id, what it does, what a data-exposure detector should conclude
ACTORS = [
    ("alice",
     lambda r: app_user(r, "alice", "127.0.0.10", "device-alice", 2001, 1201,
                        ["/api/v1/me", "/api/v1/users/2001/profile", "/api/v1/catalog/items/1",
                         "/api/v1/catalog/items/2"]),
     "127.0.0.10", "device-alice", 2001,
     "`/me`, her own profile `/users/2001/profile` (the app shows name + avatar), catalogue items 1, 2",
     "her own profile: all 8 sensitive fields of her own record reach the client (part of the "
     "profile alert, base severity); `/me`: own email, allowed (info at most)"),
    ("bob",
     lambda r: app_user(r, "bob", "127.0.0.11", "device-bob", 2002, 2302,
                        ["/api/v1/me", "/api/v1/users/2002/profile", "/api/v1/catalog/items/3"]),
     "127.0.0.11", "device-bob", 2002,
     "`/me`, his own profile `/users/2002/profile`, catalogue item 3",
     "as alice: own record over-exposed; `/me` allowed"),
    ("carol",
     lambda r: app_user(r, "carol", "127.0.0.12", "device-carol", 2003, 3403,
                        ["/api/v1/me", "/api/v1/users/2003/profile", "/api/v1/users/2001/profile"]),
     "127.0.0.12", "device-carol", 2003,
     "`/me`, her own profile `/users/2003/profile`, then alice's `/users/2001/profile` (a friend's "
     "profile: the app shows alice's name + avatar)",
     "**another user's** sensitive data: the API handed carol alice's email, phone, home location "
     "and street, date of birth, card number and password hash: raises the profile alert's severity"),
    ("script", script, "127.0.0.50", "(none)", 2002,
     f"NO `Approov-Token`, bob's stolen Authorization, `User-Agent: {SCRIPT_UA}`: "
     f"`/users/2001/profile`, `/2002/profile`, `/2003/profile`, {SCRIPT_GAP} s apart",
     "sensitive data of all three users to an **unattested** client (verdict `missing`), two of them "
     "not the JWT's user: raises the profile alert's severity"),
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
        t.join(60)
        if t.is_alive():
            errors.append(RuntimeError(f"{t.name}: still running after 60 s"))
    if errors:
        raise errors[0]


def main() -> None:
    check_data()
    rs.with_attempts("shieldtap-exposure-", ATTEMPTS, record)


def route(path: str) -> str:
    return "/".join("{id}" if p.isdigit() else p for p in path.split("/"))


def relation(line: dict) -> str:
    parts = line["path"].split("/")
    if len(parts) == 6 and parts[3] == "users":
        return "own profile" if parts[4] == line["user"] else "**another user's profile**"
    if parts[3:] == ["me"]:
        return "own (`/me`)"
    return "public (catalogue)"


def record(work: Path) -> None:
    port = rs.pick_port(18095)
    out = work / "capture.pcap"
    server = ThreadingHTTPServer(("127.0.0.1", port), ExposureApiHandler)
    with rs.ServerThread(server), rs.Tcpdump("lo", out, f"tcp port {port}") as dump:
        r = Recorder(port)
        began = time.monotonic()
        run_actors(r)
        took = time.monotonic() - began
        dump.stop()
    pcap = out.read_bytes()
    if len(pcap) > MAX_PCAP_BYTES:
        raise RuntimeError(f"capture is {len(pcap)} bytes, more than {MAX_PCAP_BYTES}")
    planted = planted_values()
    sent = b"".join(r.bodies)
    for value in planted:  # the sample is only a test if every value really crossed the wire
        if value.encode() not in sent or value.encode() not in pcap:
            raise RuntimeError(f"planted value {value!r} is not in the responses / the capture")
    lines = [line for name, *_ in ACTORS for line in r.lines.get(name, [])]

    DEST.mkdir(parents=True, exist_ok=True)
    (DEST / "capture.pcap").write_bytes(pcap)
    (DEST / "expected.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (DEST / "planted.json").write_text(json.dumps(planted, indent=1) + "\n")
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
        f"| {name} | {src} | {dev} | {uid} | {'valid' if dev != '(none)' else '**missing**'} | {what} "
        f"| {r.conns[name]} | {count[name]} | {concl} |"
        for name, _, src, dev, uid, what, concl in ACTORS
    )
    summary = Counter(
        (l["actor"], l["method"], route(l["path"]), l["status"], relation(l), len(l["sensitive"])) for l in lines
    )
    order = {name: i for i, (name, *_) in enumerate(ACTORS)}
    summary_rows = "\n".join(
        f"| {a} | {m} | `{p}` | {s} | {rel} | {k} | {n} |"
        for (a, m, p, s, rel, k), n in sorted(summary.items(), key=lambda kv: (order[kv[0][0]], kv[0][1:]))
    )
    request_rows = "\n".join(
        f"| {l['actor']} | {l['client_ip']} | `{l['path']}` | {l['status']} | {l['user']} | {l['verdict']} | "
        + (", ".join(f"`{p}`" for p in l["sensitive"]) or "-")
        + " |"
        for l in lines
    )
    class_rows = "\n".join(f"| `{p}` | {c} |" for p, c in SENSITIVE.items())
    user_rows = "\n".join(
        f"| {u['name']} | {u['id']} | {u['email']} | {u['phone']} | {u['home']['lat']}, {u['home']['lon']} | "
        f"{u['home']['street']} | {u['date_of_birth']} | {u['payment']['card_number']} ({u['payment']['expiry']}) |"
        for u in USERS.values()
    )
    n_profiles = sum(1 for l in lines if route(l["path"]) == "/api/v1/users/{id}/profile")
    (DEST / "README.md").write_text(
        "# data-exposure\n\n"
        "Excessive data exposure (OWASP API3:2023, broken object property level authorization): the\n"
        "app shows a user's name and avatar, the API behind it returns the whole user record: e-mail,\n"
        "phone, home location and street, date of birth, card number and password hash. Genuine app\n"
        "users receive it for their own and their friends' profiles; a script with a stolen user JWT\n"
        "and no attestation receives it for everyone.\n\n"
        "Made by `scripts/record_exposure_sample.py` (see its docstring): Python `http.client`\n"
        "keep-alive connections, one per actor, each bound to its actor's own source address in\n"
        "127.0.0.0/8 (`source_address=(ip, 0)`), to the script's own deliberately leaky HTTP/1.1 JSON\n"
        f"API (`ExposureApiHandler`, a `ThreadingHTTPServer`) on 127.0.0.1:{port}, captured with\n"
        f"`{dump.display_cmd('capture.pcap')}`\n"
        f"({dump.captured} packets, 0 dropped by kernel, {len(pcap)} bytes). All actors ran\n"
        f"concurrently, in threads; the recording took {took:.0f} s. All personal data in it is made\n"
        "up (see below); the secrets in `shieldtap.toml` are the test secrets of `samples/bola`.\n\n"
        "## The API (leaky on purpose)\n\n"
        "Every request must carry `Authorization: Bearer <user JWT>` (HS256 with the user secret in\n"
        "`shieldtap.toml`, claim `sub` = the user id as a string, e.g. `\"2001\"`); without a valid one\n"
        "the answer is 401. The server does not look at `Approov-Token`. Responses are compact JSON\n"
        "with sorted keys, `Content-Length` framed.\n\n"
        "| route | what the app shows | what the API returns |\n|---|---|---|\n"
        "| `GET /api/v1/me` | the signed-in user's name and e-mail (account screen) | 200 `{email, id, name}`: "
        "the **caller's own** e-mail, by design |\n"
        "| `GET /api/v1/users/{id}/profile` | `name` and `avatar_url` only | 200, for ANY existing id, the whole "
        "record: `{avatar_url, date_of_birth, email, home: {lat, lon, street}, id, name, password_hash, "
        "payment: {card_number, expiry}, phone}`; 404 for unknown ids |\n"
        "| `GET /api/v1/catalog/items/{n}` | the item | 200 `{id, name: \"Item n\", price_cents: 1299}`, "
        "n 1..20: nothing sensitive |\n\n"
        "The fields holding personal or secret data, as JSON paths of the response, and their class:\n\n"
        "| field | class |\n|---|---|\n" + class_rows + "\n\n"
        "(`id`, `name`, `avatar_url` and `payment.expiry` are not listed.) The users (made up:\n"
        "`example.*` domains, Ofcom drama numbers, well-known Luhn-valid test cards; each\n"
        "`password_hash` is a bcrypt-shaped `$2b$12$...` string of 60 characters built from SHA-256\n"
        "output, not the hash of any password):\n\n"
        "| user | id | email | phone | home lat, lon | street | date of birth | card (expiry) |\n"
        "|---|---|---|---|---|---|---|---|\n" + user_rows + "\n\n"
        "`planted.json` lists every one of these sensitive values (e-mails, phones, lat and lon as\n"
        "they appear in the JSON text, streets, dates of birth, card numbers, password hashes:\n"
        f"{len(planted)} strings) once each. All of them cross the wire in this capture; **none may\n"
        "appear in any shieldtap output** (transactions, alerts, metrics, logs): a data-exposure\n"
        "detector reports field paths and classes, never values.\n\n"
        "The app users' requests carry `User-Agent: okhttp/4.12.0`, `Accept: application/json`, their\n"
        "own Authorization and an `Approov-Token` made by PyJWT (HS256, the account secret in\n"
        "`shieldtap.toml`) with `exp` (300 s ahead), `did` and `pay` = base64(SHA-256(Authorization\n"
        "value)): all valid and bound. The script sends no `Approov-Token`, bob's Authorization (the\n"
        f"same JWT string bob sends) and `User-Agent: {SCRIPT_UA}`.\n\n"
        "## Actors\n\n"
        "| actor | source address | device (`did`) | user (`sub`) | attestation | does | connections | requests "
        "| what a data-exposure detector should see |\n"
        "|---|---|---|---|---|---|---|---|---|\n" + actor_rows + "\n"
        f"| **total** | | | | | | {sum(r.conns.values())} | {len(lines)} | |\n\n"
        "App users' think times are 0.3-1.0 s (seeded `random.Random` per actor, after a 0-0.6 s\n"
        f"start); the script starts {SCRIPT_START:.0f} s in and sends a request every {SCRIPT_GAP} s.\n\n"
        "## What a data-exposure detector should conclude\n\n"
        "- **One alert** for the route `GET /api/v1/users/{id}/profile` (category `data-exposure`),\n"
        f"  covering its {n_profiles} responses, naming each sensitive field path with its class:\n"
        "  `$.email` (email), `$.phone` (phone), `$.home.lat` and `$.home.lon` (geolocation),\n"
        "  `$.home.street` (street address), `$.date_of_birth` (date of birth),\n"
        "  `$.payment.card_number` (payment card: Luhn-valid), `$.password_hash` (password hash:\n"
        "  bcrypt `$2b$`). Field paths and classes only, never the values.\n"
        "- Its severity is **higher** than a route that only over-exposes the caller's own data,\n"
        "  because (a) carol (2003, valid attestation) received **another user's** record (alice's,\n"
        "  `/users/2001/profile`), and (b) the script (127.0.0.50, bob's JWT 2002, verdict\n"
        "  **missing**) received sensitive data **without attestation**, for 2001 and 2003 also of\n"
        "  users other than the JWT's.\n"
        "- `GET /api/v1/me` returns `$.email`, but it is the caller's own e-mail (`/me` is the\n"
        "  caller's own object): allowed by a rule, nothing above **info**.\n"
        "- `GET /api/v1/catalog/items/{id}`: nothing sensitive, nothing raised.\n\n"
        "The alert expectations for this capture live in the `rules/` test cases and in\n"
        "`samples/data-exposure/alerts.jsonl`.\n\n"
        "## Requests\n\n"
        "`expected.jsonl` is the client's record, one line per request, grouped by actor in the order\n"
        "of the table above and in send order within an actor: `actor`, `client_ip`, `method`, `path`,\n"
        "`status`, `user` (the `sub` of the Authorization JWT), `device` (the `did` of the Approov\n"
        "token; null without one), the attestation `verdict` shieldtap must give (`valid`, or\n"
        "`missing` for the script) and `sensitive`: the JSON paths of the response fields holding\n"
        "personal or secret data, in the order they appear in the response body (`[]` for catalogue\n"
        "items, `[\"$.email\"]` for `/me`). Replay with `shieldtap replay\n"
        "samples/data-exposure/capture.pcap --config samples/data-exposure/shieldtap.toml\n"
        "--transactions-out -`.\n\n"
        "| actor | method | route | status | object | sensitive fields | requests |\n"
        "|---|---|---|---|---|---|---|\n" + summary_rows + "\n\n"
        "Every request:\n\n"
        "| actor | client | path | status | user | verdict | sensitive |\n|---|---|---|---|---|---|---|\n"
        + request_rows + "\n"
    )
    rs.log(
        f"wrote {DEST} ({len(lines)} transactions, {sum(r.conns.values())} connections, "
        f"{dump.captured} packets, {len(pcap)} bytes, {took:.1f} s)"
    )


if __name__ == "__main__":
    if len(sys.argv) != 1:
        print(__doc__.split("\n\n")[0], file=sys.stderr)
        sys.exit(2)
    main()
