#!/usr/bin/env bash
# Scale-out over NATS JetStream: what a sensor pays to publish and what a correlator core
# does. On the realistic capture (benches/realistic.sh records it), with a local
# single-node nats-server (JetStream on a temporary store):
#   1. replay as one process (built-in rules, every token verified): the baseline;
#   2. replay as a sensor ([export], 4 partitions): CPU per transaction and what it
#      published (events, envelopes, bytes);
#   3. one correlator for all partitions (--until-finished), then two correlators of two
#      partitions each, run one after the other so each has the machine: events per CPU
#      second and per wall second of each, and whether the alerts equal the baseline's.
# Usage: cargo build --release && benches/scaleout.sh [capture-dir]   (default: the 1x capture)
# Prints one table; CPU is user+sys of the process (every thread), from /usr/bin/time.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${SHIELDTAP:-$root/target/release/shieldtap}
bench_dir=${SHIELDTAP_BENCH_DIR:-/var/tmp/shieldtap-bench}
dir=${1:-$bench_dir/1x}
die() { echo "$0: $*" >&2; exit 1; }
[[ -x $bin ]] || die "no $bin: run cargo build --release first (or set SHIELDTAP)"
[[ -x /usr/bin/time ]] || die "/usr/bin/time is not installed (apt-get install -y time)"
command -v jq >/dev/null || die "jq is not installed (apt-get install -y jq)"
command -v nats-server >/dev/null || die "nats-server is not installed (apt-get install -y nats-server)"
[[ -s $dir/capture.pcap ]] || die "no $dir/capture.pcap: run benches/realistic.sh first (it records it)"
tmp=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
nats-server -js -a 127.0.0.1 -p "$port" -sd "$tmp/js" >"$tmp/nats.log" 2>&1 &
nats=$!
trap 'kill $nats 2>/dev/null; wait $nats 2>/dev/null; rm -rf "$tmp"' EXIT
sleep 1
cat "$dir/shieldtap.toml" >"$tmp/sensor.toml"
cat >>"$tmp/sensor.toml" <<TOML

[nats]
servers = ["nats://127.0.0.1:$port"]
partitions = 4
max_stream_mib = 8192

[export]
sensor = "bench"

[correlate]
sensors = ["bench"]
TOML
cat "$dir/capture.pcap" >/dev/null
timed() { # label, then the command: prints "wall user sys rss_kib" into $tmp/time
    /usr/bin/time -f '%e %U %S %M' -o "$tmp/time" "$@"
}
row() { # label events
    read -r wall user sys rss <"$tmp/time"
    cpu=$(echo "$user + $sys" | bc)
    printf '%-34s %10s %8s %8s %12s %12s %8s\n' "$1" "$2" "$wall" "$cpu" \
        "$(echo "$2 / $cpu" | bc)" "$(echo "$2 / $wall" | bc)" "$((rss / 1024))"
}
printf '%-34s %10s %8s %8s %12s %12s %8s\n' run items wall_s cpu_s per_cpu_s per_wall_s rss_MiB
(cd "$root" && timed "$bin" replay "$dir/capture.pcap" --config "$dir/shieldtap.toml" --workers 1 \
    --no-progress --alerts-out "$tmp/single.jsonl" --summary-json "$tmp/single.json" --metrics-listen off 2>/dev/null)
tx=$(jq .http.transactions "$tmp/single.json")
row "one process (transactions)" "$tx"
(cd "$root" && timed "$bin" replay "$dir/capture.pcap" --config "$tmp/sensor.toml" --workers 1 \
    --no-progress --alerts-out /dev/null --summary-json "$tmp/sensor.json" --metrics-listen off 2>/dev/null)
row "sensor (transactions)" "$tx"
events=$(jq .export.events_published "$tmp/sensor.json")
echo "sensor published: $events events, $(jq .export.envelopes_published "$tmp/sensor.json") envelopes, $(( $(jq .export.bytes_published "$tmp/sensor.json") / 1048576 )) MiB"
# Each correlator run starts from the stream's start: clear the checkpoints between runs.
run_correlator() { # label partitions out
    (cd "$root" && timed "$bin" correlate --config "$tmp/sensor.toml" --partitions "$2" --until-finished \
        --alerts-out "$3" --summary-json "$tmp/corr.json" --metrics-listen off 2>/dev/null)
    ev=$(jq '[.partitions[].events] | add' "$tmp/corr.json")
    row "$1" "$ev"
}
reset_checkpoints() {
    # Deleting the object store's stream is enough: correlators then start from the start.
    kill $nats; wait $nats 2>/dev/null || true
    rm -rf "$tmp/js/jetstream/\$G/streams/OBJ_shieldtap-checkpoints" "$tmp/js/jetstream/\$G/streams/SHIELDTAP_ALERTS"
    nats-server -js -a 127.0.0.1 -p "$port" -sd "$tmp/js" >>"$tmp/nats.log" 2>&1 &
    nats=$!
    sleep 1
}
run_correlator "correlator, partitions 0-3 (events)" 0,1,2,3 "$tmp/all.jsonl"
reset_checkpoints
run_correlator "correlator A, partitions 0,1 (events)" 0,1 "$tmp/a.jsonl"
run_correlator "correlator B, partitions 2,3 (events)" 2,3 "$tmp/b.jsonl"
# The reference for the alerts: one process whose detect stage is split as the deployment's
# (detect_shards = partitions). While no table is over its share of the memory budget this is
# also what one shard gives; under pressure the per-shard shares make the difference.
cat "$dir/shieldtap.toml" >"$tmp/shards.toml"
printf '\n[runtime]\ndetect_shards = 4\n' >>"$tmp/shards.toml"
(cd "$root" && "$bin" replay "$dir/capture.pcap" --config "$tmp/shards.toml" --workers 1 --no-progress \
    --alerts-out "$tmp/shards.jsonl" --metrics-listen off 2>/dev/null)
same() { # reference, then correlator outputs
    local ref=$1
    shift
    diff -q <(jq -cS 'del(.id)' "$@" | sort) <(jq -cS . "$ref" | sort) >/dev/null && echo yes || echo NO
}
echo "alerts: one process $(wc -l <"$tmp/single.jsonl") (4 detect shards: $(wc -l <"$tmp/shards.jsonl")); equal to one process with 4 detect shards: one correlator $(same "$tmp/shards.jsonl" "$tmp/all.jsonl"), two correlators $(same "$tmp/shards.jsonl" "$tmp/a.jsonl" "$tmp/b.jsonl"); equal to one process with 1 shard: $(same "$tmp/single.jsonl" "$tmp/a.jsonl" "$tmp/b.jsonl")"
