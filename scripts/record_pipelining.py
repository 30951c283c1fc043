#!/usr/bin/env python3
"""Record a deep-pipelining capture: one keep-alive connection carrying 1,000 GETs sent
without waiting, answered by nginx on loopback.

Usage (as root, or with CAP_NET_RAW for tcpdump):

    python3 scripts/record_pipelining.py                       # into tests/fixtures/pipelining/
    python3 scripts/record_pipelining.py --out-dir /tmp/pipe --count 1000

Needs Python 3.11 (standard library only), tcpdump and nginx (Debian: `apt-get install -y
tcpdump nginx-light`). Reuses the helpers of ``scripts/record_samples.py``.

It runs in a network namespace it creates (``ip netns``) whose loopback has an Ethernet MTU
(1500): on the default 64 KiB loopback MTU the kernel merges nginx's back-to-back small
writes into segments of up to 46 KiB (~300 responses each); with Ethernet-sized segments
the capture looks like what a mirror port shows (about nine responses per segment).

The client (a raw socket: ``http.client`` cannot pipeline) writes all ``GET /item/N``
requests (N = 0..count-1) in one ``sendall`` and only then reads the responses. nginx
answers each with a tiny body ``N\\n`` and an ``X-Item: N`` header, so every response names
the request it answers. Written to ``<out-dir>/``:

- ``capture.pcap``: ``tcpdump -i lo`` filtered to the server port;
- ``expected.jsonl``: one line per request in order, from the client's own record:
  ``{"path": "/item/N", "status": 200, "item": "N"}``;
- ``README.md``: how the capture was made.

- ``capture-gap.pcap``: the same capture without response 500's bytes, written by
  ``scripts/drop_response.py capture.pcap capture-gap.pcap --index 500``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record_samples import (  # noqa: E402  (the helpers live beside this script)
    REPO,
    Nginx,
    RawHttpClient,
    Tcpdump,
    log,
    nginx_version,
    pick_port,
)

NGINX_CONF = """\
worker_processes 1;
pid {work}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    access_log off;
    server_tokens off;
    keepalive_requests 100000;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    server {{
        listen 127.0.0.1:{port};
        default_type text/plain;
        location ~ ^/item/([0-9]+)$ {{
            add_header X-Item $1;
            return 200 "$1\\n";
        }}
    }}
}}
"""


def record(out_dir: Path, count: int) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    port = pick_port(18090)
    with tempfile.TemporaryDirectory(prefix="shieldtap-pipe-") as tmp:
        work = Path(tmp)
        cap = work / "capture.pcap"
        conf = NGINX_CONF.format(work=work, port=port)
        requests = b"".join(
            f"GET /item/{n} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: pipeline-test\r\n\r\n".encode()
            for n in range(count)
        )
        rows = []
        with Nginx(work, conf, [("127.0.0.1", port)]):
            dump = Tcpdump("lo", cap, f"tcp port {port}")
            with dump.start():
                with RawHttpClient("127.0.0.1", port) as c:
                    # Send everything before reading anything; a thread sends so that
                    # reading starts at once (neither side's buffers have to hold it all).
                    sender = threading.Thread(target=c.send, args=(requests,))
                    sender.start()
                    for n in range(count):
                        r = c.read_response("GET")
                        item = r.header("X-Item")
                        if item != str(n) or r.body != f"{n}\n".encode():
                            raise RuntimeError(f"response {n} answers {item!r}: {r.body!r}")
                        rows.append({"path": f"/item/{n}", "status": r.status, "item": item})
                    sender.join()
                dump.stop()
        (out_dir / "capture.pcap").write_bytes(cap.read_bytes())
    with open(out_dir / "expected.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps(row, sort_keys=True) + "\n")
    (out_dir / "README.md").write_text(
        f"""# Deep pipelining: {count} GETs on one connection, nginx {nginx_version()}

Recorded by `scripts/record_pipelining.py --count {count}`: a raw-socket Python client sends
{count} `GET /item/N HTTP/1.1` requests (N = 0..{count - 1}) in one `sendall` before reading
any response, over one keep-alive connection to nginx on 127.0.0.1:{port}; nginx answers each
with `X-Item: N` and the body `N\\n`. Captured with `tcpdump -i lo -s 0 -U 'tcp port {port}'`
in a network namespace whose loopback has MTU 1500 (Ethernet-sized segments).

`expected.jsonl` is the client's own record (every response checked against its request).
`capture-gap.pcap` is this capture minus the bytes of response {count // 2} (the TCP segments
carrying only it dropped, those shared with its neighbours trimmed), made by
`scripts/drop_response.py capture.pcap capture-gap.pcap --index {count // 2}`.
"""
    )
    dropped = subprocess.run(
        [sys.executable, str(Path(__file__).resolve().parent / "drop_response.py"),
         str(out_dir / "capture.pcap"), str(out_dir / "capture-gap.pcap"), "--index", str(count // 2)],
        check=True, capture_output=True, text=True, timeout=120,
    )
    log(dropped.stdout.strip())
    log(f"wrote {out_dir} ({(out_dir / 'capture.pcap').stat().st_size} bytes of capture)")


def in_netns(argv: list[str]) -> None:
    """Re-runs this script with `argv` inside a fresh namespace (removed afterwards)."""
    ns = f"shieldtap-pipe-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=30)
    try:
        ns_run = ["ip", "netns", "exec", ns]
        subprocess.run([*ns_run, "ip", "link", "set", "lo", "mtu", "1500", "up"], check=True, timeout=30)
        subprocess.run([*ns_run, sys.executable, __file__, *argv, "--inside-netns"], check=True, timeout=600)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False, timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", type=Path, default=REPO / "tests" / "fixtures" / "pipelining")
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--inside-netns", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inside_netns:
        record(args.out_dir, args.count)
    else:
        in_netns(["--out-dir", str(args.out_dir.resolve()), "--count", str(args.count)])


if __name__ == "__main__":
    main()
