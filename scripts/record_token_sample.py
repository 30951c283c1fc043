#!/usr/bin/env python3
"""Records samples/approov-tokens: a mobile-API client sending every kind of attestation token.

Usage (as root: tcpdump on loopback):
  python3 scripts/record_token_sample.py                  # samples/approov-tokens
  python3 scripts/record_token_sample.py --kid 0001 --devices 4
                                                          # samples/approov-tokens-kid

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

With `--kid ID`, every token (attestation and user) carries `"kid": ID` in its header, as
Approov's tokens do once the account ran `approov secret -setKeyID ID`, and the user tokens are
signed with a user secret the configs name. `--devices N` adds N genuine devices, each on its
own loopback address (127.0.0.11, ...), sending DEVICE_REQUESTS valid tokens each: enough for
the per-address bot.unattested-traffic rule to fire if their tokens were misjudged.

Writes capture.pcap, expected.jsonl (the client's own record, with the verdict each request
must get), shieldtap.toml (the secret, base64) and README.md. With `--kid`, also
shieldtap-named.toml (the same secrets, given the token's key id) and
shieldtap-wrong-named.toml (the same secrets under another key id: every signed token is
`unknown-key`). The default destination is samples/approov-tokens, or samples/approov-tokens-kid
with `--kid`; `--dest` overrides it.
"""

from __future__ import annotations

import argparse
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
# Signs the user tokens; configured only in the `--kid` sample's configs.
USER_SECRET = b"user-secret-not-configured-in-this-sample"
SAMPLES = Path(__file__).resolve().parent.parent / "samples"
DEVICE_REQUESTS = 12


def pay(auth: str) -> str:
    return base64.b64encode(hashlib.sha256(auth.encode()).digest()).decode()


def user_jwt(sub: str, kid: str | None) -> str:
    headers = {"kid": kid} if kid else None
    return jwt.encode({"sub": sub, "exp": int(time.time()) + 3600}, USER_SECRET, "HS256", headers=headers)


def cases(auth: str, kid: str | None) -> list[tuple[str, str | None, str, str]]:
    """(name, token or None, expected verdict, expected binding)."""
    now = time.time()
    exp = now + 300
    h = {"kid": kid} if kid else None

    def enc(claims: dict, key: bytes | None, alg: str = "HS256") -> str:
        return jwt.encode(claims, key, alg, headers=h)

    valid = enc({"exp": exp, "did": "device-genuine-1", "pay": pay(auth)}, SECRET)
    expired = enc({"exp": int(now - 60), "did": "device-genuine-1", "pay": pay(auth)}, SECRET)
    forged = enc({"exp": int(exp), "did": "device-forged", "pay": pay(auth)}, OTHER)
    none = enc({"exp": int(exp), "did": "device-none"}, None, "none")
    lifted = enc({"exp": int(exp), "did": "device-genuine-2", "pay": pay("Bearer someone-elses-token")}, SECRET)
    failover = enc({"exp": int(exp), "did": "device-genuine-3"}, SECRET)
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


def config(kid: str | None, secret_kid: str | None) -> str:
    """The sample's config; with `kid`, the user secret too; `secret_kid` names both secrets."""
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    text = (
        "# The sample's test account secret (not a real one), base64 as Approov's CLI prints it.\n"
        "[[attestation]]\n"
        'name = "approov"\n'
        'header = "Approov-Token"\n'
        'algorithms = ["HS256"]\n'
        f'secret_base64 = "{b64(SECRET)}"\n'
    )
    if secret_kid:
        text += f'secret_kid = "{secret_kid}"\n'
    text += 'binding_headers = ["Authorization"]\nmissing_binding = "accept"\n'
    if kid:
        text += f'\n[identity]\nuser_secret_base64 = "{b64(USER_SECRET)}"\n'
        if secret_kid:
            text += f'user_secret_kid = "{secret_kid}"\n'
    return text


def request(conn: http.client.HTTPConnection, auth: str, token: str | None) -> tuple[int, int]:
    headers = {"Authorization": auth, "User-Agent": "okhttp/4.12.0", "Accept": "application/json"}
    if token is not None:
        headers["Approov-Token"] = token
    conn.request("GET", "/api/v1/users/123", headers=headers)
    resp = conn.getresponse()
    return resp.status, len(resp.read())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kid", help="key id put in every token header (Approov: `approov secret -setKeyID`)")
    ap.add_argument("--devices", type=int, default=0, help="genuine devices added, one loopback address each")
    ap.add_argument("--dest", type=Path, help="output folder")
    args = ap.parse_args()
    dest = args.dest or SAMPLES / ("approov-tokens-kid" if args.kid else "approov-tokens")
    user_kid = args.kid
    work = Path(tempfile.mkdtemp(prefix="shieldtap-token-sample-"))
    port = rs.pick_port(18090)
    out = work / "capture.pcap"
    auth = "Bearer " + user_jwt("user-123", user_kid)
    lines = []
    server = ThreadingHTTPServer(("127.0.0.1", port), rs.ApiHandler)
    with rs.ServerThread(server), rs.Tcpdump("lo", out, f"tcp port {port}") as dump:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for name, token, verdict, binding in cases(auth, args.kid):
            status, body = request(conn, auth, token)
            lines.append(
                {
                    "connection": 0,
                    "client": "127.0.0.1",
                    "method": "GET",
                    "path": "/api/v1/users/123",
                    "status": status,
                    "request_body_bytes": 0,
                    "response_body_bytes": body,
                    "case": name,
                    "verdict": verdict,
                    "binding": binding,
                }
            )
        conn.close()
        for d in range(args.devices):
            client = f"127.0.0.{11 + d}"
            dev_auth = "Bearer " + user_jwt(f"user-dev-{d + 1}", user_kid)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(client, 0))
            h = {"kid": args.kid} if args.kid else None
            for _ in range(DEVICE_REQUESTS):
                claims = {"exp": time.time() + 300, "did": f"device-fleet-{d + 1}", "pay": pay(dev_auth)}
                status, body = request(conn, dev_auth, jwt.encode(claims, SECRET, "HS256", headers=h))
                lines.append(
                    {
                        "connection": d + 1,
                        "client": client,
                        "method": "GET",
                        "path": "/api/v1/users/123",
                        "status": status,
                        "request_body_bytes": 0,
                        "response_body_bytes": body,
                        "case": f"device-{d + 1}",
                        "verdict": "valid",
                        "binding": "checked",
                    }
                )
            conn.close()
        dump.stop()
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "capture.pcap").write_bytes(out.read_bytes())
    (dest / "expected.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (dest / "shieldtap.toml").write_text(config(args.kid, None))
    if args.kid:
        (dest / "shieldtap-named.toml").write_text(config(args.kid, args.kid))
        wrong = "0002" if args.kid != "0002" else "0003"
        (dest / "shieldtap-wrong-named.toml").write_text(config(args.kid, wrong))
    rows = "\n".join(
        f"| {i + 1} | {l['client']} | {l['case']} | `{l['verdict']}` | `{l['binding']}` |" for i, l in enumerate(lines)
    )
    cmd = " ".join(["scripts/record_token_sample.py"] + (["--kid", args.kid] if args.kid else [])
                   + (["--devices", str(args.devices)] if args.devices else []))
    kid_text = (
        f"Every token's header carries `\"kid\": \"{args.kid}\"` (as Approov's do after `approov secret\n"
        f"-setKeyID {args.kid}`); the `Authorization` user tokens carry it too and are signed with the\n"
        "user secret in `[identity]`. Configs:\n\n"
        "- `shieldtap.toml`: the secrets without a key id: the `kid` names no key, so the unnamed\n"
        "  secrets check the tokens; verdicts as in the table (and as in `samples/approov-tokens`).\n"
        f"- `shieldtap-named.toml`: the same secrets named `{args.kid}`: same verdicts.\n"
        f"- `shieldtap-wrong-named.toml`: the same secrets named `{wrong}`: every signed token (and\n"
        "  every user token) is `unknown-key`; missing, status values and `alg: none` keep theirs.\n\n"
        if args.kid else ""
    )
    (dest / "README.md").write_text(
        f"# {dest.name}\n\n"
        f"Made by `{cmd}` (see its docstring): Python `http.client` on keep-alive connections\n"
        "to the Python `http.server` API of `scripts/record_samples.py` on\n"
        f"127.0.0.1:{port}, captured with `tcpdump -i lo -s 0 -U -w capture.pcap 'tcp port {port}'`.\n"
        "Tokens were made by PyJWT (HS256) with the test secret in `shieldtap.toml`; `exp` is\n"
        "relative to the recording time, so shieldtap, judging on packet time, gives the same\n"
        "verdicts whenever the capture is replayed.\n\n"
        + kid_text
        + f"Replay with `shieldtap replay samples/{dest.name}/capture.pcap --config\n"
        f"samples/{dest.name}/shieldtap.toml --transactions-out -`; each request must get:\n\n"
        "| # | client | case | verdict | binding |\n|---|---|---|---|---|\n" + rows + "\n"
    )
    rs.log(f"wrote {dest} ({len(lines)} transactions)")


if __name__ == "__main__":
    main()
