#!/usr/bin/python3
"""Records samples/grpc: a mobile gRPC API (plaintext HTTP/2) with genuine users, a scraper and a stuffer.

Usage: /usr/bin/python3 scripts/record_grpc_sample.py   (as root: tcpdump on loopback)

Debian's own python3 is needed (`apt-get install -y --no-install-recommends
python3-grpcio python3-grpc-tools python3-protobuf protobuf-compiler python3-jwt tcpdump
tshark`). samples/grpc/shop.proto (package `shop.v1`) is compiled at run time with
grpc_tools.protoc into a scratch directory; `protoc` (protobuf-compiler) writes
samples/grpc/shop.protoset (`--include_imports --descriptor_set_out`).

Server: a Python grpcio server (`ShopServer` below, insecure, 127.0.0.1) implementing
Auth.Login, Profiles.GetProfile, Catalog.GetProduct, Catalog.ListProducts (server
streaming, 8 Product messages per page) and Orders.ListOrders. Login succeeds only for
alice/bob/carol/dave@example.com with password "correct-horse" (LoginReply.access_token is
the user JWT, HS256 with the bots-and-stuffing user secret, `sub` = the email), else
UNAUTHENTICATED (16) "invalid credentials". The other methods need
`authorization: Bearer <user JWT>` (UNAUTHENTICATED otherwise); GetProfile returns
NOT_FOUND (5) for ids that are multiples of 17, GetProduct for ids >= 900 (discontinued).
The server gzips ListProducts and ListOrders responses (`context.set_compression`); the
genuine apps gzip their ListOrders requests (`compression=grpc.Compression.Gzip`).

Source addresses: grpcio 1.51 has no channel option for the local address, so each actor's
channel connects to a tiny per-actor TCP forwarder (`Forwarder`) on 127.0.0.1 whose
outgoing connection to the server is bound to the actor's address (`source_address=(ip,
0)`); only the server port is captured, so the capture shows the actor's address talking
to the server, bytes unchanged. One channel = one HTTP/2 connection per actor; every
channel sets `grpc.default_authority` to `shop.example.test:<port>` and
`grpc.primary_user_agent` to the app's name.

Metadata: `approov-token` (Approov-style JWT: HS256 with the bots-and-stuffing account
secret, `exp`, `did`, `pay` = base64(SHA-256(authorization value)); none on tokens sent
with Login) and `authorization: Bearer <user JWT>`. Genuine apps mint a new attestation
token at login, once logged in and then every 5 calls (each valid 300 s).

Actors (threads, concurrent):

  genuine-a  127.0.0.10  device-a  alice  Login, GetProfile(1), ListProducts, GetProduct,
                                          ListOrders, ... with think times 0.8-4 s
  genuine-b  127.0.0.11  device-b  bob    as genuine-a, mistypes the password once first
  genuine-c  127.0.0.12  device-c  carol  as genuine-a, one GetProduct of a discontinued
                                          product (NOT_FOUND)
  genuine-d  127.0.0.13  device-d  dave   as genuine-a
  scraper    127.0.0.30  -         alice  stolen JWT, no approov-token, GetProfile
                                          user_id 1..60 in order, 0.05 s apart
  stuffer    127.0.0.40  -         -      no approov-token, 25 Login as
                                          victim01..25@example.com, 0.1 s apart, all 16

Writes samples/grpc/capture.pcap, expected.jsonl (the clients' own record, one line per
call), shieldtap.toml, shop.protoset and README.md. The call structure is fixed by
per-actor `random.Random(seed)`; only times, tokens, ports and Date-like values vary.
"""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent import futures
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
import record_samples as rs  # noqa: E402  (shared capture helpers)
from record_abuse_sample import SECRET, USER_SECRET, TokenSource, jwt, mint, now, run_actors, user_jwt  # noqa: E402

DEST = Path(__file__).resolve().parent.parent / "samples" / "grpc"
PROTO = DEST / "shop.proto"
APP_UA = "shop-android/5.2.1"
PASSWORD = "correct-horse"
ACCOUNTS = {"alice@example.com": 1, "bob@example.com": 2, "carol@example.com": 3, "dave@example.com": 4}
ATTEMPTS = 3
PAGE_SIZE = 8
# The field mask the app sends with ListOrders (long enough for gzip to shrink it).
ORDER_FIELDS = [
    "orders.id", "orders.total_cents", "orders.state", "orders.skus", "orders.shipping.street",
    "orders.shipping.city", "orders.shipping.postal_code", "orders.shipping.country", "page",
]  # fmt: skip

pb = None  # shop_pb2, imported once compiled
pbg = None  # shop_pb2_grpc


def compile_proto(out: Path) -> None:
    global pb, pbg
    from grpc_tools import protoc

    out.mkdir(parents=True, exist_ok=True)
    rc = protoc.main(
        ["protoc", f"-I{PROTO.parent}", f"--python_out={out}", f"--grpc_python_out={out}", str(PROTO)]
    )
    if rc != 0:
        raise RuntimeError(f"grpc_tools.protoc failed: {rc}")
    sys.path.insert(0, str(out))
    import shop_pb2
    import shop_pb2_grpc

    pb, pbg = shop_pb2, shop_pb2_grpc


# --------------------------------------------------------------------------------------
# server


def profile(uid: int):
    return pb.Profile(
        id=uid,
        name=f"User {uid}",
        email=f"user{uid}@example.com",
        phone=f"+1-202-555-{uid:04d}",
        address=pb.Address(street=f"{uid} Main Street", city="Springfield", postal_code=f"{62700 + uid}", country="US"),
        plan="pro" if uid % 2 else "free",
    )


def product(pid: int):
    return pb.Product(
        id=pid,
        sku=f"SKU-{pid:05d}",
        name=f"Widget {pid}",
        price_cents=199 + 37 * pid,
        currency="EUR",
        tags=["blue", "small"] if pid % 2 else ["red"],
        description=f"Widget {pid}: a small, sturdy widget for everyday use. " * 2,
    )


def user_of(context) -> str | None:
    md = dict(context.invocation_metadata())
    auth = md.get("authorization", "")
    if not auth.startswith("Bearer "):
        return None
    try:
        return jwt.decode(auth[7:], USER_SECRET, algorithms=["HS256"])["sub"]
    except Exception:  # noqa: BLE001 (any bad token is unauthenticated)
        return None


def need_user(context) -> str:
    user = user_of(context)
    if user is None:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")
    return user


class ShopServer:
    """The five RPCs; registered per service below."""

    def Login(self, request, context):  # noqa: N802 (gRPC's names)
        if request.username in ACCOUNTS and request.password == PASSWORD:
            return pb.LoginReply(access_token=user_jwt(request.username), token_type="Bearer", expires_in=3600)
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid credentials")

    def GetProfile(self, request, context):  # noqa: N802
        need_user(context)
        uid = request.user_id
        if not 1 <= uid <= 100 or uid % 17 == 0:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no profile {uid}")
        return profile(uid)

    def GetProduct(self, request, context):  # noqa: N802
        need_user(context)
        if not 1 <= request.product_id < 900:
            context.abort(grpc.StatusCode.NOT_FOUND, f"product {request.product_id} is discontinued")
        return product(request.product_id)

    def ListProducts(self, request, context):  # noqa: N802
        need_user(context)
        context.set_compression(grpc.Compression.Gzip)
        page = max(1, request.page)
        size = request.page_size or PAGE_SIZE
        for i in range(size):
            yield product((page - 1) * size + i + 1)

    def ListOrders(self, request, context):  # noqa: N802
        user = need_user(context)
        context.set_compression(grpc.Compression.Gzip)
        uid = ACCOUNTS.get(user, 0)
        page = max(1, request.page)
        addr = profile(uid).address
        orders = [
            pb.Order(
                id=10000 * uid + 10 * page + i,
                total_cents=1299 + 150 * i,
                state="shipped" if i else "processing",
                shipping=addr,
                skus=[f"SKU-{(7 * i + j) % 50:05d}" for j in range(3)],
            )
            for i in range(6)
        ]
        return pb.OrderList(orders=orders, page=page)


def make_server(port: int) -> grpc.Server:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    impl = ShopServer()
    pbg.add_AuthServicer_to_server(impl, server)
    pbg.add_ProfilesServicer_to_server(impl, server)
    pbg.add_CatalogServicer_to_server(impl, server)
    pbg.add_OrdersServicer_to_server(impl, server)
    if server.add_insecure_port(f"127.0.0.1:{port}") != port:
        raise RuntimeError(f"cannot listen on 127.0.0.1:{port}")
    return server


# --------------------------------------------------------------------------------------
# source address: a per-actor forwarder


class Forwarder:
    """Listens on 127.0.0.1:<ephemeral>; each accepted connection is relayed, bytes
    unchanged, to the server over a connection bound to `src`."""

    def __init__(self, src: str, server: tuple[str, int]) -> None:
        self.src, self.server = src, server
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.port = self.lsock.getsockname()[1]
        self.connections = 0
        self.socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                a, _ = self.lsock.accept()
            except OSError:
                return
            b = socket.create_connection(self.server, timeout=rs.SOCKET_TIMEOUT, source_address=(self.src, 0))
            for s in (a, b):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.settimeout(None)
            self.connections += 1
            self.socks += [a, b]
            threading.Thread(target=self._pump, args=(a, b), daemon=True).start()
            threading.Thread(target=self._pump, args=(b, a), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        self.lsock.close()


# --------------------------------------------------------------------------------------
# clients


class Recorder:
    def __init__(self, port: int) -> None:
        self.port = port
        self.lines: dict[str, list[dict]] = {}
        self.conns: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.alice_auth: str | None = None
        self.alice_ready = threading.Event()
        self.forwarders: list[Forwarder] = []

    def channel(self, actor: str, src: str) -> grpc.Channel:
        fwd = Forwarder(src, ("127.0.0.1", self.port))
        with self.lock:
            self.forwarders.append(fwd)
            self.conns[actor] += 1
        return grpc.insecure_channel(
            f"127.0.0.1:{fwd.port}",
            options=[
                ("grpc.enable_http_proxy", 0),
                ("grpc.default_authority", f"shop.example.test:{self.port}"),
                ("grpc.primary_user_agent", APP_UA),
            ],
        )

    def call(
        self,
        ch: grpc.Channel,
        *,
        actor: str,
        src: str,
        service: str,
        method: str,
        request,
        auth: str | None = None,
        token: str | None = None,
        device: str | None = None,
        user: str | None = None,
        expect: grpc.StatusCode = grpc.StatusCode.OK,
        verdict: str,
        compress: bool = False,
    ):
        stub = getattr(pbg, f"{service}Stub")(ch)
        md = []
        if token is not None:
            md.append(("approov-token", token))
        if auth is not None:
            md.append(("authorization", auth))
        fn = getattr(stub, method)
        kw = {"metadata": md, "timeout": 10}
        if compress:
            kw["compression"] = grpc.Compression.Gzip
        reply, messages = None, 0
        try:
            if method == "ListProducts":  # server streaming
                it = fn(request, **kw)
                reply = list(it)
                messages = len(reply)
                code, details = it.code(), it.details()
            else:
                reply, c = fn.with_call(request, **kw)
                messages = 1
                code, details = c.code(), c.details()
        except grpc.RpcError as e:
            code, details = e.code(), e.details()
        if code != expect:
            raise RuntimeError(f"{actor} {service}.{method}: {code} {details!r}, expected {expect}")
        with self.lock:
            self.lines.setdefault(actor, []).append(
                {
                    "actor": actor,
                    "client_ip": src,
                    "method": "POST",
                    "path": f"/shop.v1.{service}/{method}",
                    "query": None,
                    "status": 200,
                    "device": device,
                    "user": user,
                    "username": getattr(request, "username", None) if method == "Login" else None,
                    "verdict": verdict,
                    "grpc_status": code.value[0],
                    "grpc_message": details or None,
                    "request_compression": "gzip" if compress else None,
                    "response_messages": messages,
                }
            )
        return reply


GENUINE = {
    # actor: (source, device, user, seed, mistypes the password, asks for a discontinued product)
    "genuine-a": ("127.0.0.10", "device-a", "alice@example.com", 1101, False, False),
    "genuine-b": ("127.0.0.11", "device-b", "bob@example.com", 2202, True, False),
    "genuine-c": ("127.0.0.12", "device-c", "carol@example.com", 3303, False, True),
    "genuine-d": ("127.0.0.13", "device-d", "dave@example.com", 4404, False, False),
}


def genuine(r: Recorder, actor: str) -> None:
    src, did, user, seed, typo, discontinued = GENUINE[actor]
    rng = random.Random(seed)
    uid = ACCOUNTS[user]
    # the session: own profile, 2 pages of products (streaming), a few products, orders
    plan: list[tuple[str, str, object]] = [("Profiles", "GetProfile", ("user", uid))]
    for page in (1, 2):
        plan.append(("Catalog", "ListProducts", ("page", page)))
        for _ in range(rng.randint(1, 3)):
            plan.append(("Catalog", "GetProduct", ("product", rng.randint(1, 16))))
    if discontinued:
        plan.append(("Catalog", "GetProduct", ("product", 904)))
    plan += [("Orders", "ListOrders", ("page", 1)), ("Profiles", "GetProfile", ("user", uid))]
    if rng.random() < 0.5:
        plan.append(("Orders", "ListOrders", ("page", 2)))
    tokens = TokenSource(did)
    kw = dict(actor=actor, src=src, device=did, verdict="valid")
    time.sleep(rng.uniform(0.0, 2.0))
    ch = r.channel(actor, src)
    try:
        if typo:
            r.call(ch, service="Auth", method="Login", request=pb.LoginRequest(username=user, password="correct-hrose"),
                   token=tokens.get(None), expect=grpc.StatusCode.UNAUTHENTICATED, **kw)  # fmt: skip
            time.sleep(rng.uniform(1.5, 4.0))
        reply = r.call(ch, service="Auth", method="Login", request=pb.LoginRequest(username=user, password=PASSWORD),
                       token=tokens.get(None), **kw)  # fmt: skip
        auth = "Bearer " + reply.access_token
        if actor == "genuine-a":
            r.alice_auth = auth  # what the scraper lifts from alice's phone
            r.alice_ready.set()
        for service, method, (what, n) in plan:
            time.sleep(rng.uniform(0.8, 4.0))
            if what == "user":
                req = pb.GetProfileRequest(user_id=n)
            elif what == "page" and method == "ListProducts":
                req = pb.ListProductsRequest(page=n, page_size=PAGE_SIZE)
            elif what == "page":
                req = pb.ListOrdersRequest(page=n, fields=ORDER_FIELDS)
            else:
                req = pb.GetProductRequest(product_id=n)
            expect = grpc.StatusCode.NOT_FOUND if what == "product" and n >= 900 else grpc.StatusCode.OK
            r.call(ch, service=service, method=method, request=req, auth=auth, token=tokens.get(auth), user=user,
                   expect=expect, compress=method == "ListOrders", **kw)  # fmt: skip
    finally:
        if actor == "genuine-a":
            r.alice_ready.set()
        ch.close()


def scraper(r: Recorder) -> None:
    actor, src = "scraper", "127.0.0.30"
    if not r.alice_ready.wait(30) or r.alice_auth is None:
        raise RuntimeError("scraper: genuine-a never logged in")
    auth = r.alice_auth
    time.sleep(2.0)
    ch = r.channel(actor, src)
    try:
        for n in range(1, 61):
            r.call(ch, actor=actor, src=src, service="Profiles", method="GetProfile",
                   request=pb.GetProfileRequest(user_id=n), auth=auth, user="alice@example.com",
                   expect=grpc.StatusCode.NOT_FOUND if n % 17 == 0 else grpc.StatusCode.OK, verdict="missing")  # fmt: skip
            time.sleep(0.05)
    finally:
        ch.close()


def stuffer(r: Recorder) -> None:
    actor, src = "stuffer", "127.0.0.40"
    time.sleep(6.0)
    ch = r.channel(actor, src)
    try:
        for k in range(1, 26):
            req = pb.LoginRequest(username=f"victim{k:02d}@example.com", password="Winter2026!")
            r.call(ch, actor=actor, src=src, service="Auth", method="Login", request=req,
                   expect=grpc.StatusCode.UNAUTHENTICATED, verdict="missing")  # fmt: skip
            time.sleep(0.1)
    finally:
        ch.close()


# name, function, address, device, user, what it does, what a detector should conclude
ACTORS = [
    *[
        (name, (lambda n: lambda r: genuine(r, n))(name), spec[0], spec[1], spec[2],
         "Login, then GetProfile of its own id, ListProducts pages 1-2 (server streaming, 8 messages each), "
         "1-3 GetProduct per page, ListOrders (gzip request), GetProfile again, maybe ListOrders page 2; think "
         "times 0.8-4 s; valid approov-token on every call, refreshed every 5"
         + ("; mistypes the password once first (UNAUTHENTICATED)" if spec[4] else "")
         + ("; one GetProduct of discontinued product 904 (NOT_FOUND)" if spec[5] else ""),
         "genuine: no alert at medium or above")
        for name, spec in GENUINE.items()
    ],
    ("scraper", scraper, "127.0.0.30", "-", "alice@example.com (stolen)",
     "alice's authorization value (lifted after her login), NO approov-token; GetProfile user_id 1..60 in "
     "order, 0.05 s apart, one channel; ids 17, 34, 51 are NOT_FOUND, the other 57 return name, email, phone, "
     "address",
     "scraper: unattested traffic, breadth and sequential walk over GetProfile ids, exposure of email/phone/"
     "address (personal data) in protobuf responses, credential misuse of alice's account"),
    ("stuffer", stuffer, "127.0.0.40", "-", "-",
     "NO approov-token; 25 Auth/Login as victim01..victim25@example.com / Winter2026!, 0.1 s apart, all "
     "UNAUTHENTICATED (16) `invalid credentials`",
     "stuffer: unattested traffic, failed logins with many usernames from one address"),
]  # fmt: skip




# --------------------------------------------------------------------------------------


def header_blocks(f: dict) -> list[list[tuple[str, str]]]:
    """The header fields of each HEADERS frame of one packet (tshark -T json -e ...), split
    by `http2.header.count` (one count per HEADERS frame, in frame order)."""
    names, values = f.get("http2.header.name", []), f.get("http2.header.value", [])
    blocks, i = [], 0
    for n in (int(c) for c in f.get("http2.header.count", [])):
        blocks.append(list(zip(names[i : i + n], values[i : i + n])))
        i += n
    return blocks


def tshark_calls(pcap: Path, port: int) -> Counter:
    """(client ip, :path, grpc-status) per stream as tshark decodes them."""
    cmd = [
        "tshark", "-r", str(pcap), "-d", f"tcp.port=={port},http2", "-Y", "http2.type==1", "-T", "json",
        "-e", "ip.src", "-e", "tcp.stream", "-e", "http2.type", "-e", "http2.streamid", "-e", "http2.header.name",
        "-e", "http2.header.value", "-e", "http2.header.count",
    ]  # fmt: skip
    calls: dict[tuple[int, int], dict] = {}
    for p in json.loads(rs.run(cmd).stdout):
        f = p["_source"]["layers"]
        ts = int(f["tcp.stream"][0])
        hsids = [int(s) for t, s in zip(f["http2.type"], f["http2.streamid"]) if t == "1"]
        blocks = header_blocks(f)
        if len(blocks) != len(hsids):
            raise RuntimeError(f"tshark: {len(hsids)} HEADERS frames but {len(blocks)} header counts: {f}")
        for sid, hs in zip(hsids, blocks):
            c = calls.setdefault((ts, sid), {})
            for n, v in hs:
                if n == ":path":
                    c["path"], c["ip"] = v, f["ip.src"][0]
                elif n == "grpc-status":
                    c["grpc_status"] = int(v)
    return Counter((c.get("ip"), c.get("path"), c.get("grpc_status")) for c in calls.values())


def tshark_grpc_messages(pcap: Path, port: int) -> tuple[int, int]:
    """(gRPC messages, of which compressed) as tshark's grpc dissector sees them."""
    out = rs.run(["tshark", "-r", str(pcap), "-d", f"tcp.port=={port},http2", "-Y", "grpc", "-T", "fields",
                  "-E", "aggregator=,", "-e", "grpc.compressed_flag"]).stdout  # fmt: skip
    flags = [x for ln in out.split() for x in ln.split(",") if x]
    return len(flags), sum(1 for x in flags if x in ("1", "True", "0x01"))


COMPRESSED_REPLIES = ("/shop.v1.Catalog/ListProducts", "/shop.v1.Orders/ListOrders")


def record(work: Path) -> None:
    compile_proto(work / "gen")
    port = rs.pick_port(18094)
    pcap = work / "capture.pcap"
    server = make_server(port)
    server.start()
    try:
        with rs.Tcpdump("lo", pcap, f"tcp port {port}") as dump:
            r = Recorder(port)
            began = time.monotonic()
            run_actors(r, ACTORS)
            took = time.monotonic() - began
            time.sleep(0.5)
            for f in r.forwarders:
                f.close()
            dump.stop()
    finally:
        server.stop(2).wait(5)
    lines = [line for name, *_ in ACTORS for line in r.lines.get(name, [])]
    mine = Counter((ln["client_ip"], ln["path"], ln["grpc_status"]) for ln in lines)
    theirs = tshark_calls(pcap, port)
    if mine != theirs:
        raise RuntimeError(f"tshark disagrees with the clients:\n{sorted(mine.items(), key=str)}\n{sorted(theirs.items(), key=str)}")
    nmsg, ncomp = tshark_grpc_messages(pcap, port)
    want = sum(ln["response_messages"] for ln in lines if ln["path"] in COMPRESSED_REPLIES and ln["grpc_status"] == 0)
    want += sum(1 for ln in lines if ln["request_compression"])
    if ncomp != want:
        raise RuntimeError(f"tshark sees {ncomp} compressed gRPC messages, the clients and server made {want}")
    size = pcap.stat().st_size
    if size >= 256_000:
        raise RuntimeError(f"capture is {size} bytes: samples stay under 256000 (tests/samples.rs)")
    DEST.mkdir(parents=True, exist_ok=True)
    (DEST / "capture.pcap").write_bytes(pcap.read_bytes())
    (DEST / "expected.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    rs.run(["protoc", f"-I{DEST}", "--include_imports", f"--descriptor_set_out={DEST / 'shop.protoset'}", str(PROTO)])
    (DEST / "shieldtap.toml").write_text(
        "# The sample's test secrets (not real ones), base64 as Approov's CLI prints them: the same\n"
        "# as samples/bots-and-stuffing. gRPC metadata keys are lowercase header names.\n"
        "[[attestation]]\n"
        'name = "approov"\n'
        'header = "approov-token"\n'
        'algorithms = ["HS256"]\n'
        f'secret_base64 = "{base64.b64encode(SECRET).decode()}"\n'
        'binding_headers = ["authorization"]\n'
        'missing_binding = "accept"\n'
        "\n"
        "# User JWTs (authorization: Bearer ...) are HS256 with this secret: user ids are verified.\n"
        "[identity]\n"
        'user_header = "authorization"\n'
        'user_claim = "sub"\n'
        f'user_secret_base64 = "{base64.b64encode(USER_SECRET).decode()}"\n'
    )
    write_readme(r, lines, port, dump, took, size, nmsg, ncomp)
    rs.log(f"wrote {DEST} ({len(lines)} calls, {sum(r.conns.values())} connections, {dump.captured} packets, "
           f"{size} bytes, {took:.1f} s; tshark: {nmsg} gRPC messages, {ncomp} compressed)")  # fmt: skip


def versions() -> str:
    import google.protobuf

    protoc = subprocess.run(["protoc", "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    return f"grpcio {grpc.__version__}, protobuf (Python) {google.protobuf.__version__}, {protoc}, Python {sys.version.split()[0]}"


def write_readme(r: Recorder, lines: list[dict], port: int, dump, took: float, size: int, nmsg: int, ncomp: int) -> None:
    count = Counter(ln["actor"] for ln in lines)
    actor_rows = "\n".join(
        f"| {name} | {src} | {dev} | {user} | {what} | {r.conns[name]} | {count[name]} | {concl} |"
        for name, _, src, dev, user, what, concl in ACTORS
    )
    order = {name: i for i, (name, *_) in enumerate(ACTORS)}
    summary = Counter((ln["actor"], ln["path"], ln["grpc_status"], ln["verdict"]) for ln in lines)
    summary_rows = "\n".join(
        f"| {a} | `{p}` | {s} | `{v}` | {n} |"
        for (a, p, s, v), n in sorted(summary.items(), key=lambda kv: (order[kv[0][0]], kv[0][1:]))
    )
    (DEST / "README.md").write_text(
        "# grpc\n\n"
        "A small mobile shop API over gRPC (plaintext HTTP/2, h2c with prior knowledge), recorded by\n"
        "`scripts/record_grpc_sample.py` (see its docstring): a Python grpcio server (`ShopServer`) on\n"
        f"127.0.0.1:{port} and grpcio clients, one channel (= one HTTP/2 connection) per actor, each\n"
        "from its own source address in 127.0.0.0/8. grpcio has no option for the local address,\n"
        "so each channel goes through a per-actor TCP forwarder on loopback whose connection to the\n"
        "server is bound to the actor's address; only the server port is captured, so the capture\n"
        "shows actor -> server, bytes unchanged. Captured with\n"
        f"`{dump.display_cmd('capture.pcap')}`\n"
        f"({dump.captured} packets, {size} bytes, 0 dropped by kernel); all actors ran concurrently,\n"
        f"in threads, for {took:.0f} s. Versions: {versions()}.\n\n"
        "The service is `shop.proto` (package `shop.v1`); `shop.protoset` is it compiled with\n"
        "`protoc --include_imports --descriptor_set_out=shop.protoset shop.proto`:\n\n"
        "- `/shop.v1.Auth/Login` `LoginRequest{username, password}` -> `LoginReply{access_token}`: only\n"
        "  alice/bob/carol/dave@example.com with `correct-horse`, else UNAUTHENTICATED (16)\n"
        "  `invalid credentials` (a trailers-only response: HTTP 200 with `grpc-status` in the headers).\n"
        "- `/shop.v1.Profiles/GetProfile` `GetProfileRequest{user_id}` -> `Profile{id, name, email, phone,\n"
        "  address{street, city, postal_code, country}, plan}`; NOT_FOUND (5) for ids that are multiples\n"
        "  of 17.\n"
        "- `/shop.v1.Catalog/GetProduct` -> `Product`; NOT_FOUND for ids >= 900.\n"
        "- `/shop.v1.Catalog/ListProducts` -> stream of 8 `Product` (server streaming), gzip-compressed\n"
        "  by the server.\n"
        "- `/shop.v1.Orders/ListOrders` -> `OrderList{repeated Order orders}` (each with a shipping\n"
        "  `Address`), gzip-compressed by the server; the genuine apps gzip the request too.\n\n"
        "Every call except Login needs `authorization: Bearer <user JWT>` (HS256 with the user secret\n"
        "in `shieldtap.toml`, `sub` = the email; genuine users get it from LoginReply). Attestation\n"
        "tokens (`approov-token` metadata) are the bots-and-stuffing conventions and secret: PyJWT\n"
        "HS256, `exp`, `did`, `pay` = base64(SHA-256(authorization value)), none on Login\n"
        "(`missing_binding = \"accept\"`); genuine apps mint one at login, once logged in, then every 5\n"
        f"calls, each valid 300 s. tshark's grpc dissector sees {nmsg} gRPC messages in the capture,\n"
        f"{ncomp} of them compressed.\n\n"
        "Replay: `shieldtap replay samples/grpc/capture.pcap --config samples/grpc/shieldtap.toml`\n"
        "(add the protoset to the config once shieldtap reads one, for field names instead of\n"
        "field-number paths). tshark: `tshark -r capture.pcap -d tcp.port==" + str(port) + ",http2 -Y grpc`.\n\n"
        "## Actors\n\n"
        "| actor | source address | device (`did`) | user (`sub`) | does | connections | calls "
        "| what a detector should conclude |\n"
        "|---|---|---|---|---|---|---|---|\n" + actor_rows + "\n"
        f"| **total** | | | | | {sum(r.conns.values())} | {len(lines)} | |\n\n"
        "## Calls\n\n"
        "`expected.jsonl` is the clients' record, one line per call, grouped by actor in the order of\n"
        "the table above, in call order within an actor: `actor`, `client_ip`, `method` (`POST`),\n"
        "`path` (`/package.Service/Method`), `query` (null), `status` (the HTTP status: 200 for every\n"
        "gRPC response, failures included), `device` (the `did` of the token sent, null without one),\n"
        "`user` (the `sub` of the authorization JWT sent), `username` (Login only), the attestation\n"
        "`verdict` shieldtap must give (`valid`, `missing`), `grpc_status` and `grpc_message` (as the\n"
        "client got them), `request_compression` and `response_messages` (messages the client\n"
        "received). The scraper's and stuffer's calls must give the alerts of the abuse rules as on\n"
        "HTTP/1.1 (samples/bots-and-stuffing); the genuine users none at medium or above.\n\n"
        "| actor | path | grpc-status | verdict | calls |\n|---|---|---|---|---|\n" + summary_rows + "\n"
    )


def main() -> None:
    rs.with_attempts("shieldtap-grpc-", ATTEMPTS, record)


if __name__ == "__main__":
    if len(sys.argv) != 1:
        print(__doc__.split("\n\n")[0] + "\nusage: record_grpc_sample.py", file=sys.stderr)
        sys.exit(2)
    main()
