#!/usr/bin/env python3
"""Scores alerts on a realistic capture against who really sent the traffic.

Usage:
    python3 scripts/score_realistic.py CAPTURE_DIR ALERTS.jsonl
    e.g. shieldtap replay /var/tmp/shieldtap-bench/1x/capture.pcap \\
             --config /var/tmp/shieldtap-bench/1x/shieldtap.toml --alerts-out /tmp/a.jsonl
         python3 scripts/score_realistic.py /var/tmp/shieldtap-bench/1x /tmp/a.jsonl

scripts/gen_realistic.py plans its clients from a seed (CAPTURE_DIR/manifest.json has it):
app devices (their home, carrier-NAT and roaming addresses), web users (browsers calling
the same API without Approov) and six bots, each with its addresses. This script plans them
again and, for each alert, names the populations behind the addresses it accuses: the
actor's address, or, for an alert without one (keyed by token, device or endpoint), the
addresses its evidence lists. An address used by more than one population (a carrier-NAT
address shared by phones and the stuffer) is `shared`. Per rule and severity it prints
the alerts on bots only, on genuine app devices only, on web users only, on shared
addresses and on addresses the plan does not know (none expected), and the bots named.
Exit status: 0; 1 when the capture directory or the alerts cannot be read.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
GENUINE = ("app", "web")


def plan(seed: int):
    sys.path.insert(0, str(HERE))
    spec = importlib.util.spec_from_file_location("gen_realistic", HERE / "gen_realistic.py")
    gen = importlib.util.module_from_spec(spec)
    sys.modules["gen_realistic"] = gen
    spec.loader.exec_module(gen)
    return gen.plan_clients(seed)


def accused(alert: dict) -> list[str]:
    ip = (alert.get("actor") or {}).get("ip")
    if ip:
        return [ip]
    return list((alert.get("evidence") or {}).get("addresses") or [])


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 1
    cap, alerts_path = Path(sys.argv[1]), Path(sys.argv[2])
    try:
        manifest = json.loads((cap / "manifest.json").read_text())
        alerts = [json.loads(line) for line in alerts_path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as e:
        print(f"score_realistic: {e}", file=sys.stderr)
        return 1
    kinds: dict[str, set[str]] = defaultdict(set)
    for c in plan(int(manifest["args"]["seed"])):
        for a in c.addrs:
            kinds[a].add(c.kind)
    rows: dict[tuple[str, str], Counter] = defaultdict(Counter)
    named: dict[str, set[str]] = defaultdict(set)
    for al in alerts:
        ks: set[str] = set()
        for ip in accused(al):
            ks |= kinds.get(ip, {"?"})
        if not ks or "?" in ks:
            who = "unknown"
        elif len(ks) > 1:
            who = "shared"
        else:
            (k,) = ks
            who = k if k in GENUINE else "bot"
        rows[(al["rule"], al["severity"])][who] += 1
        if who == "bot":
            named[al["rule"]] |= ks
    cols = ["bot", "app", "web", "shared", "unknown"]
    print(f"{len(alerts)} alerts; accused: bots only, genuine app devices only, web users only, "
          f"shared addresses, unknown addresses")
    print(f"{'rule':44} {'severity':8} " + " ".join(f"{c:>7}" for c in cols) + "  bots named")
    total = Counter()
    for (rule, sev), c in sorted(rows.items()):
        total.update(c)
        bots = ",".join(sorted(named.get(rule, ())))
        print(f"{rule:44} {sev:8} " + " ".join(f"{c[k]:>7}" for k in cols) + f"  {bots}")
    print(f"{'all':44} {'':8} " + " ".join(f"{total[k]:>7}" for k in cols))
    return 0


if __name__ == "__main__":
    sys.exit(main())
