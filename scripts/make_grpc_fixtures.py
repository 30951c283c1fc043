#!/usr/bin/python3
"""Writes the gRPC fixtures in tests/fixtures/grpc/ with the reference protobuf stack.

Messages are built and encoded by Google's Python protobuf runtime from the committed
tests/fixtures/grpc/shop.proto (compiled by protoc), never by the Rust code under test; the
descriptor set is protoc's own. gRPC framing (1 flag byte, 4-byte big-endian length, then the
payload, gzip- or zlib-compressed when the flag is 1) is done here as grpcio does it, with the
standard library's gzip and zlib. The output is committed so CI needs none of these; rerun
after changing a case:

    apt-get install -y --no-install-recommends python3-protobuf protobuf-compiler
    /usr/bin/python3 scripts/make_grpc_fixtures.py

Files written (all in tests/fixtures/grpc/):
  shop.protoset      `protoc --include_imports --descriptor_set_out` of shop.proto
  <case>.bin         one encoded message per case (profile, orders, login, login_reply, ...)
  <case>.grpc        length-prefixed gRPC bodies (uncompressed stream, gzip, deflate, a bomb)
  expected.json      what each case holds, as this script encoded it:
                       messages[]: {name, type, file, named: [...], numbers: [...]}, where
                       `named` lists every scalar by field-name path (`address.city`,
                       `orders[].id`, map entries as `attributes[].key` / `.value`) with its
                       schema type, and `numbers` lists the same scalars as a schema-less
                       reader sees them on the wire: field-number paths (`5.2`), varints as
                       unsigned wire values, packed repeated fields as one length-delimited
                       value (hex);
                       framed[]: {file, encoding, payloads: [case files], compressed}
"""

import gzip
import json
import os
import struct
import subprocess
import sys
import tempfile
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "grpc")
PROTO = "shop.proto"

MASK64 = (1 << 64) - 1


def compile_proto(tmp):
    subprocess.run(
        [
            "protoc",
            f"--proto_path={OUT}",
            f"--python_out={tmp}",
            "--include_imports",
            f"--descriptor_set_out={os.path.join(OUT, 'shop.protoset')}",
            PROTO,
        ],
        check=True,
    )
    sys.path.insert(0, tmp)
    import shop_pb2  # noqa: E402  (generated above)

    return shop_pb2


def varint_bytes(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def read_varint(b, i):
    shift = 0
    n = 0
    while True:
        c = b[i]
        i += 1
        n |= (c & 0x7F) << shift
        shift += 7
        if c < 0x80:
            return n, i


def typed(fd, v):
    """A scalar as the schema types it: (kind, JSON value)."""
    from google.protobuf.descriptor import FieldDescriptor as F

    t = fd.type
    if t == F.TYPE_STRING:
        return "str", v
    if t == F.TYPE_BYTES:
        return "bytes", v.hex()
    if t == F.TYPE_BOOL:
        return "bool", v
    if t in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        return "float", v
    if t in (F.TYPE_UINT32, F.TYPE_UINT64, F.TYPE_FIXED32, F.TYPE_FIXED64):
        return "uint", v
    return "int", v  # int32/64, sint32/64, sfixed32/64, enum


def wire(fd, v):
    """A scalar as a schema-less reader sees it on the wire: (kind, JSON value)."""
    from google.protobuf.descriptor import FieldDescriptor as F

    t = fd.type
    if t in (F.TYPE_STRING, F.TYPE_BYTES):
        raw = v.encode() if t == F.TYPE_STRING else v
        try:
            return "str", raw.decode("utf-8")
        except UnicodeDecodeError:
            return "bytes", raw.hex()
    if t in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        return "float", v
    if t in (F.TYPE_FIXED32, F.TYPE_FIXED64):
        return "uint", v
    if t in (F.TYPE_SINT32, F.TYPE_SINT64):
        return "uint", 2 * v if v >= 0 else -2 * v - 1  # zigzag
    if t == F.TYPE_BOOL:
        return "uint", int(v)
    return "uint", v & MASK64  # int32/64 (sign-extended to 64 bits), uint, enum


def packed_raw(msg, fd, values):
    """The payload of a packed repeated field, cut from a message holding only it."""
    m = type(msg)()
    getattr(m, fd.name).extend(values)
    b = m.SerializeToString()
    _, i = read_varint(b, 0)
    n, i = read_varint(b, i)
    assert len(b) == i + n
    return b[i:]


def leaves(msg, named_prefix, number_prefix, named, numbers):
    from google.protobuf.descriptor import FieldDescriptor as F

    for fd, value in msg.ListFields():
        is_map = fd.message_type is not None and fd.message_type.GetOptions().map_entry
        repeated = fd.label == F.LABEL_REPEATED
        name = named_prefix + fd.name + ("[]" if repeated else "")
        number = number_prefix + str(fd.number)
        if is_map:
            kf = fd.message_type.fields_by_name["key"]
            vf = fd.message_type.fields_by_name["value"]
            for k, v in value.items():
                named.append({"path": name + ".key", **dict(zip(("kind", "value"), typed(kf, k)))})
                numbers.append({"path": number + ".1", **dict(zip(("kind", "value"), wire(kf, k)))})
                if vf.message_type is not None:
                    leaves(v, name + ".value.", number + ".2.", named, numbers)
                else:
                    named.append({"path": name + ".value", **dict(zip(("kind", "value"), typed(vf, v)))})
                    numbers.append({"path": number + ".2", **dict(zip(("kind", "value"), wire(vf, v)))})
        elif fd.message_type is not None:
            for m in value if repeated else [value]:
                leaves(m, name + ".", number + ".", named, numbers)
        elif repeated:
            for v in value:
                named.append({"path": name, **dict(zip(("kind", "value"), typed(fd, v)))})
            if fd.type in (F.TYPE_STRING, F.TYPE_BYTES):
                for v in value:
                    numbers.append({"path": number, **dict(zip(("kind", "value"), wire(fd, v)))})
            else:
                raw = packed_raw(msg, fd, value)
                numbers.append({"path": number, "kind": "bytes", "value": raw.hex()})
        else:
            named.append({"path": name, **dict(zip(("kind", "value"), typed(fd, value)))})
            numbers.append({"path": number, **dict(zip(("kind", "value"), wire(fd, value)))})


def frame(payload, compressed):
    return bytes([1 if compressed else 0]) + struct.pack(">I", len(payload)) + payload


def main():
    with tempfile.TemporaryDirectory() as tmp:
        pb = compile_proto(tmp)

    home = pb.Address(street="221B Baker Street", city="London", postcode="NW1 6XE", country="GB")
    profile = pb.Profile(
        id="u-1042",
        display_name="Jane Roe",
        email="jane.roe@example.com",
        phone="+44 20 7946 0958",
        address=home,
        balance_cents=-125_075,
        score_delta=-42,
        badge_ids=[3, 300, 70000],
        attributes={"newsletter": "weekly", "recovery_email": "jroe.backup@example.org"},
        verified=True,
        home=pb.Location(lat=51.523767, lng=-0.158555),
        tier=pb.TIER_GOLD,
        avatar_sha256=bytes.fromhex("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"),
        nicknames=["jr", "janey"],
        login_count=42,
        rating=4.5,
        loyalty_number=4_000_000_017,
    )
    ship = pb.Address(street="10 Downing Street", city="London", postcode="SW1A 2AA", country="GB")
    cards = ["4111111111111111", "5555555555554444", "378282246310005"]
    orders = [
        pb.Order(id=f"o-{7000 + i}", item=item, amount_cents=1999 + 100 * i, card_number=cards[i], ship_to=ship)
        for i, item in enumerate(["umbrella", "kettle", "tea tin"])
    ]
    order_list = pb.OrderList(
        orders=orders,
        next_page_token="p2",
        totals_by_currency={"GBP": 6297, "EUR": -15},
    )
    login = pb.LoginRequest(username="jane.roe@example.com", password="correct horse battery staple", device_id="d-77")
    reply = pb.LoginReply(
        session_token="eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1LTEwNDIiLCJleHAiOjE3MDAwMDAwMDB9.c2lnbmF0dXJlLW9mLXRlc3Q",
        expires_at=1_700_000_000,
    )

    cases = [
        ("profile", "shop.v1.Profile", profile),
        ("orders", "shop.v1.OrderList", order_list),
        ("login", "shop.v1.LoginRequest", login),
        ("login_reply", "shop.v1.LoginReply", reply),
    ] + [(f"order_{i}", "shop.v1.Order", o) for i, o in enumerate(orders)]

    expected = {"messages": [], "framed": []}
    payload = {}
    for name, type_name, msg in cases:
        data = msg.SerializeToString()
        payload[name] = data
        with open(os.path.join(OUT, f"{name}.bin"), "wb") as f:
            f.write(data)
        named, numbers = [], []
        leaves(msg, "", "", named, numbers)
        expected["messages"].append(
            {"name": name, "type": type_name, "file": f"{name}.bin", "named": named, "numbers": numbers}
        )

    def framed(file, encoding, parts, compress):
        body = b""
        for p in parts:
            if compress is None:
                body += frame(payload[p], False)
            else:
                body += frame(compress(payload[p]), True)
        with open(os.path.join(OUT, file), "wb") as f:
            f.write(body)
        expected["framed"].append(
            {
                "file": file,
                "encoding": encoding,
                "payloads": [f"{p}.bin" for p in parts],
                "compressed": 0 if compress is None else len(parts),
            }
        )

    # A server-streaming response: three Order messages on one stream.
    framed("stream_orders.grpc", None, ["order_0", "order_1", "order_2"], None)
    # grpcio's `compression=grpc.Compression.Gzip`: each message gzip-compressed, flag 1.
    framed("profile.gzip.grpc", "gzip", ["profile"], lambda b: gzip.compress(b, mtime=0))
    # `grpc-encoding: deflate` is zlib-wrapped deflate.
    framed("orders.deflate.grpc", "deflate", ["orders"], zlib.compress)
    framed("login.grpc", None, ["login"], None)

    # A decompression bomb: 16 MiB of zeros in one gzip message (about 16 KiB on the wire).
    bomb = gzip.compress(bytes(16 << 20), compresslevel=9, mtime=0)
    with open(os.path.join(OUT, "bomb.gzip.grpc"), "wb") as f:
        f.write(frame(bomb, True))
    expected["bomb"] = {"file": "bomb.gzip.grpc", "encoding": "gzip", "decompressed_bytes": 16 << 20}

    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")
    for name, data in payload.items():
        print(f"{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
