#!/usr/bin/env python3
"""Records samples/approov-tokens: a mobile-API client sending every kind of attestation token.

Usage: python3 scripts/record_token_sample.py   (as root: tcpdump on loopback)

A Python http.client keep-alive connection talks to the same http.server API the other
samples use. Each request carries an `Authorization: Bearer <user JWT>` and, except one, an
`Approov-Token`. Tokens are made here with PyJWT (an implementation independent of
shieldtap), HS256 with a fixed test account secret, `exp` relative to the recording time:

  valid         signed with the secret, `pay` binds the Authorization header
  expired       `exp` one minute before the request
  forged        signed with another secret
  alg-none      `alg: none`, no signature
  lifted        a valid token whose `pay` binds a different Authorization value
  status-value  the SDK's `NO_NETWORK` status string instead of a token
  failover      valid signature, no `pay` (Approov failover tokens): valid, binding absent
  missing       no Approov-Token header at all

Writes capture.pcap, expected.jsonl (the client's own record, with the verdict each request
must get), shieldtap.toml (the secret, base64) and README.md.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
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
DEST = Path(__file__).resolve().parent.parent / "samples" / "approov-tokens"


def pay(auth: str) -> str:
    return base64.b64encode(hashlib.sha256(auth.encode()).digest()).decode()


def user_jwt(sub: str) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time()) + 3600}, b"user-secret-not-configured-in-this-sample", "HS256")


def cases(auth: str) -> list[tuple[str, str | None, str, str]]:
    """(name, token or None, expected verdict, expected binding)."""
    now = time.time()
    exp = now + 300
    valid = jwt.encode({"exp": exp, "did": "device-genuine-1", "pay": pay(auth)}, SECRET, "HS256")
    expired = jwt.encode({"exp": int(now - 60), "did": "device-genuine-1", "pay": pay(auth)}, SECRET, "HS256")
    forged = jwt.encode({"exp": int(exp), "did": "device-forged", "pay": pay(auth)}, OTHER, "HS256")
    none = jwt.encode({"exp": int(exp), "did": "device-none"}, None, "none")
    lifted = jwt.encode(
        {"exp": int(exp), "did": "device-genuine-2", "pay": pay("Bearer someone-elses-token")}, SECRET, "HS256"
    )
    failover = jwt.encode({"exp": int(exp), "did": "device-genuine-3"}, SECRET, "HS256")
    return [
        ("valid", valid, "valid", "checked"),
        ("expired", expired, "expired", "unchecked"),
        ("forged", forged, "bad-signature", "unchecked"),
        ("alg-none", none, "alg-not-allowed", "absent"),
        ("lifted", lifted, "binding-mismatch", "checked"),
        ("status-value", "NO_NETWORK", "status-value", "absent"),
        ("failover", failover, "valid", "absent"),
        ("missing", None, "missing", "absent"),
    ]


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="shieldtap-token-sample-"))
    port = rs.pick_port(18090)
    out = work / "capture.pcap"
    auth = "Bearer " + user_jwt("user-123")
    lines = []
    server = ThreadingHTTPServer(("127.0.0.1", port), rs.ApiHandler)
    with rs.ServerThread(server), rs.Tcpdump("lo", out, f"tcp port {port}") as dump:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for name, token, verdict, binding in cases(auth):
            headers = {"Authorization": auth, "User-Agent": "okhttp/4.12.0", "Accept": "application/json"}
            if token is not None:
                headers["Approov-Token"] = token
            conn.request("GET", "/api/v1/users/123", headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            lines.append(
                {
                    "connection": 0,
                    "method": "GET",
                    "path": "/api/v1/users/123",
                    "status": resp.status,
                    "request_body_bytes": 0,
                    "response_body_bytes": len(body),
                    "case": name,
                    "verdict": verdict,
                    "binding": binding,
                }
            )
        conn.close()
        dump.stop()
    DEST.mkdir(parents=True, exist_ok=True)
    (DEST / "capture.pcap").write_bytes(out.read_bytes())
    (DEST / "expected.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (DEST / "shieldtap.toml").write_text(
        "# The sample's test account secret (not a real one), base64 as Approov's CLI prints it.\n"
        "[[attestation]]\n"
        'name = "approov"\n'
        'header = "Approov-Token"\n'
        'algorithms = ["HS256"]\n'
        f'secret_base64 = "{base64.b64encode(SECRET).decode()}"\n'
        'binding_headers = ["Authorization"]\n'
        'missing_binding = "accept"\n'
    )
    rows = "\n".join(f"| {i + 1} | {l['case']} | `{l['verdict']}` | `{l['binding']}` |" for i, l in enumerate(lines))
    (DEST / "README.md").write_text(
        "# approov-tokens\n\n"
        "Made by `scripts/record_token_sample.py` (see its docstring): Python `http.client` on one\n"
        "keep-alive connection to the Python `http.server` API of `scripts/record_samples.py` on\n"
        f"127.0.0.1:{port}, captured with `tcpdump -i lo -s 0 -U -w capture.pcap 'tcp port {port}'`.\n"
        "Tokens were made by PyJWT (HS256) with the test secret in `shieldtap.toml`; `exp` is\n"
        "relative to the recording time, so shieldtap, judging on packet time, gives the same\n"
        "verdicts whenever the capture is replayed.\n\n"
        "Replay with `shieldtap replay samples/approov-tokens/capture.pcap --config\n"
        "samples/approov-tokens/shieldtap.toml --transactions-out -`; each request must get:\n\n"
        "| # | case | verdict | binding |\n|---|---|---|---|\n" + rows + "\n"
    )
    rs.log(f"wrote {DEST} ({len(lines)} transactions)")


if __name__ == "__main__":
    main()
