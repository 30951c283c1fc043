#!/usr/bin/env python3
"""Helper of benches/realistic.sh: measures one shieldtap run, and prints the table.

    realistic_run.py run --label L --capture-dir D --workers W [--build B --run N] [--cachegrind F] --summary S --alerts A --out RESULTS.jsonl -- CMD...
    realistic_run.py table RESULTS.jsonl

`run` starts CMD, polls /proc/PID/task/*/stat every 100 ms (the last utime+stime seen per
thread; threads are told apart by id and named by their comm, which Linux cuts to 15
bytes, so `shieldtap-worker-0` and `-1` both read `shieldtap-worke`: they are numbered in
the order they appeared), reaps it with wait4 (user+sys CPU over all threads, peak RSS),
reads the summary JSON (transactions, token verdicts) and the sha256 of the alerts file,
and appends one JSON line to RESULTS. `table` prints one row per run and the ratios:
1 -> 2 worker scaling (transactions per wall second), 3x/1x peak RSS, alerts identical
between worker counts. When runs name a `--build` (`baseline` and `candidate`, as
realistic.sh's BASELINE does), each build gets its own rows, and the comparison pairs
runs of the same capture, worker count and run number (run back to back, so the host's
speed, which drifts by 10% or more within an hour on a VM, is alike for both): the
median over pairs of candidate/baseline CPU seconds, per thread too, and of peak RSS,
and whether both builds wrote the same alerts.

With `--cachegrind F` (realistic.sh's INSTRUCTIONS=1: CMD runs under `valgrind
--tool=cachegrind --cache-sim=no --cachegrind-out-file=F`), the run also records the
instructions executed over all threads (F's `summary:` line); with the cache simulator on
(INSTRUCTIONS=cache), the first-level data and last-level misses too, which the table
shows per transaction and compares like the instructions. The table then shows
instructions per transaction, and the comparison their candidate/baseline ratio: on a
host whose speed drifts, a count of instructions separates two builds where seconds
cannot (its times are valgrind's, tens of times slower, and only the counts matter).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def thread_times(pid: int) -> dict[int, tuple[str, float]]:
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # comm may hold spaces and parentheses: it ends at the last ')'
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
        out[int(tid)] = (name, (utime + stime) / TICK)
    return out


def cachegrind_counts(path: str) -> dict[str, int]:
    """Counts over all threads from a cachegrind output file: `instructions` (its
    `summary:` line's first event, Ir), and with the cache simulator on (`events:` then
    names D1mr, D1mw, DLmr, DLmw), `d1_misses` and `ll_misses`, reads and writes."""
    events: list[str] = []
    for line in Path(path).read_text().splitlines():
        if line.startswith("events:"):
            events = line.split()[1:]
        elif line.startswith("summary:"):
            values = [int(v) for v in line.split()[1:]]
            named = dict(zip(events or ["Ir"], values))
            out = {"instructions": values[0]}
            if all(k in named for k in ("D1mr", "D1mw", "DLmr", "DLmw")):
                out["d1_misses"] = named["D1mr"] + named["D1mw"]
                out["ll_misses"] = named["DLmr"] + named["DLmw"]
            return out
    raise ValueError(f"{path}: no summary line")


def cmd_run(a: argparse.Namespace) -> int:
    started = time.time()
    t0 = time.monotonic()
    proc = subprocess.Popen(a.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=open(a.stderr, "w") if a.stderr else subprocess.DEVNULL)
    seen: dict[int, tuple[str, float]] = {}
    order: list[int] = []
    status = rusage = None
    while True:
        for tid, v in thread_times(proc.pid).items():
            if tid not in seen:
                order.append(tid)
            seen[tid] = v
        pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            break
        time.sleep(0.1)
    wall = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        print(f"{a.cmd[0]} exited with {proc.returncode} (stderr in {a.stderr})", file=sys.stderr)
        return 1
    counts: dict[str, int] = {}
    for tid in order:
        counts[seen[tid][0]] = counts.get(seen[tid][0], 0) + 1
    threads: dict[str, float] = {}
    index: dict[str, int] = {}
    for tid in order:
        name, cpu = seen[tid]
        if counts[name] > 1:
            index[name] = index.get(name, -1) + 1
            name = f"{name}#{index[name]}"
        threads[name] = round(cpu, 2)
    summary = json.loads(Path(a.summary).read_text())
    sha = hashlib.sha256(Path(a.alerts).read_bytes()).hexdigest()
    tok = summary.get("token", {})
    rec = {
        "label": a.label,
        "build": a.build,
        "run": a.run,
        "capture_dir": a.capture_dir,
        "workers": a.workers,
        "transactions": summary["http"]["transactions"],
        "started": round(started, 3),
        "wall_secs": round(wall, 3),
        "user_secs": round(rusage.ru_utime, 3),
        "sys_secs": round(rusage.ru_stime, 3),
        "cpu_secs": round(rusage.ru_utime + rusage.ru_stime, 3),
        "peak_rss_mib": round(rusage.ru_maxrss / 1024, 1),  # ru_maxrss is in KiB on Linux
        "threads": threads,
        "alerts": summary.get("alerts_written"),
        "alerts_sha256": sha,
        "approov_verdicts": {k: v for fam in tok.get("verdicts", {}).values() for k, v in fam.items() if v},
        "user_verdicts": {k: v for k, v in tok.get("identity_verdicts", {}).items() if v},
    }
    if a.cachegrind:
        try:
            rec.update(cachegrind_counts(a.cachegrind))
        except (OSError, ValueError) as e:
            print(f"no instruction count: {e}", file=sys.stderr)
            return 1
    with open(a.out, "a") as f:
        f.write(json.dumps(rec) + "\n")
    return 0


# The runtime's thread names (src/runtime), as /proc shows them cut to 15 bytes.
THREAD_NAMES = ["worker", "detect", "writer", "capture", "metrics", "jwks", "reload", "sighup", "webhook"]


def short(comm: str) -> str:
    base, _, num = comm.partition("#")
    if not base.startswith("shieldtap-"):
        # The main thread carries the binary's file name (a copied build may be renamed).
        name = "main"
    else:
        rest = base.removeprefix("shieldtap-")
        name = next((n for n in THREAD_NAMES if n.startswith(rest) or rest.startswith(n)), rest)
    return f"{name}-{num}" if num else name


def fmt_threads(threads: dict[str, float]) -> str:
    busy = sorted(((v, k) for k, v in threads.items() if v >= 0.05), reverse=True)
    return ", ".join(f"{short(k)} {v:.1f}" for v, k in busy)


def cmd_table(a: argparse.Namespace) -> int:
    recs = [json.loads(line) for line in Path(a.results).read_text().splitlines() if line.strip()]
    if not recs:
        print("no results", file=sys.stderr)
        return 1
    builds = sorted({r.get("build") or "" for r in recs})
    ab = builds == ["baseline", "candidate"]
    groups: dict[tuple[str, int, str], list[dict]] = {}
    for r in recs:
        groups.setdefault((r["label"], r["workers"], r.get("build") or ""), []).append(r)

    def med(rs: list[dict], k: str) -> float:
        return statistics.median(r[k] for r in rs)

    counted = all("instructions" in r for r in recs)
    missed = all("ll_misses" in r for r in recs)
    build_col = f"{'build':10} " if ab else ""
    instr_col = f"{'instr/tx':>9} " if counted else ""
    if missed:
        instr_col += f"{'D1 miss/tx':>10} {'LL miss/tx':>10} "
    print(f"{'capture':8} {'W':>2} {build_col}{'transactions':>12} {instr_col}{'wall s':>7} {'CPU s':>7} {'tx/CPU s':>9} "
          f"{'tx/wall s':>9} {'peak RSS MiB':>12}  CPU s per thread")
    rows: dict[tuple[str, int, str], dict] = {}
    for (label, w, build), rs in groups.items():
        best = min(rs, key=lambda r: r["wall_secs"])
        row = {"tx": rs[0]["transactions"], "wall": med(rs, "wall_secs"), "cpu": med(rs, "cpu_secs"),
               "rss": max(r["peak_rss_mib"] for r in rs)}
        rows[(label, w, build)] = row
        runs = f" (median of {len(rs)})" if len(rs) > 1 else ""
        cell = f"{build:10} " if ab else ""
        instr = f"{med(rs, 'instructions') / row['tx']:>9,.0f} " if counted else ""
        if missed:
            instr += f"{med(rs, 'd1_misses') / row['tx']:>10,.1f} {med(rs, 'll_misses') / row['tx']:>10,.1f} "
        print(f"{label:8} {w:>2} {cell}{row['tx']:>12,} {instr}{row['wall']:>7.2f} {row['cpu']:>7.2f} "
              f"{row['tx'] / row['cpu']:>9,.0f} {row['tx'] / row['wall']:>9,.0f} {row['rss']:>12.0f}  "
              f"{fmt_threads(best['threads'])}{runs}")
    print()
    labels = sorted({k[0] for k in rows})
    # Ratios below are of the candidate when comparing builds, else of the one build.
    main_build = "candidate" if ab else builds[0]
    for label in labels:
        if (label, 1, main_build) in rows and (label, 2, main_build) in rows:
            r1, r2 = rows[(label, 1, main_build)], rows[(label, 2, main_build)]
            print(f"{label}: 1 -> 2 workers: {r2['tx'] / r2['wall'] / (r1['tx'] / r1['wall']):.2f}x transactions "
                  f"per wall second, {r2['tx'] / r2['cpu'] / (r1['tx'] / r1['cpu']):.2f}x per CPU second")
        shas = {r["alerts_sha256"] for r in recs if r["label"] == label}
        counts = sorted({r["alerts"] for r in recs if r["label"] == label})
        verdict = "identical" if len(shas) == 1 else f"DIFFERENT ({len(shas)} distinct files)"
        across = "runs, worker counts and builds" if ab else "runs and worker counts"
        print(f"{label}: alerts over all {across}: {verdict} ({'/'.join(map(str, counts))} alerts)")
        r = next(r for r in recs if r["label"] == label)
        print(f"{label}: Approov verdicts {r['approov_verdicts']}; user-token verdicts {r['user_verdicts']}")
    if "1x" in labels and "3x" in labels:
        for w in sorted({k[1] for k in rows}):
            if ("1x", w, main_build) in rows and ("3x", w, main_build) in rows:
                ratio = rows[("3x", w, main_build)]["rss"] / rows[("1x", w, main_build)]["rss"]
                print(f"3x/1x peak RSS with {w} worker(s): {ratio:.2f}")
    if ab:
        print()
        compare(recs)
    differ = any(len({r["alerts_sha256"] for r in recs if r["label"] == lb}) > 1 for lb in labels)
    return 3 if differ else 0


def compare(recs: list[dict]) -> None:
    """Candidate against baseline, pair by pair (same capture, workers and run number)."""
    pairs: dict[tuple[str, int], list[tuple[dict, dict]]] = {}
    by_key = {(r["label"], r["workers"], r.get("run"), r.get("build")): r for r in recs}
    for (label, w, run, build), c in sorted(by_key.items(), key=lambda kv: str(kv[0])):
        if build != "candidate":
            continue
        b = by_key.get((label, w, run, "baseline"))
        if b is not None:
            pairs.setdefault((label, w), []).append((b, c))
    for (label, w), ps in sorted(pairs.items()):
        cpu = [c["cpu_secs"] / b["cpu_secs"] for b, c in ps]
        rss = [c["peak_rss_mib"] / b["peak_rss_mib"] for b, c in ps]
        threads = sorted({short(k) for b, c in ps for k in b["threads"]} & {short(k) for b, c in ps for k in c["threads"]})
        per_thread = []
        for t in threads:
            ratios = []
            for b, c in ps:
                tb = sum(v for k, v in b["threads"].items() if short(k) == t)
                tc = sum(v for k, v in c["threads"].items() if short(k) == t)
                if tb >= 0.05:
                    ratios.append(tc / tb)
            if ratios:
                per_thread.append(f"{t} {statistics.median(ratios):.3f}")
        counted = ""
        for key, name in (("instructions", "instructions"), ("d1_misses", "D1 misses"), ("ll_misses", "LL misses")):
            m = [c[key] / b[key] for b, c in ps if b.get(key) and key in c]
            if m:
                counted += f"{name} {statistics.median(m):.3f} (pairs {min(m):.3f} to {max(m):.3f}), "
        print(f"{label} W{w}: candidate/baseline over {len(ps)} pair(s): {counted}CPU s {statistics.median(cpu):.3f} "
              f"(pairs {min(cpu):.3f} to {max(cpu):.3f}), peak RSS {statistics.median(rss):.3f}; "
              f"per thread: {', '.join(per_thread)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd_name", required=True)
    r = sub.add_parser("run")
    r.add_argument("--label", required=True)
    r.add_argument("--capture-dir", required=True)
    r.add_argument("--workers", type=int, required=True)
    r.add_argument("--build", help="which of two builds compared this run is (baseline, candidate)")
    r.add_argument("--run", type=int, help="run number, to pair the builds' runs")
    r.add_argument("--summary", required=True)
    r.add_argument("--alerts", required=True)
    r.add_argument("--stderr")
    r.add_argument("--cachegrind", help="cachegrind output file of the run (instructions executed)")
    r.add_argument("--out", required=True)
    r.add_argument("cmd", nargs=argparse.REMAINDER)
    t = sub.add_parser("table")
    t.add_argument("results")
    a = ap.parse_args()
    if a.cmd_name == "run":
        if a.cmd and a.cmd[0] == "--":
            a.cmd = a.cmd[1:]
        if not a.cmd:
            ap.error("run: no command after --")
        return cmd_run(a)
    return cmd_table(a)


if __name__ == "__main__":
    sys.exit(main())
