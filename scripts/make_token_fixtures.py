#!/usr/bin/env python3
"""Writes the token-stage fixtures in tests/fixtures/tokens/ with an independent JWT stack.

Tokens are made by PyJWT on `cryptography` (and, for the algorithm-confusion cases, by the
standard library's `hmac`), never by the Rust code under test. The output is committed so CI
needs neither package; rerun this after changing a case:

    pip install pyjwt cryptography
    python3 scripts/make_token_fixtures.py

Keys live in tests/fixtures/tokens/keys/ and are reused when present, so a rerun only
changes the cases that changed. They are test keys, used nowhere else.

Files written:
  keys/*.pem            private keys (test only) for regenerating tokens
  jwks.json             public keys: ES256, ES384, RS256..RS512, PS256, EdDSA
  firebase_jwks.json    an App Check style RS256 key set
  rotation_a.json / rotation_b.json   key sets for the HTTPS refresh test
  secret.b64            the HS256 secret, read through `secret_file`
  cases.json            one entry per case: config (TOML), request, expected verdict
  rotation.json         tokens for the HTTPS refresh test
"""

import base64
import hashlib
import hmac
import json
import os
import sys

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

NOW = 1795000000
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "tokens")
REL = "tests/fixtures/tokens"  # paths in configs are relative to the crate root (cargo test cwd)
KEYS = os.path.join(OUT, "keys")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def secret(label: str) -> bytes:
    return hashlib.sha256(b"shieldtap-fixture-" + label.encode()).digest()


HS = secret("hs-1")
HS_K1 = secret("hs-kid-1")
HS_K2 = secret("hs-kid-2")
HS_OTHER = secret("hs-wrong")
HS_USER = secret("user")
# A secret whose base64 uses `+` and `/`, given in the url alphabet without padding.
HS_URL = bytes.fromhex("fbff" * 16) + b"\xfe"


def load_or_make(name, make):
    path = os.path.join(KEYS, name + ".pem")
    if os.path.exists(path):
        with open(path, "rb") as f:
            return serialization.load_pem_private_key(f.read(), password=None)
    key = make()
    os.makedirs(KEYS, exist_ok=True)
    with open(path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return key


def rsa2048():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


EC256 = load_or_make("es256", lambda: ec.generate_private_key(ec.SECP256R1()))
EC256_OTHER = load_or_make("es256_other", lambda: ec.generate_private_key(ec.SECP256R1()))
EC384 = load_or_make("es384", lambda: ec.generate_private_key(ec.SECP384R1()))
RSA = load_or_make("rsa", rsa2048)
RSA_PSS = load_or_make("rsa_pss", rsa2048)
ED = load_or_make("ed25519", ed25519.Ed25519PrivateKey.generate)
FIREBASE = load_or_make("firebase", rsa2048)
ROT_A = load_or_make("rotation_a", lambda: ec.generate_private_key(ec.SECP256R1()))
ROT_B = load_or_make("rotation_b", lambda: ec.generate_private_key(ec.SECP256R1()))


def jwk(key, kid, alg):
    """Public JWK through PyJWT's own algorithm classes."""
    algo = jwt.get_algorithm_by_name(alg)
    d = json.loads(algo.to_jwk(key.public_key()))
    d.update({"kid": kid, "alg": alg, "use": "sig"})
    return d


def write_json(name, value):
    with open(os.path.join(OUT, name), "w") as f:
        json.dump(value, f, indent=2, sort_keys=True)
        f.write("\n")


def tok(claims, key, alg="HS256", **headers):
    return jwt.encode(claims, key, algorithm=alg, headers=headers or None)


def hmac_token(header: dict, claims: dict, key: bytes, digestmod=hashlib.sha256) -> str:
    """Hand-made HS token (PyJWT refuses PEM keys as HMAC secrets, which is the attack)."""
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    sig = hmac.new(key, signing_input.encode(), digestmod).digest()
    return signing_input + "." + b64url(sig)


def claims(**extra):
    c = {"exp": NOW + 300, "iat": NOW - 10, "did": "device-001", "ip": "198.51.100.7"}
    c.update(extra)
    return {k: v for k, v in c.items() if v is not None}


HS_CONFIG = f'[[attestation]]\nname = "approov"\nsecret_base64 = "{b64(HS)}"\n'
JWKS_PATH = f"{REL}/jwks.json"
ASYM_CONFIG = (f'[[attestation]]\nname = "approov-keyset"\nalgorithms = ["ES256", "ES384", "RS256", "RS384", '
               f'"RS512", "PS256", "EdDSA"]\njwks_file = "{JWKS_PATH}"\n')
FIREBASE_CONFIG = (
    '[[attestation]]\nname = "firebase"\nheader = "X-Firebase-AppCheck"\nalgorithms = ["RS256"]\n'
    f'jwks_file = "{REL}/firebase_jwks.json"\nissuer = "https://firebaseappcheck.googleapis.com/123456789"\n'
    'audience = "projects/123456789"\ndevice_claim = "sub"\n'
)

cases = []


def case(name, config, headers, verdict, *, family="approov", device=None, binding="not-configured",
         status_value=None, target="/v1/items", now=NOW, user=None, verify=None, note=""):
    cases.append({
        "name": name,
        "note": note,
        "config": config,
        "target": target,
        "headers": headers,
        "now": now,
        "expect": {"family": family, "verdict": verdict, "device": device, "binding": binding,
                   "status_value": status_value},
        "user": user,
        "verify": verify,
    })


def hs_case(name, token, verdict, config=HS_CONFIG, device="device-001", extra_headers=(), **kw):
    headers = [["Approov-Token", token]] + [list(h) for h in extra_headers]
    # The device is reported whenever the claims are authentic (or no key exists to check
    # them): also for expired and binding failures, never for forged or unreadable tokens.
    if verdict in ("missing", "malformed", "bad-signature", "alg-not-allowed", "unknown-key", "status-value"):
        device = None
    verify = {"token": token, "headers": [list(h) for h in extra_headers], "verdict": verdict}
    case(name, config, headers, verdict, device=device, verify=verify, **kw)


def main():
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "secret.b64"), "w") as f:
        f.write(b64(HS) + "\n")

    write_json("jwks.json", {"keys": [
        jwk(EC256, "es1", "ES256"), jwk(EC384, "es384", "ES384"), jwk(RSA, "rs1", "RS256"),
        jwk(RSA, "rs384", "RS384"), jwk(RSA, "rs512", "RS512"), jwk(RSA_PSS, "ps1", "PS256"),
        jwk(ED, "ed1", "EdDSA"),
    ]})
    write_json("firebase_jwks.json", {"keys": [jwk(FIREBASE, "fb1", "RS256")]})
    write_json("rotation_a.json", {"keys": [jwk(ROT_A, "rot-a", "ES256")]})
    write_json("rotation_b.json", {"keys": [jwk(ROT_B, "rot-b", "ES256")]})
    write_json("rotation.json", {
        "now": NOW,
        "token_a": tok(claims(did="rot-device-a"), ROT_A, "ES256", kid="rot-a"),
        "token_b": tok(claims(did="rot-device-b"), ROT_B, "ES256", kid="rot-b"),
    })

    # valid
    hs_case("hs256_valid", tok(claims(), HS), "valid")
    hs_case("hs256_float_exp", tok(claims(exp=NOW + 30.5), HS), "valid", note="float NumericDate")
    hs_case("hs256_float_exp_passed", tok(claims(exp=NOW - 0.25), HS), "expired")
    hs_case("hs256_secret_base64url_unpadded", tok(claims(), HS_URL), "valid",
            config=f'[[attestation]]\nsecret_base64 = "{b64url(HS_URL)}"\n')
    hs_case("hs256_secret_file", tok(claims(), HS), "valid",
            config=f'[[attestation]]\nsecret_file = "{REL}/secret.b64"\n')
    kid_config = (f'[[attestation]]\nsecret_base64 = "{b64(HS)}"\n'
                  f'secrets = {{ k1 = "{b64(HS_K1)}", k2 = "{b64url(HS_K2)}" }}\n')
    hs_case("hs256_kid_selects_secret", tok(claims(), HS_K2, kid="k2"), "valid", config=kid_config)
    hs_case("hs256_no_kid_uses_default_secret", tok(claims(), HS), "valid", config=kid_config)
    hs_case("hs256_kid_with_wrong_secret", tok(claims(), HS_K1, kid="k2"), "bad-signature", config=kid_config)
    hs_case("hs256_unknown_kid_falls_back_to_unnamed_secret", tok(claims(), HS, kid="k9"), "valid",
            config=kid_config, note="a kid naming no configured key is checked with the secret that has no id")
    hs_case("hs256_unknown_kid_forged_for_unnamed_secret", tok(claims(), HS_OTHER, kid="k9"), "bad-signature",
            config=kid_config)
    hs_case("hs256_approov_key_id_uses_account_secret", tok(claims(), HS, typ="JWT", kid="0001"), "valid",
            note="`approov secret -setKeyID 0001` puts kid 0001 in every token; the config has the one secret")
    named_only = (f'[[attestation]]\nsecret_base64 = "{b64(HS_K1)}"\nsecret_kid = "k1"\n'
                  f'secrets = {{ k2 = "{b64(HS_K2)}" }}\n')
    hs_case("hs256_named_secrets_kid_selects_secret_kid", tok(claims(), HS_K1, kid="k1"), "valid", config=named_only)
    hs_case("hs256_named_secrets_kid_selects_table_entry", tok(claims(), HS_K2, kid="k2"), "valid",
            config=named_only)
    hs_case("hs256_named_secrets_wrong_one_for_kid", tok(claims(), HS_K1, kid="k2"), "bad-signature",
            config=named_only)
    hs_case("hs256_named_secrets_unknown_kid", tok(claims(), HS_K1, kid="k9"), "unknown-key", config=named_only,
            note="every secret is named and none is k9: no secret is meant")

    # missing / malformed
    case("missing_header", HS_CONFIG, [["Authorization", "Bearer x"]], "missing")
    case("missing_empty_header", HS_CONFIG, [["Approov-Token", "  "]], "missing")
    hs_case("malformed_two_segments", "eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjF9", "malformed")
    hs_case("malformed_garbage", "not a token at all", "malformed")
    hs_case("malformed_unknown_status_string", "SOMETHING_ELSE", "malformed")
    filler = lambda n: (secret("jwe") * 8)[:n]  # noqa: E731  fixed bytes keep reruns stable
    jwe = ".".join([b64url(json.dumps({"alg": "RSA-OAEP", "enc": "A256GCM"}).encode()),
                    b64url(filler(256)), b64url(filler(12)), b64url(filler(40)), b64url(filler(16))])
    hs_case("malformed_jwe_five_segments", jwe, "malformed")
    hs_case("malformed_no_exp", tok(claims(exp=None), HS), "malformed", note="exp is required")
    hs_case("malformed_exp_string", tok(claims(exp=str(NOW + 300)), HS), "malformed")
    hs_case("malformed_crit_header", tok(claims(), HS, crit=["exp"]), "malformed", note="unknown crit")
    hs_case("malformed_oversize", tok(claims(junk="x" * 9000), HS), "malformed", note="over max_token_bytes")
    hs_case("malformed_claims_not_object", hmac_token({"alg": "HS256"}, [1, 2], HS), "malformed")

    # signatures and algorithms
    hs_case("bad_signature_other_secret", tok(claims(), HS_OTHER), "bad-signature")
    good = tok(claims(), HS)
    h, _, s = good.split(".")
    forged_payload = b64url(json.dumps(claims(did="device-666")).encode())
    hs_case("bad_signature_tampered_claims", f"{h}.{forged_payload}.{s}", "bad-signature")
    hs_case("alg_not_allowed_hs512", tok(claims(), HS, "HS512"), "alg-not-allowed")
    hs_case("alg_none", tok(claims(), None, "none"), "alg-not-allowed")
    hs_case("alg_none_with_signature", hmac_token({"alg": "none"}, claims(), HS), "alg-not-allowed")
    rsa_pem = RSA.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    confusion = hmac_token({"alg": "HS256", "typ": "JWT", "kid": "rs1"}, claims(), rsa_pem)
    case("alg_confusion_rsa_key_as_hmac_secret", ASYM_CONFIG, [["Approov-Token", confusion]], "alg-not-allowed",
         family="approov-keyset", verify={"token": confusion, "headers": [], "verdict": "alg-not-allowed"},
         note="HS256 signed with the RS256 public key PEM; HS256 is not allowed for a JWKS family")
    mixed = (f'[[attestation]]\nname = "mixed"\nalgorithms = ["HS256", "RS256"]\nsecret_base64 = "{b64(HS)}"\n'
             f'jwks_file = "{JWKS_PATH}"\n')
    case("alg_confusion_kid_names_rsa_key", mixed, [["Approov-Token", confusion]], "alg-not-allowed",
         family="mixed", note="HS256 allowed, but the kid names an RSA key, which never serves HMAC")
    case("alg_confusion_no_kid_mixed_family", mixed,
         [["Approov-Token", hmac_token({"alg": "HS256"}, claims(), rsa_pem)]], "bad-signature", family="mixed",
         note="without kid only the HMAC secret is tried; the PEM-keyed MAC does not match it")
    rs_on_hs = tok(claims(), RSA, "RS256", kid="rs1")
    hs_case("alg_not_allowed_rs256_on_hs_family", rs_on_hs, "alg-not-allowed")

    # validity window
    hs_case("expired", tok(claims(exp=NOW - 1), HS), "expired")
    hs_case("expired_at_exp", tok(claims(exp=NOW), HS), "expired", note="exp is exclusive (RFC 7519)")
    hs_case("expired_within_leeway", tok(claims(exp=NOW - 30), HS), "valid",
            config=HS_CONFIG + "leeway_secs = 60\n")
    hs_case("not_yet_valid", tok(claims(nbf=NOW + 100), HS), "not-yet-valid")
    hs_case("nbf_passed", tok(claims(nbf=NOW - 100), HS), "valid")

    # binding
    auth = "Bearer user-session-token-abc"
    bind_cfg = HS_CONFIG + 'binding_headers = ["Authorization"]\n'
    pay = hashlib.sha256(auth.encode()).digest()
    hs_case("binding_valid", tok(claims(pay=b64(pay)), HS), "valid", config=bind_cfg, binding="checked",
            extra_headers=[("Authorization", auth)])
    hs_case("binding_valid_url_alphabet_unpadded", tok(claims(pay=b64url(pay)), HS), "valid", config=bind_cfg,
            binding="checked", extra_headers=[("Authorization", auth)])
    two_cfg = HS_CONFIG + 'binding_headers = ["Authorization", "X-Device-Session"]\n'
    pay2 = hashlib.sha256((auth + "sess-77").encode()).digest()
    hs_case("binding_two_headers_concatenated", tok(claims(pay=b64(pay2)), HS), "valid", config=two_cfg,
            binding="checked", extra_headers=[("Authorization", auth), ("X-Device-Session", "sess-77")])
    hs_case("binding_mismatch", tok(claims(pay=b64(pay)), HS), "binding-mismatch", config=bind_cfg,
            binding="checked", extra_headers=[("Authorization", "Bearer someone-else")])
    hs_case("binding_mismatch_header_absent", tok(claims(pay=b64(pay)), HS), "binding-mismatch", config=bind_cfg,
            binding="checked")
    hs_case("binding_mismatch_without_bearer_prefix",
            tok(claims(pay=b64(hashlib.sha256(b"user-session-token-abc").digest())), HS), "binding-mismatch",
            config=bind_cfg, binding="checked", extra_headers=[("Authorization", auth)],
            note="the whole header value, `Bearer ` included, is hashed")
    hs_case("binding_absent_accepted", tok(claims(), HS), "valid", config=bind_cfg + 'missing_binding = "accept"\n',
            binding="absent", extra_headers=[("Authorization", auth)])
    hs_case("binding_absent_rejected", tok(claims(), HS), "binding-absent",
            config=bind_cfg + 'missing_binding = "reject"\n', binding="absent",
            extra_headers=[("Authorization", auth)])
    hs_case("binding_expired_unchecked", tok(claims(exp=NOW - 5, pay=b64(pay)), HS), "expired", config=bind_cfg,
            binding="unchecked", extra_headers=[("Authorization", auth)])

    # SDK status values
    for status in ["NO_NETWORK", "MITM_DETECTED", "NO_APPROOV_SERVICE"]:
        case(f"status_value_{status.lower()}", HS_CONFIG, [["Approov-Token", status]], "status-value",
             status_value=status, verify={"token": status, "headers": [], "verdict": "status-value"})

    # no key configured: decoded, never valid
    hs_case("unverified_default_config", tok(claims(), HS_OTHER), "unverified", config="")
    hs_case("unverified_but_expired", tok(claims(exp=NOW - 60), HS_OTHER), "expired", config="")
    hs_case("unverified_alg_none_still_refused", tok(claims(), None, "none"), "alg-not-allowed", config="")

    # asymmetric keys from a JWKS file
    for name, key, alg, kid in [("es256", EC256, "ES256", "es1"), ("es384", EC384, "ES384", "es384"),
                                ("rs256", RSA, "RS256", "rs1"), ("rs384", RSA, "RS384", "rs384"),
                                ("rs512", RSA, "RS512", "rs512"), ("ps256", RSA_PSS, "PS256", "ps1"),
                                ("eddsa", ED, "EdDSA", "ed1")]:
        t = tok(claims(did=f"dev-{name}"), key, alg, kid=kid)
        case(f"{name}_valid", ASYM_CONFIG, [["Approov-Token", t]], "valid", family="approov-keyset",
             device=f"dev-{name}", verify={"token": t, "headers": [], "verdict": "valid"})
    t = tok(claims(), EC256, "ES256")
    case("es256_without_kid_tries_matching_keys", ASYM_CONFIG, [["Approov-Token", t]], "valid",
         family="approov-keyset", device="device-001")
    case("es256_bad_signature", ASYM_CONFIG, [["Approov-Token", tok(claims(), EC256_OTHER, "ES256", kid="es1")]],
         "bad-signature", family="approov-keyset")
    case("es256_unknown_kid", ASYM_CONFIG, [["Approov-Token", tok(claims(), EC256, "ES256", kid="es9")]],
         "unknown-key", family="approov-keyset")
    case("es256_jku_ignored", ASYM_CONFIG,
         [["Approov-Token", tok(claims(), EC256_OTHER, "ES256", kid="attacker",
                                jku="https://attacker.example/jwks.json", x5u="https://attacker.example/c.pem")]],
         "unknown-key", family="approov-keyset", note="keys are never fetched from URLs a token names")
    case("es384_token_with_es256_key_kid", ASYM_CONFIG,
         [["Approov-Token", tok(claims(), EC384, "ES384", kid="es1")]], "alg-not-allowed", family="approov-keyset",
         note="the P-256 key serves ES256 only")
    case("ps256_key_refuses_rs256", ASYM_CONFIG, [["Approov-Token", tok(claims(), RSA_PSS, "RS256", kid="ps1")]],
         "alg-not-allowed", family="approov-keyset", note="the JWK's alg narrows the key's allow-list")

    # Firebase App Check style
    fb_claims = {"iss": "https://firebaseappcheck.googleapis.com/123456789", "sub": "1:123456789:android:abcdef",
                 "aud": ["projects/123456789", "projects/my-project"], "exp": NOW + 3600, "iat": NOW - 60}
    fb = tok(fb_claims, FIREBASE, "RS256", kid="fb1", typ="JWT")
    case("firebase_valid", FIREBASE_CONFIG, [["X-Firebase-AppCheck", fb]], "valid", family="firebase",
         device="1:123456789:android:abcdef", verify={"token": fb, "headers": [], "verdict": "valid"})
    case("firebase_wrong_audience", FIREBASE_CONFIG,
         [["X-Firebase-AppCheck", tok(dict(fb_claims, aud=["projects/999"]), FIREBASE, "RS256", kid="fb1")]],
         "bad-signature", family="firebase", note="iss/aud mismatches are filed under bad-signature")
    case("firebase_wrong_issuer", FIREBASE_CONFIG,
         [["X-Firebase-AppCheck", tok(dict(fb_claims, iss="https://evil.example"), FIREBASE, "RS256", kid="fb1")]],
         "bad-signature", family="firebase")
    case("multi_family_second_present_decides", HS_CONFIG + FIREBASE_CONFIG, [["X-Firebase-AppCheck", fb]],
         "valid", family="firebase", device="1:123456789:android:abcdef")
    case("multi_family_none_present_first_missing", HS_CONFIG + FIREBASE_CONFIG, [], "missing")

    # sources
    bearer_cfg = (f'[[attestation]]\nname = "bearer"\nheader = "Authorization"\nprefix = "Bearer "\n'
                  f'secret_base64 = "{b64(HS)}"\n')
    case("authorization_bearer_prefix", bearer_cfg, [["Authorization", "Bearer " + tok(claims(), HS)]], "valid",
         family="bearer", device="device-001")
    case("authorization_wrong_scheme", bearer_cfg, [["Authorization", "Basic dXNlcjpwYXNz"]], "malformed",
         family="bearer")
    case("x_approov_token_header", HS_CONFIG.replace('name = "approov"\n', 'name = "approov"\nheader = "X-Approov-Token"\n'),
         [["x-approov-token", tok(claims(), HS)]], "valid", device="device-001")
    ws_cfg = HS_CONFIG + 'query_param = "approov-token"\n'
    case("websocket_query_param", ws_cfg, [["Upgrade", "websocket"]], "valid", device="device-001",
         target="/ws/feed?channel=1&approov-token=" + tok(claims(), HS))

    # identity
    user_tok = tok({"sub": "user-1234", "exp": NOW + 600}, HS_USER)
    id_cfg = HS_CONFIG + f'[identity]\nuser_secret_base64 = "{b64(HS_USER)}"\n'
    att = tok(claims(), HS)
    case("identity_verified", id_cfg, [["Approov-Token", att], ["Authorization", "Bearer " + user_tok]], "valid",
         device="device-001", user={"id": "user-1234", "verified": True, "verdict": "valid"})
    case("identity_unverified_without_key", HS_CONFIG,
         [["Approov-Token", att], ["Authorization", "Bearer " + user_tok]], "valid", device="device-001",
         user={"id": "user-1234", "verified": False, "verdict": "unverified"})
    case("identity_bad_signature", id_cfg,
         [["Approov-Token", att], ["Authorization", "Bearer " + tok({"sub": "admin", "exp": NOW + 600}, HS_OTHER)]],
         "valid", device="device-001", user={"id": "admin", "verified": False, "verdict": "bad-signature"})
    case("identity_custom_claim", HS_CONFIG + '[identity]\nuser_claim = "uid"\n',
         [["Authorization", "Bearer " + tok({"uid": 991, "sub": "x", "exp": NOW + 600}, HS_USER)]], "missing",
         user={"id": "991", "verified": False, "verdict": "unverified"})
    user_kid_cfg = HS_CONFIG + f'[identity]\nuser_secret_base64 = "{b64(HS_USER)}"\n'
    case("identity_kid_falls_back_to_unnamed_secret", user_kid_cfg,
         [["Authorization", "Bearer " + tok({"sub": "user-77", "exp": NOW + 600}, HS_USER, kid="hs-1")]], "missing",
         user={"id": "user-77", "verified": True, "verdict": "valid"})
    user_named_cfg = HS_CONFIG + (f'[identity]\nuser_secret_base64 = "{b64(HS_USER)}"\nuser_secret_kid = "hs-1"\n'
                                  f'user_secrets = {{ hs-2 = "{b64(HS_K2)}" }}\n')
    case("identity_named_secrets_kid_selects_table_entry", user_named_cfg,
         [["Authorization", "Bearer " + tok({"sub": "user-78", "exp": NOW + 600}, HS_K2, kid="hs-2")]], "missing",
         user={"id": "user-78", "verified": True, "verdict": "valid"})
    case("identity_named_secrets_unknown_kid", user_named_cfg,
         [["Authorization", "Bearer " + tok({"sub": "user-79", "exp": NOW + 600}, HS_USER, kid="hs-9")]], "missing",
         user={"id": "user-79", "verified": False, "verdict": "unknown-key"})
    case("identity_opaque_bearer", id_cfg, [["Authorization", "Bearer 8f14e45fceea167a5a36dedd4bea2543"]],
         "missing", user=None)

    names = [c["name"] for c in cases]
    assert len(names) == len(set(names)), "duplicate case names"
    write_json("cases.json", {"now": NOW, "generator": f"PyJWT {jwt.__version__}", "cases": cases})
    print(f"wrote {len(cases)} cases to {os.path.relpath(OUT, ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
