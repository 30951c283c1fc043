#!/usr/bin/env python3
"""Records the HTTP/2 (h2c) benchmark capture: h2load (nghttp2) against Debian nginx.

Usage: /usr/bin/python3 scripts/gen_h2_bench.py OUT_DIR [REQUESTS]   (as root: tcpdump on lo)

nginx (`listen 127.0.0.1:18390 http2`, gzip on for JSON) serves 4,000 JSON documents of
200 bytes to 8 KB (profiles with names, emails and phone numbers, order lists, catalogue
pages) under /api/v1/...; h2load (`-c 100 -m 10`: 100 connections, 10 concurrent streams
each) asks for them round robin from a URI list, with `accept-encoding: gzip`, an
`approov-token` (HS256, the bots-and-stuffing sample's account secret, valid for a day,
`pay` bound to the authorization value) and `authorization: Bearer <user JWT>`, as a mobile
app's HTTP/2 client would. tcpdump on loopback writes OUT_DIR/capture.pcap; OUT_DIR also
gets shieldtap.toml (the secrets) and manifest.json (requests, connections, packets).
Needs: nginx-light, nghttp2-client (h2load), tcpdump, python3-jwt.
"""
import base64, hashlib, json, os, random, shutil, signal, subprocess, sys, tempfile, time

import jwt

APPROOV = base64.b64decode("c2hpZWxkdGFwLXNhbXBsZS1hY2NvdW50LXNlY3JldC0wMTIzNDU2Nzg5")
USER = base64.b64decode("c2hpZWxkdGFwLXNhbXBsZS11c2VyLXNlY3JldC1hYmNkZWYtNDU2Nzg5")
PORT = 18390


def main() -> None:
    out = os.path.abspath(sys.argv[1])
    requests = int(sys.argv[2]) if len(sys.argv) > 2 else 200_000
    os.makedirs(out, exist_ok=True)
    rnd = random.Random(20)
    work = tempfile.mkdtemp(prefix="h2bench-")
    os.chmod(work, 0o755)  # nginx workers read the documents
    www = os.path.join(work, "www", "api", "v1")
    uris = []
    for kind, n in (("users", 2000), ("orders", 1000), ("catalog", 1000)):
        os.makedirs(os.path.join(www, kind), exist_ok=True)
        for i in range(1, n + 1):
            if kind == "users":
                doc = {"id": i, "name": f"User {i}", "email": f"user{i}@example.com",
                       "phone": f"+44 7700 9{i:05d}", "city": rnd.choice(["Leeds", "York", "Bath"])}
            else:
                doc = {"page": i, "items": [{"id": i * 100 + k, "sku": f"SKU-{i}-{k}",
                       "title": "Item " * rnd.randint(1, 8), "price": rnd.randint(100, 9999)}
                       for k in range(rnd.randint(2, 40))]}
            with open(os.path.join(www, kind, f"{i}.json"), "w") as f:
                json.dump(doc, f)
            uris.append(f"http://127.0.0.1:{PORT}/api/v1/{kind}/{i}.json")
    rnd.shuffle(uris)
    with open(os.path.join(work, "uris.txt"), "w") as f:
        f.write("\n".join(uris) + "\n")
    conf = os.path.join(work, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""worker_processes 1; pid {work}/nginx.pid; error_log {work}/error.log;
events {{ worker_connections 1024; }}
http {{ access_log off; client_body_temp_path {work}/cb; proxy_temp_path {work}/px;
  fastcgi_temp_path {work}/fc; uwsgi_temp_path {work}/uw; scgi_temp_path {work}/sc;
  types {{ application/json json; }} gzip on; gzip_types application/json; gzip_min_length 512;
  keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{PORT} http2; root {work}/www; }} }}
""")
    subprocess.run(["nginx", "-c", conf], check=True)
    auth = "Bearer " + jwt.encode({"sub": "bench@example.com", "exp": int(time.time()) + 86400}, USER, "HS256")
    pay = base64.b64encode(hashlib.sha256(auth.encode()).digest()).decode()
    approov = jwt.encode({"exp": int(time.time()) + 86400, "did": "bench-device", "pay": pay}, APPROOV, "HS256")
    pcap = os.path.join(out, "capture.pcap")
    dump = subprocess.Popen(["tcpdump", "-i", "lo", "-n", "-s", "0", "-B", "262144", "-U", "-w", pcap,
                             f"tcp port {PORT}"], stderr=subprocess.PIPE)
    time.sleep(1.5)
    try:
        r = subprocess.run(["h2load", "-n", str(requests), "-c", "100", "-m", "10", "-i",
                            os.path.join(work, "uris.txt"), "-H", "accept-encoding: gzip",
                            "-H", "user-agent: okhttp/4.12.0", "-H", f"approov-token: {approov}",
                            "-H", f"authorization: {auth}"], capture_output=True, text=True, check=True)
        print(r.stdout.strip().splitlines()[-8:])
    finally:
        time.sleep(1.5)
        dump.send_signal(signal.SIGINT)
        err = dump.communicate()[1].decode()
        subprocess.run(["nginx", "-c", conf, "-s", "stop"])
        shutil.rmtree(work, ignore_errors=True)
    print(err.strip())
    with open(os.path.join(out, "shieldtap.toml"), "w") as f:
        f.write(f"""[[attestation]]
name = "approov"
header = "approov-token"
algorithms = ["HS256"]
secret_base64 = "{base64.b64encode(APPROOV).decode()}"
binding_headers = ["authorization"]

[identity]
user_header = "authorization"
user_claim = "sub"
user_secret_base64 = "{base64.b64encode(USER).decode()}"
""")
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump({"requests": requests, "connections": 100, "streams_per_connection": 10,
                   "tcpdump": err.strip()}, f, indent=1)


if __name__ == "__main__":
    main()
