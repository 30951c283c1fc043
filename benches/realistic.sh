#!/usr/bin/env bash
# Replay the realistic benchmark captures (1x and 3x) with 1 and 2 workers and print a table.
#
# Usage: benches/realistic.sh            (as root the first time: the captures are recorded)
#   e.g. cargo build --release && benches/realistic.sh
#        RUNS=3 SHIELDTAP=/path/to/shieldtap benches/realistic.sh
#
# The captures come from scripts/gen_realistic.py (real nginx, a Python API and asyncio
# clients in a private network namespace: 400,000 transactions over >= 66 s of packet time
# for 1x, 1,200,000 over >= 198 s for 3x; see its docstring). They are recorded on first use
# into $SHIELDTAP_BENCH_DIR/1x and /3x (default /var/tmp/shieldtap-bench; about 0.9 and 2.7 GB)
# and reused afterwards (delete a directory to record it again). Each directory holds
# capture.pcap, shieldtap.toml (every token's key), user_jwks.json and manifest.json.
#
# For each capture and for W = 1 and 2, after reading the capture to warm the page cache, runs
#   shieldtap replay CAP --config DIR/shieldtap.toml --no-progress --alerts-out FILE \
#       --summary-json FILE --metrics-listen off --workers W
# (the built-in rules; tokens verified) and prints: transactions (from the summary), wall
# seconds, CPU seconds over all threads (user+sys of the child, wait4), transactions per CPU
# second and per wall second, peak RSS, CPU seconds per thread (from /proc/PID/task/*/stat
# polled every 100 ms), the 1 -> 2 worker scaling (transactions per wall second), the 3x/1x
# peak RSS ratio and whether the alerts are byte-identical between worker counts (sha256).
#
# Environment: SHIELDTAP (binary, default target/release/shieldtap), SHIELDTAP_BENCH_DIR,
# RUNS (repeats of each replay, default 1; the table shows medians), SCALES (default "1 3"),
# WORKERS (default "1 2"), KEEP_RESULTS=DIR (keep alerts, summaries and results.jsonl there),
# BASELINE (a second binary to compare against: each replay runs with both, back to back,
# the order alternating between runs, and the table adds candidate/baseline ratios of CPU
# seconds, per thread and of peak RSS over the pairs; use RUNS=3 or more. A VM's speed
# drifts by 10% or more within an hour, so builds measured an hour apart do not compare),
# SIDE_BY_SIDE=1 (with BASELINE: the two replays of a pair run at the same time instead of
# one after the other, so that both see the host as it is in that moment: on this 2-core
# VM the pairs' CPU ratios spread over a few percent where back-to-back pairs spread over
# tens of percent. Each build then has about half the cores: its wall seconds, transactions
# per wall second and 1 -> 2 worker scaling are not what it makes alone; its CPU seconds,
# per thread and in all, and its peak RSS are),
# INSTRUCTIONS=1 (each replay runs under valgrind's cachegrind, tens of times slower: the
# table adds instructions per transaction over all threads and, with BASELINE, their
# candidate/baseline ratio, which a host's drifting speed does not blur; its seconds and
# peak RSS are valgrind's, not shieldtap's), INSTRUCTIONS=cache (the same with cachegrind's
# cache simulator set to this host's L1 data cache and its L2 as the last level, from
# sysfs: the table adds L1d and L2 misses per transaction and their ratios; slower still.
# Counts of misses are the same run after run, where timing a change of 1 to 3% is lost in
# this host's drift and in the layout of the code).
# Exit status: 0; 1 when a tool is missing, a capture cannot be made or a replay fails;
# 3 when alerts differ between worker counts.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${SHIELDTAP:-$root/target/release/shieldtap}
bench_dir=${SHIELDTAP_BENCH_DIR:-/var/tmp/shieldtap-bench}
runs=${RUNS:-1}
scales=${SCALES:-1 3}
workers_list=${WORKERS:-1 2}
baseline=${BASELINE:-}
side_by_side=${SIDE_BY_SIDE:-}

die() { echo "$0: $*" >&2; exit 1; }
command -v python3 >/dev/null || die "python3 is not installed (apt-get install -y python3)"
[[ -x $bin ]] || die "no $bin: run cargo build --release first (or set SHIELDTAP)"
[[ -z $baseline || -x $baseline ]] || die "BASELINE=$baseline is not an executable"
[[ -z $side_by_side || -n $baseline ]] || die "SIDE_BY_SIDE=1 compares two builds: set BASELINE too"
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer, not '$runs'"
[[ -r /proc/self/task ]] || die "/proc is not mounted: per-thread CPU cannot be read"
instructions=${INSTRUCTIONS:-}
[[ -z $instructions ]] || command -v valgrind >/dev/null || die "INSTRUCTIONS=$instructions needs valgrind (apt-get install -y valgrind)"

# This host's cache at LEVEL of TYPE as cachegrind takes it (bytes,ways,line bytes), from
# sysfs; empty when sysfs does not say.
cache_of() {
    local d size
    for d in /sys/devices/system/cpu/cpu0/cache/index*; do
        [[ $(cat "$d/level" 2>/dev/null) == "$1" && $(cat "$d/type" 2>/dev/null) == "$2" ]] || continue
        size=$(cat "$d/size")
        case $size in
            *K) size=$((${size%K} * 1024)) ;;
            *M) size=$((${size%M} * 1024 * 1024)) ;;
        esac
        echo "$size,$(cat "$d/ways_of_associativity"),$(cat "$d/coherency_line_size")"
        return
    done
}

cachesim=(--cache-sim=no)
case $instructions in
    "" | 1) ;;
    cache)
        # Misses of this host's L1 data cache and of its L2 as the last level: a VM's L3
        # is shared with other guests, its share unknown. Most L2 misses hit the L3 and
        # cost far less than DRAM, so the L2 count is an upper bound on what misses cost.
        d1=$(cache_of 1 Data) ll=$(cache_of 2 Unified)
        [[ -n $d1 && -n $ll ]] || die "INSTRUCTIONS=cache: sysfs does not give this host's L1d and L2"
        cachesim=(--cache-sim=yes "--D1=$d1" "--LL=$ll")
        echo "cache simulated: D1 $d1, LL (this host's L2) $ll (bytes, ways, line bytes)"
        ;;
    *) die "INSTRUCTIONS must be 1 or cache, not '$instructions'" ;;
esac

if [[ -n ${KEEP_RESULTS:-} ]]; then
    out=$KEEP_RESULTS
    mkdir -p "$out"
    rm -f "$out/results.jsonl"
else
    out=$(mktemp -d)
    trap 'rm -rf "$out"' EXIT
fi

# Record the captures that are not there yet.
for s in $scales; do
    dir=$bench_dir/${s}x
    if [[ -s $dir/capture.pcap && -s $dir/manifest.json && -s $dir/shieldtap.toml ]]; then
        continue
    fi
    [[ $(id -u) -eq 0 ]] || die "$dir has no capture yet; recording it needs root (network namespace, tcpdump)"
    for tool in ip tcpdump nginx; do
        command -v "$tool" >/dev/null || die "$tool is not installed (apt-get install -y iproute2 tcpdump nginx-light)"
    done
    echo "recording $dir (scale $s; takes minutes) ..." >&2
    rm -rf "$dir"
    python3 "$root/scripts/gen_realistic.py" --out-dir "$dir" --scale "$s" >&2 || {
        rm -rf "$dir"
        die "scripts/gen_realistic.py --scale $s failed"
    }
done

# One replay of capture directory DIR (scale S) with W workers, run R, by ENTRY
# (build:executable), appended to results.jsonl.
replay_once() {
    local dir=$1 s=$2 w=$3 r=$4 entry=$5
    local build=${entry%%:*} exe=${entry#*:}
    local tag=${s}x-w$w-r$r${baseline:+-$build}
    local counting=()
    if [[ -n $instructions ]]; then
        counting=(valgrind --tool=cachegrind "${cachesim[@]}" --cachegrind-out-file="$out/$tag.cg")
    fi
    python3 "$root/benches/realistic_run.py" run --label "${s}x" --capture-dir "$dir" --workers "$w" \
        ${baseline:+--build "$build"} --run "$r" ${instructions:+--cachegrind "$out/$tag.cg"} \
        --summary "$out/$tag.summary.json" --alerts "$out/$tag.alerts.jsonl" --stderr "$out/$tag.stderr" \
        --out "$out/results.jsonl" -- \
        "${counting[@]}" "$exe" replay "$dir/capture.pcap" --config "$dir/shieldtap.toml" --no-progress \
        --alerts-out "$out/$tag.alerts.jsonl" --summary-json "$out/$tag.summary.json" \
        --metrics-listen off --workers "$w" || {
        cat "$out/$tag.stderr" >&2
        die "replay of $dir with $w worker(s) by $exe failed"
    }
}

echo "shieldtap: $bin ($("$bin" --version 2>/dev/null || echo '?'))"
if [[ -n $side_by_side ]]; then
    echo "baseline: $baseline (each run side by side with the candidate above: both at once;" \
        "compare CPU seconds and peak RSS, not wall seconds)"
elif [[ -n $baseline ]]; then
    echo "baseline: $baseline (runs alternate with the candidate above)"
fi
echo "host: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
for s in $scales; do
    dir=$bench_dir/${s}x
    python3 - "$dir/manifest.json" "${s}x" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]}: {m['transactions']:,} transactions, {m['packets']:,} packets, {m['capture_bytes'] / 1e6:,.0f} MB, "
      f"{m['packet_time']['span_secs']:.0f} s of packet time; {m['client_addresses']:,} addresses, {m['devices']:,} devices, "
      f"{m['users']:,} users; gzip {m['gzip_share']:.0%}, chunked {m['chunked_share']:.0%}, IPv6 {m['ipv6_share']:.0%}; "
      f"{m['transactions'] / m['packet_time']['span_secs']:,.0f} transactions per packet-time second")
EOF
    for w in $workers_list; do
        for ((r = 1; r <= runs; r++)); do
            # Warm the page cache before every replay (pair), not once: this VM gives page
            # cache back to the host at a few MB/s, and a replay that reads part of its
            # capture from disk costs more CPU (1x, one worker: 1.0 to 2.4 CPU s more
            # of about 7 for a file read cold).
            cat "$dir/capture.pcap" >/dev/null
            # With a baseline, the two builds run back to back, the first of the pair
            # alternating from run to run.
            if [[ -z $baseline ]]; then
                order=("-:$bin")
            elif ((r % 2)); then
                order=("baseline:$baseline" "candidate:$bin")
            else
                order=("candidate:$bin" "baseline:$baseline")
            fi
            pids=()
            for entry in "${order[@]}"; do
                if [[ -n $side_by_side ]]; then
                    replay_once "$dir" "$s" "$w" "$r" "$entry" &
                    pids+=($!)
                else
                    replay_once "$dir" "$s" "$w" "$r" "$entry"
                fi
            done
            for pid in "${pids[@]}"; do
                wait "$pid" || die "a side-by-side replay of $dir with $w worker(s) failed"
            done
        done
    done
done
echo
python3 "$root/benches/realistic_run.py" table "$out/results.jsonl"
# The 3x/1x peak RSS ratio is about duration only when both captures carry the same rate.
manifests=()
for s in $scales; do manifests+=("$bench_dir/${s}x/manifest.json"); done
python3 - "${manifests[@]}" <<'EOF'
import json, sys
rates = {p: (m := json.load(open(p)))["transactions"] / m["packet_time"]["span_secs"] for p in sys.argv[1:]}
if rates and max(rates.values()) > 1.1 * min(rates.values()):
    print("warning: the captures' rates differ by more than 10% (" +
          ", ".join(f"{p}: {r:,.0f}/s" for p, r in rates.items()) +
          "): one was recorded late; delete its directory to record it again")
EOF
