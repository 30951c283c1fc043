#!/usr/bin/python3
"""Records the gRPC benchmark capture: many grpcio app clients against the samples/grpc shop.

Usage: /usr/bin/python3 scripts/gen_grpc_bench.py OUT_DIR [CALLS]   (as root: tcpdump on lo)

The server is samples/grpc's (`ShopServer` of scripts/record_grpc_sample.py, grpcio,
insecure, 127.0.0.1:18395). 8 client processes, each with 25 app channels (one HTTP/2
connection per device, 200 devices of 4 users), make CALLS calls in all: GetProfile of
their own user, GetProduct of random products, ListOrders (gzip requests and responses) and
ListProducts (server streaming, gzip), with `approov-token` (HS256, the sample's account
secret, `did` per device, `pay` bound to the authorization) and `authorization: Bearer`
(user JWT) on every call, as the shop's app sends them. tcpdump on loopback writes
OUT_DIR/capture.pcap; OUT_DIR also gets shieldtap.toml (secrets, descriptor set) and
manifest.json. Debian's python3 with python3-grpcio, python3-grpc-tools, python3-jwt.
"""
import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import record_grpc_sample as g  # noqa: E402
import grpc  # noqa: E402

PORT = 18395
USERS = list(g.ACCOUNTS)


def client(worker: int, calls: int, proto_out: str) -> int:
    g.compile_proto(Path(proto_out))
    pb, pbg = g.pb, g.pbg
    rnd = random.Random(worker)
    chans = []
    for d in range(25):
        user = USERS[(worker * 25 + d) % len(USERS)]
        ch = grpc.insecure_channel(
            f"127.0.0.1:{PORT}",
            options=[("grpc.default_authority", f"shop.example.test:{PORT}"),
                     ("grpc.primary_user_agent", g.APP_UA), ("grpc.use_local_subchannel_pool", 1)],
        )
        auth = "Bearer " + g.user_jwt(user)
        token = g.mint(f"bench-{worker}-{d}", auth, int(time.time()) + 86400)
        md = [("approov-token", token), ("authorization", auth)]
        chans.append((ch, md, g.ACCOUNTS[user]))
    done = 0
    for i in range(calls):
        ch, md, uid = chans[i % len(chans)]
        r = rnd.random()
        try:
            if r < 0.35:
                pbg.ProfilesStub(ch).GetProfile(pb.GetProfileRequest(user_id=uid), metadata=md, timeout=10)
            elif r < 0.75:
                pbg.CatalogStub(ch).GetProduct(pb.GetProductRequest(product_id=rnd.randint(1, 899)), metadata=md, timeout=10)
            elif r < 0.92:
                pbg.OrdersStub(ch).ListOrders(pb.ListOrdersRequest(page=rnd.randint(1, 3), fields=g.ORDER_FIELDS),
                                              metadata=md, timeout=10, compression=grpc.Compression.Gzip)
            else:
                for _ in pbg.CatalogStub(ch).ListProducts(pb.ListProductsRequest(page=rnd.randint(1, 50)), metadata=md, timeout=10):
                    pass
        except grpc.RpcError:
            pass
        done += 1
    for ch, _, _ in chans:
        ch.close()
    return done


def main() -> None:
    out = Path(sys.argv[1]).resolve()
    calls = int(sys.argv[2]) if len(sys.argv) > 2 else 40_000
    out.mkdir(parents=True, exist_ok=True)
    proto_out = tempfile.mkdtemp(prefix="grpcbench-")
    g.compile_proto(Path(proto_out))
    server = g.make_server(PORT)
    server.start()
    pcap = out / "capture.pcap"
    dump = subprocess.Popen(["tcpdump", "-i", "lo", "-n", "-s", "0", "-B", "262144", "-U", "-w", str(pcap),
                             f"tcp port {PORT}"], stderr=subprocess.PIPE)
    time.sleep(1.5)
    started = time.time()
    with multiprocessing.get_context("spawn").Pool(8) as pool:
        made = sum(pool.starmap(client, [(w, calls // 8, proto_out) for w in range(8)]))
    took = time.time() - started
    time.sleep(1.5)
    dump.send_signal(signal.SIGINT)
    err = dump.communicate()[1].decode().strip()
    server.stop(1)
    print(f"{made} calls in {took:.1f} s; {err}")
    (out / "shieldtap.toml").write_text(
        (g.DEST / "shieldtap.toml").read_text().replace(
            'descriptor_sets = ["samples/grpc/shop.protoset"]', f'descriptor_sets = ["{g.DEST / "shop.protoset"}"]'
        )
    )
    (out / "manifest.json").write_text(json.dumps({"calls": made, "seconds": took, "tcpdump": err}, indent=1))


if __name__ == "__main__":
    main()
