#!/usr/bin/env bash
# HTTP/2 (h2c) and gRPC throughput: replays the h2c and gRPC benchmark captures with 1 and 2
# workers and prints transactions per CPU second (all threads), wall time and peak RSS.
#
# Usage: benches/h2.sh        (as root the first time: the captures are recorded)
#   e.g. cargo build --release && benches/h2.sh
#
# Captures (recorded on first use into $SHIELDTAP_BENCH_DIR/h2c and /grpc, default
# /var/tmp/shieldtap-bench; delete a directory to record it again):
#   h2c   scripts/gen_h2_bench.py: h2load (nghttp2) against Debian nginx with `listen http2`,
#         200,000 requests on 100 connections of 10 concurrent streams, 4,000 JSON documents
#         of 200 B to 8 KB (gzip), approov-token and authorization on every request.
#   grpc  scripts/gen_grpc_bench.py: 40,000 grpcio calls on 200 app channels against the
#         samples/grpc shop (unary, server streaming, gzip messages), tokens on every call,
#         the shop's descriptor set configured.
# Each replay: shieldtap replay CAP --config DIR/shieldtap.toml --workers W --no-progress
#   --alerts-out /dev/null --summary-json FILE --metrics-listen off (built-in rules, tokens
# verified), timed by /usr/bin/time (user+sys of the process: every thread).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${SHIELDTAP:-$root/target/release/shieldtap}
bench_dir=${SHIELDTAP_BENCH_DIR:-/var/tmp/shieldtap-bench}
die() { echo "$0: $*" >&2; exit 1; }
[[ -x $bin ]] || die "no $bin: run cargo build --release first (or set SHIELDTAP)"
[[ -x /usr/bin/time ]] || die "/usr/bin/time is not installed (apt-get install -y time)"
command -v jq >/dev/null || die "jq is not installed (apt-get install -y jq)"
if [[ ! -s $bench_dir/h2c/capture.pcap ]]; then
    /usr/bin/python3 "$root/scripts/gen_h2_bench.py" "$bench_dir/h2c" 200000
fi
if [[ ! -s $bench_dir/grpc/capture.pcap ]]; then
    (cd "$root" && /usr/bin/python3 scripts/gen_grpc_bench.py "$bench_dir/grpc" 40000)
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '%-6s %7s %10s %8s %8s %12s %9s\n' capture workers transactions wall_s cpu_s tx_per_cpu_s rss_MiB
for cap in h2c grpc; do
    dir=$bench_dir/$cap
    cat "$dir/capture.pcap" >/dev/null
    for w in 1 2; do
        (cd "$root" && /usr/bin/time -f '%e %U %S %M' -o "$tmp/time" "$bin" replay "$dir/capture.pcap" \
            --config "$dir/shieldtap.toml" --workers "$w" --no-progress --alerts-out /dev/null \
            --summary-json "$tmp/summary.json" --metrics-listen off >/dev/null 2>&1) \
            || die "replay of $cap with $w workers failed"
        read -r wall user sys rss <"$tmp/time"
        tx=$(jq .http.transactions "$tmp/summary.json")
        cpu=$(echo "$user + $sys" | bc)
        printf '%-6s %7s %10s %8s %8s %12s %9s\n' "$cap" "$w" "$tx" "$wall" "$cpu" \
            "$(echo "$tx / $cpu" | bc)" "$((rss / 1024))"
    done
done
