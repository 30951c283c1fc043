#!/usr/bin/env python3
"""Records samples/token-abuse: several mobile-API actors, genuine and abusive, on loopback.

Usage: python3 scripts/record_token_abuse.py   (as root: tcpdump on loopback)

Python http.client connections talk to the same http.server API the other samples use
(`record_samples.ApiHandler`, GET /api/v1/users/123 and /456, always 200). Every actor binds
its own client address in 127.0.0.0/8 (Linux loopback accepts any 127.x source) and uses its
own keep-alive connection(s). Every request carries `Authorization: Bearer <user JWT>` (HS256
with a user secret, claim `sub`), `User-Agent: okhttp/4.12.0`, `Accept: application/json`
and an `Approov-Token`. Attestation tokens are made here with PyJWT (an implementation
independent of shieldtap), HS256 with the same test account secret as
`record_token_sample.py`, claims `exp` (relative to the moment of each request), `did` and
`pay` = base64(SHA-256(the Authorization value)). Actors, in send order:

  genuine-a       127.0.0.10      device-a  alice    6 valid (new token every 3), 1 expired
                                                     5 s earlier (refresh race), 1 valid
  genuine-b       127.0.0.11/.12  device-b  bob      3 valid, then roams to .12: 2 valid
  genuine-c       127.0.0.13      device-c  carol    2 failover tokens (no `pay`), 1 NO_NETWORK
  forger          127.0.0.20      (claims   mallory  2 bad-signature, 1 alg none, 1 "not.a.jwt",
                                  device-m)          1 bad-signature
  shared-token    127.0.0.30-.34  device-r  rita     ONE valid token, one request per address
  device-spread   127.0.0.40-.44  device-s  sam      a fresh valid token per address
  expired-replay  127.0.0.50      device-e  eve      one token, 600 s past exp, sent 3 times
  binding-thief   127.0.0.60      device-t  trent    2 valid signatures, `pay` of another value

Structure is fixed (same requests, addresses and order every run); only times, token `exp`
values, client ports and Date headers differ. Within an actor each newly minted token's `exp`
gets +1 s per earlier token, so tokens minted in the same second still differ.

Writes capture.pcap, expected.jsonl (the client's own record, with the verdict each request
must get), shieldtap.toml (the secrets, base64) and README.md.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import shutil
import sys
import tempfile
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

import jwt  # PyJWT

sys.path.insert(0, str(Path(__file__).resolve().parent))
import record_samples as rs  # noqa: E402  (shared capture helpers)

SECRET = b"shieldtap-sample-account-secret-0123456789"
OTHER = b"an-attacker-guess-of-the-secret-9876543210"
USER_SECRET = b"shieldtap-sample-user-secret-abcdef-456789"
DEST = Path(__file__).resolve().parent.parent / "samples" / "token-abuse"
USER_IDS = (123, 456)  # ids record_samples.USERS knows: always 200
PAUSE = 0.05


def pay(auth: str) -> str:
    return base64.b64encode(hashlib.sha256(auth.encode()).digest()).decode()


def user_auth(sub: str) -> str:
    tok = jwt.encode({"sub": sub, "exp": int(time.time()) + 3600}, USER_SECRET, "HS256")
    return "Bearer " + tok


class Recorder:
    """Sends requests and keeps the client's own record of each."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.lines: list[dict] = []
        self.conns: list[tuple[str, str]] = []  # (actor, source) per connection, in order

    def connect(self, actor: str, src: str) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10, source_address=(src, 0))
        conn.connect()
        self.conns.append((actor, src))
        return conn

    def send(
        self,
        conn: http.client.HTTPConnection,
        *,
        actor: str,
        src: str,
        user: str,
        auth: str,
        token: str,
        device: str | None,
        case: str,
        verdict: str,
    ) -> None:
        n = sum(1 for l in self.lines if l["actor"] == actor)
        path = f"/api/v1/users/{USER_IDS[n % len(USER_IDS)]}"
        headers = {
            "Authorization": auth,
            "User-Agent": "okhttp/4.12.0",
            "Accept": "application/json",
            "Approov-Token": token,
        }
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{actor} {path}: status {resp.status}")
        self.lines.append(
            {
                "actor": actor,
                "client_ip": src,
                "device": device,
                "user": user,
                "method": "GET",
                "path": path,
                "status": resp.status,
                "case": case,
                "verdict": verdict,
            }
        )
        time.sleep(PAUSE)


def mint(did: str, auth: str | None, exp: int, secret: bytes = SECRET, bound: str | None = None) -> str:
    """An Approov-style token; `pay` binds `bound` if given, else `auth`, none if both None."""
    claims: dict = {"exp": exp, "did": did}
    if bound is not None:
        claims["pay"] = pay(bound)
    elif auth is not None:
        claims["pay"] = pay(auth)
    return jwt.encode(claims, secret, "HS256")


def now() -> int:
    return int(time.time())


def genuine_a(r: Recorder) -> None:
    actor, src, did, user = "genuine-a", "127.0.0.10", "device-a", "alice"
    auth = user_auth(user)
    conn = r.connect(actor, src)
    kw = dict(actor=actor, src=src, user=user, auth=auth, device=did)
    minted = 0
    token = ""
    for i in range(6):
        if i % 3 == 0:
            token = mint(did, auth, now() + 300 + minted)
            minted += 1
        r.send(conn, token=token, case="valid", verdict="valid", **kw)
    stale = mint(did, auth, now() - 5)  # the app sent its old token while refreshing
    r.send(conn, token=stale, case="refresh-race", verdict="expired", **kw)
    r.send(conn, token=mint(did, auth, now() + 300 + minted), case="valid", verdict="valid", **kw)
    conn.close()


def genuine_b(r: Recorder) -> None:
    actor, did, user = "genuine-b", "device-b", "bob"
    auth = user_auth(user)
    src = "127.0.0.11"
    conn = r.connect(actor, src)
    token = mint(did, auth, now() + 300)
    for _ in range(3):
        r.send(conn, actor=actor, src=src, user=user, auth=auth, device=did, token=token, case="valid", verdict="valid")
    conn.close()
    src = "127.0.0.12"  # same device, new network (Wi-Fi to mobile data)
    conn = r.connect(actor, src)
    token = mint(did, auth, now() + 301)
    for _ in range(2):
        r.send(conn, actor=actor, src=src, user=user, auth=auth, device=did, token=token, case="roamed", verdict="valid")
    conn.close()


def genuine_c(r: Recorder) -> None:
    actor, src, did, user = "genuine-c", "127.0.0.13", "device-c", "carol"
    auth = user_auth(user)
    conn = r.connect(actor, src)
    kw = dict(actor=actor, src=src, user=user, auth=auth)
    failover = mint(did, None, now() + 300)  # Approov failover tokens carry no `pay`
    for _ in range(2):
        r.send(conn, token=failover, device=did, case="failover", verdict="valid", **kw)
    r.send(conn, token="NO_NETWORK", device=None, case="status-value", verdict="status-value", **kw)
    conn.close()


def forger(r: Recorder) -> None:
    actor, src, did, user = "forger", "127.0.0.20", "device-m", "mallory"
    auth = user_auth(user)
    conn = r.connect(actor, src)
    kw = dict(actor=actor, src=src, user=user, auth=auth)
    for k in range(2):
        tok = mint(did, auth, now() + 300 + k, secret=OTHER)
        r.send(conn, token=tok, device=did, case="forged", verdict="bad-signature", **kw)
    none = jwt.encode({"exp": now() + 300, "did": did, "pay": pay(auth)}, None, "none")
    r.send(conn, token=none, device=did, case="alg-none", verdict="alg-not-allowed", **kw)
    r.send(conn, token="not.a.jwt", device=None, case="malformed", verdict="malformed", **kw)
    tok = mint(did, auth, now() + 302, secret=OTHER)
    r.send(conn, token=tok, device=did, case="forged", verdict="bad-signature", **kw)
    conn.close()


def shared_token(r: Recorder) -> None:
    actor, did, user = "shared-token", "device-r", "rita"
    auth = user_auth(user)
    token = mint(did, auth, now() + 300)  # ONE token, lifted from one device, used by a farm
    for last in range(30, 35):
        src = f"127.0.0.{last}"
        conn = r.connect(actor, src)
        r.send(conn, actor=actor, src=src, user=user, auth=auth, device=did, token=token, case="shared-token", verdict="valid")
        conn.close()


def device_spread(r: Recorder) -> None:
    actor, did, user = "device-spread", "device-s", "sam"
    auth = user_auth(user)
    for k, last in enumerate(range(40, 45)):
        src = f"127.0.0.{last}"
        conn = r.connect(actor, src)
        token = mint(did, auth, now() + 300 + k)  # a fresh token per request, same device id
        r.send(conn, actor=actor, src=src, user=user, auth=auth, device=did, token=token, case="device-spread", verdict="valid")
        conn.close()


def expired_replay(r: Recorder) -> None:
    actor, src, did, user = "expired-replay", "127.0.0.50", "device-e", "eve"
    auth = user_auth(user)
    conn = r.connect(actor, src)
    token = mint(did, auth, now() - 600)  # genuine once, ten minutes stale at the first request
    for _ in range(3):
        r.send(conn, actor=actor, src=src, user=user, auth=auth, device=did, token=token, case="expired-replay", verdict="expired")
    conn.close()


def binding_thief(r: Recorder) -> None:
    actor, src, did, user = "binding-thief", "127.0.0.60", "device-t", "trent"
    auth = user_auth(user)
    conn = r.connect(actor, src)
    for k in range(2):
        token = mint(did, auth, now() + 300 + k, bound="Bearer someone-elses-token")
        r.send(conn, actor=actor, src=src, user=user, auth=auth, device=did, token=token, case="lifted", verdict="binding-mismatch")
    conn.close()


ACTORS = [
    ("genuine-a", genuine_a, "127.0.0.10", "device-a", "alice",
     "6 valid tokens (a new one every 3 requests), 1 token expired 5 s earlier (refresh race), 1 valid"),
    ("genuine-b", genuine_b, "127.0.0.11, 127.0.0.12", "device-b", "bob",
     "3 valid from .11, then roams: a new connection from .12 with a fresh token, 2 valid"),
    ("genuine-c", genuine_c, "127.0.0.13", "device-c", "carol",
     "2 failover tokens (valid signature, no `pay`), 1 `NO_NETWORK` status string"),
    ("forger", forger, "127.0.0.20", "claims device-m", "mallory",
     "2 tokens signed with a guessed secret, 1 `alg: none`, 1 `not.a.jwt`, 1 more guessed-secret token"),
    ("shared-token", shared_token, "127.0.0.30 .. .34", "device-r", "rita",
     "ONE valid token (same Authorization) from 5 addresses, one connection and request each"),
    ("device-spread", device_spread, "127.0.0.40 .. .44", "device-s", "sam",
     "a fresh valid token per request, same device id, from 5 addresses, one request each"),
    ("expired-replay", expired_replay, "127.0.0.50", "device-e", "eve",
     "one token whose `exp` is 600 s before the first request, sent 3 times"),
    ("binding-thief", binding_thief, "127.0.0.60", "device-t", "trent",
     "2 valid-signature tokens whose `pay` binds `Bearer someone-elses-token`"),
]


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="shieldtap-token-abuse-"))
    try:
        record(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def record(work: Path) -> None:
    port = rs.pick_port(18091)
    out = work / "capture.pcap"
    server = ThreadingHTTPServer(("127.0.0.1", port), rs.ApiHandler)
    with rs.ServerThread(server), rs.Tcpdump("lo", out, f"tcp port {port}") as dump:
        r = Recorder(port)
        for _, fn, *_ in ACTORS:
            fn(r)
        dump.stop()
    lines = r.lines
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
    count = {a: sum(1 for l in lines if l["actor"] == a) for a, *_ in ACTORS}
    conns = {a: sum(1 for c, _ in r.conns if c == a) for a, *_ in ACTORS}
    actor_rows = "\n".join(
        f"| {name} | {srcs} | {dev} | {user} | {what} | {conns[name]} | {count[name]} |"
        for name, _, srcs, dev, user, what in ACTORS
    )
    req_rows = "\n".join(
        f"| {i + 1} | {l['actor']} | {l['client_ip']} | {l['device'] or '-'} | {l['user']} | `{l['path']}` "
        f"| {l['case']} | `{l['verdict']}` |"
        for i, l in enumerate(lines)
    )
    (DEST / "README.md").write_text(
        "# token-abuse\n\n"
        "Made by `scripts/record_token_abuse.py` (see its docstring): Python `http.client`\n"
        "keep-alive connections, each bound to its actor's own source address in 127.0.0.0/8\n"
        "(`source_address=(ip, 0)`), to the Python `http.server` API of `scripts/record_samples.py`\n"
        f"(`ApiHandler`, a `ThreadingHTTPServer`) on 127.0.0.1:{port}, captured with\n"
        f"`{dump.display_cmd('capture.pcap')}`\n"
        f"({dump.captured} packets, 0 dropped by kernel). Actors ran one after another, in table order.\n\n"
        "Every request is `GET /api/v1/users/<123|456>` (200) with `Authorization: Bearer <user JWT>`\n"
        "(HS256, the user secret in `shieldtap.toml`, claim `sub`), `User-Agent: okhttp/4.12.0`,\n"
        "`Accept: application/json` and an `Approov-Token`. Attestation tokens were made by PyJWT\n"
        "(HS256, the account secret in `shieldtap.toml`) with `exp` relative to the moment of each\n"
        "request, `did`, and `pay` = base64(SHA-256(Authorization value)); shieldtap judges expiry on\n"
        "packet time, so the verdicts hold whenever the capture is replayed.\n\n"
        "## Actors\n\n"
        "| actor | source address(es) | device (`did`) | user (`sub`) | sends | connections | requests |\n"
        "|---|---|---|---|---|---|---|\n" + actor_rows + "\n"
        f"| **total** | | | | | {len(r.conns)} | {len(lines)} |\n\n"
        "## Requests\n\n"
        "`expected.jsonl` is the client's record, one line per request in send order: `actor`,\n"
        "`client_ip`, `device` (the `did` the token carries, null when it carries none), `user`,\n"
        "`method`, `path`, `status`, `case` and the token `verdict` shieldtap must give. Replay with\n"
        "`shieldtap replay samples/token-abuse/capture.pcap --config samples/token-abuse/shieldtap.toml\n"
        "--transactions-out -`.\n\n"
        "| # | actor | client | device | user | path | case | verdict |\n|---|---|---|---|---|---|---|---|\n"
        + req_rows
        + "\n\n"
        "The alert expectations for this capture live in the `rules/` test cases and in\n"
        "`samples/token-abuse/alerts.jsonl`.\n"
    )
    rs.log(f"wrote {DEST} ({len(lines)} transactions, {len(r.conns)} connections, {dump.captured} packets)")


if __name__ == "__main__":
    main()
