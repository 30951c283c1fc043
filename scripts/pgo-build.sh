#!/usr/bin/env bash
# Build shieldtap with profile-guided optimisation: an instrumented build replays training
# traffic, LLVM merges the profile, and the final build uses it to lay out hot code and
# inline along the paths real traffic takes.
#
# Usage: scripts/pgo-build.sh            -> target/pgo/dist/shieldtap
#
# Training traffic, never the benchmark recordings (a profile trained on the capture it is
# then measured on would flatter it):
#   - every bundled sample (samples/*/capture.pcap with its shieldtap.toml), which covers
#     attestation, BOLA, exposure, stuffing, pipelining, IPv6, gRPC and TLS;
#   - a training recording from scripts/gen_realistic.py with its own seed (2; the benches
#     use 1) and 60,000 transactions, made on first use into $SHIELDTAP_PGO_TRAIN
#     (default /var/tmp/shieldtap-pgo-train). Recording needs root, nginx, tcpdump and ip
#     (a private network namespace) and python3-jwt; without them the samples alone train
#     the profile.
#
# Needs llvm-profdata of the LLVM that rustc is built on (rustc -vV: "LLVM version"), found
# as llvm-profdata-MAJOR, /usr/lib/llvm-MAJOR/bin/llvm-profdata, rustup's llvm-tools
# component, or $LLVM_PROFDATA. On Debian: apt-get install -y llvm-MAJOR.
#
# Environment: SHIELDTAP_PGO_TRAIN (training recording directory), LLVM_PROFDATA,
# PGO_TARGET_DIR (default target/pgo; holds the instrumented build, the profiles and the
# final build). Both builds use the dist profile (fat LTO, one codegen unit): about twice a
# `cargo build --profile dist`.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
tdir=${PGO_TARGET_DIR:-$root/target/pgo}
train=${SHIELDTAP_PGO_TRAIN:-/var/tmp/shieldtap-pgo-train}
die() { echo "$0: $*" >&2; exit 1; }

major=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
[[ -n $major ]] || die "cannot read rustc's LLVM version from rustc -vV"
profdata=${LLVM_PROFDATA:-}
if [[ -z $profdata ]]; then
    sysroot=$(rustc --print sysroot)
    for c in "llvm-profdata-$major" "/usr/lib/llvm-$major/bin/llvm-profdata" \
        "$sysroot"/lib/rustlib/*/bin/llvm-profdata; do
        if command -v "$c" >/dev/null 2>&1; then
            profdata=$c
            break
        fi
    done
fi
[[ -n $profdata ]] || die "no llvm-profdata for LLVM $major (apt-get install -y llvm-$major, or set LLVM_PROFDATA)"
have=$("$profdata" --version 2>/dev/null | sed -n 's/.*LLVM version \([0-9]*\).*/\1/p' | head -1)
[[ $have == "$major" ]] || die "$profdata is LLVM ${have:-?}, rustc is LLVM $major: the profile formats differ"

raw=$tdir/profraw
merged=$tdir/shieldtap.profdata
rm -rf "$raw"
mkdir -p "$raw"

echo "pgo: instrumented build ..." >&2
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$raw" CARGO_TARGET_DIR=$tdir/gen \
    cargo build --profile dist --locked --manifest-path "$root/Cargo.toml" --bin shieldtap
gen=$tdir/gen/dist/shieldtap

replay() {
    # Alerts and summaries are not wanted; a failing replay is (a broken training run
    # would silently train nothing).
    "$gen" replay "$@" --no-progress --alerts-out /dev/null --metrics-listen off >/dev/null 2>&1 ||
        die "training replay failed: $gen replay $*"
}

echo "pgo: training on the bundled samples ..." >&2
# From the repository root: sample configurations name their files relative to it.
cd "$root"
for cap in samples/*/capture.pcap*; do
    dir=$(dirname "$cap")
    if [[ -f $dir/shieldtap.toml ]]; then
        replay "$cap" --config "$dir/shieldtap.toml"
    else
        replay "$cap"
    fi
done

# The recorder's clients sign tokens with PyJWT (python3-jwt), which a pyenv python on PATH
# may lack while the system one has it.
py=
for c in python3 /usr/bin/python3; do
    if "$c" -c 'import jwt, cryptography' >/dev/null 2>&1; then
        py=$c
        break
    fi
done
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
if [[ -s $train/capture.pcap ]]; then
    echo "pgo: training on $train with 1 and 2 workers ..." >&2
    for w in 1 2; do
        replay "$train/capture.pcap" --config "$train/shieldtap.toml" --workers "$w"
    done
else
    echo "pgo: no training recording (needs root, nginx, tcpdump, ip and python3-jwt); samples only" >&2
fi

"$profdata" merge -o "$merged" "$raw"
echo "pgo: optimised build ..." >&2
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$merged" \
    CARGO_TARGET_DIR=$tdir cargo build --profile dist --locked --manifest-path "$root/Cargo.toml" --bin shieldtap
echo "$tdir/dist/shieldtap"
