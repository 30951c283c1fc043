#!/usr/bin/env python3
"""Writes the seed corpus of the `token` fuzz target (fuzz/fuzz_targets/token.rs).

Usage:
    pip install pyjwt cryptography
    python3 scripts/fuzz_token_seeds.py [--out fuzz/corpus/token]
    cd fuzz && cargo +nightly fuzz run token -- -max_total_time=600

Tokens are made by PyJWT with the secrets and private keys of tests/fixtures/tokens (the
same ones scripts/make_token_fixtures.py uses; the fuzz target's config holds the matching
secrets and reads tests/fixtures/tokens/jwks.json). Each seed is one request in the target's
input layout: byte 0 picks the packet time (0 = the tokens' reference time NOW), then the
request target on the first line and `Name: value` header lines.

Seeds: valid, forged, expired, not yet valid, `alg: none`, tampered claims, kid cases (a kid
naming a named secret, an unknown kid falling back to the unnamed secret, Approov's kid 0001,
a kid naming an RSA key on an HS256 token, a JWKS kid), every JWKS algorithm, binding
(matching, lifted, absent under `reject`), issuer/audience, status values, query parameter,
user tokens with and without kid, and malformed shapes (two segments, JWE, bad base64,
oversize, claims not an object, `crit`).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import re
from pathlib import Path

import jwt  # PyJWT
from cryptography.hazmat.primitives import serialization

ROOT = Path(__file__).resolve().parent.parent
KEYS = ROOT / "tests" / "fixtures" / "tokens" / "keys"
TARGET = ROOT / "fuzz" / "fuzz_targets" / "token.rs"
NOW = 1795000000


def secret(label: str) -> bytes:
    return hashlib.sha256(b"shieldtap-fixture-" + label.encode()).digest()


HS, K1, K2, USER, OTHER = (secret(x) for x in ["hs-1", "hs-kid-1", "hs-kid-2", "user", "hs-wrong"])


def key(name: str):
    return serialization.load_pem_private_key((KEYS / f"{name}.pem").read_bytes(), password=None)


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def b64url(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def tok(claims: dict, k, alg: str = "HS256", **headers) -> str:
    return jwt.encode(claims, k, algorithm=alg, headers=headers or None)


def raw(header: dict, claims, k: bytes) -> str:
    """Hand-made HS256 token: headers and claims PyJWT refuses to write."""
    si = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    return si + "." + b64url(hmac.new(k, si.encode(), hashlib.sha256).digest())


def claims(**extra) -> dict:
    c = {"exp": NOW + 300, "iat": NOW - 10, "did": "device-001", "ip": "198.51.100.7"}
    c.update(extra)
    return {k: v for k, v in c.items() if v is not None}


def pay(*values: str) -> str:
    return b64(hashlib.sha256("".join(values).encode()).digest())


def seed(time_byte: int, target: str, headers: list[tuple[str, str]]) -> bytes:
    text = target + "".join(f"\n{n}: {v}" for n, v in headers)
    return bytes([time_byte]) + text.encode()


def seeds() -> dict[str, bytes]:
    auth = "Bearer user-session-abc"
    ec256, ec384, rsa, pss, ed = (key(n) for n in ["es256", "es384", "rsa", "rsa_pss", "ed25519"])
    rsa_pem = rsa.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    mixed_claims = claims(iss="https://issuer.example", aud=["projects/2"], pay=pay("sess-1", auth))
    user = tok({"sub": "user-1234", "exp": NOW + 600}, USER)
    good = tok(claims(pay=pay(auth)), HS)
    h, _, s = good.split(".")
    out: dict[str, tuple[int, str, list[tuple[str, str]]]] = {
        "valid": (0, "/v1/items", [("Approov-Token", good), ("Authorization", auth)]),
        "valid-no-pay": (0, "/v1/items", [("Approov-Token", tok(claims(), HS))]),
        "expired": (3, "/v1/items", [("Approov-Token", good), ("Authorization", auth)]),
        "expired-past": (5, "/v1/items", [("Approov-Token", tok(claims(exp=NOW - 60), HS))]),
        "float-exp": (4, "/v1/items", [("Approov-Token", tok(claims(exp=NOW + 300.25), HS))]),
        "not-yet-valid": (1, "/v1/items", [("Approov-Token", tok(claims(nbf=NOW), HS))]),
        "forged": (0, "/v1/items", [("Approov-Token", tok(claims(), OTHER))]),
        "tampered": (0, "/", [("Approov-Token", f"{h}.{b64url(json.dumps(claims(did='x')).encode())}.{s}")]),
        "alg-none": (0, "/", [("Approov-Token", tok(claims(), None, "none"))]),
        "alg-hs512": (0, "/", [("Approov-Token", tok(claims(), HS, "HS512"))]),
        "lifted": (0, "/", [("Approov-Token", good), ("Authorization", "Bearer someone-else")]),
        "kid-named": (0, "/", [("Approov-Token", tok(claims(), K2, kid="k2"))]),
        "kid-wrong-secret": (0, "/", [("Approov-Token", tok(claims(), K1, kid="k2"))]),
        "kid-unknown-fallback": (0, "/", [("Approov-Token", tok(claims(), HS, kid="k9"))]),
        "kid-approov-0001": (0, "/", [("Approov-Token", tok(claims(), HS, typ="JWT", kid="0001"))]),
        "kid-unknown-forged": (0, "/", [("Approov-Token", tok(claims(), OTHER, kid="k9"))]),
        "kid-not-string": (0, "/", [("Approov-Token", raw({"alg": "HS256", "kid": 7}, claims(), HS))]),
        "kid-null": (0, "/", [("Approov-Token", raw({"alg": "HS256", "kid": None}, claims(), HS))]),
        "crit": (0, "/", [("Approov-Token", tok(claims(), HS, crit=["exp"]))]),
        "claims-array": (0, "/", [("Approov-Token", raw({"alg": "HS256"}, [1, 2], HS))]),
        "two-segments": (0, "/", [("Approov-Token", "eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjF9")]),
        "jwe": (0, "/", [("Approov-Token", ".".join(b64url(bytes([i]) * 20) for i in range(5)))]),
        "bad-base64": (0, "/", [("Approov-Token", "e30.!!!.abc")]),
        "oversize": (0, "/", [("Approov-Token", tok(claims(junk="x" * 9000), HS))]),
        "status-value": (0, "/", [("Approov-Token", "NO_NETWORK")]),
        "query-param": (0, "/ws?channel=1&approov-token=" + tok(claims(), HS), [("Upgrade", "websocket")]),
        "query-percent": (0, "/ws?approov-token=" + tok(claims(), HS).replace(".", "%2E"), []),
        "missing": (0, "/", [("Accept", "*/*")]),
        "user-valid": (0, "/", [("Authorization", "Bearer " + user)]),
        "user-kid-fallback": (0, "/", [("Authorization", "Bearer " + tok({"sub": "u", "exp": NOW + 60}, USER, kid="hs-1"))]),
        "user-kid-named": (0, "/", [("Authorization", "Bearer " + tok({"sub": "u", "exp": NOW + 60}, K2, kid="hs-2"))]),
        "user-forged": (0, "/", [("Authorization", "Bearer " + tok({"sub": "admin", "exp": NOW + 60}, OTHER))]),
        "keyset-es256": (0, "/", [("X-Keyset-Token", tok(claims(), ec256, "ES256", kid="es1"))]),
        "keyset-es256-no-kid": (0, "/", [("X-Keyset-Token", tok(claims(), ec256, "ES256"))]),
        "keyset-es384": (0, "/", [("X-Keyset-Token", tok(claims(), ec384, "ES384", kid="es384"))]),
        "keyset-rs256": (0, "/", [("X-Keyset-Token", tok(claims(), rsa, "RS256", kid="rs1"))]),
        "keyset-ps256": (0, "/", [("X-Keyset-Token", tok(claims(), pss, "PS256", kid="ps1"))]),
        "keyset-eddsa": (0, "/", [("X-Keyset-Token", tok(claims(), ed, "EdDSA", kid="ed1"))]),
        "keyset-unknown-kid": (0, "/", [("X-Keyset-Token", tok(claims(), ec256, "ES256", kid="es9"))]),
        "keyset-jku": (0, "/", [("X-Keyset-Token", tok(claims(), ec256, "ES256", kid="x", jku="https://a.example/j"))]),
        "keyset-es384-with-es256-kid": (0, "/", [("X-Keyset-Token", tok(claims(), ec384, "ES384", kid="es1"))]),
        "mixed-valid": (0, "/", [("X-Mixed-Token", "Bearer " + tok(mixed_claims, HS)),
                                 ("X-Session", "sess-1"), ("Authorization", auth)]),
        "mixed-kid-0001": (2, "/", [("X-Mixed-Token", "Bearer " + tok(mixed_claims, HS, kid="0001")),
                                    ("X-Session", "sess-1"), ("Authorization", auth)]),
        "mixed-rs256": (0, "/", [("X-Mixed-Token", "Bearer " + tok(mixed_claims, rsa, "RS256", kid="rs1")),
                                 ("X-Session", "sess-1"), ("Authorization", auth)]),
        "mixed-no-pay-rejected": (0, "/", [("X-Mixed-Token", "Bearer " + tok(claims(iss="https://issuer.example",
                                                                                  aud="projects/1"), HS))]),
        "mixed-wrong-audience": (0, "/", [("X-Mixed-Token", "Bearer " + tok(dict(mixed_claims, aud="x"), HS))]),
        "mixed-alg-confusion": (0, "/", [("X-Mixed-Token", "Bearer " + raw({"alg": "HS256", "kid": "rs1"},
                                                                            mixed_claims, rsa_pem))]),
        "all-families": (0, "/v1/items?approov-token=x.y.z", [
            ("Approov-Token", good), ("Authorization", auth), ("X-Keyset-Token", tok(claims(), ed, "EdDSA", kid="ed1")),
            ("X-Mixed-Token", "Bearer " + tok(mixed_claims, HS)), ("X-Session", "sess-1")]),
    }
    return {name: seed(t, target, hdrs) for name, (t, target, hdrs) in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "fuzz" / "corpus" / "token")
    args = ap.parse_args()
    # The fuzz target's config must hold the same secrets.
    target_text = TARGET.read_text()
    for label, s in [("hs-1", HS), ("hs-kid-1", K1), ("hs-kid-2", K2), ("user", USER)]:
        if b64(s) not in target_text:
            raise SystemExit(f"{TARGET}: the {label} secret ({b64(s)}) is not in the target's config")
    if not re.search(r"const NOW: f64 = 1_795_000_000\.0;", target_text):
        raise SystemExit(f"{TARGET}: NOW differs from this script's {NOW}")
    args.out.mkdir(parents=True, exist_ok=True)
    all_seeds = seeds()
    for name, data in all_seeds.items():
        (args.out / name).write_bytes(data)
    print(f"wrote {len(all_seeds)} seeds to {args.out}")


if __name__ == "__main__":
    main()
