#!/usr/bin/env python3
"""Writes tests/fixtures/password-hashes/vectors.jsonl: real password hashes in every usual
storage format, made by the libraries that store them, for the exposure scan's classifier.

Usage: pip install django argon2-cffi bcrypt passlib
       python3 scripts/make_password_hash_vectors.py

Each line is one JSON object:
  {"format": "...", "made_by": "...", "field": "...", "value": "..."}

`format` names the storage format; `made_by` the library (and version) that produced it.
`field` says how the test must find it:
  - "" (format vectors): the value alone is a password hash, whatever field it sits under;
    the test classifies it under a neutral name and inside a profile body.
  - a field name (field vectors): the value has no telling shape (hex digests, base64
    blobs, plaintext) and is a password hash only because of the field it sits under
    (`password_digest`, `encrypted_password`, `PasswordHash`, ...).

Sources:
  - Django's own hashers (django.contrib.auth.hashers.make_password) for every hasher Django
    ships: pbkdf2_sha256 (the default), pbkdf2_sha1, argon2, bcrypt_sha256, bcrypt, scrypt, md5.
  - argon2-cffi for PHC argon2id / argon2i / argon2d strings; bcrypt for $2a$ / $2b$ (and
    passlib for $2y$); passlib for PHC pbkdf2 ($pbkdf2$, $pbkdf2-sha256$, $pbkdf2-sha512$),
    $scrypt$, $bcrypt-sha256$, phpass ($P$ WordPress, $H$ phpBB), LDAP {SSHA}/{SSHA512}/
    {SHA}/{CRYPT}, Atlassian {PKCS5S2}, PostgreSQL md5, MySQL 4.1+ (`*HEX`), sha1_crypt.
  - The C library's crypt(3) (libxcrypt, through Python's crypt module) for $1$ md5-crypt,
    $5$ sha256-crypt, $6$ sha512-crypt, $y$ yescrypt, and $7$ scrypt.
  - Werkzeug's (Flask) formats pbkdf2:sha256:N$salt$hex and scrypt:N:r:p$salt$hex and
    PostgreSQL's SCRAM-SHA-256 verifier are built here with hashlib to their published
    layout (werkzeug.security.generate_password_hash; PostgreSQL's scram-common.c), as is
    ASP.NET Core Identity's v3 blob (base64 of 0x01, PRF, iterations, salt length, salt,
    subkey), found by field name only.

Passwords are fixed test words; salts are random, so each run writes new values.
"""

import base64
import hashlib
import hmac
import json
import os
import struct
import sys
import warnings

warnings.filterwarnings("ignore")

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures",
                   "password-hashes", "vectors.jsonl")
PASSWORD = "correct horse battery staple"


def version(mod):
    try:
        from importlib.metadata import version as v
        return v(mod)
    except Exception:  # noqa: BLE001
        return "?"


def django_vectors(out):
    from django.conf import settings
    settings.configure(PASSWORD_HASHERS=[
        "django.contrib.auth.hashers.PBKDF2PasswordHasher",
        "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
        "django.contrib.auth.hashers.Argon2PasswordHasher",
        "django.contrib.auth.hashers.BCryptSHA256PasswordHasher",
        "django.contrib.auth.hashers.BCryptPasswordHasher",
        "django.contrib.auth.hashers.ScryptPasswordHasher",
        "django.contrib.auth.hashers.MD5PasswordHasher",
    ])
    from django.contrib.auth.hashers import make_password
    made = f"django {version('django')}"
    for hasher in ["pbkdf2_sha256", "pbkdf2_sha1", "argon2", "bcrypt_sha256", "bcrypt",
                   "scrypt", "md5"]:
        out.append({"format": f"django {hasher}", "made_by": made, "field": "",
                    "value": make_password(PASSWORD, hasher=hasher)})


def argon2_vectors(out):
    from argon2 import PasswordHasher, Type
    made = f"argon2-cffi {version('argon2-cffi')}"
    for t, name in [(Type.ID, "argon2id"), (Type.I, "argon2i"), (Type.D, "argon2d")]:
        out.append({"format": f"PHC {name}", "made_by": made, "field": "",
                    "value": PasswordHasher(type=t).hash(PASSWORD)})


def bcrypt_vectors(out):
    import bcrypt
    made = f"bcrypt {version('bcrypt')}"
    for prefix in [b"2a", b"2b"]:
        h = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10, prefix=prefix))
        out.append({"format": f"bcrypt ${prefix.decode()}$", "made_by": made, "field": "",
                    "value": h.decode()})


def passlib_vectors(out):
    from passlib import hash as ph
    # passlib 1.7.4 cannot drive bcrypt >= 4.1 (it probes with a >72-byte password):
    # its bcrypt formats use the C library's crypt(3) instead (libxcrypt has $2a/b/y$).
    ph.bcrypt.set_backend("os_crypt")
    made = f"passlib {version('passlib')}"
    for fmt, h in [
        ("bcrypt $2y$", ph.bcrypt.using(ident="2y", rounds=10)),
        ("PHC pbkdf2 (sha1)", ph.pbkdf2_sha1),
        ("PHC pbkdf2-sha256", ph.pbkdf2_sha256),
        ("PHC pbkdf2-sha512", ph.pbkdf2_sha512),
        ("PHC scrypt", ph.scrypt),
        ("passlib bcrypt-sha256", ph.bcrypt_sha256),
        ("phpass $P$ (WordPress)", ph.phpass.using(ident="P")),
        ("phpass $H$ (phpBB)", ph.phpass.using(ident="H")),
        ("sha1_crypt $sha1$", ph.sha1_crypt),
        ("LDAP {SSHA}", ph.ldap_salted_sha1),
        ("LDAP {SSHA512}", ph.ldap_salted_sha512),
        ("LDAP {SHA}", ph.ldap_sha1),
        ("LDAP {CRYPT}", ph.ldap_sha512_crypt),
        ("Atlassian {PKCS5S2}", ph.atlassian_pbkdf2_sha1),
        ("MySQL 4.1+", ph.mysql41),
    ]:
        out.append({"format": fmt, "made_by": made, "field": "", "value": h.hash(PASSWORD)})
    out.append({"format": "PostgreSQL md5", "made_by": made, "field": "",
                "value": ph.postgres_md5.hash(PASSWORD, user="alice")})


def crypt_vectors(out):
    import crypt
    made = "libxcrypt crypt(3) via Python crypt"
    for fmt, setting in [
        ("crypt $1$ md5-crypt", "$1$"),
        ("crypt $5$ sha256-crypt", "$5$"),
        ("crypt $6$ sha512-crypt", "$6$"),
        ("crypt $y$ yescrypt", "$y$"),
        ("crypt $7$ scrypt", "$7$"),
    ]:
        if setting in ("$1$", "$5$", "$6$"):
            method = {"$1$": crypt.METHOD_MD5, "$5$": crypt.METHOD_SHA256,
                      "$6$": crypt.METHOD_SHA512}[setting]
            salt = crypt.mksalt(method)
        else:
            # libxcrypt's own setting generator (crypt_gensalt) is not exposed by Python's
            # module; these are the settings it makes: prefix, cost, 16 bytes of salt.
            b64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
            salt_chars = "".join(b64[b % 64] for b in os.urandom(16))
            salt = {"$y$": f"$y$j9T${salt_chars}",
                    "$7$": f"$7$CU..../....{salt_chars}"}[setting]
        h = crypt.crypt(PASSWORD, salt)
        if not h or not h.startswith(setting):
            sys.exit(f"crypt(3) cannot make {fmt}: got {h!r}")
        out.append({"format": fmt, "made_by": made, "field": "", "value": h})


def built_here(out):
    salt = base64.b64encode(os.urandom(12)).decode().rstrip("=").replace("+", "x").replace("/", "y")
    dk = hashlib.pbkdf2_hmac("sha256", PASSWORD.encode(), salt.encode(), 600000)
    out.append({"format": "Werkzeug pbkdf2:sha256", "made_by": "hashlib, werkzeug layout",
                "field": "", "value": f"pbkdf2:sha256:600000${salt}${dk.hex()}"})
    dk = hashlib.scrypt(PASSWORD.encode(), salt=salt.encode(), n=32768, r=8, p=1,
                        maxmem=64 * 1024 * 1024)
    out.append({"format": "Werkzeug scrypt", "made_by": "hashlib, werkzeug layout",
                "field": "", "value": f"scrypt:32768:8:1${salt}${dk.hex()}"})
    # PostgreSQL SCRAM-SHA-256 verifier (RFC 5802 / scram-common.c).
    s = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", PASSWORD.encode(), s, 4096)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored = hashlib.sha256(client_key).digest()
    server = hmac.new(salted, b"Server Key", "sha256").digest()
    b = lambda x: base64.b64encode(x).decode()  # noqa: E731
    out.append({"format": "PostgreSQL SCRAM-SHA-256", "made_by": "hashlib, PostgreSQL layout",
                "field": "", "value": f"SCRAM-SHA-256$4096:{b(s)}${b(stored)}:{b(server)}"})
    # Field vectors: no telling shape, named by the field they sit under.
    s = os.urandom(16)
    sub = hashlib.pbkdf2_hmac("sha512", PASSWORD.encode(), s, 100000, 32)
    blob = b"\x01" + struct.pack(">III", 2, 100000, 16) + s + sub
    out.append({"format": "ASP.NET Core Identity v3", "made_by": "hashlib, ASP.NET layout",
                "field": "PasswordHash", "value": b(blob)})
    out.append({"format": "hex sha256", "made_by": "hashlib", "field": "password_digest",
                "value": hashlib.sha256(PASSWORD.encode()).hexdigest()})
    out.append({"format": "hex sha1", "made_by": "hashlib", "field": "passwd",
                "value": hashlib.sha1(PASSWORD.encode()).hexdigest()})
    out.append({"format": "base64 sha512", "made_by": "hashlib", "field": "secret_hash",
                "value": b(hashlib.sha512(PASSWORD.encode()).digest())})
    out.append({"format": "plaintext", "made_by": "none", "field": "password",
                "value": "hunter2"})
    out.append({"format": "plaintext", "made_by": "none", "field": "passphrase",
                "value": PASSWORD})
    out.append({"format": "plaintext", "made_by": "none", "field": "pwd", "value": "Tr0ub4dor&3"})


def main():
    out = []
    django_vectors(out)
    argon2_vectors(out)
    bcrypt_vectors(out)
    passlib_vectors(out)
    crypt_vectors(out)
    built_here(out)
    # Rails (Devise encrypted_password, has_secure_password password_digest) store bcrypt.
    import bcrypt
    out.append({"format": "bcrypt under Devise's field", "made_by": f"bcrypt {version('bcrypt')}",
                "field": "encrypted_password",
                "value": bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()})
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        for v in out:
            f.write(json.dumps(v) + "\n")
    print(f"{len(out)} vectors -> {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
