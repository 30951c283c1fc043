#!/usr/bin/env bash
# Compare shieldtap's replay throughput with tshark's on the same capture.
#
# Usage: benches/compare_tshark.sh CAPTURE
#   e.g. python3 scripts/gen_capture.py --out /tmp/big.pcap --manifest /tmp/big.json
#        cargo build --release && benches/compare_tshark.sh /tmp/big.pcap
#
# Runs, one after the other on the same file (run it once beforehand to warm the page cache
# if the numbers matter; the script reads the file once itself, for the packet count):
#   shieldtap replay CAPTURE --transactions-out /dev/null --alerts-out TMP --workers 1
# (the built-in rules run, as in any replay; their alerts go to a scratch file)
#   tshark -r CAPTURE -Y http -T fields -e http.request.method -e http.request.uri -e http.response.code
# tshark is the closest equivalent: it also reassembles TCP (desegmentation on) and parses
# HTTP, including chunked bodies. Its HTTP dissector only runs on known HTTP ports, so the
# capture's server ports (destination ports of SYNs) are added with `-d tcp.port==P,http`.
# tshark's HTTP counts are informational: tshark 4.0 reads a HEAD response that has neither
# Content-Length nor chunked encoding (nginx's answer to HEAD of a gzip-able file) as
# "body until close", losing every later response on that connection, so on captures from
# scripts/gen_capture.py it reports fewer responses than there were.
# Prints packets, transactions, each tool's wall-clock seconds, packets/s, shieldtap's
# transactions/s and the throughput ratio (tshark seconds / shieldtap seconds).
#
# Environment: SHIELDTAP (binary, default target/release/shieldtap), WORKERS (default 1).
set -euo pipefail

if [[ $# -ne 1 || ! -f "$1" ]]; then
    echo "usage: $0 CAPTURE   (pcap or pcapng file)" >&2
    exit 2
fi
cap=$1
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${SHIELDTAP:-$root/target/release/shieldtap}
workers=${WORKERS:-1}
for tool in tshark capinfos python3; do
    command -v "$tool" >/dev/null || { echo "$0: $tool is not installed (apt-get install -y tshark python3)" >&2; exit 1; }
done
[[ -x $bin ]] || { echo "$0: no $bin: run cargo build --release first (or set SHIELDTAP)" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

packets=$(capinfos -M -c -T "$cap" | awk -F'\t' 'NR == 2 { print $2 }')
bytes=$(stat -c %s "$cap")

# Server ports for tshark's Decode As: destination ports of connection openings.
mapfile -t ports < <(tshark -r "$cap" -Y 'tcp.flags.syn == 1 && tcp.flags.ack == 0' -T fields -e tcp.dstport 2>/dev/null |
    sort -n | uniq -c | sort -rn | awk '$1 > 0 { print $2 }' | head -n 16)
decode_as=()
for p in "${ports[@]}"; do
    decode_as+=(-d "tcp.port==$p,http")
done

echo "capture: $cap ($packets packets, $((bytes / 1000000)) MB)"

t0=$(now)
"$bin" replay "$cap" --transactions-out /dev/null --alerts-out "$tmp/alerts.jsonl" \
    --workers "$workers" --no-progress --summary-json "$tmp/summary.json" 2>"$tmp/shieldtap.err" || {
    echo "shieldtap failed:" >&2
    cat "$tmp/shieldtap.err" >&2
    exit 1
}
t1=$(now)
st_secs=$(elapsed "$t0" "$t1")

t0=$(now)
tshark -r "$cap" -o tcp.desegment_tcp_streams:TRUE -o http.desegment_body:TRUE "${decode_as[@]}" \
    -Y http -T fields -E separator=/t -E aggregator=/s \
    -e http.request.method -e http.request.uri -e http.response.code >"$tmp/tshark.tsv" 2>"$tmp/tshark.err" || {
    echo "tshark failed:" >&2
    cat "$tmp/tshark.err" >&2
    exit 1
}
t1=$(now)
ts_secs=$(elapsed "$t0" "$t1")

python3 - "$tmp/summary.json" "$tmp/tshark.tsv" "$packets" "$bytes" "$st_secs" "$ts_secs" "$workers" <<'EOF'
import json
import sys

summary_path, tsv, packets, nbytes, st, ts, workers = sys.argv[1:]
packets, nbytes, st, ts = int(packets), int(nbytes), float(st), float(ts)
s = json.load(open(summary_path))
http = s.get("http") or {}
tx = http.get("transactions", s.get("transactions_written"))
paired = http.get("paired")
req = resp = 0
for line in open(tsv):
    cols = line.rstrip("\n").split("\t") + ["", "", ""]
    req += len(cols[0].split())
    resp += sum(1 for c in cols[2].split() if not c.startswith("1"))  # 1xx are interim
def rate(n, secs):
    return f"{n / secs:,.0f}/s" if secs > 0 else "n/a"
def row(label, text):
    print(f"{label + ':':<30}{text}")
def mbit(secs):
    return f"{nbytes * 8 / secs / 1e6:,.0f} Mbit/s" if secs > 0 else "n/a"
row("packets", f"{packets:,}")
if isinstance(tx, int) and isinstance(paired, int):
    row("shieldtap transactions", f"{tx:,} ({paired:,} paired)")
else:
    row("shieldtap transactions", tx)
row("tshark HTTP messages", f"{req:,} requests, {resp:,} final responses")
row(f"shieldtap (--workers {workers})", f"{st:8.3f} s  {rate(packets, st)} packets  {mbit(st)}  {rate(tx or 0, st)} transactions")
row("tshark", f"{ts:8.3f} s  {rate(packets, ts)} packets  {mbit(ts)}")
row("throughput ratio", f"{ts / st:.1f}x (shieldtap over tshark)" if st > 0 else "n/a")
EOF
