#!/usr/bin/env bash
# Build shieldtap with profile-guided optimisation, then (when llvm-bolt is there) lay the
# binary out again with BOLT: an instrumented build replays training traffic, LLVM merges
# the profile, and the final build uses it to inline and lay out code along the paths real
# traffic takes; BOLT instruments that build, replays the same traffic, and reorders its
# basic blocks and functions and splits cold code away from hot.
#
# Usage: scripts/pgo-build.sh            -> prints the path of the result, target/pgo/shieldtap
# (of the working tree as it is: a source edit made while it runs ends up in the build)
#
# Training traffic, never the benchmark recordings (a profile trained on the capture it is
# then measured on would flatter it):
#   - every bundled sample (samples/*/capture.pcap* with its shieldtap.toml), which covers
#     attestation, BOLA, exposure, stuffing, pipelining, IPv6, gRPC and TLS;
#   - a training recording from scripts/gen_realistic.py with its own seed (2; the benches
#     use 1) and 60,000 transactions, made on first use into $SHIELDTAP_PGO_TRAIN
#     (default /var/tmp/shieldtap-pgo-train), replayed with 1 and 2 workers. Recording
#     needs root, nginx, tcpdump, ip (a private network namespace) and python3-jwt; without
#     them the samples alone train the profile.
#
# Needs llvm-profdata of the LLVM that rustc is built on (rustc -vV: "LLVM version"), found
# as llvm-profdata-MAJOR, /usr/lib/llvm-MAJOR/bin/llvm-profdata, rustup's llvm-tools
# component, or $LLVM_PROFDATA; on Debian: apt-get install -y llvm-MAJOR. BOLT needs
# llvm-bolt and merge-fdata of the same LLVM (apt-get install -y bolt-MAJOR, or $LLVM_BOLT
# with merge-fdata next to it); BOLT=0 skips it. The BOLT result has no debug info.
#
# Environment: SHIELDTAP_PGO_TRAIN, LLVM_PROFDATA, LLVM_BOLT, BOLT (default 1),
# PGO_TARGET_DIR (default target/pgo; holds the builds, the profiles and the result).
# Both builds use the dist profile (fat LTO, one codegen unit): about twice a
# `cargo build --profile dist`.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
tdir=${PGO_TARGET_DIR:-$root/target/pgo}
train=${SHIELDTAP_PGO_TRAIN:-/var/tmp/shieldtap-pgo-train}
bolt_wanted=${BOLT:-1}
die() { echo "$0: $*" >&2; exit 1; }

major=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
[[ -n $major ]] || die "cannot read rustc's LLVM version from rustc -vV"
sysroot=$(rustc --print sysroot)

# The first of the candidates that runs, as an absolute path or a command name.
find_tool() {
    local c
    for c in "$@"; do
        if command -v "$c" >/dev/null 2>&1; then
            echo "$c"
            return
        fi
    done
}

profdata=${LLVM_PROFDATA:-$(find_tool "llvm-profdata-$major" "/usr/lib/llvm-$major/bin/llvm-profdata" \
    "$sysroot"/lib/rustlib/*/bin/llvm-profdata)}
[[ -n $profdata ]] || die "no llvm-profdata for LLVM $major (apt-get install -y llvm-$major, or set LLVM_PROFDATA)"
have=$("$profdata" --version 2>/dev/null | sed -n 's/.*LLVM version \([0-9]*\).*/\1/p' | head -1)
[[ $have == "$major" ]] || die "$profdata is LLVM ${have:-?}, rustc is LLVM $major: the profile formats differ"

bolt=
if [[ $bolt_wanted != 0 ]]; then
    bolt=${LLVM_BOLT:-$(find_tool "llvm-bolt-$major" "/usr/lib/llvm-$major/bin/llvm-bolt")}
    if [[ -z $bolt ]]; then
        echo "pgo: no llvm-bolt for LLVM $major (apt-get install -y bolt-$major): PGO only" >&2
    fi
fi
if [[ -n $bolt ]]; then
    merge_fdata=$(dirname "$(readlink -f "$(command -v "$bolt")")")/merge-fdata
    [[ -x $merge_fdata ]] || die "no merge-fdata next to $bolt"
fi

# The recorder's clients sign tokens with PyJWT (python3-jwt), which a pyenv python on PATH
# may lack while the system one has it.
py=$(for c in python3 /usr/bin/python3; do
    if "$c" -c 'import jwt, cryptography' >/dev/null 2>&1; then
        echo "$c"
        break
    fi
done)
if [[ ! -s $train/capture.pcap ]] && [[ $(id -u) -eq 0 && -n $py ]] &&
    command -v nginx >/dev/null && command -v tcpdump >/dev/null && command -v ip >/dev/null; then
    echo "pgo: recording the training capture into $train (about a minute) ..." >&2
    rm -rf "$train"
    "$py" "$root/scripts/gen_realistic.py" --out-dir "$train" --seed 2 \
        --transactions 60000 --span-secs 12 >&2 || {
        rm -rf "$train"
        echo "pgo: the training recording failed" >&2
    }
fi
[[ -s $train/capture.pcap ]] ||
    echo "pgo: no training recording (needs root, nginx, tcpdump, ip and python3-jwt); samples only" >&2

# Replays the training traffic with binary $1. Alerts and summaries are not wanted; a
# failing replay is (a broken training run would silently train nothing).
train_with() {
    local bin=$1 cap dir w
    run() {
        "$bin" replay "$@" --no-progress --alerts-out /dev/null --metrics-listen off >/dev/null 2>&1 ||
            die "training replay failed: $bin replay $*"
    }
    # From the repository root: sample configurations name their files relative to it.
    cd "$root"
    for cap in samples/*/capture.pcap*; do
        dir=$(dirname "$cap")
        if [[ -f $dir/shieldtap.toml ]]; then
            run "$cap" --config "$dir/shieldtap.toml"
        else
            run "$cap"
        fi
    done
    if [[ -s $train/capture.pcap ]]; then
        for w in 1 2; do
            run "$train/capture.pcap" --config "$train/shieldtap.toml" --workers "$w"
        done
    fi
}

dist_build() {
    RUSTFLAGS="${RUSTFLAGS:-} $1" CARGO_TARGET_DIR=$2 \
        cargo build --profile dist --locked --manifest-path "$root/Cargo.toml" --bin shieldtap
}

raw=$tdir/profraw
merged=$tdir/shieldtap.profdata
# Cargo does not track the profile's contents: the optimised build always starts clean.
rm -rf "$raw" "$tdir/fdata" "$tdir/use" "$tdir/shieldtap"
mkdir -p "$raw"

echo "pgo: instrumented build ..." >&2
dist_build "-Cprofile-generate=$raw" "$tdir/gen"
echo "pgo: training ..." >&2
train_with "$tdir/gen/dist/shieldtap"
"$profdata" merge -o "$merged" "$raw"

echo "pgo: optimised build ..." >&2
if [[ -z $bolt ]]; then
    dist_build "-Cprofile-use=$merged" "$tdir/use"
    cp "$tdir/use/dist/shieldtap" "$tdir/shieldtap"
    echo "$tdir/shieldtap"
    exit 0
fi

# BOLT rewrites code it can move: the link keeps the relocations for it.
dist_build "-Cprofile-use=$merged -Clink-arg=-Wl,--emit-relocs" "$tdir/use"
pgo_bin=$tdir/use/dist/shieldtap
mkdir -p "$tdir/fdata"
echo "pgo: BOLT instrumentation and training ..." >&2
# BOLT warns about hand-written assembly it leaves alone (aws-lc): its output goes to a log.
bolt_log=$tdir/bolt.log
"$bolt" "$pgo_bin" -instrument -o "$tdir/shieldtap.bolt-inst" \
    --instrumentation-file="$tdir/fdata/prof" --instrumentation-file-append-pid >"$bolt_log" 2>&1 ||
    die "llvm-bolt -instrument failed; see $bolt_log"
train_with "$tdir/shieldtap.bolt-inst"
"$merge_fdata" "$tdir"/fdata/prof.*.fdata >"$tdir/shieldtap.fdata"
"$bolt" "$pgo_bin" -o "$tdir/shieldtap" -data="$tdir/shieldtap.fdata" \
    -reorder-blocks=ext-tsp -reorder-functions=cdsort -split-functions -split-all-cold \
    -split-eh -icf=1 -use-gnu-stack >>"$bolt_log" 2>&1 || die "llvm-bolt failed; see $bolt_log"
echo "$tdir/shieldtap"
