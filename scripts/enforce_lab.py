#!/usr/bin/env python3
"""The API server and the clients of the nginx enforcement test (tests/enforce_nginx.rs).

Usage:
  enforce_lab.py api PORT
      A small catalogue API on 127.0.0.1:PORT (http.server): GET /api/v1/products/{id}
      (JSON, ids 1-500), GET /api/v1/me (the user of the bearer token), else 404.
  enforce_lab.py one SERVER PORT SRC PATH TOKEN
      One GET from address SRC; TOKEN is `valid` (a fresh genuine token of device-a),
      `none` or `garbage`. Prints {"status": N}.
  enforce_lab.py attest SERVER PORT PREFIX
      Genuine apps (PREFIX.10 device-a alice, PREFIX.11 device-b bob) with valid tokens, a
      script (PREFIX.30) without a token, and a forger (PREFIX.31) sending a garbage one.
      Prints one JSON line per request.
  enforce_lab.py scrape SERVER PORT PREFIX SECS
      For at most SECS seconds: genuine apps (PREFIX.10 device-a alice, .11 device-b bob,
      .12 device-c carol) browse the catalogue every 250 ms on their own keep-alive
      connections; once device-a has made 4 requests, a scraper on PREFIX.66 copies device-a's
      Approov-Token and Authorization (a stolen valid token) and walks /api/v1/products/1, 2, 3,
      ... every 100 ms. The scraper stops once it was refused (403) and then answered again
      (its ban expired), or at the deadline. Prints one JSON line per request.

Tokens are made here with PyJWT (independent of shieldtap): the Approov token is HS256 with
the test account secret, claims `did`, `exp` (now + 600) and `pay` = base64(SHA-256(the
Authorization value)); Authorization is `Bearer <user JWT>` (HS256, the test user secret,
claim `sub`). The matching shieldtap config is written by the test with SECRET and
USER_SECRET below (base64).

Each request line: {"actor", "src", "path", "status", "t0", "t1"} with t0/t1 the wall time
(Unix seconds) the request was sent and its answer read; status 0 is a transport error.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt  # PyJWT

# Test secrets, not real ones.
SECRET = b"shieldtap-enforce-test-account-secret-0123"
USER_SECRET = b"shieldtap-enforce-test-user-secret-456789"

OUT_LOCK = threading.Lock()


def pay(auth: str) -> str:
    return base64.b64encode(hashlib.sha256(auth.encode()).digest()).decode()


def credentials(device: str, user: str) -> dict[str, str]:
    """A genuine app's headers: a user JWT and an Approov token bound to it."""
    auth = "Bearer " + jwt.encode({"sub": user, "exp": int(time.time()) + 3600}, USER_SECRET, "HS256")
    tok = jwt.encode({"did": device, "exp": int(time.time()) + 600, "pay": pay(auth)}, SECRET, "HS256")
    return {"Authorization": auth, "Approov-Token": tok}


class Api(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = self.path.split("?", 1)[0]
        m = re.fullmatch(r"/api/v1/products/(\d+)", path)
        if m and 1 <= int(m.group(1)) <= 500:
            i = int(m.group(1))
            self.reply(200, {"id": i, "name": f"product {i}", "price_cents": 100 + 7 * i, "stock": i % 13})
        elif path == "/api/v1/me":
            who = self.headers.get("Authorization", "")
            try:
                sub = jwt.decode(who.removeprefix("Bearer "), USER_SECRET, algorithms=["HS256"])["sub"]
            except jwt.PyJWTError:
                sub = None
            self.reply(200 if sub else 401, {"user": sub})
        else:
            self.reply(404, {"error": "not found"})

    def reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


class Client:
    """One actor on its own keep-alive connection from its own address."""

    def __init__(self, actor: str, server: str, port: int, src: str, headers: dict[str, str]) -> None:
        self.actor, self.src, self.headers = actor, src, headers
        self.conn = http.client.HTTPConnection(server, port, timeout=5, source_address=(src, 0))

    def get(self, path: str) -> int:
        t0 = time.time()
        status = 0
        for _ in range(2):  # once more on a fresh connection if nginx closed the idle one
            try:
                self.conn.request("GET", path, headers={
                    "User-Agent": "okhttp/4.12.0", "Accept": "application/json", **self.headers})
                r = self.conn.getresponse()
                r.read()
                status = r.status
                break
            except (http.client.HTTPException, OSError):
                self.conn.close()
        line = {"actor": self.actor, "src": self.src, "path": path, "status": status, "t0": t0, "t1": time.time()}
        with OUT_LOCK:
            print(json.dumps(line), flush=True)
        return status


def attest(server: str, port: int, prefix: str) -> None:
    a = Client("genuine-a", server, port, prefix + "10", credentials("device-a", "alice"))
    b = Client("genuine-b", server, port, prefix + "11", credentials("device-b", "bob"))
    for c in (a, b):
        c.get("/api/v1/me")
        c.get("/api/v1/products/7")
        c.get("/api/v1/products/12")
    script = Client("script", server, port, prefix + "30", {})
    script.get("/api/v1/products/7")
    script.get("/api/v1/me")
    Client("forger", server, port, prefix + "31", {"Approov-Token": "not.a.jwt"}).get("/api/v1/products/7")


def scrape(server: str, port: int, prefix: str, secs: float) -> None:
    deadline = time.time() + secs
    done = threading.Event()
    stolen: dict[str, str] = {}
    a_started = threading.Event()

    def genuine(actor: str, last: str, device: str, user: str, offset: int) -> None:
        creds = credentials(device, user)
        if device == "device-a":
            stolen.update(creds)
        c = Client(actor, server, port, prefix + last, creds)
        k = 0
        while not done.is_set() and time.time() < deadline:
            c.get("/api/v1/me" if k % 5 == 0 else f"/api/v1/products/{(offset + 37 * k) % 500 + 1}")
            k += 1
            if k == 4 and device == "device-a":
                a_started.set()
            time.sleep(0.25)

    def scraper() -> None:
        a_started.wait(10)
        c = Client("scraper", server, port, prefix + "66", dict(stolen))
        refused = False
        i = 1
        while time.time() < deadline:
            s = c.get(f"/api/v1/products/{i}")
            i = i % 500 + 1
            if s == 403:
                refused = True
            elif s == 200 and refused:
                break
            time.sleep(0.1)
        # A few more genuine requests after the scraper is done, then stop.
        time.sleep(1.0)
        done.set()

    threads = [
        threading.Thread(target=genuine, args=("genuine-a", "10", "device-a", "alice", 3)),
        threading.Thread(target=genuine, args=("genuine-b", "11", "device-b", "bob", 101)),
        threading.Thread(target=genuine, args=("genuine-c", "12", "device-c", "carol", 251)),
        threading.Thread(target=scraper),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def one(server: str, port: int, src: str, path: str, token: str) -> None:
    headers = {"valid": credentials("device-a", "alice"), "none": {}, "garbage": {"Approov-Token": "not.a.jwt"}}[token]
    c = Client(token, server, port, src, headers)
    c.get(path)


def main() -> None:
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "api":
        ThreadingHTTPServer(("127.0.0.1", int(args[0])), Api).serve_forever()
    elif cmd == "one":
        one(args[0], int(args[1]), args[2], args[3], args[4])
    elif cmd == "attest":
        attest(args[0], int(args[1]), args[2])
    elif cmd == "scrape":
        scrape(args[0], int(args[1]), args[2], float(args[3]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
