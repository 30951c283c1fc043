#!/usr/bin/env bash
# Live on a mirror: the realistic capture replayed with tcpreplay onto a veth pair at fixed
# packet rates, `shieldtap run` capturing on the other end, one run per rate.
#
# Usage (root: network namespace, raw capture):
#   cargo build --release && benches/live.sh
#   RATES="25000 50000 100000" WORKERS=2 SCALE=1 benches/live.sh
#
# The capture is benches/realistic.sh's (recorded on first use by that script into
# $SHIELDTAP_BENCH_DIR/<SCALE>x). For each rate, in a fresh namespace holding a veth pair
# (MTU 65535, as the capture's loopback-sized frames need):
#   shieldtap run --interface rx --config DIR/shieldtap.toml --workers W \
#       --buffer-size-mib 256 --alerts-out FILE --summary-json FILE --metrics-listen off
# then tcpreplay --pps RATE on the other end, a 3 s pause, SIGTERM, and one line with what
# tcpreplay sent, the kernel's received and dropped counts, the queue's dropped and shed
# counts (whole connections, with shieldtap's estimate of their transactions), the
# transactions seen and how many were paired (request and response both seen), against
# the capture's manifest.
#
# Environment: SHIELDTAP (binary, default target/release/shieldtap), SHIELDTAP_BENCH_DIR,
# SCALE (default 1), RATES (packets per second, default "25000 50000 100000"), WORKERS
# (default 2), NICE (the capture threads' `[capture] nice`, e.g. -10; default unset),
# KEEP_RESULTS=DIR (keep summaries and logs there).
# Exit status: 0; 1 when a tool is missing, the capture is absent or a run fails.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${SHIELDTAP:-$root/target/release/shieldtap}
bench_dir=${SHIELDTAP_BENCH_DIR:-/var/tmp/shieldtap-bench}
scale=${SCALE:-1}
rates=${RATES:-25000 50000 100000}
workers=${WORKERS:-2}
dir=$bench_dir/${scale}x

die() { echo "$0: $*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || die "needs root (network namespace, raw capture)"
[[ -x $bin ]] || die "no $bin: run cargo build --release first (or set SHIELDTAP)"
for tool in ip tcpreplay python3; do
    command -v "$tool" >/dev/null || die "$tool is not installed (apt-get install -y iproute2 tcpreplay python3)"
done
[[ -s $dir/capture.pcap && -s $dir/manifest.json ]] ||
    die "no capture in $dir: run benches/realistic.sh once (SCALES=$scale) to record it"

if [[ -n ${KEEP_RESULTS:-} ]]; then
    out=$KEEP_RESULTS
    mkdir -p "$out"
else
    out=$(mktemp -d)
fi
ns=stlive$$
cleanup() {
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    [[ -n ${KEEP_RESULTS:-} ]] || rm -rf "$out"
}
trap cleanup EXIT

config=$dir/shieldtap.toml
if [[ -n ${NICE:-} ]]; then
    config=$out/shieldtap.toml
    { cat "$dir/shieldtap.toml"; printf '\n[capture]\nnice = %s\n' "$NICE"; } >"$config"
fi

echo "shieldtap: $bin ($("$bin" --version 2>/dev/null || echo '?')), $workers workers, $(nproc) cores${NICE:+, capture nice $NICE}"
python3 - "$dir/manifest.json" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
print(f"capture: {m['transactions']:,} transactions, {m['packets']:,} packets over {m['packet_time']['span_secs']:.0f} s")
EOF
cat "$dir/capture.pcap" >/dev/null

for rate in $rates; do
    ip netns del "$ns" 2>/dev/null || true
    ip netns add "$ns"
    ip -n "$ns" link add tx0 type veth peer name rx0
    for dev in tx0 rx0; do
        ip -n "$ns" link set "$dev" mtu 65535 up
    done
    summary=$out/summary-$rate.json
    log=$out/shieldtap-$rate.log
    ip netns exec "$ns" "$bin" run --interface rx0 --config "$config" \
        --workers "$workers" --buffer-size-mib 256 --alerts-out "$out/alerts-$rate.jsonl" \
        --summary-json "$summary" --metrics-listen off >"$log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do
        grep -q "capture started" "$log" && break
        sleep 0.1
    done
    grep -q "capture started" "$log" || die "shieldtap did not start: $(tail -3 "$log")"
    sleep 0.5
    report=$(ip netns exec "$ns" tcpreplay --pps "$rate" -i tx0 "$dir/capture.pcap" 2>&1) ||
        die "tcpreplay failed: $report"
    sleep 3
    kill -TERM "$pid"
    wait "$pid" || die "shieldtap run exited $? at $rate packets/s: $(tail -3 "$log")"
    sent=$(sed -n 's/^[[:space:]]*Successful packets:[[:space:]]*\([0-9]*\).*/\1/p' <<<"$report")
    actual=$(sed -n 's/^[[:space:]]*Rated:.*, \([0-9.]*\) pps.*/\1/p' <<<"$report")
    python3 - "$summary" "$dir/manifest.json" "$rate" "${sent:-0}" "${actual:-0}" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
m = json.load(open(sys.argv[2]))
rate, sent, actual = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
c, q, h = s["capture"], s["queue"], s["http"]
print(f"{rate:>7,} pps (tcpreplay {actual:,.0f} pps, {sent:,} sent): kernel received {c['kernel_received']:,}, "
      f"dropped {c['kernel_dropped']:,} (interface {c['interface_dropped']:,}); queue dropped "
      f"{q['dropped_segments']:,} segments; shed {q['shed_flows']:,} connections, {q['shed_packets']:,} packets, "
      f"~{q['shed_transactions_estimate']:,} transactions (peak level {q['shed_level_peak']:.2f}); "
      f"transactions {h['transactions']:,} of {m['transactions']:,}, paired {h['paired']:,}")
EOF
    ip netns del "$ns"
done
